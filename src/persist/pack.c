/* pack.c — the outbox's packs in SQLite (their format is outbox.c's): the
 * pack being written, the index of live packs, the last pack read, a
 * packed mutation leaving the outbox (its gone mark, its audit row, its
 * pack when it was the last), and the gone marks read back. */
#include "persist/persist_int.h"

/* ---- packs (outbox.h) ---- */

/* A pack is written once it holds this much, so that no row nears SQLite's
 * limit (a commit takes up to 16,384 writes of up to max_request_bytes). */
#define PACK_MAX_BYTES (8u << 20)

/* Writes the pack being made, if any, as one outbox row. */
int persist_flush_pack(persist_t *self)
{
    if (!self->pack_count)
        return 0;
    sqlite3_stmt *s = self->insert_pack;
    sqlite3_bind_int64(s, 1, self->pack_first);
    sqlite3_bind_int64(s, 2, self->pack_last);
    sqlite3_bind_int64(s, 3, self->pack_count);
    int rc = persist_bind_value(self, s, 4, "pack", "", "", self->pack_first, self->pack.data,
                                self->pack.len, true)
                 ? SQLITE_NOMEM
                 : sqlite3_step(s);
    sqlite3_reset(s);
    uint32_t count = self->pack_count;
    self->pack_count = 0;
    ts_buf_reset(&self->pack);
    if (rc != SQLITE_DONE)
        return -1;
    ts_pack_index_add(&self->packs, self->pack_first, self->pack_last, count);
    return 0;
}

int persist_add_to_pack(persist_t *self, const ts_record_t *r)
{
    if (ts_pack_append(&self->pack, r))
        return -1;
    self->seq_high = r->seq;
    if (!self->pack_count++)
        self->pack_first = r->seq;
    self->pack_last = r->seq;
    return self->pack.len >= PACK_MAX_BYTES ? persist_flush_pack(self) : 0;
}

/* The index of live packs, read again from the database (at start, and
 * after a failed commit whose changes to it were rolled back). */
void persist_load_pack_index(persist_t *self)
{
    self->packs.n = 0;
    self->seq_high = 0;
    self->cached_first = 0; /* it may be of a pack that was rolled back */
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT first_seq, last_seq, count - (SELECT count(*) FROM outbox_gone "
                           "WHERE seq BETWEEN first_seq AND last_seq) FROM outbox_pack "
                           "ORDER BY first_seq",
                           -1, &s, NULL) != SQLITE_OK) {
        ts_error(LOG, "cannot read the outbox's packs: %s", sqlite3_errmsg(self->db));
        return;
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
        int64_t last = sqlite3_column_int64(s, 1), live = sqlite3_column_int64(s, 2);
        if (last > self->seq_high)
            self->seq_high = last;
        if (live <= 0) { /* deleted with its last write: never left behind */
            ts_warn(LOG, "outbox pack at seq %lld has no live writes", (long long)last);
            continue;
        }
        ts_pack_index_add(&self->packs, sqlite3_column_int64(s, 0), last, (uint32_t)live);
    }
    sqlite3_finalize(s);
    if (sqlite3_prepare_v2(self->db, "SELECT max(seq) FROM outbox", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int64(s, 0) > self->seq_high)
        self->seq_high = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
}

/* Reads the pack at entry into the cache, with its records' offsets,
 * unless it is the one there already. */
int persist_cache_pack(persist_t *self, const ts_pack_entry_t *entry)
{
    if (self->cached_first == entry->first)
        return 0;
    self->cached_first = 0;
    self->ncached = 0;
    ts_buf_reset(&self->cached);
    sqlite3_stmt *s = self->read_pack;
    sqlite3_bind_int64(s, 1, entry->first);
    int ok = sqlite3_step(s) == SQLITE_ROW;
    const char *records = NULL;
    size_t len = 0;
    if (ok && self->seal) /* opened straight into the cache */
        ok = persist_column_value(self, s, 0, "pack", "", "", entry->first, &self->cached,
                                  &records, &len) == 0 && records;
    else if (ok)
        ts_buf_append(&self->cached, sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0));
    sqlite3_reset(s);
    if (!ok && self->seal)
        ts_error(LOG, "the outbox pack at seq %lld does not open with the store's key (damaged)",
                 (long long)entry->first);
    ts_packed_t m;
    for (size_t pos = 0, at = 0; ok && ts_pack_next(self->cached.data, self->cached.len, &pos, &m);
         at = pos) {
        if (self->ncached == self->cached_cap)
            self->cached_at =
                ts_grow(self->cached_at, &self->cached_cap, sizeof *self->cached_at, 256);
        self->cached_at[self->ncached++] = at;
    }
    if (!ok)
        return -1;
    self->cached_first = entry->first;
    return 0;
}

/* The packed mutation seq of the pack at entry into *out: 1, 0 when it is
 * not there, -1 when the pack cannot be read. The last pack read is kept:
 * drops come mostly in seq order, many from one pack. */
int persist_packed_record(persist_t *self, const ts_pack_entry_t *entry, int64_t seq,
                          ts_packed_t *out)
{
    if (persist_cache_pack(self, entry))
        return -1;
    size_t lo = 0, hi = self->ncached; /* records are in seq order */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, pos = self->cached_at[mid];
        if (!ts_pack_next(self->cached.data, self->cached.len, &pos, out))
            return -1;
        if (out->seq == seq)
            return 1;
        if (out->seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* A packed mutation's "accepted" line as parameters 1-6: at, mutation,
 * coll, doc_id, client (NULLIF'd to NULL when empty), base_version. */
void persist_bind_accepted(sqlite3_stmt *s, const ts_packed_t *m)
{
    sqlite3_bind_int64(s, 1, m->at_ms);
    sqlite3_bind_text(s, 2, m->mutation, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, m->collection, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, m->doc_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, m->client, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, m->base_version);
}

/* A packed mutation leaves the outbox: its audit row (accepted, and with
 * r->event its send and outcome), its gone mark, and its pack when it was
 * the pack's last. 1; 0 when it is not there or gone already (the caller
 * writes the outcome's lines alone); -1 on failure. */
int persist_drop_packed(persist_t *self, const ts_record_t *r, ts_pack_entry_t *entry)
{
    ts_packed_t m;
    int found = persist_packed_record(self, entry, r->seq, &m);
    if (found <= 0)
        return found;
    sqlite3_stmt *s = self->mark_gone;
    sqlite3_bind_int64(s, 1, r->seq);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return -1;
    if (sqlite3_changes(self->db) == 0)
        return 0;
    s = self->archive_packed;
    persist_bind_accepted(s, &m);
    rc = r->event[0] && persist_bind_outcome(self, s, 7, r) ? SQLITE_NOMEM : sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE)
        return -1;
    if (--entry->live > 0)
        return 1;
    sqlite3_bind_int64(self->delete_pack, 1, entry->first);
    sqlite3_bind_int64(self->delete_gone, 1, entry->first);
    sqlite3_bind_int64(self->delete_gone, 2, entry->last);
    int rc1 = sqlite3_step(self->delete_pack), rc2 = sqlite3_step(self->delete_gone);
    sqlite3_reset(self->delete_pack);
    sqlite3_reset(self->delete_gone);
    if (self->cached_first == entry->first)
        self->cached_first = 0;
    ts_pack_index_remove(&self->packs, entry);
    return rc1 == SQLITE_DONE && rc2 == SQLITE_DONE ? 1 : -1;
}

int persist_cmp_seq(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The seqs marked gone, sorted, into *gone (malloc'd). 0, or -1. */
int persist_load_gone(persist_t *self, int64_t **gone, size_t *n)
{
    sqlite3_stmt *s;
    size_t cap = 0;
    *gone = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(self->db, "SELECT seq FROM outbox_gone ORDER BY seq", -1, &s, NULL) !=
        SQLITE_OK)
        return -1;
    while (sqlite3_step(s) == SQLITE_ROW) {
        if (*n == cap)
            *gone = ts_grow(*gone, &cap, sizeof **gone, 1024);
        (*gone)[(*n)++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    return 0;
}

bool persist_is_gone(const int64_t *gone, size_t n, int64_t seq)
{
    return n && bsearch(&seq, gone, n, sizeof *gone, persist_cmp_seq);
}
