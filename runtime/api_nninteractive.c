/* The public nnInteractive session API (include/i3rt.h). Placeholder while runtime/nninteractive.c is
 * written: every call fails with I3RT_ERR_UNSUPPORTED. */
#include "core.h"

#include <stdlib.h>

struct i3rt_ni_session {
    i3_ctx *ctx;
};

static i3rt_status not_yet(const i3rt_ni_session *s, const char *fn) {
    return i3_fail(s ? s->ctx : NULL, I3RT_ERR_UNSUPPORTED, "%s: the nnInteractive session is not built yet", fn);
}

i3rt_status i3rt_ni_session_create(i3rt_context *ctx, const char *model_dir, int fold, i3rt_ni_session **out) {
    (void)model_dir, (void)fold;
    if (out) *out = NULL;
    return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "i3rt_ni_session_create: the nnInteractive session is not built yet");
}
void i3rt_ni_session_free(i3rt_ni_session *s) { free(s); }
const char *i3rt_ni_capabilities_json(const i3rt_ni_session *s) { (void)s; return "{}"; }
i3rt_status i3rt_ni_set_image(i3rt_ni_session *s, const float *image, const int64_t shape[3], const double spacing[3]) {
    (void)image, (void)shape, (void)spacing;
    return not_yet(s, "i3rt_ni_set_image");
}
i3rt_status i3rt_ni_set_target_buffer(i3rt_ni_session *s, uint8_t *target, const int64_t shape[3]) {
    (void)target, (void)shape;
    return not_yet(s, "i3rt_ni_set_target_buffer");
}
i3rt_status i3rt_ni_set_do_autozoom(i3rt_ni_session *s, int do_autozoom) {
    (void)do_autozoom;
    return not_yet(s, "i3rt_ni_set_do_autozoom");
}
i3rt_status i3rt_ni_reset_interactions(i3rt_ni_session *s) { return not_yet(s, "i3rt_ni_reset_interactions"); }
i3rt_status i3rt_ni_undo(i3rt_ni_session *s, int *undone, i3rt_box *changed) {
    (void)undone, (void)changed;
    return not_yet(s, "i3rt_ni_undo");
}
i3rt_status i3rt_ni_add_point(i3rt_ni_session *s, const int64_t coords[3], int positive, int run_prediction,
                              i3rt_ni_result *result) {
    (void)coords, (void)positive, (void)run_prediction, (void)result;
    return not_yet(s, "i3rt_ni_add_point");
}
i3rt_status i3rt_ni_add_box(i3rt_ni_session *s, const i3rt_box *box, int positive, int run_prediction,
                            i3rt_ni_result *result) {
    (void)box, (void)positive, (void)run_prediction, (void)result;
    return not_yet(s, "i3rt_ni_add_box");
}
i3rt_status i3rt_ni_add_scribble(i3rt_ni_session *s, const uint8_t *mask, const i3rt_box *region, int positive,
                                 int run_prediction, i3rt_ni_result *result) {
    (void)mask, (void)region, (void)positive, (void)run_prediction, (void)result;
    return not_yet(s, "i3rt_ni_add_scribble");
}
i3rt_status i3rt_ni_add_lasso(i3rt_ni_session *s, const uint8_t *mask, const i3rt_box *region, int positive,
                              int run_prediction, i3rt_ni_result *result) {
    (void)mask, (void)region, (void)positive, (void)run_prediction, (void)result;
    return not_yet(s, "i3rt_ni_add_lasso");
}
i3rt_status i3rt_ni_add_initial_seg(i3rt_ni_session *s, const uint8_t *mask, int run_prediction,
                                    i3rt_ni_result *result) {
    (void)mask, (void)run_prediction, (void)result;
    return not_yet(s, "i3rt_ni_add_initial_seg");
}
i3rt_status i3rt_ni_predict(i3rt_ni_session *s, int force_full_refine, i3rt_ni_result *result) {
    (void)force_full_refine, (void)result;
    return not_yet(s, "i3rt_ni_predict");
}
i3rt_status i3rt_ni_get_timing(const i3rt_ni_session *s, i3rt_ni_timing *out) {
    (void)out;
    return not_yet(s, "i3rt_ni_get_timing");
}
