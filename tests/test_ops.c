/* CPU ops against their plain references (and against identities that hold whatever the code does):
 * fast paths vs _ref on odd, anisotropic shapes, 1 and 2 threads, in place where allowed, with guard
 * values around every output and scratch buffer. Tolerance: max |fast - ref| <= 1e-5 * max |ref|
 * (the references accumulate in double; the fast paths in float). PyTorch comparisons: test_ops_torch.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "ops.h"

#define TOL 1e-5

static float *random_buffer(fx_rng *r, int64_t n, float lo, float hi) {
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    cr_assert_not_null(v);
    fx_fill(r, v, n, lo, hi);
    return v;
}

static void expect_close(const char *label, const float *got, const float *ref, int64_t n, double tol) {
    fx_err e = fx_compare(label, got, ref, n);
    cr_expect(e.rel <= tol, "%s: rel error %.3e > %.1e (max abs %.3e)", label, e.rel, tol, e.max_abs);
}

/* ---- convolution ----------------------------------------------------------------------------- */

typedef struct {
    i3_shape5 x;
    int cout, k[3], stride[3], pad[3];
    i3_act_kind act;
    int bias;
} conv_case;

static const conv_case conv_cases[] = {
    {{2, 3, 3, 5, 7}, 5, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1},
    {{1, 3, 3, 5, 7}, 5, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, I3_ACT_NONE, 1},
    {{1, 3, 5, 6, 7}, 5, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, I3_ACT_RELU, 0},
    {{1, 4, 5, 3, 4}, 6, {3, 1, 1}, {1, 1, 1}, {1, 0, 0}, I3_ACT_LEAKY_RELU, 1},
    {{2, 7, 3, 5, 7}, 5, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, I3_ACT_LEAKY_RELU, 1}, /* direct GEMM */
    {{1, 7, 3, 5, 7}, 5, {1, 1, 1}, {2, 2, 2}, {0, 0, 0}, I3_ACT_NONE, 0},      /* strided 1x1x1: im2col */
    {{1, 3, 1, 9, 11}, 4, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, I3_ACT_RELU, 1},      /* 2D as D = 1 */
    {{1, 3, 1, 9, 11}, 4, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, I3_ACT_NONE, 1},
    {{1, 2, 4, 5, 6}, 3, {3, 3, 3}, {1, 1, 1}, {2, 2, 2}, I3_ACT_NONE, 1},       /* pad > k / 2 */
    {{1, 2, 4, 5, 6}, 3, {3, 2, 3}, {3, 2, 1}, {0, 0, 1}, I3_ACT_NONE, 1},       /* even kernel, stride 3 */
    {{1, 2, 2, 2, 2}, 3, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_NONE, 1},       /* whole input in one window */
    {{1, 32, 9, 10, 11}, 24, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1}, /* several tiles */
    /* direct path (stride 1 along w, w out >= 24, cin >= 8): blocks of 24 + overlapping blocks of 8 */
    {{2, 8, 3, 5, 37}, 6, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1},
    {{1, 9, 4, 7, 33}, 7, {1, 3, 3}, {2, 2, 1}, {0, 1, 1}, I3_ACT_RELU, 1},
    {{1, 8, 1, 6, 40}, 4, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, I3_ACT_NONE, 0},       /* 2D */
    {{1, 8, 3, 4, 34}, 5, {3, 3, 3}, {1, 1, 1}, {2, 2, 2}, I3_ACT_NONE, 1},       /* pad > k / 2 */
    {{1, 10, 3, 5, 35}, 9, {2, 3, 2}, {1, 2, 1}, {0, 1, 0}, I3_ACT_NONE, 1},      /* even kernel */
    {{1, 8, 2, 3, 32}, 3, {3, 1, 5}, {1, 1, 1}, {1, 0, 2}, I3_ACT_LEAKY_RELU, 1}, /* cout < 4 */
    {{1, 32, 1, 120, 40}, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_NONE, 1},    /* two row bands */
    {{1, 8, 5, 6, 50}, 5, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1}, /* wide, strided: im2col */
    {{1, 9, 3, 4, 77}, 4, {1, 2, 4}, {1, 1, 3}, {0, 0, 2}, I3_ACT_NONE, 1},
    /* direct path (cin >= 8, any kernel/stride/padding): tiles of 6 voxels + a shorter one, blocks of 16
     * output channels (the last one partial, or 24 wide with tiles of 4 voxels where the channels leave an
     * odd vector of 8: couts 17, 20, 36, 40, 72; 8 wide, tiles of 12, for at most 8), chunks of input channels, depth and row bands, input
     * channels and columns beyond the slab's 8 x 8 transposes (cin 12, 18) */
    {{1, 40, 3, 4, 9}, 20, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1},     /* 2 chunks of 20 */
    {{2, 8, 5, 7, 13}, 17, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, I3_ACT_RELU, 1},           /* w out 7 = 6 + 1 */
    {{1, 12, 9, 3, 4}, 16, {3, 1, 2}, {2, 1, 1}, {1, 0, 1}, I3_ACT_NONE, 0},           /* w out 5 */
    {{1, 8, 4, 2, 3}, 3, {2, 2, 2}, {1, 2, 3}, {0, 1, 2}, I3_ACT_NONE, 1},             /* pad > k / 2, w out 2 */
    {{1, 32, 1, 300, 120}, 2, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, I3_ACT_LEAKY_RELU, 1},  /* two row bands */
    {{1, 16, 12, 6, 6}, 40, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_NONE, 1},          /* 3 channel blocks */
    {{1, 18, 1, 13, 29}, 36, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, I3_ACT_LEAKY_RELU, 1},   /* HRNet: 16 + 24 */
    {{1, 24, 2, 5, 19}, 72, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_NONE, 1},          /* 3 x 16 + 24 */
    {{1, 8, 6, 7, 29}, 8, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1},      /* 8 wide, 12 voxels */
    {{1, 16, 3, 9, 31}, 5, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, I3_ACT_NONE, 1},           /* 8 wide, strided */
    {{1, 3, 4, 6, 9}, 20, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1},      /* cin < 8, 3D, cout >= 16 */
    {{2, 1, 5, 7, 11}, 16, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, I3_ACT_NONE, 0},
    /* Winograd path (3x3x3 or 1x3x3, stride 1, pad 1 (0 along d), >= 8 (16) channels, >= 8 a side): odd sizes
     * (partial tiles on every edge), a last batch of fewer tiles than the batch, two samples, blocks of 16 + 24
     * and of 8, row bands (2 threads), channel counts that leave a partial vector of 8 */
    {{2, 16, 9, 11, 13}, 40, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1},
    {{1, 8, 8, 8, 30}, 8, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_RELU, 0},
    {{1, 24, 10, 8, 26}, 72, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_NONE, 1},
    {{1, 16, 3, 12, 27}, 24, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, I3_ACT_LEAKY_RELU, 1}, /* 1x3x3: F(2x2, 3x3) */
    {{2, 16, 1, 9, 40}, 16, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, I3_ACT_NONE, 0},        /* 2D */
    {{1, 12, 9, 9, 17}, 20, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, I3_ACT_LEAKY_RELU, 1}, /* partial vectors of 8 */
    {{1, 18, 1, 20, 33}, 18, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, I3_ACT_RELU, 1},       /* HRNet branch 0 */
    {{1, 36, 1, 16, 50}, 36, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, I3_ACT_NONE, 1},       /* 16 + 24 (20 used) */
};

static void check_conv(const conv_case *cc, int threads) {
    fx_rng r = fx_rng_seed(1000 + (uint64_t)(cc - conv_cases));
    i3_conv_params p = {cc->cout, {cc->k[0], cc->k[1], cc->k[2]}, {cc->stride[0], cc->stride[1], cc->stride[2]},
                        {cc->pad[0], cc->pad[1], cc->pad[2]}, {cc->act, 0.01f}};
    const i3_shape5 ys = i3_conv_out_shape(cc->x, &p);
    const int64_t nx = i3_shape5_numel(cc->x), ny = i3_shape5_numel(ys);
    const int64_t nw = (int64_t)cc->cout * cc->x.c * cc->k[0] * cc->k[1] * cc->k[2];
    float *x = random_buffer(&r, nx, -1, 1), *w = random_buffer(&r, nw, -0.5f, 0.5f);
    float *b = cc->bias ? random_buffer(&r, cc->cout, -0.5f, 0.5f) : NULL;
    float *ref = malloc((size_t)ny * sizeof(float)), *y = fx_guarded_alloc(ny);
    const size_t scratch_bytes = i3_cpu_conv_scratch_bytes(cc->x, &p, threads);
    const int64_t ns = (int64_t)(scratch_bytes / sizeof(float));
    float *scratch = fx_guarded_alloc(ns);
    cr_assert(ref && y && scratch);

    i3_cpu_conv_ref(x, cc->x, w, b, &p, ref);
    i3_cpu_conv(x, cc->x, w, b, &p, y, scratch_bytes ? scratch : NULL, threads);
    char label[160];
    snprintf(label, sizeof label, "conv x[%ld,%ld,%ld,%ld,%ld] k%dx%dx%d s%d%d%d p%d%d%d t%d", (long)cc->x.n,
             (long)cc->x.c, (long)cc->x.d, (long)cc->x.h, (long)cc->x.w, p.k[0], p.k[1], p.k[2], p.stride[0],
             p.stride[1], p.stride[2], p.pad[0], p.pad[1], p.pad[2], threads);
    expect_close(label, y, ref, ny, TOL);
    cr_expect(fx_guards_intact(y, ny), "%s: output guard overwritten", label);
    cr_expect(fx_guards_intact(scratch, ns), "%s: scratch guard overwritten (%zu bytes)", label, scratch_bytes);
    free(x), free(w), free(b), free(ref), fx_guarded_free(y), fx_guarded_free(scratch);
}

Test(conv, fast_matches_reference) {
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        for (int threads = 1; threads <= 2; threads++) check_conv(&conv_cases[i], threads);
}

Test(conv, output_shape) {
    i3_conv_params p = {8, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, {I3_ACT_NONE, 0}};
    i3_shape5 y = i3_conv_out_shape((i3_shape5){2, 3, 3, 5, 8}, &p);
    cr_expect(y.n == 2 && y.c == 8 && y.d == 3 && y.h == 3 && y.w == 4);
    p.k[0] = 5; /* kernel larger than the padded input: empty output, not a negative size */
    cr_expect_eq(i3_conv_out_shape((i3_shape5){1, 3, 3, 5, 8}, &p).d, 0);
}

Test(conv, scratch_stays_modest) {
    /* 320 channels at 8^3 and 32 channels at 128^3: scratch is the packed weights plus a few MB per thread
     * whatever the input */
    i3_conv_params p = {320, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {I3_ACT_NONE, 0}};
    const size_t mb = 1024 * 1024, weights_320 = 320u * 320 * 27 * sizeof(float);
    cr_expect_leq(i3_cpu_conv_scratch_bytes((i3_shape5){1, 320, 8, 8, 8}, &p, 2), weights_320 + 2 * 5 * mb);
    p.cout = 32;
    cr_expect_leq(i3_cpu_conv_scratch_bytes((i3_shape5){1, 32, 128, 128, 128}, &p, 2), 2 * 5 * mb);
    p = (i3_conv_params){4, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {I3_ACT_NONE, 0}};
    cr_expect_eq(i3_cpu_conv_scratch_bytes((i3_shape5){1, 32, 16, 16, 16}, &p, 2), 0);
}

/* ---- transposed convolution ------------------------------------------------------------------ */

Test(conv_transpose, fast_matches_reference) {
    static const struct {
        i3_shape5 x;
        int cout, k[3], bias;
    } cases[] = {
        {{2, 4, 3, 5, 7}, 3, {2, 2, 2}, 1},
        {{1, 5, 3, 5, 7}, 2, {1, 2, 2}, 0},
        {{1, 3, 1, 5, 7}, 4, {1, 2, 2}, 1},  /* 2D */
        {{1, 3, 2, 3, 5}, 3, {3, 1, 2}, 1},
        {{1, 40, 9, 10, 11}, 24, {2, 2, 2}, 1}, /* several tiles */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int threads = 1; threads <= 2; threads++) {
            fx_rng r = fx_rng_seed(2000 + i);
            i3_conv_transpose_params p = {cases[i].cout, {cases[i].k[0], cases[i].k[1], cases[i].k[2]}};
            const i3_shape5 xs = cases[i].x, ys = i3_conv_transpose_out_shape(xs, &p);
            const int64_t nx = i3_shape5_numel(xs), ny = i3_shape5_numel(ys);
            float *x = random_buffer(&r, nx, -1, 1), *w = random_buffer(&r, xs.c * p.cout * p.k[0] * p.k[1] * p.k[2], -1, 1);
            float *b = cases[i].bias ? random_buffer(&r, p.cout, -1, 1) : NULL;
            float *ref = malloc((size_t)ny * sizeof(float)), *y = fx_guarded_alloc(ny);
            cr_expect(ys.d == xs.d * p.k[0] && ys.h == xs.h * p.k[1] && ys.w == xs.w * p.k[2] && ys.c == p.cout);
            i3_cpu_conv_transpose_ref(x, xs, w, b, &p, ref);
            i3_cpu_conv_transpose(x, xs, w, b, &p, y, threads);
            char label[128];
            snprintf(label, sizeof label, "conv_transpose x[%ld,%ld,%ld,%ld,%ld] k%dx%dx%d t%d", (long)xs.n, (long)xs.c,
                     (long)xs.d, (long)xs.h, (long)xs.w, p.k[0], p.k[1], p.k[2], threads);
            expect_close(label, y, ref, ny, TOL);
            cr_expect(fx_guards_intact(y, ny), "%s: guard overwritten", label);
            free(x), free(w), free(b), free(ref), fx_guarded_free(y);
        }
}

/* ---- instance norm --------------------------------------------------------------------------- */

Test(instance_norm, fast_matches_reference_also_in_place) {
    static const struct {
        i3_shape5 x;
        int affine;
        i3_act_kind act;
        float offset; /* a large common offset checks that centring loses no digits */
    } cases[] = {
        {{2, 3, 3, 5, 7}, 1, I3_ACT_LEAKY_RELU, 0}, {{1, 4, 1, 9, 11}, 0, I3_ACT_NONE, 0},
        {{1, 2, 17, 19, 23}, 1, I3_ACT_RELU, 0},   {{1, 3, 3, 5, 7}, 1, I3_ACT_NONE, 1000},
        {{1, 2, 1, 1, 1}, 1, I3_ACT_NONE, 0}, /* one value: var 0 -> beta */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int threads = 1; threads <= 2; threads++)
            for (int in_place = 0; in_place <= 1; in_place++) {
                fx_rng r = fx_rng_seed(3000 + i);
                const i3_shape5 xs = cases[i].x;
                const int64_t n = i3_shape5_numel(xs);
                float *x = random_buffer(&r, n, cases[i].offset - 1, cases[i].offset + 1);
                float *g = cases[i].affine ? random_buffer(&r, xs.c, 0.5f, 1.5f) : NULL;
                float *bt = cases[i].affine ? random_buffer(&r, xs.c, -1, 1) : NULL;
                i3_norm_params p = {1e-5f, {cases[i].act, 0.01f}};
                float *ref = malloc((size_t)n * sizeof(float)), *y = fx_guarded_alloc(n);
                i3_cpu_instance_norm_ref(x, xs, g, bt, &p, ref);
                if (in_place) {
                    memcpy(y, x, (size_t)n * sizeof(float));
                    i3_cpu_instance_norm(y, xs, g, bt, &p, y, threads);
                } else {
                    i3_cpu_instance_norm(x, xs, g, bt, &p, y, threads);
                }
                char label[128];
                snprintf(label, sizeof label, "instance_norm x[%ld,%ld,%ld,%ld,%ld] offset %g t%d%s", (long)xs.n,
                         (long)xs.c, (long)xs.d, (long)xs.h, (long)xs.w, cases[i].offset, threads,
                         in_place ? " in place" : "");
                expect_close(label, y, ref, n, TOL);
                cr_expect(fx_guards_intact(y, n), "%s: guard overwritten", label);
                if (in_place) { /* the reference in place too */
                    float *z = malloc((size_t)n * sizeof(float));
                    memcpy(z, x, (size_t)n * sizeof(float));
                    i3_cpu_instance_norm_ref(z, xs, g, bt, &p, z);
                    cr_expect(memcmp(z, ref, (size_t)n * sizeof(float)) == 0, "%s: reference in place differs", label);
                    free(z);
                }
                free(x), free(g), free(bt), free(ref), fx_guarded_free(y);
            }
}

Test(instance_norm, normalizes) {
    /* without affine every plane has mean 0 and variance var / (var + eps) */
    fx_rng r = fx_rng_seed(3100);
    const i3_shape5 xs = {1, 2, 3, 5, 7};
    const int64_t s = i3_shape5_spatial(xs);
    float *x = random_buffer(&r, i3_shape5_numel(xs), -3, 5), *y = malloc((size_t)i3_shape5_numel(xs) * sizeof(float));
    i3_norm_params p = {1e-5f, {I3_ACT_NONE, 0}};
    i3_cpu_instance_norm(x, xs, NULL, NULL, &p, y, 2);
    for (int c = 0; c < 2; c++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < s; i++) m += y[c * s + i];
        m /= s;
        for (int64_t i = 0; i < s; i++) v += (y[c * s + i] - m) * (y[c * s + i] - m);
        v /= s;
        cr_expect(fabs(m) < 1e-6 && fabs(v - 1) < 1e-3, "plane %d: mean %g var %g", c, m, v);
    }
    free(x), free(y);
}

/* ---- ACS convolution: against the 3D convolution reference with one unsqueezed kernel per part ----- */

Test(acs_conv, split_matches_acsconv) {
    static const int cases[][4] = {{1, 1, 0, 0}, {2, 1, 1, 0}, {16, 6, 5, 5}, {64, 22, 21, 21}, {128, 43, 43, 42}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int s[3];
        i3_acs_split(cases[i][0], s);
        cr_expect(s[0] == cases[i][1] && s[1] == cases[i][2] && s[2] == cases[i][3], "cout %d", cases[i][0]);
    }
}

Test(acs_conv, parts_are_3d_convs_with_unsqueezed_kernels) {
    static const struct {
        i3_shape5 x;
        int cout, k, stride;
    } cases[] = {{{1, 3, 5, 6, 7}, 5, 3, 1}, {{2, 2, 7, 5, 6}, 7, 3, 2}, {{1, 3, 4, 5, 6}, 4, 1, 1}, {{1, 2, 9, 7, 8}, 3, 5, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx_rng r = fx_rng_seed(4000 + i);
        const int k = cases[i].k, s = cases[i].stride, pad = k / 2; /* same padding: kernel-less axis tap = s * o */
        const i3_shape5 xs = cases[i].x;
        i3_acs_conv_params p = {cases[i].cout, k, s, pad, {I3_ACT_LEAKY_RELU, 0.01f}};
        const i3_shape5 ys = i3_acs_conv_out_shape(xs, &p);
        const int64_t ny = i3_shape5_numel(ys), per_out = xs.c * k * k;
        float *x = random_buffer(&r, i3_shape5_numel(xs), -1, 1), *w = random_buffer(&r, p.cout * per_out, -1, 1);
        float *b = random_buffer(&r, p.cout, -1, 1);
        float *y = fx_guarded_alloc(ny), *expect = malloc((size_t)ny * sizeof(float));
        i3_cpu_acs_conv_ref(x, xs, w, b, &p, y);
        int split[3], first = 0;
        i3_acs_split(p.cout, split);
        for (int part = 0; part < 3; part++) {
            if (split[part] == 0) continue;
            /* the 2D kernel (k, k) laid on the part's two axes, size 1 on the third */
            i3_conv_params cp = {split[part], {k, k, k}, {s, s, s}, {pad, pad, pad}, p.act};
            cp.k[part] = 1, cp.pad[part] = 0;
            const i3_shape5 ps = i3_conv_out_shape(xs, &cp);
            cr_assert(ps.d == ys.d && ps.h == ys.h && ps.w == ys.w, "part %d shape", part);
            const int64_t sp = i3_shape5_spatial(ps);
            float *part_y = malloc((size_t)i3_shape5_numel(ps) * sizeof(float));
            i3_cpu_conv_ref(x, xs, w + first * per_out, b + first, &cp, part_y);
            for (int64_t n = 0; n < xs.n; n++)
                memcpy(expect + (n * p.cout + first) * sp, part_y + n * split[part] * sp,
                       (size_t)(split[part] * sp) * sizeof(float));
            free(part_y);
            first += split[part];
        }
        char label[128];
        snprintf(label, sizeof label, "acs_conv x[%ld,%ld,%ld,%ld,%ld] cout %d k%d s%d p%d", (long)xs.n, (long)xs.c,
                 (long)xs.d, (long)xs.h, (long)xs.w, p.cout, k, s, pad);
        expect_close(label, y, expect, ny, 1e-6);
        cr_expect(fx_guards_intact(y, ny), "%s: guard overwritten", label);
        free(x), free(w), free(b), fx_guarded_free(y), free(expect);
    }
}

/* ---- batch norm folding: conv(folded) == BN(conv) -------------------------------------------- */

Test(batch_norm, fold_equals_conv_then_bn) {
    fx_rng r = fx_rng_seed(5000);
    const i3_shape5 xs = {1, 3, 4, 5, 6};
    for (int with_bias = 0; with_bias <= 1; with_bias++) {
        i3_conv_params p = {5, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {I3_ACT_NONE, 0}};
        const int64_t per_out = 3 * 27;
        const i3_shape5 ys = i3_conv_out_shape(xs, &p);
        const int64_t ny = i3_shape5_numel(ys), s = i3_shape5_spatial(ys);
        float *x = random_buffer(&r, i3_shape5_numel(xs), -1, 1), *w = random_buffer(&r, 5 * per_out, -1, 1);
        float *b = with_bias ? random_buffer(&r, 5, -1, 1) : NULL;
        float *g = random_buffer(&r, 5, 0.5f, 2), *bt = random_buffer(&r, 5, -1, 1);
        float *mean = random_buffer(&r, 5, -1, 1), *var = random_buffer(&r, 5, 0.1f, 3);
        float *expect = malloc((size_t)ny * sizeof(float)), *y = malloc((size_t)ny * sizeof(float)), bias[5];
        i3_cpu_conv_ref(x, xs, w, b, &p, expect);
        for (int o = 0; o < 5; o++)
            for (int64_t i = 0; i < s; i++)
                expect[o * s + i] = (float)((expect[o * s + i] - mean[o]) / sqrt(var[o] + 1e-5) * g[o] + bt[o]);
        i3_cpu_fold_batch_norm(w, 5, per_out, b, g, bt, mean, var, 1e-5f, bias);
        i3_cpu_conv_ref(x, xs, w, bias, &p, y);
        expect_close(with_bias ? "batch_norm fold (conv with bias)" : "batch_norm fold (conv without bias)", y, expect,
                     ny, TOL);
        free(x), free(w), free(b), free(g), free(bt), free(mean), free(var), free(expect), free(y);
    }
}

/* ---- elementwise ----------------------------------------------------------------------------- */

Test(elementwise, activation_add_concat) {
    fx_rng r = fx_rng_seed(6000);
    const int64_t n = 1001;
    float *a = random_buffer(&r, n, -2, 2), *b = random_buffer(&r, n, -2, 2), *y = fx_guarded_alloc(n);
    const i3_act acts[] = {{I3_ACT_NONE, 0}, {I3_ACT_RELU, 0}, {I3_ACT_LEAKY_RELU, 0.01f}};
    for (int k = 0; k < 3; k++)
        for (int threads = 1; threads <= 2; threads++) {
            i3_cpu_activation(a, n, acts[k], y, threads);
            for (int64_t i = 0; i < n; i++) {
                float e = acts[k].kind == I3_ACT_NONE || a[i] >= 0 ? a[i] : acts[k].kind == I3_ACT_RELU ? 0 : 0.01f * a[i];
                cr_assert_eq(y[i], e, "activation %d at %ld", k, (long)i);
            }
            i3_cpu_add(a, b, n, acts[k], y, threads);
            for (int64_t i = 0; i < n; i++) cr_assert_eq(y[i], i3_act_apply(acts[k], a[i] + b[i]));
            memcpy(y, a, (size_t)n * sizeof(float)); /* in place */
            i3_cpu_add(y, b, n, acts[k], y, threads);
            for (int64_t i = 0; i < n; i++) cr_assert_eq(y[i], i3_act_apply(acts[k], a[i] + b[i]));
            memcpy(y, a, (size_t)n * sizeof(float));
            i3_cpu_activation(y, n, acts[k], y, threads);
            for (int64_t i = 0; i < n; i++) cr_assert_eq(y[i], i3_act_apply(acts[k], a[i]));
            cr_assert(fx_guards_intact(y, n));
        }
    /* concat [2, 3, 7] and [2, 4, 7] -> [2, 7, 7] */
    float *c = fx_guarded_alloc(2 * 7 * 7);
    i3_cpu_concat(a, 3, b, 4, 2, 7, c);
    for (int i = 0; i < 2; i++)
        for (int ch = 0; ch < 7; ch++)
            for (int j = 0; j < 7; j++)
                cr_assert_eq(c[(i * 7 + ch) * 7 + j], ch < 3 ? a[(i * 3 + ch) * 7 + j] : b[(i * 4 + ch - 3) * 7 + j]);
    cr_assert(fx_guards_intact(c, 2 * 7 * 7));
    free(a), free(b), fx_guarded_free(y), fx_guarded_free(c);
}

/* ---- resize ---------------------------------------------------------------------------------- */

Test(resize, align_corners_reproduces_linear_functions) {
    /* trilinear interpolation is exact on f = 1 + 2z - 3y + 0.5x; with align_corners the source
     * coordinate is (in - 1) / (out - 1) * dst on each axis */
    const i3_shape5 xs = {1, 2, 3, 5, 4};
    const int64_t out[][3] = {{5, 9, 7}, {2, 3, 11}, {1, 4, 2}, {3, 5, 4}};
    float *x = malloc((size_t)i3_shape5_numel(xs) * sizeof(float));
    for (int64_t c = 0; c < 2; c++)
        for (int64_t z = 0; z < 3; z++)
            for (int64_t yy = 0; yy < 5; yy++)
                for (int64_t i = 0; i < 4; i++) x[((c * 3 + z) * 5 + yy) * 4 + i] = (float)(c + 1 + 2 * z - 3 * yy + 0.5 * i);
    for (size_t k = 0; k < sizeof out / sizeof out[0]; k++)
        for (int threads = 1; threads <= 2; threads++) {
            i3_resize_params p = {{out[k][0], out[k][1], out[k][2]}, 1};
            const int64_t ny = 2 * out[k][0] * out[k][1] * out[k][2];
            float *y = fx_guarded_alloc(ny), *expect = malloc((size_t)ny * sizeof(float));
            i3_cpu_resize(x, xs, &p, y, threads);
            const double sz = out[k][0] > 1 ? 2.0 / (out[k][0] - 1) : 0, sy = out[k][1] > 1 ? 4.0 / (out[k][1] - 1) : 0,
                         sx = out[k][2] > 1 ? 3.0 / (out[k][2] - 1) : 0;
            int64_t q = 0;
            for (int64_t c = 0; c < 2; c++)
                for (int64_t z = 0; z < out[k][0]; z++)
                    for (int64_t yy = 0; yy < out[k][1]; yy++)
                        for (int64_t i = 0; i < out[k][2]; i++)
                            expect[q++] = (float)(c + 1 + 2 * sz * z - 3 * sy * yy + 0.5 * sx * i);
            char label[96];
            snprintf(label, sizeof label, "resize align_corners to %ldx%ldx%ld t%d", (long)out[k][0], (long)out[k][1],
                     (long)out[k][2], threads);
            expect_close(label, y, expect, ny, TOL);
            cr_expect(fx_guards_intact(y, ny));
            free(expect), fx_guarded_free(y);
        }
    free(x);
}

Test(resize, same_size_is_a_copy_and_2x_half_pixel) {
    fx_rng r = fx_rng_seed(7000);
    const i3_shape5 xs = {1, 1, 1, 3, 4};
    float *x = random_buffer(&r, 12, -1, 1), y[12], up[48];
    for (int ac = 0; ac <= 1; ac++) {
        i3_resize_params p = {{1, 3, 4}, ac};
        i3_cpu_resize(x, xs, &p, y, 1);
        cr_expect(memcmp(x, y, sizeof y) == 0);
    }
    /* align_corners = False, 2x along w: dst 0 -> src -0.25 clamped to 0; dst 1 -> 0.25; dst 7 -> 3.25 -> x[3] */
    i3_resize_params p = {{1, 3, 8}, 0};
    i3_cpu_resize(x, (i3_shape5){1, 1, 1, 3, 4}, &p, up, 1);
    for (int row = 0; row < 3; row++) {
        const float *xr = x + row * 4, *ur = up + row * 8;
        cr_expect_float_eq(ur[0], xr[0], 1e-6);
        cr_expect_float_eq(ur[1], 0.75f * xr[0] + 0.25f * xr[1], 1e-6);
        cr_expect_float_eq(ur[2], 0.25f * xr[0] + 0.75f * xr[1], 1e-6);
        cr_expect_float_eq(ur[7], xr[3], 1e-6);
    }
    free(x);
}

/* ---- softmax / uncertainty ------------------------------------------------------------------- */

Test(softmax_uncertainty, properties) {
    fx_rng r = fx_rng_seed(8000);
    const int64_t n = 2, c = 5, s = 37;
    float *l = random_buffer(&r, n * c * s, -4, 4);
    l[0 * s + 3] = l[2 * s + 3] = 10; /* tie at voxel 3 of sample 0: channel 0 wins */
    l[1 * s + 4] = 1000;               /* huge logit: no overflow */
    float *pr = fx_guarded_alloc(n * c * s), *h = fx_guarded_alloc(n * s), *m = fx_guarded_alloc(n * s);
    int32_t am[2 * 37];
    for (int threads = 1; threads <= 2; threads++) {
        i3_cpu_softmax_uncertainty(l, n, c, s, pr, h, m, am, threads);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < s; j++) {
                double sum = 0, ent = 0, best = -1;
                int arg = 0;
                for (int64_t k = 0; k < c; k++) {
                    double pk = pr[(i * c + k) * s + j];
                    sum += pk;
                    if (pk > 0) ent -= pk * log(pk);
                    if (pk > best) best = pk, arg = (int)k;
                }
                cr_assert(fabs(sum - 1) < 1e-6, "probabilities sum to %g", sum);
                cr_assert(fabs(m[i * s + j] - best) < 1e-6);
                cr_assert(fabs(h[i * s + j] - ent / log(c)) < 1e-6, "entropy %g vs %g", h[i * s + j], ent / log(c));
                cr_assert_eq(am[i * s + j], arg);
            }
        cr_assert_eq(am[3], 0);
        cr_assert_eq(am[4], 1);
        cr_assert(fx_guards_intact(pr, n * c * s) && fx_guards_intact(h, n * s) && fx_guards_intact(m, n * s));
    }
    /* uniform logits: entropy 1, msp 1/C; one channel: entropy 0, probability 1 */
    float flat[5] = {2, 2, 2, 2, 2}, e1, m1, p1;
    i3_cpu_softmax_uncertainty(flat, 1, 5, 1, NULL, &e1, &m1, NULL, 1);
    cr_expect(fabs(e1 - 1) < 1e-6 && fabs(m1 - 0.2) < 1e-6);
    i3_cpu_softmax_uncertainty(flat, 1, 1, 1, &p1, &e1, &m1, NULL, 1);
    cr_expect(e1 == 0 && p1 == 1 && m1 == 1);
    free(l), fx_guarded_free(pr), fx_guarded_free(h), fx_guarded_free(m);
}

/* ---- slice sums ------------------------------------------------------------------------------ */

Test(slice_sums, per_axis) {
    const int64_t d = 3, h = 4, w = 5;
    float x[60];
    for (int64_t z = 0; z < d; z++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t i = 0; i < w; i++) x[(z * h + y) * w + i] = (float)(100 * z + 10 * y + i);
    double sd[3], sh[4], sw[5];
    i3_cpu_slice_sums(x, d, h, w, sd, sh, sw);
    for (int z = 0; z < 3; z++) cr_expect_eq(sd[z], 20 * 100.0 * z + 5 * (0 + 10 + 20 + 30) + 4 * 10);
    for (int y = 0; y < 4; y++) cr_expect_eq(sh[y], 15 * 10.0 * y + 5 * (0 + 100 + 200) + 3 * 10);
    for (int i = 0; i < 5; i++) cr_expect_eq(sw[i], 12.0 * i + 4 * 300 + 3 * 60);
    i3_cpu_slice_sums(x, d, h, w, NULL, sh, NULL); /* any output may be NULL */
    cr_expect_eq(sh[0], 5 * 300.0 + 30);
}
