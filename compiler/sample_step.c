/* The sampler arjit derives from fn loglik (docs/sampling.md).
 *
 * A model file says only what log p(x) = sum_t log p(x_t | x_<t) is. Its
 * conditionals are the logits L of the categorical_nll(L, x) or
 * bernoulli_nll(L, x) that scores x, and L at position t reads only x_<t.
 * Ancestral sampling needs L at one position at a time, so this pass
 * writes
 *
 *   fn sample_init(<loglik args>) -> state...
 *   fn sample_step(<loglik args>, pos : i32[1], state...) -> logits, state'...
 *
 * where logits are L at position pos ([B, V], or [B] for a bernoulli) and
 * the state carries what earlier positions computed. x is loglik's
 * argument named x (else its first); position axis p is its axis 1. Every value of loglik gets one of these forms in the step:
 *
 *   INV   it does not depend on x along p (parameters, and the values
 *         inside a recurrence over positions, which are at one position):
 *         computed as in loglik;
 *   FULL  it depends on x and is computed whole (x, and the cheap index ops
 *         on it: shift, cast, unsqueeze, one_hot);
 *   ROW   only its row at pos is computed: axis `pax` has size 1;
 *   BAD   it cannot be had one row at a time (the reason is kept).
 *
 * Row-wise ops (elementwise, x W, gather, layer_norm, softmax and
 * reductions over other axes, the shape ops) map ROW to ROW, taking row pos
 * of any other operand laid along p (wpe[t] in h + wpe). Causal attention
 * keeps its k and v in caches [B, T, E] (state), writes row pos each step
 * and masks the rows after pos with -1e30. A recurrence over the positions
 * (an RNN) is its body once: its carries become state. A recurrence over
 * something else (GPT's layers) is unrolled, so each layer has its caches.
 * Values that depend on no input (weights sliced per layer) are hoisted
 * into fn sample_hoist, run once; the step takes them as inputs.
 * When the logits come out BAD the step is the "full form": the whole
 * loglik graph each step, and row pos of L; info.why names the line that
 * forced it.
 */
#include "compiler/emit.h"
#include "compiler/simplify.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { K_INV, K_FULL, K_ROW, K_BAD };
enum { NO_LAG = 1 << 20, MAX_UNROLL = 64 };

/* The step form of one graph's values (loglik's, or a body's). */
typedef struct {
    int *map;          /* value id in the step graph */
    signed char *kind; /* K_* */
    signed char *pax;  /* FULL/ROW: the position axis */
    int *lag;          /* reads x at positions <= pos - lag; NO_LAG: none */
    char *isx;         /* it is x itself (or a cast, or x_t in a body) */
    int *why;          /* BAD: index into ctx.whys */
} vals;

typedef struct {
    aj_emit e;
    aj_step_info *info;
    int pos;           /* the step's pos : i32[1] */
    aj_dim T;          /* the number of positions (x's axis 1) */
    int64_t nT;
    /* the state: its step input, next value, and initial value (a loglik
     * value, or -1 for zeros of the input's type) */
    int nstate, cap;
    int *sin, *snext, *sinit;
    /* the conditional's logits in the step graph, their form, whether a
     * bernoulli's; or the reason they cannot be had (lbad) */
    int logits, lkind, lpax, lbin, lbad;
    char (*whys)[200];
    int nwhy;
} ctx;

static void *xrealloc_(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

static void vals_init(vals *V, int n) {
    V->map = xrealloc_(NULL, sizeof(int) * (size_t)n);
    V->kind = xrealloc_(NULL, (size_t)n);
    V->pax = xrealloc_(NULL, (size_t)n);
    V->lag = xrealloc_(NULL, sizeof(int) * (size_t)n);
    V->isx = xrealloc_(NULL, (size_t)n);
    V->why = xrealloc_(NULL, sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++)
        V->map[i] = -1, V->kind[i] = K_INV, V->pax[i] = -1, V->lag[i] = NO_LAG, V->isx[i] = 0, V->why[i] = -1;
}

static void vals_free(vals *V) { free(V->map), free(V->kind), free(V->pax), free(V->lag), free(V->isx), free(V->why); }

/* A new reason, "line N: ..." of node n. */
static int reason(ctx *c, const aj_node *n, const char *fmt, ...) {
    c->whys = xrealloc_(c->whys, sizeof *c->whys * (size_t)(c->nwhy + 1));
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->whys[c->nwhy], sizeof c->whys[0], "line %d: %s %s", n->line, aj_op_info(n->op)->name, msg);
    return c->nwhy++;
}

static int step_input(ctx *c, const char *name, const aj_type *t) {
    aj_graph *g = c->e.g;
    int v = aj_graph_add_value(g, NULL, AJ_VAL_INPUT, -1, g->nleaf);
    aj_value_rename(g, v, name);
    g->val[v].type = *t;
    g->leaf = xrealloc_(g->leaf, sizeof(int) * (size_t)(g->nleaf + 1));
    g->leaf[g->nleaf++] = v;
    return v;
}

static int add_state(ctx *c, const char *name, const aj_type *t, int init) {
    if (c->nstate == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 8;
        c->sin = xrealloc_(c->sin, sizeof(int) * (size_t)c->cap);
        c->snext = xrealloc_(c->snext, sizeof(int) * (size_t)c->cap);
        c->sinit = xrealloc_(c->sinit, sizeof(int) * (size_t)c->cap);
    }
    int k = c->nstate++;
    c->sin[k] = step_input(c, name, t);
    c->snext[k] = -1;
    c->sinit[k] = init;
    return k;
}

/* ------------------------------------------------------------ emitting */

static int transpose(ctx *c, int v, const int *perm, int rank) {
    int n = em_node_new(&c->e, AJ_OP_TRANSPOSE, &v, 1);
    if (n < 0) return -1;
    aj_attr *a = em_attr(&c->e, n, "perm");
    a->n = rank;
    for (int i = 0; i < rank; i++) a->ints[i] = perm[i];
    return em_node_done(&c->e, n);
}

/* Row pos of v along axis ax, the axis kept with size 1: ax moved to the
 * front, gather row pos, moved back (views, and one row copied). */
static int row_of(ctx *c, int v, int ax) {
    int r = em_ty(&c->e, v).rank, perm[AJ_MAX_RANK], back[AJ_MAX_RANK];
    for (int i = 0, k = 1; i < r; i++)
        if (i != ax) perm[k++] = i;
    perm[0] = ax;
    for (int i = 0; i < r; i++) back[perm[i]] = i;
    int f = ax ? transpose(c, v, perm, r) : v;
    int g = em_op2(&c->e, AJ_OP_GATHER, f, c->pos);
    return ax ? transpose(c, g, back, r) : g;
}

/* v without its (size 1) axis ax, or with a size 1 axis inserted there */
static int squeeze(ctx *c, int v, int ax) {
    aj_type t = em_ty(&c->e, v);
    for (int i = ax; i + 1 < t.rank; i++) t.dim[i] = t.dim[i + 1];
    t.rank--;
    return em_to_shape(&c->e, AJ_OP_RESHAPE, v, &t);
}
static int unsqueeze(ctx *c, int v, int ax) { return em_with_int(&c->e, AJ_OP_UNSQUEEZE, v, "axis", ax); }

/* Static slice t of v along ax, the axis removed. */
static int take(ctx *c, int v, int ax, int64_t t) {
    int n = em_node_new(&c->e, AJ_OP_SLICE, &v, 1);
    if (n < 0) return -1;
    em_attr(&c->e, n, "axis")->i = ax;
    em_attr(&c->e, n, "start")->dims[0] = aj_dim_const(t);
    em_attr(&c->e, n, "end")->dims[0] = aj_dim_const(t + 1);
    return squeeze(c, em_node_done(&c->e, n), ax);
}

/* A copy of node n of g on step-graph inputs `in`, typed; its results
 * are named as n's. Returns the step-graph node, or -1. */
static int copy_node(ctx *c, const aj_graph *g, const aj_node *n, const int *in, int one_at) {
    for (int i = 0; i < n->nin; i++)
        if (in[i] < 0) return -1;
    aj_graph *sg = c->e.g;
    int id = aj_graph_add_node(sg, n->op, in, n->nin, n->nout, NULL);
    aj_node *k = &sg->node[id];
    memcpy(k->attr, n->attr, sizeof k->attr);
    k->line = n->line, k->col = n->col;
    if (n->rec) k->rec = aj_recur_clone(n->rec);
    if (one_at >= 0) ((aj_attr *)aj_attr_get(k, "shape"))->dims[one_at] = aj_dim_const(1);   /* shape attr: the position axis is 1 now */
    for (int j = 0; j < n->nout; j++) {
        aj_value_rename(sg, k->out[j], g->val[n->out[j]].name);
        sg->val[k->out[j]].line = g->val[n->out[j]].line, sg->val[k->out[j]].col = g->val[n->out[j]].col;
    }
    return aj_graph_infer_node(c->e.m, sg, id, c->e.d) ? -1 : id;
}

static int norm_axis(int64_t a, int rank) { return (int)(a < 0 ? a + rank : a); }
static int dim_is(ctx *c, aj_dim d, int64_t v) {
    aj_dim b = aj_dim_bind(d, &c->e.m->bind);
    return aj_dim_is_const(b) && b.off == v;
}

/* ------------------------------------------------------------ the walk */

static void walk(ctx *c, const aj_graph *g, vals *V, int depth);

static void set_bad(vals *V, const aj_node *n, int why) {
    for (int j = 0; j < n->nout; j++) V->kind[n->out[j]] = K_BAD, V->why[n->out[j]] = why;
}

/* Input i of n as a ROW value at output axis `pax` of an op whose output
 * has rank `rank` (numpy alignment from the right): a ROW input as it is, a
 * FULL one cut to row pos, an INV one cut to row pos when it is laid along
 * the position axis there (wpe in h + wpe), else as it is. */
static int aligned_row(ctx *c, const aj_graph *g, vals *V, int v, int pax, int rank) {
    int r = g->val[v].type.rank, ax = pax - (rank - r);
    if (V->kind[v] == K_ROW) return V->map[v];
    if (V->kind[v] == K_FULL) return row_of(c, V->map[v], V->pax[v]);
    if (ax < 0 || dim_is(c, g->val[v].type.dim[ax], 1)) return V->map[v];
    return row_of(c, V->map[v], ax);
}

/* [1, T] rows: one_hot(pos) (is_mask 0), or row pos of the lower
 * triangular mask, 1 at positions <= pos (is_mask 1) */
static int pos_row(ctx *c, int is_mask) {
    aj_emit *e = &c->e;
    int n = em_node_new(e, is_mask ? AJ_OP_MASK : AJ_OP_ONE_HOT, &c->pos, !is_mask);
    if (n < 0) return -1;
    if (!is_mask) {
        em_attr(e, n, "n")->dims[0] = c->T;
        return em_node_done(e, n);
    }
    const aj_attr_spec *kind = &aj_op_info(AJ_OP_MASK)->attr[0];
    for (int w = 0; w < kind->nwords; w++)
        if (!strcmp(kind->words[w], "lower")) em_attr(e, n, "kind")->i = w;
    aj_attr *sh = em_attr(e, n, "shape");
    sh->n = 2, sh->dims[0] = sh->dims[1] = c->T;
    return em_op2(e, AJ_OP_GATHER, em_node_done(e, n), c->pos);
}

/* [B, T, E] <-> [B, heads, T, E/heads] */
static int split_heads(ctx *c, int v, int64_t heads) {
    aj_type t = em_ty(&c->e, v);
    aj_type s = {AJ_F32, 4, {t.dim[0], t.dim[1], aj_dim_const(heads), aj_dim_const(t.dim[2].off / heads)}};
    return transpose(c, em_to_shape(&c->e, AJ_OP_RESHAPE, v, &s), (int[]){0, 2, 1, 3}, 4);
}
static int join_heads(ctx *c, int v) {
    aj_type t = em_ty(&c->e, v);
    aj_type s = {AJ_F32, 3, {t.dim[0], t.dim[2], aj_dim_const(t.dim[1].off * t.dim[3].off)}};
    return em_to_shape(&c->e, AJ_OP_RESHAPE, transpose(c, v, (int[]){0, 2, 1, 3}, 4), &s);
}

/* Causal self-attention at row pos, q, k, v : [B, 1, E] rows: k and v join
 * caches [B, T, E] (state, zeros at first) at row pos, and q attends to the
 * rows <= pos:
 *   K' = K + (k - K) one_hot(pos)   (row pos was 0: it becomes k exactly)
 *   s = q K'^T / sqrt(E/heads) - 1e30 [j > pos];  out = softmax(s) V'  per head */
static int attention_row(ctx *c, const aj_node *n, const int *qkv) {
    aj_emit *e = &c->e;
    int64_t heads = aj_attr_int(n, "heads");
    aj_type ot = {AJ_F32, 3, {aj_dim_const(1), c->T, aj_dim_const(1)}};
    int oh = em_to_shape(e, AJ_OP_RESHAPE, pos_row(c, 0), &ot), kv[2];
    for (int i = 0; i < 2; i++) {
        aj_type ct = em_ty(e, qkv[1 + i]);
        ct.dim[1] = c->T;
        int s = add_state(c, i ? "v_cache" : "k_cache", &ct, -1);
        int cur = c->sin[s];
        c->snext[s] = em_op2(e, AJ_OP_ADD, cur, em_op2(e, AJ_OP_MUL, em_op2(e, AJ_OP_SUB, qkv[1 + i], cur), oh));
        kv[i] = split_heads(c, c->snext[s], heads);
    }
    int q = split_heads(c, qkv[0], heads);
    int mm = em_node_new(e, AJ_OP_MATMUL, (int[]){q, kv[0]}, 2);
    if (mm >= 0) em_attr(e, mm, "tb")->i = 1;
    double dh = (double)em_ty(e, qkv[0]).dim[2].off / (double)heads;
    int s = em_op2(e, AJ_OP_MUL, em_node_done(e, mm), em_scalar(e, 1 / sqrt(dh)));
    int bias = em_op2(e, AJ_OP_MUL, em_op2(e, AJ_OP_SUB, pos_row(c, 1), em_scalar(e, 1)), em_scalar(e, 1e30));
    int p = em_with_int(e, AJ_OP_SOFTMAX, em_op2(e, AJ_OP_ADD, s, bias), "axis", -1);
    return join_heads(c, em_op2(e, AJ_OP_MATMUL, p, kv[1]));
}

/* The outputs of n, computed from the step-graph node id, take form kind at
 * axis pax. */
static void set_outs(ctx *c, vals *V, const aj_node *n, int id, int kind, int pax, int lag, int isx) {
    for (int j = 0; j < n->nout; j++) {
        int v = n->out[j];
        V->map[v] = id < 0 ? -1 : c->e.g->node[id].out[j];
        V->kind[v] = (signed char)kind, V->pax[v] = (signed char)pax, V->lag[v] = lag, V->isx[v] = (char)isx;
    }
}

static int xdep(const vals *V, int v) { return V->kind[v] == K_FULL || V->kind[v] == K_ROW; }
static int as_row(ctx *c, const vals *V, int v) {
    return V->kind[v] == K_ROW ? V->map[v] : row_of(c, V->map[v], V->pax[v]);
}

/* Node n, some input of which depends on x along the positions: its FULL
 * or ROW form, or BAD with the reason. */
static void row_op(ctx *c, const aj_graph *g, vals *V, const aj_node *n, int lag) {
    const aj_op_def *def = aj_op_info(n->op);
    int nin = n->nin, R = g->val[n->out[0]].type.rank, first = -1, allfull = 1;
    for (int j = 0; j < nin; j++)
        if (xdep(V, n->in[j])) {
            if (first < 0) first = j;
            allfull &= V->kind[n->in[j]] == K_FULL;
        }
    int x0 = n->in[first], p0 = V->pax[x0], r0 = g->val[x0].type.rank;
    int *in = xrealloc_(NULL, sizeof(int) * (size_t)nin), pax = -1, one_at = -1, isx = 0, kind = K_ROW;
    for (int j = 0; j < nin; j++) in[j] = V->map[n->in[j]];
    int why = -1;
    int64_t ax = -1;
    if (def->attr[0].kind == AJ_ATTR_INT && !strcmp(def->attr[0].name, "axis")) ax = norm_axis(aj_attr_int(n, "axis"), r0);

    /* index ops on x stay whole: x, shift(x), cast(x) are B*T numbers */
    if (allfull && (n->op == AJ_OP_SHIFT || n->op == AJ_OP_CAST || n->op == AJ_OP_UNSQUEEZE || n->op == AJ_OP_ONE_HOT)) {
        kind = K_FULL, pax = p0, isx = n->op == AJ_OP_CAST && V->isx[x0];
        if (n->op == AJ_OP_SHIFT && ax == p0) lag += (int)aj_attr_int(n, "by");
        if (n->op == AJ_OP_UNSQUEEZE && norm_axis(aj_attr_int(n, "axis"), R) <= p0) pax = p0 + 1;
    } else if (def->flags & AJ_EW) {
        pax = p0 + (R - r0);
        for (int j = 0; j < nin && why < 0; j++) {
            int v = n->in[j];
            if (xdep(V, v) && V->pax[v] + (R - g->val[v].type.rank) != pax)
                why = reason(c, n, "combines values laid along the positions on different axes");
            else
                in[j] = aligned_row(c, g, V, v, pax, R);
        }
    } else
        switch (n->op) {
        case AJ_OP_SUM: case AJ_OP_MEAN: case AJ_OP_MAX: case AJ_OP_LOGSUMEXP: {
            const aj_attr *a = aj_attr_get(n, "axis");
            int before = 0, over = a->n == 0;
            for (int k = 0; k < a->n; k++) {
                int k_ax = norm_axis(a->ints[k], r0);
                over |= k_ax == p0, before += k_ax < p0;
            }
            if (over) why = reason(c, n, "reduces over the positions");
            pax = aj_attr_int(n, "keepdims") ? p0 : p0 - before;
            in[0] = as_row(c, V, x0);
            break;
        }
        case AJ_OP_MATMUL: {
            int b = n->in[1], rb = g->val[b].type.rank;
            if (first != 0 || xdep(V, b))
                why = reason(c, n, "multiplies by a matrix that depends on x (write attention with the attention op)");
            else if (aj_attr_int(n, "ta") || p0 == r0 - 1)
                why = reason(c, n, "contracts over the positions");
            else {
                pax = p0 + (R - r0);
                in[0] = as_row(c, V, x0);
                int axb = pax - (R - rb);
                if (axb >= 0 && axb < rb - 2) in[1] = aligned_row(c, g, V, b, pax, R);
            }
            break;
        }
        case AJ_OP_GATHER:
            if (first == 0) why = reason(c, n, "gathers from a table that depends on x");
            pax = p0, in[1] = as_row(c, V, x0);
            break;
        case AJ_OP_LAYER_NORM:
            if (first != 0 || xdep(V, n->in[1]) || xdep(V, n->in[2]) || p0 == r0 - 1)
                why = reason(c, n, "normalises over the positions");
            pax = p0, in[0] = as_row(c, V, x0);
            break;
        case AJ_OP_CATEGORICAL_NLL:
            pax = V->pax[n->in[1]] >= 0 && xdep(V, n->in[1]) ? V->pax[n->in[1]] : p0;
            if (pax >= g->val[n->in[0]].type.rank - 1) why = reason(c, n, "has the categories along the positions");
            for (int j = 0; j < 2 && why < 0; j++) in[j] = aligned_row(c, g, V, n->in[j], pax, j ? R : R + 1);
            break;
        case AJ_OP_SOFTMAX: case AJ_OP_LOG_SOFTMAX: case AJ_OP_SLICE: case AJ_OP_PAD: case AJ_OP_SHIFT: case AJ_OP_CONCAT:
            if (ax == p0) why = reason(c, n, "works along the positions");
            pax = p0;
            for (int j = 0; j < nin; j++) in[j] = aligned_row(c, g, V, n->in[j], pax, R);
            break;
        case AJ_OP_CAST: case AJ_OP_ONE_HOT:
            pax = p0, isx = n->op == AJ_OP_CAST && V->isx[x0], in[0] = as_row(c, V, x0);
            break;
        case AJ_OP_UNSQUEEZE:
            pax = norm_axis(aj_attr_int(n, "axis"), R) <= p0 ? p0 + 1 : p0, in[0] = as_row(c, V, x0);
            break;
        case AJ_OP_TRANSPOSE: {
            const aj_attr *a = aj_attr_get(n, "perm");
            for (int k = 0; k < a->n; k++)
                if (a->ints[k] == p0) pax = k;
            in[0] = as_row(c, V, x0);
            break;
        }
        case AJ_OP_BROADCAST:
            pax = one_at = p0 + (R - r0), in[0] = as_row(c, V, x0);
            break;
        case AJ_OP_RESHAPE: {
            const aj_type *ti = &g->val[x0].type, *to = &g->val[n->out[0]].type;
            for (int k = 0; k <= p0 && why < 0; k++)
                if (k >= to->rank || !aj_dim_eq(ti->dim[k], to->dim[k])) why = reason(c, n, "merges the positions with another axis");
            pax = one_at = p0, in[0] = as_row(c, V, x0);
            break;
        }
        case AJ_OP_ATTENTION: {
            int q = n->in[0], k = n->in[1], v = n->in[2], causal = (int)aj_attr_int(n, "causal");
            if (xdep(V, q) && xdep(V, k) && xdep(V, v) && causal && r0 == 3 && V->pax[q] == 1 && V->pax[k] == 1 &&
                V->pax[v] == 1) {
                int qkv[3] = {as_row(c, V, q), as_row(c, V, k), as_row(c, V, v)};
                set_outs(c, V, n, -1, K_ROW, 1, lag, 0);
                V->map[n->out[0]] = attention_row(c, n, qkv);
                free(in);
                return;
            }
            if (xdep(V, q) && !xdep(V, k) && !xdep(V, v) && !causal && V->pax[q] == r0 - 2)
                pax = r0 - 2, in[0] = as_row(c, V, q);
            else
                why = reason(c, n, "is not causal self-attention or cross-attention on a fixed memory");
            break;
        }
        default:
            why = reason(c, n, "has no row-by-row form");
        }
    if (why >= 0) set_bad(V, n, why);
    else set_outs(c, V, n, copy_node(c, g, n, in, one_at), kind, pax, lag, isx);
    free(in);
}

/* The first reason among n's inputs that they cannot be had, or -1. */
static int bad_input(const vals *V, const aj_node *n) {
    for (int j = 0; j < n->nin; j++)
        if (V->kind[n->in[j]] == K_BAD) return V->why[n->in[j]];
    return -1;
}

static void copy_val(vals *To, int t, const vals *From, int f) {
    To->map[t] = From->map[f], To->kind[t] = From->kind[f], To->pax[t] = From->pax[f];
    To->lag[t] = From->lag[f], To->isx[t] = From->isx[f], To->why[t] = From->why[f];
}

/* Whether recurrence n runs over the positions: T steps forward, slicing
 * a value laid along the positions along them; its carries start from
 * values that do not depend on x, it uses none that do, and what else it
 * slices has T rows. */
static int over_positions(ctx *c, const vals *V, const aj_node *n) {
    const aj_recur *R = n->rec;
    int along = 0;
    if (aj_attr_int(n, "reverse") || aj_attr_dim_value(c->e.m, n, "steps") != c->nT) return 0;
    for (int j = 0; j < n->nin; j++) {
        int v = n->in[j], s = j - R->ncarry;
        if (s < 0 || s >= R->nslice) {
            if (xdep(V, v)) return 0;
        } else if (xdep(V, v)) {
            if (V->pax[v] != R->slice_axis[s]) return 0;
            along = 1;
        } else if (c->e.g->val[V->map[v]].type.dim[R->slice_axis[s]].off != c->nT)
            return 0;
    }
    return along;
}

/* A recurrence over the positions (an RNN over x_1..x_T): its body once, at
 * pos; the carries are state, sample_init gives their initial values, and
 * stacked outputs are ROW. When a carry's next value reads x_pos itself
 * (NADE's a + x_i W_i), the host runs the step again once x_pos is drawn
 * (info->two_phase). */
static void position_recurrence(ctx *c, const aj_graph *g, vals *V, const aj_node *n) {
    const aj_recur *R = n->rec;
    const aj_graph *b = R->body;
    vals B;
    vals_init(&B, b->nval);
    int *st = xrealloc_(NULL, sizeof(int) * (size_t)(R->ncarry + 1));
    for (int k = 0; k < R->ncarry; k++) {
        int leaf = b->leaf[k];
        st[k] = add_state(c, b->val[leaf].name, &b->val[leaf].type, n->in[k]);
        B.map[leaf] = c->sin[st[k]];
    }
    for (int s = 0; s < R->nslice; s++) {
        int leaf = b->leaf[R->ncarry + s], seq = n->in[R->ncarry + s], ax = R->slice_axis[s];
        if (xdep(V, seq)) {
            B.map[leaf] = squeeze(c, as_row(c, V, seq), ax);
            B.lag[leaf] = V->lag[seq], B.isx[leaf] = V->isx[seq];
        } else
            B.map[leaf] = squeeze(c, row_of(c, V->map[seq], ax), ax);
    }
    for (int u = 0; u < R->nuse; u++) copy_val(&B, b->leaf[R->ncarry + R->nslice + u], V, n->in[R->ncarry + R->nslice + u]);
    walk(c, b, &B, 1);
    int why = -1;
    for (int k = 0; k < R->ncarry && why < 0; k++) {
        int r = b->result[k];
        if (B.kind[r] == K_BAD) why = B.why[r];
        c->snext[st[k]] = B.map[r];
        if (B.lag[r] <= 0) c->info->two_phase = 1;
    }
    int final = reason(c, n, "gives its final carry, which needs every position: only its stacked outputs are had one position at a time");
    for (int k = 0; k < n->nout; k++) {
        int v = n->out[k];
        V->kind[v] = K_BAD, V->why[v] = k < R->ncarry ? final : why;
        if (k < R->ncarry || why >= 0) continue;
        int r = b->result[k];
        copy_val(V, v, &B, r);
        if (B.kind[r] == K_BAD) continue;
        V->kind[v] = K_ROW, V->pax[v] = (signed char)R->stack_axis[k - R->ncarry];
        V->map[v] = unsqueeze(c, B.map[r], R->stack_axis[k - R->ncarry]);
    }
    free(st);
    vals_free(&B);
}

/* A recurrence over something else (GPT's layers), steps a constant:
 * unrolled, each step's body walked on its own, so values laid along the
 * positions stay rows and each layer's attention has its own caches. */
static void unrolled_recurrence(ctx *c, const aj_graph *g, vals *V, const aj_node *n, int depth) {
    const aj_recur *R = n->rec;
    const aj_graph *b = R->body;
    int64_t S = aj_attr_dim_value(c->e.m, n, "steps");
    int nres = R->ncarry + R->nstack;
    if (S < 1 || S > MAX_UNROLL || (R->nstack && S > 16)) {
        set_bad(V, n, reason(c, n, "runs %lld steps: only 1 to %d are unrolled (16 with stacked outputs)", (long long)S,
                             MAX_UNROLL));
        return;
    }
    /* cur: the carries between steps; res[k * S + t]: step t's results */
    vals cur, res;
    vals_init(&cur, R->ncarry + 1);
    vals_init(&res, (int)(nres * S) + 1);
    for (int k = 0; k < R->ncarry; k++) copy_val(&cur, k, V, n->in[k]);
    for (int64_t i = 0; i < S; i++) {
        int64_t t = aj_attr_int(n, "reverse") ? S - 1 - i : i;
        vals B;
        vals_init(&B, b->nval);
        for (int k = 0; k < R->ncarry; k++) copy_val(&B, b->leaf[k], &cur, k);
        for (int s = 0; s < R->nslice; s++) {
            int leaf = b->leaf[R->ncarry + s], seq = n->in[R->ncarry + s], ax = R->slice_axis[s];
            copy_val(&B, leaf, V, seq);
            B.isx[leaf] = 0;
            if (V->kind[seq] == K_BAD) continue;
            if (xdep(V, seq) && V->pax[seq] == ax) {
                B.kind[leaf] = K_BAD, B.why[leaf] = reason(c, n, "slices along the positions");
                continue;
            }
            B.map[leaf] = take(c, V->map[seq], ax, t);
            if (xdep(V, seq) && V->pax[seq] > ax) B.pax[leaf]--;
        }
        for (int u = 0; u < R->nuse; u++) copy_val(&B, b->leaf[R->ncarry + R->nslice + u], V, n->in[R->ncarry + R->nslice + u]);
        walk(c, b, &B, depth + 1);
        for (int k = 0; k < R->ncarry; k++) copy_val(&cur, k, &B, b->result[k]);
        for (int k = 0; k < R->nstack; k++) copy_val(&res, (int)(k * S + t), &B, b->result[R->ncarry + k]);
        vals_free(&B);
    }
    for (int k = 0; k < R->ncarry; k++) copy_val(V, n->out[k], &cur, k);
    /* stacked outputs: the steps' results joined along the stack axis */
    for (int k = 0; k < R->nstack; k++) {
        int v = n->out[R->ncarry + k], ax = R->stack_axis[k], parts[16], why = -1;
        copy_val(V, v, &res, (int)(k * S));
        for (int t = 0; t < S && why < 0; t++) {
            int r = (int)(k * S + t);
            if (res.kind[r] == K_BAD) why = res.why[r];
            else if (res.kind[r] != res.kind[k * S] || res.pax[r] != res.pax[k * S])
                why = reason(c, n, "stacks values of different forms");
            parts[t] = unsqueeze(c, res.map[r], ax);
        }
        if (why >= 0) {
            V->kind[v] = K_BAD, V->why[v] = why;
            continue;
        }
        int id = em_node_new(&c->e, AJ_OP_CONCAT, parts, (int)S);
        if (id >= 0) em_attr(&c->e, id, "axis")->i = ax;
        V->map[v] = em_node_done(&c->e, id);
        if (xdep(V, v) && V->pax[v] >= ax) V->pax[v]++;
    }
    vals_free(&cur);
    vals_free(&res);
}

static void walk(ctx *c, const aj_graph *g, vals *V, int depth) {
    for (int i = 0; i < g->nnode && !c->e.d->set; i++) {
        const aj_node *n = &g->node[i];
        int bad = bad_input(V, n), any = 0, lag = NO_LAG, first = c->e.g->nnode;
        for (int j = 0; j < n->nin; j++) {
            any |= xdep(V, n->in[j]);
            if (V->lag[n->in[j]] < lag) lag = V->lag[n->in[j]];
        }
        /* the conditional: L of categorical_nll(L, x) or bernoulli_nll(L, x) */
        if ((n->op == AJ_OP_CATEGORICAL_NLL || n->op == AJ_OP_BERNOULLI_NLL) && V->isx[n->in[1]] && c->logits < 0 &&
            c->lbad < 0) {
            int L = n->in[0];
            c->lbin = n->op == AJ_OP_BERNOULLI_NLL;
            if (V->kind[L] == K_BAD) c->lbad = V->why[L];
            else if (V->kind[L] == K_INV) c->logits = V->map[L], c->lkind = K_INV;
            else c->logits = as_row(c, V, L), c->lkind = K_ROW, c->lpax = V->pax[L];
        }
        if (bad >= 0) set_bad(V, n, bad);
        else if (!any) {
            int *in = xrealloc_(NULL, sizeof(int) * (size_t)(n->nin + 1));
            for (int j = 0; j < n->nin; j++) in[j] = V->map[n->in[j]];
            set_outs(c, V, n, copy_node(c, g, n, in, -1), K_INV, -1, lag, n->op == AJ_OP_CAST && V->isx[n->in[0]]);
            free(in);
        } else if (n->op != AJ_OP_RECURRENCE)
            row_op(c, g, V, n, lag);
        else if (depth == 0 && over_positions(c, V, n))
            position_recurrence(c, g, V, n);
        else
            unrolled_recurrence(c, g, V, n, depth);
        em_lines_from(&c->e, first, n->line, n->col);   /* the nodes made for n are named after its line */
    }
}

/* ------------------------------------------------------------ the fns */

/* x: loglik's argument named x, else its first (an encoder-decoder's
 * loglik(src, x) conditions on src) */
static int x_leaf(const aj_graph *ll) {
    for (int k = 0; k < ll->nleaf; k++)
        if (!strcmp(ll->val[ll->leaf[k]].name, "x")) return ll->leaf[k];
    return ll->leaf[0];
}

static char *dupstr(const char *s) {
    char *p = xrealloc_(NULL, strlen(s) + 1);
    return strcpy(p, s);
}

static void set_results(aj_graph *g, const int *v, int n) {
    g->result = xrealloc_(g->result, sizeof(int) * (size_t)(n + 1));
    memcpy(g->result, v, sizeof(int) * (size_t)n);
    g->nresult = n;
}

/* Loop-invariant hoisting: the values of the step that depend on no input
 * (x, pos, the state), computed from parameters alone, and read by ones that
 * do (GPT's layer slices of its weights, copied out each step otherwise),
 * become inputs of the step; fn sample_hoist computes them once. Returns
 * sample_hoist (NULL when there is nothing to hoist). */
static aj_graph *hoist(ctx *c) {
    aj_graph *g = c->e.g;
    int nval = g->nval;   /* the inputs added below come after */
    char *dep = calloc((size_t)nval + 1, 1), *inv = calloc((size_t)nval + 1, 1);
    int *to = NULL, nh = 0, *res = NULL;
    for (int k = 0; k < g->nleaf; k++) dep[g->leaf[k]] = 1;
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        int d = 0;
        for (int j = 0; j < n->nin; j++) d |= dep[n->in[j]];
        for (int j = 0; j < n->nout; j++) dep[n->out[j]] = (char)d;
        for (int j = 0; j < n->nin && d; j++) {
            const aj_value *v = &g->val[n->in[j]];
            const aj_node *p = v->kind == AJ_VAL_NODE ? &g->node[v->node] : NULL;
            /* constants and masks stay: the compiler folds them into kernels */
            if (!dep[n->in[j]] && p && p->nin && !(aj_op_info(p->op)->flags & AJ_RAND)) inv[n->in[j]] = 1;
        }
    }
    aj_graph *h = NULL;
    for (int v = 0; v < nval; v++) nh += inv[v];
    if (nh) {
        h = aj_graph_clone(g);
        free(h->name);
        h->name = dupstr("sample_hoist");
        to = xrealloc_(NULL, sizeof(int) * (size_t)nval);
        res = xrealloc_(NULL, sizeof(int) * (size_t)nh);
        nh = 0;
        for (int v = 0; v < nval; v++)
            if (inv[v]) {
                char name[96];
                aj_type t = g->val[v].type;   /* step_input moves g->val */
                snprintf(name, sizeof name, "inv_%s", g->val[v].name);
                res[nh++] = v;
                to[v] = step_input(c, name, &t);
            }
        for (int i = 0; i < g->nnode; i++) {
            aj_node *n = &g->node[i];
            for (int j = 0; j < n->nin && n->nout && dep[n->out[0]]; j++)
                if (inv[n->in[j]]) n->in[j] = to[n->in[j]];
        }
        set_results(h, res, nh);
    }
    c->info->ninv = nh;
    free(dep), free(inv), free(to), free(res);
    return h;
}

/* The incremental step into c->e.g, or 1 (info->why says why) when the
 * logits cannot be had one row at a time. */
static int incremental(ctx *c, const aj_graph *ll) {
    aj_graph *g = c->e.g;
    vals V;
    vals_init(&V, ll->nval);
    for (int k = 0; k < ll->nleaf; k++) {
        int v = ll->leaf[k];
        V.map[v] = step_input(c, ll->val[v].name, &ll->val[v].type);
    }
    c->pos = step_input(c, "pos", &(aj_type){AJ_I32, 1, {aj_dim_const(1)}});
    int x = x_leaf(ll);
    V.kind[x] = K_FULL, V.pax[x] = 1, V.lag[x] = 0, V.isx[x] = 1;
    for (int v = 0; v < ll->nval; v++)
        if (ll->val[v].kind == AJ_VAL_PARAM) {
            V.map[v] = aj_graph_add_value(g, ll->val[v].name, AJ_VAL_PARAM, -1, ll->val[v].idx);
            g->val[V.map[v]].type = ll->val[v].type;
        }
    walk(c, ll, &V, 0);
    vals_free(&V);
    if (c->e.d->set) return -1;
    if (c->logits < 0 && c->lbad < 0)
        return aj_error(c->e.d, ll->line, ll->col,
                        "fn loglik scores x with no categorical_nll or bernoulli_nll: no sampler can be derived");
    if (c->logits < 0) {
        snprintf(c->info->why, sizeof c->info->why, "%s", c->whys[c->lbad]);
        return 1;
    }
    int *res = xrealloc_(NULL, sizeof(int) * (size_t)(c->nstate + 1));
    res[0] = c->lkind == K_ROW ? squeeze(c, c->logits, c->lpax) : c->logits;
    memcpy(res + 1, c->snext, sizeof(int) * (size_t)c->nstate);
    set_results(g, res, c->nstate + 1);
    free(res);
    return c->e.d->set ? -1 : 0;
}

/* The full form into c->e.g: loglik whole, and row pos of the logits of
 * the categorical_nll / bernoulli_nll that scores x (or its cast). */
static int full_form(ctx *c, const aj_graph *ll) {
    aj_graph *g = c->e.g;
    int x = x_leaf(ll), L = -1;
    c->pos = step_input(c, "pos", &(aj_type){AJ_I32, 1, {aj_dim_const(1)}});
    for (int i = 0; i < g->nnode && L < 0; i++) {
        const aj_node *n = &g->node[i];
        int t = n->nin > 1 ? n->in[1] : -1;
        if (t >= 0 && g->val[t].kind == AJ_VAL_NODE && g->node[g->val[t].node].op == AJ_OP_CAST) t = g->node[g->val[t].node].in[0];
        if ((n->op == AJ_OP_CATEGORICAL_NLL || n->op == AJ_OP_BERNOULLI_NLL) && t == x)
            L = n->in[0], c->lbin = n->op == AJ_OP_BERNOULLI_NLL;
    }
    if (L < 0)
        return aj_error(c->e.d, ll->line, ll->col,
                        "fn loglik has no categorical_nll or bernoulli_nll of x outside a recurrence: "
                        "it has no full-form sampler");
    int r = squeeze(c, row_of(c, L, 1), 1);
    set_results(g, &r, 1);
    return c->e.d->set ? -1 : 0;
}

int aj_sample_step(aj_module *m, int full, aj_step_info *info, aj_diag *d) {
    memset(info, 0, sizeof *info);
    aj_graph *ll = aj_module_fn(m, "loglik");
    if (!ll) return aj_error(d, 0, 0, "the model has no fn loglik to derive a sampler from");
    if (aj_module_fn(m, "sample_step") || aj_module_fn(m, "sample_init"))
        return aj_error(d, 0, 0, "the model already has a fn sample_step or sample_init");
    int li = 0;
    while (m->fn[li] != ll) li++;
    const aj_type *xt = ll->nleaf ? &ll->val[x_leaf(ll)].type : NULL;
    if (!xt || xt->rank != 2)
        return aj_error(d, ll->line, ll->col, "fn loglik's x is not [B, T]: no sampler can be derived");
    ctx c = {.info = info, .logits = -1, .lbad = -1, .T = xt->dim[1]};
    c.e = (aj_emit){m, NULL, d, NULL};
    c.nT = aj_dim_bind(c.T, &m->bind).off;
    int rc = 1;
    if (!full) {
        c.e.g = aj_graph_new("sample_step");
        rc = incremental(&c, ll);
        if (rc) aj_graph_free(c.e.g);
    }
    if (rc > 0) {
        /* the full form: no state */
        c.nstate = 0, c.logits = -1;
        c.e.g = aj_graph_clone(ll);
        free(c.e.g->name);
        c.e.g->name = dupstr("sample_step");
        if ((rc = full_form(&c, ll))) aj_graph_free(c.e.g);
    }
    info->incremental = !full && !info->why[0];
    for (int k = 0; k < ll->nleaf; k++)
        if (ll->leaf[k] == x_leaf(ll)) info->x = k;
    info->binary = c.lbin;
    info->nstate = c.nstate;
    aj_graph *step = rc ? NULL : c.e.g, *init = NULL, *hoisted = NULL;
    if (step && info->incremental) hoisted = hoist(&c);
    if (step && c.nstate) {
        /* sample_init: loglik's values that start the state, zeros for the caches */
        init = aj_graph_clone(ll);
        free(init->name);
        init->name = dupstr("sample_init");
        c.e.g = init;
        int *res = xrealloc_(NULL, sizeof(int) * (size_t)c.nstate);
        for (int k = 0; k < c.nstate; k++) {
            aj_type t = step->val[c.sin[k]].type;
            res[k] = c.sinit[k] >= 0 ? c.sinit[k] : em_constant(&c.e, 0, &t);
        }
        set_results(init, res, c.nstate);
        free(res);
    }
    if (step && (aj_simplify(m, step, NULL, d) || (init && aj_simplify(m, init, NULL, d)) ||
                 (hoisted && aj_simplify(m, hoisted, NULL, d))))
        rc = -1;
    if (rc) {
        if (step) aj_graph_free(step);
        if (init) aj_graph_free(init);
        if (hoisted) aj_graph_free(hoisted);
    } else {
        aj_type *at = xrealloc_(NULL, sizeof(aj_type) * (size_t)(step->nleaf + 1));
        memcpy(at, m->fn_arg_type[li], sizeof(aj_type) * (size_t)ll->nleaf);
        for (int k = ll->nleaf; k < step->nleaf; k++) at[k] = step->val[step->leaf[k]].type;
        if (init) aj_module_add_fn(m, init, at);
        if (hoisted) aj_module_add_fn(m, hoisted, at);
        aj_module_add_fn(m, step, at);
        free(at);
    }
    free(c.sin), free(c.snext), free(c.sinit), free(c.whys);
    return rc ? -1 : 0;
}
