/* The JIT's register-tiled sgemm (compiler/matmul_llvm.c) against OpenBLAS's
 * cblas_sgemm, both on N threads, on square and MLP shapes.
 *
 *   matmul_bench [--threads N] [--trials T] [--seconds S] [--tile MRxNV]
 *                [--shape MxKxN]...
 *
 * For each shape and kernel variant: GFLOP/s = 2 M N K / time, the time
 * being the best of T trials of repeated calls lasting about S seconds each
 * (the best, because the noise on a shared machine only ever adds time;
 * many short trials catch the moments when the cores are ours).
 * Variants: "direct" reads B in place; "packed" first packs B into panels
 * (timed too: every call packs, as an unpacked caller would have to).
 * Rows are split over the OpenMP threads in whole register tiles; B's
 * panels are packed in parallel before a barrier. Results must agree with
 * OpenBLAS's to a float summation bound, or the bench fails.
 * On AVX-512 hosts OpenBLAS is made to use its SkylakeX kernels (see main). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arjit_jit.h"
#include "compiler/matmul_llvm.h"

typedef struct {
    int64_t m, k, n;
} shape;

typedef struct {
    const char *label;
    aj_mm_spec spec;            /* resolved */
    aj_mm_kernel_fn kernel;
    aj_mm_pack_fn pack;
} variant;

typedef struct {
    const shape *s;
    const float *a, *b;
    float *c, *bp;
    int threads;
} problem;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* one C = A B on p->threads threads */
static void run_jit(const variant *v, const problem *p) {
    const shape *s = p->s;
    int64_t tiles = (s->m + v->spec.mr - 1) / v->spec.mr, panels = aj_mm_panels(&v->spec, s->n);
#pragma omp parallel num_threads(p->threads)
    {
        int64_t ith = omp_get_thread_num(), nth = omp_get_num_threads();
        const float *b = p->b;
        int64_t ldb = s->n;
        if (v->pack) {
            v->pack(panels * ith / nth, panels * (ith + 1) / nth, s->n, s->k, p->b, ldb, p->bp);
            b = p->bp;
#pragma omp barrier
        }
        int64_t m0 = tiles * ith / nth * v->spec.mr, m1 = tiles * (ith + 1) / nth * v->spec.mr;
        if (m1 > s->m) m1 = s->m;
        v->kernel(m0, m1, s->n, s->k, p->a, s->k, b, ldb, p->c, s->n);
    }
}

static void run_blas(const problem *p) {
    const shape *s = p->s;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->m, (int)s->n, (int)s->k, 1.0f, p->a, (int)s->k,
                p->b, (int)s->n, 0.0f, p->c, (int)s->n);
}

/* best seconds per call of run(v, p) */
static double best_time(const variant *v, const problem *p, int trials, double seconds) {
    double best = INFINITY;
    v ? run_jit(v, p) : run_blas(p);   /* warm up: caches, thread pools */
    for (int t = 0; t < trials; t++) {
        int reps = 0;
        double t0 = now(), el;
        do {
            v ? run_jit(v, p) : run_blas(p);
            reps++;
        } while ((el = now() - t0) < seconds);
        if (el / reps < best) best = el / reps;
    }
    return best;
}

static int build(aj_jit *jit, variant *v, aj_diag *d) {
    aj_jit_module *m = aj_jit_module_new(jit, v->spec.name);
    if (aj_mm_emit(jit, m, &v->spec, d) || aj_jit_optimize(jit, m, d)) {
        aj_jit_module_free(m);
        return -1;
    }
    v->spec = aj_mm_resolve(jit, &v->spec);
    if (aj_jit_add(jit, m, d)) return -1;
    v->kernel = (aj_mm_kernel_fn)aj_jit_lookup(jit, v->spec.name, d);
    if (!v->kernel) return -1;
    if (aj_mm_packs_b(&v->spec)) {
        char name[256];
        snprintf(name, sizeof name, "%s_pack", v->spec.name);
        if (!(v->pack = (aj_mm_pack_fn)aj_jit_lookup(jit, name, d))) return -1;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: matmul_bench [--threads N] [--trials T] [--seconds S] [--tile MRxNV] [--shape MxKxN]...\n");
    exit(2);
}

int main(int argc, char **argv) {
    /* OpenBLAS 0.3.21 does not know Zen 4/5 and runs its AVX2 (Haswell)
     * kernels there; compare against its AVX-512 ones. The choice is made
     * when the library loads, so set it and start again (once: the
     * variable is then set). A value already in the environment is kept:
     * OPENBLAS_CORETYPE=Haswell shows the AVX2 kernels. */
    if (!getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx512f")) {
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        execv("/proc/self/exe", argv);   /* on failure, go on with what loaded */
    }
    int threads = 2, trials = 30, mr = 0, nv = 0, nshapes = 0;
    double seconds = 0.03;
    shape shapes[16];   /* see the --shape parsing for the limit */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) usage();
        i++;
        long long x, y, z;
        if (!strcmp(a, "--threads") && (threads = atoi(val)) >= 1) continue;
        if (!strcmp(a, "--trials") && (trials = atoi(val)) >= 1) continue;
        if (!strcmp(a, "--seconds") && (seconds = atof(val)) > 0) continue;
        if (!strcmp(a, "--tile") && sscanf(val, "%dx%d", &mr, &nv) == 2) continue;
        if (!strcmp(a, "--shape") && nshapes < 16 && sscanf(val, "%lldx%lldx%lld", &x, &y, &z) == 3 && x > 0 && y > 0 &&
            z > 0) {
            shapes[nshapes++] = (shape){x, y, z};
            continue;
        }
        usage();
    }
    if (!nshapes) {
        shapes[0] = (shape){512, 512, 512};
        shapes[1] = (shape){100, 784, 500};
        shapes[2] = (shape){100, 500, 784};
        nshapes = 3;
    }

    aj_diag d = {0};
    aj_jit *jit = aj_jit_new(&d);
    variant vs[2] = {{"direct", {.name = "mm_direct", .mr = mr, .nv = nv}, NULL, NULL},
                     {"packed", {.name = "mm_packed", .pack_b = 1, .mr = mr, .nv = nv}, NULL, NULL}};
    if (!jit || build(jit, &vs[0], &d) || build(jit, &vs[1], &d)) {
        aj_diag_print(&d, stderr);
        return 1;
    }
    openblas_set_num_threads(threads);
    double load[1] = {0};
    getloadavg(load, 1);
    printf("host %s, %d floats per vector, tile %d x %d vectors, %d thread%s; best of %d x %.2f s\n", aj_jit_cpu(jit),
           aj_jit_vector_width(jit), vs[0].spec.mr, vs[0].spec.nv, threads, threads > 1 ? "s" : "", trials, seconds);
    printf("OpenBLAS %s, kernels for %s; load average %.2f on %d CPUs\n", openblas_get_config(), openblas_get_corename(),
           load[0], omp_get_num_procs());
    printf("%-18s %8s %8s %9s %7s %7s %10s\n", "M x K x N", "direct", "packed", "OpenBLAS", "ratio", "best", "max|diff|");

    /* All JIT runs first, then all OpenBLAS runs, a pause between: each
     * library's idle threads spin for a while after a call and would steal
     * a core from the other's next run. */
    problem p[16];
    double gf[16][3];
    float *c[16][3];
    for (int si = 0; si < nshapes; si++) {
        const shape *s = &shapes[si];
        size_t na = (size_t)(s->m * s->k), nb = (size_t)(s->k * s->n), nc = (size_t)(s->m * s->n);
        float *a = malloc(na * 4), *b = malloc(nb * 4);
        float *bp = malloc((size_t)aj_mm_packed_floats(&vs[1].spec, s->n, s->k) * 4);
        for (int r = 0; r < 3; r++) c[si][r] = calloc(nc, 4);
        if (!a || !b || !bp || !c[si][0] || !c[si][1] || !c[si][2]) return 1;
        uint64_t seed = 42;
        for (size_t i = 0; i < na; i++) a[i] = (float)((seed = seed * 6364136223846793005ull + 1) >> 40) * 0x1p-24f - 0.5f;
        for (size_t i = 0; i < nb; i++) b[i] = (float)((seed = seed * 6364136223846793005ull + 1) >> 40) * 0x1p-24f - 0.5f;
        p[si] = (problem){s, a, b, NULL, bp, threads};
    }
    for (int r = 0; r < 3; r++) {
        for (int si = 0; si < nshapes; si++) {
            const shape *s = &shapes[si];
            p[si].c = c[si][r];
            double flop = 2.0 * (double)s->m * (double)s->n * (double)s->k;
            gf[si][r] = flop / best_time(r < 2 ? &vs[r] : NULL, &p[si], trials, seconds) * 1e-9;
        }
        if (r == 1) sleep(1);
    }

    int failed = 0;
    for (int si = 0; si < nshapes; si++) {
        const shape *s = &shapes[si];
        /* |C - Cref| <= 2 K u sum |a b| <= 2 K u K / 4 for entries in [-1/2, 1/2] */
        double diff = 0, bound = 2.0 * (double)s->k * 0x1p-24 * (double)s->k / 4;
        for (int r = 0; r < 2; r++)
            for (int64_t i = 0; i < s->m * s->n; i++) diff = fmax(diff, fabs((double)c[si][r][i] - c[si][2][i]));
        double best = fmax(gf[si][0], gf[si][1]);
        char name[64];
        snprintf(name, sizeof name, "%lldx%lldx%lld", (long long)s->m, (long long)s->k, (long long)s->n);
        printf("%-18s %8.1f %8.1f %9.1f %6.2fx %7s %10.2g%s\n", name, gf[si][0], gf[si][1], gf[si][2],
               best / gf[si][2], gf[si][0] >= gf[si][1] ? "direct" : "packed", diff, diff <= bound ? "" : "  MISMATCH");
        failed |= !(diff <= bound);
        free((void *)p[si].a), free((void *)p[si].b), free(p[si].bp);
        for (int r = 0; r < 3; r++) free(c[si][r]);
    }
    printf("(GFLOP/s = 2 M N K / best time per call; ratio = the better JIT variant / OpenBLAS)\n");
    aj_jit_free(jit);
    return failed;
}
