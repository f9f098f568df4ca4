/* test_bench_ondemand.c — therasync-bench --workload ondemand as a real
 * process (it starts its own clinic-api and therasyncd): a small run prints
 * its JSON line with the cold phase's one HTTP request, identical answers,
 * every stale-phase answer stale and one refresh per warm id. Not a timing:
 * it checks that the measuring tool works. */
#include "../support/run.h"

#include <cJSON.h>
#include <criterion/criterion.h>
#include <string.h>

static double num(const cJSON *line, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(line, key);
    cr_assert(cJSON_IsNumber(v), "no number %s", key);
    return v->valuedouble;
}

Test(bench_ondemand, cold_reads_make_one_request, .timeout = 90)
{
    const char *args[] = {"--workload", "ondemand", "--n", "2000", "--docs", "50", NULL};
    ts_buf_t out = {0}, err = {0};
    int rc = ts_run("therasync-bench", args, NULL, 60000, &out, &err);
    cr_assert_eq(rc, 0, "therasync-bench exited %d: %s", rc, err.data ? err.data : "");
    cr_assert_not_null(out.data, "no output");
    cJSON *line = cJSON_Parse(out.data);
    cr_assert_not_null(line, "not a JSON line: %s", out.data);
    cr_assert_str_eq(cJSON_GetObjectItem(line, "workload")->valuestring, "ondemand");
    cr_assert_null(cJSON_GetObjectItem(line, "failed"), "%s", out.data);
    cr_assert_eq(num(line, "http_requests"), 1, "100 identical cold gets: one HTTP request");
    cr_assert_eq(num(line, "cold_gets"), 100);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(line, "cold_identical")));
    cr_assert_eq(num(line, "coalesced_fetches"), 99);
    cr_assert_eq(num(line, "stale_answers"), 2000);
    cr_assert_eq(num(line, "refreshes"), 49, "one background refresh per warm id");
    cr_assert_gt(num(line, "fresh_p50_us"), 0);
    cr_assert_gt(num(line, "stale_p50_us"), 0);
    cr_assert_gt(num(line, "stale_vs_fresh_p50"), 0);
    cJSON_Delete(line);
    ts_buf_free(&out);
    ts_buf_free(&err);
}
