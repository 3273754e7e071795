/* Sliding-window inference with the Gaussian importance map and mirroring (see sliding_window.h). */
/* nnunetv2 multiplies by the Gaussian, then adds: no contracted multiply-adds (the device loop's kernels
 * round the same way, kernels/sliding_window.cu) */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "sliding_window.h"

#include "backend.h"
#include "network.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int i3_sliding_window_steps(int64_t image, int64_t tile, double step_size, int64_t *steps) {
    if (image < tile || tile < 1 || !(step_size > 0.0 && step_size <= 1.0)) return 0;
    const double target = (double)tile * step_size;
    const double n_real = ceil((double)(image - tile) / target) + 1.0;
    if (n_real > I3_MAX_SW_STEPS) return 0;
    const int n = (int)n_real;
    const double actual = n > 1 ? (double)(image - tile) / (double)(n - 1) : 99999999999.0;
    for (int i = 0; i < n; i++) steps[i] = (int64_t)nearbyint(actual * (double)i); /* np.round: half to even */
    return n;
}

/* scipy.ndimage._gaussian_kernel1d(sigma, 0, radius) at offset x (|x| <= radius), normalized. */
static void gaussian_kernel1d(double sigma, int64_t radius, double *phi) {
    const double s2 = sigma * sigma;
    double sum = 0.0;
    for (int64_t x = -radius; x <= radius; x++) sum += phi[x + radius] = exp(-0.5 / s2 * (double)(x * x));
    for (int64_t i = 0; i <= 2 * radius; i++) phi[i] /= sum;
}

void i3_gaussian_importance_map(const int64_t patch[3], int dims, float *out) {
    /* gaussian_filter of a delta at tile // 2 with sigma = tile / 8 (truncate 4, mode constant): the
     * product of the 1D kernels, zero beyond each kernel's radius. */
    double *w[3];
    const int first = 3 - dims;
    for (int a = 0; a < 3; a++) {
        w[a] = calloc((size_t)patch[a], sizeof *w[a]);
        if (a < first) {
            w[a][0] = 1.0;
            continue;
        }
        const double sigma = (double)patch[a] * (1.0 / 8);
        const int64_t radius = (int64_t)(4.0 * sigma + 0.5);
        double *phi = malloc((size_t)(2 * radius + 1) * sizeof *phi);
        gaussian_kernel1d(sigma, radius, phi);
        const int64_t c = patch[a] / 2;
        for (int64_t i = 0; i < patch[a]; i++)
            if (llabs(i - c) <= radius) w[a][i] = phi[i - c + radius];
        free(phi);
    }
    const int64_t n = patch[0] * patch[1] * patch[2];
    const double max = w[0][patch[0] / 2] * w[1][patch[1] / 2] * w[2][patch[2] / 2];
    float min_nonzero = INFINITY;
    for (int64_t z = 0, i = 0; z < patch[0]; z++)
        for (int64_t y = 0; y < patch[1]; y++)
            for (int64_t x = 0; x < patch[2]; x++, i++) {
                const double g = w[0][z] * w[1][y] * w[2][x] / (max / 10.0);
                out[i] = i3_f16_to_f32(i3_f32_to_f16((float)g));
                if (out[i] > 0.0f && out[i] < min_nonzero) min_nonzero = out[i];
            }
    for (int64_t i = 0; i < n; i++)
        if (out[i] == 0.0f) out[i] = min_nonzero;
    for (int a = 0; a < 3; a++) free(w[a]);
}

/* The mirror passes in nnunetv2's order: no flip, then itertools.combinations of the allowed axes of
 * size 1, 2, 3 (for k <= 3 axes, ascending index bit masks of one size are in combinations() order).
 * Each pass is a bit mask over the spatial axes (d = bit 0, h = bit 1, w = bit 2). */
static int mirror_passes(const i3_sliding_window_params *p, int masks[8]) {
    int n = 0;
    masks[n++] = 0;
    const int k = p->n_mirror_axes, shift = 3 - p->dims; /* 2D axes 0, 1 are h, w */
    for (int size = 1; size <= k; size++)
        for (int c = 0; c < (1 << k); c++) {
            if (__builtin_popcount((unsigned)c) != size) continue;
            int m = 0;
            for (int j = 0; j < k; j++)
                if (c & (1 << j)) m |= 1 << (p->mirror_axes[j] + shift);
            masks[n++] = m;
        }
    return n;
}

int64_t i3_sliding_window_forwards(const int64_t shape[3], const i3_sliding_window_params *p) {
    int64_t tiles = p->dims == 2 ? shape[0] : 1, steps[I3_MAX_SW_STEPS];
    for (int a = 3 - p->dims; a < 3; a++) {
        const int64_t padded = shape[a] > p->patch[a] ? shape[a] : p->patch[a];
        tiles *= i3_sliding_window_steps(padded, p->patch[a], p->step_size, steps);
    }
    return tiles * (p->n_mirror_axes > 0 ? (int64_t)1 << p->n_mirror_axes : 1);
}

void i3_sw_tile(const float *x, int64_t channels, const int64_t shape[3], const int64_t offset[3], const int64_t tile[3],
                int flip_mask, float *y) {
    for (int64_t c = 0; c < channels; c++)
        for (int64_t tz = 0; tz < tile[0]; tz++)
            for (int64_t ty = 0; ty < tile[1]; ty++) {
                const int64_t z = offset[0] + (flip_mask & 1 ? tile[0] - 1 - tz : tz);
                const int64_t r = offset[1] + (flip_mask & 2 ? tile[1] - 1 - ty : ty);
                float *dst = y + ((c * tile[0] + tz) * tile[1] + ty) * tile[2];
                const bool row = z >= 0 && z < shape[0] && r >= 0 && r < shape[1];
                const float *src = row ? x + ((c * shape[0] + z) * shape[1] + r) * shape[2] : NULL;
                for (int64_t tx = 0; tx < tile[2]; tx++) {
                    const int64_t i = offset[2] + (flip_mask & 4 ? tile[2] - 1 - tx : tx);
                    dst[tx] = row && i >= 0 && i < shape[2] ? src[i] : 0.0f;
                }
            }
}

static float round_f16(float v) { return i3_f16_to_f32(i3_f32_to_f16(v)); }

/* One prediction's tiling: the padded shape, the padding below the image, the tile offsets per axis
 * (in the padded volume) and the mirror passes. */
typedef struct {
    int64_t ps[3], lo[3], n_steps[3], steps[3][I3_MAX_SW_STEPS];
    int64_t n_tiles;
    int masks[8], n_pass;
} sw_plan;

static i3rt_status plan_tiles(i3_ctx *ctx, const int64_t shape[3], const i3_sliding_window_params *p, sw_plan *s) {
    const int first = 3 - p->dims; /* first axis that is tiled */
    s->n_tiles = 1;
    for (int a = 0; a < 3; a++) {
        s->ps[a] = a >= first && shape[a] < p->patch[a] ? p->patch[a] : shape[a];
        s->lo[a] = (s->ps[a] - shape[a]) / 2;
        if (a < first) { /* 2D: every slice */
            if (s->ps[a] > I3_MAX_SW_STEPS)
                return i3_fail(ctx, I3RT_ERR_SHAPE, "sliding window: %lld slices (at most %d)", (long long)s->ps[a],
                               I3_MAX_SW_STEPS);
            s->n_steps[a] = s->ps[a];
            for (int64_t i = 0; i < s->ps[a]; i++) s->steps[a][i] = i;
        } else {
            s->n_steps[a] = i3_sliding_window_steps(s->ps[a], p->patch[a], p->step_size, s->steps[a]);
            if (s->n_steps[a] == 0)
                return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                               "sliding window: axis %d of %lld voxels, patch %lld, step size %g gives no valid tiling",
                               a, (long long)s->ps[a], (long long)p->patch[a], p->step_size);
        }
        s->n_tiles *= s->n_steps[a];
    }
    s->n_pass = p->n_mirror_axes > 0 ? mirror_passes(p, s->masks) : (s->masks[0] = 0, 1);
    return I3RT_OK;
}

/* Tile i's offset in the padded volume (o) and in the image (o minus the padding below). */
static void tile_offsets(const sw_plan *s, int64_t i, int64_t o[3], int64_t in_image[3]) {
    const int64_t idx[3] = {i / (s->n_steps[1] * s->n_steps[2]), i / s->n_steps[2] % s->n_steps[1], i % s->n_steps[2]};
    for (int a = 0; a < 3; a++) {
        o[a] = s->steps[a][idx[a]];
        in_image[a] = o[a] - s->lo[a];
    }
}

static void report_forward(const i3_sliding_window_params *p, int64_t *done) {
    ++*done;
    if (p->progress) p->progress(p->progress_user, p->progress_offset + *done, p->progress_total);
}

/* logits [classes, shape] = padded [classes, s->ps] without the padding (s->lo below the image). */
static void crop_padding(const sw_plan *s, const int64_t shape[3], int64_t num_classes, const float *padded,
                         float *logits) {
    const int64_t *ps = s->ps, *lo = s->lo;
    for (int64_t k = 0; k < num_classes; k++)
        for (int64_t z = 0; z < shape[0]; z++)
            for (int64_t y = 0; y < shape[1]; y++)
                memcpy(logits + ((k * shape[0] + z) * shape[1] + y) * shape[2],
                       padded + ((k * ps[0] + z + lo[0]) * ps[1] + y + lo[1]) * ps[2] + lo[2],
                       (size_t)shape[2] * sizeof *logits);
}

/* The loop on the host: each tile (and mirrored tile) goes through i3rt_model_forward, which uploads it
 * and downloads its logits on a device backend; the sums stay in host memory (either accumulation mode). */
static i3rt_status host_predict(i3_ctx *ctx, i3rt_model *model, const float *data, int64_t channels,
                                const int64_t shape[3], int64_t num_classes, const i3_sliding_window_params *p,
                                const sw_plan *s, float *logits) {
    const int64_t *tile = p->patch, *ps = s->ps; /* tile (1, h, w) for 2D */
    const int64_t nps = ps[0] * ps[1] * ps[2], nt = tile[0] * tile[1] * tile[2], zero[3] = {0, 0, 0};
    const int fp16 = p->accumulate == I3_ACCUMULATE_FP16;
    float *gauss = i3_malloc(ctx, (size_t)nt * sizeof *gauss, "the Gaussian importance map");
    float *in = i3_malloc(ctx, (size_t)(channels * nt) * sizeof *in, "a tile");
    float *out = i3_malloc(ctx, (size_t)(num_classes * nt) * sizeof *out, "a tile's logits");
    float *out_flip = i3_malloc(ctx, (size_t)(num_classes * nt) * sizeof *out_flip, "a tile's logits");
    float *out_back = i3_malloc(ctx, (size_t)(num_classes * nt) * sizeof *out_back, "a tile's logits");
    float *acc = i3_calloc(ctx, (size_t)(num_classes * nps), sizeof *acc, "the logit sums");
    float *wsum = i3_calloc(ctx, (size_t)nps, sizeof *wsum, "the weight sums");
    i3rt_status st = gauss && in && out && out_flip && out_back && acc && wsum ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK) i3_gaussian_importance_map(p->patch, p->dims, gauss);

    int64_t done = 0;
    for (int64_t t = 0; t < s->n_tiles && st == I3RT_OK; t++) {
        int64_t o[3], in_image[3];
        tile_offsets(s, t, o, in_image);
        for (int m = 0; m < s->n_pass && st == I3RT_OK; m++) { /* prediction += flip(net(flip(x))) */
            i3_sw_tile(data, channels, shape, in_image, tile, s->masks[m], in);
            st = i3rt_model_forward(model, in, tile, m == 0 ? out : out_flip);
            if (st == I3RT_OK && m > 0) {
                i3_sw_tile(out_flip, num_classes, tile, zero, tile, s->masks[m], out_back);
                for (int64_t i = 0; i < num_classes * nt; i++) out[i] += out_back[i];
            }
            if (st == I3RT_OK) report_forward(p, &done);
        }
        if (st != I3RT_OK) break;
        if (s->n_pass > 1)
            for (int64_t i = 0; i < num_classes * nt; i++) out[i] /= (float)s->n_pass;
        for (int64_t k = 0; k < num_classes; k++)
            for (int64_t z = 0; z < tile[0]; z++)
                for (int64_t y = 0; y < tile[1]; y++) {
                    const int64_t t0 = (z * tile[1] + y) * tile[2];
                    float *dst = acc + ((k * ps[0] + o[0] + z) * ps[1] + o[1] + y) * ps[2] + o[2];
                    const float *g = gauss + t0, *pred = out + k * nt + t0;
                    for (int64_t x = 0; x < tile[2]; x++) {
                        const float v = pred[x] * g[x];
                        dst[x] = fp16 ? round_f16(dst[x] + v) : dst[x] + v;
                    }
                }
        for (int64_t z = 0; z < tile[0]; z++)
            for (int64_t y = 0; y < tile[1]; y++) {
                float *dst = wsum + ((o[0] + z) * ps[1] + o[1] + y) * ps[2] + o[2];
                const float *g = gauss + (z * tile[1] + y) * tile[2];
                for (int64_t x = 0; x < tile[2]; x++) dst[x] = fp16 ? round_f16(dst[x] + g[x]) : dst[x] + g[x];
            }
    }
    if (st == I3RT_OK) { /* divide, remove the padding */
        for (int64_t i = 0; i < num_classes * nps; i++)
            acc[i] = fp16 ? round_f16(acc[i] / wsum[i % nps]) : acc[i] / wsum[i % nps];
        crop_padding(s, shape, num_classes, acc, logits);
    }
    free(gauss);
    free(in);
    free(out);
    free(out_flip);
    free(out_back);
    free(acc);
    free(wsum);
    return st;
}

/* The loop on a device backend (backend.h's i3_backend_sw_i), on buffers of device memory, with the host
 * loop's float operations in its order: each forward's tile is cut (and mirrored) out of the image straight
 * into the graph's input, the mirror passes' outputs are summed flipped back, and the mean is weighted into
 * the sums (float32, or f16 rounded at every addition in fp16 mode); the sums are divided in place and come
 * back, cropped on the host when the image was padded (no logits volume on the device). */
enum { IMAGE, GAUSS, ACC, WSUM, PASSES, N_DEVICE_BUFFERS };

static i3rt_status device_loop(i3_ctx *ctx, i3rt_model *model, i3_backend *b, float *in, const float *out,
                               const float *data, int64_t channels, const int64_t shape[3], int64_t num_classes,
                               const i3_sliding_window_params *p, const sw_plan *s, void *const buf[],
                               const size_t bytes[], float *logits, int64_t *done) {
    const i3_backend_sw_i *sw = b->iface->sw;
    const int64_t *tile = p->patch, *ps = s->ps;
    const int fp16 = p->accumulate == I3_ACCUMULATE_FP16;
    float *gauss = i3_malloc(ctx, bytes[GAUSS], "the Gaussian importance map");
    if (!gauss) return I3RT_ERR_OUT_OF_MEMORY;
    i3_gaussian_importance_map(p->patch, p->dims, gauss);
    i3rt_status st = b->iface->upload(b, buf[GAUSS], gauss, bytes[GAUSS]);
    free(gauss);
    if (st == I3RT_OK) st = b->iface->upload(b, buf[IMAGE], data, bytes[IMAGE]);
    if (st == I3RT_OK) st = sw->zero(b, buf[ACC], bytes[ACC]);
    if (st == I3RT_OK) st = sw->zero(b, buf[WSUM], bytes[WSUM]);
    for (int64_t t = 0; t < s->n_tiles && st == I3RT_OK; t++) {
        int64_t o[3], in_image[3];
        tile_offsets(s, t, o, in_image);
        for (int m = 0; m < s->n_pass && st == I3RT_OK; m++) { /* prediction += flip(net(flip(x))) */
            st = sw->tile(b, buf[IMAGE], channels, shape, in_image, tile, s->masks[m], in);
            if (st == I3RT_OK) st = i3_model_run(model);
            if (st == I3RT_OK && s->n_pass > 1) st = sw->gather(b, out, num_classes, tile, s->masks[m], m == 0, buf[PASSES]);
            if (st == I3RT_OK) report_forward(p, done);
        }
        if (st == I3RT_OK)
            st = sw->accumulate(b, s->n_pass > 1 ? buf[PASSES] : out, num_classes, tile, s->n_pass, buf[GAUSS], fp16,
                                buf[ACC], buf[WSUM], ps, o);
    }
    if (st == I3RT_OK) st = sw->normalize(b, buf[ACC], buf[WSUM], num_classes, ps, fp16);
    if (st != I3RT_OK) return st;
    const int64_t nps = ps[0] * ps[1] * ps[2], ns = shape[0] * shape[1] * shape[2];
    if (!fp16 && nps == ns) return b->iface->download(b, logits, buf[ACC], bytes[ACC]);
    /* the padded logits on the host (f16 widened), then cropped */
    float *padded = i3_malloc(ctx, (size_t)(num_classes * nps) * sizeof *padded, "the padded logits");
    uint16_t *halves = fp16 ? i3_malloc(ctx, bytes[ACC], "the f16 logits from the device") : NULL;
    st = padded && (halves || !fp16) ? b->iface->download(b, fp16 ? (void *)halves : padded, buf[ACC], bytes[ACC])
                                     : I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; st == I3RT_OK && fp16 && i < num_classes * nps; i++) padded[i] = i3_f16_to_f32(halves[i]);
    if (st == I3RT_OK) crop_padding(s, shape, num_classes, padded, logits);
    free(halves);
    free(padded);
    return st;
}

/* Runs device_loop when the model's backend has one. *on_host is set when it has none, and when device
 * memory ran out before the first forward ended: the volume buffers (image, Gaussian map, sums) do not fit
 * next to the graph's (or next to the buffers its first run grows). The out-of-memory error is then
 * cleared and the caller runs the host loop, which keeps the volume on the host and sends only tiles: the
 * fallback for volumes too large for the device. */
static i3rt_status device_predict(i3_ctx *ctx, i3rt_model *model, const float *data, int64_t channels,
                                  const int64_t shape[3], int64_t num_classes, const i3_sliding_window_params *p,
                                  const sw_plan *s, float *logits, bool *on_host) {
    i3_backend *b;
    float *in;
    const float *out;
    I3_TRY(i3_model_device_io(model, 1, p->patch, &b, &in, &out));
    *on_host = b->iface->sw == NULL;
    if (*on_host) return I3RT_OK;
    const int64_t ns = shape[0] * shape[1] * shape[2], nps = s->ps[0] * s->ps[1] * s->ps[2];
    const int64_t nt = p->patch[0] * p->patch[1] * p->patch[2];
    const size_t sum = p->accumulate == I3_ACCUMULATE_FP16 ? sizeof(uint16_t) : sizeof(float);
    const size_t bytes[N_DEVICE_BUFFERS] = {(size_t)(channels * ns) * sizeof(float), (size_t)nt * sizeof(float),
                                            (size_t)(num_classes * nps) * sum, (size_t)nps * sum,
                                            s->n_pass > 1 ? (size_t)(num_classes * nt) * sizeof(float) : 0};
    void *buf[N_DEVICE_BUFFERS] = {NULL};
    i3rt_status st = I3RT_OK;
    for (int i = 0; i < N_DEVICE_BUFFERS && st == I3RT_OK; i++)
        if (bytes[i]) st = b->iface->alloc(b, bytes[i], &buf[i]);
    int64_t done = 0;
    if (st == I3RT_OK)
        st = device_loop(ctx, model, b, in, out, data, channels, shape, num_classes, p, s, buf, bytes, logits, &done);
    for (int i = 0; i < N_DEVICE_BUFFERS; i++)
        if (buf[i]) b->iface->free(b, buf[i]);
    if (st != I3RT_ERR_OUT_OF_MEMORY || done > 0) return st; /* after a forward the host loop would repeat it */
    ctx->error[0] = '\0';
    *on_host = true;
    return I3RT_OK;
}

i3rt_status i3_sliding_window_predict(i3_ctx *ctx, i3rt_model *model, const float *data, int64_t channels,
                                      const int64_t shape[3], int64_t num_classes, const i3_sliding_window_params *p,
                                      float *logits) {
    sw_plan *s = i3_malloc(ctx, sizeof *s, "the sliding window's tiling");
    if (!s) return I3RT_ERR_OUT_OF_MEMORY;
    i3rt_status st = plan_tiles(ctx, shape, p, s);
    bool on_host = true;
    if (st == I3RT_OK) st = device_predict(ctx, model, data, channels, shape, num_classes, p, s, logits, &on_host);
    if (st == I3RT_OK && on_host) st = host_predict(ctx, model, data, channels, shape, num_classes, p, s, logits);
    free(s);
    return st;
}
