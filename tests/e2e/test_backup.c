/* test_backup.c — `backup` during an ingest restores to a daemon holding
 * every write answered before the backup began; bad paths are refused;
 * a schema migration first copies the old database. */
#include "../support/engine.h"
#include "../support/run.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define WRITES 100000
#define INFLIGHT 32

static const char *const *permissive_args(void)
{
    static char dir[4200];
    static const char *args[3] = {"--policies", dir, NULL};
    snprintf(dir, sizeof dir, "%s", ts_source_path("tests/fixtures/policies/permissive"));
    return args;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* The ingest: WRITES creates through one DEALER, INFLIGHT at a time;
 * answered[i] is set once create i is answered ok. */
static ts_engine_t engine;
static atomic_char answered[WRITES];
static atomic_int nanswered, nfailed;

static void *ingest(void *arg)
{
    (void)arg;
    void *s = ts_engine_client(&engine);
    zmq_pollitem_t item = {.socket = s, .events = ZMQ_POLLIN};
    int sent = 0, inflight = 0;
    long long deadline = now_ms() + 180000;
    while ((sent < WRITES || inflight > 0) && now_ms() < deadline) {
        while (sent < WRITES && inflight < INFLIGHT) {
            char p[256];
            snprintf(p, sizeof p,
                     "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\",\"params\":{"
                     "\"collection\":\"sessions\",\"doc\":{\"id\":\"n%d\",\"pad\":\"%040d\"}}}",
                     sent, sent, sent);
            if (zmq_send(s, p, strlen(p), 0) < 0)
                break;
            sent++, inflight++;
        }
        if (zmq_poll(&item, 1, 100) <= 0)
            continue;
        char buf[1024];
        int n;
        while ((n = zmq_recv(s, buf, sizeof buf - 1, ZMQ_DONTWAIT)) >= 0) {
            buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = '\0';
            inflight--;
            cJSON *r = cJSON_Parse(buf);
            cJSON *id = cJSON_GetObjectItem(r, "id");
            if (ts_rpc_result(r) && cJSON_IsNumber(id) && id->valueint >= 0 && id->valueint < WRITES) {
                atomic_store(&answered[id->valueint], 1);
                atomic_fetch_add(&nanswered, 1);
            } else {
                atomic_fetch_add(&nfailed, 1);
            }
            cJSON_Delete(r);
        }
    }
    zmq_close(s);
    return NULL;
}

/* How many of the ids in want (n of them) the engine has, asked with gets
 * pipelined 256 at a time. */
/* The engine, started, holding the whole ingest. */
static void start_ingested(void)
{
    cr_assert_eq(ts_engine_start(&engine, permissive_args()), 0);
    pthread_t writer;
    pthread_create(&writer, NULL, ingest, NULL);
    pthread_join(writer, NULL);
    cr_assert_eq(atomic_load(&nanswered), WRITES, "the ingest did not finish");
}

static int count_present(ts_engine_t *e, const int *want, int n)
{
    void *s = ts_engine_client(e);
    int present = 0;
    for (int at = 0; at < n; at += 256) {
        int k = n - at < 256 ? n - at : 256, got = 0;
        for (int i = 0; i < k; i++) {
            char p[192];
            snprintf(p, sizeof p,
                     "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"get\",\"params\":{"
                     "\"collection\":\"sessions\",\"id\":\"n%d\"}}",
                     want[at + i], want[at + i]);
            zmq_send(s, p, strlen(p), 0);
        }
        zmq_pollitem_t item = {.socket = s, .events = ZMQ_POLLIN};
        while (got < k && zmq_poll(&item, 1, 10000) > 0) {
            char buf[1024];
            int len = zmq_recv(s, buf, sizeof buf - 1, 0);
            if (len < 0)
                break;
            buf[len < (int)sizeof buf - 1 ? len : (int)sizeof buf - 1] = '\0';
            got++;
            cJSON *r = cJSON_Parse(buf);
            cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(r), "doc");
            char expect[32];
            cJSON *id = cJSON_GetObjectItem(r, "id");
            snprintf(expect, sizeof expect, "n%d", id ? id->valueint : -1);
            const char *pad = cJSON_GetStringValue(cJSON_GetObjectItem(doc ? doc : ts_rpc_result(r), "pad"));
            const char *did = cJSON_GetStringValue(cJSON_GetObjectItem(doc ? doc : ts_rpc_result(r), "id"));
            if (pad && did && strcmp(did, expect) == 0)
                present++;
            cJSON_Delete(r);
        }
    }
    zmq_close(s);
    return present;
}

Test(backup, taken_during_an_ingest_restores_every_answered_write, .timeout = 400)
{
    cr_assert_eq(ts_engine_start(&engine, permissive_args()), 0);
    pthread_t writer;
    pthread_create(&writer, NULL, ingest, NULL);
    long long deadline = now_ms() + 60000;
    while (atomic_load(&nanswered) < 20000 && now_ms() < deadline)
        usleep(1000);
    cr_assert_geq(atomic_load(&nanswered), 20000, "the ingest is too slow");

    /* every write answered before the backup began */
    int *before = malloc(sizeof(int) * WRITES), nbefore = 0;
    for (int i = 0; i < WRITES; i++)
        if (atomic_load(&answered[i]))
            before[nbefore++] = i;
    char path[4400], params[4500];
    snprintf(path, sizeof path, "%s/copy.db", engine.dir);
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
    cJSON *r = ts_rpc(&engine, "backup", params);
    int during = atomic_load(&nanswered);
    cr_assert_not_null(ts_rpc_result(r), "backup failed: %s", r ? cJSON_PrintUnformatted(r) : "timeout");
    cJSON_Delete(r);
    cr_assert_lt(during, WRITES, "the backup was not taken during the ingest");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "the copy is mode %o", st.st_mode & 0777);

    /* a second backup to the same path is refused, the first left as it is */
    r = ts_rpc(&engine, "backup", params);
    cr_assert_eq(ts_rpc_error_code(r), -32603);
    cJSON_Delete(r);
    r = ts_rpc(&engine, "backup", "{\"path\":\"relative.db\"}");
    cr_assert_eq(ts_rpc_error_code(r), -32602);
    cJSON_Delete(r);

    pthread_join(writer, NULL);
    cr_assert_eq(atomic_load(&nanswered), WRITES, "%d answered, %d failed", atomic_load(&nanswered),
                 atomic_load(&nfailed));
    cr_assert_eq(ts_engine_stop(&engine), 0);

    /* restore: the copy in place, no -wal or -shm left */
    char db[4400], side[4500];
    snprintf(db, sizeof db, "%s/therasync.db", engine.data);
    cr_assert_eq(rename(path, db), 0);
    snprintf(side, sizeof side, "%s-wal", db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db);
    unlink(side);
    cr_assert_eq(ts_engine_restart(&engine, permissive_args()), 0, "the restored daemon did not start");
    cr_assert_eq(count_present(&engine, before, nbefore), nbefore,
                 "a write answered before the backup is missing");
    /* and it is a copy from then, not the end of the ingest */
    r = ts_rpc(&engine, "status", NULL);
    cr_log_info("%d answered before the backup, %d when it was answered; status %s", nbefore, during,
                cJSON_PrintUnformatted(ts_rpc_result(r)));
    cJSON_Delete(r);
    int all[1] = {WRITES - 1};
    cr_assert_eq(count_present(&engine, all, 1), 0, "the last write is in a copy taken before it");
    free(before);
    ts_engine_destroy(&engine);
}

/* A backup does not stop the writes: the checkpointer copies a snapshot
 * from its own connection while persist goes on committing. Creates sent
 * right after a backup of ~100,000 documents are answered before it; they
 * waited for the whole copy when persist made it itself. */
Test(backup, writes_are_answered_while_a_backup_is_taken, .timeout = 400)
{
    start_ingested();

    void *a = ts_engine_client(&engine), *b = ts_engine_client(&engine);
    char req[4600];
    int n = snprintf(req, sizeof req,
                     "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"backup\",\"params\":"
                     "{\"path\":\"%s/during.db\"}}",
                     engine.dir);
    cr_assert_eq(zmq_send(a, req, (size_t)n, 0), n);
    for (int i = 0; i < 4; i++) {
        n = snprintf(req, sizeof req,
                     "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\",\"params\":{"
                     "\"collection\":\"sessions\",\"doc\":{\"id\":\"late%d\"}}}",
                     i, i);
        cr_assert_eq(zmq_send(b, req, (size_t)n, 0), n);
    }
    int arrival = 0, backup_at = 0, first_write_at = 0, writes = 0;
    long long deadline = now_ms() + 120000;
    while ((!backup_at || writes < 4) && now_ms() < deadline) {
        zmq_pollitem_t items[2] = {{.socket = a, .events = ZMQ_POLLIN},
                                   {.socket = b, .events = ZMQ_POLLIN}};
        if (zmq_poll(items, 2, 1000) <= 0)
            continue;
        char buf[1024];
        if ((items[0].revents & ZMQ_POLLIN) && (n = zmq_recv(a, buf, sizeof buf - 1, 0)) > 0) {
            buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = '\0';
            cJSON *r = cJSON_Parse(buf);
            cr_assert_not_null(ts_rpc_result(r), "backup failed: %s", buf);
            cJSON_Delete(r);
            backup_at = ++arrival;
        }
        while ((n = zmq_recv(b, buf, sizeof buf - 1, ZMQ_DONTWAIT)) > 0) {
            buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = '\0';
            cJSON *r = cJSON_Parse(buf);
            cr_assert_not_null(ts_rpc_result(r), "a create failed: %s", buf);
            cJSON_Delete(r);
            if (!first_write_at)
                first_write_at = ++arrival;
            writes++;
        }
    }
    cr_assert(backup_at && writes == 4, "answers missing: backup %d, writes %d", backup_at, writes);
    cr_assert_lt(first_write_at, backup_at,
                 "the creates waited for the backup (write answered %d-th, backup %d-th)",
                 first_write_at, backup_at);
    zmq_close(a);
    zmq_close(b);
    ts_engine_destroy(&engine);
}

/* The engine, holding the whole ingest, asked for a backup to
 * ENGINE_DIR/name (path; part: its .partial) on a DEALER it returns,
 * once the copy has begun (or ended). */
static void *backup_started(const char *name, char *path, char *part)
{
    start_ingested();
    char request[4600];
    snprintf(path, 4400, "%s/%s", engine.dir, name);
    snprintf(part, 4500, "%s.partial", path);
    snprintf(request, sizeof request,
             "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"backup\",\"params\":{\"path\":\"%s\"}}",
             path);
    void *c = ts_engine_client(&engine);
    cr_assert_eq(zmq_send(c, request, strlen(request), 0), (int)strlen(request));
    long long deadline = now_ms() + 20000;
    while (access(path, F_OK) != 0 && access(part, F_OK) != 0 && now_ms() < deadline)
        usleep(200);
    return c;
}

/* A daemon killed in the middle of a backup never leaves a file at the
 * backup's path that looks like one: SQLite would open the pages copied
 * so far (with their hot journal) as an empty database, and a restore
 * from it would lose everything. The copy is made as PATH.partial and
 * named PATH only once whole; a later backup to PATH names the leftover. */
Test(backup, a_backup_cut_short_by_a_kill_leaves_nothing_at_its_path, .timeout = 400)
{
    char path[4400], part[4500], params[4600];
    void *c = backup_started("cut.db", path, part);
    ts_engine_kill(&engine); /* kill -9, as the copy starts */
    zmq_close(c);

    if (access(path, F_OK) == 0) { /* the copy won the race: then it is whole */
        sqlite3 *h;
        cr_assert_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_stmt *q;
        int rc = sqlite3_prepare_v2(h, "SELECT count(*) FROM meta", -1, &q, NULL);
        cr_assert_eq(rc, SQLITE_OK, "%s holds no database: %s", path, sqlite3_errmsg(h));
        cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
        sqlite3_finalize(q);
        sqlite3_close(h);
        cr_log_info("the copy was whole before the kill: nothing cut short to check");
    } else {
        cr_assert_eq(access(part, F_OK), 0, "the copy did not start");
        /* the leftover is named, not overwritten, by the next backup */
        cr_assert_eq(ts_engine_restart(&engine, permissive_args()), 0);
        snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
        cJSON *r = ts_rpc(&engine, "backup", params);
        cr_assert_eq(ts_rpc_error_code(r), -32603);
        const char *msg = cJSON_GetStringValue(
            cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message"));
        cr_assert(msg && strstr(msg, "cut.db.partial") && strstr(msg, "cut short"), "%s", msg);
        cJSON_Delete(r);
        cr_assert_neq(access(path, F_OK), 0, "a refused backup left a file at its path");
    }
    ts_engine_destroy(&engine);
}

/* A stop (SIGTERM) while a backup is being copied does not wait for the
 * copy: it is abandoned, its client is told why, nothing is left at its
 * path, and the daemon exits 0. Before, the stop waited for the copy (the
 * daemon gave up after 5 s with exit 1 on a large database) and a copy cut
 * short left PATH.partial, which refused the next backup to that path. */
Test(backup, a_stop_mid_copy_abandons_it_and_says_so, .timeout = 400)
{
    char path[4400], part[4500], params[4600];
    void *c = backup_started("stopped.db", path, part);
    cr_assert_eq(access(part, F_OK), 0, "the copy did not start (or ended at once)");
    long long stop_at = now_ms();
    cr_assert_eq(ts_engine_stop(&engine), 0, "the daemon did not stop cleanly");
    long long took = now_ms() - stop_at;

    /* the answer came before the daemon ended: the reason, naming the path */
    zmq_pollitem_t item = {.socket = c, .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&item, 1, 1000), 1, "the backup was not answered");
    char buf[8192];
    int n = zmq_recv(c, buf, sizeof buf - 1, 0);
    cr_assert_gt(n, 0);
    buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = '\0';
    zmq_close(c);
    cJSON *r = cJSON_Parse(buf);
    cr_assert_eq(ts_rpc_error_code(r), -32603, "%s", buf);
    const char *msg =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message"));
    cr_assert(msg && strstr(msg, "stopping") && strstr(msg, "abandoned") && strstr(msg, path),
              "%s", buf);
    cJSON_Delete(r);
    cr_assert_neq(access(path, F_OK), 0, "an abandoned copy left a file at its path");
    cr_assert_neq(access(part, F_OK), 0, "an abandoned copy left %s", part);
    cr_log_info("stopped %lld ms after the copy began", took);

    /* and the next backup to the same path is taken, whole */
    cr_assert_eq(ts_engine_restart(&engine, permissive_args()), 0);
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
    r = ts_rpc(&engine, "backup", params);
    cr_assert_not_null(ts_rpc_result(r), "%s", cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(h, "SELECT count(*) FROM meta", -1, &q, NULL), SQLITE_OK,
                 "%s", sqlite3_errmsg(h));
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    sqlite3_finalize(q);
    sqlite3_close(h);
    ts_engine_destroy(&engine);
}

/* The value of field v of doc id, -1 when it is not there. */
static int value_of(const char *id)
{
    char params[128];
    snprintf(params, sizeof params, "{\"collection\":\"sessions\",\"id\":\"%s\"}", id);
    cJSON *r = ts_rpc(&engine, "get", params);
    cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(r), "doc");
    const cJSON *v = cJSON_GetObjectItem(doc ? doc : ts_rpc_result(r), "v");
    int value = cJSON_IsNumber(v) ? v->valueint : -1;
    cJSON_Delete(r);
    return value;
}

static void put(const char *method, const char *params)
{
    cJSON *r = ts_rpc(&engine, method, params);
    cr_assert_not_null(ts_rpc_result(r), "%s %s", method, params);
    cJSON_Delete(r);
}

/* therasync restore --data DATA [--force] path: its exit code, its output
 * in out. */
static int restore_with(const char *path, bool force, ts_buf_t *out)
{
    const char *args[6] = {"restore", "--data", engine.data};
    int n = 3;
    if (force)
        args[n++] = "--force";
    args[n] = path;
    ts_buf_reset(out);
    return ts_run("therasync", args, NULL, 60000, out, out);
}

static int restore(const char *path, ts_buf_t *out)
{
    return restore_with(path, false, out);
}

/* `therasync restore`: refused while the daemon runs and for what is not a
 * whole therasync database (the data dir left as it was); the copy is the
 * data dir owner's, mode 0600; then the values
 * are the backup's, and the database it replaced, kept beside it, holds
 * every write made after the backup, even those a crash left in its WAL
 * (folded in before it moved). Over writes never sent to the Clinic API
 * (a standalone daemon's: all of them) it is refused, naming their count,
 * unless --force. */
Test(backup, restore_puts_a_backup_back_and_keeps_what_it_replaced, .timeout = 120)
{
    cr_assert_eq(ts_engine_start(&engine, permissive_args()), 0);
    put("create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"r1\",\"v\":1}}");
    put("create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"r2\",\"v\":1}}");
    char path[4400], params[4500];
    snprintf(path, sizeof path, "%s/b.db", engine.dir);
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
    put("backup", params);
    put("update", "{\"collection\":\"sessions\",\"id\":\"r1\",\"patch\":{\"v\":2}}");
    put("create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"r3\",\"v\":3}}");

    ts_buf_t out = {0};
    cr_assert_neq(restore(path, &out), 0, "restored under a running daemon");
    cr_assert(out.data && strstr(out.data, "stop therasyncd"), "%s", out.data);
    ts_engine_stop(&engine);

    /* what is not a whole therasync database, refused by name */
    char bad[4400];
    snprintf(bad, sizeof bad, "%s/garbage.db", engine.dir);
    ts_file_write(bad, "not a database\n", 15);
    cr_assert_neq(restore(bad, &out), 0);
    cr_assert(strstr(out.data, "is not a database"), "%s", out.data);
    char cut[4500];
    snprintf(cut, sizeof cut, "%s/cut.db", engine.dir);
    size_t len = 0;
    char *bytes = ts_file_bytes(path, &len);
    cr_assert(bytes && len > 8192);
    ts_file_write(cut, bytes, len / 2); /* half of it: the end is missing */
    free(bytes);
    cr_assert_neq(restore(cut, &out), 0);
    cr_assert(strstr(out.data, "cut.db"), "%s", out.data);
    snprintf(cut, sizeof cut, "%s.partial", path);
    cr_assert_neq(restore(cut, &out), 0);
    cr_assert(strstr(out.data, "cut short"), "%s", out.data);
    /* a database with commits in a WAL beside it: the file alone is not it */
    char live[4600];
    snprintf(cut, sizeof cut, "%s/live.db", engine.dir);
    snprintf(live, sizeof live, "%s-wal", cut);
    bytes = ts_file_bytes(path, &len);
    ts_file_write(cut, bytes, len);
    ts_file_write(live, bytes, 4096); /* whatever it holds, it is not empty */
    free(bytes);
    cr_assert_neq(restore(cut, &out), 0);
    cr_assert(strstr(out.data, "WAL beside it"), "%s", out.data);
    cr_assert_eq(ts_engine_restart(&engine, permissive_args()), 0);
    cr_assert_eq(value_of("r1"), 2, "a refused restore changed the data");
    cr_assert_eq(value_of("r3"), 3);
    /* a crash: the last writes are in the WAL, not yet in the database */
    put("create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"r4\",\"v\":4}}");
    ts_engine_kill(&engine);

    /* a look at the backup first (a read-only open leaves an empty WAL) */
    sqlite3 *look;
    cr_assert_eq(sqlite3_open_v2(path, &look, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(look, "SELECT count(*) FROM docs", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(look);
    /* run as root (sudo), the copy goes to the data dir's owner, the daemon's */
    bool root = geteuid() == 0;
    if (root)
        cr_assert_eq(chown(engine.data, 65534, 65534), 0);
    cr_assert_neq(restore(path, &out), 0, "restored over writes never sent");
    cr_assert(strstr(out.data, "holds 5 writes the Clinic API has not accepted") &&
                  strstr(out.data, "--force"),
              "%s", out.data);
    cr_assert_eq(restore_with(path, true, &out), 0, "%s", out.data);
    cr_assert(strstr(out.data, "5 writes never sent to the Clinic API are only there"), "%s",
              out.data);
    char db[4400];
    snprintf(db, sizeof db, "%s/therasync.db", engine.data);
    struct stat st;
    cr_assert_eq(stat(db, &st), 0);
    if (root) {
        cr_assert_eq(st.st_uid, 65534, "the restored database is not the data dir owner's");
        cr_assert_eq(chown(engine.data, 0, 0), 0);
    }
    cr_assert_eq(st.st_mode & 0777, 0600);
    const char *at = strstr(out.data, "kept as ");
    cr_assert_not_null(at, "%s", out.data);
    char kept[4400];
    cr_assert_eq(sscanf(at + 8, "%4399[^:]", kept), 1);
    cr_assert_eq(ts_engine_restart(&engine, permissive_args()), 0);
    cr_assert_eq(value_of("r1"), 1, "not the backup's value");
    cr_assert_eq(value_of("r2"), 1);
    cr_assert_eq(value_of("r3"), -1, "a document made after the backup");
    cr_assert_eq(value_of("r4"), -1);
    ts_engine_stop(&engine);

    /* the database it replaced, put back by hand, has every write */
    cr_assert_eq(rename(kept, db), 0, "%s: %s", kept, strerror(errno));
    cr_assert_eq(ts_engine_restart(&engine, permissive_args()), 0);
    cr_assert_eq(value_of("r1"), 2);
    cr_assert_eq(value_of("r3"), 3);
    cr_assert_eq(value_of("r4"), 4, "the write in the WAL at the crash");
    ts_buf_free(&out);
    ts_engine_destroy(&engine);
}

/* A current database of a schema from before the outbox's packs (3, never
 * started by this therasyncd) has its unsent writes counted too. */
Test(backup, restore_counts_the_writes_of_an_older_schema, .timeout = 60)
{
    cr_assert_eq(ts_engine_start(&engine, permissive_args()), 0);
    put("create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"o1\",\"v\":1}}");
    char path[4400], params[4500], db[4400], side[4500];
    snprintf(path, sizeof path, "%s/b.db", engine.dir);
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
    put("backup", params);
    ts_engine_stop(&engine);
    snprintf(db, sizeof db, "%s/therasync.db", engine.data);
    const char *ends[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(side, sizeof side, "%s%s", db, ends[i]);
        unlink(side);
    }
    sqlite3 *old;
    cr_assert_eq(sqlite3_open(db, &old), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(old,
                              "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
                              "CREATE TABLE outbox(seq INTEGER PRIMARY KEY, mutation TEXT NOT NULL,"
                              " op INTEGER NOT NULL, coll TEXT NOT NULL, doc_id TEXT NOT NULL,"
                              " base_version INTEGER NOT NULL DEFAULT 0, at INTEGER NOT NULL,"
                              " body TEXT, client TEXT);"
                              "INSERT INTO outbox VALUES(1, 'm1', 1, 'sessions', 'x', 0, 1, '{}', NULL);"
                              "INSERT INTO outbox VALUES(2, 'm2', 1, 'sessions', 'y', 0, 1, '{}', NULL);"
                              "PRAGMA user_version=3",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(old));
    sqlite3_close(old);
    ts_buf_t out = {0};
    cr_assert_neq(restore(path, &out), 0, "restored over writes never sent");
    cr_assert(strstr(out.data, "holds 2 writes the Clinic API has not accepted"), "%s", out.data);
    ts_buf_free(&out);
    ts_engine_destroy(&engine);
}

Test(backup, a_migration_first_copies_the_old_database, .timeout = 60)
{
    ts_engine_t e = {0};
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    cJSON *r = ts_rpc(&e, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"old\"}}");
    cr_assert_not_null(ts_rpc_result(r));
    cJSON_Delete(r);
    cr_assert_eq(ts_engine_stop(&e), 0);
    /* back to schema 4: as an older therasyncd left it */
    char db[4400], copy[4500];
    snprintf(db, sizeof db, "%s/therasync.db", e.data);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(db, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "DROP TABLE outbox_match; PRAGMA user_version=4", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(h);
    /* an earlier attempt's copy, cut short: the daemon's own, it goes */
    char part[4600];
    snprintf(part, sizeof part, "%s.pre-v4.partial", db);
    cr_assert_eq(ts_file_write(part, "SQLite format 3", 15), 0);
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0);
    cr_assert_neq(access(part, F_OK), 0, "the cut-short copy is still there");
    snprintf(copy, sizeof copy, "%s.pre-v4", db);
    struct stat st;
    cr_assert_eq(stat(copy, &st), 0, "no copy before the migration");
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(sqlite3_open_v2(copy, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &q, NULL);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(q, 0), 4, "the copy is not the old database");
    sqlite3_finalize(q);
    sqlite3_close(h);
    FILE *log = fopen(e.proc.log_path, "r");
    char line[1024];
    int said = 0;
    while (log && fgets(line, sizeof line, log))
        said |= strstr(line, "pre-v4") != NULL;
    if (log)
        fclose(log);
    cr_assert(said, "the log does not name the copy");
    r = ts_rpc(&e, "get", "{\"collection\":\"sessions\",\"id\":\"old\"}");
    cr_assert_not_null(ts_rpc_result(r));
    cJSON_Delete(r);
    ts_engine_destroy(&e);
}

/* therasync backup PATH: a relative PATH is the CLI's, made absolute for
 * the daemon; the copy opens and holds the write. */
Test(backup, the_cli_takes_a_path_relative_to_its_directory, .timeout = 60)
{
    ts_engine_t e = {0};
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    cJSON *r = ts_rpc(&e, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"cli1\"}}");
    cr_assert_not_null(ts_rpc_result(r));
    cJSON_Delete(r);
    char cwd[4096];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(e.dir), 0);
    const char *args[] = {"--endpoint", e.endpoint, "backup", "cli.db", NULL};
    ts_buf_t out = {0}, err = {0};
    int rc = ts_run("therasync", args, NULL, 30000, &out, &err);
    cr_assert_eq(chdir(cwd), 0);
    cr_assert_eq(rc, 0, "therasync backup: %s%s", out.data ? out.data : "", err.data ? err.data : "");
    char path[4400];
    snprintf(path, sizeof path, "%s/cli.db", e.dir);
    cr_assert(out.data && strstr(out.data, path), "the answer names %s: %s", path, out.data);
    sqlite3 *h;
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), "ok");
    sqlite3_finalize(q);
    sqlite3_close(h);
    ts_buf_free(&out);
    ts_buf_free(&err);
    ts_engine_destroy(&e);
}

/* Whether the file at path holds text (its bytes searched). */
static bool file_holds(const char *path, const char *text)
{
    size_t n;
    char *bytes = ts_file_bytes(path, &n);
    cr_assert_not_null(bytes, "cannot read %s", path);
    bool found = memmem(bytes, n, text, strlen(text)) != NULL;
    free(bytes);
    return found;
}

/* With encryption at rest the copy is sealed (no note in its bytes), and
 * restored under the same key it reads back. */
Test(backup, a_sealed_store_s_copy_stays_sealed, .timeout = 60)
{
    char *tmp = ts_tmpdir("ts-backup-key"), key[4300], config[4300];
    cr_assert_not_null(tmp);
    snprintf(key, sizeof key, "%s/store.key", tmp);
    snprintf(config, sizeof config, "%s/therasyncd.lua", tmp);
    unsigned char bytes[32];
    FILE *r = fopen("/dev/urandom", "rb");
    cr_assert(r && fread(bytes, 1, 32, r) == 32);
    fclose(r);
    int fd = open(key, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert(fd >= 0 && write(fd, bytes, 32) == 32);
    close(fd);
    FILE *c = fopen(config, "w");
    cr_assert_not_null(c);
    fprintf(c, "security = { encryption_key_file = \"%s\" }\n", key);
    fclose(c);
    const char *args[] = {"--policies", ts_source_path("tests/fixtures/policies/permissive"),
                          "--config", config, NULL};

    ts_engine_t e = {0};
    cr_assert_eq(ts_engine_start(&e, args), 0);
    char marker[64], doc[256], path[4400], params[4500];
    snprintf(marker, sizeof marker, "sealed-note-%d", (int)getpid());
    snprintf(doc, sizeof doc, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"s1\",\"notes\":\"%s\"}}",
             marker);
    cJSON *res = ts_rpc(&e, "create", doc);
    cr_assert_not_null(ts_rpc_result(res));
    cJSON_Delete(res);
    snprintf(path, sizeof path, "%s/sealed.db", e.dir);
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
    res = ts_rpc(&e, "backup", params);
    cr_assert_not_null(ts_rpc_result(res));
    cJSON_Delete(res);
    cr_assert_not(file_holds(path, marker), "the copy holds the note in the clear");
    cr_assert_not(file_holds(path, "sealed-note"), "the copy holds the note in the clear");

    cr_assert_eq(ts_engine_stop(&e), 0);
    char db[4400], side[4500];
    snprintf(db, sizeof db, "%s/therasync.db", e.data);
    cr_assert_eq(rename(path, db), 0);
    snprintf(side, sizeof side, "%s-wal", db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db);
    unlink(side);
    cr_assert_eq(ts_engine_restart(&e, args), 0);
    res = ts_rpc(&e, "get", "{\"collection\":\"sessions\",\"id\":\"s1\"}");
    const char *notes =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(res), "doc"), "notes"));
    cr_assert(notes && strcmp(notes, marker) == 0, "restored under the key, the note reads back");
    cJSON_Delete(res);
    ts_engine_destroy(&e);
    ts_rmtree(tmp);
    free(tmp);
}
