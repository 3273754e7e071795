/* nnInteractive's AutoZoom and refinement arrays (runtime/ni_zoom.c, runtime/np_random.c) against the
 * Python functions themselves (fixtures from tests/gen_ni_zoom.py, nninteractive 2.6.0 on the CPU):
 * _build_network_input, the refinement tiles' inputs of _refine_coarse_with_local_cache, the border test,
 * the coarse up-sampling, the pooling, generate_bounding_boxes, _plan_refinement_bboxes and numpy's legacy
 * RNG. Everything must match exactly (bit for bit, same boxes in the same order); printed per case: the
 * number of differing values and the largest difference. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "ni_zoom.h"

static void ints(const cJSON *c, const char *key, int64_t *out, int n) {
    const cJSON *a = cJSON_GetObjectItem(c, key);
    cr_assert(cJSON_IsArray(a) && cJSON_GetArraySize(a) == n, "manifest: %s", key);
    for (int i = 0; i < n; i++) out[i] = (int64_t)cJSON_GetArrayItem(a, i)->valuedouble;
}

static double num(const cJSON *c, const char *key) { return cJSON_GetObjectItem(c, key)->valuedouble; }
static const char *kind(const cJSON *c) { return cJSON_GetObjectItem(c, "kind")->valuestring; }
static const char *name(const cJSON *c) { return cJSON_GetObjectItem(c, "name")->valuestring; }
static int64_t prod3(const int64_t s[3]) { return s[0] * s[1] * s[2]; }

/* [[lo, hi] x 3] */
static i3rt_box box_of(const cJSON *b) {
    i3rt_box r;
    for (int a = 0; a < 3; a++) {
        const cJSON *ax = cJSON_GetArrayItem(b, a);
        r.lo[a] = (int64_t)cJSON_GetArrayItem(ax, 0)->valuedouble;
        r.hi[a] = (int64_t)cJSON_GetArrayItem(ax, 1)->valuedouble;
    }
    return r;
}

/* index of voxel (z, y, x) in an array covering box b */
static int64_t at(const i3rt_box *b, int64_t z, int64_t y, int64_t x) {
    return ((z - b->lo[0]) * (b->hi[1] - b->lo[1]) + y - b->lo[1]) * (b->hi[2] - b->lo[2]) + x - b->lo[2];
}

static int same_box(const i3rt_box *a, const i3rt_box *b) {
    return !memcmp(a->lo, b->lo, sizeof a->lo) && !memcmp(a->hi, b->hi, sizeof a->hi);
}

#define FOR_CASES(m, k, c) \
    for (const cJSON *c = cJSON_GetObjectItem(m, "cases")->child; c; c = c->next) if (strcmp(kind(c), k) == 0)

/* Differing floats and the largest difference; prints one line. */
static int64_t count_diff_f32(const char *label, const float *got, const float *ref, int64_t n) {
    int64_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        if (got[i] != ref[i] || isnan(got[i]) != isnan(ref[i])) bad++;
        worst = fmax(worst, fabs((double)got[i] - (double)ref[i]));
    }
    printf("%-28s %lld of %lld values differ, max |diff| %.3g\n", label, (long long)bad, (long long)n, worst);
    return bad;
}

static int64_t count_diff_bytes(const char *label, const void *got, const void *ref, int64_t n, size_t elem) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += memcmp((const char *)got + i * elem, (const char *)ref + i * elem, elem) != 0;
    printf("%-28s %lld of %lld values differ\n", label, (long long)bad, (long long)n);
    return bad;
}

static i3rt_context *context(void) {
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    return ctx;
}

/* The fixture's volume: image, 7 channels (prev_seg 0, points 3/4 and scribbles 5/6 dilated). */
static ni_volume volume_of(const cJSON *c, float **image, uint16_t **inter) {
    ni_volume v = {0};
    ints(c, "shape", v.shape, 3);
    v.n_channels = 7;
    *image = fx_manifest_array("ni_zoom", c, "image", (size_t)prod3(v.shape), 4);
    *inter = fx_manifest_array("ni_zoom", c, "interactions", (size_t)(7 * prod3(v.shape)), 2);
    v.image = *image, v.interactions = *inter;
    v.nonzero_channels = ~0u;
    v.dilation_channels = (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6);
    v.intensity = num(c, "intensity");
    return v;
}

Test(ni_zoom, rng_matches_numpy_legacy) {
    cJSON *m = fx_manifest("ni_zoom");
    int n_cases = 0;
    FOR_CASES(m, "rng", c) {
        np_random r;
        np_random_seed(&r, (uint32_t)num(c, "seed"));
        const cJSON *ns = cJSON_GetObjectItem(c, "ns"), *d = cJSON_GetObjectItem(c, "draws")->child;
        int bad = 0, count = 0;
        for (int k = 0; d; k++)
            for (const cJSON *n = ns->child; n && d; n = n->next, d = d->next, count++)
                bad += np_random_choice(&r, (int64_t)n->valuedouble) != (int64_t)d->valuedouble;
        printf("%-28s %d of %d draws differ\n", name(c), bad, count);
        cr_expect_eq(bad, 0, "%s", name(c));
        n_cases++;
    }
    cr_assert_gt(n_cases, 0);
    cJSON_Delete(m);
}

Test(ni_zoom, network_input_matches_build_network_input) {
    cJSON *m = fx_manifest("ni_zoom");
    i3rt_context *ctx = context();
    int n_cases = 0;
    FOR_CASES(m, "input", c) {
        float *image;
        uint16_t *inter;
        ni_volume v = volume_of(c, &image, &inter);
        int64_t patch[3], center[3], nonzero[7];
        ints(c, "patch", patch, 3);
        ints(c, "center", center, 3);
        ints(c, "nonzero", nonzero, 7);
        const int64_t np = prod3(patch);
        float *ref = fx_manifest_array("ni_zoom", c, "input", (size_t)(8 * np), 4);
        uint16_t *ref_prev = fx_manifest_array("ni_zoom", c, "prev", (size_t)np, 2);
        const i3rt_box ref_box = box_of(cJSON_GetObjectItem(c, "bbox"));
        float *got = malloc((size_t)(8 * np) * sizeof *got);
        uint16_t *prev = malloc((size_t)np * sizeof *prev);
        for (int threads = 1; threads <= 2; threads++) {
            /* the second pass tells the function which channels are empty, as the session does */
            v.nonzero_channels = ~0u;
            for (int ch = 0; threads == 2 && ch < 7; ch++)
                if (!nonzero[ch]) v.nonzero_channels &= ~(1u << ch);
            i3rt_box box;
            cr_assert_eq(ni_build_network_input(ctx, &v, patch, center, num(c, "zoom"), got, prev, &box, threads), I3RT_OK);
            char label[96];
            snprintf(label, sizeof label, "%s t%d input", name(c), threads);
            cr_expect_eq(count_diff_f32(label, got, ref, 8 * np), 0, "%s", label);
            snprintf(label, sizeof label, "%s t%d prev_pred", name(c), threads);
            cr_expect_eq(count_diff_bytes(label, prev, ref_prev, np, 2), 0, "%s", label);
            cr_expect(same_box(&box, &ref_box), "%s: scaled bbox", name(c));
        }
        free(image), free(inter), free(ref), free(ref_prev), free(got), free(prev);
        n_cases++;
    }
    cr_assert_eq(n_cases, 11);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

/* _refine_coarse_with_local_cache as the session runs it on these functions: a prev_seg cache over the
 * tiles' hull (stored prev_seg inside the image, the coarse prediction injected there), each tile's input
 * with the cache as prev_seg, the tile's prediction pasted into the cache; then the tiles' cache regions
 * into prev_seg and the target. The Python stand-in network's inputs and answers are the reference. */
Test(ni_zoom, refinement_tiles_match_refine_coarse) {
    cJSON *m = fx_manifest("ni_zoom");
    i3rt_context *ctx = context();
    int n_cases = 0;
    FOR_CASES(m, "tiles", c) {
        float *image;
        uint16_t *inter;
        ni_volume v = volume_of(c, &image, &inter);
        int64_t patch[3];
        ints(c, "patch", patch, 3);
        const int64_t np = prod3(patch), nvox = prod3(v.shape);
        const cJSON *tiles = cJSON_GetObjectItem(c, "tiles");
        const int n_tiles = cJSON_GetArraySize(tiles);
        const i3rt_box coarse_box = box_of(cJSON_GetObjectItem(c, "coarse_box"));
        int64_t coarse_shape[3], hull_shape[3];
        i3rt_box hull = box_of(cJSON_GetArrayItem(tiles, 0));
        for (int t = 1; t < n_tiles; t++) {
            const i3rt_box b = box_of(cJSON_GetArrayItem(tiles, t));
            for (int a = 0; a < 3; a++) {
                hull.lo[a] = b.lo[a] < hull.lo[a] ? b.lo[a] : hull.lo[a];
                hull.hi[a] = b.hi[a] > hull.hi[a] ? b.hi[a] : hull.hi[a];
            }
        }
        for (int a = 0; a < 3; a++) {
            coarse_shape[a] = coarse_box.hi[a] - coarse_box.lo[a];
            hull_shape[a] = hull.hi[a] - hull.lo[a];
        }
        uint8_t *coarse = fx_manifest_array("ni_zoom", c, "coarse", (size_t)prod3(coarse_shape), 1);
        float *ref_inputs = fx_manifest_array("ni_zoom", c, "inputs", (size_t)(n_tiles * 8 * np), 4);
        uint8_t *preds = fx_manifest_array("ni_zoom", c, "preds", (size_t)(n_tiles * np), 1);
        uint8_t *ref_target = fx_manifest_array("ni_zoom", c, "target", (size_t)nvox, 1);
        uint16_t *ref_prev_seg = fx_manifest_array("ni_zoom", c, "prev_seg", (size_t)nvox, 2);
        uint16_t *cache = calloc((size_t)prod3(hull_shape), 2);
        uint8_t *target = malloc((size_t)nvox);
        float *got = malloc((size_t)(8 * np) * sizeof *got);
        for (int64_t i = 0; i < nvox; i++) target[i] = inter[i] != 0;
        /* the cache: the stored prev_seg inside the image, the coarse prediction where it is in the image */
        for (int64_t z = hull.lo[0]; z < hull.hi[0]; z++)
            for (int64_t y = hull.lo[1]; y < hull.hi[1]; y++)
                for (int64_t x = hull.lo[2]; x < hull.hi[2]; x++) {
                    const int64_t p[3] = {z, y, x};
                    int in_image = 1, in_coarse = 1;
                    for (int a = 0; a < 3; a++) {
                        in_image &= p[a] >= 0 && p[a] < v.shape[a];
                        in_coarse &= p[a] >= coarse_box.lo[a] && p[a] < coarse_box.hi[a];
                    }
                    uint16_t *dst = cache + at(&hull, z, y, x);
                    if (!in_image) continue;
                    *dst = inter[(z * v.shape[1] + y) * v.shape[2] + x];
                    if (in_coarse)
                        *dst = coarse[at(&coarse_box, z, y, x)] ? 0x3c00 : 0;
                }
        v.prev_seg = cache, v.prev_seg_box = hull;
        int64_t bad = 0;
        for (int t = 0; t < n_tiles; t++) {
            const i3rt_box b = box_of(cJSON_GetArrayItem(tiles, t));
            const int64_t center[3] = {b.lo[0] + patch[0] / 2, b.lo[1] + patch[1] / 2, b.lo[2] + patch[2] / 2};
            i3rt_box box;
            cr_assert_eq(ni_build_network_input(ctx, &v, patch, center, 1.0, got, NULL, &box, 2), I3RT_OK);
            cr_expect(same_box(&box, &b), "%s tile %d: box", name(c), t);
            char label[96];
            snprintf(label, sizeof label, "%s tile %d input", name(c), t);
            bad += count_diff_f32(label, got, ref_inputs + (int64_t)t * 8 * np, 8 * np);
            for (int64_t i = 0; i < np; i++) {
                const int64_t z = b.lo[0] + i / (patch[1] * patch[2]), y = b.lo[1] + (i / patch[2]) % patch[1];
                cache[at(&hull, z, y, b.lo[2] + i % patch[2])] = preds[t * np + i] ? 0x3c00 : 0;
            }
        }
        for (int t = 0; t < n_tiles; t++) {
            const i3rt_box b = box_of(cJSON_GetArrayItem(tiles, t));
            for (int64_t z = b.lo[0] > 0 ? b.lo[0] : 0; z < b.hi[0] && z < v.shape[0]; z++)
                for (int64_t y = b.lo[1] > 0 ? b.lo[1] : 0; y < b.hi[1] && y < v.shape[1]; y++)
                    for (int64_t x = b.lo[2] > 0 ? b.lo[2] : 0; x < b.hi[2] && x < v.shape[2]; x++) {
                        const uint16_t s = cache[at(&hull, z, y, x)];
                        inter[(z * v.shape[1] + y) * v.shape[2] + x] = s;
                        target[(z * v.shape[1] + y) * v.shape[2] + x] = s != 0;
                    }
        }
        cr_expect_eq(bad, 0, "%s: tile inputs", name(c));
        cr_expect_eq(count_diff_bytes("  final target", target, ref_target, nvox, 1), 0, "%s: target", name(c));
        cr_expect_eq(count_diff_bytes("  final prev_seg", inter, ref_prev_seg, nvox, 2), 0, "%s: prev_seg", name(c));
        free(image), free(inter), free(coarse), free(ref_inputs), free(preds), free(ref_target), free(ref_prev_seg);
        free(cache), free(target), free(got);
        n_cases++;
    }
    cr_assert_gt(n_cases, 0);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

Test(ni_zoom, border_test_matches_detect_change_at_border) {
    cJSON *m = fx_manifest("ni_zoom");
    int n_cases = 0, n_changed = 0;
    FOR_CASES(m, "border", c) {
        int64_t shape[3];
        ints(c, "shape", shape, 3);
        uint8_t *pred = fx_manifest_array("ni_zoom", c, "pred", (size_t)prod3(shape), 1);
        uint16_t *prev = fx_manifest_array("ni_zoom", c, "prev", (size_t)prod3(shape), 2);
        const int got = ni_border_changed(pred, prev, shape), want = (int)num(c, "changed");
        printf("%-28s changed %d (Python %d)\n", name(c), got, want);
        cr_expect_eq(got, want, "%s", name(c));
        n_changed += want;
        free(pred), free(prev);
        n_cases++;
    }
    cr_assert(n_cases > n_changed && n_changed > 0, "the cases must cover both answers");
    cJSON_Delete(m);
}

Test(ni_zoom, upsample_matches_trilinear_threshold) {
    cJSON *m = fx_manifest("ni_zoom");
    int n_cases = 0;
    FOR_CASES(m, "upsample", c) {
        int64_t in[3], out[3];
        ints(c, "in", in, 3);
        ints(c, "out", out, 3);
        uint8_t *pred = fx_manifest_array("ni_zoom", c, "pred", (size_t)prod3(in), 1);
        uint8_t *ref = fx_manifest_array("ni_zoom", c, "up", (size_t)prod3(out), 1);
        uint8_t *got = malloc((size_t)prod3(out));
        ni_upsample_coarse(pred, in, out, got, 2);
        cr_expect_eq(count_diff_bytes(name(c), got, ref, prod3(out), 1), 0, "%s", name(c));
        free(pred), free(ref), free(got);
        n_cases++;
    }
    cr_assert_gt(n_cases, 0);
    cJSON_Delete(m);
}

Test(ni_zoom, pool_matches_iterative_pool3d) {
    cJSON *m = fx_manifest("ni_zoom");
    i3rt_context *ctx = context();
    int n_cases = 0;
    FOR_CASES(m, "pool", c) {
        int64_t shape[3];
        ints(c, "shape", shape, 3);
        uint8_t *x = fx_manifest_array("ni_zoom", c, "x", (size_t)prod3(shape), 1);
        uint8_t *ref = fx_manifest_array("ni_zoom", c, "y", (size_t)prod3(shape), 1);
        cr_assert_eq(ni_pool3d_u8(ctx, x, shape, (int)num(c, "k"), (int)num(c, "min"), 2), I3RT_OK);
        cr_expect_eq(count_diff_bytes(name(c), x, ref, prod3(shape), 1), 0, "%s", name(c));
        free(x), free(ref);
        n_cases++;
    }
    cr_assert_gt(n_cases, 0);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

/* Boxes in the same order as Python's list. */
static void expect_boxes(const char *label, const i3rt_box *got, int n_got, const cJSON *want) {
    const int n_want = cJSON_GetArraySize(want);
    int first_bad = -1;
    for (int i = 0; i < n_got && i < n_want && first_bad < 0; i++) {
        const i3rt_box b = box_of(cJSON_GetArrayItem(want, i));
        if (!same_box(&got[i], &b)) first_bad = i;
    }
    printf("%-28s %d boxes (Python %d), first difference at %d\n", label, n_got, n_want, first_bad);
    cr_expect(n_got == n_want && first_bad < 0, "%s: boxes differ", label);
}

Test(ni_zoom, cover_matches_generate_bounding_boxes) {
    cJSON *m = fx_manifest("ni_zoom");
    i3rt_context *ctx = context();
    int n_cases = 0;
    FOR_CASES(m, "cover", c) {
        int64_t shape[3], size[3], margin[3];
        ints(c, "shape", shape, 3);
        ints(c, "size", size, 3);
        ints(c, "margin", margin, 3);
        uint8_t *mask = fx_manifest_array("ni_zoom", c, "mask", (size_t)prod3(shape), 1);
        for (int threads = 1; threads <= 2; threads++) {
            np_random r;
            np_random_seed(&r, (uint32_t)num(c, "seed"));
            i3rt_box *boxes;
            int n;
            cr_assert_eq(ni_cover_boxes(ctx, mask, shape, size, margin, 3, &r, &boxes, &n, threads), I3RT_OK);
            char label[96];
            snprintf(label, sizeof label, "%s t%d", name(c), threads);
            expect_boxes(label, boxes, n, cJSON_GetObjectItem(c, "boxes"));
            free(boxes);
        }
        free(mask);
        n_cases++;
    }
    cr_assert_gt(n_cases, 0);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

Test(ni_zoom, plan_matches_plan_refinement_bboxes) {
    cJSON *m = fx_manifest("ni_zoom");
    i3rt_context *ctx = context();
    int n_cases = 0;
    FOR_CASES(m, "plan", c) {
        int64_t shape[3], patch[3], center[3], scaled[3];
        ints(c, "shape", shape, 3);
        ints(c, "patch", patch, 3);
        ints(c, "center", center, 3);
        const i3rt_box sb = box_of(cJSON_GetObjectItem(c, "scaled_box"));
        for (int a = 0; a < 3; a++) scaled[a] = sb.hi[a] - sb.lo[a];
        uint16_t *prev = fx_manifest_array("ni_zoom", c, "prev_seg", (size_t)prod3(shape), 2);
        uint8_t *pred = fx_manifest_array("ni_zoom", c, "pred", (size_t)prod3(scaled), 1);
        np_random r;
        np_random_seed(&r, (uint32_t)num(c, "seed"));
        i3rt_box *boxes;
        int n;
        cr_assert_eq(ni_plan_refinement(ctx, pred, &sb, prev, shape, patch, center, (int)num(c, "force"), &r, &boxes, &n, 2),
                     I3RT_OK);
        expect_boxes(name(c), boxes, n, cJSON_GetObjectItem(c, "boxes"));
        free(boxes), free(prev), free(pred);
        n_cases++;
    }
    cr_assert_gt(n_cases, 0);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}
