/* nnU-Net v2 whole-case prediction (see predict.h): the model folder's plans, then one case step by
 * step as nnUNetPredictor runs it. */
#include "predict.h"
#include "ops.h"
#include "weights.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

struct i3_predictor {
    i3_ctx *ctx;
    i3_predictor_info info;
    i3rt_model *models[I3_MAX_FOLDS];
    char dir[1024];
};

/* ---- the model folder ------------------------------------------------------------------------------ */

typedef struct {
    i3_ctx *ctx;
    const char *file; /* named in every error */
} parse_ctx;

static i3rt_status bad(const parse_ctx *pc, const char *what) {
    return i3_fail(pc->ctx, I3RT_ERR_FORMAT, "%s: metadata %s", pc->file, what);
}

static i3rt_status get_ints(const parse_ctx *pc, const cJSON *arr, const char *name, int min_n, int max_n, int64_t *out,
                            int *n) {
    if (!cJSON_IsArray(arr)) return i3_fail(pc->ctx, I3RT_ERR_FORMAT, "%s: metadata %s is not a list", pc->file, name);
    *n = cJSON_GetArraySize(arr);
    if (*n < min_n || *n > max_n)
        return i3_fail(pc->ctx, I3RT_ERR_FORMAT, "%s: metadata %s has %d entries (%d..%d expected)", pc->file, name, *n,
                       min_n, max_n);
    int i = 0;
    for (const cJSON *v = arr->child; v; v = v->next, i++) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
            return i3_fail(pc->ctx, I3RT_ERR_FORMAT, "%s: metadata %s[%d] is not an integer", pc->file, name, i);
        out[i] = (int64_t)v->valuedouble;
    }
    return I3RT_OK;
}

static i3rt_status get_number(const parse_ctx *pc, const cJSON *obj, const char *key, const char *where, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v))
        return i3_fail(pc->ctx, I3RT_ERR_FORMAT, "%s: metadata %s.%s is missing or not a number", pc->file, where, key);
    *out = v->valuedouble;
    return I3RT_OK;
}

/* PlansManager._internal_resolve_configuration_inheritance: the parent's keys updated by the child's. */
static cJSON *resolve_configuration(const cJSON *configs, const char *name, int depth) {
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(configs, name);
    if (!cJSON_IsObject(cfg) || depth > 8) return NULL;
    const cJSON *parent = cJSON_GetObjectItemCaseSensitive(cfg, "inherits_from");
    cJSON *merged = cJSON_IsString(parent) ? resolve_configuration(configs, parent->valuestring, depth + 1)
                                           : cJSON_CreateObject();
    if (!merged) return NULL;
    for (const cJSON *item = cfg->child; item; item = item->next) {
        cJSON *copy = cJSON_Duplicate(item, 1);
        if (cJSON_HasObjectItem(merged, item->string)) cJSON_ReplaceItemInObjectCaseSensitive(merged, item->string, copy);
        else cJSON_AddItemToObject(merged, item->string, copy);
    }
    return merged;
}

static i3rt_status parse_resampling(const parse_ctx *pc, const cJSON *cfg, const char *fn_key, const char *kw_key,
                                    bool seg, i3_resample_params *out) {
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(cfg, fn_key);
    if (!cJSON_IsString(fn)) return i3_fail(pc->ctx, I3RT_ERR_FORMAT, "%s: metadata plans: %s is missing", pc->file, fn_key);
    if (strcmp(fn->valuestring, "resample_data_or_seg_to_shape") != 0)
        return i3_fail(pc->ctx, I3RT_ERR_UNSUPPORTED,
                       "%s: plans: %s is %s (i3rt implements resample_data_or_seg_to_shape)", pc->file, fn_key,
                       fn->valuestring);
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(cfg, kw_key);
    if (!cJSON_IsObject(kw)) return i3_fail(pc->ctx, I3RT_ERR_FORMAT, "%s: metadata plans: %s is missing", pc->file, kw_key);
    double order = 3, order_z = 0;
    I3_TRY(get_number(pc, kw, "order", kw_key, &order));
    if (cJSON_HasObjectItem(kw, "order_z")) I3_TRY(get_number(pc, kw, "order_z", kw_key, &order_z));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(kw, "is_seg")) != seg)
        return i3_fail(pc->ctx, I3RT_ERR_UNSUPPORTED, "%s: plans: %s.is_seg is %s", pc->file, kw_key,
                       seg ? "not true" : "true");
    const cJSON *force = cJSON_GetObjectItemCaseSensitive(kw, "force_separate_z");
    out->order = (int)order;
    out->order_z = (int)order_z;
    out->force_separate_z = cJSON_IsTrue(force) ? 1 : cJSON_IsFalse(force) ? 0 : -1;
    if (seg ? out->order != 1 || out->order_z != 0
            : (out->order != 1 && out->order != 3) || (out->order_z != 0 && out->order_z != 1))
        return i3_fail(pc->ctx, I3RT_ERR_UNSUPPORTED, "%s: plans: %s: order %d, order_z %d (i3rt implements %s)", pc->file,
                       kw_key, out->order, out->order_z,
                       seg ? "order 1, order_z 0 for segmentations" : "order 1 or 3, order_z 0 or 1");
    return I3RT_OK;
}

/* dataset.json's labels as nnunetv2's LabelManager reads them: the network's outputs (one per label, or,
 * region-based when a label is a list of several, one per region with regions_class_order), and the
 * foreground labels (all label values but 0 and the ignore label's, ascending) a cascade's input takes. */
static i3rt_status parse_labels(const parse_ctx *pc, const cJSON *dataset, i3_predictor_info *info) {
    enum { MAX_LABEL = 32767 };
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(dataset, "labels");
    if (!cJSON_IsObject(labels)) return bad(pc, "dataset: labels missing");
    bool regions = false;
    for (const cJSON *l = labels->child; l; l = l->next) regions |= cJSON_IsArray(l) && cJSON_GetArraySize(l) > 1;
    uint8_t *seen = i3_calloc(pc->ctx, MAX_LABEL + 1, 1, "the label table");
    if (!seen) return I3RT_ERR_OUT_OF_MEMORY;
    i3rt_status st = I3RT_OK;
    int entries = 0; /* region-based: the regions that are not background */
    for (const cJSON *l = labels->child; l && st == I3RT_OK; l = l->next) {
        const bool ignore = strcmp(l->string, "ignore") == 0;
        bool background = true;
        const cJSON *v = cJSON_IsArray(l) ? l->child : l;
        if (cJSON_IsArray(l) && !v) st = bad(pc, "dataset: a label is an empty list");
        for (; v && st == I3RT_OK; v = cJSON_IsArray(l) ? v->next : NULL) {
            if (!cJSON_IsNumber(v) || v->valuedouble != (int)v->valuedouble || v->valuedouble < 0 ||
                v->valuedouble > MAX_LABEL)
                st = bad(pc, "dataset: a label value is not an integer in 0..32767");
            else if (!ignore)
                seen[v->valueint] = 1, background &= v->valueint == 0;
        }
        entries += !ignore && !background;
    }
    info->n_regions = 0;
    info->num_classes = info->n_foreground = 0;
    for (int v = 0; v <= MAX_LABEL && st == I3RT_OK; v++) {
        if (!seen[v]) continue;
        if (info->num_classes++ >= I3_MAX_CLASSES)
            st = i3_fail(pc->ctx, I3RT_ERR_UNSUPPORTED, "%s: dataset: more than %d labels", pc->file, I3_MAX_CLASSES);
        else if (v != 0)
            info->foreground[info->n_foreground++] = v;
    }
    free(seen);
    if (st != I3RT_OK || !regions) return st;
    /* region-based: one sigmoid output per region, painted in regions_class_order */
    const cJSON *order = cJSON_GetObjectItemCaseSensitive(dataset, "regions_class_order");
    if (!cJSON_IsArray(order) || cJSON_GetArraySize(order) != entries || entries > I3_MAX_CLASSES)
        return i3_fail(pc->ctx, I3RT_ERR_FORMAT, "%s: dataset: region-based labels need regions_class_order with one "
                       "label per region (%d)", pc->file, entries);
    int64_t values[I3_MAX_CLASSES];
    int n = 0;
    I3_TRY(get_ints(pc, order, "regions_class_order", entries, entries, values, &n));
    for (int i = 0; i < n; i++) {
        if (values[i] < 0 || values[i] > MAX_LABEL) return bad(pc, "dataset: regions_class_order has a label outside 0..32767");
        info->region_class_order[i] = (int)values[i];
    }
    info->n_regions = info->num_classes = entries;
    return I3RT_OK;
}

/* Reads plans, dataset.json, configuration and mirror axes of one fold file into info. */
static i3rt_status parse_fold_metadata(i3_ctx *ctx, const char *file, const i3_weights *w, i3_predictor_info *info) {
    const parse_ctx pc = {ctx, file};
    const char *plans_text = i3_weights_metadata(w, "plans"), *dataset_text = i3_weights_metadata(w, "dataset");
    const char *cfg_name = i3_weights_metadata(w, "configuration"), *mirror_text = i3_weights_metadata(w, "mirror_axes");
    if (!plans_text || !dataset_text || !cfg_name)
        return i3_fail(ctx, I3RT_ERR_FORMAT,
                       "%s: no plans/dataset/configuration metadata: not an nnU-Net model (convert it with "
                       "tools/convert_pt/convert_nnunet.py)", file);
    cJSON *plans = cJSON_Parse(plans_text), *dataset = cJSON_Parse(dataset_text);
    cJSON *mirror = mirror_text ? cJSON_Parse(mirror_text) : NULL, *cfg = NULL;
    i3rt_status st = I3RT_OK;
    if (!plans) st = bad(&pc, "\"plans\" is not valid JSON");
    else if (!dataset) st = bad(&pc, "\"dataset\" is not valid JSON");
    int64_t v[8];
    int n = 0;
    if (st == I3RT_OK) {
        snprintf(info->configuration, sizeof info->configuration, "%s", cfg_name);
        const cJSON *rw = cJSON_GetObjectItemCaseSensitive(plans, "image_reader_writer");
        if (cJSON_IsString(rw) && strcmp(rw->valuestring, "SimpleITKIO") != 0 && strcmp(rw->valuestring, "NibabelIO") != 0)
            st = i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: plans: image_reader_writer %s (i3rt reads NIfTI as SimpleITKIO and "
                         "NibabelIO do)", file, rw->valuestring);
    }
    for (int t = 0; t < 2 && st == I3RT_OK; t++) {
        const char *key = t ? "transpose_backward" : "transpose_forward";
        st = get_ints(&pc, cJSON_GetObjectItemCaseSensitive(plans, key), key, 3, 3, v, &n);
        int seen = 0;
        for (int a = 0; a < 3 && st == I3RT_OK; a++) {
            if (v[a] < 0 || v[a] > 2 || (seen & (1 << v[a]))) st = bad(&pc, "plans: transpose is not a permutation of 0, 1, 2");
            else seen |= 1 << v[a];
            (t ? info->transpose_backward : info->transpose_forward)[a] = (int)v[a];
        }
    }
    if (st == I3RT_OK) {
        cfg = resolve_configuration(cJSON_GetObjectItemCaseSensitive(plans, "configurations"), cfg_name, 0);
        if (!cfg) st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: plans have no configuration %s", file, cfg_name);
    }
    info->previous_stage[0] = '\0';
    const cJSON *previous = st == I3RT_OK ? cJSON_GetObjectItemCaseSensitive(cfg, "previous_stage") : NULL;
    if (previous && !cJSON_IsString(previous)) st = bad(&pc, "plans: previous_stage is not a configuration name");
    else if (previous) snprintf(info->previous_stage, sizeof info->previous_stage, "%s", previous->valuestring);
    if (st == I3RT_OK) st = get_ints(&pc, cJSON_GetObjectItemCaseSensitive(cfg, "patch_size"), "patch_size", 2, 3, v, &n);
    if (st == I3RT_OK) {
        info->dims = n;
        info->patch[0] = n == 2 ? 1 : v[0];
        info->patch[1] = v[n - 2];
        info->patch[2] = v[n - 1];
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(cfg, "spacing");
        if (!cJSON_IsArray(sp) || cJSON_GetArraySize(sp) != n) st = bad(&pc, "plans: spacing does not match patch_size");
        int i = 3 - n;
        info->spacing[0] = 0.0;
        for (const cJSON *e = sp ? sp->child : NULL; e && st == I3RT_OK; e = e->next, i++) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble > 0)) st = bad(&pc, "plans: spacing has a non-positive entry");
            else info->spacing[i] = e->valuedouble;
        }
    }
    /* channels and labels from dataset.json */
    if (st == I3RT_OK) {
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(dataset, "channel_names");
        if (!ch) ch = cJSON_GetObjectItemCaseSensitive(dataset, "modality");
        if (!cJSON_IsObject(ch)) st = bad(&pc, "dataset: channel_names missing");
        else {
            info->channels = cJSON_GetArraySize(ch);
            st = parse_labels(&pc, dataset, info);
        }
        if (st == I3RT_OK && (info->channels < 1 || info->channels > I3_MAX_CHANNELS))
            st = i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: dataset has %d channels (1..%d supported)", file, info->channels,
                         I3_MAX_CHANNELS);
        const cJSON *fe = cJSON_GetObjectItemCaseSensitive(dataset, "file_ending");
        snprintf(info->file_ending, sizeof info->file_ending, "%s", cJSON_IsString(fe) ? fe->valuestring : ".nii.gz");
    }
    /* normalization per channel */
    if (st == I3RT_OK) {
        const cJSON *schemes = cJSON_GetObjectItemCaseSensitive(cfg, "normalization_schemes");
        const cJSON *masks = cJSON_GetObjectItemCaseSensitive(cfg, "use_mask_for_norm");
        const cJSON *fg = cJSON_GetObjectItemCaseSensitive(plans, "foreground_intensity_properties_per_channel");
        if (!cJSON_IsArray(schemes) || cJSON_GetArraySize(schemes) != info->channels || !cJSON_IsArray(masks) ||
            cJSON_GetArraySize(masks) != info->channels)
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: plans: normalization_schemes/use_mask_for_norm need %d entries "
                         "(the dataset's channels)", file, info->channels);
        for (int c = 0; c < info->channels && st == I3RT_OK; c++) {
            const cJSON *s = cJSON_GetArrayItem(schemes, c);
            i3_norm_channel *nc = &info->norm[c];
            memset(nc, 0, sizeof *nc);
            if (!cJSON_IsString(s) || !i3_norm_scheme_parse(s->valuestring, &nc->scheme)) {
                st = i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: plans: normalization scheme of channel %d is %s", file, c,
                             cJSON_IsString(s) ? s->valuestring : "not a string");
                break;
            }
            nc->use_mask = cJSON_IsTrue(cJSON_GetArrayItem(masks, c));
            if (nc->scheme == I3_NORM_CT) {
                char key[16], where[96];
                snprintf(key, sizeof key, "%d", c);
                snprintf(where, sizeof where, "plans.foreground_intensity_properties_per_channel.%d", c);
                const cJSON *props = cJSON_GetObjectItemCaseSensitive(fg, key);
                st = get_number(&pc, props, "mean", where, &nc->mean);
                if (st == I3RT_OK) st = get_number(&pc, props, "std", where, &nc->std);
                if (st == I3RT_OK) st = get_number(&pc, props, "percentile_00_5", where, &nc->percentile_00_5);
                if (st == I3RT_OK) st = get_number(&pc, props, "percentile_99_5", where, &nc->percentile_99_5);
            }
        }
    }
    if (st == I3RT_OK)
        st = parse_resampling(&pc, cfg, "resampling_fn_data", "resampling_fn_data_kwargs", false, &info->resample_data);
    if (st == I3RT_OK)
        st = parse_resampling(&pc, cfg, "resampling_fn_probabilities", "resampling_fn_probabilities_kwargs", false,
                              &info->resample_probabilities);
    if (st == I3RT_OK && info->previous_stage[0])
        st = parse_resampling(&pc, cfg, "resampling_fn_seg", "resampling_fn_seg_kwargs", true, &info->resample_seg);
    if (st == I3RT_OK) {
        info->n_mirror_axes = 0;
        if (mirror && cJSON_IsArray(mirror)) {
            st = get_ints(&pc, mirror, "mirror_axes", 0, 3, v, &n);
            for (int i = 0; i < n && st == I3RT_OK; i++) {
                if (v[i] < 0 || v[i] >= info->dims) st = bad(&pc, "mirror_axes: an axis beyond the patch dimensions");
                info->mirror_axes[i] = (int)v[i];
            }
            info->n_mirror_axes = n;
        }
    }
    cJSON_Delete(cfg);
    cJSON_Delete(plans);
    cJSON_Delete(dataset);
    cJSON_Delete(mirror);
    return st;
}

/* The network's input: the image's channels, then a cascade stage's one-hot previous-stage labels. */
static int network_channels(const i3_predictor_info *info) {
    return info->channels + (info->previous_stage[0] ? info->n_foreground : 0);
}

static int compare_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* Every fold_K.safetensors in dir, K ascending. */
static i3rt_status find_folds(i3_ctx *ctx, const char *dir, int *folds, int *n) {
    DIR *d = opendir(dir);
    if (!d) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot open the model folder", dir);
    *n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        int k, used = 0;
        if (sscanf(e->d_name, "fold_%d.safetensors%n", &k, &used) == 1 && used == (int)strlen(e->d_name) && k >= 0 &&
            *n < I3_MAX_FOLDS)
            folds[(*n)++] = k;
    }
    closedir(d);
    if (*n == 0)
        return i3_fail(ctx, I3RT_ERR_IO, "%s: no fold_K.safetensors in the model folder (convert a trained nnU-Net model "
                       "folder with tools/convert_pt/convert_nnunet.py)", dir);
    qsort(folds, (size_t)*n, sizeof *folds, compare_int);
    return I3RT_OK;
}

i3rt_status i3_predictor_read_info(i3_ctx *ctx, const char *model_dir, i3_predictor_info *info) {
    if (!ctx || !model_dir || !info) return I3RT_ERR_INVALID_ARGUMENT;
    memset(info, 0, sizeof *info);
    I3_TRY(find_folds(ctx, model_dir, info->folds, &info->n_folds));
    char path[1200];
    snprintf(path, sizeof path, "%s/fold_%d.safetensors", model_dir, info->folds[0]);
    i3_weights *w = NULL;
    i3rt_status st = i3_weights_open(ctx, path, &w);
    if (st == I3RT_OK) st = parse_fold_metadata(ctx, path, w, info);
    i3_weights_free(w);
    return st;
}

i3rt_status i3_predictor_load(i3_ctx *ctx, const char *model_dir, const int *folds, int n_folds, i3_predictor **out) {
    if (!ctx || !model_dir || !out) return I3RT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (n_folds < 0 || n_folds > I3_MAX_FOLDS)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "between 1 and %d folds can be used, not %d", I3_MAX_FOLDS, n_folds);
    i3_predictor *p = i3_calloc(ctx, 1, sizeof *p, "the predictor");
    if (!p) return I3RT_ERR_OUT_OF_MEMORY;
    p->ctx = ctx;
    snprintf(p->dir, sizeof p->dir, "%s", model_dir);
    i3_predictor_info *info = &p->info;
    i3rt_status st = I3RT_OK;
    if (n_folds == 0) st = find_folds(ctx, model_dir, info->folds, &info->n_folds);
    else {
        memcpy(info->folds, folds, (size_t)n_folds * sizeof *folds);
        info->n_folds = n_folds;
    }
    for (int f = 0; f < info->n_folds && st == I3RT_OK; f++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/fold_%d.safetensors", model_dir, info->folds[f]);
        i3_weights *w = NULL;
        i3_predictor_info fi = *info;
        st = i3_weights_open(ctx, path, &w);
        if (st == I3RT_OK) st = parse_fold_metadata(ctx, path, w, f == 0 ? info : &fi);
        i3_weights_free(w);
        if (st == I3RT_OK && f > 0 &&
            (strcmp(fi.configuration, info->configuration) != 0 || memcmp(fi.patch, info->patch, sizeof fi.patch) != 0))
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: configuration %s differs from fold %d's %s", path, fi.configuration,
                         info->folds[0], info->configuration);
        if (st == I3RT_OK) st = i3rt_model_load(ctx, path, &p->models[f]);
        i3rt_model_info mi;
        if (st == I3RT_OK) st = i3rt_model_get_info(p->models[f], &mi);
        if (st == I3RT_OK && (mi.in_channels != network_channels(info) || mi.num_classes != info->num_classes))
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: the network has %d input channels and %d classes, dataset.json says "
                         "%d channels%s and %d labels", path, mi.in_channels, mi.num_classes, network_channels(info),
                         info->previous_stage[0] ? " (with the previous stage's one-hot labels)" : "", info->num_classes);
        if (st == I3RT_OK && mi.dims != info->dims)
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: a %dD network for a %dD configuration", path, mi.dims, info->dims);
    }
    if (st != I3RT_OK) {
        i3_predictor_free(p);
        return st;
    }
    *out = p;
    return I3RT_OK;
}

void i3_predictor_free(i3_predictor *p) {
    if (!p) return;
    for (int f = 0; f < I3_MAX_FOLDS; f++) i3rt_model_free(p->models[f]);
    free(p);
}

const i3_predictor_info *i3_predictor_get_info(const i3_predictor *p) { return p ? &p->info : NULL; }

void i3_predict_options_default(i3_predict_options *o) {
    memset(o, 0, sizeof *o);
    o->use_mirroring = 1;
    o->step_size = 0.5;
    o->accumulate = I3_ACCUMULATE_FP32;
}

/* ---- one case --------------------------------------------------------------------------------------- */

static double f16_round(double v) { return i3_f16_to_f32(i3_f32_to_f16((float)v)); }

/* What preprocessing keeps for the export. */
typedef struct {
    int64_t shape_t[3];              /* after transpose (= shape_before_cropping) */
    int64_t lo[3], hi[3];            /* bbox_used_for_cropping */
    int64_t cropped[3];              /* shape_after_cropping_and_before_resampling */
    int64_t shape[3];                /* after resampling: what the network sees */
    double spacing_t[3], target[3];  /* original (transposed) and configuration spacing */
} case_properties;

static i3rt_status check_input(i3_predictor *p, const i3_volume *image) {
    const i3_predictor_info *info = &p->info;
    if (image->channels != info->channels)
        return i3_fail(p->ctx, I3RT_ERR_SHAPE, "the case has %lld channel(s), the model (%s) needs %d",
                       (long long)image->channels, p->dir, info->channels);
    const int64_t n = image->channels * image->d * image->h * image->w;
    int64_t first = n; /* the first voxel that is not finite */
#pragma omp parallel for schedule(static) reduction(min : first) num_threads(p->ctx->n_threads)
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(image->data[i]) && i < first) first = i;
    if (first < n) {
        const int64_t s = image->d * image->h * image->w, c = first / s, v = first % s;
        return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT, "channel %lld voxel (x %lld, y %lld, z %lld) is %s",
                       (long long)c, (long long)(v % image->w), (long long)(v / image->w % image->h),
                       (long long)(v / (image->w * image->h)), isnan(image->data[first]) ? "NaN" : "infinite");
    }
    for (int a = 0; a < 3; a++)
        if (!(fabs(image->geometry.spacing[a]) > 0))
            return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT, "voxel spacing %g along axis %d is not positive",
                           image->geometry.spacing[a], a);
    return I3RT_OK;
}

/* A cascade stage needs the previous stage's labels, other configurations take none; labels are 0..32767. */
static i3rt_status check_previous_stage(i3_predictor *p, const i3_volume *image, const int32_t *labels) {
    const i3_predictor_info *info = &p->info;
    if (info->previous_stage[0] && !labels)
        return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT, "the model (%s) is the cascade stage %s after %s: it needs "
                       "that stage's segmentation of the case (--prev-stage-predictions)", p->dir, info->configuration,
                       info->previous_stage);
    if (!info->previous_stage[0] && labels)
        return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT, "the model (%s, configuration %s) is not a cascade stage: it "
                       "takes no previous stage's segmentation", p->dir, info->configuration);
    const int64_t n = image->d * image->h * image->w;
    for (int64_t i = 0; labels && i < n; i++)
        if (labels[i] < 0 || labels[i] > 32767)
            return i3_fail(p->ctx, I3RT_ERR_INVALID_ARGUMENT, "the previous stage's segmentation has label %d at voxel "
                           "(x %lld, y %lld, z %lld)", labels[i], (long long)(i % image->w),
                           (long long)(i / image->w % image->h), (long long)(i / (image->w * image->h)));
    return I3RT_OK;
}

/* The previous stage's labels of a cascade stage as run_case_npy takes them: transposed and cropped like the
 * image (floats hold the labels exactly), then -1 where a background voxel lies outside the nonzero mask
 * (crop_to_nonzero); the normalization's mask becomes seg >= 0: the nonzero mask and any labelled voxel. */
static i3rt_status previous_stage_cropped(i3_predictor *p, const i3_volume *image, const int32_t *labels,
                                          const case_properties *cp, uint8_t *cmask, int16_t *seg) {
    i3_ctx *ctx = p->ctx;
    const int *perm = p->info.transpose_forward;
    const int64_t in_shape[3] = {image->d, image->h, image->w};
    const int64_t n = in_shape[0] * in_shape[1] * in_shape[2];
    const int64_t nc = cp->cropped[0] * cp->cropped[1] * cp->cropped[2];
    float *f = i3_malloc(ctx, (size_t)n * sizeof *f, "the previous stage's labels");
    float *t = f ? i3_malloc(ctx, (size_t)n * sizeof *t, "the previous stage's labels") : NULL;
    float *c = t ? i3_malloc(ctx, (size_t)nc * sizeof *c, "the previous stage's labels") : NULL;
    if (!c) {
        free(f), free(t);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    for (int64_t i = 0; i < n; i++) f[i] = (float)labels[i];
    i3_transpose3(f, 1, in_shape, perm, t, NULL, ctx->n_threads);
    i3_crop(t, 1, cp->shape_t, cp->lo, cp->hi, c, ctx->n_threads);
    for (int64_t i = 0; i < nc; i++) {
        seg[i] = c[i] == 0.0f && !cmask[i] ? -1 : (int16_t)c[i];
        cmask[i] = seg[i] >= 0;
    }
    free(f), free(t), free(c);
    return I3RT_OK;
}

/* DefaultPreprocessor.run_case_npy, with a cascade stage's previous-stage labels appended one-hot. */
static i3rt_status preprocess(i3_predictor *p, const i3_volume *image, const int32_t *previous_stage, float **out,
                              case_properties *cp) {
    i3_ctx *ctx = p->ctx;
    const i3_predictor_info *info = &p->info;
    const int64_t C = image->channels, in_shape[3] = {image->d, image->h, image->w};
    /* nnU-Net's spacing is (z, y, x) = the NIfTI pixdims reversed, as SimpleITK reports them */
    const double spacing[3] = {fabs(image->geometry.spacing[2]), fabs(image->geometry.spacing[1]),
                               fabs(image->geometry.spacing[0])};
    *out = NULL;
    const int64_t n = in_shape[0] * in_shape[1] * in_shape[2];
    /* 1. transpose_forward (image and spacing); the identity reads the image itself */
    const int *perm = info->transpose_forward;
    float *transposed = NULL;
    const float *data = image->data;
    if (perm[0] != 0 || perm[1] != 1 || perm[2] != 2) {
        if (!(transposed = i3_malloc(ctx, (size_t)(C * n) * sizeof *transposed, "the transposed image")))
            return I3RT_ERR_OUT_OF_MEMORY;
        i3_transpose3(image->data, C, in_shape, perm, transposed, NULL, ctx->n_threads);
        data = transposed;
    }
    for (int a = 0; a < 3; a++) {
        cp->shape_t[a] = in_shape[perm[a]];
        cp->spacing_t[a] = spacing[perm[a]];
    }
    /* 2. crop to the nonzero box; the mask also restricts z-score statistics (use_mask_for_norm) */
    uint8_t *mask = i3_malloc(ctx, (size_t)n, "the nonzero mask");
    if (!mask) {
        free(transposed);
        return I3RT_ERR_OUT_OF_MEMORY;
    }
    i3rt_status st = i3_nonzero_mask(ctx, data, C, cp->shape_t, mask);
    i3_mask_bbox(mask, cp->shape_t, cp->lo, cp->hi);
    int64_t nc = 1;
    for (int a = 0; a < 3; a++) nc *= cp->cropped[a] = cp->hi[a] - cp->lo[a];
    float *cropped = st == I3RT_OK ? i3_malloc(ctx, (size_t)(C * nc) * sizeof *cropped, "the cropped image") : NULL;
    uint8_t *cmask = st == I3RT_OK ? i3_malloc(ctx, (size_t)nc, "the cropped mask") : NULL;
    if (st == I3RT_OK && (!cropped || !cmask)) st = I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK) {
        i3_crop(data, C, cp->shape_t, cp->lo, cp->hi, cropped, ctx->n_threads);
        for (int64_t z = 0; z < cp->cropped[0]; z++)
            for (int64_t y = 0; y < cp->cropped[1]; y++)
                memcpy(cmask + (z * cp->cropped[1] + y) * cp->cropped[2],
                       mask + ((cp->lo[0] + z) * cp->shape_t[1] + cp->lo[1] + y) * cp->shape_t[2] + cp->lo[2],
                       (size_t)cp->cropped[2]);
    }
    free(transposed);
    free(mask);
    int16_t *seg = st == I3RT_OK && previous_stage ? i3_malloc(ctx, (size_t)nc * sizeof *seg, "the cropped labels")
                                                   : NULL;
    if (st == I3RT_OK && previous_stage && !seg) st = I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK && seg) st = previous_stage_cropped(p, image, previous_stage, cp, cmask, seg);
    /* 3. target spacing (2D: the first axis keeps its spacing) and shape */
    memcpy(cp->target, info->spacing, sizeof cp->target);
    if (info->dims == 2) cp->target[0] = cp->spacing_t[0];
    i3_compute_new_shape(cp->cropped, cp->spacing_t, cp->target, cp->shape);
    for (int a = 0; a < 3 && st == I3RT_OK; a++)
        if (cp->shape[a] < 1 || cp->shape[a] > 65535)
            st = i3_fail(ctx, I3RT_ERR_SHAPE, "resampling axis %d of %lld voxels from spacing %g to %g gives %lld voxels", a,
                         (long long)cp->cropped[a], cp->spacing_t[a], cp->target[a], (long long)cp->shape[a]);
    /* 4. normalize each channel (before resampling, as nnU-Net does) */
    for (int64_t c = 0; c < C && st == I3RT_OK; c++)
        st = i3_normalize_channel(ctx, cropped + c * nc, nc, cmask, &info->norm[c], (int)c);
    free(cmask);
    /* 5. resample to the target spacing; the labels one-hot after the image (convert_labelmap_to_one_hot) */
    const int64_t nr = cp->shape[0] * cp->shape[1] * cp->shape[2], F = seg ? info->n_foreground : 0;
    float *res = st == I3RT_OK ? i3_malloc(ctx, (size_t)((C + F) * nr) * sizeof *res, "the resampled image") : NULL;
    int16_t *seg_res = st == I3RT_OK && seg ? i3_malloc(ctx, (size_t)nr * sizeof *seg_res, "the resampled labels") : NULL;
    if (st == I3RT_OK && (!res || (seg && !seg_res))) st = I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK)
        st = i3_resample(ctx, cropped, C, cp->cropped, cp->shape, cp->spacing_t, cp->target, &info->resample_data, res,
                         ctx->n_threads);
    if (st == I3RT_OK && seg)
        st = i3_resample_labels(ctx, seg, cp->cropped, cp->shape, cp->spacing_t, cp->target, &info->resample_seg,
                                seg_res, ctx->n_threads);
    for (int64_t k = 0; st == I3RT_OK && k < F; k++) {
        float *channel = res + (C + k) * nr;
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
        for (int64_t i = 0; i < nr; i++) channel[i] = seg_res[i] == info->foreground[k] ? 1.0f : 0.0f;
    }
    free(seg);
    free(seg_res);
    free(cropped);
    if (st != I3RT_OK) {
        free(res);
        return st;
    }
    *out = res;
    return I3RT_OK;
}

i3rt_status i3_predict_preprocess(i3_predictor *p, const i3_volume *image, float **out, int64_t out_shape[3],
                                  int64_t bbox_lo[3], int64_t bbox_hi[3]) {
    if (!p || !image || !out) return I3RT_ERR_INVALID_ARGUMENT;
    I3_TRY(check_input(p, image));
    case_properties cp;
    I3_TRY(preprocess(p, image, NULL, out, &cp));
    memcpy(out_shape, cp.shape, sizeof cp.shape);
    memcpy(bbox_lo, cp.lo, sizeof cp.lo);
    memcpy(bbox_hi, cp.hi, sizeof cp.hi);
    return I3RT_OK;
}

/* Sliding-window logits of every fold, averaged (predict_logits_from_preprocessed_data). */
static i3rt_status predict_logits(i3_predictor *p, const float *data, const case_properties *cp,
                                  const i3_predict_options *o, float **out) {
    const i3_predictor_info *info = &p->info;
    const int64_t K = info->num_classes, n = cp->shape[0] * cp->shape[1] * cp->shape[2];
    const int fp16 = o->accumulate == I3_ACCUMULATE_FP16;
    i3_sliding_window_params sw = {.dims = info->dims, .step_size = o->step_size, .accumulate = o->accumulate,
                                   .progress = o->progress, .progress_user = o->progress_user};
    memcpy(sw.patch, info->patch, sizeof sw.patch);
    if (o->use_mirroring) {
        sw.n_mirror_axes = info->n_mirror_axes;
        memcpy(sw.mirror_axes, info->mirror_axes, sizeof sw.mirror_axes);
    }
    const int64_t per_fold = i3_sliding_window_forwards(cp->shape, &sw);
    sw.progress_total = per_fold * info->n_folds;
    float *sum = i3_malloc(p->ctx, (size_t)(K * n) * sizeof *sum, "the logits");
    float *fold = info->n_folds > 1 ? i3_malloc(p->ctx, (size_t)(K * n) * sizeof *fold, "a fold's logits") : NULL;
    i3rt_status st = sum && (fold || info->n_folds == 1) ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    for (int f = 0; f < info->n_folds && st == I3RT_OK; f++) {
        sw.progress_offset = per_fold * f;
        st = i3_sliding_window_predict(p->ctx, p->models[f], data, network_channels(info), cp->shape, K, &sw,
                                       f ? fold : sum);
        if (st == I3RT_OK && f > 0) /* prediction += fold (fp16 + fp16 rounds to fp16 in nnunetv2) */
            for (int64_t i = 0; i < K * n; i++) sum[i] = fp16 ? (float)f16_round(sum[i] + fold[i]) : sum[i] + fold[i];
    }
    if (st == I3RT_OK && info->n_folds > 1)
        for (int64_t i = 0; i < K * n; i++) {
            const float v = sum[i] / (float)info->n_folds;
            sum[i] = fp16 ? (float)f16_round(v) : v;
        }
    free(fold);
    if (st != I3RT_OK) {
        free(sum);
        return st;
    }
    *out = sum;
    return I3RT_OK;
}

/* out = transpose_backward(box pasted into its place, `outside` around it) for 4-byte elements (int32 labels, float
 * probabilities, copied as bytes): one pass, no uncropped copy before the transpose. */
static void paste_transposed(const void *box, const void *outside, const case_properties *cp, const int perm[3],
                             void *out, int n_threads) {
    enum { SIZE = 4 };
    const int64_t *t = cp->shape_t, *c = cp->cropped;
    const int64_t os[3] = {t[perm[0]], t[perm[1]], t[perm[2]]}, nt = t[0] * t[1] * t[2];
    const int64_t out_stride[3] = {os[1] * os[2], os[2], 1};
    int64_t stride[3]; /* of each transposed axis in `out` */
    for (int a = 0; a < 3; a++) stride[perm[a]] = out_stride[a];
    unsigned char *o = out;
    const unsigned char *b = box;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t i = 0; i < nt; i++) memcpy(o + i * SIZE, outside, SIZE);
#pragma omp parallel for collapse(2) schedule(static) num_threads(n_threads)
    for (int64_t z = 0; z < c[0]; z++)
        for (int64_t y = 0; y < c[1]; y++) {
            unsigned char *dst = o + ((cp->lo[0] + z) * stride[0] + (cp->lo[1] + y) * stride[1] + cp->lo[2] * stride[2]) * SIZE;
            const unsigned char *src = b + (z * c[1] + y) * c[2] * SIZE;
            for (int64_t x = 0; x < c[2]; x++) memcpy(dst + x * stride[2] * SIZE, src + x * SIZE, SIZE);
        }
}

void i3_segmentation_from_probabilities(const i3_predictor_info *info, const float *probs, int64_t n, int32_t *seg,
                                        int n_threads) {
    if (!info->n_regions) { /* argmax, the lowest class of equal maxima (numpy's argmax) */
        i3_cpu_softmax_uncertainty(probs, 1, info->num_classes, n, NULL, NULL, NULL, seg, n_threads);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t v = 0; v < n; v++) {
        int32_t label = 0;
        for (int r = 0; r < info->n_regions; r++)
            if (probs[r * n + v] > 0.5f) label = info->region_class_order[r];
        seg[v] = label;
    }
}

/* convert_predicted_logits_to_segmentation_with_correct_shape. */
static i3rt_status export_case(i3_predictor *p, float *logits, const case_properties *cp, const i3_predict_options *o,
                               int32_t *labels, float *probabilities) {
    i3_ctx *ctx = p->ctx;
    const i3_predictor_info *info = &p->info;
    const int64_t K = info->num_classes, nc = cp->cropped[0] * cp->cropped[1] * cp->cropped[2];
    const int64_t nt = cp->shape_t[0] * cp->shape_t[1] * cp->shape_t[2];
    /* resample the logits to the cropped shape (from the configuration's spacing back to the image's) */
    float *res = i3_malloc(ctx, (size_t)(K * nc) * sizeof *res, "the resampled logits");
    if (!res) return I3RT_ERR_OUT_OF_MEMORY;
    i3rt_status st = i3_resample(ctx, logits, K, cp->shape, cp->cropped, cp->target, cp->spacing_t,
                                 &info->resample_probabilities, res, ctx->n_threads);
    if (st == I3RT_OK && o->accumulate == I3_ACCUMULATE_FP16) /* the resampled array keeps the fp16 dtype */
        for (int64_t i = 0; i < K * nc; i++) res[i] = (float)f16_round(res[i]);
    int32_t *seg = st == I3RT_OK ? i3_malloc(ctx, (size_t)nc * sizeof *seg, "the segmentation") : NULL;
    /* the probabilities: softmax into their own buffer; a region-based model's sigmoid in place of the logits */
    float *probs = st == I3RT_OK && probabilities && !info->n_regions
                       ? i3_malloc(ctx, (size_t)(K * nc) * sizeof *probs, "the probabilities")
                       : NULL;
    if (st == I3RT_OK && (!seg || (probabilities && !info->n_regions && !probs))) st = I3RT_ERR_OUT_OF_MEMORY;
    if (st == I3RT_OK && info->n_regions) { /* LabelManager.apply_inference_nonlin, then the regions */
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
        for (int64_t i = 0; i < K * nc; i++) res[i] = 1.0f / (1.0f + expf(-res[i]));
        i3_segmentation_from_probabilities(info, res, nc, seg, ctx->n_threads);
    } else if (st == I3RT_OK) {
        i3_cpu_softmax_uncertainty(res, 1, K, nc, probs, NULL, NULL, seg, ctx->n_threads);
    }
    if (st == I3RT_OK) {
        const float *probs_out = info->n_regions ? res : probs;
        const int32_t background = 0;
        paste_transposed(seg, &background, cp, info->transpose_backward, labels, ctx->n_threads);
        for (int64_t k = 0; probabilities && k < K; k++) {
            /* outside the box: certain background (revert_cropping_on_probabilities; regions: all 0) */
            const float outside = k == 0 && !info->n_regions ? 1.0f : 0.0f;
            paste_transposed(probs_out + k * nc, &outside, cp, info->transpose_backward, probabilities + k * nt,
                             ctx->n_threads);
        }
    }
    free(res);
    free(seg);
    free(probs);
    return st;
}

i3rt_status i3_predict_case(i3_predictor *p, const i3_volume *image, const i3_predict_options *o, int32_t *labels,
                            float *probabilities) {
    if (!p || !image || !o || !labels) return I3RT_ERR_INVALID_ARGUMENT;
    I3_TRY(check_input(p, image));
    I3_TRY(check_previous_stage(p, image, o->previous_stage));
    case_properties cp;
    float *data = NULL, *logits = NULL;
    const double t0 = i3_now_seconds();
    I3_TRY(preprocess(p, image, o->previous_stage, &data, &cp));
    const double t1 = i3_now_seconds();
    i3rt_status st = predict_logits(p, data, &cp, o, &logits);
    free(data);
    const double t2 = i3_now_seconds();
    if (st == I3RT_OK) st = export_case(p, logits, &cp, o, labels, probabilities);
    free(logits);
    if (o->times) {
        o->times->preprocess += t1 - t0;
        o->times->network += t2 - t1;
        o->times->export_ += i3_now_seconds() - t2;
    }
    return st;
}
