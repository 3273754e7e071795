/* The committed Slice-and-Conquer weights (weights/snc_brain/, scripts/train_snc.py, docs/snc-training.md)
 * load into a session and segment a small real crop sanely: three iterations of the simulated user (RITM's
 * clicker on the truth's largest cross-section, the guided 3D step, then the recommended slices) on a
 * held-out 40^3 crop of the right thalamus (fixture tests/gen_snc_weights.py). Fails if a weight file is
 * missing, refused, or the networks no longer find the structure: the first slice's 2D Dice <= 0.7, or no
 * 3D Dice above 0.35 (the accepted slices pasted alone give ~0.1; docs/snc-training.md has the values of
 * each committed version of the weights). */
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

    i3rt_snc_iteration it[3];
    int done = 0;
    cr_assert_eq(i3rt_snc_simulate(s, truth, n, 3, it, &done), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(done, 3);
    double best = 0.0;
    for (int i = 0; i < done; i++) {
        printf("snc_weights: iteration %d: slice %d %lld, %d clicks, 2D Dice %.4f, 3D Dice %.4f, %.2f s\n", i + 1,
               (int)it[i].axis, (long long)it[i].index, it[i].clicks, it[i].slice_dice, it[i].dice, it[i].seconds);
        if (it[i].dice > best) best = it[i].dice;
    }
    cr_assert_gt(it[0].slice_dice, 0.7, "first slice: 2D Dice %.4f after %d clicks", it[0].slice_dice, it[0].clicks);
    cr_assert_gt(best, 0.35, "3D Dice at most %.4f over %d iterations", best, done);

    i3rt_snc_free(s);
    free(truth);
    i3rt_context_free(ctx);
}
