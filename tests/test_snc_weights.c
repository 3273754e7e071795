/* The committed Slice-and-Conquer weights (weights/snc_brain/, scripts/train_snc.py, docs/snc-training.md)
 * load into a session and segment a small real crop sanely: one iteration of the simulated user (RITM's
 * clicker on the truth's largest cross-section, then the guided 3D step) on a held-out 40^3 crop of the
 * right thalamus (fixture tests/gen_snc_weights.py). Fails if a weight file is missing, refused, or the
 * networks no longer find the structure (2D or 3D Dice <= 0.5). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>

#include "fixtures.h"
#include "i3rt.h"
#include "volume_io.h"

static const char *weight_file(const char *name) {
    const char *src = getenv("I3RT_SOURCE_DIR");
    cr_assert(src, "I3RT_SOURCE_DIR is not set (run through ctest)");
    static char path[2][1024];
    static int next;
    char *p = path[next++ % 2];
    snprintf(p, sizeof path[0], "%s/weights/snc_brain/%s", src, name);
    return p;
}

Test(snc_weights, one_iteration_on_a_real_crop) {
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    const char *dir = fx_fixture_dir("snc_weights");

    i3_volume truth_f;
    cr_assert_eq(i3_volume_read(ctx, fx_path(dir, "truth.nii.gz"), &truth_f), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    const int64_t n = truth_f.d * truth_f.h * truth_f.w;
    uint8_t *truth = malloc(n);
    int64_t fg = 0;
    for (int64_t i = 0; i < n; i++) fg += truth[i] = truth_f.data[i] > 0.5f;
    i3_volume_free(&truth_f);
    cr_assert_gt(fg, 0);

    i3rt_snc_params params;
    i3rt_snc_params_default(&params);
    params.zoom_in = 0; /* the evaluated setting (docs/snc-evaluation.md) and fast on 40 x 40 slices */
    i3rt_snc_session *s = NULL;
    cr_assert_eq(i3rt_snc_open(ctx, fx_path(dir, "image.nii.gz"), &params, &s), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    cr_assert_eq(i3rt_snc_load_2d(s, weight_file("hrnet18s_2d.safetensors")), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    cr_assert_eq(i3rt_snc_load_3d(s, weight_file("guided3d.safetensors")), I3RT_OK, "%s",
                 i3rt_context_error(ctx));

    i3rt_snc_iteration it;
    int done = 0;
    cr_assert_eq(i3rt_snc_simulate(s, truth, n, 1, &it, &done), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(done, 1);
    printf("snc_weights: slice %d %lld, %d clicks, 2D Dice %.4f, 3D Dice %.4f, %.2f s\n", (int)it.axis,
           (long long)it.index, it.clicks, it.slice_dice, it.dice, it.seconds);
    cr_assert_gt(it.slice_dice, 0.5, "2D Dice %.4f after %d clicks", it.slice_dice, it.clicks);
    cr_assert_gt(it.dice, 0.5, "3D Dice %.4f after the first slice", it.dice);

    i3rt_snc_free(s);
    free(truth);
    i3rt_context_free(ctx);
}
