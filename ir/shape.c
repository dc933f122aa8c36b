/* Shape rules: check an op's input types and give its result types.
 *
 * Dims are symbolic (aj_dim). A check that needs a number (an odd kernel, a
 * slice inside its axis, heads dividing E) is made when the dims involved are
 * constants; with free dims it waits for the binding, under which the
 * verifier checks the graph again before it runs. Axes may be negative
 * (-1 = last). Errors name the op, blame the argument at fault (its column)
 * and print the types involved. */
#include "ir/shape.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define TS 192   /* room for one printed type */

static const char *tstr(const aj_module *m, const aj_type *t, char *buf) {
    aj_type_str(m, t, buf, TS);
    return buf;
}

static const char *dstr(const aj_module *m, aj_dim x, char *buf) {
    aj_dim_str(m, x, buf, TS);
    return buf;
}

/* The value of a constant dim (no terms, the value in off). */
static int is_const(aj_dim x, int64_t *v) {
    if (!aj_dim_is_const(x)) return 0;
    *v = x.off;
    return 1;
}

static int is_one(aj_dim x) { return aj_dim_eq(x, aj_dim_const(1)); }

static const char *dtype_name(aj_dtype t) { return t == AJ_F32 ? "f32" : "i32"; }

/* Report an error at argument i (its column), or at the op itself (i = -1). */
__attribute__((format(printf, 5, 6)))
static int fail(const aj_node *n, int i, int *bad_input, aj_diag *d, const char *fmt, ...) {
    char msg[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    *bad_input = i;
    int col = i >= 0 && n->in_col && n->in_col[i] ? n->in_col[i] : n->col;
    return aj_error(d, n->line, col, "%s: %s", aj_op_info(n->op)->name, msg);
}

static int want_dtype(const aj_module *m, const aj_node *n, const aj_type *in, int i, aj_dtype dt,
                      int *bad, aj_diag *d) {
    char s[TS];
    if (in[i].dtype == dt) return 0;
    return fail(n, i, bad, d, "argument %d must be %s, got %s", i + 1, dtype_name(dt),
                tstr(m, &in[i], s));
}

static int want_f32_all(const aj_module *m, const aj_node *n, const aj_type *in, int *bad, aj_diag *d) {
    for (int i = 0; i < n->nin; i++)
        if (want_dtype(m, n, in, i, AJ_F32, bad, d)) return -1;
    return 0;
}

/* lo <= rank <= hi */
static int want_rank(const aj_module *m, const aj_node *n, const aj_type *in, int i, int lo, int hi,
                     int *bad, aj_diag *d) {
    char s[TS];
    if (in[i].rank >= lo && in[i].rank <= hi) return 0;
    if (lo == hi)
        return fail(n, i, bad, d, "argument %d must have rank %d, got %s", i + 1, lo, tstr(m, &in[i], s));
    if (hi == AJ_MAX_RANK)
        return fail(n, i, bad, d, "argument %d must have rank >= %d, got %s", i + 1, lo, tstr(m, &in[i], s));
    return fail(n, i, bad, d, "argument %d must have rank %d..%d, got %s", i + 1, lo, hi,
                tstr(m, &in[i], s));
}

/* An axis of a rank-`rank` tensor t: -rank <= axis < rank, negative from the end. */
static int get_axis(const aj_module *m, const aj_node *n, const aj_type *t, int64_t axis, int rank,
                    int *out, int *bad, aj_diag *d) {
    char s[TS];
    if (axis < -rank || axis >= rank)
        return fail(n, -1, bad, d, "axis %lld is out of range for %s (valid: %d..%d)", (long long)axis,
                    tstr(m, t, s), -rank, rank - 1);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return 0;
}

/* An int attribute that is a 0/1 switch. */
static int want_flag(const aj_node *n, const char *name, int *out, int *bad, aj_diag *d) {
    int64_t v = aj_attr_int(n, name);
    if (v != 0 && v != 1) return fail(n, -1, bad, d, "%s must be 0 or 1, got %lld", name, (long long)v);
    *out = (int)v;
    return 0;
}

/* A shape attribute as a type (dtype f32); constant dims must be >= 0. */
static int shape_attr(const aj_node *n, const char *name, aj_type *t, int *bad, aj_diag *d) {
    const aj_attr *a = aj_attr_get(n, name);
    t->dtype = AJ_F32;
    t->rank = a->n;
    for (int i = 0; i < a->n; i++) {
        int64_t v;
        t->dim[i] = a->dims[i];
        if (is_const(a->dims[i], &v) && v < 0)
            return fail(n, -1, bad, d, "%s: dim %d is negative (%lld)", name, i, (long long)v);
    }
    return 0;
}

/* Numpy broadcasting, right-aligned: equal dims stay, a constant 1 stretches
 * to the other. `out` may alias `a`. On failure *bad_axis is the axis counted
 * from the end (-1 = last). */
static int bcast(const aj_dim *a, int ra, const aj_dim *b, int rb, aj_dim *out, int *rout, int *bad_axis) {
    int r = ra > rb ? ra : rb;
    for (int i = 1; i <= r; i++) {
        aj_dim x = i <= ra ? a[ra - i] : aj_dim_const(1);
        aj_dim y = i <= rb ? b[rb - i] : aj_dim_const(1);
        if (aj_dim_eq(x, y) || is_one(y))
            out[r - i] = x;
        else if (is_one(x))
            out[r - i] = y;
        else {
            *bad_axis = -i;
            return -1;
        }
    }
    *rout = r;
    return 0;
}

/* Unary elementwise ops, softmax/log_softmax and shift: the type passes
 * through. Only shift also moves i32 data; an `axis` must exist. */
AJ_SHAPE_RULE(shape_same) {
    int ax = 0;
    if (n->op != AJ_OP_SHIFT && want_dtype(m, n, in, 0, AJ_F32, bad_input, d)) return -1;
    if ((n->op == AJ_OP_SOFTMAX || n->op == AJ_OP_LOG_SOFTMAX || n->op == AJ_OP_SHIFT) &&
        get_axis(m, n, &in[0], aj_attr_int(n, "axis"), in[0].rank, &ax, bad_input, d))
        return -1;
    out[0] = in[0];
    return 0;
}

/* Elementwise ops of 2 or 3 f32 arguments: the numpy broadcast of all. */
AJ_SHAPE_RULE(shape_broadcast) {
    if (want_f32_all(m, n, in, bad_input, d)) return -1;
    aj_type acc = in[0];
    for (int i = 1; i < n->nin; i++) {
        aj_type prev = acc;
        int ax = 0;
        if (bcast(prev.dim, prev.rank, in[i].dim, in[i].rank, acc.dim, &acc.rank, &ax)) {
            char s0[TS], s1[TS], s2[TS], s3[TS];
            return fail(n, i, bad_input, d, "cannot broadcast %s with %s (axis %d: %s vs %s)",
                        tstr(m, &prev, s0), tstr(m, &in[i], s1), ax,
                        dstr(m, prev.dim[prev.rank + ax], s2), dstr(m, in[i].dim[in[i].rank + ax], s3));
        }
    }
    out[0] = acc;
    return 0;
}

/* constant and uniform: f32 of the `shape` attribute. */
AJ_SHAPE_RULE(shape_constant) {
    return shape_attr(n, "shape", &out[0], bad_input, d);
}

/* sum/mean/max/logsumexp over `axis` (all when empty), keepdims 0/1. */
AJ_SHAPE_RULE(shape_reduce) {
    const aj_attr *axes = aj_attr_get(n, "axis");
    int keep = 0, red[AJ_MAX_RANK] = {0};
    if (want_dtype(m, n, in, 0, AJ_F32, bad_input, d) || want_flag(n, "keepdims", &keep, bad_input, d))
        return -1;
    for (int i = 0; i < in[0].rank; i++) red[i] = axes->n == 0;
    for (int i = 0; i < axes->n; i++) {
        int ax = 0;
        if (get_axis(m, n, &in[0], axes->ints[i], in[0].rank, &ax, bad_input, d)) return -1;
        if (red[ax]) return fail(n, -1, bad_input, d, "axis %d is listed twice", ax);
        red[ax] = 1;
    }
    out[0].dtype = AJ_F32;
    out[0].rank = 0;
    for (int i = 0; i < in[0].rank; i++) {
        if (!red[i])
            out[0].dim[out[0].rank++] = in[0].dim[i];
        else if (keep)
            out[0].dim[out[0].rank++] = aj_dim_const(1);
    }
    return 0;
}

/* a [..., M, K] (ta: [..., K, M]) times b [..., K, N] (tb: [..., N, K]),
 * batch dims broadcast: [..., M, N]. */
AJ_SHAPE_RULE(shape_matmul) {
    int ta = 0, tb = 0, r = 0, ax = 0;
    char s0[TS], s1[TS], s2[TS], s3[TS];
    if (want_f32_all(m, n, in, bad_input, d) || want_rank(m, n, in, 0, 2, AJ_MAX_RANK, bad_input, d) ||
        want_rank(m, n, in, 1, 2, AJ_MAX_RANK, bad_input, d) || want_flag(n, "ta", &ta, bad_input, d) ||
        want_flag(n, "tb", &tb, bad_input, d))
        return -1;
    const aj_type *a = &in[0], *b = &in[1];
    aj_dim M = a->dim[a->rank - 2 + ta], K = a->dim[a->rank - 1 - ta];
    aj_dim Kb = b->dim[b->rank - 2 + tb], N = b->dim[b->rank - 1 - tb];
    if (!aj_dim_eq(K, Kb))
        return fail(n, 1, bad_input, d, "inner dimensions differ: a is %s%s, b is %s%s (%s vs %s)",
                    tstr(m, a, s0), ta ? " (ta=1)" : "", tstr(m, b, s1), tb ? " (tb=1)" : "",
                    dstr(m, K, s2), dstr(m, Kb, s3));
    if (bcast(a->dim, a->rank - 2, b->dim, b->rank - 2, out[0].dim, &r, &ax))
        return fail(n, 1, bad_input, d, "batch dimensions do not broadcast: a is %s, b is %s",
                    tstr(m, a, s0), tstr(m, b, s1));
    out[0].dtype = AJ_F32;
    out[0].dim[r] = M;
    out[0].dim[r + 1] = N;
    out[0].rank = r + 2;
    return 0;
}

/* mask: [R, C] for the triangular and MADE kinds, [Co, Ci, kh, kw] with odd
 * kh, kw for conv_a/conv_b. MADE kinds need n >= 2 variables; made_in is
 * [n, H] and made_out [H, n]. */
AJ_SHAPE_RULE(shape_mask) {
    const char *kind = aj_attr_word(n, "kind");
    int conv = !strncmp(kind, "conv", 4);
    char s0[TS], s1[TS];
    aj_type *t = &out[0];
    if (shape_attr(n, "shape", t, bad_input, d)) return -1;
    if (t->rank != (conv ? 4 : 2))
        return fail(n, -1, bad_input, d, "kind %s needs a rank-%d shape, got %s", kind, conv ? 4 : 2,
                    tstr(m, t, s0));
    for (int i = 2; conv && i < 4; i++) {
        int64_t k;
        if (is_const(t->dim[i], &k) && k % 2 == 0)
            return fail(n, -1, bad_input, d, "kind %s needs odd kernel sizes, got %s", kind, tstr(m, t, s0));
    }
    if (!strncmp(kind, "made", 4)) {
        aj_dim nv = aj_attr_dim(n, "n");
        int64_t v;
        if (is_const(nv, &v) && v < 2)
            return fail(n, -1, bad_input, d, "kind %s needs n >= 2 (the number of variables), got %lld",
                        kind, (long long)v);
        if (!strcmp(kind, "made_in") && !aj_dim_eq(t->dim[0], nv))
            return fail(n, -1, bad_input, d, "made_in shape must be [n, H] with n = %s, got %s",
                        dstr(m, nv, s1), tstr(m, t, s0));
        if (!strcmp(kind, "made_out") && !aj_dim_eq(t->dim[1], nv))
            return fail(n, -1, bad_input, d, "made_out shape must be [H, n] with n = %s, got %s",
                        dstr(m, nv, s1), tstr(m, t, s0));
    }
    return 0;
}

/* q [..., Tq, E], k [..., Tk, E], v [..., Tk, Ev] with equal batch dims;
 * heads divides E and Ev; causal needs Tq == Tk. Result [..., Tq, Ev]. */
AJ_SHAPE_RULE(shape_attention) {
    static const char *const name[3] = {"q", "k", "v"};
    char s0[TS], s1[TS];
    int causal = 0;
    if (want_f32_all(m, n, in, bad_input, d) || want_flag(n, "causal", &causal, bad_input, d)) return -1;
    for (int i = 0; i < 3; i++)
        if (want_rank(m, n, in, i, 2, AJ_MAX_RANK, bad_input, d)) return -1;
    int r = in[0].rank;
    for (int i = 1; i < 3; i++) {
        if (in[i].rank != r)
            return fail(n, i, bad_input, d, "q and %s must have the same rank: q is %s, %s is %s", name[i],
                        tstr(m, &in[0], s0), name[i], tstr(m, &in[i], s1));
        for (int j = 0; j < r - 2; j++)
            if (!aj_dim_eq(in[i].dim[j], in[0].dim[j]))
                return fail(n, i, bad_input, d, "batch dimensions differ: q is %s, %s is %s",
                            tstr(m, &in[0], s0), name[i], tstr(m, &in[i], s1));
    }
    aj_dim E = in[0].dim[r - 1], Tq = in[0].dim[r - 2], Tk = in[1].dim[r - 2], Ev = in[2].dim[r - 1];
    if (!aj_dim_eq(in[1].dim[r - 1], E))
        return fail(n, 1, bad_input, d, "q and k must have the same last dim: q is %s, k is %s",
                    tstr(m, &in[0], s0), tstr(m, &in[1], s1));
    if (!aj_dim_eq(in[2].dim[r - 2], Tk))
        return fail(n, 2, bad_input, d, "k and v must have the same length: k is %s, v is %s",
                    tstr(m, &in[1], s0), tstr(m, &in[2], s1));
    int64_t heads = aj_attr_int(n, "heads"), e;
    if (heads < 1) return fail(n, -1, bad_input, d, "heads must be >= 1, got %lld", (long long)heads);
    for (int i = 0; i < 3; i += 2)
        if (is_const(in[i].dim[r - 1], &e) && e % heads)
            return fail(n, i, bad_input, d, "heads=%lld does not divide the last dim of %s %s",
                        (long long)heads, name[i], tstr(m, &in[i], s0));
    if (causal && !aj_dim_eq(Tq, Tk))
        return fail(n, 1, bad_input, d, "causal attention needs as many queries as keys: q is %s, k is %s",
                    tstr(m, &in[0], s0), tstr(m, &in[1], s1));
    out[0] = in[0];
    out[0].dim[r - 1] = Ev;
    return 0;
}

/* Kernel sizes of w from axis `from` on must be odd (symmetric padding). */
static int odd_kernel(const aj_module *m, const aj_node *n, const aj_type *w, int from, int *bad,
                      aj_diag *d) {
    char s[TS];
    for (int i = from; i < w->rank; i++) {
        int64_t k;
        if (is_const(w->dim[i], &k) && (k % 2 == 0 || k < 1))
            return fail(n, 1, bad, d, "kernel sizes must be odd, got w %s", tstr(m, w, s));
    }
    return 0;
}

/* every conv op and adjoint: taps at least 1 apart */
static int want_dilation(const aj_node *n, int *bad, aj_diag *d) {
    int64_t dil = aj_attr_int(n, "dilation");
    return dil < 1 ? fail(n, -1, bad, d, "dilation must be >= 1, got %lld", (long long)dil) : 0;
}

/* x [B, Ci, ...] and w [Co, Ci, ...] agree on Ci; result [B, Co, ...]. */
static int conv_channels(const aj_module *m, const aj_node *n, const aj_type *in, aj_type *out, int *bad,
                         aj_diag *d) {
    char s0[TS], s1[TS];
    if (want_dilation(n, bad, d)) return -1;
    if (!aj_dim_eq(in[0].dim[1], in[1].dim[1]))
        return fail(n, 1, bad, d, "input channels differ: x is %s, w is %s", tstr(m, &in[0], s0),
                    tstr(m, &in[1], s1));
    out[0] = in[0];
    out[0].dim[1] = in[1].dim[0];
    return 0;
}

/* conv2d: x [B, Ci, H, W], w [Co, Ci, kh, kw] (odd) -> [B, Co, H, W]. */
AJ_SHAPE_RULE(shape_conv2d) {
    if (want_f32_all(m, n, in, bad_input, d) || want_rank(m, n, in, 0, 4, 4, bad_input, d) ||
        want_rank(m, n, in, 1, 4, 4, bad_input, d) || odd_kernel(m, n, &in[1], 2, bad_input, d))
        return -1;
    return conv_channels(m, n, in, out, bad_input, d);
}

/* conv1d: x [B, Ci, T], w [Co, Ci, k] -> [B, Co, T]; pad=same needs odd k. */
AJ_SHAPE_RULE(shape_conv1d) {
    if (want_f32_all(m, n, in, bad_input, d) || want_rank(m, n, in, 0, 3, 3, bad_input, d) ||
        want_rank(m, n, in, 1, 3, 3, bad_input, d) ||
        odd_kernel(m, n, &in[1], strcmp(aj_attr_word(n, "pad"), "same") ? 3 : 2, bad_input, d))
        return -1;
    return conv_channels(m, n, in, out, bad_input, d);
}

/* The adjoints' rules. dy is the forward result [B, Co, S...] (S: H, W or
 * T); the grad_x ops take w [Co, Ci, K...] and give dx [B, Ci, S...]. */
static int conv_grad_x(const aj_module *m, const aj_node *n, const aj_type *in, aj_type *out, int *bad,
                       aj_diag *d) {
    char s0[TS], s1[TS];
    if (want_dilation(n, bad, d)) return -1;
    if (!aj_dim_eq(in[0].dim[1], in[1].dim[0]))
        return fail(n, 1, bad, d, "output channels differ: dy is %s, w is %s", tstr(m, &in[0], s0),
                    tstr(m, &in[1], s1));
    out[0] = in[0];
    out[0].dim[1] = in[1].dim[1];
    return 0;
}

/* The grad_w ops take x [B, Ci, S...] and give dw [Co, Ci, K...], the kernel
 * sizes K from the attributes `kernel` (odd when `odd`, else >= 1). */
static int conv_grad_w(const aj_module *m, const aj_node *n, const aj_type *in, aj_type *out,
                       const char *const *kernel, int nk, int odd, int *bad, aj_diag *d) {
    char s0[TS], s1[TS];
    if (want_dilation(n, bad, d)) return -1;
    for (int i = 0; i < in[0].rank; i++)
        if (i != 1 && !aj_dim_eq(in[0].dim[i], in[1].dim[i]))
            return fail(n, 1, bad, d, "dy %s and x %s must agree except in the channels", tstr(m, &in[0], s0),
                        tstr(m, &in[1], s1));
    out[0].dtype = AJ_F32;
    out[0].rank = 2 + nk;
    out[0].dim[0] = in[0].dim[1];
    out[0].dim[1] = in[1].dim[1];
    for (int k = 0; k < nk; k++) {
        int64_t v;
        aj_dim kd = aj_attr_dim(n, kernel[k]);
        if (is_const(kd, &v) && (v < 1 || (odd && v % 2 == 0)))
            return fail(n, -1, bad, d, "%s must be %s, got %lld", kernel[k], odd ? "odd" : ">= 1", (long long)v);
        out[0].dim[2 + k] = kd;
    }
    return 0;
}

/* conv2d_grad_x: dy [B, Co, H, W], w [Co, Ci, kh, kw] (odd) -> [B, Ci, H, W]. */
AJ_SHAPE_RULE(shape_conv2d_grad_x) {
    if (want_f32_all(m, n, in, bad_input, d) || want_rank(m, n, in, 0, 4, 4, bad_input, d) ||
        want_rank(m, n, in, 1, 4, 4, bad_input, d) || odd_kernel(m, n, &in[1], 2, bad_input, d))
        return -1;
    return conv_grad_x(m, n, in, out, bad_input, d);
}

/* conv2d_grad_w: dy [B, Co, H, W], x [B, Ci, H, W] -> [Co, Ci, kh, kw] (odd). */
AJ_SHAPE_RULE(shape_conv2d_grad_w) {
    static const char *const kernel[2] = {"kh", "kw"};
    if (want_f32_all(m, n, in, bad_input, d) || want_rank(m, n, in, 0, 4, 4, bad_input, d) ||
        want_rank(m, n, in, 1, 4, 4, bad_input, d))
        return -1;
    return conv_grad_w(m, n, in, out, kernel, 2, 1, bad_input, d);
}

static int pad_same(const aj_node *n) { return !strcmp(aj_attr_word(n, "pad"), "same"); }

/* conv1d_grad_x: dy [B, Co, T], w [Co, Ci, k] -> [B, Ci, T]; pad=same needs odd k. */
AJ_SHAPE_RULE(shape_conv1d_grad_x) {
    if (want_f32_all(m, n, in, bad_input, d) || want_rank(m, n, in, 0, 3, 3, bad_input, d) ||
        want_rank(m, n, in, 1, 3, 3, bad_input, d) || odd_kernel(m, n, &in[1], pad_same(n) ? 2 : 3, bad_input, d))
        return -1;
    return conv_grad_x(m, n, in, out, bad_input, d);
}

/* conv1d_grad_w: dy [B, Co, T], x [B, Ci, T] -> [Co, Ci, k]; pad=same needs odd k. */
AJ_SHAPE_RULE(shape_conv1d_grad_w) {
    static const char *const kernel[1] = {"k"};
    if (want_f32_all(m, n, in, bad_input, d) || want_rank(m, n, in, 0, 3, 3, bad_input, d) ||
        want_rank(m, n, in, 1, 3, 3, bad_input, d))
        return -1;
    return conv_grad_w(m, n, in, out, kernel, 1, pad_same(n), bad_input, d);
}

/* The product of dims; non-zero when it outgrows an aj_dim or overflows. */
static int dims_product(const aj_dim *x, int r, aj_dim *p) {
    *p = aj_dim_const(1);
    for (int i = 0; i < r; i++)
        if (aj_dim_mul(*p, x[i], p)) return -1;
    return 0;
}

/* reshape: same element count, row-major. Dims both sides share cancel
 * first (which keeps the products small: [B, T+1, 8] -> [B, T+1, 2, 4]
 * compares 8 with 2*4); what is left must multiply out to the same
 * polynomial, e.g. [B, T+1, 8] -> [B*T+B, 8]. Unequal polynomials differ
 * for some values of the dims, so a mismatch is an error, not a doubt. */
AJ_SHAPE_RULE(shape_reshape) {
    aj_dim a[AJ_MAX_RANK], b[AJ_MAX_RANK], pa, pb;
    int na = 0, nb = 0, used[AJ_MAX_RANK] = {0};
    char s0[TS], s1[TS];
    if (shape_attr(n, "shape", &out[0], bad_input, d)) return -1;
    out[0].dtype = in[0].dtype;
    for (int i = 0; i < in[0].rank; i++) {
        int j = 0;
        while (j < out[0].rank && (used[j] || !aj_dim_eq(in[0].dim[i], out[0].dim[j]))) j++;
        if (j < out[0].rank)
            used[j] = 1;
        else
            a[na++] = in[0].dim[i];
    }
    for (int j = 0; j < out[0].rank; j++)
        if (!used[j]) b[nb++] = out[0].dim[j];
    if (dims_product(a, na, &pa) || dims_product(b, nb, &pb))
        return fail(n, 0, bad_input, d, "cannot prove that %s and shape %s have as many elements",
                    tstr(m, &in[0], s0), tstr(m, &out[0], s1));
    if (!aj_dim_eq(pa, pb))
        return fail(n, 0, bad_input, d, "%s does not have as many elements as shape %s",
                    tstr(m, &in[0], s0), tstr(m, &out[0], s1));
    return 0;
}

/* transpose: result axis i is input axis perm[i]; perm is a permutation. */
AJ_SHAPE_RULE(shape_transpose) {
    const aj_attr *perm = aj_attr_get(n, "perm");
    int seen[AJ_MAX_RANK] = {0};
    char s[TS];
    if (perm->n != in[0].rank)
        return fail(n, -1, bad_input, d, "perm has %d entries but %s has rank %d", perm->n,
                    tstr(m, &in[0], s), in[0].rank);
    out[0] = in[0];
    for (int i = 0; i < perm->n; i++) {
        int ax = 0;
        if (get_axis(m, n, &in[0], perm->ints[i], in[0].rank, &ax, bad_input, d)) return -1;
        if (seen[ax]) return fail(n, -1, bad_input, d, "perm lists axis %d twice", ax);
        seen[ax] = 1;
        out[0].dim[i] = in[0].dim[ax];
    }
    return 0;
}

/* slice: 0 <= start <= end <= size along axis; the result has end - start. */
AJ_SHAPE_RULE(shape_slice) {
    int ax = 0;
    int64_t v;
    char s0[TS], s1[TS], s2[TS];
    if (get_axis(m, n, &in[0], aj_attr_int(n, "axis"), in[0].rank, &ax, bad_input, d)) return -1;
    aj_dim start = aj_attr_dim(n, "start"), end = aj_attr_dim(n, "end"), len, rest;
    if (is_const(start, &v) && v < 0)
        return fail(n, -1, bad_input, d, "start is negative (%lld)", (long long)v);
    if (aj_dim_sub(end, start, &len))
        return fail(n, -1, bad_input, d, "end - start (%s - %s) is not a dim", dstr(m, end, s0),
                    dstr(m, start, s1));
    if (is_const(len, &v) && v < 0)
        return fail(n, -1, bad_input, d, "end %s is before start %s", dstr(m, end, s0), dstr(m, start, s1));
    if (!aj_dim_sub(in[0].dim[ax], end, &rest) && is_const(rest, &v) && v < 0)
        return fail(n, 0, bad_input, d, "end %s is past the end of axis %d of %s", dstr(m, end, s0), ax,
                    tstr(m, &in[0], s2));
    out[0] = in[0];
    out[0].dim[ax] = len;
    return 0;
}

/* concat along axis: same dtype, rank and dims except along axis. */
AJ_SHAPE_RULE(shape_concat) {
    int ax = 0;
    char s0[TS], s1[TS];
    if (get_axis(m, n, &in[0], aj_attr_int(n, "axis"), in[0].rank, &ax, bad_input, d)) return -1;
    out[0] = in[0];
    for (int i = 1; i < n->nin; i++) {
        int ok = in[i].dtype == in[0].dtype && in[i].rank == in[0].rank;
        for (int j = 0; ok && j < in[0].rank; j++) ok = j == ax || aj_dim_eq(in[i].dim[j], in[0].dim[j]);
        if (!ok)
            return fail(n, i, bad_input, d, "argument %d is %s but argument 1 is %s: they must agree "
                        "except along axis %d", i + 1, tstr(m, &in[i], s0), tstr(m, &in[0], s1), ax);
        if (aj_dim_add(out[0].dim[ax], in[i].dim[ax], &out[0].dim[ax]))
            return fail(n, i, bad_input, d, "the concatenated size along axis %d is not a dim", ax);
    }
    return 0;
}

/* broadcast: numpy-broadcast the input to `shape` (only the input stretches). */
AJ_SHAPE_RULE(shape_broadcast_to) {
    char s0[TS], s1[TS];
    if (shape_attr(n, "shape", &out[0], bad_input, d)) return -1;
    out[0].dtype = in[0].dtype;
    int r = out[0].rank, ok = in[0].rank <= r;
    for (int i = 1; ok && i <= in[0].rank; i++) {
        aj_dim x = in[0].dim[in[0].rank - i];
        ok = is_one(x) || aj_dim_eq(x, out[0].dim[r - i]);
    }
    if (!ok)
        return fail(n, 0, bad_input, d, "cannot broadcast %s to shape %s", tstr(m, &in[0], s0),
                    tstr(m, &out[0], s1));
    return 0;
}

/* unsqueeze: a size-1 axis inserted at axis in [-(r+1), r]. */
AJ_SHAPE_RULE(shape_unsqueeze) {
    int ax = 0, r = in[0].rank;
    char s[TS];
    if (r == AJ_MAX_RANK)
        return fail(n, 0, bad_input, d, "%s already has the most axes (%d)", tstr(m, &in[0], s), AJ_MAX_RANK);
    if (get_axis(m, n, &in[0], aj_attr_int(n, "axis"), r + 1, &ax, bad_input, d)) return -1;
    out[0].dtype = in[0].dtype;
    out[0].rank = r + 1;
    for (int i = 0, j = 0; i <= r; i++) out[0].dim[i] = i == ax ? aj_dim_const(1) : in[0].dim[j++];
    return 0;
}

/* gather: table [V, E...] and i32 idx [S...] -> [S..., E...] (row lookup). */
AJ_SHAPE_RULE(shape_gather) {
    const aj_type *t = &in[0], *ix = &in[1];
    char s0[TS], s1[TS];
    if (want_rank(m, n, in, 0, 1, AJ_MAX_RANK, bad_input, d) || want_dtype(m, n, in, 1, AJ_I32, bad_input, d))
        return -1;
    if (ix->rank + t->rank - 1 > AJ_MAX_RANK)
        return fail(n, 1, bad_input, d, "result of gathering %s rows by %s has too many axes",
                    tstr(m, t, s0), tstr(m, ix, s1));
    out[0].dtype = t->dtype;
    out[0].rank = ix->rank + t->rank - 1;
    for (int i = 0; i < ix->rank; i++) out[0].dim[i] = ix->dim[i];
    for (int i = 1; i < t->rank; i++) out[0].dim[ix->rank + i - 1] = t->dim[i];
    return 0;
}

/* one_hot: i32 [S...] -> f32 [S..., n], n >= 1. */
AJ_SHAPE_RULE(shape_one_hot) {
    aj_dim nv = aj_attr_dim(n, "n");
    int64_t v;
    if (want_dtype(m, n, in, 0, AJ_I32, bad_input, d) || want_rank(m, n, in, 0, 0, AJ_MAX_RANK - 1, bad_input, d))
        return -1;
    if (is_const(nv, &v) && v < 1) return fail(n, -1, bad_input, d, "n must be >= 1, got %lld", (long long)v);
    out[0] = in[0];
    out[0].dtype = AJ_F32;
    out[0].dim[out[0].rank++] = nv;
    return 0;
}

/* pad: `before` and `after` (>= 0) elements of `value` along axis. */
AJ_SHAPE_RULE(shape_pad) {
    int ax = 0;
    int64_t before = aj_attr_int(n, "before"), after = aj_attr_int(n, "after");
    if (get_axis(m, n, &in[0], aj_attr_int(n, "axis"), in[0].rank, &ax, bad_input, d)) return -1;
    if (before < 0 || after < 0)
        return fail(n, -1, bad_input, d, "before and after must be >= 0, got %lld and %lld",
                    (long long)before, (long long)after);
    out[0] = in[0];
    if (aj_dim_add(in[0].dim[ax], aj_dim_const(before), &out[0].dim[ax]) ||
        aj_dim_add(out[0].dim[ax], aj_dim_const(after), &out[0].dim[ax]))
        return fail(n, -1, bad_input, d, "padded size is too large");
    return 0;
}

/* skew [..., H, W] -> [..., H, W+H-1] (sign = +1); unskew [..., H, W'] ->
 * [..., H, W'-H+1] (sign = -1). */
static int skew_rule(const aj_module *m, const aj_node *n, const aj_type *in, aj_type *out, int sign,
                     int *bad, aj_diag *d) {
    char s[TS];
    int64_t v;
    if (want_rank(m, n, in, 0, 2, AJ_MAX_RANK, bad, d)) return -1;
    int r = in[0].rank;
    aj_dim w = in[0].dim[r - 1], h = in[0].dim[r - 2], hm1, res;
    if (aj_dim_sub(h, aj_dim_const(1), &hm1) ||
        (sign > 0 ? aj_dim_add(w, hm1, &res) : aj_dim_sub(w, hm1, &res)))
        return fail(n, 0, bad, d, "the %s width of %s is not a dim", sign > 0 ? "skewed" : "unskewed",
                    tstr(m, &in[0], s));
    if (is_const(res, &v) && v < 0)
        return fail(n, 0, bad, d, "%s is too narrow to unskew", tstr(m, &in[0], s));
    out[0] = in[0];
    out[0].dim[r - 1] = res;
    return 0;
}

AJ_SHAPE_RULE(shape_skew) { return skew_rule(m, n, in, out, 1, bad_input, d); }
AJ_SHAPE_RULE(shape_unskew) { return skew_rule(m, n, in, out, -1, bad_input, d); }

/* cast: same dims, dtype `to`. */
AJ_SHAPE_RULE(shape_cast) {
    out[0] = in[0];
    out[0].dtype = strcmp(aj_attr_word(n, "to"), "i32") ? AJ_F32 : AJ_I32;
    return 0;
}

/* layer_norm: x [..., E], g [E], b [E]. */
AJ_SHAPE_RULE(shape_layer_norm) {
    char s0[TS], s1[TS];
    if (want_f32_all(m, n, in, bad_input, d) || want_rank(m, n, in, 0, 1, AJ_MAX_RANK, bad_input, d))
        return -1;
    aj_dim E = in[0].dim[in[0].rank - 1];
    for (int i = 1; i < 3; i++)
        if (in[i].rank != 1 || !aj_dim_eq(in[i].dim[0], E))
            return fail(n, i, bad_input, d, "%s must be [E] for x %s, got %s", i == 1 ? "g" : "b",
                        tstr(m, &in[0], s0), tstr(m, &in[i], s1));
    out[0] = in[0];
    return 0;
}

/* The leading dims of `a` (rank r+1) equal the dims of `b` (rank r). */
static int same_leading(const aj_type *a, const aj_type *b) {
    if (a->rank != b->rank + 1) return 0;
    for (int i = 0; i < b->rank; i++)
        if (!aj_dim_eq(a->dim[i], b->dim[i])) return 0;
    return 1;
}

/* categorical_nll: logits f32 [..., K], target i32 [...] -> f32 [...]. */
AJ_SHAPE_RULE(shape_categorical_nll) {
    char s0[TS], s1[TS];
    if (want_dtype(m, n, in, 0, AJ_F32, bad_input, d) || want_dtype(m, n, in, 1, AJ_I32, bad_input, d) ||
        want_rank(m, n, in, 0, 1, AJ_MAX_RANK, bad_input, d))
        return -1;
    if (!same_leading(&in[0], &in[1]))
        return fail(n, 1, bad_input, d, "target must have the dims of logits without the last: "
                    "logits are %s, target is %s", tstr(m, &in[0], s0), tstr(m, &in[1], s1));
    out[0] = in[1];
    out[0].dtype = AJ_F32;
    return 0;
}

/* The mixture parameters in[from..from+2] (logit_pi, mu, log_sigma) have one
 * type [..., K]. */
static int mixture_args(const aj_module *m, const aj_node *n, const aj_type *in, int from, int *bad,
                        aj_diag *d) {
    static const char *const name[3] = {"logit_pi", "mu", "log_sigma"};
    char s0[TS], s1[TS];
    if (want_f32_all(m, n, in, bad, d) || want_rank(m, n, in, from, 1, AJ_MAX_RANK, bad, d)) return -1;
    for (int i = 1; i < 3; i++) {
        const aj_type *a = &in[from], *b = &in[from + i];
        int ok = a->rank == b->rank;
        for (int j = 0; ok && j < a->rank; j++) ok = aj_dim_eq(a->dim[j], b->dim[j]);
        if (!ok)
            return fail(n, from + i, bad, d, "%s must have the type of logit_pi %s, got %s", name[i],
                        tstr(m, a, s0), tstr(m, b, s1));
    }
    return 0;
}

/* mog_nll: x [...], logit_pi/mu/log_sigma [..., K] -> [...]. */
AJ_SHAPE_RULE(shape_mog) {
    char s0[TS], s1[TS];
    if (mixture_args(m, n, in, 1, bad_input, d)) return -1;
    if (!same_leading(&in[1], &in[0]))
        return fail(n, 1, bad_input, d, "mixture parameters must be x's dims plus K: x is %s, logit_pi is %s",
                    tstr(m, &in[0], s0), tstr(m, &in[1], s1));
    out[0] = in[0];
    return 0;
}

/* The dims of t without its last axis. */
static void drop_last(const aj_type *t, aj_dtype dt, aj_type *out) {
    *out = *t;
    out->rank--;
    out->dtype = dt;
}

/* categorical: logits f32 [..., K] -> i32 [...], temperature > 0. */
AJ_SHAPE_RULE(shape_categorical) {
    double temp = aj_attr_float(n, "temperature");
    if (want_dtype(m, n, in, 0, AJ_F32, bad_input, d) || want_rank(m, n, in, 0, 1, AJ_MAX_RANK, bad_input, d))
        return -1;
    if (!(temp > 0)) return fail(n, -1, bad_input, d, "temperature must be > 0, got %g", temp);
    drop_last(&in[0], AJ_I32, &out[0]);
    return 0;
}

/* argmax: x f32 [..., K] -> i32 [...]; an empty last axis has no index. */
AJ_SHAPE_RULE(shape_argmax) {
    if (want_dtype(m, n, in, 0, AJ_F32, bad_input, d) || want_rank(m, n, in, 0, 1, AJ_MAX_RANK, bad_input, d))
        return -1;
    if (aj_dim_eq(in[0].dim[in[0].rank - 1], aj_dim_const(0)))
        return fail(n, 0, bad_input, d, "the last axis is empty: no entry is the largest");
    drop_last(&in[0], AJ_I32, &out[0]);
    return 0;
}

/* mog: logit_pi/mu/log_sigma [..., K] -> f32 [...]. */
AJ_SHAPE_RULE(shape_mog_sample) {
    if (mixture_args(m, n, in, 0, bad_input, d)) return -1;
    drop_last(&in[0], AJ_F32, &out[0]);
    return 0;
}

/* extern: a call of the module's extern op number `fn`, elementwise over one
 * shape: f(x_1..x_k) -> y, and with grad=1 its gradient
 * f(x_1..x_k, dy) -> dx_1..dx_k. Every input is f32 of the first one's type
 * (the C functions see flat arrays of one length) and so is every result. */
AJ_SHAPE_RULE(shape_extern) {
    char s0[TS], s1[TS];
    int64_t fn = aj_attr_int(n, "fn"), grad = aj_attr_int(n, "grad");
    if (fn < 0 || fn >= m->nextern) return fail(n, -1, bad_input, d, "no extern op number %lld", (long long)fn);
    const aj_extern *e = &m->ext[fn];
    if (grad != 0 && grad != 1) return fail(n, -1, bad_input, d, "%s: grad must be 0 or 1", e->name);
    if (grad && !e->grad) return fail(n, -1, bad_input, d, "%s has no gradient function (declare one with ', grad NAME')", e->name);
    if (n->nin != e->nin + grad || n->nout != (grad ? e->nin : 1))
        return fail(n, -1, bad_input, d, "%s%s takes %d inputs and gives %d results, not %d and %d", e->name,
                    grad ? "'s gradient" : "", e->nin + (int)grad, grad ? e->nin : 1, n->nin, n->nout);
    for (int i = 0; i < n->nin; i++) {
        if (want_dtype(m, n, in, i, AJ_F32, bad_input, d)) return -1;
        if (!aj_type_eq(&in[i], &in[0]))
            return fail(n, i, bad_input, d, "%s: argument %d is %s but argument 1 is %s (an extern op's inputs have one shape)",
                        e->name, i + 1, tstr(m, &in[i], s0), tstr(m, &in[0], s1));
    }
    for (int k = 0; k < n->nout; k++) out[k] = in[0];
    return 0;
}
