/* Slice-and-Conquer stage 2: guided 3D segmentation (paper Sec. 3.2, Algorithm 1 line 14),
 *   M_t^3D = f^3D(I^3D (+) M_{t-1}^3D, P_t^{2D->3D} (+) M_t^{2D->3D}),
 * with f^3D the ACS-converted RITM HRNet-18 plus the mask-attention module (docs/snc.md, "Guided 3D
 * segmentation"; the network in docs/hrnet.md). This file builds the network input from the session's
 * state, runs the network and returns sigmoid probabilities; it keeps no state between calls.
 *
 * Network input [3 + 5, d, h, w] (i3_snc_guided_encode):
 *   0..2  the grey volume in [0, 1] repeated into RITM's three channels, ImageNet-normalized
 *   3     the previous 3D probabilities M_{t-1}^3D (zeros when there are none)
 *   4, 5  the accumulated positive / negative clicks as balls of norm_radius (RITM's disks in 3D)
 *   6     the accumulated accurate 2D masks placed in 3D (M^{2D->3D}: 1 on foreground voxels of an
 *         annotated slice; where slices of different axes cross, the later mask in the list wins)
 *   7     1 on every voxel of an annotated slice, 0 elsewhere (tells "background" from "not annotated") */
#ifndef I3RT_SNC_GUIDED_H
#define I3RT_SNC_GUIDED_H

#include "core.h"
#include "hrnet.h"
#include "slice_select.h"

/* Channels of the guided network's coordinate input: prev, positive, negative, 2D masks, annotated. */
#define I3_SNC_GUIDED_COORD_CHANNELS 5

/* One accurate 2D mask of the session: slice `index` of `axis` (i3_slice_get's plane layout), mask
 * [rows, cols] with non-zero = foreground. */
typedef struct {
    i3_axis axis;
    int64_t index;
    const uint8_t *mask;
} i3_snc_mask2d;

typedef struct i3_snc_guided i3_snc_guided;

/* Loads an ACS 3D RITM-HRNet18 weight file with the guided input and the mask attention (network
 * "snc_guided": true, metadata "acs": "1"; written by tools/convert_pt/convert_ritm.py --guided) as an
 * i3rt model on the context's backend. Anything else fails (I3RT_ERR_UNSUPPORTED for a plain RITM file). */
i3rt_status i3_snc_guided_load(i3_ctx *ctx, const char *path, i3_snc_guided **out);
void i3_snc_guided_free(i3_snc_guided *net);
/* The network's input encoding (norm radius, disks, ...). */
const i3_hrnet_config *i3_snc_guided_config(const i3_snc_guided *net);

/* Writes the network input [3 + I3_SNC_GUIDED_COORD_CHANNELS, d, h, w] described above.
 * volume [d, h, w] grey in [0, 1] (the caller windows it); prev_probs [d, h, w] or NULL (zeros);
 * clicks in voxel coordinates (z, y, x), fractional allowed; masks in annotation order.
 * Fails with I3RT_ERR_INVALID_ARGUMENT naming a click outside the volume, a mask with a bad axis or
 * index, or a NULL mask (input is then partly written: it is the caller's scratch). */
i3rt_status i3_snc_guided_encode(i3_ctx *ctx, const i3_hrnet_config *cfg, int64_t d, int64_t h, int64_t w,
                                 const float *volume, const float *prev_probs, const i3_hrnet_click *clicks,
                                 int n_clicks, const i3_snc_mask2d *masks, int n_masks, float *input);

/* One guided 3D step: encodes the input, runs the network on the volume, and writes
 * probs [d, h, w] = sigmoid(logits at full resolution). Errors as i3_snc_guided_encode, or the
 * network's; probs is written only on success. */
i3rt_status i3_snc_guided_predict(i3_snc_guided *net, int64_t d, int64_t h, int64_t w, const float *volume,
                                  const float *prev_probs, const i3_hrnet_click *clicks, int n_clicks,
                                  const i3_snc_mask2d *masks, int n_masks, float *probs);

#endif /* I3RT_SNC_GUIDED_H */
