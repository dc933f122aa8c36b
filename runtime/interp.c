/* The reference interpreter: runs a verified graph one node at a time with
 * plain loops. It is the oracle the JIT engines are checked against, so each
 * kernel is the math written out (sums accumulate in double), not fast code.
 *
 * Every value's type is concrete under the module's binding (m->bind), so a
 * node's results are allocated from their types before its kernel runs; a
 * kernel only fills them. An intermediate is freed after its last use.
 * Runtime errors (an index out of range, out of memory) go to the diag at the
 * node's line and column.
 *
 * f32 values are held as `real`: float here, as every engine stores them,
 * and double when runtime/interp_f64.c compiles this file again as
 * aj_interp_run_f64, so that gradcheck takes finite differences of a loss
 * free of f32 rounding. i32 values are int32_t in both. */
#ifdef AJ_INTERP_F64
typedef double real;
#define aj_interp_run aj_interp_run_f64
#else
typedef float real;
#endif

#include "runtime/interp.h"
#include "runtime/extern_op.h"
#include "runtime/rng.h"
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32   /* most nested recurrences */

typedef struct {
    const aj_module *m;
    const aj_tensor *params;
    uint64_t seed;
    int64_t step[MAX_DEPTH];   /* the step index t of each enclosing recurrence */
    int depth;
    aj_diag *d;
} ictx;

/* A kernel: read in[0..n->nin-1], fill the allocated out[0..n->nout-1]. */
typedef int (*interp_fn)(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out);

__attribute__((format(printf, 3, 4)))
static int fail(ictx *c, const aj_node *n, const char *fmt, ...) {
    char msg[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return aj_error(c->d, n->line, n->col, "%s: %s", aj_op_info(n->op)->name, msg);
}

static real *fdata(const aj_tensor *t) { return (real *)t->data; }
static size_t esize(const aj_tensor *t) { return t->dtype == AJ_F32 ? sizeof(real) : sizeof(int32_t); }
static int32_t *idata(const aj_tensor *t) { return (int32_t *)t->data; }

static int norm_axis(int64_t axis, int rank) { return (int)(axis < 0 ? axis + rank : axis); }

/* Product of shape[from..to-1]. */
static int64_t prod(const int64_t *shape, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= shape[i];
    return p;
}

/* View t as [outer, len, inner] around axis ax. */
static void split(const aj_tensor *t, int ax, int64_t *outer, int64_t *len, int64_t *inner) {
    *outer = prod(t->shape, 0, ax);
    *len = t->shape[ax];
    *inner = prod(t->shape, ax + 1, t->rank);
}

/* dst[di..di+n-1] = src[si..si+n-1], elements of one dtype; data moves as
 * bytes, so any dtype. */
static void copy_elems(const aj_tensor *src, int64_t si, aj_tensor *dst, int64_t di, int64_t n) {
    size_t es = esize(src);
    if (n > 0) memcpy((char *)dst->data + (size_t)di * es, (const char *)src->data + (size_t)si * es, (size_t)n * es);
}

/* dst[o, dst_from + k, :] = src[o, src_from + k, :] for k < count, with both
 * seen as [outer, len, inner]. */
static void copy_along(const aj_tensor *src, int64_t src_len, int64_t src_from, aj_tensor *dst,
                       int64_t dst_len, int64_t dst_from, int64_t count, int64_t outer, int64_t inner) {
    if (count <= 0 || inner == 0) return;
    for (int64_t o = 0; o < outer; o++)
        copy_elems(src, (o * src_len + src_from) * inner, dst, (o * dst_len + dst_from) * inner, count * inner);
}

/* f32 -> i32 truncates toward zero; NaN gives 0 and out-of-range values
 * saturate (a C cast would be undefined there). */
static int32_t to_i32(double x) {
    if (isnan(x)) return 0;
    if (x >= 2147483647.0) return INT32_MAX;
    if (x <= -2147483648.0) return INT32_MIN;
    return (int32_t)x;
}

/* ------------------------------------------------------------ the walk */

/* A row-major walk over every element of `shape`, tracking an offset into
 * each of up to 4 tensors with its own strides (stride 0 = broadcast). */
typedef struct {
    int rank, nt;
    int64_t shape[AJ_MAX_RANK], idx[AJ_MAX_RANK];
    int64_t st[4][AJ_MAX_RANK], off[4];
} walk;

static void walk_init(walk *w, int rank, const int64_t *shape) {
    memset(w, 0, sizeof *w);
    w->rank = rank;
    memcpy(w->shape, shape, sizeof(int64_t) * (size_t)rank);
}

static void walk_add(walk *w, const int64_t *strides) {
    memcpy(w->st[w->nt++], strides, sizeof(int64_t) * (size_t)w->rank);
}

/* Add a contiguous tensor of shape s (rank r <= walk rank) broadcast to the
 * walk's shape numpy-style (right-aligned, size-1 axes repeat), in blocks of
 * `unit` elements. */
static void walk_add_bcast(walk *w, int r, const int64_t *s, int64_t unit) {
    int64_t st[AJ_MAX_RANK] = {0}, stride = unit;
    for (int a = r - 1; a >= 0; a--) {
        st[a + w->rank - r] = s[a] == 1 ? 0 : stride;
        stride *= s[a];
    }
    walk_add(w, st);
}

static void walk_next(walk *w) {
    for (int a = w->rank - 1; a >= 0; a--) {
        w->idx[a]++;
        for (int t = 0; t < w->nt; t++) w->off[t] += w->st[t][a];
        if (w->idx[a] < w->shape[a]) return;
        for (int t = 0; t < w->nt; t++) w->off[t] -= w->st[t][a] * w->shape[a];
        w->idx[a] = 0;
    }
}

/* ------------------------------------------------------------ rows */

/* log sum_k exp(x[k*stride]) over K values, stably: m + log sum exp(x - m).
 * -inf for K == 0 or all -inf. */
static double row_lse(const real *x, int64_t K, int64_t stride) {
    double m = -INFINITY, s = 0;
    for (int64_t k = 0; k < K; k++) m = fmax(m, x[k * stride]);
    if (isinf(m)) return m;
    for (int64_t k = 0; k < K; k++) s += exp(x[k * stride] - m);
    return m + log(s);
}

/* Inverse CDF of softmax(l * inv_temp) over K > 0 logits at u in [0, 1):
 * the first k whose cumulative weight exceeds u * total. */
static int64_t pick(const real *l, int64_t K, double inv_temp, float u) {
    double m = -INFINITY, total = 0, cum = 0;
    for (int64_t k = 0; k < K; k++) m = fmax(m, l[k]);
    for (int64_t k = 0; k < K; k++) total += exp((l[k] - m) * inv_temp);
    int64_t last = K - 1;
    for (int64_t k = 0; k < K; k++) {
        double e = exp((l[k] - m) * inv_temp);
        cum += e;
        if (e > 0) last = k;
        if (cum > u * total) return k;
    }
    return last;   /* rounding left u * total at the very end */
}

/* ------------------------------------------------------------ elementwise */

/* One scalar function per elementwise op: x holds this element's inputs
 * (after broadcasting); key and i feed the sampling ops (runtime/rng.h). */
typedef real (*ew_fn)(const real *x, uint64_t key, uint64_t i);

static double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }
/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|) */
static double softplus(double x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }
/* -log N(x; mu, e^ls) = log sqrt(2 pi) + ls + ((x - mu) e^-ls)^2 / 2 */
static double gauss_nll(double x, double mu, double ls) {
    double z = (x - mu) * exp(-ls);
    return 0.9189385332046727 + ls + 0.5 * z * z;
}

static real ew_neg(const real *x, uint64_t k, uint64_t i) { return -x[0]; }
static real ew_exp(const real *x, uint64_t k, uint64_t i) { return (real)exp(x[0]); }
static real ew_log(const real *x, uint64_t k, uint64_t i) { return (real)log(x[0]); }
static real ew_tanh(const real *x, uint64_t k, uint64_t i) { return (real)tanh(x[0]); }
static real ew_sigmoid(const real *x, uint64_t k, uint64_t i) { return (real)sigmoid(x[0]); }
static real ew_relu(const real *x, uint64_t k, uint64_t i) { return x[0] > 0 ? x[0] : 0; }
static real ew_softplus(const real *x, uint64_t k, uint64_t i) { return (real)softplus(x[0]); }
static real ew_sqrt(const real *x, uint64_t k, uint64_t i) { return (real)sqrt(x[0]); }
static real ew_square(const real *x, uint64_t k, uint64_t i) { return x[0] * x[0]; }
/* gelu, tanh form: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
static real ew_gelu(const real *x, uint64_t k, uint64_t i) {
    double v = x[0];
    return (real)(0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));
}
static real ew_sin(const real *x, uint64_t k, uint64_t i) { return (real)sin(x[0]); }
static real ew_cos(const real *x, uint64_t k, uint64_t i) { return (real)cos(x[0]); }
static real ew_step(const real *x, uint64_t k, uint64_t i) { return x[0] > 0 ? 1.0f : 0.0f; }
static real ew_add(const real *x, uint64_t k, uint64_t i) { return x[0] + x[1]; }
static real ew_sub(const real *x, uint64_t k, uint64_t i) { return x[0] - x[1]; }
static real ew_mul(const real *x, uint64_t k, uint64_t i) { return x[0] * x[1]; }
static real ew_div(const real *x, uint64_t k, uint64_t i) { return x[0] / x[1]; }
static real ew_maximum(const real *x, uint64_t k, uint64_t i) { return x[0] > x[1] ? x[0] : x[1]; }
/* bernoulli_nll(l, x) = softplus(l) - x l */
static real ew_bernoulli_nll(const real *x, uint64_t k, uint64_t i) {
    return (real)(softplus(x[0]) - (double)x[1] * x[0]);
}
static real ew_gaussian_nll(const real *x, uint64_t k, uint64_t i) {
    return (real)gauss_nll(x[0], x[1], x[2]);
}
/* 1 with probability sigmoid(l) */
static real ew_bernoulli(const real *x, uint64_t key, uint64_t i) {
    return aj_rng_u01(key, i) < sigmoid(x[0]) ? 1.0f : 0.0f;
}
/* mu + e^ls z */
static real ew_normal(const real *x, uint64_t key, uint64_t i) {
    return (real)(x[0] + exp(x[1]) * aj_rng_normal(key, i));
}
static real ew_uniform(const real *x, uint64_t key, uint64_t i) { return aj_rng_u01(key, i); }

static const ew_fn ew_ops[AJ_OP_COUNT] = {
    [AJ_OP_NEG] = ew_neg, [AJ_OP_EXP] = ew_exp, [AJ_OP_LOG] = ew_log, [AJ_OP_TANH] = ew_tanh,
    [AJ_OP_SIGMOID] = ew_sigmoid, [AJ_OP_RELU] = ew_relu, [AJ_OP_SOFTPLUS] = ew_softplus,
    [AJ_OP_SQRT] = ew_sqrt, [AJ_OP_SQUARE] = ew_square, [AJ_OP_GELU] = ew_gelu, [AJ_OP_STEP] = ew_step,
    [AJ_OP_SIN] = ew_sin, [AJ_OP_COS] = ew_cos,
    [AJ_OP_ADD] = ew_add, [AJ_OP_SUB] = ew_sub, [AJ_OP_MUL] = ew_mul, [AJ_OP_DIV] = ew_div,
    [AJ_OP_MAXIMUM] = ew_maximum, [AJ_OP_BERNOULLI_NLL] = ew_bernoulli_nll,
    [AJ_OP_GAUSSIAN_NLL] = ew_gaussian_nll, [AJ_OP_BERNOULLI] = ew_bernoulli, [AJ_OP_NORMAL] = ew_normal,
    [AJ_OP_UNIFORM] = ew_uniform,
};

static uint64_t node_key(const ictx *c, const aj_node *n) {
    return aj_rng_node_key(c->seed, n->line, n->col, c->step, c->depth);
}

/* y[i] = f(x0[b0(i)], x1[b1(i)], ...) with each input broadcast to y. */
static int k_elementwise(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    walk w;
    walk_init(&w, out->rank, out->shape);
    for (int j = 0; j < n->nin; j++) walk_add_bcast(&w, in[j].rank, in[j].shape, 1);
    ew_fn f = ew_ops[n->op];
    uint64_t key = node_key(c, n);
    int64_t N = aj_tensor_numel(out);
    for (int64_t i = 0; i < N; i++, walk_next(&w)) {
        real x[3];
        for (int j = 0; j < n->nin; j++) x[j] = fdata(&in[j])[w.off[j]];
        fdata(out)[i] = f(x, key, (uint64_t)i);
    }
    return 0;
}

static int k_constant(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    float v = (real)aj_attr_float(n, "value");
    for (int64_t i = 0, N = aj_tensor_numel(out); i < N; i++) fdata(out)[i] = v;
    return 0;
}

/* ------------------------------------------------------------ reductions */

/* sum, mean: acc = sum x; max: acc = max x; logsumexp: m = max x, then
 * acc = m + log sum exp(x - m). The output (as if keepdims) broadcasts to
 * the input, so one walk over the input finds each element's slot. */
enum { ACC_SUM, ACC_MAX, ACC_SUM_EXP };

static void reduce_loop(const aj_tensor *x, const int64_t *kshape, int mode, const double *shift, double *acc) {
    walk w;
    walk_init(&w, x->rank, x->shape);
    walk_add_bcast(&w, x->rank, kshape, 1);
    for (int64_t i = 0, N = aj_tensor_numel(x); i < N; i++, walk_next(&w)) {
        double v = fdata(x)[i];
        int64_t o = w.off[0];
        if (mode == ACC_SUM)
            acc[o] += v;
        else if (mode == ACC_MAX)
            acc[o] = fmax(acc[o], v);
        else if (!isinf(shift[o]))
            acc[o] += exp(v - shift[o]);
    }
}

static int k_reduce(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *x = &in[0];
    const aj_attr *axes = aj_attr_get(n, "axis");
    int64_t kshape[AJ_MAX_RANK];
    memcpy(kshape, x->shape, sizeof kshape);
    for (int a = 0; a < x->rank; a++)
        if (axes->n == 0) kshape[a] = 1;
    for (int j = 0; j < axes->n; j++) kshape[norm_axis(axes->ints[j], x->rank)] = 1;
    int64_t N = aj_tensor_numel(out), count = N ? aj_tensor_numel(x) / N : 0;
    double *acc = calloc((size_t)N + 1, sizeof *acc), *m = calloc((size_t)N + 1, sizeof *m);
    if (!acc || !m) {
        free(acc), free(m);
        return fail(c, n, "out of memory");
    }
    if (n->op == AJ_OP_MAX || n->op == AJ_OP_LOGSUMEXP) {
        for (int64_t o = 0; o < N; o++) m[o] = -INFINITY;
        reduce_loop(x, kshape, ACC_MAX, NULL, m);
    }
    if (n->op == AJ_OP_LOGSUMEXP) reduce_loop(x, kshape, ACC_SUM_EXP, m, acc);
    if (n->op == AJ_OP_SUM || n->op == AJ_OP_MEAN) reduce_loop(x, kshape, ACC_SUM, NULL, acc);
    for (int64_t o = 0; o < N; o++) {
        double v = acc[o];                              /* sum */
        if (n->op == AJ_OP_MEAN) v = acc[o] / (double)count;   /* NaN over no elements */
        if (n->op == AJ_OP_MAX) v = m[o];
        if (n->op == AJ_OP_LOGSUMEXP) v = isinf(m[o]) ? m[o] : m[o] + log(acc[o]);
        fdata(out)[o] = (real)v;
    }
    free(acc), free(m);
    return 0;
}

/* softmax: y_k = exp(x_k - lse(x)); log_softmax: y_k = x_k - lse(x), along axis. */
static int k_softmax(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t outer, K, inner;
    split(&in[0], norm_axis(aj_attr_int(n, "axis"), in[0].rank), &outer, &K, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const real *x = fdata(&in[0]) + o * K * inner + i;
            real *y = fdata(out) + o * K * inner + i;
            double lse = row_lse(x, K, inner);
            for (int64_t k = 0; k < K; k++)
                y[k * inner] = (real)(n->op == AJ_OP_SOFTMAX ? exp(x[k * inner] - lse) : x[k * inner] - lse);
        }
    return 0;
}

/* ------------------------------------------------------------ matmul */

/* c[i, j] = sum_k a[i, k] b[k, j] per batch (batch dims broadcast); ta, tb
 * read a, b transposed through their strides. */
static int k_matmul(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *a = &in[0], *b = &in[1];
    int ta = (int)aj_attr_int(n, "ta"), tb = (int)aj_attr_int(n, "tb"), r = out->rank;
    int64_t M = out->shape[r - 2], N = out->shape[r - 1], K = a->shape[a->rank - (ta ? 2 : 1)];
    int64_t as_i = ta ? 1 : K, as_k = ta ? M : 1, bs_k = tb ? 1 : N, bs_j = tb ? K : 1;
    walk w;
    walk_init(&w, r - 2, out->shape);
    walk_add_bcast(&w, a->rank - 2, a->shape, M * K);
    walk_add_bcast(&w, b->rank - 2, b->shape, K * N);
    for (int64_t batch = 0, nb = prod(out->shape, 0, r - 2); batch < nb; batch++, walk_next(&w)) {
        const real *A = fdata(a) + w.off[0], *B = fdata(b) + w.off[1];
        real *C = fdata(out) + batch * M * N;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += (double)A[i * as_i + k * as_k] * B[k * bs_k + j * bs_j];
                C[i * N + j] = (real)s;
            }
    }
    return 0;
}

/* ------------------------------------------------------------ masks */

static const char *const mask_words[] = {"lower", "strict_lower", "upper", "strict_upper", "made_in",
                                         "made_hidden", "made_out", "conv_a", "conv_b"};

/* PixelCNN: keep kernel rows above the centre, and the centre row left of the
 * centre; mask B also keeps the centre. */
static int conv_keep(int64_t i, int64_t j, int64_t kh, int64_t kw, int with_centre) {
    return i < kh / 2 || (i == kh / 2 && (j < kw / 2 || (with_centre && j == kw / 2)));
}

/* MADE degree of hidden unit k of a layer of h with n variables, spread
 * evenly over 1..n-1: 1 + floor(k (n-1) / h). (Cycling, k mod (n-1) + 1,
 * left degrees above h unused when h < n-1: a 500-unit MADE on 784 pixels
 * never read pixels past 500.) */
static int64_t made_degree(int64_t k, int64_t n, int64_t h) { return 1 + k * (n - 1) / h; }

static void mask_fill(aj_mask_kind kind, int64_t nvars, const int64_t *shape, real *out) {
    if (kind == AJ_MASK_CONV_A || kind == AJ_MASK_CONV_B) {
        int64_t kh = shape[2], kw = shape[3], planes = shape[0] * shape[1];
        for (int64_t p = 0; p < planes; p++)
            for (int64_t i = 0; i < kh; i++)
                for (int64_t j = 0; j < kw; j++)
                    out[(p * kh + i) * kw + j] = (real)conv_keep(i, j, kh, kw, kind == AJ_MASK_CONV_B);
        return;
    }
    for (int64_t r = 0; r < shape[0]; r++)
        for (int64_t c = 0; c < shape[1]; c++) {
            int v = 0;
            switch (kind) {
            case AJ_MASK_LOWER: v = c <= r; break;
            case AJ_MASK_STRICT_LOWER: v = c < r; break;
            case AJ_MASK_UPPER: v = c >= r; break;
            case AJ_MASK_STRICT_UPPER: v = c > r; break;
            /* input d (degree d+1) feeds unit c when m(c) >= d+1 */
            case AJ_MASK_MADE_IN: v = made_degree(c, nvars, shape[1]) >= r + 1; break;
            /* unit r feeds unit c when m(c) >= m(r) */
            case AJ_MASK_MADE_HIDDEN: v = made_degree(c, nvars, shape[1]) >= made_degree(r, nvars, shape[0]); break;
            /* unit r feeds output d = c when d+1 > m(r) */
            case AJ_MASK_MADE_OUT: v = c + 1 > made_degree(r, nvars, shape[0]); break;
            case AJ_MASK_CONV_A: case AJ_MASK_CONV_B: break;
            }
            out[r * shape[1] + c] = (real)v;
        }
}

#ifndef AJ_INTERP_F64
void aj_mask_fill(aj_mask_kind kind, int64_t nvars, const int64_t *shape, float *out) {
    mask_fill(kind, nvars, shape, out);
}
#endif

static aj_mask_kind mask_kind_of(const char *word) {
    aj_mask_kind k = AJ_MASK_LOWER;
    for (size_t i = 0; i < sizeof mask_words / sizeof mask_words[0]; i++)
        if (!strcmp(mask_words[i], word)) k = (aj_mask_kind)i;
    return k;
}

static int k_mask(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    aj_mask_kind kind = mask_kind_of(aj_attr_word(n, "kind"));
    int64_t nvars = aj_attr_dim_value(c->m, n, "n");
    if (kind >= AJ_MASK_MADE_IN && kind <= AJ_MASK_MADE_OUT && nvars < 2)
        return fail(c, n, "n is %lld (unbound or below 2)", (long long)nvars);
    mask_fill(kind, nvars, out->shape, fdata(out));
    return 0;
}

/* ------------------------------------------------------------ attention */

/* Per batch and head h (E/heads = dh columns of q, k; Ev/heads = dv of v):
 * s_ij = q_i . k_j / sqrt(dh) (causal: only j <= i), p_i = softmax_j(s_ij),
 * out_i = sum_j p_ij v_j, heads side by side along the last axis. */
static int k_attention(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *q = &in[0], *k = &in[1], *v = &in[2];
    int r = q->rank, causal = (int)aj_attr_int(n, "causal");
    int64_t H = aj_attr_int(n, "heads"), Tq = q->shape[r - 2], E = q->shape[r - 1];
    int64_t Tk = k->shape[r - 2], Ev = v->shape[r - 1], dh = E / H, dv = Ev / H;
    double scale = dh ? 1 / sqrt((double)dh) : 1, *p = malloc(sizeof(double) * (size_t)(Tk + 1));
    if (!p) return fail(c, n, "out of memory");
    for (int64_t b = 0, nb = prod(q->shape, 0, r - 2); b < nb; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Tq; i++) {
                const real *qi = fdata(q) + (b * Tq + i) * E + h * dh;
                int64_t nk = causal ? i + 1 : Tk;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < nk; j++) {
                    const real *kj = fdata(k) + (b * Tk + j) * E + h * dh;
                    double s = 0;
                    for (int64_t e = 0; e < dh; e++) s += (double)qi[e] * kj[e];
                    p[j] = s * scale;
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j < nk; j++) sum += p[j] = exp(p[j] - mx);
                for (int64_t e = 0; e < dv; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < nk; j++) o += p[j] * fdata(v)[(b * Tk + j) * Ev + h * dv + e];
                    fdata(out)[(b * Tq + i) * Ev + h * dv + e] = (real)(sum > 0 ? o / sum : 0);
                }
            }
    free(p);
    return 0;
}

/* ------------------------------------------------------------ convolutions */

/* The `mask` attribute of conv2d and its adjoints: whether the kernel is
 * masked, and whether the mask keeps the centre (B). */
static int conv_masked(const aj_node *n, int *centre) {
    const char *mask = aj_attr_word(n, "mask");
    *centre = !strcmp(mask, "B");
    return strcmp(mask, "none") != 0;
}

/* y[b, o, y, x] = sum_{c, i, j} w[o, c, i, j] m[i, j] x[b, c, y + (i - kh/2) d, x + (j - kw/2) d],
 * zero outside x; m is the mask A/B (or all ones), d the dilation. */
static int k_conv2d(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *x = &in[0], *w = &in[1];
    int centre, masked = conv_masked(n, &centre);
    int64_t B = x->shape[0], Ci = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Co = w->shape[0], kh = w->shape[2], kw = w->shape[3], dil = aj_attr_int(n, "dilation");
    for (int64_t b = 0; b < B; b++)
        for (int64_t o = 0; o < Co; o++)
            for (int64_t py = 0; py < H; py++)
                for (int64_t px = 0; px < W; px++) {
                    double s = 0;
                    for (int64_t ci = 0; ci < Ci; ci++)
                        for (int64_t i = 0; i < kh; i++)
                            for (int64_t j = 0; j < kw; j++) {
                                int64_t yy = py + (i - kh / 2) * dil, xx = px + (j - kw / 2) * dil;
                                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                                if (masked && !conv_keep(i, j, kh, kw, centre)) continue;
                                s += (double)fdata(w)[((o * Ci + ci) * kh + i) * kw + j] *
                                     fdata(x)[((b * Ci + ci) * H + yy) * W + xx];
                            }
                    fdata(out)[((b * Co + o) * H + py) * W + px] = (real)s;
                }
    return 0;
}

/* conv1d's left padding: k/2 (same) or k-1 (causal) taps, d apart */
static int64_t conv1d_pad(const aj_node *n, int64_t K) {
    return (strcmp(aj_attr_word(n, "pad"), "causal") ? K / 2 : K - 1) * aj_attr_int(n, "dilation");
}

/* y[b, o, t] = sum_{c, i} w[o, c, i] x[b, c, t + i d - p], zero outside x,
 * d the dilation; p = (k/2) d (same) or (k-1) d (causal: y[t] sees x[t-(k-1)d..t]). */
static int k_conv1d(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *x = &in[0], *w = &in[1];
    int64_t B = x->shape[0], Ci = x->shape[1], T = x->shape[2], Co = w->shape[0], K = w->shape[2];
    int64_t pad = conv1d_pad(n, K), dil = aj_attr_int(n, "dilation");
    for (int64_t b = 0; b < B; b++)
        for (int64_t o = 0; o < Co; o++)
            for (int64_t t = 0; t < T; t++) {
                double s = 0;
                for (int64_t ci = 0; ci < Ci; ci++)
                    for (int64_t i = 0; i < K; i++) {
                        int64_t tt = t + i * dil - pad;
                        if (tt >= 0 && tt < T)
                            s += (double)fdata(w)[(o * Ci + ci) * K + i] * fdata(x)[(b * Ci + ci) * T + tt];
                    }
                fdata(out)[(b * Co + o) * T + t] = (real)s;
            }
    return 0;
}

/* The adjoints, for autodiff. With ph = kh/2, pw = kw/2, m the mask and d
 * the dilation:
 *   dx[b, c, y, x] = sum_{o, i, j} dy[b, o, y - (i - ph) d, x - (j - pw) d] w[o, c, i, j] m[i, j]
 * (dy is 0 outside the image): every output the forward fed from x[b, c, y, x]. */
static int k_conv2d_grad_x(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *dy = &in[0], *w = &in[1];
    int centre, masked = conv_masked(n, &centre);
    int64_t B = dy->shape[0], Co = dy->shape[1], H = dy->shape[2], W = dy->shape[3];
    int64_t Ci = w->shape[1], kh = w->shape[2], kw = w->shape[3], dil = aj_attr_int(n, "dilation");
    for (int64_t b = 0; b < B; b++)
        for (int64_t ci = 0; ci < Ci; ci++)
            for (int64_t py = 0; py < H; py++)
                for (int64_t px = 0; px < W; px++) {
                    double s = 0;
                    for (int64_t o = 0; o < Co; o++)
                        for (int64_t i = 0; i < kh; i++)
                            for (int64_t j = 0; j < kw; j++) {
                                int64_t yy = py - (i - kh / 2) * dil, xx = px - (j - kw / 2) * dil;
                                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                                if (masked && !conv_keep(i, j, kh, kw, centre)) continue;
                                s += (double)fdata(w)[((o * Ci + ci) * kh + i) * kw + j] *
                                     fdata(dy)[((b * Co + o) * H + yy) * W + xx];
                            }
                    fdata(out)[((b * Ci + ci) * H + py) * W + px] = (real)s;
                }
    return 0;
}

/*   dw[o, c, i, j] = m[i, j] sum_{b, y, x} dy[b, o, y, x] x[b, c, y + (i - ph) d, x + (j - pw) d]
 * (x is 0 outside the image; a masked tap gets 0). */
static int k_conv2d_grad_w(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *dy = &in[0], *x = &in[1];
    int centre, masked = conv_masked(n, &centre);
    int64_t B = dy->shape[0], Co = dy->shape[1], H = dy->shape[2], W = dy->shape[3];
    int64_t Ci = x->shape[1], kh = out->shape[2], kw = out->shape[3], dil = aj_attr_int(n, "dilation");
    for (int64_t o = 0; o < Co; o++)
        for (int64_t ci = 0; ci < Ci; ci++)
            for (int64_t i = 0; i < kh; i++)
                for (int64_t j = 0; j < kw; j++) {
                    double s = 0;
                    int keep = !masked || conv_keep(i, j, kh, kw, centre);
                    for (int64_t b = 0; keep && b < B; b++)
                        for (int64_t py = 0; py < H; py++)
                            for (int64_t px = 0; px < W; px++) {
                                int64_t yy = py + (i - kh / 2) * dil, xx = px + (j - kw / 2) * dil;
                                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                                s += (double)fdata(dy)[((b * Co + o) * H + py) * W + px] *
                                     fdata(x)[((b * Ci + ci) * H + yy) * W + xx];
                            }
                    fdata(out)[((o * Ci + ci) * kh + i) * kw + j] = (real)s;
                }
    return 0;
}

/* conv1d's adjoints, p the padding of the forward, d the dilation:
 *   dx[b, c, t] = sum_{o, i} dy[b, o, t - i d + p] w[o, c, i]
 *   dw[o, c, i] = sum_{b, t} dy[b, o, t] x[b, c, t + i d - p]   (0 outside) */
static int k_conv1d_grad_x(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *dy = &in[0], *w = &in[1];
    int64_t B = dy->shape[0], Co = dy->shape[1], T = dy->shape[2], Ci = w->shape[1], K = w->shape[2];
    int64_t pad = conv1d_pad(n, K), dil = aj_attr_int(n, "dilation");
    for (int64_t b = 0; b < B; b++)
        for (int64_t ci = 0; ci < Ci; ci++)
            for (int64_t t = 0; t < T; t++) {
                double s = 0;
                for (int64_t o = 0; o < Co; o++)
                    for (int64_t i = 0; i < K; i++) {
                        int64_t tt = t - i * dil + pad;
                        if (tt >= 0 && tt < T)
                            s += (double)fdata(w)[(o * Ci + ci) * K + i] * fdata(dy)[(b * Co + o) * T + tt];
                    }
                fdata(out)[(b * Ci + ci) * T + t] = (real)s;
            }
    return 0;
}

static int k_conv1d_grad_w(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *dy = &in[0], *x = &in[1];
    int64_t B = dy->shape[0], Co = dy->shape[1], T = dy->shape[2], Ci = x->shape[1], K = out->shape[2];
    int64_t pad = conv1d_pad(n, K), dil = aj_attr_int(n, "dilation");
    for (int64_t o = 0; o < Co; o++)
        for (int64_t ci = 0; ci < Ci; ci++)
            for (int64_t i = 0; i < K; i++) {
                double s = 0;
                for (int64_t b = 0; b < B; b++)
                    for (int64_t t = 0; t < T; t++) {
                        int64_t tt = t + i * dil - pad;
                        if (tt >= 0 && tt < T)
                            s += (double)fdata(dy)[(b * Co + o) * T + t] * fdata(x)[(b * Ci + ci) * T + tt];
                    }
                fdata(out)[(o * Ci + ci) * K + i] = (real)s;
            }
    return 0;
}

/* ------------------------------------------------------------ shape ops */

/* reshape, unsqueeze: the same row-major data. */
static int k_copy(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    copy_elems(&in[0], 0, out, 0, aj_tensor_numel(out));
    return 0;
}

/* y[i] = x[w.off[0]] for each element i of y in walk order. */
static void copy_walk(const aj_tensor *x, aj_tensor *y, walk *w) {
    for (int64_t i = 0, N = aj_tensor_numel(y); i < N; i++, walk_next(w)) copy_elems(x, w->off[0], y, i, 1);
}

/* y[i_0, .., i_r] = x with index i_a on axis perm[a]. */
static int k_transpose(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_attr *perm = aj_attr_get(n, "perm");
    int64_t st[AJ_MAX_RANK];
    for (int a = 0; a < out->rank; a++) {
        int p = norm_axis(perm->ints[a], out->rank);
        st[a] = prod(in[0].shape, p + 1, in[0].rank);
    }
    walk w;
    walk_init(&w, out->rank, out->shape);
    walk_add(&w, st);
    copy_walk(&in[0], out, &w);
    return 0;
}

/* y = x broadcast numpy-style to y's shape. */
static int k_broadcast(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    walk w;
    walk_init(&w, out->rank, out->shape);
    walk_add_bcast(&w, in[0].rank, in[0].shape, 1);
    copy_walk(&in[0], out, &w);
    return 0;
}

/* y[.., k, ..] = x[.., start + k, ..] along axis */
static int k_slice(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t outer, len, inner, start = aj_attr_dim_value(c->m, n, "start");
    int ax = norm_axis(aj_attr_int(n, "axis"), in[0].rank);
    if (start < 0) return fail(c, n, "start is not bound");
    split(&in[0], ax, &outer, &len, &inner);
    copy_along(&in[0], len, start, out, out->shape[ax], 0, out->shape[ax], outer, inner);
    return 0;
}

/* the inputs one after another along axis */
static int k_concat(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int ax = norm_axis(aj_attr_int(n, "axis"), out->rank);
    int64_t outer, len, inner, at = 0;
    split(out, ax, &outer, &len, &inner);
    for (int j = 0; j < n->nin; j++) {
        copy_along(&in[j], in[j].shape[ax], 0, out, len, at, in[j].shape[ax], outer, inner);
        at += in[j].shape[ax];
    }
    return 0;
}

/* y[.., k, ..] = x[.., k - by, ..] along axis, 0 where k - by is outside. */
static int k_shift(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t outer, len, inner, by = aj_attr_int(n, "by");
    split(&in[0], norm_axis(aj_attr_int(n, "axis"), in[0].rank), &outer, &len, &inner);
    if (by >= len || -by >= len) return 0;   /* everything shifted out */
    if (by >= 0)
        copy_along(&in[0], len, 0, out, len, by, len - by, outer, inner);
    else
        copy_along(&in[0], len, -by, out, len, 0, len + by, outer, inner);
    return 0;
}

/* `before` values, x, `after` values along axis */
static int k_pad(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int ax = norm_axis(aj_attr_int(n, "axis"), in[0].rank);
    double value = aj_attr_float(n, "value");
    int64_t outer, len, inner, N = aj_tensor_numel(out);
    for (int64_t i = 0; i < N; i++)
        if (out->dtype == AJ_F32)
            fdata(out)[i] = (real)value;
        else
            idata(out)[i] = to_i32(value);
    split(&in[0], ax, &outer, &len, &inner);
    copy_along(&in[0], len, 0, out, out->shape[ax], aj_attr_int(n, "before"), len, outer, inner);
    return 0;
}

/* skew: y[.., i, j + i] = x[.., i, j] (zeros elsewhere); unskew: the inverse,
 * y[.., i, j] = x[.., i, j + i]. */
static int k_skew(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int r = out->rank, skew = n->op == AJ_OP_SKEW;
    int64_t H = out->shape[r - 2], Wx = in[0].shape[r - 1], Wy = out->shape[r - 1];
    int64_t W = skew ? Wx : Wy;   /* the unskewed width */
    for (int64_t b = 0, nb = prod(out->shape, 0, r - 2); b < nb; b++)
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++) {
                if (skew)
                    copy_elems(&in[0], (b * H + i) * Wx + j, out, (b * H + i) * Wy + j + i, 1);
                else
                    copy_elems(&in[0], (b * H + i) * Wx + j + i, out, (b * H + i) * Wy + j, 1);
            }
    return 0;
}

/* y[s.., e..] = table[idx[s..], e..] */
static int k_gather(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_tensor *table = &in[0], *idx = &in[1];
    int64_t V = table->shape[0], row = prod(table->shape, 1, table->rank);
    for (int64_t s = 0, S = aj_tensor_numel(idx); s < S; s++) {
        int64_t ix = idata(idx)[s];
        if (ix < 0 || ix >= V) return aj_index_error(c->d, n->op, n->line, n->col, ix, s, V);
        copy_elems(table, ix * row, out, s * row, row);
    }
    return 0;
}

#ifndef AJ_INTERP_F64   /* once, in the f32 build */
int aj_index_error(aj_diag *d, aj_op op, int line, int col, int64_t ix, int64_t pos, int64_t n) {
    return aj_error(d, line, col, "%s: index %lld at position %lld is out of range for %s %lld%s",
                    aj_op_info(op)->name, (long long)ix, (long long)pos, op == AJ_OP_GATHER ? "a table of" : "n =",
                    (long long)n, op == AJ_OP_GATHER ? " rows" : "");
}
#endif

/* y[s.., k] = (idx[s..] == k) */
static int k_one_hot(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t K = out->shape[out->rank - 1];
    for (int64_t s = 0, S = aj_tensor_numel(&in[0]); s < S; s++) {
        int64_t ix = idata(&in[0])[s];
        if (ix < 0 || ix >= K) return aj_index_error(c->d, n->op, n->line, n->col, ix, s, K);
        fdata(out)[s * K + ix] = 1;
    }
    return 0;
}

/* i32 -> f32 exact (to 2^24); f32 -> i32 truncates toward zero. */
static int k_cast(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    for (int64_t i = 0, N = aj_tensor_numel(out); i < N; i++) {
        double v = in[0].dtype == AJ_F32 ? fdata(&in[0])[i] : idata(&in[0])[i];
        if (out->dtype == AJ_F32)
            fdata(out)[i] = (real)v;
        else
            idata(out)[i] = to_i32(v);
    }
    return 0;
}

/* ------------------------------------------------------------ norm, losses, sampling */

/* per row of E: y = (x - mean) / sqrt(var + eps) * g + b, var biased */
static int k_layer_norm(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t rows, E, one;
    double eps = aj_attr_float(n, "eps");
    split(&in[0], in[0].rank - 1, &rows, &E, &one);
    for (int64_t r = 0; r < rows; r++) {
        const real *x = fdata(&in[0]) + r * E;
        double mean = 0, var = 0;
        for (int64_t e = 0; e < E; e++) mean += x[e];
        mean /= (double)E;
        for (int64_t e = 0; e < E; e++) var += (x[e] - mean) * (x[e] - mean);
        var /= (double)E;
        for (int64_t e = 0; e < E; e++)
            fdata(out)[r * E + e] = (real)((x[e] - mean) / sqrt(var + eps) * fdata(&in[1])[e] + fdata(&in[2])[e]);
    }
    return 0;
}

/* y = lse(l) - l[target], per row of K logits */
static int k_categorical_nll(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t K = in[0].shape[in[0].rank - 1];
    for (int64_t r = 0, R = aj_tensor_numel(out); r < R; r++) {
        const real *l = fdata(&in[0]) + r * K;
        int64_t t = idata(&in[1])[r];
        if (t < 0 || t >= K)
            return fail(c, n, "target %lld at position %lld is out of range for %lld classes", (long long)t,
                        (long long)r, (long long)K);
        fdata(out)[r] = (real)(row_lse(l, K, 1) - l[t]);
    }
    return 0;
}

/* y = -lse_k(log_softmax(logit_pi)_k - gaussian_nll(x, mu_k, log_sigma_k)) */
static int k_mog_nll(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t K = in[1].shape[in[1].rank - 1];
    real *term = malloc(sizeof(real) * (size_t)(K + 1));
    if (!term) return fail(c, n, "out of memory");
    for (int64_t s = 0, S = aj_tensor_numel(out); s < S; s++) {
        const real *pi = fdata(&in[1]) + s * K, *mu = fdata(&in[2]) + s * K, *ls = fdata(&in[3]) + s * K;
        double lse_pi = row_lse(pi, K, 1);
        for (int64_t k = 0; k < K; k++)
            term[k] = (real)(pi[k] - lse_pi - gauss_nll(fdata(&in[0])[s], mu[k], ls[k]));
        fdata(out)[s] = (real)-row_lse(term, K, 1);
    }
    free(term);
    return 0;
}

/* y[r] = the first k with x[r, k] greater than every x[r, j], j < k, and
 * not less than any after it: ties go to the lowest index, and a NaN is
 * never greater, so it is chosen only at k = 0 (as the compiled engines) */
static int k_argmax(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t K = in[0].shape[in[0].rank - 1], R = aj_tensor_numel(out);
    if (K == 0 && R > 0) return fail(c, n, "the last axis is empty: no entry is the largest");
    for (int64_t r = 0; r < R; r++) {
        const real *x = fdata(&in[0]) + r * K;
        int64_t best = 0;
        for (int64_t k = 1; k < K; k++)
            if (x[k] > x[best]) best = k;
        idata(out)[r] = (int32_t)best;
    }
    return 0;
}

/* y[r] = k drawn from softmax(l / temperature) over row r (counter r) */
static int k_categorical(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t K = in[0].shape[in[0].rank - 1], R = aj_tensor_numel(out);
    uint64_t key = node_key(c, n);
    double inv_temp = 1 / aj_attr_float(n, "temperature");
    if (K == 0 && R > 0) return fail(c, n, "cannot sample from 0 categories");
    for (int64_t r = 0; r < R; r++)
        idata(out)[r] = (int32_t)pick(fdata(&in[0]) + r * K, K, inv_temp, aj_rng_u01(key, (uint64_t)r));
    return 0;
}

/* component k from softmax(logit_pi) (counter 3s), then mu_k + e^{ls_k} z
 * (counters 3s+1, 3s+2) */
static int k_mog(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    int64_t K = in[0].shape[in[0].rank - 1], S = aj_tensor_numel(out);
    uint64_t key = node_key(c, n);
    if (K == 0 && S > 0) return fail(c, n, "cannot sample from 0 components");
    for (int64_t s = 0; s < S; s++) {
        uint64_t ctr = 3 * (uint64_t)s;
        int64_t k = s * K + pick(fdata(&in[0]) + s * K, K, 1, aj_rng_u01(key, ctr));
        float z = aj_rng_box_muller(aj_rng_u01(key, ctr + 1), aj_rng_u01(key, ctr + 2));
        fdata(out)[s] = (real)(fdata(&in[1])[k] + exp(fdata(&in[2])[k]) * z);
    }
    return 0;
}

/* ------------------------------------------------------------ extern ops */

/* A call of a library function (runtime/extern_op.c): every input and
 * result has one shape, so the function sees flat arrays of one length. */
static int k_extern(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const float *x[AJ_MAX_EXTERN_IN + 1];
    float *y[AJ_MAX_EXTERN_IN];
    int64_t N = aj_tensor_numel(&out[0]);
    if (sizeof(real) == sizeof(float)) {
        for (int i = 0; i < n->nin; i++) x[i] = (const float *)fdata(&in[i]);
        for (int k = 0; k < n->nout; k++) y[k] = (float *)fdata(&out[k]);
        return aj_extern_call(c->m, n, N, x, y, c->d);
    }
    /* double values: the library works in f32, on rounded copies */
    int nbuf = n->nin + n->nout, rc = -1;
    float *buf = malloc(sizeof(float) * (size_t)(N * nbuf + 1));
    if (!buf) return fail(c, n, "out of memory");
    for (int i = 0; i < n->nin; i++) {
        float *xi = buf + i * N;
        for (int64_t e = 0; e < N; e++) xi[e] = (float)fdata(&in[i])[e];
        x[i] = xi;
    }
    for (int k = 0; k < n->nout; k++) y[k] = buf + (n->nin + k) * N;
    if (!aj_extern_call(c->m, n, N, x, y, c->d)) {
        for (int k = 0; k < n->nout; k++)
            for (int64_t e = 0; e < N; e++) fdata(&out[k])[e] = y[k][e];
        rc = 0;
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------ graphs */

static int k_recurrence(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out);

/* The kernel of every op that is not elementwise (k_elementwise with its
 * ew_ops function) or a reduction (k_reduce): those come from ops.def's flags. */
static const interp_fn kernels[AJ_OP_COUNT] = {
    [AJ_OP_CONSTANT] = k_constant,
    [AJ_OP_MATMUL] = k_matmul,
    [AJ_OP_SOFTMAX] = k_softmax, [AJ_OP_LOG_SOFTMAX] = k_softmax,
    [AJ_OP_MASK] = k_mask,
    [AJ_OP_RECURRENCE] = k_recurrence,
    [AJ_OP_ATTENTION] = k_attention,
    [AJ_OP_CONV2D] = k_conv2d, [AJ_OP_CONV1D] = k_conv1d,
    [AJ_OP_CONV2D_GRAD_X] = k_conv2d_grad_x, [AJ_OP_CONV2D_GRAD_W] = k_conv2d_grad_w,
    [AJ_OP_CONV1D_GRAD_X] = k_conv1d_grad_x, [AJ_OP_CONV1D_GRAD_W] = k_conv1d_grad_w,
    [AJ_OP_RESHAPE] = k_copy, [AJ_OP_TRANSPOSE] = k_transpose, [AJ_OP_SLICE] = k_slice,
    [AJ_OP_CONCAT] = k_concat, [AJ_OP_BROADCAST] = k_broadcast, [AJ_OP_UNSQUEEZE] = k_copy,
    [AJ_OP_GATHER] = k_gather, [AJ_OP_ONE_HOT] = k_one_hot, [AJ_OP_SHIFT] = k_shift, [AJ_OP_PAD] = k_pad,
    [AJ_OP_SKEW] = k_skew, [AJ_OP_UNSKEW] = k_skew, [AJ_OP_CAST] = k_cast, [AJ_OP_ARGMAX] = k_argmax,
    [AJ_OP_LAYER_NORM] = k_layer_norm,
    [AJ_OP_CATEGORICAL_NLL] = k_categorical_nll, [AJ_OP_MOG_NLL] = k_mog_nll,
    [AJ_OP_CATEGORICAL] = k_categorical, [AJ_OP_MOG] = k_mog,
    [AJ_OP_EXTERN] = k_extern,
};

static interp_fn kernel_of(aj_op op) {
    int fl = aj_op_info(op)->flags;
    return fl & AJ_EW ? k_elementwise : fl & AJ_REDUCE ? k_reduce : kernels[op];
}

/* Every op has a kernel, and every elementwise op its scalar function. */
static int check_tables(aj_diag *d) {
    for (int op = 0; op < AJ_OP_COUNT; op++)
        if (!kernel_of((aj_op)op) || (kernel_of((aj_op)op) == k_elementwise && !ew_ops[op]))
            return aj_error(d, 0, 0, "internal error: op %s has no interpreter kernel",
                            aj_op_info((aj_op)op)->name);
    return 0;
}

static int type_is_const(const aj_type *t) {
    for (int i = 0; i < t->rank; i++)
        if (!aj_dim_is_const(t->dim[i])) return 0;
    return 1;
}

static void free_all(aj_tensor *t, int n) {
    for (int i = 0; i < n; i++) aj_tensor_free(&t[i]);
}

/* Allocate node n's results from their types and run its kernel. */
static int run_node(ictx *c, const aj_graph *g, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    for (int k = 0; k < n->nout; k++) {
        const aj_value *v = &g->val[n->out[k]];
        out[k] = aj_tensor_of_type_sized(&v->type, sizeof(real));
        if (!out[k].data) {
            char buf[192];
            aj_type_str(c->m, &v->type, buf, sizeof buf);
            free_all(out, k);
            if (!type_is_const(&v->type))
                return fail(c, n, "result '%s' is %s: bind every dim before running", v->name, buf);
            return fail(c, n, "out of memory for result '%s' %s", v->name, buf);
        }
    }
    if (kernel_of(n->op)(c, n, in, out)) {
        free_all(out, n->nout);
        return -1;
    }
    return 0;
}

static int tensor_copy(const aj_tensor *src, aj_tensor *dst) {
    *dst = aj_tensor_new_sized(src->dtype, src->rank, src->shape, sizeof(real));
    if (!dst->data) return -1;
    copy_elems(src, 0, dst, 0, aj_tensor_numel(src));
    return 0;
}

/* last[v] = the index of the last node reading value v (the producer when
 * nothing reads it; INT_MAX for the graph's results, which outlive it). */
static int *plan_last_use(const aj_graph *g) {
    int *last = malloc(sizeof(int) * (size_t)(g->nval + 1));
    if (!last) return NULL;
    for (int v = 0; v < g->nval; v++) last[v] = -1;
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        for (int k = 0; k < n->nout; k++) last[n->out[k]] = i;
        for (int j = 0; j < n->nin; j++) last[n->in[j]] = i;
    }
    for (int r = 0; r < g->nresult; r++) last[g->result[r]] = INT_MAX;
    return last;
}

/* Run graph g on its leaves (borrowed, in g->leaf order) and the module
 * parameters; results[] receive tensors of their own. */
static int run_graph(ictx *c, const aj_graph *g, const int *last, const aj_tensor *leaves, aj_tensor *results) {
    int most = 1;   /* in and out have room for any node's inputs and results */
    for (int i = 0; i < g->nnode; i++) {
        if (g->node[i].nin > most) most = g->node[i].nin;
        if (g->node[i].nout > most) most = g->node[i].nout;
    }
    aj_tensor *val = calloc((size_t)g->nval + 1, sizeof *val), *in = calloc(2 * (size_t)most, sizeof *in), *out = in ? in + most : NULL;
    char *owned = calloc((size_t)g->nval + 1, 1);
    int rc = -1, r = 0;
    if (!val || !in || !owned) {
        aj_error(c->d, g->line, g->col, "out of memory");
        goto done;
    }
    for (int k = 0; k < g->nleaf; k++) val[g->leaf[k]] = leaves[k];
    for (int v = 0; v < g->nval; v++)
        if (g->val[v].kind == AJ_VAL_PARAM) val[v] = c->params[g->val[v].idx];
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        for (int j = 0; j < n->nin; j++) in[j] = val[n->in[j]];
        if (run_node(c, g, n, in, out)) goto done;
        for (int k = 0; k < n->nout; k++) val[n->out[k]] = out[k], owned[n->out[k]] = 1;
        for (int j = 0; j < n->nin; j++)
            if (owned[n->in[j]] && last[n->in[j]] == i) aj_tensor_free(&val[n->in[j]]), owned[n->in[j]] = 0;
        for (int k = 0; k < n->nout; k++)
            if (last[n->out[k]] == i) aj_tensor_free(&val[n->out[k]]), owned[n->out[k]] = 0;
    }
    /* a result moves out of the value it names the first time; a borrowed
     * leaf, or a value named twice, is copied */
    for (r = 0; r < g->nresult; r++) {
        int v = g->result[r];
        if (owned[v]) {
            results[r] = val[v];
            owned[v] = 0;
            continue;
        }
        int first = 0;
        while (g->result[first] != v) first++;
        if (tensor_copy(first < r ? &results[first] : &val[v], &results[r])) {
            aj_error(c->d, g->line, g->col, "out of memory copying result '%s'", g->val[v].name);
            free_all(results, r);
            goto done;
        }
    }
    rc = 0;
done:
    for (int v = 0; val && owned && v < g->nval; v++)
        if (owned[v]) aj_tensor_free(&val[v]);
    free(val), free(in), free(owned);
    return rc;
}

/* A scan: step t (0..steps-1, or steps-1..0 when reversed) runs the body on
 * the carries, slice t of each sequence and the uses; the body's results are
 * the next carries and the values written at index t of each stacked output. */
static int k_recurrence(ictx *c, const aj_node *n, const aj_tensor *in, aj_tensor *out) {
    const aj_recur *rec = n->rec;
    const aj_graph *body = rec->body;
    int nc = rec->ncarry, ns = rec->nslice, nleaf = nc + ns + rec->nuse, own = 0, rc = -1;
    int64_t steps = aj_attr_dim_value(c->m, n, "steps");
    int reverse = aj_attr_int(n, "reverse") != 0;
    if (steps < 0) return fail(c, n, "steps is not bound");
    if (c->depth == MAX_DEPTH) return fail(c, n, "recurrences nested deeper than %d", MAX_DEPTH);
    /* leaf: the body's carries, slices, uses; res: its results */
    aj_tensor *leaf = calloc((size_t)(nleaf + body->nresult) + 1, sizeof *leaf), *res = leaf + nleaf;
    int *last = plan_last_use(body);
    if (!leaf || !last) {
        fail(c, n, "out of memory");
        goto done;
    }
    memcpy(leaf, in, sizeof(aj_tensor) * (size_t)nc);                        /* carries start at their inputs */
    memcpy(leaf + nc + ns, in + nc + ns, sizeof(aj_tensor) * (size_t)rec->nuse); /* uses are borrowed */
    for (int s = 0; s < ns; s++) {
        leaf[nc + s] = aj_tensor_of_type_sized(&body->val[body->leaf[nc + s]].type, sizeof(real));
        if (!leaf[nc + s].data) {
            fail(c, n, "out of memory");
            goto done;
        }
    }
    for (int64_t step = 0; step < steps; step++) {
        int64_t t = reverse ? steps - 1 - step : step, outer, len, inner;
        for (int s = 0; s < ns; s++) {
            const aj_tensor *seq = &in[nc + s];
            split(seq, norm_axis(rec->slice_axis[s], seq->rank), &outer, &len, &inner);
            copy_along(seq, len, t, &leaf[nc + s], 1, 0, 1, outer, inner);
        }
        c->step[c->depth++] = t;
        int err = run_graph(c, body, last, leaf, res);
        c->depth--;
        if (err) goto done;
        if (own) free_all(leaf, nc);
        memcpy(leaf, res, sizeof(aj_tensor) * (size_t)nc);
        own = 1;
        for (int k = 0; k < rec->nstack; k++) {
            aj_tensor *y = &out[nc + k];
            split(y, norm_axis(rec->stack_axis[k], y->rank), &outer, &len, &inner);
            copy_along(&res[nc + k], 1, 0, y, len, t, 1, outer, inner);
            aj_tensor_free(&res[nc + k]);
        }
    }
    for (int k = 0; k < nc; k++) copy_elems(&leaf[k], 0, &out[k], 0, aj_tensor_numel(&out[k]));
    rc = 0;
done:
    if (leaf) {
        if (own) free_all(leaf, nc);
        free_all(leaf + nc, ns);
    }
    free(leaf), free(last);
    return rc;
}

/* A tensor given for value v must have v's concrete type. */
static int check_arg(ictx *c, const aj_value *v, const aj_tensor *t, const char *what) {
    char want[192], got[192];
    aj_type_str(c->m, &v->type, want, sizeof want);
    if (!type_is_const(&v->type))
        return aj_error(c->d, v->line, v->col, "%s '%s' is %s: bind every dim before running", what, v->name,
                        want);
    int ok = t->data && t->dtype == v->type.dtype && t->rank == v->type.rank;
    for (int i = 0; ok && i < t->rank; i++) ok = aj_dim_eq(v->type.dim[i], aj_dim_const(t->shape[i]));
    if (ok) return 0;
    aj_type tt = {t->dtype, t->rank < 0 ? 0 : t->rank > AJ_MAX_RANK ? AJ_MAX_RANK : t->rank, {{0}}};
    for (int i = 0; i < tt.rank; i++) tt.dim[i] = aj_dim_const(t->shape[i]);
    aj_type_str(c->m, &tt, got, sizeof got);
    return aj_error(c->d, v->line, v->col, "%s '%s' should be %s, got %s", what, v->name, want,
                    t->data ? got : "no data");
}

int aj_interp_run(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                  aj_tensor *results, uint64_t seed, aj_diag *d) {
    ictx c = {m, params, seed, {0}, 0, d};
    int rc = -1, *last = NULL;
    for (int r = 0; r < fn->nresult; r++) results[r] = (aj_tensor){AJ_F32, 0, {0}, NULL};
    if (check_tables(d)) goto done;
    for (int k = 0; k < fn->nleaf; k++)
        if (check_arg(&c, &fn->val[fn->leaf[k]], &inputs[k], "argument")) goto done;
    for (int v = 0; v < fn->nval; v++)
        if (fn->val[v].kind == AJ_VAL_PARAM && check_arg(&c, &fn->val[v], &params[fn->val[v].idx], "parameter"))
            goto done;
    last = plan_last_use(fn);
    if (!last) {
        aj_error(d, fn->line, fn->col, "out of memory");
        goto done;
    }
    rc = run_graph(&c, fn, last, inputs, results);
done:
    free(last);
    if (rc) aj_diag_source(d, m->path, m->src, m->srclen);
    return rc;
}

#ifndef AJ_INTERP_F64
int aj_interp_node(const aj_module *m, const aj_graph *g, int node, const aj_tensor *in, aj_tensor *out,
                   uint64_t seed, aj_diag *d) {
    return aj_interp_node_steps(m, g, node, in, out, seed, NULL, 0, d);
}

int aj_interp_node_steps(const aj_module *m, const aj_graph *g, int node, const aj_tensor *in, aj_tensor *out,
                         uint64_t seed, const int64_t *steps, int depth, aj_diag *d) {
    if (depth < 0 || depth > MAX_DEPTH) return aj_error(d, 0, 0, "interp: %d nested recurrences (at most %d)", depth, MAX_DEPTH);
    ictx c = {m, NULL, seed, {0}, depth, d};
    for (int i = 0; i < depth; i++) c.step[i] = steps[i];
    return check_tables(d) ? -1 : run_node(&c, g, &g->node[node], in, out);
}
#endif
