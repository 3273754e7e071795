/* Slice-and-Conquer's next-slice recommendation (paper Sec. 3.3, Eq. 2; docs/snc.md).
 *
 * Confidence of a voxel: the maximum softmax probability (MSP) of the 3D prediction, max_c p_c; for a
 * single sigmoid output p, max(p, 1 - p). A voxel is under-confident when its confidence is <= tau
 * (the complement of the paper's C^[tau] = 1[C > tau]). For every slice of the three axes (axes and
 * slice layout of slice_select.h) the score is the number of under-confident voxels,
 *   score(a, i) = #{v in slice i of axis a : C(v) <= tau} = area(a) - ||C^[tau][a, i]||_1,
 * and the recommendation is the slice with the largest score, leaving out every slice within `skip`
 * slices of an annotated slice on the same axis (the annotated slice itself included). Ties: axial
 * before coronal before sagittal, then the lower index. Eq. 2's argmin of ||C^[tau][a, i]||_1 is the
 * same slice when the slices compared have the same area; across axes of different areas the paper's
 * text ("the number of under-confident pixels is greater") is what this maximizes. No slice is
 * recommended when every candidate scores 0 (the prediction is confident everywhere) or none is left. */
#ifndef I3RT_SNC_RECOMMEND_H
#define I3RT_SNC_RECOMMEND_H

#include "core.h"
#include "slice_select.h"

typedef struct {
    double tau;  /* confidence threshold in [0, 1]: under-confident when confidence <= tau */
    int skip;    /* slices within this distance of an annotated one (same axis) are left out, >= 0 */
} i3_snc_recommend_params;

/* tau 0.9 (the paper gives no value), skip 1 (the annotated slice and its two neighbours). */
#define I3_SNC_RECOMMEND_DEFAULTS ((i3_snc_recommend_params){0.9, 1})

/* Confidence [s] from probabilities [c, s] (c >= 1 classes of s voxels, each finite in [0, 1]):
 * c == 1 is a sigmoid foreground probability, max(p, 1 - p); c >= 2 softmax probabilities, max_c p_c. */
i3rt_status i3_snc_confidence(i3_ctx *ctx, const float *probs, int64_t c, int64_t s, float *confidence,
                              int n_threads);

/* The choice from per-slice scores: scores[a] has len[a] values (a = i3_axis), finite and >= 0.
 * annotated: n_annotated slices (axis and index are read) already annotated, may be NULL if 0.
 * *found = 1 and *out = the slice (sum = its score, relative = score / area if areas is not NULL,
 * else 0), or *found = 0 and out untouched. */
i3rt_status i3_snc_recommend_from_scores(i3_ctx *ctx, const double *const scores[3], const int64_t len[3],
                                         const double *areas, int skip, const i3_slice *annotated, int n_annotated,
                                         i3_slice *out, int *found);

/* The same from a confidence map [d, h, w] (finite): counts the under-confident voxels of every slice
 * (i3_cpu_slice_sums over the map 1[C <= tau]) and chooses. params NULL means the defaults. */
i3rt_status i3_snc_recommend(i3_ctx *ctx, const float *confidence, int64_t d, int64_t h, int64_t w,
                             const i3_snc_recommend_params *params, const i3_slice *annotated, int n_annotated,
                             i3_slice *out, int *found);

#endif /* I3RT_SNC_RECOMMEND_H */
