/* The sampler arjit derives from fn loglik (compiler/sample_step.c,
 * runtime/ancestral.c), on the models of models/ at small dims.
 *
 * - The step's logits are the model's conditionals: for a random x,
 *   sum_t log p(x_t | logits of step t) equals loglik(x), on interp, naive
 *   and fused; and the incremental step's logits equal the full form's.
 * - Draws: the same seed gives the same sample on every engine and in both
 *   forms; a prompt is kept; top_k = 1 is greedy; past the block size the
 *   window slides and the continuation is what the kept tokens give.
 * - The encoder-decoder samples targets for a given source.
 * - FVSBN's conditionals are one masked product over the whole input: its
 *   step is the full form, naming that line.
 */
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

#define COUNT(a) (sizeof(a) / sizeof(a)[0])

static const aj_engine_run engines[] = {aj_interp_run, aj_naive_run, aj_fused_run};
static const char *const engine_name[] = {"interp", "naive", "fused"};

typedef struct {
    aj_module *m;
    aj_tensor *params;
    int64_t B, T;
} model;

static model open_model(const char *file, const char *dims) {
    char path[1024];
    const char *src = getenv("ARJIT_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/models/%s", src ? src : ARJIT_SOURCE_DIR, file);
    aj_diag d = {0};
    model r = {aj_load_file(path, dims, NULL, &d), NULL, 0, 0};
    if (!r.m) {
        aj_diag_print(&d, stderr);
        fail_msg("%s does not load", file);
    }
    r.params = calloc((size_t)r.m->nparam, sizeof *r.params);
    /* normal(0.02) weights make near-uniform conditionals: scale them up */
    for (int i = 0; i < r.m->nparam; i++) {
        r.params[i] = aj_param_init(r.m, i, &r.m->bind, 7 + (uint64_t)i);
        float *p = r.params[i].data;
        for (int64_t k = 0; k < aj_tensor_numel(&r.params[i]); k++) p[k] *= 3;
    }
    const aj_type *xt = &aj_module_fn(r.m, "loglik")->val[aj_module_fn(r.m, "loglik")->leaf[0]].type;
    r.B = xt->dim[0].off, r.T = xt->dim[1].off;
    return r;
}

static void close_model(model *r) {
    for (int i = 0; i < r->m->nparam; i++) aj_tensor_free(&r->params[i]);
    free(r->params);
    aj_engine_forget(r->m);
    aj_module_free(r->m);
}

static void derive(model *r, int full, aj_step_info *info) {
    aj_diag d = {0};
    if (aj_sample_step(r->m, full, info, &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("no sampler derived");
    }
}

/* x: random tokens below V (i32), or bits (f32) */
static aj_tensor random_x(const model *r, int64_t V) {
    const aj_graph *ll = aj_module_fn(r->m, "loglik");
    aj_tensor x = aj_tensor_of_type(&ll->val[ll->leaf[0]].type);
    uint64_t s = 12345;
    for (int64_t i = 0; i < aj_tensor_numel(&x); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int32_t v = (int32_t)((s >> 33) % (uint64_t)V);
        if (x.dtype == AJ_I32) ((int32_t *)x.data)[i] = v;
        else ((float *)x.data)[i] = (float)v;
    }
    return x;
}

/* logits[t] ([B, V] each) of every position of x from fn sample_step on
 * engine e: with the state carried when there is one. */
static float *step_logits(model *r, const aj_tensor *x, aj_engine_run e, int64_t *V) {
    aj_diag d = {0};
    const aj_graph *step = aj_module_fn(r->m, "sample_step"), *init = aj_module_fn(r->m, "sample_init"),
                   *hoisted = aj_module_fn(r->m, "sample_hoist");
    /* step(x, pos, state..., invariants...) -> logits, state'... */
    int n = step->nleaf, nstate = step->nresult - 1;
    aj_tensor *in = calloc((size_t)n, sizeof *in), *res = calloc((size_t)step->nresult, sizeof *res);
    in[0] = *x;
    in[1] = aj_tensor_new(AJ_I32, 1, (int64_t[]){1});
    if (init && e(r->m, init, r->params, in, in + 2, 0, &d)) aj_diag_print(&d, stderr), fail();
    if (hoisted && e(r->m, hoisted, r->params, in, in + 2 + nstate, 0, &d)) aj_diag_print(&d, stderr), fail();
    float *out = NULL;
    for (int64_t t = 0; t < r->T; t++) {
        ((int32_t *)in[1].data)[0] = (int32_t)t;
        if (e(r->m, step, r->params, in, res, 0, &d)) aj_diag_print(&d, stderr), fail();
        *V = res[0].rank == 2 ? res[0].shape[1] : 1;
        if (!out) out = calloc((size_t)(r->T * r->B * *V), sizeof *out);
        memcpy(out + t * r->B * *V, res[0].data, sizeof(float) * (size_t)(r->B * *V));
        aj_tensor_free(&res[0]);
        for (int k = 2; k < 2 + nstate; k++) aj_tensor_free(&in[k]), in[k] = res[k - 1];
    }
    for (int k = 1; k < n; k++) aj_tensor_free(&in[k]);
    free(in), free(res);
    return out;
}

/* sum over t of log p(x_t | logits[t]) per row, against loglik(x) */
static void check_loglik(model *r, const aj_tensor *x, const float *lg, int64_t V, aj_engine_run e) {
    aj_diag d = {0};
    aj_tensor ll = {0};
    if (e(r->m, aj_module_fn(r->m, "loglik"), r->params, x, &ll, 0, &d)) aj_diag_print(&d, stderr), fail();
    for (int64_t b = 0; b < r->B; b++) {
        double sum = 0;
        for (int64_t t = 0; t < r->T; t++) {
            const float *l = lg + (t * r->B + b) * V;
            if (V == 1) {
                double xv = ((float *)x->data)[b * r->T + t];
                sum += xv * l[0] - log1p(exp(l[0]));   /* log sigmoid(l) if 1, log(1 - sigmoid(l)) if 0 */
            } else {
                double mx = l[0], z = 0;
                for (int64_t k = 1; k < V; k++) mx = fmax(mx, l[k]);
                for (int64_t k = 0; k < V; k++) z += exp(l[k] - mx);
                sum += l[((int32_t *)x->data)[b * r->T + t]] - mx - log(z);
            }
        }
        double want = ((float *)ll.data)[b];
        if (fabs(sum - want) > 1e-4 * (1 + fabs(want)))
            fail_msg("row %lld: the steps' log-likelihood %.7g, loglik %.7g", (long long)b, sum, want);
    }
    aj_tensor_free(&ll);
}

/* On each engine: the incremental step scores x as loglik does, and (when
 * the model has a full form) gives the full form's logits. */
static void agree(const char *file, const char *dims, int64_t V, int has_full) {
    for (size_t e = 0; e < COUNT(engines); e++) {
        model inc = open_model(file, dims), full = open_model(file, dims);
        aj_step_info ii, fi;
        derive(&inc, 0, &ii);
        if (!ii.incremental) fail_msg("%s: not incremental: %s", file, ii.why);
        aj_tensor x = random_x(&inc, V);
        int64_t v1, v2;
        float *a = step_logits(&inc, &x, engines[e], &v1);
        check_loglik(&inc, &x, a, v1, engines[e]);
        if (has_full) {
            derive(&full, 1, &fi);
            assert_false(fi.incremental);
            float *b = step_logits(&full, &x, engines[e], &v2);
            assert_int_equal(v1, v2);
            for (int64_t i = 0; i < full.T * full.B * v1; i++)
                if (fabsf(a[i] - b[i]) > 1e-5f * (1 + fabsf(b[i])))
                    fail_msg("%s on %s: logit %lld: incremental %.9g, full %.9g", file, engine_name[e], (long long)i, a[i],
                             b[i]);
            free(b);
        }
        free(a);
        aj_tensor_free(&x);
        close_model(&inc), close_model(&full);
    }
}

static void test_gpt(void **state) { agree("gpt.graph", "B=3,T=6,V=7,E=8,L=2", 7, 1); }
static void test_lstm(void **state) { agree("lstm.graph", "B=3,T=6,V=7,E=8,H=5", 7, 1); }
static void test_gru(void **state) { agree("gru.graph", "B=3,T=6,V=7,E=8,H=5", 7, 1); }
static void test_nade(void **state) { agree("nade.graph", "B=3,D=9,H=5", 2, 0); }

/* n samples of `length` from the derived sampler */
static aj_tensor sample(const char *file, const char *dims, aj_engine_run e, aj_ancestral_opts o) {
    model r = open_model(file, dims);
    aj_diag d = {0};
    aj_tensor out;
    if (aj_ancestral(r.m, e, r.params, &o, &out, &d)) aj_diag_print(&d, stderr), fail();
    close_model(&r);
    return out;
}

static void same(const aj_tensor *a, const aj_tensor *b, const char *what) {
    assert_int_equal(aj_tensor_numel(a), aj_tensor_numel(b));
    if (memcmp(a->data, b->data, 4 * (size_t)aj_tensor_numel(a))) fail_msg("%s: different samples", what);
}

/* The same seed draws the same sample on every engine, in either form. */
static void test_draws_agree(void **state) {
    static const struct { const char *file, *dims; int full; } cases[] = {
        {"gpt.graph", "B=3,T=6,V=7,E=8,L=2", 1},
        {"lstm.graph", "B=3,T=6,V=7,E=8,H=5", 1},
        {"nade.graph", "B=3,D=9,H=5", 0},
    };
    for (size_t c = 0; c < COUNT(cases); c++) {
        aj_ancestral_opts o = {.seed = 5};
        aj_tensor ref = sample(cases[c].file, cases[c].dims, aj_interp_run, o);
        for (size_t e = 1; e < COUNT(engines); e++) {
            aj_tensor s = sample(cases[c].file, cases[c].dims, engines[e], o);
            same(&ref, &s, engine_name[e]);
            aj_tensor_free(&s);
        }
        o.full = 1;
        for (size_t e = 0; e < COUNT(engines) && cases[c].full; e++) {
            aj_tensor s = sample(cases[c].file, cases[c].dims, engines[e], o);
            same(&ref, &s, "full form");
            aj_tensor_free(&s);
        }
        /* another seed draws something else */
        o.seed = 6, o.full = 0;
        aj_tensor s = sample(cases[c].file, cases[c].dims, aj_interp_run, o);
        assert_true(memcmp(ref.data, s.data, 4 * (size_t)aj_tensor_numel(&s)) != 0);
        aj_tensor_free(&s);
        aj_tensor_free(&ref);
    }
}

/* The prompt is kept; top_k = 1 takes the likeliest token given the prefix
 * (the full form's logits say which); and past T = 6 the window slides to
 * its last 3 tokens: the token after the slide is the greedy continuation
 * of those 3 alone. */
static void test_prompt_greedy_window(void **state) {
    const char *dims = "B=1,T=6,V=7,E=8,L=2";
    int32_t prompt[] = {3, 1, 4};
    aj_ancestral_opts o = {.seed = 9, .prompt = prompt, .nprompt = 3, .top_k = 1, .length = 10};
    aj_tensor s = sample("gpt.graph", dims, aj_fused_run, o);
    int32_t *x = s.data;
    for (int t = 0; t < 3; t++) assert_int_equal(x[t], prompt[t]);
    model r = open_model("gpt.graph", dims);
    aj_step_info fi;
    derive(&r, 1, &fi);
    aj_tensor win = aj_tensor_new(AJ_I32, 2, (int64_t[]){1, 6});
    memcpy(win.data, x, 6 * sizeof(int32_t));
    int64_t V;
    float *lg = step_logits(&r, &win, aj_fused_run, &V);
    for (int t = 3; t < 6; t++) {
        int best = 0;
        for (int k = 1; k < V; k++)
            if (lg[t * V + k] > lg[t * V + best]) best = k;
        assert_int_equal(x[t], best);
    }
    free(lg);
    aj_tensor_free(&win);
    close_model(&r);
    /* after the slide: position 6 continues x[3..5] */
    aj_ancestral_opts g = {.seed = 1, .prompt = x + 3, .nprompt = 3, .top_k = 1, .length = 4};
    aj_tensor c = sample("gpt.graph", dims, aj_fused_run, g);
    assert_int_equal(((int32_t *)c.data)[3], x[6]);
    aj_tensor_free(&c);
    aj_tensor_free(&s);
}

/* The encoder-decoder's loglik(src, x) conditions on src: the caller gives
 * it; the incremental (self-attention caches, cross-attention on the
 * encoder's memory) and the full form draw the same targets, on interp and
 * fused, and another source gives other targets. */
static void test_transformer_source(void **state) {
    const char *dims = "B=3,N=5,E=8,L=2";
    aj_tensor src = aj_tensor_new(AJ_I32, 2, (int64_t[]){3, 5});
    for (int i = 0; i < 15; i++) ((int32_t *)src.data)[i] = 1 + (i * 7) % 10;
    aj_ancestral_opts o = {.seed = 3, .args = &src, .nargs = 1};
    aj_tensor ref = sample("transformer.graph", dims, aj_interp_run, o);
    for (int full = 0; full < 2; full++) {
        o.full = full;
        aj_tensor s = sample("transformer.graph", dims, aj_fused_run, o);
        same(&ref, &s, full ? "transformer, full form" : "transformer, fused");
        aj_tensor_free(&s);
    }
    for (int i = 0; i < 15; i++) ((int32_t *)src.data)[i] = 1 + (i * 3) % 10;
    o.full = 0;
    aj_tensor s = sample("transformer.graph", dims, aj_interp_run, o);
    assert_true(memcmp(ref.data, s.data, 4 * 15) != 0);
    aj_tensor_free(&s);
    aj_tensor_free(&ref);
    aj_tensor_free(&src);
}

/* FVSBN's logits are one masked product over all of x: the full form. */
static void test_fvsbn_full(void **state) {
    model r = open_model("fvsbn.graph", "B=2,D=6");
    aj_step_info info;
    derive(&r, 0, &info);
    assert_false(info.incremental);
    assert_non_null(strstr(info.why, "line 20: matmul contracts over the positions"));
    aj_tensor x = random_x(&r, 2);
    int64_t V;
    float *lg = step_logits(&r, &x, aj_interp_run, &V);
    assert_int_equal(V, 1);
    check_loglik(&r, &x, lg, V, aj_interp_run);
    free(lg);
    aj_tensor_free(&x);
    close_model(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt),
        cmocka_unit_test(test_lstm),
        cmocka_unit_test(test_gru),
        cmocka_unit_test(test_nade),
        cmocka_unit_test(test_draws_agree),
        cmocka_unit_test(test_prompt_greedy_window),
        cmocka_unit_test(test_transformer_source),
        cmocka_unit_test(test_fvsbn_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
