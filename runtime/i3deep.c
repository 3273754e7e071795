/* i3Deep's stages for one case (see i3deep.h; the paper's Sec. 3.2 and Appendix A, and
 * docs/i3deep.md for every choice the paper leaves open). Each public call validates first, then
 * changes the case, so a failed call leaves it as it was. */
#include "i3deep.h"

#include "ops.h"
#include "png_export.h"

#include <ctype.h>
#include <math.h>
#include <nifti2_io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct i3_case {
    i3_ctx *ctx;
    i3_volume image;          /* owned copy */
    int64_t d, h, w, voxels;
    int num_classes;
    int members;              /* ensemble members folded into mean_probs */
    float *mean_probs;        /* [C, d, h, w] */
    float *entropy, *max_prob;
    int32_t *preseg;
    int uncertainty_members;  /* members when the uncertainty was computed (0: not computed) */
    i3_slice *slices;         /* recommended */
    int n_slices;
    int32_t *corrections;     /* [d, h, w], -1 where nobody corrected */
    i3_slice *corrected;      /* capacity d + h + w: every slice at most once */
    int n_corrected;
    i3_predictor *refinement_model;  /* NULL until i3_case_load_refinement_model */
    int32_t *refined;         /* [d, h, w]; NULL until i3_case_refine succeeded */
    double seconds[I3_STAGE_COUNT];
    i3_predict_times refine_times; /* the refine stage's parts */
};

const char *i3_stage_name(i3_stage stage) {
    static const char *const names[I3_STAGE_COUNT] = {"presegmentation", "ensemble", "uncertainty", "recommend",
                                                      "export", "corrections", "refine-input", "refine"};
    return (unsigned)stage < I3_STAGE_COUNT ? names[stage] : "?";
}

/* Runs one stage's call and adds its wall time to the stage. */
#define TIMED(c, stage, call)                          \
    do {                                               \
        const double t0_ = i3_now_seconds();              \
        const i3rt_status st_ = (call);                \
        (c)->seconds[stage] += i3_now_seconds() - t0_;    \
        return st_;                                    \
    } while (0)

void i3_case_free(i3_case *c) {
    if (!c) return;
    i3_volume_free(&c->image);
    free(c->mean_probs);
    free(c->entropy);
    free(c->max_prob);
    free(c->preseg);
    free(c->slices);
    free(c->corrections);
    free(c->corrected);
    i3_predictor_free(c->refinement_model);
    free(c->refined);
    free(c);
}

i3rt_status i3_case_open(i3_ctx *ctx, const i3_volume *image, int num_classes, i3_case **out) {
    *out = NULL;
    if (!image || !image->data || image->channels < 1 || image->d < 1 || image->h < 1 || image->w < 1)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep case: the image is empty");
    if (num_classes < 2 || num_classes > 32767)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep case: %d classes (2 .. 32767)", num_classes);
    const int64_t voxels = image->d * image->h * image->w;
    size_t probs_bytes, image_bytes;
    if (!i3_mul_size((size_t)voxels, (size_t)num_classes * sizeof(float), &probs_bytes) ||
        !i3_mul_size((size_t)voxels, (size_t)image->channels * sizeof(float), &image_bytes))
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "i3deep case: %lld voxels x %d classes is too large",
                       (long long)voxels, num_classes);
    i3_case *c = i3_calloc(ctx, 1, sizeof *c, "i3deep case");
    if (!c) return I3RT_ERR_OUT_OF_MEMORY;
    c->ctx = ctx;
    c->d = image->d, c->h = image->h, c->w = image->w, c->voxels = voxels;
    c->num_classes = num_classes;
    c->image = *image;
    c->image.data = i3_malloc(ctx, image_bytes, "i3deep case image");
    c->mean_probs = i3_malloc(ctx, probs_bytes, "i3deep mean probabilities");
    c->entropy = i3_malloc(ctx, (size_t)voxels * sizeof(float), "i3deep entropy");
    c->max_prob = i3_malloc(ctx, (size_t)voxels * sizeof(float), "i3deep max probability");
    c->preseg = i3_malloc(ctx, (size_t)voxels * sizeof(int32_t), "i3deep pre-segmentation");
    c->corrections = i3_malloc(ctx, (size_t)voxels * sizeof(int32_t), "i3deep corrections");
    c->corrected = i3_malloc(ctx, (size_t)(c->d + c->h + c->w) * sizeof(i3_slice), "i3deep corrected slices");
    if (!c->image.data || !c->mean_probs || !c->entropy || !c->max_prob || !c->preseg || !c->corrections ||
        !c->corrected) {
        i3_case_free(c);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    memcpy(c->image.data, image->data, image_bytes);
    for (int64_t i = 0; i < voxels; i++) c->corrections[i] = -1;
    *out = c;
    return I3RT_OK;
}

/* ---- stage 1: ensemble mean and uncertainty ------------------------------------------------------- */

static i3rt_status check_finite(i3_case *c, const float *x, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep member %d: %s value %lld is %g", c->members + 1,
                           what, (long long)i, x[i]);
    return I3RT_OK;
}

static i3rt_status add_logits(i3_case *c, const float *logits) {
    if (!logits) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep member %d: no logits", c->members + 1);
    I3_TRY(check_finite(c, logits, c->voxels * c->num_classes, "logit"));
    i3_cpu_softmax_mean_accumulate(logits, 1, c->num_classes, c->voxels, c->members + 1, c->mean_probs,
                                   c->ctx->n_threads);
    c->members++;
    return I3RT_OK;
}

/* Probabilities must be in [0, 1] and sum to 1 per voxel (within 1e-3: float softmax outputs). */
static i3rt_status check_distribution(i3_case *c, const float *p, const char *what) {
    if (!p) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: no probabilities", what);
    const int64_t s = c->voxels, C = c->num_classes;
    for (int64_t v = 0; v < s; v++) {
        double total = 0.0;
        for (int64_t k = 0; k < C; k++) {
            const float x = p[k * s + v];
            if (!(x >= 0.0f && x <= 1.0f))
                return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT,
                               "%s: probability %g of class %lld at voxel %lld is outside [0, 1]", what, x,
                               (long long)k, (long long)v);
            total += x;
        }
        if (fabs(total - 1.0) > 1e-3)
            return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: probabilities at voxel %lld sum to %g, not 1",
                           what, (long long)v, total);
    }
    return I3RT_OK;
}

/* dst = (dst_weight * dst + src_weight * src) / (dst_weight + src_weight): the mean of two means of
 * dst_weight and src_weight members. With dst_weight 0, dst is not read (it may hold anything). */
static void merge_means(float *dst, const float *src, int64_t n, double dst_weight, double src_weight) {
    if (dst_weight == 0.0) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
        return;
    }
    const float a = (float)(dst_weight / (dst_weight + src_weight)), b = (float)(src_weight / (dst_weight + src_weight));
    for (int64_t i = 0; i < n; i++) dst[i] = a * dst[i] + b * src[i];
}

static i3rt_status add_probabilities(i3_case *c, const float *p) {
    char what[64];
    snprintf(what, sizeof what, "i3deep member %d", c->members + 1);
    I3_TRY(check_distribution(c, p, what));
    merge_means(c->mean_probs, p, c->voxels * c->num_classes, c->members, 1);
    c->members++;
    return I3RT_OK;
}

i3rt_status i3_case_add_logits(i3_case *c, const float *logits) { TIMED(c, I3_STAGE_ENSEMBLE, add_logits(c, logits)); }

i3rt_status i3_case_add_probabilities(i3_case *c, const float *probabilities) {
    TIMED(c, I3_STAGE_ENSEMBLE, add_probabilities(c, probabilities));
}

/* i3Deep's uncertainty and refinement take softmax classes of one image: no region-based or cascade models. */
static i3rt_status check_plain_model(i3_case *c, const char *model_dir, const i3_predictor_info *info) {
    if (info->n_regions)
        return i3_fail(c->ctx, I3RT_ERR_UNSUPPORTED, "%s: a region-based model (sigmoid regions): i3Deep needs "
                       "softmax classes", model_dir);
    if (info->previous_stage[0])
        return i3_fail(c->ctx, I3RT_ERR_UNSUPPORTED, "%s: a cascade stage (after %s): i3Deep takes one-stage models",
                       model_dir, info->previous_stage);
    return I3RT_OK;
}

/* Every fold predicts alone into probs; the folds' running mean builds up in fresh and joins the
 * case's mean only when all folds succeeded, so a failure leaves the case as it was. */
static i3rt_status add_model_members(i3_case *c, const char *model_dir, const int *folds, int n_folds,
                                     const i3_predict_options *o, float *probs, float *fresh, int32_t *labels) {
    const int64_t n = c->voxels * c->num_classes;
    for (int i = 0; i < n_folds; i++) {
        i3_predictor *p;
        I3_TRY(i3_predictor_load(c->ctx, model_dir, &folds[i], 1, &p));
        const int classes = i3_predictor_get_info(p)->num_classes;
        i3rt_status st = check_plain_model(c, model_dir, i3_predictor_get_info(p));
        if (st == I3RT_OK)
            st = classes == c->num_classes ? i3_predict_case(p, &c->image, o, labels, probs)
                                           : i3_fail(c->ctx, I3RT_ERR_SHAPE, "%s fold %d: %d classes, the case has %d",
                                                     model_dir, folds[i], classes, c->num_classes);
        i3_predictor_free(p);
        char what[600];
        snprintf(what, sizeof what, "%s fold %d", model_dir, folds[i]);
        if (st == I3RT_OK) st = check_distribution(c, probs, what);
        if (st != I3RT_OK) return st;
        merge_means(fresh, probs, n, i, 1);
    }
    merge_means(c->mean_probs, fresh, n, c->members, n_folds);
    c->members += n_folds;
    return I3RT_OK;
}

static i3rt_status add_model(i3_case *c, const char *model_dir, const int *folds, int n_folds,
                             const i3_predict_options *options) {
    if (!model_dir || n_folds < 0 || n_folds > I3_MAX_FOLDS || (n_folds > 0 && !folds))
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: a model folder and 0 .. %d folds are needed",
                       I3_MAX_FOLDS);
    i3_predict_options o;
    if (options) o = *options;
    else i3_predict_options_default(&o);
    int fold_list[I3_MAX_FOLDS];
    if (n_folds == 0) {  /* every fold: the folder's own list */
        i3_predictor *all;
        I3_TRY(i3_predictor_load(c->ctx, model_dir, NULL, 0, &all));
        const i3_predictor_info *info = i3_predictor_get_info(all);
        n_folds = info->n_folds;
        memcpy(fold_list, info->folds, (size_t)n_folds * sizeof(int));
        i3_predictor_free(all);
        folds = fold_list;
    }
    const size_t bytes = (size_t)(c->voxels * c->num_classes) * sizeof(float);
    float *probs = i3_malloc(c->ctx, bytes, "member probabilities"), *fresh = i3_malloc(c->ctx, bytes, "members' mean");
    int32_t *labels = i3_malloc(c->ctx, (size_t)c->voxels * sizeof(int32_t), "member labels");
    i3rt_status st = probs && fresh && labels ? add_model_members(c, model_dir, folds, n_folds, &o, probs, fresh, labels)
                                              : I3RT_ERR_OUT_OF_MEMORY;
    free(probs);
    free(fresh);
    free(labels);
    return st;
}

i3rt_status i3_case_add_model_members(i3_case *c, const char *model_dir, const int *folds, int n_folds,
                                      const i3_predict_options *options) {
    TIMED(c, I3_STAGE_PRESEGMENTATION, add_model(c, model_dir, folds, n_folds, options));
}

static i3rt_status compute_uncertainty(i3_case *c) {
    if (c->members == 0)
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: uncertainty needs at least one ensemble member");
    i3_cpu_prob_uncertainty(c->mean_probs, 1, c->num_classes, c->voxels, c->entropy, c->max_prob, c->preseg,
                            c->ctx->n_threads);
    c->uncertainty_members = c->members;
    return I3RT_OK;
}

i3rt_status i3_case_compute_uncertainty(i3_case *c) { TIMED(c, I3_STAGE_UNCERTAINTY, compute_uncertainty(c)); }

/* ---- stage 2: slice acquisition ------------------------------------------------------------------- */

static i3rt_status recommend(i3_case *c, const i3_slice_select_params *params) {
    if (c->uncertainty_members == 0)
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: recommending slices needs the uncertainty first");
    const i3_slice_select_params p = params ? *params : I3_SLICE_SELECT_DEFAULTS;
    const int64_t most = c->d + c->h + c->w;  /* no more slices than the volume has */
    const int64_t room = p.max_slices < 1 ? 1 : p.max_slices < most ? p.max_slices : most;
    i3_slice *slices = i3_malloc(c->ctx, (size_t)room * sizeof *slices, "recommended slices");
    if (!slices) return I3RT_ERR_OUT_OF_MEMORY;
    int n = 0;
    i3rt_status st = i3_slice_select(c->ctx, c->entropy, c->d, c->h, c->w, &p, slices, &n);
    if (st != I3RT_OK) {
        free(slices);
        return st;
    }
    free(c->slices);
    c->slices = slices;
    c->n_slices = n;
    return I3RT_OK;
}

i3rt_status i3_case_recommend(i3_case *c, const i3_slice_select_params *params) {
    TIMED(c, I3_STAGE_RECOMMEND, recommend(c, params));
}

const i3_slice *i3_case_slices(const i3_case *c, int *n) {
    *n = c->n_slices;
    return c->slices;
}

/* ---- stage 3: export for the expert --------------------------------------------------------------- */

/* NIfTI axis (x = 0, y = 1, z = 2) that an i3rt slice axis fixes. */
static int nifti_axis(i3_axis axis) { return axis == I3_AXIAL ? 2 : axis == I3_CORONAL ? 1 : 0; }

/* The geometry of slice `index` as a one-voxel-thick volume: the same voxel-to-world maps with the
 * origin moved to the slice, so that viewers overlay it on the image where it belongs. */
static i3_volume_geometry slice_geometry(const i3_volume_geometry *g, i3_axis axis, int64_t index) {
    i3_volume_geometry s = *g;
    const int a = nifti_axis(axis);
    s.size[a] = 1;
    const double k = (double)index;
    for (int r = 0; r < 3; r++) {
        s.srow[r][3] += g->srow[r][a] * k;
        s.affine[r][3] += g->affine[r][a] * k;
    }
    const nifti_dmat44 q = nifti_quatern_to_dmat44(g->quatern[0], g->quatern[1], g->quatern[2], g->qoffset[0],
                                                   g->qoffset[1], g->qoffset[2], g->spacing[0], g->spacing[1],
                                                   g->spacing[2], g->qfac < 0 ? -1.0 : 1.0);
    for (int r = 0; r < 3; r++) s.qoffset[r] += q.m[r][a] * k;
    return s;
}

/* Pixels of the largest of the three slice shapes. */
static int64_t largest_plane(const i3_case *c) {
    const int64_t a = c->h * c->w, b = c->d * c->w, s = c->d * c->h;
    return a > b ? (a > s ? a : s) : (b > s ? b : s);
}

static void slice_path(char *buf, size_t size, const char *dir, const char *name, const i3_slice *s,
                       const char *suffix) {
    snprintf(buf, size, "%s/%s_%s_%03lld_%s", dir, name, i3_axis_name(s->axis), (long long)s->index, suffix);
}

static i3rt_status export_slice(i3_case *c, const char *dir, const char *name, const i3_slice *s, float lo,
                                float hi, float *image_plane, int32_t *label_plane, uint8_t *rgb) {
    int64_t rows, cols;
    i3_slice_dims(s->axis, c->d, c->h, c->w, &rows, &cols);
    i3_slice_get(c->image.data, sizeof(float), c->d, c->h, c->w, s->axis, s->index, image_plane);
    i3_slice_get(c->preseg, sizeof(int32_t), c->d, c->h, c->w, s->axis, s->index, label_plane);
    char path[4096];
    slice_path(path, sizeof path, dir, name, s, "mask.nii.gz");
    const i3_volume_geometry g = slice_geometry(&c->image.geometry, s->axis, s->index);
    I3_TRY(i3_volume_write_labels(c->ctx, path, &g, label_plane));
    i3_plane_flip_rows(image_plane, sizeof(float), rows, cols);  /* PNGs: highest row index on top */
    i3_plane_flip_rows(label_plane, sizeof(int32_t), rows, cols);
    i3_png_overlay(image_plane, label_plane, rows * cols, lo, hi, 0.4f, rgb);
    slice_path(path, sizeof path, dir, name, s, "preview.png");
    I3_TRY(i3_png_write(c->ctx, path, rgb, rows, cols, 3));
    slice_path(path, sizeof path, dir, name, s, "mask.png");
    return i3_png_write_labels(c->ctx, path, label_plane, rows, cols);
}

static i3rt_status export_manifest(i3_case *c, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s_slices.tsv", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return i3_fail(c->ctx, I3RT_ERR_IO, "%s: cannot write", path);
    fprintf(f, "rank\taxis\tindex\tuncertainty_sum\trelative_to_axis_max\n");
    for (int i = 0; i < c->n_slices; i++)
        fprintf(f, "%d\t%s\t%lld\t%.6g\t%.6f\n", i + 1, i3_axis_name(c->slices[i].axis),
                (long long)c->slices[i].index, c->slices[i].sum, c->slices[i].relative);
    return fclose(f) == 0 ? I3RT_OK : i3_fail(c->ctx, I3RT_ERR_IO, "%s: cannot write", path);
}

static i3rt_status export_all(i3_case *c, const char *dir, const char *name) {
    if (c->uncertainty_members == 0)
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: export needs the pre-segmentation first");
    if (!dir || !name) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: export needs a directory and a name");
    const int64_t plane = largest_plane(c);
    float *image_plane = i3_malloc(c->ctx, (size_t)plane * sizeof(float), "slice image");
    int32_t *label_plane = i3_malloc(c->ctx, (size_t)plane * sizeof(int32_t), "slice labels");
    uint8_t *rgb = i3_malloc(c->ctx, (size_t)plane * 3, "slice preview");
    i3rt_status st = image_plane && label_plane && rgb ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    float lo = 0.0f, hi = 1.0f;
    if (st == I3RT_OK) i3_png_window(c->image.data, c->voxels, &lo, &hi);  /* first channel */
    for (int i = 0; i < c->n_slices && st == I3RT_OK; i++)
        st = export_slice(c, dir, name, &c->slices[i], lo, hi, image_plane, label_plane, rgb);
    if (st == I3RT_OK) st = export_manifest(c, dir, name);
    free(image_plane);
    free(label_plane);
    free(rgb);
    return st;
}

i3rt_status i3_case_export(i3_case *c, const char *dir, const char *name) {
    TIMED(c, I3_STAGE_EXPORT, export_all(c, dir, name));
}

/* ---- stage 3: corrections ------------------------------------------------------------------------- */

static i3rt_status check_labels(i3_case *c, const int32_t *labels, int64_t rows, int64_t cols, const char *source) {
    for (int64_t i = 0; i < rows * cols; i++)
        if (labels[i] < 0 || labels[i] >= c->num_classes)
            return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT,
                           "%s: label %d at row %lld column %lld is not a class (0 .. %d)", source, labels[i],
                           (long long)(i / cols), (long long)(i % cols), c->num_classes - 1);
    return I3RT_OK;
}

/* Writes a checked slice into the corrections and lists it once. */
static void record(i3_case *c, i3_axis axis, int64_t index, const int32_t *labels) {
    i3_slice_put(c->corrections, sizeof(int32_t), c->d, c->h, c->w, axis, index, labels);
    for (int i = 0; i < c->n_corrected; i++)
        if (c->corrected[i].axis == axis && c->corrected[i].index == index) return;
    c->corrected[c->n_corrected++] = (i3_slice){axis, index, 0.0, 0.0};
}

/* The slice exists in this case: checked before anything reads or writes a plane of it. */
static i3rt_status check_slice(i3_case *c, i3_axis axis, int64_t index, const char *source) {
    if ((unsigned)axis > I3_SAGITTAL)
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: axis %d is not axial (0), coronal (1) or sagittal (2)",
                       source, (int)axis);
    const int64_t len = i3_axis_length(axis, c->d, c->h, c->w);
    if (index < 0 || index >= len)
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: %s slice %lld is out of range (0 .. %lld)", source,
                       i3_axis_name(axis), (long long)index, (long long)len - 1);
    return I3RT_OK;
}

static i3rt_status submit(i3_case *c, i3_axis axis, int64_t index, const int32_t *labels, int64_t rows,
                          int64_t cols, const char *source) {
    I3_TRY(check_slice(c, axis, index, source));
    if (!labels) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: no labels", source);
    int64_t want_rows, want_cols;
    i3_slice_dims(axis, c->d, c->h, c->w, &want_rows, &want_cols);
    if (rows != want_rows || cols != want_cols)
        return i3_fail(c->ctx, I3RT_ERR_SHAPE, "%s: %s slices of this volume are %lld rows x %lld columns, not %lld x %lld",
                       source, i3_axis_name(axis), (long long)want_rows, (long long)want_cols, (long long)rows,
                       (long long)cols);
    I3_TRY(check_labels(c, labels, rows, cols, source));
    record(c, axis, index, labels);
    return I3RT_OK;
}

i3rt_status i3_case_submit(i3_case *c, i3_axis axis, int64_t index, const int32_t *labels, int64_t rows,
                           int64_t cols, const char *source) {
    TIMED(c, I3_STAGE_CORRECTIONS, submit(c, axis, index, labels, rows, cols, source ? source : "correction"));
}

/* Converts label values read as floats; returns the index of the first one that is not a whole
 * number (then nothing after it is converted), or -1. */
static int64_t whole_labels(const float *x, int64_t n, int32_t *labels) {
    for (int64_t i = 0; i < n; i++) {
        if (x[i] != nearbyintf(x[i]) || fabsf(x[i]) > 1e9f) return i;
        labels[i] = (int32_t)x[i];
    }
    return -1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Labels of a corrected slice from a NIfTI: the slice itself (one voxel thick along the axis) or the
 * whole grid; values must be whole numbers. *labels is malloc'ed [rows, cols] of the slice. */
static i3rt_status read_nifti_slice(i3_case *c, i3_axis axis, int64_t index, const char *path, int32_t **labels,
                                    int64_t *rows, int64_t *cols) {
    i3_volume v;
    I3_TRY(i3_volume_read(c->ctx, path, &v));
    int64_t thin[3] = {c->d, c->h, c->w};
    thin[axis] = 1;
    const int whole = v.d == c->d && v.h == c->h && v.w == c->w;
    const int slice = v.d == thin[0] && v.h == thin[1] && v.w == thin[2];
    i3rt_status st = I3RT_OK;
    if (v.channels != 1 || (!whole && !slice))
        st = i3_fail(c->ctx, I3RT_ERR_SHAPE,
                     "%s: %lld x %lld x %lld x %lld voxels (x y z channels); a %s slice of this case is %lld x %lld x %lld "
                     "(or the whole grid %lld x %lld x %lld)", path, (long long)v.w, (long long)v.h, (long long)v.d,
                     (long long)v.channels, i3_axis_name(axis), (long long)thin[2], (long long)thin[1],
                     (long long)thin[0], (long long)c->w, (long long)c->h, (long long)c->d);
    i3_slice_dims(axis, c->d, c->h, c->w, rows, cols);
    float *plane = NULL;
    *labels = NULL;
    if (st == I3RT_OK) {
        plane = i3_malloc(c->ctx, (size_t)(*rows * *cols) * sizeof(float), path);
        *labels = i3_malloc(c->ctx, (size_t)(*rows * *cols) * sizeof(int32_t), path);
        if (!plane || !*labels) st = I3RT_ERR_OUT_OF_MEMORY;
    }
    if (st == I3RT_OK) {
        if (whole) i3_slice_get(v.data, sizeof(float), c->d, c->h, c->w, axis, index, plane);
        else memcpy(plane, v.data, (size_t)(*rows * *cols) * sizeof(float));
        const int64_t bad = whole_labels(plane, *rows * *cols, *labels);
        if (bad >= 0)
            st = i3_fail(c->ctx, I3RT_ERR_FORMAT, "%s: value %g at row %lld column %lld is not a label", path,
                         plane[bad], (long long)(bad / *cols), (long long)(bad % *cols));
    }
    free(plane);
    i3_volume_free(&v);
    if (st != I3RT_OK) {
        free(*labels);
        *labels = NULL;
    }
    return st;
}

static i3rt_status submit_file(i3_case *c, i3_axis axis, int64_t index, const char *path) {
    if (!path) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: no correction file given");
    int32_t *labels = NULL;
    int64_t rows = 0, cols = 0;
    if (ends_with(path, ".png") || ends_with(path, ".PNG")) {
        I3_TRY(i3_png_read_labels(c->ctx, path, &labels, &rows, &cols));
        const i3rt_status st = check_labels(c, labels, rows, cols, path);  /* in the PNG's own rows */
        if (st != I3RT_OK) {
            free(labels);
            return st;
        }
        i3_plane_flip_rows(labels, sizeof(int32_t), rows, cols);  /* PNGs show the highest row on top */
    } else if (ends_with(path, ".nii") || ends_with(path, ".nii.gz")) {
        I3_TRY(check_slice(c, axis, index, path));  /* a whole-grid file is indexed by it */
        I3_TRY(read_nifti_slice(c, axis, index, path, &labels, &rows, &cols));
    } else {
        return i3_fail(c->ctx, I3RT_ERR_UNSUPPORTED, "%s: a correction must be a .png, .nii or .nii.gz file", path);
    }
    i3rt_status st = submit(c, axis, index, labels, rows, cols, path);
    free(labels);
    return st;
}

i3rt_status i3_case_submit_file(i3_case *c, i3_axis axis, int64_t index, const char *path) {
    TIMED(c, I3_STAGE_CORRECTIONS, submit_file(c, axis, index, path));
}

/* Finds the last "_<axis>_<digits>" in the file's base name. */
static int parse_slice_name(const char *path, i3_axis *axis, int64_t *index) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int found = 0;
    for (const char *p = base; *p; p++) {
        if (*p != '_') continue;
        for (int a = 0; a < 3; a++) {
            const size_t k = strlen(i3_axis_name(a));
            if (strncmp(p + 1, i3_axis_name(a), k) != 0 || p[1 + k] != '_' || !isdigit((unsigned char)p[2 + k]))
                continue;
            char *end;
            const long long v = strtoll(p + 2 + k, &end, 10);
            if (*end != '_' && *end != '.') continue;
            *axis = (i3_axis)a;
            *index = v;
            found = 1;
        }
    }
    return found;
}

i3rt_status i3_case_submit_named_file(i3_case *c, const char *path) {
    if (!path) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: no correction file given");
    i3_axis axis;
    int64_t index;
    if (!parse_slice_name(path, &axis, &index))
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "%s: the name does not say which slice it is (expected ..._<axial|coronal|sagittal>_<index>.png "
                       "or .nii.gz)", path);
    return i3_case_submit_file(c, axis, index, path);
}

/* The ground truth of every recommended slice, all checked before any is recorded. */
static i3rt_status simulate_expert(i3_case *c, const int32_t *truth, const char *source) {
    if (c->n_slices == 0)
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: no recommended slices for the simulated expert");
    if (!truth) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: no ground truth", source);
    const int64_t plane = largest_plane(c);
    int32_t *planes = i3_malloc(c->ctx, (size_t)(plane * c->n_slices) * sizeof(int32_t), "ground-truth slices");
    if (!planes) return I3RT_ERR_OUT_OF_MEMORY;
    i3rt_status st = I3RT_OK;
    for (int i = 0; i < c->n_slices && st == I3RT_OK; i++) {
        const i3_slice *s = &c->slices[i];
        int64_t rows, cols;
        i3_slice_dims(s->axis, c->d, c->h, c->w, &rows, &cols);
        i3_slice_get(truth, sizeof(int32_t), c->d, c->h, c->w, s->axis, s->index, planes + i * plane);
        char where[256];
        snprintf(where, sizeof where, "%s (%s slice %lld)", source, i3_axis_name(s->axis), (long long)s->index);
        st = check_labels(c, planes + i * plane, rows, cols, where);
    }
    for (int i = 0; i < c->n_slices && st == I3RT_OK; i++) record(c, c->slices[i].axis, c->slices[i].index, planes + i * plane);
    free(planes);
    return st;
}

i3rt_status i3_case_simulate_expert(i3_case *c, const int32_t *ground_truth, const char *source) {
    TIMED(c, I3_STAGE_CORRECTIONS, simulate_expert(c, ground_truth, source ? source : "ground truth"));
}

/* The ground truth from a label NIfTI on the image's grid and geometry. */
static i3rt_status simulate_expert_file(i3_case *c, const char *path) {
    if (!path) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: no ground-truth file given");
    i3_volume v;
    I3_TRY(i3_volume_read(c->ctx, path, &v));
    i3rt_status st = I3RT_OK;
    if (v.channels != 1 || v.d != c->d || v.h != c->h || v.w != c->w)
        st = i3_fail(c->ctx, I3RT_ERR_SHAPE, "%s: %lld x %lld x %lld x %lld voxels (x y z channels); the image is %lld x "
                     "%lld x %lld", path, (long long)v.w, (long long)v.h, (long long)v.d, (long long)v.channels,
                     (long long)c->w, (long long)c->h, (long long)c->d);
    if (st == I3RT_OK) st = i3_volume_geometry_check(c->ctx, &v.geometry, path, &c->image.geometry, "the image");
    int32_t *labels = st == I3RT_OK ? i3_malloc(c->ctx, (size_t)c->voxels * sizeof(int32_t), path) : NULL;
    if (st == I3RT_OK && !labels) st = I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK) {
        const int64_t bad = whole_labels(v.data, c->voxels, labels);
        if (bad >= 0)
            st = i3_fail(c->ctx, I3RT_ERR_FORMAT, "%s: value %g at voxel (x %lld, y %lld, z %lld) is not a label", path,
                         v.data[bad], (long long)(bad % c->w), (long long)(bad / c->w % c->h),
                         (long long)(bad / (c->w * c->h)));
    }
    if (st == I3RT_OK) st = simulate_expert(c, labels, path);
    free(labels);
    i3_volume_free(&v);
    return st;
}

i3rt_status i3_case_simulate_expert_file(i3_case *c, const char *path) {
    TIMED(c, I3_STAGE_CORRECTIONS, simulate_expert_file(c, path));
}

const i3_slice *i3_case_corrected_slices(const i3_case *c, int *n) {
    *n = c->n_corrected;
    return c->corrected;
}

/* ---- stage 4: refinement input -------------------------------------------------------------------- */

static i3rt_status refinement_input(i3_case *c, float unannotated, float **out) {
    *out = NULL;
    if (!isfinite(unannotated))
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: the unannotated value %g is not finite", unannotated);
    const int64_t channels = c->image.channels;
    float *x = i3_malloc(c->ctx, (size_t)((channels + 1) * c->voxels) * sizeof(float), "refinement input");
    if (!x) return I3RT_ERR_OUT_OF_MEMORY;
    memcpy(x, c->image.data, (size_t)(channels * c->voxels) * sizeof(float));
    float *guide = x + channels * c->voxels;
    for (int64_t i = 0; i < c->voxels; i++) guide[i] = c->corrections[i] >= 0 ? (float)c->corrections[i] : unannotated;
    *out = x;
    return I3RT_OK;
}

i3rt_status i3_case_refinement_input(i3_case *c, float unannotated, float **out) {
    TIMED(c, I3_STAGE_REFINE_INPUT, refinement_input(c, unannotated, out));
}

/* ---- stage 4: refinement ------------------------------------------------------------------------- */

i3rt_status i3_case_load_refinement_model(i3_case *c, const char *model_dir, const int *folds, int n_folds) {
    if (!model_dir) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: no refinement model folder given");
    i3_predictor *p;
    I3_TRY(i3_predictor_load(c->ctx, model_dir, folds, n_folds, &p));
    const i3_predictor_info *info = i3_predictor_get_info(p);
    i3rt_status st = check_plain_model(c, model_dir, info);
    if (st == I3RT_OK && info->channels != c->image.channels + 1)
        st = i3_fail(c->ctx, I3RT_ERR_SHAPE,
                     "%s: the refinement model takes %d input channels; this case needs %lld (the image's %lld + the "
                     "corrected slices)", model_dir, info->channels, (long long)c->image.channels + 1,
                     (long long)c->image.channels);
    else if (st == I3RT_OK && info->num_classes != c->num_classes)
        st = i3_fail(c->ctx, I3RT_ERR_SHAPE, "%s: the refinement model has %d classes, the case has %d", model_dir,
                     info->num_classes, c->num_classes);
    if (st != I3RT_OK) {
        i3_predictor_free(p);
        return st;
    }
    i3_predictor_free(c->refinement_model);
    c->refinement_model = p;
    return I3RT_OK;
}

/* Predicts on the refinement input (image channels + the corrected-slice channel, on the image's
 * grid and geometry); the previous refined result is replaced only on success. */
static i3rt_status refine(i3_case *c, float *input, const i3_predict_options *options) {
    i3_predict_options o;
    if (options) o = *options;
    else i3_predict_options_default(&o);
    o.times = &c->refine_times;
    i3_volume x = c->image;
    x.channels = c->image.channels + 1;
    x.data = input;
    int32_t *labels = i3_malloc(c->ctx, (size_t)c->voxels * sizeof(int32_t), "refined segmentation");
    if (!labels) return I3RT_ERR_OUT_OF_MEMORY;
    const i3rt_status st = i3_predict_case(c->refinement_model, &x, &o, labels, NULL);
    if (st != I3RT_OK) {
        free(labels);
        return st;
    }
    free(c->refined);
    c->refined = labels;
    return I3RT_OK;
}

i3rt_status i3_case_refine(i3_case *c, const i3_predict_options *options) {
    if (!c->refinement_model)
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "i3deep: refining needs a refinement model; none is loaded");
    float *input;
    I3_TRY(i3_case_refinement_input(c, 0.0f, &input));  /* the paper's encoding; its own stage's time */
    const double t0 = i3_now_seconds();
    const i3rt_status st = refine(c, input, options);
    c->seconds[I3_STAGE_REFINE] += i3_now_seconds() - t0;
    free(input);
    return st;
}

double i3_case_waiting_seconds(const i3_case *c) {
    return c->seconds[I3_STAGE_CORRECTIONS] + c->seconds[I3_STAGE_REFINE_INPUT] + c->seconds[I3_STAGE_REFINE];
}

i3rt_status i3_case_save_segmentation(i3_case *c, const char *path, int refined) {
    const int32_t *labels = refined ? c->refined : i3_case_presegmentation(c);
    if (!path) return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3deep: no path to save the segmentation to");
    if (!labels)
        return i3_fail(c->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: the case has no %s", path,
                       refined ? "refined segmentation yet (refine first)" : "pre-segmentation yet (compute the uncertainty first)");
    i3_volume_geometry g = c->image.geometry;
    g.size[0] = c->w, g.size[1] = c->h, g.size[2] = c->d;  /* the image's own grid, whatever the caller filled in */
    return i3_volume_write_labels(c->ctx, path, &g, labels);  /* temporary file + rename: never partial */
}

/* ---- evaluation ----------------------------------------------------------------------------------- */

void i3_dice_per_class(const int32_t *a, const int32_t *b, int64_t n, int num_classes, double *dice) {
    int64_t *count = calloc((size_t)num_classes * 3, sizeof *count);  /* |A_k|, |B_k|, |A_k and B_k| */
    for (int k = 0; k < num_classes; k++) dice[k] = NAN;
    if (!count) return;
    for (int64_t i = 0; i < n; i++) {
        const int in_a = a[i] >= 0 && a[i] < num_classes, in_b = b[i] >= 0 && b[i] < num_classes;
        if (in_a) count[3 * a[i]]++;
        if (in_b) count[3 * b[i] + 1]++;
        if (in_a && a[i] == b[i]) count[3 * a[i] + 2]++;
    }
    for (int k = 0; k < num_classes; k++)
        if (count[3 * k] + count[3 * k + 1] > 0)
            dice[k] = 2.0 * (double)count[3 * k + 2] / (double)(count[3 * k] + count[3 * k + 1]);
    free(count);
}

double i3_annotation_ratio(int n_slices, const int32_t *ground_truth, int64_t d, int64_t h, int64_t w) {
    int64_t foreground = 0;
    for (int64_t z = 0; z < d; z++) {
        const int32_t *slice = ground_truth + z * h * w;
        int64_t i = 0;
        while (i < h * w && slice[i] <= 0) i++;
        foreground += i < h * w;
    }
    return foreground ? (double)n_slices / (double)foreground : 0.0;
}

/* ---- results -------------------------------------------------------------------------------------- */

const float *i3_case_mean_probabilities(const i3_case *c) { return c->members ? c->mean_probs : NULL; }
const float *i3_case_entropy(const i3_case *c) { return c->uncertainty_members ? c->entropy : NULL; }
const float *i3_case_max_probability(const i3_case *c) { return c->uncertainty_members ? c->max_prob : NULL; }
const int32_t *i3_case_presegmentation(const i3_case *c) { return c->uncertainty_members ? c->preseg : NULL; }
const int32_t *i3_case_corrections(const i3_case *c) { return c->corrections; }
const int32_t *i3_case_refined(const i3_case *c) { return c->refined; }
const i3_volume *i3_case_image(const i3_case *c) { return &c->image; }
int i3_case_members(const i3_case *c) { return c->members; }
int i3_case_num_classes(const i3_case *c) { return c->num_classes; }
i3_predict_times i3_case_refine_times(const i3_case *c) { return c->refine_times; }

double i3_case_stage_seconds(const i3_case *c, i3_stage stage) {
    return (unsigned)stage < I3_STAGE_COUNT ? c->seconds[stage] : 0.0;
}
