/* The ops of Slice-and-Conquer's mask-attention module (docs/snc.md, "Mask attention"), NCDHW f32:
 *   mask_pool     feats [n, c, d', h', w'] averaged over the annotated foreground and background of
 *                 guide [n, 2, d, h, w] (2D masks placed in 3D, annotated slices) at stride `stride`:
 *                 y [n, 2c, 1, 1, 1] = (sum_j fg(j) f(j) / (sum_j fg(j) + eps), the same with bg), fg/bg
 *                 the guide's clipped window means around each feature voxel   (i3_cpu_mask_pool_ref)
 *   channel_gate  y[n, c, s] = x[n, c, s] * 2 sigmoid(gate[n, c]); in place allowed (i3_cpu_channel_gate)
 * The reference sums in double; mask_pool here in f32 (different order, same tolerance as the other ops).
 *
 * Kernel versions:
 *   mask_pool v1, two launches: mask_pool_weights, one feature voxel per thread (grid-stride), sums
 *       the guide's two channels over its window (at most (stride + 1)^3 voxels) and writes fg(j) and
 *       bg(j) to scratch [n, 2, s']; mask_pool_sums, a block per (group of POOL_CHANNELS channels,
 *       sample): each thread takes strided voxels (coalesced), adds both weights and their products with
 *       the group's features, block_reduce gives the sums. The weights are computed once, not once per
 *       channel group (a window is up to 125 guide voxels per feature voxel).
 *   channel_gate v1: one grid-stride loop over the elements. */
#include "device.h"
#include "launchers.h"
#include "block_reduce.h"

namespace I3_NS {

struct PoolWindows {
    int64_t gd, gh, gw; /* the guide's size */
    int64_t fd, fh, fw; /* the features' size */
    int stride;
};

/* The clipped window [lo, hi) of feature position j along an axis of `in` guide voxels. */
__device__ __forceinline__ void pool_window(int64_t j, int stride, int64_t in, int64_t &lo, int64_t &hi) {
    lo = stride * j - stride / 2;
    hi = stride * j + stride / 2 + 1;
    lo = lo < 0 ? 0 : lo;
    hi = hi > in ? in : hi;
}

__global__ void mask_pool_weights_v1(const float *__restrict__ guide, PoolWindows g, int64_t n,
                                     float *__restrict__ weights) {
    const int64_t sf = g.fd * g.fh * g.fw, sg = g.gd * g.gh * g.gw;
    I3_GRID_STRIDE_LOOP(i, n * sf) {
        const int64_t b = i / sf, j = i % sf;
        int64_t zlo, zhi, ylo, yhi, xlo, xhi;
        pool_window(j / (g.fh * g.fw), g.stride, g.gd, zlo, zhi);
        pool_window(j / g.fw % g.fh, g.stride, g.gh, ylo, yhi);
        pool_window(j % g.fw, g.stride, g.gw, xlo, xhi);
        const float *mask = guide + b * 2 * sg, *annotated = mask + sg;
        float m = 0.0f, a = 0.0f;
        for (int64_t z = zlo; z < zhi; z++)
            for (int64_t y = ylo; y < yhi; y++)
                for (int64_t x = xlo; x < xhi; x++) {
                    const int64_t v = (z * g.gh + y) * g.gw + x;
                    m += mask[v], a += annotated[v];
                }
        const float count = (float)((zhi - zlo) * (yhi - ylo) * (xhi - xlo));
        weights[b * 2 * sf + j] = m / count;
        weights[(b * 2 + 1) * sf + j] = a / count - m / count;
    }
}

#define POOL_THREADS 256
#define POOL_CHANNELS 16
#define POOL_SUMS (2 * POOL_CHANNELS + 2) /* fg sums per channel, bg sums per channel, fg total, bg total */

/* grid (channel groups, samples) */
__global__ void __launch_bounds__(POOL_THREADS)
    mask_pool_sums_v1(const float *__restrict__ feats, const float *__restrict__ weights, int64_t c, int64_t sf,
                      float eps, float *__restrict__ y) {
    __shared__ float shared[POOL_SUMS * POOL_THREADS / 32];
    const int64_t c0 = (int64_t)blockIdx.x * POOL_CHANNELS, b = blockIdx.y;
    const int channels = c - c0 < POOL_CHANNELS ? (int)(c - c0) : POOL_CHANNELS;
    const float *f = feats + (b * c + c0) * sf, *fg = weights + b * 2 * sf, *bg = fg + sf;
    float sums[POOL_SUMS] = {};
    for (int64_t j = threadIdx.x; j < sf; j += blockDim.x) {
        const float wf = fg[j], wb = bg[j];
        for (int ch = 0; ch < POOL_CHANNELS; ch++)
            if (ch < channels) {
                const float v = f[ch * sf + j];
                sums[ch] += wf * v;
                sums[POOL_CHANNELS + ch] += wb * v;
            }
        sums[2 * POOL_CHANNELS] += wf;
        sums[2 * POOL_CHANNELS + 1] += wb;
    }
    block_reduce(sums, shared, SumOp());
    if (threadIdx.x == 0) /* constant indices keep sums in registers */
        for (int ch = 0; ch < POOL_CHANNELS; ch++)
            if (ch < channels) {
                y[b * 2 * c + c0 + ch] = sums[ch] / (sums[2 * POOL_CHANNELS] + eps);
                y[(b * 2 + 1) * c + c0 + ch] = sums[POOL_CHANNELS + ch] / (sums[2 * POOL_CHANNELS + 1] + eps);
            }
}

/* y may be x. */
__global__ void channel_gate_v1(const float *x, int64_t s, int64_t total, const float *__restrict__ gate, float *y) {
    I3_GRID_STRIDE_LOOP(i, total) {
        const float factor = 2.0f / (1.0f + expf(-gate[i / s]));
        y[i] = x[i] * factor;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" size_t I3_DEV(mask_pool_scratch_bytes)(i3_shape5 fs) {
    return (size_t)(fs.n * 2 * i3_shape5_spatial(fs)) * sizeof(float);
}

extern "C" int I3_DEV(mask_pool)(const float *feats, i3_shape5 fs, const float *guide, i3_shape5 gs,
                                 const i3_mask_pool_params *p, float *y, void *scratch, void *stream) {
    const int64_t sf = i3_shape5_spatial(fs);
    if (fs.n * fs.c == 0) return 0;
    if (!scratch || sf < 1 || fs.n > 65535 || gs.n != fs.n || gs.c != 2 || p->stride < 1)
        return (int)cudaErrorInvalidValue;
    PoolWindows g = {gs.d, gs.h, gs.w, fs.d, fs.h, fs.w, p->stride};
    float *weights = (float *)scratch;
    int e = (int)I3_LAUNCH(mask_pool_weights_v1, grid_stride_blocks(fs.n * sf, 256), 256, 0, (cudaStream_t)stream,
                           guide, g, fs.n, weights);
    if (e) return e;
    dim3 grid((unsigned)((fs.c + POOL_CHANNELS - 1) / POOL_CHANNELS), (unsigned)fs.n);
    return (int)I3_LAUNCH(mask_pool_sums_v1, grid, POOL_THREADS, 0, (cudaStream_t)stream, feats,
                          (const float *)weights, fs.c, sf, p->eps, y);
}

extern "C" int I3_DEV(channel_gate)(const float *x, i3_shape5 xs, const float *gate, float *y, void *stream) {
    const int64_t total = i3_shape5_numel(xs), s = i3_shape5_spatial(xs);
    if (total == 0) return 0;
    return (int)I3_LAUNCH(channel_gate_v1, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, x, s, total,
                          gate, y);
}
