/* End-to-end tests of clinic-api: a real server process on a free loopback
 * port with its own temporary database, driven over HTTP with libcurl.
 * Each test starts its own server (fixture), so tests are independent. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../support/http.h"
#include "../support/proc.h"
#include "therasync/sha256.h"
#include "therasync/util.h"

static struct {
    ts_proc_t proc;
    char *dir;
    int port;
    char base[64];
    char auth[128]; /* "Authorization: Bearer ..." */
    char refresh[80];
} S;

/* ---- server and client helpers ------------------------------------------ */

/* Starts clinic-api on S.dir/api.db (a free port, heartbeat 300 ms). */
static void spawn_server(const char *const extra[])
{
    char db[4200];
    snprintf(db, sizeof db, "%s/api.db", S.dir);
    const char *args[32] = {"--listen", "127.0.0.1:0", "--db", db, "--heartbeat-ms", "300"};
    size_t n = 6;
    for (size_t i = 0; extra && extra[i] && n < 31; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    cr_assert_eq(ts_proc_spawn(&S.proc, S.dir, "clinic-api", args), 0, "spawn clinic-api");
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&S.proc, "listening on 127.0.0.1:", 10000, line, sizeof line), 0,
                 "clinic-api did not report listening (log %s)", S.proc.log_path);
    const char *p = strstr(line, "listening on 127.0.0.1:") + strlen("listening on 127.0.0.1:");
    S.port = (int)strtol(p, NULL, 10);
    cr_assert_gt(S.port, 0);
    snprintf(S.base, sizeof S.base, "http://127.0.0.1:%d", S.port);
}

static void start_server(const char *const extra[])
{
    memset(&S, 0, sizeof S);
    S.dir = ts_tmpdir("clinic-api-test");
    cr_assert_not_null(S.dir);
    spawn_server(extra);
}

static void stop_server(void)
{
    if (S.proc.pid) {
        int rc = ts_proc_stop(&S.proc, 5000);
        cr_expect_eq(rc, 0, "clinic-api exit status on SIGTERM: %d", rc);
    }
    if (S.dir) {
        ts_rmtree(S.dir);
        free(S.dir);
        S.dir = NULL;
    }
}

static void start_default(void)
{
    start_server(NULL);
}

static void url_of(char *out, size_t len, const char *path)
{
    snprintf(out, len, "%s%s", S.base, path);
}

static cJSON *json_of(const ts_http_resp_t *r)
{
    cJSON *j = cJSON_Parse(r->body);
    cr_assert_not_null(j, "not JSON (status %ld): %s", r->status, r->body);
    return j;
}

/* POST /oauth/token with a form body and optional Basic credentials. */
static long token_request(const char *form, const char *basic, ts_http_resp_t *r)
{
    char url[128], hdr[256];
    url_of(url, sizeof url, "/oauth/token");
    const char *h[3] = {"Content-Type: application/x-www-form-urlencoded", NULL, NULL};
    if (basic) {
        snprintf(hdr, sizeof hdr, "Authorization: Basic %s", basic);
        h[1] = hdr;
    }
    cr_assert_eq(ts_http("POST", url, h, form, 5000, r), 0, "token request transport");
    return r->status;
}

/* Gets a token with the default credentials into S.auth. */
static void login(void)
{
    ts_http_resp_t r;
    cr_assert_eq(token_request("grant_type=client_credentials&client_id=therasync&"
                               "client_secret=dev-secret",
                               NULL, &r),
                 200, "%s", r.body);
    cJSON *j = json_of(&r);
    const cJSON *t = cJSON_GetObjectItem(j, "access_token");
    cr_assert(cJSON_IsString(t));
    snprintf(S.auth, sizeof S.auth, "Authorization: Bearer %s", t->valuestring);
    snprintf(S.refresh, sizeof S.refresh, "%s",
             cJSON_GetObjectItem(j, "refresh_token")->valuestring);
    cJSON_Delete(j);
    ts_http_free(&r);
}

static void start_logged_in(void)
{
    start_server(NULL);
    login();
}

/* An authorized request with up to two extra headers; returns the status. */
static long call(const char *method, const char *path, const char *body, const char *h1,
                 const char *h2, ts_http_resp_t *r)
{
    char url[512];
    url_of(url, sizeof url, path);
    const char *h[4] = {S.auth, h1, h2, NULL};
    if (!h1)
        h[1] = h2, h[2] = NULL;
    int rc = ts_http(method, url, h, body, 10000, r);
    cr_assert_eq(rc, 0, "%s %s: transport error %d", method, path, r->curl_code);
    return r->status;
}

/* call() and parse; asserts the status. The caller frees the JSON. */
static cJSON *call_json(const char *method, const char *path, const char *body, const char *h1,
                        const char *h2, long want)
{
    ts_http_resp_t r;
    long st = call(method, path, body, h1, h2, &r);
    cr_assert_eq(st, want, "%s %s: status %ld, want %ld: %s", method, path, st, want, r.body);
    cJSON *j = json_of(&r);
    ts_http_free(&r);
    return j;
}

static int64_t num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(j, key);
    cr_assert(cJSON_IsNumber(v), "no number %s", key);
    return (int64_t)v->valuedouble;
}

static const char *str(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(j, key);
    cr_assert(cJSON_IsString(v), "no string %s", key);
    return v->valuestring;
}

static int64_t stat_of(const char *name)
{
    cJSON *j = call_json("GET", "/_control/stats", NULL, NULL, NULL, 200);
    int64_t v = num(j, name);
    cJSON_Delete(j);
    return v;
}

static void set_faults(const char *json)
{
    cJSON *j = call_json("POST", "/_control/faults", json, NULL, NULL, 200);
    cJSON_Delete(j);
}

static int64_t head_cursor(void)
{
    /* The long poll with timeout 0 answers at once with the latest cursor. */
    int64_t since = 0, last = 0;
    for (int i = 0; i < 1000; i++) {
        char path[96];
        snprintf(path, sizeof path, "/v1/changes?since=%lld&timeout=0&limit=1000",
                 (long long)since);
        cJSON *j = call_json("GET", path, NULL, NULL, NULL, 200);
        int64_t cur = strtoll(str(j, "cursor"), NULL, 10);
        bool more = cJSON_IsTrue(cJSON_GetObjectItem(j, "has_more"));
        cJSON_Delete(j);
        last = cur;
        if (!more)
            break;
        since = cur;
    }
    return last;
}

static double now_s(void)
{
    return (double)ts_mono_us() / 1e6;
}

/* ---- auth ----------------------------------------------------------------- */

TestSuite(auth, .init = start_default, .fini = stop_server, .timeout = 30);

Test(auth, token_issue_refresh_and_invalid_client)
{
    ts_http_resp_t r;
    cr_assert_eq(token_request("grant_type=client_credentials&client_id=therasync&"
                               "client_secret=dev-secret",
                               NULL, &r),
                 200, "%s", r.body);
    cJSON *j = json_of(&r);
    cr_assert_str_eq(str(j, "token_type"), "Bearer");
    cr_assert_eq(num(j, "expires_in"), 3600);
    cr_assert_eq(strlen(str(j, "access_token")), 64);
    char refresh[128], form[256];
    snprintf(refresh, sizeof refresh, "%s", str(j, "refresh_token"));
    cJSON_Delete(j);
    ts_http_free(&r);

    /* HTTP Basic: base64("therasync:dev-secret") */
    cr_assert_eq(token_request("grant_type=client_credentials", "dGhlcmFzeW5jOmRldi1zZWNyZXQ=", &r),
                 200, "%s", r.body);
    ts_http_free(&r);

    /* Refresh grant gives a working access token. */
    snprintf(
        form, sizeof form,
        "grant_type=refresh_token&refresh_token=%s&client_id=therasync&client_secret=dev-secret",
        refresh);
    cr_assert_eq(token_request(form, NULL, &r), 200, "%s", r.body);
    j = json_of(&r);
    snprintf(S.auth, sizeof S.auth, "Authorization: Bearer %s", str(j, "access_token"));
    cJSON_Delete(j);
    ts_http_free(&r);
    cJSON_Delete(call_json("GET", "/v1/sessions", NULL, NULL, NULL, 200));

    /* A made-up refresh token is refused. */
    cr_assert_eq(token_request("grant_type=refresh_token&refresh_token=abc&client_id=therasync&"
                               "client_secret=dev-secret",
                               NULL, &r),
                 400);
    ts_http_free(&r);

    /* Wrong credentials: 401 invalid_client, in the body and as Basic. */
    cr_assert_eq(token_request("grant_type=client_credentials&client_id=therasync&"
                               "client_secret=wrong",
                               NULL, &r),
                 401);
    j = json_of(&r);
    cr_assert_str_eq(str(j, "error"), "invalid_client");
    cJSON_Delete(j);
    ts_http_free(&r);
    cr_assert_eq(token_request("grant_type=client_credentials", "dGhlcmFzeW5jOndyb25n", &r), 401);
    ts_http_free(&r);
    cr_assert_eq(token_request("client_id=therasync&client_secret=dev-secret", NULL, &r), 400);
    ts_http_free(&r);
}

Test(auth, v1_refuses_missing_or_wrong_token)
{
    char url[128];
    ts_http_resp_t r;
    const char *paths[] = {"/v1/sessions", "/v1/sessions/x", "/v1/changes?timeout=0",
                           "/v1/sessions/digest", "/v1/changes/stream"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        url_of(url, sizeof url, paths[i]);
        cr_assert_eq(ts_http("GET", url, NULL, NULL, 5000, &r), 0);
        cr_expect_eq(r.status, 401, "%s without token: %ld", paths[i], r.status);
        ts_http_free(&r);
        const char *h[] = {"Authorization: Bearer 0000000000000000000000000000000000000000000000"
                           "000000000000000000",
                           NULL};
        cr_assert_eq(ts_http("GET", url, h, NULL, 5000, &r), 0);
        cr_expect_eq(r.status, 401, "%s with a wrong token: %ld", paths[i], r.status);
        ts_http_free(&r);
    }
    url_of(url, sizeof url, "/v1/sessions");
    cr_assert_eq(ts_http("POST", url, NULL, "{}", 5000, &r), 0);
    cr_expect_eq(r.status, 401);
    char *www = ts_http_header(&r, "WWW-Authenticate");
    cr_expect_not_null(www);
    free(www);
    ts_http_free(&r);
}

static void start_short_ttl(void)
{
    const char *extra[] = {"--token-ttl", "1", NULL};
    start_server(extra);
}

Test(auth_ttl, expired_token_is_refused, .init = start_short_ttl, .fini = stop_server,
     .timeout = 30)
{
    login();
    cJSON_Delete(call_json("GET", "/v1/sessions", NULL, NULL, NULL, 200));
    usleep(1300 * 1000);
    ts_http_resp_t r;
    cr_assert_eq(call("GET", "/v1/sessions", NULL, NULL, NULL, &r), 401, "%s", r.body);
    ts_http_free(&r);
    /* The refresh token still works after the access token expired. */
    char form[256];
    snprintf(
        form, sizeof form,
        "grant_type=refresh_token&refresh_token=%s&client_id=therasync&client_secret=dev-secret",
        S.refresh);
    cr_assert_eq(token_request(form, NULL, &r), 200);
    cJSON *j = json_of(&r);
    cr_assert_eq(num(j, "expires_in"), 1);
    snprintf(S.auth, sizeof S.auth, "Authorization: Bearer %s", str(j, "access_token"));
    cJSON_Delete(j);
    ts_http_free(&r);
    cJSON_Delete(call_json("GET", "/v1/sessions", NULL, NULL, NULL, 200));
}

/* ---- documents ------------------------------------------------------------ */

TestSuite(docs, .init = start_logged_in, .fini = stop_server, .timeout = 30);

Test(docs, create_get_patch_delete_round_trip)
{
    cJSON *d = call_json("POST", "/v1/sessions",
                         "{\"patient_id\":\"p1\",\"duration_min\":50,\"room\":{\"name\":\"A\","
                         "\"floor\":1},\"notes\":\"first\"}",
                         "Idempotency-Key: m-1", NULL, 201);
    char id[80], path[160];
    snprintf(id, sizeof id, "%s", str(d, "id"));
    cr_assert_eq(strlen(id), 36, "generated UUIDv7 id: %s", id);
    cr_assert_eq(id[14], '7', "UUID version 7: %s", id);
    cr_assert_eq(num(d, "version"), 1);
    int64_t ms;
    cr_assert_eq(ts_parse_rfc3339(str(d, "updated_at"), &ms), 0);
    cr_assert_str_eq(str(d, "patient_id"), "p1");
    cJSON_Delete(d);

    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    d = call_json("GET", path, NULL, NULL, NULL, 200);
    cr_assert_eq(num(d, "version"), 1);
    cr_assert_str_eq(str(d, "notes"), "first");
    cJSON_Delete(d);

    /* RFC 7396: null removes, objects merge, other values replace. */
    d = call_json("PATCH", path, "{\"notes\":null,\"room\":{\"floor\":2},\"status\":\"completed\"}",
                  "If-Match: \"1\"", "Idempotency-Key: m-2", 200);
    cr_assert_eq(num(d, "version"), 2);
    cr_assert_null(cJSON_GetObjectItem(d, "notes"));
    cr_assert_str_eq(str(d, "status"), "completed");
    cJSON *room = cJSON_GetObjectItem(d, "room");
    cr_assert_str_eq(str(room, "name"), "A");
    cr_assert_eq(num(room, "floor"), 2);
    cr_assert_eq(num(d, "duration_min"), 50);
    cJSON_Delete(d);

    d = call_json("GET", path, NULL, NULL, NULL, 200);
    cr_assert_eq(num(d, "version"), 2);
    cJSON_Delete(d);

    ts_http_resp_t r;
    cr_assert_eq(call("DELETE", path, NULL, "If-Match: \"2\"", "Idempotency-Key: m-3", &r), 204);
    cr_assert_eq(r.len, 0);
    ts_http_free(&r);
    cr_assert_eq(call("GET", path, NULL, NULL, NULL, &r), 404);
    ts_http_free(&r);
    cr_assert_eq(call("PATCH", path, "{\"a\":1}", "If-Match: \"3\"", NULL, &r), 404);
    ts_http_free(&r);
    cr_assert_eq(call("DELETE", path, NULL, "If-Match: \"3\"", NULL, &r), 404);
    ts_http_free(&r);
    cr_assert_eq(call("GET", "/v1/sessions/never-was", NULL, NULL, NULL, &r), 404);
    ts_http_free(&r);

    /* Re-creating a deleted id continues its version line. */
    d = call_json("POST", "/v1/consultations", "{\"id\":\"c-1\",\"summary\":{\"plan\":\"x\"}}",
                  NULL, NULL, 201);
    cr_assert_str_eq(str(d, "id"), "c-1");
    cJSON_Delete(d);
    cr_assert_eq(call("DELETE", "/v1/consultations/c-1", NULL, NULL, NULL, &r), 204);
    ts_http_free(&r);
    d = call_json("POST", "/v1/consultations", "{\"id\":\"c-1\"}", NULL, NULL, 201);
    cr_assert_eq(num(d, "version"), 3);
    cJSON_Delete(d);
}

Test(docs, if_match_conflict_returns_current)
{
    cJSON_Delete(
        call_json("POST", "/v1/sessions", "{\"id\":\"s-1\",\"room\":\"a\"}", NULL, NULL, 201));
    cJSON_Delete(
        call_json("PATCH", "/v1/sessions/s-1", "{\"room\":\"b\"}", "If-Match: \"1\"", NULL, 200));
    cJSON *j =
        call_json("PATCH", "/v1/sessions/s-1", "{\"room\":\"c\"}", "If-Match: \"1\"", NULL, 409);
    cJSON *cur = cJSON_GetObjectItem(j, "current");
    cr_assert_eq(num(cur, "version"), 2);
    cr_assert_str_eq(str(cur, "room"), "b");
    cJSON_Delete(j);
    j = call_json("DELETE", "/v1/sessions/s-1", NULL, "If-Match: \"7\"", NULL, 409);
    cr_assert_eq(num(cJSON_GetObjectItem(j, "current"), "version"), 2);
    cJSON_Delete(j);
    /* Creating an id that exists is a conflict too. */
    j = call_json("POST", "/v1/sessions", "{\"id\":\"s-1\"}", NULL, NULL, 409);
    cr_assert_str_eq(str(cJSON_GetObjectItem(j, "current"), "id"), "s-1");
    cJSON_Delete(j);
    /* If-Match: * matches any version; W/"2" is accepted as 2. */
    cJSON_Delete(
        call_json("PATCH", "/v1/sessions/s-1", "{\"room\":\"d\"}", "If-Match: W/\"2\"", NULL, 200));
    cJSON_Delete(
        call_json("PATCH", "/v1/sessions/s-1", "{\"room\":\"e\"}", "If-Match: *", NULL, 200));
    ts_http_resp_t r;
    cr_assert_eq(call("PATCH", "/v1/sessions/s-1", "{}", "If-Match: \"x\"", NULL, &r), 400);
    ts_http_free(&r);
}

Test(docs, idempotent_replay_applies_once)
{
    int64_t applied0 = stat_of("applied_writes");
    const char *body = "{\"id\":\"s-9\",\"notes\":\"n\"}";
    ts_http_resp_t a, b;
    cr_assert_eq(call("POST", "/v1/sessions", body, "Idempotency-Key: key-1", NULL, &a), 201);
    cr_assert_eq(call("POST", "/v1/sessions", body, "Idempotency-Key: key-1", NULL, &b), 201);
    cr_assert_str_eq(a.body, b.body, "a replay answers exactly the first answer");
    ts_http_free(&a);
    ts_http_free(&b);

    /* A PATCH repeated with its key bumps the version once. */
    cr_assert_eq(call("PATCH", "/v1/sessions/s-9", "{\"room\":\"x\"}", "If-Match: \"1\"",
                      "Idempotency-Key: key-2", &a),
                 200);
    cr_assert_eq(call("PATCH", "/v1/sessions/s-9", "{\"room\":\"x\"}", "If-Match: \"1\"",
                      "Idempotency-Key: key-2", &b),
                 200, "%s", b.body);
    cr_assert_str_eq(a.body, b.body);
    ts_http_free(&a);
    ts_http_free(&b);
    cJSON *d = call_json("GET", "/v1/sessions/s-9", NULL, NULL, NULL, 200);
    cr_assert_eq(num(d, "version"), 2);
    cJSON_Delete(d);

    /* Even a 409 answer is remembered with its key. */
    cr_assert_eq(
        call("DELETE", "/v1/sessions/s-9", NULL, "If-Match: \"1\"", "Idempotency-Key: key-3", &a),
        409);
    cr_assert_eq(
        call("DELETE", "/v1/sessions/s-9", NULL, "If-Match: \"1\"", "Idempotency-Key: key-3", &b),
        409);
    cr_assert_str_eq(a.body, b.body);
    ts_http_free(&a);
    ts_http_free(&b);

    cr_assert_eq(
        call("DELETE", "/v1/sessions/s-9", NULL, "If-Match: \"2\"", "Idempotency-Key: key-4", &a),
        204);
    cr_assert_eq(
        call("DELETE", "/v1/sessions/s-9", NULL, "If-Match: \"2\"", "Idempotency-Key: key-4", &b),
        204, "a replayed delete answers 204 again, not 404");
    ts_http_free(&a);
    ts_http_free(&b);

    /* The same key with a different request: 422. */
    cr_assert_eq(
        call("POST", "/v1/sessions", "{\"id\":\"other\"}", "Idempotency-Key: key-1", NULL, &a),
        422);
    cr_assert(strstr(a.body, "Idempotency-Key"));
    ts_http_free(&a);

    cr_assert_eq(stat_of("applied_writes") - applied0, 3, "create + patch + delete, once each");
    cr_assert_geq(stat_of("idempotent_replays"), 4);
}

Test(docs, invalid_documents_get_422)
{
    struct {
        const char *body;
        const char *field;
    } cases[] = {
        {"[1,2]", ""},
        {"\"text\"", ""},
        {"{\"id\":\"bad id!\"}", "id"},
        {"{\"id\":\"\"}", "id"},
        {"{\"id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", "id"},
        {"{\"id\":42}", "id"},
        {"{\"version\":\"3\"}", "version"},
        {"{\"version\":1.5}", "version"},
        {"{\"updated_at\":12}", "updated_at"},
        {"{\"deleted\":\"yes\"}", "deleted"},
        {"{\"deleted\":true}", "deleted"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = call_json("POST", "/v1/sessions", cases[i].body, NULL, NULL, 422);
        cJSON *errs = cJSON_GetObjectItem(j, "errors");
        cr_assert(cJSON_IsArray(errs) && cJSON_GetArraySize(errs) >= 1, "%s", cases[i].body);
        cJSON *e = cJSON_GetArrayItem(errs, 0);
        cr_expect_str_eq(str(e, "field"), cases[i].field, "%s", cases[i].body);
        cr_expect(strlen(str(e, "message")) > 0);
        cJSON_Delete(j);
    }
    ts_http_resp_t r;
    cr_assert_eq(call("POST", "/v1/sessions", "{not json", NULL, NULL, &r), 400);
    ts_http_free(&r);
    cJSON_Delete(call_json("POST", "/v1/sessions", "{\"id\":\"ok-1\"}", NULL, NULL, 201));
    cJSON_Delete(call_json("PATCH", "/v1/sessions/ok-1", "{\"id\":\"other\"}", NULL, NULL, 422));
    cJSON_Delete(call_json("PATCH", "/v1/sessions/ok-1", "[1]", NULL, NULL, 422));
    cJSON_Delete(call_json("PATCH", "/v1/sessions/ok-1", "{\"deleted\":true}", NULL, NULL, 422));
    cJSON *d = call_json("GET", "/v1/sessions/ok-1", NULL, NULL, NULL, 200);
    cr_assert_eq(num(d, "version"), 1, "refused patches change nothing");
    cJSON_Delete(d);
    cr_assert_eq(call("GET", "/v1/nosuch", NULL, NULL, NULL, &r), 404);
    cr_assert(strstr(r.body, "unknown_collection"));
    ts_http_free(&r);
}

/* ---- change feed ------------------------------------------------------------ */

TestSuite(feed, .init = start_logged_in, .fini = stop_server, .timeout = 30);

Test(feed, paging_with_cursors_and_tombstones)
{
    char body[96], path[160];
    for (int i = 0; i < 25; i++) {
        snprintf(body, sizeof body, "{\"id\":\"d%02d\",\"n\":%d}", i, i);
        cJSON_Delete(call_json("POST", "/v1/sessions", body, NULL, NULL, 201));
    }
    cJSON_Delete(call_json("POST", "/v1/consultations", "{\"id\":\"other\"}", NULL, NULL, 201));
    int seen[25] = {0}, pages = 0, total = 0;
    int64_t since = 0, prev = 0;
    bool more = true;
    for (int guard = 0; more && guard < 10; guard++) {
        snprintf(path, sizeof path, "/v1/sessions?since=%lld&limit=10", (long long)since);
        cJSON *j = call_json("GET", path, NULL, NULL, NULL, 200);
        cJSON *items = cJSON_GetObjectItem(j, "items");
        more = cJSON_IsTrue(cJSON_GetObjectItem(j, "has_more"));
        int n = cJSON_GetArraySize(items);
        cr_assert_eq(n, pages < 2 ? 10 : 5);
        cr_assert_eq(more, pages < 2);
        for (int k = 0; k < n; k++) {
            int idx = (int)num(cJSON_GetArrayItem(items, k), "n");
            cr_assert(idx >= 0 && idx < 25 && !seen[idx], "item %d seen twice", idx);
            seen[idx] = 1;
            total++;
        }
        since = strtoll(str(j, "cursor"), NULL, 10);
        cr_assert_gt(since, prev, "cursors increase");
        prev = since;
        pages++;
        cJSON_Delete(j);
    }
    cr_assert_eq(total, 25);
    cr_assert_eq(pages, 3);

    /* Nothing new: an empty page keeps the cursor. */
    snprintf(path, sizeof path, "/v1/sessions?since=%lld", (long long)since);
    cJSON *j = call_json("GET", path, NULL, NULL, NULL, 200);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "items")), 0);
    cr_assert_eq(strtoll(str(j, "cursor"), NULL, 10), since);
    cJSON_Delete(j);

    /* An update and a delete show up after the cursor, the delete as a tombstone. */
    cJSON_Delete(call_json("PATCH", "/v1/sessions/d03", "{\"n\":103}", NULL, NULL, 200));
    ts_http_resp_t r;
    cr_assert_eq(call("DELETE", "/v1/sessions/d07", NULL, NULL, NULL, &r), 204);
    ts_http_free(&r);
    j = call_json("GET", path, NULL, NULL, NULL, 200);
    cJSON *items = cJSON_GetObjectItem(j, "items");
    cr_assert_eq(cJSON_GetArraySize(items), 2);
    cJSON *a = cJSON_GetArrayItem(items, 0), *b = cJSON_GetArrayItem(items, 1);
    cr_assert_str_eq(str(a, "id"), "d03");
    cr_assert_eq(num(a, "version"), 2);
    cr_assert_str_eq(str(b, "id"), "d07");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(b, "deleted")));
    cr_assert_eq(num(b, "version"), 2);
    cJSON_Delete(j);

    /* The global feed carries collection names. */
    j = call_json("GET", "/v1/changes?since=0&timeout=0&limit=1000", NULL, NULL, NULL, 200);
    cJSON *ch = cJSON_GetObjectItem(j, "changes");
    cr_assert_eq(cJSON_GetArraySize(ch), 26);
    int consult = 0;
    for (int k = 0; k < cJSON_GetArraySize(ch); k++)
        consult += strcmp(str(cJSON_GetArrayItem(ch, k), "collection"), "consultations") == 0;
    cr_assert_eq(consult, 1);
    cJSON_Delete(j);

    cr_assert_eq(call("GET", "/v1/sessions?since=abc", NULL, NULL, NULL, &r), 400);
    ts_http_free(&r);
}

typedef struct {
    int delay_ms;
    const char *path;
    const char *body;
    long status;
} later_t;

static void *write_later(void *arg)
{
    later_t *l = arg;
    usleep((useconds_t)l->delay_ms * 1000);
    ts_http_resp_t r;
    call("POST", l->path, l->body, NULL, NULL, &r);
    l->status = r.status;
    ts_http_free(&r);
    return NULL;
}

Test(feed, long_poll_returns_on_a_change)
{
    int64_t head = head_cursor();
    later_t l = {.delay_ms = 400, .path = "/v1/sessions", .body = "{\"id\":\"late\"}"};
    pthread_t t;
    pthread_create(&t, NULL, write_later, &l);
    char path[128];
    snprintf(path, sizeof path, "/v1/changes?since=%lld&timeout=10", (long long)head);
    double t0 = now_s();
    cJSON *j = call_json("GET", path, NULL, NULL, NULL, 200);
    double took = now_s() - t0;
    pthread_join(t, NULL);
    cr_assert_eq(l.status, 201);
    cJSON *ch = cJSON_GetObjectItem(j, "changes");
    cr_assert_eq(cJSON_GetArraySize(ch), 1);
    cJSON *c0 = cJSON_GetArrayItem(ch, 0);
    cr_assert_str_eq(str(c0, "collection"), "sessions");
    cr_assert_str_eq(str(cJSON_GetObjectItem(c0, "doc"), "id"), "late");
    cr_assert_gt(strtoll(str(j, "cursor"), NULL, 10), head);
    cr_assert(took >= 0.3 && took < 5, "answered after %.3f s", took);
    cJSON_Delete(j);

    /* With changes already after since it answers at once. */
    t0 = now_s();
    snprintf(path, sizeof path, "/v1/changes?since=%lld&timeout=10", (long long)head);
    cJSON_Delete(call_json("GET", path, NULL, NULL, NULL, 200));
    cr_assert_lt(now_s() - t0, 1.0);
}

typedef struct {
    int n;
    double worst;
} probe_t;

static void *probe_gets(void *arg)
{
    probe_t *p = arg;
    usleep(200 * 1000);
    for (int i = 0; i < p->n; i++) {
        double t0 = now_s();
        ts_http_resp_t r;
        call("GET", "/v1/sessions?limit=1", NULL, NULL, NULL, &r);
        ts_http_free(&r);
        double d = now_s() - t0;
        if (d > p->worst)
            p->worst = d;
    }
    return NULL;
}

Test(feed, long_poll_times_out_without_blocking_others)
{
    int64_t head = head_cursor();
    /* Several parked long polls at once (more than the HTTP threads). */
    probe_t p = {.n = 20};
    pthread_t t;
    pthread_create(&t, NULL, probe_gets, &p);
    char path[128];
    snprintf(path, sizeof path, "/v1/changes?since=%lld&timeout=1", (long long)head);
    double t0 = now_s();
    cJSON *j = call_json("GET", path, NULL, NULL, NULL, 200);
    double took = now_s() - t0;
    pthread_join(t, NULL);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "changes")), 0);
    cr_assert_eq(strtoll(str(j, "cursor"), NULL, 10), head);
    cr_assert(took >= 0.9 && took < 4, "timed out after %.3f s", took);
    cr_assert_lt(p.worst, 0.5, "a GET during a long poll took %.3f s", p.worst);
    cJSON_Delete(j);
}

/* ---- server-sent events ------------------------------------------------------ */

typedef struct {
    int want; /* stop after this many events */
} sse_stop_t;

static int count_events(const char *body)
{
    int n = 0;
    for (const char *p = body; (p = strstr(p, "id: ")); p += 4)
        if (p == body || p[-1] == '\n')
            n++;
    return n;
}

static int stop_after(const char *body, size_t len, void *ctx)
{
    (void)len;
    sse_stop_t *s = ctx;
    /* Only count complete events (ending in a blank line). */
    int complete = 0;
    for (const char *p = body; (p = strstr(p, "\n\n")); p += 2)
        complete++;
    return count_events(body) >= s->want && complete > count_events(body);
}

/* Parses the events of a stream body into ids and doc ids. Returns count. */
static int parse_events(const char *body, int64_t *ids, char docs[][32], int max)
{
    int n = 0;
    const char *p = body;
    while (n < max && (p = strstr(p, "id: "))) {
        ids[n] = strtoll(p + 4, NULL, 10);
        const char *d = strstr(p, "data: ");
        cr_assert_not_null(d);
        const char *end = strstr(d, "\n\n");
        cr_assert_not_null(end);
        char *text = strndup(d + 6, (size_t)(end - d - 6));
        cJSON *j = cJSON_Parse(text);
        cr_assert_not_null(j, "event data is JSON: %s", text);
        cr_assert_str_eq(str(j, "collection"), "sessions");
        snprintf(docs[n], 32, "%s", str(cJSON_GetObjectItem(j, "doc"), "id"));
        cJSON_Delete(j);
        free(text);
        n++;
        p = end;
    }
    return n;
}

Test(sse, events_resume_and_heartbeat, .init = start_logged_in, .fini = stop_server, .timeout = 30)
{
    char body[64], url[160];
    for (int i = 0; i < 3; i++) {
        snprintf(body, sizeof body, "{\"id\":\"e%d\"}", i);
        cJSON_Delete(call_json("POST", "/v1/sessions", body, NULL, NULL, 201));
    }
    const char *h[] = {S.auth, NULL, NULL};
    url_of(url, sizeof url, "/v1/changes/stream?since=0");
    ts_http_resp_t r;
    sse_stop_t stop = {.want = 3};
    cr_assert_eq(ts_http_stream(url, h, stop_after, &stop, 5000, &r), 0, "got: %s", r.body);
    char *ct = ts_http_header(&r, "Content-Type");
    cr_assert(ct && strstr(ct, "text/event-stream"));
    free(ct);
    int64_t ids[16];
    char docs[16][32];
    cr_assert_eq(parse_events(r.body, ids, docs, 16), 3);
    cr_assert_str_eq(docs[0], "e0");
    cr_assert_str_eq(docs[2], "e2");
    int64_t last = ids[2];
    ts_http_free(&r);

    /* Two writes while disconnected, one while connected: resuming with
     * Last-Event-ID delivers exactly those three, in order. */
    cJSON_Delete(call_json("POST", "/v1/sessions", "{\"id\":\"e3\"}", NULL, NULL, 201));
    cJSON_Delete(call_json("PATCH", "/v1/sessions/e0", "{\"x\":1}", NULL, NULL, 200));
    later_t l = {.delay_ms = 400, .path = "/v1/sessions", .body = "{\"id\":\"e4\"}"};
    pthread_t t;
    pthread_create(&t, NULL, write_later, &l);
    char lei[64];
    snprintf(lei, sizeof lei, "Last-Event-ID: %lld", (long long)last);
    h[1] = lei;
    url_of(url, sizeof url, "/v1/changes/stream");
    stop.want = 3;
    int rc = ts_http_stream(url, h, stop_after, &stop, 5000, &r);
    pthread_join(t, NULL);
    cr_assert_eq(rc, 0, "got: %s", r.body);
    int n = parse_events(r.body, ids, docs, 16);
    cr_assert_eq(n, 3, "%s", r.body);
    cr_assert_str_eq(docs[0], "e3");
    cr_assert_str_eq(docs[1], "e0");
    cr_assert_str_eq(docs[2], "e4");
    cr_assert_gt(ids[0], last);
    cr_assert(ids[0] < ids[1] && ids[1] < ids[2]);
    ts_http_free(&r);

    /* A quiet stream sends heartbeat comments (--heartbeat-ms 300 here). */
    url_of(url, sizeof url, "/v1/changes/stream");
    h[1] = NULL;
    ts_http_stream(url, h, NULL, NULL, 1000, &r);
    cr_assert(strstr(r.body, ": heartbeat"), "no heartbeat in: %s", r.body);
    cr_assert_eq(count_events(r.body), 0, "a stream without a position starts at the present");
    ts_http_free(&r);
}

/* ---- digest --------------------------------------------------------------------- */

Test(digest, matches_hash_computed_here, .init = start_logged_in, .fini = stop_server,
     .timeout = 30)
{
    cJSON *j = call_json("GET", "/v1/sessions/digest", NULL, NULL, NULL, 200);
    char hex[65];
    ts_sha256_hex("", 0, hex);
    cr_assert_eq(num(j, "count"), 0);
    cr_assert_str_eq(str(j, "hash"), hex);
    cJSON_Delete(j);

    /* The lines id:version\n (?form=version); ids chosen so that byte order differs from insertion and case order. */
    const char *ids[] = {"b", "B", "a-2", "a_1", "Z9", "a", "0x"};
    char body[64];
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        snprintf(body, sizeof body, "{\"id\":\"%s\"}", ids[i]);
        cJSON_Delete(call_json("POST", "/v1/sessions", body, NULL, NULL, 201));
    }
    cJSON_Delete(call_json("PATCH", "/v1/sessions/B", "{\"k\":1}", NULL, NULL, 200));
    cJSON_Delete(call_json("PATCH", "/v1/sessions/B", "{\"k\":2}", NULL, NULL, 200));
    ts_http_resp_t r;
    cr_assert_eq(call("DELETE", "/v1/sessions/a", NULL, NULL, NULL, &r), 204);
    ts_http_free(&r);
    cJSON_Delete(call_json("POST", "/v1/consultations", "{\"id\":\"zzz\"}", NULL, NULL, 201));

    /* Byte order: "0x" < "B" < "Z9" < "a-2" < "a_1" < "b" ('-'=0x2d, '_'=0x5f). */
    const char *expect = "0x:1\nB:3\nZ9:1\na-2:1\na_1:1\nb:1\n";
    ts_sha256_hex(expect, strlen(expect), hex);
    j = call_json("GET", "/v1/sessions/digest?form=version", NULL, NULL, NULL, 200);
    cr_assert_eq(num(j, "count"), 6);
    cr_assert_str_eq(str(j, "hash"), hex);
    cr_assert_str_eq(str(j, "form"), "version");
    cJSON_Delete(j);
    /* the default covers the bodies too (test_sync checks its lines) */
    j = call_json("GET", "/v1/sessions/digest", NULL, NULL, NULL, 200);
    cr_assert_eq(num(j, "count"), 6);
    cr_assert_str_neq(str(j, "hash"), hex);
    cr_assert_str_eq(str(j, "form"), "content");
    cJSON_Delete(j);
}

/* ---- fault injection ---------------------------------------------------------- */

TestSuite(faults, .init = start_logged_in, .fini = stop_server, .timeout = 30);

Test(faults, fail_rate_answers_status_with_retry_after)
{
    set_faults("{\"fail_rate\":1,\"status\":503,\"retry_after\":2}");
    ts_http_resp_t r;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(call("GET", "/v1/sessions", NULL, NULL, NULL, &r), 503);
        char *ra = ts_http_header(&r, "Retry-After");
        cr_assert(ra && strcmp(ra, "2") == 0, "Retry-After: %s", ra ? ra : "(none)");
        free(ra);
        ts_http_free(&r);
    }
    /* A failed write applies nothing. */
    int64_t applied = stat_of("applied_writes");
    cr_assert_eq(call("POST", "/v1/sessions", "{\"id\":\"f1\"}", "Idempotency-Key: f-1", NULL, &r),
                 503);
    ts_http_free(&r);
    cr_assert_eq(stat_of("applied_writes"), applied);
    set_faults("{\"fail_rate\":1,\"status\":429}");
    cr_assert_eq(call("POST", "/oauth/token", "grant_type=client_credentials", NULL, NULL, &r),
                 429);
    char *ra = ts_http_header(&r, "Retry-After");
    cr_assert(ra && strcmp(ra, "1") == 0);
    free(ra);
    ts_http_free(&r);
    set_faults("{\"fail_rate\":1,\"status\":500}");
    cr_assert_eq(call("GET", "/v1/sessions", NULL, NULL, NULL, &r), 500);
    ra = ts_http_header(&r, "Retry-After");
    cr_assert_null(ra);
    ts_http_free(&r);
    cr_assert_geq(stat_of("faults_failed"), 6);

    /* {} clears every fault. */
    set_faults("{}");
    cr_assert_eq(call("POST", "/v1/sessions", "{\"id\":\"f1\"}", "Idempotency-Key: f-1", NULL, &r),
                 201);
    ts_http_free(&r);
    cJSON *j = call_json("GET", "/_control/faults", NULL, NULL, NULL, 200);
    cr_assert_eq(num(j, "fail_rate"), 0);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "offline")));
    cJSON_Delete(j);
    cr_assert_eq(call("POST", "/_control/faults", "{\"fail_rate\":2}", NULL, NULL, &r), 422);
    ts_http_free(&r);
}

Test(faults, drop_and_offline_close_connections)
{
    char url[128];
    url_of(url, sizeof url, "/v1/sessions");
    const char *h[] = {S.auth, NULL};
    ts_http_resp_t r;
    set_faults("{\"drop_rate\":1}");
    cr_assert_eq(ts_http("GET", url, h, NULL, 5000, &r), -1, "dropped: no answer");
    cr_assert_eq(r.status, 0);
    cr_assert_neq(r.curl_code, 28, "closed at once, not timed out");
    ts_http_free(&r);
    cr_assert_geq(stat_of("faults_dropped"), 1);

    set_faults("{\"offline\":true}");
    for (int i = 0; i < 3; i++) {
        double t0 = now_s();
        cr_assert_eq(ts_http("GET", url, h, NULL, 5000, &r), -1);
        cr_assert_eq(r.status, 0);
        cr_assert_lt(now_s() - t0, 1.0);
        ts_http_free(&r);
    }
    /* A write while offline applies nothing; the control endpoint still answers. */
    int64_t applied = stat_of("applied_writes");
    cr_assert_eq(ts_http("POST", url, h, "{\"id\":\"o1\"}", 5000, &r), -1);
    ts_http_free(&r);
    cr_assert_eq(stat_of("applied_writes"), applied);
    set_faults("{}");
    cr_assert_eq(call("GET", "/v1/sessions/o1", NULL, NULL, NULL, &r), 404);
    ts_http_free(&r);
    cr_assert_eq(call("GET", "/v1/sessions", NULL, NULL, NULL, &r), 200);
    ts_http_free(&r);
}

Test(faults, latency_delays_answers)
{
    set_faults("{\"latency_ms\":300}");
    double t0 = now_s();
    ts_http_resp_t r;
    cr_assert_eq(call("GET", "/v1/sessions", NULL, NULL, NULL, &r), 200);
    double took = now_s() - t0;
    ts_http_free(&r);
    cr_assert(took >= 0.28 && took < 3, "took %.3f s", took);
    set_faults("{}");
    t0 = now_s();
    cr_assert_eq(call("GET", "/v1/sessions", NULL, NULL, NULL, &r), 200);
    ts_http_free(&r);
    cr_assert_lt(now_s() - t0, 0.25);
    cr_assert_geq(stat_of("faults_delayed"), 1);
}

/* A write whose answer is held back: the POST runs in a thread, the main
 * thread sees the document before the answer arrives. */
struct slow_post {
    long status;
    double done_at;
};

static void *post_in_thread(void *arg)
{
    struct slow_post *sp = arg;
    char url[512];
    url_of(url, sizeof url, "/v1/sessions");
    const char *h[] = {S.auth, NULL};
    ts_http_resp_t r;
    sp->status = ts_http("POST", url, h, "{\"id\":\"al-1\",\"room\":\"a\"}", 10000, &r) == 0
                     ? r.status
                     : -1;
    sp->done_at = now_s();
    ts_http_free(&r);
    return NULL;
}

Test(faults, answer_latency_commits_before_answering)
{
    set_faults("{\"answer_latency_ms\":800}");
    struct slow_post sp = {0};
    double t0 = now_s(), seen_at = 0;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, post_in_thread, &sp), 0);
    for (int i = 0; i < 300 && !seen_at; i++) {
        ts_http_resp_t r;
        if (call("GET", "/v1/sessions/al-1", NULL, NULL, NULL, &r) == 200)
            seen_at = now_s();
        ts_http_free(&r);
        if (!seen_at)
            usleep(10000);
    }
    pthread_join(t, NULL);
    set_faults("{}");
    cr_assert_eq(sp.status, 201);
    cr_assert(sp.done_at - t0 >= 0.75, "answered after %.3f s", sp.done_at - t0);
    cr_assert(seen_at > 0 && seen_at < sp.done_at, "visible at %.3f s, answered at %.3f s",
              seen_at - t0, sp.done_at - t0);
}

static void start_flags_no_control(void)
{
    const char *extra[] = {"--no-control", "--fail-rate",   "1", "--fail-status",
                           "429",          "--retry-after", "3", NULL};
    start_server(extra);
}

Test(faults_flags, start_flags_and_no_control, .init = start_flags_no_control, .fini = stop_server,
     .timeout = 30)
{
    ts_http_resp_t r;
    /* The token endpoint fails too, so use a fake token: faults come first. */
    snprintf(S.auth, sizeof S.auth, "Authorization: Bearer x");
    cr_assert_eq(call("GET", "/v1/sessions", NULL, NULL, NULL, &r), 429);
    char *ra = ts_http_header(&r, "Retry-After");
    cr_assert(ra && strcmp(ra, "3") == 0);
    free(ra);
    ts_http_free(&r);
    cr_assert_eq(call("POST", "/_control/faults", "{}", NULL, NULL, &r), 404);
    ts_http_free(&r);
    cr_assert_eq(call("GET", "/_control/stats", NULL, NULL, NULL, &r), 404);
    ts_http_free(&r);
}

/* ---- process ------------------------------------------------------------------- */

Test(process, help_version_and_bad_flags, .timeout = 30)
{
    char *dir = ts_tmpdir("clinic-api-test");
    ts_proc_t p;
    const char *help[] = {"--help", NULL};
    cr_assert_eq(ts_proc_spawn(&p, dir, "clinic-api", help), 0);
    cr_assert_eq(ts_proc_wait_exit(&p, 10000), 0);
    cr_assert_eq(ts_proc_wait_line(&p, "--listen", 5000, NULL, 0), 0);
    const char *version[] = {"--version", NULL};
    cr_assert_eq(ts_proc_spawn(&p, dir, "clinic-api", version), 0);
    cr_assert_eq(ts_proc_wait_exit(&p, 10000), 0);
    cr_assert_eq(ts_proc_wait_line(&p, "clinic-api ", 5000, NULL, 0), 0);
    const char *bad[] = {"--listen", "nowhere", NULL};
    cr_assert_eq(ts_proc_spawn(&p, dir, "clinic-api", bad), 0);
    cr_assert_eq(ts_proc_wait_exit(&p, 10000), 2);
    cr_assert_eq(ts_proc_wait_line(&p, "HOST:PORT", 5000, NULL, 0), 0);
    ts_rmtree(dir);
    free(dir);
}

/* ---- concurrency and shutdown ------------------------------------------------ */

typedef struct {
    int index;
    int created;  /* 201 answers to its own creates */
    int dup_201;  /* 201 answers to the shared-key create */
    int patch_ok; /* 200 answers to the contended patch */
    int patch_409;
} worker_t;

static void *writer_thread(void *arg)
{
    worker_t *w = arg;
    char body[96], key[96];
    ts_http_resp_t r;
    for (int i = 0; i < 40; i++) {
        snprintf(body, sizeof body, "{\"id\":\"w%d-%02d\",\"n\":%d}", w->index, i, i);
        snprintf(key, sizeof key, "Idempotency-Key: w%d-%d", w->index, i);
        if (call("POST", "/v1/sessions", body, key, NULL, &r) == 201)
            w->created++;
        ts_http_free(&r);
    }
    /* Everyone sends the same keyed create: applied once, all see 201. */
    if (call("POST", "/v1/sessions", "{\"id\":\"shared\"}", "Idempotency-Key: shared-key", NULL,
             &r) == 201)
        w->dup_201++;
    ts_http_free(&r);
    /* Everyone patches version 1 of the same document: one wins. */
    long st = call("PATCH", "/v1/consultations/hot", "{\"by\":1}", "If-Match: \"1\"", NULL, &r);
    w->patch_ok += st == 200;
    w->patch_409 += st == 409;
    ts_http_free(&r);
    return NULL;
}

Test(concurrency, parallel_writes_apply_exactly_once, .init = start_logged_in, .fini = stop_server,
     .timeout = 60)
{
    cJSON_Delete(call_json("POST", "/v1/consultations", "{\"id\":\"hot\"}", NULL, NULL, 201));
    int64_t applied0 = stat_of("applied_writes");
    enum { N = 8 };
    pthread_t t[N];
    worker_t w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker_t){.index = i};
        pthread_create(&t[i], NULL, writer_thread, &w[i]);
    }
    int created = 0, dup = 0, ok = 0, conflicts = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        created += w[i].created;
        dup += w[i].dup_201;
        ok += w[i].patch_ok;
        conflicts += w[i].patch_409;
    }
    cr_assert_eq(created, N * 40);
    cr_assert_eq(dup, N, "every shared-key create answers 201");
    cr_assert_eq(ok, 1, "exactly one If-Match \"1\" patch wins");
    cr_assert_eq(conflicts, N - 1);
    cr_assert_eq(stat_of("applied_writes") - applied0, N * 40 + 1 + 1);
    cJSON *j = call_json("GET", "/v1/sessions/digest", NULL, NULL, NULL, 200);
    cr_assert_eq(num(j, "count"), N * 40 + 1);
    cJSON_Delete(j);
    j = call_json("GET", "/v1/consultations/hot", NULL, NULL, NULL, 200);
    cr_assert_eq(num(j, "version"), 2);
    cJSON_Delete(j);
    /* The feed holds every document once, cursors strictly increasing. */
    j = call_json("GET", "/v1/changes?since=0&timeout=0&limit=1000", NULL, NULL, NULL, 200);
    cJSON *ch = cJSON_GetObjectItem(j, "changes");
    cr_assert_eq(cJSON_GetArraySize(ch), N * 40 + 2);
    cJSON_Delete(j);
}

typedef struct {
    const char *path;
    int rc;
    long status;
    double seconds;
} waiter_t;

static void *open_request(void *arg)
{
    waiter_t *wt = arg;
    char url[256];
    url_of(url, sizeof url, wt->path);
    const char *h[] = {S.auth, NULL};
    ts_http_resp_t r;
    double t0 = now_s();
    wt->rc = ts_http("GET", url, h, NULL, 15000, &r);
    wt->seconds = now_s() - t0;
    wt->status = r.status;
    ts_http_free(&r);
    return NULL;
}

Test(process, sigterm_ends_long_polls_and_streams, .init = start_logged_in, .fini = stop_server,
     .timeout = 30)
{
    waiter_t poll = {.path = "/v1/changes?since=999999&timeout=30"};
    waiter_t sse = {.path = "/v1/changes/stream"};
    pthread_t a, b;
    pthread_create(&a, NULL, open_request, &poll);
    pthread_create(&b, NULL, open_request, &sse);
    usleep(500 * 1000);
    double t0 = now_s();
    int rc = ts_proc_stop(&S.proc, 5000);
    double took = now_s() - t0;
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    cr_assert_eq(rc, 0, "exit status %d", rc);
    cr_assert_lt(took, 3.0, "stopping took %.2f s", took);
    cr_assert_eq(poll.status, 200, "the parked long poll is answered on shutdown");
    cr_assert_lt(poll.seconds, 5.0);
    cr_assert_eq(sse.status, 200);
    cr_assert_lt(sse.seconds, 5.0, "the stream ends on shutdown");
}

Test(process, idempotency_survives_a_restart, .init = start_logged_in, .fini = stop_server,
     .timeout = 30)
{
    ts_http_resp_t a, b;
    cr_assert_eq(
        call("POST", "/v1/sessions", "{\"notes\":\"x\"}", "Idempotency-Key: r-1", NULL, &a), 201);
    int rc = ts_proc_stop(&S.proc, 5000);
    cr_assert_eq(rc, 0, "clinic-api exit status on SIGTERM: %d (log %s)", rc, S.proc.log_path);
    spawn_server(NULL);
    login();
    cr_assert_eq(
        call("POST", "/v1/sessions", "{\"notes\":\"x\"}", "Idempotency-Key: r-1", NULL, &b), 201);
    cr_assert_str_eq(a.body, b.body, "the generated id and version come back unchanged");
    cr_assert_eq(stat_of("applied_writes"), 0);
    cr_assert_eq(stat_of("idempotent_replays"), 1);
    /* The cursor continues after the restart. */
    cJSON *d = call_json("POST", "/v1/sessions", "{}", NULL, NULL, 201);
    cJSON_Delete(d);
    cJSON *j = call_json("GET", "/v1/sessions?since=1", NULL, NULL, NULL, 200);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "items")), 1);
    cr_assert_str_eq(str(j, "cursor"), "2");
    cJSON_Delete(j);
    ts_http_free(&a);
    ts_http_free(&b);
}

/* ---- POST /v1/_batch (extension) ------------------------------------------- */

TestSuite(batch, .init = start_logged_in, .fini = stop_server, .timeout = 30);

/* The results array of a 200 batch answer, checked to hold n entries.
 * *root receives the whole answer (caller deletes). */
static const cJSON *batch_results(const char *body, int n, cJSON **root)
{
    *root = call_json("POST", "/v1/_batch", body, NULL, NULL, 200);
    const cJSON *res = cJSON_GetObjectItem(*root, "results");
    cr_assert(cJSON_IsArray(res));
    cr_assert_eq(cJSON_GetArraySize(res), n, "one result per op");
    return res;
}

static int64_t result_status(const cJSON *results, int i)
{
    return num(cJSON_GetArrayItem(results, i), "status");
}

static const cJSON *result_body(const cJSON *results, int i)
{
    return cJSON_GetObjectItem(cJSON_GetArrayItem(results, i), "body");
}

Test(batch, mixed_ops_apply_in_order_and_answer_like_single_requests)
{
    int64_t applied0 = stat_of("applied_writes"), commits0 = stat_of("commits");
    int64_t cursor0 = head_cursor();
    cJSON *root;
    const cJSON *res = batch_results(
        "{\"ops\":["
        "{\"method\":\"POST\",\"collection\":\"sessions\",\"idempotency_key\":\"b-k1\","
        " \"body\":{\"id\":\"b-1\",\"room\":\"A\"}},"
        "{\"method\":\"PATCH\",\"collection\":\"sessions\",\"id\":\"b-1\",\"if_match\":1,"
        " \"idempotency_key\":\"b-k2\",\"body\":{\"room\":\"B\"}},"
        "{\"method\":\"PATCH\",\"collection\":\"sessions\",\"id\":\"b-1\",\"if_match\":1,"
        " \"body\":{\"room\":\"C\"}},"
        "{\"method\":\"DELETE\",\"collection\":\"sessions\",\"id\":\"nobody\"},"
        "{\"method\":\"POST\",\"collection\":\"sessions\",\"body\":{\"deleted\":true}},"
        "{\"method\":\"PATCH\",\"collection\":\"sessions\",\"id\":\"b-1\",\"body\":{\"id\":\"x\"}},"
        "{\"method\":\"POST\",\"collection\":\"nope\",\"body\":{}},"
        "{\"method\":\"DELETE\",\"collection\":\"sessions\",\"id\":\"b-1\",\"if_match\":\"2\","
        " \"idempotency_key\":\"b-k3\"}"
        "]}",
        8, &root);
    cr_assert_eq(result_status(res, 0), 201);
    cr_assert_eq(num(result_body(res, 0), "version"), 1);
    cr_assert_eq(result_status(res, 1), 200, "the second op sees the first");
    cr_assert_eq(num(result_body(res, 1), "version"), 2);
    cr_assert_str_eq(str(result_body(res, 1), "room"), "B");
    cr_assert_eq(result_status(res, 2), 409, "a stale If-Match is a conflict");
    cr_assert_eq(num(cJSON_GetObjectItem(result_body(res, 2), "current"), "version"), 2);
    cr_assert_eq(result_status(res, 3), 404);
    cr_assert_eq(result_status(res, 4), 422);
    cr_assert(cJSON_IsArray(cJSON_GetObjectItem(result_body(res, 4), "errors")));
    cr_assert_eq(result_status(res, 5), 422, "a patch changing the id");
    cr_assert_eq(result_status(res, 6), 404);
    cr_assert_str_eq(str(result_body(res, 6), "error"), "unknown_collection");
    cr_assert_eq(result_status(res, 7), 204);
    cr_assert_null(result_body(res, 7), "a 204 has no body");
    cJSON_Delete(root);

    cr_assert_eq(stat_of("applied_writes") - applied0, 3, "create, patch, delete");
    cr_assert_eq(stat_of("commits") - commits0, 1, "one transaction for the batch");
    cr_assert_eq(stat_of("batches"), 1);
    ts_http_resp_t r;
    cr_assert_eq(call("GET", "/v1/sessions/b-1", NULL, NULL, NULL, &r), 404);
    ts_http_free(&r);
    /* The feed shows the document once, at its latest state: the tombstone. */
    char path[96];
    snprintf(path, sizeof path, "/v1/changes?since=%lld&timeout=0", (long long)cursor0);
    cJSON *feed = call_json("GET", path, NULL, NULL, NULL, 200);
    const cJSON *changes = cJSON_GetObjectItem(feed, "changes");
    cr_assert_eq(cJSON_GetArraySize(changes), 1);
    const cJSON *doc = cJSON_GetObjectItem(cJSON_GetArrayItem(changes, 0), "doc");
    cr_assert_str_eq(str(doc, "id"), "b-1");
    cr_assert_eq(num(doc, "version"), 3);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(doc, "deleted")));
    cJSON_Delete(feed);
}

/* A batch create's stored text is made from the op's body printed once
 * (spliced after id, version, updated_at); it must be what a single create
 * stores: id, version, updated_at first, then the body's other fields in
 * order, whether the body has its id first, elsewhere or not at all. */
static void expect_stored(const char *id, const char *tail)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    ts_http_resp_t r;
    cr_assert_eq(call("GET", path, NULL, NULL, NULL, &r), 200);
    char head[96];
    snprintf(head, sizeof head, "{\"id\":\"%s\",\"version\":1,\"updated_at\":\"", id);
    cr_assert(strncmp(r.body, head, strlen(head)) == 0, "%s", r.body);
    const char *after = r.body + strlen(head) + strlen("2026-01-01T00:00:00.000Z\"");
    cr_assert_str_eq(after, tail, "%s", r.body);
    ts_http_free(&r);
}

Test(batch, a_create_is_stored_like_a_single_create)
{
    cJSON *root;
    const cJSON *res = batch_results(
        "{\"ops\":["
        "{\"method\":\"POST\",\"collection\":\"sessions\",\"idempotency_key\":\"r-1\","
        " \"body\":{\"id\":\"r-1\",\"room\":\"A\",\"n\":[1,{\"x\":\"}\"}]}},"
        "{\"method\":\"POST\",\"collection\":\"sessions\",\"body\":{\"room\":\"B\",\"id\":\"r-2\"}},"
        "{\"method\":\"POST\",\"collection\":\"sessions\",\"body\":{\"id\":\"r-3\"}},"
        "{\"method\":\"POST\",\"collection\":\"sessions\",\"body\":{\"room\":\"C\"}}"
        "]}",
        4, &root);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(result_status(res, i), 201, "op %d", i);
    char generated[65];
    snprintf(generated, sizeof generated, "%s", str(result_body(res, 3), "id"));
    cJSON_Delete(root);
    expect_stored("r-1", ",\"room\":\"A\",\"n\":[1,{\"x\":\"}\"}]}");
    expect_stored("r-2", ",\"room\":\"B\"}");
    expect_stored("r-3", "}");
    expect_stored(generated, ",\"room\":\"C\"}");
    /* the same as a single create stores */
    ts_http_resp_t r;
    cr_assert_eq(call("POST", "/v1/sessions", "{\"id\":\"r-4\",\"room\":\"A\"}", NULL, NULL, &r),
                 201);
    ts_http_free(&r);
    expect_stored("r-4", ",\"room\":\"A\"}");
}

Test(batch, a_replayed_batch_answers_the_same_and_applies_nothing)
{
    const char *body =
        "{\"ops\":["
        "{\"method\":\"POST\",\"collection\":\"sessions\",\"idempotency_key\":\"r-k1\","
        " \"body\":{\"id\":\"r-1\",\"notes\":\"n\"}},"
        "{\"method\":\"POST\",\"collection\":\"sessions\",\"idempotency_key\":\"r-k2\","
        " \"body\":{\"notes\":\"generated id\"}},"
        "{\"method\":\"PATCH\",\"collection\":\"sessions\",\"id\":\"r-1\",\"if_match\":1,"
        " \"idempotency_key\":\"r-k3\",\"body\":{\"notes\":null}},"
        "{\"method\":\"PATCH\",\"collection\":\"sessions\",\"id\":\"r-1\",\"if_match\":1,"
        " \"idempotency_key\":\"r-k4\",\"body\":{\"room\":\"late\"}}"
        "]}";
    ts_http_resp_t a, b;
    cr_assert_eq(call("POST", "/v1/_batch", body, NULL, NULL, &a), 200);
    int64_t applied = stat_of("applied_writes");
    cr_assert_eq(applied, 3, "two creates and a patch; the last op is a 409");
    cr_assert_eq(call("POST", "/v1/_batch", body, NULL, NULL, &b), 200);
    cr_assert_str_eq(a.body, b.body, "every op answers its first answer, 409 included");
    cr_assert_eq(stat_of("applied_writes"), applied, "nothing applied twice");
    cr_assert_eq(stat_of("idempotent_replays"), 4);
    ts_http_free(&a);
    ts_http_free(&b);

    /* A key moves between a batch and a single request: the same write
     * sent alone (compact body, If-Match "N") is the same request. */
    cr_assert_eq(call("PATCH", "/v1/sessions/r-1", "{\"notes\":null}", "If-Match: \"1\"",
                      "Idempotency-Key: r-k3", &a),
                 200, "%s", a.body);
    cr_assert_eq(stat_of("idempotent_replays"), 5);
    ts_http_free(&a);
    /* The same key with a different op: 422, as for single requests. */
    cJSON *root;
    const cJSON *res = batch_results(
        "{\"ops\":[{\"method\":\"POST\",\"collection\":\"sessions\",\"idempotency_key\":\"r-k1\","
        " \"body\":{\"id\":\"r-other\"}}]}",
        1, &root);
    cr_assert_eq(result_status(res, 0), 422);
    cJSON_Delete(root);
    cr_assert_eq(stat_of("applied_writes"), applied);
}

Test(batch, malformed_or_oversized_batches_are_refused_whole)
{
    struct {
        const char *body;
        long status;
        const char *field;
    } cases[] = {
        {"not json", 400, ""},
        {"{\"ops\":{}}", 400, "ops"},
        {"[]", 400, "ops"},
        {"{\"ops\":[{\"method\":\"POST\",\"collection\":\"sessions\",\"body\":{\"id\":\"m-1\"}},"
         "{\"collection\":\"sessions\",\"body\":{}}]}",
         400, "ops[1].method"},
        {"{\"ops\":[{\"method\":\"PUT\",\"collection\":\"sessions\",\"body\":{}}]}", 400,
         "ops[0].method"},
        {"{\"ops\":[{\"method\":\"POST\",\"collection\":\"sessions\"}]}", 400, "ops[0].body"},
        {"{\"ops\":[{\"method\":\"PATCH\",\"collection\":\"sessions\",\"body\":{}}]}", 400,
         "ops[0].id"},
        {"{\"ops\":[{\"method\":\"DELETE\",\"collection\":\"sessions\",\"id\":\"x\","
         "\"if_match\":true}]}",
         400, "ops[0].if_match"},
        {"{\"ops\":[7]}", 400, "ops[0]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = call_json("POST", "/v1/_batch", cases[i].body, NULL, NULL, cases[i].status);
        const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "errors"), 0);
        cr_assert_not_null(e, "case %zu: no errors", i);
        cr_assert_str_eq(str(e, "field"), cases[i].field, "case %zu", i);
        cJSON_Delete(j);
    }
    cr_assert_eq(stat_of("applied_writes"), 0, "a malformed batch applies nothing");

    ts_buf_t big = {0};
    ts_buf_puts(&big, "{\"ops\":[");
    for (int i = 0; i < 1001; i++)
        ts_buf_printf(&big, "%s{\"method\":\"POST\",\"collection\":\"sessions\",\"body\":{}}",
                      i ? "," : "");
    ts_buf_puts(&big, "]}");
    cJSON *j = call_json("POST", "/v1/_batch", big.data, NULL, NULL, 413);
    cr_assert_eq(num(j, "max_ops"), 1000);
    cJSON_Delete(j);
    ts_buf_free(&big);
    cr_assert_eq(stat_of("applied_writes"), 0);

    j = call_json("GET", "/v1/_batch", NULL, NULL, NULL, 405);
    cJSON_Delete(j);
    j = call_json("POST", "/v1/_batch", "{\"ops\":[]}", NULL, NULL, 200);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "results")), 0);
    cJSON_Delete(j);
}

static void start_no_batch(void)
{
    const char *extra[] = {"--no-batch", NULL};
    start_server(extra);
    login();
}

Test(batch_off, no_batch_answers_404_like_a_server_without_it, .init = start_no_batch,
     .fini = stop_server, .timeout = 30)
{
    cJSON *j = call_json("POST", "/v1/_batch",
                         "{\"ops\":[{\"method\":\"POST\",\"collection\":\"sessions\","
                         "\"body\":{}}]}",
                         NULL, NULL, 404);
    cJSON_Delete(j);
    cr_assert_eq(stat_of("applied_writes"), 0);
}

/* ---- slow and malformed clients (issue 19) ------------------------------------ */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

typedef struct {
    double started, answered; /* now_s(); answered 0: never */
} legit_t;

/* A well-behaved client from the same address: retries GET /_control/stats
 * (1 s each) until it is answered, for 10 s at most. */
static void *legit_client(void *arg)
{
    legit_t *l = arg;
    char url[128];
    url_of(url, sizeof url, "/_control/stats");
    while (now_s() - l->started < 10) {
        ts_http_resp_t r;
        int rc = ts_http("GET", url, NULL, NULL, 1000, &r);
        long st = r.status;
        ts_http_free(&r);
        if (rc == 0 && st == 200) {
            l->answered = now_s();
            break;
        }
        sleep_ms(100);
    }
    return NULL;
}

static void start_slow_guard(void)
{
    const char *extra[] = {"--header-timeout", "2", "--max-conns-per-ip", "50", NULL};
    start_server(extra);
}

/* 300 connections from 127.0.0.1 trickle header bytes (one every 200 ms per
 * connection, which restarts libmicrohttpd's own idle timeout each time):
 * the per-address cap keeps all but 50 out at once, the header deadline
 * closes those 50 after 2 s whatever they send, and a legitimate request
 * from the same address is answered soon after. */
Test(slow, trickling_connections_are_cut_at_the_header_deadline, .init = start_slow_guard,
     .fini = stop_server, .timeout = 40)
{
    enum { N = 300 };
    int fds[N];
    double closed_at[N];
    double t0 = now_s();
    const char *head = "GET /_control/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    for (int i = 0; i < N; i++) {
        fds[i] = ts_tcp_connect(S.port);
        cr_assert_geq(fds[i], 0, "connect %d", i);
        send(fds[i], head, strlen(head), MSG_NOSIGNAL | MSG_DONTWAIT);
        closed_at[i] = 0;
    }
    legit_t legit = {.started = now_s()};
    pthread_t th;
    pthread_create(&th, NULL, legit_client, &legit);
    int held_at_1s = -1;
    while (now_s() - t0 < 8) {
        int open = 0;
        for (int i = 0; i < N; i++) {
            if (closed_at[i])
                continue;
            char buf[256];
            ssize_t n = recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
                send(fds[i], "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                closed_at[i] = now_s();
                close(fds[i]);
                continue;
            }
            open++;
        }
        if (held_at_1s < 0 && now_s() - t0 >= 1)
            held_at_1s = open;
        if (!open)
            break;
        sleep_ms(200);
    }
    pthread_join(th, NULL);
    int still_open = 0;
    double last_close = 0;
    for (int i = 0; i < N; i++) {
        if (!closed_at[i]) {
            still_open++;
            close(fds[i]);
        } else if (closed_at[i] > last_close) {
            last_close = closed_at[i];
        }
    }
    cr_assert_leq(held_at_1s, 50, "the per-address cap holds: %d open", held_at_1s);
    cr_assert_geq(held_at_1s, 10, "some trickling connections were taken: %d", held_at_1s);
    cr_assert_eq(still_open, 0, "%d trickling connections outlived the header deadline",
                 still_open);
    cr_assert_leq(last_close - t0, 4.5, "the last one was closed %.1f s in", last_close - t0);
    cr_assert_gt(legit.answered, 0, "the legitimate request was never answered");
    cr_assert_leq(legit.answered - legit.started, 5.0, "answered after %.1f s",
                  legit.answered - legit.started);
    cr_assert_geq(stat_of("header_timeouts"), held_at_1s);
}

/* An idle keep-alive connection is closed at the header deadline as well;
 * one that sends its request in time is answered normally. */
Test(slow, a_prompt_request_is_answered_and_an_idle_connection_closed, .init = start_slow_guard,
     .fini = stop_server, .timeout = 30)
{
    char out[2048];
    const char *req = "GET /_control/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    double t0 = now_s();
    int st = ts_http_raw(S.port, req, strlen(req), out, sizeof out, 6000);
    cr_assert_eq(st, 200, "%s", out);
    double took = now_s() - t0;
    cr_assert(took >= 1.5 && took <= 4.5, "the kept-alive connection closed after %.1f s", took);
}

static void start_short_refresh(void)
{
    const char *extra[] = {"--refresh-ttl", "1", NULL};
    start_server(extra);
}

Test(tokens, an_expired_refresh_token_is_refused, .init = start_short_refresh,
     .fini = stop_server, .timeout = 30)
{
    login();
    char form[256];
    snprintf(form, sizeof form, "grant_type=refresh_token&refresh_token=%s&client_id=therasync&"
                                "client_secret=dev-secret", S.refresh);
    ts_http_resp_t r;
    cr_assert_eq(token_request(form, NULL, &r), 200, "a fresh refresh token works: %s", r.body);
    ts_http_free(&r);
    sleep_ms(1300);
    cr_assert_eq(token_request(form, NULL, &r), 400, "%s", r.body);
    cr_assert(strstr(r.body, "invalid_grant"), "%s", r.body);
    ts_http_free(&r);
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p, (void)u;
    return s * n;
}

/* 10,000 client-credentials grants (20,000 tokens: an access and a refresh
 * token each) over one kept-alive connection: the last thousand take about
 * as long as the first thousand (the table was swept whole on every issue
 * past 10,000 tokens). */
Test(tokens, issuing_stays_fast_with_many_tokens, .init = start_default, .fini = stop_server,
     .timeout = 90)
{
    CURL *c = curl_easy_init();
    char url[128];
    url_of(url, sizeof url, "/oauth/token");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS,
                     "grant_type=client_credentials&client_id=therasync&client_secret=dev-secret");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    double first = 0, last = 0, t = now_s();
    for (int i = 0; i < 10000; i++) {
        cr_assert_eq(curl_easy_perform(c), CURLE_OK, "grant %d", i);
        long st = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
        cr_assert_eq(st, 200, "grant %d", i);
        if (i == 999)
            first = now_s() - t;
        if (i == 8999)
            t = now_s();
        cr_assert_lt(now_s() - t, 60, "grants too slow (%d done)", i);
    }
    last = now_s() - t;
    curl_easy_cleanup(c);
    cr_assert_leq(last, 5 * first + 0.2, "the last 1000 grants took %.2f s, the first %.2f s",
                  last, first);
    cr_assert_geq(stat_of("tokens_issued"), 10000);
}

/* "dev-secret%00x" decodes to "dev-secret" cut at the NUL: refused, as is
 * any form value or Basic credential holding a NUL. */
Test(auth, nul_in_credentials_is_refused, .init = start_default, .fini = stop_server,
     .timeout = 30)
{
    ts_http_resp_t r;
    cr_assert_eq(token_request("grant_type=client_credentials&client_id=therasync&"
                               "client_secret=dev-secret%00x",
                               NULL, &r),
                 400, "%s", r.body);
    cr_assert(strstr(r.body, "invalid_request"), "%s", r.body);
    ts_http_free(&r);
    cr_assert_eq(token_request("grant_type=client_credentials%00&client_id=therasync&"
                               "client_secret=dev-secret",
                               NULL, &r),
                 400, "%s", r.body);
    ts_http_free(&r);
    /* Basic base64("therasync:dev-secret\0x") and base64("therasync:dev-secret%00x") */
    const char *basics[] = {"dGhlcmFzeW5jOmRldi1zZWNyZXQAeA==",
                            "dGhlcmFzeW5jOmRldi1zZWNyZXQlMDB4"};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(token_request("grant_type=client_credentials", basics[i], &r), 401,
                     "basic %d: %s", i, r.body);
        cr_assert(strstr(r.body, "invalid_client"), "%s", r.body);
        ts_http_free(&r);
    }
    /* base64("therasync:dev-secret"): the same without the NUL works */
    cr_assert_eq(token_request("grant_type=client_credentials", "dGhlcmFzeW5jOmRldi1zZWNyZXQ=",
                               &r),
                 200, "%s", r.body);
    ts_http_free(&r);
}

static long grant_with(const char *secret)
{
    char form[256];
    snprintf(form, sizeof form,
             "grant_type=client_credentials&client_id=therasync&client_secret=%s", secret);
    ts_http_resp_t r;
    long st = token_request(form, NULL, &r);
    ts_http_free(&r);
    return st;
}

Test(process, client_secret_from_a_file_or_the_environment, .timeout = 30)
{
    memset(&S, 0, sizeof S);
    S.dir = ts_tmpdir("clinic-api-test");
    char path[4200];
    snprintf(path, sizeof path, "%s/secret", S.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("from-file\n", f);
    fclose(f);
    const char *file_args[] = {"--client-secret-file", path, NULL};
    spawn_server(file_args);
    cr_assert_eq(grant_with("from-file"), 200);
    cr_assert_eq(grant_with("dev-secret"), 401);
    cr_assert_eq(ts_proc_stop(&S.proc, 5000), 0);

    setenv("CLINIC_API_CLIENT_SECRET", "from-env", 1);
    spawn_server(NULL);
    unsetenv("CLINIC_API_CLIENT_SECRET");
    cr_assert_eq(grant_with("from-env"), 200);
    cr_assert_eq(grant_with("dev-secret"), 401);
    cr_assert_eq(ts_proc_stop(&S.proc, 5000), 0);

    ts_proc_t p;
    const char *both[] = {"--client-secret", "x", "--client-secret-file", path, NULL};
    cr_assert_eq(ts_proc_spawn(&p, S.dir, "clinic-api", both), 0);
    cr_assert_eq(ts_proc_wait_exit(&p, 10000), 2);
    const char *missing[] = {"--client-secret-file", "/nonexistent/secret", NULL};
    cr_assert_eq(ts_proc_spawn(&p, S.dir, "clinic-api", missing), 0);
    cr_assert_eq(ts_proc_wait_exit(&p, 10000), 2);
    const char *help[] = {"--help", NULL};
    cr_assert_eq(ts_proc_spawn(&p, S.dir, "clinic-api", help), 0);
    cr_assert_eq(ts_proc_wait_exit(&p, 10000), 0);
    cr_assert_eq(ts_proc_wait_line(&p, "shows in ps", 5000, NULL, 0), 0);
    stop_server();
}

/* Sends raw bytes; asserts the status of the answer. */
static void expect_raw(const char *req, size_t len, int want, const char *why)
{
    char out[4096];
    int st = ts_http_raw(S.port, req, len, out, sizeof out, 5000);
    cr_assert_eq(st, want, "%s: got %d: %s", why, st, out);
}

Test(http, ambiguous_framing_is_refused, .init = start_logged_in, .fini = stop_server,
     .timeout = 30)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"
                     "Content-Type: application/json\r\nContent-Length: 2\r\n"
                     "Content-Length: 12\r\nConnection: close\r\n\r\n{}{\"id\":\"x\"}",
                     S.auth);
    expect_raw(req, (size_t)n, 400, "two different Content-Length headers");
    n = snprintf(req, sizeof req,
                 "POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"
                 "Content-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                 "2\r\n{}\r\n0\r\n\r\n",
                 S.auth);
    expect_raw(req, (size_t)n, 400, "Content-Length beside Transfer-Encoding");
    const char *no_host = "GET /_control/stats HTTP/1.1\r\nConnection: close\r\n\r\n";
    expect_raw(no_host, strlen(no_host), 400, "HTTP/1.1 without Host");
    static const char nul[] = "GET /_control/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "X-Note: a\0b\r\nConnection: close\r\n\r\n";
    expect_raw(nul, sizeof nul - 1, 400, "NUL in a header value");
    n = snprintf(req, sizeof req, "GET /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n%s", S.auth);
    static const char tail[] = "\0x\r\nConnection: close\r\n\r\n";
    memcpy(req + n, tail, sizeof tail - 1);
    expect_raw(req, (size_t)n + sizeof tail - 1, 400, "NUL after a bearer token");
    cr_assert_eq(stat_of("applied_writes"), 0, "nothing of them was applied");
    cr_assert_geq(stat_of("malformed"), 5);

    /* what stays fine: HTTP/1.0 without Host, a repeated equal Content-Length */
    const char *old = "GET /_control/stats HTTP/1.0\r\n\r\n";
    expect_raw(old, strlen(old), 200, "HTTP/1.0 without Host");
    n = snprintf(req, sizeof req,
                 "POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"
                 "Content-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                 S.auth);
    expect_raw(req, (size_t)n, 201, "the same Content-Length twice");
}

/* The same If-Match rule in a batch as in a single request: a non-negative
 * integer (as a number, or the header's text); 0.6 is not rounded to 1. */
Test(batch, if_match_follows_the_header_rule, .init = start_logged_in, .fini = stop_server,
     .timeout = 30)
{
    cJSON_Delete(call_json("POST", "/v1/sessions", "{\"id\":\"im\"}", NULL, NULL, 201));
    ts_http_resp_t r;
    cr_assert_eq(call("PATCH", "/v1/sessions/im", "{\"a\":1}", "If-Match: 0.6", NULL, &r), 400,
                 "%s", r.body);
    ts_http_free(&r);
    const char *bad[] = {"0.6", "-1", "1e300", "\"0.6\"", "\"x\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"ops\":[{\"method\":\"PATCH\",\"collection\":\"sessions\",\"id\":\"im\","
                 "\"if_match\":%s,\"body\":{\"a\":1}}]}",
                 bad[i]);
        cJSON *j = call_json("POST", "/v1/_batch", body, NULL, NULL, 200);
        const cJSON *res = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
        cr_assert_eq(num(res, "status"), 400, "if_match %s: %s", bad[i],
                     cJSON_PrintUnformatted(j));
        cJSON_Delete(j);
    }
    cr_assert_eq(stat_of("applied_writes"), 1, "none of them was applied");
    const char *good[] = {"1", "2.0", "\"3\"", "\"*\""}; /* each makes the next version */
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"ops\":[{\"method\":\"PATCH\",\"collection\":\"sessions\",\"id\":\"im\","
                 "\"if_match\":%s,\"body\":{\"a\":%zu}}]}",
                 good[i], i);
        cJSON *j = call_json("POST", "/v1/_batch", body, NULL, NULL, 200);
        const cJSON *res = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
        cr_assert_eq(num(res, "status"), 200, "if_match %s: %s", good[i],
                     cJSON_PrintUnformatted(j));
        cJSON_Delete(j);
    }
}

/* Numbers: "version": 1e300 was cast to an integer (undefined behaviour:
 * a UBSan build died); 1e400 overflows to infinity, which JSON cannot
 * write (it was stored as null). Both are refused with their field, and the
 * server stays up. */
Test(docs, numbers_out_of_range_are_refused, .init = start_logged_in, .fini = stop_server,
     .timeout = 30)
{
    struct {
        const char *method, *path, *body, *field;
    } cases[] = {
        {"POST", "/v1/sessions", "{\"id\":\"n1\",\"version\":1e300}", "version"},
        {"POST", "/v1/sessions", "{\"id\":\"n1\",\"version\":-1e300}", "version"},
        {"POST", "/v1/sessions", "{\"id\":\"n1\",\"a\":1e400}", "a"},
        {"POST", "/v1/sessions", "{\"id\":\"n1\",\"a\":{\"b\":[1,-1e999]}}", "a.b[1]"},
        {"PATCH", "/v1/sessions/n0", "{\"x\":1e400}", "x"},
        {"PATCH", "/v1/sessions/n0", "{\"version\":1e300}", "version"},
    };
    cJSON_Delete(call_json("POST", "/v1/sessions", "{\"id\":\"n0\"}", NULL, NULL, 201));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = call_json(cases[i].method, cases[i].path, cases[i].body, NULL, NULL, 422);
        const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "errors"), 0);
        cr_assert_not_null(e, "case %zu", i);
        cr_assert_str_eq(str(e, "field"), cases[i].field, "case %zu", i);
        cJSON_Delete(j);
    }
    cJSON *j = call_json("POST", "/v1/_batch",
                         "{\"ops\":[{\"method\":\"POST\",\"collection\":\"sessions\","
                         "\"body\":{\"id\":\"n2\",\"a\":1e400}}]}",
                         NULL, NULL, 200);
    const cJSON *res = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
    cr_assert_eq(num(res, "status"), 422, "%s", cJSON_PrintUnformatted(j));
    cJSON_Delete(j);
    cr_assert_eq(stat_of("applied_writes"), 1, "only n0 was stored");
    j = call_json("GET", "/v1/sessions/n0", NULL, NULL, NULL, 200);
    cr_assert_null(cJSON_GetObjectItem(j, "x"));
    cJSON_Delete(j);
    /* a large finite number is fine and reads back */
    j = call_json("POST", "/v1/sessions", "{\"id\":\"n3\",\"a\":1e300}", NULL, NULL, 201);
    cJSON_Delete(j);
    cr_assert_eq(ts_proc_alive(&S.proc), 1, "the server is up");
}

/* A NUL in a string, escaped or not, or an escape JSON does not have would
 * be cut short or read as NUL by the parser: refused, never stored short. */
Test(docs, nul_and_invalid_escapes_are_refused_not_cut, .init = start_logged_in,
     .fini = stop_server, .timeout = 30)
{
    static const char *const bodies[] = {
        "{\"id\":\"z1\",\"notes\":\"abc\\u0000def\"}",
        "{\"id\":\"z1\",\"notes\":\"\\uZZZZ\"}",
        "{\"id\":\"z1\",\"notes\":\"\\u12xy\"}",
        "{\"id\":\"z1\\u0000x\"}",
    };
    static const char *const patches[] = {
        "{\"notes\":\"abc\\u0000def\"}",
        "{\"notes\":\"\\uZZZZ\"}",
        "{\"notes\":\"\\u12xy\"}",
        "{\"a\\u0000b\":1}",
    };
    cJSON_Delete(call_json("POST", "/v1/sessions", "{\"id\":\"z0\",\"notes\":\"kept\"}", NULL,
                           NULL, 201));
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        cJSON_Delete(call_json("POST", "/v1/sessions", bodies[i], NULL, NULL, 400));
        cJSON_Delete(call_json("PATCH", "/v1/sessions/z0", patches[i], NULL, NULL, 400));
        char batch[256];
        snprintf(batch, sizeof batch,
                 "{\"ops\":[{\"method\":\"POST\",\"collection\":\"sessions\",\"body\":%s}]}",
                 bodies[i]);
        cJSON_Delete(call_json("POST", "/v1/_batch", batch, NULL, NULL, 400));
    }
    cr_assert_eq(stat_of("applied_writes"), 1, "only z0 was stored");
    cJSON *j = call_json("GET", "/v1/sessions/z0", NULL, NULL, NULL, 200);
    cr_assert_str_eq(str(j, "notes"), "kept");
    cJSON_Delete(j);
    cJSON_Delete(call_json("GET", "/v1/sessions/z1", NULL, NULL, NULL, 404));
}
