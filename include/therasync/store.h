/* store.h — the store actor: the in-memory replica and the only writer of it.
 *
 * For each document it keeps the confirmed (server) version and the ordered
 * pending local mutations; the visible document is the confirmed one with
 * the pending ones applied, so a rollback is dropping a mutation and
 * recomputing. Documents are kept as compact JSON text (parsed only when a
 * call needs fields), which keeps a million documents well under 512 MiB.
 *
 * Sockets: PULL bound at TS_INPROC_STORE takes TS_MSG_REQUESTS from the
 * front door (answers reads, applies writes, attaches durable records and
 * events, passes the envelopes on to TS_INPROC_PERSIST), TS_MSG_RECOVERED
 * chunks at start, and TS_MSG_ROLLBACK from persist. The actor reports
 * ready only after the durable state is loaded. */
#ifndef THERASYNC_STORE_H
#define THERASYNC_STORE_H

#include "therasync/actor.h"
#include "therasync/config.h"

ts_actor_t *ts_store_start(void *zctx, const ts_config_t *config);

/* therasyncd --check-config: whether the policies the config names (or the
 * shipped ones) load as the store would load them. 0 with "DIR (N
 * selectors)" in summary, or -1 with err. */
int ts_store_check_policies(const ts_config_t *config, char *summary, size_t summary_len,
                            char *err, size_t errlen);

#endif
