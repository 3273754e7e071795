/* Timing of nnInteractive's AutoZoom arrays (runtime/ni_zoom.c) on the volumes that bench/ni_zoom_vs_python.py
 * writes and times in Python: the network input at each zoom, the coarse up-sampling and the refinement plan.
 *
 * Run: build/bench/bench_ni_zoom DIR threads   (DIR/meta.txt: n0 n1 n2 p0 p1 p2 c0 c1 c2 and the zooms) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ni_zoom.h"

static void *read_all(const char *dir, const char *name, size_t bytes) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    void *data = malloc(bytes);
    if (!f || !data || fread(data, 1, bytes, f) != bytes) {
        fprintf(stderr, "bench_ni_zoom: cannot read %zu bytes of %s\n", bytes, path);
        exit(1);
    }
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_ni_zoom DIR threads\n");
        return 2;
    }
    const char *dir = argv[1];
    const int threads = atoi(argv[2]);
    char path[1024];
    snprintf(path, sizeof path, "%s/meta.txt", dir);
    FILE *f = fopen(path, "r");
    int64_t shape[3], patch[3], center[3];
    double zooms[8];
    int n_zooms = 0;
    if (!f || fscanf(f, "%ld %ld %ld %ld %ld %ld %ld %ld %ld", &shape[0], &shape[1], &shape[2], &patch[0], &patch[1],
                     &patch[2], &center[0], &center[1], &center[2]) != 9) {
        fprintf(stderr, "bench_ni_zoom: cannot read %s\n", path);
        return 1;
    }
    while (n_zooms < 8 && fscanf(f, "%lf", &zooms[n_zooms]) == 1) n_zooms++;
    fclose(f);
    const int64_t nvox = shape[0] * shape[1] * shape[2], np = patch[0] * patch[1] * patch[2];
    ni_volume v = {.image = read_all(dir, "image.f32", (size_t)nvox * 4),
                   .interactions = read_all(dir, "interactions.u16", (size_t)nvox * 7 * 2),
                   .shape = {shape[0], shape[1], shape[2]},
                   .n_channels = 7,
                   .nonzero_channels = ~0u,
                   .dilation_channels = 0x78u,
                   .intensity = 1 / 0.98};
    i3rt_context *ctx;
    if (i3rt_context_create(&ctx, threads, I3RT_BACKEND_CPU) != I3RT_OK) return 1;
    float *input = malloc((size_t)(8 * np) * sizeof *input);
    uint16_t *prev = malloc((size_t)np * sizeof *prev);
    uint8_t *pred = malloc((size_t)np);
    for (int i = 0; i < n_zooms; i++) {
        i3rt_box box;
        double t0 = i3_now_seconds(), c0 = i3_cpu_seconds();
        if (ni_build_network_input(ctx, &v, patch, center, zooms[i], input, prev, &box, threads) != I3RT_OK) return 1;
        printf("i3rt   network input  zoom %-6g %8.1f ms wall %8.1f ms cpu\n", zooms[i], 1e3 * (i3_now_seconds() - t0),
               1e3 * (i3_cpu_seconds() - c0));
    }
    /* the last zoom's coarse result: prev_seg's nearest sample, up-sampled, then the plan */
    const double zoom = zooms[n_zooms - 1];
    int64_t scaled[3];
    i3rt_box box;
    ni_scaled_patch(patch, zoom, center, scaled, &box);
    for (int64_t i = 0; i < np; i++) pred[i] = prev[i] != 0;
    uint8_t *up = malloc((size_t)(scaled[0] * scaled[1] * scaled[2]));
    double t0 = i3_now_seconds(), c0 = i3_cpu_seconds();
    ni_upsample_coarse(pred, patch, scaled, up, threads);
    printf("i3rt   upsample coarse zoom %-6g %8.1f ms wall %8.1f ms cpu\n", zoom, 1e3 * (i3_now_seconds() - t0), 1e3 * (i3_cpu_seconds() - c0));
    uint8_t *pred_py = read_all(dir, "pred_up.u8", (size_t)(scaled[0] * scaled[1] * scaled[2]));
    np_random r;
    np_random_seed(&r, 0);
    i3rt_box *boxes;
    int n_boxes;
    t0 = i3_now_seconds(), c0 = i3_cpu_seconds();
    if (ni_plan_refinement(ctx, pred_py, &box, v.interactions, shape, patch, center, 0, &r, &boxes, &n_boxes, threads) !=
        I3RT_OK)
        return 1;
    printf("i3rt   refinement plan zoom %-6g %8.1f ms wall %8.1f ms cpu (%d boxes)\n", zoom, 1e3 * (i3_now_seconds() - t0),
           1e3 * (i3_cpu_seconds() - c0), n_boxes);
    free(boxes), free(up), free(pred_py), free(pred), free(prev), free(input);
    free((void *)v.image), free((void *)v.interactions);
    i3rt_context_free(ctx);
    return 0;
}
