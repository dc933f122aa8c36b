/* The training step graph (compiler/optim.c): each optimizer's update on a
 * tiny model whose gradient is known, against steps computed by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "arjit.h"

/* loss = mean over the batch of sum_j x_j w_j, so with one example
 * x = (1, 2) the gradient is g = (1, 2). */
static const char *SRC =
    "dim B\n"
    "param w : f32[2] = zeros\n"
    "fn loss(x : f32[B, 2]) -> l\n"
    "  p = mul(x, w)\n"
    "  l = sum(p, axis=1)\n"
    "end\n";

typedef struct {
    const char *name;
    aj_optim opt;
    float w0[2], lr, decay, state0[2][2];
    float want_w[2], want_state[2][2];
} optim_case;

static const optim_case cases[] = {
    /* u' = 0.9 u + g = (1.45, 2.45); w' = w - 0.1 u' */
    {"sgd momentum", {AJ_OPT_SGD, .momentum = 0.9}, {0, 0}, 0.1f, 0, {{0.5f, 0.5f}},
     {-0.145f, -0.245f}, {{1.45f, 2.45f}}},
    /* plain SGD with L2 weight decay 0.5 at w = (1, 1): g + 0.5 w = (1.5, 2.5) */
    {"sgd weight decay", {AJ_OPT_SGD, .weight_decay = 0.5}, {1, 1}, 0.1f, 0, {{0}}, {0.85f, 0.75f}, {{0}}},
    /* m' = 0.1 g = (.1, .2), v' = .001 g^2 = (.001, .004),
     * w' = -0.1 m' / sqrt(v') = -0.1 (3.16228, 3.16228) */
    {"adam", {AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}, {0, 0}, 0.1f, 0, {{0}},
     {-0.316228f, -0.316228f}, {{0.1f, 0.2f}, {0.001f, 0.004f}}},
    /* AdamW at w = (1, 1), decay = lr * wd = 0.01: w' = 1 - 0.316228 - 0.01 */
    {"adamw", {AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1}, {1, 1}, 0.1f, 0.01f,
     {{0}}, {0.673772f, 0.673772f}, {{0.1f, 0.2f}, {0.001f, 0.004f}}},
    /* s' = 0.1 g^2 = (.1, .4); w' = -0.1 g / sqrt(s') = -0.1 (3.16228, 3.16228) */
    {"rmsprop", {AJ_OPT_RMSPROP, .rho = 0.9, .eps = 1e-8}, {0, 0}, 0.1f, 0, {{0}},
     {-0.316228f, -0.316228f}, {{0.1f, 0.4f}}},
    /* ||g|| = sqrt(5) > clip 1: g becomes g / sqrt(5) = (.447214, .894427) */
    {"sgd clipped", {AJ_OPT_SGD, .clip = 1}, {0, 0}, 1, 0, {{0}}, {-0.447214f, -0.894427f}, {{0}}},
};

static void test_optimizer_steps(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const optim_case *tc = &cases[i];
        aj_diag d;
        aj_module *m = aj_parse_string(SRC, strlen(SRC), "optim.graph", &d);
        assert_non_null(m);
        aj_bind b;
        aj_bind_defaults(m, &b);
        assert_int_equal(aj_bind_parse(m, &b, "B=1", &d), 0);
        assert_int_equal(aj_module_infer(m, &b, &d), 0);
        aj_graph *step = aj_train_step(m, "loss", &tc->opt, &d);
        if (!step) aj_diag_print(&d, stderr);
        assert_non_null(step);
        int ns = aj_optim_nstate(&tc->opt);
        assert_int_equal(step->nresult, 2 + ns);

        int64_t two[1] = {2}, x_shape[2] = {1, 2};
        aj_tensor w = aj_tensor_new(AJ_F32, 1, two), in[6];
        memcpy(w.data, tc->w0, sizeof tc->w0);
        in[0] = aj_tensor_new(AJ_F32, 2, x_shape);
        ((float *)in[0].data)[0] = 1, ((float *)in[0].data)[1] = 2;
        in[1] = aj_tensor_new(AJ_F32, 0, NULL);
        in[2] = aj_tensor_new(AJ_F32, 0, NULL);
        *(float *)in[1].data = tc->lr;
        *(float *)in[2].data = tc->decay;
        for (int s = 0; s < ns; s++) {
            in[3 + s] = aj_tensor_new(AJ_F32, 1, two);
            memcpy(in[3 + s].data, tc->state0[s], sizeof tc->state0[s]);
        }
        aj_tensor res[4];
        int rc = aj_interp_run(m, step, &w, in, res, 1, &d);
        if (rc) aj_diag_print(&d, stderr);
        assert_int_equal(rc, 0);
        for (int j = 0; j < 2; j++) {
            assert_float_equal(((float *)res[1].data)[j], tc->want_w[j], 2e-5);
            for (int s = 0; s < ns; s++) assert_float_equal(((float *)res[2 + s].data)[j], tc->want_state[s][j], 2e-6);
        }
        for (int r = 0; r < step->nresult; r++) aj_tensor_free(&res[r]);
        for (int k = 0; k < 3 + ns; k++) aj_tensor_free(&in[k]);
        aj_tensor_free(&w);
        aj_module_free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_optimizer_steps)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
