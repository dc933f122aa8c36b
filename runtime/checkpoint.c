/* Checkpoints: named tensors in sections, u64 scalars and metadata strings
 * in one little-endian, CRC32-checked file (docs/checkpoint.md), written
 * atomically. A loader trusts nothing it reads: every count and size is
 * checked against the bytes actually there before anything is allocated. */
#include "arjit_runtime.h"
#include "runtime/fileio.h"
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CK_MAGIC "ARJITCK1"
#define CK_VERSION 1u
#define CK_HEADER 40u          /* magic, version, header length, file length, 3 counts, reserved */
#define CK_MAX_NAME 255u
#define CK_MAX_DIM ((uint64_t)1 << 40)
#define CK_MAX_FILE ((size_t)1 << 36)

/* ---------------------------------------------------------------- in memory */

/* Every entry starts with its key, so one list type holds all three kinds. */
typedef struct {
    char *name;
    int section;               /* tensors only; 0 for scalars and metadata */
} ck_key;

typedef struct { ck_key k; aj_tensor t; } ck_tensor;
typedef struct { ck_key k; uint64_t v; } ck_scalar;
typedef struct { ck_key k; char *val; size_t len; } ck_meta;

typedef struct {
    char *items;
    int n, cap;
    size_t size;               /* of one entry */
} ck_list;

struct aj_ckpt {
    ck_list tensors, scalars, metas;
};

static void *list_at(const ck_list *l, int i) { return l->items + (size_t)i * l->size; }

static void *list_find(const ck_list *l, int section, const char *name) {
    for (int i = 0; i < l->n; i++) {
        ck_key *k = list_at(l, i);
        if (k->section == section && !strcmp(k->name, name)) return k;
    }
    return NULL;
}

/* The entry for (section, name): the existing one (the caller replaces its
 * value) or a new zeroed one. NULL when out of memory. */
static void *list_slot(ck_list *l, int section, const char *name) {
    ck_key *k = list_find(l, section, name);
    if (k) return k;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        char *items = realloc(l->items, (size_t)cap * l->size);
        if (!items) return NULL;
        l->items = items;
        l->cap = cap;
    }
    k = list_at(l, l->n);
    memset(k, 0, l->size);
    if (!(k->name = strdup(name))) return NULL;
    k->section = section;
    l->n++;
    return k;
}

static int valid_name(const char *name) {
    return name && *name && strlen(name) <= CK_MAX_NAME;
}

aj_ckpt *aj_ckpt_new(void) {
    aj_ckpt *ck = calloc(1, sizeof *ck);
    if (!ck) return NULL;
    ck->tensors.size = sizeof(ck_tensor);
    ck->scalars.size = sizeof(ck_scalar);
    ck->metas.size = sizeof(ck_meta);
    return ck;
}

void aj_ckpt_free(aj_ckpt *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->tensors.n; i++) {
        ck_tensor *e = list_at(&ck->tensors, i);
        free(e->k.name);
        aj_tensor_free(&e->t);
    }
    for (int i = 0; i < ck->scalars.n; i++) free(((ck_key *)list_at(&ck->scalars, i))->name);
    for (int i = 0; i < ck->metas.n; i++) {
        ck_meta *e = list_at(&ck->metas, i);
        free(e->k.name);
        free(e->val);
    }
    free(ck->tensors.items);
    free(ck->scalars.items);
    free(ck->metas.items);
    free(ck);
}

/* Takes ownership of *t (freed on failure). */
static int put_tensor(aj_ckpt *ck, int section, const char *name, aj_tensor *t) {
    ck_tensor *e = t->data ? list_slot(&ck->tensors, section, name) : NULL;
    if (!e) {
        aj_tensor_free(t);
        return -1;
    }
    aj_tensor_free(&e->t);
    e->t = *t;
    return 0;
}

int aj_ckpt_add_tensor(aj_ckpt *ck, int section, const char *name, const aj_tensor *t) {
    if (!ck || section < 0 || section >= AJ_CKPT_NSECTION || !valid_name(name) || !t || !t->data ||
        (t->dtype != AJ_F32 && t->dtype != AJ_I32))
        return -1;
    aj_tensor copy = aj_tensor_new(t->dtype, t->rank, t->shape);
    if (!copy.data) return -1;
    memcpy(copy.data, t->data, (size_t)aj_tensor_numel(t) * 4);
    return put_tensor(ck, section, name, &copy);
}

int aj_ckpt_set_u64(aj_ckpt *ck, const char *name, uint64_t v) {
    ck_scalar *e = ck && valid_name(name) ? list_slot(&ck->scalars, 0, name) : NULL;
    if (!e) return -1;
    e->v = v;
    return 0;
}

int aj_ckpt_set_meta_bytes(aj_ckpt *ck, const char *key, const void *value, size_t len) {
    if (!ck || !valid_name(key) || (!value && len) || len > UINT32_MAX) return -1;
    char *val = malloc(len + 1);     /* NUL-terminated so aj_ckpt_meta can return it */
    ck_meta *e = val ? list_slot(&ck->metas, 0, key) : NULL;
    if (!e) {
        free(val);
        return -1;
    }
    if (len) memcpy(val, value, len);
    val[len] = 0;
    free(e->val);
    e->val = val;
    e->len = len;
    return 0;
}

int aj_ckpt_set_meta(aj_ckpt *ck, const char *key, const char *value) {
    return value ? aj_ckpt_set_meta_bytes(ck, key, value, strlen(value)) : -1;
}

const aj_tensor *aj_ckpt_find(const aj_ckpt *ck, int section, const char *name) {
    ck_tensor *e = ck && name ? list_find(&ck->tensors, section, name) : NULL;
    return e ? &e->t : NULL;
}

const aj_tensor *aj_ckpt_tensor_at(const aj_ckpt *ck, int section, int i, const char **name) {
    for (int j = 0; ck && j < ck->tensors.n; j++) {
        ck_tensor *e = list_at(&ck->tensors, j);
        if (e->k.section == section && i-- == 0) {
            if (name) *name = e->k.name;
            return &e->t;
        }
    }
    return NULL;
}

int aj_ckpt_get_u64(const aj_ckpt *ck, const char *name, uint64_t *v) {
    ck_scalar *e = ck && name ? list_find(&ck->scalars, 0, name) : NULL;
    if (!e) return -1;
    *v = e->v;
    return 0;
}

const char *aj_ckpt_meta_bytes(const aj_ckpt *ck, const char *key, size_t *len) {
    ck_meta *e = ck && key ? list_find(&ck->metas, 0, key) : NULL;
    if (len) *len = e ? e->len : 0;
    return e ? e->val : NULL;
}

const char *aj_ckpt_meta(const aj_ckpt *ck, const char *key) {
    return aj_ckpt_meta_bytes(ck, key, NULL);
}

/* ---------------------------------------------------------------- writing */

/* Writes through stdio, keeping the CRC of everything written. Write errors
 * stick in the FILE and are caught once, at aj_afile_commit. */
typedef struct {
    FILE *f;
    uLong crc;
} ck_writer;

static void put_bytes(ck_writer *w, const void *p, size_t n) {
    fwrite(p, 1, n, w->f);
    w->crc = crc32_z(w->crc, p, n);
}

static void put_u32(ck_writer *w, uint32_t v) {
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put_bytes(w, b, 4);
}

static void put_u64(ck_writer *w, uint64_t v) {
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

static void put_str(ck_writer *w, const char *s, size_t n) {
    put_u32(w, (uint32_t)n);
    put_bytes(w, s, n);
}

/* f32 and i32 alike: 4-byte words, little-endian whatever the host. */
static void put_words(ck_writer *w, const void *data, int64_t n) {
    const unsigned char *p = data;
    for (int64_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, p + 4 * i, 4);
        put_u32(w, v);
    }
}

static uint64_t file_length(const aj_ckpt *ck) {
    uint64_t n = CK_HEADER + 4;
    for (int i = 0; i < ck->tensors.n; i++) {
        const ck_tensor *e = list_at(&ck->tensors, i);
        n += 16 + strlen(e->k.name) + 8 * (uint64_t)e->t.rank + 4 * (uint64_t)aj_tensor_numel(&e->t);
    }
    for (int i = 0; i < ck->scalars.n; i++) n += 12 + strlen(((ck_key *)list_at(&ck->scalars, i))->name);
    for (int i = 0; i < ck->metas.n; i++) {
        const ck_meta *e = list_at(&ck->metas, i);
        n += 8 + strlen(e->k.name) + e->len;
    }
    return n;
}

int aj_ckpt_save(const aj_ckpt *ck, const char *path, aj_diag *d) {
    if (!ck || !path) return aj_io_error(d, path, 0, 0, "no checkpoint to save");
    aj_afile af;
    ck_writer w = {aj_afile_open(&af, path, d), crc32_z(0, NULL, 0)};
    if (!w.f) return -1;
    put_bytes(&w, CK_MAGIC, 8);
    put_u32(&w, CK_VERSION);
    put_u32(&w, CK_HEADER);
    put_u64(&w, file_length(ck));
    put_u32(&w, (uint32_t)ck->tensors.n);
    put_u32(&w, (uint32_t)ck->scalars.n);
    put_u32(&w, (uint32_t)ck->metas.n);
    put_u32(&w, 0);
    for (int i = 0; i < ck->tensors.n; i++) {
        const ck_tensor *e = list_at(&ck->tensors, i);
        put_u32(&w, (uint32_t)e->k.section);
        put_str(&w, e->k.name, strlen(e->k.name));
        put_u32(&w, e->t.dtype == AJ_F32 ? 0 : 1);
        put_u32(&w, (uint32_t)e->t.rank);
        for (int k = 0; k < e->t.rank; k++) put_u64(&w, (uint64_t)e->t.shape[k]);
        put_words(&w, e->t.data, aj_tensor_numel(&e->t));
    }
    for (int i = 0; i < ck->scalars.n; i++) {
        const ck_scalar *e = list_at(&ck->scalars, i);
        put_str(&w, e->k.name, strlen(e->k.name));
        put_u64(&w, e->v);
    }
    for (int i = 0; i < ck->metas.n; i++) {
        const ck_meta *e = list_at(&ck->metas, i);
        put_str(&w, e->k.name, strlen(e->k.name));
        put_str(&w, e->val, e->len);
    }
    put_u32(&w, (uint32_t)w.crc);
    return aj_afile_commit(&af, d);
}

/* ---------------------------------------------------------------- reading */

typedef struct {
    const unsigned char *p;
    size_t len, off;           /* len: up to the CRC */
    const char *path;
    aj_diag *d;
} ck_reader;

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static int corrupt(ck_reader *r, const char *what) {
    return aj_io_error(r->d, r->path, 0, 0, "corrupt checkpoint: %s at offset %zu", what, r->off);
}

/* n more bytes at *p, or an error when the data ends first. The getters
 * set their output either way, so no caller reads an unset variable. */
static int get_bytes(ck_reader *r, size_t n, const unsigned char **p, const char *what) {
    *p = r->p + r->off;
    if (n > r->len - r->off) return corrupt(r, what);
    r->off += n;
    return 0;
}

static int get_u32(ck_reader *r, uint32_t *v, const char *what) {
    const unsigned char *p;
    *v = 0;
    if (get_bytes(r, 4, &p, what)) return -1;
    *v = le32(p);
    return 0;
}

static int get_u64(ck_reader *r, uint64_t *v, const char *what) {
    const unsigned char *p;
    *v = 0;
    if (get_bytes(r, 8, &p, what)) return -1;
    *v = le64(p);
    return 0;
}

/* A name or key: 1..255 bytes without NUL, length-prefixed; a fresh string. */
static char *get_name(ck_reader *r, const char *what) {
    uint32_t n;
    const unsigned char *p;
    if (get_u32(r, &n, what) || n == 0 || n > CK_MAX_NAME || get_bytes(r, n, &p, what) ||
        memchr(p, 0, n)) {
        corrupt(r, what);
        return NULL;
    }
    char *s = strndup((const char *)p, n);
    if (!s) aj_io_error(r->d, r->path, 0, 0, "out of memory");
    return s;
}

static int read_tensor(aj_ckpt *ck, ck_reader *r) {
    uint32_t section, dtype, rank;
    int64_t shape[AJ_MAX_RANK];
    char *name = NULL;
    if (get_u32(r, &section, "tensor section") || section >= AJ_CKPT_NSECTION)
        return corrupt(r, "bad tensor section");
    if (!(name = get_name(r, "bad tensor name"))) return -1;
    int rc = get_u32(r, &dtype, "tensor dtype") || dtype > 1 ? corrupt(r, "bad tensor dtype") : 0;
    if (!rc && (get_u32(r, &rank, "tensor rank") || rank > AJ_MAX_RANK)) rc = corrupt(r, "bad tensor rank");
    uint64_t numel = 1, v;
    for (uint32_t k = 0; !rc && k < rank; k++) {
        if (get_u64(r, &v, "tensor shape") || v > CK_MAX_DIM || __builtin_mul_overflow(numel, v, &numel))
            rc = corrupt(r, "bad tensor shape");
        else
            shape[k] = (int64_t)v;
    }
    /* the data must fit in what is left before anything is allocated */
    if (!rc && numel > (r->len - r->off) / 4) rc = corrupt(r, "tensor data runs past the end");
    const unsigned char *p = NULL;
    if (!rc) get_bytes(r, 4 * numel, &p, "tensor data");   /* fits: checked above */
    if (!rc) {
        aj_tensor t = aj_tensor_new(dtype ? AJ_I32 : AJ_F32, (int)rank, shape);
        for (uint64_t i = 0; t.data && i < numel; i++) {
            uint32_t v = le32(p + 4 * i);
            memcpy((char *)t.data + 4 * i, &v, 4);
        }
        if (put_tensor(ck, (int)section, name, &t)) rc = aj_io_error(r->d, r->path, 0, 0, "out of memory");
    }
    free(name);
    return rc;
}

static int read_scalar(aj_ckpt *ck, ck_reader *r) {
    uint64_t v;
    char *name = get_name(r, "bad scalar name");
    int rc = !name || get_u64(r, &v, "scalar value runs past the end") ? -1 : 0;
    if (!rc && aj_ckpt_set_u64(ck, name, v)) rc = aj_io_error(r->d, r->path, 0, 0, "out of memory");
    free(name);
    return rc;
}

static int read_meta(aj_ckpt *ck, ck_reader *r) {
    const unsigned char *p = NULL;
    uint32_t n = 0;
    char *key = get_name(r, "bad metadata key");
    /* values may hold any bytes (a vocabulary), NUL included */
    int rc = !key || get_u32(r, &n, "metadata value length") ||
             get_bytes(r, n, &p, "metadata value runs past the end") ? -1 : 0;
    if (!rc && aj_ckpt_set_meta_bytes(ck, key, p, n)) rc = aj_io_error(r->d, r->path, 0, 0, "out of memory");
    free(key);
    return rc;
}

/* Header, length and CRC first, so a damaged file is named for what it is
 * (not a checkpoint, truncated, corrupt) before its records are looked at. */
static aj_ckpt *parse(const unsigned char *p, size_t len, const char *path, aj_diag *d) {
    if (len < 8 || memcmp(p, CK_MAGIC, 8))
        return aj_io_error(d, path, 0, 0, "not an arjit checkpoint (no %s magic)", CK_MAGIC), NULL;
    if (len < CK_HEADER + 4)
        return aj_io_error(d, path, 0, 0, "truncated checkpoint: %zu bytes, less than a header", len), NULL;
    uint32_t version = le32(p + 8), hlen = le32(p + 12);
    uint64_t flen = le64(p + 16);
    if (version != CK_VERSION)
        return aj_io_error(d, path, 0, 0, "checkpoint version %u: this arjit reads version %u", version,
                           CK_VERSION), NULL;
    if (flen != len)
        return aj_io_error(d, path, 0, 0, "%s checkpoint: the header says %llu bytes, the file has %zu",
                           flen > len ? "truncated" : "corrupt", (unsigned long long)flen, len), NULL;
    uint32_t stored = le32(p + len - 4), crc = (uint32_t)crc32_z(crc32_z(0, NULL, 0), p, len - 4);
    if (stored != crc)
        return aj_io_error(d, path, 0, 0, "corrupt checkpoint: CRC32 mismatch (stored %08x, computed %08x)",
                           stored, crc), NULL;
    ck_reader r = {p, len - 4, CK_HEADER, path, d};
    if (hlen < CK_HEADER || hlen > r.len) return corrupt(&r, "bad header length"), NULL;
    r.off = hlen;   /* a later minor format may add header fields; skip them */
    uint32_t ntensor = le32(p + 24), nscalar = le32(p + 28), nmeta = le32(p + 32);
    aj_ckpt *ck = aj_ckpt_new();
    if (!ck) return aj_io_error(d, path, 0, 0, "out of memory"), NULL;
    int rc = 0;
    /* each record takes bytes, so a lying count stops at the end of the data */
    for (uint32_t i = 0; !rc && i < ntensor; i++) rc = read_tensor(ck, &r);
    for (uint32_t i = 0; !rc && i < nscalar; i++) rc = read_scalar(ck, &r);
    for (uint32_t i = 0; !rc && i < nmeta; i++) rc = read_meta(ck, &r);
    if (!rc && r.off != r.len) rc = corrupt(&r, "unexpected bytes after the last record");
    if (rc) {
        aj_ckpt_free(ck);
        return NULL;
    }
    return ck;
}

aj_ckpt *aj_ckpt_load(const char *path, aj_diag *d) {
    char *buf;
    size_t len;
    if (!path) return aj_io_error(d, NULL, 0, 0, "no checkpoint path"), NULL;
    if (aj_read_file(path, CK_MAX_FILE, &buf, &len, d)) return NULL;
    aj_ckpt *ck = parse((const unsigned char *)buf, len, path, d);
    free(buf);
    return ck;
}
