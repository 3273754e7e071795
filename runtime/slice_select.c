/* Slice access along the three voxel axes and i3Deep's one-shot slice acquisition (see
 * slice_select.h for the rules and docs/i3deep.md for why they are these). */
#include "slice_select.h"

#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *i3_axis_name(i3_axis axis) {
    static const char *const names[3] = {"axial", "coronal", "sagittal"};
    return (unsigned)axis < 3 ? names[axis] : "?";
}

int64_t i3_axis_length(i3_axis axis, int64_t d, int64_t h, int64_t w) {
    return axis == I3_AXIAL ? d : axis == I3_CORONAL ? h : w;
}

void i3_slice_dims(i3_axis axis, int64_t d, int64_t h, int64_t w, int64_t *rows, int64_t *cols) {
    *rows = axis == I3_AXIAL ? h : d;
    *cols = axis == I3_SAGITTAL ? h : w;
}

int64_t i3_largest_slice(int64_t d, int64_t h, int64_t w) {
    int64_t most = 0, rows, cols;
    for (int a = 0; a < 3; a++) {
        i3_slice_dims((i3_axis)a, d, h, w, &rows, &cols);
        most = rows * cols > most ? rows * cols : most;
    }
    return most;
}

/* Offset in the volume of the first voxel of the slice, and the volume strides of a plane's rows and
 * columns: voxel (r, c) of the plane is volume[base + r * row_step + c * col_step]. */
static void slice_layout(i3_axis axis, int64_t h, int64_t w, int64_t index, int64_t *base, int64_t *row_step,
                         int64_t *col_step) {
    switch (axis) {
    case I3_AXIAL: *base = index * h * w; *row_step = w; *col_step = 1; break;
    case I3_CORONAL: *base = index * w; *row_step = h * w; *col_step = 1; break;
    default: *base = index; *row_step = h * w; *col_step = w; break;
    }
}

static void slice_copy(char *volume, size_t elem, int64_t d, int64_t h, int64_t w, i3_axis axis, int64_t index,
                       char *plane, int to_plane) {
    int64_t rows, cols, base, row_step, col_step;
    i3_slice_dims(axis, d, h, w, &rows, &cols);
    slice_layout(axis, h, w, index, &base, &row_step, &col_step);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            char *v = volume + (size_t)(base + r * row_step + c * col_step) * elem;
            char *p = plane + (size_t)(r * cols + c) * elem;
            if (to_plane) memcpy(p, v, elem);
            else memcpy(v, p, elem);
        }
}

void i3_slice_get(const void *volume, size_t elem, int64_t d, int64_t h, int64_t w, i3_axis axis, int64_t index,
                  void *plane) {
    slice_copy((char *)volume, elem, d, h, w, axis, index, plane, 1);
}

void i3_slice_put(void *volume, size_t elem, int64_t d, int64_t h, int64_t w, i3_axis axis, int64_t index,
                  const void *plane) {
    slice_copy(volume, elem, d, h, w, axis, index, (char *)plane, 0);
}

void i3_plane_flip_rows(void *plane, size_t elem, int64_t rows, int64_t cols) {
    char *p = plane;
    const size_t row_bytes = (size_t)cols * elem;
    for (int64_t r = 0; r < rows / 2; r++) {
        char *a = p + (size_t)r * row_bytes, *b = p + (size_t)(rows - 1 - r) * row_bytes;
        for (size_t i = 0; i < row_bytes; i++) {
            const char t = a[i];
            a[i] = b[i];
            b[i] = t;
        }
    }
}

int64_t i3_slice_min_dist_radius(double min_dist, int64_t len) { return (int64_t)llround(min_dist * (double)len); }

/* Slice j outranks slice i when its sum is larger, or equal with a lower index: among equal sums in
 * one window the first slice is the maximum, so a plateau yields one slice, deterministically. */
static int outranks(const double *sums, int64_t j, int64_t i) {
    return sums[j] > sums[i] || (sums[j] == sums[i] && j < i);
}

/* Full order of candidates: larger sum first, then axis, then index. */
static int by_rank(const void *a, const void *b) {
    const i3_slice *x = a, *y = b;
    if (x->sum != y->sum) return x->sum > y->sum ? -1 : 1;
    if (x->axis != y->axis) return x->axis < y->axis ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

i3rt_status i3_slice_select_from_sums(i3_ctx *ctx, const double *const sums[3], const int64_t len[3],
                                      const i3_slice_select_params *params, i3_slice *out, int *n_out) {
    *n_out = 0;
    const i3_slice_select_params *p = params;
    if (!(p->min_dist >= 0.0 && p->min_dist <= 1.0))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "slice selection: min_dist %g is outside [0, 1]", p->min_dist);
    if (!(p->min_uncert >= 0.0 && p->min_uncert <= 1.0))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "slice selection: min_uncert %g is outside [0, 1]",
                       p->min_uncert);
    if (p->max_slices < 1)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "slice selection: max_slices %d < 1", p->max_slices);
    int64_t total = 0;
    for (int a = 0; a < 3; a++) {
        if (len[a] < 1)
            return i3_fail(ctx, I3RT_ERR_SHAPE, "slice selection: %s axis has %lld slices", i3_axis_name(a),
                           (long long)len[a]);
        for (int64_t i = 0; i < len[a]; i++)
            if (!(isfinite(sums[a][i]) && sums[a][i] >= 0.0))
                return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                               "slice selection: %s slice %lld has uncertainty sum %g (must be finite and >= 0)",
                               i3_axis_name(a), (long long)i, sums[a][i]);
        total += len[a];
    }
    i3_slice *candidates = i3_malloc(ctx, (size_t)total * sizeof *candidates, "slice selection candidates");
    if (!candidates) return I3RT_ERR_OUT_OF_MEMORY;
    int64_t n = 0;
    for (int a = 0; a < 3; a++) {
        const double *s = sums[a];
        const int64_t r = i3_slice_min_dist_radius(p->min_dist, len[a]);
        double axis_max = 0.0;
        for (int64_t i = 0; i < len[a]; i++) axis_max = fmax(axis_max, s[i]);
        if (axis_max <= 0.0) continue;  /* no uncertainty on this axis: nothing to correct */
        for (int64_t i = 0; i < len[a]; i++) {
            int local_max = 1;
            for (int64_t j = i - r < 0 ? 0 : i - r; j <= i + r && j < len[a] && local_max; j++)
                if (j != i && outranks(s, j, i)) local_max = 0;
            if (!local_max || s[i] <= 0.0 || s[i] < p->min_uncert * axis_max) continue;
            candidates[n++] = (i3_slice){(i3_axis)a, i, s[i], s[i] / axis_max};
        }
    }
    qsort(candidates, (size_t)n, sizeof *candidates, by_rank);
    *n_out = n < p->max_slices ? (int)n : p->max_slices;
    memcpy(out, candidates, (size_t)*n_out * sizeof *out);
    free(candidates);
    return I3RT_OK;
}

i3rt_status i3_slice_select(i3_ctx *ctx, const float *uncertainty, int64_t d, int64_t h, int64_t w,
                            const i3_slice_select_params *params, i3_slice *out, int *n_out) {
    *n_out = 0;
    if (d < 1 || h < 1 || w < 1)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "slice selection: uncertainty map %lld x %lld x %lld is empty",
                       (long long)d, (long long)h, (long long)w);
    double *sums = i3_malloc(ctx, (size_t)(d + h + w) * sizeof *sums, "slice sums");
    if (!sums) return I3RT_ERR_OUT_OF_MEMORY;
    i3_cpu_slice_sums(uncertainty, d, h, w, sums, sums + d, sums + d + h);
    const double *per_axis[3] = {sums, sums + d, sums + d + h};
    const int64_t len[3] = {d, h, w};
    i3rt_status st = i3_slice_select_from_sums(ctx, per_axis, len, params, out, n_out);
    free(sums);
    return st;
}
