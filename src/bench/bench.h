/* bench.h — therasync-bench: the load driver, the daemon it starts, the
 * workloads. One JSON line per run goes to stdout; diagnostics to stderr.
 *
 * Every loop is bounded: by its count, by the global deadline (--max-seconds)
 * and, for each request, by the reply timeout. */
#ifndef THERASYNC_BENCH_H
#define THERASYNC_BENCH_H

#include "therasync/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_REPLY_TIMEOUT_US (30 * 1000000LL)

/* ---- requests: pre-generated before timing, one arena per batch ---- */

typedef struct {
    ts_buf_t data;  /* all request bodies back to back */
    size_t *off;    /* request i is data[off[i] .. off[i+1]) */
    size_t n, cap;  /* requests stored, entries of off allocated (n + 1 used) */
} bench_reqs_t;

/* Starts request number n: append its bytes to reqs->data, then call
 * bench_reqs_end. */
int bench_reqs_end(bench_reqs_t *reqs);
void bench_reqs_reset(bench_reqs_t *reqs);
void bench_reqs_free(bench_reqs_t *reqs);

typedef struct bench_progress bench_progress_t; /* stats.c */

/* One measured answer: the request's index and its latency. */
typedef struct {
    size_t idx;
    int64_t us;
} bench_sample_t;

/* ---- driver.c: C DEALER clients x K requests in flight each ---- */

typedef struct {
    const char *endpoint;
    int clients;  /* DEALER sockets */
    int inflight; /* requests outstanding per socket */
    int threads;  /* threads the sockets are spread over (1 = one poll loop) */
    const bench_reqs_t *reqs;
    int64_t deadline_us;     /* ts_mono_us() after which the run gives up */
    int64_t *lat_us;         /* out (or NULL): reqs->n latencies, first send to reply */
    int64_t count;       /* requests to send (0: reqs->n); past reqs->n the set comes again */
    int64_t duration_us; /* > 0: instead of count, send for this long (open loop: the
                            requests due within it) */
    double rate;         /* > 0: open loop, request s due at start + s / rate seconds and
                            its latency counted from then; 0: closed loop */
    /* Optional: builds request seq >= reqs->n (its JSON-RPC id must be seq)
     * into out, instead of sending the set again; the same seq must give
     * the same bytes (a busy answer is retried by building it again). */
    int (*make)(void *arg, size_t seq, ts_buf_t *out);
    void *make_arg;
    bool samples; /* collect every measured latency in out->samples */
    /* Optional: called for every successful reply (from the thread that got it). */
    void (*on_reply)(void *arg, size_t i, const char *reply, size_t len);
    void *arg;
    /* Count not_found (-32001) answers as answered (updates of documents
     * that validation refused at preload). */
    bool tolerate_not_found;
    bench_progress_t *progress; /* counts answered requests when not NULL */
} bench_job_t;

typedef struct {
    size_t done;         /* requests answered with a result */
    size_t errors;       /* answered with an error other than busy or validation_failed */
    size_t invalid;      /* answered validation_failed (-32002): counted as answered */
    size_t not_found;    /* answered not_found when the job tolerates it */
    size_t busy_retries; /* busy answers, each retried after 1 ms */
    double seconds;      /* first send to last reply */
    double cpu_seconds;  /* CPU (user + system) the bench itself used meanwhile */
    size_t sent;         /* requests taken (each once, however often retried) */
    int64_t send_lag_max_us; /* open loop: the latest a request went out after it was due */
    size_t late_sends;       /* open loop: requests sent more than 1 ms after they were due */
    bench_sample_t *samples; /* with job->samples: nsamples of them (free()) */
    size_t nsamples;
    char first_error[256];
} bench_outcome_t;

/* Runs the job to completion. Returns 0 when every request got a result,
 * -1 otherwise (outcome says why: errors, timeout, deadline). */
int bench_drive(const bench_job_t *job, bench_outcome_t *out);

/* One JSON-RPC call over a connected DEALER, answers with other ids
 * skipped: the result (detached; cJSON_Delete it), or NULL on an error
 * answer or after timeout_ms. */
struct cJSON *bench_rpc(void *dealer, long id, const char *method, const char *params,
                        int timeout_ms);

/* Percentile (nearest rank, p in 0..100) of the values; sorts a copy. */
int64_t bench_percentile(const int64_t *values, size_t n, double p);

/* ---- stats.c: percentiles, the --hdr file, progress ---- */

typedef struct {
    int64_t p50, p90, p99, p999, max;
} bench_pcts_t;

/* A sorted copy (free it), or NULL. */
int64_t *bench_sorted(const int64_t *values, size_t n);
/* p50/p90/p99/p99.9/max by nearest rank (all 0 for no values). */
void bench_pcts(const int64_t *values, size_t n, bench_pcts_t *out);
/* HdrHistogram's percentile distribution text (outputPercentileDistribution:
 * Value Percentile TotalCount 1/(1-Percentile), values in ms) of the
 * latencies (µs) to path. 0 or -1. */
int bench_write_hdr(const char *path, const int64_t *values, size_t n);

/* Progress on stderr once a second, from 3 s after the start on (so short
 * steps stay quiet). total 0: unknown. NULL-safe. */
bench_progress_t *bench_progress_start(const char *what, int64_t total);
void bench_progress_add(bench_progress_t *p, int64_t n);
void bench_progress_stop(bench_progress_t *p);

/* ---- daemon.c: a therasyncd of our own ---- */

typedef struct {
    pid_t pid;
    char endpoint[64];
    char events[64];
    char data_dir[256];
    double ready_seconds; /* spawn until its "ready" line */
    long hwm_kb;          /* VmHWM read just after ready */
    int stderr_fd;        /* read end of its stderr, drained by a thread after ready */
    void *drain;          /* the drain thread (pthread_t *) */
    const char *policies; /* --policies for therasyncd; NULL = its default */
    const char *config;   /* --config for therasyncd; NULL = none */
    const char *api;      /* --api for therasyncd; NULL = standalone */
} bench_daemon_t;

/* Makes a fresh data dir (mkdtemp). Returns 0 or -1. */
/* A loopback TCP port that was free a moment ago; -1 on failure. */
int bench_free_port(void);
int bench_daemon_mkdata(bench_daemon_t *d);
/* Starts therasyncd from the bench's own directory on free loopback ports
 * with d->data_dir, and waits (up to timeout_s) for its ready line. */
int bench_daemon_start(bench_daemon_t *d, double timeout_s);
/* SIGTERM, waits up to timeout_s (then SIGKILL). Returns the exit status
 * (0 = clean), or -1. Fills *maxrss_kb from wait4 when not NULL. */
int bench_daemon_stop(bench_daemon_t *d, double timeout_s, long *maxrss_kb);
/* CPU seconds (user + system) the running daemon has used so far, or -1. */
double bench_daemon_cpu(const bench_daemon_t *d);
/* Removes the data dir (unless keep). */
void bench_daemon_rmdata(bench_daemon_t *d, bool keep);

/* ---- curve.c: --curve, one client key for every socket ---- */

bool bench_curve_on(void);
/* Makes the daemon's key pair and the bench's client key (for our own daemon). */
int bench_curve_generate(void);
/* Reads the bench's key pair and the daemon's public key (--key, --server-key). */
int bench_curve_files(const char *key_file, const char *server_key_file);
/* Sets the CURVE client options on a socket before it connects (nothing
 * without --curve). 0 or -1. */
int bench_curve_client(void *sock);
/* With keys of our own: writes the daemon's key file, a clients file with
 * the bench's key as admin and a config (base_config's text, then the
 * security table) into data_dir, all 0600; the config's path to out.
 * 0, 1 (no keys of our own: nothing to do), or -1. */
int bench_curve_daemon_config(const char *data_dir, const char *base_config, char *out,
                              size_t outlen);

/* ---- workloads.c ---- */

typedef struct {
    const char *workload;
    int64_t n;          /* requests (ingest/update/coldstart docs/select reads); 0 = default */
    int64_t docs;       /* documents preloaded (update, select, live); 0 = default */
    int64_t subs;       /* live: subscriptions in all; 0 = default */
    int64_t write_every; /* select: an update after every this many reads; 0 = default
                            (SELECT_EVERY), -1 = none (--write-every 0) */
    int64_t rate;       /* live: local writes per second (0 = default); ingest, update,
                           select: open loop at this many requests per second (0 = closed) */
    int clients, inflight, threads;
    const char *endpoint; /* NULL: start our own daemon */
    const char *api;
    const char *policies; /* passed to our therasyncd as --policies */
    const char *config;   /* passed to our therasyncd as --config */
    const char *hdr; /* --hdr: latencies as a histogram log (+ .hgrm: percentiles) */
    double duration_s;   /* ingest/update/select: run this long instead of n requests */
    int64_t warmup;      /* requests before the timed part, not measured */
    double warmup_s;     /* or seconds of them */
    int runs;
    bool keep_data;
    int64_t deadline_us;
} bench_opts_t;

/* One run's figures; extra holds more ,"key":value pairs. */
typedef struct {
    double seconds, ops_per_s;
    int64_t p50_us, p99_us;
    int64_t p90_us, p999_us, max_us; /* -1 when not measured */
    long peak_rss_kb; /* -1 when not measured */
    ts_buf_t extra;
} bench_result_t;

/* Runs the workload opts->runs times (printing each run's line) and the
 * median line. Returns a process exit code: 0, 1 (a run failed), 2 (usage). */
int bench_run_workload(bench_opts_t *opts);

/* ---- api.c: the raw API workload (API actor vs wrk, same URL, same run) ---- */
int bench_run_api(bench_opts_t *opts);

/* A clinic-api of our own (or the one at --api): base URL and a token. */
typedef struct {
    pid_t server; /* 0 when not ours */
    char dir[256];
    char base[128];
    char token[256];
    const char *const *extra; /* more clinic-api flags (NULL-terminated), or NULL */
} bench_api_t;

/* Starts clinic-api from the bench's own directory on a free loopback port
 * with a database in a fresh temporary dir; waits until it listens. */
int bench_api_start(bench_api_t *e);
/* SIGTERM by pid (then SIGKILL), removes the temporary dir. */
void bench_api_stop(bench_api_t *e);
/* A bearer token for client therasync/dev-secret into e->token. */
int bench_api_token(bench_api_t *e);
/* One HTTP request at e->base (curl easy handle *h kept alive between calls;
 * NULL body: no body). *out gets the answer body. Returns the HTTP status or -1. */
/* clinic-api's /_control/stats field name, or -1; its /_control/faults set
 * to body (0, or -1 with a message). */
long long bench_api_stat(void **http, const bench_api_t *api, const char *name);
/* A DEALER connected to endpoint with no queue limits and linger 0 (a
 * paced writer, a subscriber: nothing may be dropped), or NULL. */
void *bench_dealer(void *zctx, const char *endpoint);
int bench_api_faults(void **http, const bench_api_t *api, const char *body);
long bench_http(void **h, const bench_api_t *e, const char *method, const char *path,
                const char *body, ts_buf_t *out);
void bench_http_close(void **h);

/* Creates the first `count` sessions of the generated stream through the
 * front door at endpoint (untimed, at least 8 x 64 in flight); their ids go
 * to ids[0..count) (allocated by the caller) when not NULL. *accepted gets
 * the creates answered with a result (validation refuses some). 0 or -1. */
int bench_preload(const bench_opts_t *o, const char *endpoint, int64_t count, bool send,
                  char (*ids)[37], int64_t *accepted);

/* ---- sync.c: replay and realtime (therasyncd with --api and clinic-api) ---- */

/* A clinic-api and a therasyncd --api of our own (or the ones named by
 * --api/--endpoint), with a DEALER for status and other single calls. */
typedef struct {
    const bench_opts_t *o;
    bench_api_t api;
    bench_daemon_t d;
    const char *endpoint, *events;
    void *zctx, *rpc; /* DEALER for status and sync calls */
    void *http;       /* curl easy handle */
    long rpc_id;
} bench_env_t;

/* Starts (or connects to) both and waits until the engine is online. */
int bench_env_up(bench_env_t *e, const bench_opts_t *o);
/* Stops what bench_env_up started, by pid. */
void bench_env_down(bench_env_t *e);
/* One call over e->rpc: the result (cJSON_Delete it) or NULL. */
struct cJSON *bench_env_rpc(bench_env_t *e, const char *method, const char *params,
                            int timeout_ms);
/* status: pending and online; -1 when no answer. */
int bench_env_status(bench_env_t *e, int64_t *pending, bool *online);

int bench_wl_replay(const bench_opts_t *o, int run, bench_result_t *res);
int bench_wl_realtime(const bench_opts_t *o, int run, bench_result_t *res);

/* ---- live.c: live queries under local and remote writes ---- */
int bench_wl_live(const bench_opts_t *o, int run, bench_result_t *res);
/* ---- ondemand.c: cold, fresh and stale reads of an on-demand collection ---- */
int bench_run_ondemand(bench_opts_t *opts);

#endif
