/* test_metered.c — string.rep and the table functions with metered loops
 * (src/policy/metered.c): identical results to Lua's own library, metamethod
 * calls in the same order (a differential test), and calls that loop over a
 * huge caller-chosen count stopped by the budget, both on a bare meter and
 * inside the sandbox. */
#include "policy/metered.h"
#include "policy/sandbox.h"
#include "therasync/util.h"

#include "../support/luadiff.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

/* The metered functions in the string and table tables, on the test meter. */
static void install(lua_State *L)
{
    lua_getglobal(L, "string");
    lua_getglobal(L, "table");
    ts_metered_install(L, -2, -1, &ts_luadiff_meter);
    lua_pop(L, 2);
}

Test(metered, same_results_as_lua_on_every_case, .timeout = 120)
{
    lua_State *ref = ts_luadiff_state(NULL), *mine = ts_luadiff_state(install);
    ts_luadiff_steps = 0;
    char *want = ts_luadiff_run(ref, "tests/fixtures/metered/diff.lua");
    char *got = ts_luadiff_run(mine, "tests/fixtures/metered/diff.lua");
    int lines = ts_luadiff_same(want, got);
    cr_assert_gt(lines, 1500, "the cases ran (%d lines)", lines);
    cr_assert(strstr(want, " => ok ") && strstr(want, " => E "), "both results and errors seen");
    cr_assert(strstr(want, "log:#,r"), "metamethod calls were logged");
    cr_assert_gt(ts_luadiff_steps, 100000, "the metered functions charged their work");
    free(want);
    free(got);
    lua_close(ref);
    lua_close(mine);
}

Test(metered, hostile_counts_stop_at_the_limit, .timeout = 120)
{
    const char *chunks[] = {
        "return string.rep('', 2^40)",
        "return (''):rep(2^40, '')",
        "for _ = 1, 1e6 do local _ = ('x'):rep(1e6, ',') end",
        "return table.move({}, 1, 2^40, 2)",
        "table.insert(setmetatable({}, {__len = function() return 2^40 end}), 1, 'x')",
        "table.remove(setmetatable({}, {__len = function() return 2^40 end}), 1)",
        "local t = {} for i = 1, 1e5 do t[i] = 'x' end for _ = 1, 1e6 do table.concat(t) end",
        "local t = setmetatable({}, {__index = function() return 'x' end})\n"
        "return #table.concat(t, '', 1, 2^40)",
        "for _ = 1, 1e6 do table.unpack({}, 1, 9e5) end",
        "local t = {} for i = 1, 2e4 do t[i] = (i * 7919) % 2e4 end\n"
        "for _ = 1, 1e4 do table.sort(t) end",
        "local big, t = ('x'):rep(1e6), {} for i = 1, 1000 do t[i] = big end\n"
        "for _ = 1, 1e3 do table.sort(t) end",
    };
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
        char err[512];
        int64_t t0 = ts_mono_us();
        ts_luadiff_limited(install, chunks[i], 10000000, err, sizeof err);
        int64_t us = ts_mono_us() - t0;
        cr_assert(strstr(err, "step budget spent"), "case %zu: %s", i, err[0] ? err : "ended");
        /* ~1 s when a metamethod makes up every element (a Lua call each) */
        cr_assert_lt(us, 5000000, "case %zu took %lld ms", i, (long long)us / 1000);
        /* a charge is at most 4096 steps plus one element's or round's */
        cr_assert_lt(ts_luadiff_steps, 10000000 + 100000, "case %zu overran by %ld steps", i,
                     ts_luadiff_steps - 10000000);
    }
}

Test(metered, ordinary_work_costs_steps_in_proportion)
{
    char err[512];
    /* 10,000 elements sorted, joined, moved; a 20,000-byte string */
    ts_luadiff_limited(install, "local t = {} for i = 1, 1e4 do t[i] = (i * 7919) % 1e4 end\n"
                "table.sort(t) local s = table.concat(t, ',')\n"
                "table.move(t, 1, #t, 1, {}) return ('ab'):rep(1e4)",
                10000000, err, sizeof err);
    cr_assert_str_eq(err, "");
    cr_assert_gt(ts_luadiff_steps, 100000);
    cr_assert_lt(ts_luadiff_steps, 1000000, "%ld steps", ts_luadiff_steps);
}

/* ---- inside the sandbox ---- */

/* Eagerly counted (100,000) and lazily armed (the defaults: 10 million, and
 * the engine's 1 million): every hostile call ends with the budget error,
 * soon, pcall cannot keep it, and the state serves the next call. */
Test(metered, hostile_counts_end_with_the_budget_error_in_the_sandbox, .timeout = 240)
{
    static const char *const fns[] = {"rep_empty", "rep_method",    "rep_sep", "move",
                         "insert",    "remove",        "concat",  "concat_count",
                         "unpack",    "unpack_global", "sort",    "sort_long_strings",
                         "caught"};
    ts_luadiff_hostile("tests/fixtures/metered", fns, sizeof fns / sizeof *fns, true);
}

/* A result past the memory cap is refused on memory, before any loop. */
Test(metered, a_result_past_the_memory_cap_fails_on_memory)
{
    ts_sandbox_t *sb = ts_luadiff_sandbox("tests/fixtures/metered", 0);
    char err[512];
    int64_t t0 = ts_mono_us();
    cr_assert_eq(ts_luadiff_call(sb, "rep_memory", err, sizeof err), -1);
    cr_assert(strstr(err, "memory cap exceeded"), "%s", err);
    cr_assert_lt(ts_mono_us() - t0, 1000000);
    cr_assert_eq(ts_luadiff_call(sb, "quick", err, sizeof err), 0, "%s", err);
    ts_sandbox_destroy(&sb);
}
