/* Entry point of the CUDA backend (runtime/backend_cuda.cu), for i3_backend_create.
 *
 * emulated = 1: the kernels of kernels/<op>.cu on the CPU through the SIMT emulator (always built);
 * emulated = 0: the same kernels on the GPU (built with -DI3RT_CUDA=ON; otherwise, or when no
 * device is present, I3RT_ERR_BACKEND with a message). */
#ifndef I3RT_CUDA_BACKEND_H
#define I3RT_CUDA_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include "backend.h"

i3rt_status i3_backend_cuda_create(i3_ctx *ctx, int emulated, i3_backend **out);

/* The backend's settings. i3_backend_cuda_create takes them from the environment
 * (i3_cuda_options_from_env: I3RT_CUDA_CONV = f32 | f16 | bf16 | tf32, I3RT_CUDA_FUSE = 0 | 1,
 * I3RT_CUDA_GRAPHS = 0 | 1, I3RT_CUDA_PROFILE = 0 | 1; defaults f32, 1, 1, 0), the convolution precision
 * overridden by the context's (i3rt_context_set_precision); i3_backend_cuda_create_with takes them from
 * the caller. */
typedef enum {
    I3_CUDA_CONV_F32 = 0, /* direct f32 convolution: the CPU backend's results up to summation order */
    I3_CUDA_CONV_F16,     /* tensor cores, operands rounded to f16 / bf16 / tf32, f32 accumulation */
    I3_CUDA_CONV_BF16,
    I3_CUDA_CONV_TF32
} i3_cuda_conv_precision;
typedef struct {
    int conv;   /* an i3_cuda_conv_precision (an int: a bad value is an error, not undefined behaviour) */
    int fuse;   /* cross-node fusions (docs/cuda.md, "Fusions") */
    int graphs; /* CUDA-graph capture and replay of a repeated forward */
    int profile; /* time every node (stream synchronized around it, no graphs) and print the time per op on
                  * stderr when the backend is destroyed: where a forward's time goes, for the GPU check */
} i3_cuda_options;
i3rt_status i3_cuda_options_from_env(i3_ctx *ctx, i3_cuda_options *out);
i3rt_status i3_backend_cuda_create_with(i3_ctx *ctx, int emulated, const i3_cuda_options *opt, i3_backend **out);

/* What the backend did since its creation, for tests and benchmarks: nodes whose own memory pass
 * was fused away (an instance norm's statistics taken in the producing conv's epilogue, a norm
 * deferred into the next conv's prologue or the residual add), conv and concat outputs kept
 * channels-last f16/bf16 for the convolution that reads them, CUDA graphs captured from a repeated forward,
 * forwards replayed from one, and nodes timed by the profile. */
typedef struct {
    int64_t fused_nodes, channels_last_outputs, graph_captures, graph_replays, profiled_nodes;
} i3_cuda_stats;
void i3_backend_cuda_stats(const i3_backend *b, i3_cuda_stats *out);

/* The stream the backend's kernels run on and its synchronize waits for: a caller that launches kernels
 * of kernels/launchers.h itself next to the backend (bench/gpu_bench.c) passes it to them. */
void *i3_backend_cuda_stream(i3_backend *b);

/* Pinned (page-locked) host memory for the backend's uploads and downloads, which are then truly
 * asynchronous on the GPU (plain host memory on the emulator). I3RT_ERR_OUT_OF_MEMORY with a message. */
i3rt_status i3_backend_cuda_host_alloc(i3_backend *b, size_t bytes, void **out);
void i3_backend_cuda_host_free(i3_backend *b, void *ptr);

#ifdef __cplusplus
}
#endif

#endif /* I3RT_CUDA_BACKEND_H */
