/* cache.h — the cache actor: memoized and live queries (docs/CACHE.md).
 *
 * Sockets: PULL bound at TS_INPROC_CACHE takes the store's changes, reads
 * and run results (in order, on one connection) and the front door's
 * word of clients gone; PUSH to the store (runs), to the front door
 * (answers, notifications) and to persist (metrics on their way). */
#ifndef THERASYNC_CACHE_H
#define THERASYNC_CACHE_H

#include "therasync/actor.h"
#include "therasync/config.h"

ts_actor_t *ts_cache_start(void *zctx, const ts_config_t *config);

#endif
