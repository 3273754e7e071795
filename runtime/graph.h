/* A network as a list of nodes over values, built once per input shape, then planned and run.
 *
 * Values are the model input, weights (constants from the weight file) and activations. The
 * builder functions infer and check shapes; i3_graph_plan assigns every activation an offset in
 * one arena so that buffers whose lifetime ended are reused, which makes the peak memory known
 * before anything runs. Backends only see nodes whose values already have their data pointers. */
#ifndef I3RT_GRAPH_H
#define I3RT_GRAPH_H

#include "core.h"
#include "ops.h"

typedef enum { I3_VALUE_INPUT = 0, I3_VALUE_WEIGHT, I3_VALUE_ACTIVATION } i3_value_kind;

typedef struct {
    i3_value_kind kind;
    int ndim;             /* weights: their own rank; input/activations: 5 (NCDHW) */
    int64_t dims[5];
    char name[96];        /* weight tensor name, or a description of the activation */
    const float *host;    /* weights: float32 host data (owned by the weight file) */
    void *data;           /* where the backend keeps it, set by i3_graph_bind */
    size_t offset;        /* input/activations: offset in the arena (from i3_graph_plan) */
    int producer;         /* node index that writes it, -1 for input/weights */
    int last_use;         /* last node index that reads it (-1: never read) */
    int view_of;          /* from i3_graph_plan: -1, or the concat whose output holds this value (one of its
                           * inputs, written there by its producer; the concat copies only the other) */
} i3_value;

typedef enum {
    I3_OP_CONV = 0,         /* in: x, w, b|-1        p.conv */
    I3_OP_CONV_TRANSPOSE,   /* in: x, w, b|-1        p.conv_transpose */
    I3_OP_ACS_CONV,         /* in: x, w, b|-1        p.acs */
    I3_OP_INSTANCE_NORM,    /* in: x, gamma, beta    p.norm   (may run in place) */
    I3_OP_ACTIVATION,       /* in: x                 p.act    (may run in place) */
    I3_OP_ADD,              /* in: a, b              p.act    (may run in place on a) */
    I3_OP_CONCAT,           /* in: a, b (channels) */
    I3_OP_RESIZE,           /* in: x                 p.resize */
    I3_OP_SOFTMAX,          /* in: x (channel softmax) */
    I3_OP_AVG_POOL,         /* in: x                 p.avg_pool */
    I3_OP_SLICE_CHANNELS,   /* in: x                 p.slice */
    I3_OP_SPATIAL_GATHER,   /* in: feats, logits     -> [n, c, classes, 1, 1] */
    I3_OP_OBJECT_ATTENTION, /* in: query, key, value (key/value [n, c, classes, 1, 1]) */
    I3_OP_MASK_POOL,        /* in: feats, guide      p.mask_pool -> [n, 2c, 1, 1, 1] */
    I3_OP_CHANNEL_GATE,     /* in: x, gate [n, c, 1, 1, 1]       (may run in place) */
    I3_OP_COUNT
} i3_op;

const char *i3_op_name(i3_op op);

#define I3_MAX_INPUTS 3

typedef struct {
    i3_op op;
    int in[I3_MAX_INPUTS]; /* value ids, -1 where absent */
    int out;
    union {
        i3_conv_params conv;
        i3_conv_transpose_params conv_transpose;
        i3_acs_conv_params acs;
        i3_norm_params norm;
        i3_act act;
        i3_resize_params resize;
        i3_avg_pool_params avg_pool;
        i3_slice_params slice;
        i3_mask_pool_params mask_pool;
    } p;
    size_t scratch_bytes;  /* set by i3_graph_plan through the backend */
} i3_node;

typedef struct i3_backend i3_backend;

typedef struct {
    i3_ctx *ctx;
    i3_value *values;
    int n_values, cap_values;
    i3_node *nodes;
    int n_nodes, cap_nodes;
    int input, output;     /* value ids */
    size_t arena_bytes;    /* planned: input + activations */
    size_t scratch_bytes;  /* planned: the largest scratch any node needs */
    int failed;            /* a builder call failed; later calls return -1, ctx holds the message */
} i3_graph;

void i3_graph_init(i3_graph *g, i3_ctx *ctx);
void i3_graph_free(i3_graph *g);

static inline i3_shape5 i3_value_shape5(const i3_value *v) {
    i3_shape5 s = {v->dims[0], v->dims[1], v->dims[2], v->dims[3], v->dims[4]};
    return s;
}
size_t i3_value_bytes(const i3_value *v);

/* Builders: each returns the new value id, or -1 after recording an error in g->ctx (and makes
 * every later builder call return -1, so a network can be built without checking each step). */
int i3_graph_input(i3_graph *g, i3_shape5 shape);
int i3_graph_weight(i3_graph *g, const char *name, const float *host, int ndim, const int64_t *dims);
int i3_graph_conv(i3_graph *g, int x, int w, int b, const i3_conv_params *p, const char *name);
int i3_graph_conv_transpose(i3_graph *g, int x, int w, int b, const i3_conv_transpose_params *p, const char *name);
int i3_graph_acs_conv(i3_graph *g, int x, int w, int b, const i3_acs_conv_params *p, const char *name);
int i3_graph_instance_norm(i3_graph *g, int x, int gamma, int beta, const i3_norm_params *p, const char *name);
int i3_graph_activation(i3_graph *g, int x, i3_act act, const char *name);
int i3_graph_add(i3_graph *g, int a, int b, i3_act act, const char *name);
int i3_graph_concat(i3_graph *g, int a, int b, const char *name);
int i3_graph_resize(i3_graph *g, int x, const i3_resize_params *p, const char *name);
int i3_graph_softmax(i3_graph *g, int x, const char *name);
int i3_graph_avg_pool(i3_graph *g, int x, const i3_avg_pool_params *p, const char *name);
int i3_graph_slice_channels(i3_graph *g, int x, const i3_slice_params *p, const char *name);
int i3_graph_spatial_gather(i3_graph *g, int feats, int logits, const char *name);
int i3_graph_object_attention(i3_graph *g, int query, int key, int value, const char *name);
int i3_graph_mask_pool(i3_graph *g, int feats, int guide, const i3_mask_pool_params *p, const char *name);
int i3_graph_channel_gate(i3_graph *g, int x, int gate, const char *name);

/* Where input k (0, 1) of a concat lies inside the concat's output when its producer writes it there, if
 * that is a contiguous part (NCDHW, batch 1): 0 or the first input's bytes; else SIZE_MAX. The rule of
 * backends without a concat_view_offset of their own. */
size_t i3_graph_concat_contiguous_offset(const i3_graph *g, const i3_node *concat, int k);

/* Arena offsets are aligned for vector loads on the CPU and coalesced access on a GPU. */
#define I3_ARENA_ALIGN 256

/* Marks the output, computes lifetimes, asks the backend for each node's scratch and assigns arena
 * offsets (in-place ops reuse their input's buffer when it dies there; placed largest first, so the
 * peak is usually the most bytes alive at one node). */
i3rt_status i3_graph_plan(i3_graph *g, int output, i3_backend *backend);

#endif /* I3RT_GRAPH_H */
