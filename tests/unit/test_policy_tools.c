/* test_policy_tools.c — `policy test` and `policy check` on the shipped
 * policies and on fixtures with failing tests and broken files. */
#include "therasync/policy_tools.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char s_path[1024];

static const char *dir(const char *rel)
{
    const char *src = getenv("TS_SOURCE_DIR");
    snprintf(s_path, sizeof s_path, "%s/%s", src ? src : ".", rel);
    return s_path;
}

/* Runs fn(dir, out) into memory; returns its result and the text in *text. */
static int capture(int (*fn)(const char *, FILE *), const char *d, char **text)
{
    size_t len;
    FILE *out = open_memstream(text, &len);
    cr_assert_not_null(out);
    int rc = fn(d, out);
    fclose(out);
    return rc;
}

Test(policy_tools, shipped_policy_tests_all_pass)
{
    char *text = NULL;
    int failed = capture(ts_policy_test_dir, dir("policies"), &text);
    cr_assert_eq(failed, 0, "shipped policy tests failed:\n%s", text);
    cr_assert(strstr(text, "ok   validate_test.lua: a complete session is valid"), "%s", text);
    cr_assert(strstr(text, " passed, 0 failed\n"), "%s", text);
    free(text);
}

Test(policy_tools, failing_cases_are_reported_one_by_one)
{
    char *text = NULL;
    int failed = capture(ts_policy_test_dir, dir("tests/fixtures/policies/failing_tests"), &text);
    cr_assert_eq(failed, 4, "%s", text);
    cr_assert(strstr(text, "ok   a_test.lua: passes\n"), "%s", text);
    cr_assert(strstr(text, "ok   a_test.lua: passes too\n"), "%s", text);
    cr_assert(strstr(text, "FAIL a_test.lua: fails: wrong expectation: a_test.lua:2: expected "
                           "valid, got: text: text is required"),
              "%s", text);
    cr_assert(strstr(text, "FAIL a_test.lua: fails: plain assert: a_test.lua:3: one is not two"),
              "%s", text);
    cr_assert(strstr(text, "FAIL a_test.lua: fails: loops:"), "%s", text);
    cr_assert(strstr(text, "budget"), "%s", text);
    cr_assert(strstr(text, "FAIL b_test.lua: b_test.lua:2:"), "%s", text);
    cr_assert(strstr(text, "2 passed, 4 failed\n"), "%s", text);
    free(text);
}

Test(policy_tools, policies_that_do_not_load_fail_the_run)
{
    char *text = NULL;
    int failed = capture(ts_policy_test_dir, dir("tests/fixtures/policies/syntax_error"), &text);
    cr_assert_eq(failed, 1);
    cr_assert(strstr(text, "validate.lua:6:"), "%s", text);
    free(text);
}

Test(policy_tools, check_reports_file_and_line)
{
    char *text = NULL;
    int problems = capture(ts_policy_check_dir, dir("tests/fixtures/policies/syntax_error"), &text);
    cr_assert_geq(problems, 1, "%s", text);
    cr_assert(strstr(text, "validate.lua:6:"), "%s", text);
    free(text);
    problems = capture(ts_policy_check_dir, dir("tests/fixtures/policies/failing_tests"), &text);
    cr_assert_geq(problems, 1, "%s", text);
    cr_assert(strstr(text, "b_test.lua:2:"), "%s", text);
    free(text);
}

Test(policy_tools, check_of_the_shipped_policies_is_clean)
{
    char *text = NULL;
    int problems = capture(ts_policy_check_dir, dir("policies"), &text);
    cr_assert_eq(problems, 0, "%s", text);
    cr_assert(strstr(text, "\"upcoming\""), "%s", text);
    free(text);
}

/* expect_select runs the engine's own query code: "1" and 1 share an index
 * bucket, and numbers order before text. The tool used to compare JSON
 * values itself, passing the two "wrong" cases and failing the right ones. */
Test(policy_tools, expect_select_answers_as_the_engine)
{
    char *text = NULL;
    int failed = capture(ts_policy_test_dir, dir("tests/fixtures/policies/mixed_types"), &text);
    cr_assert_eq(failed, 3, "%s", text);
    cr_assert(strstr(text, "FAIL mixed_test.lua: wrong: by_k keeps text and numbers unordered: "
                           "mixed_test.lua:8: selector by_k: expected {a,b}, got {b,a}\n"),
              "%s", text);
    cr_assert(strstr(text, "FAIL mixed_test.lua: wrong: by_group tells \"1\" from 1: "
                           "mixed_test.lua:12: selector by_group: expected {a}, got {a,b}\n"),
              "%s", text);
    cr_assert(strstr(text, "ok   mixed_test.lua: by_k puts numbers before text\n"), "%s", text);
    cr_assert(strstr(text, "ok   mixed_test.lua: by_group holds \"1\" and 1 in one bucket\n"), "%s",
              text);
    cr_assert(strstr(text, "FAIL mixed_test.lua: bad input: a document without an id: "
                           "mixed_test.lua:24: docs[1] is not a document with a text id\n"),
              "%s", text);
    cr_assert(strstr(text, "2 passed, 3 failed\n"), "%s", text);
    free(text);
}
