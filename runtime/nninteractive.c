/* nnInteractive's inference session (see nninteractive.h): the model folder, the image, the prompt
 * encodings, the one-level undo and the prediction, each step as nnInteractive 2.6.0's
 * nnInteractiveInferenceSession does it (the method names in the comments are its). */
#include "nninteractive.h"
#include "ni_zoom.h"
#include "ops.h" /* I3_PARALLEL_MIN_VALUES */

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

static const char *const kind_names[I3_NI_N_KINDS] = {"scribble", "lasso", "points", "bbox2d", "bbox3d"};

/* ---- fp16 ------------------------------------------------------------------------------------------ */

uint16_t i3_ni_f64_to_f16(double v) {
    if (v == 0 || isnan(v)) return i3_f32_to_f16((float)v);
    const double a = fabs(v);
    if (a >= 65520.0) return v > 0 ? 0x7c00 : 0xfc00;
    int e;
    frexp(a, &e); /* a = m * 2^e, m in [0.5, 1): the leading bit has weight 2^(e - 1) */
    int quantum = e - 1 - 10;
    if (quantum < -24) quantum = -24; /* subnormal halfs */
    /* one rounding, from double straight to the half grid (no double rounding through float) */
    const double r = ldexp(nearbyint(ldexp(a, -quantum)), quantum);
    const uint16_t h = i3_f32_to_f16((float)r); /* exact: r is on the half grid */
    return v < 0 ? (uint16_t)(h | 0x8000) : h;
}

static inline float h2f(uint16_t h) { return h ? i3_f16_to_f32(h) : 0.0f; }

/* Python's round() of an integer / 2 (round half to even). */
static int64_t round_half_even_div2(int64_t sum) {
    if (sum % 2 == 0) return sum / 2;
    const int64_t lo = (sum - 1) / 2;
    return lo % 2 == 0 ? lo : lo + 1;
}

/* ---- boxes and regions ----------------------------------------------------------------------------- */

static int64_t box_voxels(const int64_t lo[3], const int64_t hi[3]) {
    int64_t n = 1;
    for (int a = 0; a < 3; a++) n *= hi[a] > lo[a] ? hi[a] - lo[a] : 0;
    return n;
}

/* [lo, hi) clipped to [0, shape); false if nothing is left. */
static bool clip_box(const int64_t lo[3], const int64_t hi[3], const int64_t shape[3], int64_t clo[3], int64_t chi[3]) {
    for (int a = 0; a < 3; a++) {
        clo[a] = lo[a] > 0 ? lo[a] : 0;
        chi[a] = hi[a] < shape[a] ? hi[a] : shape[a];
        if (chi[a] <= clo[a]) return false;
    }
    return true;
}

/* Copies the box [lo, hi) (inside shape) of a volume of elem-byte values to a dense array (to_volume 0)
 * or back (to_volume 1). */
static void copy_region(void *vol, const int64_t shape[3], size_t elem, const int64_t lo[3], const int64_t hi[3],
                        void *dense, int to_volume) {
    const int64_t n1 = hi[1] - lo[1], n2 = hi[2] - lo[2];
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++) {
            char *v = (char *)vol + (size_t)(((z * shape[1] + y) * shape[2] + lo[2]) * (int64_t)elem);
            char *d = (char *)dense + (size_t)((((z - lo[0]) * n1 + (y - lo[1])) * n2) * (int64_t)elem);
            if (to_volume) memcpy(v, d, (size_t)n2 * elem);
            else memcpy(d, v, (size_t)n2 * elem);
        }
}

static uint16_t *channel_ptr(const i3_ni_session *s, int c) { return s->interactions + (size_t)c * (size_t)s->n_voxels; }

/* ---- the undo log (_begin_undo_log, _record_*, undo) ----------------------------------------------- */

static void log_clear(i3_ni_undo_log *l) {
    for (int i = 0; i < l->n; i++) free(l->records[i].data);
    free(l->records);
    memset(l, 0, sizeof *l);
}

static i3rt_status log_push(i3_ni_session *s, i3_ni_record r) {
    i3_ni_undo_log *l = &s->undo;
    if (l->n == l->cap) {
        const int cap = l->cap ? 2 * l->cap : 16;
        i3_ni_record *grown = realloc(l->records, (size_t)cap * sizeof *grown);
        if (!grown) {
            free(r.data);
            return i3_fail(s->ctx, I3RT_ERR_OUT_OF_MEMORY, "nnInteractive: out of memory for the undo record");
        }
        l->records = grown;
        l->cap = cap;
    }
    l->records[l->n++] = r;
    return I3RT_OK;
}

/* _record_interactions_region: the pre-image of channel c over [lo, hi) (inside the image). */
static i3rt_status record_interactions(i3_ni_session *s, int c, const int64_t lo[3], const int64_t hi[3]) {
    s->dirty |= 1u << c;
    if (!s->undo.active || box_voxels(lo, hi) == 0) return I3RT_OK;
    i3_ni_record r = {I3_NI_REC_INTERACTIONS, c, {lo[0], lo[1], lo[2]}, {hi[0], hi[1], hi[2]}, NULL};
    r.data = i3_malloc(s->ctx, (size_t)box_voxels(lo, hi) * sizeof(uint16_t), "the undo record");
    if (!r.data) return I3RT_ERR_OUT_OF_MEMORY;
    copy_region(channel_ptr(s, c), s->shape, sizeof(uint16_t), lo, hi, r.data, 0);
    return log_push(s, r);
}

static i3rt_status record_whole_channel(i3_ni_session *s, int c) {
    const int64_t lo[3] = {0, 0, 0};
    return record_interactions(s, c, lo, s->shape);
}

/* _record_interactions_channel_overwrite: a channel that cannot be nonzero gets a marker only. */
static i3rt_status record_channel_overwrite(i3_ni_session *s, int c) {
    if (s->undo.active && !(s->dirty & (1u << c))) {
        s->dirty |= 1u << c;
        return log_push(s, (i3_ni_record){I3_NI_REC_ZERO_CHANNEL, c, {0, 0, 0}, {0, 0, 0}, NULL});
    }
    return record_whole_channel(s, c);
}

/* _record_target_region */
static i3rt_status record_target(i3_ni_session *s, const int64_t lo[3], const int64_t hi[3]) {
    if (!s->undo.active || !s->target || box_voxels(lo, hi) == 0) return I3RT_OK;
    i3_ni_record r = {I3_NI_REC_TARGET, 0, {lo[0], lo[1], lo[2]}, {hi[0], hi[1], hi[2]}, NULL};
    r.data = i3_malloc(s->ctx, (size_t)box_voxels(lo, hi), "the undo record");
    if (!r.data) return I3RT_ERR_OUT_OF_MEMORY;
    copy_region(s->target, s->shape, 1, lo, hi, r.data, 0);
    return log_push(s, r);
}

/* Restores the records of s->undo in reverse order and the scalar state before the interaction; the
 * box of the target buffer that changed goes to changed (has_changed 0: none). Frees the log. */
static void log_restore(i3_ni_session *s, int *has_changed, int64_t changed_lo[3], int64_t changed_hi[3]) {
    i3_ni_undo_log *l = &s->undo;
    /* the hull of the restored target regions, to report what changed */
    int64_t hlo[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, hhi[3] = {INT64_MIN, INT64_MIN, INT64_MIN};
    int any_target = 0;
    for (int i = 0; i < l->n; i++)
        if (l->records[i].kind == I3_NI_REC_TARGET) {
            any_target = 1;
            for (int a = 0; a < 3; a++) {
                if (l->records[i].lo[a] < hlo[a]) hlo[a] = l->records[i].lo[a];
                if (l->records[i].hi[a] > hhi[a]) hhi[a] = l->records[i].hi[a];
            }
        }
    uint8_t *before = NULL;
    if (any_target && s->target) {
        before = malloc((size_t)box_voxels(hlo, hhi));
        if (before) copy_region(s->target, s->shape, 1, hlo, hhi, before, 0);
    }
    for (int i = l->n - 1; i >= 0; i--) {
        const i3_ni_record *r = &l->records[i];
        if (r->kind == I3_NI_REC_ZERO_CHANNEL) memset(channel_ptr(s, r->channel), 0, (size_t)s->n_voxels * 2);
        else if (r->kind == I3_NI_REC_TARGET) {
            if (s->target) copy_region(s->target, s->shape, 1, r->lo, r->hi, r->data, 1);
        } else copy_region(channel_ptr(s, r->channel), s->shape, 2, r->lo, r->hi, r->data, 1);
    }
    *has_changed = 0;
    if (any_target && s->target) {
        /* _diff_bbox over the hull; without memory for the comparison the whole hull is reported */
        int64_t dlo[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, dhi[3] = {-1, -1, -1};
        const int64_t n1 = hhi[1] - hlo[1], n2 = hhi[2] - hlo[2];
        for (int64_t z = hlo[0]; z < hhi[0]; z++)
            for (int64_t y = hlo[1]; y < hhi[1]; y++) {
                const uint8_t *t = s->target + (z * s->shape[1] + y) * s->shape[2] + hlo[2];
                const uint8_t *b = before ? before + ((z - hlo[0]) * n1 + (y - hlo[1])) * n2 : NULL;
                for (int64_t x = 0; x < n2; x++)
                    if (!b || t[x] != b[x]) {
                        const int64_t p[3] = {z, y, hlo[2] + x};
                        for (int a = 0; a < 3; a++) {
                            if (p[a] < dlo[a]) dlo[a] = p[a];
                            if (p[a] + 1 > dhi[a]) dhi[a] = p[a] + 1;
                        }
                    }
            }
        if (dhi[0] >= 0) {
            *has_changed = 1;
            memcpy(changed_lo, dlo, sizeof dlo);
            memcpy(changed_hi, dhi, sizeof dhi);
        }
    }
    free(before);
    s->intensity = l->intensity;
    s->dirty |= l->dirty; /* a superset is safe */
    s->queue = l->queue;
    log_clear(l);
}

/* _undoable_interaction: starts the prompt's undo log; the previous one is kept until the prompt
 * succeeds, so that a failed prompt is rolled back and the previous one stays undoable. */
typedef struct {
    i3_ni_undo_log previous;
    int has_last_paste;
    int64_t last_paste_lo[3], last_paste_hi[3];
} interaction_scope;

static void interaction_begin(i3_ni_session *s, interaction_scope *sc) {
    sc->previous = s->undo;
    sc->has_last_paste = s->has_last_paste;
    memcpy(sc->last_paste_lo, s->last_paste_lo, sizeof sc->last_paste_lo);
    memcpy(sc->last_paste_hi, s->last_paste_hi, sizeof sc->last_paste_hi);
    memset(&s->undo, 0, sizeof s->undo);
    s->undo.active = 1;
    s->undo.intensity = s->intensity;
    s->undo.dirty = s->dirty;
    s->undo.queue = s->queue;
}

static i3rt_status interaction_end(i3_ni_session *s, interaction_scope *sc, i3rt_status st) {
    if (st == I3RT_OK) {
        log_clear(&sc->previous);
        return st;
    }
    int changed;
    int64_t lo[3], hi[3];
    log_restore(s, &changed, lo, hi);
    s->undo = sc->previous;
    s->has_last_paste = sc->has_last_paste;
    memcpy(s->last_paste_lo, sc->last_paste_lo, sizeof sc->last_paste_lo);
    memcpy(s->last_paste_hi, sc->last_paste_hi, sizeof sc->last_paste_hi);
    return st;
}

i3rt_status i3_ni_undo(i3_ni_session *s, int *undone, i3rt_box *changed) {
    if (changed) memset(changed, 0, sizeof *changed);
    *undone = 0;
    if (!s->undo.active) return I3RT_OK;
    int has_changed;
    int64_t lo[3], hi[3];
    log_restore(s, &has_changed, lo, hi);
    *undone = 1;
    s->has_last_paste = has_changed;
    if (has_changed) {
        memcpy(s->last_paste_lo, lo, sizeof lo);
        memcpy(s->last_paste_hi, hi, sizeof hi);
        if (changed) {
            memcpy(changed->lo, lo, sizeof lo);
            memcpy(changed->hi, hi, sizeof hi);
        }
    }
    return I3RT_OK;
}

/* ---- the model folder (_load_capability_and_runtime_defaults, _apply_capability) ------------------ */

/* version_to_tuple(a) > version_to_tuple(b), Python tuple order. */
static bool version_greater(const char *a, const char *b) {
    long va[16], vb[16];
    int na = 0, nb = 0;
    for (const char *p = a; *p && na < 16;)
        if (*p >= '0' && *p <= '9') va[na++] = strtol(p, (char **)&p, 10);
        else p++;
    for (const char *p = b; *p && nb < 16;)
        if (*p >= '0' && *p <= '9') vb[nb++] = strtol(p, (char **)&p, 10);
        else p++;
    for (int i = 0; i < na && i < nb; i++)
        if (va[i] != vb[i]) return va[i] > vb[i];
    return na > nb;
}

static bool json_truthy(const cJSON *v) {
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    if (cJSON_IsNumber(v)) return v->valuedouble != 0;
    if (cJSON_IsString(v)) return v->valuestring[0] != '\0';
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) return v->child != NULL;
    return false;
}

static bool json_int(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e6) return false;
    *out = (int)v->valuedouble;
    return true;
}

static int kind_index(const char *name) {
    for (int k = 0; k < I3_NI_N_KINDS; k++)
        if (strcmp(name, kind_names[k]) == 0) return k;
    return -1;
}

/* The runtime defaults and capability of a parsed inference_info.json (info NULL: the legacy file's
 * defaults). file names the file in errors. */
static i3rt_status parse_capability(i3_ctx *ctx, const char *file, const cJSON *info, i3_ni_capability *cap) {
    /* _legacy_default_capability */
    memset(cap, 0, sizeof *cap);
    const int default_supported[I3_NI_N_KINDS] = {1, 1, 1, 1, 0};
    const int default_pos[I3_NI_N_KINDS] = {5, 1, 3, 1, 1}, default_neg[I3_NI_N_KINDS] = {6, 2, 4, 2, 2};
    memcpy(cap->supported, default_supported, sizeof default_supported);
    memcpy(cap->pos, default_pos, sizeof default_pos);
    memcpy(cap->neg, default_neg, sizeof default_neg);
    cap->prev_seg = 0;
    cap->supports_initial_label = 1;
    cap->supports_zero_shot = 1;
    cap->point_radius = 4;
    cap->scribble_thickness[0] = cap->scribble_thickness[1] = cap->scribble_thickness[2] = 2;
    cap->decay = 0.98;
    int n_channels = -1;
    if (info) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(info, "inference_class");
        if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "nnInteractiveInferenceSession") != 0))
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: inference_class %s: i3rt implements nnInteractiveInferenceSession",
                           file, cJSON_IsString(v) ? v->valuestring : "(not a string)");
        v = cJSON_GetObjectItemCaseSensitive(info, "inference_class_min_version");
        if (cJSON_IsString(v) && version_greater(v->valuestring, I3_NI_SESSION_VERSION))
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: the checkpoint needs nnInteractiveInferenceSession >= %s; i3rt "
                           "implements %s", file, v->valuestring, I3_NI_SESSION_VERSION);
        v = cJSON_GetObjectItemCaseSensitive(info, "point_radius");
        if (v && (!json_int(v, &cap->point_radius) || cap->point_radius < 1 || cap->point_radius > I3_NI_MAX_POINT_RADIUS))
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: point_radius must be an integer in 1..%d (i3rt does not sample "
                           "random radii)", file, I3_NI_MAX_POINT_RADIUS);
        v = cJSON_GetObjectItemCaseSensitive(info, "preferred_scribble_thickness");
        if (cJSON_IsNumber(v)) cap->scribble_thickness[0] = cap->scribble_thickness[1] = cap->scribble_thickness[2] = v->valuedouble;
        else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 3)
            for (int a = 0; a < 3; a++) cap->scribble_thickness[a] = cJSON_GetArrayItem(v, a)->valuedouble;
        else if (v) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: preferred_scribble_thickness is not a number or 3 numbers", file);
        v = cJSON_GetObjectItemCaseSensitive(info, "interaction_decay");
        if (v) {
            if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1))
                return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: interaction_decay must be a number in (0, 1]", file);
            cap->decay = v->valuedouble;
        }
        v = cJSON_GetObjectItemCaseSensitive(info, "pad_mode_image");
        if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "constant") != 0))
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: pad_mode_image %s: only \"constant\" is implemented (as in "
                           "nnInteractive)", file, cJSON_IsString(v) ? v->valuestring : "(not a string)");
        const cJSON *sup = cJSON_GetObjectItemCaseSensitive(info, "supported_interactions");
        if (sup && !cJSON_IsObject(sup)) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: supported_interactions is not an object", file);
        for (const cJSON *e = sup ? sup->child : NULL; e; e = e->next) {
            const int k = kind_index(e->string);
            if (k < 0)
                return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: supported_interactions names \"%s\" (known: scribble, lasso, "
                               "points, bbox2d, bbox3d)", file, e->string);
            cap->supported[k] = json_truthy(e);
        }
        v = cJSON_GetObjectItemCaseSensitive(info, "supports_initial_label");
        if (v) cap->supports_initial_label = json_truthy(v);
        v = cJSON_GetObjectItemCaseSensitive(info, "supports_zero_shot_label_refinement");
        if (v) cap->supports_zero_shot = json_truthy(v);
        const cJSON *map = cJSON_GetObjectItemCaseSensitive(info, "channel_mapping");
        if (map && !cJSON_IsObject(map)) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: channel_mapping is not an object", file);
        for (const cJSON *e = map ? map->child : NULL; e; e = e->next) {
            if (strcmp(e->string, "prev_seg") == 0) {
                if (!json_int(e, &cap->prev_seg))
                    return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: channel_mapping.prev_seg is not an integer", file);
                continue;
            }
            const int k = kind_index(e->string);
            if (k < 0)
                return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: channel_mapping names \"%s\" (known: prev_seg, scribble, "
                               "lasso, points, bbox2d, bbox3d)", file, e->string);
            if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || !json_int(cJSON_GetArrayItem(e, 0), &cap->pos[k]) ||
                !json_int(cJSON_GetArrayItem(e, 1), &cap->neg[k]))
                return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: channel_mapping.%s is not a pair [pos, neg] of integers", file,
                               e->string);
        }
        v = cJSON_GetObjectItemCaseSensitive(info, "interaction_channels");
        if (v) {
            if (!json_int(v, &n_channels) || n_channels < 0)
                return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: interaction_channels is not a non-negative integer", file);
            n_channels += 1;
        }
    }
    if (n_channels < 0) { /* infer_num_interaction_channels_from_mapping */
        int max_pos = -1, max_neg = 0;
        for (int k = -1; k < I3_NI_N_KINDS; k++)
            for (int j = 0; j < 2; j++) {
                const int idx = k < 0 ? cap->prev_seg : j ? cap->neg[k] : cap->pos[k];
                if (idx >= 0) max_pos = idx > max_pos ? idx : max_pos;
                else max_neg = -idx > max_neg ? -idx : max_neg;
            }
        n_channels = max_pos + 1 > max_neg ? max_pos + 1 : max_neg;
        if (n_channels < 1) n_channels = 1;
    }
    if (n_channels > I3_NI_MAX_CHANNELS)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: %d interaction channels (i3rt supports up to %d)", file, n_channels,
                       I3_NI_MAX_CHANNELS);
    cap->n_channels = n_channels;
    /* _to_positive_channel_index, then every index must name a channel */
    int *all[1 + 2 * I3_NI_N_KINDS];
    all[0] = &cap->prev_seg;
    for (int k = 0; k < I3_NI_N_KINDS; k++) all[1 + 2 * k] = &cap->pos[k], all[2 + 2 * k] = &cap->neg[k];
    for (int i = 0; i < 1 + 2 * I3_NI_N_KINDS; i++) {
        if (*all[i] < 0) *all[i] += n_channels;
        if (*all[i] < 0 || *all[i] >= n_channels)
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: channel_mapping: a channel index outside the %d interaction channels",
                           file, n_channels);
    }
    return I3RT_OK;
}

static i3rt_status load_capability(i3_ni_session *s, const char *dir) {
    char path[1200], legacy[1200];
    snprintf(path, sizeof path, "%s/inference_info.json", dir);
    snprintf(legacy, sizeof legacy, "%s/inference_session_class.json", dir);
    const char *file = path;
    char *text = i3_read_text(path);
    if (!text) {
        file = legacy;
        text = i3_read_text(legacy);
    }
    if (!text)
        return i3_fail(s->ctx, I3RT_ERR_IO, "%s: neither inference_info.json nor the legacy inference_session_class.json "
                       "can be read (not an nnInteractive model folder?)", dir);
    cJSON *json = cJSON_Parse(text);
    i3rt_status st = I3RT_OK;
    if (!json) st = i3_fail(s->ctx, I3RT_ERR_FORMAT, "%s: not valid JSON", file);
    else if (file == path) {
        if (!cJSON_IsObject(json)) st = i3_fail(s->ctx, I3RT_ERR_FORMAT, "%s: not a JSON object", file);
        else st = parse_capability(s->ctx, file, json, &s->cap);
    } else {
        /* legacy: a plain string means decay 0.9; an object carries the runtime defaults only */
        st = parse_capability(s->ctx, file, NULL, &s->cap);
        if (st == I3RT_OK && cJSON_IsString(json)) s->cap.decay = 0.9;
        else if (st == I3RT_OK && cJSON_IsObject(json)) {
            i3_ni_capability c;
            cJSON *runtime = cJSON_CreateObject();
            const char *keys[] = {"point_radius", "preferred_scribble_thickness", "interaction_decay", "pad_mode_image"};
            for (int i = 0; i < 4; i++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, keys[i]);
                if (v) cJSON_AddItemToObject(runtime, keys[i], cJSON_Duplicate(v, 1));
            }
            st = parse_capability(s->ctx, file, runtime, &c);
            cJSON_Delete(runtime);
            if (st == I3RT_OK) s->cap = c;
        }
    }
    cJSON_Delete(json);
    free(text);
    return st;
}

/* _load_license: the first non-empty line of the folder's LICENSE, stripped; "!!MISSING!!" without one. */
static void load_license(i3_ni_session *s, const char *dir) {
    char path[1200], line[sizeof s->license];
    snprintf(path, sizeof path, "%s/LICENSE", dir);
    snprintf(s->license, sizeof s->license, "!!MISSING!!");
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        char *b = line, *e;
        while (*b == ' ' || *b == '\t') b++;
        for (e = b + strlen(b); e > b && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'); e--) {}
        *e = '\0';
        if (*b) {
            snprintf(s->license, sizeof s->license, "%s", b);
            break;
        }
    }
    if (f) fclose(f);
}

/* nnInteractive's server's _build_capability_snapshot of this session, kept current (do_autozoom). */
i3rt_status i3_ni_update_capabilities_json(i3_ni_session *s) {
    static const char *const order[I3_NI_N_KINDS] = {"scribble", "lasso", "points", "bbox2d", "bbox3d"};
    const i3_ni_capability *cap = &s->cap;
    cJSON *json = cJSON_CreateObject();
    cJSON *supported = cJSON_AddObjectToObject(json, "supported_interactions");
    for (int k = 0; k < I3_NI_N_KINDS; k++) cJSON_AddBoolToObject(supported, order[k], cap->supported[k]);
    cJSON *mapping = cJSON_AddObjectToObject(json, "channel_mapping");
    cJSON_AddNumberToObject(mapping, "prev_seg", cap->prev_seg);
    for (int k = 0; k < I3_NI_N_KINDS; k++) {
        const int pair[2] = {cap->pos[k], cap->neg[k]};
        cJSON_AddItemToObject(mapping, order[k], cJSON_CreateIntArray(pair, 2));
    }
    cJSON_AddNumberToObject(json, "num_interaction_channels", cap->n_channels);
    cJSON_AddBoolToObject(json, "supports_initial_label", cap->supports_initial_label);
    cJSON_AddBoolToObject(json, "supports_zero_shot_label_refinement", cap->supports_zero_shot);
    cJSON_AddItemToObject(json, "preferred_scribble_thickness", cJSON_CreateDoubleArray(cap->scribble_thickness, 3));
    cJSON_AddNumberToObject(json, "interaction_decay", cap->decay);
    cJSON *patch = cJSON_AddArrayToObject(json, "patch_size");
    for (int a = 0; a < 3; a++) cJSON_AddItemToArray(patch, cJSON_CreateNumber((double)s->patch[a]));
    cJSON_AddBoolToObject(json, "do_autozoom", s->do_autozoom);
    cJSON_AddStringToObject(json, "inference_session_version", I3_NI_SESSION_VERSION);
    cJSON_AddStringToObject(json, "license", s->license);
    cJSON_AddTrueToObject(json, "supports_undo");
    char *text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    if (!text) return i3_fail(s->ctx, I3RT_ERR_OUT_OF_MEMORY, "out of memory for the capability snapshot");
    free(s->capabilities_json);
    s->capabilities_json = text;
    return I3RT_OK;
}

/* determine_num_input_channels: dataset.json's channel_names (or modality). */
static i3rt_status image_channels(i3_ctx *ctx, const char *dir, int *n) {
    char path[1200];
    snprintf(path, sizeof path, "%s/dataset.json", dir);
    char *text = i3_read_text(path);
    if (!text) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot be read", path);
    cJSON *json = cJSON_Parse(text);
    free(text);
    const cJSON *ch = json ? cJSON_GetObjectItemCaseSensitive(json, "channel_names") : NULL;
    if (!ch && json) ch = cJSON_GetObjectItemCaseSensitive(json, "modality");
    i3rt_status st = I3RT_OK;
    if (!cJSON_IsObject(ch)) st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: no channel_names object", path);
    else *n = cJSON_GetArraySize(ch);
    cJSON_Delete(json);
    return st;
}

/* The fold's weight file: fold_K.safetensors, or (fold < 0) the only fold_*.safetensors. */
static i3rt_status fold_path(i3_ctx *ctx, const char *dir, int fold, char *path, size_t n) {
    if (fold >= 0) {
        snprintf(path, n, "%s/fold_%d.safetensors", dir, fold);
        return I3RT_OK;
    }
    DIR *d = opendir(dir);
    if (!d) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot open the model folder", dir);
    int found = 0, k = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        int used = 0, kk;
        if (sscanf(e->d_name, "fold_%d.safetensors%n", &kk, &used) == 1 && used == (int)strlen(e->d_name)) {
            found++;
            k = kk;
        }
    }
    closedir(d);
    if (found != 1)
        return i3_fail(ctx, I3RT_ERR_IO, "%s: %d fold_K.safetensors files; name the fold (convert the nnInteractive model "
                       "folder with tools/convert_pt/convert_nninteractive.py)", dir, found);
    snprintf(path, n, "%s/fold_%d.safetensors", dir, k);
    return I3RT_OK;
}

/* PointInteraction_stub with use_distance_transform: ball(r) (skimage), its Euclidean distance
 * transform (distance to the nearest zero voxel of the (2r+1)^3 array), divided by its maximum. */
static i3rt_status build_point_strel(i3_ni_session *s) {
    const int r = s->cap.point_radius, k = 2 * r + 1;
    const int64_t n = (int64_t)k * k * k;
    uint8_t *ball = i3_malloc(s->ctx, (size_t)n, "the point structuring element");
    s->point_strel = i3_malloc(s->ctx, (size_t)n * sizeof(double), "the point structuring element");
    if (!ball || !s->point_strel) {
        free(ball);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    for (int z = 0; z < k; z++)
        for (int y = 0; y < k; y++)
            for (int x = 0; x < k; x++)
                ball[(z * k + y) * k + x] = (x - r) * (x - r) + (y - r) * (y - r) + (z - r) * (z - r) <= r * r;
    double max = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t best = INT64_MAX;
        if (ball[i])
            for (int64_t j = 0; j < n; j++)
                if (!ball[j]) {
                    const int64_t dz = i / (k * k) - j / (k * k), dy = i / k % k - j / k % k, dx = i % k - j % k;
                    const int64_t d2 = dz * dz + dy * dy + dx * dx;
                    if (d2 < best) best = d2;
                }
        s->point_strel[i] = ball[i] ? sqrt((double)best) : 0.0;
        if (s->point_strel[i] > max) max = s->point_strel[i];
    }
    for (int64_t i = 0; i < n; i++) s->point_strel[i] /= max;
    free(ball);
    s->strel_size = k;
    return I3RT_OK;
}

i3rt_status i3_ni_create(i3_ctx *ctx, const char *model_dir, int fold, i3_ni_session **out) {
    *out = NULL;
    i3_ni_session *s = i3_calloc(ctx, 1, sizeof *s, "the nnInteractive session");
    if (!s) return I3RT_ERR_OUT_OF_MEMORY;
    s->ctx = ctx;
    s->do_autozoom = 1;
    s->intensity = 1.0;
    np_random_seed(&s->rng, 0);
    snprintf(s->model_dir, sizeof s->model_dir, "%s", model_dir);
    char path[1200];
    int n_image_channels = 0;
    i3rt_status st = load_capability(s, model_dir);
    if (st == I3RT_OK) st = image_channels(ctx, model_dir, &n_image_channels);
    if (st == I3RT_OK && n_image_channels != 1)
        st = i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s/dataset.json: %d image channels (the session takes one image channel)",
                     model_dir, n_image_channels);
    if (st == I3RT_OK) st = fold_path(ctx, model_dir, fold, path, sizeof path);
    if (st == I3RT_OK) st = i3rt_model_load(ctx, path, &s->model);
    i3rt_model_info mi;
    if (st == I3RT_OK) st = i3rt_model_get_info(s->model, &mi);
    if (st == I3RT_OK && (mi.dims != 3 || mi.in_channels != 1 + s->cap.n_channels || mi.num_classes != 2))
        st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: a %dD network with %d input channels and %d classes; nnInteractive needs 3D, "
                     "1 image + %d interaction channels (inference_info.json) and 2 classes", path, mi.dims, mi.in_channels,
                     mi.num_classes, s->cap.n_channels);
    for (int a = 0; a < 3 && st == I3RT_OK; a++)
        if (mi.patch_size[a] < 1 || mi.patch_size[a] % mi.total_stride[a] != 0)
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: patch size %lld x %lld x %lld from the plans is not a multiple of the "
                         "network's stride", path, (long long)mi.patch_size[0], (long long)mi.patch_size[1],
                         (long long)mi.patch_size[2]);
    if (st == I3RT_OK) {
        memcpy(s->patch, mi.patch_size, sizeof s->patch);
        const size_t np = (size_t)(s->patch[0] * s->patch[1] * s->patch[2]);
        s->net_input = i3_malloc(ctx, np * (size_t)(1 + s->cap.n_channels) * sizeof(float), "the network input");
        s->logits = s->net_input ? i3_malloc(ctx, np * 2 * sizeof(float), "the logits") : NULL;
        s->pred = s->logits ? i3_malloc(ctx, np, "the prediction") : NULL;
        s->prev_pred = s->pred ? i3_malloc(ctx, np * sizeof(uint16_t), "the previous prediction") : NULL;
        if (!s->prev_pred) st = I3RT_ERR_OUT_OF_MEMORY;
    }
    if (st == I3RT_OK) st = build_point_strel(s);
    if (st == I3RT_OK) {
        load_license(s, model_dir);
        st = i3_ni_update_capabilities_json(s);
    }
    /* every forward has the patch's shape: plan it now, not in the first prompt (nnInteractive's warmup) */
    size_t peak = 0;
    if (st == I3RT_OK) st = i3rt_model_plan(s->model, s->patch, &peak);
    if (st != I3RT_OK) {
        i3_ni_free(s);
        return st;
    }
    *out = s;
    return I3RT_OK;
}

void i3_ni_free(i3_ni_session *s) {
    if (!s) return;
    log_clear(&s->undo);
    i3rt_model_free(s->model);
    free(s->capabilities_json);
    free(s->point_strel);
    free(s->image);
    free(s->interactions);
    free(s->net_input);
    free(s->logits);
    free(s->pred);
    free(s->prev_pred);
    free(s);
}

void i3_ni_seed_rng(i3_ni_session *s, uint32_t seed) { np_random_seed(&s->rng, seed); }

/* ---- the image (_background_set_image) and target buffer ------------------------------------------ */

i3rt_status i3_ni_set_image(i3_ni_session *s, const float *image, const int64_t shape[3], const double spacing[3]) {
    int64_t n = 1;
    for (int a = 0; a < 3; a++) {
        if (shape[a] < 1 || shape[a] > (1 << 20))
            return i3_fail(s->ctx, I3RT_ERR_SHAPE, "nnInteractive set_image: shape %lld x %lld x %lld is not a 3D image",
                           (long long)shape[0], (long long)shape[1], (long long)shape[2]);
        n *= shape[a];
    }
    if ((uint64_t)n * (uint64_t)(s->cap.n_channels * 2 + 4) > ((uint64_t)1 << 46))
        return i3_fail(s->ctx, I3RT_ERR_SHAPE, "nnInteractive set_image: %lld voxels is too large", (long long)n);
    /* the bounding box of the nonzero voxels (_nonzero_spatial_bbox), and finiteness: per plane, then
     * combined (plane z: rows [ylo, yhi), columns [xlo, xhi); bad: the first non-finite voxel + 1) */
    int64_t *planes = i3_malloc(s->ctx, (size_t)shape[0] * 5 * sizeof *planes, "the image statistics");
    if (!planes) return I3RT_ERR_OUT_OF_MEMORY;
#pragma omp parallel for schedule(static) num_threads(s->ctx->n_threads) if (n >= I3_PARALLEL_MIN_VALUES)
    for (int64_t z = 0; z < shape[0]; z++) {
        int64_t *pl = planes + 5 * z, ylo = shape[1], yhi = 0, xlo = shape[2], xhi = 0, bad = 0;
        for (int64_t y = 0; y < shape[1] && !bad; y++) {
            const float *row = image + (z * shape[1] + y) * shape[2];
            for (int64_t x = 0; x < shape[2]; x++) {
                if (!isfinite(row[x])) {
                    bad = y * shape[2] + x + 1;
                    break;
                }
                if (row[x] == 0) continue;
                if (y < ylo) ylo = y;
                yhi = y + 1;
                if (x < xlo) xlo = x;
                if (x + 1 > xhi) xhi = x + 1;
            }
        }
        pl[0] = ylo, pl[1] = yhi, pl[2] = xlo, pl[3] = xhi, pl[4] = bad;
    }
    int64_t lo[3] = {shape[0], shape[1], shape[2]}, hi[3] = {0, 0, 0};
    for (int64_t z = 0; z < shape[0]; z++) {
        const int64_t *pl = planes + 5 * z;
        if (pl[4]) {
            const int64_t y = (pl[4] - 1) / shape[2], x = (pl[4] - 1) % shape[2];
            const float v = image[(z * shape[1] + y) * shape[2] + x];
            free(planes);
            return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive set_image: voxel (%lld, %lld, %lld) is %s",
                           (long long)z, (long long)y, (long long)x, isnan(v) ? "NaN" : "infinite");
        }
        if (pl[1] == 0) continue;
        if (z < lo[0]) lo[0] = z;
        hi[0] = z + 1;
        if (pl[0] < lo[1]) lo[1] = pl[0];
        if (pl[1] > hi[1]) hi[1] = pl[1];
        if (pl[2] < lo[2]) lo[2] = pl[2];
        if (pl[3] > hi[2]) hi[2] = pl[3];
    }
    free(planes);
    if (hi[0] == 0)
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive set_image: the image is entirely zero; cannot "
                       "determine normalization statistics");
    /* mean and unbiased std over the box (zeros inside included), in double, then as float32 tensors hold them */
    const int64_t m = box_voxels(lo, hi);
    double sum = 0, ss = 0;
#pragma omp parallel for collapse(2) reduction(+ : sum) schedule(static) num_threads(s->ctx->n_threads) \
    if (m >= I3_PARALLEL_MIN_VALUES)
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            for (int64_t x = lo[2]; x < hi[2]; x++) sum += image[(z * shape[1] + y) * shape[2] + x];
    const double mean = sum / (double)m;
#pragma omp parallel for collapse(2) reduction(+ : ss) schedule(static) num_threads(s->ctx->n_threads) \
    if (m >= I3_PARALLEL_MIN_VALUES)
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++)
            for (int64_t x = lo[2]; x < hi[2]; x++) {
                const double d = image[(z * shape[1] + y) * shape[2] + x] - mean;
                ss += d * d;
            }
    const float mean_f = (float)mean, std_f = m > 1 ? (float)sqrt(ss / (double)(m - 1)) : 0.0f;
    if (!(std_f > 0))
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive set_image: the nonzero region has constant "
                       "intensity (standard deviation 0); cannot normalize");
    float *img = i3_malloc(s->ctx, (size_t)n * sizeof *img, "the normalized image");
    uint16_t *inter = img ? i3_calloc(s->ctx, (size_t)n * (size_t)s->cap.n_channels, sizeof *inter, "the interactions")
                          : NULL;
    if (!inter) {
        free(img);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
#pragma omp parallel for schedule(static) num_threads(s->ctx->n_threads) if (n >= I3_PARALLEL_MIN_VALUES)
    for (int64_t i = 0; i < n; i++) img[i] = (image[i] - mean_f) / std_f;
    /* _reset_session */
    free(s->image);
    free(s->interactions);
    log_clear(&s->undo);
    s->image = img;
    s->interactions = inter;
    memcpy(s->shape, shape, sizeof s->shape);
    s->n_voxels = n;
    for (int a = 0; a < 3; a++) s->spacing[a] = spacing ? spacing[a] : 1.0;
    s->has_image = 1;
    s->dirty = 0;
    s->intensity = 1.0;
    s->target = NULL;
    s->has_last_paste = 0;
    memset(&s->queue, 0, sizeof s->queue);
    return I3RT_OK;
}

static i3rt_status need_image(i3_ni_session *s, const char *what) {
    if (!s->has_image)
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive %s: no image (call i3rt_ni_set_image first)", what);
    return I3RT_OK;
}

i3rt_status i3_ni_set_target_buffer(i3_ni_session *s, uint8_t *target, const int64_t shape[3]) {
    I3_TRY(need_image(s, "set_target_buffer"));
    if (memcmp(shape, s->shape, sizeof s->shape) != 0)
        return i3_fail(s->ctx, I3RT_ERR_SHAPE, "nnInteractive set_target_buffer: shape %lld x %lld x %lld differs from the "
                       "image's %lld x %lld x %lld", (long long)shape[0], (long long)shape[1], (long long)shape[2],
                       (long long)s->shape[0], (long long)s->shape[1], (long long)s->shape[2]);
    s->target = target;
    return I3RT_OK;
}

/* reset_interactions without touching the undo log (the queue of prompts is kept, as nnInteractive
 * keeps it) */
static void reset_state(i3_ni_session *s) {
    if (s->interactions) memset(s->interactions, 0, (size_t)s->n_voxels * (size_t)s->cap.n_channels * 2);
    s->dirty = 0;
    s->intensity = 1.0;
    if (s->target) memset(s->target, 0, (size_t)s->n_voxels);
    s->has_last_paste = 0;
}

void i3_ni_reset_interactions(i3_ni_session *s) {
    log_clear(&s->undo);
    reset_state(s);
}

/* ---- prompts --------------------------------------------------------------------------------------- */

static void queue_prompt(i3_ni_session *s, const int64_t center[3], double zoom) {
    s->queue.n++;
    memcpy(s->queue.center, center, sizeof s->queue.center);
    s->queue.zoom = zoom;
}

/* _add_patch_for_bbox_interaction / _generic_add_patch_from_image: centre round((lo + hi) / 2), zoom so
 * that the box plus a third of the patch fits. */
static void queue_box(i3_ni_session *s, const int64_t lo[3], const int64_t hi[3]) {
    int64_t center[3];
    double zoom = 1;
    for (int a = 0; a < 3; a++) {
        center[a] = round_half_even_div2(lo[a] + hi[a]);
        const double z = (double)(hi[a] - lo[a] + s->patch[a] / 3) / (double)s->patch[a];
        if (z > zoom) zoom = z;
    }
    queue_prompt(s, center, zoom);
}

/* _prepare_new_interaction_intensity and _renormalize_interactions_if_needed */
static i3rt_status prepare_intensity(i3_ni_session *s) {
    if (s->cap.decay >= 1) return I3RT_OK;
    s->intensity *= 1 / s->cap.decay;
    if (s->intensity <= 65504.0) return I3RT_OK;
    const double target = 65504.0 / 10;
    const float scale = (float)(target / s->intensity);
    for (int c = 0; c < s->cap.n_channels; c++) {
        if (c == s->cap.prev_seg) continue;
        if (s->dirty & (1u << c)) I3_TRY(record_whole_channel(s, c));
        uint16_t *ch = channel_ptr(s, c);
#pragma omp parallel for schedule(static) num_threads(s->ctx->n_threads) if (s->n_voxels >= I3_PARALLEL_MIN_VALUES)
        for (int64_t i = 0; i < s->n_voxels; i++)
            if (ch[i]) ch[i] = i3_f32_to_f16(i3_f16_to_f32(ch[i]) * scale);
    }
    s->intensity = target;
    return I3RT_OK;
}

/* Stored values are never negative, and non-negative halfs order like their bits. */
static inline uint16_t f16_max(uint16_t a, uint16_t b) { return a > b ? a : b; }

/* _check_capability_or_warn: with the override an unsupported prompt runs on its mapped channels (every
 * kind has a mapping: the file's mapping is merged into the defaults). */
static i3rt_status check_supported(i3_ni_session *s, i3_ni_kind k) {
    if (!s->cap.supported[k] && !s->override_capability_checks)
        return i3_fail(s->ctx, I3RT_ERR_UNSUPPORTED, "nnInteractive: interaction '%s' is not supported by this checkpoint's "
                       "capability metadata (%s; override_capability_checks runs it anyway)", kind_names[k], s->model_dir);
    return I3RT_OK;
}

static void clear_result(i3rt_ni_result *r) {
    if (r) memset(r, 0, sizeof *r);
}

static void start_timing(i3_ni_session *s) {
    memset(&s->timing, 0, sizeof s->timing);
    s->timing.zoom = 1;
}

static i3rt_status predict_queued(i3_ni_session *s, int force_full_refine, i3rt_ni_result *result);

static i3rt_status finish_prompt(i3_ni_session *s, interaction_scope *sc, i3rt_status st, int run_prediction,
                                 double t0, i3rt_ni_result *result) {
    s->timing.encode = i3_now_seconds() - t0;
    if (st == I3RT_OK && run_prediction) st = predict_queued(s, 0, result);
    st = interaction_end(s, sc, st);
    s->timing.total = i3_now_seconds() - t0;
    return st;
}

i3rt_status i3_ni_add_point(i3_ni_session *s, const int64_t coords[3], int positive, int run_prediction,
                            i3rt_ni_result *result) {
    clear_result(result);
    I3_TRY(need_image(s, "add_point_interaction"));
    I3_TRY(check_supported(s, I3_NI_POINTS));
    for (int a = 0; a < 3; a++)
        if (coords[a] < 0 || coords[a] >= s->shape[a])
            return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive add_point_interaction: point (%lld, %lld, %lld) "
                           "is outside the image (%lld x %lld x %lld)", (long long)coords[0], (long long)coords[1],
                           (long long)coords[2], (long long)s->shape[0], (long long)s->shape[1], (long long)s->shape[2]);
    start_timing(s);
    const double t0 = i3_now_seconds();
    interaction_scope sc;
    interaction_begin(s, &sc);
    queue_prompt(s, coords, 1);
    i3rt_status st = prepare_intensity(s);
    /* place_point: the strel centred at the point, clipped, written with max */
    const int64_t k = s->strel_size;
    int64_t lo[3], hi[3], clo[3], chi[3];
    for (int a = 0; a < 3; a++) lo[a] = coords[a] - k / 2, hi[a] = coords[a] + k / 2 + k % 2;
    const int c = positive ? s->cap.pos[I3_NI_POINTS] : s->cap.neg[I3_NI_POINTS];
    if (st == I3RT_OK && clip_box(lo, hi, s->shape, clo, chi)) {
        st = record_interactions(s, c, clo, chi);
        uint16_t *ch = channel_ptr(s, c);
        for (int64_t z = clo[0]; z < chi[0] && st == I3RT_OK; z++)
            for (int64_t y = clo[1]; y < chi[1]; y++)
                for (int64_t x = clo[2]; x < chi[2]; x++) {
                    const double v = s->point_strel[((z - lo[0]) * k + (y - lo[1])) * k + (x - lo[2])];
                    uint16_t *dst = &ch[(z * s->shape[1] + y) * s->shape[2] + x];
                    *dst = f16_max(*dst, i3_ni_f64_to_f16(s->intensity != 1.0 ? v * s->intensity : v));
                }
    }
    return finish_prompt(s, &sc, st, run_prediction, t0, result);
}

i3rt_status i3_ni_add_box(i3_ni_session *s, const i3rt_box *box, int positive, int run_prediction,
                          i3rt_ni_result *result) {
    clear_result(result);
    I3_TRY(need_image(s, "add_bbox_interaction"));
    int dims_of_size_one = 0;
    for (int a = 0; a < 3; a++) {
        if (box->hi[a] <= box->lo[a])
            return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive add_bbox_interaction: the box has size %lld "
                           "along axis %d", (long long)(box->hi[a] - box->lo[a]), a);
        if (box->hi[a] <= 0 || box->lo[a] >= s->shape[a])
            return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive add_bbox_interaction: the box [%lld, %lld) "
                           "along axis %d is outside the image (size %lld)", (long long)box->lo[a], (long long)box->hi[a],
                           a, (long long)s->shape[a]);
        dims_of_size_one += box->hi[a] - box->lo[a] == 1;
    }
    if (!s->cap.supported[I3_NI_BBOX3D] && dims_of_size_one == 0)
        return i3_fail(s->ctx, I3RT_ERR_UNSUPPORTED, "nnInteractive add_bbox_interaction: the box has size %lld x %lld x "
                       "%lld, a 3D box, which this checkpoint does not support (one axis must have size 1)",
                       (long long)(box->hi[0] - box->lo[0]), (long long)(box->hi[1] - box->lo[1]),
                       (long long)(box->hi[2] - box->lo[2]));
    const i3_ni_kind kind = dims_of_size_one >= 1 && s->cap.supported[I3_NI_BBOX2D] ? I3_NI_BBOX2D : I3_NI_BBOX3D;
    I3_TRY(check_supported(s, kind));
    start_timing(s);
    const double t0 = i3_now_seconds();
    int64_t lo[3], hi[3];
    clip_box(box->lo, box->hi, s->shape, lo, hi); /* intersects the image: checked above */
    interaction_scope sc;
    interaction_begin(s, &sc);
    queue_box(s, lo, hi);
    i3rt_status st = prepare_intensity(s);
    const int c = positive ? s->cap.pos[kind] : s->cap.neg[kind];
    if (st == I3RT_OK) st = record_interactions(s, c, lo, hi);
    if (st == I3RT_OK) {
        /* assigned, not max: a box replaces what was in its slab */
        const uint16_t v = i3_ni_f64_to_f16(s->intensity);
        uint16_t *ch = channel_ptr(s, c);
        for (int64_t z = lo[0]; z < hi[0]; z++)
            for (int64_t y = lo[1]; y < hi[1]; y++)
                for (int64_t x = lo[2]; x < hi[2]; x++) ch[(z * s->shape[1] + y) * s->shape[2] + x] = v;
    }
    return finish_prompt(s, &sc, st, run_prediction, t0, result);
}

/* The nonzero box of a dense mask of shape n (false if empty). */
static bool mask_bbox(const uint8_t *mask, const int64_t n[3], int64_t lo[3], int64_t hi[3]) {
    for (int a = 0; a < 3; a++) lo[a] = n[a], hi[a] = 0;
    for (int64_t z = 0; z < n[0]; z++)
        for (int64_t y = 0; y < n[1]; y++) {
            const uint8_t *row = mask + (z * n[1] + y) * n[2];
            int64_t x0 = -1, x1 = -1;
            for (int64_t x = 0; x < n[2]; x++)
                if (row[x]) {
                    if (x0 < 0) x0 = x;
                    x1 = x;
                }
            if (x0 < 0) continue;
            if (z < lo[0]) lo[0] = z;
            if (z + 1 > hi[0]) hi[0] = z + 1;
            if (y < lo[1]) lo[1] = y;
            if (y + 1 > hi[1]) hi[1] = y + 1;
            if (x0 < lo[2]) lo[2] = x0;
            if (x1 + 1 > hi[2]) hi[2] = x1 + 1;
        }
    return hi[0] > 0;
}

i3rt_status i3_ni_add_mask(i3_ni_session *s, i3_ni_kind kind, const uint8_t *mask, const i3rt_box *region,
                           int positive, int run_prediction, i3rt_ni_result *result) {
    clear_result(result);
    const char *what = kind == I3_NI_LASSO ? "add_lasso_interaction" : "add_scribble_interaction";
    I3_TRY(need_image(s, what));
    I3_TRY(check_supported(s, kind));
    int64_t rlo[3] = {0, 0, 0}, rhi[3], n[3];
    memcpy(rhi, s->shape, sizeof rhi);
    if (region) {
        memcpy(rlo, region->lo, sizeof rlo);
        memcpy(rhi, region->hi, sizeof rhi);
    }
    for (int a = 0; a < 3; a++) {
        if (rhi[a] <= rlo[a])
            return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive %s: interaction_bbox has size %lld along axis "
                           "%d", what, (long long)(rhi[a] - rlo[a]), a);
        if (rlo[a] < 0 || rhi[a] > s->shape[a])
            return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive %s: interaction_bbox [%lld, %lld) along axis %d "
                           "exceeds the image (size %lld)", what, (long long)rlo[a], (long long)rhi[a], a,
                           (long long)s->shape[a]);
        n[a] = rhi[a] - rlo[a];
    }
    start_timing(s);
    const double t0 = i3_now_seconds();
    interaction_scope sc;
    interaction_begin(s, &sc);
    int64_t mlo[3], mhi[3];
    const bool nonempty = mask_bbox(mask, n, mlo, mhi);
    if (nonempty) {
        int64_t glo[3], ghi[3];
        for (int a = 0; a < 3; a++) glo[a] = mlo[a] + rlo[a], ghi[a] = mhi[a] + rlo[a];
        queue_box(s, glo, ghi);
    }
    i3rt_status st = prepare_intensity(s);
    const int c = positive ? s->cap.pos[kind] : s->cap.neg[kind];
    if (st == I3RT_OK && nonempty) {
        /* max with a zero voxel changes nothing: only the mask's nonzero box is recorded and written */
        int64_t glo[3], ghi[3];
        for (int a = 0; a < 3; a++) glo[a] = mlo[a] + rlo[a], ghi[a] = mhi[a] + rlo[a];
        st = record_interactions(s, c, glo, ghi);
        /* numpy: mask.astype(float16) * float16(intensity), each product rounded to fp16 */
        const float intensity_h = i3_f16_to_f32(i3_ni_f64_to_f16(s->intensity));
        uint16_t values[256];
        for (int v = 0; v < 256; v++) values[v] = i3_f32_to_f16((float)v * intensity_h);
        uint16_t *ch = channel_ptr(s, c);
        for (int64_t z = mlo[0]; z < mhi[0] && st == I3RT_OK; z++)
            for (int64_t y = mlo[1]; y < mhi[1]; y++) {
                const uint8_t *m = mask + (z * n[1] + y) * n[2];
                uint16_t *dst = ch + ((z + rlo[0]) * s->shape[1] + y + rlo[1]) * s->shape[2] + rlo[2];
                for (int64_t x = mlo[2]; x < mhi[2]; x++)
                    if (m[x]) dst[x] = f16_max(dst[x], values[m[x]]);
            }
    }
    return finish_prompt(s, &sc, st, run_prediction, t0, result);
}

i3rt_status i3_ni_add_initial_seg(i3_ni_session *s, const uint8_t *mask, int run_prediction, i3rt_ni_result *result) {
    clear_result(result);
    I3_TRY(need_image(s, "add_initial_seg_interaction"));
    if (!s->cap.supports_initial_label && !s->override_capability_checks)
        return i3_fail(s->ctx, I3RT_ERR_UNSUPPORTED, "nnInteractive: interaction 'initial_label' is not supported by this "
                       "checkpoint's capability metadata (%s; override_capability_checks runs it anyway)", s->model_dir);
    start_timing(s);
    const double t0 = i3_now_seconds();
    interaction_scope sc;
    interaction_begin(s, &sc);
    i3rt_status st = I3RT_OK;
    /* the whole state is replaced: the channels that may be nonzero and the target buffer are saved */
    for (int c = 0; c < s->cap.n_channels && st == I3RT_OK; c++)
        if (s->dirty & (1u << c)) st = record_whole_channel(s, c);
    const int64_t zero[3] = {0, 0, 0};
    if (st == I3RT_OK) st = record_target(s, zero, s->shape);
    if (st == I3RT_OK) {
        reset_state(s); /* keeps the undo log this prompt is recorded in */
        if (s->target) memcpy(s->target, mask, (size_t)s->n_voxels);
        st = record_channel_overwrite(s, s->cap.prev_seg);
    }
    if (st == I3RT_OK) {
        uint16_t *ch = channel_ptr(s, s->cap.prev_seg);
#pragma omp parallel for schedule(static) num_threads(s->ctx->n_threads) if (s->n_voxels >= I3_PARALLEL_MIN_VALUES)
        for (int64_t i = 0; i < s->n_voxels; i++) ch[i] = mask[i] ? i3_f32_to_f16((float)mask[i]) : 0;
    }
    s->timing.encode = i3_now_seconds() - t0;
    if (st == I3RT_OK && run_prediction) {
        int64_t lo[3], hi[3];
        if (mask_bbox(mask, s->shape, lo, hi)) queue_box(s, lo, hi);
        st = predict_queued(s, 1, result);
    }
    st = interaction_end(s, &sc, st);
    s->timing.total = i3_now_seconds() - t0;
    return st;
}

/* ---- prediction ------------------------------------------------------------------------------------ */

static ni_volume volume_view(const i3_ni_session *s) {
    ni_volume v;
    memset(&v, 0, sizeof v);
    v.image = s->image;
    v.interactions = s->interactions;
    memcpy(v.shape, s->shape, sizeof v.shape);
    v.n_channels = s->cap.n_channels;
    v.prev_seg_channel = s->cap.prev_seg;
    v.nonzero_channels = s->dirty;
    for (int k = 0; k < I3_NI_N_KINDS; k++)
        if ((k == I3_NI_POINTS || k == I3_NI_SCRIBBLE) && s->cap.supported[k])
            v.dilation_channels |= 1u << s->cap.pos[k] | 1u << s->cap.neg[k];
    v.intensity = s->intensity;
    return v;
}

/* One network input (timed), a forward pass, pred = argmax (the first class on ties, as torch.argmax). */
static i3rt_status run_patch(i3_ni_session *s, const ni_volume *v, const int64_t center[3], double zoom,
                             uint16_t *prev_pred, i3rt_box *box) {
    double t = i3_now_seconds();
    I3_TRY(ni_build_network_input(s->ctx, v, s->patch, center, zoom, s->net_input, prev_pred, box, s->ctx->n_threads));
    s->timing.network_input += i3_now_seconds() - t;
    t = i3_now_seconds();
    I3_TRY(i3rt_model_forward(s->model, s->net_input, s->patch, s->logits));
    const int64_t np = s->patch[0] * s->patch[1] * s->patch[2];
    for (int64_t i = 0; i < np; i++) s->pred[i] = s->logits[np + i] > s->logits[i];
    s->timing.network += i3_now_seconds() - t;
    s->timing.n_forwards++;
    return I3RT_OK;
}

/* src [src_box's shape] (uint8 0/1 or fp16 bits) into the prev_seg channel (fp16) and the target buffer
 * (0/1) over box clipped to the image (paste_tensor). */
static void paste(i3_ni_session *s, const void *src, int src_is_f16, const i3rt_box *src_box, const i3rt_box *box) {
    int64_t clo[3], chi[3];
    if (!clip_box(box->lo, box->hi, s->shape, clo, chi)) return;
    const int64_t n1 = src_box->hi[1] - src_box->lo[1], n2 = src_box->hi[2] - src_box->lo[2];
    uint16_t *ch = channel_ptr(s, s->cap.prev_seg);
    const uint16_t one = i3_f32_to_f16(1.0f);
#pragma omp parallel for collapse(2) schedule(static) num_threads(s->ctx->n_threads) \
    if (box_voxels(clo, chi) >= I3_PARALLEL_MIN_VALUES)
    for (int64_t z = clo[0]; z < chi[0]; z++)
        for (int64_t y = clo[1]; y < chi[1]; y++) {
            const int64_t in = ((z - src_box->lo[0]) * n1 + (y - src_box->lo[1])) * n2 - src_box->lo[2];
            const int64_t o = (z * s->shape[1] + y) * s->shape[2];
            for (int64_t x = clo[2]; x < chi[2]; x++) {
                if (src_is_f16) {
                    const uint16_t h = ((const uint16_t *)src)[in + x];
                    ch[o + x] = h;
                    s->target[o + x] = (uint8_t)h2f(h);
                } else {
                    const uint8_t p = ((const uint8_t *)src)[in + x];
                    ch[o + x] = p ? one : 0;
                    s->target[o + x] = p;
                }
            }
        }
}

/* Undo pre-images of the prev_seg channel and the target buffer over box clipped to the image. */
static i3rt_status record_paste(i3_ni_session *s, const i3rt_box *box) {
    int64_t clo[3], chi[3];
    if (!clip_box(box->lo, box->hi, s->shape, clo, chi)) return I3RT_OK;
    I3_TRY(record_interactions(s, s->cap.prev_seg, clo, chi));
    return record_target(s, clo, chi);
}

static void set_last_paste(i3_ni_session *s, const i3rt_box *box) {
    s->has_last_paste = 1;
    memcpy(s->last_paste_lo, box->lo, sizeof s->last_paste_lo);
    memcpy(s->last_paste_hi, box->hi, sizeof s->last_paste_hi);
}

/* _refine_coarse_with_local_cache: a prev_seg cache over the union of the tiles (the stored channel,
 * zero outside the image) receives the up-sampled coarse prediction over the in-image part of the
 * scaled box, then every tile's prediction in order (each tile sees the previous ones); only the tiles
 * are written back. */
static i3rt_status refine(i3_ni_session *s, const uint8_t *up, const i3rt_box *scaled_box, const i3rt_box *tiles,
                          int n_tiles) {
    i3rt_box hull = tiles[0];
    for (int i = 1; i < n_tiles; i++)
        for (int a = 0; a < 3; a++) {
            if (tiles[i].lo[a] < hull.lo[a]) hull.lo[a] = tiles[i].lo[a];
            if (tiles[i].hi[a] > hull.hi[a]) hull.hi[a] = tiles[i].hi[a];
        }
    int64_t n[3];
    for (int a = 0; a < 3; a++) n[a] = hull.hi[a] - hull.lo[a];
    double t = i3_now_seconds();
    uint16_t *cache = i3_calloc(s->ctx, (size_t)(n[0] * n[1] * n[2]), sizeof *cache, "the refinement cache");
    if (!cache) return I3RT_ERR_OUT_OF_MEMORY;
    int64_t clo[3], chi[3];
    const uint16_t *prev = channel_ptr(s, s->cap.prev_seg);
    if (clip_box(hull.lo, hull.hi, s->shape, clo, chi))
        for (int64_t z = clo[0]; z < chi[0]; z++)
            for (int64_t y = clo[1]; y < chi[1]; y++)
                memcpy(cache + ((z - hull.lo[0]) * n[1] + (y - hull.lo[1])) * n[2] + (clo[2] - hull.lo[2]),
                       prev + (z * s->shape[1] + y) * s->shape[2] + clo[2], (size_t)(chi[2] - clo[2]) * sizeof *cache);
    /* the coarse prediction, in-image part only (outside stays the zero padding the coarse pass saw) */
    const uint16_t one = i3_f32_to_f16(1.0f);
    const int64_t u1 = scaled_box->hi[1] - scaled_box->lo[1], u2 = scaled_box->hi[2] - scaled_box->lo[2];
    if (clip_box(scaled_box->lo, scaled_box->hi, s->shape, clo, chi))
        for (int64_t z = clo[0]; z < chi[0]; z++)
            for (int64_t y = clo[1]; y < chi[1]; y++)
                for (int64_t x = clo[2]; x < chi[2]; x++) {
                    if (z < hull.lo[0] || z >= hull.hi[0] || y < hull.lo[1] || y >= hull.hi[1] || x < hull.lo[2] ||
                        x >= hull.hi[2])
                        continue;
                    const uint8_t p = up[((z - scaled_box->lo[0]) * u1 + (y - scaled_box->lo[1])) * u2 + x - scaled_box->lo[2]];
                    cache[((z - hull.lo[0]) * n[1] + (y - hull.lo[1])) * n[2] + x - hull.lo[2]] = p ? one : 0;
                }
    s->timing.network_input += i3_now_seconds() - t;
    ni_volume v = volume_view(s);
    v.prev_seg = cache;
    v.prev_seg_box = hull;
    v.nonzero_channels |= 1u << s->cap.prev_seg;
    i3rt_status st = I3RT_OK;
    for (int i = 0; i < n_tiles && st == I3RT_OK; i++) {
        int64_t center[3];
        for (int a = 0; a < 3; a++) center[a] = tiles[i].lo[a] + s->patch[a] / 2;
        st = run_patch(s, &v, center, 1.0, NULL, NULL);
        if (st != I3RT_OK) break;
        t = i3_now_seconds();
        for (int64_t z = 0; z < s->patch[0]; z++)
            for (int64_t y = 0; y < s->patch[1]; y++) {
                const uint8_t *p = s->pred + (z * s->patch[1] + y) * s->patch[2];
                uint16_t *c = cache + ((tiles[i].lo[0] - hull.lo[0] + z) * n[1] + tiles[i].lo[1] - hull.lo[1] + y) * n[2] +
                              tiles[i].lo[2] - hull.lo[2];
                for (int64_t x = 0; x < s->patch[2]; x++) c[x] = p[x] ? one : 0;
            }
        s->timing.paste += i3_now_seconds() - t;
    }
    /* commit the tiles only: one pre-image of the hull covers all of them */
    t = i3_now_seconds();
    if (st == I3RT_OK) st = record_paste(s, &hull);
    if (st == I3RT_OK) {
        for (int i = 0; i < n_tiles; i++) paste(s, cache, 1, &hull, &tiles[i]);
        set_last_paste(s, &hull);
    }
    s->timing.paste += i3_now_seconds() - t;
    free(cache);
    return st;
}

static void set_result(const i3_ni_session *s, i3rt_ni_result *result) {
    if (!result) return;
    memset(result, 0, sizeof *result);
    result->ran_prediction = 1;
    int64_t clo[3], chi[3];
    if (s->has_last_paste && clip_box(s->last_paste_lo, s->last_paste_hi, s->shape, clo, chi)) {
        memcpy(result->changed.lo, clo, sizeof clo);
        memcpy(result->changed.hi, chi, sizeof chi);
    }
}

/* _predict of the last queued prompt: at its zoom; AutoZoom while the prediction changes at the patch
 * border (x 1.5 up to 4); at zoom 1 the patch is pasted, otherwise the up-sampled coarse result is
 * refined in full-resolution tiles. */
static i3rt_status predict_queued(i3_ni_session *s, int force_full_refine, i3rt_ni_result *result) {
    clear_result(result);
    if (!s->target)
        return i3_fail(s->ctx, I3RT_ERR_INVALID_ARGUMENT, "nnInteractive predict: no target buffer (call "
                       "i3rt_ni_set_target_buffer after set_image)");
    if (s->queue.n == 0) return I3RT_OK; /* nothing queued: nothing to do */
    const double t0 = i3_now_seconds();
    double zoom = s->queue.zoom < I3_NI_MAX_ZOOM ? s->queue.zoom : I3_NI_MAX_ZOOM;
    const ni_volume v = volume_view(s);
    i3rt_box box;
    I3_TRY(run_patch(s, &v, s->queue.center, zoom, s->prev_pred, &box));
    bool has_change = ni_border_changed(s->pred, s->prev_pred, s->patch);
    while (has_change && s->do_autozoom && zoom < I3_NI_MAX_ZOOM) {
        zoom = zoom * I3_NI_ZOOM_GROWTH < I3_NI_MAX_ZOOM ? zoom * I3_NI_ZOOM_GROWTH : I3_NI_MAX_ZOOM;
        I3_TRY(run_patch(s, &v, s->queue.center, zoom, s->prev_pred, &box));
        has_change = ni_border_changed(s->pred, s->prev_pred, s->patch);
    }
    s->timing.zoom = zoom;
    i3rt_status st = I3RT_OK;
    if (zoom == 1) {
        const double t = i3_now_seconds();
        st = record_paste(s, &box);
        if (st == I3RT_OK) {
            paste(s, s->pred, 0, &box, &box);
            set_last_paste(s, &box);
        }
        s->timing.paste += i3_now_seconds() - t;
    } else {
        int64_t scaled[3];
        for (int a = 0; a < 3; a++) scaled[a] = box.hi[a] - box.lo[a];
        double t = i3_now_seconds();
        uint8_t *up = i3_malloc(s->ctx, (size_t)(scaled[0] * scaled[1] * scaled[2]), "the up-sampled prediction");
        if (!up) return I3RT_ERR_OUT_OF_MEMORY;
        ni_upsample_coarse(s->pred, s->patch, scaled, up, s->ctx->n_threads);
        i3rt_box *tiles = NULL;
        int n_tiles = 0;
        st = ni_plan_refinement(s->ctx, up, &box, channel_ptr(s, s->cap.prev_seg), s->shape, s->patch, s->queue.center,
                                force_full_refine, &s->rng, &tiles, &n_tiles, s->ctx->n_threads);
        s->timing.network_input += i3_now_seconds() - t;
        if (st == I3RT_OK && n_tiles > 0) st = refine(s, up, &box, tiles, n_tiles);
        free(tiles);
        free(up);
    }
    if (st != I3RT_OK) return st;
    memset(&s->queue, 0, sizeof s->queue);
    set_result(s, result);
    s->timing.total = i3_now_seconds() - t0;
    return I3RT_OK;
}

i3rt_status i3_ni_predict(i3_ni_session *s, int force_full_refine, i3rt_ni_result *result) {
    clear_result(result);
    I3_TRY(need_image(s, "predict"));
    start_timing(s);
    return predict_queued(s, force_full_refine, result);
}
