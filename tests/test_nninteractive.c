/* The nnInteractive session (runtime/nninteractive.c) against nnInteractive's own
 * nnInteractiveInferenceSession, prompt for prompt (fixture: tests/gen_nninteractive.py, contract in
 * its docstring): every sequence is replayed on the converted model and after every step
 *   - the target buffer agrees with Python's on >= 99.9 % of the voxels,
 *   - the prompt channels equal Python's exactly and the prev_seg channel agrees on >= 99.9 %,
 *   - ran_prediction and the changed box are Python's;
 * the figures are printed for every step. After a step whose masks differ (an argmax near-tie flipped: i3rt's
 * float32 kernels sum in another order than oneDNN), the next step starts from Python's target and prev_seg,
 * so that the difference is counted once. Then bad input: prompts outside the image, a 3D box, a mask
 * region that does not fit, predict before set_image, a missing model folder and a corrupt
 * inference_info.json give clear errors, and the session still works afterwards. Also: the double -> fp16
 * rounding of the prompt values, and the decay's renormalization past fp16's maximum (~550 prompts) with its
 * undo. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fixtures.h"
#include "nninteractive.h"

static const char *fixtures(void) {
    static char dir[1024];
    const char *root = getenv("I3RT_FIXTURES");
    cr_assert(root, "I3RT_FIXTURES is not set (run through ctest)");
    snprintf(dir, sizeof dir, "%s/nninteractive", root);
    return dir;
}

static void *read_fixture(const char *name, size_t expected_bytes) {
    size_t len = 0;
    char *data = fx_read_file(fx_path(fixtures(), name), &len);
    cr_assert(data, "cannot read %s/%s (run tests/gen_nninteractive.py)", fixtures(), name);
    cr_assert_eq(len, expected_bytes, "%s: %zu bytes, expected %zu", name, len, expected_bytes);
    return data;
}

static cJSON *steps_json(void) {
    char *text = fx_read_file(fx_path(fixtures(), "steps.json"), NULL);
    cr_assert(text, "cannot read %s/steps.json (run tests/gen_nninteractive.py)", fixtures());
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert(j, "steps.json is not valid JSON");
    return j;
}

static void json_shape(const cJSON *arr, int64_t out[3]) {
    cr_assert(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 3);
    for (int a = 0; a < 3; a++) out[a] = (int64_t)cJSON_GetArrayItem(arr, a)->valuedouble;
}

/* [[lo, hi] x 3] or null -> box (empty: all zero) */
static i3rt_box json_box(const cJSON *b) {
    i3rt_box box;
    memset(&box, 0, sizeof box);
    if (!cJSON_IsArray(b)) return box;
    for (int a = 0; a < 3; a++) {
        const cJSON *r = cJSON_GetArrayItem(b, a);
        box.lo[a] = (int64_t)cJSON_GetArrayItem(r, 0)->valuedouble;
        box.hi[a] = (int64_t)cJSON_GetArrayItem(r, 1)->valuedouble;
    }
    return box;
}

static i3rt_context *ctx_new(void) {
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    return ctx;
}

static i3rt_ni_session *session_new(i3rt_context *ctx) {
    i3rt_ni_session *s = NULL;
    const i3rt_status st = i3rt_ni_session_create(ctx, fx_path(fixtures(), "model"), -1, &s);
    cr_assert_eq(st, I3RT_OK, "session_create: %s", i3rt_context_error(ctx));
    return s;
}

/* The fixture image and its shape (steps.json's "shape"). */
static float *read_image(int64_t shape[3]) {
    cJSON *j = steps_json();
    json_shape(cJSON_GetObjectItem(j, "shape"), shape);
    cJSON_Delete(j);
    return read_fixture("image.f32", (size_t)(shape[0] * shape[1] * shape[2]) * sizeof(float));
}

/* Applies one step of steps.json; returns the status. */
static i3rt_status apply_step(i3rt_ni_session *s, const cJSON *step, const int64_t shape[3], i3rt_ni_result *r) {
    const char *kind = cJSON_GetObjectItem(step, "kind")->valuestring;
    const int positive = cJSON_IsTrue(cJSON_GetObjectItem(step, "positive"));
    const int run = cJSON_IsTrue(cJSON_GetObjectItem(step, "run_prediction"));
    memset(r, 0, sizeof *r);
    if (strcmp(kind, "point") == 0) {
        int64_t c[3];
        json_shape(cJSON_GetObjectItem(step, "coords"), c);
        return i3rt_ni_add_point(s, c, positive, run, r);
    }
    if (strcmp(kind, "box") == 0) {
        const i3rt_box b = json_box(cJSON_GetObjectItem(step, "box"));
        return i3rt_ni_add_box(s, &b, positive, run, r);
    }
    if (strcmp(kind, "scribble") == 0 || strcmp(kind, "lasso") == 0 || strcmp(kind, "initial_seg") == 0) {
        const cJSON *region = cJSON_GetObjectItem(step, "region");
        const i3rt_box b = json_box(region);
        int64_t n = 1;
        for (int a = 0; a < 3; a++) n *= cJSON_IsArray(region) ? b.hi[a] - b.lo[a] : shape[a];
        uint8_t *mask = read_fixture(cJSON_GetObjectItem(step, "mask")->valuestring, (size_t)n);
        const i3rt_box *rb = cJSON_IsArray(region) ? &b : NULL;
        i3rt_status st;
        if (kind[0] == 'i') st = i3rt_ni_add_initial_seg(s, mask, run, r);
        else if (kind[0] == 's') st = i3rt_ni_add_scribble(s, mask, rb, positive, run, r);
        else st = i3rt_ni_add_lasso(s, mask, rb, positive, run, r);
        free(mask);
        return st;
    }
    if (strcmp(kind, "predict") == 0) return i3rt_ni_predict(s, 0, r);
    if (strcmp(kind, "undo") == 0) {
        int undone = 0;
        const i3rt_status st = i3rt_ni_undo(s, &undone, &r->changed);
        r->ran_prediction = undone;
        return st;
    }
    if (strcmp(kind, "reset") == 0) return i3rt_ni_reset_interactions(s);
    cr_assert_fail("unknown step kind %s", kind);
    return I3RT_ERR_INVALID_ARGUMENT;
}

static bool box_equal(const i3rt_box *a, const i3rt_box *b) {
    return memcmp(a->lo, b->lo, sizeof a->lo) == 0 && memcmp(a->hi, b->hi, sizeof a->hi) == 0;
}

Test(nninteractive, parity_with_python_session) {
    cJSON *j = steps_json();
    int64_t shape[3];
    float *image = read_image(shape);
    const int64_t n = shape[0] * shape[1] * shape[2];
    i3rt_context *ctx = ctx_new();
    i3rt_ni_session *s = session_new(ctx);
    const int C = s->cap.n_channels;
    uint8_t *target = calloc((size_t)n, 1);
    double worst_target = 1, worst_prev = 1, total_i3rt = 0;
    int n_steps = 0, n_bbox_mismatch = 0, n_resynced = 0;
    const cJSON *seq;
    cJSON_ArrayForEach(seq, cJSON_GetObjectItem(j, "sequences")) {
        const char *name = cJSON_GetObjectItem(seq, "name")->valuestring;
        cr_assert_eq(i3rt_ni_set_do_autozoom(s, cJSON_IsTrue(cJSON_GetObjectItem(seq, "do_autozoom"))), I3RT_OK);
        cr_assert_eq(i3rt_ni_set_image(s, image, shape, NULL), I3RT_OK, "%s", i3rt_context_error(ctx));
        memset(target, 0, (size_t)n);
        cr_assert_eq(i3rt_ni_set_target_buffer(s, target, shape), I3RT_OK, "%s", i3rt_context_error(ctx));
        int k = 0;
        const cJSON *step;
        cJSON_ArrayForEach(step, cJSON_GetObjectItem(seq, "steps")) {
            const char *kind = cJSON_GetObjectItem(step, "kind")->valuestring;
            i3_ni_seed_rng(s, (uint32_t)cJSON_GetObjectItem(step, "rng_seed")->valuedouble);
            i3rt_ni_result r;
            const double t0 = i3_now_seconds();
            const i3rt_status st = apply_step(s, step, shape, &r);
            const double dt = i3_now_seconds() - t0;
            total_i3rt += dt;
            cr_assert_eq(st, I3RT_OK, "%s step %d (%s): %s", name, k, kind, i3rt_context_error(ctx));
            uint8_t *ref_target = read_fixture(cJSON_GetObjectItem(step, "target")->valuestring, (size_t)n);
            float *ref_inter = read_fixture(cJSON_GetObjectItem(step, "interactions")->valuestring,
                                            (size_t)(n * C) * sizeof(float));
            int64_t target_diff = 0, prev_diff = 0, prompt_diff = 0;
            for (int64_t i = 0; i < n; i++) target_diff += target[i] != ref_target[i];
            for (int c = 0; c < C; c++)
                for (int64_t i = 0; i < n; i++) {
                    const float got = i3_f16_to_f32(s->interactions[(size_t)c * (size_t)n + (size_t)i]);
                    const int differs = got != ref_inter[(size_t)c * (size_t)n + (size_t)i];
                    if (c == s->cap.prev_seg) prev_diff += differs;
                    else prompt_diff += differs;
                }
            const double agree_target = 1.0 - (double)target_diff / (double)n;
            const double agree_prev = 1.0 - (double)prev_diff / (double)n;
            const i3rt_box ref_box = json_box(cJSON_GetObjectItem(step, "changed_bbox"));
            const int ref_ran = cJSON_IsTrue(cJSON_GetObjectItem(step, "ran_prediction"));
            const cJSON *zoom = cJSON_GetObjectItem(step, "zoom");
            i3rt_ni_timing tm;
            i3rt_ni_get_timing(s, &tm);
            const bool same_box = box_equal(&r.changed, &ref_box);
            char *zoom_text = cJSON_IsNumber(zoom) ? cJSON_PrintUnformatted(zoom) : strdup("-");
            printf("nninteractive %-11s step %2d %-11s target agree %.5f%% (%lld differ) prev_seg %.5f%% prompt "
                   "channels %lld differ | ran %d/%d box %s | zoom py %s i3rt %.3g, %d forwards, %.2f s (network %.2f, "
                   "input %.2f)\n",
                   name, k, kind, 100 * agree_target, (long long)target_diff, 100 * agree_prev, (long long)prompt_diff,
                   r.ran_prediction, ref_ran, same_box ? "same" : "DIFFERS",
                   zoom_text, tm.zoom, tm.n_forwards, dt, tm.network, tm.network_input);
            free(zoom_text);
            if (!same_box)
                printf("    box i3rt [%lld,%lld)x[%lld,%lld)x[%lld,%lld) python [%lld,%lld)x[%lld,%lld)x[%lld,%lld)\n",
                       (long long)r.changed.lo[0], (long long)r.changed.hi[0], (long long)r.changed.lo[1],
                       (long long)r.changed.hi[1], (long long)r.changed.lo[2], (long long)r.changed.hi[2],
                       (long long)ref_box.lo[0], (long long)ref_box.hi[0], (long long)ref_box.lo[1],
                       (long long)ref_box.hi[1], (long long)ref_box.lo[2], (long long)ref_box.hi[2]);
            fflush(stdout);
            cr_expect_geq(agree_target, 0.999, "%s step %d (%s): target buffer agrees on %.4f%%", name, k, kind,
                          100 * agree_target);
            cr_expect_geq(agree_prev, 0.999, "%s step %d (%s): prev_seg agrees on %.4f%%", name, k, kind, 100 * agree_prev);
            cr_expect_eq(prompt_diff, 0, "%s step %d (%s): %lld prompt-channel values differ from Python's", name, k,
                         kind, (long long)prompt_diff);
            cr_expect_eq(r.ran_prediction, ref_ran, "%s step %d (%s): ran_prediction %d, Python %d", name, k, kind,
                         r.ran_prediction, ref_ran);
            /* the changed box follows from the predictions: exact unless they differ */
            if (target_diff == 0 && prev_diff == 0)
                cr_expect(same_box, "%s step %d (%s): changed box differs from Python's", name, k, kind);
            n_bbox_mismatch += !same_box;
            /* The network's last bits differ from oneDNN's (summation order, which also differs between builds):
             * a near-tie can flip, and chained refinement tiles can spread it. The next step starts from
             * Python's masks, so that a difference is counted in the step that made it only. */
            if (target_diff || prev_diff) {
                memcpy(target, ref_target, (size_t)n);
                uint16_t *prev = s->interactions + (size_t)s->cap.prev_seg * (size_t)n;
                const float *ref_prev = ref_inter + (size_t)s->cap.prev_seg * (size_t)n;
                for (int64_t i = 0; i < n; i++) prev[i] = i3_f32_to_f16(ref_prev[i]);
                printf("    (the next step starts from Python's target and prev_seg)\n");
                n_resynced++;
            }
            worst_target = fmin(worst_target, agree_target);
            worst_prev = fmin(worst_prev, agree_prev);
            n_steps++;
            free(ref_target);
            free(ref_inter);
            k++;
        }
    }
    printf("nninteractive: %d steps, worst target agreement %.5f%%, worst prev_seg agreement %.5f%%, %d changed boxes "
           "differ, %d steps restarted from Python's masks, i3rt %.2f s in all\n", n_steps, 100 * worst_target,
           100 * worst_prev, n_bbox_mismatch, n_resynced, total_i3rt);
    cr_assert_gt(n_steps, 0);
    i3rt_ni_session_free(s);
    i3rt_context_free(ctx);
    free(target);
    free(image);
    cJSON_Delete(j);
}

/* ---- bad input --------------------------------------------------------------------------------------- */

static void expect_error(i3rt_context *ctx, i3rt_status st, i3rt_status expected, const char *needle) {
    cr_expect_eq(st, expected, "status %s, expected %s (%s)", i3rt_status_name(st), i3rt_status_name(expected),
                 i3rt_context_error(ctx));
    cr_expect(strstr(i3rt_context_error(ctx), needle), "message \"%s\" does not mention \"%s\"", i3rt_context_error(ctx),
              needle);
    printf("nninteractive bad input: %s: %s\n", i3rt_status_name(st), i3rt_context_error(ctx));
}

/* A valid point still predicts: the session works after the errors. */
static void expect_works(i3rt_context *ctx, i3rt_ni_session *s, const int64_t shape[3]) {
    const int64_t c[3] = {shape[0] / 2, shape[1] / 2, shape[2] / 2};
    i3rt_ni_result r;
    cr_assert_eq(i3rt_ni_add_point(s, c, 1, 1, &r), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_expect(r.ran_prediction);
}

Test(nninteractive, bad_prompts) {
    int64_t shape[3];
    float *image = read_image(shape);
    const int64_t n = shape[0] * shape[1] * shape[2];
    i3rt_context *ctx = ctx_new();
    i3rt_ni_session *s = session_new(ctx);
    i3rt_ni_result r;
    const int64_t centre[3] = {shape[0] / 2, shape[1] / 2, shape[2] / 2};

    expect_error(ctx, i3rt_ni_predict(s, 0, &r), I3RT_ERR_INVALID_ARGUMENT, "no image");
    expect_error(ctx, i3rt_ni_add_point(s, centre, 1, 1, &r), I3RT_ERR_INVALID_ARGUMENT, "no image");
    cr_assert_eq(i3rt_ni_set_image(s, image, shape, NULL), I3RT_OK);
    uint8_t *target = calloc((size_t)n, 1);
    /* a prompt that fails in its prediction (no target buffer yet) is rolled back */
    expect_error(ctx, i3rt_ni_add_point(s, centre, 1, 1, &r), I3RT_ERR_INVALID_ARGUMENT, "no target buffer");
    for (int64_t i = 0; i < n * s->cap.n_channels; i++)
        if (s->interactions[i]) cr_assert_fail("the failed prompt left interaction voxel %lld set", (long long)i);
    cr_expect_eq(s->intensity, 1.0);
    int undone = 1;
    cr_assert_eq(i3rt_ni_undo(s, &undone, NULL), I3RT_OK);
    cr_expect_eq(undone, 0, "a failed prompt left something to undo");
    const int64_t wrong[3] = {shape[0], shape[1], shape[2] + 1};
    expect_error(ctx, i3rt_ni_set_target_buffer(s, target, wrong), I3RT_ERR_SHAPE, "differs from the image");
    cr_assert_eq(i3rt_ni_set_target_buffer(s, target, shape), I3RT_OK);

    const int64_t outside[3] = {shape[0], 2, 2}, negative[3] = {2, -1, 2};
    expect_error(ctx, i3rt_ni_add_point(s, outside, 1, 1, &r), I3RT_ERR_INVALID_ARGUMENT, "outside the image");
    expect_error(ctx, i3rt_ni_add_point(s, negative, 0, 1, &r), I3RT_ERR_INVALID_ARGUMENT, "outside the image");
    const i3rt_box box3d = {{2, 2, 2}, {10, 10, 10}};
    expect_error(ctx, i3rt_ni_add_box(s, &box3d, 1, 1, &r), I3RT_ERR_UNSUPPORTED, "3D box");
    const i3rt_box box_outside = {{shape[0] + 5, 2, 2}, {shape[0] + 6, 10, 10}};
    expect_error(ctx, i3rt_ni_add_box(s, &box_outside, 1, 1, &r), I3RT_ERR_INVALID_ARGUMENT, "outside the image");
    const i3rt_box box_empty = {{4, 2, 2}, {4, 10, 10}};
    expect_error(ctx, i3rt_ni_add_box(s, &box_empty, 1, 1, &r), I3RT_ERR_INVALID_ARGUMENT, "size 0");
    uint8_t mask[4 * 4 * 4];
    memset(mask, 1, sizeof mask);
    const i3rt_box region_outside = {{shape[0] - 2, 0, 0}, {shape[0] + 2, 4, 4}};
    expect_error(ctx, i3rt_ni_add_scribble(s, mask, &region_outside, 1, 1, &r), I3RT_ERR_INVALID_ARGUMENT,
                 "exceeds the image");
    const i3rt_box region_empty = {{0, 0, 0}, {4, 0, 4}};
    expect_error(ctx, i3rt_ni_add_lasso(s, mask, &region_empty, 1, 1, &r), I3RT_ERR_INVALID_ARGUMENT, "size 0");
    /* nothing of the rejected prompts reached the interactions */
    for (int64_t i = 0; i < n * s->cap.n_channels; i++)
        if (s->interactions[i]) cr_assert_fail("a rejected prompt set interaction voxel %lld", (long long)i);
    expect_works(ctx, s, shape);

    float *zero = calloc((size_t)n, sizeof *zero);
    expect_error(ctx, i3rt_ni_set_image(s, zero, shape, NULL), I3RT_ERR_INVALID_ARGUMENT, "entirely zero");
    expect_works(ctx, s, shape); /* the previous image and its state are kept */
    zero[(3 * shape[1] + 4) * shape[2] + 5] = NAN;
    expect_error(ctx, i3rt_ni_set_image(s, zero, shape, NULL), I3RT_ERR_INVALID_ARGUMENT, "voxel (3, 4, 5) is NaN");
    expect_works(ctx, s, shape);
    free(zero);

    i3rt_ni_session_free(s);
    i3rt_context_free(ctx);
    free(target);
    free(image);
}

static void copy_file(const char *from, const char *to) {
    size_t len = 0;
    char *data = fx_read_file(from, &len);
    cr_assert(data, "cannot read %s", from);
    FILE *f = fopen(to, "wb");
    cr_assert(f && fwrite(data, 1, len, f) == len);
    fclose(f);
    free(data);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

Test(nninteractive, bad_model_folders) {
    i3rt_context *ctx = ctx_new();
    i3rt_ni_session *s = NULL;
    expect_error(ctx, i3rt_ni_session_create(ctx, "/nonexistent/nninteractive_model", -1, &s), I3RT_ERR_IO,
                 "/nonexistent/nninteractive_model");
    cr_expect_null(s);

    char dir[512];
    fx_temp_dir(dir, sizeof dir, "nninteractive");
    const char *model = fx_path(fixtures(), "model");
    const char *files[] = {"plans.json", "dataset.json", "fold_0.safetensors"};
    for (int i = 0; i < 3; i++) copy_file(fx_path(model, files[i]), fx_path(dir, files[i]));
    expect_error(ctx, i3rt_ni_session_create(ctx, dir, -1, &s), I3RT_ERR_IO, "inference_info.json");
    write_text(fx_path(dir, "inference_info.json"), "{\"point_radius\": 4, \"channel_mapping\": ");
    expect_error(ctx, i3rt_ni_session_create(ctx, dir, -1, &s), I3RT_ERR_FORMAT, "not valid JSON");
    write_text(fx_path(dir, "inference_info.json"), "{\"inference_class\": \"SomethingElse\"}");
    expect_error(ctx, i3rt_ni_session_create(ctx, dir, -1, &s), I3RT_ERR_UNSUPPORTED, "inference_class");
    write_text(fx_path(dir, "inference_info.json"), "{\"supported_interactions\": {\"clicks3d\": true}}");
    expect_error(ctx, i3rt_ni_session_create(ctx, dir, -1, &s), I3RT_ERR_UNSUPPORTED, "clicks3d");
    write_text(fx_path(dir, "inference_info.json"), "{\"inference_class_min_version\": \"99.0\"}");
    expect_error(ctx, i3rt_ni_session_create(ctx, dir, -1, &s), I3RT_ERR_UNSUPPORTED, "99.0");
    write_text(fx_path(dir, "inference_info.json"), "{\"interaction_channels\": 4}");
    expect_error(ctx, i3rt_ni_session_create(ctx, dir, -1, &s), I3RT_ERR_FORMAT, "channel");
    write_text(fx_path(dir, "inference_info.json"), "{\"pad_mode_image\": \"reflect\"}");
    expect_error(ctx, i3rt_ni_session_create(ctx, dir, -1, &s), I3RT_ERR_UNSUPPORTED, "pad_mode_image");
    cr_expect_null(s);
    /* the legacy file name with its defaults (decay 0.9 for a plain string) */
    remove(fx_path(dir, "inference_info.json"));
    write_text(fx_path(dir, "inference_session_class.json"), "\"nnInteractiveInferenceSession\"");
    cr_assert_eq(i3rt_ni_session_create(ctx, dir, -1, &s), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_expect_eq(s->cap.decay, 0.9);
    cr_expect_eq(s->cap.n_channels, 7);
    i3rt_ni_session_free(s);
    s = NULL;
    /* a legacy object carries the runtime defaults only (the default capability) */
    write_text(fx_path(dir, "inference_session_class.json"),
               "{\"point_radius\": 3, \"interaction_decay\": 0.95, \"supported_interactions\": {\"points\": false}}");
    cr_assert_eq(i3rt_ni_session_create(ctx, dir, 0, &s), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_expect_eq(s->cap.point_radius, 3);
    cr_expect_eq(s->strel_size, 7);
    cr_expect_eq(s->cap.decay, 0.95);
    cr_expect(s->cap.supported[I3_NI_POINTS], "the legacy file's capability keys must be ignored");
    i3rt_ni_session_free(s);
    s = NULL;
    expect_error(ctx, i3rt_ni_session_create(ctx, dir, 3, &s), I3RT_ERR_IO, "fold_3.safetensors");
    fx_remove_dir(dir);
    /* the context still loads a good folder */
    s = session_new(ctx);
    cr_expect(strstr(i3rt_ni_capabilities_json(s), "\"channel_mapping\":{\"prev_seg\":0,"));
    cr_expect(strstr(i3rt_ni_capabilities_json(s), "\"do_autozoom\":true"));
    cr_assert_eq(i3rt_ni_set_do_autozoom(s, 0), I3RT_OK);
    cr_expect(strstr(i3rt_ni_capabilities_json(s), "\"do_autozoom\":false"), "%s", i3rt_ni_capabilities_json(s));
    i3rt_ni_session_free(s);
    i3rt_context_free(ctx);
}

/* override_capability_checks: a checkpoint without points and initial_label refuses them; with the override
 * they are encoded on their mapped channels (nnInteractive merges every mapping into the defaults); a 3D box
 * stays refused without bbox3d, as in _add_bbox_interaction. */
Test(nninteractive, override_capability_checks) {
    int64_t shape[3];
    float *image = read_image(shape);
    const int64_t n = shape[0] * shape[1] * shape[2];
    i3rt_context *ctx = ctx_new();
    char dir[512];
    fx_temp_dir(dir, sizeof dir, "nninteractive_override");
    const char *model = fx_path(fixtures(), "model");
    const char *files[] = {"plans.json", "dataset.json", "fold_0.safetensors"};
    for (int i = 0; i < 3; i++) copy_file(fx_path(model, files[i]), fx_path(dir, files[i]));
    write_text(fx_path(dir, "inference_info.json"),
               "{\"supported_interactions\": {\"points\": false}, \"supports_initial_label\": false}");
    i3rt_ni_session *s = NULL;
    cr_assert_eq(i3rt_ni_session_create(ctx, dir, 0, &s), I3RT_OK, "%s", i3rt_context_error(ctx));
    uint8_t *target = calloc((size_t)n, 1), *seg = calloc((size_t)n, 1);
    cr_assert_eq(i3rt_ni_set_image(s, image, shape, NULL), I3RT_OK);
    cr_assert_eq(i3rt_ni_set_target_buffer(s, target, shape), I3RT_OK);
    const int64_t centre[3] = {shape[0] / 2, shape[1] / 2, shape[2] / 2};
    const int64_t at = (centre[0] * shape[1] + centre[1]) * shape[2] + centre[2];
    expect_error(ctx, i3rt_ni_add_point(s, centre, 1, 0, NULL), I3RT_ERR_UNSUPPORTED, "'points'");
    seg[at] = 1;
    expect_error(ctx, i3rt_ni_add_initial_seg(s, seg, 0, NULL), I3RT_ERR_UNSUPPORTED, "'initial_label'");

    cr_assert_eq(i3rt_ni_set_override_capability_checks(s, 1), I3RT_OK);
    cr_assert_eq(i3rt_ni_add_initial_seg(s, seg, 0, NULL), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_expect_neq(s->interactions[(int64_t)s->cap.prev_seg * n + at], 0, "the initial label is not in prev_seg");
    cr_assert_eq(i3rt_ni_add_point(s, centre, 0, 0, NULL), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_expect_neq(s->interactions[(int64_t)s->cap.neg[I3_NI_POINTS] * n + at], 0, "the point is not on its channel");
    const i3rt_box box3d = {{2, 2, 2}, {10, 10, 10}};
    expect_error(ctx, i3rt_ni_add_box(s, &box3d, 1, 0, NULL), I3RT_ERR_UNSUPPORTED, "3D box");

    cr_assert_eq(i3rt_ni_set_override_capability_checks(s, 0), I3RT_OK);
    expect_error(ctx, i3rt_ni_add_point(s, centre, 1, 0, NULL), I3RT_ERR_UNSUPPORTED, "'points'");
    i3rt_ni_session_free(s);
    fx_remove_dir(dir);
    free(seg);
    free(target);
    free(image);
    i3rt_context_free(ctx);
}

/* ---- fp16 and decay ----------------------------------------------------------------------------------- */

Test(nninteractive, f64_to_f16_rounds_once) {
    /* equal to the float path wherever the double is a float */
    const float floats[] = {1.0f, 0.1f, 1.0204082f, 65504.0f, 6.1e-5f, 3.0e-7f, 1234.567f, 2.0e-8f};
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++)
        cr_expect_eq(i3_ni_f64_to_f16(floats[i]), i3_f32_to_f16(floats[i]), "%g", (double)floats[i]);
    /* 1 + 2^-11 + 2^-40 lies above the tie between 1 and 1 + 2^-10: numpy/torch give 1 + 2^-10; through float
     * the 2^-40 is lost and the tie rounds to 1 */
    const double above_tie = 1.0 + ldexp(1, -11) + ldexp(1, -40);
    cr_expect_eq(i3_f16_to_f32(i3_ni_f64_to_f16(above_tie)), 1.0f + 0x1p-10f);
    cr_expect_eq(i3_ni_f64_to_f16(1.0 + ldexp(1, -11)), i3_f32_to_f16(1.0f)); /* an exact tie goes to even */
    cr_expect_eq(i3_ni_f64_to_f16(65520.0), 0x7c00);
    cr_expect_eq(i3_ni_f64_to_f16(-2.5), i3_f32_to_f16(-2.5f));
}

/* After ~550 prompts at decay 0.98 the intensity passes fp16's maximum: the prompt channels are rescaled to
 * 6550.4 (_renormalize_interactions_if_needed), the newest prompt stays the largest value, and undo of that
 * prompt restores the channels and the intensity. */
Test(nninteractive, decay_renormalization) {
    int64_t shape[3];
    float *image = read_image(shape);
    i3rt_context *ctx = ctx_new();
    i3rt_ni_session *s = session_new(ctx);
    cr_assert_eq(i3rt_ni_set_image(s, image, shape, NULL), I3RT_OK);
    const int64_t n = shape[0] * shape[1] * shape[2];
    const int64_t p[3] = {shape[0] / 2, shape[1] / 2, shape[2] / 2}, at = (p[0] * shape[1] + p[1]) * shape[2] + p[2];
    const int c = s->cap.pos[I3_NI_POINTS];
    uint16_t *before = malloc((size_t)n * sizeof *before);
    double intensity_before = 0;
    int renormalized_at = -1;
    for (int k = 0; k < 600 && renormalized_at < 0; k++) {
        memcpy(before, s->interactions + (size_t)c * (size_t)n, (size_t)n * sizeof *before);
        intensity_before = s->intensity;
        cr_assert_eq(i3rt_ni_add_point(s, p, 1, 0, NULL), I3RT_OK, "%s", i3rt_context_error(ctx));
        if (s->intensity < intensity_before) renormalized_at = k;
    }
    printf("nninteractive: renormalized at prompt %d, intensity %.6g -> %.6g\n", renormalized_at, intensity_before,
           s->intensity);
    cr_assert_geq(renormalized_at, 500, "the intensity never passed fp16's maximum");
    cr_expect_eq(s->intensity, 65504.0 / 10);
    cr_expect_eq(s->interactions[(size_t)c * (size_t)n + (size_t)at], i3_ni_f64_to_f16(65504.0 / 10));
    /* an older prompt's value, scaled by 6550.4 / I in fp16, against the newest prompt's (max) */
    const int64_t off = at + 3, r = s->cap.point_radius, k = 2 * r + 1;
    const float scale = (float)(65504.0 / 10 / (intensity_before * (1 / s->cap.decay)));
    const uint16_t scaled = i3_f32_to_f16(i3_f16_to_f32(before[off]) * scale);
    const uint16_t newest = i3_ni_f64_to_f16(s->point_strel[(r * k + r) * k + r + 3] * (65504.0 / 10));
    cr_expect_eq(s->interactions[(size_t)c * (size_t)n + (size_t)off], scaled > newest ? scaled : newest);
    int undone = 0;
    cr_assert_eq(i3rt_ni_undo(s, &undone, NULL), I3RT_OK);
    cr_expect_eq(undone, 1);
    cr_expect_eq(s->intensity, intensity_before);
    cr_expect_eq(memcmp(before, s->interactions + (size_t)c * (size_t)n, (size_t)n * sizeof *before), 0,
                 "undo did not restore the rescaled channel");
    free(before);
    i3rt_ni_session_free(s);
    i3rt_context_free(ctx);
    free(image);
}
