/* Tests of the i3Deep stages (runtime/i3deep.c, slice_select.c, png_export.c, ops/prob_uncertainty.c),
 * all with answers known by construction:
 *   - entropy of hand-made probabilities (uniform -> 1, one-hot -> 0, p = 0.25/0.75 -> 0.811278,
 *     (0.5, 0.5, 0) -> log 2 / log 3), max probability and argmax ties; the streaming ensemble mean
 *     against the plain mean of T softmax volumes computed in double (max abs error <= 1e-6);
 *   - slice acquisition on synthetic sums and volumes where the right slices are known: the radius
 *     round(min_dist * len), min_dist suppression, plateaus, the min_uncert cut at its boundary, the
 *     max_slices cap, ties across axes, all three axes of an asymmetric volume;
 *   - corrections written back at the right positions and orientation (asymmetric 4 x 5 x 6 volume,
 *     every pixel of a slice distinct), the refinement input built from them;
 *   - label PNGs as other tools write them (palette, 4-bit, grey + alpha), a truncated PNG;
 *   - PNG and NIfTI round trips through export and submit, the PNG's row order (last slice row on
 *     top), the slice NIfTI's world position;
 *   - the folds of the brain model in weights/ as members: the case's mean equals the folds' separate
 *     predictions averaged here; a missing fold fails and leaves the case unchanged;
 *   - refinement: the refinement model in weights/ on submitted ground-truth slices of an unseen case
 *     against nnUNetPredictor (tests/gen_i3deep.py); a failed refine keeps the previous result; the
 *     saved segmentation; the simulated expert from a truth file;
 *   - bad corrections (wrong shape, index out of range, labels outside the classes, RGB or non-PNG
 *     files, non-integer NIfTI labels, nameless files): an error naming the source, the case unchanged. */
#include "i3deep.h"
#include "ops.h"
#include "png_export.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fixtures.h"

static i3_ctx *ctx;
static char tmpdir[256];

static void setup(void) {
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    fx_temp_dir(tmpdir, sizeof tmpdir, "i3deep");
}

static void teardown(void) {
    fx_remove_dir(tmpdir);
    i3rt_context_free(ctx);
}

TestSuite(i3deep, .init = setup, .fini = teardown);

static const char *temp(const char *name) { return fx_path(tmpdir, name); }

/* Expects call to fail with status, its message to contain `names`, and the case's corrections and
 * members unchanged. */
#define EXPECT_REFUSED(c, call, status, names)                                                             \
    do {                                                                                                   \
        const i3_volume *im_ = i3_case_image(c);                                                           \
        const size_t bytes_ = (size_t)(im_->d * im_->h * im_->w) * sizeof(int32_t);                       \
        int32_t *before_ = malloc(bytes_);                                                                 \
        int n_before_, n_after_;                                                                           \
        const int members_ = i3_case_members(c);                                                           \
        memcpy(before_, i3_case_corrections(c), bytes_);                                                   \
        i3_case_corrected_slices(c, &n_before_);                                                           \
        cr_expect_eq((call), status, "%s", #call);                                                         \
        printf("refused: %s\n", i3rt_context_error(ctx));                                                 \
        cr_expect(strstr(i3rt_context_error(ctx), names), "message \"%s\" does not name %s",               \
                  i3rt_context_error(ctx), names);                                                         \
        i3_case_corrected_slices(c, &n_after_);                                                            \
        cr_expect(memcmp(before_, i3_case_corrections(c), bytes_) == 0 && n_before_ == n_after_ &&         \
                      members_ == i3_case_members(c),                                                      \
                  "the case changed");                                                                     \
        free(before_);                                                                                     \
    } while (0)

/* ---- entropy ------------------------------------------------------------------------------------ */

/* Probabilities of one voxel per column: [c, s] with s voxels. */
static void check_entropy(const float *probs, int64_t c, int64_t s, const double *want_h, const float *want_msp,
                          const int32_t *want_arg) {
    float h[8], msp[8];
    int32_t arg[8];
    i3_cpu_prob_uncertainty(probs, 1, c, s, h, msp, arg, 1);
    for (int64_t v = 0; v < s; v++) {
        printf("entropy C=%lld voxel %lld: %.7f (want %.7f), msp %.4f, argmax %d\n", (long long)c, (long long)v, h[v],
               want_h[v], msp[v], arg[v]);
        cr_expect(fabs(h[v] - want_h[v]) <= 1e-6, "voxel %lld: entropy %.8f, want %.8f", (long long)v, h[v], want_h[v]);
        cr_expect_eq(msp[v], want_msp[v]);
        cr_expect_eq(arg[v], want_arg[v]);
    }
}

Test(i3deep, entropy_of_hand_made_probabilities) {
    /* C = 2, four voxels: (0.5, 0.5), (1, 0), (0, 1), (0.25, 0.75). Ties go to the lower class. */
    const float two[2 * 4] = {0.5f, 1.0f, 0.0f, 0.25f, /* class 1: */ 0.5f, 0.0f, 1.0f, 0.75f};
    const double h2[4] = {1.0, 0.0, 0.0, -(0.25 * log(0.25) + 0.75 * log(0.75)) / log(2.0)};
    check_entropy(two, 2, 4, h2, (const float[]){0.5f, 1.0f, 1.0f, 0.75f}, (const int32_t[]){0, 0, 1, 1});
    /* C = 3: uniform, one-hot on class 2, (0.5, 0.5, 0). */
    const float third = 1.0f / 3.0f;
    const float three[3 * 3] = {third, 0.0f, 0.5f, third, 0.0f, 0.5f, third, 1.0f, 0.0f};
    const double h3[3] = {1.0, 0.0, log(2.0) / log(3.0)};
    check_entropy(three, 3, 3, h3, (const float[]){third, 1.0f, 0.5f}, (const int32_t[]){0, 2, 0});
}

Test(i3deep, ensemble_mean_of_two_confident_members_that_disagree_is_uncertain) {
    /* Each member alone is sure (entropy ~ 0); their mean is 0.5 / 0.5 (entropy 1): Eq. 1-2 measure the
     * members' disagreement, which is why the mean is taken before the entropy. */
    const float a[2] = {20.0f, -20.0f}, b[2] = {-20.0f, 20.0f};
    float mean[2], h;
    i3_cpu_softmax_mean_accumulate(a, 1, 2, 1, 1, mean, 1);
    i3_cpu_prob_uncertainty(mean, 1, 2, 1, &h, NULL, NULL, 1);
    printf("one member: entropy %.3g\n", h);
    cr_expect(h < 1e-6f);
    i3_cpu_softmax_mean_accumulate(b, 1, 2, 1, 2, mean, 1);
    i3_cpu_prob_uncertainty(mean, 1, 2, 1, &h, NULL, NULL, 1);
    printf("two members: mean (%.6f, %.6f), entropy %.7f\n", mean[0], mean[1], h);
    cr_expect(fabs(h - 1.0) <= 1e-6);
}

Test(i3deep, streaming_mean_equals_plain_mean_of_member_softmaxes) {
    /* T = 4 members of random logits, C = 3 classes, 5 x 6 x 7 voxels, through the case API, against
     * the mean of softmaxes and its entropy computed here in double. */
    enum { T = 4, C = 3, D = 5, H = 6, W = 7, S = D * H * W };
    float image_data[S] = {0};
    i3_volume image = {.channels = 1, .d = D, .h = H, .w = W, .data = image_data};
    i3_case *c;
    cr_assert_eq(i3_case_open(ctx, &image, C, &c), I3RT_OK);
    static float logits[T][C * S];
    static double want[C * S];
    uint64_t state = 12345;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < C * S; i++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            logits[t][i] = (float)((double)(state >> 11) / 9007199254740992.0 * 12.0 - 6.0);
        }
        for (int v = 0; v < S; v++) {
            double z = 0.0;
            for (int k = 0; k < C; k++) z += exp(logits[t][k * S + v]);
            for (int k = 0; k < C; k++) want[k * S + v] += exp(logits[t][k * S + v]) / z / T;
        }
        cr_assert_eq(i3_case_add_logits(c, logits[t]), I3RT_OK, "%s", i3rt_context_error(ctx));
    }
    cr_assert_eq(i3_case_compute_uncertainty(c), I3RT_OK);
    const float *mean = i3_case_mean_probabilities(c), *h = i3_case_entropy(c);
    const int32_t *seg = i3_case_presegmentation(c);
    double err_p = 0.0, err_h = 0.0;
    for (int v = 0; v < S; v++) {
        double hv = 0.0;
        int best = 0;
        for (int k = 0; k < C; k++) {
            err_p = fmax(err_p, fabs(mean[k * S + v] - want[k * S + v]));
            hv -= want[k * S + v] * log(want[k * S + v]);
            if (want[k * S + v] > want[best * S + v]) best = k;
        }
        err_h = fmax(err_h, fabs(h[v] - hv / log(C)));
        cr_expect_eq(seg[v], best, "voxel %d: pre-segmentation %d, want %d", v, seg[v], best);
    }
    printf("streaming mean of %d members: max abs error %.3g (probabilities), %.3g (entropy); tolerance 1e-6\n", T,
           err_p, err_h);
    cr_expect(err_p <= 1e-6 && err_h <= 1e-6);
    cr_expect_eq(i3_case_members(c), T);
    i3_case_free(c);
}

Test(i3deep, one_member_matches_the_fused_softmax_op_over_many_blocks) {
    /* T = 1: mean = softmax. n = 2 samples, C = 5, s = 1000 voxels (several 256-voxel blocks and a partial
     * one), 2 threads, against i3_cpu_softmax_uncertainty (the fused op on logits, its own tests vs PyTorch). */
    enum { N = 2, C = 5, S = 1000 };
    static float logits[N * C * S], mean[N * C * S], probs[N * C * S], h[N * S], h_ref[N * S], msp[N * S], msp_ref[N * S];
    static int32_t arg[N * S], arg_ref[N * S];
    uint64_t state = 99;
    for (int i = 0; i < N * C * S; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        logits[i] = (float)((double)(state >> 11) / 9007199254740992.0 * 16.0 - 8.0);
    }
    i3_cpu_softmax_mean_accumulate(logits, N, C, S, 1, mean, 2);
    i3_cpu_prob_uncertainty(mean, N, C, S, h, msp, arg, 2);
    i3_cpu_softmax_uncertainty(logits, N, C, S, probs, h_ref, msp_ref, arg_ref, 2);
    double err_p = 0.0, err_h = 0.0, err_m = 0.0;
    int arg_diff = 0;
    for (int i = 0; i < N * C * S; i++) err_p = fmax(err_p, fabs(mean[i] - probs[i]));
    for (int i = 0; i < N * S; i++) {
        err_h = fmax(err_h, fabs(h[i] - h_ref[i]));
        err_m = fmax(err_m, fabs(msp[i] - msp_ref[i]));
        arg_diff += arg[i] != arg_ref[i];
    }
    printf("one member vs fused softmax op: max abs error %.3g (probabilities), %.3g (entropy), %.3g (msp), %d argmax "
           "differences; tolerance 1e-6\n", err_p, err_h, err_m, arg_diff);
    cr_expect(err_p <= 1e-6 && err_h <= 1e-6 && err_m <= 1e-6);
    cr_expect_eq(arg_diff, 0);
}

Test(i3deep, probabilities_that_are_not_a_distribution_are_refused) {
    float image_data[2] = {0};
    i3_volume image = {.channels = 1, .d = 1, .h = 1, .w = 2, .data = image_data};
    i3_case *c;
    cr_assert_eq(i3_case_open(ctx, &image, 2, &c), I3RT_OK);
    const float bad_sum[4] = {0.5f, 0.2f, 0.5f, 0.2f}, negative[4] = {1.5f, 0.0f, -0.5f, 1.0f};
    cr_expect_eq(i3_case_add_probabilities(c, bad_sum), I3RT_ERR_INVALID_ARGUMENT);
    printf("%s\n", i3rt_context_error(ctx));
    cr_expect_eq(i3_case_add_probabilities(c, negative), I3RT_ERR_INVALID_ARGUMENT);
    printf("%s\n", i3rt_context_error(ctx));
    cr_expect_eq(i3_case_members(c), 0);
    cr_expect_eq(i3_case_compute_uncertainty(c), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3_case_recommend(c, NULL), I3RT_ERR_INVALID_ARGUMENT);
    printf("%s\n", i3rt_context_error(ctx));
    i3_case_free(c);
}

static const char *model_path(const char *name) {
    static char p[1024];
    const char *root = getenv("I3RT_SOURCE_DIR");
    snprintf(p, sizeof p, "%s/weights/%s", root ? root : ".", name);
    return p;
}

/* A small T1-like volume for the models in weights/: a textured sphere on a 3 mm grid whose origin is
 * origin (x, y, z, mm). data holds SPHERE_D x SPHERE_H x SPHERE_W voxels. */
enum { SPHERE_D = 20, SPHERE_H = 24, SPHERE_W = 20 };
static i3_volume t1_like_sphere(float *data, const double o[3]) {
    enum { D = SPHERE_D, H = SPHERE_H, W = SPHERE_W };
    for (int z = 0; z < D; z++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const double r = hypot(hypot(z - D / 2.0, y - H / 2.0), x - W / 2.0);
                data[(z * H + y) * W + x] = r < 8 ? (float)(60.0 + 40.0 * cos(r)) : 0.0f;
            }
    i3_volume image = {.channels = 1, .d = D, .h = H, .w = W, .data = data};
    image.geometry = (i3_volume_geometry){.size = {W, H, D}, .spacing = {3, 3, 3}, .xyz_units = 2, .qfac = 1,
                                          .sform_code = 1, .srow = {{3, 0, 0, o[0]}, {0, 3, 0, o[1]}, {0, 0, 3, o[2]}},
                                          .affine = {{3, 0, 0, o[0]}, {0, 3, 0, o[1]}, {0, 0, 3, o[2]}, {0, 0, 0, 1}}};
    return image;
}

Test(i3deep, model_folds_are_members_and_a_failing_fold_changes_nothing) {
    /* The brain model in weights/ (2 folds): the case's mean must equal the mean of the two folds'
     * probabilities predicted separately here (tolerance 1e-6); folds {0, 7} (no fold 7) must fail
     * naming it and leave the case without members. A small T1-like volume, no mirroring (speed). */
    const char *model = model_path("brain_3d_fullres");
    if (access(model, F_OK) != 0) cr_skip("%s is not there", model);
    enum { D = SPHERE_D, H = SPHERE_H, W = SPHERE_W, S = D * H * W };
    static float data[S];
    const i3_volume image = t1_like_sphere(data, (const double[3]){0, 0, 0});
    i3_predict_options o;
    i3_predict_options_default(&o);
    o.use_mirroring = 0;
    i3_case *c;
    cr_assert_eq(i3_case_open(ctx, &image, 4, &c), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_add_model_members(c, model, (const int[]){0, 7}, 2, &o), I3RT_ERR_IO, "fold_7");
    cr_assert_eq(i3_case_add_model_members(c, model, NULL, 0, &o), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_expect_eq(i3_case_members(c), 2);
    static float probs[2][4 * S];
    static int32_t labels[S];
    for (int f = 0; f < 2; f++) {
        i3_predictor *p;
        cr_assert_eq(i3_predictor_load(ctx, model, &f, 1, &p), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(i3_predict_case(p, &image, &o, labels, probs[f]), I3RT_OK, "%s", i3rt_context_error(ctx));
        i3_predictor_free(p);
    }
    const float *mean = i3_case_mean_probabilities(c);
    double err = 0.0, spread = 0.0;
    for (int i = 0; i < 4 * S; i++) {
        err = fmax(err, fabs(mean[i] - 0.5 * ((double)probs[0][i] + probs[1][i])));
        spread = fmax(spread, fabs((double)probs[0][i] - probs[1][i]));
    }
    printf("two folds as members: max abs error of the mean %.3g (tolerance 1e-6); folds differ by up to %.3g\n", err,
           spread);
    cr_expect(err <= 1e-6);
    cr_expect_gt(spread, 1e-3, "the two folds should not be the same network");
    i3_case_free(c);
}

/* ---- slice acquisition -------------------------------------------------------------------------- */

/* Runs the acquisition on three axes of sums and returns how many were chosen. */
static int select_sums(const double *a, int64_t na, const double *b, int64_t nb, const double *s, int64_t ns,
                       i3_slice_select_params p, i3_slice *out) {
    const double *sums[3] = {a, b, s};
    const int64_t len[3] = {na, nb, ns};
    int n = -1;
    cr_assert_eq(i3_slice_select_from_sums(ctx, sums, len, &p, out, &n), I3RT_OK, "%s", i3rt_context_error(ctx));
    for (int i = 0; i < n; i++)
        printf("  %d: %s %lld sum %g relative %.3f\n", i, i3_axis_name(out[i].axis), (long long)out[i].index,
               out[i].sum, out[i].relative);
    return n;
}

static void expect_slice(const i3_slice *s, i3_axis axis, int64_t index) {
    cr_expect(s->axis == axis && s->index == index, "got %s %lld, want %s %lld", i3_axis_name(s->axis),
              (long long)s->index, i3_axis_name(axis), (long long)index);
}

Test(i3deep, min_dist_radius_is_rounded_fraction_of_the_axis) {
    cr_expect_eq(i3_slice_min_dist_radius(0.0234, 1280), 30);  /* the authors' 30 slices of 1280 */
    cr_expect_eq(i3_slice_min_dist_radius(0.0234, 100), 2);
    cr_expect_eq(i3_slice_min_dist_radius(0.0234, 64), 1);     /* 1.4976 */
    cr_expect_eq(i3_slice_min_dist_radius(0.0234, 21), 0);     /* 0.4914: every slice its own window */
    cr_expect_eq(i3_slice_min_dist_radius(0.25, 10), 3);       /* 2.5 rounds away from zero */
}

Test(i3deep, min_dist_keeps_only_local_maxima) {
    /* 100 slices, radius 2: peaks 10 (5.0) and 11 (4.0) are 1 apart -> 11 is suppressed; 20 (5.0) and
     * 23 (4.5) are 3 apart -> both stay; 40 (3.0) has a 3.5 neighbour at distance 2 -> suppressed;
     * 60 (2.0) and 62 (2.0) tie at distance 2 -> the lower index stays. */
    double a[100] = {0}, zero[10] = {0};
    a[10] = 5.0, a[11] = 4.0, a[20] = 5.0, a[23] = 4.5, a[40] = 3.0, a[42] = 3.5, a[60] = 2.0, a[62] = 2.0;
    i3_slice out[12];
    int n = select_sums(a, 100, zero, 10, zero, 10, (i3_slice_select_params){0.0234, 0.0, 12}, out);
    cr_assert_eq(n, 5);
    expect_slice(&out[0], I3_AXIAL, 10);
    expect_slice(&out[1], I3_AXIAL, 20);
    expect_slice(&out[2], I3_AXIAL, 23);
    expect_slice(&out[3], I3_AXIAL, 42);
    expect_slice(&out[4], I3_AXIAL, 60);
    /* min_dist 0: every slice with uncertainty is its own maximum. */
    n = select_sums(a, 100, zero, 10, zero, 10, (i3_slice_select_params){0.0, 0.0, 12}, out);
    cr_expect_eq(n, 8);
}

Test(i3deep, plateau_yields_its_first_slice) {
    /* A plateau of equal sums over slices 5..14 (radius 2): only slice 5 outranks all its neighbours. */
    double a[30] = {0}, zero[4] = {0};
    for (int i = 5; i < 15; i++) a[i] = 1.0;
    i3_slice out[12];
    int n = select_sums(a, 30, zero, 4, zero, 4, (i3_slice_select_params){2.0 / 30.0, 0.0, 12}, out);
    cr_assert_eq(n, 1);
    expect_slice(&out[0], I3_AXIAL, 5);
}

Test(i3deep, min_uncert_is_relative_to_the_axis_maximum) {
    /* Axial maximum 10 at slice 2: with min_uncert 0.1, slice 8 (1.0 = exactly 0.1 x 10) stays and slice
     * 14 (0.99) goes. Coronal maximum is 0.5: its slice 3 (0.5) stays, relative 1, though its sum is
     * below every axial one - the cut is per axis, the ranking over all axes. */
    double a[20] = {0}, b[10] = {0}, zero[5] = {0};
    a[2] = 10.0, a[8] = 1.0, a[14] = 0.99, b[3] = 0.5;
    i3_slice out[12];
    int n = select_sums(a, 20, b, 10, zero, 5, (i3_slice_select_params){0.0, 0.1, 12}, out);
    cr_assert_eq(n, 3);
    expect_slice(&out[0], I3_AXIAL, 2);
    expect_slice(&out[1], I3_AXIAL, 8);
    expect_slice(&out[2], I3_CORONAL, 3);
    cr_expect_eq(out[1].relative, 0.1);
    cr_expect_eq(out[2].relative, 1.0);
    /* An axis without uncertainty contributes nothing, even with min_uncert 0. */
    n = select_sums(zero, 5, zero, 5, zero, 5, (i3_slice_select_params){0.0, 0.0, 12}, out);
    cr_expect_eq(n, 0);
}

Test(i3deep, max_slices_keeps_the_most_uncertain_over_all_axes_with_ties_in_axis_order) {
    /* Every axis has isolated peaks; sums 9 (sagittal 1), 8 (axial 3), 7 (coronal 5), then 6 on all
     * three axes (axial 9, coronal 9, sagittal 9), then 1s. max_slices 5: 9, 8, 7, then the 6s in axis
     * order axial, coronal. */
    double a[12] = {0}, b[12] = {0}, s[12] = {0};
    s[1] = 9.0, a[3] = 8.0, b[5] = 7.0, a[9] = b[9] = s[9] = 6.0, a[6] = b[1] = s[5] = 1.0;
    i3_slice out[5];
    int n = select_sums(a, 12, b, 12, s, 12, (i3_slice_select_params){0.0, 0.0, 5}, out);
    cr_assert_eq(n, 5);
    expect_slice(&out[0], I3_SAGITTAL, 1);
    expect_slice(&out[1], I3_AXIAL, 3);
    expect_slice(&out[2], I3_CORONAL, 5);
    expect_slice(&out[3], I3_AXIAL, 9);
    expect_slice(&out[4], I3_CORONAL, 9);
}

Test(i3deep, all_three_axes_of_an_asymmetric_uncertainty_volume) {
    /* 20 x 30 x 40 (d, h, w) zeros with uncertainty 1 at (z 5, y 7, x 31) and 0.5 at (z 15, y 20, x 3):
     * the axial, coronal and sagittal slices through each voxel, 1s first in axis order. */
    enum { D = 20, H = 30, W = 40 };
    static float u[D * H * W];
    u[(5 * H + 7) * W + 31] = 1.0f;
    u[(15 * H + 20) * W + 3] = 0.5f;
    i3_slice out[12];
    int n;
    i3_slice_select_params p = I3_SLICE_SELECT_DEFAULTS;
    cr_assert_eq(i3_slice_select(ctx, u, D, H, W, &p, out, &n), I3RT_OK);
    cr_assert_eq(n, 6);
    const struct { i3_axis axis; int64_t index; } want[6] = {{I3_AXIAL, 5},  {I3_CORONAL, 7},  {I3_SAGITTAL, 31},
                                                             {I3_AXIAL, 15}, {I3_CORONAL, 20}, {I3_SAGITTAL, 3}};
    for (int i = 0; i < 6; i++) expect_slice(&out[i], want[i].axis, want[i].index);
    p.max_slices = 4;
    cr_assert_eq(i3_slice_select(ctx, u, D, H, W, &p, out, &n), I3RT_OK);
    cr_expect_eq(n, 4);
    expect_slice(&out[3], I3_AXIAL, 15);
    p = (i3_slice_select_params){0.0234, 0.6, 12};
    cr_assert_eq(i3_slice_select(ctx, u, D, H, W, &p, out, &n), I3RT_OK);
    cr_expect_eq(n, 3);
}

Test(i3deep, bad_selection_parameters_are_refused) {
    double a[4] = {1, 0, 0, 0}, nan_sums[4] = {1, NAN, 0, 0};
    const double *sums[3] = {a, a, a}, *bad[3] = {a, nan_sums, a};
    const int64_t len[3] = {4, 4, 4};
    i3_slice out[12];
    int n;
    cr_expect_eq(i3_slice_select_from_sums(ctx, sums, len, &(i3_slice_select_params){1.5, 0.1, 12}, out, &n),
                 I3RT_ERR_INVALID_ARGUMENT);
    printf("%s\n", i3rt_context_error(ctx));
    cr_expect_eq(i3_slice_select_from_sums(ctx, sums, len, &(i3_slice_select_params){0.02, -0.1, 12}, out, &n),
                 I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3_slice_select_from_sums(ctx, sums, len, &(i3_slice_select_params){0.02, 0.1, 0}, out, &n),
                 I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3_slice_select_from_sums(ctx, bad, len, &(i3_slice_select_params){0.02, 0.1, 12}, out, &n),
                 I3RT_ERR_INVALID_ARGUMENT);
    printf("%s\n", i3rt_context_error(ctx));
    cr_expect(strstr(i3rt_context_error(ctx), "coronal slice 1"));
}

/* ---- corrections -------------------------------------------------------------------------------- */

enum { CD = 4, CH = 5, CW = 6, CS = CD * CH * CW, CLASSES = 40 };

/* A case on a 4 x 5 x 6 volume (image value = voxel index, two channels) with one member whose
 * pre-segmentation is (z + y + x) % 3, sure of itself (entropy ~ 1e-11) except at voxel (z 1, y 3, x 4),
 * where all classes are equally likely (entropy 1): the slices to correct are axial 1, coronal 3 and
 * sagittal 4. */
static i3_case *small_case(void) {
    static float image_data[2 * CS];
    for (int i = 0; i < 2 * CS; i++) image_data[i] = (float)i;
    i3_volume image = {.channels = 2, .d = CD, .h = CH, .w = CW, .data = image_data};
    image.geometry = (i3_volume_geometry){.size = {CW, CH, CD}, .spacing = {0.5, 0.75, 2.0}, .xyz_units = 2,
                                          .qform_code = 1, .qoffset = {10, 20, 30}, .qfac = 1, .sform_code = 1,
                                          .srow = {{0.5, 0, 0, 10}, {0, 0.75, 0, 20}, {0, 0, 2.0, 30}},
                                          .affine = {{0.5, 0, 0, 10}, {0, 0.75, 0, 20}, {0, 0, 2.0, 30}, {0, 0, 0, 1}}};
    i3_case *c;
    cr_assert_eq(i3_case_open(ctx, &image, CLASSES, &c), I3RT_OK, "%s", i3rt_context_error(ctx));
    static float logits[CLASSES * CS];
    for (int z = 0; z < CD; z++)
        for (int y = 0; y < CH; y++)
            for (int x = 0; x < CW; x++)
                for (int k = 0; k < CLASSES; k++)
                    logits[k * CS + (z * CH + y) * CW + x] =
                        k == (z + y + x) % 3 && !(z == 1 && y == 3 && x == 4) ? 30.0f : 0.0f;
    cr_assert_eq(i3_case_add_logits(c, logits), I3RT_OK);
    cr_assert_eq(i3_case_compute_uncertainty(c), I3RT_OK);
    return c;
}

/* Every pixel of a slice distinct: label = row * cols + col (< 30 < CLASSES). */
static void numbered_plane(int64_t rows, int64_t cols, int32_t *plane) {
    for (int64_t i = 0; i < rows * cols; i++) plane[i] = (int32_t)i;
}

Test(i3deep, corrections_land_at_their_positions_and_orientation) {
    i3_case *c = small_case();
    int32_t axial[CH * CW], coronal[CD * CW], sagittal[CD * CH];
    numbered_plane(CH, CW, axial);
    numbered_plane(CD, CW, coronal);
    numbered_plane(CD, CH, sagittal);
    cr_assert_eq(i3_case_submit(c, I3_AXIAL, 1, axial, CH, CW, "axial"), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_case_submit(c, I3_CORONAL, 3, coronal, CD, CW, "coronal"), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_case_submit(c, I3_SAGITTAL, 4, sagittal, CD, CH, "sagittal"), I3RT_OK, "%s", i3rt_context_error(ctx));
    /* Expected volume from the definitions (later submissions win where slices cross). */
    const int32_t *got = i3_case_corrections(c);
    int wrong = 0;
    for (int z = 0; z < CD; z++)
        for (int y = 0; y < CH; y++)
            for (int x = 0; x < CW; x++) {
                int32_t want = -1;
                if (z == 1) want = y * CW + x;
                if (y == 3) want = z * CW + x;
                if (x == 4) want = z * CH + y;
                wrong += got[(z * CH + y) * CW + x] != want;
            }
    printf("corrections on a %d x %d x %d volume: %d wrong voxels\n", CD, CH, CW, wrong);
    cr_expect_eq(wrong, 0);
    int n;
    const i3_slice *done = i3_case_corrected_slices(c, &n);
    cr_expect_eq(n, 3);
    cr_expect(done[2].axis == I3_SAGITTAL && done[2].index == 4);
    /* Refinement input: the two image channels as they were, then labels or `unannotated`. */
    float *x;
    cr_assert_eq(i3_case_refinement_input(c, -1.0f, &x), I3RT_OK);
    int bad = 0;
    for (int i = 0; i < 2 * CS; i++) bad += x[i] != (float)i;
    for (int i = 0; i < CS; i++) bad += x[2 * CS + i] != (got[i] >= 0 ? (float)got[i] : -1.0f);
    cr_expect_eq(bad, 0);
    cr_expect_eq(x[2 * CS + (1 * CH + 2) * CW + 5], (float)(2 * CW + 5));  /* axial 1, row y 2, column x 5 */
    cr_expect_eq(x[2 * CS + (3 * CH + 1) * CW + 4], (float)(3 * CH + 1));  /* sagittal 4 wins over nothing */
    cr_expect_eq(x[2 * CS + 0], -1.0f);
    free(x);
    for (int s = 0; s < I3_STAGE_COUNT; s++) printf("stage %-12s %.6f s\n", i3_stage_name(s), i3_case_stage_seconds(c, s));
    i3_case_free(c);
}

Test(i3deep, simulated_expert_copies_the_ground_truth_slices) {
    i3_case *c = small_case();
    cr_assert_eq(i3_case_recommend(c, NULL), I3RT_OK, "%s", i3rt_context_error(ctx));
    int n;
    const i3_slice *s = i3_case_slices(c, &n);
    cr_assert_eq(n, 3);
    expect_slice(&s[0], I3_AXIAL, 1);
    expect_slice(&s[1], I3_CORONAL, 3);
    expect_slice(&s[2], I3_SAGITTAL, 4);
    int32_t truth[CS];
    for (int i = 0; i < CS; i++) truth[i] = (i * 7) % CLASSES;
    cr_assert_eq(i3_case_simulate_expert(c, truth, "truth"), I3RT_OK, "%s", i3rt_context_error(ctx));
    const int32_t *got = i3_case_corrections(c);
    int wrong = 0, annotated = 0;
    for (int z = 0; z < CD; z++)
        for (int y = 0; y < CH; y++)
            for (int x = 0; x < CW; x++) {
                int on = 0;
                for (int k = 0; k < n; k++) {
                    const int64_t at[3] = {z, y, x};
                    on |= at[s[k].axis] == s[k].index;
                }
                const int v = (z * CH + y) * CW + x;
                wrong += got[v] != (on ? truth[v] : -1);
                annotated += on;
            }
    printf("simulated expert: %d slices, %d voxels annotated, %d wrong\n", n, annotated, wrong);
    cr_expect_eq(wrong, 0);
    cr_expect_gt(annotated, 0);
    i3_case_free(c);
}

Test(i3deep, png_labels_round_trip) {
    int32_t small[3 * 4] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255}, wide[2 * 2] = {0, 300, 65535, 7};
    int32_t *back;
    int64_t rows, cols;
    cr_assert_eq(i3_png_write_labels(ctx, temp("small.png"), small, 3, 4), I3RT_OK);
    cr_assert_eq(i3_png_read_labels(ctx, temp("small.png"), &back, &rows, &cols), I3RT_OK);
    cr_expect(rows == 3 && cols == 4 && memcmp(back, small, sizeof small) == 0);
    free(back);
    cr_assert_eq(i3_png_write_labels(ctx, temp("wide.png"), wide, 2, 2), I3RT_OK);  /* 16-bit */
    cr_assert_eq(i3_png_read_labels(ctx, temp("wide.png"), &back, &rows, &cols), I3RT_OK);
    cr_expect(rows == 2 && cols == 2 && memcmp(back, wide, sizeof wide) == 0);
    free(back);
}

/* A PNG as other tools write label images: palette (index = class), low bit depths, grey + alpha.
 * values: one byte per pixel (the sample value); libpng packs them to bit_depth. */
static void write_tool_png(const char *path, int colour_type, int bit_depth, int rows, int cols, const uint8_t *values) {
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    cr_assert(png && info && !setjmp(png_jmpbuf(png)));
    png_init_io(png, f);
    png_set_IHDR(png, info, cols, rows, bit_depth, colour_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_color palette[16];
    for (int i = 0; i < 16; i++) palette[i] = (png_color){(png_byte)(255 - 16 * i), (png_byte)(16 * i), 7};
    if (colour_type == PNG_COLOR_TYPE_PALETTE) png_set_PLTE(png, info, palette, 16);
    png_write_info(png, info);
    if (bit_depth < 8) png_set_packing(png);
    const int channels = colour_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    uint8_t row[64];
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            row[c * channels] = values[r * cols + c];
            if (channels == 2) row[c * channels + 1] = (uint8_t)(c * 40);  /* some transparency */
        }
        png_write_row(png, row);
    }
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

Test(i3deep, label_pngs_from_other_tools_read_as_their_values) {
    const uint8_t values[3 * 5] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15};
    const struct { int colour_type, bit_depth; const char *name; } forms[] = {
        {PNG_COLOR_TYPE_PALETTE, 4, "palette4.png"}, {PNG_COLOR_TYPE_PALETTE, 8, "palette8.png"},
        {PNG_COLOR_TYPE_GRAY, 4, "grey4.png"},       {PNG_COLOR_TYPE_GRAY_ALPHA, 8, "grey_alpha.png"}};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        write_tool_png(temp(forms[i].name), forms[i].colour_type, forms[i].bit_depth, 3, 5, values);
        int32_t *back;
        int64_t rows, cols;
        cr_assert_eq(i3_png_read_labels(ctx, temp(forms[i].name), &back, &rows, &cols), I3RT_OK, "%s",
                     i3rt_context_error(ctx));
        int wrong = 0;
        for (int k = 0; k < 15; k++) wrong += back[k] != values[k];
        printf("%s: %lld x %lld, %d wrong labels\n", forms[i].name, (long long)rows, (long long)cols, wrong);
        cr_expect(rows == 3 && cols == 5 && wrong == 0, "%s", forms[i].name);
        free(back);
    }
    /* Truncated: the first 60 bytes of a valid PNG. */
    FILE *f = fopen(temp("palette8.png"), "rb");
    uint8_t head[60];
    cr_assert_eq(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    f = fopen(temp("cut.png"), "wb");
    fwrite(head, 1, sizeof head, f);
    fclose(f);
    int32_t *back = (int32_t *)1;
    int64_t rows, cols;
    cr_expect_eq(i3_png_read_labels(ctx, temp("cut.png"), &back, &rows, &cols), I3RT_ERR_FORMAT);
    cr_expect_null(back);
    printf("%s\n", i3rt_context_error(ctx));
}

Test(i3deep, export_then_submit_the_exported_masks_gives_the_presegmentation_back) {
    i3_case *c = small_case();
    cr_assert_eq(i3_case_recommend(c, NULL), I3RT_OK);
    int n;
    const i3_slice *s = i3_case_slices(c, &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(i3_case_export(c, tmpdir, "case"), I3RT_OK, "%s", i3rt_context_error(ctx));
    const int32_t *seg = i3_case_presegmentation(c);
    for (int k = 0; k < n; k++) {
        char png[600], nii[600];
        snprintf(png, sizeof png, "%s/case_%s_%03lld_mask.png", tmpdir, i3_axis_name(s[k].axis), (long long)s[k].index);
        snprintf(nii, sizeof nii, "%s/case_%s_%03lld_mask.nii.gz", tmpdir, i3_axis_name(s[k].axis), (long long)s[k].index);
        for (int form = 0; form < 2; form++) {
            i3_case *fresh = small_case();
            cr_assert_eq(i3_case_submit_named_file(fresh, form ? nii : png), I3RT_OK, "%s", i3rt_context_error(ctx));
            const int32_t *got = i3_case_corrections(fresh);
            int wrong = 0;
            for (int z = 0; z < CD; z++)
                for (int y = 0; y < CH; y++)
                    for (int x = 0; x < CW; x++) {
                        const int64_t at[3] = {z, y, x};
                        const int v = (z * CH + y) * CW + x;
                        wrong += got[v] != (at[s[k].axis] == s[k].index ? seg[v] : -1);
                    }
            cr_expect_eq(wrong, 0, "%s: %d wrong voxels", form ? nii : png, wrong);
            i3_case_free(fresh);
        }
        /* The PNG shows the rows reversed: its top row is the slice's last row. */
        int32_t *pixels;
        int64_t rows, cols, want_rows, want_cols;
        cr_assert_eq(i3_png_read_labels(ctx, png, &pixels, &rows, &cols), I3RT_OK);
        i3_slice_dims(s[k].axis, CD, CH, CW, &want_rows, &want_cols);
        cr_assert(rows == want_rows && cols == want_cols);
        int32_t plane[CH * CW];
        i3_slice_get(seg, sizeof(int32_t), CD, CH, CW, s[k].axis, s[k].index, plane);
        for (int64_t r = 0; r < rows; r++)
            cr_expect(memcmp(pixels + r * cols, plane + (rows - 1 - r) * cols, (size_t)cols * sizeof(int32_t)) == 0,
                      "%s: PNG row %lld is not slice row %lld", png, (long long)r, (long long)(rows - 1 - r));
        free(pixels);
        /* The slice NIfTI sits where the slice is: origin = affine * (index along its axis). */
        i3_volume v;
        cr_assert_eq(i3_volume_read(ctx, nii, &v), I3RT_OK);
        const double spacing_xyz[3] = {0.5, 0.75, 2.0}, origin[3] = {10, 20, 30};
        const int a = s[k].axis == I3_AXIAL ? 2 : s[k].axis == I3_CORONAL ? 1 : 0;
        for (int r = 0; r < 3; r++) {
            const double want = origin[r] + (r == a ? spacing_xyz[a] * (double)s[k].index : 0.0);
            cr_expect(fabs(v.geometry.affine[r][3] - want) < 1e-4, "%s: origin %c %g, want %g", nii, "xyz"[r],
                      v.geometry.affine[r][3], want);
        }
        i3_volume_free(&v);
    }
    char preview[600];
    snprintf(preview, sizeof preview, "%s/case_%s_%03lld_preview.png", tmpdir, i3_axis_name(s[0].axis),
             (long long)s[0].index);
    cr_expect_eq(access(preview, F_OK), 0, "no preview %s", preview);
    cr_expect_eq(access(temp("case_slices.tsv"), F_OK), 0);
    i3_case_free(c);
}

/* ---- bad corrections ---------------------------------------------------------------------------- */

Test(i3deep, bad_corrections_are_refused_and_the_case_keeps_its_state) {
    i3_case *c = small_case();
    int32_t axial[CH * CW] = {0}, wide[CW * CH] = {0};
    numbered_plane(CH, CW, axial);
    cr_assert_eq(i3_case_submit(c, I3_AXIAL, 2, axial, CH, CW, "first"), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_submit(c, I3_AXIAL, 0, wide, CW, CH, "transposed.png"), I3RT_ERR_SHAPE, "transposed.png");
    EXPECT_REFUSED(c, i3_case_submit(c, I3_AXIAL, CD, axial, CH, CW, "beyond"), I3RT_ERR_INVALID_ARGUMENT, "out of range");
    EXPECT_REFUSED(c, i3_case_submit(c, I3_SAGITTAL, -1, axial, CD, CH, "negative"), I3RT_ERR_INVALID_ARGUMENT, "negative");
    int32_t bad_label[CH * CW] = {0};
    bad_label[CW + 2] = CLASSES;
    EXPECT_REFUSED(c, i3_case_submit(c, I3_AXIAL, 0, bad_label, CH, CW, "class40"), I3RT_ERR_INVALID_ARGUMENT,
                   "row 1 column 2");
    bad_label[CW + 2] = -1;
    EXPECT_REFUSED(c, i3_case_submit(c, I3_AXIAL, 0, bad_label, CH, CW, "minus"), I3RT_ERR_INVALID_ARGUMENT, "minus");
    /* Files. */
    uint8_t rgb[CH * CW * 3] = {0};
    cr_assert_eq(i3_png_write(ctx, temp("colour_axial_000.png"), rgb, CH, CW, 3), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_submit_named_file(c, temp("colour_axial_000.png")), I3RT_ERR_FORMAT, "colour_axial_000.png");
    FILE *f = fopen(temp("text_axial_000.png"), "w");
    fputs("not a png", f);
    fclose(f);
    EXPECT_REFUSED(c, i3_case_submit_named_file(c, temp("text_axial_000.png")), I3RT_ERR_FORMAT, "text_axial_000.png");
    int32_t coronal_plane[CD * CW] = {0};
    cr_assert_eq(i3_png_write_labels(ctx, temp("wrong_axial_001.png"), coronal_plane, CD, CW), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_submit_named_file(c, temp("wrong_axial_001.png")), I3RT_ERR_SHAPE, "wrong_axial_001.png");
    int32_t big[CD * CH] = {0};
    big[3] = 41;
    cr_assert_eq(i3_png_write_labels(ctx, temp("labels_sagittal_002.png"), big, CD, CH), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_submit_named_file(c, temp("labels_sagittal_002.png")), I3RT_ERR_INVALID_ARGUMENT,
                   "labels_sagittal_002.png: label 41 at row 0 column 3");  /* the PNG's row, not the slice's */
    cr_assert_eq(i3_png_write_labels(ctx, temp("far_coronal_005.png"), coronal_plane, CD, CW), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_submit_named_file(c, temp("far_coronal_005.png")), I3RT_ERR_INVALID_ARGUMENT,
                   "far_coronal_005.png");
    EXPECT_REFUSED(c, i3_case_submit_named_file(c, temp("nameless.png")), I3RT_ERR_INVALID_ARGUMENT, "nameless.png");
    EXPECT_REFUSED(c, i3_case_submit_file(c, I3_AXIAL, 0, temp("missing.png")), I3RT_ERR_IO, "missing.png");
    EXPECT_REFUSED(c, i3_case_submit_file(c, I3_AXIAL, 0, temp("mask.txt")), I3RT_ERR_UNSUPPORTED, "mask.txt");
    /* NIfTI: a non-integer label, and a slice one voxel thick along the wrong axis. */
    const i3_volume_geometry *g = &i3_case_image(c)->geometry;
    i3_volume_geometry thin = *g;
    thin.size[2] = 1;
    float half[CH * CW] = {0};
    half[4] = 0.5f;
    cr_assert_eq(i3_volume_write_f32(ctx, temp("half_axial_000.nii.gz"), &thin, 1, half), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_submit_named_file(c, temp("half_axial_000.nii.gz")), I3RT_ERR_FORMAT, "not a label");
    EXPECT_REFUSED(c, i3_case_submit_file(c, I3_SAGITTAL, 0, temp("half_axial_000.nii.gz")), I3RT_ERR_SHAPE,
                   "half_axial_000.nii.gz");
    /* Export into a directory that is not there; NULL arguments. */
    cr_assert_eq(i3_case_recommend(c, NULL), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_export(c, temp("no/such/dir"), "x"), I3RT_ERR_IO, "no/such/dir");
    EXPECT_REFUSED(c, i3_case_submit(c, I3_AXIAL, 0, NULL, CH, CW, "null"), I3RT_ERR_INVALID_ARGUMENT, "null");
    EXPECT_REFUSED(c, i3_case_simulate_expert(c, NULL, "truth"), I3RT_ERR_INVALID_ARGUMENT, "truth");
    EXPECT_REFUSED(c, i3_case_add_logits(c, NULL), I3RT_ERR_INVALID_ARGUMENT, "member 2");
    /* The first correction is still there, and a good one still goes in. */
    int n;
    i3_case_corrected_slices(c, &n);
    cr_expect_eq(n, 1);
    cr_expect_eq(i3_case_corrections(c)[(2 * CH + 4) * CW + 5], 4 * CW + 5);
    cr_expect_eq(i3_case_submit(c, I3_AXIAL, 0, axial, CH, CW, "second"), I3RT_OK);
    i3_case_free(c);
}

/* ---- simulated expert from a file, refinement, saving --------------------------------------------- */

Test(i3deep, simulated_expert_reads_a_truth_file_on_the_image_grid) {
    i3_case *c = small_case();
    cr_assert_eq(i3_case_recommend(c, NULL), I3RT_OK);
    const i3_volume_geometry *g = &i3_case_image(c)->geometry;
    static int32_t truth[CS];
    static float halves[CS];
    for (int i = 0; i < CS; i++) truth[i] = (i * 7) % CLASSES, halves[i] = (float)truth[i];
    halves[(2 * CH + 1) * CW + 3] = 2.5f;
    cr_assert_eq(i3_volume_write_labels(ctx, temp("truth.nii.gz"), g, truth), I3RT_OK);
    cr_assert_eq(i3_volume_write_f32(ctx, temp("half.nii.gz"), g, 1, halves), I3RT_OK);
    i3_volume_geometry moved = *g;
    moved.srow[0][3] += 5.0, moved.affine[0][3] += 5.0, moved.qoffset[0] += 5.0;
    cr_assert_eq(i3_volume_write_labels(ctx, temp("moved.nii.gz"), &moved, truth), I3RT_OK);
    i3_volume_geometry thin = *g;
    thin.size[2] = 1;
    cr_assert_eq(i3_volume_write_labels(ctx, temp("thin.nii.gz"), &thin, truth), I3RT_OK);
    EXPECT_REFUSED(c, i3_case_simulate_expert_file(c, temp("half.nii.gz")), I3RT_ERR_FORMAT,
                   "half.nii.gz: value 2.5 at voxel (x 3, y 1, z 2) is not a label");
    EXPECT_REFUSED(c, i3_case_simulate_expert_file(c, temp("moved.nii.gz")), I3RT_ERR_SHAPE, "moved.nii.gz");
    EXPECT_REFUSED(c, i3_case_simulate_expert_file(c, temp("thin.nii.gz")), I3RT_ERR_SHAPE, "thin.nii.gz");
    EXPECT_REFUSED(c, i3_case_simulate_expert_file(c, temp("none.nii.gz")), I3RT_ERR_IO, "none.nii.gz");
    cr_assert_eq(i3_case_simulate_expert_file(c, temp("truth.nii.gz")), I3RT_OK, "%s", i3rt_context_error(ctx));
    /* The recommended slices (axial 1, coronal 3, sagittal 4) hold the truth, every other voxel nothing. */
    const int32_t *got = i3_case_corrections(c);
    int wrong = 0;
    for (int z = 0; z < CD; z++)
        for (int y = 0; y < CH; y++)
            for (int x = 0; x < CW; x++) {
                const int v = (z * CH + y) * CW + x;
                wrong += got[v] != (z == 1 || y == 3 || x == 4 ? truth[v] : -1);
            }
    printf("simulated expert from a file: %d wrong voxels\n", wrong);
    cr_expect_eq(wrong, 0);
    i3_case_free(c);
}


Test(i3deep, refine_saves_and_a_failed_refine_keeps_the_previous_result) {
    /* The refinement model in weights/ on a small T1-like sphere (3 mm) with one corrected axial slice. */
    enum { D = SPHERE_D, H = SPHERE_H, W = SPHERE_W, S = D * H * W };
    static float data[S];
    const i3_volume image = t1_like_sphere(data, (const double[3]){4, 5, 6});
    i3_case *c;
    cr_assert_eq(i3_case_open(ctx, &image, 4, &c), I3RT_OK);
    i3_predict_options o;
    i3_predict_options_default(&o);
    o.use_mirroring = 0;
    EXPECT_REFUSED(c, i3_case_refine(c, &o), I3RT_ERR_INVALID_ARGUMENT, "refinement model");
    cr_expect_null(i3_case_refined(c));
    EXPECT_REFUSED(c, i3_case_save_segmentation(c, temp("refined.nii.gz"), 1), I3RT_ERR_INVALID_ARGUMENT, "refined");
    cr_expect_neq(access(temp("refined.nii.gz"), F_OK), 0);
    cr_assert_eq(i3_case_load_refinement_model(c, model_path("brain_refine_3d_fullres"), NULL, 0), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    static int32_t plane[H * W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) plane[y * W + x] = hypot(y - H / 2.0, x - W / 2.0) < 4 ? 3 : 0;
    cr_assert_eq(i3_case_submit(c, I3_AXIAL, D / 2, plane, H, W, "disc"), I3RT_OK);
    cr_assert_eq(i3_case_refine(c, &o), I3RT_OK, "%s", i3rt_context_error(ctx));
    static int32_t first[S];
    cr_assert_not_null(i3_case_refined(c));
    memcpy(first, i3_case_refined(c), sizeof first);
    const double input_s = i3_case_stage_seconds(c, I3_STAGE_REFINE_INPUT), refine_s = i3_case_stage_seconds(c, I3_STAGE_REFINE);
    printf("refine: input %.4f s, network %.3f s, waiting %.3f s\n", input_s, refine_s, i3_case_waiting_seconds(c));
    cr_expect(input_s > 0.0 && refine_s > input_s);
    cr_expect_eq(i3_case_waiting_seconds(c), i3_case_stage_seconds(c, I3_STAGE_CORRECTIONS) + input_s + refine_s);
    /* A refine that fails (a sliding-window step of 0) keeps the first result. */
    i3_predict_options bad = o;
    bad.step_size = 0.0;
    EXPECT_REFUSED(c, i3_case_refine(c, &bad), I3RT_ERR_INVALID_ARGUMENT, "step");
    cr_expect(memcmp(first, i3_case_refined(c), sizeof first) == 0, "a failed refine changed the refined result");
    /* Saved on the image's grid and geometry, equal to the result. */
    cr_assert_eq(i3_case_save_segmentation(c, temp("refined.nii.gz"), 1), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_volume back;
    cr_assert_eq(i3_volume_read(ctx, temp("refined.nii.gz"), &back), I3RT_OK);
    cr_assert(back.channels == 1 && back.d == D && back.h == H && back.w == W);
    int wrong = 0;
    for (int i = 0; i < S; i++) wrong += back.data[i] != (float)first[i];
    cr_expect_eq(wrong, 0);
    cr_expect_eq(i3_volume_geometry_check(ctx, &back.geometry, "saved", &image.geometry, "image"), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    i3_volume_free(&back);
    i3_case_free(c);
}

Test(i3deep, refine_equals_nnunet_predictor_on_the_same_corrections) {
    /* tests/gen_i3deep.py: nnUNetPredictor (float32 sums, no mirroring) ran the refinement model on image +
     * ground-truth slices of an unseen brain case; the same slices submitted here must give the same
     * segmentation up to summation order (at most 0.1 % of the voxels may differ, at tied logits). */
    char dir[1024], path[1200];
    const char *fx = getenv("I3RT_FIXTURES");
    snprintf(dir, sizeof dir, "%s/i3deep", fx ? fx : "fixtures");
    i3_volume image, truth;
    snprintf(path, sizeof path, "%s/eval501_000_0000.nii.gz", dir);
    cr_assert_eq(i3_volume_read(ctx, path, &image), I3RT_OK, "%s (tests/gen_i3deep.py)", i3rt_context_error(ctx));
    snprintf(path, sizeof path, "%s/eval501_000_truth.nii.gz", dir);
    cr_assert_eq(i3_volume_read(ctx, path, &truth), I3RT_OK, "%s", i3rt_context_error(ctx));
    const int64_t n = image.d * image.h * image.w;
    int32_t *labels = malloc((size_t)n * sizeof *labels), *plane = malloc((size_t)n * sizeof *plane);
    for (int64_t i = 0; i < n; i++) labels[i] = (int32_t)truth.data[i];
    i3_case *c;
    cr_assert_eq(i3_case_open(ctx, &image, 4, &c), I3RT_OK);
    cr_assert_eq(i3_case_load_refinement_model(c, model_path("brain_refine_3d_fullres"), NULL, 0), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    snprintf(path, sizeof path, "%s/refine_slices.txt", dir);
    FILE *f = fopen(path, "r");
    cr_assert(f, "no %s", path);
    char axis_name[16];
    long long index;
    int n_slices = 0;
    while (fscanf(f, "%15s %lld", axis_name, &index) == 2) {
        i3_axis axis = I3_AXIAL;
        while (strcmp(i3_axis_name(axis), axis_name) != 0 && axis < I3_SAGITTAL) axis++;
        int64_t rows, cols;
        i3_slice_dims(axis, image.d, image.h, image.w, &rows, &cols);
        i3_slice_get(labels, sizeof(int32_t), image.d, image.h, image.w, axis, index, plane);
        cr_assert_eq(i3_case_submit(c, axis, index, plane, rows, cols, axis_name), I3RT_OK, "%s", i3rt_context_error(ctx));
        n_slices++;
    }
    fclose(f);
    i3_predict_options o;
    i3_predict_options_default(&o);
    o.use_mirroring = 0;
    cr_assert_eq(i3_case_refine(c, &o), I3RT_OK, "%s", i3rt_context_error(ctx));
    size_t len;
    snprintf(path, sizeof path, "%s/refine_ref_seg.u8", dir);
    uint8_t *ref = (uint8_t *)fx_read_file(path, &len);
    cr_assert(ref && (int64_t)len == n, "%s: %zu bytes, want %lld", path, len, (long long)n);
    const int32_t *got = i3_case_refined(c);
    int64_t differ = 0, foreground = 0;
    for (int64_t i = 0; i < n; i++) differ += got[i] != ref[i], foreground += ref[i] > 0;
    printf("refinement with %d ground-truth slices: %lld of %lld voxels differ from nnUNetPredictor (%lld foreground "
           "there)\n", n_slices, (long long)differ, (long long)n, (long long)foreground);
    cr_expect_gt(foreground, 0);
    cr_expect_leq(differ, n / 1000);
    free(ref);
    free(labels);
    free(plane);
    i3_volume_free(&image);
    i3_volume_free(&truth);
    i3_case_free(c);
}

/* ---- evaluation --------------------------------------------------------------------------------- */

Test(i3deep, dice_and_annotation_ratio_by_hand) {
    /* a = 0 0 1 1 1 2, b = 0 1 1 1 2 2: class 0 2*1/(2+1), class 1 2*2/(3+3), class 2 2*1/(1+2), class 3
     * in neither -> NaN. */
    const int32_t a[6] = {0, 0, 1, 1, 1, 2}, b[6] = {0, 1, 1, 1, 2, 2};
    double dice[4];
    i3_dice_per_class(a, b, 6, 4, dice);
    cr_expect(fabs(dice[0] - 2.0 / 3.0) < 1e-12 && fabs(dice[1] - 2.0 / 3.0) < 1e-12 && fabs(dice[2] - 2.0 / 3.0) < 1e-12);
    cr_expect(isnan(dice[3]));
    /* 4 axial slices of 2 x 2, foreground on slices 1 and 3: 3 chosen slices -> ratio 1.5. */
    const int32_t truth[16] = {0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 1, 0, 0};
    cr_expect_eq(i3_annotation_ratio(3, truth, 4, 2, 2), 1.5);
    cr_expect_eq(i3_annotation_ratio(3, (const int32_t[4]){0}, 1, 2, 2), 0.0);
}
