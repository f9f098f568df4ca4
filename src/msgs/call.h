/* call.h — what flows through the engine's pipeline.
 *
 * Every inbound front-door message becomes one ts_envelope_t holding one
 * ts_call_t per JSON-RPC request (one, or many for a batch). Envelopes travel
 * front → store → persist → front by pointer (ts_wire), in order, so one
 * client's requests are answered in the order sent:
 *   - front parses and checks params; a bad call is answered there but still
 *     travels, to keep its place in line;
 *   - store applies the call to its state, fills the result or error, and
 *     attaches the durable records and the events the call produced;
 *   - persist appends the records and commits (group commit) before passing
 *     the envelopes on;
 *   - front sends the replies and then publishes the events. */
#ifndef THERASYNC_CALL_H
#define THERASYNC_CALL_H

#include "therasync/util.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The methods of the front door: one row each in methods.def. */
typedef enum {
#define TS_METHOD(id, name, owner, flags, role, doc) TS_M_##id,
#include "msgs/methods.def"
#undef TS_METHOD
    TS_M_NONE, /* no valid method: the call is answered with an error */
    TS_M__LAST
} ts_method_t;

typedef enum {
    TS_OWNER_FRONT,
    TS_OWNER_STORE,
    TS_OWNER_CACHE,
    TS_OWNER_PERSIST,
    TS_OWNER_SYNC
} ts_owner_t;
/* What a client key may do (methods.def's ROLE), each role all of the one
 * before it. */
typedef enum { TS_ROLE_NONE, TS_ROLE_READ, TS_ROLE_WRITE, TS_ROLE_ADMIN } ts_role_t;
enum {
    TS_MF_WRITE = 1 << 0,
    TS_MF_COLLECTION = 1 << 1,
    TS_MF_PERSIST = 1 << 2,
    TS_MF_FRONT = 1 << 3,
    TS_MF_READ = 1 << 4,
};

typedef struct {
    const char *name;
    ts_owner_t owner;
    unsigned flags;
    ts_role_t role;
    const char *doc;
} ts_method_info_t;

/* The row of a method (TS_M_NONE: a row named "(none)" without flags). */
const ts_method_info_t *ts_method_info(ts_method_t method);
const char *ts_method_name(ts_method_t method);
/* Whether the method's row has all of flags. */
bool ts_method_is(ts_method_t method, unsigned flags);
/* Returns the method for a name, or TS_M_NONE. */
ts_method_t ts_method_lookup(const char *name);
/* "read", "write", "admin" ("none" for TS_ROLE_NONE). */
const char *ts_role_name(ts_role_t role);
/* The role named by the len bytes at name, or TS_ROLE_NONE. */
ts_role_t ts_role_lookup(const char *name, size_t len);

/* Error codes of the front door (docs/PROTOCOL.md, Errors). */
enum {
    TS_E_PARSE = -32700,
    TS_E_INVALID_REQUEST = -32600,
    TS_E_NO_METHOD = -32601,
    TS_E_INVALID_PARAMS = -32602,
    TS_E_INTERNAL = -32603,
    TS_E_NOT_FOUND = -32001,
    TS_E_VALIDATION = -32002,
    TS_E_CONFLICT = -32003,
    TS_E_POLICY = -32004,
    TS_E_BUSY = -32005,
    TS_E_UNAUTHORIZED = -32006,
    TS_E_TOO_LARGE = -32007,
    TS_E_UNKNOWN_COLLECTION = -32008,
    TS_E_UNAVAILABLE = -32009, /* an on-demand read the Clinic API could not serve */
};
/* The reason name for a code (error.data.reason), or NULL for the JSON-RPC codes. */
const char *ts_error_reason(int code);

/* The sync actor's word on a mutation a client wants cancelled. */
enum {
    TS_CANCEL_UNASKED,  /* not asked (no sync actor: nothing is ever sent) */
    TS_CANCEL_WITHHELD, /* never sent, and now never will be: drop it */
    TS_CANCEL_SENT,     /* sent at least once: the server may have applied it */
};

/* Durable operations, appended by persist before the call is answered. */
typedef enum {
    TS_REC_MUTATION,    /* append a pending mutation to the outbox */
    TS_REC_DROP,        /* remove a mutation from the outbox (cancel, confirm, reject); its
                           "accepted" line moves to the audit trail, and with event set
                           its outcome (event, at_ms, version) and first send (sent_ms,
                           sent_version) go in the same row: a confirmation is one audit
                           row, not three */
    TS_REC_CONFIRMED,   /* store the server's version of a document (body NULL: deleted) */
    TS_REC_CURSOR,      /* the change-feed position (body) */
    TS_REC_AUDIT,       /* one line of the audit trail: event, mutation, ids, version,
                           client, reason (body); never a document */
    TS_REC_MATCH,       /* a pending mutation (seq) goes out with If-Match `version`: an
                           earlier write of ours to its document was answered with it */
} ts_record_kind_t;

typedef enum { TS_OP_CREATE = 1, TS_OP_UPDATE = 2, TS_OP_DELETE = 3 } ts_op_t;

typedef struct ts_record {
    struct ts_record *next;
    ts_record_kind_t kind;
    ts_op_t op;
    int64_t seq;          /* outbox sequence (MUTATION, DROP) */
    int64_t version;      /* base version (MUTATION) or server version (CONFIRMED); 0 = none */
    int64_t at_ms;        /* wall clock when accepted */
    char mutation[37];    /* mutation id (UUIDv7) */
    char event[16];       /* AUDIT: accepted, sent, confirmed, rejected, conflict, cancelled */
    char client[48];      /* AUDIT: who made the write, where known */
    int64_t sent_ms;      /* DROP with an outcome: its first send (0: none here) */
    int64_t sent_version; /* and the version it was sent on */
    const char *collection; /* points into data[] */
    const char *doc_id;     /* points into data[] */
    const char *body;       /* points into data[]; NULL when absent */
    size_t body_len;
    char data[];
} ts_record_t;

/* Allocates a record with copies of the strings (body may be NULL). */
ts_record_t *ts_record_new(ts_record_kind_t kind, const char *collection, const char *doc_id,
                           size_t doc_id_len, const char *body, size_t body_len);
void ts_record_free_list(ts_record_t *head);

/* Many records in one allocation, for streaming the durable state at start. */
typedef struct {
    size_t count;
    size_t used;
    size_t cap;
    ts_record_t *head, *tail;
    _Alignas(16) char mem[];
} ts_chunk_t;

ts_chunk_t *ts_chunk_new(size_t bytes);
/* Adds a record; returns it, or NULL when the chunk is full. */
ts_record_t *ts_chunk_add(ts_chunk_t *chunk, ts_record_kind_t kind, const char *collection,
                          const char *doc_id, const char *body, size_t body_len);

/* An event to publish on the PUB socket: topic frame, then payload frame. */
typedef struct ts_event {
    struct ts_event *next;
    size_t topic_len;
    size_t payload_len;
    uint32_t after;   /* EVENTS: publish once the events of this persist batch are
                         out (0: at once); keeps one document's events in order */
    int64_t held_us;  /* when the front door began to hold it for `after` */
    uint64_t mark;    /* a remote change's or a policy reload's: the store's mark past it
                         (ts_envelope_t.mark) */
    char data[];      /* topic, then payload */
} ts_event_t;

ts_event_t *ts_event_new(const char *topic, const char *payload, size_t payload_len);
void ts_event_free_list(ts_event_t *head);

typedef struct {
    ts_method_t method;
    char *id_json;        /* the request's id as JSON text; NULL for a notification */
    cJSON *params;        /* owned; NULL when absent */
    const char *collection; /* params.collection, checked by front (the config's name) */
    char *doc_id;         /* update, delete, get: params.id; create: params.doc.id, or NULL
                             for an id the store makes; checked by front */
    bool has_base_version; /* update: params.base_version, checked by front */
    long long base_version;
    char *body;           /* create / update: params.doc / params.patch as stored (no id,
                             no server fields), printed by the front door so that the
                             store, the pipeline's one serial stage, does not have to */
    size_t body_len;
    /* the answer: an error (err_code != 0) or a result */
    int err_code;
    char *err_message;
    cJSON *err_data;      /* extra fields for error.data (reason is added) */
    char *result;         /* result JSON text */
    size_t result_len;
    cJSON *partial;       /* a result object later stages add to (metrics); front prints it */
    uint8_t fresh;        /* an on-demand answer: TS_FRESH_* (msgs/cache.h), 0 = not one */
    int64_t cancel_seq;   /* cancel: the pending mutation's outbox seq (store, for sync) */
    uint8_t cancel_verdict; /* TS_CANCEL_*: what the sync actor found (CANCEL_ASK) */
    int64_t age_ms;       /* and the age of what it was read from */
    ts_record_t *records; /* what must be durable before the answer */
    ts_event_t *events;   /* what to publish after the answer */
} ts_call_t;

typedef struct ts_envelope {
    size_t route_len;     /* ROUTER routing frames, packed: [u32 len][bytes]... */
    unsigned char *route;
    bool delimiter;       /* the client sent an empty frame before the payload */
    bool batch;           /* the request was a JSON array */
    bool unordered;       /* only reads: answered as soon as back, not in line with
                             the client's writes (front door) */
    bool internal;        /* made by an actor (sync updates), not by a client: no answer,
                             not counted in the front door's in-flight calls */
    bool admin;           /* came on TS_INPROC_FRONT_ADMIN: answered there */
    char client[48];      /* who sent it, for the audit trail ("zmq:<routing id hex>") */
    uint64_t client_seq;  /* its place among that client's requests (front door) */
    struct ts_envelope *held_next; /* front door: answers waiting for earlier ones */
    uint64_t front_msg;   /* the front door's message to the store that carried it */
    uint64_t wait_for;    /* a read sent straight to the cache: the last front door message
                             with its client's writes before it, whose changes it must see
                             first, */
    uint64_t wait_mark;   /* ... and the store's mark on what clients were told before it */
    bool hot_want;        /* ... of a question the front door has no copy of: the cache
                             sends it one (HOT) */
    uint64_t mark;        /* the store's mark when it passed this on (ts_seen_t): what a
                             client learns from its answer, the front door's copies of the
                             cache's answers must have seen before they answer again */
    uint32_t persist_batch; /* the store's message to persist that carried it (0: none):
                               the front door publishes remote changes in this order */
    int64_t received_us;
    char *reply;          /* the whole JSON-RPC answer, when the front door made it at once
                             (front/hot.c): sent as it is, without another copy */
    size_t reply_len;
    size_t ncalls;
    ts_call_t calls[];
} ts_envelope_t;

ts_envelope_t *ts_envelope_new(size_t ncalls);
void ts_envelope_free(ts_envelope_t *envelope);

/* Whether a call is a query by selector name that does not opt out of the
 * cache ("cache": false): the cache answers it when it comes alone. */
bool ts_call_cacheable_query(const ts_call_t *call);

/* Sets an error on a call (message is copied). */
void ts_call_fail(ts_call_t *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets the result (the text is taken over). */
void ts_call_set_result(ts_call_t *call, char *result, size_t len);
/* Sets the result to what buf holds (taken over; buf is left empty), or
 * fails the call with an internal error when buf is empty (out of memory). */
void ts_call_set_buffer(ts_call_t *call, ts_buf_t *buf);


#include "msgs/endpoints.h"

#endif
