/* Channel reductions over logits [n, c, s]: softmax probabilities, normalized entropy
 * H = -sum p log p / log C (0 for C == 1), max softmax probability, argmax (lowest index wins ties).
 * Numerically stable: with m = max logit, r = sum over the other channels of exp(l - m) and Z = 1 + r:
 * p = exp(l - m) / Z, msp = 1 / Z and -sum p log p = log1p(r) - sum p (l - m); keeping r apart from
 * the 1 keeps tiny entropies of confident voxels exact in float.
 * One pass over the logits per block of voxels: the channel loops run over contiguous voxels of the
 * block (vectorisable, float expf), per-voxel state (max, r, weighted sum) lives in small arrays; the
 * exponentials go straight into probs when requested and are scaled by 1 / Z at the end of the block.
 * Threads over blocks. */
#include "ops.h"

#include <math.h>

#define I3_SOFTMAX_BLOCK 256

void i3_cpu_softmax_uncertainty(const float *logits, int64_t n, int64_t c, int64_t s, float *probs,
                                float *entropy, float *msp, int32_t *argmax, int n_threads) {
    if (c <= 0 || s <= 0) return;
    const float inv_log_c = c > 1 ? (float)(1.0 / log((double)c)) : 0.0f;
    const int64_t blocks_per_sample = (s + I3_SOFTMAX_BLOCK - 1) / I3_SOFTMAX_BLOCK;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t task = 0; task < n * blocks_per_sample; task++) {
        const int64_t i = task / blocks_per_sample, j0 = (task % blocks_per_sample) * I3_SOFTMAX_BLOCK;
        const int64_t len = s - j0 < I3_SOFTMAX_BLOCK ? s - j0 : I3_SOFTMAX_BLOCK;
        const float *l = logits + i * c * s + j0;
        float m[I3_SOFTMAX_BLOCK], rest[I3_SOFTMAX_BLOCK], weighted[I3_SOFTMAX_BLOCK];
        int32_t best[I3_SOFTMAX_BLOCK];
        for (int64_t j = 0; j < len; j++) m[j] = l[j], best[j] = 0, rest[j] = 0.0f, weighted[j] = 0.0f;
        for (int64_t k = 1; k < c; k++)
            for (int64_t j = 0; j < len; j++)
                if (l[k * s + j] > m[j]) m[j] = l[k * s + j], best[j] = (int32_t)k;
        for (int64_t k = 0; k < c; k++) {
            const float *lk = l + k * s;
            float *pk = probs ? probs + i * c * s + k * s + j0 : NULL;
            for (int64_t j = 0; j < len; j++) {
                const float d = lk[j] - m[j], e = expf(d);
                rest[j] += k == best[j] ? 0.0f : e;
                weighted[j] += e * d;
                if (pk) pk[j] = e;
            }
        }
        if (probs)
            for (int64_t k = 0; k < c; k++) {
                float *pk = probs + i * c * s + k * s + j0;
                for (int64_t j = 0; j < len; j++) pk[j] /= 1.0f + rest[j];
            }
        for (int64_t j = 0; j < len; j++) {
            const int64_t v = i * s + j0 + j;
            const float z = 1.0f + rest[j];
            if (entropy) entropy[v] = c == 1 ? 0.0f : fmaxf(log1pf(rest[j]) - weighted[j] / z, 0.0f) * inv_log_c;
            if (msp) msp[v] = 1.0f / z;
            if (argmax) argmax[v] = best[j];
        }
    }
}
