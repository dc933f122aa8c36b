/* SHA-256 (FIPS 180-4), to check downloaded data against published sums. */
#ifndef ARJIT_RUNTIME_SHA256_H
#define ARJIT_RUNTIME_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t len;            /* bytes hashed so far */
    unsigned char buf[64];   /* the partial block */
} aj_sha256;

void aj_sha256_init(aj_sha256 *s);
void aj_sha256_update(aj_sha256 *s, const void *data, size_t n);
/* The digest as 64 lowercase hex digits and a NUL. */
void aj_sha256_hex(aj_sha256 *s, char hex[65]);

#endif
