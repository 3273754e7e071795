/* Instance norm over each (n, c) plane, with optional affine and a fused activation, on the CPU.
 *   y = act((x - mean) / sqrt(var + eps) * gamma[c] + beta[c]),  var biased (divided by the count).
 *
 *   i3_cpu_instance_norm_ref  two passes per plane, every sum in double, one value at a time.
 *   i3_cpu_instance_norm      two passes per plane: sums of x - x[0], then of (x - mean)^2, over blocks
 *                             of I3_NORM_BLOCK values in float (vectorised, `omp simd`), blocks merged
 *                             in double, so the rounding error stays that of a block; then one fused
 *                             centre/scale/shift/act pass. Threads over planes.
 * In place allowed (y == x) for both. */
#include "ops.h"

#include <math.h>

#define I3_NORM_BLOCK 1024

void i3_cpu_instance_norm_ref(const float *x, i3_shape5 xs, const float *gamma, const float *beta,
                              const i3_norm_params *p, float *y) {
    const int64_t s = i3_shape5_spatial(xs);
    for (int64_t plane = 0; plane < xs.n * xs.c; plane++) {
        const float *xp = x + plane * s;
        float *yp = y + plane * s;
        const int64_t c = plane % xs.c;
        double sum = 0.0, sq = 0.0;
        for (int64_t i = 0; i < s; i++) sum += xp[i];
        const double mean = s ? sum / (double)s : 0.0;
        for (int64_t i = 0; i < s; i++) sq += ((double)xp[i] - mean) * ((double)xp[i] - mean);
        const double inv_std = 1.0 / sqrt((s ? sq / (double)s : 0.0) + p->eps);
        const double g = gamma ? gamma[c] : 1.0, bt = beta ? beta[c] : 0.0;
        for (int64_t i = 0; i < s; i++) yp[i] = i3_act_apply(p->act, (float)(((double)xp[i] - mean) * inv_std * g + bt));
    }
}

/* sum of (v[i] - shift)^power, power 1 or 2, in float blocks merged in double. */
static double blocked_sum(const float *v, int64_t n, float shift, int power) {
    double total = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += I3_NORM_BLOCK) {
        const int64_t len = n - i0 < I3_NORM_BLOCK ? n - i0 : I3_NORM_BLOCK;
        float acc = 0.0f;
        if (power == 1) {
#pragma omp simd reduction(+ : acc)
            for (int64_t i = 0; i < len; i++) acc += v[i0 + i] - shift;
        } else {
#pragma omp simd reduction(+ : acc)
            for (int64_t i = 0; i < len; i++) acc += (v[i0 + i] - shift) * (v[i0 + i] - shift);
        }
        total += acc;
    }
    return total;
}

void i3_cpu_instance_norm(const float *x, i3_shape5 xs, const float *gamma, const float *beta,
                          const i3_norm_params *p, float *y, int n_threads) {
    const int64_t s = i3_shape5_spatial(xs);
    if (s == 0) return;
#pragma omp parallel for schedule(dynamic) num_threads(n_threads)
    for (int64_t plane = 0; plane < xs.n * xs.c; plane++) {
        const float *xp = x + plane * s;
        float *yp = y + plane * s;
        const int64_t c = plane % xs.c;
        /* shifted by the first value, so that float block sums stay small whatever the offset */
        const double mean = xp[0] + blocked_sum(xp, s, xp[0], 1) / (double)s;
        const float mean_f = (float)mean;
        /* spread around the float mean, minus the (tiny) square of its rounding error */
        const double var = blocked_sum(xp, s, mean_f, 2) / (double)s - (mean - mean_f) * (mean - mean_f);
        const double inv_std = 1.0 / sqrt((var > 0.0 ? var : 0.0) + p->eps);
        const float scale = (float)(inv_std * (gamma ? gamma[c] : 1.0));
        const float shift = (float)((beta ? beta[c] : 0.0) - (mean - mean_f) * inv_std * (gamma ? gamma[c] : 1.0));
        const i3_act act = p->act;
        /* centre first: x * scale + shift would lose digits when |mean| >> std */
#pragma omp simd
        for (int64_t i = 0; i < s; i++) yp[i] = i3_act_apply(act, (xp[i] - mean_f) * scale + shift);
    }
}
