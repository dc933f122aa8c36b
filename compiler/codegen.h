/* Kernel specs: what the planner (compiler/plan.c) asks codegen
 * (compiler/codegen_llvm.c) to emit, one LLVM function per spec.
 *
 * A kernel reads and writes tensors through views: a buffer (a kernel
 * argument) with an element offset, optionally moved by the step index of
 * an enclosing loop (a recurrence's slice or stacked output), and a stride
 * per axis (0 on a broadcast axis). */
#ifndef ARJIT_COMPILER_CODEGEN_H
#define ARJIT_COMPILER_CODEGEN_H

#include "compiler/program.h"

typedef struct {
    int arg;                 /* kernel argument (buffer) */
    int swap_arg;            /* a carry: this argument instead on odd steps of the fused loop; -1 none */
    /* a split sum's output (fuse.c): thread 0 writes arg at step t as
     * above; thread i > 0 its partials, argument thread_arg from element
     * (i - 1) * thread_slot, at slot ring (of AJ_RING) instead of t.
     * thread_slot 0: not split. A GROUP whose out[0] is split sums over
     * axis 0, each thread its own rows, so no thread reads another's. */
    int thread_arg;
    int64_t thread_slot;
    int64_t off;             /* element offset ... */
    int tlevel;              /* ... + t[tlevel] * tstride when tlevel >= 0 */
    int64_t tstride;
    aj_dtype dtype;
    int rank;
    int64_t shape[AJ_MAX_RANK];
    int64_t stride[AJ_MAX_RANK];
} aj_view;

/* The contiguous view of a whole buffer of shape t. */
aj_view aj_view_dense(int arg, const aj_type *t, const aj_bind *b);
/* Row-major strides (size-1 axes aside), at any offset. */
int aj_view_contiguous(const aj_view *v);
/* v with `axis` indexed by the step t of the loop at depth `level`
 * (1-based): the axis drops out and moves the offset (a recurrence's
 * slice, or where it stacks a value). */
aj_view aj_view_step(aj_view v, int axis, int level);

/* The op classes the planners and codegen share, from ops.def's flags. */
int aj_op_elementwise(aj_op op);   /* AJ_EW */
int aj_op_view(aj_op op);          /* AJ_VIEW */
int aj_op_group_reduce(aj_op op);  /* AJ_REDUCE with one accumulator: may end a fused group */

enum { AJ_KS_MAX_IN = 16, AJ_KS_MAX_NODES = 64 };

typedef enum {
    AJ_KS_NODE,     /* one node of g: out[i] = node(in...) */
    AJ_KS_COPY,     /* out[0] = in[0] elementwise (same shape) */
    AJ_KS_MM_PACK,  /* matmul node: pack B (in[1]) into scratch out[0] */
    AJ_KS_MM,       /* matmul node: out[0] = in[0] x in[1] (in[2]: B packed when present) */
    AJ_KS_GROUP,    /* fused: nodes[] of g, elementwise over one shape, maybe ending in a reduction */
    AJ_KS_RECUR,    /* fused: a whole recurrence, sub[] run in order every step */
    AJ_KS_COMBINE   /* inside RECUR, every AJ_RING steps: out[0] at those steps += the
                     * other threads' partials in[0] of a split sum */
} aj_ks_kind;

typedef struct aj_kspec_s {
    aj_ks_kind kind;
    const aj_module *m;
    const aj_graph *g;
    int node;                /* NODE, MM_PACK, MM */
    int depth;               /* enclosing loops: the rng key's steps */
    int nin, nout;
    aj_view in[AJ_KS_MAX_IN];
    aj_view out[4];
    /* GROUP: nodes in order; in[k] is the view of group input value
     * in_val[k]; out[0] is the root's result, out[k > 0] stores member
     * value out_val[k] as well (others read it: one pass, not two) */
    int nnodes;
    int nodes[AJ_KS_MAX_NODES];
    int in_val[AJ_KS_MAX_IN];
    int out_val[4];
    int barrier_after;       /* inside RECUR: a later sub-kernel reads what this one wrote */
    int at_flush;            /* COMBINE inside RECUR: run when the partials' ring is full */
    char what[AJ_WHAT_LEN];  /* inside RECUR: the ops it runs, for dumps */
    /* RECUR: the step loop around sub[0..nsub-1] (their views use this
     * kernel's arguments); every thread runs it, each taking its share of
     * every sub-kernel's rows, with a barrier after each sub-kernel */
    struct aj_kspec_s *sub;
    int nsub;
    int64_t steps;           /* RECUR; COMBINE: its step loop's */
    int reverse, level;
} aj_kspec;

typedef struct aj_codegen aj_codegen;

aj_codegen *aj_codegen_new(aj_jit *jit, aj_jit_module *mod);
void aj_codegen_free(aj_codegen *cg);
/* --check-nan: a sampling op keeps a NaN parameter (bernoulli's logit) as
 * its NaN result, so the kernel's check sees what fusion never stores. */
void aj_codegen_set_nan_check(aj_codegen *cg, int on);
/* Line tables: the kernels' code at the lines of the graph file `path`
 * (DWARF line tables; `dump --stage asm` shows them). aj_codegen_free
 * finalizes them. */
void aj_codegen_set_source(aj_codegen *cg, const char *path);
/* Emit kernel `name` (arguments: lo, hi, ctx, then nargs pointers) for ks;
 * *rows is its iteration space. 0, or -1 with d set. */
int aj_codegen_kernel(aj_codegen *cg, const aj_kspec *ks, const char *name, int nargs, int64_t *rows, aj_diag *d);
/* Whether node n has an LLVM lowering: every op but the AJ_HOST ones (and
 * recurrences, which are planned as loops), which run on the interpreter. */
int aj_codegen_lowers(const aj_node *n);
/* Whether reduction n reduces one block of axes of an x of x_type (else it
 * is a kernel of its own, never the end of a fused group). */
int aj_codegen_reduce_block(const aj_node *n, const aj_type *x_type);
/* Floats the packed B of matmul node n needs (0: it reads B as it is). */
int64_t aj_codegen_mm_packed(aj_codegen *cg, const aj_kspec *ks);

#endif
