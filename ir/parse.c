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
typedef struct pdef pdef;

enum {
    MAX_NEST = 100,        /* parentheses, calls, unary minus and recurrences inside each other */
    MAX_INLINED = 1 << 14  /* ops made by def calls: defs calling defs twice over
                            * grow exponentially; a stack of many alike layers
                            * is a recurrence over a layer axis instead */
};

typedef struct {
    const char *src;
    size_t len, pos;
    int line, col;
    token tok;           /* current token */
    aj_module *m;
    aj_diag *d;
    scope *sc;           /* innermost graph being parsed */
    pdef *defs;          /* the defs so far, callable from later lines */
    int ndef;
    int depth;           /* nesting, against MAX_NEST: recursion stays bounded */
    long inlined;        /* ops made inside def calls and checks, against MAX_INLINED */
    int result[16];      /* what the last def inlined returned */
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
    } else if (strchr("()[]{},:=+-*/@", c) && c) {
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
    static const char *kw[] = {"dim", "param", "extern", "fn", "def", "end", "carry", "slice", "use", "next", "stack", "f32", "i32"};
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

/* A `def`: statements over untyped arguments, inlined at every call by
 * parsing its text again in a frame that binds its names to the caller's
 * values (docs/ir.md, "def"). Shapes are checked per call, after inlining. */
/* any number of names: a recurrence gives one result per carry and stack */
typedef struct {
    char (*name)[64];
    int *line, *col;
    int n, cap;
} lhs_list;

static void lhs_free(lhs_list *lhs) { free(lhs->name), free(lhs->line), free(lhs->col); }

/* Room for one more name, at the current token. */
static int lhs_grow(parser *p, lhs_list *lhs) {
    if (lhs->n == lhs->cap) {
        int cap = lhs->cap ? 2 * lhs->cap : 4;
        char(*nn)[64] = realloc(lhs->name, sizeof *nn * (size_t)cap);
        if (nn) lhs->name = nn;
        int *nl = realloc(lhs->line, sizeof(int) * (size_t)cap);
        if (nl) lhs->line = nl;
        int *nc = realloc(lhs->col, sizeof(int) * (size_t)cap);
        if (nc) lhs->col = nc;
        if (!nn || !nl || !nc) return aj_error(p->d, p->tok.line, p->tok.col, "out of memory");
        lhs->cap = cap;
    }
    lhs->line[lhs->n] = p->tok.line, lhs->col[lhs->n] = p->tok.col;
    return 0;
}

typedef struct {
    size_t pos;
    int line, col;
    token tok;
} lexstate;

struct pdef {
    char name[64];
    char (*arg)[64];
    int narg;
    lhs_list res;        /* the result names, at most 16 (an expression's values) */
    lexstate body;       /* the body's first token */
    int line, col;
    int calls;           /* calls inlined so far: the k-th names its values f_x_k */
};

/* A name a def's body binds (an argument or a local) and its value in the
 * graph the def is inlined into. */
typedef struct {
    char name[64];
    int v, line;
} binding;

typedef struct {
    int *v;
    int n, cap;
} ivec;

static int ivec_push(parser *p, ivec *a, int x) {
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 16;
        int *nv = realloc(a->v, sizeof(int) * (size_t)cap);
        if (!nv) return aj_error(p->d, p->tok.line, p->tok.col, "out of memory");
        a->v = nv, a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

/* A graph being parsed: a fn, a recurrence body inside another scope, or a
 * frame: a def being inlined into its caller's graph. */
struct scope {
    aj_graph *g;
    scope *parent;       /* recurrence bodies: the scope holding the recurrence */
    scope *home;         /* the scope that owns g: itself, or a frame's caller's home */
    scope *caller;       /* frames: where parameters are looked up (NULL when checking a def) */
    const pdef *def;     /* frames: names resolve in `bound`, not in g */
    binding *bound;
    int nbound;
    int site;            /* 1 + the aj_callsite of the def being inlined; 0 in a fn */
    int call;            /* frames: which call of the def this is (1, 2, ...) */
    /* recurrence bodies: the outer value ids behind each carry/slice/use,
     * the leaves they are, and each slice's axis */
    ivec carry_init, carry_leaf, slice_seq, slice_leaf, slice_axis;
    ivec use_outer, use_leaf;
    int has_ops;
    /* home scopes: made[v] is 1 while value v has a name the parser made up
     * (_N for a literal or a subexpression, f_x for def f's local x): a
     * later definition of the same name takes it, and a statement's result
     * is given its name */
    unsigned char *made;
    int nmade;
};

static void scope_free(scope *s) {
    free(s->made), free(s->bound), free(s->use_outer.v), free(s->use_leaf.v);
    free(s->carry_init.v), free(s->carry_leaf.v), free(s->slice_seq.v), free(s->slice_leaf.v), free(s->slice_axis.v);
}

static int is_made(const scope *s, int v) { return v < s->home->nmade && s->home->made[v]; }

static int set_made(parser *p, scope *s, int v, int made) {
    scope *h = s->home;
    if (v >= h->nmade) {
        int n = 2 * v + 16;
        unsigned char *nm = realloc(h->made, (size_t)n);
        if (!nm) return aj_error(p->d, p->tok.line, p->tok.col, "out of memory");
        memset(nm + h->nmade, 0, (size_t)(n - h->nmade));
        h->made = nm, h->nmade = n;
    }
    h->made[v] = (unsigned char)made;
    return 0;
}

static int add_use(parser *p, scope *s, const char *name, int outer, int line, int col) {
    int v = aj_graph_add_value(s->g, name, AJ_VAL_USE, -1, s->use_leaf.n);
    s->g->val[v].line = line, s->g->val[v].col = col;
    if (ivec_push(p, &s->use_outer, outer) || ivec_push(p, &s->use_leaf, v)) return -1;
    return v;
}

static int bind_name(parser *p, scope *s, const char *name, int v, int line) {
    binding *nb = realloc(s->bound, sizeof *nb * (size_t)(s->nbound + 1));
    if (!nb) return aj_error(p->d, line, 0, "out of memory");
    s->bound = nb;
    snprintf(nb[s->nbound].name, sizeof nb->name, "%s", name);
    nb[s->nbound].v = v, nb[s->nbound++].line = line;
    return 0;
}

static const binding *bound(const scope *s, const char *name) {
    for (int i = s->nbound - 1; i >= 0; i--)
        if (!strcmp(s->bound[i].name, name)) return &s->bound[i];
    return NULL;
}

/* Find `name` as a value of scope s: its own values, then (implicitly
 * captured as a `use`) the enclosing scopes', then the module parameters.
 * A def's frame sees its arguments, its own values and the parameters. */
static int lookup(parser *p, scope *s, const char *name, int line, int col) {
    int v;
    if (s->def) {
        const binding *b = bound(s, name);
        if (b) return b->v;
        if (s->caller && aj_module_param_index(p->m, name) >= 0) return lookup(p, s->caller, name, line, col);
    } else {
        v = aj_graph_find(s->g, name);
        if (v >= 0) return v;
        if (s->parent) {
            int outer = lookup(p, s->parent, name, line, col);
            if (outer < 0) return -1;
            return add_use(p, s, name, outer, line, col);
        }
    }
    int k = aj_module_param_index(p->m, name);
    if (k < 0) {
        if (aj_dim_index(p->m, name) >= 0)
            return aj_error(p->d, line, col, "'%s' is a dim, not a value", name);
        if (s->def)
            return aj_error(p->d, line, col, "undefined value '%s' (def '%s' sees its arguments, its own values and the parameters)",
                            name, s->def->name);
        return aj_error(p->d, line, col, "undefined value '%s'", name);
    }
    if (s->def && (v = aj_graph_find(s->g, name)) >= 0) return v;   /* checking a def: its scratch graph */
    v = aj_graph_add_value(s->g, name, AJ_VAL_PARAM, -1, k);
    s->g->val[v].line = line, s->g->val[v].col = col;
    return v;
}

/* A made-up name that text now wants yields it. */
static void yield_name(scope *s, const char *name) {
    int v = aj_graph_find(s->g, name);
    if (v >= 0 && is_made(s, v)) aj_value_rename(s->g, v, "_0");
}

/* A new name in scope s must not be taken by a value, param or dim. */
static int check_new_name(parser *p, scope *s, const char *name, int line, int col) {
    if (is_keyword(name)) return aj_error(p->d, line, col, "'%s' is a keyword and cannot name a value", name);
    int taken_line = -1;
    if (s->def) {
        const binding *b = bound(s, name);
        if (b) taken_line = b->line;
    } else {
        yield_name(s, name);
        int v = aj_graph_find(s->g, name);
        if (v >= 0) taken_line = s->g->val[v].line;
    }
    if (taken_line > 0) return aj_error(p->d, line, col, "'%s' is already defined at line %d", name, taken_line);
    if (taken_line == 0) return aj_error(p->d, line, col, "'%s' is already defined", name);
    /* a def's names may shadow parameters: `def cell(x, W)` is called with each layer's W */
    if (!s->def && aj_module_param_index(p->m, name) >= 0) return aj_error(p->d, line, col, "'%s' is already a parameter", name);
    if (aj_dim_index(p->m, name) >= 0) return aj_error(p->d, line, col, "'%s' is already a dim", name);
    return 0;
}

/* Give v, a value the parser made, the name a statement wrote for it. In a
 * def's frame the graph's name is the def's, `f_x`, and the frame binds x. */
static int define(parser *p, scope *s, int v, const char *name, int line, int col) {
    if (!strcmp(name, "_")) return 0;
    if (!is_made(s, v))
        return aj_error(p->d, line, col, "'%s' would only be a second name for '%s'", name, s->g->val[v].name);
    if (s->def) {
        /* call k > 1 appends _k itself: probing for a free name from _2 up
         * would take as long as the calls so far */
        char mangled[160];
        snprintf(mangled, sizeof mangled, s->call > 1 ? "%s_%s_%d" : "%s_%s", s->def->name, name, s->call);
        aj_value_rename(s->g, v, mangled);
        if (bind_name(p, s, name, v, line)) return -1;
    } else {
        yield_name(s, name);
        aj_value_rename(s->g, v, name);
        if (set_made(p, s, v, 0)) return -1;
    }
    s->g->val[v].line = line, s->g->val[v].col = col;
    return 0;
}

/* ------------------------------------------------------------------ statements */

/* A parsed expression: its values (several only for a call with several
 * results), where it starts, and what made it (for messages). */
typedef struct {
    int v[16], n;
    int line, col;
    int bare;            /* a lone name: no op made it */
    char what[64];
} expr;

static int enter(parser *p, int line, int col) {
    if (++p->depth > MAX_NEST)
        return aj_error(p->d, line, col, "nested too deeply (more than %d levels of parentheses, calls, unary minus or recurrences)",
                        MAX_NEST);
    return 0;
}

/* A node in the current scope whose results are values with made-up names. */
static int emit(parser *p, aj_op op, const int *in, const int *in_col, int nin, int nout, int line, int col) {
    scope *s = p->sc;
    if ((s->def || s->site) && ++p->inlined > MAX_INLINED)
        return aj_error(p->d, line, col,
                        "the def calls make more than %d ops (stack many alike layers with a recurrence over a layer axis, docs/ir.md)",
                        MAX_INLINED);
    int id = aj_graph_add_node(s->g, op, in, nin, nout, NULL);
    aj_node *n = &s->g->node[id];
    if (in_col && nin) memcpy(n->in_col, in_col, sizeof(int) * (size_t)nin);
    n->line = line, n->col = col, n->site = s->site;
    for (int k = 0; k < nout; k++) {
        int v = n->out[k];
        s->g->val[v].line = line, s->g->val[v].col = col;
        if (set_made(p, s, v, 1)) return -1;
    }
    s->has_ops = s->home->has_ops = 1;
    return id;
}

static int emit_literal(parser *p, double x, int line, int col, expr *e) {
    int id = emit(p, AJ_OP_CONSTANT, NULL, NULL, 0, 1, line, col);
    if (id < 0) return -1;
    p->sc->g->node[id].attr[0].f = x;
    e->v[0] = p->sc->g->node[id].out[0];
    snprintf(e->what, sizeof e->what, "a number");
    return 0;
}

static int need_one(parser *p, const expr *e) {
    if (e->n == 1) return 0;
    return aj_error(p->d, e->line, e->col, "%s gives %d results: an operand needs exactly one", e->what, e->n);
}

/* e = op(e, r): an infix operator or unary minus (r NULL) at line:col. */
static int apply(parser *p, aj_op op, expr *e, const expr *r, int line, int col) {
    if (need_one(p, e) || (r && need_one(p, r))) return -1;
    int in[2] = {e->v[0], r ? r->v[0] : 0}, cols[2] = {e->col, r ? r->col : 0};
    int id = emit(p, op, in, cols, r ? 2 : 1, 1, line, col);
    if (id < 0) return -1;
    e->v[0] = p->sc->g->node[id].out[0];
    e->bare = 0;
    snprintf(e->what, sizeof e->what, "%s", aj_op_info(op)->name);
    return 0;
}

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
    if (aj_module_fn(p->m, name))
        return aj_error(p->d, line, col, "'%s' is a fn, which cannot be called: write the block as a def", name);
    const char *best = NULL;
    int bd = 3;
    /* the ops a call may name: the built-in ones, the module's externs (the
     * `extern` op itself is only ever called by an extern's name), the defs */
    for (int i = 0; i < AJ_OP_COUNT + p->m->nextern + p->ndef; i++) {
        if (i == AJ_OP_EXTERN) continue;
        const char *op = i < AJ_OP_COUNT ? aj_op_info((aj_op)i)->name
                         : i < AJ_OP_COUNT + p->m->nextern ? p->m->ext[i - AJ_OP_COUNT].name
                                                           : p->defs[i - AJ_OP_COUNT - p->m->nextern].name;
        int dd = edit_distance(name, op);
        if (dd < bd) bd = dd, best = op;
    }
    if (best) return aj_error(p->d, line, col, "unknown op '%s' (did you mean '%s'?)", name, best);
    return aj_error(p->d, line, col, "unknown op '%s' (docs/ir.md lists the ops)", name);
}

/* Is the current name token followed by '=' (key=value, or a statement)? */
static int name_then(const parser *p, char c) {
    size_t i = p->pos;
    while (i < p->len && (p->src[i] == ' ' || p->src[i] == '\t' || p->src[i] == '\r')) i++;
    return i < p->len && p->src[i] == c;
}

static int parse_expr(parser *p, expr *e);

/* The arguments of a call, after its name: `(x, y + 1, key=value)`.
 * Inputs come first, then attributes of op `def` (NULL: a def, which has
 * none). */
typedef struct {
    int in[64], in_col[64], in_line[64], nin;
    aj_node proto;
    int seen[AJ_MAX_ATTRS];
} call_args;

static int parse_args(parser *p, const aj_op_def *def, int ext, const char *name, int line, int col, call_args *a) {
    memset(a, 0, sizeof *a);
    if (def) {
        a->proto.op = (aj_op)(def - aj_op_info((aj_op)0));
        aj_node_set_defaults(&a->proto);
    }
    if (expect_punct(p, '(')) return -1;
    while (!tok_punct(p, ')')) {
        int aline = p->tok.line, acol = p->tok.col;
        if (p->tok.kind == T_NAME && name_then(p, '=')) {   /* key=value: an attribute */
            char key[64];
            if (take_name(p, key, sizeof key, "an attribute")) return -1;
            int k = -1;
            for (int i = 0; def && i < def->nattr; i++)
                if (!strcmp(def->attr[i].name, key)) k = i;
            if (ext >= 0 && k == 0)   /* `fn` is the extern's index: its name says it */
                return aj_error(p->d, aline, acol, "%s has no attribute '%s' (it has: grad)", name, key);
            if (k < 0) {
                char list[128] = "";
                int na = def ? def->nattr : 0;
                for (int i = 0; i < na; i++)
                    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", def->attr[i].name);
                return aj_error(p->d, aline, acol, "%s has no attribute '%s'%s%s%s", name, key, na ? " (it has: " : "", list,
                                na ? ")" : "");
            }
            if (a->seen[k]) return aj_error(p->d, aline, acol, "attribute '%s' given twice", key);
            a->seen[k] = 1;
            if (next(p) || parse_attr_value(p, &def->attr[k], &a->proto.attr[k], name)) return -1;
        } else {
            if (p->tok.kind != T_NAME && p->tok.kind != T_NUM && !tok_punct(p, '-') && !tok_punct(p, '('))
                return expected(p, "an input name, a number or key=value");
            for (int i = 0; i < AJ_MAX_ATTRS; i++)
                if (a->seen[i]) return aj_error(p->d, aline, acol, "inputs must come before attributes");
            if (a->nin == 64) return aj_error(p->d, aline, acol, "too many inputs");
            expr x;
            if (parse_expr(p, &x) || need_one(p, &x)) return -1;
            a->in_line[a->nin] = aline, a->in_col[a->nin] = acol;
            a->in[a->nin++] = x.v[0];
        }
        if (expect_sep(p, ')')) return -1;
    }
    if (next(p)) return -1;
    if (ext >= 0) a->proto.attr[0].i = ext, a->seen[0] = 1;   /* attribute fn: the extern's name says it */
    for (int i = 0; def && i < def->nattr; i++)
        if (def->attr[i].required && !a->seen[i])
            return aj_error(p->d, line, col, "%s needs attribute '%s'", name, def->attr[i].name);
    return 0;
}

static int parse_block(parser *p, const char *kind, const char *name, int line);

static int add_site(parser *p, const char *def, int line, int col, int parent) {
    aj_callsite *ns = realloc(p->m->site, sizeof *ns * (size_t)(p->m->nsite + 1));
    char *dn = strdup(def);
    if (ns) p->m->site = ns;
    if (!ns || !dn) {
        free(dn);
        return aj_error(p->d, line, col, "out of memory");
    }
    ns[p->m->nsite] = (aj_callsite){dn, line, col, parent};
    return ++p->m->nsite;
}

static lexstate lex_save(const parser *p) { return (lexstate){p->pos, p->line, p->col, p->tok}; }
static void lex_restore(parser *p, lexstate s) { p->pos = s.pos, p->line = s.line, p->col = s.col, p->tok = s.tok; }

/* Parse def d's body, from the current token to its `end`, in frame fr
 * (its graph, arguments and call site set), into fr's graph. The values it
 * returns go to p->result. */
static int run_def(parser *p, const pdef *d, scope *fr) {
    scope *sc = p->sc;
    p->sc = fr;
    int rc = parse_block(p, "def", d->name, d->line);
    for (int k = 0; !rc && k < d->res.n; k++) {
        const binding *b = bound(fr, d->res.name[k]);
        if (!b) rc = aj_error(p->d, d->res.line[k], d->res.col[k], "def '%s' has no value '%s' to return", d->name, d->res.name[k]);
        else p->result[k] = b->v;
    }
    p->sc = sc;
    return rc;
}

static int call_def(parser *p, pdef *d, int line, int col, expr *e) {
    call_args a;
    if (parse_args(p, NULL, -1, d->name, line, col, &a)) return -1;
    if (a.nin != d->narg)
        return aj_error(p->d, line, col, "def '%s' takes %d argument%s, got %d", d->name, d->narg, d->narg == 1 ? "" : "s", a.nin);
    if (enter(p, line, col)) return -1;
    scope fr;
    memset(&fr, 0, sizeof fr);
    fr.g = p->sc->g, fr.home = p->sc->home, fr.caller = p->sc, fr.def = d, fr.call = ++d->calls;
    int rc = (fr.site = add_site(p, d->name, line, col, p->sc->site)) < 0;
    for (int i = 0; !rc && i < d->narg; i++) rc = bind_name(p, &fr, d->arg[i], a.in[i], d->line);
    if (!rc) {   /* its text again, then back to the call */
        lexstate back = lex_save(p);
        lex_restore(p, d->body);
        rc = run_def(p, d, &fr);
        lex_restore(p, back);
    }
    scope_free(&fr);
    if (rc) {
        aj_diag_call(p->d, d->name, line, col);
        return -1;
    }
    p->depth--;
    e->n = d->res.n;
    memcpy(e->v, p->result, sizeof(int) * (size_t)d->res.n);
    snprintf(e->what, sizeof e->what, "%s", d->name);
    return 0;
}

static pdef *find_def(const parser *p, const char *name) {
    for (int i = 0; i < p->ndef; i++)
        if (!strcmp(p->defs[i].name, name)) return &p->defs[i];
    return NULL;
}

/* NAME(args...): an op, an extern op or a def; the name is read already. */
static int parse_call(parser *p, const char *name, int line, int col, expr *e) {
    pdef *d = find_def(p, name);
    if (d) return call_def(p, d, line, col, e);
    if (!strcmp(name, "recurrence"))
        return aj_error(p->d, line, col, "recurrence is a statement of its own: `a, b = recurrence(steps=T) { ... }`");
    int ext = aj_extern_index(p->m, name);   /* a declared extern op, called by its name */
    aj_op op = ext >= 0 ? AJ_OP_EXTERN : aj_op_lookup(name);
    if (op == AJ_OP_COUNT || (op == AJ_OP_EXTERN && ext < 0)) return unknown_op(p, name, line, col);
    const aj_op_def *def = aj_op_info(op);
    call_args a;
    if (enter(p, line, col) || parse_args(p, def, ext, name, line, col, &a)) return -1;
    p->depth--;
    int min_in = def->min_in, max_in = def->max_in, nout = def->nout;
    if (ext >= 0) {   /* f(x_1..x_k) -> y; its gradient f(x_1..x_k, dy, grad=1) -> dx_1..dx_k */
        int grad = a.proto.attr[1].i != 0;
        if (a.proto.attr[1].i != grad) return aj_error(p->d, line, col, "%s: grad must be 0 or 1", name);
        min_in = max_in = p->m->ext[ext].nin + grad;
        nout = grad ? p->m->ext[ext].nin : 1;
    }
    if (a.nin < min_in || a.nin > max_in) {
        if (min_in == max_in)
            return aj_error(p->d, line, col, "%s takes %d input%s, got %d", name, min_in, min_in == 1 ? "" : "s", a.nin);
        return aj_error(p->d, line, col, "%s takes %d to %d inputs, got %d", name, min_in, max_in, a.nin);
    }
    int id = emit(p, op, a.in, a.in_col, a.nin, nout, line, col);
    if (id < 0) return -1;
    aj_node *n = &p->sc->g->node[id];
    memcpy(n->attr, a.proto.attr, sizeof n->attr);
    e->n = nout;
    memcpy(e->v, n->out, sizeof(int) * (size_t)nout);
    snprintf(e->what, sizeof e->what, "%s", name);
    return 0;
}

/* primary := NUMBER | NAME | NAME '(' args ')' | '(' expr ')' */
static int parse_primary(parser *p, expr *e) {
    int line = p->tok.line, col = p->tok.col;
    e->n = 1, e->bare = 0, e->line = line, e->col = col;
    if (tok_punct(p, '(')) {
        if (enter(p, line, col) || next(p) || parse_expr(p, e)) return -1;
        p->depth--;
        e->line = line, e->col = col;
        return expect_punct(p, ')');
    }
    if (p->tok.kind == T_NUM) {
        double x;
        return parse_float(p, &x) || emit_literal(p, x, line, col, e);
    }
    if (p->tok.kind == T_NAME) {
        char name[64];
        if (take_name(p, name, sizeof name, "a value")) return -1;
        if (tok_punct(p, '(')) return parse_call(p, name, line, col, e);
        if ((e->v[0] = lookup(p, p->sc, name, line, col)) < 0) return -1;
        e->bare = 1;
        snprintf(e->what, sizeof e->what, "%.60s", name);
        return 0;
    }
    return expected(p, "a value, a number, a call or '('");
}

/* unary := '-' unary | primary; `-2` is the literal -2, as printed */
static int parse_unary(parser *p, expr *e) {
    if (!tok_punct(p, '-')) return parse_primary(p, e);
    int line = p->tok.line, col = p->tok.col;
    if (enter(p, line, col) || next(p)) return -1;
    if (p->tok.kind == T_NUM) {
        double x;
        e->n = 1, e->bare = 0, e->line = line, e->col = col;
        if (parse_float(p, &x) || emit_literal(p, -x, line, col, e)) return -1;
    } else if (parse_unary(p, e) || apply(p, AJ_OP_NEG, e, NULL, line, col)) {
        return -1;
    }
    e->line = line, e->col = col;
    p->depth--;
    return 0;
}

/* term := unary { ('*' | '/' | '@') unary }; expr := term { ('+' | '-') term }
 * a * b is mul, a / b div, a @ b matmul, a + b add, a - b sub. */
static int parse_term(parser *p, expr *e) {
    if (parse_unary(p, e)) return -1;
    while (tok_punct(p, '*') || tok_punct(p, '/') || tok_punct(p, '@')) {
        char c = p->tok.c;
        int line = p->tok.line, col = p->tok.col;
        expr r;
        if (next(p) || parse_unary(p, &r)) return -1;
        if (apply(p, c == '*' ? AJ_OP_MUL : c == '/' ? AJ_OP_DIV : AJ_OP_MATMUL, e, &r, line, col)) return -1;
    }
    return 0;
}

static int parse_expr(parser *p, expr *e) {
    if (parse_term(p, e)) return -1;
    while (tok_punct(p, '+') || tok_punct(p, '-')) {
        char c = p->tok.c;
        int line = p->tok.line, col = p->tok.col;
        expr r;
        if (next(p) || parse_term(p, &r)) return -1;
        if (apply(p, c == '+' ? AJ_OP_ADD : AJ_OP_SUB, e, &r, line, col)) return -1;
    }
    return 0;
}

/* An expression whose one value a carry, slice, next or stack line names. */
static int parse_value(parser *p, int *v) {
    expr e;
    if (parse_expr(p, &e) || need_one(p, &e)) return -1;
    *v = e.v[0];
    return 0;
}

/* names '=' ... : the left-hand side of a statement */
static int parse_lhs(parser *p, lhs_list *lhs) {
    memset(lhs, 0, sizeof *lhs);
    for (;;) {
        if (lhs_grow(p, lhs)) return -1;
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

static int parse_body(parser *p, scope *outer, const lhs_list *lhs, int opline, int opcol, aj_attr *attrs);

/* `a, b = recurrence(steps=T, ...) { body }`, after the names */
static int parse_recurrence(parser *p, const lhs_list *lhs) {
    int line = p->tok.line, col = p->tok.col;
    call_args a;
    if (next(p) || parse_args(p, aj_op_info(AJ_OP_RECURRENCE), -1, "recurrence", line, col, &a)) return -1;
    if (a.nin) return aj_error(p->d, a.in_line[0], a.in_col[0], "recurrence takes no inputs: declare them in its body with carry, slice and use");
    if (!tok_punct(p, '{')) return expected(p, "'{' to open the recurrence body");
    if (enter(p, line, col) || next(p) || parse_body(p, p->sc, lhs, line, col, a.proto.attr)) return -1;
    p->depth--;
    return 0;
}

/* what follows lhs '=': expr  |  recurrence(...) { ... } */
static int parse_rhs(parser *p, const lhs_list *lhs) {
    if (tok_is(p, "recurrence") && name_then(p, '(')) {
        if (parse_recurrence(p, lhs)) return -1;
        return expect_nl(p);
    }
    expr e;
    if (parse_expr(p, &e)) return -1;
    if (tok_punct(p, '{')) return aj_error(p->d, p->tok.line, p->tok.col, "only recurrence has a body");
    if (e.bare)
        return aj_error(p->d, lhs->line[0], lhs->col[0], "'%s = %s' computes nothing: use '%s' itself", lhs->name[0],
                        p->sc->g->val[e.v[0]].name, p->sc->g->val[e.v[0]].name);
    if (lhs->n != e.n)
        return aj_error(p->d, lhs->line[0], lhs->col[0], "%s gives %d result%s, but %d name%s assigned", e.what, e.n,
                        e.n == 1 ? "" : "s", lhs->n, lhs->n == 1 ? " is" : "s are");
    for (int i = 0; i < lhs->n; i++)
        if (define(p, p->sc, e.v[i], lhs->name[i], lhs->line[i], lhs->col[i])) return -1;
    return expect_nl(p);
}

/* lhs '=' expr  |  lhs '=' recurrence(...) { ... } */
static int parse_stmt(parser *p) {
    lhs_list lhs;
    int rc = parse_lhs(p, &lhs) || parse_rhs(p, &lhs) ? -1 : 0;
    lhs_free(&lhs);
    return rc;
}

/* The body of a recurrence, after '{' and up to its '}'. Builds the body
 * graph, then the recurrence node in the outer scope. */
static int parse_body(parser *p, scope *outer, const lhs_list *lhs, int opline, int opcol, aj_attr *attrs) {
    if (expect_nl(p)) return -1;
    scope body;
    memset(&body, 0, sizeof body);
    body.g = aj_graph_new("body");
    body.parent = outer;
    body.home = &body;
    body.site = outer->site;
    body.g->line = opline;
    p->sc = &body;
    /* per carry: its next value (-1 until its `next` line) and that line;
     * per stacked output: the value, its axis and line */
    ivec next_of = {0}, next_line = {0}, next_col = {0}, stack_val = {0}, stack_axis = {0}, stack_line = {0}, stack_col = {0};
    aj_recur *rec = NULL;
    int rc = -1, *in = NULL;
    for (;;) {
        while (p->tok.kind == T_NL)
            if (next(p)) goto out;
        int line = p->tok.line, col = p->tok.col;
        if (p->tok.kind == T_EOF) {
            aj_error(p->d, line, col, "recurrence body opened at line %d has no closing '}'", opline);
            goto out;
        }
        /* a forgotten '}' shows up as the fn's `end` (or the next section) */
        if (tok_is(p, "end") || tok_is(p, "fn") || tok_is(p, "def") || tok_is(p, "dim") || tok_is(p, "param") ||
            tok_is(p, "extern")) {
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
            int ov;
            p->sc = outer;   /* the initial value or the sequence is computed outside */
            int bad = parse_value(p, &ov);
            p->sc = &body;
            if (bad) goto out;
            if (is_carry) {
                int v = aj_graph_add_value(body.g, name, AJ_VAL_CARRY, -1, body.carry_leaf.n);
                body.g->val[v].line = nline, body.g->val[v].col = ncol;
                if (ivec_push(p, &body.carry_init, ov) || ivec_push(p, &body.carry_leaf, v) || ivec_push(p, &next_of, -1) ||
                    ivec_push(p, &next_line, 0) || ivec_push(p, &next_col, 0))
                    goto out;
            } else {
                int axis;
                if (parse_axis_clause(p, &axis)) goto out;
                int v = aj_graph_add_value(body.g, name, AJ_VAL_SLICE, -1, body.slice_leaf.n);
                body.g->val[v].line = nline, body.g->val[v].col = ncol;
                if (ivec_push(p, &body.slice_axis, axis) || ivec_push(p, &body.slice_seq, ov) ||
                    ivec_push(p, &body.slice_leaf, v))
                    goto out;
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
            for (int i = 0; i < body.carry_leaf.n; i++)
                if (!strcmp(body.g->val[body.carry_leaf.v[i]].name, name)) k = i;
            if (k < 0) {
                aj_error(p->d, nline, ncol, "'%s' is not a carry of this recurrence", name);
                goto out;
            }
            if (next_of.v[k] >= 0) {
                aj_error(p->d, line, col, "carry '%s' has two 'next' lines", name);
                goto out;
            }
            if (expect_punct(p, '=') || parse_value(p, &next_of.v[k])) goto out;
            next_line.v[k] = line, next_col.v[k] = col;
            if (expect_nl(p)) goto out;
        } else if (tok_is(p, "stack")) {
            if (next(p)) goto out;
            int v, axis;
            if (parse_value(p, &v) || parse_axis_clause(p, &axis)) goto out;
            if (ivec_push(p, &stack_val, v) || ivec_push(p, &stack_axis, axis) || ivec_push(p, &stack_line, line) ||
                ivec_push(p, &stack_col, col))
                goto out;
            if (expect_nl(p)) goto out;
        } else {
            if (parse_stmt(p)) goto out;
            p->sc = &body;
        }
    }
    int ncarry = body.carry_leaf.n, nslice = body.slice_leaf.n, nstack = stack_val.n;
    for (int k = 0; k < ncarry; k++)
        if (next_of.v[k] < 0) {
            const aj_value *v = &body.g->val[body.carry_leaf.v[k]];
            aj_error(p->d, v->line, v->col, "carry '%s' has no 'next' line", v->name);
            goto out;
        }
    if (lhs->n != ncarry + nstack) {
        aj_error(p->d, lhs->line[0], lhs->col[0],
                 "recurrence gives %d result%s (%d carr%s, %d stacked), but %d name%s assigned",
                 ncarry + nstack, ncarry + nstack == 1 ? "" : "s", ncarry,
                 ncarry == 1 ? "y" : "ies", nstack, lhs->n, lhs->n == 1 ? " is" : "s are");
        goto out;
    }
    /* leaves in canonical order: carries, slices, uses; results: nexts, stacks */
    aj_graph *g = body.g;
    int nuse = body.use_leaf.n, nin = 0;
    g->nleaf = ncarry + nslice + nuse;
    g->leaf = malloc(sizeof(int) * (size_t)(g->nleaf ? g->nleaf : 1));
    g->nresult = ncarry + nstack;
    g->result = malloc(sizeof(int) * (size_t)(g->nresult ? g->nresult : 1));
    in = malloc(sizeof(int) * (size_t)(g->nleaf ? g->nleaf : 1));
    if (!g->leaf || !g->result || !in) {
        aj_error(p->d, opline, opcol, "out of memory");
        goto out;
    }
    for (int i = 0; i < ncarry; i++) g->leaf[nin] = body.carry_leaf.v[i], in[nin++] = body.carry_init.v[i];
    for (int i = 0; i < nslice; i++) g->leaf[nin] = body.slice_leaf.v[i], in[nin++] = body.slice_seq.v[i];
    for (int i = 0; i < nuse; i++) g->leaf[nin] = body.use_leaf.v[i], in[nin++] = body.use_outer.v[i];
    for (int i = 0; i < ncarry; i++) g->result[i] = next_of.v[i];
    for (int i = 0; i < nstack; i++) g->result[ncarry + i] = stack_val.v[i];
    rec = aj_recur_new(ncarry, nslice, nuse, nstack);
    if (nslice) memcpy(rec->slice_axis, body.slice_axis.v, sizeof(int) * (size_t)nslice);
    if (nstack) memcpy(rec->stack_axis, stack_axis.v, sizeof(int) * (size_t)nstack);
    for (int i = 0; i < ncarry; i++) rec->res_line[i] = next_line.v[i], rec->res_col[i] = next_col.v[i];
    for (int i = 0; i < nstack; i++) rec->res_line[ncarry + i] = stack_line.v[i], rec->res_col[ncarry + i] = stack_col.v[i];
    p->sc = outer;
    int id = emit(p, AJ_OP_RECURRENCE, in, NULL, nin, lhs->n, opline, opcol);
    if (id < 0) goto out;
    aj_node *n = &outer->g->node[id];
    memcpy(n->attr, attrs, sizeof n->attr);
    n->rec = rec;
    rec->body = body.g;
    body.g->end_line = p->tok.line;
    rec = NULL, body.g = NULL;
    rc = 0;
    for (int i = 0; !rc && i < lhs->n; i++)
        rc = define(p, outer, outer->g->node[id].out[i], lhs->name[i], lhs->line[i], lhs->col[i]);
out:
    p->sc = outer;
    aj_recur_free(rec);
    free(in);
    free(next_of.v), free(next_line.v), free(next_col.v);
    free(stack_val.v), free(stack_axis.v), free(stack_line.v), free(stack_col.v);
    aj_graph_free(body.g);
    scope_free(&body);
    return rc;
}

/* Statements up to `end` (left as the current token), in the current scope. */
static int parse_block(parser *p, const char *kind, const char *name, int line) {
    for (;;) {
        while (p->tok.kind == T_NL)
            if (next(p)) return -1;
        if (p->tok.kind == T_EOF) return aj_error(p->d, p->tok.line, p->tok.col, "%s '%s' (line %d) has no 'end'", kind, name, line);
        if (tok_is(p, "end")) return 0;
        if (tok_is(p, "carry") || tok_is(p, "slice") || tok_is(p, "use") || tok_is(p, "next") || tok_is(p, "stack")) {
            char buf[64];
            return aj_error(p->d, p->tok.line, p->tok.col, "%s only belongs in a recurrence body", tok_desc(&p->tok, buf, sizeof buf));
        }
        if (tok_is(p, "fn") || tok_is(p, "def") || tok_is(p, "dim") || tok_is(p, "param") || tok_is(p, "extern"))
            return aj_error(p->d, p->tok.line, p->tok.col, "%s '%s' (line %d) has no 'end' before this line", kind, name, line);
        if (parse_stmt(p)) return -1;
    }
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

/* The keys of a recipe: arjit train's flags without "--", '_' for '-'
 * (docs/training.md), and what each takes: a number, a name, or a dataset
 * spec (a string, or a name). Ranges are train's to check. */
static const struct { const char *key; char kind; } recipe_keys[] = {
    {"data", 's'}, {"epochs", 'n'}, {"batch", 'n'}, {"opt", 'w'}, {"lr", 'n'}, {"momentum", 'n'},
    {"beta1", 'n'}, {"beta2", 'n'}, {"rho", 'n'}, {"eps", 'n'}, {"weight_decay", 'n'}, {"clip", 'n'},
    {"schedule", 'w'}, {"step_epochs", 'n'}, {"gamma", 'n'}, {"seed", 'n'}, {"max_steps", 'n'},
    {"patience", 'n'}, {"valid_examples", 'n'},
};
#define NRECIPE_KEYS ((int)(sizeof recipe_keys / sizeof recipe_keys[0]))

static int unknown_setting(parser *p, const char *key, int line, int col) {
    const char *best = NULL;
    int bd = 3;
    for (int i = 0; i < NRECIPE_KEYS; i++) {
        int dd = edit_distance(key, recipe_keys[i].key);
        if (dd < bd) bd = dd, best = recipe_keys[i].key;
    }
    if (best) return aj_error(p->d, line, col, "unknown recipe setting '%s' (did you mean '%s'?)", key, best);
    return aj_error(p->d, line, col, "unknown recipe setting '%s' (the settings are train's flags: docs/training.md)", key);
}

/* recipe NL (key = value NL)* end: the defaults of `arjit train`. */
static int parse_recipe(parser *p) {
    int line = p->tok.line;
    if (p->m->recipe_line)
        return aj_error(p->d, line, p->tok.col, "a second recipe (the first is at line %d)", p->m->recipe_line);
    p->m->recipe_line = line;
    if (next(p) || expect_nl(p)) return -1;
    for (;;) {
        while (p->tok.kind == T_NL)
            if (next(p)) return -1;
        if (p->tok.kind == T_EOF) return aj_error(p->d, p->tok.line, p->tok.col, "recipe (line %d) has no 'end'", line);
        if (tok_is(p, "end")) return next(p) || expect_nl(p) ? -1 : 0;
        char key[64];
        int kline = p->tok.line, kcol = p->tok.col;
        if (take_name(p, key, sizeof key, "a setting (lr = 1e-3) or 'end'")) return -1;
        int k = 0;
        while (k < NRECIPE_KEYS && strcmp(key, recipe_keys[k].key)) k++;
        if (k == NRECIPE_KEYS) return unknown_setting(p, key, kline, kcol);
        const aj_setting *was = aj_recipe_get(p->m, key);
        if (was) return aj_error(p->d, kline, kcol, "recipe sets '%s' twice (first at line %d)", key, was->line);
        if (expect_punct(p, '=')) return -1;
        char kind = recipe_keys[k].kind;
        token t = p->tok;
        if (kind == 'n' ? t.kind != T_NUM : kind == 'w' ? t.kind != T_NAME : t.kind != T_NAME && t.kind != T_STR)
            return expected(p, kind == 'n' ? "a number" : kind == 'w' ? "a name" : "a dataset spec (\"mnist-bin\")");
        int is_str = t.kind == T_STR;
        if (is_str && t.len == 2) return aj_error(p->d, t.line, t.col, "empty %s", key);
        aj_setting *ns = realloc(p->m->recipe, sizeof *ns * (size_t)(p->m->nrecipe + 1));
        if (!ns) return aj_error(p->d, t.line, t.col, "out of memory");
        p->m->recipe = ns;
        ns[p->m->nrecipe++] = (aj_setting){strdup(key), strndup(t.s + is_str, (size_t)(t.len - 2 * is_str)), is_str,
                                           t.line, t.col};
        if (next(p) || expect_nl(p)) return -1;
    }
}

/* `) -> r1, r2, ...` closing a def's or fn's header: the result names */
static int parse_results(parser *p, lhs_list *res, const char *what) {
    if (next(p)) return -1;
    if (p->tok.kind != T_ARROW) {
        char buf[40];
        snprintf(buf, sizeof buf, "'->' and the %s's results", what);
        return expected(p, buf);
    }
    if (next(p)) return -1;
    for (;;) {
        if (lhs_grow(p, res) || take_name(p, res->name[res->n], sizeof res->name[0], "a result name")) return -1;
        res->n++;
        if (!tok_punct(p, ',')) return 0;
        if (next(p)) return -1;
    }
}

/* def NAME(a, b, ...) -> r, ...  NL statements 'end'. The body is checked
 * once here (syntax and names, in a scratch graph) and parsed again at every
 * call, where its shapes are checked. */
static int parse_def(parser *p) {
    pdef d;
    memset(&d, 0, sizeof d);
    d.line = p->tok.line;
    if (next(p)) return -1;
    d.col = p->tok.col;
    int line = p->tok.line, col = p->tok.col, rc = -1;
    if (take_name(p, d.name, sizeof d.name, "a def name")) return -1;
    if (is_keyword(d.name)) return aj_error(p->d, line, col, "'%s' is a keyword and cannot name a def", d.name);
    if (aj_op_lookup(d.name) != AJ_OP_COUNT || aj_extern_index(p->m, d.name) >= 0)
        return aj_error(p->d, line, col, "'%s' is already an op", d.name);
    if (find_def(p, d.name)) return aj_error(p->d, line, col, "def '%s' is already defined", d.name);
    if (aj_module_fn(p->m, d.name)) return aj_error(p->d, line, col, "'%s' is already a fn", d.name);
    scope fr;
    memset(&fr, 0, sizeof fr);
    fr.g = aj_graph_new(d.name);
    fr.home = &fr, fr.def = &d;
    int nsite = p->m->nsite;
    long inlined = p->inlined;
    if (expect_punct(p, '(')) goto out;
    while (!tok_punct(p, ')')) {
        int aline = p->tok.line, acol = p->tok.col;
        char an[64];
        if (take_name(p, an, sizeof an, "an argument name") || check_new_name(p, &fr, an, aline, acol)) goto out;
        if (d.narg == 64) {
            aj_error(p->d, aline, acol, "too many arguments (at most 64)");
            goto out;
        }
        char (*na)[64] = realloc(d.arg, sizeof *na * (size_t)(d.narg + 1));
        if (!na) {
            aj_error(p->d, aline, acol, "out of memory");
            goto out;
        }
        d.arg = na;
        memcpy(d.arg[d.narg], an, sizeof an);
        /* checking the body: each argument a leaf of unknown type */
        int v = aj_graph_add_value(fr.g, an, AJ_VAL_INPUT, -1, d.narg++);
        if (bind_name(p, &fr, an, v, aline)) goto out;
        if (expect_sep(p, ')')) goto out;
    }
    if (parse_results(p, &d.res, "def")) goto out;
    if (d.res.n > 16) {
        aj_error(p->d, d.res.line[16], d.res.col[16], "too many results (a def returns at most 16)");
        goto out;
    }
    if (expect_nl(p)) goto out;
    d.body = lex_save(p);
    if (run_def(p, &d, &fr) || next(p) || expect_nl(p)) goto out;
    pdef *nd = realloc(p->defs, sizeof *nd * (size_t)(p->ndef + 1));
    if (!nd) {
        aj_error(p->d, line, col, "out of memory");
        goto out;
    }
    p->defs = nd;
    p->defs[p->ndef++] = d;
    d.arg = NULL;
    memset(&d.res, 0, sizeof d.res);   /* both owned by p->defs now */
    rc = 0;
out:
    /* the check's calls and ops made nothing that stays */
    for (int i = nsite; i < p->m->nsite; i++) free(p->m->site[i].def);
    p->m->nsite = nsite;
    p->inlined = inlined;
    free(d.arg);
    lhs_free(&d.res);
    aj_graph_free(fr.g);
    scope_free(&fr);
    p->sc = NULL;
    return rc;
}

static int parse_fn(parser *p) {
    int fline = p->tok.line;
    if (next(p)) return -1;
    char name[64];
    int line = p->tok.line, col = p->tok.col;
    if (take_name(p, name, sizeof name, "a function name")) return -1;
    if (aj_module_fn(p->m, name)) return aj_error(p->d, line, col, "fn '%s' is already defined", name);
    if (find_def(p, name)) return aj_error(p->d, line, col, "'%s' is already a def", name);
    scope fs;
    memset(&fs, 0, sizeof fs);
    fs.home = &fs;
    fs.g = aj_graph_new(name);
    fs.g->line = fline;
    p->sc = &fs;
    aj_type *args = NULL;   /* any number of arguments and results */
    int nargs = 0, rc = -1;
    lhs_list res = {0};
    if (expect_punct(p, '(')) goto out;
    while (!tok_punct(p, ')')) {
        char an[64];
        int aline = p->tok.line, acol = p->tok.col;
        if (take_name(p, an, sizeof an, "an argument name") || check_new_name(p, &fs, an, aline, acol)) goto out;
        aj_type *na = realloc(args, sizeof *na * (size_t)(nargs + 1));
        if (!na) {
            aj_error(p->d, aline, acol, "out of memory");
            goto out;
        }
        args = na;
        if (expect_punct(p, ':') || parse_type(p, &args[nargs])) goto out;
        int v = aj_graph_add_value(fs.g, an, AJ_VAL_INPUT, -1, nargs);
        fs.g->val[v].line = aline, fs.g->val[v].col = acol;
        nargs++;
        if (expect_sep(p, ')')) goto out;
    }
    if (parse_results(p, &res, "fn") || expect_nl(p) || parse_block(p, "fn", name, fline)) goto out;
    fs.g->end_line = p->tok.line;
    if (next(p) || expect_nl(p)) goto out;
    fs.g->nleaf = nargs;
    fs.g->leaf = malloc(sizeof(int) * (size_t)(nargs ? nargs : 1));
    for (int i = 0; i < nargs; i++) fs.g->leaf[i] = i;   /* args are the fn's first values */
    fs.g->nresult = res.n;
    fs.g->result = malloc(sizeof(int) * (size_t)res.n);
    for (int i = 0; i < res.n; i++) {
        int v = lookup(p, &fs, res.name[i], res.line[i], res.col[i]);
        if (v < 0) goto out;
        fs.g->result[i] = v;
    }
    aj_graph **nf = realloc(p->m->fn, sizeof *nf * (size_t)(p->m->nfn + 1));
    aj_type **nt = realloc(p->m->fn_arg_type, sizeof *nt * (size_t)(p->m->nfn + 1));
    if (nf) p->m->fn = nf;
    if (nt) p->m->fn_arg_type = nt;
    if (!nf || !nt || (!args && !(args = malloc(sizeof *args)))) {
        aj_error(p->d, line, col, "out of memory");
        goto out;
    }
    p->m->fn[p->m->nfn] = fs.g;
    p->m->fn_arg_type[p->m->nfn++] = args;
    fs.g = NULL, args = NULL;
    rc = 0;
out:
    free(args);
    lhs_free(&res);
    aj_graph_free(fs.g);
    scope_free(&fs);
    p->sc = NULL;
    return rc;
}

static void defs_free(parser *p) {
    for (int i = 0; i < p->ndef; i++) free(p->defs[i].arg), lhs_free(&p->defs[i].res);
    free(p->defs);
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
        else if (tok_is(&p, "def")) r = parse_def(&p);
        else if (tok_is(&p, "recipe")) r = parse_recipe(&p);
        else r = expected(&p, "'dim', 'param', 'extern', 'def', 'fn' or 'recipe' at the start of a line");
        if (r) goto fail;
    }
    if (m->nfn == 0) {
        aj_error(d, p.tok.line, p.tok.col, "no fn in this file (a model declares at least 'fn loglik')");
        goto fail;
    }
    defs_free(&p);
    return m;
fail:
    defs_free(&p);
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
