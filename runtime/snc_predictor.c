/* RITM's BasePredictor (NoBRS) with ZoomIn and AddHorizontalFlip around the 2D network; see
 * snc_predictor.h and docs/snc.md. Each function names the RITM code it follows. */
#include "snc_predictor.h"
#include "network.h"
#include "ops.h"
#include "slice_select.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the network --------------------------------------------------------------------------------- */

static i3rt_status model_forward(void *user, const float *input, int n, int64_t h, int64_t w, float *logits) {
    const int64_t spatial[3] = {1, h, w};
    return i3_model_forward_batch(user, n, input, spatial, logits);
}

static void model_release(void *user) { i3rt_model_free(user); }

/* The batch a click runs: the input and, with the flip, its mirror (AddHorizontalFlip). */
static int net_runs(const i3_snc_predictor_params *pp) { return pp->with_flip ? 2 : 1; }

static void workspace_free(i3_snc_workspace *ws) {
    if (ws->model) i3_model_host_free(ws->model, ws->data);
    else free(ws->data);
    ws->data = NULL;
    ws->floats = 0;
}

/* ws's buffer with room for n floats (its contents are not kept when it grows). */
static float *workspace_floats(i3_ctx *ctx, i3_snc_workspace *ws, size_t n) {
    if (n <= ws->floats) return ws->data;
    workspace_free(ws);
    void *data = NULL;
    if (ws->model) i3_model_host_alloc(ws->model, n * sizeof *ws->data, &data);
    else data = i3_malloc(ctx, n * sizeof *ws->data, "the SnC click buffers");
    ws->data = data;
    ws->floats = data ? n : 0;
    return ws->data;
}

/* Where a click's buffers lie in the workspace (offsets in floats): planes [4, max(s, ns)], crop [4, crop],
 * probabilities [ns], network input [runs, channels, ns], logits [runs, ns], then the end; s: the slice's
 * pixels, ns: the network input's, crop: the crop's (0 without one). */
typedef struct {
    int64_t crop, probs, input, logits, end; /* the planes at 0 */
} click_layout;

static click_layout click_buffers(const i3_snc_net *net, int runs, int64_t s, int64_t ns, int64_t crop) {
    const int channels = I3_HRNET_IMAGE_CHANNELS + net->cfg.coord_channels;
    click_layout at;
    at.crop = 4 * (s > ns ? s : ns);
    at.probs = at.crop + 4 * crop;
    at.input = at.probs + ns;
    at.logits = at.input + (int64_t)runs * channels * ns;
    at.end = at.logits + (int64_t)runs * ns;
    return at;
}

i3rt_status i3_snc_net_load(i3_ctx *ctx, const char *path, i3_snc_net *out) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (!path || !out) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3_snc_net_load: NULL path or output");
    memset(out, 0, sizeof *out);
    i3rt_model *model = NULL;
    I3_TRY(i3rt_model_load(ctx, path, &model));
    const i3_network *net = i3_model_network(model);
    i3rt_status st = I3RT_OK;
    if (net->cls != I3_NET_RITM_HRNET18 || net->hrnet.acs)
        st = i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: the 2D click predictor needs a 2D RITM-HRNet18 network, not %s%s",
                     path, net->class_name, net->hrnet.acs ? " (ACS 3D)" : "");
    else if (!net->hrnet.use_disks)
        st = i3_fail(ctx, I3RT_ERR_UNSUPPORTED,
                     "%s: the 2D click predictor needs disk click maps (arch_kwargs.use_disks true)", path);
    i3_snc_workspace *ws = st == I3RT_OK ? i3_calloc(ctx, 1, sizeof *ws, "the SnC click buffers") : NULL;
    if (st == I3RT_OK && !ws) st = I3RT_ERR_OUT_OF_MEMORY;
    if (ws) ws->model = model;
    if (st != I3RT_OK) {
        i3rt_model_free(model);
        return st;
    }
    *out = (i3_snc_net){
        .cfg = net->hrnet, .forward = model_forward, .release = model_release, .user = model, .workspace = ws};
    return I3RT_OK;
}

void i3_snc_net_free(i3_snc_net *net) {
    if (!net) return;
    if (net->workspace) workspace_free(net->workspace); /* through the model: before its release */
    free(net->workspace);
    if (net->release) net->release(net->user);
    memset(net, 0, sizeof *net);
}

/* The model's buffers sized, its weights uploaded, for `runs` inputs of rows x cols. */
static i3rt_status reserve_size(i3rt_model *m, int runs, int64_t rows, int64_t cols) {
    const int64_t spatial[3] = {1, rows, cols};
    i3_backend *b;
    float *in;
    const float *out;
    return i3_model_device_io(m, runs, spatial, &b, &in, &out);
}

i3rt_status i3_snc_net_prepare(i3_ctx *ctx, const i3_snc_net *net, const i3_snc_predictor_params *params, int64_t d,
                               int64_t h, int64_t w) {
    if (!net->workspace) return I3RT_OK;
    /* a zoomed input is at most target_size on each side; a crop at most the slice */
    const int64_t pixels = i3_largest_slice(d, h, w), side = params->target_size;
    const int64_t target = params->zoom_in ? side * side : 0, ns = pixels > target ? pixels : target;
    const int runs = net_runs(params);
    const click_layout at = click_buffers(net, runs, pixels, ns, params->zoom_in ? pixels : 0);
    float *data = workspace_floats(ctx, net->workspace, (size_t)at.end);
    if (!data) return I3RT_ERR_OUT_OF_MEMORY;
    memset(data, 0, (size_t)at.end * sizeof *data); /* paged in now */
    i3rt_model *m = net->workspace->model;
    if (!m) return I3RT_OK;
    int64_t slices[3][2]; /* rows, cols of the axial, coronal and sagittal slices */
    for (int a = 0; a < 3; a++) i3_slice_dims((i3_axis)a, d, h, w, &slices[a][0], &slices[a][1]);
    if (params->zoom_in) I3_TRY(reserve_size(m, runs, side, side));
    for (int a = 0; a < 3; a++) I3_TRY(reserve_size(m, runs, slices[a][0], slices[a][1]));
    if (!i3_model_on_device(m)) return I3RT_OK;
    for (int a = 0; a < 3; a++) {
        int seen = 0; /* a cube's three slice sizes are one */
        for (int b = 0; b < a; b++) seen |= slices[b][0] == slices[a][0] && slices[b][1] == slices[a][1];
        for (int run = 0; run < 2 && !seen; run++) /* zeros in: the workspace as just cleared */
            I3_TRY(net->forward(net->user, data + at.input, runs, slices[a][0], slices[a][1], data + at.logits));
    }
    return I3RT_OK;
}

/* ---- ZoomIn's boxes (isegm/utils/misc.py, transforms/zoom_in.py) ----------------------------------- */

int i3_snc_object_box(const uint8_t *mask, int64_t h, int64_t w, const i3_snc_click *clicks, int n_clicks,
                      double expansion_ratio, int min_crop_size, i3_snc_box *box) {
    int64_t r0 = h, r1 = -1, c0 = w, c1 = -1;
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++)
            if (mask[y * w + x]) {
                r0 = y < r0 ? y : r0, r1 = y > r1 ? y : r1;
                c0 = x < c0 ? x : c0, c1 = x > c1 ? x : c1;
            }
    if (r1 < 0) return 0;
    /* get_object_roi: positive clicks' pixels (int(): truncation) join the mask */
    for (int i = 0; i < n_clicks; i++) {
        if (!clicks[i].positive) continue;
        const int64_t y = (int64_t)clicks[i].y, x = (int64_t)clicks[i].x;
        r0 = y < r0 ? y : r0, r1 = y > r1 ? y : r1;
        c0 = x < c0 ? x : c0, c1 = x > c1 ? x : c1;
    }
    /* expand_bbox: center +- half the expanded size, Python's round (half to even: rint), then clamp_bbox */
    const double rc = 0.5 * (double)(r0 + r1), cc = 0.5 * (double)(c0 + c1);
    const double height = fmax(expansion_ratio * (double)(r1 - r0 + 1), min_crop_size);
    const double width = fmax(expansion_ratio * (double)(c1 - c0 + 1), min_crop_size);
    const int64_t er0 = (int64_t)rint(rc - 0.5 * height), er1 = (int64_t)rint(rc + 0.5 * height);
    const int64_t ec0 = (int64_t)rint(cc - 0.5 * width), ec1 = (int64_t)rint(cc + 0.5 * width);
    *box = (i3_snc_box){er0 > 0 ? er0 : 0, er1 < h - 1 ? er1 : h - 1, ec0 > 0 ? ec0 : 0, ec1 < w - 1 ? ec1 : w - 1};
    return 1;
}

static double segment_iou(int64_t a, int64_t b, int64_t c, int64_t d) {
    const double inter = fmax(0.0, (double)((b < d ? b : d) - (a > c ? a : c) + 1));
    const double uni = fmax(1e-6, (double)((b > d ? b : d) - (a < c ? a : c) + 1));
    return inter / uni;
}

double i3_snc_box_iou(i3_snc_box a, i3_snc_box b) {
    return segment_iou(a.r0, a.r1, b.r0, b.r1) * segment_iou(a.c0, a.c1, b.c0, b.c1);
}

void i3_snc_zoom_size(i3_snc_box box, int target_size, int64_t *h, int64_t *w) {
    const int64_t bh = box.r1 - box.r0 + 1, bw = box.c1 - box.c0 + 1;
    const double scale = (double)target_size / (double)(bh > bw ? bh : bw);
    *h = (int64_t)rint((double)bh * scale);
    *w = (int64_t)rint((double)bw * scale);
    /* RITM would fail on an empty size (a very thin box and a small target); keep one pixel */
    if (*h < 1) *h = 1;
    if (*w < 1) *w = 1;
}

/* check_object_roi: every positive click inside the crop (the last row and column excluded, as RITM). */
static int clicks_in_box(i3_snc_box b, const i3_snc_click *clicks, int n) {
    for (int i = 0; i < n; i++)
        if (clicks[i].positive && (clicks[i].y < b.r0 || clicks[i].y >= b.r1 || clicks[i].x < b.c0 || clicks[i].x >= b.c1))
            return 0;
    return 1;
}

/* ---- the session ----------------------------------------------------------------------------------- */

static void threshold(const float *probs, int64_t n, float thresh, uint8_t *mask) {
    for (int64_t i = 0; i < n; i++) mask[i] = probs[i] > thresh;
}

typedef struct {
    int has; /* ZoomIn's _object_roi is set */
    i3_snc_box box;
} zoom_state;

struct i3_snc_predictor {
    i3_ctx *ctx;
    const i3_snc_net *net;
    i3_snc_predictor_params params;
    int64_t h, w;
    float *image;   /* [3, h, w] */
    float *probs;   /* [h, w]: BasePredictor.prev_prediction (the start before the first click; after it
                       also ZoomIn's _prev_probs) */
    uint8_t *mask;  /* [h, w] */
    i3_snc_click *clicks;
    int n_clicks, cap_clicks;
    zoom_state zoom;
    i3_snc_workspace own, *work; /* work: the network's workspace, else own */
};

i3rt_status i3_snc_predictor_create(i3_ctx *ctx, const i3_snc_net *net, const float *image, int64_t h, int64_t w,
                                    const i3_snc_predictor_params *params, i3_snc_predictor **out) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (!net || !net->forward || !image || !params || !out)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC 2D predictor: NULL network, image, parameters or output");
    *out = NULL;
    if (h < 1 || w < 1 || h > (1 << 20) || w > (1 << 20))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC 2D predictor: slice size %lld x %lld", (long long)h,
                       (long long)w);
    const i3_snc_predictor_params *pp = params;
    if (pp->zoom_in && (pp->target_size < 1 || pp->skip_clicks < -1 || !(pp->expansion_ratio > 0) ||
                        pp->min_crop_size < 0 || !(pp->recompute_thresh_iou >= 0)))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "SnC 2D predictor: zoom-in needs target_size >= 1, skip_clicks >= -1, expansion_ratio > 0, "
                       "min_crop_size >= 0, recompute_thresh_iou >= 0");
    if (pp->net_clicks_limit < 0 || !isfinite(pp->prob_thresh) || !isfinite(pp->zoom_prob_thresh))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "SnC 2D predictor: net_clicks_limit must be >= 0 and the thresholds finite");
    if (net->cfg.acs || !net->cfg.use_disks)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "SnC 2D predictor: the network must be 2D with disk click maps");
    for (int64_t i = 0; i < 3 * h * w; i++)
        if (!(image[i] >= 0.0f && image[i] <= 1.0f))
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                           "SnC 2D predictor: image value %g at %lld is not in [0, 1] (window the slice first)",
                           (double)image[i], (long long)i);
    i3_snc_predictor *p = i3_calloc(ctx, 1, sizeof *p, "the SnC 2D predictor");
    if (!p) return I3RT_ERR_OUT_OF_MEMORY;
    *p = (i3_snc_predictor){.ctx = ctx, .net = net, .params = *params, .h = h, .w = w};
    p->work = net->workspace ? net->workspace : &p->own;
    p->image = i3_malloc(ctx, (size_t)(3 * h * w) * sizeof *p->image, "the SnC slice image");
    p->probs = i3_calloc(ctx, (size_t)(h * w), sizeof *p->probs, "the SnC probabilities");
    p->mask = i3_calloc(ctx, (size_t)(h * w), 1, "the SnC mask");
    if (!p->image || !p->probs || !p->mask) {
        i3_snc_predictor_free(p);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    memcpy(p->image, image, (size_t)(3 * h * w) * sizeof *image);
    *out = p;
    return I3RT_OK;
}

void i3_snc_predictor_free(i3_snc_predictor *p) {
    if (!p) return;
    free(p->image);
    free(p->probs);
    free(p->mask);
    free(p->clicks);
    workspace_free(&p->own);
    free(p);
}

const float *i3_snc_predictor_probs(const i3_snc_predictor *p) { return p->probs; }
const uint8_t *i3_snc_predictor_mask(const i3_snc_predictor *p) { return p->mask; }
int i3_snc_predictor_n_clicks(const i3_snc_predictor *p) { return p->n_clicks; }

i3rt_status i3_snc_predictor_set_start(i3_snc_predictor *p, const float *start) {
    if (!p) return I3RT_ERR_INVALID_ARGUMENT;
    if (p->n_clicks > 0)
        return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "SnC 2D predictor: the start is set before the first click (%d clicks made)", p->n_clicks);
    const int64_t n = p->h * p->w;
    for (int64_t i = 0; start && i < n; i++)
        if (!(start[i] >= 0.0f && start[i] <= 1.0f))
            return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT,
                           "SnC 2D predictor: start probability %g at (%lld, %lld) is not in [0, 1]", (double)start[i],
                           (long long)(i / p->w), (long long)(i % p->w));
    if (start) memcpy(p->probs, start, (size_t)n * sizeof *start);
    else memset(p->probs, 0, (size_t)n * sizeof *p->probs);
    threshold(p->probs, n, p->params.prob_thresh, p->mask);
    return I3RT_OK;
}

int i3_snc_predictor_crop(const i3_snc_predictor *p, i3_snc_box *box) {
    if (p->zoom.has) *box = p->zoom.box;
    return p->zoom.has;
}

/* A click in network-input pixels: RITM keeps them in Python floats (double) through the zoom and
 * the flip; torch.tensor makes them float32 at the network. */
typedef struct {
    double y, x;
    int positive;
} net_click;

/* The network input [runs, channels, ih, iw] for planes [4, ih, iw] (image, previous mask) and clicks in input
 * pixels: the planes encoded (i3_hrnet_encode_image), and for the flip the same mirrored left-right
 * (AddHorizontalFlip: planes flipped, click x -> iw - x - 1; normalizing commutes with the mirror, so run 1
 * copies run 0's channels). RITM's DistMaps (GPU path) keeps clicks outside the input, which a crop leaves
 * (negative clicks outside it; a mirrored click past x = iw - 1), so they go to i3_hrnet_click_maps as they
 * are; hc has room for n clicks. */
static void encode(i3_snc_predictor *p, const float *planes, int64_t ih, int64_t iw, const net_click *clicks, int n,
                   int runs, i3_hrnet_click *hc, float *input) {
    const i3_hrnet_config *cfg = &p->net->cfg;
    const int64_t s = ih * iw;
    const int placed = I3_HRNET_IMAGE_CHANNELS + (cfg->with_prev_mask ? 1 : 0);
    const int channels = I3_HRNET_IMAGE_CHANNELS + cfg->coord_channels;
    i3_hrnet_encode_image(cfg, s, planes, planes + I3_HRNET_IMAGE_CHANNELS * s, input);
    for (int r = 0; r < runs; r++) {
        float *run = input + r * channels * s;
        if (r == 1)
            for (int64_t row = 0; row < placed * ih; row++)
                for (int64_t x = 0; x < iw; x++) run[row * iw + x] = input[row * iw + iw - 1 - x];
        for (int i = 0; i < n; i++) {
            const double x = r == 1 ? (double)iw - clicks[i].x - 1.0 : clicks[i].x;
            hc[i] = (i3_hrnet_click){0.0f, (float)clicks[i].y, (float)x, clicks[i].positive};
        }
        i3_hrnet_click_maps(cfg, 1, ih, iw, hc, n, run + placed * s);
    }
}


/* The network on planes [4, ih, iw] and, with flip, on their mirror in the same batch: AddHorizontalFlip.
 * inv_transform averages the logits, 0.5 * (l + flip(l_mirror)); then SigmoidForPred. probs [ih, iw];
 * input [runs, channels, ih, iw] and logits [runs, ih, iw] are buffers for the network. */
static i3rt_status network_probs(i3_snc_predictor *p, const float *planes, int64_t ih, int64_t iw,
                                 const net_click *clicks, int n, float *input, float *logits, float *probs) {
    const int64_t s = ih * iw;
    const int runs = net_runs(&p->params);
    i3_hrnet_click *hc = i3_malloc(p->ctx, (size_t)(n > 0 ? n : 1) * sizeof *hc, "SnC click list");
    i3rt_status st = hc ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK) encode(p, planes, ih, iw, clicks, n, runs, hc, input);
    if (st == I3RT_OK) st = p->net->forward(p->net->user, input, runs, ih, iw, logits);
    if (st == I3RT_OK)
        for (int64_t y = 0; y < ih; y++)
            for (int64_t x = 0; x < iw; x++) {
                float l = logits[y * iw + x];
                if (runs == 2) l = 0.5f * (l + logits[s + y * iw + (iw - 1 - x)]);
                probs[y * iw + x] = 1.0f / (1.0f + expf(-l));
            }
    free(hc);
    return st;
}

/* ZoomIn.transform's choice of crop: 1 and the crop to use, or 0 (the whole slice). zs is updated as
 * ZoomIn updates _object_roi; zoom_probs is ZoomIn's _prev_probs (NULL: none yet). */
static i3rt_status choose_crop(i3_snc_predictor *p, const i3_snc_click *clicks, int n, const float *zoom_probs,
                               zoom_state *zs, int *zoomed) {
    const i3_snc_predictor_params *pp = &p->params;
    *zoomed = 0;
    if (!pp->zoom_in || n <= pp->skip_clicks) return I3RT_OK;
    i3_snc_box cur;
    int have = 0;
    if (zoom_probs) {
        uint8_t *mask = i3_malloc(p->ctx, (size_t)(p->h * p->w), "SnC zoom mask");
        if (!mask) return I3RT_ERR_OUT_OF_MEMORY;
        threshold(zoom_probs, p->h * p->w, pp->zoom_prob_thresh, mask);
        have = i3_snc_object_box(mask, p->h, p->w, clicks, n, pp->expansion_ratio, pp->min_crop_size, &cur);
        free(mask);
    }
    if (!have && pp->skip_clicks >= 0) return I3RT_OK; /* ZoomIn leaves a previous crop set (see docs) */
    if (!have) cur = (i3_snc_box){0, p->h - 1, 0, p->w - 1};
    if (!zs->has || !clicks_in_box(zs->box, clicks, n) || i3_snc_box_iou(cur, zs->box) < pp->recompute_thresh_iou)
        *zs = (zoom_state){1, cur};
    *zoomed = 1;
    return I3RT_OK;
}

/* One BasePredictor.get_prediction pass: the previous mask fed to the network is input_mask, ZoomIn's
 * record is zoom_probs and zs; out [h, w]. */
static i3rt_status predict(i3_snc_predictor *p, const i3_snc_click *clicks, int n, const float *input_mask,
                           const float *zoom_probs, zoom_state *zs, float *out) {
    const int64_t h = p->h, w = p->w, s = h * w;
    const int n_threads = p->ctx->n_threads > 0 ? p->ctx->n_threads : 1;
    int zoomed = 0;
    I3_TRY(choose_crop(p, clicks, n, zoom_probs, zs, &zoomed));
    int64_t ih = h, iw = w;
    if (zoomed) i3_snc_zoom_size(zs->box, p->params.target_size, &ih, &iw);
    /* the crop's size (1 x 1 while there is none: then neither crop nor its inverse is used) */
    const int64_t bh = zs->box.r1 - zs->box.r0 + 1, bw = zs->box.c1 - zs->box.c0 + 1;
    const int64_t ns = ih * iw, n_crop = zoomed ? bh * bw : 0;
    const click_layout at = click_buffers(p->net, net_runs(&p->params), s, ns, n_crop);
    float *planes = workspace_floats(p->ctx, p->work, (size_t)at.end);
    net_click *tc = i3_malloc(p->ctx, (size_t)(n > 0 ? n : 1) * sizeof *tc, "SnC clicks");
    i3rt_status st = planes && tc ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    float *crop = NULL, *probs = NULL, *input = NULL, *logits = NULL;
    if (planes) crop = planes + at.crop, probs = planes + at.probs, input = planes + at.input, logits = planes + at.logits;
    if (st == I3RT_OK) {
        /* BasePredictor: cat(image, prev_mask); get_points_nd: the first net_clicks_limit clicks */
        const int n_net = p->params.net_clicks_limit > 0 && n > p->params.net_clicks_limit ? p->params.net_clicks_limit : n;
        for (int i = 0; i < n_net; i++) tc[i] = (net_click){clicks[i].y, clicks[i].x, clicks[i].positive};
        if (!zoomed) {
            memcpy(planes, p->image, (size_t)(3 * s) * sizeof *planes);
            memcpy(planes + 3 * s, input_mask, (size_t)s * sizeof *planes);
        } else { /* get_roi_image_nd, _transform_clicks */
            const i3_snc_box b = zs->box;
            for (int c = 0; c < 4; c++)
                for (int64_t y = 0; y < bh; y++)
                    memcpy(crop + (c * bh + y) * bw, (c < 3 ? p->image + c * s : input_mask) + (b.r0 + y) * w + b.c0,
                           (size_t)bw * sizeof *crop);
            const i3_resize_params rp = {.out = {1, ih, iw}, .align_corners = 1};
            i3_cpu_resize(crop, (i3_shape5){1, 4, 1, bh, bw}, &rp, planes, n_threads);
            for (int i = 0; i < n_net; i++) {
                tc[i].y = (double)ih * (tc[i].y - (double)b.r0) / (double)bh;
                tc[i].x = (double)iw * (tc[i].x - (double)b.c0) / (double)bw;
            }
        }
        st = network_probs(p, planes, ih, iw, tc, n_net, input, logits, probs);
    }
    if (st == I3RT_OK) {
        if (zs->has) { /* ZoomIn.inv_transform: resized to the crop, pasted into zeros */
            const i3_resize_params rp = {.out = {1, bh, bw}, .align_corners = 1};
            i3_cpu_resize(probs, (i3_shape5){1, 1, 1, ih, iw}, &rp, planes, n_threads);
            memset(out, 0, (size_t)s * sizeof *out);
            for (int64_t y = 0; y < bh; y++)
                memcpy(out + (zs->box.r0 + y) * w + zs->box.c0, planes + y * bw, (size_t)bw * sizeof *out);
        } else {
            memcpy(out, probs, (size_t)s * sizeof *out);
        }
    }
    free(tc);
    return st;
}

/* ZoomIn.check_possible_recalculation (only with skip_clicks <= 0, before any crop): the first
 * prediction's object box covers less than half of the slice, so predict again on its crop. */
static i3rt_status needs_recalculation(i3_snc_predictor *p, const float *probs, const zoom_state *zs, int *again) {
    const i3_snc_predictor_params *pp = &p->params;
    *again = 0;
    if (!pp->zoom_in || zs->has || pp->skip_clicks > 0) return I3RT_OK;
    uint8_t *mask = i3_malloc(p->ctx, (size_t)(p->h * p->w), "SnC zoom mask");
    if (!mask) return I3RT_ERR_OUT_OF_MEMORY;
    threshold(probs, p->h * p->w, pp->zoom_prob_thresh, mask);
    i3_snc_box box;
    if (i3_snc_object_box(mask, p->h, p->w, NULL, 0, pp->expansion_ratio, pp->min_crop_size, &box))
        *again = i3_snc_box_iou(box, (i3_snc_box){0, p->h - 1, 0, p->w - 1}) < 0.5;
    free(mask);
    return I3RT_OK;
}

i3rt_status i3_snc_predictor_click(i3_snc_predictor *p, float y, float x, int positive) {
    if (!p) return I3RT_ERR_INVALID_ARGUMENT;
    if (!isfinite(y) || !isfinite(x))
        return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC 2D click (y %g, x %g): coordinates are not finite",
                       (double)y, (double)x);
    if (!(y >= 0 && y < p->h && x >= 0 && x < p->w))
        return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "SnC 2D click (y %g, x %g) is outside the %lld x %lld slice (rows x columns)", (double)y,
                       (double)x, (long long)p->h, (long long)p->w);
    if (p->n_clicks == p->cap_clicks) {
        const int cap = p->cap_clicks ? 2 * p->cap_clicks : 16;
        i3_snc_click *c = realloc(p->clicks, (size_t)cap * sizeof *c);
        if (!c) return i3_fail(p->ctx, I3RT_ERR_OUT_OF_MEMORY, "SnC 2D click: out of memory for %d clicks", cap);
        p->clicks = c, p->cap_clicks = cap;
    }
    p->clicks[p->n_clicks] = (i3_snc_click){y, x, positive != 0}; /* counted only on success */
    const int n = p->n_clicks + 1;
    const int64_t s = p->h * p->w;
    float *out = i3_malloc(p->ctx, (size_t)(2 * s) * sizeof *out, "SnC probabilities");
    if (!out) return I3RT_ERR_OUT_OF_MEMORY;
    zoom_state zs = p->zoom;
    /* ZoomIn's _prev_probs: none before its first output (a start is the network's, not ZoomIn's) */
    const float *zoom_probs = p->n_clicks > 0 ? p->probs : NULL;
    int again = 0;
    i3rt_status st = predict(p, p->clicks, n, p->probs, zoom_probs, &zs, out);
    if (st == I3RT_OK) st = needs_recalculation(p, out, &zs, &again);
    /* RITM recurses with the same previous mask (prev_prediction: the start, if set_prev_mask set one);
     * ZoomIn now holds the first pass's probabilities */
    if (st == I3RT_OK && again) st = predict(p, p->clicks, n, p->probs, out, &zs, out + s);
    if (st != I3RT_OK) {
        free(out);
        return st;
    }
    memcpy(p->probs, out + (again ? s : 0), (size_t)s * sizeof *out);
    threshold(p->probs, s, p->params.prob_thresh, p->mask);
    p->zoom = zs;
    p->n_clicks = n;
    free(out);
    return I3RT_OK;
}
