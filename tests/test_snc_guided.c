/* Slice-and-Conquer's guided 3D step (runtime/snc_guided.c) and its network (RITM's HRNet as ACS
 * convolutions with the guide channels and the mask attention, runtime/hrnet.c) against PyTorch.
 *
 * tests/gen_snc_guided.py builds tools/snc_models.py's GuidedHRNetModel (HRNet-18s, random weights, the
 * attention's gate spanning about 0.5..1.5), converts it with convert_ritm.py --guided and runs it in float64
 * on an 18 x 21 x 24 volume with three clicks and four accurate 2D masks (axial, coronal, sagittal crossing,
 * and a later axial one on the border).
 * Checked: i3_snc_guided_encode against guided_input (image to 1e-6, the click balls, previous
 * probabilities, placed masks and annotated slices exactly); the logits at the features' resolution
 * (i3_hrnet_build) and at the input size (i3_snc_guided_predict, as sigmoid probabilities, and the
 * model API), max |i3rt - torch| <= 1e-4 * max |torch logit|; errors of bad masks, clicks and files. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "fixtures.h"
#include "network.h"
#include "snc_guided.h"

#define REL_TOL 1e-4
#define MAX_MASKS 8

typedef struct {
    i3_weights *io;
    int64_t d, h, w;
    const float *volume, *prev, *expected_input, *logits_low, *logits;
    int64_t n_input, n_low;
    i3_hrnet_click clicks[8];
    int n_clicks;
    i3_snc_mask2d masks[MAX_MASKS];
    uint8_t *planes[MAX_MASKS];
    int n_masks;
} guided_case;

static const char *fixture(const char *name) {
    const char *dir = getenv("I3RT_FIXTURES");
    cr_assert(dir, "I3RT_FIXTURES is not set (run through ctest, which runs tests/gen_snc_guided.py first)");
    static char path[1024];
    snprintf(path, sizeof path, "%s/snc_guided/%s", dir, name);
    return path;
}

static const float *need(i3_weights *w, const char *name, int64_t *numel) {
    const float *t = fx_tensor(w, name, numel);
    cr_assert(t, "%s: no f32 tensor %s", i3_weights_label(w), name);
    return t;
}

static void load_case(guided_case *c) {
    memset(c, 0, sizeof *c);
    c->io = fx_open("snc_guided", "io.safetensors");
    cr_assert(c->io, "fixture snc_guided/io.safetensors missing");
    int64_t shape[5];
    cr_assert(fx_shape5(c->io, "input", shape));
    c->d = shape[2], c->h = shape[3], c->w = shape[4];
    c->volume = need(c->io, "volume", NULL), c->prev = need(c->io, "prev", NULL);
    c->expected_input = need(c->io, "input", &c->n_input);
    c->logits_low = need(c->io, "logits_low", &c->n_low), c->logits = need(c->io, "logits", NULL);
    int64_t n4, n2;
    const float *clicks = need(c->io, "clicks", &n4), *slices = need(c->io, "mask_slices", &n2);
    c->n_clicks = (int)(n4 / 4), c->n_masks = (int)(n2 / 2);
    cr_assert(c->n_clicks <= 8 && c->n_masks <= MAX_MASKS);
    for (int i = 0; i < c->n_clicks; i++)
        c->clicks[i] = (i3_hrnet_click){clicks[4 * i], clicks[4 * i + 1], clicks[4 * i + 2], clicks[4 * i + 3] != 0};
    for (int i = 0; i < c->n_masks; i++) {
        char name[32];
        snprintf(name, sizeof name, "mask_%d", i);
        int64_t n;
        const float *m = need(c->io, name, &n);
        c->planes[i] = malloc((size_t)n);
        for (int64_t p = 0; p < n; p++) c->planes[i][p] = m[p] != 0.0f;
        c->masks[i] = (i3_snc_mask2d){(i3_axis)slices[2 * i], (int64_t)slices[2 * i + 1], c->planes[i]};
    }
}

static void free_case(guided_case *c) {
    for (int i = 0; i < c->n_masks; i++) free(c->planes[i]);
    i3_weights_free(c->io);
}

static i3rt_context *new_ctx(void) {
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    return ctx;
}

static void expect_close(const char *label, const float *got, const float *ref, int64_t n) {
    fx_err e = fx_compare(label, got, ref, n);
    cr_expect(e.max_ref > 0.5, "%s: reference logits are degenerate (max %.3g)", label, e.max_ref);
    cr_expect(e.rel <= REL_TOL, "%s: relative error %.3g > %.0e", label, e.rel, REL_TOL);
}

Test(snc_guided, encode_matches_torch) {
    i3rt_context *ctx = new_ctx();
    i3_snc_guided *net = NULL;
    cr_assert_eq(i3_snc_guided_load(ctx, fixture("guided3d.safetensors"), &net), I3RT_OK, "%s", i3rt_context_error(ctx));
    guided_case c;
    load_case(&c);
    const int64_t s = c.d * c.h * c.w;
    cr_assert_eq(c.n_input, 8 * s);
    float *input = malloc((size_t)c.n_input * sizeof *input);
    cr_assert_eq(i3_snc_guided_encode(ctx, i3_snc_guided_config(net), c.d, c.h, c.w, c.volume, c.prev, c.clicks,
                                      c.n_clicks, c.masks, c.n_masks, input),
                 I3RT_OK, "%s", i3rt_context_error(ctx));
    fx_err e = fx_compare("snc_guided encode: normalized image", input, c.expected_input, 3 * s);
    cr_expect(e.max_abs <= 1e-6);
    int64_t differing = 0, annotated = 0;
    for (int64_t i = 3 * s; i < 8 * s; i++) differing += input[i] != c.expected_input[i];
    for (int64_t i = 7 * s; i < 8 * s; i++) annotated += input[i] != 0.0f;
    cr_expect_eq(differing, 0, "%lld voxels of the coord channels differ from torch", (long long)differing);
    cr_expect_gt(annotated, 0);
    printf("snc_guided encode: %d clicks, %d masks, %lld annotated voxels, coord channels equal\n", c.n_clicks,
           c.n_masks, (long long)annotated);
    free(input);
    free_case(&c);
    i3_snc_guided_free(net);
    i3rt_context_free(ctx);
}

Test(snc_guided, network_vs_torch, .timeout = 600) {
    i3rt_context *ctx = new_ctx();
    guided_case c;
    load_case(&c);
    const int64_t s = c.d * c.h * c.w;

    /* the cls_head's resolution through the graph builder */
    i3_weights *w = NULL;
    cr_assert_eq(i3_weights_open(ctx, fixture("guided3d.safetensors"), &w), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_network net;
    cr_assert_eq(i3_network_parse(ctx, w, &net), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert(net.hrnet.snc_guided && net.hrnet.acs && net.hrnet.small && net.hrnet.attention_hidden == 16);
    i3_graph g;
    i3_graph_init(&g, ctx);
    int out = -1;
    const i3_shape5 in = {1, 8, c.d, c.h, c.w};
    cr_assert_eq(i3_hrnet_build(ctx, &net.hrnet, w, in, 0, &g, &out), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_backend *b = NULL;
    cr_assert_eq(i3_backend_create(ctx, &b), I3RT_OK);
    cr_assert_eq(i3_graph_plan(&g, out, b), I3RT_OK, "%s", i3rt_context_error(ctx));
    void *arena = NULL, *scratch = NULL;
    cr_assert_eq(b->iface->alloc(b, g.arena_bytes, &arena), I3RT_OK);
    cr_assert_eq(b->iface->alloc(b, g.scratch_bytes ? g.scratch_bytes : 1, &scratch), I3RT_OK);
    cr_assert_eq(i3_graph_bind(&g, b, arena, NULL), I3RT_OK);
    memcpy(g.values[g.input].data, c.expected_input, i3_value_bytes(&g.values[g.input]));
    cr_assert_eq(i3_graph_run(&g, b, scratch), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_shape5_numel(i3_value_shape5(&g.values[out])), c.n_low);
    expect_close("snc_guided logits at 1/4 (5x6x6)", g.values[out].data, c.logits_low, c.n_low);
    int gates = 0;
    for (int i = 0; i < g.n_nodes; i++) gates += g.nodes[i].op == I3_OP_CHANNEL_GATE;
    cr_expect_eq(gates, 1, "the graph has %d channel gates", gates);
    b->iface->free(b, arena), b->iface->free(b, scratch);
    i3_backend_destroy(b);
    i3_graph_free(&g);
    i3_weights_free(w);

    /* the guided step end to end: probabilities = sigmoid(logits at the input size) */
    i3_snc_guided *guided = NULL;
    cr_assert_eq(i3_snc_guided_load(ctx, fixture("guided3d.safetensors"), &guided), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    float *probs = malloc((size_t)s * sizeof *probs), *logits = malloc((size_t)s * sizeof *logits);
    cr_assert_eq(i3_snc_guided_predict(guided, c.d, c.h, c.w, c.volume, c.prev, c.clicks, c.n_clicks, c.masks,
                                       c.n_masks, probs),
                 I3RT_OK, "%s", i3rt_context_error(ctx));
    double max_logit = 0.0, max_prob_err = 0.0;
    for (int64_t i = 0; i < s; i++) {
        max_logit = fmax(max_logit, fabs(c.logits[i]));
        max_prob_err = fmax(max_prob_err, fabs(probs[i] - 1.0 / (1.0 + exp(-(double)c.logits[i]))));
    }
    /* the sigmoid's slope is at most 1/4: a logit error e moves a probability by at most e / 4 */
    printf("snc_guided probabilities: max |p - sigmoid(torch)| %.3g (max |logit| %.3g)\n", max_prob_err, max_logit);
    cr_expect(max_prob_err <= 0.25 * REL_TOL * max_logit + 1e-6, "probabilities differ by %.3g", max_prob_err);
    for (int64_t i = 0; i < s; i++) logits[i] = logf(probs[i] / (1.0f - probs[i]));
    expect_close("snc_guided logits at the input size (18x21x24), from the probabilities", logits, c.logits, s);
    i3_snc_guided_free(guided);

    free(probs), free(logits);
    free_case(&c);
    i3rt_context_free(ctx);
}

Test(snc_guided, bad_inputs) {
    i3rt_context *ctx = new_ctx();
    i3_snc_guided *net = NULL;
    cr_assert_eq(i3_snc_guided_load(ctx, fixture("guided3d.safetensors"), &net), I3RT_OK, "%s", i3rt_context_error(ctx));
    enum { D = 6, H = 7, W = 5 };
    float volume[D * H * W] = {0}, probs[D * H * W];
    for (int i = 0; i < D * H * W; i++) probs[i] = -1.0f;
    uint8_t plane[H * W] = {1};
    const i3_hrnet_click inside = {1.0f, 2.0f, 3.0f, 1}, outside = {1.0f, 2.0f, 5.0f, 1};
    const struct {
        i3_snc_mask2d mask;
        const i3_hrnet_click *click;
        const char *message;
    } cases[] = {
        {{I3_SAGITTAL, 5, plane}, &inside, "2D mask 0 is on sagittal slice 5, outside 0..4 of the 6 x 7 x 5 volume"},
        {{I3_AXIAL, -1, plane}, &inside, "2D mask 0 is on axial slice -1, outside 0..5"},
        {{(i3_axis)3, 0, plane}, &inside, "2D mask 0 has axis 3 (0..2) or no data"},
        {{I3_AXIAL, 0, NULL}, &inside, "2D mask 0 has axis 0 (0..2) or no data"},
        {{I3_AXIAL, 0, plane}, &outside, "click 0 at (z 1, y 2, x 5) is outside the 6 x 7 x 5 volume"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_expect_eq(i3_snc_guided_predict(net, D, H, W, volume, NULL, cases[i].click, 1, &cases[i].mask, 1, probs),
                     I3RT_ERR_INVALID_ARGUMENT, "case %zu", i);
        cr_expect(strstr(i3rt_context_error(ctx), cases[i].message), "case %zu: '%s'", i, i3rt_context_error(ctx));
        printf("bad input %zu: %s\n", i, i3rt_context_error(ctx));
    }
    for (int i = 0; i < D * H * W; i++) cr_assert_eq(probs[i], -1.0f, "probs written on failure");
    cr_expect_eq(i3_snc_guided_predict(net, 0, H, W, volume, NULL, NULL, 0, NULL, 0, probs), I3RT_ERR_INVALID_ARGUMENT);
    /* and a good call still works afterwards, on a volume smaller than the strides (1/32 of 6 x 7 x 5) */
    const i3_snc_mask2d good = {I3_AXIAL, 2, plane};
    cr_expect_eq(i3_snc_guided_predict(net, D, H, W, volume, NULL, &inside, 1, &good, 1, probs), I3RT_OK, "%s",
                 i3rt_context_error(ctx));
    for (int i = 0; i < D * H * W; i++) cr_expect(probs[i] >= 0.0f && probs[i] <= 1.0f);
    i3_snc_guided_free(net);
    i3rt_context_free(ctx);
}

Test(snc_guided, bad_files) {
    const char *cases[][2] = {
        {"bad_2d.safetensors", "snc_guided is a 3D network: metadata \"acs\" must be \"1\""},
        {"bad_hidden.safetensors", "snc_guided needs with_prev_mask true and a positive int \"mask_attention_hidden\""},
    };
    i3rt_context *ctx = new_ctx();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        i3_snc_guided *net = NULL;
        cr_expect_neq(i3_snc_guided_load(ctx, fixture(cases[i][0]), &net), I3RT_OK, "%s loaded", cases[i][0]);
        cr_expect_null(net);
        cr_expect(strstr(i3rt_context_error(ctx), cases[i][1]), "%s: '%s'", cases[i][0], i3rt_context_error(ctx));
        printf("%s: %s\n", cases[i][0], i3rt_context_error(ctx));
    }
    /* a plain (not guided) RITM file is refused by the guided step */
    i3_snc_guided *net = NULL;
    const char *dir = getenv("I3RT_FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/snc_guided/plain3d.safetensors", dir);
    cr_expect_eq(i3_snc_guided_load(ctx, path, &net), I3RT_ERR_UNSUPPORTED, "%s", i3rt_context_error(ctx));
    cr_expect(strstr(i3rt_context_error(ctx), "without snc_guided"), "'%s'", i3rt_context_error(ctx));
    i3rt_context_free(ctx);
}
