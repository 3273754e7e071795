/* Tests of the weight file reader (runtime/weights.c).
 *
 * Bad input: each test writes a small safetensors file in C (write_weights below), opens it and checks
 * the status and that the message names the file and the tensor or the problem. Good input: F16/BF16
 * conversion against hand-computed values, metadata, lookups. Round trip: tests/gen_weights.py converts
 * a real-format nnU-Net model folder with tools/convert_pt/convert_nnunet.py and also dumps the
 * canonical tensors with the safetensors library directly; both files must agree exactly (F32) and
 * within half an f16/bf16 ulp (the --dtype f16/bf16 outputs). */
#include "weights.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static i3_ctx *ctx;
static char path[256];

static void setup(void) {
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    snprintf(path, sizeof path, "/tmp/i3rt_test_weights_%d.safetensors", (int)getpid());
}

static void teardown(void) {
    unlink(path);
    i3rt_context_free(ctx);
}

/* Writes raw bytes to `path`. */
static void write_bytes(const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot create %s", path);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

/* Writes a safetensors file: header length (LE u64), the JSON header as given, then data_len data bytes
 * (0, 1, 2, ... unless data is given). */
static void write_weights(const char *header, const void *data, size_t data_len) {
    size_t n = strlen(header);
    uint8_t *buf = calloc(1, 8 + n + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    for (size_t i = 0; i < data_len; i++) buf[8 + n + i] = data ? ((const uint8_t *)data)[i] : (uint8_t)i;
    write_bytes(buf, 8 + n + data_len);
    free(buf);
}

/* Opens `path` expecting failure with `status`; the message must name the file and contain each of the
 * given fragments. */
static void expect_open_error(i3rt_status status, const char *frag1, const char *frag2) {
    i3_weights *w = (i3_weights *)1;
    i3rt_status st = i3_weights_open(ctx, path, &w);
    const char *msg = i3rt_context_error(ctx);
    cr_assert_eq(st, status, "status %s, expected %s (message: %s)", i3rt_status_name(st), i3rt_status_name(status), msg);
    cr_assert_null(w);
    cr_assert(strstr(msg, path), "message does not name the file: %s", msg);
    cr_assert(!frag1 || strstr(msg, frag1), "message lacks \"%s\": %s", frag1, msg);
    cr_assert(!frag2 || strstr(msg, frag2), "message lacks \"%s\": %s", frag2, msg);
}

static i3_weights *open_ok(void) {
    i3_weights *w = NULL;
    i3rt_status st = i3_weights_open(ctx, path, &w);
    cr_assert_eq(st, I3RT_OK, "open failed: %s", i3rt_context_error(ctx));
    return w;
}

TestSuite(weights_bad, .init = setup, .fini = teardown);

Test(weights_bad, missing_file) {
    unlink(path);
    expect_open_error(I3RT_ERR_IO, "cannot open", "No such file");
}

Test(weights_bad, directory) { /* e.g. a model folder given where its .safetensors file belongs */
    unlink(path);
    cr_assert_eq(mkdir(path, 0700), 0, "cannot create the directory %s", path);
    expect_open_error(I3RT_ERR_IO, "not a regular file", "directory");
    rmdir(path);
}

Test(weights_bad, empty_file) {
    write_bytes("", 0);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "0 bytes, too short");
}

Test(weights_bad, truncated_header_length) {
    write_bytes("\x10\x00\x00", 3);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "3 bytes, too short");
}

Test(weights_bad, header_length_larger_than_file) {
    uint8_t buf[8 + 4] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    write_bytes(buf, sizeof buf);
    expect_open_error(I3RT_ERR_FORMAT, "header length 100", "larger than the file");
}

Test(weights_bad, header_length_above_limit) {
    uint8_t buf[8 + 2] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};  /* 2^63 */
    write_bytes(buf, sizeof buf);
    expect_open_error(I3RT_ERR_FORMAT, "header length 9223372036854775808", "larger than");
}

Test(weights_bad, header_not_json) {
    write_weights("{\"a\": {\"dtype\": \"F32\", ", NULL, 0);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "not valid JSON");
}

Test(weights_bad, header_json_not_object) {
    write_weights("[1, 2]", NULL, 0);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "not an object");
}

Test(weights_bad, header_trailing_garbage) {
    write_weights("{} x", NULL, 0);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "not valid JSON (at byte 3");
}

Test(weights_bad, header_control_character) {
    /* cJSON alone would take the 0x07 as whitespace and the shape as [2, 1] */
    write_weights("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 1\x07], \"data_offsets\": [0, 8]}}", NULL, 8);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "not valid JSON (byte 0x07 at byte 37)");
}

Test(weights_bad, header_control_character_in_name) {
    write_weights("{\"a\tb\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", NULL, 8);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "not valid JSON (byte 0x09 at byte 3)");
}

Test(weights_bad, header_number_not_json) {
    /* strtod-style numbers cJSON would read: leading zero, plus sign, bare fraction, trailing dot */
    const char *numbers[] = {"01", "+1", ".5", "1.", "1e", "-", "0x10", "1e+"};
    for (size_t k = 0; k < sizeof numbers / sizeof numbers[0]; k++) {
        char header[128];
        snprintf(header, sizeof header, "{\"a\": {\"dtype\": \"U8\", \"shape\": [%s], \"data_offsets\": [0, 1]}}",
                 numbers[k]);
        write_weights(header, NULL, 1);
        expect_open_error(I3RT_ERR_FORMAT, "header:", "not valid JSON");
    }
    /* valid forms still parse (and then fail as shapes or pass) */
    write_weights("{\"a\": {\"dtype\": \"U8\", \"shape\": [1e0, 10E-1, 0.1e1], \"data_offsets\": [0, 1]}}", NULL, 1);
    i3_weights *w = open_ok();
    cr_assert_eq(i3_weights_at(w, 0)->shape[1], 1);
    i3_weights_free(w);
}

Test(weights_bad, header_not_utf8) {
    write_weights("{\"\xc3\x28\": {}}", NULL, 0);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "UTF-8");
}

Test(weights_bad, unknown_dtype) {
    write_weights("{\"enc.w\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [0, 16]}}", NULL, 16);
    expect_open_error(I3RT_ERR_FORMAT, "tensor enc.w:", "unsupported dtype \"F64\"");
}

Test(weights_bad, dtype_not_string) {
    write_weights("{\"enc.w\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", NULL, 4);
    expect_open_error(I3RT_ERR_FORMAT, "tensor enc.w:", "dtype");
}

Test(weights_bad, negative_shape) {
    write_weights("{\"enc.w\": {\"dtype\": \"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 0]}}", NULL, 0);
    expect_open_error(I3RT_ERR_FORMAT, "tensor enc.w:", "shape entry 1 is not a non-negative integer");
}

Test(weights_bad, non_integer_shape) {
    write_weights("{\"enc.w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", NULL, 4);
    expect_open_error(I3RT_ERR_FORMAT, "tensor enc.w:", "shape entry 0 is not a non-negative integer");
}

Test(weights_bad, shape_string) {
    write_weights("{\"enc.w\": {\"dtype\": \"F32\", \"shape\": [\"4\"], \"data_offsets\": [0, 16]}}", NULL, 16);
    expect_open_error(I3RT_ERR_FORMAT, "tensor enc.w:", "shape entry 0");
}

Test(weights_bad, too_many_dims) {
    write_weights("{\"enc.w\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", NULL, 1);
    expect_open_error(I3RT_ERR_FORMAT, "tensor enc.w:", "9 dimensions");
}

Test(weights_bad, shape_overflow) {
    write_weights("{\"enc.w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}",
                  NULL, 4);
    expect_open_error(I3RT_ERR_FORMAT, "tensor enc.w:", "overflow");
}

Test(weights_bad, offsets_out_of_range) {
    write_weights("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                  " \"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [16, 32]}}", NULL, 16);
    expect_open_error(I3RT_ERR_FORMAT, "tensor b:", "out of range (data buffer is 16 bytes)");
}

Test(weights_bad, offsets_huge) {
    write_weights("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [9007199254740990, 9007199254740991]}}",
                  NULL, 1);
    expect_open_error(I3RT_ERR_FORMAT, "tensor a:", "out of range");
}

Test(weights_bad, offsets_reversed) {
    write_weights("{\"a\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [4, 0]}}", NULL, 4);
    expect_open_error(I3RT_ERR_FORMAT, "tensor a:", "end before begin");
}

Test(weights_bad, offsets_not_pair) {
    write_weights("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4, 8]}}", NULL, 4);
    expect_open_error(I3RT_ERR_FORMAT, "tensor a:", "data_offsets");
}

Test(weights_bad, overlapping_offsets) {
    write_weights("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                  " \"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}", NULL, 24);
    expect_open_error(I3RT_ERR_FORMAT, "tensor b:", "overlap tensor a");
}

Test(weights_bad, gap_between_tensors) {
    write_weights("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                  " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [12, 20]}}", NULL, 20);
    expect_open_error(I3RT_ERR_FORMAT, "tensor b:", "gap of 4 unused bytes");
}

Test(weights_bad, gap_at_start) {
    write_weights("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", NULL, 12);
    expect_open_error(I3RT_ERR_FORMAT, "tensor a:", "gap of 4 unused bytes");
}

Test(weights_bad, trailing_data) {
    write_weights("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", NULL, 12);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "trailing bytes");
}

Test(weights_bad, size_not_shape_times_dtype) {
    write_weights("{\"dec.seg.weight\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 16]}}", NULL, 16);
    expect_open_error(I3RT_ERR_FORMAT, "tensor dec.seg.weight:", "hold 16 bytes, shape and dtype F32 need 12");
}

Test(weights_bad, truncated_data) {
    write_weights("{\"a\": {\"dtype\": \"F16\", \"shape\": [2, 4], \"data_offsets\": [0, 16]}}", NULL, 10);
    expect_open_error(I3RT_ERR_FORMAT, "tensor a:", "out of range (data buffer is 10 bytes)");
}

Test(weights_bad, duplicate_tensor_name) {
    write_weights("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
                  " \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}", NULL, 2);
    expect_open_error(I3RT_ERR_FORMAT, "tensor a:", "appears twice");
}

Test(weights_bad, unknown_field) {
    write_weights("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1], \"stride\": [1]}}", NULL, 1);
    expect_open_error(I3RT_ERR_FORMAT, "tensor a:", "unknown field \"stride\"");
}

Test(weights_bad, metadata_not_string) {
    write_weights("{\"__metadata__\": {\"format\": 1}}", NULL, 0);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "__metadata__ value \"format\" is not a string");
}

Test(weights_bad, metadata_duplicate_key) {
    write_weights("{\"__metadata__\": {\"format\": \"a\", \"fold\": \"0\", \"format\": \"b\"}}", NULL, 0);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "__metadata__ key \"format\" appears twice");
}

Test(weights_bad, empty_tensor_name) {
    write_weights("{\"\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", NULL, 1);
    expect_open_error(I3RT_ERR_FORMAT, "header:", "empty name");
}

/* ---- lookups on a valid file ------------------------------------------------------------------------ */

static const char *two_tensors =
    "{\"__metadata__\": {\"format\": \"i3rt-weights-1\", \"network\": \"{\\\"class\\\": \\\"PlainConvUNet\\\"}\"},"
    " \"conv.weight\": {\"dtype\": \"F32\", \"shape\": [2, 1, 1, 1, 2], \"data_offsets\": [0, 16]},"
    " \"conv.bias\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [16, 24]}}    ";

static void write_two_tensors(void) {
    float data[6] = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.125f};
    write_weights(two_tensors, data, sizeof data);
}

Test(weights_bad, missing_tensor_on_get) {
    write_two_tensors();
    i3_weights *w = open_ok();
    const float *p = (const float *)1;
    int64_t shape[1] = {2};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "conv.bais", 1, shape, &p), I3RT_ERR_FORMAT);
    cr_assert_null(p);
    cr_assert(strstr(i3rt_context_error(ctx), path));
    cr_assert(strstr(i3rt_context_error(ctx), "missing tensor conv.bais"), "%s", i3rt_context_error(ctx));
    i3_weights_free(w);
}

Test(weights_bad, wrong_shape_on_get) {
    write_two_tensors();
    i3_weights *w = open_ok();
    const float *p;
    int64_t shape[5] = {2, 1, 1, 2, 1};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "conv.weight", 5, shape, &p), I3RT_ERR_FORMAT);
    const char *msg = i3rt_context_error(ctx);
    cr_assert(strstr(msg, path) && strstr(msg, "tensor conv.weight has shape [2, 1, 1, 1, 2], expected [2, 1, 1, 2, 1]"),
              "%s", msg);
    int64_t fewer[4] = {2, 1, 1, 1};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "conv.weight", 4, fewer, &p), I3RT_ERR_FORMAT);
    cr_assert(strstr(i3rt_context_error(ctx), "expected [2, 1, 1, 1]"), "%s", i3rt_context_error(ctx));
    i3_weights_free(w);
}

Test(weights_bad, extra_tensor_check_all_used) {
    write_two_tensors();
    i3_weights *w = open_ok();
    const float *p;
    int64_t shape[5] = {2, 1, 1, 1, 2};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "conv.weight", 5, shape, &p), I3RT_OK);
    cr_assert_eq(i3_weights_check_all_used(ctx, w), I3RT_ERR_FORMAT);
    const char *msg = i3rt_context_error(ctx);
    cr_assert(strstr(msg, path) && strstr(msg, "unexpected tensor conv.bias (not part of the network)"), "%s", msg);
    int64_t bias_shape[1] = {2};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "conv.bias", 1, bias_shape, &p), I3RT_OK);
    cr_assert_eq(i3_weights_check_all_used(ctx, w), I3RT_OK);
    i3_weights_free(w);
}

Test(weights_bad, integer_tensor_as_f32) {
    write_weights("{\"steps\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [0, 8]}}", NULL, 8);
    i3_weights *w = open_ok();
    const float *p;
    cr_assert_eq(i3_weights_get_f32(ctx, w, "steps", 0, NULL, &p), I3RT_ERR_FORMAT);
    cr_assert(strstr(i3rt_context_error(ctx), "tensor steps has dtype I64"), "%s", i3rt_context_error(ctx));
    i3_weights_free(w);
}

TestSuite(weights, .init = setup, .fini = teardown);

Test(weights, f32_values_metadata_and_lookup) {
    write_two_tensors();
    i3_weights *w = open_ok();
    cr_assert_str_eq(i3_weights_label(w), path);
    cr_assert_eq(i3_weights_count(w), 2);
    cr_assert_str_eq(i3_weights_at(w, 0)->name, "conv.weight");  /* header order */
    cr_assert_null(i3_weights_at(w, 2));
    const i3_weight_tensor *b = i3_weights_find(w, "conv.bias");
    cr_assert(b && b->dtype == I3_F32 && b->ndim == 1 && b->shape[0] == 2 && b->numel == 2 && b->nbytes == 8);
    cr_assert_null(i3_weights_find(w, "conv"));
    cr_assert_str_eq(i3_weights_metadata(w, "format"), "i3rt-weights-1");
    cr_assert_str_eq(i3_weights_metadata(w, "network"), "{\"class\": \"PlainConvUNet\"}");
    cr_assert_null(i3_weights_metadata(w, "plans"));

    const float *p, *again;
    int64_t shape[1] = {2};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "conv.bias", 1, shape, &p), I3RT_OK);
    cr_assert_eq(((uintptr_t)p) & 3, 0);
    cr_assert_eq(p[0], 7.0f);
    cr_assert_eq(p[1], -0.125f);
    cr_assert_eq(i3_weights_get_f32(ctx, w, "conv.bias", 1, shape, &again), I3RT_OK);
    cr_assert_eq(p, again, "the f32 view is made once");
    i3_weights_free(w);
}

Test(weights, f32_unaligned_is_copied) {
    /* A 1-byte tensor first puts the f32 tensor at an odd offset. */
    uint8_t data[1 + 8] = {42};
    float v[2] = {0.25f, -3.0f};
    memcpy(data + 1, v, sizeof v);
    write_weights("{\"u\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
                  " \"f\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [1, 9]}}", data, sizeof data);
    i3_weights *w = open_ok();
    const float *p;
    int64_t shape[1] = {2};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "f", 1, shape, &p), I3RT_OK);
    cr_assert_eq(((uintptr_t)p) & 3, 0);
    cr_assert_eq(p[0], 0.25f);
    cr_assert_eq(p[1], -3.0f);
    i3_weights_free(w);
}

Test(weights, f16_bf16_conversion) {
    /* Hand-computed bit patterns. F16: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), -0, 0.333251953125.
     * BF16: 1, -2, 3.140625, 2^-133 (subnormal), 1e30-ish 0x7149 = 9.9361e29 exactly 0x71490000. */
    uint16_t h[7] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000, 0x3555};
    float h_want[7] = {1.0f, -2.0f, 0.5f, 65504.0f, 5.9604644775390625e-08f, -0.0f, 0.333251953125f};
    uint16_t bf[5] = {0x3f80, 0xc000, 0x4049, 0x0001, 0x7149};
    uint32_t bf_big = 0x71490000u;
    float bf_want[5] = {1.0f, -2.0f, 3.140625f, 9.18354961579912e-41f, 0};
    memcpy(&bf_want[4], &bf_big, 4);
    uint8_t data[14 + 10];
    memcpy(data, h, 14);
    memcpy(data + 14, bf, 10);
    write_weights("{\"h\": {\"dtype\": \"F16\", \"shape\": [7], \"data_offsets\": [0, 14]},"
                  " \"b\": {\"dtype\": \"BF16\", \"shape\": [5], \"data_offsets\": [14, 24]}}", data, sizeof data);
    i3_weights *w = open_ok();
    const float *p;
    int64_t s7[1] = {7}, s5[1] = {5};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "h", 1, s7, &p), I3RT_OK);
    for (int i = 0; i < 7; i++) cr_expect_eq(p[i], h_want[i], "f16 %04x -> %g, expected %g", h[i], p[i], h_want[i]);
    cr_assert(signbit(p[5]));
    cr_assert_eq(i3_weights_get_f32(ctx, w, "b", 1, s5, &p), I3RT_OK);
    for (int i = 0; i < 5; i++) cr_expect_eq(p[i], bf_want[i], "bf16 %04x -> %g, expected %g", bf[i], p[i], bf_want[i]);
    cr_assert_eq(i3_weights_check_all_used(ctx, w), I3RT_OK);
    i3_weights_free(w);
}

Test(weights, scalar_empty_and_from_memory) {
    /* A 0-d tensor (numel 1) and a tensor with a 0 dimension (no bytes), header padded with spaces. */
    const char *header = "{\"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]},"
                         " \"e\": {\"dtype\": \"F32\", \"shape\": [0, 3], \"data_offsets\": [4, 4]}}  ";
    size_t n = strlen(header);
    uint8_t buf[256] = {0};
    buf[0] = (uint8_t)n;
    memcpy(buf + 8, header, n);
    float v = 2.5f;
    memcpy(buf + 8 + n, &v, 4);
    i3_weights *w = NULL;
    cr_assert_eq(i3_weights_from_memory(ctx, buf, 8 + n + 4, "inline", &w), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_str_eq(i3_weights_label(w), "inline");
    const float *p;
    cr_assert_eq(i3_weights_get_f32(ctx, w, "s", 0, NULL, &p), I3RT_OK);
    cr_assert_eq(*p, 2.5f);
    int64_t es[2] = {0, 3};
    cr_assert_eq(i3_weights_get_f32(ctx, w, "e", 2, es, &p), I3RT_OK);
    i3_weights_free(w);

    cr_assert_eq(i3_weights_from_memory(ctx, buf, 8 + n + 3, "inline", &w), I3RT_ERR_FORMAT);
    cr_assert(strstr(i3rt_context_error(ctx), "inline: tensor s:"), "%s", i3rt_context_error(ctx));
}

/* ---- round trip through tools/convert_pt/convert_nnunet.py ------------------------------------------ */

static i3_weights *open_fixture(const char *name) {
    const char *dir = getenv("I3RT_FIXTURES");
    cr_assert(dir, "I3RT_FIXTURES is not set (run through ctest: tests/gen_weights.py makes the files)");
    char p[1024];
    snprintf(p, sizeof p, "%s/weights/%s", dir, name);
    i3_weights *w = NULL;
    cr_assert_eq(i3_weights_open(ctx, p, &w), I3RT_OK, "%s", i3rt_context_error(ctx));
    return w;
}

/* Every reference tensor must be in the converted file with the same shape and values within tol
 * (relative to max |ref|), and the converted file must hold nothing else. */
static void compare_with_reference(i3_weights *conv, i3_weights *ref, double tol) {
    cr_assert_eq(i3_weights_count(conv), i3_weights_count(ref), "%s has %d tensors, reference %d",
                 i3_weights_label(conv), i3_weights_count(conv), i3_weights_count(ref));
    double worst = 0;
    for (int i = 0; i < i3_weights_count(ref); i++) {
        const i3_weight_tensor *r = i3_weights_at(ref, i);
        const float *rv, *cv;
        cr_assert_eq(i3_weights_get_f32(ctx, ref, r->name, r->ndim, r->shape, &rv), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert_eq(i3_weights_get_f32(ctx, conv, r->name, r->ndim, r->shape, &cv), I3RT_OK, "%s", i3rt_context_error(ctx));
        double max_abs = 0, max_ref = 0;
        for (size_t k = 0; k < r->numel; k++) {
            max_abs = fmax(max_abs, fabs((double)cv[k] - rv[k]));
            max_ref = fmax(max_ref, fabs((double)rv[k]));
        }
        double rel = max_ref > 0 ? max_abs / max_ref : max_abs;
        worst = fmax(worst, rel);
        cr_expect(rel <= tol, "%s: max abs error %g, relative %g > %g", r->name, max_abs, rel, tol);
    }
    cr_assert_eq(i3_weights_check_all_used(ctx, conv), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_log_info("%s: %d tensors, worst relative error %g (tolerance %g)", i3_weights_label(conv),
                i3_weights_count(conv), worst, tol);
}

TestSuite(weights_roundtrip, .init = setup, .fini = teardown);

Test(weights_roundtrip, converted_nnunet_matches_torch_dump) {
    i3_weights *ref = open_fixture("reference.safetensors");
    i3_weights *conv = open_fixture("model_f32/fold_0.safetensors");
    compare_with_reference(conv, ref, 0.0);

    cr_assert_str_eq(i3_weights_metadata(conv, "format"), "i3rt-weights-1");
    cr_assert_str_eq(i3_weights_metadata(conv, "configuration"), "3d_fullres");
    cr_assert_str_eq(i3_weights_metadata(conv, "fold"), "0");
    cr_assert_str_eq(i3_weights_metadata(conv, "trainer"), "nnUNetTrainer");
    cr_assert_str_eq(i3_weights_metadata(conv, "mirror_axes"), "[0, 1, 2]");
    cr_assert(i3_weights_metadata(conv, "plans") && i3_weights_metadata(conv, "dataset") &&
              i3_weights_metadata(conv, "source"));
    cJSON *net = cJSON_Parse(i3_weights_metadata(conv, "network"));
    cr_assert(net, "network metadata is not JSON");
    cr_assert_str_eq(cJSON_GetObjectItem(net, "class")->valuestring, "PlainConvUNet");
    cr_assert_eq(cJSON_GetObjectItem(net, "dims")->valueint, 3);
    cr_assert_eq(cJSON_GetObjectItem(net, "input_channels")->valueint, 2);
    cr_assert_eq(cJSON_GetObjectItem(net, "num_classes")->valueint, 3);
    const cJSON *kw = cJSON_GetObjectItem(net, "arch_kwargs");
    cr_assert_eq(cJSON_GetObjectItem(kw, "n_stages")->valueint, 3);
    cr_assert_str_eq(cJSON_GetObjectItem(kw, "conv_op")->valuestring, "torch.nn.modules.conv.Conv3d");
    cJSON_Delete(net);

    /* canonical names only: no aliases, no deep-supervision heads */
    for (int i = 0; i < i3_weights_count(conv); i++) {
        const char *name = i3_weights_at(conv, i)->name;
        cr_expect(!strstr(name, ".all_modules.") && strncmp(name, "decoder.encoder.", 16) != 0 &&
                      strncmp(name, "decoder.seg_layers.0.", 21) != 0, "alias or deep-supervision tensor %s", name);
    }
    cr_assert(i3_weights_find(conv, "decoder.seg_layers.1.weight"));
    cr_assert(i3_weights_find(conv, "encoder.stages.0.0.convs.0.conv.weight"));
    i3_weights_free(conv);
    i3_weights_free(ref);
}

Test(weights_roundtrip, converted_f16_bf16_within_half_ulp) {
    i3_weights *ref = open_fixture("reference.safetensors");
    i3_weights *h = open_fixture("model_f16/fold_0.safetensors");
    i3_weights *b = open_fixture("model_bf16/fold_0.safetensors");
    cr_assert_eq(i3_weights_at(h, 0)->dtype, I3_F16);
    cr_assert_eq(i3_weights_at(b, 0)->dtype, I3_BF16);
    /* round to nearest: at most half an ulp relative to the element, so also relative to max |ref| */
    compare_with_reference(h, ref, 0x1p-11);
    compare_with_reference(b, ref, 0x1p-8);
    i3_weights_free(h);
    i3_weights_free(b);
    i3_weights_free(ref);
}

Test(weights_roundtrip, converted_ritm_hrnet18_acs) {
    i3_weights *ref = open_fixture("ritm_reference.safetensors");
    i3_weights *conv = open_fixture("ritm/hrnet18_acs.safetensors");
    compare_with_reference(conv, ref, 0.0);
    cr_assert_eq(i3_weights_count(conv), 1895 - 314, "every tensor but the num_batches_tracked counters");
    cr_assert_str_eq(i3_weights_metadata(conv, "acs"), "1");
    cJSON *net = cJSON_Parse(i3_weights_metadata(conv, "network"));
    cr_assert(net, "network metadata is not JSON");
    cr_assert_str_eq(cJSON_GetObjectItem(net, "class")->valuestring, "RITM-HRNet18");
    cr_assert_eq(cJSON_GetObjectItem(net, "dims")->valueint, 2);
    cr_assert_eq(cJSON_GetObjectItem(net, "coord_channels")->valueint, 3);
    cr_assert_eq(cJSON_GetObjectItem(net, "ocr_width")->valueint, 64);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(net, "small")));
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(net, "arch_kwargs"), "norm_radius")->valueint, 5);
    cJSON_Delete(net);
    const i3_weight_tensor *rv = i3_weights_find(conv, "feature_extractor.bn1.running_var");
    cr_assert(rv && rv->ndim == 1 && rv->shape[0] == 64, "batch-norm statistics are kept");
    i3_weights_free(conv);
    i3_weights_free(ref);
}
