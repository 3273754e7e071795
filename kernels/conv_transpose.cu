/* Transposed 3D convolution with stride == kernel and no padding (nnU-Net's upsampling), NCDHW f32:
 *   y[n, o, z, y, x] = b[o] + sum_c x[n, c, z/k0, y/k1, x/k2] * w[c, o, z%k0, y%k1, x%k2]
 * (weight in PyTorch's ConvTranspose layout [cin, cout, k0, k1, k2]). Every output element has
 * exactly one input position, so there is no overlap and no atomics.
 * Reference: i3_cpu_conv_transpose_ref in runtime/ops/conv_transpose.c.
 *
 * Input and output may also be channels-last f16/bf16 [n, d, h, w, c] (conv_transpose_channels_last: the
 * input a tensor-core convolution's output, the output for a channels-last concat, runtime/backend_cuda.cu;
 * in f16 the U-Net's largest activation is this output at full resolution, so its layout halves it).
 *
 * Kernel versions:
 *   v1: one output element per thread (grid-stride, in the output's order), a dot product over input
 *       channels (channels-last: the thread's input channels are contiguous; channels-last output: a warp's
 *       threads share their input position, so its reads are broadcasts). */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

struct ConvTransposeGeometry {
    int64_t n, cin, d, h, w, cout;
    int k[3];
};

template <int INPUT, int OUTPUT>
__global__ void conv_transpose_v1(const void *__restrict__ x, const float *__restrict__ w,
                                  const float *__restrict__ b, ConvTransposeGeometry g, void *__restrict__ y) {
    int64_t od = g.d * g.k[0], oh = g.h * g.k[1], ow = g.w * g.k[2], in_spatial = g.d * g.h * g.w;
    int64_t total = g.n * g.cout * od * oh * ow, taps = (int64_t)g.k[0] * g.k[1] * g.k[2];
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t ox, oy, oz, o, sample;
        if (OUTPUT == INPUT_F32) { /* i runs over [n, cout, od, oh, ow] */
            ox = i % ow, oy = i / ow % oh, oz = i / (ow * oh) % od;
            o = i / (ow * oh * od) % g.cout, sample = i / (ow * oh * od * g.cout);
        } else { /* over [n, od, oh, ow, cout] */
            o = i % g.cout, ox = i / g.cout % ow, oy = i / (g.cout * ow) % oh, oz = i / (g.cout * ow * oh) % od;
            sample = i / (g.cout * ow * oh * od);
        }
        int64_t in_pos = (oz / g.k[0] * g.h + oy / g.k[1]) * g.w + ox / g.k[2];
        int64_t tap = (oz % g.k[0] * g.k[1] + oy % g.k[1]) * g.k[2] + ox % g.k[2];
        float acc = b ? b[o] : 0.0f;
        for (int64_t c = 0; c < g.cin; c++)
            acc += input_at<INPUT>(x, sample, c, g.cin, in_pos, in_spatial) * __ldg(&w[(c * g.cout + o) * taps + tap]);
        if (OUTPUT == INPUT_F32)
            ((float *)y)[i] = acc;
        else
            ((uint16_t *)y)[i] = to_b16<OUTPUT == INPUT_BF16_CL>(acc);
    }
}

}  // namespace I3_NS

using namespace I3_NS;

static int launch(int input, int output, const void *x, i3_shape5 xs, const float *w, const float *b,
                  const i3_conv_transpose_params *p, void *y, i3_shape5 ys, void *stream) {
    ConvTransposeGeometry g = {xs.n, xs.c, xs.d, xs.h, xs.w, ys.c, {p->k[0], p->k[1], p->k[2]}};
    int64_t total = i3_shape5_numel(ys);
    if (total == 0) return 0;
    using Kernel = decltype(&conv_transpose_v1<INPUT_F32, INPUT_F32>);
    static const Kernel kernels[3][3] = {
        {conv_transpose_v1<INPUT_F32, INPUT_F32>, conv_transpose_v1<INPUT_F32, INPUT_F16_CL>,
         conv_transpose_v1<INPUT_F32, INPUT_BF16_CL>},
        {conv_transpose_v1<INPUT_F16_CL, INPUT_F32>, conv_transpose_v1<INPUT_F16_CL, INPUT_F16_CL>,
         conv_transpose_v1<INPUT_F16_CL, INPUT_BF16_CL>},
        {conv_transpose_v1<INPUT_BF16_CL, INPUT_F32>, conv_transpose_v1<INPUT_BF16_CL, INPUT_F16_CL>,
         conv_transpose_v1<INPUT_BF16_CL, INPUT_BF16_CL>}};
    return (int)I3_LAUNCH(kernels[input][output], grid_stride_blocks(total, 128), 128, 0, (cudaStream_t)stream, x, w,
                          b, g, y);
}

extern "C" int I3_DEV(conv_transpose)(const float *x, i3_shape5 xs, const float *w, const float *b,
                                      const i3_conv_transpose_params *p, float *y, i3_shape5 ys, void *stream) {
    return launch(INPUT_F32, INPUT_F32, x, xs, w, b, p, y, ys, stream);
}

extern "C" int I3_DEV(conv_transpose_channels_last)(const void *x, i3_shape5 xs, int x_layout, const float *w,
                                                    const float *b, const i3_conv_transpose_params *p, void *y,
                                                    i3_shape5 ys, int y_layout, int precision, void *stream) {
    if (precision != I3_TC_F16 && precision != I3_TC_BF16) return (int)cudaErrorInvalidValue;
    const int b16 = precision == I3_TC_BF16 ? INPUT_BF16_CL : INPUT_F16_CL;
    return launch(x_layout == I3_LAYOUT_NDHWC ? b16 : INPUT_F32, y_layout == I3_LAYOUT_NDHWC ? b16 : INPUT_F32, x, xs,
                  w, b, p, y, ys, stream);
}
