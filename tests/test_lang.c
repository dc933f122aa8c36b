/* The language above one op per line: nested expressions, infix operators
 * and `def` blocks (docs/ir.md, "Expressions" and "def").
 *
 * - Expressions lower to exactly the ops their precedence says (the printed
 *   canonical form shows them), and that form parses back.
 * - A model written with expressions and defs computes, on the interpreter,
 *   bit for bit what its one-op-per-line form computes.
 * - Errors inside a def name the line in the def and each call that led
 *   there; nesting and inlining blow-ups are errors, not crashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "arjit.h"

static aj_module *load(const char *src, const char *dims) {
    aj_diag d = {0};
    aj_module *m = aj_load_string(src, strlen(src), "t.graph", dims, NULL, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("graph did not load: %s", d.msg);
    }
    return m;
}

/* The canonical text of src's fn bodies (without the header lines). */
static char *printed(const char *src) {
    aj_module *m = load(src, NULL);
    char *t = aj_module_text(m);
    assert_non_null(t);
    /* the printed form parses back to the same text */
    aj_module *m2 = load(t, NULL);
    char *t2 = aj_module_text(m2);
    assert_string_equal(t, t2);
    free(t2);
    aj_module_free(m2);
    aj_module_free(m);
    return t;
}

static void expect_lowering(const char *line, const char *want) {
    char src[512];
    snprintf(src, sizeof src,
             "dim B\nparam W : f32[3, 3]\nfn f(a : f32[B, 3], b : f32[B, 3], c : f32[B, 3]) -> y\n  y = %s\nend\n", line);
    char *t = printed(src);
    if (!strstr(t, want)) fail_msg("`%s` printed as\n%s\nwant:\n%s", line, t, want);
    free(t);
}

/* Precedence and associativity: * / @ bind tighter than + -, both left to
 * right; unary minus binds tightest; a negative number is a literal. */
static void test_precedence(void **state) {
    (void)state;
    expect_lowering("a + b * c", "  _3 = mul(b, c)\n  y = add(a, _3)\n");
    expect_lowering("a - b - c", "  _3 = sub(a, b)\n  y = sub(_3, c)\n");
    expect_lowering("(a - b) * c", "  _3 = sub(a, b)\n  y = mul(_3, c)\n");
    expect_lowering("a @ W * c", "  _4 = matmul(a, W)\n  y = mul(_4, c)\n");
    expect_lowering("a / b / c", "  _3 = div(a, b)\n  y = div(_3, c)\n");
    expect_lowering("-a * b", "  _3 = neg(a)\n  y = mul(_3, b)\n");
    expect_lowering("a * -2", "  y = mul(a, -2)\n");
    expect_lowering("- -a", "  _3 = neg(a)\n  y = neg(_3)\n");
    expect_lowering("sigmoid(a @ W + b) * tanh(c)",
                    "  _4 = matmul(a, W)\n  _5 = add(_4, b)\n  _6 = sigmoid(_5)\n  _7 = tanh(c)\n  y = mul(_6, _7)\n");
    expect_lowering("sum(a * b, axis=1, keepdims=1) - 0.5",
                    "  _3 = mul(a, b)\n  _4 = sum(_3, axis=[1], keepdims=1)\n  y = sub(_4, 0.5)\n");
    /* the old form is still one op */
    expect_lowering("add(a, b)", "  y = add(a, b)\n");
}

/* The same LSTM written with an expression-form def, and one op per line:
 * equal log-likelihoods on the interpreter, to the bit. */
#define LSTM_HEAD                                                                                   \
    "dim B\ndim T = 5\ndim V = 4\ndim E = 3\ndim H = 4\n"                                           \
    "param emb : f32[V, E] = normal(0.5)\nparam Wx : f32[E, 4*H] = normal(0.5)\n"                   \
    "param Wh : f32[H, 4*H] = normal(0.5)\nparam bg : f32[4*H] = normal(0.1)\n"                    \
    "param Wo : f32[H, V] = normal(0.5)\n"
static const char lstm_expr[] = LSTM_HEAD
    "def cell(x, h, c, Wx, Wh, b) -> h2, c2\n"
    "  z = x @ Wx + h @ Wh + b\n"
    "  c2 = sigmoid(slice(z, axis=-1, start=H, end=2*H)) * c + sigmoid(slice(z, axis=-1, start=0, end=H)) * tanh(slice(z, axis=-1, start=2*H, end=3*H))\n"
    "  h2 = sigmoid(slice(z, axis=-1, start=3*H, end=4*H)) * tanh(c2)\n"
    "end\n"
    "fn f(x : i32[B, T]) -> ll\n"
    "  _, _, hs = recurrence(steps=T) {\n"
    "    carry h = constant(value=0, shape=[B, H])\n"
    "    carry c = constant(value=0, shape=[B, H])\n"
    "    slice xt = gather(emb, x), axis=1\n"
    "    h2, c2 = cell(xt, h, c, Wx, Wh, bg)\n"
    "    next h = h2\n"
    "    next c = c2\n"
    "    stack h2, axis=1\n"
    "  }\n"
    "  ll = -sum(categorical_nll(hs @ Wo, x), axis=1)\n"
    "end\n";
static const char lstm_ops[] = LSTM_HEAD
    "fn f(x : i32[B, T]) -> ll\n"
    "  h0 = constant(value=0, shape=[B, H])\n"
    "  xe = gather(emb, x)\n"
    "  _, _, hs = recurrence(steps=T) {\n"
    "    carry h = h0\n    carry c = h0\n    slice xt = xe, axis=1\n"
    "    a = matmul(xt, Wx)\n    r = matmul(h, Wh)\n    s = add(a, r)\n    z = add(s, bg)\n"
    "    zi = slice(z, axis=-1, start=0, end=H)\n    zf = slice(z, axis=-1, start=H, end=2*H)\n"
    "    zg = slice(z, axis=-1, start=2*H, end=3*H)\n    zo = slice(z, axis=-1, start=3*H, end=4*H)\n"
    "    i = sigmoid(zi)\n    f = sigmoid(zf)\n    g = tanh(zg)\n    o = sigmoid(zo)\n"
    "    fc = mul(f, c)\n    ig = mul(i, g)\n    c2 = add(fc, ig)\n"
    "    tc = tanh(c2)\n    h2 = mul(o, tc)\n"
    "    next h = h2\n    next c = c2\n    stack h2, axis=1\n"
    "  }\n"
    "  lo = matmul(hs, Wo)\n  nll = categorical_nll(lo, x)\n  s = sum(nll, axis=1)\n  ll = neg(s)\n"
    "end\n";

static void run_ll(const char *src, float *out, int nb) {
    aj_module *m = load(src, "B=3");
    const aj_graph *f = aj_module_fn(m, "f");
    aj_tensor params[8] = {{0}}, in = aj_tensor_new(AJ_I32, 2, (int64_t[]){3, 5}), res[16];
    for (int i = 0; i < m->nparam; i++) params[i] = aj_param_init(m, i, &m->bind, 7);
    for (int i = 0; i < 15; i++) ((int32_t *)in.data)[i] = (i * 7 + 3) % 4;
    aj_diag d = {0};
    if (aj_interp_run(m, f, params, &in, res, 1, &d)) {
        aj_diag_print(&d, stderr);
        fail();
    }
    memcpy(out, res[0].data, sizeof(float) * (size_t)nb);
    aj_tensor_free(&res[0]);
    aj_tensor_free(&in);
    for (int i = 0; i < m->nparam; i++) aj_tensor_free(&params[i]);
    aj_module_free(m);
}

static void test_def_equals_ops(void **state) {
    (void)state;
    float a[3], b[3];
    run_ll(lstm_expr, a, 3);
    run_ll(lstm_ops, b, 3);
    for (int i = 0; i < 3; i++) {
        assert_true(a[i] < 0);
        assert_memory_equal(&a[i], &b[i], sizeof(float));
    }
    char *t = printed(lstm_expr);   /* and its canonical form parses back */
    assert_non_null(strstr(t, "cell_z = add("));   /* a def's local keeps its name, after the def's */
    assert_null(strstr(t, "def "));                /* defs are inlined: the printed form has none */
    free(t);
}

/* A stack of layers: each call inlines the def again, with its own parameters. */
static void test_def_layers(void **state) {
    (void)state;
    char *t = printed("dim B\ndim H = 3\nparam W1 : f32[H, H]\nparam W2 : f32[H, H]\n"
                      "def layer(x, W) -> y\n  h = relu(x @ W)\n  y = x + h\nend\n"
                      "fn f(x : f32[B, H]) -> y\n  y = layer(layer(x, W1), W2)\nend\n");
    assert_non_null(strstr(t, "layer_h = relu("));
    assert_non_null(strstr(t, "layer_h_2 = relu("));
    assert_non_null(strstr(t, "matmul(x, W1)"));
    assert_non_null(strstr(t, "matmul(layer_y, W2)"));
    free(t);
    /* a later statement may take a name a def's local had */
    t = printed("dim B\ndim H = 3\nparam W1 : f32[H, H]\n"
                "def layer(x, W) -> y\n  h = relu(x @ W)\n  y = x + h\nend\n"
                "fn f(x : f32[B, H]) -> layer_h\n  y = layer(x, W1)\n  layer_h = y * 2\nend\n");
    assert_non_null(strstr(t, "layer_h = mul(y, 2)"));
    free(t);
}

typedef struct {
    const char *name, *src;
    int line, col;
    const char *msg;
    int ncall, call_line, call_col;   /* the outermost def call named by a note */
} bad_case;

#define DEF_F "def f(x) -> y\n  y = x @ x\nend\n"
static const bad_case bad_cases[] = {
    {"shape_error_in_def", "dim B\n" DEF_F "fn g(x : f32[B, 3]) -> y\n  y = f(x)\nend\n", 3, 11,
     "matmul: inner dimensions differ", 1, 6, 7},
    {"nested_def_calls", "dim B\n" DEF_F "def g(x) -> y\n  y = f(x) + 1\nend\nfn h(x : f32[B, 3]) -> y\n  y = 2 * g(x)\nend\n",
     3, 11, "matmul: inner dimensions differ", 2, 9, 11},
    {"undefined_in_def", "def f(x) -> y\n  y = x + z\nend\nfn g(x : f32[3]) -> y\n  y = f(x)\nend\n", 2, 11,
     "undefined value 'z' (def 'f' sees its arguments", 0, 0, 0},
    {"def_cannot_see_caller", "def f(x) -> y\n  y = x + w\nend\nfn g(x : f32[3], w : f32[3]) -> y\n  y = f(x)\nend\n",
     2, 11, "undefined value 'w'", 0, 0, 0},
    {"def_missing_result", "def f(x) -> y, z\n  y = neg(x)\nend\nfn g(x : f32[3]) -> y\n  y, z = f(x)\nend\n", 1, 16,
     "def 'f' has no value 'z' to return", 0, 0, 0},
    {"def_arg_count", DEF_F "fn g(x : f32[3, 3]) -> y\n  y = f(x, x)\nend\n", 5, 7, "def 'f' takes 1 argument, got 2", 0, 0, 0},
    {"def_returns_argument", "def f(x) -> x\nend\nfn g(x : f32[3]) -> y\n  y = f(x)\nend\n", 4, 3,
     "'y' would only be a second name for 'x'", 0, 0, 0},
    {"two_results_in_expression", "def f(x) -> y, z\n  y = neg(x)\n  z = exp(x)\nend\nfn g(x : f32[3]) -> y\n  y = f(x) + x\nend\n",
     6, 7, "f gives 2 results: an operand needs exactly one", 0, 0, 0},
    {"results_count", "def f(x) -> y, z\n  y = neg(x)\n  z = exp(x)\nend\nfn g(x : f32[3]) -> y\n  y = f(x)\nend\n", 6, 3,
     "f gives 2 results, but 1 name is assigned", 0, 0, 0},
    {"bare_name", "fn g(x : f32[3]) -> y\n  y = (x)\nend\n", 2, 3, "'y = x' computes nothing", 0, 0, 0},
    {"recurrence_in_expression", "fn g(x : f32[3]) -> y\n  y = neg(recurrence(steps=3))\nend\n", 2, 11,
     "recurrence is a statement of its own", 0, 0, 0},
    {"fn_called", "fn g(x : f32[3]) -> x\nend\nfn h(x : f32[3]) -> y\n  y = g(x)\nend\n", 4, 7,
     "'g' is a fn, which cannot be called", 0, 0, 0},
    {"def_named_like_op", "def tanh(x) -> y\n  y = neg(x)\nend\nfn g(x : f32[3]) -> x\nend\n", 1, 5,
     "'tanh' is already an op", 0, 0, 0},
    {"def_calls_itself", "def f(x) -> y\n  y = f(x)\nend\nfn g(x : f32[3]) -> x\nend\n", 2, 7, "unknown op 'f'", 0, 0, 0},
    {"def_local_twice", "def f(x) -> y\n  y = neg(x)\n  y = exp(x)\nend\nfn g(x : f32[3]) -> x\nend\n", 3, 3,
     "'y' is already defined at line 2", 0, 0, 0},
    {"missing_operand", "fn g(x : f32[3]) -> y\n  y = x +\nend\n", 2, 10, "expected a value, a number, a call or '('", 0, 0, 0},
    {"def_without_end", "def f(x) -> y\n  y = neg(x)\nfn g(x : f32[3]) -> x\nend\n", 3, 1,
     "def 'f' (line 1) has no 'end' before this line", 0, 0, 0},
};

static void test_bad_case(void **state) {
    const bad_case *c = *state;
    aj_diag d = {0};
    aj_module *m = aj_load_string(c->src, strlen(c->src), "t.graph", NULL, NULL, &d);
    aj_module_free(m);
    assert_null(m);
    if (d.line != c->line || d.col != c->col || !strstr(d.msg, c->msg) || d.ncall != c->ncall) {
        fprintf(stderr, "case %s: want %d:%d \"%s\" with %d call notes\n  got: ", c->name, c->line, c->col, c->msg, c->ncall);
        aj_diag_print(&d, stderr);
    }
    assert_int_equal(d.line, c->line);
    assert_int_equal(d.col, c->col);
    assert_non_null(strstr(d.msg, c->msg));
    assert_int_equal(d.ncall, c->ncall);
    if (c->ncall) {
        assert_int_equal(d.call[c->ncall - 1].line, c->call_line);
        assert_int_equal(d.call[c->ncall - 1].col, c->call_col);
    }
}

/* The printed diagnostic ends with one note per call. */
static void test_note_printed(void **state) {
    (void)state;
    static const char src[] = "dim B\n" DEF_F "fn g(x : f32[B, 3]) -> y\n  y = f(x)\nend\n";
    aj_diag d = {0};
    assert_null(aj_load_string(src, sizeof src - 1, "m.graph", NULL, NULL, &d));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    aj_diag_print(&d, f);
    fclose(f);
    if (!strstr(buf, "m.graph:3:11: error: matmul") || !strstr(buf, "\nm.graph:6:7: note: in def 'f' called here\n"))
        fail_msg("printed:\n%s", buf);
    free(buf);
}

/* Deep nesting is refused with a place, not a stack overflow; so is a
 * file whose defs would inline into more ops than any model has. */
static void test_limits(void **state) {
    (void)state;
    enum { N = 100000 };
    static const char *openers[] = {"(", "-", "neg(", "-("};
    for (size_t k = 0; k < sizeof openers / sizeof openers[0]; k++) {
        size_t w = strlen(openers[k]);
        char *src = malloc(64 + N * (2 * w + 1));
        char *s = src + sprintf(src, "fn g(x : f32[3]) -> y\n  y = ");
        for (int i = 0; i < N; i++) s += sprintf(s, "%s", openers[k]);
        s += sprintf(s, "x");
        for (int i = 0; i < N; i++)
            if (strchr(openers[k], '(')) *s++ = ')';
        sprintf(s, " + x\nend\n");
        aj_diag d = {0};
        aj_module *m = aj_parse_string(src, strlen(src), "t.graph", &d);
        assert_null(m);
        assert_non_null(strstr(d.msg, "nested too deeply"));
        assert_int_equal(d.line, 2);
        free(src);
    }
    /* 30 defs, each calling the one before twice: 2^30 ops */
    char *src = malloc(1 << 16), *s = src;
    s += sprintf(s, "def f0(x) -> y\n  y = neg(x)\nend\n");
    for (int i = 1; i < 30; i++) s += sprintf(s, "def f%d(x) -> y\n  y = f%d(f%d(x))\nend\n", i, i - 1, i - 1);
    sprintf(s, "fn g(x : f32[3]) -> y\n  y = f29(x)\nend\n");
    aj_diag d = {0};
    assert_null(aj_parse_string(src, strlen(src), "t.graph", &d));
    assert_non_null(strstr(d.msg, "the def calls make more than"));
    free(src);
}

int main(void) {
    struct CMUnitTest tests[64];
    int n = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_precedence);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_def_equals_ops);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_def_layers);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_note_printed);
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
        tests[n++] = (struct CMUnitTest){bad_cases[i].name, test_bad_case, NULL, NULL, (void *)&bad_cases[i]};
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_limits);
    return _cmocka_run_group_tests("test_lang", tests, (size_t)n, NULL, NULL);
}
