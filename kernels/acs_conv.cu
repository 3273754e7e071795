/* ACS convolution (ACSConv): a 2D kernel w[cout, cin, k, k] applied to a 3D volume, NCDHW f32. The
 * output channels split into axial / coronal / sagittal parts (i3_acs_split: cout/3 + (i < cout%3));
 * the three parts share the input and differ only in which two axes the taps run over:
 *   axial    (h, w): x[c, z*s,         y*s-p+a,   x*s-p+e]
 *   coronal  (d, w): x[c, z*s-p+a,     y*s,       x*s-p+e]
 *   sagittal (d, h): x[c, z*s-p+a,     y*s-p+e,   x*s]
 * then bias and activation. Reference: i3_cpu_acs_conv_ref (runtime/ops).
 *
 * Kernel versions:
 *   v1: one kernel for all three parts, one output element per thread (grid-stride); the part only
 *       changes the tap offsets (the input is read once per output, not copied per view). */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

struct AcsGeometry {
    int64_t n, cin, d, h, w;
    int64_t cout, od, oh, ow;
    int k, stride, pad;
    int64_t split0, split01;   /* first coronal channel, first sagittal channel */
};

__global__ void acs_conv_v1(const float *__restrict__ x, const float *__restrict__ w, const float *__restrict__ b,
                            AcsGeometry g, i3_act act, float *__restrict__ y) {
    int64_t total = g.n * g.cout * g.od * g.oh * g.ow;
    I3_GRID_STRIDE_LOOP(i, total) {
        int64_t ox = i % g.ow, oy = i / g.ow % g.oh, oz = i / (g.ow * g.oh) % g.od;
        int64_t o = i / (g.ow * g.oh * g.od) % g.cout, sample = i / (g.ow * g.oh * g.od * g.cout);
        int part = o < g.split0 ? 0 : o < g.split01 ? 1 : 2;
        /* Per part: the start coordinate and the step of tap indices a (first kernel axis) and e (second). */
        int64_t z = oz * g.stride, yy = oy * g.stride, xx = ox * g.stride;
        int64_t za = 0, ya = 0, xa = 0, ze = 0, ye = 0, xe = 0;
        if (part == 0) { yy -= g.pad; xx -= g.pad; ya = 1; xe = 1; }
        else if (part == 1) { z -= g.pad; xx -= g.pad; za = 1; xe = 1; }
        else { z -= g.pad; yy -= g.pad; za = 1; ye = 1; }
        float acc = b ? b[o] : 0.0f;
        for (int64_t c = 0; c < g.cin; c++) {
            const float *xc = x + (sample * g.cin + c) * g.d * g.h * g.w;
            const float *wc = w + (o * g.cin + c) * g.k * g.k;
            for (int a = 0; a < g.k; a++)
                for (int e = 0; e < g.k; e++) {
                    int64_t tz = z + za * a + ze * e, ty = yy + ya * a + ye * e, tx = xx + xa * a + xe * e;
                    if (tz < 0 || tz >= g.d || ty < 0 || ty >= g.h || tx < 0 || tx >= g.w) continue;
                    acc += __ldg(&wc[a * g.k + e]) * xc[(tz * g.h + ty) * g.w + tx];
                }
        }
        y[i] = act_apply(act, acc);
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(acs_conv)(const float *x, i3_shape5 xs, const float *w, const float *b,
                                const i3_acs_conv_params *p, float *y, i3_shape5 ys, void *stream) {
    int64_t third = p->cout / 3, rest = p->cout % 3;
    int64_t split0 = third + (rest > 0), split1 = third + (rest > 1);
    AcsGeometry g = {xs.n, xs.c, xs.d, xs.h, xs.w, ys.c, ys.d, ys.h, ys.w, p->k, p->stride, p->pad,
                     split0, split0 + split1};
    int64_t total = i3_shape5_numel(ys);
    if (total == 0) return 0;
    return (int)I3_LAUNCH(acs_conv_v1, grid_stride_blocks(total, 128), 128, 0, (cudaStream_t)stream, x, w, b, g,
                          p->act, y);
}
