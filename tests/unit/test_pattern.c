/* test_pattern.c — the budgeted pattern functions (src/policy/pattern.c):
 * identical results to Lua's own string library on many patterns and
 * subjects (a differential test), and hostile patterns stopped by the
 * budget, both on a bare meter and inside the sandbox. */
#include "policy/pattern.h"
#include "policy/sandbox.h"
#include "therasync/util.h"

#include "../support/luadiff.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

/* The budgeted pattern functions in the string table, on the test meter. */
static void install(lua_State *L)
{
    lua_getglobal(L, "string");
    ts_pattern_install(L, -1, &ts_luadiff_meter);
    lua_pop(L, 1);
}

Test(pattern, same_results_as_lua_on_every_case, .timeout = 120)
{
    lua_State *ref = ts_luadiff_state(NULL), *mine = ts_luadiff_state(install);
    ts_luadiff_steps = 0;
    char *want = ts_luadiff_run(ref, "tests/fixtures/patterns/diff.lua");
    char *got = ts_luadiff_run(mine, "tests/fixtures/patterns/diff.lua");
    int lines = ts_luadiff_same(want, got);
    cr_assert_gt(lines, 50000, "the cases ran (%d lines)", lines);
    cr_assert(strstr(want, " => ok ") && strstr(want, " => E "), "both results and errors seen");
    cr_assert_gt(ts_luadiff_steps, 0, "the budgeted matcher charged its work");
    free(want);
    free(got);
    lua_close(ref);
    lua_close(mine);
}

Test(pattern, hostile_patterns_stop_at_the_limit)
{
    const char *chunks[] = {
        "local s = ('a'):rep(3000) return s:find(('.-'):rep(8) .. 'b')",
        "local s = ('a'):rep(3000) return s:match(('.-'):rep(8) .. 'b')",
        "local s = ('a'):rep(3000) for _ in s:gmatch(('.-'):rep(8) .. 'b') do end",
        "local s = ('a'):rep(3000) return s:gsub(('.-'):rep(8) .. 'b', 'x')",
        "local s = ('a'):rep(3000) return s:find(('a*'):rep(8) .. 'b')",
        "local s = ('a'):rep(3000) return s:find(('(a?)'):rep(16) .. '%1%2b')",
        "return (('('):rep(40000)):find('%b()')",
        "return (('a'):rep(200000)):find(('a'):rep(100000) .. 'b', 1, true)",
        "return (('b'):rep(100000)):find('[' .. ('a'):rep(100000) .. ']')",
        "return (('ab'):rep(100000)):find('%f[' .. ('c'):rep(100000) .. ']')",
    };
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
        char err[512];
        int64_t t0 = ts_mono_us();
        ts_luadiff_limited(install, chunks[i], 10000000, err, sizeof err);
        int64_t us = ts_mono_us() - t0;
        cr_assert(strstr(err, "step budget spent"), "case %zu: %s", i, err[0] ? err : "ended");
        cr_assert_lt(us, 3000000, "case %zu took %lld ms", i, (long long)us / 1000);
        cr_assert_lt(ts_luadiff_steps, 10000000 + 100000, "case %zu overran by %ld steps", i,
                     ts_luadiff_steps - 10000000);
    }
}

Test(pattern, ordinary_work_costs_steps_in_proportion)
{
    char err[512];
    /* a linear scan of 100,000 characters: some, but far from many, steps */
    ts_luadiff_limited(install, "local s = ('word '):rep(20000) assert(select(2, s:gsub('%w+', '%0')) == 20000)",
                10000000, err, sizeof err);
    cr_assert_str_eq(err, "");
    cr_assert_gt(ts_luadiff_steps, 100000);
    cr_assert_lt(ts_luadiff_steps, 1000000, "%ld steps", ts_luadiff_steps);
}

/* ---- inside the sandbox ---- */

/* Eagerly counted (100,000) and lazily armed (the defaults: 10 million, and
 * the engine's 1 million): every hostile call ends with the budget error,
 * soon, and the state serves the next call. */
Test(pattern, hostile_patterns_end_with_the_budget_error_in_the_sandbox, .timeout = 120)
{
    static const char *const fns[] = {"find", "match", "gmatch", "gsub", "caught", "balance", "plain", "set"};
    ts_luadiff_hostile("tests/fixtures/patterns", fns, sizeof fns / sizeof *fns, false);
}
