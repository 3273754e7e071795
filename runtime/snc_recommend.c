/* Slice-and-Conquer's next-slice recommendation: MSP confidence, per-slice counts of under-confident
 * voxels, the best slice away from the annotated ones (rules in snc_recommend.h, design in docs/snc.md). */
#include "snc_recommend.h"

#include "ops.h"

#include <math.h>
#include <stdlib.h>

i3rt_status i3_snc_confidence(i3_ctx *ctx, const float *probs, int64_t c, int64_t s, float *confidence,
                              int n_threads) {
    if (!probs || !confidence)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc confidence: probabilities and output must not be NULL");
    if (c < 1 || s < 1)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "snc confidence: %lld classes of %lld voxels", (long long)c, (long long)s);
    for (int64_t i = 0; i < c * s; i++)
        if (!(probs[i] >= 0.0f && probs[i] <= 1.0f))
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                           "snc confidence: probability of class %lld at voxel %lld is %g (must be in [0, 1])",
                           (long long)(i / s), (long long)(i % s), (double)probs[i]);
    if (c >= 2) {
        i3_cpu_prob_uncertainty(probs, 1, c, s, NULL, confidence, NULL, n_threads);
        return I3RT_OK;
    }
    for (int64_t i = 0; i < s; i++) confidence[i] = fmaxf(probs[i], 1.0f - probs[i]);
    return I3RT_OK;
}

/* Candidate b beats a: higher score, then lower axis, then lower index. */
static int better(double score_b, int axis_b, int64_t index_b, const i3_slice *a) {
    if (score_b != a->sum) return score_b > a->sum;
    if (axis_b != (int)a->axis) return axis_b < (int)a->axis;
    return index_b < a->index;
}

static int near_annotated(int axis, int64_t index, int skip, const i3_slice *annotated, int n_annotated) {
    for (int k = 0; k < n_annotated; k++)
        if ((int)annotated[k].axis == axis && llabs(annotated[k].index - index) <= skip) return 1;
    return 0;
}

i3rt_status i3_snc_recommend_from_scores(i3_ctx *ctx, const double *const scores[3], const int64_t len[3],
                                         const double *areas, int skip, const i3_slice *annotated, int n_annotated,
                                         i3_slice *out, int *found) {
    *found = 0;
    if (skip < 0) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc recommendation: skip %d < 0", skip);
    if (n_annotated < 0 || (n_annotated > 0 && !annotated))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc recommendation: %d annotated slices at %p", n_annotated,
                       (const void *)annotated);
    for (int k = 0; k < n_annotated; k++) {
        const int a = (int)annotated[k].axis;
        if (a < 0 || a > 2)
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc recommendation: annotated slice %d has axis %d", k, a);
        if (annotated[k].index < 0 || annotated[k].index >= len[a])
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                           "snc recommendation: annotated %s slice %lld outside [0, %lld)", i3_axis_name(a),
                           (long long)annotated[k].index, (long long)len[a]);
    }
    i3_slice best = {I3_AXIAL, -1, 0.0, 0.0};
    for (int a = 0; a < 3; a++)
        for (int64_t i = 0; i < len[a]; i++) {
            const double s = scores[a][i];
            if (!(isfinite(s) && s >= 0.0))
                return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc recommendation: %s slice %lld scores %g",
                               i3_axis_name(a), (long long)i, s);
            if (s > 0.0 && !near_annotated(a, i, skip, annotated, n_annotated) && better(s, a, i, &best))
                best = (i3_slice){(i3_axis)a, i, s, areas ? s / areas[a] : 0.0};
        }
    if (best.index < 0) return I3RT_OK;
    *out = best;
    *found = 1;
    return I3RT_OK;
}

i3rt_status i3_snc_recommend(i3_ctx *ctx, const float *confidence, int64_t d, int64_t h, int64_t w,
                             const i3_snc_recommend_params *params, const i3_slice *annotated, int n_annotated,
                             i3_slice *out, int *found) {
    *found = 0;
    const i3_snc_recommend_params p = params ? *params : I3_SNC_RECOMMEND_DEFAULTS;
    if (!confidence) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc recommendation: confidence map is NULL");
    if (d < 1 || h < 1 || w < 1)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "snc recommendation: confidence map %lld x %lld x %lld is empty",
                       (long long)d, (long long)h, (long long)w);
    if (!(p.tau >= 0.0 && p.tau <= 1.0))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc recommendation: tau %g is outside [0, 1]", p.tau);
    const int64_t n = d * h * w;
    float *under = i3_malloc(ctx, (size_t)n * sizeof *under, "snc under-confident map");
    double *counts = under ? i3_malloc(ctx, (size_t)(d + h + w) * sizeof *counts, "snc slice counts") : NULL;
    if (!counts) {
        free(under);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    i3rt_status st = I3RT_OK;
    for (int64_t i = 0; i < n && st == I3RT_OK; i++) {
        if (!isfinite(confidence[i]))
            st = i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "snc recommendation: confidence of voxel (%lld, %lld, %lld) is %g",
                         (long long)(i / (h * w)), (long long)(i / w % h), (long long)(i % w), (double)confidence[i]);
        under[i] = (double)confidence[i] <= p.tau ? 1.0f : 0.0f;
    }
    if (st == I3RT_OK) {
        i3_cpu_slice_sums(under, d, h, w, counts, counts + d, counts + d + h);
        const double *per_axis[3] = {counts, counts + d, counts + d + h};
        const int64_t len[3] = {d, h, w};
        const double areas[3] = {(double)(h * w), (double)(d * w), (double)(d * h)};
        st = i3_snc_recommend_from_scores(ctx, per_axis, len, areas, p.skip, annotated, n_annotated, out, found);
    }
    free(counts);
    free(under);
    return st;
}
