/* A counted loop in LLVM IR (see ir_loop.h). */
#include "compiler/ir_loop.h"

LLVMValueRef aj_ir_loop_open(LLVMBuilderRef b, aj_ir_loop *L, LLVMValueRef from, LLVMValueRef to, LLVMValueRef step,
                             const char *name) {
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
    LLVMValueRef fn = LLVMGetBasicBlockParent(pre);
    LLVMContextRef cx = LLVMGetTypeContext(LLVMTypeOf(from));
    L->head = LLVMAppendBasicBlockInContext(cx, fn, name);
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cx, fn, "body");
    L->exit = LLVMAppendBasicBlockInContext(cx, fn, "exit");
    L->step = step;
    LLVMBuildBr(b, L->head);
    LLVMPositionBuilderAtEnd(b, L->head);
    L->iv = LLVMBuildPhi(b, LLVMTypeOf(from), name);
    LLVMAddIncoming(L->iv, &from, &pre, 1);
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, L->iv, to, ""), body, L->exit);
    LLVMPositionBuilderAtEnd(b, body);
    return L->iv;
}

LLVMValueRef aj_ir_loop_close(LLVMBuilderRef b, aj_ir_loop *L) {
    LLVMValueRef next = LLVMBuildNSWAdd(b, L->iv, L->step, "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
    LLVMAddIncoming(L->iv, &next, &latch, 1);
    LLVMValueRef br = LLVMBuildBr(b, L->head);
    LLVMPositionBuilderAtEnd(b, L->exit);
    return br;
}
