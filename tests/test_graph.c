/* The graph builders' shape checks and the activation memory planner: on random U-Net-like graphs no
 * two values that are alive at the same time share arena bytes, and reuse makes the peak smaller
 * than keeping everything; on nnU-Net's encoder-decoder shape the peak is the largest set of values
 * alive at one node, the least any placement needs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static i3_ctx *ctx;
static void setup(void) { cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK); }
static void teardown(void) { i3rt_context_free(ctx); }

static int weight(i3_graph *g, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
    int64_t dims[5] = {a, b, c, d, e};
    return i3_graph_weight(g, name, NULL, ndim, dims);
}

/* conv -> norm (in place) -> ... a small encoder/decoder with a skip, random channel counts */
static int build_unet_like(i3_graph *g, unsigned seed) {
    srand(seed);
    int c0 = 1 + rand() % 4, c1 = 2 + rand() % 6, c2 = 2 + rand() % 8;
    i3_shape5 in = {1, c0, 8, 8, 8};
    int x = i3_graph_input(g, in);
    i3_conv_params p3 = {.cout = c1, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}};
    i3_norm_params np = {.eps = 1e-5f, .act = {I3_ACT_LEAKY_RELU, 0.01f}};
    int skip = i3_graph_conv(g, x, weight(g, "w0", 5, c1, c0, 3, 3, 3), -1, &p3, "enc0");
    skip = i3_graph_instance_norm(g, skip, weight(g, "g0", 1, c1, 0, 0, 0, 0), -1, &np, "enc0.norm");
    i3_conv_params down = {.cout = c2, .k = {3, 3, 3}, .stride = {2, 2, 2}, .pad = {1, 1, 1}};
    int y = i3_graph_conv(g, skip, weight(g, "w1", 5, c2, c1, 3, 3, 3), -1, &down, "enc1");
    y = i3_graph_instance_norm(g, y, -1, -1, &np, "enc1.norm");
    i3_conv_transpose_params up = {.cout = c1, .k = {2, 2, 2}};
    y = i3_graph_conv_transpose(g, y, weight(g, "wt", 5, c2, c1, 2, 2, 2), -1, &up, "up");
    y = i3_graph_concat(g, skip, y, "cat");
    i3_conv_params p1 = {.cout = c1, .k = {1, 1, 1}, .stride = {1, 1, 1}};
    y = i3_graph_conv(g, y, weight(g, "w2", 5, c1, 2 * c1, 1, 1, 1), -1, &p1, "dec");
    y = i3_graph_add(g, y, skip, (i3_act){I3_ACT_RELU, 0}, "res");
    return i3_graph_softmax(g, y, "probs");
}

static bool alive_together(const i3_graph *g, int u, int v) {
    const i3_value *a = &g->values[u], *b = &g->values[v];
    if (a->view_of == v || b->view_of == u) return false; /* a concat's input written inside its output */
    int as = a->producer, ae = a->last_use, bs = b->producer, be = b->last_use;
    if (as > be || bs > ae) return false;
    /* an in-place node hands its input's bytes to its output */
    if (ae == bs && g->nodes[bs].in[0] == u && a->offset == b->offset) return false;
    if (be == as && g->nodes[as].in[0] == v && a->offset == b->offset) return false;
    return true;
}

Test(planner, live_values_never_overlap, .init = setup, .fini = teardown) {
    for (unsigned seed = 1; seed <= 50; seed++) {
        i3_graph g;
        i3_graph_init(&g, ctx);
        int out = build_unet_like(&g, seed);
        cr_assert_geq(out, 0, "build failed: %s", i3rt_context_error(ctx));
        cr_assert_eq(i3_graph_plan(&g, out, NULL), I3RT_OK);
        size_t sum = 0;
        for (int u = 0; u < g.n_values; u++) {
            const i3_value *a = &g.values[u];
            if (a->kind == I3_VALUE_WEIGHT) continue;
            sum += i3_value_bytes(a);
            cr_assert_leq(a->offset + i3_value_bytes(a), g.arena_bytes, "%s outside the arena", a->name);
            for (int v = u + 1; v < g.n_values; v++) {
                const i3_value *b = &g.values[v];
                if (b->kind == I3_VALUE_WEIGHT || !alive_together(&g, u, v)) continue;
                bool disjoint = a->offset + i3_value_bytes(a) <= b->offset || b->offset + i3_value_bytes(b) <= a->offset;
                cr_assert(disjoint, "seed %u: %s and %s are alive together but overlap", seed, a->name, b->name);
            }
        }
        cr_assert_lt(g.arena_bytes, sum + 256 * (size_t)g.n_values, "no reuse at all");
        i3_graph_free(&g);
    }
}

/* nnU-Net's PlainConvUNet shape: per stage two conv + instance norm (in place), stride-2 convs down,
 * transposed convs up, concat with the skip, two convs; `stages` levels from `width` channels. */
static int build_plain_unet(i3_graph *g, int stages, int64_t width, int64_t side) {
    i3_norm_params np = {.eps = 1e-5f, .act = {I3_ACT_LEAKY_RELU, 0.01f}};
    int x = i3_graph_input(g, (i3_shape5){1, 1, side, side, side}), skips[8];
    int64_t c_in = 1, widths[8];
    char name[32];
    for (int s = 0; s < stages; s++) {
        widths[s] = width << s;
        for (int k = 0; k < 2; k++) {
            i3_conv_params p = {.cout = widths[s], .k = {3, 3, 3}, .stride = {s > 0 && k == 0 ? 2 : 1, s > 0 && k == 0 ? 2 : 1,
                                                                             s > 0 && k == 0 ? 2 : 1}, .pad = {1, 1, 1}};
            snprintf(name, sizeof name, "enc%d.%d", s, k);
            x = i3_graph_conv(g, x, weight(g, name, 5, widths[s], k ? widths[s] : c_in, 3, 3, 3), -1, &p, name);
            x = i3_graph_instance_norm(g, x, -1, -1, &np, name);
        }
        c_in = widths[s];
        skips[s] = x;
    }
    for (int s = stages - 2; s >= 0; s--) {
        i3_conv_transpose_params up = {.cout = widths[s], .k = {2, 2, 2}};
        snprintf(name, sizeof name, "up%d", s);
        x = i3_graph_conv_transpose(g, x, weight(g, name, 5, widths[s + 1], widths[s], 2, 2, 2), -1, &up, name);
        x = i3_graph_concat(g, x, skips[s], name); /* nnU-Net's order: torch.cat((x, skip), 1) */
        for (int k = 0; k < 2; k++) {
            i3_conv_params p = {.cout = widths[s], .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}};
            snprintf(name, sizeof name, "dec%d.%d", s, k);
            x = i3_graph_conv(g, x, weight(g, name, 5, widths[s], (k ? 1 : 2) * widths[s], 3, 3, 3), -1, &p, name);
            x = i3_graph_instance_norm(g, x, -1, -1, &np, name);
        }
    }
    i3_conv_params seg = {.cout = 3, .k = {1, 1, 1}, .stride = {1, 1, 1}};
    return i3_graph_conv(g, x, weight(g, "seg", 5, 3, widths[0], 1, 1, 1), -1, &seg, "seg");
}

Test(planner, unet_peak_is_the_live_bound, .init = setup, .fini = teardown) {
    for (int stages = 2; stages <= 6; stages++) {
        i3_graph g;
        i3_graph_init(&g, ctx);
        int out = build_plain_unet(&g, stages, 4, 32);
        cr_assert_geq(out, 0, "build failed: %s", i3rt_context_error(ctx));
        cr_assert_eq(i3_graph_plan(&g, out, NULL), I3RT_OK);
        /* the most bytes alive at one node; an in-place output shares its input's; a concat's second input
         * that its producer writes inside the concat's output (a view) takes that output's bytes from then */
        size_t bound = 0;
        for (int t = -1; t < g.n_nodes; t++) {
            size_t live = 0;
            for (int v = 0; v < g.n_values; v++) {
                const i3_value *a = &g.values[v];
                const int from = a->producer, to = a->last_use > a->producer ? a->last_use : a->producer;
                if (a->view_of >= 0) {
                    if (t >= from && t < to) live += i3_value_bytes(&g.values[a->view_of]);
                    continue;
                }
                if (a->kind == I3_VALUE_WEIGHT || t < from || t > to) continue;
                const i3_node *node = from >= 0 ? &g.nodes[from] : NULL;
                if (t == from && node && g.values[node->in[0]].offset == a->offset &&
                    g.values[node->in[0]].last_use == t && g.values[node->in[0]].kind != I3_VALUE_WEIGHT)
                    continue; /* written in place over its input, counted there */
                live += (i3_value_bytes(a) + I3_ARENA_ALIGN - 1) / I3_ARENA_ALIGN * I3_ARENA_ALIGN;
            }
            if (live > bound) bound = live;
        }
        for (int n = 0; n < g.n_nodes; n++) { /* each upsampling written into its concat (before the skip) */
            const i3_node *node = &g.nodes[n];
            if (node->op != I3_OP_CONCAT) continue;
            const i3_value *up = &g.values[node->in[0]], *skip = &g.values[node->in[1]], *cat = &g.values[node->out];
            cr_assert_eq(up->view_of, node->out, "%s is not written inside %s", up->name, cat->name);
            cr_assert_eq(up->offset, cat->offset);
            cr_assert_eq(skip->view_of, -1, "%s comes from an in-place norm: it has its own block", skip->name);
        }
        printf("planner: U-Net of %d stages, %d nodes: arena %zu bytes, largest live set %zu\n", stages, g.n_nodes,
               g.arena_bytes, bound);
        cr_assert_eq(g.arena_bytes, bound, "%d stages: arena %zu bytes, but at most %zu are alive at once", stages,
                     g.arena_bytes, bound);
        i3_graph_free(&g);
    }
}

/* HRNet's aggregation: concat(concat(concat(x, up1), up2), up3), each up a resize of its own branch. Each
 * concat's output is written inside the next one's (a chain of views) and each up at its place in the last
 * (test_hrnet checks the numbers against PyTorch). */
Test(planner, concat_chain_writes_every_part_in_place, .init = setup, .fini = teardown) {
    i3_graph g;
    i3_graph_init(&g, ctx);
    int x = i3_graph_input(&g, (i3_shape5){1, 2, 1, 4, 4});
    x = i3_graph_activation(&g, x, (i3_act){I3_ACT_RELU, 0}, "branch0"); /* an op that may run in place: no view */
    int feats = x, parts[4] = {x}, cats[3];
    for (int i = 1; i < 4; i++) {
        i3_conv_params p = {.cout = 2, .k = {1, 1, 1}, .stride = {1, 1, 1}};
        char name[16];
        snprintf(name, sizeof name, "branch%d", i);
        int branch = i3_graph_conv(&g, x, weight(&g, name, 5, 2, 2, 1, 1, 1), -1, &p, name);
        i3_resize_params up = {.out = {1, 4, 4}};
        parts[i] = i3_graph_resize(&g, branch, &up, "up");
        feats = cats[i - 1] = i3_graph_concat(&g, feats, parts[i], "cat");
    }
    cr_assert_geq(feats, 0, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_graph_plan(&g, feats, NULL), I3RT_OK);
    const i3_value *last = &g.values[cats[2]];
    size_t expect = last->offset;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(g.values[cats[i]].offset, last->offset, "concat %d not at the start of the last one", i);
        if (i < 2) cr_assert_eq(g.values[cats[i]].view_of, cats[i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        if (i > 0) {
            cr_assert_eq(g.values[parts[i]].view_of, cats[i - 1], "up%d is not written inside its concat", i);
            cr_assert_eq(g.values[parts[i]].offset, expect, "up%d at %zu, not %zu", i, g.values[parts[i]].offset,
                         expect);
        }
        expect += i3_value_bytes(&g.values[parts[i]]);
    }
    i3_graph_free(&g);
}

Test(planner, in_place_norm_reuses_its_input, .init = setup, .fini = teardown) {
    i3_graph g;
    i3_graph_init(&g, ctx);
    i3_shape5 in = {1, 4, 4, 4, 4};
    int x = i3_graph_input(&g, in);
    i3_conv_params p = {.cout = 4, .k = {1, 1, 1}, .stride = {1, 1, 1}};
    int y = i3_graph_conv(&g, x, weight(&g, "w", 5, 4, 4, 1, 1, 1), -1, &p, "conv");
    i3_norm_params np = {.eps = 1e-5f};
    int z = i3_graph_instance_norm(&g, y, -1, -1, &np, "norm");
    cr_assert_eq(i3_graph_plan(&g, z, NULL), I3RT_OK);
    cr_assert_eq(g.values[y].offset, g.values[z].offset);
    cr_assert_eq(g.arena_bytes, 2 * 4 * 64 * sizeof(float), "input + one activation, got %zu", g.arena_bytes);
    i3_graph_free(&g);
}

Test(builders, shape_errors_name_the_node_and_tensor, .init = setup, .fini = teardown) {
    i3_graph g;
    i3_graph_init(&g, ctx);
    i3_shape5 in = {1, 3, 4, 4, 4};
    int x = i3_graph_input(&g, in);
    i3_conv_params p = {.cout = 8, .k = {3, 3, 3}, .stride = {1, 1, 1}, .pad = {1, 1, 1}};
    int w = weight(&g, "encoder.stages.0.0.convs.0.conv.weight", 5, 8, 2, 3, 3, 3);
    cr_assert_eq(i3_graph_conv(&g, x, w, -1, &p, "enc0"), -1);
    cr_assert(strstr(i3rt_context_error(ctx), "encoder.stages.0.0.convs.0.conv.weight"), "%s", i3rt_context_error(ctx));
    cr_assert(strstr(i3rt_context_error(ctx), "[8, 3, 3, 3, 3]"), "%s", i3rt_context_error(ctx));
    /* the graph stays failed: later builders return -1 and keep the first message */
    cr_assert_eq(i3_graph_softmax(&g, x, "probs"), -1);
    cr_assert(strstr(i3rt_context_error(ctx), "enc0"));
    cr_assert_eq(i3_graph_plan(&g, x, NULL), I3RT_ERR_SHAPE);
    i3_graph_free(&g);
}

Test(builders, concat_and_add_check_shapes, .init = setup, .fini = teardown) {
    i3_graph g;
    i3_graph_init(&g, ctx);
    i3_shape5 s = {1, 2, 4, 4, 4};
    int x = i3_graph_input(&g, s);
    i3_avg_pool_params pool = {.k = {2, 2, 2}};
    int y = i3_graph_avg_pool(&g, x, &pool, "pool");
    cr_assert_eq(g.values[y].dims[2], 2);
    cr_assert_eq(i3_graph_concat(&g, x, y, "cat"), -1);
    cr_assert(strstr(i3rt_context_error(ctx), "cat: cannot concatenate"), "%s", i3rt_context_error(ctx));
    i3_graph_free(&g);
}
