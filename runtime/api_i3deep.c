/* The public i3Deep API (include/i3rt.h): an i3rt_case handle over the case of runtime/i3deep.h. This
 * file only checks the caller's arguments, reads the image files and translates types; the stages are
 * i3deep.c's. */
#include "i3deep.h"

#include <stdlib.h>
#include <string.h>

_Static_assert((int)I3RT_STAGE_COUNT == (int)I3_STAGE_COUNT && (int)I3RT_STAGE_REFINE == (int)I3_STAGE_REFINE &&
                   (int)I3RT_STAGE_CORRECTIONS == (int)I3_STAGE_CORRECTIONS,
               "i3rt_stage must number the stages as i3_stage does");
_Static_assert((int)I3RT_AXIAL == (int)I3_AXIAL && (int)I3RT_CORONAL == (int)I3_CORONAL &&
                   (int)I3RT_SAGITTAL == (int)I3_SAGITTAL,
               "i3rt_axis must number the axes as i3_axis does");

struct i3rt_case {
    i3_ctx *ctx;
    i3_case *c;
};

void i3rt_recommend_params_default(i3rt_recommend_params *params) {
    if (!params) return;
    const i3_slice_select_params d = I3_SLICE_SELECT_DEFAULTS;
    *params = (i3rt_recommend_params){d.min_dist, d.min_uncert, d.max_slices};
}

const char *i3rt_stage_name(i3rt_stage stage) { return i3_stage_name((i3_stage)stage); }

i3rt_status i3rt_case_open(i3rt_context *ctx, const char *const *image_paths, int n_paths, int num_classes,
                           i3rt_case **out) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (!out) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_case_open: NULL output");
    *out = NULL;
    if (!image_paths || n_paths < 1 || n_paths > I3_MAX_CHANNELS)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_case_open: %d image files (1 .. %d, one per channel)",
                       image_paths ? n_paths : 0, I3_MAX_CHANNELS);
    for (int i = 0; i < n_paths; i++)
        if (!image_paths[i]) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_case_open: image file %d is NULL", i);
    i3rt_case *h = i3_calloc(ctx, 1, sizeof *h, "the case");
    if (!h) return I3RT_ERR_OUT_OF_MEMORY;
    h->ctx = ctx;
    i3_volume image;
    i3rt_status st = i3_volume_read_channels(ctx, image_paths, n_paths, &image);
    if (st == I3RT_OK) {
        st = i3_case_open(ctx, &image, num_classes, &h->c);
        i3_volume_free(&image);
    }
    if (st != I3RT_OK) {
        free(h);
        return st;
    }
    *out = h;
    return I3RT_OK;
}

void i3rt_case_free(i3rt_case *h) {
    if (!h) return;
    i3_case_free(h->c);
    free(h);
}

i3rt_status i3rt_case_get_shape(const i3rt_case *h, int64_t shape[3]) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    if (!shape) return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_case_get_shape: NULL shape");
    const i3_volume *im = i3_case_image(h->c);
    shape[0] = im->d, shape[1] = im->h, shape[2] = im->w;
    return I3RT_OK;
}

i3rt_status i3rt_case_add_model(i3rt_case *h, const char *model_dir, const int *folds, int n_folds,
                                int use_mirroring) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    i3_predict_options o;
    i3_predict_options_default(&o);
    o.use_mirroring = use_mirroring != 0;
    return i3_case_add_model_members(h->c, model_dir, folds, n_folds, &o);
}

i3rt_status i3rt_case_compute_uncertainty(i3rt_case *h) {
    return h ? i3_case_compute_uncertainty(h->c) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_case_recommend(i3rt_case *h, const i3rt_recommend_params *params) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    if (!params) return i3_case_recommend(h->c, NULL);
    const i3_slice_select_params p = {params->min_dist, params->min_uncert, params->max_slices};
    return i3_case_recommend(h->c, &p);
}

i3rt_status i3rt_case_get_slices(const i3rt_case *h, i3rt_slice *slices, int capacity, int *n_slices) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    if (!n_slices || capacity < 0 || (capacity > 0 && !slices))
        return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "i3rt_case_get_slices: NULL count, or %d slices asked into %s", capacity, slices ? "a buffer" : "NULL");
    int n;
    const i3_slice *s = i3_case_slices(h->c, &n);
    for (int i = 0; i < n && i < capacity; i++)
        slices[i] = (i3rt_slice){(i3rt_axis)s[i].axis, s[i].index, s[i].sum, s[i].relative};
    *n_slices = n;
    return I3RT_OK;
}

i3rt_status i3rt_case_export(i3rt_case *h, const char *dir, const char *name) {
    return h ? i3_case_export(h->c, dir, name) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_case_submit(i3rt_case *h, i3rt_axis axis, int64_t index, const int32_t *labels, int64_t rows,
                             int64_t cols) {
    return h ? i3_case_submit(h->c, (i3_axis)axis, index, labels, rows, cols, "i3rt_case_submit")
             : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_case_submit_file(i3rt_case *h, const char *path) {
    return h ? i3_case_submit_named_file(h->c, path) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_case_simulate_expert(i3rt_case *h, const int32_t *ground_truth) {
    return h ? i3_case_simulate_expert(h->c, ground_truth, "i3rt_case_simulate_expert") : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_case_simulate_expert_file(i3rt_case *h, const char *ground_truth_path) {
    return h ? i3_case_simulate_expert_file(h->c, ground_truth_path) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_case_load_refinement_model(i3rt_case *h, const char *model_dir, const int *folds, int n_folds) {
    return h ? i3_case_load_refinement_model(h->c, model_dir, folds, n_folds) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_case_refine(i3rt_case *h, int use_mirroring) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    i3_predict_options o;
    i3_predict_options_default(&o);
    o.use_mirroring = use_mirroring != 0;
    return i3_case_refine(h->c, &o);
}

i3rt_status i3rt_case_get_segmentation(const i3rt_case *h, int refined, int32_t *labels, int64_t n_voxels) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    const i3_volume *im = i3_case_image(h->c);
    const int64_t voxels = im->d * im->h * im->w;
    if (!labels || n_voxels != voxels)
        return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "i3rt_case_get_segmentation: a buffer of %lld labels (d x h x w = %lld x %lld x %lld) is needed, "
                       "got %s of %lld", (long long)voxels, (long long)im->d, (long long)im->h, (long long)im->w,
                       labels ? "one" : "NULL", (long long)n_voxels);
    const int32_t *seg = refined ? i3_case_refined(h->c) : i3_case_presegmentation(h->c);
    if (!seg)
        return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_case_get_segmentation: the case has no %s",
                       refined ? "refined segmentation yet (refine first)" : "pre-segmentation yet (compute the uncertainty first)");
    memcpy(labels, seg, (size_t)voxels * sizeof *labels);
    return I3RT_OK;
}

i3rt_status i3rt_case_save_segmentation(i3rt_case *h, const char *path, int refined) {
    return h ? i3_case_save_segmentation(h->c, path, refined) : I3RT_ERR_INVALID_ARGUMENT;
}

double i3rt_case_stage_seconds(const i3rt_case *h, i3rt_stage stage) {
    return h ? i3_case_stage_seconds(h->c, (i3_stage)stage) : 0.0;
}

double i3rt_case_waiting_seconds(const i3rt_case *h) { return h ? i3_case_waiting_seconds(h->c) : 0.0; }
