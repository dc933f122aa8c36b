/* MADE and the NADE family (models/made*.graph and the K-ary, real-valued
 * and orderless models beside them), at small dims:
 *
 * - the autoregressive property: with random parameters, p(x) summed over
 *   every x of a discrete model is 1. A conditional that read its own
 *   variable or a later one would not normalise (for MADE, a mask letting
 *   output i see x_i), so this fails on any leak. The order-agnostic MADE
 *   is checked under several seeds, each a different mask, and its
 *   ensemble.
 * - training: each model's NLL falls on the fused engine on the synthetic
 *   2x3 images of tests/synthetic_idx.h. */
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

#include "arjit.h"
#include "arjit_compile.h"
#include "arjit_runtime.h"
#include "arjit_train.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static char models[512], dir[256];

/* ---------------------------------------------------- normalisation */

typedef struct {
    const char *file, *dims, *fn;
    int D, K;       /* variables, values of each (0 .. K-1) */
    int seeds;      /* the fn draws (masks): check this many seeds */
} norm_case;

static const norm_case norm_cases[] = {
    {"made.graph", "D=4,H=6", "loglik", 4, 2, 1},
    {"made2.graph", "D=4,H=6", "loglik", 4, 2, 1},
    {"made_oa.graph", "D=4,H=6", "loglik", 4, 2, 6},
    {"made_oa.graph", "D=4,H=6,S=3", "loglik_ens", 4, 2, 2},
    {"softmax_ar.graph", "D=3,K=3", "loglik", 3, 3, 1},
    {"nade_kary.graph", "D=3,K=3,H=4", "loglik", 3, 3, 1},
};

/* Parameters away from their initialisers (zeros would hide a leak). */
static aj_tensor *random_params(const aj_module *m, const aj_bind *b) {
    aj_tensor *p = calloc((size_t)m->nparam + 1, sizeof *p);
    assert_non_null(p);
    for (int i = 0; i < m->nparam; i++) {
        p[i] = aj_param_init(m, i, b, 5);
        for (int64_t j = 0; j < aj_tensor_numel(&p[i]); j++)
            ((float *)p[i].data)[j] = 0.8f * (float)sin(1.3 * (double)(j + 1) + 2.1 * i);
    }
    return p;
}

/* Sum of exp(fn(x)) over all K^D vectors x, one batch. */
static double total_prob(const norm_case *c, uint64_t seed) {
    char path[1024], dims[128];
    int64_t n = 1;
    for (int i = 0; i < c->D; i++) n *= c->K;
    snprintf(path, sizeof path, "%s/%s", models, c->file);
    snprintf(dims, sizeof dims, "%s,B=%lld", c->dims, (long long)n);
    aj_diag d = {0};
    aj_bind b;
    aj_module *m = aj_load_file(path, dims, &b, &d);
    if (!m) aj_diag_print(&d, stderr);
    assert_non_null(m);
    int64_t shape[2] = {n, c->D};
    aj_tensor x = aj_tensor_new(AJ_F32, 2, shape), ll;
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0, v = r; j < c->D; j++, v /= c->K) ((float *)x.data)[r * c->D + j] = (float)(v % c->K);
    aj_tensor *p = random_params(m, &b);
    const aj_graph *fn = aj_module_fn(m, c->fn);
    assert_non_null(fn);
    if (aj_interp_run(m, fn, p, &x, &ll, seed, &d)) aj_diag_print(&d, stderr);
    assert_false(d.set);
    double s = 0;
    for (int64_t r = 0; r < n; r++) s += exp(((float *)ll.data)[r]);
    for (int i = 0; i < m->nparam; i++) aj_tensor_free(&p[i]);
    free(p);
    aj_tensor_free(&ll);
    aj_tensor_free(&x);
    aj_module_free(m);
    return s;
}

static void test_normalised(void **state) {
    const norm_case *c = *state;
    for (int s = 0; s < c->seeds; s++) {
        double t = total_prob(c, 100 + (uint64_t)s);
        printf("  %s %s seed %d: sum p(x) = %.7f\n", c->file, c->fn, 100 + s, t);
        if (!(fabs(t - 1) < 1e-4)) fail_msg("%s fn %s, seed %d: p(x) sums to %.7f", c->file, c->fn, 100 + s, t);
    }
}

/* ------------------------------------------------------------ training */

typedef struct {
    const char *file, *dims, *data;
} train_case;

static const train_case train_cases[] = {
    {"made.graph", "D=6,H=16", "mnist"},
    {"made2.graph", "D=6,H=16", "mnist"},
    {"made_oa.graph", "D=6,H=16", "mnist"},
    {"softmax_ar.graph", "D=6,K=4", "mnist:4"},
    {"nade_kary.graph", "D=6,K=4,H=8", "mnist:4"},
};

/* Two epochs of Adam on the fused engine: the valid NLL ends well below
 * the first step's loss. */
static void test_trains(void **state) {
    const train_case *c = *state;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", models, c->file);
    aj_diag d = {0};
    aj_job j = {0};
    j.model = path;
    j.dims = c->dims;
    j.data = c->data;
    j.engine = aj_engine_find("fused", &d);
    j.batch = 10;
    j.seed = 3;
    j.epochs = 2;
    j.lr = 0.01;
    j.opt = (aj_optim){AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    aj_train_result r;
    int rc = aj_train(&j, &r, &d);
    if (rc) aj_diag_print(&d, stderr);
    assert_int_equal(rc, 0);
    printf("  %s: first loss %.3f, valid NLL %.3f\n", c->file, r.first_loss, r.valid_nll);
    if (!(r.valid_nll < r.first_loss - 1))
        fail_msg("%s: valid NLL %.3f, first loss %.3f", c->file, r.valid_nll, r.first_loss);
}

/* ------------------------------------------------------------ datasets */

/* mnist:K maps pixel p to floor(p K / 256): the synthetic 0 / 255 pixels
 * become 0 and K-1, and mnist:2 is mnist; K outside 2..256 is refused. */
static void test_mnist_levels(void **state) {
    (void)state;
    aj_dataset a, b;
    aj_diag d = {0};
    assert_int_equal(aj_dataset_load("mnist:4", "train", &a, &d), 0);
    assert_int_equal(aj_dataset_load("mnist", "train", &b, &d), 0);
    assert_int_equal(a.n * a.d, b.n * b.d);
    for (int64_t i = 0; i < a.n * a.d; i++) assert_true(a.x[i] == 3 * b.x[i]);
    aj_dataset_free(&a);
    assert_int_equal(aj_dataset_load("mnist:2", "train", &a, &d), 0);
    assert_memory_equal(a.x, b.x, (size_t)(a.n * a.d) * sizeof(float));
    aj_dataset_free(&a);
    aj_dataset_free(&b);
    static const char *bad[] = {"mnist:1", "mnist:257", "mnist:", "mnist:4x"};
    for (int i = 0; i < COUNT(bad); i++) {
        memset(&d, 0, sizeof d);
        assert_int_equal(aj_dataset_load(bad[i], "train", &a, &d), -1);
        assert_non_null(strstr(d.msg, "mnist:K needs K grey levels, 2 to 256"));
    }
}

/* ---------------------------------------------------------------- main */

static int setup(void **state) {
    (void)state;
    const char *src = getenv("ARJIT_SOURCE_DIR");
    snprintf(models, sizeof models, "%s/models", src ? src : ".");
    snprintf(dir, sizeof dir, "/tmp/arjit_test_family_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    setenv("ARJIT_DATA", dir, 1);
    write_synthetic_idx(dir, "train-images-idx3-ubyte", 600, 1);
    write_synthetic_idx(dir, "t10k-images-idx3-ubyte", 100, 2);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    struct CMUnitTest t[COUNT(norm_cases) + COUNT(train_cases) + 1];
    static char names[COUNT(norm_cases) + COUNT(train_cases)][96];
    int n = 0;
    for (int i = 0; i < COUNT(norm_cases); i++, n++) {
        snprintf(names[n], sizeof names[n], "%s fn %s sums to 1", norm_cases[i].file, norm_cases[i].fn);
        t[n] = (struct CMUnitTest){names[n], test_normalised, NULL, NULL, (void *)&norm_cases[i]};
    }
    for (int i = 0; i < COUNT(train_cases); i++, n++) {
        snprintf(names[n], sizeof names[n], "%s trains", train_cases[i].file);
        t[n] = (struct CMUnitTest){names[n], test_trains, NULL, NULL, (void *)&train_cases[i]};
    }
    t[n++] = (struct CMUnitTest)cmocka_unit_test(test_mnist_levels);
    aj_set_threads(2);
    return _cmocka_run_group_tests("family", t, (size_t)n, setup, teardown);
}
