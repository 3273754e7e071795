/* i3rt: inference engine for interactive 3D medical image segmentation.
 *
 * The public C API. Everything is reached through opaque handles; every call that can fail returns an
 * i3rt_status and leaves a message naming the file / tensor / shape in its context
 * (i3rt_context_error). There is no global state: two contexts never share anything, and the caller
 * decides how many threads a context may use and which backend runs the work. */
#ifndef I3RT_H
#define I3RT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define I3RT_VERSION "0.1.0"

typedef enum {
    I3RT_OK = 0,
    I3RT_ERR_INVALID_ARGUMENT, /* a caller's argument is out of range or NULL */
    I3RT_ERR_IO,               /* a file could not be opened, read or written */
    I3RT_ERR_FORMAT,           /* a file is corrupt, truncated or not what it claims to be */
    I3RT_ERR_UNSUPPORTED,      /* valid input that i3rt does not implement (network block, dtype...) */
    I3RT_ERR_SHAPE,            /* tensor shapes do not fit together */
    I3RT_ERR_OUT_OF_MEMORY,    /* host or device memory ran out */
    I3RT_ERR_BACKEND,          /* the backend failed (device error, backend not built in) */
} i3rt_status;

typedef enum {
    I3RT_BACKEND_CPU = 0,      /* reference + fast CPU kernels */
    I3RT_BACKEND_CUDA = 1,     /* hand-written CUDA kernels on a GPU */
    I3RT_BACKEND_EMULATED = 2, /* the same CUDA kernels on the CPU through the SIMT emulator */
} i3rt_backend_kind;

/* Arithmetic of the convolutions. F32 everywhere by default (results match the CPU backend up to
 * summation order); the CUDA backends can run them on tensor cores with operands rounded to f16,
 * bf16 or tf32 and f32 accumulation. */
typedef enum {
    I3RT_PRECISION_F32 = 0,
    I3RT_PRECISION_F16 = 1,
    I3RT_PRECISION_BF16 = 2,
    I3RT_PRECISION_TF32 = 3,
} i3rt_precision;

typedef struct i3rt_context i3rt_context;
typedef struct i3rt_model i3rt_model;

/* A short name for a status code ("I3RT_ERR_FORMAT"). Never NULL. */
const char *i3rt_status_name(i3rt_status status);

/* Creates a context. n_threads >= 1 is how many CPU threads its work may use. */
i3rt_status i3rt_context_create(i3rt_context **out, int n_threads, i3rt_backend_kind backend);
void i3rt_context_free(i3rt_context *ctx);
/* Sets the convolution precision of the models loaded afterwards on this context. The CPU backend
 * computes in f32 only: anything else is I3RT_ERR_UNSUPPORTED there. */
i3rt_status i3rt_context_set_precision(i3rt_context *ctx, i3rt_precision precision);
/* The message of the last failed call on this context ("" if none). Valid until the next call. */
const char *i3rt_context_error(const i3rt_context *ctx);

/* Loads an i3rt weight file (docs/weights-format.md), validates it against its network description and
 * builds the network. The file's bytes are read once; the model does not keep the file open. */
i3rt_status i3rt_model_load(i3rt_context *ctx, const char *path, i3rt_model **out);
void i3rt_model_free(i3rt_model *model);

typedef struct {
    char network[64];       /* "PlainConvUNet", "ResidualEncoderUNet" */
    int dims;               /* 2 or 3 */
    int in_channels;
    int num_classes;        /* output channels (logits) */
    int n_stages;
    int64_t patch_size[3];  /* d, h, w of the configuration's patch (d = 1 for 2D) */
    int64_t total_stride[3];/* product of the strides per axis: input sizes must be multiples of it */
    int64_t n_parameters;
    size_t weight_bytes;    /* as held in memory by the backend */
} i3rt_model_info;

i3rt_status i3rt_model_get_info(const i3rt_model *model, i3rt_model_info *out);

/* Plans the activation memory of a forward pass on an input of spatial size d x h x w (d = 1 for 2D
 * networks) without running it. *peak_bytes is the arena the forward will use. */
i3rt_status i3rt_model_plan(i3rt_model *model, const int64_t spatial[3], size_t *peak_bytes);

/* Writes a human-readable description of the network (stages, shapes at the given input size,
 * parameters, planned peak memory) into buf (always NUL-terminated). Returns the length needed. */
size_t i3rt_model_describe(i3rt_model *model, const int64_t spatial[3], char *buf, size_t buf_size);

/* One forward pass. input: float32 [in_channels, d, h, w] (row-major, w fastest); logits: float32
 * [num_classes, d, h, w]. Each spatial size must be divisible by the network's total stride per axis. */
i3rt_status i3rt_model_forward(i3rt_model *model, const float *input, const int64_t spatial[3], float *logits);

#ifdef __cplusplus
}
#endif
#endif /* I3RT_H */
