/* schema.c — opening the database: the schema's migrations, the PRAGMAs
 * (WAL, synchronous, no automatic checkpoints, the size cap) and the
 * prepared statements persist writes with; SQL helpers the other files
 * share (persist_exec, persist_pragma_int). */
#include "persist/persist_int.h"

#include <unistd.h>

/* Schema migrations: entry i takes the database from version i to i + 1. */
static const char *migrations[TS_SCHEMA_VERSION] = {
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
    "CREATE TABLE outbox(seq INTEGER PRIMARY KEY, mutation TEXT NOT NULL, op INTEGER NOT NULL,"
    "  coll TEXT NOT NULL, doc_id TEXT NOT NULL, base_version INTEGER NOT NULL DEFAULT 0,"
    "  at INTEGER NOT NULL, body TEXT);"
    "CREATE TABLE docs(coll TEXT NOT NULL, doc_id TEXT NOT NULL, version INTEGER NOT NULL,"
    "  body TEXT, PRIMARY KEY(coll, doc_id)) WITHOUT ROWID;",
    /* 2: the audit trail (append-only; never document bodies). A pending
     * mutation's "accepted" line is its outbox row (which records the
     * client); it moves into audit when the mutation leaves the outbox, so
     * accepting a write costs one row, not two. */
    "ALTER TABLE outbox ADD COLUMN client TEXT;"
    "CREATE TABLE audit(seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, mutation TEXT NOT NULL,"
    "  coll TEXT NOT NULL, doc_id TEXT NOT NULL, event TEXT NOT NULL, client TEXT,"
    "  version INTEGER, reason TEXT);",
    /* 3: a write answered by the server leaves the outbox as one audit row
     * holding its whole life: accepted (the columns above), its first send,
     * and its outcome (with the outcome's reason in `reason`). Rows without
     * an outcome are single lines, as before. */
    "ALTER TABLE audit ADD COLUMN sent_at INTEGER;"
    "ALTER TABLE audit ADD COLUMN sent_version INTEGER;"
    "ALTER TABLE audit ADD COLUMN outcome TEXT;"
    "ALTER TABLE audit ADD COLUMN outcome_at INTEGER;"
    "ALTER TABLE audit ADD COLUMN outcome_version INTEGER;",
    /* 4: a commit's new mutations are one row, a pack (outbox.h); a packed
     * mutation that leaves is marked gone until its whole pack goes. Rows
     * of the outbox table from before are read and dropped as before. */
    "CREATE TABLE outbox_pack(first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,"
    "  count INTEGER NOT NULL, records BLOB NOT NULL);"
    "CREATE TABLE outbox_gone(seq INTEGER PRIMARY KEY);",
    /* 5: the If-Match a pending mutation goes out with, when it is not the
     * version the write was made on: an earlier write of ours to the same
     * document was answered with a newer one (TS_REC_MATCH). A re-send after
     * a crash must be the request first sent. A row goes with its mutation. */
    "CREATE TABLE outbox_match(seq INTEGER PRIMARY KEY, version INTEGER NOT NULL);",
};

int persist_exec(persist_t *self, const char *sql)
{
    char *error = NULL;
    if (sqlite3_exec(self->db, sql, NULL, NULL, &error) != SQLITE_OK) {
        ts_error(LOG, "%s (while running: %.60s)", error ? error : "?", sql);
        sqlite3_free(error);
        return -1;
    }
    return 0;
}

/* The value of a PRAGMA that reads one integer (0 if it cannot be read). */
int persist_pragma_int(persist_t *self, const char *sql)
{
    sqlite3_stmt *stmt;
    int value = 0;
    if (sqlite3_prepare_v2(self->db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        value = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
}

/* Before a migration, the database as it was: therasync.db.pre-vN (N its
 * schema version), to go back to the therasyncd that wrote it. One already
 * there (an earlier attempt) is that same version, whole, and is kept; the
 * .partial of an attempt cut short is this daemon's own, and goes. */
static int backup_before_migrating(persist_t *self, int version)
{
    char path[4096], part[4200], err[512];
    snprintf(path, sizeof path, "%s/therasync.db.pre-v%d", self->config->data_dir, version);
    struct stat st;
    if (stat(path, &st) == 0) {
        ts_info(LOG, "schema %d → %d: the copy from before, %s, is already there", version,
                TS_SCHEMA_VERSION, path);
        return 0;
    }
    snprintf(part, sizeof part, "%s.partial", path);
    if (unlink(part) == 0) {
        ts_warn(LOG, "schema %d → %d: removed %s, a copy cut short", version, TS_SCHEMA_VERSION,
                part);
        snprintf(part, sizeof part, "%s.partial-journal", path);
        unlink(part);
    }
    int64_t bytes = persist_backup_to(self->db, path, NULL, NULL, err, sizeof err);
    if (bytes < 0) {
        ts_error(LOG, "not migrating the schema without a copy of it: %s", err);
        return -1;
    }
    ts_info(LOG, "schema %d → %d: the database as it was is copied to %s (%lld bytes)", version,
            TS_SCHEMA_VERSION, path, (long long)bytes);
    return 0;
}

static int migrate(persist_t *self)
{
    int version = persist_pragma_int(self, "PRAGMA user_version");
    if (version > TS_SCHEMA_VERSION) {
        ts_error(LOG, "database schema %d is newer than this therasyncd understands (%d)", version,
                 TS_SCHEMA_VERSION);
        return -1;
    }
    if (version > 0 && version < TS_SCHEMA_VERSION && backup_before_migrating(self, version))
        return -1;
    while (version < TS_SCHEMA_VERSION) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version=%d", version + 1);
        if (persist_exec(self, "BEGIN IMMEDIATE") || persist_exec(self, migrations[version]) ||
            persist_exec(self, bump) || persist_exec(self, "COMMIT")) {
            persist_exec(self, "ROLLBACK");
            return -1;
        }
        ts_info(LOG, "database schema migrated to %d", version + 1);
        version++;
    }
    return 0;
}

int persist_open_db(persist_t *self)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/therasync.db", self->config->data_dir);
    if (sqlite3_open_v2(path, &self->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        ts_error(LOG, "cannot open %s: %s", path, self->db ? sqlite3_errmsg(self->db) : "no memory");
        return -1;
    }
    sqlite3_extended_result_codes(self->db, 1);
    /* WAL + synchronous=FULL: a commit is on stable storage when it returns
     * (survives power loss). "relaxed" trades that for NORMAL: survives a
     * process crash, may lose the last commits on power loss. */
    if (persist_exec(self, "PRAGMA journal_mode=WAL") ||
        persist_exec(self, self->config->durability_relaxed ? "PRAGMA synchronous=NORMAL"
                                                            : "PRAGMA synchronous=FULL") ||
        persist_exec(self, "PRAGMA wal_autocheckpoint=0") || migrate(self) ||
        persist_open_key(self))
        return -1;
    sqlite3_wal_hook(self->db, persist_on_wal_commit, self);
    self->page_size = persist_pragma_int(self, "PRAGMA page_size");
    if (self->config->max_db_bytes > 0) {
        char sql[96];
        snprintf(sql, sizeof sql, "PRAGMA max_page_count=%lld", self->config->max_db_bytes / 4096);
        if (persist_exec(self, sql))
            return -1;
    }
    if (sqlite3_prepare_v3(self->db,
                           "INSERT INTO outbox(seq, mutation, op, coll, doc_id, base_version, at, "
                           "body, client) VALUES(?,?,?,?,?,?,?,?,?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->insert_mutation, NULL) ||
        sqlite3_prepare_v3(self->db,
                           "INSERT INTO outbox_pack(first_seq, last_seq, count, records) "
                           "VALUES(?,?,?,?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->insert_pack, NULL) ||
        sqlite3_prepare_v3(self->db, "INSERT OR IGNORE INTO outbox_gone(seq) VALUES(?)", -1,
                           SQLITE_PREPARE_PERSISTENT, &self->mark_gone, NULL) ||
        sqlite3_prepare_v3(self->db, "SELECT records FROM outbox_pack WHERE first_seq=?", -1,
                           SQLITE_PREPARE_PERSISTENT, &self->read_pack, NULL) ||
        sqlite3_prepare_v3(self->db, "DELETE FROM outbox_pack WHERE first_seq=?", -1,
                           SQLITE_PREPARE_PERSISTENT, &self->delete_pack, NULL) ||
        sqlite3_prepare_v3(self->db, "DELETE FROM outbox_gone WHERE seq BETWEEN ? AND ?", -1,
                           SQLITE_PREPARE_PERSISTENT, &self->delete_gone, NULL) ||
        sqlite3_prepare_v3(self->db,
                           "INSERT INTO audit(at, mutation, coll, doc_id, event, client, version, "
                           "sent_at, sent_version, outcome, outcome_at, outcome_version, reason) "
                           "VALUES(?1, ?2, ?3, ?4, 'accepted', NULLIF(?5, ''), NULLIF(?6, 0), ?7, "
                           "NULLIF(?8, 0), ?9, ?10, NULLIF(?11, 0), ?12)",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->archive_packed, NULL) ||
        sqlite3_prepare_v3(self->db, "DELETE FROM outbox WHERE seq=?", -1,
                           SQLITE_PREPARE_PERSISTENT, &self->drop_mutation, NULL) ||
        sqlite3_prepare_v3(self->db,
                           "INSERT INTO audit(at, mutation, coll, doc_id, event, client, version) "
                           "SELECT at, mutation, coll, doc_id, 'accepted', client, "
                           "NULLIF(base_version, 0) FROM outbox WHERE seq=?",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->archive_mutation, NULL) ||
        sqlite3_prepare_v3(self->db,
                           "INSERT INTO audit(at, mutation, coll, doc_id, event, client, version, "
                           "sent_at, sent_version, outcome, outcome_at, outcome_version, reason) "
                           "SELECT at, mutation, coll, doc_id, 'accepted', client, "
                           "NULLIF(base_version, 0), ?2, NULLIF(?3, 0), ?4, ?5, NULLIF(?6, 0), ?7 "
                           "FROM outbox WHERE seq=?1",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->archive_outcome, NULL) ||
        sqlite3_prepare_v3(self->db,
                           "INSERT INTO docs(coll, doc_id, version, body) VALUES(?,?,?,?) ON "
                           "CONFLICT(coll, doc_id) DO UPDATE SET version=excluded.version, "
                           "body=excluded.body",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->put_confirmed, NULL) ||
        sqlite3_prepare_v3(self->db, "INSERT OR REPLACE INTO meta(key, value) VALUES('cursor', ?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->put_cursor, NULL) ||
        sqlite3_prepare_v3(self->db,
                           "INSERT INTO audit(at, mutation, coll, doc_id, event, client, version, "
                           "reason) VALUES(?,?,?,?,?,?,?,?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->insert_audit, NULL) ||
        sqlite3_prepare_v3(self->db,
                           "INSERT OR IGNORE INTO outbox_match(seq, version) VALUES(?1, ?2)",
                           -1, SQLITE_PREPARE_PERSISTENT, &self->put_match, NULL) ||
        sqlite3_prepare_v3(self->db, "UPDATE outbox_match SET version=?2 WHERE seq=?1", -1,
                           SQLITE_PREPARE_PERSISTENT, &self->raise_match, NULL) ||
        sqlite3_prepare_v3(self->db, "DELETE FROM outbox_match WHERE seq=?", -1,
                           SQLITE_PREPARE_PERSISTENT, &self->drop_match, NULL)) {
        ts_error(LOG, "cannot prepare statements: %s", sqlite3_errmsg(self->db));
        return -1;
    }
    persist_load_pack_index(self);
    return 0;
}
