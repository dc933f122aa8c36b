/* arjit JIT: LLVM 19 ORC LLJIT behind a small C interface.
 *
 * Codegen builds one LLVM module per kernel (or per group of kernels) with
 * the LLVM C API, then hands it here:
 *
 *   aj_jit *jit = aj_jit_new(&d);
 *   aj_jit_module *m = aj_jit_module_new(jit, "k");   // context + module
 *   ... build functions in aj_jit_module_llvm(m) with LLVMBuilderRef ...
 *   aj_jit_optimize(jit, m, &d);                      // default<O3>, vectorised
 *   aj_jit_add(jit, m, &d);                           // m is consumed
 *   (or both at once, compiled on all cores, through the disk cache of
 *    object files: aj_jit_add_cached(jit, m, "engine options", &hit, &d))
 *   void (*f)(float *) = aj_jit_lookup(jit, "k", &d); // compiled here
 *   ...
 *   aj_jit_free(jit);                                 // f is dangling now
 *
 * Threads: modules may be built concurrently (each owns its LLVM context);
 * optimize/dump_asm serialise on the one optimiser target machine, and
 * add/lookup serialise on the JIT (concurrent add/lookup crashes LLJIT).
 * Errors go to an aj_diag (message prefixed "jit: "); nothing aborts. */
#ifndef ARJIT_JIT_H
#define ARJIT_JIT_H

#include "arjit.h"
#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct aj_jit aj_jit;
typedef struct aj_jit_module aj_jit_module;

/* A JIT for the host CPU (its name and features from the running LLVM).
 * NULL and d set when LLVM cannot target the host. */
aj_jit *aj_jit_new(aj_diag *d);
/* Frees the JIT and all code in it: every looked-up pointer dies. */
void aj_jit_free(aj_jit *jit);

/* What the host offers, as the optimiser's target machine sees it. */
const char *aj_jit_cpu(const aj_jit *jit);          /* e.g. "znver4" */
const char *aj_jit_features(const aj_jit *jit);     /* "+avx512f,+fma,..." */
int aj_jit_has_feature(const aj_jit *jit, const char *feature); /* "avx512f" */
/* Floats per native vector register: 16 (AVX-512), 8 (AVX/AVX2) or 4. */
int aj_jit_vector_width(const aj_jit *jit);
LLVMTargetMachineRef aj_jit_target_machine(aj_jit *jit);

/* A module under construction: its own thread-safe LLVM context, target
 * triple and data layout of the host. */
aj_jit_module *aj_jit_module_new(aj_jit *jit, const char *name);
LLVMContextRef aj_jit_module_context(const aj_jit_module *m);
LLVMModuleRef aj_jit_module_llvm(const aj_jit_module *m);
/* Free a module that was not added (NULL is fine). */
void aj_jit_module_free(aj_jit_module *m);

/* Run the LLVM verifier; 0, or -1 with the verifier's message in d. */
int aj_jit_verify(aj_jit_module *m, aj_diag *d);
/* Verify, then run "default<O3>" with the host target machine (loop and SLP
 * vectorisation, unrolling, interleaving). 0 or -1. */
int aj_jit_optimize(aj_jit *jit, aj_jit_module *m, aj_diag *d);
/* Hand the module to the JIT (verified first if it was not). Consumes m,
 * also on error. Code is generated at the first lookup. 0 or -1. */
int aj_jit_add(aj_jit *jit, aj_jit_module *m, aj_diag *d);
/* The address of a function (or global) added earlier; NULL and d set when
 * it is unknown or fails to compile/link. */
void *aj_jit_lookup(aj_jit *jit, const char *name, aj_diag *d);
/* Called once a program's kernels are looked up, so linked (and, with
 * ARJIT_JIT_DEBUG=gdb, registered with gdb): gdb resolves no breakpoint on
 * a kernel before that, so `break aj_jit_loaded`, run, then break on it. */
void aj_jit_loaded(void);

/* Make `name` resolve to addr in code added from now on (runtime helpers
 * that kernels call, e.g. the team barrier). 0, or -1 with d set. */
int aj_jit_define(aj_jit *jit, const char *name, void *addr, aj_diag *d);

/* Optimise m and add it as machine code, compiled on one thread per core:
 * its kernels (externally visible functions) are split into parts, each
 * optimised and emitted by its own target machine from a copy of the module
 * (with the internal functions it calls). m is consumed. 0, or -1 with d
 * set. */
int aj_jit_add_compiled(aj_jit *jit, aj_jit_module *m, aj_diag *d);
/* aj_jit_add_compiled through the disk cache, so that a second run of the
 * same model skips the optimiser and code generator. Pass m unoptimised:
 * the key is a 128-bit hash of m's IR text as given, the host CPU name and
 * features, the LLVM version and `flags` (the caller's say in the key, e.g.
 * engine and options; NULL is ""). On a hit the cached object files are
 * added; on a miss they are compiled, stored together (temp file + rename)
 * and added. m is consumed either way; *hit (if hit is not NULL) tells
 * which. A missing, truncated or corrupt cache file is a miss and is
 * rewritten. With the cache off (ARJIT_CACHE empty or "off") this is
 * aj_jit_add_compiled; a cache directory that cannot be created or written
 * is skipped, silently. Callable from several threads (file I/O runs
 * outside the locks). 0, or -1 with d set. */
int aj_jit_add_cached(aj_jit *jit, aj_jit_module *m, const char *flags, int *hit, aj_diag *d);
/* The cache directory from the environment: $ARJIT_CACHE, else
 * $XDG_CACHE_HOME/arjit, else $HOME/.cache/arjit. NULL when the cache is
 * off. Read afresh on each call; the string lives until this thread's next
 * call. */
const char *aj_jit_cache_dir(void);

/* Print the module's LLVM IR. */
void aj_jit_dump_ir(const aj_jit_module *m, FILE *f);
/* Print the host assembly the module compiles to (a clone is compiled: the
 * module itself is left as it was). 0 or -1. */
int aj_jit_dump_asm(aj_jit *jit, const aj_jit_module *m, FILE *f, aj_diag *d);

#ifdef __cplusplus
}
#endif
#endif
