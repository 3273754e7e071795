/* nnU-Net v2 whole-case prediction, as nnunetv2 2.8.1's nnUNetPredictor does it
 * (inference/predict_from_raw_data.py + inference/export_prediction.py), on i3rt weight files.
 *
 * A model folder holds fold_K.safetensors (tools/convert_pt/convert_nnunet.py) whose metadata carries the
 * plans, dataset.json, configuration name and the allowed mirroring axes. For one case:
 *   1. preprocess (preprocess.h): transpose_forward, crop to the nonzero box, normalize, resample to the
 *      configuration's spacing (2D: the first axis keeps its spacing)
 *   2. sliding-window logits for every fold (sliding_window.h), averaged over folds
 *   3. export: resample the logits back to the cropped shape (resampling_fn_probabilities), softmax when
 *      probabilities are asked for, argmax, paste into the uncropped shape (background outside the box;
 *      probabilities 1 for class 0 there), transpose_backward.
 * A cascade stage (a configuration with previous_stage, e.g. 3d_cascade_fullres after 3d_lowres) takes the
 * previous stage's segmentation of the case as nnUNetv2_predict's -prev_stage_predictions does: it goes
 * through the same transpose and crop (-1 outside the nonzero mask, which also widens use_mask_for_norm's
 * mask where the segmentation has labels outside it), is resampled with resampling_fn_seg
 * (i3_resample_labels) and appended one-hot, one channel per foreground label, to the image channels.
 * Region-based datasets (a label that lists several): one sigmoid output per region, painted in
 * regions_class_order where above 0.5.
 * Supported: 2d, 3d_fullres-like and cascade configurations, label and region datasets, readers
 * SimpleITKIO / NibabelIO (both give the (z, y, x) axis order read here). */
#ifndef I3RT_PREDICT_H
#define I3RT_PREDICT_H

#include "preprocess.h"
#include "sliding_window.h"
#include "volume_io.h"

#define I3_MAX_FOLDS 16
#define I3_MAX_CHANNELS 64
#define I3_MAX_CLASSES 256

typedef struct i3_predictor i3_predictor;

/* What a model folder says about the configuration (read from fold metadata). */
typedef struct {
    char configuration[64];
    int dims;                    /* 2 or 3 */
    int64_t patch[3];            /* (1, h, w) for 2D */
    double spacing[3];           /* target spacing; 2D: spacing[0] unused (kept from the image) */
    int transpose_forward[3], transpose_backward[3];
    int channels, num_classes;   /* the image's channels (dataset.json), the network's outputs */
    int n_regions;               /* region-based (outputs = regions, sigmoid): their count; 0 for labels */
    int region_class_order[I3_MAX_CLASSES]; /* the label each region paints, later regions on top */
    char previous_stage[64];     /* a cascade stage: the configuration before it; "" otherwise */
    int n_foreground;            /* a cascade stage: the one-hot channels after the image's */
    int foreground[I3_MAX_CLASSES]; /* their label values, ascending */
    i3_resample_params resample_seg; /* a cascade stage: resampling_fn_seg_kwargs */
    i3_norm_channel norm[I3_MAX_CHANNELS];
    i3_resample_params resample_data, resample_probabilities;
    int n_mirror_axes, mirror_axes[3];
    int n_folds, folds[I3_MAX_FOLDS];
    char file_ending[16];        /* dataset.json file_ending (".nii.gz") */
} i3_predictor_info;

/* Loads the given folds (n_folds == 0: every fold_K.safetensors in the folder, K ascending). Every fold
 * must describe the same configuration and network shape. */
i3rt_status i3_predictor_load(i3_ctx *ctx, const char *model_dir, const int *folds, int n_folds, i3_predictor **out);
void i3_predictor_free(i3_predictor *p);
/* What the folder's first fold says (configuration, labels or regions, file ending), without building its
 * networks; folds / n_folds list every fold_K.safetensors in it. */
i3rt_status i3_predictor_read_info(i3_ctx *ctx, const char *model_dir, i3_predictor_info *info);
const i3_predictor_info *i3_predictor_get_info(const i3_predictor *p);

/* Where a case's prediction spent its time (seconds): nnU-Net's preprocessing (transpose, crop, normalize,
 * resample to the network's spacing), the sliding-window network, and the export (resample back, softmax /
 * argmax, paste, transpose back). */
typedef struct {
    double preprocess, network, export_;
} i3_predict_times;

typedef struct {
    int use_mirroring;           /* test-time mirroring over the allowed axes */
    double step_size;            /* 0.5 */
    i3_accumulate_mode accumulate;
    i3_progress_fn progress;     /* after every network forward: done of total (all folds) */
    void *progress_user;
    i3_predict_times *times;     /* if not NULL: each part's seconds are added to it */
    const int32_t *previous_stage; /* a cascade stage: the previous stage's labels [D, H, W] of the image */
} i3_predict_options;

void i3_predict_options_default(i3_predict_options *o);

/* Predicts one case. image: [channels, D, H, W] with its geometry (spacing from the NIfTI header).
 * labels: [D, H, W]; probabilities (may be NULL): [num_classes, D, H, W]. */
i3rt_status i3_predict_case(i3_predictor *p, const i3_volume *image, const i3_predict_options *o, int32_t *labels,
                            float *probabilities);

/* LabelManager.convert_probabilities_to_segmentation: probs [num_classes, n] -> seg [n]; argmax (lowest class of
 * equal maxima), or for a region-based model each region above 0.5 paints its label in regions_class_order
 * (later regions on top). The export of i3_predict_case and `i3rt ensemble` use it. */
void i3_segmentation_from_probabilities(const i3_predictor_info *info, const float *probs, int64_t n, int32_t *seg,
                                        int n_threads);

/* Steps 1 alone (for tests): the preprocessed array as nnU-Net's run_case_npy returns it. *out is
 * malloc'ed [channels, out_shape]; bbox lo/hi in transposed axes. */
i3rt_status i3_predict_preprocess(i3_predictor *p, const i3_volume *image, float **out, int64_t out_shape[3],
                                  int64_t bbox_lo[3], int64_t bbox_hi[3]);

#endif /* I3RT_PREDICT_H */
