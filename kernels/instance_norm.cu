/* Instance norm over each (n, c) plane, with fused affine and activation, NCDHW f32:
 *   y = act((x - mean) / sqrt(var + eps) * gamma[c] + beta[c])   (biased variance; gamma/beta may be NULL)
 * In place allowed (y == x). Reference: i3_cpu_instance_norm (runtime/ops).
 *
 * Kernel versions:
 *   v1: one block per (n, c) plane. Each thread runs Welford over a strided part of the plane, the
 *       partial (count, mean, M2) triples merge with Chan's formula, first across the warp with
 *       shuffles, then across warps through shared memory; a second pass normalizes. Statistics in
 *       f32 (the CPU reference uses double: the test's tolerance covers the difference).
 * Planned (issue 5): statistics accumulated in the producing conv's epilogue, normalization applied
 * in the next conv's prologue. */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

#define NORM_THREADS 256

struct Moments {
    float count, mean, m2;
};

__device__ __forceinline__ Moments moments_merge(Moments a, Moments b) {
    float count = a.count + b.count;
    if (count == 0.0f) return a;
    float delta = b.mean - a.mean, fb = b.count / count;
    Moments r = {count, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.count * fb};
    return r;
}

__device__ __forceinline__ Moments moments_warp_merge(Moments m) {
    for (int offset = 16; offset > 0; offset /= 2) {
        Moments other = {__shfl_xor_sync(0xffffffffu, m.count, offset), __shfl_xor_sync(0xffffffffu, m.mean, offset),
                         __shfl_xor_sync(0xffffffffu, m.m2, offset)};
        m = moments_merge(m, other);
    }
    return m;
}

__global__ void __launch_bounds__(NORM_THREADS) instance_norm_v1(const float *x, int64_t spatial, int64_t channels,
                                                                 const float *gamma, const float *beta, float eps,
                                                                 i3_act act, float *y) {
    __shared__ Moments warp_moments[NORM_THREADS / 32];
    __shared__ float plane_scale, plane_shift;
    int64_t plane = blockIdx.x;
    const float *xp = x + plane * spatial;
    float *yp = y + plane * spatial;

    Moments m = {0.0f, 0.0f, 0.0f};
    for (int64_t i = threadIdx.x; i < spatial; i += blockDim.x) {
        float v = xp[i];
        m.count += 1.0f;
        float delta = v - m.mean;
        m.mean += delta / m.count;
        m.m2 += delta * (v - m.mean);
    }
    m = moments_warp_merge(m);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) warp_moments[warp] = m;
    __syncthreads();
    if (warp == 0) {
        Moments zero = {0.0f, 0.0f, 0.0f};
        m = lane < (int)(blockDim.x / 32) ? warp_moments[lane] : zero;
        m = moments_warp_merge(m);
        if (lane == 0) {
            int64_t c = plane % channels;
            float inv_std = rsqrtf(m.m2 / m.count + eps);
            float scale = gamma ? gamma[c] * inv_std : inv_std;
            plane_scale = scale;
            plane_shift = (beta ? beta[c] : 0.0f) - m.mean * scale;
        }
    }
    __syncthreads();
    float scale = plane_scale, shift = plane_shift;
    for (int64_t i = threadIdx.x; i < spatial; i += blockDim.x) yp[i] = act_apply(act, xp[i] * scale + shift);
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(instance_norm)(const float *x, i3_shape5 xs, const float *gamma, const float *beta,
                                     const i3_norm_params *p, float *y, void *stream) {
    int64_t planes = xs.n * xs.c, spatial = i3_shape5_spatial(xs);
    if (planes == 0 || spatial == 0) return 0;
    return (int)I3_LAUNCH(instance_norm_v1, (unsigned)planes, NORM_THREADS, 0, (cudaStream_t)stream, x, spatial, xs.c,
                          gamma, beta, p->eps, p->act, y);
}
