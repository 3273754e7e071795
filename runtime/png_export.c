/* PNG slice previews and label images with libpng (see png_export.h). libpng reports errors by
 * longjmp: each read/write sets a jump point, and the error handler keeps libpng's message so that the
 * i3rt error names the file and the reason. */
#include "png_export.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    jmp_buf jump;
    char message[256];
} png_failure;

static void on_png_error(png_structp png, png_const_charp message) {
    png_failure *f = png_get_error_ptr(png);
    snprintf(f->message, sizeof f->message, "%s", message);
    longjmp(f->jump, 1);
}

static void on_png_warning(png_structp png, png_const_charp message) { (void)png, (void)message; }

/* Encodes rows of row_bytes bytes (rows[r] = pixels + r * row_bytes) into an open file. */
static i3rt_status encode(i3_ctx *ctx, const char *path, FILE *file, const uint8_t *pixels, int64_t rows,
                          int64_t cols, int bit_depth, int colour_type, size_t row_bytes) {
    png_failure failure = {.message = ""};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &failure, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: cannot start a PNG writer", path);
    }
    if (setjmp(failure.jump)) {
        png_destroy_write_struct(&png, &info);
        return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot write the PNG: %s", path, failure.message);
    }
    png_init_io(png, file);
    png_set_IHDR(png, info, (png_uint_32)cols, (png_uint_32)rows, bit_depth, colour_type, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int64_t r = 0; r < rows; r++) png_write_row(png, pixels + (size_t)r * row_bytes);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return I3RT_OK;
}

/* Writes to a temporary file beside path and renames it over path; removes it on any failure. */
static i3rt_status write_atomically(i3_ctx *ctx, const char *path, const uint8_t *pixels, int64_t rows,
                                    int64_t cols, int bit_depth, int colour_type, size_t row_bytes) {
    if (rows < 1 || cols < 1 || rows > 0x7fffffff || cols > 0x7fffffff)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: a PNG cannot be %lld x %lld pixels", path,
                       (long long)rows, (long long)cols);
    size_t len = strlen(path);
    char *tmp = i3_malloc(ctx, len + 16, path);
    if (!tmp) return I3RT_ERR_OUT_OF_MEMORY;
    snprintf(tmp, len + 16, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    FILE *file = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!file) {
        i3rt_status st = i3_fail(ctx, I3RT_ERR_IO, "%s: cannot create a file in its directory: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
        return st;
    }
    fchmod(fd, 0644);  /* mkstemp makes 0600; an output is an ordinary file */
    i3rt_status st = encode(ctx, path, file, pixels, rows, cols, bit_depth, colour_type, row_bytes);
    int err = 0;
    if (fflush(file) != 0 || fsync(fileno(file)) != 0) err = errno;
    if (fclose(file) != 0 && !err) err = errno;
    if (st == I3RT_OK && !err && rename(tmp, path) != 0) err = errno;
    if (st == I3RT_OK && err) st = i3_fail(ctx, I3RT_ERR_IO, "%s: cannot write: %s", path, strerror(err));
    if (st != I3RT_OK) unlink(tmp);
    free(tmp);
    return st;
}

i3rt_status i3_png_write(i3_ctx *ctx, const char *path, const uint8_t *pixels, int64_t rows, int64_t cols,
                         int channels) {
    if (channels != 1 && channels != 3)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: %d channels (1 grey or 3 RGB)", path, channels);
    return write_atomically(ctx, path, pixels, rows, cols, 8, channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                            (size_t)cols * (size_t)channels);
}

i3rt_status i3_png_write_labels(i3_ctx *ctx, const char *path, const int32_t *labels, int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    int32_t top = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] > 65535)
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: label %d at pixel %lld is outside 0..65535", path,
                           labels[i], (long long)i);
        if (labels[i] > top) top = labels[i];
    }
    const int bytes = top <= 255 ? 1 : 2;
    uint8_t *packed = i3_malloc(ctx, (size_t)n * (size_t)bytes, path);
    if (!packed) return I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n; i++) {
        if (bytes == 1) {
            packed[i] = (uint8_t)labels[i];
        } else {  /* PNG samples are big-endian */
            packed[2 * i] = (uint8_t)(labels[i] >> 8);
            packed[2 * i + 1] = (uint8_t)labels[i];
        }
    }
    i3rt_status st = write_atomically(ctx, path, packed, rows, cols, 8 * bytes, PNG_COLOR_TYPE_GRAY,
                                      (size_t)cols * (size_t)bytes);
    free(packed);
    return st;
}

/* Decodes an open PNG into labels (*out malloc'ed). Everything libpng allocates is released here. */
static i3rt_status decode_labels(i3_ctx *ctx, const char *path, FILE *file, int32_t **out, int64_t *rows,
                                 int64_t *cols) {
    png_failure failure = {.message = ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: cannot start a PNG reader", path);
    }
    uint8_t *volatile pixels = NULL;
    uint8_t **volatile row_pointers = NULL;
    int32_t *volatile labels = NULL;
    if (setjmp(failure.jump)) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(row_pointers);
        free(labels);
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: not a readable PNG: %s", path, failure.message);
    }
    png_init_io(png, file);
    png_set_user_limits(png, 65535, 65535);
    png_read_info(png, info);
    const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    const int depth = png_get_bit_depth(png, info), colour = png_get_color_type(png, info);
    if (colour != PNG_COLOR_TYPE_GRAY && colour != PNG_COLOR_TYPE_GRAY_ALPHA && colour != PNG_COLOR_TYPE_PALETTE) {
        png_destroy_read_struct(&png, &info, NULL);
        return i3_fail(ctx, I3RT_ERR_FORMAT,
                       "%s: a colour (RGB) PNG; a label image must be grayscale (pixel value = class) or a "
                       "palette image (index = class)", path);
    }
    if (depth < 8) png_set_packing(png);     /* one byte per pixel, values kept (not scaled to 0..255) */
    if (colour == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const size_t row_bytes = png_get_rowbytes(png, info);
    pixels = malloc(row_bytes * height);
    row_pointers = malloc(height * sizeof(uint8_t *));
    labels = malloc((size_t)width * height * sizeof(int32_t));
    if (!pixels || !row_pointers || !labels) png_error(png, "out of memory");
    for (png_uint_32 r = 0; r < height; r++) row_pointers[r] = pixels + r * row_bytes;
    png_read_image(png, row_pointers);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    for (size_t i = 0; i < (size_t)width * height; i++)
        labels[i] = depth == 16 ? (pixels[2 * i] << 8) | pixels[2 * i + 1] : pixels[i];
    free(pixels);
    free(row_pointers);
    *out = labels;
    *rows = height;
    *cols = width;
    return I3RT_OK;
}

i3rt_status i3_png_read_labels(i3_ctx *ctx, const char *path, int32_t **labels, int64_t *rows, int64_t *cols) {
    *labels = NULL;
    *rows = *cols = 0;
    FILE *file = fopen(path, "rb");
    if (!file) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t signature[8];
    i3rt_status st;
    if (fread(signature, 1, 8, file) != 8 || png_sig_cmp(signature, 0, 8) != 0) {
        st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: not a PNG file (no PNG signature)", path);
    } else {
        rewind(file);
        st = decode_labels(ctx, path, file, labels, rows, cols);
    }
    fclose(file);
    return st;
}

static int by_value(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void i3_png_window(const float *image, int64_t n, float *lo, float *hi) {
    const int64_t most = (int64_t)1 << 20, step = n > most ? (n + most - 1) / most : 1, count = (n + step - 1) / step;
    float *sample = n > 0 ? malloc((size_t)count * sizeof *sample) : NULL;
    *lo = 0.0f;
    *hi = 1.0f;
    if (sample) {
        for (int64_t i = 0; i < count; i++) sample[i] = image[i * step];
        qsort(sample, (size_t)count, sizeof *sample, by_value);
        *lo = sample[(int64_t)(0.005 * (double)(count - 1))];
        *hi = sample[(int64_t)ceil(0.995 * (double)(count - 1))];
        free(sample);
    } else if (n > 0) {
        *lo = *hi = image[0];
        for (int64_t i = 1; i < n; i++) *lo = fminf(*lo, image[i]), *hi = fmaxf(*hi, image[i]);
    }
    if (!(*hi > *lo)) *hi = *lo + 1.0f;
}

void i3_png_class_colour(int32_t k, uint8_t rgb[3]) {
    /* Well-separated colours (Okabe-Ito, then a few more), repeated beyond twelve classes. */
    static const uint8_t colours[12][3] = {
        {230, 159, 0}, {86, 180, 233}, {0, 158, 115}, {240, 228, 66}, {0, 114, 178}, {213, 94, 0},
        {204, 121, 167}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 0, 255}, {0, 255, 255},
    };
    memcpy(rgb, colours[(k - 1) % 12], 3);
}

void i3_png_overlay(const float *image, const int32_t *labels, int64_t n, float lo, float hi, float alpha,
                    uint8_t *rgb) {
    const float scale = 255.0f / (hi - lo);
    for (int64_t i = 0; i < n; i++) {
        const float grey = fminf(fmaxf((image[i] - lo) * scale, 0.0f), 255.0f);
        uint8_t colour[3] = {0, 0, 0};
        const int tinted = labels && labels[i] > 0;
        if (tinted) i3_png_class_colour(labels[i], colour);
        for (int ch = 0; ch < 3; ch++)
            rgb[3 * i + ch] = (uint8_t)lrintf(tinted ? (1.0f - alpha) * grey + alpha * colour[ch] : grey);
    }
}
