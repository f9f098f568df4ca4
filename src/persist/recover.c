/* recover.c — recovery: the durable state streamed to the store at start
 * in chunks (the server's versions, then the pending mutations with their
 * If-Match, then the feed cursor), at most a few chunks in flight. */
#include "persist/persist_int.h"

#include <pthread.h>

#define RECOVERY_CHUNK_BYTES (1u << 20)
#define PERSIST_CACHE_KIB 32768 /* SQLite's page cache after recovery */
/* Chunks sent but not yet consumed by the store: bounds memory at start. */
#define RECOVERY_CHUNKS_IN_FLIGHT 3

/* Sends a recovered chunk, first waiting for the store to consume one if
 * too many are in flight. */
static void send_chunk(persist_t *self, ts_chunk_t *chunk, int *in_flight)
{
    while (*in_flight >= RECOVERY_CHUNKS_IN_FLIGHT) {
        ts_msg_t m;
        if (ts_msg_recv(self->inbox, 0, &m))
            break;
        if (m.kind == TS_MSG_RECOVER_ACK)
            (*in_flight)--;
        ts_msg_free(&m); /* nothing else comes before the store has recovered */
    }
    if (ts_send_RECOVERED(self->to_store, &chunk, 1))
        free(chunk);
    else
        (*in_flight)++;
}

/* A record added to the chunk being filled for the store (sent when full,
 * and a new one started); NULL when it does not fit even a new chunk (the
 * ids of a damaged row). */
static ts_record_t *recovered(persist_t *self, ts_chunk_t **chunk, int *in_flight,
                              ts_record_kind_t kind, const char *coll, const char *id,
                              const char *body, size_t body_len)
{
    ts_record_t *r = *chunk ? ts_chunk_add(*chunk, kind, coll, id, body, body_len) : NULL;
    if (r)
        return r;
    if (*chunk)
        send_chunk(self, *chunk, in_flight);
    size_t need = body_len + 4096;
    *chunk = ts_chunk_new(need > RECOVERY_CHUNK_BYTES ? need : RECOVERY_CHUNK_BYTES);
    return ts_chunk_add(*chunk, kind, coll, id, body, body_len);
}

/* ---- sealed packs opened ahead ----
 * Recovery is a pipeline: persist reads the packs, the store parses and
 * indexes their writes. Opening a sealed pack was over a third of
 * persist's work there (perf, 1M writes), so a helper thread opens pack
 * k+1 while persist hands pack k's writes to the store. */
typedef struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const ts_seal_t *key;
    const void *sealed;         /* the job: the pack as stored (SQLite's, valid until
                                   the reader steps again, which waits for DONE) */
    size_t len;
    ts_buf_t plain, ad;         /* and opened */
    int64_t first;              /* its first seq */
    enum { AHEAD_IDLE, AHEAD_POSTED, AHEAD_DONE, AHEAD_QUIT } state;
    bool ok;
} ahead_t;

static void *ahead_main(void *arg)
{
    ahead_t *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->state != AHEAD_POSTED && a->state != AHEAD_QUIT)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->state == AHEAD_QUIT)
            break;
        pthread_mutex_unlock(&a->mu); /* the reader waits for DONE meanwhile */
        persist_seal_ad(&a->ad, "pack", "", "", a->first);
        bool ok = persist_seal_open(a->key, a->sealed, a->len, &a->ad, &a->plain) == 0;
        pthread_mutex_lock(&a->mu);
        a->ok = ok;
        if (a->state != AHEAD_QUIT)
            a->state = AHEAD_DONE;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static ahead_t *ahead_start(const ts_seal_t *key)
{
    ahead_t *a = ts_xcalloc(1, sizeof *a);
    a->key = key;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (pthread_create(&a->thread, NULL, ahead_main, a) == 0)
        return a;
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
    return NULL; /* opened in line instead */
}

static void ahead_stop(ahead_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->state = AHEAD_QUIT;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    ts_buf_free(&a->plain);
    ts_buf_free(&a->ad);
    free(a);
}

/* Reads the outbox's mutations in seq order: the packed ones not gone,
 * merged with the rows (from before packs, and rewrites). */
typedef struct {
    persist_t *self;
    sqlite3_stmt *rows, *packs;
    bool row;              /* rows is at a row */
    const char *pack;      /* the pack being read (packs' current blob) */
    size_t len, pos;
    bool packed;           /* next holds the next packed mutation */
    ts_packed_t next;
    int64_t *gone;         /* seqs marked gone, sorted */
    size_t ngone;
    sqlite3_stmt *matches; /* outbox_match by seq, merged in as the mutations go by */
    bool match;            /* matches is at a row */
    size_t nmatched, nstale;
    int64_t first_seq;     /* the first pending mutation's (0: none yet) */
    ts_buf_t pack_plain, row_plain; /* a sealed pack, and a row's body, opened */
    size_t unopened;       /* sealed values that did not open (damaged rows) */
    ahead_t *ahead;        /* opens sealed packs ahead (NULL: plain, or in line) */
    bool posted;           /* ahead has a pack: the packs' next row */
} outbox_reader_t;

/* Steps packs to its next row and hands it to ahead to open; false at the
 * end. */
static bool post_next_pack(outbox_reader_t *o)
{
    if (sqlite3_step(o->packs) != SQLITE_ROW)
        return false;
    ahead_t *a = o->ahead;
    pthread_mutex_lock(&a->mu);
    a->first = sqlite3_column_int64(o->packs, 1);
    a->sealed = sqlite3_column_type(o->packs, 0) == SQLITE_BLOB
                    ? sqlite3_column_blob(o->packs, 0) : NULL;
    a->len = (size_t)sqlite3_column_bytes(o->packs, 0);
    a->ok = a->sealed != NULL; /* else not sealed: fails as DONE */
    a->state = a->ok ? AHEAD_POSTED : AHEAD_DONE;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return true;
}

/* The next pack into o->pack and o->len (opened, when sealed); false at
 * the end. A pack that does not open is read as empty, and said so. */
static bool read_pack(outbox_reader_t *o)
{
    int64_t first;
    bool ok;
    o->pos = 0;
    if (o->ahead) {
        if (!o->posted)
            return false;
        ahead_t *a = o->ahead;
        pthread_mutex_lock(&a->mu);
        while (a->state != AHEAD_DONE)
            pthread_cond_wait(&a->cv, &a->mu);
        ts_buf_t opened = a->plain; /* swapped: the last pack is read through */
        a->plain = o->pack_plain;
        o->pack_plain = opened;
        ok = a->ok;
        first = a->first;
        a->state = AHEAD_IDLE;
        pthread_mutex_unlock(&a->mu);
        o->posted = post_next_pack(o); /* opens while this one is read */
        o->pack = o->pack_plain.data;
        o->len = o->pack_plain.len;
    } else {
        if (sqlite3_step(o->packs) != SQLITE_ROW)
            return false;
        first = sqlite3_column_int64(o->packs, 1);
        ok = persist_column_value(o->self, o->packs, 0, "pack", "", "", first, &o->pack_plain,
                                  &o->pack, &o->len) == 0;
    }
    if (!ok || !o->pack) {
        o->unopened++;
        ts_error(LOG, "recovery: the outbox pack at seq %lld does not open with the store's "
                      "key (damaged); its writes are not pending any more",
                 (long long)first);
        o->pack = "";
        o->len = 0;
    }
    return true;
}

/* Moves to the next packed mutation that is not gone. */
static void next_packed(outbox_reader_t *o)
{
    for (;;) {
        while (o->pack && ts_pack_next(o->pack, o->len, &o->pos, &o->next))
            if (!persist_is_gone(o->gone, o->ngone, o->next.seq)) {
                o->packed = true;
                return;
            }
        if (o->pack && o->pos != o->len)
            ts_error(LOG, "recovery: a damaged outbox pack; its writes after seq %lld are not "
                          "pending any more",
                     (long long)o->next.seq);
        o->packed = false;
        if (!read_pack(o)) {
            o->pack = NULL;
            return;
        }
    }
}

static int open_outbox_reader(persist_t *self, outbox_reader_t *o)
{
    o->self = self;
    if (persist_load_gone(self, &o->gone, &o->ngone) ||
        sqlite3_prepare_v2(self->db,
                           "SELECT coll, doc_id, base_version, body, seq, mutation, op, at FROM "
                           "outbox ORDER BY seq",
                           -1, &o->rows, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(self->db, "SELECT records, first_seq FROM outbox_pack ORDER BY first_seq", -1,
                           &o->packs, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(self->db, "SELECT seq, version FROM outbox_match ORDER BY seq", -1,
                           &o->matches, NULL) != SQLITE_OK)
        return -1;
    o->row = sqlite3_step(o->rows) == SQLITE_ROW;
    o->match = sqlite3_step(o->matches) == SQLITE_ROW;
    if (self->seal && (o->ahead = ahead_start(self->seal)))
        o->posted = post_next_pack(o);
    next_packed(o);
    return 0;
}

static void close_outbox_reader(outbox_reader_t *o)
{
    ahead_stop(o->ahead);
    sqlite3_finalize(o->rows);
    sqlite3_finalize(o->packs);
    sqlite3_finalize(o->matches);
    free(o->gone);
    ts_buf_free(&o->pack_plain);
    ts_buf_free(&o->row_plain);
}

/* The If-Match of the pending mutation seq made on base_version: its row
 * in outbox_match, if any and newer. Rows of seqs passed by are stale (their
 * mutation left in a commit that deleted nothing, see TS_REC_DROP). */
static int64_t if_match_of(outbox_reader_t *o, int64_t seq, int64_t base_version)
{
    if (!o->first_seq)
        o->first_seq = seq;
    while (o->match && sqlite3_column_int64(o->matches, 0) < seq) {
        o->nstale++;
        o->match = sqlite3_step(o->matches) == SQLITE_ROW;
    }
    if (!o->match || sqlite3_column_int64(o->matches, 0) != seq)
        return base_version;
    int64_t v = sqlite3_column_int64(o->matches, 1);
    o->nmatched++;
    o->match = sqlite3_step(o->matches) == SQLITE_ROW;
    return v > base_version ? v : base_version;
}

/* The next pending mutation into a record of the chunk; false at the end. */
static bool read_mutation(persist_t *self, outbox_reader_t *o, ts_chunk_t **chunk,
                          int *in_flight, bool *failed)
{
    sqlite3_stmt *row = o->rows;
    bool from_row = o->row && (!o->packed || sqlite3_column_int64(row, 4) < o->next.seq);
    if (!from_row && !o->packed)
        return false;
    ts_packed_t m = o->next;
    if (from_row) {
        m.seq = sqlite3_column_int64(row, 4);
        m.base_version = sqlite3_column_int64(row, 2);
        m.at_ms = sqlite3_column_int64(row, 7);
        m.op = (ts_op_t)sqlite3_column_int(row, 6);
        m.mutation = (const char *)sqlite3_column_text(row, 5);
        m.collection = (const char *)sqlite3_column_text(row, 0);
        m.doc_id = (const char *)sqlite3_column_text(row, 1);
        if (m.collection && m.doc_id &&
            persist_column_value(self, row, 3, "outbox", m.collection, m.doc_id, m.seq,
                                 &o->row_plain, &m.body, &m.body_len)) {
            o->unopened++;
            m.collection = NULL; /* skipped as damaged */
        }
    }
    if (m.collection && m.doc_id) { /* else a damaged row: skipped */
        ts_record_t *r = recovered(self, chunk, in_flight, TS_REC_MUTATION, m.collection,
                                   m.doc_id, m.body, m.body_len);
        if (!r) {
            *failed = true;
            return false;
        }
        r->version = if_match_of(o, m.seq, m.base_version);
        r->seq = m.seq;
        ts_copy_text(r->mutation, sizeof r->mutation, m.mutation ? m.mutation : "");
        r->op = m.op;
        r->at_ms = m.at_ms;
    }
    if (from_row)
        o->row = sqlite3_step(row) == SQLITE_ROW;
    else
        next_packed(o);
    return true;
}

void persist_recover(persist_t *self)
{
    int in_flight = 0;
    int64_t start = ts_mono_us();
    size_t total = 0;
    bool failed = false;
    ts_chunk_t *chunk = NULL;
    ts_buf_t plain = {0}; /* a sealed value opened */
    size_t unopened = 0;
    /* The server's versions first, then the pending mutations on them. */
    sqlite3_stmt *stmt;
    if (sqlite3_prepare_v2(self->db, "SELECT coll, doc_id, version, body FROM docs", -1, &stmt,
                           NULL) == SQLITE_OK) {
        int rc;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            const char *coll = (const char *)sqlite3_column_text(stmt, 0);
            const char *id = (const char *)sqlite3_column_text(stmt, 1);
            const char *body;
            size_t body_len;
            if (!coll || !id)
                continue;
            if (persist_column_value(self, stmt, 3, "docs", coll, id,
                                     sqlite3_column_int64(stmt, 2), &plain, &body, &body_len)) {
                unopened++;
                continue;
            }
            ts_record_t *r = recovered(self, &chunk, &in_flight, TS_REC_CONFIRMED, coll, id, body,
                                       body_len);
            if (!r) {
                failed = true;
                break;
            }
            r->version = sqlite3_column_int64(stmt, 2);
            total++;
        }
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
            ts_error(LOG, "recovery read failed: %s", sqlite3_errmsg(self->db));
    } else {
        ts_error(LOG, "recovery query failed: %s", sqlite3_errmsg(self->db));
    }
    sqlite3_finalize(stmt);
    if (chunk)
        send_chunk(self, chunk, &in_flight);
    chunk = NULL;
    outbox_reader_t o = {0};
    if (open_outbox_reader(self, &o))
        ts_error(LOG, "recovery of the outbox failed: %s", sqlite3_errmsg(self->db));
    else
        while (!failed && read_mutation(self, &o, &chunk, &in_flight, &failed))
            total++;
    while (o.match) { /* past the last pending mutation */
        o.nstale++;
        o.match = sqlite3_step(o.matches) == SQLITE_ROW;
    }
    self->matches = (int64_t)(o.nmatched + o.nstale);
    unopened += o.unopened;
    if (o.nstale && !failed) { /* those before the first pending mutation go */
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM outbox_match WHERE seq < %lld",
                 o.first_seq ? (long long)o.first_seq : (long long)INT64_MAX);
        if (persist_exec(self, sql) == 0)
            self->matches = persist_pragma_int(self, "SELECT count(*) FROM outbox_match");
    }
    close_outbox_reader(&o);
    if (failed)
        ts_error(LOG, "recovery stopped: a record larger than a chunk (a damaged row)");
    if (chunk)
        send_chunk(self, chunk, &in_flight);
    /* The change-feed position, last. */
    if (sqlite3_prepare_v2(self->db, "SELECT value FROM meta WHERE key = 'cursor'", -1, &stmt,
                           NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        const char *cursor;
        size_t cursor_len;
        if (persist_column_value(self, stmt, 0, "meta", "cursor", "", 0, &plain, &cursor,
                                 &cursor_len)) {
            unopened++;
            cursor = NULL; /* the feed starts over */
        }
        chunk = ts_chunk_new(4096);
        if (cursor && strlen(cursor) < 1024 &&
            ts_chunk_add(chunk, TS_REC_CURSOR, "-", "-", cursor, strlen(cursor)))
            send_chunk(self, chunk, &in_flight);
        else
            free(chunk);
    }
    sqlite3_finalize(stmt);
    ts_buf_free(&plain);
    if (unopened)
        ts_error(LOG, "recovery: %zu sealed values did not open with the store's key (damaged or "
                      "moved rows); they were skipped", unopened);
    ts_send_RECOVERED(self->to_store, NULL, 0);
    ts_info(LOG, "recovered %zu records in %.3f s", total, (ts_mono_us() - start) / 1e6);
    /* From now on keep more pages: confirmations update documents all over
     * the docs table, and each page not in SQLite's cache (2 MB by default)
     * is a read and a copy from the OS. Only after recovery, whose one scan
     * of everything would otherwise fill it at start. */
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA cache_size=-%d", PERSIST_CACHE_KIB);
    persist_exec(self, sql);
}
