/* select.c — the selectors: reads selectors.lua's table at load (name,
 * collection, where, order_by, limit, from, index), and runs a query — its
 * params prepared once, then where() on one document or on a scan's
 * candidates as lazy tables, and from() for the start position. A query
 * belongs to one load: after a reload it fails. */
#include "policy_int.h"

#include "therasync/util.h"

#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_sel_cmp(const void *a, const void *b)
{
    return strcmp(((const sel_t *)a)->pub.name, ((const sel_t *)b)->pub.name);
}

/* ---- fingerprints ---- */

static void fp_add(uint64_t *h, const void *bytes, size_t len)
{
    const unsigned char *p = bytes;
    for (size_t i = 0; i < len; i++)
        *h = (*h ^ p[i]) * 0x100000001b3ull;
    *h = (*h ^ 0xff) * 0x100000001b3ull; /* ends each part */
}

static void fp_str(uint64_t *h, const char *s) { fp_add(h, s ? s : "", s ? strlen(s) + 1 : 0); }

static int fp_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
    (void)L;
    fp_add(ud, p, sz);
    return 0;
}

/* Adds the value at the top of the stack: a function by its bytecode
 * (stripped, so moving it in the file changes nothing) and its upvalues'
 * values, a table by its contents, a scalar by its text. Depth and size
 * are bounded; beyond them the fingerprint is made unique, so a change
 * there can only cost the cache its answers, never keep a stale one. */
static void fp_value(lua_State *L, uint64_t *h, int depth, int *budget)
{
    int t = lua_type(L, -1);
    fp_add(h, &t, sizeof t);
    if (--*budget < 0 || depth > 4) {
        static uint64_t unique;
        unique++;
        fp_add(h, &unique, sizeof unique);
        return;
    }
    if (t == LUA_TFUNCTION) {
        if (lua_iscfunction(L, -1)) {
            lua_CFunction f = lua_tocfunction(L, -1);
            fp_add(h, &f, sizeof f);
            return;
        }
        lua_dump(L, fp_writer, h, 1);
        for (int i = 1;; i++) {
            const char *name = lua_getupvalue(L, -1, i);
            if (!name)
                break;
            fp_str(h, name);
            if (strcmp(name, "_ENV") != 0) /* the sandbox: read-only, the same for every load */
                fp_value(L, h, depth + 1, budget);
            lua_pop(L, 1);
        }
    } else if (t == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pushvalue(L, -2);
            fp_value(L, h, depth + 1, budget);
            lua_pop(L, 1);
            fp_value(L, h, depth + 1, budget);
            lua_pop(L, 1);
        }
    } else if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        size_t len;
        lua_pushvalue(L, -1); /* tolstring changes a number in place */
        const char *s = lua_tolstring(L, -1, &len);
        fp_add(h, s, len);
        lua_pop(L, 1);
    } else if (t == LUA_TBOOLEAN) {
        int b = lua_toboolean(L, -1);
        fp_add(h, &b, sizeof b);
    }
}

static uint64_t fingerprint(lua_State *L, const sel_t *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    fp_str(&h, s->pub.collection);
    fp_str(&h, s->pub.order_field);
    fp_add(&h, &s->pub.order_desc, sizeof s->pub.order_desc);
    fp_add(&h, &s->pub.limit, sizeof s->pub.limit);
    fp_str(&h, s->pub.index_field);
    fp_str(&h, s->pub.lower_bound);
    int refs[2] = {s->where_ref, s->from_ref};
    for (int i = 0; i < 2; i++) {
        int budget = 10000;
        if (refs[i] == LUA_NOREF) {
            fp_str(&h, "-");
            continue;
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, refs[i]);
        fp_value(L, &h, 0, &budget);
        lua_pop(L, 1);
    }
    return h;
}

void policy_check_selectors(lua_State *L, loaded_t *ld)
{
    const char *file = "selectors.lua";
    int t = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        n++;
        lua_pop(L, 1);
    }
    ld->sels = ts_xcalloc(n ? n : 1, sizeof *ld->sels);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int v = lua_gettop(L);
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: keys of the returned table must be selector names", file);
        const char *name = lua_tostring(L, -2);
        if (!lua_istable(L, v))
            luaL_error(L, "%s: selector '%s' must be a table, got %s", file, name,
                       luaL_typename(L, v));
        sel_t *s = &ld->sels[ld->nsels++];
        s->where_ref = LUA_NOREF;
        s->from_ref = LUA_NOREF;
        s->pub.name = ts_xstrdup(name);
        if (lua_getfield(L, v, "collection") != LUA_TSTRING)
            luaL_error(L, "%s: selector '%s': collection must be a string", file, name);
        s->pub.collection = ts_xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        int wt = lua_getfield(L, v, "where");
        if (wt == LUA_TFUNCTION)
            s->where_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else if (wt == LUA_TNIL)
            lua_pop(L, 1);
        else
            luaL_error(L, "%s: selector '%s': where must be a function", file, name);
        int ot = lua_getfield(L, v, "order_by");
        if (ot == LUA_TTABLE) {
            if (lua_rawgeti(L, -1, 1) != LUA_TSTRING)
                luaL_error(L, "%s: selector '%s': order_by[1] must be a field name", file, name);
            s->pub.order_field = ts_xstrdup(lua_tostring(L, -1));
            lua_pop(L, 1);
            int dt = lua_rawgeti(L, -1, 2);
            const char *dir = dt == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            if (dt == LUA_TNIL || (dir && strcmp(dir, "asc") == 0))
                s->pub.order_desc = false;
            else if (dir && strcmp(dir, "desc") == 0)
                s->pub.order_desc = true;
            else
                luaL_error(L, "%s: selector '%s': order_by[2] must be \"asc\" or \"desc\"", file,
                           name);
            lua_pop(L, 1);
        } else if (ot != LUA_TNIL) {
            luaL_error(L, "%s: selector '%s': order_by must be {field, \"asc\"|\"desc\"}", file,
                       name);
        }
        lua_pop(L, 1);
        int lt = lua_getfield(L, v, "limit");
        if (lt == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0)
            s->pub.limit = (long)lua_tointeger(L, -1);
        else if (lt != LUA_TNIL)
            luaL_error(L, "%s: selector '%s': limit must be a positive integer", file, name);
        lua_pop(L, 1);
        int ft = lua_getfield(L, v, "from");
        if (ft == LUA_TFUNCTION && s->pub.order_field) {
            s->from_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            s->pub.has_from = true;
        } else if (ft == LUA_TNIL) {
            lua_pop(L, 1);
        } else {
            luaL_error(L, "%s: selector '%s': from must be a function (and needs order_by)", file,
                       name);
        }
        int it = lua_getfield(L, v, "index");
        if (it == LUA_TSTRING)
            s->pub.index_field = ts_xstrdup(lua_tostring(L, -1));
        else if (it != LUA_TNIL)
            luaL_error(L, "%s: selector '%s': index must be a field name", file, name);
        lua_pop(L, 1);
        int bt = lua_getfield(L, v, "lower_bound");
        if (bt == LUA_TSTRING && s->pub.order_field && !s->pub.order_desc)
            s->pub.lower_bound = ts_xstrdup(lua_tostring(L, -1));
        else if (bt != LUA_TNIL)
            luaL_error(L,
                       "%s: selector '%s': lower_bound must be a param name (and needs "
                       "order_by ascending)",
                       file, name);
        lua_pop(L, 1);
        s->pub.fingerprint = fingerprint(L, s);
        lua_settop(L, v - 1);
    }
    qsort(ld->sels, ld->nsels, sizeof *ld->sels, s_sel_cmp);
}

/* ---- selectors ---- */

size_t ts_policy_selector_count(const ts_policy_t *self) { return self->cur->nsels; }

const ts_policy_selector_t *ts_policy_selector_at(const ts_policy_t *self, size_t i)
{
    return i < self->cur->nsels ? &self->cur->sels[i].pub : NULL;
}

static const sel_t *s_sel_find(const ts_policy_t *self, const char *name)
{
    if (!name)
        return NULL;
    sel_t key = {.pub = {.name = name}};
    return bsearch(&key, self->cur->sels, self->cur->nsels, sizeof key, s_sel_cmp);
}

const ts_policy_selector_t *ts_policy_selector_find(const ts_policy_t *self, const char *name)
{
    const sel_t *s = s_sel_find(self, name);
    return s ? &s->pub : NULL;
}

long ts_policy_selector_limit(const ts_policy_selector_t *sel, const cJSON *params)
{
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(params, "limit");
    long limit = sel->limit;
    if (cJSON_IsNumber(l) && l->valuedouble >= 1 && l->valuedouble <= (double)LONG_MAX &&
        l->valuedouble == floor(l->valuedouble)) {
        long want = (long)l->valuedouble;
        if (limit == 0 || want < limit)
            limit = want;
    }
    return limit;
}

typedef struct {
    ts_policy_t *self;
    const cJSON *params;
    int ref;
} prepare_call_t;

/* __index of params (and of a selector's ctx) when the query gave no
 * now: `now` is the clock, and reading it counts as reading the clock (the
 * answer then ages: the cache does not keep it). Other keys go to the
 * table in upvalue 2, when there is one. */
static int s_lazy_now(lua_State *L)
{
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "now") == 0) {
        ts_sandbox_note_clock(ts_sandbox_of(L));
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        lua_rawset(L, 1); /* read once: the next reads are plain */
        return 1;
    }
    if (lua_type(L, lua_upvalueindex(2)) != LUA_TTABLE)
        return 0;
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(2));
    return 1;
}

/* Makes now lazy on the table at the top of the stack (see s_lazy_now);
 * index: the stack slot of the table other keys come from, or 0. */
static void set_lazy_now(lua_State *L, ts_policy_t *self, int index)
{
    char now[32];
    ts_rfc3339(policy_now_ms(self), now);
    lua_createtable(L, 0, 2);
    lua_pushstring(L, now);
    if (index)
        lua_pushvalue(L, index);
    else
        lua_pushnil(L);
    lua_pushcclosure(L, s_lazy_now, 2);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

static int s_prepare_call(lua_State *L)
{
    prepare_call_t *c = lua_touserdata(L, 1);
    if (c->params)
        policy_push_json(L, c->params, 0);
    else
        lua_newtable(L);
    lua_pushliteral(L, "now");
    bool missing = lua_rawget(L, -2) == LUA_TNIL;
    lua_pop(L, 1);
    if (missing)
        set_lazy_now(L, c->self, 0);
    c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

ts_policy_query_t *ts_policy_query_new(ts_policy_t *self, const char *selector,
                                       const cJSON *params, char *err, size_t errlen)
{
    const sel_t *sel = s_sel_find(self, selector);
    if (!sel) {
        snprintf(err, errlen, "no selector named '%s'", selector ? selector : "");
        return NULL;
    }
    if (params && !cJSON_IsObject(params)) {
        snprintf(err, errlen, "selector params must be an object");
        return NULL;
    }
    ts_policy_query_t *q = ts_xcalloc(1, sizeof *q);
    policy_set_label(self, "selectors", selector);
    prepare_call_t c = {self, params, LUA_NOREF};
    if (ts_sandbox_pcall(self->cur->sb, s_prepare_call, &c, err, errlen) != 0) {
        free(q);
        return NULL;
    }
    q->self = self;
    q->generation = self->generation;
    q->sel = sel;
    q->params_ref = c.ref;
    return q;
}

typedef struct {
    ts_policy_query_t *q;
    const cJSON *doc;
    bool match;
} match_call_t;

/* ctx of a selector call: its now is params.now (which defaults to the
 * clock), so a selector's answer depends on its params and documents
 * only, and the cache can name it by them. */
static void push_selector_ctx(lua_State *L, ts_policy_query_t *q)
{
    policy_push_ctx(L, q->self, q->sel->pub.collection, false);
    lua_rawgeti(L, LUA_REGISTRYINDEX, q->params_ref);
    lua_pushliteral(L, "now");
    if (lua_rawget(L, -2) != LUA_TNIL) { /* the query's now */
        lua_setfield(L, -3, "now");
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 2);
    /* No now given: ctx.now is the clock, read lazily like params.now. */
    lua_pushnil(L);
    lua_setfield(L, -2, "now");
    int ctx = lua_gettop(L);
    lua_getmetatable(L, ctx);
    lua_getfield(L, -1, "__index"); /* the shared part of ctx */
    int shared = lua_gettop(L);
    lua_pushvalue(L, ctx);
    set_lazy_now(L, q->self, shared);
    lua_settop(L, ctx);
}

static int s_match_call(lua_State *L)
{
    match_call_t *c = lua_touserdata(L, 1);
    ts_policy_t *self = c->q->self;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->q->sel->where_ref);
    policy_push_json(L, c->doc, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->q->params_ref);
    push_selector_ctx(L, c->q);
    lua_call(L, 3, 1);
    if (!lua_isboolean(L, -1))
        return luaL_error(L, "%s: where must return a boolean, got %s", self->label,
                          luaL_typename(L, -1));
    c->match = lua_toboolean(L, -1);
    return 0;
}

int ts_policy_query_match(ts_policy_query_t *q, const cJSON *doc, bool *match, char *err,
                          size_t errlen)
{
    *match = false;
    if (q->generation != q->self->generation) {
        snprintf(err, errlen, "policies were reloaded during the query");
        return TS_POLICY_ERROR;
    }
    if (q->sel->where_ref == LUA_NOREF) {
        *match = true;
        return TS_POLICY_OK;
    }
    ts_policy_t *self = q->self;
    policy_set_label(self, "selectors", q->sel->pub.name);
    match_call_t c = {q, doc, false};
    int rc = ts_sandbox_pcall(self->cur->sb, s_match_call, &c, err, errlen);
    policy_scratch_clear(self);
    if (rc != 0)
        return TS_POLICY_ERROR;
    *match = c.match;
    return TS_POLICY_OK;
}

void ts_policy_query_destroy(ts_policy_query_t **q_p)
{
    if (!q_p || !*q_p)
        return;
    ts_policy_query_t *q = *q_p;
    if (q->generation == q->self->generation)
        luaL_unref(ts_sandbox_state(q->self->cur->sb), LUA_REGISTRYINDEX, q->params_ref);
    free(q);
    *q_p = NULL;
}

int ts_policy_where(ts_policy_t *self, const char *selector, const cJSON *doc,
                    const cJSON *params, bool *match, char *err, size_t errlen)
{
    *match = false;
    ts_policy_query_t *q = ts_policy_query_new(self, selector, params, err, errlen);
    if (!q)
        return TS_POLICY_ERROR;
    int rc = ts_policy_query_match(q, doc, match, err, errlen);
    ts_policy_query_destroy(&q);
    return rc;
}

typedef struct {
    ts_policy_query_t *q;
    cJSON *from;
} from_call_t;

static int s_from_call(lua_State *L)
{
    from_call_t *c = lua_touserdata(L, 1);
    ts_policy_t *self = c->q->self;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->q->sel->from_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->q->params_ref);
    push_selector_ctx(L, c->q);
    lua_call(L, 2, 1);
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING)
        c->from = cJSON_CreateString(lua_tostring(L, -1));
    else if (t == LUA_TNUMBER)
        c->from = cJSON_CreateNumber(lua_tonumber(L, -1));
    else if (t == LUA_TNIL)
        return 0;
    else
        return luaL_error(L, "%s: from must return a string, a number or nil, got %s",
                          self->label, luaL_typename(L, -1));
    return 0;
}

int ts_policy_query_from(ts_policy_query_t *q, cJSON **from, char *err, size_t errlen)
{
    *from = NULL;
    if (q->generation != q->self->generation) {
        snprintf(err, errlen, "policies were reloaded during the query");
        return TS_POLICY_ERROR;
    }
    if (q->sel->from_ref == LUA_NOREF)
        return TS_POLICY_OK;
    ts_policy_t *self = q->self;
    policy_set_label(self, "selectors", q->sel->pub.name);
    from_call_t c = {q, NULL};
    int rc = ts_sandbox_pcall(self->cur->sb, s_from_call, &c, err, errlen);
    policy_scratch_clear(self);
    if (rc != 0) {
        cJSON_Delete(c.from);
        return TS_POLICY_ERROR;
    }
    *from = c.from;
    return TS_POLICY_OK;
}

typedef struct {
    ts_policy_query_t *q;
    ts_policy_next_fn next;
    ts_policy_emit_fn emit;
    void *arg;
    ts_policy_doc_t doc;
} scan_call_t;

static int s_scan_call(lua_State *L)
{
    scan_call_t *c = lua_touserdata(L, 1);
    ts_policy_t *self = c->q->self;
    ts_sandbox_t *sb = self->cur->sb;
    bool has_where = c->q->sel->where_ref != LUA_NOREF;
    if (has_where) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->q->sel->where_ref); /* 2 */
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->q->params_ref);     /* 3 */
        push_selector_ctx(L, c->q); /* 4 */
    }
    while (c->next(c->arg, &c->doc) > 0) {
        self->doc = &c->doc;
        bool match = true;
        if (has_where) {
            ts_sandbox_budget_reset(sb);
            lua_pushvalue(L, 2);
            policy_push_proxy(L, self, 0);
            self->doc_table = lua_topointer(L, -1);
            lua_pushvalue(L, 3);
            lua_pushvalue(L, 4);
            lua_call(L, 3, 1);
            if (!lua_isboolean(L, -1))
                return luaL_error(L, "%s: where must return a boolean, got %s", self->label,
                                  luaL_typename(L, -1));
            match = lua_toboolean(L, -1);
            lua_pop(L, 1);
            policy_scratch_clear(self);
        }
        if (match) {
            int r = c->emit(c->arg, &c->doc);
            if (r < 0)
                return luaL_error(L, "out of memory");
            if (r > 0)
                break;
        }
    }
    return 0;
}

int ts_policy_query_scan(ts_policy_query_t *q, ts_policy_next_fn next, ts_policy_emit_fn emit,
                         void *arg, char *err, size_t errlen)
{
    if (q->generation != q->self->generation) {
        snprintf(err, errlen, "policies were reloaded during the query");
        return TS_POLICY_ERROR;
    }
    ts_policy_t *self = q->self;
    policy_set_label(self, "selectors", q->sel->pub.name);
    scan_call_t c = {q, next, emit, arg, {0}};
    self->doc = NULL;
    int rc = ts_sandbox_pcall(self->cur->sb, s_scan_call, &c, err, errlen);
    policy_scratch_clear(self);
    bool had_doc = self->doc != NULL;
    self->doc = NULL; /* its lazy tables kept by a policy go stale */
    if (rc != 0) {
        if (had_doc) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s (document %.*s)", err, (int)c.doc.id_len, c.doc.id);
            snprintf(err, errlen, "%s", msg);
        }
        return TS_POLICY_ERROR;
    }
    return TS_POLICY_OK;
}

uint64_t ts_policy_clock_reads(const ts_policy_t *self)
{
    return ts_sandbox_clock_reads(self->cur->sb);
}
