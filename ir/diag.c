/* Diagnostics: the first error wins, printed compiler-style with a caret. */
#include "arjit.h"
#include <stdarg.h>
#include <string.h>

int aj_error(aj_diag *d, int line, int col, const char *fmt, ...) {
    if (!d || d->set) return -1;
    d->set = 1;
    d->line = line;
    d->col = col;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void aj_diag_print(const aj_diag *d, FILE *f) {
    if (!d->set) return;
    const char *file = d->file[0] ? d->file : "arjit";
    if (d->line > 0)
        fprintf(f, "%s:%d:%d: error: %s\n", file, d->line, d->col, d->msg);
    else
        fprintf(f, "%s: error: %s\n", file, d->msg);
    if (d->line > 0 && d->text[0]) {
        fprintf(f, "    %s\n    ", d->text);
        /* keep tabs so the caret lines up under the offending column */
        for (int i = 0; i + 1 < d->col && d->text[i]; i++) fputc(d->text[i] == '\t' ? '\t' : ' ', f);
        fputs("^\n", f);
    }
    for (int i = 0; i < d->ncall; i++)
        fprintf(f, "%s:%d:%d: note: in def '%s' called here\n", file, d->call[i].line, d->call[i].col, d->call[i].def);
}

void aj_diag_call(aj_diag *d, const char *def, int line, int col) {
    if (!d || !d->set) return;
    int k = d->ncall < 8 ? d->ncall++ : 7;   /* past 8 the outermost call overwrites the last */
    snprintf(d->call[k].def, sizeof d->call[k].def, "%s", def);
    d->call[k].line = line, d->call[k].col = col;
}

void aj_diag_site(aj_diag *d, const aj_module *m, const aj_node *n) {
    for (int s = n->site; s > 0 && s <= m->nsite; s = m->site[s - 1].parent)
        aj_diag_call(d, m->site[s - 1].def, m->site[s - 1].line, m->site[s - 1].col);
}

void aj_diag_source(aj_diag *d, const char *file, const char *src, size_t len) {
    if (!d || !d->set) return;
    if (file && !d->file[0]) snprintf(d->file, sizeof d->file, "%s", file);
    if (d->line <= 0 || !src) return;
    size_t i = 0;
    for (int line = 1; line < d->line && i < len; i++)
        if (src[i] == '\n') line++;
    size_t k = 0;
    /* non-printable bytes (binary garbage) show as '?' so the caret still lines up */
    for (; i < len && src[i] != '\n' && k + 1 < sizeof d->text; i++, k++) {
        unsigned char c = (unsigned char)src[i];
        d->text[k] = (c == '\t' || (c >= 32 && c < 127)) ? (char)c : '?';
    }
    d->text[k] = 0;
}
