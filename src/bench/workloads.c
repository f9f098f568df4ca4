/* workloads.c — ingest, update, select and coldstart (bench/README.md);
 * replay and realtime are in sync.c, live in live.c.
 *
 * A workload run: bring up the target (our own fresh therasyncd, or the
 * --endpoint given), build every request body before the clock starts,
 * drive them, and describe the run in a bench_result_t. */
#include "bench.h"
#include "gen.h"
#include "hlog.h"
#include "therasync/json.h"

#include <cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define PRELOAD_CHUNK 100000
#define START_TIMEOUT_S 300.0
#define STOP_TIMEOUT_S 300.0
#define UPDATE_SEED 4242u
#define SELECT_READ_SEED 4343u
#define SELECT_WRITE_SEED 4344u
#define SELECT_EVERY 10
/* Warm-up draws: other seeds than the timed ones, so the timed requests
 * are not repeats of what the warm-up just put in the caches. */
#define WARMUP_UPDATE_SEED 5252u
#define WARMUP_READ_SEED 5353u
#define WARMUP_WRITE_SEED 5354u
#define WARMUP_SET 10000 /* requests in a warm-up set cycled for --warmup Ns */

/* State kept across the runs of one workload. */
typedef struct {
    bench_opts_t *o;
    bench_daemon_t d;     /* our daemon (when o->endpoint is NULL) */
    const char *endpoint; /* where requests go */
    bool preloaded;       /* the external target already holds the docs */
    char (*ids)[37];      /* ids of the preloaded docs */
    int64_t nids;
    int64_t accepted;     /* creates of the last preload answered with a result */
    int run;              /* 0-based, for the --hdr file name */
    double cpu0;          /* our daemon's CPU seconds when the timed part began, or -1 */
} wl_t;

/* ---- requests ---- */

static int create_body(ts_buf_t *b, size_t id, const gen_session_t *s)
{
    if (ts_buf_printf(b, "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"create\",\"params\":"
                         "{\"collection\":\"sessions\",\"doc\":", id) ||
        gen_session_json(s, false, b) || ts_buf_puts(b, "}}"))
        return -1;
    return 0;
}

static int add_create(bench_reqs_t *reqs, const gen_session_t *s)
{
    if (create_body(&reqs->data, reqs->n, s))
        return -1;
    return bench_reqs_end(reqs);
}

/* Creates past the generated set (--duration, warm-up): session seq drawn
 * from a seed of its own (same seq, same bytes: a busy answer is rebuilt),
 * with an id of the form PPPPPPPP-0000-4000-8000-SEQ, the prefix telling
 * apart runs and warm-ups, so none can equal a generated or earlier id. */
static int make_create(void *arg, size_t seq, ts_buf_t *out)
{
    uint32_t prefix = *(const uint32_t *)arg;
    gen_rng_t rng;
    gen_rng_seed(&rng, (uint32_t)seq * 2654435761u ^ prefix);
    gen_session_t s;
    gen_session(&rng, (int64_t)seq, &s);
    snprintf(s.id, sizeof s.id, "%08x-0000-4000-8000-%012llx", prefix,
             (unsigned long long)seq & 0xffffffffffffULL);
    return create_body(out, seq, &s);
}

static int add_update(bench_reqs_t *reqs, const char *id, const char *status)
{
    if (ts_buf_printf(&reqs->data,
                      "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"update\",\"params\":{"
                      "\"collection\":\"sessions\",\"id\":\"%s\",\"patch\":{\"status\":\"%s\"}}}",
                      reqs->n, id, status))
        return -1;
    return bench_reqs_end(reqs);
}

static int add_upcoming(bench_reqs_t *reqs, const char *therapist, const char *now)
{
    if (ts_buf_printf(&reqs->data,
                      "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"query\",\"params\":{"
                      "\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":{"
                      "\"therapist_id\":\"%s\",\"now\":\"%s\",\"limit\":20}}}",
                      reqs->n, therapist, now))
        return -1;
    return bench_reqs_end(reqs);
}

/* ---- target ---- */

/* Our own therasyncd in a fresh data dir. */
static int own_daemon_up(wl_t *w)
{
    if (bench_daemon_mkdata(&w->d))
        return -1;
    if (bench_daemon_start(&w->d, START_TIMEOUT_S)) {
        bench_daemon_rmdata(&w->d, w->o->keep_data);
        return -1;
    }
    w->endpoint = w->d.endpoint;
    return 0;
}

/* The --endpoint given, else our own daemon. */
static int target_up(wl_t *w)
{
    if (w->o->endpoint) {
        w->endpoint = w->o->endpoint;
        return 0;
    }
    return own_daemon_up(w);
}

static void target_down(wl_t *w)
{
    if (w->o->endpoint)
        return;
    int status = bench_daemon_stop(&w->d, STOP_TIMEOUT_S, NULL);
    if (status != 0)
        fprintf(stderr, "bench: therasyncd exited with status %d\n", status);
    bench_daemon_rmdata(&w->d, w->o->keep_data);
}

static void job_defaults(wl_t *w, bench_job_t *job, const bench_reqs_t *reqs, int64_t *lat)
{
    *job = (bench_job_t){.endpoint = w->endpoint,
                         .clients = w->o->clients,
                         .inflight = w->o->inflight,
                         .threads = w->o->threads,
                         .reqs = reqs,
                         .deadline_us = w->o->deadline_us,
                         .lat_us = lat};
}

/* The timed job of ingest, update, select: --duration and --rate, every
 * latency kept as a sample. */
static void job_timed(wl_t *w, bench_job_t *job, const bench_reqs_t *reqs)
{
    w->cpu0 = w->o->endpoint ? -1 : bench_daemon_cpu(&w->d);
    job_defaults(w, job, reqs, NULL);
    job->duration_us = (int64_t)(w->o->duration_s * 1e6);
    job->rate = (double)w->o->rate;
    job->samples = true;
    job->progress = bench_progress_start(w->o->workload, 0);
}

/* The samples' latencies (of the requests keep() accepts, when given), malloc'd. */
static int64_t *sample_lat(const bench_outcome_t *out, bool (*keep)(const void *, size_t),
                           const void *arg, size_t *n)
{
    int64_t *lat = malloc((out->nsamples ? out->nsamples : 1) * sizeof *lat);
    *n = 0;
    for (size_t i = 0; lat && i < out->nsamples; i++)
        if (!keep || keep(arg, out->samples[i].idx))
            lat[(*n)++] = out->samples[i].us;
    return lat;
}

/* What the timed part was: requests answered, --duration, --rate and how
 * well the open loop kept its schedule. */
static void timed_fields(wl_t *w, const bench_outcome_t *out, bench_result_t *res)
{
    ts_buf_printf(&res->extra, ",\"requests\":%zu", out->done + out->invalid + out->not_found);
    /* Our own daemon's CPU in the timed part: per request, the steadier
     * figure on a shared machine. */
    double cpu1 = w->cpu0 >= 0 ? bench_daemon_cpu(&w->d) : -1;
    if (cpu1 >= 0)
        ts_buf_printf(&res->extra, ",\"engine_cpu_s\":%.2f", cpu1 - w->cpu0);
    if (w->o->duration_s > 0)
        ts_buf_printf(&res->extra, ",\"duration_s\":%.3f", w->o->duration_s);
    if (w->o->rate > 0)
        ts_buf_printf(&res->extra, ",\"rate\":%lld,\"send_lag_max_us\":%lld,\"late_sends\":%zu",
                      (long long)w->o->rate, (long long)out->send_lag_max_us, out->late_sends);
}

/* --warmup: requests sent and answered before the timed part, not
 * measured: N of them, or for warmup_s seconds (the set cycled, or built by
 * make). Closed loop, or at --rate. */
static int warmup(wl_t *w, const bench_reqs_t *reqs, int (*make)(void *, size_t, ts_buf_t *),
                  void *make_arg, bench_result_t *res)
{
    if (w->o->warmup <= 0 && w->o->warmup_s <= 0)
        return 0;
    bench_job_t job;
    job_defaults(w, &job, reqs, NULL);
    job.count = w->o->warmup;
    job.duration_us = (int64_t)(w->o->warmup_s * 1e6);
    job.rate = (double)w->o->rate;
    job.make = make;
    job.make_arg = make_arg;
    job.tolerate_not_found = true;
    job.progress = bench_progress_start("warmup", w->o->warmup);
    bench_outcome_t out;
    int rc = bench_drive(&job, &out);
    bench_progress_stop(job.progress);
    ts_buf_printf(&res->extra, ",\"warmup_requests\":%zu,\"warmup_seconds\":%.3f",
                  out.done + out.invalid + out.not_found, out.seconds);
    if (rc)
        fprintf(stderr, "bench: warm-up failed: %zu answered, %zu errors: %s\n", out.done,
                out.errors, out.first_error);
    free(out.samples);
    return rc;
}

/* Size of a warm-up set: N, or WARMUP_SET cycled for a time. */
static int64_t warmup_set(const wl_t *w)
{
    return w->o->warmup > 0 && w->o->warmup < WARMUP_SET ? w->o->warmup : WARMUP_SET;
}

int bench_preload(const bench_opts_t *o, const char *endpoint, int64_t count, bool send,
                  char (*ids)[37], int64_t *accepted)
{
    int64_t *lat = calloc(PRELOAD_CHUNK, sizeof *lat);
    bench_reqs_t reqs = {0};
    gen_rng_t rng;
    gen_rng_seed(&rng, GEN_SEED);
    int rc = lat ? 0 : -1;
    int64_t t0 = ts_mono_us();
    *accepted = 0;
    bench_progress_t *progress = send ? bench_progress_start("preload", count) : NULL;
    for (int64_t done = 0; rc == 0 && done < count;) {
        bench_reqs_reset(&reqs);
        int64_t chunk = count - done < PRELOAD_CHUNK ? count - done : PRELOAD_CHUNK;
        for (int64_t i = 0; rc == 0 && i < chunk; i++) {
            gen_session_t s;
            gen_session(&rng, done + i, &s);
            if (ids)
                memcpy(ids[done + i], s.id, sizeof s.id);
            rc = send ? add_create(&reqs, &s) : 0;
        }
        if (rc == 0 && send) {
            /* Untimed, so as fast as it goes, even for a serial workload. */
            bench_job_t job = {.endpoint = endpoint,
                               .clients = o->clients < 8 ? 8 : o->clients,
                               .inflight = o->inflight < 64 ? 64 : o->inflight,
                               .threads = o->threads,
                               .reqs = &reqs,
                               .deadline_us = o->deadline_us,
                               .lat_us = lat,
                               .progress = progress};
            bench_outcome_t out;
            if (bench_drive(&job, &out)) {
                fprintf(stderr, "bench: preload failed after %zu of %lld: %s\n", out.done,
                        (long long)chunk, out.first_error);
                rc = -1;
            }
            *accepted += (int64_t)out.done;
        }
        done += chunk;
    }
    bench_progress_stop(progress);
    if (send && rc == 0)
        fprintf(stderr, "bench: preloaded %lld documents (%lld accepted) in %.1f s\n",
                (long long)count, (long long)*accepted, (double)(ts_mono_us() - t0) / 1e6);
    bench_reqs_free(&reqs);
    free(lat);
    return rc;
}

/* The same, the ids kept in w->ids. */
static int preload(wl_t *w, int64_t count, bool send)
{
    free(w->ids);
    w->ids = calloc((size_t)(count ? count : 1), sizeof *w->ids);
    w->accepted = 0;
    int rc = w->ids ? bench_preload(w->o, w->endpoint, count, send, w->ids, &w->accepted) : -1;
    w->nids = rc == 0 ? count : 0;
    return rc;
}

/* The --hdr files of run `run`: the name given (NAME.RUN when there are
 * several runs) gets HdrHistogram's histogram log, that name + ".hgrm" the
 * percentile distribution text. */
static void write_hdr(const wl_t *w, const int64_t *lat, size_t nlat, double seconds)
{
    if (!w->o->hdr)
        return;
    char path[4096], hgrm[4200];
    if (w->o->runs > 1)
        snprintf(path, sizeof path, "%s.%d", w->o->hdr, w->run + 1);
    else
        snprintf(path, sizeof path, "%s", w->o->hdr);
    snprintf(hgrm, sizeof hgrm, "%s.hgrm", path);
    bench_write_hdr(hgrm, lat, nlat);
    /* The run has just ended: one interval of its length, ending now. */
    double start = (double)ts_wall_ms() / 1000.0 - seconds;
    FILE *f = fopen(path, "w");
    int rc = f ? hlog_write(f, start, seconds, lat, nlat) : -1;
    if ((f && fclose(f) != 0) || rc)
        fprintf(stderr, "bench: cannot write %s\n", path);
}

static void fill_result(const wl_t *w, bench_result_t *res, const bench_outcome_t *out,
                        size_t ops, const int64_t *lat, size_t nlat)
{
    res->seconds = out->seconds;
    res->ops_per_s = out->seconds > 0 ? (double)ops / out->seconds : 0;
    bench_pcts_t pc;
    bench_pcts(lat, nlat, &pc);
    res->p50_us = pc.p50, res->p90_us = pc.p90, res->p99_us = pc.p99;
    res->p999_us = pc.p999, res->max_us = pc.max;
    write_hdr(w, lat, nlat, out->seconds);
    ts_buf_printf(&res->extra,
                  ",\"errors\":%zu,\"validation_failed\":%zu,\"not_found\":%zu,"
                  "\"busy_retries\":%zu,\"bench_cpu_s\":%.3f",
                  out->errors, out->invalid, out->not_found, out->busy_retries,
                  out->cpu_seconds);
}

/* One call without params on a DEALER of its own: the result, or NULL. */
static cJSON *engine_call(const char *endpoint, const char *method)
{
    void *zctx = zmq_ctx_new();
    void *dealer = zctx ? zmq_socket(zctx, ZMQ_DEALER) : NULL;
    int linger = 0;
    cJSON *m = NULL;
    if (dealer && bench_curve_client(dealer) == 0 &&
        zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger) == 0 &&
        zmq_connect(dealer, endpoint) == 0)
        m = bench_rpc(dealer, 1, method, NULL, 5000);
    if (dealer)
        zmq_close(dealer);
    if (zctx)
        zmq_ctx_term(zctx);
    return m;
}

/* The engine's own view of the run from its `metrics`: the front door's
 * latency for `method` (from reading a request to sending its answer:
 * engine_p50_us, engine_p99_us) and persist's commits (commit_p50_us,
 * commit_p99_us, fsync included). Counted over the daemon's life, so with
 * --endpoint earlier runs are in them, and for update the preload's
 * commits. Left out when metrics do not answer. */
static void add_engine_view(wl_t *w, const char *method, bench_result_t *res)
{
    cJSON *m = engine_call(w->endpoint, "metrics");
    const cJSON *front = cJSON_GetObjectItemCaseSensitive(m, "front");
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(front, "latency_us"), method);
    const cJSON *persist = cJSON_GetObjectItemCaseSensitive(m, "persist");
    long long e50, e99, c50, c99;
    if (ts_json_int(lat, "p50", &e50) && ts_json_int(lat, "p99", &e99) &&
        ts_json_int(persist, "commit_us_p50", &c50) && ts_json_int(persist, "commit_us_p99", &c99))
        ts_buf_printf(&res->extra,
                      ",\"engine_p50_us\":%lld,\"engine_p99_us\":%lld,\"commit_p50_us\":%lld,"
                      "\"commit_p99_us\":%lld",
                      e50, e99, c50, c99);
    cJSON_Delete(m);
}

/* The cache's view of a select run, from `metrics` (cache.hits, misses,
 * hit_ratio, entries, front_hits) and `policy.info` (selector_queries, selector_us: the
 * selector runs the store did and the time they took). Over the daemon's
 * life like add_engine_view; left out when the target does not give them
 * (therasync-canned). */
static void add_cache_view(wl_t *w, bench_result_t *res)
{
    cJSON *m = engine_call(w->endpoint, "metrics");
    const cJSON *cache = cJSON_GetObjectItemCaseSensitive(m, "cache");
    const cJSON *ratio = cJSON_GetObjectItemCaseSensitive(cache, "hit_ratio");
    long long hits, misses, entries;
    if (cJSON_IsNumber(ratio) && ts_json_int(cache, "hits", &hits) &&
        ts_json_int(cache, "misses", &misses) && ts_json_int(cache, "entries", &entries))
        ts_buf_printf(&res->extra,
                      ",\"cache_hit_ratio\":%.4f,\"cache_hits\":%lld,\"cache_misses\":%lld,"
                      "\"cache_entries\":%lld",
                      ratio->valuedouble, hits, misses, entries);
    long long front_hits;
    if (ts_json_int(cache, "front_hits", &front_hits)) /* of the hits: without the cache's trip */
        ts_buf_printf(&res->extra, ",\"cache_front_hits\":%lld", front_hits);
    cJSON_Delete(m);
    cJSON *info = engine_call(w->endpoint, "policy.info");
    long long q, us;
    if (ts_json_int(info, "selector_queries", &q) && ts_json_int(info, "selector_us", &us))
        ts_buf_printf(&res->extra, ",\"selector_queries\":%lld,\"selector_us\":%lld", q, us);
    cJSON_Delete(info);
}

static int report_failure(bench_result_t *res, const char *what, const bench_outcome_t *out)
{
    fprintf(stderr, "bench: %s: %zu answered, %zu errors: %s\n", what, out->done, out->errors,
            out->first_error[0] ? out->first_error : "(no detail)");
    ts_buf_puts(&res->extra, ",\"error\":");
    ts_buf_json_string(&res->extra, out->first_error, strlen(out->first_error));
    return -1;
}

/* ---- ingest: N creates, each answered once durable ---- */

static int wl_ingest(wl_t *w, int run, bench_result_t *res)
{
    int64_t n = w->o->n;
    /* A shared target already holds the earlier runs' documents: continue the stream. */
    int64_t seq0 = w->o->endpoint ? (int64_t)run * n : 0;
    bench_reqs_t reqs = {0}, none = {0};
    gen_rng_t rng;
    gen_rng_seed(&rng, GEN_SEED);
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < seq0 + n; i++) {
        gen_session_t s;
        gen_session(&rng, i, &s);
        if (i >= seq0)
            rc = add_create(&reqs, &s);
    }
    /* Creates past the set (--duration), and the warm-up's: ids of their own. */
    uint32_t timed_prefix = 0xbe0c0000u + (uint32_t)run * 2, warm_prefix = timed_prefix + 1;
    if (rc == 0)
        rc = target_up(w);
    if (rc == 0) {
        rc = warmup(w, &none, make_create, &warm_prefix, res);
        bench_job_t job;
        bench_outcome_t out = {0};
        job_timed(w, &job, &reqs);
        job.count = n;
        job.make = make_create;
        job.make_arg = &timed_prefix;
        if (rc == 0)
            rc = bench_drive(&job, &out);
        bench_progress_stop(job.progress);
        size_t answered = out.done + out.invalid, nlat = 0;
        int64_t *lat = sample_lat(&out, NULL, NULL, &nlat);
        fill_result(w, res, &out, answered, lat, rc == 0 ? nlat : 0);
        timed_fields(w, &out, res);
        add_engine_view(w, "create", res);
        if (rc)
            report_failure(res, "ingest", &out);
        target_down(w);
        free(lat);
        free(out.samples);
    }
    bench_reqs_free(&reqs);
    return rc;
}

/* ---- update: N status patches of random preloaded documents ---- */

/* n status patches of random preloaded documents drawn with seed. */
static int build_updates(const wl_t *w, bench_reqs_t *reqs, int64_t n, uint32_t seed)
{
    gen_rng_t rng;
    gen_rng_seed(&rng, seed);
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        int64_t idx = (int64_t)(gen_rng_next(&rng) * (double)w->o->docs);
        const char *status = gen_statuses[(int)(gen_rng_next(&rng) * 4)];
        rc = add_update(reqs, w->ids[idx], status);
    }
    return rc;
}

static int wl_update(wl_t *w, int run, bench_result_t *res)
{
    (void)run;
    int64_t n = w->o->n, docs = w->o->docs;
    int rc = target_up(w);
    if (rc)
        return rc;
    bool send = !w->o->endpoint || !w->preloaded;
    int64_t t0 = ts_mono_us();
    rc = preload(w, docs, send);
    double preload_s = (double)(ts_mono_us() - t0) / 1e6;
    w->preloaded = rc == 0;
    bench_reqs_t reqs = {0}, warm = {0};
    if (rc == 0)
        rc = build_updates(w, &reqs, n, UPDATE_SEED);
    if (rc == 0 && (w->o->warmup > 0 || w->o->warmup_s > 0))
        rc = build_updates(w, &warm, warmup_set(w), WARMUP_UPDATE_SEED);
    if (rc == 0) {
        rc = warmup(w, &warm, NULL, NULL, res);
        bench_job_t job;
        bench_outcome_t out = {0};
        job_timed(w, &job, &reqs);
        job.tolerate_not_found = true;
        if (rc == 0)
            rc = bench_drive(&job, &out);
        bench_progress_stop(job.progress);
        size_t answered = out.done + out.invalid + out.not_found, nlat = 0;
        int64_t *lat = sample_lat(&out, NULL, NULL, &nlat);
        fill_result(w, res, &out, answered, lat, rc == 0 ? nlat : 0);
        timed_fields(w, &out, res);
        ts_buf_printf(&res->extra, ",\"docs\":%lld,\"preload_seconds\":%.3f", (long long)docs,
                      send ? preload_s : 0.0);
        add_engine_view(w, "update", res);
        if (rc)
            report_failure(res, "update", &out);
        free(lat);
        free(out.samples);
    }
    target_down(w);
    bench_reqs_free(&reqs);
    bench_reqs_free(&warm);
    return rc;
}

/* ---- select: upcoming(T, now, 20), one status update after every 10 reads ---- */

typedef struct {
    const bool *is_read;
    atomic_llong rows;
    atomic_llong bad; /* replies without result.items */
} select_ctx_t;

static void count_rows(void *arg, size_t i, const char *reply, size_t len)
{
    select_ctx_t *sc = arg;
    if (!sc->is_read[i])
        return;
    /* Counted on the text: parsing every 8 KB reply would cost the bench
     * more CPU than the engine spends answering it, on the same cores. */
    const char *result, *items;
    size_t rlen, ilen;
    long n = -1;
    if (ts_json_text_field(reply, len, "result", 6, &result, &rlen) &&
        ts_json_text_field(result, rlen, "items", 5, &items, &ilen))
        n = ts_json_text_count(items, ilen);
    if (n >= 0)
        atomic_fetch_add(&sc->rows, n);
    else
        atomic_fetch_add(&sc->bad, 1);
}

/* The reads between two of select's updates (--write-every), 0: none. */
static int64_t select_every(const wl_t *w)
{
    return w->o->write_every < 0 ? 0 : w->o->write_every ? w->o->write_every : SELECT_EVERY;
}

/* reads upcoming queries, a status update after every select_every() of them;
 * is_read (NULL: not wanted) marks the reads. Draws as the peer's w3: the
 * reads' (T, now) from rseed, the writes from wseed. */
static int build_select(const wl_t *w, bench_reqs_t *reqs, bool *is_read, int64_t reads,
                        uint32_t rseed, uint32_t wseed)
{
    int64_t every = select_every(w), writes = every ? reads / every : 0;
    gen_rng_t rr, wr;
    gen_rng_seed(&rr, rseed);
    gen_rng_seed(&wr, wseed);
    int rc = 0;
    for (int64_t i = 0, w_done = 0; rc == 0 && i < reads; i++) {
        char t[12], now[32];
        gen_therapist_id((int)(gen_rng_next(&rr) * GEN_N_THERAPISTS) + 1, t);
        gen_slot_iso((int64_t)(gen_rng_next(&rr) * GEN_N_SLOTS), now);
        if (is_read)
            is_read[reqs->n] = true;
        rc = add_upcoming(reqs, t, now);
        if (rc == 0 && every && (i + 1) % every == 0 && w_done < writes) {
            int64_t idx = (int64_t)(gen_rng_next(&wr) * (double)w->o->docs);
            const char *status = gen_statuses[(int)(gen_rng_next(&wr) * 4)];
            rc = add_update(reqs, w->ids[idx], status);
            w_done++;
        }
    }
    return rc;
}

static bool keep_read(const void *arg, size_t idx)
{
    return ((const bool *)arg)[idx];
}

static bool keep_write(const void *arg, size_t idx)
{
    return !((const bool *)arg)[idx];
}

static int wl_select(wl_t *w, int run, bench_result_t *res)
{
    (void)run;
    int64_t reads = w->o->n, docs = w->o->docs;
    int64_t every = select_every(w), writes = every ? reads / every : 0, total = reads + writes;
    int rc = target_up(w);
    if (rc)
        return rc;
    bool send = !w->o->endpoint || !w->preloaded;
    rc = preload(w, docs, send);
    w->preloaded = rc == 0;
    bench_reqs_t reqs = {0}, warm = {0};
    bool *is_read = calloc((size_t)total, sizeof *is_read);
    rc = rc || !is_read ? -1 : 0;
    if (rc == 0)
        rc = build_select(w, &reqs, is_read, reads, SELECT_READ_SEED, SELECT_WRITE_SEED);
    /* The warm-up's reads are other (T, now) than the timed ones. */
    if (rc == 0 && (w->o->warmup > 0 || w->o->warmup_s > 0))
        rc = build_select(w, &warm, NULL, warmup_set(w), WARMUP_READ_SEED, WARMUP_WRITE_SEED);
    if (rc == 0)
        rc = warmup(w, &warm, NULL, NULL, res);
    if (rc == 0) {
        select_ctx_t sc = {.is_read = is_read};
        atomic_init(&sc.rows, 0);
        atomic_init(&sc.bad, 0);
        bench_job_t job;
        bench_outcome_t out;
        job_timed(w, &job, &reqs);
        job.tolerate_not_found = true;
        job.on_reply = count_rows;
        job.arg = &sc;
        rc = bench_drive(&job, &out);
        bench_progress_stop(job.progress);
        if (rc) {
            if (out.errors && strstr(out.first_error, "-32004"))
                fprintf(stderr, "bench: select: the engine refused the upcoming selector; "
                                "it needs the Lua selectors (policies/selectors.lua) in therasyncd\n");
            report_failure(res, "select", &out);
        }
        /* Reads and writes apart: the peer reports read latency and reads/s. */
        size_t nr = 0, nw = 0;
        int64_t *rl = sample_lat(&out, keep_read, is_read, &nr);
        int64_t *wl = sample_lat(&out, keep_write, is_read, &nw);
        if (rc || !rl || !wl)
            nr = nw = 0;
        /* With --duration the set is cycled: count what was answered. */
        if (w->o->duration_s > 0)
            reads = (int64_t)nr, writes = (int64_t)nw;
        fill_result(w, res, &out, (size_t)reads, rl, nr);
        if (rc)
            res->ops_per_s = 0;
        /* The peer's reads_per_s divides the reads by the time spent in
         * reads alone (its writes and the gaps between calls left out);
         * ops_per_s divides by the whole run, writes' fsyncs included. The
         * same figure as the peer's, for a serial run. */
        int64_t read_us = 0;
        for (size_t i = 0; i < nr; i++)
            read_us += rl[i];
        if (rc == 0 && w->o->clients * w->o->inflight == 1 && read_us > 0 && w->o->rate <= 0)
            ts_buf_printf(&res->extra, ",\"read_time_reads_per_s\":%.0f",
                          (double)nr * 1e6 / (double)read_us);
        timed_fields(w, &out, res);
        ts_buf_printf(&res->extra,
                      ",\"docs\":%lld,\"reads\":%lld,\"writes\":%lld,\"result_rows_total\":%lld,"
                      "\"write_p50_us\":%lld,\"write_p99_us\":%lld",
                      (long long)docs, (long long)reads, (long long)writes,
                      (long long)atomic_load(&sc.rows), (long long)bench_percentile(wl, nw, 50),
                      (long long)bench_percentile(wl, nw, 99));
        add_cache_view(w, res);
        if (rc == 0 && atomic_load(&sc.bad)) {
            fprintf(stderr, "bench: select: %lld read replies had no result.items\n",
                    (long long)atomic_load(&sc.bad));
            rc = -1;
        }
        free(rl);
        free(wl);
        free(out.samples);
    }
    target_down(w);
    bench_reqs_free(&reqs);
    bench_reqs_free(&warm);
    free(is_read);
    return rc;
}

/* ---- coldstart: N documents on disk, then start until ready ---- */

static int wl_coldstart(wl_t *w, int run, bench_result_t *res)
{
    if (!w->preloaded) {
        /* Once for all runs: create the documents, then stop the daemon. */
        if (own_daemon_up(w))
            return -1;
        int rc = preload(w, w->o->n, true);
        int status = bench_daemon_stop(&w->d, STOP_TIMEOUT_S, NULL);
        if (rc || status != 0) {
            fprintf(stderr, "bench: coldstart preparation failed (daemon exit %d)\n", status);
            bench_daemon_rmdata(&w->d, w->o->keep_data);
            return -1;
        }
        w->preloaded = true;
    }
    (void)run;
    if (bench_daemon_start(&w->d, START_TIMEOUT_S))
        return -1;
    res->seconds = w->d.ready_seconds;
    /* The documents on disk: validation refuses some generated creates. */
    res->ops_per_s = w->d.ready_seconds > 0 ? (double)w->accepted / w->d.ready_seconds : 0;
    res->p50_us = res->p99_us = -1;
    res->peak_rss_kb = w->d.hwm_kb;
    long maxrss = -1;
    int status = bench_daemon_stop(&w->d, STOP_TIMEOUT_S, &maxrss);
    ts_buf_printf(&res->extra,
                  ",\"docs\":%lld,\"docs_sent\":%lld,\"validation_failed\":%lld,"
                  "\"maxrss_kb_whole_life\":%ld,\"exit_status\":%d",
                  (long long)w->accepted, (long long)w->o->n,
                  (long long)(w->o->n - w->accepted), maxrss, status);
    return status == 0 ? 0 : -1;
}

/* ---- replay, realtime: in sync.c ---- */

static int wl_replay(wl_t *w, int run, bench_result_t *res)
{
    return bench_wl_replay(w->o, run, res);
}

static int wl_realtime(wl_t *w, int run, bench_result_t *res)
{
    return bench_wl_realtime(w->o, run, res);
}

/* ---- live: in live.c ---- */

static int wl_live(wl_t *w, int run, bench_result_t *res)
{
    return bench_wl_live(w->o, run, res);
}

/* ---- runs and the median ---- */

typedef struct {
    const char *name;
    int (*run)(wl_t *w, int run, bench_result_t *res);
    int64_t n, docs;       /* defaults */
    int clients, inflight; /* defaults */
    bool own_daemon_only;
} workload_t;

static const workload_t workloads[] = {
    {"ingest", wl_ingest, 100000, 0, 8, 64, false},
    {"update", wl_update, 100000, 100000, 8, 64, false},
    {"select", wl_select, 10000, 100000, 1, 1, false},
    {"coldstart", wl_coldstart, 1000000, 0, 8, 64, true},
    {"replay", wl_replay, 100000, 0, 8, 64, false},
    {"realtime", wl_realtime, 2000, 0, 1, 1, false},
    {"live", wl_live, 100000, 100000, 8, 1, false},
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void print_head(const bench_opts_t *o)
{
    printf("{\"workload\":\"%s\",", o->workload);
    if (bench_curve_on())
        printf("\"curve\":true,");
}

/* The figures of a run (and of the median line), in this order. */
enum { F_SECONDS, F_OPS, F_P50, F_P99, F_RSS, F_P90, F_P999, F_MAX, F_COUNT };

static void print_common(const bench_opts_t *o, const double *f)
{
    printf("\"n\":%lld,\"clients\":%d,\"inflight\":%d,\"threads\":%d,\"seconds\":%.3f,"
           "\"ops_per_s\":%.0f",
           (long long)o->n, o->clients, o->inflight, o->threads, f[F_SECONDS], f[F_OPS]);
    if (f[F_P50] >= 0)
        printf(",\"p50_us\":%.0f,\"p99_us\":%.0f", f[F_P50], f[F_P99]);
    if (f[F_P90] >= 0) /* p50 and p99 above keep their place for older readers */
        printf(",\"p90_us\":%.0f,\"p999_us\":%.0f,\"max_us\":%.0f", f[F_P90], f[F_P999],
               f[F_MAX]);
    if (f[F_RSS] >= 0)
        printf(",\"peak_rss_kb\":%.0f", f[F_RSS]);
}

int bench_run_workload(bench_opts_t *o)
{
    const workload_t *wl = NULL;
    for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++)
        if (strcmp(o->workload, workloads[i].name) == 0)
            wl = &workloads[i];
    if (!wl) {
        fprintf(stderr, "bench: unknown workload %s\n", o->workload);
        return 2;
    }
    if (wl->own_daemon_only && o->endpoint) {
        fprintf(stderr, "bench: %s restarts the daemon, so it starts its own: drop --endpoint\n",
                o->workload);
        return 2;
    }
    o->n = o->n ? o->n : wl->n;
    o->docs = o->docs ? o->docs : wl->docs;
    o->clients = o->clients ? o->clients : wl->clients;
    o->inflight = o->inflight ? o->inflight : wl->inflight;
    o->threads = o->threads ? o->threads : 1;
    wl_t w = {.o = o, .d = {.policies = o->policies, .config = o->config}};
    double *secs = calloc((size_t)o->runs, sizeof(double) * F_COUNT);
    int failed = 0, ok = 0;
    for (int r = 0; secs && r < o->runs; r++) {
        bench_result_t res = {.peak_rss_kb = -1, .p90_us = -1, .p999_us = -1, .max_us = -1};
        w.run = r;
        int rc = wl->run(&w, r, &res);
        double f[F_COUNT] = {
            [F_SECONDS] = res.seconds,        [F_OPS] = res.ops_per_s,
            [F_P50] = (double)res.p50_us,     [F_P99] = (double)res.p99_us,
            [F_RSS] = (double)res.peak_rss_kb, [F_P90] = (double)res.p90_us,
            [F_P999] = (double)res.p999_us,   [F_MAX] = (double)res.max_us,
        };
        print_head(o);
        printf("\"run\":%d,", r + 1);
        print_common(o, f);
        printf("%s%s}\n", res.extra.data ? res.extra.data : "", rc ? ",\"failed\":true" : "");
        fflush(stdout);
        ts_buf_free(&res.extra);
        if (rc) {
            failed++;
            if (ts_mono_us() > o->deadline_us || wl->own_daemon_only)
                break;
            continue;
        }
        memcpy(secs + (size_t)ok * F_COUNT, f, sizeof f);
        ok++;
    }
    if (wl->own_daemon_only)
        bench_daemon_rmdata(&w.d, o->keep_data);
    if (ok > 1) {
        double col[F_COUNT][64];
        int m = ok < 64 ? ok : 64;
        for (int i = 0; i < m; i++)
            for (int k = 0; k < F_COUNT; k++)
                col[k][i] = secs[(size_t)i * F_COUNT + (size_t)k];
        double med[F_COUNT];
        for (int k = 0; k < F_COUNT; k++)
            med[k] = median(col[k], m);
        print_head(o);
        printf("\"stat\":\"median\",\"runs\":%d,", m);
        print_common(o, med);
        printf("}\n");
    }
    free(secs);
    free(w.ids);
    return failed ? 1 : 0;
}
