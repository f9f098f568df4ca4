/* ondemand.c — the ondemand workload: concurrent identical cold reads of an
 * on-demand collection (the HTTP requests they make), and the cost of fresh
 * and stale hits (docs/CACHE.md "On-demand collections"; bench/README.md).
 *
 * Starts clinic-api --demo-patients D (unless --api) and therasyncd --api
 * with patients on demand (unless --endpoint is given: then its config must
 * have them, with fresh_ms of OD_FRESH_MS). Per run:
 *   cold:  clinic-api slowed by OD_COLD_LATENCY_MS, C clients x K in flight
 *          all get pat-0001 at once: http_requests = clinic-api doc_gets
 *          (target 1), every answer identical;
 *   warm:  pat-0002..pat-D fetched once each, then OD_SETTLE_US for their
 *          commit;
 *   fresh: N gets of those ids, within fresh_ms of the warm fetches:
 *          p50/p99, ops/s (every answer stale: false);
 *   stale: after fresh_ms, the same N gets, with clinic-api slowed by
 *          OD_STALE_LATENCY_MS so that each id's one background refresh is
 *          still out meanwhile and every answer is stale: true; then the
 *          refreshes made (target: one per id).
 * stale_vs_fresh_p50 is the stale p50 over the fresh one (target 1 +- 0.1).
 * Every wait is bounded; servers are stopped by pid. */
#include "bench.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define OD_FRESH_MS 5000
#define OD_MAX_STALE_MS 600000
#define OD_COLD_LATENCY_MS 200   /* the cold gets overlap the one fetch */
#define OD_STALE_LATENCY_MS 4000 /* below the engine's 5 s fetch timeout */
#define OD_SETTLE_US 500000
#define OD_REFRESH_WAIT_US (15 * 1000000LL)
#define START_TIMEOUT_S 60.0
#define STOP_TIMEOUT_S 60.0
#define COLD_ID 1

typedef struct {
    const bench_opts_t *o;
    bench_api_t api;
    bench_daemon_t d;
    const char *endpoint;
    char config[300];
    char demo[16];
    const char *api_extra[3];
    void *zctx, *rpc, *http;
    long rpc_id;
} od_env_t;

/* What the replies of one phase said (on_reply may run on driver threads). */
typedef struct {
    pthread_mutex_t lock;
    char *first;    /* the first reply's text from its result on */
    size_t differ;  /* replies whose result differs from the first's */
    size_t stale;   /* replies with "stale":true */
} od_seen_t;

/* ---- clinic-api and the engine ---- */

/* metrics.cache.<name> of the engine, or -1. */
static long long cache_metric(od_env_t *e, const char *name)
{
    cJSON *m = bench_rpc(e->rpc, ++e->rpc_id, "metrics", NULL, 5000);
    const cJSON *v =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "cache"), name);
    long long n = cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
    cJSON_Delete(m);
    return n;
}

static void env_down(od_env_t *e)
{
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

static int env_up(od_env_t *e)
{
    const bench_opts_t *o = e->o;
    snprintf(e->demo, sizeof e->demo, "%lld", (long long)o->docs);
    e->api_extra[0] = "--demo-patients";
    e->api_extra[1] = e->demo;
    e->api.extra = e->api_extra;
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
        if (!o->config) { /* patients on demand, the fresh_ms the phases are timed by */
            const char *tmp = getenv("TMPDIR");
            snprintf(e->config, sizeof e->config, "%s/therasync-bench-ondemand-XXXXXX.lua",
                     tmp && *tmp ? tmp : "/tmp");
            int fd = mkstemps(e->config, 4);
            FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
            if (!f)
                return -1;
            fprintf(f, "ondemand = { patients = { fresh_ms = %d, max_stale_ms = %d, "
                       "gc_ms = %d } }\n",
                    OD_FRESH_MS, OD_MAX_STALE_MS, OD_MAX_STALE_MS);
            fclose(f);
            e->d.config = e->config;
        }
        e->d.api = e->api.base;
        if (bench_daemon_mkdata(&e->d) || bench_daemon_start(&e->d, START_TIMEOUT_S))
            return -1;
        e->endpoint = e->d.endpoint;
    }
    e->zctx = zmq_ctx_new();
    e->rpc = zmq_socket(e->zctx, ZMQ_DEALER);
    bench_curve_client(e->rpc);
    int linger = 0;
    zmq_setsockopt(e->rpc, ZMQ_LINGER, &linger, sizeof linger);
    return zmq_connect(e->rpc, e->endpoint);
}

/* ---- phases ---- */

static void on_reply(void *arg, size_t i, const char *reply, size_t len)
{
    (void)i;
    od_seen_t *s = arg;
    const char *r = memmem(reply, len, ",\"result\":", 10);
    size_t rlen = r ? len - (size_t)(r - reply) : 0;
    bool stale = r && memmem(r, rlen, "\"stale\":true", 12);
    pthread_mutex_lock(&s->lock);
    if (stale)
        s->stale++;
    if (r && !s->first)
        s->first = ts_xstrndup(r, rlen);
    else if (r && (strlen(s->first) != rlen || memcmp(s->first, r, rlen)))
        s->differ++;
    pthread_mutex_unlock(&s->lock);
}

/* n gets: of pat-<COLD_ID> (cold), or of the warm ids pat-0002..pat-D
 * spread by a stride prime to their count. */
static int make_gets(bench_reqs_t *reqs, int64_t n, int64_t docs, bool cold)
{
    bench_reqs_reset(reqs);
    int64_t warm = docs - 1;
    for (int64_t i = 0; i < n; i++) {
        int64_t id = cold ? COLD_ID : 2 + (warm == 1 ? 0 : (i * 7919) % warm);
        if (ts_buf_printf(&reqs->data,
                          "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"get\",\"params\":"
                          "{\"collection\":\"patients\",\"id\":\"pat-%04lld\"}}",
                          reqs->n, (long long)id) ||
            bench_reqs_end(reqs))
            return -1;
    }
    return 0;
}

typedef struct {
    double seconds, ops_per_s;
    int64_t p50_us, p99_us;
    size_t stale, differ;
} phase_t;

static int phase(od_env_t *e, const bench_reqs_t *reqs, phase_t *ph)
{
    const bench_opts_t *o = e->o;
    od_seen_t seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
    int64_t *lat = calloc(reqs->n, sizeof *lat);
    bench_job_t job = {.endpoint = e->endpoint,
                       .clients = o->clients,
                       .inflight = o->inflight,
                       .threads = o->threads,
                       .reqs = reqs,
                       .deadline_us = o->deadline_us,
                       .lat_us = lat,
                       .on_reply = on_reply,
                       .arg = &seen};
    bench_outcome_t out = {0};
    int rc = lat ? bench_drive(&job, &out) : -1;
    if (rc)
        fprintf(stderr, "bench: gets failed after %zu: %s\n", out.done, out.first_error);
    *ph = (phase_t){.seconds = out.seconds,
                    .ops_per_s = out.seconds > 0 ? (double)out.done / out.seconds : 0,
                    .p50_us = lat ? bench_percentile(lat, reqs->n, 50) : 0,
                    .p99_us = lat ? bench_percentile(lat, reqs->n, 99) : 0,
                    .stale = seen.stale,
                    .differ = seen.differ};
    free(seen.first);
    free(lat);
    return rc;
}

static void sleep_until(int64_t t_us)
{
    int64_t left = t_us - ts_mono_us();
    if (left > 0)
        usleep((useconds_t)left);
}

/* Figures of one run, in the order of the JSON line. */
enum { F_OPS, F_P50, F_P99, F_HTTP, F_COALESCED, F_COLD_P50, F_STALE_OPS, F_STALE_P50,
       F_STALE_P99, F_REFRESHES, F_RATIO, F_SECONDS, NF };
static const char *const fname[NF] = {
    "fresh_ops_per_s", "fresh_p50_us", "fresh_p99_us", "http_requests", "coalesced_fetches",
    "cold_p50_us", "stale_ops_per_s", "stale_p50_us", "stale_p99_us", "refreshes",
    "stale_vs_fresh_p50", "seconds"};

static int one_run(od_env_t *e, double f[NF], ts_buf_t *extra)
{
    const bench_opts_t *o = e->o;
    bench_reqs_t reqs = {0};
    phase_t cold, fresh, stale;
    int rc = -1;
    if (env_up(e))
        goto out;

    /* cold: C x K identical gets at once, the server slow enough that they overlap */
    char lat[64];
    snprintf(lat, sizeof lat, "{\"latency_ms\":%d}", OD_COLD_LATENCY_MS);
    long long gets0 = bench_api_stat(&e->http, &e->api, "doc_gets");
    if (gets0 < 0 || bench_api_faults(&e->http, &e->api, lat) ||
        make_gets(&reqs, (int64_t)o->clients * o->inflight, o->docs, true) ||
        phase(e, &reqs, &cold) || bench_api_faults(&e->http, &e->api, "{}"))
        goto out;
    f[F_HTTP] = (double)(bench_api_stat(&e->http, &e->api, "doc_gets") - gets0);
    f[F_COALESCED] = (double)cache_metric(e, "coalesced_fetches");
    f[F_COLD_P50] = (double)cold.p50_us;
    ts_buf_printf(extra, ",\"cold_gets\":%zu,\"cold_identical\":%s", reqs.n,
                  cold.differ ? "false" : "true");

    /* warm: every other id fetched once */
    int64_t warm0 = ts_mono_us();
    phase_t warm;
    if (make_gets(&reqs, o->docs - 1, o->docs, false) || phase(e, &reqs, &warm))
        goto out;
    int64_t warm1 = ts_mono_us();
    usleep(OD_SETTLE_US); /* the fetched documents are committed before timing */

    /* fresh hits, all within fresh_ms of the warm fetches */
    if (make_gets(&reqs, o->n, o->docs, false) || phase(e, &reqs, &fresh))
        goto out;
    if (fresh.stale || ts_mono_us() - warm0 >= OD_FRESH_MS * 1000LL) {
        fprintf(stderr, "bench: the fresh phase outlasted fresh_ms (%d ms; %zu stale answers): "
                        "use a smaller --n\n", OD_FRESH_MS, fresh.stale);
        goto out;
    }

    /* stale hits: past fresh_ms, each id's refresh held out by a slow server */
    sleep_until(warm1 + OD_FRESH_MS * 1000LL + 100000);
    long long refresh0 = bench_api_stat(&e->http, &e->api, "doc_gets");
    snprintf(lat, sizeof lat, "{\"latency_ms\":%d}", OD_STALE_LATENCY_MS);
    if (refresh0 < 0 || bench_api_faults(&e->http, &e->api, lat))
        goto out;
    int64_t stale0 = ts_mono_us();
    if (phase(e, &reqs, &stale))
        goto out;
    bool outlasted = ts_mono_us() - stale0 >= OD_STALE_LATENCY_MS * 1000LL;
    if (bench_api_faults(&e->http, &e->api, "{}"))
        goto out;
    long long refreshes = -1;
    for (int64_t end = ts_mono_us() + OD_REFRESH_WAIT_US; ts_mono_us() < end;) {
        refreshes = bench_api_stat(&e->http, &e->api, "doc_gets") - refresh0;
        if (refreshes >= o->docs - 1)
            break;
        usleep(50000);
    }
    usleep(200000); /* and no more come */
    refreshes = bench_api_stat(&e->http, &e->api, "doc_gets") - refresh0;
    ts_buf_printf(extra, ",\"stale_answers\":%zu", stale.stale);
    if (stale.stale != (size_t)o->n)
        fprintf(stderr, "bench: %zu of %lld stale-phase answers were stale%s\n", stale.stale,
                (long long)o->n,
                outlasted ? " (the phase outlasted the refreshes: use a smaller --n)" : "");

    f[F_OPS] = fresh.ops_per_s;
    f[F_P50] = (double)fresh.p50_us;
    f[F_P99] = (double)fresh.p99_us;
    f[F_STALE_OPS] = stale.ops_per_s;
    f[F_STALE_P50] = (double)stale.p50_us;
    f[F_STALE_P99] = (double)stale.p99_us;
    f[F_REFRESHES] = (double)refreshes;
    f[F_RATIO] = fresh.p50_us > 0 ? (double)stale.p50_us / (double)fresh.p50_us : 0;
    f[F_SECONDS] = fresh.seconds;
    rc = f[F_HTTP] == 1 && !cold.differ && stale.stale == (size_t)o->n ? 0 : -1;
out:
    bench_reqs_free(&reqs);
    env_down(e);
    if (e->config[0])
        unlink(e->config);
    return rc;
}

static void print_line(const bench_opts_t *o, const char *tag, const double f[NF],
                       const char *extra, bool failed)
{
    printf("{\"workload\":\"ondemand\",%s%s,\"n\":%lld,\"docs\":%lld,\"clients\":%d,"
           "\"inflight\":%d,\"threads\":%d,\"seconds\":%.3f,\"ops_per_s\":%.0f,\"p50_us\":%.0f,"
           "\"p99_us\":%.0f",
           bench_curve_on() ? "\"curve\":true," : "", tag, (long long)o->n, (long long)o->docs, o->clients, o->inflight, o->threads,
           f[F_SECONDS], f[F_OPS], f[F_P50], f[F_P99]);
    for (int k = 0; k < NF; k++)
        if (k != F_SECONDS)
            printf(k == F_RATIO ? ",\"%s\":%.3f" : ",\"%s\":%.0f", fname[k], f[k]);
    printf("%s%s}\n", extra ? extra : "", failed ? ",\"failed\":true" : "");
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_run_ondemand(bench_opts_t *o)
{
    o->n = o->n ? o->n : 100000;
    o->docs = o->docs ? o->docs : 1000;
    o->clients = o->clients ? o->clients : 4;
    o->inflight = o->inflight ? o->inflight : 25;
    o->threads = o->threads ? o->threads : 1;
    if (o->docs < 2 || o->docs > 9999) {
        fprintf(stderr, "bench: ondemand needs --docs 2..9999 (clinic-api's demo patients)\n");
        return 2;
    }
    double (*runs)[NF] = calloc((size_t)o->runs, sizeof *runs);
    int ok = 0, failed = 0;
    for (int r = 0; runs && r < o->runs && ts_mono_us() < o->deadline_us; r++) {
        od_env_t e = {.o = o};
        double f[NF] = {0};
        ts_buf_t extra = {0};
        int rc = one_run(&e, f, &extra);
        char tag[32];
        snprintf(tag, sizeof tag, "\"run\":%d", r + 1);
        print_line(o, tag, f, extra.data, rc != 0);
        ts_buf_free(&extra);
        if (rc)
            failed++;
        else
            memcpy(runs[ok++], f, sizeof f);
    }
    if (ok > 1) {
        double med[NF], col[64];
        for (int k = 0; k < NF; k++) {
            int m = ok < 64 ? ok : 64;
            for (int i = 0; i < m; i++)
                col[i] = runs[i][k];
            qsort(col, (size_t)m, sizeof *col, cmp_double);
            med[k] = m % 2 ? col[m / 2] : (col[m / 2 - 1] + col[m / 2]) / 2;
        }
        char tag[48];
        snprintf(tag, sizeof tag, "\"stat\":\"median\",\"runs\":%d", ok);
        print_line(o, tag, med, NULL, false);
    }
    free(runs);
    return failed || !runs ? 1 : 0;
}
