/* The compiled engines behind `--engine naive|fused`: aj_engine_run
 * functions that compile a fn on first use and keep the program, keyed by
 * module, fn, binding and engine, until aj_engine_forget(module). */
#include "arjit_compile.h"

#include <pthread.h>
#include <string.h>

enum { CACHE = 32 };

static struct entry {
    const aj_module *m;
    const aj_graph *fn;
    aj_bind bind;
    int fused;
    aj_program *p;
    uint64_t used;
} cache[CACHE];
static uint64_t clock_;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static aj_compile_opts engine_opts;

void aj_engine_set_options(const aj_compile_opts *o) {
    pthread_mutex_lock(&lock);
    engine_opts = *o;
    pthread_mutex_unlock(&lock);
}

void aj_engine_forget(const aj_module *m) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < CACHE; i++)
        if (cache[i].p && cache[i].m == m) {
            aj_program_free(cache[i].p);
            memset(&cache[i], 0, sizeof cache[i]);
        }
    pthread_mutex_unlock(&lock);
}

aj_program *aj_engine_program(const aj_module *m, const aj_graph *fn, int fused, aj_diag *d) {
    pthread_mutex_lock(&lock);
    struct entry *e = NULL, *victim = &cache[0];
    for (int i = 0; i < CACHE && !e; i++) {
        struct entry *c = &cache[i];
        if (c->p && c->m == m && c->fn == fn && c->fused == fused && !memcmp(&c->bind, &m->bind, sizeof c->bind)) e = c;
        else if (!c->p || (victim->p && c->used < victim->used)) victim = c;
    }
    if (!e) {
        aj_compile_opts o = engine_opts;
        o.fused = fused;
        aj_program *p = aj_program_compile(m, fn, &o, d);
        if (p) {
            aj_program_free(victim->p);
            *victim = (struct entry){m, fn, m->bind, fused, p, 0};
            e = victim;
        }
    }
    if (e) e->used = ++clock_;
    pthread_mutex_unlock(&lock);
    return e ? e->p : NULL;
}

static int compiled_run(int fused, const aj_module *m, const aj_graph *fn, const aj_tensor *params,
                        const aj_tensor *inputs, aj_tensor *results, uint64_t seed, aj_diag *d) {
    aj_program *p = aj_engine_program(m, fn, fused, d);
    return p ? aj_program_run(p, params, inputs, results, seed, d) : -1;
}

int aj_naive_run(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                 aj_tensor *results, uint64_t seed, aj_diag *d) {
    return compiled_run(0, m, fn, params, inputs, results, seed, d);
}

int aj_fused_run(const aj_module *m, const aj_graph *fn, const aj_tensor *params, const aj_tensor *inputs,
                 aj_tensor *results, uint64_t seed, aj_diag *d) {
    return compiled_run(1, m, fn, params, inputs, results, seed, d);
}
