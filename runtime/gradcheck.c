/* Gradient checking: the autodiff graph's gradients against central finite
 * differences of the loss, both run on the reference interpreter in double
 * (aj_interp_run_f64), so that neither side carries f32 rounding: at real
 * sizes (a loss in the thousands, summed over 10^5 terms) f32 noise divided
 * by the step swamps the derivative.
 *
 * Parameters are drawn from N(0, s^2) rather than their initialisers, so
 * no gradient is trivially zero (FVSBN starts at W = 0): s = 0.5 for a
 * vector or scalar, and for a matrix s = 1 / sqrt(fan_in), fan_in the
 * product of all but its last axis (x W reads that many inputs). Larger
 * weights make a wide recurrent net chaotic: an LSTM with H = 256 over 64
 * steps at s = 0.5 amplifies a 1e-6 step past linearity, so no finite
 * difference measures its derivative (it passes at s <= 0.1). f32 inputs are 0/1
 * (valid for every likelihood in models/), i32 inputs are 0 or 1.
 *
 * The error of a probe is |num - ana| / max(|num|, |ana|, floor), relative
 * except below the floor, where it is absolute. The floor is the larger of
 * 1e-3 max_i |g_i| over the parameter, so that an entry whose derivative
 * nearly cancels (a weight whose input is 0 in all but one example) is
 * judged against the scale of its parameter's gradient, not its own; and
 * 1000 ulp of the loss over the step, the rounding in num = (L+ - L-) / h,
 * below which a derivative cannot be measured. A wrong rule is off by the
 * size of the gradient itself, an error near 1.
 *
 * Which entries: all when there are at most max_probes; else probes
 * alternate between an entry drawn at random (a gradient missing where there
 * should be one) and the entry of next largest |g_i| (a gradient where there
 * should be none: most of a masked or sparsely fed weight has g_i = 0 on both
 * sides, so random entries alone would often check nothing). */
#include "arjit.h"
#include "runtime/interp.h"
#include "runtime/rng.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *f64(const aj_tensor *t) { return t->data; }

/* The fn's loss as aj_autodiff defines it: -mean(ll) for loglik, else mean. */
static int eval_loss(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                     uint64_t seed, aj_tensor *res, double *loss, aj_diag *d) {
    if (aj_interp_run_f64(m, fn, params, inputs, res, seed, d)) return -1;
    int64_t n = aj_tensor_numel(&res[0]);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += f64(&res[0])[i];
    *loss = (n ? s / (double)n : 0) * (strcmp(fn->name, "loglik") ? 1 : -1);
    for (int i = 0; i < fn->nresult; i++) aj_tensor_free(&res[i]);
    return 0;
}

/* The first node of g (or of a recurrence body in it) that draws random
 * numbers from a distribution with inputs; NULL when none does. A draw
 * without inputs (uniform: MADE's random masks) is a fixed function of the
 * seed, the same in the gradient and in every finite difference, so the
 * loss stays a smooth function of the parameters; a draw from logits
 * (bernoulli) jumps as they move, and has no gradient. */
static const aj_node *find_random(const aj_graph *g) {
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i], *r;
        if ((aj_op_info(n->op)->flags & AJ_RAND) && n->nin) return n;
        if (n->rec && n->rec->body && (r = find_random(n->rec->body))) return r;
    }
    return NULL;
}

static int uses_param(const aj_graph *fn, int p) {
    for (int v = 0; v < fn->nval; v++)
        if (fn->val[v].kind == AJ_VAL_PARAM && fn->val[v].idx == p) return 1;
    return 0;
}

/* The entry after `prev` in order of decreasing |g_i| (ties by index), the
 * largest when prev < 0; -1 when there is none (NaN gradients). */
static int64_t next_largest(const double *g, int64_t n, int64_t prev) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++) {
        if (prev >= 0 && !(fabs(g[i]) < fabs(g[prev]) || (fabs(g[i]) == fabs(g[prev]) && i > prev))) continue;
        if (best < 0 || fabs(g[i]) > fabs(g[best])) best = i;
    }
    return best;
}

/* A double tensor of type t (dims bound under m->bind), or an error at
 * (line, col) naming `what` and the bytes it needed. */
static int alloc_f64(const aj_module *m, const aj_type *t, const char *what, const char *name, int line, int col,
                     aj_tensor *out, aj_diag *d) {
    aj_type ty = *t;
    double bytes = sizeof(double);
    int bound = 1;
    char buf[192];
    for (int k = 0; k < ty.rank; k++) {
        ty.dim[k] = aj_dim_bind(ty.dim[k], &m->bind);
        bound &= aj_dim_is_const(ty.dim[k]);
        bytes *= (double)ty.dim[k].off;   /* the size once bound; an unbound dim is refused below */
    }
    aj_type_str(m, &ty, buf, sizeof buf);
    if (!bound) return aj_error(d, line, col, "%s %s is %s: bind every dim before checking", what, name, buf);
    *out = aj_tensor_of_type_sized(&ty, sizeof(double));
    if (out->data) return 0;
    return aj_error(d, line, col, "cannot allocate %.0f bytes for %s %s : %s (held in double for the check)", bytes,
                    what, name, buf);
}

/* Check every parameter fn uses; the work behind aj_gradcheck, whose
 * diagnostics it completes with the model's source. */
static int gradcheck(aj_module *m, aj_graph *fn, uint64_t seed, int max_probes, double eps, aj_gradcheck_result *out,
                     int *nout, aj_diag *d) {
    const aj_node *rnd = find_random(fn);
    if (rnd)
        return aj_error(d, rnd->line, rnd->col,
                        "fn %s draws random numbers (%s): it has no gradient to check; check a likelihood fn such "
                        "as loglik",
                        fn->name, aj_op_info(rnd->op)->name);
    int nused = 0;
    for (int p = 0; p < m->nparam; p++) nused += uses_param(fn, p);
    const aj_value *loss = &fn->val[fn->result[0]];
    if (!nused)
        return aj_error(d, loss->line, loss->col, "fn %s uses no parameters: nothing to differentiate %s by",
                        fn->name, loss->name);
    char gname[96];
    snprintf(gname, sizeof gname, "grad_%s", fn->name);
    aj_graph *grad = aj_module_fn(m, gname);
    if (!grad && !(grad = aj_autodiff(m, fn->name, d))) return -1;

    int rc = -1, ngres = 0;
    aj_tensor *params = calloc((size_t)m->nparam + 1, sizeof *params);
    aj_tensor *inputs = calloc((size_t)fn->nleaf + 1, sizeof *inputs);
    aj_tensor *gres = calloc((size_t)grad->nresult + 1, sizeof *gres);
    aj_tensor *res = calloc((size_t)fn->nresult + 1, sizeof *res);
    if (!params || !inputs || !gres || !res) {
        aj_error(d, fn->line, fn->col, "out of memory");
        goto out;
    }
    for (int p = 0; p < m->nparam; p++) {
        const aj_param *P = &m->param[p];
        if (!uses_param(fn, p)) continue;   /* the interpreter never reads it */
        if (alloc_f64(m, &P->type, "parameter", P->name, P->line, P->col, &params[p], d)) goto out;
        uint64_t key = aj_rng_key(seed, 1, (uint64_t)p);
        int64_t n = aj_tensor_numel(&params[p]), rank = params[p].rank;
        double std = rank >= 2 && n ? 1 / sqrt((double)(n / params[p].shape[rank - 1])) : 0.5;
        for (int64_t i = 0; i < n; i++) f64(&params[p])[i] = std * aj_rng_normal(key, (uint64_t)i);
    }
    for (int a = 0; a < fn->nleaf; a++) {
        const aj_value *v = &fn->val[fn->leaf[a]];
        if (alloc_f64(m, &v->type, "argument", v->name, v->line, v->col, &inputs[a], d)) goto out;
        uint64_t key = aj_rng_key(seed, 2, (uint64_t)a);
        for (int64_t i = 0, n = aj_tensor_numel(&inputs[a]); i < n; i++) {
            int bit = aj_rng_u01(key, (uint64_t)i) < 0.5f;
            if (inputs[a].dtype == AJ_F32) f64(&inputs[a])[i] = bit;
            else ((int32_t *)inputs[a].data)[i] = bit;
        }
    }
    if (aj_interp_run_f64(m, grad, params, inputs, gres, seed, d)) goto out;
    ngres = grad->nresult;

    /* grad's results after the loss are d_P for the parameters fn uses, in order */
    int r = 1;
    for (int p = 0; p < m->nparam && r < ngres; p++) {
        if (!uses_param(fn, p)) continue;
        const double *ga = f64(&gres[r++]);
        double *theta = f64(&params[p]);
        int64_t n = aj_tensor_numel(&params[p]);
        double gmax = 0;
        for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(ga[i]));
        aj_gradcheck_result *pr = &out[(*nout)++];
        memset(pr, 0, sizeof *pr);
        snprintf(pr->name, sizeof pr->name, "%s", m->param[p].name);
        pr->numel = n;
        int probes = n < max_probes ? (int)n : max_probes;
        uint64_t key = aj_rng_key(seed, 3, (uint64_t)p);
        int64_t large = -1, i;
        for (int k = 0; k < probes; k++) {
            if (n <= max_probes) i = k;
            else if (k % 2 && (i = next_largest(ga, n, large)) >= 0) large = i;
            else i = (int64_t)(aj_rng_u01(key, (uint64_t)k) * (double)n) % n;
            double keep = theta[i], lp, lm;
            theta[i] = keep + eps;
            if (eval_loss(m, fn, params, inputs, seed, res, &lp, d)) goto out;
            theta[i] = keep - eps;
            if (eval_loss(m, fn, params, inputs, seed, res, &lm, d)) goto out;
            theta[i] = keep;
            /* the step actually taken, not the one asked for */
            double h = (keep + eps) - (keep - eps);
            double num = (lp - lm) / h, ana = ga[i];
            double floor = fmax(1e-3 * gmax, 1e3 * DBL_EPSILON * fmax(fabs(lp), fabs(lm)) / h);
            /* both exactly 0 (a weight nothing reads, e.g. a fully masked conv) agree */
            double err = num == ana ? 0 : fabs(num - ana) / fmax(fmax(fabs(num), fabs(ana)), floor);
            if (isnan(err) || err > pr->max_rel_err) pr->max_rel_err = err, pr->worst_analytic = ana, pr->worst_numeric = num;
            pr->probes++;
        }
    }
    rc = 0;
out:
    for (int i = 0; gres && i < ngres; i++) aj_tensor_free(&gres[i]);
    for (int p = 0; params && p < m->nparam; p++) aj_tensor_free(&params[p]);
    for (int a = 0; inputs && a < fn->nleaf; a++) aj_tensor_free(&inputs[a]);
    free(params), free(inputs), free(gres), free(res);
    return rc;
}

int aj_gradcheck(aj_module *m, const char *fn_name, uint64_t seed, int max_probes, double eps,
                 aj_gradcheck_result *out, int *nout, aj_diag *d) {
    *nout = 0;
    aj_graph *fn = aj_module_fn(m, fn_name);
    int rc = fn ? gradcheck(m, fn, seed, max_probes, eps, out, nout, d)
                : aj_error(d, 0, 0, "the model has no fn '%s'", fn_name);
    if (rc) aj_diag_source(d, m->path, m->src, m->srclen);
    return rc;
}
