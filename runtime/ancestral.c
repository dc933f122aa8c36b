/* Ancestral sampling with the sampler derived from fn loglik
 * (compiler/sample_step.c, docs/sampling.md): the host loop over positions.
 *
 * For t = 0, 1, ...: sample_step(x, t, state) gives the logits of
 * p(x_t | x_<t); x_t is the prompt's token while there is one, else a draw;
 * the state moves on. A draw is a pure function of (seed, t, row), so the
 * incremental and the full form, on every engine, draw the same sample from
 * the same logits. Past the block size T the window slides: its last T/2
 * tokens move to the front and are fed again (the state starts afresh).
 */
#include "arjit_train.h"
#include "runtime/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x_t for one row from logits l[0..V-1] (V = 1: a bernoulli's logit) and a
 * uniform u: the inverse CDF of softmax(l / temperature) over the top_k
 * largest logits (all when 0); a bernoulli draws 1 when u < sigmoid(l /
 * temperature), and with top_k = 1 takes the likelier value. */
static int32_t draw(const float *l, int64_t V, double temp, int top_k, float u) {
    if (V == 1) return top_k == 1 ? l[0] > 0 : u < 1 / (1 + exp(-l[0] / temp));
    float cut = -INFINITY;
    if (top_k > 0 && top_k < V) {
        /* the k-th largest logit: the smallest one that k - 1 others do not all beat */
        for (int64_t i = 0; i < V; i++) {
            int64_t above = 0;
            for (int64_t j = 0; j < V; j++) above += l[j] > l[i];
            if (above < top_k && (cut == -INFINITY || l[i] < cut)) cut = l[i];
        }
    }
    double mx = -INFINITY, sum = 0, acc = 0;
    for (int64_t i = 0; i < V; i++)
        if (l[i] >= cut && l[i] > mx) mx = l[i];
    for (int64_t i = 0; i < V; i++)
        if (l[i] >= cut) sum += exp((l[i] - mx) / temp);
    int32_t last = 0;
    for (int64_t i = 0; i < V; i++) {
        if (l[i] < cut) continue;
        acc += exp((l[i] - mx) / temp);
        last = (int32_t)i;
        if (u * sum < acc) return last;
    }
    return last;
}

static void free_all(aj_tensor *t, int n) {
    for (int i = 0; i < n; i++) aj_tensor_free(&t[i]);
}

/* fn g on (loglik args, pos, state, invariants), pos at in[na]: its results
 * into res (logits, state'...). */
static int run_step(aj_module *m, aj_engine_run run, const aj_graph *g, const aj_tensor *params, aj_tensor *in,
                    int na, int64_t pos, aj_tensor *res, aj_diag *d) {
    ((int32_t *)in[na].data)[0] = (int32_t)pos;
    return run(m, g, params, in, res, 0, d);
}

/* The state after sample_init, into st. */
static int restart(aj_module *m, aj_engine_run run, const aj_graph *init, const aj_tensor *params, aj_tensor *in,
                   aj_tensor *st, int nstate, aj_diag *d) {
    if (!nstate) return 0;
    free_all(st, nstate);
    return run(m, init, params, in, st, 0, d);
}

int aj_ancestral(aj_module *m, aj_engine_run run, const aj_tensor *params, const aj_ancestral_opts *o, aj_tensor *out,
                 aj_diag *d) {
    memset(out, 0, sizeof *out);
    aj_step_info info;
    const aj_graph *ll = aj_module_fn(m, "loglik");
    if (o->derived) info = *o->derived;
    else if (aj_sample_step(m, o->full, &info, d)) return -1;
    int na = ll->nleaf;
    if (o->nargs != na - 1)
        return aj_error(d, ll->line, ll->col, "fn loglik takes %d argument%s besides x, and %d %s given", na - 1,
                        na == 2 ? "" : "s", o->nargs, o->nargs == 1 ? "is" : "are");
    const aj_graph *step = aj_module_fn(m, "sample_step"), *init = aj_module_fn(m, "sample_init"),
                   *hoisted = aj_module_fn(m, "sample_hoist");
    const aj_type *xt = &ll->val[ll->leaf[info.x]].type;
    int64_t B = aj_dim_bind(xt->dim[0], &m->bind).off, T = aj_dim_bind(xt->dim[1], &m->bind).off;
    int64_t len = o->length ? o->length : T, keep = T / 2 > 0 ? T / 2 : 1;
    double temp = o->temperature > 0 ? o->temperature : 1;
    if (o->nprompt > len) return aj_error(d, 0, 0, "the prompt has %lld tokens, more than the %lld asked for",
                                          (long long)o->nprompt, (long long)len);
    /* in: loglik's arguments (x among them), pos, state, invariants */
    int nin = na + 1 + info.nstate + info.ninv, wpos = 0, rc = -1;
    aj_tensor *in = calloc((size_t)nin, sizeof *in), *res = calloc((size_t)nin, sizeof *res), *st = in + na + 1;
    int32_t *tok = calloc((size_t)B, sizeof *tok);
    *out = aj_tensor_new(xt->dtype, 2, (int64_t[]){B, len});
    if (!in || !res || !tok || !out->data) {
        aj_error(d, 0, 0, "out of memory");
        goto done;
    }
    for (int k = 0, j = 0; k < na; k++)
        if (k != info.x) in[k] = o->args[j++];   /* the caller's: not freed here */
    in[info.x] = aj_tensor_new(xt->dtype, 2, (int64_t[]){B, T});
    in[na] = aj_tensor_new(AJ_I32, 1, (int64_t[]){1});
    if (!in[info.x].data || !in[na].data) {
        aj_error(d, 0, 0, "out of memory");
        goto done;
    }
    if (restart(m, run, init, params, in, st, info.nstate, d) ||
        (hoisted && run(m, hoisted, params, in, st + info.nstate, 0, d)))
        goto done;
    for (int64_t t = 0; t < len; t++) {
        if (wpos == T) {
            /* slide: the last `keep` tokens to the front, fed again from a fresh state */
            size_t es = xt->dtype == AJ_I32 ? sizeof(int32_t) : sizeof(float);
            char *x = in[info.x].data;
            for (int64_t b = 0; b < B; b++) {
                memmove(x + (size_t)(b * T) * es, x + (size_t)(b * T + T - keep) * es, (size_t)keep * es);
                memset(x + (size_t)(b * T + keep) * es, 0, (size_t)(T - keep) * es);
            }
            if (restart(m, run, init, params, in, st, info.nstate, d)) goto done;
            for (wpos = 0; wpos < keep && info.nstate; wpos++) {
                if (run_step(m, run, step, params, in, na, wpos, res, d)) goto done;
                aj_tensor_free(&res[0]);
                free_all(st, info.nstate);
                memcpy(st, res + 1, sizeof *res * (size_t)info.nstate);
                memset(res, 0, sizeof *res * (size_t)nin);
            }
            wpos = (int)keep;
        }
        if (run_step(m, run, step, params, in, na, wpos, res, d)) goto done;
        int64_t V = res[0].rank == 2 ? res[0].shape[1] : 1, nv = V > 1 && o->ncat > 0 && o->ncat < V ? o->ncat : V;
        uint64_t key = aj_rng_key(o->seed, (uint64_t)t, 0);
        for (int64_t b = 0; b < B; b++) {
            tok[b] = t < o->nprompt ? o->prompt[t]
                                    : draw((float *)res[0].data + b * V, nv, temp, o->top_k, aj_rng_u01(key, (uint64_t)b));
            if (xt->dtype == AJ_I32)
                ((int32_t *)in[info.x].data)[b * T + wpos] = tok[b], ((int32_t *)out->data)[b * len + t] = tok[b];
            else
                ((float *)in[info.x].data)[b * T + wpos] = (float)tok[b], ((float *)out->data)[b * len + t] = (float)tok[b];
        }
        aj_tensor_free(&res[0]);
        if (info.two_phase) {
            /* the state after pos reads x_pos: again, now that it is drawn */
            free_all(res + 1, info.nstate);
            if (run_step(m, run, step, params, in, na, wpos, res, d)) goto done;
            aj_tensor_free(&res[0]);
        }
        free_all(st, info.nstate);
        memcpy(st, res + 1, sizeof *res * (size_t)info.nstate);
        memset(res, 0, sizeof *res * (size_t)nin);
        wpos++;
        if (o->emit) o->emit(o->ctx, tok, B, t);
    }
    rc = 0;
done:
    for (int k = 0; in && k < na; k++)
        if (k != info.x) in[k] = (aj_tensor){0};
    if (in) free_all(in, nin);
    if (res) free_all(res, nin);
    free(in), free(res), free(tok);
    if (rc) aj_tensor_free(out);
    return rc;
}
