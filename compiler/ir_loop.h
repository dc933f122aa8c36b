/* A counted loop in LLVM IR, for every code generator of the compiler
 * (codegen_llvm.c, matmul_llvm.c):
 *
 *     for (iv = from; iv < to; iv += step) { body }
 *
 * aj_ir_loop_open leaves the builder in the body and returns iv;
 * aj_ir_loop_close adds the back edge (returned: loop metadata goes on it)
 * and leaves the builder at the exit, where iv holds the first value that
 * failed the test. */
#ifndef AJ_IR_LOOP_H
#define AJ_IR_LOOP_H

#include <llvm-c/Core.h>

typedef struct {
    LLVMBasicBlockRef head, exit;
    LLVMValueRef iv, step;
} aj_ir_loop;

LLVMValueRef aj_ir_loop_open(LLVMBuilderRef b, aj_ir_loop *L, LLVMValueRef from, LLVMValueRef to, LLVMValueRef step,
                             const char *name);
LLVMValueRef aj_ir_loop_close(LLVMBuilderRef b, aj_ir_loop *L);

#endif
