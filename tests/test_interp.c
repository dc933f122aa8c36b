/* The reference interpreter, op by op, against values worked out by hand
 * (or with a calculator: the numbers below are literals, not the formulas
 * the interpreter uses). Graphs are written in the graph-file language. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "arjit.h"
#include "runtime/interp.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define F32(...) ((const float[]){__VA_ARGS__})
#define I32(...) ((const int32_t[]){__VA_ARGS__})
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static aj_tensor tensor(aj_dtype dt, int rank, const int64_t *shape, const void *v) {
    aj_tensor t = aj_tensor_new(dt, rank, shape);
    assert_non_null(t.data);
    memcpy(t.data, v, (size_t)aj_tensor_numel(&t) * 4);
    return t;
}
/* TF(SHAPE(2, 3), F32(...)): an f32 tensor; TI likewise i32 */
#define TF(shp, vals) tensor(AJ_F32, COUNT(shp), shp, vals)
#define TI(shp, vals) tensor(AJ_I32, COUNT(shp), shp, vals)

static void expect_shape(const aj_tensor *t, aj_dtype dt, int rank, const int64_t *shape) {
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->rank, rank);
    for (int i = 0; i < rank; i++) assert_int_equal(t->shape[i], shape[i]);
}

/* values within 1e-5 (relative for big ones); NaN and inf must match */
static void expect_f32(const aj_tensor *t, int rank, const int64_t *shape, const float *want, int n) {
    expect_shape(t, AJ_F32, rank, shape);
    assert_int_equal(aj_tensor_numel(t), n);
    const float *got = t->data;
    for (int i = 0; i < n; i++) {
        int ok = isnan(want[i]) ? isnan(got[i])
                 : isinf(want[i]) ? got[i] == want[i]
                 : fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i]));
        if (!ok) fail_msg("element %d: got %.9g, want %.9g", i, got[i], want[i]);
    }
}
#define EXPECT_F(t, shp, vals) expect_f32(t, COUNT(shp), shp, vals, COUNT(vals))

static void expect_i32(const aj_tensor *t, int rank, const int64_t *shape, const int32_t *want, int n) {
    expect_shape(t, AJ_I32, rank, shape);
    assert_int_equal(aj_tensor_numel(t), n);
    for (int i = 0; i < n; i++)
        if (((const int32_t *)t->data)[i] != want[i])
            fail_msg("element %d: got %d, want %d", i, ((const int32_t *)t->data)[i], want[i]);
}
#define EXPECT_I(t, shp, vals) expect_i32(t, COUNT(shp), shp, vals, COUNT(vals))

/* ------------------------------------------------------------ running graphs */

static aj_module *load(const char *src, const char *dims) {
    aj_diag d = {0};
    aj_module *m = aj_load_string(src, strlen(src), "test.graph", dims, NULL, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("graph did not load: %s", d.msg);
    }
    return m;
}

typedef struct {
    aj_module *m;
    aj_tensor *params;
    aj_tensor res[16];
    int nres, rc;
    aj_diag d;
} run_t;

/* Run fn f of m with params from aj_param_init(seed) (or `params`) on
 * inputs in[0..nin-1], which are freed here. */
static run_t run_module(aj_module *m, const aj_tensor *params, uint64_t seed, int nin, aj_tensor *in) {
    run_t r;
    memset(&r, 0, sizeof r);
    r.m = m;
    const aj_graph *f = aj_module_fn(m, "f");
    assert_non_null(f);
    assert_int_equal(f->nleaf, nin);
    assert_true(f->nresult <= 16);
    r.params = calloc((size_t)m->nparam + 1, sizeof *r.params);
    for (int i = 0; i < m->nparam; i++) r.params[i] = params ? params[i] : aj_param_init(m, i, &m->bind, seed);
    r.nres = f->nresult;
    r.rc = aj_interp_run(m, f, r.params, in, r.res, seed, &r.d);
    for (int i = 0; i < nin; i++) aj_tensor_free(&in[i]);
    return r;
}

static run_t run(const char *src, const char *dims, uint64_t seed, int nin, aj_tensor *in) {
    return run_module(load(src, dims), NULL, seed, nin, in);
}

static void done(run_t *r) {
    for (int i = 0; i < r->nres; i++) aj_tensor_free(&r->res[i]);
    for (int i = 0; i < r->m->nparam; i++) aj_tensor_free(&r->params[i]);
    free(r->params);
    aj_module_free(r->m);
}

/* run and require success */
static run_t ok(const char *src, const char *dims, int nin, aj_tensor *in) {
    run_t r = run(src, dims, 1, nin, in);
    if (r.rc) fail_msg("run failed: %s", r.d.msg);
    return r;
}

/* A graph of one op `expr` over x : f32[4], e.g. "exp(x)". */
static run_t unary(const char *expr, const float *x) {
    char src[256];
    snprintf(src, sizeof src, "fn f(x : f32[4]) -> y\n  y = %s\nend\n", expr);
    aj_tensor in[] = {TF(SHAPE(4), x)};
    return ok(src, "", 1, in);
}

/* ------------------------------------------------------------ elementwise */

static void test_unary(void **state) {
    static const struct {
        const char *expr;
        float x[4], y[4];
    } cases[] = {
        {"neg(x)", {-1, 0, 0.5f, 2}, {1, 0, -0.5f, -2}},
        {"exp(x)", {-1, 0, 0.5f, 2}, {0.36787944f, 1, 1.64872127f, 7.3890561f}},
        {"log(x)", {0.5f, 1, 2, 4}, {-0.69314718f, 0, 0.69314718f, 1.38629436f}},
        {"tanh(x)", {-1, 0, 0.5f, 2}, {-0.76159416f, 0, 0.46211716f, 0.96402758f}},
        {"sigmoid(x)", {-1, 0, 0.5f, 2}, {0.26894142f, 0.5f, 0.62245933f, 0.88079708f}},
        {"sigmoid(x)", {-100, 100, -800, 800}, {3.7200760e-44f, 1, 0, 1}},
        {"relu(x)", {-1, 0, 0.5f, 2}, {0, 0, 0.5f, 2}},
        {"softplus(x)", {-1, 0, 0.5f, 2}, {0.31326169f, 0.69314718f, 0.97407698f, 2.12692801f}},
        {"softplus(x)", {-200, 200, 30, -30}, {0, 200, 30, 9.3576230e-14f}},
        {"sqrt(x)", {0, 1, 2.25f, 4}, {0, 1, 1.5f, 2}},
        {"square(x)", {-1, 0, 0.5f, 2}, {1, 0, 0.25f, 4}},
        {"gelu(x)", {-1, 0, 0.5f, 2}, {-0.15880801f, 0, 0.34571401f, 1.95459769f}},
        {"step(x)", {-1, 0, 0.5f, 2}, {0, 0, 1, 1}},
        {"sin(x)", {-1, 0, 0.5f, 2}, {-0.84147098f, 0, 0.47942554f, 0.90929743f}},
        {"cos(x)", {-1, 0, 0.5f, 2}, {0.54030231f, 1, 0.87758256f, -0.41614684f}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_t r = unary(cases[i].expr, cases[i].x);
        expect_f32(&r.res[0], 1, SHAPE(4), cases[i].y, 4);
        done(&r);
    }
}

static void test_binary_broadcast(void **state) {
    static const char *src =
        "fn f(a : f32[2, 3], row : f32[3], col : f32[2, 1], one : f32[1]) -> s, d, p, q, mx, outer\n"
        "  s = add(a, row)\n"
        "  d = sub(a, col)\n"
        "  p = mul(a, 0.5)\n"
        "  q = div(col, a)\n"
        "  mx = maximum(one, a)\n"
        "  outer = add(col, row)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)), TF(SHAPE(3), F32(10, 20, 30)),
                      TF(SHAPE(2, 1), F32(1, 2)), TF(SHAPE(1), F32(2.5f))};
    run_t r = ok(src, "", 4, in);
    EXPECT_F(&r.res[0], SHAPE(2, 3), F32(11, 22, 33, 14, 25, 36));
    EXPECT_F(&r.res[1], SHAPE(2, 3), F32(0, 1, 2, 2, 3, 4));
    EXPECT_F(&r.res[2], SHAPE(2, 3), F32(0.5f, 1, 1.5f, 2, 2.5f, 3));
    EXPECT_F(&r.res[3], SHAPE(2, 3), F32(1, 0.5f, 1.0f / 3, 0.5f, 0.4f, 1.0f / 3));
    EXPECT_F(&r.res[4], SHAPE(2, 3), F32(2.5f, 2.5f, 3, 4, 5, 6));
    EXPECT_F(&r.res[5], SHAPE(2, 3), F32(11, 21, 31, 12, 22, 32));
    done(&r);
}

/* size-1 dims on both sides, and a rank-3 result from rank-1 and rank-3 */
static void test_broadcast_size1(void **state) {
    static const char *src =
        "fn f(x : f32[2, 1, 2], y : f32[3, 1], z : f32[2]) -> a, b\n"
        "  a = mul(x, y)\n"
        "  b = sub(z, x)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 1, 2), F32(1, 2, 3, 4)), TF(SHAPE(3, 1), F32(1, 10, 100)),
                      TF(SHAPE(2), F32(10, 20))};
    run_t r = ok(src, "", 3, in);
    /* a[i, j, k] = x[i, 0, k] * y[j, 0] */
    EXPECT_F(&r.res[0], SHAPE(2, 3, 2), F32(1, 2, 10, 20, 100, 200, 3, 4, 30, 40, 300, 400));
    EXPECT_F(&r.res[1], SHAPE(2, 1, 2), F32(9, 18, 7, 16));
    done(&r);
}

/* B = 0: every op runs on empty tensors; reductions over nothing give
 * sum 0, mean NaN, max and logsumexp -inf. */
static void test_empty_batch(void **state) {
    static const char *src =
        "dim B\n"
        "fn f(x : f32[B, 3], w : f32[3, 2]) -> y, s, m, mx, l, h, c\n"
        "  y = add(x, 1)\n"
        "  s = sum(x, axis=[0])\n"
        "  m = mean(x, axis=0)\n"
        "  mx = max(x, axis=[0])\n"
        "  l = logsumexp(x, axis=0)\n"
        "  h = matmul(x, w)\n"
        "  c = softmax(x)\n"
        "end\n";
    aj_tensor in[] = {aj_tensor_new(AJ_F32, 2, SHAPE(0, 3)), TF(SHAPE(3, 2), F32(1, 2, 3, 4, 5, 6))};
    run_t r = ok(src, "B=0", 2, in);
    expect_shape(&r.res[0], AJ_F32, 2, SHAPE(0, 3));
    assert_non_null(r.res[0].data);
    EXPECT_F(&r.res[1], SHAPE(3), F32(0, 0, 0));
    EXPECT_F(&r.res[2], SHAPE(3), F32(NAN, NAN, NAN));
    EXPECT_F(&r.res[3], SHAPE(3), F32(-INFINITY, -INFINITY, -INFINITY));
    EXPECT_F(&r.res[4], SHAPE(3), F32(-INFINITY, -INFINITY, -INFINITY));
    expect_shape(&r.res[5], AJ_F32, 2, SHAPE(0, 2));
    expect_shape(&r.res[6], AJ_F32, 2, SHAPE(0, 3));
    done(&r);
}

static void test_constant(void **state) {
    static const char *src =
        "dim B\n"
        "fn f() -> c, s\n"
        "  c = constant(value=2.5, shape=[B, 2])\n"
        "  s = constant(value=-1)\n"
        "end\n";
    run_t r = ok(src, "B=3", 0, NULL);
    EXPECT_F(&r.res[0], SHAPE(3, 2), F32(2.5f, 2.5f, 2.5f, 2.5f, 2.5f, 2.5f));
    expect_f32(&r.res[1], 0, NULL, F32(-1), 1);
    done(&r);
}

/* ------------------------------------------------------------ reductions */

static void test_reductions(void **state) {
    static const char *src =
        "fn f(x : f32[2, 3], big : f32[2]) -> s1, sall, s0k, sneg, m1, mx0, l1, lbig, mxk\n"
        "  s1 = sum(x, axis=[1])\n"
        "  sall = sum(x)\n"
        "  s0k = sum(x, axis=[0], keepdims=1)\n"
        "  sneg = sum(x, axis=-1)\n"
        "  m1 = mean(x, axis=1)\n"
        "  mx0 = max(x, axis=[0])\n"
        "  l1 = logsumexp(x, axis=[1])\n"
        "  lbig = logsumexp(big)\n"
        "  mxk = max(x, keepdims=1)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)), TF(SHAPE(2), F32(1000, 1000))};
    run_t r = ok(src, "", 2, in);
    EXPECT_F(&r.res[0], SHAPE(2), F32(6, 15));
    expect_f32(&r.res[1], 0, NULL, F32(21), 1);
    EXPECT_F(&r.res[2], SHAPE(1, 3), F32(5, 7, 9));
    EXPECT_F(&r.res[3], SHAPE(2), F32(6, 15));
    EXPECT_F(&r.res[4], SHAPE(2), F32(2, 5));
    EXPECT_F(&r.res[5], SHAPE(3), F32(4, 5, 6));
    EXPECT_F(&r.res[6], SHAPE(2), F32(3.40760596f, 6.40760596f));
    expect_f32(&r.res[7], 0, NULL, F32(1000.69314718f), 1);
    EXPECT_F(&r.res[8], SHAPE(1, 1), F32(6));
    done(&r);
}

static void test_reduce_3d(void **state) {
    static const char *src =
        "fn f(x : f32[2, 2, 2]) -> a, b\n"
        "  a = sum(x, axis=[0, 2])\n"
        "  b = mean(x, axis=[-1, 0], keepdims=1)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 2, 2), F32(1, 2, 3, 4, 5, 6, 7, 8))};
    run_t r = ok(src, "", 1, in);
    EXPECT_F(&r.res[0], SHAPE(2), F32(14, 22));
    EXPECT_F(&r.res[1], SHAPE(1, 2, 1), F32(3.5f, 5.5f));
    done(&r);
}

static void test_softmax(void **state) {
    static const char *src =
        "fn f(x : f32[2, 3], c : f32[2, 2], big : f32[2]) -> s, s0, ls, sb\n"
        "  s = softmax(x)\n"
        "  s0 = softmax(c, axis=0)\n"
        "  ls = log_softmax(x, axis=-1)\n"
        "  sb = softmax(big)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 1, 1, 1)), TF(SHAPE(2, 2), F32(1, 2, 3, 4)),
                      TF(SHAPE(2), F32(1000, 1001))};
    run_t r = ok(src, "", 3, in);
    EXPECT_F(&r.res[0], SHAPE(2, 3), F32(0.09003057f, 0.24472847f, 0.66524096f, 1.0f / 3, 1.0f / 3, 1.0f / 3));
    EXPECT_F(&r.res[1], SHAPE(2, 2), F32(0.11920292f, 0.11920292f, 0.88079708f, 0.88079708f));
    EXPECT_F(&r.res[2], SHAPE(2, 3),
             F32(-2.40760596f, -1.40760596f, -0.40760596f, -1.09861229f, -1.09861229f, -1.09861229f));
    EXPECT_F(&r.res[3], SHAPE(2), F32(0.26894142f, 0.73105858f));
    done(&r);
}

/* ------------------------------------------------------------ matmul */

static void test_matmul(void **state) {
    static const char *src =
        "fn f(a : f32[2, 3], b : f32[3, 2], at : f32[3, 2], bt : f32[2, 3]) -> c, cta, ctb, cboth\n"
        "  c = matmul(a, b)\n"
        "  cta = matmul(at, b, ta=1)\n"
        "  ctb = matmul(a, bt, tb=1)\n"
        "  cboth = matmul(at, bt, ta=1, tb=1)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)), TF(SHAPE(3, 2), F32(7, 8, 9, 10, 11, 12)),
                      TF(SHAPE(3, 2), F32(1, 4, 2, 5, 3, 6)), TF(SHAPE(2, 3), F32(7, 9, 11, 8, 10, 12))};
    run_t r = ok(src, "", 4, in);
    for (int i = 0; i < 4; i++) EXPECT_F(&r.res[i], SHAPE(2, 2), F32(58, 64, 139, 154));
    done(&r);
}

static void test_matmul_batched(void **state) {
    static const char *src =
        "fn f(a : f32[2, 2, 2], b : f32[2, 2], b1 : f32[1, 2, 2], v : f32[2, 1, 2]) -> c, c1, cv\n"
        "  c = matmul(a, b)\n"
        "  c1 = matmul(a, b1)\n"
        "  cv = matmul(v, b, tb=1)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 2, 2), F32(1, 0, 0, 1, 1, 1, 0, 1)), TF(SHAPE(2, 2), F32(1, 2, 3, 4)),
                      TF(SHAPE(1, 2, 2), F32(1, 2, 3, 4)), TF(SHAPE(2, 1, 2), F32(1, 1, 2, -1))};
    run_t r = ok(src, "", 4, in);
    EXPECT_F(&r.res[0], SHAPE(2, 2, 2), F32(1, 2, 3, 4, 4, 6, 3, 4));
    EXPECT_F(&r.res[1], SHAPE(2, 2, 2), F32(1, 2, 3, 4, 4, 6, 3, 4));
    /* v_b b^T: [1, 1] -> [3, 7]; [2, -1] -> [0, 2] */
    EXPECT_F(&r.res[2], SHAPE(2, 1, 2), F32(3, 7, 0, 2));
    done(&r);
}

/* ------------------------------------------------------------ masks */

static void test_masks_triangular(void **state) {
    static const char *src =
        "fn f() -> lo, slo, up, sup, rect\n"
        "  lo = mask(kind=lower, shape=[3, 3])\n"
        "  slo = mask(kind=strict_lower, shape=[3, 3])\n"
        "  up = mask(kind=upper, shape=[3, 3])\n"
        "  sup = mask(kind=strict_upper, shape=[3, 3])\n"
        "  rect = mask(kind=lower, shape=[2, 3])\n"
        "end\n";
    run_t r = ok(src, "", 0, NULL);
    EXPECT_F(&r.res[0], SHAPE(3, 3), F32(1, 0, 0, 1, 1, 0, 1, 1, 1));
    EXPECT_F(&r.res[1], SHAPE(3, 3), F32(0, 0, 0, 1, 0, 0, 1, 1, 0));
    EXPECT_F(&r.res[2], SHAPE(3, 3), F32(1, 1, 1, 0, 1, 1, 0, 0, 1));
    EXPECT_F(&r.res[3], SHAPE(3, 3), F32(0, 1, 1, 0, 0, 1, 0, 0, 0));
    EXPECT_F(&r.res[4], SHAPE(2, 3), F32(1, 0, 0, 1, 1, 0));
    done(&r);
}

/* n = 3 variables, 4 hidden units of degrees m = 1 + floor(2j / 4) = [1, 1, 2, 2]. */
static void test_masks_made(void **state) {
    static const char *src =
        "dim N = 3\n"
        "fn f() -> mi, mh, mo\n"
        "  mi = mask(kind=made_in, shape=[N, 4], n=N)\n"
        "  mh = mask(kind=made_hidden, shape=[4, 4], n=N)\n"
        "  mo = mask(kind=made_out, shape=[4, N], n=N)\n"
        "end\n";
    run_t r = ok(src, "", 0, NULL);
    EXPECT_F(&r.res[0], SHAPE(3, 4), F32(1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0));
    EXPECT_F(&r.res[1], SHAPE(4, 4), F32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1));
    EXPECT_F(&r.res[2], SHAPE(4, 3), F32(0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1));
    done(&r);
}

static void test_masks_conv(void **state) {
    static const char *src =
        "fn f() -> a, b\n"
        "  a = mask(kind=conv_a, shape=[2, 1, 3, 3])\n"
        "  b = mask(kind=conv_b, shape=[1, 1, 3, 5])\n"
        "end\n";
    run_t r = ok(src, "", 0, NULL);
    EXPECT_F(&r.res[0], SHAPE(2, 1, 3, 3), F32(1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0));
    EXPECT_F(&r.res[1], SHAPE(1, 1, 3, 5), F32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0));
    done(&r);
}

/* ------------------------------------------------------------ attention */

/* T = 2, E = 4, 2 heads (dh = 2), Ev = 2 (dv = 1); scale 1/sqrt(2).
 * Head 0: q = [1,0],[0,1]; k = [1,0],[0,1]. Head 1: q = [0,1],[1,0];
 * k = [0,0],[0,2]. v = [1, 10], [3, 20].
 * causal, query 0 sees key 0 only: out = v_0 = [1, 10].
 * query 1, head 0: scores [0, 1/sqrt2] -> p = [0.33023845, 0.66976155]
 *   -> 0.33023845 + 3 * 0.66976155 = 2.33952310; head 1: scores [0, 0]
 *   -> 15. Not causal, query 0: head 0 scores [1/sqrt2, 0] -> 1.66047690;
 *   head 1 scores [0, 2/sqrt2] -> p = [0.19557032, 0.80442968] -> 18.04429683. */
static void test_attention(void **state) {
    static const char *src =
        "fn f(q : f32[1, 2, 4], k : f32[1, 2, 4], v : f32[1, 2, 2]) -> c, nc\n"
        "  c = attention(q, k, v, heads=2, causal=1)\n"
        "  nc = attention(q, k, v, heads=2)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(1, 2, 4), F32(1, 0, 0, 1, 0, 1, 1, 0)),
                      TF(SHAPE(1, 2, 4), F32(1, 0, 0, 0, 0, 1, 0, 2)), TF(SHAPE(1, 2, 2), F32(1, 10, 3, 20))};
    run_t r = ok(src, "", 3, in);
    EXPECT_F(&r.res[0], SHAPE(1, 2, 2), F32(1, 10, 2.33952310f, 15));
    EXPECT_F(&r.res[1], SHAPE(1, 2, 2), F32(1.66047690f, 18.04429683f, 2.33952310f, 15));
    done(&r);
}

/* one query, three keys, one head: cross attention with Tq != Tk */
static void test_attention_cross(void **state) {
    static const char *src =
        "fn f(q : f32[1, 1], k : f32[3, 1], v : f32[3, 2]) -> o\n"
        "  o = attention(q, k, v)\n"
        "end\n";
    /* scores q k_j = [0, 0, 0] -> p = 1/3 each -> mean of v rows */
    aj_tensor in[] = {TF(SHAPE(1, 1), F32(0)), TF(SHAPE(3, 1), F32(1, 2, 3)),
                      TF(SHAPE(3, 2), F32(1, 2, 3, 4, 5, 9))};
    run_t r = ok(src, "", 3, in);
    EXPECT_F(&r.res[0], SHAPE(1, 2), F32(3, 5));
    done(&r);
}

/* ------------------------------------------------------------ convolutions */

/* x = [[1,2,3],[4,5,6],[7,8,9]], w = ones(3x3): each output is the sum of
 * its 3x3 neighbourhood; mask A sums the row above and the left neighbour;
 * B adds the centre. */
static void test_conv2d(void **state) {
    static const char *src =
        "fn f(x : f32[1, 1, 3, 3], w : f32[1, 1, 3, 3]) -> y, ya, yb, yd\n"
        "  y = conv2d(x, w)\n"
        "  ya = conv2d(x, w, mask=A)\n"
        "  yb = conv2d(x, w, mask=B)\n"
        "  yd = conv2d(x, w, dilation=2)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(1, 1, 3, 3), F32(1, 2, 3, 4, 5, 6, 7, 8, 9)),
                      TF(SHAPE(1, 1, 3, 3), F32(1, 1, 1, 1, 1, 1, 1, 1, 1))};
    run_t r = ok(src, "", 2, in);
    EXPECT_F(&r.res[0], SHAPE(1, 1, 3, 3), F32(12, 21, 16, 27, 45, 33, 24, 39, 28));
    EXPECT_F(&r.res[1], SHAPE(1, 1, 3, 3), F32(0, 1, 2, 3, 10, 10, 9, 22, 19));
    EXPECT_F(&r.res[2], SHAPE(1, 1, 3, 3), F32(1, 3, 5, 7, 15, 16, 16, 30, 28));
    /* dilation 2: taps at offsets -2, 0, 2, so y[0, 0] = x[0, 0] + x[0, 2] + x[2, 0] + x[2, 2] */
    EXPECT_F(&r.res[3], SHAPE(1, 1, 3, 3), F32(20, 10, 20, 10, 5, 10, 20, 10, 20));
    done(&r);
}

/* channels: x [2, 2, 1, 1], w [3, 2, 1, 1]: y[b, o] = sum_c w[o, c] x[b, c] */
static void test_conv2d_channels(void **state) {
    static const char *src =
        "fn f(x : f32[2, 2, 1, 1], w : f32[3, 2, 1, 1]) -> y\n"
        "  y = conv2d(x, w)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 2, 1, 1), F32(1, 2, -1, 1)), TF(SHAPE(3, 2, 1, 1), F32(1, 2, 3, 4, 0, 1))};
    run_t r = ok(src, "", 2, in);
    EXPECT_F(&r.res[0], SHAPE(2, 3, 1, 1), F32(5, 11, 2, 1, 1, 1));
    done(&r);
}

/* x = [1, 2, 3, 4], w = [1, 10, 100]. same: y_t = x_{t-1} + 10 x_t + 100 x_{t+1};
 * causal: y_t = x_{t-2} + 10 x_{t-1} + 100 x_t. With x5 = [1, .., 5] and
 * dilation 2, same: y_t = x_{t-2} + 10 x_t + 100 x_{t+2}; causal:
 * y_t = x_{t-4} + 10 x_{t-2} + 100 x_t. */
static void test_conv1d(void **state) {
    static const char *src =
        "fn f(x : f32[1, 1, 4], w : f32[1, 1, 3], x2 : f32[1, 2, 2], w2 : f32[1, 2, 1], x5 : f32[1, 1, 5])"
        " -> s, c, m, sd, cd\n"
        "  s = conv1d(x, w)\n"
        "  c = conv1d(x, w, pad=causal)\n"
        "  m = conv1d(x2, w2)\n"
        "  sd = conv1d(x5, w, dilation=2)\n"
        "  cd = conv1d(x5, w, pad=causal, dilation=2)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(1, 1, 4), F32(1, 2, 3, 4)), TF(SHAPE(1, 1, 3), F32(1, 10, 100)),
                      TF(SHAPE(1, 2, 2), F32(1, 2, 3, 4)), TF(SHAPE(1, 2, 1), F32(1, -1)),
                      TF(SHAPE(1, 1, 5), F32(1, 2, 3, 4, 5))};
    run_t r = ok(src, "", 5, in);
    EXPECT_F(&r.res[0], SHAPE(1, 1, 4), F32(210, 321, 432, 43));
    EXPECT_F(&r.res[1], SHAPE(1, 1, 4), F32(100, 210, 321, 432));
    EXPECT_F(&r.res[2], SHAPE(1, 1, 2), F32(-2, -2));
    EXPECT_F(&r.res[3], SHAPE(1, 1, 5), F32(310, 420, 531, 42, 53));
    EXPECT_F(&r.res[4], SHAPE(1, 1, 5), F32(100, 200, 310, 420, 531));
    done(&r);
}

/* ------------------------------------------------------------ shape ops */

static void test_reshape_transpose(void **state) {
    static const char *src =
        "dim B\n"
        "fn f(x : f32[2, 3], y : f32[B, 6], z : f32[2, 2, 2]) -> r, rb, t, t3\n"
        "  r = reshape(x, shape=[3, 2])\n"
        "  rb = reshape(y, shape=[B, 2, 3])\n"
        "  t = transpose(x, perm=[1, 0])\n"
        "  t3 = transpose(z, perm=[2, 0, 1])\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)), TF(SHAPE(1, 6), F32(1, 2, 3, 4, 5, 6)),
                      TF(SHAPE(2, 2, 2), F32(1, 2, 3, 4, 5, 6, 7, 8))};
    run_t r = ok(src, "B=1", 3, in);
    EXPECT_F(&r.res[0], SHAPE(3, 2), F32(1, 2, 3, 4, 5, 6));
    EXPECT_F(&r.res[1], SHAPE(1, 2, 3), F32(1, 2, 3, 4, 5, 6));
    EXPECT_F(&r.res[2], SHAPE(3, 2), F32(1, 4, 2, 5, 3, 6));
    /* t3[i, j, k] = z[j, k, i] */
    EXPECT_F(&r.res[3], SHAPE(2, 2, 2), F32(1, 3, 5, 7, 2, 4, 6, 8));
    done(&r);
}

static void test_slice_concat(void **state) {
    static const char *src =
        "fn f(x : f32[2, 3], a : f32[1, 2], b : f32[2, 2], c : f32[2, 1]) -> s, sn, s0, c0, c1\n"
        "  s = slice(x, axis=1, start=1, end=3)\n"
        "  sn = slice(x, axis=-1, start=0, end=1)\n"
        "  s0 = slice(x, axis=0, start=1, end=1)\n"
        "  c0 = concat(a, b, axis=0)\n"
        "  c1 = concat(c, b, c, axis=-1)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)), TF(SHAPE(1, 2), F32(1, 2)),
                      TF(SHAPE(2, 2), F32(3, 4, 5, 6)), TF(SHAPE(2, 1), F32(7, 8))};
    run_t r = ok(src, "", 4, in);
    EXPECT_F(&r.res[0], SHAPE(2, 2), F32(2, 3, 5, 6));
    EXPECT_F(&r.res[1], SHAPE(2, 1), F32(1, 4));
    expect_shape(&r.res[2], AJ_F32, 2, SHAPE(0, 3));
    EXPECT_F(&r.res[3], SHAPE(3, 2), F32(1, 2, 3, 4, 5, 6));
    EXPECT_F(&r.res[4], SHAPE(2, 4), F32(7, 3, 4, 7, 8, 5, 6, 8));
    done(&r);
}

static void test_broadcast_unsqueeze(void **state) {
    static const char *src =
        "dim B\n"
        "fn f(x : f32[3], c : f32[2, 1]) -> b, bc, u0, u1\n"
        "  b = broadcast(x, shape=[B, 3])\n"
        "  bc = broadcast(c, shape=[2, 2])\n"
        "  u0 = unsqueeze(x, axis=0)\n"
        "  u1 = unsqueeze(x, axis=-1)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(3), F32(1, 2, 3)), TF(SHAPE(2, 1), F32(4, 5))};
    run_t r = ok(src, "B=2", 2, in);
    EXPECT_F(&r.res[0], SHAPE(2, 3), F32(1, 2, 3, 1, 2, 3));
    EXPECT_F(&r.res[1], SHAPE(2, 2), F32(4, 4, 5, 5));
    EXPECT_F(&r.res[2], SHAPE(1, 3), F32(1, 2, 3));
    EXPECT_F(&r.res[3], SHAPE(3, 1), F32(1, 2, 3));
    done(&r);
}

static void test_gather_one_hot(void **state) {
    static const char *src =
        "fn f(t : f32[3, 2], ix : i32[2, 2], v : f32[3], j : i32[3]) -> g, gv, oh\n"
        "  g = gather(t, ix)\n"
        "  gv = gather(v, j)\n"
        "  oh = one_hot(j, n=3)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(3, 2), F32(1, 2, 3, 4, 5, 6)), TI(SHAPE(2, 2), I32(2, 0, 1, 1)),
                      TF(SHAPE(3), F32(10, 20, 30)), TI(SHAPE(3), I32(0, 2, 1))};
    run_t r = ok(src, "", 4, in);
    EXPECT_F(&r.res[0], SHAPE(2, 2, 2), F32(5, 6, 1, 2, 3, 4, 3, 4));
    EXPECT_F(&r.res[1], SHAPE(3), F32(10, 30, 20));
    EXPECT_F(&r.res[2], SHAPE(3, 3), F32(1, 0, 0, 0, 0, 1, 0, 1, 0));
    done(&r);
}

static void test_shift_pad(void **state) {
    static const char *src =
        "fn f(x : f32[2, 3], k : i32[4]) -> r, l, gone, p, pk, s0\n"
        "  r = shift(x, axis=1)\n"
        "  l = shift(x, axis=-1, by=-1)\n"
        "  gone = shift(x, axis=0, by=5)\n"
        "  p = pad(x, axis=0, before=1, after=2, value=9)\n"
        "  pk = shift(k, axis=0, by=2)\n"
        "  s0 = shift(x, axis=1, by=0)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)), TI(SHAPE(4), I32(1, 2, 3, 4))};
    run_t r = ok(src, "", 2, in);
    EXPECT_F(&r.res[0], SHAPE(2, 3), F32(0, 1, 2, 0, 4, 5));
    EXPECT_F(&r.res[1], SHAPE(2, 3), F32(2, 3, 0, 5, 6, 0));
    EXPECT_F(&r.res[2], SHAPE(2, 3), F32(0, 0, 0, 0, 0, 0));
    EXPECT_F(&r.res[3], SHAPE(5, 3), F32(9, 9, 9, 1, 2, 3, 4, 5, 6, 9, 9, 9, 9, 9, 9));
    EXPECT_I(&r.res[4], SHAPE(4), I32(0, 0, 1, 2));
    EXPECT_F(&r.res[5], SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6));
    done(&r);
}

static void test_skew(void **state) {
    static const char *src =
        "fn f(x : f32[1, 2, 3]) -> s, u\n"
        "  s = skew(x)\n"
        "  u = unskew(s)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(1, 2, 3), F32(1, 2, 3, 4, 5, 6))};
    run_t r = ok(src, "", 1, in);
    EXPECT_F(&r.res[0], SHAPE(1, 2, 4), F32(1, 2, 3, 0, 0, 4, 5, 6));
    EXPECT_F(&r.res[1], SHAPE(1, 2, 3), F32(1, 2, 3, 4, 5, 6));
    done(&r);
}

static void test_cast(void **state) {
    static const char *src =
        "fn f(x : f32[5], k : i32[2]) -> i, fl\n"
        "  i = cast(x, to=i32)\n"
        "  fl = cast(k, to=f32)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(5), F32(1.7f, -1.7f, 3, -0.2f, 1e20f)), TI(SHAPE(2), I32(3, -2))};
    run_t r = ok(src, "", 2, in);
    EXPECT_I(&r.res[0], SHAPE(5), I32(1, -1, 3, 0, INT32_MAX));
    EXPECT_F(&r.res[1], SHAPE(2), F32(3, -2));
    done(&r);
}

/* ------------------------------------------------------------ norm and losses */

/* x = [1, 2, 3, 4]: mean 2.5, var 1.25, (x - mean) / sqrt(1.25) =
 * [-1.34164079, -0.4472136, 0.4472136, 1.34164079]; then * g + b. */
static void test_layer_norm(void **state) {
    static const char *src =
        "fn f(x : f32[2, 4], g : f32[4], b : f32[4]) -> y\n"
        "  y = layer_norm(x, g, b, eps=0)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 4), F32(1, 2, 3, 4, 2, 4, 6, 8)), TF(SHAPE(4), F32(1, 1, 2, 2)),
                      TF(SHAPE(4), F32(0, 1, 0, 1))};
    run_t r = ok(src, "", 3, in);
    EXPECT_F(&r.res[0], SHAPE(2, 4),
             F32(-1.34164079f, 0.5527864f, 0.8944272f, 3.68328157f, -1.34164079f, 0.5527864f, 0.8944272f,
                 3.68328157f));
    done(&r);
}

static void test_losses(void **state) {
    static const char *src =
        "fn f(l : f32[4], x : f32[4], lg : f32[2, 3], t : i32[2], gx : f32[2], gls : f32[2]) -> b, c, g\n"
        "  b = bernoulli_nll(l, x)\n"
        "  c = categorical_nll(lg, t)\n"
        "  g = gaussian_nll(gx, 0, gls)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(4), F32(0, 2, -3, 100)), TF(SHAPE(4), F32(1, 0, 1, 1)),
                      TF(SHAPE(2, 3), F32(1, 2, 3, 0, 0, 0)), TI(SHAPE(2), I32(2, 0)),
                      TF(SHAPE(2), F32(1, 0)), TF(SHAPE(2), F32(0, 0.69314718f))};
    run_t r = ok(src, "", 6, in);
    /* softplus(l) - x l: log 2; softplus(2); softplus(-3) + 3; 100 - 100 */
    EXPECT_F(&r.res[0], SHAPE(4), F32(0.69314718f, 2.12692801f, 3.04858735f, 0));
    /* lse([1,2,3]) - 3; log 3 */
    EXPECT_F(&r.res[1], SHAPE(2), F32(0.40760596f, 1.09861229f));
    /* log sqrt(2 pi) + ls + z^2 / 2 */
    EXPECT_F(&r.res[2], SHAPE(2), F32(1.41893853f, 1.61208571f));
    done(&r);
}

/* x = 0, mu = [0, 1], sigma = 1, equal weights: -log((phi(0) + phi(1)) / 2)
 * = 1.13800873; x = 0.5, weights [1/4, 3/4] (logits [0, log 3]), mu = [0, 1],
 * sigma = [1, 2]: 1.45664440. */
static void test_mog_nll(void **state) {
    static const char *src =
        "fn f(x : f32[2], pi : f32[2, 2], mu : f32[2, 2], ls : f32[2, 2]) -> y\n"
        "  y = mog_nll(x, pi, mu, ls)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2), F32(0, 0.5f)), TF(SHAPE(2, 2), F32(0, 0, 0, 1.09861229f)),
                      TF(SHAPE(2, 2), F32(0, 1, 0, 1)), TF(SHAPE(2, 2), F32(0, 0, 0, 0.69314718f))};
    run_t r = ok(src, "", 4, in);
    EXPECT_F(&r.res[0], SHAPE(2), F32(1.13800873f, 1.45664440f));
    done(&r);
}

/* ------------------------------------------------------------ sampling */

static double mean_of(const aj_tensor *t) {
    double s = 0;
    int64_t n = aj_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) s += t->dtype == AJ_F32 ? ((float *)t->data)[i] : ((int32_t *)t->data)[i];
    return s / (double)n;
}

static const char *bern_src =
    "dim N = 10000\n"
    "fn f(l : f32[N]) -> y\n"
    "  y = bernoulli(l)\n"
    "end\n";

static run_t bern(uint64_t seed, float logit) {
    aj_tensor in[] = {aj_tensor_new(AJ_F32, 1, SHAPE(10000))};
    for (int i = 0; i < 10000; i++) ((float *)in[0].data)[i] = logit;
    return run(bern_src, "", seed, 1, in);
}

static void test_bernoulli(void **state) {
    run_t a = bern(7, 0), b = bern(7, 0), c = bern(8, 0);
    assert_int_equal(a.rc | b.rc | c.rc, 0);
    /* mean of 10000 fair coins: sd 0.005 */
    assert_true(fabs(mean_of(&a.res[0]) - 0.5) < 0.02);
    assert_memory_equal(a.res[0].data, b.res[0].data, 10000 * 4);
    assert_memory_not_equal(a.res[0].data, c.res[0].data, 10000 * 4);
    for (int i = 0; i < 10000; i++) {
        float v = ((float *)a.res[0].data)[i];
        assert_true(v == 0 || v == 1);
    }
    done(&a), done(&b), done(&c);
    run_t one = bern(1, 100), zero = bern(1, -100), p = bern(3, -1.09861229f);   /* sigmoid = 1/4 */
    assert_true(mean_of(&one.res[0]) == 1);
    assert_true(mean_of(&zero.res[0]) == 0);
    assert_true(fabs(mean_of(&p.res[0]) - 0.25) < 0.02);
    done(&one), done(&zero), done(&p);
}

static void test_categorical(void **state) {
    static const char *src =
        "dim N = 10000\n"
        "fn f(l : f32[N, 3], d : f32[4, 3]) -> y, yd, yt\n"
        "  y = categorical(l)\n"
        "  yd = categorical(d)\n"
        "  yt = categorical(l, temperature=0.01)\n"
        "end\n";
    aj_tensor in[] = {aj_tensor_new(AJ_F32, 2, SHAPE(10000, 3)),
                      TF(SHAPE(4, 3), F32(0, -100, -100, -100, 0, -100, -100, -100, 0, -100, 0, -100))};
    /* probabilities [1/6, 2/6, 3/6] (logits log 1, log 2, log 3) */
    for (int i = 0; i < 10000; i++) {
        float *row = (float *)in[0].data + 3 * i;
        row[0] = 0, row[1] = 0.69314718f, row[2] = 1.09861229f;
    }
    run_t r = run(src, "", 5, 2, in);
    assert_int_equal(r.rc, 0);
    int count[3] = {0};
    expect_shape(&r.res[0], AJ_I32, 1, SHAPE(10000));
    for (int i = 0; i < 10000; i++) count[((int32_t *)r.res[0].data)[i]]++;
    assert_true(fabs(count[0] / 1e4 - 1 / 6.0) < 0.02);
    assert_true(fabs(count[1] / 1e4 - 2 / 6.0) < 0.02);
    assert_true(fabs(count[2] / 1e4 - 3 / 6.0) < 0.02);
    EXPECT_I(&r.res[1], SHAPE(4), I32(0, 1, 2, 1));
    /* temperature 0.01 sharpens to the argmax */
    for (int i = 0; i < 10000; i++) assert_int_equal(((int32_t *)r.res[2].data)[i], 2);
    done(&r);
}

/* normal(3, log 2): mean 3, variance 4; mog: the heavy component, tiny sigma */
static void test_normal_mog_uniform(void **state) {
    static const char *src =
        "dim N = 10000\n"
        "fn f(mu : f32[N], pi : f32[2, 2], m : f32[2, 2], s : f32[2, 2]) -> z, x, u\n"
        "  z = normal(mu, 0.69314718)\n"
        "  x = mog(pi, m, s)\n"
        "  u = uniform(shape=[N])\n"
        "end\n";
    aj_tensor in[] = {aj_tensor_new(AJ_F32, 1, SHAPE(10000)), TF(SHAPE(2, 2), F32(0, -100, -100, 0)),
                      TF(SHAPE(2, 2), F32(5, -5, 5, -5)), TF(SHAPE(2, 2), F32(-10, -10, -10, -10))};
    for (int i = 0; i < 10000; i++) ((float *)in[0].data)[i] = 3;
    run_t r = run(src, "", 11, 4, in);
    assert_int_equal(r.rc, 0);
    double m = mean_of(&r.res[0]), v = 0;
    for (int i = 0; i < 10000; i++) v += pow(((float *)r.res[0].data)[i] - m, 2) / 1e4;
    assert_true(fabs(m - 3) < 0.08);
    assert_true(fabs(v - 4) < 0.25);
    const float *x = r.res[1].data;
    assert_true(fabsf(x[0] - 5) < 0.01f && fabsf(x[1] + 5) < 0.01f);
    const float *u = r.res[2].data;
    for (int i = 0; i < 10000; i++) assert_true(u[i] >= 0 && u[i] < 1);
    assert_true(fabs(mean_of(&r.res[2]) - 0.5) < 0.01);
    done(&r);
}

/* Each recurrence step draws with its own key: 64 steps of one fair coin
 * are not all alike, and the same seed repeats them. */
static void test_sampling_in_recurrence(void **state) {
    static const char *src =
        "dim T = 64\n"
        "fn f() -> ys\n"
        "  z = constant(value=0, shape=[1])\n"
        "  ys = recurrence(steps=T) {\n"
        "    use z\n"
        "    s = bernoulli(z)\n"
        "    stack s, axis=0\n"
        "  }\n"
        "end\n";
    run_t a = run(src, "", 3, 0, NULL), b = run(src, "", 3, 0, NULL);
    assert_int_equal(a.rc | b.rc, 0);
    expect_shape(&a.res[0], AJ_F32, 2, SHAPE(64, 1));
    double m = mean_of(&a.res[0]);
    assert_true(m > 0.2 && m < 0.8);
    assert_memory_equal(a.res[0].data, b.res[0].data, 64 * 4);
    done(&a), done(&b);
}

/* ------------------------------------------------------------ recurrence */

static const char *cumsum_src =
    "dim T = 3\n"
    "fn f(xs : f32[2, T]) -> total, ys\n"
    "  z = constant(value=0, shape=[2])\n"
    "  total, ys = recurrence(steps=T%s) {\n"
    "    carry a = z\n"
    "    slice x = xs, axis=1\n"
    "    a2 = add(a, x)\n"
    "    next a = a2\n"
    "    stack a2, axis=1\n"
    "  }\n"
    "end\n";

static run_t cumsum(const char *extra, const char *dims, aj_tensor x) {
    char src[512];
    snprintf(src, sizeof src, cumsum_src, extra);
    aj_tensor in[] = {x};
    return ok(src, dims, 1, in);
}

static void test_recurrence_forward(void **state) {
    run_t r = cumsum("", "", TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)));
    EXPECT_F(&r.res[0], SHAPE(2), F32(6, 15));
    EXPECT_F(&r.res[1], SHAPE(2, 3), F32(1, 3, 6, 4, 9, 15));
    done(&r);
}

/* reversed: t = 2, 1, 0 and the running sums land at index t */
static void test_recurrence_reverse(void **state) {
    run_t r = cumsum(", reverse=1", "", TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)));
    EXPECT_F(&r.res[0], SHAPE(2), F32(6, 15));
    EXPECT_F(&r.res[1], SHAPE(2, 3), F32(6, 5, 3, 15, 11, 6));
    done(&r);
}

/* no steps: the carry is its initial value, the stack is empty */
static void test_recurrence_zero_steps(void **state) {
    run_t r = cumsum("", "T=0", aj_tensor_new(AJ_F32, 2, SHAPE(2, 0)));
    EXPECT_F(&r.res[0], SHAPE(2), F32(0, 0));
    expect_shape(&r.res[1], AJ_F32, 2, SHAPE(2, 0));
    done(&r);
}

/* rows outside, columns inside: the inner scan gives each row's running
 * sums, the outer carry adds up the row totals; w is used from two levels
 * up and scales every element. */
static void test_recurrence_nested(void **state) {
    static const char *src =
        "fn f(xs : f32[2, 3], w : f32[]) -> tot, ys\n"
        "  z = constant(value=0, shape=[])\n"
        "  tot, ys = recurrence(steps=2) {\n"
        "    carry acc = z\n"
        "    slice row = xs, axis=0\n"
        "    z0 = constant(value=0, shape=[])\n"
        "    rs, cum = recurrence(steps=3) {\n"
        "      carry a = z0\n"
        "      slice x = row, axis=-1\n"
        "      wx = mul(x, w)\n"
        "      a2 = add(a, wx)\n"
        "      next a = a2\n"
        "      stack a2, axis=0\n"
        "    }\n"
        "    acc2 = add(acc, rs)\n"
        "    next acc = acc2\n"
        "    stack cum, axis=0\n"
        "  }\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)), tensor(AJ_F32, 0, NULL, F32(2))};
    run_t r = ok(src, "", 2, in);
    expect_f32(&r.res[0], 0, NULL, F32(42), 1);
    EXPECT_F(&r.res[1], SHAPE(2, 3), F32(2, 6, 12, 8, 18, 30));
    done(&r);
}

/* A carry passed through unchanged, a use stacked every step, and a param
 * read inside the body: results that are leaves or params get copied. */
static void test_recurrence_passthrough(void **state) {
    static const char *src =
        "param P : f32[2] = ones\n"
        "fn f(a0 : f32[2]) -> a, st, a0c\n"
        "  a, st = recurrence(steps=2) {\n"
        "    carry a = a0\n"
        "    pp = add(P, 1)\n"
        "    next a = a\n"
        "    stack pp, axis=-1\n"
        "  }\n"
        "  a0c = neg(a0)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2), F32(3, 4))};
    run_t r = ok(src, "", 1, in);
    EXPECT_F(&r.res[0], SHAPE(2), F32(3, 4));
    EXPECT_F(&r.res[1], SHAPE(2, 2), F32(2, 2, 2, 2));
    EXPECT_F(&r.res[2], SHAPE(2), F32(-3, -4));
    done(&r);
}

/* A value named as two results, and a fn returning its own argument: each
 * result gets a tensor of its own. */
static void test_results_aliasing(void **state) {
    static const char *src =
        "fn f(x : f32[2]) -> y, y, x\n"
        "  y = exp(x)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2), F32(0, 1))};
    run_t r = ok(src, "", 1, in);
    EXPECT_F(&r.res[0], SHAPE(2), F32(1, 2.71828183f));
    EXPECT_F(&r.res[1], SHAPE(2), F32(1, 2.71828183f));
    EXPECT_F(&r.res[2], SHAPE(2), F32(0, 1));
    assert_ptr_not_equal(r.res[0].data, r.res[1].data);
    done(&r);
}

/* ------------------------------------------------------------ params */

static void test_params_in_graph(void **state) {
    static const char *src =
        "dim D = 2\n"
        "param W : f32[D, D] = zeros\n"
        "param b : f32[D] = zeros\n"
        "fn f(x : f32[1, D]) -> y\n"
        "  h = matmul(x, W)\n"
        "  y = add(h, b)\n"
        "end\n";
    aj_module *m = load(src, "");
    aj_tensor params[] = {TF(SHAPE(2, 2), F32(1, 2, 3, 4)), TF(SHAPE(2), F32(10, 20))};
    aj_tensor in[] = {TF(SHAPE(1, 2), F32(1, 1))};
    run_t r = run_module(m, params, 0, 1, in);
    assert_int_equal(r.rc, 0);
    EXPECT_F(&r.res[0], SHAPE(1, 2), F32(14, 26));
    done(&r);
}

static void test_param_init(void **state) {
    static const char *src =
        "dim D = 3\n"
        "param W : f32[D, 400] = normal(0.5)\n"
        "param U : f32[20, 30] = uniform(-1, 2)\n"
        "param X : f32[100, 50] = xavier\n"
        "param Z : f32[D] = zeros\n"
        "param O : f32[D] = ones\n"
        "fn f() -> y\n"
        "  y = constant(value=0)\n"
        "end\n";
    aj_module *m = load(src, "");
    aj_tensor w = aj_param_init(m, 0, &m->bind, 1), w2 = aj_param_init(m, 0, &m->bind, 1);
    aj_tensor w3 = aj_param_init(m, 0, &m->bind, 2);
    expect_shape(&w, AJ_F32, 2, SHAPE(3, 400));
    assert_memory_equal(w.data, w2.data, 1200 * 4);
    assert_memory_not_equal(w.data, w3.data, 1200 * 4);
    double s = 0, s2 = 0;
    for (int i = 0; i < 1200; i++) s += ((float *)w.data)[i], s2 += pow(((float *)w.data)[i], 2);
    assert_true(fabs(s / 1200) < 0.05);
    assert_true(fabs(sqrt(s2 / 1200) - 0.5) < 0.05);
    aj_tensor u = aj_param_init(m, 1, &m->bind, 1), x = aj_param_init(m, 2, &m->bind, 1);
    double umin = 9, umax = -9, xmax = 0;
    for (int i = 0; i < 600; i++) umin = fmin(umin, ((float *)u.data)[i]), umax = fmax(umax, ((float *)u.data)[i]);
    assert_true(umin >= -1 && umin < -0.9 && umax < 2 && umax > 1.9);
    for (int i = 0; i < 5000; i++) xmax = fmax(xmax, fabs(((float *)x.data)[i]));
    /* sqrt(6 / (100 + 50)) = 0.2 */
    assert_true(xmax <= 0.2 && xmax > 0.19);
    aj_tensor z = aj_param_init(m, 3, &m->bind, 1), o = aj_param_init(m, 4, &m->bind, 1);
    EXPECT_F(&z, SHAPE(3), F32(0, 0, 0));
    EXPECT_F(&o, SHAPE(3), F32(1, 1, 1));
    aj_tensor *all[] = {&w, &w2, &w3, &u, &x, &z, &o};
    for (int i = 0; i < 7; i++) aj_tensor_free(all[i]);
    aj_module_free(m);
}

static void test_tensor_alloc(void **state) {
    aj_tensor e = aj_tensor_new(AJ_F32, 2, SHAPE(0, 5));
    assert_non_null(e.data);
    assert_int_equal(aj_tensor_numel(&e), 0);
    aj_tensor_free(&e);
    aj_tensor_free(&e);   /* freeing twice is harmless */
    aj_tensor big = aj_tensor_new(AJ_F32, 3, SHAPE(1ll << 31, 1ll << 31, 1ll << 31));
    assert_null(big.data);
    aj_tensor neg = aj_tensor_new(AJ_I32, 1, SHAPE(-1));
    assert_null(neg.data);
    aj_tensor s = aj_tensor_new(AJ_I32, 0, NULL);
    assert_int_equal(aj_tensor_numel(&s), 1);
    assert_int_equal(((int32_t *)s.data)[0], 0);
    aj_tensor_free(&s);
}

/* ------------------------------------------------------------ errors */

static void expect_run_error(run_t *r, int line, const char *msg) {
    assert_int_equal(r->rc, -1);
    assert_true(r->d.set);
    assert_int_equal(r->d.line, line);
    if (!strstr(r->d.msg, msg)) fail_msg("message '%s' lacks '%s'", r->d.msg, msg);
    for (int i = 0; i < r->nres; i++) assert_null(r->res[i].data);
    done(r);
}

static void test_runtime_errors(void **state) {
    static const char *gather_src =
        "fn f(t : f32[3, 2], ix : i32[2]) -> g\n"
        "  h = exp(t)\n"
        "  g = gather(h, ix)\n"
        "end\n";
    aj_tensor in1[] = {TF(SHAPE(3, 2), F32(1, 2, 3, 4, 5, 6)), TI(SHAPE(2), I32(0, 3))};
    run_t r = run(gather_src, "", 0, 2, in1);
    expect_run_error(&r, 3, "gather: index 3 at position 1 is out of range for a table of 3 rows");

    static const char *nll_src =
        "fn f(l : f32[2, 3], t : i32[2]) -> c\n"
        "  c = categorical_nll(l, t)\n"
        "end\n";
    aj_tensor in2[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6)), TI(SHAPE(2), I32(-1, 0))};
    r = run(nll_src, "", 0, 2, in2);
    expect_run_error(&r, 2, "target -1 at position 0 is out of range for 3 classes");

    static const char *oh_src =
        "fn f(t : i32[2]) -> c\n"
        "  c = one_hot(t, n=2)\n"
        "end\n";
    aj_tensor in3[] = {TI(SHAPE(2), I32(1, 2))};
    r = run(oh_src, "", 0, 1, in3);
    expect_run_error(&r, 2, "out of range");
}

/* An error at step 2 of a scan, inside a nested body: everything made so
 * far is freed (the sanitizer build checks) and the diag points at it. */
static void test_runtime_error_in_recurrence(void **state) {
    static const char *src =
        "fn f(t : f32[2, 2], ix : i32[3]) -> ys\n"
        "  ys = recurrence(steps=3) {\n"
        "    slice i = ix, axis=0\n"
        "    e = exp(t)\n"
        "    i1 = unsqueeze(i, axis=0)\n"
        "    g = gather(e, i1)\n"
        "    stack g, axis=0\n"
        "  }\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 2), F32(0, 0, 0, 0)), TI(SHAPE(3), I32(0, 1, 7))};
    run_t r = run(src, "", 0, 2, in);
    expect_run_error(&r, 6, "index 7");
}

static void test_bad_inputs(void **state) {
    static const char *src =
        "dim B\n"
        "fn f(x : f32[B, 3]) -> y\n"
        "  y = exp(x)\n"
        "end\n";
    aj_tensor in[] = {TF(SHAPE(2, 2), F32(1, 2, 3, 4))};
    run_t r = run(src, "B=2", 0, 1, in);
    expect_run_error(&r, 2, "argument 'x' should be f32[2, 3], got f32[2, 2]");
    aj_tensor in2[] = {TI(SHAPE(2, 3), I32(1, 2, 3, 4, 5, 6))};
    r = run(src, "B=2", 0, 1, in2);
    expect_run_error(&r, 2, "got i32[2, 3]");
    aj_tensor in3[] = {TF(SHAPE(2, 3), F32(1, 2, 3, 4, 5, 6))};
    r = run(src, "", 0, 1, in3);   /* B never bound */
    expect_run_error(&r, 2, "bind every dim");
}

/* aj_interp_node runs one node of a graph on given tensors. */
static void test_interp_node(void **state) {
    static const char *src =
        "fn f(a : f32[2], b : f32[2]) -> y\n"
        "  y = maximum(a, b)\n"
        "end\n";
    aj_module *m = load(src, "");
    const aj_graph *g = aj_module_fn(m, "f");
    aj_tensor in[] = {TF(SHAPE(2), F32(1, 5)), TF(SHAPE(2), F32(3, 2))}, out[1];
    aj_diag d = {0};
    assert_int_equal(aj_interp_node(m, g, 0, in, out, 0, &d), 0);
    EXPECT_F(&out[0], SHAPE(2), F32(3, 5));
    aj_tensor_free(&out[0]), aj_tensor_free(&in[0]), aj_tensor_free(&in[1]);
    aj_module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_binary_broadcast),
        cmocka_unit_test(test_broadcast_size1),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_constant),
        cmocka_unit_test(test_reductions),
        cmocka_unit_test(test_reduce_3d),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_batched),
        cmocka_unit_test(test_masks_triangular),
        cmocka_unit_test(test_masks_made),
        cmocka_unit_test(test_masks_conv),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_cross),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv2d_channels),
        cmocka_unit_test(test_conv1d),
        cmocka_unit_test(test_reshape_transpose),
        cmocka_unit_test(test_slice_concat),
        cmocka_unit_test(test_broadcast_unsqueeze),
        cmocka_unit_test(test_gather_one_hot),
        cmocka_unit_test(test_shift_pad),
        cmocka_unit_test(test_skew),
        cmocka_unit_test(test_cast),
        cmocka_unit_test(test_layer_norm),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_mog_nll),
        cmocka_unit_test(test_bernoulli),
        cmocka_unit_test(test_categorical),
        cmocka_unit_test(test_normal_mog_uniform),
        cmocka_unit_test(test_sampling_in_recurrence),
        cmocka_unit_test(test_recurrence_forward),
        cmocka_unit_test(test_recurrence_reverse),
        cmocka_unit_test(test_recurrence_zero_steps),
        cmocka_unit_test(test_recurrence_nested),
        cmocka_unit_test(test_recurrence_passthrough),
        cmocka_unit_test(test_results_aliasing),
        cmocka_unit_test(test_params_in_graph),
        cmocka_unit_test(test_param_init),
        cmocka_unit_test(test_tensor_alloc),
        cmocka_unit_test(test_runtime_errors),
        cmocka_unit_test(test_runtime_error_in_recurrence),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_interp_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
