/* nnInteractive's AutoZoom and refinement, the array parts (nnInteractive 2.6.0,
 * inference/inference_session.py and utils/{crop,bboxes,erosion_dilation,rounding}.py), so that the
 * session (runtime/nninteractive.c) reads like _predict:
 *
 *   ni_build_network_input  (zoom z)  -> network -> argmax pred
 *   ni_border_changed(pred, prev_pred) ? z = min(4, 1.5 z), again
 *   z > 1: ni_upsample_coarse -> ni_plan_refinement -> tiles in the returned order, each a
 *          ni_build_network_input at zoom 1 whose prev_seg comes from the refinement cache
 *
 * Layouts: volumes are [n0, n1, n2], last axis fastest; channels first ([C, n0, n1, n2]). The image is
 * float32 (normalized), the interaction channels fp16 bits (uint16_t, as the session stores them), masks
 * uint8 0/1. Boxes are i3rt_box, half-open, in voxel coordinates of the image; they may reach outside it
 * (outside is zero, as Python's zero padding).
 * Every function matches the Python bit for bit on the CPU (tests/test_ni_zoom.c against the Python
 * functions themselves, tests/gen_ni_zoom.py). */
#ifndef I3RT_NI_ZOOM_H
#define I3RT_NI_ZOOM_H

#include "core.h"
#include "np_random.h"

/* The session's volumes as the zoom functions read them. */
typedef struct {
    const float *image;           /* [n0, n1, n2] preprocessed_image[0] */
    const uint16_t *interactions; /* [n_channels, n0, n1, n2] fp16, stored (scaled by intensity) */
    int64_t shape[3];
    int n_channels;               /* including prev_seg */
    int prev_seg_channel;
    uint32_t nonzero_channels;    /* bit c clear: channel c is known to be all zero (skipped); ~0u if unknown */
    uint32_t dilation_channels;   /* _get_dilation_channels_for_resample: bit c set for the points and
                                     scribble channels (max-pooled before area resampling when zoomed) */
    double intensity;             /* current_interaction_intensity (the network sees channels / it) */
    /* Optional (refinement): read the prev_seg channel from this fp16 array of prev_seg_box's shape
     * (which may reach outside the image) wherever a voxel lies in prev_seg_box; NULL: from interactions.
     * This is the refinement cache of _refine_coarse_with_local_cache: the coarse prediction injected,
     * then each tile's prediction pasted, while image and prompt channels stay those of the volume. */
    const uint16_t *prev_seg;
    i3rt_box prev_seg_box;
} ni_volume;

/* _build_network_input, first lines: scaled = round(patch * zoom) (round half to even), box =
 * [c - s // 2, c + s // 2 + s % 2) per axis. */
void ni_scaled_patch(const int64_t patch[3], double zoom, const int64_t center[3], int64_t scaled[3],
                     i3rt_box *box);

/* utils/rounding.py round_to_nearest_odd(2 * zoom - 1): the max-pool window of the dilation channels. */
int ni_dilation_window(double zoom);

/* _build_network_input(center, zoom) with _normalize_interaction_channels_for_network_:
 *   input [1 + C, patch] float32: channel 0 the image, 1 + c interaction channel c (fp16 values);
 *   prev_pred [patch] fp16: what _detect_change_at_border compares against;
 *   box: scaled_bbox.
 * Not zoomed (round(patch * zoom) == patch): the crop of image and channels, zero outside the image,
 * prev_pred = crop of prev_seg. Zoomed: the crop of round(patch * zoom) voxels (zero padded) resampled
 * to the patch: image F.interpolate(mode="trilinear", align_corners=False) in float32; each channel
 * F.interpolate(mode="area") in fp16 (accumulated in fp16 as torch's CPU kernel does), the dilation
 * channels first max-pooled with ni_dilation_window(zoom) (iterative_3x3_same_padding_pool3d, the
 * window clipped to the crop); prev_pred = F.interpolate(prev_seg, mode="nearest"). Then channels other
 * than prev_seg become fp16(value / (float)intensity) unless intensity is 0 or 1.
 * prev_pred and box may be NULL (refinement tiles). The zoomed path never materializes the scaled
 * crop: it works in output planes, restricted to the nonzero part of each channel. */
i3rt_status ni_build_network_input(i3_ctx *ctx, const ni_volume *v, const int64_t patch[3], const int64_t center[3],
                                   double zoom, float *input, uint16_t *prev_pred, i3rt_box *box, int n_threads);

/* _detect_change_at_border(pred, prev_pred): over the 6 faces in the order (axis 0 first, last), (axis 1
 * ...), (axis 2 ...): true at the first face with more than 1500 differing voxels, or more than 100 and
 * max(prev, cur) / max(min(prev, cur), 1e-5) - 1 > 0.2 (prev, cur: sums over the face). */
int ni_border_changed(const uint8_t *pred, const uint16_t *prev_pred, const int64_t shape[3]);

/* _predict, before refinement: (F.interpolate(pred.float(), out, mode="trilinear") >= 0.5) as uint8,
 * up [out]. A copy when the shapes are equal. */
void ni_upsample_coarse(const uint8_t *pred, const int64_t in[3], const int64_t out[3], uint8_t *up, int n_threads);

/* iterative_3x3_same_padding_pool3d(x, k, use_min_pool) on a uint8 volume in place: min or max over the
 * k^3 window (k odd) clipped to the volume. */
i3rt_status ni_pool3d_u8(i3_ctx *ctx, uint8_t *x, const int64_t shape[3], int k, int use_min, int n_threads);

/* utils/bboxes.py generate_bounding_boxes(mask, bbox_size, stride="auto", margin, max_depth): greedy
 * cover of the mask's voxels by boxes of bbox_size (candidate centres on the stride grid of the mask's
 * bounding box, first best wins), then random_sampling_fallback (np.random.choice over the remaining
 * voxels in torch.nonzero's row-major order) for what the grid leaves. The mask is not modified.
 * *boxes (malloc'ed, caller frees; NULL when *n_boxes == 0) in the mask's coordinates, in order. */
i3rt_status ni_cover_boxes(i3_ctx *ctx, const uint8_t *mask, const int64_t shape[3], const int64_t bbox_size[3],
                           const int64_t margin[3], int max_depth, np_random *rng, i3rt_box **boxes, int *n_boxes,
                           int n_threads);

/* _plan_refinement_bboxes(pred_up, scaled_box, force_full_refine): the diff of the up-sampled coarse
 * prediction (pred_up [box size of scaled_box]) against prev_seg over the in-image part of scaled_box
 * (_compute_local_diff_map: min- then max-pool, window 5), plus prev_seg > 0.5 over the planning box when
 * force_full_refine (planning box = union with prev_seg's bounding box), covered by ni_cover_boxes(patch,
 * margin 24, max_depth 3); no box: one patch-sized box around last_center. prev_seg: the stored
 * channel [n0, n1, n2] fp16. *boxes (malloc'ed, caller frees) in image coordinates, in the order the
 * refinement tiles run. */
i3rt_status ni_plan_refinement(i3_ctx *ctx, const uint8_t *pred_up, const i3rt_box *scaled_box,
                               const uint16_t *prev_seg, const int64_t shape[3], const int64_t patch[3],
                               const int64_t last_center[3], int force_full_refine, np_random *rng,
                               i3rt_box **boxes, int *n_boxes, int n_threads);

#endif /* I3RT_NI_ZOOM_H */
