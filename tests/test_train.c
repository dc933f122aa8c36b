/* Training, evaluation and sampling (runtime/train.c) on synthetic data in
 * a temporary $ARJIT_DATA: a 2x3 "image" dataset in IDX format (spec
 * `mnist`, so d = 6) whose pixels follow simple rules FVSBN can learn:
 *   x0 ~ Bern(0.8), x1 = x0, x2 = 1 - x0, x3 ~ Bern(0.5), x4 = x3, x5 = 1.
 * (binarized_mnist .amat files have 784 columns by definition, hence IDX
 * for a D=6 model; an .amat file checks the dimension mismatch error.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "synthetic_idx.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arjit_train.h"
#include "arjit_compile.h"

#define NTRAIN_FILE 600   /* train = first 500, valid = last 100 */
#define NTEST 100
#define BATCH 10          /* 50 steps per epoch */

static char dir[256], model[512];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static void write_idx(const char *name, int n, uint32_t seed) { write_synthetic_idx(dir, name, n, seed); }

static void write_text(const char *name, const char *text) {
    char path[512];
    path_in(path, sizeof path, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/arjit_test_train_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    setenv("ARJIT_DATA", dir, 1);
    const char *src = getenv("ARJIT_SOURCE_DIR");
    snprintf(model, sizeof model, "%s/models/fvsbn.graph", src ? src : ".");
    write_idx("train-images-idx3-ubyte", NTRAIN_FILE, 1);
    write_idx("t10k-images-idx3-ubyte", NTEST, 2);
    /* 784 zeros per line: mnist-bin, for the dimension mismatch */
    char line[784 * 2 + 1];
    for (int i = 0; i < 784; i++) line[2 * i] = '0', line[2 * i + 1] = i < 783 ? ' ' : '\n';
    line[784 * 2] = 0;
    write_text("binarized_mnist_train.amat", line);
    write_text("binarized_mnist_valid.amat", line);
    write_text("chars.txt", "hello world\nhello world\nhello world\nhello world\n");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* FVSBN, D=6, Adam, batches of 10, no output. */
static aj_job base_job(void) {
    aj_job j = {0};
    j.model = model;
    j.dims = "D=6";
    j.data = "mnist";
    j.batch = BATCH;
    j.seed = 7;
    j.epochs = 2;
    j.lr = 0.05;
    j.opt = (aj_optim){AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    return j;
}

static void train_ok(const aj_job *j, aj_train_result *r) {
    aj_diag d = {0};
    int rc = aj_train(j, r, &d);
    if (rc) aj_diag_print(&d, stderr);
    assert_int_equal(rc, 0);
}

/* Every tensor of both sections and the step count, bit for bit. */
static void assert_same_ckpt(const char *a_name, const char *b_name) {
    char pa[512], pb[512];
    path_in(pa, sizeof pa, a_name);
    path_in(pb, sizeof pb, b_name);
    aj_diag d = {0};
    aj_ckpt *a = aj_ckpt_load(pa, &d), *b = aj_ckpt_load(pb, &d);
    assert_non_null(a);
    assert_non_null(b);
    int checked = 0;
    for (int s = 0; s < AJ_CKPT_NSECTION; s++) {
        const char *name;
        const aj_tensor *t;
        for (int i = 0; (t = aj_ckpt_tensor_at(a, s, i, &name)); i++) {
            const aj_tensor *u = aj_ckpt_find(b, s, name);
            assert_non_null(u);
            assert_int_equal(aj_tensor_numel(t), aj_tensor_numel(u));
            if (memcmp(t->data, u->data, (size_t)aj_tensor_numel(t) * 4)) fail_msg("tensor %s differs", name);
            checked++;
        }
    }
    assert_int_equal(checked, 2 + 2 * 2);   /* W, b; Adam's m and v of each */
    uint64_t sa, sb;
    assert_int_equal(aj_ckpt_get_u64(a, "step", &sa), 0);
    assert_int_equal(aj_ckpt_get_u64(b, "step", &sb), 0);
    assert_int_equal(sa, sb);
    aj_ckpt_free(a);
    aj_ckpt_free(b);
}

/* ---------------------------------------------------------------- training */

static void test_loss_falls(void **state) {
    (void)state;
    aj_job j = base_job();
    j.epochs = 3;
    char save[512];
    path_in(save, sizeof save, "fall");
    j.save = save;
    FILE *out = tmpfile();
    j.out = out;
    aj_train_result r;
    train_ok(&j, &r);
    /* W = 0, b = 0: every pixel has probability 1/2 */
    assert_true(fabs(r.first_loss - 6 * log(2)) < 1e-4);
    assert_true(r.train_nll < r.first_loss - 1.5);
    assert_true(r.valid_nll < r.first_loss - 1.5);
    assert_int_equal(r.step, 3 * 50);
    assert_int_equal(r.epoch, 3);
    /* one line per epoch */
    char buf[4096] = "";
    rewind(out);
    size_t n = fread(buf, 1, sizeof buf - 1, out);
    buf[n] = 0;
    fclose(out);
    assert_non_null(strstr(buf, "epoch 1: train NLL "));
    assert_non_null(strstr(buf, "epoch 3: train NLL "));
    assert_non_null(strstr(buf, " valid NLL "));
}

static void test_sgd_and_schedules(void **state) {
    (void)state;
    static const aj_schedule scheds[] = {AJ_SCHED_STEP, AJ_SCHED_COSINE};
    for (int i = 0; i < 2; i++) {
        aj_job j = base_job();
        j.opt = (aj_optim){AJ_OPT_SGD, .momentum = 0.9, .clip = 5};
        j.lr = 0.5;
        j.schedule = scheds[i];
        j.step_epochs = 1;
        j.gamma = 0.5;
        aj_train_result r;
        train_ok(&j, &r);
        assert_true(r.train_nll < r.first_loss - 1.0);
    }
}

/* 2 epochs straight against 1 epoch then a resumed one: the same bits. */
static void test_resume_at_epoch(void **state) {
    (void)state;
    aj_job j = base_job();
    j.save = "";
    char a[512], b[512], blast[512], c[512];
    path_in(a, sizeof a, "straight");
    path_in(b, sizeof b, "first");
    path_in(blast, sizeof blast, "first.last");
    path_in(c, sizeof c, "resumed");
    aj_train_result r;
    j.save = a;
    train_ok(&j, &r);
    j.save = b;
    j.epochs = 1;
    train_ok(&j, &r);
    assert_int_equal(r.epoch, 1);
    j.save = c;
    j.epochs = 2;
    j.resume = blast;
    j.seed = 99;   /* ignored: the checkpoint's seed fixes the batch order */
    j.batch = 0;   /* the checkpoint's */
    train_ok(&j, &r);
    assert_int_equal(r.epoch, 2);
    assert_same_ckpt("straight.last", "resumed.last");
}

/* Mid-epoch: --max-steps stops after 7 of 50 steps; resuming seeks to the
 * same example of the same epoch's order. */
static void test_resume_mid_epoch(void **state) {
    (void)state;
    aj_job j = base_job();
    char s[512], slast[512], m[512], mlast[512], n[512];
    path_in(s, sizeof s, "straight2");
    path_in(m, sizeof m, "mid");
    path_in(mlast, sizeof mlast, "mid.last");
    path_in(n, sizeof n, "mid_resumed");
    path_in(slast, sizeof slast, "straight2.last");
    aj_train_result r;
    j.save = s;
    train_ok(&j, &r);
    j.save = m;
    j.max_steps = 57;
    train_ok(&j, &r);
    assert_int_equal(r.step, 57);
    assert_int_equal(r.epoch, 1);
    j.max_steps = 0;
    j.save = n;
    j.resume = mlast;
    train_ok(&j, &r);
    assert_same_ckpt("straight2.last", "mid_resumed.last");
}

/* An engine that sets the interrupt flag after `stop_after` runs, as a
 * SIGINT would: the step in progress completes, SAVE.last is written. */
static volatile sig_atomic_t stop_flag;
static int runs, stop_after;

static int counting_engine(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                           aj_tensor *results, uint64_t seed, aj_diag *d) {
    if (++runs == stop_after) stop_flag = 1;
    return aj_interp_run(m, fn, params, inputs, results, seed, d);
}

static void test_interrupt_and_resume(void **state) {
    (void)state;
    /* 13: mid-epoch 1; 50 + 3: during epoch 1's validation (10 batches) */
    static const int stops[] = {13, 53};
    for (int i = 0; i < 2; i++) {
        aj_job j = base_job();
        char save[512], last[520], done[512], name[64];
        snprintf(name, sizeof name, "intr%d", i);
        path_in(save, sizeof save, name);
        snprintf(last, sizeof last, "%s.last", save);
        snprintf(name, sizeof name, "intr%d_resumed", i);
        path_in(done, sizeof done, name);
        j.engine = counting_engine;
        j.interrupt = &stop_flag;
        j.save = save;
        runs = 0, stop_after = stops[i], stop_flag = 0;
        aj_train_result r;
        train_ok(&j, &r);
        assert_true(r.interrupted);
        assert_int_equal(r.step, i == 0 ? 13 : 50);
        assert_int_equal(access(last, F_OK), 0);
        stop_flag = 0;
        j.resume = last;
        j.save = done;
        train_ok(&j, &r);
        assert_false(r.interrupted);
        assert_int_equal(r.step, 100);
        snprintf(name, sizeof name, "intr%d_resumed.last", i);
        assert_same_ckpt("straight.last", name);
    }
}

static void test_patience(void **state) {
    (void)state;
    aj_job j = base_job();
    j.epochs = 50;
    j.patience = 1;
    j.lr = 1e-12;   /* no progress: the NLL stays ln 2 per pixel in f32, epoch 2 is no better */
    aj_train_result r;
    train_ok(&j, &r);
    assert_true(r.early_stopped);
    assert_true(r.epoch < 50);
}

/* ---------------------------------------------------------------- errors */

static void expect_train_error(const aj_job *j, const char *part1, const char *part2) {
    aj_train_result r;
    aj_diag d = {0};
    assert_int_equal(aj_train(j, &r, &d), -1);
    assert_true(d.set);
    if (!strstr(d.msg, part1) || (part2 && !strstr(d.msg, part2)))
        fail_msg("error '%s' lacks '%s' / '%s'", d.msg, part1, part2 ? part2 : "");
}

static void test_data_errors(void **state) {
    (void)state;
    aj_job j = base_job();
    j.data = "mnist-bin";   /* 784 values per example, the model takes 6 */
    expect_train_error(&j, "has 784 values per example", "f32[B, D]");
    j.data = "text:chars.txt";
    expect_train_error(&j, "is text", "must be token windows i32[B, T]");   /* an f32[B, D] model */
    j.data = "csv:missing.csv";
    expect_train_error(&j, "cannot find missing.csv", NULL);
    j.data = "mnist";
    j.model = "/nonexistent/model.graph";
    expect_train_error(&j, "", NULL);
    j = base_job();
    j.batch = 1000;   /* more than the 500 training examples */
    expect_train_error(&j, "fewer than one batch", NULL);
}

/* Corrupt, truncated and mismatched checkpoints are refused with a reason. */
static void test_bad_checkpoints(void **state) {
    (void)state;
    char good[512], bad[512];
    path_in(good, sizeof good, "straight.last");
    path_in(bad, sizeof bad, "corrupt.ck");
    FILE *f = fopen(good, "rb");
    assert_non_null(f);
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 100 && n < sizeof buf);
    aj_job j = base_job();
    aj_eval_result er;
    for (int mode = 0; mode < 2; mode++) {
        buf[n / 2] ^= (unsigned char)(mode == 0);   /* flip a byte, or cut the file in half */
        f = fopen(bad, "wb");
        fwrite(buf, 1, mode == 0 ? n : n / 2, f);
        fclose(f);
        aj_diag d = {0};
        j.ckpt = bad;
        assert_int_equal(aj_eval(&j, &er, &d), -1);
        assert_non_null(strstr(d.file, "corrupt.ck"));
        j.resume = bad;
        d = (aj_diag){0};
        aj_train_result r;
        assert_int_equal(aj_train(&j, &r, &d), -1);
        assert_non_null(strstr(d.file, "corrupt.ck"));
        j.resume = NULL;
    }

    /* the same parameter names under other dims: shapes differ */
    j = base_job();
    j.ckpt = good;
    j.dims = "D=5";
    aj_diag d = {0};
    assert_int_equal(aj_eval(&j, &er, &d), -1);
    assert_non_null(strstr(d.msg, "parameter W is f32[6, 6] there, but the model wants f32[5, 5]"));

    /* resuming needs the very model file */
    char other[512];
    path_in(other, sizeof other, "fvsbn_edited.graph");
    char *src = NULL;
    size_t len = 0;
    f = fopen(model, "rb");
    assert_non_null(f);
    FILE *mem = open_memstream(&src, &len);
    int c;
    while ((c = fgetc(f)) != EOF) fputc(c, mem);
    fclose(f);
    fclose(mem);
    f = fopen(other, "w");
    fprintf(f, "# edited\n%s", src);
    fclose(f);
    free(src);
    j = base_job();
    j.model = other;
    j.resume = good;
    expect_train_error(&j, "trained on another model", NULL);
    /* eval only warns: the parameters still fit */
    j.resume = NULL;
    j.ckpt = good;
    d = (aj_diag){0};
    assert_int_equal(aj_eval(&j, &er, &d), 0);

    /* another optimizer's state */
    j = base_job();
    j.resume = good;
    j.opt.kind = AJ_OPT_RMSPROP;
    expect_train_error(&j, "adam optimizer state", "rmsprop");

    /* a loop state no run reaches, under a valid CRC: refused by field.
     * straight.last is at epoch 2, pos 0, step 100 (50 steps of 10 per epoch) */
    static const struct {
        const char *field;
        int64_t v;
        const char *msg;
    } states[] = {
        {"pos", 5000, "'pos' is 5000: past the 500 examples of the train split of 'mnist'"},
        {"pos", -10, "'pos' is -10: below 0"},
        {"pos", 30, "'epoch_loss_n' is 0: steps into the epoch, but 'pos' is 30 examples into it"},
        {"epoch_loss_n", 3, "'epoch_loss_n' is 3: steps into the epoch, but 'pos' is 0"},
        {"step", 1, "'step' is 1: fewer than 'epoch' 2"},
        {"batch", 0, "'batch' is 0: outside 1..2^24"},
    };
    char edited[512];
    path_in(edited, sizeof edited, "edited.ck");
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        d = (aj_diag){0};
        aj_ckpt *ck = aj_ckpt_load(good, &d);
        assert_non_null(ck);
        assert_int_equal(aj_ckpt_set_u64(ck, states[i].field, (uint64_t)states[i].v), 0);
        assert_int_equal(aj_ckpt_save(ck, edited, &d), 0);
        aj_ckpt_free(ck);
        j = base_job();
        j.resume = edited;
        j.epochs = 3;
        aj_train_result r;
        assert_int_equal(aj_train(&j, &r, &d), -1);
        assert_string_equal(d.file, edited);
        if (!strstr(d.msg, states[i].msg)) fail_msg("%s = %lld: got '%s'", states[i].field, (long long)states[i].v, d.msg);
    }
}

/* ---------------------------------------------------------------- eval, sample */

static void test_eval(void **state) {
    (void)state;
    char best[512];
    path_in(best, sizeof best, "fall");   /* from test_loss_falls */
    aj_job j = base_job();
    j.ckpt = best;
    j.dims = NULL;   /* the checkpoint's D=6 */
    j.data = NULL;   /* and its dataset */
    aj_eval_result r;
    aj_diag d = {0};
    int rc = aj_eval(&j, &r, &d);
    if (rc) aj_diag_print(&d, stderr);
    assert_int_equal(rc, 0);
    assert_string_equal(r.split, "test");
    assert_string_equal(r.data, "mnist");
    assert_int_equal(r.n, NTEST);
    assert_int_equal(r.d, 6);
    assert_true(r.nll > 0 && r.nll < 6 * log(2) - 1.5);
    assert_true(fabs(r.bpd - r.nll / (6 * log(2))) < 1e-12);

    /* the valid split under the best checkpoint is its recorded best, with
     * padded batches (B = 7 does not divide 100) as with whole ones */
    aj_ckpt *ck = aj_ckpt_load(best, &d);
    assert_non_null(ck);
    uint64_t bits;
    double want;
    assert_int_equal(aj_ckpt_get_u64(ck, "best_valid", &bits), 0);
    memcpy(&want, &bits, sizeof want);
    aj_ckpt_free(ck);
    j.split = "valid";
    j.batch = 7;
    assert_int_equal(aj_eval(&j, &r, &d), 0);
    assert_int_equal(r.n, 100);
    assert_true(fabs(r.nll - want) < 1e-5);
}

static void test_sample(void **state) {
    (void)state;
    char best[512];
    path_in(best, sizeof best, "fall");
    aj_job j = base_job();
    j.ckpt = best;
    j.dims = NULL;
    aj_samples s;
    aj_diag d = {0};
    int rc = aj_sample(&j, 200, &s, &d);
    if (rc) aj_diag_print(&d, stderr);
    assert_int_equal(rc, 0);
    assert_int_equal(s.h, 2);
    assert_int_equal(s.w, 3);
    assert_int_equal(aj_tensor_numel(&s.x), 200 * 6);
    /* the learned rules: x1 = x0, x2 = 1 - x0, x5 = 1, mostly */
    const float *x = s.x.data;
    int agree = 0, ones = 0;
    for (int i = 0; i < 200; i++) {
        agree += x[6 * i + 1] == x[6 * i] && x[6 * i + 2] != x[6 * i];
        ones += x[6 * i + 5] == 1;
    }
    assert_true(agree > 150);
    assert_true(ones > 180);
    assert_int_equal(s.image_data, 1);
    aj_tensor_free(&s.x);

    /* image metadata the samples do not fit: not drawable, and why */
    static const struct {
        const char *image, *why;
    } bad[] = {
        {"2x3junk", "records the image size '2x3junk', not HxW"},
        {"abc", "records the image size 'abc', not HxW"},
        {"0x6", "not HxW"},
        {"3x3", "fn sample gives 1200 values for 200 samples, not 3x3 pixels each"},
    };
    char edited[512];
    path_in(edited, sizeof edited, "image.ck");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        aj_ckpt *ck = aj_ckpt_load(best, &d);
        assert_non_null(ck);
        assert_int_equal(aj_ckpt_set_meta(ck, "image", bad[i].image), 0);
        assert_int_equal(aj_ckpt_save(ck, edited, &d), 0);
        aj_ckpt_free(ck);
        j.ckpt = edited;
        assert_int_equal(aj_sample(&j, 200, &s, &d), 0);
        assert_int_equal(s.h, 0);
        assert_int_equal(s.image_data, 1);
        if (!strstr(s.why, bad[i].why)) fail_msg("image '%s': got '%s'", bad[i].image, s.why);
        aj_tensor_free(&s.x);
    }
}

/* ---------------------------------------------------------------- run context */

static void test_run_open(void **state) {
    (void)state;
    aj_run r;
    aj_diag d = {0};
    assert_int_equal(aj_run_open(&r, model, NULL, NULL, "D=4", 2, NULL, &d), 0);
    assert_int_equal(r.bind.v[r.bdim], 2);
    assert_string_equal(r.dims, "D=4");
    assert_int_equal(strncmp(r.hash, "fnv1a:", 6), 0);
    aj_run_close(&r);
    /* --dims binds B before the default batch does */
    assert_int_equal(aj_run_open(&r, model, "D=3", "x.ck", "B=5", 2, NULL, &d), 0);
    assert_int_equal(r.bind.v[r.bdim], 5);
    assert_string_equal(r.dims, "D=3");
    aj_run_close(&r);
    /* a free dim is named, with the flag that binds it */
    assert_int_equal(aj_run_open(&r, model, NULL, NULL, NULL, 0, NULL, &d), -1);
    assert_non_null(strstr(d.msg, "dim B has no value: give it one with --dims B=N"));
    aj_run_close(&r);
    d = (aj_diag){0};
    assert_int_equal(aj_run_open(&r, model, "Q=3", "x.ck", NULL, 2, NULL, &d), -1);
    assert_string_equal(d.file, "x.ck");
    aj_run_close(&r);
}

static void test_engines(void **state) {
    (void)state;
    aj_diag d = {0};
    assert_ptr_equal(aj_engine_find("interp", &d), aj_interp_run);
    assert_ptr_equal(aj_engine_find("naive", &d), aj_naive_run);
    assert_ptr_equal(aj_engine_find("fused", &d), aj_fused_run);
    assert_false(d.set);
    assert_null(aj_engine_find("turbo", &d));
    assert_non_null(strstr(d.msg, "unknown engine 'turbo'"));
}

int main(void) {
    /* order matters: later tests read the checkpoints earlier ones wrote */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engines),
        cmocka_unit_test(test_run_open),
        cmocka_unit_test(test_loss_falls),
        cmocka_unit_test(test_sgd_and_schedules),
        cmocka_unit_test(test_resume_at_epoch),
        cmocka_unit_test(test_resume_mid_epoch),
        cmocka_unit_test(test_interrupt_and_resume),
        cmocka_unit_test(test_patience),
        cmocka_unit_test(test_data_errors),
        cmocka_unit_test(test_bad_checkpoints),
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_sample),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
