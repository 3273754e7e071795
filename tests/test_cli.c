/* Tests of the i3rt command-line tool (cli/i3rt.c), run as a user runs it ($I3RT_BINARY_DIR/i3rt).
 *
 * Good input: `forward` on tests/gen_cli.py's two channel files (13 x 10 x 5, no axis a multiple of the
 * network's stride 2 x 4 x 4) must match PyTorch's logits for the same zero-padded input within 1e-4
 * relative (max abs error / max |logit|, printed), keep the input's geometry, and --argmax must be the
 * argmax of those logits. Bad input: missing/corrupt/truncated model, missing/truncated/foreign input,
 * wrong channel count, unknown command/option: non-zero exit, a message naming the file or option, and
 * no output file (nor temporary file) left behind. */
#include "i3deep.h"
#include "volume_io.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "fixtures.h"

extern char **environ;

static i3_ctx *ctx;
static char binary[512], fixtures[512], tmpdir[256];
static char out_text[1 << 16], err_text[1 << 16];

static void setup(void) {
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    const char *bin = getenv("I3RT_BINARY_DIR"), *fx = getenv("I3RT_FIXTURES");
    cr_assert(bin && fx, "I3RT_BINARY_DIR / I3RT_FIXTURES not set (run through ctest)");
    snprintf(binary, sizeof binary, "%s/i3rt", bin);
    snprintf(fixtures, sizeof fixtures, "%s/cli", fx);
    fx_temp_dir(tmpdir, sizeof tmpdir, "cli");
}

static void teardown(void) {
    fx_remove_dir(tmpdir);
    i3rt_context_free(ctx);
}

TestSuite(cli, .init = setup, .fini = teardown);

static const char *fixture(const char *name) { return fx_path(fixtures, name); }
static const char *temp(const char *name) { return fx_path(tmpdir, name); }

static void slurp(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, size - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

/* Runs i3rt with the given arguments (NULL-terminated); returns its exit status, stdout and stderr in
 * out_text / err_text. */
static int run_cli(const char *arg0, ...) {
    const char *argv[32] = {binary};
    int argc = 1;
    va_list ap;
    va_start(ap, arg0);
    for (const char *a = arg0; a && argc < 31; a = va_arg(ap, const char *)) argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    char out_path[300], err_path[300];
    snprintf(out_path, sizeof out_path, "%s/.stdout", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/.stderr", tmpdir);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, binary, &actions, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    cr_assert_eq(rc, 0, "cannot run %s: %s", binary, strerror(rc));
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    slurp(out_path, out_text, sizeof out_text);
    slurp(err_path, err_text, sizeof err_text);
    unlink(out_path);
    unlink(err_path);
    cr_assert(WIFEXITED(status), "i3rt %s crashed (signal %d); stderr: %s", arg0, WTERMSIG(status), err_text);
    /* in the sanitizer build a leak or UB on an error path would still exit non-zero: look for the report */
    cr_assert(!strstr(err_text, "Sanitizer") && !strstr(err_text, "runtime error:"), "i3rt %s: sanitizer report:\n%s",
              arg0, err_text);
    return WEXITSTATUS(status);
}

static int files_in_tmpdir(void) {
    int n = 0;
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

/* The last run must have failed naming `name`, and left no file but the `keep` test inputs. */
static void expect_failure(int rc, const char *name, int keep) {
    cr_assert_neq(rc, 0, "expected failure; stdout: %s", out_text);
    cr_assert(strstr(err_text, name), "stderr does not name %s: %s", name, err_text);
    cr_assert_eq(files_in_tmpdir(), keep, "an output or temporary file was left behind");
}

static void copy_prefix(const char *src, const char *dst, long keep) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    cr_assert(in && out, "cannot copy %s", src);
    int c;
    for (long i = 0; i < keep && (c = fgetc(in)) != EOF; i++) fputc(c, out);
    fclose(in);
    fclose(out);
}

static long file_size(const char *path) {
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "missing %s", path);
    return (long)sb.st_size;
}

Test(cli, help_and_version) {
    cr_assert_eq(run_cli("--help", NULL), 0);
    cr_assert(strstr(out_text, "usage: i3rt COMMAND"));
    cr_assert_eq(run_cli("info", "--help", NULL), 0);
    cr_assert(strstr(out_text, "usage: i3rt info MODEL"));
    cr_assert_eq(run_cli("forward", "-h", NULL), 0);
    cr_assert(strstr(out_text, "usage: i3rt forward MODEL"));
    cr_assert_eq(run_cli("version", NULL), 0);
    cr_assert(strstr(out_text, I3RT_VERSION));
    cr_assert_neq(run_cli(NULL), 0);
}

Test(cli, unknown_command_and_options) {
    cr_assert_eq(run_cli("frobnicate", NULL), 2);
    cr_assert(strstr(err_text, "frobnicate"), "%s", err_text);
    cr_assert_eq(run_cli("info", fixture("model/fold_0.safetensors"), "--bogus", NULL), 2);
    cr_assert(strstr(err_text, "--bogus"), "%s", err_text);
    const char *out = temp("out.nii.gz");
    expect_failure(run_cli("forward", fixture("model/fold_0.safetensors"), fixture("case_0000.nii.gz"),
                           fixture("case_0001.nii.gz"), out, "--threads", "zero", NULL), "zero", 0);
    expect_failure(run_cli("forward", fixture("model/fold_0.safetensors"), fixture("case_0000.nii.gz"),
                           temp("out.txt"), NULL), "out.txt", 0);
    expect_failure(run_cli("info", fixture("model/fold_0.safetensors"), "--size", "3", "8", "8", NULL),
                   "multiple of", 0);
}

Test(cli, info_prints_the_network) {
    cr_assert_eq(run_cli("info", fixture("model/fold_0.safetensors"), NULL), 0, "%s", err_text);
    const char *must[] = {"PlainConvUNet", "2 input channel", "3 output channel", "stages      3", "parameters",
                          "[1, 3, 8, 16, 16]", "planned peak"};
    for (int i = 0; i < 7; i++) cr_assert(strstr(out_text, must[i]), "info lacks \"%s\":\n%s", must[i], out_text);
    cr_assert_eq(run_cli("info", fixture("model/fold_0.safetensors"), "--size", "4", "8", "12", NULL), 0);
    cr_assert(strstr(out_text, "[1, 3, 4, 8, 12]"), "%s", out_text);
}

Test(cli, forward_matches_pytorch_and_keeps_geometry) {
    const char *out = temp("logits.nii.gz"), *labels_path = temp("labels.nii.gz");
    cr_assert_eq(run_cli("forward", fixture("model/fold_0.safetensors"), fixture("case_0000.nii.gz"),
                         fixture("case_0001.nii.gz"), out, "--threads", "2", NULL), 0, "%s", err_text);
    i3_volume in, got;
    cr_assert_eq(i3_volume_read(ctx, fixture("case_0000.nii.gz"), &in), I3RT_OK);
    cr_assert_eq(i3_volume_read(ctx, out, &got), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert(got.channels == 3 && got.d == in.d && got.h == in.h && got.w == in.w, "output [%lld, %lld, %lld, %lld]",
              (long long)got.channels, (long long)got.d, (long long)got.h, (long long)got.w);
    cr_assert_eq(i3_volume_geometry_check(ctx, &in.geometry, "input", &got.geometry, "output"), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    cr_assert_eq(got.geometry.sform_code, 2);

    size_t voxels = (size_t)(in.d * in.h * in.w), n = 3 * voxels;
    float *ref = malloc(n * sizeof(float));
    FILE *f = fopen(fixture("reference.f32"), "rb");
    cr_assert(f);
    cr_assert_eq(fread(ref, sizeof(float), n, f), n);
    fclose(f);
    double max_abs = 0, max_ref = 0;
    for (size_t i = 0; i < n; i++) {
        max_abs = fmax(max_abs, fabs((double)got.data[i] - ref[i]));
        max_ref = fmax(max_ref, fabs(ref[i]));
    }
    printf("cli forward vs PyTorch: max abs err %.3g, rel err %.3g (max abs err / max |logit|)\n", max_abs,
           max_abs / max_ref);
    cr_assert(max_abs <= 1e-4 * max_ref, "i3rt forward differs from PyTorch: max abs err %g, max |logit| %g", max_abs,
              max_ref);

    cr_assert_eq(run_cli("forward", fixture("model/fold_0.safetensors"), fixture("case_0000.nii.gz"),
                         fixture("case_0001.nii.gz"), labels_path, "--argmax", NULL), 0, "%s", err_text);
    i3_volume labels;
    cr_assert_eq(i3_volume_read(ctx, labels_path, &labels), I3RT_OK);
    for (size_t v = 0; v < voxels; v++) {
        int best = 0;
        for (int c = 1; c < 3; c++)
            if (got.data[c * voxels + v] > got.data[best * voxels + v]) best = c;
        cr_assert_eq(labels.data[v], (float)best, "voxel %zu: label %g, argmax %d", v, labels.data[v], best);
    }
    cr_assert_eq(files_in_tmpdir(), 2, "temporary files were left behind");
    free(ref);
    i3_volume_free(&in);
    i3_volume_free(&got);
    i3_volume_free(&labels);
}

Test(cli, missing_model) {
    const char *model = temp("absent.safetensors"), *out = temp("out.nii.gz");
    expect_failure(run_cli("forward", model, fixture("case_0000.nii.gz"), fixture("case_0001.nii.gz"), out, NULL),
                   model, 0);
    expect_failure(run_cli("info", model, NULL), model, 0);
}

Test(cli, corrupt_and_truncated_model) {
    const char *good = fixture("model/fold_0.safetensors");
    const char *model = temp("model.safetensors"), *out = temp("out.nii.gz");
    long size = file_size(good);
    const long cuts[] = {0, 4, 100, size / 2, size - 1};
    for (int i = 0; i < 5; i++) {
        copy_prefix(good, model, cuts[i]);
        expect_failure(run_cli("forward", model, fixture("case_0000.nii.gz"), fixture("case_0001.nii.gz"), out, NULL),
                       model, 1);
    }
    /* a byte of the JSON header changed to a quote */
    copy_prefix(good, model, size);
    FILE *f = fopen(model, "r+b");
    fseek(f, 20, SEEK_SET);
    fputc('"', f);
    fclose(f);
    expect_failure(run_cli("info", model, NULL), model, 1);
}

Test(cli, missing_truncated_and_foreign_inputs) {
    const char *model = fixture("model/fold_0.safetensors"), *out = temp("out.nii.gz");
    const char *absent = temp("absent_0001.nii.gz");
    expect_failure(run_cli("forward", model, fixture("case_0000.nii.gz"), absent, out, NULL), absent, 0);

    const char *cut = temp("cut_0001.nii.gz");
    long size = file_size(fixture("case_0001.nii.gz"));
    for (long keep = 10; keep < size; keep += size / 5) {
        copy_prefix(fixture("case_0001.nii.gz"), cut, keep);
        expect_failure(run_cli("forward", model, fixture("case_0000.nii.gz"), cut, out, NULL), cut, 1);
    }
    expect_failure(run_cli("forward", model, fixture("case_0000.nii.gz"), model, out, NULL), model, 1);
}

Test(cli, wrong_channel_count) {
    const char *out = temp("out.nii.gz");
    expect_failure(run_cli("forward", fixture("model/fold_0.safetensors"), fixture("case_0000.nii.gz"), out, NULL),
                   "case_0000.nii.gz: 1 channel(s), but the network", 0);
}

Test(cli, channel_files_on_different_grids) {
    /* the second channel written with a shifted origin */
    i3_volume v;
    cr_assert_eq(i3_volume_read(ctx, fixture("case_0001.nii.gz"), &v), I3RT_OK);
    v.geometry.srow[0][3] += 5.0;
    const char *shifted = temp("shifted_0001.nii.gz"), *out = temp("out.nii.gz");
    cr_assert_eq(i3_volume_write_f32(ctx, shifted, &v.geometry, 1, v.data), I3RT_OK);
    i3_volume_free(&v);
    expect_failure(run_cli("forward", fixture("model/fold_0.safetensors"), fixture("case_0000.nii.gz"), shifted, out,
                           NULL), shifted, 1);
    cr_assert(strstr(err_text, "case_0000.nii.gz"), "%s", err_text);
}

/* ---- i3rt i3deep: refine, simulate, evaluate (tests/gen_cli.py's i3deep/ fixture: a 20 x 18 x 10 image,
 * its labels 0..3, and two random-weight models, preseg/ with 1 input channel and refine/ with 2) ---- */

static const char *i3deep_fixture(const char *name) {
    static char dir[600];
    snprintf(dir, sizeof dir, "%s/i3deep", fixtures);
    return fx_path(dir, name);
}

static i3_volume read_volume(const char *path) {
    i3_volume v;
    cr_assert_eq(i3_volume_read(ctx, path, &v), I3RT_OK, "%s", i3rt_context_error(ctx));
    return v;
}

Test(cli, i3deep_argument_errors) {
    const char *image = i3deep_fixture("image.nii.gz"), *truth = i3deep_fixture("truth.nii.gz");
    const char *pre = i3deep_fixture("preseg"), *ref = i3deep_fixture("refine"), *out = temp("out");
    const struct {
        const char *args[12], *message;
    } cases[] = {
        {{"refine", image, truth, "-o", out}, "refine needs -r"},
        {{"refine", image, "-r", ref, "-o", out}, "at least one CORRECTION"},
        {{"refine", image, truth, "-r", ref, "-m", pre, "-o", out}, "no ensemble members"},
        {{"simulate", image, truth, "-m", pre, "-o", out, "-r"}, "-r needs a value"},
        {{"recommend", image, "-m", pre, "-r", ref, "-o", out}, "-r is for refine, simulate and evaluate"},
        {{"simulate", image, truth, "-m", pre, "--markdown", "t.md", "-o", out}, "--markdown is for evaluate"},
        {{"evaluate", "-m", pre, "-o", out, image, truth}, "evaluate needs -m MODELDIR and -r"},
        {{"evaluate", "-m", pre, "-r", ref, "-o", out, image}, "IMAGE TRUTH pairs"},
        {{"evaluate", "-m", pre, "-r", ref, "-o", out, "--cases", "c.tsv", image, truth}, "not both"},
        {{"evaluate", "-m", pre, "-r", ref, "-o", out, "--json", image, truth}, "--json is for simulate"},
        {{"evaluate", "-m", pre, "-r", ref, image, truth}, "-o is needed"},
        {{"refinish", image}, "unknown command 'refinish'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i].args;
        const int rc = run_cli("i3deep", a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11],
                               NULL);
        cr_assert_eq(rc, 2, "case %zu: exit %d; stderr: %s", i, rc, err_text);
        expect_failure(rc, cases[i].message, 0);
    }
}

/* --precision, shared by predict, i3deep, snc and serve (cli/common.c): an unknown name is a usage error; a
 * tensor-core precision on the CPU backend fails before anything is read or written, naming the option. */
Test(cli, precision_option) {
    const char *image = i3deep_fixture("image.nii.gz"), *pre = i3deep_fixture("preseg"), *out = temp("out");
    const struct {
        const char *args[14];
    } cases[] = {
        {{"predict", "-i", image, "-o", out, "-m", pre}},
        {{"i3deep", "recommend", image, "-m", pre, "-o", out}},
        {{"snc", "click", image, "-2", pre, "--slice", "axial", "1", "--click", "2", "3", "+", "-o", out}},
        {{"serve", "--model", pre}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int refused = 0; refused < 2; refused++) {
            const char *a[16] = {0};
            int n = 0;
            while (n < 14 && cases[i].args[n]) a[n] = cases[i].args[n], n++;
            a[n] = "--precision", a[n + 1] = refused ? "f16" : "f8";
            const int rc = run_cli(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12],
                                   a[13], a[14], a[15], NULL);
            cr_assert_eq(rc, refused ? 1 : 2, "%s: exit %d; stderr: %s", a[0], rc, err_text);
            expect_failure(rc, refused ? "--precision: the CPU backend computes in f32 only" : "--precision", 0);
        }
    }
}

/* Dice of the segmentation file against the truth, as the CLI must have printed it. */
static void expect_dice_printed(const char *segmentation_path, const char *line_start) {
    i3_volume seg = read_volume(segmentation_path), truth = read_volume(i3deep_fixture("truth.nii.gz"));
    const int64_t n = seg.d * seg.h * seg.w;
    int32_t *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    for (int64_t i = 0; i < n; i++) {
        cr_assert(seg.data[i] >= 0 && seg.data[i] <= 3, "%s: voxel %lld holds %g", segmentation_path, (long long)i,
                  seg.data[i]);
        a[i] = (int32_t)seg.data[i];
        b[i] = (int32_t)truth.data[i];
    }
    double dice[4];
    i3_dice_per_class(a, b, n, 4, dice);
    char expected[256];
    int len = snprintf(expected, sizeof expected, "%s", line_start);
    for (int k = 1; k < 4; k++) len += snprintf(expected + len, sizeof expected - len, "  class %d %.4f", k, dice[k]);
    cr_assert(strstr(out_text, expected), "expected \"%s\" in:\n%s", expected, out_text);
    free(a);
    free(b);
    i3_volume_free(&seg);
    i3_volume_free(&truth);
}

Test(cli, i3deep_simulate_with_refinement_and_refine_agree) {
    const char *image = i3deep_fixture("image.nii.gz"), *truth = i3deep_fixture("truth.nii.gz");
    const char *pre = i3deep_fixture("preseg"), *ref = i3deep_fixture("refine"), *sim = temp("sim");
    cr_assert_eq(run_cli("i3deep", "simulate", image, truth, "-m", pre, "-r", ref, "-o", sim, "--disable-tta",
                         "--name", "c", NULL), 0, "%s", err_text);
    const char *must[] = {"Dice pre-segmentation:", "Dice refined:", "annotation ratio:", "refine ",
                          "expert's waiting time:"};
    for (int i = 0; i < 5; i++) cr_assert(strstr(out_text, must[i]), "no \"%s\" in:\n%s", must[i], out_text);
    cr_assert(strstr(err_text, "stage 4: refinement"), "progress belongs on stderr: %s", err_text);
    expect_dice_printed(fx_path(sim, "c_presegmentation.nii.gz"), "Dice pre-segmentation: ");
    expect_dice_printed(fx_path(sim, "c_segmentation.nii.gz"), "Dice refined:          ");

    /* the corrections volume: the truth on the chosen slices, -1 elsewhere; the chosen slices from the list */
    i3_volume corrections = read_volume(fx_path(sim, "c_corrections.nii.gz")), t = read_volume(truth);
    FILE *list = fopen(fx_path(sim, "c_slices.tsv"), "r");
    cr_assert(list);
    char line[256], axis[16], names[16][64];
    const char *files[16];
    int n = 0, index;
    cr_assert(fgets(line, sizeof line, list));  /* header */
    uint8_t *on_slice = calloc((size_t)(t.d * t.h * t.w), 1);
    while (fgets(line, sizeof line, list) && n < 16) {
        cr_assert_eq(sscanf(line, "%*d %15s %d", axis, &index), 2, "%s", line);
        for (int64_t z = 0; z < t.d; z++)
            for (int64_t y = 0; y < t.h; y++)
                for (int64_t x = 0; x < t.w; x++)
                    if ((axis[0] == 'a' && z == index) || (axis[0] == 'c' && y == index) || (axis[0] == 's' && x == index))
                        on_slice[(z * t.h + y) * t.w + x] = 1;
        /* the whole truth under a correction's name: refine takes the named slice from it */
        snprintf(names[n], sizeof names[n], "truth_%s_%03d.nii.gz", axis, index);
        files[n] = temp(names[n]);
        cr_assert_eq(symlink(truth, files[n]), 0);
        n++;
    }
    fclose(list);
    cr_assert_gt(n, 0, "no slice was chosen");
    for (int64_t i = 0; i < t.d * t.h * t.w; i++)
        cr_assert_eq(corrections.data[i], on_slice[i] ? t.data[i] : -1.0f, "voxel %lld", (long long)i);
    free(on_slice);

    /* refine from those files must give the simulated run's refined segmentation */
    const char *refined = temp("refined.nii.gz");
    const char *argv[32] = {"i3deep", "refine", image, "-r", ref, "-o", refined, "--disable-tta"};
    for (int i = 0; i < n; i++) argv[8 + i] = files[i];
    cr_assert_eq(run_cli(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6], argv[7], argv[8], argv[9],
                         argv[10], argv[11], argv[12], argv[13], argv[14], argv[15], argv[16], argv[17], argv[18],
                         argv[19], NULL), 0, "%s", err_text);
    cr_assert(strstr(out_text, "expert's waiting time:"), "%s", out_text);
    i3_volume a = read_volume(fx_path(sim, "c_segmentation.nii.gz")), b = read_volume(refined);
    cr_assert_eq(i3_volume_geometry_check(ctx, &t.geometry, "truth", &b.geometry, "refined"), I3RT_OK);
    for (int64_t i = 0; i < t.d * t.h * t.w; i++) cr_assert_eq(a.data[i], b.data[i], "voxel %lld", (long long)i);

    /* --json: the summary alone on stdout */
    cr_assert_eq(run_cli("i3deep", "simulate", image, truth, "-m", pre, "-r", ref, "-o", sim, "--json", NULL), 0);
    cJSON *summary = cJSON_Parse(out_text);
    cr_assert(cJSON_IsObject(summary), "%s", out_text);
    const cJSON *classes = cJSON_GetObjectItem(summary, "classes");
    cr_assert(cJSON_IsNumber(classes) && classes->valueint > 1, "%s", out_text);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(summary, "dice_refined")), classes->valueint, "%s", out_text);
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(summary, "waiting_seconds")), "%s", out_text);
    cr_assert(cJSON_IsObject(cJSON_GetObjectItem(summary, "stage_seconds")), "%s", out_text);
    cJSON_Delete(summary);
    i3_volume_free(&a);
    i3_volume_free(&b);
    i3_volume_free(&t);
    i3_volume_free(&corrections);
}

Test(cli, i3deep_refine_bad_corrections_and_models) {
    const char *image = i3deep_fixture("image.nii.gz"), *truth = i3deep_fixture("truth.nii.gz");
    const char *ref = i3deep_fixture("refine"), *out = temp("refined.nii.gz");
    const char *far = temp("truth_axial_500.nii.gz"), *unnamed = temp("truth.nii.gz"), *junk = temp("junk_axial_001.png");
    cr_assert_eq(symlink(truth, far), 0);
    cr_assert_eq(symlink(truth, unnamed), 0);
    FILE *f = fopen(junk, "w");
    fputs("not a png", f);
    fclose(f);
    const char *bad[] = {far, unnamed, junk, temp("absent_axial_001.png")};
    for (int i = 0; i < 4; i++) {
        const int rc = run_cli("i3deep", "refine", image, bad[i], "-r", ref, "-o", out, NULL);
        cr_assert_eq(rc, 1, "%s: exit %d", bad[i], rc);
        expect_failure(rc, bad[i], 3);
    }
    /* the pre-segmentation model as refinement model: one input channel, not image + corrections */
    const char *pre = i3deep_fixture("preseg");
    expect_failure(run_cli("i3deep", "refine", image, far, "-r", pre, "-o", out, NULL), pre, 3);
    cr_assert(strstr(err_text, "input channels"), "%s", err_text);
    expect_failure(run_cli("i3deep", "simulate", image, truth, "-m", pre, "-r", pre, "-o", temp("sim"), NULL), pre, 4);
}

Test(cli, i3deep_evaluate) {
    const char *image = i3deep_fixture("image.nii.gz"), *truth = i3deep_fixture("truth.nii.gz");
    const char *pre = i3deep_fixture("preseg"), *ref = i3deep_fixture("refine");
    const char *list = temp("cases.tsv"), *table = temp("table.md"), *dir = temp("eval");
    FILE *f = fopen(list, "w");
    fprintf(f, "name\timage\ttruth\n# two names for the one case\nfirst\t%s\t%s\nsecond\t%s\t%s\n", image, truth, image,
            truth);
    fclose(f);
    cr_assert_eq(run_cli("i3deep", "evaluate", "-m", pre, "-r", ref, "--cases", list, "-o", dir, "--markdown", table,
                         "--disable-tta", NULL), 0, "%s", err_text);
    const char *rows[] = {"| case | method | Dice 1 | Dice 2 | Dice 3 | mean Dice |", "| first | pre-segmentation |",
                          "| second | i3Deep refinement |", "| **mean** | pre-segmentation |",
                          "| **mean** | i3Deep refinement |"};
    char text[1 << 14];
    slurp(table, text, sizeof text);
    for (int i = 0; i < 5; i++) {
        cr_assert(strstr(out_text, rows[i]), "stdout lacks \"%s\":\n%s", rows[i], out_text);
        cr_assert(strstr(text, rows[i]), "%s lacks \"%s\":\n%s", table, rows[i], text);
    }
    slurp(fx_path(dir, "evaluation.tsv"), text, sizeof text);
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    cr_assert_eq(lines, 5, "evaluation.tsv: header + 2 cases x 2 methods:\n%s", text);
    file_size(fx_path(dir, "first_corrections.nii.gz"));
    file_size(fx_path(dir, "second_segmentation.nii.gz"));

    /* a list line without three fields: the list and the line are named, nothing written */
    f = fopen(list, "w");
    fprintf(f, "first\t%s\t%s\nsecond\t%s\n", image, truth, image);
    fclose(f);
    remove(table);
    const int rc = run_cli("i3deep", "evaluate", "-m", pre, "-r", ref, "--cases", list, "-o", dir, "--markdown", table,
                           NULL);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(err_text, "cases.tsv: line 2"), "%s", err_text);
    cr_assert_neq(access(table, F_OK), 0, "a table was written after a bad list");
}
