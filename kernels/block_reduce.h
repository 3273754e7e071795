/* Block-wide reductions of a few per-thread values at once (the weighted sums of ocr.cu and
 * mask_attention.cu): warp shuffles, then one slot per warp in shared memory, then every thread adds
 * the warps' slots in warp order, so all threads get the same totals in a fixed order (deterministic,
 * no atomics). blockDim.x must be a multiple of 32, blockDim.y == blockDim.z == 1. Included after
 * device.h. */
#ifndef I3RT_KERNELS_BLOCK_REDUCE_H
#define I3RT_KERNELS_BLOCK_REDUCE_H

namespace I3_NS {

struct SumOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

/* v[0..N) of every thread -> the block's totals in every thread's v. shared: N * blockDim.x / 32
 * floats, free for reuse when this returns. */
template <int N, typename Op>
__device__ __forceinline__ void block_reduce(float (&v)[N], float *shared, Op op) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (int i = 0; i < N; i++)
        for (int offset = 16; offset > 0; offset /= 2) v[i] = op(v[i], __shfl_xor_sync(0xffffffffu, v[i], offset));
    if (lane == 0)
        for (int i = 0; i < N; i++) shared[i * warps + warp] = v[i];
    __syncthreads();
    for (int i = 0; i < N; i++) {
        float total = shared[i * warps];
        for (int w = 1; w < warps; w++) total = op(total, shared[i * warps + w]);
        v[i] = total;
    }
    __syncthreads();
}

}  // namespace I3_NS

#endif /* I3RT_KERNELS_BLOCK_REDUCE_H */
