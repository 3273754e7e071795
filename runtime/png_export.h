/* PNG images of slices for a person: previews (the image windowed to grey with the segmentation
 * overlaid in one colour per class) and label images (pixel value = class), written and read with
 * libpng. Pixel (row, col) is plane[row * cols + col], row 0 at the top (callers flip slices first,
 * see slice_select.h).
 *
 * Writing is atomic like NIfTI writing: "<path>.tmp-XXXXXX" beside path, renamed over it; a failed
 * write leaves no file. Reading label images accepts grayscale (1 to 16 bits; the value is the label,
 * never rescaled), grayscale + alpha (alpha ignored) and palette images (the index is the label);
 * RGB images are refused, since a colour is not a class. */
#ifndef I3RT_PNG_EXPORT_H
#define I3RT_PNG_EXPORT_H

#include "core.h"

/* Writes rows x cols pixels of 8-bit grey (channels 1) or RGB (channels 3). */
i3rt_status i3_png_write(i3_ctx *ctx, const char *path, const uint8_t *pixels, int64_t rows, int64_t cols,
                         int channels);

/* Writes a label plane as 8-bit grey (labels <= 255) or 16-bit grey (<= 65535). */
i3rt_status i3_png_write_labels(i3_ctx *ctx, const char *path, const int32_t *labels, int64_t rows, int64_t cols);

/* Reads a label image; *labels is malloc'ed [rows, cols]. On failure *labels is NULL and ctx names the file. */
i3rt_status i3_png_read_labels(i3_ctx *ctx, const char *path, int32_t **labels, int64_t *rows, int64_t *cols);

/* Grey window [lo, hi] of an image: its 0.5th and 99.5th percentiles (of at most 2^20 evenly strided
 * samples; min and max if that memory is not there), hi > lo always. */
void i3_png_window(const float *image, int64_t n, float *lo, float *hi);

/* Fixed colour of class k >= 1 (class 0, background, is not drawn). */
void i3_png_class_colour(int32_t k, uint8_t rgb[3]);

/* RGB preview of n pixels: the image windowed to [lo, hi] as grey, pixels with a label > 0 blended
 * with their class colour by alpha in [0, 1]. labels may be NULL (grey only). */
void i3_png_overlay(const float *image, const int32_t *labels, int64_t n, float lo, float hi, float alpha,
                    uint8_t *rgb);

#endif /* I3RT_PNG_EXPORT_H */
