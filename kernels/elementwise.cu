/* Elementwise device ops: activation y = act(x), add y = act(a + b) (in place allowed), and channel
 * concat y[n, ca+cb, s] = [a[n, ca, s], b[n, cb, s]].
 *
 * Kernel versions:
 *   activation v1, add v1: one grid-stride loop, one element per thread per step.
 *   concat v1: one grid-stride loop over the output, each element picks its source.
 * All are memory bound; fusing them into the producing kernels' epilogues is issue 5's later work. */
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
        y[i] = ch < ca ? a[(sample * ca + ch) * s + pos] : b[(sample * cb + ch - ca) * s + pos];
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
