/* Datasets: find the data files of docs/datasets.md on the search path, read
 * them (plain or gzip), validate every byte, split them, and serve seeded
 * mini-batches.
 *
 * Files are read whole into memory and parsed from there: the largest
 * (binarized MNIST train, 78 MB of text) is small next to its float copy,
 * and it keeps every parser a loop over a buffer with exact error places. */
#include "arjit_runtime.h"
#include "runtime/fileio.h"
#include "runtime/rng.h"
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FILE_BYTES ((size_t)1 << 30)  /* decompressed; keeps line numbers in an int */
#define MNIST_PIXELS 784
#define CSV_SEED 20090601u                 /* the fixed shuffle of csv: tables */

/* ---------------------------------------------------------------- files */

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Resolve data file `name` into out: as given when it has a '/', else the
 * first NAME or NAME.gz in $ARJIT_DATA, ./data, ../shared/data and the
 * shared/data beside the source tree (for binaries run from anywhere). */
static int find_data_file(const char *name, char *out, size_t n, aj_diag *d) {
    if (strchr(name, '/')) {
        if ((size_t)snprintf(out, n, "%s", name) < n && is_file(out)) return 0;
        return aj_io_error(d, name, 0, 0, "cannot find %s: no such file", name);
    }
    const char *env = getenv("ARJIT_DATA");
    if (env && !*env) env = NULL;
#ifdef ARJIT_SOURCE_DIR
    const char *src = ARJIT_SOURCE_DIR "/../shared/data";
#else
    const char *src = NULL;
#endif
    const char *dirs[4] = {env, "./data", "../shared/data", src};
    for (int i = 0; i < 4; i++) {
        if (!dirs[i]) continue;
        if ((size_t)snprintf(out, n, "%s/%s", dirs[i], name) < n && is_file(out)) return 0;
        if ((size_t)snprintf(out, n, "%s/%s.gz", dirs[i], name) < n && is_file(out)) return 0;
    }
    out[0] = 0;
    return aj_io_error(d, name, 0, 0,
                       "cannot find %s(.gz): looked in $ARJIT_DATA (%s), ./data, ../shared/data%s%s",
                       name, env ? env : "unset", src ? ", " : "", src ? src : "");
}

/* Up to 24 bytes of s for a message, non-printable ones as escapes. */
static const char *quote(const char *s, size_t n, char *buf, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && i < 24 && k + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127 && c != '\\')
            buf[k++] = (char)c;
        else
            k += (size_t)snprintf(buf + k, cap - k, c == '\n' ? "\\n" : "\\x%02x", c);
    }
    if (n > 24 && k + 4 < cap) k += (size_t)snprintf(buf + k, cap - k, "...");
    buf[k] = 0;
    return buf;
}

/* ---------------------------------------------------------------- tables */

typedef struct {
    const char *buf;
    size_t len, pos;
    int line;               /* of the line last returned, 1-based */
} lines;

/* The next line, without its "\n" or "\r\n"; 0 at the end. */
static int next_line(lines *it, const char **s, size_t *n) {
    if (it->pos >= it->len) return 0;
    const char *p = it->buf + it->pos;
    const char *nl = memchr(p, '\n', it->len - it->pos);
    size_t k = nl ? (size_t)(nl - p) : it->len - it->pos;
    it->pos += k + (nl != NULL);
    it->line++;
    if (k && p[k - 1] == '\r') k--;
    *s = p;
    *n = k;
    return 1;
}

/* How the lines of a table split into values. */
typedef struct {
    char sep;               /* field separator; 0: runs of blanks (amat) */
    int skip_blank;         /* skip empty lines (csv) instead of rejecting them */
    int (*value)(const char *s, size_t n, float *v);  /* 0, or -1: not a value */
    const char *what;       /* what a value must be, for messages */
} table_format;

static int bit_value(const char *s, size_t n, float *v) {
    if (n != 1 || (s[0] != '0' && s[0] != '1')) return -1;
    *v = (float)(s[0] - '0');
    return 0;
}

static int number_value(const char *s, size_t n, float *v) {
    char tmp[64], *end;
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    double x = strtod(tmp, &end);
    if (*end || !isfinite(x) || fabs(x) > FLT_MAX) return -1;
    *v = (float)x;
    return 0;
}

static const table_format amat_format = {0, 0, bit_value, "0 or 1"};
static const table_format csv_format = {';', 1, number_value, "a finite number"};

static int is_sep(const table_format *fmt, char c) {
    return fmt->sep ? c == fmt->sep : c == ' ' || c == '\t';
}

/* Field k (from 0) of a ';'-separated header line, blanks and quotes
 * stripped, as [*a, *b); 0 when the line has fewer fields. */
static int header_field(const char *h, size_t n, int64_t k, size_t *a, size_t *b) {
    size_t i = 0;
    for (; k > 0 && i <= n; k--) {
        while (i < n && h[i] != ';') i++;
        i++;
    }
    if (i > n) return 0;
    *a = i, *b = i;
    while (*b < n && h[*b] != ';') (*b)++;
    while (*a < *b && (isspace((unsigned char)h[*a]) || h[*a] == '"')) (*a)++;
    while (*b > *a && (isspace((unsigned char)h[*b - 1]) || h[*b - 1] == '"')) (*b)--;
    return 1;
}

/* " (column 'name')": column k's header name, for messages; "" without a header. */
static const char *column_name(const char *head, size_t hlen, int64_t k, char *buf, size_t n) {
    size_t a, b;
    char q[96];
    if (!head || !header_field(head, hlen, k, &a, &b)) return "";
    snprintf(buf, n, " (column '%s')", quote(head + a, b - a, q, sizeof q));
    return buf;
}

/* Parse the remaining lines of `it`: each must hold exactly ncol values,
 * written row-major into out (NULL: only validate and count, so the caller
 * can allocate exactly). head: the header line naming the columns in
 * errors, or NULL. Returns the number of rows, or -1. */
static int64_t read_table(const char *path, lines it, const table_format *fmt, int64_t ncol, const char *head,
                          size_t hlen, float *out, aj_diag *d) {
    int64_t rows = 0;
    const char *s;
    size_t n;
    char q[128], name[128];
    while (next_line(&it, &s, &n)) {
        if (n == 0 && fmt->skip_blank) continue;
        int64_t k = 0;
        for (size_t i = 0;;) {
            if (!fmt->sep) {
                while (i < n && is_sep(fmt, s[i])) i++;
                if (i == n) break;
            }
            size_t a = i;
            while (i < n && !is_sep(fmt, s[i])) i++;
            float v;
            if (k < ncol && fmt->value(s + a, i - a, &v) != 0)
                return aj_io_error(d, path, it.line, (int)a + 1, "value %lld%s is '%s', expected %s",
                                   (long long)k + 1, column_name(head, hlen, k, name, sizeof name),
                                   quote(s + a, i - a, q, sizeof q), fmt->what);
            if (k < ncol && out) out[rows * ncol + k] = v;
            k++;
            if (fmt->sep && i++ == n) break;
        }
        if (k < ncol && head)
            return aj_io_error(d, path, it.line, (int)n + 1, "%lld values, expected %lld: no value %lld%s",
                               (long long)k, (long long)ncol, (long long)k + 1,
                               column_name(head, hlen, k, name, sizeof name));
        if (k != ncol)
            return aj_io_error(d, path, it.line, 0, "%lld values, expected %lld", (long long)k,
                               (long long)ncol);
        rows++;
    }
    return rows;
}

/* ds->x for n rows of ds->d values; an empty split is an error. */
static int alloc_rows(aj_dataset *ds, int64_t n, aj_diag *d) {
    if (n <= 0) return aj_io_error(d, ds->path, 0, 0, "no examples in the %s split", ds->split);
    ds->n = n;
    ds->x = malloc((size_t)n * (size_t)ds->d * sizeof(float));
    if (!ds->x) return aj_io_error(d, ds->path, 0, 0, "out of memory for %lld examples", (long long)n);
    return 0;
}

/* Fisher-Yates driven by the counter-based generator: the permutation is a
 * function of (key, n) alone, whatever ran before. */
static void shuffle(int64_t *idx, int64_t n, uint64_t key) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(aj_rng_mix(key ^ aj_rng_mix((uint64_t)i)) % (uint64_t)(i + 1));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* ---------------------------------------------------------------- loaders */

/* binarized_mnist_SPLIT.amat: one image per line, 784 values 0 or 1. */
static int load_amat(aj_dataset *ds, const char *buf, size_t len, aj_diag *d) {
    lines it = {buf, len, 0, 0};
    ds->d = MNIST_PIXELS;
    ds->h = ds->w = 28;
    int64_t n = read_table(ds->path, it, &amat_format, ds->d, NULL, 0, NULL, d);
    if (n < 0 || alloc_rows(ds, n, d)) return -1;
    return read_table(ds->path, it, &amat_format, ds->d, NULL, 0, ds->x, d) < 0 ? -1 : 0;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* IDX3 images (big-endian magic 0x803, count, rows, cols, then the pixels).
 * The train file gives train (all but its last sixth) and valid (the last
 * sixth: 50000 / 10000 of 60000). Pixel p becomes level floor(p K / 256)
 * in 0 .. K-1 for K = levels (K = 2: binarized at p >= 128), or p / 255 for
 * levels = 0 (grey values). */
static int load_idx(aj_dataset *ds, int levels, const char *buf, size_t len, aj_diag *d) {
    const unsigned char *p = (const unsigned char *)buf;
    if (len < 16) return aj_io_error(d, ds->path, 0, 0, "truncated IDX header: %zu bytes, need 16", len);
    if (be32(p) != 0x803)
        return aj_io_error(d, ds->path, 0, 0, "bad magic 0x%08x at offset 0: expected 0x00000803 (IDX3 images)",
                           be32(p));
    uint64_t count = be32(p + 4), rows = be32(p + 8), cols = be32(p + 12);
    if (!count || !rows || !cols || rows * cols > (1u << 24))
        return aj_io_error(d, ds->path, 0, 0, "bad IDX dims %llu x %llu x %llu",
                           (unsigned long long)count, (unsigned long long)rows, (unsigned long long)cols);
    uint64_t need = count * rows * cols;   /* < 2^56: no overflow */
    if (len - 16 != need)
        return aj_io_error(d, ds->path, 0, 0, "%s: header says %llu images of %llux%llu (%llu bytes), file has %zu after the header",
                           len - 16 < need ? "truncated" : "trailing bytes", (unsigned long long)count,
                           (unsigned long long)rows, (unsigned long long)cols, (unsigned long long)need, len - 16);
    int64_t first = 0, n = (int64_t)count, nvalid = n / 6;
    if (!strcmp(ds->split, "valid")) first = n - nvalid, n = nvalid;
    else if (!strcmp(ds->split, "train")) n -= nvalid;
    ds->h = (int64_t)rows;
    ds->w = (int64_t)cols;
    ds->d = ds->h * ds->w;
    if (alloc_rows(ds, n, d)) return -1;
    const unsigned char *px = p + 16 + first * ds->d;
    for (int64_t i = 0; i < n * ds->d; i++)
        ds->x[i] = levels ? (float)(px[i] * levels / 256) : px[i] / 255.0f;
    return 0;
}

/* The token id of each byte under vocab, -1 for bytes it lacks. */
static void vocab_index(const unsigned char *vocab, int nvocab, int16_t inv[256]) {
    for (int c = 0; c < 256; c++) inv[c] = -1;
    for (int i = 0; i < nvocab; i++) inv[vocab[i]] = (int16_t)i;
}

/* text:FILE: train = the first 90% of bytes, valid = test = the rest (as
 * nanoGPT splits Tiny Shakespeare); tokens index the sorted distinct bytes
 * of train, and a valid byte that train lacks is an error. */
static int load_text(aj_dataset *ds, const char *buf, size_t len, aj_diag *d) {
    size_t cut = len * 9 / 10;
    if (len == 0) return aj_io_error(d, ds->path, 0, 0, "empty file: text: needs a text file to train on");
    /* text is any bytes but NUL and the control characters that are not
     * layout (tab, newline, vertical tab, form feed, carriage return) */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if ((c < 32 && (c < '\t' || c > '\r')) || c == 127) {
            int line = 1;
            size_t bol = 0;
            for (size_t k = 0; k < i; k++)
                if (buf[k] == '\n') line++, bol = k + 1;
            return aj_io_error(d, ds->path, line, (int)(i - bol) + 1, "byte 0x%02x at offset %zu: a binary file, not "
                               "text (text: takes bytes other than NUL and control characters)", c, i);
        }
    }
    if (cut == 0 || cut == len)
        return aj_io_error(d, ds->path, 0, 0, "too short to split into train and valid (%zu bytes)", len);
    int seen[256] = {0};
    for (size_t i = 0; i < cut; i++) seen[(unsigned char)buf[i]] = 1;
    for (int c = 0; c < 256; c++)
        if (seen[c]) ds->vocab[ds->nvocab++] = (unsigned char)c;
    int16_t inv[256];
    vocab_index(ds->vocab, ds->nvocab, inv);
    size_t a = strcmp(ds->split, "train") ? cut : 0, b = a ? len : cut;
    ds->ntok = (int64_t)(b - a);
    ds->tok = malloc((b - a) * sizeof(int32_t));
    if (!ds->tok) return aj_io_error(d, ds->path, 0, 0, "out of memory for %zu tokens", b - a);
    for (size_t i = a; i < b; i++) {
        int id = inv[(unsigned char)buf[i]];
        if (id < 0) {
            int line = 1;
            size_t bol = 0;
            for (size_t k = 0; k < i; k++)
                if (buf[k] == '\n') line++, bol = k + 1;
            char q[16];
            return aj_io_error(d, ds->path, line, (int)(i - bol) + 1,
                               "character '%s' (byte 0x%02x, offset %zu) of the %s split is not in the training vocabulary",
                               quote(buf + i, 1, q, sizeof q), (unsigned char)buf[i], i, ds->split);
        }
        ds->tok[i - a] = id;
    }
    return 0;
}

/* The header column named `want`, or -1. */
static int csv_find_column(const char *h, size_t n, const char *want) {
    size_t a, b;
    for (int col = 0; header_field(h, n, col, &a, &b); col++)
        if (b - a == strlen(want) && !memcmp(h + a, want, b - a)) return col;
    return -1;
}

/* csv:FILE[,drop=COL]...: a header line, then rows of ';'-separated numbers.
 * Rows are shuffled with a fixed seed and split 80/10/10; the kept columns
 * are standardized with the train rows' mean and std (a constant column
 * gets std 1). */
static int load_csv(aj_dataset *ds, const char *opts, const char *buf, size_t len, aj_diag *d) {
    lines it = {buf, len, 0, 0};
    const char *head;
    size_t hlen;
    if (!next_line(&it, &head, &hlen)) return aj_io_error(d, ds->path, 1, 0, "empty file: no header line");
    int64_t ncol = 1;
    for (size_t i = 0; i < hlen; i++) ncol += head[i] == ';';
    char *keep = malloc((size_t)ncol);
    if (!keep) return aj_io_error(d, ds->path, 0, 0, "out of memory");
    memset(keep, 1, (size_t)ncol);
    int rc = 0;
    /* options: ",drop=NAME" each */
    for (const char *o = opts; *o && rc == 0;) {
        const char *e = strchr(o + 1, ',');
        size_t n = e ? (size_t)(e - o) - 1 : strlen(o + 1);
        char name[128];
        if (strncmp(o, ",drop=", 6) || n - 5 >= sizeof name) {
            rc = aj_io_error(d, ds->spec, 0, 0, "bad csv option '%.*s': expected ,drop=COLUMN", (int)n + 1, o);
            break;
        }
        snprintf(name, sizeof name, "%.*s", (int)n - 5, o + 6);
        int col = csv_find_column(head, hlen, name);
        if (col < 0) rc = aj_io_error(d, ds->path, 1, 0, "no column '%s' in the header", name);
        else keep[col] = 0;
        o += n + 1;
    }
    int64_t n = rc ? -1 : read_table(ds->path, it, &csv_format, ncol, head, hlen, NULL, d);
    float *all = n > 0 ? malloc((size_t)n * (size_t)ncol * sizeof(float)) : NULL;
    int64_t *order = n > 0 ? malloc((size_t)n * sizeof(int64_t)) : NULL;
    if (n >= 0 && n < 10) rc = aj_io_error(d, ds->path, 0, 0, "%lld rows: too few to split 80/10/10", (long long)n);
    else if (n > 0 && (!all || !order)) rc = aj_io_error(d, ds->path, 0, 0, "out of memory");
    else if (n < 0 || read_table(ds->path, it, &csv_format, ncol, head, hlen, all, d) < 0) rc = -1;
    for (int64_t j = 0; j < ncol; j++) ds->d += keep[j];
    if (rc == 0 && ds->d == 0) rc = aj_io_error(d, ds->spec, 0, 0, "every column dropped");
    if (rc == 0) {
        int64_t ntrain = n * 8 / 10, nvalid = n / 10, first = 0, count = ntrain;
        if (!strcmp(ds->split, "valid")) first = ntrain, count = nvalid;
        if (!strcmp(ds->split, "test")) first = ntrain + nvalid, count = n - first;
        for (int64_t i = 0; i < n; i++) order[i] = i;
        shuffle(order, n, aj_rng_key(CSV_SEED, 0, 0));
        ds->mean = malloc((size_t)ds->d * sizeof(float));
        ds->std = malloc((size_t)ds->d * sizeof(float));
        if (!ds->mean || !ds->std) rc = aj_io_error(d, ds->path, 0, 0, "out of memory");
        else rc = alloc_rows(ds, count, d);
        for (int64_t j = 0, k = 0; rc == 0 && j < ncol; j++) {
            if (!keep[j]) continue;
            double s = 0, ss = 0;
            for (int64_t i = 0; i < ntrain; i++) s += all[order[i] * ncol + j];
            double mean = s / (double)ntrain;
            for (int64_t i = 0; i < ntrain; i++) {
                double v = all[order[i] * ncol + j] - mean;
                ss += v * v;
            }
            double sd = sqrt(ss / (double)ntrain);
            if (!(sd > 1e-12)) sd = 1;
            ds->mean[k] = (float)mean;
            ds->std[k] = (float)sd;
            for (int64_t i = 0; i < count; i++)
                ds->x[i * ds->d + k] = (float)((all[order[first + i] * ncol + j] - mean) / sd);
            k++;
        }
    }
    free(keep);
    free(all);
    free(order);
    return rc;
}

/* ---------------------------------------------------------------- API */

void aj_dataset_free(aj_dataset *ds) {
    free(ds->x);
    free(ds->mean);
    free(ds->std);
    free(ds->tok);
    memset(ds, 0, sizeof *ds);
}

int aj_dataset_load(const char *spec, const char *split, aj_dataset *ds, aj_diag *d) {
    memset(ds, 0, sizeof *ds);
    if (!spec || !split) return aj_io_error(d, NULL, 0, 0, "no dataset given");
    if (strcmp(split, "train") && strcmp(split, "valid") && strcmp(split, "test"))
        return aj_io_error(d, NULL, 0, 0, "unknown split '%s': expected train, valid or test", split);
    snprintf(ds->spec, sizeof ds->spec, "%s", spec);
    snprintf(ds->split, sizeof ds->split, "%s", split);

    /* which file, and how to read it */
    enum { AMAT, IDX, TEXT, CSV } kind;
    char name[sizeof ds->spec];
    const char *opts = "";
    int levels = 2;   /* IDX: grey levels, 0 for values in [0, 1] */
    int test = !strcmp(split, "test");
    if (!strcmp(spec, "mnist-bin")) {
        kind = AMAT;
        snprintf(name, sizeof name, "binarized_mnist_%s.amat", split);
    } else if (!strcmp(spec, "mnist") || !strcmp(spec, "mnist-gray") || !strncmp(spec, "mnist:", 6)) {
        kind = IDX;
        if (!strcmp(spec, "mnist-gray")) levels = 0;
        if (spec[5] == ':') {
            char *end;
            long k = strtol(spec + 6, &end, 10);
            if (end == spec + 6 || *end || k < 2 || k > 256)
                return aj_io_error(d, NULL, 0, 0, "bad dataset '%s': mnist:K needs K grey levels, 2 to 256", spec);
            levels = (int)k;
        }
        snprintf(name, sizeof name, "%s-images-idx3-ubyte", test ? "t10k" : "train");
    } else if (!strncmp(spec, "text:", 5) && spec[5]) {
        kind = TEXT;
        snprintf(name, sizeof name, "%s", spec + 5);
    } else if (!strcmp(spec, "shakespeare")) {
        kind = TEXT;
        snprintf(name, sizeof name, "tinyshakespeare.txt");
    } else if (!strncmp(spec, "csv:", 4) && spec[4] && spec[4] != ',') {
        kind = CSV;
        opts = strchr(spec + 4, ',');
        size_t n = opts ? (size_t)(opts - spec - 4) : strlen(spec + 4);
        snprintf(name, sizeof name, "%.*s", (int)n, spec + 4);
        if (!opts) opts = "";
    } else {
        return aj_io_error(d, NULL, 0, 0,
                           "unknown dataset '%s': expected mnist-bin, mnist, mnist-gray, mnist:K, shakespeare, text:FILE or csv:FILE",
                           spec);
    }

    char *buf;
    size_t len;
    if (find_data_file(name, ds->path, sizeof ds->path, d) || aj_read_file(ds->path, MAX_FILE_BYTES, &buf, &len, d)) {
        aj_dataset_free(ds);
        return -1;
    }
    int rc;
    switch (kind) {
    case AMAT: rc = load_amat(ds, buf, len, d); break;
    case IDX: rc = load_idx(ds, levels, buf, len, d); break;
    case TEXT: rc = load_text(ds, buf, len, d); break;
    default: rc = load_csv(ds, opts, buf, len, d); break;
    }
    free(buf);
    if (rc) aj_dataset_free(ds);
    return rc;
}

int aj_dataset_set_vocab(aj_dataset *ds, const unsigned char *vocab, int nvocab, aj_diag *d) {
    if (!ds->tok) return aj_io_error(d, ds->path, 0, 0, "not a text dataset: it has no vocabulary");
    if (nvocab < 1 || nvocab > 256) return aj_io_error(d, ds->path, 0, 0, "vocabulary of %d bytes", nvocab);
    int16_t inv[256];
    vocab_index(vocab, nvocab, inv);
    for (int i = 0; i < nvocab; i++)
        if (inv[vocab[i]] != i) return aj_io_error(d, ds->path, 0, 0, "vocabulary repeats byte 0x%02x", vocab[i]);
    int32_t *tok = malloc((size_t)ds->ntok * sizeof(int32_t) + 1);
    if (!tok) return aj_io_error(d, ds->path, 0, 0, "out of memory");
    for (int64_t i = 0; i < ds->ntok; i++) {
        unsigned char c = ds->vocab[ds->tok[i]];
        if (inv[c] < 0) {
            char q[16];
            free(tok);
            return aj_io_error(d, ds->path, 0, 0,
                               "character '%s' (byte 0x%02x, token %lld of the %s split) is not in the given vocabulary",
                               quote((const char *)&c, 1, q, sizeof q), c, (long long)i, ds->split);
        }
        tok[i] = inv[c];
    }
    free(ds->tok);
    ds->tok = tok;
    memcpy(ds->vocab, vocab, (size_t)nvocab);
    ds->nvocab = nvocab;
    return 0;
}

/* ---------------------------------------------------------------- batches */

int aj_batcher_init(aj_batcher *b, const aj_dataset *ds, int64_t batch, int64_t seqlen,
                    uint64_t seed, int flags, aj_diag *d) {
    memset(b, 0, sizeof *b);
    if (batch < 1) return aj_io_error(d, ds->path, 0, 0, "batch size %lld: must be at least 1", (long long)batch);
    if (ds->tok) {
        if (seqlen < 1 || ds->ntok < seqlen + 1)
            return aj_io_error(d, ds->path, 0, 0, "sequence length %lld: the %s split has %lld tokens",
                               (long long)seqlen, ds->split, (long long)ds->ntok);
        b->nexamples = (ds->ntok - 1) / seqlen;
    } else if (ds->x) {
        b->nexamples = ds->n;
    } else {
        return aj_io_error(d, NULL, 0, 0, "batches of an empty dataset");
    }
    if ((flags & AJ_BATCH_DROP_LAST) && b->nexamples < batch)
        return aj_io_error(d, ds->path, 0, 0, "the %s split has %lld examples%s, fewer than one batch of %lld",
                           ds->split, (long long)b->nexamples, ds->tok ? " (windows of T + 1 tokens, T apart)" : "",
                           (long long)batch);
    if (ds->x && (flags & AJ_BATCH_SHUFFLE)) {
        b->order = malloc((size_t)ds->n * sizeof(int64_t));
        if (!b->order) return aj_io_error(d, ds->path, 0, 0, "out of memory");
    }
    b->ds = ds;
    b->batch = batch;
    b->seqlen = ds->tok ? seqlen : 0;
    b->seed = seed;
    b->flags = flags;
    aj_batcher_seek(b, 0, 0);
    return 0;
}

void aj_batcher_free(aj_batcher *b) {
    free(b->order);
    memset(b, 0, sizeof *b);
}

/* Epoch e's order depends on (seed, e) only; key stream 0 shuffles rows,
 * stream 1 places text windows. */
void aj_batcher_seek(aj_batcher *b, int64_t epoch, int64_t pos) {
    b->epoch = epoch;
    b->pos = pos < 0 ? 0 : pos > b->nexamples ? b->nexamples : pos;
    if (!b->order) return;
    for (int64_t i = 0; i < b->nexamples; i++) b->order[i] = i;
    shuffle(b->order, b->nexamples, aj_rng_key(b->seed, (uint64_t)epoch, 0));
}

/* How many examples the next batch has; 0 ends the epoch and starts the next. */
static int64_t batch_count(aj_batcher *b) {
    int64_t left = b->nexamples - b->pos;
    if (left <= 0 || ((b->flags & AJ_BATCH_DROP_LAST) && left < b->batch)) {
        aj_batcher_seek(b, b->epoch + 1, 0);
        return 0;
    }
    return left < b->batch ? left : b->batch;
}

int aj_batcher_next(aj_batcher *b, float *x, int64_t *count) {
    *count = 0;
    if (!b->ds || !b->ds->x) return -1;
    int64_t k = batch_count(b), dd = b->ds->d;
    for (int64_t i = 0; i < k; i++) {
        int64_t row = b->order ? b->order[b->pos + i] : b->pos + i;
        memcpy(x + i * dd, b->ds->x + row * dd, (size_t)dd * sizeof(float));
    }
    b->pos += k;
    *count = k;
    return k > 0;
}

int aj_batcher_next_tokens(aj_batcher *b, int32_t *tok, int64_t *count) {
    *count = 0;
    if (!b->ds || !b->ds->tok) return -1;
    int64_t k = batch_count(b), t1 = b->seqlen + 1;
    uint64_t key = aj_rng_key(b->seed, (uint64_t)b->epoch, 1);
    uint64_t nstart = (uint64_t)(b->ds->ntok - b->seqlen);   /* starts 0..ntok-T-1 */
    for (int64_t i = 0; i < k; i++) {
        int64_t w = b->pos + i;
        int64_t start = (b->flags & AJ_BATCH_SHUFFLE)
                            ? (int64_t)(aj_rng_mix(key ^ aj_rng_mix((uint64_t)w)) % nstart)
                            : w * b->seqlen;
        memcpy(tok + i * t1, b->ds->tok + start, (size_t)t1 * sizeof(int32_t));
    }
    b->pos += k;
    *count = k;
    return k > 0;
}
