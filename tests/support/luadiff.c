/* luadiff.c — see luadiff.h. */
#include "luadiff.h"
#include "engine.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <stdlib.h>

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
