/* Convolution over (d, h, w) on the CPU (2D networks use d = 1 and kernels of depth 1).
 *
 *   i3_cpu_conv_ref  direct transcription of the sum, accumulated in double (the reference).
 *   i3_cpu_conv      fast path, one of four strategies, chosen from the shapes alone:
 *     Winograd 3x3x3 (pad 1) and 1x3x3 (pad 0, 1, 1) stride 1, >= 8 channels (1x3x3: 16), outputs >= 8 a side
 *              (the U-Nets' and HRNets' layers but their first, strided and deepest): F(2x2x2, 3x3x3) and
 *              F(2x2, 3x3) on the direct path's slab and register tiles, 8 instead of 27 (4 instead of 9)
 *              multiply-adds per output and channel pair (below: "Winograd path").
 *     direct   any kernel/stride/padding with cin >= 8 (or a 3D window and cout >= 16) except 1x1x1
 *              (oneDNN's AVX2 direct conv): weights
 *              packed once per call as [16 output channels][chunk of cin][taps][ci][16]; a task (sample,
 *              band of output depth slices and rows, group of output-channel blocks) copies the
 *              zero-padded input box it reads into a channels-last slab (about 4 MB; 8 x 8 register
 *              transposes); the kernel computes 6 output voxels along w x 16 output channels = 12
 *              accumulators of 8 floats, per (tap, ci) 2 weight loads + 6 broadcasts + 12 FMAs (GCC/Clang
 *              vector extensions, AVX2 + FMA with -march=x86-64-v3), or 4 voxels x 24 channels for the
 *              last block where the channel count leaves an odd vector of 8, or 12 voxels x 8 channels
 *              for layers of at most 8; strides by the voxel step in
 *              the slab; an output row is accumulated channels-last, then bias + activation and a
 *              transposing copy into NCDHW.
 *     GEMM     1x1x1 stride 1 unpadded: y[cout, s] = w[cout, cin] * x[cin, s], tiles of s, no copy.
 *     im2col   everything else: tiles of T output voxels, col[K, T] (K = cin * kd * kh * kw) built in
 *              the thread's scratch, then y[cout, T] = w[cout, K] * col[K, T] written straight into
 *              the output (ldc = spatial size); bias and activation applied while the tile is in cache.
 *   Threads: OpenMP with the caller's thread count. Each GEMM runs on one thread (OpenBLAS's OpenMP
 *   build does so inside a parallel region; a team of one sets its own thread count to 1).
 *   Measured on the 2-core dev machine (loaded), one thread, CPU time, against PyTorch 2.15 (oneDNN)
 *   F.conv3d in the same run: direct 55-77 GFLOP/s on the 32..128-channel 3x3x3 layers (torch 54-90),
 *   1x3x3 58 (29); bench/bench_ops.c times ours, bench_profile --convs a whole network's layers. */
#include "ops.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* Scratch budget per thread for the im2col tile (1 MB measured as good as 512 KB..4 MB on the 2-core
 * dev machine, 8 MB clearly worse); T never drops below I3_CONV_MIN_TILE columns so that the GEMM
 * stays efficient for very deep K (320 x 27 = 8640 rows: 2.2 MB). */
#define I3_CONV_TILE_BYTES (1u << 20)
#define I3_CONV_MIN_TILE 64
/* Per-thread slab budget of the direct path (the zero-padded, channels-last input box of one task). */
#define I3_CONV_DIRECT_BYTES (4u << 20)

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

/* ---- direct path: channels-last slab + register-blocked 6 voxels x 16 output channels ----------- */

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
/* A register block is 12 accumulators of 8 floats: 6 output voxels x 16 output channels; for the last
 * block of a layer whose channel count leaves an odd vector (18, 36, 72 in an HRNet), 4 voxels x 24
 * channels; for layers of at most 8 channels (nnU-Net's small first stages), 12 voxels x 8. At most 7
 * computed channels are thrown away (blocks of 16 alone threw away 14 of 32 on 18-channel layers, half
 * of the work on 8-channel ones). */
#define OCB 16     /* output channels of a full block */
#define OCB_MAX 24 /* the widest (last) block */
#define VOX_MAX 12 /* voxels per tile of an 8-channel block (6 for 16 channels, 4 for 24) */

/* Blocks of output channels: vectors of 8 in pairs, the last block taking the odd one. */
static int64_t channel_blocks(int64_t cout) {
    const int64_t vectors = ceil_div(cout, 8);
    return vectors < 2 ? 1 : vectors / 2;
}

/* Channels computed by block ob: 16; for the last block of an odd vector count 24, or 8 if it is the only one. */
static int block_width(int64_t cout, int64_t ob) {
    if (ob < channel_blocks(cout) - 1 || ceil_div(cout, 8) % 2 == 0) return OCB;
    return cout > 8 ? OCB_MAX : 8;
}
/* Weights of one chunk of input channels (all taps, 16 output channels) stay within 64 KB (L2) while
 * every tile of a segment reads them; measured better than 16 KB (L1: more loop and accumulator
 * traffic) and than no chunks (128..320 channels: 221..553 KB per block) on the 2-core dev machine. */
#define I3_CONV_CHUNK_BYTES (64u << 10)
/* Output voxels per segment (a run of a task's box, cut into tiles): its accumulator (16-24 KB) stays in L1
 * while every chunk of weights is read once per segment. */
#define I3_CONV_SEGMENT 252 /* a multiple of every tile length: 12, 6, 4 voxels */

static inline v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

typedef struct {
    int64_t db, band;              /* output depth slices and output rows per task */
    int64_t dz, hb, wp;            /* slab extent: input slices, rows, columns a task reads (padded) */
    int64_t slab, seg_acc;         /* floats per thread: slab [dz][hb][wp][cin], segment accumulator */
    int64_t pack, chunk;           /* floats of packed weights (shared), input channels per chunk */
    int64_t dbands, bands, groups; /* tasks per sample: depth bands x row bands x output-channel groups */
    int64_t blocks;                /* output-channel blocks of all parts */
    int64_t pack_at[I3_CONV_MAX_PARTS]; /* where each part's packed weights start */
} direct_plan;

/* Output channels per part: blocks of 16 (the last one 24 or 8 wide), packed one after another. */
static int64_t part_pack_floats(const i3_conv_part *q, int64_t cin) {
    const int64_t blocks = channel_blocks(q->cout);
    return ((blocks - 1) * OCB + block_width(q->cout, blocks - 1)) * cin * q->k[0] * q->k[1] * q->k[2];
}

/* Every non-pointwise convolution with enough input channels for the inner loop (the kernel's inner loop
 * runs over cin); p is the window all parts read (kernel, stride, padding). A task's slab covers a box of output (depth band x row band x full w); the box grows
 * until the slab reaches I3_CONV_DIRECT_BYTES (fewer re-copied halo slices), then, unless the weights
 * dominate, shrinks again (depth first, then rows) while there are fewer than 4 tasks per thread; channel
 * groups split the rest. */
static int direct_plan_of(i3_shape5 xs, const i3_conv_params *p, const i3_conv_part *parts, int n_parts,
                          int n_threads, direct_plan *dp) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    /* Few input channels: im2col + GEMM wins in 2D and for few output channels, the direct path on 3D
     * windows with 16 or more (measured: 1 -> 32 3x3x3 at 64^3 60 -> 21 ms, an ACS 3 -> 64 stride 2 at 32^3
     * 11 -> 6 ms; but 1 -> 8 3x3x3 15 -> 21 ms, 3 -> 64 1x3x3 3.4 -> 6.3 ms). */
    const int few_channels_direct = p->k[0] > 1 && ys.c >= 16;
    if ((xs.c < 8 && !few_channels_direct) || is_pointwise(p) || i3_shape5_numel(ys) == 0) return 0;
    const int kd = p->k[0], kh = p->k[1], sd = p->stride[0], sh = p->stride[1];
    int64_t taps = 1, blocks = 0; /* the most taps of a part; blocks of all parts */
    dp->pack = 0;
    for (int i = 0; i < n_parts; i++) {
        const int64_t t = (int64_t)parts[i].k[0] * parts[i].k[1] * parts[i].k[2];
        taps = t > taps ? t : taps;
        blocks += channel_blocks(parts[i].cout);
        dp->pack_at[i] = dp->pack;
        dp->pack += part_pack_floats(&parts[i], xs.c);
    }
    const int64_t budget = (int64_t)I3_CONV_DIRECT_BYTES / (int64_t)sizeof(float);
    dp->wp = (ys.w - 1) * p->stride[2] + p->k[2];
    const int64_t row = dp->wp * xs.c;
    dp->band = clamp64((budget / (row * kd) - kh) / sh + 1, 1, ys.h);
    dp->bands = ceil_div(ys.h, dp->band);
    dp->band = ceil_div(ys.h, dp->bands);
    dp->hb = (dp->band - 1) * sh + kh;
    dp->db = dp->bands > 1 ? 1 : clamp64((budget / (row * dp->hb) - kd) / sd + 1, 1, ys.d);
    /* Splitting the box re-reads the weights, splitting the channels re-copies the slab: where the weights
     * are the larger (the deep, small layers), threads share the channel blocks of one box first. */
    const int weights_dominate = dp->pack > ys.n * (dp->db - 1) * sd * dp->hb * row && blocks >= 4 * n_threads;
    while (!weights_dominate && dp->db > 1 && ys.n * ceil_div(ys.d, dp->db) * dp->bands < 4 * (int64_t)n_threads &&
           ceil_div(ys.d, dp->db) < ys.d)
        dp->db = ceil_div(dp->db, 2);
    dp->dbands = ceil_div(ys.d, dp->db);
    dp->db = ceil_div(ys.d, dp->dbands);
    if (!weights_dominate && ys.n * dp->dbands * dp->bands < 4 * (int64_t)n_threads) { /* then rows (2D: d = 1) */
        dp->bands = clamp64(ceil_div(4 * (int64_t)n_threads, ys.n * dp->dbands), dp->bands, ys.h);
        dp->band = ceil_div(ys.h, dp->bands);
        dp->bands = ceil_div(ys.h, dp->band);
        dp->hb = (dp->band - 1) * sh + kh;
    }
    dp->dz = (dp->db - 1) * sd + kd;
    dp->slab = dp->dz * dp->hb * row;
    dp->seg_acc = (int64_t)I3_CONV_SEGMENT * OCB_MAX;
    const int64_t tasks = ys.n * dp->dbands * dp->bands;
    const int64_t max_chunk = clamp64((int64_t)I3_CONV_CHUNK_BYTES / (int64_t)(sizeof(float) * OCB * taps), 1, xs.c);
    dp->chunk = ceil_div(xs.c, ceil_div(xs.c, max_chunk)); /* even chunks */
    dp->blocks = blocks;
    dp->groups = clamp64(ceil_div(4 * (int64_t)n_threads, tasks), 1, blocks);
    return 1;
}

/* Two-input shuffle of v8f (GCC and Clang spell it differently): element i of the result is element
 * idx[i] of the 16 elements a ++ b. */
#if defined(__clang__)
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#endif

static inline void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

/* dst[j * ld + k] = src[k * sstride + j] for an 8 x 8 block: 8 loads, the three shuffle stages of the
 * AVX 8 x 8 transpose (unpack, 4 x 4 in each 128-bit lane, swap lanes), 8 stores. */
static inline void transpose8x8(const float *src, int64_t sstride, float *dst, int64_t ld) {
    v8f r[8], t[8], u[8];
    for (int k = 0; k < 8; k++) r[k] = load8(src + k * sstride);
    for (int k = 0; k < 8; k += 2) {
        t[k] = SHUFFLE8(r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[k + 1] = SHUFFLE8(r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int k = 0; k < 8; k += 4)
        for (int h = 0; h < 2; h++) {
            u[k + 2 * h] = SHUFFLE8(t[k + h], t[k + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[k + 2 * h + 1] = SHUFFLE8(t[k + h], t[k + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int j = 0; j < 4; j++) {
        store8(dst + j * ld, SHUFFLE8(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11));
        store8(dst + (j + 4) * ld, SHUFFLE8(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15));
    }
}

/* slab[((z * hb + r) * wp + c) * cin + ci] = x[ci, iz0 + z, iy0 + r, c - pad_w], 0 outside the input:
 * the input box one task reads, zero-padded and channels-last (the kernel broadcasts one input value
 * per (voxel, tap, ci) against a block of output channels). The transposition goes by 8 x 8 blocks in registers;
 * one value at a time, its writes cin floats apart (a power of two in most networks) shared a few L1
 * sets and cost more than the convolution's own arithmetic on the wide layers. */
static void build_slab(const float *x, i3_shape5 xs, const i3_conv_params *p, int64_t iz0, int64_t iy0,
                       const direct_plan *dp, float *slab) {
    const int64_t cin = xs.c, wp = dp->wp, left = p->pad[2], plane = xs.d * xs.h * xs.w;
    const int64_t c0 = clamp64(left, 0, wp), c1 = clamp64(left + xs.w, c0, wp); /* valid columns */
    const int64_t c8 = c0 + (c1 - c0) / 8 * 8, ci8 = cin / 8 * 8;
    for (int64_t z = 0; z < dp->dz; z++)
        for (int64_t r = 0; r < dp->hb; r++) {
            float *dst = slab + (z * dp->hb + r) * wp * cin;
            const int64_t iz = iz0 + z, iy = iy0 + r;
            if (iz < 0 || iz >= xs.d || iy < 0 || iy >= xs.h) {
                memset(dst, 0, (size_t)(wp * cin) * sizeof(float));
                continue;
            }
            memset(dst, 0, (size_t)(c0 * cin) * sizeof(float));
            memset(dst + c1 * cin, 0, (size_t)((wp - c1) * cin) * sizeof(float));
            const float *src = x + (iz * xs.h + iy) * xs.w - left;
            for (int64_t q = 0; q < ci8; q += 16) /* 16 channels: reads along 16 rows, writes whole lines */
                for (int64_t c = c0; c < c8; c += 8)
                    for (int64_t ci = q; ci < q + 16 && ci < ci8; ci += 8)
                        transpose8x8(src + ci * plane + c, plane, dst + c * cin + ci, cin);
            for (int64_t ci = ci8; ci < cin; ci++) /* channels beyond the last block of 8 */
                for (int64_t c = c0; c < c8; c++) dst[c * cin + ci] = src[ci * plane + c];
            for (int64_t c = c8; c < c1; c++) /* columns beyond the last block of 8 */
                for (int64_t ci = 0; ci < cin; ci++) dst[c * cin + ci] = src[ci * plane + c];
        }
}

/* Packed weights, per block of ow output channels (8, 16 or 24, from channel o0 = 16 block) and per chunk of
 * input channels [q0, q0 + nq): wpack[o0 * cin * taps + q0 * taps * ow + (tap * nq + ci - q0) * ow + r] =
 * w[o0 + r, ci, tap], 0 beyond cout. One chunk is contiguous, in the order the kernel reads it. */
static void pack_weights_block(const float *w, int64_t cout, int64_t cin, int64_t taps, int64_t chunk, int64_t ob,
                               float *wpack) {
    const int64_t o0 = ob * OCB;
    const int ow = block_width(cout, ob), oc = cout - o0 < ow ? (int)(cout - o0) : ow;
    float *dst = wpack + o0 * cin * taps;
    for (int64_t ci = 0; ci < cin; ci++) { /* each write fills a line; the reads reuse ow x taps floats */
        const int64_t q0 = ci - ci % chunk, nq = cin - q0 < chunk ? cin - q0 : chunk;
        for (int64_t t = 0; t < taps; t++) {
            float *d = dst + (q0 * taps + t * nq + ci - q0) * ow;
            for (int r = 0; r < ow; r++) d[r] = r < oc ? w[((o0 + r) * cin + ci) * taps + t] : 0.0f;
        }
    }
}

/* acc[j] (+)= sum over taps and the chunk's nci input channels of in[off[j] + tap offset + ci] times
 * wchunk[tap][ci][0..8 nw), for nv output voxels x nw vectors of 8 output channels (both constants after
 * inlining, nv * nw <= 12); io is the segment accumulator [voxel][8 nw], zeroed first when first is set. */
static inline __attribute__((always_inline)) void direct_tile(const float *in, const int64_t *off, int64_t nci,
                                                              int64_t cin, const int k[3], int64_t zstep,
                                                              int64_t rstep, const float *wchunk, const int nv,
                                                              const int nw, int first, float *io) {
    v8f acc[12]; /* [voxel][vector]; local: stores through io could alias the inputs and would stay in the loop */
    for (int i = 0; i < nv * nw; i++) acc[i] = first ? (v8f){0} : load8(io + i * 8);
    /* With all input channels in one chunk, a kernel row's taps along w read one contiguous run of the
     * slab (kw x cin floats) against contiguous weights: one loop of kw x cin instead of kw loops of cin
     * (the 8..32-channel layers, whose short loops spent as much on set-up as on multiply-adds). */
    const int whole_rows = nci == cin, kw = whole_rows ? 1 : k[2];
    const int64_t run = whole_rows ? k[2] * cin : nci;
    const float *wt = wchunk;
    for (int a = 0; a < k[0]; a++)
        for (int b = 0; b < k[1]; b++)
            for (int c = 0; c < kw; c++) {
                const float *src[VOX_MAX];
                for (int j = 0; j < nv; j++) src[j] = in + off[j] + a * zstep + b * rstep + c * cin;
                for (int64_t ci = 0; ci < run; ci++, wt += 8 * nw) {
                    v8f wv[3];
                    for (int v = 0; v < nw; v++) wv[v] = load8(wt + 8 * v);
                    for (int j = 0; j < nv; j++) {
                        const float s = src[j][ci];
                        const v8f sv = {s, s, s, s, s, s, s, s};
                        for (int v = 0; v < nw; v++) acc[j * nw + v] += sv * wv[v];
                    }
                }
            }
    for (int i = 0; i < nv * nw; i++) store8(io + i * 8, acc[i]);
}

/* direct_tile for each (voxels, vectors) as a function of its own: its 12 accumulators, the weight vectors,
 * the broadcast and the pointers fit the registers (inlined into the big task loop, GCC spilled them). */
typedef void direct_tile_fn(const float *in, const int64_t *off, int64_t nci, int64_t cin, const int k[3],
                            int64_t zstep, int64_t rstep, const float *wchunk, int first, float *io);
#define DIRECT_TILE_N(nv, nw)                                                                                    \
    static __attribute__((noinline)) void direct_tile_##nv##x##nw(const float *in, const int64_t *off,          \
                                                                  int64_t nci, int64_t cin, const int k[3],      \
                                                                  int64_t zstep, int64_t rstep,                  \
                                                                  const float *wchunk, int first, float *io) {   \
        direct_tile(in, off, nci, cin, k, zstep, rstep, wchunk, nv, nw, first, io);                             \
    }
DIRECT_TILE_N(1, 1)
DIRECT_TILE_N(2, 1)
DIRECT_TILE_N(3, 1)
DIRECT_TILE_N(4, 1)
DIRECT_TILE_N(5, 1)
DIRECT_TILE_N(6, 1)
DIRECT_TILE_N(7, 1)
DIRECT_TILE_N(8, 1)
DIRECT_TILE_N(9, 1)
DIRECT_TILE_N(10, 1)
DIRECT_TILE_N(11, 1)
DIRECT_TILE_N(12, 1)
DIRECT_TILE_N(1, 2)
DIRECT_TILE_N(2, 2)
DIRECT_TILE_N(3, 2)
DIRECT_TILE_N(4, 2)
DIRECT_TILE_N(5, 2)
DIRECT_TILE_N(6, 2)
DIRECT_TILE_N(1, 3)
DIRECT_TILE_N(2, 3)
DIRECT_TILE_N(3, 3)
DIRECT_TILE_N(4, 3)
/* [vectors - 1][voxels] */
static direct_tile_fn *const direct_tiles[3][VOX_MAX + 1] = {
    {NULL, direct_tile_1x1, direct_tile_2x1, direct_tile_3x1, direct_tile_4x1, direct_tile_5x1, direct_tile_6x1,
     direct_tile_7x1, direct_tile_8x1, direct_tile_9x1, direct_tile_10x1, direct_tile_11x1, direct_tile_12x1},
    {NULL, direct_tile_1x2, direct_tile_2x2, direct_tile_3x2, direct_tile_4x2, direct_tile_5x2, direct_tile_6x2},
    {NULL, direct_tile_1x3, direct_tile_2x3, direct_tile_3x3, direct_tile_4x3}};

typedef struct {
    int64_t band, w, h_out, sd, sh, sw, zstep, rstep, cin;
} direct_box;

/* off[i] = slab offset of the window of box voxel v0 + i, i < n: three divisions for v0, then carries
 * (divisions per voxel cost as much as the multiply-adds of a few-channel layer). */
static void box_in_offsets(const direct_box *bx, int64_t v0, int64_t n, int64_t *off) {
    const int64_t plane = bx->band * bx->w;
    int64_t z = v0 / plane, r = v0 % plane / bx->w, c = v0 % bx->w;
    for (int64_t i = 0; i < n; i++) {
        off[i] = z * bx->sd * bx->zstep + r * bx->sh * bx->rstep + c * bx->sw * bx->cin;
        if (++c < bx->w) continue;
        c = 0;
        if (++r < bx->band) continue;
        r = 0, z++;
    }
}

static int64_t box_out_offset(const direct_box *bx, int64_t v) {
    const int64_t plane = bx->band * bx->w;
    return v / plane * bx->h_out * bx->w + v % plane;
}

/* A segment: voxels v0 .. v0 + nvox - 1 of the box (crossing rows and slices, so that narrow rows leave no
 * short tiles), one block of ow (8, 16 or 24) output channels, cut into tiles of 12 / (ow / 8) voxels. Per
 * chunk of input channels the tiles accumulate into acc; then bias, activation (branch-free: random signs
 * made a scalar branch mispredict) and the transposing copy into y (NCDHW, channel stride ystride). */
static void direct_segment(const float *slab, const direct_box *bx, int64_t v0, int64_t nvox, const int k[3],
                           const float *wblock, int64_t chunk, int ow, int oc, const float *bias, i3_act act,
                           float *acc, float *y, int64_t ystride) {
    const int64_t taps = (int64_t)k[0] * k[1] * k[2], cin = bx->cin;
    const int vox = 12 / (ow / 8);
    int64_t off[I3_CONV_SEGMENT];
    box_in_offsets(bx, v0, nvox, off);
    for (int64_t q0 = 0; q0 < cin; q0 += chunk) {
        const int64_t nq = cin - q0 < chunk ? cin - q0 : chunk;
        for (int64_t t0 = 0; t0 < nvox; t0 += vox) {
            const int nv = nvox - t0 < vox ? (int)(nvox - t0) : vox;
            direct_tiles[ow / 8 - 1][nv](slab + q0, off + t0, nq, cin, k, bx->zstep, bx->rstep,
                                         wblock + q0 * taps * ow, q0 == 0, acc + t0 * ow);
        }
    }
    const float s = act.kind == I3_ACT_LEAKY_RELU ? act.slope : act.kind == I3_ACT_RELU ? 0.0f : 1.0f;
    const v8f slope = {s, s, s, s, s, s, s, s}, zero = {0};
    for (int64_t i = 0; i < nvox * ow; i += 8) {
        const v8f v = load8(acc + i) + load8(bias + i % ow);
        const v8i neg = v < zero;
        const v8f out = (v8f)((v8i)v & ~neg) + slope * (v8f)((v8i)v & neg);
        memcpy(acc + i, &out, sizeof out);
    }
    for (int64_t t = 0; t < nvox;) { /* runs of voxels contiguous in y (one row at least) */
        const int64_t yo = box_out_offset(bx, v0 + t), rest = bx->w - (v0 + t) % bx->w;
        const int64_t run = rest < nvox - t ? rest : nvox - t;
        for (int r = 0; r < oc; r++)
            for (int64_t j = 0; j < run; j++) y[r * ystride + yo + j] = acc[(t + j) * ow + r];
        t += run;
    }
}

/* Block `block` of all parts' blocks: its part, and its index within the part. */
static int block_part(const i3_conv_part *parts, int64_t block, int64_t *ob) {
    int i = 0;
    for (; block >= channel_blocks(parts[i].cout); i++) block -= channel_blocks(parts[i].cout);
    *ob = block;
    return i;
}

/* Weights packed once per call by all threads; then threads over (sample, depth band, row band, channel
 * group): each task builds the slab of its box and sweeps its rows per block of output channels, each
 * block with its part's kernel and offset into the slab. Below I3_PARALLEL_MIN_MACS multiply-adds, one
 * thread (the barrier would cost more than the work). */
static void conv_direct(const float *x, i3_shape5 xs, const i3_conv_params *p, const i3_conv_part *parts,
                        int n_parts, const direct_plan *dp, float *y, float *scratch, int n_threads) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    const int64_t s_out = i3_shape5_spatial(ys), cin = xs.c;
    const int64_t per_group = ceil_div(dp->blocks, dp->groups);
    const int64_t tasks = ys.n * dp->dbands * dp->bands * dp->groups;
    const int64_t rstep = dp->wp * cin, zstep = dp->hb * rstep;
    int64_t macs = 0;
    for (int i = 0; i < n_parts; i++)
        macs += ys.n * s_out * parts[i].cout * cin * parts[i].k[0] * parts[i].k[1] * parts[i].k[2];
#pragma omp parallel num_threads(n_threads) if (macs >= I3_PARALLEL_MIN_MACS)
    {
        float *slab = scratch + dp->pack + (size_t)omp_get_thread_num() * (size_t)(dp->slab + dp->seg_acc);
        float *acc = slab + dp->slab;
#pragma omp for schedule(static)
        for (int64_t block = 0; block < dp->blocks; block++) {
            int64_t ob;
            const i3_conv_part *q = &parts[block_part(parts, block, &ob)];
            const int64_t taps = (int64_t)q->k[0] * q->k[1] * q->k[2];
            pack_weights_block(q->w, q->cout, cin, taps, dp->chunk, ob, scratch + dp->pack_at[q - parts]);
        }
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t g = task % dp->groups, rb = (task / dp->groups) % dp->bands;
            const int64_t zb = (task / (dp->groups * dp->bands)) % dp->dbands;
            const int64_t n = task / (dp->groups * dp->bands * dp->dbands);
            const int64_t oh0 = rb * dp->band, oh1 = oh0 + dp->band < ys.h ? oh0 + dp->band : ys.h;
            const int64_t od0 = zb * dp->db, od1 = od0 + dp->db < ys.d ? od0 + dp->db : ys.d;
            build_slab(x + n * cin * i3_shape5_spatial(xs), xs, p, od0 * p->stride[0] - p->pad[0],
                       oh0 * p->stride[1] - p->pad[1], dp, slab);
            const direct_box bx = {oh1 - oh0, ys.w, ys.h, p->stride[0], p->stride[1], p->stride[2], zstep, rstep, cin};
            const int64_t nbox = (od1 - od0) * (oh1 - oh0) * ys.w;
            for (int64_t block = g * per_group; block < dp->blocks && block < (g + 1) * per_group; block++) {
                int64_t ob;
                const i3_conv_part *q = &parts[block_part(parts, block, &ob)];
                const int64_t o = ob * OCB, taps = (int64_t)q->k[0] * q->k[1] * q->k[2];
                const int ow = block_width(q->cout, ob), oc = q->cout - o < ow ? (int)(q->cout - o) : ow;
                float bias[OCB_MAX] = {0};
                for (int r = 0; r < oc; r++) bias[r] = q->b ? q->b[o + r] : 0.0f;
                const float *in = slab + q->shift[0] * zstep + q->shift[1] * rstep + q->shift[2] * cin;
                float *yb = y + (n * ys.c + q->o0 + o) * s_out + (od0 * ys.h + oh0) * ys.w;
                for (int64_t v0 = 0; v0 < nbox; v0 += I3_CONV_SEGMENT)
                    direct_segment(in, &bx, v0, nbox - v0 < I3_CONV_SEGMENT ? nbox - v0 : I3_CONV_SEGMENT, q->k,
                                   scratch + dp->pack_at[q - parts] + o * cin * taps, dp->chunk, ow, oc, bias, p->act,
                                   acc, yb, s_out);
            }
        }
    }
}

/* ---- Winograd path: F(2 x 2 x 2, 3 x 3 x 3) and F(2 x 2, 3 x 3) ------------------------------------- */

/* Lavin and Gray's minimal filtering along each axis: 4 input voxels d and 3 taps g give 2 outputs
 * y = A^T [(G g) . (B^T d)] (a correlation, as the convolution here is). In 3D each 2 x 2 x 2 output tile reads
 * a 4 x 4 x 4 input window, and the 64 transformed positions are 64 independent products
 * [tiles x cin] x [cin x cout]: 8 multiply-adds per output voxel and channel pair instead of 27, plus the
 * transforms; 1 x 3 x 3 kernels (2D networks, anisotropic stages) the same in each slice with 2 x 2 tiles and
 * 16 positions (4 instead of 9). A task is one tile slice (2 output slices, or 1) x a band of tile rows x the
 * full width; its input box is the direct path's channels-last slab (build_slab), transformed by batches of
 * tiles into V [pos][tiles][cin], multiplied by the transformed weights U [pos][block][cin][ow] with the direct
 * path's register tiles, giving M [pos][block][tiles][ow], and transformed back 8 output channels at a time.
 * B, G and A hold 0, +-1 and 1/2 only: against the double reference the error is that of the direct path
 * (relative 2-3e-7 in tests/test_ops.c). */
#define WINO_BATCH 36 /* tiles per batch: a multiple of every register tile length (12, 6, 4) */
#define WINO_MAX_U (1 << 22) /* floats of transformed weights (16 MB: 256 -> 256 channels in 3D) */

typedef struct {
    int depth, positions;      /* window depth (4, or 1 for 1 x 3 x 3 kernels), transformed positions (16 depth) */
    int64_t td, th, tw;        /* output tiles along d, h, w */
    int64_t band, bands;       /* tile rows per task, row bands per tile slice */
    int64_t tasks;             /* samples x tile slices x bands */
    int64_t cin8, cout8;       /* channels rounded up to vectors of 8: the rows of V, the columns of U and M */
    int64_t u, v, m;           /* floats: transformed weights (shared); per thread V and M */
    direct_plan box;           /* the slab's extent (dz, hb, wp, slab) for build_slab */
} wino_plan;

/* Stride-1 3 x 3 x 3 (padded by 1) and 1 x 3 x 3 (padded by 0, 1, 1) convolutions of 8 (1 x 3 x 3: 16) or more
 * input and output channels (the last vector of 8 partial where the counts are not multiples: an HRNet's 18,
 * 36), on outputs of at least 8 voxels a side along the tiled axes (odd sizes compute a partial tile), with
 * transformed weights of at most WINO_MAX_U floats and at least 24 tiles per task: below that the transformed
 * weights (64 / 27 of the weights' size in 3D) are read again for too few tiles (8^3 outputs of 64-320 channels:
 * 0.55-0.7x the direct path). Measured on the 2-core machine, one thread, against the direct path: 3D 1.1-1.5x
 * at 8-32 channels, 1.4-2.5x at 48-256; 2D 1.0-1.9x at 16-64, 2.4x at 270 -> 96 (docs/performance.md). */
static int wino_plan_of(i3_shape5 xs, const i3_conv_params *p, int n_threads, wino_plan *wp) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    const int deep = p->k[0] == 3;
    if ((p->k[0] != 1 && !deep) || p->pad[0] != deep || p->k[1] != 3 || p->k[2] != 3 || p->pad[1] != 1 ||
        p->pad[2] != 1 || p->stride[0] != 1 || p->stride[1] != 1 || p->stride[2] != 1)
        return 0;
    const int64_t fewest = deep ? 8 : 16; /* 2D 8 -> 8 at 192 x 160: 0.8x the direct path (2.25x fewer products) */
    if (xs.c < fewest || ys.c < fewest || (deep && ys.d < 8) || ys.d < 1 || ys.h < 8 || ys.w < 8) return 0;
    wp->depth = deep ? 4 : 1, wp->positions = 16 * wp->depth;
    wp->cin8 = ceil_div(xs.c, 8) * 8, wp->cout8 = ceil_div(ys.c, 8) * 8;
    wp->u = wp->positions * xs.c * wp->cout8;
    if (wp->u > WINO_MAX_U) return 0;
    wp->td = deep ? ceil_div(ys.d, 2) : ys.d, wp->th = ceil_div(ys.h, 2), wp->tw = ceil_div(ys.w, 2);
    const int64_t row = (2 * wp->tw + 2) * xs.c, budget = (int64_t)I3_CONV_DIRECT_BYTES / (int64_t)sizeof(float);
    const int64_t most = clamp64((budget / (wp->depth * row) - 2) / 2, 1, wp->th); /* rows within the budget */
    wp->bands = clamp64(ceil_div(4 * (int64_t)n_threads, ys.n * wp->td), ceil_div(wp->th, most), wp->th);
    wp->band = ceil_div(wp->th, wp->bands);
    wp->bands = ceil_div(wp->th, wp->band);
    if (wp->band * wp->tw < 24) return 0;
    wp->tasks = ys.n * wp->td * wp->bands;
    wp->box.dz = wp->depth, wp->box.hb = 2 * wp->band + 2, wp->box.wp = 2 * wp->tw + 2;
    wp->box.slab = wp->box.dz * wp->box.hb * row;
    wp->v = wp->positions * WINO_BATCH * wp->cin8;
    wp->m = wp->positions * WINO_BATCH * wp->cout8;
    return 1;
}

/* B^T d along one axis: 4 values s apart, in place. */
static inline __attribute__((always_inline)) void wino_bt(v8f *d, int s) {
    const v8f d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s];
    d[0] = d0 - d2, d[s] = d1 + d2, d[2 * s] = d2 - d1, d[3 * s] = d1 - d3;
}

/* wino_input for a window depth of 4 or 1 (a constant after inlining): along d first into a stack copy, then
 * each of the planes along h and w in registers. A last vector of fewer than 8 channels reads on into the next
 * voxel (or past the slab into this thread's V, the same allocation) and is masked to zeros. */
static inline __attribute__((always_inline)) void wino_input_n(const float *slab, const wino_plan *wp,
                                                               int64_t cin, int64_t i0, int64_t nb, float *v,
                                                               const int depth) {
    const int64_t rstep = wp->box.wp * cin, zstep = wp->box.hb * rstep, ld = wp->cin8, pstride = WINO_BATCH * ld;
    for (int64_t i = 0; i < nb; i++) {
        const float *s0 = slab + (i0 + i) / wp->tw * 2 * rstep + (i0 + i) % wp->tw * 2 * cin;
        for (int64_t ci = 0; ci < cin; ci += 8) {
            v8i keep;
            for (int l = 0; l < 8; l++) keep[l] = ci + l < cin ? -1 : 0;
            v8f t[64];
            for (int yx = 0; yx < 16; yx++) {
                const float *q = s0 + yx / 4 * rstep + yx % 4 * cin + ci;
                for (int z = 0; z < depth; z++) t[z * 16 + yx] = (v8f)((v8i)load8(q + z * zstep) & keep);
                if (depth == 4) wino_bt(t + yx, 16);
            }
            for (int z = 0; z < depth; z++) {
                v8f *plane = t + z * 16;
                for (int r = 0; r < 4; r++) wino_bt(plane + r * 4, 1);
                for (int c = 0; c < 4; c++) wino_bt(plane + c, 4);
                for (int yx = 0; yx < 16; yx++) store8(v + (z * 16 + yx) * pstride + i * ld + ci, plane[yx]);
            }
        }
    }
}

/* V[pos][tile][ci .. ci + 8) (rows of cin8) for tiles i0 .. i0 + nb of the task (tile row ty0 + i / tw, column
 * i % tw), and zeros for the tiles nb .. nb_round (the register tiles of the product then need no short
 * versions). */
static void wino_input(const float *slab, const wino_plan *wp, int64_t cin, int64_t i0, int64_t nb, int64_t nb_round,
                       float *v) {
    if (wp->depth == 4) wino_input_n(slab, wp, cin, i0, nb, v, 4);
    else wino_input_n(slab, wp, cin, i0, nb, v, 1);
    for (int pos = 0; pos < wp->positions; pos++)
        memset(v + (pos * WINO_BATCH + nb) * wp->cin8, 0, (size_t)((nb_round - nb) * wp->cin8) * sizeof(float));
}

/* The products of a batch for one block of nw vectors of output channels, groups x nv tiles (nv, nw
 * constants after inlining): m[pos][j][8 nw] = sum_ci v[pos][j * ld + ci] u[pos][ci][8 nw], positions vstride,
 * ustride, mstride floats apart; each group the direct path's register tile with a 1 x 1 x 1 kernel. The
 * positions outermost: a position's weights (cin x 8 nw) stay in L1 for all groups. */
static inline __attribute__((always_inline)) void wino_gemm(const float *v, int64_t vstride, const float *u,
                                                            int64_t ustride, float *m, int64_t mstride,
                                                            int64_t cin, int64_t ld, int positions, int64_t groups,
                                                            const int nv, const int nw) {
    static const int pointwise[3] = {1, 1, 1};
    int64_t off[VOX_MAX];
    for (int j = 0; j < nv; j++) off[j] = j * ld;
    for (int pos = 0; pos < positions; pos++, v += vstride, u += ustride, m += mstride)
        for (int64_t g = 0; g < groups; g++)
            direct_tile(v + g * nv * ld, off, cin, cin, pointwise, 0, 0, u, nv, nw, 1, m + g * nv * 8 * nw);
}

typedef void wino_gemm_fn(const float *v, int64_t vstride, const float *u, int64_t ustride, float *m,
                          int64_t mstride, int64_t cin, int64_t ld, int positions, int64_t groups);
#define WINO_GEMM_N(nv, nw)                                                                                      \
    static __attribute__((noinline)) void wino_gemm_##nv##x##nw(const float *v, int64_t vstride, const float *u, \
                                                                int64_t ustride, float *m, int64_t mstride,      \
                                                                int64_t cin, int64_t ld, int positions,          \
                                                                int64_t groups) {                                \
        wino_gemm(v, vstride, u, ustride, m, mstride, cin, ld, positions, groups, nv, nw);                      \
    }
WINO_GEMM_N(12, 1)
WINO_GEMM_N(6, 2)
WINO_GEMM_N(4, 3)
/* [vectors - 1]: the direct path's tile for each block width */
static wino_gemm_fn *const wino_gemms[3] = {wino_gemm_12x1, wino_gemm_6x2, wino_gemm_4x3};

/* U[pos][o0 * cin + ci * ow + r] = (G g G^T along the kernel's axes)[pos] of g = w[o0 + r, ci], per
 * output-channel block (o0, width ow) of the direct path; along d only for a window depth of 4; zeros for the
 * channels cout .. cout8 of the last vector (positions cin x cout8 apart). */
static void wino_weights(const float *w, int64_t cout, int64_t cin, int depth, int64_t co, float *u) {
    static const float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
    const int64_t cout8 = ceil_div(cout, 8) * 8;
    const int64_t ob = co / OCB < channel_blocks(cout) ? co / OCB : channel_blocks(cout) - 1, o0 = ob * OCB;
    const int ow = block_width(cout, ob), kd = depth == 4 ? 3 : 1;
    float *uc = u + o0 * cin + co - o0; /* U[0][o0 * cin + 0 * ow + co - o0] */
    for (int64_t ci = 0; ci < cin; ci++) {
        float a[4][3][3], b[4][4][3], c[4][4][4];
        const float *g = co < cout ? w + (co * cin + ci) * kd * 9 : NULL; /* NULL: the last vector's padding */
        for (int i = 0; i < depth; i++)
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 3; x++)
                    a[i][y][x] = !g ? 0.0f
                                 : kd == 1 ? g[y * 3 + x]
                                           : G[i][0] * g[y * 3 + x] + G[i][1] * g[9 + y * 3 + x] +
                                                 G[i][2] * g[18 + y * 3 + x];
        for (int i = 0; i < depth; i++)
            for (int j = 0; j < 4; j++)
                for (int x = 0; x < 3; x++)
                    b[i][j][x] = G[j][0] * a[i][0][x] + G[j][1] * a[i][1][x] + G[j][2] * a[i][2][x];
        for (int i = 0; i < depth; i++)
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 4; k++)
                    c[i][j][k] = G[k][0] * b[i][j][0] + G[k][1] * b[i][j][1] + G[k][2] * b[i][j][2];
        for (int pos = 0; pos < 16 * depth; pos++) uc[pos * cin * cout8 + ci * ow] = c[pos / 16][pos / 4 % 4][pos % 4];
    }
}

/* y for tiles i0 .. i0 + nb of the task from M: A^T along the window's axes, bias, activation, the valid voxels
 * of each 2 x 2 x 2 (or 1 x 2 x 2) tile written into y (NCDHW, from output slice oz). */
static void wino_output(const float *m, const wino_plan *wp, i3_shape5 ys, int64_t oz, int64_t ty0, int64_t i0,
                        int64_t nb, const float *bias, i3_act act, float *y) {
    const int64_t cout = ys.c, s_out = i3_shape5_spatial(ys), ms = WINO_BATCH * wp->cout8; /* M's position stride */
    const int depth = wp->depth, tile_d = depth == 4 ? 2 : 1, voxels = 4 * tile_d;
    const float s = act.kind == I3_ACT_LEAKY_RELU ? act.slope : act.kind == I3_ACT_RELU ? 0.0f : 1.0f;
    const v8f slope = {s, s, s, s, s, s, s, s}, zero = {0};
    for (int64_t ob = 0; ob < channel_blocks(cout); ob++) {
        const int64_t o0 = ob * OCB;
        const int ow = block_width(cout, ob);
        for (int64_t i = 0; i < nb; i++) {
            const int64_t oy = 2 * (ty0 + (i0 + i) / wp->tw), ox = 2 * ((i0 + i) % wp->tw);
            for (int vv = 0; vv < ow / 8; vv++) {
                const float *src = m + o0 * WINO_BATCH + i * ow + 8 * vv;
                v8f r2[4][2][2], o[8];
                for (int z = 0; z < depth; z++) { /* A^T along w, then h, per plane */
                    v8f r1[4][2];
                    for (int r = 0; r < 4; r++) {
                        const float *q = src + (z * 16 + r * 4) * ms;
                        const v8f m0 = load8(q), m1 = load8(q + ms), m2 = load8(q + 2 * ms), m3 = load8(q + 3 * ms);
                        r1[r][0] = m0 + m1 + m2, r1[r][1] = m1 - m2 - m3;
                    }
                    for (int c = 0; c < 2; c++) {
                        r2[z][0][c] = r1[0][c] + r1[1][c] + r1[2][c];
                        r2[z][1][c] = r1[1][c] - r1[2][c] - r1[3][c];
                    }
                }
                const v8f bv = load8(bias + o0 + 8 * vv);
                for (int r = 0; r < 2; r++)
                    for (int c = 0; c < 2; c++) {
                        if (depth == 1) {
                            o[r * 2 + c] = r2[0][r][c] + bv;
                            o[4 + r * 2 + c] = zero; /* no second slice */
                            continue;
                        }
                        o[r * 2 + c] = r2[0][r][c] + r2[1][r][c] + r2[2][r][c] + bv;
                        o[4 + r * 2 + c] = r2[1][r][c] - r2[2][r][c] - r2[3][r][c] + bv;
                    }
                float out[8][8], per_channel[8][8]; /* [voxel][channel], then [channel][voxel] */
                for (int k = 0; k < 8; k++) {
                    const v8i neg = o[k] < zero;
                    const v8f a = (v8f)((v8i)o[k] & ~neg) + slope * (v8f)((v8i)o[k] & neg);
                    store8(out[k], a);
                }
                transpose8x8(out[0], 8, per_channel[0], 8);
                float *yc = y + (o0 + 8 * vv) * s_out + (oz * ys.h + oy) * ys.w + ox;
                const int channels = cout - o0 - 8 * vv < 8 ? (int)(cout - o0 - 8 * vv) : 8;
                if (oz + tile_d <= ys.d && oy + 1 < ys.h && ox + 1 < ys.w) { /* a whole tile: pairs along w */
                    for (int l = 0; l < channels; l++)
                        for (int k = 0; k < voxels; k += 2)
                            memcpy(yc + l * s_out + (k / 4 * ys.h + k / 2 % 2) * ys.w, per_channel[l] + k,
                                   2 * sizeof(float));
                    continue;
                }
                for (int k = 0; k < voxels; k++)
                    if (oz + k / 4 < ys.d && oy + k / 2 % 2 < ys.h && ox + k % 2 < ys.w)
                        for (int l = 0; l < channels; l++)
                            yc[l * s_out + (k / 4 * ys.h + k / 2 % 2) * ys.w + k % 2] = per_channel[l][k];
            }
        }
    }
}

/* One task: the slab of tile slice tz, tile rows ty0 .. ty0 + band of sample n, by batches of tiles. */
static void wino_task(const float *x, i3_shape5 xs, const i3_conv_params *p, const wino_plan *wp, const float *u,
                      const float *bias, int64_t task, float *slab, float *v, float *m, float *y) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    const int64_t cin = xs.c, cout = ys.c, batch = WINO_BATCH;
    const int64_t rb = task % wp->bands, tz = task / wp->bands % wp->td, n = task / (wp->bands * wp->td);
    const int64_t ty0 = rb * wp->band, rows = wp->th - ty0 < wp->band ? wp->th - ty0 : wp->band;
    const int64_t oz = wp->depth == 4 ? 2 * tz : tz;
    build_slab(x + n * cin * i3_shape5_spatial(xs), xs, p, oz - p->pad[0], 2 * ty0 - 1, &wp->box, slab);
    for (int64_t i0 = 0; i0 < rows * wp->tw; i0 += batch) {
        const int64_t nb = rows * wp->tw - i0 < batch ? rows * wp->tw - i0 : batch;
        const int64_t nb_round = ceil_div(nb, 12) * 12;
        wino_input(slab, wp, cin, i0, nb, nb_round, v);
        for (int64_t ob = 0; ob < channel_blocks(cout); ob++) {
            const int64_t o0 = ob * OCB;
            const int ow = block_width(cout, ob), vox = 12 / (ow / 8);
            wino_gemms[ow / 8 - 1](v, batch * wp->cin8, u + o0 * cin, cin * wp->cout8, m + o0 * batch,
                                   batch * wp->cout8, cin, wp->cin8, wp->positions, nb_round / vox);
        }
        wino_output(m, wp, ys, oz, ty0, i0, nb, bias, p->act, y + n * cout * i3_shape5_spatial(ys));
    }
}

/* Weights transformed once per call by all threads, then threads over the tasks. */
static void conv_winograd(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                          const wino_plan *wp, float *y, float *scratch, int n_threads) {
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    float *u = scratch, *bias = u + wp->u;
    const int64_t macs = ys.n * i3_shape5_spatial(ys) * ys.c * xs.c * p->k[0] * 9;
#pragma omp parallel num_threads(n_threads) if (macs >= I3_PARALLEL_MIN_MACS)
    {
        float *slab = bias + wp->cout8 + (size_t)omp_get_thread_num() * (size_t)(wp->box.slab + wp->v + wp->m);
        float *v = slab + wp->box.slab, *m = v + wp->v;
#pragma omp for schedule(static)
        for (int64_t co = 0; co < wp->cout8; co++) {
            wino_weights(w, ys.c, xs.c, wp->depth, co, u);
            bias[co] = b && co < ys.c ? b[co] : 0.0f;
        }
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < wp->tasks; task++) wino_task(x, xs, p, wp, u, bias, task, slab, v, m, y);
    }
}

static size_t wino_scratch_bytes(const wino_plan *wp, int n_threads) {
    return (size_t)(wp->u + wp->cout8 + n_threads * (wp->box.slab + wp->v + wp->m)) * sizeof(float);
}

int i3_cpu_conv_parts(const float *x, i3_shape5 xs, const i3_conv_params *window, const i3_conv_part *parts,
                      int n_parts, float *y, void *scratch, size_t *scratch_bytes, int n_threads) {
    direct_plan dp;
    if (n_parts < 1 || n_parts > I3_CONV_MAX_PARTS || !direct_plan_of(xs, window, parts, n_parts, n_threads, &dp))
        return 0;
    if (scratch_bytes) *scratch_bytes = (size_t)(dp.pack + n_threads * (dp.slab + dp.seg_acc)) * sizeof(float);
    if (y) conv_direct(x, xs, window, parts, n_parts, &dp, y, scratch, n_threads);
    return 1;
}

/* A plain convolution as the direct path's one part. */
static i3_conv_part whole_conv(const float *w, const float *b, const i3_conv_params *p) {
    return (i3_conv_part){0, p->cout, {p->k[0], p->k[1], p->k[2]}, {0, 0, 0}, w, b};
}

size_t i3_cpu_conv_scratch_bytes(i3_shape5 xs, const i3_conv_params *p, int n_threads) {
    wino_plan wp;
    if (wino_plan_of(xs, p, n_threads, &wp)) return wino_scratch_bytes(&wp, n_threads);
    const i3_conv_part whole = whole_conv(NULL, NULL, p);
    size_t bytes;
    if (i3_cpu_conv_parts(NULL, xs, p, &whole, 1, NULL, NULL, &bytes, n_threads)) return bytes;
    if (is_pointwise(p)) return 0;
    const int64_t k_rows = xs.c * p->k[0] * p->k[1] * p->k[2];
    return (size_t)n_threads * (size_t)k_rows * (size_t)conv_tile_cols(xs, p, n_threads) * sizeof(float);
}

void i3_cpu_conv(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                 float *y, void *scratch, int n_threads) {
    wino_plan wp;
    if (wino_plan_of(xs, p, n_threads, &wp)) {
        conv_winograd(x, xs, w, b, p, &wp, y, scratch, n_threads);
        return;
    }
    const i3_conv_part whole = whole_conv(w, b, p);
    if (i3_cpu_conv_parts(x, xs, p, &whole, 1, y, scratch, NULL, n_threads)) return;
    const i3_shape5 ys = i3_conv_out_shape(xs, p);
    const int64_t s_out = i3_shape5_spatial(ys), s_in = i3_shape5_spatial(xs);
    const int64_t k_rows = xs.c * p->k[0] * p->k[1] * p->k[2];
    const int64_t t = conv_tile_cols(xs, p, n_threads);
    if (t == 0 || ys.n == 0 || ys.c == 0) return;
    const int64_t tiles = ceil_div(s_out, t);
    const int pointwise = is_pointwise(p);
    const int64_t macs = ys.n * s_out * ys.c * k_rows;

    /* Small convolutions (the deep 1x1x1 ones of an HRNet) run on one thread: on a busy machine the
     * barrier costs more than the work. */
#pragma omp parallel num_threads(n_threads) if (macs >= I3_PARALLEL_MIN_MACS)
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
