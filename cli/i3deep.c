/* `i3rt i3deep`: i3Deep's stages on NIfTI files (runtime/i3deep.h, docs/i3deep.md).
 *
 *   i3rt i3deep recommend IMAGE (-m MODELDIR [-f K...] | -p MEMBER...) -o OUTDIR [options]
 *       stages 1-2 and the export of stage 3: uncertainty of the members' mean probabilities, the
 *       recommended slices, previews and masks for the expert
 *   i3rt i3deep refine-input IMAGE CORRECTION... -o OUT --classes C [--unannotated V]
 *       stage 4's input: the image with the corrected slices as one more channel
 *   i3rt i3deep refine IMAGE CORRECTION... -r REFINE_MODELDIR -o OUT
 *       stage 4: the refinement nnU-Net on the image and the expert's corrected slices
 *   i3rt i3deep simulate IMAGE TRUTH (-m MODELDIR [-f K...] | -p MEMBER...) [-r REFINE_MODELDIR] -o OUTDIR
 *       stages 1-4 with a simulated expert (the ground-truth slices): Dice before and after refinement,
 *       annotation ratio, stage times, the expert's waiting time
 *   i3rt i3deep evaluate -m MODELDIR -r REFINE_MODELDIR (--cases LIST.tsv | IMAGE TRUTH...) -o OUTDIR
 *       simulate on every case, one markdown table
 * The ensemble members are the folds of an nnU-Net model folder (-m; each fold predicted alone by
 * predict.h) and/or MEMBER files, 4D NIfTIs (4th dimension = classes): probabilities (`i3rt predict -f K
 * --save-probabilities`) or, with --logits, logits. */
#include "i3deep.h" /* cli/i3deep.h */
#include "common.h" /* cli/common.h: cli_parse_device */
#include "../runtime/i3deep.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_MEMBERS 64
#define MAX_FILES 1024

static const char *HELP =
    "usage: i3rt i3deep recommend IMAGE (-m MODELDIR [-f K...] | -p MEMBER...) -o OUTDIR [options]\n"
    "       i3rt i3deep refine-input IMAGE CORRECTION [CORRECTION...] -o OUT --classes C [--unannotated V]\n"
    "       i3rt i3deep refine IMAGE CORRECTION [CORRECTION...] -r REFINE_MODELDIR -o OUT.nii.gz\n"
    "       i3rt i3deep simulate IMAGE TRUTH (-m MODELDIR [-f K...] | -p MEMBER...) [-r REFINE_MODELDIR]\n"
    "                            -o OUTDIR [--json] [options]\n"
    "       i3rt i3deep evaluate -m MODELDIR -r REFINE_MODELDIR (--cases LIST.tsv | IMAGE TRUTH [IMAGE TRUTH...])\n"
    "                            -o OUTDIR [--markdown FILE] [options]\n"
    "\n"
    "i3Deep (Gotkowski et al., MIDL 2022) on NIfTI files; docs/i3deep.md has the details.\n"
    "  recommend    uncertainty (normalized entropy of the members' mean probabilities), the slices to\n"
    "               correct over the axial, coronal and sagittal axes, and for each slice a preview PNG\n"
    "               (pre-segmentation overlaid) and its mask as PNG and NIfTI for the expert to correct;\n"
    "               also OUTDIR/NAME_uncertainty.nii.gz, NAME_presegmentation.nii.gz, NAME_slices.tsv\n"
    "  refine-input the refinement network's input: IMAGE's channels plus one channel holding the\n"
    "               corrected slices (class labels; --unannotated elsewhere), written to OUT (4D NIfTI).\n"
    "               Each CORRECTION is a label PNG or NIfTI named ..._<axial|coronal|sagittal>_<index>...\n"
    "  refine       the refinement nnU-Net of REFINE_MODELDIR on IMAGE and the CORRECTIONs (as for\n"
    "               refine-input); writes the refined segmentation to OUT, prints the stage times and the\n"
    "               expert's waiting time (corrections in -> refined segmentation out)\n"
    "  simulate     recommend, then a simulated expert corrects every recommended slice to TRUTH; with -r\n"
    "               the refinement nnU-Net (loaded before the corrections) refines. Prints Dice per class\n"
    "               before and after refinement, the annotation ratio, the stage times and the waiting\n"
    "               time; writes OUTDIR/NAME_segmentation.nii.gz (refined), NAME_corrections.nii.gz\n"
    "               (float32: the corrected class, -1 where not corrected), and without -r\n"
    "               NAME_refinement_input.nii.gz\n"
    "  evaluate     simulate on every case (LIST.tsv: NAME<TAB>IMAGE<TAB>TRUTH per line, paths relative to\n"
    "               the list's folder; or IMAGE TRUTH pairs, named after IMAGE) into OUTDIR; prints a\n"
    "               markdown table (per case and mean: Dice per class of the pre-segmentation and the\n"
    "               refinement, annotation ratio, slices, waiting time), also written to FILE, and\n"
    "               OUTDIR/evaluation.tsv (tools/i3deep_baselines.py adds baselines from it)\n"
    "\n"
    "Ensemble members: every fold of MODELDIR (an nnU-Net model folder of i3rt weight files, as for\n"
    "i3rt predict), each predicted alone (with its test-time mirroring unless --disable-tta), and/or each\n"
    "MEMBER file, a 4D NIfTI on IMAGE's grid whose 4th dimension is the classes: probabilities\n"
    "(i3rt predict -f K --save-probabilities) or logits with --logits.\n"
    "\n"
    "options:\n"
    "  -m MODELDIR          an nnU-Net model folder: its folds are ensemble members\n"
    "  -f K [K...]          only these folds of MODELDIR (default: all)\n"
    "  -r REFINE_MODELDIR   the refinement nnU-Net (channels: IMAGE's + corrected slices; every fold)\n"
    "  --disable-tta        no test-time mirroring inside each fold's prediction (members and refinement)\n"
    "  -p, --member FILE    an ensemble member file (repeat)\n"
    "  --logits             the members are logits (softmax taken per member)\n"
    "  -o OUTDIR | OUT      where to write (a directory is created if missing)\n"
    "  --name NAME          file name prefix (default: IMAGE's name without .nii/.nii.gz)\n"
    "  --cases LIST.tsv     evaluate: the cases\n"
    "  --markdown FILE      evaluate: also write the table to FILE\n"
    "  --json               simulate: the summary as JSON on stdout\n"
    "  --min-dist F         suppression window, fraction of the axis length (default 0.0234)\n"
    "  --min-uncert F       minimum slice uncertainty relative to its axis's largest (default 0.1)\n"
    "  --max-slices N       most slices over all axes (default 12)\n"
    "  --classes C          number of classes (refine-input; the others take it from the models/members)\n"
    "  --unannotated V      refine-input, simulate without -r: value of the voxels no correction covers\n"
    "                       (default 0, the paper's and the refinement model's)\n"
    "  --threads N          CPU threads (default 1)\n"
    "  --device D           backend: cpu (default), cuda or emulated (the CUDA kernels on the CPU)\n"
    "  --precision P        convolutions in f32 (default), or on tensor cores in tf32, f16 or bf16 (cuda,\n"
    "                       emulated); f16 is what nnUNetPredictor runs on a GPU (autocast)\n"
    "  -h, --help           this help\n"
    "Progress goes to stderr, results to stdout. Outputs appear atomically (temporary name + rename).\n";

typedef struct {
    const char *command, *image, *truth, *out, *name, *model, *refine_model, *cases, *markdown;
    int folds[I3_MAX_FOLDS], n_folds, disable_tta, json;
    const char *members[MAX_MEMBERS];
    int n_members;
    const char *files[MAX_FILES]; /* positional: IMAGE, then CORRECTIONs or TRUTH or evaluate's pairs */
    int n_files;
    int logits, classes, threads;
    i3rt_backend_kind backend;
    int precision; /* an i3rt_precision, -1 if not given */
    float unannotated;
    i3_slice_select_params select;
} args;

static int usage(const char *fmt, const char *arg) { return cli_usage("i3deep", HELP, fmt, arg); }

static int is(const char *command, const char *name) { return strcmp(command, name) == 0; }

/* What each command needs once the options are read; -1 when the arguments are fine, else the exit status. */
static int check(args *a) {
    const char *c = a->command;
    const int members = a->n_members > 0 || a->model;
    if (!a->out) return usage("-o is needed%s", "");
    if (a->refine_model && !(is(c, "refine") || is(c, "simulate") || is(c, "evaluate")))
        return usage("-r is for refine, simulate and evaluate, not %s", c);
    if (a->cases && !is(c, "evaluate")) return usage("--cases is for evaluate, not %s", c);
    if (a->markdown && !is(c, "evaluate")) return usage("--markdown is for evaluate, not %s", c);
    if (a->json && !is(c, "simulate")) return usage("--json is for simulate, not %s", c);
    if (a->n_folds && !a->model) return usage("-f needs -m MODELDIR%s", "");
    if (is(c, "refine-input") || is(c, "refine")) {
        if (a->n_files < 2) return usage("%s needs IMAGE and at least one CORRECTION", c);
        if (members) return usage("%s takes no ensemble members (-m, -p)", c);
        if (is(c, "refine-input") && !a->classes) return usage("refine-input needs --classes C%s", "");
        if (is(c, "refine") && !a->refine_model) return usage("refine needs -r REFINE_MODELDIR%s", "");
        if (is(c, "refine") && a->classes) return usage("refine takes the classes from the model, not --classes%s", "");
    } else if (is(c, "evaluate")) {
        if (!a->model || !a->refine_model) return usage("evaluate needs -m MODELDIR and -r REFINE_MODELDIR%s", "");
        if (a->n_members) return usage("evaluate takes members from -m only (a -p file belongs to one image)%s", "");
        if (a->cases ? a->n_files != 0 : a->n_files == 0 || a->n_files % 2)
            return usage("evaluate needs --cases LIST.tsv or IMAGE TRUTH pairs (not both)%s", "");
        if (a->name) return usage("evaluate names the cases itself (no --name)%s", "");
    } else {
        if (a->n_files != 1 + is(c, "simulate"))
            return usage(is(c, "simulate") ? "simulate needs IMAGE and TRUTH%s" : "recommend needs one IMAGE%s", "");
        if (!members) return usage("ensemble members are needed (-m MODELDIR or -p FILE)%s", "");
    }
    if (a->n_files) a->image = a->files[0];
    if (is(c, "simulate")) a->truth = a->files[1];
    return -1;
}

/* Returns -1 when the arguments are fine, else the exit status. */
static int parse(int argc, char **argv, args *a) {
    *a = (args){.threads = 1, .precision = -1, .select = I3_SLICE_SELECT_DEFAULTS};
    static const char *const commands[] = {"recommend", "refine-input", "refine", "simulate", "evaluate"};
    const int start = cli_command("i3deep", HELP, argc, argv, commands, 5);
    if (start >= 0) return start;
    a->command = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (is(o, "-h") || is(o, "--help")) {
            fputs(HELP, stdout);
            return 0;
        } else if (is(o, "--logits") || is(o, "--disable-tta") || is(o, "--json")) {
            *(o[2] == 'l' ? &a->logits : o[2] == 'd' ? &a->disable_tta : &a->json) = 1;
        } else if (is(o, "-f")) {
            while (i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9') {
                if (a->n_folds == I3_MAX_FOLDS || !cli_parse_number(argv[i + 1], 0, 999, &x) || x != floor(x))
                    return usage("-f needs fold numbers (at most 16), got '%s'", argv[i + 1]);
                a->folds[a->n_folds++] = (int)x;
                i++;
            }
            if (a->n_folds == 0) return usage("-f needs at least one fold number%s", "");
        } else if (is(o, "-p") || is(o, "--member")) {
            if (!v) return usage("%s needs a file", o);
            if (a->n_members == MAX_MEMBERS) return usage("more than 64 members%s", "");
            a->members[a->n_members++] = argv[++i];
        } else if (is(o, "-m") || is(o, "-r") || is(o, "-o") || is(o, "--name") || is(o, "--cases") ||
                   is(o, "--markdown")) {
            if (!v || (v[0] == '-' && v[1])) return usage("%s needs a value", o);
            *(is(o, "-m") ? &a->model : is(o, "-r") ? &a->refine_model : is(o, "-o") ? &a->out
              : is(o, "--name") ? &a->name : is(o, "--cases") ? &a->cases : &a->markdown) = argv[++i];
        } else if (is(o, "--min-dist") || is(o, "--min-uncert")) {
            if (!cli_parse_number(v, 0.0, 1.0, &x)) return usage("%s needs a number in [0, 1]", o);
            *(o[6] == 'd' ? &a->select.min_dist : &a->select.min_uncert) = x;
            i++;
        } else if (is(o, "--max-slices") || is(o, "--classes") || is(o, "--threads")) {
            if (!cli_parse_number(v, 1, 32767, &x) || x != floor(x)) return usage("%s needs a whole number >= 1", o);
            *(o[2] == 'm' ? &a->select.max_slices : o[2] == 'c' ? &a->classes : &a->threads) = (int)x;
            i++;
        } else if (is(o, "--device")) {
            if (!cli_parse_device(v, &a->backend))
                return usage("--device needs cpu, cuda or emulated, got '%s'", v ? v : "");
            i++;
        } else if (is(o, "--precision")) {
            if (!cli_parse_precision(v, &a->precision))
                return usage("--precision needs f32, tf32, f16 or bf16, got '%s'", v ? v : "");
            i++;
        } else if (is(o, "--unannotated")) {
            if (!cli_parse_number(v, -1e6, 1e6, &x)) return usage("%s needs a number", o);
            a->unannotated = (float)x;
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

static void progress(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "i3deep: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static i3_predict_options predict_options(const args *a) {
    i3_predict_options o;
    i3_predict_options_default(&o);
    o.use_mirroring = !a->disable_tta;
    return o;
}

/* The number of classes of a model folder's first (requested) fold. */
static i3rt_status model_classes(i3_ctx *ctx, const char *model, const int *folds, int n_folds, int *classes) {
    i3_predictor *p;
    I3_TRY(i3_predictor_load(ctx, model, folds, n_folds ? 1 : 0, &p));
    *classes = i3_predictor_get_info(p)->num_classes;
    i3_predictor_free(p);
    return I3RT_OK;
}

/* Opens the case and loads the refinement model into it, if any (first, so that a bad one fails before
 * the members' long prediction). */
static i3rt_status open_case(i3_ctx *ctx, const args *a, const i3_volume *image, int classes, i3_case **out) {
    I3_TRY(i3_case_open(ctx, image, classes, out));
    const i3rt_status st = a->refine_model ? i3_case_load_refinement_model(*out, a->refine_model, NULL, 0) : I3RT_OK;
    if (st != I3RT_OK) {
        i3_case_free(*out);
        *out = NULL;
    }
    return st;
}

/* Opens the case (classes from the model, else from the first member file) and folds every member in. */
static i3rt_status open_with_members(i3_ctx *ctx, const args *a, const i3_volume *image, i3_case **out) {
    *out = NULL;
    i3rt_status st = I3RT_OK;
    int classes = 0;
    if (a->model) I3_TRY(model_classes(ctx, a->model, a->folds, a->n_folds, &classes));
    for (int m = 0; m < a->n_members && st == I3RT_OK; m++) {
        i3_volume v;
        st = i3_volume_read(ctx, a->members[m], &v);
        if (st != I3RT_OK) break;
        st = i3_volume_geometry_check(ctx, &image->geometry, a->image, &v.geometry, a->members[m]);
        if (st == I3RT_OK && !*out) st = open_case(ctx, a, image, classes ? classes : (int)v.channels, out);
        if (st == I3RT_OK && v.channels != i3_case_num_classes(*out))
            st = i3_fail(ctx, I3RT_ERR_SHAPE, "%s: %lld class channels, %s has %d", a->members[m], (long long)v.channels,
                         a->model ? a->model : "the first member", i3_case_num_classes(*out));
        if (st == I3RT_OK) st = a->logits ? i3_case_add_logits(*out, v.data) : i3_case_add_probabilities(*out, v.data);
        i3_volume_free(&v);
    }
    if (st == I3RT_OK && a->model) {
        if (!*out) st = open_case(ctx, a, image, classes, out);
        const i3_predict_options o = predict_options(a);
        if (st == I3RT_OK) progress("stage 1: pre-segmentation by the folds of %s", a->model);
        if (st == I3RT_OK) st = i3_case_add_model_members(*out, a->model, a->folds, a->n_folds, &o);
    }
    if (st != I3RT_OK) {
        i3_case_free(*out);
        *out = NULL;
    }
    return st;
}

static i3rt_status write_presegmentation(i3_ctx *ctx, i3_case *c, const char *dir, const char *name) {
    char path[CLI_PATH_LEN];
    snprintf(path, sizeof path, "%s/%s_uncertainty.nii.gz", dir, name);
    I3_TRY(i3_volume_write_f32(ctx, path, &i3_case_image(c)->geometry, 1, i3_case_entropy(c)));
    snprintf(path, sizeof path, "%s/%s_presegmentation.nii.gz", dir, name);
    return i3_case_save_segmentation(c, path, 0);
}

/* Stages 1-3 up to the export; the chosen slices are listed on `report`. */
static i3rt_status recommend(i3_ctx *ctx, const args *a, const i3_volume *image, const char *name, FILE *report,
                             i3_case **out) {
    i3_case *c;
    I3_TRY(open_with_members(ctx, a, image, &c));
    progress("uncertainty, slice recommendation, export (stages 1-3)");
    i3rt_status st = i3_case_compute_uncertainty(c);
    if (st == I3RT_OK) st = i3_case_recommend(c, &a->select);
    if (st == I3RT_OK) st = i3_case_export(c, a->out, name);
    if (st == I3RT_OK) st = write_presegmentation(ctx, c, a->out, name);
    if (st != I3RT_OK) {
        i3_case_free(c);
        return st;
    }
    int n;
    const i3_slice *s = i3_case_slices(c, &n);
    fprintf(report, "%d members, %d classes: %d slices recommended (min-dist %g, min-uncert %g, max-slices %d)\n",
            i3_case_members(c), i3_case_num_classes(c), n, a->select.min_dist, a->select.min_uncert,
            a->select.max_slices);
    for (int i = 0; i < n; i++)
        fprintf(report, "  %2d  %-8s %4lld  uncertainty %10.3f  (%.2f of its axis's largest)\n", i + 1,
                i3_axis_name(s[i].axis), (long long)s[i].index, s[i].sum, s[i].relative);
    fprintf(report, "previews and masks: %s/%s_<axis>_<index>_{preview.png,mask.png,mask.nii.gz}\n", a->out, name);
    *out = c;
    return I3RT_OK;
}

/* Stage times; with the expert's waiting time when it is a number (something was refined). */
static void print_times(FILE *f, const double seconds[I3_STAGE_COUNT], double waiting) {
    fprintf(f, "stage times:");
    for (int k = 0; k < I3_STAGE_COUNT; k++)
        fprintf(f, " %s %.3f s%s", i3_stage_name(k), seconds[k], k + 1 < I3_STAGE_COUNT ? "," : "\n");
    if (!isnan(waiting)) fprintf(f, "expert's waiting time: %.3f s (corrections in -> refined segmentation out)\n", waiting);
}

static void print_refine_parts(FILE *f, i3_predict_times t) {
    fprintf(f, "refine: preprocessing %.3f s, network %.3f s, export %.3f s\n", t.preprocess, t.network, t.export_);
}

static void print_case_times(FILE *f, const i3_case *c, int refined) {
    double seconds[I3_STAGE_COUNT];
    for (int k = 0; k < I3_STAGE_COUNT; k++) seconds[k] = i3_case_stage_seconds(c, k);
    print_times(f, seconds, refined ? i3_case_waiting_seconds(c) : NAN);
    if (refined) print_refine_parts(f, i3_case_refine_times(c));
}

static i3rt_status write_refinement_input(i3_ctx *ctx, i3_case *c, const char *path, float unannotated) {
    float *x;
    I3_TRY(i3_case_refinement_input(c, unannotated, &x));
    const i3_volume *image = i3_case_image(c);
    i3rt_status st = i3_volume_write_f32(ctx, path, &image->geometry, image->channels + 1, x);
    free(x);
    if (st == I3RT_OK) printf("refinement input (%lld image channel%s + corrected slices): %s\n",
                              (long long)image->channels, image->channels == 1 ? "" : "s", path);
    return st;
}

/* The corrected slices as one volume, float32: the class where corrected, -1 elsewhere (the encoding the
 * baselines read, tools/i3deep_baselines.py). */
static i3rt_status write_corrections(i3_ctx *ctx, i3_case *c, const char *path) {
    const i3_volume *image = i3_case_image(c);
    const int64_t n = image->d * image->h * image->w;
    const int32_t *corrections = i3_case_corrections(c);
    float *x = i3_malloc(ctx, (size_t)n * sizeof *x, path);
    if (!x) return I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n; i++) x[i] = (float)corrections[i];
    const i3rt_status st = i3_volume_write_f32(ctx, path, &image->geometry, 1, x);
    free(x);
    return st;
}

/* ---- one simulated case ----------------------------------------------------------------------------- */

/* What simulate reports for one case (evaluate collects one per case). */
typedef struct {
    char name[256];
    int classes, slices, refined;
    double *dice;                   /* [2 * classes]: pre-segmentation, then refined (NaN: class in neither) */
    double mean[2];                 /* mean foreground Dice (classes 1 .. C-1 present), before and after */
    double ratio, waiting, seconds[I3_STAGE_COUNT];
    i3_predict_times refine_parts;
} summary;

/* Mean over the foreground classes that are in the truth or the segmentation; NaN if none. */
static double mean_foreground(const double *dice, int classes) {
    double sum = 0;
    int n = 0;
    for (int k = 1; k < classes; k++)
        if (!isnan(dice[k])) sum += dice[k], n++;
    return n ? sum / n : NAN;
}

static void print_dice(FILE *f, const char *what, const double *dice, int classes) {
    fprintf(f, "Dice %-18s", what);
    for (int k = 1; k < classes; k++) fprintf(f, isnan(dice[k]) ? "  class %d -" : "  class %d %.4f", k, dice[k]);
    fprintf(f, isnan(mean_foreground(dice, classes)) ? "  mean -\n" : "  mean %.4f\n", mean_foreground(dice, classes));
}

static void print_summary(FILE *f, const summary *s) {
    print_dice(f, "pre-segmentation:", s->dice, s->classes);
    if (s->refined) print_dice(f, "refined:", s->dice + s->classes, s->classes);
    fprintf(f, "annotation ratio: %.4f (%d slices / axial ground-truth foreground slices)\n", s->ratio, s->slices);
}

/* A number, or null for NaN (a Dice with the class in neither volume; no refinement). */
static cJSON *json_number(double v) { return isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v); }

static cJSON *json_dice(const double *dice, int classes) {
    cJSON *list = cJSON_CreateArray();
    for (int k = 0; k < classes; k++) cJSON_AddItemToArray(list, json_number(dice[k]));
    return list;
}

/* Returns 0 if cJSON ran out of memory. */
static int print_json(FILE *f, const summary *s, const char *out_dir) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "case", s->name);
    cJSON_AddStringToObject(root, "output_dir", out_dir);
    cJSON_AddNumberToObject(root, "classes", s->classes);
    cJSON_AddNumberToObject(root, "slices", s->slices);
    cJSON_AddItemToObject(root, "dice_presegmentation", json_dice(s->dice, s->classes));
    if (s->refined) cJSON_AddItemToObject(root, "dice_refined", json_dice(s->dice + s->classes, s->classes));
    cJSON_AddItemToObject(root, "mean_foreground_dice_presegmentation", json_number(s->mean[0]));
    if (s->refined) {
        cJSON_AddItemToObject(root, "mean_foreground_dice_refined", json_number(s->mean[1]));
        cJSON_AddNumberToObject(root, "waiting_seconds", s->waiting);
    }
    cJSON_AddNumberToObject(root, "annotation_ratio", s->ratio);
    cJSON *stages = cJSON_AddObjectToObject(root, "stage_seconds");
    for (int k = 0; k < I3_STAGE_COUNT; k++) cJSON_AddNumberToObject(stages, i3_stage_name(k), s->seconds[k]);
    if (s->refined) {
        cJSON *parts = cJSON_AddObjectToObject(root, "refine_seconds");
        cJSON_AddNumberToObject(parts, "preprocessing", s->refine_parts.preprocess);
        cJSON_AddNumberToObject(parts, "network", s->refine_parts.network);
        cJSON_AddNumberToObject(parts, "export", s->refine_parts.export_);
    }
    char *text = cJSON_Print(root);
    const int printed = text != NULL;
    if (printed) fprintf(f, "%s\n", text);
    cJSON_free(text);
    cJSON_Delete(root);
    return printed;
}

/* Stages 1-4 with the ground-truth slices as the expert's corrections. Writes into a->out: the export,
 * NAME_presegmentation, NAME_uncertainty, NAME_corrections and either NAME_segmentation (refined, with
 * -r) or NAME_refinement_input. Fills *s (s->dice malloc'ed). */
static i3rt_status simulate_case(i3_ctx *ctx, const args *a, const char *image_path, const char *truth_path,
                                 const char *name, FILE *report, summary *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    i3_volume image;
    I3_TRY(i3_volume_read(ctx, image_path, &image));
    int32_t *truth = NULL;
    i3_case *c = NULL;
    args with_image = *a;
    with_image.image = image_path;
    i3rt_status st = cli_read_labels(ctx, truth_path, &image, &truth);
    if (st == I3RT_OK) st = recommend(ctx, &with_image, &image, name, report, &c);
    if (st == I3RT_OK) {
        progress("stage 3: the simulated expert corrects the recommended slices to %s", truth_path);
        st = i3_case_simulate_expert(c, truth, truth_path);
    }
    char path[CLI_PATH_LEN];
    snprintf(path, sizeof path, "%s/%s_corrections.nii.gz", a->out, name);
    if (st == I3RT_OK) st = write_corrections(ctx, c, path);
    if (st == I3RT_OK && a->refine_model) {
        progress("stage 4: refinement by %s", a->refine_model);
        const i3_predict_options o = predict_options(a);
        st = i3_case_refine(c, &o);
        snprintf(path, sizeof path, "%s/%s_segmentation.nii.gz", a->out, name);
        if (st == I3RT_OK) st = i3_case_save_segmentation(c, path, 1);
    } else if (st == I3RT_OK) {
        snprintf(path, sizeof path, "%s/%s_refinement_input.nii.gz", a->out, name);
        st = write_refinement_input(ctx, c, path, a->unannotated);
    }
    if (st == I3RT_OK) {
        s->classes = i3_case_num_classes(c);
        s->refined = a->refine_model != NULL;
        s->dice = i3_malloc(ctx, 2 * (size_t)s->classes * sizeof *s->dice, "Dice");
        if (!s->dice) st = I3RT_ERR_OUT_OF_MEMORY;
    }
    if (st == I3RT_OK) {
        const int64_t voxels = image.d * image.h * image.w;
        i3_dice_per_class(i3_case_presegmentation(c), truth, voxels, s->classes, s->dice);
        for (int k = 0; k < s->classes; k++) s->dice[s->classes + k] = NAN;
        if (s->refined) i3_dice_per_class(i3_case_refined(c), truth, voxels, s->classes, s->dice + s->classes);
        s->mean[0] = mean_foreground(s->dice, s->classes);
        s->mean[1] = mean_foreground(s->dice + s->classes, s->classes);
        i3_case_slices(c, &s->slices);
        s->ratio = i3_annotation_ratio(s->slices, truth, image.d, image.h, image.w);
        s->waiting = s->refined ? i3_case_waiting_seconds(c) : NAN;
        for (int k = 0; k < I3_STAGE_COUNT; k++) s->seconds[k] = i3_case_stage_seconds(c, k);
        s->refine_parts = i3_case_refine_times(c);
        if (s->refined) fprintf(report, "refined segmentation: %s\n", path);
    }
    i3_case_free(c);
    free(truth);
    i3_volume_free(&image);
    return st;
}

static i3rt_status simulate(i3_ctx *ctx, const args *a, const char *name) {
    summary s;
    FILE *report = a->json ? stderr : stdout;
    i3rt_status st = simulate_case(ctx, a, a->image, a->truth, name, report, &s);
    if (st == I3RT_OK && a->json) {
        if (!print_json(stdout, &s, a->out))
            st = i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "simulate: out of memory writing the JSON summary");
    } else if (st == I3RT_OK) {
        print_summary(stdout, &s);
        print_times(stdout, s.seconds, s.waiting);
        if (s.refined) print_refine_parts(stdout, s.refine_parts);
    }
    free(s.dice);
    return st;
}

/* ---- refine-input and refine: corrections from files ------------------------------------------------ */

static i3rt_status submit_corrections(i3_case *c, const args *a) {
    for (int i = 1; i < a->n_files; i++) I3_TRY(i3_case_submit_named_file(c, a->files[i]));
    return I3RT_OK;
}

static i3rt_status refine_input(i3_ctx *ctx, const args *a, const i3_volume *image) {
    i3_case *c;
    I3_TRY(i3_case_open(ctx, image, a->classes, &c));
    i3rt_status st = submit_corrections(c, a);
    if (st == I3RT_OK) st = write_refinement_input(ctx, c, a->out, a->unannotated);
    if (st == I3RT_OK) print_case_times(stdout, c, 0);
    i3_case_free(c);
    return st;
}

static i3rt_status refine(i3_ctx *ctx, const args *a, const i3_volume *image) {
    int classes;
    I3_TRY(model_classes(ctx, a->refine_model, NULL, 0, &classes));
    i3_case *c;
    I3_TRY(i3_case_open(ctx, image, classes, &c));
    const i3_predict_options o = predict_options(a);
    i3rt_status st = i3_case_load_refinement_model(c, a->refine_model, NULL, 0);
    if (st == I3RT_OK) st = submit_corrections(c, a);
    if (st == I3RT_OK) {
        progress("stage 4: refinement by %s", a->refine_model);
        st = i3_case_refine(c, &o);
    }
    if (st == I3RT_OK) st = i3_case_save_segmentation(c, a->out, 1);
    if (st == I3RT_OK) {
        int n;
        i3_case_corrected_slices(c, &n);
        printf("refined segmentation (%d corrected slice%s, %d classes): %s\n", n, n == 1 ? "" : "s", classes, a->out);
        print_case_times(stdout, c, 1);
    }
    i3_case_free(c);
    return st;
}

/* ---- evaluate --------------------------------------------------------------------------------------- */

static i3rt_status cases_from_args(i3_ctx *ctx, const args *a, cli_case **out, int *n_out) {
    if (a->cases) return cli_read_case_list(ctx, a->cases, out, n_out);
    const int n = a->n_files / 2;
    cli_case *cases = calloc((size_t)n, sizeof *cases);
    if (!cases) return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "evaluate: out of memory");
    for (int i = 0; i < n; i++) {
        cli_base_name(a->files[2 * i], cases[i].name, sizeof cases[i].name);
        snprintf(cases[i].image, CLI_PATH_LEN, "%s", a->files[2 * i]);
        snprintf(cases[i].truth, CLI_PATH_LEN, "%s", a->files[2 * i + 1]);
    }
    *out = cases;
    *n_out = n;
    return I3RT_OK;
}

/* One table row of a case and method (0 pre-segmentation, 1 refinement): Dice of each foreground class,
 * their mean, annotation ratio, slices, waiting time (refinement only). cols = classes + 3. */
static void case_row(const summary *s, int method, double *row) {
    for (int k = 1; k < s->classes; k++) row[k - 1] = s->dice[method * s->classes + k];
    row[s->classes - 1] = s->mean[method];
    row[s->classes] = s->ratio;
    row[s->classes + 1] = s->slices;
    row[s->classes + 2] = method ? s->waiting : NAN;
}

static void print_row(FILE *f, const char *name, const char *method, const double *row, int cols) {
    fprintf(f, "| %s | %s |", name, method);
    for (int j = 0; j < cols; j++) {
        if (isnan(row[j])) fputs(" - |", f);
        else fprintf(f, j == cols - 1 ? " %.3f |" : j == cols - 2 ? " %.4g |" : " %.4f |", row[j]);
    }
    fputc('\n', f);
}

static const char *const METHODS[2] = {"pre-segmentation", "i3Deep refinement"};

/* The markdown table: every case and the mean over the cases (NaN Dice skipped) for each method. */
static void write_table(FILE *f, const summary *s, int n, double *rows) {
    const int classes = s[0].classes, cols = classes + 3;
    fputs("| case | method |", f);
    for (int k = 1; k < classes; k++) fprintf(f, " Dice %d |", k);
    fputs(" mean Dice | annotation ratio | slices | waiting (s) |\n|---|---|", f);
    for (int j = 0; j < cols; j++) fputs("---|", f);
    fputc('\n', f);
    for (int m = 0; m < 2; m++) {
        for (int i = 0; i < n; i++) {
            case_row(&s[i], m, rows + (size_t)i * cols);
            print_row(f, s[i].name, METHODS[m], rows + (size_t)i * cols, cols);
        }
        double *mean = rows + (size_t)n * cols;
        for (int j = 0; j < cols; j++) {
            double sum = 0;
            int count = 0;
            for (int i = 0; i < n; i++)
                if (!isnan(rows[(size_t)i * cols + j])) sum += rows[(size_t)i * cols + j], count++;
            mean[j] = count ? sum / count : NAN;
        }
        print_row(f, "**mean**", METHODS[m], mean, cols);
    }
}

/* OUTDIR/evaluation.tsv, for tools/i3deep_baselines.py: per case and method the numbers of the table and
 * the case's files (image, truth, corrections, segmentation of the method). */
static void write_tsv(FILE *f, const summary *s, const cli_case *cases, int n, const char *dir, double *rows) {
    const int classes = s[0].classes, cols = classes + 3;
    fputs("case\tmethod", f);
    for (int k = 1; k < classes; k++) fprintf(f, "\tdice_%d", k);
    fputs("\tmean_dice\tannotation_ratio\tslices\twaiting_seconds\timage\ttruth\tcorrections\tsegmentation\n", f);
    for (int i = 0; i < n; i++)
        for (int m = 0; m < 2; m++) {
            case_row(&s[i], m, rows);
            fprintf(f, "%s\t%s", s[i].name, m ? "refinement" : "presegmentation");
            for (int j = 0; j < cols; j++) fprintf(f, isnan(rows[j]) ? "\tnan" : "\t%.6g", rows[j]);
            fprintf(f, "\t%s\t%s\t%s/%s_corrections.nii.gz\t%s/%s_%s.nii.gz\n", cases[i].image, cases[i].truth, dir,
                    s[i].name, dir, s[i].name, m ? "segmentation" : "presegmentation");
        }
}

/* Writes a text file through a temporary name and a rename, so that it appears whole or not at all. */
static i3rt_status write_text(i3_ctx *ctx, const char *path, const summary *s, const cli_case *cases, int n,
                              const char *dir, double *rows) {
    char tmp[CLI_PATH_LEN + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot write", tmp);
    if (cases) write_tsv(f, s, cases, n, dir, rows);
    else write_table(f, s, n, rows);
    const int bad = ferror(f) | (fclose(f) != 0);
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot write", path);
    }
    return I3RT_OK;
}

static i3rt_status evaluate(i3_ctx *ctx, const args *a) {
    cli_case *cases;
    int n;
    I3_TRY(cases_from_args(ctx, a, &cases, &n));
    summary *s = calloc((size_t)n, sizeof *s);
    i3rt_status st = s ? I3RT_OK : i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "evaluate: out of memory");
    for (int i = 0; i < n && st == I3RT_OK; i++) {
        progress("case %d of %d: %s (%s, %s)", i + 1, n, cases[i].name, cases[i].image, cases[i].truth);
        st = simulate_case(ctx, a, cases[i].image, cases[i].truth, cases[i].name, stderr, &s[i]);
        if (st == I3RT_OK && s[i].classes != s[0].classes)
            st = i3_fail(ctx, I3RT_ERR_SHAPE, "%s: %d classes, %s has %d", cases[i].name, s[i].classes, s[0].name,
                         s[0].classes);
        if (st == I3RT_OK)
            progress("%s: mean Dice %.4f -> %.4f, %d slices, annotation ratio %.4f, waiting %.3f s", cases[i].name,
                     s[i].mean[0], s[i].mean[1], s[i].slices, s[i].ratio, s[i].waiting);
    }
    double *rows = st == I3RT_OK ? malloc((size_t)(n + 1) * (size_t)(s[0].classes + 3) * sizeof *rows) : NULL;
    if (st == I3RT_OK && !rows) st = i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "evaluate: out of memory");
    char path[CLI_PATH_LEN];
    snprintf(path, sizeof path, "%s/evaluation.tsv", a->out);
    if (st == I3RT_OK) st = write_text(ctx, path, s, cases, n, a->out, rows);
    if (st == I3RT_OK && a->markdown) st = write_text(ctx, a->markdown, s, NULL, n, NULL, rows);
    if (st == I3RT_OK) {
        write_table(stdout, s, n, rows);
        printf("\nDice k: class k of the models' dataset.json; mean Dice: over the foreground classes; annotation "
               "ratio: slices / axial ground-truth foreground slices; waiting: corrections in -> refined "
               "segmentation out.\nper case: %s/evaluation.tsv%s%s\n", a->out, a->markdown ? "; table: " : "",
               a->markdown ? a->markdown : "");
    }
    for (int i = 0; s && i < n; i++) free(s[i].dice);
    free(s);
    free(rows);
    free(cases);
    return st;
}

/* ---- main ------------------------------------------------------------------------------------------- */

int cli_i3deep(int argc, char **argv) {
    args a;
    const int parsed = parse(argc, argv, &a);
    if (parsed >= 0) return parsed;
    const char *cmd = a.command;
    const int to_file = is(cmd, "refine-input") || is(cmd, "refine");
    i3rt_context *ctx = cli_context_create("i3deep", a.threads, a.backend, a.precision);
    if (!ctx) return 1;
    if (!to_file && !cli_make_dir("i3deep", a.out)) {
        i3rt_context_free(ctx);
        return 1;
    }
    char name[256];
    if (a.name) snprintf(name, sizeof name, "%s", a.name);
    else if (a.image) cli_base_name(a.image, name, sizeof name);
    i3rt_status st;
    if (is(cmd, "evaluate")) {
        st = evaluate(ctx, &a);
    } else if (is(cmd, "simulate")) {
        st = simulate(ctx, &a, name);
    } else {
        i3_volume image;
        st = i3_volume_read(ctx, a.image, &image);
        i3_case *c = NULL;
        if (st == I3RT_OK)
            st = is(cmd, "refine-input") ? refine_input(ctx, &a, &image)
                 : is(cmd, "refine")     ? refine(ctx, &a, &image)
                                         : recommend(ctx, &a, &image, name, stdout, &c);
        if (c) print_case_times(stdout, c, 0);
        i3_case_free(c);
        i3_volume_free(&image);
    }
    if (st != I3RT_OK) fprintf(stderr, "i3rt i3deep: %s\n", i3rt_context_error(ctx));
    i3rt_context_free(ctx);
    return st == I3RT_OK ? 0 : 1;
}
