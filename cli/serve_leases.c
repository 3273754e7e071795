/* Leases of `i3rt serve`: the session registry (cli/serve_leases.h). */
#include "serve_leases.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

void leases_init(serve_registry *r, int max_sessions, double idle_timeout, double liveness_timeout,
                 double sweep_interval, serve_session_config config) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->stop_cond, NULL);
    r->max_sessions = max_sessions;
    r->idle_timeout = idle_timeout;
    r->liveness_timeout = liveness_timeout;
    r->sweep_interval = sweep_interval;
    r->config = config;
}

static void lease_free(serve_lease *lease) {
    if (!lease) return;
    i3rt_ni_session_free(lease->session);
    i3rt_context_free(lease->ctx);
    free(lease->target);
    pthread_mutex_destroy(&lease->lock);
    free(lease);
}

/* A new session on its own context (contexts are not shared between threads). */
static serve_lease *lease_new(const serve_session_config *c, char *error, size_t error_len) {
    serve_lease *lease = calloc(1, sizeof *lease);
    if (!lease) {
        snprintf(error, error_len, "out of memory for a new session");
        return NULL;
    }
    pthread_mutex_init(&lease->lock, NULL);
    uint8_t random[SERVE_TOKEN_LEN / 2];
    if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random) {
        snprintf(error, error_len, "no random bytes for a lease token: %s", strerror(errno));
        lease_free(lease);
        return NULL;
    }
    for (size_t i = 0; i < sizeof random; i++) snprintf(lease->token + 2 * i, 3, "%02x", random[i]);
    if (i3rt_context_create(&lease->ctx, c->n_threads, c->backend) != I3RT_OK) {
        snprintf(error, error_len, "cannot create a context (%d threads, backend %d)", c->n_threads, (int)c->backend);
        lease_free(lease);
        return NULL;
    }
    if ((c->precision >= 0 && i3rt_context_set_precision(lease->ctx, (i3rt_precision)c->precision) != I3RT_OK) ||
        i3rt_ni_session_create(lease->ctx, c->model_dir, c->fold, &lease->session) != I3RT_OK ||
        i3rt_ni_set_do_autozoom(lease->session, c->do_autozoom) != I3RT_OK) {
        snprintf(error, error_len, "%s", i3rt_context_error(lease->ctx));
        lease_free(lease);
        return NULL;
    }
    return lease;
}

serve_claim_result leases_claim(serve_registry *r, serve_lease **out, char *error, size_t error_len) {
    *out = NULL;
    pthread_mutex_lock(&r->mu);
    bool full = r->n + r->pending >= r->max_sessions;
    if (!full) r->pending++;
    pthread_mutex_unlock(&r->mu);
    if (full) return LEASE_FULL;

    /* loading the model takes a while: outside the mutex, so other clients' requests go on */
    serve_lease *lease = lease_new(&r->config, error, error_len);
    pthread_mutex_lock(&r->mu);
    r->pending--;
    serve_lease **grown = lease ? realloc(r->leases, (size_t)(r->n + 1) * sizeof *grown) : NULL;
    if (grown) {
        r->leases = grown;
        r->leases[r->n++] = lease;
        lease->last_active = lease->last_seen = i3_now_seconds();
        lease->refs = 1;
    }
    pthread_mutex_unlock(&r->mu);
    if (lease && !grown) {
        snprintf(error, error_len, "out of memory for the lease table");
        lease_free(lease);
        lease = NULL;
    }
    *out = lease;
    return lease ? LEASE_CLAIMED : LEASE_FAILED;
}

/* Index of token in the table, or -1 (under r->mu). */
static int find(serve_registry *r, const char *token) {
    if (!token) return -1;
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->leases[i]->token, token) == 0) return i;
    return -1;
}

serve_lease *leases_get(serve_registry *r, const char *token, bool mark_seen) {
    pthread_mutex_lock(&r->mu);
    int i = find(r, token);
    serve_lease *lease = i >= 0 ? r->leases[i] : NULL;
    if (lease) {
        lease->refs++;
        if (mark_seen) lease->last_seen = i3_now_seconds();
    }
    pthread_mutex_unlock(&r->mu);
    return lease;
}

void leases_mark_active(serve_registry *r, serve_lease *lease) {
    pthread_mutex_lock(&r->mu);
    lease->last_active = lease->last_seen = i3_now_seconds();
    pthread_mutex_unlock(&r->mu);
}

double leases_remaining(serve_registry *r, serve_lease *lease) {
    pthread_mutex_lock(&r->mu);
    double left = r->idle_timeout - (i3_now_seconds() - lease->last_active);
    pthread_mutex_unlock(&r->mu);
    return left > 0 ? left : 0;
}

void leases_put(serve_registry *r, serve_lease *lease, bool seen, bool active) {
    if (!lease) return;
    pthread_mutex_lock(&r->mu);
    /* the end of a request is a sign of life too, and the idle time counts from the end of an action */
    if (seen) lease->last_seen = i3_now_seconds();
    if (active) lease->last_active = lease->last_seen;
    bool last = --lease->refs == 0 && lease->removed;
    pthread_mutex_unlock(&r->mu);
    if (last) lease_free(lease);
}

/* Takes lease i out of the table (under r->mu); true if nobody holds it any more. */
static bool remove_at(serve_registry *r, int i) {
    serve_lease *lease = r->leases[i];
    r->leases[i] = r->leases[--r->n];
    lease->removed = true;
    return lease->refs == 0;
}

bool leases_release(serve_registry *r, const char *token) {
    pthread_mutex_lock(&r->mu);
    int i = find(r, token);
    serve_lease *lease = i >= 0 ? r->leases[i] : NULL;
    bool free_now = lease && remove_at(r, i);
    pthread_mutex_unlock(&r->mu);
    if (free_now) lease_free(lease);
    return lease != NULL;
}

int leases_sweep(serve_registry *r) {
    double now = i3_now_seconds();
    int reaped = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = r->n - 1; i >= 0; i--) {
        serve_lease *lease = r->leases[i];
        if (lease->refs > 0) continue; /* a request of this client is running: it is neither dead nor idle */
        const char *reason = now - lease->last_seen > r->liveness_timeout ? "dead"
                             : now - lease->last_active > r->idle_timeout ? "idle"
                                                                          : NULL;
        if (!reason) continue;
        fprintf(stderr, "i3rt serve: reaped %s session %.8s...\n", reason, lease->token);
        remove_at(r, i);
        lease_free(lease); /* refs == 0: no request is inside its session */
        reaped++;
    }
    pthread_mutex_unlock(&r->mu);
    return reaped;
}

static void *reaper_main(void *arg) {
    serve_registry *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double t = (double)until.tv_sec + 1e-9 * (double)until.tv_nsec + r->sweep_interval;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
        pthread_cond_timedwait(&r->stop_cond, &r->mu, &until);
        if (r->stop) break;
        pthread_mutex_unlock(&r->mu);
        leases_sweep(r);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

bool leases_start_reaper(serve_registry *r) {
    r->reaper_running = pthread_create(&r->reaper, NULL, reaper_main, r) == 0;
    return r->reaper_running;
}

void leases_shutdown(serve_registry *r) {
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->stop_cond);
    pthread_mutex_unlock(&r->mu);
    if (r->reaper_running) pthread_join(r->reaper, NULL);
    for (int i = 0; i < r->n; i++) lease_free(r->leases[i]);
    free(r->leases);
    r->leases = NULL;
    r->n = 0;
    pthread_cond_destroy(&r->stop_cond);
    pthread_mutex_destroy(&r->mu);
}
