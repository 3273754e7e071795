/* `i3rt serve`: the HTTP protocol of nnInteractive's inference server (nnInteractive 2.6.0,
 * inference/server/app.py, inference/remote/_protocol.py), served by libmicrohttpd on i3rt sessions, so
 * that nnInteractiveRemoteInferenceSession (nninteractive-client) and the viewers built on it drive i3rt.
 *
 *   i3rt serve --model DIR [--host 127.0.0.1] [--port 1527] [--api-key KEY] [--max-sessions 3] ...
 *
 * Every endpoint of _protocol.py, answered as app.py answers it: JSON bodies, NNIA arrays
 * (runtime/nnia.h) with an X-Meta JSON header, bearer-token auth on everything but GET /healthz, leases
 * (cli/serve_leases.h) named by X-Lease-Token, and prediction responses carrying the changed region of the
 * target buffer (an NNIA array of target[bbox] and X-Meta {ran_prediction, bbox, dtype, shape}). Where
 * app.py answers misuse with a 500 or drops the connection (predict before set_image, a missing field),
 * i3rt answers 4xx with a {"detail": ...} message: 400 bad values, 401 auth, 404/405 unknown route, 410
 * unknown lease, 413 too large, 422 a body that is not a JSON object, 503 + Retry-After when full.
 *
 * Threads: libmicrohttpd runs one thread per connection, so heartbeats and /healthz are answered while
 * another client's prediction runs. A lease's lock serializes one client's requests; the network calls
 * (prompts, predict) of all sessions take one compute lock, as app.py runs them on one GPU thread. */
#include "serve.h"          /* cli/serve.h */
#include "common.h"         /* cli/common.h: cli_parse_device */
#include "serve_leases.h"   /* cli/serve_leases.h */
#include "nnia.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static const char *HELP =
    "usage: i3rt serve --model DIR [options]\n"
    "\n"
    "Serves nnInteractive's HTTP protocol (the nnInteractive server's endpoints, leases, bearer-token auth\n"
    "and NNIA arrays) on i3rt sessions: nnInteractiveRemoteInferenceSession from nninteractive-client, and\n"
    "viewers built on it, connect to http://HOST:PORT. One session per client lease (docs/serve.md).\n"
    "\n"
    "  --model DIR                     a converted nnInteractive model folder (tools/convert_pt/convert_nninteractive.py)\n"
    "  --fold K                        the fold to load (default: the folder's only fold)\n"
    "  --host HOST                     address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)\n"
    "  --port PORT                     port (default 1527; 0 picks a free one, printed at start)\n"
    "  --api-key KEY                   bearer token required on every request but GET /healthz (default:\n"
    "                                  $NN_INTERACTIVE_API_KEY; neither: no authentication)\n"
    "  --max-sessions N                concurrent client sessions (default 3); more claims get 503\n"
    "  --idle-timeout-seconds S        a session without user actions is dropped after S s (default 600)\n"
    "  --liveness-timeout-seconds S    a session without any request, heartbeats included, is dropped after\n"
    "                                  S s (default 60; the client heartbeats every S/2)\n"
    "  --sweep-interval-seconds S      how often time-outs are checked (default 15)\n"
    "  --max-array-mb MB               largest array (image, mask, target buffer) a client may send or claim\n"
    "                                  (default: a quarter of the RAM, as the nnInteractive server)\n"
    "  --no-autozoom                   sessions start with AutoZoom off (clients may switch it)\n"
    "  --device cpu|cuda|emulated      backend (default cpu)\n"
    "  --precision f32|tf32|f16|bf16   convolutions in f32 (default), or on tensor cores (cuda, emulated); f16 is\n"
    "                                  what the nnInteractive server runs on a GPU (autocast)\n"
    "  --threads N                     CPU threads per session (default: all cores)\n"
    "  --quiet                         no line per request on stderr\n"
    "  -h, --help                      this help\n";

typedef struct {
    const char *model_dir, *host, *api_key;
    int64_t port, fold, max_sessions, threads;
    double idle_timeout, liveness_timeout, sweep_interval;
    size_t max_array_bytes;
    bool do_autozoom, quiet;
    i3rt_backend_kind backend;
    int precision; /* an i3rt_precision, -1 if not given */
} serve_args;

typedef struct {
    serve_args args;
    serve_registry leases;
    char *capabilities; /* the /capabilities JSON, built once at start */
    pthread_mutex_t compute; /* one network call at a time over all sessions */
} server;

/* One HTTP request: its body as it arrives, then the answer. */
typedef struct {
    uint8_t *body;
    size_t len, cap;
    bool too_large;
    double start;
} request;

typedef struct {
    unsigned status;
    char *body; /* malloc'd */
    size_t len;
    const char *content_type;
    char *meta;        /* X-Meta, malloc'd */
    bool retry_after;  /* Retry-After: 10 */
} response;

/* ---- responses ------------------------------------------------------------------------------------ */

static void json_answer(response *out, unsigned status, cJSON *json) {
    out->status = status;
    out->body = cJSON_PrintUnformatted(json);
    out->len = out->body ? strlen(out->body) : 0;
    out->content_type = "application/json";
    cJSON_Delete(json);
}

/* {"detail": "..."}, as FastAPI's HTTPException. Returns false so handlers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static bool fail(response *out, unsigned status, const char *fmt, ...) {
    char detail[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    cJSON *json = cJSON_CreateObject();
    cJSON_AddStringToObject(json, "detail", detail);
    json_answer(out, status, json);
    return false;
}

/* The HTTP status of a failed session call: the client's mistakes are 400, the server's 500. */
static unsigned status_of(i3rt_status st) {
    switch (st) {
    case I3RT_ERR_INVALID_ARGUMENT:
    case I3RT_ERR_SHAPE:
    case I3RT_ERR_FORMAT:
    case I3RT_ERR_UNSUPPORTED: return 400;
    default: return 500;
    }
}

static bool session_fail(response *out, serve_lease *lease, i3rt_status st) {
    return fail(out, status_of(st), "%s", i3rt_context_error(lease->ctx));
}

static bool empty_ok(response *out) {
    json_answer(out, 200, cJSON_CreateObject());
    return true;
}

/* ---- request values -------------------------------------------------------------------------------- */

/* The body as a JSON object (an empty body is {}); NULL after answering 422. */
static cJSON *body_object(const request *rq, response *out) {
    if (rq->len == 0) return cJSON_CreateObject();
    cJSON *json = cJSON_ParseWithLength((const char *)rq->body, rq->len);
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        fail(out, 422, "the request body is not a JSON object");
        return NULL;
    }
    return json;
}

/* The X-Meta header as a JSON object (absent: {}); NULL after answering 400. */
static cJSON *meta_object(struct MHD_Connection *conn, response *out) {
    const char *text = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Meta");
    if (!text) return cJSON_CreateObject();
    cJSON *json = cJSON_Parse(text);
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        fail(out, 400, "Bad X-Meta: not a JSON object");
        return NULL;
    }
    return json;
}

/* bool(payload.get(key, default)) for JSON booleans and numbers; false after answering 400. A missing
 * key without a default (required) is a 400 too. */
static bool get_flag(const cJSON *obj, const char *key, int dflt, bool *value, response *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (dflt < 0) return fail(out, 400, "missing required field: %s", key);
        *value = dflt;
        return true;
    }
    if (cJSON_IsBool(v)) *value = cJSON_IsTrue(v);
    else if (cJSON_IsNumber(v)) *value = v->valuedouble != 0;
    else return fail(out, 400, "%s must be a boolean", key);
    return true;
}

/* Python's round() of a JSON number (half to even); false if it is not a finite number. */
static bool round_number(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > 9e15) return false;
    *out = (int64_t)nearbyint(v->valuedouble);
    return true;
}

/* [[lo, hi] x 3] -> a box (rounded); false after answering 400. */
static bool get_box(const cJSON *v, const char *key, i3rt_box *box, response *out) {
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3) return fail(out, 400, "%s must be 3 pairs [lo, hi]", key);
    for (int a = 0; a < 3; a++) {
        const cJSON *pair = cJSON_GetArrayItem(v, a);
        if (!cJSON_IsArray(pair) || cJSON_GetArraySize(pair) != 2 ||
            !round_number(cJSON_GetArrayItem(pair, 0), &box->lo[a]) ||
            !round_number(cJSON_GetArrayItem(pair, 1), &box->hi[a]))
            return fail(out, 400, "%s must be 3 pairs [lo, hi] of numbers", key);
    }
    return true;
}

/* An NNIA body; false after answering 400 (malformed) or 413 (too large). */
static bool get_array(server *srv, const request *rq, serve_lease *lease, const char *what, i3_nnia_array *a,
                      response *out) {
    i3rt_status st = i3_nnia_decode(lease->ctx, rq->body, rq->len, srv->args.max_array_bytes, srv->args.threads,
                                    what, a);
    if (st == I3RT_OK) return true;
    return fail(out, st == I3RT_ERR_OUT_OF_MEMORY ? 413 : 400, "%s", i3rt_context_error(lease->ctx));
}

/* ---- the prediction response (app.py _build_prediction_response) ----------------------------------- */

static void add_box_json(cJSON *obj, const char *key, const int64_t lo[3], const int64_t hi[3]) {
    cJSON *box = cJSON_AddArrayToObject(obj, key);
    for (int a = 0; a < 3; a++) {
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)lo[a]));
        cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)hi[a]));
        cJSON_AddItemToArray(box, pair);
    }
}

static void set_meta(response *out, cJSON *meta) {
    out->meta = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
}

/* ran: what the request reports (ran_prediction); changed: the region of the target buffer the session
 * wrote (NULL or empty: none). The body is the NNIA array of target[changed clipped to the buffer] in
 * the dtype the client declared, or empty. */
static bool prediction_answer(serve_lease *lease, bool ran, const i3rt_box *changed, response *out) {
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddBoolToObject(meta, "ran_prediction", ran);
    out->status = 200;
    out->content_type = "application/octet-stream";
    bool none = !ran || !changed || !lease->has_target;
    int64_t lo[3], hi[3], n = 1;
    for (int a = 0; a < 3 && !none; a++) {
        lo[a] = changed->lo[a] < 0 ? 0 : changed->lo[a];
        hi[a] = changed->hi[a] > lease->target_shape[a] ? lease->target_shape[a] : changed->hi[a];
        if (hi[a] <= lo[a]) none = true; /* outside the buffer: nothing to send */
        n *= hi[a] - lo[a];
    }
    if (none) {
        cJSON_AddNullToObject(meta, "bbox");
        set_meta(out, meta);
        return true;
    }
    uint8_t *region = malloc((size_t)n);
    i3_nnia_array sub = {.dtype = lease->target_dtype, .ndim = 3};
    sub.data = malloc((size_t)n * i3_nnia_dtype_size(lease->target_dtype));
    if (!region || !sub.data) {
        free(region);
        free(sub.data);
        cJSON_Delete(meta);
        return fail(out, 500, "out of memory for the changed region");
    }
    const int64_t *shape = lease->target_shape;
    size_t k = 0;
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++, k += (size_t)(hi[2] - lo[2]))
            memcpy(region + k, lease->target + (z * shape[1] + y) * shape[2] + lo[2], (size_t)(hi[2] - lo[2]));
    i3_nnia_from_mask(region, (size_t)n, lease->target_dtype, sub.data);
    free(region);
    for (int a = 0; a < 3; a++) sub.shape[a] = hi[a] - lo[a];
    i3_nnia_options opt = I3_NNIA_OPTIONS_DEFAULT; /* pack_array(sub, filters=[NOFILTER]) */
    uint8_t *packed = NULL;
    size_t packed_len = 0;
    i3rt_status st = i3_nnia_encode(lease->ctx, &sub, &opt, &packed, &packed_len);
    free(sub.data);
    if (st != I3RT_OK) {
        cJSON_Delete(meta);
        return session_fail(out, lease, st);
    }
    add_box_json(meta, "bbox", lo, hi);
    cJSON_AddStringToObject(meta, "dtype", i3_nnia_dtype_name(lease->target_dtype));
    cJSON *dims = cJSON_AddArrayToObject(meta, "shape");
    for (int a = 0; a < 3; a++) cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)sub.shape[a]));
    set_meta(out, meta);
    out->body = (char *)packed;
    out->len = packed_len;
    return true;
}

/* ---- endpoints -------------------------------------------------------------------------------------- */

typedef struct {
    server *srv;
    struct MHD_Connection *conn;
    const request *rq;
    serve_lease *lease; /* locked, for the endpoints that need one */
    response *out;
} call;

static bool need_image(call *c) {
    if (!c->lease->has_image) return fail(c->out, 400, "no image: call set_image first");
    return true;
}

static bool need_target(call *c) {
    if (!need_image(c)) return false;
    if (!c->lease->has_target) return fail(c->out, 400, "no target buffer: call set_target_buffer first");
    return true;
}

static bool on_capabilities(call *c) {
    c->out->status = 200;
    c->out->body = strdup(c->srv->capabilities);
    c->out->len = strlen(c->srv->capabilities);
    c->out->content_type = "application/json";
    return true;
}

static bool on_heartbeat(call *c) {
    cJSON *json = cJSON_CreateObject();
    cJSON_AddNumberToObject(json, "remaining_seconds", leases_remaining(&c->srv->leases, c->lease));
    json_answer(c->out, 200, json);
    return true;
}

static bool on_lease_status(call *c) {
    cJSON *json = cJSON_CreateObject();
    cJSON_AddNumberToObject(json, "remaining_seconds", leases_remaining(&c->srv->leases, c->lease));
    cJSON_AddNumberToObject(json, "idle_timeout_seconds", c->srv->leases.idle_timeout);
    json_answer(c->out, 200, json);
    return true;
}

static bool on_set_image(call *c) {
    cJSON *meta = meta_object(c->conn, c->out);
    if (!meta) return false;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(meta, "image_properties");
    const cJSON *spacing_json = cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, "spacing") : NULL;
    double spacing[3];
    bool has_spacing = cJSON_IsArray(spacing_json) && cJSON_GetArraySize(spacing_json) == 3;
    for (int a = 0; a < 3 && has_spacing; a++) {
        const cJSON *v = cJSON_GetArrayItem(spacing_json, a);
        has_spacing = cJSON_IsNumber(v);
        if (has_spacing) spacing[a] = v->valuedouble;
    }
    cJSON_Delete(meta);
    i3_nnia_array image;
    if (!get_array(c->srv, c->rq, c->lease, "set_image: the image", &image, c->out)) return false;
    bool ok = false;
    if (image.ndim != 4) {
        fail(c->out, 400, "expected a 4d image as input, got %dd", image.ndim);
    } else if (image.shape[0] != 1) {
        fail(c->out, 400, "the image has %lld channels; the model takes 1", (long long)image.shape[0]);
    } else {
        float *voxels = malloc(image.numel * sizeof(float) + 1);
        if (!voxels) {
            fail(c->out, 500, "out of memory for the image");
        } else {
            i3_nnia_to_f32(&image, voxels);
            i3rt_status st = i3rt_ni_set_image(c->lease->session, voxels, image.shape + 1, has_spacing ? spacing : NULL);
            free(voxels);
            if (st != I3RT_OK) {
                session_fail(c->out, c->lease, st);
            } else {
                /* a new image drops the target buffer, as nnInteractive's set_image does */
                c->lease->has_image = true;
                c->lease->has_target = false;
                memcpy(c->lease->image_shape, image.shape, sizeof c->lease->image_shape);
                cJSON *json = cJSON_CreateObject();
                cJSON *dims = cJSON_AddArrayToObject(json, "original_image_shape");
                for (int a = 0; a < 4; a++) cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)image.shape[a]));
                json_answer(c->out, 200, json);
                ok = true;
            }
        }
    }
    i3_nnia_free(&image);
    return ok;
}

/* app.py _parse_target_buffer_request, then the buffer itself. */
static bool on_set_target_buffer(call *c) {
    cJSON *body = body_object(c->rq, c->out);
    if (!body) return false;
    const cJSON *shape_json = cJSON_GetObjectItemCaseSensitive(body, "shape");
    const cJSON *dtype_json = cJSON_GetObjectItemCaseSensitive(body, "dtype");
    int64_t shape[3];
    i3_nnia_dtype dtype;
    bool ok = false;
    if (!shape_json) fail(c->out, 400, "missing required field: shape");
    else if (!dtype_json) fail(c->out, 400, "missing required field: dtype");
    else if (!cJSON_IsArray(shape_json)) fail(c->out, 400, "shape must be a list of positive integers");
    else if (cJSON_GetArraySize(shape_json) != 3) fail(c->out, 400, "shape must be 3D");
    else ok = true;
    for (int a = 0; a < 3 && ok; a++) {
        const cJSON *v = cJSON_GetArrayItem(shape_json, a);
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15)
            ok = fail(c->out, 400, "shape must contain only integers");
        else if (v->valuedouble <= 0) ok = fail(c->out, 400, "shape dimensions must be positive");
        else shape[a] = (int64_t)v->valuedouble;
    }
    if (ok && (!cJSON_IsString(dtype_json) || !i3_nnia_dtype_parse(dtype_json->valuestring, &dtype)))
        ok = fail(c->out, 400, "invalid dtype: %s", cJSON_IsString(dtype_json) ? dtype_json->valuestring : "(not a string)");
    if (ok && !i3_nnia_dtype_is_integer(dtype))
        ok = fail(c->out, 400, "unsupported dtype %s: target buffer must be bool or an integer type",
                  dtype_json->valuestring);
    cJSON_Delete(body);
    if (!ok) return false;
    double nbytes = (double)shape[0] * (double)shape[1] * (double)shape[2] * (double)i3_nnia_dtype_size(dtype);
    if (nbytes > (double)c->srv->args.max_array_bytes)
        return fail(c->out, 413, "target buffer would require %.0f bytes, limit is %zu bytes", nbytes,
                    c->srv->args.max_array_bytes);
    if (!need_image(c)) return false;
    uint8_t *target = calloc((size_t)(shape[0] * shape[1] * shape[2]), 1);
    if (!target) return fail(c->out, 500, "out of memory for the target buffer");
    i3rt_status st = i3rt_ni_set_target_buffer(c->lease->session, target, shape);
    if (st != I3RT_OK) {
        free(target);
        return session_fail(c->out, c->lease, st);
    }
    free(c->lease->target); /* the session now points at the new buffer */
    c->lease->target = target;
    memcpy(c->lease->target_shape, shape, sizeof shape);
    c->lease->target_dtype = dtype;
    c->lease->has_target = true;
    return empty_ok(c->out);
}

static bool on_set_do_autozoom(call *c) {
    cJSON *body = body_object(c->rq, c->out);
    if (!body) return false;
    bool on = false;
    bool ok = get_flag(body, "do_autozoom", -1, &on, c->out);
    cJSON_Delete(body);
    if (!ok) return false;
    i3rt_status st = i3rt_ni_set_do_autozoom(c->lease->session, on);
    return st == I3RT_OK ? empty_ok(c->out) : session_fail(c->out, c->lease, st);
}

static bool on_reset_interactions(call *c) {
    i3rt_status st = i3rt_ni_reset_interactions(c->lease->session);
    return st == I3RT_OK ? empty_ok(c->out) : session_fail(c->out, c->lease, st);
}

static bool on_undo(call *c) {
    int undone = 0;
    i3rt_box changed = {0};
    if (!c->lease->has_image) return prediction_answer(c->lease, false, NULL, c->out); /* nothing to undo */
    i3rt_status st = i3rt_ni_undo(c->lease->session, &undone, &changed);
    if (st != I3RT_OK) return session_fail(c->out, c->lease, st);
    return prediction_answer(c->lease, undone != 0, &changed, c->out);
}

/* A network call (prompt or predict) under the compute lock; the answer reports `ran`. */
typedef i3rt_status (*network_fn)(call *c, const void *arg, i3rt_ni_result *result);

static bool run_network(call *c, network_fn fn, const void *arg, int ran_from_flag) {
    i3rt_ni_result result = {0};
    pthread_mutex_lock(&c->srv->compute);
    i3rt_status st = fn(c, arg, &result);
    pthread_mutex_unlock(&c->srv->compute);
    if (st != I3RT_OK) return session_fail(c->out, c->lease, st);
    /* the prompts report their run_prediction flag, predict whether something was queued (app.py) */
    bool ran = ran_from_flag >= 0 ? ran_from_flag : result.ran_prediction;
    return prediction_answer(c->lease, ran, result.ran_prediction ? &result.changed : NULL, c->out);
}

static i3rt_status do_predict(call *c, const void *arg, i3rt_ni_result *result) {
    return i3rt_ni_predict(c->lease->session, *(const bool *)arg, result);
}

static bool on_predict(call *c) {
    cJSON *body = body_object(c->rq, c->out);
    if (!body) return false;
    bool force_full_refine = false;
    bool ok = get_flag(body, "force_full_refine", 0, &force_full_refine, c->out);
    cJSON_Delete(body);
    if (!ok || !need_target(c)) return false;
    return run_network(c, do_predict, &force_full_refine, -1);
}

typedef struct {
    int64_t coords[3];
    i3rt_box box;
    bool positive, run_prediction, override_checks;
    const uint8_t *mask;
    const i3rt_box *region;
    bool lasso;
} prompt;

/* The lease's session with this request's override_capability_checks (a per-call flag in nnInteractive). */
static i3rt_ni_session *prompt_session(call *c, const prompt *p) {
    i3rt_ni_set_override_capability_checks(c->lease->session, p->override_checks);
    return c->lease->session;
}

static i3rt_status do_point(call *c, const void *arg, i3rt_ni_result *result) {
    const prompt *p = arg;
    return i3rt_ni_add_point(prompt_session(c, p), p->coords, p->positive, p->run_prediction, result);
}

static i3rt_status do_box(call *c, const void *arg, i3rt_ni_result *result) {
    const prompt *p = arg;
    return i3rt_ni_add_box(prompt_session(c, p), &p->box, p->positive, p->run_prediction, result);
}

static i3rt_status do_mask(call *c, const void *arg, i3rt_ni_result *result) {
    const prompt *p = arg;
    if (!p->lasso)
        return i3rt_ni_add_scribble(prompt_session(c, p), p->mask, p->region, p->positive, p->run_prediction, result);
    return i3rt_ni_add_lasso(prompt_session(c, p), p->mask, p->region, p->positive, p->run_prediction, result);
}

static i3rt_status do_initial_seg(call *c, const void *arg, i3rt_ni_result *result) {
    const prompt *p = arg;
    return i3rt_ni_add_initial_seg(prompt_session(c, p), p->mask, p->run_prediction, result);
}

/* The JSON body of a point or box prompt: include_interaction (required), run_prediction (default true),
 * override_capability_checks (default false). */
static cJSON *prompt_body(call *c, prompt *p) {
    cJSON *body = body_object(c->rq, c->out);
    if (!body) return NULL;
    if (!get_flag(body, "include_interaction", -1, &p->positive, c->out) ||
        !get_flag(body, "run_prediction", 1, &p->run_prediction, c->out) ||
        !get_flag(body, "override_capability_checks", 0, &p->override_checks, c->out)) {
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

static bool on_add_point(call *c) {
    prompt p = {0};
    cJSON *body = prompt_body(c, &p);
    if (!body) return false;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "coordinates");
    bool ok = cJSON_IsArray(v) && cJSON_GetArraySize(v) == 3;
    for (int a = 0; a < 3 && ok; a++) ok = round_number(cJSON_GetArrayItem(v, a), &p.coords[a]);
    cJSON_Delete(body);
    if (!ok) return fail(c->out, 400, "coordinates must be 3 numbers");
    if (!need_target(c)) return false;
    return run_network(c, do_point, &p, p.run_prediction);
}

static bool on_add_bbox(call *c) {
    prompt p = {0};
    cJSON *body = prompt_body(c, &p);
    if (!body) return false;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "bbox_coords");
    bool ok = get_box(v, "bbox_coords", &p.box, c->out);
    /* add_bbox_interaction checks the raw sizes before it rounds */
    for (int a = 0; a < 3 && ok; a++) {
        const cJSON *pair = cJSON_GetArrayItem(v, a);
        if (cJSON_GetArrayItem(pair, 1)->valuedouble == cJSON_GetArrayItem(pair, 0)->valuedouble)
            ok = fail(c->out, 400, "Given bounding box size is zero in at least one dimension");
    }
    cJSON_Delete(body);
    if (!ok || !need_target(c)) return false;
    return run_network(c, do_box, &p, p.run_prediction);
}

/* The scribble and lasso endpoints: X-Meta {include_interaction, run_prediction, interaction_bbox}, an
 * NNIA mask of the interaction_bbox's shape (or of the image's). */
static bool on_add_mask(call *c, bool lasso) {
    prompt p = {.lasso = lasso};
    i3rt_box region;
    cJSON *meta = meta_object(c->conn, c->out);
    if (!meta) return false;
    const cJSON *bbox = cJSON_GetObjectItemCaseSensitive(meta, "interaction_bbox");
    bool ok = get_flag(meta, "include_interaction", -1, &p.positive, c->out) &&
              get_flag(meta, "run_prediction", 1, &p.run_prediction, c->out) &&
              get_flag(meta, "override_capability_checks", 0, &p.override_checks, c->out) &&
              (!bbox || cJSON_IsNull(bbox) || get_box(bbox, "interaction_bbox", &region, c->out));
    if (ok && bbox && !cJSON_IsNull(bbox)) p.region = &region;
    cJSON_Delete(meta);
    if (!ok || !need_target(c)) return false;
    i3_nnia_array mask;
    if (!get_array(c->srv, c->rq, c->lease, lasso ? "lasso mask" : "scribble mask", &mask, c->out))
        return false;
    const int64_t *want = p.region ? NULL : c->lease->image_shape + 1;
    ok = mask.ndim == 3;
    for (int a = 0; a < 3 && ok; a++) ok = mask.shape[a] == (want ? want[a] : region.hi[a] - region.lo[a]);
    uint8_t *bits = ok ? malloc(mask.numel + 1) : NULL;
    if (!ok) fail(c->out, 400, "the mask's shape must be 3D and match %s", p.region ? "interaction_bbox" : "the image");
    else if (!bits) ok = fail(c->out, 500, "out of memory for the mask");
    if (ok) {
        i3_nnia_to_mask(&mask, bits);
        p.mask = bits;
        ok = run_network(c, do_mask, &p, p.run_prediction);
    }
    free(bits);
    i3_nnia_free(&mask);
    return ok;
}

static bool on_add_scribble(call *c) { return on_add_mask(c, false); }
static bool on_add_lasso(call *c) { return on_add_mask(c, true); }

static bool on_add_initial_seg(call *c) {
    prompt p = {0};
    cJSON *meta = meta_object(c->conn, c->out);
    if (!meta) return false;
    bool ok = get_flag(meta, "run_prediction", 0, &p.run_prediction, c->out) &&
              get_flag(meta, "override_capability_checks", 0, &p.override_checks, c->out);
    cJSON_Delete(meta);
    if (!ok || !need_target(c)) return false;
    i3_nnia_array seg;
    if (!get_array(c->srv, c->rq, c->lease, "initial segmentation", &seg, c->out)) return false;
    ok = seg.ndim == 3;
    for (int a = 0; a < 3 && ok; a++) ok = seg.shape[a] == c->lease->image_shape[a + 1];
    uint8_t *bits = ok ? malloc(seg.numel + 1) : NULL;
    if (!ok) fail(c->out, 400, "Given initial seg must match input image shape");
    else if (!bits) ok = fail(c->out, 500, "out of memory for the initial segmentation");
    if (ok) {
        i3_nnia_to_mask(&seg, bits);
        p.mask = bits;
        ok = run_network(c, do_initial_seg, &p, p.run_prediction);
    }
    free(bits);
    i3_nnia_free(&seg);
    return ok;
}

/* ---- routing -------------------------------------------------------------------------------------- */

typedef enum { NO_LEASE = 0, LEASE_SEEN, LEASE_PEEK, LEASE_ACTIVE } lease_use;

typedef struct {
    const char *method, *path;
    bool auth;
    lease_use lease;
    bool (*handle)(call *c);
} route;

static bool on_healthz(call *c);
static bool on_claim(call *c);
static bool on_release(call *c);

/* _protocol.py's paths; LEASE_ACTIVE endpoints are user actions (they postpone the idle time-out). */
static const route ROUTES[] = {
    {"GET", "/healthz", false, NO_LEASE, on_healthz},
    {"GET", "/capabilities", true, NO_LEASE, on_capabilities},
    {"POST", "/claim", true, NO_LEASE, on_claim},
    {"POST", "/release", true, NO_LEASE, on_release},
    {"POST", "/heartbeat", true, LEASE_SEEN, on_heartbeat},
    {"GET", "/lease_status", true, LEASE_PEEK, on_lease_status},
    {"POST", "/set_image", true, LEASE_ACTIVE, on_set_image},
    {"POST", "/set_target_buffer", true, LEASE_ACTIVE, on_set_target_buffer},
    {"POST", "/reset_interactions", true, LEASE_ACTIVE, on_reset_interactions},
    {"POST", "/undo", true, LEASE_ACTIVE, on_undo},
    {"POST", "/predict", true, LEASE_ACTIVE, on_predict},
    {"POST", "/set_do_autozoom", true, LEASE_ACTIVE, on_set_do_autozoom},
    {"POST", "/add_bbox_interaction", true, LEASE_ACTIVE, on_add_bbox},
    {"POST", "/add_point_interaction", true, LEASE_ACTIVE, on_add_point},
    {"POST", "/add_scribble_interaction", true, LEASE_ACTIVE, on_add_scribble},
    {"POST", "/add_lasso_interaction", true, LEASE_ACTIVE, on_add_lasso},
    {"POST", "/add_initial_seg_interaction", true, LEASE_ACTIVE, on_add_initial_seg},
};

static bool on_healthz(call *c) {
    cJSON *json = cJSON_CreateObject();
    cJSON_AddTrueToObject(json, "ok");
    json_answer(c->out, 200, json);
    return true;
}

static bool on_claim(call *c) {
    serve_lease *lease = NULL;
    char error[1024] = "";
    serve_claim_result r = leases_claim(&c->srv->leases, &lease, error, sizeof error);
    if (r == LEASE_FULL) {
        c->out->retry_after = true;
        return fail(c->out, 503, "server is at capacity (%d sessions)", c->srv->leases.max_sessions);
    }
    if (r == LEASE_FAILED) return fail(c->out, 500, "cannot create a session: %s", error);
    cJSON *json = cJSON_CreateObject();
    cJSON_AddStringToObject(json, "lease_token", lease->token);
    cJSON_AddNumberToObject(json, "idle_timeout_seconds", c->srv->leases.idle_timeout);
    cJSON_AddNumberToObject(json, "liveness_timeout_seconds", c->srv->leases.liveness_timeout);
    cJSON_AddNumberToObject(json, "max_sessions", c->srv->leases.max_sessions);
    leases_put(&c->srv->leases, lease, true, false);
    json_answer(c->out, 200, json);
    return true;
}

static bool on_release(call *c) {
    leases_release(&c->srv->leases, MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "X-Lease-Token"));
    cJSON *json = cJSON_CreateObject();
    cJSON_AddTrueToObject(json, "released"); /* idempotent */
    json_answer(c->out, 200, json);
    return true;
}

/* Constant-time comparison of the bearer token. */
static bool authorized(const server *srv, struct MHD_Connection *conn, response *out) {
    if (!srv->args.api_key) return true;
    const char *header = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!header || strncmp(header, "Bearer ", 7) != 0) return fail(out, 401, "Missing bearer token");
    const char *given = header + 7, *key = srv->args.api_key;
    size_t n = strlen(given), m = strlen(key);
    unsigned diff = n != m;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)given[i] ^ (unsigned char)key[i % (m ? m : 1)];
    if (diff) return fail(out, 401, "Invalid bearer token");
    return true;
}

static void dispatch(server *srv, struct MHD_Connection *conn, const char *method, const char *url,
                     const request *rq, response *out) {
    const route *r = NULL;
    bool path_known = false;
    for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES && !r; i++)
        if (strcmp(url, ROUTES[i].path) == 0) {
            path_known = true;
            if (strcmp(method, ROUTES[i].method) == 0) r = &ROUTES[i];
        }
    if (!r) {
        fail(out, path_known ? 405 : 404, path_known ? "Method Not Allowed" : "Not Found");
        return;
    }
    if (r->auth && !authorized(srv, conn, out)) return;
    if (rq->too_large) {
        fail(out, 413, "the request body is larger than %zu bytes", srv->args.max_array_bytes);
        return;
    }
    call c = {.srv = srv, .conn = conn, .rq = rq, .out = out};
    if (r->lease == NO_LEASE) {
        r->handle(&c);
        return;
    }
    const char *token = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Lease-Token");
    c.lease = leases_get(&srv->leases, token, r->lease != LEASE_PEEK);
    if (!c.lease) {
        fail(out, 410, token ? "lease expired or unknown" : "lease token missing");
        return;
    }
    if (r->lease == LEASE_ACTIVE) { /* heartbeats and lease_status never wait behind a prediction */
        leases_mark_active(&srv->leases, c.lease);
        pthread_mutex_lock(&c.lease->lock);
        r->handle(&c);
        pthread_mutex_unlock(&c.lease->lock);
    } else {
        r->handle(&c);
    }
    leases_put(&srv->leases, c.lease, r->lease != LEASE_PEEK, r->lease == LEASE_ACTIVE);
}

/* ---- libmicrohttpd glue ------------------------------------------------------------------------------ */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    server *srv = cls;
    request *rq = *con_cls;
    if (!rq) { /* the headers: the body follows */
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO;
        rq->start = i3_now_seconds();
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size) { /* a piece of the body */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        size_t limit = srv->args.max_array_bytes + (1 << 20); /* the array and its compression overhead */
        if (rq->too_large || n > limit - rq->len) {
            rq->too_large = true;
            free(rq->body);
            rq->body = NULL;
            rq->len = rq->cap = 0;
            return MHD_YES;
        }
        if (rq->len + n > rq->cap) {
            size_t cap = rq->cap ? rq->cap : 1 << 16;
            while (cap < rq->len + n) cap *= 2;
            uint8_t *grown = realloc(rq->body, cap);
            if (!grown) return MHD_NO;
            rq->body = grown;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, upload_data, n);
        rq->len += n;
        return MHD_YES;
    }
    response out = {0};
    dispatch(srv, conn, method, url, rq, &out);
    free(rq->body); /* the answer does not need the upload any more */
    rq->body = NULL;
    rq->len = rq->cap = 0;
    struct MHD_Response *resp = out.body ? MHD_create_response_from_buffer(out.len, out.body, MHD_RESPMEM_MUST_FREE)
                                         : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(out.body);
        free(out.meta);
        return MHD_NO;
    }
    if (out.content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, out.content_type);
    if (out.meta) MHD_add_response_header(resp, "X-Meta", out.meta);
    if (out.retry_after) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "10");
    enum MHD_Result queued = MHD_queue_response(conn, out.status, resp);
    MHD_destroy_response(resp);
    if (!srv->args.quiet)
        fprintf(stderr, "i3rt serve: %s %s %u %.3f s\n", method, url, out.status, i3_now_seconds() - rq->start);
    free(out.meta);
    return queued;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    request *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* ---- options and main ---------------------------------------------------------------------------- */

static int usage_error(const char *fmt, const char *arg) { return cli_usage("serve", HELP, fmt, arg); }

static bool parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end = NULL;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_seconds(const char *s, double *out) { return cli_parse_number(s, DBL_MIN, DBL_MAX, out); }

static int parse_args(int argc, char **argv, serve_args *a) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double ram = pages > 0 && page > 0 ? (double)pages * (double)page : 32.0 * (1 << 30);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *a = (serve_args){.host = "127.0.0.1", .port = 1527, .fold = -1, .max_sessions = 3, .idle_timeout = 600,
                      .liveness_timeout = 60, .sweep_interval = 15, .max_array_bytes = (size_t)(ram * 0.25),
                      .do_autozoom = true, .threads = cores > 0 ? cores : 1, .backend = I3RT_BACKEND_CPU,
                      .precision = -1};
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t mb;
        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            fputs(HELP, stdout);
            return EXIT_SUCCESS;
        } else if (strcmp(opt, "--no-autozoom") == 0) {
            a->do_autozoom = false;
            continue;
        } else if (strcmp(opt, "--quiet") == 0) {
            a->quiet = true;
            continue;
        } else if (!val) {
            return usage_error("%s needs a value", opt);
        } else if (strcmp(opt, "--model") == 0) {
            a->model_dir = val;
        } else if (strcmp(opt, "--host") == 0) {
            a->host = val;
        } else if (strcmp(opt, "--api-key") == 0) {
            a->api_key = val;
        } else if (strcmp(opt, "--port") == 0) {
            if (!parse_int(val, 0, 65535, &a->port)) return usage_error("--port: '%s' is not a port (0..65535)", val);
        } else if (strcmp(opt, "--fold") == 0) {
            if (!parse_int(val, 0, 1000, &a->fold)) return usage_error("--fold: '%s' is not a fold number", val);
        } else if (strcmp(opt, "--max-sessions") == 0) {
            if (!parse_int(val, 1, 1024, &a->max_sessions)) return usage_error("--max-sessions must be >= 1, got '%s'", val);
        } else if (strcmp(opt, "--threads") == 0) {
            if (!parse_int(val, 1, 1024, &a->threads)) return usage_error("--threads: '%s' is not 1..1024", val);
        } else if (strcmp(opt, "--idle-timeout-seconds") == 0) {
            if (!parse_seconds(val, &a->idle_timeout)) return usage_error("--idle-timeout-seconds must be > 0, got '%s'", val);
        } else if (strcmp(opt, "--liveness-timeout-seconds") == 0) {
            if (!parse_seconds(val, &a->liveness_timeout))
                return usage_error("--liveness-timeout-seconds must be > 0, got '%s'", val);
        } else if (strcmp(opt, "--sweep-interval-seconds") == 0) {
            if (!parse_seconds(val, &a->sweep_interval))
                return usage_error("--sweep-interval-seconds must be > 0, got '%s'", val);
        } else if (strcmp(opt, "--max-array-mb") == 0) {
            if (!parse_int(val, 1, (int64_t)1 << 30, &mb)) return usage_error("--max-array-mb: '%s' is not a size", val);
            a->max_array_bytes = (size_t)mb << 20;
        } else if (strcmp(opt, "--device") == 0) {
            if (!cli_parse_device(val, &a->backend)) return usage_error("--device: '%s' is not cpu, cuda or emulated", val);
        } else if (strcmp(opt, "--precision") == 0) {
            if (!cli_parse_precision(val, &a->precision))
                return usage_error("--precision: '%s' is not f32, tf32, f16 or bf16", val);
        } else {
            return usage_error("unknown option %s", opt);
        }
        i++;
    }
    if (!a->model_dir) return usage_error("%s", "no --model given");
    if (!a->api_key) {
        const char *env = getenv("NN_INTERACTIVE_API_KEY");
        if (env && *env) a->api_key = env;
    }
    return -1;
}

int cli_serve(int argc, char **argv) {
    server srv = {0};
    int rc = parse_args(argc, argv, &srv.args);
    if (rc >= 0) return rc;
    const serve_args *a = &srv.args;
    if (a->liveness_timeout >= a->idle_timeout)
        fprintf(stderr, "i3rt serve: warning: --liveness-timeout-seconds (%.0f) is not below --idle-timeout-seconds "
                        "(%.0f): idle clients will be dropped at the liveness time-out\n",
                a->liveness_timeout, a->idle_timeout);
    if (!a->api_key)
        fprintf(stderr, "i3rt serve: warning: no --api-key and no NN_INTERACTIVE_API_KEY: anyone who can reach %s:%lld "
                        "can drive inference\n", a->host, (long long)a->port);

    /* load the model once at start: a bad folder fails here, and its capabilities are fixed */
    serve_session_config config = {a->model_dir, (int)a->fold, (int)a->threads, a->backend, a->precision,
                                   a->do_autozoom};
    i3rt_ni_session *probe = NULL;
    i3rt_context *ctx = cli_context_create("serve", (int)a->threads, a->backend, a->precision);
    if (!ctx) return EXIT_FAILURE;
    if (i3rt_ni_session_create(ctx, a->model_dir, (int)a->fold, &probe) != I3RT_OK) {
        fprintf(stderr, "i3rt serve: %s\n", i3rt_context_error(ctx));
        i3rt_context_free(ctx);
        return EXIT_FAILURE;
    }
    if (i3rt_ni_set_do_autozoom(probe, a->do_autozoom) != I3RT_OK ||
        !(srv.capabilities = strdup(i3rt_ni_capabilities_json(probe)))) {
        fprintf(stderr, "i3rt serve: cannot build the capability snapshot: %s\n", i3rt_context_error(ctx));
        i3rt_ni_session_free(probe);
        i3rt_context_free(ctx);
        return EXIT_FAILURE;
    }
    i3rt_ni_session_free(probe);
    i3rt_context_free(ctx);

    char port[16];
    snprintf(port, sizeof port, "%lld", (long long)a->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *addr = NULL;
    int gai = getaddrinfo(a->host, port, &hints, &addr);
    if (gai != 0) {
        fprintf(stderr, "i3rt serve: --host %s: %s\n", a->host, gai_strerror(gai));
        free(srv.capabilities);
        return EXIT_FAILURE;
    }

    /* SIGINT/SIGTERM go to sigwait below, not to the server's threads; a closed socket is not fatal */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_mutex_init(&srv.compute, NULL);
    leases_init(&srv.leases, (int)a->max_sessions, a->idle_timeout, a->liveness_timeout, a->sweep_interval, config);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (addr->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_Daemon *daemon = NULL;
    if (leases_start_reaper(&srv.leases))
        daemon = MHD_start_daemon(flags, (uint16_t)a->port, NULL, NULL, on_request, &srv, MHD_OPTION_SOCK_ADDR,
                                  addr->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_CONNECTION_LIMIT,
                                  (unsigned)256, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 << 10),
                                  MHD_OPTION_END);
    freeaddrinfo(addr);
    if (!daemon) {
        fprintf(stderr, "i3rt serve: cannot listen on %s:%lld (in use, or not an address of this machine?)\n", a->host,
                (long long)a->port);
        leases_shutdown(&srv.leases);
        free(srv.capabilities);
        return EXIT_FAILURE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    printf("i3rt serve: listening on http://%s:%u (model %s, %lld session(s) at most, %lld threads each, %s%s)\n",
           a->host, info ? info->port : (unsigned)a->port, a->model_dir, (long long)a->max_sessions,
           (long long)a->threads, a->backend == I3RT_BACKEND_CUDA ? "cuda" : a->backend == I3RT_BACKEND_EMULATED ? "emulated" : "cpu",
           a->api_key ? ", bearer-token auth" : "");
    fflush(stdout);

    int sig = 0;
    sigwait(&stop_signals, &sig);
    fprintf(stderr, "i3rt serve: signal %d, shutting down\n", sig);
    MHD_stop_daemon(daemon); /* waits for the running requests */
    leases_shutdown(&srv.leases);
    pthread_mutex_destroy(&srv.compute);
    free(srv.capabilities);
    return EXIT_SUCCESS;
}
