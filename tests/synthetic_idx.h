/* Synthetic MNIST-format data for the training tests (include after
 * cmocka.h): a 2x3 binary "image" dataset in IDX format (spec `mnist`,
 * D = 6) with rules a model can learn: x0 ~ Bern(0.8), x1 = x0,
 * x2 = 1 - x0, x3 ~ Bern(0.5), x4 = x3, x5 = 1. */
#ifndef ARJIT_TESTS_SYNTHETIC_IDX_H
#define ARJIT_TESTS_SYNTHETIC_IDX_H

#include <stdint.h>
#include <stdio.h>

static void write_synthetic_idx(const char *dir, const char *name, int n, uint32_t seed) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char head[16] = {0, 0, 8, 3, 0, 0, (unsigned char)(n >> 8), (unsigned char)n, 0, 0, 0, 2, 0, 0, 0, 3};
    fwrite(head, 1, sizeof head, f);
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        int a = (seed >> 8) % 10 < 8, b = (seed >> 20) & 1;
        unsigned char px[6] = {a, a, !a, b, b, 1};
        for (int k = 0; k < 6; k++) px[k] = px[k] ? 255 : 0;
        fwrite(px, 1, 6, f);
    }
    assert_int_equal(fclose(f), 0);
}

#endif
