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
void aj_rt_bad_index(int64_t op, int64_t line, int64_t col, int64_t ix, int64_t pos, int64_t n);
void aj_rt_nan(int64_t op, int64_t line, int64_t col, int64_t is_nan);

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

/* "k3_add  # nade.graph:18-20  a = add; y = mul  rows=100": the kernel and
 * the graph lines it came from, after `lead` (indentation or a comment). */
static void print_kernel_head(const aj_program *P, const aj_kernel *k, const char *lead, FILE *f) {
    fprintf(f, "%s%s  # %s:%d", lead, k->name, P->m->path ? P->m->path : "-", k->line);
    if (k->line_end != k->line) fprintf(f, "-%d", k->line_end);
    fprintf(f, "  %s  rows=%lld%s\n", k->what, (long long)k->rows, k->node >= 0 ? "  (interpreter)" : "");
}

/* A fused recurrence's step, kernel by kernel, each line after `lead`. */
static void print_kernel_body(const aj_kernel *k, const char *lead, FILE *f) {
    for (const char *l = k->body; l && *l;) {
        const char *e = strchr(l, '\n');
        int n = e ? (int)(e - l) : (int)strlen(l);
        fprintf(f, "%s  | %.*s\n", lead, n, l);
        l += n + (e != NULL);
    }
}

/* Dump text (LLVM IR or assembly) with each kernel's code headed by the
 * graph lines it came from, as comments: a kernel starts at the line
 * "define ... @NAME(" of the IR or the label "NAME:" of the assembly. */
static void print_headed(const aj_program *P, const char *text, int asm_text, FILE *f) {
    const char *lead = asm_text ? "# " : "; ";
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) + 1 : strlen(l);
        const char *name = asm_text ? l : strncmp(l, "define ", 7) == 0 ? memchr(l, '@', n) : NULL;
        name += name && !asm_text;   /* past the '@' */
        for (int k = 0; name && k < P->nkern; k++) {
            const aj_kernel *kn = &P->kern[k];
            size_t len = strlen(kn->name);
            if (kn->node < 0 && (size_t)(l + n - name) > len && strncmp(name, kn->name, len) == 0 &&
                name[len] == (asm_text ? ':' : '(')) {
                fputc('\n', f);
                print_kernel_head(P, kn, lead, f);
                print_kernel_body(kn, lead, f);
                break;
            }
        }
        fwrite(l, 1, n, f);
        l += n;
    }
}

/* The optimised module as LLVM IR or assembly, kernels headed by their graph lines. */
static int dump_module(aj_program *P, aj_jit_module *mod, FILE *f, int asm_text, aj_diag *d) {
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) return aj_error(d, 0, 0, "out of memory for the dump");
    int rc = asm_text ? aj_jit_dump_asm(P->jit, mod, mem, d) : (aj_jit_dump_ir(mod, mem), 0);
    if (fclose(mem) != 0 && !rc) rc = aj_error(d, 0, 0, "out of memory for the dump");
    if (!rc) print_headed(P, text, asm_text, f);
    free(text);
    return rc;
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
    if (!(P->jit = aj_jit_new(d)) || aj_jit_define(P->jit, "aj_rt_barrier", (void *)aj_rt_barrier, d) ||
        aj_jit_define(P->jit, "aj_rt_bad_index", (void *)aj_rt_bad_index, d) ||
        aj_jit_define(P->jit, "aj_rt_nan", (void *)aj_rt_nan, d))
        goto fail;
    aj_jit_module *mod = aj_jit_module_new(P->jit, fn->name);
    aj_codegen *cg = mod ? aj_codegen_new(P->jit, mod) : NULL;
    if (!cg) {
        aj_jit_module_free(mod);
        aj_error(d, 0, 0, "out of memory");
        goto fail;
    }
    aj_codegen_set_nan_check(cg, o->nan_check);
    aj_codegen_set_source(cg, m->path);
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
        if ((o->dump_llvm && dump_module(P, mod, o->dump_llvm, 0, d)) ||
            (o->dump_asm && dump_module(P, mod, o->dump_asm, 1, d))) {
            aj_jit_module_free(mod);
            goto fail;
        }
        if (aj_jit_add(P->jit, mod, d)) goto fail;
    } else {
        char flags[64];
        /* v2: kernels take their buffers as a table; the code differs with
         * --check-nan (aj_codegen_set_nan_check) */
        snprintf(flags, sizeof flags, "arjit-program-v2 fused=%d%s", o->fused, o->nan_check ? " nan_check=1" : "");
        if (o->no_cache ? aj_jit_add_compiled(P->jit, mod, d)
                        : aj_jit_add_cached(P->jit, mod, flags, &P->cache_hit, d))
            goto fail;
    }
    for (int k = 0; k < P->nkern; k++) {
        aj_kernel *kn = &P->kern[k];
        if (kn->node < 0 && !(kn->fn = aj_jit_lookup(P->jit, kn->name, d))) goto fail;
        if (prepare_call(kn, d)) goto fail;
    }
    aj_jit_loaded();
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

int aj_program_print_host(const aj_program *P, const char *prefix, FILE *f) {
    int n = 0;
    for (int k = 0; k < P->nkern; k++) {
        const aj_kernel *kn = &P->kern[k];
        if (kn->node < 0) continue;
        const aj_node *nd = &kn->g->node[kn->node];
        fprintf(f, "%skernel %d: %s", prefix, k, aj_op_info(nd->op)->name);
        if (nd->op == AJ_OP_EXTERN)
            fprintf(f, " '%s'%s", P->m->ext[aj_attr_int(nd, "fn")].name, aj_attr_int(nd, "grad") ? " (gradient)" : "");
        fprintf(f, " runs on the interpreter (%s:%d)\n", P->m->path ? P->m->path : "-", kn->line);
        n++;
    }
    return n;
}

static const char *const buf_kinds[] = {"arena", "param", "input", "result", "const", "per-thread"};

void aj_program_print(const aj_program *P, FILE *f) {
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
            char lead[2 * AJ_MAX_DEPTH + 8];
            snprintf(lead, sizeof lead, "%*s", ind, "");
            print_kernel_head(P, k, lead, f);
            fprintf(f, "%*s  (", ind, "");
            for (int a = 0; a < k->nargs; a++) {
                const aj_buf *b = &P->buf[k->arg[a]];
                fprintf(f, "%s%s%s %s[%lld]", a ? ", " : "", a < k->nout ? "out " : "", buf_kinds[b->kind], b->name,
                        (long long)b->numel);
            }
            fprintf(f, ")\n");
            print_kernel_body(k, lead, f);
        }
    }
    while (depth-- > 0) fprintf(f, "%*s}\n", 2 * depth, "");
    aj_program_print_host(P, "# ", f);
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
