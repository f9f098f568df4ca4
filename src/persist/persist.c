/* persist.c — the persistence actor: SQLite WAL, group commit, recovery. */
#include "msgs/msgs.h"
#include "therasync/persist.h"
#include "msgs/call.h"
#include "therasync/hist.h"
#include "therasync/json.h"
#include "persist/outbox.h"
#include "therasync/sync.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define LOG "persist"
/* Bounds of one group commit: what is queued is taken, up to this. */
#define MAX_CALLS_PER_COMMIT 16384
#define RECOVERY_CHUNK_BYTES (1u << 20)
#define PERSIST_CACHE_KIB 32768 /* SQLite's page cache after recovery */
/* Chunks sent but not yet consumed by the store: bounds memory at start. */
#define RECOVERY_CHUNKS_IN_FLIGHT 3

typedef struct {
    const ts_config_t *config;
    ts_actor_t *actor;
    int lock_fd;
    sqlite3 *db;
    sqlite3_stmt *insert_pack;     /* outbox append: a commit's new mutations */
    sqlite3_stmt *mark_gone;       /* a packed mutation left the outbox */
    sqlite3_stmt *read_pack;
    sqlite3_stmt *delete_pack;     /* and its gone marks */
    sqlite3_stmt *delete_gone;
    sqlite3_stmt *archive_packed;  /* a packed mutation's audit row(s) */
    sqlite3_stmt *insert_mutation; /* outbox row: a mutation rewritten in its place */
    sqlite3_stmt *drop_mutation;   /* outbox row delete by seq */
    sqlite3_stmt *archive_mutation;/* its "accepted" audit line, before the delete */
    sqlite3_stmt *archive_outcome; /* the same with its send and outcome in one row */
    sqlite3_stmt *put_confirmed;   /* docs upsert */
    sqlite3_stmt *put_cursor;      /* meta cursor */
    sqlite3_stmt *insert_audit;    /* audit append */
    sqlite3_stmt *put_match;       /* outbox_match insert, or */
    sqlite3_stmt *raise_match;     /* update when the row is there */
    sqlite3_stmt *drop_match;      /* outbox_match delete by seq */
    int64_t matches;               /* rows in outbox_match: a drop deletes its row only
                                      when there are any (they are rare) */
    ts_pack_index_t packs;         /* the live packs */
    ts_buf_t pack;                 /* the pack being written */
    int64_t pack_first, pack_last;
    int64_t seq_high;              /* the highest seq in the outbox (rows, packs) so far */
    uint32_t pack_count;
    int64_t cached_first;          /* the pack last read (0: none), for drops in a row */
    ts_buf_t cached;
    size_t *cached_at;             /* its records' offsets, by seq */
    size_t ncached, cached_cap;
    void *to_sync;                 /* PUSH: committed records (NULL: standalone) */
    void *inbox;                   /* PULL: envelopes and requests */
    void *to_front;                /* PUSH: committed envelopes */
    void *to_store;                /* PUSH: recovery chunks, rollbacks */
    void *to_checkpointer;         /* PUSH: "the WAL has grown" */
    ts_actor_t *checkpointer;
    int wal_pages;                 /* WAL size after the last commit (wal hook) */
    int page_size;                 /* the database's, for where the WAL's frames end */
    int wal_fd;                    /* the WAL file, for writing zeros past its end */
    int64_t wal_ahead_to;          /* the WAL file holds written blocks up to here */
    int64_t checkpoint_asked_us;
    struct stat files[3];          /* the data dir's files as opened (data_files) */
    struct stat dir;               /* and the dir itself */
    int watch;                     /* inotify on the dir (-1: none, stat every time) */
    const char *lost;              /* NULL, or why the data dir takes no more writes */
    /* counters for `metrics` */
    uint64_t commits, records, failed_commits, wal_restarts;
    int64_t commit_us_total, commit_us_max;
    ts_hist_t commit_us;           /* a commit's wall time, its fsync included */
} persist_t;

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

/* ---- checkpointer ----
 * Copying the WAL back into the database (a checkpoint) takes long enough
 * to stall commits when SQLite does it inside a commit, so the persist
 * actor turns automatic checkpoints off and asks this actor, which has its
 * own connection, to run PASSIVE checkpoints (they never block writers). */

#define CHECKPOINT_PAGES 2048     /* ask for a checkpoint past ~8 MB of WAL */
/* and not more often than this: each checkpoint syncs the database file,
 * which a commit's WAL sync then waits behind, and writes the pages that
 * every commit touches (the tables' last pages) once more. Every 500 ms
 * instead of 50: ingest p99 13 -> 9-10 ms, +5% writes/s, replay +5%. */
#define CHECKPOINT_EVERY_US 500000
/* Under a steady stream of commits the helper's PASSIVE checkpoints never
 * catch up with the last commit, so the WAL never starts over: it grows by
 * every page written (300 MB in a 100,000-write replay), each new frame
 * lands on fresh file pages the kernel must allocate and zero, and the
 * wal-index grows with it. Past this size persist completes a checkpoint on
 * its own connection between two commits (the helper has already copied
 * most of the frames), and its next transaction starts the WAL over. */
#define WAL_RESTART_PAGES 8192 /* ~32 MB */
/* Under a steady stream of client writes no batch is free of them, so past
 * this size the restart runs after a client's batch too (its answers are
 * sent first; the next batch waits for it): the WAL stays bounded. */
#define WAL_HARD_PAGES 32768 /* ~128 MB */

typedef struct {
    const ts_config_t *config;
    sqlite3 *db;
    uint64_t checkpoints;
} checkpointer_t;

static int on_checkpoint_request(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    checkpointer_t *self = arg;
    ts_msg_t m;
    while (ts_msg_recv(socket, ZMQ_DONTWAIT, &m) == 0) { /* many requests, one checkpoint */
        if (m.kind == TS_MSG_CHECKPOINT)
            ts_msg_release(&m);
        else
            ts_msg_unexpected("checkpointer", &m);
    }
    int wal = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(self->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &wal, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        ts_warn(LOG, "checkpoint failed: %s", sqlite3_errmsg(self->db));
    ts_debug(LOG, "checkpoint: rc=%d wal=%d backfilled=%d", rc, wal, done);
    self->checkpoints++;
    return 0;
}

static void persist_checkpointer_actor(ts_actor_t *actor, void *args)
{
    checkpointer_t self = {.config = args};
    void *inbox = zmq_socket(ts_actor_zctx(actor), ZMQ_PULL);
    ts_loop_t *loop = ts_loop_new();
    char path[4096];
    snprintf(path, sizeof path, "%s/therasync.db", self.config->data_dir);
    int zero = 0;
    if (!inbox || !loop || zmq_setsockopt(inbox, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(inbox, TS_INPROC_CHECKPOINT) ||
        sqlite3_open_v2(path, &self.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
        ts_error(LOG, "cannot start the checkpointer");
        goto done;
    }
    sqlite3_busy_timeout(self.db, 1000);
    /* Reading the schema puts this connection in WAL mode; before that a
     * checkpoint is a no-op. */
    if (sqlite3_exec(self.db, "PRAGMA journal_mode=WAL; SELECT count(*) FROM sqlite_master", NULL,
                     NULL, NULL) != SQLITE_OK) {
        ts_error(LOG, "checkpointer: %s", sqlite3_errmsg(self.db));
        goto done;
    }
    ts_loop_reader(loop, ts_actor_pipe(actor), ts_actor_pipe_term, NULL);
    ts_loop_reader(loop, inbox, on_checkpoint_request, &self);
    ts_actor_ready(actor, 0);
    ts_loop_run(loop);
    ts_actor_quiesce(actor);
done:
    ts_loop_destroy(&loop);
    if (inbox)
        zmq_close(inbox);
    if (self.db)
        sqlite3_close_v2(self.db);
}

static int persist_on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db, (void)name;
    ((persist_t *)arg)->wal_pages = pages;
    return SQLITE_OK;
}

/* Normally only between batches that no client waits on: it includes an
 * fsync (see WAL_HARD_PAGES). */
static void persist_maybe_restart_wal(persist_t *self, bool clients_wait)
{
    if (self->wal_pages < (clients_wait ? WAL_HARD_PAGES : WAL_RESTART_PAGES))
        return;
    int wal = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(self->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &wal, &done);
    ts_debug(LOG, "checkpoint to restart the WAL: rc=%d wal=%d backfilled=%d", rc, wal, done);
    if (rc == SQLITE_OK && done == wal) {
        self->wal_pages = 0; /* starts over at the next commit */
        self->wal_restarts++;
    }
}

static void persist_maybe_checkpoint(persist_t *self)
{
    int64_t now = ts_mono_us();
    if (self->wal_pages < CHECKPOINT_PAGES || now - self->checkpoint_asked_us < CHECKPOINT_EVERY_US)
        return;
    self->checkpoint_asked_us = now;
    ts_send_CHECKPOINT(self->to_checkpointer, NULL, 0);
}

/* ---- the WAL's file space ----
 * A commit's fdatasync costs two to three times as much when its frames
 * extend the WAL file as when they land on blocks the file already has:
 * extending makes ext4 allocate blocks and write the inode as well. A WAL
 * that SQLite has just started over reuses its file, but under steady
 * writes it is not started over before WAL_HARD_PAGES (see above), so every
 * commit extended it. Persist therefore keeps up to WAL_AHEAD_BYTES of
 * zeros written past the WAL's last frame and starts writing them to disk at
 * once, so that the commits which reach them find them there. This is safe
 * for SQLite: it reads a WAL only up to the first frame whose salts and
 * checksum do not match, which is what it leaves past the end itself after
 * starting over. Only this thread writes the WAL (through SQLite) and the
 * zeros, and the zeros only past the file's end. */
#define WAL_AHEAD_BYTES (4 << 20)
#define WAL_HEADER_BYTES 32
#define WAL_FRAME_HEADER_BYTES 24

static void persist_keep_wal_ahead(persist_t *self)
{
    int64_t end = WAL_HEADER_BYTES +
                  (int64_t)self->wal_pages * (self->page_size + WAL_FRAME_HEADER_BYTES);
    /* in step with the WAL's use: a daemon that writes little writes few zeros */
    int64_t ahead = end < WAL_AHEAD_BYTES ? end : WAL_AHEAD_BYTES;
    if (self->page_size <= 0 || end + ahead / 2 <= self->wal_ahead_to)
        return;
    struct stat st;
    if (self->wal_fd >= 0 && (fstat(self->wal_fd, &st) || st.st_nlink == 0)) {
        close(self->wal_fd); /* not the WAL SQLite writes any more */
        self->wal_fd = -1;
    }
    if (self->wal_fd < 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/therasync.db-wal", self->config->data_dir);
        self->wal_fd = open(path, O_WRONLY | O_CLOEXEC);
        if (self->wal_fd < 0 || fstat(self->wal_fd, &st))
            return;
        const struct stat *opened = &self->files[2]; /* the WAL SQLite opened (data_files) */
        if (opened->st_ino && (st.st_dev != opened->st_dev || st.st_ino != opened->st_ino)) {
            close(self->wal_fd); /* another daemon's, in a replaced data dir */
            self->wal_fd = -1;
            return;
        }
    }
    static const char zeros[1 << 16];
    off_t from = st.st_size, at = from;
    while (at < end + ahead) {
        ssize_t n = pwrite(self->wal_fd, zeros, sizeof zeros, at);
        if (n <= 0)
            break; /* a full disk: the commits will say so */
        at += n;
    }
#ifdef SYNC_FILE_RANGE_WRITE
    if (at > from)
        sync_file_range(self->wal_fd, from, at - from, SYNC_FILE_RANGE_WRITE);
#endif
    self->wal_ahead_to = at;
}

static int persist_exec(persist_t *self, const char *sql)
{
    char *error = NULL;
    if (sqlite3_exec(self->db, sql, NULL, NULL, &error) != SQLITE_OK) {
        ts_error(LOG, "%s (while running: %.60s)", error ? error : "?", sql);
        sqlite3_free(error);
        return -1;
    }
    return 0;
}

static int persist_lock_data_dir(persist_t *self)
{
    const char *dir = self->config->data_dir;
    if (mkdir(dir, 0700) && errno != EEXIST) {
        ts_error(LOG, "cannot create data dir %s: %s", dir, strerror(errno));
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    self->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->lock_fd < 0) {
        ts_error(LOG, "cannot open %s: %s (is the data dir writable?)", path, strerror(errno));
        return -1;
    }
    if (flock(self->lock_fd, LOCK_EX | LOCK_NB)) {
        char holder[32] = "";
        ssize_t n = pread(self->lock_fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        ts_error(LOG, "data dir %s is in use by another therasyncd (pid %s); refusing to start",
                 dir, *holder ? holder : "unknown");
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(self->lock_fd, 0) || pwrite(self->lock_fd, pid, (size_t)n, 0) != n) {
        ts_error(LOG, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- the data dir's files ----
 * Once the data dir is removed, or renamed away and replaced, SQLite goes
 * on writing to the files it has open, which nobody will read again, and
 * a second daemon can start there (the LOCK at the path is a new file). So
 * each commit checks, before its COMMIT and again before its answers go
 * out, that the files at these paths are still the ones persist opened
 * (stat() of the path against what was opened). When they are not, every
 * write is refused until a restart, status says why (the store is told),
 * the log says so once, and nothing is written at the path any more (see
 * persist_cleanup). -shm holds no data: not checked.
 *
 * The three stat()s took 8 us a check in the daemon under load (commits
 * of 0.45-0.8 ms), twice a commit: 2-3% of it. So an inotify watch on the
 * dir says when to look: removing, renaming or replacing anything in it,
 * or the dir itself, queues an event before the call that did it returns,
 * and reading the empty queue took 1.1 us a check. A rename of a dir above
 * it is not seen there: the stat()s also run once a second. */
static const char *const data_files[] = {"LOCK", "therasync.db", "therasync.db-wal"};

static int data_path(persist_t *self, const char *name, char *path, size_t size)
{
    return snprintf(path, size, "%s/%s", self->config->data_dir, name) < (int)size ? 0 : -1;
}

/* What persist has open, once the database is open. */
static void persist_remember_files(persist_t *self)
{
    char path[4096];
    for (size_t i = 0; i < sizeof data_files / sizeof *data_files; i++) {
        struct stat *st = &self->files[i];
        if (i == 0 ? fstat(self->lock_fd, st)
                   : data_path(self, data_files[i], path, sizeof path) || stat(path, st))
            st->st_ino = 0; /* not there: not checked */
    }
    if (stat(self->config->data_dir, &self->dir))
        self->dir.st_ino = 0;
    self->watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (self->watch < 0 ||
        inotify_add_watch(self->watch, self->config->data_dir,
                          IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                              IN_MOVE_SELF) < 0) {
        ts_warn(LOG, "no inotify watch on %s (%s): its files are looked at in every commit",
                self->config->data_dir, strerror(errno));
        if (self->watch >= 0)
            close(self->watch);
        self->watch = -1;
    }
}

/* Whether anything happened in the data dir since the last call (always
 * true without a watch). */
static bool data_dir_touched(persist_t *self)
{
    char events[4096]; /* not parsed: any event means look */
    bool touched = self->watch < 0;
    while (self->watch >= 0 && read(self->watch, events, sizeof events) > 0)
        touched = true;
    return touched;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* What can have happened to the data dir: for `status`, and the log. */
enum { DIR_INTACT, DIR_REMOVED, DIR_REPLACED, DIR_FILES_GONE };
static const char *const dir_status[] = {NULL, "data directory removed", "data directory replaced",
                                         "database files removed"};
static const char *const dir_log[] = {NULL, "was removed", "was replaced by another directory",
                                      "lost its files"};

/* DIR_INTACT while the files at the data dir's paths are the ones persist
 * has open; else what happened, and *file is the first that is not. */
static int data_dir_state(persist_t *self, const char **file)
{
    char path[4096];
    struct stat st;
    for (size_t i = 0; i < sizeof data_files / sizeof *data_files; i++) {
        if (!self->files[i].st_ino)
            continue;
        if (data_path(self, data_files[i], path, sizeof path) == 0 && stat(path, &st) == 0 &&
            same_file(&st, &self->files[i]))
            continue;
        *file = data_files[i];
        if (stat(self->config->data_dir, &st))
            return DIR_REMOVED;
        return self->dir.st_ino && !same_file(&st, &self->dir) ? DIR_REPLACED : DIR_FILES_GONE;
    }
    return DIR_INTACT;
}

/* Whether the data dir takes no more writes (see above), looking when
 * something happened in it (or always); the first time, says so in the log
 * and, with tell_store, to the store for `status`. */
static bool persist_storage_lost(persist_t *self, bool always, bool tell_store)
{
    const char *file = "";
    bool look = !self->lost && (data_dir_touched(self) || always);
    int state = look ? data_dir_state(self, &file) : DIR_INTACT;
    if (state == DIR_INTACT)
        return self->lost != NULL;
    self->lost = dir_status[state];
    ts_error(LOG, "data dir %s %s while therasyncd ran (%s is not the file opened at start): "
                  "writes are refused from now on and nothing more is written there; restore "
                  "the directory from a backup and restart therasyncd",
             self->config->data_dir, dir_log[state], file);
    if (tell_store && ts_send_STORAGE(self->to_store, &self->lost, 1)) /* static */
        ts_warn(LOG, "cannot tell the store that the data dir is lost");
    return true;
}

static int persist_on_storage_timer(ts_loop_t *loop, int timer_id, void *arg)
{
    (void)loop, (void)timer_id;
    persist_storage_lost(arg, true, true); /* and `status` says it without a write */
    return 0;
}

/* The value of a PRAGMA that reads one integer (0 if it cannot be read). */
static int persist_pragma_int(persist_t *self, const char *sql)
{
    sqlite3_stmt *stmt;
    int value = 0;
    if (sqlite3_prepare_v2(self->db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        value = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
}

static int migrate(persist_t *self)
{
    int version = persist_pragma_int(self, "PRAGMA user_version");
    if (version > TS_SCHEMA_VERSION) {
        ts_error(LOG, "database schema %d is newer than this therasyncd understands (%d)", version,
                 TS_SCHEMA_VERSION);
        return -1;
    }
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

static void persist_load_pack_index(persist_t *self);

static int persist_open_db(persist_t *self)
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
        persist_exec(self, "PRAGMA wal_autocheckpoint=0") || migrate(self))
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

static int persist_write_record(persist_t *self, const ts_record_t *r);
static void persist_bind_outcome(sqlite3_stmt *s, int first, const ts_record_t *drop);

/* ---- packs (outbox.h) ---- */

/* A pack is written once it holds this much, so that no row nears SQLite's
 * limit (a commit takes up to 16,384 writes of up to max_request_bytes). */
#define PACK_MAX_BYTES (8u << 20)

/* Writes the pack being made, if any, as one outbox row. */
static int persist_flush_pack(persist_t *self)
{
    if (!self->pack_count)
        return 0;
    sqlite3_stmt *s = self->insert_pack;
    sqlite3_bind_int64(s, 1, self->pack_first);
    sqlite3_bind_int64(s, 2, self->pack_last);
    sqlite3_bind_int64(s, 3, self->pack_count);
    sqlite3_bind_blob(s, 4, self->pack.data, (int)self->pack.len, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    uint32_t count = self->pack_count;
    self->pack_count = 0;
    ts_buf_reset(&self->pack);
    return rc == SQLITE_DONE ? ts_pack_index_add(&self->packs, self->pack_first, self->pack_last, count)
                             : -1;
}

static int persist_add_to_pack(persist_t *self, const ts_record_t *r)
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
static void persist_load_pack_index(persist_t *self)
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
        if (ts_pack_index_add(&self->packs, sqlite3_column_int64(s, 0), last, (uint32_t)live)) {
            ts_error(LOG, "out of memory reading the outbox's packs");
            break;
        }
    }
    sqlite3_finalize(s);
    if (sqlite3_prepare_v2(self->db, "SELECT max(seq) FROM outbox", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int64(s, 0) > self->seq_high)
        self->seq_high = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
}

/* Reads the pack at entry into the cache, with its records' offsets,
 * unless it is the one there already. */
static int persist_cache_pack(persist_t *self, const ts_pack_entry_t *entry)
{
    if (self->cached_first == entry->first)
        return 0;
    self->cached_first = 0;
    self->ncached = 0;
    ts_buf_reset(&self->cached);
    sqlite3_stmt *s = self->read_pack;
    sqlite3_bind_int64(s, 1, entry->first);
    int ok = sqlite3_step(s) == SQLITE_ROW &&
             ts_buf_append(&self->cached, sqlite3_column_blob(s, 0),
                           (size_t)sqlite3_column_bytes(s, 0)) == 0;
    sqlite3_reset(s);
    ts_packed_t m;
    for (size_t pos = 0, at = 0; ok && ts_pack_next(self->cached.data, self->cached.len, &pos, &m);
         at = pos) {
        if (self->ncached == self->cached_cap) {
            size_t *grown = ts_grow(self->cached_at, &self->cached_cap, sizeof *grown, 256);
            if (!grown)
                return -1;
            self->cached_at = grown;
        }
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
static int persist_packed_record(persist_t *self, const ts_pack_entry_t *entry, int64_t seq,
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
static void persist_bind_accepted(sqlite3_stmt *s, const ts_packed_t *m)
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
static int persist_drop_packed(persist_t *self, const ts_record_t *r, ts_pack_entry_t *entry)
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
    if (r->event[0])
        persist_bind_outcome(s, 7, r);
    rc = sqlite3_step(s);
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
static void persist_bind_outcome(sqlite3_stmt *s, int first, const ts_record_t *drop)
{
    bind_int64_or_null(s, first, drop->sent_ms);
    sqlite3_bind_int64(s, first + 1, drop->sent_version);
    sqlite3_bind_text(s, first + 2, drop->event, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, first + 3, drop->at_ms);
    sqlite3_bind_int64(s, first + 4, drop->version);
    bind_text_or_null(s, first + 5, drop->body, (int)drop->body_len);
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

static int persist_write_record(persist_t *self, const ts_record_t *r)
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
        bind_text_or_null(s, 8, r->body, (int)r->body_len);
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
        if (r->event[0])
            persist_bind_outcome(a, 2, r);
        int rc = sqlite3_step(a);
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
        bind_text_or_null(s, 4, r->body, (int)r->body_len);
        break;
    case TS_REC_CURSOR:
        s = self->put_cursor;
        sqlite3_bind_text(s, 1, r->body ? r->body : "", -1, SQLITE_STATIC);
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
        bind_text_or_null(s, 8, r->body, (int)r->body_len);
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

/* Commits every record of the given envelopes in one transaction.
 * Returns 0, or -1 with the transaction rolled back. */
/* Whether a batch holds a client's write: only those wait for an fsync.
 * What the sync actor reports (confirmations, remote changes, the cursor)
 * commits without one: if it is lost in a power cut, the next start pushes
 * the same mutations again under the same idempotency keys and pulls from
 * the older cursor, and the server's answers are the same. */
static bool batch_needs_fsync(ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!envs[i]->internal)
            for (size_t c = 0; c < envs[i]->ncalls; c++)
                if (envs[i]->calls[c].records)
                    return true;
    return false;
}

static int commit_batch(persist_t *self, ts_envelope_t **envs, size_t n)
{
    int64_t start = ts_mono_us();
    size_t count = 0;
    bool lazy = !self->config->durability_relaxed && !batch_needs_fsync(envs, n);
    if (lazy && persist_exec(self, "PRAGMA synchronous=NORMAL"))
        goto fail;
    if (persist_exec(self, "BEGIN"))
        goto fail;
    /* New mutations go into packs, whose seqs only grow; a mutation
     * rewritten in its place (a conflict's, under its old seq) is a row.
     * Anything else first writes the pack so far (a drop in the same batch
     * finds its mutation). */
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < envs[i]->ncalls; c++)
            for (ts_record_t *r = envs[i]->calls[c].records; r; r = r->next, count++)
                if (r->kind == TS_REC_MUTATION && r->seq > self->seq_high
                        ? persist_add_to_pack(self, r)
                        : persist_flush_pack(self) || persist_write_record(self, r))
                    goto fail;
    /* The data dir is checked before COMMIT (a refused batch is then in no
     * file at all) and after it (a removal during the fsync). */
    if (persist_flush_pack(self) || persist_storage_lost(self, false, true) ||
        sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    if (lazy && persist_exec(self, "PRAGMA synchronous=FULL"))
        goto fail;
    if (persist_storage_lost(self, false, true))
        goto fail;
    int64_t took = ts_mono_us() - start;
    self->commits++;
    self->records += count;
    self->commit_us_total += took;
    ts_hist_add(&self->commit_us, took);
    if (took > self->commit_us_max)
        self->commit_us_max = took;
    return 0;
fail:
    if (!self->lost) /* else said once already */
        ts_error(LOG, "commit of %zu records failed: %s", count, sqlite3_errmsg(self->db));
    if (!sqlite3_get_autocommit(self->db))
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    self->pack_count = 0;
    ts_buf_reset(&self->pack);
    if (lazy)
        sqlite3_exec(self->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    self->failed_commits++;
    return -1;
}

/* After a failed commit (rolled_back: one was tried), or a batch refused
 * for a lost data dir: every write in the batch is answered with an
 * error, and its envelope goes back through the store, which drops the
 * writes from memory before passing the answers on — so a client that reads
 * after seeing the error never sees the write. Envelopes without writes go
 * on as usual; returns how many are left in envs for the front door. */
static size_t fail_batch(persist_t *self, ts_envelope_t **envs, size_t n, bool rolled_back)
{
    int code = sqlite3_errcode(self->db);
    char why[256];
    if (self->lost)
        snprintf(why, sizeof why, "storage unavailable (%s: the data directory must be restored "
                                  "and therasyncd restarted)", self->lost);
    else
        snprintf(why, sizeof why, "%s",
                 (code & 0xff) == SQLITE_FULL       ? "the disk or database is full"
                 : (code & 0xff) == SQLITE_READONLY ? "the database is read-only"
                                                    : sqlite3_errmsg(self->db));
    if (rolled_back)
        /* undoes the rolled-back changes to it (after reading the error) */
        persist_load_pack_index(self);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        bool failed = false;
        for (size_t c = 0; c < envs[i]->ncalls; c++) {
            ts_call_t *call = &envs[i]->calls[c];
            if (!call->records)
                continue;
            failed = true;
            ts_call_fail(call, TS_E_INTERNAL, "write not stored: %s; nothing was changed", why);
            if (self->lost && (call->err_data = cJSON_CreateObject()))
                cJSON_AddStringToObject(call->err_data, "reason", "storage_unavailable");
            ts_event_free_list(call->events);
            call->events = NULL;
        }
        if (!failed)
            envs[kept++] = envs[i];
        else if (ts_send_ROLLBACK(self->to_store, &envs[i], 1))
            ts_envelope_free(envs[i]); /* no way back: the answer is lost, not the data */
    }
    return kept;
}

static void add_metrics(persist_t *self, ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < envs[i]->ncalls; c++) {
            ts_call_t *call = &envs[i]->calls[c];
            if (call->method != TS_M_METRICS || !call->partial)
                continue;
            cJSON *m = cJSON_AddObjectToObject(call->partial, "persist");
            cJSON_AddNumberToObject(m, "commits", (double)self->commits);
            cJSON_AddNumberToObject(m, "records", (double)self->records);
            cJSON_AddNumberToObject(m, "failed_commits", (double)self->failed_commits);
            cJSON_AddNumberToObject(m, "wal_pages", self->wal_pages);
            cJSON_AddNumberToObject(m, "wal_restarts", (double)self->wal_restarts);
            cJSON_AddNumberToObject(m, "outbox_packs", (double)self->packs.n);
            cJSON_AddNumberToObject(m, "commit_us_avg",
                                    self->commits ? (double)self->commit_us_total / self->commits : 0);
            cJSON_AddNumberToObject(m, "commit_us_p50", (double)ts_hist_quantile(&self->commit_us, 0.5));
            cJSON_AddNumberToObject(m, "commit_us_p99", (double)ts_hist_quantile(&self->commit_us, 0.99));
            cJSON_AddNumberToObject(m, "commit_us_max", (double)self->commit_us_max);
        }
    }
}

static int persist_cmp_seq(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The seqs marked gone, sorted, into *gone (malloc'd). 0, or -1. */
static int persist_load_gone(persist_t *self, int64_t **gone, size_t *n)
{
    sqlite3_stmt *s;
    size_t cap = 0;
    *gone = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(self->db, "SELECT seq FROM outbox_gone ORDER BY seq", -1, &s, NULL) !=
        SQLITE_OK)
        return -1;
    int rc = 0;
    while (rc == 0 && sqlite3_step(s) == SQLITE_ROW) {
        if (*n == cap) {
            int64_t *grown = ts_grow(*gone, &cap, sizeof *grown, 1024);
            if (!grown) {
                rc = -1;
                break;
            }
            *gone = grown;
        }
        (*gone)[(*n)++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    return rc;
}

static bool persist_is_gone(const int64_t *gone, size_t n, int64_t seq)
{
    return n && bsearch(&seq, gone, n, sizeof *gone, persist_cmp_seq);
}

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
 * of the pending packed writes it can show (of one collection and
 * document when given, from since_ms, the first limit of them by time).
 * Reads every pack: the audit is an operator's call, not a hot one. */
static int list_packed(persist_t *self, const char *coll, const char *id, int64_t since_ms,
                       long long limit)
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
                (id && strcmp(id, m.doc_id) != 0) || persist_is_gone(gone, ngone, m.seq))
                continue;
            if (n == cap) {
                pending_line_t *grown = ts_grow(lines, &cap, sizeof *grown, 1024);
                if (!grown) {
                    rc = -1;
                    break;
                }
                lines = grown;
            }
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

/* Answers an `audit` call: {collection?, id?, since?, limit?} → {entries}. */
static void persist_answer_audit(persist_t *self, ts_call_t *call)
{
    const char *coll = ts_json_string(call->params, "collection");
    const char *id = ts_json_string(call->params, "id");
    const char *since = ts_json_string(call->params, "since");
    long long limit = 100;
    ts_json_int(call->params, "limit", &limit);
    int64_t since_ms = 0;
    if (since && ts_parse_rfc3339(since, &since_ms)) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.since must be an RFC 3339 time");
        return;
    }
    if (limit < 1 || limit > 10000) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.limit must be 1..10000");
        return;
    }
    if (list_packed(self, coll, id, since_ms, limit)) {
        ts_call_fail(call, TS_E_INTERNAL, "audit query failed: %s", sqlite3_errmsg(self->db));
        return;
    }
    sqlite3_stmt *stmt;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT at, mutation, coll, doc_id, event, client, version, reason FROM "
                           "(SELECT at, mutation, coll, doc_id, event, client, version,"
                           "  CASE WHEN outcome IS NULL THEN reason END AS reason, seq AS n, 0 AS k"
                           "  FROM audit"
                           " UNION ALL SELECT sent_at, mutation, coll, doc_id, 'sent', NULL,"
                           "  sent_version, NULL, seq, 1 FROM audit WHERE sent_at IS NOT NULL"
                           " UNION ALL SELECT outcome_at, mutation, coll, doc_id, outcome, NULL,"
                           "  outcome_version, reason, seq, 2 FROM audit WHERE outcome IS NOT NULL"
                           " UNION ALL SELECT at, mutation, coll, doc_id, 'accepted', client,"
                           "  NULLIF(base_version, 0), NULL, 9223372036854775807, 0 FROM outbox"
                           " UNION ALL SELECT at, mutation, coll, doc_id, 'accepted', client,"
                           "  NULLIF(base_version, 0), NULL, 9223372036854775807, 0"
                           "  FROM temp.packed) "
                           "WHERE (?1 IS NULL OR coll = ?1) AND (?2 IS NULL OR doc_id = ?2) "
                           "AND at >= ?3 ORDER BY at, n, k LIMIT ?4",
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
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"entries\":[");
    int rows = 0, rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        char at[32];
        ts_rfc3339(sqlite3_column_int64(stmt, 0), at);
        ts_buf_printf(&b, "%s{\"at\":\"%s\"", rows++ ? "," : "", at);
        static const char *names[] = {NULL, "mutation", "collection", "id", "event", "client"};
        for (int col = 1; col <= 5; col++) {
            const char *text = (const char *)sqlite3_column_text(stmt, col);
            if (!text)
                continue;
            ts_buf_printf(&b, ",\"%s\":", names[col]);
            ts_buf_json_string(&b, text, strlen(text));
        }
        if (sqlite3_column_type(stmt, 6) != SQLITE_NULL)
            ts_buf_printf(&b, ",\"version\":%lld", (long long)sqlite3_column_int64(stmt, 6));
        const char *reason = (const char *)sqlite3_column_text(stmt, 7);
        if (reason) {
            ts_buf_puts(&b, ",\"reason\":");
            ts_buf_json_string(&b, reason, strlen(reason));
        }
        ts_buf_puts(&b, "}");
    }
    sqlite3_finalize(stmt);
    ts_buf_puts(&b, "]}");
    size_t len;
    char *text = ts_buf_take(&b, &len);
    if (rc != SQLITE_DONE || !text) {
        free(text);
        ts_call_fail(call, TS_E_INTERNAL, "audit query failed: %s", sqlite3_errmsg(self->db));
        return;
    }
    ts_call_set_result(call, text, len);
}

static void answer_calls(persist_t *self, ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < envs[i]->ncalls; c++) {
            ts_call_t *call = &envs[i]->calls[c];
            if (call->method == TS_M_AUDIT && !call->err_code && !call->result)
                persist_answer_audit(self, call);
        }
    }
}

/* Hands the committed records to the sync actor, which pushes only what is
 * durable; without an API they are simply freed with the envelopes. */
static void forward_to_sync(persist_t *self, ts_envelope_t **envs, size_t n)
{
    if (!self->to_sync)
        return;
    ts_record_t *lists[256];
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < envs[i]->ncalls; c++) {
            ts_call_t *call = &envs[i]->calls[c];
            if (!call->records)
                continue;
            lists[count++] = call->records;
            call->records = NULL;
            if (count == sizeof lists / sizeof *lists) {
                if (ts_send_OUTBOX(self->to_sync, lists, count))
                    for (size_t k = 0; k < count; k++)
                        ts_record_free_list(lists[k]);
                count = 0;
            }
        }
    }
    if (count && ts_send_OUTBOX(self->to_sync, lists, count))
        for (size_t k = 0; k < count; k++)
            ts_record_free_list(lists[k]);
}

static bool batch_has_records(ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < envs[i]->ncalls; c++)
            if (envs[i]->calls[c].records)
                return true;
    return false;
}

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
 * and a new one started); NULL when memory ran out. */
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
    return *chunk ? ts_chunk_add(*chunk, kind, coll, id, body, body_len) : NULL;
}

/* Reads the outbox's mutations in seq order: the packed ones not gone,
 * merged with the rows (from before packs, and rewrites). */
typedef struct {
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
} outbox_reader_t;

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
        if (sqlite3_step(o->packs) != SQLITE_ROW) {
            o->pack = NULL;
            return;
        }
        o->pack = sqlite3_column_blob(o->packs, 0);
        o->len = (size_t)sqlite3_column_bytes(o->packs, 0);
        o->pos = 0;
    }
}

static int open_outbox_reader(persist_t *self, outbox_reader_t *o)
{
    if (persist_load_gone(self, &o->gone, &o->ngone) ||
        sqlite3_prepare_v2(self->db,
                           "SELECT coll, doc_id, base_version, body, seq, mutation, op, at FROM "
                           "outbox ORDER BY seq",
                           -1, &o->rows, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(self->db, "SELECT records FROM outbox_pack ORDER BY first_seq", -1,
                           &o->packs, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(self->db, "SELECT seq, version FROM outbox_match ORDER BY seq", -1,
                           &o->matches, NULL) != SQLITE_OK)
        return -1;
    o->row = sqlite3_step(o->rows) == SQLITE_ROW;
    o->match = sqlite3_step(o->matches) == SQLITE_ROW;
    next_packed(o);
    return 0;
}

static void close_outbox_reader(outbox_reader_t *o)
{
    sqlite3_finalize(o->rows);
    sqlite3_finalize(o->packs);
    sqlite3_finalize(o->matches);
    free(o->gone);
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
        m.body = (const char *)sqlite3_column_text(row, 3); /* text first, then its size */
        m.body_len = (size_t)sqlite3_column_bytes(row, 3);
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

static void persist_recover(persist_t *self)
{
    int in_flight = 0;
    int64_t start = ts_mono_us();
    size_t total = 0;
    bool failed = false;
    ts_chunk_t *chunk = NULL;
    /* The server's versions first, then the pending mutations on them. */
    sqlite3_stmt *stmt;
    if (sqlite3_prepare_v2(self->db, "SELECT coll, doc_id, version, body FROM docs", -1, &stmt,
                           NULL) == SQLITE_OK) {
        int rc;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            const char *coll = (const char *)sqlite3_column_text(stmt, 0);
            const char *id = (const char *)sqlite3_column_text(stmt, 1);
            const char *body = (const char *)sqlite3_column_text(stmt, 3); /* then its size */
            size_t body_len = (size_t)sqlite3_column_bytes(stmt, 3);
            if (!coll || !id)
                continue;
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
    if (o.nstale && !failed) { /* those before the first pending mutation go */
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM outbox_match WHERE seq < %lld",
                 o.first_seq ? (long long)o.first_seq : (long long)INT64_MAX);
        if (persist_exec(self, sql) == 0)
            self->matches = persist_pragma_int(self, "SELECT count(*) FROM outbox_match");
    }
    close_outbox_reader(&o);
    if (failed)
        ts_error(LOG, "recovery: out of memory");
    if (chunk)
        send_chunk(self, chunk, &in_flight);
    /* The change-feed position, last. */
    if (sqlite3_prepare_v2(self->db, "SELECT value FROM meta WHERE key = 'cursor'", -1, &stmt,
                           NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        const char *cursor = (const char *)sqlite3_column_text(stmt, 0);
        chunk = ts_chunk_new(4096);
        if (chunk && cursor && strlen(cursor) < 1024 &&
            ts_chunk_add(chunk, TS_REC_CURSOR, "-", "-", cursor, strlen(cursor)))
            send_chunk(self, chunk, &in_flight);
        else
            free(chunk);
    }
    sqlite3_finalize(stmt);
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

static int on_inbox(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    persist_t *self = arg;
    ts_envelope_t **batch = NULL;
    size_t nbatch = 0, cap = 0, calls = 0;
    /* Group commit: take everything already queued (bounded), commit once. */
    for (int flags = 0; calls < MAX_CALLS_PER_COMMIT; flags = ZMQ_DONTWAIT) {
        ts_msg_t m;
        if (ts_msg_recv(socket, flags, &m))
            break;
        if (m.kind == TS_MSG_RECOVER) {
            ts_msg_release(&m);
            persist_recover(self);
            continue;
        }
        if (m.kind == TS_MSG_RECOVER_ACK) { /* a late one, after recovery */
            ts_msg_release(&m);
            continue;
        }
        ts_envelope_t **envs = ts_msg_COMMIT(&m);
        size_t n = m.count;
        if (!envs) {
            ts_msg_unexpected(LOG, &m);
            continue;
        }
        if (nbatch + n > cap) {
            size_t ncap = (nbatch + n) * 2;
            ts_envelope_t **grown = realloc(batch, ncap * sizeof *grown);
            if (!grown) {
                ts_error(LOG, "out of memory growing a batch");
                ts_msg_free(&m);
                break; /* already-taken envelopes still get answered below */
            }
            batch = grown, cap = ncap;
        }
        for (size_t i = 0; i < n; i++) {
            batch[nbatch++] = envs[i];
            calls += envs[i]->ncalls;
        }
        ts_msg_release(&m);
    }
    if (nbatch == 0) {
        free(batch);
        return 0;
    }
    bool committed = false, clients_wait = false;
    if (batch_has_records(batch, nbatch)) {
        clients_wait = batch_needs_fsync(batch, nbatch);
        if (self->lost) { /* refused without touching SQLite */
            self->failed_commits++;
            nbatch = fail_batch(self, batch, nbatch, false);
        } else if (commit_batch(self, batch, nbatch)) {
            nbatch = fail_batch(self, batch, nbatch, true);
        } else {
            forward_to_sync(self, batch, nbatch);
        }
        committed = !self->lost; /* else nothing more goes to the files */
        if (committed)
            persist_maybe_checkpoint(self);
    }
    answer_calls(self, batch, nbatch);
    add_metrics(self, batch, nbatch);
    if (nbatch && ts_send_ANSWERS(self->to_front, batch, nbatch)) {
        ts_error(LOG, "cannot pass %zu answers to the front door", nbatch);
        for (size_t i = 0; i < nbatch; i++)
            ts_envelope_free(batch[i]);
    }
    free(batch);
    if (committed) {
        persist_maybe_restart_wal(self, clients_wait);
        persist_keep_wal_ahead(self);
    }
    return 0;
}

static void persist_cleanup(persist_t *self)
{
    ts_actor_destroy(&self->checkpointer);
    if (self->to_checkpointer)
        zmq_close(self->to_checkpointer);
    sqlite3_finalize(self->insert_mutation);
    sqlite3_finalize(self->insert_pack);
    sqlite3_finalize(self->mark_gone);
    sqlite3_finalize(self->read_pack);
    sqlite3_finalize(self->delete_pack);
    sqlite3_finalize(self->delete_gone);
    sqlite3_finalize(self->archive_packed);
    sqlite3_finalize(self->drop_mutation);
    ts_pack_index_free(&self->packs);
    ts_buf_free(&self->pack);
    ts_buf_free(&self->cached);
    free(self->cached_at);
    sqlite3_finalize(self->archive_mutation);
    sqlite3_finalize(self->archive_outcome);
    sqlite3_finalize(self->put_confirmed);
    sqlite3_finalize(self->put_cursor);
    sqlite3_finalize(self->insert_audit);
    sqlite3_finalize(self->put_match);
    sqlite3_finalize(self->raise_match);
    sqlite3_finalize(self->drop_match);
    if (self->to_sync)
        zmq_close(self->to_sync);
    if (self->db) {
        /* The last connection to close checkpoints and deletes the WAL and
         * -shm files by name, which with the data dir lost may be another
         * daemon's now. SQLite skips that itself when it sees the database
         * file moved; persistent-WAL mode makes sure of it in every case. */
        int keep = 1;
        if (persist_storage_lost(self, true, false))
            sqlite3_file_control(self->db, "main", SQLITE_FCNTL_PERSIST_WAL, &keep);
        else
            sqlite3_wal_checkpoint_v2(self->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_close_v2(self->db);
    }
    if (self->inbox)
        zmq_close(self->inbox);
    if (self->to_front)
        zmq_close(self->to_front);
    if (self->to_store)
        zmq_close(self->to_store);
    if (self->wal_fd >= 0)
        close(self->wal_fd);
    if (self->watch >= 0)
        close(self->watch);
    if (self->lock_fd > 0)
        close(self->lock_fd); /* releases the flock */
}

static void persist_actor(ts_actor_t *actor, void *args)
{
    persist_t self = {.config = args, .actor = actor, .lock_fd = -1, .wal_fd = -1, .watch = -1};
    void *zctx = ts_actor_zctx(actor);
    ts_loop_t *loop = NULL;
    if (persist_lock_data_dir(&self) || persist_open_db(&self))
        goto done;
    persist_remember_files(&self);
    self.inbox = ts_inproc_socket(zctx, ZMQ_PULL, TS_INPROC_PERSIST, true);
    self.to_front = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_FRONT, false);
    self.to_store = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_STORE, false);
    if (self.config->api_url)
        self.to_sync = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_SYNC, false);
    self.checkpointer =
        ts_actor_new(zctx, "checkpoint", persist_checkpointer_actor, (void *)self.config);
    self.to_checkpointer = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_CHECKPOINT, false);
    loop = ts_loop_new();
    if (!self.inbox || !self.to_front || !self.to_store || !loop || !self.checkpointer ||
        !self.to_checkpointer || (self.config->api_url && !self.to_sync)) {
        ts_error(LOG, "cannot set up sockets: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    ts_loop_reader(loop, ts_actor_pipe(actor), ts_actor_pipe_term, NULL);
    ts_loop_reader(loop, self.inbox, on_inbox, &self);
    ts_loop_timer(loop, 1000, persist_on_storage_timer, &self);
    ts_actor_ready(actor, 0);
    ts_loop_run(loop);
    ts_actor_quiesce(actor);
    ts_msg_drain(self.inbox); /* never answered: nothing was promised for them */
done:
    ts_loop_destroy(&loop);
    persist_cleanup(&self);
}

ts_actor_t *ts_persist_start(void *zctx, const ts_config_t *config)
{
    /* Nothing reads SQLite's memory statistics, and keeping them takes a
     * global mutex on every allocation (~7 a write). Only possible before
     * SQLite's first use in the process; later it is a no-op (MISUSE). */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    return ts_actor_new(zctx, "persist", persist_actor, (void *)config);
}
