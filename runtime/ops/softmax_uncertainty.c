/* Channel reductions over logits [n, c, s], one pass per voxel (the channel values of a voxel are
 * s apart): softmax probabilities, normalized entropy H = -sum p log p / log C (0 for C == 1), max
 * softmax probability, argmax (lowest index wins ties). Numerically stable: with m = max logit and
 * Z = sum exp(l - m), p = exp(l - m) / Z, msp = 1 / Z and -sum p log p = log Z - sum p (l - m).
 * Sums in double. Threads over voxels. */
#include "ops.h"

#include <math.h>

void i3_cpu_softmax_uncertainty(const float *logits, int64_t n, int64_t c, int64_t s, float *probs,
                                float *entropy, float *msp, int32_t *argmax, int n_threads) {
    if (c <= 0) return;
    const double log_c = log((double)c);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t v = 0; v < n * s; v++) {
        const int64_t i = v / s, j = v % s;
        const float *l = logits + i * c * s + j;
        int64_t best = 0;
        for (int64_t k = 1; k < c; k++)
            if (l[k * s] > l[best * s]) best = k;
        const double m = l[best * s];
        double z = 0.0, weighted = 0.0;
        for (int64_t k = 0; k < c; k++) {
            const double e = exp((double)l[k * s] - m);
            z += e;
            weighted += e * ((double)l[k * s] - m);
        }
        if (probs)
            for (int64_t k = 0; k < c; k++) probs[i * c * s + k * s + j] = (float)(exp((double)l[k * s] - m) / z);
        if (entropy) entropy[v] = c == 1 ? 0.0f : (float)((log(z) - weighted / z) / log_c);
        if (msp) msp[v] = (float)(1.0 / z);
        if (argmax) argmax[v] = (int32_t)best;
    }
}
