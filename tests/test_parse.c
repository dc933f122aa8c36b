/* The IR front end: parser, verifier, printer, dims and bindings.
 *
 * - every .graph file in models/ prints, parses back and prints the same text;
 * - a table of malformed inputs, each with the exact place (line:col) and
 *   message a user should see (one CMocka test per entry);
 * - the printed diagnostic (file:line:col, source line, caret);
 * - verifier errors of graphs built by hand with aj_graph_add_node;
 * - --dims bindings (aj_bind_parse) and aj_dim arithmetic.
 * The sanitizer build runs this under ASan+LSan, so every error path is also
 * checked to free what it built. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "arjit.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */


/* aj_module_infer under the module's default binding, from a clear diag. */
static int infer_defaults(aj_module *m, aj_diag *d) {
    aj_bind b;
    memset(d, 0, sizeof *d);   /* aj_module_infer keeps an error already set */
    aj_bind_defaults(m, &b);
    return aj_module_infer(m, &b, d);
}

/* Parse src and infer it with its default binding; NULL (and d set) on error. */
static aj_module *parse_infer(const char *src, size_t len, aj_diag *d) {
    aj_module *m = aj_parse_string(src, len, "t.graph", d);
    if (m && infer_defaults(m, d)) {
        aj_module_free(m);
        return NULL;
    }
    return m;
}

/* $ARJIT_SOURCE_DIR/rel: the tests run from any build directory. */
static void source_path(char *buf, size_t n, const char *rel) {
    const char *root = getenv("ARJIT_SOURCE_DIR");
    assert_non_null(root);
    snprintf(buf, n, "%s/%s", root, rel);
}

static void type_str(const aj_module *m, const aj_type *t, char *buf) { aj_type_str(m, t, buf, 128); }

/* The type of value `name` in fn `fn` of m, printed. */
static void value_type(const aj_module *m, const char *fn, const char *name, char *buf) {
    const aj_graph *g = aj_module_fn(m, fn);
    assert_non_null(g);
    int v = aj_graph_find(g, name);
    assert_true(v >= 0);
    type_str(m, &g->val[v].type, buf);
}

/* ------------------------------------------------------------------ round trip */

/* Every fn's results, and every value named in both, have equal types. */
static void assert_same_types(const aj_module *a, const aj_module *b) {
    assert_int_equal(a->nfn, b->nfn);
    for (int f = 0; f < a->nfn; f++) {
        const aj_graph *ga = a->fn[f], *gb = b->fn[f];
        assert_string_equal(ga->name, gb->name);
        assert_int_equal(ga->nresult, gb->nresult);
        for (int r = 0; r < ga->nresult; r++)
            assert_true(aj_type_eq(&ga->val[ga->result[r]].type, &gb->val[gb->result[r]].type));
        for (int v = 0; v < ga->nval; v++) {
            if (ga->val[v].name[0] == '_') continue;   /* generated names may differ */
            int w = aj_graph_find(gb, ga->val[v].name);
            assert_true(w >= 0);
            assert_true(aj_type_eq(&ga->val[v].type, &gb->val[w].type));
        }
    }
}

/* Parse path, infer, print; parse the text, infer, print: the same text and
 * types. Returns the printed text (caller frees). */
static char *round_trip_file(const char *path) {
    aj_diag d;
    aj_module *m1 = aj_parse_file(path, &d);
    if (!m1) aj_diag_print(&d, stderr);
    assert_non_null(m1);
    aj_bind b;
    aj_bind_defaults(m1, &b);
    assert_int_equal(aj_module_infer(m1, &b, &d), 0);
    char *text1 = aj_module_text(m1);

    aj_module *m2 = aj_parse_string(text1, strlen(text1), "printed", &d);
    if (!m2) {
        aj_diag_print(&d, stderr);
        fprintf(stderr, "printed text of %s:\n%s", path, text1);
    }
    assert_non_null(m2);
    assert_int_equal(aj_module_infer(m2, &b, &d), 0);
    char *text2 = aj_module_text(m2);
    assert_string_equal(text1, text2);
    assert_same_types(m1, m2);

    free(text2);
    aj_module_free(m1), aj_module_free(m2);
    return text1;
}

static void test_round_trip_models(void **state) {
    (void)state;
    char dir[1024], path[2048];
    source_path(dir, sizeof dir, "models");
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 6, ".graph")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        free(round_trip_file(path));
        n++;
    }
    closedir(dp);
    assert_true(n >= 2);   /* fvsbn and nade at least: an empty glob must not pass */
}

/* The valid fuzz seeds cover what the models do not: most ops, literals,
 * negative numbers, attributes at their defaults, `_` results, `use`
 * renames, a recurrence inside a recurrence and polynomial dims. */
static void test_round_trip_seeds(void **state) {
    (void)state;
    char path[1024], ty[128];
    source_path(path, sizeof path, "tests/corpus/seed_ops_mix.graph");
    char *t = round_trip_file(path);
    assert_non_null(strstr(t, "  nll = maximum(u, -3)\n"));                /* literals inline */
    assert_non_null(strstr(t, "  n = layer_norm(h, g, be, eps=1e-06)\n"));
    assert_non_null(strstr(t, "  lg = slice(sh, axis=2, start=0, end=E)\n")); /* E+3-3 folded */
    assert_non_null(strstr(t, "  sm = softmax(ls)\n"));                    /* default axis dropped */
    assert_non_null(strstr(t, "  c = conv1d(img, k1, pad=causal)\n"));
    assert_non_null(strstr(t, "param k1 : f32[4, 2, 3] = uniform(-0.1, 0.1)\n"));
    free(t);

    source_path(path, sizeof path, "tests/corpus/seed_nested_recurrence.graph");
    t = round_trip_file(path);
    assert_non_null(strstr(t, "    use w2 = W\n    use W\n    a = matmul(xt, w2)\n"));   /* W read inside */
    assert_non_null(strstr(t, "      use W\n      kw = matmul(k, W)\n"));   /* captured two levels down */
    assert_non_null(strstr(t, "  hT, hs = recurrence(steps=T, reverse=1) {\n"));
    assert_non_null(strstr(t, "      k2 = mul(kw, 0.5)\n"));
    free(t);
    aj_diag d;
    aj_module *m = aj_parse_file(path, &d);
    assert_non_null(m);
    assert_int_equal(infer_defaults(m, &d), 0);
    value_type(m, "f", "hs", ty);
    assert_string_equal(ty, "f32[B, 2, 3]");
    aj_module_free(m);

    /* a [B, Tq, E] and a [B, Tk, E] value concatenated: sizes Tq+Tk, (Tq+Tk)*E, ... */
    source_path(path, sizeof path, "tests/corpus/seed_poly_dims.graph");
    t = round_trip_file(path);
    assert_non_null(strstr(t, "  fl = reshape(kv, shape=[B, Tq*E+Tk*E])\n"));
    assert_non_null(strstr(t, "  ks = slice(kv2, axis=1, start=Tq, end=Tq+Tk)\n"));
    assert_non_null(strstr(t, "  hT, hs = recurrence(steps=Tq+Tk) {\n"));
    assert_non_null(strstr(t, "  bt = reshape(s, shape=[B*Tq+B, 8])\n"));
    free(t);
    m = aj_parse_file(path, &d);
    assert_non_null(m);
    assert_int_equal(infer_defaults(m, &d), 0);
    static const char *const want[][2] = {{"kv", "f32[B, Tq+Tk, 4]"}, {"hs", "f32[B, Tq+Tk, 4]"},
                                          {"ks", "f32[B, Tk, 4]"}, {"bt", "f32[B*Tq+B, 8]"}, {"sq", "f32[Tq*Tq]"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        value_type(m, "f", want[i][0], ty);
        assert_string_equal(ty, want[i][1]);
    }
    aj_module_free(m);
}

/* ------------------------------------------------------------------ malformed inputs */

typedef struct {
    const char *name;
    const char *src;
    size_t len;          /* 0: strlen(src); set for sources with NUL bytes */
    int line, col;       /* where the caret must point */
    const char *msg;     /* a substring of the message */
} bad_case;

/* One fn over x : f32[4] whose body is the single line `l` (line 2, col 3). */
#define FN1(l) "fn f(x : f32[4]) -> y\n  " l "\nend\n"
/* Two args a : f32[2, 3], b : f32[4, 5]; body line `l` (line 2, col 3). */
#define FN2(l) "fn f(a : f32[2, 3], b : f32[4, 5]) -> y\n  " l "\nend\n"
/* A recurrence over D = 4 steps; its body continues at line 5. Line 4,
 * col 11 is the carry `a`; lines 1-3 are the dim, the fn and the node. */
#define REC "dim D = 4\nfn f(x : f32[D]) -> h\n  h = recurrence(steps=D) {\n    carry a = x\n"
#define REC2 "dim D = 4\nfn f(x : f32[D]) -> h, s\n  h, s = recurrence(steps=D) {\n    carry a = x\n"
/* The same with a parameter W declared at line 2 (the body starts at line 6). */
#define REC_W "dim D = 4\nparam W : f32[D]\nfn f(x : f32[D]) -> h\n  h = recurrence(steps=D) {\n    carry a = x\n"
#define REC_END "  }\nend\n"

static const bad_case bad_cases[] = {
    /* ---- truncated input: the caret is at the end of the text */
    {"truncated_type", "dim D = 4\nparam W : f32[D,", 0, 2, 17, "expected a dimension, found end of file"},
    {"truncated_shape", "dim D = 4\nparam W : f32[D", 0, 2, 16, "expected ',' or ']', found end of file"},
    {"truncated_fn_args", "fn f(x : f32[4]", 0, 1, 16, "expected ',' or ')', found end of file"},
    {"truncated_op_args", "fn f(x : f32[4]) -> y\n  y = add(x,", 0, 2, 13,
     "expected an input name, a number or key=value, found end of file"},
    {"unclosed_call", FN1("y = neg(x"), 0, 2, 12, "expected ',' or ')', found end of line"},
    {"missing_end", "fn f(x : f32[4]) -> y\n  y = neg(x)\n", 0, 3, 1, "fn 'f' (line 1) has no 'end'"},
    {"missing_end_before_fn", "fn f(x : f32[4]) -> y\n  y = neg(x)\nfn g(x : f32[4]) -> x\nend\n", 0, 3, 1,
     "fn 'f' (line 1) has no 'end' before this line"},
    {"missing_arrow", "fn f(x : f32[4]) y\n  y = neg(x)\nend\n", 0, 1, 18,
     "expected '->' and the fn's results, found 'y'"},
    {"empty_file", "", 0, 1, 1, "no fn in this file"},
    {"only_comments", "# nothing\n   # but comments\n", 0, 3, 1, "no fn in this file"},
    {"statement_outside_fn", "dim D = 4\ny = neg(x)\n", 0, 2, 1,
     "expected 'dim', 'param', 'extern', 'def', 'fn' or 'recipe' at the start of a line, found 'y'"},
    {"trailing_garbage", FN1("y = neg(x) extra"), 0, 2, 14, "expected end of line, found 'extra'"},

    /* ---- bytes and numbers */
    {"binary_nul", "\0\1\2\3", 4, 1, 1, "unexpected byte 0x00 (is this a text file?)"},
    {"binary_utf16_bom", "\xff\xfe" "d\0i\0m\0", 8, 1, 1, "unexpected byte 0xff"},
    {"binary_inside_line", "dim D = 4 \x80\n", 0, 1, 11, "unexpected byte 0x80"},
    {"stray_character", "dim D = 4;\n", 0, 1, 10, "unexpected character ';'"},
    {"dim_float", "dim D = 1.5\n", 0, 1, 9, "expected an integer, found '1.5'"},
    {"dim_overflow", "dim D = 99999999999999999999\n", 0, 1, 9, "number out of range"},
    {"number_exponent_without_digits", "dim D = 1e\n", 0, 1, 9, "malformed number"},
    {"number_hex", "dim D = 0x10\n", 0, 1, 9, "malformed number"},
    {"literal_exponent_without_digits", FN1("y = mul(x, 1.5e)"), 0, 2, 14, "malformed number"},
    {"literal_two_dots", FN1("y = mul(x, 1.2.3)"), 0, 2, 14, "malformed number '1.2.3'"},
    {"dim_negative", "dim D = -3\n", 0, 1, 9, "dim D cannot be negative"},
    {"dim_huge", "dim D = 2000000000000\n", 0, 1, 9, "dim D = 2000000000000 is too large (at most 2^40)"},
    {"shape_literal_huge", "param W : f32[2000000000000]\n", 0, 1, 15, "dimension 2000000000000 is too large"},
    {"shape_product_overflow", "param W : f32[1099511627776*1099511627776]\n", 0, 1, 28, "dimension is too large"},
    {"tensor_over_2_40", "dim D = 2000000\nparam W : f32[D, D]\nfn f(x : f32[1]) -> x\nend\n", 0, 2, 7,
     "parameter is too large: f32[2000000, 2000000] (at most 2^40 elements)"},
    {"bound_product_overflow",
     "dim A = 1099511627776\ndim C = 1099511627776\nparam W : f32[A*C+1]\nfn f(x : f32[1]) -> x\nend\n", 0, 3, 7,
     "parameter is too large"},
    /* the 9th term, the 9th factor of a term: past what an aj_dim holds */
    {"dim_nine_terms", "dim A\ndim B\ndim C\ndim D\ndim E\ndim F\ndim G\ndim H\ndim I\n"
     "fn f(x : f32[A+B+C+D+E+F+G+H+I]) -> x\nend\n", 0, 10, 29,
     "dimension expression has more than 8 terms or a term of more than 8 dims"},
    {"dim_nested_too_deep", "dim T\nfn f(x : f32[((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((-(T"
     "))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))]) -> x\nend\n", 0, 2, 78,
     "dimension expression nested too deeply (at most 64 levels)"},
    {"dim_degree_nine", "dim T\nfn f(x : f32[T*T*T*T*T*T*T*T*T]) -> x\nend\n", 0, 2, 29,
     "dimension expression has more than 8 terms or a term of more than 8 dims"},
    {"negative_dim_argument", "dim D = 4\nfn f(x : f32[D-10]) -> x\nend\n", 0, 2, 6,
     "argument has a negative dimension: f32[-6]"},
    {"negative_dim_parameter", "dim D = 4\nparam W : f32[D-10]\nfn f(x : f32[D]) -> x\nend\n", 0, 2, 7,
     "parameter has a negative dimension: f32[-6]"},
    {"unknown_dim", "param W : f32[E]\n", 0, 1, 15, "unknown dim 'E' (declare it with 'dim E = N' or 'dim E')"},

    /* ---- ops and attributes */
    {"unknown_op_did_you_mean", FN1("y = sigmoidd(x)"), 0, 2, 7, "unknown op 'sigmoidd' (did you mean 'sigmoid'?)"},
    {"unknown_op", FN1("y = frobnicate(x)"), 0, 2, 7, "unknown op 'frobnicate' (docs/ir.md lists the ops)"},
    {"unknown_attribute", FN1("y = sum(x, axes=[0])"), 0, 2, 14, "sum has no attribute 'axes' (it has: axis, keepdims)"},
    {"attribute_twice", FN1("y = sum(x, axis=0, axis=0)"), 0, 2, 22, "attribute 'axis' given twice"},
    {"missing_required_attribute", FN1("y = reshape(x)"), 0, 2, 7, "reshape needs attribute 'shape'"},
    {"wrong_word_attribute", FN1("y = mask(kind=lowerr, shape=[4, 4])"), 0, 2, 17,
     "mask: 'lowerr' is not a valid kind (one of: lower, strict_lower, upper"},
    {"wrong_word_dtype", FN1("y = cast(x, to=f64)"), 0, 2, 18, "cast: 'f64' is not a valid to (one of: f32, i32)"},
    {"float_for_int_attribute", FN1("y = sum(x, keepdims=0.5)"), 0, 2, 23, "expected an integer, found '0.5'"},
    {"name_for_float_attribute", FN1("y = constant(value=abc)"), 0, 2, 22, "expected a number, found 'abc'"},
    {"flag_not_0_or_1", FN1("y = sum(x, keepdims=2)"), 0, 2, 7, "sum: keepdims must be 0 or 1, got 2"},
    {"too_few_inputs", FN1("y = add(x)"), 0, 2, 7, "add takes 2 inputs, got 1"},
    {"too_many_inputs", FN1("y = neg(x, x)"), 0, 2, 7, "neg takes 1 input, got 2"},
    {"no_inputs_to_concat", FN1("y = concat(axis=0)"), 0, 2, 7, "concat takes 1 to 16 inputs, got 0"},
    {"too_many_results", "fn f(x : f32[4]) -> y, z\n  y, z = neg(x)\nend\n", 0, 2, 3,
     "neg gives 1 result, but 2 names are assigned"},
    {"positional_after_attribute", FN1("y = sum(axis=0, x)"), 0, 2, 19, "inputs must come before attributes"},
    {"literal_after_attribute", FN1("y = sum(axis=0, 2)"), 0, 2, 19, "inputs must come before attributes"},
    {"dim_used_as_value", "dim D = 4\nfn f(x : f32[D]) -> y\n  y = neg(D)\nend\n", 0, 3, 11, "'D' is a dim, not a value"},

    /* ---- shapes and types (the verifier) */
    {"add_shape_mismatch", "fn f(a : f32[3], b : f32[4]) -> y\n  y = add(a, b)\nend\n", 0, 2, 14,
     "add: cannot broadcast f32[3] with f32[4] (axis -1: 3 vs 4)"},
    {"matmul_inner_dims", FN2("y = matmul(a, b)"), 0, 2, 17,
     "matmul: inner dimensions differ: a is f32[2, 3], b is f32[4, 5] (3 vs 4)"},
    {"concat_mismatch", FN2("y = concat(a, b, axis=0)"), 0, 2, 17,
     "concat: argument 2 is f32[4, 5] but argument 1 is f32[2, 3]: they must agree except along axis 0"},
    {"reshape_element_count", FN2("y = reshape(a, shape=[7])"), 0, 2, 15,
     "reshape: f32[2, 3] does not have as many elements as shape f32[7]"},
    {"slice_out_of_range", FN2("y = slice(a, axis=1, start=1, end=4)"), 0, 2, 13,
     "slice: end 4 is past the end of axis 1 of f32[2, 3]"},
    {"reduce_axis_out_of_range", FN2("y = sum(a, axis=2)"), 0, 2, 7,
     "sum: axis 2 is out of range for f32[2, 3] (valid: -2..1)"},
    {"reduce_axis_twice", FN2("y = sum(a, axis=[0, -2])"), 0, 2, 7, "sum: axis 0 is listed twice"},
    {"transpose_perm_length", FN2("y = transpose(a, perm=[1, 0, 2])"), 0, 2, 7,
     "transpose: perm has 3 entries but f32[2, 3] has rank 2"},
    {"i32_where_f32", "fn f(x : i32[4]) -> y\n  y = sigmoid(x)\nend\n", 0, 2, 15,
     "sigmoid: argument 1 must be f32, got i32[4]"},
    {"param_not_f32", "param W : i32[4]\n", 0, 1, 11, "parameter 'W' must be f32"},

    /* ---- names */
    {"duplicate_value", "fn f(x : f32[4]) -> y\n  y = neg(x)\n  y = exp(x)\nend\n", 0, 3, 3,
     "'y' is already defined at line 2"},
    {"duplicate_argument", "fn f(x : f32[4], x : f32[4]) -> x\nend\n", 0, 1, 18, "'x' is already defined at line 1"},
    {"duplicate_param", "param W : f32[4]\nparam W : f32[4]\n", 0, 2, 7, "parameter 'W' is already declared"},
    {"duplicate_dim", "dim D = 4\ndim D = 5\n", 0, 2, 5, "dim 'D' is already declared"},
    {"duplicate_fn", "fn f(x : f32[4]) -> x\nend\nfn f(x : f32[4]) -> x\nend\n", 0, 3, 4, "fn 'f' is already defined"},
    {"argument_named_like_param", "param x : f32[4]\nfn f(x : f32[4]) -> x\nend\n", 0, 2, 6, "'x' is already a parameter"},
    {"param_named_like_dim", "dim x\nparam x : f32[4]\n", 0, 2, 7, "'x' is already a dim"},
    {"undefined_value", FN1("y = add(x, z)"), 0, 2, 14, "undefined value 'z'"},
    {"undefined_result", "fn f(x : f32[4]) -> z\n  y = neg(x)\nend\n", 0, 1, 21, "undefined value 'z'"},
    {"keyword_as_value", FN1("f32 = neg(x)"), 0, 2, 3, "'f32' is a keyword and cannot name a value"},
    {"keyword_as_dim", "dim fn = 3\n", 0, 1, 5, "'fn' is a keyword and cannot name a dim"},
    {"keyword_as_param", "param end : f32[1]\n", 0, 1, 7, "'end' is a keyword and cannot name a parameter"},
    {"unknown_initialiser", "param W : f32[4] = gaussian(1)\n", 0, 1, 20, "unknown initialiser 'gaussian'"},
    {"negative_std", "param W : f32[4] = normal(-1)\n", 0, 1, 27, "normal(std): std must be >= 0"},

    /* ---- recurrences */
    {"body_without_close_at_eof", REC "    next a = a\n", 0, 6, 1,
     "recurrence body opened at line 3 has no closing '}'"},
    {"body_without_close_before_end", REC "    next a = a\nend\n", 0, 6, 1,
     "recurrence body opened at line 3 has no closing '}' before this line"},
    {"carry_after_ops", REC "    b = neg(a)\n    carry c = x\n    next a = b\n" REC_END, 0, 6, 5,
     "'carry' must come before the body's ops"},
    {"slice_after_ops", REC "    b = neg(a)\n    slice c = x, axis=0\n    next a = b\n" REC_END, 0, 6, 5,
     "'slice' must come before the body's ops"},
    {"next_of_non_carry", REC "    b = neg(a)\n    next b = a\n" REC_END, 0, 6, 10, "'b' is not a carry of this recurrence"},
    {"missing_next", REC "    carry c = x\n    next a = a\n" REC_END, 0, 5, 11, "carry 'c' has no 'next' line"},
    {"two_nexts", REC "    b = neg(a)\n    next a = b\n    next a = a\n" REC_END, 0, 7, 5, "carry 'a' has two 'next' lines"},
    {"next_of_undefined", REC "    next a = zz\n" REC_END, 0, 5, 14, "undefined value 'zz'"},
    {"wrong_result_count", REC "    next a = a\n    stack a, axis=0\n" REC_END, 0, 3, 3,
     "recurrence gives 2 results (1 carry, 1 stacked), but 1 name is assigned"},
    {"slice_size_not_steps", "dim D = 4\nparam W : f32[5, D]\nfn f(x : f32[D]) -> h\n  h = recurrence(steps=D) {\n"
     "    carry a = x\n    slice w = W, axis=0\n    b = add(a, w)\n    next a = b\n" REC_END, 0, 6, 11,
     "slice 'w': f32[5, 4] has axis 0 of a different size than steps = 4"},
    {"slice_axis_out_of_range", REC "    slice s = x, axis=1\n    next a = a\n" REC_END, 0, 5, 11,
     "slice 's': axis 1 is out of range for f32[4]"},
    {"slice_axis_absurd", REC "    slice s = x, axis=9\n    next a = a\n" REC_END, 0, 5, 23, "axis 9 out of range"},
    {"next_type_differs", REC "    b = sum(a)\n    next a = b\n" REC_END, 0, 6, 5, "next 'a' is f32[] but the carry is f32[4]"},
    {"stack_axis_out_of_range", REC2 "    next a = a\n    stack a, axis=2\n" REC_END, 0, 6, 5,
     "stack: axis 2 is out of range for f32[4]"},
    {"use_of_undefined", REC "    use q\n    next a = a\n" REC_END, 0, 5, 9, "undefined value 'q'"},
    {"use_of_param_twice", REC_W "    use W\n    use W\n    next a = a\n" REC_END, 0, 7, 9,
     "'W' is already used in this body"},
    {"use_renamed_to_param", REC_W "    use W = x\n    next a = a\n" REC_END, 0, 6, 9, "'W' is already a parameter"},
    {"carry_outside_body", "fn f(x : f32[4]) -> x\n  carry a = x\nend\n", 0, 2, 3, "'carry' only belongs in a recurrence body"},
    {"next_outside_body", "fn f(x : f32[4]) -> x\n  next a = x\nend\n", 0, 2, 3, "'next' only belongs in a recurrence body"},
    {"recurrence_positional_input", "dim D = 4\nfn f(x : f32[D]) -> h\n  h = recurrence(x, steps=D) {\n"
     "    carry a = x\n    next a = a\n" REC_END, 0, 3, 18, "recurrence takes no inputs"},
    {"recurrence_without_body", "dim D = 4\nfn f(x : f32[D]) -> h\n  h = recurrence(steps=D)\nend\n", 0, 3, 26,
     "expected '{' to open the recurrence body, found end of line"},
    {"recurrence_without_steps", "fn f(x : f32[4]) -> h\n  h = recurrence() {\n    carry a = x\n    next a = a\n"
     REC_END, 0, 2, 7, "recurrence needs attribute 'steps'"},
    {"body_after_other_op", FN1("y = neg(x) {"), 0, 2, 14, "only recurrence has a body"},

    /* ---- extern ops (declarations and calls; the libraries: tests/test_extern.c) */
    {"extern_unterminated_string", "extern act(x) = \"act.so act_fwd\n", 0, 1, 17, "unterminated string"},
    {"extern_path_unquoted", "extern act(x) = act.so act_fwd\n", 0, 1, 17, "expected the library's path in quotes"},
    {"extern_builtin_name", "extern sigmoid(x) = \"a.so\" f\n", 0, 1, 8, "'sigmoid' is already an op"},
    {"extern_too_many_inputs", "extern act(a, b, c, d, e) = \"a.so\" f\n", 0, 1, 24,
     "too many inputs (an extern op takes at most 4)"},
    {"extern_bad_grad_clause", "extern act(x) = \"a.so\" f, gradient g\n", 0, 1, 27,
     "expected 'grad' and the gradient function's name, found 'gradient'"},
    {"extern_call_arity", "extern act(x) = \"a.so\" f\n" FN1("y = act(x, x)"), 0, 3, 7, "act takes 1 input, got 2"},
    {"extern_call_fn_attribute", "extern act(x) = \"a.so\" f\n" FN1("y = act(x, fn=0)"), 0, 3, 14,
     "act has no attribute 'fn' (it has: grad)"},
    {"extern_gradient_undeclared", "extern act(x) = \"a.so\" f\n" FN1("y = act(x, x, grad=1)"), 0, 3, 7,
     "act has no gradient function"},
    {"extern_shapes_differ", "extern act(u, v) = \"a.so\" f\n" FN2("y = act(a, b)"), 0, 3, 14,
     "act: argument 2 is f32[4, 5] but argument 1 is f32[2, 3]"},
    {"extern_called_directly", FN1("y = extern(x, fn=0)"), 0, 2, 7, "unknown op 'extern'"},
    {"string_outside_extern", "dim D = \"4\"\n", 0, 1, 9, "expected an integer, found '\"4\"'"},

    /* ---- training recipes (their values' ranges: tests/test_cli_train.sh) */
    {"recipe_unknown_key", "recipe\n  learning_rate = 1\nend\n", 0, 2, 3, "unknown recipe setting 'learning_rate'"},
    {"recipe_misspelt_key", "recipe\n  epoch = 3\nend\n", 0, 2, 3, "(did you mean 'epochs'?)"},
    {"recipe_twice_set", "recipe\n  lr = 1\n  lr = 2\nend\n", 0, 3, 3, "recipe sets 'lr' twice (first at line 2)"},
    {"recipe_number_as_name", "recipe\n  lr = fast\nend\n", 0, 2, 8, "expected a number, found 'fast'"},
    {"recipe_name_as_number", "recipe\n  opt = 1\nend\n", 0, 2, 9, "expected a name, found '1'"},
    {"recipe_data_unquoted", "recipe\n  data = mnist-bin\nend\n", 0, 2, 15, "expected end of line, found '-'"},
    {"recipe_data_empty", "recipe\n  data = \"\"\nend\n", 0, 2, 10, "empty data"},
    {"recipe_no_end", "recipe\n  lr = 1\n", 0, 3, 1, "recipe (line 1) has no 'end'"},
    {"recipe_two", "recipe\nend\nrecipe\nend\n", 0, 3, 1, "a second recipe (the first is at line 1)"},
    {"recipe_missing_equals", "recipe\n  lr 1\nend\n", 0, 2, 6, "expected '=', found '1'"},
};

static void test_bad_case(void **state) {
    const bad_case *c = *state;
    size_t len = c->len ? c->len : strlen(c->src);
    aj_diag d;
    aj_module *m = parse_infer(c->src, len, &d);
    aj_module_free(m);
    assert_null(m);
    assert_true(d.set);
    if (d.line != c->line || d.col != c->col || !strstr(d.msg, c->msg)) {
        fprintf(stderr, "case %s: want %d:%d \"%s\"\n  got: ", c->name, c->line, c->col, c->msg);
        aj_diag_print(&d, stderr);
    }
    assert_string_equal(d.file, "t.graph");
    assert_int_equal(d.line, c->line);
    assert_int_equal(d.col, c->col);
    assert_non_null(strstr(d.msg, c->msg));
}

/* Every prefix of a model file either parses or fails with a place inside
 * the text: truncation anywhere never crashes, leaks or points nowhere. */
static void test_truncated_model(void **state) {
    (void)state;
    char path[1024];
    source_path(path, sizeof path, "models/nade.graph");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char src[1 << 16];
    size_t n = fread(src, 1, sizeof src, f);
    fclose(f);
    int lines = 1, ok = 0;
    for (size_t i = 0; i < n; i++) lines += src[i] == '\n';
    for (size_t len = 0; len <= n; len++) {
        aj_diag d;
        aj_module *m = parse_infer(src, len, &d);
        if (m) {
            ok++;
            aj_module_free(m);
            continue;
        }
        assert_true(d.line >= 1 && d.line <= lines);
        assert_true(d.col >= 1);
    }
    assert_true(ok >= 1);   /* the whole file (and the file minus its last newline) */
}

/* ------------------------------------------------------------------ the printed diagnostic */

static char *diag_text(const aj_diag *d) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    aj_diag_print(d, f);
    fclose(f);
    return buf;
}

static void test_diag_print(void **state) {
    (void)state;
    /* a tab before the op: the caret line keeps it so the caret lines up */
    static const char src[] = "fn f(x : f32[4]) -> y\n\ty = sigmoidd(x)\nend\n";
    aj_diag d;
    assert_null(aj_parse_string(src, sizeof src - 1, "model.graph", &d));
    char *out = diag_text(&d);
    assert_string_equal(out,
                        "model.graph:2:6: error: unknown op 'sigmoidd' (did you mean 'sigmoid'?)\n"
                        "    \ty = sigmoidd(x)\n"
                        "    \t    ^\n");
    free(out);

    /* binary bytes show as '?' in the quoted line */
    static const char bin[] = "dim D = 4 \x80\n";
    assert_null(aj_parse_string(bin, sizeof bin - 1, "b.graph", &d));
    out = diag_text(&d);
    assert_string_equal(out,
                        "b.graph:1:11: error: unexpected byte 0x80 (is this a text file?)\n"
                        "    dim D = 4 ?\n"
                        "              ^\n");
    free(out);

    /* an error with no place: no line, no caret */
    assert_null(aj_parse_file("/nonexistent/dir/x.graph", &d));
    out = diag_text(&d);
    assert_string_equal(out, "/nonexistent/dir/x.graph: error: cannot open: No such file or directory\n");
    free(out);

    /* no error: prints nothing */
    memset(&d, 0, sizeof d);
    out = diag_text(&d);
    assert_string_equal(out, "");
    free(out);
}

/* The first error wins. */
static void test_diag_first_wins(void **state) {
    (void)state;
    aj_diag d;
    memset(&d, 0, sizeof d);
    assert_int_equal(aj_error(&d, 3, 4, "first %d", 1), -1);
    assert_int_equal(aj_error(&d, 5, 6, "second"), -1);
    assert_int_equal(d.line, 3);
    assert_int_equal(d.col, 4);
    assert_string_equal(d.msg, "first 1");
    assert_int_equal(aj_error(NULL, 1, 1, "ignored"), -1);
}

/* ------------------------------------------------------------------ graphs built by hand */

/* A fn f(x : f32[4]) with no nodes yet, inside a module of its own. */
static aj_module *empty_fn_module(void) {
    static const char src[] = "fn f(x : f32[4]) -> x\nend\n";
    aj_diag d;
    aj_module *m = aj_parse_string(src, sizeof src - 1, "built", &d);
    assert_non_null(m);
    return m;
}

static void test_built_graph_ok(void **state) {
    (void)state;
    aj_module *m = empty_fn_module();
    aj_graph *g = m->fn[0];
    int x = aj_graph_find(g, "x");
    int in[2] = {x, x};
    const char *names[1] = {"y"};
    int n = aj_graph_add_node(g, AJ_OP_ADD, in, 2, 1, names);
    g->result[0] = g->node[n].out[0];
    aj_diag d;
    assert_int_equal(infer_defaults(m, &d), 0);
    char ty[128];
    value_type(m, "f", "y", ty);
    assert_string_equal(ty, "f32[4]");
    char *text = aj_module_text(m);
    assert_string_equal(text, "\nfn f(x : f32[4]) -> y\n  y = add(x, x)\nend\n");
    free(text);
    aj_module_free(m);
}

typedef struct {
    const char *name;
    int forward;         /* 1: the first node reads the second node's result */
    int input;           /* else: this value id as the first node's input */
    int nin, nout;       /* of the first node (a neg) */
    const char *msg;
} built_case;

static const built_case built_cases[] = {
    {"used_before_defined", 1, 0, 1, 1, "neg: input 0 is used before it is defined (a cycle?)"},
    {"input_out_of_range", 0, 999, 1, 1, "neg: input 0 is used before it is defined"},
    {"negative_input", 0, -1, 1, 1, "neg: input 0 is used before it is defined"},
    {"too_many_inputs", 0, 0, 2, 1, "neg: wrong number of inputs (2)"},
    {"too_many_results", 0, 0, 1, 2, "neg: wrong number of results (2)"},
};

static void test_built_graph_errors(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof built_cases / sizeof built_cases[0]; i++) {
        const built_case *c = &built_cases[i];
        aj_module *m = empty_fn_module();
        aj_graph *g = m->fn[0];
        /* the neg's result is value nval, the exp's (added next) nval + nout */
        int first = c->forward ? g->nval + c->nout : c->input;
        int in[2] = {first, 0};
        aj_graph_add_node(g, AJ_OP_NEG, in, c->nin, c->nout, NULL);
        int x = 0;
        aj_graph_add_node(g, AJ_OP_EXP, &x, 1, 1, NULL);
        aj_diag d;
        assert_int_equal(infer_defaults(m, &d), -1);
        if (!strstr(d.msg, c->msg)) fprintf(stderr, "case %s: got \"%s\"\n", c->name, d.msg);
        assert_non_null(strstr(d.msg, c->msg));
        assert_int_equal(d.line, 0);   /* built by hand: no place in a file */
        aj_module_free(m);
    }
}

/* A result id that names no value. */
static void test_built_graph_bad_result(void **state) {
    (void)state;
    aj_module *m = empty_fn_module();
    m->fn[0]->result[0] = 42;
    aj_diag d;
    assert_int_equal(infer_defaults(m, &d), -1);
    assert_non_null(strstr(d.msg, "f: result 0 is undefined"));
    aj_module_free(m);
}

/* ------------------------------------------------------------------ bindings */

static aj_module *load_model(const char *name) {
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "models/%s", name);
    source_path(path, sizeof path, rel);
    aj_diag d;
    aj_module *m = aj_parse_file(path, &d);
    if (!m) aj_diag_print(&d, stderr);
    assert_non_null(m);
    return m;
}

static void test_bind_overrides(void **state) {
    (void)state;
    aj_module *m = load_model("nade.graph");
    aj_bind b;
    aj_diag d;
    char ty[128];
    aj_bind_defaults(m, &b);
    assert_int_equal(b.v[aj_dim_index(m, "D")], 784);
    assert_int_equal(b.v[aj_dim_index(m, "H")], 500);
    assert_int_equal(b.v[aj_dim_index(m, "B")], -1);
    assert_int_equal(aj_module_infer(m, &b, &d), 0);
    value_type(m, "loglik", "lp", ty);
    assert_string_equal(ty, "f32[B, 784]");
    value_type(m, "sample", "x", ty);
    assert_string_equal(ty, "f32[B, 784]");

    assert_int_equal(aj_bind_parse(m, &b, "D=3,B=2,H=5", &d), 0);
    assert_int_equal(aj_module_infer(m, &b, &d), 0);
    value_type(m, "loglik", "lp", ty);
    assert_string_equal(ty, "f32[2, 3]");
    value_type(m, "loglik", "ll", ty);
    assert_string_equal(ty, "f32[2]");
    value_type(m, "loglik", "a0", ty);
    assert_string_equal(ty, "f32[2, 5]");
    value_type(m, "sample", "x", ty);
    assert_string_equal(ty, "f32[2, 3]");
    /* the declared types stay symbolic */
    type_str(m, &m->param[aj_module_param_index(m, "W")].type, ty);
    assert_string_equal(ty, "f32[D, H]");
    aj_module_free(m);
}

typedef struct {
    const char *spec;
    const char *msg;
} bind_case;

static const bind_case bind_cases[] = {
    {"E=3", "--dims: the model has no dim 'E'"},
    {"D=abc", "--dims: bad value for D (want a non-negative integer)"},
    {"D=-1", "--dims: bad value for D"},
    {"D=3x", "--dims: bad value for D"},
    {"D=", "--dims: bad value for D"},
    {"D=2000000000000", "--dims: bad value for D"},
    {"D", "--dims: expected NAME=VALUE in 'D'"},
    {"=3", "--dims: expected NAME=VALUE in '=3'"},
    {"D=3,,B=2", "--dims: expected NAME=VALUE"},
    {"D=1,D=2", "--dims: D is given twice in 'D=1,D=2'"},
    {"D=1,B=2,D=1", "--dims: D is given twice"},
};

static void test_bind_errors(void **state) {
    (void)state;
    aj_module *m = load_model("fvsbn.graph");
    for (size_t i = 0; i < sizeof bind_cases / sizeof bind_cases[0]; i++) {
        aj_bind b;
        aj_diag d;
        memset(&d, 0, sizeof d);
        aj_bind_defaults(m, &b);
        assert_int_equal(aj_bind_parse(m, &b, bind_cases[i].spec, &d), -1);
        if (!strstr(d.msg, bind_cases[i].msg)) fprintf(stderr, "spec '%s': got \"%s\"\n", bind_cases[i].spec, d.msg);
        assert_non_null(strstr(d.msg, bind_cases[i].msg));
        /* the syntax alone (no module) is wrong the same way, but for a name the model lacks */
        memset(&d, 0, sizeof d);
        assert_int_equal(aj_bind_parse(NULL, NULL, bind_cases[i].spec, &d), i == 0 ? 0 : -1);
    }
    aj_diag d = {0};
    assert_int_equal(aj_bind_parse(NULL, NULL, "Q=1,D=0,B=2", &d), 0);
    aj_module_free(m);
}

/* A binding that makes a dim negative or a tensor too large is caught by
 * the verifier, at the declaration. */
static void test_bind_makes_bad_types(void **state) {
    (void)state;
    static const char src[] = "dim D = 4\ndim B\nparam W : f32[D-2]\nfn f(x : f32[B, D]) -> x\nend\n";
    aj_diag d;
    aj_module *m = aj_parse_string(src, sizeof src - 1, "t.graph", &d);
    assert_non_null(m);
    aj_bind b;
    aj_bind_defaults(m, &b);
    assert_int_equal(aj_bind_parse(m, &b, "D=1", &d), 0);
    assert_int_equal(aj_module_infer(m, &b, &d), -1);
    assert_int_equal(d.line, 3);
    assert_int_equal(d.col, 7);
    assert_string_equal(d.msg, "parameter has a negative dimension: f32[-1]");
    memset(&d, 0, sizeof d);
    assert_int_equal(aj_bind_parse(m, &b, "D=2000000,B=2000000", &d), 0);
    assert_int_equal(aj_module_infer(m, &b, &d), -1);
    assert_int_equal(d.line, 4);
    assert_int_equal(d.col, 6);
    assert_string_equal(d.msg, "argument is too large: f32[2000000, 2000000] (at most 2^40 elements)");
    aj_module_free(m);
}

/* ------------------------------------------------------------------ dims */

/* A module with dims A, B, C (indices 0, 1, 2) to print dims by name. */
static aj_module *dims_module(void) {
    static const char src[] = "dim A\ndim B\ndim C = 7\nfn f(x : f32[A]) -> x\nend\n";
    aj_diag d;
    aj_module *m = aj_parse_string(src, sizeof src - 1, "dims", &d);
    assert_non_null(m);
    return m;
}

#define A_ aj_dim_sym(0)
#define B_ aj_dim_sym(1)
#define K(v) aj_dim_const(v)
#define BIG (INT64_MAX / 2 + 1)

/* The dim `expr` over the dims of dims_module(), as the parser reads it. */
static aj_dim dim_of(const char *expr) {
    char src[256];
    snprintf(src, sizeof src, "dim A\ndim B\ndim C = 7\nfn f(x : f32[%s]) -> x\nend\n", expr);
    aj_diag d;
    aj_module *m = aj_parse_string(src, strlen(src), "dims", &d);
    if (!m) fail_msg("%s: %s", expr, d.msg);
    aj_dim r = m->fn_arg_type[0][0].dim[0];
    aj_module_free(m);
    return r;
}

/* Sums, differences and products of polynomials, in canonical print order
 * (products before their prefixes, dims in declaration order, constant
 * last); each printed result parses back to an equal dim. */
static const struct {
    char op;             /* + - * */
    const char *a, *b;
    const char *want;    /* printed result, or NULL: more than an aj_dim holds */
} dim_cases[] = {
    {'+', "A", "3", "A+3"},
    {'+', "A", "A", "2*A"},
    {'+', "A", "B", "A+B"},
    {'+', "B+A*A", "C", "A*A+B+C"},
    {'+', "A*B", "2*A*B-1", "3*A*B-1"},
    {'-', "A+5", "A+2", "3"},
    {'-', "3", "A", "-A+3"},
    {'-', "A", "A", "0"},
    {'-', "A", "B", "A-B"},
    {'-', "A*B+A", "A*(B+1)", "0"},
    {'*', "2", "A+1", "2*A+2"},
    {'*', "A", "B", "A*B"},
    {'*', "2*A", "3*A*B", "6*A*A*B"},
    {'*', "A+1", "B", "A*B+B"},
    {'*', "A+1", "A-1", "A*A-1"},
    {'*', "A+B", "A-B", "A*A-B*B"},
    {'*', "A", "0", "0"},
    {'*', "-1", "B+4", "-B-4"},
    {'*', "(A+1)*(B+1)", "C+1", "A*B*C+A*B+A*C+A+B*C+B+C+1"},
    {'*', "A*A*A*A", "A*A*A*B", "A*A*A*A*A*A*A*B"},
    {'*', "A*A*A*A", "A*A*A*A*B", NULL},                     /* degree 9 */
    {'*', "A*B*C+A*B+A*C+A+B*C+B+C", "A+B", NULL},            /* 12 terms */
    {'+', "A*B*C+A*B+A*C+A+B*C+B+C", "A*A+B*B", NULL},        /* 9 terms */
    {'-', "A*B*C+A*B+A*C+A+B*C+B+C", "A*B*C-A*A", "A*A+A*B+A*C+A+B*C+B+C"},
};

static void test_dim_arithmetic(void **state) {
    (void)state;
    aj_module *m = dims_module();
    for (size_t i = 0; i < sizeof dim_cases / sizeof dim_cases[0]; i++) {
        aj_dim a = dim_of(dim_cases[i].a), b = dim_of(dim_cases[i].b), r = K(-12345);
        const char *want = dim_cases[i].want;
        char op = dim_cases[i].op, buf[128];
        int rc = op == '+' ? aj_dim_add(a, b, &r) : op == '-' ? aj_dim_sub(a, b, &r) : aj_dim_mul(a, b, &r);
        aj_dim_str(m, r, buf, sizeof buf);
        if (rc != (want ? 0 : AJ_DIM_TOO_LONG) || (want && strcmp(buf, want)))
            fail_msg("(%s) %c (%s): rc %d, %s", dim_cases[i].a, op, dim_cases[i].b, rc, buf);
        if (want) assert_true(aj_dim_eq(dim_of(buf), r));
        else assert_true(aj_dim_eq(r, K(-12345)));   /* untouched on failure */
    }
    /* overflow is refused, never wrapped */
    aj_dim r = K(-12345), maxa, biga;
    assert_int_equal(aj_dim_mul(K(INT64_MAX), A_, &maxa), 0);
    assert_int_equal(aj_dim_mul(K(BIG), A_, &biga), 0);
    assert_int_equal(aj_dim_add(K(INT64_MAX), K(1), &r), AJ_DIM_OVERFLOW);
    assert_int_equal(aj_dim_add(maxa, A_, &r), AJ_DIM_OVERFLOW);
    assert_int_equal(aj_dim_sub(K(0), K(INT64_MIN), &r), AJ_DIM_OVERFLOW);
    assert_int_equal(aj_dim_sub(K(INT64_MIN), K(1), &r), AJ_DIM_OVERFLOW);
    assert_int_equal(aj_dim_mul(K(BIG), K(2), &r), AJ_DIM_OVERFLOW);
    assert_int_equal(aj_dim_mul(biga, K(2), &r), AJ_DIM_OVERFLOW);
    aj_dim abc;
    assert_int_equal(aj_dim_mul(biga, B_, &abc), 0);
    assert_int_equal(aj_dim_mul(abc, aj_dim_sym(2), &abc), 0);   /* BIG*A*B*C */
    r = abc;
    assert_int_equal(aj_dim_mul(abc, K(2), &r), AJ_DIM_OVERFLOW);
    assert_true(aj_dim_eq(r, abc));
    aj_module_free(m);
}

static void test_dim_basics(void **state) {
    (void)state;
    aj_module *m = dims_module();
    char buf[64];
    assert_true(aj_dim_is_const(K(5)));
    assert_false(aj_dim_is_const(A_));
    assert_true(aj_dim_eq(K(5), dim_of("3+2")));
    assert_true(aj_dim_eq(K(4), dim_of("A*0+4")));           /* a zero term vanishes */
    assert_true(aj_dim_eq(dim_of("(A+1)*B"), dim_of("B+A*B")));
    assert_true(aj_dim_eq(dim_of("A*(B+C)"), dim_of("C*A+B*A")));
    assert_false(aj_dim_eq(A_, B_));
    assert_false(aj_dim_eq(A_, K(1)));
    assert_false(aj_dim_eq(dim_of("A*A"), dim_of("A*B")));
    aj_dim zero;
    memset(&zero, 0, sizeof zero);
    assert_true(aj_dim_eq(zero, K(0)));
    assert_int_equal(aj_dim_syms(dim_of("A*C+2")), 5);
    assert_int_equal(aj_dim_syms(K(3)), 0);
    assert_int_equal(aj_dim_index(m, "B"), 1);
    assert_int_equal(aj_dim_index(m, "Z"), -1);
    aj_dim_str(m, dim_of("-2*A*B-7"), buf, sizeof buf);
    assert_string_equal(buf, "-2*A*B-7");
    aj_dim_str(m, K(-3), buf, sizeof buf);
    assert_string_equal(buf, "-3");
    aj_dim_str(m, aj_dim_sym(2), buf, sizeof buf);
    assert_string_equal(buf, "C");
    aj_dim_str(m, dim_of("A*B"), buf, 4);   /* truncated, still terminated */
    assert_string_equal(buf, "A*B");
    aj_dim_str(m, dim_of("A*B+C"), buf, 3);
    assert_string_equal(buf, "A*");
    aj_type t = {AJ_I32, 2, {A_, K(3)}};
    aj_type_str(m, &t, buf, sizeof buf);
    assert_string_equal(buf, "i32[A, 3]");
    aj_type u = {AJ_I32, 2, {dim_of("A"), dim_of("1+2")}};
    assert_true(aj_type_eq(&t, &u));
    u.dtype = AJ_F32;
    assert_false(aj_type_eq(&t, &u));
    aj_module_free(m);
}

static void test_dim_bind(void **state) {
    (void)state;
    aj_module *m = dims_module();
    aj_bind b;
    aj_bind_defaults(m, &b);
    assert_int_equal(b.v[0], -1);
    assert_int_equal(b.v[2], 7);
    char buf[64];
    aj_dim ab1 = dim_of("2*A*B+1");
    b.v[2] = -1;
    aj_dim_str(m, aj_dim_bind(ab1, &b), buf, sizeof buf);
    assert_string_equal(buf, "2*A*B+1");   /* nothing bound */
    b.v[0] = 3;
    aj_dim_str(m, aj_dim_bind(ab1, &b), buf, sizeof buf);
    assert_string_equal(buf, "6*B+1");
    aj_dim_str(m, aj_dim_bind(dim_of("A*B+2*B+A*A*C-9*C"), &b), buf, sizeof buf);
    assert_string_equal(buf, "5*B");      /* terms that become alike merge; C*(9-9) vanishes */
    b.v[1] = 5, b.v[2] = 7;
    assert_true(aj_dim_eq(aj_dim_bind(ab1, &b), K(31)));
    aj_dim_str(m, aj_dim_bind(dim_of("C-2"), &b), buf, sizeof buf);
    assert_string_equal(buf, "5");
    assert_true(aj_dim_eq(aj_dim_bind(dim_of("A*A*B-A*C"), &b), K(24)));
    /* sizes too large come out as INT64_MAX (the verifier rejects it) instead of wrapping */
    b.v[0] = b.v[1] = 1ll << 40;
    assert_true(aj_dim_eq(aj_dim_bind(dim_of("A*B+1"), &b), K(INT64_MAX)));
    assert_true(aj_dim_eq(aj_dim_bind(dim_of("-A*B"), &b), K(INT64_MAX)));
    assert_true(aj_dim_eq(aj_dim_bind(dim_of("A*B-A*B*C"), &b), K(INT64_MAX)));
    b.v[0] = INT64_MAX / 4, b.v[1] = 1;   /* the product fits, adding the constant does not */
    aj_dim big;
    assert_int_equal(aj_dim_add(dim_of("4*A*B"), K(INT64_MAX / 2), &big), 0);
    assert_true(aj_dim_eq(aj_dim_bind(big, &b), K(INT64_MAX)));
    aj_module_free(m);
}

/* Printed in full however long: dims of 63-character names in a type and a
 * dim attribute print, parse back and print the same. */
static void test_dim_print_long(void **state) {
    (void)state;
    char name[3][64], src[2048];
    for (int k = 0; k < 3; k++) memset(name[k], 'a' + k, 63), name[k][63] = 0;
    snprintf(src, sizeof src,
             "dim %s\ndim %s\ndim %s\n\nfn f(x : f32[(%s+1)*%s*%s, 2]) -> y\n  y = slice(x, axis=0, start=1, end=%s*%s*%s)\nend\n",
             name[0], name[1], name[2], name[0], name[1], name[2], name[0], name[1], name[2]);
    aj_diag d;
    aj_module *m = aj_parse_string(src, strlen(src), "long", &d);
    assert_non_null(m);
    char *text = aj_module_text(m);
    aj_module *m2 = aj_parse_string(text, strlen(text), "printed", &d);
    assert_non_null(m2);
    char *text2 = aj_module_text(m2);
    assert_string_equal(text, text2);
    assert_non_null(strstr(text, "+bbb"));   /* the second term of the product, whole */
    assert_true(aj_dim_eq(m->fn_arg_type[0][0].dim[0], m2->fn_arg_type[0][0].dim[0]));
    free(text), free(text2);
    aj_module_free(m), aj_module_free(m2);
}

/* ------------------------------------------------------------------ name index */

/* aj_graph_find through adds, a duplicate, renames, a swap and a clone; and
 * the index stays a hash: no chain grows long, so lookups stay O(1) and a
 * graph of n values is built and checked in O(n) (a scan per lookup made
 * `arjit check` quadratic in the number of statements). */
static void test_name_index(void **state) {
    (void)state;
    enum { N = 5000 };
    aj_graph *g = aj_graph_new("f");
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "v%d", i);
        assert_int_equal(aj_graph_add_value(g, name, AJ_VAL_INPUT, -1, i), i);
    }
    int dup = aj_graph_add_value(g, "v5", AJ_VAL_INPUT, -1, N);
    assert_int_equal(aj_graph_find(g, "v5"), dup);   /* the latest definition */
    assert_int_equal(aj_graph_find(g, "v6"), 6);
    assert_int_equal(aj_graph_find(g, "w"), -1);
    aj_value_rename(g, dup, "v7");                    /* taken: becomes v7_2 */
    assert_string_equal(g->val[dup].name, "v7_2");
    assert_int_equal(aj_graph_find(g, "v5"), 5);      /* the older one shows again */
    assert_int_equal(aj_graph_find(g, "v7_2"), dup);
    aj_value_swap_names(g, 5, 6);
    assert_int_equal(aj_graph_find(g, "v5"), 6);
    assert_int_equal(aj_graph_find(g, "v6"), 5);
    int fresh = aj_graph_add_value(g, NULL, AJ_VAL_INPUT, -1, 0);
    assert_int_equal(aj_graph_find(g, g->val[fresh].name), fresh);
    aj_graph *c = aj_graph_clone(g);
    for (int i = 0; i < c->nval; i++) assert_int_equal(aj_graph_find(c, c->val[i].name), i);
    int longest = 0;
    for (int b = 0; b < c->nbucket; b++) {
        int len = 0;
        for (int v = c->hash_head[b]; v >= 0; v = c->hash_next[v]) len++;
        longest = len > longest ? len : longest;
    }
    assert_true(c->nbucket >= 2 * c->nval);
    assert_in_range(longest, 1, 8);
    aj_graph_free(c), aj_graph_free(g);
}

/* A fn has any number of arguments and results: 100 of each, result k the
 * negation of argument k, in order. */
static void test_many_args_results(void **state) {
    (void)state;
    enum { N = 100 };
    char *src = malloc(64 * N), *s = src;
    s += sprintf(s, "fn f(");
    for (int k = 0; k < N; k++) s += sprintf(s, "%sx%d : f32[2]", k ? ", " : "", k);
    s += sprintf(s, ") -> ");
    for (int k = 0; k < N; k++) s += sprintf(s, "%sy%d", k ? ", " : "", k);
    s += sprintf(s, "\n");
    for (int k = 0; k < N; k++) s += sprintf(s, "  y%d = -x%d\n", k, k);
    sprintf(s, "end\n");
    aj_diag d = {0};
    aj_module *m = aj_parse_string(src, strlen(src), "t.graph", &d);
    if (!m) fail_msg("%s", d.msg);
    const aj_graph *g = m->fn[0];
    assert_int_equal(g->nleaf, N);
    assert_int_equal(g->nresult, N);
    for (int k = 0; k < N; k++) {
        const aj_node *n = &g->node[g->val[g->result[k]].node];
        assert_int_equal(n->op, AJ_OP_NEG);
        assert_int_equal(n->in[0], g->leaf[k]);
    }
    aj_module_free(m);
    free(src);
}

/* A generated chain of 50000 statements v_i = add(v_{i-1}, x) parses, checks
 * and prints back as written: this takes well under a second when each statement costs
 * O(1), and minutes if a pass turns quadratic again. */
static void test_long_chain(void **state) {
    (void)state;
    enum { N = 50000 };
    size_t cap = (size_t)N * 40 + 100, len = 0;
    char *src = malloc(cap);
    assert_non_null(src);
    len += (size_t)snprintf(src, cap, "dim B\n\nfn f(x : f32[B, 4]) -> v%d\n  v1 = add(x, x)\n", N);
    for (int i = 2; i <= N; i++) len += (size_t)snprintf(src + len, cap - len, "  v%d = add(v%d, x)\n", i, i - 1);
    len += (size_t)snprintf(src + len, cap - len, "end\n");
    aj_diag d;
    aj_module *m = parse_infer(src, len, &d);
    assert_non_null(m);
    const aj_graph *g = m->fn[0];
    assert_int_equal(g->nnode, N);
    char buf[128];
    value_type(m, "f", "v50000", buf);
    assert_string_equal(buf, "f32[B, 4]");
    char *text = aj_module_text(m);
    assert_string_equal(text, src);
    free(text), free(src);
    aj_module_free(m);
}

/* ------------------------------------------------------------------ main */

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_models),
        cmocka_unit_test(test_round_trip_seeds),
        cmocka_unit_test(test_truncated_model),
        cmocka_unit_test(test_diag_print),
        cmocka_unit_test(test_diag_first_wins),
        cmocka_unit_test(test_built_graph_ok),
        cmocka_unit_test(test_built_graph_errors),
        cmocka_unit_test(test_built_graph_bad_result),
        cmocka_unit_test(test_bind_overrides),
        cmocka_unit_test(test_bind_errors),
        cmocka_unit_test(test_bind_makes_bad_types),
        cmocka_unit_test(test_dim_arithmetic),
        cmocka_unit_test(test_dim_basics),
        cmocka_unit_test(test_dim_bind),
        cmocka_unit_test(test_dim_print_long),
        cmocka_unit_test(test_name_index),
        cmocka_unit_test(test_long_chain),
        cmocka_unit_test(test_many_args_results),
    };
    enum { NBAD = sizeof bad_cases / sizeof bad_cases[0] };
    struct CMUnitTest bad[NBAD];
    for (int i = 0; i < NBAD; i++)
        bad[i] = (struct CMUnitTest){bad_cases[i].name, test_bad_case, NULL, NULL, (void *)&bad_cases[i]};
    int fails = cmocka_run_group_tests_name("parse", tests, NULL, NULL);
    fails += _cmocka_run_group_tests("malformed", bad, NBAD, NULL, NULL);
    return fails ? 1 : 0;
}
