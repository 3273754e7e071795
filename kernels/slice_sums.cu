/* Per-slice sums of a map [d, h, w] along each axis (the uncertainty maps' slice statistics that
 * slice acquisition ranks): sum_d[z] = sum over (y, x), sum_h[y] = sum over (z, x), sum_w[x] = sum
 * over (z, y), accumulated in double; any output may be NULL. Reference: i3_cpu_slice_sums
 * (runtime/ops/slice_sums.c).
 *
 * Kernel versions:
 *   v1: one block per output slice (d + h + w blocks; the block index picks the axis), each thread
 *       sums a strided part of the slice in double, then a warp-shuffle and shared-memory block
 *       reduction. Deterministic (no atomics).
 * Planned (issue 5): computed inside softmax_uncertainty's pass over the logits. */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

#define SLICE_THREADS 256

__global__ void __launch_bounds__(SLICE_THREADS) slice_sums_v1(const float *__restrict__ x, int64_t d, int64_t h,
                                                               int64_t w, double *sum_d, double *sum_h,
                                                               double *sum_w) {
    __shared__ double warp_sums[SLICE_THREADS / 32];
    int64_t slice = blockIdx.x;
    int axis = slice < d ? 0 : slice < d + h ? 1 : 2;
    int64_t index = axis == 0 ? slice : axis == 1 ? slice - d : slice - d - h;
    double *out = axis == 0 ? sum_d : axis == 1 ? sum_h : sum_w;
    /* the slice's elements as (outer, inner) with the fixed coordinate at `index` */
    int64_t count = axis == 0 ? h * w : axis == 1 ? d * w : d * h;
    double sum = 0.0;
    if (out) {
        for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
            int64_t z, y, xx;
            if (axis == 0) { z = index; y = i / w; xx = i % w; }
            else if (axis == 1) { z = i / w; y = index; xx = i % w; }
            else { z = i / h; y = i % h; xx = index; }
            sum += x[(z * h + y) * w + xx];
        }
    }
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
    __syncthreads();
    if (threadIdx.x == 0 && out) {
        double total = 0.0;
        for (int i = 0; i < (int)(blockDim.x / 32); i++) total += warp_sums[i];
        out[index] = total;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(slice_sums)(const float *x, int64_t d, int64_t h, int64_t w, double *sum_d, double *sum_h,
                                  double *sum_w, void *stream) {
    if (d * h * w == 0) return 0;
    return (int)I3_LAUNCH(slice_sums_v1, (unsigned)(d + h + w), SLICE_THREADS, 0, (cudaStream_t)stream, x, d, h, w,
                          sum_d, sum_h, sum_w);
}
