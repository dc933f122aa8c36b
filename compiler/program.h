/* A compiled program: what the naive and fused engines run.
 *
 * The compiler (compiler/plan.c, fuse.c, codegen_llvm.c) turns one fn of a
 * module, under a binding where every dim is known, into
 *   - buffers: one per materialised value (plus scratch), each a slice of
 *     one arena placed by a memory plan, or a parameter, input or result
 *     tensor supplied by the caller, or constant data built at compile time;
 *   - kernels: LLVM functions with the one signature
 *         void k(i64 lo, i64 hi, const aj_kctx *ctx, ptr const *buf)
 *     that compute rows [lo, hi) of their iteration space (rows are the
 *     leading axes of the kernel's first output), so threads split rows;
 *     buf[a] is the memory of the kernel's argument a (buffer arg[a]), so a
 *     kernel may touch any number of buffers;
 *   - instructions: a flat list of kernel calls, copies and loops (a loop
 *     runs the next `nbody` instructions `steps` times: a recurrence).
 * The runtime (runtime/program.c) runs the instructions in one OpenMP
 * parallel region, each thread calling each kernel on its share of rows
 * through a libffi call interface prepared once (four arguments: lo, hi,
 * ctx and the table of its buffers' addresses), with a barrier between
 * kernels. */
#ifndef ARJIT_COMPILER_PROGRAM_H
#define ARJIT_COMPILER_PROGRAM_H

#include "arjit.h"
#include "arjit_jit.h"

#include <ffi.h>

enum { AJ_MAX_DEPTH = 8 };
enum { AJ_WHAT_LEN = 256 };
enum { AJ_RING = 64 };         /* steps of partial sums a split keeps per thread (fuse.c) */   /* a kernel's "what": the ops it runs, for dumps */

/* What every kernel can read besides its buffers: the step index of each
 * enclosing loop (outermost first) and the sampling seed. */
typedef struct {
    int64_t t[AJ_MAX_DEPTH];
    int64_t depth;
    uint64_t seed;
    int64_t ith, nth;        /* this thread and the team's size (collective kernels) */
    int64_t odd;             /* inside a fused recurrence: the step is odd (carries swap) */
    int64_t ring;            /* ... the step's slot in split sums' partials (step mod AJ_RING) */
} aj_kctx;

typedef enum {
    AJ_BUF_ARENA,   /* intermediate: arena + offset */
    AJ_BUF_PARAM,   /* module parameter idx */
    AJ_BUF_INPUT,   /* fn argument idx */
    AJ_BUF_RESULT,  /* fn result idx: the caller's result tensor */
    AJ_BUF_CONST,   /* data computed at compile time (masks) */
    AJ_BUF_THREAD   /* partial sums of a split reduction, for every thread but the
                     * first: (nth - 1) x numel from offset x (nth - 1) */
} aj_buf_kind;

typedef struct {
    aj_buf_kind kind;
    int idx;
    aj_dtype dtype;
    int64_t numel;
    int64_t offset;          /* ARENA: bytes from the arena's start; THREAD: see above */
    int swap;                /* a carry's ping-pong partner, -1: none */
    int swap_level;          /* ... swapped on odd iterations of the loop at this depth */
    int level;               /* loop depth of the graph that owns the value */
    int first, last;         /* lifetime in instruction positions (memory plan) */
    float *data;             /* CONST: owned */
    char name[64];           /* the graph value it holds, for dumps and errors */
} aj_buf;

typedef struct {
    char name[64];           /* LLVM symbol */
    int nargs, caparg;
    int *arg;                /* buffer ids, the table's entries in order (owned) */
    int nout;                /* the first nout args are written (NaN check) */
    int64_t rows;            /* iteration space */
    int line, line_end;      /* graph lines it came from */
    char what[AJ_WHAT_LEN];  /* the ops it runs, for dumps and the profile */
    const aj_graph *g;       /* host kernel (no LLVM lowering): run node `node` */
    int node;                /* ... through the interpreter; -1 for JIT kernels */
    int collective;          /* every thread calls it once (a fused recurrence) */
    char *body;              /* a fused recurrence: its sub-kernels, one line each (owned) */
    int in_arg[64];          /* host kernel: the argument of each node input */
    void *fn;
    ffi_cif cif;
    ffi_type *atype[4];      /* lo, hi, ctx, the buffer table */
} aj_kernel;

typedef enum { AJ_I_KERNEL, AJ_I_COPY, AJ_I_LOOP } aj_instr_kind;

typedef struct {
    aj_instr_kind kind;
    int kernel;              /* KERNEL */
    const char *why;         /* LOOP: why the fused planner left it a loop of kernels (static text), or NULL */
    int src, dst;            /* COPY: whole buffers (same size) */
    int nbody;               /* LOOP: the next nbody instructions are its body */
    int64_t steps;
    int reverse;
    int level;               /* depth of this instruction (LOOP: of the loop itself, 1-based) */
} aj_instr;

typedef struct aj_program {
    const aj_module *m;
    const aj_graph *fn;      /* what runs: `simplified` */
    aj_graph *simplified;    /* the fn after compiler/simplify.c (owned) */
    int fused, nan_check, profile;
    aj_buf *buf; int nbuf, capbuf;
    aj_kernel *kern; int nkern, capkern;
    aj_instr *ins; int nins, capins;
    int *result_buf;         /* buffer of each fn result */
    int64_t arena_bytes;     /* the memory plan's peak */
    int64_t naive_bytes;     /* the sum of every arena buffer: what no reuse would need */
    int64_t thread_bytes;    /* THREAD buffers: bytes for each thread after the first */
    double compile_ms;
    int cache_hit;           /* code came from the disk cache */
    aj_jit *jit;
    void *arena;             /* arena_bytes, allocated at the first run */
    void *partials;          /* (partials_nth - 1) x thread_bytes, grown when a run has more threads */
    int partials_nth;
    int64_t *prof_ns;        /* per kernel: [2k] nanoseconds, [2k+1] calls */
} aj_program;

#endif
