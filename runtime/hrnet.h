/* RITM's interactive segmentation network HRNetModel (HRNet + OCR head, Conv1S click branch) as an
 * i3rt graph: in 2D as RITM runs it, and on 3D volumes with every convolution turned into an ACS
 * convolution (Slice-and-Conquer's stage 2). docs/hrnet.md describes the graph, the input encoding
 * and how both are checked against PyTorch.
 *
 * The graph's input is one tensor [1, 3 + coord_channels, d, h, w] (d = 1 in 2D): the
 * ImageNet-normalized RGB image, then the previous mask (if the network has one) and the positive and
 * negative click maps (the guided 3D network adds the 2D masks placed in 3D and the annotated-slice
 * indicator: runtime/snc_guided.h). i3_hrnet_encode_input writes the first six channels from an
 * image in [0, 1] and clicks. The output
 * is the logit map (1 channel, before the sigmoid) upsampled to the input size, as ISModel.forward
 * returns it ('instances'), or at a quarter of the input size (the OCR head's resolution). */
#ifndef I3RT_HRNET_H
#define I3RT_HRNET_H

#include "graph.h"
#include "weights.h"

struct cJSON;

#define I3_HRNET_IMAGE_CHANNELS 3

typedef struct {
    int acs;              /* the 2D weights run as ACS convolutions on 3D volumes (metadata "acs": "1") */
    int width;            /* channels of branch 0 (18); branch b has width << b */
    int ocr_width;        /* OCR key channels (64) */
    int ocr_mid;          /* OCR mid channels (2 * ocr_width) */
    int small;            /* HRNet-18s: 2 blocks per branch, 3 + 2 modules in stages 3 and 4 */
    int coord_channels;   /* click-map channels into maps_transform: [prev mask,] positive, negative */
    int with_prev_mask;
    int binary_prev_mask; /* the previous mask enters as (mask > 0.5) */
    int use_disks;        /* click maps are disks of norm_radius, else tanh(2 * distance / norm_radius) */
    float norm_radius;
    i3_act maps_act;      /* between the two maps_transform convs: LeakyReLU(0.2) or ReLU */
    int snc_guided;       /* Slice-and-Conquer's guided 3D network (network.snc_guided true, ACS only): two more
                             coord channels (2D masks placed in 3D, annotated slices) and the mask attention */
    int attention_hidden; /* mask attention's FC bottleneck width (network.mask_attention_hidden) */
} i3_hrnet_config;

/* Mask attention (snc_guided): the guide's stride to the features (two stride-2 convs) and the pooling's
 * eps; see ops/mask_pool.c and docs/snc.md. */
#define I3_SNC_ATTENTION_STRIDE 4
#define I3_SNC_ATTENTION_EPS 1e-6f

/* Reads the "network" object of a RITM weight file (class "RITM-HRNet18", written by
 * tools/convert_pt/convert_ritm.py) and its "acs" metadata value (NULL or "0": 2D, "1": ACS 3D). */
i3rt_status i3_hrnet_parse(i3_ctx *ctx, const char *file, const struct cJSON *network, const char *acs,
                           i3_hrnet_config *out);

/* Builds the inference graph for input [1, 3 + coord_channels, d, h, w] (d = 1 unless cfg->acs; any
 * size: stride-2 convolutions round up and every upsampling goes to the exact size). Batch norm is
 * folded into the convolutions (buffers owned by w). *output: the logits [1, 1, d, h, w] with
 * full_resolution, else at the OCR head's resolution (about a quarter per axis). Fails naming a
 * missing or mismatched tensor, and if the file holds a tensor the network does not use. */
i3rt_status i3_hrnet_build(i3_ctx *ctx, const i3_hrnet_config *cfg, i3_weights *w, i3_shape5 input,
                           int full_resolution, i3_graph *g, int *output);

/* A click at voxel coordinates (z, y, x) (z = 0 in 2D); fractional coordinates are allowed (RITM's
 * zoom-in produces them). */
typedef struct {
    float z, y, x;
    int positive;
} i3_hrnet_click;

/* Writes the network input [3 + coord_channels, d, h, w] as RITM's ISModel prepares it (the guided
 * network's last two channels are left to i3_snc_guided_encode; image may be out itself):
 *   channels 0..2  (image - mean) / std with ImageNet's mean/std; image [3, d, h, w] in [0, 1]
 *   previous mask  prev_mask [d, h, w] (NULL: zeros, RITM's first click), thresholded if binary_prev_mask
 *   positive, negative click maps: RITM's DistMaps (GPU path, no rounding of the click coordinates):
 *     D2 = min over the clicks of that sign of the squared distance, 1e6 without any click;
 *     disks: D2 <= norm_radius^2 (1 or 0), else tanh(2 sqrt(D2) / norm_radius).
 * In 3D the distance includes z (balls). Clicks outside [0, size) on any axis, or z != 0 in 2D, fail
 * with I3RT_ERR_INVALID_ARGUMENT naming the click. */
i3rt_status i3_hrnet_encode_input(i3_ctx *ctx, const i3_hrnet_config *cfg, int64_t d, int64_t h, int64_t w,
                                  const float *image, const float *prev_mask, const i3_hrnet_click *clicks,
                                  int n_clicks, float *out);
/* Its two parts, unchecked, for callers that place the planes themselves (the SnC click predictor): the
 * image channels and the previous mask (s voxels each; in place allowed), and the click maps [2, d, h, w]
 * (positive, negative), where a click may lie anywhere: RITM's DistMaps skips only those with y and x both
 * negative (its padding), and a disk is clipped to the input. Disks are painted within each click's reach,
 * so a voxel far from every click is 0 (RITM: 1e6 <= norm_radius^2, false for any radius below 1000). */
void i3_hrnet_encode_image(const i3_hrnet_config *cfg, int64_t s, const float *image, const float *prev_mask,
                           float *out);
void i3_hrnet_click_maps(const i3_hrnet_config *cfg, int64_t d, int64_t h, int64_t w, const i3_hrnet_click *clicks,
                         int n_clicks, float *maps);

#endif /* I3RT_HRNET_H */
