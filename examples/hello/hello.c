/* p("hello") under the character RNN of hello.graph, as the product of its
 * conditionals p(x_1) p(x_2 | x_1) ... p(x_5 | x_<5), before and after
 * training on the word (Adam, the fused engine).
 *
 *   hello [GRAPH [STEPS]]     (default examples/hello/hello.graph, 100) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arjit.h"
#include "arjit_compile.h"

static const char alphabet[] = "helo";   /* token i is alphabet[i] */
static const char word[] = "hello";
enum { T = 5 };

/* prints p(word) = prod_t p(x_t | x_<t) from fn logp; 0 or -1 on an error */
static int show(const aj_module *m, const aj_tensor *params, const aj_tensor *x, const char *when) {
    aj_diag d = {0};
    aj_tensor lp = {0};
    if (aj_fused_run(m, aj_module_fn(m, "logp"), params, x, &lp, 1, &d)) {
        aj_diag_print(&d, stderr);
        return -1;
    }
    double total = 0;
    printf("%s:\n  p(hello) =", when);
    for (int t = 0; t < T; t++) printf(" p(%c%s%.*s)", word[t], t ? " | " : "", t, word);
    printf("\n          =");
    for (int t = 0; t < T; t++) {
        double l = ((float *)lp.data)[t];
        printf("%s %.3f", t ? " *" : "", exp(l));
        total += l;
    }
    printf("\n          = %.4g\n", exp(total));
    aj_tensor_free(&lp);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "examples/hello/hello.graph";
    int steps = argc > 2 ? atoi(argv[2]) : 100;
    if (argc > 3 || steps < 0) {
        fprintf(stderr, "usage: hello [GRAPH [STEPS]]\n");
        return 2;
    }
    aj_diag d = {0};
    aj_module *m = aj_load_file(path, "B=1", NULL, &d);
    aj_optim o = {.kind = AJ_OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    aj_graph *step = m ? aj_train_step(m, "loglik", &o, &d) : NULL;
    if (!step || !aj_module_fn(m, "logp")) {
        if (m && step) fprintf(stderr, "%s: error: the model has no fn logp\n", path);
        else aj_diag_print(&d, stderr);
        aj_module_free(m);
        return 1;
    }
    int np = m->nparam, rc = 1;
    /* train_step(x, lr, decay, m_P..., v_P...) -> loss, P'..., m'..., v'... */
    aj_tensor *p = calloc((size_t)np, sizeof *p), *in = calloc((size_t)step->nleaf, sizeof *in);
    aj_tensor *res = calloc((size_t)step->nresult, sizeof *res);
    for (int i = 0; i < np; i++) p[i] = aj_param_init(m, i, &m->bind, 1 + (uint64_t)i);
    in[0] = aj_tensor_new(AJ_I32, 2, (int64_t[]){1, T});
    for (int t = 0; t < T; t++) ((int32_t *)in[0].data)[t] = (int32_t)(strchr(alphabet, word[t]) - alphabet);
    in[1] = aj_tensor_new(AJ_F32, 0, NULL);
    in[2] = aj_tensor_new(AJ_F32, 0, NULL);
    for (int k = 0; k < 2 * np; k++) in[3 + k] = aj_tensor_new(AJ_F32, p[k % np].rank, p[k % np].shape);
    if (show(m, p, &in[0], "before training")) goto out;
    for (int it = 1; it <= steps; it++) {
        double lr = 0.05;   /* Adam's bias correction folded into the step size */
        *(float *)in[1].data = (float)(lr * sqrt(1 - pow(o.beta2, it)) / (1 - pow(o.beta1, it)));
        if (aj_fused_run(m, step, p, in, res, (uint64_t)it, &d)) {
            aj_diag_print(&d, stderr);
            goto out;
        }
        aj_tensor_free(&res[0]);
        for (int k = 0; k < np; k++) {
            aj_tensor_free(&p[k]);
            p[k] = res[1 + k];
        }
        for (int k = 0; k < 2 * np; k++) {
            aj_tensor_free(&in[3 + k]);
            in[3 + k] = res[1 + np + k];
        }
    }
    char when[64];
    snprintf(when, sizeof when, "after %d steps of Adam on \"hello\"", steps);
    rc = show(m, p, &in[0], when) ? 1 : 0;
out:
    for (int i = 0; i < np; i++) aj_tensor_free(&p[i]);
    for (int i = 0; i < step->nleaf; i++) aj_tensor_free(&in[i]);
    free(p), free(in), free(res);
    aj_engine_forget(m);
    aj_module_free(m);
    return rc;
}
