/* ACS convolution (M3DV/ACSConv, see shared notes snc-ritm-acs.md section 2): a 2D kernel
 * w [cout, cin, k, k] applied to a 3D volume. Output channels are split (axial, coronal, sagittal),
 * split[i] = cout / 3 + (i < cout % 3), and each part convolves over two axes:
 *   axial    kernel rows -> h, cols -> w      coronal  rows -> d, cols -> w      sagittal rows -> d, cols -> h
 * Stride s applies to all three axes; padding p on the two kernel axes. Every axis has the 3D output
 * length (n + 2p - k) / s + 1, and the kernel-less axis reads the centre tap of the 3D window, input
 * index s * o + k / 2 - p (zero outside), as ACSConv's pad-and-slice route does; with "same" padding
 * (p = k / 2, all of RITM's convs) that is s * o. (ACSConv takes a 1-tap shortcut instead when that
 * length equals n or n / 2; it differs from the centre tap only when p != k / 2.)
 *
 *   i3_cpu_acs_conv_ref  the sum per output voxel, accumulated in double (the test oracle).
 *   i3_cpu_acs_conv      each part is a 3D convolution whose kernel is the 2D one laid on the part's two
 *                        axes with size 1 on the third: [split, cin, 1, k, k], [split, cin, k, 1, k],
 *                        [split, cin, k, k, 1], which is the memory layout of the part's rows of w as they
 *                        are. The kernel-less axis takes the centre tap, so this needs an odd k and
 *                        p >= k/2 (every converted network); other paddings (only ACSConv's own tests use
 *                        them) run the reference. Where the direct path applies (ops/conv.c: cin >= 8, or
 *                        cout >= 16 on a 3D window) the three parts run as one direct convolution
 *                        (i3_cpu_conv_parts) over the k x k x k window: one channels-last copy of the input
 *                        serves all three, each part's kernel offset to its centre tap; otherwise three
 *                        i3_cpu_conv calls (padding p - k/2 on the kernel-less axis; parts of fewer than
 *                        I3_PARALLEL_MIN_MACS multiply-adds on one thread).
 *                        bench/bench_ops.c times both on the HRNet's shapes (docs/performance.md). */
#include "ops.h"

void i3_acs_split(int cout, int split[3]) {
    for (int i = 0; i < 3; i++) split[i] = cout / 3 + (i < cout % 3 ? 1 : 0);
}

static int64_t acs_out_len(int64_t in, const i3_acs_conv_params *p) {
    int64_t span = in + 2 * (int64_t)p->pad - p->k;
    return span < 0 ? 0 : span / p->stride + 1;
}

i3_shape5 i3_acs_conv_out_shape(i3_shape5 x, const i3_acs_conv_params *p) {
    i3_shape5 y = {x.n, p->cout, acs_out_len(x.d, p), acs_out_len(x.h, p), acs_out_len(x.w, p)};
    return y;
}

void i3_cpu_acs_conv_ref(const float *x, i3_shape5 xs, const float *w, const float *b,
                         const i3_acs_conv_params *p, float *y) {
    const i3_shape5 ys = i3_acs_conv_out_shape(xs, p);
    const int k = p->k, s = p->stride, pad = p->pad;
    int split[3];
    i3_acs_split(p->cout, split);
    for (int64_t n = 0; n < ys.n; n++)
        for (int64_t o = 0; o < ys.c; o++) {
            const int part = o < split[0] ? 0 : o < split[0] + split[1] ? 1 : 2;
            for (int64_t od = 0; od < ys.d; od++)
                for (int64_t oh = 0; oh < ys.h; oh++)
                    for (int64_t ow = 0; ow < ys.w; ow++) {
                        double acc = b ? b[o] : 0.0;
                        for (int64_t ci = 0; ci < xs.c; ci++)
                            for (int u = 0; u < k; u++)
                                for (int v = 0; v < k; v++) {
                                    /* window start on every axis, then the tap each axis takes */
                                    int64_t iz = od * s - pad, iy = oh * s - pad, ix = ow * s - pad;
                                    if (part == 0) iz += k / 2, iy += u, ix += v;
                                    if (part == 1) iz += u, iy += k / 2, ix += v;
                                    if (part == 2) iz += u, iy += v, ix += k / 2;
                                    if (iz < 0 || iz >= xs.d || iy < 0 || iy >= xs.h || ix < 0 || ix >= xs.w)
                                        continue;
                                    acc += (double)x[(((n * xs.c + ci) * xs.d + iz) * xs.h + iy) * xs.w + ix] *
                                           w[((o * xs.c + ci) * k + u) * k + v];
                                }
                        y[(((n * ys.c + o) * ys.d + od) * ys.h + oh) * ys.w + ow] = i3_act_apply(p->act, (float)acc);
                    }
        }
}

/* ---- fast path: three 3D convolutions ---------------------------------------------------------- */

static int acs_parts_are_convs(const i3_acs_conv_params *p) { return p->k % 2 == 1 && p->pad >= p->k / 2; }

/* The 3D convolution computing part `part` (0 axial, 1 coronal, 2 sagittal) with `cout` channels. */
static i3_conv_params acs_part_conv(const i3_acs_conv_params *p, int part, int cout) {
    i3_conv_params c = {cout, {p->k, p->k, p->k}, {p->stride, p->stride, p->stride}, {p->pad, p->pad, p->pad}, p->act};
    c.k[part] = 1, c.pad[part] = p->pad - p->k / 2;
    return c;
}

/* The k x k x k window all three parts read, and the parts as the direct convolution path takes them: each
 * part's kernel is size 1 on its kernel-less axis and sits at that axis's centre tap (offset k / 2); parts
 * without channels (cout < 3) are left out. Returns the number of parts. */
static int acs_direct_parts(const i3_acs_conv_params *p, const float *w, const float *b, int64_t cin,
                            i3_conv_params *window, i3_conv_part parts[3]) {
    *window = (i3_conv_params){p->cout, {p->k, p->k, p->k}, {p->stride, p->stride, p->stride},
                               {p->pad, p->pad, p->pad}, p->act};
    int split[3], n = 0;
    i3_acs_split(p->cout, split);
    for (int part = 0, first = 0; part < 3; first += split[part], part++) {
        if (split[part] == 0) continue;
        i3_conv_part q = {first, split[part], {p->k, p->k, p->k}, {0, 0, 0}, NULL, b ? b + first : NULL};
        q.k[part] = 1, q.shift[part] = p->k / 2;
        q.w = w ? w + (int64_t)first * cin * p->k * p->k : NULL;
        parts[n++] = q;
    }
    return n;
}

size_t i3_cpu_acs_conv_scratch_bytes(i3_shape5 xs, const i3_acs_conv_params *p, int n_threads) {
    if (!acs_parts_are_convs(p)) return 0;
    i3_conv_params window;
    i3_conv_part parts[3];
    const int n_parts = acs_direct_parts(p, NULL, NULL, xs.c, &window, parts);
    size_t bytes = 0;
    if (i3_cpu_conv_parts(NULL, xs, &window, parts, n_parts, NULL, NULL, &bytes, n_threads)) return bytes;
    int split[3];
    i3_acs_split(p->cout, split);
    xs.n = 1; /* otherwise one part and one sample at a time */
    for (int part = 0; part < 3; part++) {
        const i3_conv_params c = acs_part_conv(p, part, split[part]);
        const size_t part_bytes = split[part] ? i3_cpu_conv_scratch_bytes(xs, &c, n_threads) : 0;
        bytes = part_bytes > bytes ? part_bytes : bytes;
    }
    return bytes;
}

void i3_cpu_acs_conv(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_acs_conv_params *p,
                     float *y, void *scratch, int n_threads) {
    if (!acs_parts_are_convs(p)) {
        i3_cpu_acs_conv_ref(x, xs, w, b, p, y);
        return;
    }
    i3_conv_params window;
    i3_conv_part parts[3];
    const int n_parts = acs_direct_parts(p, w, b, xs.c, &window, parts);
    if (i3_cpu_conv_parts(x, xs, &window, parts, n_parts, y, scratch, NULL, n_threads)) return; /* one slab */
    const i3_shape5 ys = i3_acs_conv_out_shape(xs, p), one = {1, xs.c, xs.d, xs.h, xs.w};
    const int64_t in_sample = xs.c * i3_shape5_spatial(xs), out_spatial = i3_shape5_spatial(ys);
    const int64_t per_out = xs.c * p->k * p->k;
    /* most ACS layers of an HRNet on a small volume are tiny: threads only where there is work to split */
    const int threads = per_out * out_spatial * p->cout / 3 >= I3_PARALLEL_MIN_MACS ? n_threads : 1;
    int split[3];
    i3_acs_split(p->cout, split);
    for (int64_t n = 0; n < xs.n; n++)
        for (int part = 0, first = 0; part < 3; first += split[part], part++) {
            if (split[part] == 0) continue;
            const i3_conv_params c = acs_part_conv(p, part, split[part]);
            i3_cpu_conv(x + n * in_sample, one, w + first * per_out, b ? b + first : NULL, &c,
                        y + (n * ys.c + first) * out_spatial, scratch, threads);
        }
}
