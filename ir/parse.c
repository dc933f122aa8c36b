/* The graph-file parser: text -> aj_module.
 *
 * A hand-written lexer and recursive-descent parser for the line-oriented
 * language of docs/ir.md. It stops at the first error and reports it with
 * file:line:col; every path frees what it built, and every loop consumes
 * input, so no input can crash, leak or hang it (tests/fuzz_parse.c). */
#include "arjit.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIM_VALUE (1ll << 40)   /* larger dims are surely typos */

/* ------------------------------------------------------------------ lexer */

typedef enum { T_EOF, T_NL, T_NAME, T_NUM, T_PUNCT, T_ARROW, T_STR } tok_kind;

typedef struct {
    tok_kind kind;
    const char *s;       /* text in the source */
    int len;
    int line, col;
    char c;              /* T_PUNCT: the character */
} token;

typedef struct scope scope;

typedef struct {
    const char *src;
    size_t len, pos;
    int line, col;
    token tok;           /* current token */
    aj_module *m;
    aj_diag *d;
    scope *sc;           /* innermost graph being parsed */
} parser;

static int is_name0(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int lex_error(parser *p, int line, int col, const char *msg) {
    return aj_error(p->d, line, col, "%s", msg);
}

/* Read the next token into p->tok. Returns -1 on a lexical error. */
static int next(parser *p) {
    for (;;) {
        if (p->pos >= p->len) {
            p->tok = (token){T_EOF, p->src + p->pos, 0, p->line, p->col, 0};
            return 0;
        }
        char c = p->src[p->pos];
        if (c == ' ' || c == '\t' || c == '\r') { p->pos++, p->col++; continue; }
        if (c == '#') {   /* comment to end of line */
            while (p->pos < p->len && p->src[p->pos] != '\n') p->pos++, p->col++;
            continue;
        }
        break;
    }
    const char *s = p->src + p->pos;
    char c = *s;
    token t = {T_PUNCT, s, 1, p->line, p->col, c};
    if (c == '\n') {
        t.kind = T_NL;
        p->pos++, p->line++, p->col = 1;
        p->tok = t;
        return 0;
    }
    size_t n = 0;
    if (is_name0((unsigned char)c)) {
        t.kind = T_NAME;
        while (p->pos + n < p->len && (is_name0((unsigned char)s[n]) || is_digit((unsigned char)s[n]))) n++;
    } else if (is_digit((unsigned char)c) || (c == '.' && p->pos + 1 < p->len && is_digit((unsigned char)s[1]))) {
        t.kind = T_NUM;
        while (p->pos + n < p->len && (is_digit((unsigned char)s[n]) || s[n] == '.')) n++;
        if (p->pos + n < p->len && (s[n] == 'e' || s[n] == 'E')) {
            size_t k = n + 1;
            if (p->pos + k < p->len && (s[k] == '+' || s[k] == '-')) k++;
            if (p->pos + k < p->len && is_digit((unsigned char)s[k])) {
                n = k;
                while (p->pos + n < p->len && is_digit((unsigned char)s[n])) n++;
            }
        }
        if (p->pos + n < p->len && (is_name0((unsigned char)s[n])))
            return lex_error(p, p->line, p->col, "malformed number");
    } else if (c == '"') {   /* a string: printable bytes up to '"' on the same line, no escapes */
        t.kind = T_STR;
        n = 1;
        while (p->pos + n < p->len && s[n] != '"') {
            if ((unsigned char)s[n] < 32) return lex_error(p, p->line, p->col, "unterminated string");
            n++;
        }
        if (p->pos + n == p->len) return lex_error(p, p->line, p->col, "unterminated string");
        n++;
    } else if (c == '-' && p->pos + 1 < p->len && s[1] == '>') {
        t.kind = T_ARROW;
        n = 2;
    } else if (strchr("()[]{},:=+-*", c) && c) {
        n = 1;
    } else {
        char msg[64];
        if ((unsigned char)c >= 32 && (unsigned char)c < 127)
            snprintf(msg, sizeof msg, "unexpected character '%c'", c);
        else
            snprintf(msg, sizeof msg, "unexpected byte 0x%02x (is this a text file?)", (unsigned char)c);
        return lex_error(p, p->line, p->col, msg);
    }
    t.len = (int)n;
    p->pos += n, p->col += (int)n;
    p->tok = t;
    return 0;
}

static int tok_is(const parser *p, const char *word) {
    return p->tok.kind == T_NAME && (int)strlen(word) == p->tok.len && !strncmp(p->tok.s, word, (size_t)p->tok.len);
}
static int tok_punct(const parser *p, char c) { return p->tok.kind == T_PUNCT && p->tok.c == c; }

static const char *tok_desc(const token *t, char *buf, size_t n) {
    switch (t->kind) {
    case T_EOF: return "end of file";
    case T_NL: return "end of line";
    default: snprintf(buf, n, "'%.*s'", t->len > 40 ? 40 : t->len, t->s); return buf;
    }
}

static int expected(parser *p, const char *what) {
    char buf[64];
    return aj_error(p->d, p->tok.line, p->tok.col, "expected %s, found %s", what, tok_desc(&p->tok, buf, sizeof buf));
}

static int expect_punct(parser *p, char c) {
    if (!tok_punct(p, c)) {
        char what[8] = {'\'', c, '\'', 0};
        return expected(p, what);
    }
    return next(p);
}

/* Between the items of a list closed by `close`: a ',' (consumed) or the
 * closing bracket (left for the caller). */
static int expect_sep(parser *p, char close) {
    if (tok_punct(p, close)) return 0;
    if (tok_punct(p, ',')) return next(p);
    char what[16];
    snprintf(what, sizeof what, "',' or '%c'", close);
    return expected(p, what);
}

static int expect_nl(parser *p) {
    if (p->tok.kind != T_NL && p->tok.kind != T_EOF) return expected(p, "end of line");
    return p->tok.kind == T_NL ? next(p) : 0;
}

/* Copy the current name token into buf (names longer than 63 are refused). */
static int take_name(parser *p, char *buf, size_t n, const char *what) {
    if (p->tok.kind != T_NAME) return expected(p, what);
    if ((size_t)p->tok.len >= n) return aj_error(p->d, p->tok.line, p->tok.col, "name too long (at most %zu characters)", n - 1);
    memcpy(buf, p->tok.s, (size_t)p->tok.len);
    buf[p->tok.len] = 0;
    return next(p);
}

static int is_keyword(const char *s) {
    static const char *kw[] = {"dim", "param", "extern", "fn", "end", "carry", "slice", "use", "next", "stack", "f32", "i32"};
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
        if (!strcmp(s, kw[i])) return 1;
    return 0;
}

/* ------------------------------------------------------------------ numbers */

static int parse_int(parser *p, int64_t *out) {
    int neg = 0;
    int line = p->tok.line, col = p->tok.col;
    if (tok_punct(p, '-')) {
        neg = 1;
        if (next(p)) return -1;
    }
    if (p->tok.kind != T_NUM) return expected(p, "an integer");
    char buf[64];
    if (p->tok.len >= (int)sizeof buf) return aj_error(p->d, line, col, "number out of range");
    memcpy(buf, p->tok.s, (size_t)p->tok.len);
    buf[p->tok.len] = 0;
    if (strpbrk(buf, ".eE")) return aj_error(p->d, p->tok.line, p->tok.col, "expected an integer, found '%s'", buf);
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno == ERANGE) return aj_error(p->d, line, col, "number out of range");
    *out = neg ? -v : v;
    return next(p);
}

static int parse_float(parser *p, double *out) {
    int neg = 0;
    int line = p->tok.line, col = p->tok.col;
    if (tok_punct(p, '-')) {
        neg = 1;
        if (next(p)) return -1;
    }
    if (p->tok.kind != T_NUM) return expected(p, "a number");
    char buf[64];
    if (p->tok.len >= (int)sizeof buf) return aj_error(p->d, line, col, "number too long");
    memcpy(buf, p->tok.s, (size_t)p->tok.len);
    buf[p->tok.len] = 0;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end) return aj_error(p->d, p->tok.line, p->tok.col, "malformed number '%s'", buf);
    if (errno == ERANGE && fabs(v) > 1) return aj_error(p->d, line, col, "number out of range");
    *out = neg ? -v : v;
    return next(p);
}

/* ------------------------------------------------------------------ dims and types */

/* Parentheses and unary minus nest at most this deep in one dim, so no
 * input recurses the parser off its stack. */
#define MAX_DIM_NESTING 64

static int parse_dimsum(parser *p, aj_dim *out, int depth);

static int parse_dimfactor(parser *p, aj_dim *out, int depth) {
    if ((tok_punct(p, '(') || tok_punct(p, '-')) && depth == MAX_DIM_NESTING)
        return aj_error(p->d, p->tok.line, p->tok.col, "dimension expression nested too deeply (at most %d levels)",
                        MAX_DIM_NESTING);
    if (tok_punct(p, '(')) {
        if (next(p) || parse_dimsum(p, out, depth + 1)) return -1;
        return expect_punct(p, ')');
    }
    if (tok_punct(p, '-')) {   /* unary minus, as printed for negative coefficients */
        int line = p->tok.line, col = p->tok.col;
        aj_dim inner;
        if (next(p) || parse_dimfactor(p, &inner, depth + 1)) return -1;
        if (aj_dim_mul(aj_dim_const(-1), inner, out)) return aj_error(p->d, line, col, "dimension out of range");
        return 0;
    }
    if (p->tok.kind == T_NUM) {
        int64_t v;
        int line = p->tok.line, col = p->tok.col;
        if (parse_int(p, &v)) return -1;
        if (v > MAX_DIM_VALUE) return aj_error(p->d, line, col, "dimension %lld is too large (at most 2^40)", (long long)v);
        *out = aj_dim_const(v);
        return 0;
    }
    if (p->tok.kind == T_NAME) {
        char name[64];
        int line = p->tok.line, col = p->tok.col;
        if (take_name(p, name, sizeof name, "a dimension")) return -1;
        int k = aj_dim_index(p->m, name);
        if (k < 0) return aj_error(p->d, line, col, "unknown dim '%s' (declare it with 'dim %s = N' or 'dim %s')", name, name, name);
        *out = aj_dim_sym(k);
        return 0;
    }
    return expected(p, "a dimension");
}

/* Why a * b (or a + b) is no aj_dim (rc from aj_dim_add/sub/mul): a
 * coefficient or constant overflowed, or the polynomial outgrew aj_dim. */
static int dim_op_error(parser *p, int line, int col, int rc) {
    if (rc == AJ_DIM_OVERFLOW) return aj_error(p->d, line, col, "dimension is too large");
    return aj_error(p->d, line, col, "dimension expression has more than %d terms or a term of more than %d dims",
                    AJ_DIM_TERMS, AJ_DIM_DEGREE);
}

static int parse_dimterm(parser *p, aj_dim *out, int depth) {
    if (parse_dimfactor(p, out, depth)) return -1;
    while (tok_punct(p, '*')) {
        int line = p->tok.line, col = p->tok.col;
        aj_dim r;
        if (next(p) || parse_dimfactor(p, &r, depth)) return -1;
        int rc = aj_dim_mul(*out, r, out);
        if (rc) return dim_op_error(p, line, col, rc);
    }
    return 0;
}

static int parse_dimsum(parser *p, aj_dim *out, int depth) {
    if (parse_dimterm(p, out, depth)) return -1;
    while (tok_punct(p, '+') || tok_punct(p, '-')) {
        char op = p->tok.c;
        int line = p->tok.line, col = p->tok.col;
        aj_dim r;
        if (next(p) || parse_dimterm(p, &r, depth)) return -1;
        int rc = op == '+' ? aj_dim_add(*out, r, out) : aj_dim_sub(*out, r, out);
        if (rc) return dim_op_error(p, line, col, rc);
    }
    return 0;
}

static int parse_dimexpr(parser *p, aj_dim *out) { return parse_dimsum(p, out, 0); }

/* "[d, d, ...]" with at most AJ_MAX_RANK entries */
static int parse_shape(parser *p, aj_dim *dims, int *rank) {
    if (expect_punct(p, '[')) return -1;
    *rank = 0;
    while (!tok_punct(p, ']')) {
        if (*rank == AJ_MAX_RANK)
            return aj_error(p->d, p->tok.line, p->tok.col, "too many dimensions (at most %d)", AJ_MAX_RANK);
        if (parse_dimexpr(p, &dims[(*rank)++])) return -1;
        if (expect_sep(p, ']')) return -1;
    }
    return next(p);
}

static int parse_type(parser *p, aj_type *t) {
    memset(t, 0, sizeof *t);
    if (tok_is(p, "f32")) t->dtype = AJ_F32;
    else if (tok_is(p, "i32")) t->dtype = AJ_I32;
    else return expected(p, "a type (f32[...] or i32[...])");
    if (next(p)) return -1;
    return parse_shape(p, t->dim, &t->rank);
}

/* ------------------------------------------------------------------ scopes */

/* A graph being parsed: a fn, or a recurrence body inside another scope. */
struct scope {
    aj_graph *g;
    scope *parent;
    /* recurrence bodies: the outer value ids behind each carry/slice/use */
    int carry_init[64], slice_seq[64], use_outer[64];
    int carry_leaf[64], slice_leaf[64], use_leaf[64];
    int ncarry, nslice, nuse;
    int has_ops;
    /* values the parser made from literal numbers: no text names them, so a
     * later definition of the same generated name (_N) takes it from them */
    int *lits;
    int nlits;
};

static void scope_free(scope *s) { free(s->lits); }

static int add_use(parser *p, scope *s, const char *name, int outer, int line, int col) {
    if (s->nuse == 64) return aj_error(p->d, line, col, "too many values used in one recurrence body (at most 64)");
    int v = aj_graph_add_value(s->g, name, AJ_VAL_USE, -1, s->nuse);
    s->g->val[v].line = line, s->g->val[v].col = col;
    s->use_outer[s->nuse] = outer;
    s->use_leaf[s->nuse++] = v;
    return v;
}

/* Find `name` as a value of scope s: its own values, then (implicitly
 * captured as a `use`) the enclosing scopes', then the module parameters. */
static int lookup(parser *p, scope *s, const char *name, int line, int col) {
    int v = aj_graph_find(s->g, name);
    if (v >= 0) return v;
    if (s->parent) {
        int outer = lookup(p, s->parent, name, line, col);
        if (outer < 0) return -1;
        return add_use(p, s, name, outer, line, col);
    }
    int k = aj_module_param_index(p->m, name);
    if (k < 0) {
        if (aj_dim_index(p->m, name) >= 0)
            return aj_error(p->d, line, col, "'%s' is a dim, not a value", name);
        return aj_error(p->d, line, col, "undefined value '%s'", name);
    }
    v = aj_graph_add_value(s->g, name, AJ_VAL_PARAM, -1, k);
    s->g->val[v].line = line, s->g->val[v].col = col;
    return v;
}

/* A new name in scope s must not be taken by a value, param or dim. */
static int check_new_name(parser *p, scope *s, const char *name, int line, int col) {
    if (is_keyword(name)) return aj_error(p->d, line, col, "'%s' is a keyword and cannot name a value", name);
    int v = aj_graph_find(s->g, name);
    for (int i = 0; v >= 0 && i < s->nlits; i++)
        if (s->lits[i] == v) {
            aj_value_rename(s->g, v, "_0");   /* the literal yields its made-up name */
            v = -1;
        }
    if (v >= 0) {
        const aj_value *old = &s->g->val[v];
        if (old->line > 0) return aj_error(p->d, line, col, "'%s' is already defined at line %d", name, old->line);
        return aj_error(p->d, line, col, "'%s' is already defined", name);
    }
    if (aj_module_param_index(p->m, name) >= 0) return aj_error(p->d, line, col, "'%s' is already a parameter", name);
    if (aj_dim_index(p->m, name) >= 0) return aj_error(p->d, line, col, "'%s' is already a dim", name);
    return 0;
}

/* ------------------------------------------------------------------ statements */

static int parse_attr_value(parser *p, const aj_attr_spec *spec, aj_attr *a, const char *op) {
    int line = p->tok.line, col = p->tok.col;
    a->kind = spec->kind;
    switch (spec->kind) {
    case AJ_ATTR_INT: return parse_int(p, &a->i);
    case AJ_ATTR_FLOAT: return parse_float(p, &a->f);
    case AJ_ATTR_DIM: a->n = 1; return parse_dimexpr(p, &a->dims[0]);
    case AJ_ATTR_SHAPE: return parse_shape(p, a->dims, &a->n);
    case AJ_ATTR_INTS:
        a->n = 0;
        if (!tok_punct(p, '[')) {   /* a single int stands for [int] */
            a->n = 1;
            return parse_int(p, &a->ints[0]);
        }
        if (next(p)) return -1;
        while (!tok_punct(p, ']')) {
            if (a->n == AJ_MAX_RANK) return aj_error(p->d, p->tok.line, p->tok.col, "too many entries (at most %d)", AJ_MAX_RANK);
            if (parse_int(p, &a->ints[a->n++])) return -1;
            if (expect_sep(p, ']')) return -1;
        }
        return next(p);
    case AJ_ATTR_WORD:
        if (p->tok.kind == T_NAME || p->tok.kind == T_NUM)
            for (int w = 0; w < spec->nwords; w++)
                if ((int)strlen(spec->words[w]) == p->tok.len && !strncmp(spec->words[w], p->tok.s, (size_t)p->tok.len)) {
                    a->i = w;
                    return next(p);
                }
        {
            char list[256] = "", buf[64];
            for (int w = 0; w < spec->nwords; w++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", w ? ", " : "", spec->words[w]);
            return aj_error(p->d, line, col, "%s: %s is not a valid %s (one of: %s)", op,
                            tok_desc(&p->tok, buf, sizeof buf), spec->name, list);
        }
    }
    return 0;
}

/* Levenshtein distance, for "did you mean" on unknown op names. */
static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 31 || lb > 31) return 99;
    int dp[32][32];
    for (int i = 0; i <= la; i++) dp[i][0] = i;
    for (int j = 0; j <= lb; j++) dp[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int best = dp[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (dp[i - 1][j] + 1 < best) best = dp[i - 1][j] + 1;
            if (dp[i][j - 1] + 1 < best) best = dp[i][j - 1] + 1;
            dp[i][j] = best;
        }
    return dp[la][lb];
}

static int unknown_op(parser *p, const char *name, int line, int col) {
    const char *best = NULL;
    int bd = 3;
    /* the ops a call may name: the built-in ones, then the module's externs
     * (the `extern` op itself is only ever called by an extern's name) */
    for (int i = 0; i < AJ_OP_COUNT + p->m->nextern; i++) {
        if (i == AJ_OP_EXTERN) continue;
        const char *op = i < AJ_OP_COUNT ? aj_op_info((aj_op)i)->name : p->m->ext[i - AJ_OP_COUNT].name;
        int dd = edit_distance(name, op);
        if (dd < bd) bd = dd, best = op;
    }
    if (best) return aj_error(p->d, line, col, "unknown op '%s' (did you mean '%s'?)", name, best);
    return aj_error(p->d, line, col, "unknown op '%s' (docs/ir.md lists the ops)", name);
}

typedef struct {
    char name[16][64];
    int line[16], col[16];
    int n;
} lhs_list;

static int parse_body(parser *p, scope *outer, lhs_list *lhs, int opline, int opcol, aj_attr *attrs);

/* `a, b = op(x, y, 0.5, key=value) [{ body }]` — the names are read already. */
static int parse_op_stmt(parser *p, lhs_list *lhs) {
    scope *s = p->sc;
    char opname[64];
    int opline = p->tok.line, opcol = p->tok.col;
    if (take_name(p, opname, sizeof opname, "an op name")) return -1;
    int ext = aj_extern_index(p->m, opname);   /* a declared extern op, called by its name */
    aj_op op = ext >= 0 ? AJ_OP_EXTERN : aj_op_lookup(opname);
    if (op == AJ_OP_COUNT || (op == AJ_OP_EXTERN && ext < 0)) return unknown_op(p, opname, opline, opcol);
    const aj_op_def *def = aj_op_info(op);
    if (expect_punct(p, '(')) return -1;

    int in[64], in_col[64], nin = 0;
    aj_node proto;
    memset(&proto, 0, sizeof proto);
    proto.op = op;
    aj_node_set_defaults(&proto);
    int seen[AJ_MAX_ATTRS] = {0};
    while (!tok_punct(p, ')')) {
        int line = p->tok.line, col = p->tok.col;
        if (p->tok.kind == T_NAME) {
            char name[64];
            if (take_name(p, name, sizeof name, "an argument")) return -1;
            if (tok_punct(p, '=')) {        /* key=value: an attribute */
                int k = -1;
                for (int i = 0; i < def->nattr; i++)
                    if (!strcmp(def->attr[i].name, name)) k = i;
                if (ext >= 0 && k == 0)   /* `fn` is the extern's index: its name says it */
                    return aj_error(p->d, line, col, "%s has no attribute '%s' (it has: grad)", opname, name);
                if (k < 0) {
                    char list[128] = "";
                    for (int i = 0; i < def->nattr; i++)
                        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", def->attr[i].name);
                    return aj_error(p->d, line, col, "%s has no attribute '%s'%s%s%s", opname, name,
                                    def->nattr ? " (it has: " : "", list, def->nattr ? ")" : "");
                }
                if (seen[k]) return aj_error(p->d, line, col, "attribute '%s' given twice", name);
                seen[k] = 1;
                if (next(p) || parse_attr_value(p, &def->attr[k], &proto.attr[k], opname)) return -1;
            } else {                        /* a value */
                for (int i = 0; i < def->nattr; i++)
                    if (seen[i]) return aj_error(p->d, line, col, "inputs must come before attributes");
                if (nin == 64) return aj_error(p->d, line, col, "too many inputs");
                int v = lookup(p, s, name, line, col);
                if (v < 0) return -1;
                in_col[nin] = col;
                in[nin++] = v;
            }
        } else if (p->tok.kind == T_NUM || tok_punct(p, '-')) {  /* a literal: a scalar constant */
            for (int i = 0; i < def->nattr; i++)
                if (seen[i]) return aj_error(p->d, line, col, "inputs must come before attributes");
            if (nin == 64) return aj_error(p->d, line, col, "too many inputs");
            double v;
            if (parse_float(p, &v)) return -1;
            int c = aj_graph_add_node(s->g, AJ_OP_CONSTANT, NULL, 0, 1, NULL);
            s->g->node[c].attr[0].f = v;
            s->g->node[c].line = line, s->g->node[c].col = col;
            int cv = s->g->node[c].out[0];
            int *nl = realloc(s->lits, sizeof(int) * (size_t)(s->nlits + 1));
            if (!nl) return aj_error(p->d, line, col, "out of memory");
            s->lits = nl;
            s->lits[s->nlits++] = cv;
            s->g->val[cv].line = line, s->g->val[cv].col = col;
            in_col[nin] = col;
            in[nin++] = cv;
        } else {
            return expected(p, "an input name, a number or key=value");
        }
        if (expect_sep(p, ')')) return -1;
    }
    int close_line = p->tok.line, close_col = p->tok.col;
    if (next(p)) return -1;
    if (ext >= 0) proto.attr[0].i = ext, seen[0] = 1;   /* attribute fn: the extern's name says it */
    for (int i = 0; i < def->nattr; i++)
        if (def->attr[i].required && !seen[i])
            return aj_error(p->d, opline, opcol, "%s needs attribute '%s'", opname, def->attr[i].name);

    if (op == AJ_OP_RECURRENCE) {
        if (nin) return aj_error(p->d, in_col[0] ? opline : close_line, in_col[0] ? in_col[0] : close_col,
                                 "recurrence takes no inputs: declare them in its body with carry, slice and use");
        if (!tok_punct(p, '{')) return expected(p, "'{' to open the recurrence body");
        if (next(p)) return -1;
        return parse_body(p, s, lhs, opline, opcol, proto.attr);
    }
    if (tok_punct(p, '{')) return aj_error(p->d, p->tok.line, p->tok.col, "only recurrence has a body");
    int min_in = def->min_in, max_in = def->max_in, nout = def->nout;
    if (ext >= 0) {   /* f(x_1..x_k) -> y; its gradient f(x_1..x_k, dy, grad=1) -> dx_1..dx_k */
        int grad = proto.attr[1].i != 0;
        if (proto.attr[1].i != grad) return aj_error(p->d, opline, opcol, "%s: grad must be 0 or 1", opname);
        min_in = max_in = p->m->ext[ext].nin + grad;
        nout = grad ? p->m->ext[ext].nin : 1;
    }
    if (nin < min_in || nin > max_in) {
        if (min_in == max_in)
            return aj_error(p->d, opline, opcol, "%s takes %d input%s, got %d", opname, min_in, min_in == 1 ? "" : "s", nin);
        return aj_error(p->d, opline, opcol, "%s takes %d to %d inputs, got %d", opname, min_in, max_in, nin);
    }
    if (lhs->n != nout)
        return aj_error(p->d, lhs->line[0], lhs->col[0], "%s gives %d result%s, but %d name%s assigned", opname,
                        nout, nout == 1 ? "" : "s", lhs->n, lhs->n == 1 ? " is" : "s are");
    const char *names[16];
    for (int i = 0; i < lhs->n; i++) names[i] = strcmp(lhs->name[i], "_") ? lhs->name[i] : NULL;
    int id = aj_graph_add_node(s->g, op, in, nin, lhs->n, names);
    aj_node *n = &s->g->node[id];
    memcpy(n->attr, proto.attr, sizeof n->attr);
    memcpy(n->in_col, in_col, (size_t)nin * sizeof(int));
    n->line = opline, n->col = opcol;
    for (int i = 0; i < lhs->n; i++) s->g->val[n->out[i]].line = lhs->line[i], s->g->val[n->out[i]].col = lhs->col[i];
    s->has_ops = 1;
    return expect_nl(p);
}

/* names '=' ... : the left-hand side of a statement */
static int parse_lhs(parser *p, lhs_list *lhs) {
    lhs->n = 0;
    for (;;) {
        if (lhs->n == 16) return aj_error(p->d, p->tok.line, p->tok.col, "too many names (at most 16)");
        lhs->line[lhs->n] = p->tok.line, lhs->col[lhs->n] = p->tok.col;
        if (take_name(p, lhs->name[lhs->n], sizeof lhs->name[0], "a value name")) return -1;
        if (strcmp(lhs->name[lhs->n], "_")) {
            if (check_new_name(p, p->sc, lhs->name[lhs->n], lhs->line[lhs->n], lhs->col[lhs->n])) return -1;
            for (int i = 0; i < lhs->n; i++)
                if (!strcmp(lhs->name[i], lhs->name[lhs->n]))
                    return aj_error(p->d, lhs->line[lhs->n], lhs->col[lhs->n], "'%s' named twice", lhs->name[i]);
        }
        lhs->n++;
        if (!tok_punct(p, ',')) break;
        if (next(p)) return -1;
    }
    return expect_punct(p, '=');
}

/* ", axis = INT" after a slice or stack declaration */
static int parse_axis_clause(parser *p, int *axis) {
    if (expect_punct(p, ',')) return -1;
    if (!tok_is(p, "axis")) return expected(p, "'axis'");
    if (next(p) || expect_punct(p, '=')) return -1;
    int line = p->tok.line, col = p->tok.col;
    int64_t v;
    if (parse_int(p, &v)) return -1;
    if (v < -AJ_MAX_RANK || v > AJ_MAX_RANK) return aj_error(p->d, line, col, "axis %lld out of range", (long long)v);
    *axis = (int)v;
    return 0;
}

/* The body of a recurrence, after '{' and up to its '}'. Builds the body
 * graph, then the recurrence node in the outer scope. */
static int parse_body(parser *p, scope *outer, lhs_list *lhs, int opline, int opcol, aj_attr *attrs) {
    if (expect_nl(p)) return -1;
    scope body;
    memset(&body, 0, sizeof body);
    body.g = aj_graph_new("body");
    body.parent = outer;
    body.g->line = opline;
    p->sc = &body;
    aj_recur *rec = calloc(1, sizeof *rec);
    int next_of[64], next_set[64] = {0}, stack_val[64], res_line[128], res_col[128];
    int nstack = 0, rc = -1;
    if (!rec) goto out;
    for (;;) {
        while (p->tok.kind == T_NL)
            if (next(p)) goto out;
        int line = p->tok.line, col = p->tok.col;
        if (p->tok.kind == T_EOF) {
            aj_error(p->d, line, col, "recurrence body opened at line %d has no closing '}'", opline);
            goto out;
        }
        /* a forgotten '}' shows up as the fn's `end` (or the next section) */
        if (tok_is(p, "end") || tok_is(p, "fn") || tok_is(p, "dim") || tok_is(p, "param") || tok_is(p, "extern")) {
            aj_error(p->d, line, col, "recurrence body opened at line %d has no closing '}' before this line", opline);
            goto out;
        }
        if (tok_punct(p, '}')) {
            if (next(p)) goto out;
            break;
        }
        char name[64], other[64];
        if (tok_is(p, "carry") || tok_is(p, "slice")) {
            int is_carry = tok_is(p, "carry");
            if (body.has_ops) {
                aj_error(p->d, line, col, "'%s' must come before the body's ops", is_carry ? "carry" : "slice");
                goto out;
            }
            if (next(p)) goto out;
            int nline = p->tok.line, ncol = p->tok.col;
            if (take_name(p, name, sizeof name, "a name") || check_new_name(p, &body, name, nline, ncol) ||
                expect_punct(p, '='))
                goto out;
            int oline = p->tok.line, ocol = p->tok.col;
            if (take_name(p, other, sizeof other, "an outer value")) goto out;
            int ov = lookup(p, outer, other, oline, ocol);
            if (ov < 0) goto out;
            if ((is_carry ? body.ncarry : body.nslice) == 64) {
                aj_error(p->d, line, col, "too many %ss (at most 64)", is_carry ? "carrie" : "slice");
                goto out;
            }
            if (is_carry) {
                int v = aj_graph_add_value(body.g, name, AJ_VAL_CARRY, -1, body.ncarry);
                body.g->val[v].line = nline, body.g->val[v].col = ncol;
                body.carry_init[body.ncarry] = ov;
                body.carry_leaf[body.ncarry++] = v;
            } else {
                int axis;
                if (parse_axis_clause(p, &axis)) goto out;
                int v = aj_graph_add_value(body.g, name, AJ_VAL_SLICE, -1, body.nslice);
                body.g->val[v].line = nline, body.g->val[v].col = ncol;
                rec->slice_axis[body.nslice] = axis;
                body.slice_seq[body.nslice] = ov;
                body.slice_leaf[body.nslice++] = v;
            }
            if (expect_nl(p)) goto out;
        } else if (tok_is(p, "use")) {
            if (next(p)) goto out;
            for (;;) {
                int nline = p->tok.line, ncol = p->tok.col;
                if (take_name(p, name, sizeof name, "a name")) goto out;
                strcpy(other, name);
                int renamed = tok_punct(p, '=');
                if (renamed) {   /* use inner = outer */
                    if (next(p)) goto out;
                    if (take_name(p, other, sizeof other, "an outer value")) goto out;
                }
                /* `use W` of a parameter W keeps its name: it is what a body
                 * that reads W prints as */
                if (!renamed && aj_module_param_index(p->m, name) >= 0) {
                    if (aj_graph_find(body.g, name) >= 0) {
                        aj_error(p->d, nline, ncol, "'%s' is already used in this body", name);
                        goto out;
                    }
                } else if (check_new_name(p, &body, name, nline, ncol))
                    goto out;
                int ov = lookup(p, outer, other, nline, ncol);
                if (ov < 0 || add_use(p, &body, name, ov, nline, ncol) < 0) goto out;
                if (!tok_punct(p, ',')) break;
                if (next(p)) goto out;
            }
            if (expect_nl(p)) goto out;
        } else if (tok_is(p, "next")) {
            if (next(p)) goto out;
            int nline = p->tok.line, ncol = p->tok.col;
            if (take_name(p, name, sizeof name, "a carry name")) goto out;
            int k = -1;
            for (int i = 0; i < body.ncarry; i++)
                if (!strcmp(body.g->val[body.carry_leaf[i]].name, name)) k = i;
            if (k < 0) {
                aj_error(p->d, nline, ncol, "'%s' is not a carry of this recurrence", name);
                goto out;
            }
            if (next_set[k]) {
                aj_error(p->d, line, col, "carry '%s' has two 'next' lines", name);
                goto out;
            }
            if (expect_punct(p, '=')) goto out;
            int vline = p->tok.line, vcol = p->tok.col;
            if (take_name(p, other, sizeof other, "a value")) goto out;
            int v = lookup(p, &body, other, vline, vcol);
            if (v < 0) goto out;
            next_of[k] = v, next_set[k] = 1;
            res_line[k] = line, res_col[k] = col;
            if (expect_nl(p)) goto out;
        } else if (tok_is(p, "stack")) {
            if (next(p)) goto out;
            int vline = p->tok.line, vcol = p->tok.col;
            if (take_name(p, other, sizeof other, "a value")) goto out;
            int v = lookup(p, &body, other, vline, vcol);
            if (v < 0) goto out;
            if (nstack == 64) {
                aj_error(p->d, line, col, "too many stacked outputs (at most 64)");
                goto out;
            }
            if (parse_axis_clause(p, &rec->stack_axis[nstack])) goto out;
            res_line[64 + nstack] = line, res_col[64 + nstack] = col;
            stack_val[nstack++] = v;
            if (expect_nl(p)) goto out;
        } else {
            lhs_list inner;
            if (parse_lhs(p, &inner) || parse_op_stmt(p, &inner)) goto out;
            p->sc = &body;
        }
    }
    for (int k = 0; k < body.ncarry; k++)
        if (!next_set[k]) {
            const aj_value *v = &body.g->val[body.carry_leaf[k]];
            aj_error(p->d, v->line, v->col, "carry '%s' has no 'next' line", v->name);
            goto out;
        }
    if (lhs->n != body.ncarry + nstack) {
        aj_error(p->d, lhs->line[0], lhs->col[0],
                 "recurrence gives %d result%s (%d carr%s, %d stacked), but %d name%s assigned",
                 body.ncarry + nstack, body.ncarry + nstack == 1 ? "" : "s", body.ncarry,
                 body.ncarry == 1 ? "y" : "ies", nstack, lhs->n, lhs->n == 1 ? " is" : "s are");
        goto out;
    }
    /* leaves in canonical order: carries, slices, uses; results: nexts, stacks */
    aj_graph *g = body.g;
    g->nleaf = body.ncarry + body.nslice + body.nuse;
    g->leaf = malloc(sizeof(int) * (size_t)(g->nleaf ? g->nleaf : 1));
    g->nresult = body.ncarry + nstack;
    g->result = malloc(sizeof(int) * (size_t)(g->nresult ? g->nresult : 1));
    int in[192], nin = 0;
    for (int i = 0; i < body.ncarry; i++) g->leaf[nin] = body.carry_leaf[i], in[nin++] = body.carry_init[i];
    for (int i = 0; i < body.nslice; i++) g->leaf[nin] = body.slice_leaf[i], in[nin++] = body.slice_seq[i];
    for (int i = 0; i < body.nuse; i++) g->leaf[nin] = body.use_leaf[i], in[nin++] = body.use_outer[i];
    for (int i = 0; i < body.ncarry; i++) g->result[i] = next_of[i];
    for (int i = 0; i < nstack; i++) g->result[body.ncarry + i] = stack_val[i];
    rec->ncarry = body.ncarry, rec->nslice = body.nslice, rec->nuse = body.nuse, rec->nstack = nstack;
    for (int i = 0; i < body.ncarry; i++) rec->res_line[i] = res_line[i], rec->res_col[i] = res_col[i];
    for (int i = 0; i < nstack; i++)
        rec->res_line[body.ncarry + i] = res_line[64 + i], rec->res_col[body.ncarry + i] = res_col[64 + i];
    if (nin > 64) {
        aj_error(p->d, opline, opcol, "recurrence has %d inputs (at most 64)", nin);
        goto out;
    }
    const char *names[16];
    for (int i = 0; i < lhs->n; i++) names[i] = strcmp(lhs->name[i], "_") ? lhs->name[i] : NULL;
    int id = aj_graph_add_node(outer->g, AJ_OP_RECURRENCE, in, nin, lhs->n, names);
    aj_node *n = &outer->g->node[id];
    memcpy(n->attr, attrs, sizeof n->attr);
    n->line = opline, n->col = opcol;
    n->rec = rec;
    rec->body = body.g;
    body.g->end_line = p->tok.line;
    rec = NULL, body.g = NULL;
    for (int i = 0; i < lhs->n; i++)
        outer->g->val[n->out[i]].line = lhs->line[i], outer->g->val[n->out[i]].col = lhs->col[i];
    outer->has_ops = 1;
    rc = expect_nl(p);
out:
    p->sc = outer;
    free(rec);
    aj_graph_free(body.g);
    scope_free(&body);
    return rc;
}

/* ------------------------------------------------------------------ top level */

static int parse_dim(parser *p) {
    if (next(p)) return -1;
    char name[64];
    int line = p->tok.line, col = p->tok.col;
    if (take_name(p, name, sizeof name, "a dim name")) return -1;
    if (is_keyword(name)) return aj_error(p->d, line, col, "'%s' is a keyword and cannot name a dim", name);
    if (aj_dim_index(p->m, name) >= 0) return aj_error(p->d, line, col, "dim '%s' is already declared", name);
    if (aj_module_param_index(p->m, name) >= 0) return aj_error(p->d, line, col, "'%s' is already a parameter", name);
    if (p->m->ndim == AJ_MAX_DIMS) return aj_error(p->d, line, col, "too many dims (at most %d)", AJ_MAX_DIMS);
    aj_dimdef *dd = &p->m->dim[p->m->ndim];
    memset(dd, 0, sizeof *dd);
    if (tok_punct(p, '=')) {
        if (next(p)) return -1;
        int vline = p->tok.line, vcol = p->tok.col;
        int64_t v;
        if (parse_int(p, &v)) return -1;
        if (v < 0) return aj_error(p->d, vline, vcol, "dim %s cannot be negative", name);
        if (v > MAX_DIM_VALUE) return aj_error(p->d, vline, vcol, "dim %s = %lld is too large (at most 2^40)", name, (long long)v);
        dd->has_value = 1, dd->value = v;
    }
    dd->name = strdup(name);
    dd->line = line, dd->col = col;
    p->m->ndim++;
    return expect_nl(p);
}

static int parse_init(parser *p, aj_param *pr) {
    int line = p->tok.line, col = p->tok.col;
    char name[64];
    if (take_name(p, name, sizeof name, "an initialiser (zeros, ones, normal(std), uniform(a, b), xavier)")) return -1;
    if (!strcmp(name, "zeros")) pr->init = AJ_INIT_ZEROS;
    else if (!strcmp(name, "ones")) pr->init = AJ_INIT_ONES;
    else if (!strcmp(name, "xavier")) pr->init = AJ_INIT_XAVIER;
    else if (!strcmp(name, "normal")) {
        pr->init = AJ_INIT_NORMAL;
        int vline = p->tok.line, vcol = p->tok.col;
        if (expect_punct(p, '(')) return -1;
        vline = p->tok.line, vcol = p->tok.col;
        if (parse_float(p, &pr->a) || expect_punct(p, ')')) return -1;
        if (!(pr->a >= 0)) return aj_error(p->d, vline, vcol, "normal(std): std must be >= 0");
    } else if (!strcmp(name, "uniform")) {
        pr->init = AJ_INIT_UNIFORM;
        if (expect_punct(p, '(') || parse_float(p, &pr->a) || expect_punct(p, ',') || parse_float(p, &pr->b))
            return -1;
        if (!(pr->a <= pr->b)) return aj_error(p->d, line, col, "uniform(a, b) needs a <= b");
        if (expect_punct(p, ')')) return -1;
    } else
        return aj_error(p->d, line, col, "unknown initialiser '%s' (zeros, ones, normal(std), uniform(a, b), xavier)", name);
    return 0;
}

static int parse_param(parser *p) {
    if (next(p)) return -1;
    char name[64];
    int line = p->tok.line, col = p->tok.col;
    if (take_name(p, name, sizeof name, "a parameter name")) return -1;
    if (is_keyword(name)) return aj_error(p->d, line, col, "'%s' is a keyword and cannot name a parameter", name);
    if (aj_module_param_index(p->m, name) >= 0) return aj_error(p->d, line, col, "parameter '%s' is already declared", name);
    if (aj_dim_index(p->m, name) >= 0) return aj_error(p->d, line, col, "'%s' is already a dim", name);
    for (int i = 0; i < p->m->nfn; i++)
        if (aj_graph_find(p->m->fn[i], name) >= 0)
            return aj_error(p->d, line, col, "parameter '%s' must be declared before the fn that uses the name", name);
    aj_param pr;
    memset(&pr, 0, sizeof pr);
    if (expect_punct(p, ':')) return -1;
    int tline = p->tok.line, tcol = p->tok.col;
    if (parse_type(p, &pr.type)) return -1;
    if (pr.type.dtype != AJ_F32) return aj_error(p->d, tline, tcol, "parameter '%s' must be f32 (parameters are trained)", name);
    if (tok_punct(p, '=')) {
        if (next(p) || parse_init(p, &pr)) return -1;
    }
    pr.line = line, pr.col = col;
    aj_param *np = realloc(p->m->param, sizeof *np * (size_t)(p->m->nparam + 1));
    if (!np) return aj_error(p->d, line, col, "out of memory");
    p->m->param = np;
    pr.name = strdup(name);
    p->m->param[p->m->nparam++] = pr;
    return expect_nl(p);
}

/* extern NAME(arg, ...) = "LIB" FWD [, grad GRAD]: an op whose forward and
 * gradient are C functions in a shared library (docs/ir.md, custom ops). The
 * parser only records it; runtime/extern_op.c loads the library. */
static int parse_extern(parser *p) {
    if (next(p)) return -1;
    aj_extern e;
    memset(&e, 0, sizeof e);
    char name[64], arg[AJ_MAX_EXTERN_IN][64], fwd[64], grad[64] = "", lib[4096];
    e.line = p->tok.line, e.col = p->tok.col;
    if (take_name(p, name, sizeof name, "an op name")) return -1;
    if (is_keyword(name)) return aj_error(p->d, e.line, e.col, "'%s' is a keyword and cannot name an op", name);
    if (aj_op_lookup(name) != AJ_OP_COUNT) return aj_error(p->d, e.line, e.col, "'%s' is already an op", name);
    if (aj_extern_index(p->m, name) >= 0) return aj_error(p->d, e.line, e.col, "extern op '%s' is already declared", name);
    if (expect_punct(p, '(')) return -1;
    for (;;) {
        int line = p->tok.line, col = p->tok.col;
        if (e.nin == AJ_MAX_EXTERN_IN)
            return aj_error(p->d, line, col, "too many inputs (an extern op takes at most %d)", AJ_MAX_EXTERN_IN);
        if (take_name(p, arg[e.nin], sizeof arg[0], "an input name")) return -1;
        for (int i = 0; i < e.nin; i++)
            if (!strcmp(arg[i], arg[e.nin])) return aj_error(p->d, line, col, "'%s' named twice", arg[i]);
        e.nin++;
        if (!tok_punct(p, ',')) break;
        if (next(p)) return -1;
    }
    if (expect_punct(p, ')') || expect_punct(p, '=')) return -1;
    if (p->tok.kind != T_STR) return expected(p, "the library's path in quotes");
    if (p->tok.len == 2) return aj_error(p->d, p->tok.line, p->tok.col, "the library's path is empty");
    if (p->tok.len - 2 >= (int)sizeof lib) return aj_error(p->d, p->tok.line, p->tok.col, "the library's path is too long");
    memcpy(lib, p->tok.s + 1, (size_t)p->tok.len - 2);
    lib[p->tok.len - 2] = 0;
    if (next(p) || take_name(p, fwd, sizeof fwd, "the forward function's name")) return -1;
    if (tok_punct(p, ',')) {
        if (next(p)) return -1;
        if (!tok_is(p, "grad")) return expected(p, "'grad' and the gradient function's name");
        if (next(p) || take_name(p, grad, sizeof grad, "the gradient function's name")) return -1;
    }
    if (expect_nl(p)) return -1;
    aj_extern *ne = realloc(p->m->ext, sizeof *ne * (size_t)(p->m->nextern + 1));
    if (!ne) return aj_error(p->d, e.line, e.col, "out of memory");
    p->m->ext = ne;
    e.name = strdup(name), e.lib = strdup(lib), e.fwd = strdup(fwd), e.grad = grad[0] ? strdup(grad) : NULL;
    for (int i = 0; i < e.nin; i++) e.arg[i] = strdup(arg[i]);
    p->m->ext[p->m->nextern++] = e;
    return 0;
}

static int parse_fn(parser *p) {
    int fline = p->tok.line;
    if (next(p)) return -1;
    char name[64];
    int line = p->tok.line, col = p->tok.col;
    if (take_name(p, name, sizeof name, "a function name")) return -1;
    if (aj_module_fn(p->m, name)) return aj_error(p->d, line, col, "fn '%s' is already defined", name);
    scope fs;
    memset(&fs, 0, sizeof fs);
    fs.g = aj_graph_new(name);
    fs.g->line = fline;
    p->sc = &fs;
    aj_type args[64];
    int nargs = 0, rc = -1;
    char resname[16][64];
    int resline[16], rescol[16], nres = 0;
    if (expect_punct(p, '(')) goto out;
    while (!tok_punct(p, ')')) {
        char an[64];
        int aline = p->tok.line, acol = p->tok.col;
        if (take_name(p, an, sizeof an, "an argument name") || check_new_name(p, &fs, an, aline, acol)) goto out;
        if (nargs == 64) {
            aj_error(p->d, aline, acol, "too many arguments (at most 64)");
            goto out;
        }
        if (expect_punct(p, ':') || parse_type(p, &args[nargs])) goto out;
        int v = aj_graph_add_value(fs.g, an, AJ_VAL_INPUT, -1, nargs);
        fs.g->val[v].line = aline, fs.g->val[v].col = acol;
        nargs++;
        if (expect_sep(p, ')')) goto out;
    }
    if (next(p)) goto out;
    if (p->tok.kind != T_ARROW) {
        expected(p, "'->' and the fn's results");
        goto out;
    }
    if (next(p)) goto out;
    for (;;) {
        if (nres == 16) {
            aj_error(p->d, p->tok.line, p->tok.col, "too many results (at most 16)");
            goto out;
        }
        resline[nres] = p->tok.line, rescol[nres] = p->tok.col;
        if (take_name(p, resname[nres], sizeof resname[0], "a result name")) goto out;
        nres++;
        if (!tok_punct(p, ',')) break;
        if (next(p)) goto out;
    }
    if (expect_nl(p)) goto out;
    for (;;) {
        while (p->tok.kind == T_NL)
            if (next(p)) goto out;
        if (p->tok.kind == T_EOF) {
            aj_error(p->d, p->tok.line, p->tok.col, "fn '%s' (line %d) has no 'end'", name, fline);
            goto out;
        }
        if (tok_is(p, "end")) break;
        if (tok_is(p, "carry") || tok_is(p, "slice") || tok_is(p, "use") || tok_is(p, "next") || tok_is(p, "stack")) {
            char buf[64];
            aj_error(p->d, p->tok.line, p->tok.col, "%s only belongs in a recurrence body", tok_desc(&p->tok, buf, sizeof buf));
            goto out;
        }
        if (tok_is(p, "fn") || tok_is(p, "dim") || tok_is(p, "param") || tok_is(p, "extern")) {
            aj_error(p->d, p->tok.line, p->tok.col, "fn '%s' (line %d) has no 'end' before this line", name, fline);
            goto out;
        }
        lhs_list lhs;
        if (parse_lhs(p, &lhs) || parse_op_stmt(p, &lhs)) goto out;
    }
    fs.g->end_line = p->tok.line;
    if (next(p) || expect_nl(p)) goto out;
    fs.g->nleaf = nargs;
    fs.g->leaf = malloc(sizeof(int) * (size_t)(nargs ? nargs : 1));
    for (int i = 0; i < nargs; i++) fs.g->leaf[i] = i;   /* args are the fn's first values */
    fs.g->nresult = nres;
    fs.g->result = malloc(sizeof(int) * (size_t)nres);
    for (int i = 0; i < nres; i++) {
        int v = lookup(p, &fs, resname[i], resline[i], rescol[i]);
        if (v < 0) goto out;
        fs.g->result[i] = v;
    }
    aj_graph **nf = realloc(p->m->fn, sizeof *nf * (size_t)(p->m->nfn + 1));
    aj_type **nt = realloc(p->m->fn_arg_type, sizeof *nt * (size_t)(p->m->nfn + 1));
    if (nf) p->m->fn = nf;
    if (nt) p->m->fn_arg_type = nt;
    aj_type *types = malloc(sizeof *types * (size_t)(nargs ? nargs : 1));
    if (!nf || !nt || !types) {
        free(types);
        aj_error(p->d, line, col, "out of memory");
        goto out;
    }
    memcpy(types, args, sizeof *types * (size_t)nargs);
    p->m->fn[p->m->nfn] = fs.g;
    p->m->fn_arg_type[p->m->nfn++] = types;
    fs.g = NULL;
    rc = 0;
out:
    aj_graph_free(fs.g);
    scope_free(&fs);
    p->sc = NULL;
    return rc;
}

aj_module *aj_parse_string(const char *src, size_t len, const char *path, aj_diag *d) {
    aj_diag local;
    if (!d) d = &local;
    memset(d, 0, sizeof *d);
    aj_module *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->path = strdup(path ? path : "<string>");
    m->src = malloc(len + 1);
    if (m->src) memcpy(m->src, src, len), m->src[len] = 0;
    m->srclen = len;
    parser p = {.src = src, .len = len, .line = 1, .col = 1, .m = m, .d = d};
    if (next(&p)) goto fail;
    for (;;) {
        while (p.tok.kind == T_NL)
            if (next(&p)) goto fail;
        if (p.tok.kind == T_EOF) break;
        int r;
        if (tok_is(&p, "dim")) r = parse_dim(&p);
        else if (tok_is(&p, "param")) r = parse_param(&p);
        else if (tok_is(&p, "extern")) r = parse_extern(&p);
        else if (tok_is(&p, "fn")) r = parse_fn(&p);
        else r = expected(&p, "'dim', 'param', 'extern' or 'fn' at the start of a line");
        if (r) goto fail;
    }
    if (m->nfn == 0) {
        aj_error(d, p.tok.line, p.tok.col, "no fn in this file (a model declares at least 'fn loglik')");
        goto fail;
    }
    return m;
fail:
    aj_diag_source(d, m->path, src, len);
    aj_module_free(m);
    return NULL;
}

aj_module *aj_parse_file(const char *path, aj_diag *d) {
    aj_diag local;
    if (!d) d = &local;
    memset(d, 0, sizeof *d);
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        snprintf(d->file, sizeof d->file, "%s", path);
        aj_error(d, 0, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            if (cap >= ((size_t)1 << 30)) {   /* a graph file is text a person wrote */
                free(buf), buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    int err = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf || err) {
        free(buf);
        snprintf(d->file, sizeof d->file, "%s", path);
        aj_error(d, 0, 0, err ? "read error" : "file too large or out of memory");
        return NULL;
    }
    aj_module *m = aj_parse_string(buf, len, strcmp(path, "-") ? path : "<stdin>", d);
    free(buf);
    return m;
}
