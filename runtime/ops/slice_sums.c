/* Per-slice sums of a map [d, h, w] along each axis, accumulated in double:
 *   sum_d[z] = sum_{y,x} m[z, y, x],  sum_h[y] = sum_{z,x} m[z, y, x],  sum_w[x] = sum_{z,y} m[z, y, x].
 * Used to pick the slices with the most uncertainty (i3Deep). One pass over the map. */
#include "ops.h"

void i3_cpu_slice_sums(const float *x, int64_t d, int64_t h, int64_t w, double *sum_d, double *sum_h,
                       double *sum_w) {
    if (sum_d) for (int64_t z = 0; z < d; z++) sum_d[z] = 0.0;
    if (sum_h) for (int64_t y = 0; y < h; y++) sum_h[y] = 0.0;
    if (sum_w) for (int64_t i = 0; i < w; i++) sum_w[i] = 0.0;
    for (int64_t z = 0; z < d; z++)
        for (int64_t y = 0; y < h; y++) {
            const float *row = x + (z * h + y) * w;
            double row_sum = 0.0;
            for (int64_t i = 0; i < w; i++) {
                row_sum += row[i];
                if (sum_w) sum_w[i] += row[i];
            }
            if (sum_d) sum_d[z] += row_sum;
            if (sum_h) sum_h[y] += row_sum;
        }
}
