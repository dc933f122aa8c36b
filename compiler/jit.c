/* The JIT object: ORC LLJIT plus an optimiser target machine for the host,
 * in the call sequence of shared/LLVM-NOTES.md.
 *
 * Two identical target machines describe the host (its CPU name and
 * features, CodeGenLevelAggressive): `tm` runs the IR optimiser and the
 * assembly dump, the other becomes LLJIT's code generator. So the dump is
 * the code that runs (LLJIT's own host detection would generate at the
 * default level). Without a target machine the optimiser does not vectorise
 * at all, so `tm` is not optional. `tm` also emits the object files of the
 * disk cache (aj_jit_add_cached), so cached code is LLJIT's code too. */
#include "arjit_jit.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Error.h>
#include <llvm-c/ExecutionEngine.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/OrcEE.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct aj_jit {
    LLVMOrcLLJITRef lljit;
    LLVMTargetRef target;       /* the host's: compile threads make their own machines */
    char *triple;               /* LLVMDisposeMessage */
    LLVMTargetMachineRef tm;
    pthread_mutex_t jit_lock;   /* add + lookup: LLJIT crashed when they raced */
    pthread_mutex_t tm_lock;    /* a TargetMachine is not safe to share */
    char *cpu, *features;       /* LLVMDisposeMessage */
    int vector_width;
    /* ARJIT_JIT_DEBUG's listeners (LLVM's own singletons), NULL: not asked for */
    LLVMJITEventListenerRef gdb, perf;
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

static LLVMTargetMachineRef host_tm(const aj_jit *jit) {
    return LLVMCreateTargetMachine(jit->target, jit->triple, jit->cpu, jit->features, LLVMCodeGenLevelAggressive,
                                   LLVMRelocDefault, LLVMCodeModelJITDefault);
}

/* ARJIT_JIT_DEBUG=gdb,perf (either or both) registers every object the
 * JIT loads with gdb's JIT interface (breakpoints and backtraces in
 * kernels, at their graph lines) and writes perf's jitdump (perf inject
 * --jit, then perf report/annotate name the kernels and graph lines). The
 * listeners need RuntimeDyld's object layer, not LLJIT's default JITLink
 * one; unset, nothing changes. */
static int debug_listeners(aj_jit *jit, aj_diag *d) {
    const char *env = getenv("ARJIT_JIT_DEBUG");
    size_t n;
    for (const char *p = env; p && *p; p += n + (p[n] == ',')) {
        n = strcspn(p, ",");
        if (n == 3 && !strncmp(p, "gdb", n)) jit->gdb = LLVMCreateGDBRegistrationListener();
        else if (n != 4 || strncmp(p, "perf", n))
            return aj_error(d, 0, 0, "ARJIT_JIT_DEBUG: unknown '%.*s' in '%s' (a list of gdb, perf)", (int)n, p, env);
        else if (!(jit->perf = LLVMCreatePerfJITEventListener()))
            return aj_error(d, 0, 0, "ARJIT_JIT_DEBUG=perf: this LLVM was built without perf support");
    }
    return 0;
}

static LLVMOrcObjectLayerRef listened_object_layer(void *ctx, LLVMOrcExecutionSessionRef es, const char *triple) {
    (void)triple;
    aj_jit *jit = ctx;
    LLVMOrcObjectLayerRef layer = LLVMOrcCreateRTDyldObjectLinkingLayerWithSectionMemoryManager(es);
    if (jit->gdb) LLVMOrcRTDyldObjectLinkingLayerRegisterJITEventListener(layer, jit->gdb);
    if (jit->perf) LLVMOrcRTDyldObjectLinkingLayerRegisterJITEventListener(layer, jit->perf);
    return layer;
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
    if (debug_listeners(jit, d)) {
        aj_jit_free(jit);
        return NULL;
    }

    /* the optimiser's target machine: never a hard-coded CPU name */
    char *err = NULL;
    jit->triple = LLVMGetDefaultTargetTriple();
    if (LLVMGetTargetFromTriple(jit->triple, &jit->target, &err)) {
        msg_error(d, "no target for the host triple", err);
        aj_jit_free(jit);
        return NULL;
    }
    jit->cpu = LLVMGetHostCPUName();
    jit->features = LLVMGetHostCPUFeatures();
    jit->tm = host_tm(jit);
    LLVMTargetMachineRef jit_tm = host_tm(jit);
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
    if (jit->gdb || jit->perf) LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator(builder, listened_object_layer, jit);
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
    LLVMDisposeMessage(jit->triple);
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

/* LLVM prints its diagnostics to stderr unless the context has a handler:
 * among them the loop vectoriser's "loop not vectorized" remarks and
 * warnings, for a loop it was told to vectorise (codegen_llvm.c's masked
 * tails) and could not, in the middle of a training run's output. The code
 * is right either way, so remarks, notes and warnings are dropped; errors
 * still print. */
static void on_diagnostic(LLVMDiagnosticInfoRef di, void *ctx) {
    (void)ctx;
    if (LLVMGetDiagInfoSeverity(di) != LLVMDSError) return;
    char *msg = LLVMGetDiagInfoDescription(di);
    fprintf(stderr, "arjit: LLVM error: %s\n", msg);
    LLVMDisposeMessage(msg);
}

aj_jit_module *aj_jit_module_new(aj_jit *jit, const char *name) {
    aj_jit_module *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->tsc = LLVMOrcCreateNewThreadSafeContext();
    m->ctx = LLVMOrcThreadSafeContextGetContext(m->tsc);
    LLVMContextSetDiagnosticHandler(m->ctx, on_diagnostic, NULL);
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

/* default<O3> with vectorisation, unrolling and interleaving, for tm */
static LLVMErrorRef run_o3(LLVMModuleRef mod, LLVMTargetMachineRef tm) {
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
    LLVMPassBuilderOptionsSetLoopUnrolling(opts, 1);
    LLVMPassBuilderOptionsSetLoopInterleaving(opts, 1);
    LLVMErrorRef e = LLVMRunPasses(mod, "default<O3>", tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    return e;
}

int aj_jit_optimize(aj_jit *jit, aj_jit_module *m, aj_diag *d) {
    if (!m->verified && aj_jit_verify(m, d)) return -1;
    pthread_mutex_lock(&jit->tm_lock);
    LLVMErrorRef e = run_o3(m->mod, jit->tm);
    pthread_mutex_unlock(&jit->tm_lock);
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

/* A place for gdb to stop (arjit_jit.h): kept out of line, and not empty
 * so that it is not folded into another function. */
__attribute__((noinline)) void aj_jit_loaded(void) { __asm__ volatile(""); }

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

/* ---------------------------------------------------------------- disk cache
 *
 * One file per module, <dir>/<32 hex digits of the key>.o: a header, then
 * the module's object files (one per compile thread, see below). The header lets a
 * reader reject a file that is truncated, corrupt or (against all odds)
 * another key's, instead of handing LLJIT garbage. */

/* Bump when what a key stands for changes while its inputs do not:
 * aj_jit_optimize's pipeline, the target machines' settings, the format. */
#define CACHE_VERSION "arjit-cache-2"
#define CACHE_MAGIC "arjitobj"

typedef struct {
    char magic[8];          /* CACHE_MAGIC, no NUL */
    uint64_t key[2];
    uint64_t size;          /* of the payload that follows */
    uint64_t checksum;      /* fnv1a of the payload */
} cache_header;

/* Two unrelated 64-bit hashes make the 128-bit key: FNV-1a, and a
 * multiply-rotate hash (the rotation lets high bits reach the low ones,
 * which FNV's multiply alone never does). */
#define FNV_BASIS 0xcbf29ce484222325ull

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mulrot(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x9e3779b97f4a7c15ull;
        h = h << 23 | h >> 41;
    }
    return h;
}

/* What the code depends on: the IR as given (its text includes the target
 * triple and data layout), the CPU it is compiled for, the compiler that
 * compiles it, and whatever the caller says. Each part is hashed with its
 * NUL, so ("ab", "c") and ("a", "bc") differ. */
static void cache_key(const aj_jit *jit, const aj_jit_module *m, const char *flags, uint64_t key[2]) {
    unsigned major, minor, patch;
    LLVMGetVersion(&major, &minor, &patch);
    char version[64];
    snprintf(version, sizeof version, "%s LLVM %u.%u.%u", CACHE_VERSION, major, minor, patch);
    char *ir = LLVMPrintModuleToString(m->mod);
    const char *parts[] = {version, jit->cpu, jit->features, flags ? flags : "", ir};
    key[0] = FNV_BASIS;
    key[1] = 0x243f6a8885a308d3ull;     /* pi's digits: any nonzero start */
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = strlen(parts[i]) + 1;
        key[0] = fnv1a(key[0], parts[i], n);
        key[1] = mulrot(key[1], parts[i], n);
    }
    LLVMDisposeMessage(ir);
}

/* The cache directory into buf: 0, or -1 when the cache is off, there is
 * no directory to use, or the path does not fit. */
static int cache_dir(char *buf, size_t size) {
    const char *env = getenv("ARJIT_CACHE"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (env) {
        if (!*env || strcmp(env, "off") == 0) return -1;
        n = snprintf(buf, size, "%s", env);
    } else if (xdg && xdg[0] == '/') {  /* the XDG spec says to ignore a relative one */
        n = snprintf(buf, size, "%s/arjit", xdg);
    } else if (home && *home) {
        n = snprintf(buf, size, "%s/.cache/arjit", home);
    } else {
        return -1;
    }
    return n > 0 && (size_t)n < size ? 0 : -1;
}

const char *aj_jit_cache_dir(void) {
    static _Thread_local char buf[PATH_MAX];
    return cache_dir(buf, sizeof buf) ? NULL : buf;
}

/* mkdir -p. Mode 0700: the cache holds code this process will run, so no
 * one else should be able to write it. */
static int make_dirs(char *path) {
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        int failed = mkdir(path, 0700) != 0 && errno != EEXIST;
        *p = c;
        if (failed) return -1;
        if (!c) return 0;
    }
}

/* The payload stored at path under key (malloc'd, its size in *size), or
 * NULL when there is none or it is not intact. */
static char *cache_read(const char *path, const uint64_t key[2], size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *data = NULL;
    cache_header h;
    struct stat st;
    /* the size from the header is trusted only once the file's size agrees */
    if (fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, CACHE_MAGIC, sizeof h.magic) == 0 &&
        h.key[0] == key[0] && h.key[1] == key[1] && h.size > 0 && fstat(fileno(f), &st) == 0 &&
        (uint64_t)st.st_size == sizeof h + h.size && (data = malloc(h.size))) {
        if (fread(data, 1, h.size, f) != h.size || fnv1a(FNV_BASIS, data, h.size) != h.checksum) {
            free(data);
            data = NULL;
        }
        *size = h.size;
    }
    fclose(f);
    return data;
}

/* Store a payload at path. It is written to a temporary file beside
 * it and renamed over it, so a reader (another process, too) sees the old
 * file, the new one or none, never half of one. No fsync: a file cut short
 * by a crash fails the reader's checks and is rewritten. On failure the
 * cache stays as it was. */
static void cache_write(const char *path, const uint64_t key[2], const char *data, size_t size) {
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof tmp) return;
    int fd = mkstemp(tmp);
    if (fd < 0) return;
    cache_header h = {.key = {key[0], key[1]}, .size = size, .checksum = fnv1a(FNV_BASIS, data, size)};
    memcpy(h.magic, CACHE_MAGIC, sizeof h.magic);
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        unlink(tmp);
        return;
    }
    int ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(data, 1, size, f) == size;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) unlink(tmp);
}

/* ------------------------------------------------------ parallel compile
 *
 * LLVM optimises and generates code for a module on one thread: a GPT's 47
 * kernels took 9 s cold. So a module is compiled in parts, one per core:
 * each part is a bitcode copy of the whole module in a context of its own,
 * with the other parts' kernels (the module's externally visible
 * functions) deleted; the internal functions a kernel calls (its body, its
 * sgemm, vector maths) come along, and O3's dead-code pass drops the rest.
 * Kernels go largest first (instructions, with those of what they call) to
 * the lightest part so far. Each part is optimised and emitted by its own
 * target machine on its own thread; the objects are added one by one, and
 * stored together in one cache file:
 *   u64 count, u64 size[count], the objects one after another. */

enum { MAX_PARTS = 16 };

typedef struct {
    const aj_jit *jit;
    LLVMMemoryBufferRef bitcode;    /* the whole module, read by every part */
    const int *part_of;             /* the part of each kernel, in module order */
    int part;
    LLVMMemoryBufferRef obj;        /* out */
    aj_diag d;                      /* out, on error */
} part_job;

static int is_kernel(LLVMValueRef f) {
    return !LLVMIsDeclaration(f) && LLVMGetLinkage(f) == LLVMExternalLinkage;
}

/* Instructions of f and, once each, of the internal functions it calls. */
static long weigh(LLVMValueRef f, LLVMValueRef *seen, int *nseen, int cap) {
    for (int i = 0; i < *nseen; i++)
        if (seen[i] == f) return 0;
    if (*nseen < cap) seen[(*nseen)++] = f;
    long w = 0;
    for (LLVMBasicBlockRef b = LLVMGetFirstBasicBlock(f); b; b = LLVMGetNextBasicBlock(b))
        for (LLVMValueRef in = LLVMGetFirstInstruction(b); in; in = LLVMGetNextInstruction(in)) {
            w++;
            LLVMValueRef callee = LLVMIsACallInst(in) ? LLVMGetCalledValue(in) : NULL;
            if (callee && LLVMIsAFunction(callee) && !LLVMIsDeclaration(callee) &&
                LLVMGetLinkage(callee) == LLVMInternalLinkage)
                w += weigh(callee, seen, nseen, cap);
        }
    return w;
}

static void *compile_part(void *arg) {
    part_job *job = arg;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMContextSetDiagnosticHandler(ctx, on_diagnostic, NULL);
    LLVMModuleRef mod = NULL;
    LLVMTargetMachineRef tm = NULL;
    char *err = NULL;
    if (LLVMParseBitcodeInContext2(ctx, job->bitcode, &mod)) {
        aj_error(&job->d, 0, 0, "jit: cannot read back the module's bitcode");
        goto out;
    }
    int k = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod), next; f; f = next) {
        next = LLVMGetNextFunction(f);
        if (is_kernel(f) && job->part_of[k++] != job->part) LLVMDeleteFunction(f);
    }
    LLVMErrorRef e;
    if (!(tm = host_tm(job->jit))) {
        aj_error(&job->d, 0, 0, "jit: cannot create a target machine for %s", job->jit->cpu);
    } else if ((e = run_o3(mod, tm))) {
        jit_error(&job->d, "optimizer", e);
    } else if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &err, &job->obj)) {
        msg_error(&job->d, "cannot emit an object file", err);
        job->obj = NULL;
    }
out:
    if (tm) LLVMDisposeTargetMachine(tm);
    if (mod) LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return NULL;
}

/* One part per core ($ARJIT_COMPILE_THREADS overrides), at most one per
 * kernel and MAX_PARTS. */
static int compile_parts_count(int nkern) {
    const char *env = getenv("ARJIT_COMPILE_THREADS");
    long cpus = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    int n = cpus < 1 ? 1 : cpus > MAX_PARTS ? MAX_PARTS : (int)cpus;
    return n < nkern ? n : nkern > 0 ? nkern : 1;
}

/* Optimise and compile m (consumed) into *nobj objects in objs[MAX_PARTS].
 * 0, or -1 with d set. */
static int compile_objects(aj_jit *jit, aj_jit_module *m, LLVMMemoryBufferRef *objs, int *nobj, aj_diag *d) {
    *nobj = 0;
    if (!m->verified && aj_jit_verify(m, d)) {
        aj_jit_module_free(m);
        return -1;
    }
    int nkern = 0, nfn = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(m->mod); f; f = LLVMGetNextFunction(f), nfn++) nkern += is_kernel(f);
    int nparts = compile_parts_count(nkern), rc = 0;
    int *part_of = calloc((size_t)nkern + 1, sizeof *part_of);
    long *w = calloc((size_t)nkern + 1, sizeof *w), load[MAX_PARTS] = {0};
    LLVMValueRef *kern = calloc((size_t)nkern + 1, sizeof *kern), *seen = calloc((size_t)nfn + 1, sizeof *seen);
    part_job job[MAX_PARTS] = {{0}};
    pthread_t tid[MAX_PARTS];
    LLVMMemoryBufferRef bitcode = NULL;
    if (!part_of || !w || !kern || !seen) {
        rc = aj_error(d, 0, 0, "jit: out of memory");
        goto out;
    }
    int k = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(m->mod); f; f = LLVMGetNextFunction(f))
        if (is_kernel(f)) {
            int nseen = 0;
            kern[k] = f;
            w[k++] = weigh(f, seen, &nseen, nfn);
        }
    /* largest first, each to the lightest part */
    for (int done = 0; done < nkern; done++) {
        int big = -1, light = 0;
        for (int i = 0; i < nkern; i++)
            if (kern[i] && (big < 0 || w[i] > w[big])) big = i;
        for (int p = 1; p < nparts; p++)
            if (load[p] < load[light]) light = p;
        part_of[big] = light, load[light] += w[big], kern[big] = NULL;
    }
    bitcode = LLVMWriteBitcodeToMemoryBuffer(m->mod);
    aj_jit_module_free(m);
    m = NULL;
    if (!bitcode) {
        rc = aj_error(d, 0, 0, "jit: cannot write the module's bitcode");
        goto out;
    }
    int started = 0;
    for (int p = 0; p < nparts; p++) job[p] = (part_job){.jit = jit, .bitcode = bitcode, .part_of = part_of, .part = p};
    for (int p = 1; p < nparts && pthread_create(&tid[p], NULL, compile_part, &job[p]) == 0; p++) started = p;
    compile_part(&job[0]);
    for (int p = 1; p <= started; p++) pthread_join(tid[p], NULL);
    for (int p = started + 1; p < nparts; p++) compile_part(&job[p]);   /* no thread to be had */
    for (int p = 0; p < nparts; p++) {
        if (job[p].d.set && !rc) {
            *d = job[p].d;
            rc = -1;
        }
        if (job[p].obj) objs[(*nobj)++] = job[p].obj;
    }
    if (rc) {
        for (int i = 0; i < *nobj; i++) LLVMDisposeMemoryBuffer(objs[i]);
        *nobj = 0;
    }
out:
    if (m) aj_jit_module_free(m);
    if (bitcode) LLVMDisposeMemoryBuffer(bitcode);
    free(part_of), free(w), free(kern), free(seen);
    return rc;
}

/* objs into one cache payload (the layout above); NULL when out of memory */
static char *pack_objects(LLVMMemoryBufferRef *objs, int nobj, size_t *size) {
    size_t head = (1 + (size_t)nobj) * sizeof(uint64_t), n = head;
    for (int i = 0; i < nobj; i++) n += LLVMGetBufferSize(objs[i]);
    char *p = malloc(n);
    if (!p) return NULL;
    uint64_t u = (uint64_t)nobj;
    memcpy(p, &u, sizeof u);
    size_t at = head;
    for (int i = 0; i < nobj; i++) {
        u = LLVMGetBufferSize(objs[i]);
        memcpy(p + (1 + i) * sizeof u, &u, sizeof u);
        memcpy(p + at, LLVMGetBufferStart(objs[i]), u);
        at += u;
    }
    *size = n;
    return p;
}

/* A payload back into objects; -1 when its layout does not add up. */
static int unpack_objects(const char *p, size_t size, const char *path, LLVMMemoryBufferRef *objs, int *nobj) {
    uint64_t n, len;
    *nobj = 0;
    if (size < sizeof n) return -1;
    memcpy(&n, p, sizeof n);
    if (n < 1 || n > MAX_PARTS || size < (1 + n) * sizeof n) return -1;
    size_t at = (1 + n) * sizeof n;
    for (uint64_t i = 0; i < n; i++) {
        memcpy(&len, p + (1 + i) * sizeof len, sizeof len);
        if (len == 0 || len > size - at) break;
        objs[(*nobj)++] = LLVMCreateMemoryBufferWithMemoryRangeCopy(p + at, len, path);
        at += len;
    }
    if ((uint64_t)*nobj == n && at == size) return 0;
    for (int i = 0; i < *nobj; i++) LLVMDisposeMemoryBuffer(objs[i]);
    *nobj = 0;
    return -1;
}

/* Hand objects to LLJIT, which takes each buffer, also on error. */
static int add_objects(aj_jit *jit, LLVMMemoryBufferRef *objs, int nobj, aj_diag *d) {
    int rc = 0;
    pthread_mutex_lock(&jit->jit_lock);
    for (int i = 0; i < nobj; i++) {
        LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(jit->lljit, LLVMOrcLLJITGetMainJITDylib(jit->lljit), objs[i]);
        if (e && !rc) rc = jit_error(d, "cannot add object file", e);
        else if (e) LLVMConsumeError(e);
    }
    pthread_mutex_unlock(&jit->jit_lock);
    return rc;
}

int aj_jit_add_compiled(aj_jit *jit, aj_jit_module *m, aj_diag *d) {
    LLVMMemoryBufferRef objs[MAX_PARTS];
    int nobj;
    return compile_objects(jit, m, objs, &nobj, d) ? -1 : add_objects(jit, objs, nobj, d);
}

int aj_jit_add_cached(aj_jit *jit, aj_jit_module *m, const char *flags, int *hit, aj_diag *d) {
    if (hit) *hit = 0;
    char path[PATH_MAX];
    uint64_t key[2];
    int use_cache = cache_dir(path, sizeof path) == 0 && make_dirs(path) == 0;
    if (use_cache) {
        cache_key(jit, m, flags, key);
        size_t n = strlen(path);
        use_cache = snprintf(path + n, sizeof path - n, "/%016llx%016llx.o", (unsigned long long)key[0],
                             (unsigned long long)key[1]) < (int)(sizeof path - n);
    }
    if (!use_cache) return aj_jit_add_compiled(jit, m, d);

    LLVMMemoryBufferRef objs[MAX_PARTS];
    int nobj = 0;
    size_t size = 0;
    char *payload = cache_read(path, key, &size);
    if (payload && unpack_objects(payload, size, path, objs, &nobj) == 0) {
        aj_jit_module_free(m);
        if (hit) *hit = 1;
    } else {
        free(payload);
        if (compile_objects(jit, m, objs, &nobj, d)) return -1;
        if ((payload = pack_objects(objs, nobj, &size))) cache_write(path, key, payload, size);
    }
    free(payload);
    return add_objects(jit, objs, nobj, d);
}
