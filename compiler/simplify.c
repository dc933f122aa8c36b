/* Graph simplification, graph -> graph, in two sweeps over a fn and,
 * recursively, every recurrence body in it.
 *
 * 1. Rewrite, forward in node order. A node's inputs are first read through
 *    `rep` (value -> the earlier value that replaces it), then:
 *    - folding: an op whose inputs are all `constant` nodes becomes one
 *      constant node, in place. Only the cheap, exact cases: neg, exp, log,
 *      sqrt, square, add, sub, mul, div, maximum; sum, mean and max when the
 *      reduced count is a number (all its dims bound); reshape, broadcast,
 *      unsqueeze and transpose of a constant. The value is computed in
 *      double and rounded to f32, as the interpreter stores it; a value
 *      that is not finite is left alone (it could not be printed).
 *    - identities: reshape, broadcast or cast to the input's own type,
 *      transpose by the identity permutation, neg(neg(x)), and x*1, 1*x,
 *      x+0, 0+x, x-0, x/1 when x already has the result's type (so no
 *      broadcast is lost) give back an input.
 *    - CSE: a node equal to an earlier one (op, inputs, attributes) is
 *      replaced by it; never a sampling op (each draws anew) nor a
 *      recurrence.
 *    A body is rewritten where its recurrence node stands.
 * 2. Prune: backward liveness from the results, then a copy of the live
 *    nodes, in order, into a new graph that takes the old one's place
 *    (value ids renumbered; body leaves renumbered per kind). A recurrence
 *    keeps the stacked outputs used outside, the carries whose final value
 *    is used outside or whose state a live body value reads (a fixpoint,
 *    since a kept carry's next value makes more of the body live), and the
 *    slices and uses a live body value reads; the rest go with their
 *    outer inputs. Autodiff's reverse bodies, which recompute the whole
 *    forward step, lose what the gradient does not read.
 *
 * Fn results keep their names: when a result is replaced, the value that
 * replaces it takes its name (the two names are swapped; the replaced value
 * dies). If that value is a leaf, a parameter or already a result, the
 * rewrite is skipped instead. Body results have no names of their own
 * (`next h = v`, `stack v`), so they may become any body value. */
#include "compiler/simplify.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const aj_module *m;
    aj_simplify_stats st;
    int dropped;          /* nodes the prune left out, rewritten ones included */
} simp;

static void *xcalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "arjit: out of memory\n");   /* as ir/graph.c does */
        exit(1);
    }
    return p;
}

/* ---------------------------------------------------------------- rewrite */

/* The f32 value of v when a constant node defines it. */
static int const_value(const aj_graph *g, int v, double *x) {
    const aj_value *val = &g->val[v];
    if (val->kind != AJ_VAL_NODE || g->node[val->node].op != AJ_OP_CONSTANT) return 0;
    *x = (float)aj_attr_float(&g->node[val->node], "value");
    return 1;
}

/* How many elements reduction n sums into each result element, or -1 while
 * a reduced dim is symbolic. */
static int64_t reduce_count(const aj_node *n, const aj_type *x) {
    const aj_attr *axis = aj_attr_get(n, "axis");
    int64_t count = 1;
    for (int i = 0; i < x->rank; i++) {
        int reduced = axis->n == 0;
        for (int k = 0; k < axis->n; k++) reduced |= (axis->ints[k] < 0 ? axis->ints[k] + x->rank : axis->ints[k]) == i;
        if (!reduced) continue;
        if (!aj_dim_is_const(x->dim[i])) return -1;
        count *= x->dim[i].off;
    }
    return count;
}

/* Turn node n (all inputs constants) into constant(value=y, shape=the dims
 * of its result). Returns 1 if it did. */
static int fold(aj_graph *g, aj_node *n) {
    const aj_type *t = &g->val[n->out[0]].type;
    double x[2] = {0, 0}, y;
    if (n->nin < 1 || n->nin > 2 || t->dtype != AJ_F32) return 0;
    for (int k = 0; k < n->nin; k++)
        if (!const_value(g, n->in[k], &x[k])) return 0;
    switch (n->op) {
    case AJ_OP_NEG: y = -x[0]; break;
    case AJ_OP_EXP: y = exp(x[0]); break;
    case AJ_OP_LOG: y = log(x[0]); break;
    case AJ_OP_SQRT: y = sqrt(x[0]); break;
    case AJ_OP_SQUARE: y = x[0] * x[0]; break;
    case AJ_OP_ADD: y = x[0] + x[1]; break;
    case AJ_OP_SUB: y = x[0] - x[1]; break;
    case AJ_OP_MUL: y = x[0] * x[1]; break;
    case AJ_OP_DIV: y = x[0] / x[1]; break;
    case AJ_OP_MAXIMUM: y = x[0] > x[1] ? x[0] : x[1]; break;
    case AJ_OP_SUM: case AJ_OP_MEAN: case AJ_OP_MAX: {
        int64_t count = reduce_count(n, &g->val[n->in[0]].type);
        if (count <= 0) return 0;   /* unknown, or empty (mean NaN, max -inf) */
        y = n->op == AJ_OP_SUM ? x[0] * (double)count : x[0];
        break;
    }
    default:   /* a view of a constant fill is that fill */
        if (!(aj_op_info(n->op)->flags & AJ_VIEW)) return 0;
        y = x[0];
    }
    y = (float)y;
    if (!isfinite(y)) return 0;
    memset(n->attr, 0, sizeof n->attr);
    n->op = AJ_OP_CONSTANT;
    n->nin = 0;
    aj_node_set_defaults(n);
    ((aj_attr *)aj_attr_get(n, "value"))->f = y;
    aj_attr *shape = (aj_attr *)aj_attr_get(n, "shape");
    shape->n = t->rank;
    memcpy(shape->dims, t->dim, sizeof(aj_dim) * (size_t)t->rank);
    return 1;
}

/* Input k of binary node n when the other input is the constant c and
 * input k already has the result's type; else -1. */
static int keep_input(const aj_graph *g, const aj_node *n, int k, double c) {
    double x;
    if (!const_value(g, n->in[1 - k], &x) || x != c) return -1;
    return aj_type_eq(&g->val[n->in[k]].type, &g->val[n->out[0]].type) ? n->in[k] : -1;
}

/* The same for a commutative op: c on either side. */
static int keep_either(const aj_graph *g, const aj_node *n, double c) {
    int r = keep_input(g, n, 0, c);
    return r >= 0 ? r : keep_input(g, n, 1, c);
}

/* The value node n merely passes on, or -1. */
static int identity_of(const aj_graph *g, const aj_node *n) {
    if (n->nin == 0) return -1;
    int x = n->in[0];
    switch (n->op) {
    case AJ_OP_RESHAPE: case AJ_OP_BROADCAST: case AJ_OP_CAST:
        return aj_type_eq(&g->val[x].type, &g->val[n->out[0]].type) ? x : -1;
    case AJ_OP_TRANSPOSE: {
        const aj_attr *perm = aj_attr_get(n, "perm");
        for (int i = 0; i < perm->n; i++)
            if ((perm->ints[i] < 0 ? perm->ints[i] + perm->n : perm->ints[i]) != i) return -1;
        return x;
    }
    case AJ_OP_NEG: {
        const aj_value *v = &g->val[x];
        return v->kind == AJ_VAL_NODE && g->node[v->node].op == AJ_OP_NEG ? g->node[v->node].in[0] : -1;
    }
    case AJ_OP_ADD: return keep_either(g, n, 0);
    case AJ_OP_MUL: return keep_either(g, n, 1);
    case AJ_OP_SUB: return keep_input(g, n, 0, 0);
    case AJ_OP_DIV: return keep_input(g, n, 0, 1);
    default: return -1;
    }
}

/* Same attributes, dims compared under the binding (a folded constant's
 * shape holds bound dims, a parsed one's the names). */
static int same_node(const aj_module *m, const aj_node *a, const aj_node *b) {
    if (a->op != b->op || a->nin != b->nin || a->nout != b->nout) return 0;
    for (int k = 0; k < a->nin; k++)
        if (a->in[k] != b->in[k]) return 0;
    const aj_op_def *def = aj_op_info(a->op);
    for (int i = 0; i < def->nattr; i++) {
        const aj_attr *x = &a->attr[i], *y = &b->attr[i];
        switch (def->attr[i].kind) {
        case AJ_ATTR_INT: case AJ_ATTR_WORD:
            if (x->i != y->i) return 0;
            break;
        case AJ_ATTR_FLOAT:
            if (x->f != y->f) return 0;
            break;
        case AJ_ATTR_INTS:
            if (x->n != y->n) return 0;
            for (int k = 0; k < x->n; k++)
                if (x->ints[k] != y->ints[k]) return 0;
            break;
        case AJ_ATTR_DIM: case AJ_ATTR_SHAPE: {
            int shape = def->attr[i].kind == AJ_ATTR_SHAPE, nd = shape ? x->n : 1;   /* a dim is dims[0] */
            if (shape && x->n != y->n) return 0;
            for (int k = 0; k < nd; k++)
                if (!aj_dim_eq(aj_dim_bind(x->dims[k], &m->bind), aj_dim_bind(y->dims[k], &m->bind))) return 0;
            break;
        }
        }
    }
    return 1;
}

/* The result of an earlier, still standing node equal to node i, or -1.
 * Quadratic, which is fine for graphs of a few thousand nodes. */
static int cse_of(const aj_module *m, const aj_graph *g, int i, const int *rep) {
    const aj_node *n = &g->node[i];
    if (aj_op_info(n->op)->flags & AJ_RAND) return -1;
    for (int j = 0; j < i; j++) {
        const aj_node *e = &g->node[j];
        if (same_node(m, e, n) && rep[e->out[0]] == e->out[0]) return e->out[0];
    }
    return -1;
}

/* Fn result v is to be replaced by r: r takes v's name if it can. */
static int take_name(aj_graph *g, char *is_result, int v, int r) {
    if (g->val[r].kind != AJ_VAL_NODE || is_result[r]) return 0;
    aj_value_swap_names(g, v, r);
    is_result[r] = 1;
    return 1;
}

static void rewrite(simp *s, aj_graph *g, int is_fn) {
    int *rep = xcalloc(sizeof(int) * (size_t)g->nval);
    char *is_result = xcalloc((size_t)g->nval);
    for (int v = 0; v < g->nval; v++) rep[v] = v;
    if (is_fn)
        for (int k = 0; k < g->nresult; k++) is_result[g->result[k]] = 1;
    for (int i = 0; i < g->nnode; i++) {
        aj_node *n = &g->node[i];
        for (int k = 0; k < n->nin; k++) n->in[k] = rep[n->in[k]];
        if (n->op == AJ_OP_RECURRENCE) {
            rewrite(s, n->rec->body, 0);
            continue;
        }
        if (n->nout != 1) continue;   /* the rules below replace one result */
        s->st.folded += fold(g, n);
        int *count = &s->st.removed_identity, r = identity_of(g, n);
        if (r < 0) count = &s->st.merged_cse, r = cse_of(s->m, g, i, rep);
        int v = n->out[0];
        if (r < 0 || (is_result[v] && !take_name(g, is_result, v, r))) continue;
        rep[v] = r;
        (*count)++;
    }
    for (int k = 0; k < g->nresult; k++) g->result[k] = rep[g->result[k]];
    free(rep), free(is_result);
}

/* ---------------------------------------------------------------- prune */

/* What survives of a node: every input and result, but of a recurrence
 * only what its live results need. */
typedef struct {
    char *live;             /* recurrences: per body value */
    char *keep_in;          /* per node input, i.e. body leaf */
    char *keep_out;         /* per node output, i.e. body result */
} recur_keep;

static void mark_live(const aj_graph *g, char *live);

/* Recurrence n when only the outputs in k->keep_out are used outside. */
static void recur_liveness(const aj_node *n, recur_keep *k) {
    const aj_recur *r = n->rec;
    const aj_graph *b = r->body;
    k->live = xcalloc((size_t)b->nval);
    for (int changed = 1; changed;) {
        memset(k->live, 0, (size_t)b->nval);
        for (int j = 0; j < b->nresult; j++)
            if (k->keep_out[j]) k->live[b->result[j]] = 1;
        mark_live(b, k->live);
        /* a carry that a live value reads must go on stepping */
        changed = 0;
        for (int c = 0; c < r->ncarry; c++)
            if (!k->keep_out[c] && k->live[b->leaf[c]]) k->keep_out[c] = 1, changed = 1;
    }
    for (int i = 0; i < b->nleaf; i++) k->keep_in[i] = i < r->ncarry ? k->keep_out[i] : k->live[b->leaf[i]];
}

/* Whether some result of n is live. */
static int outputs_live(const aj_node *n, const char *live) {
    int any = 0;
    for (int k = 0; k < n->nout; k++) any |= live[n->out[k]];
    return any;
}

/* What survives of node n, some of whose results are live. */
static void node_keep(const aj_node *n, const char *live, recur_keep *k) {
    k->live = NULL;
    k->keep_in = xcalloc((size_t)n->nin + 1), k->keep_out = xcalloc((size_t)n->nout + 1);
    memset(k->keep_in, 1, (size_t)n->nin);
    for (int j = 0; j < n->nout; j++) k->keep_out[j] = n->rec ? live[n->out[j]] : 1;
    if (n->rec) recur_liveness(n, k);
}

static void keep_free(recur_keep *k) { free(k->live), free(k->keep_in), free(k->keep_out); }

/* Extend `live` (the roots set) to every value a live value reads. */
static void mark_live(const aj_graph *g, char *live) {
    for (int i = g->nnode - 1; i >= 0; i--) {
        const aj_node *n = &g->node[i];
        if (!outputs_live(n, live)) continue;
        recur_keep k;
        node_keep(n, live, &k);
        for (int j = 0; j < n->nin; j++)
            if (k.keep_in[j]) live[n->in[j]] = 1;
        keep_free(&k);
    }
}

static int count_nodes(const aj_node *n) {
    int c = 1;
    for (int i = 0; n->rec && i < n->rec->body->nnode; i++) c += count_nodes(&n->rec->body->node[i]);
    return c;
}

static int copy_value(aj_graph *ng, const aj_value *x, int idx) {
    int v = aj_graph_add_value(ng, x->name, x->kind, -1, idx);
    ng->val[v].type = x->type, ng->val[v].line = x->line, ng->val[v].col = x->col;
    return v;
}

static aj_graph *rebuild(simp *s, const aj_graph *g, const char *live, const char *keep_leaf, const char *keep_res);

/* A recurrence's structure with only the kept leaves and results. */
static aj_recur *prune_recur(simp *s, const aj_recur *r, const recur_keep *k) {
    int count[4] = {0};   /* kept carries, slices, uses, stacks */
    for (int i = 0; i < r->ncarry + r->nslice + r->nuse; i++)
        count[(i >= r->ncarry) + (i >= r->ncarry + r->nslice)] += k->keep_in[i];
    for (int j = r->ncarry; j < r->ncarry + r->nstack; j++) count[3] += k->keep_out[j];
    aj_recur *nr = aj_recur_new(count[0], count[1], count[2], count[3]);
    nr->body = rebuild(s, r->body, k->live, k->keep_in, k->keep_out);
    for (int j = 0, kept = 0; j < r->nslice; j++)
        if (k->keep_in[r->ncarry + j]) nr->slice_axis[kept++] = r->slice_axis[j];
    for (int j = 0, kept = 0; j < r->ncarry + r->nstack; j++) {
        if (!k->keep_out[j]) continue;
        if (j >= r->ncarry) nr->stack_axis[kept - nr->ncarry] = r->stack_axis[j - r->ncarry];
        nr->res_line[kept] = r->res_line[j], nr->res_col[kept++] = r->res_col[j];
    }
    return nr;
}

/* Copy live node n of g into ng, reading g's value v as map[v]; map gains
 * the copies of its kept results. */
static void copy_node(simp *s, aj_graph *ng, const aj_graph *g, const aj_node *n, const char *live, int *map) {
    recur_keep k;
    node_keep(n, live, &k);
    int *in = xcalloc(sizeof(int) * (2 * (size_t)n->nin + (size_t)n->nout + 1)), *in_col = in + n->nin,
        *out = in_col + n->nin, nin = 0, nout = 0;
    const char **names = xcalloc(sizeof *names * ((size_t)n->nout + 1));
    for (int j = 0; j < n->nin; j++)
        if (k.keep_in[j]) in[nin] = map[n->in[j]], in_col[nin++] = n->in_col[j];
    for (int j = 0; j < n->nout; j++)
        if (k.keep_out[j]) out[nout] = n->out[j], names[nout++] = g->val[n->out[j]].name;
    int id = aj_graph_add_node(ng, n->op, in, nin, nout, names);
    aj_node *c = &ng->node[id];
    memcpy(c->attr, n->attr, sizeof c->attr);
    if (nin) memcpy(c->in_col, in_col, sizeof(int) * (size_t)nin);
    c->line = n->line, c->col = n->col;
    if (n->rec) c->rec = prune_recur(s, n->rec, &k);
    for (int j = 0; j < nout; j++) {
        const aj_value *x = &g->val[out[j]];
        aj_value *y = &ng->val[c->out[j]];
        y->type = x->type, y->line = x->line, y->col = x->col;
        map[out[j]] = c->out[j];
    }
    keep_free(&k);
    free(in), free(names);
}

/* A copy of g with its live nodes and the kept leaves and results. */
static aj_graph *rebuild(simp *s, const aj_graph *g, const char *live, const char *keep_leaf, const char *keep_res) {
    aj_graph *ng = aj_graph_new(g->name);
    ng->line = g->line, ng->col = g->col, ng->end_line = g->end_line;
    ng->leaf = xcalloc(sizeof(int) * (size_t)g->nleaf);
    ng->result = xcalloc(sizeof(int) * (size_t)g->nresult);
    int *map = xcalloc(sizeof(int) * (size_t)g->nval), per_kind[AJ_VAL_USE + 1] = {0};
    for (int k = 0; k < g->nleaf; k++) {
        if (!keep_leaf[k]) continue;
        const aj_value *x = &g->val[g->leaf[k]];
        ng->leaf[ng->nleaf++] = map[g->leaf[k]] = copy_value(ng, x, per_kind[x->kind]++);
    }
    /* parameter values stay even when unused: they say which parameters
     * the fn takes (aj_train_step finds them so) and cost nothing */
    for (int v = 0; v < g->nval; v++)
        if (g->val[v].kind == AJ_VAL_PARAM) map[v] = copy_value(ng, &g->val[v], g->val[v].idx);
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        if (outputs_live(n, live)) copy_node(s, ng, g, n, live, map);
        else s->dropped += count_nodes(n);
    }
    for (int j = 0; j < g->nresult; j++)
        if (keep_res[j]) ng->result[ng->nresult++] = map[g->result[j]];
    free(map);
    return ng;
}

int aj_simplify(const aj_module *m, aj_graph *g, aj_simplify_stats *st, aj_diag *d) {
    simp s = {m, {0, 0, 0, 0}, 0};
    rewrite(&s, g, 1);
    char *live = xcalloc((size_t)g->nval), *keep_leaf = xcalloc((size_t)g->nleaf), *keep_res = xcalloc((size_t)g->nresult);
    memset(keep_leaf, 1, (size_t)g->nleaf), memset(keep_res, 1, (size_t)g->nresult);
    for (int k = 0; k < g->nresult; k++) live[g->result[k]] = 1;
    mark_live(g, live);
    aj_graph *ng = rebuild(&s, g, live, keep_leaf, keep_res);
    free(live), free(keep_leaf), free(keep_res);
    /* the copy must verify, as every stage's output does */
    for (int i = 0; i < ng->nnode; i++)
        if (aj_graph_infer_node(m, ng, i, d)) {
            aj_graph_free(ng);
            return -1;
        }
    aj_graph old = *g;
    *g = *ng, *ng = old;
    aj_graph_free(ng);
    s.st.removed_dead = s.dropped - s.st.merged_cse - s.st.removed_identity;
    if (st) *st = s.st;
    return 0;
}
