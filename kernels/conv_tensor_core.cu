/* 3D convolution (2D as depth 1) on tensor cores as an implicit GEMM, the semantics of kernels/conv.cu
 * and i3_cpu_conv_ref: rows m are output positions (n, z, y, x), columns the output channels, k runs
 * over (input channel, tap): D[m][o] = sum_k im2col(x)[m][k] * w[o][k], products of operands rounded
 * to f16, bf16 or TF32, accumulated in f32.
 *
 * Layouts: the weights are the graph's f32 [cout, cin, kd, kh, kw]; v2 rounds them as its tiles are
 * staged, v3 reads them packed (f16/bf16, in the k order of the input's layout, zero-padded to whole tiles):
 * by pack_operands into the launch's scratch, the same launch making an NCDHW input channels-last, or once
 * by the caller (conv_tensor_core_pack_weights; the CUDA backend keeps small layers' packed weights). Activations are NCDHW f32, or (f16/bf16 only) channels-last NDHWC holding f16/bf16 values:
 * the backend keeps a convolution's output that way when the next convolution reads it (through a
 * deferred instance norm), so that the reader's tiles are 16-byte runs of 8 consecutive channels of
 * one tap that cp.async copies as they are, at half the bytes.
 *
 * Kernel versions:
 *   v2 (TF32): a block of 4 warps per 64 x 32 tile of D, k step 8 (one mma m16n8k8 .tf32 per 8
 *       channels); per step the threads gather the im2col tile (zero outside the input) and the weight
 *       tile into shared memory, rounded (cvt.rna); fragments read from shared memory in the .tf32
 *       layout (ldmatrix is b16 only). No pipelining: TF32 is a comparison point, not the fast path.
 *   v3 (f16, bf16): a block of 8 warps per 128 x 64 tile of D, each warp 32 x 32 (2 x 4 mma m16n8k16 per
 *       16 k), k step 32 through a 3-stage shared-memory pipeline (rows padded to 80 bytes, so the 8
 *       rows of an ldmatrix fall in distinct banks). The A tile comes from channels-last input by
 *       cp.async (k = tap * cin + channel, cin a multiple of 8; chunks outside the input zero-filled)
 *       or from NCDHW f32 input by a gather that rounds (k = channel * taps + tap, any cin), 10-20x slower
 *       on an H200, so an NCDHW input whose channels pad to a multiple of 8 cheaply is first made
 *       channels-last in the scratch (pack_operands_v1, packed_input_channels); the weight
 *       tile by cp.async from the packed weights. Fragments by ldmatrix .x4 (A; B two 8-channel
 *       groups at a time). Output NCDHW f32, or channels-last f16/bf16 (two channels per 32-bit store).
 *       A layer with few output tiles splits its k range over several blocks (split-K, V3_SPLIT_*).
 *   Fusions (both): the deferred instance norm + activation of the input applied to the tiles as they
 *   are loaded (v3 channels-last: by each thread to the chunks it copied, once they have arrived;
 *   padding stays zero, as in the normalized tensor); the per-channel moments of the output (before
 *   any rounding) in the epilogue, merged over a column's lanes (shuffles) and the warps (shared
 *   memory), one partial per (plane, row tile) when every row tile lies in one sample (batch 1, or a
 *   spatial size that is a multiple of the row tile: conv_tensor_core_stat_chunks). */
#include "device.h"
#include "launchers.h"
#include "conv_geometry.h"
#include "moments.h"

namespace I3_NS {

/* Where output row m reads tap (0, 0, 0) of its window: sample and input coordinates. */
struct RowOrigin {
    int64_t sample, z, y, x;
    bool valid; /* m < rows */
};

__device__ __forceinline__ RowOrigin row_origin(const ConvGeometry &g, int64_t m) {
    const int64_t out_spatial = g.od * g.oh * g.ow;
    RowOrigin r;
    r.valid = m < g.n * out_spatial;
    const int64_t pos = m % out_spatial;
    r.sample = m / out_spatial;
    r.z = pos / (g.ow * g.oh) * g.stride[0] - g.pad[0];
    r.y = pos / g.ow % g.oh * g.stride[1] - g.pad[1];
    r.x = pos % g.ow * g.stride[2] - g.pad[2];
    return r;
}

/* The NCDHW input value of row r for k = channel * taps + tap (zero outside the input), with the
 * deferred norm applied. */
template <bool PROLOGUE>
__device__ __forceinline__ float gather_ncdhw(const float *__restrict__ x, const ConvGeometry &g, const RowOrigin &r,
                                              int64_t k, const float *__restrict__ in_scale_shift, i3_act act_in) {
    const int taps = g.k[0] * g.k[1] * g.k[2];
    if (!r.valid || k >= g.cin * taps) return 0.0f;
    const int64_t c = k / taps;
    const int tap = (int)(k % taps);
    const int64_t z = r.z + tap / (g.k[1] * g.k[2]), y = r.y + tap / g.k[2] % g.k[1], xx = r.x + tap % g.k[2];
    if (z < 0 || z >= g.d || y < 0 || y >= g.h || xx < 0 || xx >= g.w) return 0.0f;
    float v = x[(((r.sample * g.cin + c) * g.d + z) * g.h + y) * g.w + xx];
    if (PROLOGUE) {
        const float *ss = in_scale_shift + 2 * (r.sample * g.cin + c);
        v = act_apply(act_in, v * ss[0] + ss[1]);
    }
    return v;
}

/* Where a thread's 8-channel chunk of a channels-last A tile lies, k = tap * cin + channel, with the tap's
 * offsets (a, b, e) along (d, h, w): followed from one k step to the next by additions, so that the
 * pipeline's loop has no division. */
struct TapCursor {
    int tap, a, b, e;
    int64_t channel;
};

__device__ __forceinline__ TapCursor tap_cursor(const ConvGeometry &g, int64_t k) {
    TapCursor c;
    c.tap = (int)(k / g.cin);
    c.channel = k % g.cin;
    c.a = c.tap / (g.k[1] * g.k[2]);
    c.b = c.tap / g.k[2] % g.k[1];
    c.e = c.tap % g.k[2];
    return c;
}

__device__ __forceinline__ void tap_cursor_advance(TapCursor &c, const ConvGeometry &g, int by) {
    for (c.channel += by; c.channel >= g.cin; c.channel -= g.cin) {
        c.tap++;
        if (++c.e == g.k[2]) {
            c.e = 0;
            if (++c.b == g.k[1]) c.b = 0, c.a++;
        }
    }
}

/* The 8 channels at the cursor of row r in channels-last input, or NULL outside it (or beyond k). */
__device__ __forceinline__ const uint16_t *chunk_ndhwc(const uint16_t *__restrict__ x, const ConvGeometry &g,
                                                       const RowOrigin &r, const TapCursor &c) {
    if (!r.valid || c.tap >= g.k[0] * g.k[1] * g.k[2]) return NULL;
    const int64_t z = r.z + c.a, y = r.y + c.b, xx = r.x + c.e;
    if (z < 0 || z >= g.d || y < 0 || y >= g.h || xx < 0 || xx >= g.w) return NULL;
    return x + (((r.sample * g.d + z) * g.h + y) * g.w + xx) * g.cin + c.channel;
}

/* The weight of output channel o at k in the k order of the input's layout (zero outside). w is
 * [cout, w_cin, taps]; g.cin may be more (input channels padded with zeros, pack_operands_v1): zero there. */
__device__ __forceinline__ float weight_at(const float *__restrict__ w, const ConvGeometry &g, int64_t w_cin,
                                           int64_t o, int64_t k, bool channels_last) {
    const int taps = g.k[0] * g.k[1] * g.k[2];
    if (o >= g.cout || k >= g.cin * taps) return 0.0f;
    const int64_t c = channels_last ? k % g.cin : k / taps, tap = channels_last ? k / g.cin : k % taps;
    return c < w_cin ? __ldg(&w[(o * w_cin + c) * taps + tap]) : 0.0f;
}

/* Epilogue statistics of a block's tile of D: mo[j][q] holds a lane's moments of its column
 * 8j + 2t + q (t = lane % 4) of the warp's columns; the 8 lanes of a column merge by shuffles, the
 * warps_m warps of a column through shared memory (scratch: warps_m x bn), and thread c < bn returns
 * column c's moments. */
template <int J>
__device__ __forceinline__ Moments block_column_moments(Moments (&mo)[J][2], int warp_m, int warps_m, int warp_col0,
                                                        int bn, Moments *scratch) {
    const int tid = threadIdx.x, lane = tid % 32;
    I3_UNROLL
    for (int j = 0; j < J; j++)
        for (int q = 0; q < 2; q++) {
            Moments m = moments_warp_merge(mo[j][q], 4 | 8 | 16);
            if (lane / 4 == 0) scratch[warp_m * bn + warp_col0 + j * 8 + 2 * lane + q] = m;
        }
    __syncthreads();
    Moments m = {0.0f, 0.0f, 0.0f};
    if (tid < bn) {
        m = scratch[tid];
        for (int k = 1; k < warps_m; k++) m = moments_merge(m, scratch[k * bn + tid]);
    }
    return m;
}

__device__ __forceinline__ void store_partial(float *partials, const ConvGeometry &g, int64_t m0, int tile_rows,
                                              int64_t o, int chunks, Moments m) {
    const int64_t out_spatial = g.od * g.oh * g.ow, sample = m0 / out_spatial;
    float *part = partials + ((sample * g.cout + o) * chunks + (m0 - sample * out_spatial) / tile_rows) * 3;
    part[0] = m.count;
    part[1] = m.mean;
    part[2] = m.m2;
}

#define V2_BM 64       /* output positions per block */
#define V2_BN 32       /* output channels per block */
#define V2_BK 8        /* k per step: one mma m16n8k8 */
#define V2_THREADS 128 /* four warps, each 16 positions x 32 channels */

/* PROLOGUE: the input's deferred norm; STATS: per-channel moments to partials (conv_v1's meaning). */
template <bool PROLOGUE, bool STATS>
__global__ void __launch_bounds__(V2_THREADS)
    conv_tensor_core_v2(const float *__restrict__ x, const float *__restrict__ w, const float *__restrict__ b,
                        ConvGeometry g, i3_act act, const float *__restrict__ in_scale_shift, i3_act act_in,
                        float *__restrict__ y, float *__restrict__ partials, int chunks) {
    __shared__ uint32_t tile_a[V2_BM][V2_BK]; /* im2col rows: [position][k], TF32 */
    __shared__ uint32_t tile_b[V2_BN][V2_BK]; /* weights: [output channel][k], TF32 */
    __shared__ Moments scratch[V2_THREADS / 32 * V2_BN];
    const int64_t out_spatial = g.od * g.oh * g.ow, rows = g.n * out_spatial;
    const int64_t depth = g.cin * g.k[0] * g.k[1] * g.k[2], m0 = (int64_t)blockIdx.x * V2_BM;
    const int n0 = blockIdx.y * V2_BN, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int group = lane / 4, t = lane % 4;
    float acc[4][4] = {};

    for (int64_t k0 = 0; k0 < depth; k0 += V2_BK) {
        for (int e = tid; e < V2_BM * V2_BK; e += V2_THREADS) {
            const int r = e / V2_BK, kk = e % V2_BK;
            RowOrigin origin = row_origin(g, m0 + r);
            tile_a[r][kk] = to_tf32(gather_ncdhw<PROLOGUE>(x, g, origin, k0 + kk, in_scale_shift, act_in));
        }
        for (int e = tid; e < V2_BN * V2_BK; e += V2_THREADS)
            tile_b[e / V2_BK][e % V2_BK] = to_tf32(weight_at(w, g, g.cin, n0 + e / V2_BK, k0 + e % V2_BK, false));
        __syncthreads();
        uint32_t frag_a[4]; /* the m16n8k8 .tf32 layouts of device.h */
        I3_UNROLL
        for (int i = 0; i < 4; i++) frag_a[i] = tile_a[warp * 16 + group + 8 * (i % 2)][t + 4 * (i / 2)];
        I3_UNROLL
        for (int j = 0; j < 4; j++) {
            uint32_t frag_b[2] = {tile_b[j * 8 + group][t], tile_b[j * 8 + group][t + 4]};
            mma_m16n8k8_tf32(acc[j], frag_a, frag_b, acc[j]);
        }
        __syncthreads();
    }

    Moments mo[4][2] = {};
    I3_UNROLL
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 4; i++) {
            const int64_t m = m0 + warp * 16 + group + 8 * (i / 2), o = n0 + j * 8 + 2 * t + i % 2;
            const float v = act_apply(act, acc[j][i] + (b && o < g.cout ? b[o] : 0.0f));
            if (m >= rows) continue;
            if (STATS) moments_add(mo[j][i % 2], v);
            if (o < g.cout) y[(m / out_spatial * g.cout + o) * out_spatial + m % out_spatial] = v;
        }
    if (STATS) {
        Moments m = block_column_moments<4>(mo, warp, V2_THREADS / 32, 0, V2_BN, scratch);
        if (tid < V2_BN && n0 + tid < g.cout) store_partial(partials, g, m0, V2_BM, n0 + tid, chunks, m);
    }
}

#define V3_BM 128
#define V3_BN 64
#define V3_BK 32
#define V3_STAGES 3
#define V3_THREADS 256           /* 8 warps: 4 along the rows x 2 along the channels, 32 x 32 each */
#define V3_ROW (V3_BK + 8)       /* b16 per shared row (80 bytes) */
#define V3_STAGE ((V3_BM + V3_BN) * V3_ROW)
/* Split-K: a layer with few output tiles (HRNet's low-resolution branches, a U-Net's deepest stages: 64-336
 * rows, up to 8640 deep) would run its whole k range in a handful of blocks, one k step after another (41-270
 * steps). Such a tile's k range is split over up to V3_SPLIT_MAX blocks (blockIdx.z) of at least
 * V3_SPLIT_MIN_STEPS steps each, so that about V3_SPLIT_BLOCKS blocks run: two per SM of a 132-SM H100/H200,
 * a constant so that the scratch planned before a run is what the launch uses. */
#define V3_SPLIT_BLOCKS 264
#define V3_SPLIT_MIN_STEPS 3
#define V3_SPLIT_MAX 16

/* How a launch splits k (splits == 1: not at all): blockIdx.z runs k tiles [z * k_tiles_each, ...); each
 * block leaves its sums in `sums`, [tile][split][32 values][V3_THREADS], and counts itself in its tile's
 * counter; the last to arrive adds them up and sets the counter back to zero. The counters are the caller's
 * (zero, and left zero by every launch) or in the scratch, zeroed by pack_operands_v1 before the launch. */
struct SplitK {
    int splits, k_tiles_each, tiles;
    float *sums;
    unsigned *counters;
};

/* A transposed convolution with stride = kernel (kernels/conv_transpose.cu's semantics) as v3's GEMM: rows
 * the input positions, columns n = tap * cout + output channel, k the input channels (a 1x1x1 conv with
 * cout x taps outputs), each product written to its own output position (no overlap). cout = 0: a plain
 * convolution. */
struct Upsample {
    int64_t cout, stride; /* output channels, and elements from one output position to the next */
    int k[3];
};

/* What v3 reads, made by pack_operands_v1 before each launch, in one pass:
 * - the weights as packed[n][k] (rows of k_packed = depth rounded up to V3_BK, columns rounded up to V3_BN
 *   rows, zeros beyond), rounded to f16/bf16: a conv's [cout, w_cin, taps] with k in the order of the input's
 *   layout (weight_at), or a transposed conv's [cin, cout, k0, k1, k2] with n = tap * cout + o, k = c;
 * - with x (NCDHW f32 [n, c, spatial]; NULL: none) the input as channels-last b16 [n, spatial, cp] (cp >= c,
 *   the channels beyond c zero), the deferred norm applied: the input of v3's cp.async path;
 * - split-K's tile counters zeroed. */
struct Operands {
    const float *w;
    ConvGeometry g;
    int64_t w_cin;
    bool channels_last;
    Upsample up; /* up.cout > 0: a transposed conv's weights */
    int64_t k_packed, n_weights;
    uint16_t *packed;
    const float *x;
    int64_t c, spatial, cp, n_input;
    const float *in_scale_shift;
    i3_act act_in;
    uint16_t *packed_x;
};

template <bool BF16>
__global__ void pack_operands_v1(Operands o, SplitK split) {
    const int64_t n = o.n_weights + o.n_input, counters = split.splits > 1 ? split.tiles : 0;
    I3_GRID_STRIDE_LOOP(i, n > counters ? n : counters) {
        if (i < counters) split.counters[i] = 0;
        if (i >= n) continue;
        if (i < o.n_weights) {
            float v;
            if (o.up.cout) {
                const int64_t col = i / o.k_packed, c = i % o.k_packed, tap = col / o.up.cout, ch = col % o.up.cout;
                const int64_t taps = (int64_t)o.up.k[0] * o.up.k[1] * o.up.k[2];
                v = tap < taps && c < o.w_cin ? __ldg(&o.w[(c * o.up.cout + ch) * taps + tap]) : 0.0f;
            } else {
                v = weight_at(o.w, o.g, o.w_cin, i / o.k_packed, i % o.k_packed, o.channels_last);
            }
            o.packed[i] = to_b16<BF16>(v);
        } else {
            const int64_t j = i - o.n_weights, ch = j % o.cp, plane = j / (o.cp * o.spatial) * o.c + ch;
            float v = 0.0f;
            if (ch < o.c) {
                v = o.x[plane * o.spatial + j / o.cp % o.spatial];
                if (o.in_scale_shift)
                    v = act_apply(o.act_in, v * o.in_scale_shift[2 * plane] + o.in_scale_shift[2 * plane + 1]);
            }
            o.packed_x[j] = to_b16<BF16>(v);
        }
    }
}

/* Split-K's meeting point, after a block's k steps: it leaves its sums in split.sums and counts itself in; the
 * last block of the tile to arrive adds every split's sums in split order (the same bits whichever arrives
 * last) into acc and returns true, to go on to the epilogue; the others return false and exit. */
__device__ __forceinline__ bool split_sums_complete(float (&acc)[2][4][4], const SplitK &split) {
    __shared__ int last;
    const int tid = threadIdx.x;
    const int64_t tile = (int64_t)blockIdx.y * gridDim.x + blockIdx.x;
    float *own = split.sums + ((tile * split.splits + blockIdx.z) * 32) * V3_THREADS + tid;
    I3_UNROLL
    for (int e = 0; e < 32; e++) own[e * V3_THREADS] = acc[e / 16][e / 4 % 4][e % 4];
    __threadfence(); /* the sums are visible to the whole device before the counter says they are there */
    __syncthreads();
    if (tid == 0) last = atomicAdd(&split.counters[tile], 1u) == (unsigned)split.splits - 1;
    __syncthreads();
    if (!last) return false;
    __threadfence();
    I3_UNROLL
    for (int e = 0; e < 32; e++) acc[e / 16][e / 4 % 4][e % 4] = 0.0f;
    for (int z = 0; z < split.splits; z++) {
        const float *sums = split.sums + ((tile * split.splits + z) * 32) * V3_THREADS + tid;
        I3_UNROLL
        for (int e = 0; e < 32; e++) acc[e / 16][e / 4 % 4][e % 4] += __ldcg(&sums[e * V3_THREADS]); /* past L1 */
    }
    if (tid == 0) split.counters[tile] = 0; /* every block of the tile has counted: zero for the next launch */
    return true;
}

/* The residual's value at output row m, channel o of cout (NCDHW f32 or channels-last b16). */
template <bool BF16>
__device__ __forceinline__ float residual_at(const void *skip, bool skip_cl, int64_t m, int64_t o, int64_t cout,
                                             int64_t out_spatial) {
    if (skip_cl) return from_b16<BF16>(((const uint16_t *)skip)[m * cout + o]);
    return ((const float *)skip)[(m / out_spatial * cout + o) * out_spatial + m % out_spatial];
}

/* Flags are uniform over the grid: x_cl: the input is channels-last b16 (else NCDHW f32); y_cl: the
 * same for the output; prologue, stats: conv_v1's fusions; up.cout > 0: a transposed conv (Upsample;
 * output channels-last, no statistics); split: the k range of blockIdx.z; res.skip: a residual add after
 * act (i3_residual). */
template <bool BF16>
__global__ void __launch_bounds__(V3_THREADS)
    conv_tensor_core_v3(const void *__restrict__ x_in, bool x_cl, const uint16_t *__restrict__ packed,
                        int64_t k_packed, const float *__restrict__ b, ConvGeometry g, i3_act act,
                        const float *__restrict__ in_scale_shift, i3_act act_in, void *__restrict__ y_out, bool y_cl,
                        float *__restrict__ partials, int chunks, Upsample up, SplitK split, i3_residual res) {
    __shared__ __align__(16) uint16_t smem[V3_STAGES * V3_STAGE];
    typedef uint16_t(*Rows)[V3_ROW];
    const int64_t out_spatial = g.od * g.oh * g.ow, rows = g.n * out_spatial;
    const int64_t depth = g.cin * g.k[0] * g.k[1] * g.k[2], m0 = (int64_t)blockIdx.x * V3_BM;
    const int k_begin = (int)blockIdx.z * split.k_tiles_each;
    const int k_rest = (int)((depth + V3_BK - 1) / V3_BK) - k_begin;
    const int steps = k_rest < split.k_tiles_each ? k_rest : split.k_tiles_each;
    const int n0 = blockIdx.y * V3_BN, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int warp_m = warp % 4, warp_n = warp / 4;
    const bool prologue = in_scale_shift != NULL;
    const float *xf = (const float *)x_in;
    const uint16_t *xh = (const uint16_t *)x_in;

    /* Each thread loads the same rows at every step: channels-last, chunk tid % 4 of rows tid / 4 and
     * tid / 4 + 64; NCDHW, k = tid / 128 + 2i of row tid % 128; weights: chunk tid % 4 of channel
     * tid / 4 (the packed rows are whole tiles: no bounds). */
    RowOrigin origin[2] = {};
    if (x_cl) {
        origin[0] = row_origin(g, m0 + tid / 4);
        origin[1] = row_origin(g, m0 + tid / 4 + 64);
    } else {
        origin[0] = row_origin(g, m0 + tid % 128);
    }
    /* channels-last: the k of this thread's chunk for the next load_stage and the next normalize_chunks
     * (each is called for step = 0, 1, 2, ... in order) */
    TapCursor load_at = tap_cursor(g, (int64_t)k_begin * V3_BK + 8 * (tid % 4)), norm_at = load_at;
    auto load_stage = [&](int slot, int step) {
        Rows tile_a = (Rows)(smem + slot * V3_STAGE), tile_b = tile_a + V3_BM;
        const int64_t k0 = (int64_t)(k_begin + step) * V3_BK;
        if (x_cl) {
            I3_UNROLL
            for (int i = 0; i < 2; i++) {
                uint16_t *dst = &tile_a[tid / 4 + 64 * i][8 * (tid % 4)];
                const uint16_t *src = chunk_ndhwc(xh, g, origin[i], load_at);
                if (src) {
                    cp_async_16(dst, src);
                } else {
                    uint32_t *zero = (uint32_t *)dst;
                    zero[0] = zero[1] = zero[2] = zero[3] = 0;
                }
            }
            tap_cursor_advance(load_at, g, V3_BK);
        } else {
            for (int i = 0; i < V3_BK / 2; i++) {
                const int kk = tid / 128 + 2 * i;
                const float v = prologue ? gather_ncdhw<true>(xf, g, origin[0], k0 + kk, in_scale_shift, act_in)
                                         : gather_ncdhw<false>(xf, g, origin[0], k0 + kk, in_scale_shift, act_in);
                tile_a[tid % 128][kk] = to_b16<BF16>(v);
            }
        }
        cp_async_16(&tile_b[tid / 4][8 * (tid % 4)], packed + (int64_t)(n0 + tid / 4) * k_packed + k0 + 8 * (tid % 4));
    };
    /* The deferred norm on the chunks this thread copied for the next step (they have arrived). */
    auto normalize_chunks = [&](int slot) {
        Rows tile_a = (Rows)(smem + slot * V3_STAGE);
        I3_UNROLL
        for (int i = 0; i < 2; i++) {
            if (!chunk_ndhwc(xh, g, origin[i], norm_at)) continue;
            uint16_t *v = &tile_a[tid / 4 + 64 * i][8 * (tid % 4)];
            const float *ss = in_scale_shift + 2 * (origin[i].sample * g.cin + norm_at.channel);
            I3_UNROLL
            for (int j = 0; j < 8; j++) v[j] = to_b16<BF16>(act_apply(act_in, from_b16<BF16>(v[j]) * ss[2 * j] + ss[2 * j + 1]));
        }
        tap_cursor_advance(norm_at, g, V3_BK);
    };

    float acc[2][4][4] = {};
    for (int s = 0; s < V3_STAGES - 1; s++) {
        if (s < steps) load_stage(s, s);
        cp_async_commit();
    }
    const int quad = lane / 8, row = lane % 8; /* ldmatrix: lanes 8q..8q+7 address the rows of matrix q */
    for (int step = 0; step < steps; step++) {
        const int slot = step % V3_STAGES;
        cp_async_wait_group<V3_STAGES - 2>(); /* this thread's copies for this step are in */
        if (x_cl && prologue) normalize_chunks(slot);
        __syncthreads(); /* everyone's tiles for this step are in; everyone is done with the last step's slot */
        if (step + V3_STAGES - 1 < steps) load_stage((step + V3_STAGES - 1) % V3_STAGES, step + V3_STAGES - 1);
        cp_async_commit();
        Rows tile_a = (Rows)(smem + slot * V3_STAGE), tile_b = tile_a + V3_BM;
        I3_UNROLL
        for (int k16 = 0; k16 < V3_BK; k16 += 16) {
            uint32_t frag_a[2][4], frag_b[4][2];
            I3_UNROLL
            for (int i = 0; i < 2; i++)
                ldmatrix_x4(frag_a[i], &tile_a[warp_m * 32 + i * 16 + row + 8 * (quad % 2)][k16 + 8 * (quad / 2)]);
            I3_UNROLL
            for (int j = 0; j < 4; j += 2) {
                uint32_t r[4];
                ldmatrix_x4(r, &tile_b[warp_n * 32 + (j + quad / 2) * 8 + row][k16 + 8 * (quad % 2)]);
                frag_b[j][0] = r[0], frag_b[j][1] = r[1], frag_b[j + 1][0] = r[2], frag_b[j + 1][1] = r[3];
            }
            I3_UNROLL
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 4; j++)
                    if (BF16)
                        mma_m16n8k16_bf16(acc[i][j], frag_a[i], frag_b[j], acc[i][j]);
                    else
                        mma_m16n8k16_f16(acc[i][j], frag_a[i], frag_b[j], acc[i][j]);
        }
    }

    if (split.splits > 1 && !split_sums_complete(acc, split)) return; /* uniform over the block */
    const int group = lane / 4, t = lane % 4;
    /* the output row of this thread's accumulators acc[i][.][2 * half + .] */
    const auto row_of = [&](int i, int half) { return m0 + warp_m * 32 + i * 16 + group + 8 * half; };
    /* every loop unrolled: acc stays in registers (indexed at run time, it went to the stack) */
    I3_UNROLL
    for (int i = 0; i < 2; i++)
        I3_UNROLL
        for (int j = 0; j < 4; j++)
            I3_UNROLL
            for (int half = 0; half < 2; half++) {
                const int64_t m = row_of(i, half), o = n0 + warp_n * 32 + j * 8 + 2 * t;
                const int64_t channel = up.cout ? o % up.cout : o; /* of the bias and the output */
                float v[2];
                I3_UNROLL
                for (int q = 0; q < 2; q++)
                    v[q] = act_apply(act, acc[i][j][2 * half + q] + (b && o + q < g.cout ? b[channel + q] : 0.0f));
                if (partials) acc[i][j][2 * half] = v[0], acc[i][j][2 * half + 1] = v[1]; /* for the statistics */
                if (m >= rows) continue;
                if (res.skip) /* read before y is written: skip may be y */
                    I3_UNROLL
                    for (int q = 0; q < 2; q++)
                        if (o + q < g.cout)
                            v[q] = act_apply(res.act, v[q] + residual_at<BF16>(res.skip, res.layout == I3_LAYOUT_NDHWC,
                                                                               m, o + q, g.cout, out_spatial));
                if (up.cout) { /* to the output position of input position m's tap o / up.cout */
                    if (o < g.cout) {
                        const int64_t tap = o / up.cout, pos = m % out_spatial;
                        const int64_t z = (pos / (g.ow * g.oh)) * up.k[0] + tap / (up.k[1] * up.k[2]);
                        const int64_t yy = (pos / g.ow % g.oh) * up.k[1] + tap / up.k[2] % up.k[1];
                        const int64_t xx = (pos % g.ow) * up.k[2] + tap % up.k[2];
                        const int64_t at = ((m / out_spatial * g.od * up.k[0] + z) * g.oh * up.k[1] + yy) * g.ow * up.k[2] + xx;
                        *(uint32_t *)((uint16_t *)y_out + at * up.stride + channel) =
                            pack_b16(to_b16<BF16>(v[0]), to_b16<BF16>(v[1]));
                    }
                } else if (y_cl) { /* cout is a multiple of 8: o < cout means o + 1 < cout */
                    if (o < g.cout)
                        *(uint32_t *)((uint16_t *)y_out + m * g.cout + o) = pack_b16(to_b16<BF16>(v[0]), to_b16<BF16>(v[1]));
                } else {
                    float *y = (float *)y_out + (m / out_spatial * g.cout + o) * out_spatial + m % out_spatial;
                    for (int q = 0; q < 2; q++)
                        if (o + q < g.cout) y[q * out_spatial] = v[q];
                }
            }
    if (partials) {
        /* the moments of each of this thread's columns over its rows in the tile (2 fragments x 2 halves) */
        const bool valid[4] = {row_of(0, 0) < rows, row_of(0, 1) < rows, row_of(1, 0) < rows, row_of(1, 1) < rows};
        Moments mo[4][2];
        I3_UNROLL
        for (int j = 0; j < 4; j++)
            I3_UNROLL
            for (int q = 0; q < 2; q++) {
                const float v[4] = {acc[0][j][q], acc[0][j][2 + q], acc[1][j][q], acc[1][j][2 + q]};
                mo[j][q] = moments_of(v, valid);
            }
        cp_async_wait_all(); /* the pipeline's last (empty) groups, before its memory is reused */
        __syncthreads();
        Moments m = block_column_moments<4>(mo, warp_m, 4, warp_n * 32, V3_BN, (Moments *)smem);
        if (tid < V3_BN && n0 + tid < g.cout) store_partial(partials, g, m0, V3_BM, n0 + tid, chunks, m);
    }
}

}  // namespace I3_NS

using namespace I3_NS;

static_assert(V3_SPLIT_BLOCKS <= I3_TC_SPLIT_COUNTERS, "a split launch has fewer tiles than V3_SPLIT_BLOCKS");
static_assert(V3_BM / 32 * V3_BN * sizeof(Moments) <= sizeof(uint16_t) * V3_STAGES * V3_STAGE,
              "v3's statistics reuse its pipeline's shared memory");

extern "C" int I3_DEV(conv_tensor_core_stat_chunks)(i3_shape5 ys, int precision) {
    const int64_t spatial = ys.d * ys.h * ys.w, tile = precision == I3_TC_TF32 ? V2_BM : V3_BM;
    if (ys.n == 1) return (int)((spatial + tile - 1) / tile);
    return spatial % tile == 0 ? (int)(spatial / tile) : 0;
}

/* The v2 kernel for one (prologue, statistics) combination. */
static decltype(&conv_tensor_core_v2<false, false>) tf32_kernel(bool prologue, bool stats) {
    return prologue ? (stats ? conv_tensor_core_v2<true, true> : conv_tensor_core_v2<true, false>)
                    : (stats ? conv_tensor_core_v2<false, true> : conv_tensor_core_v2<false, false>);
}

/* v3's packed weights: k_packed per output channel, rows for whole column tiles. */
static int64_t packed_depth(const ConvGeometry &g) {
    return (g.cin * g.k[0] * g.k[1] * g.k[2] + V3_BK - 1) / V3_BK * V3_BK;
}
static int64_t packed_rows(const ConvGeometry &g) { return (g.cout + V3_BN - 1) / V3_BN * V3_BN; }
static size_t aligned_256(size_t bytes) { return (bytes + 255) / 256 * 256; }
static size_t packed_weight_bytes(const ConvGeometry &g) {
    return aligned_256((size_t)(packed_rows(g) * packed_depth(g)) * sizeof(uint16_t));
}

/* The channels v3 reads an NCDHW f32 input with after pack_operands_v1 has made it channels-last (0: it gathers
 * from NCDHW instead): its channels padded to a multiple of 8, when that adds at most a third (HRNet's 18 and
 * 36 -> 24 and 40; not a U-Net's 1-channel image). On an H200 the channels-last path ran 66-138 TFLOP/s and the
 * gather 7-13 on the same 3d_fullres layers, so one pass over the input to convert it pays for itself. */
static int64_t packed_input_channels(i3_shape5 xs, bool x_cl, int precision) {
    if (x_cl || (precision != I3_TC_F16 && precision != I3_TC_BF16)) return 0;
    const int64_t cp = (xs.c + 7) / 8 * 8;
    return 3 * cp <= 4 * xs.c ? cp : 0;
}

/* The channels of v3's input as it reads it (packed_input_channels, or the input's own) into g.cin; returns
 * the channels-last copy's channels (0: none). */
static int64_t read_channels(ConvGeometry &g, i3_shape5 xs, bool x_cl, int precision) {
    const int64_t cp = packed_input_channels(xs, x_cl, precision);
    if (cp) g.cin = cp;
    return cp;
}

/* How v3 splits the k range of GEMM geometry g (V3_SPLIT_BLOCKS): splits and tiles filled in, no buffers. */
static SplitK v3_split(const ConvGeometry &g) {
    const int64_t rows = g.n * g.od * g.oh * g.ow, k_tiles = packed_depth(g) / V3_BK;
    const int64_t tiles = (rows + V3_BM - 1) / V3_BM * (packed_rows(g) / V3_BN);
    int64_t splits = tiles > 0 ? (V3_SPLIT_BLOCKS + tiles - 1) / tiles : 1;
    splits = splits < k_tiles / V3_SPLIT_MIN_STEPS ? splits : k_tiles / V3_SPLIT_MIN_STEPS;
    splits = splits < V3_SPLIT_MAX ? splits : V3_SPLIT_MAX;
    SplitK split = {1, (int)k_tiles, (int)tiles, NULL, NULL};
    if (splits > 1) {
        split.k_tiles_each = (int)((k_tiles + splits - 1) / splits);
        split.splits = (int)((k_tiles + split.k_tiles_each - 1) / split.k_tiles_each); /* none empty */
    }
    return split;
}

/* A conv's GEMM geometry as v3 reads an input of shape xs in x_layout (read_channels); cp: the channels of the
 * input's channels-last copy (0: none). */
static ConvGeometry read_geometry(i3_shape5 xs, int x_layout, const i3_conv_params *p, int precision, int64_t *cp) {
    ConvGeometry g = conv_geometry(xs, p, i3_conv_out_shape(xs, p));
    *cp = read_channels(g, xs, x_layout == I3_LAYOUT_NDHWC, precision);
    return g;
}

/* v3's scratch for GEMM geometry g (g.cin: after any channel padding) on input xs, in order: the packed
 * weights, the input's channels-last copy (cp channels; 0: none), split-K's sums and counters; and the split
 * (its buffers unset). */
struct V3Scratch {
    size_t input_at, sums_at, counters_at, bytes;
    SplitK split;
};
static V3Scratch v3_scratch(const ConvGeometry &g, i3_shape5 xs, int64_t cp) {
    V3Scratch at;
    at.split = v3_split(g);
    const bool split = at.split.splits > 1;
    at.input_at = packed_weight_bytes(g);
    at.sums_at = at.input_at + aligned_256((size_t)(xs.n * i3_shape5_spatial(xs) * cp) * sizeof(uint16_t));
    at.counters_at = at.sums_at + (split ? (size_t)at.split.tiles * at.split.splits * 32 * V3_THREADS * sizeof(float) : 0);
    at.bytes = at.counters_at + (split ? aligned_256((size_t)at.split.tiles * sizeof(unsigned)) : 0);
    return at;
}

/* What pack_operands_v1 makes of the weights w (w_cin input channels) for geometry g as v3 reads it (g.cin
 * after read_channels; cp: the channels of the input's copy, 0: none). */
static Operands weight_operands(const float *w, int64_t w_cin, const ConvGeometry &g, Upsample up, bool x_cl,
                                int64_t cp) {
    Operands o = {};
    o.w = w, o.w_cin = w_cin, o.up = up, o.g = g, o.channels_last = x_cl || cp;
    o.k_packed = packed_depth(g), o.n_weights = packed_rows(g) * o.k_packed;
    return o;
}

/* Packs v3's operands into the scratch (pack_operands_v1: the weights w unless packed_weights holds them
 * already, up.cout > 0 a transposed conv's; an NCDHW input channels-last when packed_input_channels says so;
 * split-K's counters; no launch when there is nothing to make) and launches v3 on them: the copy then stands
 * for x (channels-last, g.cin padded, the deferred norm applied). */
static int launch_v3(const void *x, bool x_cl, i3_shape5 xs, ConvGeometry g, const float *w, Upsample up,
                     const uint16_t *packed_weights, unsigned *split_counters, const float *b, i3_act act,
                     const float *in_scale_shift, i3_act act_in, void *y, bool y_cl, float *partials, int chunks,
                     const i3_residual &residual, int precision, void *scratch, void *stream) {
    const int64_t cp = read_channels(g, xs, x_cl, precision);
    Operands o = weight_operands(w, xs.c, g, up, x_cl, cp);
    const V3Scratch at = v3_scratch(g, xs, cp);
    SplitK split = at.split;
    split.sums = (float *)((char *)scratch + at.sums_at);
    split.counters = split_counters ? split_counters : (unsigned *)((char *)scratch + at.counters_at);
    const SplitK zeroed = split_counters ? SplitK{} : split; /* the counters the pack launch zeroes */
    o.packed = (uint16_t *)scratch;
    if (packed_weights) o.packed = (uint16_t *)packed_weights, o.n_weights = 0;
    if (cp) {
        o.x = (const float *)x, o.c = xs.c, o.spatial = i3_shape5_spatial(xs), o.cp = cp;
        o.n_input = xs.n * o.spatial * cp, o.in_scale_shift = in_scale_shift, o.act_in = act_in;
        o.packed_x = (uint16_t *)((char *)scratch + at.input_at);
        x = o.packed_x, x_cl = true, in_scale_shift = NULL;
    }
    const bool bf16 = precision == I3_TC_BF16;
    decltype(&pack_operands_v1<false>) pack = bf16 ? pack_operands_v1<true> : pack_operands_v1<false>;
    decltype(&conv_tensor_core_v3<false>) conv = bf16 ? conv_tensor_core_v3<true> : conv_tensor_core_v3<false>;
    const int64_t n = o.n_weights + o.n_input, counters = zeroed.splits > 1 ? zeroed.tiles : 0;
    const int64_t n_pack = n > counters ? n : counters;
    if (n_pack > 0) {
        const int e = (int)I3_LAUNCH(pack, grid_stride_blocks(n_pack, 256), 256, 0, (cudaStream_t)stream, o, zeroed);
        if (e) return e;
    }
    const int64_t rows = g.n * g.od * g.oh * g.ow;
    dim3 grid((unsigned)((rows + V3_BM - 1) / V3_BM), (unsigned)((g.cout + V3_BN - 1) / V3_BN), (unsigned)split.splits);
    return (int)I3_LAUNCH(conv, grid, V3_THREADS, 0, (cudaStream_t)stream, x, x_cl, (const uint16_t *)o.packed,
                          o.k_packed, b, g, act, in_scale_shift, act_in, y, y_cl, partials, chunks, up, split, residual);
}

extern "C" size_t I3_DEV(conv_tensor_core_scratch_bytes)(i3_shape5 xs, int x_layout, const i3_conv_params *p,
                                                         int precision) {
    if (precision == I3_TC_TF32) return 0;
    int64_t cp;
    const ConvGeometry g = read_geometry(xs, x_layout, p, precision, &cp); /* its row tiles decide the split */
    return v3_scratch(g, xs, cp).bytes;
}

extern "C" int I3_DEV(conv_tensor_core_k_splits)(i3_shape5 xs, int x_layout, const i3_conv_params *p, int precision) {
    if (precision != I3_TC_F16 && precision != I3_TC_BF16) return 1;
    int64_t cp;
    return v3_split(read_geometry(xs, x_layout, p, precision, &cp)).splits;
}

extern "C" size_t I3_DEV(conv_tensor_core_packed_weights_bytes)(i3_shape5 xs, int x_layout, const i3_conv_params *p,
                                                                 int precision) {
    if (precision != I3_TC_F16 && precision != I3_TC_BF16) return 0;
    int64_t cp;
    return packed_weight_bytes(read_geometry(xs, x_layout, p, precision, &cp));
}

extern "C" int I3_DEV(conv_tensor_core_pack_weights)(i3_shape5 xs, int x_layout, const float *w,
                                                     const i3_conv_params *p, int precision, void *packed,
                                                     void *stream) {
    if ((precision != I3_TC_F16 && precision != I3_TC_BF16) || !packed) return (int)cudaErrorInvalidValue;
    int64_t cp;
    const ConvGeometry g = read_geometry(xs, x_layout, p, precision, &cp);
    Operands o = weight_operands(w, xs.c, g, Upsample{}, x_layout == I3_LAYOUT_NDHWC, cp);
    o.packed = (uint16_t *)packed;
    decltype(&pack_operands_v1<false>) pack = precision == I3_TC_BF16 ? pack_operands_v1<true> : pack_operands_v1<false>;
    return (int)I3_LAUNCH(pack, grid_stride_blocks(o.n_weights, 256), 256, 0, (cudaStream_t)stream, o, SplitK{});
}

extern "C" int I3_DEV(conv_tensor_core_fused)(const void *x, i3_shape5 xs, int x_layout, const float *w,
                                              const void *packed_weights, unsigned *split_counters, const float *b,
                                              const i3_conv_params *p,
                                              const float *in_scale_shift, i3_act act_in, void *y, i3_shape5 ys,
                                              int y_layout, const i3_residual *residual, float *partials,
                                              int precision, void *scratch, void *stream) {
    ConvGeometry g = conv_geometry(xs, p, ys);
    const int64_t rows = ys.n * ys.d * ys.h * ys.w;
    if (rows == 0 || ys.c == 0) return 0;
    const bool b16 = precision == I3_TC_F16 || precision == I3_TC_BF16;
    bool x_cl = x_layout == I3_LAYOUT_NDHWC;
    const bool y_cl = y_layout == I3_LAYOUT_NDHWC;
    const int chunks = I3_DEV(conv_tensor_core_stat_chunks)(ys, precision);
    if ((!b16 && precision != I3_TC_TF32) || (partials && !chunks) || ((x_cl || y_cl) && !b16) ||
        (x_cl && xs.c % 8 != 0) || (y_cl && ys.c % 8 != 0) || (b16 && !scratch) ||
        (residual && (!b16 || partials || !residual->skip)))
        return (int)cudaErrorInvalidValue;
    if (!b16) {
        dim3 grid((unsigned)((rows + V2_BM - 1) / V2_BM), (unsigned)((ys.c + V2_BN - 1) / V2_BN));
        return (int)I3_LAUNCH(tf32_kernel(in_scale_shift != NULL, partials != NULL), grid, V2_THREADS, 0,
                              (cudaStream_t)stream, (const float *)x, w, b, g, p->act, in_scale_shift, act_in,
                              (float *)y, partials, chunks);
    }
    return launch_v3(x, x_cl, xs, g, w, Upsample{}, (const uint16_t *)packed_weights, split_counters, b, p->act,
                     in_scale_shift, act_in, y, y_cl, partials, chunks, residual ? *residual : i3_residual{}, precision,
                     scratch, stream);
}

/* The GEMM of a transposed conv (Upsample): a 1x1x1 conv of the input with cout x taps output channels. */
static ConvGeometry upsample_geometry(i3_shape5 xs, const i3_conv_transpose_params *p, Upsample *up) {
    up->cout = p->cout;
    for (int i = 0; i < 3; i++) up->k[i] = p->k[i];
    i3_conv_params one = {};
    one.cout = (int)(p->cout * p->k[0] * p->k[1] * p->k[2]);
    for (int i = 0; i < 3; i++) one.k[i] = one.stride[i] = 1;
    const i3_shape5 gemm_out = {xs.n, one.cout, xs.d, xs.h, xs.w};
    return conv_geometry(xs, &one, gemm_out);
}

extern "C" size_t I3_DEV(conv_transpose_tensor_core_scratch_bytes)(i3_shape5 xs, int x_layout,
                                                                   const i3_conv_transpose_params *p, int precision) {
    Upsample up;
    ConvGeometry g = upsample_geometry(xs, p, &up);
    const int64_t cp = read_channels(g, xs, x_layout == I3_LAYOUT_NDHWC, precision);
    return v3_scratch(g, xs, cp).bytes;
}

extern "C" int I3_DEV(conv_transpose_tensor_core)(const void *x, i3_shape5 xs, int x_layout, const float *w,
                                                  const float *b, const i3_conv_transpose_params *p, void *y,
                                                  i3_shape5 ys, int64_t y_stride, int precision, void *scratch,
                                                  void *stream) {
    Upsample up;
    ConvGeometry g = upsample_geometry(xs, p, &up);
    up.stride = y_stride;
    const int64_t rows = xs.n * i3_shape5_spatial(xs);
    bool x_cl = x_layout == I3_LAYOUT_NDHWC;
    if ((precision != I3_TC_F16 && precision != I3_TC_BF16) || ys.c % 8 != 0 || (x_cl && xs.c % 8 != 0) || !scratch ||
        y_stride < ys.c || y_stride % 2 != 0)
        return (int)cudaErrorInvalidValue;
    if (rows == 0 || ys.c == 0) return 0;
    const i3_act none = {I3_ACT_NONE, 0.0f};
    return launch_v3(x, x_cl, xs, g, w, up, NULL, NULL, b, none, NULL, none, y, true, NULL, 0, i3_residual{}, precision,
                     scratch, stream);
}

extern "C" int I3_DEV(conv_tensor_core)(const float *x, i3_shape5 xs, const float *w, const float *b,
                                        const i3_conv_params *p, float *y, i3_shape5 ys, int precision, void *scratch,
                                        void *stream) {
    i3_act none = {I3_ACT_NONE, 0.0f};
    return I3_DEV(conv_tensor_core_fused)(x, xs, I3_LAYOUT_NCDHW, w, NULL, NULL, b, p, NULL, none, y, ys,
                                          I3_LAYOUT_NCDHW, NULL, NULL, precision, scratch, stream);
}
