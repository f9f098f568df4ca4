/* test_cli.c — the therasync CLI as a real process against a real
 * therasyncd: exit codes (0 ok, 1 error reply, 2 usage, 3 unreachable),
 * human and --json output, a create/get/update/query/delete round trip.
 *
 * Each test of the "cli" suite starts its own daemon (tests/support/engine)
 * on free loopback ports with a temporary data dir, and stops it by pid. */
#include "../support/engine.h"
#include "../support/run.h"

#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define CLI_TIMEOUT_MS 20000

static ts_engine_t engine;

static void start_daemon(void)
{
    const char *args[] = {"--policies", ts_source_path("tests/fixtures/policies/permissive"), NULL};
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd did not start");
}

static void stop_daemon(void)
{
    if (engine.proc.pid)
        cr_expect_eq(ts_engine_stop(&engine), 0, "therasyncd did not exit cleanly");
    ts_engine_destroy(&engine);
}

/* Runs the CLI against our daemon with up to 6 arguments after the
 * endpoint; returns its exit code, output in out/err (reset first). */
static int cli(ts_buf_t *out, ts_buf_t *err, const char *stdin_text, const char *a1,
               const char *a2, const char *a3, const char *a4, const char *a5, const char *a6)
{
    const char *argv[12] = {"--endpoint", engine.endpoint, "--timeout", "10000"};
    int n = 4;
    const char *args[] = {a1, a2, a3, a4, a5, a6};
    for (int i = 0; i < 6 && args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    ts_buf_reset(out);
    ts_buf_reset(err);
    return ts_run("therasync", argv, stdin_text, CLI_TIMEOUT_MS, out, err);
}

#define CLI(...) cli(&out, &err, __VA_ARGS__)

static cJSON *parse(const ts_buf_t *b)
{
    cJSON *json = b->data ? cJSON_Parse(b->data) : NULL;
    cr_assert_not_null(json, "not JSON: %s", b->data ? b->data : "(empty)");
    return json;
}

static const char *str_at(const cJSON *obj, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    return cJSON_IsString(v) ? v->valuestring : "";
}

TestSuite(cli, .init = start_daemon, .fini = stop_daemon, .timeout = 60);

Test(cli, round_trip_create_get_update_query_delete)
{
    ts_buf_t out = {0}, err = {0};
    const char *doc = "{\"id\":\"s-1\",\"patient_id\":\"pat-0001\",\"therapist_id\":\"thr-001\","
                      "\"scheduled_at\":\"2026-03-01T09:00:00.000Z\",\"duration_min\":50,"
                      "\"status\":\"scheduled\",\"modality\":\"in_person\",\"room\":\"A1\","
                      "\"notes\":\"first visit\"}";
    cr_assert_eq(CLI(NULL, "--json", "create", "sessions", doc, NULL, NULL), 0, "%s", err.data);
    cJSON *r = parse(&out);
    cr_assert_str_eq(str_at(r, "doc", "id"), "s-1");
    cr_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(r, "sync")));
    cJSON_Delete(r);

    cr_assert_eq(CLI(NULL, "--json", "get", "sessions", "s-1", NULL, NULL), 0, "%s", err.data);
    r = parse(&out);
    cr_assert_str_eq(str_at(r, "doc", "therapist_id"), "thr-001");
    cJSON_Delete(r);

    /* Human output: the pretty document. */
    cr_assert_eq(CLI(NULL, "get", "sessions", "s-1", NULL, NULL, NULL), 0);
    cr_assert(strstr(out.data, "\"patient_id\": \"pat-0001\""), "%s", out.data);

    cr_assert_eq(CLI(NULL, "--json", "update", "sessions", "s-1", "{\"status\":\"completed\"}", NULL), 0,
                 "%s", err.data);
    r = parse(&out);
    cr_assert_str_eq(str_at(r, "doc", "status"), "completed");
    cr_assert_str_eq(str_at(r, "doc", "room"), "A1", "a merge patch keeps other fields");
    cJSON_Delete(r);

    cr_assert_eq(CLI(NULL, "--json", "query", "sessions", "{\"where\":{\"status\":\"completed\"}}",
                     NULL, NULL),
                 0, "%s", err.data);
    r = parse(&out);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(r, "items");
    cr_assert_eq(cJSON_GetArraySize(items), 1);
    cr_assert_str_eq(str_at(cJSON_GetArrayItem(items, 0), "id", NULL), "s-1");
    cJSON_Delete(r);

    cr_assert_eq(CLI(NULL, "--json", "status", NULL, NULL, NULL, NULL), 0, "%s", err.data);
    r = parse(&out);
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r, "pending")));
    cr_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(r, "collections")));
    cJSON_Delete(r);

    cr_assert_eq(CLI(NULL, "status", NULL, NULL, NULL, NULL, NULL), 0);
    cr_assert(strstr(out.data, "pending:"), "%s", out.data);

    cr_assert_eq(CLI(NULL, "delete", "sessions", "s-1", NULL, NULL, NULL), 0, "%s", err.data);
    cr_assert_eq(CLI(NULL, "get", "sessions", "s-1", NULL, NULL, NULL), 1);
    cr_assert(strstr(err.data, "-32001") && strstr(err.data, "not_found"), "%s", err.data);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

Test(cli, create_from_stdin_and_file)
{
    ts_buf_t out = {0}, err = {0};
    cr_assert_eq(CLI("{\"id\":\"s-2\",\"status\":\"scheduled\",\"duration_min\":30,"
                     "\"patient_id\":\"pat-0002\",\"therapist_id\":\"thr-002\","
                     "\"scheduled_at\":\"2026-03-02T09:00:00.000Z\",\"modality\":\"group\"}",
                     "--json", "create", "sessions", "-", NULL, NULL),
                 0, "%s", err.data);
    cJSON *r = parse(&out);
    cr_assert_str_eq(str_at(r, "doc", "id"), "s-2");
    cJSON_Delete(r);

    char path[300];
    snprintf(path, sizeof path, "%s/doc.json", engine.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"id\":\"s-3\",\"status\":\"scheduled\",\"duration_min\":45,\"patient_id\":\"pat-0003\","
          "\"therapist_id\":\"thr-003\",\"scheduled_at\":\"2026-03-03T09:00:00.000Z\","
          "\"modality\":\"telehealth\"}",
          f);
    fclose(f);
    char arg[310];
    snprintf(arg, sizeof arg, "@%s", path);
    cr_assert_eq(CLI(NULL, "--json", "create", "sessions", arg, NULL, NULL), 0, "%s", err.data);
    unlink(path);
    r = parse(&out);
    cr_assert_str_eq(str_at(r, "doc", "id"), "s-3");
    cJSON_Delete(r);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

Test(cli, error_replies_exit_1)
{
    ts_buf_t out = {0}, err = {0};
    cr_assert_eq(CLI(NULL, "get", "sessions", "no-such-doc", NULL, NULL, NULL), 1);
    cr_assert(strstr(err.data, "not_found"), "%s", err.data);
    cr_assert_eq(CLI(NULL, "get", "no_such_collection", "x", NULL, NULL, NULL), 1);
    cr_assert(strstr(err.data, "-32008"), "%s", err.data);
    cr_assert_eq(CLI(NULL, "call", "no.such.method", NULL, NULL, NULL, NULL), 1);
    cr_assert(strstr(err.data, "error -32601 method_not_found: "), "%s", err.data);
    cr_assert_eq(CLI(NULL, "call", "get", "[1]", NULL, NULL, NULL), 1);
    cr_assert(strstr(err.data, "error -32602 invalid_params: "), "%s", err.data);
    /* --json also prints the error object on stdout. */
    cr_assert_eq(CLI(NULL, "--json", "get", "sessions", "no-such-doc", NULL, NULL), 1);
    cJSON *e = parse(&out);
    cr_assert_eq(cJSON_GetObjectItemCaseSensitive(e, "code")->valueint, -32001);
    cJSON_Delete(e);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

Test(cli, ping_and_call)
{
    ts_buf_t out = {0}, err = {0};
    cr_assert_eq(CLI(NULL, "ping", NULL, NULL, NULL, NULL, NULL), 0, "%s", err.data);
    cr_assert_str_eq(out.data, "pong\n");
    cr_assert_eq(CLI(NULL, "--json", "call", "ping", NULL, NULL, NULL), 0);
    cr_assert_str_eq(out.data, "\"pong\"\n");
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* top: two refreshes, with the calls made between them by method, and
 * bounded by --count; a bad interval is a usage error. */
Test(cli, top_shows_calls_by_method_and_stops_after_count)
{
    ts_buf_t out = {0}, err = {0};
    void *dealer = ts_engine_client(&engine);
    for (int i = 0; i < 30; i++) { /* get calls while top watches: a rate to show */
        char *r = ts_rpc_raw(dealer, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", 39,
                             5000);
        cr_assert_not_null(r);
        free(r);
    }
    zmq_close(dealer);
    cr_assert_eq(CLI(NULL, "top", "--interval", "200", "--count", "2", NULL), 0, "%s", err.data);
    cr_assert(strstr(out.data, "therasync top") && strstr(out.data, "calls") &&
                  strstr(out.data, "cache") && strstr(out.data, "persist"),
              "%s", out.data);
    const char *second = strstr(strstr(out.data, "therasync top") + 1, "therasync top");
    cr_assert_not_null(second, "two refreshes: %s", out.data);
    cr_assert_null(strstr(second + 1, "therasync top"), "and no more");
    cr_assert_eq(CLI(NULL, "top", "--interval", "10", NULL, NULL, NULL), 2);
    cr_assert(strstr(err.data, "--interval"), "%s", err.data);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

Test(cli, watch_prints_doc_changed)
{
    const char *args[] = {"--events", engine.events, "--json", "watch", "doc.sessions",
                          "--count", "1", "--for", "20", NULL};
    ts_proc_t w;
    cr_assert_eq(ts_proc_spawn(&w, engine.dir, "therasync", args), 0);
    /* A SUB joins late: create until the watcher has seen one event. */
    ts_buf_t out = {0}, err = {0};
    for (int i = 0; i < 100 && ts_proc_alive(&w); i++) {
        char doc[200];
        snprintf(doc, sizeof doc, "{\"id\":\"w-%d\",\"status\":\"scheduled\",\"duration_min\":30,"
                 "\"patient_id\":\"pat-0001\",\"therapist_id\":\"thr-001\","
                 "\"scheduled_at\":\"2026-03-01T09:00:00.000Z\"}", i);
        cr_assert_eq(CLI(NULL, "create", "sessions", doc, NULL, NULL, NULL), 0, "%s", err.data);
        usleep(100000);
    }
    int still_running = ts_proc_alive(&w);
    if (still_running)
        ts_proc_stop(&w, 2000);
    cr_assert(!still_running, "watch did not see an event");
    char line[8192] = "";
    FILE *f = fopen(w.log_path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    cJSON *ev = cJSON_Parse(line);
    cr_assert_not_null(ev, "not JSON: %s", line);
    cr_assert_str_eq(str_at(ev, "method", NULL), "doc.changed", "%s", line);
    cJSON_Delete(ev);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* `live` prints the result, then the result after each change: adds,
 * moves (cJSON's own insert after a detach loses items: the CLI applies
 * ops on its own array) and removes, ending with exactly what a query
 * answers. */
Test(cli, live_prints_each_change_of_a_live_query)
{
    ts_buf_t out = {0}, err = {0};
    const char *doc1 = "{\"id\":\"L1\",\"status\":\"scheduled\",\"duration_min\":30,"
                       "\"patient_id\":\"pat-0001\",\"therapist_id\":\"thr-L\","
                       "\"scheduled_at\":\"2026-03-02T09:00:00.000Z\"}";
    const char *doc2 = "{\"id\":\"L2\",\"status\":\"scheduled\",\"duration_min\":30,"
                       "\"patient_id\":\"pat-0001\",\"therapist_id\":\"thr-L\","
                       "\"scheduled_at\":\"2026-03-02T08:00:00.000Z\"}";
    const char *params = "{\"therapist_id\":\"thr-L\",\"now\":\"2026-01-01T00:00:00.000Z\"}";
    cr_assert_eq(CLI(NULL, "create", "sessions", doc1, NULL, NULL, NULL), 0, "%s", err.data);
    const char *args[] = {"--endpoint", engine.endpoint, "live", "sessions", "upcoming", params,
                          "--count", "3", "--for", "20", NULL};
    ts_proc_t w;
    cr_assert_eq(ts_proc_spawn(&w, engine.dir, "therasync", args), 0);
    char line[4096];
    cr_assert_eq(ts_proc_wait_line(&w, "live query", 10000, line, sizeof line), 0,
                 "live printed no result");
    cr_assert_eq(CLI(NULL, "create", "sessions", doc2, NULL, NULL, NULL), 0, "%s", err.data);
    cr_assert_eq(ts_proc_wait_line(&w, "L2", 10000, line, sizeof line), 0);
    cr_assert_eq(CLI(NULL, "update", "sessions", "L2",
                     "{\"scheduled_at\":\"2026-03-02T12:00:00.000Z\"}", NULL, NULL),
                 0, "%s", err.data);
    cr_assert_eq(CLI(NULL, "update", "sessions", "L1", "{\"status\":\"cancelled\"}", NULL, NULL),
                 0, "%s", err.data);
    int code = ts_proc_wait_exit(&w, 10000);
    if (code < 0)
        ts_proc_stop(&w, 2000);
    cr_assert_eq(code, 0, "live did not end after 3 changes");
    /* the table after the last "version" line is the final result */
    FILE *f = fopen(w.log_path, "r");
    cr_assert_not_null(f);
    ts_buf_t last = {0};
    int versions = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "Z version ")) { /* a change: "HH:MM:SS.mmmZ version N:" */
            versions++;
            ts_buf_reset(&last);
            continue;
        }
        ts_buf_puts(&last, line);
    }
    fclose(f);
    cr_assert_eq(versions, 3, "three changes, three results");
    cr_assert(strstr(last.data, "L2") && strstr(last.data, "2026-03-02T12:00:00.000Z"),
              "final result: %s", last.data);
    cr_assert_null(strstr(last.data, "L1"), "L1 was cancelled: %s", last.data);
    ts_buf_free(&last);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* audit --jsonl exports every entry of the range, one JSON object a line,
 * paging through offset (pages of --limit): as many lines as one big
 * audit call has entries, in the same order; an unknown event is an
 * error, not an empty export. */
Test(cli, audit_exports_json_lines)
{
    ts_buf_t out = {0}, err = {0};
    for (int i = 0; i < 25; i++) {
        char doc[160];
        snprintf(doc, sizeof doc, "{\"id\":\"ax-%d\",\"status\":\"scheduled\",\"therapist_id\":"
                 "\"thr-x\"}", i);
        cr_assert_eq(CLI(NULL, "create", "sessions", doc, NULL, NULL, NULL), 0, "%s", err.data);
    }
    cr_assert_eq(CLI(NULL, "--json", "audit", "--limit", "10000", NULL, NULL), 0, "%s", err.data);
    cJSON *all = parse(&out);
    const cJSON *entries = cJSON_GetObjectItem(all, "entries");
    int total = cJSON_GetArraySize(entries);
    cr_assert_geq(total, 25);
    cr_assert_eq(CLI(NULL, "audit", "--jsonl", "--limit", "7", NULL, NULL), 0, "%s", err.data);
    int lines = 0;
    for (char *line = out.data, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        cJSON *e = cJSON_Parse(line);
        cr_assert_not_null(e, "line %d is not JSON: %s", lines, line);
        char *want = cJSON_PrintUnformatted(cJSON_GetArrayItem(entries, lines));
        char *got = cJSON_PrintUnformatted(e);
        cr_assert_str_eq(got, want, "line %d", lines);
        free(want);
        free(got);
        cJSON_Delete(e);
        lines++;
    }
    cr_assert_eq(lines, total, "the export has every entry once");
    cJSON_Delete(all);
    cr_assert_eq(CLI(NULL, "audit", "--jsonl", "--event", "bogus", NULL, NULL), 1);
    cr_assert(strstr(err.data, "event"), "%s", err.data);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* ---- no daemon needed ---- */

static int run_cli(ts_buf_t *out, ts_buf_t *err, char **args)
{
    ts_buf_reset(out);
    ts_buf_reset(err);
    return ts_run("therasync", (const char *const *)args, NULL, CLI_TIMEOUT_MS, out, err);
}

Test(cli_offline, bad_usage_exits_2)
{
    ts_buf_t out = {0}, err = {0};
    char *cases[][6] = {
        {NULL},
        {"frobnicate", NULL},
        {"get", "sessions", NULL},
        {"create", "sessions", "{not json", NULL},
        {"--timeout", "soon", "ping", NULL},
        {"--no-such-flag", "ping", NULL},
        {"update", "sessions", "x", "{}", "--base-version", "-3"},
        {"policy", "frob", NULL},
        {"status", "--force", NULL}, /* restore's switch */
        {"ping", "--jsonl", NULL},   /* audit's */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *args[8] = {0};
        for (int k = 0; k < 6 && cases[i][k]; k++)
            args[k] = cases[i][k];
        cr_expect_eq(run_cli(&out, &err, args), 2, "case %zu: %s", i, err.data ? err.data : "");
    }
    char *help[] = {"--help", NULL};
    cr_assert_eq(run_cli(&out, &err, help), 0);
    cr_assert(strstr(out.data, "usage: therasync"));
    char *version[] = {"--version", NULL};
    cr_assert_eq(run_cli(&out, &err, version), 0);
    cr_assert(strncmp(out.data, "therasync ", 10) == 0);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

Test(cli_offline, unreachable_exits_3_within_timeout)
{
    ts_buf_t out = {0}, err = {0};
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", ts_free_port());
    char *args[] = {"--endpoint", endpoint, "--timeout", "300", "status", NULL};
    int64_t t0 = ts_mono_us();
    cr_assert_eq(run_cli(&out, &err, args), 3, "%s", err.data ? err.data : "");
    int64_t ms = (ts_mono_us() - t0) / 1000;
    cr_assert(ms >= 250 && ms < 3000, "took %lld ms", (long long)ms);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

Test(cli_offline, policy_tools_exit_codes)
{
    ts_buf_t out = {0}, err = {0};
    char shipped[4200], broken[4200];
    snprintf(shipped, sizeof shipped, "%s", ts_source_path("policies"));
    snprintf(broken, sizeof broken, "%s", ts_source_path("tests/fixtures/policies/syntax_error"));
    char *test_ok[] = {"policy", "test", shipped, NULL};
    cr_assert_eq(run_cli(&out, &err, test_ok), 0, "%s%s", out.data ? out.data : "",
                 err.data ? err.data : "");
    cr_assert(strstr(out.data, " 0 failed"), "%s", out.data);
    char *check_ok[] = {"policy", "check", shipped, NULL};
    cr_assert_eq(run_cli(&out, &err, check_ok), 0, "%s", out.data ? out.data : "");
    char *check_bad[] = {"policy", "check", broken, NULL};
    cr_assert_eq(run_cli(&out, &err, check_bad), 1);
    cr_assert(strstr(out.data, "validate.lua:"), "file:line expected: %s", out.data);
    char *test_bad[] = {"policy", "test", broken, NULL};
    cr_assert_eq(run_cli(&out, &err, test_bad), 1);
    char *missing[] = {"policy", "check", "/nonexistent", NULL};
    cr_assert_eq(run_cli(&out, &err, missing), 1);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* `policy test` and `policy check` on policies that run a backtracking
 * pattern (hours in Lua's own matcher) in a rule, in a test, and while
 * loading: each finishes within seconds and reports the budget error. */
Test(cli_offline, policy_tools_finish_on_a_hostile_pattern)
{
    ts_buf_t out = {0}, err = {0};
    char bomb[4200], load[4200];
    snprintf(bomb, sizeof bomb, "%s", ts_source_path("tests/fixtures/policies/pattern_bomb"));
    snprintf(load, sizeof load, "%s", ts_source_path("tests/fixtures/policies/pattern_bomb_load"));
    int64_t t0 = ts_mono_us();
    char *test_bomb[] = {"policy", "test", bomb, NULL};
    cr_assert_eq(run_cli(&out, &err, test_bomb), 1, "%s%s", out.data ? out.data : "",
                 err.data ? err.data : "");
    cr_assert(strstr(out.data, "1 passed, 2 failed"), "%s", out.data);
    cr_assert(strstr(out.data, "instruction budget exceeded"), "%s", out.data);
    char *check_load[] = {"policy", "check", load, NULL};
    cr_assert_eq(run_cli(&out, &err, check_load), 1);
    cr_assert(strstr(out.data, "validate.lua") && strstr(out.data, "instruction budget exceeded"),
              "%s", out.data);
    char *test_load[] = {"policy", "test", load, NULL};
    cr_assert_eq(run_cli(&out, &err, test_load), 1);
    cr_assert(strstr(out.data, "instruction budget exceeded") ||
                  (err.data && strstr(err.data, "instruction budget exceeded")),
              "%s%s", out.data ? out.data : "", err.data ? err.data : "");
    int64_t ms = (ts_mono_us() - t0) / 1000;
    cr_assert_lt(ms, 10000, "took %lld ms", (long long)ms);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* ---- policy test answers what the daemon answers ---- */

/* Sorts "b,a" into "a,b" (ids of one character; for membership). */
static void sort_ids(char *ids)
{
    size_t n = strlen(ids);
    for (size_t i = 0; i < n; i += 2)
        for (size_t k = i + 2; k < n; k += 2)
            if (ids[k] < ids[i]) {
                char c = ids[i];
                ids[i] = ids[k];
                ids[k] = c;
            }
}

/* What `policy test` says a selector gave in the failing case named case_name:
 * the ids inside "got {...}", or "" when that case did not fail; sorted
 * with sort. */
static void tool_got(const char *report, const char *case_name, bool sort, char *out, size_t len)
{
    out[0] = '\0';
    const char *line = strstr(report, case_name);
    const char *end = line ? strchr(line, '\n') : NULL;
    const char *got = line ? strstr(line, "got {") : NULL;
    if (!got || (end && got > end))
        return;
    got += 5;
    const char *close = strchr(got, '}');
    snprintf(out, len, "%.*s", close ? (int)(close - got) : 0, got);
    if (sort)
        sort_ids(out);
}

/* The ids the daemon's query with params p answers, joined by ","; sorted
 * with sort. */
static void query_ids(const char *p, bool sort, char *out, size_t len)
{
    cJSON *r = ts_rpc(&engine, "query", p);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(ts_rpc_result(r), "items");
    cr_assert(cJSON_IsArray(items), "query %s: %s", p, r ? cJSON_PrintUnformatted(r) : "no answer");
    out[0] = '\0';
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", used ? "," : "", str_at(it, "id", NULL));
    }
    cJSON_Delete(r);
    if (sort)
        sort_ids(out);
}

/* The same for a named selector of sessions. */
static void daemon_ids(const char *selector, const char *params, bool sort, char *out,
                       size_t len)
{
    char p[512];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"selector\":\"%s\",\"params\":%s}",
             selector, params);
    query_ids(p, sort, out, len);
}

/* The same for the built-in selector (a JSON object). */
static void builtin_ids(const char *selector, char *out, size_t len)
{
    char p[512];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"selector\":%s}", selector);
    query_ids(p, false, out, len);
}

TestSuite(cli_policy, .fini = stop_daemon, .timeout = 60);

/* tests/fixtures/policies/mixed_types orders and buckets fields that are text
 * in one document and a number in another. `policy test` used to answer its
 * selectors with its own comparisons ([a, b] for by_k, only a for by_group
 * {g = "1"}) while the daemon answered [b, a] and both: the tool's tests
 * passed on answers production never gives. Now the cases expecting the
 * old answers fail, the ones expecting the daemon's pass, and what the tool
 * reports it got is what a daemon with the same policies answers. */
Test(cli_policy, policy_test_answers_what_the_daemon_answers)
{
    const char *fixture = ts_source_path("tests/fixtures/policies/mixed_types");
    ts_buf_t out = {0}, err = {0};
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", fixture);
    char *test_args[] = {"policy", "test", dir, NULL};
    cr_assert_eq(run_cli(&out, &err, test_args), 1, "%s%s", out.data ? out.data : "",
                 err.data ? err.data : "");
    const char *report = out.data;
    cr_assert(strstr(report, "FAIL mixed_test.lua: wrong: by_k keeps text and numbers unordered"),
              "%s", report);
    cr_assert(strstr(report, "FAIL mixed_test.lua: wrong: by_group tells \"1\" from 1"), "%s",
              report);
    cr_assert(strstr(report, "ok   mixed_test.lua: by_k puts numbers before text\n"), "%s", report);
    cr_assert(strstr(report, "ok   mixed_test.lua: by_group holds \"1\" and 1 in one bucket\n"),
              "%s", report);
    cr_assert(strstr(report, "2 passed, 3 failed\n"), "%s", report);
    char tool_by_k[64], tool_by_group[64];
    tool_got(report, "wrong: by_k", false, tool_by_k, sizeof tool_by_k);
    tool_got(report, "wrong: by_group", true, tool_by_group, sizeof tool_by_group);
    cr_assert_str_eq(tool_by_k, "b,a", "%s", report);
    cr_assert_str_eq(tool_by_group, "a,b", "%s", report);

    /* The same policies and documents (mixed_test.lua's) in a real daemon. */
    const char *args[] = {"--policies", fixture, NULL};
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd did not start");
    const char *docs[] = {"{\"id\":\"a\",\"k\":\"x\",\"g\":\"1\"}", "{\"id\":\"b\",\"k\":1,\"g\":1}"};
    for (size_t i = 0; i < 2; i++) {
        char p[200];
        snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"doc\":%s}", docs[i]);
        cJSON *r = ts_rpc(&engine, "create", p);
        cr_assert_not_null(ts_rpc_result(r), "create: %s", r ? cJSON_PrintUnformatted(r) : "");
        cJSON_Delete(r);
    }
    char ids[64];
    daemon_ids("by_k", "{}", false, ids, sizeof ids);
    cr_assert_str_eq(ids, tool_by_k, "by_k: daemon %s, policy test %s", ids, tool_by_k);
    daemon_ids("by_group", "{\"g\":\"1\"}", true, ids, sizeof ids);
    cr_assert_str_eq(ids, tool_by_group, "by_group: daemon %s, policy test %s", ids, tool_by_group);
    daemon_ids("by_group", "{\"g\":1}", true, ids, sizeof ids);
    cr_assert_str_eq(ids, tool_by_group, "by_group {g = 1}: daemon %s", ids);
    /* The built-in selector orders with the same comparator. */
    builtin_ids("{\"where\":{},\"order_by\":[\"k\",\"asc\"]}", ids, sizeof ids);
    cr_assert_str_eq(ids, "b,a", "built-in order_by k asc");
    builtin_ids("{\"where\":{},\"order_by\":[\"k\",\"desc\"]}", ids, sizeof ids);
    cr_assert_str_eq(ids, "a,b", "built-in order_by k desc");
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* ---- policy reload: a refused reload is a failure ---- */

/* policy.reload answers {loaded: false, error} when the new policies do not
 * load (the old stay in force). `therasync policy reload` used to print that
 * and exit 0, so systemd's ExecReload= reported a broken reload as done. */
Test(cli_policy, refused_reload_exits_1)
{
    char *dir = ts_tmpdir("ts-cli-reload");
    cr_assert_not_null(dir);
    char path[4300];
    FILE *f;
    const char *files[] = {"conflict.lua", "selectors.lua", "validate.lua"};
    for (size_t i = 0; i < 3; i++) {
        char from[4300];
        snprintf(from, sizeof from, "%s/%s",
                 ts_source_path("tests/fixtures/policies/permissive"), files[i]);
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        FILE *in = fopen(from, "r");
        cr_assert_not_null(in, "%s", from);
        cr_assert_not_null(f = fopen(path, "w"), "%s", path);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0)
            cr_assert_eq(fwrite(buf, 1, n, f), n);
        fclose(in);
        fclose(f);
    }
    const char *args[] = {"--policies", dir, NULL};
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd did not start");
    ts_buf_t out = {0}, err = {0};
    cr_expect_eq(CLI(NULL, "policy", "reload", NULL, NULL, NULL, NULL), 0, "good reload: %s%s",
                 out.data ? out.data : "", err.data ? err.data : "");

    /* path is validate.lua, the last one copied */
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("this is not lua (\n", f);
    fclose(f);
    int rc = CLI(NULL, "policy", "reload", NULL, NULL, NULL, NULL);
    cr_expect_eq(rc, 1, "refused reload exited %d: %s%s", rc, out.data ? out.data : "",
                 err.data ? err.data : "");
    cr_expect(err.data && strstr(err.data, "refused"), "%s", err.data ? err.data : "(no stderr)");
    rc = CLI(NULL, "--json", "policy", "reload", NULL, NULL, NULL);
    cr_expect_eq(rc, 1, "refused reload with --json exited %d", rc);
    cr_expect(out.data && strstr(out.data, "\"loaded\":false"), "%s", out.data ? out.data : "");
    ts_buf_free(&out);
    ts_buf_free(&err);
    ts_rmtree(dir);
    free(dir);
}
