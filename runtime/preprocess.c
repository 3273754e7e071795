/* nnU-Net v2's preprocessing steps (see preprocess.h for the nnunetv2 sources each one follows).
 *
 * Resampling: skimage's resize(order, mode="edge", anti_aliasing=False) is scipy.ndimage.zoom with
 * grid_mode=True and mode="nearest"; for order > 1 scipy pads 12 edge voxels on every side, runs the
 * B-spline prefilter (mirror-initialised causal/anticausal recursions, scipy's ni_splines.c) along each
 * axis of the padded array and evaluates the spline at (k + 0.5) * in / out - 0.5 + 12. Padding, prefilter
 * and evaluation are all separable, linear and act along one axis each, so they commute across axes:
 * we run pad -> prefilter -> evaluate one axis at a time on lines (no padded 3D copy, 4 taps per pass
 * instead of 64 per voxel). The result equals scipy's up to double rounding (~1e-15 relative). */
#include "preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void i3_transpose3(const float *x, int64_t channels, const int64_t shape[3], const int perm[3], float *y,
                   int64_t out_shape[3], int n_threads) {
    const int64_t in_stride[3] = {shape[1] * shape[2], shape[2], 1};
    int64_t os[3], st[3];
    for (int a = 0; a < 3; a++) {
        os[a] = shape[perm[a]];
        st[a] = in_stride[perm[a]];
    }
    const int64_t n = shape[0] * shape[1] * shape[2];
    for (int64_t c = 0; c < channels; c++) {
        const float *xc = x + c * n;
        float *yc = y + c * n;
#pragma omp parallel for collapse(2) schedule(static) num_threads(n_threads)
        for (int64_t i = 0; i < os[0]; i++)
            for (int64_t j = 0; j < os[1]; j++) {
                const float *src = xc + i * st[0] + j * st[1];
                float *dst = yc + (i * os[1] + j) * os[2];
                for (int64_t k = 0; k < os[2]; k++) dst[k] = src[k * st[2]];
            }
    }
    if (out_shape) memcpy(out_shape, os, sizeof os);
}

/* ---- crop to nonzero --------------------------------------------------------------------------- */

enum { MASK_OUT = 0, MASK_IN = 1, MASK_OUTSIDE_REACHED = 2 };

/* A row segment [x0, x1] of background reached from the border; row = z * h + y. */
typedef struct {
    int64_t row, x0, x1;
} fill_run;

/* Marks every background run of the row starting at `line` (w voxels) that has a voxel in [x0, x1], each
 * extended to its whole length, and pushes it. */
static i3rt_status push_runs(i3_ctx *ctx, uint8_t *mask, int64_t w, int64_t line, int64_t x0, int64_t x1,
                             fill_run **stack, int64_t *top, int64_t *cap) {
    uint8_t *m = mask + line;
    for (int64_t x = x0; x <= x1; x++) {
        if (m[x] != MASK_OUT) continue;
        int64_t a = x, b = x;
        while (a > 0 && m[a - 1] == MASK_OUT) a--;
        while (b < w - 1 && m[b + 1] == MASK_OUT) b++;
        memset(m + a, MASK_OUTSIDE_REACHED, (size_t)(b - a + 1));
        if (*top == *cap) {
            const int64_t grown = *cap ? 2 * *cap : 4096;
            fill_run *s = realloc(*stack, (size_t)grown * sizeof *s);
            if (!s) return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "nonzero mask: no memory for the flood fill");
            *stack = s, *cap = grown;
        }
        (*stack)[(*top)++] = (fill_run){line / w, a, b};
        x = b;
    }
    return I3RT_OK;
}

i3rt_status i3_nonzero_mask(i3_ctx *ctx, const float *x, int64_t channels, const int64_t shape[3], uint8_t *mask) {
    const int64_t d = shape[0], h = shape[1], w = shape[2], n = d * h * w;
#pragma omp parallel for schedule(static) num_threads(ctx ? ctx->n_threads : 1)
    for (int64_t i = 0; i < n; i++) {
        uint8_t any = 0;
        for (int64_t c = 0; c < channels && !any; c++) any = x[c * n + i] != 0.0f;
        mask[i] = any ? MASK_IN : MASK_OUT;
    }
    if (n == 0) return I3RT_OK;
    /* binary_fill_holes: background voxels 6-connected to the outside of the array stay background,
     * every other voxel becomes foreground. A flood fill from the border voxels over runs along x: a run
     * is a maximal row segment of background, marked as a whole, and the rows above and below it in y
     * and z are scanned for the runs it touches (far fewer pushes than one per voxel). */
    fill_run *stack = NULL;
    int64_t top = 0, cap = 0;
    i3rt_status st = I3RT_OK;
    for (int64_t z = 0; z < d && st == I3RT_OK; z++)
        for (int64_t y = 0; y < h && st == I3RT_OK; y++) {
            /* every voxel of a border row is on the border, else only the row's two ends */
            const bool border_row = z == 0 || z == d - 1 || y == 0 || y == h - 1;
            st = push_runs(ctx, mask, w, (z * h + y) * w, 0, border_row ? w - 1 : 0, &stack, &top, &cap);
            if (st == I3RT_OK && !border_row)
                st = push_runs(ctx, mask, w, (z * h + y) * w, w - 1, w - 1, &stack, &top, &cap);
        }
    while (top > 0 && st == I3RT_OK) {
        const fill_run r = stack[--top];
        const int64_t row = r.row, z = row / h, y = row % h;
        const int64_t neighbours[4] = {y > 0 ? row - 1 : -1, y < h - 1 ? row + 1 : -1, z > 0 ? row - h : -1,
                                       z < d - 1 ? row + h : -1};
        for (int k = 0; k < 4 && st == I3RT_OK; k++)
            if (neighbours[k] >= 0)
                st = push_runs(ctx, mask, w, neighbours[k] * w, r.x0, r.x1, &stack, &top, &cap);
    }
    free(stack);
    if (st != I3RT_OK) return st;
#pragma omp parallel for schedule(static) num_threads(ctx ? ctx->n_threads : 1)
    for (int64_t i = 0; i < n; i++) mask[i] = mask[i] != MASK_OUTSIDE_REACHED;
    return I3RT_OK;
}

void i3_mask_bbox(const uint8_t *mask, const int64_t shape[3], int64_t lo[3], int64_t hi[3]) {
    int64_t l[3] = {shape[0], shape[1], shape[2]}, u[3] = {0, 0, 0};
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < shape[1]; y++) {
            const uint8_t *row = mask + (z * shape[1] + y) * shape[2];
            for (int64_t x = 0; x < shape[2]; x++) {
                if (!row[x]) continue;
                const int64_t p[3] = {z, y, x};
                for (int a = 0; a < 3; a++) {
                    if (p[a] < l[a]) l[a] = p[a];
                    if (p[a] + 1 > u[a]) u[a] = p[a] + 1;
                }
            }
        }
    for (int a = 0; a < 3; a++) {
        const bool empty = u[a] == 0;
        lo[a] = empty ? 0 : l[a];
        hi[a] = empty ? shape[a] : u[a];
    }
}

void i3_crop(const float *x, int64_t channels, const int64_t shape[3], const int64_t lo[3], const int64_t hi[3],
             float *y, int n_threads) {
    const int64_t bd = hi[0] - lo[0], bh = hi[1] - lo[1], bw = hi[2] - lo[2];
#pragma omp parallel for collapse(2) schedule(static) num_threads(n_threads)
    for (int64_t c = 0; c < channels; c++)
        for (int64_t z = 0; z < bd; z++)
            for (int64_t r = 0; r < bh; r++)
                memcpy(y + ((c * bd + z) * bh + r) * bw,
                       x + ((c * shape[0] + lo[0] + z) * shape[1] + lo[1] + r) * shape[2] + lo[2],
                       (size_t)bw * sizeof *y);
}

/* ---- normalization ----------------------------------------------------------------------------- */

bool i3_norm_scheme_parse(const char *name, i3_norm_scheme *out) {
    static const struct {
        const char *name;
        i3_norm_scheme scheme;
    } names[] = {{"ZScoreNormalization", I3_NORM_ZSCORE}, {"CTNormalization", I3_NORM_CT},
                 {"NoNormalization", I3_NORM_NONE},       {"RescaleTo01Normalization", I3_NORM_RESCALE_01},
                 {"RGBTo01Normalization", I3_NORM_RGB_01}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].scheme;
            return true;
        }
    return false;
}

i3rt_status i3_normalize_channel(i3_ctx *ctx, float *x, int64_t n, const uint8_t *mask, const i3_norm_channel *p,
                                 int channel) {
    const double eps = 1e-8;
    switch (p->scheme) {
    case I3_NORM_ZSCORE: {
        /* mean and population std (numpy's ddof=0) of the voxels inside the mask (or all) */
        const bool masked = p->use_mask && mask;
        double sum = 0.0, count = 0.0;
        for (int64_t i = 0; i < n; i++)
            if (!masked || mask[i]) {
                sum += x[i];
                count += 1.0;
            }
        if (count == 0.0) return I3RT_OK; /* nothing to normalize: an empty mask */
        const double mean = sum / count;
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++)
            if (!masked || mask[i]) ss += ((double)x[i] - mean) * ((double)x[i] - mean);
        const float m = (float)mean, s = (float)fmax(sqrt(ss / count), eps);
        for (int64_t i = 0; i < n; i++)
            if (!masked || mask[i]) x[i] = (x[i] - m) / s;
        return I3RT_OK;
    }
    case I3_NORM_CT: {
        /* nnunetv2 does this in float32 with the bounds and statistics cast to float32 */
        const float lo = (float)p->percentile_00_5, hi = (float)p->percentile_99_5, m = (float)p->mean,
                    s = (float)fmax(p->std, eps);
        for (int64_t i = 0; i < n; i++) {
            float v = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
            x[i] = (v - m) / s;
        }
        return I3RT_OK;
    }
    case I3_NORM_NONE:
        return I3RT_OK;
    case I3_NORM_RESCALE_01: {
        float lo = INFINITY, hi;
        for (int64_t i = 0; i < n; i++) lo = fminf(lo, x[i]);
        hi = -INFINITY;
        for (int64_t i = 0; i < n; i++) hi = fmaxf(hi, x[i] -= lo);
        const float s = (float)fmax(hi, eps);
        for (int64_t i = 0; i < n; i++) x[i] /= s;
        return I3RT_OK;
    }
    case I3_NORM_RGB_01:
        for (int64_t i = 0; i < n; i++)
            if (!(x[i] >= 0.0f && x[i] <= 255.0f))
                return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                               "channel %d: RGBTo01Normalization needs values in [0, 255], found %g", channel,
                               (double)x[i]);
        for (int64_t i = 0; i < n; i++) x[i] /= 255.0f;
        return I3RT_OK;
    }
    return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "channel %d: unknown normalization scheme %d", channel,
                   (int)p->scheme);
}

/* ---- resampling ---------------------------------------------------------------------------------- */

void i3_compute_new_shape(const int64_t old_shape[3], const double old_spacing[3], const double new_spacing[3],
                          int64_t new_shape[3]) {
    for (int a = 0; a < 3; a++) new_shape[a] = (int64_t)nearbyint(old_spacing[a] / new_spacing[a] * (double)old_shape[a]);
}

/* get_lowres_axis: the axes whose spacing equals the maximum; returns how many, *axis the first. */
static int lowres_axes(const double spacing[3], int *axis) {
    const double mx = fmax(spacing[0], fmax(spacing[1], spacing[2]));
    int count = 0;
    for (int a = 2; a >= 0; a--)
        if (mx / spacing[a] == 1.0) {
            *axis = a;
            count++;
        }
    return count;
}

static bool anisotropic(const double spacing[3]) {
    const double mx = fmax(spacing[0], fmax(spacing[1], spacing[2]));
    const double mn = fmin(spacing[0], fmin(spacing[1], spacing[2]));
    return mx / mn > I3_ANISO_THRESHOLD;
}

void i3_resample_decide(const i3_resample_params *p, const double current_spacing[3], const double new_spacing[3],
                        int *do_separate_z, int *axis) {
    const double *from = NULL;
    if (p->force_separate_z >= 0) {
        if (p->force_separate_z) from = current_spacing;
    } else if (anisotropic(current_spacing)) {
        from = current_spacing;
    } else if (anisotropic(new_spacing)) {
        from = new_spacing;
    }
    *do_separate_z = 0;
    *axis = -1;
    /* two or three axes sharing the largest spacing (e.g. 0.24, 1.25, 1.25): no separate axis */
    if (from && lowres_axes(from, axis) == 1) *do_separate_z = 1;
    else *axis = -1;
}

/* scipy ni_splines.c: the cubic B-spline interpolation weights at x (order 0, 1, 3). */
static void spline_weights(double x, int order, double *w) {
    x -= floor(order & 1 ? x : x + 0.5);
    switch (order) {
    case 0:
        break;
    case 1:
        w[0] = 1.0 - x;
        break;
    case 3: {
        const double y = x, z = 1.0 - x;
        w[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
        w[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
        w[0] = z * z * z / 6.0;
        break;
    }
    }
    w[order] = 1.0;
    for (int i = 0; i < order; i++) w[order] -= w[i];
}

#define SPLINE_PREPAD 12  /* scipy's _prepad_for_spline_filter for mode "nearest" */
#define SPLINE_POLE_3 (-0.267949192431122706472553658494127633) /* sqrt(3) - 2 */

/* The order-3 B-spline prefilter of `width` lines at once, boundary "mirror" (what scipy uses for
 * "nearest"): element i of line v at c[i * width + v]. Each line sees scipy's operations in scipy's order. */
static void spline_prefilter(double *c, int64_t n, int64_t width) {
    if (n <= 1) return;
    const double z = SPLINE_POLE_3;
    const double gain = (1.0 - z) * (1.0 - 1.0 / z);
    const double zn1 = pow(z, (double)(n - 1));
    double *first = c, *last = c + (n - 1) * width;
    for (int64_t i = 0; i < n * width; i++) c[i] *= gain;
    /* causal init (mirror) */
    for (int64_t v = 0; v < width; v++) first[v] = first[v] + zn1 * last[v];
    double zi = z;
    for (int64_t i = 1; i < n - 1; i++) {
        const double *ci = c + i * width, *cm = c + (n - 1 - i) * width;
        for (int64_t v = 0; v < width; v++) first[v] += zi * (ci[v] + zn1 * cm[v]);
        zi *= z;
    }
    for (int64_t v = 0; v < width; v++) first[v] /= 1 - zn1 * zn1;
    for (int64_t i = 1; i < n; i++)
        for (int64_t v = 0; v < width; v++) c[i * width + v] += z * c[(i - 1) * width + v];
    /* anticausal init (mirror) */
    for (int64_t v = 0; v < width; v++) last[v] = (z * last[v - width] + last[v]) * z / (z * z - 1);
    for (int64_t i = n - 2; i >= 0; i--)
        for (int64_t v = 0; v < width; v++) c[i * width + v] = z * (c[(i + 1) * width + v] - c[i * width + v]);
}

/* How one axis is resampled: for each output index, order + 1 tap positions in the (padded) input line
 * and their weights. */
typedef struct {
    int64_t n_in, n_out, len; /* len: line length after padding */
    int order, npad;
    int64_t *taps;            /* [n_out][order + 1] */
    double *weights;          /* [n_out][order + 1] */
} axis_plan;

static int64_t mirror_index(int64_t idx, int64_t len) {
    if (len <= 1) return 0;
    const int64_t s2 = 2 * len - 2;
    if (idx < 0) {
        idx = s2 * (-idx / s2) + idx;
        idx = idx <= 1 - len ? idx + s2 : -idx;
    } else if (idx >= len) {
        idx -= s2 * (idx / s2);
        if (idx >= len) idx = s2 - idx;
    }
    return idx;
}

static i3rt_status axis_plan_init(i3_ctx *ctx, axis_plan *p, int64_t n_in, int64_t n_out, int order) {
    memset(p, 0, sizeof *p);
    p->n_in = n_in;
    p->n_out = n_out;
    p->order = order;
    p->npad = order > 1 ? SPLINE_PREPAD : 0;
    p->len = n_in + 2 * p->npad;
    const int taps = order + 1;
    p->taps = i3_malloc(ctx, (size_t)(n_out * taps) * sizeof *p->taps, "resampling taps");
    p->weights = i3_malloc(ctx, (size_t)(n_out * taps) * sizeof *p->weights, "resampling weights");
    if (!p->taps || !p->weights) return I3RT_ERR_OUT_OF_MEMORY;
    const double zoom = (double)n_in / (double)n_out; /* grid_mode: in / out */
    for (int64_t k = 0; k < n_out; k++) {
        double cc = ((double)k + 0.5) * zoom - 0.5;
        cc += (double)p->npad;
        /* mode "nearest": coordinates outside the (padded) line are clamped */
        if (cc < 0) cc = 0;
        else if (cc > (double)(p->len - 1)) cc = (double)(p->len - 1);
        const int64_t start = (int64_t)(order & 1 ? floor(cc) : floor(cc + 0.5)) - order / 2;
        spline_weights(cc, order, p->weights + k * taps);
        for (int t = 0; t < taps; t++) p->taps[k * taps + t] = mirror_index(start + t, p->len);
    }
    return I3RT_OK;
}

static void axis_plan_free(axis_plan *p) {
    free(p->taps);
    free(p->weights);
}

/* Lines resampled together along axes 0 and 1: adjacent along axis 2, so every row they read and write
 * is contiguous (one line at a time strides through memory). */
#define RESAMPLE_BUNDLE 32

/* Resamples axis `axis` of x [s0, s1, s2] (double; or, when xf is not NULL, the float input xf) into y with
 * that axis n_out long, in bundles of up to RESAMPLE_BUNDLE lines that are neighbours along axis 2 (one line
 * per bundle along axis 2 itself). buf: per thread scratch of p->len * RESAMPLE_BUNDLE doubles. */
static void resample_axis(const double *x, const float *xf, const int64_t s[3], int axis, const axis_plan *p,
                          double *y, double *buf, int n_threads) {
    int64_t os[3] = {s[0], s[1], s[2]};
    os[axis] = p->n_out;
    const int64_t in_stride[3] = {s[1] * s[2], s[2], 1}, out_stride[3] = {os[1] * os[2], os[2], 1};
    /* a line: all index combinations of the two other axes; a0 < a1, a1 is axis 2 unless axis is */
    const int a0 = axis == 0 ? 1 : 0, a1 = axis == 2 ? 1 : 2;
    const int64_t width = axis == 2 ? 1 : RESAMPLE_BUNDLE;
    const int64_t bundles_per_row = (s[a1] + width - 1) / width, n_bundles = s[a0] * bundles_per_row;
    const int taps = p->order + 1;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t l = 0; l < n_bundles; l++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        double *lines = buf + (int64_t)tid * p->len * RESAMPLE_BUNDLE;
        const int64_t i0 = l / bundles_per_row, i1 = l % bundles_per_row * width;
        const int64_t w = s[a1] - i1 < width ? s[a1] - i1 : width;
        const int64_t first = i0 * in_stride[a0] + i1 * in_stride[a1];
        double *dst = y + i0 * out_stride[a0] + i1 * out_stride[a1];
        const int64_t st = in_stride[axis], ost = out_stride[axis];
        for (int64_t i = 0; i < p->len; i++) {
            int64_t j = i - p->npad;
            j = j < 0 ? 0 : j >= p->n_in ? p->n_in - 1 : j;
            if (xf)
                for (int64_t v = 0; v < w; v++) lines[i * w + v] = xf[first + j * st + v];
            else
                for (int64_t v = 0; v < w; v++) lines[i * w + v] = x[first + j * st + v];
        }
        if (p->order > 1) spline_prefilter(lines, p->len, w);
        for (int64_t k = 0; k < p->n_out; k++) {
            const int64_t *tk = p->taps + k * taps;
            const double *wk = p->weights + k * taps;
            double *out = dst + k * ost;
            if (p->order == 0) {
                for (int64_t v = 0; v < w; v++) out[v] = lines[tk[0] * w + v];
                continue;
            }
            for (int64_t v = 0; v < w; v++) {
                double t = 0.0;
                for (int j = 0; j < taps; j++) t += lines[tk[j] * w + v] * wk[j];
                out[v] = t;
            }
        }
    }
}

typedef struct {
    axis_plan plan[3];
    double *a, *b, *buf;
} resample_work;

static void work_free(resample_work *w) {
    for (int a = 0; a < 3; a++) axis_plan_free(&w->plan[a]);
    free(w->a);
    free(w->b);
    free(w->buf);
}

/* The axis plans (spline order per axis) and buffers for resampling in -> out: two volumes of the larger
 * extent per axis (no intermediate is bigger) and the threads' line bundles. work_free(w) after, also when
 * this fails. */
static i3rt_status work_init(i3_ctx *ctx, resample_work *w, const int64_t in[3], const int64_t out[3],
                             const int orders[3], int n_threads) {
    memset(w, 0, sizeof *w);
    i3rt_status st = I3RT_OK;
    int64_t max_len = 0, inter = 1;
    for (int a = 0; a < 3 && st == I3RT_OK; a++) {
        st = axis_plan_init(ctx, &w->plan[a], in[a], out[a], orders[a]);
        if (w->plan[a].len > max_len) max_len = w->plan[a].len;
        inter *= in[a] > out[a] ? in[a] : out[a];
    }
    if (st == I3RT_OK) {
        w->a = i3_malloc(ctx, (size_t)inter * sizeof(double), "resampling buffer");
        w->b = i3_malloc(ctx, (size_t)inter * sizeof(double), "resampling buffer");
        w->buf = i3_malloc(ctx, (size_t)(max_len * RESAMPLE_BUNDLE * n_threads) * sizeof(double),
                           "resampling line buffers");
        if (!w->a || !w->b || !w->buf) st = I3RT_ERR_OUT_OF_MEMORY;
    }
    return st;
}

/* Runs the passes of the axes in `axes` (resized to out[axis]) over cur (shape s, updated), ping-ponging
 * between w->a and w->b; returns the buffer that holds the result. cur NULL: the first pass reads the float
 * input xf (converted to double as it is read; copied into w->a if no pass runs). */
static double *run_passes(resample_work *w, double *cur, const float *xf, int64_t s[3], const int *axes,
                          int n_axes, const int64_t out[3], int n_threads) {
    for (int i = 0; i < n_axes; i++) {
        const int ax = axes[i];
        if (s[ax] == out[ax]) continue;
        double *dst = cur == w->a ? w->b : w->a;
        resample_axis(cur, cur ? NULL : xf, s, ax, &w->plan[ax], dst, w->buf, n_threads);
        s[ax] = out[ax];
        cur = dst;
    }
    if (!cur) {
        const int64_t n = s[0] * s[1] * s[2];
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (int64_t i = 0; i < n; i++) w->a[i] = xf[i];
        cur = w->a;
    }
    return cur;
}

/* The separate axis resampled with order 0 (nnU-Net's order_z default): output slice k along `axis` is the
 * in-plane resize of input slice taps[k], clipped to that input slice's range [range[2 src], range[2 src + 1]].
 * So each input slice that some output slice takes is resized once, and straight into yc (float): no volume of
 * doubles between the in-plane and the axis passes, no input slice resized for nothing; order-0 taps never
 * decrease, so the output slices sharing a source are neighbours and get copies. The values are those of the
 * in-plane passes over every slice followed by the order-0 pass. gather: room for one input slice (axis > 0). */
static void resample_slices_nearest(resample_work *w, const float *xc, const int64_t in[3], const int64_t out[3],
                                    int axis, const double *range, float *gather, float *yc, int n_threads) {
    const int plane[2] = {axis == 2 ? 1 : 2, axis == 0 ? 1 : 0};
    const int64_t *taps = w->plan[axis].taps;
    /* a slice's element i lies at (i / inner) * (len * inner) + index * inner + i % inner in its volume */
    const int64_t inner_in = axis == 2 ? 1 : axis == 1 ? in[2] : in[1] * in[2];
    const int64_t inner_out = axis == 2 ? 1 : axis == 1 ? out[2] : out[1] * out[2];
    const int64_t n_slice_in = in[0] * in[1] * in[2] / in[axis], n_slice_out = out[0] * out[1] * out[2] / out[axis];
    for (int64_t k = 0; k < out[axis];) {
        const int64_t src = taps[k];
        int64_t end = k + 1;
        while (end < out[axis] && taps[end] == src) end++;
        const float *slice = xc + src * inner_in;
        if (axis > 0) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
            for (int64_t i = 0; i < n_slice_in; i++)
                gather[i] = xc[i / inner_in * in[axis] * inner_in + src * inner_in + i % inner_in];
            slice = gather;
        }
        int64_t s[3] = {in[0], in[1], in[2]};
        s[axis] = 1;
        const double *res = run_passes(w, NULL, slice, s, plane, 2, out, n_threads);
        const double lo = range[2 * src], hi = range[2 * src + 1];
        for (int64_t j = k; j < end; j++) {
            float *dst = yc + j * inner_out;
#pragma omp parallel for schedule(static) num_threads(n_threads)
            for (int64_t i = 0; i < n_slice_out; i++)
                dst[i / inner_out * out[axis] * inner_out + i % inner_out] = (float)fmin(fmax(res[i], lo), hi);
        }
        k = end;
    }
}

i3rt_status i3_resample(i3_ctx *ctx, const float *x, int64_t channels, const int64_t in[3], const int64_t out[3],
                        const double current_spacing[3], const double new_spacing[3], const i3_resample_params *p,
                        float *y, int n_threads) {
    const int64_t n_in = in[0] * in[1] * in[2], n_out = out[0] * out[1] * out[2];
    if (in[0] == out[0] && in[1] == out[1] && in[2] == out[2]) {
        memcpy(y, x, (size_t)(channels * n_in) * sizeof *y);
        return I3RT_OK;
    }
    if (p->order != 1 && p->order != 3)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "resampling: spline order %d (i3rt implements 1 and 3)", p->order);
    if (p->order_z != 0 && p->order_z != 1)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "resampling: order_z %d (i3rt implements 0 and 1)", p->order_z);
    int sep, axis;
    i3_resample_decide(p, current_spacing, new_spacing, &sep, &axis);
    const int orders[3] = {sep && axis == 0 ? p->order_z : p->order, sep && axis == 1 ? p->order_z : p->order,
                           sep && axis == 2 ? p->order_z : p->order};
    resample_work w;
    i3rt_status st = work_init(ctx, &w, in, out, orders, n_threads);
    for (int64_t c = 0; c < channels && st == I3RT_OK; c++) {
        const float *xc = x + c * n_in;
        int64_t s[3] = {in[0], in[1], in[2]};
        double *res;
        if (!sep) {
            double lo = INFINITY, hi = -INFINITY; /* the input is finite (checked): min/max reductions are exact */
#pragma omp parallel for schedule(static) num_threads(n_threads) reduction(min : lo) reduction(max : hi)
            for (int64_t i = 0; i < n_in; i++) {
                lo = fmin(lo, (double)xc[i]);
                hi = fmax(hi, (double)xc[i]);
            }
            const int axes[3] = {2, 1, 0};
            res = run_passes(&w, NULL, xc, s, axes, 3, out, n_threads);
#pragma omp parallel for schedule(static) num_threads(n_threads)
            for (int64_t i = 0; i < n_out; i++) res[i] = fmin(fmax(res[i], lo), hi); /* skimage's clip */
        } else {
            /* in-plane resize slice by slice (each slice clipped to its own range), then along the axis */
            const int plane[2] = {axis == 2 ? 1 : 2, axis == 0 ? 1 : 0};
            const int64_t in_stride[3] = {in[1] * in[2], in[2], 1};
            const int64_t n_slices = in[axis];
            const int nearest = w.plan[axis].order == 0;
            double *range = i3_malloc(ctx, (size_t)(2 * n_slices) * sizeof *range, "slice ranges");
            float *gather = nearest && axis > 0 ? i3_malloc(ctx, (size_t)(n_in / n_slices) * sizeof *gather,
                                                            "a slice to resample")
                                                : NULL;
            if (!range || (nearest && axis > 0 && !gather)) {
                free(range);
                st = I3RT_ERR_OUT_OF_MEMORY;
                break;
            }
            /* each slice's range: the slices along `axis`, one thread each */
            const int64_t outer = axis == 0 ? 1 : in[0] * (axis == 2 ? in[1] : 1), inner = in_stride[axis];
#pragma omp parallel for schedule(static) num_threads(n_threads)
            for (int64_t k = 0; k < n_slices; k++) {
                double lo = INFINITY, hi = -INFINITY;
                for (int64_t o = 0; o < outer; o++) {
                    const float *row = xc + o * n_slices * inner + k * inner;
                    for (int64_t i = 0; i < inner; i++) {
                        lo = fmin(lo, row[i]);
                        hi = fmax(hi, row[i]);
                    }
                }
                range[2 * k] = lo, range[2 * k + 1] = hi;
            }
            if (nearest) {
                resample_slices_nearest(&w, xc, in, out, axis, range, gather, y + c * n_out, n_threads);
                free(range);
                free(gather);
                continue;
            }
            res = run_passes(&w, NULL, xc, s, plane, 2, out, n_threads);
            const int64_t ps[3] = {s[0], s[1], s[2]};
            const int64_t pst[3] = {ps[1] * ps[2], ps[2], 1};
            const int64_t n_plane = ps[0] * ps[1] * ps[2];
#pragma omp parallel for schedule(static) num_threads(n_threads)
            for (int64_t i = 0; i < n_plane; i++) {
                const int64_t k = (i / pst[axis]) % ps[axis];
                res[i] = fmin(fmax(res[i], range[2 * k]), range[2 * k + 1]);
            }
            free(range);
            const int along[1] = {axis};
            res = run_passes(&w, res, NULL, s, along, 1, out, n_threads);
        }
        float *yc = y + c * n_out;
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (int64_t i = 0; i < n_out; i++) yc[i] = (float)res[i];
    }
    work_free(&w);
    return st;
}

/* ---- label maps: resize_segmentation ------------------------------------------------------------ */

/* One running argmax of batchgenerators' _resample_seg_by_argmax (seg_tiebreak "nearest") over n output
 * voxels, fed one label (index i, ascending label order) at a time: win is the index with the largest
 * score so far (an exact tie keeps the earlier one), nn_top says whether the nearest neighbour's label nn
 * holds the top score, so that at the end it settles the ties it takes part in. */
static void label_argmax_step(const double *score, int i, const int16_t *nn, double *best, int16_t *win,
                              uint8_t *nn_top, int64_t n, int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t v = 0; v < n; v++) {
        const double s = score[v];
        if (i == 0) {
            best[v] = s;
            win[v] = 0;
            nn_top[v] = nn[v] == 0 && s > 0;
            continue;
        }
        if (s == best[v] && s > 0 && nn[v] == i) nn_top[v] = 1;
        if (s > best[v]) {
            nn_top[v] = nn[v] == i;
            win[v] = (int16_t)i;
            best[v] = s;
        }
    }
}

/* Scratch of resize_labels for blocks of up to n_in input and n_out output voxels. */
typedef struct {
    resample_work linear, nearest; /* the score passes (order 1) and the nearest-neighbour passes (order 0) */
    float *indicator;              /* a label's indicator, or the label map as floats */
    double *best;
    int16_t *win, *nn;
    uint8_t *nn_top;
} label_work;

static void label_work_free(label_work *w) {
    work_free(&w->linear);
    work_free(&w->nearest);
    free(w->indicator);
    free(w->best);
    free(w->win);
    free(w->nn);
    free(w->nn_top);
}

/* resize_segmentation(x, out, order 1) of one block x [s] (a volume, or a slice with its axis 1 long in
 * both s and out): each label's indicator resized like skimage (clipped to [0, 1]), the argmax above. */
static void resize_labels(label_work *w, const int16_t *x, const int64_t s_in[3], const int64_t out[3],
                          const int16_t *labels, int n_labels, int16_t *y, int n_threads) {
    const int64_t n_in = s_in[0] * s_in[1] * s_in[2], n_out = out[0] * out[1] * out[2];
    const int axes[3] = {2, 1, 0};
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t v = 0; v < n_in; v++) w->indicator[v] = x[v];
    int64_t s[3] = {s_in[0], s_in[1], s_in[2]};
    const double *nn = run_passes(&w->nearest, NULL, w->indicator, s, axes, 3, out, n_threads);
    /* the nearest neighbour's label as an index into labels (a label of the block by construction) */
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t v = 0; v < n_out; v++) {
        int lo = 0, hi = n_labels - 1;
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if ((double)labels[mid] < nn[v]) lo = mid + 1;
            else hi = mid;
        }
        w->nn[v] = (int16_t)lo;
    }
    for (int i = 0; i < n_labels; i++) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (int64_t v = 0; v < n_in; v++) w->indicator[v] = x[v] == labels[i] ? 1.0f : 0.0f;
        memcpy(s, s_in, sizeof s);
        double *score = run_passes(&w->linear, NULL, w->indicator, s, axes, 3, out, n_threads);
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (int64_t v = 0; v < n_out; v++) score[v] = fmin(fmax(score[v], 0.0), 1.0); /* skimage's clip */
        label_argmax_step(score, i, w->nn, w->best, w->win, w->nn_top, n_out, n_threads);
    }
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t v = 0; v < n_out; v++) y[v] = labels[w->nn_top[v] ? w->nn[v] : w->win[v]];
}

static i3rt_status label_work_init(i3_ctx *ctx, label_work *w, const int64_t in[3], const int64_t out[3],
                                   int n_threads) {
    memset(w, 0, sizeof *w);
    const int64_t n_in = in[0] * in[1] * in[2], n_out = out[0] * out[1] * out[2];
    const int linear[3] = {1, 1, 1}, nearest[3] = {0, 0, 0};
    i3rt_status st = work_init(ctx, &w->linear, in, out, linear, n_threads);
    if (st == I3RT_OK) st = work_init(ctx, &w->nearest, in, out, nearest, n_threads);
    if (st == I3RT_OK) {
        w->indicator = i3_malloc(ctx, (size_t)n_in * sizeof *w->indicator, "a label's indicator");
        w->best = i3_malloc(ctx, (size_t)n_out * sizeof *w->best, "the label scores");
        w->win = i3_malloc(ctx, (size_t)n_out * sizeof *w->win, "the label argmax");
        w->nn = i3_malloc(ctx, (size_t)n_out * sizeof *w->nn, "the nearest labels");
        w->nn_top = i3_malloc(ctx, (size_t)n_out, "the nearest-label ties");
        if (!w->indicator || !w->best || !w->win || !w->nn || !w->nn_top) st = I3RT_ERR_OUT_OF_MEMORY;
    }
    if (st != I3RT_OK) label_work_free(w);
    return st;
}

/* The separate-axis case of i3_resample_labels: each slice resized in-plane, then the nearest slice along
 * the axis (map_coordinates, order 0: the axis plan's taps). */
static i3rt_status resample_labels_separate(i3_ctx *ctx, const int16_t *x, const int64_t in[3], const int64_t out[3],
                                            int axis, const int16_t *labels, int n_labels, int16_t *y, int n_threads) {
    const int64_t n_in = in[0] * in[1] * in[2], n_out = out[0] * out[1] * out[2];
    int64_t slice_in[3] = {in[0], in[1], in[2]}, slice_out[3] = {out[0], out[1], out[2]};
    slice_in[axis] = slice_out[axis] = 1;
    const int64_t n_slice_in = n_in / in[axis], n_slice_out = n_out / out[axis];
    const int64_t inner_in = axis == 2 ? 1 : axis == 1 ? in[2] : in[1] * in[2];
    const int64_t inner_out = axis == 2 ? 1 : axis == 1 ? out[2] : out[1] * out[2];
    label_work w;
    I3_TRY(label_work_init(ctx, &w, slice_in, slice_out, n_threads));
    axis_plan along;
    int16_t *gather = i3_malloc(ctx, (size_t)n_slice_in * sizeof *gather, "a slice of the segmentation");
    int16_t *inter = i3_malloc(ctx, (size_t)(n_slice_out * in[axis]) * sizeof *inter, "the in-plane resized slices");
    i3rt_status st = gather && inter ? axis_plan_init(ctx, &along, in[axis], out[axis], 0) : I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t k = 0; k < in[axis] && st == I3RT_OK; k++) {
        for (int64_t i = 0; i < n_slice_in; i++) gather[i] = x[i / inner_in * in[axis] * inner_in + k * inner_in + i % inner_in];
        resize_labels(&w, gather, slice_in, slice_out, labels, n_labels, inter + k * n_slice_out, n_threads);
    }
    for (int64_t j = 0; j < out[axis] && st == I3RT_OK; j++) {
        const int16_t *src = inter + along.taps[j] * n_slice_out;
        for (int64_t i = 0; i < n_slice_out; i++) y[i / inner_out * out[axis] * inner_out + j * inner_out + i % inner_out] = src[i];
    }
    if (gather && inter) axis_plan_free(&along);
    free(gather);
    free(inter);
    label_work_free(&w);
    return st;
}

i3rt_status i3_resample_labels(i3_ctx *ctx, const int16_t *x, const int64_t in[3], const int64_t out[3],
                               const double current_spacing[3], const double new_spacing[3],
                               const i3_resample_params *p, int16_t *y, int n_threads) {
    const int64_t n_in = in[0] * in[1] * in[2], n_out = out[0] * out[1] * out[2];
    if (in[0] == out[0] && in[1] == out[1] && in[2] == out[2]) {
        memcpy(y, x, (size_t)n_in * sizeof *y);
        return I3RT_OK;
    }
    if (p->order != 1)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "resampling a segmentation: order %d (i3rt implements 1)", p->order);
    int sep, axis;
    i3_resample_decide(p, current_spacing, new_spacing, &sep, &axis);
    if (sep && p->order_z != 0)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "resampling a segmentation: order_z %d (i3rt implements 0)",
                       p->order_z);
    /* the labels present, ascending (unique_labels) */
    enum { SPAN = 1 << 16 };
    uint8_t *present = i3_calloc(ctx, SPAN, 1, "the label table");
    int16_t *labels = present ? i3_malloc(ctx, SPAN * sizeof *labels, "the labels") : NULL;
    if (!labels) {
        free(present);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    for (int64_t v = 0; v < n_in; v++) present[x[v] + 32768] = 1;
    int n_labels = 0;
    for (int i = 0; i < SPAN; i++)
        if (present[i]) labels[n_labels++] = (int16_t)(i - 32768);
    free(present);
    i3rt_status st = I3RT_OK;
    if (n_labels == 1) {
        for (int64_t v = 0; v < n_out; v++) y[v] = labels[0];
    } else if (!sep) {
        label_work w;
        st = label_work_init(ctx, &w, in, out, n_threads);
        if (st == I3RT_OK) resize_labels(&w, x, in, out, labels, n_labels, y, n_threads);
        if (st == I3RT_OK) label_work_free(&w);
    } else {
        st = resample_labels_separate(ctx, x, in, out, axis, labels, n_labels, y, n_threads);
    }
    free(labels);
    return st;
}
