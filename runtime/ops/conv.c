/* Convolution over (d, h, w) on the CPU (2D networks use d = 1 and kernels of depth 1).
 *
 *   i3_cpu_conv_ref  direct transcription of the sum, accumulated in double (the reference).
 *   i3_cpu_conv      fast path, one of three strategies, chosen from the shapes alone:
 *     direct   stride 1 along w, w out >= 24, cin >= 8 (the big nnU-Net layers): a task (sample, output
 *              depth slice, band of output rows, group of output channels) copies the zero-padded
 *              input rows it needs into a slab (about 2 MB), packs the weights of 4 output channels
 *              and runs a register-blocked kernel: 4 channels x 24 voxels along w = 12 accumulators
 *              of 8 floats, FMAs over (ci, kernel taps) (GCC/Clang vector extensions, AVX2 + FMA
 *              with -march=x86-64-v3). Rows are covered by blocks of 24 then blocks of 8, the last
 *              one overlapping the previous when w out is not a multiple of 8.
 *     GEMM     1x1x1 stride 1 unpadded: y[cout, s] = w[cout, cin] * x[cin, s], tiles of s, no copy.
 *     im2col   everything else: tiles of T output voxels, col[K, T] (K = cin * kd * kh * kw) built in
 *              the thread's scratch, then y[cout, T] = w[cout, K] * col[K, T] written straight into
 *              the output (ldc = spatial size); bias and activation applied while the tile is in cache.
 *   Threads: OpenMP with the caller's thread count. Each GEMM runs on one thread (OpenBLAS's OpenMP
 *   build does so inside a parallel region; a team of one sets its own thread count to 1).
 *   Measured on the 2-core dev machine, one thread, CPU time: direct 40-50 GFLOP/s, im2col + GEMM
 *   30-47, PyTorch 2.x (oneDNN) F.conv3d 40-88 on the same shapes (bench/bench_ops.c times ours). */
#include "ops.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* Scratch budget per thread for the im2col tile (1 MB measured as good as 512 KB..4 MB on the 2-core
 * dev machine, 8 MB clearly worse); T never drops below I3_CONV_MIN_TILE columns so that the GEMM
 * stays efficient for very deep K (320 x 27 = 8640 rows: 2.2 MB). */
#define I3_CONV_TILE_BYTES (1u << 20)
#define I3_CONV_MIN_TILE 64
/* Per-thread slab budget of the direct path (zero-padded input rows of one band of output rows). */
#define I3_CONV_DIRECT_BYTES (2u << 20)

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

/* ---- direct path: zero-padded slab + register-blocked kernel (GCC/Clang vector extensions) ------- */

typedef float v8f __attribute__((vector_size(32)));
#define DOC 4  /* output channels per register block */
#define DVEC 3 /* vectors of 8 output voxels (along w) per register block: 12 accumulators */

static inline v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

typedef struct {
    int64_t band;       /* output rows (along h) per task */
    int64_t hb, wp;     /* slab plane: input rows of a band ((band - 1) * stride_h + kh), w + 2 pad + 8 slack */
    int64_t slab, pack; /* floats per thread: slab [cin][kd][hb][wp], packed weights [cin][taps][DOC] */
    int64_t bands, groups; /* tasks per depth slice: row bands x output-channel groups */
} direct_plan;

/* The direct path serves stride-1 rows along w that hold at least one full block, with enough input
 * channels for the inner loop; everything else goes through im2col. Row bands keep the slab near
 * I3_CONV_DIRECT_BYTES and, with channel groups, give every thread work even for 2D inputs. */
static int direct_plan_of(i3_shape5 xs, const i3_conv_params *p, int n_threads, direct_plan *dp) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    if (p->stride[2] != 1 || ys.w < 8 * DVEC || xs.c < 8 || is_pointwise(p) || i3_shape5_numel(ys) == 0) return 0;
    const int kd = p->k[0], kh = p->k[1], sh = p->stride[1];
    dp->wp = xs.w + 2 * (int64_t)p->pad[2] + 8;
    const int64_t row_floats = xs.c * kd * dp->wp;
    dp->band = clamp64(((int64_t)I3_CONV_DIRECT_BYTES / (int64_t)sizeof(float) / row_floats - kh) / sh + 1, 1, ys.h);
    dp->bands = ceil_div(ys.h, dp->band);
    dp->band = ceil_div(ys.h, dp->bands); /* even bands */
    dp->hb = (dp->band - 1) * sh + kh;
    dp->slab = row_floats * dp->hb;
    dp->pack = xs.c * kd * kh * p->k[2] * DOC;
    const int64_t blocks = ceil_div(ys.c, DOC), tasks = ys.n * ys.d * dp->bands;
    dp->groups = clamp64(ceil_div(4 * (int64_t)n_threads, tasks), 1, blocks);
    return 1;
}

/* The zero-padded input of output rows oh0 .. oh0 + band - 1 of depth slice od: [cin][kd][hb][wp],
 * slab row r holding input row oh0 * stride_h - pad_h + r (w shifted right by pad_w). */
static void build_slab(const float *x, i3_shape5 xs, const i3_conv_params *p, int64_t od, int64_t oh0,
                       const direct_plan *dp, float *slab) {
    const int kd = p->k[0];
    const int64_t iz0 = od * p->stride[0] - p->pad[0], iy0 = oh0 * p->stride[1] - p->pad[1];
    const int64_t hb = dp->hb, wp = dp->wp, left = p->pad[2];
    for (int64_t ci = 0; ci < xs.c; ci++)
        for (int a = 0; a < kd; a++) {
            float *plane = slab + (ci * kd + a) * hb * wp;
            const int64_t iz = iz0 + a;
            for (int64_t r = 0; r < hb; r++) {
                float *dst = plane + r * wp;
                const int64_t iy = iy0 + r;
                if (iz < 0 || iz >= xs.d || iy < 0 || iy >= xs.h) {
                    memset(dst, 0, (size_t)wp * sizeof(float));
                    continue;
                }
                memset(dst, 0, (size_t)left * sizeof(float));
                memcpy(dst + left, x + ((ci * xs.d + iz) * xs.h + iy) * xs.w, (size_t)xs.w * sizeof(float));
                memset(dst + left + xs.w, 0, (size_t)(wp - left - xs.w) * sizeof(float));
            }
        }
}

/* wpack[ci][tap][r] = w[o + r, ci, tap] for r < oc (0 beyond), in the order the kernel reads it. */
static void pack_weights(const float *w, int64_t cin, int64_t taps, int64_t o, int oc, float *wpack) {
    for (int64_t t = 0; t < taps; t++)
        for (int64_t ci = 0; ci < cin; ci++)
            for (int r = 0; r < DOC; r++)
                wpack[(ci * taps + t) * DOC + r] = r < oc ? w[((o + r) * cin + ci) * taps + t] : 0.0f;
}

/* acc[r][v] = sum over input channels and taps for output channel r of the block and output voxels
 * col0 + 8 v .. col0 + 8 v + 7 of the slab row row0 (the slab is padded: no bounds checks). */
static inline __attribute__((always_inline)) void direct_block(const float *slab, const float *wpack, int64_t cin,
                                                               const int k[3], int64_t hb, int64_t wp, int64_t row0,
                                                               int64_t col0, const int vecs, v8f acc[DOC][DVEC]) {
    for (int r = 0; r < DOC; r++)
        for (int v = 0; v < vecs; v++) acc[r][v] = (v8f){0};
    const int64_t cs = k[0] * hb * wp;
    const float *wt = wpack;
    const float *base = slab + row0 * wp + col0;
    for (int64_t ci = 0; ci < cin; ci++, base += cs)
        for (int a = 0; a < k[0]; a++)
            for (int b = 0; b < k[1]; b++) {
                const float *src = base + (a * hb + b) * wp;
                for (int c = 0; c < k[2]; c++, wt += DOC) {
                    v8f in[DVEC];
                    for (int v = 0; v < vecs; v++) in[v] = load8(src + c + 8 * v);
                    for (int r = 0; r < DOC; r++) {
                        const float s = wt[r];
                        const v8f wv = {s, s, s, s, s, s, s, s};
                        for (int v = 0; v < vecs; v++) acc[r][v] += wv * in[v];
                    }
                }
            }
}

static void store_block(v8f acc[DOC][DVEC], int vecs, int oc, float *y0, int64_t ystride, int64_t ow0,
                        const float *bias, i3_act act) {
    for (int r = 0; r < oc; r++)
        for (int v = 0; v < vecs; v++) {
            float t[8];
            memcpy(t, &acc[r][v], sizeof t);
            for (int j = 0; j < 8; j++) y0[r * ystride + ow0 + 8 * v + j] = i3_act_apply(act, t[j] + bias[r]);
        }
}

/* Threads over (sample, output depth slice, row band, channel group): each task builds the slab of
 * its band, then per block of DOC output channels packs their weights and sweeps the band's rows. */
static void conv_direct(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                        const direct_plan *dp, float *y, float *scratch, int n_threads) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    const int64_t taps = (int64_t)p->k[0] * p->k[1] * p->k[2], s_out = i3_shape5_spatial(ys);
    const int64_t blocks = ceil_div(ys.c, DOC), per_group = ceil_div(blocks, dp->groups);
    const int64_t tasks = ys.n * ys.d * dp->bands * dp->groups;
#pragma omp parallel num_threads(n_threads)
    {
        float *slab = scratch + (size_t)omp_get_thread_num() * (size_t)(dp->slab + dp->pack);
        float *wpack = slab + dp->slab;
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t g = task % dp->groups, band = (task / dp->groups) % dp->bands;
            const int64_t od = (task / (dp->groups * dp->bands)) % ys.d, n = task / (dp->groups * dp->bands * ys.d);
            const int64_t oh0 = band * dp->band, oh1 = oh0 + dp->band < ys.h ? oh0 + dp->band : ys.h;
            build_slab(x + n * xs.c * i3_shape5_spatial(xs), xs, p, od, oh0, dp, slab);
            for (int64_t ob = g * per_group; ob < blocks && ob < (g + 1) * per_group; ob++) {
                const int64_t o = ob * DOC;
                const int oc = ys.c - o < DOC ? (int)(ys.c - o) : DOC;
                float bias[DOC] = {0};
                for (int r = 0; r < oc; r++) bias[r] = b ? b[o + r] : 0.0f;
                pack_weights(w, xs.c, taps, o, oc, wpack);
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    float *y0 = y + (n * ys.c + o) * s_out + (od * ys.h + oh) * ys.w;
                    const int64_t row0 = (oh - oh0) * p->stride[1];
                    v8f acc[DOC][DVEC];
                    int64_t ow = 0;
                    for (; ow + 8 * DVEC <= ys.w; ow += 8 * DVEC) {
                        direct_block(slab, wpack, xs.c, p->k, dp->hb, dp->wp, row0, ow, DVEC, acc);
                        store_block(acc, DVEC, oc, y0, s_out, ow, bias, p->act);
                    }
                    for (; ow < ys.w; ow += 8) {
                        if (ow + 8 > ys.w) ow = ys.w - 8; /* overlaps the previous block (ys.w >= 8) */
                        direct_block(slab, wpack, xs.c, p->k, dp->hb, dp->wp, row0, ow, 1, acc);
                        store_block(acc, 1, oc, y0, s_out, ow, bias, p->act);
                    }
                }
            }
        }
    }
}

size_t i3_cpu_conv_scratch_bytes(i3_shape5 xs, const i3_conv_params *p, int n_threads) {
    direct_plan dp;
    if (direct_plan_of(xs, p, n_threads, &dp)) return (size_t)n_threads * (size_t)(dp.slab + dp.pack) * sizeof(float);
    if (is_pointwise(p)) return 0;
    const int64_t k_rows = xs.c * p->k[0] * p->k[1] * p->k[2];
    return (size_t)n_threads * (size_t)k_rows * (size_t)conv_tile_cols(xs, p, n_threads) * sizeof(float);
}

void i3_cpu_conv(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                 float *y, void *scratch, int n_threads) {
    direct_plan dp;
    if (direct_plan_of(xs, p, n_threads, &dp)) {
        conv_direct(x, xs, w, b, p, &dp, y, scratch, n_threads);
        return;
    }
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
