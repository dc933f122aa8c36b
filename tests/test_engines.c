/* The engines agree: on every model in models/ (FVSBN, NADE, the linear
 * Gaussian and MLP autoregressive models, the LSTM, GRU
 * and GPT language models) and tests/models/ (a chain of 20 residual adds),
 * at small dims, every fn the
 * trainer runs (loglik, its gradient grad_loglik, the Adam train_step) and
 * fn sample give the same results on interp (the oracle), naive and fused.
 * Every op's own test graph (tests/op_cases.h, shared with test_autodiff)
 * is run the same way, forward and gradient, so every lowering is checked. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "arjit.h"
#include "arjit_compile.h"
#include "arjit_train.h"
#include "compiler/codegen.h"

#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "op_cases.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define TOL 2e-4   /* f32 kernels vs the interpreter's double sums */

/* Deterministic inputs: f32 in {0, 1} (binary data), i32 in [0, nidx). */
static aj_tensor fill_input(const aj_type *t, uint64_t seed, int32_t nidx) {
    aj_tensor x = aj_tensor_of_type(t);
    for (int64_t i = 0; i < aj_tensor_numel(&x); i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(seed >> 33);
        if (x.dtype == AJ_F32) ((float *)x.data)[i] = (float)(r & 1);
        else ((int32_t *)x.data)[i] = (int32_t)(r % (uint32_t)nidx);
    }
    return x;
}

/* Inputs of fn: data-like args random; train_step's scalars (lr, decay) and
 * optimizer states (m_W, v_W) get small positive values: Adam's update
 * m / sqrt(v) with v = 0 is the sign of a gradient that may be 0 up to
 * rounding. */
static void make_inputs(const aj_graph *fn, aj_tensor *in, int32_t nidx) {
    for (int l = 0; l < fn->nleaf; l++) {
        const aj_type *t = &fn->val[fn->leaf[l]].type;
        in[l] = fill_input(t, 1000 + (uint64_t)l, nidx);
        const char *name = fn->val[fn->leaf[l]].name;
        if (t->dtype == AJ_F32 && (t->rank == 0 || !strncmp(name, "m_", 2) || !strncmp(name, "v_", 2)))
            for (int64_t i = 0; i < aj_tensor_numel(&in[l]); i++) ((float *)in[l].data)[i] = 0.01f * (float)(1 + i % 7);
    }
}

static double value_at(const aj_tensor *a, int64_t i) {
    return a->dtype == AJ_F32 ? ((float *)a->data)[i] : ((int32_t *)a->data)[i];
}

/* Relative difference per element, with a floor of 1e-3 of the tensor's
 * largest magnitude (at least 1e-3): an entry that is a sum cancelling to
 * near zero carries the f32 rounding of the large terms it summed (a deep
 * PixelCNN's weight gradients: 2e-4 of a small entry, 1e-7 of the largest). */
static double max_rel_diff(const aj_tensor *a, const aj_tensor *b) {
    double worst = 0, scale = 1;
    for (int64_t i = 0; i < aj_tensor_numel(a); i++) scale = fmax(scale, fabs(value_at(a, i)));
    for (int64_t i = 0; i < aj_tensor_numel(a); i++) {
        double x = value_at(a, i), y = value_at(b, i);
        double e = fabs(x - y) / (fabs(x) + fabs(y) + 1e-3 * scale);
        if (!(e <= worst)) worst = e;   /* NaN counts as worst */
    }
    return worst;
}

/* Marks the ops of g and of its recurrence bodies in seen[]; returns how
 * many of its nodes are AJ_HOST ops (which run on the interpreter). */
static int mark_ops(const aj_graph *g, char *seen) {
    int host = 0;
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        seen[n->op] = 1;
        host += (aj_op_info(n->op)->flags & AJ_HOST) != 0;
        if (n->op == AJ_OP_RECURRENCE) host += mark_ops(n->rec->body, seen);
    }
    return host;
}

/* fn on every engine against the interpreter (i32 inputs in [0, nidx));
 * returns how many results differ. The compiled engines run nothing on the
 * interpreter but AJ_HOST ops (no silent fallback). */
static int compare_fn(aj_module *m, const aj_graph *fn, const aj_tensor *params, int32_t nidx, const char *what) {
    aj_tensor in[256] = {0}, ref[256] = {0}, got[256] = {0};   /* GPT's train_step: 100 of each */
    assert_true(fn->nleaf <= 256 && fn->nresult <= 256);
    make_inputs(fn, in, nidx);
    aj_diag d = {0};
    if (aj_interp_run(m, fn, params, in, ref, 7, &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("%s: interp failed", what);
    }
    int bad = 0;
    static const char *const names[] = {"naive", "fused"};
    for (int e = 0; e < 2; e++) {
        aj_engine_run run = e ? aj_fused_run : aj_naive_run;
        if (run(m, fn, params, in, got, 7, &d)) {
            aj_diag_print(&d, stderr);
            fail_msg("%s: %s failed: %s", what, names[e], d.msg);
        }
        aj_program_stats st;
        aj_program *p = aj_engine_program(m, fn, e, &d);
        aj_program_stats_get(p, &st);
        char seen[AJ_OP_COUNT] = {0};
        if (st.host_kernels != mark_ops(fn, seen)) {
            aj_program_print_host(p, "  ", stderr);
            fail_msg("%s: %s runs %d kernels on the interpreter", what, names[e], st.host_kernels);
        }
        for (int k = 0; k < fn->nresult; k++) {
            double err = max_rel_diff(&ref[k], &got[k]);
            if (!(err <= TOL)) {
                fprintf(stderr, "%s: %s: result %s differs from interp by %.3g\n", what, names[e],
                        fn->val[fn->result[k]].name, err);
                bad++;
            }
            aj_tensor_free(&got[k]);
        }
    }
    for (int k = 0; k < fn->nresult; k++) aj_tensor_free(&ref[k]);
    for (int l = 0; l < fn->nleaf; l++) aj_tensor_free(&in[l]);
    return bad;
}

static aj_tensor *init_params(const aj_module *m) {
    aj_tensor *p = calloc((size_t)m->nparam + 1, sizeof *p);
    for (int i = 0; i < m->nparam; i++) {
        p[i] = aj_param_init(m, i, &m->bind, 3 + (uint64_t)i);
        /* zero-initialised parameters would hide mistakes: perturb them */
        for (int64_t j = 0; j < aj_tensor_numel(&p[i]); j++)
            ((float *)p[i].data)[j] += 0.3f * (float)sin(1.7 * (double)(j + 1) + i);
    }
    return p;
}

static void free_params(const aj_module *m, aj_tensor *p) {
    for (int i = 0; i < m->nparam; i++) aj_tensor_free(&p[i]);
    free(p);
}

/* Every fn of module m (plus grad_loglik and train_step when it has loglik). */
static int compare_module(aj_module *m, const char *what) {
    aj_diag d = {0};
    int nfn = m->nfn, bad = 0;
    if (aj_module_fn(m, "loglik")) {
        aj_optim o = {.kind = AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .clip = 1.0};
        if (!aj_autodiff(m, "loglik", &d) || !aj_train_step(m, "loglik", &o, &d)) {
            aj_diag_print(&d, stderr);
            fail_msg("%s: autodiff failed", what);
        }
    }
    (void)nfn;
    aj_tensor *params = init_params(m);
    for (int f = 0; f < m->nfn; f++) {
        char w[256];
        snprintf(w, sizeof w, "%s fn %s", what, m->fn[f]->name);
        bad += compare_fn(m, m->fn[f], params, 3, w);
    }
    free_params(m, params);
    aj_engine_forget(m);
    return bad;
}

/* Small values for the dims models use, so the interpreter is quick; B=3
 * so rows split unevenly over threads. A model gets those it declares. */
static void small_dims(const char *path, char *spec, size_t n) {
    static const char *small[] = {"B=3", "D=7", "H=5", "T=5", "V=7", "E=8", "L=2", "K=3", "N=4", "W=4", "C=4", "F=3"};
    aj_diag d = {0};
    aj_module *m = aj_parse_file(path, &d);
    spec[0] = 0;
    for (size_t i = 0; m && i < COUNT(small); i++) {
        char name[8];
        snprintf(name, sizeof name, "%.*s", (int)(strchr(small[i], '=') - small[i]), small[i]);
        if (aj_dim_index(m, name) >= 0) snprintf(spec + strlen(spec), n - strlen(spec), "%s%s", spec[0] ? "," : "", small[i]);
    }
    aj_module_free(m);
}

static void test_model(void **state) {
    const char *path = *state;
    aj_diag d = {0};
    char dims[128];
    small_dims(path, dims, sizeof dims);
    aj_module *m = aj_load_file(path, dims, NULL, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("%s does not load", path);
    }
    int bad = compare_module(m, path);
    aj_module_free(m);
    if (bad) fail_msg("%s: %d results differ between engines", path, bad);
}

/* A split sum (compiler/fuse.c) keeps AJ_RING = 64 steps of partial sums
 * per thread: NADE over 150 steps fills that ring twice and then part of
 * it, in its gradient's reversed loop; at 1, 2 and 3 threads. With B = 21
 * a thread's 21, 11 or 7 rows are summed in blocks of 8 (codegen_llvm.c,
 * SPLIT_ROWS) and one by one after them. */
static void test_split_ring(void **state) {
    char path[1024];
    aj_diag d = {0};
    snprintf(path, sizeof path, "%s/models/nade.graph", (const char *)*state);
    int bad = 0;
    for (int nth = 1; nth <= 3; nth++) {
        aj_module *m = aj_load_file(path, "B=21,D=150,H=6", NULL, &d);
        if (!m) {
            aj_diag_print(&d, stderr);
            fail_msg("%s does not load", path);
        }
        aj_set_threads(nth);
        bad += compare_module(m, "nade, 150 steps");
        aj_module_free(m);
    }
    aj_set_threads(2);
    if (bad) fail_msg("nade over 150 steps: %d results differ between engines", bad);
}

/* ------------------------------------------------------------ op cases */

/* Ops with no gradient to build (sampling), and forms the gradient cases
 * miss: each case's first fn is compared forward only. */
static const gcase forward_cases[] = {
    {"categorical (temperature)", "B=3",
     "dim B\ndim T = 5\ndim D = 4\ndim K = 6\nparam W : f32[D, K]\n"
     "fn sample(x : f32[B, T, D]) -> s, t\n  h = matmul(x, W)\n  s = categorical(h)\n"
     "  t = categorical(h, temperature=0.5)\nend\n"},
    {"argmax (rank 3, rank 1)", "B=3",
     "dim B\ndim T = 5\ndim D = 4\ndim K = 6\nparam W : f32[D, K]\nparam p : f32[K]\n"
     "fn f(x : f32[B, T, D]) -> a, b\n  h = matmul(x, W)\n  a = argmax(h)\n  b = argmax(p)\nend\n"},
    {"mog (sampling)", "B=3",
     "dim B\ndim D = 5\ndim K = 3\nparam A : f32[D, K]\nparam M : f32[D, K]\nparam S : f32[D, K]\n"
     "fn sample(x : f32[B, D]) -> s\n  xk = unsqueeze(x, axis=2)\n  pi = add(xk, A)\n  mu = mul(xk, M)\n"
     "  ls = broadcast(S, shape=[B, D, K])\n  s = mog(pi, mu, ls)\nend\n"},
    {"bernoulli, normal, uniform (sampling)", "B=3",
     "dim B\ndim D = 5\nparam p : f32[D]\nparam q : f32[D]\n"
     "fn sample(x : f32[B, D]) -> b, z, u\n  l = add(x, p)\n  b = bernoulli(l)\n  z = normal(l, q)\n"
     "  u = uniform(shape=[B, D])\nend\n"},
    {"concat (axis 0, middle axis, i32)", "B=3",
     "dim B\ndim C = 2\ndim D = 4\nparam p : f32[C, D]\n"
     "fn f(x : f32[B, C, D], t : i32[B, C]) -> y, z, u\n  a = add(x, p)\n  y = concat(a, x, a, axis=0)\n"
     "  e = exp(a)\n  z = concat(e, a, axis=1)\n  u = concat(t, t, axis=-1)\nend\n"},
    {"attention (batch axes, one head, causal)", "B=2",
     "dim B\ndim T = 4\ndim E = 3\nparam p : f32[T, E]\n"
     "fn f(x : f32[B, 2, T, E]) -> o\n  a = add(x, p)\n  o = attention(a, a, a, causal=1)\nend\n"},
    /* row kernels inside a recurrence: views moved by the step, rows split
     * over threads within the fused loop, a sampling key per step */
    {"concat, layer_norm, attention, categorical in a recurrence", "B=3",
     "dim B\ndim T = 4\ndim D = 3\ndim D2 = 6\nparam W : f32[D2, D]\nparam g : f32[D]\nparam b : f32[D]\n"
     "fn sample(x : f32[B, T, D]) -> hT, hs, ks\n  z = constant(value=0, shape=[B, D])\n"
     "  hT, hs, ks = recurrence(steps=T) {\n    carry h = z\n    slice xt = x, axis=1\n"
     "    c = concat(h, xt, axis=1)\n    a = matmul(c, W)\n    n = layer_norm(a, g, b)\n"
     "    n3 = unsqueeze(n, axis=1)\n    o3 = attention(n3, n3, n3)\n    o = reshape(o3, shape=[B, D])\n"
     "    hn = tanh(o)\n    s = categorical(hn)\n    sf = cast(s, to=f32)\n    next h = hn\n    stack hn, axis=1\n"
     "    stack sf, axis=1\n  }\nend\n"},
    /* the fused planner leaves the outer recurrence a loop of kernels */
    {"a nested recurrence", "B=3",
     "dim B\ndim T = 3\nfn f(x : f32[B, T, T]) -> total, sums\n  z = constant(value=0, shape=[B])\n"
     "  total, sums = recurrence(steps=T) {\n    carry acc = z\n    slice xt = x, axis=1\n"
     "    inner, _ = recurrence(steps=T) {\n      carry a = acc\n      slice xs = xt, axis=1\n      a2 = add(a, xs)\n"
     "      next a = a2\n      stack a2, axis=1\n    }\n    next acc = inner\n    stack inner, axis=1\n  }\nend\n"},
    {"categorical_nll, layer_norm (rank 1)", "B=4",
     "dim B\ndim K = 3\nparam p : f32[B, K]\nparam g : f32[K]\n"
     "fn f(t : i32[B], x : f32[K]) -> n, y\n  n = categorical_nll(p, t)\n  y = layer_norm(x, g, g, eps=0.1)\nend\n"},
};

/* One op case: its first fn and, unless `forward_only`, that fn's gradient
 * (built by aj_autodiff), on every engine; i32 inputs 0/1 as in gradcheck. */
static void run_case(const gcase *c, int forward_only) {
    aj_diag d = {0};
    aj_module *m = aj_load_string(c->src, strlen(c->src), c->name, c->dims, NULL, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("op case %s: does not load", c->name);
    }
    const aj_graph *fn = m->fn[0], *grad = NULL;
    if (!forward_only && !(grad = aj_autodiff(m, fn->name, &d))) {
        aj_diag_print(&d, stderr);
        fail_msg("op case %s: autodiff failed: %s", c->name, d.msg);
    }
    aj_tensor *params = init_params(m);
    char w[256];
    snprintf(w, sizeof w, "op case %s, fn %s", c->name, fn->name);
    int bad = compare_fn(m, fn, params, 2, w);
    if (grad) {
        snprintf(w, sizeof w, "op case %s, fn %s", c->name, grad->name);
        bad += compare_fn(m, grad, params, 2, w);
    }
    free_params(m, params);
    aj_engine_forget(m);
    aj_module_free(m);
    if (bad) fail_msg("op case %s: %d results differ between engines", c->name, bad);
}

static void test_op_case(void **state) { run_case(*state, 0); }

/* An index out of range stops every engine with the same error at the
 * gather's (one_hot's) line: at the top level, and inside a recurrence
 * (where the fused engine runs all steps in one kernel). */
static void test_index_out_of_range(void **state) {
    (void)state;
    static const char *src =
        "dim B = 2\ndim T = 3\ndim V = 4\ndim E = 5\nparam W : f32[V, E]\n"
        "fn top(t : i32[B, T]) -> y, h\n"
        "  y = gather(W, t)\n"
        "  h = one_hot(t, n=V)\n"
        "end\n"
        "fn loop(t : i32[B, T]) -> ys\n"
        "  z = constant(value=0, shape=[B, E])\n"
        "  yT, ys = recurrence(steps=T) {\n"
        "    carry c = z\n    slice tt = t, axis=1\n    use W\n"
        "    g = gather(W, tt)\n    s = add(c, g)\n    next c = s\n    stack g, axis=1\n  }\n"
        "end\n"
        "fn hot(t : i32[B, T]) -> h\n"
        "  h = one_hot(t, n=V)\n"
        "end\n";
    static const struct { int fn, line; int32_t bad; const char *msg; } runs[] = {
        {0, 7, 4, "gather: index 4 at position 4 is out of range for a table of 4 rows"},
        {0, 7, -1, "gather: index -1 at position 4 is out of range for a table of 4 rows"},
        {1, 16, 9, "gather: index 9 at position 1 is out of range for a table of 4 rows"},
        {2, 23, 4, "one_hot: index 4 at position 4 is out of range for n = 4"},
    };
    aj_diag d = {0};
    aj_module *m = aj_load_string(src, strlen(src), "index.graph", "", NULL, &d);
    if (!m) aj_diag_print(&d, stderr);
    assert_non_null(m);
    aj_tensor *params = init_params(m);
    aj_engine_run engines[3] = {aj_interp_run, aj_naive_run, aj_fused_run};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        const aj_graph *fn = m->fn[runs[i].fn];
        aj_tensor t = fill_input(&fn->val[fn->leaf[0]].type, 5, 4), res[2] = {{0}};
        ((int32_t *)t.data)[4] = runs[i].bad;   /* [1, 1]: step 1, row 1 */
        for (int e = 0; e < 3; e++) {
            memset(&d, 0, sizeof d);
            assert_int_equal(engines[e](m, fn, params, &t, res, 7, &d), -1);
            if (d.line != runs[i].line || !strstr(d.msg, runs[i].msg))
                fail_msg("engine %d, fn %s: line %d: %s", e, fn->name, d.line, d.msg);
        }
        ((int32_t *)t.data)[4] = 3;   /* in range: the one_hot must not mind either */
        for (int e = 0; e < 3; e++) {
            assert_int_equal(engines[e](m, fn, params, &t, res, 7, &d), 0);
            for (int k = 0; k < fn->nresult; k++) aj_tensor_free(&res[k]);
        }
        aj_tensor_free(&t);
    }
    free_params(m, params);
    aj_engine_forget(m);
    aj_module_free(m);
}

/* A recurrence has no cap on its parts: one with 100 uses, 70 carries
 * and 70 stacked outputs (so 171 inputs and 140 results; its gradient's
 * reverse recurrence has 170 carries and 141 slices) parses, differentiates
 * and runs alike on every engine. Carry i steps as h_i' = tanh(h_i w_i + x_t)
 * and stacks h_i' w_{70 + i % 30}: few ops, as the naive engine compiles a
 * kernel for each of them and of their gradients. */
enum { WIDE_CARRIES = 70, WIDE_USES = 100 };

static char wide_src[1 << 15];
static size_t wide_len;

static void put(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(wide_src + wide_len, sizeof wide_src - wide_len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof wide_src - wide_len);
    wide_len += (size_t)n;
}

static void test_wide_recurrence(void **state) {
    (void)state;
    const int C = WIDE_CARRIES, U = WIDE_USES;
    wide_len = 0;
    put("dim T\ndim H = 3\n");
    for (int u = 0; u < U; u++) put("param w%d : f32[H]\n", u);
    put("fn wide(x : f32[T, H]) -> l\n  ");
    for (int i = 0; i < 2 * C; i++) put("%s%c%d", i ? ", " : "", i < C ? 'c' : 's', i % C);
    put(" = recurrence(steps=T) {\n    slice xt = x, axis=0\n");
    for (int i = 0; i < C; i++) put("    carry h%d = w%d\n", i, i);
    for (int u = 0; u < U; u++) put("%sw%d%s", u % 10 ? ", " : "    use ", u, u % 10 == 9 ? "\n" : "");
    for (int i = 0; i < C; i++)
        put("    a%d = tanh(h%d * w%d + xt)\n    next h%d = a%d\n    stack a%d * w%d, axis=0\n", i, i, i, i, i, i,
            C + i % (U - C));
    put("  }\n  l = c0");
    for (int i = 1; i < 2 * C; i++) put(" + %c%d", i < C ? 'c' : 's', i % C);
    put("\nend\n");

    aj_diag d = {0};
    aj_module *m = aj_load_string(wide_src, wide_len, "wide recurrence", "T=4", NULL, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("wide recurrence: does not load");
    }
    const aj_node *n = &m->fn[0]->node[0];
    assert_int_equal(n->op, AJ_OP_RECURRENCE);
    assert_int_equal(n->rec->ncarry, C);
    assert_int_equal(n->rec->nstack, C);
    assert_int_equal(n->rec->nuse, U);
    assert_int_equal(n->nin, C + 1 + U);
    assert_int_equal(n->nout, 2 * C);
    aj_module_free(m);
    gcase c = {"wide recurrence", "T=4", wide_src};
    run_case(&c, 0);
}

/* Every op is compared on the three engines by some case above, in a
 * case's fn or in its gradient: a new op needs a case (tests/op_cases.h,
 * or forward_cases for those without a gradient). The AJ_HOST ops (extern)
 * need a library: tests/test_extern.c compares them. */
static void test_every_op_compared(void **state) {
    (void)state;
    char seen[AJ_OP_COUNT] = {0};
    for (int i = 0; i < COUNT(cases) + COUNT(forward_cases); i++) {
        const gcase *c = i < COUNT(cases) ? &cases[i] : &forward_cases[i - COUNT(cases)];
        aj_diag d = {0};
        aj_module *m = aj_load_string(c->src, strlen(c->src), c->name, c->dims, NULL, &d);
        assert_non_null(m);
        mark_ops(m->fn[0], seen);
        const aj_graph *grad = i < COUNT(cases) ? aj_autodiff(m, m->fn[0]->name, &d) : NULL;
        if (grad) mark_ops(grad, seen);
        aj_module_free(m);
    }
    int missing = 0;
    for (int op = 0; op < AJ_OP_COUNT; op++)
        if (!seen[op] && !(aj_op_info((aj_op)op)->flags & AJ_HOST)) {
            fprintf(stderr, "op %s is in no case of tests/op_cases.h or forward_cases\n", aj_op_info((aj_op)op)->name);
            missing++;
        }
    assert_int_equal(missing, 0);
}

/* Every op has an LLVM lowering but the AJ_HOST ones, which run on the
 * interpreter on purpose (and the engines say so, aj_program_print_host);
 * recurrences are loops of their body's kernels. */
static void test_every_op_lowered(void **state) {
    (void)state;
    int missing = 0;
    for (int op = 0; op < AJ_OP_COUNT; op++) {
        aj_node n = {.op = (aj_op)op};
        int host = (aj_op_info((aj_op)op)->flags & AJ_HOST) != 0;
        if (op != AJ_OP_RECURRENCE && aj_codegen_lowers(&n) == host) {
            fprintf(stderr, "op %s: %s\n", aj_op_info((aj_op)op)->name,
                    host ? "AJ_HOST, but it has a lowering" : "no LLVM lowering, and not AJ_HOST");
            missing++;
        }
    }
    assert_int_equal(missing, 0);
}
static void test_forward_case(void **state) { run_case(*state, 1); }

int main(void) {
    char pattern[1024];
    const char *src = getenv("ARJIT_SOURCE_DIR");
    glob_t gl;
    static const char *const dirs[] = {"models", "tests/models"};
    for (int i = 0; i < COUNT(dirs); i++) {
        snprintf(pattern, sizeof pattern, "%s/%s/*.graph", src ? src : ARJIT_SOURCE_DIR, dirs[i]);
        if (glob(pattern, i ? GLOB_APPEND : 0, NULL, &gl) != 0) {
            fprintf(stderr, "no models match %s\n", pattern);
            return 1;
        }
    }
    struct CMUnitTest *t = calloc(gl.gl_pathc + 2, sizeof *t);
    for (size_t i = 0; i < gl.gl_pathc; i++) {
        t[i] = (struct CMUnitTest)cmocka_unit_test(test_model);
        t[i].name = gl.gl_pathv[i];
        t[i].initial_state = gl.gl_pathv[i];
    }
    /* ARJIT_TEST_FILTER, ARJIT_TEST_SKIP: run only, or skip, the tests whose names match a glob */
    if (getenv("ARJIT_TEST_FILTER")) cmocka_set_test_filter(getenv("ARJIT_TEST_FILTER"));
    if (getenv("ARJIT_TEST_SKIP")) cmocka_set_skip_filter(getenv("ARJIT_TEST_SKIP"));
    t[gl.gl_pathc] = (struct CMUnitTest){"split sums over a ring of steps", test_split_ring, NULL, NULL,
                                         (void *)(src ? src : ARJIT_SOURCE_DIR)};
    aj_set_threads(2);
    int rc = _cmocka_run_group_tests("engines on models", t, gl.gl_pathc + 1, NULL, NULL);
    free(t);

    struct CMUnitTest ops[COUNT(cases) + COUNT(forward_cases) + 4];
    for (int i = 0; i < COUNT(cases); i++)
        ops[i] = (struct CMUnitTest){cases[i].name, test_op_case, NULL, NULL, (void *)&cases[i]};
    for (int i = 0; i < COUNT(forward_cases); i++)
        ops[COUNT(cases) + i] =
            (struct CMUnitTest){forward_cases[i].name, test_forward_case, NULL, NULL, (void *)&forward_cases[i]};
    ops[COUNT(cases) + COUNT(forward_cases)] = (struct CMUnitTest)cmocka_unit_test(test_every_op_compared);
    ops[COUNT(cases) + COUNT(forward_cases) + 1] = (struct CMUnitTest)cmocka_unit_test(test_every_op_lowered);
    ops[COUNT(cases) + COUNT(forward_cases) + 2] = (struct CMUnitTest)cmocka_unit_test(test_index_out_of_range);
    ops[COUNT(cases) + COUNT(forward_cases) + 3] = (struct CMUnitTest)cmocka_unit_test(test_wide_recurrence);
    rc += cmocka_run_group_tests_name("engines on op cases", ops, NULL, NULL);
    globfree(&gl);
    return rc;
}
