/* The shape rules named in ops.def's last column (one aj_shape_fn each).
 * ir/ops.c builds the op table from them; ir/infer.c calls them. */
#ifndef ARJIT_IR_SHAPE_H
#define ARJIT_IR_SHAPE_H

#include "arjit.h"

#define AJ_SHAPE_RULE(name)                                                          \
    int aj_##name(const aj_module *m, const aj_node *n, const aj_type *in, aj_type *out, \
                  int *bad_input, aj_diag *d)

AJ_SHAPE_RULE(shape_same);
AJ_SHAPE_RULE(shape_broadcast);
AJ_SHAPE_RULE(shape_constant);
AJ_SHAPE_RULE(shape_reduce);
AJ_SHAPE_RULE(shape_matmul);
AJ_SHAPE_RULE(shape_mask);
AJ_SHAPE_RULE(shape_attention);
AJ_SHAPE_RULE(shape_conv2d);
AJ_SHAPE_RULE(shape_conv1d);
AJ_SHAPE_RULE(shape_conv2d_grad_x);
AJ_SHAPE_RULE(shape_conv2d_grad_w);
AJ_SHAPE_RULE(shape_conv1d_grad_x);
AJ_SHAPE_RULE(shape_conv1d_grad_w);
AJ_SHAPE_RULE(shape_reshape);
AJ_SHAPE_RULE(shape_transpose);
AJ_SHAPE_RULE(shape_slice);
AJ_SHAPE_RULE(shape_concat);
AJ_SHAPE_RULE(shape_broadcast_to);
AJ_SHAPE_RULE(shape_unsqueeze);
AJ_SHAPE_RULE(shape_gather);
AJ_SHAPE_RULE(shape_one_hot);
AJ_SHAPE_RULE(shape_pad);
AJ_SHAPE_RULE(shape_skew);
AJ_SHAPE_RULE(shape_unskew);
AJ_SHAPE_RULE(shape_cast);
AJ_SHAPE_RULE(shape_layer_norm);
AJ_SHAPE_RULE(shape_categorical_nll);
AJ_SHAPE_RULE(shape_mog);
AJ_SHAPE_RULE(shape_categorical);
AJ_SHAPE_RULE(shape_argmax);
AJ_SHAPE_RULE(shape_mog_sample);
AJ_SHAPE_RULE(shape_extern);
/* ir/infer.c: needs the body graph */
AJ_SHAPE_RULE(shape_recurrence);

#endif
