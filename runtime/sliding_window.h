/* nnU-Net v2's sliding-window inference on one preprocessed case, as nnunetv2 2.8.1's
 * nnUNetPredictor.predict_sliding_window_return_logits does it (inference/predict_from_raw_data.py,
 * inference/sliding_window_prediction.py):
 *
 *   pad the image with zeros to at least the patch size (pad_nd_image, padding split below/above)
 *   -> tiles at compute_steps_for_sliding_window(step_size) (2D configurations: every slice, tiles in-plane)
 *   -> per tile: the network, plus the mirrored inputs over every non-empty combination of the allowed
 *      axes (flipped back), averaged -> times the Gaussian importance map (sigma = patch / 8, scaled to a
 *      maximum of 10, stored as fp16, zeros replaced by the smallest nonzero value)
 *   -> summed into the logits and the weights, divided at the end, padding removed.
 *
 * nnunetv2 keeps both sums (and the division) in fp16 on every device. I3_ACCUMULATE_FP32 keeps them in
 * float32 (more accurate; differs from nnunetv2 by fp16 rounding, ~1e-3 relative of the logits);
 * I3_ACCUMULATE_FP16 reproduces nnunetv2's fp16 rounding step by step.
 *
 * On a device backend (cuda, emulated) either mode runs on the device: the image, the Gaussian map and
 * both sums (f16 in fp16 mode) stay in device memory, tiles are cut and mirrored there into the network's
 * input and its output accumulated there (kernels/sliding_window.cu), with the host loop's float
 * operations in its order; only the final logits are downloaded. When those volume buffers do not fit in
 * device memory next to the network's, and on the CPU backend, the host loop runs: the volume stays on
 * the host and each tile is sent through i3rt_model_forward. */
#ifndef I3RT_SLIDING_WINDOW_H
#define I3RT_SLIDING_WINDOW_H

#include "core.h"

#define I3_MAX_SW_STEPS 4096

typedef enum { I3_ACCUMULATE_FP32 = 0, I3_ACCUMULATE_FP16 = 1 } i3_accumulate_mode;

/* Called after every network forward: done of total forwards. */
typedef void (*i3_progress_fn)(void *user, int64_t done, int64_t total);

typedef struct {
    int dims;                /* 2 or 3: the configuration's patch dimensionality */
    int64_t patch[3];        /* (d, h, w); d = 1 for 2D */
    double step_size;        /* tile_step_size, 0 < s <= 1 */
    int n_mirror_axes;       /* 0 disables mirroring */
    int mirror_axes[3];      /* the checkpoint's inference_allowed_mirroring_axes (0-based, patch axes) */
    i3_accumulate_mode accumulate;
    i3_progress_fn progress;
    void *progress_user;
    int64_t progress_offset, progress_total; /* reported as offset + done of total (several folds) */
} i3_sliding_window_params;

/* compute_steps_for_sliding_window along one axis; returns the number of steps (<= I3_MAX_SW_STEPS), 0 if
 * image < tile or the step size is invalid. */
int i3_sliding_window_steps(int64_t image, int64_t tile, double step_size, int64_t *steps);

/* compute_gaussian(tile, sigma_scale=1/8, value_scaling_factor=10) as float32 values of the fp16 map,
 * [patch d, h, w] (for 2D the map is over (h, w) with d = 1). */
void i3_gaussian_importance_map(const int64_t patch[3], int dims, float *out);

/* Number of network forwards a prediction of `shape` makes (tiles x mirror passes). */
int64_t i3_sliding_window_forwards(const int64_t shape[3], const i3_sliding_window_params *p);

/* y [channels, tile] = x [channels, shape] read at offset + flip(t) for tile position t, where flip
 * mirrors t along the axes of flip_mask (bit a = axis a, 0 = d), and 0 where that lies outside x. With
 * offset = a tile's position minus the padding below the image it is the tile of the zero-padded image
 * (mirrored for a test-time augmentation pass); with offset 0 and tile = shape it flips a mirrored pass's
 * logits back. The reference of kernels/sliding_window.cu's sw_tile. */
void i3_sw_tile(const float *x, int64_t channels, const int64_t shape[3], const int64_t offset[3], const int64_t tile[3],
                int flip_mask, float *y);

/* Predicts logits [num_classes, shape] for data [channels, shape] with the model. In FP16 mode the
 * returned logits are fp16 values (held as float32). */
i3rt_status i3_sliding_window_predict(i3_ctx *ctx, i3rt_model *model, const float *data, int64_t channels,
                                      const int64_t shape[3], int64_t num_classes, const i3_sliding_window_params *p,
                                      float *logits);

#endif /* I3RT_SLIDING_WINDOW_H */
