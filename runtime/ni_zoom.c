/* nnInteractive's AutoZoom and refinement arrays (see ni_zoom.h for what each function mirrors).
 *
 * The zoomed network input is computed in output planes: an output plane of a channel needs the input
 * planes of its area window, each (for the point and scribble channels) max-pooled first, so every
 * thread keeps only those planes, and only over the channel's nonzero region (dilated by the pool
 * radius): outside it the max-pool and the area mean are exactly 0, and torch's fp16 running sum is
 * unchanged by adding zeros, so skipping them keeps the result bit for bit. */
#include "ni_zoom.h"
#include "ops.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#ifdef __F16C__
#include <immintrin.h>
#endif

static inline float h2f(uint16_t h) {
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    return i3_f16_to_f32(h);
#endif
}

static inline uint16_t f2h(float f) {
#ifdef __F16C__
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    return i3_f32_to_f16(f);
#endif
}

/* a float rounded to fp16, as torch's Half arithmetic stores each result */
static inline float round_f16(float f) { return h2f(f2h(f)); }

/* Threads for a loop of `work` voxel operations: one below ops.h's I3_PARALLEL_MIN_VALUES. */
static inline int ni_threads(int64_t work, int n_threads) { return work >= I3_PARALLEL_MIN_VALUES ? n_threads : 1; }

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

void ni_scaled_patch(const int64_t patch[3], double zoom, const int64_t center[3], int64_t scaled[3],
                     i3rt_box *box) {
    for (int a = 0; a < 3; a++) {
        const int64_t s = (int64_t)nearbyint((double)patch[a] * zoom);
        scaled[a] = s;
        box->lo[a] = center[a] - s / 2;
        box->hi[a] = center[a] + s / 2 + s % 2;
    }
}

int ni_dilation_window(double zoom) {
    const double x = zoom * 2 - 1;
    const int64_t cl = (int64_t)ceil(x), fl = (int64_t)floor(x);
    if (cl % 2 == 1) return (int)cl;
    if (fl % 2 == 1) return (int)fl;
    return (int)nearbyint(x) + 1;
}

/* ---- reading the volumes, zero outside the image ------------------------------------------------- */

/* out[i] = value at (z, y, x0 + i), i < n, of channel c (c < 0: the image); the prev_seg channel comes
 * from v->prev_seg inside v->prev_seg_box. */
static void read_row(const ni_volume *v, int c, int64_t z, int64_t y, int64_t x0, int64_t n, float *out) {
    const int64_t *s = v->shape;
    memset(out, 0, (size_t)n * sizeof *out);
    if (z >= 0 && z < s[0] && y >= 0 && y < s[1]) {
        const int64_t xs = max64(x0, 0), xe = min64(x0 + n, s[2]), at = (z * s[1] + y) * s[2];
        if (c < 0) {
            if (xe > xs) memcpy(out + (xs - x0), v->image + at + xs, (size_t)(xe - xs) * sizeof *out);
        } else {
            const uint16_t *ch = v->interactions + (int64_t)c * s[0] * s[1] * s[2] + at;
            for (int64_t x = xs; x < xe; x++) out[x - x0] = h2f(ch[x]);
        }
    }
    const i3rt_box *b = &v->prev_seg_box;
    if (c == v->prev_seg_channel && v->prev_seg && z >= b->lo[0] && z < b->hi[0] && y >= b->lo[1] && y < b->hi[1]) {
        const int64_t w = b->hi[2] - b->lo[2], xs = max64(x0, b->lo[2]), xe = min64(x0 + n, b->hi[2]);
        const uint16_t *row = v->prev_seg + ((z - b->lo[0]) * (b->hi[1] - b->lo[1]) + (y - b->lo[1])) * w - b->lo[2];
        for (int64_t x = xs; x < xe; x++) out[x - x0] = h2f(row[x]);
    }
}

static int channel_may_be_nonzero(const ni_volume *v, int c) {
    return c >= 32 || ((v->nonzero_channels >> c) & 1u) || (c == v->prev_seg_channel && v->prev_seg);
}

/* The box (in the crop's coordinates, within [0, size)) holding every nonzero voxel of channel c in
 * the crop at box; empty (lo >= hi on axis 0) if none. The prev_seg override counts as nonzero. */
static void crop_nonzero_box(const ni_volume *v, int c, const i3rt_box *box, int64_t lo[3], int64_t hi[3],
                             int n_threads) {
    const int64_t *s = v->shape;
    int64_t vlo[3], vhi[3];
    for (int a = 0; a < 3; a++) vlo[a] = max64(box->lo[a], 0), vhi[a] = min64(box->hi[a], s[a]);
    int64_t l0 = INT64_MAX, l1 = INT64_MAX, l2 = INT64_MAX, h0 = INT64_MIN, h1 = INT64_MIN, h2 = INT64_MIN;
    const uint16_t *ch = v->interactions + (int64_t)c * s[0] * s[1] * s[2];
    if (vlo[0] < vhi[0] && vlo[1] < vhi[1] && vlo[2] < vhi[2]) {
        const int threads = ni_threads((vhi[0] - vlo[0]) * (vhi[1] - vlo[1]) * (vhi[2] - vlo[2]), n_threads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(min : l0, l1, l2) \
    reduction(max : h0, h1, h2)
        for (int64_t z = vlo[0]; z < vhi[0]; z++) {
            for (int64_t y = vlo[1]; y < vhi[1]; y++) {
                const uint16_t *row = ch + (z * s[1] + y) * s[2];
                uint16_t any = 0; /* nonzero bits, -0 aside */
                for (int64_t x = vlo[2]; x < vhi[2]; x++) any |= row[x] & 0x7fff;
                if (!any) continue;
                int64_t first = vlo[2], last = vhi[2] - 1;
                while (!(row[first] & 0x7fff)) first++;
                while (!(row[last] & 0x7fff)) last--;
                l0 = min64(l0, z), h0 = max64(h0, z), l1 = min64(l1, y), h1 = max64(h1, y);
                l2 = min64(l2, first), h2 = max64(h2, last);
            }
        }
    }
    if (c == v->prev_seg_channel && v->prev_seg) {
        const i3rt_box *b = &v->prev_seg_box;
        const int64_t ol[3] = {max64(b->lo[0], box->lo[0]), max64(b->lo[1], box->lo[1]), max64(b->lo[2], box->lo[2])};
        const int64_t oh[3] = {min64(b->hi[0], box->hi[0]), min64(b->hi[1], box->hi[1]), min64(b->hi[2], box->hi[2])};
        if (ol[0] < oh[0] && ol[1] < oh[1] && ol[2] < oh[2]) {
            l0 = min64(l0, ol[0]), l1 = min64(l1, ol[1]), l2 = min64(l2, ol[2]);
            h0 = max64(h0, oh[0] - 1), h1 = max64(h1, oh[1] - 1), h2 = max64(h2, oh[2] - 1);
        }
    }
    const int64_t gl[3] = {l0, l1, l2}, gh[3] = {h0, h1, h2};
    for (int a = 0; a < 3; a++) {
        lo[a] = gh[0] < gl[0] ? 0 : gl[a] - box->lo[a];
        hi[a] = gh[0] < gl[0] ? 0 : gh[a] + 1 - box->lo[a];
    }
}

/* ---- not zoomed: the crop -------------------------------------------------------------------------- */

static void crop_input(const ni_volume *v, const i3rt_box *box, const int64_t patch[3], float *input,
                       uint16_t *prev_pred, int n_threads) {
    const int64_t np = patch[0] * patch[1] * patch[2], rows = patch[0] * patch[1];
#pragma omp parallel for schedule(static) num_threads(ni_threads(np * (1 + v->n_channels), n_threads))
    for (int64_t r = 0; r < rows; r++) {
        const int64_t z = box->lo[0] + r / patch[1], y = box->lo[1] + r % patch[1];
        read_row(v, -1, z, y, box->lo[2], patch[2], input + r * patch[2]);
        for (int c = 0; c < v->n_channels; c++) {
            float *out = input + (1 + c) * np + r * patch[2];
            if (channel_may_be_nonzero(v, c))
                read_row(v, c, z, y, box->lo[2], patch[2], out);
            else
                memset(out, 0, (size_t)patch[2] * sizeof *out);
            if (c == v->prev_seg_channel && prev_pred)
                for (int64_t x = 0; x < patch[2]; x++) prev_pred[r * patch[2] + x] = f2h(out[x]);
        }
    }
}

/* ---- zoomed ---------------------------------------------------------------------------------------- */

/* torch's nearest_idx (UpSample.h) for mode="nearest" with an output size */
static int64_t nearest_index(int64_t o, int64_t in, int64_t out) {
    if (out == in) return o;
    if (out == 2 * in) return o >> 1;
    const float scale = (float)in / (float)out;
    return min64((int64_t)floorf((float)o * scale), in - 1);
}

/* adaptive_avg_pool's window of output o: [start, end) */
static int64_t area_start(int64_t o, int64_t in, int64_t out) { return (o * in) / out; }
static int64_t area_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }

/* Trilinear resampling of in to out in torch's arithmetic (i3_resize_row_x, i3_resize_rows_yz), row by row;
 * source rows (in[2] floats) come from read(src, z, y, row), each x-interpolated once while neighbouring
 * output rows share it (i3_lerp_rows). Output: out_f [out], or thresholded (>= 0.5) out_mask [out]. */
typedef void (*row_reader)(const void *src, int64_t z, int64_t y, int64_t n, float *row);

typedef struct {
    const void *src;
    row_reader read;
    int64_t h, w;
    float *raw;
} read_rows; /* a thread's reader: source row key = z * h + y, read into raw */

static const float *read_cached_row(void *ctx, int64_t key) {
    read_rows *r = ctx;
    r->read(r->src, key / r->h, key % r->h, r->w, r->raw);
    return r->raw;
}

static void trilinear(const void *src, row_reader read, const int64_t in[3], const int64_t out[3], float *out_f,
                      uint8_t *out_mask, int n_threads) {
    i3_lerp_tap tz[out[0]], ty[out[1]], tx[out[2]];
    i3_resize_axis_taps(in[0], out[0], 0, tz);
    i3_resize_axis_taps(in[1], out[1], 0, ty);
    i3_resize_axis_taps(in[2], out[2], 0, tx);
#pragma omp parallel num_threads(ni_threads(8 * out[0] * out[1] * out[2], n_threads))
    {
        float raw[in[2]], cached[4][out[2]], row[out[2]];
        i3_lerp_rows cache = {{-1, -1, -1, -1}, {cached[0], cached[1], cached[2], cached[3]}};
        read_rows reader = {src, read, in[1], in[2], raw};
#pragma omp for schedule(static)
        for (int64_t q = 0; q < out[0] * out[1]; q++) {
            const i3_lerp_tap z = tz[q / out[1]], y = ty[q % out[1]];
            const int64_t need[4] = {z.i0 * in[1] + y.i0, z.i0 * in[1] + y.i1, z.i1 * in[1] + y.i0,
                                     z.i1 * in[1] + y.i1};
            const float *x[4];
            i3_lerp_rows_get(&cache, need, read_cached_row, &reader, tx, out[2], x);
            const float wzy[4] = {z.l0, z.l1, y.l0, y.l1};
            if (out_f) {
                i3_resize_rows_yz(x[0], x[1], x[2], x[3], wzy, out[2], out_f + q * out[2]);
            } else {
                const int64_t n = out[2]; /* a local: out_mask could alias out[] for the compiler */
                uint8_t *mask_row = out_mask + q * n;
                i3_resize_rows_yz(x[0], x[1], x[2], x[3], wzy, n, row);
                for (int64_t i = 0; i < n; i++) mask_row[i] = row[i] >= 0.5f;
            }
        }
    }
}

typedef struct {
    const ni_volume *v;
    const i3rt_box *box;
} image_crop;

static void read_image_crop(const void *src, int64_t z, int64_t y, int64_t n, float *row) {
    const image_crop *c = src;
    read_row(c->v, -1, c->box->lo[0] + z, c->box->lo[1] + y, c->box->lo[2], n, row);
}

/* Window extremes, for float (the dilation of the prompt channels) and uint8 (the refinement diff map):
 *   line:   out[i] = op of in[j], j in [i - r, i + r] clipped to [0, n)   (contiguous)
 *   blocks: out[j] = op of in[i * stride + j], i in [a, b)                (elementwise over blocks) */
#define DEFINE_WINDOW_EXTREMES(T, line_fn, blocks_fn)                                                       \
    static void line_fn(const T *in, int64_t n, int64_t r, int use_min, T *out) {                          \
        for (int64_t i = 0; i < n; i++) {                                                                  \
            const int64_t a = max64(i - r, 0), b = min64(i + r + 1, n);                                    \
            T m = in[a];                                                                                   \
            for (int64_t j = a + 1; j < b; j++) m = use_min ? (in[j] < m ? in[j] : m) : (in[j] > m ? in[j] : m); \
            out[i] = m;                                                                                    \
        }                                                                                                  \
    }                                                                                                      \
    static void blocks_fn(const T *in, int64_t stride, int64_t a, int64_t b, int64_t len, int use_min, T *out) { \
        memcpy(out, in + a * stride, (size_t)len * sizeof(T));                                             \
        for (int64_t i = a + 1; i < b; i++) {                                                              \
            const T *blk = in + i * stride;                                                                \
            if (use_min)                                                                                   \
                for (int64_t j = 0; j < len; j++) out[j] = blk[j] < out[j] ? blk[j] : out[j];              \
            else                                                                                           \
                for (int64_t j = 0; j < len; j++) out[j] = blk[j] > out[j] ? blk[j] : out[j];              \
        }                                                                                                  \
    }
DEFINE_WINDOW_EXTREMES(float, line_extreme_f32, blocks_extreme_f32)
DEFINE_WINDOW_EXTREMES(uint8_t, line_extreme_u8, blocks_extreme_u8)

/* 2D max-pool (window 2r + 1 clipped to the plane) of an h x w plane; tmp holds h * w floats. */
static void max_pool_plane(float *plane, int64_t h, int64_t w, int64_t r, float *tmp) {
    for (int64_t y = 0; y < h; y++) line_extreme_f32(plane + y * w, w, r, 0, tmp + y * w);
    for (int64_t y = 0; y < h; y++)
        blocks_extreme_f32(tmp, w, max64(y - r, 0), min64(y + r + 1, h), w, 0, plane + y * w);
}

/* One channel of the zoomed input: the zero-padded crop at box (scaled size S) max-pooled with window k
 * (k == 1: not), then area-resampled to P in fp16 (sum in fp16 in the window's z, y, x order, then
 * / kT / kH / kW, each rounded: torch's adaptive_avg_pool3d for Half on the CPU). out [P]. */
static i3rt_status zoom_channel(i3_ctx *ctx, const ni_volume *v, int c, const i3rt_box *box, const int64_t S[3],
                                const int64_t P[3], int k, float *out, int n_threads) {
    memset(out, 0, (size_t)(P[0] * P[1] * P[2]) * sizeof *out);
    int64_t nlo[3], nhi[3], rlo[3], rhi[3], olo[3], ohi[3];
    crop_nonzero_box(v, c, box, nlo, nhi, n_threads);
    if (nhi[0] <= nlo[0]) return I3RT_OK;
    const int64_t r = k / 2;
    int64_t max_window = 0;
    for (int a = 0; a < 3; a++) {
        rlo[a] = max64(nlo[a] - r, 0), rhi[a] = min64(nhi[a] + r, S[a]);
        olo[a] = 0, ohi[a] = P[a];
        while (area_end(olo[a], S[a], P[a]) <= rlo[a]) olo[a]++;
        while (ohi[a] > olo[a] && area_start(ohi[a] - 1, S[a], P[a]) >= rhi[a]) ohi[a]--;
    }
    for (int64_t o = 0; o < P[0]; o++)
        max_window = max64(max_window, area_end(o, S[0], P[0]) - area_start(o, S[0], P[0]));
    const int64_t h = rhi[1] - rlo[1], w = rhi[2] - rlo[2], plane = h * w;
    const int64_t nacc = (ohi[1] - olo[1]) * (ohi[2] - olo[2]);
    const int64_t n_pooled = r > 0 ? max_window + 2 * r : 0; /* the max-pooled source planes of one output plane */
    const size_t per_thread = (size_t)((n_pooled + 2) * plane + nacc);
    float *buf = i3_malloc(ctx, (size_t)n_threads * per_thread * sizeof *buf, "zoom channel planes");
    int64_t *xwin = i3_malloc(ctx, (size_t)(ohi[2] - olo[2]) * 2 * sizeof *xwin, "zoom windows");
    if (!buf || !xwin) return free(buf), free(xwin), I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t o = olo[2]; o < ohi[2]; o++) {
        xwin[2 * (o - olo[2])] = max64(area_start(o, S[2], P[2]), rlo[2]) - rlo[2];
        xwin[2 * (o - olo[2]) + 1] = min64(area_end(o, S[2], P[2]), rhi[2]) - rlo[2];
    }
#pragma omp parallel num_threads(ni_threads((rhi[0] - rlo[0]) * plane * (2 * r + 1), n_threads))
    {
        float *src = buf + (size_t)omp_get_thread_num() * per_thread; /* the plane being summed */
        float *tmp = src + plane, *acc = tmp + plane, *pooled = acc + nacc;
#pragma omp for schedule(dynamic, 1)
        for (int64_t o0 = olo[0]; o0 < ohi[0]; o0++) {
            const int64_t st = area_start(o0, S[0], P[0]), en = area_end(o0, S[0], P[0]);
            /* pooled[q - qlo]: max-pooled plane q of the nonzero planes around the window */
            const int64_t qlo = max64(st - r, nlo[0]), qhi = min64(en + r, nhi[0]);
            for (int64_t q = qlo; r > 0 && q < qhi; q++) {
                float *pl = pooled + (q - qlo) * plane;
                for (int64_t y = 0; y < h; y++) {
                    const int64_t yy = rlo[1] + y;
                    if (yy >= nlo[1] && yy < nhi[1])
                        read_row(v, c, box->lo[0] + q, box->lo[1] + yy, box->lo[2] + rlo[2], w, pl + y * w);
                    else
                        memset(pl + y * w, 0, (size_t)w * sizeof *pl);
                }
                max_pool_plane(pl, h, w, r, tmp);
            }
            memset(acc, 0, (size_t)nacc * sizeof *acc);
            for (int64_t p = max64(st, rlo[0]); p < min64(en, rhi[0]); p++) {
                if (r > 0) { /* max over the planes [p - r, p + r] in the crop; those outside [nlo, nhi) are 0 */
                    const int64_t a = max64(p - r, 0), b = min64(p + r + 1, S[0]);
                    const int64_t qa = max64(a, nlo[0]), qb = min64(b, nhi[0]);
                    if (qa >= qb) continue;
                    blocks_extreme_f32(pooled + (qa - qlo) * plane, plane, 0, qb - qa, plane, 0, src);
                    if (a < nlo[0] || b > nhi[0])
                        for (int64_t i = 0; i < plane; i++) src[i] = src[i] > 0.0f ? src[i] : 0.0f;
                } else {
                    for (int64_t y = 0; y < h; y++)
                        read_row(v, c, box->lo[0] + p, box->lo[1] + rlo[1] + y, box->lo[2] + rlo[2], w, src + y * w);
                }
                for (int64_t o1 = olo[1]; o1 < ohi[1]; o1++) {
                    const int64_t ys = max64(area_start(o1, S[1], P[1]), rlo[1]);
                    const int64_t ye = min64(area_end(o1, S[1], P[1]), rhi[1]);
                    float *arow = acc + (o1 - olo[1]) * (ohi[2] - olo[2]);
                    for (int64_t y = ys; y < ye; y++) {
                        const float *row = src + (y - rlo[1]) * w;
                        for (int64_t o2 = 0; o2 < ohi[2] - olo[2]; o2++) {
                            float s = arow[o2];
                            for (int64_t x = xwin[2 * o2]; x < xwin[2 * o2 + 1]; x++) s = round_f16(s + row[x]);
                            arow[o2] = s;
                        }
                    }
                }
            }
            const float kt = (float)(en - st);
            for (int64_t o1 = olo[1]; o1 < ohi[1]; o1++) {
                const float kh = (float)(area_end(o1, S[1], P[1]) - area_start(o1, S[1], P[1]));
                for (int64_t o2 = olo[2]; o2 < ohi[2]; o2++) {
                    const float kw = (float)(area_end(o2, S[2], P[2]) - area_start(o2, S[2], P[2]));
                    const float s = acc[(o1 - olo[1]) * (ohi[2] - olo[2]) + (o2 - olo[2])];
                    out[(o0 * P[1] + o1) * P[2] + o2] = round_f16(round_f16(round_f16(s / kt) / kh) / kw);
                }
            }
        }
    }
    free(buf), free(xwin);
    return I3RT_OK;
}

/* prev_pred: F.interpolate(prev_seg crop, P, mode="nearest") */
static void zoom_prev_seg(const ni_volume *v, const i3rt_box *box, const int64_t S[3], const int64_t P[3],
                          uint16_t *prev_pred, int n_threads) {
#pragma omp parallel for schedule(static) num_threads(ni_threads(P[0] * P[1] * S[2], n_threads))
    for (int64_t q = 0; q < P[0] * P[1]; q++) {
        float row[S[2]];
        read_row(v, v->prev_seg_channel, box->lo[0] + nearest_index(q / P[1], S[0], P[0]),
                 box->lo[1] + nearest_index(q % P[1], S[1], P[1]), box->lo[2], S[2], row);
        for (int64_t x = 0; x < P[2]; x++) prev_pred[q * P[2] + x] = f2h(row[nearest_index(x, S[2], P[2])]);
    }
}

/* _normalize_interaction_channels_for_network_: fp16(value / (float)intensity) but for prev_seg */
static void normalize_channels(const ni_volume *v, float *channels, int64_t n, int n_threads) {
    if (v->intensity == 0.0 || v->intensity == 1.0) return;
    const float intensity = (float)v->intensity;
    for (int c = 0; c < v->n_channels; c++) {
        if (c == v->prev_seg_channel || !channel_may_be_nonzero(v, c)) continue;
        float *x = channels + (int64_t)c * n;
#pragma omp parallel for schedule(static) num_threads(ni_threads(n, n_threads))
        for (int64_t i = 0; i < n; i++)
            if (x[i] != 0.0f) x[i] = round_f16(x[i] / intensity); /* mostly zero: 0 / I stays 0 */
    }
}

i3rt_status ni_build_network_input(i3_ctx *ctx, const ni_volume *v, const int64_t patch[3], const int64_t center[3],
                                   double zoom, float *input, uint16_t *prev_pred, i3rt_box *box, int n_threads) {
    int64_t S[3];
    i3rt_box b;
    ni_scaled_patch(patch, zoom, center, S, &b);
    if (box) *box = b;
    const int64_t np = patch[0] * patch[1] * patch[2];
    if (S[0] == patch[0] && S[1] == patch[1] && S[2] == patch[2]) {
        crop_input(v, &b, patch, input, prev_pred, n_threads);
    } else {
        const int k = ni_dilation_window(zoom);
        const image_crop crop = {v, &b};
        trilinear(&crop, read_image_crop, S, patch, input, NULL, n_threads);
        for (int c = 0; c < v->n_channels; c++) {
            float *out = input + (1 + (int64_t)c) * np;
            if (!channel_may_be_nonzero(v, c)) {
                memset(out, 0, (size_t)np * sizeof *out);
                continue;
            }
            const int dilate = k > 1 && c < 32 && ((v->dilation_channels >> c) & 1u);
            I3_TRY(zoom_channel(ctx, v, c, &b, S, patch, dilate ? k : 1, out, n_threads));
        }
        if (prev_pred) zoom_prev_seg(v, &b, S, patch, prev_pred, n_threads);
    }
    normalize_channels(v, input + np, np, n_threads);
    return I3RT_OK;
}

/* ---- AutoZoom's decision and the coarse result ----------------------------------------------------- */

int ni_border_changed(const uint8_t *pred, const uint16_t *prev_pred, const int64_t shape[3]) {
    const int64_t stride[3] = {shape[1] * shape[2], shape[2], 1};
    for (int dim = 0; dim < 3; dim++) {
        const int u = dim == 0 ? 1 : 0, w = dim == 2 ? 1 : 2; /* the face's two axes */
        for (int side = 0; side < 2; side++) {
            const int64_t at = (side ? shape[dim] - 1 : 0) * stride[dim];
            double prev = 0, cur = 0, diff = 0;
            for (int64_t i = 0; i < shape[u]; i++) {
                for (int64_t j = 0; j < shape[w]; j++) {
                    const int64_t idx = at + i * stride[u] + j * stride[w];
                    const float p = h2f(prev_pred[idx]), q = (float)pred[idx];
                    prev += p, cur += q, diff += p != q;
                }
            }
            const double lo = prev < cur ? prev : cur, hi = prev < cur ? cur : prev;
            const double rel = hi / (lo > 1e-5 ? lo : 1e-5) - 1;
            if (diff > 1500 || (diff > 100 && rel > 0.2)) return 1;
        }
    }
    return 0;
}

typedef struct {
    const uint8_t *mask;
    int64_t shape[3];
} mask_rows;

static void read_mask_row(const void *src, int64_t z, int64_t y, int64_t n, float *row) {
    const mask_rows *m = src;
    const uint8_t *r = m->mask + (z * m->shape[1] + y) * m->shape[2];
    for (int64_t x = 0; x < n; x++) row[x] = (float)r[x];
}

void ni_upsample_coarse(const uint8_t *pred, const int64_t in[3], const int64_t out[3], uint8_t *up, int n_threads) {
    if (in[0] == out[0] && in[1] == out[1] && in[2] == out[2]) {
        memcpy(up, pred, (size_t)(in[0] * in[1] * in[2]));
        return;
    }
    const mask_rows m = {pred, {in[0], in[1], in[2]}};
    trilinear(&m, read_mask_row, in, out, NULL, up, n_threads);
}

/* ---- refinement planning --------------------------------------------------------------------------- */

i3rt_status ni_pool3d_u8(i3_ctx *ctx, uint8_t *x, const int64_t shape[3], int k, int use_min, int n_threads) {
    if (k <= 1) return I3RT_OK;
    const int64_t r = k / 2, plane = shape[1] * shape[2], n = shape[0] * plane;
    uint8_t *copy = i3_malloc(ctx, (size_t)n, "pool copy");
    uint8_t *tmp = i3_malloc(ctx, (size_t)n_threads * (size_t)plane, "pool planes");
    if (!copy || !tmp) return free(copy), free(tmp), I3RT_ERR_OUT_OF_MEMORY;
    /* max/min are separable and exact in any order: rows and columns per plane, then across planes */
#pragma omp parallel num_threads(ni_threads(n * k, n_threads))
    {
        uint8_t *t = tmp + (size_t)omp_get_thread_num() * (size_t)plane;
#pragma omp for schedule(static)
        for (int64_t z = 0; z < shape[0]; z++) {
            uint8_t *pl = x + z * plane;
            for (int64_t y = 0; y < shape[1]; y++)
                line_extreme_u8(pl + y * shape[2], shape[2], r, use_min, t + y * shape[2]);
            for (int64_t y = 0; y < shape[1]; y++)
                blocks_extreme_u8(t, shape[2], max64(y - r, 0), min64(y + r + 1, shape[1]), shape[2], use_min,
                                  copy + z * plane + y * shape[2]);
        }
#pragma omp for schedule(static)
        for (int64_t z = 0; z < shape[0]; z++)
            blocks_extreme_u8(copy, plane, max64(z - r, 0), min64(z + r + 1, shape[0]), plane, use_min, x + z * plane);
    }
    free(copy), free(tmp);
    return I3RT_OK;
}

typedef struct {
    i3rt_box *at;
    int n, cap;
} box_list;

static i3rt_status push_box(i3_ctx *ctx, box_list *l, const int64_t c[3], const int64_t half[3], const int64_t end[3]) {
    if (l->n == l->cap) {
        const int cap = l->cap ? 2 * l->cap : 16;
        i3rt_box *at = realloc(l->at, (size_t)cap * sizeof *at);
        if (!at) return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "nnInteractive refinement: out of memory for boxes");
        l->at = at, l->cap = cap;
    }
    i3rt_box *b = &l->at[l->n++];
    for (int a = 0; a < 3; a++) b->lo[a] = c[a] - half[a], b->hi[a] = c[a] + end[a];
    return I3RT_OK;
}

/* The part of a candidate's box that it marks as covered: shrunk by the margin, clipped to the volume. */
static void covered_bounds(const int64_t c[3], const int64_t shape[3], const int64_t half[3], const int64_t end[3],
                           const int64_t margin[3], int64_t lo[3], int64_t hi[3]) {
    for (int a = 0; a < 3; a++) {
        lo[a] = max64(0, c[a] - half[a] + margin[a]);
        hi[a] = min64(shape[a], c[a] + end[a] - margin[a]);
    }
}

static int64_t count_in_box(const uint8_t *m, const int64_t shape[3], const int64_t lo[3], const int64_t hi[3]) {
    int64_t sum = 0;
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++) {
            const uint8_t *row = m + (z * shape[1] + y) * shape[2];
            for (int64_t x = lo[2]; x < hi[2]; x++) sum += row[x] != 0;
        }
    return sum;
}

static void clear_box(uint8_t *m, const int64_t shape[3], const int64_t lo[3], const int64_t hi[3]) {
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            if (hi[2] > lo[2]) memset(m + (z * shape[1] + y) * shape[2] + lo[2], 0, (size_t)(hi[2] - lo[2]));
}

/* _nonzero_bbox_inclusive; returns the number of nonzero voxels (0: lo/hi untouched). */
static int64_t nonzero_bbox(const uint8_t *m, const int64_t shape[3], int64_t lo[3], int64_t hi[3], int n_threads) {
    int64_t l0 = INT64_MAX, l1 = INT64_MAX, l2 = INT64_MAX, h0 = -1, h1 = -1, h2 = -1, count = 0;
    const int threads = ni_threads(shape[0] * shape[1] * shape[2], n_threads);
#pragma omp parallel for schedule(static) num_threads(threads) reduction(min : l0, l1, l2) reduction(max : h0, h1, h2) \
    reduction(+ : count)
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < shape[1]; y++) {
            const uint8_t *row = m + (z * shape[1] + y) * shape[2];
            int64_t first = -1, last = -1, n = 0;
            for (int64_t x = 0; x < shape[2]; x++)
                if (row[x]) last = x, first = first < 0 ? x : first, n++;
            if (n == 0) continue;
            count += n;
            l0 = min64(l0, z), h0 = max64(h0, z), l1 = min64(l1, y), h1 = max64(h1, y);
            l2 = min64(l2, first), h2 = max64(h2, last);
        }
    if (count) lo[0] = l0, lo[1] = l1, lo[2] = l2, hi[0] = h0, hi[1] = h1, hi[2] = h2;
    return count;
}

/* random_sampling_fallback(mask, ..., n_samples <= NI_MAX_SAMPLES); mask is cleared as it is covered. */
#define NI_MAX_SAMPLES 25
static i3rt_status sample_boxes(i3_ctx *ctx, uint8_t *mask, const int64_t shape[3], const int64_t half[3],
                                const int64_t end[3], const int64_t margin[3], int n_samples, np_random *rng,
                                box_list *out, int n_threads) {
    const int64_t plane = shape[1] * shape[2];
    int64_t *per_plane = i3_malloc(ctx, (size_t)shape[0] * sizeof *per_plane, "fallback counts");
    if (!per_plane) return I3RT_ERR_OUT_OF_MEMORY;
    i3rt_status st = I3RT_OK;
    for (;;) {
        int64_t total = 0;
#pragma omp parallel for schedule(static) num_threads(ni_threads(shape[0] * plane, n_threads)) reduction(+ : total)
        for (int64_t z = 0; z < shape[0]; z++) {
            int64_t n = 0;
            for (int64_t i = 0; i < plane; i++) n += mask[z * plane + i] != 0;
            per_plane[z] = n, total += n;
        }
        if (total == 0) break;
        /* the draws first (they do not depend on the counts), then all candidates' counts at once */
        int64_t c[NI_MAX_SAMPLES][3], lo[NI_MAX_SAMPLES][3], hi[NI_MAX_SAMPLES][3], n[NI_MAX_SAMPLES], work = 0;
        for (int s = 0; s < n_samples; s++) {
            int64_t idx = np_random_choice(rng, total), z = 0, i = 0; /* idx-th of torch.nonzero(mask) */
            while (idx >= per_plane[z]) idx -= per_plane[z++];
            for (;; i++)
                if (mask[z * plane + i] && idx-- == 0) break;
            c[s][0] = z, c[s][1] = i / shape[2], c[s][2] = i % shape[2];
            covered_bounds(c[s], shape, half, end, margin, lo[s], hi[s]);
            work += max64(hi[s][0] - lo[s][0], 0) * max64(hi[s][1] - lo[s][1], 0) * max64(hi[s][2] - lo[s][2], 0);
        }
#pragma omp parallel for schedule(dynamic, 1) num_threads(ni_threads(work, n_threads))
        for (int s = 0; s < n_samples; s++) n[s] = count_in_box(mask, shape, lo[s], hi[s]);
        int best = -1;
        for (int s = 0; s < n_samples; s++)
            if (n[s] > (best < 0 ? 0 : n[best])) best = s;
        if (best < 0) { /* the margin leaves the centre uncovered; Python fails here too */
            st = i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                         "nnInteractive refinement: box margin (%lld) leaves the box centre uncovered",
                         (long long)margin[0]);
            break;
        }
        if ((st = push_box(ctx, out, c[best], half, end)) != I3RT_OK) break;
        clear_box(mask, shape, lo[best], hi[best]);
    }
    free(per_plane);
    return st;
}

/* Counts of a mask over every box of the candidate grid, plane by plane: sums[x][ky][kz] = nonzero voxels
 * of plane x in rows ylo[ky]..yhi[ky], columns zlo[kz]..zhi[kz]. A candidate's count is the sum over its
 * planes; after a box is cleared only its planes are recounted. */
typedef struct {
    int64_t ny, nz;
    const int64_t *ylo, *yhi, *zlo, *zhi;
    int64_t *sums;    /* [shape[0], ny, nz] */
    int64_t *scratch; /* per thread: shape[2] + 1 + (shape[1] + 1) * nz */
} grid_counts;

static void grid_count_planes(grid_counts *g, const uint8_t *m, const int64_t shape[3], int64_t x0, int64_t x1,
                              int n_threads) {
    const int64_t per_thread = shape[2] + 1 + (shape[1] + 1) * g->nz;
#pragma omp parallel for schedule(dynamic, 1) num_threads(ni_threads((x1 - x0) * shape[1] * shape[2], n_threads))
    for (int64_t x = x0; x < x1; x++) {
        int64_t *pre = g->scratch + (size_t)omp_get_thread_num() * per_thread, *rows = pre + shape[2] + 1;
        memset(rows, 0, (size_t)g->nz * sizeof *rows);
        for (int64_t y = 0; y < shape[1]; y++) {
            const uint8_t *row = m + (x * shape[1] + y) * shape[2];
            pre[0] = 0;
            for (int64_t z = 0; z < shape[2]; z++) pre[z + 1] = pre[z] + (row[z] != 0);
            for (int64_t kz = 0; kz < g->nz; kz++) /* rows[(y + 1) nz + kz]: prefix over y */
                rows[(y + 1) * g->nz + kz] =
                    rows[y * g->nz + kz] + (g->zhi[kz] > g->zlo[kz] ? pre[g->zhi[kz]] - pre[g->zlo[kz]] : 0);
        }
        for (int64_t ky = 0; ky < g->ny; ky++)
            for (int64_t kz = 0; kz < g->nz; kz++)
                g->sums[(x * g->ny + ky) * g->nz + kz] =
                    g->yhi[ky] > g->ylo[ky] ? rows[g->yhi[ky] * g->nz + kz] - rows[g->ylo[ky] * g->nz + kz] : 0;
    }
}

/* generate_bounding_boxes from current_depth on; stride NULL: "auto". */
static i3rt_status cover(i3_ctx *ctx, const uint8_t *mask, const int64_t shape[3], const int64_t half[3],
                         const int64_t end[3], const int64_t margin[3], const int64_t *stride_in, int max_depth,
                         int depth, np_random *rng, box_list *out, int n_threads) {
    const int64_t n = shape[0] * shape[1] * shape[2];
    int64_t lo[3], hi[3];
    int64_t remaining = nonzero_bbox(mask, shape, lo, hi, n_threads);
    if (remaining == 0) return I3RT_OK;
    uint8_t *uncovered = i3_malloc(ctx, (size_t)n, "refinement cover mask");
    if (!uncovered) return I3RT_ERR_OUT_OF_MEMORY;
    memcpy(uncovered, mask, (size_t)n);
    if (depth > max_depth) {
        i3rt_status st = sample_boxes(ctx, uncovered, shape, half, end, margin, 25, rng, out, n_threads);
        free(uncovered);
        return st;
    }
    int64_t stride[3], count[3] = {0}, total = 0;
    for (int a = 0; a < 3; a++) {
        stride[a] = stride_in ? stride_in[a] : max64(1, (int64_t)nearbyint((double)(hi[a] - lo[a]) / 4.0));
        count[a] = (hi[a] + 1 - lo[a] + stride[a] - 1) / stride[a]; /* arange(lo, hi + 1, stride) */
        total += count[a];
    }
    /* per axis: candidate coordinates and their covered bounds; then the candidates in
     * torch.cartesian_prod order (axis 0 slowest) that lie on the mask */
    int64_t *axis = i3_malloc(ctx, (size_t)total * 3 * sizeof *axis, "refinement grid");
    int64_t *cand = i3_malloc(ctx, (size_t)(count[0] * count[1] * count[2]) * 3 * sizeof *cand,
                              "refinement candidates");
    if (!axis || !cand) return free(uncovered), free(axis), free(cand), I3RT_ERR_OUT_OF_MEMORY;
    int64_t *coord[3], *blo[3], *bhi[3];
    for (int a = 0, at = 0; a < 3; at += (int)count[a], a++) {
        coord[a] = axis + at, blo[a] = axis + total + at, bhi[a] = axis + 2 * total + at;
        for (int64_t i = 0; i < count[a]; i++) {
            coord[a][i] = lo[a] + i * stride[a];
            blo[a][i] = max64(0, coord[a][i] - half[a] + margin[a]);
            bhi[a][i] = min64(shape[a], coord[a][i] + end[a] - margin[a]);
        }
    }
    int64_t n_cand = 0;
    for (int64_t i = 0; i < count[0]; i++)
        for (int64_t j = 0; j < count[1]; j++)
            for (int64_t k = 0; k < count[2]; k++)
                if (mask[(coord[0][i] * shape[1] + coord[1][j]) * shape[2] + coord[2][k]])
                    cand[3 * n_cand] = i, cand[3 * n_cand + 1] = j, cand[3 * n_cand + 2] = k, n_cand++;
    i3rt_status st = I3RT_OK;
    if (n_cand == 0) {
        const int64_t half_stride[3] = {max64(1, stride[0] / 2), max64(1, stride[1] / 2), max64(1, stride[2] / 2)};
        st = cover(ctx, mask, shape, half, end, margin, half_stride, max_depth, depth + 1, rng, out, n_threads);
        free(uncovered), free(axis), free(cand);
        return st;
    }
    grid_counts g = {count[1], count[2], blo[1], bhi[1], blo[2], bhi[2], NULL, NULL};
    g.sums = i3_malloc(ctx, (size_t)(shape[0] * g.ny * g.nz) * sizeof *g.sums, "refinement grid counts");
    g.scratch = i3_malloc(ctx, (size_t)n_threads * (size_t)(shape[2] + 1 + (shape[1] + 1) * g.nz) * sizeof *g.scratch,
                          "refinement grid scratch");
    if (!g.sums || !g.scratch) st = I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK) grid_count_planes(&g, uncovered, shape, 0, shape[0], n_threads);
    while (st == I3RT_OK && n_cand > 0 && remaining > 0) {
        int64_t best = 0, best_i = -1;
        for (int64_t i = 0; i < n_cand; i++) {
            const int64_t *c = cand + 3 * i;
            int64_t s = 0;
            for (int64_t x = blo[0][c[0]]; x < bhi[0][c[0]]; x++) s += g.sums[(x * g.ny + c[1]) * g.nz + c[2]];
            if (s > best) best = s, best_i = i;
        }
        if (best == 0) break;
        const int64_t *c = cand + 3 * best_i;
        const int64_t centre[3] = {coord[0][c[0]], coord[1][c[1]], coord[2][c[2]]};
        int64_t clo[3], chi[3];
        covered_bounds(centre, shape, half, end, margin, clo, chi);
        if ((st = push_box(ctx, out, centre, half, end)) != I3RT_OK) break;
        clear_box(uncovered, shape, clo, chi);
        remaining -= best;
        grid_count_planes(&g, uncovered, shape, clo[0], chi[0], n_threads);
        int64_t kept = 0;
        for (int64_t i = 0; i < n_cand; i++) {
            const int64_t *ci = cand + 3 * i;
            if (uncovered[(coord[0][ci[0]] * shape[1] + coord[1][ci[1]]) * shape[2] + coord[2][ci[2]]])
                memmove(cand + 3 * kept++, ci, 3 * sizeof *cand);
        }
        n_cand = kept;
    }
    if (st == I3RT_OK && remaining > 0)
        st = sample_boxes(ctx, uncovered, shape, half, end, margin, 10, rng, out, n_threads);
    free(g.sums), free(g.scratch), free(uncovered), free(axis), free(cand);
    return st;
}

i3rt_status ni_cover_boxes(i3_ctx *ctx, const uint8_t *mask, const int64_t shape[3], const int64_t bbox_size[3],
                           const int64_t margin[3], int max_depth, np_random *rng, i3rt_box **boxes, int *n_boxes,
                           int n_threads) {
    const int64_t half[3] = {bbox_size[0] / 2, bbox_size[1] / 2, bbox_size[2] / 2};
    const int64_t end[3] = {bbox_size[0] - half[0], bbox_size[1] - half[1], bbox_size[2] - half[2]};
    box_list l = {0};
    i3rt_status st = I3RT_OK;
    if (shape[0] > 0 && shape[1] > 0 && shape[2] > 0)
        st = cover(ctx, mask, shape, half, end, margin, NULL, max_depth, 0, rng, &l, n_threads);
    if (st != I3RT_OK) {
        free(l.at);
        l = (box_list){0};
    }
    *boxes = l.at, *n_boxes = l.n;
    return st;
}

i3rt_status ni_plan_refinement(i3_ctx *ctx, const uint8_t *pred_up, const i3rt_box *scaled_box,
                               const uint16_t *prev_seg, const int64_t shape[3], const int64_t patch[3],
                               const int64_t last_center[3], int force_full_refine, np_random *rng,
                               i3rt_box **boxes, int *n_boxes, int n_threads) {
    *boxes = NULL, *n_boxes = 0;
    int64_t seen_lo[3], seen_hi[3], plan_lo[3], plan_hi[3], seen[3], plan[3], pred_shape[3];
    int has_seen = 1, has_plan;
    for (int a = 0; a < 3; a++) {
        seen_lo[a] = max64(scaled_box->lo[a], 0), seen_hi[a] = min64(scaled_box->hi[a], shape[a]);
        has_seen &= seen_hi[a] > seen_lo[a];
        pred_shape[a] = scaled_box->hi[a] - scaled_box->lo[a];
    }
    memcpy(plan_lo, seen_lo, sizeof plan_lo), memcpy(plan_hi, seen_hi, sizeof plan_hi);
    has_plan = has_seen;
    const int64_t nvox = shape[0] * shape[1] * shape[2];
    if (force_full_refine) { /* _compute_prev_seg_positive_bbox: prev_seg > 0.5 */
        int64_t l0 = INT64_MAX, l1 = INT64_MAX, l2 = INT64_MAX, h0 = -1, h1 = -1, h2 = -1;
        const int threads = ni_threads(nvox, n_threads);
#pragma omp parallel for schedule(static) num_threads(threads) reduction(min : l0, l1, l2) reduction(max : h0, h1, h2)
        for (int64_t i = 0; i < nvox; i++) {
            if (!(h2f(prev_seg[i]) > 0.5f)) continue;
            const int64_t z = i / (shape[1] * shape[2]), y = (i / shape[2]) % shape[1], x = i % shape[2];
            l0 = min64(l0, z), h0 = max64(h0, z), l1 = min64(l1, y), h1 = max64(h1, y);
            l2 = min64(l2, x), h2 = max64(h2, x);
        }
        if (h0 >= 0) {
            const int64_t pl[3] = {l0, l1, l2}, ph[3] = {h0 + 1, h1 + 1, h2 + 1};
            for (int a = 0; a < 3; a++) {
                plan_lo[a] = has_plan ? min64(plan_lo[a], pl[a]) : pl[a];
                plan_hi[a] = has_plan ? max64(plan_hi[a], ph[a]) : ph[a];
            }
            has_plan = 1;
        }
    }
    box_list l = {0};
    i3rt_status st = I3RT_OK;
    if (has_plan && has_seen) { /* _compute_local_diff_map (+ _mark_prev_seg_in_local_diff) */
        for (int a = 0; a < 3; a++) seen[a] = seen_hi[a] - seen_lo[a], plan[a] = plan_hi[a] - plan_lo[a];
        const int64_t nseen = seen[0] * seen[1] * seen[2], nplan = plan[0] * plan[1] * plan[2];
        uint8_t *diff = i3_malloc(ctx, (size_t)nseen, "refinement diff map");
        uint8_t *local = nplan == nseen ? diff : i3_calloc(ctx, (size_t)nplan, 1, "refinement planning map");
        if (!diff || !local) {
            if (local != diff) free(local);
            free(diff);
            return I3RT_ERR_OUT_OF_MEMORY;
        }
#pragma omp parallel for schedule(static) num_threads(ni_threads(nseen, n_threads))
        for (int64_t r = 0; r < seen[0] * seen[1]; r++) {
            const int64_t z = seen_lo[0] + r / seen[1], y = seen_lo[1] + r % seen[1];
            const int64_t row = (z - scaled_box->lo[0]) * pred_shape[1] + (y - scaled_box->lo[1]);
            const uint8_t *p = pred_up + row * pred_shape[2] - scaled_box->lo[2];
            const uint16_t *q = prev_seg + (z * shape[1] + y) * shape[2];
            for (int64_t x = seen_lo[2]; x < seen_hi[2]; x++)
                diff[r * seen[2] + x - seen_lo[2]] = (float)p[x] != h2f(q[x]);
        }
        st = ni_pool3d_u8(ctx, diff, seen, 5, 1, n_threads);
        if (st == I3RT_OK) st = ni_pool3d_u8(ctx, diff, seen, 5, 0, n_threads);
        if (st == I3RT_OK && local != diff) {
            for (int64_t r = 0; r < seen[0] * seen[1]; r++) {
                const int64_t row =
                    (seen_lo[0] - plan_lo[0] + r / seen[1]) * plan[1] + seen_lo[1] - plan_lo[1] + r % seen[1];
                memcpy(local + row * plan[2] + seen_lo[2] - plan_lo[2], diff + r * seen[2], (size_t)seen[2]);
            }
        }
        if (st == I3RT_OK && force_full_refine) {
#pragma omp parallel for schedule(static) num_threads(ni_threads(nplan, n_threads))
            for (int64_t r = 0; r < plan[0] * plan[1]; r++) {
                const int64_t row = (plan_lo[0] + r / plan[1]) * shape[1] + plan_lo[1] + r % plan[1];
                const uint16_t *q = prev_seg + row * shape[2] + plan_lo[2];
                for (int64_t x = 0; x < plan[2]; x++)
                    if (h2f(q[x]) > 0.5f) local[r * plan[2] + x] = 1;
            }
        }
        if (st == I3RT_OK) {
            const int64_t margin[3] = {24, 24, 24};
            i3rt_box *found = NULL;
            int n_found = 0;
            st = ni_cover_boxes(ctx, local, plan, patch, margin, 3, rng, &found, &n_found, n_threads);
            for (int i = 0; i < n_found; i++)
                for (int a = 0; a < 3; a++) found[i].lo[a] += plan_lo[a], found[i].hi[a] += plan_lo[a];
            l = (box_list){found, n_found, n_found};
        }
        if (local != diff) free(local);
        free(diff);
        if (st != I3RT_OK) return st;
    }
    if (l.n == 0) { /* last_interaction_fallback_bbox */
        const int64_t half[3] = {patch[0] / 2, patch[1] / 2, patch[2] / 2};
        const int64_t end[3] = {patch[0] - half[0], patch[1] - half[1], patch[2] - half[2]};
        I3_TRY(push_box(ctx, &l, last_center, half, end));
    }
    *boxes = l.at, *n_boxes = l.n;
    return I3RT_OK;
}
