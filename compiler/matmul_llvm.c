/* The register-tiled sgemm emitter (see matmul_llvm.h).
 *
 * Loop nest of the kernel, NR = nv * vw columns per panel:
 *
 *   for k0 in [0, K) step KC:                   A block: rows x KC, stays in L2
 *    for j0 in full panels (step NR):           B block: KC x NR, stays in L1
 *     for i0 in [m0, m1) step mr:  tile(i0, j0, mr rows, nv vectors)
 *     for the < mr rows left:      tile(i,  j0, 1 row,   nv vectors)
 *    last partial panel of t = ceil(rem / vw) vectors (a switch on t):
 *     same two loops with t vectors, the last one masked
 *
 *   tile: acc[r][v] = 0
 *         for k in [k0, k0 + KC): b[v] = B(k, j0 + v vw)             (vector loads)
 *                                 acc[r][v] += A(i0 + r, k) * b[v]   (broadcast + FMA)
 *         C(i0 + r, j0 + v vw) = epilogue(acc[r][v] (+ C))   (k0 > 0: + C, always)
 *
 * Blocking K keeps a long-K product (a weight gradient over B T rows,
 * K = 2048) from streaming all of A once per panel; an epilogue, which
 * must see the whole sum, keeps K in one block.
 *
 * Accumulators live in allocas that SROA turns into registers; every
 * index is an i64 and strides are runtime values, so one kernel serves all
 * shapes. */
#include "compiler/matmul_llvm.h"

#include "compiler/ir_loop.h"
#include "compiler/vecmath.h"

#include <stdlib.h>
#include <string.h>

/* MM_KC: the K block, KC x NR floats of B (64 KiB at NR = 64) */
enum { MAX_MR = 8, MAX_NV = 8, MM_KC = 256 };

typedef struct {
    const aj_mm_spec *s;
    LLVMBuilderRef b;
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMValueRef fn;
    LLVMTypeRef f32, i32, i64, ptr, vty;
    int vw, mr, nv, packed;
    LLVMValueRef m0, m1, n, k, a, lda, bm, ldb, c, ldc;
    LLVMValueRef k0, k1;                /* the K block [k0, k1) */
    LLVMValueRef first_block;           /* k0 == 0 */
    LLVMValueRef extra[AJ_MM_MAX_EXTRA];
    LLVMValueRef acc[MAX_MR][MAX_NV];   /* allocas */
} mm_ctx;

/* ---------------------------------------------------------------- small IR helpers */

static LLVMValueRef i64c(mm_ctx *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }

static LLVMValueRef gep(mm_ctx *c, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildInBoundsGEP2(c->b, c->f32, base, &idx, 1, "");
}

static LLVMValueRef add(mm_ctx *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWAdd(c->b, x, y, ""); }
static LLVMValueRef mul(mm_ctx *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWMul(c->b, x, y, ""); }

/* Tensors are only float-aligned: alignment 4 on vector accesses (the
 * default would claim the vector's size) */
static LLVMValueRef vload(mm_ctx *c, LLVMValueRef p) {
    LLVMValueRef v = LLVMBuildLoad2(c->b, c->vty, p, "");
    LLVMSetAlignment(v, 4);
    return v;
}

static void vstore(mm_ctx *c, LLVMValueRef v, LLVMValueRef p) { LLVMSetAlignment(LLVMBuildStore(c->b, v, p), 4); }

/* llvm.masked.{load,store}, overloaded on the vector and pointer types */
static LLVMValueRef masked_call(mm_ctx *c, const char *name, LLVMValueRef *args, unsigned nargs) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef over[2] = {c->vty, c->ptr};
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(c->mod, id, over, 2);
    return LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, over, 2), f, args, nargs, "");
}

/* a vector at p; lanes outside `mask` (when given) read as 0 without touching memory */
static LLVMValueRef load_lanes(mm_ctx *c, LLVMValueRef p, LLVMValueRef mask) {
    if (!mask) return vload(c, p);
    LLVMValueRef args[4] = {p, LLVMConstInt(c->i32, 4, 0), mask, LLVMConstNull(c->vty)};
    return masked_call(c, "llvm.masked.load", args, 4);
}

static void store_lanes(mm_ctx *c, LLVMValueRef v, LLVMValueRef p, LLVMValueRef mask) {
    if (!mask) {
        vstore(c, v, p);
        return;
    }
    LLVMValueRef args[4] = {v, p, LLVMConstInt(c->i32, 4, 0), mask};
    masked_call(c, "llvm.masked.store", args, 4);
}

/* lanes col + l < n, for l in [0, vw) */
static LLVMValueRef lane_mask(mm_ctx *c, LLVMValueRef col) {
    LLVMValueRef lanes[64], idx = LLVMConstInt(c->i32, 0, 0);
    for (int l = 0; l < c->vw; l++) lanes[l] = i64c(c, l);
    LLVMTypeRef v64 = LLVMVectorType(c->i64, (unsigned)c->vw);
    LLVMValueRef first = LLVMBuildInsertElement(c->b, LLVMGetPoison(v64), col, idx, "");
    LLVMValueRef cols = LLVMBuildShuffleVector(c->b, first, LLVMGetPoison(v64), LLVMConstNull(LLVMVectorType(c->i32, (unsigned)c->vw)), "");
    cols = add(c, cols, LLVMConstVector(lanes, (unsigned)c->vw));
    LLVMValueRef nn = LLVMBuildInsertElement(c->b, LLVMGetPoison(v64), c->n, idx, "");
    nn = LLVMBuildShuffleVector(c->b, nn, LLVMGetPoison(v64), LLVMConstNull(LLVMVectorType(c->i32, (unsigned)c->vw)), "");
    return LLVMBuildICmp(c->b, LLVMIntSLT, cols, nn, "mask");
}

static LLVMValueRef broadcast(mm_ctx *c, LLVMValueRef x) {
    LLVMValueRef v = LLVMBuildInsertElement(c->b, LLVMGetPoison(c->vty), x, LLVMConstInt(c->i32, 0, 0), "");
    return LLVMBuildShuffleVector(c->b, v, LLVMGetPoison(c->vty), LLVMConstNull(LLVMVectorType(c->i32, (unsigned)c->vw)), "");
}

/* ---------------------------------------------------------------- loops */

/* for (iv = start; iv < end; iv += step) (compiler/ir_loop.h) */
typedef aj_ir_loop mm_loop;

static void loop_begin(mm_ctx *c, mm_loop *L, LLVMValueRef start, LLVMValueRef end, LLVMValueRef step,
                       const char *name) {
    aj_ir_loop_open(c->b, L, start, end, step, name);
}

static void loop_end(mm_ctx *c, mm_loop *L) { aj_ir_loop_close(c->b, L); }

/* ---------------------------------------------------------------- the tile */

/* Base of B's row k at column j0, for loads of vw floats at +v vw. */
static LLVMValueRef b_row(mm_ctx *c, LLVMValueRef j0, LLVMValueRef k) {
    if (c->packed)   /* panel j0/NR starts at Bp + (j0/NR) NR K = Bp + j0 K; its rows are NR apart */
        return gep(c, c->bm, add(c, mul(c, j0, c->k), mul(c, k, i64c(c, (int64_t)c->nv * c->vw))));
    return gep(c, c->bm, add(c, mul(c, k, c->ldb), j0));
}

/* A(i, k) as a float */
static LLVMValueRef a_elem(mm_ctx *c, LLVMValueRef i, LLVMValueRef k) {
    LLVMValueRef idx = c->s->trans_a ? add(c, mul(c, k, c->lda), i) : add(c, mul(c, i, c->lda), k);
    return LLVMBuildLoad2(c->b, c->f32, gep(c, c->a, idx), "");
}

/* C(i0 + r, j0 + v vw) = epilogue(acc[r][v] (+ C when add_c)) */
static void store_tile(mm_ctx *c, LLVMValueRef i0, LLVMValueRef j0, int mr, int nv, LLVMValueRef mask, int add_c) {
    const aj_mm_spec *s = c->s;
    for (int r = 0; r < mr; r++) {
        LLVMValueRef row = add(c, i0, i64c(c, r));
        LLVMValueRef crow = gep(c, c->c, add(c, mul(c, row, c->ldc), j0));
        for (int v = 0; v < nv; v++) {
            LLVMValueRef m = v == nv - 1 ? mask : NULL;
            LLVMValueRef p = gep(c, crow, i64c(c, (int64_t)v * c->vw));
            LLVMValueRef val = LLVMBuildLoad2(c->b, c->vty, c->acc[r][v], "");
            if (add_c) val = LLVMBuildFAdd(c->b, val, load_lanes(c, p, m), "");
            if (s->epilogue) {
                aj_mm_tile t = {c->b, c->vty, c->vw, row, add(c, j0, i64c(c, (int64_t)v * c->vw)), m, c->n, c->extra};
                val = s->epilogue(s->epilogue_user, &t, val);
            }
            store_lanes(c, val, p, m);
        }
    }
}

/* rows [i0, i0 + mr) x vectors [0, nv) at column j0; `mask` (or NULL) covers
 * the last vector's lanes */
static void emit_tile(mm_ctx *c, LLVMValueRef i0, LLVMValueRef j0, int mr, int nv, LLVMValueRef mask) {
    const aj_mm_spec *s = c->s;
    LLVMValueRef zero = LLVMConstNull(c->vty);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) vstore(c, zero, c->acc[r][v]);

    mm_loop kl;
    loop_begin(c, &kl, c->k0, c->k1, i64c(c, 1), "k");
    LLVMValueRef brow = b_row(c, j0, kl.iv), bv[MAX_NV];
    for (int v = 0; v < nv; v++) {
        /* packed panels are zero-padded: only a direct B needs the mask */
        LLVMValueRef p = gep(c, brow, i64c(c, (int64_t)v * c->vw));
        bv[v] = load_lanes(c, p, v == nv - 1 && !c->packed ? mask : NULL);
    }
    for (int r = 0; r < mr; r++) {
        LLVMValueRef av = broadcast(c, a_elem(c, add(c, i0, i64c(c, r)), kl.iv));
        for (int v = 0; v < nv; v++) {
            LLVMValueRef acc = LLVMBuildLoad2(c->b, c->vty, c->acc[r][v], "");
            vstore(c, aj_vm_fma(c->b, av, bv[v], acc), c->acc[r][v]);
        }
    }
    loop_end(c, &kl);

    /* C = acc, or C += acc after the first K block (always, if the spec
     * accumulates): a branch per tile, so a one-block product never reads C */
    if (s->accumulate) {
        store_tile(c, i0, j0, mr, nv, mask, 1);
        return;
    }
    LLVMBasicBlockRef set = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "cset");
    LLVMBasicBlockRef acc = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "cacc");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "cdone");
    LLVMBuildCondBr(c->b, c->first_block, set, acc);
    LLVMPositionBuilderAtEnd(c->b, set);
    store_tile(c, i0, j0, mr, nv, mask, 0);
    LLVMBuildBr(c->b, done);
    LLVMPositionBuilderAtEnd(c->b, acc);
    store_tile(c, i0, j0, mr, nv, mask, 1);
    LLVMBuildBr(c->b, done);
    LLVMPositionBuilderAtEnd(c->b, done);
}

/* all rows [m0, m1) of the panel at j0 with nv vectors: mr-row tiles, then
 * 1-row tiles for the rest */
static void emit_rows(mm_ctx *c, LLVMValueRef j0, int nv, LLVMValueRef mask) {
    mm_loop il;
    LLVMValueRef last = LLVMBuildNSWSub(c->b, c->m1, i64c(c, c->mr - 1), "");   /* i0 + mr <= m1 */
    loop_begin(c, &il, c->m0, last, i64c(c, c->mr), "i");
    emit_tile(c, il.iv, j0, c->mr, nv, mask);
    loop_end(c, &il);
    if (c->mr == 1) return;
    mm_loop tl;
    loop_begin(c, &tl, il.iv, c->m1, i64c(c, 1), "itail");
    emit_tile(c, tl.iv, j0, 1, nv, mask);
    loop_end(c, &tl);
}

static LLVMValueRef param(mm_ctx *c, unsigned i, const char *name) {
    LLVMValueRef p = LLVMGetParam(c->fn, i);
    LLVMSetValueName2(p, name, strlen(name));
    return p;
}

static void add_attr(mm_ctx *c, LLVMValueRef fn, unsigned idx, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(c->ctx, kind, 0));
}

/* fn(i64 x4, ptr, i64, ptr, i64, ptr, i64, ptr...): pointers noalias and
 * nocapture, the inputs (the first `nread` pointers) readonly */
static LLVMValueRef declare(mm_ctx *c, const char *name, const int *is_ptr, int nparams, int nread) {
    LLVMTypeRef pt[16];
    for (int i = 0; i < nparams; i++) pt[i] = is_ptr[i] ? c->ptr : c->i64;
    LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(LLVMVoidTypeInContext(c->ctx), pt, (unsigned)nparams, 0));
    add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    if (c->vw == 16) {   /* allow zmm for explicit 512-bit vectors even where 256 is preferred */
        LLVMAttributeRef a = LLVMCreateStringAttribute(c->ctx, "min-legal-vector-width", 22, "512", 3);
        LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, a);
    }
    for (int i = 0, np = 0; i < nparams; i++) {
        if (!is_ptr[i]) continue;
        add_attr(c, fn, (unsigned)i + 1, "noalias");
        add_attr(c, fn, (unsigned)i + 1, "nocapture");
        if (np++ < nread) add_attr(c, fn, (unsigned)i + 1, "readonly");
    }
    c->fn = fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
    return fn;
}

/* ---------------------------------------------------------------- kernel and packer */

static void emit_kernel(mm_ctx *c) {
    int is_ptr[10 + AJ_MM_MAX_EXTRA] = {0, 0, 0, 0, 1, 0, 1, 0, 1, 0};
    for (int e = 0; e < c->s->nextra; e++) is_ptr[10 + e] = 1;
    declare(c, c->s->name, is_ptr, 10 + c->s->nextra, 2);
    c->m0 = param(c, 0, "m0"), c->m1 = param(c, 1, "m1"), c->n = param(c, 2, "N"), c->k = param(c, 3, "K");
    c->a = param(c, 4, "A"), c->lda = param(c, 5, "lda"), c->bm = param(c, 6, "B"), c->ldb = param(c, 7, "ldb");
    c->c = param(c, 8, "C"), c->ldc = param(c, 9, "ldc");
    for (int e = 0; e < c->s->nextra; e++) c->extra[e] = param(c, 10 + (unsigned)e, "extra");
    for (int r = 0; r < c->mr; r++)
        for (int v = 0; v < c->nv; v++) c->acc[r][v] = LLVMBuildAlloca(c->b, c->vty, "acc");

    int64_t nr = (int64_t)c->nv * c->vw;
    LLVMValueRef nfull = LLVMBuildSDiv(c->b, c->n, i64c(c, nr), "");
    LLVMValueRef jfull = mul(c, nfull, i64c(c, nr));
    /* K blocks of KC (under an epilogue, one block of all K) */
    LLVMValueRef kmax = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, c->k, i64c(c, 1), ""), c->k, i64c(c, 1), "");
    LLVMValueRef kc = c->s->epilogue ? kmax : i64c(c, MM_KC);
    mm_loop kb;   /* K = 0 too runs one block: it writes C's zeros */
    loop_begin(c, &kb, i64c(c, 0), kmax, kc, "kb");
    c->k0 = kb.iv;
    LLVMValueRef kend = add(c, kb.iv, kc);
    c->k1 = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, kend, c->k, ""), kend, c->k, "k1");
    c->first_block = LLVMBuildICmp(c->b, LLVMIntEQ, kb.iv, i64c(c, 0), "first");
    mm_loop jl;
    loop_begin(c, &jl, i64c(c, 0), jfull, i64c(c, nr), "j");
    emit_rows(c, jl.iv, c->nv, NULL);
    loop_end(c, &jl);

    /* the partial panel: t = ceil(rem / vw) vectors, one specialised row
     * loop per t so narrow tails do no wasted FMAs */
    LLVMValueRef rem = LLVMBuildNSWSub(c->b, c->n, jfull, "rem");
    LLVMValueRef t = LLVMBuildSDiv(c->b, add(c, rem, i64c(c, c->vw - 1)), i64c(c, c->vw), "");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "done");
    LLVMValueRef sw = LLVMBuildSwitch(c->b, t, done, (unsigned)c->nv);
    for (int tv = 1; tv <= c->nv; tv++) {
        LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "ntail");
        LLVMAddCase(sw, i64c(c, tv), bb);
        LLVMPositionBuilderAtEnd(c->b, bb);
        LLVMValueRef mask = lane_mask(c, add(c, jfull, i64c(c, (int64_t)(tv - 1) * c->vw)));
        emit_rows(c, jfull, tv, mask);
        LLVMBuildBr(c->b, done);
    }
    LLVMPositionBuilderAtEnd(c->b, done);
    loop_end(c, &kb);
    LLVMBuildRetVoid(c->b);
}

/* The vw x vw transpose of rows r[0..vw): log2(vw) rounds of the perfect
 * shuffle r'[2i] = interleave(low halves of r[i], r[i + vw/2]),
 * r'[2i+1] = the same of the high halves; each is one two-source shuffle
 * (vpermt2ps with AVX-512). After round s, element (i, j) has moved to row
 * and lane indices rotated by s bits; after log2(vw) rounds, to (j, i). */
static void transpose(mm_ctx *c, LLVMValueRef *r) {
    int n = c->vw;
    LLVMValueRef lo[64], hi[64], t[64];
    for (int l = 0; l < n / 2; l++) {
        lo[2 * l] = LLVMConstInt(c->i32, (unsigned)l, 0), lo[2 * l + 1] = LLVMConstInt(c->i32, (unsigned)(n + l), 0);
        hi[2 * l] = LLVMConstInt(c->i32, (unsigned)(n / 2 + l), 0);
        hi[2 * l + 1] = LLVMConstInt(c->i32, (unsigned)(n + n / 2 + l), 0);
    }
    LLVMValueRef mlo = LLVMConstVector(lo, (unsigned)n), mhi = LLVMConstVector(hi, (unsigned)n);
    for (int round = 1; round < n; round *= 2) {
        for (int i = 0; i < n / 2; i++) {
            t[2 * i] = LLVMBuildShuffleVector(c->b, r[i], r[i + n / 2], mlo, "");
            t[2 * i + 1] = LLVMBuildShuffleVector(c->b, r[i], r[i + n / 2], mhi, "");
        }
        memcpy(r, t, (size_t)n * sizeof *r);
    }
}

/* Pack one panel of a B stored [N, K]: panel column cc is row j0 + cc of B.
 * Blocks of vw columns x vw k's are read as vw row vectors along k
 * (contiguous), transposed in registers and stored as vw panel rows; rows
 * past N are masked loads that read nothing and give zeros. The last
 * K mod vw k's go one float at a time. */
static void pack_transposed(mm_ctx *c, LLVMValueRef src, LLVMValueRef ldb, LLVMValueRef panel, LLVMValueRef j0) {
    int64_t nr = (int64_t)c->nv * c->vw;
    LLVMValueRef kvec = LLVMBuildAnd(c->b, c->k, i64c(c, -(int64_t)c->vw), "kvec");
    mm_loop cl, kl;
    loop_begin(c, &cl, i64c(c, 0), i64c(c, nr), i64c(c, c->vw), "cb");
    LLVMValueRef row[64], mask[64];
    for (int l = 0; l < c->vw; l++) {
        LLVMValueRef j = add(c, add(c, j0, cl.iv), i64c(c, l));
        LLVMValueRef in = LLVMBuildICmp(c->b, LLVMIntSLT, j, c->n, "");
        /* a plain (not inbounds) GEP: past N the address is never used */
        LLVMValueRef off = mul(c, j, ldb);
        row[l] = LLVMBuildGEP2(c->b, c->f32, src, &off, 1, "");
        mask[l] = LLVMBuildSelect(c->b, in, LLVMConstAllOnes(LLVMVectorType(LLVMInt1TypeInContext(c->ctx), (unsigned)c->vw)),
                                  LLVMConstNull(LLVMVectorType(LLVMInt1TypeInContext(c->ctx), (unsigned)c->vw)), "");
    }
    loop_begin(c, &kl, i64c(c, 0), kvec, i64c(c, c->vw), "kb");
    LLVMValueRef r[64];
    for (int l = 0; l < c->vw; l++) r[l] = load_lanes(c, LLVMBuildGEP2(c->b, c->f32, row[l], &kl.iv, 1, ""), mask[l]);
    transpose(c, r);
    for (int l = 0; l < c->vw; l++) {
        LLVMValueRef d = add(c, mul(c, add(c, kl.iv, i64c(c, l)), i64c(c, nr)), cl.iv);
        vstore(c, r[l], gep(c, panel, d));
    }
    loop_end(c, &kl);
    loop_end(c, &cl);

    /* the k tail: columns that exist copied, the rest zeroed */
    LLVMValueRef left = LLVMBuildNSWSub(c->b, c->n, j0, "");
    LLVMValueRef ncols = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, left, i64c(c, nr), ""), left,
                                         i64c(c, nr), "ncols");
    for (int zero = 0; zero < 2; zero++) {
        loop_begin(c, &cl, zero ? ncols : i64c(c, 0), zero ? i64c(c, nr) : ncols, i64c(c, 1), "cc");
        LLVMValueRef srow = zero ? NULL : gep(c, src, mul(c, add(c, j0, cl.iv), ldb));
        LLVMValueRef dcol = gep(c, panel, cl.iv);
        loop_begin(c, &kl, kvec, c->k, i64c(c, 1), "k");
        LLVMValueRef x = zero ? LLVMConstReal(c->f32, 0.0) : LLVMBuildLoad2(c->b, c->f32, gep(c, srow, kl.iv), "");
        LLVMBuildStore(c->b, x, gep(c, dcol, mul(c, kl.iv, i64c(c, nr))));
        loop_end(c, &kl);
        loop_end(c, &cl);
    }
}

/* Bp panel p, row k, column cc = B(k, p NR + cc), 0 past N */
static void emit_pack(mm_ctx *c) {
    static const int is_ptr[7] = {0, 0, 0, 0, 1, 0, 1};
    char name[256];
    snprintf(name, sizeof name, "%s_pack", c->s->name);
    declare(c, name, is_ptr, 7, 1);
    LLVMValueRef p0 = param(c, 0, "p0"), p1 = param(c, 1, "p1");
    c->n = param(c, 2, "N"), c->k = param(c, 3, "K");
    LLVMValueRef src = param(c, 4, "B"), ldb = param(c, 5, "ldb"), dst = param(c, 6, "Bp");
    int64_t nr = (int64_t)c->nv * c->vw;

    mm_loop pl;
    loop_begin(c, &pl, p0, p1, i64c(c, 1), "p");
    LLVMValueRef j0 = mul(c, pl.iv, i64c(c, nr));
    LLVMValueRef panel = gep(c, dst, mul(c, j0, c->k));
    if (!c->s->trans_b) {
        /* B is [K, N]: each panel row is nv (masked) vector copies */
        mm_loop kl;
        loop_begin(c, &kl, i64c(c, 0), c->k, i64c(c, 1), "k");
        LLVMValueRef s = gep(c, src, add(c, mul(c, kl.iv, ldb), j0));
        LLVMValueRef d = gep(c, panel, mul(c, kl.iv, i64c(c, nr)));
        for (int v = 0; v < c->nv; v++) {
            LLVMValueRef off = i64c(c, (int64_t)v * c->vw);
            LLVMValueRef mask = lane_mask(c, add(c, j0, off));
            vstore(c, load_lanes(c, gep(c, s, off), mask), gep(c, d, off));
        }
        loop_end(c, &kl);
    } else {
        pack_transposed(c, src, ldb, panel, j0);
    }
    loop_end(c, &pl);
    LLVMBuildRetVoid(c->b);
}

/* ---------------------------------------------------------------- the spec */

aj_mm_spec aj_mm_resolve(const aj_jit *jit, const aj_mm_spec *s) {
    aj_mm_spec r = *s;
    if (!r.vw) r.vw = aj_jit_vector_width(jit);
    if (!r.mr) r.mr = 4;
    if (!r.nv) r.nv = 4;
    if (r.trans_b) r.pack_b = 1;
    return r;
}

int aj_mm_packs_b(const aj_mm_spec *s) { return s->pack_b || s->trans_b; }
int64_t aj_mm_panel_width(const aj_mm_spec *s) { return (int64_t)s->nv * s->vw; }
int64_t aj_mm_panels(const aj_mm_spec *s, int64_t n) { return (n + aj_mm_panel_width(s) - 1) / aj_mm_panel_width(s); }
int64_t aj_mm_packed_floats(const aj_mm_spec *s, int64_t n, int64_t k) {
    return aj_mm_panels(s, n) * aj_mm_panel_width(s) * k;
}

static mm_ctx ctx_new(aj_jit_module *m, const aj_mm_spec *s) {
    mm_ctx c = {.s = s, .vw = s->vw, .mr = s->mr, .nv = s->nv, .packed = aj_mm_packs_b(s)};
    c.ctx = aj_jit_module_context(m);
    c.mod = aj_jit_module_llvm(m);
    c.b = LLVMCreateBuilderInContext(c.ctx);
    c.f32 = LLVMFloatTypeInContext(c.ctx);
    c.i32 = LLVMInt32TypeInContext(c.ctx);
    c.i64 = LLVMInt64TypeInContext(c.ctx);
    c.ptr = LLVMPointerTypeInContext(c.ctx, 0);
    c.vty = LLVMVectorType(c.f32, (unsigned)s->vw);
    return c;
}

int aj_mm_emit(aj_jit *jit, aj_jit_module *m, const aj_mm_spec *spec, aj_diag *d) {
    aj_mm_spec s = aj_mm_resolve(jit, spec);
    if (!s.name || !*s.name || strlen(s.name) > 200) return aj_error(d, 0, 0, "matmul: the kernel needs a name");
    if (s.mr < 1 || s.mr > MAX_MR || s.nv < 1 || s.nv > MAX_NV)
        return aj_error(d, 0, 0, "matmul: register tile %d x %d outside 1..%d x 1..%d", s.mr, s.nv, MAX_MR, MAX_NV);
    if (s.vw != 4 && s.vw != 8 && s.vw != 16)
        return aj_error(d, 0, 0, "matmul: vector width %d (want 4, 8 or 16)", s.vw);
    if (s.nextra < 0 || s.nextra > AJ_MM_MAX_EXTRA)
        return aj_error(d, 0, 0, "matmul: %d extra arguments (at most %d)", s.nextra, AJ_MM_MAX_EXTRA);

    mm_ctx c = ctx_new(m, &s);
    emit_kernel(&c);
    if (c.packed) emit_pack(&c);
    LLVMDisposeBuilder(c.b);
    return 0;
}

/* ---------------------------------------------------------------- direct convolutions */


/* the largest divisor of n that is at most cap (1 when none is above 1) */
static int64_t divisor_upto(int64_t n, int64_t cap) {
    for (int64_t d = cap < n ? cap : n; d > 1; d--)
        if (n % d == 0) return d;
    return 1;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* out: tiles of mr outputs x nv vectors of pixels, nqt tiles an image.
 * grad_w: tiles of mr outputs x nc inputs x tg taps, the taps in ng
 * groups. Tile sizes divide M and K, so every tile is whole. The
 * accumulators leave registers for the loaded vectors, the broadcast and
 * masks: with AVX-512's 32 vector registers 16 (out) and 24 (grad_w),
 * with AVX2's 16, 8 and 10. */
typedef struct {
    int64_t HW, nqv;   /* pixels; vectors of pixels in the mask table */
    int64_t mr, nv, nqt;
    int64_t nc, tg, ng;
} conv_tiles;

static conv_tiles conv_tiles_of(int vw, const aj_conv_spec *s) {
    conv_tiles t = {.HW = s->H * s->W};
    int64_t nvec = (t.HW + vw - 1) / vw, wide = vw == 16, acc = wide ? 24 : 10;
    if (!s->grad_w) {
        t.nv = max64(1, min64(wide ? 4 : 2, nvec));
        t.mr = divisor_upto(s->M, min64(MAX_MR, (wide ? 16 : 8) / t.nv));
        t.nqt = (nvec + t.nv - 1) / t.nv;
        t.nqv = t.nqt * t.nv;
    } else {
        t.tg = max64(1, min64(s->ntaps, acc));
        t.ng = max64(1, (s->ntaps + t.tg - 1) / t.tg);
        t.mr = divisor_upto(s->M, min64(4, max64(1, acc / t.tg)));
        t.nc = divisor_upto(s->K, min64(MAX_MR, max64(1, acc / (t.mr * t.tg))));
        t.nqv = nvec;
    }
    return t;
}

int64_t aj_conv_rows(const aj_jit *jit, const aj_conv_spec *s) {
    conv_tiles t = conv_tiles_of(aj_jit_vector_width(jit), s);
    return s->grad_w ? s->M / t.mr * (s->K / t.nc) * t.ng : s->B * t.nqt;
}

/* the lanes of pixel vector qv whose pixel q and q + di W + dj are both
 * in the image */
static uint32_t conv_lanes(int vw, const aj_conv_spec *s, int64_t qv, int64_t di, int64_t dj) {
    uint32_t bits = 0;
    for (int l = 0; l < vw; l++) {
        int64_t q = qv * vw + l, y = q / s->W + di, x = q % s->W + dj;
        if (q < s->H * s->W && y >= 0 && y < s->H && x >= 0 && x < s->W) bits |= 1u << l;
    }
    return bits;
}

/* whether every lane of pixel vector qv is in the image for taps [t0, t1) */
static int conv_full(int vw, const aj_conv_spec *s, int64_t qv, int t0, int t1) {
    uint32_t all = (1u << vw) - 1;   /* vw <= 16 */
    for (int t = t0; t < t1; t++)
        if (conv_lanes(vw, s, qv, s->di[t], s->dj[t]) != all) return 0;
    return conv_lanes(vw, s, qv, 0, 0) == all;
}

/* The lane masks, one vector of vw i32 (-1 on, 0 off) per (row, vector of
 * pixels): row t < ntaps for tap t, row ntaps for the pixels themselves
 * (the image's end). A mask is then one load whose sign bits AVX2's
 * vmaskmovps reads as they are (a bit word would take three instructions
 * to widen, at every tap of every k). */
static LLVMValueRef conv_mask_table(mm_ctx *c, const aj_conv_spec *s, int64_t nqv, aj_diag *d) {
    int64_t n = (s->ntaps + 1) * nqv * c->vw;
    LLVMValueRef *w = malloc((size_t)max64(n, 1) * sizeof *w);
    if (!w) {
        aj_error(d, 0, 0, "conv: out of memory for the lane masks of %s", s->name);
        return NULL;
    }
    for (int t = 0; t <= s->ntaps; t++) {
        int64_t di = t < s->ntaps ? s->di[t] : 0, dj = t < s->ntaps ? s->dj[t] : 0;
        for (int64_t qv = 0; qv < nqv; qv++) {
            uint32_t bits = conv_lanes(c->vw, s, qv, di, dj);
            for (int l = 0; l < c->vw; l++)
                w[(t * nqv + qv) * c->vw + l] = LLVMConstInt(c->i32, bits >> l & 1 ? ~0ull : 0, 1);
        }
    }
    char name[256];
    snprintf(name, sizeof name, "%s_masks", s->name);
    LLVMValueRef g = LLVMAddGlobal(c->mod, LLVMArrayType2(c->i32, (uint64_t)n), name);
    LLVMSetInitializer(g, LLVMConstArray2(c->i32, w, (uint64_t)n));
    LLVMSetGlobalConstant(g, 1);
    LLVMSetLinkage(g, LLVMInternalLinkage);
    LLVMSetAlignment(g, 64);
    free(w);
    return g;
}

/* the mask at vector idx of the table, as <vw x i1> */
static LLVMValueRef conv_mask(mm_ctx *c, LLVMValueRef table, LLVMValueRef idx) {
    LLVMValueRef at = mul(c, idx, i64c(c, c->vw));
    LLVMTypeRef vt = LLVMVectorType(c->i32, (unsigned)c->vw);
    LLVMValueRef w = LLVMBuildLoad2(c->b, vt, LLVMBuildInBoundsGEP2(c->b, c->i32, table, &at, 1, ""), "");
    return LLVMBuildICmp(c->b, LLVMIntSLT, w, LLVMConstNull(vt), "");
}

/* base + off where off may leave the tensor (a tap past the image's edge,
 * whose lanes the mask turns off): a plain, not inbounds, GEP */
static LLVMValueRef shifted(mm_ctx *c, LLVMValueRef base, int64_t off) {
    LLVMValueRef o = i64c(c, off);
    return LLVMBuildGEP2(c->b, c->f32, base, &o, 1, "");
}

static int64_t tap_off(const aj_conv_spec *s, int t) { return s->di[t] * s->W + s->dj[t]; }

static LLVMValueRef *acc_at(mm_ctx *c, int64_t i) { return &c->acc[i / MAX_NV][i % MAX_NV]; }

static void acc_fma(mm_ctx *c, int64_t i, LLVMValueRef a, LLVMValueRef x) {
    LLVMValueRef p = *acc_at(c, i);
    vstore(c, aj_vm_fma(c->b, a, x, LLVMBuildLoad2(c->b, c->vty, p, "")), p);
}

/* out: row = (image b, tile qt of nv vectors of pixels); for each tile of
 * mr outputs m0..: acc[r][v] = sum_k sum_t A(m0 + r, k, t) x[b, k, q + off_t] */
static void emit_conv_out(mm_ctx *c, const aj_conv_spec *s, const conv_tiles *t, LLVMValueRef table) {
    LLVMValueRef A = param(c, 2, "w"), X = param(c, 3, "x"), Y = param(c, 4, "y");
    int nv = (int)t->nv, mr = (int)t->mr, vw = c->vw;
    mm_loop rl, ml, kl;
    loop_begin(c, &rl, param(c, 0, "lo"), param(c, 1, "hi"), i64c(c, 1), "row");
    LLVMValueRef b = LLVMBuildSDiv(c->b, rl.iv, i64c(c, t->nqt), ""), qt = LLVMBuildSRem(c->b, rl.iv, i64c(c, t->nqt), "");
    LLVMValueRef qv0 = mul(c, qt, i64c(c, nv)), q0 = mul(c, qv0, i64c(c, vw));
    LLVMValueRef xb = gep(c, X, add(c, mul(c, b, i64c(c, s->K * t->HW)), q0));
    LLVMValueRef yb = gep(c, Y, add(c, mul(c, b, i64c(c, s->M * t->HW)), q0));
    loop_begin(c, &ml, i64c(c, 0), i64c(c, s->M), i64c(c, mr), "m");
    for (int i = 0; i < mr * nv; i++) vstore(c, LLVMConstNull(c->vty), *acc_at(c, i));
    loop_begin(c, &kl, i64c(c, 0), i64c(c, s->K), i64c(c, 1), "k");
    LLVMValueRef xk = gep(c, xb, mul(c, kl.iv, i64c(c, t->HW)));
    LLVMValueRef wk = gep(c, A, add(c, mul(c, ml.iv, i64c(c, s->wm)), mul(c, kl.iv, i64c(c, s->wk))));
    for (int tp = 0; tp < s->ntaps; tp++) {
        LLVMValueRef xv[MAX_NV];
        for (int v = 0; v < nv; v++) {
            LLVMValueRef m = conv_mask(c, table, add(c, qv0, i64c(c, tp * t->nqv + v)));
            xv[v] = load_lanes(c, shifted(c, xk, (int64_t)v * vw + tap_off(s, tp)), m);
        }
        for (int r = 0; r < mr; r++) {
            LLVMValueRef a = LLVMBuildLoad2(c->b, c->f32, gep(c, wk, i64c(c, r * s->wm + s->tap[tp])), "");
            a = broadcast(c, a);
            for (int v = 0; v < nv; v++) acc_fma(c, r * nv + v, a, xv[v]);
        }
    }
    loop_end(c, &kl);
    LLVMValueRef ym = gep(c, yb, mul(c, ml.iv, i64c(c, t->HW)));
    for (int v = 0; v < nv; v++) {
        LLVMValueRef m = conv_mask(c, table, add(c, qv0, i64c(c, s->ntaps * t->nqv + v)));
        for (int r = 0; r < mr; r++) {
            LLVMValueRef val = LLVMBuildLoad2(c->b, c->vty, *acc_at(c, r * nv + v), "");
            store_lanes(c, val, gep(c, ym, i64c(c, r * t->HW + (int64_t)v * vw)), m);
        }
    }
    loop_end(c, &ml);
    loop_end(c, &rl);
}

/* the sum of v's lanes, in any order */
static LLVMValueRef hsum(mm_ctx *c, LLVMValueRef v) {
    static const char name[] = "llvm.vector.reduce.fadd";
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(c->mod, id, &c->vty, 1), args[2] = {LLVMConstReal(c->f32, -0.0), v};
    LLVMValueRef r = LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, &c->vty, 1), f, args, 2, "");
    LLVMSetFastMathFlags(r, LLVMFastMathAllowReassoc);
    return r;
}

/* grad_w, the tile (m0.., k0.., taps t0..t1) at image b: lane sums of
 * dy[b, m, q] x[b, k, q + off_t] over the pixel vectors, then added into
 * dw (stored at b = 0) */
static void conv_w_tile(mm_ctx *c, const aj_conv_spec *s, const conv_tiles *t, LLVMValueRef table, const LLVMValueRef *p,
                        LLVMValueRef b, LLVMValueRef m0, LLVMValueRef k0, int t0, int t1) {
    int64_t mr = t->mr, nc = t->nc, nt = t1 - t0, vw = c->vw;
    for (int64_t i = 0; i < mr * nc * nt; i++) vstore(c, LLVMConstNull(c->vty), *acc_at(c, i));
    LLVMValueRef dyb = gep(c, p[0], add(c, mul(c, b, i64c(c, s->M * t->HW)), mul(c, m0, i64c(c, t->HW))));
    LLVMValueRef xb = gep(c, p[1], add(c, mul(c, b, i64c(c, s->K * t->HW)), mul(c, k0, i64c(c, t->HW))));
    /* the pixel vectors [qa, qb) where every lane of every tap is in the
     * image (1x1 kernels: all but the image's end) read without masks */
    int64_t qa = 0, qb;
    while (qa < t->nqv && !conv_full(c->vw, s, qa, t0, t1)) qa++;
    for (qb = qa; qb < t->nqv && conv_full(c->vw, s, qb, t0, t1); qb++) {}
    int64_t from[3] = {0, qa, qb}, to[3] = {qa, qb, t->nqv};
    for (int part = 0; part < 3; part++) {
        if (from[part] == to[part]) continue;
        mm_loop ql;
        loop_begin(c, &ql, i64c(c, from[part]), i64c(c, to[part]), i64c(c, 1), "qv");
        LLVMValueRef q = mul(c, ql.iv, i64c(c, vw)), dy[MAX_MR];
        LLVMValueRef pm = part == 1 ? NULL : conv_mask(c, table, add(c, ql.iv, i64c(c, s->ntaps * t->nqv)));
        for (int64_t r = 0; r < mr; r++) dy[r] = load_lanes(c, gep(c, dyb, add(c, q, i64c(c, r * t->HW))), pm);
        for (int64_t kk = 0; kk < nc; kk++) {
            LLVMValueRef xr = gep(c, xb, add(c, q, i64c(c, kk * t->HW)));
            for (int tp = t0; tp < t1; tp++) {
                LLVMValueRef m = part == 1 ? NULL : conv_mask(c, table, add(c, ql.iv, i64c(c, tp * t->nqv)));
                LLVMValueRef xv = load_lanes(c, shifted(c, xr, tap_off(s, tp)), m);
                for (int64_t r = 0; r < mr; r++) acc_fma(c, (r * nc + kk) * nt + tp - t0, dy[r], xv);
            }
        }
        loop_end(c, &ql);
    }
    LLVMValueRef first = LLVMBuildICmp(c->b, LLVMIntEQ, b, i64c(c, 0), "");
    LLVMValueRef dwb = gep(c, p[2], add(c, mul(c, m0, i64c(c, s->K * s->K2)), mul(c, k0, i64c(c, s->K2))));
    for (int64_t r = 0; r < mr; r++)
        for (int64_t kk = 0; kk < nc; kk++)
            for (int tp = t0; tp < t1; tp++) {
                LLVMValueRef sum = hsum(c, LLVMBuildLoad2(c->b, c->vty, *acc_at(c, (r * nc + kk) * nt + tp - t0), ""));
                LLVMValueRef at = gep(c, dwb, i64c(c, (r * s->K + kk) * s->K2 + s->tap[tp]));
                LLVMValueRef old = LLVMBuildLoad2(c->b, c->f32, at, "");
                LLVMBuildStore(c->b, LLVMBuildSelect(c->b, first, sum, LLVMBuildFAdd(c->b, old, sum, ""), ""), at);
            }
}

static int tap_kept(const aj_conv_spec *s, int64_t z) {
    for (int t = 0; t < s->ntaps; t++)
        if (s->tap[t] == z) return 1;
    return 0;
}

/* then-block of `if (cond)`; *after is where both ways meet */
static void if_begin(mm_ctx *c, LLVMValueRef cond, LLVMBasicBlockRef *after) {
    LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "then");
    *after = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "endif");
    LLVMBuildCondBr(c->b, cond, then, *after);
    LLVMPositionBuilderAtEnd(c->b, then);
}

static void if_end(mm_ctx *c, LLVMBasicBlockRef after) {
    LLVMBuildBr(c->b, after);
    LLVMPositionBuilderAtEnd(c->b, after);
}

/* grad_w's row = (mt, kt, g) */
static void tile_of(mm_ctx *c, const conv_tiles *t, int64_t nkt, LLVMValueRef row, LLVMValueRef *mt, LLVMValueRef *kt,
                    LLVMValueRef *g) {
    *mt = LLVMBuildSDiv(c->b, row, i64c(c, nkt * t->ng), "");
    *kt = LLVMBuildSRem(c->b, LLVMBuildSDiv(c->b, row, i64c(c, t->ng), ""), i64c(c, nkt), "");
    *g = LLVMBuildSRem(c->b, row, i64c(c, t->ng), "");
}

/* grad_w: row = (tile of mr outputs, tile of nc inputs, group g of taps);
 * the taps no group computes are zeroed by the rows of group 0; then,
 * image by image, every row of [lo, hi) adds that image's sums */
static void emit_conv_grad_w(mm_ctx *c, const aj_conv_spec *s, const conv_tiles *t, LLVMValueRef table) {
    LLVMValueRef lo = param(c, 0, "lo"), hi = param(c, 1, "hi");
    LLVMValueRef p[3] = {param(c, 2, "dy"), param(c, 3, "x"), param(c, 4, "dw")};
    int64_t nkt = s->K / t->nc;
    mm_loop rl, bl;
    LLVMValueRef mt, kt, g;
    if (s->ntaps < s->K2) {
        loop_begin(c, &rl, lo, hi, i64c(c, 1), "zrow");
        tile_of(c, t, nkt, rl.iv, &mt, &kt, &g);
        LLVMBasicBlockRef after;
        if_begin(c, LLVMBuildICmp(c->b, LLVMIntEQ, g, i64c(c, 0), ""), &after);
        LLVMValueRef dwb = gep(c, p[2], add(c, mul(c, mt, i64c(c, t->mr * s->K * s->K2)), mul(c, kt, i64c(c, t->nc * s->K2))));
        for (int64_t r = 0; r < t->mr; r++)
            for (int64_t kk = 0; kk < t->nc; kk++)
                for (int64_t z = 0; z < s->K2; z++)
                    if (!tap_kept(s, z))
                        LLVMBuildStore(c->b, LLVMConstReal(c->f32, 0), gep(c, dwb, i64c(c, (r * s->K + kk) * s->K2 + z)));
        if_end(c, after);
        loop_end(c, &rl);
    }
    if (s->ntaps == 0) return;
    loop_begin(c, &bl, i64c(c, 0), i64c(c, s->B), i64c(c, 1), "b");
    loop_begin(c, &rl, lo, hi, i64c(c, 1), "row");
    tile_of(c, t, nkt, rl.iv, &mt, &kt, &g);
    LLVMValueRef m0 = mul(c, mt, i64c(c, t->mr)), k0 = mul(c, kt, i64c(c, t->nc));
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "tiled");
    LLVMValueRef sw = LLVMBuildSwitch(c->b, g, done, (unsigned)t->ng);
    for (int gi = 0; gi < t->ng; gi++) {
        LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "group");
        LLVMAddCase(sw, i64c(c, gi), bb);
        LLVMPositionBuilderAtEnd(c->b, bb);
        int t0 = gi * (int)t->tg;
        conv_w_tile(c, s, t, table, p, bl.iv, m0, k0, t0, (int)min64(s->ntaps, t0 + t->tg));
        LLVMBuildBr(c->b, done);
    }
    LLVMPositionBuilderAtEnd(c->b, done);
    loop_end(c, &rl);
    loop_end(c, &bl);
}

int aj_conv_emit(aj_jit *jit, aj_jit_module *m, const aj_conv_spec *s, aj_diag *d) {
    aj_mm_spec sp = aj_mm_resolve(jit, &(aj_mm_spec){.name = s->name});
    mm_ctx c = ctx_new(m, &sp);
    conv_tiles t = conv_tiles_of(c.vw, s);
    LLVMValueRef table = conv_mask_table(&c, s, t.nqv, d);
    if (table) {
        declare(&c, s->name, (int[]){0, 0, 1, 1, 1}, 5, 2);
        for (int r = 0; r < MAX_MR; r++)
            for (int v = 0; v < MAX_NV; v++) c.acc[r][v] = LLVMBuildAlloca(c.b, c.vty, "acc");
        if (s->grad_w) emit_conv_grad_w(&c, s, &t, table);
        else emit_conv_out(&c, s, &t, table);
        LLVMBuildRetVoid(c.b);
    }
    LLVMDisposeBuilder(c.b);
    return table ? 0 : -1;
}
