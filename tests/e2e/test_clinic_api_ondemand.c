/* End-to-end tests of what clinic-api offers on-demand collections
 * (docs/CLINIC_API.md): the demo patients, the filtered listing with its
 * cursor, ETags and 304s with their counters, and fault injection on these
 * reads. A real server on a free loopback port per test, driven over HTTP. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/http.h"
#include "../support/proc.h"
#include "therasync/util.h"

static struct {
    ts_proc_t proc;
    char *dir;
    char base[64];
    char auth[128]; /* "Authorization: Bearer ..." */
} S;

/* ---- server and client helpers ------------------------------------------ */

/* Starts clinic-api on S.dir/api.db with extra flags (NULL-terminated). */
static void spawn(const char *const extra[])
{
    char db[4200];
    snprintf(db, sizeof db, "%s/api.db", S.dir);
    const char *args[24] = {"--listen", "127.0.0.1:0", "--db", db};
    size_t n = 4;
    for (size_t i = 0; extra && extra[i] && n < 23; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    cr_assert_eq(ts_proc_spawn(&S.proc, S.dir, "clinic-api", args), 0, "spawn clinic-api");
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&S.proc, "listening on 127.0.0.1:", 10000, line, sizeof line), 0,
                 "clinic-api did not report listening (log %s)", S.proc.log_path);
    long port = strtol(strstr(line, "listening on 127.0.0.1:") + 23, NULL, 10);
    cr_assert_gt(port, 0);
    snprintf(S.base, sizeof S.base, "http://127.0.0.1:%ld", port);
}

static void stop(void)
{
    if (S.proc.pid)
        cr_expect_eq(ts_proc_stop(&S.proc, 5000), 0, "clinic-api exits 0 on SIGTERM");
    S.proc.pid = 0;
}

static void cleanup(void)
{
    stop();
    if (S.dir) {
        ts_rmtree(S.dir);
        free(S.dir);
    }
    memset(&S, 0, sizeof S);
}

/* An HTTP request to S with the bearer token and one optional header. */
static long req(const char *method, const char *path, const char *body, const char *hdr,
                ts_http_resp_t *r)
{
    char url[4096];
    snprintf(url, sizeof url, "%s%s", S.base, path);
    const char *h[3] = {S.auth, hdr, NULL};
    cr_assert_eq(ts_http(method, url, h, body, 10000, r), 0, "%s %s: transport error %d", method,
                 path, r->curl_code);
    return r->status;
}

/* req() expecting status want; returns the parsed body (caller deletes). */
static cJSON *req_json(const char *method, const char *path, const char *body, const char *hdr,
                       long want)
{
    ts_http_resp_t r;
    long st = req(method, path, body, hdr, &r);
    cr_assert_eq(st, want, "%s %s: status %ld, want %ld: %s", method, path, st, want, r.body);
    cJSON *j = cJSON_Parse(r.body);
    cr_assert_not_null(j, "%s %s: not JSON: %s", method, path, r.body);
    ts_http_free(&r);
    return j;
}

static void login(void)
{
    char url[128];
    snprintf(url, sizeof url, "%s/oauth/token", S.base);
    const char *h[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    ts_http_resp_t r;
    cr_assert_eq(ts_http("POST", url, h,
                         "grant_type=client_credentials&client_id=therasync&"
                         "client_secret=dev-secret",
                         5000, &r),
                 0);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *t = cJSON_GetObjectItem(j, "access_token");
    cr_assert(cJSON_IsString(t), "token: %s", r.body);
    snprintf(S.auth, sizeof S.auth, "Authorization: Bearer %s", t->valuestring);
    cJSON_Delete(j);
    ts_http_free(&r);
}

static void start_with(const char *const extra[])
{
    memset(&S, 0, sizeof S);
    S.dir = ts_tmpdir("clinic-ondemand-test");
    cr_assert_not_null(S.dir);
    spawn(extra);
    login();
}

static void start_plain(void)
{
    start_with(NULL);
}

static long long stat_of(const char *name)
{
    cJSON *j = req_json("GET", "/_control/stats", NULL, NULL, 200);
    const cJSON *v = cJSON_GetObjectItem(j, name);
    cr_assert(cJSON_IsNumber(v), "no counter %s", name);
    long long n = (long long)v->valuedouble;
    cJSON_Delete(j);
    return n;
}

static void create(const char *coll, const char *doc)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/%s", coll);
    cJSON_Delete(req_json("POST", path, doc, NULL, 201));
}

/* The ids of a page's items, comma-joined, into out. */
static void ids_of(const cJSON *page, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(page, "items"))
    {
        const cJSON *id = cJSON_GetObjectItem(it, "id");
        cr_assert(cJSON_IsString(id));
        int n = snprintf(out + o, len - o, "%s%s", o ? "," : "", id->valuestring);
        cr_assert(n > 0 && (size_t)n < len - o, "ids overflow");
        o += (size_t)n;
    }
}

/* GET path expecting 200; asserts the ids of its items. */
static void expect_ids(const char *path, const char *ids)
{
    cJSON *j = req_json("GET", path, NULL, NULL, 200);
    char got[2048];
    ids_of(j, got, sizeof got);
    cr_assert_str_eq(got, ids, "%s", path);
    cJSON_Delete(j);
}

/* GET path expecting 200; asserts its ids, has_more and cursor (null at the end). */
static void expect_page(const char *path, const char *ids, bool more)
{
    cJSON *j = req_json("GET", path, NULL, NULL, 200);
    char got[2048];
    ids_of(j, got, sizeof got);
    cr_assert_str_eq(got, ids, "%s", path);
    cr_assert_eq(cJSON_IsTrue(cJSON_GetObjectItem(j, "has_more")), more, "%s has_more", path);
    const cJSON *cur = cJSON_GetObjectItem(j, "cursor");
    cr_assert(more ? cJSON_IsString(cur) : cJSON_IsNull(cur), "%s cursor", path);
    cJSON_Delete(j);
}

/* ---- demo patients ------------------------------------------------------------ */

Test(demo, patients_are_served_by_default_and_seeded_once, .fini = cleanup, .timeout = 30)
{
    const char *seed[] = {"--demo-patients", "5", NULL};
    start_with(seed);
    cJSON *p = req_json("GET", "/v1/patients/pat-0003", NULL, NULL, 200);
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(p, "name")));
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(p, "date_of_birth")));
    cr_assert(strstr(cJSON_GetObjectItem(p, "phone")->valuestring, "555-01"), "fictional phone");
    cJSON_Delete(p);
    cJSON *d = req_json("GET", "/v1/patients/digest", NULL, NULL, 200);
    cr_assert_eq(cJSON_GetObjectItem(d, "count")->valueint, 5);
    cJSON_Delete(d);
    cJSON_Delete(req_json("GET", "/v1/sessions?limit=1", NULL, NULL, 200));
    cJSON_Delete(req_json("GET", "/v1/consultations?limit=1", NULL, NULL, 200));
    ts_http_resp_t r;
    cr_assert_eq(req("DELETE", "/v1/patients/pat-0002", NULL, NULL, &r), 204);
    ts_http_free(&r);

    /* Again with the flag: nothing added, the deleted one stays deleted. */
    stop();
    spawn(seed);
    login();
    cr_assert_eq(stat_of("applied_writes"), 0, "a second seeding writes nothing");
    d = req_json("GET", "/v1/patients/digest", NULL, NULL, 200);
    cr_assert_eq(cJSON_GetObjectItem(d, "count")->valueint, 4);
    cJSON_Delete(d);
    cr_assert_eq(req("GET", "/v1/patients/pat-0002", NULL, NULL, &r), 404);
    ts_http_free(&r);
    p = req_json("GET", "/v1/patients/pat-0005", NULL, NULL, 200);
    cr_assert_eq(cJSON_GetObjectItem(p, "version")->valueint, 1);
    cJSON_Delete(p);

    /* Seeding a collection that is not served is refused. */
    stop();
    const char *bad[] = {"--demo-patients", "3", "--collections", "sessions", NULL};
    char db[4200];
    snprintf(db, sizeof db, "%s/api.db", S.dir);
    const char *args[] = {"--listen", "127.0.0.1:0", "--db", db, bad[0], bad[1], bad[2], bad[3],
                          NULL};
    ts_proc_t q;
    cr_assert_eq(ts_proc_spawn(&q, S.dir, "clinic-api", args), 0);
    cr_assert_eq(ts_proc_wait_exit(&q, 10000), 2);
    cr_assert_eq(ts_proc_wait_line(&q, "--demo-patients needs patients", 5000, NULL, 0), 0);
}

/* ---- the filtered listing ------------------------------------------------------- */

TestSuite(filter, .init = start_plain, .fini = cleanup, .timeout = 30);

Test(filter, fields_are_anded_and_compared_by_type)
{
    create("sessions", "{\"id\":\"s-3\",\"patient_id\":\"p-1\",\"duration_min\":50,"
                       "\"status\":\"done\"}");
    create("sessions", "{\"id\":\"s-1\",\"patient_id\":\"p-1\",\"duration_min\":\"50\"}");
    create("sessions", "{\"id\":\"s-2\",\"patient_id\":\"p-2\",\"duration_min\":50}");
    create("sessions", "{\"id\":\"s-4\",\"patient_id\":\"p-1\",\"duration_min\":50.5,"
                       "\"status\":\"done\",\"paid\":true,\"room\":null}");
    create("sessions", "{\"id\":\"s-5\",\"patient_id\":\"p-1\",\"note\":\"a \\\"b\\\" & c=d\","
                       "\"nested\":{\"patient_id\":\"p-9\"},\"city\":\"Z\\u00fcrich\"}");
    create("sessions", "{\"id\":\"s-6\",\"patient_id\":\"p-1\"}");
    ts_http_resp_t r;
    cr_assert_eq(req("DELETE", "/v1/sessions/s-6", NULL, NULL, &r), 204);
    ts_http_free(&r);

    expect_page("/v1/sessions?patient_id=p-1", "s-1,s-3,s-4,s-5", false);
    expect_page("/v1/sessions?patient_id=p-1&status=done", "s-3,s-4", false);
    expect_page("/v1/sessions?duration_min=50", "s-1,s-2,s-3", false);
    expect_page("/v1/sessions?duration_min=50.5", "s-4", false);
    expect_page("/v1/sessions?duration_min=50.0", "", false);
    expect_page("/v1/sessions?paid=true&room=null", "s-4", false);
    expect_page("/v1/sessions?patient_id=p-9", "", false); /* top level only */
    expect_page("/v1/sessions?nested=x", "", false);
    /* Decoding: %XX, + as a space, & and = inside a value, UTF-8. */
    expect_page("/v1/sessions?note=a+%22b%22+%26+c%3Dd", "s-5", false);
    expect_page("/v1/sessions?note=a%20%22b%22%20%26%20c%3dd", "s-5", false);
    expect_page("/v1/sessions?city=Z%C3%BCrich", "s-5", false);
    expect_page("/v1/sessions?%63ity=Z%C3%BCrich", "s-5", false);
    expect_page("/v1/sessions?patient_id=p-1&patient_id=p-2", "", false);
    expect_page("/v1/sessions?nosuchfield=1", "", false);
    /* A filtered listing of everything live: an empty cursor and no filter. */
    expect_page("/v1/sessions?cursor=", "s-1,s-2,s-3,s-4,s-5", false);
    cr_assert_eq(stat_of("list_requests"), 15);
}

Test(filter, pages_follow_the_cursor_in_id_order)
{
    /* 25 matching documents created out of id order, 10 that do not match. */
    for (int i = 0; i < 35; i++) {
        int k = (i * 8) % 35; /* 8 and 35 coprime: each k once */
        char doc[128];
        snprintf(doc, sizeof doc, "{\"id\":\"d-%02d\",\"patient_id\":\"%s\"}", k,
                 k < 25 ? "p-1" : "p-2");
        create("consultations", doc);
    }
    char want[512] = "", got[512] = "", path[256] = "/v1/consultations?patient_id=p-1&limit=10";
    for (int k = 0; k < 25; k++) {
        size_t o = strlen(want);
        snprintf(want + o, sizeof want - o, "%sd-%02d", k ? "," : "", k);
    }
    int pages = 0;
    for (;;) {
        cr_assert_lt(pages, 5, "too many pages");
        cJSON *j = req_json("GET", path, NULL, NULL, 200);
        char ids[512];
        ids_of(j, ids, sizeof ids);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "items")), pages < 2 ? 10 : 5);
        size_t o = strlen(got);
        cr_assert_lt(o + 1 + strlen(ids), sizeof got);
        if (o)
            got[o++] = ',';
        memcpy(got + o, ids, strlen(ids) + 1);
        pages++;
        const cJSON *cur = cJSON_GetObjectItem(j, "cursor");
        bool more = cJSON_IsTrue(cJSON_GetObjectItem(j, "has_more"));
        if (!more) {
            cr_assert(cJSON_IsNull(cur), "no cursor at the end");
            cJSON_Delete(j);
            break;
        }
        cr_assert(cJSON_IsString(cur));
        snprintf(path, sizeof path, "/v1/consultations?patient_id=p-1&limit=10&cursor=%s",
                 cur->valuestring);
        if (pages == 1) /* a document created behind the cursor is not seen again */
            create("consultations", "{\"id\":\"d-00a\",\"patient_id\":\"p-1\"}");
        cJSON_Delete(j);
    }
    cr_assert_eq(pages, 3);
    cr_assert_str_eq(got, want);
    /* An exact last page: has_more false, no cursor. */
    expect_page("/v1/consultations?patient_id=p-2&limit=10", "d-25,d-26,d-27,d-28,d-29,d-30,"
                                                            "d-31,d-32,d-33,d-34",
                false);
    expect_page("/v1/consultations?patient_id=p-2&limit=9",
                "d-25,d-26,d-27,d-28,d-29,d-30,d-31,d-32,d-33", true);
}

Test(filter, the_change_listing_keeps_its_meaning)
{
    create("sessions", "{\"id\":\"b\",\"patient_id\":\"p-1\"}");
    create("sessions", "{\"id\":\"a\",\"patient_id\":\"p-1\"}");
    /* since / limit alone: cursor order, numeric cursors, no ETag. */
    ts_http_resp_t r;
    cr_assert_eq(req("GET", "/v1/sessions?limit=1", NULL, NULL, &r), 200);
    cJSON *j = cJSON_Parse(r.body);
    char ids[64];
    ids_of(j, ids, sizeof ids);
    cr_assert_str_eq(ids, "b", "the change listing is in cursor order");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "cursor")->valuestring, "1");
    cJSON_Delete(j);
    char *etag = ts_http_header(&r, "ETag");
    cr_assert_null(etag, "no ETag on the change listing");
    ts_http_free(&r);
    expect_ids("/v1/sessions?since=1&limit=5", "a");
    expect_ids("/v1/sessions?since=1&timeout=3", "a");
    expect_ids("/v1/sessions?since=&limit=5", "b,a");
    expect_page("/v1/sessions?patient_id=p-1", "a,b", false);
    cr_assert_eq(stat_of("list_requests"), 1, "only the filtered one counts");
}

Test(filter, malformed_queries_get_400_and_the_server_lives_on)
{
    create("sessions", "{\"id\":\"s-1\",\"patient_id\":\"p-1\"}");
    char longv[1200] = "/v1/sessions?patient_id=";
    size_t o = strlen(longv);
    memset(longv + o, 'x', 1025);
    longv[o + 1025] = '\0';
    char many[600] = "/v1/sessions?";
    for (int i = 0; i < 33; i++) {
        o = strlen(many);
        snprintf(many + o, sizeof many - o, "%sf%d=1", i ? "&" : "", i);
    }
    const char *bad[] = {
        "/v1/sessions?patient_id=p-1&limit=0",
        "/v1/sessions?patient_id=p-1&limit=1001",
        "/v1/sessions?patient_id=p-1&limit=ten",
        "/v1/sessions?patient_id=p-1&limit=",
        "/v1/sessions?cursor=s-1",
        "/v1/sessions?cursor=c1.has%20space",
        "/v1/sessions?patient_id=%zz",
        "/v1/sessions?patient_id=p%2",
        "/v1/sessions?patient_id=p%",
        "/v1/sessions?patient_id=p%00x",
        "/v1/sessions?%zz=1",
        "/v1/sessions?=p-1",
        "/v1/sessions?since=0&patient_id=p-1",
        "/v1/sessions?since=0&cursor=",
        "/v1/sessions?since=%zz",
        longv,
        many,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *j = req_json("GET", bad[i], NULL, NULL, 400);
        const cJSON *errs = cJSON_GetObjectItem(j, "errors");
        cr_assert(cJSON_IsArray(errs) && cJSON_GetArraySize(errs) == 1, "%s", bad[i]);
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 0), "message")));
        cJSON_Delete(j);
    }
    /* Limits that are fine, and a value of exactly 1 KiB. */
    expect_page("/v1/sessions?patient_id=p-1&limit=1000", "s-1", false);
    longv[strlen(longv) - 1] = '\0';
    expect_page(longv, "", false);
    expect_page("/v1/sessions?patient_id=p-1&&", "s-1", false);
    cr_assert(ts_proc_alive(&S.proc));
}

/* ---- ETags and 304 ---------------------------------------------------------------- */

TestSuite(etag, .init = start_plain, .fini = cleanup, .timeout = 30);

/* GET path with If-None-Match: inm (NULL: none); returns the status and
 * the ETag (malloc'd) in *etag; asserts a 304 has no body. */
static long conditional(const char *path, const char *inm, char **etag)
{
    char hdr[256];
    if (inm)
        snprintf(hdr, sizeof hdr, "If-None-Match: %s", inm);
    ts_http_resp_t r;
    long st = req("GET", path, NULL, inm ? hdr : NULL, &r);
    *etag = ts_http_header(&r, "ETag");
    if (st == 304)
        cr_assert_eq(r.len, 0, "a 304 has no body: %s", r.body);
    ts_http_free(&r);
    return st;
}

Test(etag, a_document_answers_304_while_its_version_holds)
{
    create("sessions", "{\"id\":\"s-1\",\"patient_id\":\"p-1\"}");
    char *e = NULL;
    cr_assert_eq(conditional("/v1/sessions/s-1", NULL, &e), 200);
    cr_assert_str_eq(e, "\"1\"", "the ETag is the quoted version");
    free(e);
    const char *match[] = {"\"1\"", "W/\"1\"", "\"7\", \"1\"", "\"x\",W/\"1\"", "*"};
    for (size_t i = 0; i < sizeof match / sizeof match[0]; i++) {
        cr_assert_eq(conditional("/v1/sessions/s-1", match[i], &e), 304, "%s", match[i]);
        cr_assert_str_eq(e, "\"1\"", "a 304 carries the ETag");
        free(e);
    }
    const char *miss[] = {"\"2\"", "1", "\"1", "W/1", ""};
    for (size_t i = 0; i < sizeof miss / sizeof miss[0]; i++) {
        cr_assert_eq(conditional("/v1/sessions/s-1", miss[i], &e), 200, "%s", miss[i]);
        free(e);
    }
    ts_http_resp_t r;
    cr_assert_eq(req("PATCH", "/v1/sessions/s-1", "{\"room\":\"B\"}", NULL, &r), 200);
    ts_http_free(&r);
    cr_assert_eq(conditional("/v1/sessions/s-1", "\"1\"", &e), 200, "a change ends the 304s");
    cr_assert_str_eq(e, "\"2\"");
    free(e);
    /* The ETag is what If-Match takes. */
    cr_assert_eq(req("PATCH", "/v1/sessions/s-1", "{\"room\":\"C\"}", "If-Match: \"2\"", &r), 200);
    ts_http_free(&r);
    cr_assert_eq(conditional("/v1/sessions/nope", "*", &e), 404, "* on nothing: 404");
    free(e);
    cr_assert_eq(req("DELETE", "/v1/sessions/s-1", NULL, NULL, &r), 204);
    ts_http_free(&r);
    cr_assert_eq(conditional("/v1/sessions/s-1", "\"3\"", &e), 404, "a tombstone is not found");
    free(e);
    cr_assert_eq(stat_of("not_modified"), 5);
    cr_assert_eq(stat_of("doc_gets"), 14);
    cr_assert_eq(stat_of("list_requests"), 0);
}

Test(etag, a_filtered_page_answers_304_until_it_changes)
{
    create("sessions", "{\"id\":\"s-1\",\"patient_id\":\"p-1\"}");
    create("sessions", "{\"id\":\"s-2\",\"patient_id\":\"p-2\"}");
    const char *path = "/v1/sessions?patient_id=p-1";
    char *e1 = NULL, *e2 = NULL, *e;
    cr_assert_eq(conditional(path, NULL, &e1), 200);
    cr_assert_not_null(e1);
    cr_assert_eq(strlen(e1), 66, "a quoted SHA-256: %s", e1);
    cr_assert_eq(conditional(path, NULL, &e2), 200);
    cr_assert_str_eq(e1, e2, "the same page, the same ETag");
    free(e2);
    cr_assert_eq(conditional(path, e1, &e), 304);
    cr_assert_str_eq(e, e1);
    free(e);
    /* Another document changing leaves the page alone; this one does not. */
    ts_http_resp_t r;
    cr_assert_eq(req("PATCH", "/v1/sessions/s-2", "{\"room\":\"B\"}", NULL, &r), 200);
    ts_http_free(&r);
    cr_assert_eq(conditional(path, e1, &e), 304);
    free(e);
    cr_assert_eq(req("PATCH", "/v1/sessions/s-1", "{\"room\":\"B\"}", NULL, &r), 200);
    ts_http_free(&r);
    cr_assert_eq(conditional(path, e1, &e), 200);
    cr_assert_str_neq(e, e1);
    free(e);
    free(e1);
    cr_assert_eq(stat_of("not_modified"), 2);
    cr_assert_eq(stat_of("list_requests"), 5);
    cr_assert_eq(stat_of("doc_gets"), 0);
}

/* ---- faults on on-demand reads ------------------------------------------------------ */

TestSuite(faults, .init = start_plain, .fini = cleanup, .timeout = 30);

static void set_faults(const char *json)
{
    cJSON_Delete(req_json("POST", "/_control/faults", json, NULL, 200));
}

Test(faults, apply_to_document_and_filtered_reads)
{
    create("patients", "{\"id\":\"pat-0001\",\"name\":\"Alex Example\"}");
    const char *doc = "/v1/patients/pat-0001", *list = "/v1/patients?name=Alex+Example";
    ts_http_resp_t r;

    set_faults("{\"fail_rate\":1,\"status\":500}");
    cr_assert_eq(req("GET", doc, NULL, NULL, &r), 500);
    cr_assert(strstr(r.body, "injected_fault"));
    ts_http_free(&r);
    set_faults("{\"fail_rate\":1,\"status\":404}");
    cr_assert_eq(req("GET", list, NULL, NULL, &r), 404);
    ts_http_free(&r);
    cr_assert_eq(stat_of("faults_failed"), 2);

    set_faults("{\"latency_ms\":300}");
    cr_assert_eq(req("GET", list, NULL, NULL, &r), 200);
    cr_assert_geq(r.seconds, 0.29, "slow: %.3f s", r.seconds);
    ts_http_free(&r);

    set_faults("{\"garbage_rate\":1}");
    cr_assert_eq(req("GET", doc, NULL, NULL, &r), 200);
    cr_assert_null(cJSON_Parse(r.body), "garbage is not JSON: %s", r.body);
    char *etag = ts_http_header(&r, "ETag");
    cr_assert_null(etag, "garbage has no ETag");
    ts_http_free(&r);
    cr_assert_eq(req("GET", list, NULL, NULL, &r), 200);
    cr_assert_null(cJSON_Parse(r.body));
    ts_http_free(&r);
    /* Writes are never garbled: a 200 would say applied. */
    create("patients", "{\"id\":\"pat-0002\"}");
    cr_assert_eq(stat_of("faults_garbled"), 2);
    cJSON *f = req_json("GET", "/_control/faults", NULL, NULL, 200);
    cr_assert_eq(cJSON_GetObjectItem(f, "garbage_rate")->valuedouble, 1);
    cJSON_Delete(f);
    cJSON_Delete(req_json("POST", "/_control/faults", "{\"garbage_rate\":2}", NULL, 422));

    set_faults("{}");
    cJSON_Delete(req_json("GET", doc, NULL, NULL, 200));
    cJSON_Delete(req_json("GET", list, NULL, NULL, 200));
    cr_assert_eq(stat_of("doc_gets"), 1, "faulted requests never reached the handler");
    cr_assert_eq(stat_of("list_requests"), 2);
}
