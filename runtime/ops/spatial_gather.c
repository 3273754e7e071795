/* OCR's SpatialGather_Module (RITM isegm/model/modeling/ocr.py, scale 1): the soft object regions of
 * the auxiliary logits gather one feature vector per class,
 *   p[k, s] = exp(l[k, s] - max_s l[k, :]) / sum_s exp(...)      (softmax over all positions)
 *   y[c, k] = sum_s p[k, s] * feats[c, s].
 * Output [n, c, kc] (as NCDHW [n, c, kc, 1, 1], the layout the 1x1 convolutions after it take).
 * Cheap next to the network (one pass over the features per class), so the reference in double is the
 * only version. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>

void i3_cpu_spatial_gather_ref(const float *feats, const float *logits, int64_t n, int64_t c, int64_t kc, int64_t s,
                               float *y) {
    double *p = malloc((size_t)s * sizeof *p);
    if (!p) return; /* s doubles; the caller's arena is far larger, so this does not fail in practice */
    for (int64_t b = 0; b < n; b++)
        for (int64_t k = 0; k < kc; k++) {
            const float *l = logits + (b * kc + k) * s;
            float max = l[0];
            for (int64_t i = 1; i < s; i++) max = l[i] > max ? l[i] : max;
            double sum = 0.0;
            for (int64_t i = 0; i < s; i++) sum += p[i] = exp((double)l[i] - max);
            for (int64_t ch = 0; ch < c; ch++) {
                const float *f = feats + (b * c + ch) * s;
                double acc = 0.0;
                for (int64_t i = 0; i < s; i++) acc += p[i] * f[i];
                y[(b * c + ch) * kc + k] = (float)(acc / sum);
            }
        }
    free(p);
}
