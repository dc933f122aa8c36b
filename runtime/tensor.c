/* Tensors: dense row-major f32/i32 arrays, and parameter initialisation. */
#include "arjit.h"
#include "runtime/rng.h"
#include <math.h>
#include <stdlib.h>

int64_t aj_tensor_numel(const aj_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= t->shape[i];
    return n;
}

/* data is NULL when a dim is negative, the size overflows or calloc fails;
 * a tensor of 0 elements still gets a (1-element) allocation. */
aj_tensor aj_tensor_new_sized(aj_dtype dt, int rank, const int64_t *shape, size_t f32_size) {
    aj_tensor t = {dt, rank, {0}, NULL};
    int64_t n = 1;
    size_t es = dt == AJ_F32 ? f32_size : 4;
    if (rank < 0 || rank > AJ_MAX_RANK) return t;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n)) return t;
        t.shape[i] = shape[i];
    }
    if ((uint64_t)n > PTRDIFF_MAX / es) return t;
    t.data = calloc(n ? (size_t)n : 1, es);
    return t;
}

aj_tensor aj_tensor_new(aj_dtype dt, int rank, const int64_t *shape) {
    return aj_tensor_new_sized(dt, rank, shape, 4);   /* f32 and i32 are both 4 bytes */
}

aj_tensor aj_tensor_of_type_sized(const aj_type *ty, size_t f32_size) {
    int64_t shape[AJ_MAX_RANK];
    for (int i = 0; i < ty->rank; i++) {
        if (!aj_dim_is_const(ty->dim[i])) return (aj_tensor){ty->dtype, ty->rank, {0}, NULL};
        shape[i] = ty->dim[i].off;
    }
    return aj_tensor_new_sized(ty->dtype, ty->rank, shape, f32_size);
}

aj_tensor aj_tensor_of_type(const aj_type *ty) { return aj_tensor_of_type_sized(ty, 4); }

void aj_tensor_free(aj_tensor *t) {
    free(t->data);
    t->data = NULL;
}

/* zeros | ones | normal(std): std * z | uniform(a, b): a + (b - a) u |
 * xavier: uniform(-l, l), l = sqrt(6 / (fan_in + fan_out)), fan_in = dim[0],
 * fan_out = last dim (both dim[0] for rank 1, 1 for a scalar).
 * Draws: key aj_rng_key(seed, 0, i), counter = flat index (runtime/rng.h). */
aj_tensor aj_param_init(const aj_module *m, int i, const aj_bind *b, uint64_t seed) {
    const aj_param *p = &m->param[i];
    aj_type ty = p->type;
    for (int k = 0; k < ty.rank; k++) ty.dim[k] = aj_dim_bind(ty.dim[k], b);
    aj_tensor t = aj_tensor_of_type(&ty);
    if (!t.data) return t;
    int64_t n = aj_tensor_numel(&t);
    uint64_t key = aj_rng_key(seed, 0, (uint64_t)i);
    double lo = p->a, hi = p->b;
    if (p->init == AJ_INIT_XAVIER) {
        /* Glorot: a matrix [in, out] has fans in and out; a conv kernel
         * [Co, Ci, k..] has fans Ci * taps and Co * taps */
        double fan_in = 1, fan_out = 1, taps = 1;
        for (int k = 2; k < t.rank; k++) taps *= (double)t.shape[k];
        if (t.rank == 1) fan_in = fan_out = (double)t.shape[0];
        if (t.rank == 2) fan_in = (double)t.shape[0], fan_out = (double)t.shape[1];
        if (t.rank > 2) fan_in = (double)t.shape[1] * taps, fan_out = (double)t.shape[0] * taps;
        hi = sqrt(6.0 / (fan_in + fan_out));
        lo = -hi;
    }
    for (int64_t j = 0; j < n; j++) {
        double v = 0;
        switch (p->init) {
        case AJ_INIT_ZEROS: v = 0; break;
        case AJ_INIT_ONES: v = 1; break;
        case AJ_INIT_NORMAL: v = p->a * aj_rng_normal(key, (uint64_t)j); break;
        case AJ_INIT_UNIFORM:
        case AJ_INIT_XAVIER: v = lo + (hi - lo) * aj_rng_u01(key, (uint64_t)j); break;
        }
        if (t.dtype == AJ_F32)
            ((float *)t.data)[j] = (float)v;
        else
            ((int32_t *)t.data)[j] = (int32_t)v;
    }
    return t;
}
