/* Dimensions as polynomials in the named dims with integer coefficients.
 *
 * Shapes stay symbolic in the batch and sequence dims (B, T) so a graph is
 * checked once for every batch size; the runtime binds them to numbers.
 * Every operation forms a sum of terms and brings it to the canonical form
 * of aj_dim (include/arjit.h): like terms merged, zero terms dropped, the
 * rest sorted by their factor lists. Two polynomials that agree on every
 * value of their dims have the same coefficients, so equal dims (as
 * functions of the dims) are equal structs and aj_dim_eq compares fields. */
#include "arjit.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

aj_dim aj_dim_const(int64_t v) {
    aj_dim d;
    memset(&d, 0, sizeof d);
    d.off = v;
    return d;
}

aj_dim aj_dim_sym(int k) {
    aj_dim d = aj_dim_const(0);
    d.nterm = 1;
    d.t[0].coef = 1;
    memset(d.t[0].dim, AJ_DIM_NONE, AJ_DIM_DEGREE);
    d.t[0].dim[0] = (uint8_t)k;
    return d;
}

int aj_dim_is_const(aj_dim d) { return d.nterm == 0; }

int aj_dim_eq(aj_dim a, aj_dim b) {
    return a.off == b.off && a.nterm == b.nterm && !memcmp(a.t, b.t, (size_t)a.nterm * sizeof a.t[0]);
}

uint64_t aj_dim_syms(aj_dim d) {
    uint64_t s = 0;
    for (int i = 0; i < d.nterm; i++)
        for (int k = 0; k < AJ_DIM_DEGREE && d.t[i].dim[k] != AJ_DIM_NONE; k++) s |= 1ull << d.t[i].dim[k];
    return s;
}

/* Checked int64 arithmetic: dims come from user files and must not overflow. */
static int add64(int64_t a, int64_t b, int64_t *r) { return __builtin_add_overflow(a, b, r) ? AJ_DIM_OVERFLOW : 0; }
static int mul64(int64_t a, int64_t b, int64_t *r) { return __builtin_mul_overflow(a, b, r) ? AJ_DIM_OVERFLOW : 0; }

/* A sum being formed: room for the product of two dims, term by term; the
 * constant is a term without factors (all AJ_DIM_NONE). */
typedef struct {
    int n;
    aj_dim_term t[(AJ_DIM_TERMS + 1) * (AJ_DIM_TERMS + 1)];
} sum;

static void push(sum *s, int64_t coef, const uint8_t *dim) {
    if (!coef) return;
    s->t[s->n].coef = coef;
    memcpy(s->t[s->n++].dim, dim, AJ_DIM_DEGREE);
}

static void push_const(sum *s, int64_t c) {
    uint8_t none[AJ_DIM_DEGREE];
    memset(none, AJ_DIM_NONE, AJ_DIM_DEGREE);
    push(s, c, none);
}

/* The terms of d into s, each coefficient times k. */
static int push_dim(sum *s, aj_dim d, int64_t k) {
    int64_t c;
    if (mul64(d.off, k, &c)) return AJ_DIM_OVERFLOW;
    push_const(s, c);
    for (int i = 0; i < d.nterm; i++) {
        if (mul64(d.t[i].coef, k, &c)) return AJ_DIM_OVERFLOW;
        push(s, c, d.t[i].dim);
    }
    return 0;
}

static int cmp_term(const void *a, const void *b) {
    return memcmp(((const aj_dim_term *)a)->dim, ((const aj_dim_term *)b)->dim, AJ_DIM_DEGREE);
}

/* The canonical dim of s. The constant's factor list (all 0xff) sorts last. */
static int finish(sum *s, aj_dim *out) {
    qsort(s->t, (size_t)s->n, sizeof s->t[0], cmp_term);
    aj_dim r = aj_dim_const(0);
    for (int i = 0; i < s->n;) {
        aj_dim_term t = s->t[i++];
        for (; i < s->n && !cmp_term(&s->t[i], &t); i++)
            if (add64(t.coef, s->t[i].coef, &t.coef)) return AJ_DIM_OVERFLOW;
        if (!t.coef) continue;
        if (t.dim[0] == AJ_DIM_NONE) {
            r.off = t.coef;
        } else {
            if (r.nterm == AJ_DIM_TERMS) return AJ_DIM_TOO_LONG;
            r.t[r.nterm++] = t;
        }
    }
    *out = r;
    return 0;
}

int aj_dim_add(aj_dim a, aj_dim b, aj_dim *out) {
    sum s = {0};
    int rc = push_dim(&s, a, 1);
    if (!rc) rc = push_dim(&s, b, 1);
    return rc ? rc : finish(&s, out);
}

int aj_dim_sub(aj_dim a, aj_dim b, aj_dim *out) {
    sum s = {0};
    int rc = push_dim(&s, a, 1);
    if (!rc) rc = push_dim(&s, b, -1);
    return rc ? rc : finish(&s, out);
}

/* The factors of a product: the merge of two ascending lists. */
static int mul_factors(const uint8_t *a, const uint8_t *b, uint8_t *r) {
    memset(r, AJ_DIM_NONE, AJ_DIM_DEGREE);
    for (int i = 0, j = 0, k = 0;;) {
        int x = i < AJ_DIM_DEGREE ? a[i] : AJ_DIM_NONE, y = j < AJ_DIM_DEGREE ? b[j] : AJ_DIM_NONE;
        if (x == AJ_DIM_NONE && y == AJ_DIM_NONE) return 0;
        if (k == AJ_DIM_DEGREE) return AJ_DIM_TOO_LONG;
        if (x <= y) r[k++] = (uint8_t)x, i++;
        else r[k++] = (uint8_t)y, j++;
    }
}

/* (sum_i a_i) * (sum_j b_j) = sum_ij a_i b_j, the constants as terms. */
int aj_dim_mul(aj_dim a, aj_dim b, aj_dim *out) {
    sum sa = {0}, sb = {0}, s = {0};
    push_dim(&sa, a, 1), push_dim(&sb, b, 1);   /* times 1: cannot overflow */
    for (int i = 0; i < sa.n; i++)
        for (int j = 0; j < sb.n; j++) {
            int64_t c;
            uint8_t f[AJ_DIM_DEGREE];
            int rc = mul64(sa.t[i].coef, sb.t[j].coef, &c);
            if (!rc) rc = mul_factors(sa.t[i].dim, sb.t[j].dim, f);
            if (rc) return rc;
            push(&s, c, f);
        }
    return finish(&s, out);
}

/* Each bound factor multiplies its term's coefficient; the unbound ones
 * stay. Any overflow gives INT64_MAX, which the verifier refuses as too
 * large (rather than a wrapped size that might pass). */
aj_dim aj_dim_bind(aj_dim d, const aj_bind *b) {
    sum s = {0};
    push_const(&s, d.off);
    for (int i = 0; i < d.nterm; i++) {
        int64_t c = d.t[i].coef;
        uint8_t f[AJ_DIM_DEGREE];
        memset(f, AJ_DIM_NONE, AJ_DIM_DEGREE);
        for (int k = 0, nf = 0; k < AJ_DIM_DEGREE && d.t[i].dim[k] != AJ_DIM_NONE; k++) {
            int x = d.t[i].dim[k];
            if (b->v[x] < 0) f[nf++] = (uint8_t)x;
            else if (mul64(c, b->v[x], &c)) return aj_dim_const(INT64_MAX);
        }
        push(&s, c, f);
    }
    aj_dim r;
    return finish(&s, &r) ? aj_dim_const(INT64_MAX) : r;
}

/* ---------------------------------------------------------------- printing */

/* Text out to a FILE, or into buf (truncated, always terminated). */
typedef struct {
    FILE *f;
    char *buf;
    size_t n, len;
} sink;

__attribute__((format(printf, 2, 3)))
static void put(sink *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (s->f) {
        vfprintf(s->f, fmt, ap);
    } else {
        size_t at = s->len < s->n ? s->len : s->n - 1;
        s->len += (size_t)vsnprintf(s->buf + at, s->n - at, fmt, ap);
    }
    va_end(ap);
}

/* |v| without overflow for INT64_MIN. */
static unsigned long long mag(int64_t v) { return v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v; }

/* Terms in canonical order, then the constant: 2*B*T-T+3, -B, T*T. */
static void format(sink *s, const aj_module *m, aj_dim d) {
    for (int i = 0; i < d.nterm; i++) {
        const aj_dim_term *t = &d.t[i];
        if (t->coef < 0) put(s, "-");
        else if (i) put(s, "+");
        if (mag(t->coef) != 1) put(s, "%llu*", mag(t->coef));
        for (int k = 0; k < AJ_DIM_DEGREE && t->dim[k] != AJ_DIM_NONE; k++)
            put(s, "%s%s", k ? "*" : "", m && t->dim[k] < m->ndim ? m->dim[t->dim[k]].name : "?");
    }
    if (!d.nterm) put(s, "%lld", (long long)d.off);
    else if (d.off) put(s, "%c%llu", d.off < 0 ? '-' : '+', mag(d.off));
}

void aj_dim_str(const aj_module *m, aj_dim d, char *buf, size_t n) {
    sink s = {NULL, buf, n, 0};
    buf[0] = 0;
    format(&s, m, d);
}

void aj_dim_print(FILE *f, const aj_module *m, aj_dim d) {
    sink s = {f, NULL, 0, 0};
    format(&s, m, d);
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
