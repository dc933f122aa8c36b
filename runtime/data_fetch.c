/* `arjit data fetch`: download the standard datasets from their public
 * sources into a data folder, each file checked against the sha256 that
 * ../shared/data/README.md lists, and written atomically (PATH.tmp.PID,
 * renamed once whole and verified), so a failed or interrupted download
 * never leaves a file the loaders would read. */
#include "arjit_runtime.h"
#include "runtime/fileio.h"
#include "runtime/sha256.h"
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Each file under the name the loaders look for (docs/datasets.md). The
 * binarized MNIST sums are of the .amat text as Larochelle distributes it
 * (the sums TensorFlow Datasets pins); MNIST is the torchvision mirror of
 * LeCun's gzip files. */
static const struct {
    const char *set, *file, *url, *sha256;
} files[] = {
    {"mnist-bin", "binarized_mnist_train.amat",
     "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_train.amat",
     "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"},
    {"mnist-bin", "binarized_mnist_valid.amat",
     "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_valid.amat",
     "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"},
    {"mnist-bin", "binarized_mnist_test.amat",
     "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_test.amat",
     "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"},
    {"mnist", "train-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"},
    {"mnist", "train-labels-idx1-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"},
    {"mnist", "t10k-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
     "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"},
    {"mnist", "t10k-labels-idx1-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
     "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
    {"shakespeare", "tinyshakespeare.txt",
     "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
     "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
    {"wine", "winequality-red.csv",
     "https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality/winequality-red.csv",
     "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e"},
    {"wine", "winequality-white.csv",
     "https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality/winequality-white.csv",
     "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836"},
};
#define NFILES (sizeof files / sizeof files[0])

/* The sha256 of a file as hex; -1 when it cannot be read. */
static int file_sha256(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    aj_sha256 s;
    aj_sha256_init(&s);
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) aj_sha256_update(&s, buf, n);
    int bad = ferror(f);
    fclose(f);
    aj_sha256_hex(&s, hex);
    return bad ? -1 : 0;
}

typedef struct {
    FILE *f;
    aj_sha256 sum;
    size_t bytes;
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *user) {
    sink *k = user;
    aj_sha256_update(&k->sum, p, size * n);
    k->bytes += size * n;
    return fwrite(p, size, n, k->f) == n ? size * n : 0;   /* 0 stops the transfer */
}

/* Download url into path (atomically) when its sha256 is `want`. */
static int fetch_file(const char *url, const char *path, const char *want, aj_diag *d) {
    aj_afile af;
    sink k = {0};
    if (!(k.f = aj_afile_open(&af, path, d))) return -1;
    aj_sha256_init(&k.sum);
    CURL *c = curl_easy_init();
    if (!c) {
        aj_afile_abort(&af);
        return aj_io_error(d, url, 0, 0, "cannot start libcurl");
    }
    char err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &k);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);      /* HTTP 404 etc. are errors, not files */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "arjit-data-fetch");
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    char got[65];
    aj_sha256_hex(&k.sum, got);
    if (rc != CURLE_OK) {
        aj_afile_abort(&af);
        return aj_io_error(d, url, 0, 0, "download failed: %s", err[0] ? err : curl_easy_strerror(rc));
    }
    if (strcmp(got, want)) {
        aj_afile_abort(&af);
        return aj_io_error(d, url, 0, 0, "sha256 of the %zu bytes received is %s, expected %s: not the published "
                           "file (nothing written to %s)", k.bytes, got, want, path);
    }
    return aj_afile_commit(&af, d);
}

int aj_data_fetch(const char *name, const char *dir, FILE *log, aj_diag *d) {
    int all = !strcmp(name, "all"), found = 0;
    for (size_t i = 0; i < NFILES; i++) found |= all || !strcmp(name, files[i].set);
    if (!found) {
        aj_io_error(d, NULL, 0, 0, "unknown dataset '%s': expected mnist-bin, mnist, shakespeare, wine or all", name);
        return -2;
    }
    if (mkdir(dir, 0777) && errno != EEXIST) return aj_io_error(d, dir, 0, 0, "cannot create it: %s", strerror(errno));
    const char *base = getenv("ARJIT_DATA_URL");   /* tests: BASE/FILE instead of the public URLs */
    if (base && !*base) base = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return aj_io_error(d, NULL, 0, 0, "cannot start libcurl");
    int rc = 0;
    for (size_t i = 0; i < NFILES && !rc; i++) {
        if (!all && strcmp(name, files[i].set)) continue;
        char path[1024], url[1024], hex[65];
        snprintf(path, sizeof path, "%s/%s", dir, files[i].file);
        if (base) snprintf(url, sizeof url, "%s/%s", base, files[i].file);
        else snprintf(url, sizeof url, "%s", files[i].url);
        if (file_sha256(path, hex) == 0 && !strcmp(hex, files[i].sha256)) {
            if (log) fprintf(log, "%s: have it (sha256 ok)\n", path);
            continue;
        }
        if (log) fprintf(log, "%s: fetching %s\n", path, url), fflush(log);
        rc = fetch_file(url, path, files[i].sha256, d);
        if (!rc && log) fprintf(log, "%s: sha256 ok\n", path);
    }
    curl_global_cleanup();
    return rc;
}
