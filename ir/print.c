/* The printer: aj_module -> canonical graph-file text.
 *
 * The output parses back to the same module, and printing that again gives
 * the same text (tests/test_parse.c checks this for every model file).
 * Canonical means: one blank line between sections, two-space indents,
 * attributes only where they differ from the op's default, and scalar
 * constants that came from literal numbers written back inline. */
#include "arjit.h"
#include <stdlib.h>
#include <string.h>

/* Shortest text that reads back as the same double. */
static void fmt_num(double v, char *buf, size_t n) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    /* keep it recognisably a number for the parser: "1e-05" and "3" are fine */
}

/* A scalar constant with a generated name, used only as an op's input, is
 * a literal written inline (as the parser made it from a number). */
static int is_literal(const aj_graph *g, int v) {
    const aj_value *x = &g->val[v];
    if (x->kind != AJ_VAL_NODE) return 0;
    const aj_node *n = &g->node[x->node];
    if (n->op != AJ_OP_CONSTANT || n->attr[1].n != 0 || x->name[0] != '_' || x->name[1] < '0' || x->name[1] > '9')
        return 0;
    for (int i = 0; i < g->nresult; i++)
        if (g->result[i] == v) return 0;
    for (int i = 0; i < g->nnode; i++)
        if (g->node[i].op == AJ_OP_RECURRENCE)
            for (int k = 0; k < g->node[i].nin; k++)
                if (g->node[i].in[k] == v) return 0;
    return 1;
}

static void print_dims(FILE *f, const aj_module *m, const aj_dim *dims, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        aj_dim_print(f, m, dims[i]);
    }
    fputc(']', f);
}

static void print_type(FILE *f, const aj_module *m, const aj_type *t) {
    fputs(t->dtype == AJ_F32 ? "f32" : "i32", f);
    print_dims(f, m, t->dim, t->rank);
}

static int attr_is_default(const aj_attr_spec *s, const aj_attr *a) {
    if (s->required || !s->dflt) return 0;
    switch (s->kind) {
    case AJ_ATTR_INT: return a->i == strtoll(s->dflt, NULL, 10);
    case AJ_ATTR_FLOAT: return a->f == strtod(s->dflt, NULL);
    case AJ_ATTR_DIM: return aj_dim_eq(a->dims[0], aj_dim_const(strtoll(s->dflt, NULL, 10)));
    case AJ_ATTR_SHAPE: case AJ_ATTR_INTS: return a->n == 0;
    case AJ_ATTR_WORD: return !strcmp(s->words[a->i], s->dflt);
    }
    return 0;
}

static void print_attr(FILE *f, const aj_module *m, const aj_attr_spec *s, const aj_attr *a) {
    char buf[64];
    fprintf(f, "%s=", s->name);
    switch (s->kind) {
    case AJ_ATTR_INT: fprintf(f, "%lld", (long long)a->i); break;
    case AJ_ATTR_FLOAT: fmt_num(a->f, buf, sizeof buf); fputs(buf, f); break;
    case AJ_ATTR_DIM: aj_dim_print(f, m, a->dims[0]); break;
    case AJ_ATTR_SHAPE: print_dims(f, m, a->dims, a->n); break;
    case AJ_ATTR_INTS:
        fputc('[', f);
        for (int i = 0; i < a->n; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)a->ints[i]);
        fputc(']', f);
        break;
    case AJ_ATTR_WORD: fputs(s->words[a->i], f); break;
    }
}

static void indent(FILE *f, int depth) {
    for (int i = 0; i < depth; i++) fputs("  ", f);
}

static void print_graph_body(FILE *f, const aj_module *m, const aj_graph *g, int depth);

/* An input as written: a value name or an inline literal. */
static void print_input(FILE *f, const aj_graph *g, int v) {
    if (is_literal(g, v)) {
        char buf[64];
        fmt_num(g->node[g->val[v].node].attr[0].f, buf, sizeof buf);
        fputs(buf, f);
    } else {
        fputs(g->val[v].name, f);
    }
}

/* An extern call is written with the extern's name, which stands for its
 * `fn` attribute (the first): the attributes to print start after it. */
static const char *call_name(const aj_module *m, const aj_node *n, int *first_attr) {
    int64_t fn = n->op == AJ_OP_EXTERN ? n->attr[0].i : -1;
    *first_attr = fn >= 0 && fn < m->nextern;
    return *first_attr ? m->ext[fn].name : aj_op_info(n->op)->name;
}

static void print_node(FILE *f, const aj_module *m, const aj_graph *g, const aj_node *n, int depth) {
    const aj_op_def *def = aj_op_info(n->op);
    int first_attr;
    const char *name = call_name(m, n, &first_attr);
    indent(f, depth);
    for (int k = 0; k < n->nout; k++) fprintf(f, "%s%s", k ? ", " : "", g->val[n->out[k]].name);
    fprintf(f, " = %s(", name);
    int first = 1;
    if (n->op != AJ_OP_RECURRENCE)
        for (int i = 0; i < n->nin; i++, first = 0) {
            if (!first) fputs(", ", f);
            print_input(f, g, n->in[i]);
        }
    for (int i = first_attr; i < def->nattr; i++) {
        if (attr_is_default(&def->attr[i], &n->attr[i])) continue;
        if (!first) fputs(", ", f);
        print_attr(f, m, &def->attr[i], &n->attr[i]);
        first = 0;
    }
    fputc(')', f);
    if (n->op != AJ_OP_RECURRENCE) {
        fputc('\n', f);
        return;
    }
    const aj_recur *r = n->rec;
    const aj_graph *b = r->body;
    fputs(" {\n", f);
    int k = 0;
    for (int c = 0; c < r->ncarry; c++, k++) {
        indent(f, depth + 1);
        fprintf(f, "carry %s = %s\n", b->val[b->leaf[k]].name, g->val[n->in[k]].name);
    }
    for (int s = 0; s < r->nslice; s++, k++) {
        indent(f, depth + 1);
        fprintf(f, "slice %s = %s, axis=%d\n", b->val[b->leaf[k]].name, g->val[n->in[k]].name, r->slice_axis[s]);
    }
    for (int u = 0; u < r->nuse; u++, k++) {
        indent(f, depth + 1);
        const char *inner = b->val[b->leaf[k]].name, *outer = g->val[n->in[k]].name;
        if (strcmp(inner, outer)) fprintf(f, "use %s = %s\n", inner, outer);
        else fprintf(f, "use %s\n", inner);
    }
    print_graph_body(f, m, b, depth + 1);
    for (int c = 0; c < r->ncarry; c++) {
        indent(f, depth + 1);
        fprintf(f, "next %s = %s\n", b->val[b->leaf[c]].name, b->val[b->result[c]].name);
    }
    for (int j = 0; j < r->nstack; j++) {
        indent(f, depth + 1);
        fprintf(f, "stack %s, axis=%d\n", b->val[b->result[r->ncarry + j]].name, r->stack_axis[j]);
    }
    indent(f, depth);
    fputs("}\n", f);
}

static void print_graph_body(FILE *f, const aj_module *m, const aj_graph *g, int depth) {
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        if (n->nout == 1 && is_literal(g, n->out[0])) continue;
        print_node(f, m, g, n, depth);
    }
}

void aj_module_print(const aj_module *m, FILE *f) {
    for (int i = 0; i < m->ndim; i++) {
        if (m->dim[i].has_value) fprintf(f, "dim %s = %lld\n", m->dim[i].name, (long long)m->dim[i].value);
        else fprintf(f, "dim %s\n", m->dim[i].name);
    }
    if (m->nparam) fputc('\n', f);
    for (int i = 0; i < m->nparam; i++) {
        const aj_param *p = &m->param[i];
        char a[64], b[64];
        fprintf(f, "param %s : ", p->name);
        print_type(f, m, &p->type);
        fmt_num(p->a, a, sizeof a);
        fmt_num(p->b, b, sizeof b);
        switch (p->init) {
        case AJ_INIT_ZEROS: fputs(" = zeros\n", f); break;
        case AJ_INIT_ONES: fputs(" = ones\n", f); break;
        case AJ_INIT_XAVIER: fputs(" = xavier\n", f); break;
        case AJ_INIT_NORMAL: fprintf(f, " = normal(%s)\n", a); break;
        case AJ_INIT_UNIFORM: fprintf(f, " = uniform(%s, %s)\n", a, b); break;
        }
    }
    if (m->nextern) fputc('\n', f);
    for (int i = 0; i < m->nextern; i++) {
        const aj_extern *e = &m->ext[i];
        fprintf(f, "extern %s(", e->name);
        for (int k = 0; k < e->nin; k++) fprintf(f, "%s%s", k ? ", " : "", e->arg[k]);
        fprintf(f, ") = \"%s\" %s", e->lib, e->fwd);
        if (e->grad) fprintf(f, ", grad %s", e->grad);
        fputc('\n', f);
    }
    if (m->recipe_line) fputs("\nrecipe\n", f);
    for (int i = 0; i < m->nrecipe; i++) {
        const aj_setting *st = &m->recipe[i];
        fprintf(f, st->is_str ? "  %s = \"%s\"\n" : "  %s = %s\n", st->key, st->value);
    }
    if (m->recipe_line) fputs("end\n", f);
    for (int i = 0; i < m->nfn; i++) {
        const aj_graph *g = m->fn[i];
        fprintf(f, "\nfn %s(", g->name);
        for (int k = 0; k < g->nleaf; k++) {
            fprintf(f, "%s%s : ", k ? ", " : "", g->val[g->leaf[k]].name);
            print_type(f, m, &m->fn_arg_type[i][k]);
        }
        fputs(") ->", f);
        for (int k = 0; k < g->nresult; k++) fprintf(f, "%s %s", k ? "," : "", g->val[g->result[k]].name);
        fputc('\n', f);
        print_graph_body(f, m, g, 1);
        fputs("end\n", f);
    }
}

char *aj_module_text(const aj_module *m) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    aj_module_print(m, f);
    fclose(f);
    return buf;
}
