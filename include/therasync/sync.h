/* sync.h — the sync actor, and the messages it exchanges with the store.
 *
 * The sync actor keeps the local replica and the Clinic API converged. It
 * owns the push queue (per document FIFO, heads in flight concurrently) and
 * the change feed (initial paged pull, then server-sent events, long
 * polling as a fallback), talks HTTP only through the API actor (api.h),
 * and decides online/offline. It never touches documents itself: every
 * outcome goes to the store as a ts_sync_update_t, and the store applies it
 * (confirm, roll back, rebase, resolve a conflict with the Lua policy) and
 * makes it durable through persist in one transaction.
 *
 * Who sends what:
 *
 *   store → sync   TS_MSG_OUTBOX once after recovery: every pending
 *                  mutation as a TS_REC_MUTATION record list, in seq order.
 *   persist → sync TS_MSG_OUTBOX after each commit: the committed records
 *                  (TS_REC_MUTATION: push it; TS_REC_DROP: forget that seq,
 *                  it was cancelled, rolled back or replaced; other kinds:
 *                  ignore). Records arrive in commit order; a MUTATION with
 *                  a seq already queued replaces the queued one (a conflict
 *                  resolution rewrote it: new mutation id, new body).
 *   store → sync   TS_MSG_SYNC_CALL: ptrs[0] is an envelope whose one call
 *                  is `sync` (or `invalidate`): run one push+pull round (or
 *                  refetch), set the call's result, send the envelope to
 *                  TS_INPROC_FRONT as TS_MSG_ANSWERS.
 *   store → sync   TS_MSG_DIGEST: ptrs: ts_digest_t* answered (see below).
 *   (sync → store messages go to TS_INPROC_STORE_SYNC, read first.)
 *   sync → store   TS_MSG_SYNC_UPDATES: ptrs: ts_sync_update_t*, applied in
 *                  order and made durable together (a page of remote changes
 *                  and its CURSOR commit in one transaction).
 *   sync → store   TS_MSG_DIGEST_ASK: ptrs[0]: ts_digest_t* to fill.
 *
 * Records (call.h) carry for a MUTATION: seq, mutation id, op, collection,
 * doc_id, body (create: the document WITHOUT "id" — put the id back when
 * sending; update: the merge patch; delete: NULL) and version = the base
 * version the write was made on (0 = never synced). */
#ifndef THERASYNC_SYNC_H
#define THERASYNC_SYNC_H

#include "therasync/actor.h"
#include "therasync/config.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "msgs/endpoints.h"


typedef enum {
    TS_SYNC_CONFIRMED, /* the server accepted mutation seq; doc = its answer (NULL after a
                          delete), version = the new version */
    TS_SYNC_REJECTED,  /* the server refused mutation seq for good (422, 403, 404 on
                          update/delete, 400): roll it back; error/message/errors say why */
    TS_SYNC_CONFLICT,  /* 409/412 for mutation seq; doc = the server's current document
                          (theirs); the store runs the conflict policy */
    TS_SYNC_REKEY,     /* 422 on the idempotency key of mutation seq: the server holds it
                          for another request. The store gives the same write a new id in
                          its place (a replacement, as after a conflict) */
    TS_SYNC_REMOTE,    /* a change from the feed or a repair: doc (with "deleted": true for
                          a tombstone); applied when its version is newer than the store's.
                          A digest repair of a document the server no longer lists as live
                          sends doc {"id": X, "deleted": true} with no version and
                          version = 0: a forced tombstone (the server's truth), applied
                          whatever the local version */
    TS_SYNC_CURSOR,    /* the feed position (cursor) covering the REMOTE updates before it */
    TS_SYNC_SENT,      /* mutation seq was sent and its answer is not in yet (a round
                          failed, or it was dropped while in flight): the audit line "sent"
                          (sent_ms, sent_version). A write answered at once reports its send
                          on its CONFIRMED/REJECTED/CONFLICT instead */
    TS_SYNC_STATUS,    /* status = the sync part of the `status` result (see below) */
    TS_SYNC_ANSWER,    /* answer = a `sync` or `invalidate` call, answered: it travels
                          behind the updates it waited for, through the store and persist,
                          so a read its client sends next sees them */
} ts_sync_kind_t;

typedef struct ts_sync_update {
    ts_sync_kind_t kind;
    char collection[65];
    char doc_id[65];
    int64_t seq;         /* the mutation's outbox seq (CONFIRMED, REJECTED, CONFLICT, SENT) */
    char mutation[37];   /* its id, for events and the audit trail */
    int64_t version;     /* CONFIRMED: new server version */
    cJSON *doc;          /* owned; see the kinds */
    char error[32];      /* REJECTED: ts_api_error_name() of the class, e.g. "validation" */
    char message[256];   /* REJECTED: a human-readable reason */
    cJSON *errors;       /* REJECTED on 422: the server's [{field, message}]; owned */
    char cursor[65];     /* CURSOR */
    bool repair;         /* REMOTE from a digest check's repair or an invalidate (audited as
                            "repaired"): applied also at the store's version when the
                            content differs (a body changed at the server without a new
                            version), replacing the confirmed body */
    bool refetch;        /* that repair comes from an `invalidate` call (its audit reason) */
    bool fetched;        /* REMOTE from an on-demand fetch: applied even to a document the
                            store does not hold (a feed change of an on-demand collection
                            is applied only to documents it holds) */
    int64_t sent_ms;     /* not 0: the mutation's first send (wall clock), not reported yet;
                            the store writes its audit line "sent" before the outcome's */
    int64_t sent_version;/* the base version the write was sent on, for that line */
    /* STATUS: {online, api, last_sync_at, last_error, cursor, stuck, oldest_pending_at?...}
     * The store adds pending and collections, and publishes sync.status when
     * online changes or pending crosses 0. Owned. */
    cJSON *status;
    struct ts_envelope *answer; /* ANSWER; owned */
} ts_sync_update_t;

ts_sync_update_t *ts_sync_update_new(ts_sync_kind_t kind);
void ts_sync_update_free(ts_sync_update_t *update);

/* A digest of one collection's confirmed documents, as the Clinic API
 * computes it (hex SHA-256 of "id:version:content\n" over live documents in
 * byte order of id, content being the hex ts_json_content_sha256 of the
 * body; docs/CLINIC_API.md). The sync actor fills collection (and
 * want_versions) and sends it to the store; the store fills count, hash
 * and, when asked, the sorted id/version/content list, and sends it back to
 * TS_INPROC_SYNC. */
typedef struct {
    char collection[65];
    bool want_versions;  /* also list every live confirmed id and version */
    uint64_t count;
    char hash[65];
    char hash_versions[65]; /* the older form, "id:version\n" lines (?form=version) */
    size_t nversions;
    struct ts_digest_entry {
        char id[65];
        int64_t version;
        char content[65]; /* hex content hash of the body */
    } *versions;         /* owned; sorted by id */
    void *user;          /* the sync actor's */
} ts_digest_t;

void ts_digest_free(ts_digest_t *digest);

/* Starts the sync actor (and, inside it, nothing else: the API actor is
 * started by the daemon and reached at TS_INPROC_API). NULL on failure. */
ts_actor_t *ts_sync_start(void *zctx, const ts_config_t *config);

#endif
