/* The reference interpreter over double: runtime/interp.c compiled again
 * with f32 values held as double, as aj_interp_run_f64 (runtime/interp.h). */
#define AJ_INTERP_F64
#include "runtime/interp.c"
