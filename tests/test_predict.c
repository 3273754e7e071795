/* `i3rt predict` against nnUNetPredictor on the small real models in weights/ (fixtures from
 * tests/gen_predict.py), and its errors on bad input.
 *
 * Parity: for every run (model, folds, mirroring on/off, one evaluation case) the CLI predicts with
 * --accumulate fp16 against unmodified nnUNetPredictor (fp16 sliding-window sums) and with the default
 * fp32 accumulation against nnUNetPredictor with float32 sums. Required: segmentation voxel agreement
 * >= 99.99 % and probabilities within 1e-3 (max abs). The numbers are printed for every run.
 * Cascades (3d_lowres -> 3d_cascade_fullres, models derived by gen_predict.py): the same with the lowres
 * stage's segmentation as --prev-stage-predictions, as nnUNetPredictor takes it from -prev_stage_predictions;
 * a region-based model (derived too): sigmoid per region, regions_class_order.
 * Bad input: missing / extra channel files, channels on different grids or spacings, NaN and Inf voxels,
 * a model folder without weights, a cascade without (or with the wrong) previous stage: exit status 1, a
 * message naming the problem, and no output file (not even a temporary one) in the output folder.
 * Batch options: --num-parts / --part-id and --continue-prediction. Postprocessing (postprocessing.json as
 * nnUNetv2_find_best_configuration writes it): the same labels as nnunetv2's apply_postprocessing, on a
 * fragmented label map and through `i3rt predict --postprocessing` on the brain runs. Ensembles: `i3rt ensemble`
 * of two runs' probabilities against nnunetv2's ensemble; a model of other classes, a folder without the case,
 * a part beyond the parts: clear errors. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "postprocess.h"
#include "volume_io.h"
#include "fixtures.h"

static const char *cli(void) {
    static char path[1024];
    const char *bin = getenv("I3RT_BINARY_DIR");
    cr_assert(bin, "I3RT_BINARY_DIR is not set (run through ctest)");
    snprintf(path, sizeof path, "%s/i3rt", bin);
    return path;
}

/* Runs a shell command with stdout+stderr into log (malloc'ed, caller frees); returns the exit status. */
static int run(const char *cmd, char **log) {
    char path[] = "/tmp/i3rt_test_predict_XXXXXX";
    const int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    char full[8192];
    snprintf(full, sizeof full, "%s > %s 2>&1", cmd, path);
    const int status = system(full);
    *log = fx_read_file(path, NULL);
    unlink(path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void make_temp_dir(char *buf, size_t cap) {
    snprintf(buf, cap, "/tmp/i3rt_predict_out_XXXXXX");
    cr_assert(mkdtemp(buf));
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || (e->d_name[1] == '.' && e->d_name[2] == '\0'))) continue;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

/* Runs `i3rt predict` on a manifest run's case, model, folds and mirroring (with the options) into out; returns
 * the seconds it took. */
static double predict_run(const cJSON *r, const char *out, const char *options) {
    char folds[64] = "", cmd[4096], *log = NULL;
    for (const cJSON *f = cJSON_GetObjectItem(r, "folds")->child; f; f = f->next)
        snprintf(folds + strlen(folds), sizeof folds - strlen(folds), " %d", f->valueint);
    snprintf(cmd, sizeof cmd, "%s predict -i %s/%s_0000.nii.gz -o %s -m %s -f%s %s --threads 2 --quiet %s", cli(),
             cJSON_GetObjectItem(r, "case_dir")->valuestring, cJSON_GetObjectItem(r, "case")->valuestring, out,
             cJSON_GetObjectItem(r, "model_dir")->valuestring, folds,
             cJSON_IsTrue(cJSON_GetObjectItem(r, "mirroring")) ? "" : "--disable-tta", options);
    const double t0 = i3_now_seconds();
    const int rc = run(cmd, &log);
    const double secs = i3_now_seconds() - t0;
    cr_assert_eq(rc, 0, "exit %d\n%s\n%s", rc, cmd, log ? log : "");
    free(log);
    return secs;
}

/* The voxels of the label NIfTI dir/CASE.nii.gz that differ from the fixture's uint8 labels ref_file; *n: all. */
static int64_t labels_differing_in(i3rt_context *ctx, const char *dir, const char *case_name, const char *ending,
                                   const char *ref_file, int64_t *n) {
    char path[1024];
    i3_volume seg;
    snprintf(path, sizeof path, "%s/%s%s", dir, case_name, ending);
    cr_assert_eq(i3_volume_read(ctx, path, &seg), I3RT_OK, "%s", i3rt_context_error(ctx));
    snprintf(path, sizeof path, "%s/%s", fx_fixture_dir("predict"), ref_file);
    size_t len;
    uint8_t *ref = (uint8_t *)fx_read_file(path, &len);
    *n = seg.d * seg.h * seg.w;
    cr_assert(ref && len == (size_t)*n, "%s: missing or not %lld voxels", path, (long long)*n);
    int64_t differ = 0;
    for (int64_t v = 0; v < *n; v++) differ += (int64_t)seg.data[v] != ref[v];
    free(ref);
    i3_volume_free(&seg);
    return differ;
}

static int64_t labels_differing(i3rt_context *ctx, const char *dir, const char *case_name, const char *ref_file,
                                int64_t *n) {
    return labels_differing_in(ctx, dir, case_name, ".nii.gz", ref_file, n);
}

Test(predict, parity_with_nnUNetPredictor, .timeout = 1800) {
    cJSON *m = fx_manifest("predict");
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    int n_runs = 0;
    printf("%-18s %-5s %9s %10s %12s %9s %9s\n", "run", "acc", "agree %", "differ", "prob maxabs", "i3rt s",
           "nnunet s");
    for (const cJSON *r = cJSON_GetObjectItem(m, "runs")->child; r; r = r->next) {
        const char *name = cJSON_GetObjectItem(r, "name")->valuestring;
        const char *case_name = cJSON_GetObjectItem(r, "case")->valuestring;
        for (int mode = 0; mode < 2; mode++) {
            const char *acc = mode == 0 ? "fp16" : "fp32";
            const cJSON *ref = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "references"), acc);
            char out[256], options[1200];
            make_temp_dir(out, sizeof out);
            const cJSON *prev = cJSON_GetObjectItem(r, "prev_stage_dir"); /* a cascade stage */
            snprintf(options, sizeof options, "--save-probabilities --accumulate %s%s%s", acc,
                     prev ? " --prev-stage-predictions " : "", prev ? prev->valuestring : "");
            const double secs = predict_run(r, out, options);
            int64_t n;
            const int64_t differ = labels_differing(ctx, out, case_name, cJSON_GetObjectItem(ref, "seg")->valuestring, &n);
            char p[2048];
            snprintf(p, sizeof p, "%s/%s_probabilities.nii.gz", out, case_name);
            i3_volume prob;
            cr_assert_eq(i3_volume_read(ctx, p, &prob), I3RT_OK, "%s", i3rt_context_error(ctx));
            const cJSON *shape = cJSON_GetObjectItem(ref, "shape");
            const int64_t K = (int64_t)cJSON_GetArrayItem(shape, 0)->valuedouble;
            cr_assert_eq(prob.channels, K);
            cr_assert_eq(prob.d, (int64_t)cJSON_GetArrayItem(shape, 1)->valuedouble, "%s: depth", name);
            cr_assert_eq(prob.h, (int64_t)cJSON_GetArrayItem(shape, 2)->valuedouble, "%s: height", name);
            cr_assert_eq(prob.w, (int64_t)cJSON_GetArrayItem(shape, 3)->valuedouble, "%s: width", name);
            size_t len;
            snprintf(p, sizeof p, "%s/%s", fx_fixture_dir("predict"), cJSON_GetObjectItem(ref, "prob")->valuestring);
            float *ref_prob = (float *)fx_read_file(p, &len);
            cr_assert(ref_prob && len == (size_t)(K * n) * sizeof(float), "%s", p);
            double max_abs = 0;
            for (int64_t i = 0; i < K * n; i++) max_abs = fmax(max_abs, fabs((double)prob.data[i] - ref_prob[i]));
            const double agree = 100.0 * (double)(n - differ) / (double)n;
            printf("%-18s %-5s %9.4f %5lld/%-6lld %12.3g %9.2f %9.2f\n", name, acc, agree, (long long)differ,
                   (long long)n, max_abs, secs, cJSON_GetObjectItem(ref, "seconds")->valuedouble);
            fflush(stdout);
            cr_expect_geq(agree, 99.99, "%s %s: %.4f %% of the voxels agree with nnUNetPredictor", name, acc, agree);
            cr_expect_leq(max_abs, 1e-3, "%s %s: probabilities differ by up to %g", name, acc, max_abs);
            free(ref_prob);
            i3_volume_free(&prob);
            remove_dir(out);
        }
        n_runs++;
    }
    cr_assert_geq(n_runs, 8);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

/* Runs the CLI on a bad input (with the options); expects exit status 1, `expect` in its message and an empty
 * output folder. */
static void expect_failure_with(const char *input, const char *model, const char *options, const char *expect) {
    char out[256], cmd[4096];
    make_temp_dir(out, sizeof out);
    snprintf(cmd, sizeof cmd, "%s predict -i %s -o %s -m %s --threads 1 --quiet %s", cli(), input, out, model, options);
    char *log = NULL;
    const int rc = run(cmd, &log);
    printf("bad input %-28s -> exit %d: %s", strrchr(input, '/') ? strrchr(input, '/') + 1 : input, rc,
           log ? log : "(no message)\n");
    cr_expect_eq(rc, 1, "%s: exit status %d (expected 1)\n%s", cmd, rc, log ? log : "");
    cr_expect(log && strstr(log, expect), "%s: the message does not mention '%s':\n%s", cmd, expect, log ? log : "");
    cr_expect_eq(count_files(out), 0, "%s: %d file(s) left in the output folder", cmd, count_files(out));
    free(log);
    remove_dir(out);
}

static void expect_failure(const char *input, const char *model, const char *expect) {
    expect_failure_with(input, model, "", expect);
}

static void paths(const char *bad, const char *model, char *in, char *model_dir) {
    cJSON *m = fx_manifest("predict");
    const char *weights_dir = NULL;
    for (const cJSON *r = cJSON_GetObjectItem(m, "runs")->child; r && !weights_dir; r = r->next)
        if (strstr(cJSON_GetObjectItem(r, "model_dir")->valuestring, model))
            weights_dir = cJSON_GetObjectItem(r, "model_dir")->valuestring;
    cr_assert(weights_dir, "no run uses model %s", model);
    snprintf(in, 1024, "%s/bad/%s", fx_fixture_dir("predict"), bad);
    snprintf(model_dir, 1024, "%s", weights_dir);
    cJSON_Delete(m);
}

/* --json-progress: JSON lines only on stdout, a case_done per case, and a final "done" event with the seconds and
 * the device memory peak (0 on the CPU; i3rt_context_device_memory is tested in test_cuda_ops). */
Test(predict, json_progress_events, .timeout = 600) {
    char in[1024], model[1024], out[256], cmd[4096];
    paths("extra_channel", "brain_3d_fullres", in, model);
    snprintf(in, sizeof in, "%s/cases/501", fx_fixture_dir("predict"));
    make_temp_dir(out, sizeof out);
    snprintf(cmd, sizeof cmd, "%s predict -i %s -o %s -m %s -f 0 --disable-tta --threads 1 --json-progress", cli(),
             in, out, model);
    char *log = NULL;
    cr_assert_eq(run(cmd, &log), 0, "%s:\n%s", cmd, log ? log : "");
    int progress = 0, cases_done = 0, done = 0;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *event = cJSON_Parse(line);
        cr_assert(event, "not a JSON line: %s", line);
        const char *name = cJSON_GetObjectItem(event, "event")->valuestring;
        progress += !strcmp(name, "progress");
        cases_done += !strcmp(name, "case_done");
        if (!strcmp(name, "done")) {
            done++;
            cr_expect_gt(cJSON_GetObjectItem(event, "seconds")->valuedouble, 0.0);
            cr_expect_eq(cJSON_GetObjectItem(event, "device_peak_bytes")->valuedouble, 0.0);
            cr_expect_eq(cJSON_GetObjectItem(event, "cases")->valueint, cases_done);
        }
        cJSON_Delete(event);
    }
    printf("--json-progress: %d progress, %d case_done, %d done events\n", progress, cases_done, done);
    cr_expect(progress > 0 && cases_done > 0 && done == 1, "events: %d progress, %d case_done, %d done", progress,
              cases_done, done);
    free(log);
    remove_dir(out);
}

Test(predict, bad_inputs_fail_cleanly, .timeout = 600) {
    char in[1024], model[1024];
    paths("missing_channel", "headct", in, model);
    expect_failure(in, model, "missing");
    paths("extra_channel", "brain_3d_fullres", in, model);
    expect_failure(in, model, "channel");
    paths("geometry", "headct", in, model);
    expect_failure(in, model, "case_0001");
    paths("spacing", "headct", in, model);
    expect_failure(in, model, "case_0001");
    paths("nan", "brain_3d_fullres", in, model);
    expect_failure(in, model, "NaN");
    paths("inf", "brain_3d_fullres", in, model);
    expect_failure(in, model, "nf");
    char empty_model[1100];
    snprintf(empty_model, sizeof empty_model, "%s/bad/model_without_weights", fx_fixture_dir("predict"));
    paths("extra_channel", "brain_3d_fullres", in, model);
    snprintf(in, sizeof in, "%s/cases/501", fx_fixture_dir("predict"));
    expect_failure(in, empty_model, "fold_K.safetensors");
    expect_failure(in, "/nonexistent/model/folder", "/nonexistent/model/folder");
}

/* A cascade stage without the previous stage's segmentation, with a missing or mismatched one, and a plain
 * configuration given one: exit 1 before anything is written. */
Test(predict, cascade_inputs_fail_cleanly, .timeout = 600) {
    cJSON *m = fx_manifest("predict");
    const cJSON *cascade = NULL, *plain = NULL;
    for (const cJSON *r = cJSON_GetObjectItem(m, "runs")->child; r; r = r->next)
        if (cJSON_GetObjectItem(r, "prev_stage_dir") && !cascade) cascade = r;
        else if (!cJSON_GetObjectItem(r, "prev_stage_dir") && !plain) plain = r;
    cr_assert(cascade && plain, "the manifest has no cascade run");
    const char *model = cJSON_GetObjectItem(cascade, "model_dir")->valuestring;
    const char *prev = cJSON_GetObjectItem(cascade, "prev_stage_dir")->valuestring;
    char in[1024], options[1200];
    snprintf(in, sizeof in, "%s/%s_0000.nii.gz", cJSON_GetObjectItem(cascade, "case_dir")->valuestring,
             cJSON_GetObjectItem(cascade, "case")->valuestring);
    expect_failure_with(in, model, "", "--prev-stage-predictions");
    expect_failure_with(in, model, "--prev-stage-predictions /nonexistent/lowres", "/nonexistent/lowres");
    snprintf(options, sizeof options, "--prev-stage-predictions %s", prev);
    expect_failure_with(in, cJSON_GetObjectItem(plain, "model_dir")->valuestring, options, "not a cascade stage");
    /* the previous stage's segmentation of another case (another grid) */
    snprintf(options, sizeof options, "--prev-stage-predictions %s/bad/prev_stage_other_grid", fx_fixture_dir("predict"));
    expect_failure_with(in, model, options, "the image");
    cJSON_Delete(m);
}

/* i3Deep's stages take softmax classes of one-stage models: `i3rt i3deep recommend` refuses the region-based and
 * the cascade model with a message that says so. */
Test(predict, i3deep_refuses_region_and_cascade_models, .timeout = 300) {
    cJSON *m = fx_manifest("predict");
    int checked = 0;
    for (const cJSON *r = cJSON_GetObjectItem(m, "runs")->child; r; r = r->next) {
        const char *model = cJSON_GetObjectItem(r, "model_dir")->valuestring;
        const char *expect = strstr(model, "regions") ? "region-based" : strstr(model, "cascade") ? "cascade stage" : NULL;
        if (!expect) continue;
        char out[256], cmd[4096], *log = NULL;
        make_temp_dir(out, sizeof out);
        snprintf(cmd, sizeof cmd, "%s i3deep recommend %s/%s_0000.nii.gz -m %s -o %s --threads 1", cli(),
                 cJSON_GetObjectItem(r, "case_dir")->valuestring, cJSON_GetObjectItem(r, "case")->valuestring, model, out);
        const int rc = run(cmd, &log);
        printf("i3deep with %s -> exit %d: %s", model, rc, log ? log : "(no message)\n");
        cr_expect_eq(rc, 1, "%s: exit %d\n%s", cmd, rc, log ? log : "");
        cr_expect(log && strstr(log, expect), "%s: the message does not say '%s':\n%s", cmd, expect, log ? log : "");
        free(log);
        remove_dir(out);
        checked++;
    }
    cr_expect_geq(checked, 3);
    cJSON_Delete(m);
}

/* --num-parts / --part-id (every N-th case from the K-th, in name order) and --continue-prediction (cases whose
 * outputs exist are skipped), as nnUNetv2_predict's -num_parts / -part_id / --continue_prediction. */
Test(predict, parts_and_continue, .timeout = 300) {
    char in[256], out[256], case_file[1024], cmd[4096], *log = NULL;
    make_temp_dir(in, sizeof in);
    make_temp_dir(out, sizeof out);
    snprintf(case_file, sizeof case_file, "%s/cases/501/eval501_000_0000.nii.gz", fx_fixture_dir("predict"));
    for (const char *c = "abc"; *c; c++) {
        snprintf(cmd, sizeof cmd, "ln -s %s %s/%c_0000.nii.gz", case_file, in, *c);
        cr_assert_eq(system(cmd), 0);
    }
    const char *model = getenv("I3RT_SOURCE_DIR");
    cr_assert(model, "I3RT_SOURCE_DIR is not set (run through ctest)");
    snprintf(cmd, sizeof cmd, "%s predict -i %s -o %s -m %s/weights/brain_3d_fullres -f 0 --disable-tta --threads 1 "
             "--quiet --num-parts 2 --part-id 1", cli(), in, out, model);
    cr_assert_eq(run(cmd, &log), 0, "%s\n%s", cmd, log ? log : "");
    free(log);
    char path[512];
    struct stat sb;
    for (const char *c = "abc"; *c; c++) {
        snprintf(path, sizeof path, "%s/%c.nii.gz", out, *c);
        cr_expect_eq(stat(path, &sb) == 0, *c == 'b', "part 1 of 2: %s %s", path, *c == 'b' ? "missing" : "written");
    }
    /* a stand-in for a's output: --continue-prediction must keep it and write only c */
    snprintf(path, sizeof path, "%s/a.nii.gz", out);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("kept", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s predict -i %s -o %s -m %s/weights/brain_3d_fullres -f 0 --disable-tta --threads 1 "
             "--continue-prediction", cli(), in, out, model);
    cr_assert_eq(run(cmd, &log), 0, "%s\n%s", cmd, log ? log : "");
    printf("--continue-prediction: %s", log);
    cr_expect(log && strstr(log, "1 of 3 case(s)") && strstr(log, "2 skipped"), "%s", log ? log : "");
    free(log);
    cr_expect(stat(path, &sb) == 0 && sb.st_size == 4, "a.nii.gz was overwritten");
    snprintf(path, sizeof path, "%s/c.nii.gz", out);
    cr_expect(stat(path, &sb) == 0 && sb.st_size > 100, "c.nii.gz was not written");
    /* a part beyond the parts: a usage error */
    snprintf(cmd, sizeof cmd, "%s predict -i %s -o %s -m %s/weights/brain_3d_fullres --num-parts 2 --part-id 2", cli(),
             in, out, model);
    const int rc = run(cmd, &log);
    cr_expect_eq(rc, 2, "--part-id 2 of 2: exit %d", rc);
    cr_expect(log && strstr(log, "--part-id"), "%s", log ? log : "");
    free(log);
    remove_dir(in);
    remove_dir(out);
}

/* The postprocessing steps of tests/gen_predict.py's postprocessing.json on its fragmented label map: the labels
 * of nnunetv2's apply_postprocessing, voxel for voxel (full connectivity, tied largest components kept, an
 * empty mask left alone). */
Test(predict, postprocessing_matches_nnunet) {
    cJSON *m = fx_manifest("predict");
    cJSON_Delete(m); /* (skips when the fixtures are missing) */
    char path[1024];
    snprintf(path, sizeof path, "%s/postprocessing_manifest.json", fx_fixture_dir("predict"));
    char *text = fx_read_file(path, NULL);
    cr_assert(text, "%s missing", path);
    cJSON *pm = cJSON_Parse(text);
    free(text);
    int64_t shape[3];
    for (int a = 0; a < 3; a++) shape[a] = (int64_t)cJSON_GetArrayItem(cJSON_GetObjectItem(pm, "shape"), a)->valuedouble;
    const int64_t n = shape[0] * shape[1] * shape[2];
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    i3_postprocessing pp;
    snprintf(path, sizeof path, "%s/postprocessing.json", fx_fixture_dir("predict"));
    cr_assert_eq(i3_postprocessing_read(ctx, path, &pp), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(pp.n_steps, 3);
    size_t len_in, len_ref;
    snprintf(path, sizeof path, "%s/pp_in.u8", fx_fixture_dir("predict"));
    uint8_t *in = (uint8_t *)fx_read_file(path, &len_in);
    snprintf(path, sizeof path, "%s/pp_ref.u8", fx_fixture_dir("predict"));
    uint8_t *ref = (uint8_t *)fx_read_file(path, &len_ref);
    cr_assert(in && ref && len_in == (size_t)n && len_ref == (size_t)n);
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    for (int64_t v = 0; v < n; v++) labels[v] = in[v];
    cr_assert_eq(i3_postprocess(ctx, labels, shape, &pp), I3RT_OK, "%s", i3rt_context_error(ctx));
    int64_t differ = 0, changed = 0;
    for (int64_t v = 0; v < n; v++) differ += labels[v] != ref[v], changed += ref[v] != in[v];
    printf("postprocessing %lldx%lldx%lld: nnunetv2 changes %lld voxels; i3rt differs from it on %lld\n",
           (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)changed, (long long)differ);
    cr_expect_gt(changed, 0);
    cr_expect_eq(differ, 0);
    free(in), free(ref), free(labels);
    i3rt_context_free(ctx);
    cJSON_Delete(pm);
}

/* `i3rt predict --postprocessing` on the brain runs against nnunetv2's postprocessing of nnUNetPredictor's labels,
 * and a postprocessing.json with a step i3rt does not know: exit 1 before anything is written. */
Test(predict, postprocessing_cli, .timeout = 600) {
    cJSON *m = fx_manifest("predict");
    char path[1024], pp_json[1024];
    snprintf(path, sizeof path, "%s/postprocessing_manifest.json", fx_fixture_dir("predict"));
    snprintf(pp_json, sizeof pp_json, "%s/postprocessing.json", fx_fixture_dir("predict"));
    char *text = fx_read_file(path, NULL);
    cr_assert(text, "%s missing", path);
    cJSON *pm = cJSON_Parse(text);
    free(text);
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    int checked = 0;
    for (const cJSON *r = cJSON_GetObjectItem(m, "runs")->child; r; r = r->next) {
        const char *name = cJSON_GetObjectItem(r, "name")->valuestring;
        const cJSON *ref_file = cJSON_GetObjectItem(cJSON_GetObjectItem(pm, "runs"), name);
        if (!ref_file) continue;
        char out[256], options[1100];
        make_temp_dir(out, sizeof out);
        snprintf(options, sizeof options, "--postprocessing %s", pp_json);
        predict_run(r, out, options);
        int64_t n;
        const int64_t differ =
            labels_differing(ctx, out, cJSON_GetObjectItem(r, "case")->valuestring, ref_file->valuestring, &n);
        printf("%-18s --postprocessing: %lld of %lld voxels differ from nnunetv2's postprocessing\n", name,
               (long long)differ, (long long)n);
        cr_expect_eq(differ, 0);
        remove_dir(out);
        checked++;
    }
    cr_expect_geq(checked, 2);
    /* a step that is not remove_all_but_largest_component_from_segmentation */
    char bad[] = "/tmp/i3rt_pp_XXXXXX";
    const int fd = mkstemp(bad);
    cr_assert(fd >= 0);
    const char *json = "{\"postprocessing_fns\": [\"fill_holes\"], \"postprocessing_kwargs\": [{}]}";
    cr_assert_eq(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    const cJSON *r = cJSON_GetObjectItem(m, "runs")->child;
    char in[1024], options[1100];
    snprintf(in, sizeof in, "%s/%s_0000.nii.gz", cJSON_GetObjectItem(r, "case_dir")->valuestring,
             cJSON_GetObjectItem(r, "case")->valuestring);
    snprintf(options, sizeof options, "--postprocessing %s", bad);
    expect_failure_with(in, cJSON_GetObjectItem(r, "model_dir")->valuestring, options, "fill_holes");
    unlink(bad);
    i3rt_context_free(ctx);
    cJSON_Delete(pm);
    cJSON_Delete(m);
}

/* `i3rt ensemble` of two runs' probabilities (3d_fullres and 2d on one case, tests/gen_predict.py ENSEMBLE) against
 * nnunetv2's average_probabilities and segmentation of nnUNetPredictor's; a folder missing the case: exit 1. */
Test(predict, ensemble_matches_nnunet, .timeout = 600) {
    cJSON *m = fx_manifest("predict");
    char path[1024], dirs[2][256], out[256], cmd[4096], *log = NULL;
    snprintf(path, sizeof path, "%s/ensemble.json", fx_fixture_dir("predict"));
    char *text = fx_read_file(path, NULL);
    cr_assert(text, "%s missing", path);
    cJSON *ens = cJSON_Parse(text);
    free(text);
    const char *case_name = NULL;
    int k = 0;
    for (const cJSON *want = cJSON_GetObjectItem(ens, "runs")->child; want; want = want->next, k++) {
        const cJSON *r = cJSON_GetObjectItem(m, "runs")->child;
        while (r && strcmp(cJSON_GetObjectItem(r, "name")->valuestring, want->valuestring) != 0) r = r->next;
        cr_assert(r && k < 2, "ensemble.json names run %s, not in the manifest", want->valuestring);
        case_name = cJSON_GetObjectItem(r, "case")->valuestring;
        make_temp_dir(dirs[k], sizeof dirs[k]);
        predict_run(r, dirs[k], "--save-probabilities");
    }
    make_temp_dir(out, sizeof out);
    snprintf(cmd, sizeof cmd, "%s ensemble -i %s %s -o %s --quiet", cli(), dirs[0], dirs[1], out);
    cr_assert_eq(run(cmd, &log), 0, "%s\n%s", cmd, log ? log : "");
    free(log);
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    int64_t n;
    const int64_t differ = labels_differing(ctx, out, case_name, cJSON_GetObjectItem(ens, "seg")->valuestring, &n);
    printf("ensemble of %s and %s: %lld of %lld voxels differ from nnunetv2's ensemble\n",
           cJSON_GetArrayItem(cJSON_GetObjectItem(ens, "runs"), 0)->valuestring,
           cJSON_GetArrayItem(cJSON_GetObjectItem(ens, "runs"), 1)->valuestring, (long long)differ, (long long)n);
    cr_expect_eq(differ, 0);
    /* the same probabilities as .nii (a model whose dataset.json says file_ending .nii): CASE.nii, the same labels */
    for (int f = 0; f < 2; f++) {
        char gz[1024], plain[1024];
        snprintf(gz, sizeof gz, "%s/%s_probabilities.nii.gz", dirs[f], case_name);
        snprintf(plain, sizeof plain, "%s/%s_probabilities.nii", dirs[f], case_name);
        i3_volume v;
        cr_assert_eq(i3_volume_read(ctx, gz, &v), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(i3_volume_write_f32(ctx, plain, &v.geometry, v.channels, v.data), I3RT_OK, "%s",
                     i3rt_context_error(ctx));
        i3_volume_free(&v);
        cr_assert_eq(unlink(gz), 0);
    }
    remove_dir(out);
    make_temp_dir(out, sizeof out);
    snprintf(cmd, sizeof cmd, "%s ensemble -i %s %s -o %s --quiet", cli(), dirs[0], dirs[1], out);
    cr_assert_eq(run(cmd, &log), 0, "%s\n%s", cmd, log ? log : "");
    free(log);
    const int64_t differ_nii = labels_differing_in(ctx, out, case_name, ".nii", cJSON_GetObjectItem(ens, "seg")->valuestring, &n);
    printf("ensemble of the same probabilities as .nii: %lld of %lld voxels differ, %d file(s) written\n",
           (long long)differ_nii, (long long)n, count_files(out));
    cr_expect_eq(differ_nii, 0);
    cr_expect_eq(count_files(out), 1);
    /* -m naming a model with other classes (the region model's 3 outputs for these 4-class probabilities) */
    const cJSON *regions = cJSON_GetObjectItem(m, "runs")->child;
    while (regions && !strstr(cJSON_GetObjectItem(regions, "model_dir")->valuestring, "regions")) regions = regions->next;
    cr_assert(regions, "no region-based run in the manifest");
    remove_dir(out);
    make_temp_dir(out, sizeof out);
    snprintf(cmd, sizeof cmd, "%s ensemble -i %s %s -o %s -m %s --quiet", cli(), dirs[0], dirs[1], out,
             cJSON_GetObjectItem(regions, "model_dir")->valuestring);
    int rc = run(cmd, &log);
    printf("ensemble with a 3-class model -> exit %d: %s", rc, log ? log : "(no message)\n");
    cr_expect_eq(rc, 1);
    cr_expect(log && strstr(log, "classes"), "%s", log ? log : "");
    cr_expect_eq(count_files(out), 0);
    free(log);
    /* the second folder without the case */
    char empty[256];
    make_temp_dir(empty, sizeof empty);
    remove_dir(out);
    make_temp_dir(out, sizeof out);
    snprintf(cmd, sizeof cmd, "%s ensemble -i %s %s -o %s --quiet", cli(), dirs[0], empty, out);
    rc = run(cmd, &log);
    printf("ensemble with a folder missing the case -> exit %d: %s", rc, log ? log : "(no message)\n");
    cr_expect_eq(rc, 1);
    cr_expect(log && strstr(log, empty), "the message does not name %s: %s", empty, log ? log : "");
    cr_expect_eq(count_files(out), 0, "%d file(s) left in the output folder", count_files(out));
    free(log);
    for (int i = 0; i < 2; i++) remove_dir(dirs[i]);
    remove_dir(empty);
    remove_dir(out);
    i3rt_context_free(ctx);
    cJSON_Delete(ens);
    cJSON_Delete(m);
}
