/* arjit: the command-line driver.
 *
 *   arjit check FILE... [--dims D=8,H=5]     parse, verify, summarise
 *   arjit dump FILE [--stage ir] [--dims ..]  print a stage as text
 *   arjit train FILE --data SPEC [..]        maximum likelihood, checkpoints
 *   arjit eval FILE --ckpt CKPT [..]         NLL of a dataset split
 *   arjit sample FILE --ckpt CKPT [..]       draw from fn sample
 *   arjit gradcheck FILE [..]                autodiff against finite differences
 *
 * Every command is one entry in `commands` below: its name, a one-line
 * summary, its operands, its flags (one table each, parsed by the one parser
 * in parse_args) and the function that runs it. Exit status: 0 success,
 * 1 the model is wrong (a diagnostic was printed), 2 the command line is
 * wrong (a hint was printed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdarg.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <unistd.h>

#include "arjit.h"
#include "arjit_train.h"
#include "../compiler/simplify.h"

#define EXIT_MODEL 1
#define EXIT_USAGE 2
#define MAX_FILES 256

/* ---------------------------------------------------------------- options */

/* Everything any command can be told. A flag writes its value into one
 * field (found by offset), so adding a flag is one table entry. */
typedef struct {
    const char *files[MAX_FILES];
    int nfiles;
    const char *dims;    /* --dims: "D=8,H=5" */
    const char *stage;   /* --stage: what dump prints */
    /* train, eval, sample, gradcheck: parsed and range-checked by job_options */
    const char *data, *split, *ckpt, *save, *resume, *engine, *out, *fn;
    const char *epochs, *batch, *max_steps, *patience, *seed, *threads, *n, *probes;
    const char *opt, *lr, *momentum, *beta1, *beta2, *eps, *rho, *weight_decay, *clip;
    const char *schedule, *step_epochs, *gamma, *tol;
} options;

typedef struct {
    const char *name;    /* "--dims" */
    const char *metavar; /* shown in help; NULL: a switch that takes no value */
    size_t offset;       /* where the value goes in options (switches get "1") */
    const char *help;
} flag;

/* Shared flag entries, so commands that take the same flag say the same. */
#define FLAG_DIMS { "--dims", "D=8,H=5", offsetof(options, dims), \
    "bind named dims (comma-separated NAME=VALUE); overrides the file's values" }
#define FLAG_DATA { "--data", "SPEC", offsetof(options, data), \
    "dataset: mnist-bin, mnist, mnist-gray or csv:FILE[,drop=COL] (docs/training.md)" }
#define FLAG_CKPT { "--ckpt", "CKPT", offsetof(options, ckpt), "the checkpoint to read (written by train --save)" }
#define FLAG_BATCH { "--batch", "N", offsetof(options, batch), \
    "examples per batch, the model's dim B; default the checkpoint's, else 100" }
#define FLAG_ENGINE { "--engine", "NAME", offsetof(options, engine), \
    "what runs the graphs: interp (naive and fused: not built yet); default interp" }
#define FLAG_SEED(what) { "--seed", "S", offsetof(options, seed), what }
#define FLAG_END { NULL, NULL, 0, NULL }

typedef struct {
    const char *name;
    const char *summary;       /* one line, for `arjit --help` */
    const char *operand;       /* e.g. "FILE"; `-` means standard input */
    int min_files, max_files;  /* how many operands */
    const flag *flags;
    const char *details;       /* more help, after the flags; may be NULL */
    int (*run)(const options *o);
} command;

/* ---------------------------------------------------------------- helpers */

static const char *prog = "arjit";

/* Load, bind and infer one file. Returns NULL (diagnostic printed) on error. */
static aj_module *load(const char *path, const char *dims, aj_bind *b)
{
    aj_diag d = {0};
    aj_module *m = aj_load_file(path, dims, b, &d);
    if (!m) aj_diag_print(&d, stderr);
    return m;
}

/* Count the ops of a graph and of every recurrence body in it. */
static void count_ops(const aj_graph *g, int *count)
{
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        count[n->op]++;
        if (n->rec && n->rec->body)
            count_ops(n->rec->body, count);
    }
}

/* Mark the module parameters a graph (or a body inside it) refers to. */
static void mark_params(const aj_graph *g, char *used)
{
    for (int i = 0; i < g->nval; i++)
        if (g->val[i].kind == AJ_VAL_PARAM)
            used[g->val[i].idx] = 1;
    for (int i = 0; i < g->nnode; i++)
        if (g->node[i].rec && g->node[i].rec->body)
            mark_params(g->node[i].rec->body, used);
}

/* "x: f32[B, D], y: i32[B]" for a list of value ids. */
static void print_values(const aj_module *m, const aj_graph *g, const int *ids, int n)
{
    char buf[256];
    for (int i = 0; i < n; i++) {
        const aj_value *v = &g->val[ids[i]];
        aj_type_str(m, &v->type, buf, sizeof buf);
        printf("%s%s: %s", i ? ", " : "", v->name ? v->name : "_", buf);
    }
}

/* ---------------------------------------------------------------- check */

static void summarise(const aj_module *m, const aj_bind *b, const char *path)
{
    char buf[256];
    printf("%s: ok\n", strcmp(path, "-") == 0 ? "<stdin>" : path);

    /* dims: their values, and where each value came from */
    printf("  dims:\n");
    for (int k = 0; k < m->ndim; k++) {
        const aj_dimdef *dd = &m->dim[k];
        if (b->v[k] < 0)
            printf("    %-8s bound at run time\n", dd->name);
        else
            printf("    %-8s = %" PRId64 "%s\n", dd->name, b->v[k],
                   dd->has_value && dd->value == b->v[k] ? "" : "  (from --dims)");
    }

    /* parameters: shapes under the binding; a count only when all dims are bound */
    printf("  parameters:\n");
    int64_t total = 0;
    uint64_t unbound = 0;
    for (int i = 0; i < m->nparam; i++) {
        const aj_param *p = &m->param[i];
        aj_type t = p->type;
        int64_t numel = 1;
        int known = 1;
        for (int a = 0; a < t.rank; a++) {
            t.dim[a] = aj_dim_bind(t.dim[a], b);
            if (aj_dim_is_const(t.dim[a])) {
                /* saturate: a huge --dims value must not wrap the count */
                if (__builtin_mul_overflow(numel, t.dim[a].off, &numel))
                    numel = INT64_MAX;
            } else {
                known = 0;
                unbound |= t.dim[a].syms;
            }
        }
        aj_type_str(m, &t, buf, sizeof buf);
        if (known) {
            printf("    %-12s %-24s %" PRId64 "\n", p->name, buf, numel);
            if (__builtin_add_overflow(total, numel, &total))
                total = INT64_MAX;
        } else {
            printf("    %-12s %s\n", p->name, buf);
        }
    }
    if (m->nparam == 0) {
        printf("    (none)\n");
    } else if (!unbound) {
        printf("    total: %" PRId64 " scalars\n", total);
    } else {
        /* name the dims that stand in the way, so the user knows what to bind */
        printf("    total: unknown until");
        for (int k = 0, first = 1; k < m->ndim; k++)
            if (unbound >> k & 1) {
                printf("%s %s", first ? "" : ",", m->dim[k].name);
                first = 0;
            }
        printf(" are bound (--dims)\n");
    }

    /* functions: signature, parameters used, ops used */
    for (int f = 0; f < m->nfn; f++) {
        const aj_graph *g = m->fn[f];
        printf("  fn %s(", g->name);
        print_values(m, g, g->leaf, g->nleaf);
        printf(") -> (");
        print_values(m, g, g->result, g->nresult);
        printf(")\n");

        char *used = calloc((size_t)m->nparam + 1, 1);
        if (!used) {
            perror(prog);
            exit(EXIT_MODEL);
        }
        mark_params(g, used);
        printf("    params:");
        int any = 0;
        for (int i = 0; i < m->nparam; i++)
            if (used[i]) {
                printf("%s %s", any ? "," : "", m->param[i].name);
                any = 1;
            }
        printf("%s\n", any ? "" : " (none)");
        free(used);

        int count[AJ_OP_COUNT] = {0};
        count_ops(g, count);
        printf("    ops:");
        any = 0;
        for (int op = 0; op < AJ_OP_COUNT; op++)
            if (count[op]) {
                printf("%s %s: %d", any ? "," : "", aj_op_info((aj_op)op)->name, count[op]);
                any = 1;
            }
        printf("%s\n", any ? "" : " (none)");
    }
}

static int run_check(const options *o)
{
    int status = 0;
    for (int i = 0; i < o->nfiles; i++) {
        aj_bind b;
        aj_module *m = load(o->files[i], o->dims, &b);
        if (!m) {
            status = EXIT_MODEL;   /* keep going: report every broken file */
            continue;
        }
        if (i > 0)
            printf("\n");
        summarise(m, &b, o->files[i]);
        aj_module_free(m);
    }
    return status;
}

/* ---------------------------------------------------------------- dump */

static const char *const stages[] = { "ir", "grad", "opt", NULL };

static int run_dump(const options *o)
{
    const char *stage = o->stage ? o->stage : "ir";
    int known = 0;
    for (int i = 0; stages[i]; i++)
        known |= strcmp(stage, stages[i]) == 0;
    if (!known) {
        fprintf(stderr, "%s: unknown stage '%s' for 'dump' (stages:", prog, stage);
        for (int i = 0; stages[i]; i++)
            fprintf(stderr, " %s", stages[i]);
        fprintf(stderr, "); see '%s dump --help'\n", prog);
        return EXIT_USAGE;
    }

    aj_bind b;
    aj_module *m = load(o->files[0], o->dims, &b);
    if (!m)
        return EXIT_MODEL;
    /* Print the module as specialised by --dims: bound dims get their
     * values, so the text parses back to the same model. */
    if (o->dims)
        for (int k = 0; k < m->ndim; k++)
            if (b.v[k] >= 0) {
                m->dim[k].has_value = 1;
                m->dim[k].value = b.v[k];
            }
    /* grad: the module with grad_<fn> added for its first fn (loglik by
     * convention), printed in the same syntax so it parses back; opt: that
     * module with every fn simplified (compiler/simplify.c). */
    if (strcmp(stage, "ir") != 0) {
        aj_diag d = { 0 };
        int failed = m->nfn == 0 || !aj_autodiff(m, m->fn[0]->name, &d);
        for (int i = 0; i < m->nfn && !failed && strcmp(stage, "opt") == 0; i++)
            failed = aj_simplify(m, m->fn[i], NULL, &d) != 0;
        if (failed) {
            if (!d.set)
                aj_error(&d, 0, 0, "%s has no fn to differentiate", o->files[0]);
            aj_diag_print(&d, stderr);
            aj_module_free(m);
            return EXIT_MODEL;
        }
    }
    aj_module_print(m, stdout);
    aj_module_free(m);
    return fflush(stdout) == 0 ? 0 : EXIT_MODEL;
}

/* ---------------------------------------------------------------- train, eval, sample, gradcheck */

static const command *find_command(const char *name);
static int usage_error(const command *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Flag values. A flag not given (NULL) takes its default; a given one must
 * parse whole and lie in range, else a usage hint names flag and value. */
enum { OPEN_LO = 1, OPEN_HI = 2 };   /* num_value: the bound itself is out */

static int bad_value(const char *cmd, const char *flag, const char *s, const char *want)
{
    return usage_error(find_command(cmd), "bad value '%s' for %s: expected %s", s, flag, want);
}

static int int_value(const char *cmd, const char *flag, const char *s, int64_t dflt, int64_t lo, int64_t hi,
                     int64_t *out)
{
    *out = dflt;
    if (!s)
        return 0;
    char *end, want[96];
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end != s && !*end && errno == 0 && v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    if (hi == INT64_MAX)
        snprintf(want, sizeof want, "an integer >= %" PRId64, lo);
    else
        snprintf(want, sizeof want, "an integer from %" PRId64 " to %" PRId64, lo, hi);
    return bad_value(cmd, flag, s, want);
}

static int num_value(const char *cmd, const char *flag, const char *s, double dflt, double lo, double hi,
                     int open, double *out)
{
    *out = dflt;
    if (!s)
        return 0;
    char *end, want[96];
    double v = strtod(s, &end);
    if (end != s && !*end && isfinite(v) && (open & OPEN_LO ? v > lo : v >= lo) &&
        (open & OPEN_HI ? v < hi : v <= hi)) {
        *out = v;
        return 0;
    }
    if (isinf(hi))
        snprintf(want, sizeof want, "a number %s %g", open & OPEN_LO ? ">" : ">=", lo);
    else
        snprintf(want, sizeof want, "a number in %c%g, %g%c", open & OPEN_LO ? '(' : '[', lo, hi,
                 open & OPEN_HI ? ')' : ']');
    return bad_value(cmd, flag, s, want);
}

/* words: NULL-terminated; the first is the default. */
static int word_value(const char *cmd, const char *flag, const char *s, const char *const *words, int *out)
{
    *out = 0;
    if (!s)
        return 0;
    char want[160] = "";
    for (int i = 0; words[i]; i++) {
        if (strcmp(s, words[i]) == 0) {
            *out = i;
            return 0;
        }
        size_t k = strlen(want);
        snprintf(want + k, sizeof want - k, "%s%s", i == 0 ? "" : words[i + 1] ? ", " : " or ", words[i]);
    }
    return bad_value(cmd, flag, s, want);
}

/* A usage hint when a flag the command needs is missing. */
static int require(const char *cmd, const char *value, const char *what)
{
    return value ? 0 : usage_error(find_command(cmd), "'%s' needs %s", cmd, what);
}

static int print_diag(aj_diag *d)
{
    aj_diag_print(d, stderr);
    return EXIT_MODEL;
}

/* The job the flags describe, every value checked (the flags a command does
 * not take are NULL here and get their defaults). */
static int job_options(const options *o, const char *cmd, aj_job *job)
{
    static const char *const opts[] = { "adam", "sgd", "rmsprop", NULL };
    static const aj_opt_kind opt_kinds[] = { AJ_OPT_ADAM, AJ_OPT_SGD, AJ_OPT_RMSPROP };
    static const char *const schedules[] = { "constant", "step", "cosine", NULL };   /* aj_schedule order */
    static const char *const splits[] = { "test", "valid", "train", NULL };
    memset(job, 0, sizeof *job);
    job->model = o->files[0];
    job->dims = o->dims;
    job->data = o->data;
    job->ckpt = o->ckpt;
    job->save = o->save;
    job->resume = o->resume;
    job->seed_given = o->seed != NULL;
    job->out = stdout;
    job->log = stderr;
    aj_optim *op = &job->opt;
    int64_t seed, threads;
    int opt, sched, split;
    if (int_value(cmd, "--seed", o->seed, 1, 0, INT64_MAX, &seed) ||
        int_value(cmd, "--batch", o->batch, 0, 1, 1 << 24, &job->batch) ||
        int_value(cmd, "--epochs", o->epochs, 10, 1, 1000000, &job->epochs) ||
        int_value(cmd, "--max-steps", o->max_steps, 0, 1, INT64_MAX, &job->max_steps) ||
        int_value(cmd, "--patience", o->patience, 0, 1, INT64_MAX, &job->patience) ||
        int_value(cmd, "--step-epochs", o->step_epochs, 1, 1, INT64_MAX, &job->step_epochs) ||
        int_value(cmd, "--threads", o->threads, 0, 1, 4096, &threads) ||
        word_value(cmd, "--opt", o->opt, opts, &opt) ||
        word_value(cmd, "--schedule", o->schedule, schedules, &sched) ||
        word_value(cmd, "--split", o->split, splits, &split) ||
        num_value(cmd, "--lr", o->lr, 1e-3, 0, HUGE_VAL, OPEN_LO, &job->lr) ||
        num_value(cmd, "--momentum", o->momentum, 0.9, 0, 1, OPEN_HI, &op->momentum) ||
        num_value(cmd, "--beta1", o->beta1, 0.9, 0, 1, OPEN_HI, &op->beta1) ||
        num_value(cmd, "--beta2", o->beta2, 0.999, 0, 1, OPEN_HI, &op->beta2) ||
        num_value(cmd, "--rho", o->rho, 0.9, 0, 1, OPEN_HI, &op->rho) ||
        num_value(cmd, "--eps", o->eps, 1e-8, 0, HUGE_VAL, OPEN_LO, &op->eps) ||
        num_value(cmd, "--weight-decay", o->weight_decay, 0, 0, HUGE_VAL, 0, &op->weight_decay) ||
        num_value(cmd, "--clip", o->clip, 0, 0, HUGE_VAL, 0, &op->clip) ||
        num_value(cmd, "--gamma", o->gamma, 0.1, 0, HUGE_VAL, OPEN_LO, &job->gamma))
        return EXIT_USAGE;
    job->seed = (uint64_t)seed;
    job->threads = (int)threads;
    op->kind = opt_kinds[opt];
    job->schedule = (aj_schedule)sched;
    job->split = splits[split];
    if (o->engine) {
        aj_diag d = {0};
        if (!(job->engine = aj_engine_find(o->engine, &d)))
            return usage_error(find_command(cmd), "%s", d.msg);
    }
    return 0;
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    static const char msg[] = "\narjit: interrupted: finishing this step, then saving (Ctrl-C again quits at once)\n";
    (void)sig;
    interrupted = 1;
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
        interrupted = 1;   /* nothing better to do in a handler */
}

static int run_train(const options *o)
{
    aj_job job;
    int rc = job_options(o, "train", &job);
    if (rc || (rc = require("train", o->data ? o->data : o->resume, "--data SPEC (or --resume CKPT)")))
        return rc;
    job.live = isatty(STDERR_FILENO);
    job.interrupt = &interrupted;
    /* one-shot: a second Ctrl-C kills at once, which the atomic saves survive */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    aj_train_result res;
    aj_diag d = {0};
    if (aj_train(&job, &res, &d) != 0)
        return print_diag(&d);
    if (res.interrupted) {
        if (job.save)
            fprintf(stderr, "%s: stopped at step %" PRId64 "; saved %s.last: continue with --resume %s.last\n", prog,
                    res.step, job.save, job.save);
        else
            fprintf(stderr, "%s: stopped at step %" PRId64 "; nothing saved (no --save)\n", prog, res.step);
        return 130;
    }
    printf("done: %" PRId64 " steps, %" PRId64 " epochs, best valid NLL %.4f", res.step, res.epoch, res.best_valid);
    if (job.save)
        printf("; checkpoints %s (best) and %s.last", job.save, job.save);
    printf("\n");
    return fflush(stdout) == 0 ? 0 : EXIT_MODEL;
}

static int run_eval(const options *o)
{
    aj_job job;
    int rc = job_options(o, "eval", &job);
    if (rc || (rc = require("eval", o->ckpt, "--ckpt CKPT")))
        return rc;
    aj_eval_result res;
    aj_diag d = {0};
    if (aj_eval(&job, &res, &d) != 0)
        return print_diag(&d);
    printf("%s NLL %.4f nats/example, %.5f bits/dim (%" PRId64 " examples of %" PRId64 " values, %s)\n",
           res.split, res.nll, res.bpd, res.n, res.d, res.data);
    return fflush(stdout) == 0 ? 0 : EXIT_MODEL;
}

/* Samples that are not images: one line of values each. */
static int print_samples(const aj_tensor *x, int64_t n, const char *path)
{
    FILE *f = path ? fopen(path, "w") : stdout;
    if (!f) {
        fprintf(stderr, "%s: error: cannot write: %s\n", path, strerror(errno));
        return EXIT_MODEL;
    }
    int64_t total = aj_tensor_numel(x), per = total % n == 0 ? total / n : total;
    for (int64_t i = 0; i < total; i++) {
        if (x->dtype == AJ_F32)
            fprintf(f, "%g", ((const float *)x->data)[i]);
        else
            fprintf(f, "%d", ((const int32_t *)x->data)[i]);
        fputc((i + 1) % per ? ' ' : '\n', f);
    }
    int bad = ferror(f) | (path ? fclose(f) : fflush(f));
    if (bad)
        fprintf(stderr, "%s: error: write failed\n", path ? path : "<stdout>");
    return bad ? EXIT_MODEL : 0;
}

static int run_sample(const options *o)
{
    aj_job job;
    int64_t n;
    int rc = job_options(o, "sample", &job);
    if (rc || (rc = require("sample", o->ckpt, "--ckpt CKPT")) ||
        (rc = int_value("sample", "-n", o->n, 64, 1, 1 << 20, &n)))
        return rc;
    aj_samples s;
    aj_diag d = {0};
    if (aj_sample(&job, n, &s, &d) != 0)
        return print_diag(&d);
    if (s.h) {
        const char *path = o->out ? o->out : "samples.png";
        rc = aj_png_grid(path, s.x.data, (int)n, s.h, s.w, 0, &d) ? print_diag(&d) : 0;
        if (!rc)
            printf("wrote %" PRId64 " samples of %dx%d to %s\n", n, s.h, s.w, path);
    } else {
        rc = print_samples(&s.x, n, o->out);
    }
    aj_tensor_free(&s.x);
    return rc;
}

static int run_gradcheck(const options *o)
{
    aj_job job;
    int64_t probes;
    double eps, tol;
    int rc = job_options(o, "gradcheck", &job);
    if (rc || int_value("gradcheck", "--probes", o->probes, 20, 1, 1 << 20, &probes) ||
        num_value("gradcheck", "--eps", o->eps, 1e-2, 0, HUGE_VAL, OPEN_LO, &eps) ||
        num_value("gradcheck", "--tol", o->tol, 1e-2, 0, HUGE_VAL, 0, &tol))
        return rc ? rc : EXIT_USAGE;
    const char *fn = o->fn ? o->fn : "loglik";
    aj_run r;
    aj_diag d = {0};
    aj_gradcheck_result *res = NULL;
    int n = 0, failed = 0;
    /* B = 2 unless --dims says otherwise: small, yet a real batch */
    if (aj_run_open(&r, job.model, NULL, NULL, job.dims, 2, NULL, &d) != 0 ||
        !(res = calloc((size_t)r.m->nparam + 1, sizeof *res)) ||
        aj_gradcheck(r.m, fn, job.seed, (int)probes, eps, res, &n, &d) != 0) {
        rc = d.set ? print_diag(&d) : (perror(prog), EXIT_MODEL);
        goto out;
    }
    printf("gradcheck %s fn %s (%s%sB=%" PRId64 "), eps %g, tol %g\n", job.model, fn, r.dims, r.dims[0] ? "," : "",
           r.bdim >= 0 ? r.bind.v[r.bdim] : 0, eps, tol);
    printf("  %-12s %12s %7s %14s\n", "param", "size", "probes", "worst rel err");
    for (int i = 0; i < n; i++) {
        int ok = res[i].max_rel_err <= tol;   /* NaN fails */
        failed += !ok;
        printf("  %-12s %12" PRId64 " %7d %14.3e  %s\n", res[i].name, res[i].numel, res[i].probes, res[i].max_rel_err,
               ok ? "PASS" : "FAIL");
    }
    if (n == 0)
        printf("fn %s uses no parameters: nothing to check\n", fn);
    else if (failed)
        printf("%d of %d parameters FAIL (tol %g)\n", failed, n, tol);
    else
        printf("all %d parameters pass\n", n);
    rc = failed ? EXIT_MODEL : 0;
out:
    free(res);
    if (r.m)
        aj_run_close(&r);
    return rc;
}

/* ---------------------------------------------------------------- the table */

static const flag check_flags[] = { FLAG_DIMS, FLAG_END };
static const flag dump_flags[] = {
    { "--stage", "STAGE", offsetof(options, stage), "what to print: ir (the parsed, verified graph), grad (with grad_<fn>: loss and gradients),\n"
      "                       opt (grad with every fn simplified: dead code, CSE, constants); default ir" },
    FLAG_DIMS,
    FLAG_END,
};

static const flag train_flags[] = {
    FLAG_DATA,
    { "--epochs", "N", offsetof(options, epochs), "train until N epochs are done (counting resumed ones); default 10" },
    FLAG_BATCH,
    { "--opt", "NAME", offsetof(options, opt), "optimizer: adam, sgd or rmsprop; default adam" },
    { "--lr", "X", offsetof(options, lr), "learning rate; default 1e-3" },
    { "--momentum", "X", offsetof(options, momentum), "sgd momentum (0: plain SGD); default 0.9" },
    { "--beta1", "X", offsetof(options, beta1), "adam: first-moment decay; default 0.9" },
    { "--beta2", "X", offsetof(options, beta2), "adam: second-moment decay; default 0.999" },
    { "--rho", "X", offsetof(options, rho), "rmsprop: squared-gradient decay; default 0.9" },
    { "--eps", "X", offsetof(options, eps), "adam, rmsprop: denominator epsilon; default 1e-8" },
    { "--weight-decay", "X", offsetof(options, weight_decay), "L2 for sgd, decoupled (AdamW) otherwise; default 0" },
    { "--clip", "X", offsetof(options, clip), "clip the global gradient norm to X (0: never); default 0" },
    { "--schedule", "NAME", offsetof(options, schedule), "learning rate: constant, step or cosine; default constant" },
    { "--step-epochs", "N", offsetof(options, step_epochs), "step schedule: multiply the rate by --gamma every N epochs; default 1" },
    { "--gamma", "X", offsetof(options, gamma), "step schedule factor; default 0.1" },
    FLAG_SEED("parameter init and batch order; default 1"),
    { "--save", "CKPT", offsetof(options, save), "write CKPT (best valid NLL) and CKPT.last (latest) each epoch" },
    { "--resume", "CKPT", offsetof(options, resume), "continue a run from CKPT (usually CKPT.last)" },
    { "--max-steps", "N", offsetof(options, max_steps), "stop once N steps are done in all (quick runs)" },
    { "--patience", "N", offsetof(options, patience), "stop after N epochs without a better valid NLL" },
    { "--threads", "N", offsetof(options, threads), "OpenMP threads for engines that use them" },
    FLAG_ENGINE,
    FLAG_DIMS,
    FLAG_END,
};
static const flag eval_flags[] = {
    FLAG_CKPT,
    { "--data", "SPEC", offsetof(options, data), "dataset; default the one the checkpoint was trained on" },
    { "--split", "NAME", offsetof(options, split), "test, valid or train; default test" },
    FLAG_BATCH,
    FLAG_ENGINE,
    FLAG_DIMS,
    FLAG_END,
};
static const flag sample_flags[] = {
    FLAG_CKPT,
    { "-n", "N", offsetof(options, n), "how many samples (the batch dim B); default 64" },
    { "--out", "FILE", offsetof(options, out), "image models: the PNG grid (default samples.png); else a text file (default stdout)" },
    FLAG_SEED("the sampling draws; default 1"),
    FLAG_ENGINE,
    FLAG_DIMS,
    FLAG_END,
};
static const flag gradcheck_flags[] = {
    FLAG_DIMS,
    { "--fn", "NAME", offsetof(options, fn), "the fn to differentiate; default loglik" },
    FLAG_SEED("random parameters, inputs and probes; default 1"),
    { "--probes", "N", offsetof(options, probes), "entries checked per parameter (all when it has fewer); default 20" },
    { "--eps", "X", offsetof(options, eps), "finite-difference step; default 1e-2" },
    { "--tol", "X", offsetof(options, tol), "largest relative error that passes; default 1e-2" },
    FLAG_END,
};

static const command commands[] = {
    { "check", "parse and verify graph files, then summarise each model",
      "FILE", 1, MAX_FILES, check_flags,
      "Prints each model's dims, parameters (shapes and scalar counts), and\n"
      "each fn's signature, the parameters it uses and the ops it uses\n"
      "(counting those inside recurrence bodies).",
      run_check },
    { "dump", "print a model at a compiler stage as text",
      "FILE", 1, 1, dump_flags,
      "The text is canonical graph-file syntax: it parses back to the same model.",
      run_dump },
    { "train", "train a model by maximum likelihood on a dataset",
      "FILE", 1, 1, train_flags,
      "Minimises the mean NLL (-log p(x), fn loglik) with the compiled train_step:\n"
      "shuffled, seeded batches; after each epoch the NLL of the whole valid split.\n"
      "B is the batch size. Progress goes to stderr, one line per epoch to stdout.\n"
      "--save CKPT keeps the best epoch by valid NLL in CKPT and the latest state\n"
      "in CKPT.last; --resume CKPT.last continues bit-identically to a run never\n"
      "stopped (same flags). Ctrl-C finishes the step, saves CKPT.last, exits 130.\n"
      "Exit status: 0 done, 1 an error (printed), 2 bad command line.",
      run_train },
    { "eval", "average NLL of a dataset split under a checkpoint",
      "FILE", 1, 1, eval_flags,
      "Prints the NLL in nats per example and in bits per dimension (NLL / (d ln 2)).\n"
      "The model is bound to the dims the checkpoint records (--dims overrides).",
      run_eval },
    { "sample", "draw samples from a model's fn sample under a checkpoint",
      "FILE", 1, 1, sample_flags,
      "Models trained on images (mnist*) give a PNG grid; others print one line of\n"
      "values per sample.",
      run_sample },
    { "gradcheck", "check autodiff gradients against finite differences",
      "FILE", 1, 1, gradcheck_flags,
      "Draws parameters from N(0, 0.5^2) and 0/1 inputs, binds B=2 unless --dims\n"
      "binds it, and compares each parameter's gradient with central differences\n"
      "of the loss. Prints one line per parameter; exit status 1 if any fails.",
      run_gradcheck },
};
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]))

static const command *find_command(const char *name)
{
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return &commands[0];   /* unreachable: callers pass their own name */
}

/* ---------------------------------------------------------------- help */

static void print_usage(FILE *f)
{
    fprintf(f, "usage: %s COMMAND [ARGS] [FLAGS]\n\n"
               "arjit compiles autoregressive generative models written as graph files.\n\n"
               "commands:\n", prog);
    for (int i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nA FILE of '-' reads standard input.\n"
               "Run '%s COMMAND --help' for the flags of a command.\n", prog);
}

static void print_command_help(const command *c, FILE *f)
{
    fprintf(f, "usage: %s %s %s%s [FLAGS]\n\n%c%s.\n\n", prog, c->name, c->operand,
            c->max_files > 1 ? "..." : "", toupper((unsigned char)c->summary[0]), c->summary + 1);
    fprintf(f, "flags:\n");
    for (const flag *fl = c->flags; fl->name; fl++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", fl->name, fl->metavar ? " " : "",
                 fl->metavar ? fl->metavar : "");
        fprintf(f, "  %-20s %s\n", left, fl->help);
    }
    fprintf(f, "  %-20s %s\n", "-h, --help", "show this help");
    fprintf(f, "\n%s may be '-' to read standard input.\n", c->operand);
    if (c->details)
        fprintf(f, "\n%s\n", c->details);
}

/* ---------------------------------------------------------------- parsing */

/* Print "arjit: <message>; see 'arjit CMD --help'" and return EXIT_USAGE. */
static int usage_error(const command *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "; see '%s %s --help'\n", prog, c->name);
    va_end(ap);
    return EXIT_USAGE;
}

/* Parse argv (after the command name) into o. Accepts `--flag value` and
 * `--flag=value`; `--` ends the flags. Returns 0, -1 when help was shown,
 * or EXIT_USAGE after printing a hint. */
static int parse_args(const command *c, int argc, char **argv, options *o)
{
    int flags_done = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (flags_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (o->nfiles == c->max_files)
                return usage_error(c, "unexpected argument '%s' for '%s'", arg, c->name);
            o->files[o->nfiles++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            flags_done = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_command_help(c, stdout);
            return -1;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const flag *fl = c->flags;
        while (fl->name && !(strlen(fl->name) == len && strncmp(fl->name, arg, len) == 0))
            fl++;
        if (!fl->name) {
            return usage_error(c, "unknown flag '%.*s' for '%s'", (int)len, arg, c->name);
        }
        const char *value = "1";
        if (fl->metavar && eq) {
            value = eq + 1;
        } else if (fl->metavar) {
            if (i + 1 == argc)
                return usage_error(c, "flag '%s' of '%s' needs a value", fl->name, c->name);
            value = argv[++i];
        } else if (eq) {
            return usage_error(c, "flag '%s' of '%s' takes no value", fl->name, c->name);
        }
        *(const char **)((char *)o + fl->offset) = value;
    }
    if (o->nfiles < c->min_files)
        return usage_error(c, "'%s' needs a %s", c->name, c->operand);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        print_usage(stdout);
        return 0;
    }
    for (int i = 0; i < NCOMMANDS; i++) {
        if (strcmp(name, commands[i].name) != 0)
            continue;
        options o = {0};
        int rc = parse_args(&commands[i], argc - 2, argv + 2, &o);
        if (rc != 0)
            return rc < 0 ? 0 : rc;
        return commands[i].run(&o);
    }
    if (name[0] == '-')
        fprintf(stderr, "%s: unknown flag '%s'; see '%s --help'\n", prog, name, prog);
    else
        fprintf(stderr, "%s: unknown command '%s'; see '%s --help'\n", prog, name, prog);
    return EXIT_USAGE;
}
