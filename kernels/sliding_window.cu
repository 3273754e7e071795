/* Sliding-window support (nnU-Net's predict_sliding_window_return_logits, runtime/sliding_window.c,
 * float32 accumulation mode): cutting a (mirrored) tile out of the zero-padded image, the
 * Gaussian-weighted accumulation of a tile's logits into the padded volume, and the final
 * normalization with the crop back to the image.
 *
 *   sw_tile: y[c, t] = x[c, offset + flip(t)], 0 where that lies outside x (reference: i3_sw_tile in
 *     runtime/sliding_window.c). With offset = tile position - padding below it reads the tile of the
 *     zero-padded image without the padded image ever being stored.
 *   sw_accumulate: acc[k, o + t] += pred[k, flip(t)] * scale * gauss[t] for every class k and tile
 *     position t, and (add_weights) wsum[o + t] += gauss[t]. flip_mask (bit a: axis a of the
 *     tile, 0 = d) reads the prediction of a mirrored input flipped back, so each mirror pass of
 *     the test-time augmentation accumulates directly (scale = 1 / passes, weights added once)
 *     instead of flipping into a buffer, adding and dividing (three passes of the CPU code).
 *   sw_normalize: logits[k, z, y, x] = acc[k, z + lo0, y + lo1, x + lo2] / wsum[...], one pass; logits may
 *     be acc itself when nothing is cropped (each element read, then written, by one thread).
 *
 * Kernel versions:
 *   sw_tile v1: one tile element per thread, grid-stride.
 *   sw_accumulate v1: one tile position (all classes) per thread, grid-stride; tile positions map to
 *       distinct volume positions, so one launch has no write conflicts (launches of one stream are
 *       ordered).
 *   sw_normalize v1: one output element per thread, grid-stride.
 * Not done: nnunetv2's fp16 accumulation mode (I3_ACCUMULATE_FP16) on the device. */
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

__global__ void sw_accumulate_v1(const float *__restrict__ pred, int64_t classes, TileGeometry g, int flip_mask,
                                 const float *__restrict__ gauss, float scale, int add_weights, float *acc,
                                 float *wsum) {
    int64_t nt = g.tile[0] * g.tile[1] * g.tile[2], nv = g.volume[0] * g.volume[1] * g.volume[2];
    I3_GRID_STRIDE_LOOP(t, nt) {
        int64_t x = t % g.tile[2], y = t / g.tile[2] % g.tile[1], z = t / (g.tile[2] * g.tile[1]);
        int64_t fz = flip_mask & 1 ? g.tile[0] - 1 - z : z, fy = flip_mask & 2 ? g.tile[1] - 1 - y : y;
        int64_t fx = flip_mask & 4 ? g.tile[2] - 1 - x : x;
        int64_t source = (fz * g.tile[1] + fy) * g.tile[2] + fx;
        int64_t dest = ((z + g.offset[0]) * g.volume[1] + y + g.offset[1]) * g.volume[2] + x + g.offset[2];
        float weight = gauss[t];
        for (int64_t k = 0; k < classes; k++) acc[k * nv + dest] += pred[k * nt + source] * scale * weight;
        if (add_weights) wsum[dest] += weight;
    }
}

__global__ void sw_normalize_v1(const float *acc, const float *__restrict__ wsum, int64_t classes, TileGeometry g,
                                float *logits) {
    /* here g.tile is the image shape and g.offset the padding below it */
    int64_t ns = g.tile[0] * g.tile[1] * g.tile[2], nv = g.volume[0] * g.volume[1] * g.volume[2];
    I3_GRID_STRIDE_LOOP(i, classes * ns) {
        int64_t k = i / ns, t = i % ns;
        int64_t x = t % g.tile[2], y = t / g.tile[2] % g.tile[1], z = t / (g.tile[2] * g.tile[1]);
        int64_t v = ((z + g.offset[0]) * g.volume[1] + y + g.offset[1]) * g.volume[2] + x + g.offset[2];
        logits[i] = acc[k * nv + v] / wsum[v];
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

extern "C" int I3_DEV(sw_accumulate)(const float *pred, int64_t classes, const int64_t tile[3], int flip_mask,
                                     const float *gauss, float scale, int add_weights, float *acc, float *wsum,
                                     const int64_t volume[3], const int64_t offset[3], void *stream) {
    int64_t nt = tile[0] * tile[1] * tile[2];
    for (int a = 0; a < 3; a++)
        if (offset[a] < 0 || offset[a] + tile[a] > volume[a]) return (int)cudaErrorInvalidValue;
    if (nt == 0) return 0;
    return (int)I3_LAUNCH(sw_accumulate_v1, grid_stride_blocks(nt, 256), 256, 0, (cudaStream_t)stream, pred, classes,
                          tile_geometry(tile, volume, offset), flip_mask, gauss, scale, add_weights, acc, wsum);
}

extern "C" int I3_DEV(sw_normalize)(const float *acc, const float *wsum, int64_t classes, const int64_t volume[3],
                                    const int64_t lo[3], const int64_t shape[3], float *logits, void *stream) {
    for (int a = 0; a < 3; a++)
        if (lo[a] < 0 || lo[a] + shape[a] > volume[a]) return (int)cudaErrorInvalidValue;
    int64_t total = classes * shape[0] * shape[1] * shape[2];
    if (total == 0) return 0;
    return (int)I3_LAUNCH(sw_normalize_v1, grid_stride_blocks(total, 256), 256, 0, (cudaStream_t)stream, acc, wsum,
                          classes, tile_geometry(shape, volume, lo), logits);
}
