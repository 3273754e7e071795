/* Per-op CPU time of one network forward, node by node.
 *
 *   bench_profile MODEL D H W [--threads N] [--runs R] [--convs]
 *
 * Builds MODEL's graph for [1, in_channels, D, H, W] on the CPU backend, fills the input with seeded noise
 * in [-1, 1), runs the nodes one by one R times (after a warm-up) and prints, per op kind, the sum over its
 * nodes of each node's best time, the node count and the share of the total: where a forward spends its
 * time (docs/performance.md uses it for the ACS HRNet). Per-node best times add up to less than a timed
 * whole forward on a busy machine. --convs adds one line per convolution shape (input channels, output
 * channels, kernel or ACS kernel, stride, output size): nodes, summed time, GFLOP/s; where a faster conv
 * path pays. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "network.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int fail(i3_ctx *ctx, const char *what) {
    fprintf(stderr, "bench_profile: %s: %s\n", what, ctx ? i3rt_context_error(ctx) : "");
    return 1;
}

/* A convolution node's kernel and stride per axis (an ACS convolution as "A k x k", its taps per output
 * voxel k * k); 0 for other ops. */
static int conv_geometry(const i3_node *a, int k[3], int stride[3]) {
    if (a->op == I3_OP_CONV) {
        memcpy(k, a->p.conv.k, 3 * sizeof *k), memcpy(stride, a->p.conv.stride, 3 * sizeof *stride);
        return 1;
    }
    if (a->op != I3_OP_ACS_CONV) return 0;
    k[0] = 0, k[1] = k[2] = a->p.acs.k; /* k[0] = 0 marks ACS */
    stride[0] = stride[1] = stride[2] = a->p.acs.stride;
    return 1;
}

/* Convolution nodes grouped by shape (the first node of a shape prints the sum over all of its nodes). */
static void print_conv_shapes(const i3_graph *g, const double *best) {
    printf("  convolutions by shape: cin -> cout, kernel (A: ACS k x k), stride, output d x h x w: nodes, ms, GFLOP/s\n");
    for (int n = 0; n < g->n_nodes; n++) {
        int k[3], st[3], k2[3], st2[3];
        if (!conv_geometry(&g->nodes[n], k, st)) continue;
        const i3_shape5 xs = i3_value_shape5(&g->values[g->nodes[n].in[0]]);
        const i3_shape5 ys = i3_value_shape5(&g->values[g->nodes[n].out]);
        int first = 1, count = 0;
        double t = 0;
        for (int m = 0; m < g->n_nodes && first; m++) {
            const i3_node *c = &g->nodes[m];
            if (!conv_geometry(c, k2, st2)) continue;
            const i3_shape5 cx = i3_value_shape5(&g->values[c->in[0]]), cy = i3_value_shape5(&g->values[c->out]);
            if (cx.c != xs.c || memcmp(&cy, &ys, sizeof ys) != 0 || memcmp(k, k2, sizeof k) != 0 ||
                memcmp(st, st2, sizeof st) != 0)
                continue;
            if (m < n) first = 0;
            count++, t += best[m];
        }
        if (!first) continue;
        const int taps = k[0] ? k[0] * k[1] * k[2] : k[1] * k[2];
        const double flop = 2.0 * count * i3_shape5_numel(ys) * xs.c * taps;
        char kernel[16];
        if (k[0])
            snprintf(kernel, sizeof kernel, "%dx%dx%d", k[0], k[1], k[2]);
        else
            snprintf(kernel, sizeof kernel, "A %dx%d", k[1], k[2]);
        printf("  %4lld -> %-4lld %-6s s%d%d%d %4lld x %4lld x %4lld: %3d nodes %8.2f ms %6.1f GFLOP/s\n",
               (long long)xs.c, (long long)ys.c, kernel, st[0], st[1], st[2], (long long)ys.d, (long long)ys.h,
               (long long)ys.w, count, t * 1e3, flop / t * 1e-9);
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_profile MODEL D H W [--threads N] [--runs R]\n");
        return 2;
    }
    int threads = 1, runs = 3, convs = 0;
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "--convs") == 0) convs = 1;
        if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
        if (i + 1 < argc && strcmp(argv[i], "--runs") == 0) runs = atoi(argv[i + 1]);
    }
    i3_ctx *ctx = NULL;
    if (threads < 1 || runs < 1 || i3rt_context_create(&ctx, threads, I3RT_BACKEND_CPU) != I3RT_OK)
        return fail(ctx, "bad --threads/--runs or no context");
    i3_weights *w = NULL;
    i3_network net;
    if (i3_weights_open(ctx, argv[1], &w) != I3RT_OK || i3_network_parse(ctx, w, &net) != I3RT_OK)
        return fail(ctx, argv[1]);
    const i3_shape5 in = {1, net.in_channels, atoll(argv[2]), atoll(argv[3]), atoll(argv[4])};
    i3_graph g;
    i3_graph_init(&g, ctx);
    int out = -1;
    i3_backend *b = NULL;
    void *arena = NULL, *scratch = NULL;
    if (i3_network_build(ctx, &net, w, in, &g, &out) != I3RT_OK || i3_backend_create(ctx, &b) != I3RT_OK ||
        i3_graph_plan(&g, out, b) != I3RT_OK || b->iface->alloc(b, g.arena_bytes, &arena) != I3RT_OK ||
        b->iface->alloc(b, g.scratch_bytes + 1, &scratch) != I3RT_OK || i3_graph_bind(&g, b, arena, NULL) != I3RT_OK)
        return fail(ctx, "building the graph");
    float *x = g.values[g.input].data;
    unsigned seed = 1;
    for (int64_t i = 0; i < i3_shape5_numel(in); i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    }
    double *best = malloc((size_t)g.n_nodes * sizeof *best);
    for (int n = 0; n < g.n_nodes; n++) best[n] = 1e30;
    for (int r = 0; r <= runs; r++)
        for (int n = 0; n < g.n_nodes; n++) {
            const double t0 = now_s();
            if (b->iface->run_node(b, &g, &g.nodes[n], scratch) != I3RT_OK) return fail(ctx, "running a node");
            const double t = now_s() - t0;
            if (r > 0 && t < best[n]) best[n] = t; /* run 0 is the warm-up */
        }
    double per_op[I3_OP_COUNT] = {0}, total = 0;
    int count[I3_OP_COUNT] = {0};
    for (int n = 0; n < g.n_nodes; n++) per_op[g.nodes[n].op] += best[n], count[g.nodes[n].op]++, total += best[n];
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    printf("bench_profile %s %lld %lld %lld threads %d runs %d load %.2f: %d nodes, %.4f s (sum of per-node bests)\n",
           argv[1], (long long)in.d, (long long)in.h, (long long)in.w, threads, runs, load[0], g.n_nodes, total);
    for (int op = 0; op < I3_OP_COUNT; op++)
        if (count[op])
            printf("  %-18s %4d nodes %9.2f ms %5.1f%%\n", i3_op_name((i3_op)op), count[op], per_op[op] * 1e3,
                   100.0 * per_op[op] / total);
    if (convs) print_conv_shapes(&g, best);
    free(best);
    b->iface->free(b, arena), b->iface->free(b, scratch);
    i3_backend_destroy(b);
    i3_graph_free(&g);
    i3_weights_free(w);
    i3rt_context_free(ctx);
    return 0;
}
