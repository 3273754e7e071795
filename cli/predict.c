/* `i3rt predict`: nnUNetv2_predict with i3rt (runtime/predict.h does the work).
 *
 *   i3rt predict -i INPUT -o OUTDIR -m MODELDIR [-f 0 1 ...] [--disable-tta] [--step-size 0.5]
 *                [--save-probabilities] [--accumulate fp32|fp16] [--prev-stage-predictions DIR]
 *                [--continue-prediction] [--num-parts N --part-id K] [--postprocessing FILE]
 *                [--device cpu|cuda|emulated] [--precision P] [--threads N] [--quiet | --json-progress]
 *
 * INPUT is a folder of cases named as nnU-Net expects (CASE_0000.nii.gz, CASE_0001.nii.gz, ... one file
 * per channel) or one case: its CASE_0000 file (the other channels are found beside it) or a single
 * (3D or 4D) NIfTI file. Every case is checked (all channel files present, no extra ones) before the
 * first prediction starts. Outputs: OUTDIR/CASE.nii.gz (labels, the input's geometry) and with
 * --save-probabilities OUTDIR/CASE_probabilities.nii.gz (float32, 4th dimension = classes). A cascade stage
 * (3d_cascade_fullres) reads the previous stage's output DIR/CASE.nii.gz of each case. Files
 * appear atomically (temporary name + rename): a failed or interrupted run leaves no partial output. */
#include "predict.h"              /* cli/predict.h: cli_predict */
#include "common.h"               /* cli/common.h: cli_parse_device */
#include "../runtime/predict.h"   /* the pipeline (runtime/predict.h; the names clash) */
#include "postprocess.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CASES 100000
#define PATH_MAX_LEN 4096

static const char *HELP =
    "usage: i3rt predict -i INPUT -o OUTDIR -m MODELDIR [options]\n"
    "\n"
    "nnU-Net v2 prediction as nnUNetv2_predict does it: transpose, crop to the nonzero box, normalization,\n"
    "resampling, sliding window with the Gaussian importance map, mirroring, fold averaging, resampling back,\n"
    "argmax. MODELDIR holds fold_K.safetensors (tools/convert_pt/convert_nnunet.py converts an nnU-Net\n"
    "trained-model folder).\n"
    "\n"
    "  -i INPUT              a folder of cases (CASE_0000.nii.gz, CASE_0001.nii.gz, ... one file per channel),\n"
    "                        or one case: its CASE_0000 file, or one 3D/4D NIfTI file\n"
    "  -o OUTDIR             writes OUTDIR/CASE.nii.gz (labels, with the input's geometry)\n"
    "  -m MODELDIR           the model folder\n"
    "  -f K [K ...]          folds to use (default: every fold_K.safetensors in MODELDIR)\n"
    "  --disable-tta         no test-time mirroring\n"
    "  --step-size S         sliding-window step as a fraction of the patch (default 0.5)\n"
    "  --save-probabilities  also OUTDIR/CASE_probabilities.nii.gz (float32, 4th dimension = classes)\n"
    "  --accumulate fp32|fp16  sliding-window sums in float32 (default) or rounded to fp16 at every step\n"
    "                        exactly as nnunetv2 does (bit-faithful to nnUNetPredictor)\n"
    "  --prev-stage-predictions DIR  a cascade stage (3d_cascade_fullres): the previous stage's (3d_lowres)\n"
    "                        segmentations, DIR/CASE.nii.gz, as nnUNetv2_predict -prev_stage_predictions\n"
    "  --postprocessing FILE nnU-Net's postprocessing.json (nnUNetv2_find_best_configuration's choice):\n"
    "                        applied to the labels as nnUNetv2_apply_postprocessing does\n"
    "  --continue-prediction skip the cases whose outputs exist already (an interrupted run goes on)\n"
    "  --num-parts N --part-id K  predict only every N-th case from the K-th (0 <= K < N, cases in name\n"
    "                        order), to share a folder between N processes or machines\n"
    "  --device cpu|cuda|emulated  backend (default cpu; emulated: the CUDA kernels on the CPU)\n"
    "  --precision P         convolutions in f32 (default), or on tensor cores in tf32, f16 or bf16 (cuda,\n"
    "                        emulated); f16 is what nnUNetPredictor runs on a GPU (autocast)\n"
    "  --threads N           CPU threads (default: all cores)\n"
    "  --quiet               no progress output\n"
    "  --json-progress       progress as JSON lines on stdout (for scripts)\n"
    "  -h, --help            this help\n";

typedef struct {
    char name[256];
    int n_files;
    char **files; /* channel files in order */
} case_files;

typedef struct {
    const char *input, *out_dir, *model_dir, *prev_stage_dir, *postprocessing;
    int folds[I3_MAX_FOLDS], n_folds;
    int disable_tta, save_probabilities, quiet, json, continue_prediction;
    int num_parts, part_id;
    double step_size;
    i3_accumulate_mode accumulate;
    i3rt_backend_kind backend;
    int precision; /* an i3rt_precision, -1 if not given */
    int threads;
} predict_args;

typedef struct {
    const predict_args *args;
    const char *case_name;
    int case_index, n_cases;
    double t0, last_draw;
    int tty;
} progress_state;

static int usage(const char *fmt, const char *arg) { return cli_usage("predict", HELP, fmt, arg); }

/* --json-progress: one event per line, {"event": NAME, "case": CASE, "case_index": I, "cases": N, ...}
 * (events "progress", "case_done", and at the end "done" without a case, with the seconds of all cases and
 * the device memory peak in bytes, 0 on the CPU). */
static cJSON *json_event(const char *name, const char *case_name, int case_index, int n_cases) {
    cJSON *event = cJSON_CreateObject();
    cJSON_AddStringToObject(event, "event", name);
    if (case_name) cJSON_AddStringToObject(event, "case", case_name);
    cJSON_AddNumberToObject(event, "case_index", case_index);
    cJSON_AddNumberToObject(event, "cases", n_cases);
    return event;
}

static void print_json_event(cJSON *event) {
    char *text = cJSON_PrintUnformatted(event);
    if (text) printf("%s\n", text);
    fflush(stdout);
    cJSON_free(text);
    cJSON_Delete(event);
}

static void progress(void *user, int64_t done, int64_t total) {
    progress_state *ps = user;
    const double now = i3_now_seconds(), elapsed = now - ps->t0;
    const double eta = done > 0 ? elapsed / (double)done * (double)(total - done) : 0.0;
    if (ps->args->json) {
        cJSON *event = json_event("progress", ps->case_name, ps->case_index, ps->n_cases);
        cJSON_AddNumberToObject(event, "done", (double)done);
        cJSON_AddNumberToObject(event, "total", (double)total);
        cJSON_AddNumberToObject(event, "elapsed_s", elapsed);
        cJSON_AddNumberToObject(event, "eta_s", eta);
        print_json_event(event);
        return;
    }
    if (ps->args->quiet || !ps->tty) return;
    if (done < total && now - ps->last_draw < 0.1) return;
    ps->last_draw = now;
    const int width = 30, filled = total > 0 ? (int)(width * done / total) : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '-';
    bar[width] = '\0';
    fprintf(stderr, "\r[%d/%d] %-24.24s [%s] %3d%% %lld/%lld forwards, %.1f s, ETA %.1f s  ", ps->case_index + 1,
            ps->n_cases, ps->case_name, bar, total > 0 ? (int)(100 * done / total) : 100, (long long)done,
            (long long)total, elapsed, eta);
    fflush(stderr);
}

static bool has_suffix(const char *s, const char *suffix) {
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const char *nifti_ending(const char *name) {
    return has_suffix(name, ".nii.gz") ? ".nii.gz" : has_suffix(name, ".nii") ? ".nii" : NULL;
}

/* "CASE_0003.nii.gz" -> case "CASE", channel 3; false if the name does not follow that pattern. */
static bool split_channel_name(const char *name, char *case_name, size_t cap, int *channel) {
    const char *ending = nifti_ending(name);
    if (!ending) return false;
    const size_t stem = strlen(name) - strlen(ending);
    if (stem < 6 || name[stem - 5] != '_') return false;
    for (size_t i = stem - 4; i < stem; i++)
        if (name[i] < '0' || name[i] > '9') return false;
    if (stem - 5 >= cap) return false;
    memcpy(case_name, name, stem - 5);
    case_name[stem - 5] = '\0';
    *channel = atoi(name + stem - 4);
    return true;
}

static void free_case(case_files *c) {
    for (int f = 0; f < c->n_files; f++) free(c->files[f]);
    free(c->files);
}

static void free_cases(case_files *cases, int n) {
    for (int i = 0; i < n; i++) free_case(&cases[i]);
    free(cases);
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Lists the channel files of every case in dir (or, for a file, of its case), checking that each case
 * has exactly channels 0 .. n-1. Fills an error message and returns NULL on failure. */
static case_files *collect_cases(const char *input, int n_channels, int *n_cases, char *err, size_t err_cap) {
    struct stat sb;
    *n_cases = 0;
    if (stat(input, &sb) != 0) {
        snprintf(err, err_cap, "%s: %s", input, strerror(errno));
        return NULL;
    }
    char dir[PATH_MAX_LEN], only_case[256] = "";
    char **names = NULL;
    int n_names = 0;
    if (S_ISDIR(sb.st_mode)) {
        snprintf(dir, sizeof dir, "%s", input);
    } else {
        const char *slash = strrchr(input, '/');
        const char *base = slash ? slash + 1 : input;
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - input) : 1, slash ? input : ".");
        int ch;
        if (!nifti_ending(base)) {
            snprintf(err, err_cap, "%s: not a NIfTI file (.nii or .nii.gz)", input);
            return NULL;
        }
        if (!split_channel_name(base, only_case, sizeof only_case, &ch) || ch != 0) {
            /* a single file is the whole case (3D, or 4D with the channels) */
            case_files *c = calloc(1, sizeof *c);
            c->files = calloc(1, sizeof *c->files);
            c->files[0] = strdup(input);
            c->n_files = 1;
            const size_t stem = strlen(base) - strlen(nifti_ending(base));
            snprintf(c->name, sizeof c->name, "%.*s", (int)stem, base);
            *n_cases = 1;
            return c;
        }
    }
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, err_cap, "%s: %s", dir, strerror(errno));
        return NULL;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char cn[256];
        int ch;
        if (!split_channel_name(e->d_name, cn, sizeof cn, &ch)) continue;
        if (only_case[0] && strcmp(cn, only_case) != 0) continue;
        if (n_names % 256 == 0) names = realloc(names, (size_t)(n_names + 256) * sizeof *names);
        names[n_names++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n_names, sizeof *names, compare_names);
    case_files *cases = calloc((size_t)(n_names > 0 ? n_names : 1), sizeof *cases);
    int nc = 0;
    bool ok = n_names > 0;
    if (!ok) snprintf(err, err_cap, "%s: no case files (CASE_0000.nii.gz, ...) found", dir);
    for (int i = 0; i < n_names && ok;) {
        char cn[256];
        int ch;
        split_channel_name(names[i], cn, sizeof cn, &ch);
        case_files *c = &cases[nc++];
        snprintf(c->name, sizeof c->name, "%s", cn);
        c->files = calloc((size_t)n_channels + 64, sizeof *c->files);
        int j = i, expect = 0;
        for (; j < n_names; j++) {
            char cn2[256];
            int ch2;
            split_channel_name(names[j], cn2, sizeof cn2, &ch2);
            if (strcmp(cn2, cn) != 0) break;
            if (ch2 != expect) {
                snprintf(err, err_cap, "case %s: channel file %s_%04d%s is missing (found %s)", cn, cn, expect,
                         nifti_ending(names[j]), names[j]);
                ok = false;
                break;
            }
            if (c->n_files < n_channels + 64) {
                char path[PATH_MAX_LEN * 2];
                snprintf(path, sizeof path, "%s/%s", dir, names[j]);
                c->files[c->n_files++] = strdup(path);
            }
            expect++;
        }
        if (ok && expect != n_channels) {
            if (expect < n_channels)
                snprintf(err, err_cap, "case %s: channel file %s_%04d is missing (the model needs %d channels, found %d)",
                         cn, cn, expect, n_channels, expect);
            else
                snprintf(err, err_cap, "case %s has %d channel files, the model needs %d", cn, expect, n_channels);
            ok = false;
        }
        i = j;
    }
    for (int i = 0; i < n_names; i++) free(names[i]);
    free(names);
    if (!ok) {
        free_cases(cases, nc);
        return NULL;
    }
    *n_cases = nc;
    return cases;
}

static int parse_args(int argc, char **argv, predict_args *a) {
    memset(a, 0, sizeof *a);
    a->step_size = 0.5;
    a->precision = -1;
    a->num_parts = 1;
    a->threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (a->threads < 1) a->threads = 1;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        const bool has_value = i + 1 < argc;
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            fputs(HELP, stdout);
            return EXIT_SUCCESS;
        } else if (strcmp(o, "-i") == 0 || strcmp(o, "-o") == 0 || strcmp(o, "-m") == 0) {
            if (!has_value) return usage("%s needs a value", o);
            *(o[1] == 'i' ? &a->input : o[1] == 'o' ? &a->out_dir : &a->model_dir) = argv[++i];
        } else if (strcmp(o, "-f") == 0) {
            while (i + 1 < argc && argv[i + 1][0] != '-') {
                char *end;
                const long k = strtol(argv[++i], &end, 10);
                if (*end || k < 0 || k > 1000000) return usage("-f: '%s' is not a fold number", argv[i]);
                if (a->n_folds == I3_MAX_FOLDS) return usage("-f: at most 16 folds%s", "");
                a->folds[a->n_folds++] = (int)k;
            }
            if (a->n_folds == 0) return usage("-f needs at least one fold number%s", "");
        } else if (strcmp(o, "--disable-tta") == 0) {
            a->disable_tta = 1;
        } else if (strcmp(o, "--save-probabilities") == 0) {
            a->save_probabilities = 1;
        } else if (strcmp(o, "--quiet") == 0) {
            a->quiet = 1;
        } else if (strcmp(o, "--json-progress") == 0) {
            a->json = 1;
        } else if (strcmp(o, "--postprocessing") == 0) {
            if (!has_value) return usage("%s needs a postprocessing.json", o);
            a->postprocessing = argv[++i];
        } else if (strcmp(o, "--continue-prediction") == 0) {
            a->continue_prediction = 1;
        } else if (strcmp(o, "--num-parts") == 0 || strcmp(o, "--part-id") == 0) {
            char *end;
            const long k = has_value ? strtol(argv[++i], &end, 10) : -1;
            if (!has_value || *end || k < 0 || k > 100000) return usage("%s needs a whole number", o);
            *(o[2] == 'n' ? &a->num_parts : &a->part_id) = (int)k;
        } else if (strcmp(o, "--prev-stage-predictions") == 0) {
            if (!has_value) return usage("%s needs a folder", o);
            a->prev_stage_dir = argv[++i];
        } else if (strcmp(o, "--step-size") == 0) {
            char *end;
            a->step_size = has_value ? strtod(argv[++i], &end) : 0.0;
            if (!has_value || *end || !(a->step_size > 0 && a->step_size <= 1))
                return usage("--step-size needs a number in (0, 1], got '%s'", has_value ? argv[i] : "");
        } else if (strcmp(o, "--accumulate") == 0) {
            if (!has_value || (strcmp(argv[i + 1], "fp32") != 0 && strcmp(argv[i + 1], "fp16") != 0))
                return usage("--accumulate needs fp32 or fp16, got '%s'", has_value ? argv[i + 1] : "");
            a->accumulate = strcmp(argv[++i], "fp16") == 0 ? I3_ACCUMULATE_FP16 : I3_ACCUMULATE_FP32;
        } else if (strcmp(o, "--device") == 0) {
            if (!has_value || !cli_parse_device(argv[i + 1], &a->backend))
                return usage("--device needs cpu, cuda or emulated, got '%s'", has_value ? argv[i + 1] : "");
            i++;
        } else if (strcmp(o, "--precision") == 0) {
            if (!has_value || !cli_parse_precision(argv[i + 1], &a->precision))
                return usage("--precision needs f32, tf32, f16 or bf16, got '%s'", has_value ? argv[i + 1] : "");
            i++;
        } else if (strcmp(o, "--threads") == 0) {
            char *end;
            const long t = has_value ? strtol(argv[++i], &end, 10) : 0;
            if (!has_value || *end || t < 1 || t > 1024)
                return usage("--threads needs a number of threads (1..1024), got '%s'", has_value ? argv[i] : "");
            a->threads = (int)t;
        } else {
            return usage("unknown option or argument '%s'", o);
        }
    }
    if (!a->input || !a->out_dir || !a->model_dir) return usage("-i, -o and -m are required%s", "");
    if (a->quiet && a->json) return usage("--quiet and --json-progress exclude each other%s", "");
    if (a->num_parts < 1 || a->part_id >= a->num_parts)
        return usage("--part-id must be below --num-parts (and --num-parts at least 1)%s", "");
    return -1;
}

/* dataset.json's file_ending for the files i3rt writes and reads beside the cases: .nii or .nii.gz. */
static const char *nifti_file_ending(const i3_predictor_info *info) {
    return strcmp(info->file_ending, ".nii") == 0 ? ".nii" : ".nii.gz";
}

/* --prev-stage-predictions: every case's file is there, checked before the first case runs (whether the model
 * is a cascade stage that needs them, i3_predict_case checks). */
static bool check_previous_stage_files(const predict_args *a, const i3_predictor_info *info, const case_files *cases,
                                       int n_cases, char *err, size_t err_cap) {
    for (int i = 0; a->prev_stage_dir && i < n_cases; i++) {
        char path[PATH_MAX_LEN];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s%s", a->prev_stage_dir, cases[i].name, nifti_file_ending(info));
        if (stat(path, &sb) != 0) {
            snprintf(err, err_cap, "case %s: the previous stage's segmentation %s: %s", cases[i].name, path,
                     strerror(errno));
            return false;
        }
    }
    return true;
}

/* The paths of a case's outputs: labels and probabilities. */
static void output_paths(const predict_args *a, const i3_predictor_info *info, const char *case_name, char *labels,
                         char *probabilities, size_t cap) {
    snprintf(labels, cap, "%s/%s%s", a->out_dir, case_name, nifti_file_ending(info));
    snprintf(probabilities, cap, "%s/%s_probabilities%s", a->out_dir, case_name, nifti_file_ending(info));
}

/* nnUNetv2_predict's -num_parts / -part_id (every num_parts-th case from part_id, in name order) and
 * --continue_prediction (a case whose outputs all exist is skipped): keeps the cases to predict at the front
 * of the list, frees the others; returns how many are kept, *skipped how many had their outputs. */
static int select_cases(const predict_args *a, const i3_predictor_info *info, case_files *cases, int n_cases,
                        int *skipped) {
    int kept = 0;
    *skipped = 0;
    for (int i = 0; i < n_cases; i++) {
        bool keep = i % a->num_parts == a->part_id;
        if (keep && a->continue_prediction) {
            char labels[PATH_MAX_LEN * 2], probabilities[PATH_MAX_LEN * 2];
            output_paths(a, info, cases[i].name, labels, probabilities, sizeof labels);
            struct stat sb;
            const bool done = stat(labels, &sb) == 0 && (!a->save_probabilities || stat(probabilities, &sb) == 0);
            *skipped += done;
            keep = !done;
        }
        if (keep) {
            case_files c = cases[i];
            cases[i] = cases[kept];
            cases[kept++] = c;
        }
    }
    for (int i = kept; i < n_cases; i++) free_case(&cases[i]);
    return kept;
}

static int error(i3rt_context *ctx, const char *what) {
    fprintf(stderr, "\ni3rt predict: error: %s%s%s\n", what ? what : "", what ? ": " : "", i3rt_context_error(ctx));
    return EXIT_FAILURE;
}

/* Predicts one case and writes its outputs. */
static i3rt_status predict_one(i3rt_context *ctx, i3_predictor *pred, const predict_args *a,
                               const i3_postprocessing *pp, const case_files *c, progress_state *ps) {
    const i3_predictor_info *info = i3_predictor_get_info(pred);
    i3_volume vol;
    I3_TRY(i3_volume_read_channels(ctx, (const char *const *)c->files, c->n_files, &vol));
    const int64_t n = vol.d * vol.h * vol.w;
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    float *probs = a->save_probabilities ? malloc((size_t)(n * info->num_classes) * sizeof *probs) : NULL;
    i3rt_status st = labels && (probs || !a->save_probabilities)
                         ? I3RT_OK
                         : i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "case %s: no memory for the outputs", c->name);
    char path[PATH_MAX_LEN * 2], probs_path[PATH_MAX_LEN * 2];
    int32_t *previous = NULL;
    if (st == I3RT_OK && a->prev_stage_dir) {
        snprintf(path, sizeof path, "%s/%s%s", a->prev_stage_dir, c->name, nifti_file_ending(info));
        st = cli_read_labels(ctx, path, &vol, &previous);
    }
    i3_predict_options o;
    i3_predict_options_default(&o);
    o.use_mirroring = !a->disable_tta;
    o.step_size = a->step_size;
    o.accumulate = a->accumulate;
    o.progress = progress;
    o.progress_user = ps;
    o.previous_stage = previous;
    if (st == I3RT_OK) st = i3_predict_case(pred, &vol, &o, labels, probs);
    const int64_t shape[3] = {vol.d, vol.h, vol.w};
    if (st == I3RT_OK && pp) st = i3_postprocess(ctx, labels, shape, pp);
    free(previous);
    output_paths(a, info, c->name, path, probs_path, sizeof path);
    if (st == I3RT_OK) st = i3_volume_write_labels(ctx, path, &vol.geometry, labels);
    if (st == I3RT_OK && probs) st = i3_volume_write_f32(ctx, probs_path, &vol.geometry, info->num_classes, probs);
    free(labels);
    free(probs);
    i3_volume_free(&vol);
    return st;
}

int cli_predict(int argc, char **argv) {
    predict_args a;
    const int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    i3rt_context *ctx = cli_context_create("predict", a.threads, a.backend, a.precision);
    if (!ctx) return EXIT_FAILURE;
    i3_predictor *pred = NULL;
    if (i3_predictor_load(ctx, a.model_dir, a.folds, a.n_folds, &pred) != I3RT_OK) {
        const int r = error(ctx, a.model_dir);
        i3rt_context_free(ctx);
        return r;
    }
    const i3_predictor_info *info = i3_predictor_get_info(pred);
    char err[2 * PATH_MAX_LEN];
    int n_cases = 0;
    case_files *cases = collect_cases(a.input, info->channels, &n_cases, err, sizeof err);
    int result = EXIT_SUCCESS, skipped = 0;
    const int n_found = n_cases;
    if (cases) n_cases = select_cases(&a, info, cases, n_cases, &skipped); /* this part's, still to predict */
    i3_postprocessing *pp = a.postprocessing ? i3_malloc(ctx, sizeof *pp, "the postprocessing") : NULL;
    if (!cases) {
        fprintf(stderr, "i3rt predict: error: %s\n", err);
        result = EXIT_FAILURE;
    } else if (a.postprocessing && (!pp || i3_postprocessing_read(ctx, a.postprocessing, pp) != I3RT_OK)) {
        result = error(ctx, "--postprocessing");
    } else if (!check_previous_stage_files(&a, info, cases, n_cases, err, sizeof err)) {
        fprintf(stderr, "i3rt predict: error: %s\n", err);
        result = EXIT_FAILURE;
    } else if (mkdir(a.out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "i3rt predict: error: %s: %s\n", a.out_dir, strerror(errno));
        result = EXIT_FAILURE;
    }
    if (result == EXIT_SUCCESS && !a.quiet && !a.json && n_cases != n_found)
        fprintf(stderr, "i3rt predict: %d of %d case(s) (part %d of %d; %d skipped: their outputs exist)\n", n_cases,
                n_found, a.part_id, a.num_parts, skipped);
    if (result == EXIT_SUCCESS && !a.quiet && !a.json)
        fprintf(stderr, "i3rt predict: %d case(s), model %s (%s, %dD, %d fold(s), %d channel(s), %d classes), "
                "mirroring %s, step %.2f, %s accumulation, %d thread(s)\n", n_cases, a.model_dir,
                info->configuration, info->dims, info->n_folds, info->channels, info->num_classes,
                a.disable_tta || info->n_mirror_axes == 0 ? "off" : "on", a.step_size,
                a.accumulate == I3_ACCUMULATE_FP16 ? "fp16" : "fp32", a.threads);
    const double t_start = i3_now_seconds();
    for (int i = 0; i < n_cases && result == EXIT_SUCCESS; i++) {
        progress_state ps = {.args = &a, .case_name = cases[i].name, .case_index = i, .n_cases = n_cases,
                             .t0 = i3_now_seconds(), .tty = isatty(STDERR_FILENO)};
        if (predict_one(ctx, pred, &a, pp, &cases[i], &ps) != I3RT_OK) {
            char what[300];
            snprintf(what, sizeof what, "case %s", cases[i].name);
            result = error(ctx, what);
            break;
        }
        const double secs = i3_now_seconds() - ps.t0;
        if (a.json) {
            cJSON *event = json_event("case_done", cases[i].name, i, n_cases);
            cJSON_AddNumberToObject(event, "seconds", secs);
            print_json_event(event);
        } else if (!a.quiet) {
            fprintf(stderr, "%s%s: done in %.2f s\n", ps.tty ? "\r\033[K" : "", cases[i].name, secs);
        }
    }
    size_t device_peak = 0;
    i3rt_context_device_memory(ctx, NULL, &device_peak);
    if (result == EXIT_SUCCESS && a.json) {
        cJSON *event = json_event("done", NULL, n_cases - 1, n_cases);
        cJSON_AddNumberToObject(event, "seconds", i3_now_seconds() - t_start);
        cJSON_AddNumberToObject(event, "device_peak_bytes", (double)device_peak);
        print_json_event(event);
    } else if (result == EXIT_SUCCESS && !a.quiet) {
        fprintf(stderr, "i3rt predict: %d case(s) in %.2f s, written to %s", n_cases, i3_now_seconds() - t_start,
                a.out_dir);
        if (device_peak) fprintf(stderr, "; device memory peak %.1f MiB", device_peak / 1048576.0);
        fputc('\n', stderr);
    }
    if (cases) free_cases(cases, n_cases);
    free(pp);
    i3_predictor_free(pred);
    i3rt_context_free(ctx);
    return result;
}
