/* The CUDA backend: device memory, copies and one launcher per op (kernels/<op>.cu), on one stream.
 *
 * This file is compiled twice, like the kernels: by nvcc for the GPU (names i3gpu_*, backend
 * "cuda") and by the C++ compiler against the SIMT emulator (names i3emu_*, backend "emulated"),
 * so the emulated device runs exactly the launch code the GPU runs. The emulated build also holds
 * i3_backend_cuda_create, which picks one of the two.
 *
 * Fusions across nodes (docs/cuda.md, "Fusions"): run_node sees the whole planned graph, so when a
 * convolution's only reader is the instance norm right after it, the convolution accumulates the
 * norm's statistics in its epilogue and the norm never re-reads its input for them; the norm then
 * either writes its output in one elementwise pass, or, when it runs in place and its only reader
 * is the next node, leaves the tensor unnormalized and hands (scale, shift, act) on: to the next
 * convolution's prologue (where that is cheaper than the pass: norm_on_load_pays), or to the residual
 * add of a ResEnc block (normalize + add + act in one pass). Both convolution kernels have them (the tensor-core one takes statistics only when each
 * 64-row tile lies in one sample); i3_cuda_options.fuse (I3RT_CUDA_FUSE=0) turns them off.
 *
 * CUDA graphs (i3_cuda_options.graphs; I3RT_CUDA_GRAPHS=0 turns them off): a graph run a second
 * time with the same bindings (the same graph, data pointers and fusion buffers) is captured from the
 * stream while it runs; from the third run on, node 0 launches the captured graph and every node
 * returns at once. The first run allocates what the fusions need, so nothing is allocated under
 * capture. */
#include "device.h"

#include "cuda_backend.h"
#include "launchers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace I3_NS {

#ifdef __CUDACC__
static const char BACKEND_NAME[] = "cuda";
static const char *failure_detail() { return ""; }
#else
static const char BACKEND_NAME[] = "emulated";
static const char *failure_detail() { return ::i3emu::error_detail(); }
#endif

/* Which kernel runs the graph's convolutions (i3_cuda_options.conv): the f32 direct kernel (default:
 * parity with the CPU backend), or the tensor-core implicit GEMM with f16, bf16 or tf32 operands and f32
 * accumulation. */
typedef i3_cuda_conv_precision ConvPrecision;
#define CONV_F32 I3_CUDA_CONV_F32
#define CONV_F16 I3_CUDA_CONV_F16
#define CONV_BF16 I3_CUDA_CONV_BF16
#define CONV_TF32 I3_CUDA_CONV_TF32

/* What one node hands on to the next ones of the same graph (node indices in graph->nodes). */
struct Fusion {
    const i3_graph *graph;
    int stats_for;      /* the instance norm whose statistics are in `partials` (-1: none) */
    int stats_chunks;   /* partials per plane */
    int deferred_for;   /* the conv or add that applies the deferred norm in `scale_shift` (-1: none) */
    int residual_for;   /* the residual add that the conv before it ran in its epilogue (-1: none) */
    i3_act deferred_act;
};

/* The CUDA graph of a repeated forward. */
struct Replay {
    const i3_graph *graph;
    uint64_t bindings;  /* fingerprint of the graph's shapes and data pointers, the scratch, the fusion buffers */
    int runs;           /* complete runs with these bindings */
    bool capturing, replaying;
    cudaGraphExec_t exec;
    uint64_t used;      /* replay_clock when it last ran; the least recent slot is reused first */
};
/* Per-node wall time by op (i3_cuda_options.profile): the stream is synchronized around every node, so a
 * node's time is its kernels' plus a launch; nodes fused into a neighbour count with ~0. */
struct Profile {
    double seconds[I3_OP_COUNT];
    int64_t nodes[I3_OP_COUNT];
};

/* A conv's weights packed once for the tensor-core kernel (conv_tensor_core_pack_weights), for the inputs of
 * cin channels in x_layout. */
struct PackedWeights {
    const float *w; /* the graph's f32 weights on the device */
    int64_t cin;
    int x_layout, precision;
    void *packed;
};
/* Weights whose packed copy is at most this are packed once and kept (HRNet's, every one): packing them per
 * launch is mostly a launch, a small grid before a small conv. Larger ones are packed by each launch, where one
 * pass is small next to the conv and keeping them would cost half their f32 bytes in device memory again (60 MiB
 * for nnU-Net's full-size 3d_fullres). */
#define PACKED_WEIGHTS_KEPT_MAX_BYTES ((size_t)1 << 20)

struct DeviceState {
    cudaStream_t stream;
    ConvPrecision conv;
    bool fuse, graphs, profile;
    Profile times;
    Fusion fusion;
    Replay replays[I3_GRAPHS_KEPT]; /* one per graph a model keeps: each stays captured while the others run */
    Replay *replay;                 /* the current run's slot (NULL before the first run) */
    uint64_t replay_clock;          /* graph runs begun */
    float *partials, *scale_shift;  /* device buffers, grown as needed */
    size_t partials_bytes, scale_shift_bytes;
    void *scratch;                  /* the run's scratch buffer (a captured graph holds its address) */
    const i3_graph *layouts_for;    /* the graph whose value layouts `channels_last` holds (plan_layouts) */
    unsigned char *channels_last;   /* per value: 1 when held channels-last in f16/bf16 */
    int channels_last_n;
    i3_cuda_stats stats;
    struct Allocation {
        void *ptr;
        size_t bytes;
    } *allocations;                 /* live device buffers, for the context's device memory accounting */
    int n_allocations, allocations_capacity;
    PackedWeights *packed;          /* weights packed once (PACKED_WEIGHTS_KEPT_MAX_BYTES) */
    int n_packed, packed_capacity;
    unsigned *split_counters;       /* I3_TC_SPLIT_COUNTERS zeros for the tensor-core convs' split-K (left zero) */
};

static DeviceState *state_of(i3_backend *b) { return (DeviceState *)b->impl; }

static cudaStream_t stream_of(i3_backend *b) { return ((DeviceState *)b->impl)->stream; }

static i3rt_status device_fail(i3_backend *b, cudaError_t e, const char *what) {
    const char *detail = failure_detail();
    return i3_fail(b->ctx, e == cudaErrorMemoryAllocation ? I3RT_ERR_OUT_OF_MEMORY : I3RT_ERR_BACKEND,
                   "%s backend: %s: %s%s%s", BACKEND_NAME, what, cudaGetErrorString(e), detail[0] ? ": " : "", detail);
}

/* The live device buffers and the context's counts: a new buffer (false: no host memory for the list), a
 * freed one. */
static bool track_allocation(i3_backend *b, void *ptr, size_t bytes) {
    DeviceState *st = state_of(b);
    if (st->n_allocations == st->allocations_capacity) {
        int capacity = st->allocations_capacity ? 2 * st->allocations_capacity : 16;
        void *grown = realloc(st->allocations, (size_t)capacity * sizeof *st->allocations);
        if (!grown) return false;
        st->allocations = (DeviceState::Allocation *)grown;
        st->allocations_capacity = capacity;
    }
    st->allocations[st->n_allocations++] = {ptr, bytes};
    b->ctx->device_bytes += bytes;
    if (b->ctx->device_bytes > b->ctx->device_bytes_peak) b->ctx->device_bytes_peak = b->ctx->device_bytes;
    return true;
}

static size_t untrack_allocation(i3_backend *b, void *ptr) { /* its bytes (0: not tracked) */
    DeviceState *st = state_of(b);
    for (int i = 0; i < st->n_allocations; i++)
        if (st->allocations[i].ptr == ptr) {
            const size_t bytes = st->allocations[i].bytes;
            b->ctx->device_bytes -= bytes;
            st->allocations[i] = st->allocations[--st->n_allocations];
            return bytes;
        }
    return 0;
}

static i3rt_status device_alloc(i3_backend *b, size_t bytes, void **out) {
    cudaError_t e = cudaMalloc(out, bytes);
    if (e == cudaSuccess && track_allocation(b, *out, bytes)) return I3RT_OK;
    if (e == cudaSuccess) { /* no host memory for the list */
        cudaFree(*out);
        *out = NULL;
        return i3_fail(b->ctx, I3RT_ERR_OUT_OF_MEMORY, "%s backend: out of host memory", BACKEND_NAME);
    }
    *out = NULL;
    const char *detail = failure_detail();
    i3rt_status st = i3_fail(b->ctx, I3RT_ERR_OUT_OF_MEMORY,
                             "%s backend: out of device memory allocating %zu bytes (%.1f MiB): %s%s%s", BACKEND_NAME,
                             bytes, bytes / 1048576.0, cudaGetErrorString(e), detail[0] ? ": " : "", detail);
    cudaGetLastError();
    return st;
}

static void drop_replay(struct Replay *r);

/* Weights in [start, start + bytes) are freed or overwritten: their packed copies go, and with them every
 * captured graph (which reads those copies). */
static void forget_packed(i3_backend *b, const void *start, size_t bytes) {
    DeviceState *st = state_of(b);
    bool forgot = false;
    for (int i = 0; i < st->n_packed;) {
        PackedWeights *p = &st->packed[i];
        if ((const char *)p->w >= (const char *)start && (const char *)p->w < (const char *)start + bytes) {
            void *packed = p->packed;
            *p = st->packed[--st->n_packed];
            untrack_allocation(b, packed);
            cudaFree(packed);
            forgot = true;
        } else {
            i++;
        }
    }
    if (forgot)
        for (Replay &r : st->replays) drop_replay(&r);
}

static void device_free(i3_backend *b, void *ptr) {
    if (!ptr) return;
    forget_packed(b, ptr, untrack_allocation(b, ptr));
    cudaFree(ptr);
}

static i3rt_status device_upload(i3_backend *b, void *dst, const void *src, size_t bytes) {
    forget_packed(b, dst, bytes);
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_of(b));
    return e == cudaSuccess ? I3RT_OK : device_fail(b, e, "upload");
}

static i3rt_status device_download(i3_backend *b, void *dst, const void *src, size_t bytes) {
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_of(b));
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_of(b));
    return e == cudaSuccess ? I3RT_OK : device_fail(b, e, "download");
}

static int tensor_core_precision(const DeviceState *st) {
    return st->conv == CONV_F16 ? I3_TC_F16 : st->conv == CONV_BF16 ? I3_TC_BF16 : I3_TC_TF32;
}

static i3rt_status plan_layouts(i3_backend *b, const i3_graph *g);
static bool value_channels_last(const DeviceState *st, const i3_graph *g, int v);
static int layout_of(const DeviceState *st, const i3_graph *g, int v);

static size_t device_scratch_bytes(i3_backend *b, const i3_graph *g, const i3_node *node) {
    if (node->op == I3_OP_MASK_POOL) return I3_DEV(mask_pool_scratch_bytes)(i3_value_shape5(&g->values[node->in[0]]));
    DeviceState *st = state_of(b);
    if ((node->op != I3_OP_CONV && node->op != I3_OP_CONV_TRANSPOSE) || st->conv == CONV_F32) return 0;
    /* the tensor-core kernels' packed weights, maybe a channels-last copy of the input: by the layouts the
     * run will decide (device_value_sizes has planned them for g already; if that could not be done, NCDHW
     * for the conv's input, which needs the most scratch, and no tensor-core transposed conv) */
    if (st->layouts_for != g && plan_layouts(b, g) != I3RT_OK) st->layouts_for = NULL;
    const i3_shape5 xs = i3_value_shape5(&g->values[node->in[0]]);
    const int x_layout = layout_of(st, g, node->in[0]);
    if (node->op == I3_OP_CONV)
        return I3_DEV(conv_tensor_core_scratch_bytes)(xs, x_layout, &node->p.conv, tensor_core_precision(st));
    return value_channels_last(st, g, node->out) ? I3_DEV(conv_transpose_tensor_core_scratch_bytes)(
                                                       xs, x_layout, &node->p.conv_transpose, tensor_core_precision(st))
                                                 : 0;
}

/* What the node runners below return besides a cudaError_t: an allocation failed, and the
 * context already holds the out-of-memory message. */
#define FAILED_ALLOCATION (-1)

/* Grows a device buffer of the fusion state to at least `bytes`. */
static i3rt_status ensure_buffer(i3_backend *b, float **buf, size_t *have, size_t bytes) {
    if (*have >= bytes) return I3RT_OK;
    device_free(b, *buf);
    *have = 0;
    I3_TRY(device_alloc(b, bytes, (void **)buf));
    *have = bytes;
    return I3RT_OK;
}

/* Index of node in g's node list, -1 when it is a lone node (tests run nodes outside any graph). */
static int node_index(const i3_graph *g, const i3_node *node) {
    return g->nodes && node >= g->nodes && node < g->nodes + g->n_nodes ? (int)(node - g->nodes) : -1;
}

/* The node after n, if it reads value v as its first input and is v's only reader. */
static const i3_node *sole_reader_next(const i3_graph *g, int n, int v) {
    if (n < 0 || n + 1 >= g->n_nodes || v == g->output || g->values[v].last_use != n + 1) return NULL;
    const i3_node *next = &g->nodes[n + 1];
    return next->in[0] == v ? next : NULL;
}

/* Whether every reader of value v takes it channels-last: a convolution reading it as its input (the
 * tensor-core kernel's cp.async path), a transposed convolution or an average pooling (their input), or
 * a concat or residual add whose own output is channels-last (plan_layouts has decided those already). */
static bool readers_take_channels_last(const DeviceState *st, const i3_graph *g, int v) {
    int readers = 0;
    for (int n = 0; n < g->n_nodes; n++)
        for (int i = 0; i < I3_MAX_INPUTS; i++) {
            if (g->nodes[n].in[i] != v) continue;
            readers++;
            const i3_node *node = &g->nodes[n];
            if (!((node->op == I3_OP_CONV || node->op == I3_OP_CONV_TRANSPOSE || node->op == I3_OP_AVG_POOL) && i == 0) &&
                !((node->op == I3_OP_CONCAT || node->op == I3_OP_ADD) && st->channels_last[node->out]))
                return false;
        }
    return readers > 0;
}

/* Whether the conv at node n hands its output to an instance norm right after it that takes the conv's
 * statistics and runs in place (the norm then defers itself or normalizes the tensor in place). The
 * planner runs such a norm in place: its input's last reader, not the graph's output, the same size
 * (i3_graph_plan; the layouts below give the conv's output and the norm's the same one). */
static bool conv_then_norm(const DeviceState *st, const i3_graph *g, int n) {
    if (n < 0 || g->nodes[n].op != I3_OP_CONV) return false;
    const int v = g->nodes[n].out;
    const i3_node *norm = sole_reader_next(g, n, v);
    return norm && norm->op == I3_OP_INSTANCE_NORM &&
           I3_DEV(conv_tensor_core_stat_chunks)(i3_value_shape5(&g->values[v]), tensor_core_precision(st)) > 0;
}

/* Decides, at the start of every run of g, which values are held channels-last in f16/bf16 (docs/cuda.md,
 * "Fusions"): with f16/bf16 convolutions and fusions on, for channel counts that are multiples of 8, a value
 * whose readers all take it so (readers_take_channels_last) and whose writer can write it so:
 * - a conv whose in-place norm right after it takes its statistics (conv_then_norm): the conv's output
 *   and the norm's are one tensor, channels-last when the norm's readers take it so;
 * - a conv without such a norm (HRNet, whose batch norms are folded into the convs), written channels-last
 *   by the tensor-core kernel;
 * - a concat (its inputs read in either layout) or a transposed conv (the U-Net decoder's upsampling, the
 *   largest activation at full resolution, read by a concat);
 * - a residual add whose first operand is such a norm deferred into it (normalize + add + act in one
 *   pass, the skip in either layout), or a plain residual add (both operands in either layout).
 * Readers come after their values, so one pass from the last node to the first decides everything;
 * the graph alone decides, so writers and readers agree. */
static i3rt_status plan_layouts(i3_backend *b, const i3_graph *g) {
    DeviceState *st = state_of(b);
    if (st->channels_last_n < g->n_values) {
        unsigned char *grown = (unsigned char *)realloc(st->channels_last, (size_t)g->n_values);
        if (!grown)
            return i3_fail(b->ctx, I3RT_ERR_OUT_OF_MEMORY, "%s backend: out of memory for %d value layouts",
                           BACKEND_NAME, g->n_values);
        st->channels_last = grown;
        st->channels_last_n = g->n_values;
    }
    memset(st->channels_last, 0, (size_t)g->n_values);
    st->layouts_for = g;
    if (!st->fuse || (st->conv != CONV_F16 && st->conv != CONV_BF16)) return I3RT_OK;
    for (int p = g->n_nodes - 1; p >= 0; p--) {
        const i3_node *node = &g->nodes[p];
        const int v = node->out;
        if (v == g->output || g->values[v].dims[1] % 8 != 0) continue;
        bool cl = false;
        switch (node->op) {
        case I3_OP_CONCAT:
        case I3_OP_CONV_TRANSPOSE: cl = readers_take_channels_last(st, g, v); break;
        case I3_OP_INSTANCE_NORM:
            cl = conv_then_norm(st, g, p - 1) && g->nodes[p - 1].out == node->in[0] &&
                 readers_take_channels_last(st, g, v);
            break;
        case I3_OP_CONV: /* with its norm: that tensor's layout; alone (HRNet: no norms): its readers decide */
            cl = conv_then_norm(st, g, p) ? st->channels_last[g->nodes[p + 1].out] : readers_take_channels_last(st, g, v);
            break;
        case I3_OP_ADD:
            if (p >= 1 && g->nodes[p - 1].op == I3_OP_INSTANCE_NORM && g->nodes[p - 1].out == node->in[0])
                /* the norm at p - 1 may be deferred into this add (run_norm_from_stats) */
                cl = conv_then_norm(st, g, p - 2) && sole_reader_next(g, p - 1, node->in[0]) == node &&
                     node->in[1] != node->in[0] && readers_take_channels_last(st, g, v);
            else /* a plain residual add: its operands in either layout */
                cl = readers_take_channels_last(st, g, v);
            break;
        default: break;
        }
        st->channels_last[v] = cl;
    }
    return I3RT_OK;
}

/* For the planner: the values plan_layouts will hold channels-last take half their f32 bytes. */
static i3rt_status device_value_sizes(i3_backend *b, const i3_graph *g, size_t *bytes) {
    I3_TRY(plan_layouts(b, g));
    DeviceState *st = state_of(b);
    for (int v = 0; v < g->n_values; v++)
        if (st->channels_last[v]) bytes[v] = i3_value_bytes(&g->values[v]) / 2; /* f16/bf16 */
    return I3RT_OK; /* the decision stays for device_scratch_bytes, which the planner asks next; a run makes it
                     * again at its first node */
}

/* Where a concat's input k can be written inside its output (i3_backend_i.concat_view_offset): into a
 * channels-last output by a transposed conv on tensor cores (its epilogue takes the row stride), at that
 * input's first channel; into an NCDHW one by any producer where that is a contiguous part. */
static size_t device_concat_view_offset(i3_backend *b, const i3_graph *g, const i3_node *concat, int k) {
    DeviceState *st = state_of(b);
    if (st->layouts_for != g && plan_layouts(b, g) != I3RT_OK) return SIZE_MAX;
    if (!st->channels_last[concat->out]) return i3_graph_concat_contiguous_offset(g, concat, k);
    const int v = concat->in[k];
    return g->nodes[g->values[v].producer].op == I3_OP_CONV_TRANSPOSE && st->channels_last[v]
               ? (k ? (size_t)g->values[concat->in[0]].dims[1] * sizeof(uint16_t) : 0)
               : SIZE_MAX;
}

/* Value v's layout in the current run of g (lone nodes, outside a graph run: NCDHW). */
static bool value_channels_last(const DeviceState *st, const i3_graph *g, int v) {
    return st->layouts_for == g && v >= 0 && v < st->channels_last_n && st->channels_last[v];
}

static int layout_of(const DeviceState *st, const i3_graph *g, int v) {
    return value_channels_last(st, g, v) ? I3_LAYOUT_NDHWC : I3_LAYOUT_NCDHW;
}

/* Whether values a and b share device memory (as held: channels-last at half the f32 bytes). */
static bool values_overlap(const DeviceState *st, const i3_graph *g, int a, int b) {
    const char *pa = (const char *)g->values[a].data, *pb = (const char *)g->values[b].data;
    const size_t na = i3_value_bytes(&g->values[a]) / (value_channels_last(st, g, a) ? 2 : 1),
                 nb = i3_value_bytes(&g->values[b]) / (value_channels_last(st, g, b) ? 2 : 1);
    return pa < pb + nb && pb < pa + na;
}

/* The residual add right after the conv at node n when it is the only reader of the conv's output, in either
 * operand (a + b is b + a to the bit), the other operand another value, and its output not where the conv
 * reads its input (the planner may give the add the buffer of the conv's input, which died at the conv: run
 * apart, the two never meet); NULL when there is none. */
static const i3_node *residual_add_next(const DeviceState *st, const i3_graph *g, int n) {
    if (n < 0 || n + 1 >= g->n_nodes) return NULL;
    const i3_node *conv = &g->nodes[n], *next = &g->nodes[n + 1];
    const int v = conv->out;
    if (next->op != I3_OP_ADD || v == g->output || g->values[v].last_use != n + 1) return NULL;
    if ((next->in[0] == v) == (next->in[1] == v) || values_overlap(st, g, next->out, conv->in[0])) return NULL;
    return next;
}

/* The conv's weights packed once for inputs of xs's channels in x_layout (PackedWeights), packed now on the
 * stream the first time; NULL when they are too large to keep or no memory is left for them (then each launch
 * packs them). Called in a graph's first run, before any capture (forget_packed drops the captures). */
static const void *packed_weights(i3_backend *b, const float *w, i3_shape5 xs, int x_layout, const i3_conv_params *p,
                                  int precision) {
    DeviceState *st = state_of(b);
    for (int i = 0; i < st->n_packed; i++) {
        const PackedWeights *k = &st->packed[i];
        if (k->w == w && k->cin == xs.c && k->x_layout == x_layout && k->precision == precision) return k->packed;
    }
    const size_t bytes = I3_DEV(conv_tensor_core_packed_weights_bytes)(xs, x_layout, p, precision);
    if (bytes == 0 || bytes > PACKED_WEIGHTS_KEPT_MAX_BYTES) return NULL;
    if (st->n_packed == st->packed_capacity) {
        const int capacity = st->packed_capacity ? 2 * st->packed_capacity : 64;
        PackedWeights *grown = (PackedWeights *)realloc(st->packed, (size_t)capacity * sizeof *grown);
        if (!grown) return NULL;
        st->packed = grown;
        st->packed_capacity = capacity;
    }
    void *packed = NULL;
    if (cudaMalloc(&packed, bytes) != cudaSuccess) {
        cudaGetLastError(); /* the launch packs them instead */
        return NULL;
    }
    if (!track_allocation(b, packed, bytes) ||
        I3_DEV(conv_tensor_core_pack_weights)(xs, x_layout, w, p, precision, packed, st->stream) != 0) {
        device_free(b, packed);
        cudaGetLastError();
        return NULL;
    }
    st->packed[st->n_packed++] = PackedWeights{w, xs.c, x_layout, precision, packed};
    return packed;
}

static int run_conv(i3_backend *b, const i3_graph *g, const i3_node *node, int n, void *scratch) {
    DeviceState *st = state_of(b);
    const i3_value *x = &g->values[node->in[0]], *y = &g->values[node->out];
    const float *w = (const float *)g->values[node->in[1]].data;
    const float *bias = node->in[2] >= 0 ? (const float *)g->values[node->in[2]].data : NULL;
    i3_shape5 xs = i3_value_shape5(x), ys = i3_value_shape5(y);
    bool tensor_cores = st->conv != CONV_F32;
    int precision = tensor_core_precision(st);
    Fusion *f = &st->fusion;
    const float *in_scale_shift = f->graph == g && f->deferred_for == n && n >= 0 ? st->scale_shift : NULL;
    i3_act act_in = f->deferred_act;
    f->deferred_for = -1;
    f->stats_for = -1;
    f->residual_for = -1;
    const i3_node *next = st->fuse ? sole_reader_next(g, n, node->out) : NULL;
    int chunks = tensor_cores ? I3_DEV(conv_tensor_core_stat_chunks)(ys, precision) : I3_DEV(conv_stat_chunks)(ys);
    float *partials = NULL;
    if (next && next->op == I3_OP_INSTANCE_NORM && chunks > 0) {
        size_t bytes = (size_t)(ys.n * ys.c * chunks) * 3 * sizeof(float);
        if (ensure_buffer(b, &st->partials, &st->partials_bytes, bytes) != I3RT_OK) return FAILED_ALLOCATION;
        partials = st->partials;
        f->graph = g;
        f->stats_for = n + 1;
        f->stats_chunks = chunks;
        st->stats.fused_nodes++;
    }
    if (!tensor_cores)
        return I3_DEV(conv_fused)((const float *)x->data, xs, w, bias, &node->p.conv, in_scale_shift, act_in,
                                  (float *)y->data, ys, partials, st->stream);
    /* f16/bf16: a residual add right after the conv runs in its epilogue, which then writes the add's output */
    const bool b16 = precision != I3_TC_TF32;
    const i3_node *add = st->fuse && !partials && b16 ? residual_add_next(st, g, n) : NULL;
    i3_residual residual = {};
    void *y_data = y->data;
    int y_layout = layout_of(st, g, node->out);
    if (add) {
        const int skip = add->in[0] == node->out ? add->in[1] : add->in[0];
        residual = {g->values[skip].data, layout_of(st, g, skip), add->p.act};
        y_data = g->values[add->out].data;
        y_layout = layout_of(st, g, add->out);
        f->graph = g;
        f->residual_for = n + 1;
        st->stats.fused_nodes++;
    }
    st->stats.channels_last_outputs += y_layout == I3_LAYOUT_NDHWC;
    const int x_layout = layout_of(st, g, node->in[0]);
    const void *packed = b16 ? packed_weights(b, w, xs, x_layout, &node->p.conv, precision) : NULL;
    if (b16 && !st->split_counters) { /* a graph's first run: never under capture */
        const size_t bytes = I3_TC_SPLIT_COUNTERS * sizeof(unsigned);
        if (device_alloc(b, bytes, (void **)&st->split_counters) != I3RT_OK) return FAILED_ALLOCATION;
        const int e = (int)cudaMemsetAsync(st->split_counters, 0, bytes, st->stream);
        if (e) return e;
    }
    return I3_DEV(conv_tensor_core_fused)(x->data, xs, x_layout, w, packed, st->split_counters, bias, &node->p.conv,
                                          in_scale_shift, act_in, y_data, ys, y_layout, add ? &residual : NULL,
                                          partials, precision, scratch, st->stream);
}

/* Whether the norm deferred into conv costs less there than a pass over the tensor. The tensor-core kernel
 * applies it to a channels-last input between a tile's arrival and its MMAs, once per tap and column tile
 * (a 3x3x3 conv: 27 times and more, a few instructions per value on the pipeline's critical path), so there
 * only a 1x1x1 conv takes it. An NCDHW input keeps it: v3's pack normalizes it once on the way to
 * channels-last; the f32 kernels' gathers apply it as they load (not measured against a pass). */
static bool norm_on_load_pays(const DeviceState *st, const i3_graph *g, const i3_node *conv) {
    const int taps = conv->p.conv.k[0] * conv->p.conv.k[1] * conv->p.conv.k[2];
    return taps == 1 || !value_channels_last(st, g, conv->in[0]);
}

/* An instance norm whose statistics the conv before it left in `partials`: (scale, shift) per
 * plane, then either deferred to the next node or applied in one pass. */
static int run_norm_from_stats(i3_backend *b, const i3_graph *g, const i3_node *node, int n) {
    DeviceState *st = state_of(b);
    Fusion *f = &st->fusion;
    const i3_value *x = &g->values[node->in[0]], *y = &g->values[node->out];
    i3_shape5 xs = i3_value_shape5(x);
    int64_t planes = xs.n * xs.c;
    const float *gamma = node->in[1] >= 0 ? (const float *)g->values[node->in[1]].data : NULL;
    const float *beta = node->in[2] >= 0 ? (const float *)g->values[node->in[2]].data : NULL;
    f->stats_for = -1;
    if (ensure_buffer(b, &st->scale_shift, &st->scale_shift_bytes, (size_t)planes * 2 * sizeof(float)) != I3RT_OK)
        return FAILED_ALLOCATION;
    int e = I3_DEV(norm_finalize)(st->partials, planes, f->stats_chunks, xs.c, gamma, beta, node->p.norm.eps,
                                  st->scale_shift, st->stream);
    if (e) return e;
    const i3_node *next = x->data == y->data ? sole_reader_next(g, n, node->out) : NULL;
    bool to_conv = next && next->op == I3_OP_CONV && norm_on_load_pays(st, g, next);
    bool to_add = next && next->op == I3_OP_ADD && next->in[1] != node->out;
    if (to_conv || to_add) {
        f->deferred_for = n + 1;
        f->deferred_act = node->p.norm.act;
        st->stats.fused_nodes++;
        return 0;
    }
    i3_act none = {I3_ACT_NONE, 0.0f};
    if (value_channels_last(st, g, node->in[0])) /* in place, by construction */
        return I3_DEV(norm_apply_channels_last)(x->data, I3_LAYOUT_NDHWC, xs.n, xs.c, i3_shape5_spatial(xs),
                                                st->scale_shift, node->p.norm.act, NULL, I3_LAYOUT_NCDHW, none,
                                                y->data, tensor_core_precision(st), st->stream);
    return I3_DEV(norm_apply)((const float *)x->data, planes, i3_shape5_spatial(xs), st->scale_shift,
                              node->p.norm.act, NULL, none, (float *)y->data, st->stream);
}

static uint64_t fingerprint(const i3_graph *g, const DeviceState *st) {
    uint64_t h = 1469598103934665603ull;
    uintptr_t words[] = {(uintptr_t)g, (uintptr_t)g->n_nodes, (uintptr_t)st->partials, (uintptr_t)st->scale_shift,
                         (uintptr_t)st->scratch};
    for (uintptr_t w : words) h = (h ^ w) * 1099511628211ull;
    /* the shapes too: a graph rebuilt for another input size may sit at the same address */
    for (int v = 0; v < g->n_values; v++) {
        h = (h ^ (uintptr_t)g->values[v].data) * 1099511628211ull;
        for (int d = 0; d < g->values[v].ndim; d++) h = (h ^ (uint64_t)g->values[v].dims[d]) * 1099511628211ull;
    }
    return h;
}

static void drop_capture(Replay *r, cudaStream_t stream) {
    if (r && r->capturing) {
        cudaGraph_t partial = NULL;
        cudaStreamEndCapture(stream, &partial);
        if (partial) cudaGraphDestroy(partial);
        cudaGetLastError();
        r->capturing = false;
    }
}

static void drop_replay(Replay *r) {
    if (r->exec) cudaGraphExecDestroy(r->exec);
    r->exec = NULL;
    r->runs = 0;
}

/* At node 0: g's slot (emptied if its bindings changed), else the least recently used one, emptied; launch
 * its captured graph (then replaying: the nodes return at once), or start capturing on the second run with
 * the same bindings. */
static cudaError_t replay_begin(DeviceState *st, const i3_graph *g) {
    drop_capture(st->replay, st->stream); /* a capture that an error interrupted */
    uint64_t bindings = fingerprint(g, st);
    Replay *r = NULL, *oldest = &st->replays[0];
    for (Replay &slot : st->replays) {
        if (slot.graph == g) r = &slot;
        if (slot.used < oldest->used) oldest = &slot;
    }
    if (!r) r = oldest;
    if (r->graph != g || r->bindings != bindings) {
        drop_replay(r);
        r->graph = g;
        r->bindings = bindings;
    }
    r->used = ++st->replay_clock;
    st->replay = r;
    if (r->exec) {
        r->replaying = true;
        st->stats.graph_replays++;
        return cudaGraphLaunch(r->exec, st->stream);
    }
    if (r->runs >= 1) {
        cudaError_t e = cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal);
        r->capturing = e == cudaSuccess;
        return e;
    }
    return cudaSuccess;
}

/* After the last node: the run is complete; a capture becomes the graph and runs now. */
static cudaError_t replay_end(DeviceState *st) {
    Replay *r = st->replay;
    r->runs++;
    r->bindings = fingerprint(r->graph, st); /* what the next run sees: the fusion buffers are grown now */
    if (!r->capturing) return cudaSuccess;
    r->capturing = false;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(st->stream, &graph);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&r->exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        r->exec = NULL;
        return e;
    }
    st->stats.graph_captures++;
    return cudaGraphLaunch(r->exec, st->stream);
}

static i3rt_status run_node(i3_backend *b, const i3_graph *g, const i3_node *node, void *scratch) {
    const i3_value *x = &g->values[node->in[0]], *y = &g->values[node->out];
    const float *in0 = (const float *)x->data;
    const float *in1 = node->in[1] >= 0 ? (const float *)g->values[node->in[1]].data : NULL;
    const float *in2 = node->in[2] >= 0 ? (const float *)g->values[node->in[2]].data : NULL;
    float *out = (float *)y->data;
    i3_shape5 xs = i3_value_shape5(x), ys = i3_value_shape5(y);
    DeviceState *st = state_of(b);
    Fusion *f = &st->fusion;
    int n = node_index(g, node);
    bool fused_here = n >= 0 && f->graph == g, last = n >= 0 && n == g->n_nodes - 1;
    void *s = st->stream;
    int e;
    if (n == 0) st->scratch = scratch;
    if (st->graphs && n == 0 && (e = replay_begin(st, g)) != 0) return device_fail(b, (cudaError_t)e, "CUDA graph");
    if (st->replay && st->replay->replaying && n >= 0) {
        if (last) st->replay->replaying = false;
        return I3RT_OK;
    }
    if (n == 0) I3_TRY(plan_layouts(b, g));
    if (n < 0) st->layouts_for = NULL; /* a lone node: every tensor NCDHW */
    switch (node->op) {
    case I3_OP_CONV: e = run_conv(b, g, node, n, scratch); break;
    case I3_OP_CONV_TRANSPOSE:
        if (value_channels_last(st, g, node->out)) { /* on tensor cores, for a channels-last concat */
            const int whole = n >= 0 ? y->view_of : -1; /* written into that concat's output */
            st->stats.channels_last_outputs++;
            e = I3_DEV(conv_transpose_tensor_core)(in0, xs, layout_of(st, g, node->in[0]), in1, in2,
                                                   &node->p.conv_transpose, out, ys,
                                                   whole >= 0 ? g->values[whole].dims[1] : ys.c,
                                                   tensor_core_precision(st), scratch, s);
        } else if (value_channels_last(st, g, node->in[0])) {
            e = I3_DEV(conv_transpose_channels_last)(in0, xs, tensor_core_precision(st), in1, in2,
                                                     &node->p.conv_transpose, out, ys, s);
        } else
            e = I3_DEV(conv_transpose)(in0, xs, in1, in2, &node->p.conv_transpose, out, ys, s);
        break;
    case I3_OP_ACS_CONV: e = I3_DEV(acs_conv)(in0, xs, in1, in2, &node->p.acs, out, ys, s); break;
    case I3_OP_INSTANCE_NORM:
        if (fused_here && f->stats_for == n) {
            e = run_norm_from_stats(b, g, node, n);
        } else {
            e = I3_DEV(instance_norm)(in0, xs, in1, in2, &node->p.norm, out, s);
        }
        break;
    case I3_OP_ACTIVATION: e = I3_DEV(activation)(in0, i3_shape5_numel(xs), node->p.act, out, s); break;
    case I3_OP_ADD:
        if (fused_here && f->residual_for == n) { /* done by the conv before it */
            f->residual_for = -1;
            e = 0;
        } else if (value_channels_last(st, g, node->out)) { /* with the norm deferred into it, or a plain residual add */
            const bool deferred = fused_here && f->deferred_for == n;
            if (deferred) f->deferred_for = -1;
            st->stats.channels_last_outputs++;
            e = I3_DEV(norm_apply_channels_last)(in0, layout_of(st, g, node->in[0]), xs.n, xs.c,
                                                 i3_shape5_spatial(xs), deferred ? st->scale_shift : NULL,
                                                 f->deferred_act, in1, layout_of(st, g, node->in[1]), node->p.act,
                                                 out, tensor_core_precision(st), s);
        } else if (fused_here && f->deferred_for == n) {
            f->deferred_for = -1;
            e = I3_DEV(norm_apply)(in0, xs.n * xs.c, i3_shape5_spatial(xs), st->scale_shift, f->deferred_act, in1,
                                   node->p.act, out, s);
        } else {
            e = I3_DEV(add)(in0, in1, i3_shape5_numel(xs), node->p.act, out, s);
        }
        break;
    case I3_OP_CONCAT: { /* an input its producer wrote inside the output already (a view): NULL */
        const float *a_in = n >= 0 && x->view_of == node->out ? NULL : in0;
        const float *b_in = n >= 0 && g->values[node->in[1]].view_of == node->out ? NULL : in1;
        if (value_channels_last(st, g, node->out)) {
            st->stats.channels_last_outputs++;
            e = I3_DEV(concat_channels_last)(a_in, layout_of(st, g, node->in[0]), xs.c, b_in,
                                             layout_of(st, g, node->in[1]), g->values[node->in[1]].dims[1], xs.n,
                                             i3_shape5_spatial(xs), tensor_core_precision(st), out, s);
        } else {
            e = I3_DEV(concat)(a_in, xs.c, b_in, g->values[node->in[1]].dims[1], xs.n, i3_shape5_spatial(xs), out, s);
        }
        break;
    }
    case I3_OP_RESIZE: e = I3_DEV(resize)(in0, xs, &node->p.resize, out, s); break;
    case I3_OP_SOFTMAX:
        e = I3_DEV(softmax_uncertainty)(in0, xs.n, xs.c, i3_shape5_spatial(xs), out, NULL, NULL, NULL, s);
        break;
    case I3_OP_AVG_POOL:
        if (value_channels_last(st, g, node->in[0]))
            e = I3_DEV(avg_pool_channels_last)(in0, xs, tensor_core_precision(st), &node->p.avg_pool, out, s);
        else
            e = I3_DEV(avg_pool)(in0, xs, &node->p.avg_pool, out, s);
        break;
    case I3_OP_SLICE_CHANNELS: e = I3_DEV(slice_channels)(in0, xs, &node->p.slice, out, s); break;
    case I3_OP_SPATIAL_GATHER:
        e = I3_DEV(spatial_gather)(in0, in1, xs.n, xs.c, g->values[node->in[1]].dims[1], i3_shape5_spatial(xs), out, s);
        break;
    case I3_OP_OBJECT_ATTENTION:
        e = I3_DEV(object_attention)(in0, in1, in2, xs.n, xs.c, g->values[node->in[2]].dims[1],
                                     g->values[node->in[1]].dims[2], i3_shape5_spatial(xs), out, s);
        break;
    case I3_OP_MASK_POOL:
        e = I3_DEV(mask_pool)(in0, xs, in1, i3_value_shape5(&g->values[node->in[1]]), &node->p.mask_pool, out,
                              scratch, s);
        break;
    case I3_OP_CHANNEL_GATE: e = I3_DEV(channel_gate)(in0, xs, in1, out, s); break;
    default:
        return i3_fail(b->ctx, I3RT_ERR_UNSUPPORTED, "%s backend: op %s has no kernel", BACKEND_NAME,
                       i3_op_name(node->op));
    }
    if (e == 0 && st->graphs && last && (e = replay_end(st)) != 0) return device_fail(b, (cudaError_t)e, "CUDA graph");
    if (e == 0) return I3RT_OK;
    drop_capture(st->replay, st->stream);
    if (e == FAILED_ALLOCATION) return I3RT_ERR_OUT_OF_MEMORY;
    char what[256];
    snprintf(what, sizeof what, "%s (%s) on input [%lld, %lld, %lld, %lld, %lld]", i3_op_name(node->op), y->name,
             (long long)xs.n, (long long)xs.c, (long long)xs.d, (long long)xs.h, (long long)xs.w);
    return device_fail(b, (cudaError_t)e, what);
}

static i3rt_status device_run_node(i3_backend *b, const i3_graph *g, const i3_node *node, void *scratch) {
    DeviceState *st = state_of(b);
    if (!st->profile) return run_node(b, g, node, scratch);
    cudaError_t e = cudaStreamSynchronize(st->stream);
    if (e != cudaSuccess) return device_fail(b, e, "profile");
    const double t0 = i3_now_seconds();
    I3_TRY(run_node(b, g, node, scratch));
    if ((e = cudaStreamSynchronize(st->stream)) != cudaSuccess) return device_fail(b, e, "profile");
    st->times.seconds[node->op] += i3_now_seconds() - t0;
    st->times.nodes[node->op]++;
    st->stats.profiled_nodes++;
    return I3RT_OK;
}

/* The profile's table on stderr (the backend's end; asked for with I3RT_CUDA_PROFILE=1). */
static void print_profile(const Profile *p) {
    double total = 0.0;
    for (int op = 0; op < I3_OP_COUNT; op++) total += p->seconds[op];
    fprintf(stderr, "%s backend profile (stream synchronized around each node): %.3f ms in all\n", BACKEND_NAME,
            1e3 * total);
    for (int op = 0; op < I3_OP_COUNT; op++)
        if (p->nodes[op])
            fprintf(stderr, "  %-18s %7lld nodes %10.3f ms %5.1f %%\n", i3_op_name((i3_op)op), (long long)p->nodes[op],
                    1e3 * p->seconds[op], total > 0 ? 100.0 * p->seconds[op] / total : 0.0);
}

static i3rt_status device_synchronize(i3_backend *b) {
    cudaError_t e = cudaStreamSynchronize(stream_of(b));
    if (e == cudaSuccess) e = cudaGetLastError();
    return e == cudaSuccess ? I3RT_OK : device_fail(b, e, "synchronize");
}

static void device_destroy(i3_backend *b) {
    if (b->impl) {
        if (state_of(b)->profile) print_profile(&state_of(b)->times);
        drop_capture(state_of(b)->replay, stream_of(b));
        for (Replay &r : state_of(b)->replays) drop_replay(&r);
        device_free(b, state_of(b)->partials);
        device_free(b, state_of(b)->scale_shift);
        for (int i = 0; i < state_of(b)->n_packed; i++) device_free(b, state_of(b)->packed[i].packed);
        device_free(b, state_of(b)->split_counters);
        free(state_of(b)->packed);
        free(state_of(b)->channels_last);
        free(state_of(b)->allocations);
        cudaStreamDestroy(stream_of(b));
    }
    free(b->impl);
    free(b);
}

static i3rt_status launched(i3_backend *b, int e, const char *what) {
    return e == 0 ? I3RT_OK : device_fail(b, (cudaError_t)e, what);
}

static i3rt_status device_sw_zero(i3_backend *b, void *ptr, size_t bytes) {
    return launched(b, cudaMemsetAsync(ptr, 0, bytes, stream_of(b)), "sliding window: clearing the sums");
}

static i3rt_status device_sw_tile(i3_backend *b, const float *x, int64_t channels, const int64_t shape[3],
                                  const int64_t offset[3], const int64_t tile[3], int flip_mask, float *y) {
    return launched(b, I3_DEV(sw_tile)(x, channels, shape, offset, tile, flip_mask, y, stream_of(b)),
                    "sliding window: sw_tile");
}

static i3rt_status device_sw_gather(i3_backend *b, const float *pred, int64_t classes, const int64_t tile[3],
                                    int flip_mask, int first, float *sum) {
    return launched(b, I3_DEV(sw_gather)(pred, classes, tile, flip_mask, first, sum, stream_of(b)),
                    "sliding window: sw_gather");
}

static i3rt_status device_sw_accumulate(i3_backend *b, const float *sum, int64_t classes, const int64_t tile[3],
                                        int passes, const float *gauss, int fp16, void *acc, void *wsum,
                                        const int64_t volume[3], const int64_t offset[3]) {
    return launched(b,
                    I3_DEV(sw_accumulate)(sum, classes, tile, passes, gauss, fp16, acc, wsum, volume, offset,
                                          stream_of(b)),
                    "sliding window: sw_accumulate");
}

static i3rt_status device_sw_normalize(i3_backend *b, void *acc, const void *wsum, int64_t classes,
                                       const int64_t volume[3], int fp16) {
    return launched(b, I3_DEV(sw_normalize)(acc, wsum, classes, volume, fp16, stream_of(b)),
                    "sliding window: sw_normalize");
}

static const i3_backend_sw_i device_sw = {device_sw_zero, device_sw_tile, device_sw_gather, device_sw_accumulate,
                                          device_sw_normalize};

static i3rt_status device_host_alloc(i3_backend *b, size_t bytes, void **out) {
    cudaError_t e = cudaHostAlloc(out, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e == cudaSuccess) return I3RT_OK;
    *out = NULL;
    const char *detail = failure_detail();
    i3rt_status st = i3_fail(b->ctx, I3RT_ERR_OUT_OF_MEMORY,
                             "%s backend: cannot allocate %zu bytes of pinned host memory: %s%s%s", BACKEND_NAME, bytes,
                             cudaGetErrorString(e), detail[0] ? ": " : "", detail);
    cudaGetLastError();
    return st;
}

static void device_host_free(i3_backend *, void *ptr) {
    if (ptr) cudaFreeHost(ptr);
}

static const i3_backend_i device_iface = {
    BACKEND_NAME,
    0, /* host_memory: weights are uploaded, also on the emulator, so that the upload path is tested */
    device_alloc,
    device_free,
    device_upload,
    device_download,
    device_scratch_bytes,
    device_value_sizes,
    device_concat_view_offset,
    device_run_node,
    device_synchronize,
    device_destroy,
    &device_sw,
    device_host_alloc,
    device_host_free,
};

}  // namespace I3_NS

using namespace I3_NS;

extern "C" i3rt_status I3_DEV(backend_create)(i3_ctx *ctx, const i3_cuda_options *opt, i3_backend **out) {
    *out = NULL;
    if (opt->conv < (int)CONV_F32 || opt->conv > (int)CONV_TF32)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT,
                       "%s backend: conv precision %d is not one of i3_cuda_conv_precision", BACKEND_NAME,
                       opt->conv);
#ifdef __CUDACC__
    int devices = 0;
    cudaError_t found = cudaGetDeviceCount(&devices);
    if (found != cudaSuccess || devices == 0) {
        cudaGetLastError();
        return i3_fail(ctx, I3RT_ERR_BACKEND, "cuda backend: no CUDA device (%s)",
                       found != cudaSuccess ? cudaGetErrorString(found) : "device count is 0");
    }
#endif
    i3_backend *b = (i3_backend *)i3_calloc(ctx, 1, sizeof *b, "the CUDA backend");
    DeviceState *state = (DeviceState *)i3_calloc(ctx, 1, sizeof *state, "the CUDA backend's state");
    if (!b || !state) {
        free(b);
        free(state);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    state->conv = (ConvPrecision)opt->conv;
    state->fuse = opt->fuse != 0;
    state->profile = opt->profile != 0;
    state->graphs = opt->graphs != 0 && !state->profile; /* no synchronizing inside a capture */
    state->fusion.stats_for = state->fusion.deferred_for = state->fusion.residual_for = -1;
    b->iface = &device_iface;
    b->ctx = ctx;
    b->n_threads = ctx->n_threads;
    b->impl = state;
    cudaError_t e = cudaStreamCreate(&state->stream);
    if (e != cudaSuccess) {
        b->impl = NULL;
        free(state);
        i3rt_status st = device_fail(b, e, "stream creation");
        free(b);
        return st;
    }
    *out = b;
    return I3RT_OK;
}

extern "C" void I3_DEV(backend_stats)(const i3_backend *b, i3_cuda_stats *out) {
    *out = ((DeviceState *)b->impl)->stats;
}

extern "C" void *I3_DEV(backend_stream)(i3_backend *b) { return (void *)stream_of(b); }

extern "C" i3rt_status I3_DEV(host_alloc)(i3_backend *b, size_t bytes, void **out) {
    return device_host_alloc(b, bytes, out);
}

extern "C" void I3_DEV(host_free)(void *ptr) { device_host_free(NULL, ptr); }

#ifndef __CUDACC__
#ifdef I3RT_HAVE_CUDA
extern "C" i3rt_status i3gpu_backend_create(i3_ctx *ctx, const i3_cuda_options *opt, i3_backend **out);
extern "C" void i3gpu_backend_stats(const i3_backend *b, i3_cuda_stats *out);
extern "C" void *i3gpu_backend_stream(i3_backend *b);
extern "C" i3rt_status i3gpu_host_alloc(i3_backend *b, size_t bytes, void **out);
extern "C" void i3gpu_host_free(void *ptr);
#endif

#ifdef I3RT_HAVE_CUDA
static bool is_gpu(const i3_backend *b) { return !strcmp(b->iface->name, "cuda"); }
#endif

extern "C" void i3_backend_cuda_stats(const i3_backend *b, i3_cuda_stats *out) {
#ifdef I3RT_HAVE_CUDA
    if (is_gpu(b)) return i3gpu_backend_stats(b, out);
#endif
    i3emu_backend_stats(b, out);
}

extern "C" void *i3_backend_cuda_stream(i3_backend *b) {
#ifdef I3RT_HAVE_CUDA
    if (is_gpu(b)) return i3gpu_backend_stream(b);
#endif
    return i3emu_backend_stream(b);
}

extern "C" i3rt_status i3_backend_cuda_host_alloc(i3_backend *b, size_t bytes, void **out) {
#ifdef I3RT_HAVE_CUDA
    if (is_gpu(b)) return i3gpu_host_alloc(b, bytes, out);
#endif
    return i3emu_host_alloc(b, bytes, out);
}

extern "C" void i3_backend_cuda_host_free(i3_backend *b, void *ptr) {
#ifdef I3RT_HAVE_CUDA
    if (is_gpu(b)) return i3gpu_host_free(ptr);
#endif
    i3emu_host_free(ptr);
}

extern "C" i3rt_status i3_cuda_options_from_env(i3_ctx *ctx, i3_cuda_options *out) {
    static const char *const names[] = {"f32", "f16", "bf16", "tf32"};
    const char *conv = getenv("I3RT_CUDA_CONV"), *fuse = getenv("I3RT_CUDA_FUSE"), *graphs = getenv("I3RT_CUDA_GRAPHS");
    const char *profile = getenv("I3RT_CUDA_PROFILE");
    int precision = conv ? -1 : I3_CUDA_CONV_F32;
    for (int i = I3_CUDA_CONV_F32; conv && i <= I3_CUDA_CONV_TF32; i++)
        if (!strcmp(conv, names[i])) precision = i;
    if (precision < 0)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "cuda backend: I3RT_CUDA_CONV=%s is not f32, f16, bf16 or tf32",
                       conv);
    out->conv = precision;
    out->fuse = !fuse || strcmp(fuse, "0");
    out->graphs = !graphs || strcmp(graphs, "0");
    out->profile = profile && strcmp(profile, "0");
    return I3RT_OK;
}

extern "C" i3rt_status i3_backend_cuda_create_with(i3_ctx *ctx, int emulated, const i3_cuda_options *opt,
                                                   i3_backend **out) {
    if (emulated) return i3emu_backend_create(ctx, opt, out);
#ifdef I3RT_HAVE_CUDA
    return i3gpu_backend_create(ctx, opt, out);
#else
    *out = NULL;
    return i3_fail(ctx, I3RT_ERR_BACKEND,
                   "the CUDA backend is not built into this i3rt (configure with -DI3RT_CUDA=ON)");
#endif
}

extern "C" i3rt_status i3_backend_cuda_create(i3_ctx *ctx, int emulated, i3_backend **out) {
    i3_cuda_options opt;
    *out = NULL;
    I3_TRY(i3_cuda_options_from_env(ctx, &opt));
    static_assert((int)I3RT_PRECISION_F16 == (int)I3_CUDA_CONV_F16 && (int)I3RT_PRECISION_BF16 == (int)I3_CUDA_CONV_BF16 &&
                      (int)I3RT_PRECISION_TF32 == (int)I3_CUDA_CONV_TF32,
                  "i3rt_precision and i3_cuda_conv_precision must agree");
    if (ctx->precision_set) opt.conv = (int)ctx->precision;
    return i3_backend_cuda_create_with(ctx, emulated, &opt, out);
}
#endif
