/* Shape rules (ir/shape.c) through the verifier: result types, symbolic
 * dims, and the error each bad use gets (message and caret column). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "arjit.h"
#include <stdio.h>
#include <string.h>

/* Parse and infer `src` with `dims` bound; returns the module or NULL with d set. */
static aj_module *check(const char *src, const char *dims, aj_diag *d) {
    memset(d, 0, sizeof *d);
    aj_module *m = aj_parse_string(src, strlen(src), "t.graph", d);
    aj_bind b;
    if (!m) fail_msg("parse error: %s", d->msg);
    aj_bind_defaults(m, &b);
    if (aj_bind_parse(m, &b, dims, d) || aj_module_infer(m, &b, d)) {
        aj_module_free(m);
        return NULL;
    }
    return m;
}

/* The type of value `name` of fn f must print as `want`. */
static void expect_type(const char *src, const char *dims, const char *name, const char *want) {
    aj_diag d;
    aj_module *m = check(src, dims, &d);
    if (!m) fail_msg("unexpected error: %s", d.msg);
    const aj_graph *f = aj_module_fn(m, "f");
    int v = aj_graph_find(f, name);
    assert_true(v >= 0);
    char got[192];
    aj_type_str(m, &f->val[v].type, got, sizeof got);
    if (strcmp(got, want)) fail_msg("%s is %s, want %s", name, got, want);
    aj_module_free(m);
}

/* The one-line body `stmt` over the args `params` must fail with `msg`,
 * the caret under the first `at` in the statement (line 4). */
static void expect_error(const char *params, const char *stmt, const char *at, const char *msg) {
    char src[512];
    snprintf(src, sizeof src, "dim B\ndim T\nfn f(%s) -> y\n  y = %s\nend\n", params, stmt);
    aj_diag d;
    aj_module *m = check(src, "", &d);
    if (m) {
        aj_module_free(m);
        fail_msg("'%s' was accepted", stmt);
    }
    if (strcmp(d.msg, msg)) fail_msg("message\n  '%s'\nwant\n  '%s'", d.msg, msg);
    assert_int_equal(d.line, 4);
    int col = (int)(strstr(stmt, at) - stmt) + 7;   /* "  y = " is 6 columns */
    if (d.col != col) fail_msg("'%s': caret at column %d, want %d (under '%s')", stmt, d.col, col, at);
}

static void test_types(void **state) {
    static const char *src =
        "dim B\n"
        "dim T\n"
        "dim D = 4\n"
        "fn f(a : f32[2, 1, 3, 4], b : f32[5, 4, 2], x : f32[B, 1], r : f32[1, D], s : f32[B, T+1, 8], "
        "tab : f32[10, D], ix : i32[B, T], img : f32[B, 3, 4, 5], k : f32[B, T, D]) -> y\n"
        "  r2 = constant(value=1, shape=[D])\n"
        "  w2 = constant(value=1, shape=[7, 3, 3, 1])\n"
        "  mm = matmul(a, b)\n"
        "  bc = add(x, r)\n"
        "  g = gaussian_nll(x, r, 0)\n"
        "  rk = sum(s, axis=[1, -1], keepdims=1)\n"
        "  rd = mean(s, axis=1)\n"
        "  rs = reshape(s, shape=[B, T+1, 2, 4])\n"
        "  tr = transpose(s, perm=[2, 0, 1])\n"
        "  sl = slice(s, axis=1, start=1, end=T+1)\n"
        "  pd = pad(k, axis=1, before=2)\n"
        "  cc = concat(k, k, axis=1)\n"
        "  ga = gather(tab, ix)\n"
        "  oh = one_hot(ix, n=D)\n"
        "  sk = skew(img)\n"
        "  us = unskew(sk)\n"
        "  ca = cast(ix, to=f32)\n"
        "  at = attention(k, k, k, heads=2, causal=1)\n"
        "  ln = layer_norm(k, r2, r2)\n"
        "  cn = categorical_nll(k, ix)\n"
        "  cs = categorical(k)\n"
        "  ms = mog(k, k, k)\n"
        "  mn = mog_nll(ca, k, k, k)\n"
        "  c2 = conv2d(img, w2)\n"
        "  u = unsqueeze(x, axis=-3)\n"
        "  bt = broadcast(x, shape=[3, B, D])\n"
        "  mk = mask(kind=conv_b, shape=[2, 2, 3, 3])\n"
        "  y = neg(x)\n"
        "end\n";
    static const struct { const char *name, *type; } want[] = {
        {"mm", "f32[2, 5, 3, 2]"}, {"bc", "f32[B, 4]"}, {"g", "f32[B, 4]"}, {"rk", "f32[B, 1, 1]"},
        {"rd", "f32[B, 8]"}, {"rs", "f32[B, T+1, 2, 4]"}, {"tr", "f32[8, B, T+1]"}, {"sl", "f32[B, T, 8]"},
        {"pd", "f32[B, T+2, 4]"}, {"cc", "f32[B, 2*T, 4]"}, {"ga", "f32[B, T, 4]"}, {"oh", "f32[B, T, 4]"},
        {"sk", "f32[B, 3, 4, 8]"}, {"us", "f32[B, 3, 4, 5]"}, {"ca", "f32[B, T]"}, {"at", "f32[B, T, 4]"},
        {"ln", "f32[B, T, 4]"}, {"cn", "f32[B, T]"}, {"cs", "i32[B, T]"}, {"ms", "f32[B, T]"},
        {"mn", "f32[B, T]"}, {"c2", "f32[B, 7, 4, 5]"}, {"u", "f32[1, B, 1]"}, {"bt", "f32[3, B, 4]"},
        {"mk", "f32[2, 2, 3, 3]"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) expect_type(src, "", want[i].name, want[i].type);
    /* under a binding the dims are numbers */
    expect_type(src, "B=2,T=3", "sl", "f32[2, 3, 8]");
    expect_type(src, "B=2,T=3", "rs", "f32[2, 4, 2, 4]");
}

/* Dims that are polynomials: sums of different dims (concat of a [B, Tq, E]
 * and a [B, Tk, E] sequence), products of sums, squares; reshape proves
 * element counts by multiplying out, slice and pad shift by symbolic sizes. */
static void test_polynomial_dims(void **state) {
    static const char *src =
        "dim B\n"
        "dim Tq\n"
        "dim Tk\n"
        "dim E = 4\n"
        "fn f(q : f32[B, Tq, E], k : f32[B, Tk, E], s : f32[B, Tq+1, 8], u : f32[Tq, Tq]) -> y\n"
        "  c = concat(q, k, axis=1)\n"
        "  c2 = concat(c, q, axis=-2)\n"
        "  fl = reshape(c, shape=[B, (Tq+Tk)*E])\n"
        "  back = reshape(fl, shape=[B, Tk+Tq, E])\n"
        "  qs = slice(c, axis=1, start=0, end=Tq)\n"
        "  ks = slice(c, axis=1, start=Tq, end=Tq+Tk)\n"
        "  bt = reshape(s, shape=[(Tq+1)*B, 8])\n"
        "  sq = reshape(u, shape=[Tq*Tq])\n"
        "  sq2 = concat(sq, sq, axis=0)\n"
        "  pd = pad(c, axis=1, before=1, after=2)\n"
        "  sk = skew(u)\n"
        "  d = sub(back, c)\n"
        "  y = add(ks, k)\n"
        "end\n";
    static const struct { const char *name, *type; } want[] = {
        {"c", "f32[B, Tq+Tk, 4]"}, {"c2", "f32[B, 2*Tq+Tk, 4]"}, {"fl", "f32[B, 4*Tq+4*Tk]"},
        {"back", "f32[B, Tq+Tk, 4]"}, {"qs", "f32[B, Tq, 4]"}, {"ks", "f32[B, Tk, 4]"},
        {"bt", "f32[B*Tq+B, 8]"}, {"sq", "f32[Tq*Tq]"}, {"sq2", "f32[2*Tq*Tq]"},
        {"pd", "f32[B, Tq+Tk+3, 4]"}, {"sk", "f32[Tq, 2*Tq-1]"}, {"d", "f32[B, Tq+Tk, 4]"},
        {"y", "f32[B, Tk, 4]"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) expect_type(src, "", want[i].name, want[i].type);
    expect_type(src, "B=2,Tq=3,Tk=5", "fl", "f32[2, 32]");
    expect_type(src, "B=2,Tq=3,Tk=5", "sq2", "f32[18]");
    expect_type(src, "Tq=3", "c2", "f32[B, Tk+6, 4]");
    /* a slice of the concatenation is its part: only [Tq, Tq+Tk) is [B, Tk, 4] */
    aj_diag d;
    char bad[1024];
    snprintf(bad, sizeof bad, "%.*s  z = add(qs, k)\nend\n", (int)(strstr(src, "end\n") - src), src);
    assert_null(check(bad, "", &d));
    assert_string_equal(d.msg, "add: cannot broadcast f32[B, Tq, 4] with f32[B, Tk, 4] (axis -2: Tq vs Tk)");
}

static void test_elementwise_errors(void **state) {
    expect_error("a : f32[2, 3], b : f32[4]", "add(a, b)", "b)",
                 "add: cannot broadcast f32[2, 3] with f32[4] (axis -1: 3 vs 4)");
    expect_error("a : f32[B, 3], b : f32[2, 3]", "mul(a, b)", "b)",
                 "mul: cannot broadcast f32[B, 3] with f32[2, 3] (axis -2: B vs 2)");
    expect_error("a : f32[2], b : f32[2], c : f32[3]", "gaussian_nll(a, b, c)", "c)",
                 "gaussian_nll: cannot broadcast f32[2] with f32[3] (axis -1: 2 vs 3)");
    expect_error("i : i32[2]", "exp(i)", "i)", "exp: argument 1 must be f32, got i32[2]");
    expect_error("a : f32[2], i : i32[2]", "sub(a, i)", "i)", "sub: argument 2 must be f32, got i32[2]");
    expect_error("x : f32[2, 3]", "softmax(x, axis=2)", "softmax",
                 "softmax: axis 2 is out of range for f32[2, 3] (valid: -2..1)");
    expect_error("x : f32[2, 3]", "shift(x, axis=-3)", "shift",
                 "shift: axis -3 is out of range for f32[2, 3] (valid: -2..1)");
    expect_error("", "constant(value=1, shape=[2, -1])", "constant", "constant: shape: dim 1 is negative (-1)");
}

static void test_reduce_matmul_errors(void **state) {
    expect_error("x : f32[2, 3]", "sum(x, axis=[1, -1])", "sum", "sum: axis 1 is listed twice");
    expect_error("x : f32[2, 3]", "max(x, keepdims=2)", "max", "max: keepdims must be 0 or 1, got 2");
    expect_error("x : f32[2, 3]", "mean(x, axis=[5])", "mean",
                 "mean: axis 5 is out of range for f32[2, 3] (valid: -2..1)");
    expect_error("x : f32[B, 784], w : f32[500, 10]", "matmul(x, w)", "w)",
                 "matmul: inner dimensions differ: a is f32[B, 784], b is f32[500, 10] (784 vs 500)");
    expect_error("x : f32[B, 784], w : f32[500, 784]", "matmul(x, w, ta=1)", "w,",
                 "matmul: inner dimensions differ: a is f32[B, 784] (ta=1), b is f32[500, 784] (B vs 500)");
    expect_error("x : f32[3], w : f32[3, 2]", "matmul(x, w)", "x,",
                 "matmul: argument 1 must have rank >= 2, got f32[3]");
    expect_error("x : f32[2, 2, 3], w : f32[3, 3, 2]", "matmul(x, w)", "w)",
                 "matmul: batch dimensions do not broadcast: a is f32[2, 2, 3], b is f32[3, 3, 2]");
    expect_error("x : f32[2, 3], w : f32[3, 2]", "matmul(x, w, tb=3)", "matmul", "matmul: tb must be 0 or 1, got 3");
}

static void test_mask_errors(void **state) {
    expect_error("", "mask(kind=lower, shape=[2, 2, 2])", "mask",
                 "mask: kind lower needs a rank-2 shape, got f32[2, 2, 2]");
    expect_error("", "mask(kind=conv_a, shape=[1, 1, 2, 3])", "mask",
                 "mask: kind conv_a needs odd kernel sizes, got f32[1, 1, 2, 3]");
    expect_error("", "mask(kind=made_in, shape=[3, 5])", "mask",
                 "mask: kind made_in needs n >= 2 (the number of variables), got 0");
    expect_error("", "mask(kind=made_in, shape=[4, 5], n=3)", "mask",
                 "mask: made_in shape must be [n, H] with n = 3, got f32[4, 5]");
    expect_error("", "mask(kind=made_out, shape=[5, 4], n=3)", "mask",
                 "mask: made_out shape must be [H, n] with n = 3, got f32[5, 4]");
}

static void test_attention_conv_errors(void **state) {
    expect_error("q : f32[2, 4], k : f32[3, 4], v : f32[3, 4]", "attention(q, k, v, heads=3)", "q,",
                 "attention: heads=3 does not divide the last dim of q f32[2, 4]");
    expect_error("q : f32[2, 4], k : f32[3, 4], v : f32[3, 4]", "attention(q, k, v, causal=1)", "k,",
                 "attention: causal attention needs as many queries as keys: q is f32[2, 4], k is f32[3, 4]");
    expect_error("q : f32[2, 4], k : f32[3, 4], v : f32[2, 4]", "attention(q, k, v)", "v)",
                 "attention: k and v must have the same length: k is f32[3, 4], v is f32[2, 4]");
    expect_error("q : f32[2, 4], k : f32[3, 5], v : f32[3, 4]", "attention(q, k, v)", "k,",
                 "attention: q and k must have the same last dim: q is f32[2, 4], k is f32[3, 5]");
    expect_error("q : f32[1, 2, 4], k : f32[2, 3, 4], v : f32[2, 3, 4]", "attention(q, k, v)", "k,",
                 "attention: batch dimensions differ: q is f32[1, 2, 4], k is f32[2, 3, 4]");
    expect_error("x : f32[B, 3, 8, 8], w : f32[4, 2, 3, 3]", "conv2d(x, w)", "w)",
                 "conv2d: input channels differ: x is f32[B, 3, 8, 8], w is f32[4, 2, 3, 3]");
    expect_error("x : f32[B, 3, 8, 8], w : f32[4, 3, 2, 3]", "conv2d(x, w, mask=A)", "w,",
                 "conv2d: kernel sizes must be odd, got w f32[4, 3, 2, 3]");
    expect_error("x : f32[B, 3, 8], w : f32[4, 3, 2]", "conv1d(x, w)", "w)",
                 "conv1d: kernel sizes must be odd, got w f32[4, 3, 2]");
    expect_error("x : f32[B, 3], w : f32[4, 3, 2]", "conv1d(x, w, pad=causal)", "x,",
                 "conv1d: argument 1 must have rank 3, got f32[B, 3]");
    expect_error("x : f32[B, 3, 8], w : f32[4, 3, 3]", "conv1d(x, w, dilation=0)", "conv1d",
                 "conv1d: dilation must be >= 1, got 0");
    expect_error("x : f32[B, 3, 8, 8], w : f32[4, 3, 3, 3]", "conv2d(x, w, dilation=-2)", "conv2d",
                 "conv2d: dilation must be >= 1, got -2");
}

static void test_shape_op_errors(void **state) {
    expect_error("x : f32[2, 3]", "reshape(x, shape=[4, 2])", "x,",
                 "reshape: f32[2, 3] does not have as many elements as shape f32[4, 2]");
    expect_error("x : f32[B, 3]", "reshape(x, shape=[B, B])", "x,",
                 "reshape: f32[B, 3] does not have as many elements as shape f32[B, B]");
    /* B*T+B against B*T+T: unequal polynomials, so unequal for some B, T */
    expect_error("x : f32[B, T+1]", "reshape(x, shape=[B+1, T])", "x,",
                 "reshape: f32[B, T+1] does not have as many elements as shape f32[B+1, T]");
    /* nothing cancels and T^9 is more than an aj_dim holds */
    expect_error("x : f32[T*T*T*T*T, T*T*T*T]", "reshape(x, shape=[T, T*T*T*T*T*T*T*T])", "x,",
                 "reshape: cannot prove that f32[T*T*T*T*T, T*T*T*T] and shape f32[T, T*T*T*T*T*T*T*T] "
                 "have as many elements");
    expect_error("x : f32[B, T], z : f32[B+1, T]", "concat(x, z, axis=1)", "z,",
                 "concat: argument 2 is f32[B+1, T] but argument 1 is f32[B, T]: they must agree except along axis 1");
    expect_error("x : f32[2, 3]", "transpose(x, perm=[0])", "transpose",
                 "transpose: perm has 1 entries but f32[2, 3] has rank 2");
    expect_error("x : f32[2, 3]", "transpose(x, perm=[1, -1])", "transpose", "transpose: perm lists axis 1 twice");
    expect_error("x : f32[2, 3]", "slice(x, axis=1, start=1, end=4)", "x,",
                 "slice: end 4 is past the end of axis 1 of f32[2, 3]");
    expect_error("x : f32[2, 3]", "slice(x, axis=1, start=2, end=1)", "slice", "slice: end 1 is before start 2");
    expect_error("a : f32[2, 3], b : f32[3, 2]", "concat(a, b, axis=0)", "b,",
                 "concat: argument 2 is f32[3, 2] but argument 1 is f32[2, 3]: they must agree except along axis 0");
    expect_error("a : f32[2, 3], b : i32[2, 3]", "concat(a, b, axis=0)", "b,",
                 "concat: argument 2 is i32[2, 3] but argument 1 is f32[2, 3]: they must agree except along axis 0");
    expect_error("x : f32[2, 3]", "broadcast(x, shape=[2, 2])", "x,", "broadcast: cannot broadcast f32[2, 3] to shape f32[2, 2]");
    expect_error("x : f32[2, 3]", "broadcast(x, shape=[3])", "x,", "broadcast: cannot broadcast f32[2, 3] to shape f32[3]");
    expect_error("x : f32[2, 3]", "unsqueeze(x, axis=3)", "unsqueeze",
                 "unsqueeze: axis 3 is out of range for f32[2, 3] (valid: -3..2)");
    expect_error("x : f32[1, 1, 1, 1, 1, 1]", "unsqueeze(x, axis=0)", "x,",
                 "unsqueeze: f32[1, 1, 1, 1, 1, 1] already has the most axes (6)");
    expect_error("t : f32[5, 2], i : f32[3]", "gather(t, i)", "i)", "gather: argument 2 must be i32, got f32[3]");
    expect_error("i : i32[3]", "one_hot(i, n=0)", "one_hot", "one_hot: n must be >= 1, got 0");
    expect_error("x : f32[3]", "pad(x, axis=0, before=-1)", "pad",
                 "pad: before and after must be >= 0, got -1 and 0");
    expect_error("x : f32[3]", "skew(x)", "x)", "skew: argument 1 must have rank >= 2, got f32[3]");
    expect_error("x : f32[4, 2]", "unskew(x)", "x)", "unskew: f32[4, 2] is too narrow to unskew");
}

static void test_loss_errors(void **state) {
    expect_error("x : f32[B, 4], g : f32[3], b : f32[4]", "layer_norm(x, g, b)", "g,",
                 "layer_norm: g must be [E] for x f32[B, 4], got f32[3]");
    expect_error("l : f32[B, 3], t : i32[3]", "categorical_nll(l, t)", "t)",
                 "categorical_nll: target must have the dims of logits without the last: "
                 "logits are f32[B, 3], target is i32[3]");
    expect_error("l : f32[B, 3], t : f32[B]", "categorical_nll(l, t)", "t)",
                 "categorical_nll: argument 2 must be i32, got f32[B]");
    expect_error("x : f32[B], p : f32[B, 3], m : f32[B, 2], s : f32[B, 3]", "mog_nll(x, p, m, s)", "m,",
                 "mog_nll: mu must have the type of logit_pi f32[B, 3], got f32[B, 2]");
    expect_error("x : f32[3], p : f32[B, 3], m : f32[B, 3], s : f32[B, 3]", "mog_nll(x, p, m, s)", "p,",
                 "mog_nll: mixture parameters must be x's dims plus K: x is f32[3], logit_pi is f32[B, 3]");
    expect_error("l : f32[B, 3]", "categorical(l, temperature=0)", "categorical",
                 "categorical: temperature must be > 0, got 0");
    expect_error("p : f32[B, 3], m : f32[B, 3], s : f32[3]", "mog(p, m, s)", "s)",
                 "mog: log_sigma must have the type of logit_pi f32[B, 3], got f32[3]");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_polynomial_dims),
        cmocka_unit_test(test_elementwise_errors),
        cmocka_unit_test(test_reduce_matmul_errors),
        cmocka_unit_test(test_mask_errors),
        cmocka_unit_test(test_attention_conv_errors),
        cmocka_unit_test(test_shape_op_errors),
        cmocka_unit_test(test_loss_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
