/* Reverse-mode autodiff against finite differences (aj_gradcheck).
 *
 * Every differentiable op gets a tiny graph in the table (tests/op_cases.h): parameters
 * feed the op (through both of its inputs where it has two), and the loss
 * is the mean of a per-example value or a square of the op's result, so
 * the adjoint reaching the op is not uniform and a wrong arrangement of it
 * (a bad transpose, a slice put back in the wrong place) shows. Then every
 * model in models/ is checked at small dims, and its gradient fn must print
 * and parse back to the same text. Every case also runs on the interpreter
 * in f32 and in double, which must agree, and aj_gradcheck must fail a
 * gradient fn with a sign flipped and refuse what it cannot check.
 *
 * aj_gradcheck draws parameters from N(0, 0.5^2) and fills f32 inputs with
 * 0/1 (i32 inputs 0/1 too), so the graphs below keep arguments of log and
 * sqrt positive (through exp), and keep the kinks of relu, maximum and max
 * further than the finite-difference step from every value (KINK_GAP,
 * SEPARATED). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "arjit.h"
#include "runtime/interp.h"
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Central differences in double: the loss carries ~1e-16 relative rounding,
 * ~1e-12 after dividing by the step, so the truncation error (~step^2 f'''/6)
 * is what remains: below 1e-6 on every case at a step of 1e-4. */
#define EPS 1e-4
#define TOL 1e-5
/* Whole models go through many more ops (the diagonal BiLSTM's skewed
 * steps, the gated PixelCNN's stacks) and reach 1.7e-5 at this step, an
 * error that shrinks as the step grows (5.6e-6 at 3e-4), so rounding, not
 * the rule; a wrong rule is off by O(1), which this still fails. */
#define MODEL_TOL 1e-4
#define PROBES 24
#define SEED 11

/* ------------------------------------------------------------ helpers */

/* Parse src, bind `dims` over the declared values and infer; NULL with the
 * diagnostic printed on failure. */
static aj_module *load(const char *src, size_t len, const char *path, const char *dims) {
    aj_diag d = {0};
    aj_module *m = aj_load_string(src, len, path, dims, NULL, &d);
    if (!m) aj_diag_print(&d, stderr);
    return m;
}

/* Gradient-check fn of m; every parameter it uses must be probed and agree
 * within TOL. Prints one line per parameter; returns the number failing. */
static int check(aj_module *m, const char *fn, const char *what, double tol) {
    aj_gradcheck_result *res = calloc((size_t)m->nparam + 1, sizeof *res);
    int nres = 0, bad = 0;
    aj_diag d = {0};
    assert_non_null(res);
    if (aj_gradcheck(m, fn, SEED, PROBES, EPS, res, &nres, &d)) {
        aj_diag_print(&d, stderr);
        fprintf(stderr, "%s: gradcheck failed to run: %s\n", what, d.msg);
        free(res);
        return 1;
    }
    if (nres == 0) fprintf(stderr, "%s: no parameter was checked\n", what);
    for (int i = 0; i < nres; i++) {
        const aj_gradcheck_result *r = &res[i];
        int ok = r->probes > 0 && r->max_rel_err < tol;
        printf("  %-28s %-6s %3d/%-4lld probes  max rel err %.2e%s\n", what, r->name, r->probes,
               (long long)r->numel, r->max_rel_err, ok ? "" : "  FAIL");
        if (!ok)
            fprintf(stderr, "%s: d_%s off: analytic %.6g vs numeric %.6g (rel err %.3g, %d probes)\n", what,
                    r->name, r->worst_analytic, r->worst_numeric, r->max_rel_err, r->probes);
        bad += !ok;
    }
    free(res);
    return bad + (nres == 0);
}

/* Tensors of value types with every dim bound under m's binding: f32 held
 * as float, or as double (f64), filled with x_i = 0.5 sin(1.3 i + k) for
 * parameters (k their index) and 0/1 (i mod 2, i mod 3 == 1) for arguments,
 * in range for the cases' i32 indices. */
static aj_tensor filled(const aj_module *m, const aj_type *t, int f64, int param, int k) {
    aj_type ty = *t;
    for (int a = 0; a < ty.rank; a++) ty.dim[a] = aj_dim_bind(ty.dim[a], &m->bind);
    aj_tensor x = aj_tensor_of_type_sized(&ty, f64 ? sizeof(double) : sizeof(float));
    assert_non_null(x.data);
    for (int64_t i = 0, n = aj_tensor_numel(&x); i < n; i++) {
        double v = param ? 0.5 * sin(1.3 * (double)i + k) : (double)((i + k) % (2 + k % 2) == 1);
        if (x.dtype == AJ_I32) ((int32_t *)x.data)[i] = (int32_t)v;
        else if (f64) ((double *)x.data)[i] = v;
        else ((float *)x.data)[i] = (float)v;
    }
    return x;
}

/* fn of m run by the interpreter in f32 and in double on the same values:
 * every result agrees to f32 rounding (the double build runs the same
 * kernels, moving data by its element size). */
static void interp_modes_agree(const aj_module *m, const aj_graph *fn, const char *what) {
    int np = m->nparam, nl = fn->nleaf, nr = fn->nresult;
    aj_tensor *t = calloc((size_t)(2 * (np + nl + nr)) + 1, sizeof *t);
    aj_tensor *par[2] = {t, t + np}, *arg[2] = {t + 2 * np, t + 2 * np + nl};
    aj_tensor *res[2] = {t + 2 * (np + nl), t + 2 * (np + nl) + nr};
    assert_non_null(t);
    for (int f64 = 0; f64 < 2; f64++) {
        aj_diag d = {0};
        for (int p = 0; p < np; p++) par[f64][p] = filled(m, &m->param[p].type, f64, 1, p);
        for (int a = 0; a < nl; a++) arg[f64][a] = filled(m, &fn->val[fn->leaf[a]].type, f64, 0, a);
        int rc = (f64 ? aj_interp_run_f64 : aj_interp_run)(m, fn, par[f64], arg[f64], res[f64], SEED, &d);
        if (rc) {
            aj_diag_print(&d, stderr);
            fail_msg("%s: fn %s does not run (%s)", what, fn->name, f64 ? "double" : "f32");
        }
    }
    for (int r = 0; r < nr; r++)
        for (int64_t i = 0, n = aj_tensor_numel(&res[0][r]); i < n; i++) {
            double a, b;
            if (res[0][r].dtype == AJ_I32)
                a = ((int32_t *)res[0][r].data)[i], b = ((int32_t *)res[1][r].data)[i];
            else
                a = ((float *)res[0][r].data)[i], b = ((double *)res[1][r].data)[i];
            if (!(fabs(a - b) <= 1e-4 * (1 + fabs(b))))
                fail_msg("%s: fn %s result %d [%lld]: f32 %.9g, double %.17g", what, fn->name, r, (long long)i, a, b);
        }
    for (int i = 0; i < 2 * (np + nl + nr); i++) aj_tensor_free(&t[i]);
    free(t);
}

/* ------------------------------------------------------------ every op has a rule */

static void test_every_op_has_gradient(void **state) {
    int missing = 0;
    for (int op = 0; op < AJ_OP_COUNT; op++)
        if (!aj_has_gradient((aj_op)op)) {
            fprintf(stderr, "op %s has no gradient rule and is neither NODIFF nor RAND\n",
                    aj_op_info((aj_op)op)->name);
            missing++;
        }
    assert_int_equal(missing, 0);
}

/* ------------------------------------------------------------ the op table */

#include "op_cases.h"

/* m (with its gradient fn `grad`, built under binding `dims`) prints,
 * parses back and verifies under the same binding, and prints the same. */
static void roundtrip(const aj_module *m, const char *grad, const char *dims, const char *what) {
    char *t1 = aj_module_text(m);
    aj_module *m2 = load(t1, strlen(t1), "printed", dims);
    if (!m2) {
        fputs(t1, stderr);
        fail_msg("%s: the printed gradient does not load", what);
    }
    assert_non_null(aj_module_fn(m2, grad));
    char *t2 = aj_module_text(m2);
    assert_string_equal(t1, t2);
    free(t1), free(t2);
    aj_module_free(m2);
}

/* One case: load it, check its first fn, and round-trip its gradient. */
static void test_case(void **state) {
    const gcase *c = *state;
    aj_module *m = load(c->src, strlen(c->src), c->name, c->dims);
    if (!m) fail_msg("%s: the graph does not load", c->name);
    char grad[96];
    snprintf(grad, sizeof grad, "grad_%s", m->fn[0]->name);
    int bad = check(m, m->fn[0]->name, c->name, TOL);
    if (!bad) roundtrip(m, grad, c->dims, c->name);
    if (!bad) {
        interp_modes_agree(m, m->fn[0], c->name);
        interp_modes_agree(m, aj_module_fn(m, grad), c->name);
    }
    aj_module_free(m);
    if (bad) fail_msg("%s: %d parameter(s) fail the gradient check", c->name, bad);
}

/* ------------------------------------------------------------ what gradcheck fails or refuses */

/* loss = mean(tanh(x + p)^2) over B=3 rows of 4, with its gradient written
 * out: d_p = 2/(4B) sum_b y (1 - y^2) = 0.5 mean_b y (1 - y^2), y = tanh(a).
 * TANH_VJP is tanh's VJP factor 1 - y^2 as `dt`. */
#define TANH_LOSS(TANH_VJP)                                          \
    "dim B\nparam p : f32[4]\n"                                      \
    "fn loss(x : f32[B, 4]) -> l\n"                                   \
    "  a = add(x, p)\n  y = tanh(a)\n  l = square(y)\nend\n"          \
    "fn grad_loss(x : f32[B, 4]) -> loss, d_p\n"                      \
    "  a = add(x, p)\n  y = tanh(a)\n  l = square(y)\n  loss = mean(l)\n" \
    "  y2 = square(y)\n" TANH_VJP                                     \
    "  g = mul(y, dt)\n  gm = mean(g, axis=0)\n  d_p = mul(gm, 0.5)\nend\n"

/* The gradient fn as written passes; with tanh's VJP negated (y^2 - 1), it
 * fails by a relative error of 2 (analytic = -numeric). */
static void test_flipped_vjp_fails(void **state) {
    const char *good = TANH_LOSS("  ny2 = neg(y2)\n  dt = add(ny2, 1)\n");
    const char *flipped = TANH_LOSS("  dt = add(y2, -1)\n");
    for (int flip = 0; flip < 2; flip++) {
        const char *src = flip ? flipped : good;
        aj_module *m = load(src, strlen(src), "tanh.graph", "B=3");
        aj_gradcheck_result r;
        int n = 0;
        aj_diag d = {0};
        assert_non_null(m);
        assert_int_equal(aj_gradcheck(m, "loss", SEED, PROBES, EPS, &r, &n, &d), 0);
        assert_int_equal(n, 1);
        assert_int_equal(r.probes, 4);
        printf("  %s: max rel err %.3g\n", flip ? "flipped" : "as written", r.max_rel_err);
        if (flip) assert_true(fabs(r.max_rel_err - 2) < 1e-4 && r.worst_analytic * r.worst_numeric < 0);
        else assert_true(r.max_rel_err < TOL);
        aj_module_free(m);
    }
}

/* aj_gradcheck's error for src (bound by dims) on fn: at line:col of the
 * file, with the message containing want. */
static void refused(const char *src, const char *dims, const char *fn, int line, int col, const char *want) {
    aj_module *m = load(src, strlen(src), "refused.graph", dims);
    aj_gradcheck_result r[4];
    int n = 0;
    aj_diag d = {0};
    assert_non_null(m);
    assert_int_equal(aj_gradcheck(m, fn, SEED, PROBES, EPS, r, &n, &d), -1);
    aj_diag_print(&d, stdout);
    assert_string_equal(d.file, "refused.graph");
    assert_int_equal(d.line, line);
    assert_int_equal(d.col, col);
    assert_non_null(strstr(d.msg, want));
    aj_module_free(m);
}

/* test_refusals asks for 8e12 bytes: under AddressSanitizer calloc must
 * return NULL then, as it does in libc, rather than abort. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

/* Random draws (inside a recurrence too), no parameters, a parameter too
 * large to hold in double (a legal size: at most 2^40 elements), an unknown
 * fn. */
static void test_refusals(void **state) {
    refused("dim B\nparam p : f32[4]\nfn draw(x : f32[B, 4]) -> y\n"
            "  a = add(x, p)\n  _, y = recurrence(steps=2) {\n    carry c = a\n    z = bernoulli(c)\n"
            "    next c = z\n    stack z, axis=0\n  }\nend\n",
            "B=2", "draw", 7, 9, "fn draw draws random numbers (bernoulli)");
    refused("dim B\nparam p : f32[4]\nfn none(x : f32[B, 4]) -> y\n  y = square(x)\nend\n", "B=2", "none", 4, 3,
            "fn none uses no parameters: nothing to differentiate y by");
    refused("dim B\ndim D\nparam W : f32[D, D]\nfn loss(x : f32[B, D]) -> y\n  y = matmul(x, W)\nend\n",
            "B=2,D=1000000", "loss", 3, 7, "cannot allocate 8000000000000 bytes for parameter W");
    refused("dim B\nparam p : f32[4]\nfn none(x : f32[B, 4]) -> y\n  y = square(x)\nend\n", "B=2", "nope", 0, 0,
            "no fn 'nope'");
}

/* 70 parameters, each added at a step of a chain that scales by 0.9, so
 * each has its own gradient: all are checked, whatever their count. */
static void test_many_parameters(void **state) {
    char src[8192];
    size_t len = (size_t)snprintf(src, sizeof src, "dim B\n");
    for (int i = 0; i < 70; i++) len += (size_t)snprintf(src + len, sizeof src - len, "param p%d : f32[2]\n", i);
    len += (size_t)snprintf(src + len, sizeof src - len, "fn loss(x : f32[B, 2]) -> l\n  a0 = add(x, p0)\n");
    for (int i = 1; i < 70; i++)
        len += (size_t)snprintf(src + len, sizeof src - len, "  t%d = mul(a%d, 0.9)\n  a%d = add(t%d, p%d)\n", i, i - 1,
                                i, i, i);
    len += (size_t)snprintf(src + len, sizeof src - len, "  l = square(a69)\nend\n");
    assert_true(len < sizeof src);
    aj_module *m = load(src, len, "chain.graph", "B=3");
    assert_non_null(m);
    assert_int_equal(check(m, "loss", "70 parameters", TOL), 0);
    aj_module_free(m);
}

/* ------------------------------------------------------------ the models */

/* Dims for a model at test size, B=2: every dim with a value is set to
 * 3..6 (so transposed axes differ), or with `same`, all to 4 (for models
 * that need some dims equal). A model whose dims must satisfy more (D = H*W)
 * needs its own binding here. */
static void small_dims(const aj_module *m, int same, char *spec, size_t n) {
    size_t len = (size_t)snprintf(spec, n, "B=2");
    for (int i = 0, k = 0; i < m->ndim && len < n; i++)
        if (m->dim[i].has_value)
            len += (size_t)snprintf(spec + len, n - len, ",%s=%d", m->dim[i].name, same ? 4 : 3 + k++ % 4);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void test_model_gradcheck(void **state) {
    const char *path = *state;
    size_t len;
    char *src = read_file(path, &len), spec[512];
    aj_diag d = {0};
    aj_module *m = aj_parse_string(src, len, path, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("%s does not parse", path);
    }
    aj_module *small = NULL;
    for (int same = 0; same < 2 && !small; same++) {
        small_dims(m, same, spec, sizeof spec);
        small = load(src, len, path, spec);
    }
    aj_module_free(m);
    m = small;
    if (!m) fail_msg("%s: does not load with small dims (last tried %s)", path, spec);
    printf("  %s with %s\n", path, spec);
    int bad = check(m, "loglik", path, MODEL_TOL);
    aj_module_free(m);
    free(src);
    if (bad) fail_msg("%s: %d parameter(s) fail the gradient check", path, bad);
}

/* grad_loglik of the model as declared (B free) prints, parses back,
 * verifies and prints the same text. */
static void test_model_grad_roundtrip(void **state) {
    const char *path = *state;
    size_t len;
    char *src = read_file(path, &len);
    aj_module *m = load(src, len, path, "");
    aj_diag d = {0};
    if (!m) fail_msg("%s does not load", path);
    if (!aj_autodiff(m, "loglik", &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("%s: autodiff: %s", path, d.msg);
    }
    roundtrip(m, "grad_loglik", "", path);
    aj_module_free(m);
    free(src);
}

/* ------------------------------------------------------------ main */

int main(void) {
    const struct CMUnitTest basics[] = {cmocka_unit_test(test_every_op_has_gradient),
                                        cmocka_unit_test(test_flipped_vjp_fails), cmocka_unit_test(test_refusals),
                                        cmocka_unit_test(test_many_parameters)};
    struct CMUnitTest ops[COUNT(cases)];
    for (int i = 0; i < COUNT(cases); i++)
        ops[i] = (struct CMUnitTest){cases[i].name, test_case, NULL, NULL, (void *)&cases[i]};

    const char *root = getenv("ARJIT_SOURCE_DIR");
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s/models/*.graph", root ? root : ".");
    glob_t gl;
    if (glob(pattern, 0, NULL, &gl) || gl.gl_pathc == 0) {
        fprintf(stderr, "no models match %s (set ARJIT_SOURCE_DIR)\n", pattern);
        return 1;
    }
    /* per model: its gradient check, then its gradient's round trip */
    int nm = (int)gl.gl_pathc;
    struct CMUnitTest models[2 * nm];
    char (*names)[2][160] = calloc((size_t)nm, sizeof *names);
    assert_non_null(names);
    for (int i = 0; i < nm; i++) {
        const char *base = strrchr(gl.gl_pathv[i], '/') ? strrchr(gl.gl_pathv[i], '/') + 1 : gl.gl_pathv[i];
        snprintf(names[i][0], sizeof names[i][0], "gradcheck %s", base);
        snprintf(names[i][1], sizeof names[i][1], "grad roundtrip %s", base);
        models[2 * i] = (struct CMUnitTest){names[i][0], test_model_gradcheck, NULL, NULL, gl.gl_pathv[i]};
        models[2 * i + 1] = (struct CMUnitTest){names[i][1], test_model_grad_roundtrip, NULL, NULL, gl.gl_pathv[i]};
    }
    int fails = cmocka_run_group_tests_name("has_gradient", basics, NULL, NULL);
    fails += cmocka_run_group_tests_name("op_gradients", ops, NULL, NULL);
    fails += cmocka_run_group_tests_name("models", models, NULL, NULL);
    free(names);
    globfree(&gl);
    return fails;
}
