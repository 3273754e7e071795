/* Slice-and-Conquer's guided 3D step: the input of f^3D from the session's state, the network, the
 * sigmoid. See snc_guided.h and docs/snc.md ("Guided 3D segmentation"). */
#include "snc_guided.h"
#include "network.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct i3_snc_guided {
    i3_ctx *ctx;
    i3_hrnet_config cfg;
    i3rt_model *model;
};

i3rt_status i3_snc_guided_load(i3_ctx *ctx, const char *path, i3_snc_guided **out) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (!path || !out) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3_snc_guided_load: NULL path or output");
    *out = NULL;
    i3rt_model *model = NULL;
    I3_TRY(i3rt_model_load(ctx, path, &model));
    const i3_network *net = i3_model_network(model);
    if (net->cls != I3_NET_RITM_HRNET18 || !net->hrnet.snc_guided) {
        i3_fail(ctx, I3RT_ERR_UNSUPPORTED,
                "%s: the guided 3D step needs an ACS RITM-HRNet18 with snc_guided true (convert_ritm.py --acs "
                "--guided), not %s%s",
                path, net->class_name, net->cls == I3_NET_RITM_HRNET18 ? " without snc_guided" : "");
        i3rt_model_free(model);
        return I3RT_ERR_UNSUPPORTED;
    }
    i3_snc_guided *g = i3_calloc(ctx, 1, sizeof *g, "the guided 3D network");
    if (!g) {
        i3rt_model_free(model);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    *g = (i3_snc_guided){.ctx = ctx, .cfg = net->hrnet, .model = model};
    *out = g;
    return I3RT_OK;
}

void i3_snc_guided_free(i3_snc_guided *net) {
    if (!net) return;
    i3rt_model_free(net->model);
    free(net);
}

const i3_hrnet_config *i3_snc_guided_config(const i3_snc_guided *net) { return &net->cfg; }

i3rt_status i3_snc_guided_encode(i3_ctx *ctx, const i3_hrnet_config *cfg, int64_t d, int64_t h, int64_t w,
                                 const float *volume, const float *prev_probs, const i3_hrnet_click *clicks,
                                 int n_clicks, const i3_snc_mask2d *masks, int n_masks, float *input) {
    if (!volume || !input || n_masks < 0 || (n_masks > 0 && !masks) || d < 1 || h < 1 || w < 1)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC guided input: NULL volume/input/masks or empty size");
    if (!cfg->snc_guided || cfg->coord_channels != I3_SNC_GUIDED_COORD_CHANNELS)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC guided input: the network is not a guided 3D one");
    for (int i = 0; i < n_masks; i++) {
        const i3_snc_mask2d m = masks[i];
        if (!(m.axis == I3_AXIAL || m.axis == I3_CORONAL || m.axis == I3_SAGITTAL) || !m.mask)
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "SnC guided input: 2D mask %d has axis %d (0..2) or no data",
                           i, (int)m.axis);
        const int64_t len = i3_axis_length(m.axis, d, h, w);
        if (m.index < 0 || m.index >= len)
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                           "SnC guided input: 2D mask %d is on %s slice %lld, outside 0..%lld of the %lld x %lld x %lld "
                           "volume",
                           i, i3_axis_name(m.axis), (long long)m.index, (long long)len - 1, (long long)d, (long long)h,
                           (long long)w);
    }
    const int64_t s = d * h * w;
    /* the grey volume in RITM's three channels, then normalized in place with the clicks' maps */
    for (int c = 0; c < I3_HRNET_IMAGE_CHANNELS; c++) memcpy(input + c * s, volume, (size_t)s * sizeof *input);
    I3_TRY(i3_hrnet_encode_input(ctx, cfg, d, h, w, input, prev_probs, clicks, n_clicks, input));

    float *placed = input + (I3_HRNET_IMAGE_CHANNELS + I3_SNC_GUIDED_COORD_CHANNELS - 2) * s, *annotated = placed + s;
    memset(placed, 0, (size_t)(2 * s) * sizeof *placed);
    int64_t rows = 0, cols = 0;
    float *plane =
        n_masks > 0 ? i3_calloc(ctx, (size_t)i3_largest_slice(d, h, w), sizeof *plane, "a 2D mask plane") : NULL;
    if (n_masks > 0 && !plane) return I3RT_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < n_masks; i++) { /* in annotation order: where slices cross, the later mask wins */
        i3_slice_dims(masks[i].axis, d, h, w, &rows, &cols);
        for (int64_t p = 0; p < rows * cols; p++) plane[p] = masks[i].mask[p] ? 1.0f : 0.0f;
        i3_slice_put(placed, sizeof *plane, d, h, w, masks[i].axis, masks[i].index, plane);
        for (int64_t p = 0; p < rows * cols; p++) plane[p] = 1.0f;
        i3_slice_put(annotated, sizeof *plane, d, h, w, masks[i].axis, masks[i].index, plane);
    }
    free(plane);
    return I3RT_OK;
}

i3rt_status i3_snc_guided_predict(i3_snc_guided *net, int64_t d, int64_t h, int64_t w, const float *volume,
                                  const float *prev_probs, const i3_hrnet_click *clicks, int n_clicks,
                                  const i3_snc_mask2d *masks, int n_masks, float *probs) {
    if (!net) return I3RT_ERR_INVALID_ARGUMENT;
    if (!probs) return i3_fail(net->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3_snc_guided_predict: NULL output");
    if (d < 1 || h < 1 || w < 1)
        return i3_fail(net->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3_snc_guided_predict: empty volume %lld x %lld x %lld",
                       (long long)d, (long long)h, (long long)w);
    const int64_t s = d * h * w, channels = I3_HRNET_IMAGE_CHANNELS + I3_SNC_GUIDED_COORD_CHANNELS;
    float *input = i3_aligned_alloc(net->ctx, (size_t)((channels + 1) * s) * sizeof *input, "the guided 3D input");
    if (!input) return I3RT_ERR_OUT_OF_MEMORY;
    float *logits = input + channels * s;
    i3rt_status st =
        i3_snc_guided_encode(net->ctx, &net->cfg, d, h, w, volume, prev_probs, clicks, n_clicks, masks, n_masks, input);
    const int64_t spatial[3] = {d, h, w};
    if (st == I3RT_OK) st = i3rt_model_forward(net->model, input, spatial, logits);
    if (st == I3RT_OK)
        for (int64_t i = 0; i < s; i++) probs[i] = 1.0f / (1.0f + expf(-logits[i]));
    free(input);
    return st;
}
