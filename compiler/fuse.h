/* The fused engine's planner (compiler/fuse.c). */
#ifndef ARJIT_COMPILER_FUSE_H
#define ARJIT_COMPILER_FUSE_H

#include "compiler/plan.h"

/* Plan P->fn with fusion: elementwise chains, reductions with their
 * producers, view ops as views. 0 or -1. */
int aj_plan_fused(aj_planner *pl);

#endif
