/* db.h — document storage for clinic-api on SQLite (WAL).
 *
 * One connection shared by all HTTP threads under a mutex: simple and
 * correct, and fast enough (see bench/clinic-api.md). synchronous=NORMAL:
 * a committed write survives a crash of the process, and may be lost only by
 * a power failure or OS crash — acceptable for a reference server.
 *
 * Every document row carries the cursor of its latest change, drawn from one
 * counter shared by all collections; the change feed is "documents whose
 * cursor > since, in cursor order", so each document appears once, at its
 * latest state, and a tombstone replaces a deleted document. */
#ifndef CLINIC_API_DB_H
#define CLINIC_API_DB_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "therasync/util.h"

typedef struct ca_db ca_db_t;

/* Opens (creating if needed) the database at path. NULL on failure (logged). */
ca_db_t *ca_db_open(const char *path);
void ca_db_close(ca_db_t **db);

/* The latest cursor handed out (0 when the database is empty). */
int64_t ca_db_head(ca_db_t *db);

/* What the feed functions append per row. */
typedef enum {
    CA_FEED_ITEMS,   /* doc,doc,...                         (GET /v1/{coll}) */
    CA_FEED_CHANGES, /* {"collection":c,"doc":doc},...       (GET /v1/changes) */
    CA_FEED_SSE,     /* id: N\ndata: {...}\n\n ...           (stream) */
} ca_feed_fmt_t;

/* Appends up to limit rows with cursor > since (coll NULL: every collection)
 * to out in fmt. Sets *last to the cursor of the last row (since when none)
 * and *more when further rows exist. Returns the row count, or -1. */
int ca_db_feed(ca_db_t *db, const char *coll, int64_t since, int limit, ca_feed_fmt_t fmt,
               ts_buf_t *out, int64_t *last, bool *more);

/* Appends the stored document (tombstones excluded) and sets *version (when
 * not NULL) to its version. 1 found, 0 not, -1 error. */
int ca_db_get(ca_db_t *db, const char *coll, const char *id, ts_buf_t *out, int64_t *version);

/* Called for each live document of a scan, in id order; returns nonzero to
 * stop the scan. body is the stored text (len bytes, NUL-terminated). */
typedef int (*ca_scan_fn)(void *ctx, const char *id, const char *body, size_t len);
/* Calls fn for the live documents of coll whose id sorts after after_id
 * ("" = from the first), in id byte order (the filtered listing). 0 or -1. */
int ca_db_scan(ca_db_t *db, const char *coll, const char *after_id, ca_scan_fn fn, void *ctx);

/* Creates the demo patients pat-0001 .. pat-N (invented data) in coll,
 * each under the idempotency key demo-seed:ID, so a restart with the same
 * flag changes nothing (nor brings back a deleted one). Returns how many
 * were created now, or -1. */
int ca_db_seed_patients(ca_db_t *db, const char *coll, int n);

/* Appends {"count":N,"hash":"HEX","form":F} for the live documents of
 * coll: the SHA-256 of "id:version:CONTENT\n" lines (content: the hex
 * SHA-256 of the canonical body, ts_json_content_sha256) or, with
 * content false, of the older "id:version\n" lines. 0 or -1. */
int ca_db_digest(ca_db_t *db, const char *coll, bool content, ts_buf_t *out);

/* A hand fix, for tests (POST /_control/docs/{coll}/{id}): the live
 * document's body becomes doc's members (cJSON object, taken), at the same
 * version and cursor, so no change reaches the feed. Appends the stored
 * document to out. 1, 0 when there is no such live document, or -1. */
int ca_db_hand_fix(ca_db_t *db, const char *coll, const char *id, cJSON *doc, ts_buf_t *out);

typedef enum { CA_OP_CREATE, CA_OP_PATCH, CA_OP_DELETE } ca_op_t;

typedef struct {
    ca_op_t op;
    const char *coll;
    const char *id;          /* create: the (possibly generated) id */
    const cJSON *doc;        /* create: the document; patch: the merge patch */
    const char *rendered;    /* create: optional ca_doc_render(doc, id, 1) text,
                                used when the id is new (spares the writer) */
    bool has_if_match;       /* patch/delete: If-Match given */
    int64_t if_match;        /* the expected version; -1 for "*" */
    const char *idem_key;    /* Idempotency-Key or NULL */
    const char *fingerprint; /* hash of the request, compared on replay */
} ca_write_t;

typedef struct {
    int status;     /* HTTP status of the answer */
    ts_buf_t body;  /* JSON answer (empty for 204) */
    int64_t cursor; /* the change's cursor when applied, else 0 */
    bool replayed;  /* answered from the idempotency table */
} ca_reply_t;

/* Applies one write atomically together with its idempotency record.
 * A key seen before with the same fingerprint replays the first answer; with
 * another fingerprint the answer is 422. Answers 201/200/204, 404, 409
 * {current}, 422 (a patch producing an invalid document). Returns 0, or -1 on
 * a storage error (nothing applied, r->status 500). */
int ca_db_write(ca_db_t *db, const ca_write_t *w, ca_reply_t *r);

/* Group commit: applies n writes in order in one transaction (each sees the
 * ones before it), so n answers cost one commit. When the transaction fails
 * the writes are retried one by one. Returns the head cursor afterwards. */
int64_t ca_db_write_batch(ca_db_t *db, const ca_write_t *const *ws, ca_reply_t *const *rs,
                          size_t n);

/* Renders the stored text of a document: id, version, updated_at (now)
 * first, then the fields of src other than the reserved ones. Consumes src
 * (NULL allowed for a tombstone). Returns malloc'd text, or NULL. */
char *ca_doc_render(cJSON *src, const char *id, int64_t version, bool tombstone);
/* The same for a document given as compact text (as cJSON prints it), by
 * splicing instead of rebuilding it: when its only reserved member is an
 * "id" equal to id, first. Returns NULL otherwise (render it from the tree
 * then) or when out of memory. */
char *ca_doc_render_text(const char *text, size_t len, const char *id, int64_t version);

/* Checks the reserved fields of a document (create, or patch result).
 * Appends {"field":..,"message":..} entries, comma-separated, to errors;
 * returns the number of problems found. */
int ca_doc_check(const cJSON *doc, const char *path_id, ts_buf_t *errors);
/* Whether v is a non-negative integer a double holds exactly (at most
 * 2^53 - 1), read into *out: checked before any cast, since (int64_t)1e300
 * is undefined behaviour. */
bool ca_json_count(const cJSON *v, int64_t *out);
/* Adds to errors the first number in doc that JSON cannot carry
 * (overflowed to infinity, like 1e400), naming its field ("a.b[2]");
 * returns how many it added (0 or 1), as ca_doc_check does. */
int ca_doc_numbers(const cJSON *doc, ts_buf_t *errors);

#endif
