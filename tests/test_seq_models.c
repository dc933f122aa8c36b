/* The sequence models of models/ (RNN, LSTM, GRU, GPT) learn and sample on the
 * fused engine, at small dims.
 *
 * The data is a counter: x_1 uniform in [0, V), then x_t = x_{t-1} + 1 mod
 * V. Its entropy is ln V nats per sequence (only x_1 is random), so a model
 * that learned it has NLL near ln V, against T ln V for a uniform one; and
 * its samples count. Each model's train_step (loss, gradients, Adam) runs
 * on the fused engine, then fn sample does, with the trained parameters. */
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

enum { B = 16, T = 8, V = 4, STEPS = 300 };

static void counter_batch(aj_tensor *x, uint64_t *rng) {
    int32_t *p = x->data;
    for (int b = 0; b < B; b++) {
        *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
        int32_t start = (int32_t)((*rng >> 33) % V);
        for (int t = 0; t < T; t++) p[b * T + t] = (start + t) % V;
    }
}

static void learn_and_sample(const char *file, const char *dims) {
    char path[1024];
    const char *src = getenv("ARJIT_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/models/%s", src ? src : ARJIT_SOURCE_DIR, file);
    aj_diag d = {0};
    aj_module *m = aj_load_file(path, dims, NULL, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("%s does not load", file);
    }
    aj_optim o = {.kind = AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    aj_graph *step = aj_train_step(m, "loglik", &o, &d);
    if (!step) {
        aj_diag_print(&d, stderr);
        fail_msg("%s: no train_step", file);
    }
    aj_tensor *params = calloc((size_t)m->nparam, sizeof *params);
    for (int i = 0; i < m->nparam; i++) params[i] = aj_param_init(m, i, &m->bind, 1 + (uint64_t)i);
    /* train_step(x, lr, decay, m_P..., v_P...) -> loss, P'..., m'..., v'...; it updates every parameter */
    int np = m->nparam, nin = 3 + 2 * np;
    assert_int_equal(step->nleaf, nin);
    aj_tensor *in = calloc((size_t)nin, sizeof *in), *res = calloc((size_t)step->nresult, sizeof *res);
    in[0] = aj_tensor_new(AJ_I32, 2, (int64_t[]){B, T});
    in[1] = aj_tensor_new(AJ_F32, 0, NULL);
    in[2] = aj_tensor_new(AJ_F32, 0, NULL);
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < np; k++) in[3 + s * np + k] = aj_tensor_new(AJ_F32, params[k].rank, params[k].shape);
    uint64_t rng = 42;
    double first = 0, last = 0;
    for (int it = 1; it <= STEPS; it++) {
        counter_batch(&in[0], &rng);
        double lr = 0.01;
        *(float *)in[1].data = (float)(lr * sqrt(1 - pow(o.beta2, it)) / (1 - pow(o.beta1, it)));
        *(float *)in[2].data = 0;
        if (aj_fused_run(m, step, params, in, res, (uint64_t)it, &d)) {
            aj_diag_print(&d, stderr);
            fail_msg("%s: train_step failed on the fused engine", file);
        }
        double loss = *(float *)res[0].data;
        if (it == 1) first = loss;
        last = loss;
        aj_tensor_free(&res[0]);
        for (int k = 0; k < np; k++) {
            aj_tensor_free(&params[k]);
            params[k] = res[1 + k];
            for (int s = 0; s < 2; s++) {
                aj_tensor_free(&in[3 + s * np + k]);
                in[3 + s * np + k] = res[1 + np + s * np + k];
            }
        }
    }
    /* from about T ln V (11.1 nats) to near ln V (1.39) */
    if (!(first > 0.8 * T * log(V) && last < 2.2)) fail_msg("%s: NLL %.3f after %d steps (first %.3f)", file, last, STEPS, first);

    /* its samples count up: every step after the first follows the counter */
    const aj_graph *sample = aj_module_fn(m, "sample");
    assert_non_null(sample);
    aj_tensor x = {0};
    if (aj_fused_run(m, sample, params, NULL, &x, 5, &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("%s: sample failed on the fused engine", file);
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
    for (int i = 0; i < nin; i++) aj_tensor_free(&in[i]);
    for (int k = 0; k < np; k++) aj_tensor_free(&params[k]);
    free(in), free(res), free(params);
    aj_engine_forget(m);
    aj_module_free(m);
}

static void test_rnn(void **state) {
    (void)state;
    learn_and_sample("rnn.graph", "B=16,T=8,V=4,E=8,H=16");
}
static void test_lstm(void **state) {
    (void)state;
    learn_and_sample("lstm.graph", "B=16,T=8,V=4,E=8,H=16");
}
static void test_gru(void **state) {
    (void)state;
    learn_and_sample("gru.graph", "B=16,T=8,V=4,E=8,H=16");
}
static void test_gpt(void **state) {
    (void)state;
    learn_and_sample("gpt.graph", "B=16,T=8,V=4,E=16,L=2");
}

int main(void) {
    aj_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rnn),
        cmocka_unit_test(test_lstm),
        cmocka_unit_test(test_gru),
        cmocka_unit_test(test_gpt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
