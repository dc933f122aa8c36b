/* The planner: one fn of a module -> a program of kernels over buffers
 * (compiler/program.h), then the memory plan that places the buffers in
 * one arena.
 *
 * Naive engine: every node is one kernel and every value is materialised.
 * A recurrence becomes a loop instruction over its body's kernels: each step
 * copies its slices out of their sequences, runs the body, copies the next
 * carries into their ping-pong buffers and the stacked values into place.
 * The fused engine (compiler/fuse.c) plans groups of nodes instead.
 *
 * Memory plan: a buffer lives from the first to the last instruction that
 * touches it; a buffer of an outer graph touched inside a loop lives for the
 * whole loop (the body runs again), while a body's own buffers only live
 * within one step. Buffers are placed first-fit at 64-byte aligned offsets
 * so that no two whose lives overlap share bytes. */
#include "compiler/plan.h"

#include "runtime/interp.h"

#include <stdlib.h>
#include <string.h>

#define GROW(arr, n, cap)                                                                  \
    do {                                                                                   \
        if ((n) == (cap)) {                                                                \
            int nc_ = (cap) ? 2 * (cap) : 16;                                              \
            void *p_ = realloc((arr), (size_t)nc_ * sizeof *(arr));                        \
            if (!p_) return -1;                                                            \
            (arr) = p_, (cap) = nc_;                                                       \
        }                                                                                  \
    } while (0)

int64_t aj_plan_dim(const aj_module *m, aj_dim d) { return aj_dim_bind(d, &m->bind).off; }

int64_t aj_plan_numel(const aj_module *m, const aj_type *t) {
    int64_t n = 1;
    for (int a = 0; a < t->rank; a++) n *= aj_plan_dim(m, t->dim[a]);
    return n;
}

int aj_plan_buffer(aj_planner *pl, aj_buf_kind kind, int idx, const aj_type *t, int level, const char *name) {
    aj_program *P = pl->P;
    GROW(P->buf, P->nbuf, P->capbuf);
    aj_buf *b = &P->buf[P->nbuf];
    memset(b, 0, sizeof *b);
    b->kind = kind, b->idx = idx, b->dtype = t->dtype, b->numel = aj_plan_numel(pl->m, t);
    b->swap = -1, b->level = level, b->first = b->last = -1;
    snprintf(b->name, sizeof b->name, "%s", name ? name : "tmp");
    return P->nbuf++;
}

int aj_plan_instr(aj_planner *pl, aj_instr in) {
    aj_program *P = pl->P;
    GROW(P->ins, P->nins, P->capins);
    P->ins[P->nins] = in;
    return P->nins++;
}

/* The argument slot of buffer b in kernel k (added when new); -1: out of memory. */
int aj_plan_arg(aj_kernel *k, int b) {
    for (int i = 0; i < k->nargs; i++)
        if (k->arg[i] == b) return i;
    GROW(k->arg, k->nargs, k->caparg);
    k->arg[k->nargs] = b;
    return k->nargs++;
}

static int grow_kernels(aj_program *P) {
    GROW(P->kern, P->nkern, P->capkern);
    return 0;
}

/* Takes k->body and k->arg, also on error. */
int aj_plan_kernel(aj_planner *pl, aj_kernel *k, aj_kspec *ks, int level) {
    aj_program *P = pl->P;
    if (grow_kernels(P)) {
        free(k->body), free(k->arg);
        return -1;
    }
    int id = P->nkern;
    if (ks) {
        char name[sizeof k->name];
        int node = ks->kind == AJ_KS_GROUP ? ks->nodes[ks->nnodes - 1] : ks->node;
        const char *what = ks->kind == AJ_KS_COPY ? "copy" : ks->kind == AJ_KS_MM_PACK ? "pack" :
                           ks->kind == AJ_KS_RECUR ? "recurrence" : ks->kind == AJ_KS_COMBINE ? "combine" :
                           aj_op_info(ks->g->node[node].op)->name;
        snprintf(name, sizeof name, "k%d_%s", id, what);
        memcpy(k->name, name, sizeof name);
        if (aj_codegen_kernel(pl->cg, ks, k->name, k->nargs, &k->rows, pl->d)) {
            free(k->body), free(k->arg);
            return -1;
        }
    }
    k->fn = NULL;
    P->kern[P->nkern++] = *k;
    aj_instr in = {.kind = AJ_I_KERNEL, .kernel = id, .level = level};
    return aj_plan_instr(pl, in) < 0 ? -1 : id;
}

/* The view of buffer b (argument `arg`) as a whole tensor of type t. */
static aj_view dense_view(aj_planner *pl, int arg, const aj_type *t) { return aj_view_dense(arg, t, &pl->m->bind); }

/* A view of a sequence with `axis` indexed by the step of the loop at depth
 * `level` (1-based): the axis drops out and moves the offset. */
aj_view aj_plan_step_view(aj_planner *pl, int arg, const aj_type *seq, int axis, int level) {
    return aj_view_step(dense_view(pl, arg, seq), axis, level);
}

/* ---------------------------------------------------------------- naive: one kernel per node */

static void describe(aj_kernel *k, const aj_graph *g, const aj_node *n) {
    k->line = k->line_end = n->line;
    snprintf(k->what, sizeof k->what, "%s = %s", g->val[n->out[0]].name, aj_op_info(n->op)->name);
}

/* A kernel for node i of g: a JIT kernel, a matmul pair, or a host kernel. */
int aj_plan_node(aj_planner *pl, const aj_graph *g, int i, int *vbuf, int level) {
    const aj_node *n = &g->node[i];
    aj_type in_t[AJ_KS_MAX_IN];
    for (int j = 0; j < n->nin && j < AJ_KS_MAX_IN; j++) in_t[j] = g->val[n->in[j]].type;
    aj_kernel k = {.node = -1};
    describe(&k, g, n);
    int oom = 0;   /* an argument that did not fit in memory */
    for (int o = 0; o < n->nout; o++) oom |= aj_plan_arg(&k, vbuf[n->out[o]]) < 0;
    k.nout = n->nout;
    if (n->nin > AJ_KS_MAX_IN || !aj_codegen_lowers(n)) {   /* the interpreter runs it */
        for (int j = 0; j < n->nin && j < 64; j++) oom |= (k.in_arg[j] = aj_plan_arg(&k, vbuf[n->in[j]])) < 0;
        if (oom) return free(k.arg), -1;
        k.g = g, k.node = i, k.rows = 1;
        snprintf(k.name, sizeof k.name, "k%d_%s_host", pl->P->nkern, aj_op_info(n->op)->name);
        return aj_plan_kernel(pl, &k, NULL, level) < 0 ? -1 : 0;
    }
    aj_kspec ks = {.kind = AJ_KS_NODE, .m = pl->m, .g = g, .node = i, .depth = level, .nin = n->nin, .nout = n->nout};
    for (int o = 0; o < n->nout; o++) ks.out[o] = dense_view(pl, o, &g->val[n->out[o]].type);
    for (int j = 0; j < n->nin; j++) {
        int a = aj_plan_arg(&k, vbuf[n->in[j]]);
        oom |= a < 0;
        ks.in[j] = dense_view(pl, a, &in_t[j]);
    }
    if (oom) return free(k.arg), -1;
    /* a view op's copy reads its input through the view it makes */
    aj_view y;
    if (aj_op_view(n->op) &&
        aj_view_of_node(pl->m, n, &ks.in[0], &g->val[n->out[0]].type, &y) == 0)
        ks.in[0] = y;
    if (n->op != AJ_OP_MATMUL) return aj_plan_kernel(pl, &k, &ks, level) < 0 ? -1 : 0;

    int64_t packed = aj_codegen_mm_packed(pl->cg, &ks);
    if (packed) {   /* pack B into scratch, then the product reads the panels */
        aj_type st = {.dtype = AJ_F32, .rank = 1, .dim = {aj_dim_const(packed)}};
        char name[64];
        snprintf(name, sizeof name, "%s_packed", g->val[n->in[1]].name);
        int sb = aj_plan_buffer(pl, AJ_BUF_ARENA, 0, &st, level, name);
        aj_kernel kp = {.node = -1, .nout = 1};
        describe(&kp, g, n);
        aj_kspec pk = ks;
        pk.kind = AJ_KS_MM_PACK;
        pk.out[0] = dense_view(pl, aj_plan_arg(&kp, sb), &st);
        pk.in[0] = ks.in[0], pk.in[0].arg = aj_plan_arg(&kp, k.arg[ks.in[0].arg]);
        pk.in[1] = ks.in[1], pk.in[1].arg = aj_plan_arg(&kp, k.arg[ks.in[1].arg]);
        int a = aj_plan_arg(&k, sb);
        if (sb < 0 || a < 0 || pk.out[0].arg < 0 || pk.in[0].arg < 0 || pk.in[1].arg < 0) return free(k.arg), free(kp.arg), -1;
        if (aj_plan_kernel(pl, &kp, &pk, level) < 0) return free(k.arg), -1;
        ks.in[2] = dense_view(pl, a, &st);
        ks.nin = 3;
    }
    ks.kind = AJ_KS_MM;
    return aj_plan_kernel(pl, &k, &ks, level) < 0 ? -1 : 0;
}

/* dst = src as views (a kernel): the stacking and slicing of recurrences */
int aj_plan_copy(aj_planner *pl, int src, aj_view sv, int dst, aj_view dv, int level, const char *what, int line) {
    aj_kernel k = {.node = -1, .nout = 1, .line = line, .line_end = line};
    snprintf(k.what, sizeof k.what, "%s", what);
    dv.arg = aj_plan_arg(&k, dst);
    sv.arg = aj_plan_arg(&k, src);
    if (dv.arg < 0 || sv.arg < 0) return free(k.arg), -1;
    aj_kspec ks = {.kind = AJ_KS_COPY, .m = pl->m, .node = -1, .depth = level, .nin = 1, .nout = 1};
    ks.in[0] = sv, ks.out[0] = dv;
    return aj_plan_kernel(pl, &k, &ks, level) < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- recurrences */

int aj_plan_recurrence(aj_planner *pl, const aj_graph *g, int i, int *vbuf, int level, aj_plan_graph_fn body_fn) {
    const aj_node *n = &g->node[i];
    const aj_recur *r = n->rec;
    const aj_graph *body = r->body;
    int L = level + 1;
    if (L > AJ_MAX_DEPTH) return aj_error(pl->d, n->line, n->col, "recurrences nest deeper than %d", AJ_MAX_DEPTH);
    int *bbuf = malloc(((size_t)body->nval + 1) * sizeof *bbuf), *carry = malloc(((size_t)r->ncarry + 1) * sizeof *carry);
    if (!bbuf || !carry) return free(bbuf), free(carry), aj_error(pl->d, n->line, n->col, "out of memory");
    for (int v = 0; v < body->nval; v++) bbuf[v] = -1;
    int rc = -1;

    /* carries: ping-pong pairs, filled from their initial values */
    for (int c = 0; c < r->ncarry; c++) {
        const aj_value *cv = &body->val[body->leaf[c]];
        char name[64];
        snprintf(name, sizeof name, "%s_next", cv->name);
        int a = aj_plan_buffer(pl, AJ_BUF_ARENA, 0, &cv->type, level, cv->name);
        int b = aj_plan_buffer(pl, AJ_BUF_ARENA, 0, &cv->type, level, name);
        if (a < 0 || b < 0) goto out;
        pl->P->buf[a].swap = b, pl->P->buf[b].swap = a;
        pl->P->buf[a].swap_level = pl->P->buf[b].swap_level = L;
        carry[c] = a;
        bbuf[body->leaf[c]] = a;
        aj_instr cp = {.kind = AJ_I_COPY, .src = vbuf[n->in[c]], .dst = a, .level = level};
        if (aj_plan_instr(pl, cp) < 0) goto out;
    }
    for (int u = 0; u < r->nuse; u++)
        bbuf[body->leaf[r->ncarry + r->nslice + u]] = vbuf[n->in[r->ncarry + r->nslice + u]];

    aj_instr lp = {.kind = AJ_I_LOOP, .steps = aj_attr_dim_value(pl->m, n, "steps"),
                   .reverse = (int)aj_attr_int(n, "reverse"), .level = L};
    int li = aj_plan_instr(pl, lp);
    if (li < 0) goto out;
    if (body_fn(pl, body, bbuf, L, n, vbuf)) goto out;

    /* next carries into the partner buffers, stacked values into place */
    for (int c = 0; c < r->ncarry; c++) {
        const aj_value *nv = &body->val[body->result[c]];
        char what[AJ_WHAT_LEN];
        snprintf(what, sizeof what, "next %s = %s", body->val[body->leaf[c]].name, nv->name);
        aj_view v = dense_view(pl, 0, &nv->type);
        if (aj_plan_copy(pl, bbuf[body->result[c]], v, pl->P->buf[carry[c]].swap, v, L, what, r->res_line[c])) goto out;
    }
    for (int k = 0; k < r->nstack; k++) {
        const aj_value *sv = &body->val[body->result[r->ncarry + k]];
        const aj_value *ov = &g->val[n->out[r->ncarry + k]];
        char what[AJ_WHAT_LEN];
        snprintf(what, sizeof what, "stack %s", sv->name);
        aj_view dv = aj_plan_step_view(pl, 0, &ov->type, r->stack_axis[k], L);
        if (aj_plan_copy(pl, bbuf[body->result[r->ncarry + k]], dense_view(pl, 0, &sv->type), vbuf[n->out[r->ncarry + k]],
                         dv, L, what, r->res_line[r->ncarry + k]))
            goto out;
    }
    pl->P->ins[li].nbody = pl->P->nins - li - 1;
    /* the final carries: the buffer the last step wrote */
    for (int c = 0; c < r->ncarry; c++) {
        int src = lp.steps % 2 ? pl->P->buf[carry[c]].swap : carry[c];
        aj_instr cp = {.kind = AJ_I_COPY, .src = src, .dst = vbuf[n->out[c]], .level = level};
        if (aj_plan_instr(pl, cp) < 0) goto out;
    }
    rc = 0;
out:
    free(bbuf), free(carry);
    return rc;
}

/* The slices of recurrence n at this step, each copied out of its sequence. */
int aj_plan_slices(aj_planner *pl, const aj_graph *body, int *bbuf, int L, const aj_node *n, const int *vbuf,
                   const aj_graph *outer) {
    const aj_recur *r = n->rec;
    for (int s = 0; s < r->nslice; s++) {
        int lv = body->leaf[r->ncarry + s];
        const aj_value *sv = &body->val[lv];
        int seq = vbuf[n->in[r->ncarry + s]];
        int b = aj_plan_buffer(pl, AJ_BUF_ARENA, 0, &sv->type, L, sv->name);
        if (b < 0) return -1;
        bbuf[lv] = b;
        char what[AJ_WHAT_LEN];
        snprintf(what, sizeof what, "slice %s", sv->name);
        aj_view src = aj_plan_step_view(pl, 0, &outer->val[n->in[r->ncarry + s]].type, r->slice_axis[s], L);
        if (aj_plan_copy(pl, seq, src, b, dense_view(pl, 0, &sv->type), L, what, sv->line)) return -1;
    }
    return 0;
}

/* Buffers for node outputs of g that are not placed yet (results are the
 * caller's tensors), and the mask constants. */
int aj_plan_outputs(aj_planner *pl, const aj_graph *g, int i, int *vbuf, int level) {
    const aj_node *n = &g->node[i];
    for (int o = 0; o < n->nout; o++) {
        int v = n->out[o];
        if (vbuf[v] >= 0) continue;
        if (n->op == AJ_OP_MASK) {   /* a compile-time constant */
            int b = aj_plan_buffer(pl, AJ_BUF_CONST, 0, &g->val[v].type, level, g->val[v].name);
            if (b < 0) return -1;
            aj_buf *bf = &pl->P->buf[b];
            if (!(bf->data = calloc((size_t)bf->numel + 1, sizeof(float)))) return -1;
            int64_t shape[AJ_MAX_RANK];
            for (int a = 0; a < g->val[v].type.rank; a++) shape[a] = aj_plan_dim(pl->m, g->val[v].type.dim[a]);
            aj_mask_fill((aj_mask_kind)aj_attr_get(n, "kind")->i, aj_attr_dim_value(pl->m, n, "n"), shape, bf->data);
            vbuf[v] = b;
            continue;
        }
        vbuf[v] = aj_plan_buffer(pl, AJ_BUF_ARENA, 0, &g->val[v].type, level, g->val[v].name);
        if (vbuf[v] < 0) return -1;
    }
    return 0;
}


/* Kernels for every node of g (a recurrence body when rec is its node). */
int aj_plan_naive_graph(aj_planner *pl, const aj_graph *g, int *vbuf, int level, const aj_node *rec, const int *outer_vbuf) {
    if (rec && aj_plan_slices(pl, g, vbuf, level, rec, outer_vbuf, pl->outer[level - 1])) return -1;
    for (int i = 0; i < g->nnode; i++) {
        if (aj_plan_outputs(pl, g, i, vbuf, level)) return -1;
        const aj_node *n = &g->node[i];
        if (n->op == AJ_OP_MASK) continue;
        int rc;
        if (n->op == AJ_OP_RECURRENCE) {
            pl->outer[level] = g;
            rc = aj_plan_recurrence(pl, g, i, vbuf, level, aj_plan_naive_graph);
        } else {
            rc = aj_plan_node(pl, g, i, vbuf, level);
        }
        if (rc) return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- the fn */

int aj_plan_fn(aj_planner *pl, aj_plan_graph_fn graph_fn) {
    aj_program *P = pl->P;
    const aj_graph *g = P->fn;
    int *vbuf = malloc(((size_t)g->nval + 1) * sizeof *vbuf);
    P->result_buf = calloc((size_t)g->nresult + 1, sizeof *P->result_buf);
    if (!vbuf || !P->result_buf) {
        free(vbuf);
        return aj_error(pl->d, 0, 0, "out of memory");
    }
    for (int v = 0; v < g->nval; v++) vbuf[v] = -1;
    int rc = -1;
    for (int l = 0; l < g->nleaf; l++) {
        const aj_value *v = &g->val[g->leaf[l]];
        if ((vbuf[g->leaf[l]] = aj_plan_buffer(pl, AJ_BUF_INPUT, v->idx, &v->type, 0, v->name)) < 0) goto out;
    }
    for (int v = 0; v < g->nval; v++)
        if (g->val[v].kind == AJ_VAL_PARAM &&
            (vbuf[v] = aj_plan_buffer(pl, AJ_BUF_PARAM, g->val[v].idx, &g->val[v].type, 0, g->val[v].name)) < 0)
            goto out;
    /* results computed by nodes are written straight into the caller's tensors */
    for (int k = 0; k < g->nresult; k++) {
        int v = g->result[k];
        if (vbuf[v] >= 0 || (g->val[v].kind == AJ_VAL_NODE && g->node[g->val[v].node].op == AJ_OP_MASK)) continue;
        if ((vbuf[v] = aj_plan_buffer(pl, AJ_BUF_RESULT, k, &g->val[v].type, 0, g->val[v].name)) < 0) goto out;
    }
    if (graph_fn(pl, g, vbuf, 0, NULL, NULL)) goto out;
    /* results that are leaves, constants or repeated: copied at the end */
    for (int k = 0; k < g->nresult; k++) {
        int b = vbuf[g->result[k]];
        if (P->buf[b].kind == AJ_BUF_RESULT && P->buf[b].idx == k) {
            P->result_buf[k] = b;
            continue;
        }
        int rb = aj_plan_buffer(pl, AJ_BUF_RESULT, k, &g->val[g->result[k]].type, 0, g->val[g->result[k]].name);
        aj_instr cp = {.kind = AJ_I_COPY, .src = b, .dst = rb};
        if (rb < 0 || aj_plan_instr(pl, cp) < 0) goto out;
        P->result_buf[k] = rb;
    }
    rc = 0;
out:
    free(vbuf);
    if (rc && !pl->d->set) aj_error(pl->d, 0, 0, "out of memory while planning %s", g->name);
    return rc;
}

int aj_plan_naive(aj_planner *pl) { return aj_plan_fn(pl, aj_plan_naive_graph); }

/* ---------------------------------------------------------------- memory plan */

static void touch(aj_buf *b, int p) {
    if (b->first < 0 || p < b->first) b->first = p;
    if (p > b->last) b->last = p;
}

void aj_plan_memory(aj_program *P) {
    for (int b = 0; b < P->nbuf; b++) P->buf[b].first = P->buf[b].last = -1;
    for (int p = 0; p < P->nins; p++) {
        const aj_instr *in = &P->ins[p];
        if (in->kind == AJ_I_KERNEL)
            for (int a = 0; a < P->kern[in->kernel].nargs; a++) touch(&P->buf[P->kern[in->kernel].arg[a]], p);
        if (in->kind == AJ_I_COPY) touch(&P->buf[in->src], p), touch(&P->buf[in->dst], p);
    }
    /* outer buffers used in a loop live for all of it; so do ping-pong pairs */
    for (int p = 0; p < P->nins; p++) {
        const aj_instr *lp = &P->ins[p];
        if (lp->kind != AJ_I_LOOP) continue;
        int end = p + lp->nbody;
        for (int b = 0; b < P->nbuf; b++) {
            aj_buf *bf = &P->buf[b];
            if (bf->level >= lp->level || bf->last < p || bf->first > end) continue;
            if (bf->first > p) bf->first = p;
            if (bf->last < end) bf->last = end;
        }
    }
    for (int b = 0; b < P->nbuf; b++) {
        aj_buf *bf = &P->buf[b];
        if (bf->swap >= 0) {
            aj_buf *o = &P->buf[bf->swap];
            int f = bf->first < o->first ? bf->first : o->first, l = bf->last > o->last ? bf->last : o->last;
            bf->first = o->first = f, bf->last = o->last = l;
        }
    }
    /* per-thread partials: live through the whole run, side by side */
    P->thread_bytes = 0;
    for (int b = 0; b < P->nbuf; b++)
        if (P->buf[b].kind == AJ_BUF_THREAD) P->buf[b].offset = P->thread_bytes, P->thread_bytes += (P->buf[b].numel * 4 + 63) / 64 * 64;
    /* first-fit by start, over the buffers already placed */
    int64_t peak = 0, total = 0;
    int *placed = malloc(((size_t)P->nbuf + 1) * sizeof *placed), np = 0;
    int *order = malloc(((size_t)P->nbuf + 1) * sizeof *order), no = 0;
    if (!placed || !order) {   /* no reuse at all: still correct */
        for (int b = 0; b < P->nbuf; b++)
            if (P->buf[b].kind == AJ_BUF_ARENA) P->buf[b].offset = total, total += (P->buf[b].numel * 4 + 63) / 64 * 64;
        P->arena_bytes = P->naive_bytes = total;
        free(placed), free(order);
        return;
    }
    for (int b = 0; b < P->nbuf; b++)
        if (P->buf[b].kind == AJ_BUF_ARENA) order[no++] = b;
    for (int i = 1; i < no; i++)   /* insertion sort by first use */
        for (int j = i; j > 0 && P->buf[order[j]].first < P->buf[order[j - 1]].first; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    for (int i = 0; i < no; i++) {
        aj_buf *bf = &P->buf[order[i]];
        int64_t size = (bf->numel * 4 + 63) / 64 * 64, off = 0;
        total += size;
        for (int again = 1; again;) {   /* bump past every live overlap until none is left */
            again = 0;
            for (int j = 0; j < np; j++) {
                const aj_buf *o = &P->buf[placed[j]];
                int64_t osize = (o->numel * 4 + 63) / 64 * 64;
                int live = !(o->last < bf->first || bf->last < o->first);
                if (live && off < o->offset + osize && o->offset < off + size) off = o->offset + osize, again = 1;
            }
        }
        bf->offset = off;
        placed[np++] = order[i];
        if (off + size > peak) peak = off + size;
    }
    P->arena_bytes = peak;
    P->naive_bytes = total;
    free(placed), free(order);
}
