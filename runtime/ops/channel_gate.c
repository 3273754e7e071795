/* Channel gate of Slice-and-Conquer's mask-attention module (docs/snc.md, "Mask attention"):
 * y[n, c, s] = x[n, c, s] * 2 sigmoid(g[n, c]), g [n, c, 1, 1, 1]. The factor 2 makes a zero gate the
 * identity, so a module whose last layer starts at zero leaves the transferred 2D network unchanged.
 * Memory bound: the plain loop is the fast path; in place allowed (y == x). */
#include "ops.h"

#include <math.h>

void i3_cpu_channel_gate(const float *x, i3_shape5 xs, const float *gate, float *y, int n_threads) {
    const int64_t planes = xs.n * xs.c, s = i3_shape5_spatial(xs);
#pragma omp parallel for schedule(static) num_threads(n_threads) if (planes * s >= I3_PARALLEL_MIN_VALUES)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float f = 2.0f / (1.0f + expf(-gate[pl]));
        for (int64_t i = 0; i < s; i++) y[pl * s + i] = x[pl * s + i] * f;
    }
}
