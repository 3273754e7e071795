/* nnU-Net v2 networks (dynamic_network_architectures 0.4) as i3rt graphs.
 *
 * i3_network_parse reads the weight file's "network" metadata (the plans' arch_kwargs) and checks
 * that it describes a network this file can build; i3_network_build then mirrors the PyTorch
 * modules one by one, taking each weight by its state-dict name:
 *
 *   ConvDropoutNormReLU   conv (padding (k-1)/2, stride on the first conv of a stage) -> instance
 *                         norm -> nonlin. The conv bias is dropped: instance norm subtracts the mean,
 *                         so a per-channel constant cancels exactly.
 *   PlainConvUNet         encoder.stages.S.0.convs.I, then UNetDecoder.
 *   ResidualEncoderUNet   encoder.stem.convs.0, then per stage BasicBlockD blocks:
 *                         act(norm(conv2(conv1(x))) + skip(x)), skip = [avg pool (kernel = stride) if
 *                         strided] [1x1 conv (no bias) + norm if the channels change] or identity.
 *   UNetDecoder           per stage from the bottleneck up: transposed conv (kernel = stride of the
 *                         stage it comes from), concat(upsampled, skip), n convs, and after the last
 *                         stage the 1x1 seg head decoder.seg_layers.{n-2} (bias, no norm). */
#include "network.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* ---- parsing --------------------------------------------------------------------------------- */

/* The last dotted component: "torch.nn.modules.conv.Conv3d" -> "Conv3d". */
static const char *short_name(const char *dotted) {
    const char *dot = strrchr(dotted, '.');
    return dot ? dot + 1 : dotted;
}

i3rt_status i3_network_metadata_fail(i3_ctx *ctx, i3rt_status status, const char *file, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return i3_fail(ctx, status, "%s: network metadata: %s", file, msg);
}

/* An optional class-name field: NULL when absent or null. */
static const char *class_field(const cJSON *kw, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(kw, field);
    if (!v || cJSON_IsNull(v)) return NULL;
    return cJSON_IsString(v) ? short_name(v->valuestring) : "(not a string)";
}

static int json_int(const cJSON *v, int *out) {
    /* range first: converting an out-of-range double to int is undefined */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= INT_MIN && v->valuedouble <= INT_MAX)) return 0;
    if (v->valuedouble != (double)(int)v->valuedouble) return 0;
    *out = (int)v->valuedouble;
    return 1;
}

/* A per-stage int field: one int for every stage, or a list of n ints, each >= min. */
static i3rt_status parse_per_stage(i3_ctx *ctx, const char *file, const cJSON *kw, const char *field, int n, int min,
                                   int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(kw, field);
    int x;
    if (json_int(v, &x)) {
        for (int i = 0; i < n; i++) out[i] = x;
    } else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == n) {
        for (int i = 0; i < n; i++)
            if (!json_int(cJSON_GetArrayItem(v, i), &out[i]))
                return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.%s[%d] is not an int", field, i);
    } else {
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.%s must be an int or a list of %d ints", field, n);
    }
    for (int i = 0; i < n; i++)
        if (out[i] < min)
            return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.%s[%d] = %d (must be >= %d)", field, i, out[i],
                             min);
    return I3RT_OK;
}

/* Kernel sizes / strides: an int, or per stage an int or a list of `dims` ints; stored as (d, h, w)
 * with d = 1 for 2D. */
static i3rt_status parse_per_stage_axes(i3_ctx *ctx, const char *file, const cJSON *kw, const char *field, int n,
                                        int dims, int out[][3]) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(kw, field);
    int x;
    if (!json_int(v, &x) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == n))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.%s must be an int or a list of %d entries", field, n);
    for (int s = 0; s < n; s++) {
        const cJSON *e = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, s) : v;
        int axes[3] = {1, 1, 1};
        if (json_int(e, &x)) {
            for (int a = 3 - dims; a < 3; a++) axes[a] = x;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == dims) {
            for (int a = 0; a < dims; a++)
                if (!json_int(cJSON_GetArrayItem(e, a), &axes[3 - dims + a]))
                    return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.%s[%d][%d] is not an int", field, s, a);
        } else {
            return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.%s[%d] must be an int or %d ints", field, s,
                             dims);
        }
        for (int a = 0; a < 3; a++)
            if (axes[a] < 1 || axes[a] > 64)
                return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.%s[%d] has %d (must be 1..64)", field, s,
                                 axes[a]);
        memcpy(out[s], axes, sizeof axes);
    }
    return I3RT_OK;
}

static i3rt_status parse_norm(i3_ctx *ctx, const char *file, const cJSON *kw, int dims, i3_network *net) {
    const char *norm = class_field(kw, "norm_op");
    char expect[32];
    snprintf(expect, sizeof expect, "InstanceNorm%dd", dims);
    if (!norm)
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "arch_kwargs.norm_op is None (only %s is supported)", expect);
    if (strncmp(norm, "BatchNorm", 9) == 0)
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file,
                         "arch_kwargs.norm_op is %s: batch norm is not supported (only %s)", norm, expect);
    if (strcmp(norm, expect) != 0)
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "arch_kwargs.norm_op is '%s' (only %s is supported)", norm,
                         expect);
    const cJSON *nkw = cJSON_GetObjectItemCaseSensitive(kw, "norm_op_kwargs");
    if (nkw && !cJSON_IsNull(nkw) && !cJSON_IsObject(nkw))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.norm_op_kwargs is not an object");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(nkw, "eps");
    const cJSON *affine = cJSON_GetObjectItemCaseSensitive(nkw, "affine");
    const cJSON *running = cJSON_GetObjectItemCaseSensitive(nkw, "track_running_stats");
    net->norm_eps = 1e-5f; /* torch's defaults */
    net->norm_affine = 0;
    if (eps && !cJSON_IsNull(eps)) {
        if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0))
            return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "norm_op_kwargs.eps must be a positive number");
        net->norm_eps = (float)eps->valuedouble;
    }
    if (affine && !cJSON_IsNull(affine)) {
        if (!cJSON_IsBool(affine))
            return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "norm_op_kwargs.affine must be true or false");
        net->norm_affine = cJSON_IsTrue(affine);
    }
    if (cJSON_IsTrue(running)) /* eval would then normalise with running statistics */
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "norm_op_kwargs.track_running_stats is not supported");
    return I3RT_OK;
}

static i3rt_status parse_nonlin(i3_ctx *ctx, const char *file, const cJSON *kw, i3_network *net) {
    const char *nonlin = class_field(kw, "nonlin");
    const cJSON *nkw = cJSON_GetObjectItemCaseSensitive(kw, "nonlin_kwargs");
    if (nonlin && strcmp(nonlin, "LeakyReLU") == 0) {
        const cJSON *slope = cJSON_GetObjectItemCaseSensitive(nkw, "negative_slope");
        net->act.kind = I3_ACT_LEAKY_RELU;
        net->act.slope = 0.01f; /* torch's default */
        if (slope && !cJSON_IsNull(slope)) {
            if (!cJSON_IsNumber(slope))
                return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "nonlin_kwargs.negative_slope is not a number");
            net->act.slope = (float)slope->valuedouble;
        }
    } else if (nonlin && strcmp(nonlin, "ReLU") == 0) {
        net->act.kind = I3_ACT_RELU;
        net->act.slope = 0.0f;
    } else {
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file,
                         "arch_kwargs.nonlin is '%s' (only LeakyReLU and ReLU are supported)",
                         nonlin ? nonlin : "None");
    }
    return I3RT_OK;
}

/* Everything in arch_kwargs except the class-specific lists. */
static i3rt_status parse_arch(i3_ctx *ctx, const char *file, const cJSON *kw, i3_network *net) {
    int n = 0;
    if (!json_int(cJSON_GetObjectItemCaseSensitive(kw, "n_stages"), &n) || n < 2 || n > I3_MAX_STAGES)
        return i3_network_metadata_fail(ctx, n > I3_MAX_STAGES ? I3RT_ERR_UNSUPPORTED : I3RT_ERR_FORMAT, file,
                         "arch_kwargs.n_stages must be an int in 2..%d", I3_MAX_STAGES);
    net->n_stages = n;

    const char *conv = class_field(kw, "conv_op");
    char expect[16];
    snprintf(expect, sizeof expect, "Conv%dd", net->dims);
    if (!conv || strcmp(conv, expect) != 0)
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "arch_kwargs.conv_op is '%s' (dims %d needs %s)",
                         conv ? conv : "None", net->dims, expect);
    if (class_field(kw, "dropout_op"))
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "arch_kwargs.dropout_op must be None, not '%s'",
                         class_field(kw, "dropout_op"));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(kw, "nonlin_first")))
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "arch_kwargs.nonlin_first is not supported");
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(kw, "conv_bias");
    if (bias && !cJSON_IsNull(bias) && !cJSON_IsBool(bias))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.conv_bias must be true or false");
    net->conv_bias = cJSON_IsTrue(bias); /* default False */

    I3_TRY(parse_per_stage(ctx, file, kw, "features_per_stage", n, 1, net->features));
    I3_TRY(parse_per_stage_axes(ctx, file, kw, "kernel_sizes", n, net->dims, net->kernel));
    I3_TRY(parse_per_stage_axes(ctx, file, kw, "strides", n, net->dims, net->stride));
    for (int s = 0; s < n; s++)
        for (int a = 0; a < 3; a++)
            if (net->kernel[s][a] % 2 == 0) /* padding (k-1)/2 keeps the size only for odd kernels */
                return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "arch_kwargs.kernel_sizes[%d] is even (%d)", s,
                                 net->kernel[s][a]);
    I3_TRY(parse_per_stage(ctx, file, kw, "n_conv_per_stage_decoder", n - 1, 1, net->n_conv_decoder));
    I3_TRY(parse_norm(ctx, file, kw, net->dims, net));
    return parse_nonlin(ctx, file, kw, net);
}

static i3rt_status parse_resenc(i3_ctx *ctx, const char *file, const cJSON *kw, i3_network *net) {
    const char *block = class_field(kw, "block");
    if (block && strcmp(block, "BasicBlockD") != 0)
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "arch_kwargs.block is '%s' (only BasicBlockD is supported)",
                         block);
    const cJSON *bottleneck = cJSON_GetObjectItemCaseSensitive(kw, "bottleneck_channels");
    if (bottleneck && !cJSON_IsNull(bottleneck))
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file, "arch_kwargs.bottleneck_channels must be None");
    const cJSON *stem = cJSON_GetObjectItemCaseSensitive(kw, "stem_channels");
    net->stem_channels = net->features[0];
    if (stem && !cJSON_IsNull(stem) && (!json_int(stem, &net->stem_channels) || net->stem_channels < 1))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "arch_kwargs.stem_channels must be a positive int");
    return parse_per_stage(ctx, file, kw, "n_blocks_per_stage", net->n_stages, 1, net->n_conv_encoder);
}

/* patch_size of plans.configurations[configuration], following inherits_from. Absent: zeros. */
static i3rt_status parse_patch_size(i3_ctx *ctx, const i3_weights *w, i3_network *net) {
    const char *file = i3_weights_label(w);
    const char *plans_text = i3_weights_metadata(w, "plans");
    const char *cfg_name = i3_weights_metadata(w, "configuration");
    memset(net->patch_size, 0, sizeof net->patch_size);
    if (!plans_text || !cfg_name) return I3RT_OK;
    cJSON *plans = cJSON_Parse(plans_text);
    if (!plans) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: metadata \"plans\" is not valid JSON", file);
    const cJSON *cfgs = cJSON_GetObjectItemCaseSensitive(plans, "configurations");
    const cJSON *patch = NULL;
    const char *name = cfg_name;
    for (int depth = 0; depth < 8 && name && !patch; depth++) {
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(cfgs, name);
        if (!cfg) break;
        patch = cJSON_GetObjectItemCaseSensitive(cfg, "patch_size");
        const cJSON *parent = cJSON_GetObjectItemCaseSensitive(cfg, "inherits_from");
        name = cJSON_IsString(parent) ? parent->valuestring : NULL;
    }
    i3rt_status st = I3RT_OK;
    int64_t size[3] = {1, 1, 1};
    if (!cJSON_IsArray(patch) || cJSON_GetArraySize(patch) != net->dims) {
        st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: plans: configurations.%s.patch_size is missing or not %d ints", file,
                     cfg_name, net->dims);
    } else {
        for (int a = 0; a < net->dims && st == I3RT_OK; a++) {
            int x;
            if (!json_int(cJSON_GetArrayItem(patch, a), &x) || x < 1)
                st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: plans: configurations.%s.patch_size[%d] is not a positive int",
                             file, cfg_name, a);
            else
                size[3 - net->dims + a] = x;
        }
    }
    if (st == I3RT_OK) memcpy(net->patch_size, size, sizeof size);
    cJSON_Delete(plans);
    return st;
}

/* RITM's HRNet (runtime/hrnet.h); the generic fields describe its four branches for i3rt_model_describe. */
static i3rt_status parse_ritm(i3_ctx *ctx, const char *file, const cJSON *root, const char *acs, i3_network *net) {
    I3_TRY(i3_hrnet_parse(ctx, file, root, acs, &net->hrnet));
    const i3_hrnet_config *h = &net->hrnet;
    net->cls = I3_NET_RITM_HRNET18;
    net->dims = h->acs ? 3 : 2;
    net->in_channels = I3_HRNET_IMAGE_CHANNELS + h->coord_channels;
    net->num_classes = 1;
    net->n_stages = 4;
    for (int s = 0; s < 4; s++) {
        net->features[s] = h->width << s;
        net->n_conv_encoder[s] = h->small ? 2 : 4; /* BasicBlocks per branch and module */
        for (int a = 0; a < 3; a++) {
            net->kernel[s][a] = a == 0 && !h->acs ? 1 : 3;
            net->stride[s][a] = a == 0 && !h->acs ? 1 : s == 0 ? 4 : 2; /* resolution relative to the branch above */
        }
    }
    net->norm_eps = 1e-5f;
    net->act = (i3_act){I3_ACT_RELU, 0.0f};
    return I3RT_OK;
}

static i3rt_status parse_network(i3_ctx *ctx, const char *file, const cJSON *root, const char *acs, i3_network *net) {
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(root, "class");
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(root, "arch_kwargs");
    if (!cJSON_IsString(cls)) return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "\"class\" is missing");
    if (!cJSON_IsObject(kw))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "\"arch_kwargs\" is missing or not an object");
    snprintf(net->class_name, sizeof net->class_name, "%s", short_name(cls->valuestring));
    if (strcmp(net->class_name, "RITM-HRNet18") == 0) return parse_ritm(ctx, file, root, acs, net);
    if (strcmp(net->class_name, "PlainConvUNet") == 0)
        net->cls = I3_NET_PLAIN_CONV_UNET;
    else if (strcmp(net->class_name, "ResidualEncoderUNet") == 0)
        net->cls = I3_NET_RESIDUAL_ENCODER_UNET;
    else
        return i3_network_metadata_fail(ctx, I3RT_ERR_UNSUPPORTED, file,
                         "class '%s' is not supported (PlainConvUNet, ResidualEncoderUNet, RITM-HRNet18)",
                         cls->valuestring);
    if (!json_int(cJSON_GetObjectItemCaseSensitive(root, "dims"), &net->dims) || (net->dims != 2 && net->dims != 3))
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "\"dims\" must be 2 or 3");
    if (!json_int(cJSON_GetObjectItemCaseSensitive(root, "input_channels"), &net->in_channels) || net->in_channels < 1)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "\"input_channels\" must be a positive int");
    if (!json_int(cJSON_GetObjectItemCaseSensitive(root, "num_classes"), &net->num_classes) || net->num_classes < 1)
        return i3_network_metadata_fail(ctx, I3RT_ERR_FORMAT, file, "\"num_classes\" must be a positive int");
    I3_TRY(parse_arch(ctx, file, kw, net));
    if (net->cls == I3_NET_PLAIN_CONV_UNET) {
        net->stem_channels = 0;
        return parse_per_stage(ctx, file, kw, "n_conv_per_stage", net->n_stages, 1, net->n_conv_encoder);
    }
    return parse_resenc(ctx, file, kw, net);
}

i3rt_status i3_network_parse(i3_ctx *ctx, const i3_weights *w, i3_network *out) {
    const char *file = i3_weights_label(w);
    const char *text = i3_weights_metadata(w, "network");
    if (!text) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: metadata has no \"network\" entry", file);
    cJSON *root = cJSON_Parse(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: metadata \"network\" is not a JSON object", file);
    }
    i3_network net;
    memset(&net, 0, sizeof net);
    i3rt_status st = parse_network(ctx, file, root, i3_weights_metadata(w, "acs"), &net);
    cJSON_Delete(root);
    I3_TRY(st);
    I3_TRY(parse_patch_size(ctx, w, &net));
    *out = net;
    return I3RT_OK;
}

void i3_network_total_stride(const i3_network *net, int64_t out[3]) {
    for (int a = 0; a < 3; a++) {
        out[a] = 1;
        for (int s = 0; s < net->n_stages && net->cls != I3_NET_RITM_HRNET18; s++) out[a] *= net->stride[s][a];
    }
}

/* ---- building -------------------------------------------------------------------------------- */

void i3_name_fmt(char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, I3_NAME_LEN, fmt, ap);
    va_end(ap);
}

typedef struct {
    i3_ctx *ctx;
    const i3_network *net;
    i3_weights *w;
    i3_graph *g;
    i3rt_status status; /* first failure of a weight look-up (graph builders record theirs in g) */
} builder;

static int failed(const builder *b) { return b->status != I3RT_OK || b->g->failed; }

/* A weight as a graph value. Convolution kernels of 2D networks ([o, i, h, w] in the file) get a
 * depth axis of 1, so that one 3D convolution serves both. */
static int weight(builder *b, const char *name, int ndim, const int64_t *dims) {
    if (failed(b)) return -1;
    const int no_depth = ndim == 5 && b->net->dims == 2;
    int64_t file_dims[5];
    memcpy(file_dims, dims, (size_t)ndim * sizeof *dims);
    if (no_depth) memmove(file_dims + 2, file_dims + 3, 2 * sizeof *file_dims);
    const float *host;
    b->status = i3_weights_get_f32(b->ctx, b->w, name, ndim - no_depth, file_dims, &host);
    if (b->status != I3RT_OK) return -1;
    return i3_graph_weight(b->g, name, host, ndim, dims);
}

/* A tensor the file must hold but the graph does not need (a conv bias before instance norm). */
static void unused_weight(builder *b, const char *name, int64_t n) {
    const float *host;
    if (!failed(b)) b->status = i3_weights_get_f32(b->ctx, b->w, name, 1, &n, &host);
}

static int vector(builder *b, const char *prefix, const char *suffix, int64_t n) {
    char name[I3_NAME_LEN];
    i3_name_fmt(name, "%s.%s", prefix, suffix);
    return weight(b, name, 1, &n);
}

/* ConvDropoutNormReLU named `prefix` (prefix.conv.*, prefix.norm.*), with or without its nonlin. */
static int conv_norm(builder *b, int x, const char *prefix, int cin, int cout, const int k[3], const int stride[3],
                     int bias, int with_act) {
    if (failed(b)) return -1;
    char name[I3_NAME_LEN];
    int64_t wdims[5] = {cout, cin, k[0], k[1], k[2]};
    i3_name_fmt(name, "%s.conv.weight", prefix);
    int wv = weight(b, name, 5, wdims);
    if (bias) {
        i3_name_fmt(name, "%s.conv.bias", prefix);
        unused_weight(b, name, cout);
    }
    i3_conv_params cp = {.cout = cout};
    for (int a = 0; a < 3; a++) {
        cp.k[a] = k[a];
        cp.stride[a] = stride[a];
        cp.pad[a] = (k[a] - 1) / 2;
    }
    i3_name_fmt(name, "%s.conv", prefix);
    int y = failed(b) ? -1 : i3_graph_conv(b->g, x, wv, -1, &cp, name);

    int gamma = -1, beta = -1;
    i3_name_fmt(name, "%s.norm", prefix);
    if (b->net->norm_affine) {
        gamma = vector(b, name, "weight", cout);
        beta = vector(b, name, "bias", cout);
    }
    i3_norm_params np = {.eps = b->net->norm_eps};
    if (with_act) np.act = b->net->act;
    return failed(b) ? -1 : i3_graph_instance_norm(b->g, y, gamma, beta, &np, name);
}

static const int ONE[3] = {1, 1, 1};

/* PlainConvUNet encoder stage s: n convs, the first strided. */
static int plain_stage(builder *b, int x, int s, int cin) {
    const i3_network *net = b->net;
    for (int i = 0; i < net->n_conv_encoder[s]; i++) {
        char prefix[I3_NAME_LEN];
        i3_name_fmt(prefix, "encoder.stages.%d.0.convs.%d", s, i);
        x = conv_norm(b, x, prefix, i == 0 ? cin : net->features[s], net->features[s], net->kernel[s],
                      i == 0 ? net->stride[s] : ONE, net->conv_bias, 1);
    }
    return x;
}

/* BasicBlockD: act(norm(conv2(act(norm(conv1(x))))) + skip(x)). */
static int basic_block(builder *b, int x, int s, int blk, int cin) {
    const i3_network *net = b->net;
    const int cout = net->features[s];
    const int *stride = blk == 0 ? net->stride[s] : ONE;
    const int strided = stride[0] != 1 || stride[1] != 1 || stride[2] != 1;
    char prefix[I3_NAME_LEN], name[I3_NAME_LEN];
    i3_name_fmt(prefix, "encoder.stages.%d.blocks.%d", s, blk);

    /* The skip path first: x then dies at conv1 instead of living through conv2. */
    int residual = x;
    if (strided && !failed(b)) {
        i3_avg_pool_params pp;
        for (int a = 0; a < 3; a++) pp.k[a] = stride[a];
        i3_name_fmt(name, "%s.skip.0", prefix);
        residual = i3_graph_avg_pool(b->g, residual, &pp, name);
    }
    if (cin != cout) {
        i3_name_fmt(name, "%s.skip.%d", prefix, strided);
        residual = conv_norm(b, residual, name, cin, cout, ONE, ONE, 0, 0);
    }
    i3_name_fmt(name, "%s.conv1", prefix);
    int y = conv_norm(b, x, name, cin, cout, net->kernel[s], stride, net->conv_bias, 1);
    i3_name_fmt(name, "%s.conv2", prefix);
    y = conv_norm(b, y, name, cout, cout, net->kernel[s], ONE, net->conv_bias, 0);
    return failed(b) ? -1 : i3_graph_add(b->g, y, residual, net->act, prefix);
}

static int resenc_stage(builder *b, int x, int s, int cin) {
    for (int blk = 0; blk < b->net->n_conv_encoder[s]; blk++) {
        x = basic_block(b, x, s, blk, cin);
        cin = b->net->features[s];
    }
    return x;
}

/* UNetDecoder: from the bottleneck up to stage 0, then the seg head. */
static int decoder(builder *b, const int *skips) {
    const i3_network *net = b->net;
    const int n = net->n_stages;
    int x = skips[n - 1];
    char prefix[I3_NAME_LEN], name[I3_NAME_LEN];
    for (int d = 0; d < n - 1; d++) {
        const int below = n - 1 - d, above = n - 2 - d; /* encoder stages */
        const int cin = net->features[below], cout = net->features[above];
        const int *k = net->stride[below];
        int64_t wdims[5] = {cin, cout, k[0], k[1], k[2]};
        i3_name_fmt(prefix, "decoder.transpconvs.%d", d);
        i3_name_fmt(name, "%s.weight", prefix);
        int wv = weight(b, name, 5, wdims);
        int bv = net->conv_bias ? vector(b, prefix, "bias", cout) : -1;
        i3_conv_transpose_params tp = {.cout = cout, .k = {k[0], k[1], k[2]}};
        int up = failed(b) ? -1 : i3_graph_conv_transpose(b->g, x, wv, bv, &tp, prefix);
        i3_name_fmt(name, "decoder.cat.%d", d);
        x = failed(b) ? -1 : i3_graph_concat(b->g, up, skips[above], name); /* torch.cat((x, skip), 1) */
        for (int i = 0; i < net->n_conv_decoder[d]; i++) {
            i3_name_fmt(name, "decoder.stages.%d.convs.%d", d, i);
            x = conv_norm(b, x, name, i == 0 ? 2 * cout : cout, cout, net->kernel[above], ONE, net->conv_bias, 1);
        }
    }
    int64_t wdims[5] = {net->num_classes, net->features[0], 1, 1, 1};
    i3_name_fmt(prefix, "decoder.seg_layers.%d", n - 2);
    i3_name_fmt(name, "%s.weight", prefix);
    int wv = weight(b, name, 5, wdims);
    int bv = vector(b, prefix, "bias", net->num_classes);
    i3_conv_params cp = {.cout = net->num_classes, .k = {1, 1, 1}, .stride = {1, 1, 1}};
    return failed(b) ? -1 : i3_graph_conv(b->g, x, wv, bv, &cp, prefix);
}

static i3rt_status check_input(i3_ctx *ctx, const i3_network *net, const char *file, i3_shape5 in) {
    int64_t total[3];
    i3_network_total_stride(net, total);
    const int64_t size[3] = {in.d, in.h, in.w};
    const int batches = net->cls == I3_NET_RITM_HRNET18; /* SnC's flip runs an input and its mirror at once */
    if (in.n < 1 || (in.n != 1 && !batches) || in.c != net->in_channels)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "%s: input is [%lld, %lld, ...], the %s expects [%s, %d, ...]", file,
                       (long long)in.n, (long long)in.c, net->class_name, batches ? "n" : "1", net->in_channels);
    if (net->dims == 2 && in.d != 1)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "%s: a 2D network needs depth 1, got an input of depth %lld", file,
                       (long long)in.d);
    for (int a = 0; a < 3; a++)
        if (size[a] < 1 || size[a] % total[a] != 0)
            return i3_fail(ctx, I3RT_ERR_SHAPE,
                           "%s: input spatial size %lldx%lldx%lld is not divisible by the network's total stride "
                           "%lldx%lldx%lld",
                           file, (long long)in.d, (long long)in.h, (long long)in.w, (long long)total[0],
                           (long long)total[1], (long long)total[2]);
    return I3RT_OK;
}

i3rt_status i3_network_build(i3_ctx *ctx, const i3_network *net, i3_weights *w, i3_shape5 input, i3_graph *g,
                             int *output) {
    const char *file = i3_weights_label(w);
    I3_TRY(check_input(ctx, net, file, input));
    if (net->cls == I3_NET_RITM_HRNET18) return i3_hrnet_build(ctx, &net->hrnet, w, input, 1, g, output);
    builder b = {.ctx = ctx, .net = net, .w = w, .g = g, .status = I3RT_OK};
    int x = i3_graph_input(g, input);
    int cin = net->in_channels;
    if (net->cls == I3_NET_RESIDUAL_ENCODER_UNET) {
        x = conv_norm(&b, x, "encoder.stem.convs.0", cin, net->stem_channels, net->kernel[0], ONE, net->conv_bias, 1);
        cin = net->stem_channels;
    }
    int skips[I3_MAX_STAGES];
    for (int s = 0; s < net->n_stages; s++) {
        x = net->cls == I3_NET_PLAIN_CONV_UNET ? plain_stage(&b, x, s, cin) : resenc_stage(&b, x, s, cin);
        skips[s] = x;
        cin = net->features[s];
    }
    int logits = decoder(&b, skips);
    I3_TRY(b.status);
    if (g->failed) return (i3rt_status)g->failed; /* the graph builder left its message in ctx */
    I3_TRY(i3_weights_check_all_used(ctx, w));
    *output = logits;
    return I3RT_OK;
}
