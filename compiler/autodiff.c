/* Reverse-mode automatic differentiation, graph -> graph.
 *
 * aj_autodiff copies a fn, appends its loss, and sweeps its nodes backwards.
 * Each op's vector-Jacobian product (VJP) is a function below that emits
 * ordinary IR nodes computing the input adjoints from the output adjoints,
 * so the gradient graph prints, parses back and runs on every engine.
 *
 * Adjoints accumulate with add when a value is used several times. Only
 * values that depend on a parameter ("needs") get adjoints, so gradients
 * nobody asked for (data inputs, masks) are never built.
 *
 * A recurrence is differentiated as a reverse recurrence (backpropagation
 * through time): the forward recurrence also stacks its carry at the start
 * of every step, and the backward body recomputes that one step from the
 * kept carry and differentiates it, carrying the carry's adjoint backwards
 * and summing the adjoints of invariant inputs. With invert=1, a carry
 * updated as c' = c + u, u independent of every carry, is not stacked: the
 * backward recurrence carries it too and recovers c_t = c_{t+1} - u_t
 * (NADE's a: no [D, B, H] history, at a rounding error of a few ulps of c
 * per step). */
#include "arjit.h"
#include "compiler/emit.h"
#include <stdlib.h>
#include <string.h>

typedef int (*vjp_fn)(aj_emit *c, int node, const int *dy, int *dx);

static int backprop(aj_emit *c, int nfwd, int *adj, const char *needs);

/* ------------------------------------------------------------------ VJP rules */

#define NODE aj_node n = c->g->node[node]
#define X(i) (n.in[i])
#define Y (n.out[0])
/* whether input i wants an adjoint (rules skip the others) */
#define WANT(i) (c->needs[n.in[i]])

static int vjp_neg(aj_emit *c, int node, const int *dy, int *dx) { NODE; dx[0] = em_op1(c, AJ_OP_NEG, dy[0]); (void)n; return 0; }
/* d exp(x) = exp(x) */
static int vjp_exp(aj_emit *c, int node, const int *dy, int *dx) { NODE; dx[0] = em_op2(c, AJ_OP_MUL, dy[0], Y); return 0; }
/* d log(x) = 1/x */
static int vjp_log(aj_emit *c, int node, const int *dy, int *dx) { NODE; dx[0] = em_op2(c, AJ_OP_DIV, dy[0], X(0)); return 0; }
/* d tanh(x) = 1 - tanh(x)^2 */
static int vjp_tanh(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    dx[0] = em_op2(c, AJ_OP_MUL, dy[0], em_op2(c, AJ_OP_SUB, em_scalar(c, 1), em_op1(c, AJ_OP_SQUARE, Y)));
    return 0;
}
/* d sigmoid(x) = s (1 - s) */
static int vjp_sigmoid(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    dx[0] = em_op2(c, AJ_OP_MUL, dy[0], em_op2(c, AJ_OP_MUL, Y, em_op2(c, AJ_OP_SUB, em_scalar(c, 1), Y)));
    return 0;
}
/* d relu(x) = [x > 0] */
static int vjp_relu(aj_emit *c, int node, const int *dy, int *dx) { NODE; dx[0] = em_op2(c, AJ_OP_MUL, dy[0], em_op1(c, AJ_OP_STEP, X(0))); return 0; }
/* d softplus(x) = sigmoid(x) */
static int vjp_softplus(aj_emit *c, int node, const int *dy, int *dx) { NODE; dx[0] = em_op2(c, AJ_OP_MUL, dy[0], em_op1(c, AJ_OP_SIGMOID, X(0))); return 0; }
/* d sqrt(x) = 1 / (2 sqrt(x)) */
static int vjp_sqrt(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    dx[0] = em_op2(c, AJ_OP_DIV, dy[0], em_op2(c, AJ_OP_MUL, Y, em_scalar(c, 2)));
    return 0;
}
/* d sin(x) = cos(x) */
static int vjp_sin(aj_emit *c, int node, const int *dy, int *dx) { NODE; dx[0] = em_op2(c, AJ_OP_MUL, dy[0], em_op1(c, AJ_OP_COS, X(0))); return 0; }
/* d cos(x) = -sin(x) */
static int vjp_cos(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    dx[0] = em_op1(c, AJ_OP_NEG, em_op2(c, AJ_OP_MUL, dy[0], em_op1(c, AJ_OP_SIN, X(0))));
    return 0;
}
/* d x^2 = 2x */
static int vjp_square(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    dx[0] = em_op2(c, AJ_OP_MUL, dy[0], em_op2(c, AJ_OP_MUL, X(0), em_scalar(c, 2)));
    return 0;
}
/* gelu(x) = x/2 (1 + tanh(u)), u = k (x + a x^3), k = sqrt(2/pi), a = 0.044715:
 * d gelu = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 a x^2) with t = tanh(u) */
static int vjp_gelu(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    const double k = 0.7978845608028654, a = 0.044715;
    int x = X(0), x2 = em_op1(c, AJ_OP_SQUARE, x);
    int u = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_MUL, x, em_op2(c, AJ_OP_ADD, em_op2(c, AJ_OP_MUL, x2, em_scalar(c, a)), em_scalar(c, 1))), em_scalar(c, k));
    int t = em_op1(c, AJ_OP_TANH, u);
    int left = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_ADD, t, em_scalar(c, 1)), em_scalar(c, 0.5));
    int sech2 = em_op2(c, AJ_OP_SUB, em_scalar(c, 1), em_op1(c, AJ_OP_SQUARE, t));
    int du = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_ADD, em_op2(c, AJ_OP_MUL, x2, em_scalar(c, 3 * a)), em_scalar(c, 1)), em_scalar(c, k));
    int right = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_MUL, x, em_scalar(c, 0.5)), sech2), du);
    dx[0] = em_op2(c, AJ_OP_MUL, dy[0], em_op2(c, AJ_OP_ADD, left, right));
    return 0;
}

static int vjp_add(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type a = em_ty(c, X(0)), b = em_ty(c, X(1));
    dx[0] = WANT(0) ? em_reduce_to(c, dy[0], &a) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, dy[0], &b) : -1;
    return 0;
}
static int vjp_sub(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type a = em_ty(c, X(0)), b = em_ty(c, X(1));
    dx[0] = WANT(0) ? em_reduce_to(c, dy[0], &a) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, em_op1(c, AJ_OP_NEG, dy[0]), &b) : -1;
    return 0;
}
static int vjp_mul(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type a = em_ty(c, X(0)), b = em_ty(c, X(1));
    dx[0] = WANT(0) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, dy[0], X(1)), &a) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, dy[0], X(0)), &b) : -1;
    return 0;
}
/* z = x / y: dz/dx = 1/y, dz/dy = -z/y */
static int vjp_div(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type a = em_ty(c, X(0)), b = em_ty(c, X(1));
    int g = em_op2(c, AJ_OP_DIV, dy[0], X(1));
    dx[0] = WANT(0) ? em_reduce_to(c, g, &a) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, em_op1(c, AJ_OP_NEG, em_op2(c, AJ_OP_MUL, g, Y)), &b) : -1;
    return 0;
}
/* z = max(x, y): the adjoint goes to x where x >= y, else to y */
static int vjp_maximum(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type a = em_ty(c, X(0)), b = em_ty(c, X(1));
    int lt = em_op1(c, AJ_OP_STEP, em_op2(c, AJ_OP_SUB, X(1), X(0)));   /* [x < y] */
    int to_y = em_op2(c, AJ_OP_MUL, dy[0], lt);
    dx[0] = WANT(0) ? em_reduce_to(c, em_op2(c, AJ_OP_SUB, dy[0], to_y), &a) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, to_y, &b) : -1;
    return 0;
}

static int vjp_sum(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    dx[0] = em_unreduce(c, &n, dy[0], &xt);
    return 0;
}
/* the same reduction as node n (its axes and keepdims) applied to x */
static int reduce_like(aj_emit *c, const aj_node *n, aj_op op, int x) {
    const aj_attr *ax = aj_attr_get(n, "axis");
    int axes[AJ_MAX_RANK];
    for (int i = 0; i < ax->n; i++) axes[i] = (int)ax->ints[i];
    return em_reduce(c, op, x, axes, ax->n, (int)aj_attr_int(n, "keepdims"));
}

/* mean = sum / N. N may be symbolic (the batch), so the graph computes it:
 * the same reduction of a tensor of ones. */
static int vjp_mean(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    int count = reduce_like(c, &n, AJ_OP_SUM, em_constant(c, 1, &xt));
    dx[0] = em_unreduce(c, &n, em_op2(c, AJ_OP_DIV, dy[0], count), &xt);
    return 0;
}
/* d max = [x == max]: square(x - max) > 0 exactly where x differs */
static int vjp_max(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    int ybig = em_unreduce(c, &n, Y, &xt);
    int differs = em_op1(c, AJ_OP_STEP, em_op1(c, AJ_OP_SQUARE, em_op2(c, AJ_OP_SUB, X(0), ybig)));
    int is_max = em_op2(c, AJ_OP_SUB, em_scalar(c, 1), differs);
    dx[0] = em_op2(c, AJ_OP_MUL, em_unreduce(c, &n, dy[0], &xt), is_max);
    return 0;
}
/* d logsumexp = softmax: exp(x - lse) */
static int vjp_logsumexp(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    int p = em_op1(c, AJ_OP_EXP, em_op2(c, AJ_OP_SUB, X(0), em_unreduce(c, &n, Y, &xt)));
    dx[0] = em_op2(c, AJ_OP_MUL, em_unreduce(c, &n, dy[0], &xt), p);
    return 0;
}

/* C = op(A) op(B): dA = dC op(B)^T (transposed back if ta), likewise dB;
 * batch axes that were broadcast are summed away. */
static int matmul_t(aj_emit *c, int a, int b, int ta, int tb) {
    int in[2] = {a, b};
    int n = em_node_new(c, AJ_OP_MATMUL, in, 2);
    if (n < 0) return -1;
    em_attr(c, n, "ta")->i = ta;
    em_attr(c, n, "tb")->i = tb;
    return em_node_done(c, n);
}
/* x : [..., R, C] as its rows [P R, C] (P the product of the batch axes);
 * -1 when x has no batch axes or P R leaves the form c*A*B+k */
static int rows_of(aj_emit *c, int x) {
    aj_type t = em_ty(c, x);
    aj_dim rows = t.dim[0];
    if (t.rank < 3) return -1;
    for (int a = 1; a < t.rank - 1; a++)
        if (aj_dim_mul(rows, t.dim[a], &rows)) return -1;
    aj_type r = {.dtype = t.dtype, .rank = 2, .dim = {rows, t.dim[t.rank - 1]}};
    return em_to_shape(c, AJ_OP_RESHAPE, x, &r);
}

static int vjp_matmul(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    int ta = (int)aj_attr_int(&n, "ta"), tb = (int)aj_attr_int(&n, "tb");
    aj_type at = em_ty(c, X(0)), bt = em_ty(c, X(1));
    int a = X(0), b = X(1), g = dy[0], ar, gr;
    /* a is [M,K] (or [K,M] if ta), b is [K,N] (or [N,K] if tb), g is [M,N] */
    if (WANT(0)) dx[0] = em_reduce_to(c, ta ? matmul_t(c, b, g, tb, 1) : matmul_t(c, g, b, 0, !tb), &at);
    if (!WANT(1)) return 0;
    /* a weight b shared by a batch of a [..., M, K]: db = sum_p a_p^T g_p is
     * one product of all P M rows, [P M, K]^T [P M, N], not P products and
     * a sum over them (29% of a Transformer's step) */
    if (bt.rank == 2 && at.rank > 2 && !ta && (ar = rows_of(c, a)) >= 0 && (gr = rows_of(c, g)) >= 0)
        dx[1] = tb ? matmul_t(c, gr, ar, 1, 0) : matmul_t(c, ar, gr, 1, 0);
    else
        dx[1] = em_reduce_to(c, tb ? matmul_t(c, g, a, 1, ta) : matmul_t(c, a, g, !ta, 0), &bt);
    return 0;
}

/* y = softmax(x): dx = y (dy - sum(dy y)) */
static int vjp_softmax(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    int axis = (int)aj_attr_int(&n, "axis");
    int dot = em_reduce(c, AJ_OP_SUM, em_op2(c, AJ_OP_MUL, dy[0], Y), &axis, 1, 1);
    dx[0] = em_op2(c, AJ_OP_MUL, Y, em_op2(c, AJ_OP_SUB, dy[0], dot));
    return 0;
}
/* y = log_softmax(x): dx = dy - exp(y) sum(dy) */
static int vjp_log_softmax(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    int axis = (int)aj_attr_int(&n, "axis");
    int total = em_reduce(c, AJ_OP_SUM, dy[0], &axis, 1, 1);
    dx[0] = em_op2(c, AJ_OP_SUB, dy[0], em_op2(c, AJ_OP_MUL, em_op1(c, AJ_OP_EXP, Y), total));
    return 0;
}

static int vjp_reshape(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    dx[0] = em_to_shape(c, AJ_OP_RESHAPE, dy[0], &xt);
    return 0;
}
static int vjp_broadcast(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    dx[0] = em_reduce_to(c, dy[0], &xt);
    return 0;
}
#define vjp_unsqueeze vjp_reshape
/* the inverse permutation */
static int vjp_transpose(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    const aj_attr *p = aj_attr_get(&n, "perm");
    int t = em_node_new(c, AJ_OP_TRANSPOSE, dy, 1);
    if (t < 0) return 0;
    aj_attr *q = em_attr(c, t, "perm");
    q->n = p->n;
    for (int i = 0; i < p->n; i++) q->ints[p->ints[i] < 0 ? p->ints[i] + p->n : p->ints[i]] = i;
    dx[0] = em_node_done(c, t);
    return 0;
}
/* y = x[start:end] along axis: dx is dy padded back with zeros */
static int vjp_slice(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    int axis = (int)aj_attr_int(&n, "axis");
    if (axis < 0) axis += xt.rank;
    aj_dim start = aj_dim_bind(aj_attr_dim(&n, "start"), &c->m->bind);
    aj_dim end = aj_dim_bind(aj_attr_dim(&n, "end"), &c->m->bind), after;
    if (aj_dim_sub(xt.dim[axis], end, &after) || !aj_dim_is_const(start) || !aj_dim_is_const(after))
        return aj_error(c->d, n.line, n.col, "slice: the gradient needs constant padding sizes");
    int p = em_node_new(c, AJ_OP_PAD, dy, 1);
    if (p < 0) return 0;
    em_attr(c, p, "axis")->i = axis;
    em_attr(c, p, "before")->i = start.off;
    em_attr(c, p, "after")->i = after.off;
    dx[0] = em_node_done(c, p);
    return 0;
}
static int slice_of(aj_emit *c, int x, int axis, aj_dim start, aj_dim end) {
    int s = em_node_new(c, AJ_OP_SLICE, &x, 1);
    if (s < 0) return -1;
    em_attr(c, s, "axis")->i = axis;
    em_attr(c, s, "start")->dims[0] = start, em_attr(c, s, "start")->n = 1;
    em_attr(c, s, "end")->dims[0] = end, em_attr(c, s, "end")->n = 1;
    return em_node_done(c, s);
}
/* y = pad(x): dx = the middle of dy */
static int vjp_pad(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    int axis = (int)aj_attr_int(&n, "axis");
    if (axis < 0) axis += xt.rank;
    aj_dim start = aj_dim_const(aj_attr_int(&n, "before")), end;
    if (aj_dim_add(start, xt.dim[axis], &end)) return aj_error(c->d, n.line, n.col, "pad: size too complex");
    dx[0] = slice_of(c, dy[0], axis, start, end);
    return 0;
}
/* concat: each input's adjoint is its stretch of dy */
static int vjp_concat(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    int rank = em_ty(c, X(0)).rank, axis = (int)aj_attr_int(&n, "axis");
    if (axis < 0) axis += rank;
    aj_dim at = aj_dim_const(0);
    for (int i = 0; i < n.nin; i++) {
        aj_dim end;
        if (aj_dim_add(at, em_ty(c, X(i)).dim[axis], &end)) return aj_error(c->d, n.line, n.col, "concat: size too complex");
        dx[i] = slice_of(c, dy[0], axis, at, end);
        at = end;
    }
    return 0;
}
/* The product of dims [from, to) of t, or -1 if it is not of aj_dim's form. */
static int dims_product(const aj_type *t, int from, int to, aj_dim *out) {
    *out = aj_dim_const(1);
    for (int i = from; i < to; i++)
        if (aj_dim_mul(*out, t->dim[i], out)) return -1;
    return 0;
}

/* y = gather(table [V, E..], idx [S..]): each row of dtable sums the dy
 * rows that read it: dtable = one_hot(idx)^T dy, with S.. and E.. flattened */
static int vjp_gather(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type tt = em_ty(c, X(0)), it = em_ty(c, X(1));
    aj_type flat_oh = {AJ_F32, 2, {{0}}}, flat_dy = {AJ_F32, 2, {{0}}};
    if (dims_product(&it, 0, it.rank, &flat_oh.dim[0]) || dims_product(&tt, 1, tt.rank, &flat_dy.dim[1]))
        return aj_error(c->d, n.line, n.col, "gather: the gradient needs a simpler shape");
    flat_oh.dim[1] = tt.dim[0];
    flat_dy.dim[0] = flat_oh.dim[0];
    int oh = em_node_new(c, AJ_OP_ONE_HOT, &n.in[1], 1);
    if (oh < 0) return 0;
    em_attr(c, oh, "n")->dims[0] = tt.dim[0], em_attr(c, oh, "n")->n = 1;
    int onehot = em_to_shape(c, AJ_OP_RESHAPE, em_node_done(c, oh), &flat_oh);
    int g = matmul_t(c, onehot, em_to_shape(c, AJ_OP_RESHAPE, dy[0], &flat_dy), 1, 0);
    dx[0] = em_to_shape(c, AJ_OP_RESHAPE, g, &tt);
    return 0;
}
/* shift by k: the adjoint shifts back by -k */
static int vjp_shift(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    int s = em_node_new(c, AJ_OP_SHIFT, dy, 1);
    if (s < 0) return 0;
    em_attr(c, s, "axis")->i = aj_attr_int(&n, "axis");
    em_attr(c, s, "by")->i = -aj_attr_int(&n, "by");
    dx[0] = em_node_done(c, s);
    return 0;
}
static int vjp_skew(aj_emit *c, int node, const int *dy, int *dx) { (void)node; dx[0] = em_op1(c, AJ_OP_UNSKEW, dy[0]); return 0; }
static int vjp_unskew(aj_emit *c, int node, const int *dy, int *dx) { (void)node; dx[0] = em_op1(c, AJ_OP_SKEW, dy[0]); return 0; }

/* y = (x - mu) r g + b with r = 1/sqrt(var + eps) over the last axis:
 * xh = (x - mu) r, dxh = dy g,
 * dx = r (dxh - mean(dxh) - xh mean(dxh xh)), dg = sum dy xh, db = sum dy */
static int vjp_layer_norm(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0)), gt = em_ty(c, X(1)), bt = em_ty(c, X(2));
    int last = xt.rank - 1;
    int mu = em_reduce(c, AJ_OP_MEAN, X(0), &last, 1, 1);
    int xc = em_op2(c, AJ_OP_SUB, X(0), mu);
    int var = em_reduce(c, AJ_OP_MEAN, em_op1(c, AJ_OP_SQUARE, xc), &last, 1, 1);
    int r = em_op2(c, AJ_OP_DIV, em_scalar(c, 1), em_op1(c, AJ_OP_SQRT, em_op2(c, AJ_OP_ADD, var, em_scalar(c, aj_attr_float(&n, "eps")))));
    int xh = em_op2(c, AJ_OP_MUL, xc, r);
    int dxh = em_op2(c, AJ_OP_MUL, dy[0], X(1));
    int m1 = em_reduce(c, AJ_OP_MEAN, dxh, &last, 1, 1);
    int m2 = em_reduce(c, AJ_OP_MEAN, em_op2(c, AJ_OP_MUL, dxh, xh), &last, 1, 1);
    dx[0] = WANT(0) ? em_op2(c, AJ_OP_MUL, r, em_op2(c, AJ_OP_SUB, em_op2(c, AJ_OP_SUB, dxh, m1), em_op2(c, AJ_OP_MUL, xh, m2))) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, dy[0], xh), &gt) : -1;
    dx[2] = WANT(2) ? em_reduce_to(c, dy[0], &bt) : -1;
    return 0;
}

/* l = softplus(z) - x z: dz = sigmoid(z) - x, dx = -z */
static int vjp_bernoulli_nll(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type zt = em_ty(c, X(0)), xt = em_ty(c, X(1));
    dx[0] = WANT(0) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, dy[0], em_op2(c, AJ_OP_SUB, em_op1(c, AJ_OP_SIGMOID, X(0)), X(1))), &zt) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, dy[0], em_op1(c, AJ_OP_NEG, X(0))), &xt) : -1;
    return 0;
}
/* l = logsumexp(z) - z[t]: dz = softmax(z) - one_hot(t) */
static int vjp_categorical_nll(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type zt = em_ty(c, X(0));
    int oh = em_node_new(c, AJ_OP_ONE_HOT, &n.in[1], 1);
    if (oh < 0) return 0;
    em_attr(c, oh, "n")->dims[0] = zt.dim[zt.rank - 1], em_attr(c, oh, "n")->n = 1;
    int diff = em_op2(c, AJ_OP_SUB, em_op1(c, AJ_OP_SOFTMAX, X(0)), em_node_done(c, oh));
    dx[0] = em_op2(c, AJ_OP_MUL, em_with_int(c, AJ_OP_UNSQUEEZE, dy[0], "axis", -1), diff);
    return 0;
}
/* l = log sqrt(2 pi) + s + z^2/2 with z = (x - mu) e^-s:
 * dx = z e^-s, dmu = -z e^-s, ds = 1 - z^2 */
static int vjp_gaussian_nll(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0)), mt = em_ty(c, X(1)), st = em_ty(c, X(2));
    int inv = em_op1(c, AJ_OP_EXP, em_op1(c, AJ_OP_NEG, X(2)));
    int z = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_SUB, X(0), X(1)), inv);
    int gx = em_op2(c, AJ_OP_MUL, dy[0], em_op2(c, AJ_OP_MUL, z, inv));
    dx[0] = WANT(0) ? em_reduce_to(c, gx, &xt) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, em_op1(c, AJ_OP_NEG, gx), &mt) : -1;
    dx[2] = WANT(2) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, dy[0], em_op2(c, AJ_OP_SUB, em_scalar(c, 1), em_op1(c, AJ_OP_SQUARE, z))), &st) : -1;
    return 0;
}
/* l = -logsumexp_k(log pi_k - g_k), g_k the Gaussian NLL of x under k.
 * With responsibilities r = softmax_k(log pi_k - g_k) and z_k, w_k = e^-s_k:
 * dlogit = pi - r, dmu_k = -r_k z_k w_k, ds_k = r_k (1 - z_k^2),
 * dx = sum_k r_k z_k w_k */
static int vjp_mog_nll(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    aj_type xt = em_ty(c, X(0));
    int last = em_ty(c, X(1)).rank - 1;
    int d1 = em_with_int(c, AJ_OP_UNSQUEEZE, dy[0], "axis", -1);
    int xk = em_with_int(c, AJ_OP_UNSQUEEZE, X(0), "axis", -1);
    int w = em_op1(c, AJ_OP_EXP, em_op1(c, AJ_OP_NEG, X(3)));
    int z = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_SUB, xk, X(2)), w);
    int logpi = em_op1(c, AJ_OP_LOG_SOFTMAX, X(1));
    int r = em_op1(c, AJ_OP_SOFTMAX, em_op2(c, AJ_OP_SUB, logpi, em_op3(c, AJ_OP_GAUSSIAN_NLL, xk, X(2), X(3))));
    int rzw = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_MUL, r, z), w);
    aj_type t1 = em_ty(c, X(1)), t2 = em_ty(c, X(2)), t3 = em_ty(c, X(3));
    dx[0] = WANT(0) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, dy[0], em_reduce(c, AJ_OP_SUM, rzw, &last, 1, 0)), &xt) : -1;
    dx[1] = WANT(1) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, d1, em_op2(c, AJ_OP_SUB, em_op1(c, AJ_OP_EXP, logpi), r)), &t1) : -1;
    dx[2] = WANT(2) ? em_reduce_to(c, em_op1(c, AJ_OP_NEG, em_op2(c, AJ_OP_MUL, d1, rzw)), &t2) : -1;
    dx[3] = WANT(3) ? em_reduce_to(c, em_op2(c, AJ_OP_MUL, d1, em_op2(c, AJ_OP_MUL, r, em_op2(c, AJ_OP_SUB, em_scalar(c, 1), em_op1(c, AJ_OP_SQUARE, z)))), &t3) : -1;
    return 0;
}

/* [.., T, E] -> [.., heads, T, E/heads] and back, for the attention rule */
static int split_heads(aj_emit *c, int x, int heads) {
    aj_type t = em_ty(c, x), s = t;
    int r = t.rank;
    if (r + 1 > AJ_MAX_RANK || !aj_dim_is_const(t.dim[r - 1])) return aj_error(c->d, 0, 0, "attention: shape too complex for the gradient");
    s.rank = r + 1;
    s.dim[r - 1] = aj_dim_const(heads);
    s.dim[r] = aj_dim_const(t.dim[r - 1].off / heads);
    int tr = em_node_new(c, AJ_OP_TRANSPOSE, (int[]){em_to_shape(c, AJ_OP_RESHAPE, x, &s)}, 1);
    if (tr < 0) return -1;
    aj_attr *p = em_attr(c, tr, "perm");
    p->n = r + 1;
    for (int i = 0; i <= r; i++) p->ints[i] = i;
    p->ints[r - 2] = r - 1, p->ints[r - 1] = r - 2;
    return em_node_done(c, tr);
}
static int merge_heads(aj_emit *c, int x, const aj_type *like) {
    int r = em_ty(c, x).rank;
    int tr = em_node_new(c, AJ_OP_TRANSPOSE, &x, 1);
    if (tr < 0) return -1;
    aj_attr *p = em_attr(c, tr, "perm");
    p->n = r;
    for (int i = 0; i < r; i++) p->ints[i] = i;
    p->ints[r - 3] = r - 2, p->ints[r - 2] = r - 3;
    return em_to_shape(c, AJ_OP_RESHAPE, em_node_done(c, tr), like);
}

/* O = softmax(Q K^T s + M) V per head, s = 1/sqrt(E/heads), M the causal mask:
 * dV = P^T dO, dP = dO V^T, dS = P (dP - sum(dP P)) s, dQ = dS K, dK = dS^T Q.
 * The scores are recomputed here from Q and K. */
static int vjp_attention(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    int heads = (int)aj_attr_int(&n, "heads");
    aj_type qt = em_ty(c, X(0)), kt = em_ty(c, X(1)), vt = em_ty(c, X(2));
    double scale = 1.0 / __builtin_sqrt((double)(qt.dim[qt.rank - 1].off / heads));
    int q = split_heads(c, X(0), heads), k = split_heads(c, X(1), heads), v = split_heads(c, X(2), heads);
    int g = split_heads(c, dy[0], heads);
    int s = em_op2(c, AJ_OP_MUL, matmul_t(c, q, k, 0, 1), em_scalar(c, scale));
    if (aj_attr_int(&n, "causal")) {
        int m = em_node_new(c, AJ_OP_MASK, NULL, 0);
        if (m < 0) return 0;
        em_attr(c, m, "kind")->i = 0;   /* lower: key j <= query i */
        aj_attr *sh = em_attr(c, m, "shape");
        sh->n = 2, sh->dims[0] = qt.dim[qt.rank - 2], sh->dims[1] = kt.dim[kt.rank - 2];
        int blocked = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_SUB, em_node_done(c, m), em_scalar(c, 1)), em_scalar(c, 1e9));
        s = em_op2(c, AJ_OP_ADD, s, blocked);
    }
    int p = em_op1(c, AJ_OP_SOFTMAX, s);
    int dv = matmul_t(c, p, g, 1, 0);
    int dp = matmul_t(c, g, v, 0, 1);
    int last = -1;
    int dot = em_reduce(c, AJ_OP_SUM, em_op2(c, AJ_OP_MUL, dp, p), &last, 1, 1);
    int ds = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_MUL, p, em_op2(c, AJ_OP_SUB, dp, dot)), em_scalar(c, scale));
    dx[0] = WANT(0) ? merge_heads(c, matmul_t(c, ds, k, 0, 0), &qt) : -1;
    dx[1] = WANT(1) ? merge_heads(c, matmul_t(c, ds, q, 1, 0), &kt) : -1;
    dx[2] = WANT(2) ? merge_heads(c, dv, &vt) : -1;
    return 0;
}

/* Set word attribute `name` of node g to the word w (by the word, not its
 * index, so the ops' word lists need not be in one order). */
static void set_word(aj_emit *c, int g, const char *name, const char *w) {
    const aj_op_def *def = aj_op_info(c->g->node[g].op);
    for (int a = 0; a < def->nattr; a++)
        for (int k = 0; !strcmp(def->attr[a].name, name) && k < def->attr[a].nwords; k++)
            if (!strcmp(def->attr[a].words[k], w)) em_attr(c, g, name)->i = k;
}

/* An adjoint op of conv node n on (dy, other), with n's word attribute
 * `word` (mask or pad), its dilation, and dim attributes kdims[i] = kernel axis 2 + i of w. */
static int conv_grad(aj_emit *c, const aj_node *n, aj_op op, int dy, int other, const char *word,
                     const char *const *kdims, int nk, const aj_type *wt) {
    int in[2] = {dy, other};
    int g = em_node_new(c, op, in, 2);
    if (g < 0) return -1;
    set_word(c, g, word, aj_attr_word(n, word));
    em_attr(c, g, "dilation")->i = aj_attr_int(n, "dilation");
    for (int k = 0; k < nk; k++) {
        aj_attr *a = em_attr(c, g, kdims[k]);
        a->n = 1;
        a->dims[0] = wt->dim[2 + k];
    }
    return em_node_done(c, g);
}

/* y = conv2d(x, w) (mask m, dilation 1; dilation d scales every tap offset
 * i - ph, j - pw by d): dx = conv2d_grad_x(dy, w), the correlation run
 * backwards, dx[b,c,y,x] = sum_{o,i,j} dy[b,o,y-i+ph,x-j+pw] w[o,c,i,j] m[i,j];
 * dw = conv2d_grad_w(dy, x), dw[o,c,i,j] = m[i,j] sum_{b,y,x} dy[b,o,y,x] x[b,c,y+i-ph,x+j-pw] */
static int vjp_conv2d(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    static const char *const k2[2] = {"kh", "kw"};
    aj_type wt = em_ty(c, X(1));
    dx[0] = WANT(0) ? conv_grad(c, &n, AJ_OP_CONV2D_GRAD_X, dy[0], X(1), "mask", NULL, 0, &wt) : -1;
    dx[1] = WANT(1) ? conv_grad(c, &n, AJ_OP_CONV2D_GRAD_W, dy[0], X(0), "mask", k2, 2, &wt) : -1;
    return 0;
}
/* y = conv1d(x, w) (padding p): dx[b,c,t] = sum_{o,i} dy[b,o,t-i+p] w[o,c,i],
 * dw[o,c,i] = sum_{b,t} dy[b,o,t] x[b,c,t+i-p] */
static int vjp_conv1d(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    static const char *const k1[1] = {"k"};
    aj_type wt = em_ty(c, X(1));
    dx[0] = WANT(0) ? conv_grad(c, &n, AJ_OP_CONV1D_GRAD_X, dy[0], X(1), "pad", NULL, 0, &wt) : -1;
    dx[1] = WANT(1) ? conv_grad(c, &n, AJ_OP_CONV1D_GRAD_W, dy[0], X(0), "pad", k1, 1, &wt) : -1;
    return 0;
}

/* y = f(x_1..x_k), a library function: its gradient function gives every
 * dx_i = dy * df/dx_i in one call, f(x_1..x_k, dy, grad=1) -> dx_1..dx_k. */
static int vjp_extern(aj_emit *c, int node, const int *dy, int *dx) {
    NODE;
    const aj_extern *e = &c->m->ext[aj_attr_int(&n, "fn")];
    if (aj_attr_int(&n, "grad"))
        return aj_error(c->d, n.line, n.col, "%s: an extern op's gradient has no gradient (second derivatives)", e->name);
    if (!e->grad)
        return aj_error(c->d, n.line, n.col,
                        "extern op '%s' has no gradient: declare one with ', grad NAME' (line %d) to train through it",
                        e->name, e->line);
    int in[AJ_MAX_EXTERN_IN + 1];
    for (int i = 0; i < n.nin; i++) in[i] = X(i);
    in[n.nin] = dy[0];
    int g = aj_graph_add_node(c->g, AJ_OP_EXTERN, in, n.nin + 1, n.nin, NULL);
    em_attr(c, g, "fn")->i = aj_attr_int(&n, "fn");
    em_attr(c, g, "grad")->i = 1;
    c->g->node[g].line = n.line, c->g->node[g].col = n.col;   /* run-time errors point at the call */
    if (aj_graph_infer_node(c->m, c->g, g, c->d)) return -1;
    for (int i = 0; i < n.nin; i++) dx[i] = c->g->node[g].out[i];
    return 0;
}

/* ------------------------------------------------------------------ recurrence */

/* Which values of g depend on a leaf marked in `needs` (forward propagation;
 * ops without gradients stop it). */
static void propagate_needs(const aj_graph *g, char *needs) {
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        if (aj_op_info(n->op)->flags & (AJ_NODIFF | AJ_RAND)) continue;
        int any = 0;
        for (int k = 0; k < n->nin; k++) any |= needs[n->in[k]];
        for (int k = 0; k < n->nout; k++) needs[n->out[k]] = (char)any;
    }
}

/* Carry k needs an adjoint if its initial value does, or if its next value
 * depends on anything that does: a fixpoint over the body. in_needs has an
 * entry per leaf; a carry's grows to whether it needs one. */
static void body_needs(const aj_recur *r, char *in_needs, char *needs) {
    const aj_graph *b = r->body;
    for (int changed = 1; changed;) {
        memset(needs, 0, (size_t)b->nval);
        for (int k = 0; k < b->nleaf; k++) needs[b->leaf[k]] = in_needs[k];
        propagate_needs(b, needs);
        changed = 0;
        for (int k = 0; k < r->ncarry; k++)
            if (needs[b->result[k]] && !in_needs[k]) in_needs[k] = 1, changed = 1;
    }
}

/* a leaf of a backward body, named and typed, on the line of the forward
 * statement it comes from (dumps and errors) */
static int add_leaf(aj_graph *b, const char *name, aj_val_kind kind, int idx, aj_type t, int line) {
    int v = aj_graph_add_value(b, NULL, kind, -1, idx);
    aj_value_rename(b, v, name);
    b->val[v].type = t;
    b->val[v].line = line;
    return v;
}

/* Copy node i of `src` into c->g, reading src value v as map[v]; map gains
 * the copy's results. Names are kept where free. */
static int copy_node(aj_emit *c, const aj_graph *src, int i, int *map) {
    const aj_node *n = &src->node[i];
    int *in = malloc(sizeof(int) * ((size_t)n->nin + 1));
    if (!in) return aj_error(c->d, n->line, n->col, "out of memory");
    for (int k = 0; k < n->nin; k++) in[k] = map[n->in[k]];
    int id = aj_graph_add_node(c->g, n->op, in, n->nin, n->nout, NULL);
    free(in);
    aj_node *m = &c->g->node[id];
    memcpy(m->attr, n->attr, sizeof m->attr);
    m->line = n->line, m->col = n->col;
    if (n->rec) m->rec = aj_recur_clone(n->rec);
    for (int k = 0; k < n->nout; k++) {
        map[n->out[k]] = m->out[k];
        aj_value_rename(c->g, m->out[k], src->val[n->out[k]].name);
        c->g->val[m->out[k]].line = src->val[n->out[k]].line;
    }
    return aj_graph_infer_node(c->m, c->g, id, c->d);
}

/* every node of src, in order */
static int copy_nodes(aj_emit *c, const aj_graph *src, int *map) {
    for (int i = 0; i < src->nnode; i++)
        if (copy_node(c, src, i, map)) return -1;
    return 0;
}

/* Per value of body b: whether it depends on one of its first nleaf leaves
 * (the carries; with the slices, what changes from step to step). */
static char *step_dependent(const aj_graph *b, int nleaf) {
    char *dep = calloc((size_t)b->nval + 1, 1);
    if (!dep) return NULL;
    for (int k = 0; k < nleaf; k++) dep[b->leaf[k]] = 1;
    for (int i = 0; i < b->nnode; i++) {
        const aj_node *n = &b->node[i];
        int any = 0;
        for (int j = 0; j < n->nin; j++) any |= dep[n->in[j]];
        for (int j = 0; j < n->nout; j++) dep[n->out[j]] = (char)any;
    }
    return dep;
}

/* The values of body b the forward stacks for the backward (into kept,
 * room for b->nnode; their count, or -1): the results of its costly ops
 * (AJ_SAVE) that change from step to step, each moved down through adds
 * and subs that are its one use (their VJPs read no input): an LSTM's
 * gates z = x Wx + h Wh + b are kept as z, not as the two products. */
static int kept_values(const aj_graph *b, int ncs, int *kept) {
    char *varies = step_dependent(b, ncs);
    int *uses = calloc((size_t)b->nval + 1, sizeof(int)), *user = malloc(sizeof(int) * ((size_t)b->nval + 1)), P = 0;
    if (!varies || !uses || !user) return free(varies), free(uses), free(user), -1;
    for (int i = 0; i < b->nnode; i++)
        for (int k = 0; k < b->node[i].nin; k++) uses[b->node[i].in[k]]++, user[b->node[i].in[k]] = i;
    for (int k = 0; k < b->nresult; k++) uses[b->result[k]] += 2;   /* a result is kept as it is */
    for (int i = 0; i < b->nnode; i++) {
        const aj_node *n = &b->node[i];
        if (!(aj_op_info(n->op)->flags & AJ_SAVE) || n->nout != 1 || !varies[n->out[0]]) continue;
        int v = n->out[0];
        while (uses[v] == 1 && (b->node[user[v]].op == AJ_OP_ADD || b->node[user[v]].op == AJ_OP_SUB))
            v = b->node[user[v]].out[0];
        int seen = 0;
        for (int p = 0; p < P; p++) seen |= kept[p] == v;
        if (!seen) kept[P++] = v;
    }
    free(varies), free(uses), free(user);
    return P;
}

/* Carries c whose update is next c = c + u (either order, same type), u
 * depending on no carry: inv[k] = u's value in the body, else -1. */
static int invertible_carries(const aj_recur *r, int *inv) {
    const aj_graph *b = r->body;
    char *dep = step_dependent(b, r->ncarry);
    if (!dep) return -1;
    for (int k = 0; k < r->ncarry; k++) {
        const aj_value *nv = &b->val[b->result[k]];
        const aj_node *n = nv->kind == AJ_VAL_NODE ? &b->node[nv->node] : NULL;
        inv[k] = -1;
        if (!n || n->op != AJ_OP_ADD) continue;
        for (int j = 0; j < 2; j++) {
            int c = n->in[j], u = n->in[1 - j];
            if (c == b->leaf[k] && !dep[u] && aj_type_eq(&b->val[u].type, &b->val[c].type)) inv[k] = u;
        }
    }
    free(dep);
    return 0;
}

/* Copy into c->g the nodes of src that `want` (a value) depends on, reading
 * src value v as map[v] (leaves preset); map gains their results. */
static int copy_cone(aj_emit *c, const aj_graph *src, int want, int *map, char *done) {
    const aj_value *v = &src->val[want];
    if (v->kind != AJ_VAL_NODE || done[v->node]) return 0;
    const aj_node *n = &src->node[v->node];
    for (int k = 0; k < n->nin; k++)
        if (copy_cone(c, src, n->in[k], map, done)) return -1;
    done[v->node] = 1;
    return copy_node(c, src, v->node, map);
}

/* The recurrence's VJP: a reverse recurrence over the same steps.
 * Forward:  (c, s_t, u) -> (c', y_t)   for t in order
 *           and stacks the results p_t of its costly ops (AJ_SAVE)
 * Backward: carries dc (the adjoint of c) and du (summed adjoints of u);
 *           slices the kept carries h_t, the p_t, the s_t and the adjoints
 *           dy_t; recomputes the rest of step t from h_t and p_t,
 *           differentiates it, and stacks ds_t. */
static int vjp_recurrence(aj_emit *c, int node, const int *dy, int *dx) {
    aj_graph *g = c->g;
    aj_recur *r = g->node[node].rec;
    const int C = r->ncarry, S = r->nslice, U = r->nuse, K = r->nstack;
    aj_node n = g->node[node];
    /* the costly results that change from step to step: kept, not recomputed */
    int *kept = malloc(sizeof(int) * ((size_t)r->body->nnode + 1)), P = kept ? kept_values(r->body, C + S, kept) : -1;
    /* per carry: its history, its update's increment (invertible), its
     * adjoint dc and recovered value in the backward body; per use: du and
     * its index among du; per stacked output: dy's slice; per slice: its
     * index among the stacked ds; per kept product: its value in the forward
     * body, its history and its slice in the backward body; the backward
     * node's inputs and body results */
    const int NIN = 3 * C + S + K + 2 * U + P, NRES = 2 * C + U + S;
    int *work = malloc(sizeof(int) * (size_t)(4 * C + 2 * U + K + S + 2 * P + NIN + NRES + 1));
    int *hist = work, *inv = hist + C, *dc = inv + C, *rev = dc + C, *du = rev + C, *use_acc = du + U;
    int *dys = use_acc + U, *stacked_of = dys + K, *ins = stacked_of + S, *res = ins + NIN;
    int *kept_hist = res + NRES, *kept_leaf = kept_hist + P;
    char *in_needs = malloc((size_t)n.nin + 1), *bneeds = calloc((size_t)r->body->nval + 1, 1);
    if (P < 0 || !work || !in_needs || !bneeds || invertible_carries(r, inv))
        return free(kept), free(work), free(in_needs), free(bneeds),
               aj_error(c->d, n.line, n.col, "out of memory");
    for (int i = 0; i < n.nin; i++) in_needs[i] = c->needs[n.in[i]];
    body_needs(r, in_needs, bneeds);
    free(in_needs);

    /* 1. the forward recurrence also stacks each carry as step t starts,
     * but those it can recover backwards (invert=1) */
    aj_graph *fb = r->body;
    int nrev = 0;
    for (int k = 0; k < C; k++) {
        if (!aj_attr_int(&n, "invert")) inv[k] = -1;
        nrev += inv[k] >= 0;
    }
    aj_node *fn = &g->node[node];
    fn->out = realloc(fn->out, sizeof(int) * (size_t)(fn->nout + C));
    for (int k = 0; k < C; k++) {
        hist[k] = -1;
        if (inv[k] >= 0) continue;
        fb->result = realloc(fb->result, sizeof(int) * (size_t)(fb->nresult + 1));
        fb->result[fb->nresult++] = fb->leaf[k];
        aj_recur_add_stack(r, 0, 0, 0);
        int v = aj_graph_add_value(g, NULL, AJ_VAL_NODE, node, fn->nout);
        char nm[96];
        snprintf(nm, sizeof nm, "%s_hist", fb->val[fb->leaf[k]].name);
        aj_value_rename(g, v, nm);
        fn = &g->node[node];
        fn->out[fn->nout++] = v;
        hist[k] = v;
    }
    fn->out = realloc(fn->out, sizeof(int) * (size_t)(fn->nout + P));
    for (int p = 0; p < P; p++) {   /* and each kept value */
        const aj_value *kv = &fb->val[kept[p]];
        fb->result = realloc(fb->result, sizeof(int) * (size_t)(fb->nresult + 1));
        fb->result[fb->nresult++] = kept[p];
        aj_recur_add_stack(r, 0, kv->line, kv->col);
        int v = aj_graph_add_value(g, NULL, AJ_VAL_NODE, node, fn->nout);
        char nm[96];
        snprintf(nm, sizeof nm, "%s_kept", fb->val[kept[p]].name);
        aj_value_rename(g, v, nm);
        fn = &g->node[node];
        fn->out[fn->nout++] = v;
        kept_hist[p] = v;
    }
    if (aj_graph_infer_node(c->m, g, node, c->d)) return free(kept), free(work), free(bneeds), -1;

    /* 2. the backward body's leaves; br has room for the most of each */
    aj_graph *bb = aj_graph_new("body");
    aj_recur *br = aj_recur_new(2 * C + U, C + P + S + K, U, S);
    int nin = 0, nu = 0, map_size = fb->nval;
    int *map = malloc(sizeof(int) * (size_t)map_size);
    int rc = -1;
    for (int k = 0; k < C; k++) {   /* carries: dc */
        char nm[96];
        snprintf(nm, sizeof nm, "d_%s", fb->val[fb->leaf[k]].name);
        dc[k] = add_leaf(bb, nm, AJ_VAL_CARRY, k, em_ty(c, n.in[k]), fb->val[fb->leaf[k]].line);
        aj_type t = em_ty(c, n.in[k]);
        ins[nin++] = dy[k] >= 0 ? dy[k] : em_constant(c, 0, &t);
    }
    for (int u = 0; u < U; u++) {   /* carries: du, for uses that need adjoints */
        use_acc[u] = -1;
        if (!bneeds[fb->leaf[C + S + u]]) continue;
        char nm[96];
        snprintf(nm, sizeof nm, "d_%s", fb->val[fb->leaf[C + S + u]].name);
        aj_type t = em_ty(c, n.in[C + S + u]);
        use_acc[u] = nu;
        du[nu] = add_leaf(bb, nm, AJ_VAL_CARRY, C + nu, t, fb->val[fb->leaf[C + S + u]].line);
        ins[nin++] = em_constant(c, 0, &t);
        nu++;
    }
    int nr = 0;
    for (int k = 0; k < C; k++) {   /* carries: the recovered ones, from their final values */
        if (inv[k] < 0) continue;
        char nm[96];
        snprintf(nm, sizeof nm, "%s_after", fb->val[fb->leaf[k]].name);
        rev[k] = add_leaf(bb, nm, AJ_VAL_CARRY, C + nu + nr++, fb->val[fb->leaf[k]].type, fb->val[fb->leaf[k]].line);
        ins[nin++] = g->node[node].out[k];
    }
    int ns = 0;
    for (int k = 0; k < C; k++) {   /* slices: the kept carries */
        if (inv[k] >= 0) continue;
        map[fb->leaf[k]] = add_leaf(bb, fb->val[fb->leaf[k]].name, AJ_VAL_SLICE, ns, fb->val[fb->leaf[k]].type,
                                    fb->val[fb->leaf[k]].line);
        br->slice_axis[ns++] = 0;
        ins[nin++] = hist[k];
    }
    for (int p = 0; p < P; p++) {   /* slices: the kept products */
        char nm[96];
        snprintf(nm, sizeof nm, "%s_kept", fb->val[kept[p]].name);
        kept_leaf[p] = add_leaf(bb, nm, AJ_VAL_SLICE, ns, fb->val[kept[p]].type, fb->val[kept[p]].line);
        br->slice_axis[ns++] = 0;
        ins[nin++] = kept_hist[p];
    }
    for (int s = 0; s < S; s++) {   /* slices: the forward's own */
        map[fb->leaf[C + s]] = add_leaf(bb, fb->val[fb->leaf[C + s]].name, AJ_VAL_SLICE, ns,
                                        fb->val[fb->leaf[C + s]].type, fb->val[fb->leaf[C + s]].line);
        br->slice_axis[ns++] = r->slice_axis[s];
        ins[nin++] = n.in[C + s];
    }
    for (int j = 0; j < K; j++) {   /* slices: adjoints of the stacked outputs */
        dys[j] = -1;
        if (dy[C + j] < 0) continue;
        char nm[96];
        snprintf(nm, sizeof nm, "d_%s", fb->val[fb->result[C + j]].name);
        dys[j] = add_leaf(bb, nm, AJ_VAL_SLICE, ns, fb->val[fb->result[C + j]].type, r->res_line[C + j]);
        br->slice_axis[ns++] = r->stack_axis[j];
        ins[nin++] = dy[C + j];
    }
    for (int u = 0; u < U; u++) {   /* uses */
        map[fb->leaf[C + S + u]] = add_leaf(bb, fb->val[fb->leaf[C + S + u]].name, AJ_VAL_USE, u,
                                            fb->val[fb->leaf[C + S + u]].type, fb->val[fb->leaf[C + S + u]].line);
        ins[nin++] = n.in[C + S + u];
    }
    for (int i = 0; i < nin; i++)
        if (ins[i] < 0) goto out;
    bb->nleaf = nin;
    bb->leaf = malloc(sizeof(int) * (size_t)nin);
    for (int i = 0; i < nin; i++) bb->leaf[i] = i;   /* leaves were added first, in order */

    /* 3. recompute step t, then differentiate it. A recovered carry is
     * c_t = c_{t+1} - u_t from its own copy of u's nodes, which have no
     * "needs": backprop leaves the recovery alone, and simplify's CSE merges
     * the copy with the one the step differentiates. */
    aj_emit inner = {c->m, bb, c->d, NULL};
    if (nrev) {
        int *map2 = malloc(sizeof(int) * (size_t)map_size);
        char *done = calloc((size_t)fb->nnode + 1, 1);
        int bad = !map2 || !done;
        for (int i = 0; !bad && i < map_size; i++) map2[i] = map[i];
        for (int k = 0; k < C && !bad; k++) {
            if (inv[k] < 0) continue;
            bad = copy_cone(&inner, fb, inv[k], map2, done) ||
                  (map[fb->leaf[k]] = em_op2(&inner, AJ_OP_SUB, rev[k], map2[inv[k]])) < 0;
            em_lines_from(&inner, bb->nnode - 1, r->res_line[k], r->res_col[k]);   /* the carry's `next` */
        }
        free(map2), free(done);
        if (bad) goto out;
    }
    if (copy_nodes(&inner, fb, map)) goto out;
    int nfwd = bb->nnode, nval = bb->nval;
    int *adj = malloc(sizeof(int) * (size_t)nval);
    char *needs = calloc((size_t)nval, 1);
    for (int i = 0; i < nval; i++) adj[i] = -1;
    for (int i = 0; i < fb->nval; i++) needs[map[i]] = bneeds[i];   /* map covers every body value now */
    for (int k = 0; k < C + K; k++) {   /* seeds: dc for each next, dy_t for each stacked */
        int seed = k < C ? dc[k] : dys[k - C], v = map[fb->result[k]], first = bb->nnode;
        if (seed >= 0) adj[v] = adj[v] < 0 ? seed : em_op2(&inner, AJ_OP_ADD, adj[v], seed);
        em_lines_from(&inner, first, r->res_line[k], r->res_col[k]);
    }
    if (backprop(&inner, nfwd, adj, needs)) goto out2;
    /* the kept products stand in for their recomputation, which is left
     * dead (simplify prunes it: a matmul's VJP does not read its result) */
    int nsub = bb->nval, *sub = malloc(sizeof(int) * (size_t)nsub);
    if (!sub) goto out2;
    for (int v = 0; v < nsub; v++) sub[v] = v;
    for (int p = 0; p < P; p++) sub[map[kept[p]]] = kept_leaf[p];
    for (int i = 0; i < bb->nnode; i++)
        for (int k = 0; k < bb->node[i].nin; k++) bb->node[i].in[k] = sub[bb->node[i].in[k]];
    for (int v = 0; v < nval; v++)
        if (adj[v] >= 0) adj[v] = sub[adj[v]];
    for (int i = 0; i < fb->nval; i++) map[i] = sub[map[i]];
    free(sub);

    /* 4. results: next dc, next du, stacked ds */
    int nres = 0;   /* each result on the line of the forward statement it answers */
    for (int k = 0; k < C; k++) {
        int a = adj[map[fb->leaf[k]]];
        aj_type t = em_ty(c, n.in[k]);
        br->res_line[nres] = fb->val[fb->leaf[k]].line;
        res[nres++] = a >= 0 ? a : em_constant(&inner, 0, &t);
    }
    for (int u = 0; u < U; u++) {
        if (use_acc[u] < 0) continue;
        int a = adj[map[fb->leaf[C + S + u]]];
        br->res_line[nres] = fb->val[fb->leaf[C + S + u]].line;
        res[nres++] = a >= 0 ? em_op2(&inner, AJ_OP_ADD, du[use_acc[u]], a) : du[use_acc[u]];
    }
    for (int k = 0; k < C; k++)   /* next: c_t, recovered at this step */
        if (inv[k] >= 0) br->res_line[nres] = r->res_line[k], res[nres++] = map[fb->leaf[k]];
    int nstk = 0;
    for (int s = 0; s < S; s++) {
        stacked_of[s] = -1;
        if (!bneeds[fb->leaf[C + s]]) continue;
        int a = adj[map[fb->leaf[C + s]]];
        br->res_line[nres] = fb->val[fb->leaf[C + s]].line;
        res[nres++] = a >= 0 ? a : em_constant(&inner, 0, &fb->val[fb->leaf[C + s]].type);
        br->stack_axis[nstk] = r->slice_axis[s];
        stacked_of[s] = nstk++;
    }
    for (int i = 0; i < nres; i++)
        if (res[i] < 0) goto out2;
    em_lines_from(&inner, 0, n.line, n.col);   /* the rest: zeros, the uses' sums */
    bb->nresult = nres;
    bb->line = fb->line, bb->end_line = fb->end_line;
    bb->result = malloc(sizeof(int) * (size_t)nres);
    memcpy(bb->result, res, sizeof(int) * (size_t)nres);
    br->ncarry = C + nu + nrev, br->nslice = ns, br->nuse = U, br->nstack = nstk;
    br->body = bb;

    /* 5. the reverse recurrence in the outer graph */
    int id = aj_graph_add_node(g, AJ_OP_RECURRENCE, ins, nin, C + nu + nrev + nstk, NULL);
    aj_node *bn = &g->node[id];
    memcpy(bn->attr, n.attr, sizeof bn->attr);
    ((aj_attr *)aj_attr_get(bn, "reverse"))->i = !aj_attr_int(&n, "reverse");
    ((aj_attr *)aj_attr_get(bn, "invert"))->i = 0;
    bn->rec = br;
    bn->line = n.line, bn->col = n.col;
    bb = NULL, br = NULL;
    if (aj_graph_infer_node(c->m, g, id, c->d)) goto out2;
    const int *outs = g->node[id].out;
    for (int k = 0; k < C; k++) dx[k] = outs[k];
    for (int u = 0; u < U; u++)
        if (use_acc[u] >= 0) dx[C + S + u] = outs[C + use_acc[u]];
    for (int s = 0; s < S; s++)
        if (stacked_of[s] >= 0) dx[C + s] = outs[C + nu + nrev + stacked_of[s]];
    rc = 0;
out2:
    free(adj), free(needs);
out:
    free(map), free(bneeds), free(work), free(kept);
    aj_recur_free(br);
    aj_graph_free(bb);
    return rc;
}

/* ------------------------------------------------------------------ the sweep */

static const vjp_fn vjp[AJ_OP_COUNT] = {
    [AJ_OP_NEG] = vjp_neg, [AJ_OP_EXP] = vjp_exp, [AJ_OP_LOG] = vjp_log, [AJ_OP_TANH] = vjp_tanh,
    [AJ_OP_SIGMOID] = vjp_sigmoid, [AJ_OP_RELU] = vjp_relu, [AJ_OP_SOFTPLUS] = vjp_softplus,
    [AJ_OP_SQRT] = vjp_sqrt, [AJ_OP_SQUARE] = vjp_square, [AJ_OP_GELU] = vjp_gelu,
    [AJ_OP_SIN] = vjp_sin, [AJ_OP_COS] = vjp_cos,
    [AJ_OP_ADD] = vjp_add, [AJ_OP_SUB] = vjp_sub, [AJ_OP_MUL] = vjp_mul, [AJ_OP_DIV] = vjp_div,
    [AJ_OP_MAXIMUM] = vjp_maximum,
    [AJ_OP_SUM] = vjp_sum, [AJ_OP_MEAN] = vjp_mean, [AJ_OP_MAX] = vjp_max, [AJ_OP_LOGSUMEXP] = vjp_logsumexp,
    [AJ_OP_MATMUL] = vjp_matmul, [AJ_OP_SOFTMAX] = vjp_softmax, [AJ_OP_LOG_SOFTMAX] = vjp_log_softmax,
    [AJ_OP_RECURRENCE] = vjp_recurrence, [AJ_OP_ATTENTION] = vjp_attention,
    [AJ_OP_CONV2D] = vjp_conv2d, [AJ_OP_CONV1D] = vjp_conv1d,
    [AJ_OP_RESHAPE] = vjp_reshape, [AJ_OP_TRANSPOSE] = vjp_transpose, [AJ_OP_SLICE] = vjp_slice,
    [AJ_OP_CONCAT] = vjp_concat, [AJ_OP_BROADCAST] = vjp_broadcast, [AJ_OP_UNSQUEEZE] = vjp_unsqueeze,
    [AJ_OP_GATHER] = vjp_gather, [AJ_OP_SHIFT] = vjp_shift, [AJ_OP_PAD] = vjp_pad,
    [AJ_OP_SKEW] = vjp_skew, [AJ_OP_UNSKEW] = vjp_unskew, [AJ_OP_LAYER_NORM] = vjp_layer_norm,
    [AJ_OP_BERNOULLI_NLL] = vjp_bernoulli_nll, [AJ_OP_CATEGORICAL_NLL] = vjp_categorical_nll,
    [AJ_OP_GAUSSIAN_NLL] = vjp_gaussian_nll, [AJ_OP_MOG_NLL] = vjp_mog_nll,
    [AJ_OP_EXTERN] = vjp_extern,
};

int aj_has_gradient(aj_op op) {
    return (aj_op_info(op)->flags & (AJ_NODIFF | AJ_RAND)) || vjp[op] != NULL;
}

/* Nodes [0, nfwd) of c->g from last to first: each node whose results have
 * adjoints adds its VJP to the adjoints of the inputs that need them. */
static int backprop(aj_emit *c, int nfwd, int *adj, const char *needs) {
    c->needs = needs;
    int most = 1;   /* dy and dx have room for any node's results and inputs */
    for (int i = 0; i < nfwd; i++) {
        const aj_node *n = &c->g->node[i];
        if (n->nin > most) most = n->nin;
        if (n->nout > most) most = n->nout;
    }
    int *dy = malloc(sizeof(int) * 2 * (size_t)most), *dx = dy + most, rc = -1;
    if (!dy) return aj_error(c->d, 0, 0, "out of memory");
    for (int i = nfwd - 1; i >= 0; i--) {
        aj_node n = c->g->node[i];
        int any = 0, want = 0;
        for (int k = 0; k < n.nout; k++) any |= (dy[k] = adj[n.out[k]]) >= 0;
        for (int k = 0; k < n.nin; k++) want |= needs[n.in[k]];
        if (!any || !want || (aj_op_info(n.op)->flags & (AJ_NODIFF | AJ_RAND))) continue;
        if (!vjp[n.op]) {
            aj_error(c->d, n.line, n.col, "%s has no gradient rule yet", aj_op_info(n.op)->name);
            goto out;
        }
        for (int k = 0; k < n.nin; k++) dx[k] = -1;
        int first = c->g->nnode;
        if (vjp[n.op](c, i, dy, dx) || c->d->set) goto out;
        em_lines_from(c, first, n.line, n.col);
        for (int k = 0; k < n.nin; k++) {
            int v = c->g->node[i].in[k];
            if (dx[k] < 0 || !needs[v]) continue;
            adj[v] = adj[v] < 0 ? dx[k] : em_op2(c, AJ_OP_ADD, adj[v], dx[k]);
            if (adj[v] < 0) goto out;
        }
    }
    rc = 0;
out:
    free(dy);
    return rc;
}

aj_graph *aj_autodiff(aj_module *m, const char *fn_name, aj_diag *d) {
    aj_graph *src = aj_module_fn(m, fn_name);
    if (!src) return aj_error(d, 0, 0, "the model has no fn '%s'", fn_name), NULL;
    if (src->nresult < 1) return aj_error(d, src->line, 1, "fn '%s' has no result to differentiate", fn_name), NULL;
    char name[96];
    snprintf(name, sizeof name, "grad_%s", fn_name);
    if (aj_module_fn(m, name)) return aj_error(d, 0, 0, "the model already has a fn '%s'", name), NULL;
    aj_graph *g = aj_graph_clone(src);
    free(g->name);
    g->name = strdup(name);
    aj_emit c = {m, g, d, NULL};

    /* the loss: the mean NLL for a log-likelihood, else the mean result */
    int r0 = g->result[0];
    if (g->val[r0].type.dtype != AJ_F32) {
        aj_graph_free(g);
        return aj_error(d, src->line, 1, "fn '%s': its first result must be f32 to differentiate", fn_name), NULL;
    }
    int first = g->nnode;
    int loss = em_op1(&c, AJ_OP_MEAN, r0);
    if (!strcmp(fn_name, "loglik")) loss = em_op1(&c, AJ_OP_NEG, loss);
    if (loss < 0) return aj_graph_free(g), NULL;
    em_lines_from(&c, first, g->val[r0].line, 0);
    aj_value_rename(g, loss, "loss");

    int nfwd = g->nnode, nval = g->nval, rc = -1;
    int *adj = malloc(sizeof(int) * (size_t)nval);
    char *needs = calloc((size_t)nval, 1);
    for (int i = 0; i < nval; i++) {
        adj[i] = -1;
        needs[i] = g->val[i].kind == AJ_VAL_PARAM;
    }
    propagate_needs(g, needs);
    adj[loss] = em_scalar(&c, 1);
    if (backprop(&c, nfwd, adj, needs)) goto out;

    /* results: loss, then d_P for every parameter the fn uses, in module order */
    int *res = malloc(sizeof(int) * (size_t)(m->nparam + 1)), nres = 0;
    res[nres++] = loss;
    for (int p = 0; p < m->nparam; p++)
        for (int v = 0; v < nval; v++) {
            if (g->val[v].kind != AJ_VAL_PARAM || g->val[v].idx != p) continue;
            aj_type t = g->val[v].type;
            int a = adj[v] >= 0 ? adj[v] : em_constant(&c, 0, &t);
            if (a < 0) {
                free(res);
                goto out;
            }
            snprintf(name, sizeof name, "d_%s", m->param[p].name);
            if (g->val[a].kind == AJ_VAL_NODE && g->val[a].name[0] == '_') aj_value_rename(g, a, name);
            res[nres++] = a;
        }
    free(g->result);
    g->result = res, g->nresult = nres;
    int src_index = 0;
    while (m->fn[src_index] != src) src_index++;
    aj_module_add_fn(m, g, m->fn_arg_type[src_index]);
    rc = 0;
out:
    free(adj), free(needs);
    if (rc) {
        aj_graph_free(g);
        return NULL;
    }
    return g;
}
