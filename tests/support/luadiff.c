/* luadiff.c — see luadiff.h. */
#include "luadiff.h"
#include "engine.h"
#include "policy/sandbox.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long ts_luadiff_steps, ts_luadiff_limit = 1L << 40;

static void count_steps(lua_State *L, long steps)
{
    ts_luadiff_steps += steps;
    if (ts_luadiff_steps > ts_luadiff_limit)
        luaL_error(L, "step budget spent");
}

const ts_pattern_meter_t ts_luadiff_meter = {count_steps};

lua_State *ts_luadiff_state(void (*install)(lua_State *L))
{
    lua_State *L = luaL_newstate();
    cr_assert_not_null(L);
    luaL_openlibs(L);
    if (install)
        install(L);
    return L;
}

void ts_luadiff_limited(void (*install)(lua_State *L), const char *chunk, long limit, char *err,
                        size_t errlen)
{
    lua_State *L = ts_luadiff_state(install);
    ts_luadiff_steps = 0;
    ts_luadiff_limit = limit;
    int rc = luaL_dostring(L, chunk);
    snprintf(err, errlen, "%s", rc == LUA_OK ? "" : lua_tostring(L, -1));
    lua_close(L);
    ts_luadiff_limit = 1L << 40;
}

char *ts_luadiff_run(lua_State *L, const char *rel)
{
    const char *path = ts_source_path(rel);
    cr_assert_eq(luaL_dofile(L, path), LUA_OK, "%s", lua_tostring(L, -1));
    size_t len;
    const char *out = lua_tolstring(L, -1, &len);
    cr_assert_not_null(out, "%s returns its lines", rel);
    char *copy = malloc(len + 1);
    cr_assert_not_null(copy);
    for (size_t i = 0; i < len; i++)
        copy[i] = out[i] ? out[i] : '\1';
    copy[len] = '\0';
    return copy;
}

int ts_luadiff_same(const char *want, const char *got)
{
    const char *a = want, *b = got;
    int line = 1, lines = 0;
    while (*a && *a == *b) {
        if (*a == '\n')
            line++;
        a++, b++;
    }
    for (const char *c = want; *c; c++)
        lines += *c == '\n';
    if (*a || *b) {
        while (a > want && a[-1] != '\n')
            a--;
        while (b > got && b[-1] != '\n')
            b--;
        cr_assert_fail("line %d differs:\n lua: %.400s\n ours: %.400s", line, a, b);
    }
    return lines;
}

typedef struct {
    const char *fn;
} call_t;

static int s_call(lua_State *L)
{
    call_t *c = lua_touserdata(L, 1);
    ts_sandbox_run_file(L, "calls.lua");
    lua_getfield(L, -1, c->fn);
    lua_call(L, 0, 0);
    return 0;
}

ts_sandbox_t *ts_luadiff_sandbox(const char *rel, long budget)
{
    char err[512];
    ts_sandbox_t *sb = ts_sandbox_new(ts_source_path(rel), 64u << 20, budget, err, sizeof err);
    cr_assert_not_null(sb, "%s", err);
    return sb;
}

int ts_luadiff_call(ts_sandbox_t *sb, const char *fn, char *err, size_t errlen)
{
    call_t c = {fn};
    err[0] = '\0';
    return ts_sandbox_pcall(sb, s_call, &c, err, errlen);
}

void ts_luadiff_hostile(const char *rel, const char *const *fns, size_t nfns, bool quick_first)
{
    const long budgets[] = {100000, 1000000, 0};
    for (size_t b = 0; b < sizeof budgets / sizeof *budgets; b++) {
        ts_sandbox_t *sb = ts_luadiff_sandbox(rel, budgets[b]);
        char err[512];
        if (quick_first)
            cr_assert_eq(ts_luadiff_call(sb, "quick", err, sizeof err), 0, "%s", err);
        for (size_t i = 0; i < nfns; i++) {
            int64_t t0 = ts_mono_us();
            cr_assert_eq(ts_luadiff_call(sb, fns[i], err, sizeof err), -1,
                         "%s ended (budget %ld)", fns[i], budgets[b]);
            int64_t us = ts_mono_us() - t0;
            cr_assert(strstr(err, "instruction budget exceeded"), "%s: %s", fns[i], err);
            cr_assert_lt(us, 5000000, "%s took %lld ms (budget %ld)", fns[i],
                         (long long)us / 1000, budgets[b]);
            cr_assert_eq(ts_luadiff_call(sb, "quick", err, sizeof err), 0, "after %s: %s", fns[i],
                         err);
        }
        if (budgets[b] != 100000) /* a few hundred thousand steps: over the smallest */
            cr_assert_eq(ts_luadiff_call(sb, "ordinary", err, sizeof err), 0, "budget %ld: %s",
                         budgets[b], err);
        ts_sandbox_destroy(&sb);
    }
}
