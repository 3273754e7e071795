/* Slice-and-Conquer's session, its public API and the simulated user (runtime/snc_session.h,
 * runtime/snc_simulate.c, include/i3rt.h i3rt_snc_*; docs/snc.md "session and CLI").
 *
 *   - the clicker against a brute-force distance transform computed here (every pixel against every
 *     pixel outside the region and the one-pixel padding), on synthetic and random masks;
 *   - the first slice and the Dice on known answers;
 *   - the loop end to end with small networks defined here (a 2D net that thresholds the image and
 *     follows the clicks; a 3D net that is confident near finished slices), checked step by step against
 *     what the protocol says, and twice for determinism;
 *   - the start of a slice after a propagation (the 3D probabilities' slice, or empty with start_3d 0): the
 *     first click's previous mask, the mask before any click, a start accepted by the simulated user
 *     without a click, and with HRNet-18s the session's click equal to a predictor's from that start;
 *   - the public API on a NIfTI file with RITM's HRNet-18 (random weights, tests/gen_snc_session.py);
 *   - bad input: the error names the problem and the session still works afterwards;
 *   - saving: whole or not at all. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_backend.h"
#include "fixtures.h"
#include "i3rt.h"
#include "network.h"
#include "png_export.h"
#include "snc_guided.h"
#include "snc_session.h"
#include "volume_io.h"

static i3rt_context *new_ctx(void) {
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    return ctx;
}

/* ---- the clicker ------------------------------------------------------------------------------- */

/* Squared distance from (r, c) to the nearest pixel outside region (the plane padded by one outside pixel). */
static int64_t brute_d2(const uint8_t *region, int64_t rows, int64_t cols, int64_t r, int64_t c) {
    int64_t best = INT64_MAX;
    for (int64_t y = -1; y <= rows; y++)
        for (int64_t x = -1; x <= cols; x++) {
            const int outside = y < 0 || y >= rows || x < 0 || x >= cols || !region[y * cols + x];
            const int64_t d2 = (y - r) * (y - r) + (x - c) * (x - c);
            if (outside && d2 < best) best = d2;
        }
    return best;
}

/* RITM's _get_next_click written out plainly with the brute-force transform. */
static int brute_click(const uint8_t *truth, const uint8_t *pred, const uint8_t *clicked, int64_t rows, int64_t cols,
                       i3_snc_click *out) {
    float max[2] = {0, 0};
    int64_t at[2] = {0, 0};
    uint8_t *region = malloc((size_t)(rows * cols));
    for (int e = 0; e < 2; e++) {
        for (int64_t i = 0; i < rows * cols; i++) region[i] = e == 0 ? truth[i] && !pred[i] : !truth[i] && pred[i];
        for (int64_t i = 0; i < rows * cols; i++) {
            const int counts = region[i] && !(clicked && clicked[i]);
            const float v = counts ? sqrtf((float)brute_d2(region, rows, cols, i / cols, i % cols)) : 0.0f;
            if (v > max[e]) max[e] = v, at[e] = i;
        }
    }
    free(region);
    const int e = max[0] > max[1] ? 0 : 1;
    if (max[e] == 0) return 0;
    *out = (i3_snc_click){(float)(at[e] / cols), (float)(at[e] % cols), e == 0};
    return 1;
}

static void fill_disk(uint8_t *m, int64_t rows, int64_t cols, double cy, double cx, double r, uint8_t v) {
    for (int64_t y = 0; y < rows; y++)
        for (int64_t x = 0; x < cols; x++)
            if ((y - cy) * (y - cy) + (x - cx) * (x - cx) <= r * r) m[y * cols + x] = v;
}

Test(snc_session, clicker_known_answers) {
    i3rt_context *ctx = new_ctx();
    enum { R = 9, C = 11 };
    uint8_t truth[R * C] = {0}, pred[R * C] = {0};
    /* a 5 x 5 square missed: the click is at its centre, positive */
    for (int y = 2; y < 7; y++)
        for (int x = 3; x < 8; x++) truth[y * C + x] = 1;
    i3_snc_click c;
    int found;
    cr_assert_eq(i3_snc_next_click(ctx, truth, pred, NULL, R, C, &c, &found), I3RT_OK);
    cr_assert(found && c.positive && c.y == 4 && c.x == 5, "click (%g, %g, %d)", c.y, c.x, c.positive);
    /* the centre already clicked: the first of the next farthest pixels (row-major) */
    uint8_t clicked[R * C] = {0};
    clicked[4 * C + 5] = 1;
    cr_assert_eq(i3_snc_next_click(ctx, truth, pred, clicked, R, C, &c, &found), I3RT_OK);
    cr_assert(found && c.positive && c.y == 3 && c.x == 4, "click (%g, %g)", c.y, c.x);
    /* predicted everywhere: the false positives (the frame around the square, 2 px wide at the top)
     * reach the plane's border, where the padding counts as outside */
    memset(pred, 1, sizeof pred);
    cr_assert_eq(i3_snc_next_click(ctx, truth, pred, NULL, R, C, &c, &found), I3RT_OK);
    i3_snc_click b;
    cr_assert(brute_click(truth, pred, NULL, R, C, &b));
    cr_assert(found && !c.positive && c.y == b.y && c.x == b.x, "click (%g, %g) vs (%g, %g)", c.y, c.x, b.y, b.x);
    /* equal maxima: RITM's fn > fp is false, so the click is negative */
    memset(truth, 0, sizeof truth), memset(pred, 0, sizeof pred);
    truth[1 * C + 1] = 1, pred[7 * C + 9] = 1;
    cr_assert_eq(i3_snc_next_click(ctx, truth, pred, NULL, R, C, &c, &found), I3RT_OK);
    cr_assert(found && !c.positive && c.y == 7 && c.x == 9);
    /* no error left: nothing to click */
    pred[7 * C + 9] = 0, pred[1 * C + 1] = 1;
    cr_assert_eq(i3_snc_next_click(ctx, truth, pred, NULL, R, C, &c, &found), I3RT_OK);
    cr_assert_eq(found, 0);
    i3rt_context_free(ctx);
}

Test(snc_session, clicker_matches_brute_force_distance_transform) {
    i3rt_context *ctx = new_ctx();
    fx_rng rng = fx_rng_seed(77);
    int positives = 0, negatives = 0;
    for (int trial = 0; trial < 60; trial++) {
        float u[8];
        fx_fill(&rng, u, 8, 0.0f, 1.0f);
        const int64_t rows = 5 + (int64_t)(u[0] * 30), cols = 5 + (int64_t)(u[1] * 30), n = rows * cols;
        uint8_t *truth = calloc((size_t)n, 1), *pred = calloc((size_t)n, 1), *clicked = calloc((size_t)n, 1);
        fill_disk(truth, rows, cols, u[2] * rows, u[3] * cols, 2 + u[4] * 10, 1);
        fill_disk(pred, rows, cols, u[5] * rows, u[6] * cols, 2 + u[7] * 10, 1);
        float noise[64];
        fx_fill(&rng, noise, 64, 0.0f, 1.0f);
        for (int k = 0; k < 16; k++) { /* speckle, and a few clicked pixels */
            const int64_t i = (int64_t)(noise[k] * (float)n) % n;
            pred[i] = !pred[i];
            clicked[(int64_t)(noise[16 + k] * (float)n) % n] = k < 4;
        }
        i3_snc_click got, want;
        int found;
        cr_assert_eq(i3_snc_next_click(ctx, truth, pred, trial % 2 ? clicked : NULL, rows, cols, &got, &found),
                     I3RT_OK);
        const int expect = brute_click(truth, pred, trial % 2 ? clicked : NULL, rows, cols, &want);
        cr_assert_eq(found, expect, "trial %d", trial);
        if (found) {
            cr_assert(got.y == want.y && got.x == want.x && got.positive == want.positive,
                      "trial %d (%lld x %lld): click (%g, %g, %d), brute force (%g, %g, %d)", trial, (long long)rows,
                      (long long)cols, got.y, got.x, got.positive, want.y, want.x, want.positive);
            positives += got.positive, negatives += !got.positive;
        }
        free(truth), free(pred), free(clicked);
    }
    cr_expect(positives > 5 && negatives > 5, "both kinds of clicks tested (%d positive, %d negative)", positives,
              negatives);
    i3rt_context_free(ctx);
}

Test(snc_session, first_slice_and_dice) {
    enum { D = 4, H = 6, W = 5 };
    uint8_t t[D * H * W] = {0};
    i3_slice s;
    cr_assert_eq(i3_snc_first_slice(t, D, H, W, &s), 0);
    /* a 3 (h) x 4 (w) block on z = 1 and 2, plus one voxel on z = 3: axial z = 1 has 12 voxels; coronal
     * slices have 2 x 4 = 8 (+1), sagittal 2 x 3 = 6 (+1) */
    for (int z = 1; z < 3; z++)
        for (int y = 2; y < 5; y++)
            for (int x = 0; x < 4; x++) t[(z * H + y) * W + x] = 1;
    t[(3 * H + 0) * W + 4] = 1;
    cr_assert_eq(i3_snc_first_slice(t, D, H, W, &s), 1);
    cr_assert(s.axis == I3_AXIAL && s.index == 1 && s.sum == 12, "%s %lld %g", i3_axis_name(s.axis), (long long)s.index,
              s.sum);
    uint8_t a[4] = {1, 1, 0, 0}, b[4] = {1, 0, 1, 0}, z[4] = {0};
    cr_assert_float_eq(i3_snc_dice(a, b, 4), 0.5, 1e-12);
    cr_assert_float_eq(i3_snc_dice(z, z, 4), 1.0, 1e-12);
    cr_assert_float_eq(i3_snc_dice(a, z, 4), 0.0, 1e-12);
}

/* ---- small networks -------------------------------------------------------------------------------- */

/* 2D: the (ImageNet-normalized) image above 0.5, pushed by the click disks. */
static i3rt_status threshold_forward(void *user, const float *in, int n, int64_t h, int64_t w, float *logits) {
    const int64_t s = h * w;
    for (int k = 0; k < n; k++, in += 6 * s, logits += s)
        for (int64_t i = 0; i < s; i++) {
            const float grey = in[i] * 0.229f + 0.485f;
            logits[i] = 20.0f * (grey - 0.5f) + 12.0f * in[4 * s + i] - 12.0f * in[5 * s + i];
        }
    return I3RT_OK;
}

static i3_snc_net threshold_net(void) {
    i3_snc_net net = {.forward = threshold_forward};
    net.cfg.coord_channels = 3;
    net.cfg.with_prev_mask = 1;
    net.cfg.use_disks = 1;
    net.cfg.norm_radius = 5.0f;
    return net;
}

typedef struct {
    int calls, fail_at;
    int n_annotations[8]; /* per call */
} guided_state;

/* 3D: image > 0.5, confident (0.99) within 2 slices of a finished slice of the same axis, else 0.75. */
static i3rt_status near_slices_predict(void *user, const float *image, const float *previous, int64_t d, int64_t h,
                                       int64_t w, const i3_snc_annotation *ann, int n_ann, float *probs) {
    guided_state *g = user;
    if (g) {
        if (++g->calls == g->fail_at) return I3RT_ERR_BACKEND;
        if (g->calls <= 8) g->n_annotations[g->calls - 1] = n_ann;
    }
    for (int64_t z = 0; z < d; z++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                const int64_t pos[3] = {z, y, x}, i = (z * h + y) * w + x;
                float c = 0.75f;
                for (int k = 0; k < n_ann; k++)
                    if (llabs(pos[ann[k].axis] - ann[k].index) <= 2) c = 0.99f;
                probs[i] = image[i] > 0.5f ? c : 1.0f - c;
            }
    return I3RT_OK;
}

/* A 12 x 20 x 18 volume: an ellipsoid of intensity 200 on about 20, and its truth, the ellipsoid grown to
 * `truth_e` in the ellipsoid's norm (1: the image's object). */
enum { VD = 12, VH = 20, VW = 18 };
static void make_volume(i3_volume *v, uint8_t *truth, double truth_e) {
    memset(v, 0, sizeof *v);
    v->channels = 1, v->d = VD, v->h = VH, v->w = VW;
    v->data = calloc(VD * VH * VW, sizeof(float));
    v->geometry.size[0] = VW, v->geometry.size[1] = VH, v->geometry.size[2] = VD;
    for (int a = 0; a < 3; a++) v->geometry.spacing[a] = 1.0, v->geometry.affine[a][a] = 1.0;
    v->geometry.affine[3][3] = 1.0;
    for (int z = 0; z < VD; z++)
        for (int y = 0; y < VH; y++)
            for (int x = 0; x < VW; x++) {
                const double e = pow((z - 5.5) / 4.5, 2) + pow((y - 9.0) / 7.0, 2) + pow((x - 8.5) / 6.0, 2);
                const int64_t i = (z * VH + y) * VW + x;
                v->data[i] = e <= 1.0 ? 200.0f : 20.0f + (float)((x * 7 + y * 3 + z) % 5);
                if (truth) truth[i] = e <= truth_e;
            }
}

/* A session on make_volume's image with the given parameters (NULL: the defaults without zoom-in, as
 * fake_session) and networks. */
static i3_snc_session *session_with(i3rt_context *ctx, uint8_t *truth, double truth_e, const i3_snc_session_params *p,
                                    i3_snc_net net2d, i3_snc_guided_net net3d) {
    i3_volume v;
    make_volume(&v, truth, truth_e);
    i3_snc_session *s = NULL;
    /* no zoom-in: on these 20-pixel slices RITM's zoom-in would blow the crop up to 400 pixels and shrink
     * the click disks to a quarter pixel of the slice */
    i3_snc_session_params defaults = I3_SNC_SESSION_DEFAULTS;
    defaults.predictor.zoom_in = 0;
    cr_assert_eq(i3_snc_session_open(ctx, &v, p ? p : &defaults, &s), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_volume_free(&v);
    cr_assert_eq(i3_snc_session_set_net2d(s, net2d), I3RT_OK);
    cr_assert_eq(i3_snc_session_set_net3d(s, net3d), I3RT_OK);
    return s;
}

static i3_snc_session *fake_session(i3rt_context *ctx, guided_state *g, uint8_t *truth, double truth_e) {
    return session_with(ctx, truth, truth_e, NULL, threshold_net(),
                        (i3_snc_guided_net){.predict = near_slices_predict, .user = g});
}

/* ---- the loop end to end ---------------------------------------------------------------------------- */

/* A fake session (fake_session's networks) whose slices start from the 3D prediction (start_3d 1) or empty. */
static i3_snc_session *fake_session_start(i3rt_context *ctx, guided_state *g, uint8_t *truth, double truth_e,
                                          int start_3d) {
    i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
    p.predictor.zoom_in = 0, p.start_3d = start_3d;
    return session_with(ctx, truth, truth_e, &p, threshold_net(),
                        (i3_snc_guided_net){.predict = near_slices_predict, .user = g});
}

/* The protocol on the volume with truth grown to truth_e; returns how many slices were accurate after
 * clicks and how many ran out of clicks. */
static void check_protocol(double truth_e, int start_3d, int *accurate, int *out_of_clicks) {
    i3rt_context *ctx = new_ctx();
    *accurate = *out_of_clicks = 0;
    const int64_t n = VD * VH * VW;
    uint8_t *truth = malloc(n);
    guided_state g = {0};
    i3_snc_session *s = fake_session_start(ctx, &g, truth, truth_e, start_3d);
    printf("protocol, truth grown to %g, start %s:\n", truth_e, start_3d ? "3d" : "empty");
    i3_snc_iteration it[4];
    int done = 0;
    cr_assert_eq(i3_snc_simulate(s, truth, &(i3_snc_simulate_params){4, 5, 0.9}, it, &done), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    cr_assert_eq(done, 4);
    i3_slice first;
    cr_assert(i3_snc_first_slice(truth, VD, VH, VW, &first));
    cr_assert(it[0].slice.axis == first.axis && it[0].slice.index == first.index);
    for (int t = 0; t < done; t++) {
        const i3_slice sl = it[t].slice;
        printf("iteration %d: %s %lld, start Dice %.4f, %d clicks, slice Dice %.4f%s, 3D Dice %.6f, %.3f s\n", t + 1,
               i3_axis_name(sl.axis), (long long)sl.index, it[t].start_dice, it[t].clicks, it[t].slice_dice,
               it[t].accurate ? " (accurate)" : "", it[t].dice, it[t].seconds);
        int64_t rows, cols;
        i3_slice_dims(sl.axis, VD, VH, VW, &rows, &cols);
        uint8_t *plane = malloc((size_t)(rows * cols)), *in3d = malloc((size_t)(rows * cols));
        i3_slice_get(truth, 1, VD, VH, VW, sl.axis, sl.index, plane);
        int64_t object = 0;
        for (int64_t i = 0; i < rows * cols; i++) object += plane[i];
        /* the first slice starts empty (nothing propagated yet): Dice 0, or 1 without object */
        if (t == 0) cr_assert_eq(it[t].start_dice, object ? 0.0 : 1.0);
        /* a start with Dice > 0.9 is accepted as it is, else clicks (at most 5) */
        cr_assert(it[t].start_dice > 0.9 ? it[t].clicks == 0 && it[t].slice_dice == it[t].start_dice
                                         : it[t].clicks >= 1 && it[t].clicks <= 5,
                  "iteration %d: start Dice %g, %d clicks", t + 1, it[t].start_dice, it[t].clicks);
        cr_assert_eq(it[t].accurate, it[t].slice_dice > 0.9);
        /* stopped by the rule: either accurate, or 5 clicks */
        cr_assert(it[t].accurate || it[t].clicks == 5, "iteration %d stopped early", t + 1);
        *accurate += it[t].accurate && it[t].clicks > 0;
        *out_of_clicks += !it[t].accurate;
        cr_assert_eq(i3_snc_session_slice_clicks(s, sl.axis, sl.index), it[t].clicks);
        cr_assert_eq(g.n_annotations[t], t + 1, "the 3D step sees every finished slice");
        /* the accepted mask's Dice, recomputed */
        const uint8_t *m = i3_snc_session_slice_mask(s, sl.axis, sl.index, &rows, &cols);
        cr_assert_float_eq(i3_snc_dice(m, plane, rows * cols), it[t].slice_dice, 1e-12);
        /* the 3D mask holds the accepted mask exactly on its slice */
        i3_slice_get(i3_snc_session_mask(s), 1, VD, VH, VW, sl.axis, sl.index, in3d);
        cr_assert_eq(memcmp(in3d, m, (size_t)(rows * cols)), 0, "accepted slice %d not in the 3D mask", t + 1);
        free(plane), free(in3d);
        /* later slices are recommendations: not within skip 1 of an earlier slice of the same axis */
        for (int u = 0; u < t; u++)
            cr_assert(!(it[u].slice.axis == sl.axis && llabs(it[u].slice.index - sl.index) <= 1),
                      "iteration %d annotates a slice next to iteration %d's", t + 1, u + 1);
    }
    cr_assert_float_eq(i3_snc_dice(i3_snc_session_mask(s), truth, n), it[done - 1].dice, 1e-12);
    cr_assert_eq(i3_snc_session_iterations(s), 4);
    for (int k = 0; k < I3_SNC_STAGE_COUNT; k++)
        printf("stage %-12s %.4f s\n", i3_snc_stage_name(k), i3_snc_session_stage_seconds(s, k));
    cr_assert(i3_snc_session_stage_seconds(s, I3_SNC_STAGE_POSTPROCESS) > 0);

    /* determinism: a second session gives the same slices, clicks and masks */
    uint8_t *first_mask = malloc(n);
    memcpy(first_mask, i3_snc_session_mask(s), n);
    guided_state g2 = {0};
    i3_snc_session *s2 = fake_session_start(ctx, &g2, truth, truth_e, start_3d);
    i3_snc_iteration it2[4];
    int done2 = 0;
    cr_assert_eq(i3_snc_simulate(s2, truth, &(i3_snc_simulate_params){4, 5, 0.9}, it2, &done2), I3RT_OK);
    cr_assert_eq(done2, done);
    for (int t = 0; t < done; t++)
        cr_assert(it2[t].slice.axis == it[t].slice.axis && it2[t].slice.index == it[t].slice.index &&
                  it2[t].clicks == it[t].clicks && it2[t].dice == it[t].dice && it2[t].slice_dice == it[t].slice_dice);
    cr_assert_eq(memcmp(first_mask, i3_snc_session_mask(s2), n), 0);
    /* simulating again on an annotated session is refused */
    cr_assert_eq(i3_snc_simulate(s2, truth, NULL, it2, &done2), I3RT_ERR_INVALID_ARGUMENT);
    i3_snc_session_free(s2);
    i3_snc_session_free(s);
    free(first_mask);
    free(truth);
    i3rt_context_free(ctx);
}

Test(snc_session, simulated_loop_follows_the_protocol) {
    int accurate, out_of_clicks;
    for (int start_3d = 0; start_3d <= 1; start_3d++) {
        check_protocol(1.1, start_3d, &accurate, &out_of_clicks); /* the 2D net gets slices right */
        /* from empty starts every slice with object takes clicks; from the 3D prediction later slices that
         * the 3D step got right are accepted without */
        cr_assert(accurate >= (start_3d ? 1 : 2), "%d accurate slices after clicks", accurate);
        check_protocol(1.25, start_3d, &accurate, &out_of_clicks); /* a ring the disks cannot fit: 5 clicks */
        cr_assert(out_of_clicks >= 2, "%d slices ran out of clicks", out_of_clicks);
    }
}

Test(snc_session, clicks_finish_propagate_by_hand) {
    i3rt_context *ctx = new_ctx();
    guided_state g = {0};
    i3_snc_session *s = fake_session(ctx, &g, NULL, 1.0);
    /* a positive click inside the object on axial slice 5: the threshold net's mask is the object's slice */
    cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 5, 9.0, 8.0, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
    int64_t rows, cols;
    const uint8_t *m = i3_snc_session_slice_mask(s, I3_AXIAL, 5, &rows, &cols);
    cr_assert(m && rows == VH && cols == VW);
    const float *image = i3_snc_session_image(s)->data;
    int64_t differ = 0;
    for (int64_t i = 0; i < rows * cols; i++) differ += m[i] != (image[5 * VH * VW + i] > 0.5f);
    cr_expect_leq(differ, 20, "the mask follows the image (plus the click's disk): %lld pixels differ",
                  (long long)differ);
    /* propagation needs a finished slice */
    cr_assert_eq(i3_snc_session_propagate(s), I3RT_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(i3rt_context_error(ctx), "no finished slice"), "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_snc_session_finish(s, I3_AXIAL, 5, 1), I3RT_OK);
    /* a coronal slice accepted without a click: an empty mask (no object there) */
    cr_assert_eq(i3_snc_session_finish(s, I3_CORONAL, 0, 0), I3RT_OK);
    cr_assert_eq(i3_snc_session_propagate(s), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(g.n_annotations[0], 2);
    i3_slice rec;
    int found;
    cr_assert_eq(i3_snc_session_recommendation(s, &rec, &found), I3RT_OK);
    cr_assert(found);
    cr_assert(!(rec.axis == I3_AXIAL && llabs(rec.index - 5) <= 1) && !(rec.axis == I3_CORONAL && rec.index <= 1),
              "recommended %s %lld next to an annotated slice", i3_axis_name(rec.axis), (long long)rec.index);
    /* the least confident slice: voxels far from the annotated slices are at 0.75; the axial slices
     * away from z = 5 have the most of them, 20 x 18 less the 3 x 18 near the coronal slice 0; lowest index */
    cr_assert(rec.axis == I3_AXIAL && rec.index == 0 && rec.sum == (VH - 3) * VW, "%s %lld (%g)",
              i3_axis_name(rec.axis), (long long)rec.index, rec.sum);
    /* a click on a finished slice reopens it; the next propagation leaves it out until it is finished */
    cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 5, 2.0, 2.0, 0), I3RT_OK);
    cr_assert_eq(i3_snc_session_finished(s), 1);
    cr_assert_eq(i3_snc_session_propagate(s), I3RT_OK);
    cr_assert_eq(g.n_annotations[1], 1);
    i3_snc_session_free(s);
    i3rt_context_free(ctx);
}

/* ---- the start of a slice: the 3D prediction's slice (Algorithm 1's M_{t,0}^2D) or empty ---------------- */

/* The threshold network that also keeps the previous-mask plane of its last input. */
typedef struct {
    int calls;
    float prev[VD * VH * VW]; /* room for any plane of the test volume */
} recording_state;

static i3rt_status recording_forward(void *user, const float *in, int n, int64_t h, int64_t w, float *logits) {
    recording_state *r = user;
    r->calls++;
    memcpy(r->prev, in + 3 * h * w, (size_t)(h * w) * sizeof *in); /* the first input's */
    return threshold_forward(NULL, in, n, h, w, logits);
}

/* Counts the pixels of plane [n] that differ from want (NULL: zeros). */
static int64_t plane_differs(const float *plane, const float *want, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += plane[i] != (want ? want[i] : 0.0f);
    return k;
}

/* After a propagation a slice's predictor starts from the 3D probabilities' slice: it is the first click's
 * previous mask bit for bit (no zoom, no flip: the network sees the slice), and thresholded at 0.49 the
 * slice's mask before any click and the mask of a slice finished without clicks. Before any propagation,
 * and with start_3d 0 always, the start is empty. */
Test(snc_session, start_from_the_3d_prediction) {
    i3rt_context *ctx = new_ctx();
    for (int start_3d = 1; start_3d >= 0; start_3d--) {
        recording_state *rec = calloc(1, sizeof *rec);
        i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
        p.predictor.zoom_in = 0, p.predictor.with_flip = 0, p.start_3d = start_3d;
        i3_snc_net net2d = threshold_net();
        net2d.forward = recording_forward, net2d.user = rec;
        const i3_snc_guided_net net3d = {.predict = near_slices_predict};
        i3_snc_session *s = session_with(ctx, NULL, 1.0, &p, net2d, net3d);
        /* before any propagation: the empty start */
        cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 5, 9.0, 8.0, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(plane_differs(rec->prev, NULL, VH * VW), 0, "the first slice starts empty");
        cr_assert_eq(i3_snc_session_finish(s, I3_AXIAL, 5, 1), I3RT_OK);
        cr_assert_eq(i3_snc_session_propagate(s), I3RT_OK, "%s", i3rt_context_error(ctx));

        /* coronal 9: begun, its mask is the start thresholded; no network run for that */
        float start[VD * VW];
        i3_slice_get(i3_snc_session_probs(s), sizeof(float), VD, VH, VW, I3_CORONAL, 9, start);
        const int calls = rec->calls;
        cr_assert_eq(i3_snc_session_begin_slice(s, I3_CORONAL, 9), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(rec->calls, calls);
        int64_t rows, cols, wrong = 0, fg = 0;
        const uint8_t *m = i3_snc_session_slice_mask(s, I3_CORONAL, 9, &rows, &cols);
        cr_assert(m && rows == VD && cols == VW);
        for (int64_t i = 0; i < VD * VW; i++) wrong += m[i] != (start_3d && start[i] > 0.49f), fg += m[i];
        cr_assert_eq(wrong, 0, "start_3d %d: %lld pixels of the begun slice's mask are not its start", start_3d,
                     (long long)wrong);
        cr_assert_eq(i3_snc_session_slice_clicks(s, I3_CORONAL, 9), 0);
        /* the first click's previous mask is the start, the second's the first prediction (RITM's loop) */
        cr_assert_eq(i3_snc_session_click(s, I3_CORONAL, 9, 6.0, 3.0, 0), I3RT_OK, "%s", i3rt_context_error(ctx));
        const int64_t differ = plane_differs(rec->prev, start_3d ? start : NULL, VD * VW);
        cr_assert_eq(differ, 0, "start_3d %d: the first click's previous mask differs from the start at %lld pixels",
                     start_3d, (long long)differ);
        cr_assert_eq(i3_snc_session_click(s, I3_CORONAL, 9, 5.0, 8.0, 1), I3RT_OK);
        cr_assert_gt(plane_differs(rec->prev, start_3d ? start : NULL, VD * VW), 0, "the second click sees the start");
        /* sagittal 4 finished without a click: its start thresholded, or empty */
        float sagittal[VD * VH];
        i3_slice_get(i3_snc_session_probs(s), sizeof(float), VD, VH, VW, I3_SAGITTAL, 4, sagittal);
        cr_assert_eq(i3_snc_session_finish(s, I3_SAGITTAL, 4, 0), I3RT_OK);
        m = i3_snc_session_slice_mask(s, I3_SAGITTAL, 4, &rows, &cols);
        wrong = 0;
        for (int64_t i = 0; i < VD * VH; i++) wrong += m[i] != (start_3d && sagittal[i] > 0.49f);
        cr_assert_eq(wrong, 0, "start_3d %d: sagittal 4 finished without clicks differs from its start at %lld pixels",
                     start_3d, (long long)wrong);
        printf("start_3d %d: coronal 9 begun with %lld foreground pixels (3D slice > 0.49), first click's previous "
               "mask = the start\n", start_3d, (long long)fg);
        cr_assert(start_3d ? fg > 0 : fg == 0);
        i3_snc_session_free(s);
        free(rec);
    }
    i3rt_context_free(ctx);
}

/* 3D: image > 0.5, confident (0.99) everywhere but on coronal slice 9 (0.6), which is therefore recommended
 * after the first slice. */
static i3rt_status unsure_coronal_predict(void *user, const float *image, const float *previous, int64_t d, int64_t h,
                                          int64_t w, const i3_snc_annotation *ann, int n_ann, float *probs) {
    for (int64_t z = 0; z < d; z++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                const int64_t i = (z * h + y) * w + x;
                const float c = y == 9 ? 0.6f : 0.99f;
                probs[i] = image[i] > 0.5f ? c : 1.0f - c;
            }
    return I3RT_OK;
}

/* The simulated user from the 3D prediction: the recommended coronal slice 9 starts as the 3D mask's slice,
 * which matches the truth (Dice > 0.9), and is accepted with 0 clicks; its start Dice is the Dice of the
 * first propagation's probabilities > 0.49 there (computed from a session stopped after one slice). With
 * --start empty the same slice starts empty (Dice 0) and takes clicks. */
Test(snc_session, simulated_user_accepts_a_good_start) {
    i3rt_context *ctx = new_ctx();
    uint8_t *truth = malloc(VD * VH * VW);
    const i3_snc_guided_net net3d = {.predict = unsure_coronal_predict};
    i3_snc_session *one = session_with(ctx, truth, 1.0, NULL, threshold_net(), net3d);
    i3_snc_iteration it[2];
    int done;
    cr_assert_eq(i3_snc_simulate(one, truth, &(i3_snc_simulate_params){1, 5, 0.9}, it, &done), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    i3_slice rec;
    int found;
    cr_assert_eq(i3_snc_session_recommendation(one, &rec, &found), I3RT_OK);
    cr_assert(found && rec.axis == I3_CORONAL && rec.index == 9, "recommended %s %lld", i3_axis_name(rec.axis),
              (long long)rec.index);
    float probs[VD * VW];
    uint8_t start[VD * VW], plane[VD * VW], empty[VD * VW] = {0};
    i3_slice_get(i3_snc_session_probs(one), sizeof(float), VD, VH, VW, I3_CORONAL, 9, probs);
    i3_slice_get(truth, 1, VD, VH, VW, I3_CORONAL, 9, plane);
    for (int i = 0; i < VD * VW; i++) start[i] = probs[i] > 0.49f;
    const double start_dice = i3_snc_dice(start, plane, VD * VW);
    i3_snc_session_free(one);

    for (int start_3d = 1; start_3d >= 0; start_3d--) {
        i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
        p.predictor.zoom_in = 0, p.start_3d = start_3d;
        i3_snc_session *s = session_with(ctx, truth, 1.0, &p, threshold_net(), net3d);
        cr_assert_eq(i3_snc_simulate(s, truth, &(i3_snc_simulate_params){2, 5, 0.9}, it, &done), I3RT_OK, "%s",
                     i3rt_context_error(ctx));
        cr_assert_eq(done, 2);
        cr_assert(it[1].slice.axis == I3_CORONAL && it[1].slice.index == 9);
        printf("start %s: coronal 9 start Dice %.4f, %d clicks, slice Dice %.4f, 3D Dice %.4f\n",
               start_3d ? "3d" : "empty", it[1].start_dice, it[1].clicks, it[1].slice_dice, it[1].dice);
        int64_t rows, cols;
        const uint8_t *m = i3_snc_session_slice_mask(s, I3_CORONAL, 9, &rows, &cols);
        if (start_3d) {
            cr_assert(start_dice > 0.9, "the 3D prediction's slice should match the truth (Dice %g)", start_dice);
            cr_assert_eq(it[1].start_dice, start_dice);
            cr_assert_eq(it[1].clicks, 0, "a start with Dice %g > 0.9 takes no click", start_dice);
            cr_assert(it[1].accurate && it[1].slice_dice == start_dice);
            cr_assert_eq(memcmp(m, start, sizeof start), 0, "the accepted mask is the start");
        } else {
            cr_assert_eq(it[1].start_dice, i3_snc_dice(empty, plane, VD * VW));
            cr_assert_eq(it[1].start_dice, 0.0);
            cr_assert_geq(it[1].clicks, 1);
        }
        i3_snc_session_free(s);
    }
    free(truth);
    i3rt_context_free(ctx);
}

/* ---- bad input ------------------------------------------------------------------------------------------ */

static void expect_error(i3rt_context *ctx, i3rt_status got, i3rt_status want, const char *needle) {
    cr_assert_eq(got, want, "status %s, wanted %s (%s)", i3rt_status_name(got), i3rt_status_name(want),
                 i3rt_context_error(ctx));
    cr_assert(strstr(i3rt_context_error(ctx), needle), "message '%s' lacks '%s'", i3rt_context_error(ctx), needle);
}

Test(snc_session, bad_input_leaves_the_session_working) {
    i3rt_context *ctx = new_ctx();
    i3_volume v;
    make_volume(&v, NULL, 1.0);
    i3_snc_session *s = NULL;
    cr_assert_eq(i3_snc_session_open(ctx, &v, NULL, &s), I3RT_OK);
    /* no network yet */
    expect_error(ctx, i3_snc_session_click(s, I3_AXIAL, 5, 9, 8, 1), I3RT_ERR_INVALID_ARGUMENT, "no 2D network");
    cr_assert_eq(i3_snc_session_finish(s, I3_AXIAL, 4, 1), I3RT_OK);
    expect_error(ctx, i3_snc_session_propagate(s), I3RT_ERR_INVALID_ARGUMENT, "no 3D network");
    i3_snc_session_free(s);
    guided_state g = {.fail_at = 2};
    s = fake_session(ctx, &g, NULL, 1.0);
    cr_assert_eq(i3_snc_session_click(s, I3_SAGITTAL, 8, 5.0, 9.0, 1), I3RT_OK);
    int64_t rows, cols;
    uint8_t before[VD * VH];
    memcpy(before, i3_snc_session_slice_mask(s, I3_SAGITTAL, 8, &rows, &cols), sizeof before);
    cr_assert(rows == VD && cols == VH);
    expect_error(ctx, i3_snc_session_click(s, I3_SAGITTAL, 8, 12.0, 3.0, 1), I3RT_ERR_INVALID_ARGUMENT,
                 "outside sagittal slice 8 (12 rows x 20 columns)");
    expect_error(ctx, i3_snc_session_click(s, I3_SAGITTAL, 8, 3.0, -0.5, 1), I3RT_ERR_INVALID_ARGUMENT, "outside");
    expect_error(ctx, i3_snc_session_click(s, I3_SAGITTAL, 8, NAN, 3.0, 1), I3RT_ERR_INVALID_ARGUMENT, "outside");
    expect_error(ctx, i3_snc_session_click(s, (i3_axis)3, 8, 3.0, 3.0, 1), I3RT_ERR_INVALID_ARGUMENT,
                 "axis 3 is not axial");
    expect_error(ctx, i3_snc_session_click(s, I3_SAGITTAL, 18, 3.0, 3.0, 1), I3RT_ERR_INVALID_ARGUMENT,
                 "sagittal slice 18 is outside the volume (0 .. 17)");
    expect_error(ctx, i3_snc_session_finish(s, I3_CORONAL, -1, 1), I3RT_ERR_INVALID_ARGUMENT, "coronal slice -1");
    cr_assert_null(i3_snc_session_slice_mask(s, I3_AXIAL, 3, &rows, &cols));
    cr_assert_eq(i3_snc_session_slice_clicks(s, I3_SAGITTAL, 8), 1);
    cr_assert_eq(memcmp(before, i3_snc_session_slice_mask(s, I3_SAGITTAL, 8, &rows, &cols), sizeof before), 0);
    /* a failing 3D network (its second call) keeps the previous prediction */
    cr_assert_eq(i3_snc_session_finish(s, I3_SAGITTAL, 8, 1), I3RT_OK);
    cr_assert_eq(i3_snc_session_propagate(s), I3RT_OK);
    uint8_t *mask = malloc(VD * VH * VW);
    memcpy(mask, i3_snc_session_mask(s), VD * VH * VW);
    cr_assert_eq(i3_snc_session_propagate(s), I3RT_ERR_BACKEND);
    cr_assert_eq(memcmp(mask, i3_snc_session_mask(s), VD * VH * VW), 0);
    cr_assert_eq(i3_snc_session_iterations(s), 1);
    /* and the session goes on */
    cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 2, 9.0, 8.0, 1), I3RT_OK);
    cr_assert_eq(i3_snc_session_finish(s, I3_AXIAL, 2, 1), I3RT_OK);
    cr_assert_eq(i3_snc_session_propagate(s), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_snc_session_iterations(s), 2);
    free(mask);
    i3_snc_session_free(s);

    /* empty and too thin volumes, bad parameters */
    for (int64_t i = 0; i < VD * VH * VW; i++) v.data[i] = 7.0f;
    expect_error(ctx, i3_snc_session_open(ctx, &v, NULL, &s), I3RT_ERR_INVALID_ARGUMENT, "the image is empty");
    i3_volume thin = v;
    thin.d = 1;
    expect_error(ctx, i3_snc_session_open(ctx, &thin, NULL, &s), I3RT_ERR_INVALID_ARGUMENT, "every side must be >= 2");
    i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
    p.gamma = 1.5;
    v.data[0] = 1.0f;
    expect_error(ctx, i3_snc_session_open(ctx, &v, &p, &s), I3RT_ERR_INVALID_ARGUMENT, "gamma 1.5");
    cr_assert_null(s);
    i3_volume_free(&v);
    i3rt_context_free(ctx);
}

/* ---- files ------------------------------------------------------------------------------------------------ */

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

Test(snc_session, saving_is_whole_or_nothing) {
    i3rt_context *ctx = new_ctx();
    guided_state g = {0};
    uint8_t *truth = malloc(VD * VH * VW);
    i3_snc_session *s = fake_session(ctx, &g, truth, 1.25);
    i3_snc_iteration it[2];
    int done;
    cr_assert_eq(i3_snc_simulate(s, truth, &(i3_snc_simulate_params){2, 5, 0.9}, it, &done), I3RT_OK);
    char dir[256];
    fx_temp_dir(dir, sizeof dir, "snc_session");
    const char *path = fx_path(dir, "mask.nii.gz");
    cr_assert_eq(i3_snc_session_save_mask(s, path), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_volume back;
    cr_assert_eq(i3_volume_read(ctx, path, &back), I3RT_OK);
    cr_assert(back.d == VD && back.h == VH && back.w == VW);
    int64_t differ = 0;
    for (int64_t i = 0; i < VD * VH * VW; i++) differ += back.data[i] != (float)i3_snc_session_mask(s)[i];
    cr_assert_eq(differ, 0);
    i3_volume_free(&back);
    const char *png = fx_path(dir, "preview.png");
    cr_assert_eq(i3_snc_session_save_preview(s, it[0].slice.axis, it[0].slice.index, png), I3RT_OK);
    struct stat sb;
    cr_assert_eq(stat(png, &sb), 0);
    cr_assert_eq(count_entries(dir), 2, "only the two files, no temporary left");
    /* into a missing folder: an error naming it, no file */
    const char *bad = fx_path(dir, "missing/mask.nii.gz");
    cr_assert_neq(i3_snc_session_save_mask(s, bad), I3RT_OK);
    cr_assert(strstr(i3rt_context_error(ctx), "missing"), "%s", i3rt_context_error(ctx));
    cr_assert_neq(i3_snc_session_save_preview(s, I3_AXIAL, 0, fx_path(dir, "missing/p.png")), I3RT_OK);
    cr_assert_eq(count_entries(dir), 2);
    cr_assert(i3_snc_session_stage_seconds(s, I3_SNC_STAGE_EXPORT) > 0);
    fx_remove_dir(dir);
    i3_snc_session_free(s);
    free(truth);
    i3rt_context_free(ctx);
}

/* ---- the public API with RITM's HRNet-18 -------------------------------------------------------------- */

static const char *fixture(const char *name) {
    const char *root = getenv("I3RT_FIXTURES");
    cr_assert(root, "I3RT_FIXTURES is not set (run through ctest)");
    static char path[1024];
    snprintf(path, sizeof path, "%s/snc_session/%s", root, name);
    return path;
}

Test(snc_session, public_api_with_hrnet) {
    i3rt_context *ctx = new_ctx();
    char dir[256];
    fx_temp_dir(dir, sizeof dir, "snc_api");
    i3_volume v;
    make_volume(&v, NULL, 1.0);
    const char *image = fx_path(dir, "image.nii.gz");
    cr_assert_eq(i3_volume_write_f32(ctx, image, &v.geometry, 1, v.data), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_volume_free(&v);

    i3rt_snc_session *s = NULL;
    expect_error(ctx, i3rt_snc_open(ctx, fx_path(dir, "nothing.nii.gz"), NULL, &s), I3RT_ERR_IO, "nothing.nii.gz");
    i3rt_snc_params params;
    i3rt_snc_params_default(&params);
    cr_assert(params.tau == 0.9 && params.skip == 1 && params.gamma == 0.25 && params.postprocess && params.zoom_in &&
              params.with_flip);
    /* one forward per click on the slice itself (zoom-in would resize the crop to 400 pixels) */
    params.with_flip = 0, params.zoom_in = 0;
    cr_assert_eq(i3rt_snc_open(ctx, image, &params, &s), I3RT_OK, "%s", i3rt_context_error(ctx));
    int64_t shape[3];
    cr_assert_eq(i3rt_snc_get_shape(s, shape), I3RT_OK);
    cr_assert(shape[0] == VD && shape[1] == VH && shape[2] == VW);
    expect_error(ctx, i3rt_snc_load_2d(s, fx_path(dir, "none.safetensors")), I3RT_ERR_IO, "none.safetensors");
    cr_assert_eq(i3rt_snc_load_2d(s, fixture("hrnet2d.safetensors")), I3RT_OK, "%s", i3rt_context_error(ctx));

    uint8_t mask[VH * VW], again[VH * VW];
    expect_error(ctx, i3rt_snc_click(s, I3RT_AXIAL, 5, 9.0, 8.0, 1, mask, 10), I3RT_ERR_INVALID_ARGUMENT,
                 "the mask buffer 10");
    cr_assert_eq(i3rt_snc_click(s, I3RT_AXIAL, 5, 9.0, 8.0, 1, mask, VH * VW), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3rt_snc_click(s, I3RT_AXIAL, 5, 3.0, 2.0, 0, mask, VH * VW), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3rt_snc_get_slice_mask(s, I3RT_AXIAL, 5, again, VH * VW), I3RT_OK);
    cr_assert_eq(memcmp(mask, again, sizeof mask), 0);
    int fg = 0;
    for (int i = 0; i < VH * VW; i++) fg += mask[i];
    printf("HRNet-18 (random weights) after 2 clicks: %d of %d pixels foreground\n", fg, VH * VW);
    cr_assert_eq(i3rt_snc_finish_slice(s, I3RT_AXIAL, 5, 1), I3RT_OK);
    cr_assert_eq(i3rt_snc_save_preview(s, I3RT_AXIAL, 5, fx_path(dir, "axial_5.png")), I3RT_OK);
    i3rt_slice rec;
    int found;
    expect_error(ctx, i3rt_snc_propagate(s), I3RT_ERR_INVALID_ARGUMENT, "no 3D network loaded");
    expect_error(ctx, i3rt_snc_recommend(s, &rec, &found), I3RT_ERR_INVALID_ARGUMENT, "nothing propagated yet");
    expect_error(ctx, i3rt_snc_load_3d(s, fixture("hrnet2d.safetensors")), I3RT_ERR_UNSUPPORTED, "snc_guided");
    /* the guided 3D network, transferred from the 2D weights (gen_snc_session.py) */
    cr_assert_eq(i3rt_snc_load_3d(s, fixture("guided3d.safetensors")), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3rt_snc_propagate(s), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3rt_snc_recommend(s, &rec, &found), I3RT_OK);
    uint8_t vol[VD * VH * VW];
    cr_assert_eq(i3rt_snc_get_mask(s, vol, VD * VH * VW), I3RT_OK);
    expect_error(ctx, i3rt_snc_get_mask(s, vol, 5), I3RT_ERR_INVALID_ARGUMENT, "12 x 20 x 18");
    /* the accepted slice is in the 3D mask */
    uint8_t in3d[VH * VW];
    i3_slice_get(vol, 1, VD, VH, VW, I3_AXIAL, 5, in3d);
    cr_assert_eq(memcmp(in3d, mask, sizeof mask), 0);
    int64_t fg3d = 0;
    for (int i = 0; i < VD * VH * VW; i++) fg3d += vol[i];
    printf("guided 3D (transferred random weights): %lld of %d voxels; next slice %s %lld (%d)\n", (long long)fg3d,
           VD * VH * VW, found ? i3_axis_name((i3_axis)rec.axis) : "-", found ? (long long)rec.index : -1LL, found);
    cr_assert(!found || !(rec.axis == I3RT_AXIAL && llabs(rec.index - 5) <= 1));
    /* a slice begun without a click shows its start: the 3D prediction's slice (> 0.49 instead of > 0.5);
     * the coronal slice with the most 3D foreground, so that an empty start would fail */
    uint8_t start[VD * VW], start_again[VD * VW], in3d_coronal[VD * VW];
    int64_t best = 0;
    int best_fg = -1;
    for (int64_t c = 0; c < VH; c++) {
        i3_slice_get(vol, 1, VD, VH, VW, I3_CORONAL, c, in3d_coronal);
        int fg = 0;
        for (int i = 0; i < VD * VW; i++) fg += in3d_coronal[i];
        if (fg > best_fg && !(found && rec.axis == I3RT_CORONAL && rec.index == c)) best = c, best_fg = fg;
    }
    expect_error(ctx, i3rt_snc_begin_slice(s, I3RT_CORONAL, best, start, VH * VW), I3RT_ERR_INVALID_ARGUMENT,
                 "the mask buffer");
    expect_error(ctx, i3rt_snc_begin_slice(s, I3RT_CORONAL, VH, start, VD * VW), I3RT_ERR_INVALID_ARGUMENT, "coronal");
    cr_assert_eq(i3rt_snc_begin_slice(s, I3RT_CORONAL, best, start, VD * VW), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_slice_get(vol, 1, VD, VH, VW, I3_CORONAL, best, in3d_coronal);
    int differ = 0, fg_start = 0;
    for (int i = 0; i < VD * VW; i++) differ += start[i] != in3d_coronal[i], fg_start += start[i];
    printf("begun coronal slice %lld: %d foreground pixels (3D mask %d), %d differ\n", (long long)best, fg_start,
           best_fg, differ);
    cr_expect(best_fg > 0, "the 3D mask has no coronal foreground: the start check means nothing");
    cr_expect(differ <= VD * VW / 100, "the begun slice's start differs from the 3D mask at %d pixels", differ);
    cr_assert_eq(i3rt_snc_get_slice_mask(s, I3RT_CORONAL, best, start_again, VD * VW), I3RT_OK);
    cr_expect_eq(memcmp(start, start_again, sizeof start), 0);
    cr_assert_eq(i3rt_snc_save_mask(s, fx_path(dir, "mask.nii.gz")), I3RT_OK);
    cr_assert(i3rt_snc_stage_seconds(s, I3RT_SNC_STAGE_GUIDED) > 0);
    printf("stage times:");
    for (int k = 0; k < I3RT_SNC_STAGE_COUNT; k++)
        printf(" %s %.3f s", i3rt_snc_stage_name(k), i3rt_snc_stage_seconds(s, k));
    printf("\n");
    cr_assert(i3rt_snc_stage_seconds(s, I3RT_SNC_STAGE_CLICK) > 0);
    i3rt_snc_free(s);

    /* the simulated user through the public API */
    uint8_t *truth = malloc(VD * VH * VW);
    make_volume(&v, truth, 1.1);
    i3_volume_free(&v);
    cr_assert_eq(i3rt_snc_open(ctx, image, &params, &s), I3RT_OK);
    cr_assert_eq(i3rt_snc_load_2d(s, fixture("hrnet2d.safetensors")), I3RT_OK);
    cr_assert_eq(i3rt_snc_load_3d(s, fixture("guided3d.safetensors")), I3RT_OK);
    i3rt_snc_iteration results[2];
    int done = -1;
    expect_error(ctx, i3rt_snc_simulate(s, truth, 7, 2, results, &done), I3RT_ERR_INVALID_ARGUMENT, "got 7 voxels");
    cr_assert_eq(i3rt_snc_simulate(s, truth, VD * VH * VW, 2, results, &done), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert(done >= 1 && done <= 2);
    cr_assert(results[0].axis == I3RT_AXIAL && results[0].index == 5 && results[0].clicks >= 1 &&
              results[0].clicks <= 5 && results[0].accurate == (results[0].slice_dice > 0.9));
    cr_assert_eq(i3rt_snc_get_mask(s, vol, VD * VH * VW), I3RT_OK);
    cr_assert_float_eq(i3_snc_dice(vol, truth, VD * VH * VW), results[done - 1].dice, 1e-12);
    i3rt_snc_free(s);
    free(truth);
    fx_remove_dir(dir);
    i3rt_context_free(ctx);
}

/* The session's 3D step is snc_guided.h's network on the finished slices: slice clicks become voxels
 * (coronal (y, x) on slice i -> (y, i, x); sagittal -> (y, x, i)) and the accepted masks go in as they are.
 * Checked against i3_snc_guided_predict called directly, off the annotated slices (the session pastes the
 * accepted masks there), with the post-processing off. */
Test(snc_session, guided_step_gets_voxel_clicks_and_masks) {
    i3rt_context *ctx = new_ctx();
    i3_volume v;
    make_volume(&v, NULL, 1.0);
    i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
    p.predictor.zoom_in = 0, p.predictor.with_flip = 0, p.postprocess = 0;
    i3_snc_session *s = NULL;
    cr_assert_eq(i3_snc_session_open(ctx, &v, &p, &s), I3RT_OK);
    i3_volume_free(&v);
    cr_assert_eq(i3_snc_session_load_net2d(s, fixture("hrnet2d.safetensors")), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_snc_session_load_net3d(s, fixture("guided3d.safetensors")), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_snc_session_click(s, I3_CORONAL, 9, 3.0, 5.0, 1), I3RT_OK);
    cr_assert_eq(i3_snc_session_click(s, I3_SAGITTAL, 4, 6.0, 10.0, 0), I3RT_OK);
    cr_assert_eq(i3_snc_session_finish(s, I3_CORONAL, 9, 1), I3RT_OK);
    cr_assert_eq(i3_snc_session_finish(s, I3_SAGITTAL, 4, 0), I3RT_OK);
    cr_assert_eq(i3_snc_session_propagate(s), I3RT_OK, "%s", i3rt_context_error(ctx));
    int64_t rows, cols;
    const uint8_t *mc = i3_snc_session_slice_mask(s, I3_CORONAL, 9, &rows, &cols);
    const uint8_t *ms = i3_snc_session_slice_mask(s, I3_SAGITTAL, 4, &rows, &cols);
    const i3_snc_mask2d masks[2] = {{I3_CORONAL, 9, mc}, {I3_SAGITTAL, 4, ms}};

    i3_snc_guided *net;
    cr_assert_eq(i3_snc_guided_load(ctx, fixture("guided3d.safetensors"), &net), I3RT_OK);
    const int64_t n = VD * VH * VW;
    float *ref = malloc(n * sizeof *ref), *swapped = malloc(n * sizeof *swapped);
    const float *image = i3_snc_session_image(s)->data;
    const i3_hrnet_click clicks[2] = {{3.0f, 9.0f, 5.0f, 1}, {6.0f, 10.0f, 4.0f, 0}};
    cr_assert_eq(i3_snc_guided_predict(net, VD, VH, VW, image, NULL, clicks, 2, masks, 2, ref), I3RT_OK);
    const i3_hrnet_click wrong[2] = {{9.0f, 3.0f, 5.0f, 1}, {6.0f, 4.0f, 10.0f, 0}}; /* rows and index mixed up */
    cr_assert_eq(i3_snc_guided_predict(net, VD, VH, VW, image, NULL, wrong, 2, masks, 2, swapped), I3RT_OK);
    const float *got = i3_snc_session_probs(s);
    double max_diff = 0, max_wrong = 0;
    int64_t compared = 0;
    for (int64_t z = 0; z < VD; z++)
        for (int64_t y = 0; y < VH; y++)
            for (int64_t x = 0; x < VW; x++) {
                if (y == 9 || x == 4) continue; /* the annotated slices hold the accepted masks */
                const int64_t i = (z * VH + y) * VW + x;
                max_diff = fmax(max_diff, fabs((double)got[i] - ref[i]));
                max_wrong = fmax(max_wrong, fabs((double)swapped[i] - ref[i]));
                compared++;
            }
    printf("guided step: session vs direct max |diff| %g over %lld voxels; with misplaced clicks %g\n", max_diff,
           (long long)compared, max_wrong);
    cr_assert_eq(max_diff, 0.0, "the session's 3D step differs from snc_guided's by %g", max_diff);
    cr_assert_gt(max_wrong, 0.0, "misplaced clicks change nothing: the check could not fail");
    free(ref), free(swapped);
    i3_snc_guided_free(net);
    i3_snc_session_free(s);
    i3rt_context_free(ctx);
}

/* With RITM's HRNet-18s as the 2D network: the session's first click on a slice after a propagation gives
 * the mask of a predictor started from the 3D probabilities' slice (the predictor itself is checked against
 * PyTorch from a start in test_snc_predictor.c), not that of one started empty. The 3D step is the test's
 * near_slices_predict, whose prediction holds the object (the random-weight guided network's is nearly
 * empty away from the annotated slice, a start too weak to tell the two apart). */
Test(snc_session, hrnet_click_starts_from_the_3d_prediction) {
    i3rt_context *ctx = new_ctx();
    i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
    p.predictor.zoom_in = 0, p.predictor.with_flip = 0;
    i3_snc_net hrnet;
    cr_assert_eq(i3_snc_net_load(ctx, fixture("hrnet2d.safetensors"), &hrnet), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_snc_session *s = session_with(ctx, NULL, 1.0, &p, hrnet, (i3_snc_guided_net){.predict = near_slices_predict});
    cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 5, 9.0, 8.0, 1), I3RT_OK);
    cr_assert_eq(i3_snc_session_finish(s, I3_AXIAL, 5, 1), I3RT_OK);
    cr_assert_eq(i3_snc_session_propagate(s), I3RT_OK, "%s", i3rt_context_error(ctx));
    enum { N = VH * VW };
    float image[3 * N], start[N];
    i3_slice_get(i3_snc_session_image(s)->data, sizeof(float), VD, VH, VW, I3_AXIAL, 7, image);
    memcpy(image + N, image, sizeof(float) * N), memcpy(image + 2 * N, image, sizeof(float) * N);
    i3_slice_get(i3_snc_session_probs(s), sizeof(float), VD, VH, VW, I3_AXIAL, 7, start);
    cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 7, 5.0, 8.0, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
    int64_t rows, cols;
    const uint8_t *got = i3_snc_session_slice_mask(s, I3_AXIAL, 7, &rows, &cols);
    i3_snc_net net;
    cr_assert_eq(i3_snc_net_load(ctx, fixture("hrnet2d.safetensors"), &net), I3RT_OK);
    int64_t differ[2] = {0, 0}, fg = 0;
    for (int from_3d = 1; from_3d >= 0; from_3d--) {
        i3_snc_predictor *alone;
        cr_assert_eq(i3_snc_predictor_create(ctx, &net, image, VH, VW, &p.predictor, &alone), I3RT_OK);
        cr_assert_eq(i3_snc_predictor_set_start(alone, from_3d ? start : NULL), I3RT_OK);
        cr_assert_eq(i3_snc_predictor_click(alone, 5.0f, 8.0f, 1), I3RT_OK);
        for (int i = 0; i < N; i++)
            differ[from_3d] += got[i] != i3_snc_predictor_mask(alone)[i], fg += from_3d && got[i];
        i3_snc_predictor_free(alone);
    }
    printf("HRNet-18s click on axial 7 after a propagation: %lld foreground pixels; a predictor from the 3D "
           "slice differs at %lld, one from an empty start at %lld pixels\n", (long long)fg, (long long)differ[1],
           (long long)differ[0]);
    cr_assert_eq(differ[1], 0, "the session's click is not the predictor's from the 3D slice");
    cr_assert_gt(differ[0], 0, "the start changes nothing here: the check could not fail");
    i3_snc_net_free(&net);
    i3_snc_session_free(s);
    i3rt_context_free(ctx);
}

/* The 2D network of a session on the emulated device: its click buffers come from the backend (pinned host
 * memory on a GPU; the emulator's allocator here, so that ASan checks they are freed through it), reserved
 * when the network is set; clicks with zoom-in (crops of changing sizes, some seen before) and the flip on two
 * slices give the CPU session's masks. */
Test(snc_session, hrnet_clicks_on_the_emulated_device) {
    i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
    p.predictor.target_size = 24, p.predictor.min_crop_size = 8; /* crops of these 20-pixel slices, kept small */
    static const struct { int64_t slice; double y, x; int positive; } clicks[] = {
        {5, 9.0, 8.0, 1}, {5, 3.0, 2.0, 0}, {5, 12.0, 12.0, 1}, {6, 9.0, 8.0, 1}, {6, 3.0, 2.0, 0}, {6, 12.0, 12.0, 1}};
    enum { N = sizeof clicks / sizeof *clicks };
    uint8_t masks[2][N][VH * VW];
    for (int device = 0; device < 2; device++) {
        i3rt_context *ctx = NULL;
        cr_assert_eq(i3rt_context_create(&ctx, 1, device ? I3RT_BACKEND_EMULATED : I3RT_BACKEND_CPU), I3RT_OK);
        i3_snc_net hrnet;
        cr_assert_eq(i3_snc_net_load(ctx, fixture("hrnet2d.safetensors"), &hrnet), I3RT_OK, "%s",
                     i3rt_context_error(ctx));
        i3_snc_session *s = session_with(ctx, NULL, 1.0, &p, hrnet, (i3_snc_guided_net){.predict = near_slices_predict});
        for (int k = 0; k < N; k++) {
            cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, clicks[k].slice, clicks[k].y, clicks[k].x, clicks[k].positive),
                         I3RT_OK, "%s", i3rt_context_error(ctx));
            int64_t rows, cols;
            memcpy(masks[device][k], i3_snc_session_slice_mask(s, I3_AXIAL, clicks[k].slice, &rows, &cols), VH * VW);
        }
        i3_snc_session_free(s);
        i3rt_context_free(ctx);
    }
    for (int k = 0; k < N; k++) {
        int differ = 0, fg = 0;
        for (int i = 0; i < VH * VW; i++) differ += masks[0][k][i] != masks[1][k][i], fg += masks[0][k][i];
        printf("emulated device, axial %lld click %d: %d foreground pixels, %d differ from the CPU's\n",
               (long long)clicks[k].slice, k % 3 + 1, fg, differ);
        cr_expect_eq(differ, 0);
    }
}

/* The CUDA backend's captures and replays so far (through the model: any size it keeps). */
static i3_cuda_stats model_graph_stats(i3rt_model *model, int64_t rows, int64_t cols) {
    i3_backend *b;
    float *in;
    const float *out;
    cr_assert_eq(i3_model_device_io(model, 2, (int64_t[3]){1, rows, cols}, &b, &in, &out), I3RT_OK);
    i3_cuda_stats stats;
    i3_backend_cuda_stats(b, &stats);
    return stats;
}

/* A session that takes its 2D network on a device runs it at each axis's slice size (a batch of two: the flip)
 * twice, so that the first click on any axis replays a captured CUDA graph: three sizes captured before any
 * click, then one replay per click. */
Test(snc_session, prepared_network_replays_the_first_clicks) {
    i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
    p.predictor.zoom_in = 0;
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_EMULATED), I3RT_OK);
    i3_snc_net hrnet;
    cr_assert_eq(i3_snc_net_load(ctx, fixture("hrnet2d.safetensors"), &hrnet), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3rt_model *model = hrnet.user;
    i3_snc_session *s = session_with(ctx, NULL, 1.0, &p, hrnet, (i3_snc_guided_net){.predict = near_slices_predict});
    i3_cuda_stats stats = model_graph_stats(model, VH, VW);
    cr_assert_eq(stats.graph_captures, 3, "%lld captured", (long long)stats.graph_captures);
    cr_assert_eq(stats.graph_replays, 0);
    cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 5, 9.0, 8.0, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 5, 3.0, 2.0, 0), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_snc_session_finish(s, I3_AXIAL, 5, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_snc_session_click(s, I3_SAGITTAL, 9, 6.0, 10.0, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
    stats = model_graph_stats(model, VH, VW);
    printf("emulated device, %d x %d x %d volume: %lld graphs captured when the session took the network, "
           "%lld clicks replayed\n", VD, VH, VW, (long long)stats.graph_captures, (long long)stats.graph_replays);
    cr_assert_eq(stats.graph_captures, 3);
    cr_assert_eq(stats.graph_replays, 3);
    i3_snc_session_free(s);
    i3rt_context_free(ctx);
}

/* A 2D network whose click buffers cannot be had (pinned host memory refused: I3RT_EMULATED_PINNED_MEMORY)
 * is refused with a message; the session keeps its network and clicks as a session that never tried. */
Test(snc_session, refused_click_buffers_keep_the_old_network) {
    i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
    p.predictor.zoom_in = 0;
    uint8_t masks[2][VH * VW];
    for (int swap = 0; swap < 2; swap++) {
        i3rt_context *ctx = NULL;
        cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_EMULATED), I3RT_OK);
        i3_snc_net hrnet, other;
        cr_assert_eq(i3_snc_net_load(ctx, fixture("hrnet2d.safetensors"), &hrnet), I3RT_OK, "%s",
                     i3rt_context_error(ctx));
        i3_snc_session *s = session_with(ctx, NULL, 1.0, &p, hrnet, (i3_snc_guided_net){.predict = near_slices_predict});
        cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 5, 9.0, 8.0, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(i3_snc_session_finish(s, I3_AXIAL, 5, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
        if (swap) {
            cr_assert_eq(i3_snc_net_load(ctx, fixture("hrnet2d.safetensors"), &other), I3RT_OK, "%s",
                         i3rt_context_error(ctx));
            setenv("I3RT_EMULATED_PINNED_MEMORY", "1K", 1);
            const i3rt_status st = i3_snc_session_set_net2d(s, other);
            unsetenv("I3RT_EMULATED_PINNED_MEMORY");
            cr_assert_eq(st, I3RT_ERR_OUT_OF_MEMORY, "%s", i3rt_context_error(ctx));
            cr_assert(strstr(i3rt_context_error(ctx), "pinned host memory"), "message: %s", i3rt_context_error(ctx));
            printf("set_net2d with 1 KiB of pinned memory: %s\n", i3rt_context_error(ctx));
        }
        cr_assert_eq(i3_snc_session_click(s, I3_AXIAL, 6, 9.0, 8.0, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
        int64_t rows, cols;
        memcpy(masks[swap], i3_snc_session_slice_mask(s, I3_AXIAL, 6, &rows, &cols), VH * VW);
        i3_snc_session_free(s);
        i3rt_context_free(ctx);
    }
    cr_assert(memcmp(masks[0], masks[1], VH * VW) == 0, "the session clicked otherwise after the refused network");
}

/* ---- i3rt snc ------------------------------------------------------------------------------------------ */

extern char **environ;
static char cli_out[1 << 16], cli_err[1 << 16];

static void slurp(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    const size_t n = f ? fread(buf, 1, size - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
    unlink(path);
}

/* Runs $I3RT_BINARY_DIR/i3rt with argv (NULL-terminated); its exit status, stdout and stderr. */
static int run_i3rt(const char *dir, const char **args) {
    const char *bin = getenv("I3RT_BINARY_DIR");
    cr_assert(bin, "I3RT_BINARY_DIR is not set (run through ctest)");
    char binary[512], out_path[300], err_path[300];
    snprintf(binary, sizeof binary, "%s/i3rt", bin);
    snprintf(out_path, sizeof out_path, "%s/.stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/.stderr", dir);
    const char *argv[40] = {binary};
    int argc = 1;
    for (; args[argc - 1] && argc < 39; argc++) argv[argc] = args[argc - 1];
    argv[argc] = NULL;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    const int rc = posix_spawn(&pid, binary, &actions, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    cr_assert_eq(rc, 0, "cannot run %s", binary);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    slurp(out_path, cli_out, sizeof cli_out);
    slurp(err_path, cli_err, sizeof cli_err);
    cr_assert(WIFEXITED(status), "i3rt crashed; stderr: %s", cli_err);
    cr_assert(!strstr(cli_err, "Sanitizer") && !strstr(cli_err, "runtime error:"), "sanitizer report:\n%s", cli_err);
    return WEXITSTATUS(status);
}

Test(snc_session, cli_click_and_errors) {
    i3rt_context *ctx = new_ctx();
    char dir[256];
    fx_temp_dir(dir, sizeof dir, "snc_cli");
    i3_volume v;
    make_volume(&v, NULL, 1.0);
    const char *image = fx_path(dir, "img.nii.gz"), *out = fx_path(dir, "out");
    cr_assert_eq(i3_volume_write_f32(ctx, image, &v.geometry, 1, v.data), I3RT_OK);
    i3_volume_free(&v);
    const char *net2d = fixture("hrnet2d.safetensors");
    char net2d_copy[1024];
    snprintf(net2d_copy, sizeof net2d_copy, "%s", net2d);

    const char *click[] = {"snc", "click", image, "-2", net2d_copy, "--slice", "coronal", "9", "--click", "5", "8", "+",
                           "--click", "1", "1", "-", "--no-zoom", "--no-flip", "-o", out, "--json", NULL};
    cr_assert_eq(run_i3rt(dir, click), 0, "stderr: %s", cli_err);
    cr_assert(strstr(cli_out, "\"foreground_after_click\"") && strstr(cli_out, "\"click_ms\""), "%s", cli_out);
    cr_assert(strstr(cli_out, "img_coronal_009_mask.png") && strstr(cli_out, "\"click\""), "%s", cli_out);
    int32_t *labels;
    int64_t rows, cols;
    cr_assert_eq(i3_png_read_labels(ctx, fx_path(out, "img_coronal_009_mask.png"), &labels, &rows, &cols), I3RT_OK);
    cr_assert(rows == VD && cols == VW, "%lld x %lld", (long long)rows, (long long)cols);
    free(labels);
    cr_assert_eq(count_entries(out), 2);

    /* a click outside the slice: exit 1 naming it, nothing written */
    const char *outside[] = {"snc", "click", image, "-2", net2d_copy, "--slice", "coronal", "9", "--click", "12", "3",
                             "+", "-o", fx_path(dir, "out2"), NULL};
    cr_assert_eq(run_i3rt(dir, outside), 1);
    cr_assert(strstr(cli_err, "outside coronal slice 9 (12 rows x 18 columns)"), "%s", cli_err);
    cr_assert_eq(count_entries(fx_path(dir, "out2")), 0);
    /* usage errors: exit 2 */
    const char *no_axis[] = {"snc", "click", image, "-2", net2d_copy, "--slice", "up", "9", "-o", out, NULL};
    cr_assert_eq(run_i3rt(dir, no_axis), 2);
    cr_assert(strstr(cli_err, "--slice needs an axis"), "%s", cli_err);
    const char *no_3d[] = {"snc", "simulate", image, image, "-2", net2d_copy, "-o", out, NULL};
    cr_assert_eq(run_i3rt(dir, no_3d), 2);
    cr_assert(strstr(cli_err, "-3 NET3D"), "%s", cli_err);
    const char *bad_sign[] = {"snc", "click", image, "-2", net2d_copy, "--slice", "axial", "1", "--click", "1", "1",
                              "x", "-o", out, NULL};
    cr_assert_eq(run_i3rt(dir, bad_sign), 2);
    const char *bad_start[] = {"snc", "simulate", image, image, "-2", net2d_copy, "-3", net2d_copy, "--start", "2d",
                               "-o", out, NULL};
    cr_assert_eq(run_i3rt(dir, bad_start), 2);
    cr_assert(strstr(cli_err, "--start needs 3d or empty, got '2d'"), "%s", cli_err);
    /* the simulated user through the binary with both networks (2 slices) */
    uint8_t *truth = malloc(VD * VH * VW);
    make_volume(&v, truth, 1.1);
    float *labels_f = malloc(VD * VH * VW * sizeof *labels_f);
    for (int i = 0; i < VD * VH * VW; i++) labels_f[i] = truth[i];
    const char *truth_path = fx_path(dir, "truth.nii.gz");
    cr_assert_eq(i3_volume_write_f32(ctx, truth_path, &v.geometry, 1, labels_f), I3RT_OK);
    i3_volume_free(&v);
    free(labels_f), free(truth);
    char net3d[1024];
    snprintf(net3d, sizeof net3d, "%s", fixture("guided3d.safetensors"));
    const char *sim[] = {"snc", "simulate", image, truth_path, "-2", net2d_copy, "-3", net3d, "--iterations", "2",
                         "--no-zoom", "--no-flip", "-o", fx_path(dir, "sim"), "--json", NULL};
    cr_assert_eq(run_i3rt(dir, sim), 0, "stderr: %s", cli_err);
    printf("i3rt snc simulate --json:\n%s", cli_out);
    cr_assert(strstr(cli_out, "\"iterations\"") && strstr(cli_out, "\"slice_dice\"") && strstr(cli_out, "\"dice\"") &&
                  strstr(cli_out, "\"start_dice\":\t0,"),
              "%s", cli_out);
    cr_assert(strstr(cli_out, "\"axis\":\t\"axial\"") && strstr(cli_out, "\"index\":\t5"),
              "the first slice is the truth's largest section, axial 5: %s", cli_out);
    struct stat sb;
    cr_assert_eq(stat(fx_path(fx_path(dir, "sim"), "img_mask.nii.gz"), &sb), 0);
    /* evaluate: two cases (a list file), a markdown table of the Dice after each slice and the clicks */
    const char *list = fx_path(dir, "cases.tsv"), *table = fx_path(dir, "table.md");
    FILE *f = fopen(list, "w");
    fprintf(f, "name\timage\ttruth\nfirst\timg.nii.gz\ttruth.nii.gz\nsecond\t%s\ttruth.nii.gz\n", image);
    fclose(f);
    const char *eval[] = {"snc", "evaluate", "-2", net2d_copy, "-3", net3d, "--cases", list, "--iterations", "2",
                          "--no-zoom", "--no-flip", "-o", fx_path(dir, "eval"), "--markdown", table, NULL};
    cr_assert_eq(run_i3rt(dir, eval), 0, "stderr: %s", cli_err);
    printf("i3rt snc evaluate:\n%s", cli_out);
    cr_assert(strstr(cli_out, "| case | Dice 1 | Dice 2 | clicks 1 | clicks 2 | seconds |"), "%s", cli_out);
    cr_assert(strstr(cli_out, "| first |") && strstr(cli_out, "| second |") && strstr(cli_out, "| **mean** |"));
    char text[4096] = "";
    f = fopen(table, "r");
    cr_assert(f);
    text[fread(text, 1, sizeof text - 1, f)] = '\0';
    fclose(f);
    cr_assert(strncmp(cli_out, text, strlen(text)) == 0, "the file holds the printed table");
    /* both cases are the same image and truth: the same row */
    const char *r1 = strstr(cli_out, "| first |") + 9, *r2 = strstr(cli_out, "| second |") + 10;
    cr_assert(strncmp(r1, r2, strcspn(r1, "\n") - 8) == 0, "rows differ:\n%s", cli_out);
    unlink(list), unlink(table);
    fx_remove_dir(fx_path(dir, "eval"));
    fx_remove_dir(fx_path(dir, "sim"));
    fx_remove_dir(fx_path(dir, "out2"));
    fx_remove_dir(out);
    fx_remove_dir(dir);
    i3rt_context_free(ctx);
}
