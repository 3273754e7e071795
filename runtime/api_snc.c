/* The public Slice-and-Conquer API (include/i3rt.h): an i3rt_snc_session handle over the session of
 * runtime/snc_session.h. This file checks the caller's buffers, reads files and translates types; the
 * steps are snc_session.c's and snc_simulate.c's. */
#include "snc_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)I3RT_SNC_STAGE_COUNT == (int)I3_SNC_STAGE_COUNT &&
                   (int)I3RT_SNC_STAGE_GUIDED == (int)I3_SNC_STAGE_GUIDED &&
                   (int)I3RT_SNC_STAGE_EXPORT == (int)I3_SNC_STAGE_EXPORT,
               "i3rt_snc_stage must number the stages as i3_snc_stage does");

struct i3rt_snc_session {
    i3_ctx *ctx;
    i3_snc_session *s;
};

void i3rt_snc_params_default(i3rt_snc_params *params) {
    if (!params) return;
    const i3_snc_session_params d = I3_SNC_SESSION_DEFAULTS;
    *params = (i3rt_snc_params){d.recommend.tau, d.recommend.skip, d.gamma, d.postprocess, d.predictor.zoom_in,
                                d.predictor.with_flip, d.start_3d};
}

const char *i3rt_snc_stage_name(i3rt_snc_stage stage) { return i3_snc_stage_name((i3_snc_stage)stage); }

i3rt_status i3rt_snc_open(i3rt_context *ctx, const char *image_path, const i3rt_snc_params *params,
                          i3rt_snc_session **out) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (!image_path || !out) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_snc_open: NULL image path or output");
    *out = NULL;
    i3_snc_session_params p = I3_SNC_SESSION_DEFAULTS;
    if (params) {
        p.recommend.tau = params->tau, p.recommend.skip = params->skip;
        p.gamma = params->gamma, p.postprocess = params->postprocess != 0;
        p.predictor.zoom_in = params->zoom_in != 0, p.predictor.with_flip = params->with_flip != 0;
        p.start_3d = params->start_3d != 0;
    }
    i3rt_snc_session *h = i3_calloc(ctx, 1, sizeof *h, "the SnC session");
    if (!h) return I3RT_ERR_OUT_OF_MEMORY;
    h->ctx = ctx;
    i3_volume image;
    i3rt_status st = i3_volume_read(ctx, image_path, &image);
    if (st == I3RT_OK) {
        st = i3_snc_session_open(ctx, &image, &p, &h->s);
        i3_volume_free(&image);
        if (st != I3RT_OK) { /* name the file in the session's message */
            char message[I3_ERROR_MAX];
            snprintf(message, sizeof message, "%s", i3rt_context_error(ctx));
            i3_fail(ctx, st, "%s: %s", image_path, message);
        }
    }
    if (st != I3RT_OK) {
        free(h);
        return st;
    }
    *out = h;
    return I3RT_OK;
}

void i3rt_snc_free(i3rt_snc_session *h) {
    if (!h) return;
    i3_snc_session_free(h->s);
    free(h);
}

i3rt_status i3rt_snc_get_shape(const i3rt_snc_session *h, int64_t shape[3]) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    if (!shape) return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_snc_get_shape: NULL shape");
    const i3_volume *im = i3_snc_session_image(h->s);
    shape[0] = im->d, shape[1] = im->h, shape[2] = im->w;
    return I3RT_OK;
}

i3rt_status i3rt_snc_load_2d(i3rt_snc_session *h, const char *path) {
    return h ? i3_snc_session_load_net2d(h->s, path) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_snc_load_3d(i3rt_snc_session *h, const char *path) {
    return h ? i3_snc_session_load_net3d(h->s, path) : I3RT_ERR_INVALID_ARGUMENT;
}

/* Copies the slice's 2D mask into the caller's buffer of n_pixels. */
static i3rt_status copy_slice_mask(i3rt_snc_session *h, i3rt_axis axis, int64_t index, uint8_t *mask, int64_t n_pixels,
                                   const char *what) {
    int64_t rows, cols;
    const uint8_t *m = i3_snc_session_slice_mask(h->s, (i3_axis)axis, index, &rows, &cols);
    if (!m) return I3RT_ERR_INVALID_ARGUMENT;
    if (n_pixels != rows * cols)
        return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: the %s slice has %lld x %lld pixels, the buffer %lld",
                       what, i3_axis_name((i3_axis)axis), (long long)rows, (long long)cols, (long long)n_pixels);
    memcpy(mask, m, (size_t)n_pixels);
    return I3RT_OK;
}

/* The slice's pixel count, or -1 for a bad axis (the session's calls name it). */
static int64_t slice_pixels(const i3rt_snc_session *h, i3rt_axis axis) {
    if ((unsigned)axis > I3RT_SAGITTAL) return -1;
    const i3_volume *im = i3_snc_session_image(h->s);
    int64_t rows, cols;
    i3_slice_dims((i3_axis)axis, im->d, im->h, im->w, &rows, &cols);
    return rows * cols;
}

i3rt_status i3rt_snc_click(i3rt_snc_session *h, i3rt_axis axis, int64_t index, double y, double x, int positive,
                           uint8_t *mask, int64_t n_pixels) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    const int64_t n = slice_pixels(h, axis);
    if (mask && n >= 0 && n_pixels != n) /* checked before the click changes anything */
        return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "i3rt_snc_click: the %s slice has %lld pixels, the mask buffer %lld",
                       i3_axis_name((i3_axis)axis), (long long)n, (long long)n_pixels);
    I3_TRY(i3_snc_session_click(h->s, (i3_axis)axis, index, y, x, positive));
    return mask ? copy_slice_mask(h, axis, index, mask, n_pixels, "i3rt_snc_click") : I3RT_OK;
}

i3rt_status i3rt_snc_begin_slice(i3rt_snc_session *h, i3rt_axis axis, int64_t index, uint8_t *mask,
                                 int64_t n_pixels) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    const int64_t n = slice_pixels(h, axis);
    if (mask && n >= 0 && n_pixels != n)
        return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "i3rt_snc_begin_slice: the %s slice has %lld pixels, the mask buffer %lld",
                       i3_axis_name((i3_axis)axis), (long long)n, (long long)n_pixels);
    I3_TRY(i3_snc_session_begin_slice(h->s, (i3_axis)axis, index));
    return mask ? copy_slice_mask(h, axis, index, mask, n_pixels, "i3rt_snc_begin_slice") : I3RT_OK;
}

i3rt_status i3rt_snc_get_slice_mask(i3rt_snc_session *h, i3rt_axis axis, int64_t index, uint8_t *mask,
                                    int64_t n_pixels) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    if (!mask) return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_snc_get_slice_mask: NULL mask");
    return copy_slice_mask(h, axis, index, mask, n_pixels, "i3rt_snc_get_slice_mask");
}

i3rt_status i3rt_snc_finish_slice(i3rt_snc_session *h, i3rt_axis axis, int64_t index, int accurate) {
    return h ? i3_snc_session_finish(h->s, (i3_axis)axis, index, accurate) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_snc_propagate(i3rt_snc_session *h) {
    return h ? i3_snc_session_propagate(h->s) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_snc_recommend(i3rt_snc_session *h, i3rt_slice *slice, int *found) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    if (!slice || !found) return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_snc_recommend: NULL output");
    i3_slice r;
    I3_TRY(i3_snc_session_recommendation(h->s, &r, found));
    if (*found) *slice = (i3rt_slice){(i3rt_axis)r.axis, r.index, r.sum, r.relative};
    return I3RT_OK;
}

i3rt_status i3rt_snc_get_mask(const i3rt_snc_session *h, uint8_t *mask, int64_t n_voxels) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    const i3_volume *im = i3_snc_session_image(h->s);
    const int64_t n = im->d * im->h * im->w;
    if (!mask || n_voxels != n)
        return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "i3rt_snc_get_mask: a buffer of %lld voxels (%lld x %lld x %lld) is needed, got %s of %lld",
                       (long long)n, (long long)im->d, (long long)im->h, (long long)im->w, mask ? "one" : "NULL",
                       (long long)n_voxels);
    memcpy(mask, i3_snc_session_mask(h->s), (size_t)n);
    return I3RT_OK;
}

i3rt_status i3rt_snc_save_mask(i3rt_snc_session *h, const char *path) {
    return h ? i3_snc_session_save_mask(h->s, path) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_snc_save_preview(i3rt_snc_session *h, i3rt_axis axis, int64_t index, const char *path) {
    return h ? i3_snc_session_save_preview(h->s, (i3_axis)axis, index, path) : I3RT_ERR_INVALID_ARGUMENT;
}

i3rt_status i3rt_snc_simulate(i3rt_snc_session *h, const uint8_t *truth, int64_t n_voxels, int iterations,
                              i3rt_snc_iteration *results, int *n_done) {
    if (!h) return I3RT_ERR_INVALID_ARGUMENT;
    const i3_volume *im = i3_snc_session_image(h->s);
    const int64_t n = im->d * im->h * im->w;
    if (!truth || n_voxels != n || !results || !n_done || iterations < 1)
        return i3_fail(h->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "i3rt_snc_simulate: a truth of %lld voxels, results for %d >= 1 iterations and n_done are "
                       "needed (got %lld voxels)", (long long)n, iterations, (long long)n_voxels);
    i3_snc_iteration *it = i3_malloc(h->ctx, (size_t)iterations * sizeof *it, "the simulation's iterations");
    if (!it) return I3RT_ERR_OUT_OF_MEMORY;
    *n_done = 0;
    i3_snc_simulate_params p = I3_SNC_SIMULATE_DEFAULTS;
    p.iterations = iterations;
    const i3rt_status st = i3_snc_simulate(h->s, truth, &p, it, n_done);
    for (int t = 0; t < *n_done; t++)
        results[t] = (i3rt_snc_iteration){(i3rt_axis)it[t].slice.axis, it[t].slice.index, it[t].start_dice,
                                          it[t].clicks, it[t].slice_dice, it[t].accurate, it[t].dice,
                                          it[t].seconds};
    free(it);
    return st;
}

double i3rt_snc_stage_seconds(const i3rt_snc_session *h, i3rt_snc_stage stage) {
    return h ? i3_snc_session_stage_seconds(h->s, (i3_snc_stage)stage) : 0.0;
}
