/* Lowering to LLVM IR: one function per kernel spec (compiler/codegen.h).
 *
 * Every kernel has the signature
 *     void k(i64 lo, i64 hi, const aj_kctx *ctx, ptr const *buf)
 * and computes rows [lo, hi) of its iteration space: it loads its buffers'
 * addresses from the table buf and calls its body k_body(lo, hi, ctx,
 * ptr noalias b0, ...), inlined (entry_fn). Kernels are plain loop
 * nests over scalars: LLVM's loop vectoriser turns the innermost loop, which
 * runs along the last axis, into the host's widest vectors, and vecmath.c
 * keeps exp/log/tanh/sigmoid/sin/cos free of libm calls so it can.
 *
 * The per-op rules live in three places here, each indexed by op:
 *   ew_value    the scalar math of an elementwise op (its value at one
 *               element, from its inputs' values there);
 *   view rules  movement ops that are only a different view of their input
 *               (reshape, transpose, broadcast, slice, unsqueeze): a copy in
 *               the naive engine, nothing at all once fused;
 *   lower_node  the loop nest of every other op with a lowering.
 * Ops with none of these run on the interpreter (aj_codegen_lowers). */
#include "compiler/plan.h"

#include "compiler/ir_loop.h"
#include "compiler/matmul_llvm.h"
#include "compiler/vecmath.h"
#include "runtime/interp.h"

#include <llvm-c/DebugInfo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct aj_codegen {
    aj_jit *jit;
    aj_jit_module *mod;
    LLVMContextRef cx;
    LLVMModuleRef m;
    LLVMBuilderRef b;
    LLVMTypeRef f32, i32, i64, ptr, void_;
    /* the kernel being emitted */
    const aj_kspec *ks;
    LLVMValueRef fn, lo, hi, ctx;
    LLVMValueRef *arg;       /* its buffers: the body's pointer parameters */
    int caparg;
    LLVMBasicBlockRef entry;
    LLVMBuilderRef eb;       /* at the end of the entry block: allocas, ctx loads */
    int nconv;               /* direct convolutions emitted so far */
    aj_diag *d;              /* the kernel's diagnostics */
    int vw;                  /* floats in the host's widest vector */
    int nan_check;           /* aj_codegen_set_nan_check */
    /* line tables (aj_codegen_set_source): every function a subprogram of
     * the graph file, every op's instructions at its graph line */
    LLVMDIBuilderRef dib;
    LLVMMetadataRef difile, difn_type, sp;   /* sp: the function being emitted's */
};

/* aj_kctx's fields as i64 indices */
enum { CTX_T = 0, CTX_DEPTH = AJ_MAX_DEPTH, CTX_SEED, CTX_ITH, CTX_NTH, CTX_ODD, CTX_RING };

/* ---------------------------------------------------------------- views */

aj_view aj_view_dense(int arg, const aj_type *t, const aj_bind *b) {
    aj_view v = {.arg = arg, .swap_arg = -1, .tlevel = -1, .dtype = t->dtype, .rank = t->rank};
    int64_t s = 1;
    for (int a = t->rank - 1; a >= 0; a--) {
        v.shape[a] = aj_dim_bind(t->dim[a], b).off;
        v.stride[a] = s;
        s *= v.shape[a];
    }
    return v;
}

/* ---------------------------------------------------------------- IR helpers */

static LLVMValueRef i64c(aj_codegen *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }
static LLVMValueRef f32c(aj_codegen *c, double v) { return LLVMConstReal(c->f32, v); }
static LLVMValueRef add(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWAdd(c->b, x, y, ""); }
static LLVMValueRef mul(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWMul(c->b, x, y, ""); }
static LLVMValueRef muli(aj_codegen *c, LLVMValueRef x, int64_t k) { return k == 1 ? x : mul(c, x, i64c(c, k)); }
static LLVMValueRef fadd_(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFAdd(c->b, x, y, ""); }
static LLVMValueRef fsub_(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFSub(c->b, x, y, ""); }
static LLVMValueRef fmul_(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildFMul(c->b, x, y, ""); }
static LLVMValueRef fgt(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) {
    return LLVMBuildFCmp(c->b, LLVMRealOGT, x, y, "");
}
static LLVMValueRef sel(aj_codegen *c, LLVMValueRef k, LLVMValueRef x, LLVMValueRef y) {
    return LLVMBuildSelect(c->b, k, x, y, "");
}

/* Reductions may be reassociated, so the vectoriser can split them into lanes. */
static LLVMValueRef fadd_reassoc(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) {
    LLVMValueRef v = fadd_(c, x, y);
    LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc | LLVMFastMathNoSignedZeros);
    return v;
}

static LLVMTypeRef elem_type(aj_codegen *c, aj_dtype dt) { return dt == AJ_F32 ? c->f32 : c->i32; }

/* the view's buffer: a carry's ping-pong partner on odd steps */
static LLVMValueRef ctx_field(aj_codegen *c, int i);

static LLVMValueRef vptr(aj_codegen *c, const aj_view *v) {
    if (v->thread_slot) {   /* thread 0: arg; thread i: its partials, i - 1 of thread_arg */
        LLVMValueRef ith = ctx_field(c, CTX_ITH);
        LLVMValueRef at = muli(c, LLVMBuildNSWSub(c->b, ith, i64c(c, 1), ""), v->thread_slot);
        LLVMValueRef mine = LLVMBuildGEP2(c->b, elem_type(c, v->dtype), c->arg[v->thread_arg], &at, 1, "");
        return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntEQ, ith, i64c(c, 0), ""), c->arg[v->arg], mine, "");
    }
    if (v->swap_arg < 0) return c->arg[v->arg];
    LLVMValueRef odd = LLVMBuildICmp(c->b, LLVMIntNE, ctx_field(c, CTX_ODD), i64c(c, 0), "");
    return LLVMBuildSelect(c->b, odd, c->arg[v->swap_arg], c->arg[v->arg], "");
}

static LLVMValueRef load_at(aj_codegen *c, const aj_view *v, LLVMValueRef idx) {
    LLVMTypeRef t = elem_type(c, v->dtype);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(c->b, t, vptr(c, v), &idx, 1, "");
    return LLVMBuildLoad2(c->b, t, p, "");
}

static void store_at(aj_codegen *c, const aj_view *v, LLVMValueRef idx, LLVMValueRef x) {
    LLVMTypeRef t = elem_type(c, v->dtype);
    LLVMBuildStore(c->b, x, LLVMBuildInBoundsGEP2(c->b, t, vptr(c, v), &idx, 1, ""));
}

/* An f32 view's element as float (i32 converted), for elementwise math. */
static LLVMValueRef load_f(aj_codegen *c, const aj_view *v, LLVMValueRef idx) {
    LLVMValueRef x = load_at(c, v, idx);
    return v->dtype == AJ_F32 ? x : LLVMBuildSIToFP(c->b, x, c->f32, "");
}

/* The view's first element: off + t[tlevel] * tstride, read from ctx. */
/* ctx field i (as i64) */
static LLVMValueRef ctx_field(aj_codegen *c, int i) {
    LLVMValueRef ix = i64c(c, i);
    return LLVMBuildLoad2(c->b, c->i64, LLVMBuildInBoundsGEP2(c->b, c->i64, c->ctx, &ix, 1, ""), "");
}

/* the step index of the loop at depth level+1 */
static LLVMValueRef step_t(aj_codegen *c, int level) { return ctx_field(c, CTX_T + level); }

static LLVMValueRef view_base(aj_codegen *c, const aj_view *v) {
    LLVMValueRef base = i64c(c, v->off);
    if (v->tlevel >= 0 && v->tstride) {
        LLVMValueRef t = step_t(c, v->tlevel);
        if (v->thread_slot)   /* a split's partials: the step's slot in the ring */
            t = sel(c, LLVMBuildICmp(c->b, LLVMIntEQ, ctx_field(c, CTX_ITH), i64c(c, 0), ""), t, ctx_field(c, CTX_RING));
        base = add(c, base, muli(c, t, v->tstride));
    }
    return base;
}

static LLVMValueRef alloca_f(aj_codegen *c, const char *name) { return LLVMBuildAlloca(c->eb, c->f32, name); }

/* for (iv = from; iv < to; iv++) (compiler/ir_loop.h) */
typedef aj_ir_loop loop;

static LLVMValueRef loop_open(aj_codegen *c, loop *L, LLVMValueRef from, LLVMValueRef to, const char *name) {
    return aj_ir_loop_open(c->b, L, from, to, i64c(c, 1), name);
}

/* the loop's back edge: its branch */
static LLVMValueRef loop_close(aj_codegen *c, loop *L) { return aj_ir_loop_close(c->b, L); }

static LLVMMetadataRef loop_hint(aj_codegen *c, const char *name, LLVMValueRef v) {
    LLVMMetadataRef ops[2] = {LLVMMDStringInContext2(c->cx, name, strlen(name)), LLVMValueAsMetadata(v)};
    return LLVMMDNodeInContext2(c->cx, ops, 2);
}

/* Tell the loop vectoriser to run the loop ending in back edge br as
 * vectors of the host's width, the last one masked (a predicated tail):
 * the loop's own id, !{self, hints...}, on its branch. */
static void vectorise_masked(aj_codegen *c, LLVMValueRef br) {
    LLVMTypeRef i1 = LLVMInt1TypeInContext(c->cx);
    LLVMMetadataRef self = LLVMTemporaryMDNode(c->cx, NULL, 0);
    LLVMMetadataRef ops[4] = {self, loop_hint(c, "llvm.loop.vectorize.enable", LLVMConstInt(i1, 1, 0)),
                              loop_hint(c, "llvm.loop.vectorize.predicate.enable", LLVMConstInt(i1, 1, 0)),
                              loop_hint(c, "llvm.loop.vectorize.width", LLVMConstInt(c->i32, (unsigned)c->vw, 0))};
    LLVMMetadataRef id = LLVMMDNodeInContext2(c->cx, ops, 4);
    LLVMMetadataReplaceAllUsesWith(self, id);
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(c->cx, "llvm.loop", 9), LLVMMetadataAsValue(c->cx, id));
}

typedef void (*index_fn)(aj_codegen *c, void *user, LLVMValueRef j);

/* for j in [0, n), n known: the innermost loop of a kernel, the one LLVM
 * vectorises. Left alone, LLVM runs 4 vectors per iteration and the rest
 * (52 of NADE's 500 columns) as narrower vectors and then scalars: each
 * scalar exp costs as much as a vector of 16, so that tail cost 19% of
 * the row. Instead: whole blocks of 4 vectors, then one loop of vectors
 * with the last one masked. (The body is emitted twice.) */
static void vector_loop(aj_codegen *c, int64_t n, index_fn body, void *user) {
    int64_t m = n - n % (4 * c->vw);
    loop l;
    if (m > 0) {
        body(c, user, loop_open(c, &l, i64c(c, 0), i64c(c, m), "j"));
        loop_close(c, &l);
    }
    if (m < n) {
        body(c, user, loop_open(c, &l, i64c(c, m), i64c(c, n), "jtail"));
        vectorise_masked(c, loop_close(c, &l));
    }
}

/* idx[0..n-1] of flat index r over shape[0..n-1], row-major. */
static void unflatten(aj_codegen *c, LLVMValueRef r, const int64_t *shape, int n, LLVMValueRef *idx) {
    for (int a = n - 1; a >= 0; a--) {
        if (a == 0) {
            idx[a] = r;
        } else {
            idx[a] = LLVMBuildSRem(c->b, r, i64c(c, shape[a]), "");
            r = LLVMBuildSDiv(c->b, r, i64c(c, shape[a]), "");
        }
    }
}

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int a = from; a < to; a++) p *= s[a];
    return p;
}

/* ---------------------------------------------------------------- random numbers (runtime/rng.h in IR) */

static LLVMValueRef u64c(aj_codegen *c, uint64_t v) { return LLVMConstInt(c->i64, v, 0); }

static LLVMValueRef rng_mix(aj_codegen *c, LLVMValueRef x) {
    x = LLVMBuildAdd(c->b, x, u64c(c, 0x9E3779B97F4A7C15ull), "");
    x = LLVMBuildMul(c->b, LLVMBuildXor(c->b, x, LLVMBuildLShr(c->b, x, u64c(c, 30), ""), ""),
                     u64c(c, 0xBF58476D1CE4E5B9ull), "");
    x = LLVMBuildMul(c->b, LLVMBuildXor(c->b, x, LLVMBuildLShr(c->b, x, u64c(c, 27), ""), ""),
                     u64c(c, 0x94D049BB133111EBull), "");
    return LLVMBuildXor(c->b, x, LLVMBuildLShr(c->b, x, u64c(c, 31), ""), "");
}

static LLVMValueRef rng_key(aj_codegen *c, LLVMValueRef seed, LLVMValueRef a, LLVMValueRef b) {
    return rng_mix(c, LLVMBuildXor(c->b, rng_mix(c, LLVMBuildXor(c->b, rng_mix(c, seed), a, "")), b, ""));
}

/* aj_rng_node_key(seed, line, col, t[0..depth-1]) of the node, from ctx. */
static LLVMValueRef node_key(aj_codegen *c, const aj_node *n) {
    LLVMValueRef k = rng_key(c, ctx_field(c, CTX_SEED), u64c(c, (uint64_t)n->line), u64c(c, (uint64_t)n->col));
    for (int i = 0; i < c->ks->depth; i++) k = rng_key(c, k, step_t(c, i), u64c(c, 0));
    return k;
}

/* aj_rng_u01(key, counter): 24 random bits as a float in [0, 1) */
static LLVMValueRef rng_u01(aj_codegen *c, LLVMValueRef key, LLVMValueRef counter) {
    LLVMValueRef h = rng_mix(c, LLVMBuildXor(c->b, key, rng_mix(c, counter), ""));
    LLVMValueRef bits = LLVMBuildLShr(c->b, h, u64c(c, 40), "");
    return fmul_(c, LLVMBuildUIToFP(c->b, bits, c->f32, ""), f32c(c, 0x1p-24));
}

/* ---------------------------------------------------------------- line tables */

/* DWARF line tables with the graph file as the source: `dump --stage asm`
 * marks each op's instructions with `.loc file line col`, and the objects
 * (also those in the disk cache) carry the graph lines for any tool that
 * reads them. */
void aj_codegen_set_source(aj_codegen *c, const char *path) {
    if (c->dib || !path) return;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path, *dir = slash ? path : ".";
    size_t dirlen = slash ? (size_t)(slash - path) : 1;
    c->dib = LLVMCreateDIBuilder(c->m);
    c->difile = LLVMDIBuilderCreateFile(c->dib, name, strlen(name), dir, dirlen);
    LLVMDIBuilderCreateCompileUnit(c->dib, LLVMDWARFSourceLanguageC, c->difile, "arjit", 5, 1, "", 0, 0, "", 0,
                                   LLVMDWARFEmissionLineTablesOnly, 0, 0, 0, "", 0, "", 0);
    c->difn_type = LLVMDIBuilderCreateSubroutineType(c->dib, c->difile, NULL, 0, LLVMDIFlagZero);
    LLVMAddModuleFlag(c->m, LLVMModuleFlagBehaviorWarning, "Debug Info Version", 18,
                      LLVMValueAsMetadata(LLVMConstInt(c->i32, LLVMDebugMetadataVersion(), 0)));
    LLVMAddModuleFlag(c->m, LLVMModuleFlagBehaviorWarning, "Dwarf Version", 13,
                      LLVMValueAsMetadata(LLVMConstInt(c->i32, 5, 0)));
}

/* what the builders emit from here on is at graph line:col */
static void at_line(aj_codegen *c, int line, int col) {
    if (!c->sp) return;
    LLVMMetadataRef loc = LLVMDIBuilderCreateDebugLocation(c->cx, (unsigned)line, (unsigned)col, c->sp, NULL);
    LLVMSetCurrentDebugLocation2(c->b, loc);
    LLVMSetCurrentDebugLocation2(c->eb, loc);
}

static void at_node(aj_codegen *c, const aj_node *n) {
    if (n) at_line(c, n->line, n->col);
}

/* c->fn becomes a subprogram of the graph file at `line` */
static void describe_fn(aj_codegen *c, const char *name, int line) {
    if (!c->dib) return;
    c->sp = LLVMDIBuilderCreateFunction(c->dib, c->difile, name, strlen(name), name, strlen(name), c->difile,
                                        (unsigned)line, c->difn_type, LLVMGetLinkage(c->fn) == LLVMInternalLinkage,
                                        1, (unsigned)line, LLVMDIFlagZero, 1);
    LLVMSetSubprogram(c->fn, c->sp);
    at_line(c, line, 0);
}

/* the graph line of ks: its node's, or its group's root's */
static int spec_line(const aj_kspec *ks) {
    if (!ks->g) return 0;
    if (ks->node >= 0) return ks->g->node[ks->node].line;
    return ks->nnodes ? ks->g->node[ks->nodes[ks->nnodes - 1]].line : 0;
}

/* ---------------------------------------------------------------- elementwise math */

static LLVMValueRef call1(aj_codegen *c, const char *intrinsic, LLVMValueRef x) {
    return aj_vm_intrinsic(c->b, intrinsic, &x, 1);
}

static LLVMValueRef softplus(aj_codegen *c, LLVMValueRef x) { return aj_vm_softplus(c->b, x); }

/* The value of elementwise node n at one element: x[] its inputs there (as
 * floats), flat the element's row-major index (the sampling counter), key
 * the node's rng key (NULL unless n samples). The math matches the
 * interpreter's ew_* functions in runtime/interp.c. */
static LLVMValueRef ew_value(aj_codegen *c, const aj_node *n, const LLVMValueRef *x, LLVMValueRef flat,
                             LLVMValueRef key) {
    LLVMValueRef zero = f32c(c, 0), one = f32c(c, 1);
    switch (n->op) {
    case AJ_OP_NEG: return LLVMBuildFNeg(c->b, x[0], "");
    case AJ_OP_EXP: return aj_vm_exp(c->b, x[0]);
    case AJ_OP_LOG: return aj_vm_log(c->b, x[0]);
    case AJ_OP_TANH: return aj_vm_tanh(c->b, x[0]);
    case AJ_OP_SIGMOID: return aj_vm_sigmoid(c->b, x[0]);
    case AJ_OP_RELU: return sel(c, fgt(c, x[0], zero), x[0], zero);
    case AJ_OP_SOFTPLUS: return softplus(c, x[0]);
    case AJ_OP_SQRT: return call1(c, "llvm.sqrt", x[0]);
    case AJ_OP_SQUARE: return fmul_(c, x[0], x[0]);
    case AJ_OP_GELU: {   /* x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
        LLVMValueRef x3 = fmul_(c, fmul_(c, x[0], x[0]), x[0]);
        LLVMValueRef u = fmul_(c, f32c(c, 0.7978845608028654), aj_vm_fma(c->b, f32c(c, 0.044715), x3, x[0]));
        return fmul_(c, fmul_(c, f32c(c, 0.5), x[0]), fadd_(c, one, aj_vm_tanh(c->b, u)));
    }
    case AJ_OP_SIN: return aj_vm_sin(c->b, x[0]);
    case AJ_OP_COS: return aj_vm_cos(c->b, x[0]);
    case AJ_OP_STEP: return sel(c, fgt(c, x[0], zero), one, zero);
    case AJ_OP_ADD: return fadd_(c, x[0], x[1]);
    case AJ_OP_SUB: return fsub_(c, x[0], x[1]);
    case AJ_OP_MUL: return fmul_(c, x[0], x[1]);
    case AJ_OP_DIV: return LLVMBuildFDiv(c->b, x[0], x[1], "");
    case AJ_OP_MAXIMUM: return sel(c, fgt(c, x[0], x[1]), x[0], x[1]);
    case AJ_OP_BERNOULLI_NLL: /* softplus(l) - x l */
        return fsub_(c, softplus(c, x[0]), fmul_(c, x[1], x[0]));
    case AJ_OP_GAUSSIAN_NLL: { /* log sqrt(2 pi) + ls + ((x - mu) e^-ls)^2 / 2 */
        LLVMValueRef z = fmul_(c, fsub_(c, x[0], x[1]), aj_vm_exp(c->b, LLVMBuildFNeg(c->b, x[2], "")));
        return fadd_(c, fadd_(c, f32c(c, 0.9189385332046727), x[2]), fmul_(c, f32c(c, 0.5), fmul_(c, z, z)));
    }
    case AJ_OP_BERNOULLI: { /* 1 with probability sigmoid(l); NaN for l NaN under --check-nan */
        LLVMValueRef y = sel(c, LLVMBuildFCmp(c->b, LLVMRealOLT, rng_u01(c, key, flat), aj_vm_sigmoid(c->b, x[0]), ""),
                             one, zero);
        return c->nan_check ? sel(c, LLVMBuildFCmp(c->b, LLVMRealUNO, x[0], x[0], ""), x[0], y) : y;
    }
    case AJ_OP_UNIFORM: return rng_u01(c, key, flat);
    case AJ_OP_NORMAL: { /* mu + e^ls sqrt(-2 ln(1 - u1)) cos(2 pi u2) */
        LLVMValueRef i2 = LLVMBuildShl(c->b, flat, u64c(c, 1), "");
        LLVMValueRef u1 = rng_u01(c, key, i2), u2 = rng_u01(c, key, LLVMBuildAdd(c->b, i2, u64c(c, 1), ""));
        LLVMValueRef r = call1(c, "llvm.sqrt", fmul_(c, f32c(c, -2), aj_vm_log(c->b, fsub_(c, one, u1))));
        LLVMValueRef z = fmul_(c, r, call1(c, "llvm.cos", fmul_(c, f32c(c, 6.2831853071795864), u2)));
        return fadd_(c, x[0], fmul_(c, aj_vm_exp(c->b, x[1]), z));
    }
    default: return NULL;
    }
}

int aj_op_elementwise(aj_op op) { return (aj_op_info(op)->flags & AJ_EW) != 0; }

int aj_op_view(aj_op op) { return (aj_op_info(op)->flags & AJ_VIEW) != 0; }

/* a reduction that folds one accumulator (logsumexp needs two passes: the
 * max, then the sum of exponentials) */
int aj_op_group_reduce(aj_op op) { return (aj_op_info(op)->flags & AJ_REDUCE) && op != AJ_OP_LOGSUMEXP; }

/* ---------------------------------------------------------------- the elementwise driver */

/* For each element of shape[0..rank-1] whose first index lies in [lo, hi)
 * (the kernel's rows): `body` gets the element's multi-index, its flat
 * row-major index and each view's offset there (views in vs[] broadcast
 * right-aligned, as numpy does). Loops: axis 0, the middle axes flattened,
 * the last axis innermost, so the inner loop vectorises. */
typedef void (*elem_fn)(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs);

/* view v's stride along axis a of a rank-r iteration (0: broadcast) */
static int64_t bstride(const aj_view *v, int a, int r) {
    int av = a - (r - v->rank);
    return av >= 0 && v->shape[av] != 1 ? v->stride[av] : 0;
}

typedef struct {
    elem_fn body;
    void *user;
    int nv;
    const aj_view *vs;
    LLVMValueRef *offm, *offs, *idx, flat0;   /* flat0: the row's first flat index */
    int rank;
} inner_loop;

static void inner_elem(aj_codegen *c, void *user, LLVMValueRef j) {
    inner_loop *il = user;
    il->idx[il->rank - 1] = j;
    for (int k = 0; k < il->nv; k++) {
        int64_t sj = bstride(&il->vs[k], il->rank - 1, il->rank);
        il->offs[k] = sj ? add(c, il->offm[k], muli(c, j, sj)) : il->offm[k];
    }
    il->body(c, il->user, il->idx, add(c, il->flat0, j), il->offs);
}

static void for_each_element(aj_codegen *c, int rank, const int64_t *shape, const aj_view *vs, int nv,
                             elem_fn body, void *user) {
    enum { MAXV = AJ_KS_MAX_IN + 4 };
    LLVMValueRef base[MAXV], off0[MAXV], offm[MAXV], offs[MAXV], idx[AJ_MAX_RANK + 1];
    for (int k = 0; k < nv; k++) base[k] = view_base(c, &vs[k]);
    loop l0, lm;
    LLVMValueRef a0 = loop_open(c, &l0, c->lo, c->hi, "a0");
    if (rank == 0) {
        body(c, user, idx, i64c(c, 0), base);
        loop_close(c, &l0);
        return;
    }
    idx[0] = a0;
    for (int k = 0; k < nv; k++) off0[k] = add(c, base[k], muli(c, a0, bstride(&vs[k], 0, rank)));
    if (rank == 1) {
        body(c, user, idx, a0, off0);
        loop_close(c, &l0);
        return;
    }
    int64_t M = prod(shape, 1, rank - 1), inner = shape[rank - 1];
    LLVMValueRef m = M > 1 ? loop_open(c, &lm, i64c(c, 0), i64c(c, M), "mid") : i64c(c, 0);
    if (rank > 2) unflatten(c, m, shape + 1, rank - 2, idx + 1);
    for (int k = 0; k < nv; k++) {
        offm[k] = off0[k];
        for (int a = 1; a < rank - 1; a++) offm[k] = add(c, offm[k], muli(c, idx[a], bstride(&vs[k], a, rank)));
    }
    inner_loop il = {body, user, nv, vs, offm, offs, idx, muli(c, add(c, muli(c, a0, M), m), inner), rank};
    vector_loop(c, inner, inner_elem, &il);
    if (M > 1) loop_close(c, &lm);
    loop_close(c, &l0);
}

/* the rows of an elementwise kernel: its first axis */
static int64_t rows_of(int rank, const int64_t *shape) { return rank ? shape[0] : 1; }

/* views: out[0], then the inputs */
typedef struct {
    const aj_node *n;
    LLVMValueRef key;
    int nin;
} ew_user;

static void ew_body(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs) {
    ew_user *u = user;
    const aj_kspec *ks = c->ks;
    if (!u->n) {   /* a copy: the bits as they are, f32 or i32 */
        store_at(c, &ks->out[0], offs[0], load_at(c, &ks->in[0], offs[1]));
        return;
    }
    LLVMValueRef x[AJ_KS_MAX_IN];
    for (int k = 0; k < u->nin; k++) x[k] = load_f(c, &ks->in[k], offs[k + 1]);
    store_at(c, &ks->out[0], offs[0], ew_value(c, u->n, x, flat, u->key));
}

/* out[0] = f(in...) elementwise (n NULL: a copy of in[0]), broadcasting. */
static int64_t lower_elementwise(aj_codegen *c, const aj_node *n) {
    const aj_kspec *ks = c->ks;
    aj_view vs[AJ_KS_MAX_IN + 1];
    vs[0] = ks->out[0];
    for (int k = 0; k < ks->nin; k++) vs[k + 1] = ks->in[k];
    ew_user u = {n, NULL, n ? n->nin : 1};
    if (n && (aj_op_info(n->op)->flags & AJ_RAND)) u.key = node_key(c, n);
    for_each_element(c, ks->out[0].rank, ks->out[0].shape, vs, ks->nin + 1, ew_body, &u);
    return rows_of(ks->out[0].rank, ks->out[0].shape);
}

/* ---------------------------------------------------------------- views of movement ops */

int aj_view_contiguous(const aj_view *v) {
    int64_t s = 1;
    for (int a = v->rank - 1; a >= 0; a--) {
        if (v->shape[a] != 1 && v->stride[a] != s) return 0;
        s *= v->shape[a];
    }
    return 1;
}

aj_view aj_view_step(aj_view v, int axis, int level) {
    if (axis < 0) axis += v.rank;
    v.tlevel = level - 1;
    v.tstride = v.stride[axis];
    for (int a = axis; a + 1 < v.rank; a++) v.shape[a] = v.shape[a + 1], v.stride[a] = v.stride[a + 1];
    v.rank--;
    return v;
}

int aj_view_of_node(const aj_module *m, const aj_node *n, const aj_view *x, const aj_type *out_t, aj_view *y) {
    *y = *x;
    y->rank = out_t->rank;
    for (int a = 0; a < out_t->rank; a++) y->shape[a] = aj_dim_bind(out_t->dim[a], &m->bind).off;
    switch (n->op) {
    case AJ_OP_UNSQUEEZE: {   /* a new axis of size 1: any strides will do */
        int ax = (int)aj_attr_int(n, "axis");
        if (ax < 0) ax += y->rank;
        for (int a = 0, k = 0; a < y->rank; a++) y->stride[a] = a == ax ? 0 : x->stride[k++];
        return 0;
    }
    case AJ_OP_RESHAPE: {
        if (!aj_view_contiguous(x)) return -1;
        int64_t s = 1;
        for (int a = y->rank - 1; a >= 0; a--) y->stride[a] = s, s *= y->shape[a];
        return 0;
    }
    case AJ_OP_TRANSPOSE: {
        const aj_attr *p = aj_attr_get(n, "perm");
        for (int a = 0; a < y->rank; a++) y->stride[a] = x->stride[p->ints[a] < 0 ? p->ints[a] + x->rank : p->ints[a]];
        return 0;
    }
    case AJ_OP_BROADCAST:   /* right-aligned: new or size-1 axes read stride 0 */
        for (int a = 0; a < y->rank; a++) {
            int ax = a - (y->rank - x->rank);
            y->stride[a] = ax >= 0 && x->shape[ax] == y->shape[a] ? x->stride[ax] : 0;
        }
        return 0;
    case AJ_OP_SLICE: {
        int ax = (int)aj_attr_int(n, "axis");
        if (ax < 0) ax += x->rank;
        y->off += aj_attr_dim_value(m, n, "start") * x->stride[ax];
        return 0;
    }
    default: return -1;
    }
}

/* ---------------------------------------------------------------- reductions, softmax */

/* The reduced axes of n over x's rank as [outer, red, inner] when they are
 * one block (size-1 axes aside); 0 when they are not. */
static int reduce_block(const aj_node *n, int rank, const int64_t *shape, int *lo_ax, int *hi_ax, int64_t *outer,
                        int64_t *red, int64_t *inner) {
    const aj_attr *ax = aj_attr_get(n, "axis");
    int r[AJ_MAX_RANK] = {0}, lo = rank, hi = -1;
    for (int a = 0; a < rank; a++) r[a] = ax->n == 0;
    for (int j = 0; j < ax->n; j++) r[ax->ints[j] < 0 ? ax->ints[j] + rank : ax->ints[j]] = 1;
    for (int a = 0; a < rank; a++)
        if (r[a] && shape[a] != 1) lo = lo < a ? lo : a, hi = a;
    if (hi < 0) lo = rank, hi = rank - 1;   /* only size-1 axes reduced: a copy */
    for (int a = lo; a <= hi; a++)
        if (!r[a] && shape[a] != 1) return 0;
    *lo_ax = lo, *hi_ax = hi;
    *outer = prod(shape, 0, lo);
    *red = prod(shape, lo, hi + 1);
    *inner = prod(shape, hi + 1, rank);
    return 1;
}

static int reduce_split(const aj_node *n, const aj_view *x, int64_t *outer, int64_t *red, int64_t *inner) {
    int lo, hi;
    return reduce_block(n, x->rank, x->shape, &lo, &hi, outer, red, inner);
}

/* Some axes of a view, walked as one flat index: their sizes and strides. */
typedef struct {
    int n;
    int64_t shape[AJ_MAX_RANK], stride[AJ_MAX_RANK];
} axes;

/* the offset of flat index f over the axes (row-major) */
static LLVMValueRef axes_off(aj_codegen *c, const axes *ax, LLVMValueRef f) {
    LLVMValueRef idx[AJ_MAX_RANK], off = i64c(c, 0);
    unflatten(c, f, ax->shape, ax->n, idx);
    for (int a = 0; a < ax->n; a++) off = a ? add(c, off, muli(c, idx[a], ax->stride[a])) : muli(c, idx[a], ax->stride[a]);
    return off;
}

static void max_and_sumexp(aj_codegen *c, const aj_view *x, LLVMValueRef xrow, const axes *red, LLVMValueRef *m,
                           LLVMValueRef *s);

/* A reduction whose axes are no block (sum over axes [0, 2] of [B, C, D]):
 * per kept position o (its axes, in order: y's flat index), the fold over
 * the reduced axes' flat index r, each unflattened into x's strides. */
static int64_t lower_reduce_axes(aj_codegen *c, const aj_node *n) {
    const aj_view *x = &c->ks->in[0], *y = &c->ks->out[0];
    const aj_attr *at = aj_attr_get(n, "axis");
    int r[AJ_MAX_RANK] = {0};
    for (int a = 0; a < x->rank; a++) r[a] = at->n == 0;
    for (int j = 0; j < at->n; j++) r[at->ints[j] < 0 ? at->ints[j] + x->rank : at->ints[j]] = 1;
    axes kept = {0}, red = {0};
    for (int a = 0; a < x->rank; a++) {
        axes *to = r[a] ? &red : &kept;
        to->shape[to->n] = x->shape[a], to->stride[to->n++] = x->stride[a];
    }
    int64_t outer = prod(kept.shape, 0, kept.n), nred = prod(red.shape, 0, red.n);
    LLVMValueRef xb = view_base(c, x), yb = view_base(c, y), v;
    loop ol, rl;
    LLVMValueRef o = loop_open(c, &ol, c->lo, c->hi, "outer");
    LLVMValueRef xrow = add(c, xb, axes_off(c, &kept, o));
    if (n->op == AJ_OP_LOGSUMEXP) {
        LLVMValueRef m, s;
        max_and_sumexp(c, x, xrow, &red, &m, &s);
        v = fadd_(c, m, aj_vm_log(c->b, s));
    } else {
        int is_max = n->op == AJ_OP_MAX;
        LLVMValueRef acc = alloca_f(c, "acc");
        LLVMBuildStore(c->b, f32c(c, is_max ? -INFINITY : 0.0), acc);
        LLVMValueRef k = loop_open(c, &rl, i64c(c, 0), i64c(c, nred), "r");
        LLVMValueRef e = load_at(c, x, add(c, xrow, axes_off(c, &red, k))), a = LLVMBuildLoad2(c->b, c->f32, acc, "");
        LLVMBuildStore(c->b, is_max ? aj_vm_max(c->b, a, e) : fadd_reassoc(c, a, e), acc);
        loop_close(c, &rl);
        v = LLVMBuildLoad2(c->b, c->f32, acc, "");
        if (n->op == AJ_OP_MEAN) v = fmul_(c, v, f32c(c, 1.0 / (double)nred));
    }
    store_at(c, y, add(c, yb, o), v);
    loop_close(c, &ol);
    return outer;
}

/* [outer, red, inner] -> [outer, inner]: sum, mean, max (dense views);
 * reduced axes that are no block: lower_reduce_axes. */
static int64_t lower_reduce(aj_codegen *c, const aj_node *n) {
    const aj_view *x = &c->ks->in[0], *y = &c->ks->out[0];
    int64_t outer, red, inner;
    if (!reduce_split(n, x, &outer, &red, &inner)) return lower_reduce_axes(c, n);
    int is_max = n->op == AJ_OP_MAX;
    LLVMValueRef xb = view_base(c, x), yb = view_base(c, y);
    LLVMValueRef init = f32c(c, is_max ? -INFINITY : 0.0);
    loop ol, il, rl;
    LLVMValueRef o = loop_open(c, &ol, c->lo, c->hi, "outer");
    LLVMValueRef yrow = add(c, yb, muli(c, o, inner)), xrow = add(c, xb, muli(c, o, red * inner));
    if (inner == 1) {   /* a row: one accumulator, reassociated into lanes */
        LLVMValueRef acc = alloca_f(c, "acc");
        LLVMBuildStore(c->b, init, acc);
        LLVMValueRef k = loop_open(c, &rl, i64c(c, 0), i64c(c, red), "r");
        LLVMValueRef v = load_at(c, x, add(c, xrow, k)), a = LLVMBuildLoad2(c->b, c->f32, acc, "");
        LLVMBuildStore(c->b, is_max ? aj_vm_max(c->b, a, v) : fadd_reassoc(c, a, v), acc);
        loop_close(c, &rl);
        LLVMValueRef s = LLVMBuildLoad2(c->b, c->f32, acc, "");
        if (n->op == AJ_OP_MEAN) s = fmul_(c, s, f32c(c, 1.0 / (double)red));
        store_at(c, y, yrow, s);
    } else {            /* rows of inner: accumulate in y, vectorised along inner */
        LLVMValueRef i = loop_open(c, &il, i64c(c, 0), i64c(c, inner), "i");
        store_at(c, y, add(c, yrow, i), init);
        loop_close(c, &il);
        LLVMValueRef k = loop_open(c, &rl, i64c(c, 0), i64c(c, red), "r");
        LLVMValueRef xr = add(c, xrow, muli(c, k, inner));
        i = loop_open(c, &il, i64c(c, 0), i64c(c, inner), "i");
        LLVMValueRef a = load_at(c, y, add(c, yrow, i)), v = load_at(c, x, add(c, xr, i));
        store_at(c, y, add(c, yrow, i), is_max ? aj_vm_max(c->b, a, v) : fadd_(c, a, v));
        loop_close(c, &il);
        loop_close(c, &rl);
        if (n->op == AJ_OP_MEAN) {
            i = loop_open(c, &il, i64c(c, 0), i64c(c, inner), "i");
            LLVMValueRef p = add(c, yrow, i);
            store_at(c, y, p, fmul_(c, load_at(c, y, p), f32c(c, 1.0 / (double)red)));
            loop_close(c, &il);
        }
    }
    loop_close(c, &ol);
    return outer;
}

/* Over the reduced axes from xrow: the max m and s = sum exp(x - m). */
static void max_and_sumexp(aj_codegen *c, const aj_view *x, LLVMValueRef xrow, const axes *red, LLVMValueRef *m,
                           LLVMValueRef *s) {
    LLVMValueRef K = i64c(c, prod(red->shape, 0, red->n));
    LLVMValueRef am = alloca_f(c, "m"), as = alloca_f(c, "s");
    LLVMBuildStore(c->b, f32c(c, -INFINITY), am);
    LLVMBuildStore(c->b, f32c(c, 0), as);
    loop kl;
    LLVMValueRef k = loop_open(c, &kl, i64c(c, 0), K, "k");
    LLVMValueRef v = load_at(c, x, add(c, xrow, axes_off(c, red, k)));
    LLVMBuildStore(c->b, aj_vm_max(c->b, LLVMBuildLoad2(c->b, c->f32, am, ""), v), am);
    loop_close(c, &kl);
    *m = LLVMBuildLoad2(c->b, c->f32, am, "");
    /* all -inf: exp(x - m) would be NaN; shift by 0 instead (sum 0, lse -inf) */
    LLVMValueRef shift = sel(c, LLVMBuildFCmp(c->b, LLVMRealOEQ, *m, f32c(c, -INFINITY), ""), f32c(c, 0), *m);
    k = loop_open(c, &kl, i64c(c, 0), K, "k");
    v = load_at(c, x, add(c, xrow, axes_off(c, red, k)));
    LLVMValueRef e = aj_vm_exp(c->b, fsub_(c, v, shift));
    LLVMBuildStore(c->b, fadd_reassoc(c, LLVMBuildLoad2(c->b, c->f32, as, ""), e), as);
    loop_close(c, &kl);
    *s = LLVMBuildLoad2(c->b, c->f32, as, "");
    *m = shift;
}

/* logsumexp over a block of axes (other axes: lower_reduce_axes); softmax, log_softmax along one axis:
 * per (outer, inner) position, m = max, s = sum exp(x - m), then
 * lse = m + log s, softmax = exp(x - m) / s, log_softmax = x - lse. */
static int64_t lower_lse_softmax(aj_codegen *c, const aj_node *n) {
    const aj_view *x = &c->ks->in[0], *y = &c->ks->out[0];
    int64_t outer, K, inner;
    if (n->op == AJ_OP_LOGSUMEXP) {
        if (!reduce_split(n, x, &outer, &K, &inner)) return lower_reduce_axes(c, n);
    } else {
        int ax = (int)aj_attr_int(n, "axis");
        if (ax < 0) ax += x->rank;
        outer = prod(x->shape, 0, ax), K = x->shape[ax], inner = prod(x->shape, ax + 1, x->rank);
    }
    LLVMValueRef xb = view_base(c, x), yb = view_base(c, y);
    loop ol, il, kl;
    LLVMValueRef o = loop_open(c, &ol, c->lo, c->hi, "outer");
    LLVMValueRef i = loop_open(c, &il, i64c(c, 0), i64c(c, inner), "i");
    LLVMValueRef xrow = add(c, add(c, xb, muli(c, o, K * inner)), i), m, s;
    axes red = {1, {K}, {inner}};
    max_and_sumexp(c, x, xrow, &red, &m, &s);
    LLVMValueRef lse = fadd_(c, m, aj_vm_log(c->b, s));
    if (n->op == AJ_OP_LOGSUMEXP) {
        store_at(c, y, add(c, add(c, yb, muli(c, o, inner)), i), lse);
    } else {
        LLVMValueRef yrow = add(c, add(c, yb, muli(c, o, K * inner)), i), inv = LLVMBuildFDiv(c->b, f32c(c, 1), s, "");
        LLVMValueRef k = loop_open(c, &kl, i64c(c, 0), i64c(c, K), "k");
        LLVMValueRef v = load_at(c, x, add(c, xrow, muli(c, k, inner)));
        LLVMValueRef r = n->op == AJ_OP_SOFTMAX ? fmul_(c, aj_vm_exp(c->b, fsub_(c, v, m)), inv) : fsub_(c, v, lse);
        store_at(c, y, add(c, yrow, muli(c, k, inner)), r);
        loop_close(c, &kl);
    }
    loop_close(c, &il);
    loop_close(c, &ol);
    return outer;
}

/* ---------------------------------------------------------------- other ops */

static void constant_body(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs) {
    store_at(c, &c->ks->out[0], offs[0], f32c(c, aj_attr_float(user, "value")));
}

static int64_t lower_constant(aj_codegen *c, const aj_node *n) {
    const aj_view *y = &c->ks->out[0];
    for_each_element(c, y->rank, y->shape, y, 1, constant_body, (void *)n);
    return rows_of(y->rank, y->shape);
}

/* shift, pad: y[.., k, ..] = x[.., k - d, ..] where that is inside x, else
 * the fill (0 for shift); d = by, or before. */
typedef struct {
    int ax;
    int64_t d, len;
    double fill;
} shift_user;

static void shift_body(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs) {
    shift_user *u = user;
    const aj_view *x = &c->ks->in[0], *y = &c->ks->out[0];
    LLVMValueRef k = LLVMBuildNSWSub(c->b, idx[u->ax], i64c(c, u->d), "");
    LLVMValueRef inside = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntSGE, k, i64c(c, 0), ""),
                                       LLVMBuildICmp(c->b, LLVMIntSLT, k, i64c(c, u->len), ""), "");
    /* offs[1] is x's offset at idx; move it back by d along ax, clamped */
    LLVMValueRef back = sel(c, inside, i64c(c, u->d * x->stride[u->ax]), i64c(c, 0));
    LLVMValueRef src = LLVMBuildNSWSub(c->b, offs[1], back, "");
    LLVMValueRef safe = sel(c, inside, src, view_base(c, x));
    LLVMValueRef v = load_at(c, x, safe);
    LLVMValueRef fill = y->dtype == AJ_F32 ? f32c(c, u->fill) : LLVMConstInt(c->i32, (unsigned long long)(int64_t)u->fill, 1);
    store_at(c, y, offs[0], sel(c, inside, v, fill));
}

static int64_t lower_shift_pad(aj_codegen *c, const aj_node *n) {
    const aj_view *y = &c->ks->out[0];
    aj_view vs[2] = {*y, c->ks->in[0]};
    shift_user u = {(int)aj_attr_int(n, "axis"), 0, 0, 0};
    if (u.ax < 0) u.ax += y->rank;
    u.len = vs[1].shape[u.ax];
    if (n->op == AJ_OP_SHIFT) {
        u.d = aj_attr_int(n, "by");
    } else {
        u.d = aj_attr_int(n, "before");
        u.fill = aj_attr_float(n, "value");
        vs[1].shape[u.ax] = y->shape[u.ax];   /* walk x as if it had y's length; stores are guarded */
    }
    for_each_element(c, y->rank, y->shape, vs, 2, shift_body, &u);
    return rows_of(y->rank, y->shape);
}

/* cast: i32 -> f32 exactly; f32 -> i32 toward zero, saturating, NaN -> 0 */
static void cast_body(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs) {
    const aj_view *x = &c->ks->in[0], *y = &c->ks->out[0];
    LLVMValueRef v = load_at(c, x, offs[1]);
    if (x->dtype == AJ_I32 && y->dtype == AJ_F32) v = LLVMBuildSIToFP(c->b, v, c->f32, "");
    else if (x->dtype == AJ_F32 && y->dtype == AJ_I32) {   /* the interpreter's to_i32 */
        LLVMValueRef big = LLVMBuildFCmp(c->b, LLVMRealOGE, v, f32c(c, 2147483648.0), "");
        LLVMValueRef nan = LLVMBuildFCmp(c->b, LLVMRealUNO, v, v, "");
        LLVMValueRef lo = aj_vm_max(c->b, v, f32c(c, -2147483648.0));
        LLVMValueRef r = LLVMBuildFPToSI(c->b, aj_vm_min(c->b, lo, f32c(c, 2147483520.0)), c->i32, "");
        r = sel(c, big, LLVMConstInt(c->i32, 2147483647, 0), r);
        v = sel(c, nan, LLVMConstInt(c->i32, 0, 0), r);
    }
    store_at(c, y, offs[0], v);
}

static int64_t lower_cast(aj_codegen *c, const aj_node *n) {
    const aj_view *y = &c->ks->out[0];
    aj_view vs[2] = {*y, c->ks->in[0]};
    for_each_element(c, y->rank, y->shape, vs, 2, cast_body, NULL);
    return rows_of(y->rank, y->shape);
}

/* Index ix (i64) of node n at position pos, checked against [0, V): outside,
 * a call of aj_rt_bad_index (runtime/program.c), which keeps the run's first
 * and has it fail after this kernel at n's line, as the interpreter fails;
 * the kernel itself cannot stop, so it goes on with ix clamped into range. */
static LLVMValueRef checked_index(aj_codegen *c, const aj_node *n, LLVMValueRef ix, LLVMValueRef pos, int64_t V) {
    LLVMValueRef lo = LLVMBuildICmp(c->b, LLVMIntSLT, ix, i64c(c, 0), "");
    LLVMValueRef hi = LLVMBuildICmp(c->b, LLVMIntSGE, ix, i64c(c, V), "");
    LLVMBasicBlockRef bad = LLVMAppendBasicBlockInContext(c->cx, c->fn, "bad_index");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(c->cx, c->fn, "index_ok");
    LLVMBuildCondBr(c->b, LLVMBuildOr(c->b, lo, hi, ""), bad, ok);
    LLVMPositionBuilderAtEnd(c->b, bad);
    LLVMTypeRef pt[6] = {c->i64, c->i64, c->i64, c->i64, c->i64, c->i64}, ft = LLVMFunctionType(c->void_, pt, 6, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(c->m, "aj_rt_bad_index");
    if (!fn) fn = LLVMAddFunction(c->m, "aj_rt_bad_index", ft);
    LLVMValueRef args[6] = {i64c(c, n->op), i64c(c, n->line), i64c(c, n->col), ix, pos, i64c(c, V)};
    LLVMBuildCall2(c->b, ft, fn, args, 6, "");
    LLVMBuildBr(c->b, ok);
    LLVMPositionBuilderAtEnd(c->b, ok);
    return sel(c, lo, i64c(c, 0), sel(c, hi, i64c(c, V - 1), ix));
}

/* one_hot: y[s.., k] = (idx[s..] == k); gather: y[s.., e..] = table[idx[s..], e..]
 * (an index out of range: checked_index) */
static void index_body(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs) {
    const aj_node *n = user;
    const aj_kspec *ks = c->ks;
    const aj_view *y = &ks->out[0];
    if (n->op == AJ_OP_ONE_HOT) {
        int64_t K = y->shape[y->rank - 1];
        LLVMValueRef ix = LLVMBuildSExt(c->b, load_at(c, &ks->in[0], offs[1]), c->i64, "");
        ix = checked_index(c, n, ix, LLVMBuildSDiv(c->b, flat, i64c(c, K), ""), K);
        LLVMValueRef hit = LLVMBuildICmp(c->b, LLVMIntEQ, ix, idx[y->rank - 1], "");
        store_at(c, y, offs[0], sel(c, hit, f32c(c, 1), f32c(c, 0)));
        return;
    }
    const aj_view *table = &ks->in[0], *iv = &ks->in[1];
    int64_t row = prod(table->shape, 1, table->rank), V = table->shape[0];
    LLVMValueRef s = LLVMBuildSDiv(c->b, flat, i64c(c, row), ""), e = LLVMBuildSRem(c->b, flat, i64c(c, row), "");
    LLVMValueRef ix = LLVMBuildSExt(c->b, load_at(c, iv, add(c, view_base(c, iv), s)), c->i64, "");
    ix = checked_index(c, n, ix, s, V);
    store_at(c, y, offs[0], load_at(c, table, add(c, view_base(c, table), add(c, muli(c, ix, row), e))));
}

static int64_t lower_index(aj_codegen *c, const aj_node *n) {
    const aj_view *y = &c->ks->out[0];
    aj_view vs[2] = {*y, c->ks->in[0]};
    if (n->op == AJ_OP_ONE_HOT) { /* idx broadcast along the new last axis */
        vs[1].rank = y->rank;
        vs[1].shape[y->rank - 1] = 1;
        vs[1].stride[y->rank - 1] = 0;
    }
    for_each_element(c, y->rank, y->shape, vs, n->op == AJ_OP_ONE_HOT ? 2 : 1, index_body, (void *)n);
    return rows_of(y->rank, y->shape);
}

/* ---------------------------------------------------------------- matmul */

/* C[b] = op(A[b]) op(B[b]) for each batch b of C (A's and B's batch axes
 * broadcast), through the register-tiled sgemm of matmul_llvm.c. Rows of
 * the kernel are batch * M rows of C; the packer's rows are B's batches x
 * panels. */
typedef struct {
    int ta, tb;
    int64_t M, N, K, nb;
    int64_t a_bstride[AJ_MAX_RANK], b_bstride[AJ_MAX_RANK], bshape[AJ_MAX_RANK];
    int nbatch_axes;
    int64_t nbatch_b;        /* distinct batches of B (packs) */
} mm_shape;

static void mm_shape_of(const aj_kspec *ks, const aj_node *n, mm_shape *s) {
    const aj_view *a = &ks->in[0], *b = &ks->in[1];
    s->ta = (int)aj_attr_int(n, "ta"), s->tb = (int)aj_attr_int(n, "tb");
    s->K = a->shape[a->rank - (s->ta ? 2 : 1)];
    s->M = a->shape[a->rank - (s->ta ? 1 : 2)];
    s->N = b->shape[b->rank - (s->tb ? 2 : 1)];
    int r = a->rank > b->rank ? a->rank : b->rank;
    s->nbatch_axes = r - 2;
    s->nb = 1, s->nbatch_b = 1;
    for (int ax = 0; ax < r - 2; ax++) {
        int aa = ax - (r - a->rank), ba = ax - (r - b->rank);
        int64_t na = aa >= 0 ? a->shape[aa] : 1, nbb = ba >= 0 ? b->shape[ba] : 1;
        s->bshape[ax] = na > nbb ? na : nbb;
        s->a_bstride[ax] = na == 1 ? 0 : a->stride[aa];
        s->b_bstride[ax] = nbb == 1 ? 0 : b->stride[ba];
        s->nb *= s->bshape[ax];
        s->nbatch_b *= nbb;
    }
}

/* The sgemm's offsets of batch `bi` into A and B. */
static void mm_batch_offsets(aj_codegen *c, const mm_shape *s, LLVMValueRef bi, LLVMValueRef *ao, LLVMValueRef *bo) {
    LLVMValueRef idx[AJ_MAX_RANK];
    *ao = i64c(c, 0), *bo = i64c(c, 0);
    if (!s->nbatch_axes) return;
    unflatten(c, bi, s->bshape, s->nbatch_axes, idx);
    for (int ax = 0; ax < s->nbatch_axes; ax++) {
        *ao = add(c, *ao, muli(c, idx[ax], s->a_bstride[ax]));
        *bo = add(c, *bo, muli(c, idx[ax], s->b_bstride[ax]));
    }
}

static aj_mm_spec mm_spec_of(aj_codegen *c, const mm_shape *s, char *name) {
    aj_mm_spec sp = {.name = name, .trans_a = s->ta, .trans_b = s->tb};
    return aj_mm_resolve(c->jit, &sp);
}

int64_t aj_codegen_mm_packed(aj_codegen *cg, const aj_kspec *ks) {
    mm_shape s;
    mm_shape_of(ks, &ks->g->node[ks->node], &s);
    aj_mm_spec sp = mm_spec_of(cg, &s, "");
    return aj_mm_packs_b(&sp) ? s.nbatch_b * aj_mm_packed_floats(&sp, s.N, s.K) : 0;
}

/* a call of sgemm helper `name` (i64 and pointer arguments as is_ptr says) */
static void call_fn(aj_codegen *c, const char *name, LLVMValueRef *args, int nargs, const int *is_ptr) {
    LLVMTypeRef pt[16];
    for (int i = 0; i < nargs; i++) pt[i] = is_ptr[i] ? c->ptr : c->i64;
    LLVMBuildCall2(c->b, LLVMFunctionType(c->void_, pt, (unsigned)nargs, 0), LLVMGetNamedFunction(c->m, name), args,
                   (unsigned)nargs, "");
}

static LLVMValueRef fptr(aj_codegen *c, LLVMValueRef base, LLVMValueRef off) {
    return LLVMBuildInBoundsGEP2(c->b, c->f32, base, &off, 1, "");
}

static int64_t lower_matmul(aj_codegen *c, const aj_node *n, aj_diag *d) {
    const aj_kspec *ks = c->ks;
    mm_shape s;
    mm_shape_of(ks, n, &s);
    /* one sgemm (and packer) per transposition in the module, shared by
     * every product that has it: shapes and strides are its arguments */
    char name[80];
    snprintf(name, sizeof name, "mm_ta%d_tb%d", s.ta, s.tb);
    aj_mm_spec sp = mm_spec_of(c, &s, name);
    /* a B of no values (K or N = 0) gets no pack kernel: the sgemm reads
     * none of it and only writes C's zeros (K = 0), if anything */
    int packs = aj_mm_packs_b(&sp), packed = packs && (ks->kind == AJ_KS_MM_PACK || ks->nin == 3);
    if (!LLVMGetNamedFunction(c->m, name)) {
        if (aj_mm_emit(c->jit, c->mod, &sp, d)) return -1;
        LLVMSetLinkage(LLVMGetNamedFunction(c->m, name), LLVMInternalLinkage);
        if (packs) {
            char pn[96];
            snprintf(pn, sizeof pn, "%s_pack", name);
            LLVMSetLinkage(LLVMGetNamedFunction(c->m, pn), LLVMInternalLinkage);
        }
    }
    const aj_view *a = &ks->in[0], *b = &ks->in[1];
    int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N, pf = packed ? aj_mm_packed_floats(&sp, s.N, s.K) : 0;
    loop L;
    if (ks->kind == AJ_KS_MM_PACK) {   /* rows: batches of B x panels */
        int64_t np = aj_mm_panels(&sp, s.N);
        LLVMValueRef r = loop_open(c, &L, c->lo, c->hi, "bp");
        LLVMValueRef bi = LLVMBuildSDiv(c->b, r, i64c(c, np), ""), p = LLVMBuildSRem(c->b, r, i64c(c, np), "");
        /* B's batch bi (B's own batches, dense) */
        LLVMValueRef bsrc = fptr(c, vptr(c, b), add(c, view_base(c, b), muli(c, bi, s.K * s.N)));
        LLVMValueRef dst = fptr(c, c->arg[ks->out[0].arg], muli(c, bi, pf));
        char pn[96];
        snprintf(pn, sizeof pn, "%s_pack", name);
        LLVMValueRef args[7] = {p, add(c, p, i64c(c, 1)), i64c(c, s.N), i64c(c, s.K), bsrc, i64c(c, ldb), dst};
        call_fn(c, pn, args, 7, (int[]){0, 0, 0, 0, 1, 0, 1});
        loop_close(c, &L);
        return s.nbatch_b * np;
    }
    /* rows of C: batch * M; call the sgemm once per batch on its row range */
    const aj_view *y = &ks->out[0];
    LLVMValueRef ab = view_base(c, a), bb = view_base(c, b), yb = view_base(c, y);
    LLVMValueRef first_b = LLVMBuildSDiv(c->b, c->lo, i64c(c, s.M), "");
    LLVMValueRef last_b = LLVMBuildSDiv(c->b, add(c, c->hi, i64c(c, s.M - 1)), i64c(c, s.M), "");
    LLVMValueRef bi = loop_open(c, &L, first_b, last_b, "batch");
    LLVMValueRef r0 = muli(c, bi, s.M);
    LLVMValueRef m0 = LLVMBuildNSWSub(c->b, LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, c->lo, r0, ""), c->lo, r0, ""), r0, "");
    LLVMValueRef r1 = add(c, r0, i64c(c, s.M));
    LLVMValueRef m1 = LLVMBuildNSWSub(c->b, LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, c->hi, r1, ""), c->hi, r1, ""), r0, "");
    LLVMValueRef ao, bo;
    mm_batch_offsets(c, &s, bi, &ao, &bo);
    LLVMValueRef A = fptr(c, vptr(c, a), add(c, ab, ao));   /* vptr: a carry's buffer this step */
    LLVMValueRef B;
    if (packed) {   /* B's batch index of C's batch bi: bo / (K N) since B is dense */
        LLVMValueRef bbi = LLVMBuildSDiv(c->b, bo, i64c(c, s.K * s.N), "");
        B = fptr(c, c->arg[ks->in[2].arg], muli(c, bbi, pf));
    } else {
        B = fptr(c, vptr(c, b), add(c, bb, bo));
    }
    LLVMValueRef C = fptr(c, vptr(c, y), add(c, yb, muli(c, bi, s.M * s.N)));
    LLVMValueRef args[10] = {m0, m1, i64c(c, s.N), i64c(c, s.K), A, i64c(c, lda), B, i64c(c, ldb), C, i64c(c, s.N)};
    call_fn(c, name, args, 10, (int[]){0, 0, 0, 0, 1, 0, 1, 0, 1, 0});
    loop_close(c, &L);
    return s.nb * s.M;
}

/* ---------------------------------------------------------------- fused groups */

/* --check-nan inside a group: a value of n that is NaN or +-Inf (never
 * stored, so the kernel's own check could only name the group's lines)
 * calls aj_rt_nan (runtime/program.c), which keeps the run's first and has
 * it fail after this kernel at n's own line. The values are checked in the
 * order they are computed, so the first is where the NaN arose. */
static LLVMValueRef check_value(aj_codegen *c, const aj_node *n, LLVMValueRef v) {
    if (!c->nan_check || LLVMTypeOf(v) != c->f32) return v;
    LLVMValueRef bad = LLVMBuildFCmp(c->b, LLVMRealUGE, call1(c, "llvm.fabs", v), f32c(c, INFINITY), "");
    LLVMBasicBlockRef nan = LLVMAppendBasicBlockInContext(c->cx, c->fn, "nan");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(c->cx, c->fn, "finite");
    LLVMBuildCondBr(c->b, bad, nan, ok);
    LLVMPositionBuilderAtEnd(c->b, nan);
    LLVMTypeRef pt[4] = {c->i64, c->i64, c->i64, c->i64}, ft = LLVMFunctionType(c->void_, pt, 4, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(c->m, "aj_rt_nan");
    if (!fn) fn = LLVMAddFunction(c->m, "aj_rt_nan", ft);
    LLVMValueRef args[4] = {i64c(c, n->op), i64c(c, n->line), i64c(c, n->col),
                            LLVMBuildZExt(c->b, LLVMBuildFCmp(c->b, LLVMRealUNO, v, v, ""), c->i64, "")};
    LLVMBuildCall2(c->b, ft, fn, args, 4, "");
    LLVMBuildBr(c->b, ok);
    LLVMPositionBuilderAtEnd(c->b, ok);
    return v;
}

/* A group is nodes[] of g, the last its root; the others are elementwise
 * producers computed inline at each element of the root's iteration (their
 * results never touch memory). Values from outside come through in[]. */
typedef struct {
    LLVMValueRef *offs;      /* views' offsets at this element: out[0], then in[] */
    LLVMValueRef flat;
    LLVMValueRef key[AJ_KS_MAX_NODES];
    LLVMValueRef memo[AJ_KS_MAX_NODES];
} group_elem;

static LLVMValueRef gval(aj_codegen *c, group_elem *u, int v) {
    const aj_kspec *ks = c->ks;
    const aj_graph *g = ks->g;
    for (int k = 0; k < ks->nin; k++)
        if (ks->in_val[k] == v) return load_f(c, &ks->in[k], u->offs[1 + k]);
    int node = g->val[v].node, i = 0;
    while (i < ks->nnodes && ks->nodes[i] != node) i++;
    if (u->memo[i]) return u->memo[i];
    const aj_node *n = &g->node[node];
    if (n->op == AJ_OP_CONSTANT) return u->memo[i] = f32c(c, aj_attr_float(n, "value"));
    LLVMValueRef x[AJ_KS_MAX_IN];
    for (int j = 0; j < n->nin; j++) x[j] = gval(c, u, n->in[j]);
    at_node(c, n);
    return u->memo[i] = check_value(c, n, ew_value(c, n, x, u->flat, u->key[i]));
}

static const aj_node *group_root(const aj_kspec *ks) { return &ks->g->node[ks->nodes[ks->nnodes - 1]]; }

/* the side outputs out[1..] at this element; their views' offsets follow
 * the inputs' in offs */
static void store_side(aj_codegen *c, group_elem *u) {
    const aj_kspec *ks = c->ks;
    for (int k = 1; k < ks->nout; k++) store_at(c, &ks->out[k], u->offs[ks->nin + k], gval(c, u, ks->out_val[k]));
}

static void group_body(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs) {
    group_elem *u = user;
    u->offs = offs, u->flat = flat;
    memset(u->memo, 0, sizeof u->memo);
    store_at(c, &c->ks->out[0], offs[0], gval(c, u, group_root(c->ks)->out[0]));
    store_side(c, u);
}

/* views of a group's loop: out[0], in[], then the side outputs out[1..]
 * (at the root's element, or a reduction's input element) */
static int group_views(const aj_kspec *ks, aj_view *vs) {
    vs[0] = ks->out[0];
    for (int k = 0; k < ks->nin; k++) vs[1 + k] = ks->in[k];
    for (int k = 1; k < ks->nout; k++) vs[ks->nin + k] = ks->out[k];
    return ks->nin + ks->nout;
}

enum { CHUNK = 64 };   /* columns per row of work in a reduction over leading axes */

/* the rows of a group: the root's first axis, or for a reduction its
 * kept leading positions times chunks of CHUNK kept trailing ones */
static int64_t group_rows(const aj_kspec *ks, int64_t *nch) {
    const aj_node *root = group_root(ks);
    const aj_view *y = &ks->out[0];
    if (!aj_op_group_reduce(root->op)) return rows_of(y->rank, y->shape);
    const aj_value *xv = &ks->g->val[root->in[0]];
    int64_t shape[AJ_MAX_RANK], outer, red, inner;
    int lo, hi;
    for (int a = 0; a < xv->type.rank; a++) shape[a] = aj_dim_bind(xv->type.dim[a], &ks->m->bind).off;
    reduce_block(root, xv->type.rank, shape, &lo, &hi, &outer, &red, &inner);
    *nch = (inner + CHUNK - 1) / CHUNK;
    return outer * *nch;
}

/* One reduction's loop state: E is the root's input expression over X
 * (shape[rank]); r runs over the reduced axes lo_ax..hi_ax, i over the
 * kept trailing ones; y[yrow + i] (or the register acc) takes each term. */
typedef struct {
    group_elem *u;
    const aj_node *root;
    int rank, lo_ax, hi_ax, nv, is_max;
    int64_t shape[AJ_MAX_RANK];
    aj_view vs[AJ_KS_MAX_IN + 4];
    LLVMValueRef base[AJ_KS_MAX_IN + 4], idx[AJ_MAX_RANK], acc, yrow, r;
} reduce_state;

/* E(r, i) at reduced position r, kept position i (its side outputs stored) */
static LLVMValueRef term_at(aj_codegen *c, reduce_state *st, LLVMValueRef r, LLVMValueRef i) {
    LLVMValueRef offs[AJ_KS_MAX_IN + 4];
    int rank = st->rank;
    unflatten(c, r, st->shape + st->lo_ax, st->hi_ax - st->lo_ax + 1, st->idx + st->lo_ax);
    if (st->hi_ax + 1 < rank) unflatten(c, i, st->shape + st->hi_ax + 1, rank - st->hi_ax - 1, st->idx + st->hi_ax + 1);
    for (int k = 1; k < st->nv; k++) {
        offs[k] = st->base[k];
        for (int a = 0; a < rank; a++) {
            int64_t sa = bstride(&st->vs[k], a, rank);
            if (sa) offs[k] = add(c, offs[k], muli(c, st->idx[a], sa));
        }
    }
    /* the counter of a sampling producer: its element's flat index in X */
    LLVMValueRef flat = st->idx[0];
    for (int a = 1; a < rank; a++) flat = add(c, muli(c, flat, st->shape[a]), st->idx[a]);
    group_elem *u = st->u;
    u->offs = offs, u->flat = rank ? flat : i64c(c, 0);
    memset(u->memo, 0, sizeof u->memo);
    LLVMValueRef v = gval(c, u, st->root->in[0]);
    store_side(c, u);
    return v;
}

/* y[i] (or acc) op= v */
static void accumulate(aj_codegen *c, reduce_state *st, LLVMValueRef i, LLVMValueRef v) {
    LLVMValueRef yi = st->acc ? NULL : add(c, st->yrow, i);
    LLVMValueRef a = st->acc ? LLVMBuildLoad2(c->b, c->f32, st->acc, "") : load_at(c, &st->vs[0], yi);
    LLVMValueRef y = st->is_max ? aj_vm_max(c->b, a, v) : st->acc ? fadd_reassoc(c, a, v) : fadd_(c, a, v);
    if (st->acc) LLVMBuildStore(c->b, y, st->acc);
    else store_at(c, &st->vs[0], yi, y);
}

static void reduce_over_r(aj_codegen *c, void *user, LLVMValueRef r) {
    reduce_state *st = user;
    accumulate(c, st, i64c(c, 0), term_at(c, st, r, i64c(c, 0)));
}

static void reduce_over_i(aj_codegen *c, void *user, LLVMValueRef i) {
    reduce_state *st = user;
    accumulate(c, st, i, term_at(c, st, st->r, i));
}

enum { SPLIT_ROWS = 8 };   /* rows a split sum adds per pass over y */

/* y[i] += the sum of E(r + k, i) over k < SPLIT_ROWS, added as a tree: y
 * is loaded and stored once per SPLIT_ROWS rows, not per row (8: 0.5 ms of
 * NADE's step better than 4; 16 no better than 8) */
static void reduce_over_rows(aj_codegen *c, void *user, LLVMValueRef i) {
    reduce_state *st = user;
    LLVMValueRef v[SPLIT_ROWS];
    for (int k = 0; k < SPLIT_ROWS; k++) v[k] = term_at(c, st, add(c, st->r, i64c(c, k)), i);
    for (int w = SPLIT_ROWS / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) v[k] = fadd_(c, v[k], v[k + w]);
    accumulate(c, st, i, v[0]);
}

/* y[o, i] = reduce over r of E(o, r, i), E the root's input expression.
 * A split (fuse.c) is over axis 0 only, so o has one value; the threads
 * split the reduced rows r instead of the kept columns, each summing its
 * own into its own y (thread 0 the result, the others their partials). */
static int64_t lower_group_reduce(aj_codegen *c, group_elem *u) {
    const aj_kspec *ks = c->ks;
    reduce_state st = {.u = u, .root = group_root(ks)};
    const aj_value *xv = &ks->g->val[st.root->in[0]];
    int64_t outer, red, inner, nch = 1;
    st.rank = xv->type.rank;
    for (int a = 0; a < st.rank; a++) st.shape[a] = aj_dim_bind(xv->type.dim[a], &ks->m->bind).off;
    reduce_block(st.root, st.rank, st.shape, &st.lo_ax, &st.hi_ax, &outer, &red, &inner);
    int split = ks->out[0].thread_slot != 0;
    int64_t rows = split ? red : group_rows(ks, &nch), chunk = split ? inner : CHUNK;
    st.is_max = st.root->op == AJ_OP_MAX;
    double scale = st.root->op == AJ_OP_MEAN ? 1.0 / (double)red : 1.0;
    LLVMValueRef init = f32c(c, st.is_max ? -INFINITY : 0.0);
    st.nv = group_views(ks, st.vs);
    for (int k = 0; k < st.nv; k++) st.base[k] = view_base(c, &st.vs[k]);
    loop ql, rl, il;
    LLVMValueRef q = loop_open(c, &ql, split ? i64c(c, 0) : c->lo, split ? i64c(c, outer) : c->hi, "q");
    LLVMValueRef o = LLVMBuildSDiv(c->b, q, i64c(c, nch), ""), ch = LLVMBuildSRem(c->b, q, i64c(c, nch), "");
    unflatten(c, o, st.shape, st.lo_ax, st.idx);
    LLVMValueRef i0 = muli(c, ch, chunk), i1 = add(c, i0, i64c(c, chunk));
    i1 = sel(c, LLVMBuildICmp(c->b, LLVMIntSLT, i1, i64c(c, inner), ""), i1, i64c(c, inner));
    st.yrow = add(c, st.base[0], muli(c, o, inner));
    /* one column: a register accumulator (a split adds into its own y) */
    st.acc = inner == 1 && !split ? alloca_f(c, "acc") : NULL;
    if (st.acc) {
        LLVMBuildStore(c->b, init, st.acc);
    } else {
        LLVMValueRef i = loop_open(c, &il, i0, i1, "i");
        store_at(c, &st.vs[0], add(c, st.yrow, i), init);
        loop_close(c, &il);
    }
    if (st.acc) {   /* a row's sum: the reduced positions are the inner loop */
        vector_loop(c, red, reduce_over_r, &st);
    } else if (split) {   /* this thread's rows, SPLIT_ROWS at a time, each pass a vector loop over all columns */
        LLVMValueRef nb = LLVMBuildSDiv(c->b, LLVMBuildNSWSub(c->b, c->hi, c->lo, ""), i64c(c, SPLIT_ROWS), "");
        LLVMValueRef qb = loop_open(c, &rl, i64c(c, 0), nb, "rb");
        st.r = add(c, c->lo, muli(c, qb, SPLIT_ROWS));
        vector_loop(c, inner, reduce_over_rows, &st);
        loop_close(c, &rl);
        st.r = loop_open(c, &rl, add(c, c->lo, muli(c, nb, SPLIT_ROWS)), c->hi, "r");
        vector_loop(c, inner, reduce_over_i, &st);
        loop_close(c, &rl);
    } else {   /* a chunk of columns, over every reduced position */
        st.r = loop_open(c, &rl, i64c(c, 0), i64c(c, red), "r");
        LLVMValueRef i = loop_open(c, &il, i0, i1, "i");
        accumulate(c, &st, i, term_at(c, &st, st.r, i));
        loop_close(c, &il);
        loop_close(c, &rl);
    }
    if (st.acc) {
        store_at(c, &st.vs[0], st.yrow, fmul_(c, LLVMBuildLoad2(c->b, c->f32, st.acc, ""), f32c(c, scale)));
    } else if (scale != 1.0) {
        LLVMValueRef i = loop_open(c, &il, i0, i1, "i");
        LLVMValueRef p = add(c, st.yrow, i);
        store_at(c, &st.vs[0], p, fmul_(c, load_at(c, &st.vs[0], p), f32c(c, scale)));
        loop_close(c, &il);
    }
    loop_close(c, &ql);
    return rows;
}

/* The partial sums of a split, at the ring's slots p in [lo, hi): the
 * steps t0, t0 +- 1, ... (ctx's t is t0, the slots' first step). Slot p of
 * thread i > 0 is in[(i - 1) K S + p S + j], j < S the slab of one step:
 *   out[t(p) S + j] += sum over i > 0 of in[(i - 1) K S + p S + j] */
static int64_t lower_combine(aj_codegen *c) {
    const aj_kspec *ks = c->ks;
    int64_t S = prod(ks->out[0].shape, 0, ks->out[0].rank) / ks->steps, KS = prod(ks->in[0].shape, 0, ks->in[0].rank);
    loop pl, il, jl;
    LLVMValueRef p = loop_open(c, &pl, c->lo, c->hi, "p");
    LLVMValueRef t = ks->reverse ? LLVMBuildNSWSub(c->b, step_t(c, ks->level - 1), p, "") : add(c, step_t(c, ks->level - 1), p);
    LLVMValueRef to = muli(c, t, S), from = muli(c, p, S);
    LLVMValueRef i = loop_open(c, &il, i64c(c, 1), ctx_field(c, CTX_NTH), "i");
    LLVMValueRef at = add(c, from, muli(c, LLVMBuildNSWSub(c->b, i, i64c(c, 1), ""), KS));
    LLVMValueRef j = loop_open(c, &jl, i64c(c, 0), i64c(c, S), "j");
    LLVMValueRef y = add(c, to, j);
    store_at(c, &ks->out[0], y, fadd_(c, load_at(c, &ks->out[0], y), load_at(c, &ks->in[0], add(c, at, j))));
    loop_close(c, &jl);
    loop_close(c, &il);
    loop_close(c, &pl);
    return AJ_RING;
}

static int64_t lower_group(aj_codegen *c) {
    const aj_kspec *ks = c->ks;
    group_elem u = {0};
    for (int i = 0; i < ks->nnodes; i++) {
        const aj_node *n = &ks->g->node[ks->nodes[i]];
        if (aj_op_info(n->op)->flags & AJ_RAND) u.key[i] = node_key(c, n);
    }
    if (aj_op_group_reduce(group_root(ks)->op)) return lower_group_reduce(c, &u);
    aj_view vs[AJ_KS_MAX_IN + 4];
    int nv = group_views(ks, vs);
    for_each_element(c, vs[0].rank, vs[0].shape, vs, nv, group_body, &u);
    return rows_of(vs[0].rank, vs[0].shape);
}

/* ---------------------------------------------------------------- rows: norms, losses, concat, skew */

/* An accumulator: a stack slot of type t set to init here; acc_add adds
 * (reassociable, so a reduction vectorises). */
static LLVMValueRef acc_new(aj_codegen *c, LLVMTypeRef t, LLVMValueRef init) {
    LLVMValueRef a = LLVMBuildAlloca(c->eb, t, "acc");
    LLVMBuildStore(c->b, init, a);
    return a;
}

static LLVMValueRef acc_get(aj_codegen *c, LLVMValueRef a) {
    return LLVMBuildLoad2(c->b, LLVMGetAllocatedType(a), a, "");
}

static void acc_add(aj_codegen *c, LLVMValueRef a, LLVMValueRef v) {
    LLVMBuildStore(c->b, fadd_reassoc(c, acc_get(c, a), v), a);
}

static LLVMValueRef ilt(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) {
    return LLVMBuildICmp(c->b, LLVMIntSLT, x, y, "");
}
static LLVMValueRef imin(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) { return sel(c, ilt(c, x, y), x, y); }
static LLVMValueRef imax(aj_codegen *c, LLVMValueRef x, LLVMValueRef y) { return sel(c, ilt(c, x, y), y, x); }

/* 0 <= k < len */
static LLVMValueRef in_range(aj_codegen *c, LLVMValueRef k, int64_t len) {
    return LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntSGE, k, i64c(c, 0), ""), ilt(c, k, i64c(c, len)), "");
}

/* The i32 at v[off] as an i64 index clamped into [0, K) (a kernel cannot
 * stop on a bad index; the interpreter reports it). */
static LLVMValueRef load_index(aj_codegen *c, const aj_view *v, LLVMValueRef off, int64_t K) {
    LLVMValueRef ix = LLVMBuildSExt(c->b, load_at(c, v, off), c->i64, "");
    return imin(c, imax(c, ix, i64c(c, 0)), i64c(c, K - 1));
}

/* The terms t(k), k < K, of one row (K may be a run-time value). */
typedef LLVMValueRef (*term_fn)(aj_codegen *c, const void *user, LLVMValueRef k);

/* A dense row of an f32 view from offset `row`: term k is v[row + k]. */
typedef struct {
    const aj_view *v;
    LLVMValueRef row;
} row_ref;

static LLVMValueRef term_load(aj_codegen *c, const void *user, LLVMValueRef k) {
    const row_ref *r = user;
    return load_at(c, r->v, add(c, r->row, k));
}

/* sum_k t(k) */
static LLVMValueRef terms_sum(aj_codegen *c, LLVMValueRef K, term_fn t, const void *user) {
    LLVMValueRef acc = acc_new(c, c->f32, f32c(c, 0));
    loop kl;
    LLVMValueRef k = loop_open(c, &kl, i64c(c, 0), K, "k");
    acc_add(c, acc, t(c, user, k));
    loop_close(c, &kl);
    return acc_get(c, acc);
}

/* m = max_k t(k) and s = sum_k exp(t(k) - m); m is 0 when every term is
 * -inf (then s = 0 and m + log s = -inf, as the interpreter's row_lse). */
static void terms_max_sumexp(aj_codegen *c, LLVMValueRef K, term_fn t, const void *user, LLVMValueRef *m,
                             LLVMValueRef *s) {
    LLVMValueRef am = acc_new(c, c->f32, f32c(c, -INFINITY)), as = acc_new(c, c->f32, f32c(c, 0));
    loop kl;
    LLVMValueRef k = loop_open(c, &kl, i64c(c, 0), K, "k");
    LLVMBuildStore(c->b, aj_vm_max(c->b, acc_get(c, am), t(c, user, k)), am);
    loop_close(c, &kl);
    LLVMValueRef mx = acc_get(c, am);
    *m = sel(c, LLVMBuildFCmp(c->b, LLVMRealOEQ, mx, f32c(c, -INFINITY), ""), f32c(c, 0), mx);
    k = loop_open(c, &kl, i64c(c, 0), K, "k");
    acc_add(c, as, aj_vm_exp(c->b, fsub_(c, t(c, user, k), *m)));
    loop_close(c, &kl);
    *s = acc_get(c, as);
}

/* log sum_k exp t(k) = m + log s */
static LLVMValueRef terms_lse(aj_codegen *c, LLVMValueRef K, term_fn t, const void *user) {
    LLVMValueRef m, s;
    terms_max_sumexp(c, K, t, user, &m, &s);
    return fadd_(c, m, aj_vm_log(c->b, s));
}

/* (x_k - mean)^2 */
typedef struct {
    row_ref x;
    LLVMValueRef mean;
} sqdev_user;

static LLVMValueRef term_sqdev(aj_codegen *c, const void *user, LLVMValueRef k) {
    const sqdev_user *u = user;
    LLVMValueRef d = fsub_(c, term_load(c, &u->x, k), u->mean);
    return fmul_(c, d, d);
}

/* layer_norm, per row of E: mean = sum x / E, var = sum (x - mean)^2 / E
 * (biased), y = (x - mean) / sqrt(var + eps) * g + b. Rows: all rows of E. */
static int64_t lower_layer_norm(aj_codegen *c, const aj_node *n) {
    const aj_kspec *ks = c->ks;
    const aj_view *x = &ks->in[0], *g = &ks->in[1], *b = &ks->in[2], *y = &ks->out[0];
    int64_t E = x->shape[x->rank - 1];
    LLVMValueRef xb = view_base(c, x), gb = view_base(c, g), bb = view_base(c, b), yb = view_base(c, y);
    LLVMValueRef KE = i64c(c, E), invE = f32c(c, 1.0 / (double)E);
    loop rl, el;
    LLVMValueRef r = loop_open(c, &rl, c->lo, c->hi, "row");
    sqdev_user u = {{x, add(c, xb, muli(c, r, E))}, NULL};
    u.mean = fmul_(c, terms_sum(c, KE, term_load, &u.x), invE);
    LLVMValueRef var = fmul_(c, terms_sum(c, KE, term_sqdev, &u), invE);
    LLVMValueRef sd = call1(c, "llvm.sqrt", fadd_(c, var, f32c(c, aj_attr_float(n, "eps"))));
    LLVMValueRef inv = LLVMBuildFDiv(c->b, f32c(c, 1), sd, "");
    LLVMValueRef e = loop_open(c, &el, i64c(c, 0), KE, "e");
    LLVMValueRef v = fmul_(c, fsub_(c, term_load(c, &u.x, e), u.mean), inv);
    v = fadd_(c, fmul_(c, v, load_at(c, g, add(c, gb, e))), load_at(c, b, add(c, bb, e)));
    store_at(c, y, add(c, add(c, yb, muli(c, r, E)), e), v);
    loop_close(c, &el);
    loop_close(c, &rl);
    return prod(x->shape, 0, x->rank - 1);
}

/* categorical_nll, per row of K logits l: y = lse(l) - l[target] (target
 * clamped into range). Rows: every row. */
static int64_t lower_categorical_nll(aj_codegen *c, const aj_node *n) {
    const aj_view *l = &c->ks->in[0], *t = &c->ks->in[1], *y = &c->ks->out[0];
    int64_t K = l->shape[l->rank - 1];
    LLVMValueRef lb = view_base(c, l), tb = view_base(c, t), yb = view_base(c, y);
    loop rl;
    LLVMValueRef r = loop_open(c, &rl, c->lo, c->hi, "row");
    row_ref row = {l, add(c, lb, muli(c, r, K))};
    LLVMValueRef lse = terms_lse(c, i64c(c, K), term_load, &row);
    LLVMValueRef lt = term_load(c, &row, load_index(c, t, add(c, tb, r), K));
    store_at(c, y, add(c, yb, r), fsub_(c, lse, lt));
    loop_close(c, &rl);
    return prod(y->shape, 0, y->rank);
}

/* term k of mog_nll: pi_k - lse(pi) - gaussian_nll(x, mu_k, ls_k) */
typedef struct {
    row_ref pi, mu, ls;
    LLVMValueRef x, lse_pi;
} mog_user;

static LLVMValueRef term_mog(aj_codegen *c, const void *user, LLVMValueRef k) {
    const mog_user *u = user;
    const aj_node gauss = {.op = AJ_OP_GAUSSIAN_NLL};   /* its scalar math is ew_value's */
    LLVMValueRef a[3] = {u->x, term_load(c, &u->mu, k), term_load(c, &u->ls, k)};
    return fsub_(c, fsub_(c, term_load(c, &u->pi, k), u->lse_pi), ew_value(c, &gauss, a, NULL, NULL));
}

/* mog_nll, per element s of x with K components:
 * y = -lse_k(pi_k - lse(pi) - gaussian_nll(x, mu_k, ls_k)). Rows: every element. */
static int64_t lower_mog_nll(aj_codegen *c, const aj_node *n) {
    const aj_kspec *ks = c->ks;
    const aj_view *y = &ks->out[0];
    int64_t K = ks->in[1].shape[ks->in[1].rank - 1];
    LLVMValueRef base[4], yb = view_base(c, y), KK = i64c(c, K);
    for (int j = 0; j < 4; j++) base[j] = view_base(c, &ks->in[j]);
    loop rl;
    LLVMValueRef s = loop_open(c, &rl, c->lo, c->hi, "s"), row = muli(c, s, K);
    mog_user u = {{&ks->in[1], add(c, base[1], row)}, {&ks->in[2], add(c, base[2], row)},
                  {&ks->in[3], add(c, base[3], row)}, load_at(c, &ks->in[0], add(c, base[0], s)), NULL};
    u.lse_pi = terms_lse(c, KK, term_load, &u.pi);
    store_at(c, y, add(c, yb, s), LLVMBuildFNeg(c->b, terms_lse(c, KK, term_mog, &u), ""));
    loop_close(c, &rl);
    return prod(y->shape, 0, y->rank);
}

/* concat along ax: y[.., k, ..] = in_j[.., k - at_j, ..] for the input j
 * whose span [at_j, at_j + len_j) holds k. Each input is walked as if it
 * had y's length along ax, its loads clamped to its first element outside
 * its span, and the value of the one whose span it is kept. */
typedef struct {
    int ax;
    int64_t at[AJ_KS_MAX_IN], len[AJ_KS_MAX_IN];
} concat_user;

static void concat_body(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs) {
    const concat_user *u = user;
    const aj_kspec *ks = c->ks;
    LLVMValueRef y = NULL;
    for (int j = 0; j < ks->nin; j++) {
        const aj_view *x = &ks->in[j];
        LLVMValueRef inside = in_range(c, LLVMBuildNSWSub(c->b, idx[u->ax], i64c(c, u->at[j]), ""), u->len[j]);
        LLVMValueRef off = LLVMBuildNSWSub(c->b, offs[1 + j], i64c(c, u->at[j] * x->stride[u->ax]), "");
        LLVMValueRef v = load_at(c, x, sel(c, inside, off, view_base(c, x)));
        y = y ? sel(c, inside, v, y) : v;
    }
    store_at(c, &ks->out[0], offs[0], y);
}

static int64_t lower_concat(aj_codegen *c, const aj_node *n) {
    const aj_kspec *ks = c->ks;
    const aj_view *y = &ks->out[0];
    aj_view vs[AJ_KS_MAX_IN + 1];
    concat_user u = {.ax = (int)aj_attr_int(n, "axis")};
    if (u.ax < 0) u.ax += y->rank;
    vs[0] = *y;
    for (int j = 0, at = 0; j < ks->nin; j++) {
        u.at[j] = at, u.len[j] = ks->in[j].shape[u.ax];
        at += u.len[j];
        vs[1 + j] = ks->in[j];
        vs[1 + j].shape[u.ax] = y->shape[u.ax];
    }
    for_each_element(c, y->rank, y->shape, vs, 1 + ks->nin, concat_body, &u);
    return rows_of(y->rank, y->shape);
}

/* skew: y[.., i, k] = x[.., i, k - i] (0 where k - i is outside x's width);
 * unskew: y[.., i, k] = x[.., i, k + i]. x is walked at y's width, its
 * loads moved by -i or +i along the last axis (clamped when outside). */
static void skew_body(aj_codegen *c, void *user, LLVMValueRef *idx, LLVMValueRef flat, LLVMValueRef *offs) {
    const aj_node *n = user;
    const aj_view *x = &c->ks->in[0], *y = &c->ks->out[0];
    int r = y->rank;
    LLVMValueRef d = n->op == AJ_OP_SKEW ? LLVMBuildNSWNeg(c->b, idx[r - 2], "") : idx[r - 2];
    LLVMValueRef inside = in_range(c, add(c, idx[r - 1], d), x->shape[r - 1]);
    LLVMValueRef off = sel(c, inside, add(c, offs[1], muli(c, d, x->stride[r - 1])), view_base(c, x));
    store_at(c, y, offs[0], sel(c, inside, load_at(c, x, off), LLVMConstNull(elem_type(c, y->dtype))));
}

static int64_t lower_skew(aj_codegen *c, const aj_node *n) {
    const aj_view *y = &c->ks->out[0];
    aj_view vs[2] = {*y, c->ks->in[0]};
    vs[1].shape[y->rank - 1] = y->shape[y->rank - 1];
    for_each_element(c, y->rank, y->shape, vs, 2, skew_body, (void *)n);
    return rows_of(y->rank, y->shape);
}

/* ---------------------------------------------------------------- rows: attention, convolutions */

/* a_k * b_k */
typedef struct {
    row_ref a, b;
} dot_user;

static LLVMValueRef term_dot(aj_codegen *c, const void *user, LLVMValueRef k) {
    const dot_user *u = user;
    return fmul_(c, term_load(c, &u->a, k), term_load(c, &u->b, k));
}

/* the score p[j] of a stack array p */
static LLVMValueRef term_score(aj_codegen *c, const void *user, LLVMValueRef j) {
    return LLVMBuildLoad2(c->b, c->f32, fptr(c, *(const LLVMValueRef *)user, j), "");
}

/* attention, per row r = (b Tq + i) H + h (batch b, query i, head h), with
 * dh = E / H, dv = Ev / H: p_j = q_i . k_j / sqrt(dh) over the keys j
 * (causal: j <= i), w = softmax(p), y[b, i, h dv + e] = sum_j w_j v[b, j, h dv + e].
 * q's part of row r starts at r dh, y's at r dv; the scores live in a stack
 * array of Tk floats. Rows: nb Tq H. */
static int64_t lower_attention(aj_codegen *c, const aj_node *n) {
    const aj_kspec *ks = c->ks;
    const aj_view *q = &ks->in[0], *k = &ks->in[1], *v = &ks->in[2], *y = &ks->out[0];
    int r = q->rank, causal = (int)aj_attr_int(n, "causal");
    int64_t H = aj_attr_int(n, "heads"), Tq = q->shape[r - 2], E = q->shape[r - 1];
    int64_t Tk = k->shape[r - 2], Ev = v->shape[r - 1], dh = E / H, dv = Ev / H;
    LLVMValueRef qb = view_base(c, q), kb = view_base(c, k), vb = view_base(c, v), yb = view_base(c, y);
    LLVMValueRef p = LLVMBuildArrayAlloca(c->eb, c->f32, i64c(c, Tk > 0 ? Tk : 1), "p");
    loop rl, jl, el;
    LLVMValueRef row = loop_open(c, &rl, c->lo, c->hi, "row");
    LLVMValueRef bi = LLVMBuildSDiv(c->b, row, i64c(c, Tq * H), ""), h = LLVMBuildSRem(c->b, row, i64c(c, H), "");
    LLVMValueRef i = LLVMBuildSRem(c->b, LLVMBuildSDiv(c->b, row, i64c(c, H), ""), i64c(c, Tq), "");
    LLVMValueRef nk = causal ? add(c, i, i64c(c, 1)) : i64c(c, Tk);
    /* key j of this batch and head at kh + j E, its value at vh + j Ev */
    LLVMValueRef kh = add(c, add(c, kb, muli(c, bi, Tk * E)), muli(c, h, dh));
    LLVMValueRef vh = add(c, add(c, vb, muli(c, bi, Tk * Ev)), muli(c, h, dv));
    dot_user d = {{q, add(c, qb, muli(c, row, dh))}, {k, NULL}};
    LLVMValueRef j = loop_open(c, &jl, i64c(c, 0), nk, "j");
    d.b.row = add(c, kh, muli(c, j, E));
    LLVMValueRef score = fmul_(c, terms_sum(c, i64c(c, dh), term_dot, &d), f32c(c, dh ? 1 / sqrt((double)dh) : 1));
    LLVMBuildStore(c->b, score, fptr(c, p, j));
    loop_close(c, &jl);
    LLVMValueRef m, s;
    terms_max_sumexp(c, nk, term_score, &p, &m, &s);
    LLVMValueRef inv = sel(c, fgt(c, s, f32c(c, 0)), LLVMBuildFDiv(c->b, f32c(c, 1), s, ""), f32c(c, 0));
    /* y's row = sum_j w_j v_j, accumulated in place */
    LLVMValueRef yrow = add(c, yb, muli(c, row, dv));
    LLVMValueRef e = loop_open(c, &el, i64c(c, 0), i64c(c, dv), "e");
    store_at(c, y, add(c, yrow, e), f32c(c, 0));
    loop_close(c, &el);
    j = loop_open(c, &jl, i64c(c, 0), nk, "j");
    LLVMValueRef w = fmul_(c, aj_vm_exp(c->b, fsub_(c, term_score(c, &p, j), m)), inv);
    LLVMValueRef vrow = add(c, vh, muli(c, j, Ev));
    e = loop_open(c, &el, i64c(c, 0), i64c(c, dv), "e");
    LLVMValueRef at = add(c, yrow, e);
    store_at(c, y, at, fadd_(c, load_at(c, y, at), fmul_(c, w, load_at(c, v, add(c, vrow, e)))));
    loop_close(c, &el);
    loop_close(c, &jl);
    loop_close(c, &rl);
    return prod(q->shape, 0, r - 2) * Tq * H;
}

/* A convolution's geometry, conv1d as conv2d with H = kh = 1: images
 * [B, C, H, W], kernels [Co, Ci, kh, kw], taps dh, dw apart (the
 * dilation), padding ph, pw taps before, and the
 * taps (i, j) the mask keeps: rows i < irows, a whole row when i < icut,
 * else j < jpart. That is conv_keep of runtime/interp.c for masks A and B
 * (irows = kh/2 + 1, icut = kh/2, jpart = kw/2, + 1 for B), every tap
 * without a mask. */
typedef struct {
    int64_t B, Ci, Co, H, W, kh, kw, dh, dw, ph, pw;
    int64_t irows, icut, jpart;
} conv_geom;

static int is_conv_grad_w(aj_op op) { return op == AJ_OP_CONV2D_GRAD_W || op == AJ_OP_CONV1D_GRAD_W; }
static int is_conv_grad_x(aj_op op) { return op == AJ_OP_CONV2D_GRAD_X || op == AJ_OP_CONV1D_GRAD_X; }

static conv_geom conv_geom_of(const aj_kspec *ks, const aj_node *n) {
    const aj_view *img = &ks->in[0];   /* x or dy: [B, C, (H,) W] */
    const aj_view *ker = is_conv_grad_w(n->op) ? &ks->out[0] : &ks->in[1];   /* [Co, Ci, (kh,) kw] */
    int d2 = img->rank == 4;
    conv_geom g = {.B = img->shape[0], .H = d2 ? img->shape[2] : 1, .W = img->shape[img->rank - 1],
                   .Co = ker->shape[0], .Ci = ker->shape[1], .kh = d2 ? ker->shape[2] : 1,
                   .kw = ker->shape[ker->rank - 1]};
    g.dw = aj_attr_int(n, "dilation"), g.dh = d2 ? g.dw : 1;
    g.ph = g.kh / 2;
    g.pw = d2 || strcmp(aj_attr_word(n, "pad"), "causal") ? g.kw / 2 : g.kw - 1;
    g.irows = g.icut = g.kh, g.jpart = g.kw;
    if (d2 && strcmp(aj_attr_word(n, "mask"), "none")) {
        g.irows = g.kh / 2 + 1, g.icut = g.kh / 2;
        g.jpart = g.kw / 2 + !strcmp(aj_attr_word(n, "mask"), "B");
    }
    return g;
}

/* An operand read at base + u s[0] + i s[1] + j s[2] */
typedef struct {
    const aj_view *v;
    LLVMValueRef base;
    int64_t s[3];
} conv_operand;

/* sum over u < N, i in [i0, i1), j in [j0, j1) of a * b; with taps, (i, j)
 * are kernel taps and only those g keeps count. */
static LLVMValueRef conv_sum(aj_codegen *c, const conv_operand *a, const conv_operand *b, int64_t N, LLVMValueRef i0,
                             LLVMValueRef i1, LLVMValueRef j0, LLVMValueRef j1, const conv_geom *taps) {
    LLVMValueRef acc = acc_new(c, c->f32, f32c(c, 0));
    if (taps) i1 = imin(c, i1, i64c(c, taps->irows));
    loop ul, il, jl;
    LLVMValueRef u = loop_open(c, &ul, i64c(c, 0), i64c(c, N), "u");
    LLVMValueRef i = loop_open(c, &il, i0, i1, "i");
    if (taps) j1 = imin(c, j1, sel(c, ilt(c, i, i64c(c, taps->icut)), i64c(c, taps->kw), i64c(c, taps->jpart)));
    LLVMValueRef j = loop_open(c, &jl, j0, j1, "j");
    const conv_operand *ops[2] = {a, b};
    LLVMValueRef x[2];
    for (int t = 0; t < 2; t++) {
        const conv_operand *o = ops[t];
        LLVMValueRef off = add(c, add(c, add(c, o->base, muli(c, u, o->s[0])), muli(c, i, o->s[1])), muli(c, j, o->s[2]));
        x[t] = load_at(c, o->v, off);
    }
    acc_add(c, acc, fmul_(c, x[0], x[1]));
    loop_close(c, &jl);
    loop_close(c, &il);
    loop_close(c, &ul);
    return acc_get(c, acc);
}

/* ceil(a / d), d >= 1: sdiv truncates toward 0, the ceiling below 0 */
static LLVMValueRef cdiv(aj_codegen *c, LLVMValueRef a, int64_t d) {
    if (d == 1) return a;
    return LLVMBuildSDiv(c->b, sel(c, ilt(c, i64c(c, 0), a), add(c, a, i64c(c, d - 1)), a), i64c(c, d), "");
}

/* floor(a / d), d >= 1, a >= 0 */
static LLVMValueRef floordiv(aj_codegen *c, LLVMValueRef a, int64_t d) {
    return d == 1 ? a : LLVMBuildSDiv(c->b, a, i64c(c, d), "");
}

/* The direct convolution of matmul_llvm.c (register tiles, every masked
 * tap and every tap that never meets the image left out at compile time)
 * for dense views: the kept taps (i, j) read the input at offset
 * (i dh - ph dh, j dw - pw dw), mirrored for _grad_x. */
static int64_t lower_conv_direct(aj_codegen *c, const aj_node *n, const conv_geom *g) {
    const aj_kspec *ks = c->ks;
    int gw = is_conv_grad_w(n->op), gx = is_conv_grad_x(n->op);
    int64_t K2 = g->kh * g->kw, *tl = malloc((size_t)(3 * K2 + 1) * sizeof *tl);
    if (!tl) return aj_error(c->d, n->line, n->col, "out of memory in codegen of %s", aj_op_info(n->op)->name);
    aj_conv_spec s = {.grad_w = gw, .B = g->B, .M = gx ? g->Ci : g->Co, .K = gx ? g->Co : g->Ci, .H = g->H, .W = g->W,
                      .wm = gx ? K2 : g->Ci * K2, .wk = gx ? g->Ci * K2 : K2, .K2 = K2,
                      .tap = tl, .di = tl + K2, .dj = tl + 2 * K2};
    for (int64_t i = 0; i < g->irows; i++)
        for (int64_t j = 0; j < (i < g->icut ? g->kw : g->jpart); j++) {
            int64_t di = (i - g->ph) * g->dh * (gx ? -1 : 1), dj = (j - g->pw) * g->dw * (gx ? -1 : 1);
            if (di <= -g->H || di >= g->H || dj <= -g->W || dj >= g->W) continue;
            tl[s.ntaps] = i * g->kw + j, tl[K2 + s.ntaps] = di, tl[2 * K2 + s.ntaps] = dj;
            s.ntaps++;
        }
    char name[32];
    snprintf(name, sizeof name, "conv%d", c->nconv++);
    s.name = name;
    int rc = aj_conv_emit(c->jit, c->mod, &s, c->d);
    free(tl);
    if (rc) return -1;
    LLVMValueRef fn = LLVMGetNamedFunction(c->m, name);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    const aj_view *w = gw ? &ks->in[0] : &ks->in[1], *x = gw ? &ks->in[1] : &ks->in[0], *y = &ks->out[0];
    LLVMValueRef args[5] = {c->lo, c->hi, fptr(c, vptr(c, w), view_base(c, w)), fptr(c, vptr(c, x), view_base(c, x)),
                            fptr(c, vptr(c, y), view_base(c, y))};
    call_fn(c, name, args, 5, (int[]){0, 0, 1, 1, 1});
    return aj_conv_rows(c->jit, &s);
}

/* With dilation dh, dw (dh = dw = 1 below: each tap offset i - ph, j - pw
 * is scaled by it, and the tap ranges are the i with y + i dh inside):
 * conv2d, conv1d: y[b, o, py, px] = sum_{c, i, j} w[o, c, i, j] x[b, c, py + i - ph, px + j - pw]
 *   over kept taps inside x; a row (b, o, py) is its W outputs.
 * _grad_x: dx[b, c, py, px] = sum_{o, i, j} w[o, c, i, j] dy[b, o, py - i + ph, px - j + pw]
 *   over kept taps inside dy; a row (b, c, py).
 * _grad_w: dw[o, c, i, j] = keep(i, j) sum_{b, y, x} dy[b, o, y, x] x[b, c, y + i - ph, x + j - pw]
 *   over y, x inside x; a row (o, c, i) is its kw outputs.
 * Each output is one conv_sum with the loop ranges clipped to the image:
 * the scalar form, for views that are not dense (lower_conv_direct else). */
static int64_t lower_conv(aj_codegen *c, const aj_node *n) {
    const aj_kspec *ks = c->ks;
    const aj_view *a = &ks->in[0], *b = &ks->in[1], *y = &ks->out[0];
    conv_geom g = conv_geom_of(ks, n);
    if (aj_view_contiguous(a) && aj_view_contiguous(b) && aj_view_contiguous(y)) return lower_conv_direct(c, n, &g);
    int gw = is_conv_grad_w(n->op), gx = is_conv_grad_x(n->op);
    int64_t HW = g.H * g.W, K2 = g.kh * g.kw;
    /* row r = (r0 mid + r1) last + r2, each of `inner` outputs q */
    int64_t mid = gw || gx ? g.Ci : g.Co, last = gw ? g.kh : g.H, inner = gw ? g.kw : g.W;
    int64_t rows = (gw ? g.Co : g.B) * mid * last;
    LLVMValueRef ab = view_base(c, a), bb = view_base(c, b), yb = view_base(c, y), zero = i64c(c, 0);
    LLVMValueRef kh = i64c(c, g.kh), kw = i64c(c, g.kw), H = i64c(c, g.H), W = i64c(c, g.W);
    loop rl, ql;
    LLVMValueRef r = loop_open(c, &rl, c->lo, c->hi, "row");
    LLVMValueRef r0 = LLVMBuildSDiv(c->b, r, i64c(c, mid * last), "");
    LLVMValueRef r1 = LLVMBuildSRem(c->b, LLVMBuildSDiv(c->b, r, i64c(c, last), ""), i64c(c, mid), "");
    LLVMValueRef r2 = LLVMBuildSRem(c->b, r, i64c(c, last), "");
    LLVMValueRef q = loop_open(c, &ql, zero, i64c(c, inner), "q");
    LLVMValueRef s, ph = i64c(c, g.ph * g.dh), pw = i64c(c, g.pw * g.dw), one = i64c(c, 1);
    /* where tap 0 of output row r2, column q reads (grad_w: of tap r2, q at output 0) */
    LLVMValueRef ys = LLVMBuildNSWSub(c->b, muli(c, r2, gw ? g.dh : 1), ph, "");
    LLVMValueRef xs = LLVMBuildNSWSub(c->b, muli(c, q, gw ? g.dw : 1), pw, "");
    if (gw) {   /* (r0, r1, r2, q) = (o, c, i, j): over b, y, x */
        conv_operand dy = {a, add(c, ab, muli(c, r0, HW)), {g.Co * HW, g.W, 1}};
        conv_operand x = {b, add(c, add(c, bb, muli(c, r1, HW)), add(c, muli(c, ys, g.W), xs)), {g.Ci * HW, g.W, 1}};
        s = conv_sum(c, &dy, &x, g.B, imax(c, zero, LLVMBuildNSWNeg(c->b, ys, "")), imin(c, H, LLVMBuildNSWSub(c->b, H, ys, "")),
                     imax(c, zero, LLVMBuildNSWNeg(c->b, xs, "")), imin(c, W, LLVMBuildNSWSub(c->b, W, xs, "")), NULL);
        LLVMValueRef jcap = sel(c, ilt(c, r2, i64c(c, g.icut)), kw, i64c(c, g.jpart));
        LLVMValueRef keep = LLVMBuildAnd(c->b, ilt(c, r2, i64c(c, g.irows)), ilt(c, q, jcap), "");
        s = sel(c, keep, s, f32c(c, 0));
    } else if (gx) {   /* (r0, r1, r2, q) = (b, c, py, px): over o and taps, dy read backwards */
        LLVMValueRef yy = add(c, r2, ph), xx = add(c, q, pw);
        conv_operand w = {b, add(c, bb, muli(c, r1, K2)), {g.Ci * K2, g.kw, 1}};
        conv_operand dy = {a, add(c, add(c, ab, muli(c, r0, g.Co * HW)), add(c, muli(c, yy, g.W), xx)),
                           {HW, -g.W * g.dh, -g.dw}};
        s = conv_sum(c, &w, &dy, g.Co, imax(c, zero, cdiv(c, add(c, LLVMBuildNSWSub(c->b, yy, H, ""), one), g.dh)),
                     imin(c, kh, add(c, floordiv(c, yy, g.dh), one)),
                     imax(c, zero, cdiv(c, add(c, LLVMBuildNSWSub(c->b, xx, W, ""), one), g.dw)),
                     imin(c, kw, add(c, floordiv(c, xx, g.dw), one)), &g);
    } else {   /* (r0, r1, r2, q) = (b, o, py, px): over c and taps */
        conv_operand w = {b, add(c, bb, muli(c, r1, g.Ci * K2)), {K2, g.kw, 1}};
        conv_operand x = {a, add(c, add(c, ab, muli(c, r0, g.Ci * HW)), add(c, muli(c, ys, g.W), xs)),
                          {HW, g.W * g.dh, g.dw}};
        s = conv_sum(c, &w, &x, g.Ci, imax(c, zero, cdiv(c, LLVMBuildNSWNeg(c->b, ys, ""), g.dh)),
                     imin(c, kh, cdiv(c, LLVMBuildNSWSub(c->b, H, ys, ""), g.dh)),
                     imax(c, zero, cdiv(c, LLVMBuildNSWNeg(c->b, xs, ""), g.dw)),
                     imin(c, kw, cdiv(c, LLVMBuildNSWSub(c->b, W, xs, ""), g.dw)), &g);
    }
    store_at(c, y, add(c, yb, add(c, muli(c, r, inner), q)), s);
    loop_close(c, &ql);
    loop_close(c, &rl);
    return rows;
}

/* ---------------------------------------------------------------- rows: sampling */

/* The inverse CDF of softmax(l inv_temp) over a row of K > 0 logits at u:
 * the first k whose running sum of weights exceeds u * total, else the last
 * k of nonzero weight. As the interpreter's pick(): in double, libm's exp,
 * summed in order, so both engines draw the same k. The running sums only
 * grow, so that first k is the count of running sums <= u * total. */
static LLVMValueRef pick_k(aj_codegen *c, const row_ref *l, int64_t K, double inv_temp, LLVMValueRef u) {
    LLVMTypeRef f64 = LLVMDoubleTypeInContext(c->cx);
    LLVMValueRef zero = LLVMConstReal(f64, 0), KK = i64c(c, K);
    LLVMValueRef am = acc_new(c, c->f32, f32c(c, -INFINITY));
    loop kl;
    LLVMValueRef k = loop_open(c, &kl, i64c(c, 0), KK, "k");
    LLVMBuildStore(c->b, aj_vm_max(c->b, acc_get(c, am), term_load(c, l, k)), am);
    loop_close(c, &kl);
    LLVMValueRef m = LLVMBuildFPExt(c->b, acc_get(c, am), f64, "");
    LLVMValueRef total = acc_new(c, f64, zero), cum = acc_new(c, f64, zero);
    LLVMValueRef count = acc_new(c, c->i64, i64c(c, 0)), last = acc_new(c, c->i64, i64c(c, K - 1));
    for (int pass = 0; pass < 2; pass++) {   /* the total, then the running sums */
        k = loop_open(c, &kl, i64c(c, 0), KK, "k");
        LLVMValueRef x = LLVMBuildFSub(c->b, LLVMBuildFPExt(c->b, term_load(c, l, k), f64, ""), m, "");
        LLVMValueRef e = call1(c, "llvm.exp", LLVMBuildFMul(c->b, x, LLVMConstReal(f64, inv_temp), ""));
        if (pass == 0) {
            LLVMBuildStore(c->b, LLVMBuildFAdd(c->b, acc_get(c, total), e, ""), total);
        } else {
            LLVMValueRef s = LLVMBuildFAdd(c->b, acc_get(c, cum), e, "");
            LLVMBuildStore(c->b, s, cum);
            LLVMValueRef below = LLVMBuildFCmp(c->b, LLVMRealOLE, s, acc_get(c, total), "");
            LLVMBuildStore(c->b, add(c, acc_get(c, count), LLVMBuildZExt(c->b, below, c->i64, "")), count);
            LLVMValueRef pos = LLVMBuildFCmp(c->b, LLVMRealOGT, e, zero, "");
            LLVMBuildStore(c->b, sel(c, pos, k, acc_get(c, last)), last);
        }
        loop_close(c, &kl);
        if (pass == 0)   /* from here on total holds u * total */
            LLVMBuildStore(c->b, LLVMBuildFMul(c->b, LLVMBuildFPExt(c->b, u, f64, ""), acc_get(c, total), ""), total);
    }
    LLVMValueRef n = acc_get(c, count);
    return sel(c, ilt(c, n, KK), n, acc_get(c, last));
}

/* categorical: y[r] = the pick over row r of K logits at temperature t,
 * u = u01(key, r). Rows: every row. */
static int64_t lower_categorical(aj_codegen *c, const aj_node *n) {
    const aj_view *l = &c->ks->in[0], *y = &c->ks->out[0];
    int64_t K = l->shape[l->rank - 1];
    LLVMValueRef lb = view_base(c, l), yb = view_base(c, y), key = node_key(c, n);
    loop rl;
    LLVMValueRef r = loop_open(c, &rl, c->lo, c->hi, "row");
    row_ref row = {l, add(c, lb, muli(c, r, K))};
    LLVMValueRef k = pick_k(c, &row, K, 1 / aj_attr_float(n, "temperature"), rng_u01(c, key, r));
    store_at(c, y, add(c, yb, r), LLVMBuildTrunc(c->b, k, c->i32, ""));
    loop_close(c, &rl);
    return prod(y->shape, 0, y->rank);
}

/* argmax: y[r] = the first k of row r whose x[r, k] is greater than the
 * best before it (x[r, 0] to start: ties go to the lowest k and a NaN is
 * never greater, as the interpreter; with K = 0, which the interpreter
 * refuses, 0 without reading). Rows: every row. */
static int64_t lower_argmax(aj_codegen *c, const aj_node *n) {
    const aj_view *x = &c->ks->in[0], *y = &c->ks->out[0];
    int64_t K = x->shape[x->rank - 1];
    LLVMValueRef xb = view_base(c, x), yb = view_base(c, y);
    (void)n;
    loop rl, kl;
    LLVMValueRef r = loop_open(c, &rl, c->lo, c->hi, "row");
    row_ref row = {x, add(c, xb, muli(c, r, K))};
    LLVMValueRef best = acc_new(c, c->f32, K ? term_load(c, &row, i64c(c, 0)) : f32c(c, 0)), at = acc_new(c, c->i64, i64c(c, 0));
    LLVMValueRef k = loop_open(c, &kl, i64c(c, 1), i64c(c, K), "k");
    LLVMValueRef v = term_load(c, &row, k), gt = LLVMBuildFCmp(c->b, LLVMRealOGT, v, acc_get(c, best), "");
    LLVMBuildStore(c->b, sel(c, gt, v, acc_get(c, best)), best);
    LLVMBuildStore(c->b, sel(c, gt, k, acc_get(c, at)), at);
    loop_close(c, &kl);
    store_at(c, y, add(c, yb, r), LLVMBuildTrunc(c->b, acc_get(c, at), c->i32, ""));
    loop_close(c, &rl);
    return prod(y->shape, 0, y->rank);
}

/* mog: per element s, the component k = the pick over softmax(logit_pi) at
 * u01(key, 3s), then y = mu_k + e^{ls_k} z with z = sqrt(-2 ln(1 - u1))
 * cos(2 pi u2) (Box-Muller, as aj_rng_box_muller) of u1, u2 = u01(key,
 * 3s + 1), u01(key, 3s + 2). Rows: every element. */
static int64_t lower_mog(aj_codegen *c, const aj_node *n) {
    const aj_kspec *ks = c->ks;
    const aj_view *pi = &ks->in[0], *mu = &ks->in[1], *ls = &ks->in[2], *y = &ks->out[0];
    int64_t K = pi->shape[pi->rank - 1];
    LLVMValueRef pb = view_base(c, pi), mb = view_base(c, mu), lb = view_base(c, ls), yb = view_base(c, y);
    LLVMValueRef key = node_key(c, n);
    loop rl;
    LLVMValueRef s = loop_open(c, &rl, c->lo, c->hi, "s"), row = muli(c, s, K), ctr = muli(c, s, 3);
    row_ref r = {pi, add(c, pb, row)};
    LLVMValueRef k = add(c, row, pick_k(c, &r, K, 1, rng_u01(c, key, ctr)));
    LLVMValueRef u1 = rng_u01(c, key, add(c, ctr, i64c(c, 1))), u2 = rng_u01(c, key, add(c, ctr, i64c(c, 2)));
    LLVMValueRef rad = call1(c, "llvm.sqrt", fmul_(c, f32c(c, -2), aj_vm_log(c->b, fsub_(c, f32c(c, 1), u1))));
    LLVMValueRef z = fmul_(c, rad, call1(c, "llvm.cos", fmul_(c, f32c(c, 6.2831853071795864), u2)));
    LLVMValueRef v = fadd_(c, load_at(c, mu, add(c, mb, k)), fmul_(c, aj_vm_exp(c->b, load_at(c, ls, add(c, lb, k))), z));
    store_at(c, y, add(c, yb, s), v);
    loop_close(c, &rl);
    return prod(y->shape, 0, y->rank);
}

/* ---------------------------------------------------------------- the table */

typedef int64_t (*lower_fn)(aj_codegen *c, const aj_node *n);

static const lower_fn lowerings[AJ_OP_COUNT] = {
    [AJ_OP_CONSTANT] = lower_constant,
    [AJ_OP_SUM] = lower_reduce, [AJ_OP_MEAN] = lower_reduce, [AJ_OP_MAX] = lower_reduce,
    [AJ_OP_LOGSUMEXP] = lower_lse_softmax, [AJ_OP_SOFTMAX] = lower_lse_softmax,
    [AJ_OP_LOG_SOFTMAX] = lower_lse_softmax,
    [AJ_OP_SHIFT] = lower_shift_pad, [AJ_OP_PAD] = lower_shift_pad,
    [AJ_OP_CAST] = lower_cast, [AJ_OP_ONE_HOT] = lower_index, [AJ_OP_GATHER] = lower_index,
    [AJ_OP_LAYER_NORM] = lower_layer_norm, [AJ_OP_CATEGORICAL_NLL] = lower_categorical_nll,
    [AJ_OP_MOG_NLL] = lower_mog_nll, [AJ_OP_CONCAT] = lower_concat, [AJ_OP_SKEW] = lower_skew,
    [AJ_OP_UNSKEW] = lower_skew, [AJ_OP_ATTENTION] = lower_attention,
    [AJ_OP_CONV2D] = lower_conv, [AJ_OP_CONV1D] = lower_conv, [AJ_OP_CONV2D_GRAD_X] = lower_conv,
    [AJ_OP_CONV2D_GRAD_W] = lower_conv, [AJ_OP_CONV1D_GRAD_X] = lower_conv, [AJ_OP_CONV1D_GRAD_W] = lower_conv,
    [AJ_OP_CATEGORICAL] = lower_categorical, [AJ_OP_MOG] = lower_mog, [AJ_OP_ARGMAX] = lower_argmax,
};

int aj_codegen_lowers(const aj_node *n) {
    return n->op == AJ_OP_MASK || n->op == AJ_OP_MATMUL || aj_op_elementwise(n->op) || aj_op_view(n->op) ||
           lowerings[n->op] != NULL;
}

int aj_codegen_reduce_block(const aj_node *n, const aj_type *x_type) {
    aj_view x = {.rank = x_type->rank};   /* every dim is bound when programs are planned */
    for (int a = 0; a < x.rank; a++) x.shape[a] = x_type->dim[a].off;
    int64_t o, r, i;
    return reduce_split(n, &x, &o, &r, &i);
}

/* ---------------------------------------------------------------- kernels */

void aj_codegen_set_nan_check(aj_codegen *c, int on) { c->nan_check = on; }


aj_codegen *aj_codegen_new(aj_jit *jit, aj_jit_module *mod) {
    aj_codegen *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->jit = jit, c->mod = mod;
    c->vw = aj_jit_vector_width(jit);
    c->cx = aj_jit_module_context(mod);
    c->m = aj_jit_module_llvm(mod);
    c->b = LLVMCreateBuilderInContext(c->cx);
    c->eb = LLVMCreateBuilderInContext(c->cx);
    c->f32 = LLVMFloatTypeInContext(c->cx);
    c->i32 = LLVMInt32TypeInContext(c->cx);
    c->i64 = LLVMInt64TypeInContext(c->cx);
    c->ptr = LLVMPointerTypeInContext(c->cx, 0);
    c->void_ = LLVMVoidTypeInContext(c->cx);
    return c;
}

void aj_codegen_free(aj_codegen *c) {
    if (!c) return;
    if (c->dib) {
        LLVMDIBuilderFinalize(c->dib);
        LLVMDisposeDIBuilder(c->dib);
    }
    LLVMDisposeBuilder(c->b);
    LLVMDisposeBuilder(c->eb);
    free(c->arg);
    free(c);
}

static void fn_attr(aj_codegen *c, unsigned idx, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(c->fn, idx, LLVMCreateEnumAttribute(c->cx, kind, 0));
}

/* void (i64 lo, i64 hi, ptr ctx, ptr b0, ..., ptr b[nargs-1]): a kernel's
 * body; NULL when out of memory */
static LLVMTypeRef body_type(aj_codegen *c, int nargs) {
    LLVMTypeRef *pt = malloc(((size_t)nargs + 3) * sizeof *pt);
    if (!pt) return NULL;
    pt[0] = c->i64, pt[1] = c->i64, pt[2] = c->ptr;
    for (int i = 0; i < nargs; i++) pt[3 + i] = c->ptr;
    LLVMTypeRef t = LLVMFunctionType(c->void_, pt, (unsigned)nargs + 3, 0);
    free(pt);
    return t;
}

/* A kernel body `name` (body_type): internal, inlined into its kernel,
 * every buffer a noalias parameter, at graph line `line`. 0, or -1 out of
 * memory. */
static int begin_fn(aj_codegen *c, const char *name, int nargs, int line, aj_diag *d) {
    LLVMTypeRef ft = body_type(c, nargs);
    if (nargs > c->caparg) {
        LLVMValueRef *a = realloc(c->arg, (size_t)nargs * sizeof *a);
        if (a) c->arg = a, c->caparg = nargs;
    }
    if (!ft || nargs > c->caparg) return aj_error(d, 0, 0, "out of memory in codegen of %s", name);
    c->fn = LLVMAddFunction(c->m, name, ft);
    LLVMSetLinkage(c->fn, LLVMInternalLinkage);
    fn_attr(c, LLVMAttributeFunctionIndex, "nounwind");
    fn_attr(c, LLVMAttributeFunctionIndex, "alwaysinline");
    for (int i = 0; i < nargs; i++) {
        fn_attr(c, (unsigned)i + 4, "noalias");
        fn_attr(c, (unsigned)i + 4, "nocapture");
        c->arg[i] = LLVMGetParam(c->fn, (unsigned)i + 3);
    }
    c->lo = LLVMGetParam(c->fn, 0), c->hi = LLVMGetParam(c->fn, 1), c->ctx = LLVMGetParam(c->fn, 2);
    c->entry = LLVMAppendBasicBlockInContext(c->cx, c->fn, "entry");
    LLVMPositionBuilderAtEnd(c->eb, c->entry);
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->cx, c->fn, "start"));
    describe_fn(c, name, line);
    return 0;
}

static void end_fn(aj_codegen *c) {
    LLVMBuildRetVoid(c->b);
    LLVMBuildBr(c->eb, LLVMGetNextBasicBlock(c->entry));
}

static int64_t lower_spec(aj_codegen *c, const aj_kspec *ks, aj_diag *d) {
    const aj_node *n = ks->node >= 0 && ks->g ? &ks->g->node[ks->node] : NULL;
    c->ks = ks, c->d = d;
    at_line(c, spec_line(ks), 0);
    switch (ks->kind) {
    case AJ_KS_COPY: return lower_elementwise(c, NULL);
    case AJ_KS_MM_PACK:
    case AJ_KS_MM: return lower_matmul(c, n, d);
    case AJ_KS_GROUP: return lower_group(c);
    case AJ_KS_COMBINE: return lower_combine(c);
    case AJ_KS_NODE:
        if (aj_op_elementwise(n->op)) return lower_elementwise(c, n);
        if (aj_op_view(n->op)) return lower_elementwise(c, NULL);
        if (lowerings[n->op]) return lowerings[n->op](c, n);
        return aj_error(d, n->line, n->col, "codegen: no lowering for %s", aj_op_info(n->op)->name);
    case AJ_KS_RECUR: break;
    }
    return aj_error(d, 0, 0, "codegen: a recurrence inside a fused recurrence");
}

/* Sub-kernel k of recurrence `name`, on this thread's share of its R rows:
 * [ith chunk, (ith + 1) chunk) clipped to R. args[3..]: the buffers. */
static void call_sub(aj_codegen *c, const char *name, int k, LLVMValueRef R, LLVMValueRef ctx, LLVMValueRef *args,
                     LLVMTypeRef ft) {
    LLVMValueRef ith = ctx_field(c, CTX_ITH), nth = ctx_field(c, CTX_NTH);
    LLVMValueRef chunk = LLVMBuildSDiv(c->b, add(c, R, LLVMBuildNSWSub(c->b, nth, i64c(c, 1), "")), nth, "");
    LLVMValueRef lo = mul(c, ith, chunk), hi = add(c, lo, chunk);
    args[0] = sel(c, LLVMBuildICmp(c->b, LLVMIntSLT, lo, R, ""), lo, R);
    args[1] = sel(c, LLVMBuildICmp(c->b, LLVMIntSLT, hi, R, ""), hi, R);
    args[2] = ctx;
    char sub[112];
    snprintf(sub, sizeof sub, "%s_%d", name, k);
    LLVMBuildCall2(c->b, ft, LLVMGetNamedFunction(c->m, sub), args, LLVMCountParamTypes(ft), "");
}

/* the step index t of loop iteration s */
static LLVMValueRef step_of(aj_codegen *c, const aj_kspec *ks, LLVMValueRef s) {
    return ks->reverse ? LLVMBuildNSWSub(c->b, i64c(c, ks->steps - 1), s, "") : s;
}

static void set_ctx(aj_codegen *c, LLVMValueRef ctx, int field, LLVMValueRef v) {
    LLVMValueRef i = i64c(c, field);
    LLVMBuildStore(c->b, v, LLVMBuildInBoundsGEP2(c->b, c->i64, ctx, &i, 1, ""));
}

/* A whole recurrence: every thread runs the step loop; each sub-kernel
 * (an internal function, inlined) gets this thread's share of its rows,
 * then a barrier where fuse.c placed one. Its context is a copy of ctx
 * with t, odd and ring set. Split sums' partials are combined whenever
 * their ring of AJ_RING steps is full, between two barriers. */
static int lower_recurrence(aj_codegen *c, const aj_kspec *ks, const char *name, int nargs, aj_diag *d) {
    int64_t *rows = malloc(((size_t)ks->nsub + 1) * sizeof *rows);
    LLVMValueRef *args = malloc(((size_t)nargs + 3) * sizeof *args);
    LLVMTypeRef ft = body_type(c, nargs);
    int nflush = 0, rc = -1;
    if (!rows || !args || !ft) {
        aj_error(d, 0, 0, "out of memory in codegen of %s", name);
        goto out;
    }
    for (int k = 0; k < ks->nsub; k++) {
        char sub[112];
        snprintf(sub, sizeof sub, "%s_%d", name, k);
        if (begin_fn(c, sub, nargs, spec_line(&ks->sub[k]), d)) goto out;
        rows[k] = lower_spec(c, &ks->sub[k], d);
        end_fn(c);
        if (rows[k] < 0) goto out;
        nflush += ks->sub[k].at_flush;
    }
    if (begin_fn(c, name, nargs, spec_line(ks), d)) goto out;
    c->ks = ks;
    LLVMTypeRef kctx = LLVMArrayType(c->i64, CTX_RING + 1);
    LLVMValueRef local = LLVMBuildAlloca(c->eb, kctx, "ctx");
    LLVMBuildMemCpy(c->b, local, 8, c->ctx, 8, i64c(c, (CTX_RING + 1) * 8));
    LLVMValueRef barrier = LLVMGetNamedFunction(c->m, "aj_rt_barrier");   /* runtime/program.c */
    if (!barrier) barrier = LLVMAddFunction(c->m, "aj_rt_barrier", LLVMFunctionType(c->void_, NULL, 0, 0));
    LLVMTypeRef bty = LLVMFunctionType(c->void_, NULL, 0, 0);
    loop sl;
    LLVMValueRef s = loop_open(c, &sl, i64c(c, 0), i64c(c, ks->steps), "step");
    LLVMValueRef ring = LLVMBuildSRem(c->b, s, i64c(c, AJ_RING), "");
    set_ctx(c, local, CTX_T + ks->level - 1, step_of(c, ks, s));
    set_ctx(c, local, CTX_ODD, LLVMBuildAnd(c->b, s, i64c(c, 1), ""));
    set_ctx(c, local, CTX_RING, ring);
    for (int i = 0; i < nargs; i++) args[3 + i] = c->arg[i];
    for (int k = 0; k < ks->nsub; k++) {
        if (ks->sub[k].at_flush) continue;
        call_sub(c, name, k, i64c(c, rows[k]), local, args, ft);
        if (ks->sub[k].barrier_after) LLVMBuildCall2(c->b, bty, barrier, NULL, 0, "");
    }
    if (nflush) {   /* the ring is full, or the last step: its steps' slots, from the first */
        LLVMValueRef full = LLVMBuildOr(c->b, LLVMBuildICmp(c->b, LLVMIntEQ, ring, i64c(c, AJ_RING - 1), ""),
                                        LLVMBuildICmp(c->b, LLVMIntEQ, s, i64c(c, ks->steps - 1), ""), "");
        LLVMBasicBlockRef flush = LLVMAppendBasicBlockInContext(c->cx, c->fn, "flush");
        LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(c->cx, c->fn, "next");
        LLVMBuildCondBr(c->b, full, flush, next);
        LLVMPositionBuilderAtEnd(c->b, flush);
        LLVMBuildCall2(c->b, bty, barrier, NULL, 0, "");
        LLVMValueRef s0 = LLVMBuildNSWSub(c->b, s, ring, "");
        set_ctx(c, local, CTX_T + ks->level - 1, step_of(c, ks, s0));
        for (int k = 0; k < ks->nsub; k++)
            if (ks->sub[k].at_flush) call_sub(c, name, k, add(c, ring, i64c(c, 1)), local, args, ft);
        LLVMBuildCall2(c->b, bty, barrier, NULL, 0, "");   /* before the ring is written again */
        LLVMBuildBr(c->b, next);
        LLVMPositionBuilderAtEnd(c->b, next);
    }
    loop_close(c, &sl);
    end_fn(c);
    rc = 0;
out:
    free(rows), free(args);
    return rc;
}

/* Kernel `name` itself, void name(i64 lo, i64 hi, ptr ctx, ptr buf): it
 * loads the address of each of its nargs buffers from the table buf and
 * calls its body with them. The body takes them as noalias parameters and
 * is inlined, which keeps that as alias scopes: the loops vectorise as if
 * the kernel took its buffers as arguments, and one libffi signature of
 * four arguments calls a kernel over any number of buffers. */
static int entry_fn(aj_codegen *c, const char *name, const char *body, int nargs, int line, aj_diag *d) {
    LLVMTypeRef ft = body_type(c, nargs);
    LLVMValueRef *args = malloc(((size_t)nargs + 3) * sizeof *args);
    if (!ft || !args) {
        free(args);
        return aj_error(d, 0, 0, "out of memory in codegen of %s", name);
    }
    LLVMTypeRef et[4] = {c->i64, c->i64, c->ptr, c->ptr};
    c->fn = LLVMAddFunction(c->m, name, LLVMFunctionType(c->void_, et, 4, 0));
    fn_attr(c, LLVMAttributeFunctionIndex, "nounwind");
    fn_attr(c, 4, "nocapture");
    fn_attr(c, 4, "readonly");
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->cx, c->fn, "entry"));
    describe_fn(c, name, line);
    LLVMValueRef tab = LLVMGetParam(c->fn, 3);
    for (int i = 0; i < 3; i++) args[i] = LLVMGetParam(c->fn, (unsigned)i);
    for (int i = 0; i < nargs; i++) {
        LLVMValueRef ix = i64c(c, i);
        args[3 + i] = LLVMBuildLoad2(c->b, c->ptr, LLVMBuildInBoundsGEP2(c->b, c->ptr, tab, &ix, 1, ""), "");
    }
    LLVMBuildCall2(c->b, ft, LLVMGetNamedFunction(c->m, body), args, (unsigned)nargs + 3, "");
    LLVMBuildRetVoid(c->b);
    free(args);
    return 0;
}

int aj_codegen_kernel(aj_codegen *c, const aj_kspec *ks, const char *name, int nargs, int64_t *rows, aj_diag *d) {
    char body[96];
    snprintf(body, sizeof body, "%s_body", name);
    if (ks->kind == AJ_KS_RECUR) {
        *rows = 1;
        if (lower_recurrence(c, ks, body, nargs, d)) return -1;
    } else {
        if (begin_fn(c, body, nargs, spec_line(ks), d)) return -1;
        *rows = lower_spec(c, ks, d);
        end_fn(c);
        if (*rows < 0) return -1;
    }
    return entry_fn(c, name, body, nargs, spec_line(ks), d);
}
