/* Linear resize of the spatial axes (trilinear; bilinear when depth stays 1), NCDHW f32, with
 * PyTorch's F.interpolate(mode="trilinear", align_corners=...) source coordinates:
 *   align_corners: src = dst * (in - 1) / (out - 1)   (0 when out == 1)
 *   otherwise:     src = max((dst + 0.5) * in / out - 0.5, 0)
 * then i0 = floor(src), i1 = min(i0 + 1, in - 1), weight src - i0 per axis.
 * Reference: i3_cpu_resize (runtime/ops).
 *
 * Kernel versions:
 *   v1: one output element per thread (grid-stride), eight taps. */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

struct ResizeGeometry {
    int64_t planes, in[3], out[3];
    float scale[3];
    int align_corners;
};

struct LinearTap {
    int64_t i0, i1;
    float w1;
};

__device__ __forceinline__ LinearTap linear_tap(int64_t dst, int64_t in, float scale, int align_corners) {
    float src = align_corners ? dst * scale : (dst + 0.5f) * scale - 0.5f;
    if (src < 0.0f) src = 0.0f;
    LinearTap t;
    t.i0 = (int64_t)src;
    if (t.i0 > in - 1) t.i0 = in - 1;
    t.i1 = t.i0 + 1 < in ? t.i0 + 1 : in - 1;
    t.w1 = src - (float)t.i0;
    return t;
}

__global__ void resize_v1(const float *__restrict__ x, ResizeGeometry g, float *__restrict__ y) {
    int64_t out_plane = g.out[0] * g.out[1] * g.out[2], total = g.planes * out_plane;
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t ox = i % g.out[2], oy = i / g.out[2] % g.out[1], oz = i / (g.out[2] * g.out[1]) % g.out[0];
        const float *xp = x + i / out_plane * g.in[0] * g.in[1] * g.in[2];
        LinearTap tz = linear_tap(oz, g.in[0], g.scale[0], g.align_corners);
        LinearTap ty = linear_tap(oy, g.in[1], g.scale[1], g.align_corners);
        LinearTap tx = linear_tap(ox, g.in[2], g.scale[2], g.align_corners);
        float acc = 0.0f;
        for (int a = 0; a < 2; a++) {
            int64_t zz = a ? tz.i1 : tz.i0;
            float wz = a ? tz.w1 : 1.0f - tz.w1;
            for (int b = 0; b < 2; b++) {
                int64_t yy = b ? ty.i1 : ty.i0;
                float wy = b ? ty.w1 : 1.0f - ty.w1;
                const float *row = xp + (zz * g.in[1] + yy) * g.in[2];
                acc += wz * wy * ((1.0f - tx.w1) * row[tx.i0] + tx.w1 * row[tx.i1]);
            }
        }
        y[i] = acc;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(resize)(const float *x, i3_shape5 xs, const i3_resize_params *p, float *y, void *stream) {
    ResizeGeometry g;
    g.planes = xs.n * xs.c;
    int64_t in[3] = {xs.d, xs.h, xs.w};
    for (int a = 0; a < 3; a++) {
        g.in[a] = in[a];
        g.out[a] = p->out[a];
        if (p->align_corners)
            g.scale[a] = p->out[a] > 1 ? (float)(in[a] - 1) / (float)(p->out[a] - 1) : 0.0f;
        else
            g.scale[a] = (float)in[a] / (float)p->out[a];
    }
    g.align_corners = p->align_corners;
    int64_t total = g.planes * p->out[0] * p->out[1] * p->out[2];
    if (total == 0) return 0;
    return (int)I3_LAUNCH(resize_v1, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, x, g, y);
}
