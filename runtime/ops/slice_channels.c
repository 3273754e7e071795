/* Channel slice: y [n, count, s] = x[:, begin : begin + count, s]. Used to split a network input that
 * carries several tensors along channels (RITM's image and click maps). A copy per sample; memory bound,
 * so the plain version is the only one. */
#include "ops.h"

#include <string.h>

void i3_cpu_slice_channels(const float *x, i3_shape5 xs, const i3_slice_params *p, float *y) {
    const int64_t s = i3_shape5_spatial(xs);
    for (int64_t n = 0; n < xs.n; n++)
        memcpy(y + n * p->count * s, x + (n * xs.c + p->begin) * s, (size_t)(p->count * s) * sizeof(float));
}
