/* arjit: the command-line driver.
 *
 *   arjit check FILE... [--dims D=8,H=5]     parse, verify, summarise
 *   arjit dump FILE [--stage ir] [--dims ..]  print a stage as text
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

#include "arjit.h"

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
    aj_module *m = aj_parse_file(path, &d);
    if (m) {
        aj_bind_defaults(m, b);
        if ((dims && aj_bind_parse(m, b, dims, &d) != 0) || aj_module_infer(m, b, &d) != 0) {
            aj_module_free(m);
            m = NULL;
        }
    }
    if (!m) {
        /* a diagnostic without a file (e.g. from --dims) still names it */
        if (!d.file[0])
            snprintf(d.file, sizeof d.file, "%s", strcmp(path, "-") == 0 ? "<stdin>" : path);
        aj_diag_print(&d, stderr);
    }
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

static const char *const stages[] = { "ir", NULL };

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
    aj_module_print(m, stdout);
    aj_module_free(m);
    return fflush(stdout) == 0 ? 0 : EXIT_MODEL;
}

/* ---------------------------------------------------------------- the table */

static const flag check_flags[] = { FLAG_DIMS, FLAG_END };
static const flag dump_flags[] = {
    { "--stage", "STAGE", offsetof(options, stage), "what to print: ir (the parsed, verified graph); default ir" },
    FLAG_DIMS,
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
};
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]))

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
