/* store_int.h — inside the store actor (src/store/): its state, store_t,
 * the documents (doc_t: the server's version, the pending mutations, what
 * readers see), each collection's table, and the functions its files
 * share. Other actors talk to it only through messages (therasync/store.h). */
#ifndef THERASYNC_STORE_INT_H
#define THERASYNC_STORE_INT_H

#include "msgs/msgs.h"
#include "therasync/store.h"
#include "msgs/call.h"
#include "store/index.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "policy/policy.h"
#include "store/query.h"
#include "therasync/sync.h"
#include "therasync/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG "store"

/* A pending local mutation; body is the created document (create), the
 * merge patch (update) or empty (delete). Fields are ordered so the body
 * starts right after them: with a million pending documents every byte of
 * header counts. */
typedef struct mutation {
    struct mutation *next;
    int64_t seq;
    int64_t base_version;  /* the version it was made on, raised to the versions our
                              earlier writes to the document were answered with: the
                              If-Match it goes out with (see store_raise_if_match) */
    int64_t at_ms;
    uint32_t body_len;
    uint8_t id[16];        /* the mutation's UUIDv7, binary */
    uint8_t op;
    char body[];
} mutation_t;

/* The server's version of a document. */
typedef struct {
    int64_t version;
    uint32_t len;
    bool hashed;           /* content holds the text's content hash (digest checks) */
    uint8_t content[32];   /* ts_json_text_content_sha256 of text, computed once */
    char text[];           /* JSON; empty for a tombstone */
} confirmed_t;

enum { VISIBLE_OWNED, VISIBLE_IS_CONFIRMED, VISIBLE_IS_CREATE };

/* Writes waiting to sync on one document. Beyond it a write is answered
 * busy: the pending list is walked per write, and npending is 16 bits. */
#define TS_MAX_PENDING_PER_DOC 10000

/* One document: 32 bytes of header plus its id, so that with a UUID id it
 * fits an 80-byte malloc chunk. The JSON texts kept for it (visible,
 * confirmed, a create's body) are objects WITHOUT the "id" member: the id
 * lives here once, and store_append_doc()/store_parse_doc() put it back first. That
 * saves ~45 bytes a document, which a million documents need. */
typedef struct doc {
    char *visible;         /* what readers see; NULL = absent or deleted */
    confirmed_t *confirmed;/* the server's version; NULL = never synced */
    mutation_t *pending;   /* oldest first */
    uint32_t visible_len;
    uint32_t event_batch;  /* the persist batch carrying its last event (see
                              publish_remote_change) */
    uint16_t npending;
    uint8_t visible_kind;  /* VISIBLE_*: whether visible is its own allocation */
    uint8_t id_len;
    char id[];             /* not NUL-terminated: use id_len */
} doc_t;

/* A slot is one word: the document pointer in the low 48 bits (all that
 * x86-64 and AArch64 user space use) and 16 more bits of the id's hash as a
 * tag, so probing compares tags and touches a document only on a likely
 * match. 0 is an empty slot. */
typedef uintptr_t slot_t;
#define SLOT_PTR_BITS 48
#define SLOT_PTR_MASK (((uintptr_t)1 << SLOT_PTR_BITS) - 1)

/* Visible changes not yet told to the cache (store_flush_cache). */
typedef struct {
    ts_change_t *head, *last;
    bool on;               /* off while recovering: the cache has nothing yet */
    uint8_t origin;        /* TS_CHANGE_* of what the store is applying */
    /* Collections the cache may hold something of: one it asked to run a
     * query on (its first answer comes after this), or on demand. Writes
     * to the others cost nothing here (ingest with no reader). */
    bool watched[TS_MAX_COLLECTIONS];
    /* The store's mark: advanced by every change told to the cache and every
     * policy load, stamped on what leaves the store (ts_envelope_t.mark). */
    uint64_t mark, mark_sent;
} changes_t;

typedef struct {
    const char *name;
    char topic[80];        /* "doc.<name>", its doc.changed events' topic */
    slot_t *slots;         /* open addressing, linear probing, load <= 3/4 */
    uint32_t *hash32;      /* hash32[i]: the low bits of slots[i]'s id hash, so that
                              growing the table reads no document: the writes
                              wait 4 ms at 100,000 documents, not 10 */
    size_t cap;            /* power of two */
    size_t used;           /* entries (visible or not) */
    size_t live;           /* entries with a visible document */
    ts_sq_coll_t *q;       /* its indexes (store_query.c); told of every visible change */
    changes_t *changes;    /* the store's, for the cache */
    uint16_t index;        /* in the config's collections */
} collection_t;

typedef struct {
    const ts_config_t *config;
    collection_t collections[TS_MAX_COLLECTIONS];
    size_t ncollections;
    int64_t seq;           /* last outbox sequence number */
    size_t pending;        /* pending mutations over all documents */
    void *inbox;           /* PULL */
    void *sync_inbox;      /* PULL TS_INPROC_STORE_SYNC: the sync actor's updates, read first */
    void *to_persist;      /* PUSH */
    void *to_sync;         /* PUSH: outbox at start, sync calls, digests (NULL: standalone) */
    void *to_front;        /* PUSH: answers that need nothing durable (reads) */
    bool recovering;
    const char *client;    /* the client of the envelope being handled, for the audit */
    char cursor[65];       /* the change-feed position, as persisted */
    cJSON *sync_status;    /* the sync actor's part of `status` */
    bool last_online;
    bool last_pending_zero;
    const char *storage;   /* persist's word on the data dir (NULL: ok); static */
    const char *last_storage;
    uint64_t confirmed, rejected, conflicts, remote_applied;
    struct base_snapshot *snapshots; /* see remember_base() */
    int64_t oldest_checked_us, oldest_cached; /* see oldest_pending_ms() */
    int64_t started_us;      /* when the store started: status.uptime_s */
    ts_buf_t scratch;      /* reused for printing documents and results */
    uint64_t calls[TS_M__LAST];
    uint64_t rejected_writes;
    ts_sq_t *sq;           /* policies: validation, selectors and their indexes */
    void *events;          /* PUSH to TS_INPROC_EVENTS: events without a call (SIGHUP
                              reload, sync.status, remote changes) */
    uint32_t persist_batch;/* messages of envelopes sent to persist so far */
    void *to_cache;        /* PUSH TS_INPROC_CACHE: changes, then reads, then results */
    changes_t changes;
    bool lower_bounds[TS_MAX_COLLECTIONS]; /* has a lower-bound selector: changes carry
                                              their membership (ts_sq_membership) */
    bool ask_sync;         /* the call just handled asks the sync actor first (cancel) */
    uint64_t *cancels_out; /* front door messages of cancels with the sync actor, oldest
                              first: CACHE_SEEN stays below them (their rollback is a
                              change a later read must see) */
    size_t ncancels_out, capcancels_out;
    uint64_t seen_mark, seen_sent; /* the front door's messages with writes handled, and
                                      told to the cache (CACHE_SEEN) */
    ts_envelope_t **cache_reads;
    size_t ncache_reads, capcache_reads;
} store_t;

/* When a remote change rebases a document that has pending writes, the
 * server version those writes were made on is still needed: if one of them
 * meets a 409, the conflict policy gets it as `base`. It is kept here, off
 * the document (rare, so a list), until the document has nothing pending. */
typedef struct base_snapshot {
    struct base_snapshot *next;
    const doc_t *doc;
    confirmed_t *base;
} base_snapshot_t;

static inline doc_t *doc_at(const collection_t *c, size_t i)
{
    return (doc_t *)(c->slots[i] & SLOT_PTR_MASK);
}

static inline int64_t doc_version(const doc_t *d)
{
    return d->confirmed ? d->confirmed->version : 0;
}

/* store.c */
int store_send_to_persist(store_t *self, ts_envelope_t **envelopes, size_t n);
void store_stamp(store_t *self, ts_envelope_t **envelopes, size_t n);
void store_flush_cache(store_t *self);

/* table.c */
doc_t *store_find_doc(collection_t *c, const char *id);
doc_t *store_get_or_add_doc(collection_t *c, const char *id, size_t len);
int store_uuid_parse(const char *text, uint8_t out[16]);
collection_t *store_find_collection(store_t *self, const char *name);
void store_append_doc(ts_buf_t *b, const doc_t *d);
cJSON *store_parse_doc(const doc_t *d);
void store_set_visible(collection_t *c, doc_t *d, char *text, size_t len, int kind);
const char *store_print_scratch(store_t *self, const cJSON *doc, size_t *len);
char *store_print_doc(store_t *self, const cJSON *doc, size_t *len);
int store_apply_mutation(store_t *self, collection_t *c, doc_t *d, mutation_t *m);
void store_recompute(store_t *self, collection_t *c, doc_t *d, mutation_t **dropped);
void store_append_mutation(store_t *self, doc_t *d, mutation_t *m);
mutation_t *store_mutation_new(ts_op_t op, const char *body, size_t len);
void store_free_doc(doc_t *d);

/* write.c */
void store_set_doc_result(ts_call_t *call, const doc_t *d, bool with_doc);
void store_add_event(ts_call_t *call, const char *topic, const char *payload, size_t len);
uint32_t store_next_batch(const store_t *self);
void store_note_event(store_t *self, doc_t *d);
void store_doc_changed_text(ts_buf_t *b, const collection_t *c, const doc_t *d,
                      const char *origin);
void store_add_doc_changed_from(store_t *self, ts_call_t *call, const collection_t *c, doc_t *d,
                          const char *origin);
void store_append_record(ts_call_t *call, ts_record_t *r);
void store_add_mutation_record(ts_call_t *call, const collection_t *c, const doc_t *d,
                         const mutation_t *m, const char *self_client);
void store_add_drop_record(ts_call_t *call, const collection_t *c, const doc_t *d,
                     const mutation_t *m);
void store_raise_if_match(ts_call_t *call, const collection_t *c, const doc_t *d,
                    int64_t version);
/* m NULL: a change of the server's, without a local mutation. */
void store_add_audit(ts_call_t *call, const collection_t *c, const doc_t *d,
               const mutation_t *m, const char *event, const char *client,
               int64_t version, const char *reason);
void store_do_create(store_t *self, ts_call_t *call, collection_t *c);
void store_do_update(store_t *self, ts_call_t *call, collection_t *c);
void store_do_delete(store_t *self, ts_call_t *call, collection_t *c);
void store_do_cancel(store_t *self, ts_call_t *call);

/* read.c */
void store_do_get(ts_call_t *call, collection_t *c);
void store_do_query(store_t *self, ts_call_t *call, collection_t *c);
void store_do_status(store_t *self, ts_call_t *call);
void store_maybe_publish_status(store_t *self);
void store_do_metrics(store_t *self, ts_call_t *call);
void store_add_freshness(ts_call_t *call);

/* apply.c */
void store_forget_base_if_settled(store_t *self, const doc_t *d);
void store_apply_sync_updates(store_t *self, ts_sync_update_t **ptrs, size_t n);

/* recover.c */
void store_hand_outbox_to_sync(store_t *self);
void store_recover_record(store_t *self, const ts_record_t *r);

/* digest.c */
void store_answer_digest(store_t *self, ts_digest_t *dg);
/* The content hash of a confirmed body (computed once, then kept in it). */
const uint8_t *store_confirmed_content(confirmed_t *conf);

#endif
