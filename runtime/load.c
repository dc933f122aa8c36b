/* A module ready to run: parsed, its dims bound, verified, and its extern
 * ops' libraries loaded. This lives in the runtime, not in ir/, because
 * loading needs dlopen and libffi, which the IR layer alone (the fuzz build,
 * tests/fuzz.cmake) does without. */
#include "runtime/extern_op.h"
#include <stdio.h>

static aj_module *bind_infer_load(aj_module *m, const char *dims, aj_bind *out, aj_diag *d) {
    if (!m) return NULL;
    aj_bind b;
    aj_bind_defaults(m, &b);
    if ((dims && *dims && aj_bind_parse(m, &b, dims, d)) || aj_module_infer(m, &b, d) || aj_extern_load(m, d)) {
        if (!d->file[0]) snprintf(d->file, sizeof d->file, "%s", m->path);
        aj_module_free(m);
        return NULL;
    }
    if (out) *out = b;
    return m;
}

aj_module *aj_load_string(const char *src, size_t len, const char *path, const char *dims, aj_bind *b, aj_diag *d) {
    return bind_infer_load(aj_parse_string(src, len, path, d), dims, b, d);
}

aj_module *aj_load_file(const char *path, const char *dims, aj_bind *b, aj_diag *d) {
    return bind_infer_load(aj_parse_file(path, d), dims, b, d);
}
