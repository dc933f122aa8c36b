/* Graph families for GraphRNN (You et al., ICML 2018), as vector data.
 *
 * `graphs:grid`, `graphs:ladder`, `graphs:community` generate a fixed set of
 * connected graphs (seeded: the same on every run and machine) and write
 * each as the paper's sequence of adjacency vectors in a random BFS order:
 * with the nodes numbered 0 .. n-1 in that order, row i-1 (i = 1 .. N-1) of
 * an example holds S_i[k] = 1 when node i links node i-1-k (k < M). A BFS
 * order keeps every edge within M of the diagonal (the paper's M), and since
 * each node after the first links an earlier one, S_i is non-zero for i < n:
 * the first all-zero row ends the graph (rows after it stay zero).
 *
 * The statistics compare graphs as the paper does: the MMD between two sets
 * of per-graph histograms (degrees, clustering coefficients) under the
 * Gaussian kernel of their total variation distance. */
#include "arjit_runtime.h"
#include "runtime/fileio.h"
#include "runtime/rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRAPHS_SEED 20180710u      /* the fixed draw of every family */
#define GRAPHS_COUNT 1000          /* graphs per family: 800 / 100 / 100 */
#define MAX_NODES 64

typedef struct {
    const char *name;
    int nmax, m;                   /* most nodes; adjacency vector length M */
    const char *what;
} family;

/* nmax bounds every graph's nodes; m the farthest BFS back-edge of any
 * graph drawn (the loader checks it). */
static const family families[] = {
    {"grid", 36, 12, "2D grids of r x c nodes, r and c uniform in 3..6"},
    {"ladder", 36, 5, "ladders of 3..18 rungs (6..36 nodes)"},
    {"community", 24, 17, "two Erdos-Renyi communities of 6..12 nodes each, p = 0.5, joined by one or two edges"},
};
#define NFAMILIES ((int)(sizeof families / sizeof families[0]))

static const family *find_family(const char *name) {
    for (int i = 0; i < NFAMILIES; i++)
        if (!strcmp(families[i].name, name)) return &families[i];
    return NULL;
}

int aj_graphs_shape(const char *spec, int64_t *nmax, int64_t *m) {
    const family *f = strncmp(spec, "graphs:", 7) ? NULL : find_family(spec + 7);
    if (!f) return -1;
    *nmax = f->nmax, *m = f->m;
    return 0;
}

/* ---------------------------------------------------------------- generation */

typedef struct {
    int n;
    unsigned char a[MAX_NODES][MAX_NODES];   /* symmetric adjacency */
} adj;

/* A uniform integer in [lo, hi] from draw `k` of stream `key`. */
static int draw(uint64_t key, uint64_t *k, int lo, int hi) {
    return lo + (int)(aj_rng_mix(key ^ aj_rng_mix((*k)++)) % (uint64_t)(hi - lo + 1));
}

static void link(adj *g, int i, int j) { g->a[i][j] = g->a[j][i] = 1; }

static int connected(const adj *g) {
    int seen[MAX_NODES] = {1}, queue[MAX_NODES], nq = 1, nseen = 1;
    queue[0] = 0;
    for (int q = 0; q < nq; q++)
        for (int j = 0; j < g->n; j++)
            if (g->a[queue[q]][j] && !seen[j]) seen[j] = 1, queue[nq++] = j, nseen++;
    return nseen == g->n;
}

/* Graph number `index` of family f (a community draw that comes out
 * disconnected is drawn again from the same stream). */
static void generate(const family *f, int64_t index, adj *g) {
    uint64_t key = aj_rng_key(GRAPHS_SEED, (uint64_t)(f - families), (uint64_t)index), k = 0;
    do {
        memset(g, 0, sizeof *g);
        if (!strcmp(f->name, "grid")) {
            int r = draw(key, &k, 3, 6), c = draw(key, &k, 3, 6);
            g->n = r * c;
            for (int i = 0; i < r; i++)
                for (int j = 0; j < c; j++) {
                    if (i + 1 < r) link(g, i * c + j, (i + 1) * c + j);
                    if (j + 1 < c) link(g, i * c + j, i * c + j + 1);
                }
        } else if (!strcmp(f->name, "ladder")) {
            int rungs = draw(key, &k, 3, 18);
            g->n = 2 * rungs;
            for (int i = 0; i < rungs; i++) {
                link(g, i, rungs + i);
                if (i + 1 < rungs) link(g, i, i + 1), link(g, rungs + i, rungs + i + 1);
            }
        } else {
            int n1 = draw(key, &k, 6, 12), n2 = draw(key, &k, 6, 12), bridges = draw(key, &k, 1, 2);
            g->n = n1 + n2;
            for (int i = 0; i < g->n; i++)
                for (int j = i + 1; j < g->n; j++)
                    if ((i < n1) == (j < n1) && draw(key, &k, 0, 1)) link(g, i, j);
            for (int b = 0; b < bridges; b++) link(g, draw(key, &k, 0, n1 - 1), draw(key, &k, n1, g->n - 1));
        }
    } while (!connected(g));
}

/* order[p]: the node visited p-th by a BFS from a random node, each node's
 * unvisited neighbours queued in a random order (the paper's random BFS). */
static void bfs_order(const adj *g, uint64_t key, int *order) {
    uint64_t k = 0;
    int seen[MAX_NODES] = {0}, nq = 1;
    order[0] = draw(key, &k, 0, g->n - 1);
    seen[order[0]] = 1;
    for (int q = 0; q < nq; q++) {
        int nb[MAX_NODES], nn = 0;
        for (int j = 0; j < g->n; j++)
            if (g->a[order[q]][j] && !seen[j]) nb[nn++] = j;
        for (int i = nn - 1; i > 0; i--) {   /* Fisher-Yates */
            int j = draw(key, &k, 0, i), t = nb[i];
            nb[i] = nb[j], nb[j] = t;
        }
        for (int i = 0; i < nn; i++) seen[nb[i]] = 1, order[nq++] = nb[i];
    }
}

int aj_graphs_load(aj_dataset *ds, const char *spec, aj_diag *d) {
    const family *f = strncmp(spec, "graphs:", 7) ? NULL : find_family(spec + 7);
    if (!f) return aj_io_error(d, NULL, 0, 0, "unknown graph family '%s': expected graphs:grid, graphs:ladder or graphs:community", spec);
    int64_t first = 0, count = GRAPHS_COUNT * 8 / 10;
    if (!strcmp(ds->split, "valid")) first = count, count = GRAPHS_COUNT / 10;
    if (!strcmp(ds->split, "test")) first = GRAPHS_COUNT * 9 / 10, count = GRAPHS_COUNT / 10;
    snprintf(ds->path, sizeof ds->path, "%s", spec);
    ds->n = count;
    ds->d = (int64_t)(f->nmax - 1) * f->m;
    if (!(ds->x = calloc((size_t)(ds->n * ds->d), sizeof(float))))
        return aj_io_error(d, spec, 0, 0, "out of memory for %lld graphs", (long long)count);
    for (int64_t e = 0; e < count; e++) {
        adj g;
        int order[MAX_NODES], pos[MAX_NODES];
        generate(f, first + e, &g);
        bfs_order(&g, aj_rng_key(GRAPHS_SEED + 1, (uint64_t)(f - families), (uint64_t)(first + e)), order);
        for (int p = 0; p < g.n; p++) pos[order[p]] = p;
        float *row = ds->x + e * ds->d;
        for (int u = 0; u < g.n; u++)
            for (int v = 0; v < g.n; v++) {
                int i = pos[u], j = pos[v];   /* i links the earlier j */
                if (!g.a[u][v] || j >= i) continue;
                if (i - 1 - j >= f->m)   /* the family's M is too small: a bug here */
                    return aj_io_error(d, spec, 0, 0, "graph %lld has a BFS edge %d back, more than M = %d",
                                       (long long)(first + e), i - j, f->m);
                row[(int64_t)(i - 1) * f->m + (i - 1 - j)] = 1;
            }
    }
    return 0;
}

/* ---------------------------------------------------------------- decoding */

int aj_graph_decode(const float *x, int64_t nmax, int64_t m, aj_edges *g) {
    memset(g, 0, sizeof *g);
    g->n = 1;
    for (int64_t i = 1; i < nmax; i++) {
        const float *s = x + (i - 1) * m;
        int any = 0;
        for (int64_t k = 0; k < m && k < i; k++) any |= s[k] > 0.5f;
        if (!any) break;   /* the end of the graph */
        g->n = (int)i + 1;
        for (int64_t k = 0; k < m && k < i; k++) {
            if (!(s[k] > 0.5f)) continue;
            int (*ne)[2] = realloc(g->edge, sizeof *ne * (size_t)(g->nedge + 1));
            if (!ne) return -1;
            g->edge = ne;
            g->edge[g->nedge][0] = (int)(i - 1 - k), g->edge[g->nedge][1] = (int)i;
            g->nedge++;
        }
    }
    return 0;
}

void aj_graph_edges_free(aj_edges *g) {
    free(g->edge);
    memset(g, 0, sizeof *g);
}

/* ---------------------------------------------------------------- statistics */

#define CLUSTER_BINS 100   /* the paper's histogram of clustering coefficients */

/* Graph g's statistic as a normalised histogram in h (nbin bins): its
 * degrees (bin = degree), or its nodes' local clustering coefficients in
 * [0, 1] (CLUSTER_BINS bins). */
static void histogram(const aj_edges *g, int stat, double *h, int nbin) {
    static unsigned char a[MAX_NODES][MAX_NODES];
    int deg[MAX_NODES] = {0};
    memset(h, 0, sizeof *h * (size_t)nbin);
    memset(a, 0, sizeof a);
    for (int e = 0; e < g->nedge; e++) {
        int u = g->edge[e][0], v = g->edge[e][1];
        if (u < MAX_NODES && v < MAX_NODES && !a[u][v]) a[u][v] = a[v][u] = 1, deg[u]++, deg[v]++;
    }
    int n = g->n < MAX_NODES ? g->n : MAX_NODES;
    for (int u = 0; u < n; u++) {
        int bin;
        if (stat == AJ_GRAPH_DEGREE) {
            bin = deg[u] < nbin ? deg[u] : nbin - 1;
        } else {
            int links = 0;   /* edges among u's neighbours */
            for (int v = 0; v < n; v++)
                for (int w = v + 1; w < n; w++) links += a[u][v] && a[u][w] && a[v][w];
            double c = deg[u] < 2 ? 0 : 2.0 * links / ((double)deg[u] * (deg[u] - 1));
            bin = (int)(c * CLUSTER_BINS);
            bin = bin < CLUSTER_BINS ? bin : CLUSTER_BINS - 1;
        }
        h[bin] += 1.0 / n;
    }
}

double aj_graphs_mmd(const aj_edges *a, int na, const aj_edges *b, int nb, int stat) {
    int nbin = stat == AJ_GRAPH_DEGREE ? MAX_NODES : CLUSTER_BINS;
    double *h = malloc(sizeof *h * (size_t)nbin * (size_t)(na + nb));
    if (!h || na == 0 || nb == 0) {
        free(h);
        return NAN;
    }
    for (int i = 0; i < na + nb; i++) histogram(i < na ? &a[i] : &b[i - na], stat, h + (size_t)i * nbin, nbin);
    /* MMD^2 = E k(a, a') + E k(b, b') - 2 E k(a, b), k = exp(-TV^2 / 2),
     * TV(p, q) = sum |p - q| / 2; the a-a and b-b means include i = j */
    double s[3] = {0, 0, 0};
    for (int i = 0; i < na + nb; i++)
        for (int j = 0; j < na + nb; j++) {
            double tv = 0;
            for (int t = 0; t < nbin; t++) tv += fabs(h[(size_t)i * nbin + t] - h[(size_t)j * nbin + t]);
            tv /= 2;
            s[(i < na) + (j < na) == 2 ? 0 : (i >= na && j >= na) ? 1 : 2] += exp(-tv * tv / 2);
        }
    free(h);
    return s[0] / ((double)na * na) + s[1] / ((double)nb * nb) - s[2] / ((double)na * nb);
}
