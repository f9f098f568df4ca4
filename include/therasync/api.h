/* api.h — the API actor: the engine's one HTTP client of the Clinic API
 * (docs/CLINIC_API.md), on the libcurl multi interface in its own thread.
 *
 * How to use it (see docs/API_ACTOR.md and tests/e2e/test_api.c):
 *   1. Bind a PULL socket for answers (TS_INPROC_API_RESULTS, or your own
 *      inproc endpoint named in each request's reply_to).
 *   2. ts_api_start() the actor; it binds TS_INPROC_API (opts.endpoint).
 *   3. Connect a PUSH socket to it; send requests with ts_api_send() and
 *      cancellations with ts_api_cancel().
 *   4. Receive ts_wire messages on the PULL socket: TS_MSG_API_RESULT (one per
 *      request, always, streams included at their end), TS_MSG_API_EVENT and
 *      TS_MSG_API_STREAM (for stream requests). Free what you get with the
 *      matching *_free().
 *
 * Ownership: a request belongs to the actor from ts_api_send() until it comes
 * back inside its result (result->request), which the receiver frees with
 * ts_api_result_free(). When the actor stops, what it still holds is freed
 * without an answer.
 *
 * Secrets: tokens and client secrets are never logged. Bodies are logged at
 * debug level only, through ts_log_redact_json(). */
#ifndef THERASYNC_API_H
#define THERASYNC_API_H

#include "therasync/actor.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msgs/endpoints.h" /* TS_INPROC_API, TS_INPROC_API_RESULTS */

/* ---- settings ---------------------------------------------------------- */

typedef struct {
    const char *base_url;      /* "http://host:port" (no trailing path); required */
    const char *token_url;     /* NULL: base_url + "/oauth/token" */
    const char *client_id;     /* NULL: no authentication (no Authorization header) */
    const char *client_secret; /* sent in the form body, never logged */
    const char *endpoint;      /* NULL: TS_INPROC_API */
    /* TLS: verification is on unless insecure is set (tests only). */
    const char *ca_file;       /* CURLOPT_CAINFO; NULL: system default */
    const char *ca_path;       /* CURLOPT_CAPATH; NULL: system default */
    bool insecure;
    bool no_http2;             /* default: HTTP/2 where TLS ALPN offers it */
    const char *proxy;         /* CURLOPT_PROXY; NULL: none (the environment is ignored) */
    int max_connections;       /* total, and per host; 0: 32 */
    int max_inflight;          /* transfers handed to curl at once; 0: 64; more wait in FIFO */
    long connect_timeout_ms;   /* 0: 5000 */
    long timeout_ms;           /* one attempt, connect to last byte; 0: 30000 */
    /* Retries of retryable failures (NETWORK, TIMEOUT, SERVER_ERROR,
     * TOO_MANY_REQUESTS): delay = random(0, min(cap, base * 2^(attempt-1))),
     * at least the server's Retry-After. */
    int max_attempts;          /* 0: 5 (1 = never retry) */
    long backoff_base_ms;      /* 0: 100 */
    long backoff_cap_ms;       /* 0: 30000 */
    long retry_after_max_ms;   /* a longer Retry-After ends the request instead; 0: 60000 */
    /* Streams (SSE): reconnect delays with the same formula; an idle stream
     * (no byte, not even a heartbeat) counts as dropped after idle_ms. */
    long stream_backoff_base_ms; /* 0: 250 */
    long stream_backoff_cap_ms;  /* 0: 10000 */
    long stream_idle_ms;         /* 0: 45000 (server heartbeat is 15 s) */
    size_t max_body_bytes;       /* larger responses are BAD_RESPONSE; 0: 64 MiB */
} ts_api_opts_t;

/* Starts the actor (thread "api") with a copy of opts. Returns it, or NULL
 * when set-up failed (bad opts, endpoint in use, curl init); the reason is
 * logged. Stop it with ts_actor_destroy(). */
ts_actor_t *ts_api_start(void *zctx, const ts_api_opts_t *opts);

/* ---- requests ------------------------------------------------------------ */

typedef enum { TS_API_GET, TS_API_POST, TS_API_PATCH, TS_API_DELETE } ts_api_method_t;

/* What a 2xx body must look like; anything else is TS_API_BAD_RESPONSE. */
typedef enum {
    TS_API_SHAPE_ANY,     /* a JSON object, or no body */
    TS_API_SHAPE_DOC,     /* {id: string, version: number, ...} */
    TS_API_SHAPE_PAGE,    /* {items: [], cursor, has_more: bool} */
    TS_API_SHAPE_CHANGES, /* {changes: [], cursor} */
    TS_API_SHAPE_DIGEST,  /* {count: number, hash: string} */
    TS_API_SHAPE_NONE,    /* no body expected (DELETE → 204); a body is ignored */
} ts_api_shape_t;

typedef struct ts_api_request {
    uint64_t id;               /* unique among live requests (ts_api_next_id()); cancel key */
    ts_api_method_t method;
    char *path;                /* "/v1/sessions/x?since=1"; owned; must start with '/' */
    char *body;                /* JSON text or NULL; owned */
    size_t body_len;
    char idempotency_key[65];  /* "" = none; sent as Idempotency-Key */
    int64_t if_match;          /* > 0: sent as If-Match: "N" */
    char if_none_match[80];    /* "" = none; else sent as If-None-Match (a conditional GET:
                                  304 comes back as TS_API_OK with status 304, no body) */
    ts_api_shape_t shape;      /* checked on 2xx */
    long timeout_ms;           /* 0: opts.timeout_ms (per attempt) */
    int max_attempts;          /* 0: opts.max_attempts */
    /* Streams: keep a GET open as server-sent events (path defaults to
     * /v1/changes/stream when NULL), send TS_MSG_API_EVENT per event and
     * TS_MSG_API_STREAM per state change, reconnect forever with backoff
     * (Last-Event-ID = last event seen) until cancelled or refused. */
    bool stream;
    bool raw_events;           /* stream: leave each event's json NULL, the receiver
                                  parses what it needs from data */
    char last_event_id[65];    /* stream resume point ("" = from now) */
    char reply_to[64];         /* inproc endpoint for answers; "" = TS_INPROC_API_RESULTS */
    /* A connect that proves the server is not there (refused, host
     * unreachable, name not resolved: result->unreachable) ends the request
     * at once instead of being retried with backoff, so that the caller
     * learns it promptly. Nothing was sent: resending it later is safe. */
    bool unreachable_final;
    void *user;                /* the caller's; handed back untouched */
} ts_api_request_t;

/* A new request with copies of path and body (body may be NULL) and a fresh
 * id; other fields zero. */
ts_api_request_t *ts_api_request_new(ts_api_method_t method, const char *path, const char *body);
void ts_api_request_free(ts_api_request_t *request);
/* A process-wide increasing id (thread-safe), never 0. */
uint64_t ts_api_next_id(void);

/* Sends a request to the actor over a PUSH socket connected to its endpoint;
 * ownership passes on success. 0, or -1 (the caller still owns it). */
int ts_api_send(void *socket, ts_api_request_t *request);
/* Asks the actor to cancel request id (queued, waiting for a retry or a
 * token, in flight, or a stream). Its result then comes back CANCELLED; an
 * id that is not live (already answered) is ignored. 0 or -1. */
int ts_api_cancel(void *socket, uint64_t id);

/* ---- answers ------------------------------------------------------------- */

/* Failure classes, each with what the caller should do next. */
typedef enum {
    TS_API_OK,                /* 2xx and the body has the expected shape. Use it. */
    TS_API_NETWORK,           /* no answer: refused, reset, closed before a status. Retried
                                 here already; next: count toward offline, retry later (same
                                 idempotency key: it may have been applied). With
                                 result->unreachable the server is not there now. */
    TS_API_TIMEOUT,           /* connect or total timeout (or 408). As NETWORK. */
    TS_API_TLS,               /* TLS handshake or certificate failure. Not retried: a
                                 configuration problem; report it, retry much later. */
    TS_API_UNAUTHORIZED,      /* 401 even after one token refresh, or the token endpoint
                                 refused the credentials. Not retried: fix credentials;
                                 keep writes queued. */
    TS_API_FORBIDDEN,         /* 403. Final for this request: reject (roll back) the write. */
    TS_API_NOT_FOUND,         /* 404. Update/delete: reject (roll back); get: gone;
                                 stream: SSE not offered — fall back to long polling. */
    TS_API_CONFLICT,          /* 409/412; json holds {current}. Resolve the conflict (policy),
                                 then send again with the new base version. */
    TS_API_VALIDATION,        /* 422; json holds {errors}. Reject the write (roll back). */
    TS_API_TOO_MANY_REQUESTS, /* 429 after the retries (or Retry-After beyond the max).
                                 Back off at least retry_after_ms, then retry. */
    TS_API_SERVER_ERROR,      /* 5xx after the retries. Retry later; count toward stuck. */
    TS_API_BAD_REQUEST,       /* other 4xx (400, 405, 413, ...). Not retried: a bug or a
                                 refused request; reject it (stream: 405 = no SSE). */
    TS_API_BAD_RESPONSE,      /* an answer not as docs/CLINIC_API.md says: not JSON, wrong
                                 content type, wrong shape, truncated, 1xx/3xx, too large.
                                 Not retried here; a write may have been applied: retry
                                 later with the same idempotency key, count toward stuck. */
    TS_API_CANCELLED,         /* cancelled by ts_api_cancel(). Nothing to do; a write that
                                 was in flight may still have been applied. */
    TS_API_INTERNAL,          /* bad request fields (path, method), or curl out of memory. */
    TS_API__LAST
} ts_api_error_t;

/* The class's name ("ok", "network", ...); "?" for an unknown value. */
const char *ts_api_error_name(ts_api_error_t error);
/* True for the classes the actor retries itself. */
bool ts_api_error_retryable(ts_api_error_t error);
/* The class of an HTTP status as the actor gives it (also to each op of a
 * batch answer); TS_API_BAD_RESPONSE for a status that is not 2xx/4xx/5xx. */
ts_api_error_t ts_api_status_class(long status);

typedef struct {
    ts_api_request_t *request; /* handed back: owned by the receiver now */
    uint64_t id;               /* = request->id */
    void *user;                /* = request->user */
    ts_api_error_t error;
    long status;               /* HTTP status of the last attempt; 0 when none */
    cJSON *json;               /* parsed body (also for 409/422 and other errors when JSON) */
    char *body;                /* raw body, NUL-terminated; NULL when empty */
    size_t body_len;
    int attempts;              /* HTTP attempts made (the resend after a 401 + refresh is
                                  one more), plus failed token fetches it waited for */
    int token_refreshes;       /* token fetches this request waited for after a 401 */
    int64_t retry_after_ms;    /* last Retry-After seen, -1 when none */
    int64_t queued_us;         /* ts_mono_us() when the actor took it */
    int64_t finished_us;       /* ts_mono_us() when answered */
    int64_t attempt_us[8];     /* start of attempts 1..8 (ts_mono_us()), for tests and stats */
    bool unreachable;          /* NETWORK, and the last attempt's connect was refused or found
                                  no host (CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST):
                                  not an ambiguous failure but a server that is not there */
    bool left;                 /* some attempt got past the connect: the request may have
                                  reached a server (false: none did, nothing was sent) */
    char message[160];         /* a human-readable reason (curl's, or the shape check's) */
    char etag[80];             /* the answer's ETag header, "" when none (or too long) */
} ts_api_result_t;

/* Frees the result, its json and body, and the request inside. */
void ts_api_result_free(ts_api_result_t *result);

typedef enum {
    TS_API_STREAM_CONNECTED, /* 200 text/event-stream: events follow */
    TS_API_STREAM_DROPPED,   /* ended or failed; reconnects after retry_in_ms */
    TS_API_STREAM_REFUSED,   /* will not reconnect (404/405/401/...): fall back to polling;
                                the stream's result follows with the error class */
} ts_api_stream_state_t;

typedef struct {
    uint64_t id;   /* the stream request's id */
    void *user;
    ts_api_stream_state_t state;
    ts_api_error_t error; /* why it dropped or was refused (OK when connected) */
    long status;
    int64_t retry_in_ms;  /* DROPPED: delay before the next connect */
    int connects;         /* connect attempts so far */
    bool unreachable;     /* DROPPED: this connect was refused or found no host (as in
                             ts_api_result_t); a live stream that ends is not, its
                             reconnect tells */
    char last_event_id[65];
} ts_api_stream_msg_t;

typedef struct {
    uint64_t id;   /* the stream request's id */
    void *user;
    char event_id[65]; /* the SSE id (the change cursor); "" when the event had none */
    char *data;        /* the data text (lines joined by \n) */
    size_t data_len;
    cJSON *json;       /* data parsed; NULL when it is not JSON (or raw_events) */
} ts_api_event_t;

void ts_api_stream_msg_free(ts_api_stream_msg_t *msg);
void ts_api_event_free(ts_api_event_t *event);


#endif
