/* Reading i3rt weight files (safetensors + JSON metadata, docs/weights-format.md).
 *
 * The file is read into one buffer and validated completely before anything is handed out:
 *   [u64 LE header length N][N bytes of UTF-8 JSON header][data buffer]
 * Every tensor's dtype, shape and data_offsets are checked, the tensors must tile the data buffer
 * exactly (sorted by offset: no gap, no overlap, nothing left over) and each byte range must be
 * prod(shape) * dtype size, computed with overflow checks. After that, tensor data pointers are
 * plain in-bounds slices of the buffer. F16/BF16 tensors are converted to f32 once, on demand. */
#include "weights.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "i3rt weight files are little-endian; a big-endian host would need byte swapping here"
#endif

struct i3_weights {
    char *label;
    uint8_t *file;          /* the whole file */
    int count;
    i3_weight_tensor *tensors;
    int *by_name;           /* tensor indices sorted by name, for lookup */
    float **f32;            /* per tensor: converted or aligned copy, NULL if none was needed yet */
    bool *used;
    int n_meta;
    char **meta_keys, **meta_values; /* sorted by key */
    int n_derived;
    struct derived_tensor { char *name; size_t numel; float *data; } *derived; /* i3_weights_derived */
};

/* JSON numbers are doubles: integers are exact only up to 2^53, which also bounds every size we accept. */
#define I3_JSON_MAX_INT 9007199254740992.0

typedef struct { const char *name; i3_dtype dtype; } i3_dtype_entry;
static const i3_dtype_entry storage_dtypes[] = {
    {"F32", I3_F32}, {"F16", I3_F16}, {"BF16", I3_BF16}, {"I32", I3_I32}, {"I64", I3_I64}, {"U8", I3_U8},
};

static bool parse_dtype(const char *s, i3_dtype *out) {
    for (size_t i = 0; i < sizeof storage_dtypes / sizeof storage_dtypes[0]; i++)
        if (strcmp(s, storage_dtypes[i].name) == 0) { *out = storage_dtypes[i].dtype; return true; }
    return false;
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
        if (len == 0 || c > 0xf4 || n - i < (size_t)len) return false;
        uint32_t cp = c & (0x7f >> len);
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += len;
    }
    return true;
}

/* Length of an RFC 8259 number at s: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; 0 if there is none. */
static size_t json_number_length(const uint8_t *s, size_t n) {
    size_t i = 0;
#define DIGIT(k) ((k) < n && s[k] >= '0' && s[k] <= '9')
    if (i < n && s[i] == '-') i++;
    if (!DIGIT(i)) return 0;
    if (s[i] == '0') i++;
    else while (DIGIT(i)) i++;
    if (i < n && s[i] == '.') {
        if (!DIGIT(i + 1)) return 0;
        for (i++; DIGIT(i); i++) {}
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t k = i + 1 + (i + 1 < n && (s[i + 1] == '+' || s[i + 1] == '-'));
        if (!DIGIT(k)) return 0;
        for (i = k; DIGIT(i); i++) {}
    }
#undef DIGIT
    return i;
}

/* cJSON is more lenient than JSON: it skips every byte <= 32 as whitespace, takes raw control bytes inside
 * strings and reads numbers with strtod ("01", "+1", ".5"). This scan rejects those before cJSON parses;
 * returns the offset of the first offending byte or -1. */
static long find_non_json_byte(const uint8_t *s, size_t n) {
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (in_string) {
            if (c < 0x20) return (long)i;
            if (c == '\\') i++; /* the escaped byte cannot end the string */
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            return (long)i;
        } else if (c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9')) {
            size_t run = i; /* the bytes cJSON would hand to strtod */
            while (run < n && strchr("0123456789+-.eE", s[run]) && s[run]) run++;
            if (json_number_length(s + i, n - i) != run - i) return (long)i;
            i = run - 1;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            while (i + 1 < n && ((s[i + 1] >= 'a' && s[i + 1] <= 'z') || (s[i + 1] >= 'A' && s[i + 1] <= 'Z'))) i++;
        }
    }
    return -1;
}

/* A JSON number that is a non-negative integer below 2^53. */
static bool json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0 || v >= I3_JSON_MAX_INT || v != floor(v)) return false;
    *out = (uint64_t)v;
    return true;
}

static char *dup_string(i3_ctx *ctx, const char *s, const char *what) {
    size_t n = strlen(s) + 1;
    char *d = i3_malloc(ctx, n, what);
    if (d) memcpy(d, s, n);
    return d;
}

void i3_weights_free(i3_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->count; i++) {
        free((char *)w->tensors[i].name);
        if (w->f32 && w->f32[i] != (const float *)w->tensors[i].data) free(w->f32[i]);
    }
    for (int i = 0; i < w->n_meta; i++) { free(w->meta_keys[i]); free(w->meta_values[i]); }
    free(w->meta_keys);
    free(w->meta_values);
    for (int i = 0; i < w->n_derived; i++) { free(w->derived[i].name); free(w->derived[i].data); }
    free(w->derived);
    free(w->tensors);
    free(w->by_name);
    free(w->f32);
    free(w->used);
    free(w->file);
    free(w->label);
    free(w);
}

/* ---- header parsing ------------------------------------------------------------------------------ */

typedef struct { const char *name; int index; } i3_name_ref;

static int name_ref_cmp(const void *a, const void *b) {
    return strcmp(((const i3_name_ref *)a)->name, ((const i3_name_ref *)b)->name);
}

/* Sorts n names; returns the index of the first name that appears twice, or -1. order[i] receives the
 * position of the i-th smallest name (may be NULL). Sorting keeps huge headers from going quadratic. */
static int sort_names(i3_ctx *ctx, const char *const *names, int n, int *order, i3rt_status *st) {
    i3_name_ref *refs = i3_calloc(ctx, (size_t)n, sizeof *refs, "weight name index");
    if (!refs) { *st = I3RT_ERR_OUT_OF_MEMORY; return -1; }
    for (int i = 0; i < n; i++) refs[i] = (i3_name_ref){names[i], i};
    qsort(refs, (size_t)n, sizeof *refs, name_ref_cmp);
    int dup = -1;
    for (int i = 0; i < n && dup < 0; i++) {
        if (i > 0 && strcmp(refs[i].name, refs[i - 1].name) == 0) dup = refs[i].index;
        if (order) order[i] = refs[i].index;
    }
    free(refs);
    *st = I3RT_OK;
    return dup;
}

static i3rt_status parse_metadata(i3_ctx *ctx, i3_weights *w, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: __metadata__ is not an object of strings", w->label);
    int n = cJSON_GetArraySize(meta);
    char **keys = i3_calloc(ctx, (size_t)n, sizeof(char *), "weight metadata");
    char **values = i3_calloc(ctx, (size_t)n, sizeof(char *), "weight metadata");
    w->meta_keys = i3_calloc(ctx, (size_t)n, sizeof(char *), "weight metadata");
    w->meta_values = i3_calloc(ctx, (size_t)n, sizeof(char *), "weight metadata");
    int *order = i3_calloc(ctx, (size_t)n, sizeof(int), "weight metadata");
    i3rt_status st = (keys && values && w->meta_keys && w->meta_values && order) ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    int got = 0;
    for (const cJSON *item = meta->child; item && st == I3RT_OK; item = item->next, got++) {
        if (!cJSON_IsString(item)) {
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: __metadata__ value \"%s\" is not a string", w->label,
                         item->string);
            break;
        }
        keys[got] = dup_string(ctx, item->string, "weight metadata");
        values[got] = dup_string(ctx, item->valuestring, "weight metadata");
        if (!keys[got] || !values[got]) st = I3RT_ERR_OUT_OF_MEMORY;
    }
    if (st == I3RT_OK) {
        int dup = sort_names(ctx, (const char *const *)keys, got, order, &st);
        if (dup >= 0)
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: __metadata__ key \"%s\" appears twice", w->label,
                         keys[dup]);
    }
    if (st == I3RT_OK) { /* move the strings into w in key order */
        for (int i = 0; i < got; i++) {
            w->meta_keys[i] = keys[order[i]];
            w->meta_values[i] = values[order[i]];
        }
        w->n_meta = got;
    } else {
        for (int i = 0; i < n; i++) { free(keys ? keys[i] : NULL); free(values ? values[i] : NULL); }
    }
    free(keys);
    free(values);
    free(order);
    return st;
}

/* Parses one tensor entry; begin/end are its byte range relative to the data buffer (not yet range-checked). */
static i3rt_status parse_tensor(i3_ctx *ctx, const i3_weights *w, const cJSON *entry, i3_weight_tensor *t,
                                uint64_t *begin, uint64_t *end) {
    const char *label = w->label, *name = t->name;
    if (!cJSON_IsObject(entry))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: entry is not an object", label, name);
    for (const cJSON *f = entry->child; f; f = f->next)
        if (strcmp(f->string, "dtype") && strcmp(f->string, "shape") && strcmp(f->string, "data_offsets"))
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: unknown field \"%s\"", label, name, f->string);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!cJSON_IsString(dtype))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: dtype missing or not a string", label, name);
    if (!parse_dtype(dtype->valuestring, &t->dtype))
        return i3_fail(ctx, I3RT_ERR_FORMAT,
                       "%s: tensor %s: unsupported dtype \"%s\" (supported: F32, F16, BF16, I32, I64, U8)", label,
                       name, dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: shape missing or not a list", label, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > I3_WEIGHTS_MAX_DIMS)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: shape has %d dimensions, at most %d supported", label,
                       name, ndim, I3_WEIGHTS_MAX_DIMS);
    t->ndim = ndim;
    size_t numel = 1;
    int d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: shape entry %d is not a non-negative integer", label,
                           name, d);
        t->shape[d] = (int64_t)v;
        if (!i3_mul_size(numel, (size_t)v, &numel))
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: shape overflows the element count", label, name);
    }
    t->numel = numel;
    if (!i3_mul_size(numel, i3_dtype_size(t->dtype), &t->nbytes))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: byte size overflows", label, name);

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || !json_uint(offsets->child, begin) ||
        !json_uint(offsets->child->next, end))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: data_offsets is not a list of two non-negative integers",
                       label, name);
    if (*end < *begin)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] end before begin", label, name,
                       (unsigned long long)*begin, (unsigned long long)*end);
    if (*end - *begin != t->nbytes)
        return i3_fail(ctx, I3RT_ERR_FORMAT,
                       "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes, shape and dtype %s need %zu", label,
                       name, (unsigned long long)*begin, (unsigned long long)*end,
                       (unsigned long long)(*end - *begin), i3_dtype_name(t->dtype), t->nbytes);
    return I3RT_OK;
}

/* A tensor's byte range, sorted by (begin, end) to check the tiling. */
typedef struct { uint64_t begin, end; int index; } i3_span;

static int span_cmp(const void *a, const void *b) {
    const i3_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

/* The tensors, sorted by offset, must cover [0, data_len) exactly once. */
static i3rt_status check_tiling(i3_ctx *ctx, const i3_weights *w, i3_span *spans, size_t data_len) {
    qsort(spans, (size_t)w->count, sizeof *spans, span_cmp);
    uint64_t covered = 0;
    const char *prev = NULL;
    for (int i = 0; i < w->count; i++) {
        const char *name = w->tensors[spans[i].index].name;
        if (spans[i].end > data_len)
            return i3_fail(ctx, I3RT_ERR_FORMAT,
                           "%s: tensor %s: data_offsets [%llu, %llu] out of range (data buffer is %zu bytes)",
                           w->label, name, (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end,
                           data_len);
        if (spans[i].begin < covered)
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s",
                           w->label, name, (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end, prev);
        if (spans[i].begin > covered)
            return i3_fail(ctx, I3RT_ERR_FORMAT,
                           "%s: tensor %s: gap of %llu unused bytes before its data_offsets [%llu, %llu]", w->label,
                           name, (unsigned long long)(spans[i].begin - covered), (unsigned long long)spans[i].begin,
                           (unsigned long long)spans[i].end);
        covered = spans[i].end;
        prev = name;
    }
    if (covered != data_len)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: tensors cover %llu bytes but the data buffer has %zu%s",
                       w->label, (unsigned long long)covered, data_len,
                       covered < data_len ? " (trailing bytes)" : "");
    return I3RT_OK;
}

static i3rt_status build_name_index(i3_ctx *ctx, i3_weights *w) {
    const char **names = i3_calloc(ctx, (size_t)w->count, sizeof *names, "weight name index");
    w->by_name = i3_calloc(ctx, (size_t)w->count, sizeof(int), "weight name index");
    if (!names || !w->by_name) { free(names); return I3RT_ERR_OUT_OF_MEMORY; }
    for (int i = 0; i < w->count; i++) names[i] = w->tensors[i].name;
    i3rt_status st;
    int dup = sort_names(ctx, names, w->count, w->by_name, &st);
    if (dup >= 0)
        st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: name appears twice in the header", w->label, names[dup]);
    free(names);
    return st;
}

static i3rt_status parse_header(i3_ctx *ctx, i3_weights *w, const cJSON *root, const uint8_t *data,
                                size_t data_len) {
    if (!cJSON_IsObject(root))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: JSON is not an object", w->label);
    int n_entries = cJSON_GetArraySize(root);
    w->tensors = i3_calloc(ctx, (size_t)n_entries, sizeof *w->tensors, "weight tensors");
    i3_span *spans = i3_calloc(ctx, (size_t)n_entries, sizeof *spans, "weight tensors");
    if (!w->tensors || !spans) { free(spans); return I3RT_ERR_OUT_OF_MEMORY; }

    i3rt_status st = I3RT_OK;
    bool seen_metadata = false;
    for (const cJSON *entry = root->child; entry && st == I3RT_OK; entry = entry->next) {
        if (strcmp(entry->string, "__metadata__") == 0) {
            if (seen_metadata)
                st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: __metadata__ appears twice", w->label);
            else
                st = parse_metadata(ctx, w, entry);
            seen_metadata = true;
            continue;
        }
        if (entry->string[0] == '\0') {
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: a tensor has an empty name", w->label);
            break;
        }
        i3_weight_tensor *t = &w->tensors[w->count];
        t->name = dup_string(ctx, entry->string, "weight tensor name");
        if (!t->name) { st = I3RT_ERR_OUT_OF_MEMORY; break; }
        spans[w->count].index = w->count;
        w->count++;
        st = parse_tensor(ctx, w, entry, t, &spans[w->count - 1].begin, &spans[w->count - 1].end);
    }
    if (st == I3RT_OK) st = check_tiling(ctx, w, spans, data_len);
    if (st == I3RT_OK)  /* only now are all ranges known to lie inside the buffer */
        for (int i = 0; i < w->count; i++) w->tensors[spans[i].index].data = data + spans[i].begin;
    free(spans);
    if (st == I3RT_OK) st = build_name_index(ctx, w);
    return st;
}

/* Takes ownership of file (malloc'ed, len bytes) in every case. */
static i3rt_status weights_parse(i3_ctx *ctx, uint8_t *file, size_t len, const char *label, i3_weights **out) {
    i3_weights *w = i3_calloc(ctx, 1, sizeof *w, "weights");
    if (!w) { free(file); return I3RT_ERR_OUT_OF_MEMORY; }
    w->file = file;
    w->label = dup_string(ctx, label, "weights label");
    if (!w->label) { i3_weights_free(w); return I3RT_ERR_OUT_OF_MEMORY; }

    if (len < 8) {
        i3_weights_free(w);
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: file is %zu bytes, too short for the 8-byte header length",
                       label, len);
    }
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | file[i];
    if (header_len > I3_WEIGHTS_MAX_HEADER || header_len > len - 8) {
        i3_weights_free(w);
        return i3_fail(ctx, I3RT_ERR_FORMAT,
                       "%s: header: header length %llu is larger than %s (%zu bytes after the length field)", label,
                       (unsigned long long)header_len, header_len > len - 8 ? "the file" : "the 100 MB limit",
                       len - 8);
    }
    const char *json = (const char *)file + 8;
    if (!valid_utf8(file + 8, (size_t)header_len)) {
        i3_weights_free(w);
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: not valid UTF-8", label);
    }
    long bad = find_non_json_byte(file + 8, (size_t)header_len);
    if (bad >= 0) {
        unsigned byte = file[8 + bad];
        i3_weights_free(w);
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: not valid JSON (byte 0x%02x at byte %ld)", label, byte,
                       bad);
    }
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)header_len, &parse_end, false);
    bool trailing = false;
    if (root) /* writers pad the header with spaces to 8-byte alignment; anything else after the JSON is an error */
        for (; parse_end < json + header_len && !trailing; parse_end += !trailing)
            trailing = !(*parse_end == ' ' || *parse_end == '\n' || *parse_end == '\t' || *parse_end == '\r');
    if (!root || trailing) {
        size_t at = parse_end ? (size_t)(parse_end - json) : 0;  /* cJSON sets it on failure too */
        cJSON_Delete(root);
        i3_weights_free(w);
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: header: not valid JSON (at byte %zu of %llu)", label,
                       at <= header_len ? at : (size_t)header_len, (unsigned long long)header_len);
    }
    i3rt_status st = parse_header(ctx, w, root, file + 8 + header_len, len - 8 - (size_t)header_len);
    cJSON_Delete(root);
    if (st == I3RT_OK) {
        w->f32 = i3_calloc(ctx, (size_t)w->count, sizeof(float *), "weights f32 cache");
        w->used = i3_calloc(ctx, (size_t)w->count, sizeof(bool), "weights use flags");
        if (!w->f32 || !w->used) st = I3RT_ERR_OUT_OF_MEMORY;
    }
    if (st != I3RT_OK) {
        i3_weights_free(w);
        return st;
    }
    *out = w;
    return I3RT_OK;
}

/* ---- entry points -------------------------------------------------------------------------------- */

i3rt_status i3_weights_from_memory(i3_ctx *ctx, const void *buf, size_t len, const char *label, i3_weights **out) {
    if (!out) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3_weights_from_memory: out is NULL");
    *out = NULL;
    if (!label) label = "(memory)";
    if (!buf && len) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: buffer is NULL", label);
    uint8_t *copy = i3_malloc(ctx, len, "weight file");
    if (!copy) return I3RT_ERR_OUT_OF_MEMORY;
    if (len) memcpy(copy, buf, len);
    return weights_parse(ctx, copy, len, label, out);
}

i3rt_status i3_weights_open(i3_ctx *ctx, const char *path, i3_weights **out) {
    if (!out || !path) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "i3_weights_open: path or out is NULL");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st_buf = {0}; /* a directory opens too, and its "size" from ftell is LONG_MAX */
    if (fstat(fileno(f), &st_buf) != 0 || !S_ISREG(st_buf.st_mode)) {
        fclose(f);
        return i3_fail(ctx, I3RT_ERR_IO, "%s: not a regular file%s", path,
                       S_ISDIR(st_buf.st_mode) ? " but a directory (a weight file is one .safetensors file)" : "");
    }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        int err = errno;
        fclose(f);
        return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot determine the file size: %s", path, strerror(err));
    }
    uint8_t *file = i3_malloc(ctx, (size_t)size, "weight file");
    if (!file) { fclose(f); return I3RT_ERR_OUT_OF_MEMORY; }
    size_t got = fread(file, 1, (size_t)size, f);
    int read_error = ferror(f), err = errno;
    fclose(f);
    if (read_error || got != (size_t)size) {
        free(file);
        return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot read: %s", path,
                       read_error ? strerror(err) : "file changed size while reading");
    }
    return weights_parse(ctx, file, (size_t)size, path, out);
}

const char *i3_weights_label(const i3_weights *w) { return w->label; }
int i3_weights_count(const i3_weights *w) { return w->count; }

const i3_weight_tensor *i3_weights_at(const i3_weights *w, int index) {
    return (index >= 0 && index < w->count) ? &w->tensors[index] : NULL;
}

static int find_index(const i3_weights *w, const char *name) {
    int lo = 0, hi = w->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(name, w->tensors[w->by_name[mid]].name);
        if (c == 0) return w->by_name[mid];
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return -1;
}

const i3_weight_tensor *i3_weights_find(const i3_weights *w, const char *name) {
    int i = find_index(w, name);
    return i < 0 ? NULL : &w->tensors[i];
}

const char *i3_weights_metadata(const i3_weights *w, const char *key) {
    int lo = 0, hi = w->n_meta - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(key, w->meta_keys[mid]);
        if (c == 0) return w->meta_values[mid];
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}

/* "[a, b, c]" into buf. */
static const char *format_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t at = 0;
    at += (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && at < size; d++)
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (at < size) snprintf(buf + at, size - at, "]");
    return buf;
}

i3rt_status i3_weights_get_f32(i3_ctx *ctx, i3_weights *w, const char *name, int ndim, const int64_t *shape,
                               const float **out) {
    *out = NULL;
    int i = find_index(w, name);
    if (i < 0) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: missing tensor %s", w->label, name);
    const i3_weight_tensor *t = &w->tensors[i];
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char have[256], want[256];
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s", w->label, name,
                       format_shape(have, sizeof have, t->ndim, t->shape), format_shape(want, sizeof want, ndim, shape));
    }
    if (t->dtype != I3_F32 && t->dtype != I3_F16 && t->dtype != I3_BF16)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s has dtype %s, expected F32, F16 or BF16", w->label, name,
                       i3_dtype_name(t->dtype));
    if (!w->f32[i]) {
        if (t->dtype == I3_F32 && ((uintptr_t)t->data & 3) == 0) {
            w->f32[i] = (float *)t->data;  /* aligned in the buffer: no copy */
        } else {
            float *f = i3_aligned_alloc(ctx, t->numel * sizeof(float), name);
            if (!f) return I3RT_ERR_OUT_OF_MEMORY;
            const uint8_t *src = t->data;
            for (size_t k = 0; k < t->numel; k++) {
                if (t->dtype == I3_F32) {
                    memcpy(&f[k], src + 4 * k, 4);
                } else {
                    uint16_t h;
                    memcpy(&h, src + 2 * k, 2);
                    f[k] = t->dtype == I3_F16 ? i3_f16_to_f32(h) : i3_bf16_to_f32(h);
                }
            }
            w->f32[i] = f;
        }
    }
    w->used[i] = true;
    *out = w->f32[i];
    return I3RT_OK;
}

i3rt_status i3_weights_check_all_used(i3_ctx *ctx, const i3_weights *w) {
    for (int i = 0; i < w->count; i++)
        if (!w->used[i])
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: unexpected tensor %s (not part of the network)", w->label,
                           w->tensors[i].name);
    return I3RT_OK;
}

i3rt_status i3_weights_derived(i3_ctx *ctx, i3_weights *w, const char *name, size_t numel, float **out, int *fresh) {
    *out = NULL;
    if (fresh) *fresh = 0;
    for (int i = 0; i < w->n_derived; i++) {
        if (strcmp(w->derived[i].name, name) != 0) continue;
        if (w->derived[i].numel != numel)
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: derived tensor %s holds %zu values, asked for %zu",
                           w->label, name, w->derived[i].numel, numel);
        *out = w->derived[i].data;
        return I3RT_OK;
    }
    struct derived_tensor *grown = realloc(w->derived, (size_t)(w->n_derived + 1) * sizeof *grown);
    if (!grown) return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: out of memory for derived tensor %s", w->label, name);
    w->derived = grown;
    size_t bytes;
    if (!i3_mul_size(numel ? numel : 1, sizeof(float), &bytes))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: derived tensor %s: %zu values overflow", w->label, name,
                       numel);
    float *data = i3_aligned_alloc(ctx, bytes, name);
    char *copy = malloc(strlen(name) + 1);
    if (copy) memcpy(copy, name, strlen(name) + 1);
    if (!data || !copy) {
        free(data);
        free(copy);
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: out of memory for derived tensor %s", w->label, name);
    }
    w->derived[w->n_derived++] = (struct derived_tensor){copy, numel, data};
    *out = data;
    if (fresh) *fresh = 1;
    return I3RT_OK;
}
