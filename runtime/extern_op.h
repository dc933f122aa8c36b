/* Extern ops: C functions in shared libraries, called through libffi from
 * the one signature every extern function has (docs/ir.md, custom ops):
 *
 *   forward   void f(int64_t n, const float *x_1, ..., const float *x_k, float *y)
 *   gradient  void g(int64_t n, const float *x_1, ..., const float *x_k,
 *                    const float *dy, float *dx_1, ..., float *dx_k)
 *
 * over n elements each, outputs never aliasing inputs. Every engine calls
 * them through aj_extern_call, so they behave the same everywhere. */
#ifndef ARJIT_RUNTIME_EXTERN_OP_H
#define ARJIT_RUNTIME_EXTERN_OP_H

#include "arjit.h"

/* Load the library and symbols of every extern op of m not loaded yet
 * (aj_load_file/aj_load_string do this; aj_extern_call does it on first use
 * for modules built otherwise). Returns 0, or -1 with d at the declaration
 * naming the library and symbol at fault. Thread-safe. */
int aj_extern_load(const aj_module *m, aj_diag *d);

/* Run extern node n (op AJ_OP_EXTERN) over numel elements: in[0..n->nin-1]
 * are its inputs' data and out[0..n->nout-1] its results' (one for the
 * forward call, one per input for the gradient, grad=1). Returns 0, or -1
 * with d set when the library cannot be loaded. */
int aj_extern_call(const aj_module *m, const aj_node *n, int64_t numel, const float *const *in, float *const *out,
                   aj_diag *d);

#endif
