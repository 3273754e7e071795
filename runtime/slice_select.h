/* Slices of a volume along its three voxel axes, and i3Deep's one-shot slice acquisition.
 *
 * Axes: arrays are [d, h, w] (w fastest; NIfTI z, y, x). An axial slice fixes d (NIfTI z), a coronal
 * slice fixes h (y), a sagittal slice fixes w (x). These are voxel axes: the names match the anatomy
 * only for volumes stored close to RAS/LPS (nothing is reoriented). A slice is a plane of rows x cols:
 *   axial    [h, w]   coronal  [d, w]   sagittal [d, h]
 * row-major (the faster remaining axis is the column), row 0 first - the same layout as a NIfTI file
 * holding the slice as a one-voxel-thick volume. PNG images show the rows reversed (i3_plane_flip_rows:
 * the highest row index at the top), so that a volume stored in RAS order appears the way radiology
 * shows it: anterior up on axial slices, superior up on coronal and sagittal ones.
 *
 * Acquisition (paper Sec. 3.2.2; precise rules in docs/i3deep.md): per axis, the sum of uncertainty of
 * every slice; a slice survives if it is a local maximum within r = round(min_dist * axis length)
 * slices on each side (a neighbour with an equal sum suppresses it only from the lower index), and if
 * its sum is > 0 and at least min_uncert times the largest slice sum of its axis; of all survivors of
 * the three axes, the max_slices largest sums are kept (ties: axial before coronal before sagittal,
 * then lower index). */
#ifndef I3RT_SLICE_SELECT_H
#define I3RT_SLICE_SELECT_H

#include "core.h"

typedef enum { I3_AXIAL = 0, I3_CORONAL = 1, I3_SAGITTAL = 2 } i3_axis;

const char *i3_axis_name(i3_axis axis);         /* "axial", "coronal", "sagittal" */
int64_t i3_axis_length(i3_axis axis, int64_t d, int64_t h, int64_t w);
void i3_slice_dims(i3_axis axis, int64_t d, int64_t h, int64_t w, int64_t *rows, int64_t *cols);
/* The pixels of the largest slice along any of the three axes. */
int64_t i3_largest_slice(int64_t d, int64_t h, int64_t w);

/* Copy slice `index` of a volume [d, h, w] of elem-byte elements into a plane [rows, cols], or back. */
void i3_slice_get(const void *volume, size_t elem, int64_t d, int64_t h, int64_t w, i3_axis axis, int64_t index,
                  void *plane);
void i3_slice_put(void *volume, size_t elem, int64_t d, int64_t h, int64_t w, i3_axis axis, int64_t index,
                  const void *plane);

/* Reverses the order of the rows of a plane [rows, cols] of elem-byte elements, in place. */
void i3_plane_flip_rows(void *plane, size_t elem, int64_t rows, int64_t cols);

typedef struct {
    double min_dist;    /* suppression window as a fraction of the axis length, in [0, 1] (paper: 0.0234) */
    double min_uncert;  /* minimum slice sum relative to its axis's largest slice sum, in [0, 1] (0.1) */
    int max_slices;     /* most slices kept over all three axes, >= 1 (12) */
} i3_slice_select_params;

#define I3_SLICE_SELECT_DEFAULTS ((i3_slice_select_params){0.0234, 0.1, 12})

typedef struct {
    i3_axis axis;
    int64_t index;
    double sum;         /* the slice's summed uncertainty */
    double relative;    /* sum / largest slice sum of its axis */
} i3_slice;

/* The suppression radius on an axis of len slices: round(min_dist * len) (half away from zero). */
int64_t i3_slice_min_dist_radius(double min_dist, int64_t len);

/* Acquisition from per-slice sums (sums[a] has len[a] values, a = i3_axis). out must hold
 * params->max_slices entries; *n_out receives how many were chosen, most uncertain first. Sums must
 * be finite and >= 0. */
i3rt_status i3_slice_select_from_sums(i3_ctx *ctx, const double *const sums[3], const int64_t len[3],
                                      const i3_slice_select_params *params, i3_slice *out, int *n_out);

/* The same from an uncertainty map [d, h, w] (slice sums by i3_cpu_slice_sums). */
i3rt_status i3_slice_select(i3_ctx *ctx, const float *uncertainty, int64_t d, int64_t h, int64_t w,
                            const i3_slice_select_params *params, i3_slice *out, int *n_out);

#endif /* I3RT_SLICE_SELECT_H */
