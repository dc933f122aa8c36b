/* The sequence models of models/ learn, sample and stay autoregressive on
 * the fused engine, at small dims.
 *
 * Language models (RNN, LSTM, GRU, GPT) learn a counter: x_1 uniform in
 * [0, V), then x_t = x_{t-1} + 1 mod V. Its entropy is ln V nats per
 * sequence (only x_1 is random), so a model that learned it has NLL near
 * ln V, against T ln V for a uniform one; and its samples count.
 *
 * BERT's pseudo-log-likelihood falls on the same data.
 *
 * The encoder-decoder Transformer learns reversal (the task reverse:N:
 * tokens 1..10, x = src backwards; 0 is the start token) and its greedy
 * fn predict reverses new strings.
 *
 * The autoregressive property is checked on the per-position terms of fn
 * loglik (its categorical_nll node made the fn's result): changing token j
 * changes no term before j, and changes term j. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arjit.h"
#include "arjit_compile.h"
#include "arjit_train.h"

enum { B = 16, T = 8, V = 4 };

static uint32_t next_rand(uint64_t *rng) {
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*rng >> 33);
}

/* x[b, t] = (start + t) mod V */
static void counter_batch(aj_tensor *x, uint64_t *rng) {
    int32_t *p = x->data;
    for (int b = 0; b < B; b++) {
        int32_t start = (int32_t)(next_rand(rng) % V);
        for (int t = 0; t < T; t++) p[b * T + t] = (start + t) % V;
    }
}

/* src[b, :] random digits 1..10, x[b, t] = src[b, n - 1 - t] */
static void reverse_batch(aj_tensor *src, aj_tensor *x, uint64_t *rng) {
    int64_t nb = src->shape[0], n = src->shape[1];
    int32_t *s = src->data, *y = x->data;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t t = 0; t < n; t++) s[b * n + t] = 1 + (int32_t)(next_rand(rng) % 10);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t t = 0; t < n; t++) y[b * n + t] = s[b * n + n - 1 - t];
}

static aj_module *load_model(const char *file, const char *dims) {
    char path[1024];
    const char *src = getenv("ARJIT_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/models/%s", src ? src : ARJIT_SOURCE_DIR, file);
    aj_diag d = {0};
    aj_module *m = aj_load_file(path, dims, NULL, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("%s does not load", file);
    }
    return m;
}

static aj_tensor *fresh_params(const aj_module *m) {
    aj_tensor *params = calloc((size_t)m->nparam, sizeof *params);
    for (int i = 0; i < m->nparam; i++) params[i] = aj_param_init(m, i, &m->bind, 1 + (uint64_t)i);
    return params;
}

static void free_tensors(aj_tensor *t, int n) {
    for (int i = 0; i < n; i++) aj_tensor_free(&t[i]);
    free(t);
}

/* Adam on fn loglik on the fused engine; `in` holds ndata data tensors
 * (i32 [nb, n] each) that batch() refills before every step. */
typedef struct {
    aj_module *m;
    aj_graph *step;
    aj_optim o;
    aj_tensor *params, *in, *res;
    int ndata;
} trainer;

static trainer trainer_new(aj_module *m, int ndata, int64_t nb, int64_t n) {
    aj_diag d = {0};
    trainer tr = {m, NULL, {.kind = AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}, fresh_params(m), NULL, NULL, ndata};
    tr.step = aj_train_step(m, "loglik", &tr.o, &d);
    if (!tr.step) {
        aj_diag_print(&d, stderr);
        fail_msg("no train_step");
    }
    /* train_step(data..., lr, decay, m_P..., v_P...) -> loss, P'..., m'..., v'... */
    int np = m->nparam;
    assert_int_equal(tr.step->nleaf, ndata + 2 + 2 * np);
    tr.in = calloc((size_t)tr.step->nleaf, sizeof *tr.in);
    tr.res = calloc((size_t)tr.step->nresult, sizeof *tr.res);
    for (int i = 0; i < ndata; i++) tr.in[i] = aj_tensor_new(AJ_I32, 2, (int64_t[]){nb, n});
    tr.in[ndata] = aj_tensor_new(AJ_F32, 0, NULL);
    tr.in[ndata + 1] = aj_tensor_new(AJ_F32, 0, NULL);
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < np; k++)
            tr.in[ndata + 2 + s * np + k] = aj_tensor_new(AJ_F32, tr.params[k].rank, tr.params[k].shape);
    return tr;
}

/* One step `it` (from 1) at learning rate lr; the loss before it. */
static double trainer_step(trainer *tr, int it, double lr) {
    aj_diag d = {0};
    int np = tr->m->nparam, s0 = tr->ndata + 2;
    *(float *)tr->in[tr->ndata].data = (float)(lr * sqrt(1 - pow(tr->o.beta2, it)) / (1 - pow(tr->o.beta1, it)));
    *(float *)tr->in[tr->ndata + 1].data = 0;
    if (aj_fused_run(tr->m, tr->step, tr->params, tr->in, tr->res, (uint64_t)it, &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("train_step failed on the fused engine");
    }
    double loss = *(float *)tr->res[0].data;
    aj_tensor_free(&tr->res[0]);
    for (int k = 0; k < np; k++) {
        aj_tensor_free(&tr->params[k]);
        tr->params[k] = tr->res[1 + k];
        for (int s = 0; s < 2; s++) {
            aj_tensor_free(&tr->in[s0 + s * np + k]);
            tr->in[s0 + s * np + k] = tr->res[1 + np + s * np + k];
        }
    }
    return loss;
}

static void trainer_free(trainer *tr) {
    free_tensors(tr->in, tr->step->nleaf);
    free_tensors(tr->params, tr->m->nparam);
    free(tr->res);
    aj_engine_forget(tr->m);
}

/* fn name(args) on the fused engine, one result */
static aj_tensor run_fn(const aj_module *m, const char *name, const aj_tensor *params, const aj_tensor *args) {
    aj_diag d = {0};
    const aj_graph *fn = aj_module_fn(m, name);
    if (!fn) fail_msg("no fn %s", name);
    aj_tensor y = {0};
    if (aj_fused_run(m, fn, params, args, &y, 5, &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("fn %s failed on the fused engine", name);
    }
    return y;
}

/* 300 steps on the counter, from a fresh trainer of m */
static trainer learn_counter(aj_module *m, const char *file) {
    trainer tr = trainer_new(m, 1, B, T);
    uint64_t rng = 42;
    double first = 0, last = 0;
    for (int it = 1; it <= 300; it++) {
        counter_batch(&tr.in[0], &rng);
        last = trainer_step(&tr, it, 0.01);
        if (it == 1) first = last;
    }
    /* from about T ln V (11.1 nats) to near ln V (1.39) */
    if (!(first > 0.8 * T * log(V) && last < 2.2)) fail_msg("%s: NLL %.3f after 300 steps (first %.3f)", file, last, first);
    return tr;
}

static void learn_and_sample(const char *file, const char *dims) {
    aj_module *m = load_model(file, dims);
    trainer tr = learn_counter(m, file);

    /* its samples count up: every step after the first follows the counter */
    aj_diag d = {0};
    aj_tensor x;
    if (aj_ancestral(m, aj_fused_run, tr.params, &(aj_ancestral_opts){.seed = 5}, &x, &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("%s: the derived sampler failed on the fused engine", file);
    }
    assert_int_equal(x.dtype, AJ_I32);
    int ok = 0;
    for (int b = 0; b < B; b++)
        for (int t = 1; t < T; t++) {
            int32_t prev = ((int32_t *)x.data)[b * T + t - 1], cur = ((int32_t *)x.data)[b * T + t];
            assert_true(cur >= 0 && cur < V);
            ok += cur == (prev + 1) % V;
        }
    if (ok < 0.9 * B * (T - 1)) fail_msg("%s: %d of %d sampled steps follow the counter", file, ok, B * (T - 1));
    aj_tensor_free(&x);
    trainer_free(&tr);
    aj_module_free(m);
}

/* The autoregressive property of fn loglik's last data argument x : i32[nb,
 * n] (the others, such as a source, held fixed): with loglik's result made
 * its categorical_nll node, the per-position -log p(x_t | x_<t, ...),
 * changing x_j moves no term t < j and moves term j, for every j. */
static void autoregressive(const char *file, const char *dims, int32_t vocab) {
    aj_module *m = load_model(file, dims);
    aj_graph *g = aj_module_fn(m, "loglik");
    assert_non_null(g);
    int nll = -1;
    for (int i = 0; i < g->nnode; i++)
        if (g->node[i].op == AJ_OP_CATEGORICAL_NLL) nll = g->node[i].out[0];
    assert_true(nll >= 0);
    g->result[0] = nll;
    aj_tensor *params = fresh_params(m);
    int na = g->nleaf;
    aj_tensor *args = calloc((size_t)na, sizeof *args), *x = &args[na - 1];
    for (int i = 0; i < na; i++) args[i] = aj_tensor_new(AJ_I32, 2, (int64_t[]){4, T});
    uint64_t rng = 7;
    for (int i = 0; i < na; i++)
        for (int64_t e = 0; e < 4 * T; e++) ((int32_t *)args[i].data)[e] = 1 + (int32_t)(next_rand(&rng) % (uint32_t)(vocab - 1));
    aj_tensor base = run_fn(m, "loglik", params, args);
    assert_int_equal(base.rank, 2);
    for (int j = 0; j < T; j++) {
        int32_t keep[4];
        for (int b = 0; b < 4; b++) {
            keep[b] = ((int32_t *)x->data)[b * T + j];
            ((int32_t *)x->data)[b * T + j] = 1 + keep[b] % (vocab - 1);   /* another token, not 0 */
        }
        aj_tensor y = run_fn(m, "loglik", params, args);
        for (int b = 0; b < 4; b++) {
            const float *p = (const float *)base.data + b * T, *q = (const float *)y.data + b * T;
            for (int t = 0; t < j; t++)
                if (p[t] != q[t]) fail_msg("%s: x_%d changed term %d (%g -> %g)", file, j, t, p[t], q[t]);
            if (p[j] == q[j]) fail_msg("%s: x_%d did not change its own term", file, j);
            ((int32_t *)x->data)[b * T + j] = keep[b];
        }
        aj_tensor_free(&y);
    }
    aj_tensor_free(&base);
    free_tensors(args, na);
    free_tensors(params, m->nparam);
    aj_engine_forget(m);
    aj_module_free(m);
}

static void test_rnn(void **state) {
    (void)state;
    learn_and_sample("rnn.graph", "B=16,T=8,V=4,E=8,H=16");
    autoregressive("rnn.graph", "B=4,T=8,V=5,E=8,H=16", 5);
}
static void test_lstm(void **state) {
    (void)state;
    learn_and_sample("lstm.graph", "B=16,T=8,V=4,E=8,H=16");
    autoregressive("lstm.graph", "B=4,T=8,V=5,E=8,H=16", 5);
}
static void test_gru(void **state) {
    (void)state;
    learn_and_sample("gru.graph", "B=16,T=8,V=4,E=8,H=16");
    autoregressive("gru.graph", "B=4,T=8,V=5,E=8,H=16", 5);
}
static void test_gpt(void **state) {
    (void)state;
    learn_and_sample("gpt.graph", "B=16,T=8,V=4,E=16,L=2");
    autoregressive("gpt.graph", "B=4,T=8,V=5,E=16,L=2", 5);
}

/* BERT's pseudo-log-likelihood falls on the counter too (each token is
 * known from its neighbours: towards 0), and its Gibbs sampler draws
 * tokens of the vocabulary. */
static void test_bert(void **state) {
    (void)state;
    aj_module *m = load_model("bert.graph", "B=16,T=8,V=4,E=16,L=1,S=2");
    trainer tr = learn_counter(m, "bert.graph");
    aj_tensor x = run_fn(m, "sample", tr.params, NULL);
    assert_int_equal(x.dtype, AJ_I32);
    assert_int_equal(aj_tensor_numel(&x), B * T);
    for (int e = 0; e < B * T; e++) assert_true(((int32_t *)x.data)[e] >= 0 && ((int32_t *)x.data)[e] < V);
    aj_tensor_free(&x);
    trainer_free(&tr);
    aj_module_free(m);
}

/* The Transformer's decoder is autoregressive given the source; it learns
 * to reverse 4 digits and its greedy decoding reverses new ones. */
static void test_transformer(void **state) {
    (void)state;
    autoregressive("transformer.graph", "B=4,N=8,E=16,L=1", 11);
    enum { NB = 32, N = 4, STEPS = 400 };
    aj_module *m = load_model("transformer.graph", "B=32,N=4,E=32,L=1");
    trainer tr = trainer_new(m, 2, NB, N);
    uint64_t rng = 3;
    double first = 0, last = 0;
    for (int it = 1; it <= STEPS; it++) {
        reverse_batch(&tr.in[0], &tr.in[1], &rng);
        last = trainer_step(&tr, it, 0.003);
        if (it == 1) first = last;
    }
    /* uniform over 10 digits is 4 ln 10 = 9.2 nats; reversal is certain */
    if (!(first > 0.7 * N * log(10) && last < 0.3)) fail_msg("transformer: NLL %.3f after %d steps (first %.3f)", last, STEPS, first);
    aj_tensor src = aj_tensor_new(AJ_I32, 2, (int64_t[]){NB, N}), want = aj_tensor_new(AJ_I32, 2, (int64_t[]){NB, N});
    rng = 99;   /* new strings */
    reverse_batch(&src, &want, &rng);
    aj_tensor got = run_fn(m, "predict", tr.params, &src);
    int exact = 0;
    for (int b = 0; b < NB; b++) exact += !memcmp((int32_t *)got.data + b * N, (int32_t *)want.data + b * N, N * sizeof(int32_t));
    if (exact < 0.9 * NB) fail_msg("transformer: %d of %d new strings reversed exactly", exact, NB);
    /* sampling given the source: at this NLL, nearly every draw is the reversal */
    aj_tensor drawn = run_fn(m, "sample", tr.params, &src);
    int same = 0;
    for (int e = 0; e < NB * N; e++) same += ((int32_t *)drawn.data)[e] == ((int32_t *)want.data)[e];
    if (same < 0.9 * NB * N) fail_msg("transformer: %d of %d sampled tokens follow the reversal", same, NB * N);
    aj_tensor_free(&src), aj_tensor_free(&want), aj_tensor_free(&got), aj_tensor_free(&drawn);
    trainer_free(&tr);
    aj_module_free(m);
}

/* What `arjit gradcheck` checks, at small dims: every parameter's gradient
 * against central differences (in double, on the interpreter). The
 * Transformer's ReLUs have kinks that a step of 1e-3 crosses, so it gets
 * 1e-6. */
static void gradcheck(const char *file, const char *dims, double eps) {
    aj_module *m = load_model(file, dims);
    aj_diag d = {0};
    aj_gradcheck_result *r = calloc((size_t)m->nparam, sizeof *r);
    int n = 0;
    if (aj_gradcheck(m, "loglik", 1, 6, eps, r, &n, &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("%s: gradcheck did not run", file);
    }
    assert_int_equal(n, m->nparam);
    for (int i = 0; i < n; i++)
        if (!(r[i].max_rel_err <= 1e-3)) fail_msg("%s: %s: relative error %g", file, r[i].name, r[i].max_rel_err);
    free(r);
    aj_module_free(m);
}
static void test_gradcheck(void **state) {
    (void)state;
    gradcheck("rnn.graph", "B=2,T=5,V=7,E=8,H=5", 1e-3);
    gradcheck("transformer.graph", "B=2,N=4,E=8,L=2", 1e-6);
    gradcheck("bert.graph", "B=2,T=5,V=7,E=8,L=2", 1e-3);
}

int main(void) {
    aj_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rnn),
        cmocka_unit_test(test_lstm),
        cmocka_unit_test(test_gru),
        cmocka_unit_test(test_gpt),
        cmocka_unit_test(test_transformer),
        cmocka_unit_test(test_bert),
        cmocka_unit_test(test_gradcheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
