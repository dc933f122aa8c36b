/* PNG grids of image samples (libpng), to look at what a model draws. */
#include "arjit_runtime.h"
#include "runtime/fileio.h"
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#define SEPARATOR 128          /* mid grey: visible against black and white pixels */
#define MAX_SIDE 1000000       /* libpng's default limit on width and height */
#define MAX_PIXELS ((int64_t)1 << 28)

typedef struct {
    aj_diag *d;
    const char *path;
} png_ctx;

/* libpng reports errors by calling this, which must not return: record the
 * message and jump back to aj_png_grid's setjmp. */
static void on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    aj_io_error(c->d, c->path, 0, 0, "libpng: %s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {}

/* Lay the images out in an 8-bit buffer of W x H pixels. */
static void draw_grid(unsigned char *pix, int64_t W, const float *imgs, int n, int h, int w, int cols) {
    for (int k = 0; k < n; k++) {
        int64_t y0 = 1 + (int64_t)(k / cols) * (h + 1), x0 = 1 + (int64_t)(k % cols) * (w + 1);
        const float *img = imgs + (int64_t)k * h * w;
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                float v = img[i * w + j];
                v = v >= 0 ? (v <= 1 ? v : 1) : 0;   /* NaN fails v >= 0: black */
                pix[(y0 + i) * W + x0 + j] = (unsigned char)lrintf(v * 255);
            }
    }
}

int aj_png_grid(const char *path, const float *imgs, int n, int h, int w, int cols, aj_diag *d) {
    if (!path || !imgs || n < 1 || h < 1 || w < 1 || cols < 0)
        return aj_io_error(d, path, 0, 0, "bad image grid: %d images of %dx%d in %d columns", n, h, w, cols);
    if (cols == 0) cols = (int)ceil(sqrt((double)n));
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    int64_t W = (int64_t)cols * (w + 1) + 1, H = (int64_t)rows * (h + 1) + 1;
    if (W > MAX_SIDE || H > MAX_SIDE || W * H > MAX_PIXELS)
        return aj_io_error(d, path, 0, 0, "image grid of %lldx%lld pixels is too large", (long long)W,
                           (long long)H);
    unsigned char *pix = malloc((size_t)(W * H));
    png_bytep *row = malloc((size_t)H * sizeof *row);
    if (!pix || !row) {
        free(pix);
        free(row);
        return aj_io_error(d, path, 0, 0, "out of memory for a %lldx%lld image", (long long)W, (long long)H);
    }
    memset(pix, SEPARATOR, (size_t)(W * H));
    draw_grid(pix, W, imgs, n, h, w, cols);
    for (int64_t y = 0; y < H; y++) row[y] = pix + y * W;

    aj_afile af;
    png_ctx ctx = {d, path};
    FILE *f = aj_afile_open(&af, path, d);
    png_structp png = f ? png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning) : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    volatile int rc = -1;   /* read after a longjmp */
    if (f && !info) aj_io_error(d, path, 0, 0, "out of memory in libpng");
    if (info && !setjmp(png_jmpbuf(png))) {
        png_init_io(png, f);
        png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)H, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        png_write_image(png, row);
        png_write_end(png, NULL);
        rc = 0;
    }
    if (png) png_destroy_write_struct(&png, info ? &info : NULL);
    if (f) rc = rc == 0 ? aj_afile_commit(&af, d) : (aj_afile_abort(&af), -1);
    free(pix);
    free(row);
    return rc;
}
