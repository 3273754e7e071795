/* RITM's HRNet-18 + OCR interactive network (runtime/hrnet.c) against PyTorch, 2D and ACS 3D.
 *
 * tests/gen_hrnet.py re-implements RITM's HRNetModel from its source (state-dict keys asserted equal to
 * RITM's), randomizes it, saves a RITM checkpoint, converts it with tools/convert_pt/convert_ritm.py
 * (hrnet2d.safetensors; --acs: hrnet3d.safetensors) and runs it in float64 (the 3D one converted by
 * ACSConv's rules): io2d / io3d hold image, prev_mask, clicks, the encoded "input", the cls_head logits
 * "logits_low" and the upsampled "logits".
 * Checked: the input encoding (normalization exact to 1 ulp-ish 1e-6, mask and disks exactly); the
 * logits at both resolutions, max |i3rt - torch| <= 1e-4 * max |torch| (fp32 vs a float64 reference:
 * summation order and the folded batch norm's rounding); the model API on the same files; bad inputs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "fixtures.h"
#include "hrnet.h"
#include "network.h"

#define HRNET_REL_TOL 1e-4
#define ENCODE_ABS_TOL 1e-6

static i3rt_context *new_ctx(void) {
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    return ctx;
}

static i3_weights *open_weights(i3rt_context *ctx, const char *file) {
    const char *dir = getenv("I3RT_FIXTURES");
    cr_assert(dir, "I3RT_FIXTURES is not set (run through ctest, which runs tests/gen_hrnet.py first)");
    char path[1024];
    snprintf(path, sizeof path, "%s/hrnet/%s", dir, file);
    i3_weights *w = NULL;
    cr_assert_eq(i3_weights_open(ctx, path, &w), I3RT_OK, "%s", i3rt_context_error(ctx));
    return w;
}

static i3_network parse_network(i3rt_context *ctx, const i3_weights *w) {
    i3_network net;
    cr_assert_eq(i3_network_parse(ctx, w, &net), I3RT_OK, "%s", i3rt_context_error(ctx));
    return net;
}

static const float *io_tensor(i3_weights *io, const char *name, int64_t *numel) {
    const float *t = fx_tensor(io, name, numel);
    cr_assert(t, "%s: no f32 tensor %s", i3_weights_label(io), name);
    return t;
}

/* Builds the graph (low or full resolution), runs it on input, returns the output (malloc'ed). */
static float *run_hrnet(i3rt_context *ctx, const i3_network *net, i3_weights *w, i3_shape5 in, const float *input,
                        int full_resolution, int64_t out_shape[5]) {
    i3_graph g;
    i3_graph_init(&g, ctx);
    int out = -1;
    cr_assert_eq(i3_hrnet_build(ctx, &net->hrnet, w, in, full_resolution, &g, &out), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    i3_backend *b = NULL;
    cr_assert_eq(i3_backend_create(ctx, &b), I3RT_OK);
    cr_assert_eq(i3_graph_plan(&g, out, b), I3RT_OK, "%s", i3rt_context_error(ctx));
    void *arena = NULL, *scratch = NULL;
    cr_assert_eq(b->iface->alloc(b, g.arena_bytes, &arena), I3RT_OK);
    cr_assert_eq(b->iface->alloc(b, g.scratch_bytes ? g.scratch_bytes : 1, &scratch), I3RT_OK);
    cr_assert_eq(i3_graph_bind(&g, b, arena, NULL), I3RT_OK);
    memcpy(g.values[g.input].data, input, i3_value_bytes(&g.values[g.input]));
    cr_assert_eq(i3_graph_run(&g, b, scratch), I3RT_OK, "%s", i3rt_context_error(ctx));
    memcpy(out_shape, g.values[out].dims, 5 * sizeof *out_shape);
    float *y = malloc(i3_value_bytes(&g.values[out]));
    memcpy(y, g.values[out].data, i3_value_bytes(&g.values[out]));
    printf("hrnet graph: %d nodes, arena %.1f MiB, scratch %.1f MiB\n", g.n_nodes, g.arena_bytes / 1048576.0,
           g.scratch_bytes / 1048576.0);
    b->iface->free(b, arena);
    b->iface->free(b, scratch);
    i3_backend_destroy(b);
    i3_graph_free(&g);
    return y;
}

static void expect_close(const char *label, const float *got, const float *ref, int64_t n) {
    fx_err e = fx_compare(label, got, ref, n);
    cr_expect(e.max_ref > 0.5, "%s: reference logits are degenerate (max %.3g)", label, e.max_ref);
    cr_expect(e.rel <= HRNET_REL_TOL, "%s: relative error %.3g > %.0e", label, e.rel, HRNET_REL_TOL);
}

/* Encoding, both resolutions through i3_hrnet_build, and the full one through the model API. */
static void check_network(const char *weights_file, const char *io_file, int dims) {
    i3rt_context *ctx = new_ctx();
    i3_weights *w = open_weights(ctx, weights_file), *io = open_weights(ctx, io_file);
    const i3_network net = parse_network(ctx, w);
    cr_assert_eq(net.cls, I3_NET_RITM_HRNET18);
    cr_assert_eq(net.dims, dims);
    cr_assert_eq(net.hrnet.acs, dims == 3);

    int64_t shape[5];
    cr_assert(fx_shape5(io, "input", shape));
    const i3_shape5 in = {shape[0], shape[1], shape[2], shape[3], shape[4]};
    const int64_t s = in.d * in.h * in.w;
    int64_t n_in, n_clicks4, n_low, n_full;
    const float *expected_in = io_tensor(io, "input", &n_in);
    const float *clicks4 = io_tensor(io, "clicks", &n_clicks4);
    i3_hrnet_click clicks[16];
    const int n_clicks = (int)(n_clicks4 / 4);
    for (int i = 0; i < n_clicks; i++)
        clicks[i] = (i3_hrnet_click){clicks4[4 * i], clicks4[4 * i + 1], clicks4[4 * i + 2], clicks4[4 * i + 3] != 0};
    float *input = malloc((size_t)n_in * sizeof *input);
    cr_assert_eq(i3_hrnet_encode_input(ctx, &net.hrnet, in.d, in.h, in.w, io_tensor(io, "image", NULL),
                                       io_tensor(io, "prev_mask", NULL), clicks, n_clicks, input),
                 I3RT_OK, "%s", i3rt_context_error(ctx));
    fx_err image_err = fx_compare("hrnet encode: normalized image", input, expected_in, 3 * s);
    cr_expect(image_err.max_abs <= ENCODE_ABS_TOL);
    for (int64_t i = 3 * s; i < n_in; i++)
        cr_assert_eq(input[i], expected_in[i], "encoded channel %lld voxel %lld: %g, torch %g", (long long)(i / s),
                     (long long)(i % s), input[i], expected_in[i]);

    char label[128];
    const float *low_ref = io_tensor(io, "logits_low", &n_low), *full_ref = io_tensor(io, "logits", &n_full);
    int64_t out_shape[5];
    float *low = run_hrnet(ctx, &net, w, in, expected_in, 0, out_shape);
    cr_assert(fx_shape5(io, "logits_low", shape));
    cr_assert(memcmp(out_shape, shape, sizeof shape) == 0, "low-resolution logits shape differs from torch's");
    snprintf(label, sizeof label, "hrnet %s logits at 1/4 (%lldx%lldx%lld)", weights_file, (long long)out_shape[2],
             (long long)out_shape[3], (long long)out_shape[4]);
    expect_close(label, low, low_ref, n_low);

    /* the public API: load (builds at 1x1x1 first), forward at the input size */
    char path[1024];
    snprintf(path, sizeof path, "%s/hrnet/%s", getenv("I3RT_FIXTURES"), weights_file);
    i3rt_model *model = NULL;
    cr_assert_eq(i3rt_model_load(ctx, path, &model), I3RT_OK, "%s", i3rt_context_error(ctx));
    float *full = malloc((size_t)n_full * sizeof *full);
    const int64_t spatial[3] = {in.d, in.h, in.w};
    cr_assert_eq(i3rt_model_forward(model, input, spatial, full), I3RT_OK, "%s", i3rt_context_error(ctx));
    snprintf(label, sizeof label, "hrnet %s logits at the input size (%lldx%lldx%lld)", weights_file,
             (long long)in.d, (long long)in.h, (long long)in.w);
    expect_close(label, full, full_ref, n_full);

    i3rt_model_free(model);
    free(full);
    free(low);
    free(input);
    i3_weights_free(io);
    i3_weights_free(w);
    i3rt_context_free(ctx);
}

Test(hrnet, ritm_2d_vs_torch, .timeout = 600) { check_network("hrnet2d.safetensors", "io2d.safetensors", 2); }

Test(hrnet, acs_3d_vs_torch, .timeout = 1200) { check_network("hrnet3d.safetensors", "io3d.safetensors", 3); }

/* A batch of two (RITM's flip: the input and its mirror): each sample's logits do not depend on the other
 * sample (bit for bit: the same batch with the other sample zeroed), and equal a batch of one's up to the
 * kernels' summation order (a batch may take another convolution strategy; random-weight HRNets amplify it). */
Test(hrnet, batch_of_two) {
    i3rt_context *ctx = new_ctx();
    i3_weights *w = open_weights(ctx, "hrnet2d.safetensors"), *io = open_weights(ctx, "io2d.safetensors");
    const i3_network net = parse_network(ctx, w);
    int64_t shape[5], n_in;
    cr_assert(fx_shape5(io, "input", shape));
    const i3_shape5 one = {1, shape[1], shape[2], shape[3], shape[4]}, two = {2, shape[1], shape[2], shape[3], shape[4]};
    const float *input = io_tensor(io, "input", &n_in);
    float *pair = malloc(2 * (size_t)n_in * sizeof *pair), *lone = calloc(2 * (size_t)n_in, sizeof *lone);
    memcpy(pair, input, (size_t)n_in * sizeof *pair);
    for (int64_t r = 0; r < n_in / one.w; r++) /* the mirror along w */
        for (int64_t x = 0; x < one.w; x++) pair[n_in + r * one.w + x] = input[r * one.w + one.w - 1 - x];
    int64_t out_one[5], out_two[5];
    for (int full = 0; full < 2; full++) {
        float *y2 = run_hrnet(ctx, &net, w, two, pair, full, out_two);
        const int64_t per = out_two[1] * out_two[2] * out_two[3] * out_two[4];
        for (int k = 0; k < 2; k++) {
            memset(lone, 0, 2 * (size_t)n_in * sizeof *lone);
            memcpy(lone + k * n_in, pair + k * n_in, (size_t)n_in * sizeof *lone);
            float *alone = run_hrnet(ctx, &net, w, two, lone, full, out_two);
            cr_expect(memcmp(alone + k * per, y2 + k * per, (size_t)per * sizeof *y2) == 0,
                      "sample %d's logits change with the other sample", k);
            float *y1 = run_hrnet(ctx, &net, w, one, pair + k * n_in, full, out_one);
            cr_assert(out_one[0] == 1 && out_two[0] == 2 && memcmp(out_one + 1, out_two + 1, 4 * sizeof *out_one) == 0);
            char label[96];
            snprintf(label, sizeof label, "hrnet batch of 2, sample %d, %s resolution", k, full ? "full" : "1/4");
            fx_err e = fx_compare(label, y2 + k * per, y1, per);
            cr_expect(e.rel <= HRNET_REL_TOL, "%s: relative error %.3g", label, e.rel);
            free(y1), free(alone);
        }
        free(y2);
    }
    free(pair), free(lone);
    i3_weights_free(io);
    i3_weights_free(w);
    i3rt_context_free(ctx);
}

/* A rebuild for another input size reuses the folded weights (i3_weights_derived's cache): the same host
 * pointers in the same order, which lets a model on a device skip uploading them again (runtime/model.c). */
Test(hrnet, rebuild_reuses_folded_weights) {
    i3rt_context *ctx = new_ctx();
    i3_weights *w = open_weights(ctx, "hrnet2d.safetensors");
    const i3_network net = parse_network(ctx, w);
    static const float *hosts[2][2048];
    int n[2] = {0, 0};
    const i3_shape5 sizes[2] = {{1, 6, 1, 32, 40}, {2, 6, 1, 27, 33}};
    for (int k = 0; k < 2; k++) {
        i3_graph g;
        i3_graph_init(&g, ctx);
        int out;
        cr_assert_eq(i3_hrnet_build(ctx, &net.hrnet, w, sizes[k], 1, &g, &out), I3RT_OK, "%s", i3rt_context_error(ctx));
        for (int v = 0; v < g.n_values; v++)
            if (g.values[v].kind == I3_VALUE_WEIGHT && n[k] < 2048) hosts[k][n[k]++] = g.values[v].host;
        i3_graph_free(&g);
    }
    cr_assert(n[0] > 100 && n[0] < 2048 && n[0] == n[1], "%d and %d weights", n[0], n[1]);
    cr_assert(memcmp(hosts[0], hosts[1], (size_t)n[0] * sizeof hosts[0][0]) == 0, "the rebuild made new weight buffers");
    i3_weights_free(w);
    i3rt_context_free(ctx);
}

Test(hrnet, bad_inputs) {
    i3rt_context *ctx = new_ctx();
    i3_weights *w = open_weights(ctx, "hrnet2d.safetensors");
    const i3_network net = parse_network(ctx, w);
    i3_graph g;
    i3_graph_init(&g, ctx);
    int out;
    const i3_shape5 deep = {1, 6, 4, 16, 16}, narrow = {1, 3, 1, 16, 16};
    cr_expect_eq(i3_hrnet_build(ctx, &net.hrnet, w, deep, 1, &g, &out), I3RT_ERR_SHAPE);
    cr_expect(strstr(i3rt_context_error(ctx), "expected [n, 6, 1, h, w]"), "%s", i3rt_context_error(ctx));
    cr_expect_eq(i3_network_build(ctx, &net, w, narrow, &g, &out), I3RT_ERR_SHAPE);
    printf("bad input shapes: %s\n", i3rt_context_error(ctx));

    float image[3 * 8 * 8] = {0}, enc[6 * 8 * 8];
    const i3_hrnet_click outside = {0.0f, 3.0f, 8.0f, 1}, in_3d = {1.0f, 3.0f, 3.0f, 0};
    cr_expect_eq(i3_hrnet_encode_input(ctx, &net.hrnet, 1, 8, 8, image, NULL, &outside, 1, enc),
                 I3RT_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(i3rt_context_error(ctx), "click 0 at (z 0, y 3, x 8) is outside"), "%s",
              i3rt_context_error(ctx));
    cr_expect_eq(i3_hrnet_encode_input(ctx, &net.hrnet, 1, 8, 8, image, NULL, &in_3d, 1, enc),
                 I3RT_ERR_INVALID_ARGUMENT);
    /* no click, no previous mask: zero mask and maps (RITM's padded clicks give D2 = 1e6) */
    cr_expect_eq(i3_hrnet_encode_input(ctx, &net.hrnet, 1, 8, 8, image, NULL, NULL, 0, enc), I3RT_OK);
    for (int i = 3 * 64; i < 6 * 64; i++) cr_expect_eq(enc[i], 0.0f);
    i3_weights_free(w);
    i3rt_context_free(ctx);
}

/* i3_hrnet_click_maps paints each disk within its reach; DistMaps' definition (a pixel is 1 when the squared
 * distance to the nearest click of that sign, in float32, is at most norm_radius^2) over every pixel, for
 * fractional clicks inside, near and beyond the borders, and RITM's padding (y and x both negative, skipped),
 * in 2D and 3D (balls). */
Test(hrnet, click_maps_paint_as_distmaps) {
    const i3_hrnet_config cfg = {.use_disks = 1, .norm_radius = 5.0f, .with_prev_mask = 1};
    fx_rng r = fx_rng_seed(7);
    for (int dims = 2; dims <= 3; dims++) {
        const int64_t d = dims == 3 ? 13 : 1, h = 37, w = 29, s = d * h * w;
        enum { N = 12 };
        float coords[3 * N];
        fx_fill(&r, coords, 3 * N, -9.0f, 45.0f);
        i3_hrnet_click clicks[N];
        for (int i = 0; i < N; i++)
            clicks[i] = (i3_hrnet_click){dims == 3 ? coords[3 * i] * 0.3f : 0.0f, coords[3 * i + 1], coords[3 * i + 2], i % 3 != 0};
        clicks[N - 1].y = -2.5f, clicks[N - 1].x = -0.5f; /* padding, though within reach of pixel (0, 0) */
        float *maps = malloc((size_t)(2 * s) * sizeof *maps);
        i3_hrnet_click_maps(&cfg, d, h, w, clicks, N, maps);
        int64_t ones = 0;
        for (int sign = 0; sign < 2; sign++)
            for (int64_t v = 0; v < s; v++) {
                const int64_t z = v / (h * w), y = v / w % h, x = v % w;
                float best = 1e6f;
                for (int i = 0; i < N; i++) {
                    if (clicks[i].positive != (sign == 0) || (clicks[i].y < 0 && clicks[i].x < 0)) continue;
                    const float dz = (float)z - clicks[i].z, dy = (float)y - clicks[i].y, dx = (float)x - clicks[i].x;
                    const float d2 = dz * dz + dy * dy + dx * dx;
                    best = d2 < best ? d2 : best;
                }
                const float want = best <= 25.0f ? 1.0f : 0.0f;
                cr_assert_eq(maps[sign * s + v], want, "%dD %s map at (%lld, %lld, %lld): %g, DistMaps %g", dims,
                             sign ? "negative" : "positive", (long long)z, (long long)y, (long long)x,
                             maps[sign * s + v], want);
                ones += want != 0.0f;
            }
        printf("%dD click maps: %lld of %lld pixels in a disk, as DistMaps\n", dims, (long long)ones, (long long)(2 * s));
        cr_assert_gt(ones, 0);
        free(maps);
    }
}

/* Broken files from gen_hrnet.py: each fails at load with a message naming the problem. */
Test(hrnet, bad_files) {
    const char *cases[][2] = {
        {"bad_missing.safetensors", "missing tensor feature_extractor.stage4.2.fuse_layers.3.0.2.1.running_var"},
        {"bad_acs.safetensors", "metadata \"acs\" is '2'"},
        {"bad_rgb_conv.safetensors", "arch_kwargs.use_rgb_conv is set"},
        {"bad_coord.safetensors", "coord_channels 2, with_prev_mask true: expected 3"},
    };
    i3rt_context *ctx = new_ctx();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/hrnet/%s", getenv("I3RT_FIXTURES"), cases[i][0]);
        i3rt_model *model = NULL;
        cr_expect_neq(i3rt_model_load(ctx, path, &model), I3RT_OK, "%s loaded", cases[i][0]);
        cr_expect_null(model);
        cr_expect(strstr(i3rt_context_error(ctx), cases[i][1]), "%s: message '%s'", cases[i][0], i3rt_context_error(ctx));
        printf("%s: %s\n", cases[i][0], i3rt_context_error(ctx));
    }
    i3rt_context_free(ctx);
}
