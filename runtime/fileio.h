/* Shared by the runtime's file readers and writers (dataset.c, checkpoint.c,
 * png.c): errors that name a file, and atomic replacement of a file. */
#ifndef ARJIT_RUNTIME_FILEIO_H
#define ARJIT_RUNTIME_FILEIO_H

#include "arjit.h"
#include <stdio.h>

/* aj_error that also records the file (printed "file:line:col: error: msg",
 * or "file: error: msg" when line is 0). Returns -1. */
int aj_io_error(aj_diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The whole contents of a file, gunzipped if it is gzip, into a malloc'd
 * buffer (*out, *len; free it). Files over `max` bytes, unreadable or
 * truncated gzip data are errors naming the file. */
int aj_read_file(const char *path, size_t max, char **out, size_t *len, aj_diag *d);

/* A file being written as PATH.tmp.PID and renamed over PATH on commit, so
 * that readers (and a crash) see either the old file or the whole new one. */
typedef struct {
    FILE *f;
    char path[1024];
    char tmp[1100];
} aj_afile;

/* 0 when path may be replaced: it does not exist or is a regular file (a
 * link to one counts; the link itself is replaced). Else -1 with d naming
 * what it is: renaming over a device, FIFO or directory would destroy it,
 * never write to it. */
int aj_afile_check(const char *path, aj_diag *d);
/* Open the temporary file (after aj_afile_check); NULL with d set on failure. */
FILE *aj_afile_open(aj_afile *a, const char *path, aj_diag *d);
/* Flush, fsync, close, rename over the path and fsync its directory.
 * On any failure the temporary file is removed and PATH left as it was. */
int aj_afile_commit(aj_afile *a, aj_diag *d);
/* Give up: close and remove the temporary file. */
void aj_afile_abort(aj_afile *a);

#endif
