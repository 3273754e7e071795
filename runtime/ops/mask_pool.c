/* Mask pooling of Slice-and-Conquer's mask-attention module (docs/snc.md, "Mask attention"): the
 * features' averages over the annotated foreground and the annotated background.
 *
 * guide [n, 2, d, h, w] holds at the input resolution the accurate 2D masks placed in 3D (channel 0)
 * and the annotated-slice indicator (channel 1); feats [n, c, d', h', w'] are at a stride s of it,
 * d' = ceil(d / s) (two stride-2 convolutions: s = 4). Each feature voxel j gets the guide's means over
 * the window [s j - s/2, s j + s/2] per axis clipped to the volume (torch
 * avg_pool3d(kernel 2 (s/2) + 1, stride s, padding s/2, count_include_pad=False): centred on the voxel
 * the strided convolutions centre on):
 *   fg(j) = mean(mask),  bg(j) = mean(annotated) - mean(mask)  (annotated voxels outside the masks);
 * then y[n, k] = sum_j fg(j) feats[n, k, j] / (sum_j fg(j) + eps) and y[n, c + k] the same with bg:
 * y is [n, 2c, 1, 1, 1]. Window means and sums in double. Cheap (one pass over the features), so the
 * reference is the only version. */
#include "ops.h"

#include <stdlib.h>

i3_shape5 i3_mask_pool_out_shape(i3_shape5 feats) {
    const i3_shape5 y = {feats.n, 2 * feats.c, 1, 1, 1};
    return y;
}

int64_t i3_mask_pool_feature_len(int64_t in, int stride) { return (in + stride - 1) / stride; }

/* Per axis the clipped window [lo, hi) of every output position. */
static void windows(int64_t in, int64_t out, int stride, int64_t *lo, int64_t *hi) {
    for (int64_t j = 0; j < out; j++) {
        const int64_t a = stride * j - stride / 2, b = stride * j + stride / 2 + 1;
        lo[j] = a < 0 ? 0 : a;
        hi[j] = b > in ? in : b;
    }
}

void i3_cpu_mask_pool_ref(const float *feats, i3_shape5 fs, const float *guide, i3_shape5 gs,
                          const i3_mask_pool_params *p, float *y) {
    const int64_t sf = i3_shape5_spatial(fs), sg = i3_shape5_spatial(gs);
    int64_t *win = malloc((size_t)(2 * (fs.d + fs.h + fs.w)) * sizeof *win);
    double *weight = malloc((size_t)(2 * sf) * sizeof *weight);
    if (!win || !weight) { /* a few KB; nothing sensible to compute without them */
        free(win), free(weight);
        return;
    }
    int64_t *dlo = win, *dhi = dlo + fs.d, *hlo = dhi + fs.d, *hhi = hlo + fs.h, *wlo = hhi + fs.h, *whi = wlo + fs.w;
    windows(gs.d, fs.d, p->stride, dlo, dhi);
    windows(gs.h, fs.h, p->stride, hlo, hhi);
    windows(gs.w, fs.w, p->stride, wlo, whi);
    for (int64_t n = 0; n < fs.n; n++) {
        const float *mask = guide + n * 2 * sg, *annotated = mask + sg;
        double total[2] = {0.0, 0.0};
        for (int64_t z = 0; z < fs.d; z++)
            for (int64_t r = 0; r < fs.h; r++)
                for (int64_t c = 0; c < fs.w; c++) {
                    double m = 0.0, a = 0.0;
                    for (int64_t iz = dlo[z]; iz < dhi[z]; iz++)
                        for (int64_t ir = hlo[r]; ir < hhi[r]; ir++)
                            for (int64_t ic = wlo[c]; ic < whi[c]; ic++) {
                                const int64_t i = (iz * gs.h + ir) * gs.w + ic;
                                m += mask[i], a += annotated[i];
                            }
                    const double count = (double)((dhi[z] - dlo[z]) * (hhi[r] - hlo[r]) * (whi[c] - wlo[c]));
                    const int64_t j = (z * fs.h + r) * fs.w + c;
                    weight[j] = m / count, weight[sf + j] = a / count - m / count;
                    total[0] += weight[j], total[1] += weight[sf + j];
                }
        for (int region = 0; region < 2; region++)
            for (int64_t k = 0; k < fs.c; k++) {
                const float *f = feats + (n * fs.c + k) * sf;
                double acc = 0.0;
                for (int64_t j = 0; j < sf; j++) acc += weight[region * sf + j] * f[j];
                y[(n * 2 + region) * fs.c + k] = (float)(acc / (total[region] + p->eps));
            }
    }
    free(win), free(weight);
}
