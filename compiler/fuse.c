/* placeholder while the fused planner is written (engine branch only) */
#include "compiler/fuse.h"
int aj_plan_fused(aj_planner *pl) { return aj_plan_naive(pl); }
