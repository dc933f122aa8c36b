/* swish(x) = x sigmoid(x) (Ramachandran et al. 2017, also called SiLU), an
 * activation arjit does not have, as an extern op with its gradient.
 *
 *   cc -O2 -shared -fPIC swish.c -o swish.so -lm
 *
 * The graph declares it with
 *   extern swish(x) = "swish.so" swish_fwd, grad swish_grad
 * and arjit calls these over every element of a tensor, flattened. */
#include <math.h>
#include <stdint.h>

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* y = x s, s = sigmoid(x) */
void swish_fwd(int64_t n, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * sigmoid(x[i]);
}

/* dy/dx = s + x s (1 - s) = s (1 + x (1 - s)), since ds/dx = s (1 - s);
 * the gradient function gets dy (the adjoint of y) and writes dx = dy dy/dx. */
void swish_grad(int64_t n, const float *x, const float *dy, float *dx) {
    for (int64_t i = 0; i < n; i++) {
        float s = sigmoid(x[i]);
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}
