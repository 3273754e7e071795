/* Elementwise device ops: activation y = act(x), add y = act(a + b) (in place allowed), and channel
 * concat y[n, ca+cb, s] = [a[n, ca, s], b[n, cb, s]], also written channels-last in f16/bf16
 * (y[n, s, ca+cb], for the tensor-core convolution that reads it: kernels/conv_tensor_core.cu). a or b
 * NULL: that input's channels of y are already there (its producer wrote them: i3_graph_plan's views).
 *
 * Kernel versions:
 *   activation v1, add v1: one grid-stride loop, one element per thread per step.
 *   concat v1: one grid-stride loop over the output, each element picks its source.
 *   concat_channels_last v1: a block of 32 x 8 threads per (32 positions, 32 channels, sample) tile,
 *       NCDHW inputs transposed through shared memory: read along positions, written along channels
 *       (both coalesced), rounded to f16/bf16; inputs already channels-last copied along channels.
 * All are memory bound. */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

__global__ void activation_v1(const float *x, int64_t n, i3_act act, float *y) {
    I3_GRID_STRIDE_LOOP(i, n) y[i] = act_apply(act, x[i]);
}

__global__ void add_v1(const float *a, const float *b, int64_t n, i3_act act, float *y) {
    I3_GRID_STRIDE_LOOP(i, n) y[i] = act_apply(act, a[i] + b[i]);
}

__global__ void concat_v1(const float *a, int64_t ca, const float *b, int64_t cb, int64_t n, int64_t s, float *y) {
    int64_t c = ca + cb, total = n * c * s;
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t sample = i / (c * s), ch = i / s % c, pos = i % s;
        if (ch < ca && a)
            y[i] = a[(sample * ca + ch) * s + pos];
        else if (ch >= ca && b)
            y[i] = b[(sample * cb + ch - ca) * s + pos];
    }
}

#define CL_TILE 32

/* grid (position tiles, channel tiles, samples), block (32, 8); a_cl / b_cl: that input is already
 * channels-last b16 (copied along channels in the second phase, not through the tile). */
template <bool BF16>
__global__ void concat_channels_last_v1(const void *__restrict__ a, bool a_cl, int64_t ca, const void *__restrict__ b,
                                        bool b_cl, int64_t cb, int64_t s, uint16_t *__restrict__ y) {
    __shared__ uint16_t tile[CL_TILE][CL_TILE + 1]; /* [channel][position] */
    const int64_t c = ca + cb, sample = blockIdx.z, p0 = (int64_t)blockIdx.x * CL_TILE, c0 = blockIdx.y * CL_TILE;
    for (int i = threadIdx.y; i < CL_TILE; i += blockDim.y) {
        const int64_t ch = c0 + i, pos = p0 + threadIdx.x;
        if (ch >= c || pos >= s || (ch < ca ? a_cl || !a : b_cl || !b)) continue;
        tile[i][threadIdx.x] = to_b16<BF16>(ch < ca ? ((const float *)a)[(sample * ca + ch) * s + pos]
                                                    : ((const float *)b)[(sample * cb + ch - ca) * s + pos]);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < CL_TILE; i += blockDim.y) {
        const int64_t pos = p0 + i, ch = c0 + threadIdx.x;
        if (ch >= c || pos >= s || (ch < ca ? !a : !b)) continue;
        uint16_t v = tile[threadIdx.x][i];
        if (ch < ca && a_cl) v = ((const uint16_t *)a)[(sample * s + pos) * ca + ch];
        if (ch >= ca && b_cl) v = ((const uint16_t *)b)[(sample * s + pos) * cb + ch - ca];
        y[(sample * s + pos) * c + ch] = v;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(activation)(const float *x, int64_t n, i3_act act, float *y, void *stream) {
    if (n == 0) return 0;
    return (int)I3_LAUNCH(activation_v1, grid_stride_blocks(n, 256), 256, 0, (cudaStream_t)stream, x, n, act, y);
}

extern "C" int I3_DEV(add)(const float *a, const float *b, int64_t n, i3_act act, float *y, void *stream) {
    if (n == 0) return 0;
    return (int)I3_LAUNCH(add_v1, grid_stride_blocks(n, 256), 256, 0, (cudaStream_t)stream, a, b, n, act, y);
}

extern "C" int I3_DEV(concat)(const float *a, int64_t ca, const float *b, int64_t cb, int64_t n, int64_t s, float *y,
                              void *stream) {
    int64_t total = n * (ca + cb) * s;
    if (total == 0) return 0;
    return (int)I3_LAUNCH(concat_v1, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, a, ca, b, cb, n,
                          s, y);
}

extern "C" int I3_DEV(concat_channels_last)(const void *a, int a_layout, int64_t ca, const void *b, int b_layout,
                                            int64_t cb, int64_t n, int64_t s, int precision, void *y, void *stream) {
    if (n * (ca + cb) * s == 0) return 0;
    if ((precision != I3_TC_F16 && precision != I3_TC_BF16) || n > 65535 || (ca + cb + CL_TILE - 1) / CL_TILE > 65535)
        return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((s + CL_TILE - 1) / CL_TILE), (unsigned)((ca + cb + CL_TILE - 1) / CL_TILE), (unsigned)n);
    decltype(&concat_channels_last_v1<false>) kernel =
        precision == I3_TC_BF16 ? concat_channels_last_v1<true> : concat_channels_last_v1<false>;
    return (int)I3_LAUNCH(kernel, grid, dim3(CL_TILE, 8), 0, (cudaStream_t)stream, a, a_layout == I3_LAYOUT_NDHWC,
                          ca, b, b_layout == I3_LAYOUT_NDHWC, cb, s, (uint16_t *)y);
}
