/* A 3D convolution's sizes as the convolution kernels take them (kernels/conv.cu,
 * kernels/conv_tensor_core.cu). */
#ifndef I3RT_KERNELS_CONV_GEOMETRY_H
#define I3RT_KERNELS_CONV_GEOMETRY_H

#include "device.h"

namespace I3_NS {

struct ConvGeometry {
    int64_t n, cin, d, h, w;      /* input */
    int64_t cout, od, oh, ow;     /* output */
    int k[3], stride[3], pad[3];
};

static inline ConvGeometry conv_geometry(i3_shape5 xs, const i3_conv_params *p, i3_shape5 ys) {
    ConvGeometry g = {xs.n, xs.c, xs.d, xs.h, xs.w, ys.c, ys.d, ys.h, ys.w, {0}, {0}, {0}};
    for (int i = 0; i < 3; i++) {
        g.k[i] = p->k[i];
        g.stride[i] = p->stride[i];
        g.pad[i] = p->pad[i];
    }
    return g;
}

}  // namespace I3_NS

#endif /* I3RT_KERNELS_CONV_GEOMETRY_H */
