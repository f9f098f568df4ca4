/* endpoints.h — every inproc endpoint between the engine's actors, in one
 * place. Each is bound by its receiver (a PULL) and connected to by its
 * senders (PUSH); the messages on it are in msgs.def. */
#ifndef THERASYNC_ENDPOINTS_H
#define THERASYNC_ENDPOINTS_H

#define TS_INPROC_STORE "inproc://store"          /* store: REQUESTS, ROLLBACK, RECOVERED... */
/* The store's second inbox, for the sync actor only: the store reads it
 * before the front door's, so a remote change does not wait behind a
 * backlog of local writes. */
#define TS_INPROC_STORE_SYNC "inproc://store-sync"
#define TS_INPROC_PERSIST "inproc://persist"      /* persist: COMMIT, RECOVER, RECOVER_ACK */
#define TS_INPROC_CHECKPOINT "inproc://checkpoint" /* persist's checkpointer: CHECKPOINT */
#define TS_INPROC_CACHE "inproc://cache"          /* cache: CACHE_CHANGES, CACHE_READS, GONE... */
#define TS_INPROC_FRONT "inproc://front-replies"  /* front: ANSWERS */
#define TS_INPROC_EVENTS "inproc://events"        /* front: events to publish */
/* The front door's second ROUTER, for the daemon's admin endpoint (its
 * DEALER): JSON-RPC like the public one, `status` and `metrics` only, and
 * no client key even with CURVE on, as no one outside the process can
 * reach an inproc endpoint. */
#define TS_INPROC_FRONT_ADMIN "inproc://front-admin"
#define TS_INPROC_SYNC "inproc://sync"            /* sync: OUTBOX, SYNC_CALL, DIGEST... */
#define TS_INPROC_SYNC_API "inproc://sync-api"    /* sync: the api actors' answers */
#define TS_INPROC_API "inproc://api"              /* api (pushes and checks): API_REQUEST */
/* A second api actor carries the change feed (stream, long polls), so
 * remote changes never wait behind a backlog of pushes. */
#define TS_INPROC_API_FEED "inproc://api-feed"
#define TS_INPROC_API_RESULTS "inproc://api-results" /* a request's default reply_to */

#endif
