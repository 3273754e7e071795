/* The CPU backend: host memory and the fast CPU ops of runtime/ops/. */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

static i3rt_status cpu_alloc(i3_backend *b, size_t bytes, void **out) {
    *out = i3_aligned_alloc(b->ctx, bytes, "the CPU arena");
    return *out ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
}

static void cpu_free(i3_backend *b, void *ptr) { free(ptr); }

static i3rt_status cpu_copy(i3_backend *b, void *dst, const void *src, size_t bytes) {
    memcpy(dst, src, bytes);
    return I3RT_OK;
}

static size_t cpu_scratch_bytes(i3_backend *b, const i3_graph *g, const i3_node *node) {
    const i3_shape5 xs = i3_value_shape5(&g->values[node->in[0]]);
    if (node->op == I3_OP_CONV) return i3_cpu_conv_scratch_bytes(xs, &node->p.conv, b->n_threads);
    if (node->op == I3_OP_ACS_CONV) return i3_cpu_acs_conv_scratch_bytes(xs, &node->p.acs, b->n_threads);
    return 0;
}

static i3rt_status cpu_run_node(i3_backend *b, const i3_graph *g, const i3_node *node, void *scratch) {
    const i3_value *x = &g->values[node->in[0]];
    const i3_value *y = &g->values[node->out];
    const float *in0 = x->data;
    const float *in1 = node->in[1] >= 0 ? g->values[node->in[1]].data : NULL;
    const float *in2 = node->in[2] >= 0 ? g->values[node->in[2]].data : NULL;
    float *out = y->data;
    i3_shape5 xs = i3_value_shape5(x);
    int nt = b->n_threads;
    switch (node->op) {
    case I3_OP_CONV: i3_cpu_conv(in0, xs, in1, in2, &node->p.conv, out, scratch, nt); break;
    case I3_OP_CONV_TRANSPOSE: i3_cpu_conv_transpose(in0, xs, in1, in2, &node->p.conv_transpose, out, nt); break;
    case I3_OP_ACS_CONV: i3_cpu_acs_conv(in0, xs, in1, in2, &node->p.acs, out, scratch, nt); break;
    case I3_OP_INSTANCE_NORM: i3_cpu_instance_norm(in0, xs, in1, in2, &node->p.norm, out, nt); break;
    case I3_OP_ACTIVATION: i3_cpu_activation(in0, i3_shape5_numel(xs), node->p.act, out, nt); break;
    case I3_OP_ADD: i3_cpu_add(in0, in1, i3_shape5_numel(xs), node->p.act, out, nt); break;
    case I3_OP_CONCAT:
        i3_cpu_concat(g->values[node->in[0]].view_of == node->out ? NULL : in0, xs.c, /* NULL: written in place */
                      g->values[node->in[1]].view_of == node->out ? NULL : in1, g->values[node->in[1]].dims[1], xs.n,
                      i3_shape5_spatial(xs), out);
        break;
    case I3_OP_RESIZE: i3_cpu_resize(in0, xs, &node->p.resize, out, nt); break;
    case I3_OP_SOFTMAX:
        i3_cpu_softmax_uncertainty(in0, xs.n, xs.c, i3_shape5_spatial(xs), out, NULL, NULL, NULL, nt);
        break;
    case I3_OP_AVG_POOL: i3_cpu_avg_pool_ref(in0, xs, &node->p.avg_pool, out); break;
    case I3_OP_SLICE_CHANNELS: i3_cpu_slice_channels(in0, xs, &node->p.slice, out); break;
    case I3_OP_SPATIAL_GATHER:
        i3_cpu_spatial_gather_ref(in0, in1, xs.n, xs.c, g->values[node->in[1]].dims[1], i3_shape5_spatial(xs), out);
        break;
    case I3_OP_OBJECT_ATTENTION:
        i3_cpu_object_attention_ref(in0, in1, in2, xs.n, xs.c, g->values[node->in[2]].dims[1],
                                    g->values[node->in[1]].dims[2], i3_shape5_spatial(xs), out, nt);
        break;
    case I3_OP_MASK_POOL:
        i3_cpu_mask_pool_ref(in0, xs, in1, i3_value_shape5(&g->values[node->in[1]]), &node->p.mask_pool, out);
        break;
    case I3_OP_CHANNEL_GATE: i3_cpu_channel_gate(in0, xs, in1, out, nt); break;
    default:
        return i3_fail(b->ctx, I3RT_ERR_UNSUPPORTED, "CPU backend: op %s not implemented", i3_op_name(node->op));
    }
    return I3RT_OK;
}

static i3rt_status cpu_synchronize(i3_backend *b) { return I3RT_OK; }

static void cpu_destroy(i3_backend *b) { free(b); }

static i3rt_status cpu_host_alloc(i3_backend *b, size_t bytes, void **out) {
    *out = i3_malloc(b->ctx, bytes ? bytes : 1, "host buffers");
    return *out ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
}

static void cpu_host_free(i3_backend *b, void *ptr) {
    (void)b;
    free(ptr);
}

static const i3_backend_i cpu_iface = {
    .name = "cpu",
    .host_memory = 1,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .scratch_bytes = cpu_scratch_bytes,
    .run_node = cpu_run_node,
    .synchronize = cpu_synchronize,
    .destroy = cpu_destroy,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
};

i3rt_status i3_backend_cpu_create(i3_ctx *ctx, i3_backend **out) {
    i3_backend *b = i3_calloc(ctx, 1, sizeof *b, "the CPU backend");
    if (!b) return I3RT_ERR_OUT_OF_MEMORY;
    b->iface = &cpu_iface;
    b->ctx = ctx;
    b->n_threads = ctx->n_threads;
    *out = b;
    return I3RT_OK;
}
