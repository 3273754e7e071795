/* Tests of the public i3Deep API (include/i3rt.h, runtime/api_i3deep.c). The pipeline runs through the
 * public API only; the Dice, the annotation ratio and reading the truth for them use the runtime's
 * evaluation helpers (i3deep.h, volume_io.h).
 *   - end to end on evaluation cases of the brain task (tests/gen_i3deep.py: seeds no model saw in
 *     training): the pre-segmentation ensemble (weights/brain_3d_fullres, folds 0 and 1) -> uncertainty ->
 *     recommended slices -> simulated expert (the truth NIfTI) -> refinement (weights/brain_refine_3d_fullres);
 *     the mean foreground Dice after refinement must be higher than before. Per case: Dice per class
 *     before/after, slices, annotation ratio, stage and waiting times. No test-time mirroring (it would
 *     cost 8 forwards per tile; the test stays within about a minute on two busy cores);
 *   - the segmentation saved to a file equals the one copied into a buffer, and has the image's geometry;
 *   - bad input: refining without a model, refinement models with the wrong channels or classes, a save
 *     to an unwritable path (no file, an existing file untouched), argument errors of every call. */
#include "i3deep.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fixtures.h"

static i3rt_context *ctx;
static char tmpdir[256];

static void setup(void) {
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    fx_temp_dir(tmpdir, sizeof tmpdir, "api_i3deep");
}

static void teardown(void) {
    fx_remove_dir(tmpdir);
    i3rt_context_free(ctx);
}

TestSuite(api_i3deep, .init = setup, .fini = teardown);

enum { CLASSES = 4 };  /* background, caudate, putamen, thalamus */

static const char *weights(const char *name) {
    static char p[2][1024];
    static int which;
    which ^= 1;
    const char *root = getenv("I3RT_SOURCE_DIR");
    snprintf(p[which], sizeof p[which], "%s/weights/%s", root ? root : ".", name);
    return p[which];
}

static const char *fixture(const char *name) {
    static char p[4][1024];
    static int which;
    which = (which + 1) % 4;
    const char *root = getenv("I3RT_FIXTURES");
    snprintf(p[which], sizeof p[which], "%s/i3deep/%s", root ? root : "fixtures", name);
    return p[which];
}

static const char *temp(const char *name) { return fx_path(tmpdir, name); }

/* The evaluation case `name` of the fixtures, opened with its image. */
static i3rt_case *open_case(const char *name) {
    char image[300];
    snprintf(image, sizeof image, "%s_0000.nii.gz", name);
    const char *path = fixture(image);
    i3rt_case *c = NULL;
    cr_assert_eq(i3rt_case_open(ctx, &path, 1, CLASSES, &c), I3RT_OK, "%s", i3rt_context_error(ctx));
    return c;
}

/* Expects call to fail with status and a message naming `names`. */
#define EXPECT_FAIL(call, status, names)                                                                    \
    do {                                                                                                    \
        cr_expect_eq((call), status, "%s", #call);                                                          \
        printf("refused: %s\n", i3rt_context_error(ctx));                                                  \
        cr_expect(strstr(i3rt_context_error(ctx), names), "message \"%s\" does not name %s",                \
                  i3rt_context_error(ctx), names);                                                          \
    } while (0)

static double mean_foreground(const double *dice) {
    double sum = 0.0;
    int n = 0;
    for (int k = 1; k < CLASSES; k++)
        if (!isnan(dice[k])) sum += dice[k], n++;
    return n ? sum / n : NAN;
}

Test(api_i3deep, refinement_raises_the_dice_of_the_presegmentation_on_unseen_cases, .timeout = 600) {
    const char *preseg_model = weights("brain_3d_fullres"), *refine_model = weights("brain_refine_3d_fullres");
    cr_assert_eq(access(refine_model, F_OK), 0, "%s is not there (scripts/train_models.py trains it)", refine_model);
    char *list = fx_read_file(fixture("cases.txt"), NULL);
    cr_assert(list, "no %s (tests/gen_i3deep.py writes it)", fixture("cases.txt"));
    double before_sum = 0.0, after_sum = 0.0;
    int cases = 0;
    for (char *name = strtok(list, "\n"); name; name = strtok(NULL, "\n"), cases++) {
        i3rt_case *c = open_case(name);
        int64_t shape[3];
        cr_assert_eq(i3rt_case_get_shape(c, shape), I3RT_OK);
        const int64_t n = shape[0] * shape[1] * shape[2];
        /* Loaded first: loading is not part of the expert's wait. */
        cr_assert_eq(i3rt_case_load_refinement_model(c, refine_model, NULL, 0), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(i3rt_case_add_model(c, preseg_model, (const int[]){0, 1}, 2, 0), I3RT_OK, "%s",
                     i3rt_context_error(ctx));
        cr_assert_eq(i3rt_case_compute_uncertainty(c), I3RT_OK);
        cr_assert_eq(i3rt_case_recommend(c, NULL), I3RT_OK, "%s", i3rt_context_error(ctx));
        i3rt_slice slices[12];
        int n_slices;
        cr_assert_eq(i3rt_case_get_slices(c, slices, 12, &n_slices), I3RT_OK);
        cr_assert_gt(n_slices, 0);
        char truth_name[300];
        snprintf(truth_name, sizeof truth_name, "%s_truth.nii.gz", name);
        cr_assert_eq(i3rt_case_simulate_expert_file(c, fixture(truth_name)), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(i3rt_case_refine(c, 0), I3RT_OK, "%s", i3rt_context_error(ctx));

        int32_t *preseg = malloc((size_t)n * sizeof *preseg), *refined = malloc((size_t)n * sizeof *refined),
                *truth = malloc((size_t)n * sizeof *truth);
        cr_assert_eq(i3rt_case_get_segmentation(c, 0, preseg, n), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(i3rt_case_get_segmentation(c, 1, refined, n), I3RT_OK, "%s", i3rt_context_error(ctx));
        i3_volume t;
        cr_assert_eq(i3_volume_read(ctx, fixture(truth_name), &t), I3RT_OK);
        cr_assert_eq(t.d * t.h * t.w, n);
        for (int64_t i = 0; i < n; i++) truth[i] = (int32_t)t.data[i];
        i3_volume_free(&t);
        double before[CLASSES], after[CLASSES];
        i3_dice_per_class(preseg, truth, n, CLASSES, before);
        i3_dice_per_class(refined, truth, n, CLASSES, after);
        const double b = mean_foreground(before), a = mean_foreground(after);
        printf("%s (%lld x %lld x %lld): %d slices, annotation ratio %.3f\n", name, (long long)shape[2],
               (long long)shape[1], (long long)shape[0], n_slices,
               i3_annotation_ratio(n_slices, truth, shape[0], shape[1], shape[2]));
        for (int i = 0; i < n_slices; i++)
            printf("  %2d %-8s %3lld  uncertainty %9.3f (%.2f of its axis's largest)\n", i + 1,
                   i3_axis_name((i3_axis)slices[i].axis), (long long)slices[i].index, slices[i].uncertainty,
                   slices[i].relative);
        printf("  Dice per class (caudate, putamen, thalamus): before %.3f %.3f %.3f (mean %.3f), after %.3f %.3f %.3f "
               "(mean %.3f)\n", before[1], before[2], before[3], b, after[1], after[2], after[3], a);
        printf("  seconds:");
        for (int s = 0; s < I3RT_STAGE_COUNT; s++)
            printf(" %s %.2f", i3rt_stage_name((i3rt_stage)s), i3rt_case_stage_seconds(c, (i3rt_stage)s));
        printf("; the expert waits %.2f s\n", i3rt_case_waiting_seconds(c));
        cr_expect(!isnan(b) && !isnan(a));
        cr_expect_gt(i3rt_case_waiting_seconds(c), 0.0);
        cr_expect_lt(fabs(i3rt_case_waiting_seconds(c) - i3rt_case_stage_seconds(c, I3RT_STAGE_CORRECTIONS) -
                          i3rt_case_stage_seconds(c, I3RT_STAGE_REFINE_INPUT) -
                          i3rt_case_stage_seconds(c, I3RT_STAGE_REFINE)), 1e-9);
        before_sum += b, after_sum += a;
        free(preseg);
        free(refined);
        free(truth);
        i3rt_case_free(c);
    }
    free(list);
    cr_assert_gt(cases, 0);
    printf("mean foreground Dice over %d unseen cases: %.3f before refinement, %.3f after\n", cases,
           before_sum / cases, after_sum / cases);
    cr_expect_gt(after_sum / cases, before_sum / cases, "refinement did not raise the mean foreground Dice");
}

/* A case with a pre-segmentation from one fold (no mirroring: speed). */
static i3rt_case *presegmented_case(const char *name) {
    i3rt_case *c = open_case(name);
    cr_assert_eq(i3rt_case_add_model(c, weights("brain_3d_fullres"), (const int[]){0}, 1, 0), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    cr_assert_eq(i3rt_case_compute_uncertainty(c), I3RT_OK);
    return c;
}

Test(api_i3deep, saved_segmentation_is_the_buffer_on_the_image_grid) {
    i3rt_case *c = presegmented_case("eval501_000");
    int64_t shape[3];
    cr_assert_eq(i3rt_case_get_shape(c, shape), I3RT_OK);
    const int64_t n = shape[0] * shape[1] * shape[2];
    int32_t *seg = malloc((size_t)n * sizeof *seg);
    cr_assert_eq(i3rt_case_get_segmentation(c, 0, seg, n), I3RT_OK);
    cr_assert_eq(i3rt_case_save_segmentation(c, temp("preseg.nii.gz"), 0), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_volume saved, image;
    cr_assert_eq(i3_volume_read(ctx, temp("preseg.nii.gz"), &saved), I3RT_OK);
    cr_assert_eq(i3_volume_read(ctx, fixture("eval501_000_0000.nii.gz"), &image), I3RT_OK);
    cr_assert(saved.channels == 1 && saved.d == shape[0] && saved.h == shape[1] && saved.w == shape[2]);
    int64_t wrong = 0, foreground = 0;
    for (int64_t i = 0; i < n; i++) wrong += saved.data[i] != (float)seg[i], foreground += seg[i] > 0;
    printf("saved pre-segmentation: %lld voxels, %lld foreground, %lld differ from the buffer\n", (long long)n,
           (long long)foreground, (long long)wrong);
    cr_expect_eq(wrong, 0);
    cr_expect_eq(i3_volume_geometry_check(ctx, &saved.geometry, "saved", &image.geometry, "image"), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    i3_volume_free(&saved);
    i3_volume_free(&image);
    free(seg);
    i3rt_case_free(c);
}

/* Entries of tmpdir (besides . and ..). */
static int count_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

Test(api_i3deep, refinement_errors_leave_no_file_and_the_case_usable) {
    i3rt_case *c = presegmented_case("eval501_001");
    /* Refining needs a model; models must take the image + 1 channels and have the case's classes. */
    EXPECT_FAIL(i3rt_case_refine(c, 0), I3RT_ERR_INVALID_ARGUMENT, "refinement model");
    EXPECT_FAIL(i3rt_case_load_refinement_model(c, weights("brain_3d_fullres"), NULL, 0), I3RT_ERR_SHAPE,
                "brain_3d_fullres: the refinement model takes 1 input channels; this case needs 2");
    EXPECT_FAIL(i3rt_case_load_refinement_model(c, weights("headct_3d_fullres_aniso"), NULL, 0), I3RT_ERR_SHAPE,
                "headct_3d_fullres_aniso: the refinement model has 3 classes, the case has 4");
    EXPECT_FAIL(i3rt_case_load_refinement_model(c, temp("no_model"), NULL, 0), I3RT_ERR_IO, "no_model");
    EXPECT_FAIL(i3rt_case_load_refinement_model(c, NULL, NULL, 0), I3RT_ERR_INVALID_ARGUMENT, "refinement model");
    EXPECT_FAIL(i3rt_case_refine(c, 0), I3RT_ERR_INVALID_ARGUMENT, "refinement model");
    /* Nothing refined yet: neither a buffer nor a file. */
    int64_t shape[3];
    cr_assert_eq(i3rt_case_get_shape(c, shape), I3RT_OK);
    const int64_t n = shape[0] * shape[1] * shape[2];
    int32_t *seg = malloc((size_t)n * sizeof *seg);
    EXPECT_FAIL(i3rt_case_get_segmentation(c, 1, seg, n), I3RT_ERR_INVALID_ARGUMENT, "refined");
    EXPECT_FAIL(i3rt_case_save_segmentation(c, temp("refined.nii.gz"), 1), I3RT_ERR_INVALID_ARGUMENT, "refined.nii.gz");
    cr_expect_eq(count_files(), 0);
    /* Unwritable paths: a missing directory, a file used as a directory. No file, nothing left over. */
    EXPECT_FAIL(i3rt_case_save_segmentation(c, temp("no/dir/seg.nii.gz"), 0), I3RT_ERR_IO, "no/dir/seg.nii.gz");
    cr_assert_eq(i3rt_case_save_segmentation(c, temp("seg.nii.gz"), 0), I3RT_OK, "%s", i3rt_context_error(ctx));
    EXPECT_FAIL(i3rt_case_save_segmentation(c, temp("seg.nii.gz/inner.nii.gz"), 0), I3RT_ERR_IO, "inner.nii.gz");
    cr_expect_eq(count_files(), 1, "only seg.nii.gz may be there");
    /* A failed save over an existing file keeps it whole. */
    size_t len_before, len_after;
    char *before = fx_read_file(temp("seg.nii.gz"), &len_before);
    EXPECT_FAIL(i3rt_case_save_segmentation(c, temp("seg.nii.gz"), 1), I3RT_ERR_INVALID_ARGUMENT, "seg.nii.gz");
    char *after = fx_read_file(temp("seg.nii.gz"), &len_after);
    cr_expect(len_before == len_after && memcmp(before, after, len_before) == 0, "seg.nii.gz changed");
    free(before);
    free(after);
    /* The case still works. */
    cr_expect_eq(i3rt_case_get_segmentation(c, 0, seg, n), I3RT_OK);
    free(seg);
    i3rt_case_free(c);
}

Test(api_i3deep, argument_errors_are_messages) {
    const char *image = fixture("eval501_001_0000.nii.gz"), *missing = temp("missing.nii.gz"), *null_path = NULL;
    i3rt_case *c = (i3rt_case *)1;
    cr_expect_eq(i3rt_case_open(NULL, &image, 1, CLASSES, &c), I3RT_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(i3rt_case_open(ctx, &image, 1, CLASSES, NULL), I3RT_ERR_INVALID_ARGUMENT, "NULL output");
    EXPECT_FAIL(i3rt_case_open(ctx, NULL, 1, CLASSES, &c), I3RT_ERR_INVALID_ARGUMENT, "image files");
    cr_expect_null(c);
    EXPECT_FAIL(i3rt_case_open(ctx, &image, 0, CLASSES, &c), I3RT_ERR_INVALID_ARGUMENT, "0 image files");
    EXPECT_FAIL(i3rt_case_open(ctx, &null_path, 1, CLASSES, &c), I3RT_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT_FAIL(i3rt_case_open(ctx, &missing, 1, CLASSES, &c), I3RT_ERR_IO, "missing.nii.gz");
    EXPECT_FAIL(i3rt_case_open(ctx, &image, 1, 1, &c), I3RT_ERR_INVALID_ARGUMENT, "1 classes");
    cr_expect_null(c);
    /* NULL handles: a status, no crash. */
    int n = -1;
    cr_expect_eq(i3rt_case_add_model(NULL, "x", NULL, 0, 0), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3rt_case_compute_uncertainty(NULL), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3rt_case_recommend(NULL, NULL), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3rt_case_get_slices(NULL, NULL, 0, &n), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3rt_case_refine(NULL, 0), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3rt_case_save_segmentation(NULL, "x.nii.gz", 0), I3RT_ERR_INVALID_ARGUMENT);
    cr_expect_eq(i3rt_case_stage_seconds(NULL, I3RT_STAGE_REFINE), 0.0);
    i3rt_case_free(NULL);

    /* Stages out of order, then bad arguments on a working case. */
    cr_assert_eq(i3rt_case_open(ctx, &image, 1, CLASSES, &c), I3RT_OK, "%s", i3rt_context_error(ctx));
    int64_t shape[3];
    cr_assert_eq(i3rt_case_get_shape(c, shape), I3RT_OK);
    const int64_t voxels = shape[0] * shape[1] * shape[2];
    int32_t *seg = malloc((size_t)voxels * sizeof *seg);
    EXPECT_FAIL(i3rt_case_compute_uncertainty(c), I3RT_ERR_INVALID_ARGUMENT, "member");
    EXPECT_FAIL(i3rt_case_recommend(c, NULL), I3RT_ERR_INVALID_ARGUMENT, "uncertainty");
    EXPECT_FAIL(i3rt_case_get_segmentation(c, 0, seg, voxels), I3RT_ERR_INVALID_ARGUMENT, "pre-segmentation");
    EXPECT_FAIL(i3rt_case_simulate_expert_file(c, fixture("eval501_001_truth.nii.gz")), I3RT_ERR_INVALID_ARGUMENT,
                "no recommended slices");
    EXPECT_FAIL(i3rt_case_add_model(c, weights("brain_3d_fullres"), (const int[]){3}, 1, 0), I3RT_ERR_IO, "fold_3");
    EXPECT_FAIL(i3rt_case_add_model(c, weights("brain_3d_fullres"), NULL, 2, 0), I3RT_ERR_INVALID_ARGUMENT, "folds");
    cr_assert_eq(i3rt_case_add_model(c, weights("brain_3d_fullres"), (const int[]){0}, 1, 0), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    cr_assert_eq(i3rt_case_compute_uncertainty(c), I3RT_OK);
    i3rt_recommend_params p;
    i3rt_recommend_params_default(&p);
    cr_expect(p.min_dist == 0.0234 && p.min_uncert == 0.1 && p.max_slices == 12);
    p.max_slices = 0;
    EXPECT_FAIL(i3rt_case_recommend(c, &p), I3RT_ERR_INVALID_ARGUMENT, "max_slices");
    p.max_slices = INT_MAX;  /* no more slices than the volume has are kept, nor allocated */
    cr_expect_eq(i3rt_case_recommend(c, &p), I3RT_OK, "%s", i3rt_context_error(ctx));
    p.max_slices = 5;
    cr_assert_eq(i3rt_case_recommend(c, &p), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3rt_slice one;
    cr_expect_eq(i3rt_case_get_slices(c, &one, 1, &n), I3RT_OK);
    cr_expect(n >= 1 && n <= 5 && one.relative == 1.0, "%d slices, the first at %.3f of its axis's largest", n,
              one.relative);
    EXPECT_FAIL(i3rt_case_get_slices(c, NULL, 3, &n), I3RT_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT_FAIL(i3rt_case_get_segmentation(c, 0, seg, voxels - 1), I3RT_ERR_INVALID_ARGUMENT, "buffer");
    EXPECT_FAIL(i3rt_case_get_segmentation(c, 0, NULL, voxels), I3RT_ERR_INVALID_ARGUMENT, "NULL");
    /* Corrections: an axis that does not exist, a wrong shape, a truth on another grid. */
    int32_t *plane = calloc((size_t)(shape[1] * shape[2]), sizeof *plane);
    EXPECT_FAIL(i3rt_case_submit(c, (i3rt_axis)3, 0, plane, shape[1], shape[2]), I3RT_ERR_INVALID_ARGUMENT, "axis 3");
    EXPECT_FAIL(i3rt_case_submit(c, I3RT_AXIAL, 0, plane, shape[2], shape[1]), I3RT_ERR_SHAPE, "i3rt_case_submit");
    cr_expect_eq(i3rt_case_submit(c, I3RT_AXIAL, 0, plane, shape[1], shape[2]), I3RT_OK, "%s", i3rt_context_error(ctx));
    EXPECT_FAIL(i3rt_case_submit_file(c, temp("nameless.png")), I3RT_ERR_INVALID_ARGUMENT, "nameless.png");
    EXPECT_FAIL(i3rt_case_simulate_expert_file(c, fixture("eval501_000_truth.nii.gz")), I3RT_ERR_SHAPE,
                "eval501_000_truth.nii.gz");
    EXPECT_FAIL(i3rt_case_simulate_expert_file(c, NULL), I3RT_ERR_INVALID_ARGUMENT, "ground-truth");
    EXPECT_FAIL(i3rt_case_simulate_expert(c, NULL), I3RT_ERR_INVALID_ARGUMENT, "ground truth");
    EXPECT_FAIL(i3rt_case_export(c, temp("no/such/dir"), "x"), I3RT_ERR_IO, "no/such/dir");
    free(plane);
    free(seg);
    i3rt_case_free(c);
}
