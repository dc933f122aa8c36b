/* Vectorisable math for generated kernels: exp, log, tanh, sigmoid,
 * softplus, sin, cos as straight-line LLVM IR (polynomials, selects, bit tricks; no
 * libm calls), so a loop that uses them vectorises to the host's widest
 * registers. llvm.exp.f32 would instead become one libm call per lane.
 *
 * Each emitter takes a float or a <N x float> value and returns one of the
 * same type, built at the builder's insertion point (which must be inside a
 * function). Worst relative error against double-precision libm, measured
 * by tests/test_jit.c over dense sweeps (docs/jit.md): 0.8-1.5e-7, i.e.
 * 1.3-2.5 float ulps, for the first five.
 *   exp      overflows to inf above 88.72, underflows through the denormals
 *            to 0 below -103.97, as expf does
 *   log      all positive floats incl. denormals; -inf at 0, NaN below 0
 *   tanh     exactly odd, accurate near 0, +-1 at saturation
 *   sigmoid  saturates to 0 and 1 without NaN
 *   softplus keeps the tail e^-|x| accurate for large |x|
 *   sin, cos reduced by multiples of pi/2 in three parts: accurate to
 *            about 1e-7 absolute for |x| <= 8192 (sinusoidal position
 *            codes need far less); NaN at +-inf
 * NaN in gives NaN out. */
#ifndef ARJIT_COMPILER_VECMATH_H
#define ARJIT_COMPILER_VECMATH_H

#include <llvm-c/Core.h>

LLVMValueRef aj_vm_exp(LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef aj_vm_log(LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef aj_vm_tanh(LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef aj_vm_sigmoid(LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef aj_vm_softplus(LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef aj_vm_sin(LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef aj_vm_cos(LLVMBuilderRef b, LLVMValueRef x);

/* Small helpers the other emitters share; all type-generic like the above. */
/* The constant c with x's type (splatted over a vector). */
LLVMValueRef aj_vm_const(LLVMTypeRef ty, double c);
/* a * b + c as llvm.fmuladd (one FMA where the host has it). */
LLVMValueRef aj_vm_fma(LLVMBuilderRef b, LLVMValueRef a, LLVMValueRef x, LLVMValueRef c);
/* A call of overloaded intrinsic `name` (e.g. "llvm.fabs") on its type. */
LLVMValueRef aj_vm_intrinsic(LLVMBuilderRef b, const char *name, LLVMValueRef *args, unsigned nargs);
/* max(x, y) and min(x, y) as compare + select (NaN in x propagates). */
LLVMValueRef aj_vm_max(LLVMBuilderRef b, LLVMValueRef x, LLVMValueRef y);
LLVMValueRef aj_vm_min(LLVMBuilderRef b, LLVMValueRef x, LLVMValueRef y);

#endif
