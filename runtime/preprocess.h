/* nnU-Net v2's preprocessing and its inverse, step by step as nnunetv2 2.8.1 does it
 * (preprocessing/preprocessors/default_preprocessor.py run_case_npy, cropping/cropping.py,
 * normalization/default_normalization_schemes.py, resampling/default_resampling.py,
 * inference/export_prediction.py):
 *
 *   transpose (plans' transpose_forward) -> crop to the bounding box of the nonzero mask (over all
 *   channels, holes filled) -> normalize each channel -> resample to the configuration's spacing
 *
 * Arrays are float32 [C, D, H, W] (W fastest), which is nnU-Net's (c, z, y, x) order as SimpleITK reads
 * a NIfTI file. Spacings are given in the same axis order (d, h, w). */
#ifndef I3RT_PREPROCESS_H
#define I3RT_PREPROCESS_H

#include "core.h"

/* nnunetv2.configuration.ANISO_THRESHOLD */
#define I3_ANISO_THRESHOLD 3.0

/* y = x transposed per channel like numpy's x.transpose([0, 1 + perm[0], 1 + perm[1], 1 + perm[2]]):
 * output axis a is input axis perm[a]; out_shape receives the permuted shape. */
void i3_transpose3(const float *x, int64_t channels, const int64_t shape[3], const int perm[3], float *y,
                   int64_t out_shape[3], int n_threads);

/* create_nonzero_mask: mask = any channel != 0, then scipy's binary_fill_holes with the default
 * 6-connected structure (background not connected to the array border becomes foreground).
 * Returns I3RT_ERR_OUT_OF_MEMORY through ctx if the flood-fill stack cannot be allocated. */
i3rt_status i3_nonzero_mask(i3_ctx *ctx, const float *x, int64_t channels, const int64_t shape[3], uint8_t *mask);

/* get_bbox_from_mask: half-open box [lo, hi) per axis; the whole array when the mask is empty. */
void i3_mask_bbox(const uint8_t *mask, const int64_t shape[3], int64_t lo[3], int64_t hi[3]);

/* y [C, box] = x [C, shape] restricted to the box [lo, hi). */
void i3_crop(const float *x, int64_t channels, const int64_t shape[3], const int64_t lo[3], const int64_t hi[3],
             float *y, int n_threads);

/* The normalization schemes nnunetv2 ships. */
typedef enum {
    I3_NORM_ZSCORE = 0, /* ZScoreNormalization */
    I3_NORM_CT,         /* CTNormalization */
    I3_NORM_NONE,       /* NoNormalization */
    I3_NORM_RESCALE_01, /* RescaleTo01Normalization */
    I3_NORM_RGB_01,     /* RGBTo01Normalization */
} i3_norm_scheme;

typedef struct {
    i3_norm_scheme scheme;
    int use_mask;       /* use_mask_for_norm (ZScore only): statistics and update inside the mask only */
    /* CT: the dataset's foreground intensity properties for this channel */
    double mean, std, percentile_00_5, percentile_99_5;
} i3_norm_channel;

/* Parses a scheme name from the plans ("CTNormalization", ...). Returns false if unknown. */
bool i3_norm_scheme_parse(const char *name, i3_norm_scheme *out);

/* Normalizes one channel of n voxels in place; mask (n bytes, nonzero = inside) is needed when
 * p->use_mask is set. Statistics in double. Fails (I3RT_ERR_INVALID_ARGUMENT) only for an RGB channel
 * outside [0, 255], which nnU-Net rejects too. */
i3rt_status i3_normalize_channel(i3_ctx *ctx, float *x, int64_t n, const uint8_t *mask, const i3_norm_channel *p,
                                 int channel);

/* compute_new_shape: round(old_spacing / new_spacing * old_shape) per axis (round half to even). */
void i3_compute_new_shape(const int64_t old_shape[3], const double old_spacing[3], const double new_spacing[3],
                          int64_t new_shape[3]);

/* resample_data_or_seg_to_shape (is_seg = False): skimage.transform.resize(order, mode="edge",
 * anti_aliasing=False) per channel, i.e. scipy.ndimage.zoom(grid_mode=True, mode="nearest") with the
 * spline prefilter on an edge-padded copy (12 voxels) for order > 1, then clipped to the input's range;
 * or, when the spacing is anisotropic (determine_do_sep_z_and_axis), that resize in-plane slice by slice
 * followed by map_coordinates(order=order_z, mode="nearest") along the low-resolution axis. Computed in
 * double, stored as float32. Nothing is done (a copy) when the shapes are equal. */
typedef struct {
    int order;            /* 1 or 3 */
    int order_z;          /* 0 or 1 */
    int force_separate_z; /* -1: None (decide from the spacings), 0: False, 1: True */
} i3_resample_params;

/* determine_do_sep_z_and_axis; *axis is -1 when not separate. */
void i3_resample_decide(const i3_resample_params *p, const double current_spacing[3], const double new_spacing[3],
                        int *do_separate_z, int *axis);

i3rt_status i3_resample(i3_ctx *ctx, const float *x, int64_t channels, const int64_t in_shape[3],
                        const int64_t out_shape[3], const double current_spacing[3], const double new_spacing[3],
                        const i3_resample_params *p, float *y, int n_threads);

/* resample_data_or_seg_to_shape with is_seg = True, for a cascade stage's previous-stage segmentation:
 * batchgenerators' resize_segmentation per label (order 1: each label's indicator resized as above, in
 * double, clipped to [0, 1]; the voxel takes the label with the largest score, an exact tie goes to the
 * nearest neighbour's label when it is one of the tied ones, else to the smallest: seg_tiebreak "nearest"),
 * or, with a separate axis, that slice by slice in-plane followed by the nearest slice along the axis
 * (order_z 0). Labels are int16 (-1 marks voxels outside the nonzero mask, as crop_to_nonzero writes).
 * A copy when the shapes are equal. */
i3rt_status i3_resample_labels(i3_ctx *ctx, const int16_t *x, const int64_t in_shape[3], const int64_t out_shape[3],
                               const double current_spacing[3], const double new_spacing[3],
                               const i3_resample_params *p, int16_t *y, int n_threads);

#endif /* I3RT_PREPROCESS_H */
