/* NNIA arrays (runtime/nnia.c) against nnInteractive's serialization.py (fixtures from tests/gen_nnia.py):
 * - every array pack_array wrote (all 12 dtypes, ZSTD and LZ4, NOFILTER and SHUFFLE, all-zero arrays as
 *   Blosc2 special-value chunks, several chunks) decodes to exactly its bytes, dtype and shape;
 * - i3rt's encodings of the same arrays are read back by unpack_array (gen_nnia.py --check);
 * - every truncation and every single-byte corruption of an encoding, and each malformed field, is an
 *   error naming the input or (corrupted payload bytes without a checksum) a well-formed array: never a
 *   crash, a leak or an out-of-bounds access (the suite runs under ASan too);
 * - the element conversions the server uses. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "fixtures.h"
#include "nnia.h"

static uint8_t *read_case(const char *name, const char *ext, size_t *len) {
    char file[256];
    snprintf(file, sizeof file, "%s.%s", name, ext);
    uint8_t *data = (uint8_t *)fx_read_file(fx_path(fx_fixture_dir("nnia"), file), len);
    cr_assert(data, "cannot read %s/%s", fx_fixture_dir("nnia"), file);
    return data;
}

static i3rt_context *new_ctx(void) {
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    return ctx;
}

/* The case's manifest entry matches the decoded array. */
static void expect_case(const cJSON *c, const i3_nnia_array *a, const uint8_t *raw, size_t raw_len) {
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    cr_assert_str_eq(i3_nnia_dtype_name(a->dtype), cJSON_GetObjectItem(c, "dtype")->valuestring, "%s", name);
    const cJSON *shape = cJSON_GetObjectItem(c, "shape");
    cr_assert_eq(a->ndim, cJSON_GetArraySize(shape), "%s", name);
    for (int d = 0; d < a->ndim; d++)
        cr_assert_eq(a->shape[d], (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble, "%s axis %d", name, d);
    cr_assert_eq(a->nbytes, raw_len, "%s", name);
    cr_assert(memcmp(a->data, raw, raw_len) == 0, "%s: the decoded bytes differ", name);
}

Test(nnia, decodes_every_python_encoding) {
    cJSON *m = fx_manifest("nnia");
    i3rt_context *ctx = new_ctx();
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(m, "cases")) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        size_t len, raw_len;
        uint8_t *buf = read_case(name, "nnia", &len), *raw = read_case(name, "raw", &raw_len);
        i3_nnia_array a;
        i3rt_status st = i3_nnia_decode(ctx, buf, len, 0, 2, name, &a);
        cr_assert_eq(st, I3RT_OK, "%s: %s", name, i3rt_context_error(ctx));
        expect_case(c, &a, raw, raw_len);
        i3_nnia_free(&a);
        free(buf);
        free(raw);
        n++;
    }
    printf("nnia: decoded %d Python encodings bit-exactly\n", n);
    cr_assert_geq(n, 40);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

static void write_file(const char *path, const uint8_t *data, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

Test(nnia, python_decodes_every_i3rt_encoding) {
    cJSON *m = fx_manifest("nnia");
    i3rt_context *ctx = new_ctx();
    char dir[256];
    fx_temp_dir(dir, sizeof dir, "nnia");
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(m, "cases")) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        size_t len, raw_len;
        uint8_t *buf = read_case(name, "nnia", &len), *raw = read_case(name, "raw", &raw_len);
        i3_nnia_array ref;
        cr_assert_eq(i3_nnia_decode(ctx, buf, len, 0, 1, name, &ref), I3RT_OK, "%s", i3rt_context_error(ctx));
        /* alternate the encoder's settings over the cases; the chunked ones split into small chunks */
        i3_nnia_options opt = I3_NNIA_OPTIONS_DEFAULT;
        opt.codec = n % 2 ? I3_NNIA_LZ4 : I3_NNIA_ZSTD;
        opt.shuffle = n % 3 == 0;
        opt.clevel = n % 4 == 3 ? 9 : 3;
        if (strstr(name, "chunked")) opt.chunk_bytes = 200;
        uint8_t *enc = NULL;
        size_t enc_len = 0;
        cr_assert_eq(i3_nnia_encode(ctx, &ref, &opt, &enc, &enc_len), I3RT_OK, "%s", i3rt_context_error(ctx));
        if (strlen(name) > 6 && strcmp(name + strlen(name) - 6, "_zeros") == 0)
            cr_assert_lt(enc_len, 128, "%s: an all-zero array takes %zu bytes (no special-value chunk?)", name,
                         enc_len);
        i3_nnia_array back;
        cr_assert_eq(i3_nnia_decode(ctx, enc, enc_len, 0, 1, name, &back), I3RT_OK, "%s", i3rt_context_error(ctx));
        expect_case(c, &back, raw, raw_len);
        char file[256];
        snprintf(file, sizeof file, "%s.nnia", name);
        write_file(fx_path(dir, file), enc, enc_len);
        i3_nnia_free(&back);
        i3_nnia_free(&ref);
        free(enc);
        free(buf);
        free(raw);
        n++;
    }
    const char *python = getenv("I3RT_PYTHON"), *src = getenv("I3RT_SOURCE_DIR");
    cr_assert(python && src, "I3RT_PYTHON / I3RT_SOURCE_DIR not set (run through ctest)");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s/tests/gen_nnia.py --check %s --ref %s", python, src, dir,
             fx_fixture_dir("nnia"));
    int status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "unpack_array rejected i3rt's encodings (%s)", cmd);
    printf("nnia: serialization.unpack_array read %d i3rt encodings\n", n);
    fx_remove_dir(dir);
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}

/* Decoding must fail with a message that names the input, or succeed with a consistent array. */
static i3rt_status decode_checked(i3rt_context *ctx, const uint8_t *buf, size_t len, size_t max_bytes) {
    i3_nnia_array a;
    i3rt_status st = i3_nnia_decode(ctx, buf, len, max_bytes, 1, "input.nnia", &a);
    if (st != I3RT_OK) {
        cr_assert(strncmp(i3rt_context_error(ctx), "input.nnia: ", 12) == 0, "unnamed error: %s",
                  i3rt_context_error(ctx));
        cr_assert_null(a.data);
        return st;
    }
    size_t numel = 1;
    for (int d = 0; d < a.ndim; d++) numel *= (size_t)a.shape[d];
    cr_assert_eq(a.numel, numel);
    cr_assert_eq(a.nbytes, numel * i3_nnia_dtype_size(a.dtype));
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < a.nbytes; i++) sink ^= ((const uint8_t *)a.data)[i];
    (void)sink;
    i3_nnia_free(&a);
    return st;
}

Test(nnia, every_truncation_is_an_error) {
    i3rt_context *ctx = new_ctx();
    const char *names[] = {"uint8_mask_3d", "float32_chunked", "int16_zeros", "float64_1d"};
    int n = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        size_t len;
        uint8_t *buf = read_case(names[k], "nnia", &len);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1); /* exactly cut bytes, so ASan sees any over-read */
            memcpy(copy, buf, cut);
            cr_assert_neq(decode_checked(ctx, copy, cut, 0), I3RT_OK, "%s cut at %zu decoded", names[k], cut);
            free(copy);
            n++;
        }
        /* a trailing byte is an error too */
        uint8_t *longer = malloc(len + 1);
        memcpy(longer, buf, len);
        longer[len] = 0;
        cr_assert_eq(decode_checked(ctx, longer, len + 1, 0), I3RT_ERR_FORMAT, "%s + 1 byte", names[k]);
        free(longer);
        free(buf);
    }
    printf("nnia: %d truncated inputs rejected\n", n);
    i3rt_context_free(ctx);
}

Test(nnia, every_byte_corruption_is_handled) {
    i3rt_context *ctx = new_ctx();
    const char *names[] = {"uint8_mask_3d", "float32_chunked", "int16_zeros", "bool_lz4_nofilter"};
    int rejected = 0, decoded = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        size_t len;
        uint8_t *buf = read_case(names[k], "nnia", &len);
        for (size_t i = 0; i < len; i++)
            for (int v = 0; v < 3; v++) {
                uint8_t *copy = malloc(len);
                memcpy(copy, buf, len);
                copy[i] = v == 0 ? (uint8_t)~copy[i] : v == 1 ? 0 : (uint8_t)(copy[i] + 1);
                if (decode_checked(ctx, copy, len, 1 << 20) == I3RT_OK) decoded++;
                else rejected++;
                free(copy);
            }
        free(buf);
    }
    printf("nnia: single-byte corruptions: %d rejected, %d still well-formed (payload bytes)\n", rejected, decoded);
    cr_assert_gt(rejected, 0);
    i3rt_context_free(ctx);
}

/* The header of the encoding of a uint8 [24, 20, 16] mask: name at 8, shape at 13, chunk count at 37,
 * chunk header at 41, the Blosc2 chunk at 57. */
Test(nnia, malformed_fields_name_the_problem) {
    i3rt_context *ctx = new_ctx();
    size_t len;
    uint8_t *buf = read_case("uint8_mask_3d", "nnia", &len);
    cr_assert_eq(memcmp(buf + 8, "uint8", 5), 0);
    struct {
        size_t at;
        uint8_t value;
        i3rt_status status;
        const char *message;
    } cases[] = {
        {0, 'X', I3RT_ERR_FORMAT, "bad magic"},
        {4, 2, I3RT_ERR_UNSUPPORTED, "NNIA version 2"},
        {5, 3, I3RT_ERR_UNSUPPORTED, "codec id 3"},
        {6, 33, I3RT_ERR_UNSUPPORTED, "33 dimensions"},
        {8, 'i', I3RT_ERR_UNSUPPORTED, "dtype 'iint8'"},
        {13, 25, I3RT_ERR_FORMAT, "the shape needs 8000"},    /* shape 25 x 20 x 16: the chunks hold too little */
        {13 + 7, 0x80, I3RT_ERR_FORMAT, "negative size"},     /* axis 0 < 0 */
        {37, 2, I3RT_ERR_FORMAT, "truncated at chunk 1"},     /* two chunks declared, one present */
        {41, 0x7f, I3RT_ERR_FORMAT, "the shape leaves"},      /* raw length 0x1e7f > 7680 */
        {49, 0xff, I3RT_ERR_FORMAT, "is truncated"},          /* compressed length beyond the buffer */
        {57 + 2, 0xc5, I3RT_ERR_UNSUPPORTED, "codec 6"},      /* user-defined (plug-in) codec */
        {57 + 16, 0x26, I3RT_ERR_UNSUPPORTED, "filter 38"},   /* plug-in filter */
        {57 + 31, 0x40, I3RT_ERR_FORMAT, "special value 4"},  /* uninitialized special chunk */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, buf, len);
        copy[cases[k].at] = cases[k].value;
        cr_assert_eq(decode_checked(ctx, copy, len, 0), cases[k].status, "byte %zu = %u: %s", cases[k].at,
                     cases[k].value, i3rt_context_error(ctx));
        cr_assert(strstr(i3rt_context_error(ctx), cases[k].message), "byte %zu: '%s' lacks '%s'", cases[k].at,
                  i3rt_context_error(ctx), cases[k].message);
        free(copy);
    }
    /* the size limit is checked before anything is allocated */
    cr_assert_eq(decode_checked(ctx, buf, len, 7679), I3RT_ERR_OUT_OF_MEMORY);
    cr_assert(strstr(i3rt_context_error(ctx), "more than the limit"));
    cr_assert_eq(decode_checked(ctx, buf, len, 7680), I3RT_OK);
    free(buf);
    i3rt_context_free(ctx);
}

/* Arrays Python cannot pack (empty, 0-d) still round-trip through i3rt. */
Test(nnia, empty_and_scalar_arrays_round_trip) {
    i3rt_context *ctx = new_ctx();
    double value = 2.25;
    i3_nnia_array arrays[2] = {{.dtype = I3_NNIA_INT32, .ndim = 2, .shape = {0, 3}},
                               {.dtype = I3_NNIA_FLOAT64, .ndim = 0, .data = &value}};
    for (int k = 0; k < 2; k++) {
        uint8_t *enc;
        size_t len;
        i3_nnia_options opt = I3_NNIA_OPTIONS_DEFAULT;
        cr_assert_eq(i3_nnia_encode(ctx, &arrays[k], &opt, &enc, &len), I3RT_OK, "%s", i3rt_context_error(ctx));
        i3_nnia_array back;
        cr_assert_eq(i3_nnia_decode(ctx, enc, len, 0, 1, "round trip", &back), I3RT_OK, "%s",
                     i3rt_context_error(ctx));
        cr_assert_eq(back.ndim, arrays[k].ndim);
        cr_assert_eq(back.numel, k == 0 ? 0u : 1u);
        if (k == 1) cr_assert_eq(*(double *)back.data, value);
        i3_nnia_free(&back);
        free(enc);
    }
    i3rt_context_free(ctx);
}

Test(nnia, element_conversions) {
    cJSON *m = fx_manifest("nnia");
    i3rt_context *ctx = new_ctx();
    const char *names[] = {"int16_zstd", "uint64_zstd", "float16_zstd", "float64_zstd", "bool_zstd"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        size_t len;
        uint8_t *buf = read_case(names[k], "nnia", &len);
        i3_nnia_array a;
        cr_assert_eq(i3_nnia_decode(ctx, buf, len, 0, 1, names[k], &a), I3RT_OK);
        float *f = malloc(a.numel * sizeof(float));
        uint8_t *mask = malloc(a.numel);
        i3_nnia_to_f32(&a, f);
        i3_nnia_to_mask(&a, mask);
        for (size_t i = 0; i < a.numel; i++) {
            double ref;
            switch (a.dtype) {
            case I3_NNIA_INT16: ref = ((int16_t *)a.data)[i]; break;
            case I3_NNIA_UINT64: ref = (double)((uint64_t *)a.data)[i]; break;
            case I3_NNIA_FLOAT16: ref = i3_f16_to_f32(((uint16_t *)a.data)[i]); break;
            case I3_NNIA_FLOAT64: ref = ((double *)a.data)[i]; break;
            default: ref = ((uint8_t *)a.data)[i] != 0;
            }
            cr_assert(f[i] == (float)ref || (isnan(f[i]) && isnan(ref)), "%s[%zu]: %g vs %g", names[k], i, f[i], ref);
            cr_assert_eq(mask[i], ref != 0 && !isnan(ref), "%s[%zu]", names[k], i);
        }
        free(f);
        free(mask);
        i3_nnia_free(&a);
        free(buf);
    }
    /* a 0/1 mask into every dtype reads back as the same mask */
    uint8_t mask[5] = {0, 1, 1, 0, 1}, back[5];
    for (int t = 0; t < I3_NNIA_DTYPE_COUNT; t++) {
        uint64_t storage[5];
        i3_nnia_from_mask(mask, 5, (i3_nnia_dtype)t, storage);
        i3_nnia_array a = {.dtype = (i3_nnia_dtype)t, .ndim = 1, .shape = {5}, .numel = 5, .data = storage};
        i3_nnia_to_mask(&a, back);
        cr_assert_arr_eq(mask, back, 5, "%s", i3_nnia_dtype_name((i3_nnia_dtype)t));
    }
    i3rt_context_free(ctx);
    cJSON_Delete(m);
}
