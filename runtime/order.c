/* The autoregressive order check (arjit check --order).
 *
 * A model is autoregressive in the order x_0 .. x_{D-1} when its
 *   log p(x) = sum_i lp_i,   lp_i = log p(x_i | x_<i),
 * has each conditional depending on no x_j with j >= i. fn loglik(x) must
 * end in sum(lp, axis=1) of a [B, D] value lp (up to negations): lp_i is
 * then variable i's term. The check probes the reference interpreter:
 *
 *   j > i   changing x_j must leave lp_i bit-for-bit unchanged. A mask
 *           (W * mask, conv mask A/B, causal attention, shift) cuts a path
 *           by multiplying by an exact 0 or not reading an element at all,
 *           so a correct model gives exact equality, not a small change.
 *   j = i   lp_i depends on x_i as the variable of its own distribution,
 *           but its parameters (the logits) must not. When fn loglik's
 *           likelihood op reads x itself as its target (bernoulli_nll(l, x),
 *           categorical_nll(l, x)), the probe feeds that operand the
 *           unchanged x: then lp_i too must stay bit-for-bit the same.
 *           Otherwise (the op inside a recurrence, NADE) lp_i summed over
 *           the values of x_i, in probability, must be 1 for every x_<i,
 *           to 1e-6: done for binary models (bernoulli_nll: x_i in {0, 1})
 *           and categorical ones (categorical_nll: x_i in 0 .. V-1); a
 *           model with another likelihood gets the j > i check only.
 *
 * For each of a few random inputs (seeded) and every j, every value of x_j
 * is tried. A probe can only miss a leak whose path is numerically 0 at
 * the input and parameters tried (a dead relu on every route), hence more
 * than one input.
 *
 * The first leak (smallest j, then i) is reported at the graph line where
 * it enters: from lp, walk back through "leaky" values (laid out by
 * position, [B, .., D] or [B, D, ..], and changed at a position before j,
 * or at j and elsewhere: x itself and pointwise functions of it change at
 * j alone); the node with no leaky input is where x_j first reached a
 * position it must not. Values not laid out by position (a MADE's hidden
 * units) are not followed: the leak is reported where it first shows by
 * position, which for a wrong mask inside such layers is the layer that
 * returns to positions. A leak inside a recurrence is reported at the
 * recurrence. */
#include "arjit.h"
#include "arjit_train.h"
#include "runtime/interp.h"
#include "runtime/rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NBASE 2   /* random inputs tried */

typedef struct {
    aj_run *r;
    const aj_graph *fn;
    int lp;            /* value id of the per-variable terms */
    int last;          /* index of the node that makes lp */
    int64_t D;
    int target;             /* the top-level likelihood node reading x as its target, or -1 */
    const aj_tensor *xbase; /* what that operand reads */
    int xarg;               /* which fn argument x is; the others (a source sequence) are held at 0 */
    const aj_tensor *cond;  /* fn argument tensors, cond[xarg] unused */
} probe;

/* The per-variable terms: fn's first result is sum(lp, axis=1), possibly
 * negated (*sign: -1 when the sum is of -lp, the NLLs); lp : [B, D] where
 * x : [B, D]. -1 when the fn has not that form. */
static int find_terms(const aj_graph *fn, double *sign) {
    int v = fn->result[0];
    *sign = 1;
    while (fn->val[v].kind == AJ_VAL_NODE && fn->node[fn->val[v].node].op == AJ_OP_NEG) {
        v = fn->node[fn->val[v].node].in[0];
        *sign = -*sign;
    }
    if (fn->val[v].kind != AJ_VAL_NODE) return -1;
    const aj_node *n = &fn->node[fn->val[v].node];
    if (n->op != AJ_OP_SUM || n->attr[0].n != 1 || (n->attr[0].ints[0] != 1 && n->attr[0].ints[0] != -1) ||
        fn->val[n->in[0]].type.rank != 2)
        return -1;
    return n->in[0];
}

/* The likelihood op of a graph or its recurrence bodies: its node, or NULL. */
static const aj_node *find_nll(const aj_graph *g, const aj_graph **in) {
    for (int k = 0; k < g->nnode; k++) {
        const aj_node *n = &g->node[k];
        if (n->op == AJ_OP_BERNOULLI_NLL || n->op == AJ_OP_CATEGORICAL_NLL) {
            *in = g;
            return n;
        }
        const aj_node *b = n->rec ? find_nll(n->rec->body, in) : NULL;
        if (b) return b;
    }
    return NULL;
}

static int64_t bound(const aj_module *m, aj_dim dim) { return aj_dim_bind(dim, &m->bind).off; }

/* Run fn's top-level nodes 0..last on x, the results into vals[value id]. */
static int run(const probe *p, const aj_tensor *x, aj_tensor *vals, aj_diag *d) {
    const aj_graph *fn = p->fn;
    const aj_module *m = p->r->m;
    for (int k = 0; k <= p->last; k++) {
        const aj_node *n = &fn->node[k];
        aj_tensor *in = malloc(((size_t)n->nin + 1) * sizeof *in), *out = malloc(((size_t)n->nout + 1) * sizeof *out);
        if (!in || !out) {
            free(in), free(out);
            return aj_error(d, n->line, n->col, "out of memory");
        }
        for (int a = 0; a < n->nin; a++) {
            const aj_value *u = &fn->val[n->in[a]];
            in[a] = u->kind == AJ_VAL_INPUT ? (u->idx != p->xarg ? p->cond[u->idx] : k == p->target && a == 1 ? *p->xbase : *x) : u->kind == AJ_VAL_PARAM ? p->r->params[u->idx] : vals[n->in[a]];
        }
        int rc = aj_interp_node(m, fn, k, in, out, 1, d);
        for (int o = 0; !rc && o < n->nout; o++) vals[n->out[o]] = out[o];
        free(in), free(out);
        if (rc) return -1;
    }
    return 0;
}

static void free_vals(const probe *p, aj_tensor *vals) {
    for (int v = 0; v < p->fn->nval; v++) aj_tensor_free(&vals[v]);
}

static int same(const aj_tensor *a, const aj_tensor *b, int64_t i) {
    size_t s = a->dtype == AJ_F32 ? sizeof(float) : sizeof(int32_t);
    return memcmp((const char *)a->data + i * s, (const char *)b->data + i * s, s) == 0;
}

/* Whether value v (its runs a and b, x_j changed between them) is leaky:
 * laid out by position and changed before j, or at j and elsewhere. */
static int leaky(const probe *p, const aj_tensor *a, const aj_tensor *b, int64_t j) {
    int64_t n = aj_tensor_numel(a), inner = 0, trail = 1;
    for (int k = a->rank - 1; k >= 1 && !inner; k--)
        if ((trail *= a->shape[k]) == p->D) inner = 1;   /* [.., H, W] with H*W = D: positions last */
    for (int k = 1; k < a->rank && !inner; k++)
        if (a->shape[k] == p->D) {                        /* [B, T, E]: positions on an axis */
            inner = 1;
            for (int q = k + 1; q < a->rank; q++) inner *= a->shape[q];
        }
    int before = 0, at = 0, after = 0;
    for (int64_t e = 0; e < n; e++) {
        if (same(a, b, e)) continue;
        if (!inner) return 0;
        int64_t pos = e / inner % p->D;
        before |= pos < j, at |= pos == j, after |= pos > j;
    }
    return before || (at && after);
}

/* The node where x_j's change first reaches a position it must not. */
static const aj_node *entry(const probe *p, const aj_tensor *base, const aj_tensor *alt, int64_t j) {
    const aj_graph *fn = p->fn;
    const aj_node *n = &fn->node[fn->val[p->lp].node];
    for (;;) {
        int next = -1;
        for (int a = 0; a < n->nin && next < 0; a++)
            if (fn->val[n->in[a]].kind == AJ_VAL_NODE && leaky(p, &base[n->in[a]], &alt[n->in[a]], j)) next = n->in[a];
        if (next < 0) return n;
        n = &fn->node[fn->val[next].node];
    }
}

static int leak(const probe *p, const aj_tensor *base, const aj_tensor *alt, int64_t i, int64_t j, const char *how,
                aj_diag *d) {
    const aj_node *n = entry(p, base, alt, j);
    aj_error(d, n->line, n->col,
             "order: the conditional of variable %lld depends on variable %lld (%s), and no other order of the "
             "variables makes the model autoregressive; the dependence enters here",
             (long long)i, (long long)j, how);
    aj_diag_site(d, p->r->m, n);
    return -1;
}

/* Input number s: each value of each variable equally likely. */
static void random_x(uint64_t seed, int s, int64_t nv, aj_tensor *x) {
    for (int64_t k = 0; k < x->shape[1]; k++) {
        int32_t v = (int32_t)(aj_rng_key(seed, (uint64_t)s, (uint64_t)k) % (uint64_t)nv);
        if (x->dtype == AJ_F32) ((float *)x->data)[k] = (float)v;
        else ((int32_t *)x->data)[k] = v;
    }
}

static void set_x(aj_tensor *x, int64_t j, int32_t v) {
    if (x->dtype == AJ_F32) ((float *)x->data)[j] = (float)v;
    else ((int32_t *)x->data)[j] = v;
}

/* The first dependence against the index order found: input s, x_j = v
 * makes conditional i change (i = j: by normalisation when total != 1). */
typedef struct {
    int found, s;
    int64_t i, j;
    int32_t v;
    double total;
} first_leak;

/* Probe every x_j on every input: dep[i D + j] = 1 when conditional i
 * depends on x_j (i = j: its distribution's parameters do). */
static int probe_all(probe *p, uint64_t seed, int64_t nv, double sign, const aj_order_info *info, aj_tensor *x,
                     aj_tensor *base, aj_tensor *alt, char *dep, first_leak *fl, aj_diag *d) {
    const int64_t D = p->D;
    for (int s = 0; s < info->ninput; s++) {
        random_x(seed, s, nv, x);
        memcpy(p->xbase->data, x->data, (size_t)D * 4);   /* f32 and i32 alike */
        if (run(p, x, base, d)) return -1;
        for (int64_t j = 0; j < D; j++) {
            int32_t keep = x->dtype == AJ_F32 ? (int32_t)((float *)x->data)[j] : ((int32_t *)x->data)[j];
            double total = 0;
            for (int32_t v = 0; v < nv; v++) {
                set_x(x, j, v);
                if (run(p, x, alt, d)) return -1;
                const aj_tensor *lb = &base[p->lp], *la = &alt[p->lp];
                for (int64_t i = 0; i < D; i++)
                    if ((i != j || info->exact) && !same(lb, la, i)) {
                        dep[i * D + j] = 1;
                        if (i <= j && !fl->found) *fl = (first_leak){1, s, i, j, v, 0};
                    }
                total += exp(sign * ((const float *)la->data)[j]);
                free_vals(p, alt);
            }
            if (info->self && !info->exact && fabs(total - 1) > 1e-6) {
                dep[j * D + j] = 1;
                if (!fl->found) *fl = (first_leak){1, s, j, j, keep == 0 ? 1 : 0, total};
            }
            set_x(x, j, keep);
        }
        free_vals(p, base);
    }
    return 0;
}

/* Whether the dependences order the variables (no cycle, no variable on
 * itself): Kahn's algorithm; order[0..7] gets the start of one order. */
static int some_order(const char *dep, int64_t D, int64_t *order) {
    int64_t *need = calloc((size_t)D + 1, sizeof *need), done = 0;
    char *out = calloc((size_t)D + 1, 1);
    if (!need || !out) {
        free(need), free(out);
        return -1;
    }
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < D; j++) need[i] += dep[i * D + j];
    for (int progress = 1; progress;) {
        progress = 0;
        for (int64_t i = 0; i < D; i++) {
            if (out[i] || need[i]) continue;
            out[i] = 1, progress = 1;
            if (done < 8) order[done] = i;
            done++;
            for (int64_t k = 0; k < D; k++) need[k] -= dep[k * D + i];
        }
    }
    free(need), free(out);
    return done == D;
}

int aj_order_check(const char *path, const char *dims, uint64_t seed, aj_order_info *info, aj_diag *d) {
    aj_run r = {0};
    aj_tensor *base = NULL, *alt = NULL, *cond = NULL, x = {0}, xbase = {0};
    probe p = {&r, NULL, -1, -1, 0, -1, &xbase, 0, NULL};
    char *dep = NULL;
    double sign;
    int rc = -1;
    memset(info, 0, sizeof *info);
    if (aj_run_open(&r, path, NULL, NULL, dims, 1, NULL, d) || aj_run_init_params(&r, seed, d)) goto out;
    const aj_module *m = r.m;
    p.fn = aj_module_fn(m, "loglik");
    if (!p.fn) {
        aj_error(d, 0, 0, "order: the model has no fn loglik");
        goto out;
    }
    const aj_graph *g = NULL;
    const aj_node *nll = find_nll(p.fn, &g);
    /* x: the argument the likelihood reads as its target, else the last */
    p.xarg = p.fn->nleaf - 1;
    if (nll && g == p.fn && p.fn->val[nll->in[1]].kind == AJ_VAL_INPUT) {
        p.target = (int)(nll - p.fn->node);
        p.xarg = p.fn->val[nll->in[1]].idx;
    }
    const aj_value *xv = p.fn->nleaf ? &p.fn->val[p.fn->leaf[p.xarg]] : NULL;
    if (!xv || xv->type.rank != 2 || (p.lp = find_terms(p.fn, &sign)) < 0 ||
        bound(m, p.fn->val[p.lp].type.dim[1]) != bound(m, xv->type.dim[1])) {
        aj_error(d, p.fn->line, p.fn->col,
                 "order: fn loglik must take x : [B, D] and return sum(lp, axis=1) of its D per-variable "
                 "terms lp : [B, D] (negated or not)");
        goto out;
    }
    p.D = bound(m, xv->type.dim[1]);
    p.last = p.fn->val[p.lp].node;
    /* the values each x_i takes: binary, V categories, or (other likelihoods) 0 and 1 with no self check */
    int64_t nv = 2;
    info->self = nll != NULL;
    if (nll && nll->op == AJ_OP_CATEGORICAL_NLL) {
        const aj_type *t = &g->val[nll->in[0]].type;
        nv = bound(m, t->dim[t->rank - 1]);
    }
    info->exact = p.target >= 0;
    info->nvar = p.D, info->ninput = NBASE, info->nvalue = nv;
    base = calloc((size_t)p.fn->nval + 1, sizeof *base);
    alt = calloc((size_t)p.fn->nval + 1, sizeof *alt);
    cond = calloc((size_t)p.fn->nleaf + 1, sizeof *cond);
    dep = calloc((size_t)(p.D * p.D) + 1, 1);
    x = aj_tensor_new(xv->type.dtype, 2, (int64_t[]){1, p.D});
    xbase = aj_tensor_new(xv->type.dtype, 2, (int64_t[]){1, p.D});
    int ok = base && alt && cond && dep && x.data && xbase.data;
    for (int a = 0; ok && a < p.fn->nleaf; a++) {   /* conditioning arguments: zeros of their type */
        const aj_type *t = &p.fn->val[p.fn->leaf[a]].type;
        int64_t shape[AJ_MAX_RANK];
        for (int k = 0; k < t->rank; k++) shape[k] = bound(m, t->dim[k]);
        if (a != p.xarg) ok = (cond[a] = aj_tensor_new(t->dtype, t->rank, shape)).data != NULL;
    }
    if (!ok) {
        aj_error(d, 0, 0, "out of memory");
        goto out;
    }
    p.cond = cond;
    first_leak fl = {0};
    if (probe_all(&p, seed, nv, sign, info, &x, base, alt, dep, &fl, d)) goto out;
    info->natural = !fl.found;
    int some = fl.found ? some_order(dep, p.D, info->start) : 1;
    if (some < 0) {
        aj_error(d, 0, 0, "out of memory");
        goto out;
    }
    if (!some) {   /* rerun the first leak's probe for the walk to its line */
        random_x(seed, fl.s, nv, &x);
        memcpy(xbase.data, x.data, (size_t)p.D * 4);
        if (run(&p, &x, base, d)) goto out;
        set_x(&x, fl.j, fl.v);
        if (run(&p, &x, alt, d)) goto out;
        char how[96];
        if (fl.i < fl.j) snprintf(how, sizeof how, "a later variable");
        else if (info->exact) snprintf(how, sizeof how, "itself: the logits of its distribution change with it");
        else snprintf(how, sizeof how, "itself: its probabilities over x_%lld sum to %.6g, not 1", (long long)fl.j,
                      fl.total);
        leak(&p, base, alt, fl.i, fl.j, how, d);
        goto out;
    }
    rc = 0;
out:
    if (rc && d->line && r.m) aj_diag_source(d, path, r.m->src, r.m->srclen);
    if (base) free_vals(&p, base);
    if (alt) free_vals(&p, alt);
    for (int a = 0; cond && a < p.fn->nleaf; a++) aj_tensor_free(&cond[a]);
    free(base), free(alt), free(cond), free(dep);
    aj_tensor_free(&x);
    aj_tensor_free(&xbase);
    if (r.m) aj_run_close(&r);
    return rc;
}
