/* arjit runtime I/O: datasets and mini-batches, checkpoints, PNG sample grids.
 *
 * What `arjit train | eval | sample` read and write besides graph files. Every
 * function reports failure by returning -1 (or NULL) with the first error in
 * an aj_diag whose message names the file and the place (line, byte offset or
 * field) at fault; no input, however malformed, makes them crash.
 */
#ifndef ARJIT_RUNTIME_H
#define ARJIT_RUNTIME_H

#include "arjit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- datasets */

/* One split of a dataset, fully in memory.
 *
 * Specs (docs/datasets.md has the details):
 *   mnist-bin        binarized_mnist_{train,valid,test}.amat[.gz]: 784 values 0/1
 *                    per line (Larochelle & Murray's fixed binarization)
 *   mnist            raw IDX images, binarized: pixel >= 128 -> 1, else 0
 *   mnist-gray       raw IDX images as grey levels pixel / 255 in [0, 1]
 *                    (both: train = all but the last sixth of
 *                    train-images-idx3-ubyte[.gz], i.e. 50000 of 60000;
 *                    valid = that last sixth; test = t10k-images-idx3-ubyte[.gz])
 *   text:FILE        bytes of FILE as tokens: train = first 90%, valid = test =
 *                    last 10%; vocabulary = sorted distinct bytes of train
 *   shakespeare      text:tinyshakespeare.txt
 *   reverse:N        generated: rows of N digit tokens then the same reversed
 *                    (0 = start, 1..10 the digits), 50000/5000/5000, fixed seed
 *   graphs:FAMILY    grid, ladder or community graphs for GraphRNN (below)
 *   csv:FILE[,drop=COL]...  `;`-separated numeric table with a header line
 *                    (UCI wine): rows shuffled with a fixed seed, split
 *                    80/10/10, columns standardized with the train mean/std
 * Token data keeps ids in tok: text as one stream of ntok (d = 0), reverse:N
 * as n rows of d ids.
 * A FILE containing '/' is opened as given; every other name is looked for
 * in $ARJIT_DATA, ./data, ../shared/data, then <source dir>/../shared/data,
 * each as NAME and NAME.gz (plain and gzip files both read). */
typedef struct {
    char spec[256];          /* as given to aj_dataset_load */
    char split[8];           /* "train", "valid" or "test" */
    char path[1024];         /* the file it was read from */
    /* vector data (images, tables): n examples of d values, row-major */
    int64_t n, d;
    float *x;
    int64_t h, w;            /* images: d = h * w; 0 otherwise */
    float *mean, *std;       /* csv: per-column train mean/std used to standardize
                                (x = (raw - mean) / std); NULL otherwise */
    /* token data: ntok ids in [0, nvocab), text's stream or n rows of d
     * (reverse:N); token id i is byte vocab[i] */
    int32_t *tok;
    int64_t ntok;
    unsigned char vocab[256];
    int nvocab;
} aj_dataset;

/* Load split `split` ("train" | "valid" | "test") of dataset `spec` into
 * *out (zeroed first; free with aj_dataset_free, also after a failure). */
int aj_dataset_load(const char *spec, const char *split, aj_dataset *out, aj_diag *d);
void aj_dataset_free(aj_dataset *ds);

/* Text: replace the vocabulary built from the training split by `vocab`
 * (e.g. a checkpoint's) and re-encode the tokens with it. Fails, leaving ds
 * unchanged, when vocab has duplicate bytes or the text has a byte it lacks. */
int aj_dataset_set_vocab(aj_dataset *ds, const unsigned char *vocab, int nvocab, aj_diag *d);

/* ---------------------------------------------------------------- graphs */

/* graphs:FAMILY (runtime/graphs.c, docs/datasets.md): a seeded family of
 * graphs, each example its adjacency vectors in a random BFS order, (N-1)*M
 * values: row i-1 holds S_i[k] = 1 when node i links node i-1-k. */
typedef struct {
    int n;                   /* nodes */
    int (*edge)[2]; int nedge;
} aj_edges;

/* The family's N (most nodes) and M (adjacency vector length); -1 when spec
 * is no graphs: spec. */
int aj_graphs_shape(const char *spec, int64_t *nmax, int64_t *m);
/* Split ds->split of family spec into ds (aj_dataset_load calls it). */
int aj_graphs_load(aj_dataset *ds, const char *spec, aj_diag *d);
/* The graph of one example (or sample) of N-1 rows of M values: nodes up to
 * the first all-zero row, an edge per value > 0.5. -1: out of memory. */
int aj_graph_decode(const float *x, int64_t nmax, int64_t m, aj_edges *g);
void aj_graph_edges_free(aj_edges *g);
/* The squared MMD between graph sets a and b of one statistic (You et al.
 * 2018): per-graph histograms, Gaussian kernel of their total variation. */
enum { AJ_GRAPH_DEGREE, AJ_GRAPH_CLUSTERING };
double aj_graphs_mmd(const aj_edges *a, int na, const aj_edges *b, int nb, int stat);

/* ---------------------------------------------------------------- batches */

enum {
    AJ_BATCH_SHUFFLE = 1,    /* a fresh seeded order each epoch (training);
                                else dataset order (evaluation) */
    AJ_BATCH_DROP_LAST = 2   /* skip the last batch when it is short (training);
                                else return it with count < batch */
};

/* Mini-batches over a dataset, deterministic for a seed: epoch e's order is a
 * function of (seed, e) only, so a run resumed with aj_batcher_seek sees the
 * same batches. An example is
 * - a row of ds->x (vector data): a batch is count rows, count * d floats;
 * - a window of seqlen + 1 consecutive tokens (text): inputs and their
 *   next-token targets. An epoch has (ntok - 1) / seqlen windows; shuffled,
 *   each starts at a seeded uniform position, otherwise window i starts at
 *   i * seqlen, so the windows' targets cover the split once. */
typedef struct {
    const aj_dataset *ds;
    int64_t batch, seqlen;   /* seqlen: text only */
    uint64_t seed;
    int flags;
    int64_t nexamples;       /* per epoch */
    int64_t epoch;           /* the current epoch, from 0 */
    int64_t pos;             /* examples of this epoch already returned */
    int64_t *order;          /* vector data: this epoch's permutation */
} aj_batcher;

/* seqlen is ignored for vector data. */
int aj_batcher_init(aj_batcher *b, const aj_dataset *ds, int64_t batch, int64_t seqlen,
                    uint64_t seed, int flags, aj_diag *d);
void aj_batcher_free(aj_batcher *b);
/* The next batch of vector data into x (batch * d floats) / of text windows
 * into tok (batch * (seqlen + 1) ids). Returns 1 with *count examples
 * written, or 0 when the epoch is over (nothing written): the next call
 * starts epoch + 1. -1 when the dataset is of the other kind. */
int aj_batcher_next(aj_batcher *b, float *x, int64_t *count);
int aj_batcher_next_tokens(aj_batcher *b, int32_t *tok, int64_t *count);

/* Download dataset `name` (mnist-bin, mnist, shakespeare, wine, or all)
 * into dir (made if missing) from the public sources, or from
 * $ARJIT_DATA_URL/FILE when that is set; each file is sha256-checked and
 * written atomically, and one already there with the right sum is kept.
 * Progress to log (may be NULL). runtime/data_fetch.c has the sources.
 * Returns 0, or -1 with d set (-2: no such dataset). */
int aj_data_fetch(const char *name, const char *dir, FILE *log, aj_diag *d);
/* Continue from example `pos` of epoch `epoch` (resuming a run). */
void aj_batcher_seek(aj_batcher *b, int64_t epoch, int64_t pos);

/* ---------------------------------------------------------------- checkpoints */

/* A checkpoint: named tensors in sections, named u64 scalars (optimizer step,
 * RNG state) and metadata key/value byte strings. docs/checkpoint.md is the
 * file format (little-endian, CRC32-checked). Setting a name again replaces
 * its value; every setter copies its arguments. */
typedef struct aj_ckpt aj_ckpt;

enum { AJ_CKPT_PARAMS = 0, AJ_CKPT_OPTIM = 1, AJ_CKPT_NSECTION = 2 };

aj_ckpt *aj_ckpt_new(void);
void aj_ckpt_free(aj_ckpt *ck);
/* Return 0, or -1 on a bad argument (section, name of 1..255 bytes, tensor
 * without data) or when out of memory. */
int aj_ckpt_add_tensor(aj_ckpt *ck, int section, const char *name, const aj_tensor *t);
int aj_ckpt_set_u64(aj_ckpt *ck, const char *name, uint64_t v);
int aj_ckpt_set_meta(aj_ckpt *ck, const char *key, const char *value);
int aj_ckpt_set_meta_bytes(aj_ckpt *ck, const char *key, const void *value, size_t len);

/* Written to PATH.tmp.PID, synced, then renamed over PATH: a crash or a failed
 * save leaves any previous PATH whole. */
int aj_ckpt_save(const aj_ckpt *ck, const char *path, aj_diag *d);
/* NULL with d set when the file is missing, truncated or corrupt. */
aj_ckpt *aj_ckpt_load(const char *path, aj_diag *d);

/* Lookups: NULL / -1 when absent. */
const aj_tensor *aj_ckpt_find(const aj_ckpt *ck, int section, const char *name);
/* The i-th tensor of a section (in the order added) and its name; NULL past the end. */
const aj_tensor *aj_ckpt_tensor_at(const aj_ckpt *ck, int section, int i, const char **name);
int aj_ckpt_get_u64(const aj_ckpt *ck, const char *name, uint64_t *v);
/* Metadata value (always NUL-terminated; *len, when asked, is its length). */
const char *aj_ckpt_meta(const aj_ckpt *ck, const char *key);
const char *aj_ckpt_meta_bytes(const aj_ckpt *ck, const char *key, size_t *len);

/* ---------------------------------------------------------------- images */

/* Write n images of h x w values in [0, 1] (clamped; NaN -> 0) as one 8-bit
 * greyscale PNG: a grid of `cols` columns (0: near-square), images separated
 * and framed by 1-pixel grey lines. Atomic like aj_ckpt_save. */
int aj_png_grid(const char *path, const float *imgs, int n, int h, int w, int cols, aj_diag *d);

#ifdef __cplusplus
}
#endif
#endif
