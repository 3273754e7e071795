/* Uncertainty of an ensemble from the mean of its members' class probabilities (i3Deep, Eq. 1-2):
 *
 *   i3_cpu_softmax_mean_accumulate: folds one member's logits into a running mean of softmax
 *     probabilities, mean += (softmax(l) - mean) / t for the t-th member (t = 1 writes softmax(l)), so
 *     T members need one probability buffer and never T volumes.
 *   i3_cpu_prob_uncertainty: one pass over probabilities [n, c, s]: normalized entropy
 *     H = -sum_c p_c log p_c / log C (0 log 0 = 0; 0 for C == 1), max probability and argmax (lowest
 *     index wins ties), the same outputs as i3_cpu_softmax_uncertainty but from probabilities.
 * Sums in double. Threads over voxels (the channel values of a voxel are s apart). */
#include "ops.h"

#include <math.h>

void i3_cpu_softmax_mean_accumulate(const float *logits, int64_t n, int64_t c, int64_t s, int64_t t,
                                    float *mean, int n_threads) {
    if (c <= 0 || t < 1) return;
    const double keep = (double)(t - 1) / (double)t, add = 1.0 / (double)t;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t v = 0; v < n * s; v++) {
        const int64_t i = v / s, j = v % s;
        const float *l = logits + i * c * s + j;
        float *m = mean + i * c * s + j;
        float top = l[0];
        for (int64_t k = 1; k < c; k++)
            if (l[k * s] > top) top = l[k * s];
        double z = 0.0;
        for (int64_t k = 0; k < c; k++) z += exp((double)l[k * s] - top);
        for (int64_t k = 0; k < c; k++) {
            const double p = exp((double)l[k * s] - top) / z;
            m[k * s] = (float)(t == 1 ? p : keep * m[k * s] + add * p);
        }
    }
}

void i3_cpu_prob_uncertainty(const float *probs, int64_t n, int64_t c, int64_t s, float *entropy, float *msp,
                             int32_t *argmax, int n_threads) {
    if (c <= 0) return;
    const double log_c = log((double)c);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t v = 0; v < n * s; v++) {
        const int64_t i = v / s, j = v % s;
        const float *p = probs + i * c * s + j;
        int64_t best = 0;
        double h = 0.0;
        for (int64_t k = 0; k < c; k++) {
            if (p[k * s] > p[best * s]) best = k;
            if (p[k * s] > 0.0f) h -= (double)p[k * s] * log((double)p[k * s]);
        }
        if (entropy) entropy[v] = c == 1 ? 0.0f : (float)(h / log_c);
        if (msp) msp[v] = p[best * s];
        if (argmax) argmax[v] = (int32_t)best;
    }
}
