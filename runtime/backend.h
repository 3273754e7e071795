/* The backend interface: one table of functions per backend (CPU now; CUDA and the emulated CUDA
 * device plug into the same table). The runtime allocates one arena and one scratch buffer per
 * planned graph through it, uploads weights, and runs the nodes in order. */
#ifndef I3RT_BACKEND_H
#define I3RT_BACKEND_H

#include "graph.h"

/* The device loop of the sliding window (runtime/sliding_window.c) on backend memory, with the kernels
 * of kernels/sliding_window.cu (launchers.h's sw_tile, sw_gather, sw_accumulate, sw_normalize), queued on
 * the backend's stream; zero clears `bytes` bytes. The sums are float32, or f16 bits when fp16. */
typedef struct {
    i3rt_status (*zero)(i3_backend *b, void *ptr, size_t bytes);
    i3rt_status (*tile)(i3_backend *b, const float *x, int64_t channels, const int64_t shape[3], const int64_t offset[3],
                        const int64_t tile[3], int flip_mask, float *y);
    i3rt_status (*gather)(i3_backend *b, const float *pred, int64_t classes, const int64_t tile[3], int flip_mask,
                          int first, float *sum);
    i3rt_status (*accumulate)(i3_backend *b, const float *sum, int64_t classes, const int64_t tile[3], int passes,
                              const float *gauss, int fp16, void *acc, void *wsum, const int64_t volume[3],
                              const int64_t offset[3]);
    i3rt_status (*normalize)(i3_backend *b, void *acc, const void *wsum, int64_t classes, const int64_t volume[3],
                             int fp16);
} i3_backend_sw_i;

/* How many planned graphs a model keeps (one per input size: an SnC session alternates a slice and its zoomed
 * crop), and so how many captured CUDA graphs a device backend keeps. */
#define I3_GRAPHS_KEPT 4

typedef struct {
    const char *name;
    /* 1 if the backend computes on host memory: weights are used where they are, not uploaded. */
    int host_memory;
    /* Device memory. alloc fails with I3RT_ERR_OUT_OF_MEMORY and a message, never aborts. */
    i3rt_status (*alloc)(i3_backend *b, size_t bytes, void **out);
    void (*free)(i3_backend *b, void *ptr);
    i3rt_status (*upload)(i3_backend *b, void *dst, const void *src, size_t bytes);
    i3rt_status (*download)(i3_backend *b, void *dst, const void *src, size_t bytes);
    /* Scratch bytes a node needs while it runs (0 if none). */
    size_t (*scratch_bytes)(i3_backend *b, const i3_graph *g, const i3_node *node);
    /* Corrects bytes[v] (i3_value_bytes on entry) for the values of g that the backend holds in another
     * element type (the CUDA backend's channels-last f16/bf16 activations: half). Called by i3_graph_plan
     * once every value's last reader is known; NULL: every value as i3_value_bytes says. */
    i3rt_status (*value_sizes)(i3_backend *b, const i3_graph *g, size_t *bytes);
    /* The byte offset inside concat's output at which the backend can have the concat's input k (0, 1)
     * written by that input's producer (a view: no buffer of its own, no copy), or SIZE_MAX. Asked by
     * i3_graph_plan after value_sizes, only where that input dies at the concat; NULL:
     * i3_graph_concat_contiguous_offset. */
    size_t (*concat_view_offset)(i3_backend *b, const i3_graph *g, const i3_node *concat, int k);
    /* Runs one node; its values' data pointers are set. */
    i3rt_status (*run_node)(i3_backend *b, const i3_graph *g, const i3_node *node, void *scratch);
    /* Waits for queued work (no-op on the CPU). */
    i3rt_status (*synchronize)(i3_backend *b);
    void (*destroy)(i3_backend *b);
    /* NULL on host-memory backends: the sliding window runs its host loop there. */
    const i3_backend_sw_i *sw;
    /* Host memory for what goes to and comes from the backend: pinned on a device (copies at full speed,
     * asynchronous), plain on the CPU. Fails with I3RT_ERR_OUT_OF_MEMORY and a message. */
    i3rt_status (*host_alloc)(i3_backend *b, size_t bytes, void **out);
    void (*host_free)(i3_backend *b, void *ptr);
} i3_backend_i;

struct i3_backend {
    const i3_backend_i *iface;
    i3_ctx *ctx;       /* errors go here */
    int n_threads;
    void *impl;        /* backend-private state */
};

/* Creates the backend that ctx->backend names; I3RT_ERR_BACKEND if it is not built in. */
i3rt_status i3_backend_create(i3_ctx *ctx, i3_backend **out);
void i3_backend_destroy(i3_backend *b);

i3rt_status i3_backend_cpu_create(i3_ctx *ctx, i3_backend **out);

/* Points every value of a planned graph at its storage: input and activations in `arena`
 * (g->arena_bytes), weights at their host copies on a host-memory backend, else uploaded into
 * `weights_mem` (i3_graph_weight_bytes bytes, allocated by the caller through the backend). */
i3rt_status i3_graph_bind(i3_graph *g, i3_backend *b, void *arena, void *weights_mem);
/* i3_graph_bind's two halves: pointing the values at their storage, and uploading the weights there (for a
 * graph rebuilt over the same weights already in weights_mem, the model skips the second). */
void i3_graph_place(i3_graph *g, i3_backend *b, void *arena, void *weights_mem);
i3rt_status i3_graph_upload_weights(i3_graph *g, i3_backend *b);
size_t i3_graph_weight_bytes(const i3_graph *g);
/* Runs every node in order with one scratch buffer. */
i3rt_status i3_graph_run(i3_graph *g, i3_backend *b, void *scratch);

#endif /* I3RT_BACKEND_H */
