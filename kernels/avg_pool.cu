/* Average pooling with kernel == stride and no padding (ResidualEncoderUNet's strided skip path,
 * torch AvgPool3d(k, k)), NCDHW f32: output size per axis in / k (floor), y = sum / count as torch.
 * Reference: i3_cpu_avg_pool_ref (runtime/ops/avg_pool.c).
 *
 * Kernel versions:
 *   v1: one output element per thread (grid-stride). */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

struct PoolGeometry {
    int64_t planes, d, h, w, od, oh, ow;
    int k[3];
};

__global__ void avg_pool_v1(const float *__restrict__ x, PoolGeometry g, float *__restrict__ y) {
    int64_t total = g.planes * g.od * g.oh * g.ow;
    float count = (float)(g.k[0] * g.k[1] * g.k[2]);
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t ox = i % g.ow, oy = i / g.ow % g.oh, oz = i / (g.ow * g.oh) % g.od, plane = i / (g.ow * g.oh * g.od);
        const float *xp = x + plane * g.d * g.h * g.w;
        float sum = 0.0f;
        for (int a = 0; a < g.k[0]; a++)
            for (int b = 0; b < g.k[1]; b++)
                for (int e = 0; e < g.k[2]; e++)
                    sum += xp[((oz * g.k[0] + a) * g.h + oy * g.k[1] + b) * g.w + ox * g.k[2] + e];
        y[i] = sum / count;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(avg_pool)(const float *x, i3_shape5 xs, const i3_avg_pool_params *p, float *y, void *stream) {
    PoolGeometry g = {xs.n * xs.c, xs.d, xs.h, xs.w, xs.d / p->k[0], xs.h / p->k[1], xs.w / p->k[2],
                      {p->k[0], p->k[1], p->k[2]}};
    int64_t total = g.planes * g.od * g.oh * g.ow;
    if (total == 0) return 0;
    return (int)I3_LAUNCH(avg_pool_v1, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, x, g, y);
}
