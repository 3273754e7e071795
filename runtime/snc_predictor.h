/* Slice-and-Conquer stage 1: a 2D click session on one slice, RITM's predictor loop around the 2D
 * network (docs/snc.md, "2D interactive segmentation"). Written from RITM's
 * SamsungLabs/ritm_interactive_segmentation @ b9b44603672e15aa0be878b54fd26e7e1c5d2311:
 * isegm/inference/predictors/base.py (BasePredictor, NoBRS), transforms/zoom_in.py (ZoomIn),
 * transforms/flip.py (AddHorizontalFlip), transforms/base.py (SigmoidForPred), utils/misc.py (boxes),
 * evaluation.py (pred_thr 0.49).
 *
 * Per click: the clicks so far and the previous probability map go through ZoomIn (crop around the
 * object, resized to target_size), are encoded as the network input (i3_hrnet_encode_image and
 * i3_hrnet_click_maps, the two parts of i3_hrnet_encode_input), run on
 * the image and its mirror (AddHorizontalFlip: logits averaged), the sigmoid is taken, and ZoomIn's
 * inverse pastes the probabilities back into a zero map of the slice size. The map is the previous
 * mask of the next click; the binary mask is probs > prob_thresh.
 *
 * A session starts from an empty mask, or from a given probability map (i3_snc_predictor_set_start:
 * Slice-and-Conquer's M_{t,0}^2D, the 3D prediction's slice), which is then BasePredictor's
 * prev_prediction before the first click, as FocalClick's evaluation's predictor.set_prev_mask(init_mask)
 * does (for the first pass the same as RITM's get_prediction(clicker, prev_mask=start)). ZoomIn records
 * only its own outputs, so the start reaches the network's previous-mask input, never ZoomIn's box. */
#ifndef I3RT_SNC_PREDICTOR_H
#define I3RT_SNC_PREDICTOR_H

#include "core.h"
#include "hrnet.h"

/* The host buffers of a click (planes, crop, network input and logits), grown on demand and kept, so that
 * a click writes into memory already paged in (first touching the 6 MB of a zoomed batch costs
 * milliseconds); with a model, allocated through its backend (pinned on a GPU: the input's upload and the
 * logits' download at full speed). */
typedef struct {
    float *data;
    size_t floats;
    i3rt_model *model; /* allocates data (NULL: malloc) */
} i3_snc_workspace;

/* A 2D network for the predictor: forward writes the logits [n, h, w] (the network's output upsampled
 * to its input size) for n encoded inputs [n, I3_HRNET_IMAGE_CHANNELS + cfg.coord_channels, h, w] (two with
 * the flip: the input and its mirror, as RITM's AddHorizontalFlip batches them). */
typedef struct {
    i3_hrnet_config cfg; /* the input encoding (2D, disk click maps) */
    i3rt_status (*forward)(void *user, const float *input, int n, int64_t h, int64_t w, float *logits);
    void (*release)(void *user); /* frees user (NULL: nothing to free) */
    void *user;
    i3_snc_workspace *workspace; /* shared by the predictors on this network, one click at a time (NULL: each
                                    predictor keeps its own); i3_snc_net_load makes one */
} i3_snc_net;

/* Loads a RITM-HRNet18 weight file (2D, disk click maps) as an i3rt model on the context's backend. */
i3rt_status i3_snc_net_load(i3_ctx *ctx, const char *path, i3_snc_net *out);
void i3_snc_net_free(i3_snc_net *net);

typedef struct {
    int zoom_in;                 /* RITM's ZoomIn on (1) or off (0) */
    int target_size;             /* the crop's longer side after resizing (ZoomIn: 400) */
    int skip_clicks;             /* no zoom while there are at most this many clicks (1); -1: the whole
                                    slice is the first crop; 0: RITM's check_possible_recalculation */
    double expansion_ratio;      /* object box growth (1.4) */
    int min_crop_size;           /* least crop side before clamping to the slice (200) */
    double recompute_thresh_iou; /* a new box replaces the crop when IoU(new, crop) < this (0.5) */
    float zoom_prob_thresh;      /* the object is probs > this (0.5) */
    int with_flip;               /* AddHorizontalFlip (1) */
    int net_clicks_limit;        /* only the first this many clicks reach the network (0: all) */
    float prob_thresh;           /* the binary mask is probs > this (0.49, RITM's evaluation) */
} i3_snc_predictor_params;

/* RITM's evaluation setting (scripts/evaluate_model.py, cvpr mode): get_predictor(NoBRS,
 * prob_thresh 0.49, with_flip True, ZoomIn() defaults). */
#define I3_SNC_PREDICTOR_DEFAULTS ((i3_snc_predictor_params){1, 400, 1, 1.4, 200, 0.5, 0.5f, 1, 0, 0.49f})

typedef struct {
    float y, x; /* slice pixel coordinates (row, column) */
    int positive;
} i3_snc_click;

/* Makes net ready for clicks with these parameters on the slices of a d x h x w volume, so that no click pays
 * for it (a session does this when it takes its 2D network; nothing without a workspace): sizes the workspace
 * and pages it in; sizes the model's buffers for the largest input a click can feed it (growing them later
 * would move them, and a device would then capture every size's CUDA graph anew) and uploads its weights; on
 * a device, runs each axis's slice size twice, so that the first click on any axis replays a captured graph. */
i3rt_status i3_snc_net_prepare(i3_ctx *ctx, const i3_snc_net *net, const i3_snc_predictor_params *params, int64_t d,
                               int64_t h, int64_t w);

/* An inclusive box of rows [r0, r1] and columns [c0, c1] (RITM's rmin, rmax, cmin, cmax). */
typedef struct {
    int64_t r0, r1, c0, c1;
} i3_snc_box;

typedef struct i3_snc_predictor i3_snc_predictor;

/* A session on one slice: image [3, h, w] in [0, 1] (copied), an empty start and no click. net is
 * borrowed and must outlive the session; sessions sharing a net click one at a time (the model's
 * buffers are shared). */
i3rt_status i3_snc_predictor_create(i3_ctx *ctx, const i3_snc_net *net, const float *image, int64_t h, int64_t w,
                                    const i3_snc_predictor_params *params, i3_snc_predictor **out);
void i3_snc_predictor_free(i3_snc_predictor *p);

/* The start before the first click: start [h, w] (copied), probabilities in [0, 1], or NULL for the empty
 * start (zeros). Until the first click probs is the start and mask is start > prob_thresh (what the user
 * and RITM's clicker see); the first click feeds it to the network as the previous mask. Refused
 * (I3RT_ERR_INVALID_ARGUMENT, session unchanged) after a click or for a value outside [0, 1]. */
i3rt_status i3_snc_predictor_set_start(i3_snc_predictor *p, const float *start);

/* Adds a click and predicts. A click outside the slice or not finite, or a failing network, returns an
 * error (I3RT_ERR_INVALID_ARGUMENT for the click) and leaves the session as it was. */
i3rt_status i3_snc_predictor_click(i3_snc_predictor *p, float y, float x, int positive);

const float *i3_snc_predictor_probs(const i3_snc_predictor *p);  /* [h, w], the start before a click */
const uint8_t *i3_snc_predictor_mask(const i3_snc_predictor *p); /* [h, w], probs > prob_thresh */
int i3_snc_predictor_n_clicks(const i3_snc_predictor *p);
/* ZoomIn's current crop; returns 0 (box untouched) while there is none. */
int i3_snc_predictor_crop(const i3_snc_predictor *p, i3_snc_box *box);

/* ZoomIn's pieces, for tests and callers that need the boxes:
 * get_object_roi: the box of mask [h, w] (non-zero pixels) plus the positive clicks' pixels, expanded
 * by expansion_ratio to at least min_crop_size (rounding half to even, as Python's round), clamped to
 * the slice. Returns 0 if mask is empty (no box). */
int i3_snc_object_box(const uint8_t *mask, int64_t h, int64_t w, const i3_snc_click *clicks, int n_clicks,
                      double expansion_ratio, int min_crop_size, i3_snc_box *box);
/* get_bbox_iou: the product of the row and column segment IoUs. */
double i3_snc_box_iou(i3_snc_box a, i3_snc_box b);
/* get_roi_image_nd's size: the box scaled so that its longer side is target_size. */
void i3_snc_zoom_size(i3_snc_box box, int target_size, int64_t *h, int64_t *w);

#endif /* I3RT_SNC_PREDICTOR_H */
