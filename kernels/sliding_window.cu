/* Sliding-window support (nnU-Net's predict_sliding_window_return_logits, runtime/sliding_window.c's device
 * loop): cutting a (mirrored) tile out of the zero-padded image, summing a tile's mirror passes, the
 * Gaussian-weighted accumulation into the padded volume, and the final division, in the order of the host
 * loop's float operations.
 *
 *   sw_tile: y[c, t] = x[c, offset + flip(t)], 0 where that lies outside x (reference: i3_sw_tile in
 *     runtime/sliding_window.c). With offset = tile position - padding below it reads the tile of the
 *     zero-padded image without the padded image ever being stored.
 *   sw_gather: sum[k, t] = pred[k, flip(t)] for the first pass, sum[k, t] + pred[k, flip(t)] for the others
 *     (flip_mask, bit a: axis a of the tile, 0 = d: a mirrored input's prediction flipped back).
 *   sw_accumulate: acc[k, o + t] += sum[k, t] / passes * gauss[t] (no division for one pass) and
 *     wsum[o + t] += gauss[t]; the sums in float32, or in f16 with every addition rounded to f16 as
 *     nnunetv2's half tensors do (I3_ACCUMULATE_FP16).
 *   sw_normalize: acc[k, v] = acc[k, v] / wsum[v] in place (f16: rounded to f16); the host crops.
 *
 * Kernel versions:
 *   sw_tile v1, sw_gather v1, sw_normalize v2: one element per thread, grid-stride.
 *   sw_accumulate v2: one tile position (all classes) per thread, grid-stride; tile positions map to
 *       distinct volume positions, so one launch has no write conflicts (launches of one stream are
 *       ordered). (v1 weighted every pass into the sums: a division and a rounding more per pass.)
 *
 * Rounding: nnunetv2 multiplies by the Gaussian, then adds; so do these kernels (__fmul_rn on the GPU, no
 * contracted multiply-adds in the emulated build) and the host loop, and on one backend the two loops give
 * the same bits (test_cuda_ops sliding_window_fallback, sliding_window_fp16_sums). */
#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "device.h"
#include "launchers.h"

namespace I3_NS {

struct TileGeometry {
    int64_t tile[3], volume[3], offset[3];
};

__global__ void sw_tile_v1(const float *__restrict__ x, int64_t channels, TileGeometry g, int flip_mask,
                           float *__restrict__ y) {
    /* g.volume is x's shape; g.offset may be negative (the padding below the image) */
    int64_t nt = g.tile[0] * g.tile[1] * g.tile[2];
    I3_GRID_STRIDE_LOOP(i, channels * nt) {
        int64_t c = i / nt, t = i % nt;
        int64_t tx = t % g.tile[2], ty = t / g.tile[2] % g.tile[1], tz = t / (g.tile[2] * g.tile[1]);
        int64_t z = g.offset[0] + (flip_mask & 1 ? g.tile[0] - 1 - tz : tz);
        int64_t yy = g.offset[1] + (flip_mask & 2 ? g.tile[1] - 1 - ty : ty);
        int64_t xx = g.offset[2] + (flip_mask & 4 ? g.tile[2] - 1 - tx : tx);
        bool inside = z >= 0 && z < g.volume[0] && yy >= 0 && yy < g.volume[1] && xx >= 0 && xx < g.volume[2];
        y[i] = inside ? x[((c * g.volume[0] + z) * g.volume[1] + yy) * g.volume[2] + xx] : 0.0f;
    }
}

__global__ void sw_gather_v1(const float *__restrict__ pred, int64_t classes, TileGeometry g, int flip_mask, int first,
                             float *__restrict__ sum) {
    int64_t nt = g.tile[0] * g.tile[1] * g.tile[2];
    I3_GRID_STRIDE_LOOP(i, classes * nt) {
        int64_t k = i / nt, t = i % nt;
        int64_t x = t % g.tile[2], y = t / g.tile[2] % g.tile[1], z = t / (g.tile[2] * g.tile[1]);
        int64_t fz = flip_mask & 1 ? g.tile[0] - 1 - z : z, fy = flip_mask & 2 ? g.tile[1] - 1 - y : y;
        int64_t fx = flip_mask & 4 ? g.tile[2] - 1 - x : x;
        float v = pred[k * nt + (fz * g.tile[1] + fy) * g.tile[2] + fx];
        sum[i] = first ? v : sum[i] + v;
    }
}

/* a * b, never fused into the addition that follows */
__device__ __forceinline__ float product(float a, float b) {
#ifdef __CUDACC__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

/* One addition to a sum of either kind: float32, or f16 bits rounded after the float addition. */
template <bool F16>
__device__ __forceinline__ void add_to(void *sums, int64_t i, float v) {
    if (F16) {
        uint16_t *h = (uint16_t *)sums;
        h[i] = to_b16<false>(from_b16<false>(h[i]) + v);
    } else {
        ((float *)sums)[i] += v;
    }
}

template <bool F16>
__global__ void sw_accumulate_v2(const float *__restrict__ sum, int64_t classes, TileGeometry g, int passes,
                                 const float *__restrict__ gauss, void *acc, void *wsum) {
    int64_t nt = g.tile[0] * g.tile[1] * g.tile[2], nv = g.volume[0] * g.volume[1] * g.volume[2];
    I3_GRID_STRIDE_LOOP(t, nt) {
        int64_t x = t % g.tile[2], y = t / g.tile[2] % g.tile[1], z = t / (g.tile[2] * g.tile[1]);
        int64_t dest = ((z + g.offset[0]) * g.volume[1] + y + g.offset[1]) * g.volume[2] + x + g.offset[2];
        float weight = gauss[t];
        for (int64_t k = 0; k < classes; k++) {
            float mean = passes > 1 ? sum[k * nt + t] / (float)passes : sum[k * nt + t];
            add_to<F16>(acc, k * nv + dest, product(mean, weight));
        }
        add_to<F16>(wsum, dest, weight);
    }
}

template <bool F16>
__global__ void sw_normalize_v2(void *acc, const void *__restrict__ wsum, int64_t classes, int64_t nv) {
    I3_GRID_STRIDE_LOOP(i, classes * nv) {
        if (F16) {
            uint16_t *a = (uint16_t *)acc;
            a[i] = to_b16<false>(from_b16<false>(a[i]) / from_b16<false>(((const uint16_t *)wsum)[i % nv]));
        } else {
            ((float *)acc)[i] /= ((const float *)wsum)[i % nv];
        }
    }
}

static TileGeometry tile_geometry(const int64_t tile[3], const int64_t volume[3], const int64_t offset[3]) {
    TileGeometry g;
    for (int a = 0; a < 3; a++) {
        g.tile[a] = tile[a];
        g.volume[a] = volume[a];
        g.offset[a] = offset[a];
    }
    return g;
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(sw_tile)(const float *x, int64_t channels, const int64_t shape[3], const int64_t offset[3],
                               const int64_t tile[3], int flip_mask, float *y, void *stream) {
    int64_t total = channels * tile[0] * tile[1] * tile[2];
    if (total == 0) return 0;
    return (int)I3_LAUNCH(sw_tile_v1, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, x, channels,
                          tile_geometry(tile, shape, offset), flip_mask, y);
}

extern "C" int I3_DEV(sw_gather)(const float *pred, int64_t classes, const int64_t tile[3], int flip_mask, int first,
                                 float *sum, void *stream) {
    int64_t total = classes * tile[0] * tile[1] * tile[2];
    if (total == 0) return 0;
    const int64_t origin[3] = {0, 0, 0};
    return (int)I3_LAUNCH(sw_gather_v1, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, pred, classes,
                          tile_geometry(tile, tile, origin), flip_mask, first, sum);
}

extern "C" int I3_DEV(sw_accumulate)(const float *sum, int64_t classes, const int64_t tile[3], int passes,
                                     const float *gauss, int fp16, void *acc, void *wsum, const int64_t volume[3],
                                     const int64_t offset[3], void *stream) {
    int64_t nt = tile[0] * tile[1] * tile[2];
    for (int a = 0; a < 3; a++)
        if (offset[a] < 0 || offset[a] + tile[a] > volume[a]) return (int)cudaErrorInvalidValue;
    if (passes < 1) return (int)cudaErrorInvalidValue;
    if (nt == 0) return 0;
    decltype(&sw_accumulate_v2<false>) kernel = fp16 ? sw_accumulate_v2<true> : sw_accumulate_v2<false>;
    return (int)I3_LAUNCH(kernel, grid_stride_blocks(nt, 256), 256, 0, (cudaStream_t)stream, sum, classes,
                          tile_geometry(tile, volume, offset), passes, gauss, acc, wsum);
}

extern "C" int I3_DEV(sw_normalize)(void *acc, const void *wsum, int64_t classes, const int64_t volume[3], int fp16,
                                    void *stream) {
    int64_t nv = volume[0] * volume[1] * volume[2];
    if (classes * nv == 0) return 0;
    decltype(&sw_normalize_v2<false>) kernel = fp16 ? sw_normalize_v2<true> : sw_normalize_v2<false>;
    return (int)I3_LAUNCH(kernel, grid_stride_blocks(classes * nv, 256), 256, 0, (cudaStream_t)stream, acc, wsum,
                          classes, nv);
}
