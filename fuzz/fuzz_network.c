/* libFuzzer target for a weight file's network (runtime/network.c, hrnet.c, graph.c): what i3rt_model_load
 * does after the file's structure is valid.
 *
 * Feeds arbitrary bytes to i3_weights_from_memory; where that succeeds, parses the "network" metadata
 * (i3_network_parse) and where that succeeds, builds the graph at the smallest input the network takes and
 * plans it on the CPU backend (every tensor's presence and shape against the metadata, every shape the
 * planner sums). Nothing runs. Any failure must name the input (label "fuzz"), or be out of memory.
 * Seeds: fuzz/make_network_seeds.py (tiny PlainConvUNet 2D/3D and ResidualEncoderUNet as the converter
 * writes them).
 * Build: CC=clang cmake -S . -B build-fuzz -DI3RT_FUZZ=ON && ninja -C build-fuzz fuzz_network
 * Run:   build-fuzz/fuzz/fuzz_network -dict=fuzz/fuzz_network.dict -max_total_time=60 CORPUS fuzz/corpus/network */
#include "backend.h"
#include "network.h"
#include "weights.h"

#include <stdlib.h>
#include <string.h>

static void check_failure(i3rt_context *ctx, i3rt_status st) {
    if (st != I3RT_ERR_OUT_OF_MEMORY && !strstr(i3rt_context_error(ctx), "fuzz")) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    i3rt_context *ctx = NULL;
    if (i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU) != I3RT_OK) abort();
    i3_weights *w = NULL;
    i3_network net;
    i3_backend *backend = NULL;
    i3rt_status st = i3_weights_from_memory(ctx, data, size, "fuzz", &w);
    if (st == I3RT_OK) {
        st = i3_network_parse(ctx, w, &net);
        if (st != I3RT_OK) check_failure(ctx, st);
    }
    if (st == I3RT_OK && i3_backend_create(ctx, &backend) != I3RT_OK) abort();
    if (st == I3RT_OK) {
        int64_t stride[3];
        i3_network_total_stride(&net, stride);
        i3_graph g;
        i3_graph_init(&g, ctx);
        int output;
        const i3_shape5 in = {1, net.in_channels, stride[0], stride[1], stride[2]};
        st = i3_network_build(ctx, &net, w, in, &g, &output);
        if (st == I3RT_OK) st = i3_graph_plan(&g, output, backend);
        if (st != I3RT_OK) check_failure(ctx, st);
        i3_graph_free(&g);
    }
    i3_backend_destroy(backend);
    i3_weights_free(w);
    i3rt_context_free(ctx);
    return 0;
}
