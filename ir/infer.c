/* The verifier: checks every node of every fn and infers every value's type.
 *
 * Nodes are checked in order, so each input must be defined by an earlier
 * node (which also rules out cycles in graphs the compiler builds). Each op's
 * own rule lives in ir/shape.c; the recurrence rule lives here because it
 * verifies its body, a graph of its own. */
#include "arjit.h"
#include "ir/shape.h"
#include <stdlib.h>
#include <string.h>

#define MAX_ELEMENTS (1ll << 40)

static int infer_graph(const aj_module *m, aj_graph *g, aj_diag *d);

/* Every dim of a type that is a number must be a sane one. */
static int check_type(const aj_module *m, const aj_type *t, int line, int col, const char *what, aj_diag *d) {
    int64_t numel = 1;
    for (int i = 0; i < t->rank; i++) {
        aj_dim x = t->dim[i];
        if (!aj_dim_is_const(x)) continue;
        char buf[160];
        aj_type_str(m, t, buf, sizeof buf);
        if (x.off < 0) return aj_error(d, line, col, "%s has a negative dimension: %s", what, buf);
        if (__builtin_mul_overflow(numel, x.off, &numel) || numel > MAX_ELEMENTS)
            return aj_error(d, line, col, "%s is too large: %s (at most 2^40 elements)", what, buf);
    }
    return 0;
}

static aj_type bind_type(const aj_type *t, const aj_bind *b) {
    aj_type r = *t;
    for (int i = 0; i < r.rank; i++) r.dim[i] = aj_dim_bind(r.dim[i], b);
    return r;
}

static int norm_axis(int axis, int rank) { return axis < 0 ? axis + rank : axis; }

int aj_shape_recurrence(const aj_module *m, const aj_node *n, const aj_type *in, aj_type *out,
                        int *bad_input, aj_diag *d) {
    const aj_recur *r = n->rec;
    aj_graph *g = r->body;
    aj_dim steps = aj_attr_dim(n, "steps");
    if (aj_dim_is_const(steps) && steps.off < 0) return aj_error(d, n->line, n->col, "recurrence: steps is negative");
    char a[160], b[160];
    int k = 0;
    for (int c = 0; c < r->ncarry; c++, k++) g->val[g->leaf[k]].type = in[k];
    for (int s = 0; s < r->nslice; s++, k++) {
        aj_value *leaf = &g->val[g->leaf[k]];
        aj_type t = in[k];
        int axis = norm_axis(r->slice_axis[s], t.rank);
        aj_type_str(m, &t, a, sizeof a);
        if (axis < 0 || axis >= t.rank)
            return aj_error(d, leaf->line, leaf->col, "slice '%s': axis %d is out of range for %s", leaf->name,
                            r->slice_axis[s], a);
        if (!aj_dim_eq(t.dim[axis], steps)) {
            aj_dim_str(m, steps, b, sizeof b);
            return aj_error(d, leaf->line, leaf->col, "slice '%s': %s has axis %d of a different size than steps = %s",
                            leaf->name, a, axis, b);
        }
        for (int i = axis; i + 1 < t.rank; i++) t.dim[i] = t.dim[i + 1];
        t.rank--;
        leaf->type = t;
    }
    for (int u = 0; u < r->nuse; u++, k++) g->val[g->leaf[k]].type = in[k];
    if (infer_graph(m, g, d)) return -1;
    for (int c = 0; c < r->ncarry; c++) {
        const aj_type *nt = &g->val[g->result[c]].type;
        if (!aj_type_eq(nt, &in[c])) {
            aj_type_str(m, nt, a, sizeof a);
            aj_type_str(m, &in[c], b, sizeof b);
            return aj_error(d, r->res_line[c], r->res_col[c], "next '%s' is %s but the carry is %s",
                            g->val[g->leaf[c]].name, a, b);
        }
        out[c] = in[c];
    }
    for (int j = 0; j < r->nstack; j++) {
        int ri = r->ncarry + j;
        aj_type t = g->val[g->result[ri]].type;
        int axis = r->stack_axis[j] < 0 ? r->stack_axis[j] + t.rank + 1 : r->stack_axis[j];
        if (axis < 0 || axis > t.rank || t.rank == AJ_MAX_RANK) {
            aj_type_str(m, &t, a, sizeof a);
            return aj_error(d, r->res_line[ri], r->res_col[ri], "stack: axis %d is out of range for %s",
                            r->stack_axis[j], a);
        }
        for (int i = t.rank; i > axis; i--) t.dim[i] = t.dim[i - 1];
        t.dim[axis] = steps;
        t.rank++;
        out[ri] = t;
    }
    (void)bad_input;
    return 0;
}

int aj_graph_infer_node(const aj_module *m, aj_graph *g, int id, aj_diag *d) {
    aj_node *n = &g->node[id];
    const aj_op_def *def = aj_op_info(n->op);
    if (!def) return aj_error(d, n->line, n->col, "node %d has no valid op", id);
    if (n->nin < def->min_in || n->nin > def->max_in)
        return aj_error(d, n->line, n->col, "%s: wrong number of inputs (%d)", def->name, n->nin);
    /* nout -1: the node says; a recurrence's body must agree, an extern call's rule checks the count */
    int nout_ok = n->op == AJ_OP_RECURRENCE ? n->rec && n->nout == n->rec->ncarry + n->rec->nstack
                  : def->nout >= 0          ? n->nout == def->nout
                                            : n->nout >= 1 && n->nout <= AJ_MAX_EXTERN_IN;
    if (!nout_ok)
        return aj_error(d, n->line, n->col, "%s: wrong number of results (%d)", def->name, n->nout);
    /* on the heap: an aj_type is about 1 KB (6 polynomial dims), and a
     * recurrence's rule comes back here for its body, nested any depth */
    aj_type *in = calloc((size_t)(n->nin + n->nout + 1), sizeof(aj_type)), *out = in + n->nin;
    if (!in) return aj_error(d, n->line, n->col, "out of memory");
    int rc = -1;
    for (int i = 0; i < n->nin; i++) {
        int v = n->in[i];
        if (v < 0 || v >= g->nval || (g->val[v].kind == AJ_VAL_NODE && g->val[v].node >= id)) {
            aj_error(d, n->line, n->in_col[i] ? n->in_col[i] : n->col,
                     "%s: input %d is used before it is defined (a cycle?)", def->name, i);
            goto done;
        }
        in[i] = g->val[v].type;
    }
    /* rules see attribute dims under the binding, as the values are */
    aj_node bound = *n;
    for (int i = 0; i < def->nattr; i++)
        if (bound.attr[i].kind == AJ_ATTR_DIM || bound.attr[i].kind == AJ_ATTR_SHAPE)
            for (int k = 0; k < bound.attr[i].n; k++) bound.attr[i].dims[k] = aj_dim_bind(bound.attr[i].dims[k], &m->bind);
    int bad = -1;
    if (def->shape(m, &bound, in, out, &bad, d)) {
        if (!d->set) aj_error(d, n->line, n->col, "%s: invalid inputs", def->name);
        goto done;
    }
    for (int k = 0; k < n->nout; k++) {
        aj_value *v = &g->val[n->out[k]];
        if (check_type(m, &out[k], v->line ? v->line : n->line, v->line ? v->col : n->col, def->name, d)) goto done;
        v->type = out[k];
    }
    rc = 0;
done:
    free(in);
    return rc;
}

static int infer_graph(const aj_module *m, aj_graph *g, aj_diag *d) {
    for (int i = 0; i < g->nval; i++) {
        aj_value *v = &g->val[i];
        if (v->kind != AJ_VAL_PARAM) continue;
        if (v->idx < 0 || v->idx >= m->nparam) return aj_error(d, v->line, v->col, "'%s' is no parameter", v->name);
        v->type = bind_type(&m->param[v->idx].type, &m->bind);
    }
    for (int i = 0; i < g->nnode; i++)
        if (aj_graph_infer_node(m, g, i, d)) {
            if (d && !d->ncall) aj_diag_site(d, m, &g->node[i]);   /* the innermost node names its def calls */
            return -1;
        }
    for (int i = 0; i < g->nresult; i++)
        if (g->result[i] < 0 || g->result[i] >= g->nval) return aj_error(d, g->line, 1, "%s: result %d is undefined", g->name, i);
    return 0;
}

int aj_module_infer(aj_module *m, const aj_bind *b, aj_diag *d) {
    m->bind = *b;
    int rc = 0;
    for (int i = 0; i < m->nparam && !rc; i++) {
        aj_type t = bind_type(&m->param[i].type, b);
        rc = check_type(m, &t, m->param[i].line, m->param[i].col, "parameter", d);
    }
    for (int f = 0; f < m->nfn && !rc; f++) {
        aj_graph *g = m->fn[f];
        for (int k = 0; k < g->nleaf && !rc; k++) {
            aj_value *v = &g->val[g->leaf[k]];
            v->type = bind_type(&m->fn_arg_type[f][k], b);
            rc = check_type(m, &v->type, v->line, v->col, "argument", d);
        }
        if (!rc) rc = infer_graph(m, g, d);
    }
    if (rc) aj_diag_source(d, m->path, m->src, m->srclen);
    return rc;
}
