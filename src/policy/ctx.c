/* ctx.c — what a policy call is given as ctx: now, collection, config,
 * and the functions log (redacted), find (the store's look-up) and merge
 * (the default three-way merge). */
#include "policy_int.h"

#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- functions offered in ctx ---- */

ts_policy_t *policy_self_upvalue(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Replaces every occurrence of value in b by [redacted]. */
static void s_redact_value(ts_buf_t *b, const char *value)
{
    size_t vn = strlen(value);
    if (vn < 3 || !b->data)
        return; /* shorter text is no health data, and would garble the line */
    ts_buf_t out = {0};
    const char *p = b->data, *end = b->data + b->len, *hit;
    while ((hit = memmem(p, (size_t)(end - p), value, vn))) {
        ts_buf_append(&out, p, (size_t)(hit - p));
        ts_buf_puts(&out, "[redacted]");
        p = hit + vn;
    }
    if (p == b->data) {
        ts_buf_free(&out);
        return;
    }
    ts_buf_append(&out, p, (size_t)(end - p));
    ts_buf_free(b);
    *b = out;
}

/* Redacts in b the text under sensitive keys (ts_log_sensitive_key) of node. */
static void s_redact_values(ts_buf_t *b, const cJSON *node, bool sensitive)
{
    for (const cJSON *c = node ? node->child : NULL; c; c = c->next) {
        bool hide = sensitive || ts_log_sensitive_key(c->string);
        if (hide && cJSON_IsString(c))
            s_redact_value(b, c->valuestring);
        else if (cJSON_IsObject(c) || cJSON_IsArray(c))
            s_redact_values(b, c, hide);
    }
}

static void s_redact_text(ts_buf_t *b, const ts_policy_doc_t *doc)
{
    cJSON *json = doc && doc->text ? cJSON_ParseWithLength(doc->text, doc->len) : NULL;
    s_redact_values(b, json, false);
    cJSON_Delete(json);
}

/* ctx.log writes at debug level. A rule that logs a note by mistake must
 * not put it in the log: wherever the text of a sensitive field (notes,
 * summary, ... see log.h) of a document the call can see appears in the
 * message, it is replaced by [redacted] — the documents handed to the call,
 * those ctx.find returned, and the one a selector is looking at. */
int policy_ctx_log(lua_State *L)
{
    ts_policy_t *self = policy_self_upvalue(L);
    if (!ts_log_enabled(TS_LOG_DEBUG))
        return 0;
    size_t len;
    const char *msg = luaL_tolstring(L, 1, &len);
    ts_buf_t b = {0};
    ts_buf_append(&b, msg, len);
    for (int i = 0; i < 3; i++)
        s_redact_values(&b, self->call_docs[i], false);
    for (size_t i = 0; i < self->nfound; i++)
        s_redact_text(&b, &self->found[i]);
    s_redact_text(&b, self->doc);
    for (int i = 0; i < 2; i++)
        s_redact_text(&b, self->call_text_docs[i]);
    ts_debug("policy", "%s %s: %.*s", self->name, self->label, (int)b.len, b.data);
    ts_buf_free(&b);
    return 0;
}

typedef struct {
    lua_State *L;
    ts_policy_t *self;
    int result;           /* stack index of the result array */
    lua_Integer n;
    const cJSON *doc;     /* the one being appended */
    const char *time_field; /* range filter, or NULL */
    int64_t from_ms, to_ms;
    int failed;
    char msg[200];
} find_state_t;

static int s_append_doc(lua_State *L)
{
    find_state_t *fs = lua_touserdata(L, 1);
    policy_push_json(L, fs->doc, 0);
    lua_rawseti(L, 2, fs->n + 1); /* the result array, passed in */
    return 0;
}

static int s_find_visit(void *arg, const cJSON *doc)
{
    find_state_t *fs = arg;
    if (fs->time_field) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, fs->time_field);
        int64_t ms;
        if (!cJSON_IsString(t) || ts_parse_rfc3339(t->valuestring, &ms) != 0 || ms < fs->from_ms ||
            ms >= fs->to_ms)
            return 0;
    }
    /* Converting may raise (memory): keep the longjmp out of the caller's frames. */
    fs->doc = doc;
    lua_pushcfunction(fs->L, s_append_doc);
    lua_pushlightuserdata(fs->L, fs);
    lua_pushvalue(fs->L, fs->result);
    if (lua_pcall(fs->L, 2, 0, 0) != LUA_OK) {
        fs->failed = 1;
        snprintf(fs->msg, sizeof fs->msg, "%s",
                 lua_type(fs->L, -1) == LUA_TSTRING ? lua_tostring(fs->L, -1) : "error");
        lua_pop(fs->L, 1);
        return 1;
    }
    fs->n++;
    return 0;
}

/* Whether the text document's time field is in [from_ms, to_ms). */
static bool s_doc_in_range(const find_state_t *fs, const ts_policy_doc_t *d)
{
    const char *v;
    size_t n;
    char t[64];
    int64_t ms;
    if (!ts_json_text_field(d->text, d->len, fs->time_field, strlen(fs->time_field), &v, &n) ||
        n < 2 || v[0] != '"')
        return false;
    if (memchr(v, '\\', n)) { /* escaped: let cJSON read it */
        cJSON *s = cJSON_ParseWithLength(v, n);
        bool in = cJSON_IsString(s) && ts_parse_rfc3339(s->valuestring, &ms) == 0;
        cJSON_Delete(s);
        return in && ms >= fs->from_ms && ms < fs->to_ms;
    }
    if (n - 2 >= sizeof t)
        return false;
    memcpy(t, v + 1, n - 2);
    t[n - 2] = '\0';
    return ts_parse_rfc3339(t, &ms) == 0 && ms >= fs->from_ms && ms < fs->to_ms;
}

/* Visitor of the store's look-up: keeps the matching documents in
 * self->found (C only: nothing here may raise). */
static int s_find_visit_doc(void *arg, const ts_policy_doc_t *doc, const int64_t *time_ms)
{
    find_state_t *fs = arg;
    ts_policy_t *self = fs->self;
    if (fs->time_field && (time_ms ? *time_ms < fs->from_ms || *time_ms >= fs->to_ms
                                   : !s_doc_in_range(fs, doc)))
        return 0;
    if (self->nfound == self->found_cap) {
        /* Grows with what a policy asks ctx.find for: running out is an
         * error of that call (like the Lua memory cap), not the engine's. */
        size_t cap = self->found_cap ? 2 * self->found_cap : 16;
        ts_policy_doc_t *p = realloc(self->found, cap * sizeof *p);
        if (!p) {
            fs->failed = 1;
            snprintf(fs->msg, sizeof fs->msg, "out of memory");
            return 1;
        }
        self->found = p;
        self->found_cap = cap;
    }
    self->found[self->nfound++] = *doc;
    return 0;
}

static int64_t s_time_arg(lua_State *L, int tbl, const char *key, int64_t dflt)
{
    int t = lua_getfield(L, tbl, key);
    int64_t ms = dflt;
    if (t == LUA_TNUMBER && lua_isinteger(L, -1))
        ms = (int64_t)lua_tointeger(L, -1);
    else if (t == LUA_TSTRING) {
        if (ts_parse_rfc3339(lua_tostring(L, -1), &ms) != 0)
            luaL_error(L, "ctx.find: %s is not an RFC 3339 time", key);
    } else if (t != LUA_TNIL)
        luaL_error(L, "ctx.find: %s must be milliseconds or an RFC 3339 time", key);
    lua_pop(L, 1);
    return ms;
}

/* ctx.find(collection, field, value [, {time_field=, from=, to=}]) -> array
 * of copies of the matching documents (changing them changes nothing). */
int policy_ctx_find(lua_State *L)
{
    ts_policy_t *self = policy_self_upvalue(L);
    const char *coll = luaL_checkstring(L, 1);
    const char *field = luaL_checkstring(L, 2);
    char value[64];
    switch (lua_type(L, 3)) {
    case LUA_TSTRING:
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, 3))
            snprintf(value, sizeof value, "%lld", (long long)lua_tointeger(L, 3));
        else
            snprintf(value, sizeof value, "%.17g", (double)lua_tonumber(L, 3));
        break;
    case LUA_TBOOLEAN:
        snprintf(value, sizeof value, "%s", lua_toboolean(L, 3) ? "true" : "false");
        break;
    default:
        return luaL_error(L, "ctx.find: value must be a string, number or boolean, got %s",
                          luaL_typename(L, 3));
    }
    const char *v = lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : value;
    find_state_t fs = {
        .L = L, .self = self, .time_field = NULL, .from_ms = INT64_MIN, .to_ms = INT64_MAX};
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        if (lua_getfield(L, 4, "time_field") == LUA_TSTRING)
            fs.time_field = lua_tostring(L, -1); /* stays on the stack, so stays valid */
        else if (!lua_isnil(L, -1))
            return luaL_error(L, "ctx.find: time_field must be a string");
        fs.from_ms = s_time_arg(L, 4, "from", INT64_MIN);
        fs.to_ms = s_time_arg(L, 4, "to", INT64_MAX);
    }
    lua_newtable(L);
    fs.result = lua_gettop(L);
    if (!self->lookup && !self->find)
        return 1;
    luaL_checkstack(L, 8, "ctx.find");
    int rc;
    size_t first = self->nfound;
    if (self->find) {
        ts_policy_find_t f = {coll, field, v, fs.time_field, fs.from_ms, fs.to_ms};
        rc = self->find(self->lookup_arg, &f, s_find_visit_doc, &fs);
    } else {
        rc = self->lookup(self->lookup_arg, coll, field, v, s_find_visit, &fs);
    }
    if (fs.failed)
        return luaL_error(L, "ctx.find: %s", fs.msg);
    if (rc != 0)
        return luaL_error(L, "ctx.find: look-up of %s.%s failed", coll, field);
    /* Text documents become lazy tables, valid until the validation ends. */
    for (size_t i = first; i < self->nfound; i++) {
        policy_push_proxy(L, self, self->found_base + (lua_Integer)i);
        lua_rawseti(L, fs.result, (lua_Integer)(i - first + 1));
    }
    return 1;
}

/* ctx.merge(base, mine, theirs) -> the default three-way merge as a table. */
int policy_ctx_merge(lua_State *L)
{
    ts_policy_t *self = policy_self_upvalue(L);
    char err[200];
    cJSON *base = NULL, *mine = NULL, *theirs = NULL;
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    if (!lua_isnil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        if (!(base = policy_to_json(L, 1, 0, err, sizeof err)) ||
            policy_scratch_add(self, base) != 0) {
            cJSON_Delete(base);
            return luaL_error(L, "ctx.merge: base: %s", err);
        }
    }
    if (!(mine = policy_to_json(L, 2, 0, err, sizeof err)) || policy_scratch_add(self, mine) != 0) {
        cJSON_Delete(mine);
        return luaL_error(L, "ctx.merge: mine: %s", err);
    }
    if (!(theirs = policy_to_json(L, 3, 0, err, sizeof err)) ||
        policy_scratch_add(self, theirs) != 0) {
        cJSON_Delete(theirs);
        return luaL_error(L, "ctx.merge: theirs: %s", err);
    }
    cJSON *merged = ts_policy_default_merge(base, mine, theirs);
    if (!merged || policy_scratch_add(self, merged) != 0) {
        cJSON_Delete(merged);
        return luaL_error(L, "ctx.merge: documents must be objects");
    }
    policy_push_json(L, merged, 0);
    policy_scratch_clear(self);
    return 1;
}

int64_t policy_now_ms(const ts_policy_t *self)
{
    return self->fixed_now_ms ? self->fixed_now_ms : ts_wall_ms();
}

/* Pushes the metatable of ctx: its __index holds what is the same for every
 * call (config, log, merge, and find when for_validate), so a call only sets
 * what changes. Protected, so a policy cannot reach and change the shared
 * part. */
void policy_push_ctx_mt(lua_State *L, loaded_t *ld, bool for_validate)
{
    lua_createtable(L, 0, 2);
    lua_createtable(L, 0, 4);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld->config_ref);
    lua_setfield(L, -2, "config");
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld->log_ref);
    lua_setfield(L, -2, "log");
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld->merge_ref);
    lua_setfield(L, -2, "merge");
    if (for_validate) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ld->find_ref);
        lua_setfield(L, -2, "find");
    }
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
}

/* Pushes ctx for one call: now and collection of its own (a validation
 * adds previous), the rest through the shared metatable (building the whole table per call was a
 * tenth of a validated create's cost). */
void policy_push_ctx(lua_State *L, ts_policy_t *self, const char *collection, bool for_validate)
{
    loaded_t *ld = self->cur;
    int64_t now = policy_now_ms(self);
    if (now != self->now_ms) {
        self->now_ms = now;
        ts_rfc3339(now, self->now_text);
    }
    lua_createtable(L, 0, 3);
    lua_pushstring(L, self->now_text);
    lua_setfield(L, -2, "now");
    if (collection) {
        lua_pushstring(L, collection);
        lua_setfield(L, -2, "collection");
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld->ctx_mt_ref[for_validate]);
    lua_setmetatable(L, -2);
}
