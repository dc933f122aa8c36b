/* Gradient checking: the autodiff graph's gradients against central finite
 * differences of the loss, both run on the reference interpreter.
 *
 * Parameters are drawn from N(0, 0.5^2) rather than their initialisers, so
 * no gradient is trivially zero (FVSBN starts at W = 0). f32 inputs are 0/1
 * (valid for every likelihood in models/), i32 inputs are 0 or 1. */
#include "arjit.h"
#include "runtime/rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The fn's loss as aj_autodiff defines it: -mean(ll) for loglik, else mean. */
static int eval_loss(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                     uint64_t seed, double *loss, aj_diag *d) {
    aj_tensor res[16];
    if (aj_interp_run(m, fn, params, inputs, res, seed, d)) return -1;
    int64_t n = aj_tensor_numel(&res[0]);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((const float *)res[0].data)[i];
    *loss = (n ? s / (double)n : 0) * (strcmp(fn->name, "loglik") ? 1 : -1);
    for (int i = 0; i < fn->nresult; i++) aj_tensor_free(&res[i]);
    return 0;
}

int aj_gradcheck(aj_module *m, const char *fn_name, uint64_t seed, int max_probes, double eps,
                 aj_gradcheck_result *out, int *nout, aj_diag *d) {
    *nout = 0;
    aj_graph *fn = aj_module_fn(m, fn_name);
    if (!fn) return aj_error(d, 0, 0, "the model has no fn '%s'", fn_name);
    char gname[96];
    snprintf(gname, sizeof gname, "grad_%s", fn_name);
    aj_graph *grad = aj_module_fn(m, gname);
    if (!grad && !(grad = aj_autodiff(m, fn_name, d))) return -1;

    int rc = -1;
    aj_tensor *params = calloc((size_t)m->nparam + 1, sizeof *params);
    aj_tensor *inputs = calloc((size_t)fn->nleaf + 1, sizeof *inputs);
    aj_tensor gres[64];
    int ngres = 0;
    for (int p = 0; p < m->nparam; p++) {
        aj_type t = m->param[p].type;
        for (int k = 0; k < t.rank; k++) t.dim[k] = aj_dim_bind(t.dim[k], &m->bind);
        params[p] = aj_tensor_of_type(&t);
        uint64_t key = aj_rng_key(seed, 1, (uint64_t)p);
        for (int64_t i = 0; i < aj_tensor_numel(&params[p]); i++)
            ((float *)params[p].data)[i] = 0.5f * aj_rng_normal(key, (uint64_t)i);
    }
    for (int a = 0; a < fn->nleaf; a++) {
        inputs[a] = aj_tensor_of_type(&fn->val[fn->leaf[a]].type);
        uint64_t key = aj_rng_key(seed, 2, (uint64_t)a);
        for (int64_t i = 0; i < aj_tensor_numel(&inputs[a]); i++) {
            int bit = aj_rng_u01(key, (uint64_t)i) < 0.5f;
            if (inputs[a].dtype == AJ_F32) ((float *)inputs[a].data)[i] = (float)bit;
            else ((int32_t *)inputs[a].data)[i] = bit;
        }
    }
    if (grad->nresult > 64) {
        aj_error(d, 0, 0, "too many parameters to check");
        goto out;
    }
    if (aj_interp_run(m, grad, params, inputs, gres, seed, d)) goto out;
    ngres = grad->nresult;

    /* grad's results after the loss are d_P for the parameters fn uses, in order */
    int r = 1;
    for (int p = 0; p < m->nparam && r < ngres; p++) {
        int used = 0;
        for (int v = 0; v < fn->nval; v++) used |= fn->val[v].kind == AJ_VAL_PARAM && fn->val[v].idx == p;
        if (!used) continue;
        const float *ga = gres[r++].data;
        float *theta = params[p].data;
        int64_t n = aj_tensor_numel(&params[p]);
        double gmax = 0;
        for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(ga[i]));
        aj_gradcheck_result *res = &out[(*nout)++];
        memset(res, 0, sizeof *res);
        snprintf(res->name, sizeof res->name, "%s", m->param[p].name);
        res->numel = n;
        int probes = n < max_probes ? (int)n : max_probes;
        uint64_t key = aj_rng_key(seed, 3, (uint64_t)p);
        for (int k = 0; k < probes; k++) {
            int64_t i = n <= max_probes ? k : (int64_t)(aj_rng_u01(key, (uint64_t)k) * (float)n) % n;
            float keep = theta[i];
            double lp, lm;
            theta[i] = keep + (float)eps;
            if (eval_loss(m, fn, params, inputs, seed, &lp, d)) goto out;
            theta[i] = keep - (float)eps;
            if (eval_loss(m, fn, params, inputs, seed, &lm, d)) goto out;
            theta[i] = keep;
            /* the step actually taken in f32, not the one asked for */
            double h = (double)(keep + (float)eps) - (double)(keep - (float)eps);
            double num = (lp - lm) / h, ana = ga[i];
            /* relative error, with a floor from the largest gradient of this
             * parameter so that near-zero entries are judged absolutely */
            double err = fabs(num - ana) / (fmax(fabs(num), fabs(ana)) + 1e-3 * gmax + 1e-8);
            if (err > res->max_rel_err) res->max_rel_err = err, res->worst_analytic = ana, res->worst_numeric = num;
            res->probes++;
        }
    }
    rc = 0;
out:
    for (int i = 0; i < ngres; i++) aj_tensor_free(&gres[i]);
    for (int p = 0; p < m->nparam; p++) aj_tensor_free(&params[p]);
    for (int a = 0; a < fn->nleaf; a++) aj_tensor_free(&inputs[a]);
    free(params), free(inputs);
    return rc;
}
