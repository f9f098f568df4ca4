/* control.c — fault settings behind a mutex, with an atomic "any fault set"
 * flag so that the common case (no faults) costs one atomic load. */
#include "control.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

ca_stats_t ca_stats;

static pthread_mutex_t faults_lock = PTHREAD_MUTEX_INITIALIZER;
static ca_faults_t faults = {.status = 503, .retry_after = 1};
static atomic_bool faults_active;

void ca_faults_defaults(ca_faults_t *f)
{
    *f = (ca_faults_t){.status = 503, .retry_after = 1};
}

void ca_faults_set(const ca_faults_t *f)
{
    pthread_mutex_lock(&faults_lock);
    faults = *f;
    atomic_store(&faults_active,
                 f->fail_rate > 0 || f->latency_ms > 0 || f->answer_latency_ms > 0 || f->drop_rate > 0 || f->offline ||
                     f->garbage_rate > 0);
    pthread_mutex_unlock(&faults_lock);
}

bool ca_faults_get(ca_faults_t *f)
{
    if (!atomic_load_explicit(&faults_active, memory_order_acquire)) {
        ca_faults_defaults(f);
        return false;
    }
    pthread_mutex_lock(&faults_lock);
    *f = faults;
    pthread_mutex_unlock(&faults_lock);
    return true;
}

/* Reads an optional number field within [lo, hi]; -1 when out of range. */
static int num_field(const cJSON *obj, const char *key, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) /* casts follow */
        return -1;
    *out = v->valuedouble;
    return 0;
}

int ca_faults_parse(const char *json, size_t len, ca_faults_t *f, const char **err)
{
    ca_faults_defaults(f);
    cJSON *obj = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        *err = "body must be a JSON object";
        return -1;
    }
    double status = f->status, latency = 0, answer_latency = 0, retry = f->retry_after;
    int rc = -1;
    if (num_field(obj, "fail_rate", 0, 1, &f->fail_rate) < 0)
        *err = "fail_rate must be a number in [0,1]";
    else if (num_field(obj, "drop_rate", 0, 1, &f->drop_rate) < 0)
        *err = "drop_rate must be a number in [0,1]";
    else if (num_field(obj, "garbage_rate", 0, 1, &f->garbage_rate) < 0)
        *err = "garbage_rate must be a number in [0,1]";
    else if (num_field(obj, "status", 400, 599, &status) < 0)
        *err = "status must be an HTTP error status (400-599)";
    else if (num_field(obj, "latency_ms", 0, 600000, &latency) < 0)
        *err = "latency_ms must be a number in [0,600000]";
    else if (num_field(obj, "answer_latency_ms", 0, 600000, &answer_latency) < 0)
        *err = "answer_latency_ms must be a number in [0,600000]";
    else if (num_field(obj, "retry_after", 0, 86400, &retry) < 0)
        *err = "retry_after must be a number of seconds in [0,86400]";
    else {
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(obj, "offline");
        if (off && !cJSON_IsBool(off) && !cJSON_IsNull(off)) {
            *err = "offline must be a boolean";
        } else {
            f->offline = cJSON_IsTrue(off);
            f->status = (int)status;
            f->latency_ms = (int)latency;
            f->answer_latency_ms = (int)answer_latency;
            f->retry_after = (int)retry;
            rc = 0;
        }
    }
    cJSON_Delete(obj);
    return rc;
}

int ca_faults_json(const ca_faults_t *f, ts_buf_t *out)
{
    return ts_buf_printf(out,
                         "{\"fail_rate\":%g,\"status\":%d,\"latency_ms\":%d,\"answer_latency_ms\":%d,"
                         "\"drop_rate\":%g,\"offline\":%s,\"retry_after\":%d,\"garbage_rate\":%g}",
                         f->fail_rate, f->status, f->latency_ms, f->answer_latency_ms, f->drop_rate,
                         f->offline ? "true" : "false", f->retry_after, f->garbage_rate);
}

int ca_stats_json(ts_buf_t *out)
{
    return ts_buf_printf(out,
                         "{\"requests\":%lld,\"applied_writes\":%lld,\"idempotent_replays\":%lld,"
                         "\"idempotency_mismatches\":%lld,"
                         "\"faults_failed\":%lld,\"faults_dropped\":%lld,\"faults_delayed\":%lld,"
                         "\"commits\":%lld,\"tokens_issued\":%lld,\"unauthorized\":%lld,"
                         "\"batches\":%lld,\"batch_ops\":%lld,\"header_timeouts\":%lld,"
                         "\"malformed\":%lld,\"faults_garbled\":%lld,\"doc_gets\":%lld,"
                         "\"list_requests\":%lld,\"not_modified\":%lld}",
                         atomic_load(&ca_stats.requests), atomic_load(&ca_stats.applied_writes),
                         atomic_load(&ca_stats.idempotent_replays),
                         atomic_load(&ca_stats.idempotency_mismatches),
                         atomic_load(&ca_stats.faults_failed),
                         atomic_load(&ca_stats.faults_dropped),
                         atomic_load(&ca_stats.faults_delayed), atomic_load(&ca_stats.commits),
                         atomic_load(&ca_stats.tokens_issued), atomic_load(&ca_stats.unauthorized),
                         atomic_load(&ca_stats.batches), atomic_load(&ca_stats.batch_ops),
                         atomic_load(&ca_stats.header_timeouts), atomic_load(&ca_stats.malformed),
                         atomic_load(&ca_stats.faults_garbled), atomic_load(&ca_stats.doc_gets),
                         atomic_load(&ca_stats.list_requests), atomic_load(&ca_stats.not_modified));
}

atomic_llong ca_feed_streams, ca_feed_polls;

static const struct {
    const char *method, *path;
} routes[CA_R__COUNT] = {
    [CA_R_LIST] = {"GET", "/v1/{collection}"},
    [CA_R_CREATE] = {"POST", "/v1/{collection}"},
    [CA_R_GET] = {"GET", "/v1/{collection}/{id}"},
    [CA_R_PATCH] = {"PATCH", "/v1/{collection}/{id}"},
    [CA_R_DELETE] = {"DELETE", "/v1/{collection}/{id}"},
    [CA_R_DIGEST] = {"GET", "/v1/{collection}/digest"},
    [CA_R_CHANGES] = {"GET", "/v1/changes"},
    [CA_R_STREAM] = {"GET", "/v1/changes/stream"},
    [CA_R_BATCH] = {"POST", "/v1/_batch"},
    [CA_R_TOKEN] = {"POST", "/oauth/token"},
    [CA_R_CONTROL] = {"any", "/_control/..."},
    [CA_R_HEALTHZ] = {"GET", "/healthz"},
    [CA_R_METRICS] = {"GET", "/metrics"},
    [CA_R_OTHER] = {"any", "other"},
};

/* [route][status - 100] */
static atomic_llong answered[CA_R__COUNT][500];

ca_route_t ca_route_of(const char *method, const char *url)
{
    ca_route_t r = CA_R_OTHER;
    if (strncmp(url, "/_control/", 10) == 0)
        return CA_R_CONTROL;
    if (strcmp(url, "/healthz") == 0)
        r = CA_R_HEALTHZ;
    else if (strcmp(url, "/metrics") == 0)
        r = CA_R_METRICS;
    else if (strcmp(url, "/oauth/token") == 0)
        r = CA_R_TOKEN;
    else if (strcmp(url, "/v1/changes") == 0)
        r = CA_R_CHANGES;
    else if (strcmp(url, "/v1/changes/stream") == 0)
        r = CA_R_STREAM;
    else if (strcmp(url, "/v1/_batch") == 0)
        r = CA_R_BATCH;
    else if (strncmp(url, "/v1/", 4) == 0 && url[4] && url[4] != '/') {
        const char *slash = strchr(url + 4, '/');
        if (!slash || !slash[1])
            r = strcmp(method, "POST") == 0 ? CA_R_CREATE : CA_R_LIST;
        else if (strchr(slash + 1, '/'))
            r = CA_R_OTHER;
        else if (strcmp(slash + 1, "digest") == 0)
            r = CA_R_DIGEST;
        else
            r = strcmp(method, "PATCH") == 0    ? CA_R_PATCH
                : strcmp(method, "DELETE") == 0 ? CA_R_DELETE
                                                : CA_R_GET;
    }
    /* a method the route does not take: "other", with its status (405) */
    return r != CA_R_OTHER && strcmp(method, routes[r].method) != 0 ? CA_R_OTHER : r;
}

void ca_stats_answered(ca_route_t route, unsigned status)
{
    if (route < CA_R__COUNT && status >= 100 && status < 600)
        atomic_fetch_add_explicit(&answered[route][status - 100], 1, memory_order_relaxed);
}

int ca_stats_prometheus(ts_buf_t *out)
{
    ts_buf_puts(out, "# HELP clinic_api_requests_total Requests answered, by route and status.\n"
                     "# TYPE clinic_api_requests_total counter\n");
    for (int r = 0; r < CA_R__COUNT; r++)
        for (int s = 0; s < 500; s++) {
            long long n = atomic_load_explicit(&answered[r][s], memory_order_relaxed);
            if (n)
                ts_buf_printf(out,
                              "clinic_api_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} "
                              "%lld\n",
                              routes[r].method, routes[r].path, s + 100, n);
        }
    ts_buf_puts(out, "# HELP clinic_api_faults_injected_total Requests the fault injection "
                     "failed, dropped, delayed or garbled.\n"
                     "# TYPE clinic_api_faults_injected_total counter\n");
    const struct {
        const char *kind;
        atomic_llong *n;
    } injected[] = {{"failed", &ca_stats.faults_failed},
                  {"dropped", &ca_stats.faults_dropped},
                  {"delayed", &ca_stats.faults_delayed},
                  {"garbled", &ca_stats.faults_garbled}};
    for (size_t i = 0; i < sizeof injected / sizeof *injected; i++)
        ts_buf_printf(out, "clinic_api_faults_injected_total{kind=\"%s\"} %lld\n",
                      injected[i].kind, atomic_load(injected[i].n));
    ts_buf_printf(out,
                  "# HELP clinic_api_feed_subscribers Change feed readers now: open event "
                  "streams and long polls waiting.\n"
                  "# TYPE clinic_api_feed_subscribers gauge\n"
                  "clinic_api_feed_subscribers{kind=\"stream\"} %lld\n"
                  "clinic_api_feed_subscribers{kind=\"long_poll\"} %lld\n",
                  atomic_load(&ca_feed_streams), atomic_load(&ca_feed_polls));
    const struct {
        const char *name, *help;
        atomic_llong *n;
    } counters[] = {
        {"applied_writes", "Creates, patches and deletes committed.", &ca_stats.applied_writes},
        {"idempotent_replays", "Answers served from the idempotency table.",
         &ca_stats.idempotent_replays},
        {"idempotency_mismatches", "Idempotency keys reused for another request (422).",
         &ca_stats.idempotency_mismatches},
        {"commits", "SQLite write transactions (group commits).", &ca_stats.commits},
        {"tokens_issued", "Access tokens handed out.", &ca_stats.tokens_issued},
        {"unauthorized", "401 answers.", &ca_stats.unauthorized},
        {"batches", "POST /v1/_batch requests answered 200.", &ca_stats.batches},
        {"batch_ops", "Operations in those batches.", &ca_stats.batch_ops},
        {"header_timeouts", "Connections closed at the header deadline.",
         &ca_stats.header_timeouts},
        {"malformed", "Requests refused for their HTTP framing (400).", &ca_stats.malformed},
        {"not_modified", "304 answers.", &ca_stats.not_modified},
    };
    for (size_t i = 0; i < sizeof counters / sizeof *counters; i++)
        ts_buf_printf(out,
                      "# HELP clinic_api_%s_total %s\n# TYPE clinic_api_%s_total counter\n"
                      "clinic_api_%s_total %lld\n",
                      counters[i].name, counters[i].help, counters[i].name, counters[i].name,
                      atomic_load(counters[i].n));
    return 0;
}

double ca_rand01(void)
{
    /* xorshift64*, seeded per thread from the kernel. */
    static _Thread_local uint64_t s;
    if (s == 0) {
        if (getrandom(&s, sizeof s, 0) != sizeof s || s == 0)
            s = (uint64_t)ts_mono_us() | 1;
    }
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return (double)((s * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}
