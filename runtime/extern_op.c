/* Extern ops: load a shared library with dlopen, find the declared symbols,
 * and call them through libffi (see extern_op.h for the C signatures).
 *
 * Why libffi: the number of pointer arguments depends on the declaration
 * (k inputs and an output forward, k inputs, dy and k outputs backward), so
 * the call is built at run time. Each function's call frame (ffi_cif) is
 * prepared once, when the library is loaded; a call only fills the argument
 * array. What is loaded hangs off the module's aj_extern (loaded/unload), so
 * aj_module_free releases it without the IR layer knowing about dlopen. */
#include "runtime/extern_op.h"
#include <dlfcn.h>
#include <ffi.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* One extern op, loaded. */
typedef struct {
    void *lib;                  /* dlopen handle */
    void *fwd, *grad;           /* the symbols; grad NULL when not declared */
    ffi_cif fwd_cif, grad_cif;  /* their call frames */
    /* argument types: int64_t n, then the pointers (k + 1 forward, 2k + 1 gradient) */
    ffi_type *fwd_args[AJ_MAX_EXTERN_IN + 2], *grad_args[2 * AJ_MAX_EXTERN_IN + 2];
} loaded_ext;

/* Loading (dlopen, dlerror) happens under one lock: calls on several
 * threads may race to load the same op first. */
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

static void unload(void *p) {
    loaded_ext *x = p;
    dlclose(x->lib);
    free(x);
}

/* void f(int64_t n, float *p_1, ..., float *p_np) */
static int prep_cif(ffi_cif *cif, ffi_type **args, int np) {
    args[0] = &ffi_type_sint64;
    for (int i = 1; i <= np; i++) args[i] = &ffi_type_pointer;
    return ffi_prep_cif(cif, FFI_DEFAULT_ABI, (unsigned)np + 1, &ffi_type_void, args) == FFI_OK ? 0 : -1;
}

/* The library's path: as written when absolute, else relative to the
 * directory of the graph file (the working directory for a graph read from
 * a string or standard input, whose path has no '/'). */
static int lib_path(const aj_module *m, const aj_extern *e, char *buf, size_t n) {
    const char *slash = strrchr(m->path, '/');
    int len;
    if (e->lib[0] == '/') len = snprintf(buf, n, "%s", e->lib);
    else if (slash) len = snprintf(buf, n, "%.*s/%s", (int)(slash - m->path), m->path, e->lib);
    else len = snprintf(buf, n, "./%s", e->lib);
    return len >= 0 && (size_t)len < n ? 0 : -1;
}

static void *find_symbol(const aj_extern *e, void *lib, const char *sym, const char *path, aj_diag *d) {
    void *f = dlsym(lib, sym);
    if (!f) aj_error(d, e->line, e->col, "extern op '%s': no function '%s' in %s", e->name, sym, path);
    return f;
}

/* Load extern op e of m; the caller holds load_lock. */
static int load_one(const aj_module *m, aj_extern *e, aj_diag *d) {
    char path[4096];
    if (lib_path(m, e, path, sizeof path))
        return aj_error(d, e->line, e->col, "extern op '%s': library path too long", e->name);
    loaded_ext *x = calloc(1, sizeof *x);
    if (!x) return aj_error(d, e->line, e->col, "extern op '%s': out of memory", e->name);
    x->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!x->lib) {
        const char *why = dlerror();
        size_t len = strlen(path);   /* dlerror repeats the path first: say it once */
        if (why && !strncmp(why, path, len) && !strncmp(why + len, ": ", 2)) why += len + 2;
        aj_error(d, e->line, e->col, "extern op '%s': cannot load library %s: %s", e->name, path, why ? why : "?");
        free(x);
        return -1;
    }
    int k = e->nin;
    if (!(x->fwd = find_symbol(e, x->lib, e->fwd, path, d)) ||
        (e->grad && !(x->grad = find_symbol(e, x->lib, e->grad, path, d))))
        goto fail;
    if (prep_cif(&x->fwd_cif, x->fwd_args, k + 1) || (e->grad && prep_cif(&x->grad_cif, x->grad_args, 2 * k + 1))) {
        aj_error(d, e->line, e->col, "extern op '%s': libffi cannot prepare the call", e->name);
        goto fail;
    }
    e->unload = unload;
    __atomic_store_n(&e->loaded, x, __ATOMIC_RELEASE);   /* publish it whole to lock-free readers */
    return 0;
fail:
    unload(x);
    return -1;
}

int aj_extern_load(const aj_module *m, aj_diag *d) {
    int rc = 0;
    pthread_mutex_lock(&load_lock);
    for (int i = 0; i < m->nextern && !rc; i++)
        if (!m->ext[i].loaded) rc = load_one(m, &m->ext[i], d);
    pthread_mutex_unlock(&load_lock);
    if (rc) aj_diag_source(d, m->path, m->src, m->srclen);
    return rc;
}

int aj_extern_call(const aj_module *m, const aj_node *n, int64_t numel, const float *const *in, float *const *out,
                   aj_diag *d) {
    aj_extern *e = &m->ext[aj_attr_int(n, "fn")];
    loaded_ext *x = __atomic_load_n(&e->loaded, __ATOMIC_ACQUIRE);
    if (!x) {
        if (aj_extern_load(m, d)) return -1;
        x = e->loaded;
    }
    /* libffi takes a pointer to each argument: &numel, then &in[i], &out[k] */
    void *args[2 * AJ_MAX_EXTERN_IN + 2];
    args[0] = &numel;
    for (int i = 0; i < n->nin; i++) args[1 + i] = (void *)&in[i];
    for (int k = 0; k < n->nout; k++) args[1 + n->nin + k] = (void *)&out[k];
    if (aj_attr_int(n, "grad")) ffi_call(&x->grad_cif, FFI_FN(x->grad), NULL, args);
    else ffi_call(&x->fwd_cif, FFI_FN(x->fwd), NULL, args);
    return 0;
}
