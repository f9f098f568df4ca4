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
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct {
    const ts_config_t *config;
    ts_front_args_t *args;
    client_t *clients[CLIENT_BUCKETS];
    void *router;     /* clients */
    void *pub;        /* events */
    void *replies;    /* PULL: envelopes back from persist */
    void *events_in;  /* PULL: events from other actors */
    void *to_store;   /* PUSH */
    void *to_cache;   /* PUSH: clients gone */
    ts_loop_t *loop;
    ts_buf_t scratch; /* a write's body, printed */
    size_t inflight;  /* calls in the pipeline */
    uint64_t store_msgs;     /* REQUESTS messages sent to the store */
    uint64_t last_write_msg; /* the last of them with a write: reads sent straight to the
                                cache wait for the store to have handled it */
    size_t warn_at;   /* next queue depth worth a warning (doubles) */
    bool draining;
    int64_t drain_deadline_us;
    uint32_t published_batch;   /* the last persist batch whose events are out */
    ts_event_t *early, *early_last; /* remote changes waiting for a batch, in order */
    char boot[37];    /* this run's id, in every event */
    topic_t *topics;  /* each topic's seq, for subscribers to see a gap */
    size_t ntopics;
    ts_buf_t slim;    /* an event too large, without its doc */
    /* metrics */
    ts_hist_t latency[TS_M__LAST];
    uint64_t errors, busy, too_large, parse_errors;
} front_t;

/* parse.c */
ts_envelope_t *front_read_request(front_t *self, bool *more);
/* One request's text into an envelope; fast false: the general way only
 * (tests/fuzz/fuzz_front.c holds the two ways to the same calls). */
ts_envelope_t *front_parse_payload(front_t *self, const char *data, size_t len, bool fast);

/* answer.c */
void front_take_ticket(front_t *self, ts_envelope_t *e);
void front_deliver(front_t *self, ts_envelope_t *e);
void front_send_notices(front_t *self, ts_notice_t *notices);

/* events.c */
void front_publish_events(front_t *self, ts_envelope_t *e);
void front_read_events(front_t *self, void *socket, int max);
void front_early_release(front_t *self, bool all);

#endif
