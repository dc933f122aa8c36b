/* arjit training: what `arjit train | eval | sample | gradcheck` run.
 *
 * A run context (aj_run) is a model ready to execute: parsed, its dims bound
 * (B, the batch, among them), verified, its parameters in memory, and the
 * engine that runs its fns. On top of it:
 *   aj_train   mini-batch maximum likelihood with the compiled train_step,
 *              validation each epoch, best/last checkpoints, exact resume;
 *   aj_eval    the average NLL of a dataset split under a checkpoint;
 *   aj_sample  fn sample under a checkpoint.
 * docs/training.md is the user's guide. Every function returns 0, or -1 with
 * the first error in an aj_diag that names the file (or flag) at fault.
 */
#ifndef ARJIT_TRAIN_H
#define ARJIT_TRAIN_H

#include "arjit.h"
#include "arjit_runtime.h"
#include <signal.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- engines */

/* An engine runs fn of m; the contract is aj_interp_run's. */
typedef int (*aj_engine_run)(const aj_module *m, const aj_graph *fn, const aj_tensor *params,
                             const aj_tensor *inputs, aj_tensor *results, uint64_t seed, aj_diag *d);

/* The engine called `name` ("interp", "naive", "fused"). NULL with d set
 * when the name is unknown or the engine is not built yet. */
aj_engine_run aj_engine_find(const char *name, aj_diag *d);

/* ---------------------------------------------------------------- run context */

typedef struct {
    aj_module *m;
    aj_bind bind;
    int bdim, tdim;          /* module dim index of the batch B and length T; -1: none */
    char hash[32];           /* "fnv1a:<16 hex digits>" of the model's source text */
    char dims[512];          /* every dim but B as "D=784,H=500": what a checkpoint records */
    aj_tensor *params;       /* m->nparam tensors once initialised or loaded */
    aj_engine_run run;
} aj_run;

/* Parse model `path`, bind its declared dims, then `ckpt_dims` and `dims`
 * ("D=8,H=5" overrides, either may be NULL; ckpt_dims is named `ckpt_path`
 * in errors), then B = batch when the model has B, batch > 0 and B is still
 * free. Every dim must end up bound. Verifies and infers the model. */
int aj_run_open(aj_run *r, const char *path, const char *ckpt_dims, const char *ckpt_path,
                const char *dims, int64_t batch, aj_engine_run engine, aj_diag *d);
void aj_run_close(aj_run *r);
/* Fresh parameters from their initialisers (aj_param_init with seed). */
int aj_run_init_params(aj_run *r, uint64_t seed, aj_diag *d);
/* Parameters from a checkpoint's params section: each must be there with
 * the shape the model has under r->bind. */
int aj_run_load_params(aj_run *r, const aj_ckpt *ck, const char *ckpt_path, aj_diag *d);

/* The mean NLL in nats per example (-log p(x) from fn `fn`, NULL: loglik,
 * which takes x : f32[B, D] and returns log p(x) per example first) over
 * every example of vector dataset ds, in batches of B; the last batch is
 * padded with zero rows that are not counted. Text: the examples are the
 * in-order windows, x : i32[B, T] their last T tokens (docs/training.md). An NLL that is NaN or Inf is
 * an error. Stops early, returning 1, once *interrupt is set (interrupt may
 * be NULL). */
int aj_run_nll(aj_run *r, const aj_dataset *ds, const char *fn, double *nll,
               const volatile sig_atomic_t *interrupt, aj_diag *d);

/* The autoregressive order check (runtime/order.c, arjit check --order):
 * model `path` under `dims` (B = 1), parameters from their initialisers
 * with `seed`. Proves on the interpreter, by exact comparison, that fn
 * loglik's per-variable term i depends on no x_j with j > i, and (binary
 * and categorical models: info->self) that its distribution's parameters
 * do not depend on x_i (exactly, or by normalisation: info->exact). A
 * model that draws its order (an order-agnostic MADE) passes when its
 * dependences order the variables some other way (info->natural = 0).
 * Arguments of fn loglik other than x (the one its likelihood reads as the
 * target, else the last) are conditioning inputs, held at 0. 0 when it
 * holds; -1 with d set at the graph line where the first leak (i, j)
 * enters, or on an error. */
typedef struct {
    int64_t nvar;      /* D */
    int ninput;        /* random inputs tried */
    int64_t nvalue;    /* values tried for each x_j */
    int self;          /* whether j = i was checked */
    int exact;         /* j = i checked exactly (the likelihood's target held), not by normalisation */
    int natural;       /* autoregressive in the index order x_0 .. x_{D-1}; else in another one */
    int64_t start[8];  /* !natural: the first variables of such an order */
} aj_order_info;
int aj_order_check(const char *path, const char *dims, uint64_t seed, aj_order_info *info, aj_diag *d);

/* ---------------------------------------------------------------- ancestral sampling */

/* How aj_ancestral samples with the sampler derived from fn loglik. */
typedef struct {
    int64_t length;          /* positions to produce; 0: the block size T (more: the window slides) */
    double temperature;      /* divides the logits; 0: 1 */
    int top_k;               /* draw among the k likeliest values only; 0: all */
    const int32_t *prompt;   /* positions 0..nprompt-1 of every row: fed, not drawn */
    int64_t nprompt;
    uint64_t seed;           /* a draw is a function of (seed, position, row) */
    int full;                /* the full form (the whole graph each step), to compare */
    const aj_step_info *derived; /* the sampler aj_sample_step already put in m; NULL: derive it now */
    int64_t ncat;            /* categorical draws among values below it only (a vocabulary's size); 0: all */
    const aj_tensor *args;   /* loglik's arguments other than x, in order (an encoder-decoder's source) */
    int nargs;
    /* called after each position t with its B values */
    void (*emit)(void *ctx, const int32_t *tok, int64_t B, int64_t t);
    void *ctx;
} aj_ancestral_opts;

/* Derive fn sample_init / sample_step (aj_sample_step) into m (every dim
 * bound, fn loglik(x : [B, T])) and sample B sequences of o->length values
 * into *out ([B, length], x's dtype), running the fns on `run`. */
int aj_ancestral(aj_module *m, aj_engine_run run, const aj_tensor *params, const aj_ancestral_opts *o, aj_tensor *out,
                 aj_diag *d);

/* ---------------------------------------------------------------- jobs */

typedef enum { AJ_SCHED_CONSTANT, AJ_SCHED_STEP, AJ_SCHED_COSINE } aj_schedule;

/* What to run; the fields a job does not use are ignored. Zeroes are
 * "not given" where a comment says so. */
typedef struct {
    const char *model;       /* graph file */
    const char *dims;        /* "D=8,H=5" overrides, or NULL */
    const char *data;        /* dataset spec (arjit_runtime.h); NULL: the checkpoint's */
    const char *split;       /* eval: "test" | "valid" | "train"; NULL: test */
    const char *ckpt;        /* eval, sample: the checkpoint to read */
    const char *fn;          /* eval: the fn scoring log p(x) per example; NULL: loglik. sample: the fn run; NULL: sample */
    aj_engine_run engine;    /* NULL: the interpreter */
    int64_t batch;           /* B; 0: the checkpoint's (--resume, eval), else 100 */
    uint64_t seed;           /* parameter init and batch order (train), draws (sample) */
    int seed_given;          /* train --resume: warn when it differs from the checkpoint's */

    /* train */
    int64_t epochs;          /* train until this many epochs are done; 0: 10 */
    int64_t max_steps;       /* stop once this many steps are done in all; 0: no limit */
    int64_t patience;        /* stop after this many epochs without a better valid NLL; 0: never */
    int64_t valid_examples;  /* validate on the valid split's first N examples; 0: all of them */
    aj_optim opt;
    double lr;
    aj_schedule schedule;
    int64_t step_epochs;     /* AJ_SCHED_STEP: lr *= gamma every step_epochs epochs */
    double gamma;
    const char *save;        /* write SAVE (best valid) and SAVE.last (latest); NULL: none */
    const char *resume;      /* continue from this checkpoint; NULL: start afresh */
    int threads;             /* OpenMP threads for engines that use them (train, eval, sample); 0: default */
    FILE *out;               /* epoch lines; NULL: none */
    FILE *log;               /* progress and warnings; NULL: none */
    int live;                /* progress as one line redrawn with \r (a terminal) */
    const volatile sig_atomic_t *interrupt; /* set (by SIGINT): finish the step,
                                               save SAVE.last and stop */

    /* sample, with the sampler derived from fn loglik (a model without fn
     * sample): length, temperature, top_k, full as aj_ancestral takes them
     * (its seed is job->seed, its prompt `prompt`) */
    aj_ancestral_opts anc;
    int anc_given;           /* one of them was given: an error for a model with its own fn sample */
    const char *prompt;      /* bytes, each in the checkpoint's vocabulary ("vocab"); NULL: none */
    FILE *text;              /* stream sample 0's text there as it is drawn (n = 1, a vocabulary); NULL: none */
} aj_job;

typedef struct {
    int64_t step, epoch;     /* steps done in all; whole epochs done */
    double first_loss;       /* the first step's loss in this process (NaN: none) */
    double train_nll;        /* the mean step loss of the last epoch */
    double valid_nll, best_valid;
    int interrupted, early_stopped;
} aj_train_result;

/* Train job->model on job->data: vector data, or text for a model whose
 * loglik takes token windows i32[B, T] (docs/training.md). */
int aj_train(const aj_job *job, aj_train_result *res, aj_diag *d);

typedef struct {
    double nll;              /* nats per example */
    double bpd;              /* bits per dimension: nll / (d ln 2) */
    int64_t n, d;            /* examples, values per example */
    int text;                /* text: n windows of d characters; bpd is bits per character */
    double accuracy;         /* token rows (reverse:N) and a fn predict: the fraction of examples
                                it predicts exactly (greedy decoding); NaN otherwise */
    char split[8], data[256];
} aj_eval_result;

/* The average NLL of a split of job->data under checkpoint job->ckpt. */
int aj_eval(const aj_job *job, aj_eval_result *res, aj_diag *d);

typedef struct {
    aj_tensor x;             /* fn sample's first result: n examples (free it) */
    aj_tensor src;           /* the i32 source sequences fn sample was given (free it); none: data NULL */
    int h, w;                /* image size the checkpoint's data had; 0: not drawable as images */
    int image_data;          /* the checkpoint records an image size (its data were images) */
    char why[256];           /* h = 0: why the samples cannot be drawn as images */
    char data[256];          /* the dataset spec the checkpoint was trained on ("" if none) */

    unsigned char vocab[256];/* the checkpoint's vocabulary: token i is byte vocab[i] */
    int nvocab;              /* 0: none (the samples are not text) */
} aj_samples;

/* n draws from fn sample (B = n) under checkpoint job->ckpt, seeded by
 * job->seed; from the sampler derived from fn loglik when the model has no
 * fn sample (docs/sampling.md). */
int aj_sample(const aj_job *job, int64_t n, aj_samples *out, aj_diag *d);

#ifdef __cplusplus
}
#endif
#endif
