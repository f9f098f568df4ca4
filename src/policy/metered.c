/* metered.c — string.rep and table.insert, remove, move, concat, unpack and
 * sort with their loops charged to a meter (see metered.h).
 *
 * Each function is Lua 5.4.4's, same checks and messages in the same order;
 * the differential test in tests/unit/test_metered.c holds it to that. The
 * work is charged as it is done, every TS_CHARGE_EVERY steps, not up front: a
 * lazily armed budget ignores charges until the watchdog arms the hook, and
 * that happens while a long loop runs, so the charges after it stop the loop.
 * Lengths are read once (a __len that answers differently each time cannot
 * make the loop longer than what was charged). */
#include "metered.h"

#include <lauxlib.h>
#include <limits.h>
#include <string.h>
#include <time.h>

/* The meter is each function's upvalue 1. */
static ts_steps_t m_open(lua_State *L)
{
    ts_steps_t m = {L, lua_touserdata(L, lua_upvalueindex(1)), 0};
    return m;
}

/* ---- string.rep ---- */

static int s_rep(lua_State *L)
{
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || l + lsep > (size_t)INT_MAX / (lua_Unsigned)n)
        return luaL_error(L, "resulting string too large");
    /* The buffer first: a result past the memory cap fails on memory, at once. */
    size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, total);
    ts_steps_t m = m_open(L);
    size_t piece = l + lsep;
    /* Charged by blocks of rounds, an empty round too: ("", 2^40) is 2^40
     * rounds. A round and a byte cost 1/16 step each: enough to stop 2^40
     * rounds soon, little enough that a rule piling up text in a loop runs
     * into the memory cap (the clearer error) before the budget. */
    for (lua_Integer left = n; left > 0;) {
        lua_Integer k = left < TS_CHARGE_EVERY ? left : TS_CHARGE_EVERY;
        ts_steps_add(&m, (long)(((size_t)k * (1 + piece)) >> 4));
        left -= k;
        if (piece == 0)
            continue; /* nothing to copy */
        for (; k > 0; k--) {
            memcpy(p, s, l);
            p += l;
            if (lsep > 0 && (k > 1 || left > 0)) { /* not after the last round */
                memcpy(p, sep, lsep);
                p += lsep;
            }
        }
    }
    ts_steps_flush(&m);
    luaL_pushresultsize(&b, total);
    return 1;
}

/* ---- table ---- */

#define TAB_R 1 /* read */
#define TAB_W 2 /* write */
#define TAB_L 4 /* length */

static int s_checkfield(lua_State *L, const char *key, int n)
{
    lua_pushstring(L, key);
    return lua_rawget(L, -n) != LUA_TNIL;
}

/* A table, or something whose metatable has the metamethods what needs. */
static void s_checktab(lua_State *L, int arg, int what)
{
    if (lua_type(L, arg) != LUA_TTABLE) {
        int n = 1;
        if (lua_getmetatable(L, arg) && (!(what & TAB_R) || s_checkfield(L, "__index", ++n)) &&
            (!(what & TAB_W) || s_checkfield(L, "__newindex", ++n)) &&
            (!(what & TAB_L) || s_checkfield(L, "__len", ++n)))
            lua_pop(L, n);
        else
            luaL_checktype(L, arg, LUA_TTABLE); /* raises */
    }
}

static lua_Integer s_getn(lua_State *L, int arg, int what)
{
    s_checktab(L, arg, what | TAB_L);
    return luaL_len(L, arg);
}

static int s_insert(lua_State *L)
{
    ts_steps_t m = m_open(L);
    lua_Integer pos;
    lua_Integer e = luaL_intop(+, s_getn(L, 1, TAB_R | TAB_W), 1); /* first empty */
    switch (lua_gettop(L)) {
    case 2:
        pos = e;
        break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
        for (lua_Integer i = e; i > pos; i--) { /* t[i] = t[i - 1] */
            ts_steps_add(&m, 1);
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i);
        }
        ts_steps_flush(&m);
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    return 0;
}

static int s_remove(lua_State *L)
{
    ts_steps_t m = m_open(L);
    lua_Integer size = s_getn(L, 1, TAB_R | TAB_W);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size) /* Lua 5.4.4 names argument 1 here */
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1, "position out of bounds");
    lua_geti(L, 1, pos);        /* the result */
    for (; pos < size; pos++) { /* t[pos] = t[pos + 1] */
        ts_steps_add(&m, 1);
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos);
    }
    ts_steps_flush(&m);
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

static int s_move(lua_State *L)
{
    ts_steps_t m = m_open(L);
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1; /* destination table */
    s_checktab(L, 1, TAB_R);
    s_checktab(L, tt, TAB_W);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
            for (lua_Integer i = 0; i < n; i++) {
                ts_steps_add(&m, 1);
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        } else { /* overlapping, moving up: from the end */
            for (lua_Integer i = n - 1; i >= 0; i--) {
                ts_steps_add(&m, 1);
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        }
        ts_steps_flush(&m);
    }
    lua_pushvalue(L, tt);
    return 1;
}

static void s_addfield(ts_steps_t *m, luaL_Buffer *b, lua_Integer i)
{
    lua_State *L = m->L;
    lua_geti(L, 1, i);
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid value (%s) at index %I in table for 'concat'", luaL_typename(L, -1),
                   (lua_Integer)i);
    size_t len;
    lua_tolstring(L, -1, &len);
    ts_steps_add(m, 1 + (long)(len >> 4));
    luaL_addvalue(b);
}

static int s_concat(lua_State *L)
{
    ts_steps_t m = m_open(L);
    luaL_Buffer b;
    lua_Integer last = s_getn(L, 1, TAB_R);
    size_t lsep;
    const char *sep = luaL_optlstring(L, 2, "", &lsep);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    last = luaL_optinteger(L, 4, last);
    luaL_buffinit(L, &b);
    for (; i < last; i++) {
        s_addfield(&m, &b, i);
        ts_steps_add(&m, (long)(lsep >> 4));
        luaL_addlstring(&b, sep, lsep);
    }
    if (i == last) /* the last value, if the range was not empty */
        s_addfield(&m, &b, i);
    ts_steps_flush(&m);
    luaL_pushresult(&b);
    return 1;
}

static int s_unpack(lua_State *L)
{
    ts_steps_t m = m_open(L);
    lua_Integer i = luaL_optinteger(L, 2, 1);
    lua_Integer e = luaL_opt(L, luaL_checkinteger, 3, luaL_len(L, 1));
    if (i > e)
        return 0;
    lua_Unsigned n = (lua_Unsigned)e - (lua_Unsigned)i; /* elements - 1 */
    if (n >= (unsigned int)INT_MAX || !lua_checkstack(L, (int)(++n)))
        return luaL_error(L, "too many results to unpack");
    for (; i < e; i++) { /* up to e - 1, so i + 1 cannot overflow */
        ts_steps_add(&m, 1);
        lua_geti(L, 1, i);
    }
    lua_geti(L, 1, e);
    ts_steps_flush(&m);
    return (int)n;
}

/* table.sort: Lua 5.4.4's quicksort, unchanged but for the charges, so that
 * even an order function that is not a strict order (or equal elements that
 * can be told apart) gives the same result as Lua's. Stack: 1 the table, 2
 * the order function or nil. */

typedef unsigned int idx_t;

#define RANLIMIT 100u /* from this size up, a pivot may be chosen at random */

/* Lua's l_randomizePivot: some bits of the clock and the time. */
static unsigned int s_random_pivot(void)
{
    clock_t c = clock();
    time_t t = time(NULL);
    unsigned int buff[(sizeof c + sizeof t) / sizeof(unsigned int)];
    unsigned int rnd = 0;
    memcpy(buff, &c, sizeof c);
    memcpy((char *)buff + sizeof c, &t, sizeof t);
    for (size_t i = 0; i < sizeof buff / sizeof *buff; i++)
        rnd += buff[i];
    return rnd;
}

static void s_set2(lua_State *L, idx_t i, idx_t j)
{
    lua_seti(L, 1, i);
    lua_seti(L, 1, j);
}

/* a < b, by the order function or Lua's <. Two strings cost their shorter
 * length too: the comparison reads up to that far. */
static int s_sort_comp(ts_steps_t *m, int a, int b)
{
    lua_State *L = m->L;
    if (lua_isnil(L, 2)) {
        long cost = 1;
        if (lua_type(L, a) == LUA_TSTRING && lua_type(L, b) == LUA_TSTRING) {
            size_t la = lua_rawlen(L, a), lb = lua_rawlen(L, b);
            cost += (long)((la < lb ? la : lb) >> 4);
        }
        ts_steps_add(m, cost);
        return lua_compare(L, a, b, LUA_OPLT);
    }
    ts_steps_add(m, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, a - 1); /* -1: the function above it */
    lua_pushvalue(L, b - 2); /* -2: the function and a */
    lua_call(L, 2, 1);
    int res = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return res;
}

/* With the pivot P on the stack and at a[up - 1]: a[lo .. i] <= P <=
 * a[j .. up]; returns P's final place. */
static idx_t s_partition(ts_steps_t *m, idx_t lo, idx_t up)
{
    lua_State *L = m->L;
    idx_t i = lo, j = up - 1;
    for (;;) {
        while (lua_geti(L, 1, ++i), s_sort_comp(m, -1, -2)) { /* a[i] < P */
            if (i == up - 1)
                luaL_error(L, "invalid order function for sorting");
            lua_pop(L, 1);
        }
        while (lua_geti(L, 1, --j), s_sort_comp(m, -3, -1)) { /* P < a[j] */
            if (j < i)
                luaL_error(L, "invalid order function for sorting");
            lua_pop(L, 1);
        }
        if (j < i) {
            lua_pop(L, 1);
            s_set2(L, up - 1, i); /* the pivot to a[i] */
            return i;
        }
        s_set2(L, i, j);
    }
}

static idx_t s_choose_pivot(idx_t lo, idx_t up, unsigned int rnd)
{
    idx_t r4 = (up - lo) / 4;
    return rnd % (r4 * 2) + (lo + r4);
}

static void s_auxsort(ts_steps_t *m, idx_t lo, idx_t up, unsigned int rnd)
{
    lua_State *L = m->L;
    while (lo < up) { /* the larger part loops, the smaller one recurses */
        idx_t p, n;
        lua_geti(L, 1, lo);
        lua_geti(L, 1, up);
        if (s_sort_comp(m, -1, -2)) /* a[up] < a[lo] */
            s_set2(L, lo, up);
        else
            lua_pop(L, 2);
        if (up - lo == 1)
            break;
        if (up - lo < RANLIMIT || rnd == 0)
            p = (lo + up) / 2;
        else
            p = s_choose_pivot(lo, up, rnd);
        lua_geti(L, 1, p);
        lua_geti(L, 1, lo);
        if (s_sort_comp(m, -2, -1)) { /* a[p] < a[lo] */
            s_set2(L, p, lo);
        } else {
            lua_pop(L, 1);
            lua_geti(L, 1, up);
            if (s_sort_comp(m, -1, -2)) /* a[up] < a[p] */
                s_set2(L, p, up);
            else
                lua_pop(L, 2);
        }
        if (up - lo == 2)
            break;
        lua_geti(L, 1, p); /* the pivot */
        lua_pushvalue(L, -1);
        lua_geti(L, 1, up - 1);
        s_set2(L, p, up - 1); /* a[p] = a[up - 1]; a[up - 1] = pivot */
        p = s_partition(m, lo, up);
        if (p - lo < up - p) {
            s_auxsort(m, lo, p - 1, rnd);
            n = p - lo;
            lo = p + 1;
        } else {
            s_auxsort(m, p + 1, up, rnd);
            n = up - p;
            up = p - 1;
        }
        if ((up - lo) / 128 > n) /* too unbalanced: a random pivot from now on */
            rnd = s_random_pivot();
    }
}

static int s_sort(lua_State *L)
{
    ts_steps_t m = m_open(L);
    lua_Integer n = s_getn(L, 1, TAB_R | TAB_W);
    if (n > 1) {
        luaL_argcheck(L, n < INT_MAX, 1, "array too big");
        if (!lua_isnoneornil(L, 2))
            luaL_checktype(L, 2, LUA_TFUNCTION);
        lua_settop(L, 2);
        s_auxsort(&m, 1, (idx_t)n, 0);
        ts_steps_flush(&m);
    }
    return 0;
}

static void s_set(lua_State *L, int idx, const char *name, lua_CFunction fn,
                  const ts_pattern_meter_t *meter)
{
    lua_pushlightuserdata(L, (void *)meter);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, idx, name);
}

void ts_metered_install(lua_State *L, int str, int tab, const ts_pattern_meter_t *meter)
{
    static const luaL_Reg tab_fns[] = {
        {"insert", s_insert}, {"remove", s_remove}, {"move", s_move},
        {"concat", s_concat}, {"unpack", s_unpack}, {"sort", s_sort},
    };
    str = lua_absindex(L, str);
    tab = lua_absindex(L, tab);
    s_set(L, str, "rep", s_rep, meter);
    for (size_t i = 0; i < sizeof tab_fns / sizeof *tab_fns; i++)
        s_set(L, tab, tab_fns[i].name, tab_fns[i].func, meter);
}
