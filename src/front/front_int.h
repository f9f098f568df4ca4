/* front_int.h — inside the front-door actor (src/front/): its state,
 * front_t, the clients with answers outstanding, and the functions its
 * files share. Other actors talk to it only through messages
 * (therasync/front.h). */
#ifndef THERASYNC_FRONT_INT_H
#define THERASYNC_FRONT_INT_H

#include "msgs/msgs.h"
#include "therasync/front.h"
#include "msgs/call.h"
#include "therasync/hist.h"
#include "therasync/hmap.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define LOG "front"
/* What a subscriber that does not read can cost: ZeroMQ queues up to its
 * send high-water mark of events for it and drops the newest beyond that
 * (the HWM counts messages, not bytes), so the bytes are bounded by
 * bounding an event's size too: an event over EVENT_MAX_BYTES goes out
 * without its doc (the subscriber reads it with `get`). 128 MiB a
 * subscriber; a 100,000-event HWM let one hold ~860 MB of 300 KB events.
 * 8,192 events are 0.8 s of 10,000 writes a second: with 1,024 a healthy
 * subscriber briefly off the CPU lost events (the realtime bench, 2 of
 * 2,000 remote changes). 16 KiB holds a session with long notes. */
#define EVENT_MAX_BYTES (16 << 10)
#define EVENT_QUEUE_BYTES (128 << 20)

/* One client with answers outstanding, by its routing id. */
typedef struct client {
    struct client *next;       /* hash chain */
    uint64_t assigned;         /* sequence numbers given to its requests */
    uint64_t last_write_msg;   /* the front door's message that carried its last write */
    uint64_t sent;             /* answers released so far */
    ts_envelope_t *held;       /* early answers, by sequence */
    ts_envelope_t *held_last;  /* the last of them: most arrive in order */
    size_t id_len;
    unsigned char id[];
} client_t;

#define CLIENT_BUCKETS 4096

/* A remote change the store sent straight here: it waits until the persist
 * batch that carried its document's previous event has been published. */

/* The events published on one topic so far. */
typedef struct {
    char *name;
    size_t len;
    uint64_t seq;
} topic_t;

typedef struct front_auth front_auth_t; /* auth.c */

typedef struct {
    const ts_config_t *config;
    ts_front_args_t *args;
    front_auth_t *auth; /* client keys; NULL without (everyone is admin) */
    client_t *clients[CLIENT_BUCKETS];
    void *router;     /* clients */
    void *admin;      /* ROUTER on TS_INPROC_FRONT_ADMIN: the admin endpoint's status and
                         metrics */
    void *pub;        /* events */
    void *replies;    /* PULL: envelopes back from persist */
    void *events_in;  /* PULL: events from other actors */
    void *to_store;   /* PUSH */
    void *to_cache;   /* PUSH: clients gone */
    ts_loop_t *loop;
    ts_buf_t scratch; /* a write's body, printed */
    size_t inflight;  /* calls in the pipeline */
    uint64_t store_msgs;     /* REQUESTS messages sent to the store (a client's last with a
                                write: client_t.last_write_msg) */
    size_t warn_at;   /* next queue depth worth a warning (doubles) */
    bool draining;
    int64_t drain_deadline_us;
    uint32_t published_batch;   /* the last persist batch whose events are out */
    ts_event_t *early, *early_last; /* remote changes waiting for a batch, in order */
    char boot[37];    /* this run's id, in every event */
    topic_t *topics;  /* each topic's seq, for subscribers to see a gap */
    size_t ntopics;
    ts_buf_t slim;    /* an event too large, without its doc */
    /* hot.c: copies of the cache's hot answers */
    hmap_t hot;
    struct { char *selector, *bound; } *hot_sels; /* each selector's lower-bound param */
    size_t nhot_sels;
    ts_seen_t hot_seen;      /* the copies reflect the writes of messages up to front_msg,
                                and the store's work up to mark */
    uint64_t told_mark;      /* the store's mark on what has gone out to clients */
    ts_envelope_t *hot_held, *hot_held_last; /* reads waiting for the copies (held_next) */
    ts_buf_t hot_key;
    /* metrics */
    ts_hist_t latency[TS_M__LAST];
    uint64_t errors, busy, too_large, parse_errors, hot_hits, hot_holds;
    ts_hist_t hot_hold_us;   /* how long held reads waited for the copies */
} front_t;

/* parse.c */
/* From socket: self->router, or self->admin (status and metrics only). */
ts_envelope_t *front_read_request(front_t *self, void *socket, bool *more);
/* One request's text into an envelope; fast false: the general way only
 * (tests/fuzz/fuzz_front.c holds the two ways to the same calls). */
ts_envelope_t *front_parse_payload(front_t *self, const char *data, size_t len, bool fast);

/* answer.c */
void front_take_ticket(front_t *self, ts_envelope_t *e);
/* openrpc.c: answers rpc.discover with docs/openrpc.json */
void front_answer_discover(ts_call_t *call);
void front_deliver(front_t *self, ts_envelope_t *e);
/* A response's start, `{"jsonrpc":"2.0","id":ID,`, into b (call has an id). */
void front_response_head(ts_buf_t *b, const ts_call_t *call);
void front_send_notices(front_t *self, ts_notice_t *notices);
/* The message that carried the last write of e's client still unanswered
 * (0: none); noting a write's message for its client. */
uint64_t front_client_writes(front_t *self, const ts_envelope_t *e);
void front_note_write(front_t *self, const ts_envelope_t *e);

/* front.c */
void front_to_cache(front_t *self, ts_envelope_t **reads, size_t n);

/* hot.c */
/* e's wait_for and wait_mark set; true: answered, or held. */
bool front_hot_answer(front_t *self, ts_envelope_t *e);
void front_hot_release(front_t *self, bool all, int64_t older_us);
void front_hot_take(front_t *self, ts_hot_t *hot);
void front_hot_free_all(front_t *self);

/* auth.c */
/* With client keys configured: reads the daemon's key pair and the clients
 * file and binds the ZAP handler into self->loop. 0, or -1 (logged). */
int front_auth_open(front_t *self, void *zctx);
/* Makes socket a CURVE server (before it binds). 0 or -1. */
int front_auth_secure(const front_t *self, void *socket);
/* Reads the clients file again; on a fault the old list stays. 0 or -1. */
int front_auth_reload(front_t *self);
void front_auth_close(front_t *self);
/* Refuses each call of e beyond the role of the key that sent frame (its
 * User-Id and X-Key, set by the ZAP handler), all of them for a key no
 * longer listed, names the key in e->client, and limits a non-admin's
 * audit to its own writes. */
bool front_auth_check(front_t *self, ts_envelope_t *e, zmq_msg_t *frame);
/* Whether events go out with their documents. */
bool front_auth_event_bodies(const front_t *self);

/* events.c */
void front_publish_events(front_t *self, ts_envelope_t *e);
void front_read_events(front_t *self, void *socket, int max);
void front_early_release(front_t *self, bool all);

#endif
