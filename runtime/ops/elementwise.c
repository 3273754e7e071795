/* Elementwise ops on the CPU: activation, residual add (+ activation), channel concat.
 * One implementation each (they are memory bound; the plain loop is the fast path), threaded over
 * the values from I3_PARALLEL_MIN_VALUES on (below, one thread: the HRNet's adds on small volumes spent
 * most of their time in OpenMP's barrier). In place allowed for activation and add. */
#include "ops.h"

#include <string.h>

void i3_cpu_activation(const float *x, int64_t n, i3_act act, float *y, int n_threads) {
#pragma omp parallel for simd num_threads(n_threads) schedule(static) if (n >= I3_PARALLEL_MIN_VALUES)
    for (int64_t i = 0; i < n; i++) y[i] = i3_act_apply(act, x[i]);
}

void i3_cpu_add(const float *a, const float *b, int64_t n, i3_act act, float *y, int n_threads) {
#pragma omp parallel for simd num_threads(n_threads) schedule(static) if (n >= I3_PARALLEL_MIN_VALUES)
    for (int64_t i = 0; i < n; i++) y[i] = i3_act_apply(act, a[i] + b[i]);
}

void i3_cpu_concat(const float *a, int64_t ca, const float *b, int64_t cb, int64_t n, int64_t s, float *y) {
    for (int64_t i = 0; i < n; i++) {
        float *yi = y + i * (ca + cb) * s;
        if (a) memcpy(yi, a + i * ca * s, (size_t)(ca * s) * sizeof(float)); /* NULL: in place already */
        if (b) memcpy(yi + ca * s, b + i * cb * s, (size_t)(cb * s) * sizeof(float));
    }
}
