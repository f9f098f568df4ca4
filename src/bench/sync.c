/* sync.c — the workloads that need clinic-api: replay and realtime
 * (bench/README.md, issue 5).
 *
 * replay:   clinic-api switched offline, N creates (and an update of every
 *           100th accepted one) queued through the front door, clinic-api
 *           back (plus a `sync` call, as an app would on reconnect): seconds
 *           until `status.pending` is 0, confirmed with clinic-api's
 *           applied_writes and with the updated documents' final version and
 *           field at clinic-api (per-document order).
 * realtime: a paced writer keeps LOCAL_RATE creates/s going into the engine
 *           while the bench PATCHes documents at clinic-api REMOTE_RATE times
 *           a second; latency from each HTTP response to the matching
 *           doc.changed (origin remote) on a SUB socket.
 *
 * Both start their own clinic-api (unless --api) and therasyncd --api (unless
 * --endpoint, replay only), stop them by pid, and bound every loop. */
#include "bench.h"
#include "gen.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define START_TIMEOUT_S 60.0
#define STOP_TIMEOUT_S 120.0
#define ONLINE_TIMEOUT_US (60 * 1000000LL)
#define STATUS_POLL_US 10000
#define REPLAY_UPDATE_EVERY 100
#define RT_DOCS 200
#define RT_REMOTE_RATE 200   /* remote changes per second */
#define RT_LOCAL_RATE 10000  /* local writes per second */
#define RT_WARMUP_US 1000000 /* local load before the first remote change */
#define RT_TAIL_US (5 * 1000000LL)
#define RT_MAX_OUTSTANDING 8192

typedef bench_env_t env_t;

/* ---- JSON-RPC over the DEALER (bench_rpc) ---- */

cJSON *bench_env_rpc(env_t *e, const char *method, const char *params, int timeout_ms)
{
    return bench_rpc(e->rpc, ++e->rpc_id, method, params, timeout_ms);
}

/* status: pending and online; -1 when no answer. */
int bench_env_status(env_t *e, int64_t *pending, bool *online)
{
    cJSON *s = bench_env_rpc(e, "status", NULL, 5000);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(s, "pending");
    const cJSON *on = cJSON_GetObjectItemCaseSensitive(s, "online");
    int rc = cJSON_IsNumber(p) ? 0 : -1;
    if (rc == 0) {
        *pending = (int64_t)p->valuedouble;
        *online = cJSON_IsTrue(on);
    }
    cJSON_Delete(s);
    return rc;
}

static int wait_online(env_t *e)
{
    int64_t deadline = ts_mono_us() + ONLINE_TIMEOUT_US;
    while (ts_mono_us() < deadline && ts_mono_us() < e->o->deadline_us) {
        int64_t pending;
        bool online = false;
        if (bench_env_status(e, &pending, &online) == 0 && online)
            return 0;
        usleep(20000);
    }
    fprintf(stderr, "bench: the engine did not come online with %s\n", e->api.base);
    return -1;
}

long long bench_api_stat(void **http, const bench_api_t *api, const char *name)
{
    ts_buf_t out = {0};
    long long v = -1;
    if (bench_http(http, api, "GET", "/_control/stats", NULL, &out) == 200) {
        cJSON *j = cJSON_ParseWithLength(out.data, out.len);
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, name);
        if (cJSON_IsNumber(x))
            v = (long long)x->valuedouble;
        cJSON_Delete(j);
    }
    ts_buf_free(&out);
    return v;
}

int bench_api_faults(void **http, const bench_api_t *api, const char *body)
{
    ts_buf_t out = {0};
    long st = bench_http(http, api, "POST", "/_control/faults", body, &out);
    ts_buf_free(&out);
    if (st != 200)
        fprintf(stderr, "bench: POST /_control/faults %s: status %ld\n", body, st);
    return st == 200 ? 0 : -1;
}

void *bench_dealer(void *zctx, const char *endpoint)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0, hwm = 0;
    if (!s)
        return NULL;
    if (bench_curve_client(s)) {
        zmq_close(s);
        return NULL;
    }
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_connect(s, endpoint) == 0)
        return s;
    zmq_close(s);
    return NULL;
}

void bench_env_down(env_t *e)
{
    if (!e->o)
        return;
    if (e->rpc)
        zmq_close(e->rpc);
    if (e->zctx)
        zmq_ctx_term(e->zctx);
    bench_http_close(&e->http);
    if (e->d.pid > 0) {
        int status = bench_daemon_stop(&e->d, STOP_TIMEOUT_S, NULL);
        if (status != 0)
            fprintf(stderr, "bench: therasyncd exited with status %d\n", status);
    }
    bench_daemon_rmdata(&e->d, e->o->keep_data);
    if (e->api.server > 0)
        bench_api_stop(&e->api);
    explicit_bzero(e->api.token, sizeof e->api.token);
}

int bench_env_up(env_t *e, const bench_opts_t *o)
{
    e->o = o;
    if (o->api)
        snprintf(e->api.base, sizeof e->api.base, "%s", o->api);
    else if (bench_api_start(&e->api) < 0)
        return -1;
    if (bench_api_token(&e->api) < 0)
        return -1;
    if (o->endpoint) {
        e->endpoint = o->endpoint;
    } else {
        e->d.policies = o->policies;
        e->d.config = o->config;
        e->d.api = e->api.base;
        if (bench_daemon_mkdata(&e->d) || bench_daemon_start(&e->d, START_TIMEOUT_S))
            return -1;
        e->endpoint = e->d.endpoint;
        e->events = e->d.events;
    }
    e->zctx = zmq_ctx_new();
    e->rpc = zmq_socket(e->zctx, ZMQ_DEALER);
    bench_curve_client(e->rpc);
    int linger = 0;
    zmq_setsockopt(e->rpc, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(e->rpc, e->endpoint) != 0)
        return -1;
    return wait_online(e);
}

/* ---- replay ---- */

static void mark_accepted(void *arg, size_t i, const char *reply, size_t len)
{
    (void)reply, (void)len;
    ((atomic_bool *)arg)[i] = true;
}

static int drive(env_t *e, const bench_reqs_t *reqs, atomic_bool *ok, bench_outcome_t *out)
{
    int64_t *lat = calloc(reqs->n ? reqs->n : 1, sizeof *lat);
    bench_job_t job = {.endpoint = e->endpoint,
                       .clients = e->o->clients,
                       .inflight = e->o->inflight,
                       .threads = e->o->threads,
                       .reqs = reqs,
                       .deadline_us = e->o->deadline_us,
                       .lat_us = lat,
                       .on_reply = mark_accepted,
                       .arg = ok};
    int rc = lat ? bench_drive(&job, out) : -1;
    if (rc)
        fprintf(stderr, "bench: queueing failed after %zu: %s\n", out->done, out->first_error);
    free(lat);
    return rc;
}

int bench_wl_replay(const bench_opts_t *o, int run, bench_result_t *res)
{
    env_t e = {0};
    int64_t n = o->n;
    int64_t seq0 = o->endpoint ? (int64_t)run * n : 0;
    bench_reqs_t reqs = {0};
    char(*ids)[37] = calloc((size_t)n, sizeof *ids);
    atomic_bool *ok = calloc((size_t)n, sizeof *ok);
    atomic_bool *uok = calloc((size_t)n / REPLAY_UPDATE_EVERY + 1, sizeof *uok);
    int64_t *upd = calloc((size_t)n / REPLAY_UPDATE_EVERY + 1, sizeof *upd); /* create index */
    int rc = ids && ok && uok && upd ? 0 : -1;
    gen_rng_t rng;
    gen_rng_seed(&rng, GEN_SEED);
    for (int64_t i = 0; rc == 0 && i < seq0 + n; i++) {
        gen_session_t s;
        gen_session(&rng, i, &s);
        if (i < seq0)
            continue;
        memcpy(ids[i - seq0], s.id, sizeof s.id);
        ts_buf_t *b = &reqs.data;
        if (ts_buf_printf(b, "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"create\",\"params\":"
                             "{\"collection\":\"sessions\",\"doc\":", reqs.n) ||
            gen_session_json(&s, false, b) || ts_buf_puts(b, "}}") || bench_reqs_end(&reqs))
            rc = -1;
    }
    rc = rc ? rc : bench_env_up(&e, o);
    int64_t applied0 = rc ? -1 : bench_api_stat(&e.http, &e.api, "applied_writes");
    if (rc == 0 && applied0 < 0) {
        fprintf(stderr, "bench: no /_control/stats at %s\n", e.api.base);
        rc = -1;
    }
    rc = rc ? rc : bench_api_faults(&e.http, &e.api, "{\"offline\":true}");
    /* Queue: the creates, then an update of every 100th accepted one. */
    bench_outcome_t out1 = {0}, out2 = {0};
    int64_t t_queue = ts_mono_us();
    rc = rc ? rc : drive(&e, &reqs, ok, &out1);
    size_t nupd = 0, creates = 0, updates = 0;
    if (rc == 0) {
        bench_reqs_reset(&reqs);
        for (int64_t i = 0; i < n; i++) {
            if (!ok[i])
                continue;
            if (creates++ % REPLAY_UPDATE_EVERY)
                continue;
            upd[nupd++] = i;
            if (ts_buf_printf(&reqs.data,
                              "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"update\",\"params\":{"
                              "\"collection\":\"sessions\",\"id\":\"%s\",\"patch\":{\"notes\":"
                              "\"replay update %lld\"}}}",
                              reqs.n, ids[i], (long long)i) ||
                bench_reqs_end(&reqs))
                rc = -1;
        }
        rc = rc ? rc : drive(&e, &reqs, uok, &out2);
        for (size_t k = 0; k < nupd; k++)
            updates += uok[k];
    }
    double queue_s = (double)(ts_mono_us() - t_queue) / 1e6;
    int64_t m = (int64_t)(creates + updates), pending0 = -1;
    bool online = true;
    if (rc == 0 && bench_env_status(&e, &pending0, &online) < 0)
        rc = -1;
    if (rc == 0 && !o->endpoint && pending0 != m)
        fprintf(stderr, "bench: replay: %lld pending, %lld accepted writes\n",
                (long long)pending0, (long long)m);
    /* Back online: the clock starts when clinic-api answers again. The end is
     * the sync.status event that says pending crossed 0 (the store publishes
     * it); `status` is polled only as a fallback, since the store scans every
     * document for oldest_pending on each `status` and frequent polls would
     * slow the run they measure. */
    int64_t t0 = 0, t_online = 0, t1 = 0;
    void *kick = NULL, *sub = NULL;
    if (rc == 0 && e.events) {
        sub = zmq_socket(e.zctx, ZMQ_SUB);
        bench_curve_client(sub);
        int linger = 0;
        zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "sync", 4);
        zmq_connect(sub, e.events);
        usleep(200000); /* the SUB socket joins */
    }
    if (rc == 0 && bench_api_faults(&e.http, &e.api, "{}") == 0) {
        t0 = ts_mono_us();
        /* The app's "network is back" signal: one `sync` call, not awaited. */
        kick = zmq_socket(e.zctx, ZMQ_DEALER);
        bench_curve_client(kick);
        int linger = 0;
        zmq_setsockopt(kick, ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(kick, e.endpoint);
        const char *sync = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"sync\"}";
        zmq_send(kick, sync, strlen(sync), 0);
        int64_t pending = -1, next_poll = 0;
        while (ts_mono_us() < o->deadline_us) {
            if (sub) {
                zmq_pollitem_t it = {.socket = sub, .events = ZMQ_POLLIN};
                if (zmq_poll(&it, 1, 50) > 0) {
                    zmq_msg_t msg;
                    zmq_msg_init(&msg);
                    while (zmq_msg_recv(&msg, sub, ZMQ_DONTWAIT) >= 0) {
                        const char *d = zmq_msg_data(&msg);
                        size_t len = zmq_msg_size(&msg);
                        if (!t_online && memmem(d, len, "\"online\":true", 14))
                            t_online = ts_mono_us();
                        if (!t1 && memmem(d, len, "\"pending\":0,", 12))
                            t1 = ts_mono_us();
                    }
                    zmq_msg_close(&msg);
                }
            } else {
                usleep(50000);
            }
            if (!t1 && ts_mono_us() < next_poll)
                continue;
            bool on = false;
            if (bench_env_status(&e, &pending, &on) < 0)
                break;
            next_poll = ts_mono_us() + (sub ? 1000000 : 0);
            if (on && !t_online)
                t_online = ts_mono_us();
            if (pending == 0) {
                if (!t1)
                    t1 = ts_mono_us();
                break;
            }
            t1 = 0; /* an event from before the last status: not the end */
        }
        if (!t1) {
            fprintf(stderr, "bench: replay: %lld writes still pending\n", (long long)pending);
            rc = -1;
        }
    } else {
        rc = -1;
    }
    if (sub)
        zmq_close(sub);
    if (kick)
        zmq_close(kick);
    /* Confirm at clinic-api: every accepted write applied once, in order. */
    int64_t applied = -1;
    size_t order_bad = 0;
    for (int i = 0; rc == 0 && i < 500; i++) { /* up to 5 s */
        applied = bench_api_stat(&e.http, &e.api, "applied_writes") - applied0;
        if (applied >= m)
            break;
        usleep(10000);
    }
    if (rc == 0 && applied != m) {
        fprintf(stderr, "bench: replay: clinic-api applied %lld writes, expected %lld\n",
                (long long)applied, (long long)m);
        rc = -1;
    }
    ts_buf_t body = {0};
    for (size_t k = 0; rc == 0 && k < nupd; k++) {
        if (!uok[k])
            continue;
        char path[128], want[64];
        snprintf(path, sizeof path, "/v1/sessions/%s", ids[upd[k]]);
        snprintf(want, sizeof want, "replay update %lld", (long long)upd[k]);
        long st = bench_http(&e.http, &e.api, "GET", path, NULL, &body);
        cJSON *j = st == 200 ? cJSON_ParseWithLength(body.data, body.len) : NULL;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
        const cJSON *notes = cJSON_GetObjectItemCaseSensitive(j, "notes");
        if (!cJSON_IsNumber(v) || v->valuedouble != 2 || !cJSON_IsString(notes) ||
            strcmp(notes->valuestring, want) != 0) {
            if (!order_bad)
                fprintf(stderr, "bench: replay: %s at clinic-api is %.200s\n", path,
                        body.data ? body.data : "(nothing)");
            order_bad++;
        }
        cJSON_Delete(j);
    }
    ts_buf_free(&body);
    if (order_bad)
        rc = -1;
    double secs = t1 > t0 ? (double)(t1 - t0) / 1e6 : 0;
    res->seconds = secs;
    res->ops_per_s = secs > 0 ? (double)m / secs : 0;
    res->p50_us = res->p99_us = -1;
    ts_buf_printf(&res->extra,
                  ",\"writes\":%lld,\"creates\":%zu,\"updates\":%zu,\"validation_failed\":%zu,"
                  "\"errors\":%zu,\"queue_seconds\":%.3f,\"pending_before\":%lld,"
                  "\"online_after_s\":%.3f,\"applied_writes\":%lld,\"order_checked\":%zu,"
                  "\"order_bad\":%zu,\"bench_cpu_s\":%.3f",
                  (long long)m, creates, updates, out1.invalid + out2.invalid,
                  out1.errors + out2.errors, queue_s, (long long)pending0,
                  t_online ? (double)(t_online - t0) / 1e6 : -1.0, (long long)applied, updates,
                  order_bad, out1.cpu_seconds + out2.cpu_seconds);
    bench_env_down(&e);
    bench_reqs_free(&reqs);
    free(ids);
    free(ok);
    free(uok);
    free(upd);
    return rc;
}

/* ---- realtime ---- */

typedef struct {
    env_t *e;
    atomic_bool stop;
    /* the paced writer */
    const bench_reqs_t *reqs;
    atomic_llong answered, refused, errors;
    _Atomic int64_t window_from, window_to; /* set by the main thread */
    atomic_llong in_window;         /* answers inside the window */
    /* the event listener */
    int64_t nchanges;
    _Atomic int64_t *evt_us; /* arrival of change k */
    atomic_llong seeds, remote_events;
    /* clinic-api's own stream, read beside the engine: how much of the
     * latency is the server's */
    _Atomic int64_t *sse_us; /* arrival of change k on our own SSE connection */
    ts_buf_t sse_line;       /* a line split between two reads */
} rt_t;

static void *rt_writer(void *arg)
{
    rt_t *rt = arg;
    void *s = bench_dealer(rt->e->zctx, rt->e->endpoint);
    int64_t t0 = ts_mono_us();
    size_t sent = 0;
    while (!atomic_load(&rt->stop) && sent < rt->reqs->n && ts_mono_us() < rt->e->o->deadline_us) {
        int64_t now = ts_mono_us();
        size_t due = (size_t)((now - t0) * RT_LOCAL_RATE / 1000000);
        while (sent < due && sent < rt->reqs->n &&
               (long long)sent - atomic_load(&rt->answered) < RT_MAX_OUTSTANDING) {
            const char *body = rt->reqs->data.data + rt->reqs->off[sent];
            size_t len = rt->reqs->off[sent + 1] - rt->reqs->off[sent];
            if (zmq_send(s, body, len, ZMQ_DONTWAIT) < 0)
                break;
            sent++;
        }
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        zmq_poll(&it, 1, 1);
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0) {
            const char *d = zmq_msg_data(&m);
            size_t len = zmq_msg_size(&m);
            if (memmem(d, len, "\"error\"", 7))
                atomic_fetch_add(memmem(d, len, "-32002", 6) ? &rt->refused : &rt->errors, 1);
            atomic_fetch_add(&rt->answered, 1);
            int64_t t = ts_mono_us();
            int64_t from = atomic_load(&rt->window_from), to = atomic_load(&rt->window_to);
            if (from && t >= from && (!to || t <= to))
                atomic_fetch_add(&rt->in_window, 1);
        }
        zmq_msg_close(&m);
    }
    zmq_close(s);
    return NULL;
}

static void *rt_listener(void *arg)
{
    rt_t *rt = arg;
    void *s = zmq_socket(rt->e->zctx, ZMQ_SUB);
    bench_curve_client(s);
    int linger = 0, hwm = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_SUBSCRIBE, "doc.sessions", 12);
    zmq_connect(s, rt->e->events);
    while (!atomic_load(&rt->stop)) {
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 50) <= 0)
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0) {
            int64_t t = ts_mono_us();
            const char *d = zmq_msg_data(&m);
            size_t len = zmq_msg_size(&m);
            if (!memmem(d, len, "\"rt-bench-", 10) || !memmem(d, len, "\"remote\"", 8))
                continue; /* the topic frame, local writes */
            cJSON *j = cJSON_ParseWithLength(d, len);
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "params");
            const cJSON *origin = cJSON_GetObjectItemCaseSensitive(p, "origin");
            const cJSON *notes = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(p, "doc"), "notes");
            if (cJSON_IsString(origin) && strcmp(origin->valuestring, "remote") == 0 &&
                cJSON_IsString(notes)) {
                atomic_fetch_add(&rt->remote_events, 1);
                long long k;
                if (strcmp(notes->valuestring, "rt seed") == 0)
                    atomic_fetch_add(&rt->seeds, 1);
                else if (sscanf(notes->valuestring, "rt %lld", &k) == 1 && k >= 0 &&
                         k < rt->nchanges && atomic_load(&rt->evt_us[k]) == 0)
                    atomic_store(&rt->evt_us[k], t);
            }
            cJSON_Delete(j);
        }
        zmq_msg_close(&m);
    }
    zmq_close(s);
    return NULL;
}

/* Marks each "rt K" change seen on clinic-api's event stream. */
static size_t rt_sse_data(char *data, size_t size, size_t nmemb, void *arg)
{
    rt_t *rt = arg;
    size_t len = size * nmemb;
    int64_t t = ts_mono_us();
    if (ts_buf_append(&rt->sse_line, data, len))
        return 0;
    char *start = rt->sse_line.data, *end = start + rt->sse_line.len, *nl;
    while ((nl = memchr(start, '\n', (size_t)(end - start)))) {
        const char *k = memmem(start, (size_t)(nl - start), "\"notes\":\"rt ", 12);
        long long n;
        if (k && strncmp(start, "data:", 5) == 0 && sscanf(k + 12, "%lld", &n) == 1 && n >= 0 &&
            n < rt->nchanges && atomic_load(&rt->sse_us[n]) == 0)
            atomic_store(&rt->sse_us[n], t);
        start = nl + 1;
    }
    size_t rest = (size_t)(end - start);
    memmove(rt->sse_line.data, start, rest);
    rt->sse_line.len = rest;
    return len;
}

static int rt_sse_stop(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    return atomic_load(&((rt_t *)arg)->stop) ? 1 : 0;
}

static void *rt_sse(void *arg)
{
    rt_t *rt = arg;
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    char url[256], auth[300];
    snprintf(url, sizeof url, "%s/v1/changes/stream", rt->e->api.base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", rt->e->api.token);
    struct curl_slist *hd = curl_slist_append(NULL, auth);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, rt_sse_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, rt);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, rt_sse_stop);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, rt);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    int64_t left_s = (rt->e->o->deadline_us - ts_mono_us()) / 1000000;
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)(left_s > 1 ? left_s : 1));
    curl_easy_perform(c); /* until rt->stop (the progress callback aborts it) */
    curl_slist_free_all(hd);
    curl_easy_cleanup(c);
    return NULL;
}

int bench_wl_realtime(const bench_opts_t *o, int run, bench_result_t *res)
{
    (void)run;
    if (o->endpoint) {
        fprintf(stderr, "bench: realtime starts its own therasyncd (it listens to its events): "
                        "drop --endpoint\n");
        return -1;
    }
    int64_t n = o->n; /* remote changes */
    double remote_s = (double)n / RT_REMOTE_RATE;
    size_t nlocal = (size_t)((remote_s + RT_WARMUP_US / 1e6 + RT_TAIL_US / 1e6 + 2) * RT_LOCAL_RATE);
    bench_reqs_t reqs = {0};
    gen_rng_t rng;
    gen_rng_seed(&rng, GEN_SEED);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < nlocal; i++) {
        gen_session_t s;
        gen_session(&rng, (int64_t)i, &s);
        ts_buf_t *b = &reqs.data;
        if (ts_buf_printf(b, "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"create\",\"params\":"
                             "{\"collection\":\"sessions\",\"doc\":", reqs.n) ||
            gen_session_json(&s, false, b) || ts_buf_puts(b, "}}") || bench_reqs_end(&reqs))
            rc = -1;
    }
    int64_t *resp_us = calloc((size_t)n, sizeof *resp_us);
    int64_t *lat = calloc((size_t)n, sizeof *lat), *http_lat = calloc((size_t)n, sizeof *http_lat);
    rt_t rt = {.reqs = &reqs, .nchanges = n};
    rt.evt_us = calloc((size_t)n, sizeof *rt.evt_us);
    rt.sse_us = calloc((size_t)n, sizeof *rt.sse_us);
    int64_t *sse_lat = calloc((size_t)n, sizeof *sse_lat);
    env_t e = {0};
    rc = rc || !resp_us || !lat || !http_lat || !rt.evt_us || !rt.sse_us || !sse_lat
             ? -1
             : bench_env_up(&e, o);
    rt.e = &e;
    pthread_t lt, wt, sset;
    bool listening = false, writing = false, streaming = false;
    if (rc == 0)
        listening = pthread_create(&lt, NULL, rt_listener, &rt) == 0;
    if (rc == 0)
        streaming = pthread_create(&sset, NULL, rt_sse, &rt) == 0;
    usleep(200000); /* the SUB socket joins */
    /* The documents the remote changes go to, created at clinic-api. */
    ts_buf_t body = {0}, out = {0};
    for (int j = 0; rc == 0 && j < RT_DOCS; j++) {
        ts_buf_reset(&body);
        ts_buf_printf(&body,
                      "{\"id\":\"rt-bench-%d\",\"therapist_id\":\"t-rt\",\"patient_id\":\"p-rt\","
                      "\"scheduled_at\":\"2026-06-01T10:00:00.000Z\",\"duration_min\":50,"
                      "\"status\":\"scheduled\",\"notes\":\"rt seed\"}",
                      j);
        long st = bench_http(&e.http, &e.api, "POST", "/v1/sessions", body.data, &out);
        if (st != 201 && st != 200) {
            fprintf(stderr, "bench: realtime: POST /v1/sessions: %ld %.200s\n", st,
                    out.data ? out.data : "");
            rc = -1;
        }
    }
    for (int i = 0; rc == 0 && atomic_load(&rt.seeds) < RT_DOCS && i < 1000; i++)
        usleep(10000);
    if (rc == 0 && atomic_load(&rt.seeds) < RT_DOCS) {
        fprintf(stderr, "bench: realtime: %lld of %d seed documents arrived as events\n",
                (long long)atomic_load(&rt.seeds), RT_DOCS);
        rc = -1;
    }
    if (rc == 0)
        writing = pthread_create(&wt, NULL, rt_writer, &rt) == 0;
    if (rc == 0 && !writing)
        rc = -1;
    usleep(RT_WARMUP_US);
    /* Remote changes, paced, each timed at its HTTP response. */
    int64_t t0 = ts_mono_us();
    atomic_store(&rt.window_from, t0);
    size_t http_bad = 0;
    int64_t made = 0;
    for (int64_t k = 0; rc == 0 && k < n && ts_mono_us() < o->deadline_us; k++) {
        int64_t due = t0 + k * 1000000 / RT_REMOTE_RATE, now = ts_mono_us();
        if (due > now)
            usleep((useconds_t)(due - now));
        char path[64], patch[64];
        snprintf(path, sizeof path, "/v1/sessions/rt-bench-%lld", (long long)(k % RT_DOCS));
        snprintf(patch, sizeof patch, "{\"notes\":\"rt %lld\"}", (long long)k);
        int64_t ts = ts_mono_us();
        long st = bench_http(&e.http, &e.api, "PATCH", path, patch, &out);
        resp_us[k] = ts_mono_us();
        http_lat[k] = resp_us[k] - ts;
        if (st != 200)
            http_bad++;
        made = k + 1;
    }
    int64_t t_end = ts_mono_us();
    atomic_store(&rt.window_to, t_end);
    /* Wait for the stragglers. */
    int64_t missing = made;
    for (int64_t until = ts_mono_us() + RT_TAIL_US; rc == 0 && ts_mono_us() < until;) {
        missing = 0;
        for (int64_t k = 0; k < made; k++)
            missing += atomic_load(&rt.evt_us[k]) == 0;
        if (missing == 0)
            break;
        usleep(20000);
    }
    atomic_store(&rt.stop, true);
    if (writing)
        pthread_join(wt, NULL);
    if (listening)
        pthread_join(lt, NULL);
    if (streaming)
        pthread_join(sset, NULL);
    size_t nl = 0, early = 0, ns = 0;
    for (int64_t k = 0; k < made; k++) {
        int64_t sv = atomic_load(&rt.sse_us[k]);
        if (sv)
            sse_lat[ns++] = sv > resp_us[k] ? sv - resp_us[k] : 0;
    }
    for (int64_t k = 0; k < made; k++) {
        int64_t ev = atomic_load(&rt.evt_us[k]);
        if (!ev)
            continue;
        if (ev < resp_us[k])
            early++; /* the event beat curl's return: counted as 0 */
        lat[nl++] = ev > resp_us[k] ? ev - resp_us[k] : 0;
    }
    double window = (double)(t_end - t0) / 1e6;
    res->seconds = window;
    res->ops_per_s = window > 0 ? (double)atomic_load(&rt.in_window) / window : 0;
    res->p50_us = nl ? bench_percentile(lat, nl, 50) : -1;
    res->p99_us = nl ? bench_percentile(lat, nl, 99) : -1;
    ts_buf_printf(&res->extra,
                  ",\"remote_changes\":%lld,\"remote_per_s\":%.0f,\"events_matched\":%zu,"
                  "\"missing\":%lld,\"event_before_response\":%zu,\"max_us\":%lld,"
                  "\"http_p50_us\":%lld,\"http_p99_us\":%lld,\"http_errors\":%zu,"
                  "\"local_target_per_s\":%d,\"local_answered\":%lld,\"validation_failed\":%lld,"
                  "\"errors\":%lld,\"server_stream_p50_us\":%lld,\"server_stream_p99_us\":%lld,"
                  "\"server_stream_seen\":%zu",
                  (long long)made, window > 0 ? (double)made / window : 0, nl,
                  (long long)(made - (int64_t)nl), early,
                  (long long)(nl ? bench_percentile(lat, nl, 100) : -1),
                  (long long)(made ? bench_percentile(http_lat, (size_t)made, 50) : -1),
                  (long long)(made ? bench_percentile(http_lat, (size_t)made, 99) : -1), http_bad,
                  RT_LOCAL_RATE, (long long)atomic_load(&rt.answered),
                  (long long)atomic_load(&rt.refused), (long long)atomic_load(&rt.errors),
                  (long long)(ns ? bench_percentile(sse_lat, ns, 50) : -1),
                  (long long)(ns ? bench_percentile(sse_lat, ns, 99) : -1), ns);
    if (rc == 0 && (made < n || (int64_t)nl < made || http_bad || atomic_load(&rt.errors)))
        rc = -1;
    bench_env_down(&e);
    ts_buf_free(&body);
    ts_buf_free(&out);
    bench_reqs_free(&reqs);
    free(resp_us);
    free(lat);
    free(http_lat);
    free(rt.evt_us);
    free(rt.sse_us);
    free(sse_lat);
    ts_buf_free(&rt.sse_line);
    return rc;
}
