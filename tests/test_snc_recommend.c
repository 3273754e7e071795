/* Slice-and-Conquer next-slice recommendation (runtime/snc_recommend.c), answers known by construction:
 *   - confidence: max(p, 1 - p) for a sigmoid output, max_c p_c for softmax probabilities;
 *   - a whole slice of under-confident voxels on each of the three axes is found, with its count;
 *   - one under-confident voxel scores 1 on one slice of every axis: the tie goes axial, coronal,
 *     sagittal as those get annotated; then nothing is left;
 *   - the threshold: confidence == tau is under-confident, the next float above is not;
 *   - the adjacency skip (skip 0, 1, 2; only on the annotated slice's axis), ties inside an axis
 *     (lower index), all-zero scores (no recommendation);
 *   - non-cubic volume where the largest under-confident count (ours) and Eq. 2's smallest confident
 *     count pick different slices (docs/snc.md);
 *   - bad input: an error naming the problem, *found = 0 and the output untouched. */
#include "snc_recommend.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static i3_ctx *ctx;

static void setup(void) { cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK); }
static void teardown(void) { i3rt_context_free(ctx); }

TestSuite(snc_recommend, .init = setup, .fini = teardown);

#define D 5
#define H 7
#define W 9
#define AT(z, y, x) (((z) * H + (y)) * W + (x))

static float conf[D * H * W];

static void confident_everywhere(void) {
    for (int i = 0; i < D * H * W; i++) conf[i] = 0.99f;
}

static void expect_choice(const i3_slice *annotated, int n_annotated, i3_axis axis, int64_t index, double count) {
    i3_slice out;
    int found = -1;
    cr_assert_eq(i3_snc_recommend(ctx, conf, D, H, W, NULL, annotated, n_annotated, &out, &found), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    cr_assert_eq(found, 1, "no slice recommended (expected %s %lld)", i3_axis_name(axis), (long long)index);
    cr_expect(out.axis == axis && out.index == index, "recommended %s %lld, expected %s %lld", i3_axis_name(out.axis),
              (long long)out.index, i3_axis_name(axis), (long long)index);
    cr_expect_eq(out.sum, count, "count %g, expected %g", out.sum, count);
}

Test(snc_recommend, confidence_sigmoid_and_softmax) {
    const float p[5] = {0.0f, 0.3f, 0.5f, 0.8f, 1.0f}, want[5] = {1.0f, 0.7f, 0.5f, 0.8f, 1.0f};
    float c[5];
    cr_assert_eq(i3_snc_confidence(ctx, p, 1, 5, c, 1), I3RT_OK);
    for (int i = 0; i < 5; i++) cr_expect_float_eq(c[i], want[i], 1e-7f, "sigmoid p %g", p[i]);
    /* 3 classes x 4 voxels, class-major */
    const float q[12] = {0.2f, 0.9f, 0.4f, 1.0f / 3, 0.5f, 0.05f, 0.4f, 1.0f / 3, 0.3f, 0.05f, 0.2f, 1.0f / 3};
    const float qwant[4] = {0.5f, 0.9f, 0.4f, 1.0f / 3};
    cr_assert_eq(i3_snc_confidence(ctx, q, 3, 4, c, 1), I3RT_OK);
    for (int i = 0; i < 4; i++) cr_expect_eq(c[i], qwant[i], "softmax voxel %d: %g", i, c[i]);
}

Test(snc_recommend, whole_slice_on_each_axis) {
    confident_everywhere();
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) conf[AT(3, y, x)] = 0.6f;
    expect_choice(NULL, 0, I3_AXIAL, 3, H * W);
    confident_everywhere();
    for (int z = 0; z < D; z++)
        for (int x = 0; x < W; x++) conf[AT(z, 5, x)] = 0.6f;
    expect_choice(NULL, 0, I3_CORONAL, 5, D * W);
    confident_everywhere();
    for (int z = 0; z < D; z++)
        for (int y = 0; y < H; y++) conf[AT(z, y, 8)] = 0.6f;
    expect_choice(NULL, 0, I3_SAGITTAL, 8, D * H);
    i3_slice out;
    int found;
    cr_assert_eq(i3_snc_recommend(ctx, conf, D, H, W, NULL, NULL, 0, &out, &found), I3RT_OK);
    cr_expect_float_eq(out.relative, 1.0, 1e-12, "the whole sagittal slice is under-confident");
}

Test(snc_recommend, one_voxel_ties_across_axes) {
    confident_everywhere();
    conf[AT(1, 2, 3)] = 0.5f;
    expect_choice(NULL, 0, I3_AXIAL, 1, 1);
    i3_slice annotated[3] = {{I3_AXIAL, 1, 0, 0}, {I3_CORONAL, 2, 0, 0}, {I3_SAGITTAL, 3, 0, 0}};
    expect_choice(annotated, 1, I3_CORONAL, 2, 1);
    expect_choice(annotated, 2, I3_SAGITTAL, 3, 1);
    i3_slice out = {I3_CORONAL, 77, 1, 1};
    int found = -1;
    cr_assert_eq(i3_snc_recommend(ctx, conf, D, H, W, NULL, annotated, 3, &out, &found), I3RT_OK);
    cr_expect_eq(found, 0, "all three slices through the voxel are annotated: nothing left to recommend");
    cr_expect_eq(out.index, 77, "out changed without a recommendation");
}

Test(snc_recommend, threshold_is_inclusive) {
    const i3_snc_recommend_params p = {0.75, 1};
    i3_slice out;
    int found;
    confident_everywhere();
    conf[AT(4, 6, 0)] = 0.75f;
    cr_assert_eq(i3_snc_recommend(ctx, conf, D, H, W, &p, NULL, 0, &out, &found), I3RT_OK);
    cr_expect(found == 1 && out.axis == I3_AXIAL && out.index == 4 && out.sum == 1.0, "confidence == tau counts");
    conf[AT(4, 6, 0)] = nextafterf(0.75f, 1.0f);
    cr_assert_eq(i3_snc_recommend(ctx, conf, D, H, W, &p, NULL, 0, &out, &found), I3RT_OK);
    cr_expect_eq(found, 0, "confidence just above tau is confident: nothing to recommend");
}

static void expect_scores_choice(const double *const s[3], const int64_t len[3], int skip, const i3_slice *ann, int n,
                                 int want_found, i3_axis axis, int64_t index) {
    i3_slice out = {I3_AXIAL, -5, 0, 0};
    int found = -1;
    cr_assert_eq(i3_snc_recommend_from_scores(ctx, s, len, NULL, skip, ann, n, &out, &found), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    cr_assert_eq(found, want_found, "skip %d, %d annotated: found %d", skip, n, found);
    if (want_found)
        cr_expect(out.axis == axis && out.index == index, "skip %d, %d annotated: %s %lld, expected %s %lld", skip, n,
                  i3_axis_name(out.axis), (long long)out.index, i3_axis_name(axis), (long long)index);
    else
        cr_expect_eq(out.index, -5, "out changed without a recommendation");
}

Test(snc_recommend, adjacency_skip_and_ties) {
    const double axial[8] = {0, 5, 9, 9, 8, 7, 1, 0}, coronal[4] = {6, 6, 0, 6}, sagittal[3] = {8, 0, 8};
    const double *s[3] = {axial, coronal, sagittal};
    const int64_t len[3] = {8, 4, 3};
    expect_scores_choice(s, len, 1, NULL, 0, 1, I3_AXIAL, 2);  /* tie 9 = 9 inside the axis: lower index */
    const i3_slice a3 = {I3_AXIAL, 3, 0, 0};
    expect_scores_choice(s, len, 0, &a3, 1, 1, I3_AXIAL, 2);   /* skip 0: only slice 3 itself is out */
    expect_scores_choice(s, len, 1, &a3, 1, 1, I3_SAGITTAL, 0); /* 2..4 out: 8 on sagittal 0 and 2 beats 7 */
    expect_scores_choice(s, len, 2, &a3, 1, 1, I3_SAGITTAL, 0); /* 1..5 out */
    const i3_slice two[2] = {{I3_AXIAL, 3, 0, 0}, {I3_SAGITTAL, 1, 0, 0}};
    expect_scores_choice(s, len, 1, two, 2, 1, I3_AXIAL, 5);    /* sagittal 0..2 out: axial 5 (7) next */
    const i3_slice c2 = {I3_CORONAL, 3, 0, 0};                 /* an annotation on another axis: no effect */
    expect_scores_choice(s, len, 1, &c2, 1, 1, I3_AXIAL, 2);
    const double zero8[8] = {0}, zero4[4] = {0}, zero3[3] = {0};
    const double *z[3] = {zero8, zero4, zero3};
    expect_scores_choice(z, len, 1, NULL, 0, 0, I3_AXIAL, 0);   /* confident everywhere */
    const double one[1] = {4};
    const double *single[3] = {one, one, one};
    const int64_t len1[3] = {1, 1, 1};
    const i3_slice all[3] = {{I3_AXIAL, 0, 0, 0}, {I3_CORONAL, 0, 0, 0}, {I3_SAGITTAL, 0, 0, 0}};
    expect_scores_choice(single, len1, 1, all, 3, 0, I3_AXIAL, 0); /* every slice annotated */
}

/* d = 4, h = w = 10: axial slices have 100 voxels, coronal and sagittal 40. Axial 0 has 30
 * under-confident voxels (70 confident), coronal 7 has 18 (22 confident): the count picks axial 0,
 * Eq. 2's smallest confident count would pick coronal 7. */
Test(snc_recommend, count_not_confident_l1_across_axes) {
    enum { d = 4, h = 10, w = 10 };
    static float c[d * h * w];
    for (int i = 0; i < d * h * w; i++) c[i] = 1.0f;
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < w; x++) c[(0 * h + y) * w + x] = 0.55f;
    for (int z = 1; z < 4; z++)
        for (int x = 0; x < 6; x++) c[(z * h + 7) * w + x] = 0.55f;
    i3_slice out;
    int found;
    cr_assert_eq(i3_snc_recommend(ctx, c, d, h, w, NULL, NULL, 0, &out, &found), I3RT_OK);
    cr_assert_eq(found, 1);
    cr_expect(out.axis == I3_AXIAL && out.index == 0 && out.sum == 30.0, "got %s %lld (%g)", i3_axis_name(out.axis),
              (long long)out.index, out.sum);
    cr_expect_float_eq(out.relative, 0.3, 1e-12);
}

#define EXPECT_FAIL(call, status, text)                                                                         \
    do {                                                                                                       \
        cr_expect_eq((call), status, "%s: status", #call);                                                     \
        cr_expect(strstr(i3rt_context_error(ctx), text), "%s: message '%s' lacks '%s'", #call,                 \
                  i3rt_context_error(ctx), text);                                                              \
        cr_expect_eq(found, 0, "%s: found set", #call);                                                        \
        cr_expect_eq(out.index, -9, "%s: out written", #call);                                                 \
    } while (0)

Test(snc_recommend, bad_input) {
    confident_everywhere();
    conf[AT(2, 2, 2)] = 0.1f;
    i3_slice out = {I3_AXIAL, -9, 0, 0};
    int found = 0;
    i3_snc_recommend_params p = {1.5, 1};
    EXPECT_FAIL(i3_snc_recommend(ctx, conf, D, H, W, &p, NULL, 0, &out, &found), I3RT_ERR_INVALID_ARGUMENT, "tau 1.5");
    p = (i3_snc_recommend_params){0.9, -1};
    EXPECT_FAIL(i3_snc_recommend(ctx, conf, D, H, W, &p, NULL, 0, &out, &found), I3RT_ERR_INVALID_ARGUMENT, "skip -1");
    EXPECT_FAIL(i3_snc_recommend(ctx, conf, D, 0, W, NULL, NULL, 0, &out, &found), I3RT_ERR_SHAPE, "empty");
    i3_slice bad = {(i3_axis)3, 0, 0, 0};
    EXPECT_FAIL(i3_snc_recommend(ctx, conf, D, H, W, NULL, &bad, 1, &out, &found), I3RT_ERR_INVALID_ARGUMENT, "axis 3");
    bad = (i3_slice){I3_CORONAL, H, 0, 0};
    EXPECT_FAIL(i3_snc_recommend(ctx, conf, D, H, W, NULL, &bad, 1, &out, &found), I3RT_ERR_INVALID_ARGUMENT,
                "annotated coronal slice 7 outside [0, 7)");
    EXPECT_FAIL(i3_snc_recommend(ctx, conf, D, H, W, NULL, NULL, 2, &out, &found), I3RT_ERR_INVALID_ARGUMENT,
                "2 annotated slices");
    conf[AT(4, 1, 6)] = NAN;
    EXPECT_FAIL(i3_snc_recommend(ctx, conf, D, H, W, NULL, NULL, 0, &out, &found), I3RT_ERR_INVALID_ARGUMENT,
                "voxel (4, 1, 6)");
    float c[4];
    const float probs[4] = {0.2f, NAN, 0.5f, 1.2f};
    cr_expect_eq(i3_snc_confidence(ctx, probs, 1, 4, c, 1), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(i3rt_context_error(ctx), "voxel 1"), "%s", i3rt_context_error(ctx));
    const float probs2[4] = {0.2f, 0.8f, 0.5f, 1.2f};
    cr_expect_eq(i3_snc_confidence(ctx, probs2, 2, 2, c, 1), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(i3rt_context_error(ctx), "class 1 at voxel 1 is 1.2"), "%s", i3rt_context_error(ctx));
    cr_expect_eq(i3_snc_confidence(ctx, probs2, 0, 4, c, 1), I3RT_ERR_SHAPE);
}
