/* 3D convolution (2D as depth 1), NCDHW float32, with fused bias and activation:
 *   y[n, o, z, y, x] = act(b[o] + sum_{c, a, b, e} w[o, c, a, b, e] * x[n, c, z*s0-p0+a, y*s1-p1+b, x*s2-p2+e])
 * (zero padding). Reference: i3_cpu_conv_ref in runtime/ops/conv.c.
 *
 * Kernel versions:
 *   v1: direct convolution, one output element per thread (grid-stride), taps outside the input
 *       skipped; w is read through the read-only cache. The correctness baseline every later
 *       version is tested against on the emulator.
 * Planned (issue 5): channels-last implicit GEMM on tensor cores (mma m16n8k16 f16/bf16 -> f32, see
 * device.h), with instance-norm statistics in the epilogue. */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

struct ConvGeometry {
    int64_t n, cin, d, h, w;      /* input */
    int64_t cout, od, oh, ow;     /* output */
    int k[3], stride[3], pad[3];
};

__global__ void conv_v1(const float *__restrict__ x, const float *__restrict__ w, const float *__restrict__ b,
                        ConvGeometry g, i3_act act, float *__restrict__ y) {
    int64_t total = g.n * g.cout * g.od * g.oh * g.ow;
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t ox = i % g.ow, oy = i / g.ow % g.oh, oz = i / (g.ow * g.oh) % g.od;
        int64_t o = i / (g.ow * g.oh * g.od) % g.cout, sample = i / (g.ow * g.oh * g.od * g.cout);
        int64_t z0 = oz * g.stride[0] - g.pad[0], y0 = oy * g.stride[1] - g.pad[1], x0 = ox * g.stride[2] - g.pad[2];
        float acc = b ? b[o] : 0.0f;
        for (int64_t c = 0; c < g.cin; c++) {
            const float *xc = x + (sample * g.cin + c) * g.d * g.h * g.w;
            const float *wc = w + (o * g.cin + c) * g.k[0] * g.k[1] * g.k[2];
            for (int a = 0; a < g.k[0]; a++) {
                int64_t zz = z0 + a;
                if (zz < 0 || zz >= g.d) continue;
                for (int bb = 0; bb < g.k[1]; bb++) {
                    int64_t yy = y0 + bb;
                    if (yy < 0 || yy >= g.h) continue;
                    for (int e = 0; e < g.k[2]; e++) {
                        int64_t xx = x0 + e;
                        if (xx < 0 || xx >= g.w) continue;
                        acc += __ldg(&wc[(a * g.k[1] + bb) * g.k[2] + e]) * xc[(zz * g.h + yy) * g.w + xx];
                    }
                }
            }
        }
        y[i] = act_apply(act, acc);
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(conv)(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                            float *y, i3_shape5 ys, void *stream) {
    ConvGeometry g = {xs.n, xs.c, xs.d, xs.h, xs.w, ys.c, ys.d, ys.h, ys.w, {0}, {0}, {0}};
    for (int i = 0; i < 3; i++) {
        g.k[i] = p->k[i];
        g.stride[i] = p->stride[i];
        g.pad[i] = p->pad[i];
    }
    int64_t total = i3_shape5_numel(ys);
    if (total == 0) return 0;
    return (int)I3_LAUNCH(conv_v1, grid_stride_blocks(total, 128), 128, 0, (cudaStream_t)stream, x, w, b, g, p->act, y);
}
