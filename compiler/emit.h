/* Emitting typed nodes into a graph: the small builder that compiler
 * passes (autodiff, the optimizer step) use to write IR. Every emitter takes
 * value ids and returns the new value id, or -1 after an error (recorded in
 * e->d); an input of -1 yields -1, so a chain of emitters is checked once at
 * its end. Each new node is verified and typed at once, so later emitters
 * can read the types they need (e.g. to undo a broadcast). */
#ifndef ARJIT_COMPILER_EMIT_H
#define ARJIT_COMPILER_EMIT_H

#include "arjit.h"

typedef struct {
    aj_module *m;
    aj_graph *g;         /* the graph nodes are emitted into */
    aj_diag *d;
    const char *needs;   /* autodiff: needs[v], value v depends on a parameter */
} aj_emit;

aj_type em_ty(aj_emit *c, int v);
/* A node of op on inputs `in`, default attributes, not typed yet: set its
 * attributes with em_attr, then em_node_done. Its index, or -1. */
int em_node_new(aj_emit *c, aj_op op, const int *in, int nin);
aj_attr *em_attr(aj_emit *c, int node, const char *name);
/* Verify and type the node; its first result. */
int em_node_done(aj_emit *c, int node);
/* Nodes [first, end) that have no source line get (line, col), and their
 * results too: generated code is then named after the line it came from
 * (a gradient after its op's line, an update after its parameter's). */
void em_lines_from(aj_emit *c, int first, int line, int col);
int em_op1(aj_emit *c, aj_op op, int x);
int em_op2(aj_emit *c, aj_op op, int x, int y);
int em_op3(aj_emit *c, aj_op op, int x, int y, int z);
/* constant(value=v, shape=dims of `shape`, or a scalar when NULL) */
int em_constant(aj_emit *c, double v, const aj_type *shape);
int em_scalar(aj_emit *c, double v);
/* reshape / broadcast (op) of x to the dims of t */
int em_to_shape(aj_emit *c, aj_op op, int x, const aj_type *t);
/* reduction op over axes */
int em_reduce(aj_emit *c, aj_op op, int x, const int *axes, int naxes, int keepdims);
/* op(x) with one int attribute set */
int em_with_int(aj_emit *c, aj_op op, int x, const char *name, int64_t v);
int em_is_one(aj_dim d);
/* Sum a broadcast value back to type t (numpy broadcasting in reverse). */
int em_reduce_to(aj_emit *c, int v, const aj_type *t);
/* A reduction node's result brought back to x's shape (reduced axes
 * reinserted as size 1, then broadcast). */
int em_unreduce(aj_emit *c, const aj_node *n, int dy, const aj_type *xt);

#endif
