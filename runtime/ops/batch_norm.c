/* Batch norm (inference) folded into the preceding convolution at load time:
 *   w'[o, ...] = w[o, ...] * gamma[o] / sqrt(var[o] + eps)
 *   b'[o]      = (b[o] - mean[o]) * gamma[o] / sqrt(var[o] + eps) + beta[o]   (b = 0 when absent)
 * The factor is computed in double; w is updated in place, the folded bias goes to bias_out (which may
 * be b itself). */
#include "ops.h"

#include <math.h>

void i3_cpu_fold_batch_norm(float *w, int cout, int64_t per_out, const float *b, const float *gamma,
                            const float *beta, const float *mean, const float *var, float eps, float *bias_out) {
    for (int o = 0; o < cout; o++) {
        const double factor = (double)gamma[o] / sqrt((double)var[o] + (double)eps);
        float *wo = w + (int64_t)o * per_out;
        for (int64_t i = 0; i < per_out; i++) wo[i] = (float)(wo[i] * factor);
        bias_out[o] = (float)(((b ? (double)b[o] : 0.0) - mean[o]) * factor + beta[o]);
    }
}
