/* `i3rt snc`: Slice-and-Conquer on NIfTI files (runtime/snc_session.h, docs/snc.md "session and CLI").
 *
 *   i3rt snc click IMAGE -2 NET2D --slice AXIS INDEX --click Y X +|- [--click ...] -o OUTDIR
 *       the clicks on one slice: its 2D mask (label PNG) and a preview
 *   i3rt snc propagate IMAGE -2 NET2D -3 NET3D (--slice AXIS INDEX [--click Y X +|-]... [--inaccurate])...
 *                      -o OUT.nii.gz
 *       every slice clicked and finished, the guided 3D step, the post-processing: the 3D mask, and
 *       the recommended next slice
 *   i3rt snc recommend ... (as propagate, -o optional): the recommended next slice
 *   i3rt snc simulate IMAGE TRUTH -2 NET2D -3 NET3D -o OUTDIR [--iterations N] [--start 3d|empty]
 *       the simulated user (RITM's clicker) for N slices, each from the 3D prediction's slice (or empty):
 *       Dice per iteration, clicks, times
 *   i3rt snc evaluate -2 NET2D -3 NET3D (--cases LIST.tsv | IMAGE TRUTH...) -o OUTDIR [--markdown FILE]
 *       simulate on every case: Dice after each iteration and the clicks used, one markdown table */
#include "snc.h"    /* cli/snc.h */
#include "common.h" /* cli/common.h: cli_parse_device */
#include "../runtime/png_export.h"
#include "../runtime/snc_session.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_SLICES 64
#define MAX_CLICKS 1024
#define MAX_FILES 1024
#define MAX_ITERATIONS 64

static const char *HELP =
    "usage: i3rt snc click IMAGE -2 NET2D --slice AXIS INDEX --click Y X +|- [--click ...] -o OUTDIR [options]\n"
    "       i3rt snc propagate IMAGE -2 NET2D -3 NET3D (--slice AXIS INDEX [--click Y X +|-]... [--inaccurate])...\n"
    "                          -o OUT.nii.gz [options]\n"
    "       i3rt snc recommend IMAGE -2 NET2D -3 NET3D (--slice AXIS INDEX [--click ...]...)... [-o OUT.nii.gz]\n"
    "       i3rt snc simulate IMAGE TRUTH -2 NET2D -3 NET3D -o OUTDIR [--iterations N] [options]\n"
    "       i3rt snc evaluate -2 NET2D -3 NET3D (--cases LIST.tsv | IMAGE TRUTH [IMAGE TRUTH...]) -o OUTDIR\n"
    "                         [--markdown FILE] [--iterations N] [options]\n"
    "\n"
    "Slice-and-Conquer (Cho et al., WACV 2024) on NIfTI files; docs/snc.md has the details.\n"
    "  click      clicks on one slice with the 2D network (RITM's predictor): writes\n"
    "             OUTDIR/NAME_<axis>_<index>_mask.png (labels 0/1) and _preview.png\n"
    "  propagate  clicks on every --slice, each then accepted (accurate unless --inaccurate; a slice\n"
    "             without clicks is accepted as empty), the guided 3D network, the TV-L1 post-processing\n"
    "             around the accurate slices: writes the 3D mask to OUT and prints the next slice\n"
    "  recommend  the same, printing the recommended next slice (-o optional)\n"
    "  simulate   the simulated user: the truth's largest cross-section first, then the recommended\n"
    "             slices; per slice from its start (--start) RITM's clicker until Dice > 0.9 or 5 clicks\n"
    "             (a start with Dice > 0.9 is accepted without a click); Dice after every iteration;\n"
    "             writes OUTDIR/NAME_mask.nii.gz and a preview of every annotated slice\n"
    "  evaluate   simulate on every case (LIST.tsv: NAME<TAB>IMAGE<TAB>TRUTH per line, paths relative to\n"
    "             the list's folder; or IMAGE TRUTH pairs): a markdown table of the Dice after each\n"
    "             iteration and the clicks used (also written to FILE), masks in OUTDIR\n"
    "\n"
    "AXIS is axial, coronal or sagittal (an axial slice fixes NIfTI z and is a plane of rows y x columns x;\n"
    "coronal fixes y: rows z x columns x; sagittal fixes x: rows z x columns y). A click is Y X (row,\n"
    "column in that plane) and + (object) or - (background). TRUTH: a label NIfTI on IMAGE's grid, > 0 is\n"
    "the object. NET2D: a RITM-HRNet18 weight file (tools/convert_pt/convert_ritm.py); NET3D: the guided\n"
    "3D network (convert_ritm.py --acs --guided).\n"
    "\n"
    "options:\n"
    "  -2 FILE            the 2D network\n"
    "  -3 FILE            the guided 3D network\n"
    "  --slice AXIS I     the slice the following --click and --inaccurate apply to\n"
    "  --click Y X S      a click on the current slice, S = + or -\n"
    "  --inaccurate       propagate: the current slice's mask is accepted but not used in the post-processing\n"
    "  -o OUTDIR | OUT    where to write (a directory is created if missing)\n"
    "  --name NAME        file name prefix (default: IMAGE's name without .nii/.nii.gz)\n"
    "  --iterations N     simulate, evaluate: slices to annotate (default 3)\n"
    "  --cases LIST.tsv   evaluate: the cases\n"
    "  --markdown FILE    evaluate: also write the table to FILE\n"
    "  --json             click, propagate, recommend, simulate: the result as JSON on stdout\n"
    "  --tau F            recommendation: under-confident when the confidence <= F (default 0.9)\n"
    "  --skip N           recommendation: leave out slices within N of an annotated one (default 1)\n"
    "  --gamma F          post-processing fall-off max(1 - F |k|, 0) (default 0.25)\n"
    "  --no-postprocess   no TV-L1 post-processing\n"
    "  --no-zoom          no zoom-in of the 2D predictor\n"
    "  --no-flip          no flip averaging of the 2D predictor\n"
    "  --start S          where a slice's 2D clicks start after a propagation: 3d (default, the paper: the\n"
    "                     3D prediction's slice, probabilities) or empty; matters for simulate and evaluate\n"
    "  --threads N        CPU threads (default 1)\n"
    "  --device D         backend: cpu (default), cuda or emulated\n"
    "  --precision P      convolutions in f32 (default), or on tensor cores in tf32, f16 or bf16 (cuda,\n"
    "                     emulated)\n"
    "  -h, --help         this help\n"
    "Progress goes to stderr, results to stdout. Outputs appear atomically (temporary name + rename).\n";

typedef struct {
    double y, x;
    int positive;
} cli_click;

typedef struct {
    i3_axis axis;
    int64_t index;
    int inaccurate, first_click, n_clicks;
} cli_slice;

typedef struct {
    const char *command, *net2d, *net3d, *out, *name, *cases, *markdown;
    const char *files[MAX_FILES];
    int n_files, json, threads, iterations;
    i3rt_backend_kind backend;
    int precision; /* an i3rt_precision, -1 if not given */
    cli_slice slices[MAX_SLICES];
    int n_slices;
    cli_click clicks[MAX_CLICKS];
    int n_clicks;
    i3_snc_session_params params;
} args;

static int is(const char *a, const char *b) { return strcmp(a, b) == 0; }

static int usage(const char *fmt, const char *arg) { return cli_usage("snc", HELP, fmt, arg); }

static int parse_axis(const char *s, i3_axis *out) {
    for (int a = 0; a < 3; a++)
        if (s && is(s, i3_axis_name((i3_axis)a))) {
            *out = (i3_axis)a;
            return 1;
        }
    return 0;
}

/* What each command needs; -1 when the arguments are fine, else the exit status. */
static int check(args *a) {
    const char *c = a->command;
    const int clicks_any = a->n_clicks > 0;
    if (!a->out && !is(c, "recommend")) return usage("-o is needed%s", "");
    if (a->cases && !is(c, "evaluate")) return usage("--cases is for evaluate, not %s", c);
    if (a->markdown && !is(c, "evaluate")) return usage("--markdown is for evaluate, not %s", c);
    if (a->json && is(c, "evaluate")) return usage("--json is not for %s (it prints a markdown table)", c);
    if (!a->net2d && (clicks_any || is(c, "simulate") || is(c, "evaluate") || is(c, "click")))
        return usage("-2 NET2D (the 2D network) is needed%s", "");
    if (!is(c, "click") && !a->net3d) return usage("-3 NET3D (the guided 3D network) is needed for %s", c);
    if (is(c, "click") || is(c, "propagate") || is(c, "recommend")) {
        if (a->n_files != 1) return usage("%s needs one IMAGE", c);
        if (a->n_slices == 0) return usage("%s needs --slice AXIS INDEX", c);
        if (is(c, "click") && (a->n_slices != 1 || !clicks_any))
            return usage("click takes one --slice and at least one --click%s", "");
    } else {
        if (a->n_slices) return usage("%s chooses the slices itself (no --slice, --click)", c);
        if (is(c, "simulate") && a->n_files != 2) return usage("simulate needs IMAGE and TRUTH%s", "");
        if (is(c, "evaluate") && (a->cases ? a->n_files != 0 : a->n_files == 0 || a->n_files % 2))
            return usage("evaluate needs --cases LIST.tsv or IMAGE TRUTH pairs (not both)%s", "");
        if (is(c, "evaluate") && a->name) return usage("evaluate names the cases itself (no --name)%s", "");
    }
    return -1;
}

static int parse(int argc, char **argv, args *a) {
    memset(a, 0, sizeof *a);
    a->threads = 1, a->iterations = 3, a->precision = -1, a->params = I3_SNC_SESSION_DEFAULTS;
    static const char *const commands[] = {"click", "propagate", "recommend", "simulate", "evaluate"};
    const int start = cli_command("snc", HELP, argc, argv, commands, 5);
    if (start >= 0) return start;
    a->command = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (is(o, "-h") || is(o, "--help")) {
            fputs(HELP, stdout);
            return 0;
        } else if (is(o, "--json") || is(o, "--no-postprocess") || is(o, "--no-zoom") || is(o, "--no-flip")) {
            if (is(o, "--json")) a->json = 1;
            else if (is(o, "--no-postprocess")) a->params.postprocess = 0;
            else if (is(o, "--no-zoom")) a->params.predictor.zoom_in = 0;
            else a->params.predictor.with_flip = 0;
        } else if (is(o, "-2") || is(o, "-3") || is(o, "-o") || is(o, "--name") || is(o, "--cases") ||
                   is(o, "--markdown")) {
            if (!v || (v[0] == '-' && v[1])) return usage("%s needs a value", o);
            *(is(o, "-2") ? &a->net2d : is(o, "-3") ? &a->net3d : is(o, "-o") ? &a->out
              : is(o, "--name") ? &a->name : is(o, "--cases") ? &a->cases : &a->markdown) = argv[++i];
        } else if (is(o, "--slice")) {
            cli_slice *s = &a->slices[a->n_slices];
            if (a->n_slices == MAX_SLICES) return usage("more than 64 slices%s", "");
            if (!parse_axis(v, &s->axis))
                return usage("--slice needs an axis (axial, coronal, sagittal), got '%s'", v ? v : "");
            if (!cli_parse_number(i + 2 < argc ? argv[i + 2] : NULL, 0, 1e9, &x) || x != floor(x))
                return usage("--slice needs a slice index >= 0, got '%s'", i + 2 < argc ? argv[i + 2] : "");
            *s = (cli_slice){s->axis, (int64_t)x, 0, a->n_clicks, 0};
            a->n_slices++;
            i += 2;
        } else if (is(o, "--click")) {
            if (a->n_slices == 0) return usage("--click needs a --slice before it%s", "");
            if (a->n_clicks == MAX_CLICKS) return usage("more than 1024 clicks%s", "");
            double y, xx;
            const char *sign = i + 3 < argc ? argv[i + 3] : "";
            if (!cli_parse_number(v, -1e9, 1e9, &y) || !cli_parse_number(i + 2 < argc ? argv[i + 2] : NULL, -1e9, 1e9, &xx) ||
                !(is(sign, "+") || is(sign, "-")))
                return usage("--click needs Y X and + or -%s", "");
            a->clicks[a->n_clicks++] = (cli_click){y, xx, is(sign, "+")};
            a->slices[a->n_slices - 1].n_clicks++;
            i += 3;
        } else if (is(o, "--inaccurate")) {
            if (a->n_slices == 0) return usage("--inaccurate needs a --slice before it%s", "");
            a->slices[a->n_slices - 1].inaccurate = 1;
        } else if (is(o, "--tau") || is(o, "--gamma")) {
            if (!cli_parse_number(v, 0.0, 1.0, &x)) return usage("%s needs a number in [0, 1]", o);
            *(is(o, "--tau") ? &a->params.recommend.tau : &a->params.gamma) = x;
            i++;
        } else if (is(o, "--skip") || is(o, "--iterations") || is(o, "--threads")) {
            const double lo = is(o, "--skip") ? 0 : 1, hi = is(o, "--iterations") ? MAX_ITERATIONS : 1024;
            if (!cli_parse_number(v, lo, hi, &x) || x != floor(x)) return usage("%s needs a whole number in range", o);
            int *target = is(o, "--skip") ? &a->params.recommend.skip : is(o, "--iterations") ? &a->iterations
                                                                                              : &a->threads;
            *target = (int)x;
            i++;
        } else if (is(o, "--start")) {
            if (!v || !(is(v, "3d") || is(v, "empty"))) return usage("--start needs 3d or empty, got '%s'", v ? v : "");
            a->params.start_3d = is(v, "3d");
            i++;
        } else if (is(o, "--device")) {
            if (!cli_parse_device(v, &a->backend))
                return usage("--device needs cpu, cuda or emulated, got '%s'", v ? v : "");
            i++;
        } else if (is(o, "--precision")) {
            if (!cli_parse_precision(v, &a->precision))
                return usage("--precision needs f32, tf32, f16 or bf16, got '%s'", v ? v : "");
            i++;
        } else if (o[0] == '-' && o[1]) {
            return usage("unknown option '%s'", o);
        } else {
            if (a->n_files == MAX_FILES) return usage("too many files (at most 1024)%s", "");
            a->files[a->n_files++] = o;
        }
    }
    return check(a);
}

/* A session on IMAGE with the networks of the arguments. */
static i3rt_status open_session(i3_ctx *ctx, const args *a, const char *image_path, i3_snc_session **out) {
    i3_volume image;
    I3_TRY(i3_volume_read(ctx, image_path, &image));
    i3rt_status st = i3_snc_session_open(ctx, &image, &a->params, out);
    i3_volume_free(&image);
    if (st == I3RT_OK && a->net2d) st = i3_snc_session_load_net2d(*out, a->net2d);
    if (st == I3RT_OK && a->net3d) st = i3_snc_session_load_net3d(*out, a->net3d);
    if (st != I3RT_OK) {
        i3_snc_session_free(*out);
        *out = NULL;
    }
    return st;
}

static void print_times(FILE *f, const i3_snc_session *s) {
    fprintf(f, "stage times:");
    for (int k = 0; k < I3_SNC_STAGE_COUNT; k++)
        fprintf(f, " %s %.3f s%s", i3_snc_stage_name(k), i3_snc_session_stage_seconds(s, k),
                k + 1 < I3_SNC_STAGE_COUNT ? "," : "\n");
}

static cJSON *json_times(const i3_snc_session *s) {
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; k < I3_SNC_STAGE_COUNT; k++)
        cJSON_AddNumberToObject(o, i3_snc_stage_name(k), i3_snc_session_stage_seconds(s, k));
    return o;
}

static cJSON *json_slice(i3_axis axis, int64_t index) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "axis", i3_axis_name(axis));
    cJSON_AddNumberToObject(o, "index", (double)index);
    return o;
}

/* Prints and frees root; fails (out of memory) when cJSON could not print it. */
static i3rt_status print_json(i3_ctx *ctx, cJSON *root) {
    char *text = root ? cJSON_Print(root) : NULL;
    if (text) printf("%s\n", text);
    cJSON_free(text);
    cJSON_Delete(root);
    return text ? I3RT_OK : i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "i3rt snc: out of memory writing JSON");
}

static int64_t count_ones(const uint8_t *m, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += m[i] != 0;
    return k;
}

/* The slice's 2D mask as a label PNG (rows flipped as the previews, slice_select.h). */
static i3rt_status write_mask_png(i3_ctx *ctx, i3_snc_session *s, const cli_slice *sl, const char *path) {
    int64_t rows, cols;
    const uint8_t *m = i3_snc_session_slice_mask(s, sl->axis, sl->index, &rows, &cols);
    if (!m) return I3RT_ERR_INVALID_ARGUMENT;
    int32_t *labels = i3_malloc(ctx, (size_t)(rows * cols) * sizeof *labels, path);
    if (!labels) return I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < rows * cols; i++) labels[i] = m[i];
    i3_plane_flip_rows(labels, sizeof *labels, rows, cols);
    const i3rt_status st = i3_png_write_labels(ctx, path, labels, rows, cols);
    free(labels);
    return st;
}

/* ---- click, propagate, recommend ------------------------------------------------------------------- */

/* Every --slice's clicks; each slice is finished unless `finish` is 0. */
static i3rt_status run_slices(i3_snc_session *s, const args *a, int finish, cJSON *json) {
    cJSON *list = json ? cJSON_AddArrayToObject(json, "slices") : NULL;
    for (int k = 0; k < a->n_slices; k++) {
        const cli_slice *sl = &a->slices[k];
        cJSON *js = list ? json_slice(sl->axis, sl->index) : NULL;
        cJSON *fg = js ? cJSON_AddArrayToObject(js, "foreground_after_click") : NULL;
        cJSON *ms = js ? cJSON_AddArrayToObject(js, "click_ms") : NULL;
        if (js) cJSON_AddItemToArray(list, js);
        for (int c = 0; c < sl->n_clicks; c++) {
            const cli_click *ck = &a->clicks[sl->first_click + c];
            const double t0 = i3_now_seconds();
            I3_TRY(i3_snc_session_click(s, sl->axis, sl->index, ck->y, ck->x, ck->positive));
            const double click_ms = 1e3 * (i3_now_seconds() - t0);
            int64_t rows, cols;
            const uint8_t *m = i3_snc_session_slice_mask(s, sl->axis, sl->index, &rows, &cols);
            const int64_t n_fg = count_ones(m, rows * cols);
            if (fg) cJSON_AddItemToArray(fg, cJSON_CreateNumber((double)n_fg));
            if (ms) cJSON_AddItemToArray(ms, cJSON_CreateNumber(click_ms));
            fprintf(json ? stderr : stdout, "%s %lld: click (%g, %g) %s -> %lld of %lld pixels in the mask (%.1f ms)\n",
                    i3_axis_name(sl->axis), (long long)sl->index, ck->y, ck->x, ck->positive ? "+" : "-",
                    (long long)n_fg, (long long)(rows * cols), click_ms);
        }
        if (finish) I3_TRY(i3_snc_session_finish(s, sl->axis, sl->index, !sl->inaccurate));
        if (js && finish) cJSON_AddBoolToObject(js, "accurate", !sl->inaccurate);
    }
    return I3RT_OK;
}

static i3rt_status cmd_click(i3_ctx *ctx, const args *a, const char *name) {
    i3_snc_session *s;
    I3_TRY(open_session(ctx, a, a->files[0], &s));
    cJSON *json = a->json ? cJSON_CreateObject() : NULL;
    i3rt_status st = run_slices(s, a, 0, json);
    const cli_slice *sl = &a->slices[0];
    char mask_path[CLI_PATH_LEN], preview_path[CLI_PATH_LEN];
    snprintf(mask_path, sizeof mask_path, "%s/%s_%s_%03lld_mask.png", a->out, name, i3_axis_name(sl->axis),
             (long long)sl->index);
    snprintf(preview_path, sizeof preview_path, "%s/%s_%s_%03lld_preview.png", a->out, name, i3_axis_name(sl->axis),
             (long long)sl->index);
    if (st == I3RT_OK) st = write_mask_png(ctx, s, sl, mask_path);
    if (st == I3RT_OK) st = i3_snc_session_save_preview(s, sl->axis, sl->index, preview_path);
    if (st == I3RT_OK && json) {
        cJSON_AddStringToObject(json, "mask", mask_path);
        cJSON_AddStringToObject(json, "preview", preview_path);
        cJSON_AddItemToObject(json, "stage_seconds", json_times(s));
        st = print_json(ctx, json);
        json = NULL;
    } else if (st == I3RT_OK) {
        printf("mask: %s\npreview: %s\n", mask_path, preview_path);
        print_times(stdout, s);
    }
    cJSON_Delete(json);
    i3_snc_session_free(s);
    return st;
}

static i3rt_status cmd_propagate(i3_ctx *ctx, const args *a) {
    i3_snc_session *s;
    I3_TRY(open_session(ctx, a, a->files[0], &s));
    cJSON *json = a->json ? cJSON_CreateObject() : NULL;
    i3rt_status st = run_slices(s, a, 1, json);
    if (st == I3RT_OK) st = i3_snc_session_propagate(s);
    if (st == I3RT_OK && a->out) st = i3_snc_session_save_mask(s, a->out);
    i3_slice rec;
    int found = 0;
    if (st == I3RT_OK) st = i3_snc_session_recommendation(s, &rec, &found);
    if (st == I3RT_OK) {
        const i3_volume *im = i3_snc_session_image(s);
        const int64_t fg = count_ones(i3_snc_session_mask(s), im->d * im->h * im->w);
        if (json) {
            cJSON_AddNumberToObject(json, "mask_voxels", (double)fg);
            if (a->out) cJSON_AddStringToObject(json, "mask", a->out);
            cJSON *r = found ? json_slice(rec.axis, rec.index) : cJSON_CreateNull();
            if (found) cJSON_AddNumberToObject(r, "under_confident", rec.sum);
            if (found) cJSON_AddNumberToObject(r, "fraction", rec.relative);
            cJSON_AddItemToObject(json, "recommended", r);
            cJSON_AddItemToObject(json, "stage_seconds", json_times(s));
            st = print_json(ctx, json);
            json = NULL;
        } else {
            printf("3D mask: %lld voxels%s%s\n", (long long)fg, a->out ? ", written to " : "", a->out ? a->out : "");
            if (found)
                printf("recommended next slice: %s %lld (%.0f under-confident voxels, %.3f of the slice)\n",
                       i3_axis_name(rec.axis), (long long)rec.index, rec.sum, rec.relative);
            else
                printf("recommended next slice: none (confident everywhere outside the annotated slices)\n");
            print_times(stdout, s);
        }
    }
    cJSON_Delete(json);
    i3_snc_session_free(s);
    return st;
}

/* ---- simulate and evaluate ----------------------------------------------------------------------------- */

/* The truth as 0/1 (label > 0) on the image's grid. */
static i3rt_status read_truth(i3_ctx *ctx, const char *path, const char *image_path, uint8_t **out) {
    *out = NULL;
    i3_volume image, truth;
    I3_TRY(i3_volume_read(ctx, image_path, &image));
    i3rt_status st = i3_volume_read(ctx, path, &truth);
    if (st == I3RT_OK) {
        st = i3_volume_geometry_check(ctx, &image.geometry, image_path, &truth.geometry, path);
        const int64_t n = truth.d * truth.h * truth.w;
        if (st == I3RT_OK && truth.channels != 1)
            st = i3_fail(ctx, I3RT_ERR_SHAPE, "%s: %lld channels, a label map has one", path,
                         (long long)truth.channels);
        if (st == I3RT_OK) *out = i3_malloc(ctx, (size_t)n, path);
        if (st == I3RT_OK && !*out) st = I3RT_ERR_OUT_OF_MEMORY;
        for (int64_t i = 0; st == I3RT_OK && i < n; i++) (*out)[i] = truth.data[i] > 0.0f;
        i3_volume_free(&truth);
    }
    i3_volume_free(&image);
    return st;
}

/* One simulated case: writes OUTDIR/NAME_mask.nii.gz and the annotated slices' previews. */
static i3rt_status simulate_case(i3_ctx *ctx, const args *a, const char *image_path, const char *truth_path,
                                 const char *name, i3_snc_iteration *it, int *done, double *total_seconds) {
    uint8_t *truth;
    I3_TRY(read_truth(ctx, truth_path, image_path, &truth));
    i3_snc_session *s = NULL;
    i3rt_status st = open_session(ctx, a, image_path, &s);
    i3_snc_simulate_params p = I3_SNC_SIMULATE_DEFAULTS;
    p.iterations = a->iterations;
    if (st == I3RT_OK) st = i3_snc_simulate(s, truth, &p, it, done);
    char path[CLI_PATH_LEN];
    snprintf(path, sizeof path, "%s/%s_mask.nii.gz", a->out, name);
    if (st == I3RT_OK) st = i3_snc_session_save_mask(s, path);
    for (int t = 0; st == I3RT_OK && t < *done; t++) {
        snprintf(path, sizeof path, "%s/%s_%s_%03lld_preview.png", a->out, name, i3_axis_name(it[t].slice.axis),
                 (long long)it[t].slice.index);
        st = i3_snc_session_save_preview(s, it[t].slice.axis, it[t].slice.index, path);
    }
    *total_seconds = 0;
    for (int k = 0; s && k < I3_SNC_STAGE_COUNT; k++) *total_seconds += i3_snc_session_stage_seconds(s, k);
    if (st == I3RT_OK && !a->json && is(a->command, "simulate")) print_times(stdout, s);
    i3_snc_session_free(s);
    free(truth);
    return st;
}

static i3rt_status cmd_simulate(i3_ctx *ctx, const args *a, const char *name) {
    i3_snc_iteration it[MAX_ITERATIONS];
    int done = 0;
    double seconds;
    I3_TRY(simulate_case(ctx, a, a->files[0], a->files[1], name, it, &done, &seconds));
    if (a->json) {
        cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "iterations");
        cJSON_AddStringToObject(root, "case", name);
        cJSON_AddStringToObject(root, "output_dir", a->out);
        for (int t = 0; t < done; t++) {
            cJSON *o = json_slice(it[t].slice.axis, it[t].slice.index);
            cJSON_AddNumberToObject(o, "start_dice", it[t].start_dice);
            cJSON_AddNumberToObject(o, "clicks", it[t].clicks);
            cJSON_AddNumberToObject(o, "slice_dice", it[t].slice_dice);
            cJSON_AddBoolToObject(o, "accurate", it[t].accurate);
            cJSON_AddNumberToObject(o, "dice", it[t].dice);
            cJSON_AddNumberToObject(o, "seconds", it[t].seconds);
            cJSON_AddItemToArray(list, o);
        }
        cJSON_AddNumberToObject(root, "total_seconds", seconds);
        return print_json(ctx, root);
    }
    printf("| iteration | slice | start Dice | clicks | slice Dice | 3D Dice | seconds |\n"
           "|---|---|---|---|---|---|---|\n");
    for (int t = 0; t < done; t++)
        printf("| %d | %s %lld | %.4f | %d | %.4f%s | %.4f | %.3f |\n", t + 1, i3_axis_name(it[t].slice.axis),
               (long long)it[t].slice.index, it[t].start_dice, it[t].clicks, it[t].slice_dice,
               it[t].accurate ? " (accurate)" : "", it[t].dice, it[t].seconds);
    if (done < a->iterations) printf("(stopped after %d: no slice left to recommend)\n", done);
    printf("mask: %s/%s_mask.nii.gz\n", a->out, name);
    return I3RT_OK;
}

/* The evaluation table: per case the 3D Dice after each iteration and the clicks used up to it, then the
 * mean over the cases that reached that iteration. dice, clicks: [n][iterations] (NaN / -1 past the end). */
static void write_table(FILE *f, const cli_case *cases, int n, int iterations, const double *dice, const int *clicks,
                        const double *seconds) {
    fputs("| case |", f);
    for (int t = 0; t < iterations; t++) fprintf(f, " Dice %d |", t + 1);
    for (int t = 0; t < iterations; t++) fprintf(f, " clicks %d |", t + 1);
    fputs(" seconds |\n|---|", f);
    for (int t = 0; t < 2 * iterations + 1; t++) fputs("---|", f);
    fputc('\n', f);
    for (int i = 0; i <= n; i++) {
        fprintf(f, i < n ? "| %s |" : "| **mean** |", i < n ? cases[i].name : "");
        for (int col = 0; col < 2 * iterations + 1; col++) {
            const int t = col % iterations;
            double v = 0;
            int count = 0;
            for (int j = i < n ? i : 0; j < (i < n ? i + 1 : n); j++) {
                const size_t at = (size_t)j * iterations + t;
                const double x = col == 2 * iterations ? seconds[j]
                                 : col < iterations    ? dice[at]
                                                       : (clicks[at] < 0 ? NAN : clicks[at]);
                if (!isnan(x)) v += x, count++;
            }
            if (!count) fputs(" - |", f);
            else if (col < iterations) fprintf(f, " %.4f |", v / count);
            else fprintf(f, col < 2 * iterations && i < n ? " %.0f |" : " %.1f |", v / count);
        }
        fputc('\n', f);
    }
}

static i3rt_status cmd_evaluate(i3_ctx *ctx, const args *a) {
    cli_case *cases = NULL;
    int n = 0;
    if (a->cases) {
        I3_TRY(cli_read_case_list(ctx, a->cases, &cases, &n));
    } else {
        n = a->n_files / 2;
        cases = calloc((size_t)n, sizeof *cases);
        if (!cases) return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "evaluate: out of memory");
        for (int i = 0; i < n; i++) {
            cli_base_name(a->files[2 * i], cases[i].name, sizeof cases[i].name);
            snprintf(cases[i].image, CLI_PATH_LEN, "%s", a->files[2 * i]);
            snprintf(cases[i].truth, CLI_PATH_LEN, "%s", a->files[2 * i + 1]);
        }
    }
    const int T = a->iterations;
    double *dice = malloc((size_t)n * T * sizeof *dice), *seconds = malloc((size_t)n * sizeof *seconds);
    int *clicks = malloc((size_t)n * T * sizeof *clicks);
    i3rt_status st =
        dice && seconds && clicks ? I3RT_OK : i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "evaluate: out of memory");
    for (int i = 0; i < n && st == I3RT_OK; i++) {
        fprintf(stderr, "snc: case %d of %d: %s\n", i + 1, n, cases[i].name);
        i3_snc_iteration it[MAX_ITERATIONS];
        int done = 0, used = 0;
        st = simulate_case(ctx, a, cases[i].image, cases[i].truth, cases[i].name, it, &done, &seconds[i]);
        for (int t = 0; t < T; t++) {
            used += t < done ? it[t].clicks : 0;
            dice[(size_t)i * T + t] = t < done ? it[t].dice : NAN;
            clicks[(size_t)i * T + t] = t < done ? used : -1;
        }
    }
    if (st == I3RT_OK && a->markdown) {
        char tmp[CLI_PATH_LEN + 16];
        snprintf(tmp, sizeof tmp, "%s.tmp", a->markdown);
        FILE *f = fopen(tmp, "w");
        if (!f) st = i3_fail(ctx, I3RT_ERR_IO, "%s: cannot write", tmp);
        if (f) {
            write_table(f, cases, n, T, dice, clicks, seconds);
            const int bad = ferror(f) | (fclose(f) != 0);
            if (bad || rename(tmp, a->markdown) != 0) {
                remove(tmp);
                st = i3_fail(ctx, I3RT_ERR_IO, "%s: cannot write", a->markdown);
            }
        }
    }
    if (st == I3RT_OK) {
        write_table(stdout, cases, n, T, dice, clicks, seconds);
        printf("\nDice t: the 3D mask vs the truth after t annotated slices; clicks t: clicks used on the first t "
               "slices (at most 5 each, fewer once a slice's Dice > 0.9; slices after the first start from %s); "
               "seconds: the case's session stages.\n",
               a->params.start_3d ? "the 3D prediction's slice (--start 3d)" : "an empty mask (--start empty)");
    }
    free(dice), free(seconds), free(clicks), free(cases);
    return st;
}

int cli_snc(int argc, char **argv) {
    args *a = malloc(sizeof *a);
    if (!a) return 1;
    int rc = parse(argc, argv, a);
    if (rc >= 0) {
        free(a);
        return rc;
    }
    const char *cmd = a->command;
    const int out_dir = is(cmd, "click") || is(cmd, "simulate") || is(cmd, "evaluate");
    char name[256] = "case";
    if (a->name) snprintf(name, sizeof name, "%s", a->name);
    else if (a->n_files) cli_base_name(a->files[0], name, sizeof name);
    i3rt_context *ctx = cli_context_create("snc", a->threads, a->backend, a->precision);
    if (!ctx || (out_dir && !cli_make_dir("snc", a->out))) {
        rc = 1;
    } else {
        const i3rt_status st = is(cmd, "click")      ? cmd_click(ctx, a, name)
                               : is(cmd, "simulate") ? cmd_simulate(ctx, a, name)
                               : is(cmd, "evaluate") ? cmd_evaluate(ctx, a)
                                                     : cmd_propagate(ctx, a);
        if (st != I3RT_OK) fprintf(stderr, "i3rt snc %s: %s\n", cmd, i3rt_context_error(ctx));
        rc = st == I3RT_OK ? 0 : 1;
    }
    i3rt_context_free(ctx);
    free(a);
    return rc;
}
