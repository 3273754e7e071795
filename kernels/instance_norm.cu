/* Instance norm over each (n, c) plane, with fused affine and activation, NCDHW f32:
 *   y = act((x - mean) / sqrt(var + eps) * gamma[c] + beta[c])   (biased variance; gamma/beta may be NULL)
 * In place allowed (y == x). Reference: i3_cpu_instance_norm (runtime/ops).
 *
 * Kernel versions:
 *   v1: one block per (n, c) plane. Each thread runs Welford over a strided part of the plane, the
 *       partial (count, mean, M2) triples merge with Chan's formula, first across the warp with
 *       shuffles, then across warps through shared memory; a second pass normalizes. Statistics in
 *       f32 (the CPU reference uses double: the test's tolerance covers the difference).
 *   fused (with conv.cu's epilogue statistics, driven by runtime/backend_cuda.cu):
 *     norm_finalize: one block per plane merges the plane's per-chunk (count, mean, M2) partials
 *       that the producing convolution wrote (as v1 merges its threads': a 128³ plane out of the
 *       tensor-core conv has 16384 chunks, which one thread per plane took 1.5 ms to merge on an
 *       H200), and stores (scale, shift) = (gamma / std, beta - mean * gamma / std) per plane;
 *     norm_apply: one grid-stride pass y = act_out(act(x * scale + shift) + skip) (skip optional:
 *       the residual add of ResEnc blocks); the plane's statistics are never re-read from x.
 *     norm_apply_channels_last: the same written channels-last in f16/bf16 (x the tensor-core
 *     convolution's channels-last output, kernels/conv_tensor_core.cu, or NCDHW f32; the skip in either
 *     layout), one element per thread; without scale_shift it is the residual add y = act_out(x + skip)
 *     of networks without norms (HRNet), whose operands need not share a layout.
 *     The next convolution can instead apply (scale, shift, act) as it loads its input (prologue,
 *     conv.cu), and then neither pass writes the normalized tensor. */
#include "device.h"
#include "launchers.h"
#include "moments.h"

namespace I3_NS {

#define NORM_THREADS 256

__global__ void __launch_bounds__(NORM_THREADS) instance_norm_v1(const float *x, int64_t spatial, int64_t channels,
                                                                 const float *gamma, const float *beta, float eps,
                                                                 i3_act act, float *y) {
    __shared__ Moments warp_moments[NORM_THREADS / 32];
    __shared__ float plane_scale, plane_shift;
    int64_t plane = blockIdx.x;
    const float *xp = x + plane * spatial;
    float *yp = y + plane * spatial;

    Moments m = {0.0f, 0.0f, 0.0f};
    for (int64_t i = threadIdx.x; i < spatial; i += blockDim.x) moments_add(m, xp[i]);
    m = moments_block_merge(m, warp_moments);
    if (threadIdx.x == 0) {
        int64_t c = plane % channels;
        float inv_std = rsqrtf(m.m2 / m.count + eps);
        float scale = gamma ? gamma[c] * inv_std : inv_std;
        plane_scale = scale;
        plane_shift = (beta ? beta[c] : 0.0f) - m.mean * scale;
    }
    __syncthreads();
    float scale = plane_scale, shift = plane_shift;
    for (int64_t i = threadIdx.x; i < spatial; i += blockDim.x) yp[i] = act_apply(act, xp[i] * scale + shift);
}

__global__ void __launch_bounds__(NORM_THREADS) norm_finalize(const float *__restrict__ partials, int64_t planes,
                                                               int chunks, int64_t channels,
                                                               const float *__restrict__ gamma,
                                                               const float *__restrict__ beta, float eps,
                                                               float *__restrict__ scale_shift) {
    __shared__ Moments warp_moments[NORM_THREADS / 32];
    for (int64_t plane = blockIdx.x; plane < planes; plane += gridDim.x) { /* uniform per block */
        Moments m = {0.0f, 0.0f, 0.0f};
        for (int k = threadIdx.x; k < chunks; k += blockDim.x) {
            const float *part = partials + (plane * chunks + k) * 3;
            Moments chunk = {part[0], part[1], part[2]};
            m = moments_merge(m, chunk);
        }
        m = moments_block_merge(m, warp_moments);
        if (threadIdx.x == 0) {
            int64_t c = plane % channels;
            float inv_std = rsqrtf(m.m2 / m.count + eps);
            float scale = gamma ? gamma[c] * inv_std : inv_std;
            scale_shift[2 * plane] = scale;
            scale_shift[2 * plane + 1] = (beta ? beta[c] : 0.0f) - m.mean * scale;
        }
    }
}

__global__ void norm_apply(const float *x, int64_t planes, int64_t spatial, const float *__restrict__ scale_shift,
                           i3_act act, const float *skip, i3_act act_out, float *y) {
    I3_GRID_STRIDE_LOOP(i, planes * spatial) {
        int64_t plane = i / spatial;
        float v = act_apply(act, x[i] * scale_shift[2 * plane] + scale_shift[2 * plane + 1]);
        y[i] = skip ? act_apply(act_out, v + skip[i]) : v;
    }
}

/* Element i of y (channels-last) from a tensor in either layout: channels-last b16, or NCDHW f32. */
template <bool BF16>
__device__ __forceinline__ float channels_last_element(const void *t, bool t_cl, int64_t i, int64_t c, int64_t spatial) {
    if (t_cl) return from_b16<BF16>(((const uint16_t *)t)[i]);
    return ((const float *)t)[(i / (c * spatial) * c + i % c) * spatial + i / c % spatial];
}

/* y [n, spatial, c] channels-last b16; x (y may be x when both are channels-last) and skip (optional) in
 * either layout; scale_shift NULL: no norm */
template <bool BF16>
__global__ void norm_apply_channels_last(const void *x, bool x_cl, int64_t c, int64_t spatial, int64_t total,
                                         const float *__restrict__ scale_shift, i3_act act, const void *skip,
                                         bool skip_cl, i3_act act_out, uint16_t *y) {
    I3_GRID_STRIDE_LOOP(i, total) {
        float v = channels_last_element<BF16>(x, x_cl, i, c, spatial);
        if (scale_shift) {
            const float *ss = scale_shift + 2 * (i / (c * spatial) * c + i % c);
            v = act_apply(act, v * ss[0] + ss[1]);
        }
        if (skip) v = act_apply(act_out, v + channels_last_element<BF16>(skip, skip_cl, i, c, spatial));
        y[i] = to_b16<BF16>(v);
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(norm_finalize)(const float *partials, int64_t planes, int chunks, int64_t channels,
                                     const float *gamma, const float *beta, float eps, float *scale_shift,
                                     void *stream) {
    if (planes == 0) return 0;
    const unsigned blocks = (unsigned)(planes < I3_MAX_GRID_STRIDE_BLOCKS ? planes : I3_MAX_GRID_STRIDE_BLOCKS);
    return (int)I3_LAUNCH(norm_finalize, blocks, NORM_THREADS, 0, (cudaStream_t)stream, partials,
                          planes, chunks, channels, gamma, beta, eps, scale_shift);
}

extern "C" int I3_DEV(norm_apply)(const float *x, int64_t planes, int64_t spatial, const float *scale_shift,
                                  i3_act act, const float *skip, i3_act act_out, float *y, void *stream) {
    if (planes * spatial == 0) return 0;
    return (int)I3_LAUNCH(norm_apply, grid_stride_blocks(planes * spatial, 256), 256, 0, (cudaStream_t)stream, x,
                          planes, spatial, scale_shift, act, skip, act_out, y);
}

extern "C" int I3_DEV(norm_apply_channels_last)(const void *x, int x_layout, int64_t n, int64_t c, int64_t spatial,
                                                const float *scale_shift, i3_act act, const void *skip,
                                                int skip_layout, i3_act act_out, void *y, int precision, void *stream) {
    const int64_t total = n * c * spatial;
    if (total == 0) return 0;
    if (precision != I3_TC_F16 && precision != I3_TC_BF16) return (int)cudaErrorInvalidValue;
    decltype(&norm_apply_channels_last<false>) kernel =
        precision == I3_TC_BF16 ? norm_apply_channels_last<true> : norm_apply_channels_last<false>;
    return (int)I3_LAUNCH(kernel, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, x,
                          x_layout == I3_LAYOUT_NDHWC, c, spatial, total, scale_shift, act, skip,
                          skip_layout == I3_LAYOUT_NDHWC, act_out, (uint16_t *)y);
}

extern "C" int I3_DEV(instance_norm)(const float *x, i3_shape5 xs, const float *gamma, const float *beta,
                                     const i3_norm_params *p, float *y, void *stream) {
    int64_t planes = xs.n * xs.c, spatial = i3_shape5_spatial(xs);
    if (planes == 0 || spatial == 0) return 0;
    return (int)I3_LAUNCH(instance_norm_v1, (unsigned)planes, NORM_THREADS, 0, (cudaStream_t)stream, x, spatial, xs.c,
                          gamma, beta, p->eps, p->act, y);
}
