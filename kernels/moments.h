/* Running statistics (count, mean, M2) of a set of floats in fp32, merged with Chan's formula: the
 * instance-norm statistics of instance_norm.cu and of the convolution epilogue (conv.cu), so that
 * both compute them the same way. Included after device.h. */
#ifndef I3RT_KERNELS_MOMENTS_H
#define I3RT_KERNELS_MOMENTS_H

namespace I3_NS {

struct Moments {
    float count, mean, m2;
};

/* Welford's update with one value. */
__device__ __forceinline__ void moments_add(Moments &m, float v) {
    m.count += 1.0f;
    float delta = v - m.mean;
    m.mean += delta / m.count;
    m.m2 += delta * (v - m.mean);
}

/* The moments of the values v[i] with valid[i] (a handful, in registers), in two passes: one division, where
 * Welford's update takes one per value. */
template <int N>
__device__ __forceinline__ Moments moments_of(const float (&v)[N], const bool (&valid)[N]) {
    float count = 0.0f, sum = 0.0f, m2 = 0.0f;
    for (int i = 0; i < N; i++)
        if (valid[i]) count += 1.0f, sum += v[i];
    const float mean = count > 0.0f ? sum / count : 0.0f;
    for (int i = 0; i < N; i++) {
        const float d = valid[i] ? v[i] - mean : 0.0f;
        m2 += d * d;
    }
    return Moments{count, mean, m2};
}

__device__ __forceinline__ Moments moments_merge(Moments a, Moments b) {
    float count = a.count + b.count;
    if (count == 0.0f) return a;
    float delta = b.mean - a.mean, fb = b.count / count;
    Moments r = {count, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.count * fb};
    return r;
}

/* Merges the lanes whose index differs in the bits of `lane_bits` (16|8|4|2|1 = the whole warp). */
__device__ __forceinline__ Moments moments_warp_merge(Moments m, int lane_bits = 31) {
    for (int offset = 16; offset > 0; offset /= 2) {
        if (!(lane_bits & offset)) continue;
        Moments other = {__shfl_xor_sync(0xffffffffu, m.count, offset), __shfl_xor_sync(0xffffffffu, m.mean, offset),
                         __shfl_xor_sync(0xffffffffu, m.m2, offset)};
        m = moments_merge(m, other);
    }
    return m;
}

/* The whole block's moments in thread 0 (others: undefined). `scratch` holds one Moments per warp;
 * every thread of the block calls it. */
__device__ __forceinline__ Moments moments_block_merge(Moments m, Moments *scratch) {
    m = moments_warp_merge(m);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = (int)(blockDim.x + 31) / 32;
    if (lane == 0) scratch[warp] = m;
    __syncthreads();
    if (warp == 0) {
        Moments zero = {0.0f, 0.0f, 0.0f};
        m = moments_warp_merge(lane < warps ? scratch[lane] : zero);
    }
    __syncthreads(); /* scratch may be reused right after */
    return m;
}

}  // namespace I3_NS

#endif /* I3RT_KERNELS_MOMENTS_H */
