/* main.c — therasync-bench: load generator and benchmark driver.
 *
 *   therasync-bench --workload ingest|update|select|coldstart|api|replay|realtime|live|ondemand
 *       [--n N] [--docs D] [--clients C] [--inflight K] [--threads T] [--subs S] [--rate W]
 *       [--endpoint ZMQ] [--api URL] [--runs R] [--keep-data] [--max-seconds S]
 *
 * Prints one JSON line per run, and a "stat":"median" line when R > 1.
 * Exit: 0 ok, 1 a run failed, 2 usage. */
#include "bench.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: therasync-bench --workload NAME [options]\n"
    "\n"
    "workloads (bench/README.md):\n"
    "  ingest     N creates through the front door, each answered once durable\n"
    "  update     preload D docs, then N merge-patch status updates of random docs (seed 4242)\n"
    "  select     preload D docs, then N upcoming(T, now, 20) reads, one update every 10\n"
    "             (seeds 4343/4344); needs the Lua selectors in therasyncd\n"
    "  coldstart  N docs on disk, then time therasyncd start until ready, and its peak RSS\n"
    "  api        GETs of one document through the API actor with --clients C in\n"
    "             flight (keep-alive), next to wrk -t2 -cC -d5s on the same URL\n"
    "             (starts its own clinic-api unless --api URL)\n"
    "  replay     clinic-api offline, N creates (+ an update of every 100th) queued,\n"
    "             clinic-api back: seconds until every accepted write is acknowledged\n"
    "             (status pending 0, clinic-api applied_writes, per-document order)\n"
    "  realtime   N (2000) changes PATCHed at clinic-api at 200/s while the engine takes\n"
    "             10,000 local creates/s: HTTP response to doc.changed (origin remote)\n"
    "             p50/p99; ops_per_s = local writes/s answered meanwhile\n"
    "  live       preload D docs, S subscriptions to upcoming(random therapist) over C\n"
    "             connections, then N local updates at W/s and remote changes at 200/s:\n"
    "             write answered to query.changed p50/p99, and every subscriber's result\n"
    "             checked against a fresh uncached query at the end (mismatches)\n"
    "  ondemand   C x K identical cold gets of one on-demand patient at once (HTTP\n"
    "             requests made), then N fresh and N stale gets of D-1 warm ones\n"
    "             (bench/README.md; defaults N 100000, D 1000, C 4, K 25)\n"
    "  (api, replay, realtime, live, ondemand start their own clinic-api unless --api URL)\n"
    "\n"
    "options:\n"
    "  --n N            requests (ingest/update), reads (select), documents (coldstart),\n"
    "                   queued creates (replay), remote changes (realtime), local\n"
    "                   writes (live); defaults: 100000, 100000, 10000, 1000000, 100000,\n"
    "                   2000, 100000\n"
    "  --docs D         documents preloaded by update, select, live (default 100000)\n"
    "  --clients C      DEALER sockets (default 8; select: 1; live: subscriber connections)\n"
    "  --inflight K     requests in flight per socket (default 64; select: 1)\n"
    "  --threads T      threads driving the sockets (default 1: one poll loop)\n"
    "  --subs S         live: subscriptions in all (default 1000)\n"
    "  --write-every N  select: one update after every N reads (default 10; 0: reads only)\n"
    "  --rate W         live: local writes per second (default 10000); ingest, update,\n"
    "                   select: open loop, W requests/s over all clients, latency from\n"
    "                   each request's intended send time (default: closed loop)\n"
    "  --duration S     ingest, update, select: send for S seconds instead of --n\n"
    "                   requests (update/select cycle their set; ingest makes more)\n"
    "  --warmup N|Ss    ingest, update, select: N requests (or S seconds) answered\n"
    "                   before timing starts, not measured, drawn with other seeds\n"
    "  --endpoint ZMQ   use a running therasyncd; without it the bench starts its own\n"
    "                   (from its own directory) in a fresh temporary data dir\n"
    "  --api URL        clinic-api base URL (replay, realtime, live)\n"
    "  --policies DIR   policies for our therasyncd (default: the shipped ones);\n"
    "                   tests/fixtures/policies/permissive runs without validation\n"
    "  --config FILE    a therasyncd config file for our therasyncd (docs/CONFIG.md)\n"
    "  --hdr FILE       ingest/update/select: the latencies as an HdrHistogram histogram\n"
    "                   log (.hlog: one interval, values in us, Interval_Max in ms) to\n"
    "                   FILE and as HdrHistogram's percentile distribution text (Value\n"
    "                   Percentile TotalCount 1/(1-Percentile), ms) to FILE.hgrm;\n"
    "                   FILE.RUN and FILE.RUN.hgrm for each run when --runs > 1\n"
    "  --curve          connect with CURVE: without --endpoint the bench makes the daemon's\n"
    "                   key pair, its own admin key and the clients file in the daemon's\n"
    "                   data dir (0600) and starts it with security = {...}\n"
    "  --key FILE --server-key FILE\n"
    "                   with --endpoint: the bench's key pair and the daemon's public key\n"
    "                   (therasync keygen), as the CLI takes them; implies --curve\n"
    "  --runs R         repeat R times (each with a fresh daemon) and add a median line\n"
    "  --keep-data      keep the temporary data dirs\n"
    "  --max-seconds S  give up on everything after S seconds (default 600)\n";

static int usage(const char *what, const char *arg)
{
    fprintf(stderr, "therasync-bench: %s%s\n(see --help)\n", what, arg ? arg : "");
    return 2;
}

/* Seconds: a positive decimal number up to a day. */
static int seconds_arg(const char *name, const char *text, double *v)
{
    char *end = NULL;
    *v = strtod(text, &end);
    if (end == text || *end || !(*v > 0) || *v > 86400)
        return usage("bad value for ", name);
    return 0;
}

static int int_arg(const char *name, const char *text, int64_t min, int64_t max, int64_t *v)
{
    if (ts_parse_i64(text, v) || *v < min || *v > max)
        return usage("bad value for ", name);
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts_t o = {.runs = 1};
    bool curve = false;
    const char *key_file = NULL, *server_key_file = NULL;
    int64_t max_seconds = 600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("therasync-bench %s\n", TS_VERSION);
            return 0;
        }
        if (strcmp(a, "--keep-data") == 0) {
            o.keep_data = true;
            continue;
        }
        if (strcmp(a, "--curve") == 0) {
            curve = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc)
            return usage("unexpected argument ", a);
        const char *v = argv[++i];
        int64_t n = 0;
        if (strcmp(a, "--workload") == 0) {
            o.workload = v;
        } else if (strcmp(a, "--endpoint") == 0) {
            o.endpoint = v;
        } else if (strcmp(a, "--api") == 0) {
            o.api = v;
        } else if (strcmp(a, "--policies") == 0) {
            o.policies = v;
        } else if (strcmp(a, "--config") == 0) {
            o.config = v;
        } else if (strcmp(a, "--key") == 0) {
            key_file = v;
        } else if (strcmp(a, "--server-key") == 0) {
            server_key_file = v;
        } else if (strcmp(a, "--hdr") == 0) {
            o.hdr = v;
        } else if (strcmp(a, "--duration") == 0) {
            if (seconds_arg(a, v, &o.duration_s))
                return 2;
        } else if (strcmp(a, "--warmup") == 0) {
            /* N requests, or Ns seconds */
            size_t len = strlen(v);
            if (len > 1 && v[len - 1] == 's') {
                char num[64];
                snprintf(num, sizeof num, "%.*s", (int)(len - 1), v);
                if (seconds_arg(a, num, &o.warmup_s))
                    return 2;
            } else if (int_arg(a, v, 1, 100000000, &o.warmup)) {
                return 2;
            }
        } else if (strcmp(a, "--n") == 0) {
            if (int_arg(a, v, 1, 100000000, &o.n))
                return 2;
        } else if (strcmp(a, "--docs") == 0) {
            if (int_arg(a, v, 1, 100000000, &o.docs))
                return 2;
        } else if (strcmp(a, "--clients") == 0) {
            if (int_arg(a, v, 1, 1024, &n))
                return 2;
            o.clients = (int)n;
        } else if (strcmp(a, "--inflight") == 0) {
            if (int_arg(a, v, 1, 4096, &n))
                return 2;
            o.inflight = (int)n;
        } else if (strcmp(a, "--threads") == 0) {
            if (int_arg(a, v, 1, 64, &n))
                return 2;
            o.threads = (int)n;
        } else if (strcmp(a, "--write-every") == 0) {
            if (int_arg(a, v, 0, 1000000000, &o.write_every))
                return 2;
            if (o.write_every == 0)
                o.write_every = -1; /* no writes */
        } else if (strcmp(a, "--subs") == 0) {
            if (int_arg(a, v, 1, 1000000, &o.subs))
                return 2;
        } else if (strcmp(a, "--rate") == 0) {
            if (int_arg(a, v, 1, 1000000, &o.rate))
                return 2;
        } else if (strcmp(a, "--runs") == 0) {
            if (int_arg(a, v, 1, 64, &n))
                return 2;
            o.runs = (int)n;
        } else if (strcmp(a, "--max-seconds") == 0) {
            if (int_arg(a, v, 1, 86400, &max_seconds))
                return 2;
        } else {
            return usage("unknown option ", a);
        }
    }
    if (!o.workload)
        return usage("--workload is required", NULL);
    bool timed = strcmp(o.workload, "ingest") == 0 || strcmp(o.workload, "update") == 0 ||
                 strcmp(o.workload, "select") == 0;
    if (!timed && (o.duration_s > 0 || o.warmup > 0 || o.warmup_s > 0 || o.hdr))
        return usage("--duration, --warmup and --hdr are for ingest, update and select, not ",
                     o.workload);

    /* --curve: keys of our own for our own daemon, or the files given for
     * a running one (like the CLI's --key and --server-key). */
    if (!key_file != !server_key_file)
        return usage("--key and --server-key go together", NULL);
    if (key_file && !o.endpoint)
        return usage("--key and --server-key are for a daemon at --endpoint; "
                     "for the bench's own daemon use --curve alone", NULL);
    if (curve && o.endpoint && !key_file)
        return usage("--curve with --endpoint needs --key FILE and --server-key FILE", NULL);
    if (strcmp(o.workload, "api") == 0 && (curve || key_file))
        return usage("--curve: the api workload does not talk to therasyncd", NULL);
    if (key_file ? bench_curve_files(key_file, server_key_file)
                 : curve ? bench_curve_generate() : 0)
        return 1;
    /* A dead peer must not kill the bench (its daemon is stopped by pid). */
    signal(SIGPIPE, SIG_IGN);
    o.deadline_us = ts_mono_us() + max_seconds * 1000000;
    if (strcmp(o.workload, "api") == 0)
        return bench_run_api(&o);
    if (strcmp(o.workload, "ondemand") == 0)
        return bench_run_ondemand(&o);
    return bench_run_workload(&o);
}
