/* Errors naming a file, and atomic file replacement (write, fsync, rename). */
#include "runtime/fileio.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int aj_io_error(aj_diag *d, const char *file, int line, int col, const char *fmt, ...) {
    if (!d || d->set) return -1;
    d->set = 1;
    snprintf(d->file, sizeof d->file, "%s", file ? file : "");
    d->line = line;
    d->col = col;
    d->text[0] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* zlib reads plain files as they are, so one reader serves both kinds. */
int aj_read_file(const char *path, size_t max, char **out, size_t *outlen, aj_diag *d) {
    *out = NULL;
    *outlen = 0;
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) return aj_io_error(d, path, 0, 0, "cannot open: %s", errno ? strerror(errno) : "out of memory");
    gzbuffer(f, 1 << 17);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    int rc = 0, zerr = Z_OK;
    while (rc == 0) {
        if (!buf) {
            rc = aj_io_error(d, path, 0, 0, "out of memory reading it");
            break;
        }
        if (len == cap) {
            if (cap >= max) {
                rc = aj_io_error(d, path, 0, 0, "larger than %zu MiB", max >> 20);
                break;
            }
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
            continue;
        }
        size_t want = cap - len < (1u << 30) ? cap - len : (1u << 30);  /* gzread counts in an int */
        int got = gzread(f, buf + len, (unsigned)want);
        if (got < 0) rc = aj_io_error(d, path, 0, 0, "read error after %zu bytes: %s", len, gzerror(f, &zerr));
        if (got <= 0) break;
        len += (size_t)got;
    }
    /* a gzip stream cut short reads like an end of file; only this says so */
    if (rc == 0 && (gzerror(f, &zerr), zerr == Z_BUF_ERROR))
        rc = aj_io_error(d, path, 0, 0, "truncated gzip data (unexpected end after %zu bytes)", len);
    gzclose(f);
    if (rc) {
        free(buf);
        return -1;
    }
    *out = buf;
    *outlen = len;
    return 0;
}

int aj_afile_check(const char *path, aj_diag *d) {
    struct stat st;
    if (stat(path, &st) != 0 || S_ISREG(st.st_mode)) return 0;
    const char *what = S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "not a regular file";
    return aj_io_error(d, path, 0, 0, "it is %s: arjit writes a new regular file and renames it over the old one, "
                       "which would replace it; name a regular file", what);
}

FILE *aj_afile_open(aj_afile *a, const char *path, aj_diag *d) {
    a->f = NULL;
    a->tmp[0] = 0;
    if (aj_afile_check(path, d)) return NULL;
    if ((size_t)snprintf(a->path, sizeof a->path, "%s", path) >= sizeof a->path) {
        aj_io_error(d, NULL, 0, 0, "path too long: %.200s...", path);
        return NULL;
    }
    snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid());
    a->f = fopen(a->tmp, "wb");
    if (!a->f) {
        aj_io_error(d, path, 0, 0, "cannot create %s: %s", a->tmp, strerror(errno));
        a->tmp[0] = 0;
    }
    return a->f;
}

void aj_afile_abort(aj_afile *a) {
    if (a->f) fclose(a->f);
    a->f = NULL;
    if (a->tmp[0]) unlink(a->tmp);
    a->tmp[0] = 0;
}

/* The rename is only durable once the directory entry is on disk too. Some
 * file systems refuse fsync on a directory (EINVAL); the data is then as
 * safe as they allow, so that is not an error. */
static int fsync_parent_dir(const char *path) {
    char dir[1024];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    errno = err;
    return rc == 0 || err == EINVAL ? 0 : -1;
}

int aj_afile_commit(aj_afile *a, aj_diag *d) {
    FILE *f = a->f;
    a->f = NULL;
    errno = 0;
    /* every step must be checked: a full disk shows up at fflush or fclose */
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int err = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (!bad && rename(a->tmp, a->path) != 0) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        aj_io_error(d, a->path, 0, 0, "cannot write %s: %s", a->tmp, strerror(err ? err : EIO));
        aj_afile_abort(a);
        return -1;
    }
    a->tmp[0] = 0;
    if (fsync_parent_dir(a->path) != 0)
        return aj_io_error(d, a->path, 0, 0, "written, but cannot sync its directory: %s", strerror(errno));
    return 0;
}
