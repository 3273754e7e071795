/* Average pooling with kernel == stride and no padding (ResidualEncoderUNet's strided skip path,
 * torch AvgPool3d(k, k)), NCDHW f32: output size per axis in / k (floor), y = sum / count as torch.
 * Reference: i3_cpu_avg_pool_ref (runtime/ops/avg_pool.c).
 *
 * The input may also be channels-last f16/bf16 (avg_pool_channels_last), the output is NCDHW f32.
 *
 * Kernel versions:
 *   v1: one output element per thread (grid-stride). */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

struct PoolGeometry {
    int64_t n, c, d, h, w, od, oh, ow;
    int k[3];
};

template <int INPUT>
__global__ void avg_pool_v1(const void *__restrict__ x, PoolGeometry g, float *__restrict__ y) {
    const int64_t total = g.n * g.c * g.od * g.oh * g.ow, spatial = g.d * g.h * g.w;
    float count = (float)(g.k[0] * g.k[1] * g.k[2]);
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t ox = i % g.ow, oy = i / g.ow % g.oh, oz = i / (g.ow * g.oh) % g.od, plane = i / (g.ow * g.oh * g.od);
        float sum = 0.0f;
        for (int a = 0; a < g.k[0]; a++)
            for (int b = 0; b < g.k[1]; b++)
                for (int e = 0; e < g.k[2]; e++)
                    sum += input_at<INPUT>(x, plane / g.c, plane % g.c, g.c,
                                           ((oz * g.k[0] + a) * g.h + oy * g.k[1] + b) * g.w + ox * g.k[2] + e, spatial);
        y[i] = sum / count;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

static int launch(int input, const void *x, i3_shape5 xs, const i3_avg_pool_params *p, float *y, void *stream) {
    PoolGeometry g = {xs.n, xs.c, xs.d, xs.h, xs.w, xs.d / p->k[0], xs.h / p->k[1], xs.w / p->k[2],
                      {p->k[0], p->k[1], p->k[2]}};
    int64_t total = g.n * g.c * g.od * g.oh * g.ow;
    if (total == 0) return 0;
    decltype(&avg_pool_v1<INPUT_F32>) kernel = input == INPUT_F32      ? avg_pool_v1<INPUT_F32>
                                               : input == INPUT_F16_CL ? avg_pool_v1<INPUT_F16_CL>
                                                                       : avg_pool_v1<INPUT_BF16_CL>;
    return (int)I3_LAUNCH(kernel, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, x, g, y);
}

extern "C" int I3_DEV(avg_pool)(const float *x, i3_shape5 xs, const i3_avg_pool_params *p, float *y, void *stream) {
    return launch(INPUT_F32, x, xs, p, y, stream);
}

extern "C" int I3_DEV(avg_pool_channels_last)(const void *x, i3_shape5 xs, int precision, const i3_avg_pool_params *p,
                                              float *y, void *stream) {
    if (precision != I3_TC_F16 && precision != I3_TC_BF16) return (int)cudaErrorInvalidValue;
    return launch(precision == I3_TC_BF16 ? INPUT_BF16_CL : INPUT_F16_CL, x, xs, p, y, stream);
}
