/* Whole-network parity of nnU-Net v2 U-Nets against PyTorch, and bad weight files / inputs.
 *
 * tests/gen_unet.py plans a small synthetic dataset with nnunetv2's own planners, saves trained-model
 * folders with random weights, converts them with tools/convert_pt/convert_nnunet.py and runs the
 * PyTorch forward. Each network NAME gives $I3RT_FIXTURES/unet/NAME.safetensors (the converted
 * weights) and NAME_io.safetensors ("input" [1, C, d, h, w], "logits" [1, K, d, h, w] on the patch
 * size; "input_b", "logits_b" on a second size; 2D: d = 1).
 * Tolerance: max |i3rt - torch| <= 1e-4 * max |torch| (fp32 everywhere; the errors are summation
 * order differences of convolutions and instance norm statistics). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "i3rt.h"
#include "weights.h"

#define UNET_REL_TOL 1e-4

static void fixture_path(char *buf, size_t n, const char *file) {
    const char *dir = getenv("I3RT_FIXTURES");
    cr_assert(dir, "I3RT_FIXTURES is not set (run through ctest, which runs tests/gen_unet.py first)");
    snprintf(buf, n, "%s/unet/%s", dir, file);
}

/* One tensor of the io file as float32 in a malloc'ed copy; shape [1, c, d, h, w]. */
static float *read_io(i3rt_context *ctx, i3_weights *io, const char *name, int64_t shape[5]) {
    const i3_weight_tensor *t = i3_weights_find(io, name);
    cr_assert(t, "%s: no tensor %s", i3_weights_label(io), name);
    cr_assert(t->ndim == 5 && t->shape[0] == 1, "%s: %s must be [1, c, d, h, w]", i3_weights_label(io), name);
    memcpy(shape, t->shape, 5 * sizeof *shape);
    const float *data;
    cr_assert_eq(i3_weights_get_f32(ctx, io, name, 5, shape, &data), I3RT_OK, "%s", i3rt_context_error(ctx));
    float *copy = malloc(t->numel * sizeof *copy);
    memcpy(copy, data, t->numel * sizeof *copy);
    return copy;
}

/* One forward of `model` on io's input`suffix`, compared with its logits`suffix`. */
static double compare_forward(i3rt_context *ctx, i3rt_model *model, i3_weights *io, const char *suffix,
                              const char *net_name, int check_patch, double tol) {
    char in_name[32], out_name[32];
    snprintf(in_name, sizeof in_name, "input%s", suffix);
    snprintf(out_name, sizeof out_name, "logits%s", suffix);
    int64_t in_shape[5], out_shape[5];
    float *input = read_io(ctx, io, in_name, in_shape);
    float *expected = read_io(ctx, io, out_name, out_shape);
    i3rt_model_info info;
    cr_assert_eq(i3rt_model_get_info(model, &info), I3RT_OK);
    cr_assert_eq(info.in_channels, in_shape[1]);
    cr_assert_eq(info.num_classes, out_shape[1]);

    const int64_t spatial[3] = {in_shape[2], in_shape[3], in_shape[4]};
    for (int a = 0; check_patch && a < 3; a++) /* gen_unet.py ran torch on the configuration's patch size */
        cr_expect_eq(info.patch_size[a], spatial[a], "%s: patch_size[%d] %lld, input %lld", net_name, a,
                     (long long)info.patch_size[a], (long long)spatial[a]);
    const size_t n_out = (size_t)(out_shape[1] * out_shape[2] * out_shape[3] * out_shape[4]);
    float *logits = malloc(n_out * sizeof *logits);
    cr_assert_eq(i3rt_model_forward(model, input, spatial, logits), I3RT_OK, "%s", i3rt_context_error(ctx));

    double max_abs = 0, max_ref = 0;
    for (size_t i = 0; i < n_out; i++) {
        const double err = fabs((double)logits[i] - (double)expected[i]);
        max_abs = err > max_abs || isnan(err) ? err : max_abs;
        max_ref = fmax(max_ref, fabs((double)expected[i]));
    }
    const double rel = max_abs / max_ref;
    printf("unet %-15s %s %dD, %d stages, input %lldx%lldx%lld, %lld parameters: max abs err %.3g, "
           "max |torch| %.3g, rel %.3g (tol %.0e)\n",
           net_name, info.network, info.dims, info.n_stages, (long long)spatial[0], (long long)spatial[1],
           (long long)spatial[2], (long long)info.n_parameters, max_abs, max_ref, rel, tol);
    fflush(stdout);
    cr_expect(max_ref > 0, "%s: torch logits are all zero", net_name);
    cr_expect(rel <= tol, "%s %s: relative error %.3g > %.0e", net_name, in_name, rel, tol);
    free(logits);
    free(input);
    free(expected);
    return rel;
}

/* Runs weights file NAME.safetensors on IO_NAME_io.safetensors's two inputs (the patch, then a
 * second size, which makes the model rebuild its graph) on one backend and compares the logits. */
static void check_parity_with(const char *net_name, const char *io_name, i3rt_backend_kind backend,
                              i3rt_precision precision, double tol) {
    char weights_path[1024], io_path[1024], file[128];
    snprintf(file, sizeof file, "%s.safetensors", net_name);
    fixture_path(weights_path, sizeof weights_path, file);
    snprintf(file, sizeof file, "%s_io.safetensors", io_name);
    fixture_path(io_path, sizeof io_path, file);

    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 2, backend), I3RT_OK);
    cr_assert_eq(i3rt_context_set_precision(ctx, precision), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3_weights *io;
    cr_assert_eq(i3_weights_open(ctx, io_path, &io), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3rt_model *model;
    cr_assert_eq(i3rt_model_load(ctx, weights_path, &model), I3RT_OK, "%s", i3rt_context_error(ctx));
    double rel = compare_forward(ctx, model, io, "", net_name, 1, tol);
    rel = fmax(rel, compare_forward(ctx, model, io, "_b", net_name, 0, tol));
    /* rounded operands must show: a backend that ignored the precision would stay near 1e-6 */
    if (precision != I3RT_PRECISION_F32)
        cr_expect_gt(rel, 1e-4, "%s: error %.3g, as if the convolutions still ran in f32", net_name, rel);
    i3_weights_free(io);
    i3rt_model_free(model);
    i3rt_context_free(ctx);
}

static void check_parity_on(const char *net_name, const char *io_name, i3rt_backend_kind backend) {
    check_parity_with(net_name, io_name, backend, I3RT_PRECISION_F32, UNET_REL_TOL);
}

static void check_parity(const char *net_name, const char *io_name) {
    check_parity_on(net_name, io_name, I3RT_BACKEND_CPU);
}

Test(unet, plain_2d_parity) { check_parity("plain_2d", "plain_2d"); }
Test(unet, plain_3d_parity) { check_parity("plain_3d", "plain_3d"); }
Test(unet, resenc_2d_parity) { check_parity("resenc_2d", "resenc_2d"); }
Test(unet, resenc_3d_parity) { check_parity("resenc_3d", "resenc_3d"); }
Test(unet, plain_2d_relu_parity) { check_parity("plain_2d_relu", "plain_2d_relu"); }
Test(unet, resenc_2d_stem_parity) { check_parity("resenc_2d_stem", "resenc_2d_stem"); }
/* kernel_sizes / strides / conv counts given as ints instead of lists: the same network. */
Test(unet, scalar_arch_kwargs_parity) { check_parity("plain_2d_scalar", "plain_2d"); }
/* The public API on the emulated CUDA device: weights uploaded to device memory, the same kernels
 * as on a GPU (the 3D nets are too slow for the emulator; tests/test_cuda_ops.c covers resenc_3d). */
Test(unet, plain_2d_parity_emulated_device) { check_parity_on("plain_2d", "plain_2d", I3RT_BACKEND_EMULATED); }
Test(unet, resenc_2d_parity_emulated_device) { check_parity_on("resenc_2d", "resenc_2d", I3RT_BACKEND_EMULATED); }
/* Tensor-core convolutions chosen through the public API: operands rounded to f16 / tf32 (10-bit
 * mantissas, about 5e-4 relative each), f32 accumulation; the logits stay within 1e-2 of PyTorch's. */
Test(unet, resenc_2d_f16_emulated_device) {
    check_parity_with("resenc_2d", "resenc_2d", I3RT_BACKEND_EMULATED, I3RT_PRECISION_F16, 1e-2);
}
Test(unet, plain_2d_tf32_emulated_device) {
    check_parity_with("plain_2d", "plain_2d", I3RT_BACKEND_EMULATED, I3RT_PRECISION_TF32, 1e-2);
}
/* With f16/bf16 convolutions the CUDA backend holds most activations channels-last in 2 bytes an element, and
 * the planner sizes them so (i3_backend_i.value_sizes): nnU-Net's 3d_fullres plan at 128^3 needs less memory. */
Test(unet, f16_plan_holds_channels_last_values_in_half) {
    char path[1024];
    fixture_path(path, sizeof path, "plain_3d.safetensors");
    const int64_t spatial[3] = {128, 128, 128};
    size_t peak[2];
    for (int k = 0; k < 2; k++) {
        i3rt_context *ctx;
        cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_EMULATED), I3RT_OK);
        cr_assert_eq(i3rt_context_set_precision(ctx, k ? I3RT_PRECISION_F16 : I3RT_PRECISION_F32), I3RT_OK);
        i3rt_model *model;
        cr_assert_eq(i3rt_model_load(ctx, path, &model), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(i3rt_model_plan(model, spatial, &peak[k]), I3RT_OK, "%s", i3rt_context_error(ctx));
        i3rt_model_free(model);
        i3rt_context_free(ctx);
    }
    printf("plain_3d at 128^3 on the emulated device: planned peak f32 %.1f MiB, f16 %.1f MiB\n", peak[0] / 1048576.0,
           peak[1] / 1048576.0);
    /* every activation but the image and the logits is channels-last f16 (the transposed convs' outputs too):
     * 455 against 896 MiB; 783 against 1288 before those, the planner's largest-first placement and the
     * upsamplings written inside their concats */
    cr_expect_lt((double)peak[1], 0.55 * (double)peak[0], "f16 plan %zu bytes, f32 %zu", peak[1], peak[0]);
}

Test(unet, precision_is_checked) {
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    cr_assert_eq(i3rt_context_set_precision(ctx, I3RT_PRECISION_F32), I3RT_OK);
    cr_assert_eq(i3rt_context_set_precision(ctx, I3RT_PRECISION_F16), I3RT_ERR_UNSUPPORTED);
    cr_assert(strstr(i3rt_context_error(ctx), "f32 only"), "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3rt_context_set_precision(ctx, (i3rt_precision)9), I3RT_ERR_INVALID_ARGUMENT);
    i3rt_context_free(ctx);
}

/* Each file fails to load with `status` and a message naming the file and `needle` (tensor or field).
 * tests/gen_unet.py derived them from plain_2d.safetensors, changing exactly that tensor or field. */
static const struct {
    const char *file;
    i3rt_status status;
    const char *needle;
} bad_files[] = {
    {"bad_shape.safetensors", I3RT_ERR_FORMAT, "decoder.stages.0.convs.0.conv.weight"}, /* transposed */
    {"bad_missing.safetensors", I3RT_ERR_FORMAT, "encoder.stages.1.0.convs.1.norm.weight"},
    {"bad_extra.safetensors", I3RT_ERR_FORMAT, "decoder.seg_layers.0.weight"},
    {"bad_norm.safetensors", I3RT_ERR_UNSUPPORTED, "BatchNorm2d"},
    {"bad_class.safetensors", I3RT_ERR_UNSUPPORTED, "UNetPlusPlus"},
    {"bad_dropout.safetensors", I3RT_ERR_UNSUPPORTED, "dropout_op"},
    {"bad_nonlin.safetensors", I3RT_ERR_UNSUPPORTED, "GELU"},
    {"bad_nonlin_first.safetensors", I3RT_ERR_UNSUPPORTED, "nonlin_first"},
    {"bad_conv_op.safetensors", I3RT_ERR_UNSUPPORTED, "conv_op"},
    {"bad_lengths.safetensors", I3RT_ERR_FORMAT, "features_per_stage"},
    {"bad_n_stages.safetensors", I3RT_ERR_UNSUPPORTED, "n_stages"},
    {"bad_json.safetensors", I3RT_ERR_FORMAT, "\"network\""},
};

Test(unet, bad_weight_files) {
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        const char *file = bad_files[i].file;
        char path[1024];
        fixture_path(path, sizeof path, file);
        i3rt_context *ctx;
        cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
        i3rt_model *model = (i3rt_model *)&model; /* must be reset to NULL on failure */
        const i3rt_status st = i3rt_model_load(ctx, path, &model);
        const char *msg = i3rt_context_error(ctx);
        printf("unet %-29s -> %s: %s\n", file, i3rt_status_name(st), msg);
        fflush(stdout);
        cr_expect_eq(st, bad_files[i].status, "%s: expected %s, got %s (%s)", file,
                     i3rt_status_name(bad_files[i].status), i3rt_status_name(st), msg);
        cr_expect_null(model, "%s: the model handle must be NULL after a failed load", file);
        cr_expect(strstr(msg, file) != NULL, "%s: message does not name the file: %s", file, msg);
        cr_expect(strstr(msg, bad_files[i].needle) != NULL, "%s: message does not name '%s': %s", file,
                  bad_files[i].needle, msg);
        i3rt_context_free(ctx);
    }
}

/* Spatial sizes the network cannot take: not divisible by the total stride; depth > 1 for 2D. */
static void check_forward_shape_fails(const char *net_name, const int64_t spatial[3]) {
    char path[1024], file[128];
    snprintf(file, sizeof file, "%s.safetensors", net_name);
    fixture_path(path, sizeof path, file);
    i3rt_context *ctx;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    i3rt_model *model;
    cr_assert_eq(i3rt_model_load(ctx, path, &model), I3RT_OK, "%s", i3rt_context_error(ctx));
    i3rt_model_info info;
    cr_assert_eq(i3rt_model_get_info(model, &info), I3RT_OK);
    const size_t n_in = (size_t)(info.in_channels * spatial[0] * spatial[1] * spatial[2]);
    const size_t n_out = (size_t)(info.num_classes * spatial[0] * spatial[1] * spatial[2]);
    float *input = calloc(n_in, sizeof *input), *logits = calloc(n_out, sizeof *logits);
    const i3rt_status st = i3rt_model_forward(model, input, spatial, logits);
    printf("unet %s forward %lldx%lldx%lld -> %s: %s\n", net_name, (long long)spatial[0], (long long)spatial[1],
           (long long)spatial[2], i3rt_status_name(st), i3rt_context_error(ctx));
    fflush(stdout);
    cr_expect_eq(st, I3RT_ERR_SHAPE, "expected I3RT_ERR_SHAPE, got %s", i3rt_status_name(st));
    cr_expect(strlen(i3rt_context_error(ctx)) > 0);
    free(input);
    free(logits);
    i3rt_model_free(model);
    i3rt_context_free(ctx);
}

Test(unet, input_not_divisible) {
    const int64_t spatial[3] = {1, 36, 30}; /* plain_2d's total stride is at least 2 per axis */
    check_forward_shape_fails("plain_2d", spatial);
}
Test(unet, depth_for_2d_network) {
    const int64_t spatial[3] = {2, 64, 64};
    check_forward_shape_fails("plain_2d", spatial);
}
