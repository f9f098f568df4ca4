/* End-to-end tests of the API actor (src/api/api.c) against a real
 * clinic-api on a free loopback port, and against a tiny fake HTTP server
 * thread for answers clinic-api never gives (wrong content type, truncated
 * or non-JSON bodies, a server that accepts and never answers).
 *
 * They double as examples: start the actor with ts_api_start(), bind
 * TS_INPROC_API_RESULTS, push requests with ts_api_send(), read results. */
#include <arpa/inet.h>
#include <cJSON.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "msgs/msgs.h"
#include "../support/http.h"
#include "../support/proc.h"
#include "therasync/api.h"
#include "therasync/util.h"

static struct {
    ts_proc_t proc;
    char *dir;
    char db[4200];
    int port;
    char base[64];
    void *zctx;
    ts_actor_t *api;
    void *push;    /* to the actor */
    void *results; /* PULL bound at TS_INPROC_API_RESULTS */
} S;

/* ---- clinic-api ------------------------------------------------------------ */

static void server_spawn(int port, const char *const extra[])
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *args[32] = {"--listen", listen, "--db", S.db, "--heartbeat-ms", "300"};
    size_t n = 6;
    for (size_t i = 0; extra && extra[i] && n < 31; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    cr_assert_eq(ts_proc_spawn(&S.proc, S.dir, "clinic-api", args), 0, "spawn clinic-api");
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&S.proc, "listening on 127.0.0.1:", 10000, line, sizeof line),
                 0, "clinic-api did not report listening (log %s)", S.proc.log_path);
    const char *p = strstr(line, "listening on 127.0.0.1:") + strlen("listening on 127.0.0.1:");
    S.port = (int)strtol(p, NULL, 10);
    cr_assert_gt(S.port, 0);
    snprintf(S.base, sizeof S.base, "http://127.0.0.1:%d", S.port);
}

static void server_start(const char *const extra[])
{
    S.dir = ts_tmpdir("api-actor-test");
    cr_assert_not_null(S.dir);
    snprintf(S.db, sizeof S.db, "%s/api.db", S.dir);
    server_spawn(0, extra);
}

/* POST /_control/faults with the given JSON ("{}" clears). */
static void faults(const char *json)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_control/faults", S.base);
    ts_http_resp_t r;
    const char *h[] = {"Content-Type: application/json", NULL};
    cr_assert_eq(ts_http("POST", url, h, json, 5000, &r), 0);
    cr_assert_eq(r.status, 200, "faults %s: %ld %s", json, r.status, r.body);
    ts_http_free(&r);
}

/* One number of GET /_control/stats. */
static long long stat_of(const char *name)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_control/stats", S.base);
    ts_http_resp_t r;
    cr_assert_eq(ts_http("GET", url, NULL, NULL, 5000, &r), 0);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *v = cJSON_GetObjectItem(j, name);
    cr_assert(cJSON_IsNumber(v), "stats has no %s: %s", name, r.body);
    long long n = (long long)v->valuedouble;
    cJSON_Delete(j);
    ts_http_free(&r);
    return n;
}

/* ---- the actor ------------------------------------------------------------- */

static ts_api_opts_t default_opts(void)
{
    return (ts_api_opts_t){.base_url = S.base, .client_id = "therasync",
                           .client_secret = "dev-secret", .timeout_ms = 5000,
                           .backoff_base_ms = 20, .backoff_cap_ms = 200, .max_attempts = 4};
}

static void actor_start(const ts_api_opts_t *o)
{
    S.zctx = zmq_ctx_new();
    S.results = zmq_socket(S.zctx, ZMQ_PULL);
    cr_assert_eq(zmq_bind(S.results, TS_INPROC_API_RESULTS), 0);
    S.api = ts_api_start(S.zctx, o);
    cr_assert_not_null(S.api, "ts_api_start");
    S.push = zmq_socket(S.zctx, ZMQ_PUSH);
    cr_assert_eq(zmq_connect(S.push, TS_INPROC_API), 0);
}

/* Messages arrive in batches (several pointers of one kind per message);
 * recv_msg hands them out one at a time, per socket. */
static struct {
    void *sock;
    uint32_t kind;
    void **ptrs;
    size_t n, next;
} Q[4];

/* Receives one answer from sock within timeout_ms; NULL on timeout. */
static void *recv_msg(void *sock, int timeout_ms, uint32_t *kind)
{
    int q = 0;
    while (q < 4 && Q[q].sock && Q[q].sock != sock)
        q++;
    cr_assert_lt(q, 4);
    Q[q].sock = sock;
    if (Q[q].next < Q[q].n) {
        *kind = Q[q].kind;
        return Q[q].ptrs[Q[q].next++];
    }
    free(Q[q].ptrs);
    Q[q].ptrs = NULL;
    Q[q].n = Q[q].next = 0;
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return NULL;
    if (ts_wire_recv(sock, 0, &Q[q].kind, &Q[q].ptrs, &Q[q].n) < 0 || Q[q].n == 0)
        return NULL;
    *kind = Q[q].kind;
    return Q[q].ptrs[Q[q].next++];
}

static void drain(void *sock)
{
    uint32_t kind;
    void *p;
    while ((p = recv_msg(sock, 0, &kind)))
        ts_msg_free_one(kind, p);
}

static void teardown(void)
{
    if (S.push)
        zmq_close(S.push);
    ts_actor_destroy(&S.api);
    if (S.results) {
        drain(S.results);
        zmq_close(S.results);
    }
    for (int q = 0; q < 4; q++) {
        for (size_t i = Q[q].next; i < Q[q].n; i++)
            ts_msg_free_one(Q[q].kind, Q[q].ptrs[i]);
        free(Q[q].ptrs);
    }
    memset(Q, 0, sizeof Q);
    if (S.zctx)
        zmq_ctx_term(S.zctx);
    if (S.proc.pid)
        ts_proc_stop(&S.proc, 5000);
    if (S.dir) {
        ts_rmtree(S.dir);
        free(S.dir);
    }
    memset(&S, 0, sizeof S);
}

/* A fresh clinic-api with default options; the actor's options for it. */
static ts_api_opts_t server_up(void)
{
    memset(&S, 0, sizeof S);
    server_start(NULL);
    return default_opts();
}

static void setup_default(void)
{
    ts_api_opts_t o = server_up();
    actor_start(&o);
}

static ts_api_request_t *req(ts_api_method_t m, const char *path, const char *body)
{
    ts_api_request_t *r = ts_api_request_new(m, path, body);
    cr_assert_not_null(r);
    return r;
}

static void send_req(ts_api_request_t *r)
{
    cr_assert_eq(ts_api_send(S.push, r), 0);
}

/* Waits for the next result (skipping nothing: only results arrive here). */
static ts_api_result_t *wait_result(int timeout_ms)
{
    uint32_t kind = 0;
    void *p = recv_msg(S.results, timeout_ms, &kind);
    cr_assert_not_null(p, "no result within %d ms", timeout_ms);
    cr_assert_eq(kind, TS_MSG_API_RESULT);
    return p;
}

/* Sends r and waits for its result. */
static ts_api_result_t *roundtrip(ts_api_request_t *r, int timeout_ms)
{
    uint64_t id = r->id;
    send_req(r);
    ts_api_result_t *res = wait_result(timeout_ms);
    cr_assert_eq(res->id, id);
    return res;
}

static double ms_between(int64_t a_us, int64_t b_us)
{
    return (double)(b_us - a_us) / 1000.0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- a fake HTTP server thread for canned answers ------------------------- */

static struct {
    int fd, port;
    pthread_t thread;
    atomic_bool stop;
    const char *canned; /* bytes to answer every request with; NULL: never answer */
    atomic_int accepted;
} F;

static void *fake_main(void *arg)
{
    (void)arg;
    int clients[16], nclients = 0;
    while (!atomic_load(&F.stop)) {
        struct pollfd p = {.fd = F.fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(F.fd, NULL, NULL);
        if (c < 0)
            continue;
        atomic_fetch_add(&F.accepted, 1);
        /* read the request head (bounded), then answer and close */
        char buf[8192];
        size_t got = 0;
        for (int i = 0; i < 100 && got < sizeof buf - 1; i++) {
            struct pollfd q = {.fd = c, .events = POLLIN};
            if (poll(&q, 1, 20) <= 0)
                continue;
            ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
            if (n <= 0)
                break;
            got += (size_t)n;
            buf[got] = '\0';
            if (strstr(buf, "\r\n\r\n"))
                break;
        }
        if (F.canned) {
            ssize_t w = write(c, F.canned, strlen(F.canned));
            (void)w;
            close(c);
        } else if (nclients < 16) {
            clients[nclients++] = c; /* keep it open, silent */
        } else {
            close(c);
        }
    }
    for (int i = 0; i < nclients; i++)
        close(clients[i]);
    return NULL;
}

static void fake_start(const char *canned)
{
    F.canned = canned;
    atomic_store(&F.stop, false);
    atomic_store(&F.accepted, 0);
    F.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(F.fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(F.fd, 16), 0);
    getsockname(F.fd, (struct sockaddr *)&a, &len);
    F.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&F.thread, NULL, fake_main, NULL), 0);
    snprintf(S.base, sizeof S.base, "http://127.0.0.1:%d", F.port);
}

static void fake_stop(void)
{
    atomic_store(&F.stop, true);
    pthread_join(F.thread, NULL);
    close(F.fd);
}

/* ---- round trip ------------------------------------------------------------- */

TestSuite(api, .fini = teardown, .timeout = 60);

Test(api, create_patch_delete_round_trip, .init = setup_default)
{
    ts_api_request_t *r = req(TS_API_POST, "/v1/sessions",
                              "{\"id\":\"s1\",\"status\":\"scheduled\",\"notes\":\"private\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "m-1");
    r->shape = TS_API_SHAPE_DOC;
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%s %ld %s", ts_api_error_name(res->error), res->status,
                 res->message);
    cr_assert_eq(res->status, 201);
    cr_assert_eq(res->attempts, 1);
    int64_t v1 = (int64_t)cJSON_GetObjectItem(res->json, "version")->valuedouble;
    ts_api_result_free(res);

    r = req(TS_API_PATCH, "/v1/sessions/s1", "{\"status\":\"completed\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "m-2");
    r->if_match = v1;
    r->shape = TS_API_SHAPE_DOC;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%s", res->body);
    cr_assert_str_eq(cJSON_GetObjectItem(res->json, "status")->valuestring, "completed");
    int64_t v2 = (int64_t)cJSON_GetObjectItem(res->json, "version")->valuedouble;
    cr_assert_gt(v2, v1);
    ts_api_result_free(res);

    /* a stale If-Match is a conflict with {current}, not retried */
    r = req(TS_API_PATCH, "/v1/sessions/s1", "{\"room\":\"2\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "m-3");
    r->if_match = v1;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_CONFLICT, "%s", ts_api_error_name(res->error));
    cr_assert_eq(res->status, 409);
    cr_assert_eq(res->attempts, 1);
    cr_assert_not_null(cJSON_GetObjectItem(res->json, "current"));
    ts_api_result_free(res);

    r = req(TS_API_DELETE, "/v1/sessions/s1", NULL);
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "m-4");
    r->if_match = v2;
    r->shape = TS_API_SHAPE_NONE;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%s %ld", ts_api_error_name(res->error), res->status);
    cr_assert_eq(res->status, 204);
    ts_api_result_free(res);

    r = req(TS_API_GET, "/v1/sessions/s1", NULL);
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_NOT_FOUND);
    cr_assert_eq(res->attempts, 1);
    ts_api_result_free(res);

    /* paged pull and digest with their shapes */
    r = req(TS_API_GET, "/v1/sessions?since=0&limit=10", NULL);
    r->shape = TS_API_SHAPE_PAGE;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%s %s", res->message, res->body);
    ts_api_result_free(res);
    r = req(TS_API_GET, "/v1/sessions/digest", NULL);
    r->shape = TS_API_SHAPE_DIGEST;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%s %s", res->message, res->body);
    ts_api_result_free(res);
    r = req(TS_API_GET, "/v1/changes?since=0&timeout=1", NULL);
    r->shape = TS_API_SHAPE_CHANGES;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%s %s", res->message, res->body);
    ts_api_result_free(res);
}

/* Easy handles are pooled with their settings kept: a request must not
 * inherit the method, body or headers of the one before it. */
Test(api, pooled_handles_do_not_leak_settings)
{
    ts_api_opts_t o = server_up();
    o.max_connections = 1;
    o.max_inflight = 1;
    actor_start(&o);
    ts_api_request_t *r = req(TS_API_POST, "/v1/sessions", "{\"id\":\"p1\",\"room\":\"A\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "k-1");
    r->shape = TS_API_SHAPE_DOC;
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->status, 201, "%ld %s", res->status, res->body);
    int64_t v = (int64_t)cJSON_GetObjectItem(res->json, "version")->valuedouble;
    ts_api_result_free(res);
    /* a GET after a POST: no body, not a second create */
    r = req(TS_API_GET, "/v1/sessions/p1", NULL);
    r->shape = TS_API_SHAPE_DOC;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%ld %s", res->status, res->body);
    cr_assert_eq(res->status, 200);
    ts_api_result_free(res);
    cr_assert_eq(stat_of("applied_writes"), 1);
    r = req(TS_API_DELETE, "/v1/sessions/p1", NULL);
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "k-2");
    r->if_match = v;
    r->shape = TS_API_SHAPE_NONE;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->status, 204, "%ld %s", res->status, res->body);
    ts_api_result_free(res);
    /* a GET after a DELETE: still a GET (a DELETE of the collection is 405) */
    r = req(TS_API_GET, "/v1/sessions?since=0", NULL);
    r->shape = TS_API_SHAPE_PAGE;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%ld %s", res->status, res->body);
    ts_api_result_free(res);
    /* a POST after GETs: the body goes out again (p2 is created) */
    r = req(TS_API_POST, "/v1/sessions", "{\"id\":\"p2\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "k-3");
    r->shape = TS_API_SHAPE_DOC;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->status, 201, "%ld %s", res->status, res->body);
    cr_assert_str_eq(cJSON_GetObjectItem(res->json, "id")->valuestring, "p2");
    ts_api_result_free(res);
    cr_assert_eq(stat_of("applied_writes"), 3);
}

Test(api, errors_mapped_and_not_retried, .init = setup_default)
{
    ts_api_request_t *r = req(TS_API_POST, "/v1/sessions", "{\"id\":5}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "bad-1");
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_VALIDATION, "%s", ts_api_error_name(res->error));
    cr_assert_eq(res->status, 422);
    cr_assert_eq(res->attempts, 1);
    cr_assert(cJSON_IsArray(cJSON_GetObjectItem(res->json, "errors")));
    ts_api_result_free(res);

    r = req(TS_API_PATCH, "/v1/sessions/nope", "{}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "bad-2");
    r->if_match = 1;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_NOT_FOUND, "%s", ts_api_error_name(res->error));
    cr_assert_eq(res->attempts, 1);
    ts_api_result_free(res);

    /* a malformed query: 400 from clinic-api, a bad request */
    r = req(TS_API_GET, "/v1/sessions?limit=abc", NULL);
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_BAD_REQUEST, "%s %ld", ts_api_error_name(res->error),
                 res->status);
    cr_assert_eq(res->attempts, 1);
    ts_api_result_free(res);

    /* bad fields never reach the wire */
    r = req(TS_API_GET, "no-slash", NULL);
    res = roundtrip(r, 5000);
    cr_assert_eq(res->error, TS_API_INTERNAL);
    cr_assert_eq(res->attempts, 0);
    ts_api_result_free(res);
}

/* ---- retries ------------------------------------------------------------------ */

Test(api, idempotent_retry_applies_once, .init = setup_default)
{
    faults("{\"fail_rate\":1,\"status\":503,\"retry_after\":0}");
    ts_api_request_t *r = req(TS_API_POST, "/v1/sessions", "{\"id\":\"once\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "key-once");
    r->max_attempts = 50;
    uint64_t id = r->id;
    send_req(r);
    sleep_ms(300); /* a 503 burst */
    faults("{}");
    ts_api_result_t *res = wait_result(10000);
    cr_assert_eq(res->id, id);
    cr_assert_eq(res->error, TS_API_OK, "%s %ld", ts_api_error_name(res->error), res->status);
    cr_assert_gt(res->attempts, 1, "attempts %d", res->attempts);
    ts_api_result_free(res);
    cr_assert_eq(stat_of("applied_writes"), 1);

    /* the same key again: the first answer, nothing applied */
    r = req(TS_API_POST, "/v1/sessions", "{\"id\":\"once\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "key-once");
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK);
    cr_assert_eq(res->status, 201);
    ts_api_result_free(res);
    cr_assert_eq(stat_of("applied_writes"), 1);
    cr_assert_geq(stat_of("idempotent_replays"), 1);

    r = req(TS_API_GET, "/v1/sessions/once", NULL);
    r->shape = TS_API_SHAPE_DOC;
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK);
    cr_assert_eq((int)cJSON_GetObjectItem(res->json, "version")->valuedouble, 1);
    ts_api_result_free(res);
}

Test(api, delays_within_jitter_bounds, .init = setup_default)
{
    ts_api_request_t *r = req(TS_API_GET, "/v1/sessions/none", NULL);
    send_req(req(TS_API_GET, "/v1/sessions/warm", NULL)); /* token first */
    ts_api_result_free(wait_result(10000));
    faults("{\"fail_rate\":1,\"status\":503,\"retry_after\":0}");
    r->max_attempts = 5;
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_SERVER_ERROR);
    cr_assert_eq(res->status, 503);
    cr_assert_eq(res->attempts, 5);
    /* base 20, cap 200: the wait before attempt k+1 is in [0, min(200, 20*2^(k-1))]
     * plus the previous attempt's own time (a few ms on loopback). */
    for (int k = 1; k < 5; k++) {
        double gap = ms_between(res->attempt_us[k - 1], res->attempt_us[k]);
        double ceiling = 20.0 * (1 << (k - 1));
        if (ceiling > 200)
            ceiling = 200;
        cr_assert_geq(gap, 0);
        cr_assert_leq(gap, ceiling + 50, "gap %d: %.1f ms > %.0f + 50", k, gap, ceiling);
    }
    ts_api_result_free(res);
}

Test(api, timeout_after_configured_attempts)
{
    ts_api_opts_t o = server_up();
    o.timeout_ms = 300;
    o.max_attempts = 3;
    actor_start(&o);
    send_req(req(TS_API_GET, "/v1/sessions/warm", NULL));
    ts_api_result_free(wait_result(10000));
    faults("{\"latency_ms\":2000}");
    ts_api_result_t *res = roundtrip(req(TS_API_GET, "/v1/sessions/x", NULL), 10000);
    cr_assert_eq(res->error, TS_API_TIMEOUT, "%s", ts_api_error_name(res->error));
    cr_assert_eq(res->attempts, 3);
    double total = ms_between(res->attempt_us[0], res->finished_us);
    cr_assert_geq(total, 3 * 290, "%.0f ms", total);
    cr_assert_leq(total, 3 * 300 + 2 * 200 + 500, "%.0f ms", total);
    ts_api_result_free(res);

    /* a server that never answers (latency at clinic-api's maximum) */
    faults("{\"latency_ms\":600000}");
    ts_api_request_t *r = req(TS_API_GET, "/v1/sessions/x", NULL);
    r->max_attempts = 1;
    res = roundtrip(r, 5000);
    cr_assert_eq(res->error, TS_API_TIMEOUT);
    cr_assert_eq(res->attempts, 1);
    ts_api_result_free(res);
    faults("{}");
}

Test(api, dropped_connections_then_recovery, .init = setup_default)
{
    send_req(req(TS_API_GET, "/v1/sessions/warm", NULL));
    ts_api_result_free(wait_result(10000));
    faults("{\"drop_rate\":1}");
    long long dropped0 = stat_of("faults_dropped");
    ts_api_request_t *r = req(TS_API_POST, "/v1/sessions", "{\"id\":\"d1\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "drop-1");
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_NETWORK, "%s %s", ts_api_error_name(res->error), res->message);
    cr_assert_eq(res->attempts, 4);
    cr_assert_eq(res->status, 0);
    cr_assert(!res->unreachable, "a dropped connection is not a refused one");
    ts_api_result_free(res);
    cr_assert_geq(stat_of("faults_dropped") - dropped0, 4);
    faults("{}");
    r = req(TS_API_POST, "/v1/sessions", "{\"id\":\"d1\"}");
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "drop-1");
    res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%s", ts_api_error_name(res->error));
    cr_assert_eq(res->status, 201);
    ts_api_result_free(res);
    cr_assert_eq(stat_of("applied_writes"), 1);
}

/* A server that is gone (killed: its port refuses connects) is reported as
 * unreachable; with unreachable_final the request ends after that one
 * connect instead of max_attempts of them with backoff. */
Test(api, a_refused_connect_is_unreachable_and_final_on_request, .init = setup_default)
{
    send_req(req(TS_API_GET, "/v1/sessions/warm", NULL)); /* the token first */
    ts_api_result_free(wait_result(10000));
    cr_assert_eq(kill(S.proc.pid, SIGKILL), 0);
    ts_proc_stop(&S.proc, 5000); /* reaps it */
    ts_api_request_t *r = req(TS_API_POST, "/v1/sessions", "{\"id\":\"u1\"}");
    r->unreachable_final = true;
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_NETWORK, "%s %s", ts_api_error_name(res->error), res->message);
    cr_assert(res->unreachable, "refused: %s", res->message);
    cr_assert_eq(res->attempts, 1, "not retried");
    ts_api_result_free(res);
    res = roundtrip(req(TS_API_GET, "/v1/sessions/u1", NULL), 10000);
    cr_assert_eq(res->error, TS_API_NETWORK);
    cr_assert(res->unreachable);
    cr_assert_eq(res->attempts, 4, "without the flag: retried as before");
    ts_api_result_free(res);
}

/* A proxy whose name does not resolve stands between the engine and the
 * server as surely as a server that is gone: unreachable too, so the sync
 * actor goes offline at once instead of after max_attempts with backoff.
 * (.invalid never resolves, RFC 6761.) */
Test(api, an_unresolvable_proxy_is_unreachable)
{
    ts_api_opts_t o = server_up();
    o.proxy = "http://no-such-proxy.invalid:3128";
    actor_start(&o);
    ts_api_request_t *r = req(TS_API_GET, "/v1/sessions/p1", NULL);
    r->unreachable_final = true;
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_NETWORK, "%s %s", ts_api_error_name(res->error), res->message);
    cr_assert(res->unreachable, "an unresolvable proxy: %s", res->message);
    cr_assert_eq(res->attempts, 1, "not retried");
    ts_api_result_free(res);
}

Test(api, too_many_requests_honours_retry_after, .init = setup_default)
{
    send_req(req(TS_API_GET, "/v1/sessions/warm", NULL));
    ts_api_result_free(wait_result(10000));
    faults("{\"fail_rate\":1,\"status\":429,\"retry_after\":1}");
    ts_api_request_t *r = req(TS_API_GET, "/v1/sessions/x", NULL);
    r->max_attempts = 2;
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_TOO_MANY_REQUESTS);
    cr_assert_eq(res->status, 429);
    cr_assert_eq(res->attempts, 2);
    cr_assert_eq(res->retry_after_ms, 1000);
    double gap = ms_between(res->attempt_us[0], res->attempt_us[1]);
    cr_assert_geq(gap, 1000, "retried after %.0f ms, before Retry-After", gap);
    cr_assert_leq(gap, 1500);
    ts_api_result_free(res);
}

/* ---- tokens ----------------------------------------------------------------------- */

Test(api, expired_token_refreshed_once)
{
    memset(&S, 0, sizeof S);
    server_start((const char *[]){"--token-ttl", "1", NULL});
    ts_api_opts_t o = default_opts();
    actor_start(&o);
    ts_api_result_t *res = roundtrip(req(TS_API_GET, "/v1/sessions/x", NULL), 10000);
    cr_assert_eq(res->error, TS_API_NOT_FOUND);
    cr_assert_eq(res->token_refreshes, 0);
    ts_api_result_free(res);
    cr_assert_eq(stat_of("tokens_issued"), 1);
    sleep_ms(1600);
    /* three at once: one 401 each, one shared refresh */
    uint64_t ids[3];
    for (int i = 0; i < 3; i++) {
        ts_api_request_t *r = req(TS_API_GET, "/v1/sessions/x", NULL);
        ids[i] = r->id;
        send_req(r);
    }
    for (int i = 0; i < 3; i++) {
        res = wait_result(10000);
        cr_assert(res->id == ids[0] || res->id == ids[1] || res->id == ids[2]);
        cr_assert_eq(res->error, TS_API_NOT_FOUND, "%s", ts_api_error_name(res->error));
        cr_assert_leq(res->token_refreshes, 1);
        ts_api_result_free(res);
    }
    cr_assert_eq(stat_of("tokens_issued"), 2, "one refresh for all");
}

Test(api, invalid_credentials_unauthorized_no_loop)
{
    ts_api_opts_t o = server_up();
    o.client_secret = "wrong";
    actor_start(&o);
    long long before = stat_of("requests");
    ts_api_result_t *res = roundtrip(req(TS_API_GET, "/v1/sessions/x", NULL), 10000);
    cr_assert_eq(res->error, TS_API_UNAUTHORIZED, "%s", ts_api_error_name(res->error));
    cr_assert_eq(res->attempts, 1);
    ts_api_result_free(res);
    /* one token request (plus this stats call's predecessor) */
    cr_assert_leq(stat_of("requests") - before, 2);
    cr_assert_eq(stat_of("tokens_issued"), 0);
}

/* ---- cancellation ---------------------------------------------------------------- */

Test(api, cancel_queued_and_in_flight)
{
    ts_api_opts_t o = server_up();
    o.max_inflight = 1;
    actor_start(&o);
    send_req(req(TS_API_GET, "/v1/sessions/warm", NULL));
    ts_api_result_free(wait_result(10000));
    faults("{\"latency_ms\":3000}");
    ts_api_request_t *a = req(TS_API_GET, "/v1/sessions/a", NULL);
    ts_api_request_t *b = req(TS_API_GET, "/v1/sessions/b", NULL);
    uint64_t ida = a->id, idb = b->id;
    send_req(a);
    send_req(b);
    sleep_ms(200);
    /* b waits in the FIFO behind a (one slot) */
    int64_t t0 = ts_mono_us();
    cr_assert_eq(ts_api_cancel(S.push, idb), 0);
    ts_api_result_t *res = wait_result(1000);
    cr_assert_eq(res->id, idb);
    cr_assert_eq(res->error, TS_API_CANCELLED);
    cr_assert_eq(res->attempts, 0);
    ts_api_result_free(res);
    /* a is in flight */
    cr_assert_eq(ts_api_cancel(S.push, ida), 0);
    res = wait_result(1000);
    cr_assert_eq(res->id, ida);
    cr_assert_eq(res->error, TS_API_CANCELLED);
    cr_assert_eq(res->attempts, 1);
    cr_assert_lt(ms_between(t0, ts_mono_us()), 1000);
    ts_api_result_free(res);
    /* waiting for a retry (Retry-After 30 s) */
    faults("{\"fail_rate\":1,\"status\":503,\"retry_after\":30}");
    ts_api_request_t *c = req(TS_API_GET, "/v1/sessions/c", NULL);
    uint64_t idc = c->id;
    send_req(c);
    sleep_ms(300);
    cr_assert_eq(ts_api_cancel(S.push, idc), 0);
    res = wait_result(1000);
    cr_assert_eq(res->error, TS_API_CANCELLED);
    cr_assert_eq(res->attempts, 1);
    ts_api_result_free(res);
    /* an id that is gone is ignored */
    cr_assert_eq(ts_api_cancel(S.push, idc), 0);
    uint32_t kind;
    cr_assert_null(recv_msg(S.results, 200, &kind));
    faults("{}");
}

/* ---- answers not as the contract says (fake server) ------------------------------- */

static ts_api_result_t *fake_call(const char *canned, ts_api_shape_t shape)
{
    memset(&S, 0, sizeof S);
    fake_start(canned);
    ts_api_opts_t o = {.base_url = S.base, .timeout_ms = 500, .max_attempts = 3,
                       .backoff_base_ms = 10, .backoff_cap_ms = 20};
    actor_start(&o);
    ts_api_request_t *r = req(TS_API_GET, "/v1/sessions/x", NULL);
    r->shape = shape;
    ts_api_result_t *res = roundtrip(r, 5000);
    fake_stop();
    return res;
}

Test(api, wrong_content_type)
{
    ts_api_result_t *res = fake_call("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                     "Content-Length: 13\r\nConnection: close\r\n\r\n<html></html>",
                                     TS_API_SHAPE_ANY);
    cr_assert_eq(res->error, TS_API_BAD_RESPONSE, "%s", ts_api_error_name(res->error));
    cr_assert_eq(res->attempts, 1);
    cr_assert_eq(res->status, 200);
    ts_api_result_free(res);
}

Test(api, not_json)
{
    ts_api_result_t *res =
        fake_call("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  "Content-Length: 9\r\nConnection: close\r\n\r\n{\"id\": tr",
                  TS_API_SHAPE_DOC);
    cr_assert_eq(res->error, TS_API_BAD_RESPONSE);
    cr_assert_str_eq(res->message, "body is not JSON");
    ts_api_result_free(res);
}

Test(api, wrong_shape)
{
    ts_api_result_t *res =
        fake_call("HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                  "Content-Length: 9\r\nConnection: close\r\n\r\n{\"foo\":1}",
                  TS_API_SHAPE_DOC);
    cr_assert_eq(res->error, TS_API_BAD_RESPONSE);
    cr_assert_not_null(res->json);
    ts_api_result_free(res);
}

Test(api, truncated_body)
{
    ts_api_result_t *res =
        fake_call("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  "Content-Length: 100\r\nConnection: close\r\n\r\n{\"id\":\"x\"",
                  TS_API_SHAPE_DOC);
    cr_assert_eq(res->error, TS_API_BAD_RESPONSE, "%s", ts_api_error_name(res->error));
    cr_assert_eq(res->attempts, 1);
    ts_api_result_free(res);
}

Test(api, accepts_but_never_answers)
{
    ts_api_result_t *res = fake_call(NULL, TS_API_SHAPE_ANY);
    cr_assert_eq(res->error, TS_API_TIMEOUT);
    cr_assert_eq(res->attempts, 3);
    cr_assert_geq(atomic_load(&F.accepted), 3);
    ts_api_result_free(res);
}

Test(api, retry_after_http_date)
{
    static char canned[512];
    char date[64];
    time_t at = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&at, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(canned, sizeof canned,
             "HTTP/1.1 503 Service Unavailable\r\nRetry-After: %s\r\nContent-Length: 0\r\n"
             "Connection: close\r\n\r\n",
             date);
    memset(&S, 0, sizeof S);
    fake_start(canned);
    ts_api_opts_t o = {.base_url = S.base, .timeout_ms = 500, .max_attempts = 2,
                       .backoff_base_ms = 10, .backoff_cap_ms = 20};
    actor_start(&o);
    int64_t t0 = ts_wall_ms();
    ts_api_result_t *res = roundtrip(req(TS_API_GET, "/v1/sessions/x", NULL), 5000);
    fake_stop();
    cr_assert_eq(res->error, TS_API_SERVER_ERROR);
    cr_assert_eq(res->attempts, 2);
    /* the date has 1 s resolution: the retry waits until that second */
    double gap = ms_between(res->attempt_us[0], res->attempt_us[1]);
    cr_assert_geq(gap + (double)(t0 % 1000), 1000, "gap %.0f", gap);
    ts_api_result_free(res);
}

/* ---- server-sent events -------------------------------------------------------- */

typedef struct {
    void *pull;
    char seen[64][65]; /* event ids in order */
    char docs[64][32];
    int nseen;
    int connected, dropped;
} stream_t;

/* Reads stream messages until want events arrived (or timeout). */
static void stream_read(stream_t *st, int want, int timeout_ms)
{
    int64_t end = ts_mono_us() + timeout_ms * 1000LL;
    while (st->nseen < want && ts_mono_us() < end) {
        uint32_t kind;
        void *p = recv_msg(st->pull, 100, &kind);
        if (!p)
            continue;
        if (kind == TS_MSG_API_EVENT) {
            ts_api_event_t *ev = p;
            cr_assert_lt(st->nseen, 64);
            snprintf(st->seen[st->nseen], 65, "%s", ev->event_id);
            const cJSON *doc = cJSON_GetObjectItem(ev->json, "doc");
            const cJSON *id = cJSON_GetObjectItem(doc, "id");
            cr_assert(cJSON_IsString(id), "event data: %s", ev->data);
            snprintf(st->docs[st->nseen], 32, "%s", id->valuestring);
            st->nseen++;
        } else if (kind == TS_MSG_API_STREAM) {
            ts_api_stream_msg_t *m = p;
            if (m->state == TS_API_STREAM_CONNECTED)
                st->connected++;
            else if (m->state == TS_API_STREAM_DROPPED)
                st->dropped++;
        }
        ts_msg_free_one(kind, p);
    }
}

static void wait_connected(stream_t *st, int n, int timeout_ms)
{
    int64_t end = ts_mono_us() + timeout_ms * 1000LL;
    while (st->connected < n && ts_mono_us() < end)
        stream_read(st, st->nseen + 1, 100);
    cr_assert_geq(st->connected, n, "stream not connected");
}

static void post_doc(const char *id)
{
    char body[64], key[64];
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", id);
    ts_api_request_t *r = req(TS_API_POST, "/v1/sessions", body);
    snprintf(key, sizeof key, "k-%s", id);
    snprintf(r->idempotency_key, sizeof r->idempotency_key, "%s", key);
    ts_api_result_t *res = roundtrip(r, 10000);
    cr_assert_eq(res->error, TS_API_OK, "%s", ts_api_error_name(res->error));
    ts_api_result_free(res);
}

Test(api, sse_events_and_resume_after_restart, .timeout = 60)
{
    setup_default();
    stream_t st = {0};
    st.pull = zmq_socket(S.zctx, ZMQ_PULL);
    cr_assert_eq(zmq_bind(st.pull, "inproc://test-stream"), 0);
    ts_api_request_t *s = req(TS_API_GET, NULL, NULL);
    s->stream = true;
    snprintf(s->last_event_id, sizeof s->last_event_id, "0");
    snprintf(s->reply_to, sizeof s->reply_to, "inproc://test-stream");
    uint64_t sid = s->id;
    send_req(s);
    wait_connected(&st, 1, 5000);
    post_doc("e1");
    post_doc("e2");
    post_doc("e3");
    stream_read(&st, 3, 5000);
    cr_assert_eq(st.nseen, 3);

    /* restart clinic-api on the same port and database */
    int port = S.port;
    cr_assert_eq(ts_proc_stop(&S.proc, 5000), 0);
    server_spawn(port, NULL);
    post_doc("e4"); /* maybe before the stream is back: it comes from the backlog */
    wait_connected(&st, 2, 10000);
    post_doc("e5");
    stream_read(&st, 5, 5000);
    cr_assert_eq(st.nseen, 5, "events: %d", st.nseen);
    cr_assert_geq(st.dropped, 1);
    const char *want[] = {"e1", "e2", "e3", "e4", "e5"};
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(st.docs[i], want[i], "event %d", i);
        if (i)
            cr_assert_gt(strtoll(st.seen[i], NULL, 10), strtoll(st.seen[i - 1], NULL, 10),
                         "ids increase");
    }
    /* no duplicate trailing in */
    stream_read(&st, 6, 500);
    cr_assert_eq(st.nseen, 5);

    /* closing the stream: its result comes back CANCELLED */
    cr_assert_eq(ts_api_cancel(S.push, sid), 0);
    int64_t end = ts_mono_us() + 2000000;
    ts_api_result_t *res = NULL;
    while (!res && ts_mono_us() < end) {
        uint32_t kind;
        void *p = recv_msg(st.pull, 100, &kind);
        if (p && kind == TS_MSG_API_RESULT)
            res = p;
        else if (p)
            ts_msg_free_one(kind, p);
    }
    cr_assert_not_null(res);
    cr_assert_eq(res->error, TS_API_CANCELLED);
    cr_assert_str_eq(res->request->last_event_id, st.seen[4]);
    ts_api_result_free(res);
    drain(st.pull);
    zmq_close(st.pull);
}

/* raw_events: the events of a stream come as text only (json NULL), for a
 * receiver that parses what it needs (the sync actor skips its own echoes). */
Test(api, sse_raw_events_are_not_parsed, .init = setup_default)
{
    void *pull = zmq_socket(S.zctx, ZMQ_PULL);
    cr_assert_eq(zmq_bind(pull, "inproc://test-raw-stream"), 0);
    ts_api_request_t *s = req(TS_API_GET, NULL, NULL);
    s->stream = true;
    s->raw_events = true;
    snprintf(s->last_event_id, sizeof s->last_event_id, "0");
    snprintf(s->reply_to, sizeof s->reply_to, "inproc://test-raw-stream");
    send_req(s);
    post_doc("raw1");
    int64_t end = ts_mono_us() + 5000000;
    ts_api_event_t *ev = NULL;
    while (!ev && ts_mono_us() < end) {
        uint32_t kind;
        void *p = recv_msg(pull, 100, &kind);
        if (p && kind == TS_MSG_API_EVENT)
            ev = p;
        else if (p)
            ts_msg_free_one(kind, p);
    }
    cr_assert_not_null(ev, "an event arrived");
    cr_assert_null(ev->json, "not parsed");
    cr_assert_not_null(strstr(ev->data, "\"raw1\""), "%s", ev->data);
    cr_assert_gt(strlen(ev->event_id), 0);
    ts_api_event_free(ev);
    drain(pull);
    zmq_close(pull);
}

Test(api, sse_refused_when_not_offered, .init = setup_default)
{
    ts_api_request_t *s = req(TS_API_GET, "/v1/sessions/stream-nope/x", NULL);
    s->stream = true;
    send_req(s);
    uint32_t kind;
    void *p = recv_msg(S.results, 5000, &kind);
    cr_assert_not_null(p);
    cr_assert_eq(kind, TS_MSG_API_STREAM);
    ts_api_stream_msg_t *m = p;
    cr_assert_eq(m->state, TS_API_STREAM_REFUSED);
    cr_assert_eq(m->error, TS_API_NOT_FOUND);
    ts_msg_free_one(kind, p);
    ts_api_result_t *res = wait_result(2000);
    cr_assert_eq(res->error, TS_API_NOT_FOUND);
    ts_api_result_free(res);
}
