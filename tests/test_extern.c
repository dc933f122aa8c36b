/* Extern ops: C functions in shared libraries (docs/ir.md, custom ops).
 *
 * The libraries are the example's swish.so (examples/custom_op/swish.c) and
 * tests/extern_ops.c's muladd (two inputs), built by CMake into the
 * directory $ARJIT_EXTERN_LIBS names. Checked here: the declarations and
 * calls print and parse back; the interpreter's forward matches the math;
 * autodiff's gradient calls agree with finite differences; the example's
 * NADE trains; and a missing library, symbol or gradient, or a call with the
 * wrong arity, is a diagnostic at its line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "synthetic_idx.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arjit_train.h"
#include "arjit_compile.h"

static char libs[1024];   /* where swish.so and extern_ops.so are */

static int setup(void **state) {
    (void)state;
    const char *dir = getenv("ARJIT_EXTERN_LIBS");
    if (!dir) return -1;
    snprintf(libs, sizeof libs, "%s", dir);
    return 0;
}

/* src with every "@" replaced by the libraries' directory, malloc'd. */
static char *with_libs(const char *src) {
    size_t n = strlen(src) + 1;
    for (const char *s = src; *s; s++) n += *s == '@' ? strlen(libs) : 0;
    char *out = malloc(n), *o = out;
    for (const char *s = src; *s; s++)
        if (*s == '@') o += sprintf(o, "%s", libs);
        else *o++ = *s;
    *o = 0;
    return out;
}

/* aj_load_string of src (with @ for the libraries' directory); NULL with d set. */
static aj_module *load(const char *src, const char *dims, aj_diag *d) {
    char *text = with_libs(src);
    memset(d, 0, sizeof *d);
    aj_module *m = aj_load_string(text, strlen(text), "test.graph", dims, NULL, d);
    free(text);
    return m;
}

static aj_module *load_ok(const char *src, const char *dims) {
    aj_diag d;
    aj_module *m = load(src, dims, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("graph did not load: %s", d.msg);
    }
    return m;
}

/* ------------------------------------------------------------ round trip */

/* The canonical text: declarations after the parameters, calls by the
 * extern's name, gradient calls with grad=1 (what autodiff emits). */
static const char *canonical =
    "dim B\n"
    "\n"
    "param w : f32[B, 3] = zeros\n"
    "\n"
    "extern swish(x) = \"swish.so\" swish_fwd, grad swish_grad\n"
    "extern muladd(a, b) = \"/opt/lib/ops.so\" muladd_fwd, grad muladd_grad\n"
    "extern plain(u) = \"sub dir/plain.so\" plain_fwd\n"
    "\n"
    "fn f(x : f32[B, 3]) -> y, da, db\n"
    "  h = swish(x)\n"
    "  dh = swish(h, x, grad=1)\n"
    "  y = muladd(h, w)\n"
    "  da, db = muladd(h, dh, y, grad=1)\n"
    "  z = plain(y)\n"
    "end\n";

static void test_round_trip(void **state) {
    (void)state;
    /* the same module written loosely: spacing, comments, a use before the fn */
    static const char *loose =
        "dim B\nparam w : f32[B, 3]\n"
        "extern swish( x )   =   \"swish.so\"  swish_fwd ,  grad swish_grad   # a comment\n"
        "extern muladd(a,b) = \"/opt/lib/ops.so\" muladd_fwd, grad muladd_grad\n"
        "extern plain(u) = \"sub dir/plain.so\" plain_fwd\n"
        "fn f(x : f32[B, 3]) -> y, da, db\n"
        "  h = swish(x)\n  dh = swish(h, x, grad=1)\n  y = muladd(h, w)\n"
        "  da, db = muladd(h, dh, y, grad=1)\n  z = plain(y, grad=0)\nend\n";
    aj_diag d = {0};
    aj_module *m = aj_parse_string(loose, strlen(loose), "t.graph", &d);
    if (!m) aj_diag_print(&d, stderr);
    assert_non_null(m);
    aj_bind b;
    aj_bind_defaults(m, &b);
    assert_int_equal(aj_module_infer(m, &b, &d), 0);   /* verifies without loading anything */
    char *t1 = aj_module_text(m);
    assert_string_equal(t1, canonical);
    aj_module *m2 = aj_parse_string(t1, strlen(t1), "t.graph", &d);
    assert_non_null(m2);
    char *t2 = aj_module_text(m2);
    assert_string_equal(t1, t2);
    free(t1), free(t2);
    aj_module_free(m), aj_module_free(m2);
}

/* ------------------------------------------------------------ forward */

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

static void engines_agree(aj_module *m, const aj_graph *fn);

/* swish from a path relative to the graph file's directory, and muladd from
 * an absolute one, against the formulas. */
static void test_forward(void **state) {
    (void)state;
    static const char *src =
        "extern swish(x) = \"swish.so\" swish_fwd\n"
        "extern muladd(a, b) = \"@/extern_ops.so\" muladd_fwd\n"
        "fn f(x : f32[2, 3], y : f32[2, 3]) -> s, m\n"
        "  s = swish(x)\n"
        "  m = muladd(x, y)\n"
        "end\n";
    char *text = with_libs(src), path[1100];
    snprintf(path, sizeof path, "%s/f.graph", libs);
    aj_diag d = {0};
    aj_module *m = aj_load_string(text, strlen(text), path, NULL, NULL, &d);
    free(text);
    if (!m) aj_diag_print(&d, stderr);
    assert_non_null(m);
    int64_t shape[2] = {2, 3};
    aj_tensor in[2] = {aj_tensor_new(AJ_F32, 2, shape), aj_tensor_new(AJ_F32, 2, shape)}, res[2];
    float *x = in[0].data, *y = in[1].data;
    for (int i = 0; i < 6; i++) x[i] = (float)(i - 2.5) * 1.5f, y[i] = (float)(7 - i) * 0.25f;
    assert_int_equal(aj_interp_run(m, aj_module_fn(m, "f"), NULL, in, res, 1, &d), 0);
    const float *s = res[0].data, *mm = res[1].data;
    for (int i = 0; i < 6; i++) {
        assert_float_equal(s[i], x[i] * sigmoid(x[i]), 1e-6 * (1 + fabs(s[i])));
        assert_float_equal(mm[i], x[i] * y[i] + x[i], 1e-6 * (1 + fabs(mm[i])));
    }
    for (int i = 0; i < 2; i++) aj_tensor_free(&in[i]), aj_tensor_free(&res[i]);
    engines_agree(m, aj_module_fn(m, "f"));
    aj_module_free(m);
}

/* ------------------------------------------------------------ gradients */

/* fn gives the same results on the compiled engines as on the interpreter
 * (they call the extern functions as host kernels between JIT kernels),
 * and each engine's program says, per extern call, that it runs there. */
static void engines_agree(aj_module *m, const aj_graph *fn) {
    aj_tensor params[8] = {{0}}, in[8] = {{0}}, ref[8], got[8];
    for (int i = 0; i < m->nparam && i < 8; i++) params[i] = aj_param_init(m, i, &m->bind, 5 + (uint64_t)i);
    for (int l = 0; l < fn->nleaf && l < 8; l++) {
        in[l] = aj_tensor_of_type(&fn->val[fn->leaf[l]].type);
        for (int64_t i = 0; i < aj_tensor_numel(&in[l]); i++) ((float *)in[l].data)[i] = (float)(i % 3) * 0.5f - 0.4f;
    }
    aj_diag d = {0};
    assert_int_equal(aj_interp_run(m, fn, params, in, ref, 1, &d), 0);
    aj_engine_run engines[2] = {aj_naive_run, aj_fused_run};
    for (int e = 0; e < 2; e++) {
        if (engines[e](m, fn, params, in, got, 1, &d)) fail_msg("%s: %s", e ? "fused" : "naive", d.msg);
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        int nhost = aj_program_print_host(aj_engine_program(m, fn, e, &d), "", f), ncall = 0;
        fclose(f);
        for (int i = 0; i < fn->nnode; i++) ncall += fn->node[i].op == AJ_OP_EXTERN;
        assert_int_equal(nhost, ncall);
        for (const char *l = text; *l; l = strchr(l, '\n') + 1)
            if (!strstr(l, "extern '") || !strstr(l, " runs on the interpreter (")) fail_msg("says: %s", l);
        free(text);
        for (int k = 0; k < fn->nresult; k++) {
            for (int64_t i = 0; i < aj_tensor_numel(&ref[k]); i++) {
                float a = ((float *)ref[k].data)[i], b = ((float *)got[k].data)[i];
                assert_float_equal(a, b, 1e-4 * (1 + fabs(a)));
            }
            aj_tensor_free(&got[k]);
        }
    }
    for (int k = 0; k < fn->nresult; k++) aj_tensor_free(&ref[k]);
    for (int i = 0; i < 8; i++) aj_tensor_free(&params[i]), aj_tensor_free(&in[i]);
    aj_engine_forget(m);
}

/* Every parameter of fn `loss` agrees with central differences. */
static void gradcheck(const char *src, const char *dims) {
    aj_module *m = load_ok(src, dims);
    aj_gradcheck_result res[8];
    int nres = 0;
    aj_diag d = {0};
    if (aj_gradcheck(m, "loss", 11, 24, 1e-2, res, &nres, &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("gradcheck did not run: %s", d.msg);
    }
    assert_int_equal(nres, m->nparam);
    for (int i = 0; i < nres; i++) {
        printf("  %-4s %3d probes  max rel err %.2e\n", res[i].name, res[i].probes, res[i].max_rel_err);
        assert_true(res[i].probes > 0);
        assert_true(res[i].max_rel_err < 1e-2);
    }
    engines_agree(m, aj_module_fn(m, "grad_loss"));
    aj_module_free(m);
}

/* swish after a matmul, the loss a square so its adjoint is not uniform */
static void test_gradcheck_swish(void **state) {
    (void)state;
    gradcheck("dim B\nparam W : f32[3, 4]\n"
              "extern swish(x) = \"@/swish.so\" swish_fwd, grad swish_grad\n"
              "fn loss(x : f32[B, 3]) -> l\n"
              "  h = matmul(x, W)\n  y = swish(h)\n  l = square(y)\nend\n",
              "B=3");
}

/* both adjoints of a two-input op, each reaching its own parameter */
static void test_gradcheck_two_inputs(void **state) {
    (void)state;
    gradcheck("dim B\nparam p : f32[4]\nparam q : f32[4]\n"
              "extern muladd(a, b) = \"@/extern_ops.so\" muladd_fwd, grad muladd_grad\n"
              "fn loss(x : f32[B, 4]) -> l\n"
              "  a = add(x, p)\n  b = mul(x, q)\n  y = muladd(a, b)\n  l = square(y)\nend\n",
              "B=3");
}

/* ------------------------------------------------------------ training */


/* The example, examples/custom_op/swish_nade.graph, as it is: copied into a
 * directory next to (a link to) swish.so, trained with Adam at D=6, H=8;
 * the loss falls, through swish's forward and gradient in every step. */
static void test_train_example(void **state) {
    (void)state;
    char dir[64] = "/tmp/arjit_test_extern_XXXXXX", src[1200], dst[1200], so[1200];
    assert_non_null(mkdtemp(dir));
    snprintf(src, sizeof src, "%s/examples/custom_op/swish_nade.graph", getenv("ARJIT_SOURCE_DIR"));
    snprintf(dst, sizeof dst, "%s/swish_nade.graph", dir);
    snprintf(so, sizeof so, "%s/swish.so", libs);
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && ln -s '%s' '%s/swish.so'", src, dst, so, dir);
    assert_int_equal(system(cmd), 0);
    setenv("ARJIT_DATA", dir, 1);
    write_synthetic_idx(dir, "train-images-idx3-ubyte", 600, 1);
    write_synthetic_idx(dir, "t10k-images-idx3-ubyte", 100, 2);

    aj_job j = {0};
    j.model = dst;
    j.dims = "D=6,H=8";
    j.data = "mnist";
    j.batch = 10;
    j.seed = 7;
    j.epochs = 3;
    j.lr = 0.05;
    j.opt = (aj_optim){AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    aj_train_result r;
    aj_diag d = {0};
    int rc = aj_train(&j, &r, &d);
    if (rc) aj_diag_print(&d, stderr);
    assert_int_equal(rc, 0);
    printf("  first loss %.3f, last epoch %.3f, valid %.3f nats\n", r.first_loss, r.train_nll, r.valid_nll);
    /* 6 ln 2 = 4.16 nats at the start; the data's entropy is 0.5 + 0.69 = 1.19 */
    assert_true(r.train_nll < r.first_loss - 1.5);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ------------------------------------------------------------ errors */

/* Loading src fails at line:col with msg (and the extra text, if any) in the message. */
static void load_fails(const char *src, int line, int col, const char *msg, const char *extra) {
    aj_diag d;
    aj_module *m = load(src, NULL, &d);
    aj_module_free(m);
    assert_null(m);
    aj_diag_print(&d, stdout);
    assert_int_equal(d.line, line);
    assert_int_equal(d.col, col);
    assert_non_null(strstr(d.msg, msg));
    if (extra) assert_non_null(strstr(d.msg, extra));
    assert_string_equal(d.file, "test.graph");
    assert_true(d.text[0] != 0);   /* the line, for the caret */
}

#define USE_ACT "fn f(x : f32[4]) -> y\n  y = act(x)\nend\n"

static void test_missing_library(void **state) {
    (void)state;
    load_fails("dim D = 4\nextern act(x) = \"no_such_lib.so\" act_fwd\n" USE_ACT, 2, 8,
               "extern op 'act': cannot load library ./no_such_lib.so", "No such file");
}

static void test_missing_symbols(void **state) {
    (void)state;
    load_fails("\nextern act(x) = \"@/swish.so\" act_fwd\n" USE_ACT, 2, 8, "extern op 'act': no function 'act_fwd' in",
               "/swish.so");
    load_fails("\nextern act(x) = \"@/swish.so\" swish_fwd, grad act_grad\n" USE_ACT, 2, 8, "no function 'act_grad'",
               NULL);
}

static void test_wrong_arity(void **state) {
    (void)state;
    load_fails("\nextern act(x) = \"@/swish.so\" swish_fwd\nfn f(x : f32[4]) -> y\n  y = act(x, x)\nend\n", 4, 7,
               "act takes 1 input, got 2", NULL);
}

/* Without `grad`, a parameter behind the op cannot be trained: autodiff
 * names the op and the call's line. */
static void test_no_gradient(void **state) {
    (void)state;
    aj_module *m = load_ok("param p : f32[4]\nextern act(x) = \"@/swish.so\" swish_fwd\n"
                           "fn loss(x : f32[4]) -> l\n  a = add(x, p)\n  l = act(a)\nend\n",
                           NULL);
    aj_diag d = {0};
    assert_null(aj_autodiff(m, "loss", &d));
    aj_diag_print(&d, stdout);
    assert_int_equal(d.line, 5);
    assert_non_null(strstr(d.msg, "extern op 'act' has no gradient"));
    aj_module_free(m);
}

/* A module parsed and verified without aj_load_*: the library loads at the
 * first call, and a missing one is an error of that run, not a crash. */
static void test_lazy_load(void **state) {
    (void)state;
    static const char *srcs[2] = {
        "extern act(x) = \"@/swish.so\" swish_fwd\nfn f(x : f32[3]) -> y\n  y = act(x)\nend\n",
        "extern act(x) = \"@/none.so\" swish_fwd\nfn f(x : f32[3]) -> y\n  y = act(x)\nend\n",
    };
    for (int k = 0; k < 2; k++) {
        char *text = with_libs(srcs[k]);
        aj_diag d = {0};
        aj_module *m = aj_parse_string(text, strlen(text), "t.graph", &d);
        free(text);
        assert_non_null(m);
        aj_bind b;
        aj_bind_defaults(m, &b);
        assert_int_equal(aj_module_infer(m, &b, &d), 0);
        int64_t shape[1] = {3};
        aj_tensor x = aj_tensor_new(AJ_F32, 1, shape), y = {0};
        ((float *)x.data)[0] = 1;
        int rc = aj_interp_run(m, m->fn[0], NULL, &x, &y, 1, &d);
        if (k == 0) {
            assert_int_equal(rc, 0);
            assert_float_equal(((float *)y.data)[0], sigmoid(1), 1e-6);
            assert_float_equal(((float *)y.data)[1], 0, 0);
        } else {
            assert_int_equal(rc, -1);
            assert_int_equal(d.line, 1);
            assert_non_null(strstr(d.msg, "cannot load library"));
        }
        aj_tensor_free(&x), aj_tensor_free(&y);
        aj_module_free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_gradcheck_swish),
        cmocka_unit_test(test_gradcheck_two_inputs),
        cmocka_unit_test(test_train_example),
        cmocka_unit_test(test_missing_library),
        cmocka_unit_test(test_missing_symbols),
        cmocka_unit_test(test_wrong_arity),
        cmocka_unit_test(test_no_gradient),
        cmocka_unit_test(test_lazy_load),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
