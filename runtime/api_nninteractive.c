/* The public nnInteractive session API (include/i3rt.h): checks the caller's pointers and hands over to
 * runtime/nninteractive.c, which holds the session. */
#include "nninteractive.h"

#include <string.h>

#define NEED(cond, fn, what)                                                                        \
    do {                                                                                            \
        if (!(cond)) return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: NULL %s", fn, what);    \
    } while (0)

i3rt_status i3rt_ni_session_create(i3rt_context *ctx, const char *model_dir, int fold, i3rt_ni_session **out) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (!model_dir || !out)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_ni_session_create: NULL model folder or output");
    return i3_ni_create(ctx, model_dir, fold, out);
}

void i3rt_ni_session_free(i3rt_ni_session *s) { i3_ni_free(s); }

const char *i3rt_ni_capabilities_json(const i3rt_ni_session *s) { return s ? s->capabilities_json : NULL; }

i3rt_status i3rt_ni_set_image(i3rt_ni_session *s, const float *image, const int64_t shape[3], const double spacing[3]) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    NEED(image && shape, "i3rt_ni_set_image", "image or shape");
    return i3_ni_set_image(s, image, shape, spacing);
}

i3rt_status i3rt_ni_set_target_buffer(i3rt_ni_session *s, uint8_t *target, const int64_t shape[3]) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    NEED(target && shape, "i3rt_ni_set_target_buffer", "buffer or shape");
    return i3_ni_set_target_buffer(s, target, shape);
}

i3rt_status i3rt_ni_set_do_autozoom(i3rt_ni_session *s, int do_autozoom) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    s->do_autozoom = do_autozoom != 0;
    return i3_ni_update_capabilities_json(s);
}

i3rt_status i3rt_ni_set_override_capability_checks(i3rt_ni_session *s, int override) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    s->override_capability_checks = override != 0;
    return I3RT_OK;
}

i3rt_status i3rt_ni_reset_interactions(i3rt_ni_session *s) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    i3_ni_reset_interactions(s);
    return I3RT_OK;
}

i3rt_status i3rt_ni_undo(i3rt_ni_session *s, int *undone, i3rt_box *changed) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    NEED(undone, "i3rt_ni_undo", "undone");
    return i3_ni_undo(s, undone, changed);
}

i3rt_status i3rt_ni_add_point(i3rt_ni_session *s, const int64_t coords[3], int positive, int run_prediction,
                              i3rt_ni_result *result) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    NEED(coords, "i3rt_ni_add_point", "coordinates");
    return i3_ni_add_point(s, coords, positive != 0, run_prediction != 0, result);
}

i3rt_status i3rt_ni_add_box(i3rt_ni_session *s, const i3rt_box *box, int positive, int run_prediction,
                            i3rt_ni_result *result) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    NEED(box, "i3rt_ni_add_box", "box");
    return i3_ni_add_box(s, box, positive != 0, run_prediction != 0, result);
}

i3rt_status i3rt_ni_add_scribble(i3rt_ni_session *s, const uint8_t *mask, const i3rt_box *region, int positive,
                                 int run_prediction, i3rt_ni_result *result) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    NEED(mask, "i3rt_ni_add_scribble", "mask");
    return i3_ni_add_mask(s, I3_NI_SCRIBBLE, mask, region, positive != 0, run_prediction != 0, result);
}

i3rt_status i3rt_ni_add_lasso(i3rt_ni_session *s, const uint8_t *mask, const i3rt_box *region, int positive,
                              int run_prediction, i3rt_ni_result *result) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    NEED(mask, "i3rt_ni_add_lasso", "mask");
    return i3_ni_add_mask(s, I3_NI_LASSO, mask, region, positive != 0, run_prediction != 0, result);
}

i3rt_status i3rt_ni_add_initial_seg(i3rt_ni_session *s, const uint8_t *mask, int run_prediction,
                                    i3rt_ni_result *result) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    NEED(mask, "i3rt_ni_add_initial_seg", "mask");
    return i3_ni_add_initial_seg(s, mask, run_prediction != 0, result);
}

i3rt_status i3rt_ni_predict(i3rt_ni_session *s, int force_full_refine, i3rt_ni_result *result) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    return i3_ni_predict(s, force_full_refine != 0, result);
}

i3rt_status i3rt_ni_get_timing(const i3rt_ni_session *s, i3rt_ni_timing *out) {
    if (!s || !out) return I3RT_ERR_INVALID_ARGUMENT;
    *out = s->timing;
    return I3RT_OK;
}
