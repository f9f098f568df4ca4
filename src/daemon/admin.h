/* admin.h — the daemon's admin endpoint (--admin HOST:PORT, loopback only):
 * HTTP /metrics (Prometheus text 0.0.4), /healthz and /readyz, served by
 * libmicrohttpd in threads of its own. It learns the engine's state the
 * way any client does: `metrics` and `status` calls to the front door, on
 * its inproc admin socket (TS_INPROC_FRONT_ADMIN), which needs no key. */
#ifndef THERASYNC_ADMIN_H
#define THERASYNC_ADMIN_H

#include "therasync/config.h"

typedef struct ts_admin ts_admin_t;

/* Listens on config->admin; bound (may be NULL) gets "HOST:PORT" as bound
 * (the port chosen when it was 0). NULL on failure (logged). */
ts_admin_t *ts_admin_start(void *zctx, const ts_config_t *config, char *bound, size_t boundlen);
/* The engine is ready (every actor started): /readyz may say so, and the
 * endpoint starts asking the front door. */
void ts_admin_set_ready(ts_admin_t *admin);
/* Stops serving and closes its ZeroMQ socket (before zmq_ctx_term). */
void ts_admin_stop(ts_admin_t **admin);

#endif
