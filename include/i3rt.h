/* i3rt: inference engine for interactive 3D medical image segmentation.
 *
 * The public C API. Everything is reached through opaque handles; every call that can fail returns an
 * i3rt_status and leaves a message naming the file / tensor / shape in its context
 * (i3rt_context_error). There is no global state: two contexts never share anything, and the caller
 * decides how many threads a context may use and which backend runs the work. */
#ifndef I3RT_H
#define I3RT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define I3RT_VERSION "0.1.0"

typedef enum {
    I3RT_OK = 0,
    I3RT_ERR_INVALID_ARGUMENT, /* a caller's argument is out of range or NULL */
    I3RT_ERR_IO,               /* a file could not be opened, read or written */
    I3RT_ERR_FORMAT,           /* a file is corrupt, truncated or not what it claims to be */
    I3RT_ERR_UNSUPPORTED,      /* valid input that i3rt does not implement (network block, dtype...) */
    I3RT_ERR_SHAPE,            /* tensor shapes do not fit together */
    I3RT_ERR_OUT_OF_MEMORY,    /* host or device memory ran out */
    I3RT_ERR_BACKEND,          /* the backend failed (device error, backend not built in) */
} i3rt_status;

typedef enum {
    I3RT_BACKEND_CPU = 0,      /* reference + fast CPU kernels */
    I3RT_BACKEND_CUDA = 1,     /* hand-written CUDA kernels on a GPU */
    I3RT_BACKEND_EMULATED = 2, /* the same CUDA kernels on the CPU through the SIMT emulator */
} i3rt_backend_kind;

/* Arithmetic of the convolutions. F32 everywhere by default (results match the CPU backend up to
 * summation order); the CUDA backends can run them on tensor cores with operands rounded to f16,
 * bf16 or tf32 and f32 accumulation. */
typedef enum {
    I3RT_PRECISION_F32 = 0,
    I3RT_PRECISION_F16 = 1,
    I3RT_PRECISION_BF16 = 2,
    I3RT_PRECISION_TF32 = 3,
} i3rt_precision;

typedef struct i3rt_context i3rt_context;
typedef struct i3rt_model i3rt_model;

/* A short name for a status code ("I3RT_ERR_FORMAT"). Never NULL. */
const char *i3rt_status_name(i3rt_status status);

/* Creates a context. n_threads >= 1 is how many CPU threads its work may use. */
i3rt_status i3rt_context_create(i3rt_context **out, int n_threads, i3rt_backend_kind backend);
void i3rt_context_free(i3rt_context *ctx);
/* Sets the convolution precision of the models loaded afterwards on this context. The CPU backend
 * computes in f32 only: anything else is I3RT_ERR_UNSUPPORTED there. */
i3rt_status i3rt_context_set_precision(i3rt_context *ctx, i3rt_precision precision);
/* The message of the last failed call on this context ("" if none). Valid until the next call. */
const char *i3rt_context_error(const i3rt_context *ctx);
/* Device memory that this context's models and sessions hold on the CUDA backend (real or emulated), in
 * bytes: now, and the most at any time since the context was created (either may be NULL). Counts every
 * buffer i3rt allocates there (weights, activations, scratch, the sliding window's volumes), not the
 * memory of the CUDA context itself. 0 and 0 on the CPU backend. */
i3rt_status i3rt_context_device_memory(const i3rt_context *ctx, size_t *in_use, size_t *peak);

/* Loads an i3rt weight file (docs/weights-format.md), validates it against its network description and
 * builds the network. The file's bytes are read once; the model does not keep the file open. */
i3rt_status i3rt_model_load(i3rt_context *ctx, const char *path, i3rt_model **out);
void i3rt_model_free(i3rt_model *model);

typedef struct {
    char network[64];       /* "PlainConvUNet", "ResidualEncoderUNet" */
    int dims;               /* 2 or 3 */
    int in_channels;
    int num_classes;        /* output channels (logits) */
    int n_stages;
    int64_t patch_size[3];  /* d, h, w of the configuration's patch (d = 1 for 2D) */
    int64_t total_stride[3];/* product of the strides per axis: input sizes must be multiples of it */
    int64_t n_parameters;
    size_t weight_bytes;    /* as held in memory by the backend */
} i3rt_model_info;

i3rt_status i3rt_model_get_info(const i3rt_model *model, i3rt_model_info *out);

/* Plans the activation memory of a forward pass on an input of spatial size d x h x w (d = 1 for 2D
 * networks) without running it. *peak_bytes is the arena the forward will use. */
i3rt_status i3rt_model_plan(i3rt_model *model, const int64_t spatial[3], size_t *peak_bytes);

/* Writes a human-readable description of the network (stages, shapes at the given input size,
 * parameters, planned peak memory) into buf (always NUL-terminated). Returns the length needed. */
size_t i3rt_model_describe(i3rt_model *model, const int64_t spatial[3], char *buf, size_t buf_size);

/* One forward pass. input: float32 [in_channels, d, h, w] (row-major, w fastest); logits: float32
 * [num_classes, d, h, w]. Each spatial size must be divisible by the network's total stride per axis. */
i3rt_status i3rt_model_forward(i3rt_model *model, const float *input, const int64_t spatial[3], float *logits);

/* ---- i3Deep: interactive 3D segmentation of one case (docs/i3deep.md) -----------------------------
 *
 * A case is an image and a number of classes. Its stages, in order:
 *   1. i3rt_case_add_model (pre-segmentation: every fold of a model folder is one ensemble member),
 *      i3rt_case_compute_uncertainty (mean probabilities, entropy, pre-segmentation);
 *   2. i3rt_case_recommend, i3rt_case_get_slices: the slices the expert should correct;
 *   3. i3rt_case_export (PNG/NIfTI files for the expert), i3rt_case_submit* (corrected slices) or a
 *      simulated expert (i3rt_case_simulate_expert*: the recommended slices of a ground truth);
 *   4. i3rt_case_load_refinement_model (ahead of time), i3rt_case_refine, then
 *      i3rt_case_get_segmentation / i3rt_case_save_segmentation.
 * Volumes are [d, h, w] arrays with w fastest (NIfTI z, y, x; nothing is reoriented). A call that fails
 * leaves the case as it was; its message is in the context. */
typedef struct i3rt_case i3rt_case;

/* An axial slice fixes d (NIfTI z), a coronal one h (y), a sagittal one w (x). The slice is a plane of
 * rows x cols, row-major: axial [h, w], coronal [d, w], sagittal [d, h]. */
typedef enum { I3RT_AXIAL = 0, I3RT_CORONAL = 1, I3RT_SAGITTAL = 2 } i3rt_axis;

/* Stages, each timed in wall-clock seconds (added up over calls). */
typedef enum {
    I3RT_STAGE_PRESEGMENTATION = 0, /* the ensemble members' predictions */
    I3RT_STAGE_ENSEMBLE,            /* folding members into the mean probabilities */
    I3RT_STAGE_UNCERTAINTY,         /* entropy and pre-segmentation */
    I3RT_STAGE_RECOMMEND,           /* slice acquisition */
    I3RT_STAGE_EXPORT,              /* files for the expert */
    I3RT_STAGE_CORRECTIONS,         /* reading and checking corrected slices */
    I3RT_STAGE_REFINE_INPUT,        /* image + corrected-slice channel */
    I3RT_STAGE_REFINE,              /* the refinement network */
    I3RT_STAGE_COUNT
} i3rt_stage;

typedef struct {
    double min_dist;   /* suppression window, fraction of the axis length in [0, 1] (paper: 0.0234) */
    double min_uncert; /* least slice uncertainty, fraction of its axis's largest in [0, 1] (0.1) */
    int max_slices;    /* most slices over the three axes, >= 1 (12) */
} i3rt_recommend_params;

typedef struct {
    i3rt_axis axis;
    int64_t index;
    double uncertainty; /* the slice's summed normalized entropy */
    double relative;    /* uncertainty / the largest slice sum of the same axis */
} i3rt_slice;

/* The paper's values (0.0234, 0.1, 12). */
void i3rt_recommend_params_default(i3rt_recommend_params *params);
/* "presegmentation", "ensemble", ..., "refine"; "?" for anything else. */
const char *i3rt_stage_name(i3rt_stage stage);

/* Opens a case from one NIfTI file per image channel (nnU-Net's CASE_0000.nii.gz, CASE_0001.nii.gz, ...;
 * one 4D file holds all channels), segmented into num_classes >= 2 classes (0 = background). The case
 * uses ctx (threads, backend, messages) until it is freed. */
i3rt_status i3rt_case_open(i3rt_context *ctx, const char *const *image_paths, int n_paths, int num_classes,
                           i3rt_case **out);
void i3rt_case_free(i3rt_case *c);
/* The image's grid: shape = {d, h, w} (NIfTI z, y, x); the segmentation has d * h * w voxels. */
i3rt_status i3rt_case_get_shape(const i3rt_case *c, int64_t shape[3]);

/* Stage 1. The folds of an nnU-Net model folder as ensemble members, each predicted alone (folds NULL
 * and n_folds 0: every fold in the folder); use_mirroring: nnU-Net's test-time mirroring inside each. */
i3rt_status i3rt_case_add_model(i3rt_case *c, const char *model_dir, const int *folds, int n_folds,
                                int use_mirroring);
i3rt_status i3rt_case_compute_uncertainty(i3rt_case *c);

/* Stage 2. params NULL: the defaults. */
i3rt_status i3rt_case_recommend(i3rt_case *c, const i3rt_recommend_params *params);
/* The recommended slices, most uncertain first: *n_slices is their number; the first min(*n_slices,
 * capacity) are copied to slices (which may be NULL when capacity is 0). */
i3rt_status i3rt_case_get_slices(const i3rt_case *c, i3rt_slice *slices, int capacity, int *n_slices);

/* Stage 3. For every recommended slice, into the existing directory dir: <name>_<axis>_<index>_preview.png
 * (the image with the pre-segmentation), _mask.png and _mask.nii.gz (the pre-segmentation's slice for the
 * expert to correct), and <name>_slices.tsv. */
i3rt_status i3rt_case_export(i3rt_case *c, const char *dir, const char *name);
/* A corrected slice: labels [rows, cols] in the layout above, each in 0 .. num_classes - 1. Any slice may
 * be corrected; a later correction of a voxel wins. */
i3rt_status i3rt_case_submit(i3rt_case *c, i3rt_axis axis, int64_t index, const int32_t *labels, int64_t rows,
                             int64_t cols);
/* A corrected slice from a file: a label PNG or NIfTI (the slice, or a volume on the case's grid) named
 * as the export names it, "..._<axial|coronal|sagittal>_<index>[_...].png|.nii|.nii.gz". */
i3rt_status i3rt_case_submit_file(i3rt_case *c, const char *path);
/* Simulated expert: every recommended slice corrected to the ground truth, given as labels [d, h, w] or
 * as a label NIfTI on the image's grid and geometry. */
i3rt_status i3rt_case_simulate_expert(i3rt_case *c, const int32_t *ground_truth);
i3rt_status i3rt_case_simulate_expert_file(i3rt_case *c, const char *ground_truth_path);

/* Stage 4. The refinement nnU-Net (input: the image's channels + 1 corrected-slice channel; the case's
 * classes), best loaded before the expert starts. folds as for i3rt_case_add_model. */
i3rt_status i3rt_case_load_refinement_model(i3rt_case *c, const char *model_dir, const int *folds, int n_folds);
/* The refined segmentation from the corrections so far; may run again after more corrections. */
i3rt_status i3rt_case_refine(i3rt_case *c, int use_mirroring);

/* The refined segmentation (refined != 0) or the pre-segmentation, into labels [d, h, w] (n_voxels =
 * d * h * w), or saved as a label NIfTI with the image's geometry (written whole or not at all). */
i3rt_status i3rt_case_get_segmentation(const i3rt_case *c, int refined, int32_t *labels, int64_t n_voxels);
i3rt_status i3rt_case_save_segmentation(i3rt_case *c, const char *path, int refined);

/* Seconds spent in a stage, and the expert's waiting time: corrections in -> refined segmentation out
 * (stages corrections, refine-input and refine). */
double i3rt_case_stage_seconds(const i3rt_case *c, i3rt_stage stage);
double i3rt_case_waiting_seconds(const i3rt_case *c);

/* ---- Slice-and-Conquer: planar-to-3D interactive segmentation (runtime/snc_session.c, docs/snc.md) ----
 * Cho et al., WACV 2024: the user clicks on one slice at a time (RITM's 2D network, one predictor per
 * slice), accepts ("finishes") its mask, and a guided 3D network turns the image, the previous 3D
 * prediction and the accepted slices into a 3D mask; the next slice to annotate is recommended from the
 * prediction's confidence; TV-L1 optical flow pulls the 3D mask towards the accurate slices. Slices
 * and axes are those of i3Deep above (i3rt_axis; planes [rows, cols]); a click is (y, x) = (row,
 * column) in that plane. A call that fails leaves the session as it was; its message is in the context. */
typedef struct i3rt_snc_session i3rt_snc_session;

typedef struct {
    double tau;        /* confidence threshold of the recommendation, in [0, 1] (0.9) */
    int skip;          /* slices within this distance of an annotated one are not recommended (1) */
    double gamma;      /* post-processing fall-off max(1 - gamma |k|, 0) around an accurate slice (0.25) */
    int postprocess;   /* TV-L1 post-processing on (1) */
    int zoom_in;       /* RITM's zoom-in around the object on later clicks (1) */
    int with_flip;     /* RITM's horizontal flip averaging (1) */
    int start_3d;      /* after a propagation a slice's 2D clicks start from the 3D prediction's slice (1, the
                          paper), or from an empty mask (0) */
} i3rt_snc_params;

/* Stages, each timed in wall-clock seconds (added up over calls). */
typedef enum {
    I3RT_SNC_STAGE_OPEN = 0,    /* reading and windowing the image */
    I3RT_SNC_STAGE_LOAD,        /* loading the networks */
    I3RT_SNC_STAGE_CLICK,       /* the 2D network, all clicks */
    I3RT_SNC_STAGE_GUIDED,      /* the guided 3D network */
    I3RT_SNC_STAGE_RECOMMEND,   /* confidence and the next slice */
    I3RT_SNC_STAGE_POSTPROCESS, /* TV-L1 post-processing, accepted slices pasted */
    I3RT_SNC_STAGE_EXPORT,      /* NIfTI and PNG files */
    I3RT_SNC_STAGE_COUNT
} i3rt_snc_stage;

/* One iteration of the simulated user (i3rt_snc_simulate). */
typedef struct {
    i3rt_axis axis;
    int64_t index;     /* the slice annotated: the first slice, then the recommended ones */
    double start_dice; /* its start (the 3D prediction's slice, or empty) vs the truth's slice */
    int clicks;        /* clicks on it (0: the start was accepted) */
    double slice_dice; /* its accepted 2D mask vs the truth's slice */
    int accurate;      /* slice_dice > 0.9: it steers the post-processing */
    double dice;       /* the 3D mask vs the truth after this iteration */
    double seconds;    /* clicks + propagation, wall clock */
} i3rt_snc_iteration;

void i3rt_snc_params_default(i3rt_snc_params *params);
/* "open", "load", "click", "guided-3d", "recommend", "postprocess", "export"; "?" otherwise. */
const char *i3rt_snc_stage_name(i3rt_snc_stage stage);

/* Opens a session on a NIfTI image (its first channel), windowed to [0, 1] at its 0.5th and 99.5th
 * percentiles (RITM takes images in [0, 1]). params NULL: the defaults. Fails on an empty or constant
 * image and on a side shorter than 2 voxels. */
i3rt_status i3rt_snc_open(i3rt_context *ctx, const char *image_path, const i3rt_snc_params *params,
                          i3rt_snc_session **out);
void i3rt_snc_free(i3rt_snc_session *s);
/* shape = {d, h, w} (NIfTI z, y, x). */
i3rt_status i3rt_snc_get_shape(const i3rt_snc_session *s, int64_t shape[3]);
/* The 2D network: a RITM-HRNet18 weight file (tools/convert_pt/convert_ritm.py). Refused while a slice
 * is being clicked on (finish it first). */
i3rt_status i3rt_snc_load_2d(i3rt_snc_session *s, const char *path);
/* The guided 3D network (convert_ritm.py --acs --guided). */
i3rt_status i3rt_snc_load_3d(i3rt_snc_session *s, const char *path);

/* A click on slice (axis, index) at (y, x); positive: object (1) or background (0). mask (may be NULL):
 * the slice's new 2D mask, n_pixels = rows * cols of the slice. The first click on a slice starts RITM's
 * predictor from the 3D prediction's slice (probabilities) after a propagation with start_3d, else from
 * an empty mask. A click on a finished slice reopens it. */
i3rt_status i3rt_snc_click(i3rt_snc_session *s, i3rt_axis axis, int64_t index, double y, double x, int positive,
                           uint8_t *mask, int64_t n_pixels);
/* Opens slice (axis, index) for clicks without clicking: mask (may be NULL, n_pixels as for a click)
 * gets its start, the 3D prediction's slice after a propagation with start_3d (what the first click
 * refines; a viewer shows it), else empty. A slice already begun, clicked or finished is unchanged. */
i3rt_status i3rt_snc_begin_slice(i3rt_snc_session *s, i3rt_axis axis, int64_t index, uint8_t *mask,
                                 int64_t n_pixels);
/* The current 2D mask of a begun, clicked or finished slice. */
i3rt_status i3rt_snc_get_slice_mask(i3rt_snc_session *s, i3rt_axis axis, int64_t index, uint8_t *mask,
                                    int64_t n_pixels);
/* Accepts the slice's mask (no click: its start, i.e. the 3D prediction's slice after a propagation with
 * start_3d, else an empty mask); accurate != 0 also uses it in the post-processing. */
i3rt_status i3rt_snc_finish_slice(i3rt_snc_session *s, i3rt_axis axis, int64_t index, int accurate);
/* The guided 3D step over every finished slice, the recommendation, the post-processing. */
i3rt_status i3rt_snc_propagate(i3rt_snc_session *s);
/* After a propagation: *found = 1 and the recommended slice (uncertainty = its under-confident voxels,
 * relative = their fraction of the slice), or *found = 0 when no slice is left or all are confident. */
i3rt_status i3rt_snc_recommend(i3rt_snc_session *s, i3rt_slice *slice, int *found);

/* The 3D mask [d, h, w] (0/1, zeros before the first propagation), or saved as a label NIfTI on the
 * image's grid and geometry (written whole or not at all). */
i3rt_status i3rt_snc_get_mask(const i3rt_snc_session *s, uint8_t *mask, int64_t n_voxels);
i3rt_status i3rt_snc_save_mask(i3rt_snc_session *s, const char *path);
/* An RGB PNG of a slice with its mask overlaid (the 2D mask of a clicked or finished slice, else the 3D
 * mask), the highest row at the top as i3Deep's previews. */
i3rt_status i3rt_snc_save_preview(i3rt_snc_session *s, i3rt_axis axis, int64_t index, const char *path);

/* The simulated user on a fresh session (paper Sec. 4.4): the first slice is the truth's largest
 * cross-section over the three axes, then the recommended ones; per slice, from its start (see
 * i3rt_snc_click; a start with Dice > 0.9 is accepted without a click), RITM's clicker (a click at the
 * farthest point of the larger error region) until the slice's Dice > 0.9 or 5 clicks; then propagate.
 * truth: [d, h, w], non-zero = object. results holds `iterations` entries; *n_done = how many ran. */
i3rt_status i3rt_snc_simulate(i3rt_snc_session *s, const uint8_t *truth, int64_t n_voxels, int iterations,
                              i3rt_snc_iteration *results, int *n_done);

double i3rt_snc_stage_seconds(const i3rt_snc_session *s, i3rt_snc_stage stage);

/* ---- nnInteractive: promptable 3D segmentation (runtime/nninteractive*.c, docs/nninteractive.md) ----
 * The session of nnInteractive's nnInteractiveInferenceSession, prompt for prompt: an image, a target
 * buffer that receives the object's mask, prompts (point, 2D box, scribble, lasso, initial
 * segmentation), each positive or negative, and a prediction after each prompt (AutoZoom on by default).
 * Arrays are [n0, n1, n2] in the caller's axis order, last axis fastest; nnInteractive works in voxel
 * space, so no axis is reoriented and the spacing is only recorded. Coordinates are voxel indices in
 * that order; boxes are half-open [lo, hi). A call that fails leaves the session as it was. */
typedef struct i3rt_ni_session i3rt_ni_session;

typedef struct {
    int64_t lo[3], hi[3]; /* half-open; an empty box has lo == hi == 0 */
} i3rt_box;

/* What one prompt (or predict) did: whether the network ran, and the box of the target buffer it
 * changed (only that region is ever written). */
typedef struct {
    int ran_prediction;
    i3rt_box changed;
} i3rt_ni_result;

/* Stages of the last prediction, in wall-clock seconds, and counters. */
typedef struct {
    double encode;        /* writing the prompt into the interaction channels */
    double network_input; /* cropping / resampling image and interactions into patches */
    double network;       /* forward passes */
    double paste;         /* results into the previous-segmentation channel and target buffer */
    double total;         /* prompt in -> mask out */
    int n_forwards;       /* forward passes (AutoZoom steps + refinement tiles) */
    double zoom;          /* the last AutoZoom factor (1 = no zoom) */
} i3rt_ni_timing;

/* A model folder in nnInteractive's layout converted by tools/convert_pt/convert_nninteractive.py:
 * inference_info.json, plans.json, dataset.json, fold_K.safetensors (fold -1: the only fold). */
i3rt_status i3rt_ni_session_create(i3rt_context *ctx, const char *model_dir, int fold, i3rt_ni_session **out);
void i3rt_ni_session_free(i3rt_ni_session *s);
/* The capability snapshot, JSON as nnInteractive's server answers GET /capabilities (supported_interactions,
 * channel_mapping, patch_size, do_autozoom, license, ...); owned by the session, current until
 * i3rt_ni_set_do_autozoom changes it. */
const char *i3rt_ni_capabilities_json(const i3rt_ni_session *s);

/* The image (copied; normalized as the session does). Resets the interactions and the undo record.
 * spacing may be NULL. */
i3rt_status i3rt_ni_set_image(i3rt_ni_session *s, const float *image, const int64_t shape[3],
                              const double spacing[3]);
/* The caller's mask buffer (the image's shape, 0/1), written in place by every prediction; it must
 * outlive its use by the session. Set it after i3rt_ni_set_image, which forgets the previous one. */
i3rt_status i3rt_ni_set_target_buffer(i3rt_ni_session *s, uint8_t *target, const int64_t shape[3]);
i3rt_status i3rt_ni_set_do_autozoom(i3rt_ni_session *s, int do_autozoom);
/* override_capability_checks of nnInteractive's prompts: a prompt kind the checkpoint's capability
 * metadata marks unsupported runs anyway on its mapped channels (off by default). A 3D box on a
 * checkpoint without bbox3d stays an error, as in nnInteractive. */
i3rt_status i3rt_ni_set_override_capability_checks(i3rt_ni_session *s, int override);
i3rt_status i3rt_ni_reset_interactions(i3rt_ni_session *s);
/* Reverts the last prompt (one level, as nnInteractive); *undone = 0 when there was nothing to undo.
 * changed (may be NULL): the box of the target buffer that the undo restored. */
i3rt_status i3rt_ni_undo(i3rt_ni_session *s, int *undone, i3rt_box *changed);

/* Prompts. positive: include (1) or exclude (0); run_prediction: predict right away. result may be
 * NULL. A point is a voxel; a box must be 2D (one axis of size 1); a scribble or lasso is a 0/1 mask of
 * the image's shape (region NULL) or of region's shape, placed at region (a lasso is the filled
 * contour, as the client rasterizes it). */
i3rt_status i3rt_ni_add_point(i3rt_ni_session *s, const int64_t coords[3], int positive, int run_prediction,
                              i3rt_ni_result *result);
i3rt_status i3rt_ni_add_box(i3rt_ni_session *s, const i3rt_box *box, int positive, int run_prediction,
                            i3rt_ni_result *result);
i3rt_status i3rt_ni_add_scribble(i3rt_ni_session *s, const uint8_t *mask, const i3rt_box *region, int positive,
                                 int run_prediction, i3rt_ni_result *result);
i3rt_status i3rt_ni_add_lasso(i3rt_ni_session *s, const uint8_t *mask, const i3rt_box *region, int positive,
                              int run_prediction, i3rt_ni_result *result);
/* Replaces everything with an initial mask of the image's shape (resets the interactions). */
i3rt_status i3rt_ni_add_initial_seg(i3rt_ni_session *s, const uint8_t *mask, int run_prediction,
                                    i3rt_ni_result *result);
/* Predicts from the prompts so far (force_full_refine: refine the whole zoomed region). */
i3rt_status i3rt_ni_predict(i3rt_ni_session *s, int force_full_refine, i3rt_ni_result *result);
i3rt_status i3rt_ni_get_timing(const i3rt_ni_session *s, i3rt_ni_timing *out);

#ifdef __cplusplus
}
#endif
#endif /* I3RT_H */
