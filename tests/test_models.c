/* The lecture models, run by the reference interpreter, against numbers
 * worked out by hand and against plain-C implementations of the papers'
 * equations that share nothing with the graph files.
 *
 * - FVSBN (models/fvsbn.graph), D = 4: the lecture's example
 *   p(x1=0, x2=1, x3=1, x4=0), and the 16 probabilities summing to 1.
 * - NADE (models/nade.graph), D = 3, H = 2: log p(x) of every vector
 *   against the equations of Larochelle & Murray (2011), summing to 1.
 * - both samplers: shape and 0/1 values, saturated parameters, seeds, and
 *   pattern frequencies matching the model's own probabilities. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "arjit.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

typedef struct {
    aj_module *m;
    aj_tensor *param;    /* one per module parameter, by index */
} model;

/* models/<file> with dims bound by `dims` ("D=4,B=1"), verified; the
 * parameters are allocated (zeros) in their bound shapes. */
static model load(const char *file, const char *dims) {
    const char *root = getenv("ARJIT_SOURCE_DIR");
    assert_non_null(root);
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s", root, file);
    aj_diag d;
    model md;
    md.m = aj_parse_file(path, &d);
    if (!md.m) aj_diag_print(&d, stderr);
    assert_non_null(md.m);
    aj_bind b;
    aj_bind_defaults(md.m, &b);
    assert_int_equal(aj_bind_parse(md.m, &b, dims, &d), 0);
    if (aj_module_infer(md.m, &b, &d)) aj_diag_print(&d, stderr);
    assert_int_equal(d.set, 0);
    md.param = calloc((size_t)md.m->nparam, sizeof *md.param);
    assert_non_null(md.param);
    for (int i = 0; i < md.m->nparam; i++) {
        md.param[i] = aj_param_init(md.m, i, &b, 1);
        assert_non_null(md.param[i].data);
    }
    return md;
}

static void unload(model *md) {
    for (int i = 0; i < md->m->nparam; i++) aj_tensor_free(&md->param[i]);
    free(md->param);
    aj_module_free(md->m);
}

/* Copy `n` numbers into parameter `name` (checking its size). */
static void set_param(model *md, const char *name, const float *v, int64_t n) {
    int k = aj_module_param_index(md->m, name);
    assert_true(k >= 0);
    assert_int_equal(aj_tensor_numel(&md->param[k]), n);
    memcpy(md->param[k].data, v, sizeof(float) * (size_t)n);
}

static void fill_param(model *md, const char *name, float v) {
    int k = aj_module_param_index(md->m, name);
    assert_true(k >= 0);
    float *p = md->param[k].data;
    for (int64_t i = 0; i < aj_tensor_numel(&md->param[k]); i++) p[i] = v;
}

/* Run fn `fn` (one result) on `inputs`; the result is the caller's. */
static aj_tensor run(const model *md, const char *fn, const aj_tensor *inputs, uint64_t seed) {
    const aj_graph *g = aj_module_fn(md->m, fn);
    assert_non_null(g);
    assert_int_equal(g->nresult, 1);
    aj_tensor out;
    aj_diag d;
    memset(&d, 0, sizeof d);
    int rc = aj_interp_run(md->m, g, md->param, inputs, &out, seed, &d);
    if (rc) aj_diag_print(&d, stderr);
    assert_int_equal(rc, 0);
    return out;
}

/* An f32 [B, D] batch: row r is the bits of code[r] (x_j = bit j). */
static aj_tensor binary_batch(int B, int D, const int *code) {
    int64_t shape[2] = {B, D};
    aj_tensor x = aj_tensor_new(AJ_F32, 2, shape);
    assert_non_null(x.data);
    float *p = x.data;
    for (int r = 0; r < B; r++)
        for (int j = 0; j < D; j++) p[r * D + j] = (float)((code[r] >> j) & 1);
    return x;
}

/* log p(x) of each row of the batch `code` under fn loglik. */
static void loglik(const model *md, int B, int D, const int *code, double *ll) {
    aj_tensor x = binary_batch(B, D, code);
    aj_tensor out = run(md, "loglik", &x, 0);
    assert_int_equal(out.dtype, AJ_F32);
    assert_int_equal(out.rank, 1);
    assert_int_equal(out.shape[0], B);
    for (int r = 0; r < B; r++) ll[r] = ((float *)out.data)[r];
    aj_tensor_free(&out);
    aj_tensor_free(&x);
}

/* |a - b| <= tol, printing both on failure (cmocka 1.1 compares floats only) */
#define assert_close(a, b, tol) assert_close_((a), (b), (tol), #a, #b)
static void assert_close_(double a, double b, double tol, const char *sa, const char *sb) {
    if (!(fabs(a - b) <= tol)) fprintf(stderr, "%s = %.9g, %s = %.9g: differ by more than %g\n", sa, a, sb, b, tol);
    assert_true(fabs(a - b) <= tol);
}

static double sigm(double z) { return 1 / (1 + exp(-z)); }

/* ------------------------------------------------------------------ FVSBN */

/* FVSBN, D = 4, lecture numbering (1-based):
 *   b = (b1, b2, b3, b4) = (0.2, -0.5, 0.3, -0.1)
 *   W21 = 1.5, W31 = -0.7, W32 = 0.4, W41 = 0.9, W42 = -1.2, W43 = 0.8
 * Entries on and above the diagonal are set to 7 (0-based row-major below):
 * the graph's strictly-lower mask must ignore them. */
static const float fv_b[4] = {0.2f, -0.5f, 0.3f, -0.1f};
static const float fv_W[16] = {
    7, 7, 7, 7,               /* row 1: nothing before x1 */
    1.5f, 7, 7, 7,            /* row 2: W21 */
    -0.7f, 0.4f, 7, 7,        /* row 3: W31 W32 */
    0.9f, -1.2f, 0.8f, 7,     /* row 4: W41 W42 W43 */
};

static model fvsbn(const char *dims) {
    model md = load("fvsbn.graph", dims);
    set_param(&md, "W", fv_W, 16);
    set_param(&md, "b", fv_b, 4);
    return md;
}

static void test_fvsbn_lecture_example(void **state) {
    (void)state;
    model md = fvsbn("D=4,B=1");
    /* x = (x1, x2, x3, x4) = (0, 1, 1, 0), code 0b0110 (x_j = bit j-1):
     *   p(x1=0)          = 1 - s(b1)                        = 1 - s(0.2)  = 0.4501660
     *   p(x2=1 | x1)     = s(b2 + W21*0)                    = s(-0.5)     = 0.3775407
     *   p(x3=1 | x1..2)  = s(b3 + W31*0 + W32*1)            = s(0.7)      = 0.6681878
     *   p(x4=0 | x1..3)  = 1 - s(b4 + W41*0 + W42*1 + W43*1) = 1 - s(-0.5) = 0.6224593
     *   p(x) = 0.4501660 * 0.3775407 * 0.6681878 * 0.6224593 = 0.07068804
     *   log p(x) = -2.6494789 */
    const int code = 0x6;
    double ll;
    loglik(&md, 1, 4, &code, &ll);
    double hand = log((1 - sigm(0.2)) * sigm(-0.5 + 1.5 * 0) * sigm(0.3 - 0.7 * 0 + 0.4 * 1) *
                      (1 - sigm(-0.1 + 0.9 * 0 - 1.2 * 1 + 0.8 * 1)));
    assert_close(hand, -2.6494789, 1e-6);
    assert_close(ll, hand, 1e-5);
    unload(&md);
}

static void test_fvsbn_sums_to_one(void **state) {
    (void)state;
    model md = fvsbn("D=4,B=16");
    int code[16];
    double ll[16], total = 0;
    for (int k = 0; k < 16; k++) code[k] = k;
    loglik(&md, 16, 4, code, ll);
    for (int k = 0; k < 16; k++) {
        assert_true(ll[k] < 0);
        total += exp(ll[k]);
    }
    assert_close(total, 1.0, 1e-5);
    assert_close(ll[6], -2.6494789, 1e-5);   /* the same example inside a batch */
    unload(&md);
}

/* ------------------------------------------------------------------ NADE */

enum { ND = 3, NH = 2 };

/* The paper's parameters: W is H x D (column j is the input weight of
 * x_j), V is D x H, b in R^D, c in R^H. */
static const double nade_W[NH][ND] = {{0.5, -1.0, 2.0}, {1.5, 0.25, -0.75}};
static const double nade_V[ND][NH] = {{0.3, -0.6}, {1.1, 0.9}, {-1.4, 0.2}};
static const double nade_b[ND] = {0.1, -0.3, 0.5};
static const double nade_c[NH] = {-0.2, 0.4};

/* Larochelle & Murray (2011), eq. (2)-(3):
 *   h_i = sigm(c + W_{.,<i} x_{<i})
 *   p(x_i = 1 | x_{<i}) = sigm(b_i + V_{i,.} h_i)
 *   log p(x) = sum_i log p(x_i | x_{<i})                              */
static double nade_reference(const int *x) {
    double lp = 0;
    for (int i = 0; i < ND; i++) {
        double h[NH];
        for (int k = 0; k < NH; k++) {
            double a = nade_c[k];
            for (int j = 0; j < i; j++) a += nade_W[k][j] * x[j];
            h[k] = sigm(a);
        }
        double logit = nade_b[i];
        for (int k = 0; k < NH; k++) logit += nade_V[i][k] * h[k];
        double p = sigm(logit);
        lp += log(x[i] ? p : 1 - p);
    }
    return lp;
}

/* The graph's parameters: its W is [D, H] (row j = the paper's column j). */
static model nade(const char *dims) {
    model md = load("nade.graph", dims);
    float W[ND * NH], V[ND * NH], b[ND], c[NH];
    for (int j = 0; j < ND; j++)
        for (int k = 0; k < NH; k++) W[j * NH + k] = (float)nade_W[k][j], V[j * NH + k] = (float)nade_V[j][k];
    for (int j = 0; j < ND; j++) b[j] = (float)nade_b[j];
    for (int k = 0; k < NH; k++) c[k] = (float)nade_c[k];
    set_param(&md, "W", W, ND * NH);
    set_param(&md, "V", V, ND * NH);
    set_param(&md, "b", b, ND);
    set_param(&md, "c", c, NH);
    return md;
}

static void test_nade_matches_paper(void **state) {
    (void)state;
    model md = nade("D=3,H=2,B=2");
    double total = 0;
    for (int k = 0; k < 8; k += 2) {   /* all 8 vectors, two per batch */
        int code[2] = {k, k + 1};
        double ll[2];
        loglik(&md, 2, ND, code, ll);
        for (int r = 0; r < 2; r++) {
            int x[ND];
            for (int j = 0; j < ND; j++) x[j] = (code[r] >> j) & 1;
            assert_close(ll[r], nade_reference(x), 1e-5);
            total += exp(ll[r]);
        }
    }
    assert_close(total, 1.0, 1e-5);
    unload(&md);
}

/* ------------------------------------------------------------------ samplers */

typedef struct {
    const char *name;
    const char *dims;
    int D;
    model (*plain)(const char *dims);   /* the file's own initialisers */
    model (*setup)(const char *dims);   /* the hand-chosen parameters above */
} sampler_case;

static model fvsbn_plain(const char *dims) { return load("fvsbn.graph", dims); }
static model nade_plain(const char *dims) { return load("nade.graph", dims); }

static const sampler_case samplers[] = {
    {"fvsbn", "D=4", 4, fvsbn_plain, fvsbn},
    {"nade", "D=3,H=2", 3, nade_plain, nade},
};

/* fn sample at batch B: a [B, D] tensor of 0s and 1s. */
static aj_tensor sample(const model *md, int B, int D, uint64_t seed) {
    aj_tensor x = run(md, "sample", NULL, seed);
    assert_int_equal(x.dtype, AJ_F32);
    assert_int_equal(x.rank, 2);
    assert_int_equal(x.shape[0], B);
    assert_int_equal(x.shape[1], D);
    const float *p = x.data;
    for (int64_t i = 0; i < (int64_t)B * D; i++) assert_true(p[i] == 0.0f || p[i] == 1.0f);
    return x;
}

static char *dims_with_batch(const sampler_case *s, int B) {
    static char buf[64];
    snprintf(buf, sizeof buf, "%s,B=%d", s->dims, B);
    return buf;
}

/* Shape, 0/1 values, and the seed: same seed, same samples; another seed,
 * other samples (20 or 15 fair coins agreeing by chance: < 1e-4). */
static void test_sampler_seeds(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof samplers / sizeof samplers[0]; i++) {
        const sampler_case *s = &samplers[i];
        model md = s->plain(dims_with_batch(s, 5));
        fill_param(&md, "W", 0);
        fill_param(&md, "b", 0);   /* every x_i a fair coin */
        aj_tensor a = sample(&md, 5, s->D, 42), b = sample(&md, 5, s->D, 42), c = sample(&md, 5, s->D, 43);
        size_t bytes = sizeof(float) * 5 * (size_t)s->D;
        assert_memory_equal(a.data, b.data, bytes);
        assert_memory_not_equal(a.data, c.data, bytes);
        aj_tensor_free(&a), aj_tensor_free(&b), aj_tensor_free(&c);
        unload(&md);
    }
}

/* W = 0 and a large positive bias: p(x_i = 1) = sigmoid(30), all ones;
 * a large negative one: all zeros. */
static void test_sampler_saturated(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof samplers / sizeof samplers[0]; i++) {
        const sampler_case *s = &samplers[i];
        for (int sign = -1; sign <= 1; sign += 2) {
            model md = s->plain(dims_with_batch(s, 5));
            fill_param(&md, "W", 0);
            fill_param(&md, "b", 30.0f * (float)sign);
            for (uint64_t seed = 1; seed <= 3; seed++) {
                aj_tensor x = sample(&md, 5, s->D, seed);
                const float *p = x.data;
                for (int j = 0; j < 5 * s->D; j++) assert_true(p[j] == (sign > 0 ? 1.0f : 0.0f));
                aj_tensor_free(&x);
            }
            unload(&md);
        }
    }
}

/* Ancestral sampling draws from the model's own distribution: with the
 * hand-chosen parameters, the frequency of each of the 2^D patterns among
 * N samples is within 5 standard errors of exp(loglik). */
static void test_sampler_frequencies(void **state) {
    (void)state;
    enum { N = 4000 };
    for (size_t i = 0; i < sizeof samplers / sizeof samplers[0]; i++) {
        const sampler_case *s = &samplers[i];
        int npat = 1 << s->D, count[16] = {0}, code[16];
        model gen = s->setup(dims_with_batch(s, N));
        aj_tensor x = sample(&gen, N, s->D, 7);
        const float *p = x.data;
        for (int r = 0; r < N; r++) {
            int k = 0;
            for (int j = 0; j < s->D; j++) k |= (p[r * s->D + j] != 0) << j;
            count[k]++;
        }
        aj_tensor_free(&x);
        unload(&gen);

        model sc = s->setup(dims_with_batch(s, npat));
        double ll[16];
        for (int k = 0; k < npat; k++) code[k] = k;
        loglik(&sc, npat, s->D, code, ll);
        for (int k = 0; k < npat; k++) {
            double q = exp(ll[k]), se = sqrt(q * (1 - q) / N);
            double f = (double)count[k] / N;
            if (fabs(f - q) > 5 * se) fprintf(stderr, "%s pattern %d: frequency %g, p %g\n", s->name, k, f, q);
            assert_true(fabs(f - q) <= 5 * se);
        }
        unload(&sc);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fvsbn_lecture_example),
        cmocka_unit_test(test_fvsbn_sums_to_one),
        cmocka_unit_test(test_nade_matches_paper),
        cmocka_unit_test(test_sampler_seeds),
        cmocka_unit_test(test_sampler_saturated),
        cmocka_unit_test(test_sampler_frequencies),
    };
    return cmocka_run_group_tests_name("models", tests, NULL, NULL);
}
