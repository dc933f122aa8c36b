/* arjit: a compiler for autoregressive generative models.
 *
 * One header, ggml-style: the IR (dimensions, types, values, nodes, graphs,
 * modules), the op table, the parser/printer/verifier, tensors and the
 * reference interpreter. Later stages (autodiff, fusion, codegen, runtime)
 * add their own sections below.
 *
 * A model is a module: named dims, parameters and functions (`fn loglik`,
 * `fn sample`, ...). A function is a graph in SSA form: leaf values (inputs
 * and the module parameters it uses) and nodes, each an op applied to
 * earlier values, producing one or more values. docs/ir.md is the language.
 */
#ifndef ARJIT_H
#define ARJIT_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AJ_MAX_RANK 6     /* most axes a tensor has */
#define AJ_MAX_ATTRS 6    /* most attributes an op has */
#define AJ_MAX_DIMS 64    /* most named dims in a module (a bit each in aj_dim_syms) */

/* ---------------------------------------------------------------- errors */

/* The first error found, in compiler style:
 *   file:line:col: error: message
 *       the offending line
 *       ^                                                                */
typedef struct {
    int set;             /* 0 while no error */
    char file[256];
    int line, col;       /* 1-based; 0 when not tied to a place */
    char msg[512];
    char text[256];      /* the source line, for the caret */
    /* the def calls that led there, innermost first: printed as notes */
    struct { char def[64]; int line, col; } call[8];
    int ncall;
} aj_diag;

/* Record an error (first one wins; later calls are ignored). Returns -1. */
int aj_error(aj_diag *d, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Copy line `d->line` of `src` into d->text (when d has a place). */
void aj_diag_source(aj_diag *d, const char *file, const char *src, size_t len);
/* Add "in def `def` called at line:col" to an error made inside an inlined
 * def (after the first 8 calls only the outermost count is kept). */
void aj_diag_call(aj_diag *d, const char *def, int line, int col);
/* Print `d` as above to `f`, then a note line for each call. */
void aj_diag_print(const aj_diag *d, FILE *f);

/* ---------------------------------------------------------------- dims */

/* A dimension: a polynomial in the module's named dims with integer
 * coefficients, off + sum of t[i].coef * (product of the dims t[i].dim):
 * 784, D, B*T, T+1, 2*H, Tq+Tk, B*T+B (which (T+1)*B is), T*T-1.
 * Canonical, so equal dims are equal in their used fields (aj_dim_eq): no
 * two terms have the same factors, no coefficient is 0, terms are in
 * increasing memcmp order of their factor lists (a product before its own
 * prefix: A*B before A before B), a constant has nterm == 0 and its value
 * in off. A zeroed aj_dim is the constant 0. The limits below hold what
 * models write with room to spare (a flattened [C, D+2, H+2, W+2] is 7
 * terms of degree 4); beyond them arithmetic fails with AJ_DIM_TOO_LONG. */
#define AJ_DIM_TERMS 8     /* most non-constant terms in a dim */
#define AJ_DIM_DEGREE 8    /* most dim factors in one term (T*T has 2) */
#define AJ_DIM_NONE 0xff   /* fills a term's factor list after its last factor */

typedef struct {
    int64_t coef;                  /* never 0 */
    uint8_t dim[AJ_DIM_DEGREE];    /* module dim indices, ascending (T*T: T twice), then AJ_DIM_NONE */
} aj_dim_term;

typedef struct {
    int64_t off;                   /* the constant term */
    int nterm;                     /* t[0..nterm-1] are used */
    aj_dim_term t[AJ_DIM_TERMS];
} aj_dim;

aj_dim aj_dim_const(int64_t v);
aj_dim aj_dim_sym(int k);
int aj_dim_is_const(aj_dim d);
int aj_dim_eq(aj_dim a, aj_dim b);
/* The dims d depends on: bit k for module dim k. */
uint64_t aj_dim_syms(aj_dim d);
/* Arithmetic; return 0 on success, or (with *out untouched) AJ_DIM_OVERFLOW
 * when a coefficient leaves int64, AJ_DIM_TOO_LONG when the result has more
 * terms or factors than an aj_dim holds. */
enum { AJ_DIM_OVERFLOW = -1, AJ_DIM_TOO_LONG = -2 };
int aj_dim_add(aj_dim a, aj_dim b, aj_dim *out);
int aj_dim_sub(aj_dim a, aj_dim b, aj_dim *out);
int aj_dim_mul(aj_dim a, aj_dim b, aj_dim *out);

/* ---------------------------------------------------------------- types */

typedef enum { AJ_F32, AJ_I32 } aj_dtype;

typedef struct {
    aj_dtype dtype;
    int rank;
    aj_dim dim[AJ_MAX_RANK];
} aj_type;

/* Same dtype, rank and dims. */
int aj_type_eq(const aj_type *a, const aj_type *b);

/* ---------------------------------------------------------------- ops */

/* an op's kinds (ir/ops.def says what each means) */
enum { AJ_EW = 1, AJ_RAND = 2, AJ_NODIFF = 4, AJ_VIEW = 8, AJ_REDUCE = 16, AJ_HOST = 32, AJ_SAVE = 64 };

typedef enum {
#define AJ_OP(id, name, min_in, max_in, nout, flags, attrs, shape) AJ_OP_##id,
#include "../ir/ops.def"
#undef AJ_OP
    AJ_OP_COUNT
} aj_op;

typedef enum {
    AJ_ATTR_INT, AJ_ATTR_FLOAT, AJ_ATTR_DIM, AJ_ATTR_SHAPE, AJ_ATTR_INTS, AJ_ATTR_WORD
} aj_attr_kind;

/* One attribute of an op, parsed from its spec string in ops.def. */
typedef struct {
    char name[16];
    aj_attr_kind kind;
    int required;
    const char *words[12];   /* AJ_ATTR_WORD: the allowed words */
    int nwords;
    const char *dflt;        /* default as written in the spec, or NULL */
} aj_attr_spec;

typedef struct aj_node aj_node;
typedef struct aj_module aj_module;

/* An op's shape rule: given its inputs' types (already inferred), check them
 * and write the result types. On error, return -1 and say why with
 * aj_error(d, ...); set *bad_input to the index of the input at fault
 * (or -1 to blame the op itself), so the caret points at it. */
typedef int (*aj_shape_fn)(const aj_module *m, const aj_node *n, const aj_type *in,
                           aj_type *out, int *bad_input, aj_diag *d);

typedef struct {
    const char *name;
    int min_in, max_in, nout;
    int flags;
    const char *attr_src;         /* spec string from ops.def */
    aj_shape_fn shape;
    aj_attr_spec attr[AJ_MAX_ATTRS];
    int nattr;
} aj_op_def;

/* The table, indexed by aj_op. */
const aj_op_def *aj_op_info(aj_op op);
/* AJ_OP_COUNT when `name` is no op. */
aj_op aj_op_lookup(const char *name);

/* ---------------------------------------------------------------- graphs */

typedef struct {
    aj_attr_kind kind;
    int64_t i;               /* INT; WORD: index into the spec's words */
    double f;                /* FLOAT */
    int n;                   /* SHAPE, INTS: length */
    int64_t ints[AJ_MAX_RANK];
    aj_dim dims[AJ_MAX_RANK]; /* SHAPE: the dims; DIM: dims[0] */
} aj_attr;

typedef enum {
    AJ_VAL_NODE,     /* result `idx` of node `node` */
    AJ_VAL_INPUT,    /* function argument number `idx` */
    AJ_VAL_PARAM,    /* module parameter number `idx` */
    AJ_VAL_CARRY,    /* recurrence body: carried state number `idx` */
    AJ_VAL_SLICE,    /* recurrence body: per-step slice number `idx` */
    AJ_VAL_USE       /* recurrence body: invariant input number `idx` */
} aj_val_kind;

typedef struct {
    char *name;
    aj_val_kind kind;
    int node, idx;
    aj_type type;            /* inferred by aj_module_infer */
    int line, col;           /* where it is defined */
} aj_value;

typedef struct aj_graph aj_graph;

/* The structure of a recurrence node. Its inputs are, in order: the initial
 * value of each carry, the sequence of each slice, the outer value of each
 * use. Its results are: the final value of each carry, then each stacked
 * output. The body's leaves are the carries, slices and uses in that order
 * (kinds AJ_VAL_CARRY/SLICE/USE); its results are the next value of each
 * carry, then each value to stack. Step t (t = 0..steps-1, or steps-1..0
 * when reversed) sees slice s as seq_s indexed at slice_axis[s] = t, and
 * writes stacked output k at stack_axis[k] = t. The arrays are sized from
 * the counts (aj_recur_new): a recurrence has any number of each. */
typedef struct {
    int ncarry, nslice, nuse, nstack;
    int *slice_axis;         /* nslice */
    int *stack_axis;         /* nstack */
    int *res_line, *res_col; /* ncarry + nstack: where each `next` / `stack` is written */
    aj_graph *body;
} aj_recur;

struct aj_node {
    aj_op op;
    int nin, nout;
    int *in;                 /* value ids, in the graph that holds the node */
    int *in_col;             /* column of each argument in the source (0 if none) */
    int *out;                /* value ids */
    aj_attr attr[AJ_MAX_ATTRS]; /* in the order of the op's spec, defaults filled */
    aj_recur *rec;           /* AJ_OP_RECURRENCE only */
    int line, col;           /* where the op is written */
    int site;                /* inlined from a def: 1 + its aj_callsite index; 0 if not */
};

struct aj_graph {
    char *name;
    aj_value *val; int nval, capval;
    aj_node *node; int nnode, capnode;
    int *leaf; int nleaf;    /* leaf value ids: fn inputs, or body carries/slices/uses */
    int *result; int nresult;/* result value ids */
    int line, col;           /* where the fn / block starts */
    int end_line;
    /* The name index behind aj_graph_find (ir/graph.c): a chained hash whose
     * chains list value ids in decreasing order, so a lookup meets the latest
     * definition first. Values get names and change them only through
     * aj_graph_add_value, aj_value_rename and aj_value_swap_names. */
    int *hash_head; int nbucket; /* nbucket: a power of two, or 0 while empty */
    int *hash_next;              /* per value: the next id in its chain, or -1 */
};

typedef enum { AJ_INIT_ZEROS, AJ_INIT_ONES, AJ_INIT_NORMAL, AJ_INIT_UNIFORM, AJ_INIT_XAVIER } aj_init_kind;

typedef struct {
    char *name;
    aj_type type;            /* as declared: dims over all module dims */
    aj_init_kind init;
    double a, b;             /* normal(std=a); uniform(a, b) */
    int line, col;
} aj_param;

/* Dimension bindings: a value per module dim, -1 where unbound. */
typedef struct { int64_t v[AJ_MAX_DIMS]; } aj_bind;

/* An op implemented by C functions in a shared library, declared in the
 * graph file (docs/ir.md, "Custom ops"):
 *   extern swish(x) = "swish.so" swish_fwd, grad swish_grad
 * Calls are AJ_OP_EXTERN nodes whose `fn` attribute indexes aj_module.ext;
 * runtime/extern_op.c loads the library and calls the functions. */
#define AJ_MAX_EXTERN_IN 4

typedef struct {
    char *name;                   /* what calls write: y = swish(h) */
    int nin;                      /* 1..AJ_MAX_EXTERN_IN f32 inputs of one shape */
    char *arg[AJ_MAX_EXTERN_IN];  /* the inputs' names as declared (for readers) */
    char *lib;                    /* as written; relative to the graph file's directory */
    char *fwd, *grad;             /* the symbols; grad is NULL when there is none */
    int line, col;
    /* what runtime/extern_op.c loaded (NULL until then) and how to free it */
    void *loaded;
    void (*unload)(void *loaded);
} aj_extern;

typedef struct {
    char *name;
    int has_value;           /* `dim D = 784` has one; `dim B` is bound at run time */
    int64_t value;
    int line, col;
} aj_dimdef;

/* One line `key = value` of a `recipe ... end` block (docs/ir.md,
 * "Training recipes"): a default for the `arjit train` flag --key (with
 * '_' for '-': weight_decay is --weight-decay), used unless the flag is
 * given. The parser knows the keys and whether each takes a number, a name
 * or a string; `arjit train` checks the value's range as it does the flag's. */
typedef struct {
    char *key;
    char *value;             /* as written; a string without its quotes */
    int is_str;              /* written as a string ("mnist-bin") */
    int line, col;           /* of the value */
} aj_setting;

/* A call of a `def` that the parser inlined: the nodes it made carry its
 * index (aj_node.site), so a diagnostic names the call as well as the line
 * in the def. `parent` is the call it was made from (1 + index; 0 at a fn). */
typedef struct {
    char *def;
    int line, col;
    int parent;
} aj_callsite;

struct aj_module {
    char *path;
    char *src; size_t srclen;   /* the source text, for diagnostics */
    aj_dimdef dim[AJ_MAX_DIMS]; int ndim;
    aj_param *param; int nparam;
    aj_extern *ext; int nextern;
    aj_graph **fn; int nfn;
    /* declared argument types of each fn, parallel to fn[i]->leaf */
    aj_type **fn_arg_type;
    /* the binding of the last aj_module_infer: value types are under it */
    aj_bind bind;
    aj_callsite *site; int nsite;   /* the def calls the parser inlined */
    aj_setting *recipe; int nrecipe; /* the training recipe, in file order */
    int recipe_line;                 /* where the `recipe` block starts; 0: none */
};

/* Node/attribute access by the names in the op's spec. */
int64_t aj_attr_int(const aj_node *n, const char *name);
double aj_attr_float(const aj_node *n, const char *name);
aj_dim aj_attr_dim(const aj_node *n, const char *name);
const aj_attr *aj_attr_get(const aj_node *n, const char *name);
/* A DIM attribute under the module's current binding (m->bind); -1 when
 * it is still symbolic. */
int64_t aj_attr_dim_value(const aj_module *m, const aj_node *n, const char *name);
/* The word an AJ_ATTR_WORD attribute holds. */
const char *aj_attr_word(const aj_node *n, const char *name);

/* Building graphs (the parser and the compiler passes use these). */
aj_graph *aj_graph_new(const char *name);
void aj_graph_free(aj_graph *g);
int aj_graph_add_value(aj_graph *g, const char *name, aj_val_kind kind, int node, int idx);
/* Adds a node with default attributes and `nout` fresh result values named
 * `names[i]` (NULL: a fresh name); returns the node index. */
int aj_graph_add_node(aj_graph *g, aj_op op, const int *in, int nin, int nout,
                      const char *const *names);
/* Set attributes from their default text (fills every non-required one). */
void aj_node_set_defaults(aj_node *n);
/* The value id named `name`, or -1. */
int aj_graph_find(const aj_graph *g, const char *name);
/* Deep copies (bodies included); value and node ids are kept. */
aj_graph *aj_graph_clone(const aj_graph *g);
aj_recur *aj_recur_clone(const aj_recur *r);
/* A recurrence structure with room for these counts, axes and lines 0, no
 * body; aj_recur_free frees it and its body. */
aj_recur *aj_recur_new(int ncarry, int nslice, int nuse, int nstack);
void aj_recur_free(aj_recur *r);
/* One more stacked output, along `axis`, written at line:col. */
void aj_recur_add_stack(aj_recur *r, int axis, int line, int col);
/* Rename value v to `base`, or base_2, base_3, ... if that is taken. */
void aj_value_rename(aj_graph *g, int v, const char *base);
/* Values a and b trade names. */
void aj_value_swap_names(aj_graph *g, int a, int b);
/* Verify node `id` of g (its inputs already typed) and type its results,
 * under the module's binding. */
int aj_graph_infer_node(const aj_module *m, aj_graph *g, int id, aj_diag *d);

/* ---------------------------------------------------------------- modules */

/* Parse a graph file (path "-" reads standard input). NULL and *d set on error. */
aj_module *aj_parse_file(const char *path, aj_diag *d);
aj_module *aj_parse_string(const char *src, size_t len, const char *path, aj_diag *d);
void aj_module_free(aj_module *m);


/* The dims with a declared value bound to it, the others free. */
void aj_bind_defaults(const aj_module *m, aj_bind *b);
/* Apply "D=8,H=5" overrides; error names the dim. A dim given twice is an
 * error. m NULL checks the syntax alone (any names, b untouched). */
int aj_bind_parse(const aj_module *m, aj_bind *b, const char *spec, aj_diag *d);
int aj_dim_index(const aj_module *m, const char *name);
/* Substitute the bound dims of `b` into d. A value that overflows int64 on
 * the way comes out as the constant INT64_MAX, which no check accepts. */
aj_dim aj_dim_bind(aj_dim d, const aj_bind *b);

/* Add the def calls that made node n (its aj_node.site chain) to d. */
void aj_diag_site(aj_diag *d, const aj_module *m, const aj_node *n);

/* Verify every function and infer every value's type under binding `b`
 * (bound dims are substituted; free ones stay symbolic). Returns 0 or -1. */
int aj_module_infer(aj_module *m, const aj_bind *b, aj_diag *d);

/* Append fn g (taking ownership) with the declared types of its arguments. */
void aj_module_add_fn(aj_module *m, aj_graph *g, const aj_type *arg_types);
/* Parse, bind the declared dims, apply `dims` overrides ("D=8,B=2"; NULL
 * or "" for none), infer and load the extern ops' libraries: a module ready
 * to run (runtime/load.c). The binding used goes to *b when b is not NULL.
 * NULL with d set on any error. */
aj_module *aj_load_string(const char *src, size_t len, const char *path, const char *dims, aj_bind *b, aj_diag *d);
aj_module *aj_load_file(const char *path, const char *dims, aj_bind *b, aj_diag *d);

/* The function named `name`, or NULL. */
aj_graph *aj_module_fn(const aj_module *m, const char *name);
int aj_module_param_index(const aj_module *m, const char *name);
/* The extern op named `name`, or -1. */
int aj_extern_index(const aj_module *m, const char *name);
/* The recipe's setting for key, or NULL. */
const aj_setting *aj_recipe_get(const aj_module *m, const char *key);

/* Canonical text; parses back to the same module. */
void aj_module_print(const aj_module *m, FILE *f);
/* The same text in a malloc'd string (NULL when out of memory). */
char *aj_module_text(const aj_module *m);
/* Print a dim / a type in graph-file syntax into buf (truncated to fit),
 * or a dim to f in full. */
void aj_dim_str(const aj_module *m, aj_dim d, char *buf, size_t n);
void aj_dim_print(FILE *f, const aj_module *m, aj_dim d);
void aj_type_str(const aj_module *m, const aj_type *t, char *buf, size_t n);

/* ---------------------------------------------------------------- tensors */

typedef struct {
    aj_dtype dtype;
    int rank;
    int64_t shape[AJ_MAX_RANK];
    void *data;              /* float* or int32_t*, row-major, contiguous
                                (double* for f32 in aj_interp_run_f64) */
} aj_tensor;

int64_t aj_tensor_numel(const aj_tensor *t);
/* Allocate zeroed data for a tensor of this (concrete) type; NULL on overflow. */
aj_tensor aj_tensor_new(aj_dtype dt, int rank, const int64_t *shape);
aj_tensor aj_tensor_of_type(const aj_type *t);   /* type must be all-constant */
/* The same with f32 elements of f32_size bytes: 4, or 8 for the double
 * interpreter (aj_interp_run_f64), which holds f32 values as double. */
aj_tensor aj_tensor_new_sized(aj_dtype dt, int rank, const int64_t *shape, size_t f32_size);
aj_tensor aj_tensor_of_type_sized(const aj_type *t, size_t f32_size);
void aj_tensor_free(aj_tensor *t);

/* Initialise module parameter `i` (shape under `b`) from its initialiser
 * with a seeded generator. */
aj_tensor aj_param_init(const aj_module *m, int i, const aj_bind *b, uint64_t seed);

/* ---------------------------------------------------------------- interpreter */

/* Run function `fn` of `m` with every dim bound in `b` (aj_module_infer must
 * have run with the same binding). params[i] is module parameter i (entries
 * the fn does not use may be empty); inputs[i] is fn argument i. The fn's
 * results are allocated into results[0..nresult-1] (caller frees).
 * `seed` drives the sampling ops. Returns 0, or -1 with d set. */
int aj_interp_run(const aj_module *m, const aj_graph *fn, const aj_tensor *params,
                  const aj_tensor *inputs, aj_tensor *results, uint64_t seed, aj_diag *d);

/* ---------------------------------------------------------------- autodiff */

/* Add fn `grad_<fn>` to m: grad_<fn>(args of fn) -> loss, d_P for each
 * parameter P the fn uses (module order). loss = -mean(first result) for
 * fn loglik (the mean NLL), mean(first result) otherwise. m must be inferred
 * (aj_module_infer) first; B/T may stay symbolic. NULL and d set on error. */
aj_graph *aj_autodiff(aj_module *m, const char *fn, aj_diag *d);
/* The sampler derived from fn loglik (compiler/sample_step.c,
 * docs/sampling.md): adds
 *   fn sample_init(<loglik args>) -> state...          (when there is state;
 *                                                        x: the arg named x, else the first)
 *   fn sample_hoist(<loglik args>, pos, state...) -> invariants... (when any)
 *   fn sample_step(<loglik args>, pos : i32[1], state..., invariants...) -> logits, state'...
 * where logits are the conditional of x at position pos given x_<pos ([B, V]
 * for a categorical_nll of x, [B] for a bernoulli_nll). full = 1 asks for
 * the full form (the whole graph each step, no state). m inferred with
 * every dim bound. -1 with d set when loglik has no such conditional. */
typedef struct {
    int incremental;   /* 1: each step computes one position; 0: the full form */
    int two_phase;     /* the state after pos reads x_pos: run the step again once it is drawn */
    int binary;        /* bernoulli conditionals (logits [B]), else categorical ([B, V]) */
    int nstate;
    int ninv;          /* invariants sample_hoist computes once for every step */
    int x;             /* which of loglik's arguments is x: the one named x, else the first */
    char why[256];     /* full form asked for incrementally: "line N: op ..." that forced it */
} aj_step_info;
int aj_sample_step(aj_module *m, int full, aj_step_info *info, aj_diag *d);

/* Whether op has a gradient rule (or needs none: constants, sampling). */
int aj_has_gradient(aj_op op);

/* One parameter's gradient check: the worst error between the gradient of
 * grad_<fn> and central differences of the loss, both in double, over
 * `probes` of its entries (all of them when it has at most max_probes):
 * relative, and absolute below a floor (runtime/gradcheck.c). */
typedef struct {
    char name[64];
    int64_t numel;
    int probes;
    double max_rel_err;
    double worst_analytic, worst_numeric;
} aj_gradcheck_result;

/* Check every parameter fn uses (m inferred with every dim bound; builds
 * grad_<fn> if missing), with steps of eps. out needs room for m->nparam
 * entries. -1 with d set (file:line:col) for a fn that draws random numbers
 * or uses no parameters, or a parameter or argument that cannot be held. */
int aj_gradcheck(aj_module *m, const char *fn, uint64_t seed, int max_probes, double eps,
                 aj_gradcheck_result *out, int *nout, aj_diag *d);

/* ---------------------------------------------------------------- optimizers */

typedef enum { AJ_OPT_SGD, AJ_OPT_ADAM, AJ_OPT_RMSPROP } aj_opt_kind;

typedef struct {
    aj_opt_kind kind;
    double momentum;         /* SGD */
    double beta1, beta2;     /* Adam */
    double rho;              /* RMSProp */
    double eps;              /* Adam, RMSProp */
    double weight_decay;     /* L2 for SGD, decoupled for Adam/RMSProp */
    double clip;             /* global gradient-norm clipping; 0: none */
} aj_optim;

/* State tensors per parameter (0-2) and their names ("m", "v", ...). */
int aj_optim_nstate(const aj_optim *o);
const char *aj_optim_state_name(const aj_optim *o, int k);
/* Add fn train_step(args of fn..., lr, decay, state...) -> loss, P'...,
 * state'... (compiler/optim.c explains the update and the order). */
aj_graph *aj_train_step(aj_module *m, const char *fn, const aj_optim *o, aj_diag *d);

#ifdef __cplusplus
}
#endif
#endif
