/* test_front.c — the front door against a real therasyncd: every method's
 * happy path, and every kind of bad input getting its contract error while
 * the daemon keeps answering. */
#include "../support/engine.h"
#include "therasync/json.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static ts_engine_t engine;

static void start(void)
{
    /* Free-form documents: run without validation (tests/e2e/test_policy.c
     * covers the shipped policies). */
    const char *args[] = {"--policies", ts_source_path("tests/fixtures/policies/permissive"), NULL};
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd did not start (log: %s)",
                 engine.proc.log_path);
}

static void stop(void)
{
    ts_engine_destroy(&engine);
}

/* The daemon still answers correctly. */
static void assert_alive(void)
{
    cJSON *r = ts_rpc(&engine, "ping", NULL);
    cr_assert_not_null(r, "no answer to ping");
    cJSON *result = ts_rpc_result(r);
    cr_assert(cJSON_IsString(result) && strcmp(result->valuestring, "pong") == 0);
    cJSON_Delete(r);
}

/* Sends raw bytes; returns the parsed reply (must arrive). */
static cJSON *raw(const void *payload, size_t len)
{
    char *reply = ts_rpc_raw(engine.dealer, payload, len, 10000);
    cr_assert_not_null(reply, "no reply to a raw request");
    cJSON *parsed = cJSON_Parse(reply);
    cr_assert_not_null(parsed, "reply is not JSON: %s", reply);
    free(reply);
    return parsed;
}

static cJSON *raw_text(const char *text)
{
    return raw(text, strlen(text));
}

/* The answer to request, sent alone or (batch) as it is, a batch of one:
 * the request's own answer either way. */
static cJSON *only_answer(const char *request, bool batch)
{
    cJSON *r = raw_text(request);
    if (!batch)
        return r;
    cJSON *one = cJSON_DetachItemFromArray(r, 0);
    cJSON_Delete(r);
    return one;
}

static void assert_error(cJSON *r, int code, const char *reason)
{
    cr_assert_not_null(r);
    cr_assert_eq(ts_rpc_error_code(r), code, "expected error %d, got %d", code,
                 ts_rpc_error_code(r));
    if (reason)
        cr_assert_str_eq(ts_rpc_error_reason(r), reason);
    cJSON_Delete(r);
}

TestSuite(front, .init = start, .fini = stop, .timeout = 60);

Test(front, crud_round_trip)
{
    cJSON *r = ts_rpc(&engine, "create",
                      "{\"collection\":\"sessions\",\"doc\":{\"patient_id\":\"pat-1\","
                      "\"therapist_id\":\"thr-1\",\"status\":\"scheduled\",\"duration_min\":50}}");
    cJSON *res = ts_rpc_result(r);
    cr_assert_not_null(res, "create failed");
    cJSON *doc = cJSON_GetObjectItem(res, "doc");
    const char *id = cJSON_GetObjectItem(doc, "id")->valuestring;
    cr_assert_eq(strlen(id), 36, "generated id is a UUID");
    cr_assert_eq(id[14], '7', "UUID version 7");
    cJSON *sync = cJSON_GetObjectItem(res, "sync");
    cr_assert_str_eq(cJSON_GetObjectItem(sync, "state")->valuestring, "pending");
    char params[256];
    snprintf(params, sizeof params, "{\"collection\":\"sessions\",\"id\":\"%s\"}", id);

    cJSON *g = ts_rpc(&engine, "get", params);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(g), "doc"),
                                         "patient_id")->valuestring, "pat-1");
    cJSON_Delete(g);

    char upd[256];
    snprintf(upd, sizeof upd,
             "{\"collection\":\"sessions\",\"id\":\"%s\",\"patch\":{\"status\":\"completed\","
             "\"duration_min\":null}}", id);
    cJSON *u = ts_rpc(&engine, "update", upd);
    cJSON *udoc = cJSON_GetObjectItem(ts_rpc_result(u), "doc");
    cr_assert_str_eq(cJSON_GetObjectItem(udoc, "status")->valuestring, "completed");
    cr_assert_null(cJSON_GetObjectItem(udoc, "duration_min"), "null in a merge patch removes");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(u), "sync"),
                                     "pending")->valueint, 2);
    cJSON_Delete(u);

    cJSON *q = ts_rpc(&engine, "query",
                      "{\"collection\":\"sessions\",\"selector\":{\"where\":{\"status\":"
                      "\"completed\"}}}");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(ts_rpc_result(q), "items")), 1);
    cJSON_Delete(q);

    cJSON *s = ts_rpc(&engine, "status", NULL);
    cJSON *sres = ts_rpc_result(s);
    cr_assert_eq(cJSON_GetObjectItem(sres, "pending")->valueint, 2);
    cr_assert_str_eq(cJSON_GetObjectItem(sres, "api")->valuestring, "none");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(sres, "collections"), "sessions")
                     ->valueint, 1);
    cJSON_Delete(s);

    cJSON *d = ts_rpc(&engine, "delete", params);
    cr_assert_not_null(ts_rpc_result(d));
    cJSON_Delete(d);
    assert_error(ts_rpc(&engine, "get", params), -32001, "not_found");
    assert_error(ts_rpc(&engine, "delete", params), -32001, "not_found");
    cJSON_Delete(r);
}

Test(front, create_with_id_and_duplicate)
{
    const char *p = "{\"collection\":\"consultations\",\"doc\":{\"id\":\"c-1\",\"status\":\"open\"}}";
    cJSON *r = ts_rpc(&engine, "create", p);
    cr_assert_not_null(ts_rpc_result(r));
    cJSON_Delete(r);
    assert_error(ts_rpc(&engine, "create", p), -32003, "conflict");
}

/* Sends `count` calls of one method as batches of 100, params from fmt with
 * the document's number (twice, for the id and a field); every answer must
 * have the expected error code (0: a result). */
static void batch_calls(const char *method, const char *fmt, int from, int count, int code)
{
    ts_buf_t b = {0};
    char params[160], head[96];
    for (int first = from; first < from + count; first += 100) {
        ts_buf_reset(&b);
        ts_buf_puts(&b, "[");
        int n = from + count - first < 100 ? from + count - first : 100;
        for (int i = first; i < first + n; i++) {
            snprintf(head, sizeof head, "%s{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\",\"params\":",
                     i > first ? "," : "", i, method);
            snprintf(params, sizeof params, fmt, i, i);
            ts_buf_puts(&b, head);
            ts_buf_puts(&b, params);
            ts_buf_puts(&b, "}");
        }
        ts_buf_puts(&b, "]");
        cJSON *answers = raw(b.data, b.len);
        cr_assert_eq(cJSON_GetArraySize(answers), n);
        for (int i = 0; i < n; i++) {
            const cJSON *a = cJSON_GetArrayItem(answers, i);
            cr_assert_eq(ts_rpc_error_code((cJSON *)a), code, "%s %d", method, first + i);
        }
        cJSON_Delete(answers);
    }
    ts_buf_free(&b);
}

/* Every document once in a full query, in order of id. */
static void assert_all_listed(int count)
{
    cJSON *r = ts_rpc(&engine, "query",
                      "{\"collection\":\"sessions\",\"selector\":{\"where\":{},\"order_by\":"
                      "[\"id\",\"asc\"],\"limit\":100000}}");
    const cJSON *items = cJSON_GetObjectItem(ts_rpc_result(r), "items");
    cr_assert_eq(cJSON_GetArraySize(items), count, "listed %d of %d", cJSON_GetArraySize(items), count);
    const char *prev = "";
    for (const cJSON *it = items ? items->child : NULL; it; it = it->next) {
        const char *id = cJSON_GetObjectItem(it, "id")->valuestring;
        cr_assert_gt(strcmp(id, prev), 0, "%s after %s: listed twice or out of order", id, prev);
        prev = id;
    }
    cJSON_Delete(r);
}

/* The store's table of a collection doubles at 3/4 full (from 1,024 slots
 * to 2,048 at the 769th document) and places every entry again from the
 * hash it keeps beside it. Before and after: each document is found,
 * updated, listed once and refused as a duplicate. */
Test(front, documents_stay_findable_while_their_table_grows)
{
    const int steps[] = {700, 1000};
    int made = 0;
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
        batch_calls("create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"t%05d\",\"n\":%d}}", made,
                    steps[s] - made, 0);
        made = steps[s];
        batch_calls("create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"t%05d\",\"n\":%d}}", 0,
                    made, -32003);
        batch_calls("update", "{\"collection\":\"sessions\",\"id\":\"t%05d\",\"patch\":{\"m\":%d}}", 0,
                    made, 0);
        batch_calls("get", "{\"collection\":\"sessions\",\"id\":\"t%05d\"}", 0, made, 0);
        for (int i = 0; i < made; i += 37) {
            char p[96];
            snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"t%05d\"}", i);
            cJSON *g = ts_rpc(&engine, "get", p);
            const cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(g), "doc");
            cr_assert_eq(cJSON_GetObjectItem(doc, "n")->valueint, i);
            cr_assert_eq(cJSON_GetObjectItem(doc, "m")->valueint, i, "the update of t%05d", i);
            cJSON_Delete(g);
        }
        assert_all_listed(made);
        cJSON *st = ts_rpc(&engine, "status", NULL);
        cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(st), "collections"),
                                         "sessions")->valueint, made);
        cJSON_Delete(st);
    }
}

Test(front, server_fields_are_not_taken_from_clients)
{
    cJSON *r = ts_rpc(&engine, "create",
                      "{\"collection\":\"sessions\",\"doc\":{\"deleted\":true,\"id\":\"s1\","
                      "\"version\":99,\"room\":\"A\",\"updated_at\":\"x\"}}");
    cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(r), "doc");
    cr_assert_null(cJSON_GetObjectItem(doc, "version"));
    cr_assert_null(cJSON_GetObjectItem(doc, "updated_at"));
    cr_assert_null(cJSON_GetObjectItem(doc, "deleted"));
    cr_assert_str_eq(cJSON_GetObjectItem(doc, "room")->valuestring, "A");
    cJSON_Delete(r);
    assert_error(ts_rpc(&engine, "update",
                        "{\"collection\":\"sessions\",\"id\":\"s1\",\"patch\":{\"id\":\"s2\"}}"),
                 -32602, NULL);
}

/* What a create's reply carries, less its id, as cJSON prints it (numbers
 * and escapes in one spelling), or the error code. */
static char *created(cJSON *reply)
{
    cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(reply), "doc");
    if (!doc) {
        char code[32];
        snprintf(code, sizeof code, "error %d", ts_rpc_error_code(reply));
        return strdup(code);
    }
    cJSON_DeleteItemFromObject(doc, "id");
    return cJSON_PrintUnformatted(doc);
}

/* A single create is read without building its document's tree (the front
 * door's fast way); one inside a batch takes the general way. Whatever the
 * client wrote, both store the same document or give the same error. */
Test(front, a_single_create_stores_what_a_batched_one_does)
{
    static const char *docs[] = {
        "{\"room\":\"A\",\"duration_min\":50}",
        " {\n  \"room\" : \"B 1\" ,\t\"n\" : [ 1 , 2.5 , -0 , 1e3, 50.0 ] , \"o\" : { \"x\" : null } }\n",
        ("{\"notes\":\"caf\\u00e9 \\\"q\\\" \\\\ \\n \\ud83d\\ude00 \\/\",\"version\":7,"
         "\"updated_at\":\"x\",\"deleted\":false,\"room\":\"C\"}"),
        "{\"id\":\"ID\",\"room\":\"D\"}",
        "{\"room\":\"E\",\"id\" : \"ID\" }",
        "{\"\\u0069d\":\"ID\",\"room\":\"F\"}",
        "{\"a\":1,\"a\":2,\"b\":{\"c\":[[]],\"d\":{}}}",
        "{\"id\":\"ID\",\"room\":\"G\",\"id\":\"second\"}",
        "{\"big\":12345678901234567890,\"f\":0.30000000000000004,\"t\":true,\"z\":null}",
        "{\"id\":\"not valid!\"}",
        "{\"id\":17}",
        "{\"id\":\"\\u0041ID\"}",
        "{\"room\":01}",
        "{}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        char *got[2];
        for (int batch = 0; batch < 2; batch++) {
            char doc[512], request[1024];
            const char *id = strstr(docs[i], "ID\"");
            if (id) /* its own id each time, or the second would conflict */
                snprintf(doc, sizeof doc, "%.*sk%zu-%d%s", (int)(id - docs[i]), docs[i], i, batch,
                         id + 2);
            else
                snprintf(doc, sizeof doc, "%s", docs[i]);
            snprintf(request, sizeof request,
                     "%s{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":"
                     "{\"collection\":\"sessions\",\"doc\":%s}}%s",
                     batch ? "[" : "", doc, batch ? "]" : "");
            cJSON *one = only_answer(request, batch);
            got[batch] = created(one);
            cJSON_Delete(one);
        }
        cr_assert_str_eq(got[0], got[1], "doc %s", docs[i]);
        free(got[0]);
        free(got[1]);
    }
    assert_alive();
}

/* text with every from replaced by to (malloc'd). */
static char *replace_all(const char *text, const char *from, const char *to)
{
    ts_buf_t out = {0};
    for (const char *at; (at = strstr(text, from)); text = at + strlen(from)) {
        cr_assert_eq(ts_buf_append(&out, text, (size_t)(at - text)), 0);
        cr_assert_eq(ts_buf_puts(&out, to), 0);
    }
    cr_assert_eq(ts_buf_puts(&out, text), 0);
    return ts_buf_take(&out, NULL);
}

/* A reply as cJSON prints it, less what differs between two
 * runs of the same write: the document's id when the store made it, the
 * mutation's id and the pending count. */
static char *answer_of(cJSON *reply)
{
    cJSON *result = cJSON_GetObjectItem(reply, "result");
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(result, "doc"), "id");
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(result, "sync"), "mutation");
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(result, "sync"), "pending");
    return cJSON_PrintUnformatted(reply);
}

/* A single create or update written plainly is read the fast way (its
 * envelope without cJSON); the same inside a batch, and anything unusual,
 * the general way. Whatever the envelope, both answer the same: the same
 * result, or the same error with the same message. DOC stands for a fresh
 * document id, made before the request (for an update) or not (a create). */
Test(front, a_single_write_is_answered_as_a_batched_one)
{
    static const char *requests[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{\"a\":1}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":\"r 1\",\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{\"id\":\"DOC\"}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":-5,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":2.5,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":12345678901234567,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":-0,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":\"caf\\u00e9\",\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        " {\n \"params\" : { \"doc\" : { \"a\" : [ 1 ] } , \"collection\" : \"sessions\" } ,\t\"method\" : \"create\" , \"id\" : 7 , \"jsonrpc\" : \"2.0\" } ",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"nope\",\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"extra\":{\"x\":[]},\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"base_version\":3,\"id\":\"x\",\"patch\":{},\"doc\":{\"b\":2}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"nope\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sess\\u0069ons\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":7,\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":[]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sessions\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":[]}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\"}",
        "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"\\u006dethod\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{\"id\":\"DOC\",\"id\":\"other\"}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":{\"collection\":\"sessions\",\"doc\":{\"id\":\"bad id\"}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"patch\":{\"a\":2,\"version\":9}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"patch\":{\"a\":null,\"o\":{\"x\":1}},\"id\":\"DOC\",\"collection\":\"sessions\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"base_version\":0,\"patch\":{\"a\":3}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"base_version\":5,\"patch\":{\"a\":3}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"base_version\":0.0,\"patch\":{\"a\":3}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"base_version\":1.5,\"patch\":{\"a\":3}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"base_version\":\"0\",\"patch\":{\"a\":3}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"patch\":{\"id\":\"DOC\",\"a\":4}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"patch\":{\"id\":\"other\"}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"doc\":{\"a\":5}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"doc\":{},\"patch\":{\"a\":5}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"missing\",\"patch\":{\"a\":5}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"bad id\",\"patch\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"D\\u004fC\",\"patch\":{}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"patch\":{\"a\":5}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"patch\":[1]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"update\",\"params\":{\"collection\":\"sessions\",\"id\":\"DOC\",\"patch\":{\"a\":01}}}",
    };
    for (size_t i = 0; i < sizeof requests / sizeof *requests; i++) {
        char *got[2];
        bool update = strstr(requests[i], "\"update\"") != NULL;
        for (int batch = 0; batch < 2; batch++) {
            char doc_id[32], wrapped[1024];
            snprintf(doc_id, sizeof doc_id, "w%zu-%d", i, batch);
            if (update) {
                char params[128];
                snprintf(params, sizeof params,
                         "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"a\":1,\"o\":{\"y\":2}}}",
                         doc_id);
                cJSON *c = ts_rpc(&engine, "create", params);
                cr_assert_not_null(ts_rpc_result(c));
                cJSON_Delete(c);
            }
            snprintf(wrapped, sizeof wrapped, batch ? "[%s]" : "%s", requests[i]);
            char *request = replace_all(wrapped, "DOC", doc_id);
            cJSON *one = only_answer(request, batch);
            free(request);
            char *answer = answer_of(one);
            got[batch] = replace_all(answer, doc_id, "DOC"); /* where the answer echoes it */
            cJSON_free(answer);
            cJSON_Delete(one);
        }
        cr_assert_str_eq(got[0], got[1], "request %s", requests[i]);
        free(got[0]);
        free(got[1]);
    }
    assert_alive();
}

/* Template round % 3 with a byte or two changed, or (one in ten) cut
 * short, in request; returns its length. */
static int mutant(char *request, size_t size, const char *const templates[3], int round,
                  unsigned *seed)
{
    static const char bytes[] = "{}[]\",:\\ 0-e.a\t";
    int len = snprintf(request, size, templates[round % 3], round);
    if (rand_r(seed) % 10 == 0)
        return rand_r(seed) % len + 1;
    for (int k = 1 + (rand_r(seed) % 10 < 3); k > 0; k--)
        request[rand_r(seed) % len] = bytes[rand_r(seed) % (sizeof bytes - 1)];
    return len;
}

/* What cJSON reads in a mutant: its params.<member> (detached; less the
 * fields a client cannot set), and whether it is a notification (a valid
 * request without an id gets no answer; an invalid one is answered, with
 * id null). */
static cJSON *mutant_member(const char *request, int len, const char *member, bool *notification)
{
    cJSON *parsed = cJSON_ParseWithLength(request, (size_t)len);
    const char *version = ts_json_string(parsed, "jsonrpc");
    *notification = cJSON_IsObject(parsed) && !cJSON_GetObjectItemCaseSensitive(parsed, "id") &&
                    version && strcmp(version, "2.0") == 0 &&
                    cJSON_IsString(cJSON_GetObjectItemCaseSensitive(parsed, "method"));
    cJSON *value = cJSON_DetachItemFromObject(cJSON_GetObjectItem(parsed, "params"), member);
    cJSON_Delete(parsed);
    static const char *const server_only[] = {"id", "version", "updated_at", "deleted"};
    for (size_t i = 0; i < 4; i++)
        while (cJSON_GetObjectItemCaseSensitive(value, server_only[i]))
            cJSON_DeleteItemFromObjectCaseSensitive(value, server_only[i]);
    return value;
}

/* One mutant sent to the engine, and what is known of it. */
typedef struct {
    char text[512];
    int len;
    bool notification;
    cJSON *member; /* what cJSON reads in its params.<member> (mutant_member) */
    char *reply;   /* NULL when none came */
} sent_mutant_t;

/* Makes mutant round of templates, reads its member and sends it: a
 * notification must get no answer within 0.3 s, anything else one within
 * 5 s. */
static void send_mutant(sent_mutant_t *m, const char *const templates[3], int round,
                        unsigned *seed, const char *member)
{
    m->len = mutant(m->text, sizeof m->text, templates, round, seed);
    m->member = mutant_member(m->text, m->len, member, &m->notification);
    m->reply = ts_rpc_raw(engine.dealer, m->text, (size_t)m->len, m->notification ? 300 : 5000);
    if (m->notification)
        cr_assert_null(m->reply, "a notification was answered: %s", m->reply);
    else
        cr_assert_not_null(m->reply, "no answer to %.*s", m->len, m->text);
}

/* Creates with a byte or two changed, or cut short: every one that is not
 * a notification gets an answer, the daemon keeps serving, and a create
 * answered with a document stored what cJSON reads in the request's doc
 * (less id and server fields), and answered exactly that. Bounded: 1,500
 * requests, a few seconds. */
Test(front, mutated_creates_are_answered_and_stored_as_answered)
{
    static const char *requests[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\",\"params\":{\"collection\":"
        "\"sessions\",\"doc\":{\"room\":\"A 1\",\"n\":[1,2.5,{\"x\":null}],\"t\":true}}}",
        "{ \"jsonrpc\" : \"2.0\", \"id\" : %d, \"method\" : \"create\", \"params\" : "
        "{ \"collection\" : \"sessions\", \"doc\" : { \"notes\" : \"caf\\u00e9 \\\"q\\\"\", "
        "\"version\" : 3 } } }",
        "{\"params\":{\"doc\":{\"duration_min\":50,\"status\":\"scheduled\"},\"collection\":"
        "\"sessions\"},\"method\":\"create\",\"id\":%d,\"jsonrpc\":\"2.0\"}",
    };
    unsigned seed = 11;
    int answered = 0, stored = 0;
    for (int round = 0; round < 1500; round++) {
        sent_mutant_t m;
        send_mutant(&m, requests, round, &seed, "doc");
        if (m.notification) {
            cJSON_Delete(m.member);
            continue;
        }
        answered++;
        cJSON *r = cJSON_Parse(m.reply);
        cr_assert_not_null(r, "answer is not JSON: %s", m.reply);
        cJSON *doc = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "doc");
        if (cJSON_IsObject(doc)) {
            char get[160];
            snprintf(get, sizeof get, "{\"collection\":\"sessions\",\"id\":\"%s\"}",
                     cJSON_GetObjectItem(doc, "id")->valuestring);
            cJSON *g = ts_rpc(&engine, "get", get);
            cJSON *got = cJSON_GetObjectItem(ts_rpc_result(g), "doc");
            cr_assert(cJSON_Compare(doc, got, true), "stored is not what was answered for %.*s",
                      m.len, m.text);
            cJSON_DeleteItemFromObject(got, "id");
            cr_assert(cJSON_Compare(m.member, got, true), "stored is not the request's doc: %.*s",
                      m.len, m.text);
            cJSON_Delete(g);
            stored++;
        }
        cJSON_Delete(m.member);
        cJSON_Delete(r);
        free(m.reply);
    }
    cr_assert_gt(answered, 1000);
    cr_assert_gt(stored, 100, "some mutants are still creates (%d)", stored);
    assert_alive();
}

/* The stored document fz, less its id. */
static cJSON *stored_fz(void)
{
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"fz\"}");
    cJSON *doc = cJSON_DetachItemFromObject(ts_rpc_result(g), "doc");
    cJSON_Delete(g);
    cr_assert_not_null(doc, "fz is gone");
    cJSON_DeleteItemFromObject(doc, "id");
    return doc;
}

/* Updates with a byte or two changed, or cut short: every one that is not
 * a notification gets an answer, the daemon keeps serving, and the stored
 * document is always the one the answered updates make of it (RFC 7396
 * with what cJSON reads in each request's patch, less id and server
 * fields): a refused update changed nothing. Bounded: 1,500 requests. */
Test(front, mutated_updates_change_only_what_they_answer)
{
    static const char *requests[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"update\",\"params\":{\"collection\":"
        "\"sessions\",\"id\":\"fz\",\"patch\":{\"a\":12,\"s\":\"v w\",\"n\":null}}}",
        "{ \"jsonrpc\" : \"2.0\" , \"id\" : %d , \"method\" : \"update\" , \"params\" : { "
        "\"collection\" : \"sessions\" , \"id\" : \"fz\" , \"patch\" : { \"o\" : { \"q\" : 2 } , "
        "\"b\" : [ 1 , 20 ] , \"version\" : 3 } } }",
        "{\"params\":{\"patch\":{\"n\":10,\"a\":null},\"base_version\":0,\"id\":\"fz\","
        "\"collection\":\"sessions\"},\"method\":\"update\",\"id\":%d,\"jsonrpc\":\"2.0\"}",
    };
    cJSON_Delete(ts_rpc(&engine, "create",
                        "{\"collection\":\"sessions\",\"doc\":{\"id\":\"fz\",\"a\":1,\"o\":{\"p\":1}}}"));
    cJSON *model = stored_fz();
    unsigned seed = 12;
    int answered = 0, applied = 0;
    for (int round = 0; round < 1500; round++) {
        sent_mutant_t m;
        send_mutant(&m, requests, round, &seed, "patch");
        /* what the update makes of the model, if it is taken */
        cJSON *merged = cJSON_IsObject(m.member)
                            ? ts_json_merge_patch(cJSON_Duplicate(model, true), m.member)
                            : NULL;
        cJSON_Delete(m.member);
        cJSON *now = stored_fz();
        if (m.notification) {
            cr_assert(cJSON_Compare(now, model, true) || cJSON_Compare(now, merged, true),
                      "a notification made neither the old document nor its merge: %.*s", m.len,
                      m.text);
        } else {
            answered++;
            cJSON *r = cJSON_Parse(m.reply);
            cr_assert_not_null(r, "answer is not JSON: %s", m.reply);
            cJSON *doc = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "doc");
            const cJSON *id = cJSON_GetObjectItem(doc, "id");
            if (cJSON_IsString(id) && strcmp(id->valuestring, "fz") == 0) {
                cr_assert(cJSON_Compare(now, merged, true), "stored is not the merge: %.*s", m.len,
                          m.text);
                cJSON_DeleteItemFromObject(doc, "id");
                cr_assert(cJSON_Compare(doc, now, true), "answered is not stored: %.*s", m.len,
                          m.text);
                applied++;
            } else {
                cr_assert(cJSON_Compare(now, model, true), "changed without a result: %.*s", m.len,
                          m.text);
            }
            cJSON_Delete(r);
            free(m.reply);
        }
        cJSON_Delete(model);
        cJSON_Delete(merged);
        model = now;
    }
    cJSON_Delete(model);
    cr_assert_gt(answered, 1000);
    cr_assert_gt(applied, 100, "some mutants are still updates (%d)", applied);
    assert_alive();
}

/* A flat patch is merged on the stored text, one with a nested object on
 * the trees: both as RFC 7396 says, member order kept. */
Test(front, updates_merge_on_text_and_on_trees_alike)
{
    cJSON_Delete(ts_rpc(&engine, "create",
                        "{\"collection\":\"sessions\",\"doc\":{\"id\":\"m1\",\"a\":1,"
                        "\"o\":{\"x\":1,\"y\":2},\"s\":\"t\"}}"));
    static const struct {
        const char *patch, *want;
    } steps[] = {
        {"{\"o\":{\"y\":null,\"z\":3},\"a\":2}", "{\"id\":\"m1\",\"a\":2,\"o\":{\"x\":1,\"z\":3},\"s\":\"t\"}"},
        {"{\"b\":[1,{\"c\":2}],\"a\":null,\"s\":\"u\"}", "{\"id\":\"m1\",\"o\":{\"x\":1,\"z\":3},\"s\":\"u\",\"b\":[1,{\"c\":2}]}"},
        {"{\"o\":7,\"zz\":null}", "{\"id\":\"m1\",\"o\":7,\"s\":\"u\",\"b\":[1,{\"c\":2}]}"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        char params[256];
        snprintf(params, sizeof params, "{\"collection\":\"sessions\",\"id\":\"m1\",\"patch\":%s}",
                 steps[i].patch);
        cJSON_Delete(ts_rpc(&engine, "update", params));
        cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"m1\"}");
        char *doc = cJSON_PrintUnformatted(cJSON_GetObjectItem(ts_rpc_result(g), "doc"));
        cr_assert_str_eq(doc, steps[i].want, "after %s", steps[i].patch);
        cJSON_free(doc);
        cJSON_Delete(g);
    }
}

Test(front, stale_base_version_is_a_conflict)
{
    cJSON_Delete(ts_rpc(&engine, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"b1\"}}"));
    assert_error(ts_rpc(&engine, "update",
                        "{\"collection\":\"sessions\",\"id\":\"b1\",\"patch\":{\"a\":1},"
                        "\"base_version\":7}"),
                 -32003, "conflict");
    cJSON *ok = ts_rpc(&engine, "update",
                       "{\"collection\":\"sessions\",\"id\":\"b1\",\"patch\":{\"a\":1},"
                       "\"base_version\":0}");
    cr_assert_not_null(ts_rpc_result(ok), "base_version 0 matches a never-synced document");
    cJSON_Delete(ok);
}

Test(front, invalid_json)
{
    assert_error(raw_text("{\"jsonrpc\":"), -32700, NULL);
    assert_alive();
}

Test(front, not_an_object)
{
    assert_error(raw_text("42"), -32600, NULL);
    assert_error(raw_text("\"ping\""), -32600, NULL);
    assert_alive();
}

Test(front, wrong_types)
{
    assert_error(ts_rpc(&engine, "create", "{\"collection\":5,\"doc\":{}}"), -32602, NULL);
    assert_error(ts_rpc(&engine, "create", "{\"collection\":\"sessions\",\"doc\":[1]}"), -32602,
                 NULL);
    assert_error(ts_rpc(&engine, "create", "[\"sessions\",{}]"), -32602, NULL);
    assert_error(ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"a/b\"}"), -32602,
                 NULL);
    assert_error(ts_rpc(&engine, "update",
                        "{\"collection\":\"sessions\",\"id\":\"x\",\"patch\":{},"
                        "\"base_version\":\"1\"}"),
                 -32602, NULL);
    assert_error(ts_rpc(&engine, "create",
                        "{\"collection\":\"sessions\",\"doc\":{\"id\":\"" 
                        "0123456789012345678901234567890123456789012345678901234567890123456789\"}}"),
                 -32602, NULL);
    assert_error(raw_text("{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}"), -32600, NULL);
    assert_error(raw_text("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}"), -32600, NULL);
    assert_alive();
}

Test(front, missing_and_unknown_method)
{
    assert_error(raw_text("{\"jsonrpc\":\"2.0\",\"id\":1}"), -32600, NULL);
    assert_error(ts_rpc(&engine, "no.such.method", NULL), -32601, NULL);
    assert_alive();
}

Test(front, unknown_collection)
{
    assert_error(ts_rpc(&engine, "get", "{\"collection\":\"patients\",\"id\":\"x\"}"), -32008,
                 "unknown_collection");
}

Test(front, empty_frame)
{
    assert_error(raw_text(""), -32700, NULL);
    assert_alive();
}

Test(front, oversized_frame)
{
    size_t n = 2u << 20;
    char *big = malloc(n);
    memset(big, ' ', n);
    memcpy(big, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"", 44);
    big[n - 2] = '"';
    big[n - 1] = '}';
    assert_error(raw(big, n), -32007, "too_large");
    free(big);
    assert_alive();
}

Test(front, extra_frames)
{
    const char *p = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
    zmq_send(engine.dealer, p, strlen(p), ZMQ_SNDMORE);
    char *reply = ts_rpc_raw(engine.dealer, "junk", 4, 10000);
    cr_assert_not_null(reply);
    cJSON *r = cJSON_Parse(reply);
    free(reply);
    assert_error(r, -32600, NULL);
    assert_alive();
}

Test(front, delimiter_envelope_is_kept)
{
    const char *p = "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}";
    zmq_send(engine.dealer, "", 0, ZMQ_SNDMORE);
    zmq_send(engine.dealer, p, strlen(p), 0);
    zmq_pollitem_t item = {.socket = engine.dealer, .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&item, 1, 10000), 1);
    char buf[256];
    int n = zmq_recv(engine.dealer, buf, sizeof buf, 0);
    cr_assert_eq(n, 0, "the empty delimiter comes back first");
    int more = 0;
    size_t len = sizeof more;
    zmq_getsockopt(engine.dealer, ZMQ_RCVMORE, &more, &len);
    cr_assert(more);
    n = zmq_recv(engine.dealer, buf, sizeof buf - 1, 0);
    buf[n] = '\0';
    cr_assert(strstr(buf, "\"pong\"") != NULL, "reply: %s", buf);
}

Test(front, invalid_utf8)
{
    const char p[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\xc3\x28\"}";
    assert_error(raw(p, sizeof p - 1), -32700, NULL);
    const char surrogate[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\xed\xa0\x80\"}";
    assert_error(raw(surrogate, sizeof surrogate - 1), -32700, NULL);
    assert_alive();
}

Test(front, deeply_nested_json)
{
    size_t depth = 100000;
    char *p = malloc(2 * depth);
    memset(p, '[', depth);
    memset(p + depth, ']', depth);
    assert_error(raw(p, 2 * depth), -32700, NULL);
    free(p);
    assert_alive();
}

Test(front, batch_of_10000)
{
    size_t n = 10000;
    char *p = malloc(n * 128);
    size_t off = 0;
    p[off++] = '[';
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(p + off, 128,
                                "%s{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"create\",\"params\":"
                                "{\"collection\":\"sessions\",\"doc\":{\"n\":%zu}}}",
                                i ? "," : "", i, i);
    p[off++] = ']';
    char *reply = ts_rpc_raw(engine.dealer, p, off, 30000);
    free(p);
    cr_assert_not_null(reply);
    cJSON *r = cJSON_Parse(reply);
    free(reply);
    cr_assert(cJSON_IsArray(r));
    cr_assert_eq(cJSON_GetArraySize(r), (int)n);
    int i = 0;
    for (cJSON *x = r->child; x; x = x->next, i++) {
        cr_assert_eq(cJSON_GetObjectItem(x, "id")->valueint, i, "answers keep the batch order");
        cr_assert_not_null(ts_rpc_result(x));
    }
    cJSON_Delete(r);
    cJSON *s = ts_rpc(&engine, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(s), "collections"),
                                     "sessions")->valueint, (int)n);
    cJSON_Delete(s);
}

/* Writes pile up on one document while nothing syncs them (no API here):
 * past 10,000 waiting the engine answers busy, keeps what it has, and
 * other documents still take writes. */
Test(front, pending_writes_per_document_are_bounded, .timeout = 120)
{
    cJSON *c = ts_rpc(&engine, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"hot\"}}");
    cr_assert_not_null(ts_rpc_result(c));
    cJSON_Delete(c);
    size_t per_batch = 1000, off;
    char *p = malloc(per_batch * 160);
    int n = 1; /* the create is pending too */
    for (int b = 0; b < 10; b++) {
        off = 0;
        p[off++] = '[';
        for (size_t i = 0; i < per_batch; i++)
            off += (size_t)snprintf(p + off, 160,
                                    "%s{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"update\","
                                    "\"params\":{\"collection\":\"sessions\",\"id\":\"hot\","
                                    "\"patch\":{\"n\":%d}}}",
                                    i ? "," : "", i, n + (int)i);
        p[off++] = ']';
        char *reply = ts_rpc_raw(engine.dealer, p, off, 60000);
        cr_assert_not_null(reply);
        cJSON *r = cJSON_Parse(reply);
        free(reply);
        cr_assert_eq(cJSON_GetArraySize(r), (int)per_batch);
        for (cJSON *x = r->child; x; x = x->next, n++) {
            if (n < 10000)
                cr_assert_not_null(ts_rpc_result(x), "write %d refused", n);
            else
                cr_assert_eq(ts_rpc_error_code(x), -32005, "write %d not busy", n);
        }
        cJSON_Delete(r);
    }
    free(p);
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"hot\"}");
    const cJSON *res = ts_rpc_result(g);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "doc"), "n")->valueint, 9999,
                 "the last accepted write is what readers see");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "sync"), "pending")->valueint, 10000);
    cJSON_Delete(g);
    cJSON *o = ts_rpc(&engine, "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"cold\"}}");
    cr_assert_not_null(ts_rpc_result(o), "other documents still take writes");
    cJSON_Delete(o);
}

Test(front, batch_edge_cases)
{
    assert_error(raw_text("[]"), -32600, NULL);
    const char *mixed = "[{\"jsonrpc\":\"2.0\",\"method\":\"ping\"},1,"
                        "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"ping\"}]";
    cJSON *r = raw(mixed, strlen(mixed));
    cr_assert(cJSON_IsArray(r));
    cr_assert_eq(cJSON_GetArraySize(r), 2, "the notification gets no answer");
    cr_assert_eq(ts_rpc_error_code(cJSON_GetArrayItem(r, 0)), -32600);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(r, 1), "id")->valuestring, "a");
    cJSON_Delete(r);
}

Test(front, notifications_get_no_answer)
{
    const char *n = "{\"jsonrpc\":\"2.0\",\"method\":\"create\",\"params\":{\"collection\":"
                    "\"sessions\",\"doc\":{\"id\":\"note1\"}}}";
    zmq_send(engine.dealer, n, strlen(n), 0);
    cJSON *r = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"note1\"}");
    cr_assert_not_null(ts_rpc_result(r), "the first answer is the get's, and the write happened");
    cJSON_Delete(r);
}

Test(front, answers_keep_request_order)
{
    /* Pipelined writes, reads and failing reads on one connection come back
     * in order, although reads and errors overtake the durable writes inside
     * the engine (the front door holds them until their turn). */
    enum { N = 900 };
    char p[256];
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0)
            snprintf(p, sizeof p, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\",\"params\":"
                                  "{\"collection\":\"sessions\",\"doc\":{\"id\":\"o%d\"}}}", i, i);
        else
            snprintf(p, sizeof p, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"get\",\"params\":"
                                  "{\"collection\":\"sessions\",\"id\":\"o%d\"}}", i,
                     i % 3 == 1 ? i - 1 : -i);
        zmq_send(engine.dealer, p, strlen(p), 0);
    }
    zmq_pollitem_t item = {.socket = engine.dealer, .events = ZMQ_POLLIN};
    for (int i = 0; i < N; i++) {
        cr_assert_eq(zmq_poll(&item, 1, 10000), 1);
        char buf[1024];
        int n = zmq_recv(engine.dealer, buf, sizeof buf - 1, 0);
        buf[n] = '\0';
        cJSON *r = cJSON_Parse(buf);
        cr_assert_eq(cJSON_GetObjectItem(r, "id")->valueint, i);
        if (i % 3 == 2)
            cr_assert_null(ts_rpc_result(r), "reply %d is an error: %s", i, buf);
        else
            cr_assert_not_null(ts_rpc_result(r), "reply %d: %s", i, buf);
        cJSON_Delete(r);
    }
}

Test(front, client_that_sends_and_disconnects)
{
    for (int k = 0; k < 5; k++) {
        void *c = ts_engine_client(&engine);
        for (int i = 0; i < 100; i++) {
            char p[200];
            snprintf(p, sizeof p, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\",\"params\":"
                                  "{\"collection\":\"sessions\",\"doc\":{}}}", i);
            zmq_send(c, p, strlen(p), 0);
        }
        zmq_close(c);
    }
    assert_alive();
}

Test(front, metrics_report_latency)
{
    assert_alive();
    cJSON *m = ts_rpc(&engine, "metrics", NULL);
    cJSON *res = ts_rpc_result(m);
    cr_assert_not_null(cJSON_GetObjectItem(res, "store"));
    cr_assert_not_null(cJSON_GetObjectItem(res, "persist"));
    cJSON *lat = cJSON_GetObjectItem(cJSON_GetObjectItem(res, "front"), "latency_us");
    cr_assert(cJSON_GetObjectItem(cJSON_GetObjectItem(lat, "ping"), "count")->valueint >= 1);
    cJSON_Delete(m);
}
