/* Dimensions as coef * (product of named dims) + off.
 *
 * Shapes stay symbolic in the batch and sequence dims (B, T) so a graph is
 * checked once for every batch size; the runtime binds them to numbers. */
#include "arjit.h"
#include <stdio.h>
#include <string.h>

aj_dim aj_dim_const(int64_t v) { return (aj_dim){0, 0, v}; }
aj_dim aj_dim_sym(int k) { return (aj_dim){1, 1ull << k, 0}; }
int aj_dim_is_const(aj_dim d) { return d.syms == 0; }

/* Normal form: a constant has coef 0, and coef 0 means no symbols. */
static aj_dim norm(aj_dim d) {
    if (d.syms == 0 || d.coef == 0) return (aj_dim){0, 0, d.off + (d.syms == 0 ? d.coef : 0)};
    return d;
}

int aj_dim_eq(aj_dim a, aj_dim b) {
    a = norm(a), b = norm(b);
    return a.coef == b.coef && a.syms == b.syms && a.off == b.off;
}

/* Checked int64 arithmetic: dims come from user files and must not overflow. */
static int add64(int64_t a, int64_t b, int64_t *r) { return __builtin_add_overflow(a, b, r) ? -1 : 0; }
static int mul64(int64_t a, int64_t b, int64_t *r) { return __builtin_mul_overflow(a, b, r) ? -1 : 0; }

int aj_dim_add(aj_dim a, aj_dim b, aj_dim *out) {
    a = norm(a), b = norm(b);
    if (a.syms && b.syms && a.syms != b.syms) return -1;
    aj_dim r = {0, a.syms | b.syms, 0};
    if (add64(a.coef, b.coef, &r.coef) || add64(a.off, b.off, &r.off)) return -1;
    *out = norm(r);
    return 0;
}

int aj_dim_sub(aj_dim a, aj_dim b, aj_dim *out) {
    b = norm(b);
    if (b.coef == INT64_MIN || b.off == INT64_MIN) return -1;
    return aj_dim_add(a, (aj_dim){-b.coef, b.syms, -b.off}, out);
}

int aj_dim_mul(aj_dim a, aj_dim b, aj_dim *out) {
    a = norm(a), b = norm(b);
    if (!a.syms || !b.syms) {           /* k * (c S + o) = kc S + ko */
        if (a.syms) { aj_dim t = a; a = b; b = t; }
        int64_t k = a.off;
        aj_dim r = {0, b.syms, 0};
        if (mul64(k, b.coef, &r.coef) || mul64(k, b.off, &r.off)) return -1;
        *out = norm(r);
        return 0;
    }
    if (a.off || b.off || (a.syms & b.syms)) return -1;  /* (T+1)*B, T*T */
    aj_dim r = {0, a.syms | b.syms, 0};
    if (mul64(a.coef, b.coef, &r.coef)) return -1;
    *out = r;
    return 0;
}

aj_dim aj_dim_bind(aj_dim d, const aj_bind *b) {
    d = norm(d);
    for (int k = 0; k < AJ_MAX_DIMS && d.syms; k++) {
        uint64_t bit = 1ull << k;
        if (!(d.syms & bit) || b->v[k] < 0) continue;
        /* saturate on overflow: the verifier rejects dims this large anyway */
        int64_t c;
        if (mul64(d.coef, b->v[k], &c)) c = d.coef < 0 ? INT64_MIN : INT64_MAX;
        d.coef = c;
        d.syms &= ~bit;
    }
    if (!d.syms) {   /* all bound: a number (norm() would overflow where this saturates) */
        int64_t v;
        if (add64(d.coef, d.off, &v)) v = d.coef < 0 ? INT64_MIN : INT64_MAX;
        return aj_dim_const(v);
    }
    return norm(d);
}

void aj_dim_str(const aj_module *m, aj_dim d, char *buf, size_t n) {
    d = norm(d);
    size_t len = 0;
    buf[0] = 0;
#define PUT(...) (len += (size_t)snprintf(buf + (len < n ? len : n - 1), len < n ? n - len : 1, __VA_ARGS__))
    if (!d.syms) {
        PUT("%lld", (long long)d.off);
        return;
    }
    if (d.coef != 1) PUT("%lld*", (long long)d.coef);
    int first = 1;
    for (int k = 0; k < AJ_MAX_DIMS; k++) {
        if (!(d.syms & (1ull << k))) continue;
        PUT("%s%s", first ? "" : "*", m && k < m->ndim ? m->dim[k].name : "?");
        first = 0;
    }
    if (d.off > 0) PUT("+%lld", (long long)d.off);
    if (d.off < 0) PUT("-%lld", -(long long)d.off);
#undef PUT
}

void aj_type_str(const aj_module *m, const aj_type *t, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "%s[", t->dtype == AJ_F32 ? "f32" : "i32");
    for (int i = 0; i < t->rank && len < n; i++) {
        if (i) len += (size_t)snprintf(buf + len, n - len, ", ");
        if (len < n) aj_dim_str(m, t->dim[i], buf + len, n - len);
        len = strlen(buf);
    }
    if (len < n) snprintf(buf + len, n - len, "]");
}

int aj_type_eq(const aj_type *a, const aj_type *b) {
    if (a->dtype != b->dtype || a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (!aj_dim_eq(a->dim[i], b->dim[i])) return 0;
    return 1;
}
