/* CPU ops against PyTorch: reads the fixtures written by tests/gen_ops_torch.py ($I3RT_FIXTURES/ops_torch,
 * one safetensors file per case: inputs, PyTorch's output y, parameters as JSON in the metadata) and
 * runs the i3rt reference and fast paths (1 and 2 threads) on them. Printed per case: max abs error,
 * max |torch|, and their ratio; tolerance: max abs error <= 1e-5 * max |torch| (fp32, single op). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "ops.h"

#define TOL 1e-5
#define GROUP "ops_torch"

/* Opens <op>_<i>.safetensors, NULL after the last case. */
static i3_weights *open_case(const char *op, int i) {
    char name[64];
    snprintf(name, sizeof name, "%s_%d.safetensors", op, i);
    return fx_open(GROUP, name);
}

static void check(const char *op, int i, const char *variant, const float *got, const float *torch_y, int64_t n) {
    char label[96];
    snprintf(label, sizeof label, "torch %s_%d %s", op, i, variant);
    fx_err e = fx_compare(label, got, torch_y, n);
    cr_expect(e.rel <= TOL, "%s: rel error %.3e > %.0e (max abs %.3e)", label, e.rel, TOL, e.max_abs);
}

static const float *need(const i3_weights *w, const char *name, int64_t *n) {
    const float *t = fx_tensor(w, name, n);
    cr_assert_not_null(t, "%s: tensor %s missing", i3_weights_label(w), name);
    return t;
}

static i3_shape5 shape_of(const i3_weights *w, const char *name) {
    int64_t s[5];
    cr_assert(fx_shape5(w, name, s), "%s: %s is not 5D", i3_weights_label(w), name);
    return (i3_shape5){s[0], s[1], s[2], s[3], s[4]};
}

static i3_act act_of(const i3_weights *w) {
    if (fx_param_str_eq(w, "act", "relu")) return (i3_act){I3_ACT_RELU, 0};
    if (fx_param_str_eq(w, "act", "leaky")) return (i3_act){I3_ACT_LEAKY_RELU, 0.01f};
    return (i3_act){I3_ACT_NONE, 0};
}

static float *out_buffer(int64_t n) {
    float *y = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    cr_assert_not_null(y);
    return y;
}

static i3_conv_params conv_params_of(const i3_weights *w) {
    i3_conv_params p = {(int)fx_param_int(w, "cout", -1), {0}, {0}, {0}, act_of(w)};
    for (int a = 0; a < 3; a++) {
        p.k[a] = (int)fx_param_int(w, "k", a);
        p.stride[a] = (int)fx_param_int(w, "stride", a);
        p.pad[a] = (int)fx_param_int(w, "pad", a);
    }
    return p;
}

/* reference and fast convolution (1 and 2 threads) against y */
static void check_conv_paths(const char *op, int i, const float *x, i3_shape5 xs, const float *wt, const float *b,
                             const i3_conv_params *p, const float *y, int64_t ny) {
    cr_assert_eq(i3_shape5_numel(i3_conv_out_shape(xs, p)), ny, "%s_%d: output size", op, i);
    float *got = out_buffer(ny);
    i3_cpu_conv_ref(x, xs, wt, b, p, got);
    check(op, i, "ref", got, y, ny);
    for (int threads = 1; threads <= 2; threads++) {
        void *scratch = malloc(i3_cpu_conv_scratch_bytes(xs, p, threads) + 1);
        i3_cpu_conv(x, xs, wt, b, p, got, scratch, threads);
        check(op, i, threads == 1 ? "fast t1" : "fast t2", got, y, ny);
        free(scratch);
    }
    free(got);
}

Test(torch, conv) {
    int i = 0;
    for (i3_weights *w; (w = open_case("conv", i)); i++) {
        int64_t ny;
        const float *y = need(w, "y", &ny);
        const i3_conv_params p = conv_params_of(w);
        check_conv_paths("conv", i, need(w, "x", NULL), shape_of(w, "x"), need(w, "w", NULL), fx_tensor(w, "b", NULL), &p,
                         y, ny);
        i3_weights_free(w);
    }
    cr_assert_gt(i, 0, "no conv fixtures in $I3RT_FIXTURES/" GROUP " (run tests/gen_ops_torch.py)");
}

Test(torch, conv_transpose) {
    int i = 0;
    for (i3_weights *w; (w = open_case("conv_transpose", i)); i++) {
        int64_t ny;
        const float *y = need(w, "y", &ny), *x = need(w, "x", NULL), *wt = need(w, "w", NULL), *b = fx_tensor(w, "b", NULL);
        const i3_shape5 xs = shape_of(w, "x");
        i3_conv_transpose_params p = {(int)fx_param_int(w, "cout", -1), {0}};
        for (int a = 0; a < 3; a++) p.k[a] = (int)fx_param_int(w, "k", a);
        cr_assert_eq(i3_shape5_numel(i3_conv_transpose_out_shape(xs, &p)), ny);
        float *got = out_buffer(ny);
        i3_cpu_conv_transpose_ref(x, xs, wt, b, &p, got);
        check("conv_transpose", i, "ref", got, y, ny);
        for (int threads = 1; threads <= 2; threads++) {
            i3_cpu_conv_transpose(x, xs, wt, b, &p, got, threads);
            check("conv_transpose", i, threads == 1 ? "fast t1" : "fast t2", got, y, ny);
        }
        free(got);
        i3_weights_free(w);
    }
    cr_assert_gt(i, 0, "no conv_transpose fixtures");
}

Test(torch, acs_conv) {
    int i = 0;
    for (i3_weights *w; (w = open_case("acs_conv", i)); i++) {
        int64_t ny;
        const float *y = need(w, "y", &ny);
        const i3_shape5 xs = shape_of(w, "x");
        i3_acs_conv_params p = {(int)fx_param_int(w, "cout", -1), (int)fx_param_int(w, "k", -1),
                                (int)fx_param_int(w, "stride", -1), (int)fx_param_int(w, "pad", -1), act_of(w)};
        cr_assert_eq(i3_shape5_numel(i3_acs_conv_out_shape(xs, &p)), ny);
        float *got = out_buffer(ny);
        i3_cpu_acs_conv_ref(need(w, "x", NULL), xs, need(w, "w", NULL), fx_tensor(w, "b", NULL), &p, got);
        check("acs_conv", i, "ref", got, y, ny);
        free(got);
        i3_weights_free(w);
    }
    cr_assert_gt(i, 0, "no acs_conv fixtures");
}

Test(torch, instance_norm) {
    int i = 0;
    for (i3_weights *w; (w = open_case("instance_norm", i)); i++) {
        int64_t ny;
        const float *y = need(w, "y", &ny), *x = need(w, "x", NULL);
        const float *g = fx_tensor(w, "gamma", NULL), *b = fx_tensor(w, "beta", NULL);
        const i3_shape5 xs = shape_of(w, "x");
        i3_norm_params p = {(float)fx_param_num(w, "eps"), act_of(w)};
        float *got = out_buffer(ny);
        i3_cpu_instance_norm_ref(x, xs, g, b, &p, got);
        check("instance_norm", i, "ref", got, y, ny);
        for (int threads = 1; threads <= 2; threads++) {
            memcpy(got, x, (size_t)ny * sizeof(float)); /* in place */
            i3_cpu_instance_norm(got, xs, g, b, &p, got, threads);
            check("instance_norm", i, threads == 1 ? "fast t1 in place" : "fast t2 in place", got, y, ny);
        }
        free(got);
        i3_weights_free(w);
    }
    cr_assert_gt(i, 0, "no instance_norm fixtures");
}

Test(torch, batch_norm_fold) {
    int i = 0;
    for (i3_weights *w; (w = open_case("batch_norm", i)); i++) {
        int64_t ny, nw;
        const float *y = need(w, "y", &ny), *wt = need(w, "w", &nw);
        const i3_conv_params p = conv_params_of(w);
        float *folded = out_buffer(nw), *bias = out_buffer(p.cout);
        memcpy(folded, wt, (size_t)nw * sizeof(float));
        i3_cpu_fold_batch_norm(folded, p.cout, nw / p.cout, fx_tensor(w, "b", NULL), need(w, "gamma", NULL),
                               need(w, "beta", NULL), need(w, "mean", NULL), need(w, "var", NULL),
                               (float)fx_param_num(w, "eps"), bias);
        check_conv_paths("batch_norm", i, need(w, "x", NULL), shape_of(w, "x"), folded, bias, &p, y, ny);
        free(folded), free(bias);
        i3_weights_free(w);
    }
    cr_assert_gt(i, 0, "no batch_norm fixtures");
}

Test(torch, activation_and_add) {
    int count = 0;
    for (int i = 0;; i++) {
        i3_weights *wa = open_case("activation", i), *wb = open_case("add", i);
        if (!wa || !wb) {
            i3_weights_free(wa), i3_weights_free(wb);
            break;
        }
        int64_t n;
        const float *ya = need(wa, "y", &n), *x = need(wa, "x", NULL);
        float *got = out_buffer(n);
        for (int threads = 1; threads <= 2; threads++) {
            i3_cpu_activation(x, n, act_of(wa), got, threads);
            check("activation", i, threads == 1 ? "t1" : "t2", got, ya, n);
            i3_cpu_add(need(wb, "x", NULL), need(wb, "r", NULL), n, act_of(wb), got, threads);
            check("add", i, threads == 1 ? "t1" : "t2", got, need(wb, "y", NULL), n);
        }
        free(got);
        i3_weights_free(wa), i3_weights_free(wb);
        count++;
    }
    cr_assert_gt(count, 0, "no activation/add fixtures");
}

Test(torch, resize) {
    int i = 0;
    for (i3_weights *w; (w = open_case("resize", i)); i++) {
        int64_t ny;
        const float *y = need(w, "y", &ny);
        i3_resize_params p = {{fx_param_int(w, "out", 0), fx_param_int(w, "out", 1), fx_param_int(w, "out", 2)},
                              (int)fx_param_int(w, "align_corners", -1)};
        const i3_shape5 xs = shape_of(w, "x");
        cr_assert_eq(xs.n * xs.c * p.out[0] * p.out[1] * p.out[2], ny);
        float *got = out_buffer(ny);
        for (int threads = 1; threads <= 2; threads++) {
            i3_cpu_resize(need(w, "x", NULL), xs, &p, got, threads);
            check("resize", i, p.align_corners ? (threads == 1 ? "align t1" : "align t2") : (threads == 1 ? "t1" : "t2"),
                  got, y, ny);
        }
        free(got);
        i3_weights_free(w);
    }
    cr_assert_gt(i, 0, "no resize fixtures");
}

Test(torch, softmax_uncertainty) {
    int i = 0;
    for (i3_weights *w; (w = open_case("softmax", i)); i++) {
        const int64_t n = fx_param_int(w, "n", -1), c = fx_param_int(w, "c", -1), s = fx_param_int(w, "s", -1);
        float *probs = out_buffer(n * c * s), *entropy = out_buffer(n * s), *msp = out_buffer(n * s);
        float *arg_f = out_buffer(n * s);
        int32_t *arg = malloc((size_t)(n * s) * sizeof(int32_t));
        i3_cpu_softmax_uncertainty(need(w, "x", NULL), n, c, s, probs, entropy, msp, arg, 2);
        for (int64_t v = 0; v < n * s; v++) arg_f[v] = (float)arg[v];
        check("softmax", i, "probs", probs, need(w, "probs", NULL), n * c * s);
        check("softmax", i, "entropy", entropy, need(w, "entropy", NULL), n * s);
        check("softmax", i, "msp", msp, need(w, "msp", NULL), n * s);
        const float *want = need(w, "argmax", NULL);
        for (int64_t v = 0; v < n * s; v++) cr_expect_eq(arg_f[v], want[v], "softmax_%d argmax at %ld", i, (long)v);
        free(probs), free(entropy), free(msp), free(arg_f), free(arg);
        i3_weights_free(w);
    }
    cr_assert_gt(i, 0, "no softmax fixtures");
}
