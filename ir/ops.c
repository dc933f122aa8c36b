/* The op table (from ops.def) and attribute access by name. */
#include "arjit.h"
#include "ir/shape.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static aj_op_def table[AJ_OP_COUNT] = {
#define AJ_OP(id, nm, mi, ma, no, fl, at, shp) \
    [AJ_OP_##id] = {.name = nm, .min_in = mi, .max_in = ma, .nout = no, .flags = fl, .attr_src = at, .shape = aj_##shp},
#include "ops.def"
#undef AJ_OP
};

/* Parse "name:kind[=default] ..." once into table[op].attr. The spec strings
 * are ours, so a malformed one is a programming error caught by the tests. */
static void parse_spec(aj_op_def *def) {
    static char pool[8192];   /* word lists and defaults point into this */
    static size_t used;
    const char *s = def->attr_src;
    while (*s) {
        while (*s == ' ') s++;
        if (!*s) break;
        aj_attr_spec *a = &def->attr[def->nattr++];
        size_t k = 0;
        while (*s && *s != ':' && k + 1 < sizeof a->name) a->name[k++] = *s++;
        a->name[k] = 0;
        s++;   /* ':' */
        const char *kind = s;
        while (*s && *s != ' ' && *s != '=' && *s != '(') s++;
        size_t kl = (size_t)(s - kind);
        static const struct { const char *w; aj_attr_kind k; } kinds[] = {
            {"int", AJ_ATTR_INT}, {"float", AJ_ATTR_FLOAT}, {"dim", AJ_ATTR_DIM},
            {"shape", AJ_ATTR_SHAPE}, {"ints", AJ_ATTR_INTS}, {"word", AJ_ATTR_WORD}};
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            if (strlen(kinds[i].w) == kl && !strncmp(kinds[i].w, kind, kl)) a->kind = kinds[i].k;
        if (*s == '(') {      /* word(a|b|c) */
            s++;
            while (*s && *s != ')') {
                const char *w = s;
                while (*s && *s != '|' && *s != ')') s++;
                char *dst = pool + used;
                memcpy(dst, w, (size_t)(s - w));
                dst[s - w] = 0;
                used += (size_t)(s - w) + 1;
                a->words[a->nwords++] = dst;
                if (*s == '|') s++;
            }
            if (*s == ')') s++;
        }
        a->required = *s != '=';
        if (*s == '=') {
            const char *v = ++s;
            int depth = 0;
            while (*s && (depth || *s != ' ')) depth += (*s == '[') - (*s == ']'), s++;
            char *dst = pool + used;
            memcpy(dst, v, (size_t)(s - v));
            dst[s - v] = 0;
            used += (size_t)(s - v) + 1;
            a->dflt = dst;
        }
    }
}

static void init_table(void) {
    static int done;
    if (done) return;
    for (int i = 0; i < AJ_OP_COUNT; i++) parse_spec(&table[i]);
    done = 1;
}

const aj_op_def *aj_op_info(aj_op op) {
    init_table();
    return op >= 0 && op < AJ_OP_COUNT ? &table[op] : NULL;
}

aj_op aj_op_lookup(const char *name) {
    init_table();
    for (int i = 0; i < AJ_OP_COUNT; i++)
        if (!strcmp(table[i].name, name)) return (aj_op)i;
    return AJ_OP_COUNT;
}

static int attr_index(const aj_node *n, const char *name) {
    const aj_op_def *def = aj_op_info(n->op);
    for (int i = 0; i < def->nattr; i++)
        if (!strcmp(def->attr[i].name, name)) return i;
    return -1;
}

const aj_attr *aj_attr_get(const aj_node *n, const char *name) {
    int i = attr_index(n, name);
    if (i < 0) {
        /* asking an op for an attribute it does not have is a bug in arjit */
        fprintf(stderr, "arjit: internal error: op %s has no attribute '%s'\n",
                aj_op_info(n->op)->name, name);
        abort();
    }
    return &n->attr[i];
}

int64_t aj_attr_int(const aj_node *n, const char *name) { return aj_attr_get(n, name)->i; }
double aj_attr_float(const aj_node *n, const char *name) { return aj_attr_get(n, name)->f; }
aj_dim aj_attr_dim(const aj_node *n, const char *name) { return aj_attr_get(n, name)->dims[0]; }

const char *aj_attr_word(const aj_node *n, const char *name) {
    int i = attr_index(n, name);
    const aj_attr_spec *s = &aj_op_info(n->op)->attr[i];
    const aj_attr *a = aj_attr_get(n, name);
    return a->i >= 0 && a->i < s->nwords ? s->words[a->i] : "";
}

/* Defaults are written in the spec in graph-file syntax but only ever as
 * plain numbers, words or [] / [ints], so a tiny reader does. */
void aj_node_set_defaults(aj_node *n) {
    const aj_op_def *def = aj_op_info(n->op);
    for (int i = 0; i < def->nattr; i++) {
        const aj_attr_spec *s = &def->attr[i];
        aj_attr *a = &n->attr[i];
        memset(a, 0, sizeof *a);
        a->kind = s->kind;
        if (!s->dflt) continue;
        switch (s->kind) {
        case AJ_ATTR_INT: a->i = strtoll(s->dflt, NULL, 10); break;
        case AJ_ATTR_FLOAT: a->f = strtod(s->dflt, NULL); break;
        case AJ_ATTR_DIM: a->n = 1; a->dims[0] = aj_dim_const(strtoll(s->dflt, NULL, 10)); break;
        case AJ_ATTR_SHAPE: case AJ_ATTR_INTS: a->n = 0; break;   /* only [] defaults */
        case AJ_ATTR_WORD:
            for (int w = 0; w < s->nwords; w++)
                if (!strcmp(s->words[w], s->dflt)) a->i = w;
            break;
        }
    }
}

int64_t aj_attr_dim_value(const aj_module *m, const aj_node *n, const char *name) {
    aj_dim d = aj_dim_bind(aj_attr_dim(n, name), &m->bind);
    return aj_dim_is_const(d) ? d.off : -1;
}
