/* TV-L1 optical flow (runtime/tvl1.c) against scikit-image, known answers, and SnC post-processing:
 *   - flow vs skimage.registration.optical_flow_tvl1 on the image pairs of tests/gen_tvl1.py (ch2bet
 *     slices with a shifted and waved copy, a brain mask pair, a disk pair, a one-level image, other
 *     parameters, a small motion that stops early): max and mean |i3rt - skimage| in pixels and how many values differ at all, printed.
 *     The solver repeats skimage's float32 operations in numpy's order and scipy's double filters and
 *     interpolation, so here the flows are bit-equal. The tolerance allows for rounding differences
 *     elsewhere (another libm's exp in the Gaussian kernel, numpy's summation order): built with
 *     contracted multiply-adds, i.e. ~1 ulp off in most float32 steps, the same fixtures gave max
 *     1.8e-3 px (the binary-mask pair: sharp edges amplify it through the data term's threshold) and
 *     mean <= 1.1e-6 px. So: max <= FLOW_MAX_TOL = 5e-3 px, mean <= FLOW_MEAN_TOL = 1e-5 px. Steps
 *     done differently do fail them (measured): one dual projection instead of two, max 0.34-5 px; the
 *     stopping test against the flow at the warp's start (flow_5, which stops early), max 0.03 px, mean
 *     5.8e-3 px; edge-replicated instead of reflected Gaussian borders, mean 9.2e-5 px on flow_4;
 *   - identical images give exactly zero flow; a pure translation (integer and sub-pixel) of a smooth
 *     image is recovered inside the image; the warp with a constant flow shifts and replicates edges;
 *   - the blending weights max(1 - gamma |k|, 0) and which slices the post-processing changes, and the
 *     post-processing against the same steps done with skimage's flow and warp;
 *   - the device version (kernels/tvl1.cu) on the SIMT emulator, and 3 CPU threads: bit-equal to the
 *     single-threaded CPU flow; on a real GPU (skipped, saying why, without one): within the bounds
 *     against skimage of the CPU's flow (nvcc contracts multiply-adds);
 *   - bad input (sizes, NaN/Inf, parameters, axis, slice, gamma): an error naming the problem and the
 *     outputs untouched; caller-provided scratch gives the same flow and stays within its size. */
#include "tvl1.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "fixtures.h"

#define FLOW_MAX_TOL 5e-3   /* pixels, max |i3rt - skimage| over every pixel and both components */
#define FLOW_MEAN_TOL 1e-5  /* pixels, mean of the same */

static i3_ctx *ctx;

static void setup(void) { cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK); }
static void teardown(void) { i3rt_context_free(ctx); }

TestSuite(tvl1, .init = setup, .fini = teardown);

static const float *tensor(i3_weights *w, const char *name, int64_t numel) {
    int64_t n = 0;
    const float *t = fx_tensor(w, name, &n);
    cr_assert(t && n == numel, "%s: tensor %s missing or %lld values (expected %lld)", i3_weights_label(w), name,
              (long long)n, (long long)numel);
    return t;
}

static i3_tvl1_params fixture_params(i3_weights *w) {
    return (i3_tvl1_params){fx_param_num(w, "attachment"), fx_param_num(w, "tightness"),
                            (int)fx_param_int(w, "num_warp", -1), (int)fx_param_int(w, "num_iter", -1),
                            fx_param_num(w, "tol")};
}

Test(tvl1, flow_vs_skimage) {
    int cases = 0;
    for (int i = 0;; i++) {
        char name[64];
        snprintf(name, sizeof name, "flow_%d.safetensors", i);
        i3_weights *w = fx_open("tvl1", name);
        if (!w) break;
        const int64_t rows = fx_param_int(w, "rows", -1), cols = fx_param_int(w, "cols", -1), n = rows * cols;
        const float *ref = tensor(w, "reference", n), *mov = tensor(w, "moving", n), *expect = tensor(w, "flow", 2 * n);
        const i3_tvl1_params p = fixture_params(w);
        float *flow = fx_guarded_alloc(2 * n);
        cr_assert_eq(i3_tvl1(ctx, ref, mov, rows, cols, &p, NULL, flow), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_expect(fx_guards_intact(flow, 2 * n), "%s: wrote outside the flow", name);
        double max_abs = 0.0, sum_abs = 0.0, max_flow = 0.0;
        int64_t differ = 0;
        for (int64_t j = 0; j < 2 * n; j++) {
            const double e = fabs((double)flow[j] - (double)expect[j]);
            max_abs = fmax(max_abs, e), sum_abs += e, differ += flow[j] != expect[j];
            max_flow = fmax(max_flow, fabs((double)expect[j]));
        }
        printf("tvl1 vs skimage, %s (%lld x %lld, max |flow| %.3f px): max abs %.3g px, mean abs %.3g px, "
               "%lld of %lld values not bit-equal\n",
               name, (long long)rows, (long long)cols, max_flow, max_abs, sum_abs / (double)(2 * n), (long long)differ,
               (long long)(2 * n));
        cr_expect(max_abs <= FLOW_MAX_TOL, "%s: max |i3rt - skimage| = %.3g px > %g", name, max_abs, FLOW_MAX_TOL);
        cr_expect(sum_abs / (double)(2 * n) <= FLOW_MEAN_TOL, "%s: mean |i3rt - skimage| = %.3g px > %g", name,
                  sum_abs / (double)(2 * n), FLOW_MEAN_TOL);
        fx_guarded_free(flow);
        i3_weights_free(w);
        cases++;
    }
    cr_assert(cases >= 6, "only %d tvl1 fixtures (run through ctest, which runs tests/gen_tvl1.py first)", cases);
}

/* The device tests' fixtures (three pyramid levels, one level, an early stop) with the CPU's flow. */
typedef struct {
    char name[64];
    i3_weights *w;
    int64_t rows, cols, n;
    const float *ref, *mov;
    i3_tvl1_params p;
    float *cpu; /* 2 n: the CPU's flow */
} device_case;

static device_case device_case_open(int k) {
    static const int which[3] = {2, 3, 5};
    device_case c;
    snprintf(c.name, sizeof c.name, "flow_%d.safetensors", which[k]);
    c.w = fx_open("tvl1", c.name);
    cr_assert(c.w, "fixture tvl1/%s missing", c.name);
    c.rows = fx_param_int(c.w, "rows", -1), c.cols = fx_param_int(c.w, "cols", -1), c.n = c.rows * c.cols;
    c.ref = tensor(c.w, "reference", c.n), c.mov = tensor(c.w, "moving", c.n);
    c.p = fixture_params(c.w);
    c.cpu = malloc(2 * (size_t)c.n * sizeof *c.cpu);
    cr_assert_eq(i3_tvl1(ctx, c.ref, c.mov, c.rows, c.cols, &c.p, NULL, c.cpu), I3RT_OK);
    return c;
}

static void device_case_close(device_case *c) {
    free(c->cpu);
    i3_weights_free(c->w);
}

/* The device version on a real GPU (kernels/tvl1.cu through nvcc): nvcc contracts multiply-adds, so the flow
 * may differ from the CPU's by rounding; held to the bounds against skimage. */
Test(tvl1, gpu_device_matches_cpu) {
#ifndef I3RT_HAVE_CUDA
    cr_skip("built without -DI3RT_CUDA=ON: no GPU kernels");
#else
    i3_ctx dctx = {.n_threads = 1, .backend = I3RT_BACKEND_CUDA};
    i3_backend *b;
    if (i3_backend_cuda_create(&dctx, 0, &b) != I3RT_OK) cr_skip("no real GPU: %s", dctx.error);
    for (int k = 0; k < 3; k++) {
        device_case c = device_case_open(k);
        const size_t bytes = (size_t)c.n * sizeof(float), scratch_bytes = i3_tvl1_device_scratch_bytes(c.rows, c.cols);
        float *got = malloc(2 * bytes);
        void *d_ref, *d_mov, *d_flow, *d_scratch;
        cr_assert(b->iface->alloc(b, bytes, &d_ref) == I3RT_OK && b->iface->alloc(b, bytes, &d_mov) == I3RT_OK &&
                      b->iface->alloc(b, 2 * bytes, &d_flow) == I3RT_OK &&
                      b->iface->alloc(b, scratch_bytes, &d_scratch) == I3RT_OK,
                  "%s", dctx.error);
        cr_assert(b->iface->upload(b, d_ref, c.ref, bytes) == I3RT_OK &&
                      b->iface->upload(b, d_mov, c.mov, bytes) == I3RT_OK,
                  "%s", dctx.error);
        cr_assert_eq(i3gpu_tvl1(d_ref, d_mov, c.rows, c.cols, &c.p, d_scratch, d_flow, i3_backend_cuda_stream(b)), 0,
                     "%s: launch failed", c.name);
        cr_assert(b->iface->synchronize(b) == I3RT_OK && b->iface->download(b, got, d_flow, 2 * bytes) == I3RT_OK,
                  "%s: %s", c.name, dctx.error);
        double max_abs = 0.0, sum_abs = 0.0;
        for (int64_t j = 0; j < 2 * c.n; j++) {
            const double e = fabs((double)got[j] - (double)c.cpu[j]);
            max_abs = isnan(e) || e > max_abs ? e : max_abs;
            sum_abs += e;
        }
        const double mean_abs = sum_abs / (double)(2 * c.n);
        printf("tvl1 gpu vs cpu, %s (%lld x %lld): max abs %.3g px, mean %.3g px\n", c.name, (long long)c.rows,
               (long long)c.cols, max_abs, mean_abs);
        cr_expect(max_abs <= FLOW_MAX_TOL && mean_abs <= FLOW_MEAN_TOL,
                  "%s: gpu flow max %.3g px, mean %.3g px from the cpu's", c.name, max_abs, mean_abs);
        b->iface->free(b, d_ref), b->iface->free(b, d_mov), b->iface->free(b, d_flow), b->iface->free(b, d_scratch);
        free(got);
        device_case_close(&c);
    }
    i3_backend_destroy(b);
#endif
}

/* The device version on the SIMT emulator (kernels/tvl1.cu; emulated device memory is host memory):
 * the same flow as the CPU, bit for bit (both compiled without contracted multiply-adds). */
Test(tvl1, emulated_device_matches_cpu) {
    for (int k = 0; k < 3; k++) {
        device_case c = device_case_open(k);
        float *dev = fx_guarded_alloc(2 * c.n);
        const int64_t scratch_floats = (int64_t)(i3_tvl1_device_scratch_bytes(c.rows, c.cols) / sizeof(float));
        float *scratch = fx_guarded_alloc(scratch_floats);
        cr_assert_eq(i3emu_tvl1(c.ref, c.mov, c.rows, c.cols, &c.p, scratch, dev, NULL), 0,
                     "%s: emulated launch failed", c.name);
        cr_expect(fx_guards_intact(scratch, scratch_floats) && fx_guards_intact(dev, 2 * c.n),
                  "%s: wrote out of bounds", c.name);
        double max_abs = 0.0;
        for (int64_t j = 0; j < 2 * c.n; j++) max_abs = fmax(max_abs, fabs((double)dev[j] - (double)c.cpu[j]));
        printf("tvl1 emulated device vs cpu, %s (%lld x %lld): max abs %.3g px\n", c.name, (long long)c.rows,
               (long long)c.cols, max_abs);
        cr_expect_arr_eq(dev, c.cpu, 2 * (size_t)c.n * sizeof *c.cpu,
                         "%s: device flow differs from the cpu (max %.3g px)", c.name, max_abs);
        fx_guarded_free(scratch);
        fx_guarded_free(dev);
        device_case_close(&c);
    }
}

Test(tvl1, postprocess_vs_skimage) {
    i3_weights *w = fx_open("tvl1", "post_0.safetensors");
    cr_assert(w, "fixture tvl1/post_0.safetensors missing");
    const int64_t d = fx_param_int(w, "d", -1), h = fx_param_int(w, "h", -1), wd = fx_param_int(w, "w", -1);
    const i3_axis axis = (i3_axis)fx_param_int(w, "axis", -1);
    const int64_t index = fx_param_int(w, "index", -1), n = d * h * wd;
    int64_t rows, cols;
    i3_slice_dims(axis, d, h, wd, &rows, &cols);
    const float *pred = tensor(w, "prediction", n), *mask = tensor(w, "mask", rows * cols);
    const float *expect = tensor(w, "expected", n);
    float *vol = malloc((size_t)n * sizeof *vol);
    memcpy(vol, pred, (size_t)n * sizeof *vol);
    cr_assert_eq(i3_snc_postprocess(ctx, vol, d, h, wd, axis, index, mask, fx_param_num(w, "gamma"), NULL), I3RT_OK,
                 "%s", i3rt_context_error(ctx));
    fx_err e = fx_compare("snc post-processing vs skimage", vol, expect, n);
    cr_expect(e.max_abs <= FLOW_MAX_TOL, "post-processing: max abs %.3g > %g", e.max_abs, FLOW_MAX_TOL);
    /* and it did something: the annotated slice moved towards the mask */
    double before = 0.0, after = 0.0;
    const int64_t plane = rows * cols;
    for (int64_t j = 0; j < plane; j++) {
        before += fabs(pred[index * plane + j] - mask[j]);
        after += fabs(vol[index * plane + j] - mask[j]);
    }
    printf("post-processing: sum |slice - mask| %.1f before, %.1f after\n", before, after);
    cr_expect(after < 0.5 * before, "the annotated slice did not move towards the mask (%.1f -> %.1f)", before, after);
    free(vol);
    i3_weights_free(w);
}

/* A smooth test image: a few Gaussian blobs and a gentle ramp, defined at any real position. */
static float smooth_image(double r, double c) {
    return (float)(0.6 * exp(-((r - 30) * (r - 30) + (c - 25) * (c - 25)) / 120.0) +
                   0.4 * exp(-((r - 18) * (r - 18) + (c - 45) * (c - 45)) / 60.0) +
                   0.3 * exp(-((r - 45) * (r - 45) + (c - 48) * (c - 48)) / 90.0) + 0.002 * (r + c));
}

Test(tvl1, identical_images_give_zero_flow) {
    enum { R = 61, C = 70 };
    static float im[R * C], flow[2 * R * C];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) im[r * C + c] = smooth_image(r, c);
    memset(flow, 0x7f, sizeof flow);
    cr_assert_eq(i3_tvl1(ctx, im, im, R, C, NULL, NULL, flow), I3RT_OK);
    for (int i = 0; i < 2 * R * C; i++) cr_assert_eq(flow[i], 0.0f, "flow[%d] = %g for identical images", i, flow[i]);
}

/* moving(r, c) = f(r - dr, c - dc), so reference = f = moving(x + (dr, dc)): the flow is (dr, dc). */
static void check_translation(double dr, double dc, double tol) {
    enum { R = 64, C = 72, MARGIN = 8 };
    static float ref[R * C], mov[R * C], flow[2 * R * C];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) ref[r * C + c] = smooth_image(r, c), mov[r * C + c] = smooth_image(r - dr, c - dc);
    cr_assert_eq(i3_tvl1(ctx, ref, mov, R, C, NULL, NULL, flow), I3RT_OK);
    double sum[2] = {0, 0}, worst = 0;
    int n = 0;
    for (int r = MARGIN; r < R - MARGIN; r++)
        for (int c = MARGIN; c < C - MARGIN; c++, n++)
            for (int k = 0; k < 2; k++) {
                const double v = flow[k * R * C + r * C + c];
                sum[k] += v;
                worst = fmax(worst, fabs(v - (k ? dc : dr)));
            }
    printf("translation (%g, %g): mean flow inside (%.4f, %.4f), worst pixel error %.3f px\n", dr, dc, sum[0] / n,
           sum[1] / n, worst);
    cr_expect(fabs(sum[0] / n - dr) <= tol && fabs(sum[1] / n - dc) <= tol, "translation (%g, %g) recovered as (%g, %g)",
              dr, dc, sum[0] / n, sum[1] / n);
}

Test(tvl1, recovers_translations) {
    check_translation(2.0, -3.0, 0.05);
    check_translation(0.5, 1.25, 0.05);
}

Test(tvl1, warp_with_constant_flow_shifts_and_replicates_edges) {
    enum { R = 5, C = 6 };
    float im[R * C], flow[2 * R * C], out[R * C];
    for (int i = 0; i < R * C; i++) im[i] = (float)(i * i % 17);
    for (int i = 0; i < R * C; i++) flow[i] = 1.0f, flow[R * C + i] = -2.0f;
    i3_warp_bilinear(im, R, C, flow, 1.0f, out);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            const int sr = r + 1 < R ? r + 1 : R - 1, sc = c - 2 > 0 ? c - 2 : 0;
            cr_assert_eq(out[r * C + c], im[sr * C + sc], "(%d, %d)", r, c);
        }
    i3_warp_bilinear(im, R, C, flow, 0.5f, out);  /* half the flow: halfway between rows, one column */
    for (int r = 0; r < R - 1; r++)
        for (int c = 1; c < C; c++)
            cr_assert_float_eq(out[r * C + c], 0.5f * (im[r * C + c - 1] + im[(r + 1) * C + c - 1]), 1e-6f, "(%d, %d)", r, c);
    i3_warp_bilinear(im, R, C, flow, 0.0f, out);
    cr_assert_arr_eq(out, im, sizeof im, "alpha 0 is the identity");
}

Test(tvl1, blend_weights) {
    const float expect[6] = {1.0f, 0.7f, 0.4f, 0.1f, 0.0f, 0.0f};
    for (int k = 0; k < 6; k++) {
        cr_expect_float_eq(i3_snc_blend_weight(0.3, k), expect[k], 1e-6f, "gamma 0.3, k %d", k);
        cr_expect_eq(i3_snc_blend_weight(0.3, -k), i3_snc_blend_weight(0.3, k), "symmetric in k (%d)", k);
        cr_expect_eq(i3_snc_blend_weight(0.0, k), 1.0f, "gamma 0: every slice at full weight (k %d)", k);
        cr_expect_eq(i3_snc_blend_weight(1.0, k), k == 0 ? 1.0f : 0.0f, "gamma 1: the annotated slice only (k %d)", k);
    }
    cr_expect_eq(i3_snc_blend_weight(0.25, 4), 0.0f, "1 - 0.25 * 4 = 0: not changed");
}

/* Which slices the post-processing changes, and by how much: a coronal annotation on a volume whose
 * slices differ; every slice j must equal its own warp with weight max(1 - gamma |j - index|, 0). */
Test(tvl1, postprocess_changes_the_weighted_neighbours_only) {
    enum { D = 20, H = 9, W = 24, INDEX = 4 };
    static float vol[D * H * W], orig[D * H * W], mask[D * W], slice[D * W], warped[D * W], flow[2 * D * W];
    for (int z = 0; z < D; z++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                vol[(z * H + y) * W + x] = (z - 10) * (z - 10) + (x - 12) * (x - 12) < 30 + 4 * y ? 1.0f : 0.0f;
    memcpy(orig, vol, sizeof vol);
    for (int z = 0; z < D; z++)
        for (int x = 0; x < W; x++) mask[z * W + x] = (z - 9) * (z - 9) + (x - 14) * (x - 14) < 40 ? 1.0f : 0.0f;
    const double gamma = 0.4;  /* weights 1, 0.6, 0.2 for |k| = 0, 1, 2 */
    cr_assert_eq(i3_snc_postprocess(ctx, vol, D, H, W, I3_CORONAL, INDEX, mask, gamma, NULL), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    i3_slice_get(orig, sizeof(float), D, H, W, I3_CORONAL, INDEX, slice);
    cr_assert_eq(i3_tvl1(ctx, mask, slice, D, W, NULL, NULL, flow), I3RT_OK);
    for (int y = 0; y < H; y++) {
        const float a = i3_snc_blend_weight(gamma, y - INDEX);
        i3_slice_get(orig, sizeof(float), D, H, W, I3_CORONAL, y, slice);
        i3_warp_bilinear(slice, D, W, flow, a, warped);
        i3_slice_get(vol, sizeof(float), D, H, W, I3_CORONAL, y, slice);
        cr_expect_arr_eq(slice, warped, sizeof slice, "coronal slice %d (weight %g)", y, a);
        if (a == 0.0f) {
            i3_slice_get(orig, sizeof(float), D, H, W, I3_CORONAL, y, warped);
            cr_expect_arr_eq(slice, warped, sizeof slice, "coronal slice %d changed with weight 0", y);
        }
    }
}

/* Threads split every per-pixel step by rows (planes of >= 16384 pixels): the flow must not change. */
Test(tvl1, threads_give_the_same_flow) {
    i3_weights *w = fx_open("tvl1", "flow_0.safetensors");
    cr_assert(w, "fixture tvl1/flow_0.safetensors missing");
    const int64_t rows = fx_param_int(w, "rows", -1), cols = fx_param_int(w, "cols", -1), n = rows * cols;
    cr_assert(n >= 16384, "flow_0 is too small to run threaded");
    const float *ref = tensor(w, "reference", n), *mov = tensor(w, "moving", n);
    float *one = malloc(2 * (size_t)n * sizeof *one), *three = malloc(2 * (size_t)n * sizeof *three);
    i3_ctx *ctx3;
    cr_assert_eq(i3rt_context_create(&ctx3, 3, I3RT_BACKEND_CPU), I3RT_OK);
    cr_assert_eq(i3_tvl1(ctx, ref, mov, rows, cols, NULL, NULL, one), I3RT_OK);
    cr_assert_eq(i3_tvl1(ctx3, ref, mov, rows, cols, NULL, NULL, three), I3RT_OK);
    cr_expect_arr_eq(one, three, 2 * (size_t)n * sizeof *one, "3 threads changed the flow");
    i3rt_context_free(ctx3);
    free(one);
    free(three);
    i3_weights_free(w);
}

Test(tvl1, caller_scratch_same_flow_within_bounds) {
    enum { R = 70, C = 66 };
    static float ref[R * C], mov[R * C], a[2 * R * C], b[2 * R * C];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) ref[r * C + c] = smooth_image(r, c), mov[r * C + c] = smooth_image(r - 1.3, c + 0.7);
    const size_t bytes = i3_tvl1_scratch_bytes(R, C);
    cr_assert(bytes > 0);
    const int64_t floats = (int64_t)((bytes + sizeof(float) - 1) / sizeof(float));
    float *scratch = fx_guarded_alloc(floats);
    cr_assert_eq(i3_tvl1(ctx, ref, mov, R, C, NULL, scratch, a), I3RT_OK);
    cr_expect(fx_guards_intact(scratch, floats), "wrote outside the caller's scratch");
    cr_assert_eq(i3_tvl1(ctx, ref, mov, R, C, NULL, NULL, b), I3RT_OK);
    cr_expect_arr_eq(a, b, sizeof a, "caller scratch and own scratch differ");
    fx_guarded_free(scratch);
    cr_expect_eq(i3_tvl1_scratch_bytes(0, 5), 0);
    cr_expect_eq(i3_tvl1_scratch_bytes(INT64_MAX / 2, 4), 0, "overflow is 0, not a wrapped size");
}

#define EXPECT_FAIL(call, status, text)                                                                         \
    do {                                                                                                       \
        cr_expect_eq((call), status, "%s: status", #call);                                                     \
        cr_expect(strstr(i3rt_context_error(ctx), text), "%s: message '%s' lacks '%s'", #call,                 \
                  i3rt_context_error(ctx), text);                                                              \
    } while (0)

Test(tvl1, bad_input) {
    enum { R = 12, C = 10 };
    float im[R * C], other[R * C], flow[2 * R * C], sentinel[2 * R * C];
    for (int i = 0; i < R * C; i++) im[i] = other[i] = (float)(i % 7) / 7.0f;
    memset(flow, 0x5a, sizeof flow);
    memcpy(sentinel, flow, sizeof flow);
    EXPECT_FAIL(i3_tvl1(ctx, im, other, 1, C, NULL, NULL, flow), I3RT_ERR_SHAPE, "1 x 10");
    EXPECT_FAIL(i3_tvl1(ctx, im, other, R, 0, NULL, NULL, flow), I3RT_ERR_SHAPE, "12 x 0");
    other[3 * C + 4] = NAN;
    EXPECT_FAIL(i3_tvl1(ctx, im, other, R, C, NULL, NULL, flow), I3RT_ERR_INVALID_ARGUMENT, "moving image pixel (3, 4)");
    other[3 * C + 4] = 0.0f;
    im[R * C - 1] = INFINITY;
    EXPECT_FAIL(i3_tvl1(ctx, im, other, R, C, NULL, NULL, flow), I3RT_ERR_INVALID_ARGUMENT, "reference image pixel (11, 9)");
    im[R * C - 1] = 0.0f;
    i3_tvl1_params p = I3_TVL1_DEFAULTS;
    p.attachment = 0.0;
    EXPECT_FAIL(i3_tvl1(ctx, im, other, R, C, &p, NULL, flow), I3RT_ERR_INVALID_ARGUMENT, "attachment 0");
    p = I3_TVL1_DEFAULTS, p.num_warp = 0;
    EXPECT_FAIL(i3_tvl1(ctx, im, other, R, C, &p, NULL, flow), I3RT_ERR_INVALID_ARGUMENT, "num_warp 0");
    p = I3_TVL1_DEFAULTS, p.tol = NAN;
    EXPECT_FAIL(i3_tvl1(ctx, im, other, R, C, &p, NULL, flow), I3RT_ERR_INVALID_ARGUMENT, "tol nan");
    EXPECT_FAIL(i3_tvl1(ctx, im, NULL, R, C, NULL, NULL, flow), I3RT_ERR_INVALID_ARGUMENT, "NULL");
    cr_expect_arr_eq(flow, sentinel, sizeof flow, "a failed call wrote the flow");

    enum { D = 4 };
    float vol[D * R * C], vol_before[D * R * C];
    for (int i = 0; i < D * R * C; i++) vol[i] = (float)(i % 5) / 4.0f;
    memcpy(vol_before, vol, sizeof vol);
    EXPECT_FAIL(i3_snc_postprocess(ctx, vol, D, R, C, (i3_axis)3, 0, im, 0.5, NULL), I3RT_ERR_INVALID_ARGUMENT, "axis 3");
    EXPECT_FAIL(i3_snc_postprocess(ctx, vol, D, R, C, I3_AXIAL, D, im, 0.5, NULL), I3RT_ERR_INVALID_ARGUMENT,
                "axial slice 4 outside [0, 4)");
    EXPECT_FAIL(i3_snc_postprocess(ctx, vol, D, R, C, I3_SAGITTAL, -1, im, 0.5, NULL), I3RT_ERR_INVALID_ARGUMENT,
                "sagittal slice -1");
    EXPECT_FAIL(i3_snc_postprocess(ctx, vol, D, R, C, I3_AXIAL, 1, im, 1.5, NULL), I3RT_ERR_INVALID_ARGUMENT, "gamma 1.5");
    EXPECT_FAIL(i3_snc_postprocess(ctx, vol, 0, R, C, I3_AXIAL, 0, im, 0.5, NULL), I3RT_ERR_SHAPE, "empty");
    vol[2 * R * C + 5] = NAN;
    EXPECT_FAIL(i3_snc_postprocess(ctx, vol, D, R, C, I3_AXIAL, 1, im, 0.5, NULL), I3RT_ERR_INVALID_ARGUMENT,
                "prediction voxel");
    vol[2 * R * C + 5] = vol_before[2 * R * C + 5];
    im[7] = NAN;
    EXPECT_FAIL(i3_snc_postprocess(ctx, vol, D, R, C, I3_AXIAL, 1, im, 0.5, NULL), I3RT_ERR_INVALID_ARGUMENT,
                "reference image pixel (0, 7)");
    cr_expect_arr_eq(vol, vol_before, sizeof vol, "a failed post-processing changed the prediction");
}
