/* Slice-and-Conquer's simulated user: RITM's automatic clicker on one slice and the paper's evaluation
 * protocol over the session (snc_session.h, docs/snc.md). */
#include "snc_session.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double i3_snc_dice(const uint8_t *a, const uint8_t *b, int64_t n) {
    int64_t both = 0, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        both += a[i] && b[i];
        sum += (a[i] != 0) + (b[i] != 0);
    }
    return sum ? 2.0 * (double)both / (double)sum : 1.0;
}

/* Felzenszwalb & Huttenlocher's 1D squared distance transform of f[0..n) (0 at sites, INF elsewhere)
 * into d; v, z scratch of n and n + 1. Exact for integer positions. */
static void dt1d(const double *f, int64_t n, double *d, int64_t *v, double *z) {
    int64_t k = 0;
    v[0] = 0, z[0] = -INFINITY, z[1] = INFINITY;
    for (int64_t q = 1; q < n; q++) {
        double s;
        for (;; k--) { /* z[0] = -inf ends the loop at k = 0 */
            const int64_t p = v[k];
            s = ((f[q] + (double)(q * q)) - (f[p] + (double)(p * p))) / (double)(2 * (q - p));
            if (s > z[k]) break;
        }
        k++;
        v[k] = q, z[k] = s, z[k + 1] = INFINITY;
    }
    k = 0;
    for (int64_t q = 0; q < n; q++) {
        while (z[k + 1] < (double)q) k++;
        const double dq = (double)(q - v[k]);
        d[q] = dq * dq + f[v[k]];
    }
}

/* The distance from every pixel of region (the plane [rows, cols], region[i] != 0) to the nearest pixel
 * outside it, the outside including one padding pixel around the
 * plane (RITM pads by one before cv2.distanceTransform): dist [rows, cols], float32 sqrt of the exact
 * squared distance, as OpenCV's precise DIST_L2. */
static i3rt_status distance_transform(i3_ctx *ctx, const uint8_t *region, int64_t rows, int64_t cols, float *dist) {
    const int64_t pr = rows + 2, pc = cols + 2, len = pr > pc ? pr : pc;
    double *g = malloc((size_t)(pr * pc) * sizeof *g);
    double *f = calloc((size_t)len, sizeof *f), *d = malloc((size_t)len * sizeof *d);
    double *z = malloc((size_t)(len + 1) * sizeof *z);
    int64_t *v = malloc((size_t)len * sizeof *v);
    if (!g || !f || !d || !z || !v) {
        free(g), free(f), free(d), free(z), free(v);
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "SnC clicker: out of memory for a %lld x %lld distance transform",
                       (long long)rows, (long long)cols);
    }
    const double inf = 1e30;
    for (int64_t r = 0; r < pr; r++)
        for (int64_t c = 0; c < pc; c++) {
            const int inside = r > 0 && r <= rows && c > 0 && c <= cols && region[(r - 1) * cols + (c - 1)];
            g[r * pc + c] = inside ? inf : 0.0;
        }
    for (int64_t c = 0; c < pc; c++) { /* columns */
        for (int64_t r = 0; r < pr; r++) f[r] = g[r * pc + c];
        dt1d(f, pr, d, v, z);
        for (int64_t r = 0; r < pr; r++) g[r * pc + c] = d[r];
    }
    for (int64_t r = 1; r <= rows; r++) { /* rows (the padding rows are not needed any more) */
        dt1d(g + r * pc, pc, d, v, z);
        for (int64_t c = 1; c <= cols; c++) dist[(r - 1) * cols + (c - 1)] = sqrtf((float)d[c]);
    }
    free(g), free(f), free(d), free(z), free(v);
    return I3RT_OK;
}

i3rt_status i3_snc_next_click(i3_ctx *ctx, const uint8_t *truth, const uint8_t *pred, const uint8_t *clicked,
                              int64_t rows, int64_t cols, i3_snc_click *click, int *found) {
    if (!truth || !pred || !click || !found || rows < 1 || cols < 1)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC clicker: NULL mask or output, or a %lld x %lld plane",
                       (long long)rows, (long long)cols);
    *found = 0;
    const int64_t n = rows * cols;
    uint8_t *err = i3_malloc(ctx, (size_t)(2 * n), "the clicker's error regions");
    float *dt = i3_malloc(ctx, (size_t)(2 * n) * sizeof *dt, "the clicker's distance transforms");
    i3rt_status st = err && dt ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n && st == I3RT_OK; i++) {
        err[i] = truth[i] && !pred[i];     /* false negatives */
        err[n + i] = !truth[i] && pred[i]; /* false positives */
    }
    if (st == I3RT_OK) st = distance_transform(ctx, err, rows, cols, dt);
    if (st == I3RT_OK) st = distance_transform(ctx, err + n, rows, cols, dt + n);
    if (st == I3RT_OK) {
        float max[2] = {0.0f, 0.0f};
        int64_t at[2] = {0, 0};
        for (int e = 0; e < 2; e++)
            for (int64_t i = 0; i < n; i++) {
                const float v = clicked && clicked[i] ? 0.0f : dt[e * n + i];
                if (v > max[e]) max[e] = v, at[e] = i; /* the first maximum in row-major order */
            }
        const int e = max[0] > max[1] ? 0 : 1; /* is_positive = fn_max_dist > fp_max_dist */
        if (max[e] > 0.0f) {
            *click = (i3_snc_click){(float)(at[e] / cols), (float)(at[e] % cols), e == 0};
            *found = 1;
        }
    }
    free(err);
    free(dt);
    return st;
}

int i3_snc_first_slice(const uint8_t *truth, int64_t d, int64_t h, int64_t w, i3_slice *out) {
    int64_t *count[3] = {calloc((size_t)d, sizeof(int64_t)), calloc((size_t)h, sizeof(int64_t)),
                         calloc((size_t)w, sizeof(int64_t))};
    int found = 0;
    if (count[0] && count[1] && count[2]) {
        for (int64_t z = 0; z < d; z++)
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++)
                    if (truth[(z * h + y) * w + x]) count[0][z]++, count[1][y]++, count[2][x]++;
        const int64_t len[3] = {d, h, w};
        int64_t best = 0;
        for (int a = 0; a < 3; a++)
            for (int64_t i = 0; i < len[a]; i++)
                if (count[a][i] > best) {
                    best = count[a][i];
                    *out = (i3_slice){.axis = (i3_axis)a, .index = i, .sum = (double)best, .relative = 1.0};
                    found = 1;
                }
    }
    free(count[0]), free(count[1]), free(count[2]);
    return found;
}

/* The inner loop on one slice: from its start (the session's), clicks while Dice <= stop_dice and fewer
 * than max_clicks, then finish. */
static i3rt_status annotate_slice(i3_snc_session *s, const uint8_t *truth, const i3_snc_simulate_params *p,
                                  i3_slice slice, i3_snc_iteration *it) {
    const i3_volume *im = i3_snc_session_image(s);
    int64_t rows, cols;
    i3_slice_dims(slice.axis, im->d, im->h, im->w, &rows, &cols);
    const int64_t n = rows * cols;
    I3_TRY(i3_snc_session_begin_slice(s, slice.axis, slice.index)); /* the start is its mask now */
    const uint8_t *mask = i3_snc_session_slice_mask(s, slice.axis, slice.index, &rows, &cols);
    uint8_t *plane = i3_calloc(i3_snc_session_context(s), (size_t)(2 * n), 1, "the simulated user's planes");
    if (!plane) return I3RT_ERR_OUT_OF_MEMORY;
    uint8_t *target = plane, *clicked = plane + n;
    i3_slice_get(truth, 1, im->d, im->h, im->w, slice.axis, slice.index, target);
    it->start_dice = i3_snc_dice(mask, target, n);
    i3rt_status st = I3RT_OK;
    int clicks = 0, found = 1;
    i3_snc_click c;
    while (st == I3RT_OK && clicks < p->max_clicks && !(i3_snc_dice(mask, target, n) > p->stop_dice)) {
        st = i3_snc_next_click(i3_snc_session_context(s), target, mask, clicked, rows, cols, &c, &found);
        if (st != I3RT_OK || !found) break;
        st = i3_snc_session_click(s, slice.axis, slice.index, c.y, c.x, c.positive);
        if (st != I3RT_OK) break;
        clicked[(int64_t)c.y * cols + (int64_t)c.x] = 1;
        clicks++;
        mask = i3_snc_session_slice_mask(s, slice.axis, slice.index, &rows, &cols);
    }
    const double dice = i3_snc_dice(mask, target, n);
    if (st == I3RT_OK) st = i3_snc_session_finish(s, slice.axis, slice.index, dice > p->stop_dice);
    it->slice = slice;
    it->clicks = clicks;
    it->slice_dice = dice;
    it->accurate = dice > p->stop_dice;
    free(plane);
    return st;
}

i3rt_status i3_snc_simulate(i3_snc_session *s, const uint8_t *truth, const i3_snc_simulate_params *params,
                            i3_snc_iteration *out, int *n_done) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    i3_ctx *ctx = i3_snc_session_context(s);
    const i3_snc_simulate_params p = params ? *params : I3_SNC_SIMULATE_DEFAULTS;
    if (!truth || !out || !n_done)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC simulate: NULL truth or output");
    if (p.iterations < 1 || p.max_clicks < 1 || !(p.stop_dice >= 0.0 && p.stop_dice <= 1.0))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "SnC simulate: iterations %d and max_clicks %d must be >= 1, stop_dice %g in [0, 1]",
                       p.iterations, p.max_clicks, p.stop_dice);
    if (i3_snc_session_finished(s) > 0 || i3_snc_session_iterations(s) > 0)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC simulate: the session has been annotated already");
    *n_done = 0;
    const i3_volume *im = i3_snc_session_image(s);
    const int64_t n = im->d * im->h * im->w;
    i3_slice slice;
    if (!i3_snc_first_slice(truth, im->d, im->h, im->w, &slice))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC simulate: the ground truth has no foreground voxel");
    for (int t = 0; t < p.iterations; t++) {
        const double t0 = i3_now_seconds();
        i3_snc_iteration *it = &out[t];
        I3_TRY(annotate_slice(s, truth, &p, slice, it));
        I3_TRY(i3_snc_session_propagate(s));
        it->dice = i3_snc_dice(i3_snc_session_mask(s), truth, n);
        it->seconds = i3_now_seconds() - t0;
        *n_done = t + 1;
        int found;
        I3_TRY(i3_snc_session_recommendation(s, &slice, &found));
        if (!found) break;
    }
    return I3RT_OK;
}
