/* nnU-Net v2's postprocessing (postprocess.h). */
#include "postprocess.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PP_FUNCTION "remove_all_but_largest_component_from_segmentation"

/* Every label in a label, a list of labels or a list of regions (lists), into step->labels. */
static bool collect_labels(const cJSON *v, i3_pp_step *step) {
    if (cJSON_IsArray(v)) {
        for (const cJSON *e = v->child; e; e = e->next)
            if (!collect_labels(e, step)) return false;
        return true;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != (int)v->valuedouble || step->n_labels == I3_MAX_PP_LABELS) return false;
    step->labels[step->n_labels++] = v->valueint;
    return true;
}

i3rt_status i3_postprocessing_read(i3_ctx *ctx, const char *path, i3_postprocessing *out) {
    memset(out, 0, sizeof *out);
    char *text = i3_read_text(path);
    if (!text) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot be read", path);
    cJSON *json = cJSON_Parse(text);
    free(text);
    if (!json) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: not valid JSON", path);
    const cJSON *fns = cJSON_GetObjectItemCaseSensitive(json, "postprocessing_fns");
    const cJSON *kwargs = cJSON_GetObjectItemCaseSensitive(json, "postprocessing_kwargs");
    i3rt_status st = I3RT_OK;
    if (!cJSON_IsArray(fns) || !cJSON_IsArray(kwargs) || cJSON_GetArraySize(fns) != cJSON_GetArraySize(kwargs))
        st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: needs postprocessing_fns and postprocessing_kwargs, lists of one length "
                     "(nnU-Net's postprocessing.json)", path);
    else if (cJSON_GetArraySize(fns) > I3_MAX_PP_STEPS)
        st = i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: more than %d postprocessing steps", path, I3_MAX_PP_STEPS);
    const cJSON *fn = st == I3RT_OK ? fns->child : NULL, *kw = st == I3RT_OK ? kwargs->child : NULL;
    for (; fn && kw && st == I3RT_OK; fn = fn->next, kw = kw->next) {
        i3_pp_step *step = &out->steps[out->n_steps];
        if (!cJSON_IsString(fn) || strcmp(fn->valuestring, PP_FUNCTION) != 0) {
            st = i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: step %d is %s (i3rt implements %s)", path, out->n_steps + 1,
                         cJSON_IsString(fn) ? fn->valuestring : "not a function name", PP_FUNCTION);
            break;
        }
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(kw, "labels_or_regions");
        const cJSON *background = cJSON_GetObjectItemCaseSensitive(kw, "background_label");
        if (!labels || !collect_labels(labels, step) || step->n_labels == 0 ||
            (background && (!cJSON_IsNumber(background) || background->valuedouble != (int)background->valuedouble)))
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: step %d: labels_or_regions must be labels (or lists of them, at most "
                         "%d) and background_label a label", path, out->n_steps + 1, I3_MAX_PP_LABELS);
        step->background = background ? background->valueint : 0;
        out->n_steps++;
    }
    cJSON_Delete(json);
    return st;
}

i3rt_status i3_keep_largest_component(i3_ctx *ctx, int32_t *labels, const int64_t shape[3], const i3_pp_step *step) {
    const int64_t d = shape[0], h = shape[1], w = shape[2], n = d * h * w;
    if (n > INT32_MAX)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "postprocessing: %lld voxels (at most 2^31 - 1)", (long long)n);
    /* component[v]: 0 outside the mask, -1 inside and not yet reached, else its component (1, 2, ...); the
     * breadth-first queue of voxel indices (8 bytes per voxel in all) */
    int32_t *component = i3_malloc(ctx, (size_t)n * sizeof *component, "the connected components");
    int32_t *queue = component ? i3_malloc(ctx, (size_t)n * sizeof *queue, "the component search") : NULL;
    int64_t *sizes = NULL, n_components = 0, capacity = 0;
    if (!queue) {
        free(component);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    for (int64_t v = 0; v < n; v++) {
        bool in = false;
        for (int i = 0; i < step->n_labels && !in; i++) in = labels[v] == step->labels[i];
        component[v] = in ? -1 : 0;
    }
    i3rt_status st = I3RT_OK;
    for (int64_t seed = 0; seed < n && st == I3RT_OK; seed++) {
        if (component[seed] != -1) continue;
        if (n_components == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            int64_t *grown = realloc(sizes, (size_t)capacity * sizeof *sizes);
            if (!grown) {
                st = i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "out of memory for the component sizes");
                break;
            }
            sizes = grown;
        }
        const int32_t id = (int32_t)++n_components;
        int64_t head = 0, tail = 0;
        component[seed] = id;
        queue[tail++] = (int32_t)seed;
        while (head < tail) { /* breadth first over the 26 neighbours */
            const int64_t v = queue[head++], z = v / (h * w), y = v / w % h, x = v % w;
            for (int64_t dz = z > 0 ? -1 : 0; dz <= (z < d - 1 ? 1 : 0); dz++)
                for (int64_t dy = y > 0 ? -1 : 0; dy <= (y < h - 1 ? 1 : 0); dy++)
                    for (int64_t dx = x > 0 ? -1 : 0; dx <= (x < w - 1 ? 1 : 0); dx++) {
                        const int64_t u = v + (dz * h + dy) * w + dx;
                        if (component[u] == -1) {
                            component[u] = id;
                            queue[tail++] = (int32_t)u;
                        }
                    }
        }
        sizes[id - 1] = tail;
    }
    int64_t largest = 0;
    for (int64_t c = 0; c < n_components; c++) largest = sizes[c] > largest ? sizes[c] : largest;
    for (int64_t v = 0; v < n && st == I3RT_OK; v++)
        if (component[v] > 0 && sizes[component[v] - 1] != largest) labels[v] = step->background;
    free(component);
    free(queue);
    free(sizes);
    return st;
}

i3rt_status i3_postprocess(i3_ctx *ctx, int32_t *labels, const int64_t shape[3], const i3_postprocessing *pp) {
    for (int s = 0; s < pp->n_steps; s++) I3_TRY(i3_keep_largest_component(ctx, labels, shape, &pp->steps[s]));
    return I3RT_OK;
}
