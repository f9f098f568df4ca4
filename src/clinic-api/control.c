/* control.c — fault settings behind a mutex, with an atomic "any fault set"
 * flag so that the common case (no faults) costs one atomic load. */
#include "control.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdint.h>
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
