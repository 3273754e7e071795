/* Average pooling with kernel == stride, no padding: the strided skip path of ResidualEncoderUNet's
 * BasicBlockD (torch AvgPool2d/3d(kernel=stride, stride=stride)). Cheap next to the convolutions
 * around it, so the reference is the only version. */
#include "ops.h"

i3_shape5 i3_avg_pool_out_shape(i3_shape5 x, const i3_avg_pool_params *p) {
    i3_shape5 y = {x.n, x.c, x.d / p->k[0], x.h / p->k[1], x.w / p->k[2]};
    return y;
}

void i3_cpu_avg_pool_ref(const float *x, i3_shape5 xs, const i3_avg_pool_params *p, float *y) {
    const i3_shape5 ys = i3_avg_pool_out_shape(xs, p);
    const float count = (float)(p->k[0] * p->k[1] * p->k[2]);
    for (int64_t nc = 0; nc < xs.n * xs.c; nc++) {
        const float *xp = x + nc * i3_shape5_spatial(xs);
        float *yp = y + nc * i3_shape5_spatial(ys);
        for (int64_t od = 0; od < ys.d; od++)
            for (int64_t oh = 0; oh < ys.h; oh++)
                for (int64_t ow = 0; ow < ys.w; ow++) {
                    float sum = 0.0f;
                    for (int kd = 0; kd < p->k[0]; kd++)
                        for (int kh = 0; kh < p->k[1]; kh++)
                            for (int kw = 0; kw < p->k[2]; kw++) {
                                const int64_t id = od * p->k[0] + kd, ih = oh * p->k[1] + kh, iw = ow * p->k[2] + kw;
                                sum += xp[(id * xs.h + ih) * xs.w + iw];
                            }
                    yp[(od * ys.h + oh) * ys.w + ow] = sum / count; /* as torch: divide, not multiply by 1/count */
                }
    }
}
