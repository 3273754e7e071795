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

/* How many nodes' own memory passes the backend fused away since its creation (an instance norm's
 * statistics taken in the producing conv's epilogue, a norm deferred into the next conv's prologue
 * or the residual add); for tests and benchmarks. */
int64_t i3_backend_cuda_fused_nodes(const i3_backend *b);

#ifdef __cplusplus
}
#endif

#endif /* I3RT_CUDA_BACKEND_H */
