/* The random numbers of every engine: a counter-based generator.
 *
 * A draw is a pure function of (key, counter), so the interpreter, the naive
 * and the fused JIT engines, on any number of threads and in any order, draw
 * identical numbers:
 *
 *   mix(x)            splitmix64's finaliser of x + golden gamma
 *   aj_rng_key(s,a,b) = mix(mix(mix(s) ^ a) ^ b)
 *   aj_rng_u01(k, c)  = (mix(k ^ mix(c)) >> 40) * 2^-24   (24 bits: a float in [0,1))
 *
 * Keys:
 * - a sampling node: k = aj_rng_key(seed, node->line, node->col), then for
 *   every enclosing recurrence step t, outermost first, k = aj_rng_key(k, t, 0)
 *   (aj_rng_node_key below).
 * - module parameter i at initialisation: aj_rng_key(seed, 0, i) (line 0 is
 *   never a node's).
 * Counters, with i the flat row-major index of the result element:
 * - bernoulli, uniform, categorical: counter i (one uniform each; categorical
 *   inverts the CDF of softmax(l / temperature) over the last axis).
 * - normal: counters 2i, 2i+1 (Box-Muller, aj_rng_normal).
 * - mog: counter 3i picks the component (inverse CDF of softmax(logit_pi)),
 *   counters 3i+1, 3i+2 give its normal.
 */
#ifndef ARJIT_RUNTIME_RNG_H
#define ARJIT_RUNTIME_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t aj_rng_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline uint64_t aj_rng_key(uint64_t seed, uint64_t a, uint64_t b) {
    return aj_rng_mix(aj_rng_mix(aj_rng_mix(seed) ^ a) ^ b);
}

/* The key of a sampling node run inside recurrence steps t[0..depth-1]. */
static inline uint64_t aj_rng_node_key(uint64_t seed, int line, int col, const int64_t *t, int depth) {
    uint64_t k = aj_rng_key(seed, (uint64_t)line, (uint64_t)col);
    for (int i = 0; i < depth; i++) k = aj_rng_key(k, (uint64_t)t[i], 0);
    return k;
}

/* Uniform in [0, 1): 24 random bits, exact in a float. */
static inline float aj_rng_u01(uint64_t key, uint64_t counter) {
    return (float)(aj_rng_mix(key ^ aj_rng_mix(counter)) >> 40) * 0x1p-24f;
}

/* A standard normal from two uniforms (Box-Muller, cosine branch):
 * z = sqrt(-2 ln(1 - u1)) cos(2 pi u2); 1 - u1 is in (0, 1], so the log is finite. */
static inline float aj_rng_box_muller(float u1, float u2) {
    return sqrtf(-2.0f * logf(1.0f - u1)) * cosf(6.2831853071795864f * u2);
}

/* The standard normal of element i: uniforms from counters 2i and 2i+1. */
static inline float aj_rng_normal(uint64_t key, uint64_t i) {
    return aj_rng_box_muller(aj_rng_u01(key, 2 * i), aj_rng_u01(key, 2 * i + 1));
}

#endif
