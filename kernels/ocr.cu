/* The ops of RITM's HRNet-OCR head (docs/hrnet.md), NCDHW f32:
 *   slice_channels    y [n, count, s] = x[:, begin : begin + count, s]       (i3_cpu_slice_channels)
 *   spatial_gather    y[n, c, k] = sum_s softmax_s(logits[n, k, :])[s] feats[n, c, s]
 *                     -> [n, c, classes, 1, 1]                              (i3_cpu_spatial_gather_ref)
 *   object_attention  y[n, cv, s] = sum_k softmax_k(ck^-1/2 q[n, :, s] . key[n, :, k]) value[n, cv, k],
 *                     key/value [n, ck|cv, classes, 1, 1]                   (i3_cpu_object_attention_ref)
 * The references sum in double; these kernels in f32 (different order, same tolerance as the other ops).
 *
 * Kernel versions:
 *   slice_channels v1: one grid-stride loop over the output.
 *   spatial_gather v1: a block per (sample, class, group of GATHER_CHANNELS channels): the block's max
 *       of the class logits over all positions, then one pass in which each thread takes strided
 *       positions (coalesced reads of every channel), computes exp(l - max) once per position and adds
 *       it and its products with the group's features; block_reduce gives the sums. Each group's
 *       block recomputes the class's max and exps: the logits are classes x s next to the features'
 *       c x s, and no scratch is needed.
 *   object_attention v1: one position per thread (grid-stride): the classes' dot products with the
 *       query read once per channel (coalesced), softmax in registers, then each value channel's mix
 *       written coalesced. key and value are a few hundred floats read by every thread alike (cached);
 *       the scores live in a local array of I3_OCR_MAX_CLASSES floats (256 bytes of stack, L1). */
#include "device.h"
#include "launchers.h"
#include "block_reduce.h"

namespace I3_NS {

__global__ void slice_channels_v1(const float *__restrict__ x, int64_t c, int64_t begin, int64_t count, int64_t s,
                                  int64_t total, float *__restrict__ y) {
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t sample = i / (count * s), rest = i % (count * s);
        y[i] = x[(sample * c + begin) * s + rest];
    }
}

#define GATHER_THREADS 256
#define GATHER_CHANNELS 16

/* grid (channel groups, classes, samples) */
__global__ void __launch_bounds__(GATHER_THREADS)
    spatial_gather_v1(const float *__restrict__ feats, const float *__restrict__ logits, int64_t c, int64_t kc,
                      int64_t s, float *__restrict__ y) {
    __shared__ float shared[(GATHER_CHANNELS + 1) * GATHER_THREADS / 32];
    const int64_t c0 = (int64_t)blockIdx.x * GATHER_CHANNELS, k = blockIdx.y, b = blockIdx.z;
    const int channels = c - c0 < GATHER_CHANNELS ? (int)(c - c0) : GATHER_CHANNELS;
    const float *l = logits + (b * kc + k) * s, *f = feats + (b * c + c0) * s;
    float max[1] = {-INFINITY};
    for (int64_t i = threadIdx.x; i < s; i += blockDim.x) max[0] = fmaxf(max[0], l[i]);
    block_reduce(max, shared, MaxOp());
    float sums[GATHER_CHANNELS + 1] = {}; /* the group's weighted sums, then the softmax's denominator */
    for (int64_t i = threadIdx.x; i < s; i += blockDim.x) {
        const float e = expf(l[i] - max[0]);
        for (int ch = 0; ch < GATHER_CHANNELS; ch++)
            if (ch < channels) sums[ch] += e * f[ch * s + i];
        sums[GATHER_CHANNELS] += e;
    }
    block_reduce(sums, shared, SumOp());
    if (threadIdx.x == 0) /* constant indices keep sums in registers */
        for (int ch = 0; ch < GATHER_CHANNELS; ch++)
            if (ch < channels) y[(b * c + c0 + ch) * kc + k] = sums[ch] / sums[GATHER_CHANNELS];
}

__global__ void object_attention_v1(const float *__restrict__ q, const float *__restrict__ key,
                                    const float *__restrict__ value, int64_t n, int64_t ck, int64_t cv, int64_t kc,
                                    int64_t s, float *__restrict__ y) {
    const float scale = 1.0f / sqrtf((float)ck);
    I3_GRID_STRIDE_LOOP(i, n * s) {
        const int64_t b = i / s, pos = i % s;
        const float *qb = q + b * ck * s + pos, *kb = key + b * ck * kc, *vb = value + b * cv * kc;
        float a[I3_OCR_MAX_CLASSES];
        for (int64_t k = 0; k < kc; k++) a[k] = 0.0f;
        for (int64_t ch = 0; ch < ck; ch++) {
            const float qv = qb[ch * s];
            for (int64_t k = 0; k < kc; k++) a[k] += qv * kb[ch * kc + k];
        }
        float max = -INFINITY, sum = 0.0f;
        for (int64_t k = 0; k < kc; k++) max = fmaxf(max, a[k]);
        for (int64_t k = 0; k < kc; k++) sum += a[k] = expf((a[k] - max) * scale);
        const float inv_sum = 1.0f / sum;
        for (int64_t ch = 0; ch < cv; ch++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < kc; k++) acc += a[k] * vb[ch * kc + k];
            y[(b * cv + ch) * s + pos] = acc * inv_sum;
        }
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(slice_channels)(const float *x, i3_shape5 xs, const i3_slice_params *p, float *y,
                                      void *stream) {
    const int64_t s = i3_shape5_spatial(xs), total = xs.n * p->count * s;
    if (total == 0) return 0;
    return (int)I3_LAUNCH(slice_channels_v1, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, x, xs.c,
                          (int64_t)p->begin, (int64_t)p->count, s, total, y);
}

extern "C" int I3_DEV(spatial_gather)(const float *feats, const float *logits, int64_t n, int64_t c, int64_t kc,
                                      int64_t s, float *y, void *stream) {
    if (n * c * kc == 0) return 0;
    if (s < 1 || kc > 65535 || n > 65535) return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((c + GATHER_CHANNELS - 1) / GATHER_CHANNELS), (unsigned)kc, (unsigned)n);
    return (int)I3_LAUNCH(spatial_gather_v1, grid, GATHER_THREADS, 0, (cudaStream_t)stream, feats, logits, c, kc, s,
                          y);
}

extern "C" int I3_DEV(object_attention)(const float *q, const float *key, const float *value, int64_t n, int64_t ck,
                                        int64_t cv, int64_t kc, int64_t s, float *y, void *stream) {
    if (kc < 1 || kc > I3_OCR_MAX_CLASSES) return (int)cudaErrorInvalidValue;
    if (n * s * cv == 0) return 0;
    return (int)I3_LAUNCH(object_attention_v1, grid_stride_blocks(n * s, 256), 256, 0, (cudaStream_t)stream, q, key,
                          value, n, ck, cv, kc, s, y);
}
