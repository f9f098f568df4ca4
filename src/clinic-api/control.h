/* control.h — fault injection settings and server counters.
 *
 * Faults are read on every request (a lock-free fast path when none is set)
 * and switched at run time by POST /_control/faults or at start by flags.
 * Counters are plain atomics, read by GET /_control/stats. */
#ifndef CLINIC_API_CONTROL_H
#define CLINIC_API_CONTROL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "therasync/util.h"

typedef struct {
    double fail_rate; /* 0..1: share of requests answered with `status` */
    int status;       /* status for failures; 503 by default */
    int latency_ms;   /* added before every request is handled */
    int answer_latency_ms; /* added after a write's commit, before its answer */
    double drop_rate; /* 0..1: share of connections closed without an answer */
    bool offline;     /* every non-control request is closed unanswered */
    int retry_after;  /* seconds in Retry-After on 429/503; 1 by default */
    double garbage_rate; /* 0..1: share of GET requests answered 200 with a body that is
                            not JSON (reads only: a write is never answered as if applied) */
} ca_faults_t;

typedef struct {
    atomic_llong requests;           /* every request seen (control included) */
    atomic_llong applied_writes;     /* creates, patches, deletes committed */
    atomic_llong idempotent_replays; /* answers served from the idempotency table */
    atomic_llong idempotency_mismatches; /* 422: a key reused for a different request */
    atomic_llong faults_failed;      /* answered with an injected status */
    atomic_llong faults_dropped;     /* closed without answering (drop or offline) */
    atomic_llong faults_delayed;     /* held back by latency_ms */
    atomic_llong commits;            /* SQLite write transactions (group commits) */
    atomic_llong tokens_issued;      /* access tokens handed out */
    atomic_llong unauthorized;       /* 401 answers */
    atomic_llong batches;            /* POST /v1/_batch requests answered 200 */
    atomic_llong batch_ops;          /* ops in them */
    atomic_llong header_timeouts;    /* connections closed at the header deadline */
    atomic_llong malformed;          /* requests refused for their HTTP framing (400) */
    atomic_llong faults_garbled;     /* answered 200 with garbage (garbage_rate) */
    atomic_llong doc_gets;           /* GET /v1/{coll}/{id} handled (200, 304, 404) */
    atomic_llong list_requests;      /* filtered listings handled (200, 304, 400) */
    atomic_llong not_modified;       /* 304 answers (If-None-Match matched the ETag) */
} ca_stats_t;

extern ca_stats_t ca_stats;

/* What GET /metrics counts by: a request's route, as method and path
 * template (ca_route_of). */
typedef enum {
    CA_R_LIST, CA_R_CREATE, CA_R_GET, CA_R_PATCH, CA_R_DELETE, CA_R_DIGEST, CA_R_CHANGES,
    CA_R_STREAM, CA_R_BATCH, CA_R_TOKEN, CA_R_CONTROL, CA_R_HEALTHZ, CA_R_METRICS, CA_R_OTHER,
    CA_R__COUNT
} ca_route_t;
ca_route_t ca_route_of(const char *method, const char *url);
/* Counts an answer of route with HTTP status (100-599; others are not
 * counted: a connection closed unanswered is a fault, counted as such). */
void ca_stats_answered(ca_route_t route, unsigned status);
/* Feed subscribers now: open event streams, long polls waiting. */
extern atomic_llong ca_feed_streams, ca_feed_polls;
/* Appends every counter as Prometheus text (exposition format 0.0.4). */
int ca_stats_prometheus(ts_buf_t *out);

/* Defaults: nothing injected, status 503, retry_after 1. */
void ca_faults_defaults(ca_faults_t *f);
void ca_faults_set(const ca_faults_t *f);
/* Returns true when any fault is active, and copies the settings. */
bool ca_faults_get(ca_faults_t *f);
/* Parses the JSON body of POST /_control/faults; missing keys take their
 * defaults, so {} clears everything. Returns 0, or -1 with a message. */
int ca_faults_parse(const char *json, size_t len, ca_faults_t *f, const char **err);
/* Appends the settings / the counters as JSON. */
int ca_faults_json(const ca_faults_t *f, ts_buf_t *out);
int ca_stats_json(ts_buf_t *out);
/* A uniform random number in [0,1) from a per-thread generator. */
double ca_rand01(void);

#endif
