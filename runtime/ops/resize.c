/* Linear resize of the spatial axes (trilinear; bilinear when d stays 1), on the CPU, with PyTorch's
 * F.interpolate(mode="trilinear"/"bilinear", size=out, align_corners=...) semantics
 * (aten/src/ATen/native/UpSample.h):
 *   align_corners:  scale = (in - 1) / (out - 1) (0 if out == 1),  src = scale * dst
 *   otherwise:      scale = in / out,  src = max(scale * (dst + 0.5) - 0.5, 0)
 *   i0 = min(floor(src), in - 1),  i1 = i0 + (i0 < in - 1),  l1 = clamp(src - i0, 0, 1),  l0 = 1 - l1;
 *   same size on an axis: plain copy. Index arithmetic in float, as PyTorch does for float tensors.
 * One implementation (memory bound): per-axis index/weight tables, then the 8-tap sum per voxel,
 * threaded over output rows. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    int64_t i0, i1;
    float l0, l1;
} lerp_tap;

static void axis_taps(int64_t in, int64_t out, int align_corners, lerp_tap *taps) {
    const float scale = align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f) : (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        if (in == out) {
            taps[o] = (lerp_tap){o, o, 1.0f, 0.0f};
            continue;
        }
        float src = align_corners ? scale * (float)o : scale * ((float)o + 0.5f) - 0.5f;
        if (src < 0.0f) src = 0.0f;
        int64_t i0 = (int64_t)floorf(src);
        if (i0 > in - 1) i0 = in - 1;
        float l1 = src - (float)i0;
        l1 = l1 < 0.0f ? 0.0f : l1 > 1.0f ? 1.0f : l1;
        taps[o] = (lerp_tap){i0, i0 + (i0 < in - 1 ? 1 : 0), 1.0f - l1, l1};
    }
}

void i3_cpu_resize(const float *x, i3_shape5 xs, const i3_resize_params *p, float *y, int n_threads) {
    const int64_t od = p->out[0], oh = p->out[1], ow = p->out[2];
    if (od <= 0 || oh <= 0 || ow <= 0 || i3_shape5_numel(xs) == 0) return;
    lerp_tap *tz = malloc((size_t)(od + oh + ow) * sizeof *tz);
    if (!tz) return; /* tables are a few KB; nothing sensible to compute without them */
    lerp_tap *ty = tz + od, *tx = ty + oh;
    axis_taps(xs.d, od, p->align_corners, tz);
    axis_taps(xs.h, oh, p->align_corners, ty);
    axis_taps(xs.w, ow, p->align_corners, tx);
    const int64_t rows = xs.n * xs.c * od * oh;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t plane = r / (od * oh), z = (r / oh) % od, yy = r % oh;
        const float *xp = x + plane * i3_shape5_spatial(xs);
        const float *r00 = xp + (tz[z].i0 * xs.h + ty[yy].i0) * xs.w, *r01 = xp + (tz[z].i0 * xs.h + ty[yy].i1) * xs.w;
        const float *r10 = xp + (tz[z].i1 * xs.h + ty[yy].i0) * xs.w, *r11 = xp + (tz[z].i1 * xs.h + ty[yy].i1) * xs.w;
        const float wz0 = tz[z].l0, wz1 = tz[z].l1, wy0 = ty[yy].l0, wy1 = ty[yy].l1;
        float *out = y + r * ow;
        for (int64_t i = 0; i < ow; i++) {
            const lerp_tap t = tx[i];
            out[i] = wz0 * (wy0 * (t.l0 * r00[t.i0] + t.l1 * r00[t.i1]) + wy1 * (t.l0 * r01[t.i0] + t.l1 * r01[t.i1])) +
                     wz1 * (wy0 * (t.l0 * r10[t.i0] + t.l1 * r10[t.i1]) + wy1 * (t.l0 * r11[t.i0] + t.l1 * r11[t.i1]));
        }
    }
    free(tz);
}
