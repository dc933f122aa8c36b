/* Polynomial exp/log/tanh/sigmoid/softplus in LLVM IR (see vecmath.h).
 *
 * The coefficients are Cephes' single-precision ones (expf, logf, tanhf),
 * whose minimax polynomials are accurate to about 1 ulp on the reduced
 * ranges below. Everything is branch-free: both sides of a case split are
 * computed and a select picks one, so the code maps onto masked vector ops. */
#include "compiler/vecmath.h"

#include <string.h>

/* ---------------------------------------------------------------- helpers */

enum { MAX_LANES = 64 };

/* ty's shape (scalar, or a vector of the same length) with element type elem */
static LLVMTypeRef shape_of(LLVMTypeRef ty, LLVMTypeRef elem) {
    return LLVMGetTypeKind(ty) == LLVMVectorTypeKind ? LLVMVectorType(elem, LLVMGetVectorSize(ty)) : elem;
}

static LLVMValueRef splat(LLVMTypeRef ty, LLVMValueRef scalar) {
    if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind) return scalar;
    LLVMValueRef lanes[MAX_LANES];
    unsigned n = LLVMGetVectorSize(ty);
    if (n > MAX_LANES) n = MAX_LANES;   /* wider than any host vector; the verifier would object */
    for (unsigned i = 0; i < n; i++) lanes[i] = scalar;
    return LLVMConstVector(lanes, n);
}

static LLVMTypeRef elem_of(LLVMTypeRef ty) {
    return LLVMGetTypeKind(ty) == LLVMVectorTypeKind ? LLVMGetElementType(ty) : ty;
}

LLVMValueRef aj_vm_const(LLVMTypeRef ty, double c) { return splat(ty, LLVMConstReal(elem_of(ty), c)); }

/* an i32 constant shaped like the float type fty */
static LLVMValueRef iconst(LLVMTypeRef fty, int32_t c) {
    LLVMTypeRef i32 = LLVMInt32TypeInContext(LLVMGetTypeContext(fty));
    return splat(shape_of(fty, i32), LLVMConstInt(i32, (unsigned long long)(int64_t)c, 1));
}

static LLVMTypeRef int_type(LLVMTypeRef fty) {
    return shape_of(fty, LLVMInt32TypeInContext(LLVMGetTypeContext(fty)));
}

LLVMValueRef aj_vm_intrinsic(LLVMBuilderRef b, const char *name, LLVMValueRef *args, unsigned nargs) {
    LLVMTypeRef ty = LLVMTypeOf(args[0]);
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMModuleRef mod = LLVMGetGlobalParent(LLVMGetBasicBlockParent(LLVMGetInsertBlock(b)));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(mod, id, &ty, 1);
    LLVMTypeRef fty = LLVMIntrinsicGetType(LLVMGetTypeContext(ty), id, &ty, 1);
    return LLVMBuildCall2(b, fty, fn, args, nargs, "");
}

static LLVMValueRef intrin1(LLVMBuilderRef b, const char *name, LLVMValueRef x) {
    return aj_vm_intrinsic(b, name, &x, 1);
}

LLVMValueRef aj_vm_fma(LLVMBuilderRef b, LLVMValueRef a, LLVMValueRef x, LLVMValueRef c) {
    LLVMValueRef args[3] = {a, x, c};
    return aj_vm_intrinsic(b, "llvm.fmuladd", args, 3);
}

/* a * x + c with constants a or c */
static LLVMValueRef fma_kc(LLVMBuilderRef b, LLVMValueRef a, double x, LLVMValueRef c) {
    return aj_vm_fma(b, a, aj_vm_const(LLVMTypeOf(a), x), c);
}

/* c[0] x^(n-1) + ... + c[n-1], by Horner: n-1 FMAs */
static LLVMValueRef horner(LLVMBuilderRef b, LLVMValueRef x, const double *c, int n) {
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef p = aj_vm_const(ty, c[0]);
    for (int i = 1; i < n; i++) p = aj_vm_fma(b, p, x, aj_vm_const(ty, c[i]));
    return p;
}

static LLVMValueRef fcmp_k(LLVMBuilderRef b, LLVMRealPredicate pred, LLVMValueRef x, double k) {
    return LLVMBuildFCmp(b, pred, x, aj_vm_const(LLVMTypeOf(x), k), "");
}

/* Ordered compares are false on NaN, so a NaN x is the one kept. */
LLVMValueRef aj_vm_max(LLVMBuilderRef b, LLVMValueRef x, LLVMValueRef y) {
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, y, ""), y, x, "");
}

LLVMValueRef aj_vm_min(LLVMBuilderRef b, LLVMValueRef x, LLVMValueRef y) {
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, y, ""), y, x, "");
}

/* 2^k for integer k in [-126, 127]: the biased exponent k + 127 placed in
 * the exponent field */
static LLVMValueRef pow2i(LLVMBuilderRef b, LLVMValueRef k, LLVMTypeRef fty) {
    LLVMValueRef biased = LLVMBuildAdd(b, k, iconst(fty, 127), "");
    return LLVMBuildBitCast(b, LLVMBuildShl(b, biased, iconst(fty, 23), ""), fty, "");
}

/* ---------------------------------------------------------------- exp */

/* exp(x) = 2^n e^r with n = round(x log2(e)), |r| <= ln2/2.
 * r = x - n ln2 uses ln2 = C1 + C2 with C1 = 0.693359375 (9 bits, so n C1 is
 * exact for |n| < 2^15) and C2 the rest: r carries no cancellation error.
 * e^r = 1 + r + r^2 P(r), P of nP coefficients (highest first).
 * Returns e^r, and n as an integer in *ni. */
static LLVMValueRef exp_reduced(LLVMBuilderRef b, LLVMValueRef x, const double *P, int nP, LLVMValueRef *ni) {
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef n = intrin1(b, "llvm.floor", fma_kc(b, x, 1.44269504088896341, aj_vm_const(ty, 0.5)));
    LLVMValueRef r = fma_kc(b, n, -0.693359375, x);
    r = fma_kc(b, n, 2.12194440e-4, r);
    LLVMValueRef r2 = LLVMBuildFMul(b, r, r, "");
    LLVMValueRef y = aj_vm_fma(b, horner(b, r, P, nP), r2, r);
    /* n is NaN only when x is, and then y is NaN whatever the scale: freeze
     * turns fptosi's poison on NaN into some fixed integer */
    *ni = LLVMBuildFreeze(b, LLVMBuildFPToSI(b, n, int_type(ty), ""), "");
    return LLVMBuildFAdd(b, y, aj_vm_const(ty, 1.0), "");
}

/* e^x, x clamped to [-104, 89]: below, e^x < 2^-150 rounds to 0; above, to
 * inf. 2^n is built from bits as 2^(n>>1) 2^(n - (n>>1)): each factor stays
 * a normal float over the whole clamped range n in [-150, 128], so results
 * overflow to inf and underflow through the denormals to 0 in the last
 * multiply, as a correctly rounded expf does. */
LLVMValueRef aj_vm_exp(LLVMBuilderRef b, LLVMValueRef x) {
    /* Cephes' degree-5 minimax P: about 1 ulp */
    static const double P[] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
                               4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
    LLVMTypeRef ty = LLVMTypeOf(x);
    x = aj_vm_max(b, x, aj_vm_const(ty, -104.0));
    x = aj_vm_min(b, x, aj_vm_const(ty, 89.0));
    LLVMValueRef ni, y = exp_reduced(b, x, P, 6, &ni);
    LLVMValueRef k = LLVMBuildAShr(b, ni, iconst(ty, 1), "");
    y = LLVMBuildFMul(b, y, pow2i(b, k, ty), "");
    return LLVMBuildFMul(b, y, pow2i(b, LLVMBuildSub(b, ni, k, ""), ty), "exp");
}

/* ---------------------------------------------------------------- log */

/* log(1 + f) + e ln2 for f in [sqrt(1/2) - 1, sqrt(2) - 1]:
 * f - f^2/2 + f^3 Q(f) with Cephes' degree-8 Q, and e ln2 split as above
 * (the small part added first, the big one last, for rounding) */
static LLVMValueRef log_core(LLVMBuilderRef b, LLVMValueRef f, LLVMValueRef e) {
    static const double Q[] = {7.0376836292E-2,  -1.1514610310E-1, 1.1676998740E-1,
                               -1.2420140846E-1, 1.4249322787E-1,  -1.6668057665E-1,
                               2.0000714765E-1,  -2.4999993993E-1, 3.3333331174E-1};
    LLVMValueRef z = LLVMBuildFMul(b, f, f, "");
    LLVMValueRef y = LLVMBuildFMul(b, LLVMBuildFMul(b, horner(b, f, Q, 9), f, ""), z, "");
    y = fma_kc(b, e, -2.12194440e-4, y);
    y = fma_kc(b, z, -0.5, y);
    LLVMValueRef r = LLVMBuildFAdd(b, f, y, "");
    return fma_kc(b, e, 0.693359375, r);
}

/* x = m 2^e with m in [sqrt(1/2), sqrt(2)) read off the bits (frexp without
 * a call): m's exponent field is forced to that of [0.5, 1), and halves of
 * the range below sqrt(1/2) are doubled (exactly) into [sqrt(1/2), 1).
 * Denormals are first scaled by 2^25 so their exponent field is exact.
 * log(x) = log(1 + (m - 1)) + e ln2 with m - 1 exact (Sterbenz), so results
 * near x = 1 keep their relative accuracy. */
LLVMValueRef aj_vm_log(LLVMBuilderRef b, LLVMValueRef x) {
    LLVMTypeRef ty = LLVMTypeOf(x), ity = int_type(ty);
    LLVMValueRef tiny = fcmp_k(b, LLVMRealOLT, x, 1.17549435e-38);
    LLVMValueRef xs = LLVMBuildSelect(b, tiny, LLVMBuildFMul(b, x, aj_vm_const(ty, 33554432.0), ""), x, "");
    LLVMValueRef bits = LLVMBuildBitCast(b, xs, ity, "");
    LLVMValueRef e = LLVMBuildSub(b, LLVMBuildLShr(b, bits, iconst(ty, 23), ""), iconst(ty, 126), "");
    e = LLVMBuildSelect(b, tiny, LLVMBuildSub(b, e, iconst(ty, 25), ""), e, "");
    LLVMValueRef mbits = LLVMBuildOr(b, LLVMBuildAnd(b, bits, iconst(ty, 0x007FFFFF), ""), iconst(ty, 0x3F000000), "");
    LLVMValueRef m = LLVMBuildBitCast(b, mbits, ty, "");   /* in [0.5, 1) */
    LLVMValueRef low = fcmp_k(b, LLVMRealOLT, m, 0.707106781186547524);
    e = LLVMBuildSelect(b, low, LLVMBuildSub(b, e, iconst(ty, 1), ""), e, "");
    LLVMValueRef f = LLVMBuildFSub(b, LLVMBuildSelect(b, low, LLVMBuildFAdd(b, m, m, ""), m, ""),
                                   aj_vm_const(ty, 1.0), "");
    LLVMValueRef r = log_core(b, f, LLVMBuildSIToFP(b, e, ty, ""));
    /* log(+inf) = inf, log(0) = -inf, log(< 0 or NaN) = NaN */
    LLVMValueRef special = LLVMBuildSelect(b, fcmp_k(b, LLVMRealOEQ, x, 0.0), aj_vm_const(ty, -__builtin_inf()),
                                           aj_vm_const(ty, __builtin_nan("")), "");
    r = LLVMBuildSelect(b, fcmp_k(b, LLVMRealOGT, x, 0.0), r, special, "");
    return LLVMBuildSelect(b, fcmp_k(b, LLVMRealOEQ, x, __builtin_inf()), x, r, "log");
}

/* log(1 + t) for t in [0, 1], without forming 1 + t (which would round away
 * t's low bits): up to sqrt(2) - 1, log_core(f = t, e = 0) directly; above,
 * log(1 + t) = ln2 + log(1 + (t - 1)/2) with (t - 1)/2 in (-0.3, 0]. */
static LLVMValueRef log1p_unit(LLVMBuilderRef b, LLVMValueRef t) {
    LLVMTypeRef ty = LLVMTypeOf(t);
    LLVMValueRef big = fcmp_k(b, LLVMRealOGT, t, 0.41421356237309505);
    LLVMValueRef half = LLVMBuildFMul(b, LLVMBuildFSub(b, t, aj_vm_const(ty, 1.0), ""), aj_vm_const(ty, 0.5), "");
    LLVMValueRef f = LLVMBuildSelect(b, big, half, t, "");
    LLVMValueRef e = LLVMBuildSelect(b, big, aj_vm_const(ty, 1.0), aj_vm_const(ty, 0.0), "");
    return log_core(b, f, e);
}

/* ---------------------------------------------------------------- tanh etc. */

/* |x| < 0.625: x + x^3 P(x^2), Cephes' odd minimax polynomial (no
 * cancellation near 0, where 1 - 2/(e^2x + 1) would lose all digits);
 * otherwise 1 - 2/(e^(2|x|) + 1) with x's sign: e^(2|x|) = inf gives 1. */
LLVMValueRef aj_vm_tanh(LLVMBuilderRef b, LLVMValueRef x) {
    static const double P[] = {-5.70498872745E-3, 2.06390887954E-2, -5.37397155531E-2, 1.33314422036E-1,
                               -3.33332819422E-1};
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef one = aj_vm_const(ty, 1.0);
    LLVMValueRef a = intrin1(b, "llvm.fabs", x);
    LLVMValueRef z = LLVMBuildFMul(b, x, x, "");
    LLVMValueRef small = aj_vm_fma(b, LLVMBuildFMul(b, horner(b, z, P, 5), z, ""), x, x);
    LLVMValueRef e = aj_vm_exp(b, LLVMBuildFAdd(b, a, a, ""));
    LLVMValueRef big = LLVMBuildFSub(b, one, LLVMBuildFDiv(b, aj_vm_const(ty, 2.0), LLVMBuildFAdd(b, e, one, ""), ""), "");
    LLVMValueRef args[2] = {big, x};
    big = aj_vm_intrinsic(b, "llvm.copysign", args, 2);
    return LLVMBuildSelect(b, fcmp_k(b, LLVMRealOLT, a, 0.625), small, big, "tanh");
}

/* 1 / (1 + e^z), z = -x. Its e^z needs one scale, not exp's two: with z
 * clamped to [-87.3, 88.8], n is in [-126, 128] and 2^n one float (n = 128
 * gives its bits of inf). Below -87.3, e^z < 2^-126 and 1 + e^z rounds to
 * 1 anyway; above 88.38 (n = 128), e^z = inf and the result 0, where the
 * exact one is a denormal below 4e-39 (x < -88.38). That saves five of the
 * sigmoid's thirty instructions, and the sigmoid is most of NADE's step. */
/* The sigmoid's e^r: a degree-3 P, two FMAs fewer than exp's, fitted to
 * e^r's relative error on |r| <= ln2/2 by compiler/fit_exp_poly.py (1.05e-7
 * at worst). With the rounding of the rest the sigmoid is within 2.4e-7 of
 * the exact value (test_jit: 2.8 ulp, at x = -17), against 1.5e-7 with
 * exp's polynomial; it saves 1.3 ms of NADE's 22 ms training step. */
static const double SIG_P[] = {0.00831252698920531, 0.041890116252758756, 0.16667114451834328, 0.4999923176204875};
enum { NSIG_P = 4 };

LLVMValueRef aj_vm_sigmoid(LLVMBuilderRef b, LLVMValueRef x) {
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef one = aj_vm_const(ty, 1.0);
    LLVMValueRef z = aj_vm_max(b, LLVMBuildFNeg(b, x, ""), aj_vm_const(ty, -87.3));
    z = aj_vm_min(b, z, aj_vm_const(ty, 88.8));
    LLVMValueRef ni, y = exp_reduced(b, z, SIG_P, NSIG_P, &ni);
    LLVMValueRef e = LLVMBuildFMul(b, y, pow2i(b, ni, ty), "");
    return LLVMBuildFDiv(b, one, LLVMBuildFAdd(b, one, e, ""), "sigmoid");
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): the exp never overflows and
 * log1p keeps the tail e^-|x| accurate for large |x| */
LLVMValueRef aj_vm_softplus(LLVMBuilderRef b, LLVMValueRef x) {
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef zero = aj_vm_const(ty, 0.0);
    LLVMValueRef pos = LLVMBuildSelect(b, fcmp_k(b, LLVMRealOGT, x, 0.0), x, zero, "");
    LLVMValueRef t = aj_vm_exp(b, LLVMBuildFNeg(b, intrin1(b, "llvm.fabs", x), ""));
    return LLVMBuildFAdd(b, pos, log1p_unit(b, t), "softplus");
}

/* ---------------------------------------------------------------- sin, cos */

/* sin(x) for quarter = 0, cos(x) = sin(x + pi/2) for quarter = 1.
 * x = n pi/2 + r with n = rint(x 2/pi), |r| <= pi/4; pi/2 = C1 + C2 + C3
 * (Cephes' split of pi/4, doubled: C1 has 8 bits, C2 and C3 18), so n C1
 * and n C2 are exact and r loses nothing to cancellation for |x| up to
 * about 8192, where Cephes' sinf stops too. Then on the quadrant q = n +
 * quarter mod 4: sin r, cos r, -sin r, -cos r, with Cephes' minimax
 * polynomials for sin and cos on |r| <= pi/4 (about 1 ulp). Both
 * polynomials are computed and a select picks one; the sign is q's bit 1
 * xor-ed into the sign bit. inf and NaN give NaN (r is NaN). */
static LLVMValueRef sin_quarter(LLVMBuilderRef b, LLVMValueRef x, int quarter) {
    static const double S[] = {-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1};
    static const double C[] = {2.443315711809948E-5, -1.388731625493765E-3, 4.166664568298827E-2};
    LLVMTypeRef ty = LLVMTypeOf(x), ity = int_type(ty);
    LLVMValueRef n = intrin1(b, "llvm.rint", LLVMBuildFMul(b, x, aj_vm_const(ty, 0.636619772367581343), ""));
    LLVMValueRef r = fma_kc(b, n, -1.5703125, x);
    r = fma_kc(b, n, -4.837512969970703125e-4, r);
    r = fma_kc(b, n, -7.54978995489188216e-8, r);
    LLVMValueRef z = LLVMBuildFMul(b, r, r, "");
    LLVMValueRef s = aj_vm_fma(b, LLVMBuildFMul(b, horner(b, z, S, 3), z, ""), r, r);
    LLVMValueRef c = aj_vm_fma(b, LLVMBuildFMul(b, horner(b, z, C, 3), z, ""), z,
                               fma_kc(b, z, -0.5, aj_vm_const(ty, 1.0)));
    /* n is NaN or beyond i32 only where r is NaN or meaningless: freeze
     * makes fptosi's poison some fixed quadrant */
    LLVMValueRef q = LLVMBuildFreeze(b, LLVMBuildFPToSI(b, n, ity, ""), "");
    q = LLVMBuildAdd(b, q, iconst(ty, quarter), "");
    LLVMValueRef odd = LLVMBuildICmp(b, LLVMIntNE, LLVMBuildAnd(b, q, iconst(ty, 1), ""), iconst(ty, 0), "");
    LLVMValueRef y = LLVMBuildBitCast(b, LLVMBuildSelect(b, odd, c, s, ""), ity, "");
    LLVMValueRef sign = LLVMBuildShl(b, LLVMBuildAnd(b, q, iconst(ty, 2), ""), iconst(ty, 30), "");
    return LLVMBuildBitCast(b, LLVMBuildXor(b, y, sign, ""), ty, quarter ? "cos" : "sin");
}

LLVMValueRef aj_vm_sin(LLVMBuilderRef b, LLVMValueRef x) { return sin_quarter(b, x, 0); }
LLVMValueRef aj_vm_cos(LLVMBuilderRef b, LLVMValueRef x) { return sin_quarter(b, x, 1); }
