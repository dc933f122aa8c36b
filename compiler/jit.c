/* The JIT object: ORC LLJIT plus an optimiser target machine for the host,
 * in the call sequence of shared/LLVM-NOTES.md.
 *
 * Two identical target machines describe the host (its CPU name and
 * features, CodeGenLevelAggressive): `tm` runs the IR optimiser and the
 * assembly dump, the other becomes LLJIT's code generator. So the dump is
 * the code that runs (LLJIT's own host detection would generate at the
 * default level). Without a target machine the optimiser does not vectorise
 * at all, so `tm` is not optional. */
#include "arjit_jit.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct aj_jit {
    LLVMOrcLLJITRef lljit;
    LLVMTargetMachineRef tm;
    pthread_mutex_t jit_lock;   /* add + lookup: LLJIT crashed when they raced */
    pthread_mutex_t tm_lock;    /* a TargetMachine is not safe to share */
    char *cpu, *features;       /* LLVMDisposeMessage */
    int vector_width;
    /* The session's errors (e.g. "Symbols not found: [ f ]") reach us
     * through a reporter, apart from the lookup's own "failed to
     * materialize": kept here to complete that message. */
    pthread_mutex_t err_lock;
    char session_err[512];
};

struct aj_jit_module {
    LLVMOrcThreadSafeContextRef tsc;
    LLVMContextRef ctx;         /* owned by tsc */
    LLVMModuleRef mod;
    int verified;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_failed;

static void init_llvm(void) {
    init_failed = LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter();
}

/* Move an LLVMErrorRef's message into d (consuming the error). */
static int jit_error(aj_diag *d, const char *what, LLVMErrorRef err) {
    char *msg = LLVMGetErrorMessage(err);
    aj_error(d, 0, 0, "jit: %s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return -1;
}

/* Same for the char* messages of the older APIs (freed here). */
static int msg_error(aj_diag *d, const char *what, char *msg) {
    aj_error(d, 0, 0, "jit: %s: %s", what, msg ? msg : "unknown error");
    LLVMDisposeMessage(msg);
    return -1;
}

int aj_jit_has_feature(const aj_jit *jit, const char *feature) {
    /* features is "+a,-b,+c": look for ",+feature," with both ends padded */
    size_t n = strlen(feature);
    for (const char *p = jit->features; (p = strstr(p, feature)) != NULL; p += n)
        if (p >= jit->features + 1 && p[-1] == '+' && (p == jit->features + 1 || p[-2] == ',') &&
            (p[n] == ',' || p[n] == 0))
            return 1;
    return 0;
}

/* Instead of LLVM's default, which prints to stderr. */
static void report_session_error(void *ctx, LLVMErrorRef err) {
    aj_jit *jit = ctx;
    char *msg = LLVMGetErrorMessage(err);
    pthread_mutex_lock(&jit->err_lock);
    snprintf(jit->session_err, sizeof jit->session_err, "%s", msg);
    pthread_mutex_unlock(&jit->err_lock);
    LLVMDisposeErrorMessage(msg);
}

static LLVMTargetMachineRef host_tm(const aj_jit *jit, LLVMTargetRef target, const char *triple) {
    return LLVMCreateTargetMachine(target, triple, jit->cpu, jit->features, LLVMCodeGenLevelAggressive,
                                   LLVMRelocDefault, LLVMCodeModelJITDefault);
}

aj_jit *aj_jit_new(aj_diag *d) {
    pthread_once(&init_once, init_llvm);
    if (init_failed) {
        aj_error(d, 0, 0, "jit: LLVM has no native target for this host");
        return NULL;
    }
    aj_jit *jit = calloc(1, sizeof *jit);
    if (!jit) {
        aj_error(d, 0, 0, "jit: out of memory");
        return NULL;
    }
    pthread_mutex_init(&jit->jit_lock, NULL);
    pthread_mutex_init(&jit->tm_lock, NULL);
    pthread_mutex_init(&jit->err_lock, NULL);

    /* the optimiser's target machine: never a hard-coded CPU name */
    char *triple = LLVMGetDefaultTargetTriple(), *err = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(triple, &target, &err)) {
        msg_error(d, "no target for the host triple", err);
        LLVMDisposeMessage(triple);
        aj_jit_free(jit);
        return NULL;
    }
    jit->cpu = LLVMGetHostCPUName();
    jit->features = LLVMGetHostCPUFeatures();
    jit->tm = host_tm(jit, target, triple);
    LLVMTargetMachineRef jit_tm = host_tm(jit, target, triple);
    LLVMDisposeMessage(triple);
    if (!jit->tm || !jit_tm) {
        if (jit_tm) LLVMDisposeTargetMachine(jit_tm);
        aj_error(d, 0, 0, "jit: cannot create a target machine for %s", jit->cpu);
        aj_jit_free(jit);
        return NULL;
    }
    jit->vector_width = aj_jit_has_feature(jit, "avx512f") ? 16 : aj_jit_has_feature(jit, "avx") ? 8 : 4;

    /* LLJIT from the second TM: the TM builder takes (and frees) the TM, the
     * LLJIT builder consumes the TM builder, CreateLLJIT the builder */
    LLVMOrcJITTargetMachineBuilderRef jtmb = LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jit_tm);
    LLVMErrorRef e;
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
    if ((e = LLVMOrcCreateLLJIT(&jit->lljit, builder))) {
        jit->lljit = NULL;
        jit_error(d, "cannot create LLJIT", e);
        aj_jit_free(jit);
        return NULL;
    }

    LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(jit->lljit), report_session_error, jit);

    /* libm, memset, ... of this process resolve for JIT'd code (LLVM 19
     * does this by default; being explicit keeps it true elsewhere) */
    LLVMOrcDefinitionGeneratorRef gen;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit->lljit), NULL,
                                                             NULL);
    if (e) {
        jit_error(d, "cannot search the process's symbols", e);
        aj_jit_free(jit);
        return NULL;
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit->lljit), gen);
    return jit;
}

void aj_jit_free(aj_jit *jit) {
    if (!jit) return;
    if (jit->lljit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(jit->lljit);
        if (e) LLVMConsumeError(e);   /* nowhere to report it; the memory is gone either way */
    }
    if (jit->tm) LLVMDisposeTargetMachine(jit->tm);
    LLVMDisposeMessage(jit->cpu);
    LLVMDisposeMessage(jit->features);
    pthread_mutex_destroy(&jit->jit_lock);
    pthread_mutex_destroy(&jit->tm_lock);
    pthread_mutex_destroy(&jit->err_lock);
    free(jit);
}

const char *aj_jit_cpu(const aj_jit *jit) { return jit->cpu; }
const char *aj_jit_features(const aj_jit *jit) { return jit->features; }
int aj_jit_vector_width(const aj_jit *jit) { return jit->vector_width; }
LLVMTargetMachineRef aj_jit_target_machine(aj_jit *jit) { return jit->tm; }

aj_jit_module *aj_jit_module_new(aj_jit *jit, const char *name) {
    aj_jit_module *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->tsc = LLVMOrcCreateNewThreadSafeContext();
    m->ctx = LLVMOrcThreadSafeContextGetContext(m->tsc);
    m->mod = LLVMModuleCreateWithNameInContext(name, m->ctx);
    char *triple = LLVMGetTargetMachineTriple(jit->tm);
    LLVMSetTarget(m->mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(jit->tm);
    LLVMSetModuleDataLayout(m->mod, layout);
    LLVMDisposeTargetData(layout);
    return m;
}

LLVMContextRef aj_jit_module_context(const aj_jit_module *m) { return m->ctx; }
LLVMModuleRef aj_jit_module_llvm(const aj_jit_module *m) { return m->mod; }

void aj_jit_module_free(aj_jit_module *m) {
    if (!m) return;
    if (m->mod) LLVMDisposeModule(m->mod);
    LLVMOrcDisposeThreadSafeContext(m->tsc);
    free(m);
}

int aj_jit_verify(aj_jit_module *m, aj_diag *d) {
    char *msg = NULL;
    if (LLVMVerifyModule(m->mod, LLVMReturnStatusAction, &msg)) return msg_error(d, "invalid IR", msg);
    LLVMDisposeMessage(msg);
    m->verified = 1;
    return 0;
}

int aj_jit_optimize(aj_jit *jit, aj_jit_module *m, aj_diag *d) {
    if (!m->verified && aj_jit_verify(m, d)) return -1;
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
    LLVMPassBuilderOptionsSetLoopUnrolling(opts, 1);
    LLVMPassBuilderOptionsSetLoopInterleaving(opts, 1);
    pthread_mutex_lock(&jit->tm_lock);
    LLVMErrorRef e = LLVMRunPasses(m->mod, "default<O3>", jit->tm, opts);
    pthread_mutex_unlock(&jit->tm_lock);
    LLVMDisposePassBuilderOptions(opts);
    return e ? jit_error(d, "optimizer", e) : 0;
}

int aj_jit_add(aj_jit *jit, aj_jit_module *m, aj_diag *d) {
    if (!m->verified && aj_jit_verify(m, d)) {
        aj_jit_module_free(m);
        return -1;
    }
    /* the thread-safe module takes the module and a reference to the
     * context; LLJIT takes the thread-safe module, even on error */
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m->mod, m->tsc);
    m->mod = NULL;
    aj_jit_module_free(m);
    pthread_mutex_lock(&jit->jit_lock);
    LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(jit->lljit, LLVMOrcLLJITGetMainJITDylib(jit->lljit), tsm);
    pthread_mutex_unlock(&jit->jit_lock);
    return e ? jit_error(d, "cannot add module", e) : 0;
}

void *aj_jit_lookup(aj_jit *jit, const char *name, aj_diag *d) {
    LLVMOrcExecutorAddress addr = 0;
    pthread_mutex_lock(&jit->jit_lock);
    pthread_mutex_lock(&jit->err_lock);
    jit->session_err[0] = 0;
    pthread_mutex_unlock(&jit->err_lock);
    LLVMErrorRef e = LLVMOrcLLJITLookup(jit->lljit, &addr, name);
    if (e) {
        char *msg = LLVMGetErrorMessage(e);
        pthread_mutex_lock(&jit->err_lock);
        aj_error(d, 0, 0, "jit: lookup of %s failed: %s%s%s", name, msg, jit->session_err[0] ? ": " : "",
                 jit->session_err);
        pthread_mutex_unlock(&jit->err_lock);
        LLVMDisposeErrorMessage(msg);
    }
    pthread_mutex_unlock(&jit->jit_lock);
    if (e) return NULL;
    return (void *)(uintptr_t)addr;
}

void aj_jit_dump_ir(const aj_jit_module *m, FILE *f) {
    char *s = LLVMPrintModuleToString(m->mod);
    fputs(s, f);
    LLVMDisposeMessage(s);
}

int aj_jit_dump_asm(aj_jit *jit, const aj_jit_module *m, FILE *f, aj_diag *d) {
    /* emitting runs codegen IR passes on the module it is given: use a clone */
    LLVMModuleRef clone = LLVMCloneModule(m->mod);
    LLVMMemoryBufferRef buf = NULL;
    char *err = NULL;
    pthread_mutex_lock(&jit->tm_lock);
    LLVMBool failed = LLVMTargetMachineEmitToMemoryBuffer(jit->tm, clone, LLVMAssemblyFile, &err, &buf);
    pthread_mutex_unlock(&jit->tm_lock);
    LLVMDisposeModule(clone);
    if (failed) return msg_error(d, "cannot emit assembly", err);
    fwrite(LLVMGetBufferStart(buf), 1, LLVMGetBufferSize(buf), f);
    LLVMDisposeMemoryBuffer(buf);
    return 0;
}

int aj_jit_define(aj_jit *jit, const char *name, void *addr, aj_diag *d) {
    LLVMJITSymbolFlags flags = {LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable, 0};
    LLVMOrcCSymbolMapPair pair = {LLVMOrcLLJITMangleAndIntern(jit->lljit, name),
                                  {(LLVMOrcExecutorAddress)(uintptr_t)addr, flags}};
    pthread_mutex_lock(&jit->jit_lock);
    LLVMErrorRef e = LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(jit->lljit), LLVMOrcAbsoluteSymbols(&pair, 1));
    pthread_mutex_unlock(&jit->jit_lock);
    return e ? jit_error(d, "cannot define a runtime symbol", e) : 0;
}
