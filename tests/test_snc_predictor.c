/* Slice-and-Conquer stage 1 (runtime/snc_predictor.c): RITM's predictor loop against a re-implementation
 * of RITM's own (tests/gen_snc_predictor.py, written from RITM's predictors/base.py, transforms/zoom_in.py,
 * transforms/flip.py @ b9b4460) on a real slice (ch2bet axial 90, 217 x 181), click by click:
 *   - "fake" sequences: a small network defined identically here and in the generator (fake_forward), so
 *     that the loop (zoom-in crops, recalculation, flip, out-of-crop clicks) is compared nearly exactly;
 *   - "hrnet": the RITM HRNet-18 (random weights) through i3_snc_net_load, compared with PyTorch's float64
 *     network inside the same loop;
 *   - "*_start" sequences: the session starts from a soft probability map (Slice-and-Conquer's previous 3D
 *     prediction's slice; RITM's prev_prediction set by set_prev_mask), which must be the probabilities
 *     and (thresholded) the mask before the first click, and the first click's previous mask; a wrong
 *     start (empty, or thresholded) must fail the comparison.
 * Per click: ZoomIn's crop (exact), the probabilities (max abs difference), the binary masks (equal
 * wherever the reference is farther than the tolerance from the threshold). Plus known answers for the
 * crop boxes, the flip's mirror symmetry, and bad clicks that leave the session as it was. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixtures.h"
#include "snc_predictor.h"

/* the fake network's float32 expression must round as PyTorch's does: no fused multiply-adds */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Fake sequences: the same float32 operations as PyTorch except the bilinear resizes' summation order
 * and expf's last bit (measured differences ~1e-7); 1e-5 leaves room and is far below any error of the
 * loop (a crop off by one pixel moves the probabilities by > 1e-2 here). */
#define FAKE_PROB_TOL 1e-5
/* HRNet: i3rt's float32 network agrees with PyTorch's float64 one to 1e-4 of the largest logit
 * (tests/test_hrnet.c); the logits here reach about |20|, so 2e-3 in a logit, and the sigmoid's slope
 * is at most 1/4: 5e-4 in a probability (the flip average and the resizes do not enlarge it). */
#define HRNET_PROB_TOL 5e-4

static i3rt_context *new_ctx(void) {
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    return ctx;
}

/* logits = 6 pos - 6 neg + 8 (prev - 0.5) + 1.5 img0[y, min(x + 1, w - 1)] - 1 (gen_snc_predictor.py). */
typedef struct {
    int calls, fail_at; /* fail_at: the call (1-based) that fails, 0 never */
} fake_state;

static i3rt_status fake_forward(void *user, const float *in, int n, int64_t h, int64_t w, float *logits) {
    fake_state *f = user;
    if (f && ++f->calls == f->fail_at) return I3RT_ERR_BACKEND;
    const int64_t s = h * w;
    for (int k = 0; k < n; k++, in += 6 * s, logits += s) {
        const float *img0 = in, *prev = in + 3 * s, *pos = in + 4 * s, *neg = in + 5 * s;
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                const int64_t i = y * w + x, shifted = y * w + (x + 1 < w ? x + 1 : w - 1);
                logits[i] = 6.0f * pos[i] - 6.0f * neg[i] + 8.0f * (prev[i] - 0.5f) + 1.5f * img0[shifted] - 1.0f;
            }
    }
    return I3RT_OK;
}

static i3_snc_net fake_net(fake_state *state) {
    i3_snc_net net = {.forward = fake_forward, .user = state};
    net.cfg.coord_channels = 3;
    net.cfg.with_prev_mask = 1;
    net.cfg.use_disks = 1;
    net.cfg.norm_radius = 5.0f;
    return net;
}

static i3_weights *open_seq(const char *name) {
    char file[128];
    snprintf(file, sizeof file, "seq_%s.safetensors", name);
    i3_weights *w = fx_open("snc_predictor", file);
    cr_assert(w, "fixture snc_predictor/%s missing (run through ctest: tests/gen_snc_predictor.py)", file);
    return w;
}

static i3_snc_predictor_params seq_params(const i3_weights *fx) {
    i3_snc_predictor_params p = I3_SNC_PREDICTOR_DEFAULTS;
    p.zoom_in = (int)fx_param_int(fx, "zoom_in", -1);
    p.target_size = (int)fx_param_int(fx, "target_size", -1);
    p.skip_clicks = (int)fx_param_int(fx, "skip_clicks", -1);
    p.expansion_ratio = fx_param_num(fx, "expansion_ratio");
    p.min_crop_size = (int)fx_param_int(fx, "min_crop_size", -1);
    p.with_flip = (int)fx_param_int(fx, "with_flip", -1);
    const int64_t limit = fx_param_int(fx, "net_clicks_limit", -1);
    p.net_clicks_limit = limit > 0 ? (int)limit : 0; /* absent: RITM's None */
    return p;
}

/* The fixture's start [h, w] (sequences from a start), or NULL. */
static const float *seq_start(const i3_weights *fx, int64_t h, int64_t w) {
    const i3_weight_tensor *t = i3_weights_find(fx, "start");
    if (!t) return NULL;
    cr_assert(t->ndim == 2 && t->shape[0] == h && t->shape[1] == w);
    return fx_tensor(fx, "start", NULL);
}

/* Before any click the session shows its start: probabilities bit for bit, mask = start > 0.49. */
static void check_start_shown(const i3_snc_predictor *p, const float *start, int64_t s, const char *name) {
    int64_t differ = 0, foreground = 0;
    for (int64_t i = 0; i < s; i++) {
        differ += i3_snc_predictor_probs(p)[i] != (start ? start[i] : 0.0f);
        differ += i3_snc_predictor_mask(p)[i] != (start && start[i] > 0.49f);
        foreground += i3_snc_predictor_mask(p)[i];
    }
    cr_expect_eq(differ, 0, "%s: before the first click %lld values differ from the start", name, (long long)differ);
    printf("snc_predictor %s: before the first click probs = start, mask = start > 0.49 (%lld px)\n", name,
           (long long)foreground);
}

/* Runs the fixture's clicks through a session on net (from the fixture's start, if it has one) and
 * compares every step. */
static void check_sequence(const char *name, const i3_snc_net *net, i3rt_context *ctx, double tol) {
    i3_weights *fx = open_seq(name);
    const i3_weight_tensor *pt = i3_weights_find(fx, "probs");
    cr_assert(pt && pt->ndim == 3);
    const int n = (int)pt->shape[0];
    const int64_t h = pt->shape[1], w = pt->shape[2], s = h * w;
    const float *image = fx_tensor(fx, "image", NULL), *probs = fx_tensor(fx, "probs", NULL);
    const float *clicks = fx_tensor(fx, "clicks", NULL), *crops = fx_tensor(fx, "crops", NULL);
    cr_assert(image && probs && clicks && crops);
    const float *start = seq_start(fx, h, w);
    const i3_snc_predictor_params params = seq_params(fx);
    i3_snc_predictor *p = NULL;
    cr_assert_eq(i3_snc_predictor_create(ctx, net, image, h, w, &params, &p), I3RT_OK, "%s", i3rt_context_error(ctx));
    if (start) cr_assert_eq(i3_snc_predictor_set_start(p, start), I3RT_OK, "%s", i3rt_context_error(ctx));
    check_start_shown(p, start, s, name);
    double worst = 0;
    for (int k = 0; k < n; k++) {
        const float *c = clicks + 3 * k, *ref = probs + k * s, *crop = crops + 5 * k;
        const double t0 = i3_now_seconds();
        cr_assert_eq(i3_snc_predictor_click(p, c[0], c[1], c[2] != 0), I3RT_OK, "%s", i3rt_context_error(ctx));
        const double click_s = i3_now_seconds() - t0;
        i3_snc_box box = {-1, -1, -1, -1};
        const int has = i3_snc_predictor_crop(p, &box);
        cr_expect_eq(has, (int)crop[0], "%s click %d: crop %s, RITM %s", name, k, has ? "set" : "none",
                     crop[0] ? "set" : "none");
        if (has && crop[0])
            cr_expect(box.r0 == crop[1] && box.r1 == crop[2] && box.c0 == crop[3] && box.c1 == crop[4],
                      "%s click %d: crop rows %lld..%lld cols %lld..%lld, RITM %g..%g, %g..%g", name, k,
                      (long long)box.r0, (long long)box.r1, (long long)box.c0, (long long)box.c1, crop[1], crop[2],
                      crop[3], crop[4]);
        const float *got = i3_snc_predictor_probs(p);
        const uint8_t *mask = i3_snc_predictor_mask(p);
        double max_diff = 0;
        int64_t differing = 0, near = 0, foreground = 0;
        for (int64_t i = 0; i < s; i++) {
            const double d = fabs((double)got[i] - ref[i]);
            max_diff = d > max_diff ? d : max_diff;
            const int expected = ref[i] > 0.49f, close = fabs(ref[i] - 0.49) <= tol;
            foreground += expected;
            near += close;
            if (mask[i] != expected) {
                differing++;
                cr_expect(close, "%s click %d: mask differs at (%lld, %lld) where RITM's probability %.6f is not "
                          "within %.0e of 0.49 (i3rt %.6f)", name, k, (long long)(i / w), (long long)(i % w), ref[i],
                          tol, got[i]);
            }
        }
        printf("snc_predictor %s click %d (y %g, x %g, %s): crop %s, max |p - RITM| %.3g, foreground %lld px, "
               "mask differs at %lld px (%lld within tolerance of 0.49), %.3f s\n",
               name, k, c[0], c[1], c[2] ? "positive" : "negative", has ? "set" : "none", max_diff,
               (long long)foreground, (long long)differing, (long long)near, click_s);
        cr_expect(max_diff <= tol, "%s click %d: max |p - RITM| %.3g > %.0e", name, k, max_diff, tol);
        worst = max_diff > worst ? max_diff : worst;
    }
    cr_expect_eq(i3_snc_predictor_n_clicks(p), n);
    printf("snc_predictor %s: %d clicks, worst max |p - RITM| %.3g (tolerance %.0e)\n", name, n, worst, tol);
    i3_snc_predictor_free(p);
    i3_weights_free(fx);
}

static void check_fake(const char *name) {
    i3rt_context *ctx = new_ctx();
    const i3_snc_net net = fake_net(NULL);
    check_sequence(name, &net, ctx, FAKE_PROB_TOL);
    i3rt_context_free(ctx);
}

Test(snc_predictor, zoom_follows_ritm) { check_fake("fake_zoom"); }
Test(snc_predictor, zoom_recalculation) { check_fake("fake_recalc"); }
Test(snc_predictor, zoom_whole_slice_first) { check_fake("fake_whole"); }
Test(snc_predictor, no_zoom_no_flip) { check_fake("fake_plain"); }
Test(snc_predictor, net_clicks_limit) { check_fake("fake_limit"); }

static void load_hrnet(i3rt_context *ctx, i3_snc_net *net) {
    char path[1024];
    snprintf(path, sizeof path, "%s/snc_predictor/hrnet2d.safetensors", getenv("I3RT_FIXTURES"));
    cr_assert_eq(i3_snc_net_load(ctx, path, net), I3RT_OK, "%s", i3rt_context_error(ctx));
}

Test(snc_predictor, hrnet_vs_torch, .timeout = 900) {
    i3rt_context *ctx = new_ctx();
    i3_snc_net net;
    load_hrnet(ctx, &net);
    check_sequence("hrnet", &net, ctx, HRNET_PROB_TOL);
    i3_snc_net_free(&net);
    i3rt_context_free(ctx);
}

/* A wrong start instead of the fixture's: max |p - RITM| of the first click. wrong: 0 the empty start,
 * 1 the start thresholded at 0.49 (the binary mask instead of the probabilities). */
static double first_click_with_wrong_start(const char *name, const i3_snc_net *net, i3rt_context *ctx, int wrong) {
    i3_weights *fx = open_seq(name);
    const i3_weight_tensor *pt = i3_weights_find(fx, "probs");
    const int64_t h = pt->shape[1], w = pt->shape[2], s = h * w;
    const float *start = seq_start(fx, h, w), *probs = fx_tensor(fx, "probs", NULL);
    const float *clicks = fx_tensor(fx, "clicks", NULL);
    cr_assert(start && probs && clicks);
    float *binary = malloc((size_t)s * sizeof *binary);
    for (int64_t i = 0; i < s; i++) binary[i] = start[i] > 0.49f;
    const i3_snc_predictor_params params = seq_params(fx);
    i3_snc_predictor *p = NULL;
    cr_assert_eq(i3_snc_predictor_create(ctx, net, fx_tensor(fx, "image", NULL), h, w, &params, &p), I3RT_OK);
    cr_assert_eq(i3_snc_predictor_set_start(p, wrong ? binary : NULL), I3RT_OK);
    cr_assert_eq(i3_snc_predictor_click(p, clicks[0], clicks[1], clicks[2] != 0), I3RT_OK);
    double max_diff = 0;
    for (int64_t i = 0; i < s; i++) max_diff = fmax(max_diff, fabs((double)i3_snc_predictor_probs(p)[i] - probs[i]));
    printf("snc_predictor %s with the %s start: first click max |p - RITM| %.3g\n", name,
           wrong ? "thresholded" : "empty", max_diff);
    i3_snc_predictor_free(p);
    free(binary);
    i3_weights_free(fx);
    return max_diff;
}

/* From a start: RITM's loop with the start as prev_prediction; the comparison fails on a wrong start. */
Test(snc_predictor, start_follows_ritm) {
    i3rt_context *ctx = new_ctx();
    const i3_snc_net net = fake_net(NULL);
    check_sequence("fake_start", &net, ctx, FAKE_PROB_TOL);
    check_sequence("fake_start_recalc", &net, ctx, FAKE_PROB_TOL);
    for (int wrong = 0; wrong <= 1; wrong++)
        cr_expect_gt(first_click_with_wrong_start("fake_start", &net, ctx, wrong), 100 * FAKE_PROB_TOL,
                     "a wrong start passes the check");
    i3rt_context_free(ctx);
}

Test(snc_predictor, hrnet_start_vs_torch, .timeout = 900) {
    i3rt_context *ctx = new_ctx();
    i3_snc_net net;
    load_hrnet(ctx, &net);
    check_sequence("hrnet_start", &net, ctx, HRNET_PROB_TOL);
    for (int wrong = 0; wrong <= 1; wrong++)
        cr_expect_gt(first_click_with_wrong_start("hrnet_start", &net, ctx, wrong), 10 * HRNET_PROB_TOL,
                     "a wrong start passes the check");
    i3_snc_net_free(&net);
    i3rt_context_free(ctx);
}

/* Known answers for ZoomIn's boxes (misc.py's expand_bbox with Python's half-to-even round). */
Test(snc_predictor, crop_boxes) {
    enum { H = 217, W = 181 };
    static uint8_t mask[H * W];
    i3_snc_box b;
    cr_expect_eq(i3_snc_object_box(mask, H, W, NULL, 0, 1.4, 200, &b), 0, "an empty mask has no box");
    for (int y = 50; y <= 69; y++)
        for (int x = 30; x <= 39; x++) mask[y * W + x] = 1;
    /* rows 50..69: centre 59.5, size max(1.4 * 20, 200) = 200: round(-40.5) = -40, round(159.5) = 160;
     * cols 30..39: centre 34.5: round(-65.5) = -66, round(134.5) = 134; clamped to the slice */
    cr_assert_eq(i3_snc_object_box(mask, H, W, NULL, 0, 1.4, 200, &b), 1);
    cr_expect(b.r0 == 0 && b.r1 == 160 && b.c0 == 0 && b.c1 == 134, "box %lld..%lld, %lld..%lld", (long long)b.r0,
              (long long)b.r1, (long long)b.c0, (long long)b.c1);
    /* no minimum: rows 1.4 * 20 = 28 -> round(45.5) = 46 (even), round(73.5) = 74; cols 1.4 * 10 = 14 ->
     * round(27.5) = 28, round(41.5) = 42 */
    cr_assert_eq(i3_snc_object_box(mask, H, W, NULL, 0, 1.4, 0, &b), 1);
    cr_expect(b.r0 == 46 && b.r1 == 74 && b.c0 == 28 && b.c1 == 42, "box %lld..%lld, %lld..%lld", (long long)b.r0,
              (long long)b.r1, (long long)b.c0, (long long)b.c1);
    /* a positive click joins the box at its truncated pixel (int()), a negative one does not:
     * rows 50..100 (51 px): 1.4 * 51 = 71.4 around 75 -> round(39.3) = 39, round(110.7) = 111 */
    const i3_snc_click clicks[2] = {{100.7f, 35.2f, 1}, {200.0f, 170.0f, 0}};
    cr_assert_eq(i3_snc_object_box(mask, H, W, clicks, 2, 1.4, 0, &b), 1);
    cr_expect(b.r0 == 39 && b.r1 == 111 && b.c0 == 28 && b.c1 == 42, "box %lld..%lld, %lld..%lld", (long long)b.r0,
              (long long)b.r1, (long long)b.c0, (long long)b.c1);

    /* get_roi_image_nd: longer side to target: 161 x 135 -> 400 x round(335.40) = 335 */
    int64_t zh, zw;
    i3_snc_zoom_size((i3_snc_box){0, 160, 0, 134}, 400, &zh, &zw);
    cr_expect(zh == 400 && zw == 335, "zoom size %lld x %lld", (long long)zh, (long long)zw);
    i3_snc_zoom_size((i3_snc_box){10, 19, 0, 39}, 100, &zh, &zw); /* 10 x 40 -> 25 x 100 */
    cr_expect(zh == 25 && zw == 100, "zoom size %lld x %lld", (long long)zh, (long long)zw);

    /* get_bbox_iou: segments [0, 9] and [5, 14]: 5 / 15 per axis */
    const double iou = i3_snc_box_iou((i3_snc_box){0, 9, 0, 9}, (i3_snc_box){5, 14, 5, 14});
    cr_expect(fabs(iou - 1.0 / 9.0) < 1e-12, "iou %g", iou);
    cr_expect_eq(i3_snc_box_iou((i3_snc_box){0, 9, 0, 9}, (i3_snc_box){20, 29, 0, 9}), 0.0);
}

/* A slice-sized image from a smooth pattern that is not mirror-symmetric. */
static float *pattern_image(int64_t h, int64_t w, int mirror) {
    float *img = malloc((size_t)(3 * h * w) * sizeof *img);
    for (int c = 0; c < 3; c++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                const int64_t xs = mirror ? w - 1 - x : x;
                img[(c * h + y) * w + x] = 0.5f + 0.45f * sinf(0.21f * (float)y + 0.13f * (float)(xs * xs) / 10.0f + c);
            }
    return img;
}

/* AddHorizontalFlip: the session on the mirrored slice with mirrored clicks gives the mirrored
 * probabilities bit for bit (the same two network runs, averaged in the other order); without the flip
 * the fake network's shifted term makes them differ. */
Test(snc_predictor, flip_symmetry) {
    enum { H = 48, W = 57 };
    i3rt_context *ctx = new_ctx();
    const i3_snc_net net = fake_net(NULL);
    const float clicks[3][3] = {{20, 17, 1}, {30, 40, 1}, {24, 28, 0}};
    for (int flip = 0; flip <= 1; flip++) {
        i3_snc_predictor_params params = I3_SNC_PREDICTOR_DEFAULTS;
        params.zoom_in = 0;
        params.with_flip = flip;
        float *img = pattern_image(H, W, 0), *mirrored = pattern_image(H, W, 1);
        i3_snc_predictor *a = NULL, *b = NULL;
        cr_assert_eq(i3_snc_predictor_create(ctx, &net, img, H, W, &params, &a), I3RT_OK);
        cr_assert_eq(i3_snc_predictor_create(ctx, &net, mirrored, H, W, &params, &b), I3RT_OK);
        double max_diff = 0;
        for (int k = 0; k < 3; k++) {
            cr_assert_eq(i3_snc_predictor_click(a, clicks[k][0], clicks[k][1], (int)clicks[k][2]), I3RT_OK);
            cr_assert_eq(i3_snc_predictor_click(b, clicks[k][0], W - 1 - clicks[k][1], (int)clicks[k][2]), I3RT_OK);
            const float *pa = i3_snc_predictor_probs(a), *pb = i3_snc_predictor_probs(b);
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    const double d = fabs((double)pa[y * W + x] - pb[y * W + (W - 1 - x)]);
                    max_diff = d > max_diff ? d : max_diff;
                }
        }
        printf("snc_predictor flip %s: max |p(slice) - mirror(p(mirrored slice))| = %.3g\n", flip ? "on" : "off",
               max_diff);
        if (flip)
            cr_expect_eq(max_diff, 0.0, "with the flip the mirrored session must mirror exactly");
        else
            cr_expect_gt(max_diff, 1e-3, "the fake network should not be mirror-symmetric by itself");
        i3_snc_predictor_free(a);
        i3_snc_predictor_free(b);
        free(img);
        free(mirrored);
    }
    i3rt_context_free(ctx);
}

/* Bad clicks and a failing network: clear errors, the session exactly as before. */
Test(snc_predictor, bad_clicks_keep_session) {
    enum { H = 40, W = 50 };
    i3rt_context *ctx = new_ctx();
    fake_state state = {0, 0};
    const i3_snc_net net = fake_net(&state);
    i3_snc_predictor_params params = I3_SNC_PREDICTOR_DEFAULTS;
    params.target_size = 64;
    params.min_crop_size = 20;
    float *img = pattern_image(H, W, 0);
    i3_snc_predictor *p = NULL;
    cr_assert_eq(i3_snc_predictor_create(ctx, &net, img, H, W, &params, &p), I3RT_OK);
    cr_assert_eq(i3_snc_predictor_click(p, 20, 25, 1), I3RT_OK);
    cr_assert_eq(i3_snc_predictor_click(p, 22, 27, 1), I3RT_OK); /* a crop is set now */
    i3_snc_box before_box, after_box;
    cr_assert(i3_snc_predictor_crop(p, &before_box));
    float before[H * W];
    uint8_t before_mask[H * W];
    memcpy(before, i3_snc_predictor_probs(p), sizeof before);
    memcpy(before_mask, i3_snc_predictor_mask(p), sizeof before_mask);

    const struct {
        float y, x;
        const char *message;
    } bad[] = {
        {-1.0f, 10.0f, "SnC 2D click (y -1, x 10) is outside the 40 x 50 slice"},
        {40.0f, 10.0f, "is outside the 40 x 50 slice"},
        {10.0f, 50.0f, "is outside the 40 x 50 slice"},
        {NAN, 10.0f, "coordinates are not finite"},
        {10.0f, INFINITY, "coordinates are not finite"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(i3_snc_predictor_click(p, bad[i].y, bad[i].x, 0), I3RT_ERR_INVALID_ARGUMENT);
        cr_expect(strstr(i3rt_context_error(ctx), bad[i].message), "message '%s'", i3rt_context_error(ctx));
        printf("bad click: %s\n", i3rt_context_error(ctx));
    }
    state.fail_at = state.calls + 1; /* the next click's forward (the input and its mirror) fails */
    cr_expect_eq(i3_snc_predictor_click(p, 10, 10, 1), I3RT_ERR_BACKEND);
    cr_expect_eq(i3_snc_predictor_n_clicks(p), 2);
    cr_expect(memcmp(before, i3_snc_predictor_probs(p), sizeof before) == 0, "probabilities changed");
    cr_expect(memcmp(before_mask, i3_snc_predictor_mask(p), sizeof before_mask) == 0, "mask changed");
    cr_assert(i3_snc_predictor_crop(p, &after_box));
    cr_expect(memcmp(&before_box, &after_box, sizeof before_box) == 0, "crop changed");
    /* the session goes on: the same click now succeeds and the next one counts as the third */
    cr_expect_eq(i3_snc_predictor_click(p, 10, 10, 1), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_expect_eq(i3_snc_predictor_n_clicks(p), 3);

    /* bad sessions */
    i3_snc_predictor *q = NULL;
    img[5] = 1.5f;
    cr_expect_eq(i3_snc_predictor_create(ctx, &net, img, H, W, &params, &q), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(i3rt_context_error(ctx), "not in [0, 1]"), "%s", i3rt_context_error(ctx));
    cr_expect_null(q);
    i3_snc_predictor_free(p);
    free(img);
    i3rt_context_free(ctx);
}

/* A network scripted per call (a call: a click's input and its mirror): call 1 answers +10 on the positive
 * disk and -10 elsewhere, call 2 -10 everywhere, later calls +2 everywhere; it records its input size. */
typedef struct {
    int calls;
    int64_t h, w;
} scripted_state;

static i3rt_status scripted_forward(void *user, const float *in, int n, int64_t h, int64_t w, float *logits) {
    scripted_state *st = user;
    st->calls++, st->h = h, st->w = w;
    for (int k = 0; k < n; k++) {
        const float *pos = in + (6 * k + 4) * h * w;
        for (int64_t i = 0; i < h * w; i++)
            logits[k * h * w + i] = st->calls <= 1 ? 20.0f * pos[i] - 10.0f : st->calls <= 2 ? -10.0f : 2.0f;
    }
    return I3RT_OK;
}

/* Known answers for ZoomIn's crop across clicks, including RITM's odd case: once a crop is set and the
 * previous map has no pixel > 0.5, ZoomIn feeds the whole slice but its inverse still resizes the output
 * into the old crop (zeros outside). */
Test(snc_predictor, zoom_known_answers) {
    enum { H = 90, W = 70 };
    i3rt_context *ctx = new_ctx();
    scripted_state state = {0};
    i3_snc_net net = fake_net(NULL);
    net.forward = scripted_forward, net.user = &state;
    i3_snc_predictor_params params = I3_SNC_PREDICTOR_DEFAULTS;
    params.target_size = 50;
    params.min_crop_size = 30;
    float *img = pattern_image(H, W, 0);
    i3_snc_predictor *p = NULL;
    cr_assert_eq(i3_snc_predictor_create(ctx, &net, img, H, W, &params, &p), I3RT_OK);
    i3_snc_box box;

    /* click 1: no zoom (skip_clicks 1): the network sees the slice; the mask is the radius-5 disk */
    cr_assert_eq(i3_snc_predictor_click(p, 40, 30, 1), I3RT_OK);
    cr_expect(state.h == H && state.w == W);
    cr_expect_eq(i3_snc_predictor_crop(p, &box), 0);
    int64_t disk = 0;
    for (int64_t i = 0; i < H * W; i++) disk += i3_snc_predictor_mask(p)[i];
    cr_expect_eq(disk, 81, "a radius-5 disk has 81 pixels, mask has %lld", (long long)disk);

    /* click 2: the disk's box rows 35..45 and cols 25..35, with the click (50, 33) rows 35..50: rows 16 px
     * -> max(22.4, 30) = 30 around 42.5 -> round(27.5) = 28, round(57.5) = 58; cols 11 px -> 30 around 30
     * -> 15..45; the network sees 31 x 31 -> 50 x 50; -10 everywhere gives sigmoid(-10) in the crop */
    cr_assert_eq(i3_snc_predictor_click(p, 50, 33, 1), I3RT_OK);
    cr_assert_eq(i3_snc_predictor_crop(p, &box), 1);
    cr_expect(box.r0 == 28 && box.r1 == 58 && box.c0 == 15 && box.c1 == 45, "crop %lld..%lld, %lld..%lld",
              (long long)box.r0, (long long)box.r1, (long long)box.c0, (long long)box.c1);
    cr_expect(state.h == 50 && state.w == 50, "network input %lld x %lld", (long long)state.h, (long long)state.w);
    const float low = 1.0f / (1.0f + expf(10.0f)), high = 1.0f / (1.0f + expf(-2.0f));
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const int inside = y >= 28 && y <= 58 && x >= 15 && x <= 45;
            cr_expect(fabsf(i3_snc_predictor_probs(p)[y * W + x] - (inside ? low : 0.0f)) <= 1e-9f, "(%d, %d)", y, x);
        }

    /* click 3: no pixel > 0.5: no crop for the network (the whole slice), but the output is squeezed into
     * the old crop: sigmoid(2) inside, 0 outside */
    cr_assert_eq(i3_snc_predictor_click(p, 20, 60, 0), I3RT_OK);
    cr_expect(state.h == H && state.w == W, "network input %lld x %lld", (long long)state.h, (long long)state.w);
    cr_assert_eq(i3_snc_predictor_crop(p, &box), 1);
    cr_expect(box.r0 == 28 && box.r1 == 58 && box.c0 == 15 && box.c1 == 45);
    int64_t wrong = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const int inside = y >= 28 && y <= 58 && x >= 15 && x <= 45;
            wrong += fabsf(i3_snc_predictor_probs(p)[y * W + x] - (inside ? high : 0.0f)) > 1e-6f;
        }
    cr_expect_eq(wrong, 0, "%lld pixels differ from RITM's squeezed output", (long long)wrong);
    i3_snc_predictor_free(p);
    free(img);
    i3rt_context_free(ctx);
}

/* set_start: only before the first click, values in [0, 1]; refused calls change nothing. */
Test(snc_predictor, start_rules) {
    enum { H = 30, W = 40 };
    i3rt_context *ctx = new_ctx();
    const i3_snc_net net = fake_net(NULL);
    i3_snc_predictor_params params = I3_SNC_PREDICTOR_DEFAULTS;
    params.zoom_in = 0;
    float *img = pattern_image(H, W, 0), start[H * W];
    for (int i = 0; i < H * W; i++) start[i] = (float)i / (H * W);
    i3_snc_predictor *p = NULL;
    cr_assert_eq(i3_snc_predictor_create(ctx, &net, img, H, W, &params, &p), I3RT_OK);
    cr_assert_eq(i3_snc_predictor_set_start(p, start), I3RT_OK);
    check_start_shown(p, start, H * W, "ramp");
    start[7] = NAN;
    cr_expect_eq(i3_snc_predictor_set_start(p, start), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(i3rt_context_error(ctx), "start probability nan at (0, 7) is not in [0, 1]"), "%s",
              i3rt_context_error(ctx));
    start[7] = 7.0f / (H * W);
    check_start_shown(p, start, H * W, "ramp after a refused start");
    cr_assert_eq(i3_snc_predictor_set_start(p, NULL), I3RT_OK); /* back to RITM's zeros */
    check_start_shown(p, NULL, H * W, "empty");
    cr_assert_eq(i3_snc_predictor_click(p, 10, 10, 1), I3RT_OK);
    cr_expect_eq(i3_snc_predictor_set_start(p, start), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(i3rt_context_error(ctx), "before the first click"), "%s", i3rt_context_error(ctx));
    i3_snc_predictor_free(p);
    free(img);
    i3rt_context_free(ctx);
}
