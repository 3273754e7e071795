/* nnU-Net preprocessing and sliding-window building blocks against nnunetv2 itself (fixtures from
 * tests/gen_preprocess.py: nnunetv2 2.8.1, scipy, skimage on random inputs of odd shapes).
 *
 * Tolerances: resampling (spline order 3 and 1, separate z) 1e-4 relative to the reference's largest
 * magnitude (the C code works in double like scipy; the residue is float32 output rounding); label maps
 * (resize_segmentation) exactly; masks,
 * boxes, transposes, sliding-window steps and the fp16 Gaussian exactly; normalization 1e-5 relative
 * (statistics in double here, float32 pairwise sums in numpy). */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess.h"
#include "sliding_window.h"
#include "fixtures.h"

static void ints(const cJSON *c, const char *key, int64_t *out, int n) {
    const cJSON *a = cJSON_GetObjectItem(c, key);
    cr_assert(cJSON_IsArray(a) && cJSON_GetArraySize(a) == n, "manifest: %s", key);
    for (int i = 0; i < n; i++) out[i] = (int64_t)cJSON_GetArrayItem(a, i)->valuedouble;
}

static void doubles(const cJSON *c, const char *key, double *out, int n) {
    const cJSON *a = cJSON_GetObjectItem(c, key);
    cr_assert(cJSON_IsArray(a) && cJSON_GetArraySize(a) == n, "manifest: %s", key);
    for (int i = 0; i < n; i++) out[i] = cJSON_GetArrayItem(a, i)->valuedouble;
}

static const char *kind(const cJSON *c) { return cJSON_GetObjectItem(c, "kind")->valuestring; }
static const char *name(const cJSON *c) { return cJSON_GetObjectItem(c, "name")->valuestring; }

#define FOR_CASES(m, k, c) \
    for (const cJSON *c = cJSON_GetObjectItem(m, "cases")->child; c; c = c->next) if (strcmp(kind(c), k) == 0)

Test(preprocess, resample_matches_nnunet) {
    cJSON *m = fx_manifest("preprocess");
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    int n_cases = 0;
    FOR_CASES(m, "resample", c) {
        int64_t shape[4], out[3];
        double cur[3], new_[3];
        ints(c, "shape", shape, 4);
        ints(c, "out_shape", out, 3);
        doubles(c, "current_spacing", cur, 3);
        doubles(c, "new_spacing", new_, 3);
        const i3_resample_params p = {cJSON_GetObjectItem(c, "order")->valueint, cJSON_GetObjectItem(c, "order_z")->valueint,
                                      cJSON_GetObjectItem(c, "force_separate_z")->valueint};
        const size_t n_in = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]), n_out = (size_t)(shape[0] * out[0] * out[1] * out[2]);
        float *x = fx_manifest_array("preprocess", c, "input", n_in, 4), *ref = fx_manifest_array("preprocess", c, "expected", n_out, 4);
        float *y = calloc(n_out, sizeof *y);
        cr_assert_eq(i3_resample(ctx, x, shape[0], shape + 1, out, cur, new_, &p, y, 2), I3RT_OK, "%s: %s", name(c),
                     i3rt_context_error(ctx));
        double max_abs = 0, ref_max = 0;
        for (size_t i = 0; i < n_out; i++) {
            max_abs = fmax(max_abs, fabs((double)y[i] - ref[i]));
            ref_max = fmax(ref_max, fabs(ref[i]));
        }
        int sep, axis;
        i3_resample_decide(&p, cur, new_, &sep, &axis);
        printf("resample %-10s %lldx%lldx%lld -> %lldx%lldx%lld order %d sep_z %d axis %2d: max abs %.3g, rel %.3g\n",
               name(c), (long long)shape[1], (long long)shape[2], (long long)shape[3], (long long)out[0],
               (long long)out[1], (long long)out[2], p.order, sep, axis, max_abs, max_abs / fmax(ref_max, 1e-30));
        cr_expect_leq(max_abs, 1e-4 * fmax(ref_max, 1.0), "%s: max abs error %g (reference max %g)", name(c), max_abs,
                      ref_max);
        free(x), free(ref), free(y);
        n_cases++;
    }
    cr_assert_geq(n_cases, 10);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

Test(preprocess, resample_labels_matches_nnunet) {
    cJSON *m = fx_manifest("preprocess");
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    int n_cases = 0;
    FOR_CASES(m, "labels", c) {
        int64_t shape[3], out[3];
        double cur[3], new_[3];
        ints(c, "shape", shape, 3);
        ints(c, "out_shape", out, 3);
        doubles(c, "current_spacing", cur, 3);
        doubles(c, "new_spacing", new_, 3);
        const i3_resample_params p = {1, 0, -1}; /* nnU-Net's resampling_fn_seg_kwargs */
        const size_t n_in = (size_t)(shape[0] * shape[1] * shape[2]), n_out = (size_t)(out[0] * out[1] * out[2]);
        float *x = fx_manifest_array("preprocess", c, "input", n_in, 4), *ref = fx_manifest_array("preprocess", c, "expected", n_out, 4);
        int16_t *xi = malloc(n_in * sizeof *xi), *y = calloc(n_out, sizeof *y);
        for (size_t i = 0; i < n_in; i++) xi[i] = (int16_t)x[i];
        cr_assert_eq(i3_resample_labels(ctx, xi, shape, out, cur, new_, &p, y, 2), I3RT_OK, "%s: %s", name(c),
                     i3rt_context_error(ctx));
        size_t differ = 0;
        for (size_t i = 0; i < n_out; i++) differ += y[i] != (int16_t)ref[i];
        int sep, axis;
        i3_resample_decide(&p, cur, new_, &sep, &axis);
        printf("labels   %-10s %lldx%lldx%lld -> %lldx%lldx%lld sep_z %d axis %2d: %zu of %zu voxels differ\n", name(c),
               (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)out[0], (long long)out[1],
               (long long)out[2], sep, axis, differ, n_out);
        cr_expect_eq(differ, 0, "%s: %zu voxels differ from resize_segmentation", name(c), differ);
        free(x), free(ref), free(xi), free(y);
        n_cases++;
    }
    cr_assert_geq(n_cases, 7);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

Test(preprocess, nonzero_mask_fill_holes_and_bbox) {
    cJSON *m = fx_manifest("preprocess");
    FOR_CASES(m, "mask", c) {
        int64_t shape[4], bbox[6];
        ints(c, "shape", shape, 4);
        const cJSON *b = cJSON_GetObjectItem(c, "bbox");
        for (int a = 0; a < 3; a++) {
            const cJSON *ab = cJSON_GetArrayItem(b, a);
            bbox[2 * a] = (int64_t)cJSON_GetArrayItem(ab, 0)->valuedouble;
            bbox[2 * a + 1] = (int64_t)cJSON_GetArrayItem(ab, 1)->valuedouble;
        }
        const size_t n = (size_t)(shape[1] * shape[2] * shape[3]);
        float *x = fx_manifest_array("preprocess", c, "input", n * (size_t)shape[0], 4);
        uint8_t *ref = fx_manifest_array("preprocess", c, "expected", n, 1), *mask = malloc(n);
        cr_assert_eq(i3_nonzero_mask(NULL, x, shape[0], shape + 1, mask), I3RT_OK);
        int64_t lo[3], hi[3];
        i3_mask_bbox(mask, shape + 1, lo, hi);
        size_t diff = 0;
        for (size_t i = 0; i < n; i++) {
            const int64_t z = (int64_t)i / (shape[2] * shape[3]), y = (int64_t)i / shape[3] % shape[2], xx = (int64_t)i % shape[3];
            const bool inside = z >= lo[0] && z < hi[0] && y >= lo[1] && y < hi[1] && xx >= lo[2] && xx < hi[2];
            diff += (inside ? mask[i] : 0) != ref[i];
        }
        printf("mask %s: bbox [%lld:%lld, %lld:%lld, %lld:%lld], %zu voxels differ\n", name(c), (long long)lo[0],
               (long long)hi[0], (long long)lo[1], (long long)hi[1], (long long)lo[2], (long long)hi[2], diff);
        for (int a = 0; a < 3; a++) {
            cr_expect_eq(lo[a], bbox[2 * a], "%s: bbox axis %d starts at %lld, nnU-Net %lld", name(c), a, (long long)lo[a],
                         (long long)bbox[2 * a]);
            cr_expect_eq(hi[a], bbox[2 * a + 1], "%s: bbox axis %d ends at %lld, nnU-Net %lld", name(c), a, (long long)hi[a],
                         (long long)bbox[2 * a + 1]);
        }
        cr_expect_eq(diff, 0, "%s: %zu mask voxels differ from binary_fill_holes", name(c), diff);
        free(x), free(ref), free(mask);
    }
    cJSON_Delete(m);
}

Test(preprocess, normalization_schemes) {
    cJSON *m = fx_manifest("preprocess");
    int n_cases = 0;
    FOR_CASES(m, "norm", c) {
        int64_t shape[3];
        ints(c, "shape", shape, 3);
        const size_t n = (size_t)(shape[0] * shape[1] * shape[2]);
        float *x = fx_manifest_array("preprocess", c, "input", n, 4), *ref = fx_manifest_array("preprocess", c, "expected", n, 4);
        uint8_t *mask = fx_manifest_array("preprocess", c, "mask", n, 1);
        const cJSON *props = cJSON_GetObjectItem(c, "props");
        const char *scheme = cJSON_GetObjectItem(c, "scheme")->valuestring;
        i3_norm_channel p = {.use_mask = cJSON_GetObjectItem(c, "use_mask")->valueint,
                             .mean = cJSON_GetObjectItem(props, "mean")->valuedouble,
                             .std = cJSON_GetObjectItem(props, "std")->valuedouble,
                             .percentile_00_5 = cJSON_GetObjectItem(props, "percentile_00_5")->valuedouble,
                             .percentile_99_5 = cJSON_GetObjectItem(props, "percentile_99_5")->valuedouble};
        p.scheme = strncmp(scheme, "zscore", 6) == 0 ? I3_NORM_ZSCORE : strcmp(scheme, "ct") == 0 ? I3_NORM_CT
                                                                                                   : I3_NORM_RESCALE_01;
        cr_assert_eq(i3_normalize_channel(NULL, x, (int64_t)n, mask, &p, 0), I3RT_OK);
        double max_abs = 0, ref_max = 0;
        for (size_t i = 0; i < n; i++) {
            max_abs = fmax(max_abs, fabs((double)x[i] - ref[i]));
            ref_max = fmax(ref_max, fabs(ref[i]));
        }
        printf("normalization %-12s max abs %.3g (reference max %.3g)\n", scheme, max_abs, ref_max);
        cr_expect_leq(max_abs, 1e-5 * fmax(ref_max, 1.0), "%s: max abs error %g", scheme, max_abs);
        free(x), free(ref), free(mask);
        n_cases++;
    }
    cr_assert_eq(n_cases, 4);
    cJSON_Delete(m);
}

Test(preprocess, transpose) {
    cJSON *m = fx_manifest("preprocess");
    FOR_CASES(m, "transpose", c) {
        int64_t shape[4], perm64[3], out_shape[3];
        ints(c, "shape", shape, 4);
        ints(c, "perm", perm64, 3);
        const int perm[3] = {(int)perm64[0], (int)perm64[1], (int)perm64[2]};
        const size_t n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
        float *x = fx_manifest_array("preprocess", c, "input", n, 4), *ref = fx_manifest_array("preprocess", c, "expected", n, 4), *y = malloc(n * 4);
        i3_transpose3(x, shape[0], shape + 1, perm, y, out_shape, 2);
        for (int a = 0; a < 3; a++) cr_expect_eq(out_shape[a], shape[1 + perm[a]]);
        cr_expect_eq(memcmp(y, ref, n * 4), 0, "%s differs from numpy", name(c));
        free(x), free(ref), free(y);
    }
    cJSON_Delete(m);
}

Test(sliding_window, gaussian_and_steps_match_nnunet) {
    cJSON *m = fx_manifest("preprocess");
    FOR_CASES(m, "gaussian", c) {
        const cJSON *pa = cJSON_GetObjectItem(c, "patch");
        const int dims = cJSON_GetArraySize(pa);
        int64_t patch[3] = {1, 1, 1};
        for (int i = 0; i < dims; i++) patch[3 - dims + i] = (int64_t)cJSON_GetArrayItem(pa, i)->valuedouble;
        const size_t n = (size_t)(patch[0] * patch[1] * patch[2]);
        float *ref = fx_manifest_array("preprocess", c, "expected", n, 4), *g = malloc(n * 4);
        i3_gaussian_importance_map(patch, dims, g);
        size_t diff = 0;
        for (size_t i = 0; i < n; i++) diff += g[i] != ref[i];
        printf("gaussian %s: %zu of %zu fp16 values differ\n", name(c), diff, n);
        cr_expect_eq(diff, 0, "%s: %zu values differ from compute_gaussian", name(c), diff);
        free(ref), free(g);
    }
    FOR_CASES(m, "steps", c) {
        for (const cJSON *s = cJSON_GetObjectItem(c, "steps")->child; s; s = s->next) {
            const int64_t image = (int64_t)cJSON_GetObjectItem(s, "image")->valuedouble;
            const int64_t tile = (int64_t)cJSON_GetObjectItem(s, "tile")->valuedouble;
            const double step = cJSON_GetObjectItem(s, "step")->valuedouble;
            const cJSON *ref = cJSON_GetObjectItem(s, "steps");
            int64_t steps[I3_MAX_SW_STEPS];
            const int n = i3_sliding_window_steps(image, tile, step, steps);
            cr_expect_eq(n, cJSON_GetArraySize(ref), "image %lld tile %lld step %g: %d steps", (long long)image,
                         (long long)tile, step, n);
            for (int i = 0; i < n && i < cJSON_GetArraySize(ref); i++)
                cr_expect_eq(steps[i], (int64_t)cJSON_GetArrayItem(ref, i)->valuedouble);
        }
    }
    cJSON_Delete(m);
}
