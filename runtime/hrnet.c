/* RITM's HRNetModel (SamsungLabs/ritm_interactive_segmentation @ b9b4460, isegm/model/is_model.py,
 * is_hrnet_model.py, modeling/hrnet_ocr.py, modeling/ocr.py, modeling/resnetv1b.py) as an i3rt graph,
 * module by module, each weight taken by its state-dict name:
 *
 *   input split     image (3 channels) | coord features (prev mask, positive, negative click maps)
 *   stem            conv1 3x3 s2 + bn1 + ReLU, + maps_transform(coord), conv2 3x3 s2 + bn2 + ReLU
 *   maps_transform  1x1 conv (bias) + LeakyReLU(0.2) | ReLU, 3x3 s2 conv (bias), x |scale| (folded in)
 *   layer1          4 (small: 2) BottleneckV1b, 64 -> 256 channels
 *   stages 2..4     transitions (3x3 convs, s2 for a new branch), HighResolutionModules: BasicBlockV1b
 *                   per branch, then fuse: y_i = ReLU(sum_j f_ij(x_j)), f_ij = 1x1 conv + bilinear
 *                   upsampling (j > i), a chain of 3x3 s2 convs (j < i), identity (j == i)
 *   aggregate       branches 1..3 upsampled to branch 0 (align_corners), concatenated (15 * width)
 *   mask attention  Slice-and-Conquer's guided 3D network only: channel gate from the features pooled
 *                   over the annotated foreground/background (docs/snc.md, "Mask attention")
 *   OCR head        aux_head -> soft object regions; conv3x3_ocr; spatial gather; object attention
 *                   (f_pixel, f_object, f_down, f_up); conv_bn_dropout on [context, feats]; cls_head
 *   output          logits, upsampled to the input size (align_corners) as ISModel.forward does
 *
 * Every batch norm (eval: running statistics, eps 1e-5) is folded into the convolution before it, into
 * buffers the weight object owns (i3_weights_derived). With cfg->acs each convolution with a k x k
 * kernel becomes an ACS convolution (ACSConv's converter: same weights, output channels split over the
 * three orientations), a 1x1 convolution a 1x1x1 one (the three orientations coincide), bilinear
 * resizes trilinear, and the spatial softmax of the OCR head runs over the whole volume. */
#include "hrnet.h"
#include "network.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define FE "feature_extractor."
#define BN_EPS 1e-5f         /* torch.nn.BatchNorm2d's default, which RITM keeps */
#define NUM_CLASSES 1        /* HRNetModel builds its HighResolutionNet with num_classes=1 */
#define MAX_BRANCHES 4

/* ---- parsing ----------------------------------------------------------------------------------- */

/* A positive int field of obj. */
static int positive_int(const cJSON *obj, const char *field, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1 && v->valuedouble <= 1 << 20)) return 0;
    *out = (int)v->valuedouble;
    return *out == v->valuedouble;
}

/* A bool field: absent or null gives fallback; anything but a bool gives -1. */
static int bool_field(const cJSON *obj, const char *field, int fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!v || cJSON_IsNull(v)) return fallback;
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
}

i3rt_status i3_hrnet_parse(i3_ctx *ctx, const char *file, const cJSON *net, const char *acs, i3_hrnet_config *out) {
    i3_hrnet_config cfg;
    memset(&cfg, 0, sizeof cfg);
    int dims = 0, in_channels = 0, classes = 0;
    if (!positive_int(net, "dims", &dims) || dims != 2)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: \"dims\" must be 2 (3D use is marked by \"acs\": \"1\")");
    if (!positive_int(net, "input_channels", &in_channels) || in_channels != I3_HRNET_IMAGE_CHANNELS)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: \"input_channels\" must be %d (the RGB image)",
                          I3_HRNET_IMAGE_CHANNELS);
    if (!positive_int(net, "num_classes", &classes) || classes != NUM_CLASSES)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: \"num_classes\" must be %d", NUM_CLASSES);
    if (!positive_int(net, "width", &cfg.width) || !positive_int(net, "ocr_width", &cfg.ocr_width) ||
        !positive_int(net, "ocr_mid_channels", &cfg.ocr_mid) || !positive_int(net, "coord_channels", &cfg.coord_channels))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: \"width\", \"ocr_width\", \"ocr_mid_channels\" and "
                                     "\"coord_channels\" must be positive ints");
    cfg.small = bool_field(net, "small", 0);
    cfg.with_prev_mask = bool_field(net, "with_prev_mask", 0);
    if (cfg.small < 0 || cfg.with_prev_mask < 0)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: \"small\" and \"with_prev_mask\" must be true or false");
    cfg.snc_guided = bool_field(net, "snc_guided", 0);
    if (cfg.snc_guided < 0)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: \"snc_guided\" must be true or false");
    const int coord_expected = 2 + cfg.with_prev_mask + 2 * cfg.snc_guided;
    if (cfg.coord_channels != coord_expected)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: coord_channels %d, with_prev_mask %s%s: expected %d (clicks groups "
                                     "are not supported)",
                          cfg.coord_channels, cfg.with_prev_mask ? "true" : "false",
                          cfg.snc_guided ? ", snc_guided true" : "", coord_expected);
    if (cfg.snc_guided && (!cfg.with_prev_mask || !positive_int(net, "mask_attention_hidden", &cfg.attention_hidden)))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: snc_guided needs with_prev_mask true and a positive "
                                     "int \"mask_attention_hidden\"");

    /* ISModel's keyword arguments as the checkpoint's config gave them; absent ones take ISModel's
     * defaults (RITM's @serialize records only HRNetModel's own defaults). */
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(net, "arch_kwargs");
    if (kw && !cJSON_IsNull(kw) && !cJSON_IsObject(kw))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: \"arch_kwargs\" is not an object");
    const char *unsupported[] = {"use_rgb_conv", "conv_extend"};
    for (int i = 0; i < 2; i++)
        if (bool_field(kw, unsupported[i], 0) != 0)
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED,
                           "%s: network metadata: arch_kwargs.%s is set: only the Conv1S maps_transform branch "
                           "(use_rgb_conv false, conv_extend false) is supported",
                           file, unsupported[i]);
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(kw, "clicks_groups");
    if (groups && !cJSON_IsNull(groups))
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: network metadata: arch_kwargs.clicks_groups is not supported",
                       file);
    const int leaky = bool_field(kw, "use_leaky_relu", 0);
    cfg.use_disks = bool_field(kw, "use_disks", 0);
    cfg.binary_prev_mask = bool_field(kw, "binary_prev_mask", 0);
    if (leaky < 0 || cfg.use_disks < 0 || cfg.binary_prev_mask < 0)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs: use_leaky_relu, use_disks and binary_prev_mask must be true or false");
    cfg.maps_act = leaky ? (i3_act){I3_ACT_LEAKY_RELU, 0.2f} : (i3_act){I3_ACT_RELU, 0.0f};
    const cJSON *radius = cJSON_GetObjectItemCaseSensitive(kw, "norm_radius");
    cfg.norm_radius = 260.0f; /* ISModel's default */
    if (radius && !cJSON_IsNull(radius)) {
        if (!cJSON_IsNumber(radius) || !(radius->valuedouble > 0))
            return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.norm_radius must be a positive number");
        cfg.norm_radius = (float)radius->valuedouble;
    }
    if (!acs || strcmp(acs, "0") == 0)
        cfg.acs = 0;
    else if (strcmp(acs, "1") == 0)
        cfg.acs = 1;
    else
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: metadata \"acs\" is '%s' (must be \"0\" or \"1\")", file, acs);
    if (cfg.snc_guided && !cfg.acs)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "RITM-HRNet18: snc_guided is a 3D network: metadata \"acs\" must be \"1\"");
    *out = cfg;
    return I3RT_OK;
}

/* ---- building ---------------------------------------------------------------------------------- */

typedef struct {
    i3_ctx *ctx;
    const i3_hrnet_config *cfg;
    i3_weights *w;
    i3_graph *g;
    i3rt_status status; /* first failure outside the graph builders (weights, folding) */
} builder;

static int failed(const builder *b) { return b->status != I3RT_OK || b->g->failed; }

/* The file's tensor prefix.suffix with the given shape, or NULL after recording the failure. */
static const float *tensor(builder *b, const char *prefix, const char *suffix, int ndim, const int64_t *shape) {
    if (failed(b)) return NULL;
    char name[I3_NAME_LEN];
    i3_name_fmt(name, "%s.%s", prefix, suffix);
    const float *data = NULL;
    b->status = i3_weights_get_f32(b->ctx, b->w, name, ndim, shape, &data);
    return data;
}

static const i3_act NO_ACT = {I3_ACT_NONE, 0.0f};
static const i3_act RELU = {I3_ACT_RELU, 0.0f};

/* One convolution `conv` (weight [cout, cin, k, k], bias if has_bias) with padding k / 2, followed
 * by the batch norm `bn` (NULL: none) or a multiplication by |scale[0]| (ScaleLayer; NULL: none), then
 * act. Either is folded into a copy of the weights. */
static int conv_layer(builder *b, int x, const char *conv, const char *bn, const float *scale, int cin, int cout,
                      int k, int stride, int has_bias, i3_act act) {
    const int64_t wshape[4] = {cout, cin, k, k}, cshape[1] = {cout};
    const int64_t per_out = (int64_t)cin * k * k;
    const float *weight = tensor(b, conv, "weight", 4, wshape);
    const float *bias = has_bias ? tensor(b, conv, "bias", 1, cshape) : NULL;
    if (failed(b)) return -1;
    if (bn || scale) {
        char name[I3_NAME_LEN];
        float *wf = NULL, *bf = NULL;
        int fresh_w = 0, fresh_b = 0; /* folded by an earlier build of this network (another input size)? */
        i3_name_fmt(name, "%s.weight (folded)", conv);
        b->status = i3_weights_derived(b->ctx, b->w, name, (size_t)(cout * per_out), &wf, &fresh_w);
        i3_name_fmt(name, "%s.bias (folded)", conv);
        if (b->status == I3RT_OK) b->status = i3_weights_derived(b->ctx, b->w, name, (size_t)cout, &bf, &fresh_b);
        if (b->status != I3RT_OK) return -1;
        const int fold = fresh_w || fresh_b;
        if (fold) memcpy(wf, weight, (size_t)(cout * per_out) * sizeof *wf);
        if (bn) {
            const float *gamma = tensor(b, bn, "weight", 1, cshape), *beta = tensor(b, bn, "bias", 1, cshape);
            const float *mean = tensor(b, bn, "running_mean", 1, cshape), *var = tensor(b, bn, "running_var", 1, cshape);
            if (failed(b)) return -1;
            if (fold) i3_cpu_fold_batch_norm(wf, cout, per_out, bias, gamma, beta, mean, var, BN_EPS, bf);
        } else if (fold) {
            const float s = fabsf(scale[0]); /* ScaleLayer: x * |scale * lr_mult|, lr_mult 1 */
            for (int64_t i = 0; i < cout * per_out; i++) wf[i] *= s;
            for (int o = 0; o < cout; o++) bf[o] = bias ? bias[o] * s : 0.0f;
        }
        weight = wf;
        bias = bf;
    }
    char name[I3_NAME_LEN];
    i3_name_fmt(name, "%s.weight", conv);
    const int acs = b->cfg->acs && k > 1;
    const int64_t gdims[5] = {cout, cin, 1, k, k};
    int wv = acs ? i3_graph_weight(b->g, name, weight, 4, wshape) : i3_graph_weight(b->g, name, weight, 5, gdims);
    int bv = -1;
    if (bias) {
        i3_name_fmt(name, "%s.bias", conv);
        bv = i3_graph_weight(b->g, name, bias, 1, cshape);
    }
    if (acs) {
        const i3_acs_conv_params ap = {.cout = cout, .k = k, .stride = stride, .pad = k / 2, .act = act};
        return i3_graph_acs_conv(b->g, x, wv, bv, &ap, conv);
    }
    /* 2D: depth 1 with kernel depth 1; ACS 1x1: a 1x1x1 convolution, strided on all three axes */
    const int sd = b->cfg->acs ? stride : 1;
    const i3_conv_params cp = {.cout = cout, .k = {1, k, k}, .stride = {sd, stride, stride}, .pad = {0, k / 2, k / 2},
                               .act = act};
    return i3_graph_conv(b->g, x, wv, bv, &cp, conv);
}

/* conv `prefix.convN` + batch norm `prefix.bnN`. */
static int conv_bn(builder *b, int x, const char *prefix, int n, int cin, int cout, int k, int stride, i3_act act) {
    char conv[I3_NAME_LEN], bn[I3_NAME_LEN];
    i3_name_fmt(conv, "%s.conv%d", prefix, n);
    i3_name_fmt(bn, "%s.bn%d", prefix, n);
    return conv_layer(b, x, conv, bn, NULL, cin, cout, k, stride, 0, act);
}

/* Sequential(conv, bn[, ReLU]) named prefix.0, prefix.1 (transitions, fuse layers, downsample). */
static int conv_bn_seq(builder *b, int x, const char *prefix, int cin, int cout, int k, int stride, i3_act act) {
    char conv[I3_NAME_LEN], bn[I3_NAME_LEN];
    i3_name_fmt(conv, "%s.0", prefix);
    i3_name_fmt(bn, "%s.1", prefix);
    return conv_layer(b, x, conv, bn, NULL, cin, cout, k, stride, 0, act);
}

static int add(builder *b, int x, int y, i3_act act, const char *name) {
    return failed(b) ? -1 : i3_graph_add(b->g, x, y, act, name);
}

/* Linear resize of x to the spatial size of like (align_corners=True, as every resize in RITM). */
static int resize_like(builder *b, int x, int like, const char *name) {
    if (failed(b)) return -1;
    const i3_value *v = &b->g->values[like];
    const i3_resize_params rp = {.out = {v->dims[2], v->dims[3], v->dims[4]}, .align_corners = 1};
    return i3_graph_resize(b->g, x, &rp, name);
}

/* BottleneckV1b: ReLU(bn3(conv3(ReLU(bn2(conv2(ReLU(bn1(conv1(x)))))))) + downsample(x)). */
static int bottleneck(builder *b, int x, int block, int cin, int planes) {
    char prefix[I3_NAME_LEN], name[I3_NAME_LEN];
    i3_name_fmt(prefix, FE "layer1.%d", block);
    int residual = x;
    if (cin != 4 * planes) {
        i3_name_fmt(name, "%s.downsample", prefix);
        residual = conv_bn_seq(b, x, name, cin, 4 * planes, 1, 1, NO_ACT);
    }
    int y = conv_bn(b, x, prefix, 1, cin, planes, 1, 1, RELU);
    y = conv_bn(b, y, prefix, 2, planes, planes, 3, 1, RELU);
    y = conv_bn(b, y, prefix, 3, planes, 4 * planes, 1, 1, NO_ACT);
    return add(b, y, residual, RELU, prefix);
}

/* BasicBlockV1b with c channels: ReLU(bn2(conv2(ReLU(bn1(conv1(x))))) + x). */
static int basic_block(builder *b, int x, const char *prefix, int c) {
    int y = conv_bn(b, x, prefix, 1, c, c, 3, 1, RELU);
    y = conv_bn(b, y, prefix, 2, c, c, 3, 1, NO_ACT);
    return add(b, y, x, RELU, prefix);
}

/* HighResolutionModule `prefix` over n_branches branches x[] (updated in place). */
static void hr_module(builder *b, int *x, const char *prefix, int n_branches, int blocks) {
    const int width = b->cfg->width;
    char name[I3_NAME_LEN];
    for (int i = 0; i < n_branches; i++)
        for (int blk = 0; blk < blocks; blk++) {
            i3_name_fmt(name, "%s.branches.%d.%d", prefix, i, blk);
            x[i] = basic_block(b, x[i], name, width << i);
        }
    int y[MAX_BRANCHES];
    for (int i = 0; i < n_branches; i++) {
        int sum = -1;
        for (int j = 0; j < n_branches; j++) {
            int t = x[j];
            if (j > i) { /* 1x1 conv + bn to C_i, then upsampled to branch i */
                i3_name_fmt(name, "%s.fuse_layers.%d.%d", prefix, i, j);
                t = conv_bn_seq(b, t, name, width << j, width << i, 1, 1, NO_ACT);
                i3_name_fmt(name, "%s.fuse_layers.%d.%d.up", prefix, i, j);
                t = resize_like(b, t, x[i], name);
            }
            for (int k = 0; j < i && k < i - j; k++) { /* i - j stride-2 convs, C_j until the last */
                const int last = k == i - j - 1;
                i3_name_fmt(name, "%s.fuse_layers.%d.%d.%d", prefix, i, j, k);
                t = conv_bn_seq(b, t, name, width << j, last ? width << i : width << j, 3, 2, last ? NO_ACT : RELU);
            }
            i3_name_fmt(name, "%s.fuse.%d.%d", prefix, i, j);
            sum = sum < 0 ? t : add(b, sum, t, j == n_branches - 1 ? RELU : NO_ACT, name);
        }
        y[i] = sum;
    }
    memcpy(x, y, (size_t)n_branches * sizeof *x);
}

/* transitionT.i: a 3x3 stride-2 conv + bn + ReLU from the last branch into new branch i. */
static int new_branch(builder *b, int x, int t, int i) {
    char prefix[I3_NAME_LEN];
    i3_name_fmt(prefix, FE "transition%d.%d.0", t, i);
    return conv_bn_seq(b, x, prefix, b->cfg->width << (i - 1), b->cfg->width << i, 3, 2, RELU);
}

/* HighResolutionNet.compute_hrnet_feats after the stem: [n, 15 * width, ...] at the stem's resolution. */
static int hrnet_features(builder *b, int x) {
    const i3_hrnet_config *cfg = b->cfg;
    const int blocks = cfg->small ? 2 : 4, modules[3] = {1, cfg->small ? 3 : 4, cfg->small ? 2 : 3};
    for (int blk = 0; blk < blocks; blk++) x = bottleneck(b, x, blk, blk == 0 ? 64 : 256, 64);

    int br[MAX_BRANCHES];
    br[0] = conv_bn_seq(b, x, FE "transition1.0", 256, cfg->width, 3, 1, RELU);
    br[1] = conv_bn_seq(b, x, FE "transition1.1.0", 256, 2 * cfg->width, 3, 2, RELU);
    char prefix[I3_NAME_LEN];
    for (int stage = 2; stage <= 4; stage++) {
        const int n_branches = stage;
        if (stage > 2) br[n_branches - 1] = new_branch(b, br[n_branches - 2], stage - 1, n_branches - 1);
        for (int m = 0; m < modules[stage - 2]; m++) {
            i3_name_fmt(prefix, FE "stage%d.%d", stage, m);
            hr_module(b, br, prefix, n_branches, blocks);
        }
    }
    int feats = br[0];
    for (int i = 1; i < MAX_BRANCHES; i++) {
        i3_name_fmt(prefix, FE "aggregate.up%d", i);
        int up = resize_like(b, br[i], br[0], prefix);
        i3_name_fmt(prefix, FE "aggregate.cat%d", i);
        feats = failed(b) ? -1 : i3_graph_concat(b->g, feats, up, prefix);
    }
    return feats;
}

/* Slice-and-Conquer's mask attention (tools/snc_models.py MaskAttention): the features averaged over the
 * annotated foreground and background (guide: 2D masks placed in 3D, annotated slices), an FC bottleneck
 * (Linear 2C -> hidden, ReLU, Linear hidden -> C, as 1x1x1 convolutions on the pooled vector) and the
 * gate feats * 2 sigmoid(.) per channel. */
static int mask_attention(builder *b, int feats, int guide) {
    const int c = 15 * b->cfg->width, hidden = b->cfg->attention_hidden;
    const i3_mask_pool_params mp = {I3_SNC_ATTENTION_STRIDE, I3_SNC_ATTENTION_EPS};
    int y = failed(b) ? -1 : i3_graph_mask_pool(b->g, feats, guide, &mp, "mask_attention.pool");
    const int fc_in[2] = {2 * c, hidden}, fc_out[2] = {hidden, c};
    for (int i = 0; i < 2; i++) {
        char prefix[I3_NAME_LEN], name[I3_NAME_LEN];
        i3_name_fmt(prefix, "mask_attention.fc%d", i + 1);
        const int64_t wshape[2] = {fc_out[i], fc_in[i]}, bshape[1] = {fc_out[i]};
        const int64_t gdims[5] = {fc_out[i], fc_in[i], 1, 1, 1};
        const float *weight = tensor(b, prefix, "weight", 2, wshape), *bias = tensor(b, prefix, "bias", 1, bshape);
        if (failed(b)) return -1;
        i3_name_fmt(name, "%s.weight", prefix);
        const int wv = i3_graph_weight(b->g, name, weight, 5, gdims);
        i3_name_fmt(name, "%s.bias", prefix);
        const int bv = i3_graph_weight(b->g, name, bias, 1, bshape);
        const i3_conv_params cp = {.cout = fc_out[i], .k = {1, 1, 1}, .stride = {1, 1, 1}, .act = i == 0 ? RELU : NO_ACT};
        y = i3_graph_conv(b->g, y, wv, bv, &cp, prefix);
    }
    return failed(b) ? -1 : i3_graph_channel_gate(b->g, feats, y, "mask_attention.gate");
}

/* Sequential(conv, Sequential(bn, ReLU)) of ocr.py: conv prefix.I, bn prefix.(I+1).0. */
static int ocr_conv(builder *b, int x, const char *prefix, int index, int cin, int cout) {
    char conv[I3_NAME_LEN], bn[I3_NAME_LEN];
    i3_name_fmt(conv, "%s.%d", prefix, index);
    i3_name_fmt(bn, "%s.%d.0", prefix, index + 1);
    return conv_layer(b, x, conv, bn, NULL, cin, cout, 1, 1, 0, RELU);
}

/* HighResolutionNet.forward's OCR part: the class logits at the features' resolution. */
static int ocr_head(builder *b, int feats) {
    const int c = 15 * b->cfg->width, mid = b->cfg->ocr_mid, key = b->cfg->ocr_width;
    int aux = conv_layer(b, feats, FE "aux_head.0", FE "aux_head.1", NULL, c, c, 1, 1, 1, RELU);
    aux = conv_layer(b, aux, FE "aux_head.3", NULL, NULL, c, NUM_CLASSES, 1, 1, 1, NO_ACT);
    int g = conv_layer(b, feats, FE "conv3x3_ocr.0", FE "conv3x3_ocr.1", NULL, c, mid, 3, 1, 1, RELU);
    int context = failed(b) ? -1 : i3_graph_spatial_gather(b->g, g, aux, FE "ocr_gather_head");

#define OCB FE "ocr_distri_head.object_context_block"
    int query = ocr_conv(b, g, OCB ".f_pixel", 0, mid, key);
    query = ocr_conv(b, query, OCB ".f_pixel", 2, key, key);
    int k = ocr_conv(b, context, OCB ".f_object", 0, mid, key);
    k = ocr_conv(b, k, OCB ".f_object", 2, key, key);
    int value = ocr_conv(b, context, OCB ".f_down", 0, mid, key);
    int att = failed(b) ? -1 : i3_graph_object_attention(b->g, query, k, value, OCB ".attention");
    att = ocr_conv(b, att, OCB ".f_up", 0, key, mid);
#undef OCB
    int cat = failed(b) ? -1 : i3_graph_concat(b->g, att, g, FE "ocr_distri_head.cat");
    int out = ocr_conv(b, cat, FE "ocr_distri_head.conv_bn_dropout", 0, 2 * mid, mid); /* dropout: identity */
    return conv_layer(b, out, FE "cls_head", NULL, NULL, mid, NUM_CLASSES, 1, 1, 1, NO_ACT);
}

i3rt_status i3_hrnet_build(i3_ctx *ctx, const i3_hrnet_config *cfg, i3_weights *w, i3_shape5 input,
                           int full_resolution, i3_graph *g, int *output) {
    const char *file = i3_weights_label(w);
    if (input.n < 1 || input.c != I3_HRNET_IMAGE_CHANNELS + cfg->coord_channels || input.d < 1 || input.h < 1 ||
        input.w < 1 || (!cfg->acs && input.d != 1))
        return i3_fail(ctx, I3RT_ERR_SHAPE,
                       "%s: RITM HRNet input is [%lld, %lld, %lld, %lld, %lld], expected [n, %d, %s, h, w] (image and "
                       "click maps)",
                       file, (long long)input.n, (long long)input.c, (long long)input.d, (long long)input.h,
                       (long long)input.w, I3_HRNET_IMAGE_CHANNELS + cfg->coord_channels, cfg->acs ? "d" : "1");
    builder b = {.ctx = ctx, .cfg = cfg, .w = w, .g = g, .status = I3RT_OK};
    const int x = i3_graph_input(g, input);
    const i3_slice_params image_part = {0, I3_HRNET_IMAGE_CHANNELS},
                          coord_part = {I3_HRNET_IMAGE_CHANNELS, cfg->coord_channels};
    int image = i3_graph_slice_channels(g, x, &image_part, "image");
    int coord = i3_graph_slice_channels(g, x, &coord_part, "coord_features");

    /* maps_transform (Conv1S) and the stem it joins after the first ReLU */
    const int64_t one[1] = {1};
    const float *scale = tensor(&b, "maps_transform.3", "scale", 1, one);
    int maps = conv_layer(&b, coord, "maps_transform.0", NULL, NULL, cfg->coord_channels, 16, 1, 1, 1, cfg->maps_act);
    maps = scale ? conv_layer(&b, maps, "maps_transform.2", NULL, scale, 16, 64, 3, 2, 1, NO_ACT) : -1;
    int y = conv_layer(&b, image, FE "conv1", FE "bn1", NULL, I3_HRNET_IMAGE_CHANNELS, 64, 3, 2, 0, RELU);
    y = add(&b, y, maps, NO_ACT, FE "stem.add_maps");
    y = conv_layer(&b, y, FE "conv2", FE "bn2", NULL, 64, 64, 3, 2, 0, RELU);

    int feats = hrnet_features(&b, y);
    if (cfg->snc_guided) {
        /* the last two coord channels: 2D masks placed in 3D, annotated slices */
        const i3_slice_params guide_part = {I3_HRNET_IMAGE_CHANNELS + cfg->coord_channels - 2, 2};
        feats = mask_attention(&b, feats, i3_graph_slice_channels(g, x, &guide_part, "guide"));
    }
    int logits = ocr_head(&b, feats);
    if (full_resolution) logits = resize_like(&b, logits, x, "instances");
    I3_TRY(b.status);
    if (g->failed) return (i3rt_status)g->failed; /* the graph builder left its message in ctx */
    I3_TRY(i3_weights_check_all_used(ctx, w));
    *output = logits;
    return I3RT_OK;
}

/* ---- input encoding ---------------------------------------------------------------------------- */

void i3_hrnet_encode_image(const i3_hrnet_config *cfg, int64_t s, const float *image, const float *prev_mask,
                           float *out) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    for (int c = 0; c < I3_HRNET_IMAGE_CHANNELS; c++)
        for (int64_t i = 0; i < s; i++) out[c * s + i] = (image[c * s + i] - mean[c]) / std[c];
    float *mask = out + I3_HRNET_IMAGE_CHANNELS * s;
    if (cfg->with_prev_mask)
        for (int64_t i = 0; i < s; i++) {
            const float m = prev_mask ? prev_mask[i] : 0.0f;
            mask[i] = cfg->binary_prev_mask ? (float)(m > 0.5f) : m;
        }
}

/* DistMaps' squared distance of voxel (z, y, x) to a click, in float32 as torch computes it: the coordinates
 * divided by norm_radius first unless disks. */
static inline float click_d2(const i3_hrnet_click *c, float div, int64_t z, int64_t y, int64_t x) {
    float dz = (float)z - c->z, dy = (float)y - c->y, dx = (float)x - c->x;
    if (div != 1.0f) dz /= div, dy /= div, dx /= div;
    return dz * dz + dy * dy + dx * dx;
}

/* The voxels [lo, hi] of one axis within r of coordinate c (a voxel more each side: the exact test decides). */
static void disk_range(float c, float r, int64_t n, int64_t *lo, int64_t *hi) {
    const double a = floor((double)c - r) - 1, b = ceil((double)c + r) + 1;
    *lo = a < 0 ? 0 : (int64_t)a;
    *hi = b > (double)(n - 1) ? n - 1 : (int64_t)b;
}

/* Whether a click goes into the map of sign (0 positive, 1 negative): of that sign and not RITM's padding
 * (y and x both negative). */
static bool click_in_map(const i3_hrnet_click *c, int sign) {
    return c->positive == (sign == 0) && !(c->y < 0 && c->x < 0);
}

void i3_hrnet_click_maps(const i3_hrnet_config *cfg, int64_t d, int64_t h, int64_t w, const i3_hrnet_click *clicks,
                         int n_clicks, float *maps) {
    const int64_t s = d * h * w;
    const float r = cfg->norm_radius;
    for (int sign = 0; sign < 2; sign++) {
        float *map = maps + sign * s;
        if (cfg->use_disks) { /* 1 within norm_radius of any click: each click paints its disk's box */
            memset(map, 0, (size_t)s * sizeof *map);
            for (int i = 0; i < n_clicks; i++) {
                const i3_hrnet_click *c = &clicks[i];
                if (!click_in_map(c, sign)) continue;
                int64_t z0, z1, y0, y1, x0, x1;
                disk_range(c->z, r, d, &z0, &z1);
                disk_range(c->y, r, h, &y0, &y1);
                disk_range(c->x, r, w, &x0, &x1);
                for (int64_t z = z0; z <= z1; z++)
                    for (int64_t y = y0; y <= y1; y++)
                        for (int64_t x = x0; x <= x1; x++)
                            if (click_d2(c, 1.0f, z, y, x) <= r * r) map[(z * h + y) * w + x] = 1.0f;
            }
            continue;
        }
        for (int64_t z = 0; z < d; z++) /* tanh of the distance to the nearest click: every voxel */
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++) {
                    float best = 1e6f; /* RITM's value for "no click" */
                    for (int i = 0; i < n_clicks; i++) {
                        const i3_hrnet_click *c = &clicks[i];
                        if (!click_in_map(c, sign)) continue;
                        const float d2 = click_d2(c, r, z, y, x);
                        best = d2 < best ? d2 : best;
                    }
                    map[(z * h + y) * w + x] = tanhf(2.0f * sqrtf(best));
                }
    }
}

i3rt_status i3_hrnet_encode_input(i3_ctx *ctx, const i3_hrnet_config *cfg, int64_t d, int64_t h, int64_t w,
                                  const float *image, const float *prev_mask, const i3_hrnet_click *clicks,
                                  int n_clicks, float *out) {
    if (!image || !out || (n_clicks > 0 && !clicks) || n_clicks < 0 || d < 1 || h < 1 || w < 1)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "RITM input: NULL image/output/clicks or empty size");
    if (!cfg->acs && d != 1)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "RITM input: a 2D network takes depth 1, not %lld", (long long)d);
    for (int i = 0; i < n_clicks; i++) {
        const i3_hrnet_click c = clicks[i];
        if (!(c.z >= 0 && c.z < d && c.y >= 0 && c.y < h && c.x >= 0 && c.x < w))
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                           "RITM input: click %d at (z %g, y %g, x %g) is outside the %lld x %lld x %lld volume", i,
                           (double)c.z, (double)c.y, (double)c.x, (long long)d, (long long)h, (long long)w);
    }
    const int64_t s = d * h * w;
    i3_hrnet_encode_image(cfg, s, image, prev_mask, out);
    i3_hrnet_click_maps(cfg, d, h, w, clicks, n_clicks,
                        out + (I3_HRNET_IMAGE_CHANNELS + (cfg->with_prev_mask ? 1 : 0)) * s);
    return I3RT_OK;
}
