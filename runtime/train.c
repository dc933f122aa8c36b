/* Training, evaluation and sampling on top of a run context.
 *
 * The compiler makes the whole training step one graph (compiler/optim.c):
 *   train_step(x, lr, decay, state...) -> loss, P'..., state'...
 * so the host loop here only feeds batches, keeps the learning-rate
 * schedule, swaps the new parameters and optimizer states in, validates,
 * and checkpoints. Determinism is the design constraint: batch order is a
 * function of (seed, epoch) (aj_batcher), parameter init of the seed, and a
 * checkpoint holds everything else the loop carries (step, epoch, position
 * in the epoch, the epoch's loss so far, best valid NLL), so a resumed run
 * is bit-identical to an uninterrupted one. */
#include "arjit_train.h"
#include "arjit_compile.h"
#include "runtime/fileio.h"
#include "runtime/rng.h"
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_BATCH 100
#define DEFAULT_EPOCHS 10
#define MAX_BATCH (1 << 24)   /* what --batch takes */
#define MAX_SIDE (1 << 20)    /* of a sample image: any real one, and h * w fits easily */

/* ---------------------------------------------------------------- engines */

static const struct {
    const char *name;
    aj_engine_run run;
} engines[] = {
    {"interp", aj_interp_run},
    {"naive", aj_naive_run},
    {"fused", aj_fused_run},
};

aj_engine_run aj_engine_find(const char *name, aj_diag *d) {
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++) {
        if (strcmp(name, engines[i].name)) continue;
        if (!engines[i].run) aj_error(d, 0, 0, "engine '%s' is not built yet (available: interp)", name);
        return engines[i].run;
    }
    aj_error(d, 0, 0, "unknown engine '%s' (engines: interp, naive, fused)", name);
    return NULL;
}

/* ---------------------------------------------------------------- helpers */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Errors from the IR layer may lack a file; the run's model is the one. */
static int in_file(aj_diag *d, const char *path) {
    if (d->set && !d->file[0]) snprintf(d->file, sizeof d->file, "%s", path);
    return -1;
}

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3u;
    return h;
}

/* The type of parameter i with the run's dims substituted (all constant). */
static aj_type param_type(const aj_run *r, int i) {
    aj_type t = r->m->param[i].type;
    for (int k = 0; k < t.rank; k++) t.dim[k] = aj_dim_bind(t.dim[k], &r->bind);
    return t;
}

/* "f32[784, 500]" */
static const char *tensor_str(const aj_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "%s[", t->dtype == AJ_F32 ? "f32" : "i32");
    for (int i = 0; i < t->rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* A copy of tensor `name` of a checkpoint section, which must have type `want`;
 * `what` says what it is for in errors ("parameter", "optimizer state"). */
static int ckpt_tensor(const aj_ckpt *ck, const char *ckpt_path, int section, const char *name,
                       const aj_type *want, const char *what, aj_tensor *out, aj_diag *d) {
    aj_tensor w = aj_tensor_of_type(want);
    if (!w.data) return aj_io_error(d, ckpt_path, 0, 0, "out of memory for %s %s", what, name);
    const aj_tensor *t = aj_ckpt_find(ck, section, name);
    char a[128], b[128];
    if (!t) {
        aj_tensor_free(&w);
        return aj_io_error(d, ckpt_path, 0, 0, "no %s '%s' (the model wants %s)", what, name,
                           tensor_str(&w, b, sizeof b));
    }
    int same = t->dtype == w.dtype && t->rank == w.rank;
    for (int k = 0; same && k < t->rank; k++) same = t->shape[k] == w.shape[k];
    if (!same) {
        aj_io_error(d, ckpt_path, 0, 0, "%s %s is %s there, but the model wants %s (were its dims different?)",
                    what, name, tensor_str(t, a, sizeof a), tensor_str(&w, b, sizeof b));
        aj_tensor_free(&w);
        return -1;
    }
    memcpy(w.data, t->data, (size_t)aj_tensor_numel(t) * 4);
    *out = w;
    return 0;
}

/* ---------------------------------------------------------------- run context */

int aj_run_open(aj_run *r, const char *path, const char *ckpt_dims, const char *ckpt_path,
                const char *dims, int64_t batch, aj_engine_run engine, aj_diag *d) {
    memset(r, 0, sizeof *r);
    r->run = engine ? engine : aj_interp_run;
    r->bdim = r->tdim = -1;
    if (!(r->m = aj_parse_file(path, d))) return in_file(d, path);
    aj_module *m = r->m;
    snprintf(r->hash, sizeof r->hash, "fnv1a:%016" PRIx64, fnv1a(m->src, m->srclen));
    r->bdim = aj_dim_index(m, "B");
    r->tdim = aj_dim_index(m, "T");
    aj_bind_defaults(m, &r->bind);
    if (ckpt_dims && *ckpt_dims) {
        aj_diag e = {0};
        if (aj_bind_parse(m, &r->bind, ckpt_dims, &e))
            return aj_io_error(d, ckpt_path, 0, 0, "its dims '%s' do not fit %s: %s", ckpt_dims, path, e.msg);
    }
    if (dims && aj_bind_parse(m, &r->bind, dims, d)) return in_file(d, path);
    if (r->bdim >= 0 && batch > 0 && r->bind.v[r->bdim] < 0) r->bind.v[r->bdim] = batch;
    for (int k = 0; k < m->ndim; k++)
        if (r->bind.v[k] < 0) {
            aj_io_error(d, path, m->dim[k].line, m->dim[k].col, "dim %s has no value: give it one with --dims %s=N",
                        m->dim[k].name, m->dim[k].name);
            aj_diag_source(d, path, m->src, m->srclen);
            return -1;
        }
    size_t n = 0;
    for (int k = 0; k < m->ndim && n < sizeof r->dims; k++)
        if (k != r->bdim)
            n += (size_t)snprintf(r->dims + n, sizeof r->dims - n, "%s%s=%" PRId64, n ? "," : "", m->dim[k].name,
                                  r->bind.v[k]);
    if (aj_module_infer(m, &r->bind, d)) return in_file(d, path);
    return 0;
}

void aj_run_close(aj_run *r) {
    if (r->params)
        for (int i = 0; i < r->m->nparam; i++) aj_tensor_free(&r->params[i]);
    free(r->params);
    if (r->m) aj_engine_forget(r->m);
    aj_module_free(r->m);
    memset(r, 0, sizeof *r);
}

static int alloc_params(aj_run *r, aj_diag *d) {
    if (!r->params) r->params = calloc((size_t)r->m->nparam + 1, sizeof *r->params);
    return r->params ? 0 : aj_io_error(d, r->m->path, 0, 0, "out of memory for the parameters");
}

int aj_run_init_params(aj_run *r, uint64_t seed, aj_diag *d) {
    if (alloc_params(r, d)) return -1;
    for (int i = 0; i < r->m->nparam; i++) {
        aj_tensor_free(&r->params[i]);
        r->params[i] = aj_param_init(r->m, i, &r->bind, seed);
        if (!r->params[i].data)
            return aj_io_error(d, r->m->path, r->m->param[i].line, r->m->param[i].col,
                               "out of memory for parameter %s", r->m->param[i].name);
    }
    return 0;
}

int aj_run_load_params(aj_run *r, const aj_ckpt *ck, const char *ckpt_path, aj_diag *d) {
    if (alloc_params(r, d)) return -1;
    for (int i = 0; i < r->m->nparam; i++) {
        aj_type t = param_type(r, i);
        aj_tensor_free(&r->params[i]);
        if (ckpt_tensor(ck, ckpt_path, AJ_CKPT_PARAMS, r->m->param[i].name, &t, "parameter", &r->params[i], d))
            return -1;
    }
    return 0;
}

/* fn `name` (loglik or another log p(x) per example), after checking that
 * it reads one example per row of ds:
 *   vector data   one argument f32[B, d]                      (*width = d)
 *   text          one argument i32[B, T]: token windows       (*width = T)
 *   token rows    arguments i32[B, k_j] whose k_j add up to d  (*width = d)
 *                 (reverse:N: src : i32[B, N], x : i32[B, N])
 * Token ids index the model's vocabulary, dim V. Errors point at the fn or
 * its argument. */
static const aj_graph *loglik_fn(const aj_run *r, const aj_dataset *ds, const char *name, int64_t *width,
                                 aj_diag *d) {
    const aj_module *m = r->m;
    const aj_graph *fn = aj_module_fn(m, name);
    if (!fn) return aj_io_error(d, m->path, 0, 0, "the model has no fn %s (log p(x) per example)", name), NULL;
    if (r->bdim < 0)
        return aj_io_error(d, m->path, 0, 0, "the model has no batch dim: declare `dim B` and use it as the first axis of %s's input", name), NULL;
    int text = ds->tok && !ds->d, rows = ds->tok && ds->d;
    if (fn->nleaf < 1 || (fn->nleaf != 1 && !rows))
        return aj_io_error(d, m->path, fn->line, fn->col, "fn %s takes %d arguments; it is fed one, the data "
                           "x : %s", name, fn->nleaf, text ? "i32[B, T]" : "f32[B, D]"), NULL;
    int64_t cols = 0;
    for (int j = 0; j < fn->nleaf; j++) {
        const aj_value *x = &fn->val[fn->leaf[j]];
        aj_tensor probe = {x->type.dtype, x->type.rank, {0}, NULL};
        for (int k = 0; k < x->type.rank; k++) probe.shape[k] = x->type.dim[k].off;
        cols += probe.rank == 2 ? probe.shape[1] : 0;
        int64_t want = text ? probe.shape[1] : ds->d;
        int last = j == fn->nleaf - 1;
        if (x->type.dtype == (ds->tok ? AJ_I32 : AJ_F32) && probe.rank == 2 && probe.shape[0] == r->bind.v[r->bdim] &&
            probe.shape[1] >= 1 && (last ? cols == want : cols < ds->d || !rows))
            continue;
        int fi = 0;
        while (m->fn[fi] != fn) fi++;
        char decl[128], here[128];
        aj_type_str(m, &m->fn_arg_type[fi][j], decl, sizeof decl);
        if (text)
            aj_io_error(d, m->path, x->line, x->col, "'%s' is text: %s's input %s : %s must be token windows "
                        "i32[B, T]", ds->spec, name, x->name, decl);
        else if (rows)
            aj_io_error(d, m->path, x->line, x->col, "'%s' has examples of %" PRId64 " tokens: %s's inputs must be "
                        "i32[B, k] whose k add up to that, but %s : %s is %s here (bind the model's dims with "
                        "--dims to match)", ds->spec, ds->d, name, x->name, decl, tensor_str(&probe, here, sizeof here));
        else if (x->type.dtype == AJ_I32)
            aj_io_error(d, m->path, x->line, x->col, "%s's input %s : %s holds tokens: give it text data "
                        "(shakespeare or text:FILE), not '%s'", name, x->name, decl, ds->spec);
        else
            aj_io_error(d, m->path, x->line, x->col, "the dataset '%s' has %" PRId64 " values per example, but "
                        "%s's input %s : %s is %s here (bind the model's dims with --dims to match)",
                        ds->spec, ds->d, name, x->name, decl, tensor_str(&probe, here, sizeof here));
        aj_diag_source(d, m->path, m->src, m->srclen);
        return NULL;
    }
    if (text && ds->ntok < cols + 1)
        return aj_io_error(d, ds->path, 0, 0, "the %s split has %" PRId64 " characters, fewer than one window of "
                           "T + 1 = %" PRId64 " tokens (%s : i32[B, T]): give a smaller --dims T or more text",
                           ds->split, ds->ntok, cols + 1, fn->val[fn->leaf[0]].name), NULL;
    if (ds->tok) {
        int v = aj_dim_index(m, "V");
        if (v < 0)
            return aj_io_error(d, m->path, 0, 0, "a model of tokens names its vocabulary size `dim V`; the data '%s' "
                               "has %d distinct tokens", ds->spec, ds->nvocab), NULL;
        if (r->bind.v[v] < ds->nvocab)
            return aj_io_error(d, m->path, m->dim[v].line, m->dim[v].col, "the model's vocabulary V = %" PRId64
                               " is smaller than the %d distinct %s of '%s' (%s): give --dims V=%d", r->bind.v[v],
                               ds->nvocab, text ? "bytes" : "tokens", ds->spec, ds->path, ds->nvocab), NULL;
    }
    *width = cols;
    return fn;
}

/* Examples per epoch: rows, or windows of width + 1 tokens (aj_batcher). */
static int64_t nexamples(const aj_dataset *ds, int64_t width) {
    return ds->tok && !ds->d ? (ds->ntok - 1) / width : ds->n;
}

/* Tensors for fn's n leading arguments, of the shapes they have. */
static int arg_tensors(const aj_module *m, const aj_graph *fn, int n, aj_tensor *x, aj_diag *d) {
    for (int j = 0; j < n; j++)
        if (!(x[j] = aj_tensor_of_type(&fn->val[fn->leaf[j]].type)).data)
            return aj_io_error(d, m->path, 0, 0, "out of memory for a batch");
    return 0;
}

/* What feeds a fn's data arguments from a dataset, one batch at a time. */
typedef struct {
    aj_batcher bt;
    int32_t *ids;            /* token data: the batcher's ids of one batch */
    int64_t row, skip;       /* ids per example; leading ones no argument takes */
} feeder;

static int feed_init(feeder *f, const aj_dataset *ds, int64_t B, int64_t width, uint64_t seed, int flags,
                     aj_diag *d) {
    memset(f, 0, sizeof *f);
    if (aj_batcher_init(&f->bt, ds, B, width, seed, flags, d)) return -1;
    if (!ds->tok) return 0;
    f->skip = !ds->d;
    f->row = width + f->skip;
    f->ids = malloc((size_t)(B * f->row) * sizeof *f->ids);
    return f->ids ? 0 : aj_io_error(d, ds->path, 0, 0, "out of memory for a batch of %" PRId64, B);
}

static void feed_free(feeder *f) {
    aj_batcher_free(&f->bt);
    free(f->ids);
    memset(f, 0, sizeof *f);
}

/* The next batch into the nx argument tensors x, as aj_batcher_next; zero
 * rows pad a short one. Token rows: each argument takes the next columns of
 * every example (reverse:N: src, then x). Text: the batcher gives windows
 * w_0 .. w_T; the models shift their input internally (position t is
 * predicted from a start token and x_<t), so x gets w_1 .. w_T, the
 * window's next-token targets: in order, the windows then score every
 * token of the split once (docs/training.md). */
static int feed_next(feeder *f, aj_tensor *x, int nx, int64_t *count) {
    int more = f->ids ? aj_batcher_next_tokens(&f->bt, f->ids, count) : aj_batcher_next(&f->bt, x[0].data, count);
    int64_t col = f->skip;
    for (int j = 0; j < nx; col += x[j].shape[1], j++) {
        int64_t B = x[j].shape[0], w = x[j].shape[1];
        for (int64_t i = 0; f->ids && i < *count; i++)
            memcpy((int32_t *)x[j].data + i * w, f->ids + i * f->row + col, (size_t)w * sizeof *f->ids);
        memset((char *)x[j].data + *count * w * 4, 0, (size_t)((B - *count) * w) * 4);
    }
    return more;
}

int aj_run_nll(aj_run *r, const aj_dataset *ds, const char *name, double *nll,
               const volatile sig_atomic_t *interrupt, aj_diag *d) {
    if (!name) name = "loglik";
    int64_t width;
    const aj_graph *fn = loglik_fn(r, ds, name, &width, d);
    if (!fn) return -1;
    int64_t B = r->bind.v[r->bdim];
    feeder f = {0};
    int64_t count, seen = 0;
    aj_tensor *x = calloc((size_t)fn->nleaf, sizeof *x), *res = calloc((size_t)fn->nresult, sizeof *res);
    int rc = -1;
    double sum = 0;
    if (!x || !res) {
        aj_io_error(d, ds->path, 0, 0, "out of memory for a batch of %" PRId64, B);
        goto out;
    }
    if (feed_init(&f, ds, B, width, 0, 0, d) || arg_tensors(r->m, fn, fn->nleaf, x, d)) goto out;
    while (feed_next(&f, x, fn->nleaf, &count) == 1) {   /* a padded last batch's extra rows are dropped */
        if (interrupt && *interrupt) {
            rc = 1;
            goto out;
        }
        if (r->run(r->m, fn, r->params, x, res, 0, d)) goto out;
        int ok = res[0].dtype == AJ_F32 && aj_tensor_numel(&res[0]) == B;
        for (int64_t i = 0; ok && i < count; i++) sum -= ((const float *)res[0].data)[i];
        for (int i = 0; i < fn->nresult; i++) aj_tensor_free(&res[i]);
        if (!ok) {
            aj_io_error(d, r->m->path, fn->line, fn->col, "fn %s's first result must be f32[B]: log p(x) per example",
                        name);
            goto out;
        }
        seen += count;
    }
    *nll = sum / (double)seen;
    if (!isfinite(*nll)) {
        aj_io_error(d, r->m->path, fn->line, fn->col, "the NLL of the %s split of '%s' is %g: fn %s gives a log p(x) "
                    "that is NaN or infinite; --check-nan (engines naive, fused) names the kernel that makes it",
                    ds->split, ds->spec, *nll, name);
        aj_diag_source(d, r->m->path, r->m->src, r->m->srclen);
        goto out;
    }
    rc = 0;
out:
    for (int j = 0; x && j < fn->nleaf; j++) aj_tensor_free(&x[j]);
    free(x);
    free(res);
    feed_free(&f);
    return rc;
}

/* ---------------------------------------------------------------- the train step */

/* train_step's tensors: its arguments are loglik's na data arguments, lr,
 * decay, then state s of updated parameter k at na + 2 + s * np + k; its
 * results loss, P'_k, state'. */
typedef struct {
    const aj_graph *g;
    int na;                  /* data arguments */
    int np, ns;              /* parameters it updates; optimizer states per parameter */
    int *pidx;               /* module index of updated parameter k */
    aj_tensor *in, *res;
} step_fn;

static void step_free(step_fn *s) {
    if (s->in)
        for (int i = 0; i < s->na + 2 + s->ns * s->np; i++) aj_tensor_free(&s->in[i]);
    free(s->in);
    free(s->res);
    free(s->pidx);
    memset(s, 0, sizeof *s);
}

static aj_tensor *state_tensor(step_fn *s, int st, int k) { return &s->in[s->na + 2 + st * s->np + k]; }

/* "m_W": the name train_step gives the argument, and the checkpoint the tensor. */
static void state_name(const aj_run *r, const aj_optim *o, const step_fn *s, int st, int k, char *buf, size_t n) {
    snprintf(buf, n, "%s_%s", aj_optim_state_name(o, st), r->m->param[s->pidx[k]].name);
}

static int step_build(step_fn *s, aj_run *r, const aj_optim *o, const aj_graph *loglik, aj_diag *d) {
    memset(s, 0, sizeof *s);
    aj_graph *g = aj_train_step(r->m, "loglik", o, d);
    if (!g) return in_file(d, r->m->path);
    s->g = g;
    s->ns = aj_optim_nstate(o);
    /* the parameters it updates, found as optim.c finds them: PARAM values
     * in module order */
    s->pidx = calloc((size_t)r->m->nparam + 1, sizeof *s->pidx);
    if (!s->pidx) return aj_io_error(d, r->m->path, 0, 0, "out of memory");
    for (int p = 0; p < r->m->nparam; p++)
        for (int v = 0; v < g->nval; v++)
            if (g->val[v].kind == AJ_VAL_PARAM && g->val[v].idx == p) {
                s->pidx[s->np++] = p;
                break;
            }
    s->na = loglik->nleaf;
    int nin = s->na + 2 + s->ns * s->np;
    if (g->nleaf != nin || g->nresult != 1 + s->np * (1 + s->ns))
        return aj_io_error(d, r->m->path, 0, 0, "train_step has %d arguments and %d results, expected %d and %d",
                           g->nleaf, g->nresult, nin, 1 + s->np * (1 + s->ns));
    s->in = calloc((size_t)nin, sizeof *s->in);
    s->res = calloc((size_t)g->nresult, sizeof *s->res);
    if (s->in && s->res) {
        if (arg_tensors(r->m, loglik, s->na, s->in, d)) return -1;
        s->in[s->na] = aj_tensor_new(AJ_F32, 0, NULL);
        s->in[s->na + 1] = aj_tensor_new(AJ_F32, 0, NULL);
        for (int st = 0; st < s->ns; st++)
            for (int k = 0; k < s->np; k++) {
                aj_type t = param_type(r, s->pidx[k]);
                *state_tensor(s, st, k) = aj_tensor_of_type(&t);
            }
    }
    for (int i = 0; s->in && i < nin; i++)
        if (!s->in[i].data) return aj_io_error(d, r->m->path, 0, 0, "out of memory for train_step's arguments");
    if (!s->in || !s->res) return aj_io_error(d, r->m->path, 0, 0, "out of memory");
    return 0;
}

/* One step on the batch already in s->in[0..na): the new parameters and states
 * replace the old ones. */
static int step_run(step_fn *s, aj_run *r, float lr, float decay, uint64_t seed, double *loss, aj_diag *d) {
    *(float *)s->in[s->na].data = lr;
    *(float *)s->in[s->na + 1].data = decay;
    if (r->run(r->m, s->g, r->params, s->in, s->res, seed, d)) return -1;
    *loss = *(const float *)s->res[0].data;
    aj_tensor_free(&s->res[0]);
    for (int k = 0; k < s->np; k++) {
        aj_tensor_free(&r->params[s->pidx[k]]);
        r->params[s->pidx[k]] = s->res[1 + k];
    }
    for (int st = 0; st < s->ns; st++)
        for (int k = 0; k < s->np; k++) {
            aj_tensor_free(state_tensor(s, st, k));
            *state_tensor(s, st, k) = s->res[1 + s->np + st * s->np + k];
        }
    return 0;
}

/* ---------------------------------------------------------------- checkpoints */

/* Everything the loop carries besides tensors. */
typedef struct {
    int64_t step;            /* steps done in all */
    int64_t epoch, pos;      /* the current epoch (from 0) and its examples done */
    double loss_sum;         /* this epoch's step losses so far, and their count */
    int64_t loss_n;
    double best;             /* best valid NLL (+inf: none yet) */
    int64_t since_best;      /* epochs validated since it */
    uint64_t seed;
    int64_t batch;           /* B */
} train_state;

/* Each field goes into the checkpoint as the u64 of its 8 bytes, so doubles
 * come back bit for bit. */
static const struct {
    const char *name;
    size_t off;
} state_fields[] = {
    {"step", offsetof(train_state, step)},
    {"epoch", offsetof(train_state, epoch)},
    {"pos", offsetof(train_state, pos)},
    {"epoch_loss_sum", offsetof(train_state, loss_sum)},
    {"epoch_loss_n", offsetof(train_state, loss_n)},
    {"best_valid", offsetof(train_state, best)},
    {"since_best", offsetof(train_state, since_best)},
    {"seed", offsetof(train_state, seed)},
    {"batch", offsetof(train_state, batch)},
};
#define NSTATE_FIELDS (sizeof state_fields / sizeof state_fields[0])

static const char *const opt_names[] = {"sgd", "adam", "rmsprop"};   /* by aj_opt_kind */
static const char *const sched_names[] = {"constant", "step", "cosine"};

static void describe_opt(const aj_job *job, char *buf, size_t n) {
    const aj_optim *o = &job->opt;
    size_t k = (size_t)snprintf(buf, n, "%s lr=%g", opt_names[o->kind], job->lr);
    if (o->kind == AJ_OPT_SGD) k += (size_t)snprintf(buf + k, n - k, " momentum=%g", o->momentum);
    if (o->kind == AJ_OPT_ADAM) k += (size_t)snprintf(buf + k, n - k, " beta1=%g beta2=%g", o->beta1, o->beta2);
    if (o->kind == AJ_OPT_RMSPROP) k += (size_t)snprintf(buf + k, n - k, " rho=%g", o->rho);
    if (o->kind != AJ_OPT_SGD) k += (size_t)snprintf(buf + k, n - k, " eps=%g", o->eps);
    k += (size_t)snprintf(buf + k, n - k, " weight_decay=%g clip=%g schedule=%s", o->weight_decay, o->clip,
                          sched_names[job->schedule]);
    if (job->schedule == AJ_SCHED_STEP && k < n)
        snprintf(buf + k, n - k, " step_epochs=%" PRId64 " gamma=%g", job->step_epochs, job->gamma);
}

/* Write the whole training state to `path` (atomically). */
static int save_ckpt(const aj_job *job, const aj_run *r, step_fn *s, const train_state *st,
                     const aj_dataset *ds, const char *path, aj_diag *d) {
    aj_ckpt *ck = aj_ckpt_new();
    int bad = !ck;
    char buf[512];
    for (int i = 0; !bad && i < r->m->nparam; i++)
        bad |= aj_ckpt_add_tensor(ck, AJ_CKPT_PARAMS, r->m->param[i].name, &r->params[i]) != 0;
    for (int t = 0; !bad && t < s->ns; t++)
        for (int k = 0; k < s->np; k++) {
            state_name(r, &job->opt, s, t, k, buf, sizeof buf);
            bad |= aj_ckpt_add_tensor(ck, AJ_CKPT_OPTIM, buf, state_tensor(s, t, k)) != 0;
        }
    for (size_t i = 0; !bad && i < NSTATE_FIELDS; i++) {
        uint64_t v;
        memcpy(&v, (const char *)st + state_fields[i].off, sizeof v);
        bad |= aj_ckpt_set_u64(ck, state_fields[i].name, v) != 0;
    }
    describe_opt(job, buf, sizeof buf);
    bad = bad || aj_ckpt_set_meta(ck, "model", r->m->path) || aj_ckpt_set_meta(ck, "model_hash", r->hash) ||
          aj_ckpt_set_meta(ck, "dims", r->dims) || aj_ckpt_set_meta(ck, "data", ds->spec) ||
          aj_ckpt_set_meta(ck, "optimizer", buf) || aj_ckpt_set_meta(ck, "opt", opt_names[job->opt.kind]);
    if (!bad && ds->tok)   /* the sampler and eval decode and encode with it */
        bad = aj_ckpt_set_meta_bytes(ck, "vocab", ds->vocab, (size_t)ds->nvocab) != 0;
    if (!bad && ds->h > 0) {
        snprintf(buf, sizeof buf, "%" PRId64 "x%" PRId64, ds->h, ds->w);
        bad = aj_ckpt_set_meta(ck, "image", buf) != 0;
    }
    if (!bad) {
        snprintf(buf, sizeof buf, "%.17g", st->best);
        bad = aj_ckpt_set_meta(ck, "best_valid_nll", buf) != 0;
    }
    int rc = bad ? aj_io_error(d, path, 0, 0, "out of memory building the checkpoint") : aj_ckpt_save(ck, path, d);
    aj_ckpt_free(ck);
    return rc;
}

/* Load `path` and open the model under the dims it records, with B = batch
 * (0: the batch size it was trained with). strict: the model's source must
 * hash as it did (resume); else a changed model whose parameters still fit
 * is only warned about (eval, sample). */
static int open_ckpt(const aj_job *job, const char *path, int strict, int64_t batch, aj_run *r,
                     aj_ckpt **ck, aj_diag *d) {
    memset(r, 0, sizeof *r);
    if (!(*ck = aj_ckpt_load(path, d))) return -1;
    uint64_t b;
    if (!batch) batch = aj_ckpt_get_u64(*ck, "batch", &b) == 0 && b > 0 && b <= MAX_BATCH ? (int64_t)b : DEFAULT_BATCH;
    const char *hash = aj_ckpt_meta(*ck, "model_hash"), *model = aj_ckpt_meta(*ck, "model");
    if (!hash || !aj_ckpt_meta(*ck, "dims"))
        return aj_io_error(d, path, 0, 0, "not a training checkpoint: it has no model_hash/dims metadata");
    if (aj_run_open(r, job->model, aj_ckpt_meta(*ck, "dims"), path, job->dims, batch, job->engine, d)) return -1;
    if (strcmp(hash, r->hash)) {
        if (strict)
            return aj_io_error(d, path, 0, 0, "it was trained on another model (%s, %s); %s is %s now: resuming needs "
                               "the same model file", model ? model : "?", hash, job->model, r->hash);
        if (job->log)
            fprintf(job->log, "arjit: warning: %s was trained on a different version of the model (%s, %s; %s is %s)\n",
                    path, model ? model : "?", hash, job->model, r->hash);
    }
    return aj_run_load_params(r, *ck, path, d);
}

/* "impossible training state: 'pos' is 5000: past the ...": field, its
 * value and why no run gets there. */
static int bad_state(aj_diag *d, const char *path, const char *field, int64_t v, const char *why) {
    return aj_io_error(d, path, 0, 0, "impossible training state: '%s' is %" PRId64 ": %s (a damaged or edited "
                       "checkpoint; resume from another)", field, v, why);
}

/* A loop state no run reaches, in a checkpoint whose CRC holds, is refused
 * by name rather than resumed from. Every step takes B >= 1 examples and
 * every epoch at least one step (a split of fewer than B examples is
 * refused), so 0 <= pos <= n (the train split's examples or windows; pos = n when
 * stopped during validation), epoch_loss_n <= pos with both 0 or neither,
 * and step >= epoch + epoch_loss_n. */
static int check_state(const train_state *st, const aj_dataset *train, int64_t n, const char *path, aj_diag *d) {
    static const struct {
        const char *name;
        size_t off;
    } counts[] = {{"step", offsetof(train_state, step)}, {"epoch", offsetof(train_state, epoch)},
                  {"pos", offsetof(train_state, pos)}, {"epoch_loss_n", offsetof(train_state, loss_n)},
                  {"since_best", offsetof(train_state, since_best)}};
    char why[320];
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        int64_t v;
        memcpy(&v, (const char *)st + counts[i].off, sizeof v);
        if (v < 0) return bad_state(d, path, counts[i].name, v, "below 0");
    }
    if (st->batch < 1 || st->batch > MAX_BATCH) return bad_state(d, path, "batch", st->batch, "outside 1..2^24");
    if (st->pos > n) {
        snprintf(why, sizeof why, "past the %" PRId64 " examples of the train split of '%s'", n, train->spec);
        return bad_state(d, path, "pos", st->pos, why);
    }
    if (st->loss_n > st->pos || (st->loss_n == 0) != (st->pos == 0)) {
        snprintf(why, sizeof why, "steps into the epoch, but 'pos' is %" PRId64 " examples into it (a step takes "
                 "one or more; only a fresh epoch has none)", st->pos);
        return bad_state(d, path, "epoch_loss_n", st->loss_n, why);
    }
    if (st->step < st->epoch + st->loss_n) {
        snprintf(why, sizeof why, "fewer than 'epoch' %" PRId64 " (epochs done, a step or more each) plus "
                 "'epoch_loss_n' %" PRId64 " (steps into this one)", st->epoch, st->loss_n);
        return bad_state(d, path, "step", st->step, why);
    }
    if (!isfinite(st->loss_sum) || isnan(st->best))
        return aj_io_error(d, path, 0, 0, "impossible training state: '%s' is %g (a damaged or edited checkpoint; "
                           "resume from another)", isnan(st->best) ? "best_valid" : "epoch_loss_sum",
                           isnan(st->best) ? st->best : st->loss_sum);
    return 0;
}

/* The optimizer states and loop state of a training checkpoint. */
static int restore(const aj_job *job, const aj_run *r, step_fn *s, train_state *st, const aj_ckpt *ck,
                   const aj_dataset *train, int64_t n, aj_diag *d) {
    const char *opt = aj_ckpt_meta(ck, "opt");
    if (!opt || strcmp(opt, opt_names[job->opt.kind]))
        return aj_io_error(d, job->resume, 0, 0, "it holds %s optimizer state, but --opt is %s",
                           opt ? opt : "no", opt_names[job->opt.kind]);
    char name[320];
    for (int t = 0; t < s->ns; t++)
        for (int k = 0; k < s->np; k++) {
            aj_type ty = param_type(r, s->pidx[k]);
            aj_tensor *dst = state_tensor(s, t, k);
            state_name(r, &job->opt, s, t, k, name, sizeof name);
            aj_tensor_free(dst);
            if (ckpt_tensor(ck, job->resume, AJ_CKPT_OPTIM, name, &ty, "optimizer state", dst, d)) return -1;
        }
    for (size_t i = 0; i < NSTATE_FIELDS; i++) {
        uint64_t v;
        if (aj_ckpt_get_u64(ck, state_fields[i].name, &v))
            return aj_io_error(d, job->resume, 0, 0, "not a training checkpoint: it has no '%s'", state_fields[i].name);
        memcpy((char *)st + state_fields[i].off, &v, sizeof v);
    }
    return check_state(st, train, n, job->resume, d);
}

/* ---------------------------------------------------------------- schedule */

/* The step's learning rate from the schedule, before Adam's bias correction. */
static double scheduled_lr(const aj_job *job, const train_state *st, int64_t total_steps) {
    switch (job->schedule) {
    case AJ_SCHED_STEP:
        return job->step_epochs > 0 ? job->lr * pow(job->gamma, (double)(st->epoch / job->step_epochs)) : job->lr;
    case AJ_SCHED_COSINE: {
        double progress = total_steps ? fmin(1.0, (double)st->step / (double)total_steps) : 1.0;
        return job->lr * 0.5 * (1 + cos(M_PI * progress));
    }
    case AJ_SCHED_CONSTANT: break;
    }
    return job->lr;
}

/* ---------------------------------------------------------------- progress */

typedef struct {
    double t0;               /* when this epoch started in this process */
    int64_t pos0;            /* and at which example */
    double last;             /* when the live bar was last drawn */
    int64_t next_line;       /* plain mode: the step (in the epoch) of the next line */
} progress;

static void fmt_secs(double s, char *buf, size_t n) {
    long v = s > 0 && s < 1e8 ? (long)(s + 0.5) : 0;
    if (v >= 3600) snprintf(buf, n, "%ldh%02ldm", v / 3600, v / 60 % 60);
    else if (v >= 60) snprintf(buf, n, "%ldm%02lds", v / 60, v % 60);
    else snprintf(buf, n, "%lds", v);
}

/* After each step: a live bar redrawn at most 10 times a second on a
 * terminal, else a plain line every ~10% of the epoch. */
static void show_progress(const aj_job *job, progress *p, const train_state *st, int64_t B, int64_t spe,
                          int64_t epochs) {
    if (!job->log) return;
    double t = now();
    int64_t done = st->pos / B, ran = (st->pos - p->pos0) / B;
    double rate = ran ? (double)(ran * B) / (t - p->t0) : 0;
    if (job->live ? t - p->last < 0.1 : done < p->next_line) return;
    char eta[32];
    fmt_secs(rate > 0 ? (double)((spe - done) * B) / rate : 0, eta, sizeof eta);
    double loss = st->loss_n ? st->loss_sum / (double)st->loss_n : 0;
    if (job->live) {
        char bar[21];
        int fill = spe ? (int)(20 * done / spe) : 20;
        for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
        bar[20] = 0;
        fprintf(job->log, "\repoch %" PRId64 "/%" PRId64 " [%s] %" PRId64 "/%" PRId64 "  loss %.4f  %.0f ex/s  ETA %s\033[K",
                st->epoch + 1, epochs, bar, done, spe, loss, rate, eta);
        p->last = t;
    } else {
        fprintf(job->log, "epoch %" PRId64 "/%" PRId64 ": step %" PRId64 "/%" PRId64 "  loss %.4f  %.0f ex/s  ETA %s\n",
                st->epoch + 1, epochs, done, spe, loss, rate, eta);
        p->next_line = done + (spe + 9) / 10;
    }
    fflush(job->log);
}

static void clear_progress(const aj_job *job) {
    if (job->log && job->live) fprintf(job->log, "\r\033[K");
}

/* ---------------------------------------------------------------- train */

/* What aj_train holds, freed in one place. */
typedef struct {
    aj_run r;
    aj_ckpt *ck;
    aj_dataset train, valid;
    feeder f;
    step_fn s;
    char last[1100];         /* SAVE.last */
} trainer;

static void trainer_free(trainer *t) {
    step_free(&t->s);
    feed_free(&t->f);
    aj_dataset_free(&t->train);
    aj_dataset_free(&t->valid);
    aj_ckpt_free(t->ck);
    aj_run_close(&t->r);
}

/* Text data encoded with the vocabulary checkpoint ck (at path) was trained
 * with, its "vocab" bytes, so that token ids mean what they meant then. */
static int ckpt_vocab(const aj_ckpt *ck, const char *path, aj_dataset *ds, aj_diag *d) {
    size_t n;
    const char *v = aj_ckpt_meta_bytes(ck, "vocab", &n);
    if (!ds->tok)
        return v ? aj_io_error(d, path, 0, 0, "it was trained on text (it records a vocabulary), but '%s' is not "
                               "text", ds->spec) : 0;
    if (!v)
        return aj_io_error(d, path, 0, 0, "it records no vocabulary (metadata 'vocab'): it was not trained on text "
                           "like '%s'", ds->spec);
    /* a byte of the data's vocabulary (its train split's bytes) that the
     * checkpoint's lacks is refused even where this split lacks it too */
    for (int i = 0; i < ds->nvocab; i++) {
        unsigned char c = ds->vocab[i];
        char q[8] = "";
        if (memchr(v, c, n)) continue;
        if (c > 32 && c < 127) snprintf(q, sizeof q, " '%c'", c);
        return aj_io_error(d, ds->path, 0, 0, "its vocabulary differs from the %zu bytes %s was trained with: it has "
                           "byte 0x%02x%s, which that lacks", n, path, c, q);
    }
    return aj_dataset_set_vocab(ds, (const unsigned char *)v, n <= 256 ? (int)n : 0, d);
}

/* Everything up to the first step: model, data, train_step, and the state
 * either fresh or from --resume. */
static int trainer_open(trainer *t, const aj_job *job, train_state *st, aj_diag *d) {
    const char *data = job->data;
    if (job->resume) {
        if (open_ckpt(job, job->resume, 1, job->batch, &t->r, &t->ck, d)) return -1;
        if (!data) data = aj_ckpt_meta(t->ck, "data");
    } else if (aj_run_open(&t->r, job->model, NULL, NULL, job->dims, job->batch ? job->batch : DEFAULT_BATCH,
                           job->engine, d) ||
               aj_run_init_params(&t->r, job->seed, d)) {
        return -1;
    }
    if (!data) return aj_io_error(d, NULL, 0, 0, "no dataset: give one with --data");
    if (t->r.bdim < 0)
        return aj_io_error(d, job->model, 0, 0, "the model has no batch dim: declare `dim B` and use it as the first "
                           "axis of loglik's input");
    if (aj_dataset_load(data, "train", &t->train, d) || aj_dataset_load(data, "valid", &t->valid, d)) return -1;
    if (job->resume && (ckpt_vocab(t->ck, job->resume, &t->train, d) || ckpt_vocab(t->ck, job->resume, &t->valid, d)))
        return -1;
    int64_t width;
    const aj_graph *fn = loglik_fn(&t->r, &t->train, "loglik", &width, d);
    if (!fn || !loglik_fn(&t->r, &t->valid, "loglik", &width, d) || step_build(&t->s, &t->r, &job->opt, fn, d))
        return -1;
    if (job->valid_examples && job->valid_examples < nexamples(&t->valid, width)) {   /* its first N */
        if (t->valid.tok && !t->valid.d) t->valid.ntok = job->valid_examples * width + 1;
        else t->valid.n = job->valid_examples;
    }

    int64_t B = t->r.bind.v[t->r.bdim];
    *st = (train_state){.best = INFINITY, .seed = job->seed, .batch = B};
    if (job->resume) {
        if (restore(job, &t->r, &t->s, st, t->ck, &t->train, nexamples(&t->train, width), d)) return -1;
        /* what makes the run differ from the one it continues */
        const char *ck_data = aj_ckpt_meta(t->ck, "data"), *ck_opt = aj_ckpt_meta(t->ck, "optimizer");
        char opt[512];
        describe_opt(job, opt, sizeof opt);
        if (job->log && ck_data && strcmp(ck_data, data))
            fprintf(job->log, "arjit: warning: %s was trained on '%s', going on with '%s'\n", job->resume, ck_data, data);
        if (job->log && ck_opt && strcmp(ck_opt, opt))
            fprintf(job->log, "arjit: warning: %s was trained with %s; going on with %s\n", job->resume, ck_opt, opt);
        if (job->log && st->batch != B)
            fprintf(job->log, "arjit: warning: %s was trained in batches of %" PRId64 "; going on with %" PRId64 "\n",
                    job->resume, st->batch, B);
        if (job->log && job->seed_given && job->seed != st->seed)
            fprintf(job->log, "arjit: warning: --seed %" PRIu64 " ignored: resuming keeps the checkpoint's seed %" PRIu64
                    " (it fixes the batch order)\n", job->seed, st->seed);
        st->batch = B;
    }
    if (feed_init(&t->f, &t->train, B, width, st->seed, AJ_BATCH_SHUFFLE | AJ_BATCH_DROP_LAST, d)) return -1;
    if (job->save) snprintf(t->last, sizeof t->last, "%s.last", job->save);
    return 0;
}

/* Save SAVE.last (and SAVE when `best`), if there is a --save. */
static int checkpoint(const aj_job *job, trainer *t, const train_state *st, int best, aj_diag *d) {
    if (!job->save) return 0;
    if (best && save_ckpt(job, &t->r, &t->s, st, &t->train, job->save, d)) return -1;
    return save_ckpt(job, &t->r, &t->s, st, &t->train, t->last, d);
}

/* --threads: the OpenMP team of the compiled engines and the interpreter. */
static void use_threads(const aj_job *job) {
    if (job->threads > 0) omp_set_num_threads(job->threads), aj_set_threads(job->threads);
}

static int interrupted(const aj_job *job) { return job->interrupt && *job->interrupt; }

int aj_train(const aj_job *job, aj_train_result *res, aj_diag *d) {
    memset(res, 0, sizeof *res);
    res->first_loss = res->train_nll = res->valid_nll = res->best_valid = NAN;
    use_threads(job);
    trainer t = {0};
    train_state st;
    int rc = -1;
    if (trainer_open(&t, job, &st, d)) goto out;

    int64_t epochs = job->epochs ? job->epochs : DEFAULT_EPOCHS;
    int64_t B = t.r.bind.v[t.r.bdim], spe = t.f.bt.nexamples / B, end = spe * B;
    int64_t total = epochs * spe;
    if (job->max_steps && job->max_steps < total) total = job->max_steps;
    const aj_optim *o = &job->opt;
    if (job->resume && job->log)
        fprintf(job->log, "resuming %s at epoch %" PRId64 ", example %" PRId64 " (step %" PRId64 ")\n", job->resume,
                st.epoch + 1, st.pos, st.step);
    if (st.epoch >= epochs && job->log)
        fprintf(job->log, "nothing to do: %" PRId64 " epochs are done and --epochs is %" PRId64 "\n", st.epoch, epochs);

    while (st.epoch < epochs && !(job->max_steps && st.step >= job->max_steps)) {
        progress p = {now(), st.pos, 0, 0};
        aj_batcher_seek(&t.f.bt, st.epoch, st.pos);
        while (st.pos < end && !interrupted(job) && !(job->max_steps && st.step >= job->max_steps)) {
            int64_t count;
            feed_next(&t.f, t.s.in, t.s.na, &count);
            double lr = scheduled_lr(job, &st, total), loss;
            float lr_t = (float)lr;
            if (o->kind == AJ_OPT_ADAM) {   /* bias correction, t = this step, from 1 */
                double k = (double)(st.step + 1);
                lr_t = (float)(lr * sqrt(1 - pow(o->beta2, k)) / (1 - pow(o->beta1, k)));
            }
            if (step_run(&t.s, &t.r, lr_t, (float)(lr * o->weight_decay), aj_rng_key(st.seed, 4, (uint64_t)st.step),
                         &loss, d))
                goto out;
            if (!isfinite(loss)) {
                aj_io_error(d, job->model, 0, 0, "the loss is %g at step %" PRId64 " (epoch %" PRId64 "): training "
                            "diverged; try a smaller --lr or --clip", loss, st.step + 1, st.epoch + 1);
                goto out;
            }
            if (isnan(res->first_loss)) res->first_loss = loss;
            st.step++;
            st.pos += B;
            st.loss_sum += loss;
            st.loss_n++;
            show_progress(job, &p, &st, B, spe, epochs);
        }
        /* on SIGINT mid-epoch, or during its validation below, SAVE.last
         * keeps the position: resuming finishes the epoch, validation too */
        double valid = NAN;
        if (job->log && job->live && !interrupted(job)) {
            fprintf(job->log, "\repoch %" PRId64 "/%" PRId64 ": validating on %" PRId64 " examples\033[K", st.epoch + 1,
                    epochs, t.valid.n);
            fflush(job->log);
        }
        int vrc = interrupted(job) ? 1 : aj_run_nll(&t.r, &t.valid, NULL, &valid, job->interrupt, d);
        clear_progress(job);
        if (vrc < 0) goto out;
        if (vrc > 0) {
            res->interrupted = 1;
            if (checkpoint(job, &t, &st, 0, d)) goto out;
            break;
        }
        int partial = st.pos < end, better = valid < st.best;
        res->train_nll = st.loss_n ? st.loss_sum / (double)st.loss_n : NAN;
        res->valid_nll = valid;
        if (better) st.best = valid, st.since_best = 0;
        else st.since_best++;
        if (job->out) {
            fprintf(job->out, "epoch %" PRId64, st.epoch + 1);
            if (partial) fprintf(job->out, " (%" PRId64 "/%" PRId64 " steps)", st.pos / B, spe);
            fprintf(job->out, ": train NLL %.4f  valid NLL %.4f (best %.4f)  time %.1fs\n", res->train_nll, valid,
                    st.best, now() - p.t0);
            fflush(job->out);
        }
        if (!partial) st.epoch++, st.pos = 0, st.loss_sum = 0, st.loss_n = 0;
        if (checkpoint(job, &t, &st, better, d)) goto out;
        if (job->patience && st.since_best >= job->patience) {
            res->early_stopped = 1;
            if (job->out)
                fprintf(job->out, "early stop: no better valid NLL for %" PRId64 " epochs\n", st.since_best);
            break;
        }
    }
    res->step = st.step;
    res->epoch = st.epoch;
    res->best_valid = st.best;
    rc = 0;
out:
    clear_progress(job);
    trainer_free(&t);
    return rc;
}

/* ---------------------------------------------------------------- eval, sample */

/* The exact-match accuracy of fn predict on token rows: predict takes
 * loglik's arguments but the last (reverse:N: the source), and its first
 * result must equal that last one (the target) in every position. */
static int predict_accuracy(aj_run *r, const aj_dataset *ds, const aj_graph *loglik, int64_t width, double *acc,
                            aj_diag *d) {
    const aj_graph *fn = aj_module_fn(r->m, "predict");
    int na = loglik->nleaf;
    if (fn->nleaf != na - 1)
        return aj_io_error(d, r->m->path, fn->line, fn->col, "fn predict takes %d arguments: it is given loglik's "
                           "first %d, and its result is compared with loglik's last", fn->nleaf, na - 1);
    int64_t B = r->bind.v[r->bdim], count, seen = 0, right = 0;
    feeder f = {0};
    aj_tensor *x = calloc((size_t)na, sizeof *x), *res = calloc((size_t)fn->nresult, sizeof *res);
    int rc = -1;
    if (!x || !res) {
        aj_io_error(d, ds->path, 0, 0, "out of memory for a batch of %" PRId64, B);
        goto out;
    }
    if (feed_init(&f, ds, B, width, 0, 0, d) || arg_tensors(r->m, loglik, na, x, d)) goto out;
    const aj_tensor *y = &x[na - 1];
    int64_t w = y->shape[1];
    while (feed_next(&f, x, na, &count) == 1) {
        if (r->run(r->m, fn, r->params, x, res, 0, d)) goto out;
        int ok = res[0].dtype == AJ_I32 && aj_tensor_numel(&res[0]) == B * w;
        for (int64_t i = 0; ok && i < count; i++)
            right += !memcmp((const int32_t *)res[0].data + i * w, (const int32_t *)y->data + i * w, (size_t)w * 4);
        for (int i = 0; i < fn->nresult; i++) aj_tensor_free(&res[i]);
        if (!ok) {
            aj_io_error(d, r->m->path, fn->line, fn->col, "fn predict's first result must be i32[B, %" PRId64 "], "
                        "as loglik's last argument %s", w, loglik->val[loglik->leaf[na - 1]].name);
            goto out;
        }
        seen += count;
    }
    *acc = (double)right / (double)seen;
    rc = 0;
out:
    for (int j = 0; x && j < na; j++) aj_tensor_free(&x[j]);
    free(x);
    free(res);
    feed_free(&f);
    return rc;
}

int aj_eval(const aj_job *job, aj_eval_result *res, aj_diag *d) {
    memset(res, 0, sizeof *res);
    aj_run r;
    aj_ckpt *ck = NULL;
    aj_dataset ds = {0};
    int rc = -1;
    use_threads(job);
    if (open_ckpt(job, job->ckpt, 0, job->batch, &r, &ck, d)) goto out;
    const char *data = job->data ? job->data : aj_ckpt_meta(ck, "data");
    const char *split = job->split ? job->split : "test";
    if (!data) {
        aj_io_error(d, job->ckpt, 0, 0, "no dataset recorded: give one with --data");
        goto out;
    }
    int64_t width;
    const aj_graph *fn;
    res->accuracy = NAN;
    if (aj_dataset_load(data, split, &ds, d) || ckpt_vocab(ck, job->ckpt, &ds, d) ||
        !(fn = loglik_fn(&r, &ds, job->fn ? job->fn : "loglik", &width, d)) ||
        aj_run_nll(&r, &ds, job->fn, &res->nll, NULL, d))
        goto out;
    int rows = ds.tok && ds.d;
    if (rows && aj_module_fn(r.m, "predict") && predict_accuracy(&r, &ds, fn, width, &res->accuracy, d)) goto out;
    res->n = nexamples(&ds, width);
    res->d = rows ? fn->val[fn->leaf[fn->nleaf - 1]].type.dim[1].off : width;   /* token rows: the modelled ones */
    res->text = ds.tok && !rows;
    res->bpd = res->nll / ((double)res->d * M_LN2);
    snprintf(res->split, sizeof res->split, "%s", split);
    snprintf(res->data, sizeof res->data, "%s", data);
    rc = 0;
out:
    aj_dataset_free(&ds);
    aj_ckpt_free(ck);
    if (r.m) aj_run_close(&r);
    return rc;
}

/* The bytes of --prompt as token ids of the checkpoint's vocabulary
 * (*ids holds np + 1, zeroed; free it). */
static int encode_prompt(const char *prompt, const aj_samples *out, const char *ckpt, int32_t **ids, aj_diag *d) {
    size_t np = prompt ? strlen(prompt) : 0;
    if (np && !out->nvocab) return aj_io_error(d, ckpt, 0, 0, "records no vocabulary (\"vocab\"): a --prompt needs one");
    if (!(*ids = calloc(np + 1, sizeof **ids))) return aj_io_error(d, ckpt, 0, 0, "out of memory");
    for (size_t i = 0; i < np; i++) {
        const unsigned char *at = memchr(out->vocab, (unsigned char)prompt[i], (size_t)out->nvocab);
        if (!at) {
            free(*ids), *ids = NULL;
            return aj_io_error(d, "--prompt", 0, 0, "byte %zu (0x%02x) is not in the vocabulary of %s", i + 1,
                               (unsigned char)prompt[i], ckpt);
        }
        (*ids)[i] = (int32_t)(at - out->vocab);
    }
    return 0;
}

/* fn sample(src : i32[B, N]): a sampler of a source sequence, the
 * encoder-decoder's, which --prompt feeds (cond_input) */
static int takes_source(const aj_graph *fn) {
    return fn->nleaf == 1 && fn->val[fn->leaf[0]].type.dtype == AJ_I32;
}

/* A sampler that conditions on an input, fn sample(x), gets
 * - x : f32[B, D]: the first n examples of a split (job->split, default
 *   test) of job->data or the checkpoint's data: inpainting the bottom half
 *   of test digits, say;
 * - x : i32[B, N], a source sequence (the encoder-decoder's): --prompt's N
 *   bytes for every sample, or else the first N tokens of the split's first
 *   n rows (reverse:N's rows are N source then N target tokens). */
static int cond_input(const aj_job *job, aj_run *r, const aj_ckpt *ck, const aj_graph *fn, const aj_samples *out,
                      int64_t n, aj_tensor *x, aj_diag *d) {
    const aj_value *a = &fn->val[fn->leaf[0]];
    int tok = takes_source(fn);
    if (fn->nleaf != 1 || (a->type.dtype != AJ_F32 && !tok) || a->type.rank != 2)
        return aj_io_error(d, job->model, fn->line, fn->col,
                           "fn sample takes %d argument%s: arjit sample gives it one, f32[B, D] examples of the data or "
                           "an i32[B, N] source sequence", fn->nleaf, fn->nleaf == 1 ? "" : "s");
    int64_t dim = aj_dim_bind(a->type.dim[1], &r->bind).off;
    if (tok && job->prompt) {
        int32_t *ids;
        if (strlen(job->prompt) != (size_t)dim)
            return aj_io_error(d, "--prompt", 0, 0, "has %zu bytes: fn sample's source '%s' is %" PRId64 " tokens",
                               strlen(job->prompt), a->name, dim);
        if (encode_prompt(job->prompt, out, job->ckpt, &ids, d)) return -1;
        *x = aj_tensor_new(AJ_I32, 2, (int64_t[]){n, dim});
        for (int64_t i = 0; x->data && i < n; i++) memcpy((int32_t *)x->data + i * dim, ids, sizeof *ids * (size_t)dim);
        free(ids);
        return x->data ? 0 : aj_io_error(d, job->model, 0, 0, "out of memory");
    }
    const char *data = job->data ? job->data : aj_ckpt_meta(ck, "data");
    const char *split = job->split ? job->split : "test";
    if (!data)
        return aj_io_error(d, job->ckpt, 0, 0, "fn sample conditions on data: give it with --data%s",
                           tok ? " or --prompt" : "");
    aj_dataset ds = {0};
    int rc = aj_dataset_load(data, split, &ds, d);
    int rows = ds.tok && ds.d;   /* token rows (reverse:N), not vectors or a text stream */
    if (!rc && tok && !rows)
        rc = aj_io_error(d, job->model, a->line, a->col, "fn sample's '%s' is a source sequence, i32[B, %" PRId64 "]; "
                         "%s has no rows of tokens to take it from (give --prompt)", a->name, dim, data);
    else if (!rc && (tok ? ds.d < dim : ds.d != dim))
        rc = aj_io_error(d, job->model, a->line, a->col, "fn sample's '%s' is %s[B, %" PRId64 "]; %s has %s of %" PRId64,
                         a->name, tok ? "i32" : "f32", dim, data, tok ? "rows" : "vectors", ds.d);
    if (!rc && ds.n < n)
        rc = aj_io_error(d, data, 0, 0, "the %s split has %" PRId64 " examples, fewer than the %" PRId64 " samples asked for",
                         split, ds.n, n);
    if (!rc) {
        *x = aj_tensor_new(tok ? AJ_I32 : AJ_F32, 2, (int64_t[]){n, dim});
        if (!x->data) rc = aj_io_error(d, data, 0, 0, "out of memory");
        for (int64_t i = 0; x->data && i < n; i++)
            if (tok) memcpy((int32_t *)x->data + i * dim, ds.tok + i * ds.d, sizeof(int32_t) * (size_t)dim);
            else memcpy((float *)x->data + i * dim, ds.x + i * ds.d, sizeof(float) * (size_t)dim);
    }
    aj_dataset_free(&ds);
    return rc;
}

/* sample 0's new byte, streamed as it is drawn */
typedef struct { FILE *f; const aj_samples *s; } text_stream;
static void emit_text(void *ctx, const int32_t *tok, int64_t B, int64_t t) {
    text_stream *ts = ctx;
    if (tok[0] >= 0 && tok[0] < ts->s->nvocab) fputc(ts->s->vocab[tok[0]], ts->f);
    fflush(ts->f);
}

/* The sampler derived from fn loglik: the prompt's bytes as tokens of the
 * vocabulary, streamed text when asked for and there is a vocabulary. */
static int derived_sample(const aj_job *job, aj_run *r, aj_samples *out, const char *ckpt, aj_diag *d) {
    aj_ancestral_opts a = job->anc;
    text_stream ts = {job->text, out};
    size_t np = job->prompt ? strlen(job->prompt) : 0;
    int32_t *prompt;
    if (encode_prompt(job->prompt, out, ckpt, &prompt, d)) return -1;
    /* tokens past the vocabulary mean nothing: never drawn */
    a.seed = job->seed, a.prompt = prompt, a.nprompt = (int64_t)np, a.ncat = out->nvocab;
    if (job->text && out->nvocab && r->bind.v[r->bdim] == 1) a.emit = emit_text, a.ctx = &ts;
    int rc = aj_ancestral(r->m, r->run, r->params, &a, &out->x, d);
    free(prompt);
    return rc;
}

int aj_sample(const aj_job *job, int64_t n, aj_samples *out, aj_diag *d) {
    memset(out, 0, sizeof *out);
    aj_run r;
    aj_ckpt *ck = NULL;
    aj_tensor *res = NULL, cond = {0};
    int rc = -1;
    use_threads(job);
    if (open_ckpt(job, job->ckpt, 0, n, &r, &ck, d)) goto out;
    /* --fn names another fn to run; without it fn sample, or (none in the
     * model) the sampler derived from fn loglik */
    const aj_graph *fn = aj_module_fn(r.m, job->fn ? job->fn : "sample");
    if (!fn && job->fn) {
        aj_io_error(d, job->model, 0, 0, "the model has no fn %s", job->fn);
        goto out;
    }
    if (r.bdim < 0 || r.bind.v[r.bdim] != n) {
        aj_io_error(d, job->model, 0, 0, "the number of samples is the batch dim B: %s",
                    r.bdim < 0 ? "the model has none" : "do not bind B with --dims, use -n");
        goto out;
    }
    size_t nv = 0;
    const char *voc = aj_ckpt_meta_bytes(ck, "vocab", &nv);
    if (voc && nv <= sizeof out->vocab) memcpy(out->vocab, voc, nv), out->nvocab = (int)nv;
    if (!fn) {
        if (derived_sample(job, &r, out, job->ckpt, d)) goto out;
    } else if (job->anc_given || (job->prompt && !takes_source(fn))) {
        aj_io_error(d, job->model, fn->line, fn->col, "the model has its own fn sample: --length, --temperature, "
                    "--top-k and --naive-sampling go with the sampler derived from fn loglik, --prompt with it or a "
                    "fn sample of a source sequence (i32[B, N])");
        goto out;
    } else {
        if (fn->nleaf && cond_input(job, &r, ck, fn, out, n, &cond, d)) goto out;
        if (!(res = calloc((size_t)fn->nresult, sizeof *res))) {
            aj_io_error(d, job->model, 0, 0, "out of memory");
            goto out;
        }
        if (r.run(r.m, fn, r.params, fn->nleaf ? &cond : NULL, res, job->seed, d)) goto out;
        out->x = res[0];
        res[0].data = NULL;
        if (cond.dtype == AJ_I32) out->src = cond, cond.data = NULL;
        for (int i = 1; i < fn->nresult; i++) aj_tensor_free(&res[i]);
    }
    /* images when the training data were ("HxW", whole), and every sample is one; else say why not */
    const char *img = aj_ckpt_meta(ck, "image");
    char *e1 = NULL, *e2 = NULL;
    long h = img ? strtol(img, &e1, 10) : 0, w = img && *e1 == 'x' ? strtol(e1 + 1, &e2, 10) : 0;
    int64_t per = aj_tensor_numel(&out->x) / n;
    out->image_data = img != NULL;
    snprintf(out->data, sizeof out->data, "%s", aj_ckpt_meta(ck, "data") ? aj_ckpt_meta(ck, "data") : "");
    if (!img)
        snprintf(out->why, sizeof out->why, "%s records no image size (its data '%s' are not images)", job->ckpt,
                 aj_ckpt_meta(ck, "data") ? aj_ckpt_meta(ck, "data") : "?");
    else if (e1 == img || !e2 || e2 == e1 + 1 || *e2 || h < 1 || w < 1 || h > MAX_SIDE || w > MAX_SIDE)
        snprintf(out->why, sizeof out->why, "%s records the image size '%.64s', not HxW (from 1 to %d)", job->ckpt,
                 img, MAX_SIDE);
    else if (out->x.dtype != AJ_F32)
        snprintf(out->why, sizeof out->why, "fn sample's first result is i32, not f32 pixel values");
    else if (per != h * w || aj_tensor_numel(&out->x) != n * per)
        snprintf(out->why, sizeof out->why, "fn sample gives %" PRId64 " values for %" PRId64 " samples, not %ldx%ld "
                 "pixels each", aj_tensor_numel(&out->x), n, h, w);
    else
        out->h = (int)h, out->w = (int)w;
    rc = 0;
out:
    free(res);
    aj_tensor_free(&cond);
    aj_ckpt_free(ck);
    if (r.m) aj_run_close(&r);
    return rc;
}
