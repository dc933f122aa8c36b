/* The training step as one graph: loss, gradients and the optimizer update.
 *
 * aj_train_step builds fn `train_step` from grad_<fn>:
 *   train_step(args..., lr : f32[], decay : f32[], <state>...) -> loss, P'..., <state'>...
 * P' is each parameter after the update and <state'> the optimizer's state
 * after it, in the order of aj_optim_state. The host keeps the schedule: it
 * passes the step's learning rate (for Adam with the bias correction folded
 * in, lr sqrt(1 - b2^t) / (1 - b1^t)) and decay = lr * weight_decay.
 *
 *   g    = d_P * clip_scale, clip_scale = min(1, clip / ||d||) over all P
 *   SGD:     u' = mu u + g + wd P            P' = P - lr u'     (state u if mu > 0)
 *   RMSProp: s' = rho s + (1 - rho) g^2      P' = P - lr g / (sqrt(s') + eps) - decay P
 *   Adam:    m' = b1 m + (1 - b1) g
 *            v' = b2 v + (1 - b2) g^2        P' = P - lr m' / (sqrt(v') + eps) - decay P
 * Weight decay is decoupled (AdamW) for Adam and RMSProp, L2 for SGD. */
#include "arjit.h"
#include "compiler/emit.h"
#include <stdlib.h>
#include <string.h>

int aj_optim_nstate(const aj_optim *o) {
    switch (o->kind) {
    case AJ_OPT_SGD: return o->momentum > 0;
    case AJ_OPT_RMSPROP: return 1;
    case AJ_OPT_ADAM: return 2;
    }
    return 0;
}

const char *aj_optim_state_name(const aj_optim *o, int k) {
    static const char *sgd[] = {"u"}, *rms[] = {"s"}, *adam[] = {"m", "v"};
    const char **names = o->kind == AJ_OPT_ADAM ? adam : o->kind == AJ_OPT_RMSPROP ? rms : sgd;
    return k >= 0 && k < aj_optim_nstate(o) ? names[k] : "";
}

/* a*x + b*y for scalars a, b */
static int lerp(aj_emit *c, double a, int x, double b, int y) {
    return em_op2(c, AJ_OP_ADD, em_op2(c, AJ_OP_MUL, x, em_scalar(c, a)), em_op2(c, AJ_OP_MUL, y, em_scalar(c, b)));
}

static int add_arg(aj_graph *g, aj_type **types, const char *name, const aj_type *t, const aj_bind *b) {
    int v = aj_graph_add_value(g, NULL, AJ_VAL_INPUT, -1, g->nleaf);
    aj_value_rename(g, v, name);
    g->val[v].type = *t;
    for (int i = 0; i < t->rank; i++) g->val[v].type.dim[i] = aj_dim_bind(t->dim[i], b);
    g->leaf = realloc(g->leaf, sizeof(int) * (size_t)(g->nleaf + 1));
    *types = realloc(*types, sizeof(aj_type) * (size_t)(g->nleaf + 1));
    (*types)[g->nleaf] = *t;
    g->leaf[g->nleaf++] = v;
    return v;
}

aj_graph *aj_train_step(aj_module *m, const char *fn_name, const aj_optim *o, aj_diag *d) {
    if (aj_module_fn(m, "train_step")) return aj_error(d, 0, 0, "the model already has a fn 'train_step'"), NULL;
    char gname[96];
    snprintf(gname, sizeof gname, "grad_%s", fn_name);
    aj_graph *grad = aj_module_fn(m, gname);
    if (!grad && !(grad = aj_autodiff(m, fn_name, d))) return NULL;
    int gi = 0;
    while (m->fn[gi] != grad) gi++;

    aj_graph *g = aj_graph_clone(grad);
    free(g->name);
    g->name = strdup("train_step");
    aj_type *types = malloc(sizeof(aj_type) * (size_t)(g->nleaf ? g->nleaf : 1));
    memcpy(types, m->fn_arg_type[gi], sizeof(aj_type) * (size_t)g->nleaf);
    aj_emit e = {m, g, d, NULL}, *c = &e;
    aj_type scalar_t = {AJ_F32, 0, {{0}}};
    int lr = add_arg(g, &types, "lr", &scalar_t, &m->bind);
    int decay = add_arg(g, &types, "decay", &scalar_t, &m->bind);

    /* grad_<fn>'s results after the loss are d_P for the parameters it
     * uses, in module order: find each one's PARAM value */
    int np = 0, pidx[256], pval[256], state[256][2];
    for (int p = 0; p < m->nparam && np < 256; p++)
        for (int v = 0; v < g->nval; v++)
            if (g->val[v].kind == AJ_VAL_PARAM && g->val[v].idx == p) pidx[np] = p, pval[np++] = v;
    if (np != g->nresult - 1) {
        aj_error(d, 0, 0, "train_step: %s does not have one gradient per parameter", gname);
        goto fail;
    }
    int ns = aj_optim_nstate(o);
    for (int s = 0; s < ns; s++)
        for (int k = 0; k < np; k++) {
            char nm[96];
            snprintf(nm, sizeof nm, "%s_%s", aj_optim_state_name(o, s), m->param[pidx[k]].name);
            state[k][s] = add_arg(g, &types, nm, &m->param[pidx[k]].type, &m->bind);
        }

    /* global norm clipping: scale = clip / max(||d||, clip) */
    int scale = -1;
    if (o->clip > 0) {
        int sq = -1;
        for (int k = 0; k < np; k++) {
            int s = em_op1(c, AJ_OP_SUM, em_op1(c, AJ_OP_SQUARE, g->result[k + 1]));
            sq = sq < 0 ? s : em_op2(c, AJ_OP_ADD, sq, s);
        }
        int norm = em_op1(c, AJ_OP_SQRT, sq);
        scale = em_op2(c, AJ_OP_DIV, em_scalar(c, o->clip), em_op2(c, AJ_OP_MAXIMUM, norm, em_scalar(c, o->clip)));
    }
    int *res = malloc(sizeof(int) * (size_t)(1 + np * (1 + ns)));
    res[0] = g->result[0];
    for (int k = 0; k < np; k++) {
        int p = pval[k], gr = g->result[k + 1], upd = -1, st[2] = {-1, -1}, first = g->nnode;
        if (scale >= 0) gr = em_op2(c, AJ_OP_MUL, gr, scale);
        switch (o->kind) {
        case AJ_OPT_SGD:
            if (o->weight_decay > 0) gr = em_op2(c, AJ_OP_ADD, gr, em_op2(c, AJ_OP_MUL, p, em_scalar(c, o->weight_decay)));
            if (ns) gr = st[0] = em_op2(c, AJ_OP_ADD, em_op2(c, AJ_OP_MUL, state[k][0], em_scalar(c, o->momentum)), gr);
            upd = em_op2(c, AJ_OP_MUL, gr, lr);
            break;
        case AJ_OPT_RMSPROP:
            st[0] = lerp(c, o->rho, state[k][0], 1 - o->rho, em_op1(c, AJ_OP_SQUARE, gr));
            upd = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_DIV, gr, em_op2(c, AJ_OP_ADD, em_op1(c, AJ_OP_SQRT, st[0]), em_scalar(c, o->eps))), lr);
            break;
        case AJ_OPT_ADAM:
            st[0] = lerp(c, o->beta1, state[k][0], 1 - o->beta1, gr);
            st[1] = lerp(c, o->beta2, state[k][1], 1 - o->beta2, em_op1(c, AJ_OP_SQUARE, gr));
            upd = em_op2(c, AJ_OP_MUL, em_op2(c, AJ_OP_DIV, st[0], em_op2(c, AJ_OP_ADD, em_op1(c, AJ_OP_SQRT, st[1]), em_scalar(c, o->eps))), lr);
            break;
        }
        if (o->kind != AJ_OPT_SGD && o->weight_decay > 0) upd = em_op2(c, AJ_OP_ADD, upd, em_op2(c, AJ_OP_MUL, p, decay));
        int np1 = em_op2(c, AJ_OP_SUB, p, upd);
        if (np1 < 0) {
            free(res);
            goto fail;
        }
        em_lines_from(c, first, m->param[pidx[k]].line, m->param[pidx[k]].col);
        char nm[96];
        snprintf(nm, sizeof nm, "new_%s", m->param[pidx[k]].name);
        aj_value_rename(g, np1, nm);
        res[1 + k] = np1;
        for (int s = 0; s < ns; s++) {
            snprintf(nm, sizeof nm, "new_%s_%s", aj_optim_state_name(o, s), m->param[pidx[k]].name);
            aj_value_rename(g, st[s], nm);
            res[1 + np + s * np + k] = st[s];
        }
    }
    free(g->result);
    g->result = res, g->nresult = 1 + np * (1 + ns);
    aj_module_add_fn(m, g, types);
    free(types);
    return g;
fail:
    free(types);
    aj_graph_free(g);
    return NULL;
}
