/* front.h — the front-door actor: JSON-RPC 2.0 over a ZeroMQ ROUTER, and
 * the PUB socket of change events.
 *
 * It parses and checks each request (size, UTF-8, JSON, JSON-RPC shape,
 * method, params), turns it into a ts_envelope_t and sends it down the
 * pipeline (store → persist → back here for writes, store → back here for
 * reads), then answers in the envelope the client used and publishes the
 * events the calls produced, after they are durable (events as soon as the
 * envelope is back, answers in each client's order). Each client's answers
 * leave in the order of its requests: every request takes a ticket, and an
 * answer that arrives early waits for the ones before it. Beyond
 * max_inflight calls in the pipeline, new requests are answered `busy`.
 *
 * Other actors publish events by sending [topic, payload] frames to a PUSH
 * socket connected to TS_INPROC_EVENTS. The store sends remote changes
 * there with a third frame, the persist batch (uint32_t, see
 * ts_envelope_t.persist_batch) whose events must go out first. */
#ifndef THERASYNC_FRONT_H
#define THERASYNC_FRONT_H

#include "therasync/actor.h"
#include "therasync/config.h"

typedef struct {
    const ts_config_t *config;
    char endpoint[256]; /* filled before ready: the endpoints as bound */
    char events[256];
} ts_front_args_t;

ts_actor_t *ts_front_start(void *zctx, ts_front_args_t *args);

/* Reads a CURVE key file (therasync keygen): `public KEY` and `secret KEY`
 * lines (# comments). With secret_key NULL only the public key is
 * wanted; with it, the secret is required (the public one is derived when
 * absent). Keys are 40 characters of Z85 plus NUL. 0, or -1 with err. */
int ts_curve_read_key(const char *path, char public_key[41], char secret_key[41], char *err,
                      size_t errlen);

/* therasyncd --check-config: whether the clients file parses; 0 with the
 * number of keys in *n, or -1 with err. */
int ts_clients_file_check(const char *path, size_t *n, char *err, size_t errlen);

#endif
