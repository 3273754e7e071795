/* Networks described by a weight file's "network" metadata, built into a graph for one input shape.
 *
 * Supported: nnU-Net v2's PlainConvUNet and ResidualEncoderUNet (dynamic_network_architectures),
 * 2D and 3D, 2..I3_MAX_STAGES stages, per-stage kernel sizes (odd), strides, features and convs /
 * BasicBlockD blocks, conv_bias on or off, InstanceNorm with or without affine, LeakyReLU (any slope)
 * or ReLU, ResEnc stem_channels. Not supported (I3RT_ERR_UNSUPPORTED): BatchNorm, dropout_op,
 * nonlin_first, BottleneckD blocks. Deep supervision heads are not part of the inference network.
 * The parity with PyTorch is checked by tests/test_unet.c on networks planned by nnunetv2.
 * Also RITM's HRNet-18 + OCR interactive network ("RITM-HRNet18", 2D or ACS 3D): built by runtime/hrnet.c
 * (checked by tests/test_hrnet.c); for it the fields below describe the four HRNet branches. */
#ifndef I3RT_NETWORK_H
#define I3RT_NETWORK_H

#include "graph.h"
#include "hrnet.h"
#include "weights.h"

#define I3_MAX_STAGES 12

typedef enum { I3_NET_PLAIN_CONV_UNET = 0, I3_NET_RESIDUAL_ENCODER_UNET, I3_NET_RITM_HRNET18 } i3_network_class;

typedef struct {
    i3_network_class cls;
    char class_name[64];
    int dims;                      /* 2 or 3 */
    int in_channels, num_classes;
    int n_stages;
    int features[I3_MAX_STAGES];
    int kernel[I3_MAX_STAGES][3];  /* per stage, (d, h, w); d = 1 for 2D */
    int stride[I3_MAX_STAGES][3];
    int n_conv_encoder[I3_MAX_STAGES];  /* PlainConvUNet: convs per stage; ResEnc: blocks per stage */
    int stem_channels;             /* ResEnc: output channels of the stem (features[0] by default) */
    int n_conv_decoder[I3_MAX_STAGES - 1];
    int conv_bias;                 /* encoder/decoder convs and transposed convs (the seg head always) */
    float norm_eps;
    int norm_affine;               /* instance norm has gamma/beta */
    i3_act act;                    /* nonlin after every norm */
    int64_t patch_size[3];         /* from the plans, (1, h, w) for 2D; 0 if unknown */
    i3_hrnet_config hrnet;         /* RITM-HRNet18 only (in_channels = image + click-map channels) */
} i3_network;

/* Fails with "FILE: network metadata: MESSAGE" (the network parsers' one error format). */
i3rt_status i3_network_metadata_fail(i3_ctx *ctx, i3rt_status status, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Tensor and node names of the network builders (network.c, hrnet.c): at most about 60 characters. */
#define I3_NAME_LEN 128
/* printf into a name buffer of I3_NAME_LEN characters (truncating). */
void i3_name_fmt(char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses and validates the "network" (and "plans"/"configuration" for the patch size) metadata of
 * a weight file. Unsupported classes or blocks give I3RT_ERR_UNSUPPORTED naming the file and field. */
i3rt_status i3_network_parse(i3_ctx *ctx, const i3_weights *w, i3_network *out);
/* The parsed network of a loaded model (model.c): pipelines check its kind and read its input encoding. */
const i3_network *i3_model_network(const i3rt_model *model);
/* i3rt_model_forward on `batch` inputs at once: input [batch, in_channels, spatial], logits [batch, classes,
 * spatial]. One graph runs them all (fewer, larger kernels than a forward each). */
i3rt_status i3_model_forward_batch(i3rt_model *model, int64_t batch, const float *input, const int64_t spatial[3],
                                   float *logits);
/* A model's forward on backend memory, for loops that keep their data on the device (the sliding
 * window): i3_model_device_io prepares, allocates and binds the graph for `batch` inputs of size `spatial` as
 * i3_model_forward_batch does and gives the backend and the graph's input and output values' memory;
 * i3_model_run then runs the graph on what was written into *input (its memory may be reused by later
 * nodes: write it before every run) and leaves the logits [batch, classes, spatial] in *output. The
 * pointers hold until the model is prepared for another size. */
i3rt_status i3_model_device_io(i3rt_model *model, int64_t batch, const int64_t spatial[3], i3_backend **backend,
                               float **input, const float **output);
i3rt_status i3_model_run(i3rt_model *model);
/* Whether the model runs on a device (its backend keeps tensors out of host memory: the CUDA backend, real or
 * emulated). */
int i3_model_on_device(const i3rt_model *model);
/* Host memory for a model's inputs and outputs through its backend: pinned on a GPU (the copies of
 * i3_model_forward_batch then run at full speed), plain on the CPU; freed with i3_model_host_free. */
i3rt_status i3_model_host_alloc(i3rt_model *model, size_t bytes, void **out);
void i3_model_host_free(i3rt_model *model, void *ptr);

/* Product of the strides per axis: spatial sizes must be divisible by it (1 for RITM-HRNet18, which
 * takes any size). */
void i3_network_total_stride(const i3_network *net, int64_t out[3]);

/* Builds the inference graph for an input [1, in_channels, d, h, w] into g (initialized by the
 * caller), taking every weight from w by its state-dict name with its expected shape; *output is
 * the logits value. Fails naming the missing/mismatched tensor; checks no tensor is left unused. */
i3rt_status i3_network_build(i3_ctx *ctx, const i3_network *net, i3_weights *w, i3_shape5 input, i3_graph *g,
                             int *output);

#endif /* I3RT_NETWORK_H */
