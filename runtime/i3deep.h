/* i3Deep (Gotkowski et al., MIDL 2022): interactive 3D segmentation in four stages, for one case.
 *
 *   1. Pre-segmentation and uncertainty: T ensemble members (nnU-Net folds and/or mirrored passes) are
 *      folded one at a time into the mean class probabilities p = 1/T sum_t p_t (Eq. 1); then one pass
 *      gives the normalized entropy H = -sum_c p_c log p_c / log C (Eq. 2), the pre-segmentation
 *      (argmax of p) and the max probability. Memory: one probability volume, never T.
 *   2. Slice acquisition over axial, coronal and sagittal slices (slice_select.h).
 *   3. Expert corrections: the chosen slices are exported (PNG previews with the pre-segmentation
 *      overlaid, the slice masks as PNG and NIfTI) and corrected slices are submitted back (from
 *      memory, PNG or NIfTI files), each validated before anything changes; a simulated expert takes
 *      the ground-truth slices instead.
 *   4. Refinement input: the corrected slices in an otherwise empty volume at their positions,
 *      concatenated to the image as one more channel (the paper's encoding: the class label on corrected
 *      voxels, 0 elsewhere; docs/i3deep.md); the refinement nnU-Net (loaded ahead of time) predicts the
 *      refined segmentation from it through predict. The expert waits for stages 3 (reading the
 *      corrections) and 4 only (i3_case_waiting_seconds).
 * Every stage is timed (wall clock, accumulated over calls). A failed call leaves the case as it was.
 * Volumes are [d, h, w] (w fastest), the layout of i3_volume. */
#ifndef I3RT_I3DEEP_H
#define I3RT_I3DEEP_H

#include "core.h"
#include "predict.h"
#include "slice_select.h"
#include "volume_io.h"

typedef enum {
    I3_STAGE_PRESEGMENTATION = 0, /* members predicted and folded in by i3_case_add_model_members */
    I3_STAGE_ENSEMBLE,       /* folding members into the mean probabilities */
    I3_STAGE_UNCERTAINTY,    /* entropy, pre-segmentation */
    I3_STAGE_RECOMMEND,      /* slice acquisition */
    I3_STAGE_EXPORT,         /* previews and masks for the expert */
    I3_STAGE_CORRECTIONS,    /* reading and checking corrected slices */
    I3_STAGE_REFINE_INPUT,   /* image + corrected-slice channel */
    I3_STAGE_REFINE,         /* the refinement nnU-Net on it */
    I3_STAGE_COUNT
} i3_stage;

const char *i3_stage_name(i3_stage stage);

typedef struct i3_case i3_case;

/* A case of `image` (copied: channels x d x h x w with its geometry) segmented into num_classes >= 2
 * classes (labels 0 .. num_classes - 1, 0 = background). */
i3rt_status i3_case_open(i3_ctx *ctx, const i3_volume *image, int num_classes, i3_case **out);
void i3_case_free(i3_case *c);

/* Stage 1. One ensemble member's logits or probabilities [num_classes, d, h, w]. */
i3rt_status i3_case_add_logits(i3_case *c, const float *logits);
i3rt_status i3_case_add_probabilities(i3_case *c, const float *probabilities);
/* Members from an nnU-Net model folder (i3rt weight files, predict.h): every fold is one member (Deep
 * Ensembles, the paper's choice), predicted alone on the case's image - with its test-time mirroring
 * averaged inside it when options->use_mirroring - and its probabilities folded in. folds as for
 * i3_predictor_load (n_folds 0: every fold in the folder); options NULL: predict's defaults. Memory:
 * two probability volumes besides the case's (one fold's output, the new folds' mean). */
i3rt_status i3_case_add_model_members(i3_case *c, const char *model_dir, const int *folds, int n_folds,
                                      const i3_predict_options *options);
/* Entropy, pre-segmentation and max probability of the mean over the members added so far. */
i3rt_status i3_case_compute_uncertainty(i3_case *c);

/* Stage 2. Recommends slices (params NULL: the paper's defaults). */
i3rt_status i3_case_recommend(i3_case *c, const i3_slice_select_params *params);
const i3_slice *i3_case_slices(const i3_case *c, int *n);

/* Stage 3, export: for every recommended slice, into directory dir (which must exist):
 *   <name>_<axis>_<index>_preview.png  the image (first channel, windowed) with the pre-segmentation
 *   <name>_<axis>_<index>_mask.png     the pre-segmentation slice as labels, for the expert to correct
 *   <name>_<axis>_<index>_mask.nii.gz  the same as a one-voxel-thick NIfTI at the slice's position
 * index printed with at least 3 digits; and <name>_slices.tsv: rank, axis, index, sum, relative. */
i3rt_status i3_case_export(i3_case *c, const char *dir, const char *name);

/* Stage 3, corrections. labels [rows, cols] in the slice layout of slice_select.h; `source` names
 * them in errors. Any slice of the volume may be corrected (recommended or not); a later correction
 * of the same voxel wins. Fails (and changes nothing) on a wrong axis, an index out of range, a wrong
 * shape or a label outside 0 .. num_classes - 1. */
i3rt_status i3_case_submit(i3_case *c, i3_axis axis, int64_t index, const int32_t *labels, int64_t rows,
                           int64_t cols, const char *source);
/* From a file: a label PNG, or a NIfTI holding either the slice (one voxel thick along the axis) or
 * the whole volume's grid (the slice is taken from it); NIfTI labels must be whole numbers. */
i3rt_status i3_case_submit_file(i3_case *c, i3_axis axis, int64_t index, const char *path);
/* The same with axis and index read from the file name, "..._<axis>_<index>[_...].png|.nii|.nii.gz"
 * (the names i3_case_export writes). */
i3rt_status i3_case_submit_named_file(i3_case *c, const char *path);
/* Simulated expert: every recommended slice corrected to the ground truth [d, h, w]. */
i3rt_status i3_case_simulate_expert(i3_case *c, const int32_t *ground_truth, const char *source);
/* The same with the ground truth read from a label NIfTI on the image's grid and geometry (whole
 * numbers; checked like the image's channels are against each other). */
i3rt_status i3_case_simulate_expert_file(i3_case *c, const char *path);
/* Slices corrected so far (in the order submitted, each once). */
const i3_slice *i3_case_corrected_slices(const i3_case *c, int *n);

/* Stage 4. The refinement network's input [channels + 1, d, h, w] (malloc'ed into *out): the image
 * channels, then the corrected label on corrected voxels and `unannotated` elsewhere (0 in the paper). */
i3rt_status i3_case_refinement_input(i3_case *c, float unannotated, float **out);
/* The refinement nnU-Net (a model folder as for i3_predictor_load: channels = the image's + 1, classes =
 * the case's), loaded ahead of the corrections so that loading is not part of the expert's wait. */
i3rt_status i3_case_load_refinement_model(i3_case *c, const char *model_dir, const int *folds, int n_folds);
/* Predicts the refined segmentation from the image and the corrections submitted so far (the paper's
 * encoding, unannotated = 0; building the input is timed as I3_STAGE_REFINE_INPUT, the network as
 * I3_STAGE_REFINE); options NULL: predict's defaults. Can run again after more corrections. Fails
 * without a loaded model; a failure keeps the previous refined segmentation (if any). */
i3rt_status i3_case_refine(i3_case *c, const i3_predict_options *options);
/* The expert's waiting time: corrections in -> refined segmentation out (stages corrections,
 * refine-input and refine; the simulated expert's reading of the truth counts as corrections). */
double i3_case_waiting_seconds(const i3_case *c);
/* Writes the refined segmentation (refined != 0) or the pre-segmentation as a label NIfTI on the image's
 * grid and geometry; written to a temporary name and renamed, so an error never leaves a partial file.
 * Fails when that segmentation does not exist yet. */
i3rt_status i3_case_save_segmentation(i3_case *c, const char *path, int refined);

/* Evaluation. Dice of class k = 2 |A_k and B_k| / (|A_k| + |B_k|) for k = 0 .. num_classes - 1 (NaN when
 * the class is in neither; all NaN if memory runs out). Labels outside 0 .. num_classes - 1 count for no
 * class. */
void i3_dice_per_class(const int32_t *a, const int32_t *b, int64_t n, int num_classes, double *dice);
/* The paper's annotation ratio (Sec. 5.4): n_slices / number of axial slices (fixed d) of the ground
 * truth [d, h, w] holding foreground (label > 0); 0 when there is none. */
double i3_annotation_ratio(int n_slices, const int32_t *ground_truth, int64_t d, int64_t h, int64_t w);

/* Results (NULL until their stage has run). */
const float *i3_case_mean_probabilities(const i3_case *c);   /* [num_classes, d, h, w] */
const float *i3_case_entropy(const i3_case *c);              /* [d, h, w], in [0, 1] */
const float *i3_case_max_probability(const i3_case *c);      /* [d, h, w] */
const int32_t *i3_case_presegmentation(const i3_case *c);    /* [d, h, w] */
const int32_t *i3_case_corrections(const i3_case *c);        /* [d, h, w], -1 = not corrected */
const int32_t *i3_case_refined(const i3_case *c);            /* [d, h, w], the last successful refine */
const i3_volume *i3_case_image(const i3_case *c);
int i3_case_members(const i3_case *c);
int i3_case_num_classes(const i3_case *c);
double i3_case_stage_seconds(const i3_case *c, i3_stage stage);
/* The refine stage's parts: nnU-Net's preprocessing, the network, the export (seconds, summed over refines). */
i3_predict_times i3_case_refine_times(const i3_case *c);

#endif /* I3RT_I3DEEP_H */
