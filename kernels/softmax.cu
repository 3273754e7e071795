/* Channel softmax fused with the uncertainty maps, over logits [n, c, s] (s = spatial size):
 * probabilities [n, c, s], normalized entropy H = -sum p log p / log C (0 when C == 1) [n, s], max
 * softmax probability [n, s] and argmax [n, s] (lowest index wins ties), any output may be NULL.
 * Reference: i3_cpu_softmax_uncertainty (runtime/ops).
 *
 * Kernel versions:
 *   v1: one spatial position per thread (grid-stride); neighbouring threads read neighbouring
 *       positions of each channel, so every channel read is coalesced. One pass finds max and
 *       argmax, a second sums exp(x - max) and sum (x - max) exp(x - max), a third (only when
 *       probabilities are wanted) writes them. With S = sum exp(x - m):
 *         p_i = exp(x_i - m) / S,  msp = 1 / S,  -sum p log p = log S - sum (x_i - m) exp(x_i - m) / S.
 * Planned (issue 5): per-slice sums along all three axes in the same pass. */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

__global__ void softmax_uncertainty_v1(const float *__restrict__ logits, int64_t n, int64_t c, int64_t s,
                                       float *__restrict__ probs, float *__restrict__ entropy,
                                       float *__restrict__ msp, int32_t *__restrict__ argmax) {
    float inv_log_c = c > 1 ? 1.0f / logf((float)c) : 0.0f;
    I3_GRID_STRIDE_LOOP(i, n * s) {
        int64_t sample = i / s, pos = i % s;
        const float *x = logits + sample * c * s + pos;
        float max = x[0];
        int32_t best = 0;
        for (int64_t k = 1; k < c; k++) {
            float v = x[k * s];
            if (v > max) {
                max = v;
                best = (int32_t)k;
            }
        }
        float sum = 0.0f, weighted = 0.0f;
        for (int64_t k = 0; k < c; k++) {
            float shifted = x[k * s] - max, e = expf(shifted);
            sum += e;
            weighted += shifted * e;
        }
        float inv_sum = 1.0f / sum;
        if (probs)
            for (int64_t k = 0; k < c; k++) probs[(sample * c + k) * s + pos] = expf(x[k * s] - max) * inv_sum;
        if (entropy) entropy[i] = (logf(sum) - weighted * inv_sum) * inv_log_c;
        if (msp) msp[i] = inv_sum;
        if (argmax) argmax[i] = best;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(softmax_uncertainty)(const float *logits, int64_t n, int64_t c, int64_t s, float *probs,
                                           float *entropy, float *msp, int32_t *argmax, void *stream) {
    if (n * s == 0 || c == 0) return 0;
    return (int)I3_LAUNCH(softmax_uncertainty_v1, grid_stride_blocks(n * s, 256), 256, 0, (cudaStream_t)stream,
                          logits, n, c, s, probs, entropy, msp, argmax);
}
