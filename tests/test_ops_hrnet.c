/* The ops added for RITM's HRNet-OCR: spatial_gather, object_attention (against PyTorch, fixtures from
 * tests/gen_ops_hrnet.py, float64 references), slice_channels; Slice-and-Conquer's mask attention ops
 * mask_pool and channel_gate (against tools/snc_models.py's MaskAttention, same fixtures); the fast ACS
 * convolution against its reference; their graph builders (shape checks and messages), the CPU
 * backend's dispatch, and the emulated CUDA backend's refusal (no kernels yet).
 * Tolerance: max |i3rt - torch| <= 1e-5 * max |torch| (double sums in the references; float32 in/out). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "fixtures.h"
#include "hrnet.h"

#define OCR_REL_TOL 1e-5

static i3_weights *open_case(const char *op, int i) {
    char name[64];
    snprintf(name, sizeof name, "%s_%d.safetensors", op, i);
    i3_weights *w = fx_open("ops_hrnet", name);
    cr_assert(w, "fixture ops_hrnet/%s missing (run through ctest, which runs tests/gen_ops_hrnet.py first)", name);
    return w;
}

static const float *get(i3_weights *w, const char *name, int64_t shape[5]) {
    const float *t = fx_tensor(w, name, NULL);
    cr_assert(t && fx_shape5(w, name, shape), "%s: tensor %s missing or not 5-D f32", i3_weights_label(w), name);
    return t;
}

static void check(const char *label, const float *y, const float *ref, int64_t n) {
    cr_expect(fx_guards_intact(y, n), "%s: wrote outside its output", label);
    fx_err e = fx_compare(label, y, ref, n);
    cr_expect(e.rel <= OCR_REL_TOL, "%s: relative error %.3g > %.0e", label, e.rel, OCR_REL_TOL);
}

Test(ops_hrnet, spatial_gather_vs_torch) {
    for (int i = 0; i < 3; i++) {
        i3_weights *w = open_case("spatial_gather", i);
        int64_t fs[5], ls[5], ys[5];
        const float *feats = get(w, "feats", fs), *logits = get(w, "logits", ls), *ref = get(w, "y", ys);
        const int64_t s = fs[2] * fs[3] * fs[4], n_out = ys[0] * ys[1] * ys[2];
        float *y = fx_guarded_alloc(n_out);
        i3_cpu_spatial_gather_ref(feats, logits, fs[0], fs[1], ls[1], s, y);
        char label[96];
        snprintf(label, sizeof label, "spatial_gather %d: n %lld c %lld classes %lld positions %lld", i,
                 (long long)fs[0], (long long)fs[1], (long long)ls[1], (long long)s);
        check(label, y, ref, n_out);
        fx_guarded_free(y);
        i3_weights_free(w);
    }
}

Test(ops_hrnet, object_attention_vs_torch) {
    for (int i = 0; i < 3; i++) {
        i3_weights *w = open_case("object_attention", i);
        int64_t qs[5], ks[5], vs[5], ys[5];
        const float *q = get(w, "q", qs), *key = get(w, "key", ks), *value = get(w, "value", vs), *ref = get(w, "y", ys);
        const int64_t s = qs[2] * qs[3] * qs[4], n_out = ys[0] * ys[1] * s;
        float *y = fx_guarded_alloc(n_out);
        i3_cpu_object_attention_ref(q, key, value, qs[0], qs[1], vs[1], ks[2], s, y, 2);
        char label[96];
        snprintf(label, sizeof label, "object_attention %d: ck %lld cv %lld classes %lld positions %lld", i,
                 (long long)qs[1], (long long)vs[1], (long long)ks[2], (long long)s);
        check(label, y, ref, n_out);
        fx_guarded_free(y);
        i3_weights_free(w);
    }
}

Test(ops_hrnet, mask_pool_vs_torch) {
    for (int i = 0; i < 4; i++) {
        i3_weights *w = open_case("mask_pool", i);
        int64_t fs[5], gs[5], ys[5];
        const float *feats = get(w, "feats", fs), *guide = get(w, "guide", gs), *ref = get(w, "y", ys);
        const i3_shape5 f5 = {fs[0], fs[1], fs[2], fs[3], fs[4]}, g5 = {gs[0], gs[1], gs[2], gs[3], gs[4]};
        const int64_t n_out = i3_shape5_numel(i3_mask_pool_out_shape(f5));
        cr_assert_eq(n_out, ys[0] * ys[1]);
        float *y = fx_guarded_alloc(n_out);
        const i3_mask_pool_params p = {I3_SNC_ATTENTION_STRIDE, I3_SNC_ATTENTION_EPS};
        i3_cpu_mask_pool_ref(feats, f5, guide, g5, &p, y);
        char label[96];
        snprintf(label, sizeof label, "mask_pool %d: n %lld c %lld guide %lld x %lld x %lld", i, (long long)fs[0],
                 (long long)fs[1], (long long)gs[2], (long long)gs[3], (long long)gs[4]);
        check(label, y, ref, n_out);
        fx_guarded_free(y);
        i3_weights_free(w);
    }
}

Test(ops_hrnet, channel_gate_vs_torch) {
    for (int i = 0; i < 2; i++) {
        i3_weights *w = open_case("channel_gate", i);
        int64_t xs[5], gs[5], ys[5];
        const float *x = get(w, "x", xs), *gate = get(w, "gate", gs), *ref = get(w, "y", ys);
        const i3_shape5 x5 = {xs[0], xs[1], xs[2], xs[3], xs[4]};
        const int64_t n = i3_shape5_numel(x5);
        float *y = fx_guarded_alloc(n);
        i3_cpu_channel_gate(x, x5, gate, y, 2);
        char label[64];
        snprintf(label, sizeof label, "channel_gate %d", i);
        check(label, y, ref, n);
        memcpy(y, x, (size_t)n * sizeof *y); /* in place, as the graph runs it */
        i3_cpu_channel_gate(y, x5, gate, y, 1);
        check(label, y, ref, n);
        fx_guarded_free(y);
        i3_weights_free(w);
    }
}

/* The fast ACS convolution against the reference: both strategies (three i3_cpu_conv calls on the parts,
 * im2col, for cin < 8 and cout < 16; else one direct convolution over the three parts and one input slab), stride 2,
 * batch 2, couts not divisible by 3 or below 3 (empty parts), parts of 8, 16 and 24-wide channel blocks,
 * k 1 and 5, and paddings that the decomposition does not take (reference fallback). */
Test(ops_hrnet, acs_conv_fast_matches_reference) {
    static const struct {
        i3_shape5 x;
        int cout, k, stride, pad;
    } cases[] = {{{1, 3, 5, 6, 7}, 5, 3, 1, 1},   {{2, 16, 7, 5, 6}, 7, 3, 2, 1}, {{1, 20, 9, 8, 10}, 18, 3, 1, 1},
                 {{1, 9, 4, 5, 6}, 2, 3, 2, 1},   {{1, 8, 9, 7, 8}, 8, 5, 2, 2},  {{1, 3, 4, 5, 6}, 4, 1, 1, 0},
                 {{1, 12, 6, 7, 5}, 6, 3, 1, 2},  {{1, 3, 7, 8, 9}, 6, 3, 1, 0},  {{1, 4, 6, 5, 7}, 5, 2, 1, 1},
                 {{1, 10, 6, 5, 9}, 40, 3, 1, 1}, {{2, 24, 5, 6, 7}, 66, 3, 2, 1}, {{1, 3, 6, 5, 7}, 48, 3, 2, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx_rng r = fx_rng_seed(900 + i);
        const i3_shape5 xs = cases[i].x;
        const i3_acs_conv_params p = {cases[i].cout, cases[i].k, cases[i].stride, cases[i].pad, {I3_ACT_LEAKY_RELU, 0.1f}};
        const int64_t nx = i3_shape5_numel(xs), ny = i3_shape5_numel(i3_acs_conv_out_shape(xs, &p));
        const int64_t nw = (int64_t)p.cout * xs.c * p.k * p.k;
        float *x = malloc((size_t)nx * sizeof *x), *w = malloc((size_t)nw * sizeof *w), b[80];
        float *ref = malloc((size_t)ny * sizeof *ref), *y = fx_guarded_alloc(ny);
        fx_fill(&r, x, nx, -1.0f, 1.0f), fx_fill(&r, w, nw, -0.5f, 0.5f), fx_fill(&r, b, p.cout, -1.0f, 1.0f);
        const size_t scratch_bytes = i3_cpu_acs_conv_scratch_bytes(xs, &p, 2);
        void *scratch = scratch_bytes ? malloc(scratch_bytes) : NULL;
        i3_cpu_acs_conv_ref(x, xs, w, i % 2 ? NULL : b, &p, ref);
        i3_cpu_acs_conv(x, xs, w, i % 2 ? NULL : b, &p, y, scratch, 2);
        char label[128];
        snprintf(label, sizeof label, "acs_conv x[%lld,%lld,%lld,%lld,%lld] cout %d k%d s%d p%d", (long long)xs.n,
                 (long long)xs.c, (long long)xs.d, (long long)xs.h, (long long)xs.w, p.cout, p.k, p.stride, p.pad);
        check(label, y, ref, ny);
        free(x), free(w), free(ref), free(scratch), fx_guarded_free(y);
    }
}

/* x [1, 4, 2, 5, 6] -> gather = spatial_gather(x, x) [1, 4, 4, 1, 1] -> attention(x, gather, gather)
 * [1, 4, 2, 5, 6] -> slice channels 1..2. */
typedef struct {
    i3_graph g;
    int gather, att, out;
} small_graph;

static const i3_shape5 XS = {1, 4, 2, 5, 6};

static void build_small(small_graph *sg, i3_ctx *ctx) {
    i3_graph_init(&sg->g, ctx);
    int x = i3_graph_input(&sg->g, XS);
    sg->gather = i3_graph_spatial_gather(&sg->g, x, x, "gather");
    sg->att = i3_graph_object_attention(&sg->g, x, sg->gather, sg->gather, "attention");
    const i3_slice_params sp = {1, 2};
    sg->out = i3_graph_slice_channels(&sg->g, sg->att, &sp, "slice");
    cr_assert(sg->out >= 0, "%s", ctx->error);
}

Test(ops_hrnet, graph_on_cpu) {
    i3_ctx ctx = {.n_threads = 2, .backend = I3RT_BACKEND_CPU};
    small_graph sg;
    build_small(&sg, &ctx);
    i3_backend *b = NULL;
    cr_assert_eq(i3_backend_create(&ctx, &b), I3RT_OK);
    cr_assert_eq(i3_graph_plan(&sg.g, sg.out, b), I3RT_OK, "%s", ctx.error);
    void *arena = NULL;
    cr_assert_eq(b->iface->alloc(b, sg.g.arena_bytes, &arena), I3RT_OK);
    cr_assert_eq(i3_graph_bind(&sg.g, b, arena, NULL), I3RT_OK);
    const int64_t n = i3_shape5_numel(XS), s = i3_shape5_spatial(XS);
    fx_rng r = fx_rng_seed(3);
    float *x = sg.g.values[sg.g.input].data;
    fx_fill(&r, x, n, -2.0f, 2.0f);
    float *xcopy = malloc((size_t)n * sizeof *xcopy), gather[16], att[4 * 60];
    memcpy(xcopy, x, (size_t)n * sizeof *x);
    cr_assert_eq(i3_graph_run(&sg.g, b, NULL), I3RT_OK, "%s", ctx.error);

    i3_cpu_spatial_gather_ref(xcopy, xcopy, 1, 4, 4, s, gather);
    i3_cpu_object_attention_ref(xcopy, gather, gather, 1, 4, 4, 4, s, att, 1);
    const float *got = sg.g.values[sg.out].data;
    cr_expect(memcmp(got, att + s, (size_t)(2 * s) * sizeof *got) == 0, "graph result differs from the references");
    cr_expect_eq(sg.g.values[sg.gather].dims[2], 4);
    b->iface->free(b, arena);
    i3_backend_destroy(b);
    i3_graph_free(&sg.g);
    free(xcopy);
}

Test(ops_hrnet, graph_shape_errors) {
    i3_ctx ctx = {.n_threads = 1};
    i3_graph g;
    i3_graph_init(&g, &ctx);
    int x = i3_graph_input(&g, XS);
    const i3_slice_params bad = {3, 2};
    cr_expect_eq(i3_graph_slice_channels(&g, x, &bad, "slice"), -1);
    cr_expect(strstr(ctx.error, "slice: channels [3, 5) are not within the 4 of input"), "%s", ctx.error);
    i3_graph_free(&g);

    i3_graph_init(&g, &ctx);
    x = i3_graph_input(&g, XS);
    const i3_avg_pool_params pp = {{1, 5, 6}};
    int pooled = i3_graph_avg_pool(&g, x, &pp, "pool");
    cr_expect_eq(i3_graph_spatial_gather(&g, x, pooled, "gather"), -1);
    cr_expect(strstr(ctx.error, "gather: features input ([1, 4, 2, 5, 6]) and class logits pool ([1, 4, 2, 1, 1])"),
              "%s", ctx.error);
    i3_graph_free(&g);

    i3_graph_init(&g, &ctx);
    x = i3_graph_input(&g, XS);
    cr_expect_eq(i3_graph_object_attention(&g, x, x, x, "att"), -1); /* key must be [n, ck, k, 1, 1] */
    cr_expect(strstr(ctx.error, "att: query [1, 4, 2, 5, 6], key [1, 4, 2, 5, 6]"), "%s", ctx.error);
    i3_graph_free(&g);
}

Test(ops_hrnet, mask_attention_graph_shape_errors) {
    i3_ctx ctx = {.n_threads = 1};
    i3_graph g;
    i3_graph_init(&g, &ctx);
    int x = i3_graph_input(&g, (i3_shape5){1, 4, 9, 8, 7});
    const i3_slice_params guide_part = {0, 2}, feats_part = {0, 3};
    const i3_avg_pool_params pp = {{2, 2, 2}}; /* [1, 3, 4, 4, 3]: not ceil(9 / 4) = 3 deep */
    int feats = i3_graph_avg_pool(&g, i3_graph_slice_channels(&g, x, &feats_part, "feats"), &pp, "pooled");
    const i3_mask_pool_params mp = {I3_SNC_ATTENTION_STRIDE, I3_SNC_ATTENTION_EPS};
    cr_expect_eq(i3_graph_mask_pool(&g, feats, i3_graph_slice_channels(&g, x, &guide_part, "guide"), &mp, "mp"), -1);
    cr_expect(strstr(ctx.error, "mp: features pooled ([1, 3, 4, 4, 3]) must be guide guide ([1, 2, 9, 8, 7], 2 "
                                "channels: masks, annotated) at stride 4"),
              "%s", ctx.error);
    i3_graph_free(&g);

    i3_graph_init(&g, &ctx);
    x = i3_graph_input(&g, XS);
    cr_expect_eq(i3_graph_channel_gate(&g, x, x, "gate"), -1);
    cr_expect(strstr(ctx.error, "gate: gate input ([1, 4, 2, 5, 6]) must be [1, 4, 1, 1, 1] for input"), "%s", ctx.error);
    i3_graph_free(&g);
}
