/* test_audit.c — the audit trail: every mutation's life, durable, never a
 * document body. (Sync outcomes are covered by the sync suite.) */
#include "../support/engine.h"
#include "therasync/persist.h"

#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static ts_engine_t engine;

static const char *const *permissive(void)
{
    static const char *args[3];
    args[0] = "--policies";
    args[1] = ts_source_path("tests/fixtures/policies/permissive");
    return args;
}

static void start(void)
{
    cr_assert_eq(ts_engine_start(&engine, permissive()), 0);
}

static void stop(void)
{
    ts_engine_destroy(&engine);
}

TestSuite(audit, .init = start, .fini = stop, .timeout = 60);

static cJSON *entries(const char *params)
{
    cJSON *r = ts_rpc(&engine, "audit", params);
    cJSON *list = cJSON_DetachItemFromObject(ts_rpc_result(r), "entries");
    cr_assert(cJSON_IsArray(list), "audit answered: %s", cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    return list;
}

/* The audit for params has count entries, and entry index has key = value. */
static void assert_entry(const char *params, int count, int index, const char *key,
                         const char *value)
{
    cJSON *all = entries(params);
    cr_assert_eq(cJSON_GetArraySize(all), count, "%s", params);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(all, index), key)->valuestring, value);
    cJSON_Delete(all);
}

Test(audit, records_each_mutation_without_bodies)
{
    cJSON_Delete(ts_rpc(&engine, "create",
                        "{\"collection\":\"sessions\",\"doc\":{\"id\":\"a1\",\"notes\":\"SECRET-NOTE\"}}"));
    cJSON *u = ts_rpc(&engine, "update",
                      "{\"collection\":\"sessions\",\"id\":\"a1\",\"patch\":{\"notes\":\"SECRET-2\"}}");
    const char *mutation = cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(u), "sync"),
                                               "mutation")->valuestring;
    char params[128];
    snprintf(params, sizeof params, "{\"mutation\":\"%s\"}", mutation);
    cJSON *c = ts_rpc(&engine, "cancel", params);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(ts_rpc_result(c), "cancelled")));
    cJSON_Delete(c);
    cJSON_Delete(ts_rpc(&engine, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"b1\"}}"));

    cJSON *all = entries("{\"collection\":\"sessions\",\"id\":\"a1\"}");
    cr_assert_eq(cJSON_GetArraySize(all), 3, "accepted, accepted, cancelled");
    const char *events[] = {"accepted", "accepted", "cancelled"};
    for (int i = 0; i < 3; i++) {
        cJSON *e = cJSON_GetArrayItem(all, i);
        cr_assert_str_eq(cJSON_GetObjectItem(e, "event")->valuestring, events[i]);
        cr_assert_str_eq(cJSON_GetObjectItem(e, "id")->valuestring, "a1");
        cr_assert(strncmp(cJSON_GetObjectItem(e, "client")->valuestring, "zmq:", 4) == 0);
        cr_assert_not_null(cJSON_GetObjectItem(e, "at"));
    }
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(all, 2), "mutation")->valuestring,
                     mutation);
    char *text = cJSON_PrintUnformatted(all);
    cr_assert_null(strstr(text, "SECRET"), "no document content in the audit trail");
    free(text);
    cJSON_Delete(all);
    cJSON_Delete(u);

    cJSON *limited = entries("{\"limit\":2}");
    cr_assert_eq(cJSON_GetArraySize(limited), 2);
    cJSON_Delete(limited);
    cJSON *future = entries("{\"since\":\"2999-01-01T00:00:00Z\"}");
    cr_assert_eq(cJSON_GetArraySize(future), 0);
    cJSON_Delete(future);
}

Test(audit, survives_restart_and_checks_params)
{
    cJSON_Delete(ts_rpc(&engine, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"r1\"}}"));
    cr_assert_eq(ts_engine_stop(&engine), 0);
    cr_assert_eq(ts_engine_restart(&engine, permissive()), 0);
    cJSON *all = entries("{\"id\":\"r1\"}");
    cr_assert_eq(cJSON_GetArraySize(all), 1);
    cJSON_Delete(all);
    cJSON *bad = ts_rpc(&engine, "audit", "{\"since\":\"yesterday\"}");
    cr_assert_eq(ts_rpc_error_code(bad), -32602);
    cJSON_Delete(bad);
    bad = ts_rpc(&engine, "audit", "{\"limit\":\"ten\"}");
    cr_assert_eq(ts_rpc_error_code(bad), -32602);
    cJSON_Delete(bad);
}

Test(audit, standalone_status_and_sync)
{
    cJSON *s = ts_rpc(&engine, "status", NULL);
    cJSON *res = ts_rpc_result(s);
    cr_assert_str_eq(cJSON_GetObjectItem(res, "api")->valuestring, "none");
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(res, "online")));
    cJSON_Delete(s);
    cJSON *y = ts_rpc(&engine, "sync", NULL);
    cr_assert_eq(cJSON_GetObjectItem(ts_rpc_result(y), "pushed")->valueint, 0);
    cJSON_Delete(y);
}

/* A data dir written by a therasyncd with schema 2 (one audit row per line,
 * a row per pending mutation in the outbox) opens, migrates to 3 (a
 * confirmed write's lines in one row), 4 (new mutations in packs) and 5, and
 * answers its old lines as before, next to new ones; its pending mutation
 * is pending still, and leaves the old outbox as it always did. */
Test(audit, an_old_schema_2_database_migrates)
{
    cr_assert_eq(ts_engine_stop(&engine), 0);
    char path[4300];
    snprintf(path, sizeof path, "%s/therasync.db", engine.data);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(
        db,
        "DROP TABLE audit; DROP TABLE outbox_pack; DROP TABLE outbox_gone; DROP TABLE outbox_match;"
        "INSERT INTO outbox(seq, mutation, op, coll, doc_id, base_version, at, body, client) "
        " VALUES (1, '0190a0b0-0000-7000-8000-000000000001', 1, 'sessions', 'legacy1', 0, 6000,"
        " '{\"room\":\"L\"}', 'zmq:old');"
        "CREATE TABLE audit(seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, mutation TEXT NOT NULL,"
        "  coll TEXT NOT NULL, doc_id TEXT NOT NULL, event TEXT NOT NULL, client TEXT,"
        "  version INTEGER, reason TEXT);"
        "INSERT INTO audit(at, mutation, coll, doc_id, event, client, version, reason) VALUES"
        " (1000, 'm-old', 'sessions', 'old1', 'accepted', 'zmq:old', NULL, NULL),"
        " (2000, 'm-old', 'sessions', 'old1', 'sent', NULL, NULL, NULL),"
        " (3000, 'm-old', 'sessions', 'old1', 'confirmed', NULL, 1, NULL),"
        " (4000, 'm-bad', 'sessions', 'old1', 'accepted', 'zmq:old', 1, NULL),"
        " (5000, 'm-bad', 'sessions', 'old1', 'rejected', NULL, 1, 'validation: no');"
        "PRAGMA user_version=2;",
        NULL, NULL, &err);
    cr_assert_eq(rc, SQLITE_OK, "%s", err ? err : "");
    sqlite3_close(db);
    cr_assert_eq(ts_engine_restart(&engine, permissive()), 0);
    cJSON *all = entries("{\"id\":\"old1\"}");
    cr_assert_eq(cJSON_GetArraySize(all), 5);
    const char *events[] = {"accepted", "sent", "confirmed", "accepted", "rejected"};
    for (int i = 0; i < 5; i++)
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(all, i), "event")->valuestring,
                         events[i]);
    cJSON *first = cJSON_GetArrayItem(all, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(first, "at")->valuestring, "1970-01-01T00:00:01.000Z");
    cr_assert_str_eq(cJSON_GetObjectItem(first, "client")->valuestring, "zmq:old");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(all, 2), "version")->valueint, 1);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(all, 4), "reason")->valuestring,
                     "validation: no");
    cJSON_Delete(all);
    /* the pending write of before: visible, in the audit, and cancelled as before */
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"legacy1\"}");
    const cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(g), "doc");
    cr_assert_str_eq(cJSON_GetObjectItem(doc, "room")->valuestring, "L");
    cJSON_Delete(g);
    assert_entry("{\"id\":\"legacy1\"}", 1, 0, "client", "zmq:old");
    cJSON *c = ts_rpc(&engine, "cancel", "{\"mutation\":\"0190a0b0-0000-7000-8000-000000000001\"}");
    cr_assert_not_null(ts_rpc_result(c), "the old pending write can be cancelled");
    cJSON_Delete(c);
    assert_entry("{\"id\":\"legacy1\"}", 2, 1, "event", "cancelled");
    /* and it is at version 4 now, still taking writes */
    cJSON_Delete(ts_rpc(&engine, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"new1\"}}"));
    all = entries("{\"id\":\"new1\"}");
    cr_assert_eq(cJSON_GetArraySize(all), 1);
    cJSON_Delete(all);
    cr_assert_eq(ts_engine_stop(&engine), 0);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), TS_SCHEMA_VERSION);
    sqlite3_finalize(st);
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), 0, "the cancelled write left the old outbox");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* A create through a new DEALER with routing id (len bytes; NULL: none,
 * ZeroMQ makes one), and the audit's client for it. */
static char *client_of_create(const char *doc_id, const void *routing_id, size_t len)
{
    void *s = ts_engine_client(&engine);
    if (routing_id) { /* set before connecting: reconnect with it */
        zmq_close(s);
        s = zmq_socket(engine.zctx, ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(s, ZMQ_ROUTING_ID, routing_id, len);
        cr_assert_eq(zmq_connect(s, engine.endpoint), 0);
    }
    char req[256], params[96];
    snprintf(req, sizeof req,
             "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":"
             "\"sessions\",\"doc\":{\"id\":\"%s\"}}}",
             doc_id);
    char *reply = ts_rpc_raw(s, req, strlen(req), 10000);
    cr_assert(reply && strstr(reply, "\"result\""), "create: %s", reply ? reply : "timeout");
    free(reply);
    zmq_close(s);
    snprintf(params, sizeof params, "{\"id\":\"%s\"}", doc_id);
    cJSON *all = entries(params);
    cr_assert_eq(cJSON_GetArraySize(all), 1);
    char *client = strdup(cJSON_GetObjectItem(cJSON_GetArrayItem(all, 0), "client")->valuestring);
    cJSON_Delete(all);
    return client;
}

/* A routing id the client chose names it as text; one ZeroMQ made, or one
 * with bytes that do not print, stays hex; a chosen one never reads as a
 * key's or as hex. */
Test(audit, names_a_client_by_the_routing_id_it_set)
{
    char *named = client_of_create("r1", "frontdesk-1", 11);
    cr_assert_str_eq(named, "id:frontdesk-1");
    char *generated = client_of_create("r2", NULL, 0);
    cr_assert(strncmp(generated, "zmq:00", 6) == 0, "ZeroMQ's own id is hex: %s", generated);
    char *binary = client_of_create("r3", "\x01tab\tbed", 8);
    cr_assert_str_eq(binary, "zmq:0174616209626564");
    char *spoof = client_of_create("r4", "key:admin", 9);
    cr_assert_str_eq(spoof, "id:key:admin");
    char *too_long = client_of_create("r5", "a-routing-id-far-too-long-for-the-audit-column", 46);
    cr_assert(strncmp(too_long, "zmq:612d", 8) == 0, "%s", too_long);
    /* and the audit's client filter takes the name */
    assert_entry("{\"client\":\"id:frontdesk-1\"}", 1, 0, "id", "r1");
    free(named), free(generated), free(binary), free(spoof), free(too_long);
}
