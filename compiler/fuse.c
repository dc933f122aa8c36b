/* The fused engine's planner: fewer kernels, fewer buffers.
 *
 *   views       reshape, unsqueeze, transpose, broadcast and slice make no
 *               kernel: their result is a view (offset, strides) of their
 *               input's buffer, read in place by whoever consumes it;
 *   groups      an elementwise node whose only use is an elementwise node of
 *               the same shape (or a sum/mean/max) is computed inline in its
 *               consumer's loop; constants inline as literals. A group is a
 *               root and the producers folded into it: one loop, one store.
 *               A value with more uses (or a result) is computed in its first
 *               user's group too and stored there for the others (a side
 *               output): Adam's m', v' and w' in one pass;
 *   recurrences whose body lowers entirely become one kernel: the step loop
 *               with every body group inside, slices read as views at step t,
 *               carries updated in place (or in ping-pong buffers when a
 *               later read needs the old value), results written in place, a
 *               result nothing in the step reads computed by an earlier
 *               group over its shape (sibling fusion), every thread taking
 *               its rows of each group, with a barrier only where needed.
 * Everything else is planned as the naive engine does it (plan.c). */
#include "compiler/fuse.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    aj_planner *pl;
    const aj_graph *g;
    int level;               /* loop depth of the buffers it makes (memory plan) */
    int depth;               /* loops around its kernels (step indices, rng keys) */
    int *vbuf;               /* value -> buffer when materialised whole and dense */
    aj_view *vv;             /* value -> its view; .arg/.swap_arg are buffer ids */
    char *has;               /* vv[v] is set */
    char *inl;               /* computed inline by its consumer's group */
    char *side;              /* inl, and stored by that group for other users */
    char *stored;            /* a side value whose group is planned: read it */
    int *uses, *user;        /* uses of each value; the using node when there is one */
    char *is_result;
    aj_kspec *sub;           /* inside a fused recurrence: the sub-kernels so far */
    int nsub, capsub;
    char what[AJ_WHAT_LEN];
    int line, line_end;
} fctx;

static int oom(fctx *f) { return aj_error(f->pl->d, 0, 0, "out of memory while fusing %s", f->g->name); }

/* lowered by a fused kernel: a sum, mean or max over axes that are no block
 * is not (the planner gives it a kernel of its own) */
static int lowerable(const aj_graph *g, const aj_node *n) {
    if (n->nin > AJ_KS_MAX_IN || n->op == AJ_OP_RECURRENCE || !aj_codegen_lowers(n)) return 0;
    return !aj_op_group_reduce(n->op) || aj_codegen_reduce_block(n, &g->val[n->in[0]].type);
}

/* the root of a group: an elementwise node or a lowerable sum/mean/max */
static int groupable(const aj_graph *g, const aj_node *n) {
    return (aj_op_elementwise(n->op) || aj_op_group_reduce(n->op)) && lowerable(g, n);
}

/* v is its whole buffer, in order: nothing to copy */
static int dense_whole(const aj_view *v, int64_t numel) {
    int64_t n = 1;
    for (int a = 0; a < v->rank; a++) n *= v->shape[a];
    return aj_view_contiguous(v) && v->off == 0 && v->tlevel < 0 && v->swap_arg < 0 && n == numel;
}

/* ---------------------------------------------------------------- emitting specs */

/* Kernel arguments for the buffer ids in ks's views (and its subs'). */
static int bind_args(aj_kernel *k, aj_kspec *ks) {
    for (int i = 0; i < ks->nout; i++) {
        if ((ks->out[i].arg = aj_plan_arg(k, ks->out[i].arg)) < 0) return -1;
        if (ks->out[i].thread_slot && (ks->out[i].thread_arg = aj_plan_arg(k, ks->out[i].thread_arg)) < 0) return -1;
        if (ks->out[i].swap_arg >= 0 && (ks->out[i].swap_arg = aj_plan_arg(k, ks->out[i].swap_arg)) < 0) return -1;
    }
    for (int i = 0; i < ks->nin; i++) {
        if ((ks->in[i].arg = aj_plan_arg(k, ks->in[i].arg)) < 0) return -1;
        if (ks->in[i].swap_arg >= 0 && (ks->in[i].swap_arg = aj_plan_arg(k, ks->in[i].swap_arg)) < 0) return -1;
    }
    for (int s = 0; s < ks->nsub; s++)
        if (bind_args(k, &ks->sub[s])) return -1;
    return 0;
}

/* ks (views over buffer ids) as a kernel of its own, or as the next
 * sub-kernel of the recurrence being fused */
static int emit(fctx *f, aj_kspec ks) {
    if (f->sub) {
        if (f->nsub == f->capsub) {
            int nc = f->capsub ? 2 * f->capsub : 16;
            aj_kspec *p = realloc(f->sub, (size_t)nc * sizeof *p);
            if (!p) return oom(f);
            f->sub = p, f->capsub = nc;
        }
        ks.barrier_after = 1;
        snprintf(ks.what, sizeof ks.what, "%s", ks.kind == AJ_KS_COPY || ks.kind == AJ_KS_GROUP || ks.kind == AJ_KS_COMBINE ? f->what
                                               : aj_op_info(ks.g->node[ks.node].op)->name);
        f->sub[f->nsub++] = ks;
        return 0;
    }
    aj_kernel k = {.node = -1, .nout = ks.nout, .line = f->line, .line_end = f->line_end};
    snprintf(k.what, sizeof k.what, "%s", f->what);
    int bad = 0;
    for (int i = 0; i < ks.nout; i++) bad |= aj_plan_arg(&k, ks.out[i].arg) < 0;   /* outputs first (NaN check) */
    if (bad || bind_args(&k, &ks)) {
        free(k.arg);
        return oom(f);
    }
    return aj_plan_kernel(f->pl, &k, &ks, f->level) < 0 ? -1 : 0;
}

static aj_view whole(fctx *f, int b, const aj_type *t) { return aj_view_dense(b, t, &f->pl->m->bind); }

/* a fresh buffer for value v of f->g */
static int new_buffer(fctx *f, int v) {
    return aj_plan_buffer(f->pl, AJ_BUF_ARENA, 0, &f->g->val[v].type, f->level, f->g->val[v].name);
}

/* dst = value v (through its view), a copy kernel */
static int copy_to(fctx *f, int v, aj_view dst) {
    const aj_value *val = &f->g->val[v];
    aj_kspec ks = {.kind = AJ_KS_COPY, .m = f->pl->m, .node = -1, .depth = f->depth, .nin = 1, .nout = 1};
    ks.in[0] = f->vv[v];
    ks.out[0] = dst;
    snprintf(f->what, sizeof f->what, "copy %s", val->name);
    f->line = f->line_end = val->line;
    return emit(f, ks);
}

/* Value v materialised dense and whole in a buffer (a copy of its view when
 * it is not); the buffer id, or -1. */
static int materialise(fctx *f, int v) {
    if (f->has[v] && f->vbuf[v] >= 0 && dense_whole(&f->vv[v], aj_plan_numel(f->pl->m, &f->g->val[v].type)) &&
        f->vv[v].arg == f->vbuf[v])
        return f->vbuf[v];
    int b = f->vbuf[v] >= 0 ? f->vbuf[v] : new_buffer(f, v);
    if (b < 0 || copy_to(f, v, whole(f, b, &f->g->val[v].type))) return -1;
    f->vbuf[v] = b;
    f->vv[v] = whole(f, b, &f->g->val[v].type);
    return b;
}

/* Inside a fused recurrence body: where result value val[k] must end up
 * (a carry's next buffer for k < ncarry, else a stacked output at step t),
 * whether a group wrote it there (done), and the per-thread partials of a
 * split sum stacked there (partial, a buffer, or -1). */
typedef struct {
    int nres, ncarry;
    int64_t steps;
    int *val;                /* nres each */
    aj_view *target;
    char *done;
    int *partial;
} body_targets;

/* The one target of value v: its index in bt, or -1 (none, or several). */
static int target_of(const body_targets *bt, int v) {
    int at = -1, count = 0;
    for (int k = 0; bt && k < bt->nres; k++)
        if (bt->val[k] == v) at = k, count++;
    return count == 1 ? at : -1;
}

/* Where group value v can be written in place: its own target, or through
 * a chain of reshapes (each the only use of the one before) that of the
 * value they end in (*end), a contiguous target seen in v's shape. The
 * target's index in bt, or -1. */
static int in_place(const fctx *f, const body_targets *bt, int v, aj_view *out, int *end) {
    const aj_graph *g = f->g;
    int w = v;
    while (!f->is_result[w] && f->uses[w] == 1 && f->user[w] >= 0 && g->node[f->user[w]].op == AJ_OP_RESHAPE)
        w = g->node[f->user[w]].out[0];
    int k = target_of(bt, w);
    *end = w;
    if (k < 0) return -1;
    const aj_view *t = &bt->target[k];
    if (w == v) return *out = *t, k;
    if (!aj_view_contiguous(t)) return -1;
    *out = aj_view_dense(t->arg, &g->val[v].type, &f->pl->m->bind);
    out->swap_arg = t->swap_arg, out->off = t->off, out->tlevel = t->tlevel, out->tstride = t->tstride;
    return k;
}

/* ---------------------------------------------------------------- groups */

/* The view of value v, a view (reshape, slice, ...) of a planned value
 * that plan_nodes has not reached yet; 0, or -1 when there is none. */
static int view_ahead(fctx *f, int v) {
    int p = f->g->val[v].node;
    if (f->has[v]) return 0;
    if (p < 0 || !aj_op_view(f->g->node[p].op) || view_ahead(f, f->g->node[p].in[0]) ||
        aj_view_of_node(f->pl->m, &f->g->node[p], &f->vv[f->g->node[p].in[0]], &f->g->val[v].type, &f->vv[v]))
        return -1;
    f->has[v] = 1;
    return 0;
}

/* members of the group rooted at node i: producers folded in, post-order */
static int collect(fctx *f, int node, aj_kspec *ks) {
    const aj_node *n = &f->g->node[node];
    for (int j = 0; j < n->nin; j++) {
        int v = n->in[j];
        if (f->inl[v] && !f->stored[v]) {
            int p = f->g->val[v].node, seen = 0;
            for (int k = 0; k < ks->nnodes; k++) seen |= ks->nodes[k] == p;
            if (!seen && collect(f, p, ks)) return -1;
            continue;
        }
        int seen = 0;
        for (int k = 0; k < ks->nin; k++) seen |= ks->in_val[k] == v;
        if (seen) continue;
        if (ks->nin == AJ_KS_MAX_IN || view_ahead(f, v)) return -1;
        ks->in_val[ks->nin] = v;
        ks->in[ks->nin++] = f->vv[v];
    }
    if (ks->nnodes == AJ_KS_MAX_NODES) return -1;
    ks->nodes[ks->nnodes++] = node;
    return 0;
}

/* the inline members of node i's group (producers folded in), post-order */
static void members(const fctx *f, int node, int *list, int *n, char *seen) {
    const aj_node *nd = &f->g->node[node];
    for (int j = 0; j < nd->nin; j++) {
        int v = nd->in[j], p = f->g->val[v].node;
        if (f->inl[v] && !f->stored[v] && !seen[p]) members(f, p, list, n, seen);
    }
    seen[node] = 1;
    list[(*n)++] = node;
}

/* Whether node i's group fits one kernel spec with member value v (when
 * v >= 0) read as an input instead of computed inline. */
static int fits_without(fctx *f, int i, int v) {
    aj_kspec ks = {.nout = 1};
    char inl = 0, has = 0;
    aj_view vv = {0};
    if (v >= 0) inl = f->inl[v], has = f->has[v], vv = f->vv[v], f->inl[v] = 0, f->has[v] = 1;
    int ok = collect(f, i, &ks) == 0;
    if (v >= 0) f->inl[v] = inl, f->has[v] = has, f->vv[v] = vv;
    return ok;
}

static int plan_root(fctx *f, body_targets *bt, int i, int split_of);

/* A group takes at most AJ_KS_MAX_IN inputs and AJ_KS_MAX_NODES ops (one
 * kernel's loop; a chain of 20 residual adds reads 21 values). Until node
 * i's group fits, a member is split off as a group of its own, planned
 * first and stored: the first in post-order (a small subtree) whose
 * removal makes the rest fit, else i's last inline input, and again. */
static int fit_group(fctx *f, body_targets *bt, int i) {
    int *list = NULL;
    char *seen = NULL;
    int rc = 0;
    while (rc == 0 && !fits_without(f, i, -1)) {
        int n = 0, cut = -1;
        free(list), free(seen);
        list = malloc(((size_t)f->g->nnode + 1) * sizeof *list);
        seen = calloc((size_t)f->g->nnode + 1, 1);
        if (!list || !seen) {
            rc = oom(f);
            break;
        }
        members(f, i, list, &n, seen);
        for (int k = 0; k < n - 1 && cut < 0; k++)
            if (fits_without(f, i, f->g->node[list[k]].out[0])) cut = list[k];
        if (cut < 0) cut = list[n - 2];   /* n >= 2: a lone node fits (lowerable) */
        int v = f->g->node[cut].out[0];
        f->inl[v] = f->side[v] = 0;
        rc = plan_root(f, bt, cut, i);
    }
    free(list), free(seen);
    return rc;
}

/* the group rooted at node i writing to view `out`; a side output that
 * is a body result goes straight to its target in bt. split_of: the
 * group node i was split off (fit_group), or -1. */
static int plan_group(fctx *f, body_targets *bt, int i, aj_view out, int split_of) {
    if (fit_group(f, bt, i)) return -1;
    aj_kspec ks = {.kind = AJ_KS_GROUP, .m = f->pl->m, .g = f->g, .node = -1, .depth = f->depth, .nout = 1};
    ks.out[0] = out;
    for (int v = 0; v < f->g->nval; v++)   /* siblings it computes too (classify_hosted), while i's group fits */
        if (f->side[v] && f->user[v] == i && !f->uses[v]) {
            aj_kspec was = ks, with;
            if (collect(f, f->g->val[v].node, &ks) || (with = ks, collect(f, i, &with)))
                ks = was, f->inl[v] = f->side[v] = 0;   /* planned on its own */
        }
    if (collect(f, i, &ks)) return aj_error(f->pl->d, f->g->node[i].line, f->g->node[i].col, "fusion: group too large");
    int lo = f->g->node[i].line, hi = lo, len = 0;
    for (int k = 0; k < ks.nnodes; k++) {
        const aj_node *n = &f->g->node[ks.nodes[k]];
        int v = n->out[0];
        int ln = n->op == AJ_OP_CONSTANT ? 0 : n->line;   /* a literal may be shared (CSE) */
        if (ln && (ln < lo || !lo)) lo = ln;
        if (ln > hi) hi = ln;
        if (f->side[v]) {   /* stored for its other users (classify) */
            aj_view at;
            int end, t = in_place(f, bt, v, &at, &end);
            if (t >= 0 && end == v) {
                bt->done[t] = 1;
            } else {
                if (f->vbuf[v] < 0 && (f->vbuf[v] = new_buffer(f, v)) < 0) return -1;
                at = whole(f, f->vbuf[v], &f->g->val[v].type);
            }
            ks.out_val[ks.nout] = v;
            ks.out[ks.nout++] = at;
        }
        if (n->op != AJ_OP_CONSTANT && len < (int)sizeof f->what - 40)
            len += snprintf(f->what + len, sizeof f->what - (size_t)len, "%s%s = %s%s", len ? "; " : "",
                            f->g->val[v].name, aj_op_info(n->op)->name, f->side[v] ? " (kept)" : "");
    }
    if (split_of >= 0 && len < (int)sizeof f->what - 80)
        snprintf(f->what + len, sizeof f->what - (size_t)len, " (split off %s's group: at most %d inputs, %d ops)",
                 f->g->val[f->g->node[split_of].out[0]].name, AJ_KS_MAX_IN, AJ_KS_MAX_NODES);
    f->line = lo, f->line_end = hi;
    if (emit(f, ks)) return -1;
    for (int k = 1; k < ks.nout; k++) f->vv[ks.out_val[k]] = ks.out[k], f->has[ks.out_val[k]] = 1, f->stored[ks.out_val[k]] = 1;
    return 0;
}

/* ---------------------------------------------------------------- the graph */

/* The group that computes node c: the root its inline chain ends in. */
static int root_of(const fctx *f, int c) {
    while (f->g->node[c].nout == 1 && f->inl[f->g->node[c].out[0]]) c = f->user[f->g->node[c].out[0]];
    return c;
}

/* Side outputs: an elementwise value used more than once (or a result of
 * the fn, or of a recurrence body, used once) goes into the group of its
 * first user when that user could fold it and every other user comes
 * after the group's root, so the stored value is there when they run; a
 * reduction's group stores it at each element of the sum's input. At most
 * 3 per group (out[1..3]). NADE's gradient step computes the recovered
 * carry, stores it and h = sigmoid of it, and sums h V in one pass over
 * [B, H] where it took three. (In session 3 a store in a reduction's loop
 * measured 15% slower; with whole-vector loops and masked tails it is 2%
 * faster.) Last node first, so a chain through a later side value (user[]: its
 * first user) already leads to the root that will compute it. */
static void classify_side(fctx *f) {
    const aj_graph *g = f->g;
    int *nside = calloc((size_t)g->nnode + 1, sizeof *nside);
    if (!nside) return;   /* no side outputs: correct, one more pass */
    for (int i = g->nnode - 1; i >= 0; i--) {
        const aj_node *n = &g->node[i];
        int v = n->out[0];
        if (n->nout != 1 || f->inl[v] || n->op == AJ_OP_CONSTANT || !aj_op_elementwise(n->op) || !lowerable(g, n))
            continue;
        int res = f->is_result[v];
        /* a result: inside a recurrence, a body result (its group writes it in place) */
        if (res ? f->uses[v] < 1 || (!f->sub && f->vbuf[v] < 0) : f->uses[v] < 2) continue;
        int first = -1, last_before = 0;
        for (int c = i + 1; c < g->nnode && first < 0; c++)
            for (int j = 0; j < g->node[c].nin; j++)
                if (g->node[c].in[j] == v) first = c;
        if (first < 0) continue;
        const aj_node *u = &g->node[first];
        if (!groupable(g, u) || (aj_op_elementwise(u->op) && !aj_type_eq(&g->val[v].type, &g->val[u->out[0]].type)))
            continue;
        int r = root_of(f, first);
        for (int c = first + 1; c <= r; c++)
            for (int j = 0; j < g->node[c].nin; j++)
                if (g->node[c].in[j] == v) last_before = 1;
        if (last_before || nside[r] == 3) continue;
        nside[r]++;
        f->inl[v] = f->side[v] = 1, f->user[v] = first;
    }
    free(nside);
}

/* Whether everything the inline expression of node i reads (its inputs
 * not folded into it, through views) is computed by a group before node h. */
static int ready_before(const fctx *f, int i, int h) {
    const aj_node *n = &f->g->node[i];
    for (int j = 0; j < n->nin; j++) {
        int w = n->in[j], p = f->g->val[w].node;
        if (p < 0) continue;   /* a leaf: there all along */
        int folded = (f->inl[w] && !f->side[w]) || aj_op_view(f->g->node[p].op);
        if (folded ? !ready_before(f, p, h) : root_of(f, p) >= h) return 0;
    }
    return 1;
}

/* Sibling fusion, inside a recurrence: a body result that nothing in the
 * step reads (a carry's or a stack's new value, such as NADE's a + x_t W_t)
 * is computed by the latest earlier group that iterates over its shape and
 * runs after everything it reads, and stored there as a side output: one
 * pass over the step's [B, H] values instead of two. A group iterates over
 * its root's shape, a reduction's group over the sum's input. */
static void classify_hosted(fctx *f) {
    const aj_graph *g = f->g;
    int *nside = calloc((size_t)g->nnode + 1, sizeof *nside);
    if (!f->sub || !nside) {
        free(nside);
        return;
    }
    for (int v = 0; v < g->nval; v++)
        if (f->side[v]) nside[root_of(f, f->user[v])]++;
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        int v = n->out[0];
        if (n->nout != 1 || f->inl[v] || !f->is_result[v] || f->uses[v] || !aj_op_elementwise(n->op) ||
            n->op == AJ_OP_CONSTANT || !lowerable(g, n))
            continue;
        for (int h = i - 1; h >= 0; h--) {
            const aj_node *hn = &g->node[h];
            if (hn->nout != 1 || f->inl[hn->out[0]] || !groupable(g, hn)) continue;
            const aj_value *it = &g->val[aj_op_group_reduce(hn->op) ? hn->in[0] : hn->out[0]];
            if (!aj_type_eq(&it->type, &g->val[v].type) || nside[h] == 3 || !ready_before(f, i, h)) continue;
            nside[h]++;
            f->inl[v] = f->side[v] = 1, f->user[v] = h;
            break;
        }
    }
    free(nside);
}

/* Fill uses/user/is_result and decide which values are folded inline. */
static void classify(fctx *f, const int *extra_results, int nextra) {
    const aj_graph *g = f->g;
    for (int v = 0; v < g->nval; v++) f->uses[v] = 0, f->user[v] = -1;
    for (int i = 0; i < g->nnode; i++)
        for (int j = 0; j < g->node[i].nin; j++) {
            int v = g->node[i].in[j];
            f->user[v] = f->uses[v]++ ? -2 : i;
        }
    for (int k = 0; k < g->nresult; k++) f->is_result[g->result[k]] = 1;
    for (int k = 0; k < nextra; k++) f->is_result[extra_results[k]] = 1;
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        if (n->nout != 1 || f->is_result[n->out[0]]) continue;
        int v = n->out[0];
        if (n->op == AJ_OP_CONSTANT) {   /* a literal wherever every use is a group */
            int ok = f->uses[v] > 0;
            for (int c = 0; c < g->nnode && ok; c++)
                for (int j = 0; j < g->node[c].nin; j++)
                    if (g->node[c].in[j] == v && !groupable(g, &g->node[c])) ok = 0;
            f->inl[v] = (char)ok;
            continue;
        }
        if (!aj_op_elementwise(n->op) || !lowerable(g, n) || f->uses[v] != 1 || f->user[v] < 0) continue;
        const aj_node *c = &g->node[f->user[v]];
        if (!groupable(g, c)) continue;
        if (aj_op_elementwise(c->op) && !aj_type_eq(&g->val[v].type, &g->val[c->out[0]].type)) continue;
        f->inl[v] = 1;
    }
    classify_side(f);
    classify_hosted(f);
}

static int fctx_init(fctx *f, aj_planner *pl, const aj_graph *g, int level, int *vbuf) {
    memset(f, 0, sizeof *f);
    f->pl = pl, f->g = g, f->level = f->depth = level, f->vbuf = vbuf;
    size_t n = (size_t)g->nval + 1;
    f->vv = calloc(n, sizeof *f->vv);
    f->has = calloc(n, 1), f->inl = calloc(n, 1), f->is_result = calloc(n, 1);
    f->side = calloc(n, 1), f->stored = calloc(n, 1);
    f->uses = calloc(n, sizeof *f->uses), f->user = calloc(n, sizeof *f->user);
    if (!f->vv || !f->has || !f->inl || !f->is_result || !f->side || !f->stored || !f->uses || !f->user) return -1;
    for (int v = 0; v < g->nval; v++)
        if (vbuf[v] >= 0) f->vv[v] = whole(f, vbuf[v], &g->val[v].type), f->has[v] = 1;
    return 0;
}

static void fctx_free(fctx *f) {
    free(f->vv), free(f->has), free(f->inl), free(f->is_result), free(f->side), free(f->stored), free(f->uses),
        free(f->user);
}

/* Group node i, written to stacked target k through value `end`, is a sum
 * over the rows (axis 0) that nothing in the step reads, stacked on axis
 * 0: every thread can sum its own rows into its own partial (a split),
 * and the partials be added up every AJ_RING steps, instead of all
 * threads waiting for every row and reading each other's every step (a
 * barrier, and rows moved between cores' caches). */
static int splittable(const fctx *f, const body_targets *bt, int i, int k, int end) {
    const aj_node *n = &f->g->node[i];
    const aj_view *t = &bt->target[k];
    if (k < bt->ncarry || bt->steps < 1 || f->uses[end] || (n->op != AJ_OP_SUM && n->op != AJ_OP_MEAN) || t->off ||
        t->tstride * bt->steps != f->pl->P->buf[t->arg].numel)
        return 0;
    const aj_type *xt = &f->g->val[n->in[0]].type;
    const aj_attr *ax = aj_attr_get(n, "axis");
    return xt->rank >= 1 && xt->dtype == AJ_F32 && ax->n == 1 && (ax->ints[0] == 0 || ax->ints[0] == -xt->rank);
}

/* the partials of a split written through view *out: a ring of AJ_RING
 * steps' slabs per thread */
static int add_partials(fctx *f, body_targets *bt, int k, aj_view *out) {
    int64_t numel = (bt->steps < AJ_RING ? bt->steps : AJ_RING) * bt->target[k].tstride;
    char name[64];
    snprintf(name, sizeof name, "%.50s_part", f->pl->P->buf[out->arg].name);
    aj_type st = {.dtype = AJ_F32, .rank = 1, .dim = {aj_dim_const(numel)}};
    int pb = aj_plan_buffer(f->pl, AJ_BUF_THREAD, 0, &st, f->level, name);
    if (pb < 0) return -1;
    out->thread_arg = pb, out->thread_slot = numel;
    bt->partial[k] = pb;
    return 0;
}

static int plan_nodes(fctx *f, body_targets *bt);

/* ---------------------------------------------------------------- barriers */

/* Inside a fused recurrence every thread takes the same rows of each
 * sub-kernel whose rows are the first axis of everything it touches (the
 * batch, in a recurrence over examples). Between two such sub-kernels a
 * thread only reads rows it wrote itself, so they need no barrier; any
 * other pair that shares a buffer one of them writes does. */
typedef struct {
    int64_t rows;            /* -1: not row-aligned */
    int rank;                /* of the iteration whose axis 0 the rows are */
} row_info;

static row_info rows_of_sub(const aj_kspec *ks) {
    row_info ri = {-1, 0};
    if (ks->kind == AJ_KS_COPY || (ks->kind == AJ_KS_GROUP && !aj_op_group_reduce(ks->g->node[ks->nodes[ks->nnodes - 1]].op))) {
        if (ks->out[0].rank >= 1) ri.rows = ks->out[0].shape[0], ri.rank = ks->out[0].rank;
        return ri;
    }
    if (ks->kind != AJ_KS_GROUP) return ri;
    const aj_node *root = &ks->g->node[ks->nodes[ks->nnodes - 1]];
    const aj_type *xt = &ks->g->val[root->in[0]].type;
    if (ks->out[0].thread_slot) {   /* a split: its rows are the ones it sums */
        ri.rows = aj_dim_bind(xt->dim[0], &ks->m->bind).off, ri.rank = xt->rank;
        return ri;
    }
    const aj_attr *ax = aj_attr_get(root, "axis");
    if (ax->n == 0 || xt->rank < 2) return ri;
    /* sum over trailing axes only, axis 0 kept: rows are axis 0 */
    int lo = xt->rank;
    for (int j = 0; j < ax->n; j++) {
        int a = (int)(ax->ints[j] < 0 ? ax->ints[j] + xt->rank : ax->ints[j]);
        if (a == 0) return ri;
        if (a < lo) lo = a;
    }
    if (ax->n != xt->rank - lo) return ri;
    /* the kernel splits the product of the kept axes, not axis 0 alone: a
     * mean over the last axis of [B, T, E] hands out B*T rows, which are no
     * elementwise group's B rows (a missing barrier: wrong LayerNorms) */
    ri.rows = 1, ri.rank = xt->rank;
    for (int a = 0; a < lo; a++) ri.rows *= aj_dim_bind(xt->dim[a], &ks->m->bind).off;
    return ri;
}

/* view v is read/written row by row: its axis 0 is the iteration's (a
 * reduction's result keeps axis 0 at a lower rank) */
static int row_aligned(const aj_view *v, row_info ri, int reduced_out) {
    int av = reduced_out ? 0 : 0 - (ri.rank - v->rank);
    return ri.rows >= 0 && av == 0 && v->rank >= 1 && v->shape[0] == ri.rows && v->stride[0] != 0;
}

static int reduces(const aj_kspec *ks) {
    return ks->kind == AJ_KS_GROUP && aj_op_group_reduce(ks->g->node[ks->nodes[ks->nnodes - 1]].op);
}

static int same_rows(const aj_view *a, const aj_view *b) {
    return a->off == b->off && a->stride[0] == b->stride[0] && a->tlevel == b->tlevel && a->tstride == b->tstride;
}

/* Could views a and b touch the same buffer? In one step a ping-pong view
 * {A, B} is A or B by the step's parity, so only the same pair matches; a
 * sub-kernel of another step sees the pair the other way round. */
static int may_alias(const aj_view *a, const aj_view *b, int across) {
    if (!across) return a->arg == b->arg && a->swap_arg == b->swap_arg;
    return a->arg == b->arg || a->arg == b->swap_arg ||
           (a->swap_arg >= 0 && (a->swap_arg == b->arg || a->swap_arg == b->swap_arg));
}

/* May a and b run without a barrier between them: b later in the same step,
 * or (across) b in a later step? Across steps a view that moves with t is
 * another slab each step: safe to write (a stack), not to read. */
static int independent(const aj_kspec *a, const aj_kspec *b, int across) {
    row_info ra = rows_of_sub(a), rb = rows_of_sub(b);
    int na = a->nout + a->nin, nb = b->nout + b->nin;
    for (int i = 0; i < na; i++) {
        const aj_view *va = i < a->nout ? &a->out[i] : &a->in[i - a->nout];
        for (int j = 0; j < nb; j++) {
            const aj_view *vb = j < b->nout ? &b->out[j] : &b->in[j - b->nout];
            int writes = i < a->nout || j < b->nout;
            /* a split's partials: this thread's alone, read after the kernel */
            if (!writes || va->thread_slot || vb->thread_slot || !may_alias(va, vb, across)) continue;
            if (ra.rows < 0 || ra.rows != rb.rows || !row_aligned(va, ra, i < a->nout && reduces(a)) ||
                !row_aligned(vb, rb, j < b->nout && reduces(b)) || !same_rows(va, vb))
                return 0;
            if (across && (va->tlevel >= 0 || vb->tlevel >= 0) && !(i < a->nout && j < b->nout)) return 0;
        }
    }
    return 1;
}

/* A barrier after sub-kernel k only where a later one could see another
 * thread's rows. The step ends with one only when the next step's first
 * barrier-free run could see the rows of this step's last: a step that
 * touches every shared buffer by the same rows needs no barrier at all. */
static void place_barriers(aj_kspec *sub, int n) {
    int seg = 0, first_end = n - 1;
    for (int k = 0; k + 1 < n; k++) {
        int ok = 1;
        for (int j = seg; j <= k && ok; j++) ok = independent(&sub[j], &sub[k + 1], 0);
        sub[k].barrier_after = !ok;
        if (!ok) {
            if (first_end == n - 1) first_end = k;
            seg = k + 1;
        }
    }
    int ok = 1;
    for (int a = seg; a < n && ok; a++)
        for (int b = 0; b <= first_end && ok; b++) ok = independent(&sub[a], &sub[b], 1);
    sub[n - 1].barrier_after = !ok;
}

/* Carry `leaf`, whose new value is `res`, is updated in place (one buffer,
 * not a ping-pong pair) when res is computed by an elementwise group (as
 * its root or a side output) and every read of the old value comes in an
 * earlier sub-kernel or in that group at the same element: nothing reads
 * it once overwritten. The update then reads and writes the same cache
 * lines; into a partner it would fetch the partner's lines before writing
 * them, a third stream through L2 (and a second buffer). */
static int carry_in_place(const fctx *f, int leaf, int res) {
    const aj_graph *g = f->g;
    int pn = g->val[res].node;
    if (f->is_result[leaf] || pn < 0 || g->node[pn].nout != 1 || !aj_op_elementwise(g->node[pn].op) ||
        !lowerable(g, &g->node[pn]))
        return 0;
    int r = root_of(f, pn);
    for (int u = 0; u < g->nnode; u++) {
        const aj_node *un = &g->node[u];
        int reads = 0;
        for (int j = 0; j < un->nin; j++) reads |= un->in[j] == leaf;
        if (!reads) continue;
        int ru = root_of(f, u);
        if (ru > r || aj_op_view(un->op) || un->nout != 1) return 0;
        if (ru == r && (!aj_op_elementwise(un->op) || !aj_type_eq(&g->val[un->out[0]].type, &g->val[leaf].type)))
            return 0;
    }
    return 1;
}

/* Carry pair {A, B} in the step's sub-kernels as the one buffer A, kept
 * when that costs no barrier (a reader of other threads' rows before the
 * update, such as a matmul, would then need one): 1 done, 0 not (the
 * sub-kernels as they were), -1 out of memory. */
static int one_buffer(aj_kspec *sub, int n, int A, int B) {
    int before = 0, after = 0;
    for (int k = 0; k < n; k++) before += sub[k].barrier_after;
    aj_kspec *was = malloc((size_t)n * sizeof *was);
    if (!was) return -1;
    memcpy(was, sub, (size_t)n * sizeof *sub);
    for (int k = 0; k < n; k++)
        for (int i = 0; i < sub[k].nout + sub[k].nin; i++) {
            aj_view *v = i < sub[k].nout ? &sub[k].out[i] : &sub[k].in[i - sub[k].nout];
            if ((v->arg == A && v->swap_arg == B) || (v->arg == B && v->swap_arg == A)) v->arg = A, v->swap_arg = -1;
        }
    place_barriers(sub, n);
    for (int k = 0; k < n; k++) after += sub[k].barrier_after;
    if (after > before) memcpy(sub, was, (size_t)n * sizeof *sub);
    free(was);
    return after <= before;
}

/* A recurrence as one kernel. 1 when its body cannot be fused (the caller
 * plans it the naive way; *why says why, for the dump), 0 done, -1 error. */
static int fuse_recurrence(fctx *f, int i, const char **why) {
    const aj_graph *g = f->g;
    const aj_node *n = &g->node[i];
    const aj_recur *r = n->rec;
    const aj_graph *body = r->body;
    aj_planner *pl = f->pl;
    if (f->sub) return *why = "a recurrence inside a fused recurrence", 1;
    for (int j = 0; j < body->nnode; j++) {
        const aj_node *bn = &body->node[j];
        if (bn->op == AJ_OP_RECURRENCE) return *why = "a nested recurrence", 1;
        if (!lowerable(body, bn) && bn->op != AJ_OP_MASK) return *why = "an op without an LLVM lowering", 1;
    }
    for (int s = 0; s < r->nslice; s++)   /* a sequence read at step t: no outer step of its own */
        if (!f->has[n->in[r->ncarry + s]] || f->vv[n->in[r->ncarry + s]].tlevel >= 0)
            return *why = "a slice of a sequence an outer loop moves", 1;
    int L = f->level + 1;
    int *bbuf = malloc(((size_t)body->nval + 1) * sizeof *bbuf);
    if (!bbuf) return oom(f);
    for (int v = 0; v < body->nval; v++) bbuf[v] = -1;
    fctx b;
    int rc = -1, nres = r->ncarry + r->nstack;
    /* per carry: its buffer and the partner the next value goes to */
    int *carry = malloc(sizeof(int) * (2 * (size_t)r->ncarry + 1)), *partner = carry ? carry + r->ncarry : NULL;
    body_targets bt = {.val = malloc(sizeof(int) * ((size_t)nres + 1)), .target = calloc((size_t)nres + 1, sizeof(aj_view)),
                       .done = calloc((size_t)nres + 1, 1), .partial = malloc(sizeof(int) * ((size_t)nres + 1))};
    if (fctx_init(&b, pl, body, L, bbuf) || !carry || !bt.val || !bt.target || !bt.done || !bt.partial) goto out;
    b.level = f->level;   /* body buffers: all live through the kernel (threads share them) */
    /* what the body's results are, to classify its values by */
    for (int k = 0; k < nres; k++) bt.val[k] = body->result[k], bt.partial[k] = -1;
    bt.nres = nres;
    bt.ncarry = r->ncarry;
    bt.steps = aj_attr_dim_value(pl->m, n, "steps");
    b.sub = calloc(16, sizeof *b.sub);
    b.capsub = b.sub ? 16 : 0;
    if (!b.sub) goto out;
    classify(&b, bt.val, bt.nres);
    for (int c = 0; c < r->ncarry; c++) {
        const aj_value *cv = &body->val[body->leaf[c]];
        char name[64];
        snprintf(name, sizeof name, "%s_next", cv->name);
        int init = materialise(f, n->in[c]);
        int A = aj_plan_buffer(pl, AJ_BUF_ARENA, 0, &cv->type, f->level, cv->name);
        int B = aj_plan_buffer(pl, AJ_BUF_ARENA, 0, &cv->type, f->level, name);
        if (init < 0 || A < 0 || B < 0) goto out;
        carry[c] = A, partner[c] = B;
        b.vv[body->leaf[c]] = whole(f, A, &cv->type);
        b.vv[body->leaf[c]].swap_arg = B;
        b.has[body->leaf[c]] = 1;
        aj_instr cp = {.kind = AJ_I_COPY, .src = init, .dst = A, .level = f->level};
        if (aj_plan_instr(pl, cp) < 0) goto out;
        bt.target[c] = whole(f, B, &cv->type);
        bt.target[c].swap_arg = A;
    }
    for (int s = 0; s < r->nslice; s++) {
        int lv = body->leaf[r->ncarry + s], ax = r->slice_axis[s];
        b.vv[lv] = aj_view_step(f->vv[n->in[r->ncarry + s]], ax, L), b.has[lv] = 1;
    }
    for (int u = 0; u < r->nuse; u++) {
        int lv = body->leaf[r->ncarry + r->nslice + u], ov = n->in[r->ncarry + r->nslice + u];
        if (!f->has[ov] && materialise(f, ov) < 0) goto out;
        b.vv[lv] = f->vv[ov], b.has[lv] = 1;
    }
    for (int k = 0; k < r->nstack; k++) {
        int ov = n->out[r->ncarry + k];
        if (f->vbuf[ov] < 0 && (f->vbuf[ov] = new_buffer(f, ov)) < 0) goto out;
        f->vv[ov] = whole(f, f->vbuf[ov], &g->val[ov].type), f->has[ov] = 1;
        bt.target[r->ncarry + k] = aj_plan_step_view(pl, f->vbuf[ov], &g->val[ov].type, r->stack_axis[k], L);
    }
    if (plan_nodes(&b, &bt)) goto out;
    /* results not written in place by their group: copied at the end of the step */
    for (int k = 0; k < bt.nres; k++) {
        if (bt.done[k]) continue;
        const aj_value *val = &body->val[bt.val[k]];
        aj_kspec ks = {.kind = AJ_KS_COPY, .m = pl->m, .node = -1, .depth = L, .nin = 1, .nout = 1};
        ks.in[0] = b.vv[bt.val[k]], ks.out[0] = bt.target[k];
        snprintf(b.what, sizeof b.what, "%s %s", k < r->ncarry ? "next" : "stack", val->name);
        if (emit(&b, ks)) goto out;
    }
    place_barriers(b.sub, b.nsub);
    for (int c = 0; c < r->ncarry; c++) {
        int own = carry_in_place(&b, body->leaf[c], body->result[c]) ? one_buffer(b.sub, b.nsub, carry[c], partner[c]) : 0;
        if (own < 0) goto out;
        if (own) partner[c] = carry[c];
    }
    for (int s = 0; s < r->nstack; s++) {   /* the split sums: thread 0's result += the others' partials */
        int pb = bt.partial[r->ncarry + s], ov = n->out[r->ncarry + s];
        if (pb < 0) continue;
        aj_type pt = {.dtype = AJ_F32, .rank = 1, .dim = {aj_dim_const(pl->P->buf[pb].numel)}};
        aj_kspec cs = {.kind = AJ_KS_COMBINE, .m = pl->m, .node = -1, .depth = L, .nin = 1, .nout = 1,
                       .at_flush = 1, .steps = bt.steps, .reverse = (int)aj_attr_int(n, "reverse"), .level = L};
        cs.in[0] = whole(f, pb, &pt), cs.out[0] = whole(f, f->vbuf[ov], &g->val[ov].type);
        snprintf(b.what, sizeof b.what, "every %d steps: %s += the other threads' partial sums", AJ_RING, g->val[ov].name);
        if (emit(&b, cs)) goto out;
        b.sub[b.nsub - 1].barrier_after = 0;
    }
    aj_kspec rk = {.kind = AJ_KS_RECUR, .m = pl->m, .g = g, .node = -1, .depth = f->level, .sub = b.sub,
                   .nsub = b.nsub, .steps = aj_attr_dim_value(pl->m, n, "steps"),
                   .reverse = (int)aj_attr_int(n, "reverse"), .level = L};
    aj_kernel k = {.node = -1, .collective = 1, .line = n->line, .line_end = body->end_line};
    int nbar = 0;
    size_t cap = (size_t)b.nsub * (AJ_WHAT_LEN + 16) + 1, len = 0;
    if (!(k.body = malloc(cap))) goto out;
    k.body[0] = 0;
    for (int j = 0; j < b.nsub; j++) {
        nbar += b.sub[j].barrier_after;
        len += (size_t)snprintf(k.body + len, cap - len, "%s%s\n", b.sub[j].what, b.sub[j].barrier_after ? "  | barrier" : "");
    }
    snprintf(k.what, sizeof k.what, "recurrence: %d steps, %d fused kernels, %d barriers per step", (int)rk.steps, b.nsub,
             nbar);
    /* its outputs (NaN check): the stacked results */
    int bad = 0;
    for (int s = 0; s < r->nstack; s++) bad |= aj_plan_arg(&k, f->vbuf[n->out[r->ncarry + s]]) < 0;
    k.nout = k.nargs;
    if (bad || bind_args(&k, &rk)) {
        free(k.body), free(k.arg);
        goto out;
    }
    if (aj_plan_kernel(pl, &k, &rk, f->level) < 0) goto out;   /* it took k.body */
    for (int c = 0; c < r->ncarry; c++) {
        int ov = n->out[c];
        if (f->vbuf[ov] < 0 && (f->vbuf[ov] = new_buffer(f, ov)) < 0) goto out;
        f->vv[ov] = whole(f, f->vbuf[ov], &g->val[ov].type), f->has[ov] = 1;
        /* the last step wrote the partner when the step count is odd */
        aj_instr cp = {.kind = AJ_I_COPY, .src = rk.steps % 2 ? partner[c] : carry[c], .dst = f->vbuf[ov],
                       .level = f->level};
        if (aj_plan_instr(pl, cp) < 0) goto out;
    }
    rc = 0;
out:
    if (rc && !pl->d->set) oom(f);
    free(b.sub);
    fctx_free(&b);
    free(bbuf), free(carry);
    free(bt.val), free(bt.target), free(bt.done), free(bt.partial);
    return rc;
}

/* The group rooted at node i, stored where its value goes (split_of: as
 * plan_group's). */
static int plan_root(fctx *f, body_targets *bt, int i, int split_of) {
    int v = f->g->node[i].out[0];
    aj_view out;
    int end, k = in_place(f, bt, v, &out, &end);
    if (k >= 0) {   /* a body result: written in place, read there by the step's later users */
        bt->done[k] = 1;
        if (splittable(f, bt, i, k, end) && add_partials(f, bt, k, &out)) return -1;
    } else {
        if (f->vbuf[v] < 0 && (f->vbuf[v] = new_buffer(f, v)) < 0) return -1;
        out = whole(f, f->vbuf[v], &f->g->val[v].type);
    }
    if (plan_group(f, bt, i, out, split_of)) return -1;
    f->vv[v] = out, f->has[v] = 1;
    return 0;
}

/* Every node of f->g in order (bt: the body's in-place targets). */
static int plan_nodes(fctx *f, body_targets *bt) {
    const aj_graph *g = f->g;
    aj_planner *pl = f->pl;
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        int v = n->out[0];
        if (n->nout == 1 && f->inl[v]) continue;
        if (n->op == AJ_OP_MASK) {
            if (aj_plan_outputs(pl, g, i, f->vbuf, f->level)) return -1;
            f->vv[v] = whole(f, f->vbuf[v], &g->val[v].type), f->has[v] = 1;
            continue;
        }
        if (aj_op_view(n->op)) {   /* no kernel: a view of the input */
            aj_view y;
            if (aj_view_of_node(pl->m, n, &f->vv[n->in[0]], &g->val[v].type, &y) &&
                (materialise(f, n->in[0]) < 0 || aj_view_of_node(pl->m, n, &f->vv[n->in[0]], &g->val[v].type, &y)))
                return aj_error(pl->d, n->line, n->col, "fusion: no view for %s", aj_op_info(n->op)->name);
            f->vv[v] = y, f->has[v] = 1;
            continue;
        }
        if (n->op == AJ_OP_RECURRENCE) {
            const char *why = NULL;
            int rc = fuse_recurrence(f, i, &why);
            if (rc < 0) return -1;
            if (rc == 0) continue;
            /* the naive way: its inputs whole and dense */
            for (int j = 0; j < n->nin; j++)
                if (materialise(f, n->in[j]) < 0) return -1;
            if (aj_plan_outputs(pl, g, i, f->vbuf, f->level)) return -1;
            pl->outer[f->level] = g;
            int at = pl->P->nins;
            if (aj_plan_recurrence(pl, g, i, f->vbuf, f->level, aj_plan_naive_graph)) return -1;
            while (pl->P->ins[at].kind != AJ_I_LOOP) at++;   /* after the carries' copies */
            pl->P->ins[at].why = why;
            for (int o = 0; o < n->nout; o++) f->vv[n->out[o]] = whole(f, f->vbuf[n->out[o]], &g->val[n->out[o]].type), f->has[n->out[o]] = 1;
            continue;
        }
        if (n->nout == 1 && groupable(g, n)) {
            if (plan_root(f, bt, i, -1)) return -1;
            continue;
        }
        /* any other op: its own kernel, over dense inputs */
        if (f->sub) {
            aj_kspec ks = {.kind = AJ_KS_NODE, .m = pl->m, .g = g, .node = i, .depth = f->depth, .nin = n->nin,
                           .nout = n->nout};
            for (int j = 0; j < n->nin; j++) {   /* a product reads a carry where it is, this step's buffer */
                const aj_view *in = &f->vv[n->in[j]];
                if (!f->has[n->in[j]] || !aj_view_contiguous(in) || (in->swap_arg >= 0 && n->op != AJ_OP_MATMUL)) {
                    if (materialise(f, n->in[j]) < 0) return -1;
                }
                ks.in[j] = f->vv[n->in[j]];
            }
            for (int o = 0; o < n->nout; o++) {
                aj_view at;
                int end, k = n->op == AJ_OP_MATMUL ? in_place(f, bt, v, &at, &end) : -1;
                if (k >= 0 && end == v && at.swap_arg < 0 && aj_view_contiguous(&at)) {
                    bt->done[k] = 1;   /* a product stacked as it is (a kept one): written into its slab */
                } else {
                    if (f->vbuf[n->out[o]] < 0 && (f->vbuf[n->out[o]] = new_buffer(f, n->out[o])) < 0) return -1;
                    at = whole(f, f->vbuf[n->out[o]], &g->val[n->out[o]].type);
                }
                ks.out[o] = at;
                f->vv[n->out[o]] = ks.out[o], f->has[n->out[o]] = 1;
            }
            if (n->op == AJ_OP_MATMUL) {
                int64_t packed = aj_codegen_mm_packed(pl->cg, &ks);
                if (packed) {
                    aj_type st = {.dtype = AJ_F32, .rank = 1, .dim = {aj_dim_const(packed)}};
                    int sb = aj_plan_buffer(pl, AJ_BUF_ARENA, 0, &st, f->level, "packed");
                    if (sb < 0) return -1;
                    aj_kspec pk = ks, *sub = f->sub;
                    pk.kind = AJ_KS_MM_PACK, pk.nout = 1;
                    pk.out[0] = whole(f, sb, &st);
                    /* a weight the steps share is packed once, before the
                     * recurrence, not again every step */
                    int shared = g->val[n->in[1]].kind == AJ_VAL_USE;
                    if (shared) {
                        f->sub = NULL, pk.depth = f->level, f->line = f->line_end = n->line;
                        snprintf(f->what, sizeof f->what, "pack %s for every step", g->val[n->in[1]].name);
                    }
                    int bad = emit(f, pk);
                    f->sub = sub;
                    if (bad) return -1;
                    ks.in[2] = pk.out[0], ks.nin = 3;
                }
                ks.kind = AJ_KS_MM;
            }
            if (emit(f, ks)) return -1;
            continue;
        }
        for (int j = 0; j < n->nin; j++)
            if (materialise(f, n->in[j]) < 0) return -1;
        if (aj_plan_outputs(pl, g, i, f->vbuf, f->level) || aj_plan_node(pl, g, i, f->vbuf, f->level)) return -1;
        for (int o = 0; o < n->nout; o++) f->vv[n->out[o]] = whole(f, f->vbuf[n->out[o]], &g->val[n->out[o]].type), f->has[n->out[o]] = 1;
    }
    return 0;
}

static int fused_fn(aj_planner *pl, const aj_graph *g, int *vbuf, int level, const aj_node *rec, const int *outer_vbuf) {
    fctx f;
    int rc = fctx_init(&f, pl, g, level, vbuf) ? oom(&f) : (classify(&f, NULL, 0), plan_nodes(&f, NULL));
    /* results the graph left as views of other buffers: copied into the caller's */
    for (int k = 0; rc == 0 && k < g->nresult; k++) {
        int v = g->result[k];
        if (vbuf[v] >= 0 && f.has[v] && f.vv[v].arg != vbuf[v] && copy_to(&f, v, whole(&f, vbuf[v], &g->val[v].type)))
            rc = -1;
    }
    fctx_free(&f);
    return rc;
}

int aj_plan_fused(aj_planner *pl) { return aj_plan_fn(pl, fused_fn); }
