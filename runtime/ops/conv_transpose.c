/* Transposed convolution with stride == kernel and no padding (nnU-Net's upsampling), on the CPU.
 *
 * Every input voxel v writes its own k[0] x k[1] x k[2] block of the output (blocks never overlap):
 *   y[o, v.d * kd + a, v.h * kh + b, v.w * kw + c] = bias[o] + sum_ci x[ci, v] * w[ci, o, a, b, c].
 *
 *   i3_cpu_conv_transpose_ref  that sum per output voxel, accumulated in double.
 *   i3_cpu_conv_transpose      one GEMM per tile of T input voxels, tmp[cout*kk, T] = w^T[cout*kk, cin]
 *                              * x[cin, T] (w read transposed in place, no copy), then a scatter of tmp
 *                              into the blocks with the bias added. Threads over tiles; each thread
 *                              has its own tmp (512 KB). */
#include "ops.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#define I3_CONVT_TILE_BYTES (512u << 10)

i3_shape5 i3_conv_transpose_out_shape(i3_shape5 x, const i3_conv_transpose_params *p) {
    i3_shape5 y = {x.n, p->cout, x.d * p->k[0], x.h * p->k[1], x.w * p->k[2]};
    return y;
}

void i3_cpu_conv_transpose_ref(const float *x, i3_shape5 xs, const float *w, const float *b,
                               const i3_conv_transpose_params *p, float *y) {
    const i3_shape5 ys = i3_conv_transpose_out_shape(xs, p);
    const int kd = p->k[0], kh = p->k[1], kw = p->k[2];
    for (int64_t n = 0; n < ys.n; n++)
        for (int64_t o = 0; o < ys.c; o++)
            for (int64_t od = 0; od < ys.d; od++)
                for (int64_t oh = 0; oh < ys.h; oh++)
                    for (int64_t ow = 0; ow < ys.w; ow++) {
                        const int64_t iz = od / kd, iy = oh / kh, ix = ow / kw;
                        const int a = (int)(od % kd), bb = (int)(oh % kh), c = (int)(ow % kw);
                        double acc = b ? b[o] : 0.0;
                        for (int64_t ci = 0; ci < xs.c; ci++)
                            acc += (double)x[(((n * xs.c + ci) * xs.d + iz) * xs.h + iy) * xs.w + ix] *
                                   w[(((ci * ys.c + o) * kd + a) * kh + bb) * kw + c];
                        y[(((n * ys.c + o) * ys.d + od) * ys.h + oh) * ys.w + ow] = (float)acc;
                    }
}

/* tmp row r = (o, a, b, c), column j = input voxel t0 + j  ->  its place in the output block. */
static void scatter_tile(const float *tmp, int64_t ld, int64_t t0, int64_t cols, i3_shape5 xs, i3_shape5 ys,
                         const int k[3], const float *b, float *y) {
    int64_t r = 0;
    for (int64_t o = 0; o < ys.c; o++) {
        const float bias = b ? b[o] : 0.0f;
        for (int a = 0; a < k[0]; a++)
            for (int bb = 0; bb < k[1]; bb++)
                for (int c = 0; c < k[2]; c++, r++) {
                    const float *src = tmp + r * ld;
                    for (int64_t j = 0; j < cols;) {
                        const int64_t t = t0 + j;
                        const int64_t ix = t % xs.w, iy = (t / xs.w) % xs.h, iz = t / (xs.w * xs.h);
                        const int64_t len = xs.w - ix < cols - j ? xs.w - ix : cols - j;
                        float *dst = y + ((o * ys.d + iz * k[0] + a) * ys.h + iy * k[1] + bb) * ys.w + ix * k[2] + c;
                        for (int64_t q = 0; q < len; q++) dst[q * k[2]] = src[j + q] + bias;
                        j += len;
                    }
                }
    }
}

void i3_cpu_conv_transpose(const float *x, i3_shape5 xs, const float *w, const float *b,
                           const i3_conv_transpose_params *p, float *y, int n_threads) {
    const i3_shape5 ys = i3_conv_transpose_out_shape(xs, p);
    const int64_t s_in = i3_shape5_spatial(xs), s_out = i3_shape5_spatial(ys);
    const int64_t rows = ys.c * p->k[0] * p->k[1] * p->k[2];
    if (s_in == 0 || rows == 0 || xs.n == 0) return;
    int64_t t = (int64_t)I3_CONVT_TILE_BYTES / (int64_t)(sizeof(float) * rows);
    const int64_t per_thread = (xs.n * s_in + n_threads - 1) / n_threads; /* small inputs: one tile each */
    t = t > per_thread ? per_thread : t;
    t = t < 16 ? 16 : t > s_in ? s_in : t;
    const int64_t tiles = (s_in + t - 1) / t;

    float *tmp_all = malloc((size_t)n_threads * (size_t)(rows * t) * sizeof(float));
    if (!tmp_all) { /* no memory for the tiles: still give the right answer, slowly */
        i3_cpu_conv_transpose_ref(x, xs, w, b, p, y);
        return;
    }

#pragma omp parallel num_threads(n_threads)
    {
        omp_set_num_threads(1); /* GEMMs below run on this thread only (see conv.c) */
        float *tmp = tmp_all + (size_t)omp_get_thread_num() * (size_t)(rows * t);
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < xs.n * tiles; task++) {
            const int64_t n = task / tiles, t0 = (task % tiles) * t;
            const int64_t cols = s_in - t0 < t ? s_in - t0 : t;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rows, (int)cols, (int)xs.c, 1.0f, w, (int)rows,
                        x + n * xs.c * s_in + t0, (int)s_in, 0.0f, tmp, (int)t);
            scatter_tile(tmp, t, t0, cols, xs, ys, p->k, b, y + n * ys.c * s_out);
        }
    }
    free(tmp_all);
}
