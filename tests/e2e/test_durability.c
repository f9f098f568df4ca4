/* test_durability.c — acknowledged writes survive kill -9, restarts keep
 * everything, and a data dir that cannot take writes fails loudly. */
#include "../support/clinic.h"
#include "../support/engine.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <sqlite3.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* A config naming a key (security.encryption_key_file), or NULL: a plain store. */
static const char *sealed_config;

/* Free-form documents: these tests run without validation. */
static const char *const *permissive_args(void)
{
    static char dir[4200];
    static const char *args[5] = {"--policies", dir, NULL, NULL, NULL};
    snprintf(dir, sizeof dir, "%s", ts_source_path("tests/fixtures/policies/permissive"));
    args[2] = sealed_config ? "--config" : NULL;
    args[3] = sealed_config;
    return args;
}

#define CLIENTS 4
#define INFLIGHT 16
#define MAX_DOCS 200000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* What the test knows about each document it wrote. */
typedef struct {
    char id[32];
    int acked_version;  /* highest "v" whose write was answered ok (0 = create not answered) */
    int sent_version;   /* highest "v" sent */
} known_t;

static known_t *known;
static int nknown;
static ts_clinic_t *synced_api; /* the clinic-api the engine syncs with, or NULL */

/* Updates to one document all go through one client (idx % CLIENTS), so
 * their order is defined. */
static int send_write(void *s, int client, int *slot_out)
{
    char p[256];
    int idx;
    /* Two creates for one update, updates on acknowledged docs only. */
    if (nknown < 8 || rand() % 3) {
        if (nknown >= MAX_DOCS)
            return -1;
        idx = nknown++;
        snprintf(known[idx].id, sizeof known[idx].id, "d%d", idx);
        known[idx].sent_version = 1;
        snprintf(p, sizeof p,
                 "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\",\"params\":{\"collection\":"
                 "\"sessions\",\"doc\":{\"id\":\"%s\",\"v\":1,\"pad\":\"%0100d\"}}}",
                 idx * 100 + 1, known[idx].id, idx);
    } else {
        idx = rand() % nknown;
        if (idx % CLIENTS != client || known[idx].acked_version == 0 ||
            known[idx].sent_version >= 99)
            return 0;
        int v = ++known[idx].sent_version;
        snprintf(p, sizeof p,
                 "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"update\",\"params\":{\"collection\":"
                 "\"sessions\",\"id\":\"%s\",\"patch\":{\"v\":%d}}}",
                 idx * 100 + v, known[idx].id, v);
    }
    *slot_out = idx;
    return zmq_send(s, p, strlen(p), ZMQ_DONTWAIT) < 0 ? -1 : 1;
}

/* Drives CLIENTS × INFLIGHT writes until deadline_ms, then SIGKILLs the
 * daemon without waiting for anything. */
static void write_until_killed(ts_engine_t *e, long long deadline_ms)
{
    void *clients[CLIENTS];
    int inflight[CLIENTS] = {0};
    zmq_pollitem_t items[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
        clients[c] = ts_engine_client(e);
        items[c] = (zmq_pollitem_t){.socket = clients[c], .events = ZMQ_POLLIN};
    }
    while (now_ms() < deadline_ms) {
        for (int c = 0; c < CLIENTS; c++) {
            while (inflight[c] < INFLIGHT) {
                int slot, rc = send_write(clients[c], c, &slot);
                if (rc < 0)
                    break;
                inflight[c] += rc;
                if (rc == 0)
                    break;
            }
        }
        if (zmq_poll(items, CLIENTS, 20) <= 0)
            continue;
        for (int c = 0; c < CLIENTS; c++) {
            char buf[2048];
            int n;
            while ((n = zmq_recv(clients[c], buf, sizeof buf - 1, ZMQ_DONTWAIT)) >= 0) {
                buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = '\0';
                inflight[c]--;
                cJSON *r = cJSON_Parse(buf);
                cJSON *id = cJSON_GetObjectItem(r, "id");
                cr_assert_not_null(ts_rpc_result(r), "write failed: %s", buf);
                int idx = id->valueint / 100, v = id->valueint % 100;
                if (v > known[idx].acked_version)
                    known[idx].acked_version = v;
                cJSON_Delete(r);
            }
        }
    }
    kill(e->proc.pid, SIGKILL);
    ts_engine_kill(e);
    for (int c = 0; c < CLIENTS; c++)
        zmq_close(clients[c]);
}

/* Every answered write is there and pending; nothing unanswered is torn. */
static void verify(ts_engine_t *e)
{
    int present = 0;
    for (int i = 0; i < nknown; i += 500) {
        char *batch = malloc(500 * 160 + 2);
        size_t off = 0;
        batch[off++] = '[';
        for (int k = i; k < nknown && k < i + 500; k++)
            off += (size_t)snprintf(batch + off, 160,
                                    "%s{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"get\",\"params\":"
                                    "{\"collection\":\"sessions\",\"id\":\"%s\"}}",
                                    k > i ? "," : "", k, known[k].id);
        batch[off++] = ']';
        char *reply = ts_rpc_raw(e->dealer, batch, off, 30000);
        free(batch);
        cr_assert_not_null(reply, "no answer after restart");
        cJSON *all = cJSON_Parse(reply);
        free(reply);
        for (cJSON *r = all->child; r; r = r->next) {
            known_t *k = &known[cJSON_GetObjectItem(r, "id")->valueint];
            cJSON *res = ts_rpc_result(r);
            if (!res) {
                cr_assert_eq(k->acked_version, 0, "acknowledged %s is lost", k->id);
                k->sent_version = 0; /* never happened: it may be written again later */
                continue;
            }
            present++;
            cJSON *doc = cJSON_GetObjectItem(res, "doc");
            int v = cJSON_GetObjectItem(doc, "v")->valueint;
            cr_assert_geq(v, k->acked_version, "%s lost an acknowledged update", k->id);
            cr_assert_leq(v, k->sent_version, "%s has a version never sent", k->id);
            cr_assert_eq(strlen(cJSON_GetObjectItem(doc, "pad")->valuestring), 100, "torn doc");
            if (!synced_api)
                cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "sync"), "state")
                                     ->valuestring, "pending", "still pending for sync");
            k->acked_version = v; /* what is on disk now counts as acknowledged */
            k->sent_version = v;
        }
        cJSON_Delete(all);
    }
    cJSON *s = ts_rpc(e, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(s), "collections"),
                                     "sessions")->valueint, present);
    cJSON_Delete(s);
}

/* Up to max rounds of writes, kill -9, restart and verify, within
 * budget_ms; returns how many ran. With sync, each round first sets one of
 * the clinic's faults, so that kills find writes sent and not yet answered. */
static int kill_rounds(ts_engine_t *e, int max, long long budget_ms)
{
    long long stop_by = now_ms() + budget_ms;
    int rounds = 0;
    for (; rounds < max && now_ms() < stop_by; rounds++) {
        if (synced_api) {
            char faults[64];
            snprintf(faults, sizeof faults, rounds % 3 == 0   ? "{\"answer_latency_ms\":%d}"
                                            : rounds % 3 == 1 ? "{\"latency_ms\":%d}"
                                                              : "{}",
                     rounds % 3 == 0 ? 100 + rand() % 700 : 5 + rand() % 30);
            cr_assert_eq(ts_clinic_faults(synced_api, faults), 0);
        }
        write_until_killed(e, now_ms() + 50 + rand() % 400);
        int rc = synced_api ? ts_engine_restart_synced(e, synced_api)
                            : ts_engine_restart(e, permissive_args());
        cr_assert_eq(rc, 0, "restart %d failed (log %s)", rounds, e->proc.log_path);
        zmq_close(e->dealer); /* a fresh connection: nothing queued from before the kill */
        e->dealer = ts_engine_client(e);
        verify(e);
    }
    int acked = 0;
    for (int i = 0; i < nknown; i++)
        acked += known[i].acked_version > 0;
    cr_assert_gt(acked, 1000, "the test wrote too little to mean anything (%d)", acked);
    return rounds;
}

/* TS_CRASH_ROUNDS raises the rounds for a long soak (tests/README.md). */
static int rounds_wanted(int fallback)
{
    const char *v = getenv("TS_CRASH_ROUNDS");
    int64_t n;
    return v && ts_parse_i64(v, &n) == 0 && n > 0 && n < 100000 ? (int)n : fallback;
}

Test(durability, kill_9_during_concurrent_writes, .timeout = 240)
{
    known = calloc(MAX_DOCS, sizeof *known);
    srand((unsigned)time(NULL));
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    int rounds = kill_rounds(&e, 25, 150000);
    cr_assert_geq(rounds, 20, "only %d kill rounds in the time limit", rounds);
    ts_engine_destroy(&e);
    free(known);
}

/* The same with the store sealed (SECURITY.md, encryption at rest): every
 * restart opens each pack and row with the key. */
Test(durability, kill_9_during_concurrent_writes_sealed, .timeout = 240)
{
    char *dir = ts_tmpdir("ts-sealed");
    char key[4300], cfg[4300];
    snprintf(key, sizeof key, "%s/store.key", dir);
    snprintf(cfg, sizeof cfg, "%s/sealed.lua", dir);
    FILE *f = fopen(key, "w");
    cr_assert_not_null(f);
    fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f);
    fclose(f);
    cr_assert_eq(chmod(key, 0600), 0);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "security = { encryption_key_file = \"%s\" }\n", key);
    fclose(f);
    sealed_config = cfg;
    known = calloc(MAX_DOCS, sizeof *known);
    srand((unsigned)time(NULL));
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&e.proc, "store encrypted at rest", 1000, line, sizeof line),
                 0, "the store is sealed");
    int rounds = kill_rounds(&e, 25, 150000);
    cr_assert_geq(rounds, 20, "only %d kill rounds in the time limit", rounds);
    ts_engine_destroy(&e);
    free(known);
    sealed_config = NULL;
    ts_rmtree(dir);
    free(dir);
}

/* After the kills, once everything is pushed: the server holds exactly the
 * acknowledged value of every document, each write applied once (a create
 * sets v 1 and update k sets v k, so the server's version must equal v), and
 * the engine agrees with it. */
static void verify_server(ts_clinic_t *api, ts_engine_t *e)
{
    int *server_v = calloc(MAX_DOCS, sizeof *server_v);
    long long *server_version = calloc(MAX_DOCS, sizeof *server_version);
    char since[32] = "0";
    int found = 0;
    for (int page = 0; page < 1000; page++) {
        char path[96];
        snprintf(path, sizeof path, "/v1/sessions?since=%s&limit=1000", since);
        cJSON *list;
        cr_assert_eq(ts_clinic_call(api, "GET", path, NULL, &list), 200);
        cJSON *doc;
        cJSON_ArrayForEach(doc, cJSON_GetObjectItem(list, "items"))
        {
            int64_t idx = -1; /* stays so when the id is not d<number> */
            ts_parse_i64(cJSON_GetObjectItem(doc, "id")->valuestring + 1, &idx);
            cr_assert(idx >= 0 && idx < nknown);
            server_v[idx] = cJSON_GetObjectItem(doc, "v")->valueint;
            server_version[idx] = (long long)cJSON_GetObjectItem(doc, "version")->valuedouble;
            found++;
        }
        snprintf(since, sizeof since, "%s", cJSON_GetObjectItem(list, "cursor")->valuestring);
        bool more = cJSON_IsTrue(cJSON_GetObjectItem(list, "has_more"));
        cJSON_Delete(list);
        if (!more)
            break;
    }
    int present = 0;
    for (int i = 0; i < nknown; i++) {
        if (!known[i].acked_version) {
            cr_assert_eq(server_v[i], 0, "%s never acknowledged, yet on the server", known[i].id);
            continue;
        }
        present++;
        cr_assert_eq(server_v[i], known[i].acked_version, "%s: the server holds v %d, not the "
                     "acknowledged %d", known[i].id, server_v[i], known[i].acked_version);
        cr_assert_eq(server_version[i], server_v[i], "%s: %lld writes applied for %d sent",
                     known[i].id, server_version[i], server_v[i]);
    }
    cr_assert_eq(found, present, "the server has documents the engine never acknowledged");
    for (int i = 0; i < nknown; i += 97) { /* and the engine shows the server's */
        if (!known[i].acked_version)
            continue;
        char p[128];
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"%s\"}", known[i].id);
        cJSON *r = ts_rpc(e, "get", p);
        cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(r), "doc");
        cr_assert_eq(cJSON_GetObjectItem(doc, "v")->valueint, server_v[i]);
        cr_assert_eq((long long)cJSON_GetObjectItem(doc, "version")->valuedouble,
                     server_version[i]);
        cJSON_Delete(r);
    }
    free(server_v);
    free(server_version);
}

/* The audit lines of the engine's data dir with this event or outcome. */
static int audit_count(ts_engine_t *e, const char *event)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/therasync.db", e->data);
    sqlite3 *db;
    sqlite3_stmt *s;
    int n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT count(*) FROM audit WHERE event=?1 OR outcome=?1", -1, &s,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, event, -1, SQLITE_STATIC);
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    return n;
}

/* The crash test with sync running against a clinic-api that holds a
 * retried idempotency key to the whole request, If-Match included: a write
 * re-sent after a crash must be the request first sent, or the server
 * answers 422 and an acknowledged value is lost. */
Test(durability, kill_9_with_sync_loses_and_duplicates_nothing, .timeout = 400)
{
    ts_clinic_t api;
    const char *strict[] = {"--strict-idempotency", NULL};
    cr_assert_eq(ts_clinic_start(&api, strict), 0);
    synced_api = &api;
    known = calloc(MAX_DOCS, sizeof *known);
    srand((unsigned)time(NULL));
    ts_engine_t e;
    cr_assert_eq(ts_engine_start_synced(&e, &api, NULL), 0);
    int want = rounds_wanted(20);
    int rounds = kill_rounds(&e, want, want > 20 ? want * 20000LL : 150000);
    cr_assert_geq(rounds, want * 2 / 3, "only %d of %d kill rounds in the time limit", rounds,
                  want);
    cr_assert_eq(ts_clinic_faults(&api, "{}"), 0);
    bool drained = false;
    for (long long end = now_ms() + 120000; !drained && now_ms() < end;) {
        cJSON *s = ts_rpc(&e, "status", NULL);
        drained = cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint == 0;
        cJSON_Delete(s);
        if (!drained)
            usleep(100000);
    }
    cr_assert(drained, "the outbox drained after the kills (log %s)", e.proc.log_path);
    verify_server(&api, &e);
    cr_assert_eq(ts_clinic_stat(&api, "idempotency_mismatches"), 0,
                 "a re-sent write differed from its first send");
    cr_assert_eq(ts_engine_stop(&e), 0);
    cr_assert_eq(audit_count(&e, "rejected"), 0, "an acknowledged write was rejected");
    cr_assert_eq(audit_count(&e, "conflict"), 0, "an engine alone met a conflict");
    long long writes = 0;
    for (int i = 0; i < nknown; i++)
        writes += known[i].acked_version;
    cr_log_info("%d kill rounds; %d documents, %lld acknowledged writes, each applied once",
                rounds, nknown, writes);
    synced_api = NULL;
    ts_engine_destroy(&e);
    ts_clinic_destroy(&api);
    free(known);
}

/* Runs query with an empty where, ordered by id, page after page: the
 * whole collection. */
static char *dump(ts_engine_t *e)
{
    cJSON *items = ts_query_all(e,
                                "{\"collection\":\"sessions\",\"selector\":{\"where\":{},"
                                "\"order_by\":[\"id\",\"asc\"]}}",
                                1000, 1000, NULL);
    cr_assert_not_null(items, "the pages of the dump");
    char *text = cJSON_PrintUnformatted(items);
    cJSON_Delete(items);
    return text;
}

Test(durability, graceful_restart_keeps_everything, .timeout = 60)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    char p[256];
    for (int i = 0; i < 300; i++) {
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"g%d\",\"n\":%d}}", i, i);
        cJSON_Delete(ts_rpc(&e, "create", p));
        if (i % 3 == 0) {
            snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"g%d\",\"patch\":"
                                  "{\"n\":null,\"m\":{\"deep\":%d}}}", i, i);
            cJSON_Delete(ts_rpc(&e, "update", p));
        }
        if (i % 7 == 0) {
            snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"g%d\"}", i);
            cJSON_Delete(ts_rpc(&e, "delete", p));
        }
    }
    char *before = dump(&e);
    cJSON *s = ts_rpc(&e, "status", NULL);
    int pending = cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint;
    cJSON_Delete(s);
    cr_assert_eq(ts_engine_stop(&e), 0, "SIGTERM exits 0");
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0);
    char *after = dump(&e);
    cr_assert_str_eq(after, before);
    s = ts_rpc(&e, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint, pending);
    cr_assert_eq(pending, 300 + 100 + 43);
    cJSON_Delete(s);
    free(before);
    free(after);
    ts_engine_destroy(&e);
}

/* One integer from the engine's database (read beside the running daemon:
 * WAL readers do not block it). */
static long long db_column(ts_engine_t *e, const char *sql, int column)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/therasync.db", e->data);
    sqlite3 *db;
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, column);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static long long db_count(ts_engine_t *e, const char *sql)
{
    return db_column(e, sql, 0);
}

static long long wal_file_bytes(ts_engine_t *e)
{
    char path[4300];
    struct stat st;
    snprintf(path, sizeof path, "%s/therasync.db-wal", e->data);
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void create_padded(ts_engine_t *e, const char *prefix, int from, int to)
{
    char p[1400];
    for (int i = from; i < to; i++) {
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s%d\",\"pad\":"
                              "\"%01000d\"}}", prefix, i, i);
        cJSON *r = ts_rpc(e, "create", p);
        cr_assert_not_null(ts_rpc_result(r), "create %s%d", prefix, i);
        cJSON_Delete(r);
    }
}

/* Persist keeps the WAL file written past its last frame (zeros, so that a
 * commit does not make the file longer, which costs an inode write in its
 * fsync). After kill -9, SQLite must read the frames and stop at the zeros,
 * and the writes after the restart go on into them. */
Test(durability, wal_written_ahead_is_read_only_to_its_last_frame, .timeout = 60)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    create_padded(&e, "w", 0, 300);
    /* a passive checkpoint's second column: the frames in the WAL */
    long long frames = db_column(&e, "PRAGMA wal_checkpoint(PASSIVE)", 1);
    long long page = db_count(&e, "PRAGMA page_size");
    long long end = 32 + frames * (page + 24);
    cr_assert_gt(frames, 0);
    cr_assert_gt(wal_file_bytes(&e), end, "%lld bytes of WAL file for %lld frames ending at %lld",
                 wal_file_bytes(&e), frames, end);
    char *before = dump(&e);
    for (int round = 0; round < 2; round++) {
        kill(e.proc.pid, SIGKILL);
        ts_engine_kill(&e);
        cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0, "restart %d", round);
        char *after = dump(&e);
        cr_assert_str_eq(after, before, "round %d", round);
        free(after);
        free(before);
        create_padded(&e, round ? "y" : "x", 0, 200);
        before = dump(&e);
    }
    cJSON *s = ts_rpc(&e, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint, 700);
    cJSON_Delete(s);
    free(before);
    ts_engine_destroy(&e);
}

static void write_ok(ts_engine_t *e, const char *method, const char *params)
{
    cJSON *r = ts_rpc(e, method, params);
    cr_assert_not_null(ts_rpc_result(r), "%s %s", method, params);
    cJSON_Delete(r);
}

/* A commit's new writes are one outbox row (a pack); a write that leaves
 * the outbox is marked gone, and the pack goes with its last write. Rows
 * of the outbox (from before packs, or a conflict's rewrite under its old
 * seq) are read back in seq order among the packed writes. */
Test(durability, packs_of_writes_come_back_in_order_and_go_when_done, .timeout = 60)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    const char *batch = "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{"
                        "\"collection\":\"sessions\",\"doc\":{\"id\":\"p1\",\"n\":1}}},"
                        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"create\",\"params\":{"
                        "\"collection\":\"sessions\",\"doc\":{\"id\":\"p2\",\"n\":2}}},"
                        "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"create\",\"params\":{"
                        "\"collection\":\"sessions\",\"doc\":{\"id\":\"p3\",\"n\":3}}}]";
    char *reply = ts_rpc_raw(e.dealer, batch, strlen(batch), 10000);
    cr_assert_not_null(reply);
    cJSON *answers = cJSON_Parse(reply);
    free(reply);
    char mutation[3][64];
    for (int i = 0; i < 3; i++) {
        const cJSON *sync = cJSON_GetObjectItem(ts_rpc_result(cJSON_GetArrayItem(answers, i)), "sync");
        snprintf(mutation[i], sizeof mutation[i], "%s",
                 cJSON_GetObjectItem(sync, "mutation")->valuestring);
    }
    cJSON_Delete(answers);
    cr_assert_eq(db_count(&e, "SELECT count(*) FROM outbox_pack"), 1, "one batch, one pack");
    cr_assert_eq(db_count(&e, "SELECT count FROM outbox_pack"), 3);
    write_ok(&e, "update", "{\"collection\":\"sessions\",\"id\":\"p1\",\"patch\":{\"n\":10}}");
    write_ok(&e, "update", "{\"collection\":\"sessions\",\"id\":\"p1\",\"patch\":{\"n\":11}}");
    cr_assert_eq(db_count(&e, "SELECT count(*) FROM outbox_pack"), 3);
    /* cancelling the create of p2: marked gone, its pack stays for p1 and p3 */
    char params[128];
    snprintf(params, sizeof params, "{\"mutation\":\"%s\"}", mutation[1]);
    write_ok(&e, "cancel", params);
    cr_assert_eq(db_count(&e, "SELECT count(*) FROM outbox_gone"), 1);
    cr_assert_eq(ts_engine_stop(&e), 0);
    /* as a conflict leaves it: the first update rewritten in its place, as
     * a row under its seq, its pack gone with it */
    char path[4300];
    snprintf(path, sizeof path, "%s/therasync.db", e.data);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "CREATE TEMP TABLE first AS SELECT min(first_seq) AS seq FROM "
                              "outbox_pack WHERE count = 1;"
                              "DELETE FROM outbox_pack WHERE first_seq = (SELECT seq FROM first);"
                              "INSERT INTO outbox(seq, mutation, op, coll, doc_id, base_version, "
                              "at, body, client) SELECT seq, "
                              "'0190a0b0-0000-7000-8000-0000000000aa', 2, 'sessions', 'p1', 0, 1, "
                              "'{\"n\":5,\"r\":1}', 'test' FROM first",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0);
    cJSON *g = ts_rpc(&e, "get", "{\"collection\":\"sessions\",\"id\":\"p1\"}");
    const cJSON *res = ts_rpc_result(g);
    const cJSON *doc = cJSON_GetObjectItem(res, "doc");
    cr_assert_eq(cJSON_GetObjectItem(doc, "n")->valueint, 11, "the later update is applied last");
    cr_assert_eq(cJSON_GetObjectItem(doc, "r")->valueint, 1, "the rewritten one is applied");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "sync"), "pending")->valueint, 3);
    cJSON_Delete(g);
    g = ts_rpc(&e, "get", "{\"collection\":\"sessions\",\"id\":\"p2\"}");
    cr_assert_eq(ts_rpc_error_code(g), -32001, "the cancelled create stays gone");
    cJSON_Delete(g);
    /* cancelling the rest empties the outbox: packs, gone marks and rows */
    for (int i = 0; i < 3; i += 2) {
        snprintf(params, sizeof params, "{\"mutation\":\"%s\"}", mutation[i]);
        write_ok(&e, "cancel", params); /* a create's cancel takes its updates with it */
    }
    cr_assert_eq(db_count(&e, "SELECT count(*) FROM outbox_pack"), 0);
    cr_assert_eq(db_count(&e, "SELECT count(*) FROM outbox_gone"), 0);
    cr_assert_eq(db_count(&e, "SELECT count(*) FROM outbox"), 0);
    cr_assert_eq(db_count(&e, "SELECT count(*) FROM audit WHERE event = 'accepted'"), 5,
                 "each write's accepted line left the outbox for the audit trail");
    cr_assert_eq(db_count(&e, "SELECT count(*) FROM audit WHERE event = 'cancelled'"), 5);
    cJSON *s = ts_rpc(&e, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint, 0);
    cJSON_Delete(s);
    ts_engine_destroy(&e);
}

Test(durability, second_daemon_on_same_data_dir_refuses, .timeout = 60)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    char ep[64], ev[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", ts_free_port());
    snprintf(ev, sizeof ev, "tcp://127.0.0.1:%d", ts_free_port());
    const char *args[] = {"--data", e.data, "--endpoint", ep, "--events", ev, NULL};
    ts_proc_t second;
    cr_assert_eq(ts_proc_spawn(&second, e.dir, "therasyncd", args), 0);
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&second, "in use by another therasyncd", 10000, line,
                                   sizeof line), 0, "no clear message");
    cr_assert_neq(ts_proc_stop(&second, 10000), 0, "the second daemon must exit non-zero");
    cJSON *r = ts_rpc(&e, "ping", NULL);
    cr_assert_not_null(ts_rpc_result(r), "the first daemon is unharmed");
    cJSON_Delete(r);
    ts_engine_destroy(&e);
}

Test(durability, unusable_data_dir_fails_at_start, .timeout = 30)
{
    char *dir = ts_tmpdir("ts-baddir");
    char file[4200], data[4300];
    snprintf(file, sizeof file, "%s/not-a-dir", dir);
    FILE *f = fopen(file, "w");
    fputs("x", f);
    fclose(f);
    snprintf(data, sizeof data, "%s/data", file); /* a dir under a regular file */
    const char *args[] = {"--data", data, "--endpoint", "tcp://127.0.0.1:0", "--events",
                          "tcp://127.0.0.1:0", NULL};
    ts_proc_t p;
    cr_assert_eq(ts_proc_spawn(&p, dir, "therasyncd", args), 0);
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&p, "cannot create data dir", 10000, line, sizeof line), 0);
    cr_assert_neq(ts_proc_stop(&p, 10000), 0);
    ts_rmtree(dir);
    free(dir);
}

/* Copies file src to dst with mode. 0 or -1. */
static int copy_file(const char *src, const char *dst, mode_t mode)
{
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    char buf[65536];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    return rc == 0 ? chmod(dst, mode) : -1;
}

/* Starts therasyncd on data without write access to it. Root ignores
 * permission bits, so as root it runs through setpriv as nobody, from
 * copies of the binary and the policies in dir that nobody can read. */
static int spawn_without_write_access(ts_proc_t *p, const char *dir, const char *data)
{
    static const char *const files[] = {"validate.lua", "selectors.lua", "conflict.lua"};
    char exe[4200], pol[4200], src[4400], dst[4400];
    snprintf(exe, sizeof exe, "%s/therasyncd", ts_build_dir());
    snprintf(pol, sizeof pol, "%s", permissive_args()[1]);
    if (geteuid() == 0) {
        snprintf(exe, sizeof exe, "%s/therasyncd", dir);
        snprintf(src, sizeof src, "%s/therasyncd", ts_build_dir());
        snprintf(pol, sizeof pol, "%s/policies", dir);
        if (chmod(dir, 0755) != 0 || copy_file(src, exe, 0755) != 0 ||
            (mkdir(pol, 0755) != 0 && errno != EEXIST))
            return -1;
        for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
            snprintf(src, sizeof src, "%s/%s", permissive_args()[1], files[i]);
            snprintf(dst, sizeof dst, "%s/%s", pol, files[i]);
            if (copy_file(src, dst, 0644) != 0)
                return -1;
        }
        const char *args[] = {"--reuid=65534", "--regid=65534", "--clear-groups", exe,
                              "--data", data, "--policies", pol, "--endpoint",
                              "tcp://127.0.0.1:0", "--events", "tcp://127.0.0.1:0", NULL};
        return ts_proc_spawn(p, dir, "/usr/bin/setpriv", args);
    }
    const char *args[] = {"--data", data, "--policies", pol, "--endpoint", "tcp://127.0.0.1:0",
                          "--events", "tcp://127.0.0.1:0", NULL};
    return ts_proc_spawn(p, dir, "therasyncd", args);
}

/* Sets mode on path and on everything directly in it (the data dir is flat). */
static void chmod_tree(const char *path, mode_t dir_mode, mode_t file_mode)
{
    const char *names[] = {"LOCK", "therasync.db", "therasync.db-wal", "therasync.db-shm"};
    char f[4400];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(f, sizeof f, "%s/%s", path, names[i]);
        chmod(f, file_mode); /* absent ones are fine */
    }
    cr_assert_eq(chmod(path, dir_mode), 0);
}

/* A data dir that is read-only gets a clear error at start, and what it
 * holds is still all there once it is writable again. */
Test(durability, read_only_data_dir_is_refused_and_kept, .timeout = 60)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    for (int i = 0; i < 3; i++) {
        char p[160];
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"ro%d\",\"v\":%d}}", i,
                 i);
        cJSON *r = ts_rpc(&e, "create", p);
        cr_assert_not_null(ts_rpc_result(r));
        cJSON_Delete(r);
    }
    cr_assert_eq(ts_engine_stop(&e), 0);

    /* The data dir with its database, then an empty one: both read-only. */
    char empty[4300];
    snprintf(empty, sizeof empty, "%s/empty", e.dir);
    cr_assert_eq(mkdir(empty, 0555), 0);
    chmod_tree(e.data, 0555, 0444);
    const char *dirs[] = {e.data, empty};
    for (int i = 0; i < 2; i++) {
        ts_proc_t p;
        char line[512];
        cr_assert_eq(spawn_without_write_access(&p, e.dir, dirs[i]), 0);
        cr_assert_eq(ts_proc_wait_line(&p, "is not usable", 10000, line, sizeof line), 0,
                     "no clear refusal for %s; log: %s", dirs[i], p.log_path);
        int rc = ts_proc_wait_exit(&p, 10000);
        cr_assert(rc > 0 && rc < 128, "exit %d; log: %s", rc, p.log_path);
    }

    chmod_tree(e.data, 0700, 0600);
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0);
    for (int i = 0; i < 3; i++) {
        char p[96];
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"ro%d\"}", i);
        cJSON *r = ts_rpc(&e, "get", p);
        const cJSON *doc = cJSON_GetObjectItemCaseSensitive(ts_rpc_result(r), "doc");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "v");
        cr_assert(cJSON_IsNumber(v) && v->valueint == i, "ro%d lost", i);
        cJSON_Delete(r);
    }
    ts_engine_destroy(&e);
}

Test(durability, full_disk_refuses_writes_and_loses_nothing, .timeout = 60)
{
    ts_engine_t e;
    char *dir = ts_tmpdir("ts-full");
    char config[4200];
    snprintf(config, sizeof config, "%s/full.lua", dir);
    FILE *f = fopen(config, "w");
    fputs("max_db_bytes = 200 * 1024\n", f);
    fclose(f);
    const char *args[] = {"--config", config, "--policies", permissive_args()[1], NULL};
    cr_assert_eq(ts_engine_start(&e, args), 0);
    char *pad = malloc(4001);
    memset(pad, 'x', 4000);
    pad[4000] = '\0';
    char *p = malloc(4200);
    int ok = 0, refused = 0;
    for (int i = 0; i < 400 && refused < 5; i++) {
        snprintf(p, 4200, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"f%d\",\"pad\":\"%s\"}}",
                 i, pad);
        cJSON *r = ts_rpc(&e, "create", p);
        cr_assert_not_null(r);
        if (ts_rpc_result(r)) {
            cr_assert_eq(refused, 0, "a write succeeded after the disk was full");
            ok++;
        } else {
            cr_assert_eq(ts_rpc_error_code(r), -32603);
            const char *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message")
                                  ->valuestring;
            cr_assert(strstr(msg, "full") != NULL, "message says why: %s", msg);
            snprintf(p, 4200, "{\"collection\":\"sessions\",\"id\":\"f%d\"}", i);
            cJSON *g = ts_rpc(&e, "get", p);
            cr_assert_eq(ts_rpc_error_code(g), -32001, "a refused write is not visible");
            cJSON_Delete(g);
            refused++;
        }
        cJSON_Delete(r);
    }
    cr_assert_gt(ok, 5);
    cr_assert_eq(refused, 5);
    cr_assert_eq(ts_engine_stop(&e), 0);
    cr_assert_eq(ts_engine_restart(&e, args), 0);
    cJSON *s = ts_rpc(&e, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(s), "collections"),
                                     "sessions")->valueint, ok);
    cJSON_Delete(s);
    free(pad);
    free(p);
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
}

/* ---- the data dir removed or replaced while the daemon runs ----
 * Persist checks, in every commit before its answers go out, that the data
 * dir's LOCK and database files are still the files it has open; once they
 * are not, writes are refused (they would land in files nobody will read
 * again), status says why and the log says so once. */

static void create_doc(ts_engine_t *e, const char *id, int v)
{
    char p[160];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"v\":%d}}", id, v);
    write_ok(e, "create", p);
}

/* A write the daemon must refuse for want of its storage: the storage
 * error, and nothing of it visible afterwards. */
static void write_refused(ts_engine_t *e, const char *method, const char *params, const char *id,
                          int visible_v)
{
    cJSON *r = ts_rpc(e, method, params);
    cr_assert_not_null(r, "no answer to %s %s", method, params);
    cr_assert_eq(ts_rpc_error_code(r), -32603, "%s %s must be refused", method, params);
    cr_assert_str_eq(ts_rpc_error_reason(r), "storage_unavailable");
    const char *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message")->valuestring;
    cr_assert(strstr(msg, "data directory") != NULL, "the message says why: %s", msg);
    cJSON_Delete(r);
    char p[96];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"%s\"}", id);
    r = ts_rpc(e, "get", p);
    if (visible_v < 0) {
        cr_assert_eq(ts_rpc_error_code(r), -32001, "a refused create of %s is not visible", id);
    } else {
        const cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(r), "doc");
        cr_assert_eq(cJSON_GetObjectItem(doc, "v")->valueint, visible_v,
                     "a refused update of %s is not visible", id);
    }
    cJSON_Delete(r);
}

/* status.storage (a static copy; "" when absent). */
static const char *storage_status(ts_engine_t *e)
{
    static char text[128];
    cJSON *s = ts_rpc(e, "status", NULL);
    const cJSON *storage = cJSON_GetObjectItem(ts_rpc_result(s), "storage");
    snprintf(text, sizeof text, "%s", cJSON_IsString(storage) ? storage->valuestring : "");
    cJSON_Delete(s);
    return text;
}

/* Lines of the log at path that contain needle. */
static int log_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

/* Whether dir holds no entries (the daemon made no files in it). */
static bool dir_is_empty(const char *dir)
{
    const char *names[] = {"LOCK", "therasync.db", "therasync.db-wal", "therasync.db-shm"};
    char f[4400];
    struct stat st;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(f, sizeof f, "%s/%s", dir, names[i]);
        if (stat(f, &st) == 0)
            return false;
    }
    return true;
}

static void get_v(ts_engine_t *e, const char *id, int v)
{
    char p[96];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"%s\"}", id);
    cJSON *r = ts_rpc(e, "get", p);
    const cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(r), "doc");
    cr_assert(doc && cJSON_GetObjectItem(doc, "v")->valueint == v, "%s at v %d", id, v);
    cJSON_Delete(r);
}

Test(durability, removed_data_dir_refuses_writes_and_says_so, .timeout = 60)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    cr_assert_str_eq(storage_status(&e), "ok");
    char id[32], p[160];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "r%d", i);
        create_doc(&e, id, 1);
    }
    cr_assert_eq(ts_rmtree(e.data), 0);
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "x%d", i);
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"v\":1}}", id);
        write_refused(&e, "create", p, id, -1);
    }
    write_refused(&e, "update", "{\"collection\":\"sessions\",\"id\":\"r0\",\"patch\":{\"v\":2}}",
                  "r0", 1);
    for (int i = 0; i < 10; i++) { /* reads of what is in memory go on */
        snprintf(id, sizeof id, "r%d", i);
        get_v(&e, id, 1);
    }
    cr_assert_str_eq(storage_status(&e), "data directory removed");
    cr_assert_eq(log_lines(e.proc.log_path, " error "), 1, "one error line; log %s", e.proc.log_path);
    cr_assert_eq(log_lines(e.proc.log_path, "was removed"), 1, "log %s", e.proc.log_path);
    struct stat st;
    cr_assert_neq(stat(e.data, &st), 0, "the daemon does not make the dir again");

    cr_assert_eq(ts_engine_stop(&e), 0, "SIGTERM exits 0");
    cr_assert_neq(stat(e.data, &st), 0, "nor at exit");
    /* Restarted on a fresh data dir: writes work again; what was in the
     * removed one is gone with it (restore it from a backup to get it back). */
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0);
    cr_assert_str_eq(storage_status(&e), "ok");
    create_doc(&e, "after", 1);
    get_v(&e, "after", 1);
    cJSON *g = ts_rpc(&e, "get", "{\"collection\":\"sessions\",\"id\":\"r0\"}");
    cr_assert_eq(ts_rpc_error_code(g), -32001);
    cJSON_Delete(g);
    ts_engine_destroy(&e);
}

/* The data dir renamed away and an empty one made at its path: detected
 * the same way; nothing is written into either, and moving the old one
 * back brings exactly the acknowledged writes back. */
Test(durability, replaced_data_dir_refuses_writes_and_restoring_it_keeps_everything,
     .timeout = 60)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    char id[32], p[160], old[4300];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "r%d", i);
        create_doc(&e, id, 1);
    }
    snprintf(old, sizeof old, "%s.old", e.data);
    cr_assert_eq(rename(e.data, old), 0);
    cr_assert_eq(mkdir(e.data, 0700), 0);
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "x%d", i);
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"v\":1}}", id);
        write_refused(&e, "create", p, id, -1);
    }
    write_refused(&e, "update", "{\"collection\":\"sessions\",\"id\":\"r3\",\"patch\":{\"v\":2}}",
                  "r3", 1);
    cr_assert_str_eq(storage_status(&e), "data directory replaced");
    cr_assert_eq(log_lines(e.proc.log_path, " error "), 1, "one error line; log %s", e.proc.log_path);
    cr_assert_eq(log_lines(e.proc.log_path, "was replaced"), 1, "log %s", e.proc.log_path);
    cr_assert_eq(ts_engine_stop(&e), 0);
    cr_assert(dir_is_empty(e.data), "nothing was made in the new dir");

    cr_assert_eq(rmdir(e.data), 0);
    cr_assert_eq(rename(old, e.data), 0);
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0);
    cr_assert_str_eq(storage_status(&e), "ok");
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "r%d", i);
        get_v(&e, id, 1);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"x%d\"}", i);
        cJSON *g = ts_rpc(&e, "get", p);
        cr_assert_eq(ts_rpc_error_code(g), -32001, "refused x%d is not stored", i);
        cJSON_Delete(g);
    }
    cJSON *s = ts_rpc(&e, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint, 10);
    cJSON_Delete(s);
    ts_engine_destroy(&e);
}

/* With the old LOCK gone, a second daemon can start on the path: the first
 * refuses writes, and when it exits it must not touch the second's files
 * (SQLite deletes the WAL and shm files by name when its last connection
 * closes). */
Test(durability, daemon_on_a_removed_data_dir_leaves_the_next_ones_files_alone, .timeout = 60)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    create_doc(&e, "r0", 1);
    void *sub = zmq_socket(e.zctx, ZMQ_SUB);
    int wait_ms = 5000;
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &wait_ms, sizeof wait_ms);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "sync", 4);
    cr_assert_eq(zmq_connect(sub, e.events), 0);
    usleep(300 * 1000); /* the subscription reaches the daemon */
    cr_assert_eq(ts_rmtree(e.data), 0);
    /* status says so within a second or so, without a write */
    bool told = false;
    for (int i = 0; i < 50 && !told; i++) {
        told = strcmp(storage_status(&e), "data directory removed") == 0;
        if (!told)
            usleep(100 * 1000);
    }
    cr_assert(told, "status never said the data dir is gone");
    bool published = false;
    for (int i = 0; i < 5 && !published; i++) {
        char topic[16], body[4096];
        int n = zmq_recv(sub, topic, sizeof topic, 0);
        int m = n >= 0 ? zmq_recv(sub, body, sizeof body - 1, 0) : -1;
        cr_assert(m >= 0, "no sync.status event");
        body[m < (int)sizeof body - 1 ? m : (int)sizeof body - 1] = '\0';
        published = strstr(body, "\"storage\":\"data directory removed\"") != NULL;
    }
    cr_assert(published, "sync.status says so too");
    zmq_close(sub);
    ts_engine_t first = e; /* its process and its client */
    /* the second daemon, in e's place, on other ports */
    snprintf(e.endpoint, sizeof e.endpoint, "tcp://127.0.0.1:%d", ts_free_port());
    snprintf(e.events, sizeof e.events, "tcp://127.0.0.1:%d", ts_free_port());
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0, "log %s", e.proc.log_path);
    e.dealer = ts_engine_client(&e);
    create_doc(&e, "s0", 1);
    write_refused(&first, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"x0\"}}",
                  "x0", -1);
    /* the first stops, and its exit leaves the second's files alone */
    cr_assert_eq(ts_proc_stop(&first.proc, 15000), 0, "the first exits 0; log %s",
                 first.proc.log_path);
    zmq_close(first.dealer);
    cr_assert_eq(log_lines(first.proc.log_path, " error "), 1, "log %s", first.proc.log_path);
    char wal[4400];
    snprintf(wal, sizeof wal, "%s/therasync.db-wal", e.data);
    struct stat st;
    cr_assert_eq(stat(wal, &st), 0, "the second daemon's WAL is still there");
    create_doc(&e, "s1", 1);
    kill(e.proc.pid, SIGKILL);
    ts_engine_kill(&e);
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0);
    zmq_close(e.dealer);
    e.dealer = ts_engine_client(&e);
    get_v(&e, "s0", 1);
    get_v(&e, "s1", 1);
    cr_assert_str_eq(storage_status(&e), "ok");
    ts_engine_destroy(&e);
}

/* metrics.persist.<name> */
static long long persist_metric(ts_engine_t *e, const char *name)
{
    cJSON *m = ts_rpc(e, "metrics", NULL);
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(m), "persist"), name);
    cr_assert(cJSON_IsNumber(v), "metrics.persist.%s", name);
    long long n = (long long)v->valuedouble;
    cJSON_Delete(m);
    return n;
}

/* Creates b0..b(count-1) (4 kB each) in batches of 50, all acknowledged. */
static void create_batches(ts_engine_t *e, int from, int count)
{
    enum { PER = 50, PAD = 4000 };
    size_t cap = PER * (PAD + 200) + 2;
    char *batch = malloc(cap);
    for (int i = from; i < from + count; i += PER) {
        size_t off = 0;
        batch[off++] = '[';
        for (int k = i; k < i + PER && k < from + count; k++)
            off += (size_t)snprintf(batch + off, cap - off,
                                    "%s{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\","
                                    "\"params\":{\"collection\":\"sessions\",\"doc\":{\"id\":"
                                    "\"b%d\",\"v\":1,\"pad\":\"%0*d\"}}}",
                                    k > i ? "," : "", k, k, PAD, k);
        batch[off++] = ']';
        char *reply = ts_rpc_raw(e->dealer, batch, off, 30000);
        cr_assert_not_null(reply, "no answer to batch %d", i);
        cJSON *all = cJSON_Parse(reply);
        free(reply);
        for (cJSON *r = all->child; r; r = r->next)
            cr_assert_not_null(ts_rpc_result(r), "b%d refused", cJSON_GetObjectItem(r, "id")->valueint);
        cJSON_Delete(all);
    }
    free(batch);
}

/* The check must not mistake SQLite's own work for a replaced file: past
 * 8 MB of WAL the checkpointer copies it back, and once it has copied all
 * of it the next commit starts the WAL over (in the same file). */
Test(durability, checkpoints_and_wal_restarts_are_no_false_alarm, .timeout = 120)
{
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, permissive_args()), 0);
    int written = 0;
    while (persist_metric(&e, "wal_pages") < 2500 && written < 20000) {
        create_batches(&e, written, 500);
        written += 500;
    }
    cr_assert_geq(persist_metric(&e, "wal_pages"), 2500, "the WAL never grew past 10 MB");
    /* quiet for the checkpointer, then a write: the WAL starts over */
    bool restarted = false;
    for (int round = 0; round < 20 && !restarted; round++) {
        usleep(600 * 1000);
        create_batches(&e, written, 50);
        written += 50;
        restarted = persist_metric(&e, "wal_pages") < 2048;
    }
    cr_assert(restarted, "the WAL never started over");
    create_batches(&e, written, 1000); /* and writes go on into it */
    written += 1000;
    cr_assert_str_eq(storage_status(&e), "ok");
    cr_assert_eq(log_lines(e.proc.log_path, " error "), 0, "log %s", e.proc.log_path);
    cr_assert_eq(ts_engine_stop(&e), 0);
    cr_assert_eq(ts_engine_restart(&e, permissive_args()), 0);
    cJSON *s = ts_rpc(&e, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(s), "collections"),
                                     "sessions")->valueint, written, "every acknowledged write");
    cJSON_Delete(s);
    ts_engine_destroy(&e);
}
