/* Backend selection and the backend-independent parts of running a planned graph. */
#include "backend.h"
#include "cuda_backend.h"

#include <stdlib.h>

i3rt_status i3_backend_create(i3_ctx *ctx, i3_backend **out) {
    *out = NULL;
    switch (ctx->backend) {
    case I3RT_BACKEND_CPU: return i3_backend_cpu_create(ctx, out);
    case I3RT_BACKEND_CUDA: return i3_backend_cuda_create(ctx, 0, out);
    case I3RT_BACKEND_EMULATED: return i3_backend_cuda_create(ctx, 1, out);
    }
    return i3_fail(ctx, I3RT_ERR_BACKEND, "unknown backend %d", (int)ctx->backend);
}

void i3_backend_destroy(i3_backend *b) {
    if (b) b->iface->destroy(b);
}

void i3_graph_place(i3_graph *g, i3_backend *b, void *arena, void *weights_mem) {
    size_t weight_offset = 0;
    for (int i = 0; i < g->n_values; i++) {
        i3_value *v = &g->values[i];
        if (v->kind != I3_VALUE_WEIGHT) {
            v->data = (char *)arena + v->offset;
        } else if (b->iface->host_memory) {
            v->data = (void *)v->host;
        } else {
            v->data = (char *)weights_mem + weight_offset;
            weight_offset += (i3_value_bytes(v) + 255) / 256 * 256;
        }
    }
}

i3rt_status i3_graph_upload_weights(i3_graph *g, i3_backend *b) {
    for (int i = 0; i < g->n_values && !b->iface->host_memory; i++) {
        const i3_value *v = &g->values[i];
        if (v->kind == I3_VALUE_WEIGHT) I3_TRY(b->iface->upload(b, v->data, v->host, i3_value_bytes(v)));
    }
    return I3RT_OK;
}

i3rt_status i3_graph_bind(i3_graph *g, i3_backend *b, void *arena, void *weights_mem) {
    i3_graph_place(g, b, arena, weights_mem);
    return i3_graph_upload_weights(g, b);
}

size_t i3_graph_weight_bytes(const i3_graph *g) {
    size_t total = 0;
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].kind == I3_VALUE_WEIGHT) total += (i3_value_bytes(&g->values[i]) + 255) / 256 * 256;
    return total;
}

i3rt_status i3_graph_run(i3_graph *g, i3_backend *b, void *scratch) {
    for (int n = 0; n < g->n_nodes; n++) I3_TRY(b->iface->run_node(b, g, &g->nodes[n], scratch));
    return b->iface->synchronize(b);
}
