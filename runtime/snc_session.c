/* Slice-and-Conquer's session: see snc_session.h and docs/snc.md ("session and CLI"). */
#include "snc_session.h"
#include "png_export.h"
#include "snc_guided.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One clicked slice: its RITM predictor, the clicks it took and, once finished, the accepted mask. */
typedef struct {
    i3_axis axis;
    int64_t index, rows, cols;
    i3_snc_predictor *predictor;
    i3_snc_click *clicks;
    int n_clicks, cap_clicks;
    uint8_t *accepted; /* [rows, cols], valid when finished */
    int finished, accurate;
} slice_record;

struct i3_snc_session {
    i3_ctx *ctx;
    i3_snc_session_params params;
    i3_volume image; /* windowed to [0, 1], one channel */
    int has_net2d, has_net3d;
    i3_snc_net net2d;
    i3_snc_guided_net net3d;
    slice_record *slices;
    int n_slices, cap_slices;
    float *probs;    /* [d, h, w], the 3D prediction after post-processing */
    uint8_t *mask;   /* [d, h, w], probs > 0.5 */
    int iterations, has_recommendation;
    i3_slice recommendation;
    double seconds[I3_SNC_STAGE_COUNT];
};

static const char *const STAGE_NAMES[I3_SNC_STAGE_COUNT] = {"open", "load", "click", "guided-3d",
                                                             "recommend", "postprocess", "export"};

const char *i3_snc_stage_name(i3_snc_stage stage) {
    return (unsigned)stage < I3_SNC_STAGE_COUNT ? STAGE_NAMES[stage] : "?";
}

static int64_t voxels(const i3_snc_session *s) { return s->image.d * s->image.h * s->image.w; }

void i3_snc_window(const float *image, int64_t n, float *out) {
    float lo, hi;
    i3_png_window(image, n, &lo, &hi);
    for (int64_t i = 0; i < n; i++) {
        const float v = (image[i] - lo) / (hi - lo);
        out[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
}

static i3rt_status check_params(i3_ctx *ctx, const i3_snc_session_params *p) {
    if (!(p->gamma >= 0.0 && p->gamma <= 1.0))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC session: gamma %g is not in [0, 1]", p->gamma);
    if (!(p->recommend.tau >= 0.0 && p->recommend.tau <= 1.0) || p->recommend.skip < 0)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC session: tau %g must be in [0, 1] and skip %d >= 0",
                       p->recommend.tau, p->recommend.skip);
    return I3RT_OK;
}

i3rt_status i3_snc_session_open(i3_ctx *ctx, const i3_volume *image, const i3_snc_session_params *params,
                                i3_snc_session **out) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (!image || !out) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC session: NULL image or output");
    *out = NULL;
    const double t0 = i3_now_seconds();
    const i3_snc_session_params p = params ? *params : I3_SNC_SESSION_DEFAULTS;
    I3_TRY(check_params(ctx, &p));
    const int64_t n = image->d * image->h * image->w;
    if (!image->data || image->channels < 1 || n < 1)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC session: the image is empty (%lld x %lld x %lld voxels)",
                       (long long)image->d, (long long)image->h, (long long)image->w);
    if (image->d < 2 || image->h < 2 || image->w < 2)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "SnC session: the image is %lld x %lld x %lld voxels; every side must be >= 2 (slices of at "
                       "least 2 x 2 for the post-processing's optical flow)",
                       (long long)image->d, (long long)image->h, (long long)image->w);
    int64_t differs = 0;
    while (differs < n && image->data[differs] == image->data[0]) differs++;
    if (differs == n)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC session: the image is empty (every voxel is %g)",
                       (double)image->data[0]);
    i3_snc_session *s = i3_calloc(ctx, 1, sizeof *s, "the SnC session");
    if (!s) return I3RT_ERR_OUT_OF_MEMORY;
    s->ctx = ctx;
    s->params = p;
    s->image = (i3_volume){.channels = 1, .d = image->d, .h = image->h, .w = image->w, .geometry = image->geometry};
    s->image.data = i3_malloc(ctx, (size_t)n * sizeof(float), "the SnC image");
    s->probs = i3_calloc(ctx, (size_t)n, sizeof(float), "the SnC 3D prediction");
    s->mask = i3_calloc(ctx, (size_t)n, 1, "the SnC 3D mask");
    if (!s->image.data || !s->probs || !s->mask) {
        i3_snc_session_free(s);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    i3_snc_window(image->data, n, s->image.data); /* the first channel */
    s->seconds[I3_SNC_STAGE_OPEN] = i3_now_seconds() - t0;
    *out = s;
    return I3RT_OK;
}

static void record_free(slice_record *r) {
    i3_snc_predictor_free(r->predictor);
    free(r->clicks);
    free(r->accepted);
}

void i3_snc_session_free(i3_snc_session *s) {
    if (!s) return;
    for (int i = 0; i < s->n_slices; i++) record_free(&s->slices[i]);
    free(s->slices);
    if (s->has_net2d) i3_snc_net_free(&s->net2d);
    if (s->has_net3d && s->net3d.release) s->net3d.release(s->net3d.user);
    i3_volume_free(&s->image);
    free(s->probs);
    free(s->mask);
    free(s);
}

const i3_volume *i3_snc_session_image(const i3_snc_session *s) { return &s->image; }
const i3_snc_session_params *i3_snc_session_params_get(const i3_snc_session *s) { return &s->params; }
i3_ctx *i3_snc_session_context(const i3_snc_session *s) { return s->ctx; }
int i3_snc_session_iterations(const i3_snc_session *s) { return s->iterations; }
const uint8_t *i3_snc_session_mask(const i3_snc_session *s) { return s->mask; }
const float *i3_snc_session_probs(const i3_snc_session *s) { return s->probs; }

double i3_snc_session_stage_seconds(const i3_snc_session *s, i3_snc_stage stage) {
    return (unsigned)stage < I3_SNC_STAGE_COUNT ? s->seconds[stage] : 0.0;
}

int i3_snc_session_finished(const i3_snc_session *s) {
    int n = 0;
    for (int i = 0; i < s->n_slices; i++) n += s->slices[i].finished;
    return n;
}

/* ---- networks ---------------------------------------------------------------------------------- */

i3rt_status i3_snc_session_set_net2d(i3_snc_session *s, i3_snc_net net) {
    if (!s) {
        i3_snc_net_free(&net);
        return I3RT_ERR_INVALID_ARGUMENT;
    }
    if (!net.forward) {
        i3_snc_net_free(&net);
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC session: the 2D network has no forward function");
    }
    for (int i = 0; i < s->n_slices; i++)
        if (!s->slices[i].finished) {
            i3_snc_net_free(&net);
            return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT,
                           "SnC session: %s slice %lld is being clicked on; finish it before changing the 2D network",
                           i3_axis_name(s->slices[i].axis), (long long)s->slices[i].index);
        }
    /* ready for this volume's clicks (buffers, weights, on a device the slice sizes run), before anything changes */
    const i3rt_status st = i3_snc_net_prepare(s->ctx, &net, &s->params.predictor, s->image.d, s->image.h, s->image.w);
    if (st != I3RT_OK) {
        i3_snc_net_free(&net);
        return st;
    }
    /* finished slices keep their masks; their predictors belong to the old network */
    for (int i = 0; i < s->n_slices; i++) {
        i3_snc_predictor_free(s->slices[i].predictor);
        s->slices[i].predictor = NULL;
    }
    if (s->has_net2d) i3_snc_net_free(&s->net2d);
    s->net2d = net;
    s->has_net2d = 1;
    return I3RT_OK;
}

i3rt_status i3_snc_session_set_net3d(i3_snc_session *s, i3_snc_guided_net net) {
    if (!s || !net.predict) {
        if (net.release) net.release(net.user);
        return s ? i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC session: the 3D network has no predict function")
                 : I3RT_ERR_INVALID_ARGUMENT;
    }
    if (s->has_net3d && s->net3d.release) s->net3d.release(s->net3d.user);
    s->net3d = net;
    s->has_net3d = 1;
    return I3RT_OK;
}

i3rt_status i3_snc_session_load_net2d(i3_snc_session *s, const char *path) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    const double t0 = i3_now_seconds();
    i3_snc_net net;
    I3_TRY(i3_snc_net_load(s->ctx, path, &net));
    const i3rt_status st = i3_snc_session_set_net2d(s, net);
    s->seconds[I3_SNC_STAGE_LOAD] += i3_now_seconds() - t0;
    return st;
}

/* The guided 3D network of snc_guided.h behind the session's function table: slice clicks become voxel
 * clicks, every finished slice's mask is placed in 3D. */
typedef struct {
    i3_ctx *ctx;
    i3_snc_guided *net;
} guided_user;

/* A click (row, column) on slice `index` of `axis` as a voxel (z, y, x) (slice_select.h's planes). */
static i3_hrnet_click voxel_click(i3_axis axis, int64_t index, i3_snc_click c) {
    const float i = (float)index;
    return axis == I3_AXIAL     ? (i3_hrnet_click){i, c.y, c.x, c.positive}
           : axis == I3_CORONAL ? (i3_hrnet_click){c.y, i, c.x, c.positive}
                                : (i3_hrnet_click){c.y, c.x, i, c.positive};
}

static i3rt_status guided_predict(void *user, const float *image, const float *previous, int64_t d, int64_t h,
                                  int64_t w, const i3_snc_annotation *ann, int n_ann, float *probs) {
    guided_user *g = user;
    int n_clicks = 0;
    for (int k = 0; k < n_ann; k++) n_clicks += ann[k].n_clicks;
    i3_hrnet_click *clicks = i3_malloc(g->ctx, (size_t)(n_clicks + 1) * sizeof *clicks, "the 3D step's clicks");
    i3_snc_mask2d *masks = i3_malloc(g->ctx, (size_t)n_ann * sizeof *masks, "the 3D step's masks");
    i3rt_status st = clicks && masks ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    for (int k = 0, j = 0; st == I3RT_OK && k < n_ann; k++) {
        masks[k] = (i3_snc_mask2d){ann[k].axis, ann[k].index, ann[k].mask};
        for (int c = 0; c < ann[k].n_clicks; c++)
            clicks[j++] = voxel_click(ann[k].axis, ann[k].index, ann[k].clicks[c]);
    }
    if (st == I3RT_OK)
        st = i3_snc_guided_predict(g->net, d, h, w, image, previous, clicks, n_clicks, masks, n_ann, probs);
    free(clicks);
    free(masks);
    return st;
}

static void guided_release(void *user) {
    guided_user *g = user;
    i3_snc_guided_free(g->net);
    free(g);
}

i3rt_status i3_snc_session_load_net3d(i3_snc_session *s, const char *path) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    const double t0 = i3_now_seconds();
    guided_user *g = i3_calloc(s->ctx, 1, sizeof *g, "the guided 3D network");
    if (!g) return I3RT_ERR_OUT_OF_MEMORY;
    g->ctx = s->ctx;
    const i3rt_status st = i3_snc_guided_load(s->ctx, path, &g->net);
    if (st != I3RT_OK) {
        free(g);
        return st;
    }
    s->seconds[I3_SNC_STAGE_LOAD] += i3_now_seconds() - t0;
    return i3_snc_session_set_net3d(s, (i3_snc_guided_net){guided_predict, guided_release, g});
}

/* ---- slices and clicks --------------------------------------------------------------------------- */

static i3rt_status check_slice(const i3_snc_session *s, i3_axis axis, int64_t index, const char *what) {
    if ((unsigned)axis > I3_SAGITTAL)
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: axis %d is not axial (0), coronal (1) or sagittal (2)",
                       what, (int)axis);
    const int64_t len = i3_axis_length(axis, s->image.d, s->image.h, s->image.w);
    if (index < 0 || index >= len)
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: %s slice %lld is outside the volume (0 .. %lld)", what,
                       i3_axis_name(axis), (long long)index, (long long)len - 1);
    return I3RT_OK;
}

static slice_record *find_slice(const i3_snc_session *s, i3_axis axis, int64_t index) {
    for (int i = 0; i < s->n_slices; i++)
        if (s->slices[i].axis == axis && s->slices[i].index == index) return &s->slices[i];
    return NULL;
}

/* Room for one more slice record. */
static i3rt_status make_room(i3_snc_session *s, const char *what) {
    if (s->n_slices < s->cap_slices) return I3RT_OK;
    const int cap = s->cap_slices ? 2 * s->cap_slices : 8;
    slice_record *grown = realloc(s->slices, (size_t)cap * sizeof *grown);
    if (!grown) return i3_fail(s->ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: out of memory for %d slices", what, cap);
    s->slices = grown, s->cap_slices = cap;
    return I3RT_OK;
}

/* The slice's start (Algorithm 1's M_{t,0}^2D) into plane: the 3D probabilities' slice once a propagation
 * made them, with start_3d; 0 (plane untouched) for the empty start. The soft map, not the 3D mask,
 * because RITM's previous mask is its own probabilities (prev_prediction; iterative training feeds
 * sigmoid outputs) and the 3D step gets the same map as M_{t-1}^3D. */
static int slice_start(const i3_snc_session *s, i3_axis axis, int64_t index, float *plane) {
    if (!s->params.start_3d || s->iterations == 0) return 0;
    i3_slice_get(s->probs, sizeof(float), s->image.d, s->image.h, s->image.w, axis, index, plane);
    return 1;
}

/* The slice's predictor: the windowed plane repeated into 3 channels as the 2D network takes it, started
 * from the slice's start. */
static i3rt_status make_predictor(i3_snc_session *s, slice_record *r) {
    const int64_t n = r->rows * r->cols;
    float *rgb = i3_malloc(s->ctx, (size_t)(4 * n) * sizeof *rgb, "an SnC slice image and start");
    if (!rgb) return I3RT_ERR_OUT_OF_MEMORY;
    float *start = rgb + 3 * n;
    i3_slice_get(s->image.data, sizeof(float), s->image.d, s->image.h, s->image.w, r->axis, r->index, rgb);
    memcpy(rgb + n, rgb, (size_t)n * sizeof *rgb);
    memcpy(rgb + 2 * n, rgb, (size_t)n * sizeof *rgb);
    i3rt_status st = i3_snc_predictor_create(s->ctx, &s->net2d, rgb, r->rows, r->cols, &s->params.predictor,
                                             &r->predictor);
    if (st == I3RT_OK && slice_start(s, r->axis, r->index, start))
        st = i3_snc_predictor_set_start(r->predictor, start);
    if (st != I3RT_OK) {
        i3_snc_predictor_free(r->predictor);
        r->predictor = NULL;
    }
    free(rgb);
    return st;
}

/* The slice's record with a predictor (made from the slice's start if it has none). A new record is
 * written at s->slices[s->n_slices] with *is_new = 1: the caller counts it on success or frees it
 * (*is_new = 0 when there was no room to write one). */
static i3rt_status slice_with_predictor(i3_snc_session *s, i3_axis axis, int64_t index, const char *what,
                                        slice_record **out, int *is_new) {
    slice_record *r = find_slice(s, axis, index);
    *is_new = 0;
    if (!r) {
        I3_TRY(make_room(s, what));
        *is_new = 1;
        r = &s->slices[s->n_slices];
        *r = (slice_record){.axis = axis, .index = index};
        i3_slice_dims(axis, s->image.d, s->image.h, s->image.w, &r->rows, &r->cols);
    }
    *out = r;
    if (r->predictor) return I3RT_OK;
    const double t0 = i3_now_seconds();
    const i3rt_status st = make_predictor(s, r);
    s->seconds[I3_SNC_STAGE_CLICK] += i3_now_seconds() - t0;
    return st;
}

i3rt_status i3_snc_session_begin_slice(i3_snc_session *s, i3_axis axis, int64_t index) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    I3_TRY(check_slice(s, axis, index, "SnC begin slice"));
    if (!s->has_net2d) return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC begin slice: no 2D network loaded");
    slice_record *r;
    int is_new;
    const i3rt_status st = slice_with_predictor(s, axis, index, "SnC begin slice", &r, &is_new);
    if (st != I3RT_OK && is_new) record_free(r);
    else if (is_new) s->n_slices++;
    return st;
}

i3rt_status i3_snc_session_click(i3_snc_session *s, i3_axis axis, int64_t index, double y, double x, int positive) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    I3_TRY(check_slice(s, axis, index, "SnC click"));
    int64_t rows, cols;
    i3_slice_dims(axis, s->image.d, s->image.h, s->image.w, &rows, &cols);
    if (!(y >= 0 && y < rows && x >= 0 && x < cols))
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "SnC click (y %g, x %g) is outside %s slice %lld (%lld rows x %lld columns)", y, x,
                       i3_axis_name(axis), (long long)index, (long long)rows, (long long)cols);
    if (!s->has_net2d)
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC click: no 2D network loaded");
    slice_record *r;
    int is_new;
    i3rt_status st = slice_with_predictor(s, axis, index, "SnC click", &r, &is_new);
    if (st != I3RT_OK) {
        if (is_new) record_free(r);
        return st;
    }
    const double t0 = i3_now_seconds();
    if (r->n_clicks == r->cap_clicks) {
        const int cap = r->cap_clicks ? 2 * r->cap_clicks : 8;
        i3_snc_click *grown = realloc(r->clicks, (size_t)cap * sizeof *grown);
        if (grown) r->clicks = grown, r->cap_clicks = cap;
        else st = i3_fail(s->ctx, I3RT_ERR_OUT_OF_MEMORY, "SnC click: out of memory for %d clicks", cap);
    }
    /* a slice whose predictor is new (finished without clicks, or the 2D network changed) starts over */
    const int fresh = st == I3RT_OK && i3_snc_predictor_n_clicks(r->predictor) == 0;
    if (st == I3RT_OK) st = i3_snc_predictor_click(r->predictor, (float)y, (float)x, positive);
    s->seconds[I3_SNC_STAGE_CLICK] += i3_now_seconds() - t0;
    if (st != I3RT_OK) {
        if (is_new) record_free(r);
        return st;
    }
    if (fresh) r->n_clicks = 0;
    r->clicks[r->n_clicks++] = (i3_snc_click){(float)y, (float)x, positive != 0};
    r->finished = 0;
    if (is_new) s->n_slices++;
    return I3RT_OK;
}

const uint8_t *i3_snc_session_slice_mask(i3_snc_session *s, i3_axis axis, int64_t index, int64_t *rows,
                                         int64_t *cols) {
    if (!s || check_slice(s, axis, index, "SnC slice mask") != I3RT_OK) return NULL;
    const slice_record *r = find_slice(s, axis, index);
    if (!r) {
        i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT,
                "SnC slice mask: %s slice %lld has no mask (not begun, clicked or finished)", i3_axis_name(axis),
                (long long)index);
        return NULL;
    }
    *rows = r->rows, *cols = r->cols;
    return r->finished ? r->accepted : i3_snc_predictor_mask(r->predictor);
}

int i3_snc_session_slice_clicks(const i3_snc_session *s, i3_axis axis, int64_t index) {
    const slice_record *r = s ? find_slice(s, axis, index) : NULL;
    return r ? r->n_clicks : 0;
}

i3rt_status i3_snc_session_finish(i3_snc_session *s, i3_axis axis, int64_t index, int accurate) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    I3_TRY(check_slice(s, axis, index, "SnC finish"));
    slice_record *r = find_slice(s, axis, index);
    if (r && r->finished) {
        r->accurate = accurate != 0;
        return I3RT_OK;
    }
    if (!r) I3_TRY(make_room(s, "SnC finish"));
    slice_record fresh = {.axis = axis, .index = index};
    i3_slice_dims(axis, s->image.d, s->image.h, s->image.w, &fresh.rows, &fresh.cols);
    slice_record *t = r ? r : &fresh;
    const int64_t n = t->rows * t->cols;
    /* a slice never clicked or begun is accepted as its start thresholded as the predictor would: the 3D
     * prediction's slice, or empty (no object on it) */
    uint8_t *accepted = t->accepted ? t->accepted : i3_calloc(s->ctx, (size_t)n, 1, "an SnC mask");
    float *start = t->predictor ? NULL : i3_malloc(s->ctx, (size_t)n * sizeof *start, "an SnC start");
    if (!accepted || (!t->predictor && !start)) {
        if (accepted != t->accepted) free(accepted);
        free(start);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    if (t->predictor) memcpy(accepted, i3_snc_predictor_mask(t->predictor), (size_t)n);
    else if (slice_start(s, t->axis, t->index, start))
        for (int64_t i = 0; i < n; i++) accepted[i] = start[i] > s->params.predictor.prob_thresh;
    free(start);
    t->accepted = accepted;
    t->finished = 1;
    t->accurate = accurate != 0;
    if (!r) s->slices[s->n_slices++] = fresh;
    return I3RT_OK;
}

/* ---- propagation ------------------------------------------------------------------------------- */

/* The TV-L1 post-processing around every accurate mask (in annotation order), then every accepted mask
 * pasted into its slice, so that the 3D mask shows exactly what the user accepted. */
static i3rt_status postprocess(i3_snc_session *s, float *probs, float *plane) {
    const i3_volume *im = &s->image;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < s->n_slices; i++) {
            const slice_record *r = &s->slices[i];
            if (!r->finished || (pass == 0 && (!r->accurate || !s->params.postprocess))) continue;
            for (int64_t k = 0; k < r->rows * r->cols; k++) plane[k] = (float)r->accepted[k];
            if (pass == 0)
                I3_TRY(i3_snc_postprocess(s->ctx, probs, im->d, im->h, im->w, r->axis, r->index, plane,
                                          s->params.gamma, &s->params.tvl1));
            else
                i3_slice_put(probs, sizeof(float), im->d, im->h, im->w, r->axis, r->index, plane);
        }
    return I3RT_OK;
}

i3rt_status i3_snc_session_propagate(i3_snc_session *s) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    if (!s->has_net3d) return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC propagate: no 3D network loaded");
    int n_ann = 0;
    for (int i = 0; i < s->n_slices; i++) n_ann += s->slices[i].finished;
    if (n_ann == 0)
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "SnC propagate: no finished slice (click on a slice and finish it first)");
    const i3_volume *im = &s->image;
    const int64_t n = voxels(s);
    const int64_t plane_max = im->d * im->h * im->w / (im->d < im->h ? (im->d < im->w ? im->d : im->w)
                                                                     : (im->h < im->w ? im->h : im->w));
    i3_snc_annotation *ann = i3_malloc(s->ctx, (size_t)n_ann * sizeof *ann, "the SnC annotations");
    i3_slice *annotated = i3_malloc(s->ctx, (size_t)s->n_slices * sizeof *annotated, "the SnC annotated slices");
    float *probs = i3_malloc(s->ctx, (size_t)n * sizeof *probs, "the SnC 3D prediction");
    float *confidence = i3_malloc(s->ctx, (size_t)n * sizeof *confidence, "the SnC confidence");
    float *plane = i3_malloc(s->ctx, (size_t)plane_max * sizeof *plane, "an SnC plane");
    i3rt_status st = ann && annotated && probs && confidence && plane ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    for (int i = 0, j = 0; st == I3RT_OK && i < s->n_slices; i++) {
        const slice_record *r = &s->slices[i];
        annotated[i] = (i3_slice){.axis = r->axis, .index = r->index};
        if (r->finished)
            ann[j++] = (i3_snc_annotation){r->axis, r->index, r->rows, r->cols, r->accepted, r->clicks, r->n_clicks,
                                           r->accurate};
    }
    double t0 = i3_now_seconds();
    if (st == I3RT_OK) st = s->net3d.predict(s->net3d.user, im->data, s->probs, im->d, im->h, im->w, ann, n_ann, probs);
    for (int64_t i = 0; i < n && st == I3RT_OK; i++)
        if (!(probs[i] >= 0.0f && probs[i] <= 1.0f))
            st = i3_fail(s->ctx, I3RT_ERR_BACKEND, "SnC propagate: the 3D network gave %g at voxel %lld (not in 0..1)",
                         (double)probs[i], (long long)i);
    s->seconds[I3_SNC_STAGE_GUIDED] += i3_now_seconds() - t0;
    /* Algorithm 1: the recommendation (line 15) reads the network's prediction, before post-processing */
    t0 = i3_now_seconds();
    i3_slice rec = {0};
    int found = 0;
    if (st == I3RT_OK) st = i3_snc_confidence(s->ctx, probs, 1, n, confidence, s->ctx->n_threads);
    if (st == I3RT_OK)
        st = i3_snc_recommend(s->ctx, confidence, im->d, im->h, im->w, &s->params.recommend, annotated, s->n_slices,
                              &rec, &found);
    s->seconds[I3_SNC_STAGE_RECOMMEND] += i3_now_seconds() - t0;
    t0 = i3_now_seconds();
    if (st == I3RT_OK) st = postprocess(s, probs, plane);
    s->seconds[I3_SNC_STAGE_POSTPROCESS] += i3_now_seconds() - t0;
    if (st == I3RT_OK) {
        float *old = s->probs;
        s->probs = probs, probs = old;
        for (int64_t i = 0; i < n; i++) s->mask[i] = s->probs[i] > 0.5f;
        s->recommendation = rec;
        s->has_recommendation = found;
        s->iterations++;
    }
    free(ann);
    free(annotated);
    free(probs);
    free(confidence);
    free(plane);
    return st;
}

i3rt_status i3_snc_session_recommendation(i3_snc_session *s, i3_slice *slice, int *found) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    if (!slice || !found) return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC recommendation: NULL output");
    if (s->iterations == 0)
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC recommendation: nothing propagated yet");
    *found = s->has_recommendation;
    if (*found) *slice = s->recommendation;
    return I3RT_OK;
}

/* ---- export ------------------------------------------------------------------------------------ */

i3rt_status i3_snc_session_save_mask(i3_snc_session *s, const char *path) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    if (!path) return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC save mask: NULL path");
    const double t0 = i3_now_seconds();
    const int64_t n = voxels(s);
    int32_t *labels = i3_malloc(s->ctx, (size_t)n * sizeof *labels, path);
    if (!labels) return I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n; i++) labels[i] = s->mask[i];
    const i3rt_status st = i3_volume_write_labels(s->ctx, path, &s->image.geometry, labels);
    free(labels);
    s->seconds[I3_SNC_STAGE_EXPORT] += i3_now_seconds() - t0;
    return st;
}

i3rt_status i3_snc_session_save_preview(i3_snc_session *s, i3_axis axis, int64_t index, const char *path) {
    if (!s) return I3RT_ERR_INVALID_ARGUMENT;
    I3_TRY(check_slice(s, axis, index, "SnC preview"));
    if (!path) return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC preview: NULL path");
    const double t0 = i3_now_seconds();
    const i3_volume *im = &s->image;
    int64_t rows, cols;
    i3_slice_dims(axis, im->d, im->h, im->w, &rows, &cols);
    const int64_t n = rows * cols;
    float *image = i3_malloc(s->ctx, (size_t)n * sizeof *image, path);
    uint8_t *mask = i3_malloc(s->ctx, (size_t)n, path);
    int32_t *labels = i3_malloc(s->ctx, (size_t)n * sizeof *labels, path);
    uint8_t *rgb = i3_malloc(s->ctx, (size_t)(3 * n), path);
    i3rt_status st = image && mask && labels && rgb ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK) {
        const slice_record *r = find_slice(s, axis, index);
        i3_slice_get(im->data, sizeof(float), im->d, im->h, im->w, axis, index, image);
        if (r) memcpy(mask, r->finished ? r->accepted : i3_snc_predictor_mask(r->predictor), (size_t)n);
        else i3_slice_get(s->mask, 1, im->d, im->h, im->w, axis, index, mask);
        for (int64_t i = 0; i < n; i++) labels[i] = mask[i];
        i3_plane_flip_rows(image, sizeof *image, rows, cols);
        i3_plane_flip_rows(labels, sizeof *labels, rows, cols);
        i3_png_overlay(image, labels, n, 0.0f, 1.0f, 0.4f, rgb);
        st = i3_png_write(s->ctx, path, rgb, rows, cols, 3);
    }
    free(image);
    free(mask);
    free(labels);
    free(rgb);
    s->seconds[I3_SNC_STAGE_EXPORT] += i3_now_seconds() - t0;
    return st;
}
