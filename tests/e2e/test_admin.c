/* test_admin.c — the daemon's admin endpoint (--admin, docs/OPERATIONS.md):
 * /metrics checked by a strict exposition-format parser
 * (tests/support/promcheck.py), a thousand scrapes at once, /healthz and
 * /readyz, the endpoint with client keys on, and addresses beyond
 * loopback refused. */
#include "../support/engine.h"
#include "../support/http.h"
#include "../support/run.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

static ts_engine_t engine;
static char base[64]; /* http://127.0.0.1:PORT */

/* Starts the daemon with --admin on a port of its choosing, after extra
 * args (NULL-terminated, may hold nothing), and reads that port from its
 * ready line. */
static void start(const char *const extra[])
{
    const char *args[16];
    size_t n = 0;
    for (; extra && extra[n]; n++)
        args[n] = extra[n];
    bool policies = false;
    for (size_t i = 0; i < n; i++)
        policies = policies || strcmp(args[i], "--policies") == 0;
    args[n++] = "--admin";
    args[n++] = "127.0.0.1:0";
    if (!policies) {
        args[n++] = "--policies";
        args[n++] = ts_source_path("tests/fixtures/policies/permissive");
    }
    args[n] = NULL;
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd did not start");
    char line[1024];
    cr_assert_eq(ts_proc_wait_line(&engine.proc, "admin=127.0.0.1:", 5000, line, sizeof line), 0);
    int port = (int)strtol(strstr(line, "admin=127.0.0.1:") + 16, NULL, 10);
    cr_assert(port > 0, "%s", line);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
}

static void stop(void)
{
    ts_engine_destroy(&engine);
}

static long get(const char *path, ts_http_resp_t *r)
{
    char url[128];
    snprintf(url, sizeof url, "%s%s", base, path);
    cr_assert_eq(ts_http("GET", url, NULL, NULL, 10000, r), 0, "GET %s: no answer", path);
    return r->status;
}

static void some_traffic(void)
{
    for (int i = 0; i < 20; i++) {
        char p[128];
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"doc\":{\"id\":\"s%d\",\"n\":%d}}", i, i);
        cJSON *r = ts_rpc(&engine, "create", p);
        cr_assert_not_null(ts_rpc_result(r));
        cJSON_Delete(r);
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"s%d\"}", i);
        r = ts_rpc(&engine, "get", p);
        cr_assert_not_null(ts_rpc_result(r));
        cJSON_Delete(r);
    }
}

static const char *const families[] = {
    "therasync_info", "therasync_uptime_seconds", "therasync_sync_online",
    "therasync_sync_pending", "therasync_api_state", "therasync_storage",
    "therasync_store_calls_total", "therasync_store_documents",
    "therasync_store_sync_confirmed_total", "therasync_front_call_seconds",
    "therasync_front_busy_total", "therasync_persist_commit_seconds",
    "therasync_persist_commits_total", "therasync_cache_notify_seconds",
    "therasync_cache_hits_total", NULL};

Test(admin, metrics_pass_a_strict_parser, .timeout = 60)
{
    start(NULL);
    some_traffic();
    usleep(300 * 1000); /* past the endpoint's reuse of an answer */
    ts_http_resp_t r = {0};
    cr_assert_eq(get("/metrics", &r), 200, "%s", r.body);
    char *type = ts_http_header(&r, "Content-Type");
    cr_assert(type && strstr(type, "version=0.0.4"), "%s", type ? type : "no Content-Type");
    free(type);
    char out[8192];
    cr_assert_eq(ts_promcheck(r.body, families, out, sizeof out), 0, "%s", out);
    /* the numbers are the engine's: 20 creates, 20 gets, the commits */
    cr_assert(strstr(r.body, "therasync_store_calls_total{method=\"create\"} 20\n"), "%s", r.body);
    cr_assert(strstr(r.body, "therasync_store_documents{collection=\"sessions\"} 20\n"));
    cr_assert(strstr(r.body, "therasync_front_call_seconds_count{method=\"get\"} 20\n"));
    cr_assert(strstr(r.body, "therasync_front_call_seconds_bucket{method=\"create\",le=\"+Inf\"} 20\n"));
    cr_assert_null(strstr(r.body, "therasync_persist_commit_seconds_count 0\n"), "commits timed");

    /* The checker can fail: a falling bucket, a sample before its TYPE. */
    char *bad = strdup(r.body);
    char *at = strstr(bad, "le=\"+Inf\"} 20");
    cr_assert_not_null(at);
    memcpy(at, "le=\"+Inf\"} 00", 13);
    cr_assert_eq(ts_promcheck(bad, NULL, out, sizeof out), 1);
    cr_assert(strstr(out, "falls") || strstr(out, "_count"), "%s", out);
    free(bad);
    cr_assert_eq(ts_promcheck("therasync_x_total 1\n# TYPE therasync_x_total counter\n", NULL, out,
                           sizeof out),
                 1);
    cr_assert(strstr(out, "before its TYPE"), "%s", out);
    ts_http_free(&r);

    /* The text scrapes share is the engine's of the moment: past the
     * reuse, the next scrape has the new counts, not the text rendered
     * before them. */
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"s0\"}");
    cr_assert_not_null(ts_rpc_result(g));
    cJSON_Delete(g);
    usleep(300 * 1000);
    cr_assert_eq(get("/metrics", &r), 200, "%s", r.body);
    cr_assert(strstr(r.body, "therasync_front_call_seconds_count{method=\"get\"} 21\n"), "%s",
              r.body);
    ts_http_free(&r);
    stop();
}

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data, (void)arg;
    return size * n;
}

/* n scrapes of /metrics at once, each on a connection of its own; counts
 * the 200s and 503s. Fails the test when one is still open after 90 s. */
static void scrape_many(int n, int *ok, int *unavailable)
{
    CURLM *multi = curl_multi_init();
    CURL **easy = calloc((size_t)n, sizeof *easy);
    char url[128];
    snprintf(url, sizeof url, "%s/metrics", base);
    for (int i = 0; i < n; i++) {
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT_MS, 60000L);
        curl_easy_setopt(easy[i], CURLOPT_FORBID_REUSE, 1L);
        curl_easy_setopt(easy[i], CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard);
        curl_multi_add_handle(multi, easy[i]);
    }
    int64_t until = ts_mono_us() + 90 * 1000000LL;
    int running = 1;
    while (running && ts_mono_us() < until) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    cr_assert_eq(running, 0, "%d scrapes still open after 90 s", running);
    *ok = *unavailable = 0;
    for (int i = 0; i < n; i++) {
        long status = 0;
        curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &status);
        *ok += status == 200;
        *unavailable += status == 503;
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    curl_multi_cleanup(multi);
    free(easy);
}

/* Every scrape of a thousand at once ends with an answer: 200, or 503 when
 * the endpoint is overloaded, never a hang or a reset. */
Test(admin, thousand_concurrent_scrapes, .timeout = 120)
{
    struct rlimit nofile;
    getrlimit(RLIMIT_NOFILE, &nofile);
    if (nofile.rlim_cur < 4096 && nofile.rlim_max >= 4096) { /* the daemon inherits it */
        nofile.rlim_cur = 4096;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    cr_assert(nofile.rlim_cur >= 2200, "needs 2,200 descriptors, has %ld", (long)nofile.rlim_cur);
    start(NULL);
    some_traffic();
    enum { N = 1000 };
    int ok, unavailable;
    scrape_many(N, &ok, &unavailable);
    cr_assert_eq(ok + unavailable, N, "%d answered 200, %d 503, of %d", ok, unavailable, N);
    cr_assert(ok >= N / 2, "only %d of %d scrapes got the metrics", ok, N);
    /* and the engine is none the worse */
    cJSON *r = ts_rpc(&engine, "status", NULL);
    cr_assert_not_null(ts_rpc_result(r));
    cJSON_Delete(r);
    ts_http_resp_t h = {0};
    cr_assert_eq(get("/healthz", &h), 200);
    ts_http_free(&h);
    stop();
}

/* Writes the permissive policies to dir/policies, with validate.lua
 * replaced by validate when it is not NULL, and a config giving policies
 * a budget for seconds of work; returns the policies dir (static). */
static const char *slow_policies(const char *dir, const char *validate, char *config, size_t len)
{
    static char pol[4200];
    char path[4400];
    snprintf(pol, sizeof pol, "%s/policies", dir);
    cr_assert_eq(mkdir(pol, 0700), 0);
    const char *files[] = {"validate.lua", "selectors.lua", "conflict.lua"};
    for (int i = 0; i < 3; i++) {
        char from[256];
        snprintf(from, sizeof from, "tests/fixtures/policies/permissive/%s", files[i]);
        FILE *in = fopen(ts_source_path(from), "r");
        snprintf(path, sizeof path, "%s/%s", pol, files[i]);
        FILE *out = fopen(path, "w");
        cr_assert(in && out);
        if (i == 0 && validate)
            fputs(validate, out);
        char buf[4096];
        size_t n;
        while (!(i == 0 && validate) && (n = fread(buf, 1, sizeof buf, in)) > 0)
            fwrite(buf, 1, n, out);
        fclose(in);
        fclose(out);
    }
    snprintf(config, len, "%s/therasync.lua", dir);
    FILE *f = fopen(config, "w");
    fputs("lua = { instruction_budget = 100000000000 }\n", f);
    fclose(f);
    return pol;
}

/* The engine stalls (a policy call of seconds holds the store): /healthz
 * and the scrapes say 503 with the reason within seconds, none waits for
 * the stall to end; after it, 200 again. */
Test(admin, a_stalled_engine_gets_503_not_a_hang, .timeout = 180)
{
    char *dir = ts_tmpdir("ts-admin-stall");
    char config[4400];
    const char *pol = slow_policies(
        dir,
        "return { sessions = function(doc)\n"
        "  if doc.slow then local n = 0; for i = 1, 1500000000 do n = n + 1 end end\n"
        "  return true\nend }\n",
        config, sizeof config);
    const char *args[] = {"--config", config, "--policies", pol, NULL};
    start(args);
    ts_http_resp_t r = {0};
    cr_assert_eq(get("/metrics", &r), 200, "%s", r.body);
    ts_http_free(&r);
    void *slow = ts_engine_client(&engine);
    const char *create = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"create\",\"params\":"
                         "{\"collection\":\"sessions\",\"doc\":{\"id\":\"s\",\"slow\":true}}}";
    char *early = ts_rpc_raw(slow, create, strlen(create), 300);
    cr_assert_null(early, "the slow write was answered at once: %s", early);
    usleep(300 * 1000); /* past the reuse of the last answer */
    int64_t t0 = ts_mono_us();
    cr_assert_eq(get("/healthz", &r), 503, "%s", r.body);
    cr_assert(strstr(r.body, "did not answer"), "%s", r.body);
    ts_http_free(&r);
    int ok, unavailable;
    scrape_many(100, &ok, &unavailable);
    double took = (double)(ts_mono_us() - t0) / 1e6;
    cr_assert_eq(unavailable, 100, "%d of 100 got 503 (%d 200) while the store was stuck",
                 unavailable, ok);
    cr_assert(took < 8, "the scrapes took %.1f s", took);
    /* the stall ends: the write is answered, the metrics come back */
    zmq_pollitem_t item = {.socket = slow, .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&item, 1, 120000), 1, "the slow write was never answered");
    zmq_close(slow);
    long status = 0;
    for (int i = 0; i < 50 && status != 200; i++) {
        usleep(100 * 1000);
        ts_http_free(&r);
        status = get("/metrics", &r);
    }
    cr_assert_eq(status, 200, "%s", r.body);
    ts_http_free(&r);
    stop();
    ts_rmtree(dir);
    free(dir);
}

Test(admin, health_and_readiness, .timeout = 60)
{
    start(NULL);
    ts_http_resp_t r = {0};
    cr_assert_eq(get("/healthz", &r), 200, "%s", r.body);
    ts_http_free(&r);
    cr_assert_eq(get("/readyz", &r), 200, "%s", r.body);
    cr_assert_str_eq(r.body, "ready\n");
    ts_http_free(&r);
    cr_assert_eq(get("/nope", &r), 404);
    ts_http_free(&r);
    char url[128];
    snprintf(url, sizeof url, "%s/metrics", base);
    cr_assert_eq(ts_http("POST", url, NULL, "x", 5000, &r), 0);
    cr_assert_eq(r.status, 405);
    ts_http_free(&r);

    /* The store loses its data dir: not ready, and says why in one line;
     * still alive. */
    cr_assert_eq(ts_rmtree(engine.data), 0);
    long status = 0;
    for (int i = 0; i < 100 && status != 503; i++) {
        cJSON_Delete(ts_rpc(&engine, "create", "{\"collection\":\"sessions\",\"doc\":{\"n\":1}}"));
        usleep(100 * 1000);
        ts_http_free(&r);
        status = get("/readyz", &r);
    }
    cr_assert_eq(status, 503, "readyz still %ld: %s", status, r.body);
    cr_assert_str_eq(r.body, "storage: data directory removed\n");
    ts_http_free(&r);
    cr_assert_eq(get("/healthz", &r), 200);
    ts_http_free(&r);
    stop();
}

/* Before the engine is ready (here: a policy that takes seconds to load)
 * the endpoint already answers: alive, not ready; then ready. */
Test(admin, readyz_before_and_after_ready, .timeout = 90)
{
    char *dir = ts_tmpdir("ts-admin-slow");
    char path[4400], data[4200], ep[64], ev[64], admin[64], line[1024];
    const char *pol = slow_policies( /* seconds of work before the policies are in */
        dir, "local n = 0; for i = 1, 300000000 do n = n + 1 end\nreturn {}\n", path, sizeof path);
    int port = ts_free_port();
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", ts_free_port());
    snprintf(ev, sizeof ev, "tcp://127.0.0.1:%d", ts_free_port());
    snprintf(admin, sizeof admin, "127.0.0.1:%d", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    const char *args[] = {"--config", path, "--data", data, "--endpoint", ep, "--events", ev,
                          "--admin", admin, "--policies", pol, NULL};
    ts_proc_t p = {0};
    cr_assert_eq(ts_proc_spawn(&p, dir, "therasyncd", args), 0);
    cr_assert_eq(ts_wait_port(port, 10000), 0, "the admin endpoint did not open");
    ts_http_resp_t r = {0};
    cr_assert_eq(get("/readyz", &r), 503, "%s", r.body);
    cr_assert(strncmp(r.body, "starting: ", 10) == 0 && strchr(r.body, '\n') == r.body + r.len - 1,
              "one line: %s", r.body);
    ts_http_free(&r);
    cr_assert_eq(get("/healthz", &r), 200, "%s", r.body);
    ts_http_free(&r);
    cr_assert_eq(get("/metrics", &r), 503, "%s", r.body);
    ts_http_free(&r);
    cr_assert_eq(ts_proc_wait_line(&p, "ready endpoint=", 60000, line, sizeof line), 0);
    cr_assert_eq(get("/readyz", &r), 200, "%s", r.body);
    ts_http_free(&r);
    cr_assert_eq(ts_proc_stop(&p, 10000), 0);
    ts_rmtree(dir);
    free(dir);
}

/* With client keys on, the public endpoint wants a key; the admin endpoint
 * still gets its numbers (over its inproc socket, which needs none). */
Test(admin, works_with_client_keys, .timeout = 60)
{
    char *dir = ts_tmpdir("ts-admin-keys");
    char pub[41], sec[41], cpub[41], csec[41], path[4200], text[1024];
    cr_assert_eq(zmq_curve_keypair(pub, sec), 0);
    cr_assert_eq(zmq_curve_keypair(cpub, csec), 0);
    snprintf(path, sizeof path, "%s/server.key", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "public %s\nsecret %s\n", pub, sec);
    fclose(f);
    snprintf(path, sizeof path, "%s/clients", dir);
    f = fopen(path, "w");
    fprintf(f, "ops read %s\n", cpub);
    fclose(f);
    snprintf(path, sizeof path, "%s/therasync.lua", dir);
    f = fopen(path, "w");
    snprintf(text, sizeof text,
             "security = { curve_secret_file = \"%s/server.key\", clients_file = \"%s/clients\" }\n",
             dir, dir);
    fputs(text, f);
    fclose(f);
    const char *args[] = {"--config", path, NULL};
    start(args);
    /* a client without a key gets nothing */
    char *none = ts_rpc_raw(engine.dealer, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}",
                            43, 500);
    cr_assert_null(none, "a keyless client was answered: %s", none);
    ts_http_resp_t r = {0};
    cr_assert_eq(get("/metrics", &r), 200, "%s", r.body);
    char out[8192];
    cr_assert_eq(ts_promcheck(r.body, families, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(r.body, "therasync_front_call_seconds_count{method=\"status\"}"), "%s", r.body);
    ts_http_free(&r);
    cr_assert_eq(get("/readyz", &r), 200, "%s", r.body);
    ts_http_free(&r);
    stop();
    ts_rmtree(dir);
    free(dir);
}

/* The admin endpoint has no keys: an address beyond loopback is refused,
 * --insecure or not, from a flag or the config file. */
Test(admin, non_loopback_address_refused, .timeout = 30)
{
    const char *const bad[] = {"0.0.0.0:9464", "10.1.2.3:9464", "[::]:9464", "example.org:80",
                               "127.0.0.1:99999", "127.0.0.1:", "127.0.0.1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ts_buf_t err = {0};
        const char *args[] = {"--admin", bad[i], "--insecure", NULL};
        cr_assert_eq(ts_run("therasyncd", args, NULL, 5000, NULL, &err), 2, "%s accepted", bad[i]);
        cr_assert(strstr(err.data, "loopback"), "%s: %s", bad[i], err.data);
        ts_buf_free(&err);
    }
    char *dir = ts_tmpdir("ts-admin-conf");
    char path[4200];
    snprintf(path, sizeof path, "%s/therasync.lua", dir);
    FILE *f = fopen(path, "w");
    fputs("admin = \"192.168.0.1:9464\"\n", f);
    fclose(f);
    ts_buf_t err = {0};
    const char *args[] = {"--config", path, NULL};
    cr_assert_eq(ts_run("therasyncd", args, NULL, 5000, NULL, &err), 2);
    cr_assert(strstr(err.data, "192.168.0.1:9464"), "%s", err.data);
    ts_buf_free(&err);
    /* and a loopback one is a known key of the config file */
    f = fopen(path, "w");
    fputs("admin = \"127.0.0.1:9464\"\n", f);
    fclose(f);
    const char *check[] = {"--config", path, "--check-config", NULL};
    cr_assert_eq(ts_run("therasyncd", check, NULL, 5000, NULL, &err), 0, "%s", err.data);
    ts_buf_free(&err);
    ts_rmtree(dir);
    free(dir);
}

/* status names the build and how long it has run (a restart loop shows as
 * an uptime that keeps going back to 0). */
Test(admin, status_says_version_and_uptime, .timeout = 30)
{
    start(NULL);
    cJSON *r = ts_rpc(&engine, "status", NULL);
    const cJSON *res = ts_rpc_result(r);
    cr_assert_not_null(res);
    const cJSON *version = cJSON_GetObjectItem(res, "version");
    cr_assert(cJSON_IsString(version) && strcmp(version->valuestring, TS_VERSION) == 0);
    const cJSON *up = cJSON_GetObjectItem(res, "uptime_s");
    cr_assert(cJSON_IsNumber(up) && up->valuedouble >= 0 && up->valuedouble < 5);
    cJSON_Delete(r);
    usleep(1200 * 1000);
    r = ts_rpc(&engine, "status", NULL);
    up = cJSON_GetObjectItem(ts_rpc_result(r), "uptime_s");
    cr_assert(cJSON_IsNumber(up) && up->valuedouble >= 1, "uptime_s %g", up ? up->valuedouble : -1);
    cJSON_Delete(r);
    stop();
}
