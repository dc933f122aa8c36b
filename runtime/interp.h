/* The reference interpreter's internals that tests and other engines use. */
#ifndef ARJIT_RUNTIME_INTERP_H
#define ARJIT_RUNTIME_INTERP_H

#include "arjit.h"

/* Run node `node` of graph g (verified by aj_module_infer, all dims bound) on
 * input tensors in[0..nin-1] (borrowed, matching the input value types) and
 * allocate its results into out[0..nout-1] (caller frees). Sampling draws use
 * `seed` as a top-level node would (no enclosing recurrence steps).
 * Returns 0, or -1 with d set and nothing allocated. */
int aj_interp_node(const aj_module *m, const aj_graph *g, int node, const aj_tensor *in, aj_tensor *out,
                   uint64_t seed, aj_diag *d);
/* The same for a node inside recurrences at steps[0..depth-1] (outermost
 * first), which key its draws as the interpreter's own run would. */
int aj_interp_node_steps(const aj_module *m, const aj_graph *g, int node, const aj_tensor *in, aj_tensor *out,
                         uint64_t seed, const int64_t *steps, int depth, aj_diag *d);

/* aj_interp_run with every f32 tensor (parameters, inputs, results and
 * every value in between) held as double, 8 bytes per element; i32 stays
 * int32_t. The same kernels (runtime/interp_f64.c compiles interp.c over
 * double), for gradient checks free of f32 rounding. Extern ops still
 * compute in f32, on rounded copies. */
int aj_interp_run_f64(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                      aj_tensor *results, uint64_t seed, aj_diag *d);

/* The error of gather's (or one_hot's) index ix at position pos of its
 * indices outside [0, n), at line:col, as every engine words it:
 *   gather: index 7 at position 3 is out of range for a table of 5 rows
 * Returns -1. */
int aj_index_error(aj_diag *d, aj_op op, int line, int col, int64_t ix, int64_t pos, int64_t n);

/* The mask kinds of the `mask` op, in ops.def's order. */
typedef enum {
    AJ_MASK_LOWER, AJ_MASK_STRICT_LOWER, AJ_MASK_UPPER, AJ_MASK_STRICT_UPPER,
    AJ_MASK_MADE_IN, AJ_MASK_MADE_HIDDEN, AJ_MASK_MADE_OUT, AJ_MASK_CONV_A, AJ_MASK_CONV_B
} aj_mask_kind;

/* Fill out[] (shape [R, C], or [Co, Ci, kh, kw] for the conv kinds) with the
 * 0/1 mask of `kind`; nvars is the MADE variable count n. The one definition
 * of the masks, for every engine that needs them as constants. */
void aj_mask_fill(aj_mask_kind kind, int64_t nvars, const int64_t *shape, float *out);

#endif
