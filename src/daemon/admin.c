/* admin.c — the admin endpoint (admin.h): libmicrohttpd on a loopback
 * address, a few threads of its own, and one DEALER to the front door's
 * admin socket shared under a lock.
 *
 * A scrape asks the engine at most every FRESH_US: concurrent scrapes (a
 * thousand dashboards, or one scraper retrying) share the last answer,
 * so they cost the engine one `metrics` call, not one each, and the
 * endpoint one rendering of it: under the lock a scrape only copies the
 * text. A scrape that
 * cannot get the lock or an answer in time is answered 503, never held;
 * for FAILED_REUSE_US after a call failed, the others get its 503 at once. */
#include "admin.h"

#include "msgs/endpoints.h"
#include "therasync/hist.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define LOG "admin"
#define FRESH_US 200000    /* answers reused this long */
#define RPC_TIMEOUT_MS 2000 /* the front door's answer, or 503 */
#define LOCK_WAIT_S 3       /* waiting for another scrape's call, or 503 */
#define FAILED_REUSE_US 1000000 /* a failure answers the scrapes this long after it */
#define THREADS 2
#define MAX_CONNECTIONS 4096 /* beyond it MHD closes new connections at once */

struct ts_admin {
    void *zctx;
    struct MHD_Daemon *mhd;
    atomic_bool ready, stopping;
    pthread_mutex_t lock; /* the fields below */
    void *dealer;
    unsigned next_id;
    int64_t fetched_us;   /* when metrics/status were last asked */
    int64_t failed_us;    /* when the last failed ask ended */
    cJSON *metrics, *status;
    char *text;           /* metrics and status as Prometheus text, once rendered */
    size_t text_len;
    char error[160];      /* why the last ask failed ("" when it did not) */
};

/* ---- Prometheus text ---- */

static void help_type(ts_buf_t *out, const char *name, const char *type, const char *help)
{
    ts_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the exposition format wants. */
static void label(ts_buf_t *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            ts_buf_append(out, "\\", 1);
        if (*p == '\n')
            ts_buf_puts(out, "\\n");
        else
            ts_buf_append(out, p, 1);
    }
}

/* Metric names take [a-zA-Z0-9_:]; the engine's keys are [a-z0-9_.]. */
static void name_part(char *out, size_t outlen, const char *prefix, const char *key)
{
    snprintf(out, outlen, "%s_%s", prefix, key);
    for (char *p = out; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == ':'))
            *p = '_';
}

/* Fields that go up and down; every other number of `metrics` counts. */
static bool is_gauge(const char *key)
{
    static const char *const gauges[] = {
        "inflight", "pending", "wal_pages", "outbox_packs", "hit_ratio", "entries", "bytes",
        "max_bytes", "subscriptions", "live_queries", "ondemand_entries", "front_groups",
        "commit_us_max"};
    for (size_t i = 0; i < sizeof gauges / sizeof *gauges; i++)
        if (strcmp(key, gauges[i]) == 0)
            return true;
    return false;
}

/* A {"le", "counts", "count", "sum"} object (ts_hist_buckets_json, in
 * microseconds) as the samples of histogram name (in seconds), with one
 * label pair or none. */
static void histogram_samples(ts_buf_t *out, const char *name, const char *lname,
                              const char *lvalue, const cJSON *b)
{
    const cJSON *le = cJSON_GetObjectItemCaseSensitive(b, "le");
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(b, "counts");
    const cJSON *count = cJSON_GetObjectItemCaseSensitive(b, "count");
    const cJSON *sum = cJSON_GetObjectItemCaseSensitive(b, "sum");
    int n = cJSON_GetArraySize(le);
    if (!cJSON_IsNumber(count) || !cJSON_IsNumber(sum) || n != cJSON_GetArraySize(counts))
        return;
    for (int i = 0; i <= n; i++) {
        ts_buf_printf(out, "%s_bucket{", name);
        if (lname) {
            ts_buf_printf(out, "%s=\"", lname);
            label(out, lvalue);
            ts_buf_puts(out, "\",");
        }
        if (i < n)
            ts_buf_printf(out, "le=\"%g\"} %.0f\n", cJSON_GetArrayItem(le, i)->valuedouble / 1e6,
                          cJSON_GetArrayItem(counts, i)->valuedouble);
        else
            ts_buf_printf(out, "le=\"+Inf\"} %.0f\n", count->valuedouble);
    }
    const char *sfx[] = {"sum", "count"};
    for (int k = 0; k < 2; k++) {
        ts_buf_printf(out, "%s_%s", name, sfx[k]);
        if (lname) {
            ts_buf_printf(out, "{%s=\"", lname);
            label(out, lvalue);
            ts_buf_puts(out, "\"}");
        }
        ts_buf_printf(out, k ? " %.0f\n" : " %.6f\n",
                      k ? count->valuedouble : sum->valuedouble / 1e6);
    }
}

/* An object of {label value: number} as one metric with a label. */
static void labelled(ts_buf_t *out, const char *name, const char *type, const char *help,
                     const char *lname, const cJSON *obj)
{
    if (!cJSON_IsObject(obj) || !obj->child)
        return;
    help_type(out, name, type, help);
    for (const cJSON *x = obj->child; x; x = x->next) {
        if (!cJSON_IsNumber(x))
            continue;
        ts_buf_printf(out, "%s{%s=\"", name, lname);
        label(out, x->string);
        ts_buf_printf(out, "\"} %.17g\n", x->valuedouble);
    }
}

/* The numbers of one section, nested objects flattened with '_'. Skips
 * what the histograms carry (p50/p99/avg and the buckets themselves). */
static void section(ts_buf_t *out, const char *prefix, const char *path, const cJSON *obj)
{
    for (const cJSON *x = obj ? obj->child : NULL; x; x = x->next) {
        char name[160], help[200];
        name_part(name, sizeof name, prefix, x->string);
        snprintf(help, sizeof help, "`metrics` field %s.%s", path, x->string);
        size_t klen = strlen(x->string);
        if (cJSON_IsObject(x)) {
            char sub[160];
            snprintf(sub, sizeof sub, "%s.%s", path, x->string);
            bool histogram = cJSON_GetObjectItemCaseSensitive(x, "le") ||
                             cJSON_GetObjectItemCaseSensitive(x, "buckets");
            bool by_label = strcmp(path, "store") == 0 && (strcmp(x->string, "calls") == 0 ||
                                                           strcmp(x->string, "documents") == 0);
            if (!histogram && !by_label)
                section(out, name, sub, x);
            continue;
        }
        if (!cJSON_IsNumber(x) || (klen > 4 && (strcmp(x->string + klen - 4, "_p50") == 0 ||
                                                strcmp(x->string + klen - 4, "_p99") == 0 ||
                                                strcmp(x->string + klen - 4, "_avg") == 0)))
            continue;
        bool gauge = is_gauge(x->string);
        char full[180];
        snprintf(full, sizeof full, "%s%s", name, gauge ? "" : "_total");
        help_type(out, full, gauge ? "gauge" : "counter", help);
        ts_buf_printf(out, "%s %.17g\n", full, x->valuedouble);
    }
}

static void prometheus(const cJSON *m, const cJSON *st, ts_buf_t *out)
{
    help_type(out, "therasync_info", "gauge", "The daemon's version (always 1).");
    ts_buf_puts(out, "therasync_info{version=\"");
    label(out, TS_VERSION);
    ts_buf_puts(out, "\"} 1\n");
    if (st) {
        const cJSON *up = cJSON_GetObjectItemCaseSensitive(st, "uptime_s");
        if (cJSON_IsNumber(up)) {
            help_type(out, "therasync_uptime_seconds", "gauge",
                      "Seconds since the daemon started.");
            ts_buf_printf(out, "therasync_uptime_seconds %.17g\n", up->valuedouble);
        }
        help_type(out, "therasync_sync_online", "gauge",
                  "1 while the sync actor reaches the Clinic API (status.online).");
        ts_buf_printf(out, "therasync_sync_online %d\n",
                      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "online")));
        const char *gauges[][2] = {
            {"pending", "Documents with local writes the server has not confirmed."},
            {"queued", "Writes queued in the sync actor."},
            {"in_flight", "Writes sent to the Clinic API, not answered yet."},
            {"stuck", "Documents whose head failed sync.stuck_after rounds."},
            {"oldest_pending_age_s", "Age in seconds of the oldest unconfirmed write."}};
        for (size_t i = 0; i < sizeof gauges / sizeof *gauges; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(st, gauges[i][0]);
            char name[80];
            snprintf(name, sizeof name, "therasync_sync_%s", gauges[i][0]);
            if (strcmp(gauges[i][0], "oldest_pending_age_s") == 0)
                snprintf(name, sizeof name, "therasync_sync_oldest_pending_age_seconds");
            help_type(out, name, "gauge", gauges[i][1]);
            ts_buf_printf(out, "%s %.17g\n", name, cJSON_IsNumber(v) ? v->valuedouble : 0);
        }
        const char *states[][3] = {
            {"feed", "therasync_sync_feed",
             "How remote changes arrive (status.feed): 1 for the current state."},
            {"api", "therasync_api_state",
             "The Clinic API connection (status.api): 1 for the current state."},
            {"storage", "therasync_storage",
             "The data dir (status.storage): 1 for the current state."}};
        for (size_t i = 0; i < sizeof states / sizeof *states; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(st, states[i][0]);
            if (!cJSON_IsString(v))
                continue;
            help_type(out, states[i][1], "gauge", states[i][2]);
            ts_buf_printf(out, "%s{state=\"", states[i][1]);
            label(out, v->valuestring);
            ts_buf_puts(out, "\"} 1\n");
        }
        const cJSON *repairs = cJSON_GetObjectItemCaseSensitive(st, "repairs");
        if (cJSON_IsNumber(repairs)) {
            help_type(out, "therasync_sync_repairs_total", "counter",
                      "Documents repaired by the consistency check.");
            ts_buf_printf(out, "therasync_sync_repairs_total %.17g\n", repairs->valuedouble);
        }
    }
    if (!m)
        return;
    const cJSON *store = cJSON_GetObjectItemCaseSensitive(m, "store");
    labelled(out, "therasync_store_calls_total", "counter", "Calls the store handled, by method.",
             "method", cJSON_GetObjectItemCaseSensitive(store, "calls"));
    labelled(out, "therasync_store_documents", "gauge", "Live documents, by collection.",
             "collection", cJSON_GetObjectItemCaseSensitive(store, "documents"));
    section(out, "therasync_store", "store", store);
    const cJSON *front = cJSON_GetObjectItemCaseSensitive(m, "front");
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(front, "latency_us");
    if (lat && lat->child) {
        help_type(out, "therasync_front_call_seconds", "histogram",
                  "Front door call latency, request in to answer out, by method.");
        for (const cJSON *x = lat->child; x; x = x->next)
            histogram_samples(out, "therasync_front_call_seconds", "method", x->string,
                              cJSON_GetObjectItemCaseSensitive(x, "buckets"));
    }
    section(out, "therasync_front", "front", front);
    const cJSON *persist = cJSON_GetObjectItemCaseSensitive(m, "persist");
    const cJSON *commits = cJSON_GetObjectItemCaseSensitive(persist, "commit_us_buckets");
    if (commits) {
        help_type(out, "therasync_persist_commit_seconds", "histogram",
                  "Wall time of a SQLite commit, its fsync included.");
        histogram_samples(out, "therasync_persist_commit_seconds", NULL, NULL, commits);
    }
    section(out, "therasync_persist", "persist", persist);
    const cJSON *cache = cJSON_GetObjectItemCaseSensitive(m, "cache");
    const cJSON *notify = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cache, "notify_latency_us"), "buckets");
    if (notify) {
        help_type(out, "therasync_cache_notify_seconds", "histogram",
                  "From a change to the live-query notice it causes.");
        histogram_samples(out, "therasync_cache_notify_seconds", NULL, NULL, notify);
    }
    section(out, "therasync_cache", "cache", cache);
    /* sections added later come out too, as counters and gauges */
    for (const cJSON *x = m->child; x; x = x->next) {
        static const char *const known[] = {"store", "front", "persist", "cache"};
        bool seen = false;
        for (size_t i = 0; i < 4; i++)
            seen = seen || strcmp(x->string, known[i]) == 0;
        if (!seen && cJSON_IsObject(x)) {
            char prefix[80];
            name_part(prefix, sizeof prefix, "therasync", x->string);
            section(out, prefix, x->string, x);
        }
    }
}

/* ---- asking the front door ---- */

/* One call on the DEALER (the lock held); the result (caller deletes) or
 * NULL with a->error set. */
static cJSON *rpc(ts_admin_t *a, const char *method)
{
    if (!a->dealer) {
        a->dealer = zmq_socket(a->zctx, ZMQ_DEALER);
        int zero = 0;
        if (!a->dealer || (zmq_setsockopt(a->dealer, ZMQ_LINGER, &zero, sizeof zero),
                           zmq_connect(a->dealer, TS_INPROC_FRONT_ADMIN))) {
            snprintf(a->error, sizeof a->error, "cannot reach the front door: %s",
                     zmq_strerror(zmq_errno()));
            if (a->dealer)
                zmq_close(a->dealer);
            a->dealer = NULL;
            return NULL;
        }
    }
    unsigned id = ++a->next_id;
    char req[128];
    int n = snprintf(req, sizeof req, "{\"jsonrpc\":\"2.0\",\"id\":%u,\"method\":\"%s\"}", id,
                     method);
    if (zmq_send(a->dealer, req, (size_t)n, ZMQ_DONTWAIT) < 0) {
        snprintf(a->error, sizeof a->error, "cannot ask the front door: %s",
                 zmq_strerror(zmq_errno()));
        return NULL;
    }
    int64_t deadline = ts_mono_us() + RPC_TIMEOUT_MS * 1000LL;
    for (;;) {
        int64_t left = (deadline - ts_mono_us()) / 1000;
        zmq_pollitem_t item = {.socket = a->dealer, .events = ZMQ_POLLIN};
        if (left <= 0 || zmq_poll(&item, 1, (long)left) <= 0) {
            snprintf(a->error, sizeof a->error, "the engine did not answer %s within %d ms",
                     method, RPC_TIMEOUT_MS);
            return NULL;
        }
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, a->dealer, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            continue;
        }
        cJSON *r = cJSON_ParseWithLength(zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(r, "id");
        if (!cJSON_IsNumber(rid) || (unsigned)rid->valuedouble != id) {
            cJSON_Delete(r); /* the late answer of a call that timed out */
            continue;
        }
        cJSON *result = cJSON_DetachItemFromObjectCaseSensitive(r, "result");
        if (!result) {
            const cJSON *msg_ = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(r, "error"), "message");
            snprintf(a->error, sizeof a->error, "%s failed: %s", method,
                     cJSON_IsString(msg_) ? msg_->valuestring : "?");
        }
        cJSON_Delete(r);
        return result;
    }
}

/* Brings a->metrics and a->status up to date when older than FRESH_US
 * (the lock held). 0, or -1 with a->error. */
static int refresh(ts_admin_t *a, bool want_metrics)
{
    int64_t now = ts_mono_us();
    if (a->fetched_us && now - a->fetched_us < FRESH_US && (a->metrics || !want_metrics) &&
        !*a->error)
        return 0;
    /* The engine just failed to answer: the scrapes queued behind that
     * call get the same answer at once, not a wait of their own each. */
    if (*a->error && now - a->failed_us < FAILED_REUSE_US)
        return -1;
    a->error[0] = '\0';
    cJSON *st = rpc(a, "status");
    cJSON *m = st && want_metrics ? rpc(a, "metrics") : NULL;
    if (!st || (want_metrics && !m)) {
        cJSON_Delete(st);
        cJSON_Delete(m);
        a->fetched_us = 0;
        a->failed_us = ts_mono_us();
        return -1;
    }
    cJSON_Delete(a->status);
    a->status = st;
    cJSON_Delete(a->metrics); /* none kept older than the status */
    a->metrics = m;
    free(a->text);
    a->text = NULL;
    a->fetched_us = now;
    return 0;
}

/* Takes the lock within LOCK_WAIT_S. */
static bool lock(ts_admin_t *a)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += LOCK_WAIT_S;
    return pthread_mutex_timedlock(&a->lock, &until) == 0;
}

/* ---- HTTP ---- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ts_buf_t b = {0};
    ts_buf_printf(&b, "%s\n", line);
    size_t len = b.len;
    char *body = ts_buf_take(&b, &len);
    return body ? reply(c, status, "text/plain; charset=utf-8", body, len) : MHD_NO;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **state)
{
    (void)version, (void)upload;
    ts_admin_t *a = cls;
    if (!*state) { /* headers only so far: answer on the next call */
        *state = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* a body is not wanted; ignored */
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only");
    bool health = strcmp(url, "/healthz") == 0, ready = strcmp(url, "/readyz") == 0,
         metrics = strcmp(url, "/metrics") == 0;
    if (!health && !ready && !metrics)
        return text(c, MHD_HTTP_NOT_FOUND, "not found: /metrics, /healthz and /readyz are here");
    if (atomic_load(&a->stopping))
        return text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "stopping");
    if (!atomic_load(&a->ready))
        return health ? text(c, MHD_HTTP_OK, "ok: starting")
                      : text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                             "starting: the engine is not ready yet (data dir, policies, "
                             "recovery)");
    if (!lock(a))
        return text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                    "busy: other requests hold the engine's answer for over %d s", LOCK_WAIT_S);
    enum MHD_Result ret;
    if (refresh(a, metrics)) {
        ret = text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "%s", a->error);
    } else if (health) {
        ret = text(c, MHD_HTTP_OK, "ok");
    } else if (ready) {
        const cJSON *storage = cJSON_GetObjectItemCaseSensitive(a->status, "storage");
        if (cJSON_IsString(storage) && strcmp(storage->valuestring, "ok") != 0)
            ret = text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "storage: %s", storage->valuestring);
        else
            ret = text(c, MHD_HTTP_OK, "ready");
    } else {
        if (!a->text) {
            ts_buf_t b = {0};
            prometheus(a->metrics, a->status, &b);
            a->text = ts_buf_take(&b, &a->text_len);
        }
        char *body = a->text ? ts_memdup(a->text, a->text_len) : NULL;
        ret = body ? reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body,
                           a->text_len)
                   : text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
    }
    pthread_mutex_unlock(&a->lock);
    return ret;
}

ts_admin_t *ts_admin_start(void *zctx, const ts_config_t *config, char *bound, size_t boundlen)
{
    bool v6;
    unsigned port;
    char err[256];
    if (ts_admin_addr(config->admin, &v6, &port, err, sizeof err)) {
        ts_error(LOG, "%s", err);
        return NULL;
    }
    ts_admin_t *a = ts_xcalloc(1, sizeof *a);
    a->zctx = zctx;
    pthread_mutex_init(&a->lock, NULL);
    struct sockaddr_in in4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in6.sin6_addr = in6addr_loopback;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | (v6 ? MHD_USE_IPv6 : 0);
    a->mhd = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handle, a, MHD_OPTION_SOCK_ADDR,
        v6 ? (struct sockaddr *)&in6 : (struct sockaddr *)&in4, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)THREADS, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024), MHD_OPTION_END);
    if (!a->mhd) {
        ts_error(LOG, "cannot listen on %s: %s", config->admin, strerror(errno));
        pthread_mutex_destroy(&a->lock);
        free(a);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
    if (bound)
        snprintf(bound, boundlen, "%s:%u", v6 ? "[::1]" : "127.0.0.1",
                 di ? (unsigned)di->port : port);
    return a;
}

void ts_admin_set_ready(ts_admin_t *a)
{
    if (a)
        atomic_store(&a->ready, true);
}

void ts_admin_stop(ts_admin_t **ap)
{
    ts_admin_t *a = *ap;
    if (!a)
        return;
    atomic_store(&a->stopping, true);
    MHD_stop_daemon(a->mhd); /* waits for its threads, so no one holds the lock */
    if (a->dealer)
        zmq_close(a->dealer);
    cJSON_Delete(a->metrics);
    cJSON_Delete(a->status);
    free(a->text);
    pthread_mutex_destroy(&a->lock);
    free(a);
    *ap = NULL;
}
