/* Timings of the CUDA kernels and of a whole forward on the device, for kernels/gpu_check.sh (which
 * runs bench/gpu_torch.py on the same shapes in the same run and bench/gpu_report.py to compare).
 *
 *   gpu_bench ops [--emulated] [--quick] [--runs R]
 *   gpu_bench forward MODEL D H W [--emulated] [--runs R]
 *
 * ops: nnU-Net 3d_fullres stage shapes for a 128^3 patch (PlainConvUNet: features 32..320, spatial
 * 128 / 2^s, batch 1): the 3x3x3 convolution on every kernel (f32 direct v2, tensor cores f16/bf16/tf32),
 * a whole encoder stage (conv-norm-act twice) through the backend with and without the fusions,
 * instance norm, softmax + uncertainty maps with their per-slice sums (C = 3, 512 x 512 x 128) next to
 * the unfused softmax + slice sums, the sliding-window accumulation (3 classes, 128^3 tile into
 * 256^3), and Slice-and-Conquer's HRNet ops at the guided 3D network's shapes for a 64 x 128 x 128 volume
 * (features 270 x 16 x 32 x 32: OCR spatial gather and object attention at 128 / 64 channels and one
 * class, mask pooling with the 2 x 64 x 128 x 128 guide, channel gate in place). --quick: tiny shapes (a
 * smoke test, e.g. on the emulated device). forward: the public API's forward on the device, conv
 * precision from I3RT_CUDA_CONV. One JSON object per line on stdout:
 * {"bench": ..., "name": ..., "ms": median, "flop" | "bytes": ..., plus the shape}. Timing: one
 * warm-up, then R runs, each synchronized, wall clock (the GPU is otherwise idle). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cuda_backend.h"
#include "i3rt.h"

#include "launchers_both.h" /* kernels/: i3emu_* and, with CUDA, i3gpu_* */

typedef struct {
    int (*conv)(const float *, i3_shape5, const float *, const float *, const i3_conv_params *, float *, i3_shape5,
                void *);
    int (*conv_tc)(const float *, i3_shape5, const float *, const float *, const i3_conv_params *, float *, i3_shape5,
                   int, void *, void *);
    int (*conv_tc_fused)(const void *, i3_shape5, int, const float *, const void *, unsigned *, const float *,
                         const i3_conv_params *,
                         const float *, i3_act, void *, i3_shape5, int, const i3_residual *, float *, int, void *,
                         void *);
    size_t (*conv_tc_scratch_bytes)(i3_shape5, int, const i3_conv_params *, int);
    int (*conv_tc_stat_chunks)(i3_shape5, int);
    int (*instance_norm)(const float *, i3_shape5, const float *, const float *, const i3_norm_params *, float *,
                         void *);
    int (*softmax_uncertainty)(const float *, int64_t, int64_t, int64_t, float *, float *, float *, int32_t *, void *);
    int (*slice_sums)(const float *, int64_t, int64_t, int64_t, double *, double *, double *, void *);
    int (*softmax_slices)(const float *, int64_t, int64_t, int64_t, int64_t, float *, float *, float *, int32_t *,
                          double *, void *, void *);
    size_t (*softmax_slices_scratch_bytes)(int64_t, int64_t, int64_t);
    int (*sw_accumulate)(const float *, int64_t, const int64_t *, int, const float *, int, void *, void *,
                         const int64_t *, const int64_t *, void *);
    int (*spatial_gather)(const float *, const float *, int64_t, int64_t, int64_t, int64_t, float *, void *);
    int (*object_attention)(const float *, const float *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t,
                            float *, void *);
    size_t (*mask_pool_scratch_bytes)(i3_shape5);
    int (*mask_pool)(const float *, i3_shape5, const float *, i3_shape5, const i3_mask_pool_params *, float *, void *,
                     void *);
    int (*channel_gate)(const float *, i3_shape5, const float *, float *, void *);
} launchers;

typedef struct {
    i3_ctx ctx;
    i3_backend *b;
    launchers k;
    void *stream; /* the backend's stream: the launches below go there, so its synchronize waits for them */
    int runs;
} bench;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(bench *B, const char *what) {
    fprintf(stderr, "gpu_bench: %s: %s\n", what, B->ctx.error[0] ? B->ctx.error : "launch failed");
    exit(1);
}

/* A device buffer of n floats filled with uniform noise in [-1, 1). */
static float *device_noise(bench *B, int64_t n, uint32_t seed) {
    float *host = malloc((size_t)n * sizeof(float)), *dev;
    if (!host) die(B, "host memory");
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        host[i] = (float)(seed >> 8) / (float)(1u << 23) - 1.0f;
    }
    if (B->b->iface->alloc(B->b, (size_t)n * sizeof(float), (void **)&dev) != I3RT_OK ||
        B->b->iface->upload(B->b, dev, host, (size_t)n * sizeof(float)) != I3RT_OK)
        die(B, "device buffer");
    free(host);
    return dev;
}

/* Median milliseconds of run(B, arg) over B->runs synchronized runs after one warm-up. */
typedef int (*bench_fn)(bench *B, void *arg);
static double time_median(bench *B, bench_fn run, void *arg, const char *what) {
    double *t = malloc((size_t)B->runs * sizeof(double));
    for (int r = -1; r < B->runs; r++) {
        double t0 = now_ms();
        if (run(B, arg) != 0 || B->b->iface->synchronize(B->b) != I3RT_OK) die(B, what);
        if (r >= 0) t[r] = now_ms() - t0;
    }
    qsort(t, (size_t)B->runs, sizeof *t, compare_doubles);
    double median = B->runs % 2 ? t[B->runs / 2] : 0.5 * (t[B->runs / 2 - 1] + t[B->runs / 2]);
    free(t);
    return median;
}

/* ---- convolution ----------------------------------------------------------------------------- */

typedef struct {
    const float *x, *w;
    float *y;
    void *scratch; /* the tensor-core kernels' packed weights */
    i3_shape5 xs, ys;
    i3_conv_params p;
    int kernel; /* -1: f32 direct (conv.cu), else I3_TC_*; CHANNELS_LAST + I3_TC_F16 / I3_TC_BF16: both NDHWC */
    int fusions; /* channels-last only: STATISTICS | NORM_ON_LOAD, the fused U-Net stage's conv (backend_cuda.cu) */
    float *partials, *scale_shift;
} conv_case;

#define CHANNELS_LAST 8
#define STATISTICS 1   /* the instance norm's statistics in the epilogue */
#define NORM_ON_LOAD 2 /* a deferred instance norm + leaky ReLU applied to the input tiles */

static int run_conv(bench *B, void *arg) {
    conv_case *c = arg;
    if (c->kernel < 0) return B->k.conv(c->x, c->xs, c->w, NULL, &c->p, c->y, c->ys, B->stream);
    if (c->kernel < CHANNELS_LAST)
        return B->k.conv_tc(c->x, c->xs, c->w, NULL, &c->p, c->y, c->ys, c->kernel, c->scratch, B->stream);
    i3_act leaky = {I3_ACT_LEAKY_RELU, 0.01f};
    return B->k.conv_tc_fused(c->x, c->xs, I3_LAYOUT_NDHWC, c->w, NULL, NULL, NULL, &c->p,
                              c->fusions & NORM_ON_LOAD ? c->scale_shift : NULL, leaky, c->y, c->ys, I3_LAYOUT_NDHWC,
                              NULL, c->fusions & STATISTICS ? c->partials : NULL, c->kernel - CHANNELS_LAST,
                              c->scratch, B->stream);
}

/* The f32 direct kernel, the tensor-core kernels on NCDHW f32 activations (f16, bf16: which v3 makes
 * channels-last first since 2026-11-27, conversion included; tf32), and the f16/bf16 kernel on channels-last
 * f16/bf16 activations: cuDNN's setting in gpu_torch.py (the noise buffers' bits read as f16/bf16: the
 * timing does not depend on the values); then the f16 channels-last conv with the fusions of a U-Net
 * stage's convs (what each costs: the "fused" stage below took 1.4-1.8x the time of its two plain convs). */
static void bench_convs(bench *B, int stage, int64_t channels, int64_t side) {
    static const char *const names[] = {"f16", "bf16", "tf32"};
    static const int kernels[] = {-1, I3_TC_F16, I3_TC_BF16, I3_TC_TF32, CHANNELS_LAST + I3_TC_F16,
                                  CHANNELS_LAST + I3_TC_BF16};
    conv_case c = {.xs = {1, channels, side, side, side}};
    c.p = (i3_conv_params){.cout = (int)channels, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}};
    c.ys = i3_conv_out_shape(c.xs, &c.p);
    c.x = device_noise(B, i3_shape5_numel(c.xs), 1);
    c.w = device_noise(B, channels * channels * 27, 2);
    c.y = device_noise(B, i3_shape5_numel(c.ys), 3);
    if (B->b->iface->alloc(B->b, B->k.conv_tc_scratch_bytes(c.xs, I3_LAYOUT_NCDHW, &c.p, I3_TC_F16) /* the most */, &c.scratch) != I3RT_OK)
        die(B, "conv scratch");
    const int chunks = B->k.conv_tc_stat_chunks(c.ys, I3_TC_F16);
    c.partials = device_noise(B, c.ys.n * c.ys.c * chunks * 3, 4);
    c.scale_shift = device_noise(B, c.xs.n * c.xs.c * 2, 5);
    double flop = 2.0 * (double)i3_shape5_numel(c.ys) * (double)channels * 27.0;
    static const char *const fused[] = {"", ", statistics", ", norm on load", ", norm on load + statistics"};
    const int n_kernels = (int)(sizeof kernels / sizeof kernels[0]);
    for (int i = 0; i < n_kernels + 3; i++) {
        c.kernel = i < n_kernels ? kernels[i] : CHANNELS_LAST + I3_TC_F16;
        c.fusions = i < n_kernels ? 0 : i - n_kernels + 1;
        const int cl = c.kernel >= CHANNELS_LAST, precision = c.kernel % CHANNELS_LAST;
        double ms = time_median(B, run_conv, &c, "conv");
        printf("{\"bench\": \"op\", \"name\": \"conv3x3x3 %s%s%s\", \"stage\": %d, \"c\": %lld, \"side\": %lld, "
               "\"ms\": %.4f, \"flop\": %.6g, \"precision\": \"%s\"}\n",
               c.kernel < 0 ? "f32 direct" : names[precision], cl ? " channels-last" : "", fused[c.fusions], stage,
               (long long)channels, (long long)side, ms, flop, c.kernel < 0 ? "f32" : names[precision]);
    }
    B->b->iface->free(B->b, c.partials);
    B->b->iface->free(B->b, c.scale_shift);
    B->b->iface->free(B->b, (void *)c.x);
    B->b->iface->free(B->b, (void *)c.w);
    B->b->iface->free(B->b, c.y);
    B->b->iface->free(B->b, c.scratch);
}

/* ---- a whole encoder stage through the backend (fusions on and off) --------------------------- */

typedef struct {
    i3_graph g;
    void *arena, *weights, *scratch;
    i3_backend *b;
} stage_graph;

static int run_stage(bench *B, void *arg) {
    stage_graph *s = arg; /* its own backend (own settings and stream): time_median synchronizes B's only */
    return i3_graph_run(&s->g, s->b, s->scratch) != I3RT_OK || s->b->iface->synchronize(s->b) != I3RT_OK;
}

static void bench_stage(bench *B, int stage, int64_t channels, int64_t side) {
    i3_shape5 xs = {1, channels, side, side, side};
    int64_t wdims[5] = {channels, channels, 3, 3, 3};
    float *w = malloc((size_t)(channels * channels * 27) * sizeof(float));
    for (int64_t i = 0; i < channels * channels * 27; i++) w[i] = (float)((i * 7919) % 1000) * 1e-4f - 0.05f;
    for (int run = 0; run < 4; run++) { /* f32 then f16 convolutions (the second tensor channels-last when fused) */
        const int fuse = run % 2 == 0;
        const char *precision = run < 2 ? "f32" : "f16";
        setenv("I3RT_CUDA_CONV", precision, 1);
        setenv("I3RT_CUDA_FUSE", fuse ? "1" : "0", 1);
        setenv("I3RT_CUDA_GRAPHS", "0", 1);
        i3_ctx ctx = B->ctx;
        i3_backend *b;
        if (i3_backend_cuda_create(&ctx, !strcmp(B->b->iface->name, "emulated"), &b) != I3RT_OK) die(B, ctx.error);
        stage_graph s = {.b = b};
        i3_graph_init(&s.g, &ctx);
        i3_act leaky = {I3_ACT_LEAKY_RELU, 0.01f};
        i3_norm_params norm = {.eps = 1e-5f, .act = leaky};
        i3_conv_params cp = {.cout = (int)channels, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}};
        int x = i3_graph_input(&s.g, xs);
        for (int i = 0; i < 2; i++) {
            x = i3_graph_conv(&s.g, x, i3_graph_weight(&s.g, "w", w, 5, wdims), -1, &cp, "conv");
            x = i3_graph_instance_norm(&s.g, x, -1, -1, &norm, "norm");
        }
        if (s.g.failed || i3_graph_plan(&s.g, x, b) != I3RT_OK ||
            b->iface->alloc(b, s.g.arena_bytes, &s.arena) != I3RT_OK ||
            b->iface->alloc(b, i3_graph_weight_bytes(&s.g), &s.weights) != I3RT_OK ||
            b->iface->alloc(b, s.g.scratch_bytes ? s.g.scratch_bytes : 1, &s.scratch) != I3RT_OK ||
            i3_graph_bind(&s.g, b, s.arena, s.weights) != I3RT_OK)
            die(B, ctx.error);
        double ms = time_median(B, run_stage, &s, "encoder stage");
        i3_cuda_stats stats;
        i3_backend_cuda_stats(b, &stats);
        printf("{\"bench\": \"block\", \"name\": \"stage conv-norm-act x2 %s\", \"stage\": %d, \"c\": %lld, "
               "\"side\": %lld, \"ms\": %.4f, \"flop\": %.6g, \"precision\": \"%s\", \"fused_nodes_per_run\": %lld, "
               "\"channels_last_per_run\": %lld}\n",
               fuse ? "fused" : "unfused", stage, (long long)channels, (long long)side, ms,
               2 * 2.0 * (double)i3_shape5_numel(xs) * (double)channels * 27.0, precision,
               (long long)(stats.fused_nodes / (B->runs + 1)),
               (long long)(stats.channels_last_outputs / (B->runs + 1)));
        b->iface->free(b, s.arena);
        b->iface->free(b, s.scratch);
        b->iface->free(b, s.weights);
        i3_graph_free(&s.g);
        i3_backend_destroy(b);
    }
    free(w);
}

/* ---- memory-bound ops ------------------------------------------------------------------------ */

typedef struct {
    const float *x;
    float *y, *maps;
    int32_t *argmax;
    double *sums;
    void *scratch;
    int64_t c, d, h, w;
} map_case;

static int run_norm(bench *B, void *arg) {
    map_case *m = arg;
    i3_shape5 xs = {1, m->c, m->d, m->h, m->w};
    i3_norm_params p = {.eps = 1e-5f, .act = {I3_ACT_LEAKY_RELU, 0.01f}};
    return B->k.instance_norm(m->x, xs, NULL, NULL, &p, m->y, B->stream);
}

static int run_softmax_slices(bench *B, void *arg) {
    map_case *m = arg;
    int64_t s = m->d * m->h * m->w;
    return B->k.softmax_slices(m->x, m->c, m->d, m->h, m->w, NULL, m->maps, m->maps + s, m->argmax, m->sums,
                               m->scratch, B->stream);
}

static int run_softmax_unfused(bench *B, void *arg) {
    map_case *m = arg;
    int64_t s = m->d * m->h * m->w;
    int e = B->k.softmax_uncertainty(m->x, 1, m->c, s, NULL, m->maps, m->maps + s, m->argmax, B->stream);
    for (int i = 0; i < 2 && !e; i++)
        e = B->k.slice_sums(m->maps + i * s, m->d, m->h, m->w, m->sums + i * (m->d + m->h + m->w),
                            m->sums + i * (m->d + m->h + m->w) + m->d, m->sums + i * (m->d + m->h + m->w) + m->d + m->h,
                            B->stream);
    return e;
}

static void bench_maps(bench *B, int64_t c, int64_t d, int64_t h, int64_t w) {
    map_case m = {.c = c, .d = d, .h = h, .w = w};
    int64_t s = d * h * w;
    m.x = device_noise(B, c * s, 4);
    m.y = device_noise(B, c * s, 5);
    m.maps = device_noise(B, 3 * s, 6);
    m.argmax = (int32_t *)(m.maps + 2 * s);
    m.sums = (double *)device_noise(B, 6 * (d + h + w), 7);
    size_t scratch = B->k.softmax_slices_scratch_bytes(d, h, w);
    if (B->b->iface->alloc(B->b, scratch, &m.scratch) != I3RT_OK) die(B, "scratch");
    double ms = time_median(B, run_softmax_slices, &m, "softmax_slices");
    double bytes = (double)(c + 3) * (double)s * 4.0; /* logits in, entropy, msp, argmax out */
    printf("{\"bench\": \"op\", \"name\": \"softmax+entropy/msp/argmax+slice sums fused\", \"c\": %lld, \"d\": %lld, "
           "\"h\": %lld, \"w\": %lld, \"ms\": %.4f, \"bytes\": %.6g}\n",
           (long long)c, (long long)d, (long long)h, (long long)w, ms, bytes);
    ms = time_median(B, run_softmax_unfused, &m, "softmax + slice_sums");
    printf("{\"bench\": \"op\", \"name\": \"softmax+entropy/msp/argmax, then slice sums (unfused)\", \"c\": %lld, "
           "\"d\": %lld, \"h\": %lld, \"w\": %lld, \"ms\": %.4f, \"bytes\": %.6g}\n",
           (long long)c, (long long)d, (long long)h, (long long)w, ms, bytes);
    m.c = 32;
    m.d = d / 4, m.h = h / 4, m.w = w / 4; /* a 32-channel activation of about the same size */
    ms = time_median(B, run_norm, &m, "instance_norm");
    printf("{\"bench\": \"op\", \"name\": \"instance norm + leaky relu (v1, two reads)\", \"c\": 32, \"d\": %lld, "
           "\"h\": %lld, \"w\": %lld, \"ms\": %.4f, \"bytes\": %.6g}\n",
           (long long)m.d, (long long)m.h, (long long)m.w, ms, 3.0 * 32 * (double)(m.d * m.h * m.w) * 4.0);
    B->b->iface->free(B->b, (void *)m.x);
    B->b->iface->free(B->b, m.y);
    B->b->iface->free(B->b, m.maps);
    B->b->iface->free(B->b, m.sums);
    B->b->iface->free(B->b, m.scratch);
}

typedef struct {
    const float *pred, *gauss;
    float *acc, *wsum;
    int64_t classes, tile[3], volume[3];
} sw_case;

static int run_sw(bench *B, void *arg) {
    sw_case *c = arg;
    int64_t offset[3] = {c->volume[0] - c->tile[0], 0, (c->volume[2] - c->tile[2]) / 2};
    return B->k.sw_accumulate(c->pred, c->classes, c->tile, 1, c->gauss, 0, c->acc, c->wsum, c->volume, offset,
                              B->stream); /* one pass, float32 sums */
}

static void bench_sliding_window(bench *B, int64_t tile, int64_t volume) {
    sw_case c = {.classes = 3, .tile = {tile, tile, tile}, .volume = {volume, volume, volume}};
    int64_t nt = tile * tile * tile, nv = volume * volume * volume;
    c.pred = device_noise(B, 3 * nt, 8);
    c.gauss = device_noise(B, nt, 9);
    c.acc = device_noise(B, 3 * nv, 10);
    c.wsum = device_noise(B, nv, 11);
    double ms = time_median(B, run_sw, &c, "sw_accumulate");
    printf("{\"bench\": \"op\", \"name\": \"sliding-window gaussian accumulate (3 classes)\", \"tile\": %lld, "
           "\"volume\": %lld, \"ms\": %.4f, \"bytes\": %.6g}\n",
           (long long)tile, (long long)volume, ms, (3.0 + 1.0 + 2.0 * 4.0) * (double)nt * 4.0);
    B->b->iface->free(B->b, (void *)c.pred);
    B->b->iface->free(B->b, (void *)c.gauss);
    B->b->iface->free(B->b, c.acc);
    B->b->iface->free(B->b, c.wsum);
}

/* ---- Slice-and-Conquer's HRNet ops (kernels/ocr.cu, kernels/mask_attention.cu) ------------------ */

typedef struct {
    const float *feats, *guide, *logits, *query, *key, *value, *gate;
    float *y, *pooled;
    void *scratch;
    i3_shape5 fs, gs;
    int64_t mid, key_channels;
} snc_case;

static int run_spatial_gather(bench *B, void *arg) {
    snc_case *c = arg;
    return B->k.spatial_gather(c->feats, c->logits, 1, c->mid, 1, i3_shape5_spatial(c->fs), c->pooled, B->stream);
}

static int run_object_attention(bench *B, void *arg) {
    snc_case *c = arg;
    return B->k.object_attention(c->query, c->key, c->value, 1, c->key_channels, c->key_channels, 1,
                                 i3_shape5_spatial(c->fs), c->y, B->stream);
}

static int run_mask_pool(bench *B, void *arg) {
    snc_case *c = arg;
    const i3_mask_pool_params p = {4, 1e-6f};
    return B->k.mask_pool(c->feats, c->fs, c->guide, c->gs, &p, c->pooled, c->scratch, B->stream);
}

static int run_channel_gate(bench *B, void *arg) {
    snc_case *c = arg;
    return B->k.channel_gate(c->y, c->fs, c->gate, c->y, B->stream);
}

static void print_snc(const char *name, int64_t c, i3_shape5 s, double ms, double bytes) {
    printf("{\"bench\": \"op\", \"name\": \"%s\", \"c\": %lld, \"d\": %lld, \"h\": %lld, \"w\": %lld, "
           "\"ms\": %.4f, \"bytes\": %.6g}\n",
           name, (long long)c, (long long)s.d, (long long)s.h, (long long)s.w, ms, bytes);
}

/* Features [1, 270, d/4, h/4, w/4] of a volume [d, h, w]; OCR at 128 (mid) and 64 (key) channels. */
static void bench_snc_ops(bench *B, int64_t d, int64_t h, int64_t w) {
    snc_case c = {.fs = {1, 270, (d + 3) / 4, (h + 3) / 4, (w + 3) / 4}, .gs = {1, 2, d, h, w}, .mid = 128,
                  .key_channels = 64};
    const int64_t s = i3_shape5_spatial(c.fs);
    c.feats = device_noise(B, 270 * s, 12);
    c.guide = device_noise(B, 2 * d * h * w, 13);
    c.logits = device_noise(B, s, 14);
    c.query = device_noise(B, 64 * s, 15);
    c.key = device_noise(B, 64, 16);
    c.value = device_noise(B, 64, 17);
    c.gate = device_noise(B, 270, 18);
    c.y = device_noise(B, 270 * s, 19);
    c.pooled = device_noise(B, 2 * 270, 20);
    if (B->b->iface->alloc(B->b, B->k.mask_pool_scratch_bytes(c.fs), &c.scratch) != I3RT_OK) die(B, "scratch");
    const double f = 4.0;
    /* bytes: what each must read and write at least */
    print_snc("spatial gather (OCR, 1 class)", c.mid, c.fs, time_median(B, run_spatial_gather, &c, "spatial_gather"),
              f * (double)(c.mid + 1) * (double)s);
    print_snc("object attention (OCR, 1 class)", c.key_channels, c.fs,
              time_median(B, run_object_attention, &c, "object_attention"), f * 2.0 * 64.0 * (double)s);
    print_snc("mask pool (guide at stride 4)", 270, c.fs, time_median(B, run_mask_pool, &c, "mask_pool"),
              f * (270.0 * (double)s + 2.0 * (double)(d * h * w)));
    print_snc("channel gate (in place)", 270, c.fs, time_median(B, run_channel_gate, &c, "channel_gate"),
              f * 2.0 * 270.0 * (double)s);
    const void *buffers[] = {c.feats, c.guide, c.logits, c.query, c.key, c.value, c.gate, c.y, c.pooled, c.scratch};
    for (size_t i = 0; i < sizeof buffers / sizeof *buffers; i++) B->b->iface->free(B->b, (void *)buffers[i]);
}

/* ---- whole forward through the public API ----------------------------------------------------- */

static int forward(const char *model_path, const int64_t spatial[3], int emulated, int runs) {
    i3rt_context *ctx;
    i3rt_model *model;
    i3rt_model_info info;
    size_t peak;
    if (i3rt_context_create(&ctx, 1, emulated ? I3RT_BACKEND_EMULATED : I3RT_BACKEND_CUDA) != I3RT_OK) return 1;
    if (i3rt_model_load(ctx, model_path, &model) != I3RT_OK || i3rt_model_get_info(model, &info) != I3RT_OK ||
        i3rt_model_plan(model, spatial, &peak) != I3RT_OK) {
        fprintf(stderr, "gpu_bench: %s\n", i3rt_context_error(ctx));
        return 1;
    }
    size_t voxels = (size_t)(spatial[0] * spatial[1] * spatial[2]);
    float *input = malloc(voxels * (size_t)info.in_channels * sizeof(float));
    float *logits = malloc(voxels * (size_t)info.num_classes * sizeof(float));
    double *t = malloc((size_t)runs * sizeof(double));
    uint32_t state = 12345;
    for (size_t i = 0; i < voxels * (size_t)info.in_channels; i++) {
        state = state * 1664525u + 1013904223u;
        input[i] = (float)(state >> 8) / (float)(1u << 23) - 1.0f;
    }
    for (int r = -1; r < runs; r++) {
        double t0 = now_ms();
        if (i3rt_model_forward(model, input, spatial, logits) != I3RT_OK) {
            fprintf(stderr, "gpu_bench: %s\n", i3rt_context_error(ctx));
            return 1;
        }
        if (r >= 0) t[r] = now_ms() - t0;
    }
    qsort(t, (size_t)runs, sizeof *t, compare_doubles);
    const char *conv = getenv("I3RT_CUDA_CONV");
    printf("{\"bench\": \"forward\", \"name\": \"i3rt %s conv %s\", \"network\": \"%s\", \"d\": %lld, \"h\": %lld, "
           "\"w\": %lld, \"ms\": %.4f, \"min_ms\": %.4f, \"peak_mib\": %.1f, \"note\": \"host input and logits "
           "copies included\"}\n",
           emulated ? "emulated" : "cuda", conv ? conv : "f32", info.network, (long long)spatial[0],
           (long long)spatial[1], (long long)spatial[2], runs % 2 ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]),
           t[0], (double)peak / 1048576.0);
    free(t), free(input), free(logits);
    i3rt_model_free(model);
    i3rt_context_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "ops") && strcmp(argv[1], "forward")) ||
        (!strcmp(argv[1], "forward") && argc < 6)) {
        fprintf(stderr, "usage: gpu_bench ops [--emulated] [--quick] [--runs R]\n"
                        "       gpu_bench forward MODEL D H W [--emulated] [--runs R]\n");
        return 2;
    }
    int emulated = 0, quick = 0, runs = 5;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--emulated")) emulated = 1;
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
    }
    if (runs < 1 || runs > 1000) {
        fprintf(stderr, "gpu_bench: bad --runs\n");
        return 2;
    }
    if (!strcmp(argv[1], "forward")) {
        int64_t spatial[3] = {atoll(argv[3]), atoll(argv[4]), atoll(argv[5])};
        return forward(argv[2], spatial, emulated, runs);
    }
    bench B = {.ctx = {.n_threads = 1, .backend = emulated ? I3RT_BACKEND_EMULATED : I3RT_BACKEND_CUDA}, .runs = runs};
    if (i3_backend_cuda_create(&B.ctx, emulated, &B.b) != I3RT_OK) die(&B, "backend");
    B.stream = i3_backend_cuda_stream(B.b);
    if (emulated) {
        B.k = (launchers){i3emu_conv, i3emu_conv_tensor_core, i3emu_conv_tensor_core_fused,
                          i3emu_conv_tensor_core_scratch_bytes, i3emu_conv_tensor_core_stat_chunks,
                          i3emu_instance_norm, i3emu_softmax_uncertainty,
                          i3emu_slice_sums, i3emu_softmax_slices, i3emu_softmax_slices_scratch_bytes,
                          i3emu_sw_accumulate, i3emu_spatial_gather, i3emu_object_attention,
                          i3emu_mask_pool_scratch_bytes, i3emu_mask_pool, i3emu_channel_gate};
    } else {
#ifdef I3RT_HAVE_CUDA
        B.k = (launchers){i3gpu_conv, i3gpu_conv_tensor_core, i3gpu_conv_tensor_core_fused,
                          i3gpu_conv_tensor_core_scratch_bytes, i3gpu_conv_tensor_core_stat_chunks,
                          i3gpu_instance_norm, i3gpu_softmax_uncertainty,
                          i3gpu_slice_sums, i3gpu_softmax_slices, i3gpu_softmax_slices_scratch_bytes,
                          i3gpu_sw_accumulate, i3gpu_spatial_gather, i3gpu_object_attention,
                          i3gpu_mask_pool_scratch_bytes, i3gpu_mask_pool, i3gpu_channel_gate};
#endif
    }
    int stages = quick ? 2 : 6;
    for (int s = 0; s < stages; s++) {
        int64_t channels = quick ? 8 << s : (32 << s) > 320 ? 320 : 32 << s, side = quick ? 8 >> s : 128 >> s;
        bench_convs(&B, s, channels, side);
        bench_stage(&B, s, channels, side);
    }
    if (quick) {
        bench_maps(&B, 3, 8, 20, 40);
        bench_sliding_window(&B, 8, 12);
        bench_snc_ops(&B, 8, 12, 16);
    } else {
        bench_maps(&B, 3, 128, 512, 512);
        bench_sliding_window(&B, 128, 256);
        bench_snc_ops(&B, 64, 128, 128);
    }
    i3_backend_destroy(B.b);
    return 0;
}
