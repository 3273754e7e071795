/* nnInteractive's inference session (nnInteractive 2.6.0, inference/inference_session.py
 * nnInteractiveInferenceSession), prompt for prompt, on i3rt's network kernels (docs/nninteractive.md).
 *
 * State per image: the normalized image (float32), the interaction channels [C, n0, n1, n2] stored as
 * fp16 bits (prev_seg + a positive/negative pair per prompt kind, as inference_info.json maps them), the
 * running interaction intensity (decay: every prompt is written at intensity I *= 1 / decay and the
 * network sees channels / I), the queued prediction centre and zoom of the last prompt, and a one-level
 * undo log of the pre-images of every region the last prompt overwrote. The public API
 * (include/i3rt.h, i3rt_ni_*) is this struct; runtime/api_nninteractive.c checks its arguments. */
#ifndef I3RT_NNINTERACTIVE_H
#define I3RT_NNINTERACTIVE_H

#include "core.h"
#include "np_random.h"

#define I3_NI_MAX_CHANNELS 16
#define I3_NI_MAX_ZOOM 4.0
#define I3_NI_ZOOM_GROWTH 1.5
/* the point's distance map is computed by brute force over its (2r + 1)^3 cube */
#define I3_NI_MAX_POINT_RADIUS 12
/* the nnInteractive version whose session this implements (inference_class_min_version is checked
 * against it) */
#define I3_NI_SESSION_VERSION "2.6.0"

/* nnInteractiveInferenceSession.SUPPORTED_INTERACTION_KEYS, in its order. */
typedef enum { I3_NI_SCRIBBLE = 0, I3_NI_LASSO, I3_NI_POINTS, I3_NI_BBOX2D, I3_NI_BBOX3D, I3_NI_N_KINDS } i3_ni_kind;

/* What inference_info.json says, after _load_capability_and_runtime_defaults and _apply_capability. */
typedef struct {
    int supported[I3_NI_N_KINDS];
    int supports_initial_label;
    int supports_zero_shot;       /* supports_zero_shot_label_refinement: reported, not used by the session */
    int pos[I3_NI_N_KINDS], neg[I3_NI_N_KINDS]; /* channel_mapping, positive indices */
    int prev_seg;
    int n_channels;               /* interaction channels including prev_seg */
    int point_radius;
    double scribble_thickness[3]; /* a GUI hint only */
    double decay;
} i3_ni_capability;

/* One region the last prompt overwrote, with its previous contents (or a channel that was zero). */
typedef enum { I3_NI_REC_INTERACTIONS = 0, I3_NI_REC_ZERO_CHANNEL, I3_NI_REC_TARGET } i3_ni_record_kind;

typedef struct {
    i3_ni_record_kind kind;
    int channel;
    int64_t lo[3], hi[3];
    void *data; /* uint16_t fp16 (interactions) or uint8_t (target), the region in C order */
} i3_ni_record;

/* The queue of prompts since the last prediction: only the last one's centre and zoom are used. */
typedef struct {
    int n;
    int64_t center[3];
    double zoom;
} i3_ni_queue;

typedef struct {
    int active;
    double intensity;
    uint32_t dirty;
    i3_ni_queue queue;
    i3_ni_record *records;
    int n, cap;
} i3_ni_undo_log;

struct i3rt_ni_session {
    i3_ctx *ctx;
    char model_dir[1024];
    char *capabilities_json; /* the capability snapshot (i3_ni_update_capabilities_json) */
    char license[512];       /* _load_license: the folder's LICENSE, first non-empty line */
    i3_ni_capability cap;
    i3rt_model *model;
    int64_t patch[3];
    double *point_strel; /* (2r + 1)^3: the normalized distance map of a ball of point_radius */
    int64_t strel_size;

    /* the image */
    int has_image;
    int64_t shape[3], n_voxels;
    double spacing[3];
    float *image;            /* normalized */
    uint16_t *interactions;  /* [n_channels, shape] fp16 */
    uint32_t dirty;          /* channels that may be nonzero */
    double intensity;
    uint8_t *target;         /* the caller's buffer, NULL until set */
    int do_autozoom;
    int override_capability_checks; /* prompts the capability metadata does not list still run */
    i3_ni_queue queue;
    i3_ni_undo_log undo;
    int has_last_paste;
    int64_t last_paste_lo[3], last_paste_hi[3]; /* unclipped, as nnInteractive's _last_paste_bbox */

    /* reused buffers of one patch */
    float *net_input;        /* [1 + n_channels, patch] */
    float *logits;           /* [2, patch] */
    uint8_t *pred;           /* [patch] */
    uint16_t *prev_pred;     /* [patch] fp16 prev_seg seen by the network */

    /* numpy's legacy global RNG for the refinement box cover's fallback: seeded with 0 at creation,
     * by tests as Python was seeded */
    np_random rng;

    i3rt_ni_timing timing;
};

typedef struct i3rt_ni_session i3_ni_session;

/* Loads the converted model folder and its capability metadata. */
i3rt_status i3_ni_create(i3_ctx *ctx, const char *model_dir, int fold, i3_ni_session **out);
void i3_ni_free(i3_ni_session *s);
/* Rebuilds capabilities_json from the session (at creation and when do_autozoom changes). */
i3rt_status i3_ni_update_capabilities_json(i3_ni_session *s);

i3rt_status i3_ni_set_image(i3_ni_session *s, const float *image, const int64_t shape[3], const double spacing[3]);
i3rt_status i3_ni_set_target_buffer(i3_ni_session *s, uint8_t *target, const int64_t shape[3]);
void i3_ni_reset_interactions(i3_ni_session *s);
i3rt_status i3_ni_undo(i3_ni_session *s, int *undone, i3rt_box *changed);

i3rt_status i3_ni_add_point(i3_ni_session *s, const int64_t coords[3], int positive, int run_prediction,
                            i3rt_ni_result *result);
i3rt_status i3_ni_add_box(i3_ni_session *s, const i3rt_box *box, int positive, int run_prediction,
                          i3rt_ni_result *result);
/* kind: I3_NI_SCRIBBLE or I3_NI_LASSO; region NULL: the whole image. */
i3rt_status i3_ni_add_mask(i3_ni_session *s, i3_ni_kind kind, const uint8_t *mask, const i3rt_box *region,
                           int positive, int run_prediction, i3rt_ni_result *result);
i3rt_status i3_ni_add_initial_seg(i3_ni_session *s, const uint8_t *mask, int run_prediction, i3rt_ni_result *result);
i3rt_status i3_ni_predict(i3_ni_session *s, int force_full_refine, i3rt_ni_result *result);

/* Seeds the refinement's fallback RNG like numpy.random.seed(seed) (tests replay Python's draws). */
void i3_ni_seed_rng(i3_ni_session *s, uint32_t seed);

/* fp16 of a double, rounded to nearest even (numpy/torch's conversion of a float64 to float16). */
uint16_t i3_ni_f64_to_f16(double v);

#endif /* I3RT_NNINTERACTIVE_H */
