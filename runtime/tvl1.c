/* TV-L1 optical flow as scikit-image computes it (rules in tvl1.h, differences in docs/snc.md), and
 * Slice-and-Conquer's post-processing: warp a 3D prediction's slices towards an accurate 2D mask.
 *
 * The order of every float operation follows skimage/numpy/scipy, so that the flow agrees with
 * skimage's to rounding: float32 where numpy computes on float32 arrays (data term, dual projection,
 * np.gradient), double where scipy's C code does (Gaussian filter, interpolation weights and sums),
 * converted to float32 where scipy writes its float32 output. Fused multiply-adds would change the
 * rounding of those float32 steps, so this file is compiled without contraction. The per-pixel steps
 * are in tvl1_pixel.h, shared with the device version (kernels/tvl1.cu); the loops and the pyramid
 * and level schedule are here. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "tvl1.h"
#include "tvl1_pixel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Level 0 is the input size; each next level is ceil(size / 2) per axis while the smaller side of the
 * previous one exceeds downscale 2 * min_size 16 (skimage's _get_pyramid). */
int i3_tvl1_pyramid(int64_t rows, int64_t cols, i3_tvl1_size sizes[I3_TVL1_MAX_LEVELS]) {
    int n = 0;
    sizes[n++] = (i3_tvl1_size){rows, cols};
    while (n < I3_TVL1_MAX_LEVELS) {
        const i3_tvl1_size s = sizes[n - 1];
        if ((s.rows < s.cols ? s.rows : s.cols) <= 32) break;
        sizes[n++] = (i3_tvl1_size){(s.rows + 1) / 2, (s.cols + 1) / 2};
    }
    return n;
}

/* Scratch, in floats: the pyramid above level 0 (two images per level), then at level-0 size the flow,
 * the auxiliary flow, the flow kept for the stopping test (2 planes each), the warped image, its
 * gradient (2), |gradient|^2, the constant part of the residual and the dual variables (2 x 2). */
size_t i3_tvl1_scratch_bytes(int64_t rows, int64_t cols) {
    size_t n;
    if (rows < 1 || cols < 1 || !i3_mul_size((size_t)rows, (size_t)cols, &n) || !i3_mul_size(n, 32 * sizeof(float), &n))
        return 0;
    i3_tvl1_size sizes[I3_TVL1_MAX_LEVELS];
    const int levels = i3_tvl1_pyramid(rows, cols, sizes);
    size_t floats = 15 * (size_t)(rows * cols);
    for (int l = 1; l < levels; l++) floats += 2 * (size_t)(sizes[l].rows * sizes[l].cols);
    return floats * sizeof(float);
}

size_t i3_tvl1_device_partials_offset(int64_t rows, int64_t cols) {
    return (i3_tvl1_scratch_bytes(rows, cols) + sizeof(double) - 1) / sizeof(double) * sizeof(double);
}

size_t i3_tvl1_device_scratch_bytes(int64_t rows, int64_t cols) {
    return i3_tvl1_scratch_bytes(rows, cols) ? i3_tvl1_device_partials_offset(rows, cols) + I3_TVL1_DEVICE_PARTIALS * sizeof(double)
                                             : 0;
}

void i3_tvl1_carve(i3_tvl1_work *wk, void *scratch, const i3_tvl1_size *sizes, int levels) {
    float *p = scratch;
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
}

void i3_tvl1_gauss_weights(double w[4]) {
    const double sigma = 2.0 * 2.0 / 6.0, scale = -0.5 / (sigma * sigma);
    double phi[2 * TVL1_GAUSS_RADIUS + 1], sum = 0.0;
    for (int j = -TVL1_GAUSS_RADIUS; j <= TVL1_GAUSS_RADIUS; j++)
        sum += phi[j + TVL1_GAUSS_RADIUS] = exp(scale * (double)(j * j));
    for (int j = 0; j <= TVL1_GAUSS_RADIUS; j++) w[j] = phi[TVL1_GAUSS_RADIUS + j] / sum;
}

/* Planes smaller than this run on one thread: a parallel region per step would cost more than the step. */
#define PARALLEL_MIN_PIXELS 16384

static int plane_threads(int64_t pixels, int n_threads) { return pixels >= PARALLEL_MIN_PIXELS && n_threads > 1 ? n_threads : 1; }

static void warp_plane(const float *image, int64_t rows, int64_t cols, const float *flow, float alpha, float *out,
                       int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) out[r * cols + c] = tvl1_warp_at(image, rows, cols, flow, alpha, r, c);
}

void i3_warp_bilinear(const float *image, int64_t rows, int64_t cols, const float *flow, float alpha, float *out) {
    warp_plane(image, rows, cols, flow, alpha, out, 1);
}

/* skimage.transform.pyramid_reduce: ndi.gaussian_filter(sigma 2/3, 'reflect') one axis after the
 * other, each pass rounded to float (tmp), then ndi.zoom(order 1, grid_mode) to half size. */
static void pyramid_reduce(const float *x, i3_tvl1_size from, i3_tvl1_size to, const double wt[4], float *tmp,
                           float *tmp2, float *y, int n_threads) {
    const int64_t rows = from.rows, cols = from.cols;
    const int threads = plane_threads(rows * cols, n_threads);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) tmp[r * cols + c] = tvl1_gauss_at(x + c, rows, cols, r, wt);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) tmp2[r * cols + c] = tvl1_gauss_at(tmp + r * cols, cols, 1, c, wt);
    const double zr = (double)rows / (double)to.rows, zc = (double)cols / (double)to.cols;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < to.rows; r++)
        for (int64_t c = 0; c < to.cols; c++)
            y[r * to.cols + c] = tvl1_bilinear(tmp2, rows, cols, ((double)r + 0.5) * zr - 0.5, ((double)c + 0.5) * zc - 0.5);
}

/* _resize_flow: ndi.zoom(order 0, corners aligned) then times the size ratio (float32). */
static void resize_flow(const float *flow, i3_tvl1_size from, i3_tvl1_size to, float *out) {
    const double zr = to.rows > 1 ? (double)(from.rows - 1) / (double)(to.rows - 1) : 1.0;
    const double zc = to.cols > 1 ? (double)(from.cols - 1) / (double)(to.cols - 1) : 1.0;
    const float scale[2] = {(float)((double)to.rows / (double)from.rows), (float)((double)to.cols / (double)from.cols)};
    const int64_t n_from = from.rows * from.cols, n_to = to.rows * to.cols;
    for (int64_t r = 0; r < to.rows; r++) {
        const int64_t sr = tvl1_nearest_index(r, zr, from.rows);
        for (int64_t c = 0; c < to.cols; c++) {
            const int64_t sc = tvl1_nearest_index(c, zc, from.cols);
            for (int k = 0; k < 2; k++) out[k * n_to + r * to.cols + c] = scale[k] * flow[k * n_from + sr * from.cols + sc];
        }
    }
}

/* Refines wk->flow (initial value on entry) for one pyramid level (skimage _tvl1). Every step is
 * per pixel, so threads over rows change no result; the stopping test's sum stays serial. */
static void solve_level(i3_tvl1_work *wk, const float *ref, const float *mov, i3_tvl1_size s, const i3_tvl1_params *p,
                        int n_threads) {
    const int64_t rows = s.rows, cols = s.cols, n = rows * cols;
    const int threads = plane_threads(n, n_threads);
    const float f0 = (float)(p->attachment * p->tightness), f1 = (float)(0.25 / p->tightness);
    float *fr = wk->flow, *fc = wk->flow + n, *ar = wk->aux, *ac = wk->aux + n, *gr = wk->grad, *gc = wk->grad + n;
    memset(wk->proj, 0, 4 * (size_t)n * sizeof(float));
    for (int warp = 0; warp < p->num_warp; warp++) {
        warp_plane(mov, rows, cols, wk->flow, 1.0f, wk->warped, threads);
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = r * cols; i < (r + 1) * cols; i++) {
                tvl1_gradient_at(wk->warped, rows, cols, r, i - r * cols, gr + i, gc + i);
                const float ni = gr[i] * gr[i] + gc[i] * gc[i];
                wk->ni[i] = ni == 0.0f ? 1.0f : ni;
                wk->rho0[i] = wk->warped[i] - ref[i] - (gr[i] * fr[i] + gc[i] * fc[i]);
            }
        for (int iter = 0; iter < p->num_iter; iter++) {
#pragma omp parallel for schedule(static) num_threads(threads)
            for (int64_t i = 0; i < n; i++) tvl1_data_at(wk->rho0[i], gr[i], gc[i], wk->ni[i], f0, fr[i], fc[i], ar + i, ac + i);
            /* skimage's stopping test compares the end of a warp with the flow after this first data
             * step (its flow_previous aliases the array the step updates in place) */
            if (iter == 0) memcpy(wk->prev, wk->aux, 2 * (size_t)n * sizeof(float));
            memcpy(wk->flow, wk->aux, 2 * (size_t)n * sizeof(float));
            for (int proj = 0; proj < 2; proj++)  /* skimage's reg_num_iter; the components are independent */
                for (int k = 0; k < 2; k++) {
                    float *u = wk->flow + k * n, *p_r = wk->proj + 2 * k * n, *p_c = wk->proj + (2 * k + 1) * n;
#pragma omp parallel for schedule(static) num_threads(threads)
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t c = 0; c < cols; c++) tvl1_dual_at(u, rows, cols, r, c, f1, p_r, p_c);
#pragma omp parallel for schedule(static) num_threads(threads)
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t c = 0; c < cols; c++) u[r * cols + c] = tvl1_divergence_at(wk->aux + k * n, p_r, p_c, cols, r, c);
                }
        }
        double change = 0.0;
        for (int64_t i = 0; i < 2 * n; i++) {
            const float delta = wk->prev[i] - wk->flow[i];
            change += (double)(delta * delta);
        }
        if (change < p->tol * (double)n) break;
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
    const int n_threads = ctx && ctx->n_threads > 1 ? ctx->n_threads : 1;
    i3_tvl1_size sizes[I3_TVL1_MAX_LEVELS];
    const int levels = i3_tvl1_pyramid(rows, cols, sizes);
    i3_tvl1_work wk;
    i3_tvl1_carve(&wk, scratch, sizes, levels);
    wk.ref[0] = (float *)reference, wk.mov[0] = (float *)moving;
    double wt[4];
    i3_tvl1_gauss_weights(wt);
    for (int l = 1; l < levels; l++) {  /* the first-level scratch planes are free until the solve */
        pyramid_reduce(wk.ref[l - 1], sizes[l - 1], sizes[l], wt, wk.warped, wk.rho0, wk.ref[l], n_threads);
        pyramid_reduce(wk.mov[l - 1], sizes[l - 1], sizes[l], wt, wk.warped, wk.rho0, wk.mov[l], n_threads);
    }
    const int top = levels - 1;
    memset(wk.flow, 0, 2 * (size_t)(sizes[top].rows * sizes[top].cols) * sizeof(float));
    for (int l = top; l >= 0; l--) {
        if (l < top) {
            resize_flow(wk.flow, sizes[l + 1], sizes[l], wk.aux);
            float *t = wk.flow;
            wk.flow = wk.aux, wk.aux = t;
        }
        solve_level(&wk, wk.ref[l], wk.mov[l], sizes[l], &p, n_threads);
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
        warp_plane(slice, rows, cols, flow, alpha, warped, plane_threads(rows * cols, ctx ? ctx->n_threads : 1));
        i3_slice_put(prediction, sizeof(float), d, h, w, axis, j, warped);
    }
    free(buf);
    return I3RT_OK;
}
