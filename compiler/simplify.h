/* Graph simplification: dead code, common subexpressions, constant folding
 * and identities, on a fn graph and every recurrence body in it
 * (compiler/simplify.c explains each rule). */
#ifndef ARJIT_COMPILER_SIMPLIFY_H
#define ARJIT_COMPILER_SIMPLIFY_H

#include "arjit.h"

/* What a run changed, counted over the fn and all its bodies. */
typedef struct {
    int removed_dead;      /* nodes no result needed (a dead recurrence counts with its body) */
    int merged_cse;        /* nodes replaced by an earlier identical one */
    int folded;            /* nodes turned into one constant */
    int removed_identity;  /* nodes that returned an input: x*1, x+0, neg(neg(x)), no-op reshapes, ... */
} aj_simplify_stats;

/* Simplify fn graph g of module m in place (m already inferred by
 * aj_module_infer; dims may or may not all be bound); recurses into
 * recurrence bodies. Keeps g's leaves (fn inputs) and results, their order
 * and names. st may be NULL. 0, or -1 with d set (the result would not
 * verify: a bug in the pass; g is then still equivalent to what it was). */
int aj_simplify(const aj_module *m, aj_graph *g, aj_simplify_stats *st, aj_diag *d);

#endif
