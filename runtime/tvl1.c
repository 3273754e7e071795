/* TV-L1 optical flow as scikit-image computes it (rules in tvl1.h, differences in docs/snc.md), and
 * Slice-and-Conquer's post-processing: warp a 3D prediction's slices towards an accurate 2D mask.
 *
 * The order of every float operation follows skimage/numpy/scipy, so that the flow agrees with
 * skimage's to rounding: float32 where numpy computes on float32 arrays (data term, dual projection,
 * np.gradient), double where scipy's C code does (Gaussian filter, interpolation weights and sums),
 * converted to float32 where scipy writes its float32 output. Fused multiply-adds would change the
 * rounding of those float32 steps, so this file is compiled without contraction. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "tvl1.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* skimage's pyramid (_optical_flow_utils._get_pyramid) and solver constants (_tvl1). */
#define PYRAMID_DOWNSCALE 2
#define PYRAMID_MAX_LEVELS 10
#define PYRAMID_MIN_SIZE 16
#define TIME_STEP 0.25f  /* dt = 0.5 / ndim */
#define PROJECTIONS 2    /* reg_num_iter */
#define GAUSS_RADIUS 3   /* int(truncate 4 * sigma 2/3 + 0.5) */

typedef struct {
    int64_t rows, cols;
} plane_size;

/* Level 0 is the input size; each next level is ceil(size / 2) per axis while the smaller side of the
 * previous one exceeds downscale * min_size. Returns the number of levels. */
static int pyramid_sizes(int64_t rows, int64_t cols, plane_size sizes[PYRAMID_MAX_LEVELS]) {
    int n = 0;
    sizes[n++] = (plane_size){rows, cols};
    while (n < PYRAMID_MAX_LEVELS) {
        const plane_size s = sizes[n - 1];
        if ((s.rows < s.cols ? s.rows : s.cols) <= PYRAMID_DOWNSCALE * PYRAMID_MIN_SIZE) break;
        sizes[n++] = (plane_size){(s.rows + 1) / 2, (s.cols + 1) / 2};
    }
    return n;
}

/* Scratch, in floats: the pyramid above level 0 (two images per level), then at level-0 size the flow,
 * the auxiliary flow, the flow kept for the stopping test (2 planes each), the warped image, its
 * gradient (2), |gradient|^2, the constant part of the residual, the dual variables (2 x 2), and a
 * line of doubles for the Gaussian filter. */
typedef struct {
    float *ref[PYRAMID_MAX_LEVELS], *mov[PYRAMID_MAX_LEVELS];
    float *flow, *aux, *prev, *warped, *grad, *ni, *rho0, *proj;
    double *line;
} tvl1_work;

static size_t scratch_floats(const plane_size *sizes, int levels, size_t *pyramid_floats) {
    size_t pyr = 0;
    for (int l = 1; l < levels; l++) pyr += 2 * (size_t)(sizes[l].rows * sizes[l].cols);
    const size_t n = (size_t)(sizes[0].rows * sizes[0].cols);
    const size_t longest = (size_t)(sizes[0].rows > sizes[0].cols ? sizes[0].rows : sizes[0].cols);
    if (pyramid_floats) *pyramid_floats = pyr;
    return pyr + 16 * n + 2 * (longest + 2 * GAUSS_RADIUS);  /* the line: doubles = 2 floats each */
}

size_t i3_tvl1_scratch_bytes(int64_t rows, int64_t cols) {
    size_t n;
    if (rows < 1 || cols < 1 || !i3_mul_size((size_t)rows, (size_t)cols, &n) || !i3_mul_size(n, 32 * sizeof(float), &n))
        return 0;
    plane_size sizes[PYRAMID_MAX_LEVELS];
    const int levels = pyramid_sizes(rows, cols, sizes);
    return scratch_floats(sizes, levels, NULL) * sizeof(float);
}

static void carve(tvl1_work *wk, float *base, const plane_size *sizes, int levels) {
    float *p = base;
    for (int l = 1; l < levels; l++) {
        const size_t n = (size_t)(sizes[l].rows * sizes[l].cols);
        wk->ref[l] = p, p += n;
        wk->mov[l] = p, p += n;
    }
    const size_t n = (size_t)(sizes[0].rows * sizes[0].cols);
    wk->flow = p, p += 2 * n;
    wk->aux = p, p += 2 * n;
    wk->prev = p, p += 2 * n;
    wk->warped = p, p += n;
    wk->grad = p, p += 2 * n;
    wk->ni = p, p += n;
    wk->rho0 = p, p += n;
    wk->proj = p;
    wk->line = (double *)(p + 5 * n);  /* at pyramid + 16 n floats, an even count: 8-byte aligned */
}

/* ---- interpolation (scipy.ndimage order 1: weights and sum in double, coordinates clamped) ---- */

static float bilinear(const float *im, int64_t rows, int64_t cols, double r, double c) {
    r = r > 0.0 ? r : 0.0;  /* also maps NaN to 0 */
    c = c > 0.0 ? c : 0.0;
    r = r < (double)(rows - 1) ? r : (double)(rows - 1);
    c = c < (double)(cols - 1) ? c : (double)(cols - 1);
    const int64_t r0 = (int64_t)floor(r), c0 = (int64_t)floor(c);
    const int64_t r1 = r0 + 1 < rows ? r0 + 1 : r0, c1 = c0 + 1 < cols ? c0 + 1 : c0;
    const double tr = r - (double)r0, tc = c - (double)c0;
    double v = 0.0;
    v += (double)im[r0 * cols + c0] * (1.0 - tr) * (1.0 - tc);
    v += (double)im[r0 * cols + c1] * (1.0 - tr) * tc;
    v += (double)im[r1 * cols + c0] * tr * (1.0 - tc);
    v += (double)im[r1 * cols + c1] * tr * tc;
    return (float)v;
}

void i3_warp_bilinear(const float *image, int64_t rows, int64_t cols, const float *flow, float alpha, float *out) {
    const int64_t n = rows * cols;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            const int64_t i = r * cols + c;
            /* skimage adds the float32 grid to the float32 flow before scipy widens to double */
            const float rr = alpha * flow[i] + (float)r, cc = alpha * flow[n + i] + (float)c;
            out[i] = bilinear(image, rows, cols, rr, cc);
        }
}

/* ---- pyramid: ndi.gaussian_filter(sigma 2/3, mode 'reflect') then ndi.zoom(order 1, grid_mode) ---- */

static int64_t reflect_index(int64_t i, int64_t n) {
    const int64_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

/* One axis of the separable Gaussian, as scipy's symmetric correlate1d: x[0] w[0] + sum over
 * j = 3, 2, 1 of (x[-j] + x[j]) w[j] in double, rounded to float per pass. */
static void gauss_pass(const float *x, int64_t rows, int64_t cols, int along_rows, const double *wt, double *line,
                       float *y) {
    const int64_t len = along_rows ? rows : cols, lines = along_rows ? cols : rows;
    const int64_t step = along_rows ? cols : 1, line_step = along_rows ? 1 : cols;
    for (int64_t l = 0; l < lines; l++) {
        const float *xl = x + l * line_step;
        for (int64_t i = -GAUSS_RADIUS; i < len + GAUSS_RADIUS; i++)
            line[i + GAUSS_RADIUS] = xl[reflect_index(i, len) * step];
        for (int64_t i = 0; i < len; i++) {
            const double *at = line + i + GAUSS_RADIUS;
            double v = at[0] * wt[0];
            for (int j = GAUSS_RADIUS; j >= 1; j--) v += (at[-j] + at[j]) * wt[j];
            y[l * line_step + i * step] = (float)v;
        }
    }
}

/* skimage.transform.pyramid_reduce: smooth (tmp holds the first pass and then the smoothed image),
 * then resize to half with pixel-area-aligned bilinear sampling. */
static void pyramid_reduce(const float *x, plane_size from, plane_size to, double *line, float *tmp, float *tmp2,
                           float *y) {
    const double sigma = 2.0 * PYRAMID_DOWNSCALE / 6.0, scale = -0.5 / (sigma * sigma);
    double phi[2 * GAUSS_RADIUS + 1], sum = 0.0;
    for (int j = -GAUSS_RADIUS; j <= GAUSS_RADIUS; j++) sum += phi[j + GAUSS_RADIUS] = exp(scale * (double)(j * j));
    for (int j = 0; j < 2 * GAUSS_RADIUS + 1; j++) phi[j] /= sum;
    gauss_pass(x, from.rows, from.cols, 1, phi + GAUSS_RADIUS, line, tmp);
    gauss_pass(tmp, from.rows, from.cols, 0, phi + GAUSS_RADIUS, line, tmp2);
    const double zr = (double)from.rows / (double)to.rows, zc = (double)from.cols / (double)to.cols;
    for (int64_t r = 0; r < to.rows; r++)
        for (int64_t c = 0; c < to.cols; c++)
            y[r * to.cols + c] = bilinear(tmp2, from.rows, from.cols, ((double)r + 0.5) * zr - 0.5,
                                          ((double)c + 0.5) * zc - 0.5);
}

/* _resize_flow: ndi.zoom(order 0, corners aligned) then times the size ratio (float32). */
static void resize_flow(const float *flow, plane_size from, plane_size to, float *out) {
    const double zr = to.rows > 1 ? (double)(from.rows - 1) / (double)(to.rows - 1) : 1.0;
    const double zc = to.cols > 1 ? (double)(from.cols - 1) / (double)(to.cols - 1) : 1.0;
    const float scale[2] = {(float)((double)to.rows / (double)from.rows), (float)((double)to.cols / (double)from.cols)};
    const int64_t n_from = from.rows * from.cols, n_to = to.rows * to.cols;
    for (int64_t r = 0; r < to.rows; r++) {
        int64_t sr = (int64_t)floor((double)r * zr + 0.5);
        sr = sr < from.rows ? sr : from.rows - 1;
        for (int64_t c = 0; c < to.cols; c++) {
            int64_t sc = (int64_t)floor((double)c * zc + 0.5);
            sc = sc < from.cols ? sc : from.cols - 1;
            for (int k = 0; k < 2; k++) out[k * n_to + r * to.cols + c] = scale[k] * flow[k * n_from + sr * from.cols + sc];
        }
    }
}

/* ---- the solver at one level (skimage _tvl1) ---- */

/* np.gradient: central differences inside, one-sided at the borders. */
static void gradient(const float *im, int64_t rows, int64_t cols, float *g) {
    float *gr = g, *gc = g + rows * cols;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            const int64_t i = r * cols + c;
            gr[i] = r == 0 ? im[i + cols] - im[i] : r == rows - 1 ? im[i] - im[i - cols] : (im[i + cols] - im[i - cols]) / 2.0f;
            gc[i] = c == 0 ? im[i + 1] - im[i] : c == cols - 1 ? im[i] - im[i - 1] : (im[i + 1] - im[i - 1]) / 2.0f;
        }
}

/* Two dual projections of one flow component u (Chambolle), then u = v + div p:
 *   p <- (p - dt grad+ u) / (1 + (dt / theta) |grad+ u|)   (forward differences, 0 past the end)
 *   u <- v + p_r(r-1, c) - p_r(r, c) + p_c(r, c-1) - p_c(r, c). */
static void tv_projection(float *u, const float *v, float *p_r, float *p_c, int64_t rows, int64_t cols, float f1) {
    const int64_t n = rows * cols;
    for (int it = 0; it < PROJECTIONS; it++) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                const int64_t i = r * cols + c;
                const float gr = r + 1 < rows ? u[i + cols] - u[i] : 0.0f, gc = c + 1 < cols ? u[i + 1] - u[i] : 0.0f;
                float norm = sqrtf(gr * gr + gc * gc);
                norm *= f1;
                norm += 1.0f;
                p_r[i] = (p_r[i] - TIME_STEP * gr) / norm;
                p_c[i] = (p_c[i] - TIME_STEP * gc) / norm;
            }
        for (int64_t i = 0; i < n; i++) {
            const int64_t r = i / cols, c = i % cols;
            float div = -(p_r[i] + p_c[i]);
            if (r > 0) div += p_r[i - cols];
            if (c > 0) div += p_c[i - 1];
            u[i] = v[i] + div;
        }
    }
}

/* Refines wk->flow (initial value on entry) for one pyramid level. */
static void solve_level(tvl1_work *wk, const float *ref, const float *mov, plane_size s, const i3_tvl1_params *p) {
    const int64_t n = s.rows * s.cols;
    const float f0 = (float)(p->attachment * p->tightness), f1 = (float)(0.25 / p->tightness);
    const double tol = p->tol * (double)n;
    float *fr = wk->flow, *fc = wk->flow + n, *ar = wk->aux, *ac = wk->aux + n;
    const float *gr = wk->grad, *gc = wk->grad + n;
    memset(wk->proj, 0, 4 * (size_t)n * sizeof(float));
    for (int warp = 0; warp < p->num_warp; warp++) {
        i3_warp_bilinear(mov, s.rows, s.cols, wk->flow, 1.0f, wk->warped);
        gradient(wk->warped, s.rows, s.cols, wk->grad);
        for (int64_t i = 0; i < n; i++) {
            const float ni = gr[i] * gr[i] + gc[i] * gc[i];
            wk->ni[i] = ni == 0.0f ? 1.0f : ni;
            wk->rho0[i] = wk->warped[i] - ref[i] - (gr[i] * fr[i] + gc[i] * fc[i]);
        }
        for (int iter = 0; iter < p->num_iter; iter++) {
            /* data term: thresholding step of the pointwise L1 problem */
            for (int64_t i = 0; i < n; i++) {
                const float rho = wk->rho0[i] + (gr[i] * fr[i] + gc[i] * fc[i]);
                if (fabsf(rho) <= f0 * wk->ni[i]) {
                    ar[i] = fr[i] - rho * gr[i] / wk->ni[i];
                    ac[i] = fc[i] - rho * gc[i] / wk->ni[i];
                } else {
                    const float srho = rho > 0.0f ? f0 : -f0;
                    ar[i] = fr[i] - srho * gr[i];
                    ac[i] = fc[i] - srho * gc[i];
                }
            }
            /* skimage's stopping test compares the end of a warp with the flow after this first data
             * step (its flow_previous aliases the array the step updates in place) */
            if (iter == 0) memcpy(wk->prev, wk->aux, 2 * (size_t)n * sizeof(float));
            memcpy(wk->flow, wk->aux, 2 * (size_t)n * sizeof(float));
            for (int k = 0; k < 2; k++)
                tv_projection(wk->flow + k * n, wk->aux + k * n, wk->proj + 2 * k * n, wk->proj + (2 * k + 1) * n, s.rows,
                              s.cols, f1);
        }
        double change = 0.0;
        for (int64_t i = 0; i < 2 * n; i++) {
            const float delta = wk->prev[i] - wk->flow[i];
            change += (double)(delta * delta);
        }
        if (change < tol) break;
    }
}

static i3rt_status check_finite(i3_ctx *ctx, const float *x, int64_t rows, int64_t cols, const char *what) {
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(x[i]))
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "tv-l1: %s pixel (%lld, %lld) is %g (must be finite)", what,
                           (long long)(i / cols), (long long)(i % cols), (double)x[i]);
    return I3RT_OK;
}

static i3rt_status check_params(i3_ctx *ctx, const i3_tvl1_params *p) {
    if (!(p->attachment > 0.0 && isfinite(p->attachment)) || !(p->tightness > 0.0 && isfinite(p->tightness)))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "tv-l1: attachment %g and tightness %g must be finite and > 0",
                       p->attachment, p->tightness);
    if (p->num_warp < 1 || p->num_iter < 1)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "tv-l1: num_warp %d and num_iter %d must be >= 1", p->num_warp,
                       p->num_iter);
    if (!(p->tol >= 0.0 && isfinite(p->tol)))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "tv-l1: tol %g must be finite and >= 0", p->tol);
    return I3RT_OK;
}

i3rt_status i3_tvl1(i3_ctx *ctx, const float *reference, const float *moving, int64_t rows, int64_t cols,
                    const i3_tvl1_params *params, void *scratch, float *flow) {
    const i3_tvl1_params p = params ? *params : I3_TVL1_DEFAULTS;
    if (!reference || !moving || !flow)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "tv-l1: reference, moving image and flow must not be NULL");
    if (rows < 2 || cols < 2)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "tv-l1: images of %lld x %lld pixels (need at least 2 x 2)", (long long)rows,
                       (long long)cols);
    const size_t bytes = i3_tvl1_scratch_bytes(rows, cols);
    if (!bytes)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "tv-l1: images of %lld x %lld pixels are too large", (long long)rows,
                       (long long)cols);
    I3_TRY(check_params(ctx, &p));
    I3_TRY(check_finite(ctx, reference, rows, cols, "reference image"));
    I3_TRY(check_finite(ctx, moving, rows, cols, "moving image"));
    void *owned = NULL;
    if (!scratch) {
        char what[96];
        snprintf(what, sizeof what, "tv-l1 scratch for %lld x %lld images", (long long)rows, (long long)cols);
        scratch = owned = i3_malloc(ctx, bytes, what);
        if (!scratch) return I3RT_ERR_OUT_OF_MEMORY;
    }
    plane_size sizes[PYRAMID_MAX_LEVELS];
    const int levels = pyramid_sizes(rows, cols, sizes);
    tvl1_work wk;
    carve(&wk, scratch, sizes, levels);
    wk.ref[0] = (float *)reference, wk.mov[0] = (float *)moving;
    for (int l = 1; l < levels; l++) {  /* the first-level scratch planes are free until the solve */
        pyramid_reduce(wk.ref[l - 1], sizes[l - 1], sizes[l], wk.line, wk.warped, wk.rho0, wk.ref[l]);
        pyramid_reduce(wk.mov[l - 1], sizes[l - 1], sizes[l], wk.line, wk.warped, wk.rho0, wk.mov[l]);
    }
    const int top = levels - 1;
    memset(wk.flow, 0, 2 * (size_t)(sizes[top].rows * sizes[top].cols) * sizeof(float));
    for (int l = top; l >= 0; l--) {
        if (l < top) {
            resize_flow(wk.flow, sizes[l + 1], sizes[l], wk.aux);
            float *t = wk.flow;
            wk.flow = wk.aux, wk.aux = t;
        }
        solve_level(&wk, wk.ref[l], wk.mov[l], sizes[l], &p);
    }
    memcpy(flow, wk.flow, 2 * (size_t)(rows * cols) * sizeof(float));
    free(owned);
    return I3RT_OK;
}

/* ---- Slice-and-Conquer post-processing ---- */

float i3_snc_blend_weight(double gamma, int64_t k) {
    const double a = 1.0 - gamma * (double)(k < 0 ? -k : k);
    return a > 0.0 ? (float)a : 0.0f;
}

i3rt_status i3_snc_postprocess(i3_ctx *ctx, float *prediction, int64_t d, int64_t h, int64_t w, i3_axis axis,
                               int64_t index, const float *mask, double gamma, const i3_tvl1_params *params) {
    if (!prediction || !mask)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc post-processing: prediction and mask must not be NULL");
    if ((unsigned)axis > I3_SAGITTAL)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc post-processing: axis %d is not 0, 1 or 2", (int)axis);
    if (d < 1 || h < 1 || w < 1)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "snc post-processing: prediction %lld x %lld x %lld is empty", (long long)d,
                       (long long)h, (long long)w);
    const int64_t len = i3_axis_length(axis, d, h, w);
    if (index < 0 || index >= len)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc post-processing: %s slice %lld outside [0, %lld)",
                       i3_axis_name(axis), (long long)index, (long long)len);
    if (!(gamma >= 0.0 && gamma <= 1.0))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc post-processing: gamma %g is outside [0, 1]", gamma);
    for (int64_t i = 0; i < d * h * w; i++)  /* all of it before any change: no half-applied result */
        if (!isfinite(prediction[i]))
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc post-processing: prediction voxel %lld is %g",
                           (long long)i, (double)prediction[i]);
    int64_t rows, cols;
    i3_slice_dims(axis, d, h, w, &rows, &cols);
    const size_t plane = (size_t)(rows * cols);
    float *buf = i3_malloc(ctx, 4 * plane * sizeof(float), "snc post-processing planes");
    if (!buf) return I3RT_ERR_OUT_OF_MEMORY;
    float *slice = buf, *warped = buf + plane, *flow = buf + 2 * plane;
    i3_slice_get(prediction, sizeof(float), d, h, w, axis, index, slice);
    i3rt_status st = i3_tvl1(ctx, mask, slice, rows, cols, params, NULL, flow);
    if (st != I3RT_OK) {
        free(buf);
        return st;
    }
    for (int64_t j = 0; j < len; j++) {
        const float alpha = i3_snc_blend_weight(gamma, j - index);
        if (alpha == 0.0f) continue;
        i3_slice_get(prediction, sizeof(float), d, h, w, axis, j, slice);
        i3_warp_bilinear(slice, rows, cols, flow, alpha, warped);
        i3_slice_put(prediction, sizeof(float), d, h, w, axis, j, warped);
    }
    free(buf);
    return I3RT_OK;
}
