/* `i3rt i3deep`: i3Deep's stages on NIfTI files (runtime/i3deep.h, docs/i3deep.md).
 *
 *   i3rt i3deep recommend IMAGE (-m MODELDIR [-f K...] | -p MEMBER...) -o OUTDIR [options]
 *       stages 1-2 and the export of stage 3: uncertainty of the members' mean probabilities, the
 *       recommended slices, previews and masks for the expert
 *   i3rt i3deep refine-input IMAGE CORRECTION... -o OUT --classes C [--unannotated V]
 *       stage 4's input: the image with the corrected slices as one more channel
 *   i3rt i3deep simulate IMAGE TRUTH (-m MODELDIR [-f K...] | -p MEMBER...) -o OUTDIR [options]
 *       stages 1-4 with a simulated expert (the ground-truth slices): Dice of the pre-segmentation,
 *       annotation ratio, stage times, the refinement input
 * The ensemble members are the folds of an nnU-Net model folder (-m; each fold predicted alone by
 * predict.h) and/or MEMBER files, 4D NIfTIs (4th dimension = classes): probabilities (`i3rt predict -f K
 * --save-probabilities`) or, with --logits, logits. */
#include "i3deep.h" /* cli/i3deep.h */
#include "../runtime/i3deep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EXIT_USAGE 2
#define MAX_MEMBERS 64
#define MAX_CORRECTIONS 1024

static const char *HELP =
    "usage: i3rt i3deep recommend IMAGE (-m MODELDIR [-f K...] | -p MEMBER...) -o OUTDIR [options]\n"
    "       i3rt i3deep refine-input IMAGE CORRECTION [CORRECTION...] -o OUT --classes C [--unannotated V]\n"
    "       i3rt i3deep simulate IMAGE TRUTH (-m MODELDIR [-f K...] | -p MEMBER...) -o OUTDIR [options]\n"
    "\n"
    "i3Deep (Gotkowski et al., MIDL 2022) on NIfTI files; docs/i3deep.md has the details.\n"
    "  recommend    uncertainty (normalized entropy of the members' mean probabilities), the slices to\n"
    "               correct over the axial, coronal and sagittal axes, and for each slice a preview PNG\n"
    "               (pre-segmentation overlaid) and its mask as PNG and NIfTI for the expert to correct;\n"
    "               also OUTDIR/NAME_uncertainty.nii.gz, NAME_presegmentation.nii.gz, NAME_slices.tsv\n"
    "  refine-input the refinement network's input: IMAGE's channels plus one channel holding the\n"
    "               corrected slices (class labels; --unannotated elsewhere), written to OUT (4D NIfTI).\n"
    "               Each CORRECTION is a label PNG or NIfTI named ..._<axial|coronal|sagittal>_<index>...\n"
    "  simulate     recommend, then a simulated expert corrects every recommended slice to TRUTH; prints\n"
    "               Dice of the pre-segmentation per class, the annotation ratio and the stage times;\n"
    "               writes OUTDIR/NAME_refinement_input.nii.gz\n"
    "\n"
    "Ensemble members: every fold of MODELDIR (an nnU-Net model folder of i3rt weight files, as for\n"
    "i3rt predict), each predicted alone (with its test-time mirroring unless --disable-tta), and/or each\n"
    "MEMBER file, a 4D NIfTI on IMAGE's grid whose 4th dimension is the classes: probabilities\n"
    "(i3rt predict -f K --save-probabilities) or logits with --logits.\n"
    "\n"
    "options:\n"
    "  -m MODELDIR          an nnU-Net model folder: its folds are ensemble members\n"
    "  -f K [K...]          only these folds of MODELDIR (default: all)\n"
    "  --disable-tta        no test-time mirroring inside each fold's prediction\n"
    "  -p, --member FILE    an ensemble member file (repeat)\n"
    "  --logits             the members are logits (softmax taken per member)\n"
    "  -o OUTDIR | OUT      where to write (a directory is created if missing)\n"
    "  --name NAME          file name prefix (default: IMAGE's name without .nii/.nii.gz)\n"
    "  --min-dist F         suppression window, fraction of the axis length (default 0.0234)\n"
    "  --min-uncert F       minimum slice uncertainty relative to its axis's largest (default 0.1)\n"
    "  --max-slices N       most slices over all axes (default 12)\n"
    "  --classes C          number of classes (refine-input; recommend/simulate take it from the members)\n"
    "  --unannotated V      value of the voxels no correction covers (default 0, the paper's)\n"
    "  --threads N          CPU threads (default 1)\n"
    "  -h, --help           this help\n";

typedef struct {
    const char *command, *image, *truth, *out, *name, *model;
    int folds[I3_MAX_FOLDS], n_folds, disable_tta;
    const char *members[MAX_MEMBERS];
    int n_members;
    const char *corrections[MAX_CORRECTIONS];
    int n_corrections;
    int logits, classes, threads;
    float unannotated;
    i3_slice_select_params select;
} args;

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "i3rt i3deep: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%.*s (--help for more)\n", (int)strcspn(HELP, "\n"), HELP);
    return EXIT_USAGE;
}

static int parse_number(const char *s, double lo, double hi, double *out) {
    char *end;
    const double v = s ? strtod(s, &end) : NAN;
    if (!s || *end || !(v >= lo && v <= hi)) return 0;
    *out = v;
    return 1;
}

/* Returns -1 when the arguments are fine, else the exit status. */
static int parse(int argc, char **argv, args *a) {
    *a = (args){.threads = 1, .select = I3_SLICE_SELECT_DEFAULTS};
    if (argc < 1) return usage("a command is needed: recommend, refine-input or simulate%s", "");
    a->command = argv[0];
    if (strcmp(a->command, "-h") == 0 || strcmp(a->command, "--help") == 0) {
        fputs(HELP, stdout);
        return 0;
    }
    if (strcmp(a->command, "recommend") && strcmp(a->command, "refine-input") && strcmp(a->command, "simulate"))
        return usage("unknown command '%s' (recommend, refine-input, simulate)", a->command);
    const char *positional[2 + MAX_CORRECTIONS];
    int n_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            fputs(HELP, stdout);
            return 0;
        } else if (strcmp(o, "--logits") == 0) {
            a->logits = 1;
        } else if (strcmp(o, "--disable-tta") == 0) {
            a->disable_tta = 1;
        } else if (strcmp(o, "-m") == 0) {
            if (!v) return usage("%s needs a model folder", o);
            a->model = argv[++i];
        } else if (strcmp(o, "-f") == 0) {
            while (i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9') {
                if (a->n_folds == I3_MAX_FOLDS || !parse_number(argv[i + 1], 0, 999, &x) || x != floor(x))
                    return usage("-f needs fold numbers (at most 16), got '%s'", argv[i + 1]);
                a->folds[a->n_folds++] = (int)x;
                i++;
            }
            if (a->n_folds == 0) return usage("-f needs at least one fold number%s", "");
        } else if (strcmp(o, "-p") == 0 || strcmp(o, "--member") == 0) {
            if (!v) return usage("%s needs a file", o);
            if (a->n_members == MAX_MEMBERS) return usage("more than 64 members%s", "");
            a->members[a->n_members++] = argv[++i];
        } else if (strcmp(o, "-o") == 0 || strcmp(o, "--name") == 0) {
            if (!v) return usage("%s needs a value", o);
            *(o[1] == 'o' ? &a->out : &a->name) = argv[++i];
        } else if (strcmp(o, "--min-dist") == 0 || strcmp(o, "--min-uncert") == 0) {
            if (!parse_number(v, 0.0, 1.0, &x)) return usage("%s needs a number in [0, 1]", o);
            *(o[6] == 'd' ? &a->select.min_dist : &a->select.min_uncert) = x;
            i++;
        } else if (strcmp(o, "--max-slices") == 0 || strcmp(o, "--classes") == 0 || strcmp(o, "--threads") == 0) {
            if (!parse_number(v, 1, 32767, &x) || x != floor(x)) return usage("%s needs a whole number >= 1", o);
            *(o[2] == 'm' ? &a->select.max_slices : o[2] == 'c' ? &a->classes : &a->threads) = (int)x;
            i++;
        } else if (strcmp(o, "--unannotated") == 0) {
            if (!parse_number(v, -1e6, 1e6, &x)) return usage("%s needs a number", o);
            a->unannotated = (float)x;
            i++;
        } else if (o[0] == '-' && o[1]) {
            return usage("unknown option '%s'", o);
        } else {
            if (n_positional == 2 + MAX_CORRECTIONS) return usage("too many files%s", "");
            positional[n_positional++] = o;
        }
    }
    const int refine = strcmp(a->command, "refine-input") == 0, simulate = strcmp(a->command, "simulate") == 0;
    if (!a->out) return usage("-o is needed%s", "");
    if (refine) {
        if (n_positional < 2) return usage("refine-input needs IMAGE and at least one CORRECTION%s", "");
        if (!a->classes) return usage("refine-input needs --classes C%s", "");
        for (int i = 1; i < n_positional; i++) a->corrections[a->n_corrections++] = positional[i];
    } else {
        if (n_positional != 1 + simulate)
            return usage(simulate ? "simulate needs IMAGE and TRUTH%s" : "recommend needs one IMAGE%s", "");
        if (a->n_members == 0 && !a->model) return usage("ensemble members are needed (-m MODELDIR or -p FILE)%s", "");
        if (a->n_folds && !a->model) return usage("-f needs -m MODELDIR%s", "");
        if (simulate) a->truth = positional[1];
    }
    a->image = positional[0];
    return -1;
}

/* "dir/case_0000.nii.gz" -> "case_0000". */
static void base_name(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    snprintf(out, cap, "%s", b ? b + 1 : path);
    char *dot = strstr(out, ".nii");
    if (dot) *dot = '\0';
}

static int fail(i3_ctx *ctx) {
    fprintf(stderr, "i3rt i3deep: %s\n", i3rt_context_error(ctx));
    return 1;
}

/* The number of classes of the model folder's first requested fold. */
static i3rt_status model_classes(i3_ctx *ctx, const args *a, int *classes) {
    i3_predictor *p;
    I3_TRY(i3_predictor_load(ctx, a->model, a->folds, a->n_folds ? 1 : 0, &p));
    *classes = i3_predictor_get_info(p)->num_classes;
    i3_predictor_free(p);
    return I3RT_OK;
}

/* Opens the case (classes from the model, else from the first member file) and folds every member in. */
static i3rt_status open_with_members(i3_ctx *ctx, const args *a, const i3_volume *image, i3_case **out) {
    *out = NULL;
    i3rt_status st = I3RT_OK;
    if (a->model) {
        int classes;
        I3_TRY(model_classes(ctx, a, &classes));
        I3_TRY(i3_case_open(ctx, image, classes, out));
        i3_predict_options o;
        i3_predict_options_default(&o);
        o.use_mirroring = !a->disable_tta;
        st = i3_case_add_model_members(*out, a->model, a->folds, a->n_folds, &o);
    }
    for (int m = 0; m < a->n_members && st == I3RT_OK; m++) {
        i3_volume v;
        st = i3_volume_read(ctx, a->members[m], &v);
        if (st != I3RT_OK) break;
        st = i3_volume_geometry_check(ctx, &image->geometry, a->image, &v.geometry, a->members[m]);
        if (st == I3RT_OK && !*out) st = i3_case_open(ctx, image, (int)v.channels, out);
        if (st == I3RT_OK && v.channels != i3_case_num_classes(*out))
            st = i3_fail(ctx, I3RT_ERR_SHAPE, "%s: %lld class channels, the first member has %d", a->members[m],
                         (long long)v.channels, i3_case_num_classes(*out));
        if (st == I3RT_OK) st = a->logits ? i3_case_add_logits(*out, v.data) : i3_case_add_probabilities(*out, v.data);
        i3_volume_free(&v);
    }
    if (st != I3RT_OK) {
        i3_case_free(*out);
        *out = NULL;
    }
    return st;
}

static i3rt_status recommend(i3_ctx *ctx, const args *a, const i3_volume *image, const char *name, i3_case **out) {
    i3_case *c;
    I3_TRY(open_with_members(ctx, a, image, &c));
    char path[4096];
    i3rt_status st = i3_case_compute_uncertainty(c);
    if (st == I3RT_OK) st = i3_case_recommend(c, &a->select);
    if (st == I3RT_OK) st = i3_case_export(c, a->out, name);
    if (st == I3RT_OK) {
        snprintf(path, sizeof path, "%s/%s_uncertainty.nii.gz", a->out, name);
        st = i3_volume_write_f32(ctx, path, &image->geometry, 1, i3_case_entropy(c));
    }
    if (st == I3RT_OK) {
        snprintf(path, sizeof path, "%s/%s_presegmentation.nii.gz", a->out, name);
        st = i3_volume_write_labels(ctx, path, &image->geometry, i3_case_presegmentation(c));
    }
    if (st != I3RT_OK) {
        i3_case_free(c);
        return st;
    }
    int n;
    const i3_slice *s = i3_case_slices(c, &n);
    printf("%d members, %d classes: %d slices recommended (min-dist %g, min-uncert %g, max-slices %d)\n",
           i3_case_members(c), i3_case_num_classes(c), n, a->select.min_dist, a->select.min_uncert,
           a->select.max_slices);
    for (int i = 0; i < n; i++)
        printf("  %2d  %-8s %4lld  uncertainty %10.3f  (%.2f of its axis's largest)\n", i + 1,
               i3_axis_name(s[i].axis), (long long)s[i].index, s[i].sum, s[i].relative);
    printf("previews and masks: %s/%s_<axis>_<index>_{preview.png,mask.png,mask.nii.gz}\n", a->out, name);
    *out = c;
    return I3RT_OK;
}

static void print_times(const i3_case *c) {
    printf("stage times:");
    for (int s = 0; s < I3_STAGE_COUNT; s++) printf(" %s %.3f s%s", i3_stage_name(s), i3_case_stage_seconds(c, s),
                                                    s + 1 < I3_STAGE_COUNT ? "," : "\n");
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

/* Reads a label volume (whole numbers) on the image's grid. */
static i3rt_status read_labels(i3_ctx *ctx, const char *path, const i3_volume *image, int32_t **out) {
    i3_volume v;
    I3_TRY(i3_volume_read(ctx, path, &v));
    i3rt_status st = i3_volume_geometry_check(ctx, &image->geometry, "the image", &v.geometry, path);
    if (st == I3RT_OK && v.channels != 1)
        st = i3_fail(ctx, I3RT_ERR_SHAPE, "%s: %lld channels, a label map has one", path, (long long)v.channels);
    const int64_t n = v.d * v.h * v.w;
    int32_t *labels = st == I3RT_OK ? i3_malloc(ctx, (size_t)n * sizeof *labels, path) : NULL;
    if (st == I3RT_OK && !labels) st = I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n && st == I3RT_OK; i++) {
        if (v.data[i] != nearbyintf(v.data[i]) || fabsf(v.data[i]) > 32767.0f)
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: voxel %lld holds %g, not a label", path, (long long)i, v.data[i]);
        else
            labels[i] = (int32_t)v.data[i];
    }
    i3_volume_free(&v);
    if (st != I3RT_OK) free(labels);
    *out = st == I3RT_OK ? labels : NULL;
    return st;
}

static i3rt_status simulate(i3_ctx *ctx, const args *a, const i3_volume *image, const char *name) {
    int32_t *truth;
    I3_TRY(read_labels(ctx, a->truth, image, &truth));
    i3_case *c;
    i3rt_status st = recommend(ctx, a, image, name, &c);
    if (st != I3RT_OK) {
        free(truth);
        return st;
    }
    st = i3_case_simulate_expert(c, truth, a->truth);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s_refinement_input.nii.gz", a->out, name);
    if (st == I3RT_OK) st = write_refinement_input(ctx, c, path, a->unannotated);
    if (st == I3RT_OK) {
        const int classes = i3_case_num_classes(c);
        double *dice = malloc((size_t)classes * sizeof *dice);
        if (dice) {
            i3_dice_per_class(i3_case_presegmentation(c), truth, image->d * image->h * image->w, classes, dice);
            printf("Dice of the pre-segmentation:");
            for (int k = 1; k < classes; k++) printf(isnan(dice[k]) ? " class %d -" : " class %d %.4f", k, dice[k]);
            printf("\n");
            free(dice);
        }
        int n;
        i3_case_slices(c, &n);
        printf("annotation ratio: %.4f (%d slices / axial ground-truth foreground slices)\n",
               i3_annotation_ratio(n, truth, image->d, image->h, image->w), n);
        printf("refinement: needs the refinement nnU-Net (issue 7); its input is written above\n");
        print_times(c);
    }
    i3_case_free(c);
    free(truth);
    return st;
}

static i3rt_status refine_input(i3_ctx *ctx, const args *a, const i3_volume *image) {
    i3_case *c;
    I3_TRY(i3_case_open(ctx, image, a->classes, &c));
    i3rt_status st = I3RT_OK;
    for (int i = 0; i < a->n_corrections && st == I3RT_OK; i++) st = i3_case_submit_named_file(c, a->corrections[i]);
    if (st == I3RT_OK) st = write_refinement_input(ctx, c, a->out, a->unannotated);
    if (st == I3RT_OK) print_times(c);
    i3_case_free(c);
    return st;
}

int cli_i3deep(int argc, char **argv) {
    args a;
    const int parsed = parse(argc, argv, &a);
    if (parsed >= 0) return parsed;
    const int refine = strcmp(a.command, "refine-input") == 0;
    if (!refine && mkdir(a.out, 0755) != 0) {
        struct stat sb;
        if (stat(a.out, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "i3rt i3deep: cannot make the output directory %s\n", a.out);
            return 1;
        }
    }
    char name[512];
    if (a.name) snprintf(name, sizeof name, "%s", a.name);
    else base_name(a.image, name, sizeof name);
    i3rt_context *ctx;
    if (i3rt_context_create(&ctx, a.threads, I3RT_BACKEND_CPU) != I3RT_OK) {
        fprintf(stderr, "i3rt i3deep: cannot create a context\n");
        return 1;
    }
    i3_volume image;
    i3rt_status st = i3_volume_read(ctx, a.image, &image);
    if (st == I3RT_OK) {
        i3_case *c = NULL;
        st = refine ? refine_input(ctx, &a, &image)
             : strcmp(a.command, "simulate") == 0 ? simulate(ctx, &a, &image, name)
                                                  : recommend(ctx, &a, &image, name, &c);
        if (c) print_times(c);
        i3_case_free(c);
        i3_volume_free(&image);
    }
    const int code = st == I3RT_OK ? 0 : fail(ctx);
    i3rt_context_free(ctx);
    return code;
}
