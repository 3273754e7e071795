/* The per-pixel steps of TV-L1 (tvl1.h), shared by the CPU loops (runtime/tvl1.c) and the device
 * kernels (kernels/tvl1.cu), so that both compute each pixel with the same operations in the same
 * order: skimage's float32 steps in float, scipy's filters and interpolation in double. A file that
 * includes this header and wants skimage's rounding must be compiled without contracted
 * multiply-adds (both .c and .cu say so at their top). Planes are [rows, cols], row-major. */
#ifndef I3RT_TVL1_PIXEL_H
#define I3RT_TVL1_PIXEL_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TVL1_FN static __host__ __device__ inline
#else
#define TVL1_FN static inline
#endif

#define TVL1_TIME_STEP 0.25f  /* skimage's dt = 0.5 / ndim */
#define TVL1_GAUSS_RADIUS 3   /* int(truncate 4 * sigma 2/3 + 0.5) */

/* scipy.ndimage order 1: coordinates clamped to the image (NaN to 0), weights and sum in double. */
TVL1_FN float tvl1_bilinear(const float *im, int64_t rows, int64_t cols, double r, double c) {
    r = r > 0.0 ? r : 0.0;
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

/* skimage.transform.warp(order 1, mode 'edge') at pixel (r, c) with alpha times the flow [2, rows, cols];
 * skimage adds the float32 grid to the float32 flow before scipy widens to double. */
TVL1_FN float tvl1_warp_at(const float *im, int64_t rows, int64_t cols, const float *flow, float alpha, int64_t r,
                           int64_t c) {
    const int64_t i = r * cols + c;
    const float rr = alpha * flow[i] + (float)r, cc = alpha * flow[rows * cols + i] + (float)c;
    return tvl1_bilinear(im, rows, cols, rr, cc);
}

/* scipy 'reflect' (d c b a | a b c d) */
TVL1_FN int64_t tvl1_reflect(int64_t i, int64_t n) {
    const int64_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

/* One output of scipy's symmetric correlate1d along a line of len samples step apart:
 * x[0] w[0] + sum over j = 3, 2, 1 of (x[-j] + x[j]) w[j], in double, rounded to float. */
TVL1_FN float tvl1_gauss_at(const float *line, int64_t len, int64_t step, int64_t p, const double w[4]) {
    double v = (double)line[p * step] * w[0];
    for (int j = TVL1_GAUSS_RADIUS; j >= 1; j--)
        v += ((double)line[tvl1_reflect(p - j, len) * step] + (double)line[tvl1_reflect(p + j, len) * step]) * w[j];
    return (float)v;
}

/* np.gradient at (r, c): central differences inside, one-sided at the borders. */
TVL1_FN void tvl1_gradient_at(const float *im, int64_t rows, int64_t cols, int64_t r, int64_t c, float *gr, float *gc) {
    const int64_t i = r * cols + c;
    *gr = r == 0 ? im[i + cols] - im[i] : r == rows - 1 ? im[i] - im[i - cols] : (im[i + cols] - im[i - cols]) / 2.0f;
    *gc = c == 0 ? im[i + 1] - im[i] : c == cols - 1 ? im[i] - im[i - 1] : (im[i + 1] - im[i - 1]) / 2.0f;
}

/* The data step at one pixel: the thresholding solution of the pointwise L1 problem.
 * rho = rho0 + grad . u; u - rho grad / |grad|^2 where |rho| <= lambda theta |grad|^2, else
 * u - lambda theta sign(rho) grad. f0 = lambda theta. */
TVL1_FN void tvl1_data_at(float rho0, float gr, float gc, float ni, float f0, float ur, float uc, float *vr, float *vc) {
    const float rho = rho0 + (gr * ur + gc * uc);
    if (fabsf(rho) <= f0 * ni) {
        *vr = ur - rho * gr / ni;
        *vc = uc - rho * gc / ni;
    } else {
        const float srho = rho > 0.0f ? f0 : -f0;
        *vr = ur - srho * gr;
        *vc = uc - srho * gc;
    }
}

/* Dual update at (r, c) of one flow component u (Chambolle's projection, forward differences, 0 past
 * the end): p <- (p - dt grad+ u) / (1 + f1 |grad+ u|), f1 = dt / theta. */
TVL1_FN void tvl1_dual_at(const float *u, int64_t rows, int64_t cols, int64_t r, int64_t c, float f1, float *p_r,
                          float *p_c) {
    const int64_t i = r * cols + c;
    const float gr = r + 1 < rows ? u[i + cols] - u[i] : 0.0f, gc = c + 1 < cols ? u[i + 1] - u[i] : 0.0f;
    float norm = sqrtf(gr * gr + gc * gc);
    norm *= f1;
    norm += 1.0f;
    p_r[i] = (p_r[i] - TVL1_TIME_STEP * gr) / norm;
    p_c[i] = (p_c[i] - TVL1_TIME_STEP * gc) / norm;
}

/* u = v + div p at (r, c), with skimage's order: -(p_r + p_c), then + p_r above, then + p_c left. */
TVL1_FN float tvl1_divergence_at(const float *v, const float *p_r, const float *p_c, int64_t cols, int64_t r,
                                 int64_t c) {
    const int64_t i = r * cols + c;
    float div = -(p_r[i] + p_c[i]);
    if (r > 0) div += p_r[i - cols];
    if (c > 0) div += p_c[i - 1];
    return v[i] + div;
}

/* ndi.zoom(order 0) with corners aligned: the source index of output k for a zoom (from - 1) / (to - 1). */
TVL1_FN int64_t tvl1_nearest_index(int64_t k, double zoom, int64_t from) {
    const int64_t s = (int64_t)floor((double)k * zoom + 0.5);
    return s < from ? s : from - 1;
}

#endif /* I3RT_TVL1_PIXEL_H */
