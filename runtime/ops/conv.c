/* Convolution over (d, h, w) on the CPU (2D networks use d = 1 and kernels of depth 1).
 *
 *   i3_cpu_conv_ref  direct transcription of the sum, accumulated in double (the reference).
 *   i3_cpu_conv      fast path, channels-first im2col + GEMM (OpenBLAS):
 *                    - the output voxels of one sample are cut into tiles of T columns; a thread builds
 *                      the im2col tile col[K, T] (K = cin * kd * kh * kw) in its scratch and runs
 *                      y[cout, T] = w[cout, K] * col[K, T] straight into the output (ldc = spatial size);
 *                    - 1x1x1 stride-1 unpadded convolutions skip im2col: one GEMM on the input itself;
 *                    - bias and activation are applied to the tile while it is still in cache;
 *                    - threads: OpenMP over tiles with the caller's thread count. Each GEMM runs on one
 *                      thread (OpenBLAS's OpenMP build does so inside a parallel region; for a team of
 *                      one the region sets its own thread count to 1, see conv_parallel_begin). */
#include "ops.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* Scratch budget per thread for the im2col tile (1 MB measured as good as 512 KB..4 MB on the 2-core
 * dev machine, 8 MB clearly worse); T never drops below I3_CONV_MIN_TILE columns so that the GEMM
 * stays efficient for very deep K (320 x 27 = 8640 rows: 2.2 MB). */
#define I3_CONV_TILE_BYTES (1u << 20)
#define I3_CONV_MIN_TILE 64

static int64_t out_len(int64_t in, int k, int stride, int pad) {
    int64_t span = in + 2 * (int64_t)pad - k;
    return span < 0 ? 0 : span / stride + 1;
}

/* ceil(a / b) for b > 0 and any sign of a. */
static int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

i3_shape5 i3_conv_out_shape(i3_shape5 x, const i3_conv_params *p) {
    i3_shape5 y = {x.n, p->cout, out_len(x.d, p->k[0], p->stride[0], p->pad[0]),
                   out_len(x.h, p->k[1], p->stride[1], p->pad[1]), out_len(x.w, p->k[2], p->stride[2], p->pad[2])};
    return y;
}

void i3_cpu_conv_ref(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                     float *y) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    const int kd = p->k[0], kh = p->k[1], kw = p->k[2];
    for (int64_t n = 0; n < ys.n; n++)
        for (int64_t o = 0; o < ys.c; o++)
            for (int64_t od = 0; od < ys.d; od++)
                for (int64_t oh = 0; oh < ys.h; oh++)
                    for (int64_t ow = 0; ow < ys.w; ow++) {
                        double acc = b ? b[o] : 0.0;
                        for (int64_t ci = 0; ci < xs.c; ci++)
                            for (int a = 0; a < kd; a++)
                                for (int bb = 0; bb < kh; bb++)
                                    for (int c = 0; c < kw; c++) {
                                        int64_t iz = od * p->stride[0] - p->pad[0] + a;
                                        int64_t iy = oh * p->stride[1] - p->pad[1] + bb;
                                        int64_t ix = ow * p->stride[2] - p->pad[2] + c;
                                        if (iz < 0 || iz >= xs.d || iy < 0 || iy >= xs.h || ix < 0 || ix >= xs.w)
                                            continue;
                                        acc += (double)x[(((n * xs.c + ci) * xs.d + iz) * xs.h + iy) * xs.w + ix] *
                                               w[(((o * xs.c + ci) * kd + a) * kh + bb) * kw + c];
                                    }
                        y[(((n * ys.c + o) * ys.d + od) * ys.h + oh) * ys.w + ow] = i3_act_apply(p->act, (float)acc);
                    }
}

/* ---- fast path ------------------------------------------------------------------------------- */

static int is_pointwise(const i3_conv_params *p) {
    for (int a = 0; a < 3; a++)
        if (p->k[a] != 1 || p->stride[a] != 1 || p->pad[a] != 0) return 0;
    return 1;
}

/* Columns per tile: as many as the scratch budget allows, at least I3_CONV_MIN_TILE, then evened out
 * so that tiles have equal size and every thread gets at least one. */
static int64_t conv_tile_cols(i3_shape5 xs, const i3_conv_params *p, int n_threads) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    const int64_t s = i3_shape5_spatial(ys);
    if (s == 0) return 0;
    const int64_t k_rows = xs.c * p->k[0] * p->k[1] * p->k[2];
    int64_t t = is_pointwise(p) ? 4096 : (int64_t)I3_CONV_TILE_BYTES / (int64_t)(sizeof(float) * (k_rows ? k_rows : 1));
    t = clamp64(t, I3_CONV_MIN_TILE, s);
    int64_t tiles = ceil_div(s, t);
    const int64_t min_tiles = ceil_div(n_threads, ys.n > 0 ? ys.n : 1);
    if (tiles < min_tiles) tiles = min_tiles < s ? min_tiles : s;
    return ceil_div(s, tiles);
}

size_t i3_cpu_conv_scratch_bytes(i3_shape5 xs, const i3_conv_params *p, int n_threads) {
    if (is_pointwise(p)) return 0;
    const int64_t k_rows = xs.c * p->k[0] * p->k[1] * p->k[2];
    return (size_t)n_threads * (size_t)k_rows * (size_t)conv_tile_cols(xs, p, n_threads) * sizeof(float);
}

/* Copies one run of output voxels along w (len voxels from (od, oh, ow)) for kernel row r = (ci, a, b, c)
 * to dst: input index ix = (ow + j) * sw - pad + c, zero outside [0, w). */
static void im2col_run(const float *src_row, int64_t w_in, int64_t ow, int64_t len, int sw, int pad, int c,
                       float *dst) {
    int64_t lo, hi; /* valid j range */
    if (sw == 1) {
        lo = clamp64(pad - c - ow, 0, len);
        hi = clamp64(w_in + pad - c - ow, lo, len);
    } else {
        lo = clamp64(ceil_div(pad - c, sw) - ow, 0, len);
        hi = clamp64(ceil_div(w_in + pad - c, sw) - ow, lo, len);
    }
    for (int64_t j = 0; j < lo; j++) dst[j] = 0.0f;
    const float *s0 = src_row + (ow + lo) * sw - pad + c;
    if (sw == 1)
        for (int64_t j = lo; j < hi; j++) dst[j] = s0[j - lo];
    else
        for (int64_t j = lo; j < hi; j++) dst[j] = s0[(j - lo) * sw];
    for (int64_t j = hi; j < len; j++) dst[j] = 0.0f;
}

/* col[r * ld + j] = input value seen by kernel row r = (ci, a, b, c) at output voxel t0 + j (0 in the
 * padding). Walks the tile as runs along w (one (od, oh) each), and for each run every kernel row. */
static void im2col_tile(const float *x, i3_shape5 xs, const i3_conv_params *p, i3_shape5 ys, int64_t t0,
                        int64_t cols, float *col, int64_t ld) {
    const int kd = p->k[0], kh = p->k[1], kw = p->k[2];
    for (int64_t t = t0; t < t0 + cols;) {
        const int64_t ow = t % ys.w, oh = (t / ys.w) % ys.h, od = t / (ys.w * ys.h);
        const int64_t len = ys.w - ow < t0 + cols - t ? ys.w - ow : t0 + cols - t;
        float *dst = col + (t - t0);
        t += len;
        for (int64_t ci = 0; ci < xs.c; ci++)
            for (int a = 0; a < kd; a++) {
                const int64_t iz = od * p->stride[0] - p->pad[0] + a;
                for (int bb = 0; bb < kh; bb++, dst += kw * ld) {
                    const int64_t iy = oh * p->stride[1] - p->pad[1] + bb;
                    if (iz < 0 || iz >= xs.d || iy < 0 || iy >= xs.h) {
                        for (int c = 0; c < kw; c++) memset(dst + c * ld, 0, (size_t)len * sizeof(float));
                        continue;
                    }
                    const float *src_row = x + ((ci * xs.d + iz) * xs.h + iy) * xs.w;
                    for (int c = 0; c < kw; c++)
                        im2col_run(src_row, xs.w, ow, len, p->stride[2], p->pad[2], c, dst + c * ld);
                }
            }
    }
}

/* y[o * ld + j] = act(y[o * ld + j] + b[o]) for a [rows, cols] block. */
static void bias_act_block(float *y, int64_t ld, int64_t rows, int64_t cols, const float *b, i3_act act) {
    if (!b && act.kind == I3_ACT_NONE) return;
    for (int64_t o = 0; o < rows; o++) {
        float *row = y + o * ld;
        const float bias = b ? b[o] : 0.0f;
        for (int64_t j = 0; j < cols; j++) row[j] = i3_act_apply(act, row[j] + bias);
    }
}

void i3_cpu_conv(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                 float *y, void *scratch, int n_threads) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    const int64_t s_out = i3_shape5_spatial(ys), s_in = i3_shape5_spatial(xs);
    const int64_t k_rows = xs.c * p->k[0] * p->k[1] * p->k[2];
    const int64_t t = conv_tile_cols(xs, p, n_threads);
    if (t == 0 || ys.n == 0 || ys.c == 0) return;
    const int64_t tiles = ceil_div(s_out, t);
    const int pointwise = is_pointwise(p);

#pragma omp parallel num_threads(n_threads)
    {
        /* In a team of one, omp_in_parallel() is false and OpenBLAS would start its own threads:
         * this region's thread count is what every GEMM below may use. */
        omp_set_num_threads(1);
        float *col = pointwise ? NULL : (float *)scratch + (size_t)omp_get_thread_num() * (size_t)(k_rows * t);
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < ys.n * tiles; task++) {
            const int64_t n = task / tiles, t0 = (task % tiles) * t;
            const int64_t cols = s_out - t0 < t ? s_out - t0 : t;
            const float *xn = x + n * xs.c * s_in;
            float *yt = y + n * ys.c * s_out + t0;
            if (pointwise) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ys.c, (int)cols, (int)xs.c, 1.0f, w,
                            (int)xs.c, xn + t0, (int)s_in, 0.0f, yt, (int)s_out);
            } else {
                im2col_tile(xn, xs, p, ys, t0, cols, col, t);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ys.c, (int)cols, (int)k_rows, 1.0f, w,
                            (int)k_rows, col, (int)t, 0.0f, yt, (int)s_out);
            }
            bias_act_block(yt, s_out, ys.c, cols, b, p->act);
        }
    }
}
