/* arjit's compiled engines: a fn of a module compiled to LLVM kernels and
 * run on OpenMP threads.
 *
 *   aj_compile_opts o = { .fused = 1 };
 *   aj_program *p = aj_program_compile(m, fn, &o, &d);   // all dims bound
 *   aj_program_run(p, params, inputs, results, seed, &d);  // as aj_interp_run
 *   aj_program_free(p);
 *
 * docs/compiler.md walks through the stages; `arjit dump --stage
 * opt|fused|llvm|asm` prints them and `arjit bench` measures them. */
#ifndef ARJIT_COMPILE_H
#define ARJIT_COMPILE_H

#include "arjit.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct aj_program aj_program;

typedef struct {
    int fused;               /* 0: naive (one kernel per op); 1: fused */
    int nan_check;           /* stop at the first kernel that writes NaN or Inf, naming it */
    int profile;             /* time every kernel (aj_program_profile) */
    int no_cache;            /* skip the disk cache */
    FILE *dump_llvm;         /* print the optimised LLVM IR here (NULL: no) */
    FILE *dump_asm;          /* print the machine code here (NULL: no) */
} aj_compile_opts;

/* Compile fn of m (inferred with every dim bound). NULL with d set on error. */
aj_program *aj_program_compile(const aj_module *m, const aj_graph *fn, const aj_compile_opts *o, aj_diag *d);
/* Run it: the contract of aj_interp_run (results allocated here, caller
 * frees). Threads: aj_set_threads. 0, or -1 with d set. */
int aj_program_run(aj_program *p, const aj_tensor *params, const aj_tensor *inputs, aj_tensor *results,
                   uint64_t seed, aj_diag *d);
void aj_program_free(aj_program *p);

/* OpenMP threads for every program run from now on (0: OpenMP's default). */
void aj_set_threads(int n);
int aj_threads(void);

typedef struct {
    int kernels;             /* kernels in the program */
    int host_kernels;        /* ... of which run on the interpreter (no lowering) */
    int unfused_loops;       /* recurrences the fused planner left loops of kernels (dump says why) */
    int64_t calls;           /* kernel calls per run (loops counted out) */
    int64_t arena_bytes;     /* peak of the memory plan */
    int64_t naive_bytes;     /* every intermediate in its own buffer */
    int64_t thread_bytes;    /* split reductions' partials: this much more per thread after the first */
    double compile_ms;
    int cache_hit;
} aj_program_stats;

void aj_program_stats_get(const aj_program *p, aj_program_stats *s);
/* The kernels and their graph lines, buffers and rows, as text. */
void aj_program_print(const aj_program *p, FILE *f);
/* One line per kernel that runs on the interpreter inside the program (the
 * AJ_HOST ops: custom `extern` ops), each after `prefix`:
 *   kernel 7: extern 'swish' runs on the interpreter (model.graph:12)
 * Returns how many. aj_program_print ends with these lines after "# ". */
int aj_program_print_host(const aj_program *p, const char *prefix, FILE *f);
/* Per-kernel time of the runs so far (compiled with .profile), slowest first. */
void aj_program_profile(const aj_program *p, FILE *f);

/* ---------------------------------------------------------------- engines */

/* The naive and fused engines (aj_engine_run, as aj_interp_run): each fn is
 * compiled at its first run and kept for the module, binding and engine. */
int aj_naive_run(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                 aj_tensor *results, uint64_t seed, aj_diag *d);
int aj_fused_run(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                 aj_tensor *results, uint64_t seed, aj_diag *d);
/* The program those engines run for fn (compiled now if needed; owned by the cache). */
aj_program *aj_engine_program(const aj_module *m, const aj_graph *fn, int fused, aj_diag *d);
/* Options for programs the engines compile from now on (.fused is ignored). */
void aj_engine_set_options(const aj_compile_opts *o);
/* Free the programs compiled for m: call before aj_module_free(m). */
void aj_engine_forget(const aj_module *m);

#ifdef __cplusplus
}
#endif
#endif
