/* The SIMT emulator's primitives (kernels/simt.h, kernels/device.h), through the kernels of
 * kernels/simt_selftest.cu: barrier ordering and shared memory, shuffles (all four kinds, with
 * widths and partial masks), votes, atomics, the divergent-barrier check, and mma m16n8k16 (f16 and
 * bf16, fragments gathered by hand and through ldmatrix) against a scalar matmul. The `gpu` suite
 * runs the same kernels on a real device and says it was skipped when there is none. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "cuda_backend.h"

#define I3_DEV(name) i3emu_##name
#include "simt_selftest.h"
#undef I3_DEV
#ifdef I3RT_HAVE_CUDA
#define I3_DEV(name) i3gpu_##name
#include "simt_selftest.h"
#undef I3_DEV
#endif

typedef struct {
    const char *name;
    int (*barrier)(int *, int *);
    int (*shuffles)(int *);
    int (*votes)(unsigned *);
    int (*atomics)(int, int *, float *, int *);
    int (*mma)(const uint16_t *, const uint16_t *, const float *, float *, int, int);
    int (*mma_tf32)(const float *, const float *, const float *, float *);
} device_selftests;

static const device_selftests emulated = {"emulated", i3emu_selftest_barrier, i3emu_selftest_shuffles,
                                          i3emu_selftest_votes, i3emu_selftest_atomics, i3emu_selftest_mma,
                                          i3emu_selftest_mma_tf32};

static void check_barrier(const device_selftests *dev) {
    int neighbour[2 * SELFTEST_BLOCK], block_sum[2];
    cr_assert_eq(dev->barrier(neighbour, block_sum), 0, "%s: launch failed", dev->name);
    for (int b = 0; b < 2; b++) {
        for (int t = 0; t < SELFTEST_BLOCK; t++)
            cr_assert_eq(neighbour[b * SELFTEST_BLOCK + t], (t + 1) % SELFTEST_BLOCK + 1000 * b,
                         "%s: block %d thread %d read %d from shared memory", dev->name, b, t,
                         neighbour[b * SELFTEST_BLOCK + t]);
        cr_assert_eq(block_sum[b], SELFTEST_BLOCK * (SELFTEST_BLOCK - 1) / 2, "%s: block reduction gave %d",
                     dev->name, block_sum[b]);
    }
}

static void check_shuffles(const device_selftests *dev) {
    int out[SELFTEST_BLOCK * SELFTEST_SHUFFLES];
    cr_assert_eq(dev->shuffles(out), 0, "%s: launch failed", dev->name);
    for (int t = 0; t < SELFTEST_BLOCK; t++) {
        int lane = t % 32, *o = out + t * SELFTEST_SHUFFLES;
        int expect[SELFTEST_SHUFFLES] = {
            103,
            100 + (lane ^ 5),
            100 + (lane + 7 < 32 ? lane + 7 : lane),
            100 + (lane >= 2 ? lane - 2 : lane),
            100 + (lane & ~7) + 2,
            100 + ((lane % 8) + 3 < 8 ? lane + 3 : lane),
            lane ^ 16,
            lane % 2 == 0 ? 100 + (lane ^ 2) : -1,
        };
        for (int j = 0; j < SELFTEST_SHUFFLES; j++)
            cr_assert_eq(o[j], expect[j], "%s: thread %d shuffle %d gave %d, expected %d", dev->name, t, j, o[j],
                         expect[j]);
    }
}

static void check_votes(const device_selftests *dev) {
    unsigned out[SELFTEST_BLOCK * SELFTEST_VOTES];
    cr_assert_eq(dev->votes(out), 0, "%s: launch failed", dev->name);
    unsigned every_third = 0;
    for (int l = 0; l < 32; l += 3) every_third |= 1u << l;
    unsigned expect[SELFTEST_VOTES] = {every_third, 1, 0, 1, 0};
    for (int t = 0; t < SELFTEST_BLOCK; t++)
        for (int j = 0; j < SELFTEST_VOTES; j++)
            cr_assert_eq(out[t * SELFTEST_VOTES + j], expect[j], "%s: thread %d vote %d gave 0x%08x", dev->name, t, j,
                         out[t * SELFTEST_VOTES + j]);
}

static void check_atomics(const device_selftests *dev) {
    int counter = 0, max = 0;
    float sum = 0;
    const int blocks = 5;
    cr_assert_eq(dev->atomics(blocks, &counter, &sum, &max), 0, "%s: launch failed", dev->name);
    int expect_max = 0;
    for (int t = 0; t < blocks * SELFTEST_BLOCK; t++)
        if ((t * 7919) % 1009 > expect_max) expect_max = (t * 7919) % 1009;
    cr_assert_eq(counter, blocks * SELFTEST_BLOCK, "%s: atomicAdd counted %d", dev->name, counter);
    cr_assert_float_eq(sum, 0.5f * blocks * SELFTEST_BLOCK, 0, "%s: atomicAdd(float) summed %g", dev->name, sum);
    cr_assert_eq(max, expect_max, "%s: atomicCAS max %d, expected %d", dev->name, max, expect_max);
}

/* D = A B + C with random 16-bit inputs, compared with the same product in double. */
static void check_mma(const device_selftests *dev, int bf16, int use_ldmatrix) {
    uint16_t a[16 * 16], b[16 * 8];
    float fa[16 * 16], fb[16 * 8], c[16 * 8], d[16 * 8];
    srand(7 + bf16 * 2 + use_ldmatrix);
    for (int i = 0; i < 16 * 16; i++) {
        float v = (float)rand() / RAND_MAX * 2.0f - 1.0f;
        a[i] = bf16 ? i3_f32_to_bf16(v) : i3_f32_to_f16(v);
        fa[i] = bf16 ? i3_bf16_to_f32(a[i]) : i3_f16_to_f32(a[i]);
    }
    for (int i = 0; i < 16 * 8; i++) {
        float v = (float)rand() / RAND_MAX * 2.0f - 1.0f;
        b[i] = bf16 ? i3_f32_to_bf16(v) : i3_f32_to_f16(v);
        fb[i] = bf16 ? i3_bf16_to_f32(b[i]) : i3_f16_to_f32(b[i]);
        c[i] = (float)i * 0.01f;
    }
    cr_assert_eq(dev->mma(a, b, c, d, bf16, use_ldmatrix), 0, "%s: launch failed", dev->name);
    double max_err = 0;
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 8; n++) {
            double ref = c[m * 8 + n];
            for (int k = 0; k < 16; k++) ref += (double)fa[m * 16 + k] * fb[k * 8 + n];
            double err = fabs(d[m * 8 + n] - ref);
            if (err > max_err) max_err = err;
        }
    printf("%s mma m16n8k16 %s%s: max abs error %.3g\n", dev->name, bf16 ? "bf16" : "f16",
           use_ldmatrix ? " (ldmatrix)" : "", max_err);
    cr_assert_lt(max_err, 1e-5, "%s: mma %s max abs error %g (tolerance 1e-5: f32 accumulation of 16 products)",
                 dev->name, bf16 ? "bf16" : "f16", max_err);
}

/* TF32 as cvt.rna makes it: 10 mantissa bits, nearest, ties away from zero (finite values). */
static float round_tf32(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits = (bits + 0x1000u) & 0xffffe000u;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* D = A B + C with mma m16n8k8 .tf32 on random f32 inputs, against the product of the TF32-rounded
 * inputs in double (tolerance 1e-5: f32 accumulation of 8 products), and showing that the rounding
 * happened: against the unrounded inputs the error is ~1e-4. */
static void check_mma_tf32(const device_selftests *dev) {
    float a[16 * 8], b[8 * 8], c[16 * 8], d[16 * 8];
    srand(11);
    for (int i = 0; i < 16 * 8; i++) {
        a[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
        c[i] = (float)i * 0.01f;
    }
    for (int i = 0; i < 8 * 8; i++) b[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
    cr_assert_eq(dev->mma_tf32(a, b, c, d), 0, "%s: launch failed", dev->name);
    double max_err = 0, max_err_unrounded = 0;
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 8; n++) {
            double ref = c[m * 8 + n], exact = ref;
            for (int k = 0; k < 8; k++) {
                ref += (double)round_tf32(a[m * 8 + k]) * round_tf32(b[k * 8 + n]);
                exact += (double)a[m * 8 + k] * b[k * 8 + n];
            }
            max_err = fmax(max_err, fabs(d[m * 8 + n] - ref));
            max_err_unrounded = fmax(max_err_unrounded, fabs(d[m * 8 + n] - exact));
        }
    printf("%s mma m16n8k8 tf32: max abs error %.3g (vs unrounded inputs %.3g)\n", dev->name, max_err,
           max_err_unrounded);
    cr_assert_lt(max_err, 1e-5, "%s: mma tf32 max abs error %g", dev->name, max_err);
    cr_assert_gt(max_err_unrounded, 1e-6, "%s: mma tf32 did not round its inputs", dev->name);
}

Test(simt, barrier_and_shared_memory) { check_barrier(&emulated); }
Test(simt, shuffles) { check_shuffles(&emulated); }
Test(simt, votes) { check_votes(&emulated); }
Test(simt, atomics) { check_atomics(&emulated); }
Test(simt, mma_f16_fragments) { check_mma(&emulated, 0, 0); }
Test(simt, mma_bf16_fragments) { check_mma(&emulated, 1, 0); }
Test(simt, mma_f16_ldmatrix) { check_mma(&emulated, 0, 1); }
Test(simt, mma_bf16_ldmatrix) { check_mma(&emulated, 1, 1); }
Test(simt, mma_tf32_fragments) { check_mma_tf32(&emulated); }

/* In thread order the racy reduction's thread 0 reads before the others write, and the two orders
 * disagree (in reverse order the last thread reads what the previous launch left in shared memory:
 * undefined, as on a GPU), while the correct kernels give the same results in both orders
 * (test_cuda_ops' reverse_thread_order). */
Test(simt, missing_barrier_shows_in_thread_order) {
    int forward[SELFTEST_BLOCK], reverse[SELFTEST_BLOCK];
    cr_assert_eq(i3emu_selftest_racy(forward), 0);
    setenv("I3RT_SIMT_ORDER", "reverse", 1);
    cr_assert_eq(i3emu_selftest_racy(reverse), 0);
    unsetenv("I3RT_SIMT_ORDER");
    int full = SELFTEST_BLOCK * (SELFTEST_BLOCK + 1) / 2;
    printf("racy block sum, thread 0: %d in thread order, %d in reverse order (correct: %d)\n", forward[0], reverse[0],
           full);
    cr_assert_neq(forward[0], full);
    cr_assert_neq(memcmp(forward, reverse, sizeof forward), 0);
}

Test(simt, divergent_barrier_is_an_error) {
    cr_assert_neq(i3emu_selftest_divergent_barrier(), 0, "a barrier after some threads returned must fail the launch");
}

Test(simt, deadlock_is_an_error) {
    cr_assert_neq(i3emu_selftest_deadlock(), 0, "a barrier and a shuffle waiting on each other must fail the launch");
}

Test(simt, out_of_memory_is_a_message) {
    i3_ctx ctx = {.n_threads = 1, .backend = I3RT_BACKEND_EMULATED};
    i3_backend *b;
    cr_assert_eq(i3_backend_cuda_create(&ctx, 1, &b), I3RT_OK, "%s", ctx.error);
    void *p = NULL;
    cr_assert_eq(b->iface->alloc(b, (size_t)1 << 50, &p), I3RT_ERR_OUT_OF_MEMORY);
    cr_assert_null(p);
    cr_assert(strstr(ctx.error, "out of device memory") != NULL, "message: %s", ctx.error);
    printf("emulated device, 1 PiB allocation: %s\n", ctx.error);
    i3_backend_destroy(b);
}

/* The same checks on a real GPU, when this build has CUDA and the machine has a device. */
static const device_selftests *real_device(void) {
    i3_ctx ctx = {.n_threads = 1, .backend = I3RT_BACKEND_CUDA};
    i3_backend *b = NULL;
    if (i3_backend_cuda_create(&ctx, 0, &b) != I3RT_OK) {
        cr_skip("no real GPU: %s", ctx.error);
        return NULL;
    }
    i3_backend_destroy(b);
#ifdef I3RT_HAVE_CUDA
    static const device_selftests gpu = {"gpu", i3gpu_selftest_barrier, i3gpu_selftest_shuffles,
                                         i3gpu_selftest_votes, i3gpu_selftest_atomics, i3gpu_selftest_mma,
                                         i3gpu_selftest_mma_tf32};
    return &gpu;
#else
    return NULL;
#endif
}

Test(gpu, primitives) {
    const device_selftests *dev = real_device();
    if (!dev) return;
    check_barrier(dev);
    check_shuffles(dev);
    check_votes(dev);
    check_atomics(dev);
    for (int i = 0; i < 4; i++) check_mma(dev, i / 2, i % 2);
    check_mma_tf32(dev);
}
