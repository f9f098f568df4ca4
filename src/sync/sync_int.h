/* sync_int.h — inside the sync actor (src/sync/): its state, sync_t, and
 * what it holds (documents, mutations, requests, rounds, checks), the
 * tunables, and the functions its files share. Other actors talk to it
 * only through messages (therasync/sync.h). */
#ifndef THERASYNC_SYNC_INT_H
#define THERASYNC_SYNC_INT_H

#include "msgs/msgs.h"
#include "therasync/sync.h"
#include "therasync/api.h"
#include "msgs/call.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG "sync"
#define TICK_MS 20
#define HINT_WAIT_US 1500000      /* how long to wait for the store's cursor at start */
#define PAGE_LIMIT 500
#define PUSH_ATTEMPTS 3           /* the API actor's retries inside one push round */
#define PUSH_BACKOFF_BASE_MS 250  /* our schedule between rounds */
#define PUSH_BACKOFF_CAP_MS 30000
#define PROBE_BASE_MS 250
#define PROBE_CAP_MS 10000
#define LONGPOLL_S 25
#define ROUND_TIMEOUT_US 20000000 /* a `sync` call answers after this at the latest */
#define STATUS_CURSOR_EVERY_US 250000
#define BATCH_MAX_BYTES (512 * 1024) /* bodies per batch: well under the server's 1 MiB */
#define HOLD_MAX_US 2000000       /* a feed change waits this long at most for our push */

/* ---- state ---- */

typedef enum { M_QUEUED, M_SENDING, M_BACKOFF, M_FETCHING, M_SETTLING, M__LAST } mstate_t;

typedef enum { C_UNKNOWN, C_ONLINE, C_OFFLINE, C__LAST } cstate_t;

typedef enum { P_WAIT_HINT, P_CATCHUP, P_STREAM, P_LONGPOLL, P_POLL, P__LAST } pstate_t;

struct sdoc;

/* One queued mutation, as the outbox record says. */
typedef struct mut {
    struct mut *next;     /* the document's FIFO */
    struct sdoc *doc;
    int64_t seq;
    int64_t at_ms;
    int64_t base_version; /* the version the local write was made on */
    ts_op_t op;
    char mutation[37];
    char *body;           /* create: document without id; update: merge patch; delete: NULL */
    mstate_t state;
    int rounds;           /* failed push rounds (the backoff grows with them) */
    int rounds_out;       /* those whose request left (stuck_after counts these) */
    int64_t try_ms;       /* wall clock of the send in flight (SENDING) */
    int64_t sent_ms;      /* wall clock of the first send that may have reached the
                             server; 0 = none yet (a refused connect sends nothing) */
    bool sent;            /* that send is reported to the store (audit "sent") */
    bool stuck;           /* rounds >= stuck_after */
    bool dropped;         /* the store dropped it while a request was out */
    int64_t due_us;       /* BACKOFF: when to queue again */
} mut_t;

/* A document whose sdoc was freed after our writes to it were confirmed:
 * the version they brought it to. Their echoes from the feed can come later
 * still, and knowing them saves parsing each one and a store update (the
 * store would ignore them: it has that version). Direct-mapped by hash. */
#define RECENT_SLOTS 4096
typedef struct {
    uint64_t hash;        /* 0: empty */
    int64_t version;
    char coll[65];
    char id[65];
} recent_t;

/* A document with queued mutations (or confirmed ones whose DROP has not
 * come back yet: until then its version is still worth knowing). */
typedef struct sdoc {
    struct sdoc *hnext;
    mut_t *head, *tail;
    int64_t version;      /* the version our own confirmed writes (or a conflict we
                             resolved) brought the document to. If-Match is the larger of
                             this and the write's base version: a remote change the write
                             did not see must come back as a 409, so that the conflict
                             policy decides instead of the write silently winning */
    int heap_refs;        /* entries in the ready heap */
    int unacked;          /* confirmed seqs whose DROP has not arrived */
    int64_t paused_seq;   /* a cancel withheld this seq: nothing of the document goes out
                             until its DROP comes (with those of the writes that
                             depended on it, in the same batch) */
    /* A feed change that came while our write to the document was out: most
     * often the echo of that very write. It waits for the answer, which says
     * whether it is ours (dropped) or newer (applied); see hold_change. */
    char *held;           /* the change's document, as JSON text */
    size_t held_len;
    int64_t held_version, held_us;
    char hold_floor[65];  /* the cursor before it: the stored cursor stays there */
    struct sdoc *hold_prev, *hold_next;
    uint64_t hash;
    char coll[65];
    char id[65];
} sdoc_t;

typedef enum {
    R_PUSH,     /* a mutation's request */
    R_BATCH,    /* POST /v1/_batch: several documents' heads in one request */
    R_FETCH,    /* GET of the current document after a 409 without one */
    R_FEED,     /* a page of /v1/changes (catch-up, long poll, poll, drain) */
    R_STREAM,   /* the SSE stream */
    R_PROBE,    /* offline probe */
    R_DIGEST,   /* GET /v1/{coll}/digest */
    R_LIST,     /* a page of /v1/{coll}?since= (repair or invalidate) */
} rkind_t;

struct round;
struct check;

/* What a live request is for; the request's user. */
typedef struct req {
    struct req *prev, *next; /* live requests, freed at exit */
    rkind_t kind;
    uint64_t id;
    mut_t *m;               /* PUSH, FETCH */
    mut_t **batch;          /* BATCH: its mutations, in the order of the ops */
    size_t nbatch;
    bool drain;             /* FEED: a `sync` round's drain, not the feed's own */
    int64_t sent_us;        /* PUSH, BATCH: when sent; 0 once answered (push_overdue) */
    struct check *check;    /* DIGEST, LIST for a check */
    struct round *round;    /* LIST for invalidate */
} req_t;

/* A `sync` or `invalidate` call being worked on. */
typedef struct round {
    struct round *next;
    ts_envelope_t *envelope;
    ts_call_t *call;
    bool invalidate;
    int64_t deadline_us;
    uint64_t pushed0, pulled0;
    bool push_done, pull_done;
    bool drain_started;
    /* invalidate: collections still to page, documents refetched */
    int next_coll;          /* index into config collections; -1 when one was named */
    char coll[65];
    uint64_t invalidated;
    bool listing;
} round_t;

/* A consistency check of one collection. */
typedef enum { K_IDLE, K_DIGESTS, K_LOCAL_LIST, K_SERVER_LIST } kphase_t;
typedef struct check {
    kphase_t phase;
    int coll;
    bool have_local, have_server;
    uint64_t server_count;
    char server_hash[65];
    bool server_content;    /* the server's digest is of the content form */
    ts_digest_t *local;
    cJSON *items;           /* server documents (array), while listing */
} check_t;

typedef struct {
    const ts_config_t *config;
    ts_actor_t *actor;
    ts_loop_t *loop;
    void *inbox;            /* PULL TS_INPROC_SYNC: outbox, calls, digests, hints */
    void *api_in;           /* PULL TS_INPROC_SYNC_API: the API actor's answers */
    void *api;              /* PUSH TS_INPROC_API: pushes, digests, lists */
    void *api_feed;         /* PUSH TS_INPROC_API_FEED: the change feed */
    void *to_store;         /* PUSH TS_INPROC_STORE_SYNC */
    bool repairing;         /* a digest check or an invalidate is applying its repairs
                               (REMOTE.repair) */
    bool refetching;        /* ... an invalidate (REMOTE.refetch) */
    int64_t max_seq;        /* the highest outbox seq received: a cancel of a later one was
                               never sent (its record is still on its way) */
    int64_t *withheld;      /* seqs cancelled before their record came: never queued */
    size_t nwithheld, capwithheld;
    void *to_front;         /* PUSH TS_INPROC_FRONT */
    int64_t started_us;
    /* documents */
    sdoc_t **table;
    size_t table_cap, ndocs;
    struct heap_entry {
        int64_t seq;
        sdoc_t *doc;
    } *heap;
    size_t heap_len, heap_cap;
    mut_t **waiting;        /* BACKOFF heads */
    size_t nwaiting, waiting_cap;
    size_t queued;          /* mutations held */
    int in_flight;          /* SENDING + FETCHING */
    int push_reqs;          /* push, batch and fetch requests out (bounded by concurrency) */
    int batch_limit;        /* writes per batch now: sync.batch_size, halved on a 413 */
    bool batch_off;         /* the server has no batch route: one request per write */
    int stuck;
    /* connection */
    cstate_t conn;
    char api_state[24];     /* "ok", "offline", "timeout", "unauthorized", "tls", "error" */
    int consecutive_failures;
    int probe_failures;
    int64_t probe_due_us;
    uint64_t probe_id;
    char last_error[200];
    int64_t last_error_ms;  /* wall clock of last_error */
    int64_t last_sync_ms;   /* wall clock of the last good exchange; 0 = never */
    /* feed */
    pstate_t pull;
    char cursor[65];        /* "" = unknown */
    bool hint;              /* the store told us its cursor (or that it has none) */
    uint64_t feed_id;       /* the feed's request in flight (0 = none) */
    int64_t feed_due_us;    /* when to issue the next feed request (0 = not planned) */
    int feed_failures;
    int longpoll_timeouts;
    uint64_t stream_id;     /* 0 = no stream */
    bool stream_refused, longpoll_refused;
    sdoc_t *holds, *holds_tail; /* documents with a held change, oldest first */
    recent_t *recent;           /* RECENT_SLOTS; NULL when out of memory */
    uint64_t echoes;            /* feed changes that were our own writes */
    char cursor_sent[65];       /* the cursor last given to the store */
    uint64_t drain_id;      /* a round's drain page in flight */
    /* rounds, checks */
    round_t *rounds;
    check_t *checks;        /* one per collection */
    int64_t next_check_us;
    bool check_soon;        /* next_check_us was brought forward (sync_check_soon) */
    /* outgoing updates, flushed at the end of each turn */
    ts_sync_update_t **out;
    size_t nout, out_cap;
    /* status sent last, to send only changes */
    char status_sig[512];
    char status_cursor[65];
    size_t status_queued;
    int status_in_flight;
    int64_t status_sent_us;
    /* counters */
    uint64_t pushed, pulled, confirmed, rejected, conflicts, repairs, sends, retries;
    uint64_t requests, attempts, token_refreshes; /* the API actor's answers to us */
    uint64_t counters_sum;  /* of the counters status last carried (status.c) */
    req_t *reqs;
} sync_t;

extern const char *const sync_pstate_names[P__LAST];

/* sync.c: helpers, messages out, requests */
int64_t sync_backoff_us(int n, int64_t base_ms, int64_t cap_ms);
uint64_t sync_hash_key(const char *coll, const char *id);
ts_sync_update_t *sync_emit(sync_t *self, ts_sync_kind_t kind, const mut_t *m);
void sync_flush(sync_t *self);
req_t *sync_req_new(sync_t *self, rkind_t kind);
void sync_req_free(sync_t *self, req_t *r);
int sync_api_send(sync_t *self, ts_api_request_t *q, req_t *r);
ts_api_request_t *sync_get_request(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* status.c: status */
void sync_status_maybe_send(sync_t *self, bool force);

/* conn.c: the connection */
void sync_conn_watch(sync_t *self, int64_t now);
void sync_conn_note(sync_t *self, const ts_api_result_t *res, const char *what);
void sync_probe_send(sync_t *self);
void sync_on_probe(sync_t *self, ts_api_result_t *res);

/* queue.c: documents, the ready heap, mutation states, the outbox */
sdoc_t *sync_doc_find(sync_t *self, const char *coll, const char *id, uint64_t h);
int64_t sync_recent_version(const sync_t *self, const char *coll, const char *id, uint64_t h);
void sync_doc_maybe_free(sync_t *self, sdoc_t *d);
void sync_heap_push(sync_t *self, sdoc_t *d);
struct heap_entry sync_heap_pop(sync_t *self);
void sync_mstate_set(sync_t *self, mut_t *m, mstate_t to);
void sync_head_pop(sync_t *self, sdoc_t *d);
void sync_mut_forget(sync_t *self, mut_t *m);
void sync_on_cancel_ask(sync_t *self, ts_envelope_t *e);
void sync_on_outbox(sync_t *self, ts_record_t **ptrs, size_t n);

/* push.c: pushing and answers */
void sync_push_pump(sync_t *self);
void sync_on_push(sync_t *self, ts_api_result_t *res, mut_t *m);
void sync_on_batch(sync_t *self, ts_api_result_t *res, req_t *r);
void sync_on_fetch(sync_t *self, ts_api_result_t *res, mut_t *m);
void sync_push_wake(sync_t *self, int64_t now);

/* feed.c: the change feed */
void sync_pull_set(sync_t *self, pstate_t to);
void sync_hold_release(sync_t *self, sdoc_t *d);
void sync_holds_expire(sync_t *self, int64_t now);
size_t sync_apply_change(sync_t *self, const char *coll, const cJSON *doc);
bool sync_apply_changes_page(sync_t *self, const cJSON *page);
void sync_stream_close(sync_t *self);
void sync_feed_request(sync_t *self, bool drain, long timeout_s);
void sync_feed_next(sync_t *self);
void sync_on_feed(sync_t *self, ts_api_result_t *res);
void sync_on_stream_events(sync_t *self, ts_api_event_t **ptrs, size_t n);
void sync_on_stream_state(sync_t *self, ts_api_stream_msg_t *s);
void sync_on_stream_result(sync_t *self, ts_api_result_t *res);

/* check.c: consistency checks */
void sync_check_finish(sync_t *self, check_t *k);
void sync_checks_start_all(sync_t *self);
void sync_check_soon(sync_t *self, const char *why);
void sync_list_page(sync_t *self, check_t *k, round_t *rd, const char *coll, const char *since);
void sync_check_repair(sync_t *self, check_t *k);
void sync_on_digest_local(sync_t *self, ts_digest_t *dg);
void sync_on_digest_server(sync_t *self, ts_api_result_t *res, check_t *k);

/* round.c: `sync` and `invalidate` */
void sync_on_sync_call(sync_t *self, ts_envelope_t *e);
void sync_rounds_progress(sync_t *self);
void sync_on_drain(sync_t *self, ts_api_result_t *res);
void sync_on_list(sync_t *self, ts_api_result_t *res, req_t *r);

#endif
