/* test_bench.c — therasync-bench as a real process against a real
 * therasyncd (--endpoint): each workload that drives the front door runs a
 * few hundred requests and prints its one JSON line with the contract's
 * fields, no errors, and the figures a comparison with the peer needs.
 * Not a timing: small runs check that the measuring tool works. */
#include "../support/engine.h"
#include "../support/hlog_read.h"
#include "../support/proc.h"
#include "../support/run.h"

#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#define BENCH_TIMEOUT_MS 60000

static ts_engine_t engine;

static void start_shipped(void)
{
    cr_assert_eq(ts_engine_start(&engine, NULL), 0, "therasyncd did not start (log: %s)",
                 engine.proc.log_path);
}

static void stop(void)
{
    ts_engine_destroy(&engine);
}

TestSuite(bench, .init = start_shipped, .fini = stop, .timeout = 120);

/* Runs the bench against endpoint (NULL: the bench starts its own);
 * returns its last stdout line, parsed. */
static cJSON *bench_at(const char *endpoint, const char *const extra[])
{
    const char *args[24] = {"--endpoint", endpoint};
    size_t n = endpoint ? 2 : 0;
    for (size_t i = 0; extra[i] && n < 23; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    ts_buf_t out = {0}, err = {0};
    int rc = ts_run("therasync-bench", args, NULL, BENCH_TIMEOUT_MS, &out, &err);
    cr_assert_eq(rc, 0, "therasync-bench exited %d: %s", rc, err.data ? err.data : "");
    cr_assert_not_null(out.data, "no output");
    char *last = out.data;
    for (char *nl; (nl = strchr(last, '\n')) && nl[1];)
        last = nl + 1;
    cJSON *line = cJSON_Parse(last);
    cr_assert_not_null(line, "not a JSON line: %s", last);
    ts_buf_free(&out);
    ts_buf_free(&err);
    return line;
}

/* The same against the engine. */
static cJSON *bench(const char *const extra[])
{
    return bench_at(engine.endpoint, extra);
}

static double num(const cJSON *line, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(line, key);
    cr_assert(cJSON_IsNumber(v), "no number %s", key);
    return v->valuedouble;
}

Test(bench, ingest_reports_the_contract_fields)
{
    cJSON *line = bench((const char *[]){"--workload", "ingest", "--n", "2000", "--clients", "2",
                                         "--inflight", "8", NULL});
    cr_assert_str_eq(cJSON_GetObjectItem(line, "workload")->valuestring, "ingest");
    cr_assert_eq(num(line, "n"), 2000);
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_gt(num(line, "ops_per_s"), 0);
    cr_assert_gt(num(line, "p99_us"), 0);
    cr_assert_geq(num(line, "p99_us"), num(line, "p50_us"));
    /* the engine's own view, from its metrics */
    cr_assert_gt(num(line, "engine_p50_us"), 0);
    cr_assert_geq(num(line, "engine_p99_us"), num(line, "engine_p50_us"));
    cr_assert_gt(num(line, "commit_p50_us"), 0);
    cr_assert_geq(num(line, "commit_p99_us"), num(line, "commit_p50_us"));
    cJSON_Delete(line);
    /* every create the bench was answered for is in the engine */
    cJSON *s = ts_rpc(&engine, "status", NULL);
    const cJSON *colls = cJSON_GetObjectItem(ts_rpc_result(s), "collections");
    double sessions = num(colls, "sessions");
    cr_assert_geq(sessions, 1);
    cr_assert_leq(sessions, 2000);
    cJSON_Delete(s);
}

/* The exact latency at the bench's nearest rank of p lies in the bucket
 * the log's counts give that rank: the log holds the run's latencies to
 * HdrHistogram's 3 significant digits. */
static void assert_in_bucket(const th_hist_t *h, double p, double exact_us)
{
    int64_t rank = (int64_t)ceil(p / 100.0 * (double)h->total - 1e-9);
    int32_t i = th_hist_index_at_rank(h, rank);
    cr_assert_geq(i, 0);
    cr_assert_geq(exact_us, (double)th_hist_lowest_at(h, i), "p%g", p);
    cr_assert_leq(exact_us, (double)th_hist_highest_at(h, i), "p%g", p);
}

/* p90, p99.9 and max next to p50/p99, in order; --hdr FILE writes
 * HdrHistogram's histogram log to FILE (one interval, the V2 compressed
 * histogram of every answered request, in µs) and its percentile
 * distribution text to FILE.hgrm: the header, one line per percentile
 * tick, the last at 1.0 with every answered request counted. */
Test(bench, ingest_reports_the_tail_and_an_hdr_log)
{
    char *dir = ts_tmpdir("bench-hdr");
    cr_assert_not_null(dir);
    char hlog[512], hgrm[520];
    snprintf(hlog, sizeof hlog, "%s/ingest.hlog", dir);
    snprintf(hgrm, sizeof hgrm, "%s.hgrm", hlog);
    cJSON *line = bench((const char *[]){"--workload", "ingest", "--n", "1500", "--clients", "2",
                                         "--inflight", "8", "--hdr", hlog, NULL});
    cr_assert_gt(num(line, "p50_us"), 0);
    cr_assert_geq(num(line, "p90_us"), num(line, "p50_us"));
    cr_assert_geq(num(line, "p99_us"), num(line, "p90_us"));
    cr_assert_geq(num(line, "p999_us"), num(line, "p99_us"));
    cr_assert_geq(num(line, "max_us"), num(line, "p999_us"));
    FILE *f = fopen(hgrm, "r");
    cr_assert_not_null(f, "no %s", hgrm);
    char text[256], last[256] = "";
    cr_assert_not_null(fgets(text, sizeof text, f));
    cr_assert_not_null(strstr(text, "Value     Percentile TotalCount 1/(1-Percentile)"), "%s", text);
    int rows = 0;
    double prev_v = -1, prev_p = -1;
    while (fgets(text, sizeof text, f)) {
        double v, p;
        long count;
        if (text[0] == '#' || sscanf(text, "%lf %lf %ld", &v, &p, &count) != 3)
            continue;
        cr_assert_geq(v, prev_v, "values rise: %s", text);
        cr_assert_gt(p, prev_p, "percentiles rise: %s", text);
        prev_v = v, prev_p = p;
        snprintf(last, sizeof last, "%s", text);
        rows++;
    }
    fclose(f);
    cr_assert_gt(rows, 20);
    double v, p;
    long count;
    cr_assert_eq(sscanf(last, "%lf %lf %ld", &v, &p, &count), 3);
    cr_assert_float_eq(p, 1.0, 1e-9);
    cr_assert_eq(count, 1500);
    cr_assert_float_eq(v * 1000.0, num(line, "max_us"), 1.0, "the 100%% line is the max (ms)");

    /* The log: the header, then one interval as long as the run */
    f = fopen(hlog, "r");
    cr_assert_not_null(f, "no %s", hlog);
    char row[65536];
    int version_minor = -1, intervals = 0;
    double start_time = 0, base_time = 0, start = -1, len = 0, max_ms = 0;
    th_hist_t h = {0};
    while (fgets(row, sizeof row, f)) {
        sscanf(row, "#[Histogram log format version 1.%d]", &version_minor);
        sscanf(row, "#[StartTime: %lf", &start_time);
        sscanf(row, "#[BaseTime: %lf", &base_time);
        if (row[0] == '#' || row[0] == '"')
            continue;
        const char *b64;
        cr_assert_eq(th_hlog_line(row, &start, &len, &max_ms, &b64), 0, "%s", row);
        cr_assert_eq(th_hist_decode(b64, &h), 0, "%s", h.error);
        intervals++;
    }
    fclose(f);
    cr_assert_eq(version_minor, 3);
    cr_assert_eq(intervals, 1);
    cr_assert_float_eq(start, 0.0, 1e-9, "relative to BaseTime");
    cr_assert_float_eq(base_time, start_time, 1e-9);
    double now = (double)time(NULL);
    cr_assert(start_time > now - 120 && start_time <= now + 1, "StartTime %.3f", start_time);
    cr_assert_float_eq(len, num(line, "seconds"), 0.0011);
    cr_assert_float_eq(max_ms * 1000.0, num(line, "max_us"), 0.5, "Interval_Max in ms");
    cr_assert_eq(h.cookie, 0x1c849314u, "V2 compressed");
    cr_assert_eq(h.encoding_cookie, 0x1c849313u, "V2 encoding");
    cr_assert_eq(h.digits, 3);
    cr_assert_eq(h.lowest, 1);
    cr_assert_eq(h.highest, INT64_C(3600000000));
    cr_assert_eq(h.total, 1500, "every answered request");
    assert_in_bucket(&h, 50, num(line, "p50_us"));
    assert_in_bucket(&h, 99, num(line, "p99_us"));
    assert_in_bucket(&h, 100, num(line, "max_us"));
    th_hist_free(&h);
    cJSON_Delete(line);
    ts_rmtree(dir);
    free(dir);
}

Test(bench, select_reports_rows_and_the_peers_read_rate)
{
    cJSON *line =
        bench((const char *[]){"--workload", "select", "--n", "200", "--docs", "2000", NULL});
    cr_assert_str_eq(cJSON_GetObjectItem(line, "workload")->valuestring, "select");
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_eq(num(line, "reads"), 200);
    cr_assert_eq(num(line, "writes"), 20);
    cr_assert_gt(num(line, "result_rows_total"), 0);
    /* reads over the time spent in reads alone: never below reads over the
     * whole run, which also holds the writes */
    cr_assert_geq(num(line, "read_time_reads_per_s"), num(line, "ops_per_s"));
    /* the cache's view: every read went through it */
    cr_assert_geq(num(line, "cache_hits") + num(line, "cache_misses"), 200);
    cr_assert_geq(num(line, "cache_hit_ratio"), 0);
    cr_assert_leq(num(line, "cache_hit_ratio"), 1);
    cr_assert_geq(num(line, "cache_entries"), 0);
    cr_assert_gt(num(line, "selector_queries"), 0);
    cJSON_Delete(line);
}

/* --write-every: the mix of select, down to reads only (each run its own
 * daemon: select preloads the same documents) */
Test(bench, select_takes_its_write_mix, .timeout = 120)
{
    cJSON *line = bench_at(NULL, (const char *[]){"--workload", "select", "--n", "200", "--docs",
                                                  "2000", "--write-every", "0", NULL});
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_eq(num(line, "reads"), 200);
    cr_assert_eq(num(line, "writes"), 0);
    cJSON_Delete(line);
    line = bench_at(NULL, (const char *[]){"--workload", "select", "--n", "200", "--docs", "2000",
                                           "--write-every", "4", NULL});
    cr_assert_eq(num(line, "reads"), 200);
    cr_assert_eq(num(line, "writes"), 50);
    cJSON_Delete(line);
}

Test(bench, update_counts_refused_writes_apart)
{
    cJSON *line = bench((const char *[]){"--workload", "update", "--n", "1000", "--docs", "1000",
                                         "--clients", "2", "--inflight", "8", NULL});
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_gt(num(line, "ops_per_s"), 0);
    /* the shipped rules refuse some generated transitions (completed ->
     * scheduled, about a third of them): counted, not failed */
    cr_assert_gt(num(line, "validation_failed"), 50);
    cr_assert_lt(num(line, "validation_failed"), 950);
    cJSON_Delete(line);
}

/* --duration: the run sends for that long, cycling update's set of 200
 * and making ingest's creates past its set (fresh ids: no conflicts). */
Test(bench, duration_runs_for_a_time)
{
    cJSON *line = bench((const char *[]){"--workload", "update", "--n", "200", "--docs", "500",
                                         "--clients", "2", "--inflight", "4", "--duration",
                                         "1.5", NULL});
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_float_eq(num(line, "duration_s"), 1.5, 1e-9);
    cr_assert_geq(num(line, "seconds"), 1.5);
    cr_assert_lt(num(line, "seconds"), 10);
    cr_assert_gt(num(line, "requests"), 200, "the set of 200 comes again");
    cr_assert_gt(num(line, "max_us"), 0);
    cJSON_Delete(line);
}

/* (a test of its own: the engine is fresh for each test, and update's
 * preload creates the same first sessions as ingest) */
Test(bench, duration_makes_fresh_creates)
{
    cJSON *line = bench((const char *[]){"--workload", "ingest", "--n", "100", "--clients", "2",
                                         "--inflight", "4", "--duration", "1", NULL});
    cr_assert_eq(num(line, "errors"), 0, "a made create conflicted");
    cr_assert_gt(num(line, "requests"), 100);
    cr_assert_geq(num(line, "seconds"), 1);
    cJSON_Delete(line);
}

/* --rate: open loop. 2,000 creates due within 20 ms on one socket with one
 * in flight cannot be served on time; each one's latency counts from when
 * it was due, so the last one waited about the whole run. Measured from
 * its actual send (coordinated omission) it would be one create's time. */
Test(bench, open_loop_counts_from_the_intended_send)
{
    cJSON *line = bench((const char *[]){"--workload", "ingest", "--n", "2000", "--clients", "1",
                                         "--inflight", "1", "--rate", "100000", NULL});
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_eq(num(line, "rate"), 100000);
    cr_assert_eq(num(line, "requests"), 2000);
    double run_us = num(line, "seconds") * 1e6;
    cr_assert_gt(run_us, 100000, "2,000 serial creates take more than 0.1 s");
    cr_assert_geq(num(line, "max_us"), 0.8 * (run_us - 20000), "max %.0f us in a %.0f us run",
                  num(line, "max_us"), run_us);
    cr_assert_gt(num(line, "late_sends"), 1000);
    cJSON_Delete(line);
}

/* At a rate it can keep, the run lasts as long as the schedule. */
Test(bench, open_loop_keeps_the_schedule)
{
    cJSON *line = bench((const char *[]){"--workload", "update", "--n", "300", "--docs", "300",
                                  "--clients", "2", "--inflight", "8", "--rate", "400", NULL});
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_geq(num(line, "seconds"), 299.0 / 400);
    cJSON_Delete(line);
}

/* --warmup: answered before the clock starts and not counted in the run. */
Test(bench, warmup_is_not_measured)
{
    cJSON *line = bench((const char *[]){"--workload", "select", "--n", "200", "--docs", "500",
                                         "--warmup", "150", NULL});
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_eq(num(line, "warmup_requests"), 150);
    cr_assert_eq(num(line, "reads"), 200);
    cr_assert_eq(num(line, "requests"), 220);
    cJSON_Delete(line);
}

Test(bench, warmup_for_a_time)
{
    cJSON *line = bench((const char *[]){"--workload", "ingest", "--n", "300", "--clients", "2",
                                  "--inflight", "4", "--warmup", "0.5s", NULL});
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_gt(num(line, "warmup_requests"), 0);
    cr_assert_geq(num(line, "warmup_seconds"), 0.5);
    cr_assert_eq(num(line, "requests"), 300);
    cJSON_Delete(line);
}

/* live starts its own clinic-api and therasyncd --api (it changes sessions
 * on both sides): a tiny run, every subscriber's result checked by the
 * bench against a fresh uncached query. */
Test(live, subscribers_end_with_the_fresh_result, .timeout = 180)
{
    cJSON *line = bench_at(NULL, (const char *[]){"--workload", "live", "--docs", "2000", "--subs",
                                                  "50", "--clients", "4", "--n", "20000", NULL});
    cr_assert_str_eq(cJSON_GetObjectItem(line, "workload")->valuestring, "live");
    cr_assert_eq(num(line, "subscriptions"), 50);
    cr_assert_eq(num(line, "mismatches"), 0);
    cr_assert_eq(num(line, "apply_errors"), 0);
    cr_assert_eq(num(line, "version_gaps"), 0);
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_eq(num(line, "writes_answered"), 20000);
    cr_assert_gt(num(line, "notifications"), 0);
    cr_assert_gt(num(line, "results_changed"), 0);
    cr_assert_gt(num(line, "attributed"), 0);
    /* a write's server copy comes back on the feed as a second change
     * (version raised): told apart from the write's own */
    cr_assert_gt(num(line, "confirm_attributed"), 0);
    cr_assert_geq(num(line, "confirm_p99_us"), num(line, "confirm_p50_us"));
    cr_assert_gt(num(line, "remote_attributed"), 0, "remote changes reach the subscribers");
    cr_assert_geq(num(line, "p50_us"), 0);
    cr_assert_geq(num(line, "p99_us"), num(line, "p50_us"));
    cJSON_Delete(line);
}

/* therasync-canned: a front door with nothing behind it, for measuring the
 * transport and the client alone (bench/README.md, "The ceiling"). */
Test(canned, answers_every_request_with_its_id_and_the_canned_result, .timeout = 120)
{
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", ts_free_port());
    ts_proc_t canned = {0};
    const char *args[] = {"--endpoint", endpoint, "--result",
                          ts_source_path("bench/fixtures/upcoming-result.json"), NULL};
    cr_assert_eq(ts_proc_spawn(&canned, NULL, "therasync-canned", args), 0);
    char line[256];
    cr_assert_eq(ts_proc_wait_line(&canned, "ready", 10000, line, sizeof line), 0,
                 "not ready (log: %s)", canned.log_path);

    /* the bench's select against it: every read answered with the fixture's 20 rows */
    cJSON *out =
        bench_at(endpoint, (const char *[]){"--workload", "select", "--n", "300", "--docs", "500",
                                            "--clients", "2", "--inflight", "4", NULL});
    cr_assert_eq(num(out, "errors"), 0);
    cr_assert_eq(num(out, "reads"), 300);
    cr_assert_eq(num(out, "result_rows_total"), 300 * 20);
    cJSON_Delete(out);

    /* a string id comes back as sent; a notification (no id) gets nothing */
    void *zctx = zmq_ctx_new();
    void *dealer = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_connect(dealer, endpoint), 0);
    const char note[] = "{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}";
    cr_assert_null(ts_rpc_raw(dealer, note, sizeof note - 1, 300), "a notification was answered");
    const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":\"a-1\",\"method\":\"ping\"}";
    char *reply = ts_rpc_raw(dealer, req, sizeof req - 1, 5000);
    cr_assert_not_null(reply, "no answer");
    cJSON *r = cJSON_Parse(reply);
    cr_assert_str_eq(cJSON_GetObjectItem(r, "id")->valuestring, "a-1");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "items")),
                 20);
    cJSON_Delete(r);
    free(reply);
    zmq_close(dealer);
    zmq_ctx_term(zctx);
    cr_assert_eq(ts_proc_stop(&canned, 5000), 0, "SIGTERM must stop it cleanly");
}

Test(canned, refuses_a_result_file_that_is_not_json)
{
    ts_buf_t out = {0}, err = {0};
    int rc = ts_run("therasync-canned",
                    (const char *[]){"--endpoint", "tcp://127.0.0.1:1", "--result",
                                     ts_source_path("README.md"), NULL},
                    NULL, 10000, &out, &err);
    cr_assert_eq(rc, 1);
    cr_assert_not_null(strstr(err.data ? err.data : "", "is not JSON"), "%s",
                       err.data ? err.data : "");
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* coldstart reports the documents the daemon loaded (its "store: loaded N
 * documents" line), not the creates sent: the shipped validation refuses
 * some generated sessions. */
Test(coldstart, counts_the_documents_loaded, .timeout = 120)
{
    ts_buf_t out = {0}, err = {0};
    int rc = ts_run("therasync-bench",
                    (const char *[]){"--workload", "coldstart", "--n", "4000", NULL}, NULL,
                    BENCH_TIMEOUT_MS, &out, &err);
    cr_assert_eq(rc, 0, "therasync-bench exited %d: %s", rc, err.data ? err.data : "");
    cJSON *line = cJSON_Parse(out.data ? out.data : "");
    cr_assert_not_null(line, "%s", out.data ? out.data : "");
    /* the last start's count, the one the run timed */
    long loaded = -1;
    for (const char *p = err.data; p && (p = strstr(p, "store: loaded ")) != NULL; p++)
        loaded = strtol(p + 14, NULL, 10);
    cr_assert_gt(loaded, 0, "no load line: %s", err.data ? err.data : "");
    cr_assert_eq(num(line, "docs"), loaded);
    cr_assert_eq(num(line, "docs_sent"), 4000);
    cr_assert_eq(num(line, "docs") + num(line, "validation_failed"), 4000);
    cJSON_Delete(line);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* bench/report turns the JSON lines into a Markdown table (one row per
 * line, other lines skipped) and an SVG of ops/s and p99 per run. */
static char *report_run(const char *args, int *status)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "python3 %s %s", ts_source_path("bench/report"), args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    ts_buf_t out = {0};
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, p)) > 0)
        ts_buf_append(&out, chunk, got);
    *status = pclose(p);
    return out.data ? out.data : strdup("");
}

static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

Test(report, makes_a_markdown_table_and_an_svg_plot)
{
    char *dir = ts_tmpdir("bench-report");
    cr_assert_not_null(dir);
    char args[1024], svg_path[512];
    snprintf(svg_path, sizeof svg_path, "%s/plot.svg", dir);
    snprintf(args, sizeof args, "-o %s %s", svg_path,
             ts_source_path("bench/fixtures/report-sample.jsonl"));
    int status;
    char *md = report_run(args, &status);
    cr_assert_eq(status, 0, "%s", md);
    cr_assert_not_null(strstr(md, "| run | seconds | ops/s | p50 ms | p90 ms | p99 ms |"), "%s", md);
    cr_assert_eq(count_of(md, "\n| "), 5, "one row per JSON line, the log line skipped:\n%s", md);
    cr_assert_not_null(strstr(md, "| ingest 8x64 median of 2 | 0.107 | 47,999 | 9.91 | 16.17 | 22.20 |"),
                       "%s", md);
    cr_assert_not_null(strstr(md, "| update 8x64 curve rate 2000 run 1 |"), "%s", md);
    free(md);
    FILE *f = fopen(svg_path, "r");
    cr_assert_not_null(f, "no plot");
    char svg[16384];
    size_t len = fread(svg, 1, sizeof svg - 1, f);
    svg[len] = '\0';
    fclose(f);
    cr_assert_eq(strncmp(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39), 0, "%s", svg);
    cr_assert_not_null(strstr(svg, "</svg>"));
    /* the background, 5 throughput bars, 4 p99 bars (coldstart has none) */
    cr_assert_eq(count_of(svg, "<rect "), 10, "%s", svg);
    cr_assert_not_null(strstr(svg, ">56,117<"), "the best run's ops/s is written by its bar");
    cr_assert_not_null(strstr(svg, ">81.16<"), "p99 in ms by its bar");
    ts_rmtree(dir);
    free(dir);
    /* nothing to report: a clear error */
    md = report_run("/dev/null 2>/dev/null", &status);
    cr_assert_neq(status, 0);
    free(md);
}

/* --curve with the bench's own daemon: the daemon starts with the keys the
 * bench made (0600 in its data dir) and requires them, and every bench
 * socket (the drive, the metrics call) gets through with its key. */
Test(curve, own_daemon_with_keys, .timeout = 120)
{
    ts_buf_t out = {0}, err = {0};
    int rc = ts_run("therasync-bench",
                    (const char *[]){"--workload", "ingest", "--n", "500", "--clients", "2",
                                     "--inflight", "4", "--curve", "--keep-data", NULL},
                    NULL, BENCH_TIMEOUT_MS, &out, &err);
    const char *log = err.data ? err.data : "";
    cr_assert_eq(rc, 0, "therasync-bench exited %d: %s", rc, log);
    cJSON *line = cJSON_Parse(out.data ? out.data : "");
    cr_assert_not_null(line, "%s", out.data ? out.data : "");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(line, "curve")), "%s", out.data);
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_eq(num(line, "requests"), 500);
    cr_assert_gt(num(line, "engine_p50_us"), 0, "metrics answered the bench's admin key");
    /* our own daemon: its CPU in the timed part is measured */
    cr_assert_gt(num(line, "engine_cpu_s"), 0);
    cr_assert_lt(num(line, "engine_cpu_s"), 60);
    cJSON_Delete(line);
    cr_assert(strstr(log, "client keys loaded: 1"), "%s", log);
    cr_assert(strstr(log, "clients need a key (CURVE)"), "%s", log);
    const char *kept = strstr(log, "bench: data kept in ");
    cr_assert_not_null(kept, "%s", log);
    char dir[512];
    cr_assert_eq(sscanf(kept + 20, "%511s", dir), 1);
    const char *files[] = {"bench-server.key", "bench-clients", "bench-curve.lua"};
    for (size_t i = 0; i < 3; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "no %s", path);
        cr_assert_eq(st.st_mode & 0777, 0600, "%s is %o", path, st.st_mode & 0777);
    }
    ts_rmtree(dir);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* With a running daemon that wants keys: --key and --server-key, as the
 * CLI takes them (keys made by therasync keygen). */
Test(curve, endpoint_with_key_files, .timeout = 120)
{
    char *dir = ts_tmpdir("bench-curve");
    cr_assert_not_null(dir);
    char server[512], client[512], key[600], pub[600], clients[600], config[600];
    snprintf(server, sizeof server, "%s/server", dir);
    snprintf(client, sizeof client, "%s/bench", dir);
    ts_buf_t out = {0};
    cr_assert_eq(ts_run("therasync", (const char *[]){"keygen", server, NULL}, NULL, 10000, NULL,
                        NULL),
                 0);
    cr_assert_eq(ts_run("therasync", (const char *[]){"keygen", client, NULL}, NULL, 10000, &out,
                        NULL),
                 0);
    char name[64], role[16], client_pub[64];
    cr_assert_eq(sscanf(out.data, "%63s %15s %63s", name, role, client_pub), 3, "%s", out.data);
    snprintf(clients, sizeof clients, "%s/clients", dir);
    FILE *f = fopen(clients, "w");
    cr_assert_not_null(f);
    fprintf(f, "bench admin %s\n", client_pub);
    fclose(f);
    snprintf(config, sizeof config, "%s/therasyncd.lua", dir);
    f = fopen(config, "w");
    cr_assert_not_null(f);
    fprintf(f, "security = { curve_secret_file = \"%s.key\", clients_file = \"%s\" }\n", server,
            clients);
    fclose(f);
    ts_engine_t e = {0};
    cr_assert_eq(ts_engine_start(&e, (const char *[]){"--config", config, NULL}), 0,
                 "therasyncd did not start (log: %s)", e.proc.log_path);
    /* it wants a key: the CLI without one gets no answer */
    cr_assert_eq(ts_run("therasync",
                        (const char *[]){"--endpoint", e.endpoint, "--timeout", "1000", "ping",
                                         NULL},
                        NULL, 10000, NULL, NULL),
                 3);
    snprintf(key, sizeof key, "%s.key", client);
    snprintf(pub, sizeof pub, "%s.pub", server);
    cJSON *line = bench_at(e.endpoint, (const char *[]){"--workload", "update", "--n", "300",
                                                        "--docs", "300", "--clients", "2",
                                                        "--inflight", "4", "--key", key,
                                                        "--server-key", pub, NULL});
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(line, "curve")));
    cr_assert_eq(num(line, "errors"), 0);
    cr_assert_eq(num(line, "requests"), 300);
    cr_assert_gt(num(line, "engine_p50_us"), 0);
    cJSON_Delete(line);
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
    ts_buf_free(&out);
}
