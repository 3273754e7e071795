/* The public model API (include/i3rt.h): load a weight file, build its network for an input size,
 * plan the activation memory and run forwards on the context's backend. */
#include "backend.h"
#include "network.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The graphs a model keeps (I3_GRAPHS_KEPT), one per input size and batch: an SnC session alternates between a
 * slice and its zoomed crop, and a backend replays the work of a graph it has run before (CUDA graphs). Building
 * one costs little (HRNet-18s: 0.4 ms); replaying it instead of launching its kernels one by one is what is kept. */

typedef struct {
    i3_graph graph;  /* built and planned for `batch` inputs of size `spatial`; no nodes: an empty slot */
    int64_t batch, spatial[3];
    int bound;       /* the graph's values point into the model's current buffers */
    uint64_t used;   /* the model's clock when it last served; the least recent is replaced first */
} model_graph;

struct i3rt_model {
    i3_ctx *ctx;
    i3_weights *weights;
    i3_network net;
    i3_backend *backend;
    model_graph graphs[I3_GRAPHS_KEPT];
    model_graph *cur;         /* the one the last prepare chose */
    uint64_t clock;
    int64_t n_params;
    void *arena, *scratch, *weights_mem;  /* backend memory shared by the graphs, grown on demand */
    size_t arena_cap, scratch_cap, weights_cap;
    /* what weights_mem holds, in order: each weight's host data and bytes (host data never changes: the
     * file's tensors, or derived ones computed once), so every graph over the same list (all of a model's)
     * finds them uploaded */
    struct uploaded_weight { const float *host; size_t bytes; } *uploaded;
    int n_uploaded;
};

/* Makes the graph for `batch` inputs of the given spatial size the current one: a kept one, or a new one
 * built and planned in place of the least recently used (which stays if the build fails). */
static i3rt_status model_prepare(i3rt_model *m, int64_t batch, const int64_t spatial[3]) {
    model_graph *hit = NULL, *oldest = &m->graphs[0];
    for (int i = 0; i < I3_GRAPHS_KEPT; i++) {
        model_graph *e = &m->graphs[i];
        if (e->graph.n_nodes > 0 && e->batch == batch && memcmp(e->spatial, spatial, sizeof e->spatial) == 0) hit = e;
        if (e->used < oldest->used) oldest = e;
    }
    if (!hit) {
        i3_graph g;
        i3_graph_init(&g, m->ctx);
        int output;
        i3_shape5 in = {batch, m->net.in_channels, spatial[0], spatial[1], spatial[2]};
        i3rt_status st = i3_network_build(m->ctx, &m->net, m->weights, in, &g, &output);
        if (st == I3RT_OK) st = i3_graph_plan(&g, output, m->backend);
        if (st != I3RT_OK) {
            i3_graph_free(&g);
            return st;
        }
        hit = oldest;
        i3_graph_free(&hit->graph);
        *hit = (model_graph){.graph = g, .batch = batch};
        memcpy(hit->spatial, spatial, sizeof hit->spatial);
    }
    hit->used = ++m->clock;
    m->cur = hit;
    return I3RT_OK;
}

/* Grows one backend buffer to at least `bytes`. */
static i3rt_status ensure_buffer(i3rt_model *m, void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return I3RT_OK;
    if (*buf) m->backend->iface->free(m->backend, *buf);
    *buf = NULL;
    *cap = 0;
    for (int i = 0; i < I3_GRAPHS_KEPT; i++) m->graphs[i].bound = 0;
    I3_TRY(m->backend->iface->alloc(m->backend, bytes, buf));
    *cap = bytes;
    return I3RT_OK;
}

static void default_spatial(const i3rt_model *m, int64_t out[3]) {
    if (m->net.patch_size[0] > 0) {
        memcpy(out, m->net.patch_size, 3 * sizeof *out);
    } else {
        i3_network_total_stride(&m->net, out);
    }
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static bool is_torch_buffer(const char *name) {
    return ends_with(name, ".running_mean") || ends_with(name, ".running_var");
}

i3rt_status i3rt_model_load(i3rt_context *ctx, const char *path, i3rt_model **out) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (!path || !out) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_model_load: NULL path or output");
    *out = NULL;
    i3rt_model *m = i3_calloc(ctx, 1, sizeof *m, "the model");
    if (!m) return I3RT_ERR_OUT_OF_MEMORY;
    m->ctx = ctx;
    for (int i = 0; i < I3_GRAPHS_KEPT; i++) i3_graph_init(&m->graphs[i].graph, ctx);
    i3rt_status st = i3_weights_open(ctx, path, &m->weights);
    if (st == I3RT_OK) st = i3_network_parse(ctx, m->weights, &m->net);
    if (st == I3RT_OK) st = i3_backend_create(ctx, &m->backend);
    /* Building once at the smallest valid size checks every tensor's presence and shape now,
     * so a wrong file fails at load, not in the middle of a prediction. */
    int64_t smallest[3];
    if (st == I3RT_OK) {
        i3_network_total_stride(&m->net, smallest);
        st = model_prepare(m, 1, smallest);
    }
    /* The file's tensors are the inference network's state (the build checked that none is left
     * over); PyTorch counts them as parameters except its batch-norm buffers. */
    for (int i = 0; st == I3RT_OK && i < i3_weights_count(m->weights); i++) {
        const i3_weight_tensor *t = i3_weights_at(m->weights, i);
        if (!is_torch_buffer(t->name)) m->n_params += (int64_t)t->numel;
    }
    if (st != I3RT_OK) {
        i3rt_model_free(m);
        return st;
    }
    *out = m;
    return I3RT_OK;
}

const i3_network *i3_model_network(const i3rt_model *m) { return &m->net; }

void i3rt_model_free(i3rt_model *m) {
    if (!m) return;
    if (m->backend) {
        void *bufs[3] = {m->arena, m->scratch, m->weights_mem};
        for (int i = 0; i < 3; i++)
            if (bufs[i]) m->backend->iface->free(m->backend, bufs[i]);
        i3_backend_destroy(m->backend);
    }
    for (int i = 0; i < I3_GRAPHS_KEPT; i++) i3_graph_free(&m->graphs[i].graph);
    i3_weights_free(m->weights);
    free(m->uploaded);
    free(m);
}

i3rt_status i3rt_model_get_info(const i3rt_model *m, i3rt_model_info *out) {
    if (!m || !out) return I3RT_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    snprintf(out->network, sizeof out->network, "%s", m->net.class_name);
    out->dims = m->net.dims;
    out->in_channels = m->net.in_channels;
    out->num_classes = m->net.num_classes;
    out->n_stages = m->net.n_stages;
    memcpy(out->patch_size, m->net.patch_size, sizeof out->patch_size);
    i3_network_total_stride(&m->net, out->total_stride);
    out->n_parameters = m->n_params;
    out->weight_bytes = i3_graph_weight_bytes(&m->cur->graph);
    return I3RT_OK;
}

static i3rt_status check_spatial(i3rt_model *m, const int64_t spatial[3]) {
    int64_t stride[3];
    i3_network_total_stride(&m->net, stride);
    for (int a = 0; a < 3; a++) {
        if (spatial[a] < 1 || spatial[a] % stride[a] != 0)
            return i3_fail(m->ctx, I3RT_ERR_SHAPE,
                           "%s: input size %lld x %lld x %lld: axis %d must be a positive multiple of %lld (the "
                           "network's total stride %lld x %lld x %lld)",
                           i3_weights_label(m->weights), (long long)spatial[0], (long long)spatial[1],
                           (long long)spatial[2], a, (long long)stride[a], (long long)stride[0], (long long)stride[1], (long long)stride[2]);
    }
    return I3RT_OK;
}

i3rt_status i3rt_model_plan(i3rt_model *m, const int64_t spatial[3], size_t *peak_bytes) {
    if (!m || !spatial || !peak_bytes) return I3RT_ERR_INVALID_ARGUMENT;
    I3_TRY(check_spatial(m, spatial));
    I3_TRY(model_prepare(m, 1, spatial));
    *peak_bytes = m->cur->graph.arena_bytes + m->cur->graph.scratch_bytes;
    return I3RT_OK;
}

static double mib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

/* Appends to a bounded buffer, remembering the length that would have been needed. */
typedef struct {
    char *buf;
    size_t size, len;
} text;

static void text_add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(text *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = t->len < t->size ? t->size - t->len : 0;
    int n = vsnprintf(room ? t->buf + t->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) t->len += (size_t)n;
}

size_t i3rt_model_describe(i3rt_model *m, const int64_t spatial_in[3], char *buf, size_t buf_size) {
    text t = {buf, buf_size, 0};
    if (buf && buf_size) buf[0] = '\0';
    if (!m) return 0;
    const i3_network *net = &m->net;
    text_add(&t, "network     %s, %dD, %d input channel(s), %d output channel(s)\n", net->class_name, net->dims,
             net->in_channels, net->num_classes);
    text_add(&t, "source      %s\n", i3_weights_label(m->weights));
    text_add(&t, "stages      %d\n  stage  features  %s  kernel   stride\n", net->n_stages,
             net->cls == I3_NET_RESIDUAL_ENCODER_UNET ? "blocks" : " convs");
    for (int s = 0; s < net->n_stages; s++)
        text_add(&t, "  %5d  %8d  %6d  %dx%dx%d    %dx%dx%d\n", s, net->features[s], net->n_conv_encoder[s],
                 net->kernel[s][0], net->kernel[s][1], net->kernel[s][2], net->stride[s][0], net->stride[s][1],
                 net->stride[s][2]);
    text_add(&t, "parameters  %lld (%.2f MiB as float32)\n", (long long)m->n_params, mib((size_t)m->n_params * 4));

    int64_t spatial[3];
    if (spatial_in) memcpy(spatial, spatial_in, sizeof spatial);
    else default_spatial(m, spatial);
    size_t peak = 0;
    if (i3rt_model_plan(m, spatial, &peak) != I3RT_OK) {
        text_add(&t, "plan        at %lld x %lld x %lld: %s\n", (long long)spatial[0], (long long)spatial[1],
                 (long long)spatial[2], m->ctx->error);
        return t.len;
    }
    const i3_graph *g = &m->cur->graph;
    text_add(&t, "input       [1, %d, %lld, %lld, %lld]%s\n", net->in_channels, (long long)spatial[0],
             (long long)spatial[1], (long long)spatial[2], spatial_in ? "" : " (the configuration's patch size)");
    text_add(&t, "  node  %-15s %-28s %s\n", "op", "output", "name");
    for (int n = 0; n < g->n_nodes; n++) {
        const i3_value *v = &g->values[g->nodes[n].out];
        char shape[64];
        snprintf(shape, sizeof shape, "[%lld, %lld, %lld, %lld, %lld]", (long long)v->dims[0], (long long)v->dims[1],
                 (long long)v->dims[2], (long long)v->dims[3], (long long)v->dims[4]);
        text_add(&t, "  %4d  %-15s %-28s %s\n", n, i3_op_name(g->nodes[n].op), shape, v->name);
    }
    text_add(&t, "memory      planned peak %.2f MiB (activations %.2f MiB + scratch %.2f MiB), weights %.2f MiB\n",
             mib(peak), mib(g->arena_bytes), mib(g->scratch_bytes), mib(i3_graph_weight_bytes(g)));
    return t.len;
}

/* Whether weights_mem holds the current graph's weights where i3_graph_place put them. */
static int weights_in_place(const i3rt_model *m) {
    int k = 0;
    for (int i = 0; i < m->cur->graph.n_values; i++) {
        const i3_value *v = &m->cur->graph.values[i];
        if (v->kind != I3_VALUE_WEIGHT) continue;
        if (k == m->n_uploaded || m->uploaded[k].host != v->host || m->uploaded[k].bytes != i3_value_bytes(v)) return 0;
        k++;
    }
    return k == m->n_uploaded;
}

static i3rt_status upload_weights(i3rt_model *m) {
    m->n_uploaded = 0;
    int n = 0;
    for (int i = 0; i < m->cur->graph.n_values; i++) n += m->cur->graph.values[i].kind == I3_VALUE_WEIGHT;
    struct uploaded_weight *list = realloc(m->uploaded, (size_t)(n ? n : 1) * sizeof *list);
    if (!list) return i3_fail(m->ctx, I3RT_ERR_OUT_OF_MEMORY, "out of memory for the list of %d weights", n);
    m->uploaded = list;
    I3_TRY(i3_graph_upload_weights(&m->cur->graph, m->backend));
    for (int i = 0; i < m->cur->graph.n_values; i++) {
        const i3_value *v = &m->cur->graph.values[i];
        if (v->kind == I3_VALUE_WEIGHT) list[m->n_uploaded++] = (struct uploaded_weight){v->host, i3_value_bytes(v)};
    }
    return I3RT_OK;
}

i3rt_status i3_model_device_io(i3rt_model *m, int64_t batch, const int64_t spatial[3], i3_backend **backend,
                               float **input, const float **output) {
    if (batch < 1) return i3_fail(m->ctx, I3RT_ERR_INVALID_ARGUMENT, "a batch of %lld inputs", (long long)batch);
    I3_TRY(check_spatial(m, spatial));
    I3_TRY(model_prepare(m, batch, spatial));
    i3_graph *g = &m->cur->graph;
    i3_backend *b = m->backend;
    I3_TRY(ensure_buffer(m, &m->arena, &m->arena_cap, g->arena_bytes));
    I3_TRY(ensure_buffer(m, &m->scratch, &m->scratch_cap, g->scratch_bytes ? g->scratch_bytes : 1));
    if (!b->iface->host_memory) {
        const size_t cap = m->weights_cap;
        I3_TRY(ensure_buffer(m, &m->weights_mem, &m->weights_cap, i3_graph_weight_bytes(g)));
        if (m->weights_cap != cap) m->n_uploaded = 0; /* a new buffer holds nothing yet */
    }
    if (!m->cur->bound) {
        i3_graph_place(g, b, m->arena, m->weights_mem);
        if (!b->iface->host_memory && !weights_in_place(m)) I3_TRY(upload_weights(m));
        m->cur->bound = 1;
    }
    *backend = b;
    *input = (float *)g->values[g->input].data;
    *output = (const float *)g->values[g->output].data;
    return I3RT_OK;
}

i3rt_status i3_model_host_alloc(i3rt_model *m, size_t bytes, void **out) {
    return m->backend->iface->host_alloc(m->backend, bytes, out);
}

void i3_model_host_free(i3rt_model *m, void *ptr) { m->backend->iface->host_free(m->backend, ptr); }

i3rt_status i3_model_run(i3rt_model *m) { return i3_graph_run(&m->cur->graph, m->backend, m->scratch); }

int i3_model_on_device(const i3rt_model *m) { return !m->backend->iface->host_memory; }

i3rt_status i3_model_forward_batch(i3rt_model *m, int64_t batch, const float *input, const int64_t spatial[3],
                                   float *logits) {
    if (!m) return I3RT_ERR_INVALID_ARGUMENT;
    if (!input || !spatial || !logits)
        return i3_fail(m->ctx, I3RT_ERR_INVALID_ARGUMENT, "i3rt_model_forward: NULL input, size or output");
    i3_backend *b;
    float *in;
    const float *out;
    I3_TRY(i3_model_device_io(m, batch, spatial, &b, &in, &out));
    const i3_graph *g = &m->cur->graph;
    I3_TRY(b->iface->upload(b, in, input, i3_value_bytes(&g->values[g->input])));
    I3_TRY(i3_model_run(m));
    return b->iface->download(b, logits, out, i3_value_bytes(&g->values[g->output]));
}

i3rt_status i3rt_model_forward(i3rt_model *m, const float *input, const int64_t spatial[3], float *logits) {
    return i3_model_forward_batch(m, 1, input, spatial, logits);
}
