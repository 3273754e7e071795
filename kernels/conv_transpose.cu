/* Transposed 3D convolution with stride == kernel and no padding (nnU-Net's upsampling), NCDHW f32:
 *   y[n, o, z, y, x] = b[o] + sum_c x[n, c, z/k0, y/k1, x/k2] * w[c, o, z%k0, y%k1, x%k2]
 * (weight in PyTorch's ConvTranspose layout [cin, cout, k0, k1, k2]). Every output element has
 * exactly one input position, so there is no overlap and no atomics.
 * Reference: i3_cpu_conv_transpose_ref in runtime/ops/conv_transpose.c.
 *
 * The input may also be channels-last f16/bf16 [n, d, h, w, cin] (a tensor-core convolution's output,
 * runtime/backend_cuda.cu: conv_transpose_channels_last). A channels-last output (for a channels-last concat)
 * comes from conv_transpose_tensor_core (kernels/conv_tensor_core.cu) instead.
 *
 * Kernel versions:
 *   v1: one output element per thread (grid-stride), a dot product over input channels (channels-last:
 *       the thread's input channels are contiguous). */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

struct ConvTransposeGeometry {
    int64_t n, cin, d, h, w, cout;
    int k[3];
};

template <int INPUT>
__global__ void conv_transpose_v1(const void *__restrict__ x, const float *__restrict__ w,
                                  const float *__restrict__ b, ConvTransposeGeometry g, float *__restrict__ y) {
    int64_t od = g.d * g.k[0], oh = g.h * g.k[1], ow = g.w * g.k[2], in_spatial = g.d * g.h * g.w;
    int64_t total = g.n * g.cout * od * oh * ow, taps = (int64_t)g.k[0] * g.k[1] * g.k[2];
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t ox = i % ow, oy = i / ow % oh, oz = i / (ow * oh) % od;
        int64_t o = i / (ow * oh * od) % g.cout, sample = i / (ow * oh * od * g.cout);
        int64_t in_pos = (oz / g.k[0] * g.h + oy / g.k[1]) * g.w + ox / g.k[2];
        int64_t tap = (oz % g.k[0] * g.k[1] + oy % g.k[1]) * g.k[2] + ox % g.k[2];
        float acc = b ? b[o] : 0.0f;
        for (int64_t c = 0; c < g.cin; c++)
            acc += input_at<INPUT>(x, sample, c, g.cin, in_pos, in_spatial) * __ldg(&w[(c * g.cout + o) * taps + tap]);
        y[i] = acc;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

static int launch(int input, const void *x, i3_shape5 xs, const float *w, const float *b,
                  const i3_conv_transpose_params *p, float *y, i3_shape5 ys, void *stream) {
    ConvTransposeGeometry g = {xs.n, xs.c, xs.d, xs.h, xs.w, ys.c, {p->k[0], p->k[1], p->k[2]}};
    int64_t total = i3_shape5_numel(ys);
    if (total == 0) return 0;
    decltype(&conv_transpose_v1<INPUT_F32>) kernel = input == INPUT_F32      ? conv_transpose_v1<INPUT_F32>
                                                     : input == INPUT_F16_CL ? conv_transpose_v1<INPUT_F16_CL>
                                                                             : conv_transpose_v1<INPUT_BF16_CL>;
    return (int)I3_LAUNCH(kernel, grid_stride_blocks(total, 128), 128, 0, (cudaStream_t)stream, x, w, b, g, y);
}

extern "C" int I3_DEV(conv_transpose)(const float *x, i3_shape5 xs, const float *w, const float *b,
                                      const i3_conv_transpose_params *p, float *y, i3_shape5 ys, void *stream) {
    return launch(INPUT_F32, x, xs, w, b, p, y, ys, stream);
}

extern "C" int I3_DEV(conv_transpose_channels_last)(const void *x, i3_shape5 xs, int precision, const float *w,
                                                    const float *b, const i3_conv_transpose_params *p, float *y,
                                                    i3_shape5 ys, void *stream) {
    if (precision != I3_TC_F16 && precision != I3_TC_BF16) return (int)cudaErrorInvalidValue;
    return launch(precision == I3_TC_BF16 ? INPUT_BF16_CL : INPUT_F16_CL, x, xs, w, b, p, y, ys, stream);
}
