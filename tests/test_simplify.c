/* The simplification pass (compiler/simplify.c).
 *
 * - Every fn of FVSBN and NADE, their gradients and Adam training steps:
 *   the interpreter gives the same results before and after (same random
 *   inputs, parameters and seed), the module still verifies, prints and
 *   parses back to the same text, and NADE's gradient loses the dead
 *   recomputation in its reverse body.
 * - Small graphs, one per rule: dead code (in fns and in recurrences:
 *   stacks, slices, uses, carries), CSE (and never of sampling ops),
 *   constant folding (bound and free dims), identities, result names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "arjit.h"
#include "compiler/simplify.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state = 1;
static double uniform01(void) {   /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

static aj_tensor random_tensor(const aj_type *t, double lo, double hi, int binary) {
    aj_tensor x = aj_tensor_of_type(t);
    assert_non_null(x.data);
    for (int64_t i = 0; i < aj_tensor_numel(&x); i++) {
        double u = uniform01();
        if (x.dtype == AJ_I32) ((int32_t *)x.data)[i] = 0;
        else ((float *)x.data)[i] = (float)(binary ? u < 0.5 : lo + (hi - lo) * u);
    }
    return x;
}

static int count_nodes(const aj_graph *g) {
    int c = g->nnode;
    for (int i = 0; i < g->nnode; i++)
        if (g->node[i].rec) c += count_nodes(g->node[i].rec->body);
    return c;
}

static aj_module *load_string(const char *src, const char *dims, aj_bind *b) {
    aj_diag d = {0};
    aj_module *m = aj_load_string(src, strlen(src), "test.graph", dims, b, &d);
    if (!m) aj_diag_print(&d, stderr);
    assert_non_null(m);
    return m;
}

static aj_module *load_model(const char *file, const char *dims, aj_bind *b) {
    const char *root = getenv("ARJIT_SOURCE_DIR");
    assert_non_null(root);
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s", root, file);
    aj_diag d = {0};
    aj_module *m = aj_load_file(path, dims, b, &d);
    if (!m) aj_diag_print(&d, stderr);
    assert_non_null(m);
    return m;
}

/* Run fn g of m; the caller frees res[0..g->nresult-1]. */
static void run(const aj_module *m, const aj_graph *g, const aj_tensor *params, const aj_tensor *in, aj_tensor *res) {
    aj_diag d = {0};
    int rc = aj_interp_run(m, g, params, in, res, 7, &d);
    if (rc) aj_diag_print(&d, stderr);
    assert_int_equal(rc, 0);
}

static void assert_same(const aj_tensor *a, const aj_tensor *b, const char *fn, int r) {
    assert_int_equal(a->dtype, b->dtype);
    assert_int_equal(a->rank, b->rank);
    for (int k = 0; k < a->rank; k++) assert_int_equal(a->shape[k], b->shape[k]);
    for (int64_t i = 0; i < aj_tensor_numel(a); i++) {
        double x = a->dtype == AJ_F32 ? ((float *)a->data)[i] : ((int32_t *)a->data)[i];
        double y = b->dtype == AJ_F32 ? ((float *)b->data)[i] : ((int32_t *)b->data)[i];
        if (x == y || fabs(x - y) <= 1e-6 * fmax(fabs(x), fabs(y))) continue;
        fprintf(stderr, "fn %s result %d [%lld]: %.9g before, %.9g after simplifying\n", fn, r, (long long)i, x, y);
        fail();
    }
}

/* What aj_simplify did to one fn. */
typedef struct {
    int before, after;           /* nodes, bodies included */
    aj_simplify_stats st;
} fn_change;

/* Simplify every fn of m (every dim bound in b; `dims` as loaded), checking
 * each against the interpreter on the same random parameters and inputs,
 * then that the module verifies, prints and parses back to the same text.
 * out[i] is fn i's change. */
static void simplify_checked(aj_module *m, const aj_bind *b, const char *dims, fn_change *out) {
    aj_tensor *params = calloc((size_t)m->nparam + 1, sizeof *params);
    for (int p = 0; p < m->nparam; p++) {
        aj_type t = m->param[p].type;
        for (int k = 0; k < t.rank; k++) t.dim[k] = aj_dim_bind(t.dim[k], b);
        params[p] = random_tensor(&t, -1, 1, 0);
    }
    for (int f = 0; f < m->nfn; f++) {
        aj_graph *g = m->fn[f];
        int nin = g->nleaf, nres = g->nresult;
        aj_tensor *in = calloc((size_t)nin + 1, sizeof *in), *before = calloc((size_t)nres, sizeof *before),
                  *after = calloc((size_t)nres, sizeof *after);
        for (int k = 0; k < nin; k++) {   /* data are 0/1; rates and optimizer state positive */
            const aj_value *v = &g->val[g->leaf[k]];
            in[k] = random_tensor(&v->type, 0.01, 1, strcmp(v->name, "x") == 0);
        }
        run(m, g, params, in, before);
        out[f].before = count_nodes(g);
        aj_diag d = {0};
        int rc = aj_simplify(m, g, &out[f].st, &d);
        if (rc) aj_diag_print(&d, stderr);
        assert_int_equal(rc, 0);
        out[f].after = count_nodes(g);
        assert_int_equal(g->nleaf, nin);
        assert_int_equal(g->nresult, nres);
        rc = aj_module_infer(m, b, &d);
        if (rc) aj_diag_print(&d, stderr);
        assert_int_equal(rc, 0);
        run(m, g, params, in, after);
        for (int r = 0; r < nres; r++) {
            assert_same(&before[r], &after[r], g->name, r);
            aj_tensor_free(&before[r]), aj_tensor_free(&after[r]);
        }
        for (int k = 0; k < nin; k++) aj_tensor_free(&in[k]);
        free(in), free(before), free(after);
    }
    char *text = aj_module_text(m);
    assert_non_null(text);
    aj_module *back = load_string(text, dims, NULL);
    char *again = aj_module_text(back);
    assert_string_equal(text, again);
    free(text), free(again);
    aj_module_free(back);
    for (int p = 0; p < m->nparam; p++) aj_tensor_free(&params[p]);
    free(params);
}

/* fn `name` of a small graph, simplified and checked; its change. */
static fn_change simplify_one(aj_module *m, const aj_bind *b, const char *dims, const char *name) {
    fn_change ch[8];
    assert_true(m->nfn <= 8);
    simplify_checked(m, b, dims, ch);
    for (int f = 0; f < m->nfn; f++)
        if (!strcmp(m->fn[f]->name, name)) return ch[f];
    fail_msg("no fn %s", name);
    return ch[0];
}

/* The node defining value `name` of g, or NULL. */
static const aj_node *def_of(const aj_graph *g, const char *name) {
    int v = aj_graph_find(g, name);
    return v >= 0 && g->val[v].kind == AJ_VAL_NODE ? &g->node[g->val[v].node] : NULL;
}

static int count_op(const aj_graph *g, aj_op op) {
    int c = 0;
    for (int i = 0; i < g->nnode; i++) c += g->node[i].op == op;
    return c;
}

/* ------------------------------------------------------------------ models */

/* loglik, sample, grad_loglik and an Adam train_step of a model. */
static void check_model(const char *file, const char *dims, fn_change *grad, fn_change *step) {
    aj_bind b;
    aj_module *m = load_model(file, dims, &b);
    aj_diag d = {0};
    aj_optim adam = {AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    aj_graph *ts = aj_train_step(m, "loglik", &adam, &d);
    if (!ts) aj_diag_print(&d, stderr);
    assert_non_null(ts);
    fn_change ch[8];
    assert_true(m->nfn <= 8);
    simplify_checked(m, &b, dims, ch);
    for (int f = 0; f < m->nfn; f++) {
        assert_true(ch[f].after <= ch[f].before);
        if (!strcmp(m->fn[f]->name, "grad_loglik")) *grad = ch[f];
        if (!strcmp(m->fn[f]->name, "train_step")) *step = ch[f];
    }
    aj_module_free(m);
}

static void test_fvsbn(void **state) {
    (void)state;
    fn_change grad, step;
    check_model("fvsbn.graph", "D=6,B=3", &grad, &step);
    /* -1/B is folded now that B is bound */
    assert_true(grad.st.folded > 0);
    assert_true(grad.after < grad.before);
    assert_true(step.after < step.before);
}

static void test_nade(void **state) {
    (void)state;
    fn_change grad, step;
    check_model("nade.graph", "D=6,H=4,B=3", &grad, &step);
    /* the reverse body recomputes lpi, its nll and logit, x_i W_i and a2, which nothing reads */
    assert_true(grad.after < grad.before);
    assert_true(grad.st.removed_dead >= 4);
    assert_true(grad.st.folded > 0);
    assert_true(step.after < step.before);
    assert_true(step.st.removed_dead >= 4);
    assert_true(step.st.merged_cse > 0);   /* Adam's constants repeat per parameter */
}

/* loglik's recurrence with its invert attribute set to `inv` */
static void set_invert(aj_module *m, int inv) {
    aj_graph *f = aj_module_fn(m, "loglik");
    for (int i = 0; i < f->nnode; i++)
        if (f->node[i].rec) ((aj_attr *)aj_attr_get(&f->node[i], "invert"))->i = inv;
}

/* NADE stored-history form (invert=0): its reverse body loses the
 * recomputation and the slice of W it read. */
static void test_nade_reverse_body(void **state) {
    (void)state;
    aj_bind b;
    aj_module *m = load_model("nade.graph", "D=6,H=4,B=3", &b);
    set_invert(m, 0);
    aj_diag d = {0};
    aj_graph *g = aj_autodiff(m, "loglik", &d);
    assert_non_null(g);
    const aj_node *rev = def_of(g, "d_W");
    assert_non_null(rev);
    int slices = rev->rec->nslice, nin = rev->nin, body = rev->rec->body->nnode;
    assert_int_equal(aj_simplify(m, g, NULL, &d), 0);
    rev = def_of(g, "d_W");
    const aj_graph *bb = rev->rec->body;
    assert_int_equal(rev->rec->nslice, slices - 1);
    assert_int_equal(rev->nin, nin - 1);
    assert_true(bb->nnode <= body - 4);
    const char *dead[] = {"lpi", "a2", "wi"};
    for (int i = 0; i < 3; i++) assert_int_equal(aj_graph_find(bb, dead[i]), -1);
    /* slice leaves are numbered 0.. again, and the axes moved with them */
    for (int s = 0, k = rev->rec->ncarry; s < rev->rec->nslice; s++, k++) {
        assert_int_equal(bb->val[bb->leaf[k]].kind, AJ_VAL_SLICE);
        assert_int_equal(bb->val[bb->leaf[k]].idx, s);
    }
    /* a, xi, vi, bi, d_lpi: d_lpi's axis moved down with it */
    assert_int_equal(rev->rec->slice_axis[3], 0);
    assert_int_equal(rev->rec->slice_axis[4], 1);
    assert_int_equal(aj_module_infer(m, &b, &d), 0);
    aj_module_free(m);
}

/* NADE as written (invert=1): the forward stacks no history of a; the
 * reverse recurrence carries a_after from the final a and recovers
 * a = a_after - x_i W_i, whose copy of x_i W_i CSE merges with the one the
 * step differentiates. Both forms give the same gradients (simplify_checked
 * runs them; test_engines compares every engine on the model). */
static void test_nade_invert(void **state) {
    (void)state;
    aj_bind b;
    aj_module *m = load_model("nade.graph", "D=6,H=4,B=3", &b);
    aj_diag d = {0};
    aj_graph *g = aj_autodiff(m, "loglik", &d);
    assert_non_null(g);
    assert_int_equal(aj_graph_find(g, "a_hist"), -1);
    const aj_node *rev = def_of(g, "d_W");
    assert_non_null(rev);
    int n_sub = count_op(rev->rec->body, AJ_OP_SUB), n_mul = count_op(rev->rec->body, AJ_OP_MUL);
    assert_int_equal(aj_simplify(m, g, NULL, &d), 0);
    rev = def_of(g, "d_W");
    const aj_graph *bb = rev->rec->body;
    assert_int_equal(rev->rec->ncarry, 2);   /* d_a, a_after */
    assert_string_equal(bb->val[bb->leaf[1]].name, "a_after");
    assert_int_equal(count_op(bb, AJ_OP_SUB), n_sub);       /* the recovery stays */
    assert_int_equal(count_op(bb, AJ_OP_MUL), n_mul - 1);   /* x_i W_i once */
    aj_module_free(m);
}

/* ------------------------------------------------------------------ one rule each */

static void test_dead_code(void **state) {
    (void)state;
    const char *src =
        "dim N = 3\n"
        "fn f(x : f32[N]) -> y\n"
        "  a = exp(x)\n"
        "  b = log(a)\n"
        "  y = neg(x)\n"
        "end\n";
    aj_bind b;
    aj_module *m = load_string(src, "", &b);
    fn_change ch = simplify_one(m, &b, "", "f");
    assert_int_equal(ch.after, 1);
    assert_int_equal(ch.st.removed_dead, 2);
    assert_string_equal(m->fn[0]->val[m->fn[0]->result[0]].name, "y");
    assert_string_equal(m->fn[0]->val[m->fn[0]->leaf[0]].name, "x");
    aj_module_free(m);
}

/* Unused stacks, slices, uses and a carry that only feeds itself go; a
 * carry whose final value is unused but that a kept stack reads stays. */
static void test_dead_code_in_recurrence(void **state) {
    (void)state;
    const char *src =
        "dim T = 4\n"
        "dim N = 2\n"
        "fn f(x : f32[T, N], w : f32[N]) -> total, hs\n"
        "  z = constant(value=0, shape=[N])\n"
        "  total, j, ys, es = recurrence(steps=T) {\n"
        "    carry acc = z\n"
        "    carry junk = z\n"
        "    slice yt = x, axis=0\n"
        "    slice xt = x, axis=0\n"
        "    use w\n"
        "    acc2 = add(acc, xt)\n"
        "    junk2 = mul(junk, w)\n"
        "    e = exp(yt)\n"
        "    next acc = acc2\n"
        "    next junk = junk2\n"
        "    stack acc2, axis=0\n"
        "    stack e, axis=0\n"
        "  }\n"
        "  _, hs = recurrence(steps=T) {\n"
        "    carry h = z\n"
        "    slice xt = x, axis=0\n"
        "    h2 = add(h, xt)\n"
        "    next h = h2\n"
        "    stack h2, axis=0\n"
        "  }\n"
        "end\n";
    aj_bind b;
    aj_module *m = load_string(src, "", &b);
    simplify_one(m, &b, "", "f");
    const aj_graph *g = m->fn[0];
    const aj_node *r = def_of(g, "total");
    assert_non_null(r);
    assert_int_equal(r->rec->ncarry, 1);
    assert_int_equal(r->rec->nslice, 1);
    assert_int_equal(r->rec->nuse, 0);
    assert_int_equal(r->rec->nstack, 0);
    assert_int_equal(r->nin, 2);
    assert_int_equal(r->nout, 1);
    assert_int_equal(r->rec->body->nnode, 1);
    assert_string_equal(r->rec->body->val[r->rec->body->leaf[1]].name, "xt");
    assert_int_equal(r->rec->body->val[r->rec->body->leaf[1]].idx, 0);
    const aj_node *h = def_of(g, "hs");
    assert_int_equal(h->rec->ncarry, 1);
    assert_int_equal(h->rec->nstack, 1);
    assert_int_equal(h->nout, 2);
    aj_module_free(m);
}

static void test_cse(void **state) {
    (void)state;
    const char *src =
        "dim N = 3\n"
        "fn f(x : f32[N]) -> y, z, w\n"
        "  a = exp(x)\n"
        "  b = exp(x)\n"
        "  y = add(a, b)\n"
        "  s = sum(x, axis=0, keepdims=1)\n"
        "  t = sum(x, axis=[0], keepdims=1)\n"
        "  u = sum(x, axis=0)\n"              /* keepdims differs: kept */
        "  z = mul(s, t)\n"
        "  w = add(y, u)\n"
        "end\n"
        /* q repeats p: p takes q's name, the result's */
        "fn g(x : f32[N]) -> r, q\n"
        "  p = tanh(x)\n"
        "  q = tanh(x)\n"
        "  r = mul(p, q)\n"
        "end\n"
        /* both results: each keeps its own node and name */
        "fn h(x : f32[N]) -> p, q\n"
        "  p = tanh(x)\n"
        "  q = tanh(x)\n"
        "end\n";
    aj_bind b;
    aj_module *m = load_string(src, "", &b);
    fn_change ch[3];
    simplify_checked(m, &b, "", ch);
    assert_int_equal(ch[0].st.merged_cse, 2);
    assert_int_equal(ch[0].after, 6);
    assert_int_equal(count_op(m->fn[0], AJ_OP_SUM), 2);
    assert_int_equal(ch[1].st.merged_cse, 1);
    const aj_node *q = def_of(m->fn[1], "q");
    assert_non_null(q);
    assert_int_equal(q->op, AJ_OP_TANH);
    assert_int_equal(aj_graph_find(m->fn[1], "p"), -1);
    const aj_node *r = def_of(m->fn[1], "r");
    assert_int_equal(r->in[0], r->in[1]);
    assert_string_equal(m->fn[1]->val[m->fn[1]->result[1]].name, "q");
    assert_int_equal(ch[2].st.merged_cse, 0);
    assert_int_equal(ch[2].after, 2);
    aj_module_free(m);
}

/* Each draw is its own: two equal bernoulli nodes are not one; an unused one goes. */
static void test_sampling_not_merged(void **state) {
    (void)state;
    const char *src =
        "dim N = 64\n"
        "fn f(l : f32[N]) -> y\n"
        "  a = bernoulli(l)\n"
        "  b = bernoulli(l)\n"
        "  c = bernoulli(l)\n"
        "  y = add(a, b)\n"
        "end\n";
    aj_bind b;
    aj_module *m = load_string(src, "", &b);
    fn_change ch = simplify_one(m, &b, "", "f");
    assert_int_equal(ch.st.merged_cse, 0);
    assert_int_equal(ch.st.removed_dead, 1);
    assert_int_equal(count_op(m->fn[0], AJ_OP_BERNOULLI), 2);
    aj_module_free(m);
}

static const char *FOLD_SRC =
    "dim N = 3\n"
    "dim B\n"
    "fn f(x : f32[B, N]) -> y\n"
    "  c = constant(value=2, shape=[N])\n"
    "  k = neg(1)\n"
    "  m = mul(c, k)\n"
    "  q = sum(c)\n"
    "  r = div(m, q)\n"
    "  y = mul(x, r)\n"
    "end\n"
    "fn g(x : f32[B]) -> y\n"
    "  o = constant(value=1, shape=[B])\n"
    "  n = sum(o)\n"
    "  y = div(x, n)\n"
    "end\n";

static void test_fold(void **state) {
    (void)state;
    aj_bind b;
    aj_module *m = load_string(FOLD_SRC, "B=4", &b);
    fn_change ch[2];
    simplify_checked(m, &b, "B=4", ch);
    /* f: r = -2 / 6 as an f32, a constant of r's shape */
    assert_int_equal(ch[0].after, 2);
    assert_int_equal(ch[0].st.folded, 4);
    const aj_node *r = def_of(m->fn[0], "r");
    assert_non_null(r);
    assert_int_equal(r->op, AJ_OP_CONSTANT);
    assert_true(aj_attr_float(r, "value") == (double)(float)(-2.0 / 6.0));
    assert_int_equal(aj_attr_get(r, "shape")->n, 1);
    /* g: with B bound, the count of the sum is known */
    assert_int_equal(ch[1].st.folded, 1);
    assert_int_equal(aj_attr_float(def_of(m->fn[1], "n"), "value"), 4);
    aj_module_free(m);

    /* with B free, sum(o) is not a number yet: it stays */
    m = load_string(FOLD_SRC, "", &b);
    aj_diag d = {0};
    aj_simplify_stats st;
    assert_int_equal(aj_simplify(m, m->fn[1], &st, &d), 0);
    assert_int_equal(st.folded, 0);
    assert_int_equal(m->fn[1]->nnode, 3);
    aj_module_free(m);
}

/* x*1, 0+x, x-0, x/1, neg(neg(x)) and no-op reshape, broadcast, transpose;
 * not when the constant would broadcast x, nor a real transpose. */
static void test_identities(void **state) {
    (void)state;
    const char *src =
        "dim N = 3\n"
        "fn f(x : f32[N], s : f32[]) -> y, z\n"
        "  h = exp(x)\n"
        "  a = mul(h, 1)\n"
        "  b = add(0, a)\n"
        "  c = sub(b, 0)\n"
        "  d = div(c, 1)\n"
        "  e = neg(d)\n"
        "  y = neg(e)\n"
        "  o = constant(value=1, shape=[N])\n"
        "  so = mul(s, o)\n"              /* s is a scalar: the ones broadcast it */
        "  z = exp(so)\n"
        "end\n"
        "fn g(x : f32[N], m2 : f32[N, N]) -> y\n"
        "  r = reshape(x, shape=[N])\n"
        "  bb = broadcast(r, shape=[N])\n"
        "  tt = transpose(m2, perm=[0, -1])\n"
        "  tn = transpose(tt, perm=[1, 0])\n"
        "  q = mul(tn, bb)\n"
        "  y = sum(q, axis=1)\n"
        "end\n";
    aj_bind b;
    aj_module *m = load_string(src, "", &b);
    fn_change ch[2];
    simplify_checked(m, &b, "", ch);
    assert_int_equal(ch[0].st.removed_identity, 5);
    assert_int_equal(ch[0].st.merged_cse, 2);     /* the second literals 0 and 1 */
    assert_int_equal(ch[0].st.removed_dead, 3);   /* e and the first literals */
    assert_int_equal(ch[0].after, 4);
    assert_int_equal(def_of(m->fn[0], "y")->op, AJ_OP_EXP);   /* h took y's name */
    assert_int_equal(def_of(m->fn[0], "so")->op, AJ_OP_MUL);
    assert_int_equal(ch[1].st.removed_identity, 3);
    assert_int_equal(ch[1].after, 3);
    assert_int_equal(count_op(m->fn[1], AJ_OP_TRANSPOSE), 1);
    aj_module_free(m);
}

/* A result the rules would replace by an input keeps its node and name. */
static void test_result_kept_over_input(void **state) {
    (void)state;
    const char *src =
        "dim N = 3\n"
        "fn f(x : f32[N]) -> y\n"
        "  y = mul(x, 1)\n"
        "end\n";
    aj_bind b;
    aj_module *m = load_string(src, "", &b);
    fn_change ch = simplify_one(m, &b, "", "f");
    assert_int_equal(ch.after, 2);   /* the mul and its literal */
    assert_int_equal(ch.st.removed_identity, 0);
    assert_string_equal(m->fn[0]->val[m->fn[0]->result[0]].name, "y");
    aj_module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fvsbn),
        cmocka_unit_test(test_nade),
        cmocka_unit_test(test_nade_reverse_body),
        cmocka_unit_test(test_nade_invert),
        cmocka_unit_test(test_dead_code),
        cmocka_unit_test(test_dead_code_in_recurrence),
        cmocka_unit_test(test_cse),
        cmocka_unit_test(test_sampling_not_merged),
        cmocka_unit_test(test_fold),
        cmocka_unit_test(test_identities),
        cmocka_unit_test(test_result_kept_over_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
