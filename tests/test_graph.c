/* The graph builders' shape checks and the activation memory planner: on random U-Net-like graphs no
 * two values that are alive at the same time share arena bytes, and reuse makes the peak smaller
 * than keeping everything. */
#include <criterion/criterion.h>
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
