/* `i3rt ensemble`: nnUNetv2_ensemble on the probabilities `i3rt predict --save-probabilities` wrote.
 *
 *   i3rt ensemble -i DIR DIR [DIR ...] -o OUTDIR [-m MODELDIR] [--postprocessing FILE] [--quiet]
 *
 * For every CASE_probabilities.nii.gz (or .nii: models whose dataset.json says file_ending .nii) of the first
 * folder (each folder must hold it, on one grid with the same classes): the probabilities averaged as nnunetv2's
 * average_probabilities does (float32 sums in folder order, divided by their count), then the segmentation
 * (argmax, or with -m a region-based model's regions_class_order), optionally nnU-Net's postprocessing, written to
 * OUTDIR/CASE.nii.gz (.nii for .nii probabilities) with the probabilities' geometry (temporary name + rename). -m names a model folder of the ensemble for its labels
 * (nnU-Net takes dataset.json from the first folder; i3rt's prediction folders hold none); without it the
 * probabilities are softmax classes. This is how nnU-Net's recommended inference runs when
 * nnUNetv2_find_best_configuration picks an ensemble of two configurations. */
#include "ensemble.h"           /* cli/ensemble.h: cli_ensemble */
#include "common.h"
#include "../runtime/predict.h" /* i3_predictor_read_info, i3_segmentation_from_probabilities (the names clash) */
#include "postprocess.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_INPUTS 32
#define SUFFIX "_probabilities" /* then the file ending, .nii.gz or .nii */

static const char *HELP =
    "usage: i3rt ensemble -i DIR DIR [DIR ...] -o OUTDIR [options]\n"
    "\n"
    "nnUNetv2_ensemble on the CASE_probabilities.nii.gz (or .nii) that `i3rt predict --save-probabilities` wrote\n"
    "into each DIR: probabilities averaged, argmax (or the regions of a region-based model), OUTDIR/CASE.nii.gz\n"
    "(.nii from .nii).\n"
    "\n"
    "  -i DIR DIR [DIR ...]   the prediction folders (at least two)\n"
    "  -o OUTDIR              the ensemble's segmentations\n"
    "  -m MODELDIR            one of the ensemble's model folders: its labels (needed for region-based models)\n"
    "  --postprocessing FILE  nnU-Net's postprocessing.json, applied to the ensemble's labels\n"
    "  --quiet                no progress output\n"
    "  -h, --help             this help\n";

typedef struct {
    const char *inputs[MAX_INPUTS], *out_dir, *model_dir, *postprocessing;
    int n_inputs, quiet;
} ensemble_args;

static int usage(const char *fmt, const char *arg) { return cli_usage("ensemble", HELP, fmt, arg); }

static int parse_args(int argc, char **argv, ensemble_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        const bool has_value = i + 1 < argc;
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            fputs(HELP, stdout);
            return EXIT_SUCCESS;
        } else if (strcmp(o, "-i") == 0) {
            while (i + 1 < argc && argv[i + 1][0] != '-') {
                if (a->n_inputs == MAX_INPUTS) return usage("-i: at most 32 folders%s", "");
                a->inputs[a->n_inputs++] = argv[++i];
            }
        } else if (strcmp(o, "-o") == 0 || strcmp(o, "-m") == 0 || strcmp(o, "--postprocessing") == 0) {
            if (!has_value) return usage("%s needs a value", o);
            *(o[1] == 'o' ? &a->out_dir : o[1] == 'm' ? &a->model_dir : &a->postprocessing) = argv[++i];
        } else if (strcmp(o, "--quiet") == 0) {
            a->quiet = 1;
        } else {
            return usage("unknown option or argument '%s'", o);
        }
    }
    if (a->n_inputs < 2) return usage("-i needs at least two prediction folders%s", "");
    if (!a->out_dir) return usage("-o is required%s", "");
    return -1;
}

/* One case: the average of the folders' probabilities, its segmentation, postprocessed, written. */
static i3rt_status ensemble_case(i3_ctx *ctx, const ensemble_args *a, const i3_predictor_info *info,
                                 const i3_postprocessing *pp, const char *case_name, const char *ending) {
    char path[CLI_PATH_LEN];
    snprintf(path, sizeof path, "%s/%s%s%s", a->inputs[0], case_name, SUFFIX, ending);
    i3_volume avg;
    I3_TRY(i3_volume_read(ctx, path, &avg));
    const int64_t n = avg.d * avg.h * avg.w, K = avg.channels;
    i3rt_status st = info && K != info->num_classes
                         ? i3_fail(ctx, I3RT_ERR_SHAPE, "%s: %lld classes, the model (%s) has %d", path, (long long)K,
                                   a->model_dir, info->num_classes)
                         : I3RT_OK;
    for (int f = 1; f < a->n_inputs && st == I3RT_OK; f++) {
        char other[CLI_PATH_LEN];
        snprintf(other, sizeof other, "%s/%s%s%s", a->inputs[f], case_name, SUFFIX, ending);
        i3_volume v;
        st = i3_volume_read(ctx, other, &v);
        if (st != I3RT_OK) break;
        st = i3_volume_geometry_check(ctx, &avg.geometry, path, &v.geometry, other);
        if (st == I3RT_OK && v.channels != K)
            st = i3_fail(ctx, I3RT_ERR_SHAPE, "%s: %lld classes, %s has %lld", other, (long long)v.channels, path,
                         (long long)K);
        for (int64_t i = 0; st == I3RT_OK && i < K * n; i++) avg.data[i] += v.data[i];
        i3_volume_free(&v);
    }
    int32_t *labels = st == I3RT_OK ? i3_malloc(ctx, (size_t)n * sizeof *labels, "the ensemble's labels") : NULL;
    if (st == I3RT_OK && !labels) st = I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; st == I3RT_OK && i < K * n; i++) avg.data[i] /= (float)a->n_inputs;
    const i3_predictor_info classes = {.num_classes = (int)K}; /* without -m: softmax classes */
    if (st == I3RT_OK) i3_segmentation_from_probabilities(info ? info : &classes, avg.data, n, labels, 1);
    const int64_t shape[3] = {avg.d, avg.h, avg.w};
    if (st == I3RT_OK && pp) st = i3_postprocess(ctx, labels, shape, pp);
    snprintf(path, sizeof path, "%s/%s%s", a->out_dir, case_name, ending);
    if (st == I3RT_OK) st = i3_volume_write_labels(ctx, path, &avg.geometry, labels);
    free(labels);
    i3_volume_free(&avg);
    return st;
}

/* The NIfTI ending of a probabilities file's name (".nii.gz" or ".nii" after SUFFIX), NULL for any other name;
 * *case_len: the case name's length. */
static const char *probabilities_ending(const char *name, size_t *case_len) {
    static const char *const endings[] = {".nii.gz", ".nii"};
    const size_t len = strlen(name), suffix = strlen(SUFFIX);
    for (int k = 0; k < 2; k++) {
        const size_t tail = suffix + strlen(endings[k]);
        if (len > tail && strncmp(name + len - tail, SUFFIX, suffix) == 0 && strcmp(name + len - tail + suffix, endings[k]) == 0) {
            *case_len = len - tail;
            return endings[k];
        }
    }
    return NULL;
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int cli_ensemble(int argc, char **argv) {
    ensemble_args a;
    const int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    i3rt_context *ctx;
    if (i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU) != I3RT_OK) {
        fprintf(stderr, "i3rt ensemble: error: cannot create a context\n");
        return EXIT_FAILURE;
    }
    i3_predictor_info info;
    i3_postprocessing *pp = a.postprocessing ? i3_malloc(ctx, sizeof *pp, "the postprocessing") : NULL;
    i3rt_status st = a.model_dir ? i3_predictor_read_info(ctx, a.model_dir, &info) : I3RT_OK;
    if (st == I3RT_OK && a.postprocessing) st = pp ? i3_postprocessing_read(ctx, a.postprocessing, pp) : I3RT_ERR_OUT_OF_MEMORY;
    /* the cases: every CASE_probabilities.nii.gz or .nii of the first folder (the file names), in name order */
    char **names = NULL;
    int n_names = 0;
    DIR *d = st == I3RT_OK ? opendir(a.inputs[0]) : NULL;
    if (st == I3RT_OK && !d) st = i3_fail(ctx, I3RT_ERR_IO, "%s: cannot open the folder", a.inputs[0]);
    for (struct dirent *e; st == I3RT_OK && d && (e = readdir(d)) != NULL;) {
        size_t case_len;
        if (!probabilities_ending(e->d_name, &case_len)) continue;
        char **grown = n_names % 64 == 0 ? realloc(names, (size_t)(n_names + 64) * sizeof *names) : names;
        char *name = grown ? strdup(e->d_name) : NULL;
        if (grown) names = grown;
        if (!name) st = i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: out of memory listing the cases", a.inputs[0]);
        else names[n_names++] = name;
    }
    if (d) closedir(d);
    if (st == I3RT_OK && n_names == 0)
        st = i3_fail(ctx, I3RT_ERR_IO, "%s: no CASE%s.nii.gz or .nii (i3rt predict --save-probabilities writes them)",
                     a.inputs[0], SUFFIX);
    if (names) qsort(names, (size_t)n_names, sizeof *names, compare_names);
    if (st == I3RT_OK && mkdir(a.out_dir, 0777) != 0 && errno != EEXIST)
        st = i3_fail(ctx, I3RT_ERR_IO, "%s: %s", a.out_dir, strerror(errno));
    const double t0 = i3_now_seconds();
    for (int i = 0; i < n_names && st == I3RT_OK; i++) {
        size_t case_len;
        const char *ending = probabilities_ending(names[i], &case_len);
        names[i][case_len] = '\0'; /* the case name */
        st = ensemble_case(ctx, &a, a.model_dir ? &info : NULL, pp, names[i], ending);
        if (st == I3RT_OK && !a.quiet) fprintf(stderr, "%s%s: done\n", names[i], ending);
    }
    int result = EXIT_SUCCESS;
    if (st != I3RT_OK) {
        fprintf(stderr, "i3rt ensemble: error: %s\n", i3rt_context_error(ctx));
        result = EXIT_FAILURE;
    } else if (!a.quiet) {
        fprintf(stderr, "i3rt ensemble: %d case(s) from %d folders in %.2f s, written to %s\n", n_names, a.n_inputs,
                i3_now_seconds() - t0, a.out_dir);
    }
    for (int i = 0; i < n_names; i++) free(names[i]);
    free(names);
    free(pp);
    i3rt_context_free(ctx);
    return result;
}
