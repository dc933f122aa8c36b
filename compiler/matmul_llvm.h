/* A JIT-generated, register-tiled sgemm: C[M,N] (+)= op(A)[M,K] op(B)[K,N],
 * row-major with leading dimensions, emitted with the LLVM C API.
 *
 * aj_mm_emit adds to a module the kernel `<name>` and, when it reads a
 * packed B, the packer `<name>_pack`:
 *
 *   void <name>(i64 m0, i64 m1, i64 N, i64 K, const float *A, i64 lda,
 *               const float *B, i64 ldb, float *C, i64 ldc,
 *               const void *extra_0, ..., const void *extra_{nextra-1});
 *   void <name>_pack(i64 p0, i64 p1, i64 N, i64 K, const float *B, i64 ldb,
 *                    float *Bp);
 *
 * The kernel computes rows [m0, m1) of C, so callers split rows over
 * threads (each call only writes its own rows). Storage:
 *   A: trans_a ? [K, M] (A[k*lda + i]) : [M, K] (A[i*lda + k])
 *   B: trans_b ? [N, K] (B[j*ldb + k]) : [K, N] (B[k*ldb + j])
 * With a packed B the kernel's B is the packer's output Bp (ldb unused):
 * panels of NR = nv * vw columns, panel p = columns [p NR, p NR + NR) as a
 * K x NR row-major block at Bp + p NR K, zero-padded past N. The packer fills
 * panels [p0, p1) of aj_mm_panels(); panels can be packed by several threads.
 *
 * Register tile: mr rows x nv vectors of vw floats (default 4 x 4 x 16 with
 * AVX-512: 16 accumulators + 4 B vectors of the 32 zmm registers; each k
 * step is 4 vector loads, 4 broadcasts and 16 FMAs). Column tails use
 * narrower tiles and masked loads/stores, row tails 1-row tiles.
 *
 * The epilogue hook emits code on each accumulator vector between the last
 * FMA and the store (bias, activation: later fusion puts bias + sigmoid
 * there); it sees the row, the first column, the lane mask and the extra
 * pointer arguments. */
#ifndef ARJIT_COMPILER_MATMUL_LLVM_H
#define ARJIT_COMPILER_MATMUL_LLVM_H

#include "arjit_jit.h"

#include <stdint.h>

enum { AJ_MM_MAX_EXTRA = 8 };

/* What an epilogue sees for one accumulator vector. */
typedef struct {
    LLVMBuilderRef b;
    LLVMTypeRef vty;            /* <vw x float> */
    int vw;
    LLVMValueRef row;           /* i64: the row of C */
    LLVMValueRef col;           /* i64: the column of lane 0 */
    LLVMValueRef mask;          /* <vw x i1>: lanes with col + lane < N; NULL when all are */
    LLVMValueRef n;             /* i64: N */
    const LLVMValueRef *extra;  /* the kernel's extra pointer arguments */
} aj_mm_tile;

/* Returns the value to store in place of acc (same type). */
typedef LLVMValueRef (*aj_mm_epilogue_fn)(void *user, const aj_mm_tile *t, LLVMValueRef acc);

typedef struct {
    const char *name;
    int trans_a, trans_b;
    int pack_b;                 /* read B packed by <name>_pack (forced on by trans_b) */
    int accumulate;             /* C += op(A) op(B) instead of C = ... */
    int vw;                     /* floats per vector; 0: the host's widest */
    int mr, nv;                 /* register tile; 0: 4 rows, 4 vectors */
    int nextra;                 /* extra pointer arguments, <= AJ_MM_MAX_EXTRA */
    aj_mm_epilogue_fn epilogue; /* NULL: store the accumulators as they are */
    void *epilogue_user;
} aj_mm_spec;

typedef void (*aj_mm_kernel_fn)(int64_t m0, int64_t m1, int64_t n, int64_t k, const float *a, int64_t lda,
                                const float *b, int64_t ldb, float *c, int64_t ldc);
typedef void (*aj_mm_pack_fn)(int64_t p0, int64_t p1, int64_t n, int64_t k, const float *b, int64_t ldb,
                              float *bp);

/* Add the kernel (and packer) to m. 0, or -1 with d set on a bad spec. */
int aj_mm_emit(aj_jit *jit, aj_jit_module *m, const aj_mm_spec *s, aj_diag *d);
/* The spec with its defaults filled in for this JIT's host (what aj_mm_emit uses). */
aj_mm_spec aj_mm_resolve(const aj_jit *jit, const aj_mm_spec *s);
/* Whether the kernel reads a packed B. */
int aj_mm_packs_b(const aj_mm_spec *s);
/* Panel width NR, the number of panels, and the floats Bp needs, for a
 * resolved spec. */
int64_t aj_mm_panel_width(const aj_mm_spec *s);
int64_t aj_mm_panels(const aj_mm_spec *s, int64_t n);
int64_t aj_mm_packed_floats(const aj_mm_spec *s, int64_t n, int64_t k);

/* A direct convolution on the same register tiles (no im2col buffer): per
 * image b, over the flattened pixels q = y W + x of an H x W image, and the
 * kept taps t (the rest cost nothing: they are not in the list), each
 * reading the input at q + di[t] W + dj[t] (0 outside the image):
 *
 *   out:    y[b, m, q] = sum_{k, t} A[m wm + k wk + tap[t]] x[b, k, q + off_t]
 *           (a convolution, wm = K kh kw, wk = kh kw; its data gradient
 *           with the taps mirrored, wm = kh kw, wk = M kh kw)
 *   grad_w: dw[(m K + k) K2 + tap[t]] = sum_{b, q} A[b, m, q] x[b, k, q + off_t],
 *           0 at the K2 taps that are not in the list
 *
 * A: the kernel (out) or dy (grad_w), [B, M, H, W]; x: [B, K, H, W]; all
 * dense. Emits `void <name>(i64 lo, i64 hi, const float *A, const float *x,
 * float *out)` computing rows [lo, hi) of aj_conv_rows(): out's rows are
 * (image, tile of pixels), all M outputs of each; grad_w's are tiles of
 * (m, k, taps), walked image by image so an image's dy and x stay in cache
 * while every tile reads them. Lane masks come from a table of the taps'
 * in-image lanes, one word per (tap, vector of pixels). */
typedef struct {
    const char *name;
    int grad_w;
    int64_t B, M, K, H, W;
    int64_t wm, wk;             /* out: A's strides */
    int64_t K2;                 /* grad_w: taps per (m, k) */
    int ntaps;
    const int64_t *tap, *di, *dj;
} aj_conv_spec;

int64_t aj_conv_rows(const aj_jit *jit, const aj_conv_spec *s);
/* Add the kernel to m. 0, or -1 with d set (out of memory). */
int aj_conv_emit(aj_jit *jit, aj_jit_module *m, const aj_conv_spec *s, aj_diag *d);

#endif
