/* Times the CPU forward of one i3rt network at a given input size.
 *
 *   bench_forward MODEL D H W [--threads N] [--runs R]
 *
 * Loads MODEL, fills a [in_channels, D, H, W] input with seeded uniform noise in [-1, 1), runs one
 * warm-up forward (which also builds and plans the graph and allocates the arena), then R timed
 * forwards, and prints one line: "bench_forward D H W threads N runs R median S min S peak MiB".
 * bench/cpu_forward.py runs it next to PyTorch on the same network. */
#include "core.h" /* i3_now_seconds */
#include "i3rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_forward MODEL D H W [--threads N] [--runs R]\n");
        return 2;
    }
    int64_t spatial[3] = {atoll(argv[2]), atoll(argv[3]), atoll(argv[4])};
    int threads = 1, runs = 3;
    for (int i = 5; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--runs") == 0) runs = atoi(argv[i + 1]);
    }
    if (threads < 1 || runs < 1 || runs > 1000) {
        fprintf(stderr, "bench_forward: bad --threads or --runs\n");
        return 2;
    }
    i3rt_context *ctx = NULL;
    i3rt_model *model = NULL;
    i3rt_model_info info;
    size_t peak = 0;
    if (i3rt_context_create(&ctx, threads, I3RT_BACKEND_CPU) != I3RT_OK) return 1;
    if (i3rt_model_load(ctx, argv[1], &model) != I3RT_OK || i3rt_model_get_info(model, &info) != I3RT_OK ||
        i3rt_model_plan(model, spatial, &peak) != I3RT_OK) {
        fprintf(stderr, "bench_forward: %s\n", i3rt_context_error(ctx));
        return 1;
    }
    size_t voxels = (size_t)(spatial[0] * spatial[1] * spatial[2]);
    float *input = malloc(voxels * (size_t)info.in_channels * sizeof(float));
    float *logits = malloc(voxels * (size_t)info.num_classes * sizeof(float));
    double *times = malloc((size_t)runs * sizeof(double));
    if (!input || !logits || !times) {
        fprintf(stderr, "bench_forward: out of memory\n");
        return 1;
    }
    uint32_t state = 12345;
    for (size_t i = 0; i < voxels * (size_t)info.in_channels; i++) {
        state = state * 1664525u + 1013904223u;
        input[i] = (float)(state >> 8) / (float)(1u << 23) - 1.0f;
    }
    for (int r = -1; r < runs; r++) {
        double t0 = i3_now_seconds();
        if (i3rt_model_forward(model, input, spatial, logits) != I3RT_OK) {
            fprintf(stderr, "bench_forward: %s\n", i3rt_context_error(ctx));
            return 1;
        }
        if (r >= 0) times[r] = i3_now_seconds() - t0;
    }
    qsort(times, (size_t)runs, sizeof *times, compare_doubles);
    double median = runs % 2 ? times[runs / 2] : 0.5 * (times[runs / 2 - 1] + times[runs / 2]);
    printf("bench_forward %lld %lld %lld threads %d runs %d median %.4f min %.4f peak %.1f\n", (long long)spatial[0],
           (long long)spatial[1], (long long)spatial[2], threads, runs, median, times[0],
           (double)peak / (1024.0 * 1024.0));
    free(times);
    free(logits);
    free(input);
    i3rt_model_free(model);
    i3rt_context_free(ctx);
    return 0;
}
