/* Reverse-mode autodiff against finite differences (aj_gradcheck).
 *
 * Every differentiable op gets a tiny graph in the table (tests/op_cases.h): parameters
 * feed the op (through both of its inputs where it has two), and the loss
 * is the mean of a per-example value or a square of the op's result, so
 * the adjoint reaching the op is not uniform and a wrong arrangement of it
 * (a bad transpose, a slice put back in the wrong place) shows. Then every
 * model in models/ is checked at small dims, and its gradient fn must print
 * and parse back to the same text.
 *
 * aj_gradcheck draws parameters from N(0, 0.5^2) and fills f32 inputs with
 * 0/1 (i32 inputs 0/1 too), so the graphs below keep arguments of log and
 * sqrt positive (through exp), and keep the kinks of relu, maximum and max
 * further than the finite-difference step from every value (KINK_GAP,
 * SEPARATED). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "arjit.h"
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Central differences in f32: the loss carries ~1e-7 relative rounding, so
 * a step of 1e-2 keeps that noise (~1e-5 / step) and the truncation error
 * (~step^2 f''' / 6) both well under the tolerance. */
#define EPS 1e-2
#define TOL 1e-2
#define PROBES 24
#define SEED 11

/* ------------------------------------------------------------ helpers */

/* Parse src, bind `dims` over the declared values and infer; NULL with the
 * diagnostic printed on failure. */
static aj_module *load(const char *src, size_t len, const char *path, const char *dims) {
    aj_diag d = {0};
    aj_module *m = aj_load_string(src, len, path, dims, NULL, &d);
    if (!m) aj_diag_print(&d, stderr);
    return m;
}

/* Gradient-check fn of m; every parameter it uses must be probed and agree
 * within TOL. Prints one line per parameter; returns the number failing. */
static int check(aj_module *m, const char *fn, const char *what) {
    aj_gradcheck_result res[64];
    int nres = 0, bad = 0;
    aj_diag d = {0};
    assert_true(m->nparam <= COUNT(res));
    if (aj_gradcheck(m, fn, SEED, PROBES, EPS, res, &nres, &d)) {
        aj_diag_print(&d, stderr);
        fprintf(stderr, "%s: gradcheck failed to run: %s\n", what, d.msg);
        return 1;
    }
    if (nres == 0) fprintf(stderr, "%s: no parameter was checked\n", what);
    for (int i = 0; i < nres; i++) {
        const aj_gradcheck_result *r = &res[i];
        int ok = r->probes > 0 && r->max_rel_err < TOL;
        printf("  %-28s %-6s %3d/%-4lld probes  max rel err %.2e%s\n", what, r->name, r->probes,
               (long long)r->numel, r->max_rel_err, ok ? "" : "  FAIL");
        if (!ok)
            fprintf(stderr, "%s: d_%s off: analytic %.6g vs numeric %.6g (rel err %.3g, %d probes)\n", what,
                    r->name, r->worst_analytic, r->worst_numeric, r->max_rel_err, r->probes);
        bad += !ok;
    }
    return bad + (nres == 0);
}

/* ------------------------------------------------------------ every op has a rule */

static void test_every_op_has_gradient(void **state) {
    int missing = 0;
    for (int op = 0; op < AJ_OP_COUNT; op++)
        if (!aj_has_gradient((aj_op)op)) {
            fprintf(stderr, "op %s has no gradient rule and is neither NODIFF nor RAND\n",
                    aj_op_info((aj_op)op)->name);
            missing++;
        }
    assert_int_equal(missing, 0);
}

/* ------------------------------------------------------------ the op table */

#include "op_cases.h"

/* m (with its gradient fn `grad`, built under binding `dims`) prints,
 * parses back and verifies under the same binding, and prints the same. */
static void roundtrip(const aj_module *m, const char *grad, const char *dims, const char *what) {
    char *t1 = aj_module_text(m);
    aj_module *m2 = load(t1, strlen(t1), "printed", dims);
    if (!m2) {
        fputs(t1, stderr);
        fail_msg("%s: the printed gradient does not load", what);
    }
    assert_non_null(aj_module_fn(m2, grad));
    char *t2 = aj_module_text(m2);
    assert_string_equal(t1, t2);
    free(t1), free(t2);
    aj_module_free(m2);
}

/* One case: load it, check its first fn, and round-trip its gradient. */
static void test_case(void **state) {
    const gcase *c = *state;
    aj_module *m = load(c->src, strlen(c->src), c->name, c->dims);
    if (!m) fail_msg("%s: the graph does not load", c->name);
    char grad[96];
    snprintf(grad, sizeof grad, "grad_%s", m->fn[0]->name);
    int bad = check(m, m->fn[0]->name, c->name);
    if (!bad) roundtrip(m, grad, c->dims, c->name);
    aj_module_free(m);
    if (bad) fail_msg("%s: %d parameter(s) fail the gradient check", c->name, bad);
}

/* ------------------------------------------------------------ the models */

/* Dims for a model at test size, B=2: every dim with a value is set to
 * 3..6 (so transposed axes differ), or with `same`, all to 4 (for models
 * that need some dims equal). A model whose dims must satisfy more (D = H*W)
 * needs its own binding here. */
static void small_dims(const aj_module *m, int same, char *spec, size_t n) {
    size_t len = (size_t)snprintf(spec, n, "B=2");
    for (int i = 0, k = 0; i < m->ndim && len < n; i++)
        if (m->dim[i].has_value)
            len += (size_t)snprintf(spec + len, n - len, ",%s=%d", m->dim[i].name, same ? 4 : 3 + k++ % 4);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void test_model_gradcheck(void **state) {
    const char *path = *state;
    size_t len;
    char *src = read_file(path, &len), spec[512];
    aj_diag d = {0};
    aj_module *m = aj_parse_string(src, len, path, &d);
    if (!m) {
        aj_diag_print(&d, stderr);
        fail_msg("%s does not parse", path);
    }
    aj_module *small = NULL;
    for (int same = 0; same < 2 && !small; same++) {
        small_dims(m, same, spec, sizeof spec);
        small = load(src, len, path, spec);
    }
    aj_module_free(m);
    m = small;
    if (!m) fail_msg("%s: does not load with small dims (last tried %s)", path, spec);
    printf("  %s with %s\n", path, spec);
    int bad = check(m, "loglik", path);
    aj_module_free(m);
    free(src);
    if (bad) fail_msg("%s: %d parameter(s) fail the gradient check", path, bad);
}

/* grad_loglik of the model as declared (B free) prints, parses back,
 * verifies and prints the same text. */
static void test_model_grad_roundtrip(void **state) {
    const char *path = *state;
    size_t len;
    char *src = read_file(path, &len);
    aj_module *m = load(src, len, path, "");
    aj_diag d = {0};
    if (!m) fail_msg("%s does not load", path);
    if (!aj_autodiff(m, "loglik", &d)) {
        aj_diag_print(&d, stderr);
        fail_msg("%s: autodiff: %s", path, d.msg);
    }
    roundtrip(m, "grad_loglik", "", path);
    aj_module_free(m);
    free(src);
}

/* ------------------------------------------------------------ main */

int main(void) {
    const struct CMUnitTest basics[] = {cmocka_unit_test(test_every_op_has_gradient)};
    struct CMUnitTest ops[COUNT(cases)];
    for (int i = 0; i < COUNT(cases); i++)
        ops[i] = (struct CMUnitTest){cases[i].name, test_case, NULL, NULL, (void *)&cases[i]};

    const char *root = getenv("ARJIT_SOURCE_DIR");
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s/models/*.graph", root ? root : ".");
    glob_t gl;
    if (glob(pattern, 0, NULL, &gl) || gl.gl_pathc == 0) {
        fprintf(stderr, "no models match %s (set ARJIT_SOURCE_DIR)\n", pattern);
        return 1;
    }
    /* per model: its gradient check, then its gradient's round trip */
    int nm = (int)gl.gl_pathc;
    struct CMUnitTest models[2 * nm];
    char (*names)[2][160] = calloc((size_t)nm, sizeof *names);
    assert_non_null(names);
    for (int i = 0; i < nm; i++) {
        const char *base = strrchr(gl.gl_pathv[i], '/') ? strrchr(gl.gl_pathv[i], '/') + 1 : gl.gl_pathv[i];
        snprintf(names[i][0], sizeof names[i][0], "gradcheck %s", base);
        snprintf(names[i][1], sizeof names[i][1], "grad roundtrip %s", base);
        models[2 * i] = (struct CMUnitTest){names[i][0], test_model_gradcheck, NULL, NULL, gl.gl_pathv[i]};
        models[2 * i + 1] = (struct CMUnitTest){names[i][1], test_model_grad_roundtrip, NULL, NULL, gl.gl_pathv[i]};
    }
    int fails = cmocka_run_group_tests_name("has_gradient", basics, NULL, NULL);
    fails += cmocka_run_group_tests_name("op_gradients", ops, NULL, NULL);
    fails += cmocka_run_group_tests_name("models", models, NULL, NULL);
    free(names);
    globfree(&gl);
    return fails;
}
