/* Slice-and-Conquer's session (paper Algorithm 1; docs/snc.md, "session and CLI"): one volume, the 2D
 * network clicked slice by slice, the guided 3D step, the post-processing and the next-slice
 * recommendation, with RITM's simulated user on top (snc_simulate.c).
 *
 *   open (the image windowed to [0, 1]) -> load the 2D network (and the 3D one)
 *   repeat: click on a slice (one RITM predictor per slice, snc_predictor.h, starting from the 3D
 *           prediction's slice once there is one) ... finish the slice (its mask is accepted;
 *           "accurate" masks also steer the post-processing)
 *           propagate: the guided 3D network on the image, the previous 3D prediction and every
 *           finished slice's clicks and mask -> probabilities; the recommended next slice from their
 *           confidence (snc_recommend.h); the TV-L1 post-processing around every accurate mask
 *           (tvl1.h); the accepted masks pasted into their slices; the 3D mask is probs > 0.5
 *
 * Slices are those of slice_select.h (axis, index; planes [rows, cols]). Every call checks its input
 * before it changes anything, and a failure (a bad click, a failing network) leaves the session as it
 * was. Stages are timed in wall-clock seconds, added up over calls. */
#ifndef I3RT_SNC_SESSION_H
#define I3RT_SNC_SESSION_H

#include "core.h"
#include "slice_select.h"
#include "snc_predictor.h"
#include "snc_recommend.h"
#include "tvl1.h"
#include "volume_io.h"

/* A finished slice as the guided 3D step sees it. */
typedef struct {
    i3_axis axis;
    int64_t index;
    int64_t rows, cols;
    const uint8_t *mask;         /* [rows, cols], the accepted 2D mask */
    const i3_snc_click *clicks;  /* in slice pixels (y = row, x = column) */
    int n_clicks;
    int accurate;
} i3_snc_annotation;

/* The guided 3D step: probs [d, h, w] (foreground probability in [0, 1]) from the windowed image
 * [d, h, w] in [0, 1], the previous 3D prediction (probabilities; zeros before the first) and the
 * finished slices. */
typedef struct {
    i3rt_status (*predict)(void *user, const float *image, const float *previous, int64_t d, int64_t h, int64_t w,
                           const i3_snc_annotation *annotations, int n_annotations, float *probs);
    void (*release)(void *user); /* frees user (NULL: nothing to free) */
    void *user;
} i3_snc_guided_net;

typedef enum {
    I3_SNC_STAGE_OPEN = 0,     /* reading and windowing the image */
    I3_SNC_STAGE_LOAD,         /* loading the networks */
    I3_SNC_STAGE_CLICK,        /* the 2D predictor, all clicks */
    I3_SNC_STAGE_GUIDED,       /* the guided 3D network */
    I3_SNC_STAGE_RECOMMEND,    /* confidence and the next slice */
    I3_SNC_STAGE_POSTPROCESS,  /* TV-L1 around the accurate masks, accepted masks pasted */
    I3_SNC_STAGE_EXPORT,       /* NIfTI and PNG files */
    I3_SNC_STAGE_COUNT
} i3_snc_stage;

const char *i3_snc_stage_name(i3_snc_stage stage);

typedef struct {
    i3_snc_predictor_params predictor; /* RITM's evaluation setting */
    i3_snc_recommend_params recommend; /* tau 0.9, skip 1 */
    double gamma;                      /* post-processing fall-off max(1 - gamma |k|, 0), in [0, 1] (0.25) */
    int postprocess;                   /* TV-L1 post-processing on (1) */
    i3_tvl1_params tvl1;               /* skimage's defaults */
    int start_3d;                      /* a slice's predictor starts from the 3D probabilities' slice once a
                                          propagation made them (1: Algorithm 1's M_{t,0}^2D), or from an
                                          empty mask (0) */
} i3_snc_session_params;

#define I3_SNC_SESSION_DEFAULTS \
    ((i3_snc_session_params){I3_SNC_PREDICTOR_DEFAULTS, I3_SNC_RECOMMEND_DEFAULTS, 0.25, 1, I3_TVL1_DEFAULTS, 1})

typedef struct i3_snc_session i3_snc_session;

/* Intensity window of a volume for the 2D and 3D networks (RITM takes images in [0, 1]): the 0.5th
 * and 99.5th percentiles of its voxels (i3_png_window), x -> clamp((x - lo) / (hi - lo), 0, 1). */
void i3_snc_window(const float *image, int64_t n, float *out);

/* A session on image (its first channel; copied and windowed). params NULL: the defaults. Fails on an
 * empty volume (a size 0 or every voxel the same value) and on invalid parameters. */
i3rt_status i3_snc_session_open(i3_ctx *ctx, const i3_volume *image, const i3_snc_session_params *params,
                                i3_snc_session **out);
void i3_snc_session_free(i3_snc_session *s);
const i3_volume *i3_snc_session_image(const i3_snc_session *s); /* windowed, with the file's geometry */
const i3_snc_session_params *i3_snc_session_params_get(const i3_snc_session *s);
i3_ctx *i3_snc_session_context(const i3_snc_session *s);

/* The networks. The session owns what it is given (and frees it, also when the call fails). Setting
 * the 2D network drops every slice's clicks (they belong to the old network's predictions). */
i3rt_status i3_snc_session_set_net2d(i3_snc_session *s, i3_snc_net net);
i3rt_status i3_snc_session_set_net3d(i3_snc_session *s, i3_snc_guided_net net);
i3rt_status i3_snc_session_load_net2d(i3_snc_session *s, const char *path); /* i3_snc_net_load */
i3rt_status i3_snc_session_load_net3d(i3_snc_session *s, const char *path); /* i3_snc_guided_load */

/* Begins annotating slice (axis, index): its predictor is made from the slice's start, with start_3d and
 * after a propagation the 3D probabilities' slice (the soft map the 3D mask is thresholded from,
 * post-processed, the accepted masks pasted in), else empty; the start thresholded (probs >
 * prob_thresh) is the slice's mask before any click. Nothing changes for a slice that has a predictor
 * (begun or clicked already; a finished one keeps its mask). */
i3rt_status i3_snc_session_begin_slice(i3_snc_session *s, i3_axis axis, int64_t index);
/* A click on slice (axis, index) at (y, x) in its plane (row, column): the slice's predictor (made from
 * its start on the first click unless begun) predicts its 2D mask. A click on a finished slice reopens it. */
i3rt_status i3_snc_session_click(i3_snc_session *s, i3_axis axis, int64_t index, double y, double x, int positive);
/* The current 2D mask [rows, cols] of a begun or clicked slice (the accepted one once finished); NULL (and
 * an error in ctx) if it has none. */
const uint8_t *i3_snc_session_slice_mask(i3_snc_session *s, i3_axis axis, int64_t index, int64_t *rows,
                                         int64_t *cols);
int i3_snc_session_slice_clicks(const i3_snc_session *s, i3_axis axis, int64_t index); /* 0 if none */
/* Accepts the slice's current mask (a slice without clicks: its start thresholded, i.e. the 3D
 * prediction's slice after a propagation with start_3d, else an empty mask, "no object here");
 * accurate: it also steers the post-processing. */
i3rt_status i3_snc_session_finish(i3_snc_session *s, i3_axis axis, int64_t index, int accurate);

/* The guided 3D step, the recommendation and the post-processing over the finished slices. */
i3rt_status i3_snc_session_propagate(i3_snc_session *s);
/* After a propagation: *found = 1 and the recommended slice (sum = its under-confident voxels), or 0. */
i3rt_status i3_snc_session_recommendation(i3_snc_session *s, i3_slice *slice, int *found);
int i3_snc_session_iterations(const i3_snc_session *s); /* propagations so far */
int i3_snc_session_finished(const i3_snc_session *s);   /* finished slices */

/* The 3D mask [d, h, w] (0/1; zeros before the first propagation) and its probabilities. */
const uint8_t *i3_snc_session_mask(const i3_snc_session *s);
const float *i3_snc_session_probs(const i3_snc_session *s);
/* The 3D mask as a label NIfTI on the image's grid and geometry (atomic). */
i3rt_status i3_snc_session_save_mask(i3_snc_session *s, const char *path);
/* An RGB PNG of a slice: the windowed image with the slice's 2D mask (clicked or finished slices; after
 * a propagation the 3D mask holds the accepted ones) or else the 3D mask overlaid, rows flipped as
 * i3Deep's previews (slice_select.h). */
i3rt_status i3_snc_session_save_preview(i3_snc_session *s, i3_axis axis, int64_t index, const char *path);

double i3_snc_session_stage_seconds(const i3_snc_session *s, i3_snc_stage stage);

/* ---- the simulated user (snc_simulate.c) ---- */

/* Dice 2|a and b| / (|a| + |b|) of two 0/1 masks of n pixels; 1 when both are empty. */
double i3_snc_dice(const uint8_t *a, const uint8_t *b, int64_t n);

/* RITM's automatic clicker (isegm/inference/clicker.py, _get_next_click): false negatives truth & !pred
 * and false positives !truth & pred, each padded by one background pixel; their exact Euclidean
 * distance transforms (cv2.distanceTransform DIST_L2, precise: distance to the nearest pixel outside
 * the region, float32); zero at already clicked pixels (clicked may be NULL); the click is at the
 * maximum of the larger one, positive if the false-negative maximum is greater, else negative; the
 * first such pixel in row-major order. *found = 0 (click untouched) when both maxima are 0 (no error
 * left outside the clicked pixels; RITM would click (0, 0) negatively). */
i3rt_status i3_snc_next_click(i3_ctx *ctx, const uint8_t *truth, const uint8_t *pred, const uint8_t *clicked,
                              int64_t rows, int64_t cols, i3_snc_click *click, int *found);

/* The first slice to annotate: of all slices of the three axes, the one whose ground-truth cross-section
 * (truth [d, h, w], 0/1) is largest (ties: axial, coronal, sagittal, then the lower index; sum = its
 * area). Returns 0 when the truth is empty. */
int i3_snc_first_slice(const uint8_t *truth, int64_t d, int64_t h, int64_t w, i3_slice *out);

typedef struct {
    int iterations;  /* slices to annotate (3) */
    int max_clicks;  /* clicks per slice at most (5) */
    double stop_dice;/* a slice is done, and accurate, once its 2D Dice > this (0.9) */
} i3_snc_simulate_params;

#define I3_SNC_SIMULATE_DEFAULTS ((i3_snc_simulate_params){3, 5, 0.9})

typedef struct {
    i3_slice slice;      /* the slice annotated (first slice, then the recommendation) */
    double start_dice;   /* its start (the mask before any click) vs the truth's slice */
    int clicks;          /* clicks on it (0: the start was accepted) */
    double slice_dice;   /* its 2D mask vs the truth's slice when finished */
    int accurate;        /* slice_dice > stop_dice */
    double dice;         /* the 3D mask vs the truth after this iteration's propagation */
    double seconds;      /* wall clock of the iteration (clicks, propagation) */
} i3_snc_iteration;

/* The paper's protocol (Sec. 4.4) on the session: per iteration the simulated user begins the slice
 * (its start: the 3D prediction's slice after the first propagation with start_3d, else empty), clicks
 * (i3_snc_next_click on its current mask, the start's errors first) while its Dice <= stop_dice and
 * fewer than max_clicks were made (a start with Dice > stop_dice is accepted without a click), finishes
 * it (accurate if Dice > stop_dice), and the session propagates; the next slice is the recommendation.
 * out holds params->iterations entries; *n_done = iterations run (fewer when nothing is recommended).
 * truth: [d, h, w] 0/1. */
i3rt_status i3_snc_simulate(i3_snc_session *s, const uint8_t *truth, const i3_snc_simulate_params *params,
                            i3_snc_iteration *out, int *n_done);

#endif /* I3RT_SNC_SESSION_H */
