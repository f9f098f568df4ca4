/* http.h — the HTTP front of clinic-api on libmicrohttpd: routing, auth
 * checks, fault injection, and the handlers of every endpoint.
 *
 * Threading: an epoll thread pool (one per CPU by default) with keep-alive;
 * long polls, event streams and injected latency suspend their connection
 * (feed.h) instead of holding a thread.
 *
 * Slow clients: libmicrohttpd's idle timeout restarts on every byte, so a
 * client trickling its headers would hold a connection for ever. A reaper
 * thread shuts down any connection whose request headers are not complete
 * header_timeout_s after it opened (or after its previous answer: an idle
 * keep-alive connection is closed then too, and clients open a new one). */
#ifndef CLINIC_API_HTTP_H
#define CLINIC_API_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"

typedef struct {
    const char *host;   /* IPv4 address to bind */
    uint16_t port;      /* 0: any free port */
    ca_db_t *db;        /* storage, not owned */
    char **collections; /* served collection names */
    int ncollections;
    bool control;     /* serve the control endpoints (loopback only) */
    int heartbeat_ms; /* SSE heartbeat interval */
    int max_poll_s;   /* cap of /v1/changes?timeout= */
    int threads;      /* HTTP worker threads */
    bool batch;       /* serve POST /v1/_batch (--no-batch: 404, as a server without it) */
    bool stream;      /* serve GET /v1/changes/stream (--no-stream: 404, long polling only) */
    bool strict_idempotency; /* If-Match is part of a key's request (--strict-idempotency) */
    int header_timeout_s; /* a request's headers must all arrive within this many seconds of
                             the connection's start or of the previous answer; 0: no bound */
    int per_ip_limit;     /* open connections per client address; 0: no limit */
    int max_connections;  /* open connections in all */
} ca_http_config_t;

typedef struct ca_http ca_http_t;

/* Binds and starts serving. NULL on failure (logged). cfg must outlive it. */
ca_http_t *ca_http_start(const ca_http_config_t *cfg);
/* The bound port (useful with port 0). */
uint16_t ca_http_port(const ca_http_t *h);
/* Stops accepting, ends parked requests and streams, stops the threads. */
void ca_http_stop(ca_http_t **h);

#endif
