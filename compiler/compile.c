/* aj_program_compile: plan (naive or fused), emit every kernel into one LLVM
 * module, optimise it for the host (or load it from the disk cache), JIT
 * it, look every kernel up and prepare its libffi call, place the buffers. */
#include "arjit_compile.h"

#include "compiler/fuse.h"
#include "compiler/plan.h"
#include "compiler/simplify.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void aj_rt_barrier(void);   /* runtime/program.c */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void aj_program_free(aj_program *P) {
    if (!P) return;
    for (int b = 0; b < P->nbuf; b++) free(P->buf[b].data);
    free(P->buf);
    for (int k = 0; k < P->nkern; k++) free(P->kern[k].body), free(P->kern[k].arg);
    free(P->kern);
    free(P->ins);
    free(P->result_buf);
    free(P->arena);
    free(P->partials);
    free(P->prof_ns);
    aj_jit_free(P->jit);
    aj_graph_free(P->simplified);
    free(P);
}

/* every kernel: lo, hi, ctx, then the table of its buffers */
static int prepare_call(aj_kernel *k, aj_diag *d) {
    k->atype[0] = &ffi_type_sint64, k->atype[1] = &ffi_type_sint64;
    k->atype[2] = &ffi_type_pointer, k->atype[3] = &ffi_type_pointer;
    if (ffi_prep_cif(&k->cif, FFI_DEFAULT_ABI, 4, &ffi_type_void, k->atype) != FFI_OK)
        return aj_error(d, 0, 0, "libffi cannot prepare a call of %s", k->name);
    return 0;
}

aj_program *aj_program_compile(const aj_module *m, const aj_graph *fn, const aj_compile_opts *o, aj_diag *d) {
    double t0 = now_ms();
    aj_program *P = calloc(1, sizeof *P);
    if (!P) {
        aj_error(d, 0, 0, "out of memory");
        return NULL;
    }
    P->m = m, P->fused = o->fused, P->nan_check = o->nan_check, P->profile = o->profile;
    /* compile a simplified copy: autodiff leaves dead recomputation in
     * reverse bodies, optimizers repeat constants */
    if (!(P->simplified = aj_graph_clone(fn)) || aj_simplify(m, P->simplified, NULL, d)) {
        if (!d->set) aj_error(d, 0, 0, "out of memory");
        goto fail;
    }
    P->fn = P->simplified;
    if (!(P->jit = aj_jit_new(d)) || aj_jit_define(P->jit, "aj_rt_barrier", (void *)aj_rt_barrier, d)) goto fail;
    aj_jit_module *mod = aj_jit_module_new(P->jit, fn->name);
    aj_codegen *cg = mod ? aj_codegen_new(P->jit, mod) : NULL;
    if (!cg) {
        aj_jit_module_free(mod);
        aj_error(d, 0, 0, "out of memory");
        goto fail;
    }
    aj_planner pl = {.P = P, .cg = cg, .m = m, .d = d};
    int rc = o->fused ? aj_plan_fused(&pl) : aj_plan_naive(&pl);
    aj_codegen_free(cg);
    if (rc) {
        if (!d->set) aj_error(d, 0, 0, "out of memory while compiling %s", fn->name);
        aj_jit_module_free(mod);
        goto fail;
    }
    if (o->dump_llvm || o->dump_asm) {   /* the dumps show exactly what runs */
        if (aj_jit_optimize(P->jit, mod, d)) {
            aj_jit_module_free(mod);
            goto fail;
        }
        if (o->dump_llvm) aj_jit_dump_ir(mod, o->dump_llvm);
        if (o->dump_asm && aj_jit_dump_asm(P->jit, mod, o->dump_asm, d)) {
            aj_jit_module_free(mod);
            goto fail;
        }
        if (aj_jit_add(P->jit, mod, d)) goto fail;
    } else {
        char flags[64];
        /* v2: kernels take their buffers as a table (the IR says so too) */
        snprintf(flags, sizeof flags, "arjit-program-v2 fused=%d", o->fused);
        if (o->no_cache ? aj_jit_optimize(P->jit, mod, d) || aj_jit_add(P->jit, mod, d)
                        : aj_jit_add_cached(P->jit, mod, flags, &P->cache_hit, d))
            goto fail;
    }
    for (int k = 0; k < P->nkern; k++) {
        aj_kernel *kn = &P->kern[k];
        if (kn->node < 0 && !(kn->fn = aj_jit_lookup(P->jit, kn->name, d))) goto fail;
        if (prepare_call(kn, d)) goto fail;
    }
    aj_plan_memory(P);
    if (!(P->prof_ns = calloc((size_t)P->nkern + 1, 2 * sizeof *P->prof_ns))) {
        aj_error(d, 0, 0, "out of memory");
        goto fail;
    }
    P->compile_ms = now_ms() - t0;
    return P;
fail:
    aj_program_free(P);
    return NULL;
}

void aj_program_stats_get(const aj_program *P, aj_program_stats *s) {
    memset(s, 0, sizeof *s);
    s->kernels = P->nkern;
    for (int k = 0; k < P->nkern; k++) s->host_kernels += P->kern[k].node >= 0;
    for (int p = 0; p < P->nins; p++) s->unfused_loops += P->ins[p].why != NULL;
    /* calls per run: a loop's body counts `steps` times, nested loops multiply */
    int64_t mult[AJ_MAX_DEPTH + 2] = {1};
    int end[AJ_MAX_DEPTH + 2] = {P->nins}, depth = 0;
    for (int p = 0; p < P->nins; p++) {
        while (depth > 0 && p >= end[depth]) depth--;
        const aj_instr *in = &P->ins[p];
        if (in->kind == AJ_I_KERNEL) s->calls += mult[depth];
        if (in->kind == AJ_I_LOOP && depth + 1 <= AJ_MAX_DEPTH) {
            depth++;
            mult[depth] = mult[depth - 1] * in->steps;
            end[depth] = p + 1 + in->nbody;
        }
    }
    s->arena_bytes = P->arena_bytes;
    s->naive_bytes = P->naive_bytes;
    s->thread_bytes = P->thread_bytes;
    s->compile_ms = P->compile_ms;
    s->cache_hit = P->cache_hit;
}

static const char *const buf_kinds[] = {"arena", "param", "input", "result", "const", "per-thread"};

void aj_program_print(const aj_program *P, FILE *f) {
    const char *path = P->m->path ? P->m->path : "-";
    fprintf(f, "# program %s (%s): %d kernels, %d buffers, arena %lld bytes (%lld without reuse)", P->fn->name,
            P->fused ? "fused" : "naive", P->nkern, P->nbuf, (long long)P->arena_bytes, (long long)P->naive_bytes);
    if (P->thread_bytes) fprintf(f, ", %lld more per thread after the first", (long long)P->thread_bytes);
    fputc('\n', f);
    int depth = 0, end[AJ_MAX_DEPTH + 2] = {P->nins};
    for (int p = 0; p < P->nins; p++) {
        while (depth > 0 && p >= end[depth]) {
            depth--;
            fprintf(f, "%*s}\n", 2 * depth, "");
        }
        const aj_instr *in = &P->ins[p];
        int ind = 2 * depth;
        if (in->kind == AJ_I_LOOP) {
            fprintf(f, "%*sloop %lld steps%s {", ind, "", (long long)in->steps, in->reverse ? " reversed" : "");
            fprintf(f, in->why ? "  # not fused, a loop of kernels: %s\n" : "\n", in->why);
            if (depth + 1 <= AJ_MAX_DEPTH) end[++depth] = p + 1 + in->nbody;
        } else if (in->kind == AJ_I_COPY) {
            fprintf(f, "%*scopy %s -> %s\n", ind, "", P->buf[in->src].name, P->buf[in->dst].name);
        } else {
            const aj_kernel *k = &P->kern[in->kernel];
            fprintf(f, "%*s%s  # %s:%d", ind, "", k->name, path, k->line);
            if (k->line_end != k->line) fprintf(f, "-%d", k->line_end);
            fprintf(f, "  %s  rows=%lld%s\n", k->what, (long long)k->rows, k->node >= 0 ? "  (interpreter)" : "");
            fprintf(f, "%*s  (", ind, "");
            for (int a = 0; a < k->nargs; a++) {
                const aj_buf *b = &P->buf[k->arg[a]];
                fprintf(f, "%s%s%s %s[%lld]", a ? ", " : "", a < k->nout ? "out " : "", buf_kinds[b->kind], b->name,
                        (long long)b->numel);
            }
            fprintf(f, ")\n");
            for (const char *l = k->body; l && *l;) {   /* a fused recurrence's step, kernel by kernel */
                const char *e = strchr(l, '\n');
                int n = e ? (int)(e - l) : (int)strlen(l);
                fprintf(f, "%*s  | %.*s\n", ind, "", n, l);
                l += n + (e != NULL);
            }
        }
    }
    while (depth-- > 0) fprintf(f, "%*s}\n", 2 * depth, "");
}

void aj_program_profile(const aj_program *P, FILE *f) {
    int *order = malloc(((size_t)P->nkern + 1) * sizeof *order);
    if (!order) return;
    double total = 0;
    for (int k = 0; k < P->nkern; k++) order[k] = k, total += (double)P->prof_ns[2 * k];
    for (int i = 1; i < P->nkern; i++)
        for (int j = i; j > 0 && P->prof_ns[2 * order[j]] > P->prof_ns[2 * order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    fprintf(f, "%-28s %10s %10s %7s  %s\n", "kernel", "ms", "calls", "share", "what (graph line)");
    for (int i = 0; i < P->nkern; i++) {
        const aj_kernel *k = &P->kern[order[i]];
        double ns = (double)P->prof_ns[2 * order[i]];
        fprintf(f, "%-28s %10.3f %10lld %6.1f%%  %s (line %d)\n", k->name, ns / 1e6,
                (long long)P->prof_ns[2 * order[i] + 1], total > 0 ? 100 * ns / total : 0, k->what, k->line);
    }
    free(order);
}
