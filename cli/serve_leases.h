/* The leases of `i3rt serve` (cli/serve_leases.c): one nnInteractive session per client, as the
 * SessionRegistry of nnInteractive's server/app.py keeps them.
 *
 * A client claims a lease (a random 128-bit token) and names it in the X-Lease-Token header of every
 * later request. Two clocks per lease: last_active (real user actions; the idle time-out) and last_seen
 * (any request, heartbeats included; the much shorter liveness time-out that frees the slots of crashed
 * clients). A reaper thread drops leases past either time-out, but never one whose request is running
 * (a prediction may outlast the liveness time-out; nnInteractive's server would reap that client). A
 * request holds a reference to its lease and its lock while it works, so releasing a lease never frees a
 * session under a running request: the last reference frees it. */
#ifndef I3RT_CLI_SERVE_LEASES_H
#define I3RT_CLI_SERVE_LEASES_H

#include "i3rt.h"
#include "nnia.h"

#include <pthread.h>
#include <stdbool.h>

#define SERVE_TOKEN_LEN 32

typedef struct {
    const char *model_dir;
    int fold;
    int n_threads;
    i3rt_backend_kind backend;
    int precision; /* an i3rt_precision, -1: the backend's default */
    bool do_autozoom;
} serve_session_config;

typedef struct serve_lease {
    char token[SERVE_TOKEN_LEN + 1];
    pthread_mutex_t lock; /* one request of this client at a time (the session is not thread-safe) */
    i3rt_context *ctx;    /* this session's context: its error message is only read under lock */
    i3rt_ni_session *session;
    /* the image and the target buffer as the client declared them (the session keeps a 0/1 uint8 mask) */
    bool has_image, has_target;
    int64_t image_shape[4];
    uint8_t *target;
    int64_t target_shape[3];
    i3_nnia_dtype target_dtype;
    /* guarded by the registry's mutex */
    double last_active, last_seen;
    int refs;
    bool removed;
} serve_lease;

typedef struct {
    pthread_mutex_t mu;
    serve_lease **leases;
    int n, pending; /* pending: claims loading their model outside the mutex */
    int max_sessions;
    double idle_timeout, liveness_timeout, sweep_interval;
    serve_session_config config;
    pthread_t reaper;
    pthread_cond_t stop_cond;
    bool stop, reaper_running;
} serve_registry;

typedef enum { LEASE_CLAIMED = 0, LEASE_FULL, LEASE_FAILED } serve_claim_result;


void leases_init(serve_registry *r, int max_sessions, double idle_timeout, double liveness_timeout,
                 double sweep_interval, serve_session_config config);
/* Starts the reaper thread (false if it cannot). */
bool leases_start_reaper(serve_registry *r);
/* Stops the reaper and frees every lease (no request may still run). */
void leases_shutdown(serve_registry *r);

/* A new lease with a new session; LEASE_FAILED writes the reason into error. The lease comes back
 * referenced: hand it back with leases_put. */
serve_claim_result leases_claim(serve_registry *r, serve_lease **out, char *error, size_t error_len);
/* The lease of token (NULL if unknown or gone), referenced; mark_seen refreshes its liveness clock. */
serve_lease *leases_get(serve_registry *r, const char *token, bool mark_seen);
void leases_mark_active(serve_registry *r, serve_lease *lease);
/* Hands back a reference. seen: the request was a sign of life (all but lease_status); active: it was
 * a user action (postpones the idle time-out; implies seen). */
void leases_put(serve_registry *r, serve_lease *lease, bool seen, bool active);
/* Seconds until the idle time-out. */
double leases_remaining(serve_registry *r, serve_lease *lease);
/* Drops the lease of token; false if there was none (releasing is idempotent). */
bool leases_release(serve_registry *r, const char *token);
/* Drops the leases past a time-out; returns how many. */
int leases_sweep(serve_registry *r);

#endif /* I3RT_CLI_SERVE_LEASES_H */
