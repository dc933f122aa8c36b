/* Extern ops for tests/test_extern.c beyond the example's swish: one of two
 * inputs, whose two adjoints must not be swapped. */
#include <stdint.h>

/* y = a b + a */
void muladd_fwd(int64_t n, const float *a, const float *b, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i] + a[i];
}

/* dy/da = b + 1, dy/db = a */
void muladd_grad(int64_t n, const float *a, const float *b, const float *dy, float *da, float *db) {
    for (int64_t i = 0; i < n; i++) {
        da[i] = dy[i] * (b[i] + 1);
        db[i] = dy[i] * a[i];
    }
}
