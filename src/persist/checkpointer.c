/* checkpointer.c — the checkpointer, persist's second actor (its own
 * thread and SQLite connection, one PASSIVE checkpoint per request), and
 * persist's side of it: when to ask for a checkpoint, and when to complete
 * one itself so that the WAL starts over. */
#include "persist/persist_int.h"

#include <zmq.h>

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
    void *pipe;     /* from persist: STOPPING, $TERM */
    void *to_front; /* PUSH: answered backup calls */
    uint64_t checkpoints;
    bool stopping;  /* the daemon is stopping: no backup is started or finished */
    bool term;      /* $TERM came while copying: the loop ends after it */
} checkpointer_t;

/* Reads what persist sent on the pipe; whether the daemon is stopping.
 * Asked between a backup's steps too: a stop abandons a long copy instead
 * of waiting for it (its client is answered, the stop stays prompt). */
static bool told_to_stop(void *arg)
{
    checkpointer_t *self = arg;
    char command[16];
    while (ts_actor_read_command(self->pipe, ZMQ_DONTWAIT, command, sizeof command) >= 0) {
        if (strcmp(command, "STOPPING") == 0)
            self->stopping = true;
        if (strcmp(command, "$TERM") == 0)
            self->stopping = self->term = true;
    }
    return self->stopping;
}

static int on_pipe(ts_loop_t *loop, void *pipe, void *arg)
{
    (void)loop, (void)pipe;
    checkpointer_t *self = arg;
    told_to_stop(self);
    return self->term ? -1 : 0;
}

/* Backup calls (BACKUP): each copied from this connection, whose read is a
 * snapshot of every commit before it, then answered. */
static void take_backups(checkpointer_t *self, ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < envs[i]->ncalls; c++) {
            ts_call_t *call = &envs[i]->calls[c];
            if (call->method != TS_M_BACKUP || call->err_code || call->result)
                continue;
            if (told_to_stop(self))
                ts_call_fail(call, TS_E_INTERNAL, "the engine is stopping: no backup taken");
            else
                persist_backup_call(self->db, call, told_to_stop, self);
        }
    if (ts_send_ANSWERS(self->to_front, envs, n)) {
        ts_error(LOG, "cannot pass backup answers to the front door");
        for (size_t i = 0; i < n; i++)
            ts_envelope_free(envs[i]);
    }
}

static int on_checkpoint_request(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    checkpointer_t *self = arg;
    ts_msg_t m;
    bool asked = false;
    while (ts_msg_recv(socket, ZMQ_DONTWAIT, &m) == 0) { /* many requests, one checkpoint */
        if (m.kind == TS_MSG_CHECKPOINT) {
            asked = true;
            ts_msg_release(&m);
        } else if (m.kind == TS_MSG_BACKUP) {
            take_backups(self, ts_msg_BACKUP(&m), m.count);
            ts_msg_release(&m);
            if (self->term)
                return -1;
        } else {
            ts_msg_unexpected("checkpointer", &m);
        }
    }
    if (!asked)
        return 0;
    int wal = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(self->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &wal, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        ts_warn(LOG, "checkpoint failed: %s", sqlite3_errmsg(self->db));
    ts_debug(LOG, "checkpoint: rc=%d wal=%d backfilled=%d", rc, wal, done);
    self->checkpoints++;
    return 0;
}

void persist_checkpointer_actor(ts_actor_t *actor, void *args)
{
    checkpointer_t self = {.config = args};
    void *inbox = zmq_socket(ts_actor_zctx(actor), ZMQ_PULL);
    ts_loop_t *loop = ts_loop_new();
    char path[4096];
    snprintf(path, sizeof path, "%s/therasync.db", self.config->data_dir);
    int zero = 0;
    if (!inbox || zmq_setsockopt(inbox, ZMQ_LINGER, &zero, sizeof zero) ||
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
    if (!(self.to_front = ts_inproc_socket(ts_actor_zctx(actor), ZMQ_PUSH, TS_INPROC_FRONT,
                                           false))) {
        ts_error(LOG, "checkpointer: cannot reach the front door");
        goto done;
    }
    self.pipe = ts_actor_pipe(actor);
    ts_loop_reader(loop, self.pipe, on_pipe, &self);
    ts_loop_reader(loop, inbox, on_checkpoint_request, &self);
    ts_actor_ready(actor, 0);
    ts_loop_run(loop);
    ts_actor_quiesce(actor);
done:
    ts_loop_destroy(&loop);
    if (inbox) {
        ts_msg_drain(inbox); /* backups not taken: the engine is stopping */
        zmq_close(inbox);
    }
    if (self.to_front)
        zmq_close(self.to_front);
    if (self.db)
        sqlite3_close_v2(self.db);
}

int persist_on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db, (void)name;
    ((persist_t *)arg)->wal_pages = pages;
    return SQLITE_OK;
}

/* Normally only between batches that no client waits on: it includes an
 * fsync (see WAL_HARD_PAGES). */
void persist_maybe_restart_wal(persist_t *self, bool clients_wait)
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

void persist_maybe_checkpoint(persist_t *self)
{
    int64_t now = ts_mono_us();
    if (self->wal_pages < CHECKPOINT_PAGES || now - self->checkpoint_asked_us < CHECKPOINT_EVERY_US)
        return;
    self->checkpoint_asked_us = now;
    ts_send_CHECKPOINT(self->to_checkpointer, NULL, 0);
}
