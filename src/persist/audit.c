/* audit.c — the `audit` call: the audit trail, the outbox rows and the
 * pending packed writes, in one query. */
#include "persist/persist_int.h"

/* A pending packed write's "accepted" line, for the audit (seq first:
 * persist_cmp_seq sorts them by it). */
typedef struct {
    int64_t seq, at;
} pending_line_t;

static int cmp_line_at(const void *a, const void *b)
{
    const pending_line_t *x = a, *y = b;
    return x->at != y->at ? (x->at > y->at) - (x->at < y->at) : persist_cmp_seq(a, b);
}

/* Into the table temp.packed, for the audit's query: the "accepted" lines
 * of the pending packed writes it can show (of one collection,
 * document and client when given, from since_ms, the first limit of them by time).
 * Reads every pack: the audit is an operator's call, not a hot one. */
static int list_packed(persist_t *self, const char *coll, const char *id, const char *client,
                       int64_t since_ms, long long limit)
{
    if (persist_exec(self, "CREATE TEMP TABLE IF NOT EXISTS packed(at, mutation, coll, doc_id, "
                           "client, base_version); DELETE FROM temp.packed"))
        return -1;
    int64_t *gone;
    size_t ngone, n = 0, cap = 0;
    pending_line_t *lines = NULL;
    int rc = persist_load_gone(self, &gone, &ngone);
    ts_packed_t m;
    for (size_t i = 0; rc == 0 && i < self->packs.n; i++) {
        if (persist_cache_pack(self, &self->packs.entries[i]))
            rc = -1;
        for (size_t k = 0, pos; rc == 0 && k < self->ncached; k++) {
            pos = self->cached_at[k];
            if (!ts_pack_next(self->cached.data, self->cached.len, &pos, &m) ||
                m.at_ms < since_ms || (coll && strcmp(coll, m.collection) != 0) ||
                (id && strcmp(id, m.doc_id) != 0) ||
                (client && strcmp(client, m.client ? m.client : "") != 0) ||
                persist_is_gone(gone, ngone, m.seq))
                continue;
            if (n == cap)
                lines = ts_grow(lines, &cap, sizeof *lines, 1024);
            lines[n++] = (pending_line_t){m.seq, m.at_ms};
        }
    }
    /* only the first limit by time can show; read them in seq order */
    if (n) {
        qsort(lines, n, sizeof *lines, cmp_line_at);
        n = (long long)n > limit ? (size_t)limit : n;
        qsort(lines, n, sizeof *lines, persist_cmp_seq);
    }
    sqlite3_stmt *add = NULL;
    if (rc == 0)
        rc = sqlite3_prepare_v2(self->db, "INSERT INTO temp.packed VALUES(?,?,?,?,NULLIF(?,''),?)",
                                -1, &add, NULL) == SQLITE_OK ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        ts_pack_entry_t *entry = ts_pack_index_find(&self->packs, lines[i].seq);
        if (!entry || persist_packed_record(self, entry, lines[i].seq, &m) != 1) {
            rc = -1;
            break;
        }
        persist_bind_accepted(add, &m);
        rc = sqlite3_step(add) == SQLITE_DONE ? 0 : -1;
        sqlite3_reset(add);
    }
    sqlite3_finalize(add);
    free(lines);
    free(gone);
    return rc;
}

/* Answers an `audit` call: {collection?, id?, since?, until?, event?, client?,
 * limit?, offset?} → {entries}. */
void persist_answer_audit(persist_t *self, ts_call_t *call)
{
    const char *coll = ts_json_string(call->params, "collection");
    const char *id = ts_json_string(call->params, "id");
    const char *since = ts_json_string(call->params, "since");
    long long limit = 100, offset = 0;
    ts_json_int(call->params, "limit", &limit);
    ts_json_int(call->params, "offset", &offset);
    if (offset < 0) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.offset must be 0 or more");
        return;
    }
    const char *until = ts_json_string(call->params, "until");
    const char *event = ts_json_string(call->params, "event");
    const char *client = ts_json_string(call->params, "client");
    int64_t since_ms = 0, until_ms = INT64_MAX;
    if (since && ts_parse_rfc3339(since, &since_ms)) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.since must be an RFC 3339 time");
        return;
    }
    if (until && ts_parse_rfc3339(until, &until_ms)) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.until must be an RFC 3339 time");
        return;
    }
    static const char *const events[] = {"accepted", "sent",      "confirmed", "rejected",
                                         "conflict", "cancelled", "rekeyed",   "remote",
                                         "repaired", NULL};
    bool known = !event;
    for (int i = 0; events[i] && !known; i++)
        known = strcmp(event, events[i]) == 0;
    if (!known) { /* a filter that matches nothing silently would hide the trail */
        ts_call_fail(call, TS_E_INVALID_PARAMS,
                     "params.event must be one of accepted, sent, confirmed, rejected, conflict, "
                     "cancelled, rekeyed, remote, repaired");
        return;
    }
    if (limit < 1 || limit > 10000) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.limit must be 1..10000");
        return;
    }
    if (list_packed(self, coll, id, client, since_ms, limit + offset)) {
        ts_call_fail(call, TS_E_INTERNAL, "audit query failed: %s", sqlite3_errmsg(self->db));
        return;
    }
    sqlite3_stmt *stmt;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT at, mutation, coll, doc_id, event, client, version, reason FROM "
                           "(SELECT at, mutation, coll, doc_id, event, client, version,"
                           "  CASE WHEN outcome IS NULL THEN reason END AS reason, seq AS n, 0 AS k,"
                           "  client AS owner FROM audit"
                           " UNION ALL SELECT sent_at, mutation, coll, doc_id, 'sent', NULL,"
                           "  sent_version, NULL, seq, 1, client FROM audit WHERE sent_at IS NOT NULL"
                           " UNION ALL SELECT outcome_at, mutation, coll, doc_id, outcome, NULL,"
                           "  outcome_version, reason, seq, 2, client FROM audit"
                           "  WHERE outcome IS NOT NULL"
                           " UNION ALL SELECT at, mutation, coll, doc_id, 'accepted', client,"
                           "  NULLIF(base_version, 0), NULL, 9223372036854775807, 0, client FROM outbox"
                           " UNION ALL SELECT at, mutation, coll, doc_id, 'accepted', client,"
                           "  NULLIF(base_version, 0), NULL, 9223372036854775807, 0, client"
                           "  FROM temp.packed) "
                           "WHERE (?1 IS NULL OR coll = ?1) AND (?2 IS NULL OR doc_id = ?2) "
                           "AND at >= ?3 AND at < ?5 AND (?6 IS NULL OR event = ?6) "
                           "AND (?8 IS NULL OR owner = ?8) "
                           "ORDER BY at, n, k LIMIT ?4 OFFSET ?7",
                           -1, &stmt, NULL) != SQLITE_OK) {
        ts_call_fail(call, TS_E_INTERNAL, "audit query failed: %s", sqlite3_errmsg(self->db));
        return;
    }
    if (coll)
        sqlite3_bind_text(stmt, 1, coll, -1, SQLITE_STATIC);
    if (id)
        sqlite3_bind_text(stmt, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 3, since_ms);
    sqlite3_bind_int64(stmt, 4, limit);
    sqlite3_bind_int64(stmt, 5, until_ms);
    sqlite3_bind_int64(stmt, 7, offset);
    if (event)
        sqlite3_bind_text(stmt, 6, event, -1, SQLITE_STATIC);
    if (client) /* one client's writes, their sends and outcomes included */
        sqlite3_bind_text(stmt, 8, client, -1, SQLITE_STATIC);
    ts_buf_t b = {0}, plain = {0}; /* plain: a sealed reason opened */
    ts_buf_puts(&b, "{\"entries\":[");
    int rows = 0, rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        char at[32];
        ts_rfc3339(sqlite3_column_int64(stmt, 0), at);
        ts_buf_printf(&b, "%s{\"at\":\"%s\"", rows++ ? "," : "", at);
        static const char *names[] = {NULL, "mutation", "collection", "id", "event", "client"};
        for (int col = 1; col <= 5; col++) {
            const char *text = (const char *)sqlite3_column_text(stmt, col);
            if (!text || !*text) /* a server's change has no mutation */
                continue;
            ts_buf_printf(&b, ",\"%s\":", names[col]);
            ts_buf_json_string(&b, text, strlen(text));
        }
        if (sqlite3_column_type(stmt, 6) != SQLITE_NULL)
            ts_buf_printf(&b, ",\"version\":%lld", (long long)sqlite3_column_int64(stmt, 6));
        const char *reason;
        size_t reason_len;
        if (persist_column_value(self, stmt, 7, "audit",
                                 (const char *)sqlite3_column_text(stmt, 2),
                                 (const char *)sqlite3_column_text(stmt, 3), 0, &plain, &reason,
                                 &reason_len))
            reason = "(sealed; does not open: a damaged or moved row)";
        if (reason) {
            ts_buf_puts(&b, ",\"reason\":");
            ts_buf_json_string(&b, reason, strlen(reason));
        }
        ts_buf_puts(&b, "}");
    }
    sqlite3_finalize(stmt);
    ts_buf_free(&plain);
    ts_buf_puts(&b, "]}");
    size_t len;
    char *text = ts_buf_take(&b, &len);
    if (rc != SQLITE_DONE) {
        free(text);
        ts_call_fail(call, TS_E_INTERNAL, "audit query failed: %s", sqlite3_errmsg(self->db));
        return;
    }
    ts_call_set_result(call, text, len);
}
