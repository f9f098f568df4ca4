/* pattern.c — budgeted string.find, match, gmatch and gsub (see pattern.h).
 *
 * The matcher walks the pattern item by item and backtracks by recursion,
 * as Lua's own does, so results (and error messages) are the same; the
 * differential test in tests/unit/test_pattern.c holds it to that. What it
 * adds is accounting: every loop adds its work to m->st (ts_steps_t), and
 * every TS_CHARGE_EVERY steps the meter is called, which may raise. Loops that run
 * at most once over the subject (a repetition counting its matches, %b
 * looking for its closing character) add their count when they end: one
 * such loop is bounded by the subject's length, and everything that repeats
 * it goes through s_match, which counts. Strings in a Lua state always have
 * a '\0' after their last byte, so reading p[1] at the pattern's last byte
 * is safe (it reads that '\0', as Lua's matcher does). */
#include "pattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <string.h>

#define MAX_CAPTURES 32 /* LUA_MAXCAPTURES */
#define MAX_DEPTH 200   /* nested s_match calls (C stack), Lua's MAXCCALLS */
#define CAP_OPEN (-1)   /* capture started, not closed yet */
#define CAP_POS (-2)    /* position capture "()" */

typedef struct {
    ts_steps_t st;
    const char *src, *src_end; /* the subject */
    const char *pat_end;
    int depth; /* s_match calls left before "pattern too complex" */
    int level; /* captures in use */
    struct {
        const char *at;
        ptrdiff_t len; /* or CAP_OPEN / CAP_POS */
    } cap[MAX_CAPTURES];
} mstate_t;

void ts_steps_flush(ts_steps_t *s)
{
    long n = s->steps;
    s->steps = 0;
    if (n > 0)
        s->meter->charge(s->L, n);
}

static void s_init(mstate_t *m, lua_State *L, const ts_pattern_meter_t *meter, const char *s,
                   size_t ls, const char *p, size_t lp)
{
    m->st = (ts_steps_t){L, meter, 0};
    m->src = s;
    m->src_end = s + ls;
    m->pat_end = p + lp;
}

/* Before each attempt at one subject position. */
static void s_reset(mstate_t *m)
{
    m->level = 0;
    m->depth = MAX_DEPTH;
}

/* %a, %d, ... : whether c is in class cl; an upper-case class is the
 * complement; any other character stands for itself. */
static bool s_class(int c, int cl)
{
    int in;
    switch (tolower(cl)) {
    case 'a': in = isalpha(c); break;
    case 'c': in = iscntrl(c); break;
    case 'd': in = isdigit(c); break;
    case 'g': in = isgraph(c); break;
    case 'l': in = islower(c); break;
    case 'p': in = ispunct(c); break;
    case 's': in = isspace(c); break;
    case 'u': in = isupper(c); break;
    case 'w': in = isalnum(c); break;
    case 'x': in = isxdigit(c); break;
    case 'z': in = c == 0; break; /* deprecated in Lua 5.2, still accepted */
    default: return cl == c;
    }
    return isupper(cl) ? !in : in != 0;
}

/* Whether c is in the set that starts at p ('[') and ends at close (']'). */
static bool s_in_set(mstate_t *m, int c, const char *p, const char *close)
{
    bool want = true;
    p++;
    if (*p == '^') {
        want = false;
        p++;
    }
    ts_steps_add(&m->st, (close - p) >> 3);
    for (; p < close; p++) {
        if (*p == '%') {
            p++;
            if (s_class(c, (unsigned char)*p))
                return want;
        } else if (p[1] == '-' && p + 2 < close) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return want;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return want;
        }
    }
    return !want;
}

/* The end of the single-character item at p (where a suffix would be). The
 * first character of a set is part of it even when it is ']'. */
static const char *s_item_end(mstate_t *m, const char *p)
{
    switch (*p++) {
    case '%':
        if (p == m->pat_end)
            luaL_error(m->st.L, "malformed pattern (ends with '%%')");
        return p + 1;
    case '[': {
        if (*p == '^')
            p++;
        const char *from = p;
        do {
            if (p == m->pat_end)
                luaL_error(m->st.L, "malformed pattern (missing ']')");
            if (*p++ == '%' && p < m->pat_end)
                p++; /* an escaped character, ']' included */
        } while (*p != ']');
        ts_steps_add(&m->st, (p - from) >> 3);
        return p + 1;
    }
    default:
        return p;
    }
}

/* Whether the subject character at s matches the item p..ep. */
static bool s_single(mstate_t *m, const char *s, const char *p, const char *ep)
{
    if (s >= m->src_end)
        return false;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return true;
    case '%': return s_class(c, (unsigned char)p[1]);
    case '[': return s_in_set(m, c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

static const char *s_match(mstate_t *m, const char *s, const char *p);

/* item*: as many as possible, then fewer until the rest matches. */
static const char *s_greedy(mstate_t *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t n = 0;
    while (s_single(m, s + n, p, ep))
        n++;
    ts_steps_add(&m->st, n);
    for (; n >= 0; n--) {
        const char *r = s_match(m, s + n, ep + 1);
        if (r)
            return r;
    }
    return NULL;
}

/* item-: as few as possible, one more until the rest matches. */
static const char *s_lazy(mstate_t *m, const char *s, const char *p, const char *ep)
{
    for (;; s++) {
        const char *r = s_match(m, s, ep + 1);
        if (r)
            return r;
        if (!s_single(m, s, p, ep))
            return NULL;
    }
}

static const char *s_open(mstate_t *m, const char *s, const char *p, ptrdiff_t what)
{
    if (m->level >= MAX_CAPTURES)
        luaL_error(m->st.L, "too many captures");
    m->cap[m->level].at = s;
    m->cap[m->level].len = what;
    m->level++;
    const char *r = s_match(m, s, p);
    if (!r)
        m->level--;
    return r;
}

static const char *s_close(mstate_t *m, const char *s, const char *p)
{
    int l = m->level - 1;
    while (l >= 0 && m->cap[l].len != CAP_OPEN)
        l--;
    if (l < 0)
        luaL_error(m->st.L, "invalid pattern capture");
    m->cap[l].len = s - m->cap[l].at;
    const char *r = s_match(m, s, p);
    if (!r)
        m->cap[l].len = CAP_OPEN;
    return r;
}

/* %bxy at p (pointing at x). */
static const char *s_balance(mstate_t *m, const char *s, const char *p)
{
    if (p >= m->pat_end - 1)
        luaL_error(m->st.L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->src_end || *s != *p)
        return NULL;
    char open = p[0], close = p[1];
    int depth = 1;
    for (const char *q = s + 1; q < m->src_end; q++) {
        if (*q == close) {
            if (--depth == 0) {
                ts_steps_add(&m->st, q - s);
                return q + 1;
            }
        } else if (*q == open) {
            depth++;
        }
    }
    ts_steps_add(&m->st, m->src_end - s);
    return NULL;
}

/* %1 .. %9 in a pattern: the text of an earlier, closed capture again. */
static const char *s_backref(mstate_t *m, const char *s, int digit)
{
    int l = digit - '1';
    if (l < 0 || l >= m->level || m->cap[l].len == CAP_OPEN)
        luaL_error(m->st.L, "invalid capture index %%%d", l + 1);
    ptrdiff_t len = m->cap[l].len;
    if (len == CAP_POS) /* Lua compares the position as a huge length: never */
        return NULL;
    ts_steps_add(&m->st, len >> 4);
    if (m->src_end - s >= len && memcmp(m->cap[l].at, s, (size_t)len) == 0)
        return s + len;
    return NULL;
}

/* The end of the match of pattern p at s, or NULL. Tail positions loop
 * instead of recursing. */
static const char *s_match(mstate_t *m, const char *s, const char *p)
{
    if (m->depth-- == 0)
        luaL_error(m->st.L, "pattern too complex");
    for (;;) {
        ts_steps_add(&m->st, 1);
        if (p == m->pat_end)
            break;
        if (*p == '(') {
            s = p[1] == ')' ? s_open(m, s, p + 2, CAP_POS) : s_open(m, s, p + 1, CAP_OPEN);
            break;
        }
        if (*p == ')') {
            s = s_close(m, s, p + 1);
            break;
        }
        if (*p == '$' && p + 1 == m->pat_end) {
            if (s != m->src_end)
                s = NULL;
            break;
        }
        if (*p == '%' && p[1] == 'b') {
            if (!(s = s_balance(m, s, p + 2)))
                break;
            p += 4;
            continue;
        }
        if (*p == '%' && p[1] == 'f') {
            p += 2;
            if (*p != '[')
                luaL_error(m->st.L, "missing '[' after '%%f' in pattern");
            const char *ep = s_item_end(m, p);
            int before = s == m->src ? 0 : (unsigned char)s[-1];
            int at = s < m->src_end ? (unsigned char)*s : 0;
            if (s_in_set(m, before, p, ep - 1) || !s_in_set(m, at, p, ep - 1)) {
                s = NULL;
                break;
            }
            p = ep;
            continue;
        }
        if (*p == '%' && isdigit((unsigned char)p[1])) {
            if (!(s = s_backref(m, s, (unsigned char)p[1])))
                break;
            p += 2;
            continue;
        }
        /* one single-character item and its suffix, if any */
        const char *ep = s_item_end(m, p);
        bool one = s_single(m, s, p, ep);
        if (*ep == '?') {
            const char *r;
            if (one && (r = s_match(m, s + 1, ep + 1))) {
                s = r;
                break;
            }
            p = ep + 1;
            continue;
        }
        if (*ep == '*' || *ep == '-') {
            if (!one) {
                p = ep + 1;
                continue;
            }
            s = *ep == '*' ? s_greedy(m, s, p, ep) : s_lazy(m, s, p, ep);
            break;
        }
        if (!one) {
            s = NULL;
            break;
        }
        if (*ep == '+') {
            s = s_greedy(m, s + 1, p, ep);
            break;
        }
        s++;
        p = ep;
    }
    m->depth++;
    return s;
}

/* Capture i of a match s..e (the whole match when the pattern has none and
 * i is 0). Sets *text and returns its length, or pushes the position and
 * returns CAP_POS. */
static ptrdiff_t s_capture(mstate_t *m, int i, const char *s, const char *e, const char **text)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->st.L, "invalid capture index %%%d", i + 1);
        *text = s;
        return e - s;
    }
    ptrdiff_t len = m->cap[i].len;
    *text = m->cap[i].at;
    if (len == CAP_OPEN)
        luaL_error(m->st.L, "unfinished capture");
    if (len == CAP_POS)
        lua_pushinteger(m->st.L, (lua_Integer)(m->cap[i].at - m->src) + 1);
    return len;
}

static void s_push_capture(mstate_t *m, int i, const char *s, const char *e)
{
    const char *text;
    ptrdiff_t len = s_capture(m, i, s, e, &text);
    if (len != CAP_POS)
        lua_pushlstring(m->st.L, text, (size_t)len);
}

/* Pushes every capture (the whole match s..e when there are none, nothing
 * when s is NULL); returns how many. */
static int s_push_captures(mstate_t *m, const char *s, const char *e)
{
    int n = m->level == 0 && s ? 1 : m->level;
    luaL_checkstack(m->st.L, n, "too many captures");
    for (int i = 0; i < n; i++)
        s_push_capture(m, i, s, e);
    return n;
}

/* init argument: 1-based, negative from the end, clamped at 1. */
static size_t s_start(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

/* Whether p has a pattern character; strpbrk stops at a '\0', so each run
 * between embedded '\0's is looked at in turn. */
static bool s_has_specials(const char *p, size_t lp)
{
    for (const char *q = p; q < p + lp; q += strlen(q) + 1)
        if (strpbrk(q, "^$*+?.([%-"))
            return true;
    return false;
}

/* Plain substring search, charged per candidate position. */
static const char *s_find_plain(mstate_t *m, const char *s, size_t ls, const char *p, size_t lp)
{
    if (lp == 0)
        return s;
    if (lp > ls)
        return NULL;
    const char *end = s + (ls - lp) + 1; /* candidate starts are below end */
    while (s < end) {
        const char *hit = memchr(s, *p, (size_t)(end - s));
        if (!hit) {
            ts_steps_add(&m->st, (end - s) >> 4);
            return NULL;
        }
        ts_steps_add(&m->st, 1 + ((hit - s) >> 4) + (long)(lp >> 4));
        if (memcmp(hit + 1, p + 1, lp - 1) == 0)
            return hit;
        s = hit + 1;
    }
    return NULL;
}

static const ts_pattern_meter_t *s_meter(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static int s_find_aux(lua_State *L, bool find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = s_start(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    mstate_t m;
    if (find && (lua_toboolean(L, 4) || !s_has_specials(p, lp))) {
        s_init(&m, L, s_meter(L), s, ls, p, lp);
        const char *hit = s_find_plain(&m, s + init, ls - init, p, lp);
        ts_steps_flush(&m.st);
        if (hit) {
            lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)(hit - s + lp));
            return 2;
        }
        luaL_pushfail(L);
        return 1;
    }
    bool anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    s_init(&m, L, s_meter(L), s, ls, p, lp);
    const char *at = s + init;
    do {
        s_reset(&m);
        const char *e = s_match(&m, at, p);
        if (e) {
            ts_steps_flush(&m.st);
            if (!find)
                return s_push_captures(&m, at, e);
            lua_pushinteger(L, (lua_Integer)(at - s) + 1);
            lua_pushinteger(L, (lua_Integer)(e - s));
            return s_push_captures(&m, NULL, NULL) + 2;
        }
    } while (at++ < m.src_end && !anchor);
    ts_steps_flush(&m.st);
    luaL_pushfail(L);
    return 1;
}

static int s_find(lua_State *L) { return s_find_aux(L, true); }
static int s_match_fn(lua_State *L) { return s_find_aux(L, false); }

/* gmatch's position between calls: offsets into the subject. */
typedef struct {
    size_t pos;  /* where the next search starts */
    size_t last; /* end of the last match (SIZE_MAX: none yet) */
} gmatch_t;

/* Upvalues: meter, subject, pattern, gmatch_t. As in Lua 5.4, '^' is not an
 * anchor here but an ordinary character. */
static int s_gmatch_next(lua_State *L)
{
    size_t ls, lp;
    const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
    const char *p = lua_tolstring(L, lua_upvalueindex(3), &lp);
    gmatch_t *g = lua_touserdata(L, lua_upvalueindex(4));
    mstate_t m;
    s_init(&m, L, s_meter(L), s, ls, p, lp);
    for (size_t at = g->pos; at <= ls; at++) {
        s_reset(&m);
        const char *e = s_match(&m, s + at, p);
        if (e && (size_t)(e - s) != g->last) {
            g->pos = g->last = (size_t)(e - s);
            ts_steps_flush(&m.st);
            return s_push_captures(&m, s + at, e);
        }
    }
    g->pos = ls + 1; /* nothing further can match: later calls end at once */
    ts_steps_flush(&m.st);
    return 0;
}

static int s_gmatch(lua_State *L)
{
    size_t ls;
    luaL_checklstring(L, 1, &ls);
    luaL_checkstring(L, 2);
    size_t init = s_start(luaL_optinteger(L, 3, 1), ls) - 1;
    lua_settop(L, 2);
    gmatch_t *g = lua_newuserdatauv(L, sizeof *g, 0);
    g->pos = init > ls ? ls + 1 : init;
    g->last = (size_t)-1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_pushcclosure(L, s_gmatch_next, 4);
    return 1;
}

/* A replacement string: %0..%9 and %% expanded. */
static void s_add_string(mstate_t *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t l;
    const char *r = lua_tolstring(m->st.L, 3, &l);
    const char *end = r + l;
    ts_steps_add(&m->st, (long)(l >> 4));
    const char *pc;
    while ((pc = memchr(r, '%', (size_t)(end - r)))) {
        luaL_addlstring(b, r, (size_t)(pc - r));
        int c = (unsigned char)pc[1]; /* '\0' when '%' ends the string */
        if (c == '%') {
            luaL_addchar(b, '%');
        } else if (c == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit(c)) {
            const char *text;
            ptrdiff_t len = s_capture(m, c - '1', s, e, &text);
            if (len == CAP_POS)
                luaL_addvalue(b); /* the position s_capture pushed */
            else
                luaL_addlstring(b, text, (size_t)len);
        } else {
            luaL_error(m->st.L, "invalid use of '%c' in replacement string", '%');
        }
        r = pc + 2;
    }
    luaL_addlstring(b, r, (size_t)(end - r));
}

/* Adds the replacement of match s..e; returns whether it differs from the
 * matched text (false/nil from a table or function keeps the text). */
static bool s_add_value(mstate_t *m, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = m->st.L;
    if (tr == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = s_push_captures(m, s, e);
        lua_call(L, n, 1);
    } else if (tr == LUA_TTABLE) {
        s_push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        s_add_string(m, b, s, e);
        return true;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return false;
    }
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return true;
}

static int s_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int tr = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION ||
                            tr == LUA_TTABLE,
                     3, "string/function/table");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    bool anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    mstate_t m;
    s_init(&m, L, s_meter(L), src, ls, p, lp);
    const char *at = src, *last = NULL;
    lua_Integer n = 0;
    bool changed = false;
    while (n < max) {
        s_reset(&m);
        const char *e = s_match(&m, at, p);
        if (e && e != last) {
            n++;
            changed = s_add_value(&m, &b, at, e, tr) || changed;
            at = last = e;
        } else if (at < m.src_end) {
            luaL_addchar(&b, *at++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    ts_steps_flush(&m.st);
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, at, (size_t)(m.src_end - at));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

void ts_pattern_install(lua_State *L, int idx, const ts_pattern_meter_t *meter)
{
    static const luaL_Reg fns[] = {
        {"find", s_find}, {"match", s_match_fn}, {"gmatch", s_gmatch}, {"gsub", s_gsub},
    };
    idx = lua_absindex(L, idx);
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
        lua_pushlightuserdata(L, (void *)meter);
        lua_pushcclosure(L, fns[i].func, 1);
        lua_setfield(L, idx, fns[i].name);
    }
}
