/* Test helpers for op checks: seeded random data, buffers with guard values around them, error
 * reports (max abs / max rel error), and reading PyTorch fixture files (safetensors written by a
 * tests/gen_*.py script, parameters as JSON strings in the metadata). */
#ifndef I3RT_TEST_FIXTURES_H
#define I3RT_TEST_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weights.h"

/* Deterministic xorshift generator; values uniform in [lo, hi). */
typedef struct {
    uint64_t state;
} fx_rng;
fx_rng fx_rng_seed(uint64_t seed);
void fx_fill(fx_rng *r, float *v, int64_t n, float lo, float hi);

/* A buffer of n floats with FX_GUARD sentinel floats before and after it. fx_guarded_alloc fills
 * everything (buffer included) with the sentinel; fx_guards_intact checks the two guard zones. */
#define FX_GUARD 64
float *fx_guarded_alloc(int64_t n);
bool fx_guards_intact(const float *buf, int64_t n);
void fx_guarded_free(float *buf);

/* Max abs error and the error relative to max |ref| (the scale of the output, so that values near
 * zero do not inflate it). Prints one line with label, returns the relative error. */
typedef struct {
    double max_abs, max_ref, rel;
} fx_err;
fx_err fx_compare(const char *label, const float *got, const float *ref, int64_t n);

/* Fixture file <$I3RT_FIXTURES>/<group>/<name>; NULL if it does not exist (silently: callers loop
 * over numbered cases until one is missing) or is invalid (then the reader's message is printed). */
i3_weights *fx_open(const char *group, const char *name);
/* The tensor `name` as f32 (NULL if absent or not F32). */
const float *fx_tensor(const i3_weights *w, const char *name, int64_t *numel);
/* Integer and float parameters from the JSON object in metadata key "params". */
int64_t fx_param_int(const i3_weights *w, const char *key, int index);   /* index into an array, or -1 */
double fx_param_num(const i3_weights *w, const char *key);
bool fx_param_str_eq(const i3_weights *w, const char *key, const char *value);
/* The tensor's shape as [n, c, d, h, w] (ndim must be 5). */
bool fx_shape5(const i3_weights *w, const char *name, int64_t out[5]);

/* The whole file, NUL-terminated, in a malloc'ed buffer (NULL if it cannot be read); *len its size. */
char *fx_read_file(const char *path, size_t *len);

/* A fresh directory /tmp/i3rt_<tag>_XXXXXX (path into buf), and its removal with the plain files
 * a test left in it. */
void fx_temp_dir(char *buf, size_t n, const char *tag);
/* "dir/name" in storage that stays valid for the whole test (each test is its own process). */
const char *fx_path(const char *dir, const char *name);
void fx_remove_dir(const char *dir);

/* A generator's output folder, $I3RT_FIXTURES/<group> (asserts that ctest set I3RT_FIXTURES). */
const char *fx_fixture_dir(const char *group);
/* Its manifest.json, parsed (asserts it can be read: run tests/gen_<group>.py); cJSON_Delete it. */
struct cJSON *fx_manifest(const char *group);
/* The array file named by manifest entry c[key] in the group's folder, asserted to hold n elements of
 * elem bytes; malloc'ed. */
void *fx_manifest_array(const char *group, const struct cJSON *c, const char *key, size_t n, size_t elem);

#endif
