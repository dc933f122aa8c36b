/* Emitting typed nodes into a graph (see emit.h). */
#include "compiler/emit.h"
#include <string.h>

aj_type em_ty(aj_emit *c, int v) { return c->g->val[v].type; }

/* A node of `op` on inputs `in` with default attributes, not yet typed.
 * Returns its index, or -1 if an input is -1 (an earlier failure). */
int em_node_new(aj_emit *c, aj_op op, const int *in, int nin) {
    for (int i = 0; i < nin; i++)
        if (in[i] < 0) return -1;
    return aj_graph_add_node(c->g, op, in, nin, 1, NULL);
}

aj_attr *em_attr(aj_emit *c, int node, const char *name) { return (aj_attr *)aj_attr_get(&c->g->node[node], name); }

void em_lines_from(aj_emit *c, int first, int line, int col) {
    for (int i = first; i < c->g->nnode; i++) {
        aj_node *n = &c->g->node[i];
        if (n->line) continue;
        n->line = line, n->col = col;
        for (int k = 0; k < n->nout; k++)
            if (!c->g->val[n->out[k]].line) c->g->val[n->out[k]].line = line;
    }
}

/* Type the node and return its (first) result. */
int em_node_done(aj_emit *c, int node) {
    if (node < 0 || aj_graph_infer_node(c->m, c->g, node, c->d)) return -1;
    return c->g->node[node].out[0];
}

int em_op1(aj_emit *c, aj_op op, int x) { return em_node_done(c, em_node_new(c, op, &x, 1)); }
int em_op2(aj_emit *c, aj_op op, int x, int y) {
    int in[2] = {x, y};
    return em_node_done(c, em_node_new(c, op, in, 2));
}
int em_op3(aj_emit *c, aj_op op, int x, int y, int z) {
    int in[3] = {x, y, z};
    return em_node_done(c, em_node_new(c, op, in, 3));
}

int em_constant(aj_emit *c, double v, const aj_type *shape) {
    int n = em_node_new(c, AJ_OP_CONSTANT, NULL, 0);
    em_attr(c, n, "value")->f = v;
    if (shape) {
        aj_attr *s = em_attr(c, n, "shape");
        s->n = shape->rank;
        memcpy(s->dims, shape->dim, sizeof(aj_dim) * (size_t)shape->rank);
    }
    return em_node_done(c, n);
}
int em_scalar(aj_emit *c, double v) { return em_constant(c, v, NULL); }

/* op(x, attr=shape of t): reshape / broadcast to the dims of t */
int em_to_shape(aj_emit *c, aj_op op, int x, const aj_type *t) {
    int n = em_node_new(c, op, &x, 1);
    if (n < 0) return -1;
    aj_attr *s = em_attr(c, n, "shape");
    s->n = t->rank;
    memcpy(s->dims, t->dim, sizeof(aj_dim) * (size_t)t->rank);
    return em_node_done(c, n);
}

/* sum or another reduction over `axes` */
int em_reduce(aj_emit *c, aj_op op, int x, const int *axes, int naxes, int keepdims) {
    int n = em_node_new(c, op, &x, 1);
    if (n < 0) return -1;
    aj_attr *a = em_attr(c, n, "axis");
    a->n = naxes;
    for (int i = 0; i < naxes; i++) a->ints[i] = axes[i];
    em_attr(c, n, "keepdims")->i = keepdims;
    return em_node_done(c, n);
}

int em_with_int(aj_emit *c, aj_op op, int x, const char *name, int64_t v) {
    int n = em_node_new(c, op, &x, 1);
    if (n < 0) return -1;
    em_attr(c, n, name)->i = v;
    return em_node_done(c, n);
}

int em_is_one(aj_dim d) { return aj_dim_is_const(d) && d.off == 1; }

/* Sum a broadcast adjoint v back to type t: over the leading axes t lacks
 * and the axes where t has size 1 (numpy broadcasting in reverse). */
int em_reduce_to(aj_emit *c, int v, const aj_type *t) {
    if (v < 0) return -1;
    aj_type vt = em_ty(c, v);
    if (aj_type_eq(&vt, t)) return v;
    int axes[AJ_MAX_RANK], n = 0, lead = vt.rank - t->rank;
    for (int i = 0; i < vt.rank; i++)
        if (i < lead || (em_is_one(t->dim[i - lead]) && !em_is_one(vt.dim[i]))) axes[n++] = i;
    int s = n ? em_reduce(c, AJ_OP_SUM, v, axes, n, 1) : v;
    return em_to_shape(c, AJ_OP_RESHAPE, s, t);
}

/* A reduction's adjoint dy, brought back to x's shape: reinsert the reduced
 * axes as size 1 (unless keepdims) and broadcast. */
int em_unreduce(aj_emit *c, const aj_node *n, int dy, const aj_type *xt) {
    const aj_attr *ax = aj_attr_get(n, "axis");
    aj_type kt = *xt;
    for (int i = 0; i < xt->rank; i++) {
        int reduced = ax->n == 0;
        for (int k = 0; k < ax->n; k++) reduced |= (ax->ints[k] < 0 ? ax->ints[k] + xt->rank : ax->ints[k]) == i;
        if (reduced) kt.dim[i] = aj_dim_const(1);
    }
    return em_to_shape(c, AJ_OP_BROADCAST, em_to_shape(c, AJ_OP_RESHAPE, dy, &kt), xt);
}

