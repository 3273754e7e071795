/* The attention of OCR's ObjectAttentionBlock2D (RITM isegm/model/modeling/ocr.py, scale 1): every
 * position attends over the kc object regions,
 *   a[k] = softmax_k( ck^-1/2 * sum_c q[c, s] key[c, k] ),   y[cv, s] = sum_k a[k] value[cv, k].
 * The 1x1 conv + BN + ReLU stacks around it (f_pixel, f_object, f_down, f_up) are ordinary graph
 * convolutions. With one class (RITM: kc = 1) a == 1 and y is value broadcast, whatever q and key are.
 * Reference in double, threaded over positions from I3_PARALLEL_MIN_MACS on; kc is tiny, so this is the
 * only version. */
#include "ops.h"

#include <math.h>

void i3_cpu_object_attention_ref(const float *q, const float *key, const float *value, int64_t n, int64_t ck,
                                 int64_t cv, int64_t kc, int64_t s, float *y, int n_threads) {
    if (kc < 1 || kc > I3_OCR_MAX_CLASSES) return; /* the graph builder refuses other class counts */
    const double scale = 1.0 / sqrt((double)ck);
    for (int64_t b = 0; b < n; b++) {
        const float *qb = q + b * ck * s, *kb = key + b * ck * kc, *vb = value + b * cv * kc;
        float *yb = y + b * cv * s;
#pragma omp parallel for schedule(static) num_threads(n_threads) if (s * kc * (ck + cv) >= I3_PARALLEL_MIN_MACS)
        for (int64_t i = 0; i < s; i++) {
            double a[I3_OCR_MAX_CLASSES], max = -INFINITY, sum = 0.0;
            for (int64_t k = 0; k < kc; k++) {
                double dot = 0.0;
                for (int64_t c = 0; c < ck; c++) dot += (double)qb[c * s + i] * kb[c * kc + k];
                a[k] = dot * scale;
                max = a[k] > max ? a[k] : max;
            }
            for (int64_t k = 0; k < kc; k++) sum += a[k] = exp(a[k] - max);
            for (int64_t c = 0; c < cv; c++) {
                double acc = 0.0;
                for (int64_t k = 0; k < kc; k++) acc += a[k] * vb[c * kc + k];
                yb[c * s + i] = (float)(acc / sum);
            }
        }
    }
}
