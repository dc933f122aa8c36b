/* The planner's shared pieces (compiler/plan.c), used by the naive plan
 * there and the fused plan in compiler/fuse.c. */
#ifndef ARJIT_COMPILER_PLAN_H
#define ARJIT_COMPILER_PLAN_H

#include "compiler/codegen.h"

typedef struct {
    aj_program *P;
    aj_codegen *cg;
    const aj_module *m;
    aj_diag *d;
    const aj_graph *outer[AJ_MAX_DEPTH + 1];   /* the graph holding the recurrence at each depth */
} aj_planner;

/* Plans graph g at loop depth `level` with value -> buffer map vbuf; for a
 * recurrence body, rec is the recurrence node and outer_vbuf its graph's map. */
typedef int (*aj_plan_graph_fn)(aj_planner *pl, const aj_graph *g, int *vbuf, int level, const aj_node *rec,
                                const int *outer_vbuf);

int64_t aj_plan_dim(const aj_module *m, aj_dim d);
int64_t aj_plan_numel(const aj_module *m, const aj_type *t);
int aj_plan_buffer(aj_planner *pl, aj_buf_kind kind, int idx, const aj_type *t, int level, const char *name);
int aj_plan_instr(aj_planner *pl, aj_instr in);
int aj_plan_arg(aj_kernel *k, int b);
/* Emit kernel k (codegen of ks, unless ks is NULL: a host kernel) and its
 * instruction; its index or -1. The program takes k->body either way. */
int aj_plan_kernel(aj_planner *pl, aj_kernel *k, aj_kspec *ks, int level);
aj_view aj_plan_step_view(aj_planner *pl, int arg, const aj_type *seq, int axis, int level);
int aj_plan_copy(aj_planner *pl, int src, aj_view sv, int dst, aj_view dv, int level, const char *what, int line);
int aj_plan_recurrence(aj_planner *pl, const aj_graph *g, int i, int *vbuf, int level, aj_plan_graph_fn body_fn);
int aj_plan_slices(aj_planner *pl, const aj_graph *body, int *bbuf, int L, const aj_node *n, const int *vbuf,
                   const aj_graph *outer);
int aj_plan_outputs(aj_planner *pl, const aj_graph *g, int i, int *vbuf, int level);
/* Leaves, params and results, then graph_fn on the fn; 0 or -1. */
int aj_plan_fn(aj_planner *pl, aj_plan_graph_fn graph_fn);
int aj_plan_naive(aj_planner *pl);
/* The naive plan of graph g (a body when rec is set): one kernel per node. */
int aj_plan_naive_graph(aj_planner *pl, const aj_graph *g, int *vbuf, int level, const aj_node *rec, const int *outer_vbuf);
/* One node as its own kernel(s): JIT, matmul pack + product, or host. */
int aj_plan_node(aj_planner *pl, const aj_graph *g, int i, int *vbuf, int level);
/* Place the arena buffers (P->arena_bytes, P->naive_bytes). */
void aj_plan_memory(aj_program *P);

/* The view of node n's result reading its input's view x (reshape,
 * unsqueeze, transpose, broadcast, slice); -1 when n is not such an op. */
int aj_view_of_node(const aj_module *m, const aj_node *n, const aj_view *x, const aj_type *out_t, aj_view *y);

#endif
