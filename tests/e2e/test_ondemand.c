/* test_ondemand.c — on-demand collections end to end (docs/CACHE.md
 * "On-demand collections"): a real therasyncd with `ondemand = { patients =
 * ... }` and --api pointing at a real clinic-api --demo-patients on
 * loopback. Every test counts the HTTP requests the engine made from
 * clinic-api's /_control/stats (doc_gets, list_requests, not_modified), so
 * a read served from memory, a background refresh and a coalesced fetch are
 * told apart exactly. Every wait is bounded in time. */
#include "../support/clinic.h"
#include "../support/engine.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#define DEMO "200" /* pat-0001..pat-0200; pat-00NN and pat-01NN share a phone */

static ts_clinic_t api;
static ts_engine_t engine;
static const char *clinic_extra[8];
static void *dealers[8]; /* extra clients, closed before the engine's context */
static int ndealers;

static int own_gets; /* GETs of documents the test made itself (server_doc) */

static void teardown(void)
{
    own_gets = 0;
    while (ndealers)
        zmq_close(dealers[--ndealers]);
    ts_engine_destroy(&engine);
    ts_clinic_destroy(&api);
}

TestSuite(ondemand, .fini = teardown, .timeout = 30);

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_file(const char *path, const char *text)
{
    cr_assert_eq(ts_file_write(path, text, strlen(text)), 0, "cannot write %s", path);
}

/* clinic-api --demo-patients 200 (+ extra flags), then therasyncd --api with
 * patients on demand (fresh_ms, max_stale_ms) and a selector without an
 * index next to the shipped patients_by_phone. */
static void start(int fresh_ms, int max_stale_ms, const char *extra_flag, const char *extra_value)
{
    int n = 0;
    clinic_extra[n++] = "--demo-patients";
    clinic_extra[n++] = DEMO;
    if (extra_flag) {
        clinic_extra[n++] = extra_flag;
        clinic_extra[n++] = extra_value;
    }
    clinic_extra[n] = NULL;
    cr_assert_eq(ts_clinic_start(&api, clinic_extra), 0, "clinic-api starts");

    static char pol[4200], cfg[4200], path[4300];
    snprintf(pol, sizeof pol, "%s/policies", api.dir);
    cr_assert_eq(mkdir(pol, 0700), 0);
    snprintf(path, sizeof path, "%s/selectors.lua", pol);
    write_file(path, "return {\n"
                     "  patients_by_phone = { collection = \"patients\", index = \"phone\",\n"
                     "                        order_by = { \"name\", \"asc\" }, limit = 10 },\n"
                     "  sessions_of = { collection = \"sessions\", index = \"patient_id\" },\n"
                     "  patients_all = { collection = \"patients\", order_by = { \"name\", \"asc\" },\n"
                     "                   limit = 10 },\n"
                     "}\n");
    snprintf(path, sizeof path, "%s/validate.lua", pol);
    write_file(path, "return {}\n");
    snprintf(path, sizeof path, "%s/conflict.lua", pol);
    write_file(path, "return {}\n");
    char text[256];
    snprintf(text, sizeof text,
             "ondemand = { patients = { fresh_ms = %d, max_stale_ms = %d, gc_ms = 600000 } }\n",
             fresh_ms, max_stale_ms);
    snprintf(cfg, sizeof cfg, "%s/ondemand.lua", api.dir);
    write_file(cfg, text);
    const char *args[] = {"--api", api.url, "--policies", pol, "--config", cfg, NULL};
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd starts");
}


/* A counter of clinic-api's, the test's own document GETs left out. */
static long long api_stat(const char *name)
{
    long long v = ts_clinic_stat(&api, name);
    cr_assert_geq(v, 0, "clinic-api stat %s", name);
    return strcmp(name, "doc_gets") ? v : v - own_gets;
}

/* Waits up to timeout_ms for api_stat(name) >= want; returns its last value. */
static long long wait_stat(const char *name, long long want, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    long long v = api_stat(name);
    while (v < want && now_ms() < end) {
        sleep_ms(20);
        v = api_stat(name);
    }
    return v;
}

static cJSON *rpc(const char *method, const char *params)
{
    cJSON *r = ts_rpc(&engine, method, params);
    cr_assert_not_null(r, "%s %s answered", method, params);
    return r;
}

/* get patients/id: the whole response (result or error). */
static cJSON *get(const char *id)
{
    char p[128];
    snprintf(p, sizeof p, "{\"collection\":\"patients\",\"id\":\"%s\"}", id);
    return rpc("get", p);
}

static cJSON *result(cJSON *r)
{
    cJSON *res = ts_rpc_result(r);
    cr_assert_not_null(res, "a result: %s", cJSON_PrintUnformatted(r));
    return res;
}

/* get that must succeed: the response (its result is checked). */
static cJSON *get_ok(const char *id)
{
    cJSON *r = get(id);
    result(r);
    return r;
}

static cJSON *query(const char *phone)
{
    char p[256];
    snprintf(p, sizeof p,
             "{\"collection\":\"patients\",\"selector\":\"patients_by_phone\","
             "\"params\":{\"phone\":\"%s\"}}",
             phone);
    return rpc("query", p);
}

static bool stale(cJSON *r) { return cJSON_IsTrue(cJSON_GetObjectItem(result(r), "stale")); }
static bool expired(cJSON *r) { return cJSON_IsTrue(cJSON_GetObjectItem(result(r), "expired")); }
static cJSON *doc(cJSON *r) { return cJSON_GetObjectItem(result(r), "doc"); }

static void assert_fresh_flag(cJSON *r)
{
    cJSON *s = cJSON_GetObjectItem(result(r), "stale");
    cr_assert(cJSON_IsFalse(s), "stale: false: %s", cJSON_PrintUnformatted(r));
    cr_assert_null(cJSON_GetObjectItem(result(r), "expired"));
}

static long long age(cJSON *r)
{
    cJSON *a = cJSON_GetObjectItem(result(r), "age_ms");
    cr_assert(cJSON_IsNumber(a), "age_ms: %s", cJSON_PrintUnformatted(r));
    return (long long)a->valuedouble;
}

static const char *str(const cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The server's document. */
static cJSON *server_doc(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/patients/%s", id);
    cJSON *d = NULL;
    own_gets++;
    long st = ts_clinic_call(&api, "GET", path, NULL, &d);
    cr_assert_eq(st, 200, "GET %s", path);
    return d;
}

/* PATCH at clinic-api directly (a change made by another client). */
static void server_patch(const char *id, const char *patch)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/patients/%s", id);
    cJSON *d = NULL;
    cr_assert_eq(ts_clinic_call(&api, "PATCH", path, patch, &d), 200, "PATCH %s", path);
    cJSON_Delete(d);
}

static void assert_same_doc(const cJSON *got, const cJSON *want)
{
    char *g = cJSON_PrintUnformatted(got), *w = cJSON_PrintUnformatted(want);
    cr_assert(cJSON_Compare(got, want, true), "engine's doc %s\n  server's %s", g, w);
    free(g);
    free(w);
}

/* The ids of a query's items, sorted, joined by commas. */
static void item_ids(cJSON *r, char *out, size_t len)
{
    const char *ids[16];
    int n = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(result(r), "items")) if (n < 16) ids[n++] =
        str(it, "id");
    for (int i = 1; i < n; i++) /* insertion sort: a handful */
        for (int j = i; j > 0 && strcmp(ids[j - 1], ids[j]) > 0; j--) {
            const char *t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    out[0] = '\0';
    size_t at = 0;
    for (int i = 0; i < n && at < len; i++)
        at += (size_t)snprintf(out + at, len - at, "%s%s", i ? "," : "", ids[i]);
}

static long long cache_metric(const char *name)
{
    cJSON *r = rpc("metrics", NULL);
    cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(result(r), "cache"), name);
    cr_assert(cJSON_IsNumber(v), "metrics.cache.%s", name);
    long long n = (long long)v->valuedouble;
    cJSON_Delete(r);
    return n;
}

static void *client(void)
{
    void *s = ts_engine_client(&engine);
    cr_assert_not_null(s);
    dealers[ndealers++] = s;
    return s;
}

static void send_raw(void *s, const char *text)
{
    cr_assert_geq(zmq_send(s, text, strlen(text), 0), 0);
}

/* One reply on s within timeout_ms, parsed. */
static cJSON *recv_reply(void *s, int timeout_ms)
{
    zmq_pollitem_t item = {.socket = s, .events = ZMQ_POLLIN};
    cr_assert_gt(zmq_poll(&item, 1, timeout_ms), 0, "a reply within %d ms", timeout_ms);
    char buf[65536];
    int n = zmq_recv(s, buf, sizeof buf - 1, 0);
    cr_assert_gt(n, 0);
    cr_assert_lt(n, (int)sizeof buf - 1);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    cr_assert_not_null(j, "a JSON reply: %s", buf);
    return j;
}

/* ---- 1. fresh ---------------------------------------------------------- */

Test(ondemand, fresh_reads_make_one_request)
{
    start(60000, 600000, NULL, NULL);
    cJSON *a = get_ok("pat-0001"), *b = get_ok("pat-0001");
    cr_assert_eq(api_stat("doc_gets"), 1, "two reads within fresh_ms: one GET");
    cJSON *want = server_doc("pat-0001");
    assert_same_doc(doc(a), want);
    assert_same_doc(doc(b), want);
    assert_fresh_flag(a);
    assert_fresh_flag(b);
    cr_assert_lt(age(b), 60000);
    cr_assert_eq(cache_metric("fetches"), 1);
    cr_assert_eq(cache_metric("fresh_answers"), 1, "the second read came from memory");
    cJSON_Delete(a), cJSON_Delete(b), cJSON_Delete(want);
}

/* The freshness fields go next to the document, never into it: a patient
 * whose own body holds "stale": false keeps it as the server has it. */
Test(ondemand, freshness_is_not_written_into_the_document)
{
    start(60000, 600000, NULL, NULL);
    cJSON *d = NULL;
    cr_assert_eq(ts_clinic_call(&api, "POST", "/v1/patients",
                                "{\"id\":\"pat-stale\",\"stale\":false,\"name\":\"Sam Stale\"}",
                                &d),
                 201);
    cJSON_Delete(d);
    cJSON *r = get_ok("pat-stale");
    cJSON *want = server_doc("pat-stale");
    assert_same_doc(doc(r), want);
    assert_fresh_flag(r);
    cJSON_Delete(r), cJSON_Delete(want);
}

/* ---- 2. stale while revalidate ------------------------------------------ */

Test(ondemand, stale_read_is_served_at_once_and_refreshed_once)
{
    start(300, 60000, NULL, NULL);
    cJSON_Delete(get_ok("pat-0001"));
    cr_assert_eq(api_stat("doc_gets"), 1);
    sleep_ms(400);

    int64_t t0 = now_ms();
    cJSON *r = get_ok("pat-0001");
    int64_t took = now_ms() - t0;
    cr_assert(stale(r), "older than fresh_ms: stale: %s", cJSON_PrintUnformatted(r));
    cr_assert_null(cJSON_GetObjectItem(result(r), "expired"));
    cr_assert_geq(age(r), 300);
    cr_assert_lt(took, 250, "answered at once, not after the refresh (%lld ms)", (long long)took);
    cJSON_Delete(r);
    /* one conditional request, answered 304 */
    cr_assert_eq(wait_stat("not_modified", 1, 3000), 1);
    sleep_ms(100);
    cr_assert_eq(api_stat("doc_gets"), 2, "exactly one background request");
    cr_assert_eq(api_stat("not_modified"), 1);
    r = get_ok("pat-0001");
    assert_fresh_flag(r);
    cr_assert_lt(age(r), 300);
    cJSON_Delete(r);
    cr_assert_eq(api_stat("doc_gets"), 2, "refreshed: fresh again, no request");

    /* the server changes it: the next stale read refreshes, the one after
     * has the new version */
    server_patch("pat-0001", "{\"name\":\"Changed Name\"}");
    sleep_ms(400);
    r = get_ok("pat-0001");
    cr_assert(stale(r));
    cJSON_Delete(r);
    cr_assert_eq(wait_stat("doc_gets", 3, 3000), 3);
    sleep_ms(100);
    r = get_ok("pat-0001");
    assert_fresh_flag(r);
    cr_assert_str_eq(str(doc(r), "name"), "Changed Name");
    cJSON *want = server_doc("pat-0001");
    assert_same_doc(doc(r), want);
    cr_assert_eq(api_stat("doc_gets"), 3);
    cr_assert_eq(api_stat("not_modified"), 1, "the changed version came as a 200");
    cJSON_Delete(r), cJSON_Delete(want);
}

/* ---- 3. expired while online -------------------------------------------- */

Test(ondemand, read_older_than_max_stale_waits_for_the_fetch)
{
    start(200, 400, NULL, NULL);
    cJSON_Delete(get_ok("pat-0003"));
    sleep_ms(600);
    server_patch("pat-0003", "{\"name\":\"Newer Name\"}");
    cr_assert_eq(ts_clinic_faults(&api, "{\"latency_ms\":300}"), 0);
    int64_t t0 = now_ms();
    cJSON *r = get_ok("pat-0003");
    int64_t took = now_ms() - t0;
    assert_fresh_flag(r);
    cr_assert_geq(took, 250, "the read waited for the fetch (%lld ms)", (long long)took);
    cr_assert_str_eq(str(doc(r), "name"), "Newer Name");
    cr_assert_eq(api_stat("doc_gets"), 2);
    cJSON_Delete(r);
}

/* ---- 4. offline -------------------------------------------------------- */

Test(ondemand, offline_serves_expired_and_reconnect_revalidates)
{
    start(200, 500, NULL, NULL);
    cJSON *first = get_ok("pat-0001");
    ts_clinic_stop(&api);
    sleep_ms(700);

    int64_t t0 = now_ms();
    cJSON *r = get_ok("pat-0001");
    int64_t took = now_ms() - t0;
    cr_assert(stale(r) && expired(r), "held, API gone: stale and expired: %s",
              cJSON_PrintUnformatted(r));
    cr_assert_lt(took, 2000, "promptly (%lld ms)", (long long)took);
    assert_same_doc(doc(r), doc(first));
    cr_assert_geq(age(r), 500);
    cJSON_Delete(r);

    t0 = now_ms();
    r = get("pat-0002");
    took = now_ms() - t0;
    cr_assert_eq(ts_rpc_error_code(r), -32009, "never read, API gone: unavailable: %s",
                 cJSON_PrintUnformatted(r));
    cr_assert_lt(took, 2000, "promptly (%lld ms)", (long long)took);
    cJSON_Delete(r);

    cr_assert_eq(ts_clinic_restart(&api, clinic_extra), 0, "clinic-api back on its port");
    r = get_ok("pat-0001"); /* served from what is held, and refreshed */
    cr_assert(stale(r));
    cJSON_Delete(r);
    bool fresh = false;
    for (int i = 0; i < 50 && !fresh; i++) {
        r = get_ok("pat-0001");
        fresh = !stale(r);
        if (fresh)
            assert_same_doc(doc(r), doc(first));
        cJSON_Delete(r);
        if (!fresh)
            sleep_ms(100);
    }
    cr_assert(fresh, "revalidated after the reconnect");
    cr_assert_geq(api_stat("doc_gets"), 1, "the new server was asked");
    r = get_ok("pat-0002");
    assert_fresh_flag(r);
    cJSON_Delete(r);
    cJSON_Delete(first);
}

/* ---- 5. coalescing ------------------------------------------------------ */

/* n identical requests pipelined over 4 clients; all replies, sorted by
 * nothing: every result must be the same. */
static void concurrent(const char *method, const char *params, int n)
{
    void *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = client();
    for (int i = 0; i < n; i++) {
        char text[512];
        snprintf(text, sizeof text, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\",\"params\":%s}",
                 i + 1, method, params);
        send_raw(c[i % 4], text);
    }
    char *first = NULL;
    for (int i = 0; i < n; i++) {
        cJSON *r = recv_reply(c[i % 4], 10000);
        char *res = cJSON_PrintUnformatted(result(r));
        if (!first)
            first = res;
        else {
            cr_assert_str_eq(res, first, "answer %d differs", i);
            free(res);
        }
        cJSON_Delete(r);
    }
    free(first);
}

Test(ondemand, concurrent_cold_reads_make_one_request)
{
    start(60000, 600000, "--latency-ms", "200");
    concurrent("get", "{\"collection\":\"patients\",\"id\":\"pat-0007\"}", 100);
    cr_assert_eq(api_stat("doc_gets"), 1, "100 concurrent cold gets: one GET");
    cr_assert_eq(cache_metric("coalesced_fetches"), 99);
    concurrent("query",
               "{\"collection\":\"patients\",\"selector\":\"patients_by_phone\","
               "\"params\":{\"phone\":\"+1-555-0108\"}}",
               50);
    cr_assert_eq(api_stat("list_requests"), 1, "50 concurrent cold queries: one listing");
    cr_assert_eq(api_stat("doc_gets"), 1);
    cJSON *r = query("+1-555-0108");
    char ids[256];
    item_ids(r, ids, sizeof ids);
    cr_assert_str_eq(ids, "pat-0008,pat-0108");
    cJSON_Delete(r);
}

/* ---- 6. queries on demand ----------------------------------------------- */

Test(ondemand, query_follows_a_patient_that_moved)
{
    start(300, 300, NULL, NULL);
    char ids[256];
    cJSON *r = query("+1-555-0101");
    assert_fresh_flag(r);
    item_ids(r, ids, sizeof ids);
    cr_assert_str_eq(ids, "pat-0001,pat-0101");
    cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(result(r), "items"))
    {
        cJSON *want = server_doc(str(it, "id"));
        assert_same_doc(it, want);
        cJSON_Delete(want);
    }
    cJSON_Delete(r);
    r = query("+1-555-0102");
    item_ids(r, ids, sizeof ids);
    cr_assert_str_eq(ids, "pat-0002,pat-0102");
    cJSON_Delete(r);
    cr_assert_eq(api_stat("list_requests"), 2);
    cr_assert_eq(api_stat("doc_gets"), 0);

    server_patch("pat-0101", "{\"phone\":\"+1-555-0102\"}");
    sleep_ms(400);
    r = query("+1-555-0101");
    assert_fresh_flag(r);
    item_ids(r, ids, sizeof ids);
    cr_assert_str_eq(ids, "pat-0001", "moved out of the old phone's list");
    cJSON_Delete(r);
    cr_assert_eq(api_stat("list_requests"), 3);
    cr_assert_eq(api_stat("doc_gets"), 1, "the document that dropped out was fetched alone");
    r = query("+1-555-0102");
    item_ids(r, ids, sizeof ids);
    cr_assert_str_eq(ids, "pat-0002,pat-0101,pat-0102", "and into the new phone's");
    cJSON_Delete(r);
}

/* ---- 7. local writes on top --------------------------------------------- */

Test(ondemand, local_write_shows_on_top_and_lands_stale)
{
    start(300, 600, NULL, NULL);
    cJSON_Delete(get_ok("pat-0003"));
    cJSON_Delete(get_ok("pat-0001"));
    int64_t t_fetched = now_ms();
    /* a slow server: the push of the write stays pending meanwhile */
    cr_assert_eq(ts_clinic_faults(&api, "{\"latency_ms\":1000}"), 0);
    cJSON *w = rpc("update", "{\"collection\":\"patients\",\"id\":\"pat-0001\","
                             "\"patch\":{\"name\":\"Local Name\"}}");
    result(w);
    cJSON_Delete(w);
    int64_t t0 = now_ms();
    cJSON *r = get_ok("pat-0001");
    cr_assert_lt(now_ms() - t0, 500, "answered from what is held");
    cr_assert_str_eq(str(doc(r), "name"), "Local Name", "the local change on top");
    cr_assert_str_eq(str(cJSON_GetObjectItem(result(r), "sync"), "state"), "pending");
    cr_assert(stale(r), "written locally since the fetch: stale");
    cJSON_Delete(r);

    /* a fetch out when a write to the collection comes never lands fresh */
    int64_t wait = 700 - (now_ms() - t_fetched);
    if (wait > 0)
        sleep_ms((int)wait);
    void *c2 = client();
    send_raw(c2, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get\","
                 "\"params\":{\"collection\":\"patients\",\"id\":\"pat-0003\"}}");
    sleep_ms(300); /* its fetch is out (the server answers after 1 s) */
    w = rpc("update", "{\"collection\":\"patients\",\"id\":\"pat-0003\","
                      "\"patch\":{\"name\":\"Local Three\"}}");
    result(w);
    cJSON_Delete(w);
    r = recv_reply(c2, 5000);
    cr_assert(stale(r), "the fetch was out when the write came: %s", cJSON_PrintUnformatted(r));
    cr_assert_str_eq(str(doc(r), "name"), "Local Three");
    cJSON_Delete(r);
}

/* ---- 8. faults --------------------------------------------------------- */

Test(ondemand, server_faults)
{
    start(200, 400, NULL, NULL);
    cJSON_Delete(get_ok("pat-0001"));

    cr_assert_eq(ts_clinic_faults(&api, "{\"fail_rate\":1,\"status\":500}"), 0);
    int64_t t0 = now_ms();
    cJSON *r = get("pat-0002");
    cr_assert_eq(ts_rpc_error_code(r), -32009, "500: unavailable: %s", cJSON_PrintUnformatted(r));
    const char *msg = str(cJSON_GetObjectItem(r, "error"), "message");
    cr_assert(strstr(msg, "500") || strstr(msg, "server"), "the message names the failure: %s",
              msg);
    cr_assert_lt(now_ms() - t0, 3000);
    cJSON_Delete(r);
    sleep_ms(500);
    r = get_ok("pat-0001");
    cr_assert(stale(r) && expired(r), "held, 500: stale, expired: %s", cJSON_PrintUnformatted(r));
    cJSON_Delete(r);

    cr_assert_eq(ts_clinic_faults(&api, "{\"garbage_rate\":1}"), 0);
    r = get("pat-0004");
    cr_assert_eq(ts_rpc_error_code(r), -32009, "garbage: unavailable: %s",
                 cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    sleep_ms(500);
    r = get_ok("pat-0001");
    cr_assert(stale(r) && expired(r), "held, garbage: stale, expired: %s",
              cJSON_PrintUnformatted(r));
    cJSON_Delete(r);

    cr_assert_eq(ts_clinic_faults(&api, "{}"), 0);
    long long before = api_stat("doc_gets");
    r = get("pat-9999");
    cr_assert_eq(ts_rpc_error_code(r), -32001, "404: not_found: %s", cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    cr_assert_eq(api_stat("doc_gets"), before + 1);

    cr_assert_eq(ts_clinic_faults(&api, "{\"latency_ms\":1000}"), 0);
    t0 = now_ms();
    r = get_ok("pat-0005");
    int64_t took = now_ms() - t0;
    assert_fresh_flag(r);
    cr_assert_geq(took, 950, "waited for the slow server (%lld ms)", (long long)took);
    cr_assert_lt(took, 4000);
    cr_assert_str_eq(str(doc(r), "id"), "pat-0005");
    cJSON_Delete(r);
}

/* ---- 9. invalidate ----------------------------------------------------- */

Test(ondemand, invalidate_refetches_what_is_held)
{
    start(60000, 600000, NULL, NULL);
    cJSON_Delete(get_ok("pat-0001"));
    cJSON_Delete(get_ok("pat-0002"));
    cJSON_Delete(query("+1-555-0103"));
    long long gets = api_stat("doc_gets"), lists = api_stat("list_requests");
    cr_assert_eq(gets, 2);
    cr_assert_eq(lists, 1);
    cJSON *r = rpc("invalidate", "{\"collection\":\"patients\"}");
    cJSON *n = cJSON_GetObjectItem(result(r), "invalidated");
    cr_assert(cJSON_IsNumber(n) && n->valueint == 3, "three questions held: %s",
              cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    cr_assert_eq(wait_stat("doc_gets", gets + 2, 3000), gets + 2, "both documents refetched");
    cr_assert_eq(wait_stat("list_requests", lists + 1, 3000), lists + 1, "the list refetched");
    sleep_ms(100);
    r = get_ok("pat-0001");
    assert_fresh_flag(r);
    cJSON_Delete(r);
    r = query("+1-555-0103");
    assert_fresh_flag(r);
    cJSON_Delete(r);
    sleep_ms(100);
    cr_assert_eq(api_stat("doc_gets"), gets + 2, "served fresh: no further request");
    cr_assert_eq(api_stat("list_requests"), lists + 1);
}

/* ---- 10. questions the server cannot be asked --------------------------- */

Test(ondemand, queries_without_an_index_are_refused)
{
    start(60000, 600000, NULL, NULL);
    cJSON *r = rpc("query", "{\"collection\":\"patients\",\"selector\":"
                            "{\"where\":{\"phone\":\"+1-555-0101\"}}}");
    cr_assert_eq(ts_rpc_error_code(r), -32602, "built-in query: %s", cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    r = rpc("query", "{\"collection\":\"patients\",\"selector\":\"patients_all\"}");
    cr_assert_eq(ts_rpc_error_code(r), -32602, "no index: %s", cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    r = rpc("query", "{\"collection\":\"patients\",\"selector\":\"patients_by_phone\","
                     "\"params\":{}}");
    cr_assert_eq(ts_rpc_error_code(r), -32602, "no index param: %s", cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    /* a selector of another collection is refused before asking the server */
    r = rpc("query", "{\"collection\":\"patients\",\"selector\":\"sessions_of\","
                     "\"params\":{\"patient_id\":\"pat-0001\"}}");
    cr_assert_eq(ts_rpc_error_code(r), -32602, "another collection's selector: %s",
                 cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    cr_assert_eq(api_stat("list_requests"), 0);
    cr_assert_eq(api_stat("doc_gets"), 0);
}
