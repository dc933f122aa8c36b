/* The JIT foundation: the LLJIT wrapper (compiler/jit.c), the vectorisable
 * math (compiler/vecmath.c) and the register-tiled sgemm
 * (compiler/matmul_llvm.c), each against C: libm in double precision and a
 * naive triple loop. Nothing here times anything (bench/ does). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arjit_jit.h"
#include "compiler/matmul_llvm.h"
#include "compiler/vecmath.h"

static aj_jit *jit;

static int setup(void **state) {
    (void)state;
    aj_diag d = {0};
    jit = aj_jit_new(&d);
    if (!jit) aj_diag_print(&d, stderr);
    return jit ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    aj_jit_free(jit);
    return 0;
}

/* optimise, add and look up `name`, failing the test on any error */
static void *compile(aj_jit_module *m, const char *name) {
    aj_diag d = {0};
    int ok = aj_jit_optimize(jit, m, &d) == 0;
    if (!ok) aj_jit_module_free(m);
    ok = ok && aj_jit_add(jit, m, &d) == 0;
    void *f = ok ? aj_jit_lookup(jit, name, &d) : NULL;
    if (!f) fprintf(stderr, "%s\n", d.msg);
    assert_non_null(f);
    return f;
}

/* ---------------------------------------------------------------- the JIT object */

/* float axpb(float a, float x, float b) = a * x + b */
static void test_call(void **state) {
    (void)state;
    aj_jit_module *m = aj_jit_module_new(jit, "axpb");
    LLVMContextRef ctx = aj_jit_module_context(m);
    LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx), pt[3] = {f32, f32, f32};
    LLVMValueRef fn = LLVMAddFunction(aj_jit_module_llvm(m), "axpb", LLVMFunctionType(f32, pt, 3, 0));
    LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
    LLVMBuildRet(b, aj_vm_fma(b, LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2)));
    LLVMDisposeBuilder(b);
    float (*axpb)(float, float, float) = (float (*)(float, float, float))compile(m, "axpb");
    assert_true(axpb(2, 3, 1) == 7.0f);
    assert_true(axpb(-0.5f, 4, 0.25f) == -1.75f);
    assert_true(aj_jit_vector_width(jit) >= 4);
    assert_non_null(aj_jit_cpu(jit));
}

/* JIT'd code calls libm and libc from this process */
static void test_process_symbols(void **state) {
    (void)state;
    aj_jit_module *m = aj_jit_module_new(jit, "sym");
    LLVMContextRef ctx = aj_jit_module_context(m);
    LLVMModuleRef mod = aj_jit_module_llvm(m);
    LLVMTypeRef f64 = LLVMDoubleTypeInContext(ctx), cosft = LLVMFunctionType(f64, &f64, 1, 0);
    LLVMValueRef fn = LLVMAddFunction(mod, "my_cos", cosft);
    /* a call the optimiser cannot fold: cos of an argument */
    LLVMValueRef cosfn = LLVMAddFunction(mod, "cos", cosft);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
    LLVMValueRef x = LLVMGetParam(fn, 0);
    LLVMBuildRet(b, LLVMBuildCall2(b, cosft, cosfn, &x, 1, ""));
    LLVMDisposeBuilder(b);
    double (*my_cos)(double) = (double (*)(double))compile(m, "my_cos");
    assert_true(fabs(my_cos(1.0) - cos(1.0)) < 1e-15);
}

/* bad IR, unknown names and undefined symbols are errors, not aborts */
static void test_errors(void **state) {
    (void)state;
    aj_diag d = {0};
    assert_null(aj_jit_lookup(jit, "no_such_function", &d));
    assert_true(d.set && strstr(d.msg, "jit: ") == d.msg);

    /* a block without a terminator */
    aj_jit_module *m = aj_jit_module_new(jit, "bad");
    LLVMContextRef ctx = aj_jit_module_context(m);
    LLVMValueRef fn = LLVMAddFunction(aj_jit_module_llvm(m), "bad",
                                      LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, 0));
    LLVMAppendBasicBlockInContext(ctx, fn, "entry");
    d = (aj_diag){0};
    assert_int_equal(aj_jit_optimize(jit, m, &d), -1);
    assert_non_null(strstr(d.msg, "invalid IR"));
    d = (aj_diag){0};
    assert_int_equal(aj_jit_add(jit, m, &d), -1);   /* consumed anyway */

    /* a call of a function nowhere to be found fails at lookup */
    m = aj_jit_module_new(jit, "undef");
    ctx = aj_jit_module_context(m);
    LLVMTypeRef vt = LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, 0);
    fn = LLVMAddFunction(aj_jit_module_llvm(m), "calls_undef", vt);
    LLVMValueRef callee = LLVMAddFunction(aj_jit_module_llvm(m), "aj_no_such_symbol_anywhere", vt);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
    LLVMBuildCall2(b, vt, callee, NULL, 0, "");
    LLVMBuildRetVoid(b);
    LLVMDisposeBuilder(b);
    d = (aj_diag){0};
    assert_int_equal(aj_jit_add(jit, m, &d), 0);
    assert_null(aj_jit_lookup(jit, "calls_undef", &d));
    print_message("%s\n", d.msg);
    assert_non_null(strstr(d.msg, "aj_no_such_symbol_anywhere"));
}

/* Modules built, optimised, added and looked up from several threads at
 * once (LLJIT itself crashed on concurrent add/lookup: the wrapper locks). */
static void test_threads(void **state) {
    (void)state;
    enum { NT = 8 };
    int got[NT] = {0};
#pragma omp parallel for num_threads(4) schedule(dynamic, 1)
    for (int t = 0; t < NT; t++) {
        char name[32];
        snprintf(name, sizeof name, "const_%d", t);
        aj_jit_module *m = aj_jit_module_new(jit, name);
        LLVMContextRef ctx = aj_jit_module_context(m);
        LLVMTypeRef i32 = LLVMInt32TypeInContext(ctx);
        LLVMValueRef fn = LLVMAddFunction(aj_jit_module_llvm(m), name, LLVMFunctionType(i32, NULL, 0, 0));
        LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
        LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
        LLVMBuildRet(b, LLVMConstInt(i32, (unsigned long long)(3 * t + 1), 0));
        LLVMDisposeBuilder(b);
        aj_diag d = {0};
        if (aj_jit_optimize(jit, m, &d))
            aj_jit_module_free(m);
        else if (aj_jit_add(jit, m, &d) == 0) {
            int (*f)(void) = (int (*)(void))aj_jit_lookup(jit, name, &d);
            got[t] = f ? f() : -1;
        }
    }
    for (int t = 0; t < NT; t++) assert_int_equal(got[t], 3 * t + 1);
}

/* ---------------------------------------------------------------- vecmath */

typedef LLVMValueRef (*vm_emit)(LLVMBuilderRef, LLVMValueRef);

/* void <name>(float *out, const float *in, i64 n): out[i] = f(in[i]), in
 * explicit vectors of `lanes` floats while they fit, then one at a time
 * (lanes = 1: a plain scalar loop, left to the loop vectoriser). */
static void emit_map(aj_jit_module *m, const char *name, vm_emit f, int lanes) {
    LLVMContextRef ctx = aj_jit_module_context(m);
    LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx), i64 = LLVMInt64TypeInContext(ctx);
    LLVMTypeRef ptr = LLVMPointerTypeInContext(ctx, 0), pt[3] = {ptr, ptr, i64};
    LLVMValueRef fn = LLVMAddFunction(aj_jit_module_llvm(m), name,
                                      LLVMFunctionType(LLVMVoidTypeInContext(ctx), pt, 3, 0));
    LLVMValueRef out = LLVMGetParam(fn, 0), in = LLVMGetParam(fn, 1), n = LLVMGetParam(fn, 2);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(ctx, fn, "entry");
    LLVMPositionBuilderAtEnd(b, entry);
    LLVMValueRef start = LLVMConstInt(i64, 0, 0);
    LLVMBasicBlockRef from = entry;
    for (int pass = lanes > 1 ? 0 : 1; pass < 2; pass++) {
        /* pass 0: vectors while i + lanes <= n; pass 1: single floats */
        int w = pass ? 1 : lanes;
        LLVMTypeRef ty = w > 1 ? LLVMVectorType(f32, (unsigned)w) : f32;
        LLVMValueRef end = LLVMBuildSub(b, n, LLVMConstInt(i64, (unsigned)w - 1, 0), "");
        LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(ctx, fn, "head");
        LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(ctx, fn, "body");
        LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(ctx, fn, "exit");
        LLVMBuildBr(b, head);
        LLVMPositionBuilderAtEnd(b, head);
        LLVMValueRef i = LLVMBuildPhi(b, i64, "i");
        LLVMAddIncoming(i, &start, &from, 1);
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, i, end, ""), body, exit);
        LLVMPositionBuilderAtEnd(b, body);
        LLVMValueRef x = LLVMBuildLoad2(b, ty, LLVMBuildGEP2(b, f32, in, &i, 1, ""), "");
        LLVMSetAlignment(x, 4);
        LLVMSetAlignment(LLVMBuildStore(b, f(b, x), LLVMBuildGEP2(b, f32, out, &i, 1, "")), 4);
        LLVMValueRef next = LLVMBuildAdd(b, i, LLVMConstInt(i64, (unsigned)w, 0), "");
        LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
        LLVMAddIncoming(i, &next, &latch, 1);
        LLVMBuildBr(b, head);
        LLVMPositionBuilderAtEnd(b, exit);
        start = i;
        from = exit;
    }
    LLVMBuildRetVoid(b);
    LLVMDisposeBuilder(b);
}

typedef struct {
    const char *name;
    vm_emit emit;
    double (*ref)(double);
    double tol;     /* bound on |y - ref| / max(|ref|, floor) */
    double floor;   /* 1 for sin and cos: absolute error, as their zeros are
                     * multiples of pi no float hits, so relative error there
                     * measures only how close the float came */
} vm_case;

static double ref_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double ref_softplus(double x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }

/* The bound: 4e-7, about 7 float ulps (2^-24 = 6e-8 each, and the
 * result's own rounding is one half of one); measured 0.8-1.5e-7 on Zen4,
 * and 2.4e-7 for the sigmoid, whose e^r is a shorter polynomial (vecmath.c).
 * Without FMA hardware llvm.fmuladd rounds twice: still within it. */
static const vm_case vm_cases[] = {
    {"exp", aj_vm_exp, exp, 4e-7, 0},
    {"log", aj_vm_log, log, 4e-7, 0},
    {"tanh", aj_vm_tanh, tanh, 4e-7, 0},
    {"sigmoid", aj_vm_sigmoid, ref_sigmoid, 4e-7, 0},
    {"softplus", aj_vm_softplus, ref_softplus, 4e-7, 0},
    {"sin", aj_vm_sin, sin, 2e-7, 1},
    {"cos", aj_vm_cos, cos, 2e-7, 1},
};
enum { SIN = 5, COS = 6 };
enum { NCASES = sizeof vm_cases / sizeof vm_cases[0] };

typedef void (*map_fn)(float *out, const float *in, int64_t n);

/* maps[c][0]: explicit vectors, maps[c][1]: scalar loop */
static map_fn maps[NCASES][2];

static void build_maps(void) {
    if (maps[0][0]) return;
    static const char *suffix[2] = {"v", "s"};
    for (int kind = 0; kind < 2; kind++) {
        aj_jit_module *m = aj_jit_module_new(jit, suffix[kind]);
        char name[NCASES][32];
        for (int c = 0; c < NCASES; c++) {
            snprintf(name[c], sizeof name[c], "%s_%s", vm_cases[c].name, suffix[kind]);
            emit_map(m, name[c], vm_cases[c].emit, kind == 0 ? aj_jit_vector_width(jit) : 1);
        }
        aj_diag d = {0};
        assert_int_equal(aj_jit_optimize(jit, m, &d), 0);
        if (kind == 1 && aj_jit_has_feature(jit, "avx512f")) {
            /* the scalar loops were vectorised to zmm width: no libm calls got in the way */
            char *ir = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&ir, &len);
            aj_jit_dump_ir(m, f);
            fclose(f);
            assert_non_null(strstr(ir, "<16 x float>"));
            assert_null(strstr(ir, "@expf"));
            free(ir);
        }
        assert_int_equal(aj_jit_add(jit, m, &d), 0);
        for (int c = 0; c < NCASES; c++) {
            maps[c][kind] = (map_fn)aj_jit_lookup(jit, name[c], &d);
            assert_non_null(maps[c][kind]);
        }
    }
}

/* Run case c on n inputs, both loop kinds; return the worst relative error
 * and check both kinds agree bit for bit (same code, wider or not). */
static double sweep(int c, const float *x, int64_t n, float *worst_x) {
    float *y = malloc((size_t)n * sizeof *y), *ys = malloc((size_t)n * sizeof *ys);
    assert_non_null(y);
    assert_non_null(ys);
    maps[c][0](y, x, n);
    maps[c][1](ys, x, n);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = vm_cases[c].ref(x[i]);
        double e = fabs(y[i] - r) / fmax(fabs(r), vm_cases[c].floor);
        if (!(e <= worst)) worst = e, *worst_x = x[i];   /* NaN counts as worst */
        if (memcmp(&y[i], &ys[i], sizeof(float))) fail_msg("%s(%.9g): vector %.9g, scalar %.9g", vm_cases[c].name, x[i], y[i], ys[i]);
    }
    free(y);
    free(ys);
    return worst;
}

static float *linspace(double a, double b, int64_t n) {
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(a + (b - a) * (double)i / (double)(n - 1));
    return x;
}

static void check_case(int c, const float *x, int64_t n, const char *range) {
    float wx = 0;
    double e = sweep(c, x, n, &wx);
    print_message("%-8s over %-22s max rel err %.3g (at %.9g), bound %.1g\n", vm_cases[c].name, range, e, wx,
                  vm_cases[c].tol);
    assert_true(e <= vm_cases[c].tol);
}

enum { NSWEEP = 1 << 21 };

static void test_vecmath_accuracy(void **state) {
    (void)state;
    build_maps();
    float *x = linspace(-87, 88, NSWEEP);
    check_case(0, x, NSWEEP, "[-87, 88]");
    free(x);
    /* log: log-spaced over 60 decades, and densely around its zero at 1 */
    x = malloc(NSWEEP * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < NSWEEP; i++) x[i] = (float)pow(10.0, -30 + 60.0 * (double)i / (NSWEEP - 1));
    x[0] = 1.0001e-30f;
    check_case(1, x, NSWEEP, "(1e-30, 1e30)");
    free(x);
    x = linspace(0.5, 2, NSWEEP);
    for (int64_t i = 0; i < NSWEEP; i++)
        if (x[i] == 1.0f) x[i] = 1.0f + 0x1p-23f;   /* log(1) = 0: no relative error there */
    check_case(1, x, NSWEEP, "[0.5, 2]");
    free(x);
    x = linspace(-20, 20, NSWEEP);
    for (int c = 2; c < NCASES; c++) check_case(c, x, NSWEEP, "[-20, 20]");
    free(x);
    /* near 0, where tanh(x) ~ x and a formula through exp would cancel */
    x = linspace(-1e-3, 1e-3, NSWEEP);
    for (int64_t i = 0; i < NSWEEP; i++)
        if (x[i] == 0) x[i] = 1e-30f;
    check_case(2, x, NSWEEP, "[-1e-3, 1e-3]");
    free(x);
    /* sin, cos: far out, where the reduction by multiples of pi/2 must not
     * cancel (positions times frequencies of a sinusoidal code) */
    x = linspace(-8192, 8192, NSWEEP);
    check_case(SIN, x, NSWEEP, "[-8192, 8192]");
    check_case(COS, x, NSWEEP, "[-8192, 8192]");
    free(x);
}

/* Edge cases: saturation, over/underflow, infinities, NaN, denormals. */
static void test_vecmath_special(void **state) {
    (void)state;
    build_maps();
    static const float in[] = {0.0f, -0.0f, 1e-30f, 1e-40f, 88.7f, 88.8f, -103.0f, -104.5f, -200.0f, 200.0f,
                               1000.0f, -1000.0f, INFINITY, -INFINITY, NAN, -1.0f, 3.4e38f};
    enum { N = sizeof in / sizeof in[0] };
    float y[NCASES][N];
    for (int c = 0; c < NCASES; c++) maps[c][0](y[c], in, N);
    const float *e = y[0], *l = y[1], *t = y[2], *s = y[3], *p = y[4], *sn = y[SIN], *cs = y[COS];
    assert_true(e[0] == 1 && e[1] == 1);
    assert_true(fabsf(e[4] - expf(88.7f)) <= 2e-6f * expf(88.7f));   /* near FLT_MAX, finite */
    assert_true(isinf(e[5]) && isinf(e[9]) && isinf(e[12]));         /* overflow */
    assert_true(e[6] > 0 && e[6] < 1e-44f);                          /* a denormal */
    assert_true(e[7] == 0 && e[8] == 0 && e[13] == 0);                /* underflow */
    assert_true(isnan(e[14]));
    assert_true(isinf(l[0]) && l[0] < 0 && isinf(l[1]) && l[1] < 0);
    assert_true(fabsf(l[3] - logf(1e-40f)) < 1e-5f);                 /* a denormal input */
    assert_true(isinf(l[12]) && l[12] > 0);
    assert_true(isnan(l[13]) && isnan(l[14]) && isnan(l[15]));
    assert_true(fabsf(l[16] - logf(3.4e38f)) < 1e-5f);
    assert_true(t[0] == 0 && t[2] == 1e-30f && t[10] == 1 && t[11] == -1 && t[12] == 1 && t[13] == -1);
    assert_true(isnan(t[14]));
    assert_true(s[0] == 0.5f && s[10] == 1 && s[11] == 0 && s[12] == 1 && s[13] == 0 && isnan(s[14]));
    assert_true(s[6] == 0 && s[7] == 0);   /* the sigmoid's documented flush below 4e-39 (x < -88.38) */
    static const float tail[] = {-86.0f, -87.3f, -88.0f, -88.3f, 87.5f, 88.5f};
    float st[6];
    maps[3][0](st, tail, 6);
    for (int i = 0; i < 6; i++)   /* exact to a denormal's last bit just above it */
        assert_true(fabs(st[i] - ref_sigmoid(tail[i])) <= 2e-7 * ref_sigmoid(tail[i]) + 0x1p-149);
    assert_true(fabsf(p[0] - 0.693147181f) < 1e-7f && p[10] == 1000 && p[11] == 0 && p[12] == INFINITY);
    assert_true(p[13] == 0 && isnan(p[14]));
    assert_true(fabsf(p[8] - (float)exp(-200.0)) <= 0x1p-149f);     /* ~0, no NaN */
    assert_true(sn[0] == 0 && sn[1] == 0 && sn[2] == 1e-30f && sn[3] == 1e-40f);   /* sin x = x near 0 */
    assert_true(cs[0] == 1 && cs[1] == 1 && cs[2] == 1);
    assert_true(isnan(sn[12]) && isnan(sn[13]) && isnan(sn[14]) && isnan(cs[12]) && isnan(cs[13]) && isnan(cs[14]));
    assert_true(fabs(sn[15] - sin(-1.0)) <= 1e-7 && fabs(cs[10] - cos(1000.0)) <= 1e-7);
}

/* ---------------------------------------------------------------- disk cache */

/* A module exercising what an object file must carry: vector code with
 * constant pools (sigmoid over an array, in explicit host-width vectors)
 * and a call into this process (cos from libm). */
static aj_jit_module *cache_module(aj_jit *j) {
    aj_jit_module *m = aj_jit_module_new(j, "cached");
    emit_map(m, "cached_sigmoid", aj_vm_sigmoid, aj_jit_vector_width(j));
    LLVMContextRef ctx = aj_jit_module_context(m);
    LLVMModuleRef mod = aj_jit_module_llvm(m);
    LLVMTypeRef f64 = LLVMDoubleTypeInContext(ctx), cosft = LLVMFunctionType(f64, &f64, 1, 0);
    LLVMValueRef fn = LLVMAddFunction(mod, "cached_cos", cosft), cosfn = LLVMAddFunction(mod, "cos", cosft);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
    LLVMValueRef x = LLVMGetParam(fn, 0);
    LLVMBuildRet(b, LLVMBuildCall2(b, cosft, cosfn, &x, 1, ""));
    LLVMDisposeBuilder(b);
    return m;
}

enum { CACHE_N = 1000 };
static float cache_in[CACHE_N], cache_want[CACHE_N];

/* The module through the IR path in the shared JIT: what the cached code
 * must reproduce bit for bit. */
static void cache_reference(void) {
    for (int i = 0; i < CACHE_N; i++) cache_in[i] = -30 + 60.0f * (float)i / CACHE_N;
    map_fn f = (map_fn)compile(cache_module(jit), "cached_sigmoid");
    f(cache_want, cache_in, CACHE_N);
}

/* Add the module through the cache in a fresh JIT (as a new process
 * would), check the hit flag and the results; returns the JIT to free. */
static aj_jit *add_cached(const char *flags, int want_hit) {
    aj_diag d = {0};
    aj_jit *j = aj_jit_new(&d);
    assert_non_null(j);
    int hit = -1;
    if (aj_jit_add_cached(j, cache_module(j), flags, &hit, &d)) fail_msg("%s", d.msg);
    assert_int_equal(hit, want_hit);
    map_fn f = (map_fn)aj_jit_lookup(j, "cached_sigmoid", &d);
    double (*c)(double) = (double (*)(double))aj_jit_lookup(j, "cached_cos", &d);
    if (!f || !c) fail_msg("%s", d.msg);
    float got[CACHE_N];
    f(got, cache_in, CACHE_N);
    assert_memory_equal(got, cache_want, sizeof got);
    assert_true(c(1.0) == cos(1.0));
    return j;
}

/* Names of the entries of dir, sorted, joined by spaces ("" if none). */
static void list_dir(const char *dir, char *out, size_t size) {
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        if (ents[i]->d_name[0] != '.')
            snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? " " : "", ents[i]->d_name);
        free(ents[i]);
    }
    if (n >= 0) free(ents);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) ? -1 : (long)st.st_size;
}

/* Miss, then hits in fresh JITs; a truncated or corrupt file is a miss and
 * rewritten; other flags make another key; "off" and an unusable directory
 * write nothing and still work. The environment is restored afterwards. */
static void test_cache(void **state) {
    (void)state;
    cache_reference();
    char *saved = getenv("ARJIT_CACHE") ? strdup(getenv("ARJIT_CACHE")) : NULL;
    char root[] = "/tmp/arjit-cache-test-XXXXXX", dir[256], names[1024], path[sizeof dir + sizeof names];
    assert_non_null(mkdtemp(root));
    snprintf(dir, sizeof dir, "%s/a/b", root);   /* missing directories are created */
    setenv("ARJIT_CACHE", dir, 1);
    assert_string_equal(aj_jit_cache_dir(), dir);

    aj_jit_free(add_cached("test", 0));
    list_dir(dir, names, sizeof names);
    assert_int_equal(strlen(names), 32 + 2);       /* one file: <32 hex>.o */
    assert_string_equal(names + 32, ".o");
    snprintf(path, sizeof path, "%s/%s", dir, names);
    long size = file_size(path);
    assert_true(size > 100);
    aj_jit_free(add_cached("test", 1));

    /* a flipped byte in the object, then a file cut short: misses that rewrite it */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, size / 2, SEEK_SET);
    int byte = fgetc(f);
    fseek(f, size / 2, SEEK_SET);
    fputc(byte ^ 0x10, f);
    fclose(f);
    aj_jit_free(add_cached("test", 0));
    aj_jit_free(add_cached("test", 1));
    assert_int_equal(truncate(path, size - 1), 0);
    aj_jit_free(add_cached("test", 0));
    assert_int_equal(file_size(path), size);
    aj_jit_free(add_cached("test", 1));
    assert_int_equal(truncate(path, 10), 0);       /* not even a whole header */
    aj_jit_free(add_cached("test", 0));
    aj_jit_free(add_cached("test", 1));
    assert_int_equal(truncate(path, size + 8), 0); /* longer than its header says */
    aj_jit_free(add_cached("test", 0));
    assert_int_equal(file_size(path), size);
    aj_jit_free(add_cached("test", 1));

    /* other flags, another key: a second file */
    aj_jit_free(add_cached("test -O2", 0));
    aj_jit_free(add_cached("test -O2", 1));
    list_dir(dir, names, sizeof names);
    assert_int_equal(strlen(names), 2 * 34 + 1);   /* and no temporary files left */

    /* the cache off: the IR path, nothing written */
    setenv("ARJIT_CACHE", "off", 1);
    assert_null(aj_jit_cache_dir());
    aj_jit_free(add_cached("off", 0));
    setenv("ARJIT_CACHE", "", 1);
    assert_null(aj_jit_cache_dir());
    aj_jit_free(add_cached("off", 0));
    list_dir(dir, names, sizeof names);
    assert_int_equal(strlen(names), 2 * 34 + 1);

    /* a directory that cannot be made (below a regular file): no cache, no error */
    char below_file[sizeof path + 8];
    snprintf(below_file, sizeof below_file, "%s/cache", path);
    setenv("ARJIT_CACHE", below_file, 1);
    aj_jit_free(add_cached("test", 0));
    aj_jit_free(add_cached("test", 0));

    /* errors still come back: invalid IR, module consumed */
    aj_diag d = {0};
    aj_jit_module *bad = aj_jit_module_new(jit, "bad_cached");
    LLVMContextRef ctx = aj_jit_module_context(bad);
    LLVMAppendBasicBlockInContext(ctx, LLVMAddFunction(aj_jit_module_llvm(bad), "bad_cached",
                                                       LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, 0)),
                                  "entry");
    setenv("ARJIT_CACHE", root, 1);
    assert_int_equal(aj_jit_add_cached(jit, bad, "", NULL, &d), -1);
    assert_non_null(strstr(d.msg, "invalid IR"));

    if (saved) setenv("ARJIT_CACHE", saved, 1);
    else unsetenv("ARJIT_CACHE");
    free(saved);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- parallel compile */

/* Five kernels k<i>(x) = sq(x) + i sharing one internal helper sq, compiled
 * in 1, 3 and (capped at one per kernel) 16 parts: every kernel resolves
 * and computes its own result wherever its part put it. */
static void test_parallel_compile(void **state) {
    (void)state;
    char *saved = getenv("ARJIT_COMPILE_THREADS") ? strdup(getenv("ARJIT_COMPILE_THREADS")) : NULL;
    const char *threads[] = {"1", "3", "16"};
    for (int t = 0; t < 3; t++) {
        setenv("ARJIT_COMPILE_THREADS", threads[t], 1);
        aj_diag d = {0};
        aj_jit *j = aj_jit_new(&d);
        assert_non_null(j);
        aj_jit_module *m = aj_jit_module_new(j, "parts");
        LLVMContextRef ctx = aj_jit_module_context(m);
        LLVMModuleRef mod = aj_jit_module_llvm(m);
        LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx), ft = LLVMFunctionType(f32, &f32, 1, 0);
        LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
        LLVMValueRef sq = LLVMAddFunction(mod, "sq", ft);
        LLVMSetLinkage(sq, LLVMInternalLinkage);
        LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, sq, "entry"));
        LLVMBuildRet(b, LLVMBuildFMul(b, LLVMGetParam(sq, 0), LLVMGetParam(sq, 0), ""));
        for (int i = 0; i < 5; i++) {
            char name[16];
            snprintf(name, sizeof name, "k%d", i);
            LLVMValueRef fn = LLVMAddFunction(mod, name, ft), x = LLVMGetParam(fn, 0);
            LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
            LLVMValueRef y = LLVMBuildCall2(b, ft, sq, &x, 1, "");
            LLVMBuildRet(b, LLVMBuildFAdd(b, y, LLVMConstReal(f32, i), ""));
        }
        LLVMDisposeBuilder(b);
        if (aj_jit_add_compiled(j, m, &d)) fail_msg("%s", d.msg);
        for (int i = 0; i < 5; i++) {
            char name[16];
            snprintf(name, sizeof name, "k%d", i);
            float (*k)(float) = (float (*)(float))aj_jit_lookup(j, name, &d);
            if (!k) fail_msg("%s threads: %s", threads[t], d.msg);
            assert_true(k(3.0f) == 9.0f + (float)i);
        }
        aj_jit_free(j);
    }
    if (saved) setenv("ARJIT_COMPILE_THREADS", saved, 1);
    else unsetenv("ARJIT_COMPILE_THREADS");
    free(saved);
}

/* ---------------------------------------------------------------- matmul */

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * 0x1p-24 * 2 - 1);
}

/* bias + sigmoid, the fusion the hook is for: extra[0] is the bias[N] */
static LLVMValueRef bias_sigmoid(void *user, const aj_mm_tile *t, LLVMValueRef acc) {
    (void)user;
    LLVMContextRef ctx = LLVMGetTypeContext(t->vty);
    LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(t->b, f32, t->extra[0], (LLVMValueRef[]){t->col}, 1, "");
    LLVMValueRef bias;
    if (t->mask) {
        LLVMTypeRef over[2] = {t->vty, LLVMPointerTypeInContext(ctx, 0)};
        unsigned id = LLVMLookupIntrinsicID("llvm.masked.load", 16);
        LLVMValueRef args[4] = {p, LLVMConstInt(LLVMInt32TypeInContext(ctx), 4, 0), t->mask, LLVMConstNull(t->vty)};
        bias = LLVMBuildCall2(t->b, LLVMIntrinsicGetType(ctx, id, over, 2),
                              LLVMGetIntrinsicDeclaration(LLVMGetGlobalParent(LLVMGetBasicBlockParent(LLVMGetInsertBlock(t->b))), id, over, 2),
                              args, 4, "");
    } else {
        bias = LLVMBuildLoad2(t->b, t->vty, p, "");
        LLVMSetAlignment(bias, 4);
    }
    return aj_vm_sigmoid(t->b, LLVMBuildFAdd(t->b, acc, bias, ""));
}

typedef struct {
    aj_mm_spec spec;
    aj_mm_kernel_fn kernel;
    aj_mm_pack_fn pack;
} mm_built;

static mm_built build_mm(const aj_mm_spec *spec) {
    mm_built r = {aj_mm_resolve(jit, spec), NULL, NULL};
    aj_jit_module *m = aj_jit_module_new(jit, spec->name);
    aj_diag d = {0};
    assert_int_equal(aj_mm_emit(jit, m, spec, &d), 0);
    r.kernel = (aj_mm_kernel_fn)compile(m, spec->name);
    if (aj_mm_packs_b(&r.spec)) {
        char name[256];
        snprintf(name, sizeof name, "%s_pack", spec->name);
        r.pack = (aj_mm_pack_fn)aj_jit_lookup(jit, name, &d);
        assert_non_null(r.pack);
    }
    return r;
}

enum { SENTINEL_BITS = 0x7fc0dead };   /* a NaN the kernel never writes */

static int is_sentinel(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u == SENTINEL_BITS;
}

/* C = op(A) op(B) (+ C0) [then sigmoid(. + bias)] for M x K x N, with padded
 * leading dimensions, computed in row ranges; against a double triple loop
 * within the floating-point summation bound K 2^-24 sum |a b|. */
static void check_mm(const mm_built *mm, int64_t M, int64_t K, int64_t N, int nsplit) {
    const aj_mm_spec *s = &mm->spec;
    uint64_t seed = (uint64_t)(M * 1000003 + K * 1009 + N);
    /* stored shapes: A [M,K] or [K,M]; B [K,N] or [N,K]; +3 columns of padding */
    int64_t ar = s->trans_a ? K : M, ac = s->trans_a ? M : K, lda = ac + 3;
    int64_t br = s->trans_b ? N : K, bc = s->trans_b ? K : N, ldb = bc + 3, ldc = N + 3;
    float *A = malloc((size_t)(ar * lda + 1) * 4), *B = malloc((size_t)(br * ldb + 1) * 4);
    float *C = malloc((size_t)(M * ldc + 1) * 4), *C0 = malloc((size_t)(M * ldc + 1) * 4);
    float *bias = malloc((size_t)(N + 1) * 4);
    assert_true(A && B && C && C0 && bias);
    for (int64_t i = 0; i < ar * lda; i++) A[i] = frand(&seed);
    for (int64_t i = 0; i < br * ldb; i++) B[i] = frand(&seed);
    for (int64_t j = 0; j < N; j++) bias[j] = frand(&seed);
    float sentinel;
    uint32_t sbits = SENTINEL_BITS;
    memcpy(&sentinel, &sbits, 4);
    for (int64_t i = 0; i < M * ldc; i++) C0[i] = (i % ldc) < N ? frand(&seed) : sentinel;
    memcpy(C, C0, (size_t)(M * ldc) * 4);

    const float *Bk = B;
    float *Bp = NULL;
    if (mm->pack) {
        int64_t np = aj_mm_panels(s, N);
        Bp = malloc((size_t)aj_mm_packed_floats(s, N, K) * 4 + 4);
        assert_non_null(Bp);
        mm->pack(0, np / 2, N, K, B, ldb, Bp);   /* in two pieces, as threads would */
        mm->pack(np / 2, np, N, K, B, ldb, Bp);
        Bk = Bp;
    }
    typedef void (*kernel_extra)(int64_t, int64_t, int64_t, int64_t, const float *, int64_t, const float *, int64_t,
                                 float *, int64_t, const float *);
    for (int p = 0; p < nsplit; p++) {
        int64_t m0 = M * p / nsplit, m1 = M * (p + 1) / nsplit;
        if (s->nextra)
            ((kernel_extra)(void (*)(void))mm->kernel)(m0, m1, N, K, A, lda, Bk, ldb, C, ldc, bias);
        else
            mm->kernel(m0, m1, N, K, A, lda, Bk, ldb, C, ldc);
    }

    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < ldc; j++) {
            float got = C[i * ldc + j];
            if (j >= N) {
                if (!is_sentinel(got)) fail_msg("C[%ld, %ld] past N was written", (long)i, (long)j);
                continue;
            }
            double ref = s->accumulate ? C0[i * ldc + j] : 0, mag = fabs(ref);
            for (int64_t k = 0; k < K; k++) {
                double a = s->trans_a ? A[k * lda + i] : A[i * lda + k];
                double b = s->trans_b ? B[j * ldb + k] : B[k * ldb + j];
                ref += a * b;
                mag += fabs(a * b);
            }
            double tol = (double)(K + 2) * 0x1p-24 * mag + 1e-30;
            if (s->epilogue) {
                ref = 1 / (1 + exp(-(ref + bias[j])));
                tol = tol / 4 + 2e-6 * ref;   /* sigmoid' <= 1/4, then vecmath's error */
            }
            if (!(fabs(got - ref) <= tol))
                fail_msg("%s %ldx%ldx%ld: C[%ld, %ld] = %.9g, want %.9g (tol %.3g)", s->name, (long)M, (long)K, (long)N,
                         (long)i, (long)j, got, ref, tol);
        }
    free(A);
    free(B);
    free(C);
    free(C0);
    free(bias);
    free(Bp);
}

/* M x K x N: tiny, odd, tails in every direction, and the MLP shapes */
static const int64_t mm_shapes[][3] = {
    {1, 1, 1}, {7, 13, 5}, {5, 13, 7}, {17, 33, 65}, {4, 1, 64}, {9, 70, 129}, {100, 784, 500}, {3, 0, 20}, {0, 5, 5},
};

static void check_spec(const aj_mm_spec *spec) {
    mm_built mm = build_mm(spec);
    for (size_t i = 0; i < sizeof mm_shapes / sizeof mm_shapes[0]; i++)
        for (int nsplit = 1; nsplit <= 3; nsplit += 2) check_mm(&mm, mm_shapes[i][0], mm_shapes[i][1], mm_shapes[i][2], nsplit);
}

static void test_matmul_nn(void **state) {
    (void)state;
    check_spec(&(aj_mm_spec){.name = "mm_nn"});
    check_spec(&(aj_mm_spec){.name = "mm_nn_packed", .pack_b = 1});
}

static void test_matmul_transposed(void **state) {
    (void)state;
    check_spec(&(aj_mm_spec){.name = "mm_nt", .trans_b = 1});
    check_spec(&(aj_mm_spec){.name = "mm_tn", .trans_a = 1});
    check_spec(&(aj_mm_spec){.name = "mm_tt", .trans_a = 1, .trans_b = 1});
}

static void test_matmul_variants(void **state) {
    (void)state;
    check_spec(&(aj_mm_spec){.name = "mm_acc", .accumulate = 1});
    check_spec(&(aj_mm_spec){.name = "mm_epi", .nextra = 1, .epilogue = bias_sigmoid});
    check_spec(&(aj_mm_spec){.name = "mm_epi_acc_tn", .trans_a = 1, .accumulate = 1, .nextra = 1, .epilogue = bias_sigmoid});
    /* other tiles and narrower vectors (AVX2 and SSE widths run here too) */
    check_spec(&(aj_mm_spec){.name = "mm_3x2x8", .mr = 3, .nv = 2, .vw = 8});
    check_spec(&(aj_mm_spec){.name = "mm_3x2x8_nt", .mr = 3, .nv = 2, .vw = 8, .trans_b = 1});
    check_spec(&(aj_mm_spec){.name = "mm_1x1x4_nt", .mr = 1, .nv = 1, .vw = 4, .trans_b = 1});
    check_spec(&(aj_mm_spec){.name = "mm_6x4", .mr = 6, .nv = 4});
}

static void test_matmul_bad_spec(void **state) {
    (void)state;
    aj_jit_module *m = aj_jit_module_new(jit, "bad");
    aj_diag d = {0};
    assert_int_equal(aj_mm_emit(jit, m, &(aj_mm_spec){.name = "x", .mr = 9}, &d), -1);
    assert_non_null(strstr(d.msg, "register tile"));
    d = (aj_diag){0};
    assert_int_equal(aj_mm_emit(jit, m, &(aj_mm_spec){.name = "x", .vw = 5}, &d), -1);
    d = (aj_diag){0};
    assert_int_equal(aj_mm_emit(jit, m, &(aj_mm_spec){0}, &d), -1);
    aj_jit_module_free(m);
}

/* The kernel's IR holds host-width vectors and FMAs; its assembly zmm
 * registers on an AVX-512 host; dumping the assembly leaves the module as
 * it was. */
static void test_matmul_dump(void **state) {
    (void)state;
    aj_jit_module *m = aj_jit_module_new(jit, "dump");
    aj_diag d = {0};
    assert_int_equal(aj_mm_emit(jit, m, &(aj_mm_spec){.name = "mm_dump"}, &d), 0);
    assert_int_equal(aj_jit_optimize(jit, m, &d), 0);
    char *ir = NULL, *ir2 = NULL, *as = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&ir, &len);
    aj_jit_dump_ir(m, f);
    fclose(f);
    f = open_memstream(&as, &len);
    assert_int_equal(aj_jit_dump_asm(jit, m, f, &d), 0);
    fclose(f);
    f = open_memstream(&ir2, &len);
    aj_jit_dump_ir(m, f);
    fclose(f);
    assert_string_equal(ir, ir2);
    assert_non_null(strstr(ir, "llvm.fmuladd"));
    assert_non_null(strstr(as, "mm_dump:"));
    if (aj_jit_has_feature(jit, "avx512f")) {
        assert_non_null(strstr(ir, "<16 x float>"));
        assert_non_null(strstr(as, "zmm"));
    }
    free(ir);
    free(ir2);
    free(as);
    aj_jit_module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call),
        cmocka_unit_test(test_process_symbols),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_vecmath_accuracy),
        cmocka_unit_test(test_vecmath_special),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_parallel_compile),
        cmocka_unit_test(test_matmul_nn),
        cmocka_unit_test(test_matmul_transposed),
        cmocka_unit_test(test_matmul_variants),
        cmocka_unit_test(test_matmul_bad_spec),
        cmocka_unit_test(test_matmul_dump),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
