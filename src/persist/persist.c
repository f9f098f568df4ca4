/* persist.c — the persistence actor: its loop, the group commit (every
 * envelope queued during the last commit, in one transaction and one
 * fsync), the failed batch sent back through the store, the answers
 * (audit, metrics) and the committed records handed to sync. The other
 * files of src/persist hold what a commit calls on (persist_int.h). */
#include "persist/persist_int.h"
#include "therasync/hmap.h"
#include "therasync/sync.h"

#include <unistd.h>
#include <zmq.h>

/* Bounds of one group commit: what is queued is taken, up to this. */
#define MAX_CALLS_PER_COMMIT 16384

/* Whether e holds a client's write (records, not the sync actor's). */
static bool client_write(const ts_envelope_t *e)
{
    for (size_t c = 0; !e->internal && c < e->ncalls; c++)
        if (e->calls[c].records)
            return true;
    return false;
}

/* Whether a batch holds a client's write: only those wait for an fsync.
 * What the sync actor reports (confirmations, remote changes, the cursor)
 * commits without one: if it is lost in a power cut, the next start pushes
 * the same mutations again under the same idempotency keys and pulls from
 * the older cursor, and the server's answers are the same. */
static bool batch_needs_fsync(ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (client_write(envs[i]))
            return true;
    return false;
}

/* Commits every record of the given envelopes in one transaction.
 * Returns 0, or -1 with the transaction rolled back. */
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
            if (self->lost) {
                call->err_data = cJSON_CreateObject();
                cJSON_AddStringToObject(call->err_data, "reason", "storage_unavailable");
            }
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
            cJSON_AddNumberToObject(m, "group_waits", (double)self->group_waits);
            cJSON_AddNumberToObject(m, "group_wait_us", (double)self->group_wait_us_total);
            cJSON_AddNumberToObject(m, "commit_us_avg",
                                    self->commits ? (double)self->commit_us_total / self->commits : 0);
            cJSON_AddNumberToObject(m, "commit_us_p50", (double)ts_hist_quantile(&self->commit_us, 0.5));
            cJSON_AddNumberToObject(m, "commit_us_p99", (double)ts_hist_quantile(&self->commit_us, 0.99));
            cJSON_AddNumberToObject(m, "commit_us_max", (double)self->commit_us_max);
            cJSON_AddItemToObject(m, "commit_us_buckets", ts_hist_buckets_json(&self->commit_us));
        }
    }
}

/* Answers the calls persist answers itself. An envelope with a backup to
 * take goes on to the checkpointer, which copies a snapshot from its own
 * connection and answers it: writes are not stopped while the copy is made
 * (300,000 documents, 139 MB, took 0.56 s here). Returns how many envelopes stay. */
static size_t answer_calls(persist_t *self, ts_envelope_t **envs, size_t n)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        bool backup = false;
        for (size_t c = 0; c < envs[i]->ncalls; c++) {
            ts_call_t *call = &envs[i]->calls[c];
            if (call->err_code || call->result)
                continue;
            if (call->method == TS_M_AUDIT)
                persist_answer_audit(self, call);
            else if (call->method == TS_M_BACKUP && self->lost)
                ts_call_fail(call, TS_E_INTERNAL, "storage is unavailable: no backup taken");
            else if (call->method == TS_M_BACKUP)
                backup = true;
        }
        if (backup && ts_send_BACKUP(self->to_checkpointer, &envs[i], 1) == 0)
            continue;
        if (backup) /* the checkpointer is gone: the engine is stopping */
            for (size_t c = 0; c < envs[i]->ncalls; c++)
                if (envs[i]->calls[c].method == TS_M_BACKUP && !envs[i]->calls[c].result)
                    ts_call_fail(&envs[i]->calls[c], TS_E_INTERNAL, "the engine is stopping");
        envs[kept++] = envs[i];
    }
    return kept;
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

typedef struct {
    ts_envelope_t **envs;
    size_t n, cap, calls;
} batch_t;

/* Takes what is queued into b (bounded); flags 0: waits for the first. */
static void take_queued(persist_t *self, void *socket, batch_t *b, int flags)
{
    for (; b->calls < MAX_CALLS_PER_COMMIT; flags = ZMQ_DONTWAIT) {
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
        if (b->n + n > b->cap) {
            b->cap = (b->n + n) * 2;
            b->envs = ts_xrealloc(b->envs, b->cap * sizeof *b->envs);
        }
        for (size_t i = 0; i < n; i++) {
            b->envs[b->n++] = envs[i];
            b->calls += envs[i]->ncalls;
        }
        ts_msg_release(&m);
    }
}

/* ---- group commit ----
 * A commit's fsync is most of what a write costs (on a virtio disk ~120 µs
 * of CPU, the flush's VM exits included, beside ~45 µs for SQLite), and
 * one commit takes every write queued when it starts. But clients that
 * each keep one write in flight among their reads (a kiosk, the `select`
 * workload) reach persist two or three at a time: ~1,000 fsyncs a second
 * for ~2,300 writes. So when other clients wrote lately and have no write
 * in this batch, persist waits up to GROUP_WAIT_US for theirs, and one
 * fsync covers them (`select` 8 x 8: ~9 writes a commit instead of 2.3,
 * persist's CPU 13 -> 8 % of a core, +13 % reads/s; bench/RESULTS.md). A
 * lone writer never waits (the write at hand is its only one), nor do
 * clients that pipeline their writes (ingest: they fill a batch). */
#define GROUP_WAIT_US 2000
#define WRITER_RECENT_US 10000 /* a client that wrote this lately is writing */
#define GROUP_MAX_ENVELOPES 64 /* larger batches are grouped already */

/* Its client, for a client's write (0: not one). */
static uint64_t writer_of(const ts_envelope_t *e)
{
    return e->route_len && client_write(e) ? hmap_hash((const char *)e->route, e->route_len) | 1
                                           : 0;
}

/* How many clients that wrote lately have no write in b; notes b's. 0
 * too when a client has two writes in b: clients that pipeline their
 * writes fill a batch by themselves (ingest), waiting only delays them. */
static size_t writers_missing(persist_t *self, const batch_t *b, int64_t now)
{
    bool in_batch[PERSIST_MAX_WRITERS] = {false}, pipelined = false;
    size_t kept = 0;
    for (size_t i = 0; i < self->nwriters; i++) /* forget those gone quiet */
        if (now - self->writers[i].at_us < WRITER_RECENT_US)
            self->writers[kept++] = self->writers[i];
    self->nwriters = kept;
    for (size_t i = 0; i < b->n; i++) {
        uint64_t client = writer_of(b->envs[i]);
        if (!client)
            continue;
        size_t w = 0;
        while (w < self->nwriters && self->writers[w].client != client)
            w++;
        if (w == self->nwriters) {
            if (w == PERSIST_MAX_WRITERS)
                continue;
            self->writers[self->nwriters++].client = client;
        }
        self->writers[w].at_us = now;
        pipelined |= in_batch[w];
        in_batch[w] = true;
    }
    if (pipelined)
        return 0;
    size_t missing = 0;
    for (size_t w = 0; w < self->nwriters; w++)
        missing += !in_batch[w];
    return missing;
}

/* Waits up to GROUP_WAIT_US for the writes of recent writers not in b. */
static void group_wait(persist_t *self, void *socket, batch_t *b)
{
    if (self->config->durability_relaxed || b->n >= GROUP_MAX_ENVELOPES ||
        !batch_needs_fsync(b->envs, b->n))
        return;
    int64_t start = ts_mono_us(), now = start;
    if (!writers_missing(self, b, now))
        return;
    self->group_waits++;
    do {
        zmq_pollitem_t item = {.socket = socket, .events = ZMQ_POLLIN};
        long ms = (long)((start + GROUP_WAIT_US - now + 999) / 1000);
        if (zmq_poll(&item, 1, ms) <= 0)
            break;
        take_queued(self, socket, b, ZMQ_DONTWAIT);
        now = ts_mono_us();
    } while (now - start < GROUP_WAIT_US && b->n < GROUP_MAX_ENVELOPES &&
             writers_missing(self, b, now));
    self->group_wait_us_total += ts_mono_us() - start;
}

static int on_inbox(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    persist_t *self = arg;
    batch_t b = {0};
    /* Group commit: take everything already queued (bounded), commit once. */
    take_queued(self, socket, &b, 0);
    if (b.n)
        group_wait(self, socket, &b);
    ts_envelope_t **batch = b.envs;
    size_t nbatch = b.n;
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
    nbatch = answer_calls(self, batch, nbatch);
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

/* The daemon's commands: STOPPING (SIGTERM came) goes on to the
 * checkpointer, which abandons a backup it is copying; $TERM ends the loop. */
static int on_pipe(ts_loop_t *loop, void *pipe, void *arg)
{
    (void)loop;
    persist_t *self = arg;
    char command[16];
    if (ts_actor_read_command(pipe, 0, command, sizeof command) < 0)
        return 0;
    if (strcmp(command, "STOPPING") == 0 && ts_actor_command(self->checkpointer, "STOPPING"))
        ts_warn(LOG, "cannot tell the checkpointer the engine is stopping");
    return strcmp(command, "$TERM") == 0 ? -1 : 0;
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
    persist_seal_free(self->seal);
    ts_buf_free(&self->ad);
    ts_buf_free(&self->sealed);
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
    if (!self.inbox || !self.to_front || !self.to_store || !self.checkpointer ||
        !self.to_checkpointer || (self.config->api_url && !self.to_sync)) {
        ts_error(LOG, "cannot set up sockets: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    ts_loop_reader(loop, ts_actor_pipe(actor), on_pipe, &self);
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
