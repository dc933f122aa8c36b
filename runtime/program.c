/* Running a compiled program (compiler/program.h) on OpenMP threads.
 *
 * One parallel region per run. Every thread walks the same instruction list;
 * at a kernel each takes its share of the kernel's rows and calls it
 * through the kernel's prepared libffi interface (lo, hi, the context and
 * the table of the kernel's buffers' addresses), then all meet at a
 * barrier (aj_rt_barrier; a fork/join per kernel would cost ~1 us each, a
 * barrier about 0.1 us).
 * Loops set the step index t in each thread's own kernel context; carries
 * swap their ping-pong buffers on odd iterations, so no data moves.
 * Host kernels (ops without an LLVM lowering) run the interpreter's kernel
 * on thread 0. */
#include "arjit_compile.h"

#include "compiler/program.h"
#include "runtime/interp.h"

#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int n_threads;

/* The team's barrier, after every kernel and between the sub-kernels of a
 * fused recurrence (thousands per run): sense-reversing, 0.07 us against
 * OpenMP's 0.23 us with both threads running (NADE's naive step at 2
 * threads: 47 ms against 52). It spins briefly, then yields the CPU rather
 * than burn a time slice while the thread it waits for is descheduled; that
 * alone does not save a busy machine (a CPU hog beside a 2-thread run makes
 * NADE's fused step 70 ms either way, 31 ms on 1 thread): use fewer threads
 * than free cores. */
typedef struct {
    _Atomic int arrived, sense;
    int nth;
    /* the first fault a kernel met: an index out of range (aj_rt_bad_index)
     * or, under --check-nan, a NaN or Inf inside a fused kernel (aj_rt_nan);
     * the kernel's number in the run, INT64_MAX while none; its arguments */
    _Atomic int bad;
    _Atomic int64_t bad_kernel;
    enum { FAULT_INDEX, FAULT_NAN } fault;
    int64_t bad_at[6];
} team;

static _Thread_local team *my_team;
static _Thread_local int my_sense;
static _Thread_local int64_t my_kernel;   /* kernels this thread has entered in this run: the same on all */

enum { SPINS = 2000 };

void aj_rt_barrier(void) {
    team *t = my_team;
    if (!t || t->nth == 1) return;   /* one thread, or a kernel called outside a run */
    int s = my_sense = !my_sense;
    if (atomic_fetch_add_explicit(&t->arrived, 1, memory_order_acq_rel) == t->nth - 1) {
        atomic_store_explicit(&t->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&t->sense, s, memory_order_release);   /* publishes every thread's writes */
        return;
    }
    for (int i = 0; atomic_load_explicit(&t->sense, memory_order_acquire) != s; i++) {
        if (i < SPINS) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

/* Called by gather and one_hot kernels on an index outside [0, n) (which
 * they clamp, as a kernel cannot stop): the first of the run is kept, and
 * run_kernel reports it after the kernel, as the interpreter would. The
 * kernel's number tells the threads still leaving the barrier before it
 * (a fast thread may already be in the next kernel) to go on to it. */
static void fault(int kind, const int64_t at[6]) {
    team *t = my_team;
    if (!t || atomic_exchange_explicit(&t->bad, 1, memory_order_relaxed)) return;
    t->fault = kind;
    memcpy(t->bad_at, at, sizeof t->bad_at);
    atomic_store_explicit(&t->bad_kernel, my_kernel, memory_order_release);
}

void aj_rt_bad_index(int64_t op, int64_t line, int64_t col, int64_t ix, int64_t pos, int64_t n) {
    fault(FAULT_INDEX, (int64_t[6]){op, line, col, ix, pos, n});
}

/* Called under --check-nan by a fused kernel whose op (at line:col) made a
 * NaN (is_nan) or an Inf: reported like a bad index, at the op's line. */
void aj_rt_nan(int64_t op, int64_t line, int64_t col, int64_t is_nan) {
    fault(FAULT_NAN, (int64_t[6]){op, line, col, is_nan, 0, 0});
}

void aj_set_threads(int n) { n_threads = n > 0 ? n : 0; }
int aj_threads(void) { return n_threads > 0 ? n_threads : omp_get_max_threads(); }

typedef struct {
    aj_program *P;
    void **base;             /* each buffer's memory */
    int64_t iter[AJ_MAX_DEPTH + 1];   /* iterations done by the loop at each depth */
    aj_kctx ctx;
    void **tab;              /* this thread's table of a kernel's buffers, as long as the longest */
    int ith, nth;
    volatile int *failed;    /* shared: set by thread 0, read after a barrier */
    aj_diag *d;
} runner;

static void *resolve(const runner *r, int b) {
    const aj_buf *bf = &r->P->buf[b];
    if (bf->swap >= 0 && (r->iter[bf->swap_level] & 1)) return r->base[bf->swap];
    return r->base[b];
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static aj_tensor as_tensor(const aj_module *m, const aj_value *v, void *data) {
    aj_tensor t = {.dtype = v->type.dtype, .rank = v->type.rank, .data = data};
    for (int a = 0; a < t.rank; a++) t.shape[a] = aj_dim_bind(v->type.dim[a], &m->bind).off;
    return t;
}

/* thread 0: the interpreter's kernel for the node, into our buffers */
static int run_host(runner *r, const aj_kernel *k) {
    const aj_graph *g = k->g;
    const aj_node *n = &g->node[k->node];
    aj_tensor in[64], out[8];
    for (int j = 0; j < n->nin && j < 64; j++) in[j] = as_tensor(r->P->m, &g->val[n->in[j]], resolve(r, k->arg[k->in_arg[j]]));
    if (aj_interp_node_steps(r->P->m, g, k->node, in, out, r->ctx.seed, r->ctx.t, (int)r->ctx.depth, r->d)) return -1;
    for (int o = 0; o < n->nout; o++) {
        memcpy(resolve(r, k->arg[o]), out[o].data, (size_t)aj_tensor_numel(&out[o]) * 4);
        aj_tensor_free(&out[o]);
    }
    return 0;
}

/* " at step t=.. of its recurrence" into buf (empty outside one) */
static const char *step_at(const runner *r, char *buf, size_t size) {
    buf[0] = 0;
    if (r->ctx.depth)
        snprintf(buf, size, " at step t=%lld of its recurrence", (long long)r->ctx.t[r->ctx.depth - 1]);
    return buf;
}

/* the first NaN or Inf in kernel k's outputs: an error naming it */
static int check_finite(runner *r, const aj_kernel *k) {
    for (int o = 0; o < k->nout; o++) {
        const aj_buf *b = &r->P->buf[k->arg[o]];
        if (b->dtype != AJ_F32) continue;
        const float *x = resolve(r, k->arg[o]);
        for (int64_t i = 0; i < b->numel; i++)
            if (!isfinite(x[i])) {
                char at[96];
                step_at(r, at, sizeof at);
                char lines[48] = "";   /* a fused kernel: the NaN came from one of its lines */
                if (k->line_end > k->line) snprintf(lines, sizeof lines, "lines %d-%d: ", k->line, k->line_end);
                return aj_error(r->d, k->line, 0, "nan check: kernel %s (%s%s) wrote %s to %s[%lld]%s", k->name, lines,
                                k->what, isnan(x[i]) ? "NaN" : x[i] > 0 ? "+Inf" : "-Inf", b->name, (long long)i, at);
            }
    }
    return 0;
}

/* k(lo, hi, ctx, table of its buffers) through its prepared call interface */
static void call_kernel(runner *r, const aj_kernel *k, int64_t lo, int64_t hi) {
    const aj_kctx *ctxp = &r->ctx;
    void **tab = r->tab;
    void *av[4] = {&lo, &hi, &ctxp, &tab};
    for (int a = 0; a < k->nargs; a++) tab[a] = resolve(r, k->arg[a]);
    ffi_call((ffi_cif *)&k->cif, FFI_FN(k->fn), NULL, av);
}

static void run_kernel(runner *r, int ki) {
    aj_program *P = r->P;
    aj_kernel *k = &P->kern[ki];
    int64_t t0 = P->profile && r->ith == 0 ? now_ns() : 0;
    my_kernel++;
    if (k->node >= 0) {
        if (r->ith == 0 && run_host(r, k)) *r->failed = 1;
    } else if (k->collective) {   /* it splits its own work */
        call_kernel(r, k, 0, 1);
    } else {
        int64_t chunk = (k->rows + r->nth - 1) / r->nth, lo = r->ith * chunk, hi = lo + chunk;
        if (hi > k->rows) hi = k->rows;
        if (lo < hi) call_kernel(r, k, lo, hi);
    }
    aj_rt_barrier();
    if (atomic_load_explicit(&my_team->bad_kernel, memory_order_acquire) <= my_kernel) {   /* all stop here */
        const int64_t *a = my_team->bad_at;
        if (r->ith == 0 && my_team->fault == FAULT_INDEX)
            aj_index_error(r->d, (aj_op)a[0], (int)a[1], (int)a[2], a[3], a[4], a[5]);
        else if (r->ith == 0)
            aj_error(r->d, (int)a[1], (int)a[2], "nan check: kernel %s (lines %d-%d: %s): %s made %s%s", k->name,
                     k->line, k->line_end, k->what, aj_op_info((aj_op)a[0])->name, a[3] ? "NaN" : "+-Inf",
                     step_at(r, (char[96]){0}, 96));
        *r->failed = 1;
        return;
    }
    if (r->ith == 0) {
        if (P->profile) P->prof_ns[2 * ki] += now_ns() - t0, P->prof_ns[2 * ki + 1]++;
        if (P->nan_check && !*r->failed && check_finite(r, k)) *r->failed = 1;
    }
    if (P->nan_check) aj_rt_barrier();   /* everyone sees *failed before going on */
}

static void run_copy(runner *r, const aj_instr *in) {
    const aj_buf *s = &r->P->buf[in->src];
    int64_t n = s->numel, chunk = (n + r->nth - 1) / r->nth, lo = r->ith * chunk, hi = lo + chunk;
    if (hi > n) hi = n;
    if (lo < hi) memcpy((char *)resolve(r, in->dst) + lo * 4, (char *)resolve(r, in->src) + lo * 4, (size_t)(hi - lo) * 4);
    aj_rt_barrier();
}

/* instructions [from, to) at loop depth `depth` */
static void run_range(runner *r, int from, int to) {
    aj_program *P = r->P;
    for (int p = from; p < to && !*r->failed; p++) {
        const aj_instr *in = &P->ins[p];
        if (in->kind == AJ_I_KERNEL) {
            run_kernel(r, in->kernel);
        } else if (in->kind == AJ_I_COPY) {
            run_copy(r, in);
        } else {
            int L = in->level;
            for (int64_t s = 0; s < in->steps && !*r->failed; s++) {
                r->iter[L] = s;
                r->ctx.t[L - 1] = in->reverse ? in->steps - 1 - s : s;
                r->ctx.depth = L;
                run_range(r, p + 1, p + 1 + in->nbody);
            }
            r->iter[L] = 0;
            r->ctx.depth = L - 1;
            p += in->nbody;
        }
    }
}

int aj_program_run(aj_program *P, const aj_tensor *params, const aj_tensor *inputs, aj_tensor *results,
                   uint64_t seed, aj_diag *d) {
    const aj_graph *g = P->fn;
    if (!P->arena && P->arena_bytes && !(P->arena = aligned_alloc(64, (size_t)(P->arena_bytes + 63) / 64 * 64)))
        return aj_error(d, 0, 0, "out of memory: the arena of %s needs %lld bytes", g->name, (long long)P->arena_bytes);
    int nth = aj_threads();
    if (P->thread_bytes && nth > P->partials_nth) {   /* every thread after the first: its own partials */
        free(P->partials);
        P->partials_nth = 0;
        if (!(P->partials = aligned_alloc(64, (size_t)(nth - 1) * (size_t)P->thread_bytes)))
            return aj_error(d, 0, 0, "out of memory: the partial sums of %s need %lld bytes for %d threads", g->name,
                            (long long)P->thread_bytes * (nth - 1), nth);
        P->partials_nth = nth;
    }
    int maxargs = 1;
    for (int k = 0; k < P->nkern; k++)
        if (P->kern[k].nargs > maxargs) maxargs = P->kern[k].nargs;
    void **base = calloc((size_t)P->nbuf + 1, sizeof *base);
    void **tabs = calloc((size_t)nth * (size_t)maxargs, sizeof *tabs);   /* a table per thread */
    if (!base || !tabs) {
        free(base), free(tabs);
        return aj_error(d, 0, 0, "out of memory");
    }
    int nres = 0, rc = -1;
    for (; nres < g->nresult; nres++) {
        results[nres] = aj_tensor_of_type(&g->val[g->result[nres]].type);
        if (!results[nres].data && aj_tensor_numel(&results[nres])) {
            aj_error(d, 0, 0, "out of memory for result %s", g->val[g->result[nres]].name);
            goto out;
        }
    }
    for (int b = 0; b < P->nbuf; b++) {
        const aj_buf *bf = &P->buf[b];
        switch (bf->kind) {
        case AJ_BUF_ARENA: base[b] = (char *)P->arena + bf->offset; break;
        case AJ_BUF_PARAM: base[b] = params[bf->idx].data; break;
        case AJ_BUF_INPUT: base[b] = inputs[bf->idx].data; break;
        case AJ_BUF_RESULT: base[b] = results[bf->idx].data; break;
        case AJ_BUF_CONST: base[b] = bf->data; break;
        case AJ_BUF_THREAD: base[b] = nth > 1 ? (char *)P->partials + bf->offset * (nth - 1) : NULL; break;
        }
    }
    volatile int failed = 0;
    team tm = {0};
    atomic_init(&tm.bad_kernel, INT64_MAX);
#pragma omp parallel num_threads(nth)
    {
        runner r = {.P = P, .base = base, .ith = omp_get_thread_num(), .nth = omp_get_num_threads(),
                    .failed = &failed, .d = d};
        r.tab = tabs + (size_t)r.ith * (size_t)maxargs;
        if (r.ith == 0) tm.nth = r.nth;
#pragma omp barrier
        my_team = &tm, my_sense = 0, my_kernel = 0;
        r.ctx.seed = seed;
        r.ctx.ith = r.ith, r.ctx.nth = r.nth;
        run_range(&r, 0, P->nins);
    }
    rc = failed ? -1 : 0;
out:
    if (rc)
        for (int k = 0; k < nres; k++) aj_tensor_free(&results[k]);
    free(base), free(tabs);
    return rc;
}
