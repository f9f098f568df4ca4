/* records.c — a commit's records into SQLite, one statement per kind
 * (outbox rows, drops with their audit rows, confirmed documents, the
 * cursor, audit lines), and the outbox_match rows: the If-Match a pending
 * mutation goes out with. */
#include "persist/persist_int.h"

/* Binds text (len -1: up to its NUL), or SQL NULL when text is NULL. */
static void bind_text_or_null(sqlite3_stmt *s, int i, const char *text, int len)
{
    if (text)
        sqlite3_bind_text(s, i, text, len, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

/* Binds v, or SQL NULL when it is 0 (none). */
static void bind_int64_or_null(sqlite3_stmt *s, int i, int64_t v)
{
    if (v)
        sqlite3_bind_int64(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

/* A DROP's first send and outcome, bound from parameter first on: sent_at,
 * sent_version, outcome, outcome_at, outcome_version, reason. */
int persist_bind_outcome(persist_t *self, sqlite3_stmt *s, int first, const ts_record_t *drop)
{
    bind_int64_or_null(s, first, drop->sent_ms);
    sqlite3_bind_int64(s, first + 1, drop->sent_version);
    sqlite3_bind_text(s, first + 2, drop->event, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, first + 3, drop->at_ms);
    sqlite3_bind_int64(s, first + 4, drop->version);
    /* a server's reason can quote the document: sealed */
    return persist_bind_value(self, s, first + 5, "audit", drop->collection, drop->doc_id, 0,
                              drop->body, drop->body_len, false);
}

/* The send and outcome of a DROP whose mutation is not in the outbox, as
 * lines of their own. */
static int write_outcome_lines(persist_t *self, const ts_record_t *drop)
{
    ts_record_t line = *drop;
    line.kind = TS_REC_AUDIT;
    if (drop->sent_ms) {
        line.at_ms = drop->sent_ms;
        line.version = drop->sent_version;
        line.body = NULL;
        ts_copy_text(line.event, sizeof line.event, "sent");
        if (persist_write_record(self, &line))
            return -1;
    }
    line = *drop;
    line.kind = TS_REC_AUDIT;
    return persist_write_record(self, &line);
}

static int step_match(sqlite3_stmt *s, const ts_record_t *r)
{
    sqlite3_bind_int64(s, 1, r->seq);
    sqlite3_bind_int64(s, 2, r->version);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* A mutation leaves the outbox: so does its If-Match row, if it has one. */
static int drop_match_row(persist_t *self, int64_t seq)
{
    sqlite3_bind_int64(self->drop_match, 1, seq);
    int rc = sqlite3_step(self->drop_match);
    sqlite3_reset(self->drop_match);
    if (rc != SQLITE_DONE)
        return -1;
    if (sqlite3_changes(self->db) > 0)
        self->matches--;
    return 0;
}

int persist_write_record(persist_t *self, const ts_record_t *r)
{
    sqlite3_stmt *s;
    switch (r->kind) {
    case TS_REC_MUTATION: /* a rewrite (see commit_batch) */
        s = self->insert_mutation;
        sqlite3_bind_int64(s, 1, r->seq);
        sqlite3_bind_text(s, 2, r->mutation, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 3, (int)r->op);
        sqlite3_bind_text(s, 4, r->collection, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, r->doc_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, r->version);
        sqlite3_bind_int64(s, 7, r->at_ms);
        if (persist_bind_value(self, s, 8, "outbox", r->collection, r->doc_id, r->seq, r->body,
                               r->body_len, false))
            return -1;
        bind_text_or_null(s, 9, r->client[0] ? r->client : NULL, -1);
        break;
    case TS_REC_DROP: {
        if (self->matches > 0 && drop_match_row(self, r->seq))
            return -1;
        /* live in a pack, or else a row (or neither) */
        ts_pack_entry_t *entry = ts_pack_index_find(&self->packs, r->seq);
        int dropped = entry ? persist_drop_packed(self, r, entry) : 0;
        if (dropped)
            return dropped < 0 ? -1 : 0;
        sqlite3_stmt *a = r->event[0] ? self->archive_outcome : self->archive_mutation;
        sqlite3_bind_int64(a, 1, r->seq);
        int rc = r->event[0] && persist_bind_outcome(self, a, 2, r) ? SQLITE_NOMEM
                                                                    : sqlite3_step(a);
        sqlite3_reset(a);
        sqlite3_clear_bindings(a);
        if (rc != SQLITE_DONE)
            return -1;
        if (r->event[0] && sqlite3_changes(self->db) == 0 && write_outcome_lines(self, r))
            return -1; /* not in the outbox: its lines go on their own */
        s = self->drop_mutation;
        sqlite3_bind_int64(s, 1, r->seq);
        break;
    }
    case TS_REC_CONFIRMED:
        s = self->put_confirmed;
        sqlite3_bind_text(s, 1, r->collection, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, r->doc_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, r->version);
        if (persist_bind_value(self, s, 4, "docs", r->collection, r->doc_id, r->version, r->body,
                               r->body_len, false))
            return -1;
        break;
    case TS_REC_CURSOR: /* the server's feed position: may be a token */
        s = self->put_cursor;
        if (persist_bind_value(self, s, 1, "meta", "cursor", "", 0, r->body ? r->body : "",
                               r->body ? strlen(r->body) : 0, false))
            return -1;
        break;
    case TS_REC_AUDIT:
        s = self->insert_audit;
        sqlite3_bind_int64(s, 1, r->at_ms);
        sqlite3_bind_text(s, 2, r->mutation, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, r->collection, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, r->doc_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, r->event, -1, SQLITE_STATIC);
        bind_text_or_null(s, 6, r->client[0] ? r->client : NULL, -1);
        bind_int64_or_null(s, 7, r->version);
        if (persist_bind_value(self, s, 8, "audit", r->collection, r->doc_id, 0, r->body,
                               r->body_len, false))
            return -1;
        break;
    case TS_REC_MATCH:
        if (step_match(self->put_match, r))
            return -1;
        if (sqlite3_changes(self->db) > 0) {
            self->matches++;
            return 0;
        }
        return step_match(self->raise_match, r); /* raised again */
    default:
        return -1;
    }
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? 0 : -1;
}
