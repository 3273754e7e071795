/* Every device op (kernels/<op>.cu through runtime/backend_cuda.cu's run_node) against the CPU
 * reference of runtime/ops.h, on the emulated device, and on a real GPU when there is one (the `gpu`
 * suite says it was skipped otherwise). Shapes are small, odd and anisotropic, some drawn at random
 * from a fixed seed. Every device buffer has FX_GUARD sentinel floats on both sides, checked after
 * each op. Tolerance: normalized mean squared error sum (y - ref)^2 / sum ref^2 (as ggml's
 * test-backend-ops) below 1e-10 for these f32 kernels (they differ from the references only by f32
 * summation order, and instance norm by f32 vs double statistics). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda_backend.h"
#include "fixtures.h"
#include "i3rt.h"
#include "network.h"
#include "sliding_window.h"
#include "weights.h"

#include "launchers_both.h" /* kernels/: i3emu_* and, with CUDA, i3gpu_* */

#define NMSE_F32 1e-10
/* Whole random-weight HRNets amplify the convolutions' f32 summation-order differences: 8e-11 seen on the
 * emulated HRNet-18s 2D even with the CPU's own OCR ops swapped in, too close to NMSE_F32 for a GPU's FMAs. */
#define NMSE_HRNET 1e-8
#define SENTINEL 1234.5f /* around inputs */
#define SENTINEL_OUT                                                                                                   \
    -777.25f /* around outputs: a kernel that copies an input's guard into an output's                                 \
              * guard is caught too */

typedef int (*conv_tc_launcher)(const float *, i3_shape5, const float *, const float *, const i3_conv_params *, float *,
                                i3_shape5, int, void *, void *);
typedef int (*conv_tc_fused_launcher)(const void *, i3_shape5, int, const float *, const void *, unsigned *,
                                      const float *, const i3_conv_params *, const float *, i3_act, void *, i3_shape5, int,
                                      const i3_residual *, float *, int, void *, void *);
typedef size_t (*packed_weights_bytes_fn)(i3_shape5, int, const i3_conv_params *, int);
typedef int (*pack_weights_launcher)(i3_shape5, int, const float *, const i3_conv_params *, int, void *, void *);
typedef int (*stat_chunks_launcher)(i3_shape5, int);
typedef size_t (*tc_scratch_bytes_fn)(i3_shape5, int, const i3_conv_params *, int);
typedef int (*k_splits_fn)(i3_shape5, int, const i3_conv_params *, int);
typedef int (*concat_cl_launcher)(const void *, int, int64_t, const void *, int, int64_t, int64_t, int64_t, int, void *,
                                  void *);
typedef int (*norm_apply_cl_launcher)(const void *, int, int64_t, int64_t, int64_t, const float *, i3_act, const void *,
                                      int, i3_act, void *, int, void *);
typedef int (*avg_pool_cl_launcher)(const void *, i3_shape5, int, const i3_avg_pool_params *, float *, void *);
typedef int (*conv_transpose_cl_launcher)(const void *, i3_shape5, int, const float *, const float *,
                                          const i3_conv_transpose_params *, float *, i3_shape5, void *);
typedef int (*conv_transpose_tc_launcher)(const void *, i3_shape5, int, const float *, const float *,
                                          const i3_conv_transpose_params *, void *, i3_shape5, int64_t, int, void *,
                                          void *);
typedef size_t (*conv_transpose_tc_scratch_fn)(i3_shape5, int, const i3_conv_transpose_params *, int);
typedef int (*slice_sums_launcher)(const float *, int64_t, int64_t, int64_t, double *, double *, double *, void *);
typedef int (*softmax_launcher)(const float *, int64_t, int64_t, int64_t, float *, float *, float *, int32_t *, void *);

typedef int (*softmax_slices_launcher)(const float *, int64_t, int64_t, int64_t, int64_t, float *, float *, float *,
                                       int32_t *, double *, void *, void *);

typedef int (*sw_gather_launcher)(const float *, int64_t, const int64_t *, int, int, float *, void *);
typedef int (*sw_accumulate_launcher)(const float *, int64_t, const int64_t *, int, const float *, int, void *, void *,
                                      const int64_t *, const int64_t *, void *);
typedef int (*sw_tile_launcher)(const float *, int64_t, const int64_t *, const int64_t *, const int64_t *, int, float *,
                                void *);
typedef int (*sw_normalize_launcher)(void *, const void *, int64_t, const int64_t *, int, void *);

typedef struct {
    i3_ctx ctx;
    i3_backend *b;
    sw_tile_launcher sw_tile; /* sliding window: not graph ops */
    sw_gather_launcher sw_gather;
    sw_accumulate_launcher sw_accumulate;
    sw_normalize_launcher sw_normalize;
    softmax_slices_launcher softmax_slices; /* not a graph op */
    size_t (*softmax_slices_scratch_bytes)(int64_t, int64_t, int64_t);
    softmax_launcher softmax_uncertainty; /* the fused op's full form (the graph op only wants probs) */
    conv_tc_launcher conv_tensor_core;    /* the graph's conv with I3RT_CUDA_CONV=f16|bf16|tf32 */
    conv_tc_fused_launcher conv_tensor_core_fused; /* its layouts and fusions */
    stat_chunks_launcher conv_tensor_core_stat_chunks;
    tc_scratch_bytes_fn conv_tensor_core_scratch_bytes;
    k_splits_fn conv_tensor_core_k_splits;
    packed_weights_bytes_fn conv_tensor_core_packed_weights_bytes;
    pack_weights_launcher conv_tensor_core_pack_weights;
    concat_cl_launcher concat_channels_last; /* the graph's concat and norm on channels-last tensors */
    norm_apply_cl_launcher norm_apply_channels_last;
    conv_transpose_cl_launcher conv_transpose_channels_last;
    conv_transpose_tc_launcher conv_transpose_tensor_core;
    conv_transpose_tc_scratch_fn conv_transpose_tensor_core_scratch_bytes;
    avg_pool_cl_launcher avg_pool_channels_last;
    slice_sums_launcher slice_sums;       /* not a graph op */
} device;

/* A device buffer of n floats between two guard zones of `sentinel`. */
typedef struct {
    float *base, *data;
    int64_t n;
    float sentinel;
} dbuf;

/* host NULL: an output buffer (filled with SENTINEL_OUT, guards included). */
static dbuf dev_upload(device *d, const float *host, int64_t n) {
    dbuf t = {NULL, NULL, n, host ? SENTINEL : SENTINEL_OUT};
    int64_t total = n + 2 * FX_GUARD;
    cr_assert_eq(d->b->iface->alloc(d->b, (size_t)total * sizeof(float), (void **)&t.base), I3RT_OK, "%s",
                 d->ctx.error);
    float *staging = malloc((size_t)total * sizeof(float));
    for (int64_t i = 0; i < total; i++)
        staging[i] = t.sentinel;
    if (host)
        memcpy(staging + FX_GUARD, host, (size_t)n * sizeof(float));
    cr_assert_eq(d->b->iface->upload(d->b, t.base, staging, (size_t)total * sizeof(float)), I3RT_OK, "%s",
                 d->ctx.error);
    free(staging);
    t.data = t.base + FX_GUARD;
    return t;
}

/* Downloads the buffer into host (n floats), checks the guards, frees it. */
static void dev_download_free(device *d, dbuf t, void *host, const char *what) {
    int64_t total = t.n + 2 * FX_GUARD;
    float *staging = malloc((size_t)total * sizeof(float));
    cr_assert_eq(d->b->iface->download(d->b, staging, t.base, (size_t)total * sizeof(float)), I3RT_OK, "%s",
                 d->ctx.error);
    for (int64_t i = 0; i < FX_GUARD; i++) {
        cr_assert_eq(staging[i], t.sentinel, "%s: write before the buffer (guard %lld)", what, (long long)i);
        cr_assert_eq(staging[FX_GUARD + t.n + i], t.sentinel, "%s: write after the buffer (guard %lld)", what,
                     (long long)i);
    }
    if (host)
        memcpy(host, staging + FX_GUARD, (size_t)t.n * sizeof(float));
    free(staging);
    d->b->iface->free(d->b, t.base);
}

/* A guarded device buffer of at least `bytes` (1 float when none are needed). */
static dbuf dev_scratch(device *d, size_t bytes) {
    return dev_upload(d, NULL, bytes ? (int64_t)((bytes + sizeof(float) - 1) / sizeof(float)) : 1);
}

static void check_nmse_tol(const char *device_name, const char *what, const float *got, const float *ref, int64_t n,
                           double tolerance) {
    double err2 = 0, ref2 = 0, max_abs = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)got[i] - ref[i];
        err2 += e * e;
        ref2 += (double)ref[i] * ref[i];
        if (fabs(e) > max_abs || isnan(e))
            max_abs = fabs(e);
    }
    double nmse = ref2 > 0 ? err2 / ref2 : err2;
    printf("%-8s %-64s n=%-7lld nmse %.2e  max abs %.2e\n", device_name, what, (long long)n, nmse, max_abs);
    cr_assert(nmse <= tolerance && !isnan(max_abs), "%s %s: nmse %.3g > %.0e (max abs error %.3g)", device_name, what,
              nmse, tolerance, max_abs);
}

static void check_nmse(const char *device_name, const char *what, const float *got, const float *ref, int64_t n) {
    check_nmse_tol(device_name, what, got, ref, n, NMSE_F32);
}

/* Runs one node on the device: inputs are host arrays (NULL entries for absent ones) uploaded into
 * guarded buffers; the output is downloaded into `y` (numel(ys) floats). in_place: the output is
 * written over input 0. The scratch the backend asks for is a guarded buffer too. */
static void run_node(device *d, i3_node node, const float *const *inputs, const int64_t *in_numel,
                     const i3_shape5 *in_shapes, i3_shape5 ys, float *y, int in_place, const char *what) {
    i3_value values[I3_MAX_INPUTS + 1];
    dbuf bufs[I3_MAX_INPUTS + 1];
    memset(values, 0, sizeof values);
    for (int i = 0; i <= I3_MAX_INPUTS; i++) values[i].view_of = -1;
    i3_graph g;
    memset(&g, 0, sizeof g);
    g.ctx = &d->ctx;
    g.values = values;
    g.n_values = I3_MAX_INPUTS + 1;
    for (int i = 0; i < I3_MAX_INPUTS; i++) {
        node.in[i] = inputs[i] ? i : -1;
        if (!inputs[i])
            continue;
        bufs[i] = dev_upload(d, inputs[i], in_numel[i]);
        values[i].kind = i == 0 ? I3_VALUE_ACTIVATION : I3_VALUE_WEIGHT;
        values[i].ndim = 5;
        memcpy(values[i].dims, &in_shapes[i], sizeof values[i].dims);
        values[i].data = bufs[i].data;
        snprintf(values[i].name, sizeof values[i].name, "input %d", i);
    }
    int out = I3_MAX_INPUTS;
    node.out = out;
    values[out].kind = I3_VALUE_ACTIVATION;
    values[out].ndim = 5;
    memcpy(values[out].dims, &ys, sizeof values[out].dims);
    snprintf(values[out].name, sizeof values[out].name, "%s", what);
    if (in_place) {
        values[out].data = bufs[0].data;
    } else {
        bufs[out] = dev_upload(d, NULL, i3_shape5_numel(ys));
        values[out].data = bufs[out].data;
    }
    size_t scratch_bytes = d->b->iface->scratch_bytes(d->b, &g, &node);
    dbuf scratch = {0};
    if (scratch_bytes)
        scratch = dev_upload(d, NULL, (int64_t)((scratch_bytes + sizeof(float) - 1) / sizeof(float)));
    cr_assert_eq(d->b->iface->run_node(d->b, &g, &node, scratch.data), I3RT_OK, "%s: %s", what, d->ctx.error);
    cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s: %s", what, d->ctx.error);
    if (scratch_bytes)
        dev_download_free(d, scratch, NULL, what);
    for (int i = 0; i < I3_MAX_INPUTS; i++) {
        if (!inputs[i] || (in_place && i == 0))
            continue;
        float *copy = malloc((size_t)in_numel[i] * sizeof(float));
        dev_download_free(d, bufs[i], copy, what);
        cr_assert(memcmp(copy, inputs[i], (size_t)in_numel[i] * sizeof(float)) == 0, "%s: input %d was modified", what,
                  i);
        free(copy);
    }
    dev_download_free(d, in_place ? bufs[0] : bufs[out], y, what);
}

static int64_t channels_last_outputs(const i3_backend *b) {
    i3_cuda_stats stats;
    i3_backend_cuda_stats(b, &stats);
    return stats.channels_last_outputs;
}

static int64_t fused_nodes(const i3_backend *b) {
    i3_cuda_stats stats;
    i3_backend_cuda_stats(b, &stats);
    return stats.fused_nodes;
}

static float *random_floats(fx_rng *r, int64_t n, float lo, float hi) {
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    fx_fill(r, v, n, lo, hi);
    return v;
}

static int64_t rand_in(fx_rng *r, int lo, int hi) {
    float u;
    fx_fill(r, &u, 1, 0.0f, 1.0f);
    int64_t v = lo + (int64_t)(u * (hi - lo + 1));
    return v > hi ? hi : v;
}

static const i3_act LEAKY = {I3_ACT_LEAKY_RELU, 0.01f};

/* ---- the ops ------------------------------------------------------------------------------- */

static void conv_case(device *d, const char *name, i3_shape5 xs, i3_conv_params p, int with_bias, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    i3_shape5 ys = i3_conv_out_shape(xs, &p);
    int64_t nw = (int64_t)p.cout * xs.c * p.k[0] * p.k[1] * p.k[2];
    float *x = random_floats(&r, i3_shape5_numel(xs), -1, 1), *w = random_floats(&r, nw, -0.5f, 0.5f);
    float *b = with_bias ? random_floats(&r, p.cout, -0.2f, 0.2f) : NULL;
    float *y = malloc((size_t)i3_shape5_numel(ys) * sizeof(float)),
          *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
    i3_cpu_conv_ref(x, xs, w, b, &p, ref);
    i3_node node = {.op = I3_OP_CONV, .p.conv = p};
    const float *in[3] = {x, w, b};
    int64_t numel[3] = {i3_shape5_numel(xs), nw, p.cout};
    i3_shape5 shapes[3] = {xs, {p.cout, xs.c, p.k[0], p.k[1], p.k[2]}, {p.cout, 1, 1, 1, 1}};
    char what[160];
    snprintf(what, sizeof what, "conv %s x[%lld,%lld,%lld,%lld,%lld] k%dx%dx%d s%d%d%d p%d%d%d", name, (long long)xs.n,
             (long long)xs.c, (long long)xs.d, (long long)xs.h, (long long)xs.w, p.k[0], p.k[1], p.k[2], p.stride[0],
             p.stride[1], p.stride[2], p.pad[0], p.pad[1], p.pad[2]);
    run_node(d, node, in, numel, shapes, ys, y, 0, what);
    check_nmse(d->b->iface->name, what, y, ref, i3_shape5_numel(ys));
    free(x), free(w), free(b), free(y), free(ref);
}

static void check_conv(device *d) {
    i3_conv_params p3 = {.cout = 4, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}, .act = LEAKY};
    conv_case(d, "3x3x3", (i3_shape5){2, 3, 5, 7, 6}, p3, 1, 1);
    i3_conv_params aniso = {.cout = 5, .k = {1, 3, 3}, .stride = {1, 2, 2}, .pad = {0, 1, 1}, .act = LEAKY};
    conv_case(d, "1x3x3 strided", (i3_shape5){1, 2, 3, 9, 7}, aniso, 1, 2);
    i3_conv_params head = {.cout = 3, .k = {1, 1, 1}, .stride = {1, 1, 1}, .pad = {0, 0, 0}};
    conv_case(d, "1x1x1 no bias", (i3_shape5){1, 6, 3, 5, 4}, head, 0, 3);
    i3_conv_params conv2d = {.cout = 3, .k = {1, 3, 3}, .stride = {1, 1, 1}, .pad = {0, 1, 1}, .act = {I3_ACT_RELU, 0}};
    conv_case(d, "2D", (i3_shape5){1, 2, 1, 11, 9}, conv2d, 1, 4);
    /* v2: two groups of output channels, the second partial, and input channels over two weight tiles */
    i3_conv_params wide = {.cout = 11, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}, .act = LEAKY};
    conv_case(d, "3x3x3 11 of 20 channels", (i3_shape5){1, 20, 4, 5, 6}, wide, 1, 5);
    /* a kernel whose weights per input channel exceed v2's tile: v1 */
    i3_conv_params big = {.cout = 2, .k = {9, 9, 7}, .stride = {1, 1, 1}, .pad = {4, 4, 3}, .act = LEAKY};
    conv_case(d, "9x9x7 (v1)", (i3_shape5){1, 2, 9, 10, 8}, big, 1, 6);
    fx_rng r = fx_rng_seed(99);
    for (int i = 0; i < 3; i++) {
        i3_conv_params p = {.cout = (int)rand_in(&r, 1, 6), .act = LEAKY};
        for (int a = 0; a < 3; a++) {
            p.k[a] = rand_in(&r, 0, 1) ? 3 : 1;
            p.stride[a] = (int)rand_in(&r, 1, 2);
            p.pad[a] = p.k[a] / 2;
        }
        i3_shape5 xs = {rand_in(&r, 1, 2), rand_in(&r, 1, 4), rand_in(&r, 3, 7), rand_in(&r, 3, 9), rand_in(&r, 3, 8)};
        conv_case(d, "random", xs, p, (int)rand_in(&r, 0, 1), 10 + i);
    }
}

/* Tensor-core conv: against the reference run on inputs rounded to f16/bf16 (only the summation
 * order differs: f32 tolerance), and against the exact reference with the dtype's tolerance. */
#define NMSE_F16 1e-6
#define NMSE_BF16 5e-5
#define NMSE_TF32 1e-6 /* 10 mantissa bits, as f16 */

/* v as the tensor core sees it: f16, bf16, or TF32 (cvt.rna: 10 mantissa bits, ties away from 0). */
static float round_operand(float v, int precision) {
    if (precision == I3_TC_TF32) {
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        bits = (bits + 0x1000u) & 0xffffe000u;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    return precision == I3_TC_BF16 ? i3_bf16_to_f32(i3_f32_to_bf16(v)) : i3_f16_to_f32(i3_f32_to_f16(v));
}

static const char *const PRECISION_NAMES[] = {"f16", "bf16", "tf32"};

static void conv_tc_case(device *d, i3_shape5 xs, i3_conv_params p, int precision, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    i3_shape5 ys = i3_conv_out_shape(xs, &p);
    int64_t nx = i3_shape5_numel(xs), nw = (int64_t)p.cout * xs.c * p.k[0] * p.k[1] * p.k[2], ny = i3_shape5_numel(ys);
    float *x = random_floats(&r, nx, -1, 1), *w = random_floats(&r, nw, -0.5f, 0.5f);
    float *b = random_floats(&r, p.cout, -0.2f, 0.2f);
    float *xr = malloc((size_t)nx * sizeof(float)), *wr = malloc((size_t)nw * sizeof(float));
    for (int64_t i = 0; i < nx; i++)
        xr[i] = round_operand(x[i], precision);
    for (int64_t i = 0; i < nw; i++)
        wr[i] = round_operand(w[i], precision);
    float *y = malloc((size_t)ny * sizeof(float)), *ref = malloc((size_t)ny * sizeof(float));
    float *ref_rounded = malloc((size_t)ny * sizeof(float));
    i3_cpu_conv_ref(x, xs, w, b, &p, ref);
    i3_cpu_conv_ref(xr, xs, wr, b, &p, ref_rounded);
    dbuf dx = dev_upload(d, x, nx), dw = dev_upload(d, w, nw), db = dev_upload(d, b, p.cout),
         dy = dev_upload(d, NULL, ny), dscratch = dev_scratch(d, d->conv_tensor_core_scratch_bytes(xs, I3_LAYOUT_NCDHW, &p, precision));
    cr_assert_eq(d->conv_tensor_core(dx.data, xs, dw.data, db.data, &p, dy.data, ys, precision, dscratch.data, NULL), 0);
    cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
    dev_download_free(d, dscratch, NULL, "conv_tensor_core scratch");
    dev_download_free(d, dx, NULL, "conv_tensor_core x");
    dev_download_free(d, dw, NULL, "conv_tensor_core w");
    dev_download_free(d, db, NULL, "conv_tensor_core b");
    dev_download_free(d, dy, y, "conv_tensor_core y");
    char what[160];
    snprintf(what, sizeof what, "conv_tensor_core %s x[%lld,%lld,%lld,%lld,%lld] cout %d k%d%d%d s%d%d%d",
             PRECISION_NAMES[precision], (long long)xs.n, (long long)xs.c, (long long)xs.d, (long long)xs.h,
             (long long)xs.w, p.cout, p.k[0], p.k[1], p.k[2], p.stride[0], p.stride[1], p.stride[2]);
    char vs[200];
    snprintf(vs, sizeof vs, "%s vs rounded-input ref", what);
    check_nmse(d->b->iface->name, vs, y, ref_rounded, ny);
    snprintf(vs, sizeof vs, "%s vs f32 ref", what);
    const double tolerance[] = {NMSE_F16, NMSE_BF16, NMSE_TF32};
    check_nmse_tol(d->b->iface->name, vs, y, ref, ny, tolerance[precision]);
    free(x), free(w), free(b), free(xr), free(wr), free(y), free(ref), free(ref_rounded);
}

static void check_conv_tensor_core(device *d) {
    for (int prec = I3_TC_F16; prec <= I3_TC_TF32; prec++) {
        i3_conv_params p3 = {.cout = 5, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}, .act = LEAKY};
        conv_tc_case(d, (i3_shape5){2, 3, 5, 7, 6}, p3, prec, 100 + prec); /* k = 81, 420 rows */
        i3_conv_params wide = {.cout = 40, .k = {1, 3, 3}, .stride = {1, 2, 2}, .pad = {0, 1, 1}, .act = LEAKY};
        conv_tc_case(d, (i3_shape5){1, 7, 3, 9, 8}, wide, prec, 103 + prec); /* two column tiles */
        i3_conv_params head = {.cout = 3, .k = {1, 1, 1}, .stride = {1, 1, 1}, .pad = {0, 0, 0}};
        conv_tc_case(d, (i3_shape5){1, 20, 2, 5, 7}, head, prec, 106 + prec); /* k = 20: a partial k step */
    }
}

/* The f16/bf16 kernel's layouts and fusions (kernels/conv_tensor_core.cu v3), called directly: input
 * NCDHW f32 or channels-last b16 (here rounded and transposed on the host), the deferred norm of the
 * input (scale, shift, LeakyReLU per plane), output NCDHW f32 or channels-last b16, and the output's
 * per-plane statistics, against the reference on the operands the kernel sees: the input rounded,
 * normalized and rounded again (channels-last: the kernel normalizes the b16 values it copied) or
 * normalized then rounded (NCDHW), the weights rounded. */
typedef struct {
    i3_shape5 xs;
    i3_conv_params p;
    int x_layout, y_layout, prologue, stats;
    int k_splits; /* over how many blocks each output tile's k range is split */
    int residual; /* a residual add + ReLU in the epilogue: 0 none, SKIP_APART an NCDHW f32 skip in its own
                   * buffer, SKIP_IN_Y the skip in y's buffer and layout (in place, as the backend runs an add) */
} layout_case;
enum { SKIP_APART = 1, SKIP_IN_Y };

static uint16_t to_b16_host(float v, int precision) {
    return precision == I3_TC_BF16 ? i3_f32_to_bf16(v) : i3_f32_to_f16(v);
}
static float from_b16_host(uint16_t h, int precision) {
    return precision == I3_TC_BF16 ? i3_bf16_to_f32(h) : i3_f16_to_f32(h);
}

/* x [n, c, s] (NCDHW) as channels-last b16 [n, s, c] (one spare element: the buffers travel as floats). */
static uint16_t *to_channels_last_host(const float *x, int64_t n, int64_t c, int64_t s, int precision) {
    uint16_t *y = malloc((size_t)(n * c * s + 1) * sizeof *y);
    for (int64_t sample = 0, i = 0; sample < n; sample++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t pos = 0; pos < s; pos++, i++) y[(sample * s + pos) * c + ch] = to_b16_host(x[i], precision);
    return y;
}

/* The inverse: channels-last b16 [n, s, c] as NCDHW floats. */
static void from_channels_last_host(const uint16_t *x, int64_t n, int64_t c, int64_t s, int precision, float *y) {
    for (int64_t sample = 0, i = 0; sample < n; sample++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t pos = 0; pos < s; pos++, i++) y[i] = from_b16_host(x[(sample * s + pos) * c + ch], precision);
}

static void conv_layout_case(device *d, layout_case c, int precision, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    const i3_shape5 xs = c.xs, ys = i3_conv_out_shape(xs, &c.p);
    const int64_t nx = i3_shape5_numel(xs), ny = i3_shape5_numel(ys), sx = i3_shape5_spatial(xs),
                  sy = i3_shape5_spatial(ys), nw = (int64_t)c.p.cout * xs.c * c.p.k[0] * c.p.k[1] * c.p.k[2];
    const int x_cl = c.x_layout == I3_LAYOUT_NDHWC, y_cl = c.y_layout == I3_LAYOUT_NDHWC;
    float *x = random_floats(&r, nx, -1, 1), *w = random_floats(&r, nw, -0.5f, 0.5f);
    float *b = random_floats(&r, c.p.cout, -0.2f, 0.2f), *ss = random_floats(&r, 2 * xs.n * xs.c, -1, 1);
    const i3_act leaky = {I3_ACT_LEAKY_RELU, 0.01f};
    float *xr = malloc((size_t)nx * sizeof(float)), *wr = malloc((size_t)nw * sizeof(float));
    for (int64_t i = 0; i < nx; i++) {
        const float *plane_ss = ss + 2 * (i / sx);
        float v = x_cl ? round_operand(x[i], precision) : x[i];
        if (c.prologue) v = i3_act_apply(leaky, v * plane_ss[0] + plane_ss[1]);
        xr[i] = round_operand(v, precision);
    }
    for (int64_t i = 0; i < nw; i++) wr[i] = round_operand(w[i], precision);
    float *ref = malloc((size_t)ny * sizeof(float)), *y = malloc((size_t)ny * sizeof(float));
    i3_cpu_conv_ref(xr, xs, wr, b, &c.p, ref);
    const i3_act relu = {I3_ACT_RELU, 0.0f};
    float *skip = c.residual ? random_floats(&r, ny, -1, 1) : NULL;
    uint16_t *skip16 = skip ? to_channels_last_host(skip, ys.n, ys.c, sy, precision) : NULL;
    for (int64_t i = 0; skip && i < ny; i++) { /* a channels-last skip in y: the values rounded */
        if (c.residual == SKIP_IN_Y && y_cl) skip[i] = round_operand(skip[i], precision);
        ref[i] = i3_act_apply(relu, ref[i] + skip[i]);
    }

    /* channels-last b16 tensors travel in float buffers of half as many elements */
    uint16_t *x16 = to_channels_last_host(x, xs.n, xs.c, sx, precision), *y16 = calloc((size_t)ny + 1, sizeof(uint16_t));
    if (c.residual == SKIP_IN_Y && y_cl) memcpy(y16, skip16, (size_t)ny * sizeof *y16);
    const int chunks = d->conv_tensor_core_stat_chunks(ys, precision);
    cr_assert(!c.stats || chunks > 0);
    dbuf dx = x_cl ? dev_upload(d, (const float *)x16, (nx + 1) / 2) : dev_upload(d, x, nx);
    dbuf dw = dev_upload(d, w, nw), db = dev_upload(d, b, c.p.cout), dss = dev_upload(d, ss, 2 * xs.n * xs.c);
    dbuf dy = y_cl ? dev_upload(d, (const float *)y16, (ny + 1) / 2) : dev_upload(d, c.residual == SKIP_IN_Y ? skip : NULL, ny);
    dbuf dskip = dev_upload(d, c.residual == SKIP_APART ? skip : NULL, c.residual == SKIP_APART ? ny : 1);
    const i3_residual residual = {c.residual == SKIP_APART ? dskip.data : dy.data,
                                  c.residual == SKIP_APART ? I3_LAYOUT_NCDHW : c.y_layout, relu};
    dbuf dpart = dev_upload(d, NULL, c.stats ? ys.n * ys.c * chunks * 3 : 1);
    dbuf dscratch = dev_scratch(d, d->conv_tensor_core_scratch_bytes(xs, c.x_layout, &c.p, precision));
    const int k_splits = d->conv_tensor_core_k_splits(xs, c.x_layout, &c.p, precision);
    cr_assert_eq(k_splits, c.k_splits, "k split over %d blocks, expected %d", k_splits, c.k_splits);
    cr_assert_eq(d->conv_tensor_core_fused(dx.data, xs, c.x_layout, dw.data, NULL, NULL, db.data, &c.p,
                                           c.prologue ? dss.data : NULL,
                                           leaky, dy.data, ys, c.y_layout, c.residual ? &residual : NULL,
                                           c.stats ? dpart.data : NULL, precision, dscratch.data, NULL),
                 0);
    cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
    float *partials = malloc((size_t)dpart.n * sizeof(float));
    dev_download_free(d, dx, NULL, "conv layouts x");
    dev_download_free(d, dw, NULL, "conv layouts w");
    dev_download_free(d, db, NULL, "conv layouts b");
    dev_download_free(d, dss, NULL, "conv layouts scale/shift");
    dev_download_free(d, dy, y_cl ? (void *)y16 : (void *)y, "conv layouts y");
    dev_download_free(d, dpart, partials, "conv layouts partials");
    dev_download_free(d, dskip, NULL, "conv layouts skip");
    dev_download_free(d, dscratch, NULL, "conv layouts scratch");
    if (y_cl) from_channels_last_host(y16, ys.n, ys.c, sy, precision, y);
    char what[200];
    snprintf(what, sizeof what, "conv v3 %s x[%lld,%lld,%lld,%lld,%lld]%s -> %d%s k%d%d%d s%d%d%d%s%s%s, k split %d",
             PRECISION_NAMES[precision], (long long)xs.n, (long long)xs.c, (long long)xs.d, (long long)xs.h,
             (long long)xs.w, x_cl ? " cl" : "", c.p.cout, y_cl ? " cl" : "", c.p.k[0], c.p.k[1], c.p.k[2],
             c.p.stride[0], c.p.stride[1], c.p.stride[2], c.prologue ? " norm in" : "", c.stats ? " stats" : "",
             c.residual == SKIP_APART ? " + skip" : c.residual == SKIP_IN_Y ? " + skip in y" : "", k_splits);
    /* a b16 output is the reference rounded once more */
    const double tolerance = !y_cl ? NMSE_F32 * 100 : precision == I3_TC_BF16 ? NMSE_BF16 : NMSE_F16;
    check_nmse_tol(d->b->iface->name, what, y, ref, ny, tolerance);
    if (c.stats) /* each plane's merged moments against the reference output's */
        for (int64_t plane = 0; plane < ys.n * ys.c; plane++) {
            double count = 0, mean = 0, m2 = 0, ref_mean = 0, ref_m2 = 0;
            for (int k = 0; k < chunks; k++) {
                const float *part = partials + (plane * chunks + k) * 3;
                if (part[0] == 0) continue;
                const double total = count + part[0], delta = part[1] - mean;
                mean += delta * part[0] / total;
                m2 += part[2] + delta * delta * count * part[0] / total;
                count = total;
            }
            for (int64_t pos = 0; pos < sy; pos++) ref_mean += ref[plane * sy + pos] / (double)sy;
            for (int64_t pos = 0; pos < sy; pos++) ref_m2 += pow(ref[plane * sy + pos] - ref_mean, 2);
            cr_assert_eq(count, (double)sy, "%s: plane %lld counted %g of %lld", what, (long long)plane, count,
                         (long long)sy);
            cr_assert(fabs(mean - ref_mean) <= 1e-4 * (1 + fabs(ref_mean)) && fabs(m2 - ref_m2) <= 1e-4 * (1 + ref_m2),
                      "%s: plane %lld mean %g M2 %g, reference %g %g", what, (long long)plane, mean, m2, ref_mean,
                      ref_m2);
        }
    free(x), free(w), free(b), free(ss), free(xr), free(wr), free(ref), free(y), free(x16), free(y16), free(partials);
    free(skip), free(skip16);
}

uint64_t i3emu_kernels_run(void); /* kernels/simt.cpp: kernels run on this thread so far */

/* The weights packed once (conv_tensor_core_pack_weights) with the caller's split-K counters give what a
 * launch packing them into its scratch gives, to the bit, twice (the counters are left zero), on an 18-channel
 * NCDHW input (made channels-last by the launch) and a channels-last one, k split over 2 and 6 blocks; on
 * the channels-last input the launch is then a single kernel. */
static void check_prepacked_weights(device *d, int precision) {
    const i3_conv_params p = {.cout = 24, .k = {1, 3, 3}, .stride = {1, 1, 1}, .pad = {0, 1, 1}, .act = LEAKY};
    const struct { i3_shape5 xs; int x_layout, k_splits; } cases[] = {{{2, 18, 1, 7, 9}, I3_LAYOUT_NCDHW, 2},
                                                                      {{1, 64, 1, 9, 10}, I3_LAYOUT_NDHWC, 6}};
    const i3_act none = {I3_ACT_NONE, 0.0f};
    const int emulated = !strcmp(d->b->iface->name, "emulated");
    for (int i = 0; i < 2; i++) {
        const i3_shape5 xs = cases[i].xs, ys = i3_conv_out_shape(xs, &p);
        const int x_layout = cases[i].x_layout, x_cl = x_layout == I3_LAYOUT_NDHWC;
        cr_assert_eq(d->conv_tensor_core_k_splits(xs, x_layout, &p, precision), cases[i].k_splits);
        fx_rng r = fx_rng_seed(400 + i);
        const int64_t nx = i3_shape5_numel(xs), ny = i3_shape5_numel(ys), nw = (int64_t)p.cout * xs.c * 9;
        float *x = random_floats(&r, nx, -1, 1), *w = random_floats(&r, nw, -0.5f, 0.5f), *y[3];
        uint16_t *x16 = to_channels_last_host(x, xs.n, xs.c, i3_shape5_spatial(xs), precision);
        dbuf dx = x_cl ? dev_upload(d, (const float *)x16, (nx + 1) / 2) : dev_upload(d, x, nx), dw = dev_upload(d, w, nw);
        dbuf dpacked = dev_scratch(d, d->conv_tensor_core_packed_weights_bytes(xs, x_layout, &p, precision));
        float counters[I3_TC_SPLIT_COUNTERS] = {0};
        dbuf dcounters = dev_upload(d, counters, I3_TC_SPLIT_COUNTERS);
        cr_assert_eq(d->conv_tensor_core_pack_weights(xs, x_layout, dw.data, &p, precision, dpacked.data, NULL), 0);
        for (int run = 0; run < 3; run++) { /* run 0: packed by the launch; 1, 2: packed once, the counters reused */
            dbuf dy = dev_upload(d, NULL, ny), dscratch = dev_scratch(d, d->conv_tensor_core_scratch_bytes(xs, x_layout, &p, precision));
            const uint64_t k0 = i3emu_kernels_run();
            /* packed once: no weights to read (w NULL) */
            cr_assert_eq(d->conv_tensor_core_fused(dx.data, xs, x_layout, run ? NULL : dw.data, run ? dpacked.data : NULL,
                                                   run ? (unsigned *)dcounters.data : NULL, NULL, &p, NULL, none, dy.data,
                                                   ys, I3_LAYOUT_NCDHW, NULL, NULL, precision, dscratch.data, NULL),
                         0);
            cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
            if (emulated && run && x_cl)
                cr_assert_eq(i3emu_kernels_run() - k0, 1, "a launch on packed weights and a channels-last input: %llu "
                             "kernels", (unsigned long long)(i3emu_kernels_run() - k0));
            y[run] = malloc((size_t)ny * sizeof(float));
            dev_download_free(d, dy, y[run], "prepacked y");
            dev_download_free(d, dscratch, NULL, "prepacked scratch");
        }
        for (int run = 1; run < 3; run++)
            cr_assert(memcmp(y[0], y[run], (size_t)ny * sizeof(float)) == 0, "%s conv on %s input, run %d: the "
                      "weights packed once give other results", PRECISION_NAMES[precision],
                      x_cl ? "channels-last" : "NCDHW", run);
        dev_download_free(d, dcounters, counters, "split counters");
        for (int k = 0; k < I3_TC_SPLIT_COUNTERS; k++) cr_assert_eq(counters[k], 0.0f, "split counter %d left at %g", k, counters[k]);
        dev_download_free(d, dpacked, NULL, "prepacked weights");
        dev_download_free(d, dx, NULL, "prepacked x");
        dev_download_free(d, dw, NULL, "prepacked w");
        free(x), free(w), free(x16), free(y[0]), free(y[1]), free(y[2]);
    }
}

static void check_conv_tensor_core_layouts(device *d) {
    const i3_conv_params p333 = {.k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}};
    const i3_conv_params p133s2 = {.k = {1, 3, 3}, .stride = {1, 2, 2}, .pad = {0, 1, 1}, .act = LEAKY};
    const i3_conv_params p133 = {.k = {1, 3, 3}, .stride = {1, 1, 1}, .pad = {0, 1, 1}, .act = {I3_ACT_RELU, 0.0f}};
    const i3_conv_params p111 = {.k = {1, 1, 1}, .stride = {1, 1, 1}};
    const layout_case cases[] = {
        /* the last number: k split over that many blocks (1: not split; V3_SPLIT_*) */
        /* k = 432: a partial k step; 210 rows: a partial row tile */
        {{1, 16, 5, 6, 7}, p333, I3_LAYOUT_NDHWC, I3_LAYOUT_NDHWC, 1, 1, 4, 0},
        {{2, 8, 3, 9, 10}, p133s2, I3_LAYOUT_NDHWC, I3_LAYOUT_NCDHW, 1, 0, 1, 0},
        /* gather from NCDHW with 3 channels (k = 81), two column tiles */
        {{1, 3, 4, 5, 9}, p333, I3_LAYOUT_NCDHW, I3_LAYOUT_NDHWC, 0, 1, 1, 0},
        /* 2 samples of 128 positions: statistics with a batch; again with k split */
        {{2, 5, 4, 4, 8}, p333, I3_LAYOUT_NCDHW, I3_LAYOUT_NCDHW, 1, 1, 1, 0},
        {{2, 40, 4, 4, 8}, p333, I3_LAYOUT_NDHWC, I3_LAYOUT_NDHWC, 1, 1, 9, 0},
        /* NCDHW with 18 and 36 channels (HRNet's branches): made channels-last with 24 and 40 first (the
         * padding zero, the deferred norm applied on the way), then the cp.async path */
        {{1, 18, 3, 7, 9}, p333, I3_LAYOUT_NCDHW, I3_LAYOUT_NDHWC, 1, 1, 7, 0},
        {{2, 36, 2, 6, 10}, p133s2, I3_LAYOUT_NCDHW, I3_LAYOUT_NCDHW, 1, 0, 4, 0},
        /* few output tiles, deep k: split-K (V3_SPLIT_*). HRNet's 1/32 branch (84 rows x 144, k 1296: 41 steps
         * in 3 blocks -> 11 splits of 4), a U-Net's deepest stage with its norm's statistics (k 1728: 54 steps
         * -> 14 of 4), an 18-channel NCDHW input made channels-last first (k 24 x 9: 7 steps -> 2 of 4, the
         * last short) */
        {{2, 144, 1, 7, 6}, p133, I3_LAYOUT_NDHWC, I3_LAYOUT_NDHWC, 0, 0, 11, 0},
        {{1, 64, 4, 4, 4}, p333, I3_LAYOUT_NDHWC, I3_LAYOUT_NDHWC, 1, 1, 14, 0},
        {{1, 18, 1, 9, 10}, p133, I3_LAYOUT_NCDHW, I3_LAYOUT_NCDHW, 1, 0, 2, 0},
        /* a residual add in the epilogue (HRNet's blocks): the skip NCDHW f32 apart, or in y (channels-last or
         * NCDHW f32), with k split or not */
        {{2, 18, 1, 7, 9}, p133, I3_LAYOUT_NCDHW, I3_LAYOUT_NCDHW, 0, 0, 2, SKIP_APART},
        {{2, 18, 2, 7, 9}, p111, I3_LAYOUT_NCDHW, I3_LAYOUT_NCDHW, 0, 0, 1, SKIP_IN_Y},
        {{2, 144, 1, 7, 6}, p133, I3_LAYOUT_NDHWC, I3_LAYOUT_NDHWC, 0, 0, 11, SKIP_IN_Y},
        {{1, 16, 5, 6, 7}, p333, I3_LAYOUT_NDHWC, I3_LAYOUT_NDHWC, 1, 0, 4, SKIP_APART},
    };
    const int couts[] = {24, 40, 72, 8, 8, 16, 18, 144, 64, 18, 18, 18, 144, 24};
    for (int prec = I3_TC_F16; prec <= I3_TC_BF16; prec++)
        for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
            layout_case c = cases[i];
            c.p.cout = couts[i];
            conv_layout_case(d, c, prec, 300 + 10 * prec + i);
        }
    for (int prec = I3_TC_F16; prec <= I3_TC_BF16; prec++) check_prepacked_weights(d, prec);
    /* what the kernel refuses: channels-last with TF32 or a channel count that is not a multiple of 8,
     * statistics over a batch whose samples split a row tile, a residual with statistics */
    i3_conv_params p = p333;
    p.cout = 8;
    i3_act none = {I3_ACT_NONE, 0.0f};
    float dummy[4];
    cr_assert_neq(d->conv_tensor_core_fused(dummy, (i3_shape5){1, 8, 2, 2, 2}, I3_LAYOUT_NDHWC, dummy, NULL, NULL, NULL, &p, NULL,
                                            none, dummy, (i3_shape5){1, 8, 2, 2, 2}, I3_LAYOUT_NCDHW, NULL, NULL,
                                            I3_TC_TF32, dummy, NULL),
                  0);
    cr_assert_neq(d->conv_tensor_core_fused(dummy, (i3_shape5){1, 6, 2, 2, 2}, I3_LAYOUT_NDHWC, dummy, NULL, NULL, NULL, &p, NULL,
                                            none, dummy, (i3_shape5){1, 8, 2, 2, 2}, I3_LAYOUT_NCDHW, NULL, NULL,
                                            I3_TC_F16, dummy, NULL),
                  0);
    cr_assert_neq(d->conv_tensor_core_fused(dummy, (i3_shape5){2, 8, 2, 2, 2}, I3_LAYOUT_NCDHW, dummy, NULL, NULL, NULL, &p, NULL,
                                            none, dummy, (i3_shape5){2, 8, 2, 2, 2}, I3_LAYOUT_NCDHW, NULL, dummy,
                                            I3_TC_F16, dummy, NULL),
                  0);
    const i3_residual skip = {dummy, I3_LAYOUT_NCDHW, none};
    cr_assert_neq(d->conv_tensor_core_fused(dummy, (i3_shape5){1, 8, 2, 2, 2}, I3_LAYOUT_NCDHW, dummy, NULL, NULL, NULL, &p, NULL,
                                            none, dummy, (i3_shape5){1, 8, 2, 2, 2}, I3_LAYOUT_NCDHW, &skip, dummy,
                                            I3_TC_F16, dummy, NULL),
                  0);
}

static void conv_transpose_case(device *d, i3_shape5 xs, i3_conv_transpose_params p, int with_bias, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    i3_shape5 ys = i3_conv_transpose_out_shape(xs, &p);
    int64_t nw = xs.c * p.cout * p.k[0] * p.k[1] * p.k[2];
    float *x = random_floats(&r, i3_shape5_numel(xs), -1, 1), *w = random_floats(&r, nw, -0.5f, 0.5f);
    float *b = with_bias ? random_floats(&r, p.cout, -0.2f, 0.2f) : NULL;
    float *y = malloc((size_t)i3_shape5_numel(ys) * sizeof(float)),
          *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
    i3_cpu_conv_transpose_ref(x, xs, w, b, &p, ref);
    i3_node node = {.op = I3_OP_CONV_TRANSPOSE, .p.conv_transpose = p};
    const float *in[3] = {x, w, b};
    int64_t numel[3] = {i3_shape5_numel(xs), nw, p.cout};
    i3_shape5 shapes[3] = {xs, {xs.c, p.cout, p.k[0], p.k[1], p.k[2]}, {p.cout, 1, 1, 1, 1}};
    char what[160];
    snprintf(what, sizeof what, "conv_transpose x[%lld,%lld,%lld,%lld,%lld] k%dx%dx%d", (long long)xs.n,
             (long long)xs.c, (long long)xs.d, (long long)xs.h, (long long)xs.w, p.k[0], p.k[1], p.k[2]);
    run_node(d, node, in, numel, shapes, ys, y, 0, what);
    check_nmse(d->b->iface->name, what, y, ref, i3_shape5_numel(ys));
    free(x), free(w), free(b), free(y), free(ref);
}

static void check_conv_transpose(device *d) {
    conv_transpose_case(d, (i3_shape5){2, 3, 3, 5, 4}, (i3_conv_transpose_params){.cout = 2, .k = {2, 2, 2}}, 1, 20);
    conv_transpose_case(d, (i3_shape5){1, 4, 2, 3, 5}, (i3_conv_transpose_params){.cout = 3, .k = {1, 2, 2}}, 0, 21);
    conv_transpose_case(d, (i3_shape5){1, 2, 1, 4, 3}, (i3_conv_transpose_params){.cout = 5, .k = {1, 3, 2}}, 1, 22);
}

static void acs_case(device *d, i3_shape5 xs, i3_acs_conv_params p, int with_bias, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    i3_shape5 ys = i3_acs_conv_out_shape(xs, &p);
    int64_t nw = (int64_t)p.cout * xs.c * p.k * p.k;
    float *x = random_floats(&r, i3_shape5_numel(xs), -1, 1), *w = random_floats(&r, nw, -0.5f, 0.5f);
    float *b = with_bias ? random_floats(&r, p.cout, -0.2f, 0.2f) : NULL;
    float *y = malloc((size_t)i3_shape5_numel(ys) * sizeof(float)),
          *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
    i3_cpu_acs_conv_ref(x, xs, w, b, &p, ref);
    i3_node node = {.op = I3_OP_ACS_CONV, .p.acs = p};
    const float *in[3] = {x, w, b};
    int64_t numel[3] = {i3_shape5_numel(xs), nw, p.cout};
    i3_shape5 shapes[3] = {xs, {p.cout, xs.c, 1, p.k, p.k}, {p.cout, 1, 1, 1, 1}};
    char what[160];
    snprintf(what, sizeof what, "acs_conv x[%lld,%lld,%lld,%lld,%lld] cout %d k%d s%d p%d", (long long)xs.n,
             (long long)xs.c, (long long)xs.d, (long long)xs.h, (long long)xs.w, p.cout, p.k, p.stride, p.pad);
    run_node(d, node, in, numel, shapes, ys, y, 0, what);
    check_nmse(d->b->iface->name, what, y, ref, i3_shape5_numel(ys));
    free(x), free(w), free(b), free(y), free(ref);
}

static void check_acs_conv(device *d) {
    acs_case(d, (i3_shape5){1, 3, 5, 6, 7},
             (i3_acs_conv_params){.cout = 5, .k = 3, .stride = 1, .pad = 1, .act = LEAKY}, 1, 30);
    acs_case(d, (i3_shape5){2, 2, 7, 5, 6}, (i3_acs_conv_params){.cout = 4, .k = 3, .stride = 2, .pad = 1}, 0, 31);
    acs_case(d, (i3_shape5){1, 2, 4, 5, 3}, (i3_acs_conv_params){.cout = 7, .k = 1, .stride = 1, .pad = 0}, 1, 32);
}

static void norm_case(device *d, i3_shape5 xs, int affine, int in_place, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    int64_t n = i3_shape5_numel(xs);
    float *x = random_floats(&r, n, -3, 5);
    float *gamma = affine ? random_floats(&r, xs.c, 0.5f, 1.5f) : NULL,
          *beta = affine ? random_floats(&r, xs.c, -1, 1) : NULL;
    float *y = malloc((size_t)n * sizeof(float)), *ref = malloc((size_t)n * sizeof(float));
    i3_norm_params p = {.eps = 1e-5f, .act = LEAKY};
    i3_cpu_instance_norm(x, xs, gamma, beta, &p, ref, 1);
    i3_node node = {.op = I3_OP_INSTANCE_NORM, .p.norm = p};
    const float *in[3] = {x, gamma, beta};
    int64_t numel[3] = {n, xs.c, xs.c};
    i3_shape5 shapes[3] = {xs, {xs.c, 1, 1, 1, 1}, {xs.c, 1, 1, 1, 1}};
    char what[160];
    snprintf(what, sizeof what, "instance_norm x[%lld,%lld,%lld,%lld,%lld]%s%s", (long long)xs.n, (long long)xs.c,
             (long long)xs.d, (long long)xs.h, (long long)xs.w, affine ? " affine" : "", in_place ? " in place" : "");
    run_node(d, node, in, numel, shapes, xs, y, in_place, what);
    check_nmse(d->b->iface->name, what, y, ref, n);
    free(x), free(gamma), free(beta), free(y), free(ref);
}

static void check_instance_norm(device *d) {
    norm_case(d, (i3_shape5){2, 3, 5, 7, 9}, 1, 0, 40);
    norm_case(d, (i3_shape5){1, 2, 1, 3, 5}, 0, 0, 41);    /* fewer elements than threads */
    norm_case(d, (i3_shape5){1, 2, 11, 13, 17}, 1, 1, 42); /* several elements per thread */
}

static void check_elementwise(device *d) {
    fx_rng r = fx_rng_seed(50);
    i3_shape5 xs = {2, 3, 3, 5, 7}, bs = {2, 4, 3, 5, 7}, cs = {2, 7, 3, 5, 7};
    int64_t n = i3_shape5_numel(xs), nb = i3_shape5_numel(bs), nc = i3_shape5_numel(cs);
    float *a = random_floats(&r, n, -2, 2), *b = random_floats(&r, nb, -2, 2);
    float *y = malloc((size_t)nc * sizeof(float)), *ref = malloc((size_t)nc * sizeof(float));
    const float *in[3] = {a, b, NULL};
    int64_t numel[3] = {n, n, 0};
    i3_shape5 shapes[3] = {xs, xs, xs};

    i3_cpu_activation(a, n, LEAKY, ref, 1);
    run_node(d, (i3_node){.op = I3_OP_ACTIVATION, .p.act = LEAKY}, in, numel, shapes, xs, y, 0, "activation leaky");
    check_nmse(d->b->iface->name, "activation leaky", y, ref, n);
    i3_act relu = {I3_ACT_RELU, 0};
    i3_cpu_activation(a, n, relu, ref, 1);
    run_node(d, (i3_node){.op = I3_OP_ACTIVATION, .p.act = relu}, in, numel, shapes, xs, y, 1,
             "activation relu in place");
    check_nmse(d->b->iface->name, "activation relu in place", y, ref, n);

    i3_cpu_add(a, b, n, relu, ref, 1);
    run_node(d, (i3_node){.op = I3_OP_ADD, .p.act = relu}, in, numel, shapes, xs, y, 0, "add relu");
    check_nmse(d->b->iface->name, "add relu", y, ref, n);
    i3_act none = {I3_ACT_NONE, 0};
    i3_cpu_add(a, b, n, none, ref, 1);
    run_node(d, (i3_node){.op = I3_OP_ADD, .p.act = none}, in, numel, shapes, xs, y, 1, "add in place");
    check_nmse(d->b->iface->name, "add in place", y, ref, n);

    i3_cpu_concat(a, xs.c, b, bs.c, xs.n, i3_shape5_spatial(xs), ref);
    int64_t cat_numel[3] = {n, nb, 0};
    i3_shape5 cat_shapes[3] = {xs, bs, xs};
    run_node(d, (i3_node){.op = I3_OP_CONCAT}, in, cat_numel, cat_shapes, cs, y, 0, "concat 3+4 channels");
    check_nmse(d->b->iface->name, "concat 3+4 channels", y, ref, nc);
    free(a), free(b), free(y), free(ref);
}

/* The concat written channels-last in f16/bf16 from NCDHW f32 or channels-last inputs: exactly the CPU
 * concat rounded and transposed. */
static void concat_channels_last_case(device *d, int64_t n, int64_t ca, int64_t cb, int64_t s, int b_cl,
                                      int precision, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    const int64_t c = ca + cb, total = n * c * s;
    float *a = random_floats(&r, n * ca * s, -3, 3), *b = cb ? random_floats(&r, n * cb * s, -3, 3) : NULL;
    float *cat = malloc((size_t)total * sizeof(float));
    i3_cpu_concat(a, ca, b ? b : a, cb, n, s, cat); /* (memcpy wants a pointer even for 0 bytes) */
    uint16_t *want = to_channels_last_host(cat, n, c, s, precision), *y = malloc((size_t)(total + 1) * sizeof *y);
    uint16_t *b16 = b && b_cl ? to_channels_last_host(b, n, cb, s, precision) : NULL;
    dbuf da = dev_upload(d, a, n * ca * s);
    dbuf db = b16 ? dev_upload(d, (const float *)b16, (n * cb * s + 1) / 2) : dev_upload(d, b ? b : a, b ? n * cb * s : 1);
    dbuf dy = dev_upload(d, NULL, (total + 1) / 2);
    cr_assert_eq(d->concat_channels_last(da.data, I3_LAYOUT_NCDHW, ca, b ? db.data : NULL,
                                         b_cl ? I3_LAYOUT_NDHWC : I3_LAYOUT_NCDHW, cb, n, s, precision, dy.data, NULL),
                 0);
    cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
    dev_download_free(d, da, NULL, "concat channels-last a");
    dev_download_free(d, db, NULL, "concat channels-last b");
    dev_download_free(d, dy, y, "concat channels-last y");
    int64_t wrong = 0;
    for (int64_t i = 0; i < total; i++) wrong += y[i] != want[i];
    printf("%-8s concat channels-last %s n=%lld %lld+%lld%s channels, %lld positions: %lld values differ\n",
           d->b->iface->name, PRECISION_NAMES[precision], (long long)n, (long long)ca, (long long)cb,
           b_cl ? " (channels-last)" : "", (long long)s, (long long)wrong);
    cr_assert_eq(wrong, 0);
    free(a), free(b), free(cat), free(want), free(y), free(b16);
}

/* norm_apply written channels-last (x channels-last or NCDHW f32; skip: none, channels-last or NCDHW f32; in
 * place without skip), and without the norm the residual add of HRNet's blocks (x + skip in any layouts),
 * against the CPU on the same rounded values. */
static void norm_apply_channels_last_case(device *d, int64_t n, int64_t c, int64_t s, int x_layout, int skip_layout,
                                          int norm, int precision, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    const int64_t total = n * c * s;
    const bool x_cl = x_layout == I3_LAYOUT_NDHWC;
    float *x = random_floats(&r, total, -3, 3), *ss = random_floats(&r, 2 * n * c, -1, 1);
    float *skip = skip_layout >= 0 ? random_floats(&r, total, -2, 2) : NULL;
    uint16_t *x16 = to_channels_last_host(x, n, c, s, precision), *y16 = malloc((size_t)(total + 1) * sizeof *y16);
    uint16_t *skip16 = skip ? to_channels_last_host(skip, n, c, s, precision) : NULL;
    float *got = malloc((size_t)total * sizeof(float)), *want = malloc((size_t)total * sizeof(float));
    const i3_act relu = {I3_ACT_RELU, 0.0f};
    for (int64_t sample = 0, i = 0; sample < n; sample++)
        for (int64_t pos = 0; pos < s; pos++)
            for (int64_t ch = 0; ch < c; ch++, i++) {
                const float *plane = ss + 2 * (sample * c + ch);
                float v = x_cl ? from_b16_host(x16[i], precision) : x[(sample * c + ch) * s + pos];
                if (norm) v = i3_act_apply(LEAKY, v * plane[0] + plane[1]);
                if (skip)
                    v = i3_act_apply(relu, v + (skip_layout == I3_LAYOUT_NDHWC
                                                    ? from_b16_host(skip16[i], precision)
                                                    : skip[(sample * c + ch) * s + pos]));
                want[i] = round_operand(v, precision);
            }
    dbuf dx = x_cl ? dev_upload(d, (const float *)x16, (total + 1) / 2) : dev_upload(d, x, total);
    dbuf dss = dev_upload(d, ss, 2 * n * c);
    dbuf dskip = skip_layout == I3_LAYOUT_NDHWC ? dev_upload(d, (const float *)skip16, (total + 1) / 2)
                                                : dev_upload(d, skip ? skip : ss, skip ? total : 1);
    const bool in_place = !skip && x_cl;
    dbuf dy = in_place ? dx : dev_upload(d, NULL, (total + 1) / 2);
    cr_assert_eq(d->norm_apply_channels_last(dx.data, x_layout, n, c, s, norm ? dss.data : NULL, LEAKY,
                                             skip ? dskip.data : NULL, skip_layout, relu, dy.data, precision, NULL),
                 0);
    cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
    if (!in_place) dev_download_free(d, dx, NULL, "norm_apply channels-last x");
    dev_download_free(d, dy, y16, "norm_apply channels-last y");
    dev_download_free(d, dss, NULL, "norm_apply channels-last scale/shift");
    dev_download_free(d, dskip, NULL, "norm_apply channels-last skip");
    for (int64_t i = 0; i < total; i++) got[i] = from_b16_host(y16[i], precision);
    char what[160];
    snprintf(what, sizeof what, "%s channels-last %s n=%lld c=%lld s=%lld x %s skip %s",
             norm ? "norm_apply" : "residual add", PRECISION_NAMES[precision], (long long)n, (long long)c,
             (long long)s, x_cl ? "channels-last" : "NCDHW f32",
             !skip ? (in_place ? "none (in place)" : "none") : skip_layout == I3_LAYOUT_NDHWC ? "channels-last" : "NCDHW f32");
    /* the same rounded operands: only an FMA's rounding can differ, one unit of the format at most */
    check_nmse_tol(d->b->iface->name, what, got, want, total, precision == I3_TC_BF16 ? NMSE_BF16 : NMSE_F16);
    free(x), free(ss), free(skip), free(x16), free(y16), free(skip16), free(got), free(want);
}

/* The transposed conv with a channels-last input (v1, output NCDHW f32), or on tensor cores (output
 * channels-last; input either), against the reference on the rounded input (and, on tensor cores, weights;
 * a channels-last output rounded too). ahead > 0 (tensor cores): the output is the second part of a concat's
 * channels-last buffer, after `ahead` channels per position that must stay as they were. */
static void conv_transpose_channels_last_case(device *d, i3_shape5 xs, i3_conv_transpose_params p, int x_layout,
                                              int tensor_cores, int64_t ahead, int precision, uint64_t seed) {
    const int y_layout = tensor_cores ? I3_LAYOUT_NDHWC : I3_LAYOUT_NCDHW;
    fx_rng r = fx_rng_seed(seed);
    const i3_shape5 ys = i3_conv_transpose_out_shape(xs, &p);
    const int64_t nx = i3_shape5_numel(xs), ny = i3_shape5_numel(ys), nw = xs.c * p.cout * p.k[0] * p.k[1] * p.k[2];
    const bool x_cl = x_layout == I3_LAYOUT_NDHWC, y_cl = y_layout == I3_LAYOUT_NDHWC;
    float *x = random_floats(&r, nx, -2, 2), *w = random_floats(&r, nw, -0.5f, 0.5f), *b = random_floats(&r, p.cout, -1, 1);
    uint16_t *x16 = to_channels_last_host(x, xs.n, xs.c, i3_shape5_spatial(xs), precision);
    float *xr = malloc((size_t)nx * sizeof(float)), *wr = malloc((size_t)nw * sizeof(float));
    for (int64_t i = 0; i < nx; i++) xr[i] = x_cl || tensor_cores ? round_operand(x[i], precision) : x[i];
    for (int64_t i = 0; i < nw; i++) wr[i] = tensor_cores ? round_operand(w[i], precision) : w[i];
    const int64_t spatial = i3_shape5_spatial(ys), row = ahead + ys.c, n16 = ys.n * spatial * row;
    float *y = malloc((size_t)ny * sizeof(float)), *ref = malloc((size_t)ny * sizeof(float));
    uint16_t *y16 = malloc((size_t)(n16 + 1) * sizeof *y16);
    for (int64_t i = 0; i <= n16; i++) y16[i] = 0x5a5a; /* what the channels ahead hold */
    i3_cpu_conv_transpose_ref(xr, xs, wr, b, &p, ref);
    dbuf dx = x_cl ? dev_upload(d, (const float *)x16, (nx + 1) / 2) : dev_upload(d, x, nx);
    dbuf dw = dev_upload(d, w, nw), db = dev_upload(d, b, p.cout);
    dbuf dy = y_cl ? dev_upload(d, (const float *)y16, (n16 + 1) / 2) : dev_upload(d, NULL, ny);
    dbuf dscratch = dev_scratch(d, tensor_cores ? d->conv_transpose_tensor_core_scratch_bytes(xs, x_layout, &p, precision) : 0);
    cr_assert(tensor_cores || (x_cl && !ahead));
    cr_assert_eq(tensor_cores ? d->conv_transpose_tensor_core(dx.data, xs, x_layout, dw.data, db.data, &p,
                                                              (uint16_t *)dy.data + ahead, ys, row, precision,
                                                              dscratch.data, NULL)
                              : d->conv_transpose_channels_last(dx.data, xs, precision, dw.data, db.data, &p, dy.data,
                                                                ys, NULL),
                 0);
    cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
    dev_download_free(d, dscratch, NULL, "conv_transpose scratch");
    dev_download_free(d, dx, NULL, "conv_transpose channels-last x");
    dev_download_free(d, dw, NULL, "conv_transpose channels-last w");
    dev_download_free(d, db, NULL, "conv_transpose channels-last b");
    dev_download_free(d, dy, y_cl ? (float *)y16 : y, "conv_transpose channels-last y");
    if (y_cl) /* back to NCDHW floats; the channels ahead untouched */
        for (int64_t sample = 0, i = 0; sample < ys.n; sample++)
            for (int64_t pos = 0; pos < spatial; pos++)
                for (int64_t ch = 0; ch < row; ch++, i++) {
                    if (ch < ahead)
                        cr_assert_eq(y16[i], 0x5a5a, "conv_transpose wrote channel %lld of the %lld ahead", (long long)ch,
                                     (long long)ahead);
                    else
                        y[(sample * ys.c + ch - ahead) * spatial + pos] = from_b16_host(y16[i], precision);
                }
    char what[160];
    snprintf(what, sizeof what, "conv_transpose%s %s x[%lld,%lld,%lld,%lld,%lld] k%d%d%d -> %d, x %s, y %s, %lld ahead",
             tensor_cores ? " tensor cores" : "", PRECISION_NAMES[precision], (long long)xs.n, (long long)xs.c,
             (long long)xs.d, (long long)xs.h, (long long)xs.w, p.k[0], p.k[1], p.k[2], p.cout,
             x_cl ? "channels-last" : "NCDHW f32", y_cl ? "channels-last" : "NCDHW f32", (long long)ahead);
    /* a channels-last output is the f32 sum rounded once */
    check_nmse_tol(d->b->iface->name, what, y, ref, ny,
                   !y_cl ? NMSE_F32 : precision == I3_TC_BF16 ? NMSE_BF16 : NMSE_F16);
    free(x), free(w), free(b), free(xr), free(wr), free(x16), free(y), free(y16), free(ref);
}

/* The average pooling on a channels-last input against the reference on the rounded input. */
static void avg_pool_channels_last_case(device *d, i3_shape5 xs, i3_avg_pool_params p, int precision, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    const i3_shape5 ys = {xs.n, xs.c, xs.d / p.k[0], xs.h / p.k[1], xs.w / p.k[2]};
    const int64_t nx = i3_shape5_numel(xs), ny = i3_shape5_numel(ys);
    float *x = random_floats(&r, nx, -2, 2);
    uint16_t *x16 = to_channels_last_host(x, xs.n, xs.c, i3_shape5_spatial(xs), precision);
    for (int64_t i = 0; i < nx; i++) x[i] = round_operand(x[i], precision);
    float *y = malloc((size_t)ny * sizeof(float)), *ref = malloc((size_t)ny * sizeof(float));
    i3_cpu_avg_pool_ref(x, xs, &p, ref);
    dbuf dx = dev_upload(d, (const float *)x16, (nx + 1) / 2), dy = dev_upload(d, NULL, ny);
    cr_assert_eq(d->avg_pool_channels_last(dx.data, xs, precision, &p, dy.data, NULL), 0);
    cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
    dev_download_free(d, dx, NULL, "avg_pool channels-last x");
    dev_download_free(d, dy, y, "avg_pool channels-last y");
    char what[120];
    snprintf(what, sizeof what, "avg_pool channels-last %s x[%lld,%lld,%lld,%lld,%lld] k%d%d%d",
             PRECISION_NAMES[precision], (long long)xs.n, (long long)xs.c, (long long)xs.d, (long long)xs.h,
             (long long)xs.w, p.k[0], p.k[1], p.k[2]);
    check_nmse(d->b->iface->name, what, y, ref, ny);
    free(x), free(x16), free(y), free(ref);
}

static void check_channels_last_ops(device *d) {
    for (int prec = I3_TC_F16; prec <= I3_TC_BF16; prec++) {
        concat_channels_last_case(d, 2, 5, 11, 105, 0, prec, 40 + prec); /* partial position and channel tiles */
        concat_channels_last_case(d, 2, 8, 16, 70, 1, prec, 42 + prec);  /* the skip already channels-last */
        concat_channels_last_case(d, 1, 40, 0, 70, 0, prec, 44 + prec);  /* a plain conversion, two channel tiles */
        for (int x_layout = I3_LAYOUT_NCDHW; x_layout <= I3_LAYOUT_NDHWC; x_layout++)
            for (int skip = -1; skip <= I3_LAYOUT_NDHWC; skip++) {
                norm_apply_channels_last_case(d, 2, 24, 35, x_layout, skip, 1, prec, 46);
                if (skip >= 0) norm_apply_channels_last_case(d, 2, 24, 35, x_layout, skip, 0, prec, 47); /* add */
            }
        avg_pool_channels_last_case(d, (i3_shape5){2, 8, 3, 5, 7}, (i3_avg_pool_params){.k = {1, 2, 2}}, prec, 50);
        conv_transpose_channels_last_case(d, (i3_shape5){2, 16, 2, 3, 5},
                                          (i3_conv_transpose_params){.cout = 5, .k = {1, 2, 2}}, I3_LAYOUT_NDHWC, 0,
                                          0, prec, 48 + prec);
        /* on tensor cores: the U-Net's (8k output channels, input either layout); 2 column tiles (24 x 8 taps =
         * 192), 3 row tiles (2 x 140 input positions); a 2D upsampling; an NCDHW input of 18 channels (made
         * channels-last with 24) */
        for (int x_layout = I3_LAYOUT_NCDHW; x_layout <= I3_LAYOUT_NDHWC; x_layout++)
            conv_transpose_channels_last_case(d, (i3_shape5){2, 16, 3, 2, 5},
                                              (i3_conv_transpose_params){.cout = 8, .k = {2, 2, 2}}, x_layout, 1, 0,
                                              prec, 52 + prec);
        conv_transpose_channels_last_case(d, (i3_shape5){2, 40, 4, 5, 7},
                                          (i3_conv_transpose_params){.cout = 24, .k = {2, 2, 2}}, I3_LAYOUT_NDHWC, 1,
                                          0, prec, 54 + prec);
        conv_transpose_channels_last_case(d, (i3_shape5){1, 32, 1, 9, 11},
                                          (i3_conv_transpose_params){.cout = 16, .k = {1, 2, 2}}, I3_LAYOUT_NDHWC, 1,
                                          0, prec, 56 + prec);
        conv_transpose_channels_last_case(d, (i3_shape5){2, 24, 2, 3, 5}, /* into a concat's second part */
                                          (i3_conv_transpose_params){.cout = 16, .k = {2, 2, 2}}, I3_LAYOUT_NDHWC, 1,
                                          16, prec, 60 + prec);
        conv_transpose_channels_last_case(d, (i3_shape5){1, 18, 3, 4, 5},
                                          (i3_conv_transpose_params){.cout = 8, .k = {2, 1, 2}}, I3_LAYOUT_NCDHW, 1,
                                          0, prec, 58 + prec);
        /* a U-Net's deepest upsampling: 8 input positions, k 320 (10 steps) split over 3 blocks */
        conv_transpose_channels_last_case(d, (i3_shape5){1, 320, 2, 2, 2},
                                          (i3_conv_transpose_params){.cout = 16, .k = {2, 2, 2}}, I3_LAYOUT_NDHWC, 1,
                                          8, prec, 62 + prec);
    }
    /* what the tensor-core transposed conv refuses: tf32, output channels not a multiple of 8, a row stride
     * below the output's channels or odd, no scratch */
    const i3_conv_transpose_params up = {.cout = 8, .k = {2, 2, 2}};
    const i3_shape5 xs = {1, 8, 1, 1, 1}, ys = {1, 8, 2, 2, 2}, ys6 = {1, 6, 2, 2, 2};
    float dummy[4];
    cr_assert_neq(d->conv_transpose_tensor_core(dummy, xs, I3_LAYOUT_NDHWC, dummy, NULL, &up, dummy, ys, 8, I3_TC_TF32,
                                                dummy, NULL),
                  0);
    cr_assert_neq(d->conv_transpose_tensor_core(dummy, xs, I3_LAYOUT_NDHWC, dummy, NULL, &up, dummy, ys6, 6, I3_TC_F16,
                                                dummy, NULL),
                  0);
    for (int64_t stride = 4; stride <= 9; stride += 5) /* 4: below 8 channels; 9: odd */
        cr_assert_neq(d->conv_transpose_tensor_core(dummy, xs, I3_LAYOUT_NDHWC, dummy, NULL, &up, dummy, ys, stride,
                                                    I3_TC_F16, dummy, NULL),
                      0);
    cr_assert_neq(d->conv_transpose_tensor_core(dummy, xs, I3_LAYOUT_NDHWC, dummy, NULL, &up, dummy, ys, 8, I3_TC_F16,
                                                NULL, NULL),
                  0);
}

static void resize_case(device *d, i3_shape5 xs, int64_t od, int64_t oh, int64_t ow, int align, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    i3_resize_params p = {.out = {od, oh, ow}, .align_corners = align};
    i3_shape5 ys = {xs.n, xs.c, od, oh, ow};
    float *x = random_floats(&r, i3_shape5_numel(xs), -1, 1);
    float *y = malloc((size_t)i3_shape5_numel(ys) * sizeof(float)),
          *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
    i3_cpu_resize(x, xs, &p, ref, 1);
    const float *in[3] = {x, NULL, NULL};
    int64_t numel[3] = {i3_shape5_numel(xs), 0, 0};
    i3_shape5 shapes[3] = {xs, xs, xs};
    char what[160];
    snprintf(what, sizeof what, "resize [%lld,%lld,%lld] -> [%lld,%lld,%lld] align_corners=%d", (long long)xs.d,
             (long long)xs.h, (long long)xs.w, (long long)od, (long long)oh, (long long)ow, align);
    run_node(d, (i3_node){.op = I3_OP_RESIZE, .p.resize = p}, in, numel, shapes, ys, y, 0, what);
    check_nmse(d->b->iface->name, what, y, ref, i3_shape5_numel(ys));
    free(x), free(y), free(ref);
}

static void check_resize(device *d) {
    for (int align = 0; align < 2; align++) {
        resize_case(d, (i3_shape5){2, 2, 3, 5, 4}, 7, 9, 10, align, 60 + align); /* up, anisotropic */
        resize_case(d, (i3_shape5){1, 3, 9, 8, 11}, 4, 5, 3, align, 62 + align); /* down */
        resize_case(d, (i3_shape5){1, 2, 1, 6, 5}, 1, 13, 2, align, 64 + align); /* bilinear, to 1 and up */
    }
}

static void check_avg_pool(device *d) {
    fx_rng r = fx_rng_seed(70);
    i3_shape5 xs = {2, 3, 5, 8, 7};
    i3_avg_pool_params p = {.k = {1, 2, 2}};
    for (int pass = 0; pass < 2; pass++) {
        i3_shape5 ys = i3_avg_pool_out_shape(xs, &p);
        float *x = random_floats(&r, i3_shape5_numel(xs), -1, 1);
        float *y = malloc((size_t)i3_shape5_numel(ys) * sizeof(float)),
              *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
        i3_cpu_avg_pool_ref(x, xs, &p, ref);
        const float *in[3] = {x, NULL, NULL};
        int64_t numel[3] = {i3_shape5_numel(xs), 0, 0};
        i3_shape5 shapes[3] = {xs, xs, xs};
        char what[80];
        snprintf(what, sizeof what, "avg_pool k%dx%dx%d", p.k[0], p.k[1], p.k[2]);
        run_node(d, (i3_node){.op = I3_OP_AVG_POOL, .p.avg_pool = p}, in, numel, shapes, ys, y, 0, what);
        check_nmse(d->b->iface->name, what, y, ref, i3_shape5_numel(ys));
        free(x), free(y), free(ref);
        p = (i3_avg_pool_params){.k = {2, 2, 3}};
    }
}

static void check_softmax(device *d) {
    fx_rng r = fx_rng_seed(80);
    for (int64_t c = 1; c <= 5; c += 2) {
        int64_t n = 2, s = 3 * 5 * 7;
        i3_shape5 xs = {n, c, 3, 5, 7};
        int64_t total = n * c * s;
        float *x = random_floats(&r, total, -4, 4);
        float *probs = malloc((size_t)total * sizeof(float)), *ref = malloc((size_t)total * sizeof(float));
        float ref_h[2 * 105], ref_msp[2 * 105], h[2 * 105], msp[2 * 105];
        int32_t ref_arg[2 * 105], arg[2 * 105];
        i3_cpu_softmax_uncertainty(x, n, c, s, ref, ref_h, ref_msp, ref_arg, 1);
        const float *in[3] = {x, NULL, NULL};
        int64_t numel[3] = {total, 0, 0};
        i3_shape5 shapes[3] = {xs, xs, xs};
        char what[80];
        snprintf(what, sizeof what, "softmax C=%lld (graph op: probabilities)", (long long)c);
        run_node(d, (i3_node){.op = I3_OP_SOFTMAX}, in, numel, shapes, xs, probs, 0, what);
        check_nmse(d->b->iface->name, what, probs, ref, total);

        /* the fused form: all four outputs from one launch */
        dbuf dx = dev_upload(d, x, total), dp = dev_upload(d, NULL, total), dh = dev_upload(d, NULL, n * s),
             dm = dev_upload(d, NULL, n * s), da = dev_upload(d, NULL, n * s);
        cr_assert_eq(d->softmax_uncertainty(dx.data, n, c, s, dp.data, dh.data, dm.data, (int32_t *)da.data, NULL), 0);
        cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
        dev_download_free(d, dx, NULL, "softmax logits");
        dev_download_free(d, dp, probs, "softmax probabilities");
        dev_download_free(d, dh, h, "entropy");
        dev_download_free(d, dm, msp, "msp");
        dev_download_free(d, da, arg, "argmax");
        snprintf(what, sizeof what, "softmax_uncertainty C=%lld probabilities", (long long)c);
        check_nmse(d->b->iface->name, what, probs, ref, total);
        snprintf(what, sizeof what, "softmax_uncertainty C=%lld max probability", (long long)c);
        check_nmse(d->b->iface->name, what, msp, ref_msp, n * s);
        if (c > 1) { /* entropy is 0 for one class: nmse against zeros is the plain squared error */
            snprintf(what, sizeof what, "softmax_uncertainty C=%lld normalized entropy", (long long)c);
            check_nmse(d->b->iface->name, what, h, ref_h, n * s);
        } else {
            for (int64_t i = 0; i < n * s; i++)
                cr_assert_eq(h[i], 0.0f, "entropy of one class must be 0");
        }
        for (int64_t i = 0; i < n * s; i++)
            cr_assert_eq(arg[i], ref_arg[i], "argmax at %lld: %d, reference %d", (long long)i, arg[i], ref_arg[i]);
        free(x), free(probs), free(ref);
    }
}

/* Slice sums in double: relative error against the reference's (also double) sums below 1e-12. */
/* softmax_slices: the maps against i3_cpu_softmax_uncertainty (nmse, argmax exact), and the fused
 * per-slice sums against i3_cpu_slice_sums of the device's own maps (relative error < 1e-12: both in
 * double, only the order differs). Widths of 37 and 70 give partial 32-column bands. */
static void check_softmax_slices(device *d) {
    fx_rng r = fx_rng_seed(95);
    int64_t shapes[4][4] = {{3, 5, 7, 37}, {2, 1, 33, 2}, {1, 3, 4, 5}, {4, 2, 9, 70}};
    for (int t = 0; t < 4; t++) {
        int64_t c = shapes[t][0], nd = shapes[t][1], nh = shapes[t][2], nw = shapes[t][3], s = nd * nh * nw;
        float *x = random_floats(&r, c * s, -4, 4);
        float *ref_p = malloc((size_t)(c * s) * sizeof(float)), *ref_h = malloc((size_t)s * sizeof(float));
        float *ref_m = malloc((size_t)s * sizeof(float)), *p = malloc((size_t)(c * s) * sizeof(float));
        float *maps[3] = {malloc((size_t)s * sizeof(float)), malloc((size_t)s * sizeof(float)),
                          malloc((size_t)s * sizeof(float))};
        int32_t *ref_a = malloc((size_t)s * sizeof(int32_t)), *arg = malloc((size_t)s * sizeof(int32_t));
        i3_cpu_softmax_uncertainty(x, 1, c, s, ref_p, ref_h, ref_m, ref_a, 1);
        int64_t n_sums = 3 * (nd + nh + nw);
        size_t scratch_bytes = d->softmax_slices_scratch_bytes(nd, nh, nw);
        dbuf dx = dev_upload(d, x, c * s), dp = dev_upload(d, NULL, c * s), dh = dev_upload(d, NULL, s),
             dm = dev_upload(d, NULL, s), da = dev_upload(d, NULL, s), ds = dev_upload(d, NULL, 2 * n_sums),
             dscratch = dev_upload(d, NULL, (int64_t)(scratch_bytes / sizeof(float)));
        cr_assert_eq(d->softmax_slices(dx.data, c, nd, nh, nw, dp.data, dh.data, dm.data, (int32_t *)da.data,
                                       (double *)ds.data, dscratch.data, NULL),
                     0);
        cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
        double *sums = malloc((size_t)n_sums * sizeof(double)), *ref_s = malloc((size_t)n_sums * sizeof(double));
        dev_download_free(d, dx, NULL, "softmax_slices logits");
        dev_download_free(d, dp, p, "softmax_slices probabilities");
        dev_download_free(d, dh, maps[0], "softmax_slices entropy");
        dev_download_free(d, dm, maps[1], "softmax_slices msp");
        dev_download_free(d, da, arg, "softmax_slices argmax");
        dev_download_free(d, ds, sums, "softmax_slices sums");
        dev_download_free(d, dscratch, NULL, "softmax_slices scratch");
        char what[96];
        snprintf(what, sizeof what, "softmax_slices C=%lld [%lld,%lld,%lld] probabilities", (long long)c, (long long)nd,
                 (long long)nh, (long long)nw);
        check_nmse(d->b->iface->name, what, p, ref_p, c * s);
        snprintf(what, sizeof what, "softmax_slices C=%lld max probability", (long long)c);
        check_nmse(d->b->iface->name, what, maps[1], ref_m, s);
        if (c > 1) {
            snprintf(what, sizeof what, "softmax_slices C=%lld normalized entropy", (long long)c);
            check_nmse(d->b->iface->name, what, maps[0], ref_h, s);
        }
        for (int64_t i = 0; i < s; i++) {
            cr_assert_eq(arg[i], ref_a[i], "argmax at %lld: %d, reference %d", (long long)i, arg[i], ref_a[i]);
            maps[2][i] = (float)arg[i];
        }
        double max_rel = 0;
        for (int m = 0; m < 3; m++) {
            double *rs = ref_s + m * (nd + nh + nw);
            i3_cpu_slice_sums(maps[m], nd, nh, nw, rs, rs + nd, rs + nd + nh);
        }
        for (int64_t i = 0; i < n_sums; i++) {
            double rel = fabs(sums[i] - ref_s[i]) / fmax(fabs(ref_s[i]), 1e-300);
            max_rel = rel > max_rel || isnan(rel) ? rel : max_rel;
        }
        printf("%-8s softmax_slices C=%lld [%lld,%lld,%lld] slice sums: max rel error %.2e\n", d->b->iface->name,
               (long long)c, (long long)nd, (long long)nh, (long long)nw, max_rel);
        cr_assert_lt(max_rel, 1e-12, "slice sums of the fused softmax: relative error %g", max_rel);
        free(x), free(ref_p), free(ref_h), free(ref_m), free(p), free(ref_a), free(arg), free(sums), free(ref_s);
        for (int m = 0; m < 3; m++)
            free(maps[m]);
    }
}

/* Sliding window: tiles at nnU-Net's steps (i3_sliding_window_steps, step 0.5) over a padded volume
 * (the image is smaller than the tile along d), three mirror passes per tile (flip masks 0, 2, 7) of
 * random "network outputs", Gaussian map of i3_gaussian_importance_map; the device's fused
 * accumulate + normalize against the loops of runtime/sliding_window.c's float32 mode written out
 * here (flip back, add, divide by the passes, weight, accumulate; divide, crop). nmse < 1e-10. */
static float round_f16(float v) { return i3_f16_to_f32(i3_f32_to_f16(v)); }

/* sw_gather, sw_accumulate and sw_normalize over the tiles of a 4 x 9 x 11 volume (3 mirror passes each,
 * overlapping tiles), with float32 and with f16 sums, against the host loop's operations in its order
 * (runtime/sliding_window.c: passes summed flipped back, divided, weighted, added; f16 rounding after every
 * addition and the division); a tile outside the volume and zero passes are refused. */
static void check_sliding_window_sums(device *d, int fp16) {
    fx_rng r = fx_rng_seed(101 + fp16);
    const int64_t classes = 3, tile[3] = {4, 6, 5}, volume[3] = {4, 9, 11};
    const int masks[3] = {0, 2, 7};
    const int n_pass = 3;
    const int64_t nt = tile[0] * tile[1] * tile[2], nv = volume[0] * volume[1] * volume[2];
    int64_t steps[3][16], n_steps[3];
    for (int a = 0; a < 3; a++) n_steps[a] = i3_sliding_window_steps(volume[a], tile[a], 0.5, steps[a]);
    float *gauss = malloc((size_t)nt * sizeof(float)), *acc = calloc((size_t)(classes * nv), sizeof(float));
    float *wsum = calloc((size_t)nv, sizeof(float)), *pred = malloc((size_t)(n_pass * classes * nt) * sizeof(float));
    float *got = calloc((size_t)(classes * nv), sizeof(float)), *sum = malloc((size_t)(classes * nt) * sizeof(float));
    i3_gaussian_importance_map(tile, 3, gauss);
    /* f16 sums: two to a float of the guarded buffers, all zero bits to start */
    const int64_t acc_floats = fp16 ? (classes * nv + 1) / 2 : classes * nv, w_floats = fp16 ? (nv + 1) / 2 : nv;
    dbuf dgauss = dev_upload(d, gauss, nt), dacc = dev_upload(d, got, acc_floats), dw = dev_upload(d, got, w_floats);
    dbuf dpred = dev_upload(d, NULL, n_pass * classes * nt), dsum = dev_upload(d, NULL, classes * nt);
    int tiles = 0;
    for (int64_t i0 = 0; i0 < n_steps[0]; i0++)
        for (int64_t i1 = 0; i1 < n_steps[1]; i1++)
            for (int64_t i2 = 0; i2 < n_steps[2]; i2++, tiles++) {
                const int64_t o[3] = {steps[0][i0], steps[1][i1], steps[2][i2]};
                fx_fill(&r, pred, n_pass * classes * nt, -3, 3);
                cr_assert_eq(d->b->iface->upload(d->b, dpred.data, pred, (size_t)(n_pass * classes * nt) * 4), I3RT_OK);
                for (int m = 0; m < n_pass; m++)
                    cr_assert_eq(d->sw_gather(dpred.data + m * classes * nt, classes, tile, masks[m], m == 0, dsum.data,
                                              NULL),
                                 0);
                cr_assert_eq(d->sw_accumulate(dsum.data, classes, tile, n_pass, dgauss.data, fp16, dacc.data, dw.data,
                                              volume, o, NULL),
                             0);
                for (int64_t k = 0; k < classes; k++) /* the host loop's out += flip(out_flip), in pass order */
                    for (int64_t t = 0; t < nt; t++) {
                        const int64_t x = t % tile[2], y = t / tile[2] % tile[1], z = t / (tile[2] * tile[1]);
                        for (int m = 0; m < n_pass; m++) {
                            const int64_t fz = masks[m] & 1 ? tile[0] - 1 - z : z, fy = masks[m] & 2 ? tile[1] - 1 - y : y;
                            const int64_t fx = masks[m] & 4 ? tile[2] - 1 - x : x;
                            const float v = pred[(m * classes + k) * nt + (fz * tile[1] + fy) * tile[2] + fx];
                            sum[k * nt + t] = m == 0 ? v : sum[k * nt + t] + v;
                        }
                    }
                for (int64_t t = 0; t < nt; t++) {
                    const int64_t x = t % tile[2], y = t / tile[2] % tile[1], z = t / (tile[2] * tile[1]);
                    const int64_t v = ((z + o[0]) * volume[1] + y + o[1]) * volume[2] + x + o[2];
                    for (int64_t k = 0; k < classes; k++) {
                        const float add = sum[k * nt + t] / (float)n_pass * gauss[t];
                        acc[k * nv + v] = fp16 ? round_f16(acc[k * nv + v] + add) : acc[k * nv + v] + add;
                    }
                    wsum[v] = fp16 ? round_f16(wsum[v] + gauss[t]) : wsum[v] + gauss[t];
                }
            }
    cr_assert_eq(d->sw_normalize(dacc.data, dw.data, classes, volume, fp16, NULL), 0);
    cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
    for (int64_t i = 0; i < classes * nv; i++)
        acc[i] = fp16 ? round_f16(acc[i] / wsum[i % nv]) : acc[i] / wsum[i % nv];
    int64_t outside[3] = {1, 0, 0}, inside[3] = {0, 0, 0};
    cr_assert_neq(d->sw_accumulate(dsum.data, classes, tile, 1, dgauss.data, fp16, dacc.data, dw.data, volume, outside,
                                   NULL),
                  0, "a tile outside the volume must be refused");
    cr_assert_neq(d->sw_accumulate(dsum.data, classes, tile, 0, dgauss.data, fp16, dacc.data, dw.data, volume, inside,
                                   NULL),
                  0, "zero passes must be refused");
    float *sums = malloc((size_t)acc_floats * sizeof(float));
    dev_download_free(d, dgauss, NULL, "sliding window gauss");
    dev_download_free(d, dacc, sums, "sliding window sums");
    dev_download_free(d, dw, NULL, "sliding window weights");
    dev_download_free(d, dpred, NULL, "sliding window predictions");
    dev_download_free(d, dsum, NULL, "sliding window pass sums");
    for (int64_t i = 0; i < classes * nv; i++) {
        uint16_t h;
        memcpy(&h, (const char *)sums + 2 * i, sizeof h);
        got[i] = fp16 ? i3_f16_to_f32(h) : sums[i];
    }
    char what[128];
    snprintf(what, sizeof what, "sliding window: %d tiles x %d mirror passes, gather + accumulate + normalize, %s sums",
             tiles, n_pass, fp16 ? "f16" : "f32");
    /* f32: the same operations (a fused multiply-add here or there); f16: an addition that lands next to a
     * rounding boundary may round the other way */
    check_nmse_tol(d->b->iface->name, what, got, acc, classes * nv, fp16 ? 1e-7 : 1e-12);
    free(gauss), free(acc), free(wsum), free(pred), free(got), free(sum), free(sums);
}

static void check_sliding_window(device *d) {
    check_sliding_window_sums(d, 0);
    check_sliding_window_sums(d, 1);
}

/* sw_tile against i3_sw_tile (a copy: equal to the bit): tiles of a [2, 5, 7, 6] image inside it, over its
 * edges on every side (negative offsets: the zero padding below), wholly outside, larger than the image,
 * each with all eight flip masks. */
static void check_sw_tile(device *d) {
    fx_rng r = fx_rng_seed(102);
    const int64_t channels = 2, shape[3] = {5, 7, 6}, ns = shape[0] * shape[1] * shape[2];
    const int64_t tiles[][2][3] = {{{3, 4, 2}, {1, 2, 3}},   {{4, 6, 5}, {-2, -1, -3}}, {{4, 6, 5}, {3, 4, 4}},
                                   {{2, 3, 2}, {9, -8, 0}},  {{8, 9, 9}, {-2, -1, -1}}, {{1, 7, 6}, {4, 0, 0}}};
    float *x = random_floats(&r, channels * ns, -1, 1);
    dbuf dx = dev_upload(d, x, channels * ns);
    for (size_t c = 0; c < sizeof tiles / sizeof tiles[0]; c++)
        for (int mask = 0; mask < 8; mask++) {
            const int64_t *tile = tiles[c][0], *offset = tiles[c][1], n = channels * tile[0] * tile[1] * tile[2];
            float *ref = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
            i3_sw_tile(x, channels, shape, offset, tile, mask, ref);
            dbuf dy = dev_upload(d, NULL, n);
            cr_assert_eq(d->sw_tile(dx.data, channels, shape, offset, tile, mask, dy.data, NULL), 0);
            dev_download_free(d, dy, got, "sw_tile");
            cr_assert_eq(memcmp(got, ref, (size_t)n * sizeof(float)), 0,
                         "sw_tile: tile %lldx%lldx%lld at (%lld, %lld, %lld), flip mask %d differs from i3_sw_tile",
                         (long long)tile[0], (long long)tile[1], (long long)tile[2], (long long)offset[0],
                         (long long)offset[1], (long long)offset[2], mask);
            free(ref), free(got);
        }
    dev_download_free(d, dx, NULL, "sw_tile image");
    printf("%-8s sw_tile: 6 tiles x 8 flip masks equal to i3_sw_tile\n", d->b->iface->name);
    free(x);
}

/* ---- the sliding window's device loop (runtime/sliding_window.c) against its host loop ------------ */

/* One prediction of the small real models of weights/ (I3RT_SOURCE_DIR) at a small patch: the image is
 * random, the patch a multiple of the network's total stride (the emulator is slow). */
typedef struct {
    const char *model; /* folder in weights/, fold 0 */
    int dims;
    int64_t patch[3], shape[3];
    int n_mirror_axes; /* the first n of (0, 1, 2) */
    int fp16;          /* nnunetv2's f16 sums (I3_ACCUMULATE_FP16) */
} sw_case;

static void count_forward(void *user, int64_t done, int64_t total) {
    int64_t *count = user;
    cr_assert_eq(done, ++*count, "progress: forward %lld reported as %lld", (long long)*count, (long long)done);
}

/* Predicts c's logits on a backend; returns them (malloc'ed) with their count in *n. margin > 0: the
 * emulated device's memory is capped at what the network needs at the patch size (planned activations
 * and scratch, weights) plus `margin` bytes. */
/* i3_sliding_window_predict of c's model on random input; margin > 0 caps the emulated device at the graph's
 * needs plus margin bytes; *device_peak (may be NULL): the most device memory the context held. */
static float *sw_predict(i3rt_backend_kind backend, const sw_case *c, uint64_t seed, size_t margin, int64_t *n,
                         size_t *device_peak) {
    i3rt_context *ctx;
    i3rt_model *model;
    cr_assert_eq(i3rt_context_create(&ctx, 2, backend), I3RT_OK);
    const char *src = getenv("I3RT_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/weights/%s/fold_0.safetensors", src ? src : ".", c->model);
    cr_assert_eq(i3rt_model_load(ctx, path, &model), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3rt_model_info info;
    cr_assert_eq(i3rt_model_get_info(model, &info), I3RT_OK);
    if (margin) {
        size_t peak;
        cr_assert_eq(i3rt_model_plan(model, c->patch, &peak), I3RT_OK, "%s", i3rt_context_error(ctx));
        char limit[32];
        snprintf(limit, sizeof limit, "%zu", peak + (size_t)info.weight_bytes + margin);
        setenv("I3RT_EMULATED_DEVICE_MEMORY", limit, 1);
    }
    const int64_t ns = c->shape[0] * c->shape[1] * c->shape[2];
    fx_rng r = fx_rng_seed(seed);
    float *image = random_floats(&r, info.in_channels * ns, -2, 2);
    *n = info.num_classes * ns;
    float *logits = malloc((size_t)*n * sizeof(float));
    int64_t forwards = 0;
    i3_sliding_window_params p = {.dims = c->dims,
                                  .patch = {c->patch[0], c->patch[1], c->patch[2]},
                                  .step_size = 0.5,
                                  .n_mirror_axes = c->n_mirror_axes,
                                  .mirror_axes = {0, 1, 2},
                                  .accumulate = c->fp16 ? I3_ACCUMULATE_FP16 : I3_ACCUMULATE_FP32,
                                  .progress = count_forward,
                                  .progress_user = &forwards};
    cr_assert_eq(i3_sliding_window_predict(ctx, model, image, info.in_channels, c->shape, info.num_classes, &p, logits),
                 I3RT_OK, "%s: %s", c->model, i3rt_context_error(ctx));
    cr_assert_eq(forwards, i3_sliding_window_forwards(c->shape, &p), "%s: forwards reported", c->model);
    cr_assert_str_empty(i3rt_context_error(ctx), "%s: an error left behind", c->model);
    const char *graphs = getenv("I3RT_CUDA_GRAPHS");
    if (backend != I3RT_BACKEND_CPU && !margin && !(graphs && !strcmp(graphs, "0"))) {
        /* the tile and accumulate launches stay outside the captured forward: every forward from the third
         * on is a replay */
        i3_backend *b;
        float *in;
        const float *out;
        i3_cuda_stats stats;
        cr_assert_eq(i3_model_device_io(model, 1, c->patch, &b, &in, &out), I3RT_OK);
        i3_backend_cuda_stats(b, &stats);
        cr_assert_eq(stats.graph_replays, forwards - 2, "%s: %lld CUDA graph replays in %lld forwards", c->model,
                     (long long)stats.graph_replays, (long long)forwards);
    }
    if (device_peak) cr_assert_eq(i3rt_context_device_memory(ctx, NULL, device_peak), I3RT_OK);
    i3rt_model_free(model);
    i3rt_context_free(ctx);
    unsetenv("I3RT_EMULATED_DEVICE_MEMORY");
    free(image);
    return logits;
}

static void sw_case_vs_cpu(device *d, const sw_case *c, uint64_t seed) {
    int64_t n, n_ref;
    double t0 = i3_now_seconds();
    float *ref = sw_predict(I3RT_BACKEND_CPU, c, seed, 0, &n_ref, NULL);
    double t1 = i3_now_seconds();
    float *got = sw_predict(d->ctx.backend, c, seed, 0, &n, NULL);
    double t2 = i3_now_seconds();
    char what[200];
    snprintf(what, sizeof what, "sliding window %s %dD patch %lldx%lldx%lld image %lldx%lldx%lld, %d mirror axes "
             "vs CPU host loop (%.2f s, CPU %.2f s)", c->model, c->dims, (long long)c->patch[0], (long long)c->patch[1],
             (long long)c->patch[2], (long long)c->shape[0], (long long)c->shape[1], (long long)c->shape[2],
             c->n_mirror_axes, t2 - t1, t1 - t0);
    check_nmse(d->b->iface->name, what, got, ref, n);
    free(ref), free(got);
}

/* The device loop (i3_sliding_window_predict on a device backend, float32 sums) against the host loop on
 * the CPU backend: 2D with mirroring and tiles overlapping in both axes, 2D with an image smaller than the
 * patch (padding), 3D with mirroring over three axes and padding along d, and the anisotropic head CT
 * network (2 channels, 3 classes, in-plane mirroring). nmse < 1e-10 (f32 convolutions in another order,
 * passes averaged in another order); the progress callback is called once per forward. */
static void check_sliding_window_predict(device *d) {
    const sw_case cases[] = {{"brain_2d", 2, {1, 16, 16}, {1, 20, 27}, 2, 0},
                             {"brain_2d", 2, {1, 16, 16}, {2, 11, 20}, 0, 0},
                             {"brain_3d_fullres", 3, {16, 16, 16}, {12, 20, 16}, 3, 0},
                             {"headct_3d_fullres_aniso", 3, {4, 16, 16}, {5, 13, 22}, 2, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        sw_case_vs_cpu(d, &cases[i], 200 + i);
}

/* The fallback for volumes too large for the device: the emulated device capped at the network's needs
 * plus 32 KiB (the fusion buffers and allocation rounding fit in that), less than the 2 x 40 x 54 image's
 * volume buffers (image, Gaussian map, sums: 108 KB), so the device loop cannot allocate them and the host
 * loop runs on the same backend, without an error (its device memory peak shows it). The two loops do the
 * same float operations in the same order: on one backend their logits are equal to the bit, with float32
 * sums and with nnunetv2's f16 sums; against the CPU backend's, nmse < 1e-10 (f32 sums; the convolutions
 * sum in another order) and < 1e-6 with f16 sums (where that moves a sum across an f16 rounding boundary,
 * the f16 step, 2^-11 relative, shows). */
static void check_fallback(int fp16) {
    const sw_case c = {"brain_2d", 2, {1, 16, 16}, {2, 40, 54}, 1, fp16};
    int64_t n, n_dev, n_ref;
    size_t peak_dev, peak_host;
    float *ref = sw_predict(I3RT_BACKEND_CPU, &c, 210, 0, &n_ref, NULL);
    float *dev = sw_predict(I3RT_BACKEND_EMULATED, &c, 210, 0, &n_dev, &peak_dev);
    float *got = sw_predict(I3RT_BACKEND_EMULATED, &c, 210, 32 << 10, &n, &peak_host);
    char what[128];
    snprintf(what, sizeof what, "sliding window, %s sums, volume over the device memory: host loop vs CPU",
             fp16 ? "f16" : "f32");
    check_nmse_tol("emulated", what, got, ref, n, fp16 ? 1e-6 : 1e-10);
    printf("emulated sliding window, %s sums: device memory peak %zu bytes (device loop), %zu (host loop)\n",
           fp16 ? "f16" : "f32", peak_dev, peak_host);
    cr_expect_lt(peak_host, peak_dev, "the capped run held as much device memory as the device loop");
    cr_expect(memcmp(got, dev, (size_t)n * sizeof *got) == 0, "%s sums: the host and device loops differ",
              fp16 ? "f16" : "f32");
    free(ref), free(dev), free(got);
}

Test(emulated, sliding_window_fallback) { check_fallback(0); }
Test(emulated, sliding_window_fp16_sums) { check_fallback(1); }

static void check_slice_sums(device *d) {
    fx_rng r = fx_rng_seed(90);
    int64_t dims[2][3] = {{5, 7, 9}, {1, 33, 2}};
    for (int c = 0; c < 2; c++) {
        int64_t nd = dims[c][0], nh = dims[c][1], nw = dims[c][2], n = nd * nh * nw;
        float *x = random_floats(&r, n, 0, 1);
        double ref[3][64], got[3][64];
        i3_cpu_slice_sums(x, nd, nh, nw, ref[0], ref[1], ref[2]);
        dbuf dx = dev_upload(d, x, n), out[3];
        int64_t len[3] = {nd, nh, nw};
        for (int a = 0; a < 3; a++)
            out[a] = dev_upload(d, NULL, 2 * len[a]); /* doubles in float buffers */
        cr_assert_eq(d->slice_sums(dx.data, nd, nh, nw, (double *)out[0].data, (double *)out[1].data,
                                   (double *)out[2].data, NULL),
                     0);
        cr_assert_eq(d->b->iface->synchronize(d->b), I3RT_OK, "%s", d->ctx.error);
        dev_download_free(d, dx, NULL, "slice_sums x");
        double max_rel = 0;
        for (int a = 0; a < 3; a++) {
            dev_download_free(d, out[a], got[a], "slice_sums out");
            for (int64_t i = 0; i < len[a]; i++) {
                double rel = fabs(got[a][i] - ref[a][i]) / fabs(ref[a][i]);
                if (rel > max_rel)
                    max_rel = rel;
            }
        }
        printf("%-8s slice_sums [%lld,%lld,%lld] max rel error %.2e\n", d->b->iface->name, (long long)nd, (long long)nh,
               (long long)nw, max_rel);
        cr_assert_lt(max_rel, 1e-12, "slice sums: relative error %g", max_rel);
        free(x);
    }
}

/* ---- the HRNet-OCR and mask-attention ops (kernels/ocr.cu, kernels/mask_attention.cu) ---------- */

/* Runs `node` on inputs of the given shapes (NULL: absent) and checks its output ys against ref. */
static void op_vs_ref(device *d, i3_node node, const float *const in[3], const i3_shape5 shapes[3], i3_shape5 ys,
                      const float *ref, int in_place, const char *what) {
    int64_t numel[3] = {0, 0, 0}, n = i3_shape5_numel(ys);
    for (int i = 0; i < 3; i++)
        numel[i] = in[i] ? i3_shape5_numel(shapes[i]) : 0;
    float *y = malloc((size_t)n * sizeof(float));
    run_node(d, node, in, numel, shapes, ys, y, in_place, what);
    check_nmse(d->b->iface->name, what, y, ref, n);
    free(y);
}

static void check_slice_channels(device *d) {
    fx_rng r = fx_rng_seed(100);
    i3_shape5 xs = {2, 7, 3, 5, 4};
    float *x = random_floats(&r, i3_shape5_numel(xs), -1, 1);
    const i3_slice_params cases[3] = {{0, 3}, {3, 4}, {6, 1}};
    for (int i = 0; i < 3; i++) {
        i3_shape5 ys = xs;
        ys.c = cases[i].count;
        float *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
        i3_cpu_slice_channels(x, xs, &cases[i], ref);
        const float *in[3] = {x, NULL, NULL};
        i3_shape5 shapes[3] = {xs, xs, xs};
        char what[80];
        snprintf(what, sizeof what, "slice_channels [%d, %d) of 7", cases[i].begin, cases[i].begin + cases[i].count);
        op_vs_ref(d, (i3_node){.op = I3_OP_SLICE_CHANNELS, .p.slice = cases[i]}, in, shapes, ys, ref, 0, what);
        free(ref);
    }
    free(x);
}

/* feats [n, c, space], logits [n, classes, space] -> [n, c, classes, 1, 1]. */
static void spatial_gather_case(device *d, int64_t n, int64_t c, int64_t classes, int64_t sd, int64_t sh, int64_t sw,
                                uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    i3_shape5 fs = {n, c, sd, sh, sw}, ls = {n, classes, sd, sh, sw}, ys = {n, c, classes, 1, 1};
    const int64_t s = sd * sh * sw;
    float *feats = random_floats(&r, i3_shape5_numel(fs), -2, 2);
    float *logits = random_floats(&r, i3_shape5_numel(ls), -6, 6);
    float *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
    i3_cpu_spatial_gather_ref(feats, logits, n, c, classes, s, ref);
    const float *in[3] = {feats, logits, NULL};
    i3_shape5 shapes[3] = {fs, ls, fs};
    char what[120];
    snprintf(what, sizeof what, "spatial_gather n %lld c %lld classes %lld [%lld,%lld,%lld]", (long long)n,
             (long long)c, (long long)classes, (long long)sd, (long long)sh, (long long)sw);
    op_vs_ref(d, (i3_node){.op = I3_OP_SPATIAL_GATHER}, in, shapes, ys, ref, 0, what);
    free(feats), free(logits), free(ref);
}

static void check_spatial_gather(device *d) {
    spatial_gather_case(d, 2, 37, 3, 3, 5, 7, 110);  /* a partial channel group; fewer positions than threads */
    spatial_gather_case(d, 1, 5, 1, 1, 23, 29, 111); /* RITM's one class, 2D, several positions per thread */
}

/* q [n, ck, space], key [n, ck, classes, 1, 1], value [n, cv, classes, 1, 1] -> [n, cv, space]. */
static void object_attention_case(device *d, int64_t n, int64_t ck, int64_t cv, int64_t classes, int64_t sd,
                                  int64_t sh, int64_t sw, uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    i3_shape5 qs = {n, ck, sd, sh, sw}, ks = {n, ck, classes, 1, 1}, vs = {n, cv, classes, 1, 1},
              ys = {n, cv, sd, sh, sw};
    float *q = random_floats(&r, i3_shape5_numel(qs), -2, 2), *key = random_floats(&r, i3_shape5_numel(ks), -2, 2),
          *value = random_floats(&r, i3_shape5_numel(vs), -1, 1);
    float *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
    i3_cpu_object_attention_ref(q, key, value, n, ck, cv, classes, sd * sh * sw, ref, 1);
    const float *in[3] = {q, key, value};
    i3_shape5 shapes[3] = {qs, ks, vs};
    char what[120];
    snprintf(what, sizeof what, "object_attention n %lld ck %lld cv %lld classes %lld [%lld,%lld,%lld]", (long long)n,
             (long long)ck, (long long)cv, (long long)classes, (long long)sd, (long long)sh, (long long)sw);
    op_vs_ref(d, (i3_node){.op = I3_OP_OBJECT_ATTENTION}, in, shapes, ys, ref, 0, what);
    free(q), free(key), free(value), free(ref);
}

static void check_object_attention(device *d) {
    object_attention_case(d, 2, 11, 13, 3, 3, 5, 7, 120);
    object_attention_case(d, 1, 7, 5, 1, 1, 9, 11, 121);                  /* one class: value broadcast */
    object_attention_case(d, 1, 3, 4, I3_OCR_MAX_CLASSES, 2, 3, 5, 122); /* the most classes the op takes */
}

/* guide [n, 2, gd, gh, gw]: channel 1 marks annotated slices (z = 1 and x = gw - 2), channel 0 a mask
 * inside them: random 0/1, or soft values (soft != 0); sample 1 has no foreground (its foreground
 * average is 0 / eps). feats at `stride`, rounded up. */
static void mask_pool_case(device *d, int64_t n, int64_t c, int64_t gd, int64_t gh, int64_t gw, int stride, int soft,
                           uint64_t seed) {
    fx_rng r = fx_rng_seed(seed);
    i3_shape5 gs = {n, 2, gd, gh, gw};
    i3_shape5 fs = {n, c, i3_mask_pool_feature_len(gd, stride), i3_mask_pool_feature_len(gh, stride),
                    i3_mask_pool_feature_len(gw, stride)};
    i3_shape5 ys = i3_mask_pool_out_shape(fs);
    const int64_t sg = gd * gh * gw;
    float *feats = random_floats(&r, i3_shape5_numel(fs), -2, 2), *guide = random_floats(&r, i3_shape5_numel(gs), 0, 1);
    for (int64_t b = 0; b < n; b++)
        for (int64_t v = 0; v < sg; v++) {
            float *mask = guide + b * 2 * sg, *annotated = mask + sg;
            const int64_t z = v / (gh * gw), x = v % gw;
            annotated[v] = z == (gd > 1 ? 1 : 0) || x == gw - 2 ? 1.0f : 0.0f;
            mask[v] = b == 1 ? 0.0f : annotated[v] * (soft ? mask[v] : mask[v] > 0.5f ? 1.0f : 0.0f);
        }
    float *ref = malloc((size_t)i3_shape5_numel(ys) * sizeof(float));
    const i3_mask_pool_params p = {stride, 1e-6f};
    i3_cpu_mask_pool_ref(feats, fs, guide, gs, &p, ref);
    const float *in[3] = {feats, guide, NULL};
    i3_shape5 shapes[3] = {fs, gs, fs};
    char what[120];
    snprintf(what, sizeof what, "mask_pool n %lld c %lld guide [%lld,%lld,%lld] stride %d%s", (long long)n,
             (long long)c, (long long)gd, (long long)gh, (long long)gw, stride, soft ? " soft" : "");
    op_vs_ref(d, (i3_node){.op = I3_OP_MASK_POOL, .p.mask_pool = p}, in, shapes, ys, ref, 0, what);
    free(feats), free(guide), free(ref);
}

static void check_mask_pool(device *d) {
    mask_pool_case(d, 2, 19, 9, 10, 11, 4, 0, 130); /* the network's stride, partial channel group */
    mask_pool_case(d, 1, 5, 1, 13, 6, 4, 1, 131);   /* one slice deep */
    mask_pool_case(d, 2, 3, 5, 8, 7, 2, 1, 132);    /* another stride, soft mask */
}

static void check_channel_gate(device *d) {
    fx_rng r = fx_rng_seed(140);
    i3_shape5 xs = {2, 5, 3, 4, 7}, gs = {2, 5, 1, 1, 1};
    float *x = random_floats(&r, i3_shape5_numel(xs), -2, 2), *gate = random_floats(&r, i3_shape5_numel(gs), -3, 3);
    float *ref = malloc((size_t)i3_shape5_numel(xs) * sizeof(float));
    i3_cpu_channel_gate(x, xs, gate, ref, 1);
    const float *in[3] = {x, gate, NULL};
    i3_shape5 shapes[3] = {xs, gs, xs};
    op_vs_ref(d, (i3_node){.op = I3_OP_CHANNEL_GATE}, in, shapes, xs, ref, 0, "channel_gate");
    op_vs_ref(d, (i3_node){.op = I3_OP_CHANNEL_GATE}, in, shapes, xs, ref, 1, "channel_gate in place");
    free(x), free(gate), free(ref);
}

/* ---- a whole graph: every op in a small U-Net-like network, device vs the CPU backend ---------- */

typedef struct {
    float *data[24];
    int n;
} net_weights;

#define NET_FUSED_NODES 5

static int net_weight(i3_graph *g, net_weights *nw, fx_rng *r, const char *name, int ndim, int64_t d0, int64_t d1,
                      int64_t d2, int64_t d3, int64_t d4) {
    int64_t dims[5] = {d0, d1, d2, d3, d4}, numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= dims[i];
    float *v = random_floats(r, numel, -0.5f, 0.5f);
    if (ndim == 1 && strstr(name, "gamma"))
        fx_fill(r, v, numel, 0.5f, 1.5f);
    nw->data[nw->n++] = v;
    return i3_graph_weight(g, name, v, ndim, dims);
}

/* conv-norm-act, strided conv, transposed conv, concat, residual add, ACS conv, avg pool, resize,
 * 1x1x1 head, softmax. On the device the f32 backend fuses (NET_FUSED_NODES): stage 1's conv
 * statistics, its norm into the next conv's prologue, that conv's statistics (its norm then applied
 * in one pass: it has three readers), the decoder conv's statistics and its norm into the residual
 * add. */
static void build_net(i3_graph *g, net_weights *nw, i3_shape5 xs) {
    fx_rng r = fx_rng_seed(2024);
    i3_act leaky = LEAKY, none = {I3_ACT_NONE, 0};
    i3_norm_params norm = {.eps = 1e-5f, .act = leaky};
    int x = i3_graph_input(g, xs);
    i3_conv_params c1 = {.cout = 4, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}};
    int s1 = i3_graph_conv(g, x, net_weight(g, nw, &r, "c1.w", 5, 4, xs.c, 3, 3, 3),
                           net_weight(g, nw, &r, "c1.b", 1, 4, 0, 0, 0, 0), &c1, "stage 1 conv");
    s1 = i3_graph_instance_norm(g, s1, net_weight(g, nw, &r, "n1.gamma", 1, 4, 0, 0, 0, 0),
                                net_weight(g, nw, &r, "n1.beta", 1, 4, 0, 0, 0, 0), &norm, "stage 1 norm");
    i3_conv_params c1b = {.cout = 4, .k = {1, 3, 1}, .stride = {1, 1, 1}, .pad = {0, 1, 0}};
    s1 = i3_graph_conv(g, s1, net_weight(g, nw, &r, "c1b.w", 5, 4, 4, 1, 3, 1), -1, &c1b, "stage 1 conv b");
    s1 = i3_graph_instance_norm(g, s1, -1, -1, &norm, "stage 1 norm b");
    i3_conv_params c2 = {.cout = 6, .k = {1, 3, 3}, .stride = {1, 2, 2}, .pad = {0, 1, 1}, .act = leaky};
    int s2 = i3_graph_conv(g, s1, net_weight(g, nw, &r, "c2.w", 5, 6, 4, 1, 3, 3),
                           net_weight(g, nw, &r, "c2.b", 1, 6, 0, 0, 0, 0), &c2, "stage 2 conv");
    i3_conv_transpose_params up = {.cout = 4, .k = {1, 2, 2}};
    int u = i3_graph_conv_transpose(g, s2, net_weight(g, nw, &r, "up.w", 5, 6, 4, 1, 2, 2),
                                    net_weight(g, nw, &r, "up.b", 1, 4, 0, 0, 0, 0), &up, "upsample");
    int cat = i3_graph_concat(g, u, s1, "skip concat");
    i3_conv_params c3 = {.cout = 4, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}};
    int d = i3_graph_conv(g, cat, net_weight(g, nw, &r, "c3.w", 5, 4, 8, 3, 3, 3), -1, &c3, "decoder conv");
    i3_norm_params norm_no_act = {.eps = 1e-5f, .act = none};
    d = i3_graph_instance_norm(g, d, net_weight(g, nw, &r, "n3.gamma", 1, 4, 0, 0, 0, 0),
                               net_weight(g, nw, &r, "n3.beta", 1, 4, 0, 0, 0, 0), &norm_no_act, "decoder norm");
    d = i3_graph_add(g, d, s1, leaky, "residual");
    d = i3_graph_activation(g, d, leaky, "decoder act");
    i3_acs_conv_params acs = {.cout = 5, .k = 3, .stride = 1, .pad = 1, .act = leaky};
    d = i3_graph_acs_conv(g, d, net_weight(g, nw, &r, "acs.w", 4, 5, 4, 3, 3, 0),
                          net_weight(g, nw, &r, "acs.b", 1, 5, 0, 0, 0, 0), &acs, "acs conv");
    i3_avg_pool_params pool = {.k = {1, 2, 2}};
    d = i3_graph_avg_pool(g, d, &pool, "pool");
    i3_resize_params rs = {.out = {xs.d, 7, 9}, .align_corners = 0};
    d = i3_graph_resize(g, d, &rs, "resize");
    i3_conv_params head = {.cout = 3, .k = {1, 1, 1}, .stride = {1, 1, 1}, .pad = {0, 0, 0}};
    d = i3_graph_conv(g, d, net_weight(g, nw, &r, "head.w", 5, 3, 5, 1, 1, 1),
                      net_weight(g, nw, &r, "head.b", 1, 3, 0, 0, 0, 0), &head, "head");
    d = i3_graph_softmax(g, d, "probabilities");
    g->output = d;
}

/* A residual add after a conv whose output the planner puts where that conv reads its input: a and x (kept
 * alive to the end) die... a dies at conv b, so the add z + b may take a's buffer. The CUDA backend must then
 * not run the add in b's epilogue (b's blocks would overwrite a while others still read it). 5 channels: the
 * tensor-core conv reads a itself (no channels-last copy). */
static void build_add_over_conv_input(i3_graph *g, net_weights *nw, i3_shape5 xs) {
    fx_rng r = fx_rng_seed(2025);
    const i3_act none = {I3_ACT_NONE, 0};
    const i3_conv_params k3 = {.cout = 5, .k = {1, 3, 3}, .stride = {1, 1, 1}, .pad = {0, 1, 1}};
    const i3_conv_params k1 = {.cout = 5, .k = {1, 1, 1}, .stride = {1, 1, 1}};
    const int x = i3_graph_input(g, xs);
    const int a = i3_graph_conv(g, x, net_weight(g, nw, &r, "a.w", 5, 5, xs.c, 1, 3, 3), -1, &k3, "a");
    const int z = i3_graph_conv(g, x, net_weight(g, nw, &r, "z.w", 5, 5, xs.c, 1, 1, 1), -1, &k1, "z");
    const int b = i3_graph_conv(g, a, net_weight(g, nw, &r, "b.w", 5, 5, 5, 1, 3, 3), -1, &k3, "b");
    const int sum = i3_graph_add(g, z, b, none, "z + b");
    const int t = i3_graph_add(g, sum, z, none, "+ z");
    g->output = i3_graph_add(g, t, x, none, "+ x");
}

/* Plans, binds and runs the network `build` makes on backend b; returns the output (malloc'd) and its size. */
/* A test graph built, planned and bound on a backend, with the memory it runs in. */
typedef struct {
    i3_graph g;
    net_weights nw;
    void *arena, *scratch, *weights;
} bound_graph;

static void bind_graph(i3_backend *b, void (*build)(i3_graph *, net_weights *, i3_shape5), i3_shape5 xs,
                       bound_graph *bg) {
    memset(bg, 0, sizeof *bg);
    i3_graph_init(&bg->g, b->ctx);
    build(&bg->g, &bg->nw, xs);
    cr_assert(!bg->g.failed, "building the network: %s", b->ctx->error);
    cr_assert_eq(i3_graph_plan(&bg->g, bg->g.output, b), I3RT_OK, "%s", b->ctx->error);
    cr_assert_eq(b->iface->alloc(b, bg->g.arena_bytes, &bg->arena), I3RT_OK, "%s", b->ctx->error);
    cr_assert_eq(b->iface->alloc(b, bg->g.scratch_bytes ? bg->g.scratch_bytes : 1, &bg->scratch), I3RT_OK, "%s",
                 b->ctx->error);
    if (!b->iface->host_memory)
        cr_assert_eq(b->iface->alloc(b, i3_graph_weight_bytes(&bg->g), &bg->weights), I3RT_OK, "%s", b->ctx->error);
    cr_assert_eq(i3_graph_bind(&bg->g, b, bg->arena, bg->weights), I3RT_OK, "%s", b->ctx->error);
}

static void unbind_graph(i3_backend *b, bound_graph *bg) {
    b->iface->free(b, bg->arena);
    b->iface->free(b, bg->scratch);
    if (bg->weights) b->iface->free(b, bg->weights);
    for (int i = 0; i < bg->nw.n; i++) free(bg->nw.data[i]);
    i3_graph_free(&bg->g);
}

static float *run_graph(i3_backend *b, void (*build)(i3_graph *, net_weights *, i3_shape5), i3_shape5 xs,
                        const float *input, int64_t *out_numel) {
    bound_graph bg;
    bind_graph(b, build, xs, &bg);
    const i3_value *in = &bg.g.values[bg.g.input], *out = &bg.g.values[bg.g.output];
    cr_assert_eq(b->iface->upload(b, in->data, input, i3_value_bytes(in)), I3RT_OK, "%s", b->ctx->error);
    cr_assert_eq(i3_graph_run(&bg.g, b, bg.scratch), I3RT_OK, "%s", b->ctx->error);
    *out_numel = (int64_t)(i3_value_bytes(out) / sizeof(float));
    float *y = malloc(i3_value_bytes(out));
    cr_assert_eq(b->iface->download(b, y, out->data, i3_value_bytes(out)), I3RT_OK, "%s", b->ctx->error);
    unbind_graph(b, &bg);
    return y;
}

/* A tolerance by the graph's convolution kernel (I3RT_CUDA_CONV, read when the backend is created): f32
 * (unset or "f32"), bf16, or f16 / tf32 (10 mantissa bits both). */
static double conv_tolerance(double f32, double f16_tf32, double bf16) {
    const char *conv = getenv("I3RT_CUDA_CONV");
    return !conv || !strcmp(conv, "f32") ? f32 : !strcmp(conv, "bf16") ? bf16 : f16_tf32;
}

/* The graph `build` makes, on a random input (seed), on the device against the CPU backend: nmse <= tolerance. */
static void graph_vs_cpu(device *d, void (*build)(i3_graph *, net_weights *, i3_shape5), i3_shape5 xs, uint64_t seed,
                         double tolerance, const char *what) {
    fx_rng r = fx_rng_seed(seed);
    float *x = random_floats(&r, i3_shape5_numel(xs), -2, 2);
    i3_ctx cpu_ctx = {.n_threads = 1, .backend = I3RT_BACKEND_CPU};
    i3_backend *cpu;
    cr_assert_eq(i3_backend_cpu_create(&cpu_ctx, &cpu), I3RT_OK, "%s", cpu_ctx.error);
    int64_t n_ref, n_dev;
    float *ref = run_graph(cpu, build, xs, x, &n_ref), *y = run_graph(d->b, build, xs, x, &n_dev);
    cr_assert_eq(n_dev, n_ref);
    check_nmse_tol(d->b->iface->name, what, y, ref, n_ref, tolerance);
    i3_backend_destroy(cpu);
    free(x), free(ref), free(y);
}

static void check_network(device *d) {
    /* the tensor-core convs round their operands: nmse of f16/tf32 (bf16) rounding through 6 convs */
    const char *conv = getenv("I3RT_CUDA_CONV"), *fuse = getenv("I3RT_CUDA_FUSE");
    char what[96];
    snprintf(what, sizeof what, "network: every op, device (conv %s) vs CPU backend", conv ? conv : "f32");
    graph_vs_cpu(d, build_net, (i3_shape5){1, 2, 3, 10, 12}, 77, conv_tolerance(NMSE_F32, 1e-5, 1e-3), what);
    int64_t fused = fused_nodes(d->b);
    printf("%-8s network: %lld nodes fused away\n", d->b->iface->name, (long long)fused);
    if (!fuse || strcmp(fuse, "0"))
        cr_assert_eq(fused, NET_FUSED_NODES, "fused nodes: %lld, expected %d", (long long)fused, NET_FUSED_NODES);
}

/* A repeated forward: the small network planned and bound once, run on four inputs; each output
 * against the CPU backend's for that input. With CUDA graphs on (the default), run 2 is captured and
 * runs 3 and 4 replay it (on the emulator: the recorded launches run again), so the stats must show
 * one capture and two replays; off (I3RT_CUDA_GRAPHS=0), none. */
static void check_graph_replay(device *d) {
    i3_shape5 xs = {1, 2, 3, 10, 12};
    i3_ctx cpu_ctx = {.n_threads = 1, .backend = I3RT_BACKEND_CPU};
    i3_backend *cpu, *b = d->b;
    cr_assert_eq(i3_backend_cpu_create(&cpu_ctx, &cpu), I3RT_OK, "%s", cpu_ctx.error);
    bound_graph bg;
    bind_graph(b, build_net, xs, &bg);
    i3_graph *g = &bg.g;
    const i3_value *in = &g->values[g->input], *out = &g->values[g->output];
    /* pinned staging buffers for the copies */
    float *x, *y;
    cr_assert_eq(i3_backend_cuda_host_alloc(b, i3_value_bytes(in), (void **)&x), I3RT_OK, "%s", b->ctx->error);
    cr_assert_eq(i3_backend_cuda_host_alloc(b, i3_value_bytes(out), (void **)&y), I3RT_OK, "%s", b->ctx->error);
    i3_cuda_stats before, after;
    i3_backend_cuda_stats(b, &before);
    fx_rng r = fx_rng_seed(78);
    for (int run = 0; run < 4; run++) {
        fx_fill(&r, x, i3_shape5_numel(xs), -2, 2);
        cr_assert_eq(b->iface->upload(b, in->data, x, i3_value_bytes(in)), I3RT_OK, "%s", b->ctx->error);
        cr_assert_eq(i3_graph_run(g, b, bg.scratch), I3RT_OK, "%s", b->ctx->error);
        cr_assert_eq(b->iface->download(b, y, out->data, i3_value_bytes(out)), I3RT_OK, "%s", b->ctx->error);
        int64_t n_ref;
        float *ref = run_graph(cpu, build_net, xs, x, &n_ref);
        char what[80];
        snprintf(what, sizeof what, "network: repeated forward, run %d", run + 1);
        check_nmse(b->iface->name, what, y, ref, n_ref);
        free(ref);
    }
    i3_backend_cuda_stats(b, &after);
    const char *graphs = getenv("I3RT_CUDA_GRAPHS"), *profile = getenv("I3RT_CUDA_PROFILE");
    const int profiled = profile && strcmp(profile, "0"), on = (!graphs || strcmp(graphs, "0")) && !profiled;
    cr_assert_eq(after.profiled_nodes - before.profiled_nodes, profiled ? 4 * g->n_nodes : 0, "nodes profiled: %lld",
                 (long long)(after.profiled_nodes - before.profiled_nodes));
    printf("%-8s CUDA graphs %s: %lld captured, %lld replayed\n", b->iface->name, on ? "on" : "off",
           (long long)(after.graph_captures - before.graph_captures),
           (long long)(after.graph_replays - before.graph_replays));
    cr_assert_eq(after.graph_captures - before.graph_captures, on ? 1 : 0);
    cr_assert_eq(after.graph_replays - before.graph_replays, on ? 2 : 0);
    i3_backend_cuda_host_free(b, x);
    i3_backend_cuda_host_free(b, y);
    unbind_graph(b, &bg);
    i3_backend_destroy(cpu);
}

/* ---- real nnU-Net networks: tests/gen_unet.py's fixtures, device vs PyTorch -------------------- */

/* A real network of tests/gen_unet.py: its weights and the input/logits PyTorch saved. The fixtures
 * come from the `unet` test's generator: skipped when it has not run in this build folder yet. */
typedef struct {
    i3_weights *io, *w;
    i3_network net;
    i3_shape5 xs;
    const float *input, *expected;
    int64_t n_out;
} unet_case;

static int unet_open(device *d, const char *name, unet_case *u) {
    if (!strcmp(name, "plain_3d") && !strcmp(d->b->iface->name, "emulated")) {
        /* 16 M parameters at up to 320 channels: about 15 s of direct convolution on the emulator,
         * and the other three networks already cover every op and block kind there. */
        cr_skip("plain_3d is left to the GPU (too slow on the emulator; resenc_3d covers 3D)");
        return 0;
    }
    const char *dir = getenv("I3RT_FIXTURES");
    char weights_path[1024], io_path[1024];
    snprintf(weights_path, sizeof weights_path, "%s/unet/%s.safetensors", dir ? dir : ".", name);
    snprintf(io_path, sizeof io_path, "%s/unet/%s_io.safetensors", dir ? dir : ".", name);
    FILE *f = fopen(io_path, "rb");
    if (!f) {
        cr_skip("%s not found: run the `unet` test (tests/gen_unet.py) in this build folder first", io_path);
        return 0;
    }
    fclose(f);
    cr_assert_eq(i3_weights_open(&d->ctx, io_path, &u->io), I3RT_OK, "%s", d->ctx.error);
    cr_assert_eq(i3_weights_open(&d->ctx, weights_path, &u->w), I3RT_OK, "%s", d->ctx.error);
    const i3_weight_tensor *ti = i3_weights_find(u->io, "input"), *to = i3_weights_find(u->io, "logits");
    cr_assert(ti && to && ti->ndim == 5 && to->ndim == 5);
    cr_assert_eq(i3_weights_get_f32(&d->ctx, u->io, "input", 5, ti->shape, &u->input), I3RT_OK, "%s", d->ctx.error);
    cr_assert_eq(i3_weights_get_f32(&d->ctx, u->io, "logits", 5, to->shape, &u->expected), I3RT_OK, "%s",
                 d->ctx.error);
    cr_assert_eq(i3_network_parse(&d->ctx, u->w, &u->net), I3RT_OK, "%s", d->ctx.error);
    i3_shape5 xs = {ti->shape[0], ti->shape[1], ti->shape[2], ti->shape[3], ti->shape[4]};
    u->xs = xs;
    u->n_out = to->numel;
    return 1;
}

static void unet_close(unet_case *u) {
    i3_weights_free(u->w);
    i3_weights_free(u->io);
}

/* The network's logits (malloc'd, u->n_out floats) through the builder on backend b, the bound graph run
 * `runs` times (the device captures a CUDA graph on the second run and replays it from the third);
 * *n_nodes: the graph's. */
static float *unet_forward(i3_backend *b, unet_case *u, int runs, int *n_nodes) {
    i3_ctx *ctx = b->ctx;
    i3_graph g;
    i3_graph_init(&g, ctx);
    int output;
    cr_assert_eq(i3_network_build(ctx, &u->net, u->w, u->xs, &g, &output), I3RT_OK, "%s", ctx->error);
    cr_assert_eq(i3_graph_plan(&g, output, b), I3RT_OK, "%s", ctx->error);
    void *arena, *scratch, *weights = NULL;
    cr_assert_eq(b->iface->alloc(b, g.arena_bytes, &arena), I3RT_OK, "%s", ctx->error);
    cr_assert_eq(b->iface->alloc(b, g.scratch_bytes ? g.scratch_bytes : 1, &scratch), I3RT_OK, "%s", ctx->error);
    if (!b->iface->host_memory)
        cr_assert_eq(b->iface->alloc(b, i3_graph_weight_bytes(&g), &weights), I3RT_OK, "%s", ctx->error);
    cr_assert_eq(i3_graph_bind(&g, b, arena, weights), I3RT_OK, "%s", ctx->error);
    const i3_value *in = &g.values[g.input], *out = &g.values[output];
    for (int r = 0; r < runs; r++) { /* the input's buffer is reused once the input is dead: upload it each time */
        cr_assert_eq(b->iface->upload(b, in->data, u->input, i3_value_bytes(in)), I3RT_OK, "%s", ctx->error);
        cr_assert_eq(i3_graph_run(&g, b, scratch), I3RT_OK, "%s", ctx->error);
    }
    cr_assert_eq((int64_t)(i3_value_bytes(out) / sizeof(float)), u->n_out);
    float *y = malloc(i3_value_bytes(out));
    cr_assert_eq(b->iface->download(b, y, out->data, i3_value_bytes(out)), I3RT_OK, "%s", ctx->error);
    b->iface->free(b, arena);
    b->iface->free(b, scratch);
    if (weights)
        b->iface->free(b, weights);
    *n_nodes = g.n_nodes;
    i3_graph_free(&g);
    return y;
}

/* Runs $I3RT_FIXTURES/unet/NAME.safetensors on NAME_io.safetensors's input on the device and
 * compares with PyTorch's logits: max |device - torch| <= tolerance * max |torch| (1e-4 in f32, as
 * test_unet does on the CPU). */
static void check_unet_tol(device *d, const char *name, double tolerance) {
    unet_case u;
    if (!unet_open(d, name, &u))
        return;
    int n_nodes;
    float *y = unet_forward(d->b, &u, 1, &n_nodes);
    double max_abs = 0, max_ref = 0;
    for (int64_t i = 0; i < u.n_out; i++) {
        double err = fabs((double)y[i] - u.expected[i]);
        max_abs = err > max_abs || isnan(err) ? err : max_abs;
        max_ref = fmax(max_ref, fabs((double)u.expected[i]));
    }
    const char *conv = getenv("I3RT_CUDA_CONV");
    printf("%-8s unet %-10s conv %-4s input [%lld,%lld,%lld,%lld,%lld], %d nodes, %lld fused away, %lld outputs "
           "channels-last: max abs err %.3g, max |torch| %.3g, rel %.3g\n",
           d->b->iface->name, name, conv ? conv : "f32", (long long)u.xs.n, (long long)u.xs.c, (long long)u.xs.d,
           (long long)u.xs.h, (long long)u.xs.w, n_nodes, (long long)fused_nodes(d->b),
           (long long)channels_last_outputs(d->b), max_abs, max_ref, max_abs / max_ref);
    cr_assert(max_abs <= tolerance * max_ref, "%s: relative error %.3g > %.0e", name, max_abs / max_ref, tolerance);
    free(y);
    unet_close(&u);
}

/* The same network on the CPU backend and on the device (with its fusions): nmse < 1e-10, and the
 * device must have fused at least one node per instance norm it could (each conv-norm pair: the
 * epilogue statistics). */
static void check_unet_vs_cpu(device *d, const char *name) {
    unet_case u;
    if (!unet_open(d, name, &u))
        return;
    i3_ctx cpu_ctx = {.n_threads = 2, .backend = I3RT_BACKEND_CPU};
    i3_backend *cpu;
    cr_assert_eq(i3_backend_cpu_create(&cpu_ctx, &cpu), I3RT_OK, "%s", cpu_ctx.error);
    int n_nodes;
    int64_t fused_before = fused_nodes(d->b);
    float *ref = unet_forward(cpu, &u, 1, &n_nodes), *y = unet_forward(d->b, &u, 1, &n_nodes);
    char what[96];
    int64_t fused = fused_nodes(d->b) - fused_before;
    snprintf(what, sizeof what, "unet %s vs CPU backend (%d nodes, %lld fused away)", name, n_nodes, (long long)fused);
    /* f32 agrees up to summation order; with the graph's convs on tensor cores (I3RT_CUDA_CONV, as
     * kernels/gpu_check.sh runs this suite) the operands' rounding: seen on an H200 for plain_2d nmse
     * 2.9e-5 (f16), 1.7e-5 (tf32), 1.8e-3 (bf16). */
    check_nmse_tol(d->b->iface->name, what, y, ref, u.n_out, conv_tolerance(NMSE_F32, 1e-4, 1e-2));
    cr_assert_gt(fused, n_nodes / 4, "%s: only %lld of %d nodes fused", name, (long long)fused, n_nodes);
    i3_backend_destroy(cpu);
    free(ref), free(y);
    unet_close(&u);
}

/* Tolerance for the conv kernel I3RT_CUDA_CONV selects: 1e-4 (f32, as test_unet), 2e-2 (f16 and
 * tf32, 10 mantissa bits), 5e-2 (bf16; seen 1.4e-2). The largest error of one logit is this sensitive
 * to rounding because the deepest instance norms of these small inputs average 6 voxels: plain_2d in
 * f16 gave 7.1e-3 (emulated) and 8.3e-3 (H200), and 1.05e-2 when only the order in which
 * norm_finalize merges the statistics' partials changed. */
static void check_unet(device *d, const char *name) {
    check_unet_tol(d, name, conv_tolerance(1e-4, 2e-2, 5e-2));
}

/* ---- Slice-and-Conquer's networks: RITM HRNet-18s (2D) and the guided ACS 3D network ------------ */

/* $I3RT_FIXTURES/GROUP/FILE (a RITM-HRNet18 weight file) built at input xs and run on the device and on
 * the CPU backend, random input (the guided network's guide channels 0/1: annotated slices z = 1 and
 * x = w - 3, a random mask inside them); nmse < NMSE_HRNET. The device runs the bound graph `runs` times:
 * with 3 the last output is a CUDA graph's replay (mask_pool's scratch among its bindings). Tiny inputs:
 * the emulator is slow. Skipped until the group's generator has run in this build folder. */
static void check_ritm_vs_cpu(device *d, const char *group, const char *file, i3_shape5 xs, int guided, int runs,
                              uint64_t seed) {
    const char *dir = getenv("I3RT_FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", dir ? dir : ".", group, file);
    FILE *f = fopen(path, "rb");
    if (!f) {
        cr_skip("%s not found: run the `%s` test (tests/gen_%s.py) in this build folder first", path, group, group);
        return;
    }
    fclose(f);
    unet_case u = {.xs = xs, .n_out = xs.n * xs.d * xs.h * xs.w};
    cr_assert_eq(i3_weights_open(&d->ctx, path, &u.w), I3RT_OK, "%s", d->ctx.error);
    cr_assert_eq(i3_network_parse(&d->ctx, u.w, &u.net), I3RT_OK, "%s", d->ctx.error);
    cr_assert(u.net.cls == I3_NET_RITM_HRNET18 && u.net.hrnet.snc_guided == guided, "%s: not the expected network",
              path);
    fx_rng r = fx_rng_seed(seed);
    float *input = random_floats(&r, i3_shape5_numel(xs), 0, 1);
    const int64_t s = xs.d * xs.h * xs.w;
    if (guided) {
        float *mask = input + (xs.c - 2) * s, *annotated = mask + s;
        for (int64_t v = 0; v < s; v++) {
            annotated[v] = v / (xs.h * xs.w) == 1 || v % xs.w == xs.w - 3 ? 1.0f : 0.0f;
            mask[v] = annotated[v] * (mask[v] > 0.5f ? 1.0f : 0.0f);
        }
    }
    u.input = input;
    i3_ctx cpu_ctx = {.n_threads = 2, .backend = I3RT_BACKEND_CPU};
    i3_backend *cpu;
    cr_assert_eq(i3_backend_cpu_create(&cpu_ctx, &cpu), I3RT_OK, "%s", cpu_ctx.error);
    int n_nodes;
    i3_cuda_stats before, after;
    i3_backend_cuda_stats(d->b, &before);
    double t0 = i3_now_seconds();
    float *ref = unet_forward(cpu, &u, 1, &n_nodes);
    double t1 = i3_now_seconds();
    float *y = unet_forward(d->b, &u, runs, &n_nodes);
    double t2 = i3_now_seconds();
    i3_backend_cuda_stats(d->b, &after);
    const char *graphs = getenv("I3RT_CUDA_GRAPHS");
    const int64_t replays = (graphs && !strcmp(graphs, "0")) || runs < 3 ? 0 : runs - 2;
    cr_assert_eq(after.graph_replays - before.graph_replays, replays, "%s: CUDA graph replays", file);
    /* f16/bf16 convolutions: the tensors between them channels-last (plan_layouts; fusions on), the residual
     * adds in the convs' epilogues (no norms here: every fused node is such an add) */
    const int64_t cl = after.channels_last_outputs - before.channels_last_outputs,
                  adds = after.fused_nodes - before.fused_nodes;
    const char *conv = getenv("I3RT_CUDA_CONV"), *fuse = getenv("I3RT_CUDA_FUSE");
    if (conv && (!strcmp(conv, "f16") || !strcmp(conv, "bf16")) && !(fuse && !strcmp(fuse, "0"))) {
        cr_expect_gt(cl, 0, "%s in %s: no tensor went channels-last", file, conv);
        cr_expect_gt(adds, 0, "%s in %s: no residual add ran in a conv's epilogue", file, conv);
    }
    char what[240];
    snprintf(what, sizeof what, "%s input [%lld,%lld,%lld,%lld,%lld] vs CPU (%d nodes, %lld outputs channels-last, "
             "%lld nodes fused; %d runs %.2f s, CPU %.2f s)", file, (long long)xs.n, (long long)xs.c, (long long)xs.d,
             (long long)xs.h, (long long)xs.w, n_nodes, (long long)cl, (long long)adds, runs, t2 - t1, t1 - t0);
    check_nmse_tol(d->b->iface->name, what, y, ref, u.n_out, conv_tolerance(NMSE_HRNET, 1e-3, 1e-2));
    i3_backend_destroy(cpu);
    free(ref), free(y), free(input);
    i3_weights_free(u.w);
}

static void check_hrnet_2d(device *d) {
    check_ritm_vs_cpu(d, "snc_session", "hrnet2d.safetensors", (i3_shape5){1, 6, 1, 27, 33}, 0, 1, 150);
}

/* A batch of two, as the SnC click runs an input and its mirror. */
static void check_hrnet_2d_pair(device *d) {
    check_ritm_vs_cpu(d, "snc_session", "hrnet2d.safetensors", (i3_shape5){2, 6, 1, 27, 33}, 0, 1, 152);
}

static void check_snc_guided_3d(device *d) {
    check_ritm_vs_cpu(d, "snc_guided", "guided3d.safetensors", (i3_shape5){1, 8, 9, 11, 10}, 1, 3, 151);
}

/* ---- devices ------------------------------------------------------------------------------- */

static void open_emulated(device *d) {
    memset(d, 0, sizeof *d);
    d->ctx.n_threads = 1;
    d->ctx.backend = I3RT_BACKEND_EMULATED;
    cr_assert_eq(i3_backend_cuda_create(&d->ctx, 1, &d->b), I3RT_OK, "%s", d->ctx.error);
    d->softmax_uncertainty = i3emu_softmax_uncertainty;
    d->conv_tensor_core = i3emu_conv_tensor_core;
    d->conv_tensor_core_fused = i3emu_conv_tensor_core_fused;
    d->conv_tensor_core_stat_chunks = i3emu_conv_tensor_core_stat_chunks;
    d->conv_tensor_core_scratch_bytes = i3emu_conv_tensor_core_scratch_bytes;
    d->conv_tensor_core_k_splits = i3emu_conv_tensor_core_k_splits;
    d->conv_tensor_core_packed_weights_bytes = i3emu_conv_tensor_core_packed_weights_bytes;
    d->conv_tensor_core_pack_weights = i3emu_conv_tensor_core_pack_weights;
    d->concat_channels_last = i3emu_concat_channels_last;
    d->norm_apply_channels_last = i3emu_norm_apply_channels_last;
    d->conv_transpose_channels_last = i3emu_conv_transpose_channels_last;
    d->conv_transpose_tensor_core = i3emu_conv_transpose_tensor_core;
    d->conv_transpose_tensor_core_scratch_bytes = i3emu_conv_transpose_tensor_core_scratch_bytes;
    d->avg_pool_channels_last = i3emu_avg_pool_channels_last;
    d->slice_sums = i3emu_slice_sums;
    d->softmax_slices = i3emu_softmax_slices;
    d->softmax_slices_scratch_bytes = i3emu_softmax_slices_scratch_bytes;
    d->sw_tile = i3emu_sw_tile;
    d->sw_gather = i3emu_sw_gather;
    d->sw_accumulate = i3emu_sw_accumulate;
    d->sw_normalize = i3emu_sw_normalize;
}

static int open_gpu(device *d) {
    memset(d, 0, sizeof *d);
    d->ctx.n_threads = 1;
    d->ctx.backend = I3RT_BACKEND_CUDA;
    if (i3_backend_cuda_create(&d->ctx, 0, &d->b) != I3RT_OK) {
        cr_skip("no real GPU: %s", d->ctx.error);
        return 0;
    }
#ifdef I3RT_HAVE_CUDA
    d->softmax_uncertainty = i3gpu_softmax_uncertainty;
    d->conv_tensor_core = i3gpu_conv_tensor_core;
    d->conv_tensor_core_fused = i3gpu_conv_tensor_core_fused;
    d->conv_tensor_core_stat_chunks = i3gpu_conv_tensor_core_stat_chunks;
    d->conv_tensor_core_scratch_bytes = i3gpu_conv_tensor_core_scratch_bytes;
    d->conv_tensor_core_k_splits = i3gpu_conv_tensor_core_k_splits;
    d->conv_tensor_core_packed_weights_bytes = i3gpu_conv_tensor_core_packed_weights_bytes;
    d->conv_tensor_core_pack_weights = i3gpu_conv_tensor_core_pack_weights;
    d->concat_channels_last = i3gpu_concat_channels_last;
    d->norm_apply_channels_last = i3gpu_norm_apply_channels_last;
    d->conv_transpose_channels_last = i3gpu_conv_transpose_channels_last;
    d->conv_transpose_tensor_core = i3gpu_conv_transpose_tensor_core;
    d->conv_transpose_tensor_core_scratch_bytes = i3gpu_conv_transpose_tensor_core_scratch_bytes;
    d->avg_pool_channels_last = i3gpu_avg_pool_channels_last;
    d->slice_sums = i3gpu_slice_sums;
    d->softmax_slices = i3gpu_softmax_slices;
    d->softmax_slices_scratch_bytes = i3gpu_softmax_slices_scratch_bytes;
    d->sw_tile = i3gpu_sw_tile;
    d->sw_gather = i3gpu_sw_gather;
    d->sw_accumulate = i3gpu_sw_accumulate;
    d->sw_normalize = i3gpu_sw_normalize;
#endif
    return 1;
}

static int open_emulated_ok(device *d) {
    open_emulated(d);
    return 1;
}

static void check_unet_plain_2d(device *d) {
    check_unet(d, "plain_2d");
}
static void check_unet_plain_3d(device *d) {
    check_unet(d, "plain_3d");
}
static void check_unet_resenc_2d(device *d) {
    check_unet(d, "resenc_2d");
}
static void check_unet_resenc_3d(device *d) {
    check_unet(d, "resenc_3d");
}
static void check_unet_fused_vs_cpu(device *d) {
    check_unet_vs_cpu(d, "plain_2d");
    check_unet_vs_cpu(d, "resenc_2d");
}

/* Opens the device (or skips) and runs one check on it. */
static void on_device(int (*open)(device *), void (*check)(device *)) {
    device d;
    if (!open(&d)) return;
    check(&d);
    i3_backend_destroy(d.b);
}

/* Every check, once per device (suite `emulated` and suite `gpu`). */
#define DEVICE_TESTS(suite, open)                                                                  \
    Test(suite, conv) { on_device(open, check_conv); }                                             \
    Test(suite, conv_tensor_core) { on_device(open, check_conv_tensor_core); }                     \
    Test(suite, conv_tensor_core_layouts) { on_device(open, check_conv_tensor_core_layouts); }     \
    Test(suite, conv_transpose) { on_device(open, check_conv_transpose); }                         \
    Test(suite, acs_conv) { on_device(open, check_acs_conv); }                                     \
    Test(suite, instance_norm) { on_device(open, check_instance_norm); }                           \
    Test(suite, elementwise) { on_device(open, check_elementwise); }                               \
    Test(suite, channels_last_ops) { on_device(open, check_channels_last_ops); }                   \
    Test(suite, resize) { on_device(open, check_resize); }                                         \
    Test(suite, avg_pool) { on_device(open, check_avg_pool); }                                     \
    Test(suite, softmax_uncertainty) { on_device(open, check_softmax); }                           \
    Test(suite, slice_sums) { on_device(open, check_slice_sums); }                                 \
    Test(suite, softmax_slices) { on_device(open, check_softmax_slices); }                         \
    Test(suite, sliding_window) { on_device(open, check_sliding_window); }                         \
    Test(suite, sw_tile) { on_device(open, check_sw_tile); }                                       \
    Test(suite, sliding_window_predict) { on_device(open, check_sliding_window_predict); }         \
    Test(suite, slice_channels) { on_device(open, check_slice_channels); }                         \
    Test(suite, spatial_gather) { on_device(open, check_spatial_gather); }                         \
    Test(suite, object_attention) { on_device(open, check_object_attention); }                     \
    Test(suite, mask_pool) { on_device(open, check_mask_pool); }                                   \
    Test(suite, channel_gate) { on_device(open, check_channel_gate); }                             \
    Test(suite, network) { on_device(open, check_network); }                                       \
    Test(suite, graph_replay) { on_device(open, check_graph_replay); }                             \
    Test(suite, unet_plain_2d) { on_device(open, check_unet_plain_2d); }                           \
    Test(suite, unet_plain_3d) { on_device(open, check_unet_plain_3d); }                           \
    Test(suite, unet_resenc_2d) { on_device(open, check_unet_resenc_2d); }                         \
    Test(suite, unet_resenc_3d) { on_device(open, check_unet_resenc_3d); }                         \
    Test(suite, unet_fused_vs_cpu) { on_device(open, check_unet_fused_vs_cpu); }                   \
    Test(suite, hrnet_2d_vs_cpu) { on_device(open, check_hrnet_2d); }                              \
    Test(suite, hrnet_2d_pair_vs_cpu) { on_device(open, check_hrnet_2d_pair); }                    \
    Test(suite, snc_guided_3d_vs_cpu) { on_device(open, check_snc_guided_3d); }

// clang-format off
DEVICE_TESTS(emulated, open_emulated_ok)
DEVICE_TESTS(gpu, open_gpu)
// clang-format on

/* Every op again with the block's threads resumed last to first: a kernel with a shared-memory race
 * would give different results (kernels/simt.h). */
Test(emulated, reverse_thread_order) {
    setenv("I3RT_SIMT_ORDER", "reverse", 1);
    device d;
    open_emulated(&d);
    check_conv(&d);
    check_conv_tensor_core(&d);
    check_conv_tensor_core_layouts(&d);
    check_conv_transpose(&d);
    check_acs_conv(&d);
    check_instance_norm(&d);
    check_elementwise(&d);
    check_channels_last_ops(&d);
    check_resize(&d);
    check_avg_pool(&d);
    check_softmax(&d);
    check_slice_sums(&d);
    check_softmax_slices(&d);
    check_sliding_window(&d);
    check_sw_tile(&d);
    check_slice_channels(&d);
    check_spatial_gather(&d);
    check_object_attention(&d);
    check_mask_pool(&d);
    check_channel_gate(&d);
    check_network(&d);
    check_graph_replay(&d);
    i3_backend_destroy(d.b);
}

/* The graph's convolutions on tensor cores (I3RT_CUDA_CONV = conv: f16 / bf16 operands) through a whole
 * U-Net against PyTorch (2D: the emulated mma is slow; the 3D kernels are in conv_tensor_core), the
 * tensors between convolutions channels-last (their count asserted). */
static void check_unet_channels_last(const char *conv, const char *name) {
    setenv("I3RT_CUDA_CONV", conv, 1);
    device d;
    open_emulated(&d);
    check_unet(&d, name);
    cr_assert_gt(channels_last_outputs(d.b), 0, "%s in %s: no tensor went channels-last", name, conv);
    i3_backend_destroy(d.b);
}

/* HRNet (no norms: plain convs and residual adds write the channels-last f16 tensors) as a batch of two, as
 * the SnC click runs it, against the CPU within the f16 bound; check_ritm_vs_cpu asserts tensors went
 * channels-last. */
Test(emulated, hrnet_2d_pair_tensor_core_f16) {
    setenv("I3RT_CUDA_CONV", "f16", 1);
    device d;
    open_emulated(&d);
    check_hrnet_2d_pair(&d);
    i3_backend_destroy(d.b);
}

/* The kernels f16 forwards of the test HRNet-18s (a batch of two, as a click) launch, CUDA graphs off: 276
 * nodes, 157 convs; 56 of the 85 adds in a conv's epilogue; the first forward packs every conv's weights once
 * (a launch each), later ones pack only an NCDHW input's channels-last copy (the 18- and 36-channel branches)
 * (559 kernels per forward before d51b4d8 and the commits after it, docs/performance.md). Counted exactly, so
 * that a change in the fusions shows here. */
#define HRNET_F16_KERNELS_FIRST 503
#define HRNET_F16_KERNELS 346

Test(emulated, hrnet_f16_kernels_per_forward) {
    setenv("I3RT_CUDA_CONV", "f16", 1);
    setenv("I3RT_CUDA_GRAPHS", "0", 1);
    device d;
    open_emulated(&d);
    const char *dir = getenv("I3RT_FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/snc_session/hrnet2d.safetensors", dir ? dir : ".");
    unet_case u = {.xs = {2, 6, 1, 27, 33}, .n_out = 2 * 27 * 33};
    if (i3_weights_open(&d.ctx, path, &u.w) != I3RT_OK) {
        i3_backend_destroy(d.b);
        cr_skip("%s not found: run the `snc_session` test first", path);
    }
    cr_assert_eq(i3_network_parse(&d.ctx, u.w, &u.net), I3RT_OK, "%s", d.ctx.error);
    fx_rng r = fx_rng_seed(152);
    float *input = random_floats(&r, i3_shape5_numel(u.xs), 0, 1);
    u.input = input;
    int n_nodes;
    uint64_t kernels[2]; /* one forward; two forwards (each call builds, binds and uploads anew) */
    float *y = NULL;
    for (int runs = 1; runs <= 2; runs++) {
        free(y);
        const uint64_t before = i3emu_kernels_run();
        y = unet_forward(d.b, &u, runs, &n_nodes);
        kernels[runs - 1] = i3emu_kernels_run() - before;
    }
    const uint64_t first = kernels[0], later = kernels[1] - kernels[0];
    printf("emulated HRNet-18s f16 forward, batch of two: %d nodes, %llu kernels the first time, %llu then\n",
           n_nodes, (unsigned long long)first, (unsigned long long)later);
    cr_expect_eq(first, HRNET_F16_KERNELS_FIRST, "%llu kernels in the first forward", (unsigned long long)first);
    cr_expect_eq(later, HRNET_F16_KERNELS, "%llu kernels in the second forward", (unsigned long long)later);
    unsetenv("I3RT_CUDA_GRAPHS");
    i3_backend_destroy(d.b);
    i3_weights_free(u.w);
    free(input), free(y);
}

/* A CUDA graph captured from a forward with channels-last f16 tensors (packed weights in the scratch,
 * layouts planned at node 0) replays to the very bits of a forward run node by node. */
Test(emulated, unet_resenc_2d_f16_graph_replay) {
    setenv("I3RT_CUDA_CONV", "f16", 1);
    float *y[2];
    unet_case u;
    int n_nodes;
    for (int graphs = 0; graphs < 2; graphs++) {
        setenv("I3RT_CUDA_GRAPHS", graphs ? "1" : "0", 1);
        device d;
        open_emulated(&d);
        if (!unet_open(&d, "resenc_2d", &u)) {
            i3_backend_destroy(d.b);
            return;
        }
        y[graphs] = unet_forward(d.b, &u, graphs ? 3 : 1, &n_nodes); /* with graphs: the third run replays */
        i3_cuda_stats stats;
        i3_backend_cuda_stats(d.b, &stats);
        cr_assert_eq(stats.graph_replays, graphs ? 1 : 0);
        cr_assert_gt(stats.channels_last_outputs, 0);
        i3_backend_destroy(d.b);
        if (!graphs) unet_close(&u);
    }
    cr_assert(memcmp(y[0], y[1], (size_t)u.n_out * sizeof(float)) == 0, "the replayed forward differs");
    printf("emulated unet resenc_2d f16: the replayed CUDA graph gives the node-by-node forward's %lld logits exactly\n",
           (long long)u.n_out);
    unet_close(&u);
    free(y[0]), free(y[1]);
}

Test(emulated, unet_resenc_2d_tensor_core_f16) { check_unet_channels_last("f16", "resenc_2d"); }
Test(emulated, unet_resenc_2d_tensor_core_bf16) { check_unet_channels_last("bf16", "resenc_2d"); }
Test(emulated, unet_plain_2d_tensor_core_f16) { check_unet_channels_last("f16", "plain_2d"); }

/* The small network's fusions with the tensor-core conv (prologue in the im2col gather, statistics
 * in the mma epilogue), against the CPU backend. */
Test(emulated, network_tensor_core_f16) {
    setenv("I3RT_CUDA_CONV", "f16", 1);
    on_device(open_emulated_ok, check_network);
}

Test(emulated, network_tensor_core_tf32) {
    setenv("I3RT_CUDA_CONV", "tf32", 1);
    on_device(open_emulated_ok, check_network);
}

Test(emulated, unet_plain_2d_tensor_core_tf32) {
    setenv("I3RT_CUDA_CONV", "tf32", 1);
    device d;
    open_emulated(&d);
    check_unet(&d, "plain_2d");
    i3_backend_destroy(d.b);
}

Test(emulated, bad_conv_precision_is_a_message) {
    setenv("I3RT_CUDA_CONV", "f8", 1);
    i3_ctx ctx = {.n_threads = 1, .backend = I3RT_BACKEND_EMULATED};
    i3_backend *b = (i3_backend *)&ctx;
    cr_assert_eq(i3_backend_cuda_create(&ctx, 1, &b), I3RT_ERR_INVALID_ARGUMENT);
    cr_assert_null(b);
    cr_assert(strstr(ctx.error, "I3RT_CUDA_CONV=f8") != NULL, "message: %s", ctx.error);
}

Test(emulated, bad_options_are_a_message) {
    i3_ctx ctx = {.n_threads = 1, .backend = I3RT_BACKEND_EMULATED};
    i3_backend *b = (i3_backend *)&ctx;
    i3_cuda_options opt = {.conv = 7, .fuse = 1, .graphs = 1};
    cr_assert_eq(i3_backend_cuda_create_with(&ctx, 1, &opt, &b), I3RT_ERR_INVALID_ARGUMENT);
    cr_assert_null(b);
    cr_assert(strstr(ctx.error, "precision 7") != NULL, "message: %s", ctx.error);
}

Test(emulated, out_of_memory_is_a_message) {
    device d;
    open_emulated(&d);
    void *p = NULL;
    cr_assert_eq(d.b->iface->alloc(d.b, (size_t)1 << 45, &p), I3RT_ERR_OUT_OF_MEMORY);
    cr_assert(strstr(d.ctx.error, "out of device memory") != NULL, "message: %s", d.ctx.error);
    i3_backend_destroy(d.b);
}

Test(emulated, graph_replay_off) {
    setenv("I3RT_CUDA_GRAPHS", "0", 1);
    on_device(open_emulated_ok, check_graph_replay);
}

/* I3RT_CUDA_PROFILE: every node timed (graphs off, since the profile synchronizes), the same results. */
Test(emulated, profile) {
    setenv("I3RT_CUDA_PROFILE", "1", 1);
    on_device(open_emulated_ok, check_graph_replay);
}

/* The `unet` test's 2D U-Net (fixtures/unet/plain_2d.safetensors) on a context of the emulated device; skips
 * the test where the fixture is missing. */
static void open_plain_2d(i3rt_context **ctx, i3rt_model **model, i3rt_model_info *info) {
    const char *dir = getenv("I3RT_FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/unet/plain_2d.safetensors", dir ? dir : ".");
    FILE *f = fopen(path, "rb");
    if (!f) cr_skip("%s not found: run the `unet` test first", path);
    fclose(f);
    cr_assert_eq(i3rt_context_create(ctx, 1, I3RT_BACKEND_EMULATED), I3RT_OK);
    cr_assert_eq(i3rt_model_load(*ctx, path, model), I3RT_OK, "%s", i3rt_context_error(*ctx));
    cr_assert_eq(i3rt_model_get_info(*model, info), I3RT_OK);
}

/* A model forwarded at two input sizes in turn (an SnC session: the slice, then its zoomed crop) keeps a graph
 * for each, and the backend a CUDA graph for each: A B A B A B is two eager runs, two captures, two replays
 * (rebuilding the graph at every change of size replayed nothing), every run of a size giving the same bits. */
/* build_add_over_conv_input on the emulated device in f16: the planner gives the add the buffer of the conv's
 * input (asserted, so that the case is there); the result is the CPU's. */
Test(emulated, residual_add_over_conv_input) {
    setenv("I3RT_CUDA_CONV", "f16", 1);
    device d;
    open_emulated(&d);
    const i3_shape5 xs = {1, 5, 1, 20, 20}; /* 400 positions: four row tiles */
    i3_graph g;
    net_weights nw = {{0}, 0};
    i3_graph_init(&g, d.b->ctx);
    build_add_over_conv_input(&g, &nw, xs);
    cr_assert_eq(i3_graph_plan(&g, g.output, d.b), I3RT_OK, "%s", d.ctx.error);
    const i3_value *conv_in = &g.values[g.nodes[2].in[0]], *add_out = &g.values[g.nodes[3].out];
    cr_assert(g.nodes[2].op == I3_OP_CONV && g.nodes[3].op == I3_OP_ADD);
    cr_assert(add_out->offset < conv_in->offset + i3_value_bytes(conv_in) &&
                  conv_in->offset < add_out->offset + i3_value_bytes(add_out),
              "the planner no longer puts the add on the conv's input: the test needs another graph");
    for (int i = 0; i < nw.n; i++) free(nw.data[i]);
    i3_graph_free(&g);
    graph_vs_cpu(&d, build_add_over_conv_input, xs, 79, 1e-5, "f16 conv + add on the conv's input buffer vs CPU");
    i3_backend_destroy(d.b);
}

/* Weights packed once follow their f32 weights: re-uploaded (negated) in place, the next forward uses the new
 * ones (the packed copies and the captured graph that reads them are dropped), and the old ones again give the
 * first output to the bit. f16 on the emulated device, CUDA graphs on (runs 2 and 3 captured and replayed). */
Test(emulated, packed_weights_follow_uploads) {
    setenv("I3RT_CUDA_CONV", "f16", 1);
    device d;
    open_emulated(&d);
    i3_backend *b = d.b;
    const i3_shape5 xs = {1, 5, 1, 20, 20};
    bound_graph bg;
    bind_graph(b, build_add_over_conv_input, xs, &bg);
    i3_graph *g = &bg.g;
    const i3_value *in = &g->values[g->input], *out = &g->values[g->output];
    const int64_t n_out = (int64_t)(i3_value_bytes(out) / sizeof(float));
    fx_rng r = fx_rng_seed(80);
    float *x = random_floats(&r, i3_shape5_numel(xs), -2, 2), *y[3];
    for (int k = 0; k < 3; k++) {
        if (k > 0) { /* the weights negated, then back */
            for (int v = 0; v < g->n_values; v++) {
                if (g->values[v].kind != I3_VALUE_WEIGHT) continue;
                float *h = (float *)g->values[v].host; /* bg.nw's arrays */
                for (size_t j = 0; j < i3_value_bytes(&g->values[v]) / sizeof(float); j++) h[j] = -h[j];
            }
            cr_assert_eq(i3_graph_upload_weights(g, b), I3RT_OK, "%s", b->ctx->error);
        }
        y[k] = malloc((size_t)n_out * sizeof(float));
        for (int run = 0; run < 3; run++) {
            cr_assert_eq(b->iface->upload(b, in->data, x, i3_value_bytes(in)), I3RT_OK, "%s", b->ctx->error);
            cr_assert_eq(i3_graph_run(g, b, bg.scratch), I3RT_OK, "%s", b->ctx->error);
        }
        cr_assert_eq(b->iface->download(b, y[k], out->data, (size_t)n_out * sizeof(float)), I3RT_OK, "%s",
                     b->ctx->error);
    }
    cr_assert(memcmp(y[0], y[1], (size_t)n_out * sizeof(float)) != 0, "negated weights gave the same output");
    cr_assert(memcmp(y[0], y[2], (size_t)n_out * sizeof(float)) == 0, "the weights back gave another output");
    i3_cuda_stats stats;
    i3_backend_cuda_stats(b, &stats);
    printf("emulated f16: weights re-uploaded twice, %lld captures, %lld replays, outputs as expected\n",
           (long long)stats.graph_captures, (long long)stats.graph_replays);
    cr_assert_eq(stats.graph_captures, 3);
    unbind_graph(b, &bg);
    i3_backend_destroy(b);
    free(x), free(y[0]), free(y[1]), free(y[2]);
}

Test(emulated, model_alternating_sizes_replay) {
    i3rt_context *ctx;
    i3rt_model *model;
    i3rt_model_info info;
    open_plain_2d(&ctx, &model, &info);
    const int64_t sizes[2][3] = {{1, 2 * info.total_stride[1], 2 * info.total_stride[2]},
                                 {1, info.total_stride[1], 3 * info.total_stride[2]}};
    float *x[2], *first[2], *y = NULL;
    int64_t n_out[2];
    fx_rng r = fx_rng_seed(91);
    for (int k = 0; k < 2; k++) {
        const int64_t s = sizes[k][1] * sizes[k][2];
        x[k] = random_floats(&r, info.in_channels * s, -2, 2);
        n_out[k] = info.num_classes * s;
        first[k] = malloc((size_t)n_out[k] * sizeof(float));
    }
    y = malloc((size_t)(n_out[0] > n_out[1] ? n_out[0] : n_out[1]) * sizeof(float));
    for (int run = 0; run < 6; run++) {
        const int k = run % 2;
        float *out = run < 2 ? first[k] : y;
        cr_assert_eq(i3rt_model_forward(model, x[k], sizes[k], out), I3RT_OK, "%s", i3rt_context_error(ctx));
        if (run >= 2)
            cr_assert(memcmp(y, first[k], (size_t)n_out[k] * sizeof(float)) == 0,
                      "run %d (%lld x %lld) differs from the first at that size", run + 1, (long long)sizes[k][1],
                      (long long)sizes[k][2]);
    }
    const char *graphs = getenv("I3RT_CUDA_GRAPHS");
    const int on = !(graphs && !strcmp(graphs, "0"));
    i3_backend *b;
    float *in;
    const float *out;
    i3_cuda_stats stats;
    cr_assert_eq(i3_model_device_io(model, 1, sizes[0], &b, &in, &out), I3RT_OK);
    i3_backend_cuda_stats(b, &stats);
    printf("emulated plain_2d at %lldx%lld and %lldx%lld in turn, 6 forwards: %lld captured, %lld replayed\n",
           (long long)sizes[0][1], (long long)sizes[0][2], (long long)sizes[1][1], (long long)sizes[1][2],
           (long long)stats.graph_captures, (long long)stats.graph_replays);
    cr_assert_eq(stats.graph_captures, on ? 2 : 0);
    cr_assert_eq(stats.graph_replays, on ? 2 : 0);
    for (int k = 0; k < 2; k++) free(x[k]), free(first[k]);
    free(y);
    i3rt_model_free(model);
    i3rt_context_free(ctx);
}

/* Running out of device memory is I3RT_ERR_OUT_OF_MEMORY with a message, never a crash: the
 * emulated device capped by I3RT_EMULATED_DEVICE_MEMORY; directly through the backend, then through
 * the public API (the weights fit, the forward's activations do not); and the context's count of its
 * device memory (i3rt_context_device_memory). */
Test(emulated, out_of_memory_under_a_cap) {
    setenv("I3RT_EMULATED_DEVICE_MEMORY", "1M", 1);
    device d;
    open_emulated(&d);
    void *a = NULL, *b = NULL;
    cr_assert_eq(d.b->iface->alloc(d.b, 700 << 10, &a), I3RT_OK, "%s", d.ctx.error);
    cr_assert_eq(d.b->iface->alloc(d.b, 700 << 10, &b), I3RT_ERR_OUT_OF_MEMORY);
    cr_assert_null(b);
    cr_assert(strstr(d.ctx.error, "out of device memory") && strstr(d.ctx.error, "in use"), "message: %s", d.ctx.error);
    printf("emulated capped at 1 MiB: %s\n", d.ctx.error);
    d.b->iface->free(d.b, a);
    cr_assert_eq(d.b->iface->alloc(d.b, 700 << 10, &b), I3RT_OK, "%s", d.ctx.error);
    d.b->iface->free(d.b, b);
    i3_backend_destroy(d.b);

    setenv("I3RT_EMULATED_DEVICE_MEMORY", "16G", 1);
    i3rt_context *ctx;
    i3rt_model *model;
    i3rt_model_info info;
    open_plain_2d(&ctx, &model, &info);
    int64_t spatial[3] = {1, 64, 64};
    size_t peak;
    cr_assert_eq(i3rt_model_plan(model, spatial, &peak), I3RT_OK, "%s", i3rt_context_error(ctx));
    char cap[32];
    snprintf(cap, sizeof cap, "%zu", info.weight_bytes + peak / 2);
    setenv("I3RT_EMULATED_DEVICE_MEMORY", cap, 1);
    int64_t n_in = info.in_channels * spatial[1] * spatial[2], n_out = info.num_classes * spatial[1] * spatial[2];
    float *x = calloc((size_t)n_in, sizeof(float)), *y = calloc((size_t)n_out, sizeof(float));
    cr_assert_eq(i3rt_model_forward(model, x, spatial, y), I3RT_ERR_OUT_OF_MEMORY, "%s", i3rt_context_error(ctx));
    printf("emulated forward under a %s-byte cap: %s\n", cap, i3rt_context_error(ctx));
    cr_assert(strstr(i3rt_context_error(ctx), "out of device memory"), "message: %s", i3rt_context_error(ctx));
    setenv("I3RT_EMULATED_DEVICE_MEMORY", "16G", 1);
    cr_assert_eq(i3rt_model_forward(model, x, spatial, y), I3RT_OK, "after the cap: %s", i3rt_context_error(ctx));
    /* the context's device memory: the weights and the planned activations and scratch at least, all of it
     * given back with the model */
    size_t in_use, device_peak;
    cr_assert_eq(i3rt_context_device_memory(ctx, &in_use, &device_peak), I3RT_OK);
    printf("emulated device memory: %zu bytes in use, peak %zu (weights %zu + planned %zu)\n", in_use, device_peak,
           (size_t)info.weight_bytes, peak);
    cr_assert_geq(device_peak, info.weight_bytes + peak);
    cr_assert_geq(in_use, info.weight_bytes);
    free(x), free(y);
    i3rt_model_free(model);
    cr_assert_eq(i3rt_context_device_memory(ctx, &in_use, NULL), I3RT_OK);
    cr_assert_eq(in_use, 0, "%zu bytes still counted after the model's end", in_use);
    i3rt_context_free(ctx);
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    cr_assert_eq(i3rt_context_device_memory(ctx, &in_use, &device_peak), I3RT_OK);
    cr_assert(in_use == 0 && device_peak == 0, "cpu context: %zu, %zu", in_use, device_peak);
    i3rt_context_free(ctx);
}
