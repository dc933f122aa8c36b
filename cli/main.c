/* arjit: the command-line driver.
 *
 *   arjit check FILE... [--dims D=8,H=5]     parse, verify, summarise
 *   arjit dump FILE [--stage ir] [--dims ..]  print a stage as text
 *   arjit bench FILE [--dims ..] [..]        time compiling and running the train step
 *   arjit train FILE --data SPEC [..]        maximum likelihood, checkpoints
 *   arjit eval FILE --ckpt CKPT [..]         NLL of a dataset split
 *   arjit sample FILE --ckpt CKPT [..]       draw from fn sample
 *   arjit gradcheck FILE [..]                autodiff against finite differences
 *   arjit data fetch NAME|all [--dir DIR]    download datasets, sha256-checked
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
#include <malloc.h>
#include <stddef.h>
#include <stdarg.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <time.h>
#include <strings.h>
#include <unistd.h>

#include "arjit.h"
#include "arjit_compile.h"
#include "arjit_jit.h"
#include "arjit_train.h"
#include "../compiler/simplify.h"
#include "../runtime/fileio.h"

#define EXIT_MODEL 1
#define EXIT_USAGE 2
#define MAX_FILES 256
#define DEFAULT_BATCH 100   /* B when the model leaves it free: train's default */

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
    const char *epochs, *batch, *max_steps, *patience, *valid_examples, *seed, *threads, *n, *probes;
    const char *opt, *lr, *momentum, *beta1, *beta2, *eps, *rho, *weight_decay, *clip;
    const char *schedule, *step_epochs, *gamma, *tol;
    /* bench; check_nan also train, eval, sample */
    const char *steps, *json, *profile, *check_nan, *sample;
    const char *dir;     /* data fetch */
    const char *order;   /* check --order */
    /* sample, with the sampler derived from fn loglik */
    const char *prompt, *length, *temperature, *top_k, *naive_sampling;
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
    "dataset: mnist-bin, mnist, mnist-gray, shakespeare, text:FILE or\n" \
    "                       csv:FILE[,drop=COL] (docs/datasets.md)" }
#define FLAG_CKPT { "--ckpt", "CKPT", offsetof(options, ckpt), "the checkpoint to read (written by train --save)" }
#define FLAG_BATCH { "--batch", "N", offsetof(options, batch), \
    "examples per batch, the model's dim B; default the checkpoint's, else 100" }
#define FLAG_ENGINE { "--engine", "NAME", offsetof(options, engine), \
    "what runs the graphs: fused or naive (LLVM JIT), or interp (the reference); default fused" }
#define FLAG_CHECK_NAN { "--check-nan", NULL, offsetof(options, check_nan), \
    "stop at the first kernel that writes NaN or Inf, naming it and its graph line" }
#define FLAG_THREADS { "--threads", "N", offsetof(options, threads), "OpenMP threads for engines that use them" }
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

static const command *find_command(const char *name);
static int usage_error(const command *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int print_diag(aj_diag *d)
{
    aj_diag_print(d, stderr);
    return EXIT_MODEL;
}

/* The same for errors of the compiler and runtime, which may not know the
 * file: the model being run is the one at fault. */
static int print_diag_in(aj_diag *d, const char *path)
{
    if (!d->file[0])
        snprintf(d->file, sizeof d->file, "%s", path);
    /* a runtime error at a graph line (a NaN, a bad index) shows the line */
    char *src = NULL;
    size_t len;
    aj_diag ignored = {0};
    if (d->line > 0 && !d->text[0] && strcmp(d->file, path) == 0 && aj_read_file(path, 1 << 26, &src, &len, &ignored) == 0)
        aj_diag_source(d, d->file, src, len);
    free(src);
    return print_diag(d);
}

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

/* The train flag a recipe setting stands for: KEY -> --KEY, '-' for '_'. */
static void setting_flag(const aj_setting *st, char *buf, size_t n)
{
    snprintf(buf, n, "--%s", st->key);
    for (char *p = buf; *p; p++)
        *p = *p == '_' ? '-' : *p;
}

static int recipe_valid(const aj_module *m, const char *path);

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
                unbound |= aj_dim_syms(t.dim[a]);
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

    /* the recipe, as the flags `arjit train` takes from it */
    if (m->recipe_line) {
        printf("  recipe (train's defaults):");
        for (int i = 0; i < m->nrecipe; i++) {
            setting_flag(&m->recipe[i], buf, sizeof buf);
            printf(" %s %s", buf, m->recipe[i].value);
        }
        printf("%s\n", m->nrecipe ? "" : " (empty)");
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

static int int_value(const char *cmd, const char *flag, const char *s, int64_t dflt, int64_t lo, int64_t hi,
                     int64_t *out);

/* arjit check --order: the order check of runtime/order.c on one file. */
static int check_order(const options *o, const char *path, int64_t seed)
{
    aj_order_info info;
    aj_diag d = {0};
    if (aj_order_check(path, o->dims, (uint64_t)seed, &info, &d))
        return print_diag_in(&d, path);
    printf("  order: ok: each of the %" PRId64 " conditionals depends only on the variables before it (%d random "
           "inputs, %" PRId64 " values of each variable, exact comparisons on the interpreter%s)\n", info.nvar,
           info.ninput, info.nvalue, info.exact ? "" : info.self ? "; on itself: its probabilities sum to 1" :
           "; its dependence on itself not checked: not a Bernoulli or categorical likelihood");
    if (!info.natural) {
        printf("  order: \"before\" in the order the model draws, not x_0 .. x_%" PRId64 ":", info.nvar - 1);
        for (int k = 0; k < 8 && k < info.nvar; k++)
            printf(" x_%" PRId64 "%s", info.start[k], k == 7 || k == info.nvar - 1 ? "" : ",");
        printf("%s\n", info.nvar > 8 ? ", ..." : "");
    }
    return 0;
}

static int run_check(const options *o)
{
    int status = 0;
    int64_t seed;
    if (int_value("check", "--seed", o->seed, 1, 0, INT64_MAX, &seed))
        return EXIT_USAGE;
    for (int i = 0; i < o->nfiles; i++) {
        aj_bind b;
        aj_module *m = load(o->files[i], o->dims, &b);
        if (!m) {
            status = EXIT_MODEL;   /* keep going: report every broken file */
            continue;
        }
        if (i > 0)
            printf("\n");
        if (recipe_valid(m, o->files[i]) == 0)
            summarise(m, &b, o->files[i]);
        else
            status = EXIT_MODEL;
        aj_module_free(m);
        if (o->order && check_order(o, o->files[i], seed))
            status = EXIT_MODEL;
    }
    return status;
}

/* ---------------------------------------------------------------- train, eval, sample, gradcheck */

/* Flag values. A flag not given (NULL) takes its default; a given one must
 * parse whole and lie in range, else a usage hint names flag and value. */
enum { OPEN_LO = 1, OPEN_HI = 2 };   /* num_value: the bound itself is out */

/* The model whose recipe filled the flags not given (apply_recipe): a bad
 * value from it is the model's error, at its line; NULL when none did. */
static const aj_module *recipe_of;
static int bad_status;   /* what the last bad_value returned */

static int bad_value(const char *cmd, const char *flag, const char *s, const char *want)
{
    for (int i = 0; recipe_of && i < recipe_of->nrecipe; i++) {
        const aj_setting *st = &recipe_of->recipe[i];
        if (st->value != s)
            continue;
        aj_diag d = {0};
        snprintf(d.file, sizeof d.file, "%s", recipe_of->path);
        aj_error(&d, st->line, st->col, "recipe: bad value '%s' for %s: expected %s", s, st->key, want);
        aj_diag_source(&d, recipe_of->path, recipe_of->src, recipe_of->srclen);
        return bad_status = print_diag(&d);
    }
    return bad_status = usage_error(find_command(cmd), "bad value '%s' for %s: expected %s", s, flag, want);
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
    job->fn = o->fn;
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
        int_value(cmd, "--valid-examples", o->valid_examples, 0, 1, INT64_MAX, &job->valid_examples) ||
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
        return bad_status;
    job->seed = (uint64_t)seed;
    job->threads = (int)threads;
    op->kind = opt_kinds[opt];
    job->schedule = (aj_schedule)sched;
    job->split = splits[split];
    aj_diag d = {0};   /* the fused JIT engine unless --engine says otherwise */
    if (!(job->engine = aj_engine_find(o->engine ? o->engine : "fused", &d)))
        return usage_error(find_command(cmd), "%s", d.msg);
    return 0;
}

/* A usage error, before any work, when flag's file path+suffix (written
 * atomically: a new file renamed over it) exists and is no regular file. */
static int replaceable(const char *cmd, const char *flag, const char *path, const char *suffix)
{
    char full[1100];
    aj_diag d = {0};
    if (!path)
        return 0;
    snprintf(full, sizeof full, "%s%s", path, suffix);
    return aj_afile_check(full, &d) ? usage_error(find_command(cmd), "%s: %s: %s", flag, full, d.msg) : 0;
}

/* --check-nan: the compiled engines check what every kernel writes. The
 * interpreter has no such hook; say so rather than seem to check. */
static void set_nan_check(const options *o, const aj_job *job)
{
    if (!o->check_nan)
        return;
    aj_engine_set_options(&(aj_compile_opts){ .nan_check = 1 });
    if (!job->engine || job->engine == aj_interp_run)
        fprintf(stderr, "%s: note: --check-nan checks the kernels of --engine naive and fused; "
                        "the interpreter runs unchecked\n", prog);
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

/* The flags of `train` that o leaves unset, from the model's recipe: its
 * setting KEY is the flag --KEY ('_' written for '-'). Sets recipe_of. */
static int apply_recipe(const aj_module *m, options *o)
{
    const command *c = find_command("train");
    recipe_of = m;
    for (int i = 0; i < m->nrecipe; i++) {
        char name[80];
        setting_flag(&m->recipe[i], name, sizeof name);
        const flag *f = c->flags;
        while (f->name && strcmp(f->name, name))
            f++;
        if (!f->name) {   /* the parser's keys and train's flags disagree */
            fprintf(stderr, "%s: %s:%d: error: recipe setting '%s' is no flag of train\n", prog, m->path,
                    m->recipe[i].line, m->recipe[i].key);
            return EXIT_MODEL;
        }
        const char **field = (const char **)((char *)o + f->offset);
        /* a resumed run keeps the checkpoint's data and batch size */
        int kept = o->resume && (f->offset == offsetof(options, data) || f->offset == offsetof(options, batch));
        if (!*field && !kept)
            *field = m->recipe[i].value;
    }
    return 0;
}

/* The train flags the recipe of model `path` fills in (a model read from
 * standard input is read once, by train: its recipe is not applied). */
static int recipe_options(const char *path, options *o, aj_module **m)
{
    *m = NULL;
    if (strcmp(path, "-") == 0)
        return 0;
    aj_diag d = {0};
    if (!(*m = aj_parse_file(path, &d)))
        return print_diag(&d);
    return apply_recipe(*m, o);
}

static int train(const options *o)
{
    aj_job job;
    int rc = job_options(o, "train", &job);
    if (rc || (rc = require("train", o->data ? o->data : o->resume, "--data SPEC (or --resume CKPT)")) ||
        (rc = replaceable("train", "--save", o->save, "")) || (rc = replaceable("train", "--save", o->save, ".last")))
        return rc;
    set_nan_check(o, &job);
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
        return print_diag_in(&d, job.model);
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

/* check: the recipe's values are ones train takes (0, or the exit status
 * after the error naming the setting's line). */
static int recipe_valid(const aj_module *m, const char *path)
{
    options o = { .files = { path }, .nfiles = 1 };
    aj_job job;
    int rc = apply_recipe(m, &o);
    if (!rc)
        rc = job_options(&o, "train", &job);
    recipe_of = NULL;
    return rc;
}

/* train with the flags given, then the model's recipe, then the defaults */
static int run_train(const options *given)
{
    options o = *given;
    aj_module *rm;
    int rc = recipe_options(given->files[0], &o, &rm);
    if (!rc)
        rc = train(&o);
    recipe_of = NULL;
    aj_module_free(rm);
    return rc;
}

static int run_data(const options *o)
{
    if (strcmp(o->files[0], "fetch"))
        return usage_error(find_command("data"), "unknown action '%s': expected 'fetch NAME'", o->files[0]);
    aj_diag d = {0};
    int rc = aj_data_fetch(o->files[1], o->dir ? o->dir : "data", stderr, &d);
    return rc == -2 ? usage_error(find_command("data"), "%s", d.msg) : rc ? print_diag(&d) : 0;
}

static int run_eval(const options *o)
{
    aj_job job;
    int rc = job_options(o, "eval", &job);
    if (rc || (rc = require("eval", o->ckpt, "--ckpt CKPT")))
        return rc;
    set_nan_check(o, &job);
    aj_eval_result res;
    aj_diag d = {0};
    if (aj_eval(&job, &res, &d) != 0)
        return print_diag_in(&d, job.model);
    int t = res.text;   /* text: per character, over windows of d characters */
    printf("%s NLL %.4f nats/%s, %.5f bits/%s (%" PRId64 " %s of %" PRId64 " %s, %s%s%s)\n", res.split,
           t ? res.nll / (double)res.d : res.nll, t ? "char" : "example", res.bpd, t ? "char" : "dim", res.n,
           t ? "windows" : "examples", res.d, t ? "characters" : "values", res.data, o->fn ? ", fn " : "",
           o->fn ? o->fn : "");
    if (!isnan(res.accuracy))
        printf("%s exact match %.2f%% (fn predict, greedy)\n", res.split, 100 * res.accuracy);
    return fflush(stdout) == 0 ? 0 : EXIT_MODEL;
}

/* Samples as text: one line of values each, to path (atomically) or stdout. */
static int print_samples(const aj_tensor *x, int64_t n, const char *path)
{
    aj_afile af;
    aj_diag d = {0};
    FILE *f = path ? aj_afile_open(&af, path, &d) : stdout;
    if (!f)
        return print_diag(&d);
    int64_t total = aj_tensor_numel(x), per = total % n == 0 ? total / n : total;
    for (int64_t i = 0; i < total; i++) {
        if (x->dtype == AJ_F32)
            fprintf(f, "%g", ((const float *)x->data)[i]);
        else
            fprintf(f, "%d", ((const int32_t *)x->data)[i]);
        fputc((i + 1) % per ? ' ' : '\n', f);
    }
    if (path)
        return aj_afile_commit(&af, &d) ? print_diag(&d) : 0;
    if (ferror(f) | fflush(f)) {
        fprintf(stderr, "<stdout>: error: write failed\n");
        return EXIT_MODEL;
    }
    return 0;
}

/* The first n samples (rows of s->x) of a graphs: family (docs/datasets.md)
 * decoded into *g; an error (printed) when a sample is not (N-1)*M values. */
static int decode_graphs(const aj_samples *s, int64_t n, aj_edges **g)
{
    int64_t nmax, m, per = s->x.rank ? aj_tensor_numel(&s->x) / s->x.shape[0] : 0;
    aj_graphs_shape(s->data, &nmax, &m);
    if (s->x.dtype != AJ_F32 || per != (nmax - 1) * m) {
        fprintf(stderr, "%s: error: fn sample gives %" PRId64 " values a sample, not the (N-1)*M = %" PRId64
                " adjacency values of %s\n", prog, per, (nmax - 1) * m, s->data);
        return EXIT_MODEL;
    }
    *g = calloc((size_t)n, sizeof **g);
    for (int64_t i = 0; *g && i < n; i++)
        if (aj_graph_decode((const float *)s->x.data + i * per, nmax, m, &(*g)[i])) {
            for (int64_t j = 0; j <= i; j++)
                aj_graph_edges_free(&(*g)[j]);
            free(*g), *g = NULL;
        }
    if (!*g)
        perror(prog);
    return *g ? 0 : EXIT_MODEL;
}

static void free_graphs(aj_edges *g, int64_t n)
{
    for (int64_t i = 0; g && i < n; i++)
        aj_graph_edges_free(&g[i]);
    free(g);
}

/* Graph samples as edge lists: "graph I: N nodes, E edges", then "U V" a line. */
static int print_graphs(const aj_samples *s, int64_t n, const char *path)
{
    aj_edges *g;
    int rc = decode_graphs(s, n, &g);
    if (rc)
        return rc;
    aj_afile af;
    aj_diag d = {0};
    FILE *f = path ? aj_afile_open(&af, path, &d) : stdout;
    if (!f)
        rc = print_diag(&d);
    for (int64_t i = 0; f && i < n; i++) {
        fprintf(f, "graph %" PRId64 ": %d nodes, %d edges\n", i, g[i].n, g[i].nedge);
        for (int e = 0; e < g[i].nedge; e++)
            fprintf(f, "%d %d\n", g[i].edge[e][0], g[i].edge[e][1]);
    }
    free_graphs(g, n);
    if (f && path)
        rc = aj_afile_commit(&af, &d) ? print_diag(&d) : 0;
    else if (f && (ferror(f) | fflush(f))) {
        fprintf(stderr, "<stdout>: error: write failed\n");
        rc = EXIT_MODEL;
    }
    return rc;
}

/* A name ending in .png (any case) asks for the PNG grid. */
static int names_png(const char *path)
{
    size_t n = strlen(path);
    return n >= 4 && strcasecmp(path + n - 4, ".png") == 0;
}

/* Row i of token tensor t as the vocabulary's bytes ('?' outside it). */
static void put_tokens(FILE *f, const aj_samples *s, const aj_tensor *t, int64_t i)
{
    const int32_t *x = (const int32_t *)t->data + i * t->shape[1];
    for (int64_t j = 0; j < t->shape[1]; j++)
        fputc(x[j] >= 0 && x[j] < s->nvocab ? s->vocab[x[j]] : '?', f);
}

static int run_sample(const options *o)
{
    aj_job job;
    int64_t n;
    int rc = job_options(o, "sample", &job);
    if (rc || (rc = require("sample", o->ckpt, "--ckpt CKPT")) ||
        (rc = int_value("sample", "-n", o->n, 64, 1, 1 << 20, &n)) || (rc = replaceable("sample", "--out", o->out, "")))
        return rc;
    set_nan_check(o, &job);
    int64_t length, top_k;
    if (int_value("sample", "--length", o->length, 0, 1, 1 << 24, &length) ||
        int_value("sample", "--top-k", o->top_k, 0, 1, 1 << 24, &top_k) ||
        num_value("sample", "--temperature", o->temperature, 1, 0, HUGE_VAL, OPEN_LO, &job.anc.temperature))
        return EXIT_USAGE;
    job.anc.length = length, job.anc.top_k = (int)top_k, job.anc.full = o->naive_sampling != NULL;
    job.anc_given = o->length || o->top_k || o->temperature || o->naive_sampling;
    job.prompt = o->prompt;
    job.text = o->out ? NULL : stdout;
    aj_samples s;
    aj_diag d = {0};
    if (aj_sample(&job, n, &s, &d) != 0)
        return print_diag_in(&d, job.model);
    if (s.nvocab && s.x.dtype == AJ_I32) {
        /* text: n = 1 was streamed as drawn (unless fn sample had a
         * source); more, one line each, "source -> sample" with a source */
        FILE *f = o->out ? fopen(o->out, "w") : stdout;
        int streamed = n == 1 && !o->out && !s.src.data;
        for (int64_t i = 0; f && i < n; i++) {
            if (s.src.data) put_tokens(f, &s, &s.src, i), fputs(" -> ", f);
            if (!streamed) put_tokens(f, &s, &s.x, i);
            fputc('\n', f);
        }
        rc = f && (o->out ? fclose(f) : fflush(f)) == 0 ? 0 : (perror(o->out ? o->out : prog), EXIT_MODEL);
        aj_tensor_free(&s.x), aj_tensor_free(&s.src);
        return rc;
    }
    /* the format: a PNG grid for --out *.png, and without --out for image
     * data; else text. Never text in a .png, nor a silent fallback. */
    int png = o->out ? names_png(o->out) : s.image_data;
    const char *path = o->out ? o->out : "samples.png";
    if (png && !s.h) {
        fprintf(stderr, "%s: error: cannot draw the samples as an image (%s): %s; for the values as text, give --out "
                "a name not ending in .png\n", prog, path, s.why);
        rc = EXIT_MODEL;
    } else if (png) {
        rc = aj_png_grid(path, s.x.data, (int)n, s.h, s.w, 0, &d) ? print_diag(&d) : 0;
        if (!rc)
            printf("wrote %" PRId64 " samples of %dx%d to %s\n", n, s.h, s.w, path);
    } else {
        int64_t nmax, m;
        rc = aj_graphs_shape(s.data, &nmax, &m) == 0 ? print_graphs(&s, n, o->out) : print_samples(&s.x, n, o->out);
    }
    aj_tensor_free(&s.x), aj_tensor_free(&s.src);
    return rc;
}

/* The graphs of examples [0, n) of a split of a graphs: family. */
static int data_graphs(const char *spec, const char *split, int64_t *n, aj_edges **g)
{
    aj_dataset ds;
    aj_diag d = {0};
    if (aj_dataset_load(spec, split, &ds, &d))
        return print_diag(&d);
    aj_samples s = { .x = { .dtype = AJ_F32, .rank = 2, .shape = { ds.n, ds.d }, .data = ds.x } };
    snprintf(s.data, sizeof s.data, "%s", spec);
    *n = *n < ds.n ? *n : ds.n;
    int rc = decode_graphs(&s, *n, g);
    aj_dataset_free(&ds);
    return rc;
}

static void graph_sizes(const char *what, const aj_edges *g, int64_t n)
{
    double nodes = 0, edges = 0;
    for (int64_t i = 0; i < n; i++)
        nodes += g[i].n, edges += g[i].nedge;
    printf("  %-22s %5" PRId64 " graphs, %6.2f nodes, %6.2f edges on average\n", what, n, nodes / n, edges / n);
}

/* graphstats: the MMD of sampled graphs' degree and clustering statistics
 * to the family's test split (You et al. 2018), beside the MMD of the
 * family's train split to the same test graphs, the level a perfect
 * model reaches with as many graphs. */
static int run_graphstats(const options *o)
{
    aj_job job;
    int64_t n;
    int rc = job_options(o, "graphstats", &job);
    if (rc || (rc = require("graphstats", o->ckpt, "--ckpt CKPT")) ||
        (rc = int_value("graphstats", "-n", o->n, 100, 1, 1 << 16, &n)))
        return rc;
    aj_samples s;
    aj_diag d = {0};
    if (aj_sample(&job, n, &s, &d) != 0)
        return print_diag_in(&d, job.model);
    int64_t nmax, m, ntest = INT64_MAX, ntrain = n;
    aj_edges *gs = NULL, *gtest = NULL, *gtrain = NULL;
    if (aj_graphs_shape(s.data, &nmax, &m)) {
        fprintf(stderr, "%s: error: %s was trained on '%s', not a graphs: family\n", prog, o->ckpt, s.data);
        rc = EXIT_MODEL;
    }
    if (!rc && !(rc = decode_graphs(&s, n, &gs)) && !(rc = data_graphs(s.data, job.split, &ntest, &gtest)) &&
        !(rc = data_graphs(s.data, "train", &ntrain, &gtrain))) {
        printf("graphstats: %s, samples of %s against its %s split\n", job.model, s.data, job.split);
        graph_sizes("samples", gs, n);
        graph_sizes(job.split, gtest, ntest);
        graph_sizes("train", gtrain, ntrain);
        printf("  %-22s %12s %12s\n", "MMD^2 to the test set", "samples", "train split");
        static const char *const stat[] = { "degree", "clustering" };
        for (int k = 0; k < 2; k++)
            printf("  %-22s %12.6f %12.6f\n", stat[k], aj_graphs_mmd(gs, (int)n, gtest, (int)ntest, k),
                   aj_graphs_mmd(gtrain, (int)ntrain, gtest, (int)ntest, k));
    }
    free_graphs(gs, n), free_graphs(gtest, ntest), free_graphs(gtrain, ntrain);
    aj_tensor_free(&s.x);
    return rc;
}

static int run_gradcheck(const options *o)
{
    aj_job job;
    int64_t probes;
    double eps, tol;
    int rc = job_options(o, "gradcheck", &job);
    if (rc || int_value("gradcheck", "--probes", o->probes, 6, 1, 1 << 20, &probes) ||
        num_value("gradcheck", "--eps", o->eps, 1e-3, 0, HUGE_VAL, OPEN_LO, &eps) ||
        num_value("gradcheck", "--tol", o->tol, 1e-3, 0, HUGE_VAL, 0, &tol))
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
        rc = d.set ? print_diag_in(&d, job.model) : (perror(prog), EXIT_MODEL);
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
    if (failed)
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

/* ---------------------------------------------------------------- compiled programs (dump, bench) */

/* The sampler derived from fn loglik (fn `name`: sample_step or
 * sample_init), saying on stderr whether it is incremental and if not why. */
static const aj_graph *derive_sampler(aj_module *m, const char *name, aj_diag *d)
{
    aj_step_info info;
    if (aj_sample_step(m, 0, &info, d))
        return NULL;
    if (info.incremental)
        fprintf(stderr, "%s: sample_step is incremental: one position per step, %d state tensor%s%s\n", prog,
                info.nstate, info.nstate == 1 ? "" : "s", info.two_phase ? ", run again once x_pos is drawn" : "");
    else
        fprintf(stderr, "%s: sample_step is the full form (the whole graph each step): %s:%s\n", prog, m->path, info.why);
    const aj_graph *g = aj_module_fn(m, name);
    if (!g)
        aj_error(d, 0, 0, "the derived sampler has no state, so no fn sample_init");
    return g;
}

/* Open FILE as train does (B = batch unless --dims binds it; every other
 * dim must be bound) and pick the fn to compile: the training step of fn
 * loglik under optimizer opt when name is NULL, else fn `name`, building
 * grad_<fn> by autodiff when that is what is asked for. Returns the fn, or
 * NULL with the diagnostic printed and r closed. */
static const aj_graph *open_fn(aj_run *r, const char *path, const char *dims, int64_t batch, const char *name,
                               const aj_optim *opt)
{
    aj_diag d = {0};
    const aj_graph *g = NULL;
    if (aj_run_open(r, path, NULL, NULL, dims, batch, NULL, &d) == 0) {
        if (!name || strcmp(name, "train_step") == 0)
            g = aj_train_step(r->m, "loglik", opt, &d);
        else if (!(g = aj_module_fn(r->m, name)) && strncmp(name, "grad_", 5) == 0)
            g = aj_autodiff(r->m, name + 5, &d);
        else if (!g && (strcmp(name, "sample_step") == 0 || strcmp(name, "sample_init") == 0))
            g = derive_sampler(r->m, name, &d);
        else if (!g)
            aj_error(&d, 0, 0, "the model has no fn '%s'", name);
    }
    if (!g) {
        print_diag_in(&d, r->m ? r->m->path : path);
        if (r->m)
            aj_run_close(r);
    }
    return g;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---------------------------------------------------------------- dump */

/* The first three print graph text; the rest compile a program. */
static const char *const stages[] = { "ir", "grad", "opt", "naive", "fused", "llvm", "asm", NULL };
enum { FIRST_PROGRAM_STAGE = 3 };

/* --stage naive|fused: the program's kernels with their graph lines and
 * buffers; llvm|asm: the optimised LLVM IR or the machine code of the
 * engine --engine names (default fused), exactly what would run. */
static int dump_program(const options *o, const char *stage)
{
    static const char *const engines[] = { "fused", "naive", NULL };
    int listing = strcmp(stage, "naive") == 0 || strcmp(stage, "fused") == 0, naive;
    if (word_value("dump", "--engine", o->engine, engines, &naive))
        return EXIT_USAGE;
    if (listing && o->engine)
        return usage_error(find_command("dump"), "--engine goes with --stage llvm or asm; --stage %s names the engine",
                           stage);
    aj_job job;
    options defaults = {0};
    job_options(&defaults, "dump", &job);   /* train's optimizer: Adam with its defaults */
    aj_run r;
    const aj_graph *g = open_fn(&r, o->files[0], o->dims, DEFAULT_BATCH, o->fn, &job.opt);
    if (!g)
        return EXIT_MODEL;
    aj_compile_opts co = {
        .fused = listing ? strcmp(stage, "fused") == 0 : !naive,
        .dump_llvm = strcmp(stage, "llvm") == 0 ? stdout : NULL,
        .dump_asm = strcmp(stage, "asm") == 0 ? stdout : NULL,
    };
    aj_diag d = {0};
    aj_program *p = aj_program_compile(r.m, g, &co, &d);
    int rc = p ? 0 : print_diag_in(&d, r.m->path);
    if (p && listing)
        aj_program_print(p, stdout);
    aj_program_free(p);
    aj_run_close(&r);
    return rc ? rc : fflush(stdout) == 0 ? 0 : EXIT_MODEL;
}

static int run_dump(const options *o)
{
    const char *stage = o->stage ? o->stage : "ir";
    int known = -1;
    for (int i = 0; stages[i]; i++)
        if (strcmp(stage, stages[i]) == 0)
            known = i;
    if (known < 0) {
        fprintf(stderr, "%s: unknown stage '%s' for 'dump' (stages:", prog, stage);
        for (int i = 0; stages[i]; i++)
            fprintf(stderr, " %s", stages[i]);
        fprintf(stderr, "); see '%s dump --help'\n", prog);
        return EXIT_USAGE;
    }
    if (known >= FIRST_PROGRAM_STAGE)
        return dump_program(o, stage);
    if (o->fn || o->engine)
        return usage_error(find_command("dump"), "%s goes with the compiled stages (naive, fused, llvm, asm)",
                           o->fn ? "--fn" : "--engine");

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

/* ---------------------------------------------------------------- bench */

/* bench's engines, in the order they run and print; the interpreter is the
 * slow reference, so it runs fewer steps. */
enum { ENG_INTERP, ENG_NAIVE, ENG_FUSED, NENGINES };
static const char *const bench_engines[] = { "interp", "naive", "fused" };
enum { WARMUP = 2, INTERP_WARMUP = 1, INTERP_STEPS = 3 };

typedef struct {
    int ran;
    int warmup, steps;
    double med, min, max;       /* ms per step */
    int nodes;                  /* interp: graph nodes, recurrence bodies included */
    double cold_ms, cached_ms;  /* compiled: compile without / through the disk cache */
    int cache_hit;
    aj_program_stats st;
} bench_row;

typedef struct {
    aj_run r;
    const aj_graph *g;          /* train_step */
    aj_tensor *in, *res;
    int steps;                  /* --steps */
    int nan_check, profile;
} bench;

/* train_step's arguments: loglik's data as random 0/1 values (what binary
 * models see), lr = 1e-3, then decay and the optimizer states as zeros, as
 * at the start of a run. */
static int bench_inputs(bench *b, aj_diag *d)
{
    const aj_graph *g = b->g;
    int ndata = aj_module_fn(b->r.m, "loglik")->nleaf;
    uint64_t s = 0x9e3779b97f4a7c15u;   /* xorshift64; any fixed seed will do */
    b->in = calloc((size_t)g->nleaf + 1, sizeof *b->in);
    b->res = calloc((size_t)g->nresult + 1, sizeof *b->res);
    if (!b->in || !b->res)
        return aj_error(d, 0, 0, "out of memory");
    for (int i = 0; i < g->nleaf; i++) {
        aj_type t = g->val[g->leaf[i]].type;
        for (int a = 0; a < t.rank; a++)
            t.dim[a] = aj_dim_bind(t.dim[a], &b->r.bind);
        aj_tensor *x = &b->in[i];
        *x = aj_tensor_of_type(&t);
        if (!x->data)
            return aj_error(d, 0, 0, "out of memory for train_step's argument %s", g->val[g->leaf[i]].name);
        for (int64_t k = 0, n = aj_tensor_numel(x); i < ndata && k < n; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            if (x->dtype == AJ_F32)
                ((float *)x->data)[k] = (float)(s >> 63);
            else
                ((int32_t *)x->data)[k] = (int32_t)(s >> 63);
        }
        if (i == ndata)
            *(float *)x->data = 1e-3f;
    }
    return 0;
}

static void bench_free(bench *b)
{
    for (int i = 0; b->in && i < b->g->nleaf; i++)
        aj_tensor_free(&b->in[i]);
    free(b->in);
    free(b->res);
    aj_run_close(&b->r);
}

/* The interpreter has no per-kernel check: --check-nan looks at its results. */
static int results_finite(const aj_graph *g, const aj_tensor *res, aj_diag *d)
{
    for (int i = 0; i < g->nresult; i++) {
        const float *x = res[i].data;
        for (int64_t k = 0, n = aj_tensor_numel(&res[i]); res[i].dtype == AJ_F32 && k < n; k++)
            if (!isfinite(x[k]))
                return aj_error(d, g->line, 0, "nan check: the interpreter's result %s[%" PRId64 "] of %s is %s",
                                g->val[g->result[i]].name, k, g->name, isnan(x[k]) ? "NaN" : "Inf");
    }
    return 0;
}

/* One training step with program p (NULL: the interpreter). The parameters
 * stay as they are: every step computes the same update, which is all a
 * timing needs. */
static int bench_step(bench *b, aj_program *p, uint64_t seed, aj_diag *d)
{
    int rc = p ? aj_program_run(p, b->r.params, b->in, b->res, seed, d)
               : aj_interp_run(b->r.m, b->g, b->r.params, b->in, b->res, seed, d);
    if (rc == 0 && !p && b->nan_check)
        rc = results_finite(b->g, b->res, d);
    for (int i = 0; i < b->g->nresult; i++)
        aj_tensor_free(&b->res[i]);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* warmup steps, then the median, min and max ms of `steps` more. */
static int time_steps(bench *b, aj_program *p, int warmup, int steps, bench_row *row, aj_diag *d)
{
    double *ms = calloc((size_t)steps, sizeof *ms);
    if (!ms)
        return aj_error(d, 0, 0, "out of memory");
    for (int i = 0; i < warmup + steps; i++) {
        double t0 = now_ms();
        if (bench_step(b, p, (uint64_t)i, d)) {
            free(ms);
            return -1;
        }
        if (i >= warmup)
            ms[i - warmup] = now_ms() - t0;
    }
    qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
    row->warmup = warmup;
    row->steps = steps;
    row->med = steps % 2 ? ms[steps / 2] : (ms[steps / 2 - 1] + ms[steps / 2]) / 2;
    row->min = ms[0];
    row->max = ms[steps - 1];
    free(ms);
    return 0;
}

/* Compile three times: cold (no disk cache: the whole LLVM pipeline), then
 * through the cache twice, the first filling it (unless an earlier run
 * did), the second timing a hit. Returns the last program. */
static aj_program *bench_compile(bench *b, int fused, bench_row *row, aj_diag *d)
{
    aj_compile_opts co = { .fused = fused, .nan_check = b->nan_check, .profile = b->profile, .no_cache = 1 };
    aj_program *p = NULL;
    for (int pass = 0; pass < 3; pass++) {
        aj_program_free(p);
        co.no_cache = pass == 0;
        double t0 = now_ms();
        if (!(p = aj_program_compile(b->r.m, b->g, &co, d)))
            return NULL;
        *(pass == 0 ? &row->cold_ms : &row->cached_ms) = now_ms() - t0;
    }
    aj_program_stats_get(p, &row->st);
    char prefix[32];   /* on stderr, so that --json's stdout stays JSON */
    snprintf(prefix, sizeof prefix, "%s: %s: ", prog, fused ? "fused" : "naive");
    aj_program_print_host(p, prefix, stderr);
    row->st.arena_bytes += (aj_threads() - 1) * row->st.thread_bytes;   /* what this run holds */
    row->cache_hit = row->st.cache_hit;
    return p;
}

static void fmt_bytes(int64_t n, char *buf, size_t size)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4)
        v /= 1024, u++;
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

/* s as a JSON string. */
static void json_string(const char *s, FILE *f)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* What a run of training holds besides the arena: every parameter, a
 * gradient for each one the step updates, and the optimizer's states. */
typedef struct {
    int64_t params, grads, state;
} bench_memory;

static int bench_memory_of(const bench *b, int nstate, bench_memory *mem)
{
    const aj_module *m = b->r.m;
    char *used = calloc((size_t)m->nparam + 1, 1);
    if (!used)
        return -1;
    mark_params(b->g, used);
    memset(mem, 0, sizeof *mem);
    for (int i = 0; i < m->nparam; i++) {
        int64_t bytes = aj_tensor_numel(&b->r.params[i]) * (int64_t)sizeof(float);
        mem->params += bytes;
        mem->grads += used[i] ? bytes : 0;
    }
    mem->state = nstate * mem->grads;
    free(used);
    return 0;
}

static void print_bench_table(const bench *b, const char *opt, const bench_memory *mem, const bench_row *rows)
{
    char p[32], g[32], s[32], t[32], arena[32], cold[32], cached[32], kernels[32], calls[32];
    int threads = aj_threads();
    printf("bench %s: train_step (%s) of loglik, %s%sB=%" PRId64 ", %d thread%s\n", b->r.m->path, opt, b->r.dims,
           b->r.dims[0] ? ", " : "", b->r.bdim >= 0 ? b->r.bind.v[b->r.bdim] : 0, threads, threads == 1 ? "" : "s");
    fmt_bytes(mem->params, p, sizeof p);
    fmt_bytes(mem->grads, g, sizeof g);
    fmt_bytes(mem->state, s, sizeof s);
    fmt_bytes(mem->params + mem->grads + mem->state, t, sizeof t);
    printf("memory: params %s + grads %s + %s state %s = %s\n\n", p, g, opt, s, t);
    printf("%-7s %11s %18s %9s %11s %10s %10s %10s %10s  %s\n", "engine", "compile", "cached", "kernels", "calls/step",
           "arena", "ms/step", "min", "max", "steps");
    for (int e = 0; e < NENGINES; e++) {
        const bench_row *r = &rows[e];
        if (!r->ran)
            continue;
        if (e == ENG_INTERP) {
            snprintf(cold, sizeof cold, "-");
            snprintf(cached, sizeof cached, "-");
            snprintf(kernels, sizeof kernels, "%d nodes", r->nodes);
            snprintf(calls, sizeof calls, "-");
            snprintf(arena, sizeof arena, "n/a");
        } else {
            snprintf(cold, sizeof cold, "%.1f ms", r->cold_ms);
            snprintf(cached, sizeof cached, "%.1f ms (%s)", r->cached_ms, r->cache_hit ? "hit" : "miss");
            snprintf(kernels, sizeof kernels, "%d", r->st.kernels);
            snprintf(calls, sizeof calls, "%" PRId64, r->st.calls);
            fmt_bytes(r->st.arena_bytes, arena, sizeof arena);
        }
        printf("%-7s %11s %18s %9s %11s %10s %10.3f %10.3f %10.3f  %d (+%d warm-up)\n", bench_engines[e], cold, cached,
               kernels, calls, arena, r->med, r->min, r->max, r->steps, r->warmup);
    }
    const bench_row *f = &rows[ENG_FUSED];
    if (f->ran && (rows[ENG_NAIVE].ran || rows[ENG_INTERP].ran)) {
        printf("\nspeed-up of fused (median ms/step):");
        if (rows[ENG_NAIVE].ran)
            printf(" %.2fx over naive", rows[ENG_NAIVE].med / f->med);
        if (rows[ENG_INTERP].ran)
            printf("%s %.2fx over interp", rows[ENG_NAIVE].ran ? "," : "", rows[ENG_INTERP].med / f->med);
        printf("\n");
    }
    if (f->ran && f->st.unfused_loops)
        printf("fused: %d recurrence%s not fused, run as loops of kernels (dump --stage fused says why)\n",
               f->st.unfused_loops, f->st.unfused_loops == 1 ? "" : "s");
    if (rows[ENG_INTERP].ran && rows[ENG_INTERP].steps < b->steps)
        printf("interp ran %d of the %d steps: it is the slow reference\n", rows[ENG_INTERP].steps, b->steps);
    const char *dir = aj_jit_cache_dir();
    printf("compile: cold without the disk cache, cached through it (%s)\n", dir ? dir : "off: ARJIT_CACHE");
}

static void print_bench_json(const bench *b, const char *opt, const bench_memory *mem, const bench_row *rows)
{
    printf("{\"model\": ");
    json_string(b->r.m->path, stdout);
    printf(", \"fn\": \"train_step\", \"opt\": ");
    json_string(opt, stdout);
    printf(", \"dims\": ");
    json_string(b->r.dims, stdout);
    printf(", \"batch\": %" PRId64 ", \"threads\": %d,\n", b->r.bdim >= 0 ? b->r.bind.v[b->r.bdim] : 0, aj_threads());
    printf(" \"memory\": {\"params\": %" PRId64 ", \"grads\": %" PRId64 ", \"state\": %" PRId64 ", \"total\": %" PRId64
           "},\n \"engines\": [",
           mem->params, mem->grads, mem->state, mem->params + mem->grads + mem->state);
    const char *sep = "";
    for (int e = 0; e < NENGINES; e++) {
        const bench_row *r = &rows[e];
        if (!r->ran)
            continue;
        printf("%s\n  {\"engine\": \"%s\", \"steps\": %d, \"warmup\": %d, \"ms_median\": %.6g, \"ms_min\": %.6g, "
               "\"ms_max\": %.6g",
               sep, bench_engines[e], r->steps, r->warmup, r->med, r->min, r->max);
        if (e == ENG_INTERP)
            printf(", \"nodes\": %d}", r->nodes);
        else
            printf(", \"compile_cold_ms\": %.6g, \"compile_cached_ms\": %.6g, \"cache_hit\": %s, \"kernels\": %d, "
                   "\"calls\": %" PRId64 ", \"arena_bytes\": %" PRId64 "}",
                   r->cold_ms, r->cached_ms, r->cache_hit ? "true" : "false", r->st.kernels, r->st.calls,
                   r->st.arena_bytes);
        sep = ",";
    }
    printf("\n ],\n \"speedup\": {");
    sep = "";
    for (int e = ENG_INTERP; e < ENG_FUSED && rows[ENG_FUSED].ran; e++)
        if (rows[e].ran) {
            printf("%s\"fused_over_%s\": %.6g", sep, bench_engines[e], rows[e].med / rows[ENG_FUSED].med);
            sep = ", ";
        }
    printf("}}\n");
}

/* bench --sample: ms per sample of B sequences of --length values (default
 * T - 1) with the derived sampler, incremental and full form, on naive and
 * fused, in interleaved rounds after a warm-up (the JIT compile). */
static int bench_sample(const options *o, const aj_job *job, int64_t rounds)
{
    static const char *const form[2] = { "incremental", "full" };
    static const aj_engine_run run[2] = { aj_naive_run, aj_fused_run };
    static const char *const eng[2] = { "naive", "fused" };
    aj_run r[2] = {{0}};
    aj_step_info info[2];
    aj_diag d = {0};
    double ms[2][2] = {{0}};
    int64_t len = 0;
    int rc = int_value("bench", "--length", o->length, 0, 1, 1 << 24, &len) ? EXIT_USAGE : 0;
    for (int f = 0; f < 2 && !rc; f++)
        if (aj_run_open(&r[f], job->model, NULL, NULL, job->dims, job->batch ? job->batch : 1, NULL, &d) ||
            aj_run_init_params(&r[f], job->seed, &d) || aj_sample_step(r[f].m, f, &info[f], &d))
            rc = print_diag_in(&d, job->model);
    if (!rc && !len)
        len = r[0].tdim >= 0 ? r[0].bind.v[r[0].tdim] - 1 : 1;
    for (int64_t k = 0; k <= rounds && !rc; k++)
        for (int f = 0; f < 2 && !rc; f++)
            for (int e = 0; e < 2 && !rc; e++) {
                aj_ancestral_opts a = { .length = len, .seed = job->seed, .derived = &info[f] };
                aj_tensor x;
                double t0 = now_ms();
                if (aj_ancestral(r[f].m, run[e], r[f].params, &a, &x, &d))
                    rc = print_diag_in(&d, job->model);
                if (k > 0)   /* round 0 compiles */
                    ms[f][e] += (now_ms() - t0) / (double)rounds;
                aj_tensor_free(&x);
            }
    if (!rc) {
        printf("sample %s: %" PRId64 " values per sample, B=%" PRId64 ", %" PRId64 " rounds interleaved\n", job->model, len,
               r[0].bdim >= 0 ? r[0].bind.v[r[0].bdim] : 1, rounds);
        if (!info[0].incremental)
            printf("  (the step is the full form: %s)\n", info[0].why);
        for (int f = 0; f < 2; f++)
            for (int e = 0; e < 2; e++)
                printf("  %-12s %-6s %10.2f ms per sample %9.3f ms per value\n", form[f], eng[e], ms[f][e],
                       ms[f][e] / (double)len);
        printf("  fused: incremental %.1fx faster than full; incremental: fused %.1fx faster than naive\n",
               ms[1][1] / ms[0][1], ms[0][0] / ms[0][1]);
    }
    for (int f = 0; f < 2; f++)
        if (r[f].m)
            aj_run_close(&r[f]);
    return rc;
}

static int run_bench(const options *o)
{
    static const char *const which_words[] = { "all", "interp", "naive", "fused", NULL };
    options jo = *o;
    jo.engine = NULL;   /* bench's --engine also takes "all": parsed here */
    aj_job job;
    int64_t steps;
    int which;
    int rc = job_options(&jo, "bench", &job);
    if (rc || int_value("bench", "--steps", o->steps, 20, 1, 1000000, &steps) ||
        word_value("bench", "--engine", o->engine, which_words, &which))
        return rc ? rc : EXIT_USAGE;
    if (job.threads)
        aj_set_threads(job.threads);
    if (o->sample)
        return bench_sample(o, &job, o->steps ? steps : 5);

    bench b = { .steps = (int)steps, .nan_check = o->check_nan != NULL, .profile = o->profile != NULL };
    if (!(b.g = open_fn(&b.r, job.model, job.dims, job.batch ? job.batch : DEFAULT_BATCH, NULL, &job.opt)))
        return EXIT_MODEL;
    aj_diag d = {0};
    bench_row rows[NENGINES] = {{0}};
    aj_program *progs[NENGINES] = {0};
    bench_memory mem;
    if (aj_run_init_params(&b.r, job.seed, &d) || bench_inputs(&b, &d)) {
        rc = print_diag_in(&d, b.r.m->path);
        goto out;
    }
    if (bench_memory_of(&b, aj_optim_nstate(&job.opt), &mem)) {
        perror(prog);
        rc = EXIT_MODEL;
        goto out;
    }
    for (int e = 0; e < NENGINES; e++) {
        if (which != 0 && which != e + 1)
            continue;
        if (isatty(STDERR_FILENO))
            fprintf(stderr, "%s: bench: %s...\n", prog, bench_engines[e]);
        bench_row *r = &rows[e];
        if (e == ENG_INTERP) {
            int count[AJ_OP_COUNT] = {0};
            count_ops(b.g, count);
            for (int op = 0; op < AJ_OP_COUNT; op++)
                r->nodes += count[op];
            rc = time_steps(&b, NULL, INTERP_WARMUP, b.steps < INTERP_STEPS ? b.steps : INTERP_STEPS, r, &d);
        } else {
            progs[e] = bench_compile(&b, e == ENG_FUSED, r, &d);
            rc = progs[e] ? time_steps(&b, progs[e], WARMUP, b.steps, r, &d) : -1;
        }
        if (rc) {
            fprintf(stderr, "%s: bench: engine %s failed:\n", prog, bench_engines[e]);
            rc = print_diag_in(&d, b.r.m->path);
            goto out;
        }
        r->ran = 1;
    }

    const char *opt = job.opt.kind == AJ_OPT_ADAM ? "adam" : job.opt.kind == AJ_OPT_SGD ? "sgd" : "rmsprop";
    if (o->json)
        print_bench_json(&b, opt, &mem, rows);
    else
        print_bench_table(&b, opt, &mem, rows);
    /* with --json the profile goes to stderr: stdout stays one JSON object */
    FILE *pf = o->json ? stderr : stdout;
    for (int e = ENG_NAIVE; e < NENGINES && b.profile; e++)
        if (progs[e]) {
            fprintf(pf, "\nprofile: %s, %d runs\n", bench_engines[e], rows[e].warmup + rows[e].steps);
            aj_program_profile(progs[e], pf);
        }
    if (b.nan_check && rows[ENG_INTERP].ran)
        fprintf(stderr, "%s: note: --check-nan checks every kernel of naive and fused, only the results of interp\n",
                prog);
    rc = fflush(stdout) == 0 ? 0 : EXIT_MODEL;
out:
    for (int e = 0; e < NENGINES; e++)
        aj_program_free(progs[e]);
    bench_free(&b);
    return rc;
}

/* ---------------------------------------------------------------- the table */

static const flag check_flags[] = {
    FLAG_DIMS,
    { "--order", NULL, offsetof(options, order), "also prove each conditional depends only on the variables before it" },
    FLAG_SEED("--order: parameter init and random inputs; default 1"),
    FLAG_END,
};
static const flag dump_flags[] = {
    { "--stage", "STAGE", offsetof(options, stage), "what to print; default ir. Graph text: ir (the parsed, verified graph),\n"
      "                       grad (with grad_<fn>: loss and gradients), opt (grad with every fn simplified:\n"
      "                       dead code, CSE, constants). Compiled (all dims bound, B=100 unless --dims binds it):\n"
      "                       naive or fused (the program: kernels, their graph lines, buffers),\n"
      "                       llvm (the optimised LLVM IR), asm (the machine code), each kernel headed by\n"
      "                       a comment with its graph lines" },
    FLAG_DIMS,
    { "--fn", "NAME", offsetof(options, fn), "compiled stages: the fn to compile (e.g. loglik, sample, grad_loglik);\n"
      "                       default train_step, the Adam training step of loglik" },
    { "--engine", "NAME", offsetof(options, engine), "llvm and asm: the code of fused or naive; default fused" },
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
    { "--valid-examples", "N", offsetof(options, valid_examples),
      "validate on the first N examples of the valid split; default all of them" },
    FLAG_THREADS,
    FLAG_ENGINE,
    FLAG_CHECK_NAN,
    FLAG_DIMS,
    FLAG_END,
};
static const flag bench_flags[] = {
    FLAG_DIMS,
    { "--batch", "N", offsetof(options, batch), "examples per batch, the model's dim B; default 100" },
    { "--steps", "N", offsetof(options, steps), "timed training steps per engine (interp: at most 3); default 20" },
    { "--threads", "N", offsetof(options, threads), "OpenMP threads for naive and fused; default OpenMP's" },
    { "--engine", "NAME", offsetof(options, engine), "interp, naive, fused or all; default all" },
    { "--opt", "NAME", offsetof(options, opt), "the optimizer in the step: adam, sgd or rmsprop; default adam" },
    { "--json", NULL, offsetof(options, json), "print one JSON object instead of the table" },
    { "--sample", NULL, offsetof(options, sample), "time the sampler derived from fn loglik instead (B=1 unless --batch):\n"
      "                       incremental and full form, naive and fused, --steps rounds (default 5)" },
    { "--length", "N", offsetof(options, length), "--sample: values per sample; default T - 1" },
    { "--profile", NULL, offsetof(options, profile), "time every kernel; print each program's profile after the table" },
    FLAG_CHECK_NAN,
    FLAG_END,
};
static const flag eval_flags[] = {
    FLAG_CKPT,
    { "--data", "SPEC", offsetof(options, data), "dataset; default the one the checkpoint was trained on" },
    { "--split", "NAME", offsetof(options, split), "test, valid or train; default test" },
    { "--fn", "NAME", offsetof(options, fn), "the fn to score: x : f32[B, D] in, log p(x) per example (f32[B]) as\n"
      "                       its first result (e.g. an ensemble's); default loglik" },
    FLAG_BATCH,
    FLAG_ENGINE,
    FLAG_THREADS,
    FLAG_CHECK_NAN,
    FLAG_DIMS,
    FLAG_END,
};
static const flag graphstats_flags[] = {
    FLAG_CKPT,
    { "-n", "N", offsetof(options, n), "how many graphs to sample; default 100" },
    { "--split", "NAME", offsetof(options, split), "the family's split to compare with: test, valid or train; default test" },
    FLAG_SEED("the sampling draws; default 1"),
    FLAG_ENGINE,
    FLAG_THREADS,
    FLAG_DIMS,
    FLAG_END,
};
static const flag sample_flags[] = {
    FLAG_CKPT,
    { "-n", "N", offsetof(options, n), "how many samples (the batch dim B); default 64" },
    { "--out", "FILE", offsetof(options, out), "FILE.png: the PNG grid (image data only); any other name: text.\n"
      "                       Default: samples.png for image data, else stdout. Written as a new file renamed\n"
      "                       over FILE, which must not be a device, FIFO or directory" },
    FLAG_SEED("the sampling draws; default 1"),
    { "--prompt", "TEXT", offsetof(options, prompt), "text models: the first characters, fed, not drawn" },
    { "--length", "N", offsetof(options, length), "values per sample; default the block size T (more: the window slides)" },
    { "--temperature", "X", offsetof(options, temperature), "divide the logits by X (> 0); default 1" },
    { "--top-k", "K", offsetof(options, top_k), "draw among the K likeliest values only (1: greedy); default all" },
    { "--naive-sampling", NULL, offsetof(options, naive_sampling), "recompute the whole graph at each position (the full\n"
      "                       form), to compare with the incremental sampler; the same draws" },
    { "--data", "SPEC", offsetof(options, data), "for a fn sample(x : f32[B, D]) that conditions on data: the dataset\n"
      "                       whose first N examples it gets; default the checkpoint's" },
    { "--split", "NAME", offsetof(options, split), "the split those examples come from: test, valid or train; default test" },
    { "--fn", "NAME", offsetof(options, fn), "the fn to run, taking no argument or the data as fn sample does\n"
      "                       (e.g. an inpainting fn); default sample" },
    FLAG_ENGINE,
    FLAG_THREADS,
    FLAG_CHECK_NAN,
    FLAG_DIMS,
    FLAG_END,
};
static const flag data_flags[] = {
    { "--dir", "DIR", offsetof(options, dir), "where to put the files; default ./data (the loaders look there)" },
    FLAG_END,
};
static const flag gradcheck_flags[] = {
    FLAG_DIMS,
    { "--fn", "NAME", offsetof(options, fn), "the fn to differentiate; default loglik" },
    FLAG_SEED("random parameters, inputs and probes; default 1"),
    { "--probes", "N", offsetof(options, probes), "entries checked per parameter (all when it has fewer); default 6" },
    { "--eps", "X", offsetof(options, eps), "finite-difference step; default 1e-3" },
    { "--tol", "X", offsetof(options, tol), "largest relative error that passes; default 1e-3" },
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
      "The stages ir, grad and opt print canonical graph-file syntax: it parses back\n"
      "to the same model. naive and fused print the program an engine runs; each\n"
      "kernel names the graph lines it came from (FILE:LINE), and so does the comment\n"
      "heading each kernel's code in llvm and asm.",
      run_dump },
    { "train", "train a model by maximum likelihood on a dataset",
      "FILE", 1, 1, train_flags,
      "Minimises the mean NLL (-log p(x), fn loglik) with the compiled train_step:\n"
      "shuffled, seeded batches; after each epoch the NLL of the valid split (whole,\n"
      "or its first --valid-examples). A NaN or infinite loss or valid NLL stops it.\n"
      "B is the batch size. Progress goes to stderr, one line per epoch to stdout.\n"
      "--save CKPT keeps the best epoch by valid NLL in CKPT and the latest state\n"
      "in CKPT.last; --resume CKPT.last continues bit-identically to a run never\n"
      "stopped (same flags). Ctrl-C finishes the step, saves CKPT.last, exits 130.\n"
      "Exit status: 0 done, 1 an error (printed), 2 bad command line.",
      run_train },
    { "eval", "average NLL of a dataset split under a checkpoint",
      "FILE", 1, 1, eval_flags,
      "Prints the NLL in nats per example and in bits per dimension (NLL / (d ln 2));\n"
      "text: per character. Models with a fn predict on reverse:N: also the exact-match\n"
      "accuracy of its greedy decoding. An NLL that is NaN or infinite is an error\n"
      "(exit 1: try --check-nan).\n"
      "The model is bound to the dims the checkpoint records (--dims overrides).",
      run_eval },
    { "sample", "draw samples from a model's fn sample under a checkpoint",
      "FILE", 1, 1, sample_flags,
      "Models trained on images (mnist*) give a PNG grid; others print one line of\n"
      "values per sample. A PNG asked for (--out *.png, or the default for image\n"
      "data) of samples that are not images of the checkpoint's size is an error\n"
      "naming why; nothing is written.",
      run_sample },
    { "gradcheck", "check autodiff gradients against finite differences",
      "FILE", 1, 1, gradcheck_flags,
      "Draws parameters from N(0, 0.5^2) (matrices from N(0, 1/fan_in)) and 0/1\n"
      "inputs, binds B=2 unless --dims\n"
      "binds it, and compares each parameter's gradient with central differences\n"
      "of the loss, both evaluated in double on the interpreter. Entries probed:\n"
      "alternately random ones and those of largest gradient. The error is relative,\n"
      "and absolute below 1e-3 of the parameter's largest gradient. Prints one line\n"
      "per parameter; exit status 1 if any fails. A fn that draws random numbers\n"
      "(fn sample) or uses no parameters is refused.",
      run_gradcheck },
    { "graphstats", "compare sampled graphs with their family: degree and clustering MMD",
      "FILE", 1, 1, graphstats_flags,
      "For a model trained on a graphs: family (docs/datasets.md): draws -n graphs\n"
      "from fn sample, decodes them (nodes up to the first all-zero adjacency vector)\n"
      "and prints the squared MMD of their degree and clustering-coefficient\n"
      "histograms to the family's --split graphs (Gaussian kernel of the total\n"
      "variation distance, as You et al. 2018), beside the MMD of the family's own\n"
      "train graphs (as many) to the same split: what a perfect model would score.",
      run_graphstats },
    { "bench", "time compiling and running a model's training step on each engine",
      "FILE", 1, 1, bench_flags,
      "Builds the training step as train does (loss, gradients and optimizer update\n"
      "of fn loglik, B = --batch) and, for each engine, times compiling it (cold:\n"
      "without the disk cache; cached: a compile that hits it) and running it:\n"
      "median, min and max ms per step over --steps steps after 2 warm-up steps, on\n"
      "random 0/1 inputs with a fresh run's parameters (the same every step). The\n"
      "interpreter runs at most 3 steps after 1 warm-up: it is the slow reference.\n"
      "Also: kernels, kernel calls per step, the arena's peak, the memory training\n"
      "holds (parameters, gradients, optimizer state) and fused's speed-ups.",
      run_bench },
    { "data", "download the standard datasets (data fetch NAME|all)",
      "fetch NAME", 2, 2, data_flags,
      "NAME is mnist-bin, mnist, shakespeare, wine or all. Downloads each file from its\n"
      "public source (or $ARJIT_DATA_URL/FILE when set) and checks its sha256 against\n"
      "the published sum (../shared/data/README.md); a file is written only whole and\n"
      "verified, and one already there with the right sum is kept.\n"
      "Exit status: 0 done, 1 a download or checksum failed (named), 2 bad command line.",
      run_data },
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
    /* --dims's syntax is the command line's; whether the model has those
     * dims is the model's business (exit 1, when it is loaded) */
    aj_diag d = {0};
    if (o->dims && aj_bind_parse(NULL, NULL, o->dims, &d))
        return usage_error(c, "%s", d.msg);
    return 0;
}

int main(int argc, char **argv)
{
    /* Every training step frees the old parameters and optimizer state and
     * gets result tensors of the same sizes. glibc would map and unmap each
     * (or trim the heap), and every page of a new one faults on first touch,
     * which is most of the optimizer kernels' time; kept in the heap, the
     * freed blocks are reused as they are. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
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
