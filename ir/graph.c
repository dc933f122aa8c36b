/* Graphs and modules: building, finding, freeing; dimension bindings. */
#include "arjit.h"
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "arjit: out of memory\n");
        exit(1);
    }
    return q;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

aj_graph *aj_graph_new(const char *name) {
    aj_graph *g = xrealloc(NULL, sizeof *g);
    memset(g, 0, sizeof *g);
    g->name = xstrdup(name ? name : "");
    return g;
}

/* ---------------------------------------------------------------- name index */

/* FNV-1a. */
static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int *bucket_of(const aj_graph *g, const char *name) {
    return &g->hash_head[name_hash(name) & (uint32_t)(g->nbucket - 1)];
}

/* Put value v into its chain, keeping the chain's ids decreasing. A new
 * value has the largest id and goes first, in O(1). */
static void index_link(aj_graph *g, int v) {
    int *at = bucket_of(g, g->val[v].name);
    while (*at > v) at = &g->hash_next[*at];
    g->hash_next[v] = *at;
    *at = v;
}

static void index_unlink(aj_graph *g, int v) {
    int *at = bucket_of(g, g->val[v].name);
    while (*at != v) at = &g->hash_next[*at];
    *at = g->hash_next[v];
}

/* Index every value anew in at least 2 * nval buckets (the chains average
 * half a value, so lookups take O(1) expected time). */
static void index_rebuild(aj_graph *g) {
    int nb = 16;
    while (nb < 2 * g->nval) nb *= 2;
    g->nbucket = nb;
    g->hash_head = xrealloc(g->hash_head, (size_t)nb * sizeof(int));
    for (int b = 0; b < nb; b++) g->hash_head[b] = -1;
    for (int v = 0; v < g->nval; v++) index_link(g, v);
}

int aj_graph_find(const aj_graph *g, const char *name) {
    if (!g->nbucket) return -1;
    for (int v = *bucket_of(g, name); v >= 0; v = g->hash_next[v])
        if (!strcmp(g->val[v].name, name)) return v;
    return -1;
}

/* ---------------------------------------------------------------- graphs */

void aj_graph_free(aj_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->nval; i++) free(g->val[i].name);
    for (int i = 0; i < g->nnode; i++) {
        aj_node *n = &g->node[i];
        free(n->in), free(n->in_col), free(n->out);
        aj_recur_free(n->rec);
    }
    free(g->val), free(g->node), free(g->leaf), free(g->result), free(g->name);
    free(g->hash_head), free(g->hash_next);
    free(g);
}

int aj_graph_add_value(aj_graph *g, const char *name, aj_val_kind kind, int node, int idx) {
    if (g->nval == g->capval) {
        g->capval = g->capval ? 2 * g->capval : 16;
        g->val = xrealloc(g->val, (size_t)g->capval * sizeof *g->val);
        g->hash_next = xrealloc(g->hash_next, (size_t)g->capval * sizeof(int));
    }
    aj_value *v = &g->val[g->nval];
    memset(v, 0, sizeof *v);
    char tmp[32];
    if (!name) {   /* a fresh name: _N, N counting up past any taken */
        int k = g->nval;
        do snprintf(tmp, sizeof tmp, "_%d", k++);
        while (aj_graph_find(g, tmp) >= 0);
        name = tmp;
    }
    v->name = xstrdup(name);
    v->kind = kind, v->node = node, v->idx = idx;
    int id = g->nval++;
    if (g->nval > g->nbucket / 2) index_rebuild(g);
    else index_link(g, id);
    return id;
}

int aj_graph_add_node(aj_graph *g, aj_op op, const int *in, int nin, int nout,
                      const char *const *names) {
    if (g->nnode == g->capnode) {
        g->capnode = g->capnode ? 2 * g->capnode : 16;
        g->node = xrealloc(g->node, (size_t)g->capnode * sizeof *g->node);
    }
    int id = g->nnode++;
    aj_node *n = &g->node[id];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->nin = nin;
    n->nout = nout;
    n->in = xrealloc(NULL, (size_t)nin * sizeof(int));
    n->in_col = xrealloc(NULL, (size_t)nin * sizeof(int));
    if (nin) memcpy(n->in, in, (size_t)nin * sizeof(int));
    memset(n->in_col, 0, (size_t)nin * sizeof(int));
    n->out = xrealloc(NULL, (size_t)nout * sizeof(int));
    aj_node_set_defaults(n);
    for (int k = 0; k < nout; k++) {
        int v = aj_graph_add_value(g, names ? names[k] : NULL, AJ_VAL_NODE, id, k);
        g->node[id].out[k] = v;   /* g->node is stable here: values live elsewhere */
    }
    return id;
}

aj_graph *aj_module_fn(const aj_module *m, const char *name) {
    for (int i = 0; i < m->nfn; i++)
        if (!strcmp(m->fn[i]->name, name)) return m->fn[i];
    return NULL;
}

int aj_module_param_index(const aj_module *m, const char *name) {
    for (int i = 0; i < m->nparam; i++)
        if (!strcmp(m->param[i].name, name)) return i;
    return -1;
}

int aj_extern_index(const aj_module *m, const char *name) {
    for (int i = 0; i < m->nextern; i++)
        if (!strcmp(m->ext[i].name, name)) return i;
    return -1;
}

const aj_setting *aj_recipe_get(const aj_module *m, const char *key) {
    for (int i = 0; i < m->nrecipe; i++)
        if (!strcmp(m->recipe[i].key, key)) return &m->recipe[i];
    return NULL;
}

int aj_dim_index(const aj_module *m, const char *name) {
    for (int i = 0; i < m->ndim; i++)
        if (!strcmp(m->dim[i].name, name)) return i;
    return -1;
}

void aj_module_free(aj_module *m) {
    if (!m) return;
    for (int i = 0; i < m->ndim; i++) free(m->dim[i].name);
    for (int i = 0; i < m->nparam; i++) free(m->param[i].name);
    for (int i = 0; i < m->nextern; i++) {
        aj_extern *e = &m->ext[i];
        if (e->loaded) e->unload(e->loaded);
        for (int k = 0; k < e->nin; k++) free(e->arg[k]);
        free(e->name), free(e->lib), free(e->fwd), free(e->grad);
    }
    for (int i = 0; i < m->nfn; i++) aj_graph_free(m->fn[i]), free(m->fn_arg_type[i]);
    for (int i = 0; i < m->nsite; i++) free(m->site[i].def);
    for (int i = 0; i < m->nrecipe; i++) free(m->recipe[i].key), free(m->recipe[i].value);
    free(m->site), free(m->recipe);
    free(m->param), free(m->ext), free(m->fn), free(m->fn_arg_type), free(m->path), free(m->src);
    free(m);
}

void aj_bind_defaults(const aj_module *m, aj_bind *b) {
    for (int k = 0; k < AJ_MAX_DIMS; k++)
        b->v[k] = k < m->ndim && m->dim[k].has_value ? m->dim[k].value : -1;
}

/* Whether the entries of spec before `name` (each "NAME=VALUE,", already
 * checked) bind the len-byte name too. */
static int bound_before(const char *spec, const char *name, size_t len) {
    for (const char *p = spec; p < name; p = strchr(p, ',') + 1)
        if (strcspn(p, "=") == len && memcmp(p, name, len) == 0) return 1;
    return 0;
}

/* "D=8,H=5": each name must be a dim of the module, given once, and each
 * value a non-negative integer. */
int aj_bind_parse(const aj_module *m, aj_bind *b, const char *spec, aj_diag *d) {
    const char *s = spec;
    while (*s) {
        const char *name = s;
        while (*s && *s != '=' && *s != ',') s++;
        char nm[64];
        size_t len = (size_t)(s - name);
        if (*s != '=' || len == 0 || len >= sizeof nm)
            return aj_error(d, 0, 0, "--dims: expected NAME=VALUE in '%s'", spec);
        memcpy(nm, name, len);
        nm[len] = 0;
        if (bound_before(spec, name, len)) return aj_error(d, 0, 0, "--dims: %s is given twice in '%s'", nm, spec);
        int k = m ? aj_dim_index(m, nm) : 0;
        if (k < 0) return aj_error(d, 0, 0, "--dims: the model has no dim '%s'", nm);
        char *end;
        long long v = strtoll(++s, &end, 10);
        if (end == s || v < 0 || v > (1ll << 40) || (*end && *end != ','))
            return aj_error(d, 0, 0, "--dims: bad value for %s (want a non-negative integer)", nm);
        if (m) b->v[k] = v;
        s = *end ? end + 1 : end;
    }
    return 0;
}

static int *dup_ints(const int *a, int n) {
    int *r = xrealloc(NULL, (size_t)n * sizeof(int));
    if (n) memcpy(r, a, (size_t)n * sizeof(int));
    return r;
}

aj_recur *aj_recur_new(int ncarry, int nslice, int nuse, int nstack) {
    aj_recur *r = xrealloc(NULL, sizeof *r);
    *r = (aj_recur){ncarry, nslice, nuse, nstack, NULL, NULL, NULL, NULL, NULL};
    r->slice_axis = xrealloc(NULL, (size_t)nslice * sizeof(int));
    r->stack_axis = xrealloc(NULL, (size_t)nstack * sizeof(int));
    r->res_line = xrealloc(NULL, (size_t)(ncarry + nstack) * sizeof(int));
    r->res_col = xrealloc(NULL, (size_t)(ncarry + nstack) * sizeof(int));
    if (nslice) memset(r->slice_axis, 0, (size_t)nslice * sizeof(int));
    if (nstack) memset(r->stack_axis, 0, (size_t)nstack * sizeof(int));
    if (ncarry + nstack) {
        memset(r->res_line, 0, (size_t)(ncarry + nstack) * sizeof(int));
        memset(r->res_col, 0, (size_t)(ncarry + nstack) * sizeof(int));
    }
    return r;
}

void aj_recur_free(aj_recur *r) {
    if (!r) return;
    aj_graph_free(r->body);
    free(r->slice_axis), free(r->stack_axis), free(r->res_line), free(r->res_col);
    free(r);
}

void aj_recur_add_stack(aj_recur *r, int axis, int line, int col) {
    int k = r->nstack++, nres = r->ncarry + r->nstack;
    r->stack_axis = xrealloc(r->stack_axis, (size_t)r->nstack * sizeof(int));
    r->res_line = xrealloc(r->res_line, (size_t)nres * sizeof(int));
    r->res_col = xrealloc(r->res_col, (size_t)nres * sizeof(int));
    r->stack_axis[k] = axis, r->res_line[nres - 1] = line, r->res_col[nres - 1] = col;
}

aj_recur *aj_recur_clone(const aj_recur *r) {
    aj_recur *c = xrealloc(NULL, sizeof *c);
    *c = *r;
    c->slice_axis = dup_ints(r->slice_axis, r->nslice);
    c->stack_axis = dup_ints(r->stack_axis, r->nstack);
    c->res_line = dup_ints(r->res_line, r->ncarry + r->nstack);
    c->res_col = dup_ints(r->res_col, r->ncarry + r->nstack);
    c->body = aj_graph_clone(r->body);
    return c;
}

aj_graph *aj_graph_clone(const aj_graph *g) {
    aj_graph *c = aj_graph_new(g->name);
    c->nval = c->capval = g->nval;
    c->val = xrealloc(NULL, (size_t)g->nval * sizeof *c->val);
    for (int i = 0; i < g->nval; i++) c->val[i] = g->val[i], c->val[i].name = xstrdup(g->val[i].name);
    c->hash_next = xrealloc(NULL, (size_t)g->nval * sizeof(int));
    index_rebuild(c);
    c->nnode = c->capnode = g->nnode;
    c->node = xrealloc(NULL, (size_t)g->nnode * sizeof *c->node);
    for (int i = 0; i < g->nnode; i++) {
        const aj_node *n = &g->node[i];
        aj_node *m = &c->node[i];
        *m = *n;
        m->in = dup_ints(n->in, n->nin);
        m->in_col = dup_ints(n->in_col, n->nin);
        m->out = dup_ints(n->out, n->nout);
        m->rec = n->rec ? aj_recur_clone(n->rec) : NULL;
    }
    c->leaf = dup_ints(g->leaf, g->nleaf), c->nleaf = g->nleaf;
    c->result = dup_ints(g->result, g->nresult), c->nresult = g->nresult;
    c->line = g->line, c->col = g->col, c->end_line = g->end_line;
    return c;
}

void aj_value_rename(aj_graph *g, int v, const char *base) {
    char name[96];
    snprintf(name, sizeof name, "%s", base);
    for (int k = 2; aj_graph_find(g, name) >= 0 && aj_graph_find(g, name) != v; k++)
        snprintf(name, sizeof name, "%s_%d", base, k);
    index_unlink(g, v);
    free(g->val[v].name);
    g->val[v].name = xstrdup(name);
    index_link(g, v);
}

void aj_value_swap_names(aj_graph *g, int a, int b) {
    if (a == b) return;
    index_unlink(g, a), index_unlink(g, b);
    char *name = g->val[a].name;
    g->val[a].name = g->val[b].name;
    g->val[b].name = name;
    index_link(g, a), index_link(g, b);
}

void aj_module_add_fn(aj_module *m, aj_graph *g, const aj_type *arg_types) {
    m->fn = xrealloc(m->fn, sizeof *m->fn * (size_t)(m->nfn + 1));
    m->fn_arg_type = xrealloc(m->fn_arg_type, sizeof *m->fn_arg_type * (size_t)(m->nfn + 1));
    m->fn_arg_type[m->nfn] = xrealloc(NULL, sizeof(aj_type) * (size_t)(g->nleaf ? g->nleaf : 1));
    if (g->nleaf) memcpy(m->fn_arg_type[m->nfn], arg_types, sizeof(aj_type) * (size_t)g->nleaf);
    m->fn[m->nfn++] = g;
}
