/* Test helpers: random data, guarded buffers, error reports, PyTorch fixture reading (fixtures.h). */
#include "fixtures.h"

#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FX_SENTINEL (-12345.678f)

fx_rng fx_rng_seed(uint64_t seed) {
    fx_rng r = {seed * 0x9E3779B97F4A7C15ull + 1};
    return r;
}

void fx_fill(fx_rng *r, float *v, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) {
        r->state ^= r->state << 13;
        r->state ^= r->state >> 7;
        r->state ^= r->state << 17;
        v[i] = lo + (hi - lo) * (float)((r->state >> 40) * (1.0 / 16777216.0));
    }
}

float *fx_guarded_alloc(int64_t n) {
    float *base = malloc((size_t)(n + 2 * FX_GUARD) * sizeof(float));
    if (!base) return NULL;
    for (int64_t i = 0; i < n + 2 * FX_GUARD; i++) base[i] = FX_SENTINEL;
    return base + FX_GUARD;
}

bool fx_guards_intact(const float *buf, int64_t n) {
    for (int64_t i = 1; i <= FX_GUARD; i++)
        if (buf[-i] != FX_SENTINEL || buf[n + i - 1] != FX_SENTINEL) return false;
    return true;
}

void fx_guarded_free(float *buf) {
    if (buf) free(buf - FX_GUARD);
}

fx_err fx_compare(const char *label, const float *got, const float *ref, int64_t n) {
    fx_err e = {0, 0, 0};
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= e.max_abs)) e.max_abs = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > e.max_ref) e.max_ref = fabs(ref[i]);
    }
    e.rel = e.max_abs / (e.max_ref > 0 ? e.max_ref : 1.0);
    printf("%-58s n=%-8lld max_abs=%.3e max|ref|=%.3e rel=%.3e\n", label, (long long)n, e.max_abs, e.max_ref, e.rel);
    fflush(stdout);
    return e;
}

i3_weights *fx_open(const char *group, const char *name) {
    const char *root = getenv("I3RT_FIXTURES");
    if (!root) return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", root, group, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fclose(f);
    i3_ctx ctx = {0};
    i3_weights *w = NULL;
    if (i3_weights_open(&ctx, path, &w) != I3RT_OK) printf("fixture %s: %s\n", path, ctx.error);
    return w;
}

const float *fx_tensor(const i3_weights *w, const char *name, int64_t *numel) {
    const i3_weight_tensor *t = i3_weights_find(w, name);
    if (!t || t->dtype != I3_F32) return NULL;
    if (numel) *numel = (int64_t)t->numel;
    return (const float *)t->data;
}

static cJSON *params_item(const i3_weights *w, const char *key, cJSON **root) {
    const char *text = i3_weights_metadata(w, "params");
    *root = text ? cJSON_Parse(text) : NULL;
    return *root ? cJSON_GetObjectItemCaseSensitive(*root, key) : NULL;
}

int64_t fx_param_int(const i3_weights *w, const char *key, int index) {
    cJSON *root, *item = params_item(w, key, &root);
    if (item && index >= 0) item = cJSON_GetArrayItem(item, index);
    int64_t v = cJSON_IsNumber(item) ? (int64_t)item->valuedouble : cJSON_IsBool(item) ? cJSON_IsTrue(item) : -1;
    cJSON_Delete(root);
    return v;
}

double fx_param_num(const i3_weights *w, const char *key) {
    cJSON *root, *item = params_item(w, key, &root);
    double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    cJSON_Delete(root);
    return v;
}

bool fx_param_str_eq(const i3_weights *w, const char *key, const char *value) {
    cJSON *root, *item = params_item(w, key, &root);
    bool eq = cJSON_IsString(item) && strcmp(item->valuestring, value) == 0;
    cJSON_Delete(root);
    return eq;
}

bool fx_shape5(const i3_weights *w, const char *name, int64_t out[5]) {
    const i3_weight_tensor *t = i3_weights_find(w, name);
    if (!t || t->ndim != 5) return false;
    memcpy(out, t->shape, 5 * sizeof(int64_t));
    return true;
}

const char *fx_path(const char *dir, const char *name) {
    static char store[1024][640];
    static int used;
    cr_assert_lt(used, 1024, "too many paths in one test");
    snprintf(store[used], sizeof store[used], "%s/%s", dir, name);
    return store[used++];
}

void fx_temp_dir(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/i3rt_%s_XXXXXX", tag);
    cr_assert(mkdtemp(buf), "cannot make a temporary directory %s", buf);
}

void fx_remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

char *fx_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

const char *fx_fixture_dir(const char *group) {
    const char *root = getenv("I3RT_FIXTURES");
    cr_assert(root, "I3RT_FIXTURES is not set (run through ctest)");
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", root, group);
    return dir;
}

cJSON *fx_manifest(const char *group) {
    const char *path = fx_path(fx_fixture_dir(group), "manifest.json");
    char *text = fx_read_file(path, NULL);
    cr_assert(text, "cannot read %s (run tests/gen_%s.py)", path, group);
    cJSON *m = cJSON_Parse(text);
    free(text);
    cr_assert(m, "%s: not JSON", path);
    return m;
}

void *fx_manifest_array(const char *group, const cJSON *c, const char *key, size_t n, size_t elem) {
    const cJSON *f = cJSON_GetObjectItem(c, key);
    cr_assert(cJSON_IsString(f), "manifest: %s missing", key);
    const char *path = fx_path(fx_fixture_dir(group), f->valuestring);
    size_t len = 0;
    void *data = fx_read_file(path, &len);
    cr_assert(data, "cannot read %s", path);
    cr_assert_eq(len, n * elem, "%s: %zu bytes, expected %zu", path, len, n * elem);
    return data;
}
