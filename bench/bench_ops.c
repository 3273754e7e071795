/* Benchmark of the CPU op fast paths on nnU-Net layer shapes: convolution (direct kernel, im2col +
 * GEMM, 1x1x1 GEMM; ops/conv.c picks one per shape), transposed convolution, instance norm; and on the
 * ACS-converted RITM HRNet's layer shapes for a 16 x 32 x 32 volume: ACS convolution, fast path (the
 * three parts as 3D convolutions) against the reference it replaced, and the residual add. For each
 * conv it first validates the fast path against the plain reference on a 3 x 4 x w input (same
 * channels, kernel and w, hence the same strategy but Winograd's; the reference is too slow at full size), then
 * times the fast path (best of R runs after one warm-up) and prints ms and GFLOP/s, wall clock and process
 * CPU time of all threads (GFLOP per CPU-second, i.e. per busy thread: on a loaded machine the better
 * measure of the kernel); then the direct path's time on the same input (where it applies: the baseline of
 * the Winograd path) and the two outputs' difference.
 *
 * Build: part of the CMake build when I3RT_BENCH=ON (bench/CMakeLists.txt): `ninja -C build bench_ops`.
 * Run: build/bench/bench_ops [threads=2] [repeats=5]
 * PyTorch baseline for the same shapes: bench/bench_ops_torch.py (F.conv3d, timed the same way), run right
 * after this in the same command so that both see the same load. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "ops.h"

static float *random_floats(int64_t n, unsigned seed) {
    float *v = malloc((size_t)n * sizeof(float));
    if (!v) {
        fprintf(stderr, "bench_ops: out of memory for %lld floats\n", (long long)n);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)((seed >> 8) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    }
    return v;
}

/* max |fast - ref| / max |ref| */
static double rel_error(const float *got, const float *ref, int64_t n) {
    double max_abs = 0, max_ref = 0;
    for (int64_t i = 0; i < n; i++) {
        max_abs = fmax(max_abs, fabs((double)got[i] - ref[i]));
        max_ref = fmax(max_ref, fabs((double)ref[i]));
    }
    return max_abs / (max_ref > 0 ? max_ref : 1);
}

typedef struct {
    const char *name;
    int cin, cout, size, k[3], stride[3], pad[3];
} conv_shape;

static double validate_conv(const conv_shape *c, int threads) {
    i3_shape5 xs = {1, c->cin, 3, 4, c->size}; /* same w: the same strategy (but the direct for Winograd's) */
    i3_conv_params p = {c->cout, {c->k[0], c->k[1], c->k[2]}, {c->stride[0], c->stride[1], c->stride[2]},
                        {c->pad[0], c->pad[1], c->pad[2]}, {I3_ACT_LEAKY_RELU, 0.01f}};
    const int64_t ny = i3_shape5_numel(i3_conv_out_shape(xs, &p));
    float *x = random_floats(i3_shape5_numel(xs), 1), *w = random_floats((int64_t)c->cout * c->cin * 27, 2);
    float *b = random_floats(c->cout, 3), *ref = random_floats(ny, 4), *y = random_floats(ny, 5);
    void *scratch = malloc(i3_cpu_conv_scratch_bytes(xs, &p, threads) + 1);
    i3_cpu_conv_ref(x, xs, w, b, &p, ref);
    i3_cpu_conv(x, xs, w, b, &p, y, scratch, threads);
    double e = rel_error(y, ref, ny);
    free(x), free(w), free(b), free(ref), free(y), free(scratch);
    return e;
}

/* Best wall and CPU time of R runs (after a warm-up) of the fast path, or with `direct` (the convolution as one
 * part) of the direct path alone. */
static void time_conv(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                      const i3_conv_part *direct, float *y, void *scratch, int threads, int repeats, double *best,
                      double *best_cpu) {
    *best = *best_cpu = 1e30;
    for (int r = 0; r <= repeats; r++) {
        double t0 = i3_now_seconds(), c0 = i3_cpu_seconds();
        if (direct) i3_cpu_conv_parts(x, xs, p, direct, 1, y, scratch, NULL, threads);
        else i3_cpu_conv(x, xs, w, b, p, y, scratch, threads);
        double t = i3_now_seconds() - t0, tc = i3_cpu_seconds() - c0;
        if (r > 0 && t < *best) *best = t;
        if (r > 0 && tc < *best_cpu) *best_cpu = tc;
    }
}

/* The fast path; where the direct path also applies (every kernel but 1x1x1), that path too on the same
 * input: the baseline of the Winograd path, which ops/conv.c picks over it for most stride-1 3x3x3 and 1x3x3
 * layers ("direct": the same time when the direct path is the one picked), and the full-size relative
 * difference of the two outputs. */
static void bench_conv(const conv_shape *c, int threads, int repeats) {
    i3_shape5 xs = {1, c->cin, c->size, c->size, c->size};
    i3_conv_params p = {c->cout, {c->k[0], c->k[1], c->k[2]}, {c->stride[0], c->stride[1], c->stride[2]},
                        {c->pad[0], c->pad[1], c->pad[2]}, {I3_ACT_LEAKY_RELU, 0.01f}};
    const i3_shape5 ys = i3_conv_out_shape(xs, &p);
    const int64_t kk = (int64_t)c->k[0] * c->k[1] * c->k[2], ny = i3_shape5_numel(ys);
    float *x = random_floats(i3_shape5_numel(xs), 1), *w = random_floats(c->cout * c->cin * kk, 2);
    float *b = random_floats(c->cout, 3), *y = random_floats(ny, 4), *y_direct = random_floats(ny, 5);
    const i3_conv_part whole = {0, c->cout, {c->k[0], c->k[1], c->k[2]}, {0, 0, 0}, w, b};
    size_t scratch_bytes = i3_cpu_conv_scratch_bytes(xs, &p, threads), direct_bytes = 0;
    const int has_direct = i3_cpu_conv_parts(NULL, xs, &p, &whole, 1, NULL, NULL, &direct_bytes, threads);
    void *scratch = malloc((scratch_bytes > direct_bytes ? scratch_bytes : direct_bytes) + 1);
    double best, best_cpu, direct = 0, direct_cpu;
    time_conv(x, xs, w, b, &p, NULL, y, scratch, threads, repeats, &best, &best_cpu);
    if (has_direct) time_conv(x, xs, w, b, &p, &whole, y_direct, scratch, threads, repeats, &direct, &direct_cpu);
    const double flops = 2.0 * c->cout * c->cin * kk * i3_shape5_spatial(ys);
    printf("conv %-26s %8.2f ms %6.1f GFLOP/s  cpu %8.2f ms %6.1f GFLOP/cpu-s  scratch %5.2f MB  rel err %.1e",
           c->name, best * 1e3, flops / best * 1e-9, best_cpu * 1e3, flops / best_cpu * 1e-9, scratch_bytes / 1048576.0,
           validate_conv(c, threads));
    if (has_direct)
        printf("  direct %8.2f ms (%.2fx) diff %.1e", direct * 1e3, direct / best, rel_error(y, y_direct, ny));
    printf("\n");
    free(x), free(w), free(b), free(y), free(y_direct), free(scratch);
}

static void bench_conv_transpose(int cin, int cout, int size, int threads, int repeats) {
    i3_shape5 xs = {1, cin, size, size, size};
    i3_conv_transpose_params p = {cout, {2, 2, 2}};
    const int64_t ny = i3_shape5_numel(i3_conv_transpose_out_shape(xs, &p));
    float *x = random_floats(i3_shape5_numel(xs), 1), *w = random_floats(cin * cout * 8, 2), *b = random_floats(cout, 3);
    float *y = random_floats(ny, 4);
    double best = 1e30;
    for (int r = 0; r <= repeats; r++) {
        double t0 = i3_now_seconds();
        i3_cpu_conv_transpose(x, xs, w, b, &p, y, threads);
        double t = i3_now_seconds() - t0;
        if (r > 0 && t < best) best = t;
    }
    const double flops = 2.0 * cin * cout * 8 * i3_shape5_spatial(xs);
    printf("conv_transpose %3d->%-3d k2 s2 %3d^3             %8.2f ms %7.1f GFLOP/s\n", cin, cout, size, best * 1e3,
           flops / best * 1e-9);
    free(x), free(w), free(b), free(y);
}

static void bench_instance_norm(int c, int size, int threads, int repeats) {
    i3_shape5 xs = {1, c, size, size, size};
    const int64_t n = i3_shape5_numel(xs);
    float *x = random_floats(n, 1), *g = random_floats(c, 2), *b = random_floats(c, 3);
    i3_norm_params p = {1e-5f, {I3_ACT_LEAKY_RELU, 0.01f}};
    double best = 1e30;
    for (int r = 0; r <= repeats; r++) {
        double t0 = i3_now_seconds();
        i3_cpu_instance_norm(x, xs, g, b, &p, x, threads); /* in place, as the runtime does */
        double t = i3_now_seconds() - t0;
        if (r > 0 && t < best) best = t;
    }
    printf("instance_norm+lrelu %3d ch %3d^3 (in place)     %8.2f ms %7.1f GB/s\n", c, size, best * 1e3,
           3.0 * n * sizeof(float) / best * 1e-9);
    free(x), free(g), free(b);
}

typedef struct {
    const char *name;
    int cin, cout, k, stride;
    int64_t d, h, w; /* input size */
} acs_shape;

/* ACS convolution: the reference (what the CPU backend ran before) and the fast path, best of R each. */
static void bench_acs_conv(const acs_shape *c, int threads, int repeats) {
    const i3_shape5 xs = {1, c->cin, c->d, c->h, c->w};
    const i3_acs_conv_params p = {c->cout, c->k, c->stride, c->k / 2, {I3_ACT_RELU, 0.0f}};
    const i3_shape5 ys = i3_acs_conv_out_shape(xs, &p);
    float *x = random_floats(i3_shape5_numel(xs), 1), *w = random_floats((int64_t)c->cout * c->cin * c->k * c->k, 2);
    float *b = random_floats(c->cout, 3), *ref = random_floats(i3_shape5_numel(ys), 4);
    float *y = random_floats(i3_shape5_numel(ys), 5);
    void *scratch = malloc(i3_cpu_acs_conv_scratch_bytes(xs, &p, threads) + 1);
    double best_ref = 1e30, best = 1e30;
    for (int r = 0; r <= repeats; r++) {
        double t0 = i3_now_seconds();
        i3_cpu_acs_conv_ref(x, xs, w, b, &p, ref);
        double t1 = i3_now_seconds();
        i3_cpu_acs_conv(x, xs, w, b, &p, y, scratch, threads);
        double t2 = i3_now_seconds();
        if (r > 0) best_ref = fmin(best_ref, t1 - t0), best = fmin(best, t2 - t1);
    }
    const double flops = 2.0 * c->cout * c->cin * c->k * c->k * i3_shape5_spatial(ys);
    printf("acs_conv %-30s ref %8.2f ms  fast %7.2f ms %6.1f GFLOP/s  x%5.1f  rel err %.1e\n", c->name, best_ref * 1e3,
           best * 1e3, flops / best * 1e-9, best_ref / best, rel_error(y, ref, i3_shape5_numel(ys)));
    free(x), free(w), free(b), free(ref), free(y), free(scratch);
}

/* Residual add + ReLU of n values (in place, as the graph runs it). */
static void bench_add(const char *name, int64_t n, int threads, int repeats) {
    float *a = random_floats(n, 1), *b = random_floats(n, 2);
    double best = 1e30;
    for (int r = 0; r <= 20 * repeats; r++) { /* microseconds: more runs for a stable best on a busy machine */
        double t0 = i3_now_seconds();
        i3_cpu_add(a, b, n, (i3_act){I3_ACT_RELU, 0.0f}, a, threads);
        double t = i3_now_seconds() - t0;
        if (r > 0) best = fmin(best, t);
    }
    printf("add+relu %-30s %9.4f ms  (%lld values; threads from %d on: %d)\n", name, best * 1e3, (long long)n,
           I3_PARALLEL_MIN_VALUES, n >= I3_PARALLEL_MIN_VALUES ? threads : 1);
    free(a), free(b);
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2, repeats = argc > 2 ? atoi(argv[2]) : 5;
    if (threads < 1 || repeats < 1) {
        fprintf(stderr, "usage: %s [threads >= 1] [repeats >= 1]\n", argv[0]);
        return 1;
    }
    double load[3] = {0, 0, 0};
    getloadavg(load, 3); /* timings on a busy machine are worth little: say how busy it was */
    printf("bench_ops: %d thread(s), best of %d, load average %.2f\n", threads, repeats, load[0]);
    static const conv_shape convs[] = {
        {"1->32 3x3x3 64^3", 1, 32, 64, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
        {"32->32 3x3x3 64^3", 32, 32, 64, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
        {"32->64 3x3x3 s2 64^3", 32, 64, 64, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}},
        {"64->64 3x3x3 32^3", 64, 64, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
        {"128->128 3x3x3 16^3", 128, 128, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
        {"256->256 3x3x3 8^3", 256, 256, 8, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
        {"320->320 3x3x3 4^3", 320, 320, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
        {"32->32 1x3x3 64^3", 32, 32, 64, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}},
        {"32->3 1x1x1 64^3", 32, 3, 64, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}},
        {"64->32 1x1x1 64^3", 64, 32, 64, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}},
        {"64->128 3x3x3 s2 32^3", 64, 128, 32, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}},
        {"256->320 3x3x3 s2 8^3", 256, 320, 8, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}},
    };
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) bench_conv(&convs[i], threads, repeats);
    bench_conv_transpose(64, 32, 32, threads, repeats);
    bench_conv_transpose(320, 256, 4, threads, repeats);
    bench_instance_norm(32, 64, threads, repeats);
    /* the ACS HRNet-18 on 16 x 32 x 32: the stem, layer1, each branch's 3x3 and the OCR 3x3 */
    static const acs_shape acs[] = {
        {"stem conv2 64->64 s2 8x16x16", 64, 64, 3, 2, 8, 16, 16},
        {"layer1 64->64 4x8x8", 64, 64, 3, 1, 4, 8, 8},
        {"branch0 18->18 4x8x8", 18, 18, 3, 1, 4, 8, 8},
        {"branch1 36->36 2x4x4", 36, 36, 3, 1, 2, 4, 4},
        {"branch3 144->144 1x1x1", 144, 144, 3, 1, 1, 1, 1},
        {"conv3x3_ocr 270->128 4x8x8", 270, 128, 3, 1, 4, 8, 8},
        {"maps 16->64 s2 16x32x32", 16, 64, 3, 2, 16, 32, 32},
    };
    for (size_t i = 0; i < sizeof acs / sizeof acs[0]; i++) bench_acs_conv(&acs[i], threads, repeats);
    bench_add("branch0 18 x 4x8x8", 18 * 4 * 8 * 8, threads, repeats);
    bench_add("layer1 256 x 4x8x8", 256 * 4 * 8 * 8, threads, repeats);
    bench_add("256 x 16x32x32", 256 * 16 * 32 * 32, threads, repeats);
    return 0;
}
