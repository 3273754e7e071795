/* Linear resize of the spatial axes (trilinear; bilinear when d stays 1), on the CPU, with PyTorch's
 * F.interpolate(mode="trilinear"/"bilinear", size=out, align_corners=...) semantics
 * (aten/src/ATen/native/UpSample.h):
 *   align_corners:  scale = (in - 1) / (out - 1) (0 if out == 1),  src = scale * dst
 *   otherwise:      scale = in / out,  src = max(scale * (dst + 0.5) - 0.5, 0)
 *   i0 = min(floor(src), in - 1),  i1 = i0 + (i0 < in - 1),  l1 = clamp(src - i0, 0, 1),  l0 = 1 - l1;
 *   same size on an axis: plain copy. Index arithmetic in float, as PyTorch does for float tensors.
 * One implementation (memory bound): per-axis index/weight tables, source rows interpolated along x
 * once while neighbouring output rows share them (i3_lerp_rows), then the 4-row sum per output row,
 * threaded over output rows from I3_PARALLEL_MIN_VALUES output values on. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>

/* PyTorch's arithmetic exactly (its CPU kernel, as built in the wheels): source indices and weights without
 * fused multiply-adds, each linear step t0 * w0 + t1 * w1 as fma(t0, w0, t1 * w1) (checked bit for bit in
 * tests/test_ni_zoom.c). */
#pragma GCC optimize("fp-contract=off")

void i3_resize_axis_taps(int64_t in, int64_t out, int align_corners, i3_lerp_tap *taps) {
    const float scale = align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f) : (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        if (in == out) {
            taps[o] = (i3_lerp_tap){o, o, 1.0f, 0.0f};
            continue;
        }
        float src = align_corners ? scale * (float)o : scale * ((float)o + 0.5f) - 0.5f;
        if (src < 0.0f) src = 0.0f;
        int64_t i0 = (int64_t)floorf(src);
        if (i0 > in - 1) i0 = in - 1;
        float l1 = src - (float)i0;
        l1 = l1 < 0.0f ? 0.0f : l1 > 1.0f ? 1.0f : l1;
        taps[o] = (i3_lerp_tap){i0, i0 + (i0 < in - 1 ? 1 : 0), 1.0f - l1, l1};
    }
}

void i3_resize_row_x(const float *src, const i3_lerp_tap *tx, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = fmaf(src[tx[i].i0], tx[i].l0, src[tx[i].i1] * tx[i].l1);
}

void i3_resize_rows_yz(const float *x00, const float *x01, const float *x10, const float *x11, const float wzy[4],
                       int64_t n, float *out) {
    const float wz0 = wzy[0], wz1 = wzy[1], wy0 = wzy[2], wy1 = wzy[3];
    for (int64_t i = 0; i < n; i++) out[i] = fmaf(fmaf(x00[i], wy0, x01[i] * wy1), wz0, fmaf(x10[i], wy0, x11[i] * wy1) * wz1);
}

void i3_lerp_rows_get(i3_lerp_rows *c, const int64_t need[4], i3_row_fetch fetch, void *ctx, const i3_lerp_tap *tx,
                      int64_t n, const float *x[4]) {
    int used[4] = {0};
    for (int k = 0; k < 4; k++) {
        x[k] = NULL;
        for (int j = 0; j < 4; j++)
            if (c->key[j] == need[k]) x[k] = c->row[j], used[j] = 1;
    }
    for (int k = 0; k < 4; k++) {
        for (int j = 0; j < 4 && !x[k]; j++)
            if (c->key[j] == need[k]) x[k] = c->row[j]; /* computed for an equal key just before */
        for (int j = 0; j < 4 && !x[k]; j++) {
            if (used[j]) continue;
            i3_resize_row_x(fetch(ctx, need[k]), tx, n, c->row[j]);
            c->key[j] = need[k], used[j] = 1, x[k] = c->row[j];
        }
    }
}

typedef struct {
    const float *x;
    int64_t w;
} plain_rows; /* source rows numbered through planes, slices and rows */

static const float *plain_row(void *ctx, int64_t key) {
    const plain_rows *r = ctx;
    return r->x + key * r->w;
}

void i3_cpu_resize(const float *x, i3_shape5 xs, const i3_resize_params *p, float *y, int n_threads) {
    const int64_t od = p->out[0], oh = p->out[1], ow = p->out[2];
    if (od <= 0 || oh <= 0 || ow <= 0 || i3_shape5_numel(xs) == 0) return;
    i3_lerp_tap *tz = malloc((size_t)(od + oh + ow) * sizeof *tz);
    if (!tz) return; /* tables are a few KB; nothing sensible to compute without them */
    i3_lerp_tap *ty = tz + od, *tx = ty + oh;
    i3_resize_axis_taps(xs.d, od, p->align_corners, tz);
    i3_resize_axis_taps(xs.h, oh, p->align_corners, ty);
    i3_resize_axis_taps(xs.w, ow, p->align_corners, tx);
    const int64_t rows = xs.n * xs.c * od * oh;
    plain_rows src = {x, xs.w};
#pragma omp parallel num_threads(n_threads) if (rows * ow >= I3_PARALLEL_MIN_VALUES)
    {
        float xrows[4][ow];
        i3_lerp_rows cache = {{-1, -1, -1, -1}, {xrows[0], xrows[1], xrows[2], xrows[3]}};
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t plane = r / (od * oh), z = (r / oh) % od, yy = r % oh;
            const int64_t z0 = (plane * xs.d + tz[z].i0) * xs.h, z1 = (plane * xs.d + tz[z].i1) * xs.h;
            const int64_t need[4] = {z0 + ty[yy].i0, z0 + ty[yy].i1, z1 + ty[yy].i0, z1 + ty[yy].i1};
            const float *xr[4];
            i3_lerp_rows_get(&cache, need, plain_row, &src, tx, ow, xr);
            const float wzy[4] = {tz[z].l0, tz[z].l1, ty[yy].l0, ty[yy].l1};
            i3_resize_rows_yz(xr[0], xr[1], xr[2], xr[3], wzy, ow, y + r * ow);
        }
    }
    free(tz);
}
