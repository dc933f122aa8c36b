/* Runtime I/O: dataset loaders, batchers, checkpoints and PNG grids, on small
 * synthetic files written into a fresh temporary directory (ARJIT_DATA points
 * there; the real data in ../shared/data is never read). */
#define _GNU_SOURCE    /* nftw */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <png.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "arjit_runtime.h"

static char tmpdir[256];

/* ---------------------------------------------------------------- helpers */

static const char *in_tmp(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_file(const char *name, const void *data, size_t len) {
    FILE *f = fopen(in_tmp(name), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *name, const void *data, size_t len) {
    gzFile f = gzopen(in_tmp(name), "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
}

static void write_str(const char *name, const char *s) { write_file(name, s, strlen(s)); }

static void remove_tmp(const char *name) { unlink(in_tmp(name)); }

/* n amat lines of 784 values; pixel j of row i is (i + j) % 3 == 0. */
static char *amat_text(int n) {
    char *s = malloc((size_t)n * 1568 + 1), *p = s;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 784; j++) {
            *p++ = (i + j) % 3 == 0 ? '1' : '0';
            *p++ = j == 783 ? '\n' : ' ';
        }
    *p = 0;
    return s;
}

/* Fail, showing the diagnostic, unless an error was set whose message has `needle`. */
static void expect_error(const aj_diag *d, const char *needle) {
    if (!d->set || !strstr(d->msg, needle)) {
        fprintf(stderr, "expected an error with \"%s\", got: ", needle);
        if (d->set) aj_diag_print(d, stderr);
        else fprintf(stderr, "no error\n");
        fail();
    }
}

/* A load expected to fail with `needle` in the message. */
static aj_diag load_fails(const char *spec, const char *split, const char *needle) {
    aj_dataset ds;
    aj_diag d = {0};
    assert_int_equal(aj_dataset_load(spec, split, &ds, &d), -1);
    expect_error(&d, needle);
    assert_null(ds.x);
    assert_null(ds.tok);
    return d;
}

static void load_ok(const char *spec, const char *split, aj_dataset *ds) {
    aj_diag d = {0};
    if (aj_dataset_load(spec, split, ds, &d) != 0) {
        aj_diag_print(&d, stderr);
        fail();
    }
}

/* No PATH.tmp.* is left in the temporary directory. */
static void assert_no_tmp_files(void) {
    DIR *dir = opendir(tmpdir);
    assert_non_null(dir);
    struct dirent *e;
    while ((e = readdir(dir)))
        if (strstr(e->d_name, ".tmp.")) {
            fprintf(stderr, "left behind: %s\n", e->d_name);
            fail();
        }
    closedir(dir);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

static int setup(void **state) {
    snprintf(tmpdir, sizeof tmpdir, "%s/arjit-io-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) return -1;
    setenv("ARJIT_DATA", tmpdir, 1);
    /* ./data and ../shared/data are looked at after ARJIT_DATA: make them ours too */
    return chdir(tmpdir);
}

static int teardown(void **state) {
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- amat */

static void test_amat_plain_and_gz(void **state) {
    char *text = amat_text(3);
    write_file("binarized_mnist_train.amat", text, strlen(text));
    write_gz("binarized_mnist_valid.amat.gz", text, strlen(text));
    free(text);
    const char *split[2] = {"train", "valid"};
    for (int s = 0; s < 2; s++) {
        aj_dataset ds;
        load_ok("mnist-bin", split[s], &ds);
        assert_int_equal(ds.n, 3);
        assert_int_equal(ds.d, 784);
        assert_int_equal(ds.h, 28);
        assert_int_equal(ds.w, 28);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 784; j++) assert_true(ds.x[i * 784 + j] == ((i + j) % 3 == 0));
        assert_non_null(strstr(ds.path, s ? ".amat.gz" : ".amat"));
        aj_dataset_free(&ds);
    }
    remove_tmp("binarized_mnist_train.amat");
    remove_tmp("binarized_mnist_valid.amat.gz");
}

static void test_amat_corrupt(void **state) {
    char *text = amat_text(3);
    /* a bad value on line 2, value 5 (column 9) */
    text[1568 + 8] = '2';
    write_file("binarized_mnist_test.amat", text, strlen(text));
    aj_diag d = load_fails("mnist-bin", "test", "value 5 is '2', expected 0 or 1");
    assert_int_equal(d.line, 2);
    assert_int_equal(d.col, 9);
    assert_non_null(strstr(d.file, "binarized_mnist_test.amat"));

    /* a short line 3: its last value removed */
    text[1568 + 8] = '0';
    memcpy(text + 2 * 1568 + 1565, "\n", 2);
    write_file("binarized_mnist_test.amat", text, strlen(text));
    d = load_fails("mnist-bin", "test", "783 values, expected 784");
    assert_int_equal(d.line, 3);

    /* a blank line, binary garbage, an empty file */
    write_str("binarized_mnist_test.amat", "\n");
    load_fails("mnist-bin", "test", "0 values, expected 784");
    write_file("binarized_mnist_test.amat", "\x01\xff\0", 3);
    load_fails("mnist-bin", "test", "value 1 is '\\x01\\xff\\x00'");
    write_str("binarized_mnist_test.amat", "");
    load_fails("mnist-bin", "test", "no examples");
    remove_tmp("binarized_mnist_test.amat");

    /* gzip data cut short */
    free(text);
    text = amat_text(3);
    write_gz("binarized_mnist_test.amat.gz", text, strlen(text));
    free(text);
    struct stat st;
    assert_int_equal(stat(in_tmp("binarized_mnist_test.amat.gz"), &st), 0);
    assert_int_equal(truncate(in_tmp("binarized_mnist_test.amat.gz"), st.st_size / 2), 0);
    load_fails("mnist-bin", "test", "truncated gzip");
    remove_tmp("binarized_mnist_test.amat.gz");
}

static void test_missing_and_bad_specs(void **state) {
    aj_diag d = load_fails("text:no-such-file.txt", "train", "cannot find no-such-file.txt(.gz): looked in $ARJIT_DATA (");
    expect_error(&d, tmpdir);
    expect_error(&d, "./data, ../shared/data");
    load_fails("text:./no/such/file.txt", "train", "cannot find ./no/such/file.txt");
    load_fails("mnist-binary", "train", "unknown dataset 'mnist-binary'");
    load_fails("text:", "train", "unknown dataset");
    load_fails("mnist-bin", "validation", "unknown split 'validation'");
}

/* ---------------------------------------------------------------- IDX */

/* An IDX3 file of n images of 2x3 pixels; pixel j of image i is idx_pixel(i, j). */
static int idx_pixel(int i, int j) { return (20 * i + 40 * j) % 256; }

static size_t idx_file(unsigned char *buf, uint32_t magic, uint32_t n) {
    uint32_t head[4] = {magic, n, 2, 3};
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 4; b++) buf[4 * k + b] = (unsigned char)(head[k] >> (24 - 8 * b));
    for (uint32_t i = 0; i < n; i++)
        for (int j = 0; j < 6; j++) buf[16 + 6 * i + j] = (unsigned char)idx_pixel((int)i, j);
    return 16 + 6 * n;
}

static void test_idx(void **state) {
    unsigned char buf[16 + 6 * 12];
    size_t len = idx_file(buf, 0x803, 12);
    write_gz("train-images-idx3-ubyte.gz", buf, len);
    write_file("t10k-images-idx3-ubyte", buf, len);

    aj_dataset ds;
    load_ok("mnist", "train", &ds);   /* the first 10 of 12 */
    assert_int_equal(ds.n, 10);
    assert_int_equal(ds.d, 6);
    assert_int_equal(ds.h, 2);
    assert_int_equal(ds.w, 3);
    for (int i = 0; i < 10; i++)
        for (int j = 0; j < 6; j++) assert_true(ds.x[i * 6 + j] == (idx_pixel(i, j) >= 128));
    aj_dataset_free(&ds);
    load_ok("mnist-gray", "valid", &ds);   /* the last sixth: images 10, 11 */
    assert_int_equal(ds.n, 2);
    for (int j = 0; j < 6; j++) assert_float_equal(ds.x[6 + j], idx_pixel(11, j) / 255.0f, 1e-6);
    aj_dataset_free(&ds);
    load_ok("mnist", "test", &ds);
    assert_int_equal(ds.n, 12);
    aj_dataset_free(&ds);

    idx_file(buf, 0x801, 12);
    write_file("t10k-images-idx3-ubyte", buf, len);
    aj_diag d = load_fails("mnist", "test", "bad magic 0x00000801");
    assert_non_null(strstr(d.file, "t10k-images-idx3-ubyte"));
    idx_file(buf, 0x803, 12);
    write_file("t10k-images-idx3-ubyte", buf, len - 1);
    load_fails("mnist", "test", "truncated: header says 12 images of 2x3 (72 bytes), file has 71");
    write_file("t10k-images-idx3-ubyte", buf, 10);
    load_fails("mnist", "test", "truncated IDX header");
    buf[11] = 0;   /* 0 rows */
    write_file("t10k-images-idx3-ubyte", buf, len);
    load_fails("mnist", "test", "bad IDX dims");
    remove_tmp("train-images-idx3-ubyte.gz");
    remove_tmp("t10k-images-idx3-ubyte");
}

/* ---------------------------------------------------------------- text */

static void test_text(void **state) {
    /* 100 bytes: train is the first 90, whose distinct bytes are " abc\n" */
    char text[101];
    for (int i = 0; i < 100; i++) text[i] = "abc \n"[i % 5];
    text[100] = 0;
    write_str("tiny.txt", text);
    aj_dataset tr, va;
    load_ok("text:tiny.txt", "train", &tr);
    load_ok("text:tiny.txt", "valid", &va);
    assert_int_equal(tr.ntok, 90);
    assert_int_equal(va.ntok, 10);
    assert_int_equal(tr.nvocab, 5);
    assert_memory_equal(tr.vocab, "\n abc", 5);
    assert_memory_equal(va.vocab, tr.vocab, 5);
    for (int i = 0; i < 90; i++) assert_int_equal(tr.vocab[tr.tok[i]], text[i]);
    for (int i = 0; i < 10; i++) assert_int_equal(va.vocab[va.tok[i]], text[90 + i]);

    /* a checkpoint's vocabulary, with an extra byte, re-encodes the tokens */
    aj_diag d = {0};
    const unsigned char vocab[7] = "\n abcdz";
    assert_int_equal(aj_dataset_set_vocab(&va, vocab, 6, &d), 0);
    assert_int_equal(va.nvocab, 6);
    for (int i = 0; i < 10; i++) assert_int_equal(vocab[va.tok[i]], text[90 + i]);
    /* one that lacks a byte the text has, or repeats one, is refused, ds unchanged */
    assert_int_equal(aj_dataset_set_vocab(&va, (const unsigned char *)"abc\n", 4, &d), -1);
    expect_error(&d, "character ' ' (byte 0x20");
    d = (aj_diag){0};
    assert_int_equal(aj_dataset_set_vocab(&va, (const unsigned char *)"\n abca", 6, &d), -1);
    expect_error(&d, "repeats byte 0x61");
    assert_int_equal(va.nvocab, 6);
    aj_dataset_free(&va);

    /* a valid byte that train never has: named, with its line and column */
    text[97] = 'Z';
    write_str("tiny.txt", text);
    d = load_fails("text:tiny.txt", "valid", "character 'Z' (byte 0x5a, offset 97) of the valid split");
    assert_int_equal(d.line, 20);
    assert_int_equal(d.col, 3);
    write_str("tiny.txt", "x");
    load_fails("text:tiny.txt", "train", "too short");
    remove_tmp("tiny.txt");

    /* windows of T+1 tokens: in order they tile the split; shuffled they are
     * seeded and consecutive */
    aj_batcher b;
    int32_t tok[4 * 5];
    int64_t count;
    d = (aj_diag){0};
    assert_int_equal(aj_batcher_init(&b, &tr, 4, 4, 7, 0, &d), 0);
    assert_int_equal(b.nexamples, 89 / 4);
    int windows = 0;
    while (aj_batcher_next_tokens(&b, tok, &count) == 1)
        for (int i = 0; i < count; i++, windows++)
            assert_memory_equal(tok + 5 * i, tr.tok + 4 * windows, 5 * sizeof(int32_t));
    assert_int_equal(windows, 22);
    float x[4];
    assert_int_equal(aj_batcher_next(&b, x, &count), -1);   /* text has no float rows */
    aj_batcher_free(&b);

    int32_t again[4 * 5];
    assert_int_equal(aj_batcher_init(&b, &tr, 4, 4, 7, AJ_BATCH_SHUFFLE | AJ_BATCH_DROP_LAST, &d), 0);
    aj_batcher b2;
    assert_int_equal(aj_batcher_init(&b2, &tr, 4, 4, 7, AJ_BATCH_SHUFFLE | AJ_BATCH_DROP_LAST, &d), 0);
    for (int k = 0; k < 5; k++) {
        assert_int_equal(aj_batcher_next_tokens(&b, tok, &count), 1);
        assert_int_equal(count, 4);
        assert_int_equal(aj_batcher_next_tokens(&b2, again, &count), 1);
        assert_memory_equal(tok, again, sizeof tok);
        for (int i = 0; i < 4; i++) {
            /* a window is a slice of the split: find where it starts */
            int found = 0;
            for (int s = 0; s + 5 <= 90 && !found; s++) found = !memcmp(tok + 5 * i, tr.tok + s, 5 * sizeof(int32_t));
            assert_true(found);
        }
    }
    aj_batcher_free(&b);
    aj_batcher_free(&b2);
    assert_int_equal(aj_batcher_init(&b, &tr, 4, 90, 7, 0, &d), -1);
    expect_error(&d, "sequence length 90");
    aj_dataset_free(&tr);
}

/* ---------------------------------------------------------------- csv */

static void test_csv(void **state) {
    /* 20 rows: a = i, b = 2 i + 1, quality = 5 */
    char text[2048];
    int k = snprintf(text, sizeof text, "\"a\";\"b\";\"quality\"\n");
    for (int i = 0; i < 20; i++) k += snprintf(text + k, sizeof text - (size_t)k, "%d;%d.5;5\r\n", i, 2 * i);
    write_str("wine.csv", text);

    const char *split[3] = {"train", "valid", "test"};
    int seen[20] = {0};
    int64_t want[3] = {16, 2, 2};
    for (int s = 0; s < 3; s++) {
        aj_dataset ds;
        load_ok("csv:wine.csv,drop=quality", split[s], &ds);
        assert_int_equal(ds.n, want[s]);
        assert_int_equal(ds.d, 2);
        double mean = 0;
        for (int i = 0; i < ds.n; i++) {
            /* undo the standardization to find which row this is */
            float a = ds.x[2 * i] * ds.std[0] + ds.mean[0], b = ds.x[2 * i + 1] * ds.std[1] + ds.mean[1];
            int row = (int)lrintf(a);
            assert_float_equal(b, 2 * row + 0.5, 1e-4);
            seen[row]++;
            mean += ds.x[2 * i];
        }
        if (s == 0) assert_float_equal(mean / 16, 0, 1e-5);
        aj_dataset_free(&ds);
    }
    for (int i = 0; i < 20; i++) assert_int_equal(seen[i], 1);   /* every row in exactly one split */

    aj_dataset ds;
    load_ok("csv:wine.csv", "train", &ds);   /* quality kept: constant, so std 1 */
    assert_int_equal(ds.d, 3);
    assert_true(ds.std[2] == 1);
    aj_dataset_free(&ds);
    load_fails("csv:wine.csv,drop=colour", "train", "no column 'colour' in the header");
    load_fails("csv:wine.csv,keep=a", "train", "bad csv option ',keep=a'");

    memcpy(strstr(text, "\n3;") + 1, "x;", 2);
    write_str("wine.csv", text);
    aj_diag d = load_fails("csv:wine.csv", "train", "value 1 (column 'a') is 'x', expected a finite number");
    assert_int_equal(d.line, 5);
    assert_int_equal(d.col, 1);
    memcpy(strstr(text, "\nx;") + 1, "3;", 2);
    memcpy(strstr(text, "\n7;14.5;5"), "\n7;14.5 ", 8);
    write_str("wine.csv", text);
    d = load_fails("csv:wine.csv", "train", "value 2 (column 'b') is '14.5 5', expected a finite number");
    assert_int_equal(d.line, 9);
    assert_int_equal(d.col, 3);
    /* a NaN, an infinity and a missing column, each at its line and column */
    static const struct { const char *row, *msg; int col; } bad[] = {
        {"\n7;nan;5", "value 2 (column 'b') is 'nan', expected a finite number", 3},
        {"\n7;-inf;5", "value 2 (column 'b') is '-inf', expected a finite number", 3},
        {"\n7;1e39;5", "value 2 (column 'b') is '1e39', expected a finite number", 3},
        {"\n7;14.5\r\n", "2 values, expected 3: no value 3 (column 'quality')", 7},
        {"\n7;;5", "value 2 (column 'b') is '', expected a finite number", 3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char t[2048];
        int len = snprintf(t, sizeof t, "%s", text);
        char *row = strstr(t, "\n7;14.5 5");
        assert_non_null(row);
        char *rest = strchr(row + 1, '\n');
        snprintf(row, sizeof t - (size_t)(row - t), "%s%s", bad[i].row, rest);
        assert_true(len > 0);
        write_str("wine.csv", t);
        d = load_fails("csv:wine.csv", "valid", bad[i].msg);
        assert_int_equal(d.line, 9);
        assert_int_equal(d.col, bad[i].col);
    }
    write_str("wine.csv", "a;b\n1;2\n");
    load_fails("csv:wine.csv", "train", "1 rows: too few");
    remove_tmp("wine.csv");
}

/* ---------------------------------------------------------------- batches */

/* Ten 1-value examples, x = id: batches show the order directly. */
static aj_dataset ten_examples(float *x) {
    aj_dataset ds = {0};
    for (int i = 0; i < 10; i++) x[i] = (float)i;
    ds.n = 10;
    ds.d = 1;
    ds.x = x;
    return ds;
}

/* One epoch's examples, in order, into ids; returns how many. */
static int epoch_ids(aj_batcher *b, int *ids, int *last_count) {
    float x[16];   /* the largest batch used here */
    int64_t count;
    int n = 0;
    while (aj_batcher_next(b, x, &count) == 1) {
        for (int i = 0; i < count; i++) ids[n++] = (int)x[i];
        *last_count = (int)count;
    }
    return n;
}

static void test_batcher(void **state) {
    float x[10];
    aj_dataset ds = ten_examples(x);
    aj_diag d = {0};
    aj_batcher a, b, c;
    int flags = AJ_BATCH_SHUFFLE | AJ_BATCH_DROP_LAST;
    assert_int_equal(aj_batcher_init(&a, &ds, 3, 0, 42, flags, &d), 0);
    assert_int_equal(aj_batcher_init(&b, &ds, 3, 0, 42, flags, &d), 0);
    assert_int_equal(aj_batcher_init(&c, &ds, 3, 0, 43, flags, &d), 0);
    int ia[3][10], ib[10], ic[10], last;
    for (int e = 0; e < 3; e++) {
        /* drop_last: 3 full batches, every example at most once */
        assert_int_equal(epoch_ids(&a, ia[e], &last), 9);
        assert_int_equal(last, 3);
        int once[10] = {0};
        for (int i = 0; i < 9; i++) assert_int_equal(once[ia[e][i]]++, 0);
        assert_int_equal(epoch_ids(&b, ib, &last), 9);
        assert_memory_equal(ia[e], ib, 9 * sizeof(int));   /* same seed, same order */
        epoch_ids(&c, ic, &last);
        assert_memory_not_equal(ia[e], ic, 9 * sizeof(int));   /* another seed, another order */
    }
    assert_int_equal(a.epoch, 3);
    assert_memory_not_equal(ia[0], ia[1], 9 * sizeof(int));   /* reshuffled each epoch */

    /* resuming at epoch 1, example 3, continues exactly as the first run did */
    aj_batcher_seek(&b, 1, 3);
    assert_int_equal(epoch_ids(&b, ib, &last), 6);
    assert_memory_equal(ib, ia[1] + 3, 6 * sizeof(int));
    aj_batcher_free(&a);
    aj_batcher_free(&b);
    aj_batcher_free(&c);

    /* evaluation: dataset order, every example once, a short last batch */
    assert_int_equal(aj_batcher_init(&a, &ds, 3, 0, 42, 0, &d), 0);
    assert_int_equal(epoch_ids(&a, ib, &last), 10);
    assert_int_equal(last, 1);
    for (int i = 0; i < 10; i++) assert_int_equal(ib[i], i);
    int32_t tok[8];
    int64_t count;
    assert_int_equal(aj_batcher_next_tokens(&a, tok, &count), -1);   /* rows are not text */
    aj_batcher_free(&a);

    /* shuffled but keeping the last batch: all ten, once each */
    assert_int_equal(aj_batcher_init(&a, &ds, 4, 0, 1, AJ_BATCH_SHUFFLE, &d), 0);
    assert_int_equal(epoch_ids(&a, ib, &last), 10);
    assert_int_equal(last, 2);
    int once[10] = {0};
    for (int i = 0; i < 10; i++) assert_int_equal(once[ib[i]]++, 0);
    aj_batcher_free(&a);

    assert_int_equal(aj_batcher_init(&a, &ds, 11, 0, 1, AJ_BATCH_DROP_LAST, &d), -1);
    expect_error(&d, "fewer than one batch of 11");
    d = (aj_diag){0};
    assert_int_equal(aj_batcher_init(&a, &ds, 0, 0, 1, 0, &d), -1);
    expect_error(&d, "batch size 0");
}

/* ---------------------------------------------------------------- checkpoints */

static aj_ckpt *sample_ckpt(float scale) {
    aj_ckpt *ck = aj_ckpt_new();
    aj_tensor w = aj_tensor_new(AJ_F32, 2, (int64_t[]){2, 3});
    aj_tensor idx = aj_tensor_new(AJ_I32, 1, (int64_t[]){4});
    aj_tensor s = aj_tensor_new(AJ_F32, 0, NULL);
    for (int i = 0; i < 6; i++) ((float *)w.data)[i] = scale * (float)i - 1.5f;
    for (int i = 0; i < 4; i++) ((int32_t *)idx.data)[i] = -7 * i;
    ((float *)s.data)[0] = 3.25f;
    assert_int_equal(aj_ckpt_add_tensor(ck, AJ_CKPT_PARAMS, "W", &w), 0);
    assert_int_equal(aj_ckpt_add_tensor(ck, AJ_CKPT_PARAMS, "order", &idx), 0);
    assert_int_equal(aj_ckpt_add_tensor(ck, AJ_CKPT_OPTIM, "W", &s), 0);   /* same name, other section */
    assert_int_equal(aj_ckpt_set_u64(ck, "step", 123456789012345ull), 0);
    assert_int_equal(aj_ckpt_set_meta(ck, "model", "models/nade.graph"), 0);
    assert_int_equal(aj_ckpt_set_meta_bytes(ck, "vocab", "\0\n ab", 5), 0);
    aj_tensor_free(&w);
    aj_tensor_free(&idx);
    aj_tensor_free(&s);
    return ck;
}

static void save_ok(const aj_ckpt *ck, const char *path) {
    aj_diag d = {0};
    if (aj_ckpt_save(ck, path, &d) != 0) {
        aj_diag_print(&d, stderr);
        fail();
    }
}

static aj_ckpt *load_ck_ok(const char *path) {
    aj_diag d = {0};
    aj_ckpt *ck = aj_ckpt_load(path, &d);
    if (!ck) {
        aj_diag_print(&d, stderr);
        fail();
    }
    return ck;
}

static void check_sample(const aj_ckpt *ck, float scale) {
    const aj_tensor *w = aj_ckpt_find(ck, AJ_CKPT_PARAMS, "W");
    assert_non_null(w);
    assert_int_equal(w->dtype, AJ_F32);
    assert_int_equal(w->rank, 2);
    assert_int_equal(w->shape[0], 2);
    assert_int_equal(w->shape[1], 3);
    for (int i = 0; i < 6; i++) assert_true(((float *)w->data)[i] == scale * (float)i - 1.5f);
    const aj_tensor *idx = aj_ckpt_find(ck, AJ_CKPT_PARAMS, "order");
    assert_non_null(idx);
    assert_int_equal(idx->dtype, AJ_I32);
    for (int i = 0; i < 4; i++) assert_int_equal(((int32_t *)idx->data)[i], -7 * i);
    const aj_tensor *s = aj_ckpt_find(ck, AJ_CKPT_OPTIM, "W");
    assert_non_null(s);
    assert_int_equal(s->rank, 0);
    assert_true(((float *)s->data)[0] == 3.25f);
    uint64_t step;
    assert_int_equal(aj_ckpt_get_u64(ck, "step", &step), 0);
    assert_true(step == 123456789012345ull);
    assert_string_equal(aj_ckpt_meta(ck, "model"), "models/nade.graph");
    size_t len;
    assert_memory_equal(aj_ckpt_meta_bytes(ck, "vocab", &len), "\0\n ab", 5);
    assert_int_equal(len, 5);
    assert_null(aj_ckpt_meta(ck, "nothing"));
    assert_null(aj_ckpt_find(ck, AJ_CKPT_OPTIM, "order"));
}

static void test_checkpoint_round_trip(void **state) {
    aj_ckpt *ck = sample_ckpt(1);
    /* setting a name again replaces it */
    assert_int_equal(aj_ckpt_set_meta(ck, "model", "models/nade.graph"), 0);
    assert_int_equal(aj_ckpt_set_u64(ck, "step", 123456789012345ull), 0);
    assert_int_equal(aj_ckpt_add_tensor(ck, 5, "bad section", aj_ckpt_find(ck, 0, "W")), -1);
    assert_int_equal(aj_ckpt_add_tensor(ck, 0, "", aj_ckpt_find(ck, 0, "W")), -1);
    const char *path = in_tmp("model.ck");
    save_ok(ck, path);
    aj_ckpt_free(ck);
    assert_no_tmp_files();
    ck = load_ck_ok(path);
    check_sample(ck, 1);
    const char *name;
    assert_non_null(aj_ckpt_tensor_at(ck, AJ_CKPT_PARAMS, 1, &name));
    assert_string_equal(name, "order");
    assert_null(aj_ckpt_tensor_at(ck, AJ_CKPT_PARAMS, 2, &name));
    assert_null(aj_ckpt_tensor_at(ck, AJ_CKPT_OPTIM, 1, &name));
    aj_ckpt_free(ck);

    aj_diag d = {0};
    assert_null(aj_ckpt_load(in_tmp("none.ck"), &d));
    expect_error(&d, "cannot open");
    assert_non_null(strstr(d.file, "none.ck"));
}

/* Save the sample checkpoint and return its bytes. */
static unsigned char *saved_bytes(const char *path, size_t *len) {
    aj_ckpt *ck = sample_ckpt(1);
    save_ok(ck, path);
    aj_ckpt_free(ck);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

static void ck_load_fails(const char *path, const char *needle) {
    aj_diag d = {0};
    aj_ckpt *ck = aj_ckpt_load(path, &d);
    if (ck) {
        fprintf(stderr, "loaded a bad checkpoint (expected \"%s\")\n", needle);
        aj_ckpt_free(ck);
        fail();
    }
    expect_error(&d, needle);
    assert_non_null(strstr(d.file, path));
}

static void put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void test_checkpoint_damaged(void **state) {
    const char *path = in_tmp("bad.ck");
    size_t len;
    unsigned char *buf = saved_bytes(path, &len);

    for (size_t cut = 0; cut < len; cut++) {   /* every truncation is refused */
        write_file("bad.ck", buf, cut);
        ck_load_fails(path, cut < 8 ? "not an arjit checkpoint" : "truncated checkpoint");
    }
    for (size_t i = 0; i < len; i++) {   /* and every flipped byte */
        buf[i] ^= 0x20;
        write_file("bad.ck", buf, len);
        ck_load_fails(path, i < 8 ? "not an arjit checkpoint" : i < 24 ? "checkpoint" : "CRC32 mismatch");
        buf[i] ^= 0x20;
    }
    write_file("bad.ck", buf, len);
    aj_ckpt_free(load_ck_ok(path));

    /* records that lie, under a correct CRC: counts, a dim, a name length */
    const struct { size_t off; uint32_t v; const char *err; } lies[] = {
        {24, 1000, "corrupt checkpoint"},          /* tensor count */
        {32, 0, "unexpected bytes after the last record"}, /* metadata count */
        {40, 9, "bad tensor section"},
        {44, 0, "bad tensor name"},
        {44, 60000, "bad tensor name"},
        {57, 2000000000, "tensor data runs past the end"},   /* W's first dim (after "W", dtype, rank) */
        {12, 4, "bad header length"},
    };
    for (size_t k = 0; k < sizeof lies / sizeof lies[0]; k++) {
        unsigned char *bad = malloc(len);
        memcpy(bad, buf, len);
        put_le32(bad + lies[k].off, lies[k].v);
        put_le32(bad + len - 4, (uint32_t)crc32(0, bad, (uInt)(len - 4)));
        write_file("bad.ck", bad, len);
        ck_load_fails(path, lies[k].err);
        free(bad);
    }
    put_le32(buf + 8, 2);
    write_file("bad.ck", buf, len);
    ck_load_fails(path, "checkpoint version 2");
    free(buf);
    write_str("bad.ck", "hello");
    ck_load_fails(path, "not an arjit checkpoint");
    remove_tmp("bad.ck");
}

static void test_checkpoint_atomic(void **state) {
    const char *path = in_tmp("keep.ck");
    aj_ckpt *old = sample_ckpt(1), *new = sample_ckpt(2);
    save_ok(old, path);

    /* the temporary name is taken (by a directory): the save fails early */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_equal(mkdir(tmp, 0700), 0);
    aj_diag d = {0};
    assert_int_equal(aj_ckpt_save(new, path, &d), -1);
    expect_error(&d, "cannot create");
    assert_int_equal(rmdir(tmp), 0);

    /* a write fails halfway (the file size limit): the partial file goes */
    struct rlimit saved, small;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    small = saved;
    small.rlim_cur = 64;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    d = (aj_diag){0};
    int rc = aj_ckpt_save(new, path, &d);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    assert_int_equal(rc, -1);
    expect_error(&d, "cannot write");
    assert_no_tmp_files();

    /* an unwritable directory (root may write anywhere: skip the check there) */
    if (geteuid() != 0) {
        assert_int_equal(chmod(tmpdir, 0500), 0);
        d = (aj_diag){0};
        rc = aj_ckpt_save(new, path, &d);
        assert_int_equal(chmod(tmpdir, 0700), 0);
        assert_int_equal(rc, -1);
    }

    aj_ckpt *ck = load_ck_ok(path);   /* the old one, whole */
    check_sample(ck, 1);
    aj_ckpt_free(ck);
    save_ok(new, path);
    ck = load_ck_ok(path);
    check_sample(ck, 2);
    assert_no_tmp_files();
    aj_ckpt_free(ck);
    aj_ckpt_free(old);
    aj_ckpt_free(new);
    remove_tmp("keep.ck");
}

/* ---------------------------------------------------------------- PNG */

static void test_png(void **state) {
    /* 5 images of 3x4: a near-square grid of 3 columns, 2 rows */
    float img[5 * 12];
    for (int i = 0; i < 5 * 12; i++) img[i] = (float)(i % 12) / 11.0f;
    img[0] = -1;       /* clamped to 0 */
    img[12] = 7;       /* clamped to 1 */
    img[13] = NAN;     /* black */
    aj_diag d = {0};
    const char *path = in_tmp("grid.png");
    assert_int_equal(aj_png_grid(path, img, 5, 3, 4, 0, &d), 0);
    assert_no_tmp_files();

    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    assert_true(png_image_begin_read_from_file(&im, path));
    assert_int_equal(im.width, 3 * 5 + 1);
    assert_int_equal(im.height, 2 * 4 + 1);
    im.format = PNG_FORMAT_GRAY;
    unsigned char pix[16 * 9];
    assert_true(png_image_finish_read(&im, NULL, pix, 16, NULL));
    assert_int_equal(pix[0], 128);               /* frame */
    assert_int_equal(pix[16 + 1], 0);            /* image 0, pixel (0,0): clamped */
    assert_int_equal(pix[16 + 2], 23);           /* 1/11 */
    assert_int_equal(pix[16 + 5], 128);          /* separator */
    assert_int_equal(pix[16 + 6], 255);          /* image 1, pixel (0,0) */
    assert_int_equal(pix[16 + 7], 0);            /* NaN */
    assert_int_equal(pix[5 * 16 + 11], 128);     /* row 2, column 3: no image */

    assert_int_equal(aj_png_grid(path, img, 5, 3, 4, 2, &d), 0);   /* 2 columns: 3 rows */
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    assert_true(png_image_begin_read_from_file(&im, path));
    assert_int_equal(im.width, 2 * 5 + 1);
    assert_int_equal(im.height, 3 * 4 + 1);
    png_image_free(&im);

    assert_int_equal(aj_png_grid(path, img, 0, 3, 4, 0, &d), -1);
    expect_error(&d, "bad image grid");
    d = (aj_diag){0};
    assert_int_equal(aj_png_grid(in_tmp("no/such/dir.png"), img, 5, 3, 4, 0, &d), -1);
    expect_error(&d, "cannot create");
    remove_tmp("grid.png");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amat_plain_and_gz),
        cmocka_unit_test(test_amat_corrupt),
        cmocka_unit_test(test_missing_and_bad_specs),
        cmocka_unit_test(test_idx),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_csv),
        cmocka_unit_test(test_batcher),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_checkpoint_damaged),
        cmocka_unit_test(test_checkpoint_atomic),
        cmocka_unit_test(test_png),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
