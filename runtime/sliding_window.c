/* Sliding-window inference with the Gaussian importance map and mirroring (see sliding_window.h). */
#include "sliding_window.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int i3_sliding_window_steps(int64_t image, int64_t tile, double step_size, int64_t *steps) {
    if (image < tile || tile < 1 || !(step_size > 0.0 && step_size <= 1.0)) return 0;
    const double target = (double)tile * step_size;
    const double n_real = ceil((double)(image - tile) / target) + 1.0;
    if (n_real > I3_MAX_SW_STEPS) return 0;
    const int n = (int)n_real;
    const double actual = n > 1 ? (double)(image - tile) / (double)(n - 1) : 99999999999.0;
    for (int i = 0; i < n; i++) steps[i] = (int64_t)nearbyint(actual * (double)i); /* np.round: half to even */
    return n;
}

/* scipy.ndimage._gaussian_kernel1d(sigma, 0, radius) at offset x (|x| <= radius), normalized. */
static void gaussian_kernel1d(double sigma, int64_t radius, double *phi) {
    const double s2 = sigma * sigma;
    double sum = 0.0;
    for (int64_t x = -radius; x <= radius; x++) sum += phi[x + radius] = exp(-0.5 / s2 * (double)(x * x));
    for (int64_t i = 0; i <= 2 * radius; i++) phi[i] /= sum;
}

void i3_gaussian_importance_map(const int64_t patch[3], int dims, float *out) {
    /* gaussian_filter of a delta at tile // 2 with sigma = tile / 8 (truncate 4, mode constant): the
     * product of the 1D kernels, zero beyond each kernel's radius. */
    double *w[3];
    const int first = 3 - dims;
    for (int a = 0; a < 3; a++) {
        w[a] = calloc((size_t)patch[a], sizeof *w[a]);
        if (a < first) {
            w[a][0] = 1.0;
            continue;
        }
        const double sigma = (double)patch[a] * (1.0 / 8);
        const int64_t radius = (int64_t)(4.0 * sigma + 0.5);
        double *phi = malloc((size_t)(2 * radius + 1) * sizeof *phi);
        gaussian_kernel1d(sigma, radius, phi);
        const int64_t c = patch[a] / 2;
        for (int64_t i = 0; i < patch[a]; i++)
            if (llabs(i - c) <= radius) w[a][i] = phi[i - c + radius];
        free(phi);
    }
    const int64_t n = patch[0] * patch[1] * patch[2];
    const double max = w[0][patch[0] / 2] * w[1][patch[1] / 2] * w[2][patch[2] / 2];
    float min_nonzero = INFINITY;
    for (int64_t z = 0, i = 0; z < patch[0]; z++)
        for (int64_t y = 0; y < patch[1]; y++)
            for (int64_t x = 0; x < patch[2]; x++, i++) {
                const double g = w[0][z] * w[1][y] * w[2][x] / (max / 10.0);
                out[i] = i3_f16_to_f32(i3_f32_to_f16((float)g));
                if (out[i] > 0.0f && out[i] < min_nonzero) min_nonzero = out[i];
            }
    for (int64_t i = 0; i < n; i++)
        if (out[i] == 0.0f) out[i] = min_nonzero;
    for (int a = 0; a < 3; a++) free(w[a]);
}

/* The mirror passes in nnunetv2's order: no flip, then itertools.combinations of the allowed axes of
 * size 1, 2, 3 (for k <= 3 axes, ascending index bit masks of one size are in combinations() order).
 * Each pass is a bit mask over the spatial axes (d = bit 0, h = bit 1, w = bit 2). */
static int mirror_passes(const i3_sliding_window_params *p, int masks[8]) {
    int n = 0;
    masks[n++] = 0;
    const int k = p->n_mirror_axes, shift = 3 - p->dims; /* 2D axes 0, 1 are h, w */
    for (int size = 1; size <= k; size++)
        for (int c = 0; c < (1 << k); c++) {
            if (__builtin_popcount((unsigned)c) != size) continue;
            int m = 0;
            for (int j = 0; j < k; j++)
                if (c & (1 << j)) m |= 1 << (p->mirror_axes[j] + shift);
            masks[n++] = m;
        }
    return n;
}

int64_t i3_sliding_window_forwards(const int64_t shape[3], const i3_sliding_window_params *p) {
    int64_t tiles = p->dims == 2 ? shape[0] : 1, steps[I3_MAX_SW_STEPS];
    for (int a = 3 - p->dims; a < 3; a++) {
        const int64_t padded = shape[a] > p->patch[a] ? shape[a] : p->patch[a];
        tiles *= i3_sliding_window_steps(padded, p->patch[a], p->step_size, steps);
    }
    return tiles * (p->n_mirror_axes > 0 ? (int64_t)1 << p->n_mirror_axes : 1);
}

/* y = x [c, s] flipped along the axes in mask (bit a = axis a of s). In place is not allowed. */
static void flip(const float *x, int64_t c, const int64_t s[3], int mask, float *y) {
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t z = 0; z < s[0]; z++)
            for (int64_t r = 0; r < s[1]; r++) {
                const int64_t zs = mask & 1 ? s[0] - 1 - z : z, rs = mask & 2 ? s[1] - 1 - r : r;
                const float *src = x + ((ch * s[0] + zs) * s[1] + rs) * s[2];
                float *dst = y + ((ch * s[0] + z) * s[1] + r) * s[2];
                if (mask & 4)
                    for (int64_t i = 0; i < s[2]; i++) dst[i] = src[s[2] - 1 - i];
                else
                    memcpy(dst, src, (size_t)s[2] * sizeof *dst);
            }
}

static float round_f16(float v) { return i3_f16_to_f32(i3_f32_to_f16(v)); }

i3rt_status i3_sliding_window_predict(i3_ctx *ctx, i3rt_model *model, const float *data, int64_t channels,
                                      const int64_t shape[3], int64_t num_classes, const i3_sliding_window_params *p,
                                      float *logits) {
    const int64_t *patch = p->patch;
    const int first = 3 - p->dims; /* first axis that is tiled */
    int64_t ps[3], lo[3];          /* padded shape, padding below */
    for (int a = 0; a < 3; a++) {
        ps[a] = a >= first && shape[a] < patch[a] ? patch[a] : shape[a];
        lo[a] = (ps[a] - shape[a]) / 2;
    }
    int64_t steps[3][I3_MAX_SW_STEPS], n_steps[3];
    for (int a = 0; a < 3; a++) {
        if (a < first) { /* 2D: every slice */
            n_steps[a] = ps[a];
            for (int64_t i = 0; i < ps[a] && i < I3_MAX_SW_STEPS; i++) steps[a][i] = i;
            if (ps[a] > I3_MAX_SW_STEPS)
                return i3_fail(ctx, I3RT_ERR_SHAPE, "sliding window: %lld slices (at most %d)", (long long)ps[a],
                               I3_MAX_SW_STEPS);
        } else {
            n_steps[a] = i3_sliding_window_steps(ps[a], patch[a], p->step_size, steps[a]);
            if (n_steps[a] == 0)
                return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                               "sliding window: axis %d of %lld voxels, patch %lld, step size %g gives no valid tiling",
                               a, (long long)ps[a], (long long)patch[a], p->step_size);
        }
    }
    const int64_t *tile = patch; /* (1, h, w) for 2D */
    const int64_t nps = ps[0] * ps[1] * ps[2], nt = tile[0] * tile[1] * tile[2];
    const int fp16 = p->accumulate == I3_ACCUMULATE_FP16;

    float *padded = NULL, *gauss = i3_malloc(ctx, (size_t)nt * sizeof *gauss, "the Gaussian importance map");
    float *in = i3_malloc(ctx, (size_t)(channels * nt) * sizeof *in, "a tile");
    float *in_flip = i3_malloc(ctx, (size_t)(channels * nt) * sizeof *in_flip, "a mirrored tile");
    float *out = i3_malloc(ctx, (size_t)(num_classes * nt) * sizeof *out, "a tile's logits");
    float *out_flip = i3_malloc(ctx, (size_t)(num_classes * nt) * sizeof *out_flip, "a tile's logits");
    float *out_back = i3_malloc(ctx, (size_t)(num_classes * nt) * sizeof *out_back, "a tile's logits");
    float *acc = i3_calloc(ctx, (size_t)(num_classes * nps), sizeof *acc, "the logit sums");
    float *wsum = i3_calloc(ctx, (size_t)nps, sizeof *wsum, "the weight sums");
    i3rt_status st = gauss && in && in_flip && out && out_flip && out_back && acc && wsum ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    const float *src = data;
    if (st == I3RT_OK && (ps[0] != shape[0] || ps[1] != shape[1] || ps[2] != shape[2])) {
        padded = i3_calloc(ctx, (size_t)(channels * nps), sizeof *padded, "the padded image");
        if (!padded) st = I3RT_ERR_OUT_OF_MEMORY;
        else
            for (int64_t c = 0; c < channels; c++)
                for (int64_t z = 0; z < shape[0]; z++)
                    for (int64_t y = 0; y < shape[1]; y++)
                        memcpy(padded + ((c * ps[0] + z + lo[0]) * ps[1] + y + lo[1]) * ps[2] + lo[2],
                               data + ((c * shape[0] + z) * shape[1] + y) * shape[2], (size_t)shape[2] * sizeof *padded);
        src = padded;
    }
    if (st == I3RT_OK) i3_gaussian_importance_map(patch, p->dims, gauss);

    int masks[8];
    const int n_pass = p->n_mirror_axes > 0 ? mirror_passes(p, masks) : (masks[0] = 0, 1);
    int64_t done = 0;
    for (int64_t i0 = 0; i0 < n_steps[0] && st == I3RT_OK; i0++)
        for (int64_t i1 = 0; i1 < n_steps[1] && st == I3RT_OK; i1++)
            for (int64_t i2 = 0; i2 < n_steps[2] && st == I3RT_OK; i2++) {
                const int64_t o[3] = {steps[0][i0], steps[1][i1], steps[2][i2]};
                for (int64_t c = 0; c < channels; c++) /* the tile */
                    for (int64_t z = 0; z < tile[0]; z++)
                        for (int64_t y = 0; y < tile[1]; y++)
                            memcpy(in + ((c * tile[0] + z) * tile[1] + y) * tile[2],
                                   src + ((c * ps[0] + o[0] + z) * ps[1] + o[1] + y) * ps[2] + o[2],
                                   (size_t)tile[2] * sizeof *in);
                for (int m = 0; m < n_pass && st == I3RT_OK; m++) {
                    if (masks[m] == 0) {
                        st = i3rt_model_forward(model, in, tile, out);
                    } else { /* prediction += flip(net(flip(x))) */
                        flip(in, channels, tile, masks[m], in_flip);
                        st = i3rt_model_forward(model, in_flip, tile, out_flip);
                        if (st == I3RT_OK) {
                            flip(out_flip, num_classes, tile, masks[m], out_back);
                            for (int64_t i = 0; i < num_classes * nt; i++) out[i] += out_back[i];
                        }
                    }
                    if (p->progress) p->progress(p->progress_user, p->progress_offset + ++done, p->progress_total);
                }
                if (st != I3RT_OK) break;
                if (n_pass > 1)
                    for (int64_t i = 0; i < num_classes * nt; i++) out[i] /= (float)n_pass;
                for (int64_t k = 0; k < num_classes; k++)
                    for (int64_t z = 0; z < tile[0]; z++)
                        for (int64_t y = 0; y < tile[1]; y++) {
                            const int64_t t0 = (z * tile[1] + y) * tile[2];
                            float *dst = acc + ((k * ps[0] + o[0] + z) * ps[1] + o[1] + y) * ps[2] + o[2];
                            const float *g = gauss + t0, *pred = out + k * nt + t0;
                            for (int64_t x = 0; x < tile[2]; x++) {
                                const float v = pred[x] * g[x];
                                dst[x] = fp16 ? round_f16(dst[x] + v) : dst[x] + v;
                            }
                        }
                for (int64_t z = 0; z < tile[0]; z++)
                    for (int64_t y = 0; y < tile[1]; y++) {
                        float *dst = wsum + ((o[0] + z) * ps[1] + o[1] + y) * ps[2] + o[2];
                        const float *g = gauss + (z * tile[1] + y) * tile[2];
                        for (int64_t x = 0; x < tile[2]; x++) dst[x] = fp16 ? round_f16(dst[x] + g[x]) : dst[x] + g[x];
                    }
            }
    if (st == I3RT_OK) /* divide, remove the padding */
        for (int64_t k = 0; k < num_classes; k++)
            for (int64_t z = 0; z < shape[0]; z++)
                for (int64_t y = 0; y < shape[1]; y++) {
                    const int64_t row = ((z + lo[0]) * ps[1] + y + lo[1]) * ps[2] + lo[2];
                    const float *a = acc + k * nps + row, *w = wsum + row;
                    float *dst = logits + ((k * shape[0] + z) * shape[1] + y) * shape[2];
                    for (int64_t x = 0; x < shape[2]; x++) dst[x] = fp16 ? round_f16(a[x] / w[x]) : a[x] / w[x];
                }
    free(padded);
    free(gauss);
    free(in);
    free(in_flip);
    free(out);
    free(out_flip);
    free(out_back);
    free(acc);
    free(wsum);
    return st;
}
