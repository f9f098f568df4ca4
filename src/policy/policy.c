/* policy.c — loads validate.lua, selectors.lua and conflict.lua into a
 * sandbox and calls them with documents converted from and to cJSON.
 *
 * Every call into Lua goes through ts_sandbox_pcall with a C function that
 * does all the work (conversions included), so a memory error or the budget
 * kill anywhere unwinds to one place. C-side temporaries that a Lua error
 * could strand are parked in self->scratch and freed after each call. */
#include "policy/policy.h"

#include "luajson.h"
#include "sandbox.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 100
#define SCRATCH_MAX 8
#define KEY_CACHE 32 /* document keys remembered as Lua strings (s_push_doc) */
#define KEY_MAX 32

static const char *const s_files[] = {"validate.lua", "selectors.lua", "conflict.lua"};

typedef struct {
    ts_policy_selector_t pub;
    int where_ref; /* LUA_NOREF: matches everything */
    int from_ref;  /* LUA_NOREF: no start position */
} sel_t;

/* Everything that comes from one load of a directory; swapped whole on reload. */
typedef struct {
    ts_sandbox_t *sb;
    int validate_ref, selectors_ref, conflict_ref;
    int config_ref, log_ref, find_ref, merge_ref;
    int ctx_mt_ref[2];        /* metatables of ctx: [1] for validation (with find) */
    int proxy_mt_ref;         /* metatable of lazy document tables */
    int keys_ref;             /* Lua strings of the key_text names, same order */
    char key_text[KEY_CACHE][KEY_MAX]; /* top-level document keys seen (s_push_key) */
    uint8_t key_len[KEY_CACHE];
    int nkeys;
    sel_t *sels;
    size_t nsels;
    char *validated;          /* collections validate.lua has a rule for: "a\0b\0\0" */
    int64_t loaded_at_ms;
    char dir[PATH_MAX];
} loaded_t;

struct ts_policy {
    loaded_t *cur;            /* the policies in force */
    size_t mem_cap;
    long budget;
    cJSON *config;            /* copy of opts->clinic_config, or NULL */
    ts_policy_lookup_fn lookup;
    void *lookup_arg;
    ts_policy_find_fn find;
    const ts_policy_doc_t *doc; /* the candidate of a scan, or NULL */
    const void *doc_table;    /* its lazy table (by identity: see s_proxy_doc) */
    lua_Integer doc_serial;   /* last serial given to ctx.find's lazy documents */
    ts_policy_doc_t *found;   /* ctx.find matches of the running validation */
    size_t nfound, found_cap;
    lua_Integer found_base;   /* serial of found[0]; found[i] has found_base + i */
    int64_t now_ms;           /* ctx.now as text, formatted once per millisecond */
    char now_text[32];
    char name[32];            /* owner, for logs */
    int64_t fixed_now_ms;     /* 0: real clock */
    unsigned generation;      /* bumped by every successful reload */
    cJSON *scratch[SCRATCH_MAX];
    char label[128];          /* policy being run, for log() and errors */
    const cJSON *call_docs[3];/* the documents handed to the running call (for ctx.log) */
    const ts_policy_doc_t *call_text_docs[2]; /* those handed as text, if so */
};

struct ts_policy_query {
    ts_policy_t *self;
    unsigned generation;
    const sel_t *sel;
    int params_ref;
};

/* ---- scratch: C allocations a Lua error could strand ---- */

static int policy_scratch_add(ts_policy_t *self, cJSON *item)
{
    for (int i = 0; i < SCRATCH_MAX; i++)
        if (!self->scratch[i]) {
            self->scratch[i] = item;
            return 0;
        }
    return -1;
}

static void policy_scratch_clear(ts_policy_t *self)
{
    for (int i = 0; i < SCRATCH_MAX; i++) {
        cJSON_Delete(self->scratch[i]);
        self->scratch[i] = NULL;
    }
}

/* ---- cJSON <-> Lua ---- */

/* Pushes item as a Lua value (objects and arrays as fresh tables; null as
 * nil, so null fields read as absent). Raises on memory or depth. */
static void policy_push_json(lua_State *L, const cJSON *item, int depth)
{
    if (depth > MAX_DEPTH)
        luaL_error(L, "document nested too deeply");
    luaL_checkstack(L, 4, "document nested too deeply");
    if (cJSON_IsObject(item)) {
        /* lua_pushlstring + lua_rawset rather than lua_setfield / lua_pushstring:
         * the API's string cache is keyed by the C pointer, which is new for
         * every document, so it only costs a miss here. */
        lua_createtable(L, 0, cJSON_GetArraySize(item));
        for (const cJSON *c = item->child; c; c = c->next) {
            if (cJSON_IsNull(c) || !c->string)
                continue;
            lua_pushlstring(L, c->string, strlen(c->string));
            policy_push_json(L, c, depth + 1);
            lua_rawset(L, -3);
        }
    } else if (cJSON_IsArray(item)) {
        lua_createtable(L, cJSON_GetArraySize(item), 0);
        lua_Integer i = 1;
        for (const cJSON *c = item->child; c; c = c->next, i++) {
            if (cJSON_IsNull(c))
                continue;
            policy_push_json(L, c, depth + 1);
            lua_rawseti(L, -2, i);
        }
    } else if (cJSON_IsString(item)) {
        lua_pushlstring(L, item->valuestring, strlen(item->valuestring));
    } else if (cJSON_IsNumber(item)) {
        double d = item->valuedouble;
        if (d == floor(d) && d >= -9.2e18 && d <= 9.2e18)
            lua_pushinteger(L, (lua_Integer)d);
        else
            lua_pushnumber(L, d);
    } else if (cJSON_IsBool(item)) {
        lua_pushboolean(L, cJSON_IsTrue(item));
    } else {
        lua_pushnil(L);
    }
}

/* Pushes the i-th top-level key of a document from a cache of Lua strings
 * (keys is the stack index of the cache's table), adding it when there is
 * room: documents of a collection share their keys, and interning each key
 * again cost a tenth of a validation. */
static void s_push_key(lua_State *L, loaded_t *ld, int keys, int i, const char *key, size_t len)
{
    int k = i < ld->nkeys && ld->key_len[i] == len && memcmp(ld->key_text[i], key, len) == 0
                ? i
                : -1;
    for (int j = 0; k < 0 && j < ld->nkeys; j++)
        if (ld->key_len[j] == len && memcmp(ld->key_text[j], key, len) == 0)
            k = j;
    if (k < 0 && ld->nkeys < KEY_CACHE && len < KEY_MAX) {
        k = ld->nkeys;
        lua_pushlstring(L, key, len);
        lua_rawseti(L, keys, k + 1);
        memcpy(ld->key_text[k], key, len);
        ld->key_len[k] = (uint8_t)len;
        ld->nkeys++;
    }
    if (k >= 0)
        lua_rawgeti(L, keys, k + 1);
    else
        lua_pushlstring(L, key, len);
}

/* Pushes a document (a cJSON object) like policy_push_json, its top-level keys
 * from the cache (s_push_key). */
static void s_push_doc(lua_State *L, loaded_t *ld, const cJSON *doc)
{
    if (!cJSON_IsObject(doc) || ld->keys_ref == LUA_NOREF) {
        policy_push_json(L, doc, 0);
        return;
    }
    luaL_checkstack(L, 6, "document");
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld->keys_ref);
    int keys = lua_gettop(L);
    lua_createtable(L, 0, cJSON_GetArraySize(doc));
    int i = 0;
    for (const cJSON *c = doc->child; c; c = c->next, i++) {
        if (cJSON_IsNull(c) || !c->string)
            continue;
        s_push_key(L, ld, keys, i, c->string, strlen(c->string));
        policy_push_json(L, c, 1);
        lua_rawset(L, -3);
    }
    lua_remove(L, keys);
}

/* Converts the Lua value at idx into new cJSON. Never raises: returns NULL
 * with err set on a value JSON cannot hold (functions, cycles, non-string
 * keys, NaN) or when memory ran out. Raw access only: no metamethods run. */
static cJSON *policy_to_json(lua_State *L, int idx, int depth, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    if (depth > MAX_DEPTH) {
        snprintf(err, errlen, "table nested too deeply (or cyclic)");
        return NULL;
    }
    if (!lua_checkstack(L, 4)) {
        snprintf(err, errlen, "table nested too deeply");
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return cJSON_CreateNull();
    case LUA_TBOOLEAN:
        return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return cJSON_CreateNumber((double)lua_tointeger(L, idx));
        if (!isfinite(lua_tonumber(L, idx))) {
            snprintf(err, errlen, "number is not finite");
            return NULL;
        }
        return cJSON_CreateNumber(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (strlen(s) != len) {
            snprintf(err, errlen, "string contains a NUL byte");
            return NULL;
        }
        cJSON *out = cJSON_CreateString(s);
        if (!out)
            snprintf(err, errlen, "out of memory");
        return out;
    }
    case LUA_TTABLE:
        break;
    default:
        snprintf(err, errlen, "a %s cannot be converted to JSON", luaL_typename(L, idx));
        return NULL;
    }
    /* Array when the keys are exactly 1..n with n > 0; else an object with
     * string keys. An empty table is an empty object. */
    size_t n = lua_rawlen(L, idx), count = 0;
    bool all_int = true, all_str = true;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            all_int = false;
        } else {
            all_str = false;
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
                (size_t)lua_tointeger(L, -1) > n)
                all_int = false;
        }
    }
    bool is_array = n > 0 && all_int && count == n;
    if (!is_array && !all_str) {
        snprintf(err, errlen, "table mixes array and object keys (or has non-string keys)");
        return NULL;
    }
    cJSON *out = is_array ? cJSON_CreateArray() : cJSON_CreateObject();
    if (!out) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (is_array) {
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (lua_Integer)i);
            cJSON *v = policy_to_json(L, -1, depth + 1, err, errlen);
            lua_pop(L, 1);
            if (!v || !cJSON_AddItemToArray(out, v)) {
                cJSON_Delete(v);
                cJSON_Delete(out);
                return NULL;
            }
        }
        return out;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        cJSON *v = policy_to_json(L, -1, depth + 1, err, errlen);
        lua_pop(L, 1);
        if (!v || !cJSON_AddItemToObject(out, lua_tostring(L, -1), v)) {
            cJSON_Delete(v);
            cJSON_Delete(out);
            lua_pop(L, 1);
            return NULL;
        }
    }
    return out;
}

/* Replaces every nested table of the table at idx by a read-only proxy, then
 * pushes a read-only proxy of the table itself. */
void ts_lua_push_json(lua_State *L, const cJSON *item) { policy_push_json(L, item, 0); }

cJSON *ts_lua_to_json(lua_State *L, int idx, char *err, size_t errlen)
{
    return policy_to_json(L, idx, 0, err, errlen);
}

static void s_push_frozen(lua_State *L, int idx, int depth)
{
    idx = lua_absindex(L, idx);
    if (depth > MAX_DEPTH)
        luaL_error(L, "config nested too deeply");
    luaL_checkstack(L, 6, "config nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_istable(L, -1)) {
            s_push_frozen(L, -1, depth + 1);
            lua_pushvalue(L, -3);
            lua_insert(L, -2);
            lua_rawset(L, idx); /* replacing an existing field is allowed during next */
        }
        lua_pop(L, 1);
    }
    ts_sandbox_push_readonly(L, idx);
}

static void policy_push_proxy(lua_State *L, ts_policy_t *self, lua_Integer serial);

/* ---- functions offered in ctx ---- */

static ts_policy_t *policy_self_upvalue(lua_State *L)
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
static int policy_ctx_log(lua_State *L)
{
    ts_policy_t *self = policy_self_upvalue(L);
    if (!ts_log_enabled(TS_LOG_DEBUG))
        return 0;
    size_t len;
    const char *msg = luaL_tolstring(L, 1, &len);
    ts_buf_t b = {0};
    if (ts_buf_append(&b, msg, len) == 0) {
        for (int i = 0; i < 3; i++)
            s_redact_values(&b, self->call_docs[i], false);
        for (size_t i = 0; i < self->nfound; i++)
            s_redact_text(&b, &self->found[i]);
        s_redact_text(&b, self->doc);
        for (int i = 0; i < 2; i++)
            s_redact_text(&b, self->call_text_docs[i]);
    }
    ts_debug("policy", "%s %s: %.*s", self->name, self->label, (int)b.len,
             b.data ? b.data : "[out of memory]");
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
static int policy_ctx_find(lua_State *L)
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
static int policy_ctx_merge(lua_State *L)
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

static int64_t policy_now_ms(const ts_policy_t *self)
{
    return self->fixed_now_ms ? self->fixed_now_ms : ts_wall_ms();
}

/* Pushes the metatable of ctx: its __index holds what is the same for every
 * call (config, log, merge, and find when for_validate), so a call only sets
 * what changes. Protected, so a policy cannot reach and change the shared
 * part. */
static void policy_push_ctx_mt(lua_State *L, loaded_t *ld, bool for_validate)
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
static void policy_push_ctx(lua_State *L, ts_policy_t *self, const char *collection,
                            bool for_validate)
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

/* ---- lazy documents: a table that reads fields out of the text ----
 *
 * A candidate of a scan is shown to where() as an empty table with a
 * protected metatable: __index extracts the one top-level field asked for
 * from the document's JSON text and caches it in the table, so a rule that
 * reads two fields costs two small scans, not a whole conversion. The
 * candidate's table is known by its identity (self->doc_table); once the
 * scan moved on, reading it is an error (the text it points to may be gone).
 * ctx.find's matches from the store are the same tables, each holding a
 * serial: self->found holds them for the validation call, found[i] with
 * serial found_base + i. */

static char s_proxy_key; /* its address keys the serial inside the table */

static const ts_policy_doc_t *s_proxy_doc(lua_State *L, ts_policy_t *self)
{
    /* The scan's candidate is its table: while a stale one is still
     * reachable (kept by a rule) no new table can have its address. */
    if (self->doc && lua_topointer(L, 1) == self->doc_table)
        return self->doc;
    lua_rawgetp(L, 1, &s_proxy_key);
    lua_Integer serial = lua_tointeger(L, -1); /* 0: none (a scan's candidate) */
    lua_pop(L, 1);
    if (self->nfound && serial >= self->found_base &&
        (lua_Unsigned)(serial - self->found_base) < self->nfound)
        return &self->found[serial - self->found_base];
    luaL_error(L, "a document is only valid during the call it was given to");
    return NULL;
}

/* Pushes the JSON value text v[0..n) as a Lua value. */
static void s_push_value_text(lua_State *L, ts_policy_t *self, const char *v, size_t n)
{
    if (n >= 2 && v[0] == '"' && !memchr(v, '\\', n)) {
        lua_pushlstring(L, v + 1, n - 2);
        return;
    }
    if (n == 4 && memcmp(v, "true", 4) == 0) {
        lua_pushboolean(L, 1);
        return;
    }
    if (n == 5 && memcmp(v, "false", 5) == 0) {
        lua_pushboolean(L, 0);
        return;
    }
    if (n == 4 && memcmp(v, "null", 4) == 0) {
        lua_pushnil(L);
        return;
    }
    size_t digits = v[0] == '-';
    while (digits < n && v[digits] >= '0' && v[digits] <= '9')
        digits++;
    if (digits == n && n - (v[0] == '-') - 1 < 18) { /* a plain integer: most numbers */
        lua_Integer i = 0;
        for (size_t k = v[0] == '-'; k < n; k++)
            i = i * 10 + (v[k] - '0');
        lua_pushinteger(L, v[0] == '-' ? -i : i);
        return;
    }
    if (n > 0 && n < 64 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))) {
        char num[64];
        memcpy(num, v, n);
        num[n] = '\0';
        char *end;
        double d = strtod(num, &end);
        if (d == floor(d) && d >= -9.2e18 && d <= 9.2e18)
            lua_pushinteger(L, (lua_Integer)d);
        else
            lua_pushnumber(L, d);
        return;
    }
    /* escaped strings, objects, arrays: parse just this value */
    cJSON *item = cJSON_ParseWithLength(v, n);
    if (!item || policy_scratch_add(self, item) != 0) {
        cJSON_Delete(item);
        luaL_error(L, "document field is not valid JSON (or out of memory)");
    }
    policy_push_json(L, item, 0);
}

/* Pushes a document kept as text (the store's form: its id apart) as a
 * table, the same table s_push_doc makes of the document as cJSON: every
 * field converted now, read straight from the text. */
static void s_push_doc_text(lua_State *L, ts_policy_t *self, const ts_policy_doc_t *d)
{
    loaded_t *ld = self->cur;
    luaL_checkstack(L, 6, "document");
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld->keys_ref);
    int keys = lua_gettop(L);
    lua_createtable(L, 0, 12);
    lua_pushliteral(L, "id");
    lua_pushlstring(L, d->id, d->id_len);
    lua_rawset(L, -3);
    ts_json_member_t m;
    size_t pos = 0;
    for (int i = 1; ts_json_text_member(d->text, d->len, &pos, &m); i++) {
        if (m.escaped) { /* a key written with escapes: as cJSON reads it */
            s_push_value_text(L, self, m.key - 1, m.key_len + 2);
        } else {
            s_push_key(L, ld, keys, i, m.key, m.key_len);
        }
        s_push_value_text(L, self, m.value, m.value_len);
        lua_rawset(L, -3);
    }
    lua_remove(L, keys);
}

/* A document handed to a call, as text when given so, else as cJSON. */
static void policy_push_call_doc(lua_State *L, ts_policy_t *self, const cJSON *doc,
                                 const ts_policy_doc_t *text)
{
    if (text)
        s_push_doc_text(L, self, text);
    else
        s_push_doc(L, self->cur, doc);
}

static int s_proxy_index(lua_State *L)
{
    ts_policy_t *self = policy_self_upvalue(L);
    const ts_policy_doc_t *d = s_proxy_doc(L, self);
    if (lua_type(L, 2) != LUA_TSTRING)
        return 0;
    size_t klen;
    const char *key = lua_tolstring(L, 2, &klen);
    const char *v;
    size_t n;
    if (klen == 2 && memcmp(key, "id", 2) == 0)
        lua_pushlstring(L, d->id, d->id_len);
    else if (ts_json_text_field(d->text, d->len, key, klen, &v, &n))
        s_push_value_text(L, self, v, n);
    else
        return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1); /* cache it */
    return 1;
}

/* pairs(doc): iterates a full copy of the document. */
static int s_proxy_pairs(lua_State *L)
{
    ts_policy_t *self = policy_self_upvalue(L);
    const ts_policy_doc_t *d = s_proxy_doc(L, self);
    cJSON *doc = cJSON_ParseWithLength(d->text, d->len);
    if (!doc || policy_scratch_add(self, doc) != 0) {
        cJSON_Delete(doc);
        return luaL_error(L, "document is not valid JSON (or out of memory)");
    }
    lua_pushcfunction(L, ts_sandbox_raw_next);
    policy_push_json(L, doc, 0);
    lua_pushlstring(L, d->id, d->id_len);
    lua_setfield(L, -2, "id");
    lua_pushnil(L);
    return 3;
}

static void policy_push_proxy_mt(lua_State *L, ts_policy_t *self)
{
    lua_createtable(L, 0, 3);
    lua_pushlightuserdata(L, self);
    lua_pushcclosure(L, s_proxy_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushlightuserdata(L, self);
    lua_pushcclosure(L, s_proxy_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
}

/* Pushes a lazy table: for one of self->found (its serial), or for the
 * scan's candidate (serial 0; the caller records the table's identity). */
static void policy_push_proxy(lua_State *L, ts_policy_t *self, lua_Integer serial)
{
    lua_createtable(L, 0, 4);
    if (serial) {
        lua_pushinteger(L, serial);
        lua_rawsetp(L, -2, &s_proxy_key);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->cur->proxy_mt_ref);
    lua_setmetatable(L, -2);
}

/* ---- loading ---- */

static void s_loaded_free(loaded_t **ld_p)
{
    if (!ld_p || !*ld_p)
        return;
    loaded_t *ld = *ld_p;
    for (size_t i = 0; i < ld->nsels; i++) {
        free((char *)ld->sels[i].pub.name);
        free((char *)ld->sels[i].pub.collection);
        free((char *)ld->sels[i].pub.order_field);
        free((char *)ld->sels[i].pub.index_field);
    }
    free(ld->sels);
    free(ld->validated);
    ts_sandbox_destroy(&ld->sb);
    free(ld);
    *ld_p = NULL;
}

typedef struct {
    ts_policy_t *self;
    loaded_t *ld;
} load_call_t;

/* Checks that the table on top maps string keys to functions. */
static void s_check_fn_table(lua_State *L, const char *file)
{
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: keys of the returned table must be collection names", file);
        if (!lua_isfunction(L, -1))
            luaL_error(L, "%s: entry '%s' must be a function, got %s", file, lua_tostring(L, -2),
                       luaL_typename(L, -1));
        lua_pop(L, 1);
    }
}

/* Notes the keys of validate.lua's table (on top): ts_policy_has_validator
 * answers from them without entering Lua. */
static void s_note_validators(lua_State *L, loaded_t *ld)
{
    int t = lua_gettop(L);
    size_t total = 1;
    for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1))
        total += lua_rawlen(L, -2) + 1;
    if (!(ld->validated = malloc(total)))
        luaL_error(L, "out of memory");
    char *p = ld->validated;
    for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) {
        size_t n;
        const char *name = lua_tolstring(L, -2, &n); /* a string: s_check_fn_table */
        if (n == 0 || strlen(name) != n)
            continue; /* no collection is called that (config: 1-64 of [a-z0-9_]) */
        memcpy(p, name, n + 1);
        p += n + 1;
    }
    *p = '\0';
}

static char *s_strdup_or_raise(lua_State *L, const char *s)
{
    char *out = strdup(s);
    if (!out)
        luaL_error(L, "out of memory");
    return out;
}

static int s_sel_cmp(const void *a, const void *b)
{
    return strcmp(((const sel_t *)a)->pub.name, ((const sel_t *)b)->pub.name);
}

static void policy_check_selectors(lua_State *L, loaded_t *ld)
{
    const char *file = "selectors.lua";
    int t = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        n++;
        lua_pop(L, 1);
    }
    ld->sels = calloc(n ? n : 1, sizeof *ld->sels);
    if (!ld->sels)
        luaL_error(L, "out of memory");
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
        s->pub.name = s_strdup_or_raise(L, name);
        if (lua_getfield(L, v, "collection") != LUA_TSTRING)
            luaL_error(L, "%s: selector '%s': collection must be a string", file, name);
        s->pub.collection = s_strdup_or_raise(L, lua_tostring(L, -1));
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
            s->pub.order_field = s_strdup_or_raise(L, lua_tostring(L, -1));
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
            s->pub.index_field = s_strdup_or_raise(L, lua_tostring(L, -1));
        else if (it != LUA_TNIL)
            luaL_error(L, "%s: selector '%s': index must be a field name", file, name);
        lua_pop(L, 1);
        lua_settop(L, v - 1);
    }
    qsort(ld->sels, ld->nsels, sizeof *ld->sels, s_sel_cmp);
}

static int s_load_call(lua_State *L)
{
    load_call_t *c = lua_touserdata(L, 1);
    ts_policy_t *self = c->self;
    loaded_t *ld = c->ld;
    ts_sandbox_t *sb = ld->sb;

    if (self->config) {
        policy_push_json(L, self->config, 0);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
        }
    } else {
        lua_newtable(L);
    }
    s_push_frozen(L, -1, 0);
    ld->config_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    lua_pushlightuserdata(L, self);
    lua_pushcclosure(L, policy_ctx_log, 1);
    ld->log_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, self);
    lua_pushcclosure(L, policy_ctx_find, 1);
    ld->find_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, self);
    lua_pushcclosure(L, policy_ctx_merge, 1);
    ld->merge_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (int v = 0; v < 2; v++) {
        policy_push_ctx_mt(L, ld, v);
        ld->ctx_mt_ref[v] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    policy_push_proxy_mt(L, self);
    ld->proxy_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_createtable(L, KEY_CACHE, 0);
    ld->keys_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    int *refs[] = {&ld->validate_ref, &ld->selectors_ref, &ld->conflict_ref};
    for (int i = 0; i < 3; i++) {
        ts_sandbox_set_label(sb, s_files[i]);
        ts_sandbox_run_file(L, s_files[i]);
        if (!lua_istable(L, -1))
            luaL_error(L, "%s: must return a table, got %s", s_files[i], luaL_typename(L, -1));
        if (i == 1)
            policy_check_selectors(L, ld);
        else
            s_check_fn_table(L, s_files[i]);
        if (i == 0)
            s_note_validators(L, ld);
        *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

static loaded_t *s_load_dir(ts_policy_t *self, const char *dir, char *err, size_t errlen)
{
    loaded_t *ld = calloc(1, sizeof *ld);
    if (!ld) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ld->keys_ref = LUA_NOREF;
    size_t dlen = strlen(dir);
    if (dlen >= sizeof ld->dir) {
        snprintf(err, errlen, "policies directory path too long");
        free(ld);
        return NULL;
    }
    memcpy(ld->dir, dir, dlen + 1);
    ld->sb = ts_sandbox_new(dir, self->mem_cap, self->budget, err, errlen);
    if (!ld->sb) {
        free(ld);
        return NULL;
    }
    /* The ctx functions reach the engine through self; they look at
     * self->cur, so point it at the new load while loading. */
    loaded_t *prev = self->cur;
    self->cur = ld;
    load_call_t c = {self, ld};
    int rc = ts_sandbox_pcall(ld->sb, s_load_call, &c, err, errlen);
    self->cur = prev;
    policy_scratch_clear(self);
    if (rc != 0) {
        s_loaded_free(&ld);
        return NULL;
    }
    ts_sandbox_set_label(ld->sb, self->label);
    ld->loaded_at_ms = ts_wall_ms();
    return ld;
}

ts_policy_t *ts_policy_new(const char *dir, const ts_policy_opts_t *opts, char *err,
                           size_t errlen)
{
    ts_policy_opts_t none = {0};
    if (!opts)
        opts = &none;
    if (!dir || !*dir) {
        snprintf(err, errlen, "no policies directory");
        return NULL;
    }
    ts_policy_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->mem_cap = opts->mem_cap_bytes;
    self->budget = opts->instr_budget;
    self->lookup = opts->lookup;
    self->lookup_arg = opts->lookup_arg;
    self->find = opts->find;
    snprintf(self->name, sizeof self->name, "%s", opts->name ? opts->name : "policy");
    snprintf(self->label, sizeof self->label, "policy");
    if (opts->clinic_config && !(self->config = cJSON_Duplicate(opts->clinic_config, true))) {
        snprintf(err, errlen, "out of memory");
        free(self);
        return NULL;
    }
    self->cur = s_load_dir(self, dir, err, errlen);
    if (!self->cur) {
        cJSON_Delete(self->config);
        free(self);
        return NULL;
    }
    ts_info("policy", "%s: policies loaded from %s (%zu selectors)", self->name, dir,
            self->cur->nsels);
    return self;
}

void ts_policy_destroy(ts_policy_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ts_policy_t *self = *self_p;
    s_loaded_free(&self->cur);
    policy_scratch_clear(self);
    cJSON_Delete(self->config);
    free(self->found);
    free(self);
    *self_p = NULL;
}

int ts_policy_reload(ts_policy_t *self, const char *dir, char *err, size_t errlen)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", dir ? dir : self->cur->dir);
    loaded_t *ld = s_load_dir(self, copy, err, errlen);
    if (!ld) {
        ts_warn("policy", "%s: reload of %s refused, old policies stay: %s", self->name, copy,
                err);
        return -1;
    }
    s_loaded_free(&self->cur);
    self->cur = ld;
    self->generation++;
    ts_info("policy", "%s: policies reloaded from %s", self->name, copy);
    return 0;
}

cJSON *ts_policy_info(const ts_policy_t *self)
{
    const loaded_t *ld = self->cur;
    cJSON *info = cJSON_CreateObject();
    char at[32];
    ts_rfc3339(ld->loaded_at_ms, at);
    cJSON *files = cJSON_AddArrayToObject(info, "files");
    for (int i = 0; i < 3; i++)
        cJSON_AddItemToArray(files, cJSON_CreateString(s_files[i]));
    cJSON *sels = cJSON_AddArrayToObject(info, "selectors");
    for (size_t i = 0; i < ld->nsels; i++)
        cJSON_AddItemToArray(sels, cJSON_CreateString(ld->sels[i].pub.name));
    cJSON_AddStringToObject(info, "dir", ld->dir);
    cJSON_AddStringToObject(info, "loaded_at", at);
    cJSON_AddNumberToObject(info, "mem_used", (double)ts_sandbox_mem_used(ld->sb));
    cJSON_AddNumberToObject(info, "mem_cap", (double)ts_sandbox_mem_cap(ld->sb));
    cJSON_AddNumberToObject(info, "instr_budget",
                            (double)(self->budget > 0 ? self->budget : TS_SANDBOX_DEFAULT_BUDGET));
    /* Collections with a validator / conflict policy: read the tables raw. */
    lua_State *L = ts_sandbox_state(ld->sb);
    const char *keys[] = {"validate", "conflict"};
    int refs[] = {ld->validate_ref, ld->conflict_ref};
    cJSON *colls = cJSON_AddObjectToObject(info, "collections");
    for (int i = 0; i < 2 && colls; i++) {
        cJSON *arr = cJSON_AddArrayToObject(colls, keys[i]);
        if (!lua_checkstack(L, 4))
            break;
        lua_rawgeti(L, LUA_REGISTRYINDEX, refs[i]);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING)
                cJSON_AddItemToArray(arr, cJSON_CreateString(lua_tostring(L, -1)));
        }
        lua_pop(L, 1);
    }
    if (!info || !files || !sels || !colls) {
        cJSON_Delete(info);
        return NULL;
    }
    return info;
}

void ts_policy_set_now(ts_policy_t *self, int64_t wall_ms) { self->fixed_now_ms = wall_ms; }

static void policy_set_label(ts_policy_t *self, const char *kind, const char *what)
{
    size_t k = strlen(kind);
    /* Mostly the same label as the last call: skip snprintf then. */
    if (strncmp(self->label, kind, k) != 0 || self->label[k] != '.' ||
        strcmp(self->label + k + 1, what) != 0)
        snprintf(self->label, sizeof self->label, "%s.%s", kind, what);
    ts_sandbox_set_label(self->cur->sb, self->label);
}

/* ---- validation ---- */

typedef struct {
    ts_policy_t *self;
    const char *collection;
    const cJSON *doc, *previous;
    const ts_policy_doc_t *text_doc, *previous_text; /* instead of doc, previous */
    int result;
    cJSON *errors;
} validate_call_t;

static int s_validate_call(lua_State *L)
{
    validate_call_t *c = lua_touserdata(L, 1);
    ts_policy_t *self = c->self;
    const char *lbl = self->label;
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->cur->validate_ref);
    if (lua_getfield(L, -1, c->collection) == LUA_TNIL) {
        c->result = TS_POLICY_OK;
        return 0;
    }
    if (!lua_isfunction(L, -1))
        return luaL_error(L, "%s is not a function", lbl);
    policy_push_call_doc(L, self, c->doc, c->text_doc);
    policy_push_ctx(L, self, c->collection, true);
    if (c->previous || c->previous_text) {
        policy_push_call_doc(L, self, c->previous, c->previous_text);
        lua_setfield(L, -2, "previous");
    }
    lua_call(L, 2, 2);
    int t1 = lua_type(L, -2), t2 = lua_type(L, -1);
    if (t1 == LUA_TBOOLEAN && lua_toboolean(L, -2) && t2 == LUA_TNIL) {
        c->result = TS_POLICY_OK;
        return 0;
    }
    if (t1 != LUA_TBOOLEAN || lua_toboolean(L, -2) || t2 != LUA_TTABLE)
        return luaL_error(L,
                          "%s must return true, or false and a list of {field=, message=} "
                          "(got %s, %s)",
                          lbl, lua_typename(L, t1), lua_typename(L, t2));
    int list = lua_gettop(L);
    size_t n = lua_rawlen(L, list);
    if (n == 0)
        return luaL_error(L, "%s returned false with an empty list of errors", lbl);
    if (!(c->errors = cJSON_CreateArray()))
        return luaL_error(L, "out of memory");
    for (size_t i = 1; i <= n; i++) {
        if (lua_rawgeti(L, list, (lua_Integer)i) != LUA_TTABLE)
            return luaL_error(L, "%s: error %d must be a table {field=, message=}", lbl, (int)i);
        lua_pushliteral(L, "field");
        int ft = lua_rawget(L, -2);
        lua_pushliteral(L, "message");
        int mt = lua_rawget(L, -3);
        if ((ft != LUA_TSTRING && ft != LUA_TNIL) || mt != LUA_TSTRING)
            return luaL_error(L, "%s: error %d needs field (string) and message (string)", lbl,
                              (int)i);
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(c->errors, e) ||
            !cJSON_AddStringToObject(e, "field", ft == LUA_TSTRING ? lua_tostring(L, -2) : "") ||
            !cJSON_AddStringToObject(e, "message", lua_tostring(L, -1)))
            return luaL_error(L, "out of memory");
        lua_pop(L, 3);
    }
    c->result = TS_POLICY_INVALID;
    return 0;
}

/* Runs one validation call c (its result and errors still to be filled). */
static int s_validate(validate_call_t c, cJSON **errors, char *err, size_t errlen)
{
    ts_policy_t *self = c.self;
    if (errors)
        *errors = NULL;
    policy_set_label(self, "validate", c.collection);
    self->nfound = 0;
    self->found_base = self->doc_serial + 1;
    self->call_docs[0] = c.doc, self->call_docs[1] = c.previous;
    self->call_text_docs[0] = c.text_doc, self->call_text_docs[1] = c.previous_text;
    int rc = ts_sandbox_pcall(self->cur->sb, s_validate_call, &c, err, errlen);
    memset(self->call_docs, 0, sizeof self->call_docs);
    memset(self->call_text_docs, 0, sizeof self->call_text_docs);
    policy_scratch_clear(self);
    /* ctx.find's lazy documents kept by a policy go stale */
    self->doc_serial = self->found_base + (lua_Integer)self->nfound;
    self->nfound = 0;
    if (rc != 0) {
        cJSON_Delete(c.errors);
        ts_debug("policy", "%s %s: %s", self->name, self->label, err);
        return TS_POLICY_ERROR;
    }
    if (c.result == TS_POLICY_INVALID) {
        if (errors)
            *errors = c.errors;
        else
            cJSON_Delete(c.errors);
    }
    return c.result;
}

int ts_policy_validate(ts_policy_t *self, const char *collection, const cJSON *doc,
                       const cJSON *previous, cJSON **errors, char *err, size_t errlen)
{
    if (!collection || !cJSON_IsObject(doc)) {
        if (errors)
            *errors = NULL;
        snprintf(err, errlen, "validate: document must be an object");
        return TS_POLICY_ERROR;
    }
    validate_call_t c = {self, collection, doc, previous, NULL, NULL, TS_POLICY_ERROR, NULL};
    return s_validate(c, errors, err, errlen);
}

bool ts_policy_has_validator(ts_policy_t *self, const char *collection)
{
    for (const char *name = self->cur->validated; name && *name; name += strlen(name) + 1)
        if (strcmp(name, collection) == 0)
            return true;
    return false;
}

int ts_policy_validate_text(ts_policy_t *self, const char *collection,
                            const ts_policy_doc_t *doc, const ts_policy_doc_t *previous,
                            cJSON **errors, char *err, size_t errlen)
{
    validate_call_t c = {self, collection, NULL, NULL, doc, previous, TS_POLICY_ERROR, NULL};
    return s_validate(c, errors, err, errlen);
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

static int s_prepare_call(lua_State *L)
{
    prepare_call_t *c = lua_touserdata(L, 1);
    if (c->params)
        policy_push_json(L, c->params, 0);
    else
        lua_newtable(L);
    if (lua_getfield(L, -1, "now") == LUA_TNIL) {
        char now[32];
        ts_rfc3339(policy_now_ms(c->self), now);
        lua_pushstring(L, now);
        lua_setfield(L, -3, "now");
    }
    lua_pop(L, 1);
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
    ts_policy_query_t *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
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

static int s_match_call(lua_State *L)
{
    match_call_t *c = lua_touserdata(L, 1);
    ts_policy_t *self = c->q->self;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->q->sel->where_ref);
    policy_push_json(L, c->doc, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->q->params_ref);
    policy_push_ctx(L, self, c->q->sel->pub.collection, false);
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
    policy_push_ctx(L, self, c->q->sel->pub.collection, false);
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
    if (!c->from)
        return luaL_error(L, "out of memory");
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
        policy_push_ctx(L, self, c->q->sel->pub.collection, false); /* 4 */
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

/* ---- conflicts ---- */

const char *ts_policy_outcome_name(ts_policy_outcome_kind_t kind)
{
    static const char *const names[] = {"theirs", "mine", "merge", "reject"};
    return kind < TS_OUTCOME_LAST ? names[kind] : "?";
}

void ts_policy_outcome_clear(ts_policy_outcome_t *outcome)
{
    if (!outcome)
        return;
    cJSON_Delete(outcome->doc);
    memset(outcome, 0, sizeof *outcome);
}

typedef struct {
    ts_policy_t *self;
    const char *collection;
    const cJSON *base, *mine, *theirs;
    bool no_policy;
    ts_policy_outcome_t *out;
} resolve_call_t;

static int s_resolve_call(lua_State *L)
{
    resolve_call_t *c = lua_touserdata(L, 1);
    ts_policy_t *self = c->self;
    const char *lbl = self->label;
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->cur->conflict_ref);
    if (lua_getfield(L, -1, c->collection) == LUA_TNIL) {
        c->no_policy = true;
        return 0;
    }
    if (c->base)
        policy_push_json(L, c->base, 0);
    else
        lua_pushnil(L);
    policy_push_json(L, c->mine, 0);
    policy_push_json(L, c->theirs, 0);
    policy_push_ctx(L, self, c->collection, false);
    lua_call(L, 4, 1);
    const char *bad = "%s must return \"theirs\", \"mine\", {merge = doc} or {reject = reason}";
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        if (strcmp(s, "theirs") == 0)
            c->out->kind = TS_OUTCOME_THEIRS;
        else if (strcmp(s, "mine") == 0)
            c->out->kind = TS_OUTCOME_MINE;
        else
            return luaL_error(L, bad, lbl);
        return 0;
    }
    if (!lua_istable(L, -1))
        return luaL_error(L, bad, lbl);
    int r = lua_gettop(L);
    lua_pushliteral(L, "merge");
    int mt = lua_rawget(L, r);
    lua_pushliteral(L, "reject");
    int rt = lua_rawget(L, r);
    if (mt == LUA_TTABLE && rt == LUA_TNIL) {
        char err[200];
        cJSON *doc = policy_to_json(L, -2, 0, err, sizeof err);
        if (!doc)
            return luaL_error(L, "%s: merged document: %s", lbl, err);
        if (!cJSON_IsObject(doc)) {
            cJSON_Delete(doc);
            return luaL_error(L, "%s: merged document must be an object", lbl);
        }
        c->out->kind = TS_OUTCOME_MERGE;
        c->out->doc = doc;
        return 0;
    }
    if (rt == LUA_TSTRING && mt == LUA_TNIL) {
        c->out->kind = TS_OUTCOME_REJECT;
        snprintf(c->out->reason, sizeof c->out->reason, "%s", lua_tostring(L, -1));
        return 0;
    }
    return luaL_error(L, bad, lbl);
}

static int s_default_outcome(const cJSON *base, const cJSON *mine, const cJSON *theirs,
                             ts_policy_outcome_t *out)
{
    out->kind = TS_OUTCOME_MERGE;
    snprintf(out->policy, sizeof out->policy, "default");
    out->doc = ts_policy_default_merge(base, mine, theirs);
    return out->doc ? 0 : -1;
}

int ts_policy_resolve(ts_policy_t *self, const char *collection, const cJSON *base,
                      const cJSON *mine, const cJSON *theirs, ts_policy_outcome_t *outcome,
                      char *err, size_t errlen)
{
    memset(outcome, 0, sizeof *outcome);
    if (!collection || !cJSON_IsObject(mine) || !cJSON_IsObject(theirs) ||
        (base && !cJSON_IsObject(base))) {
        snprintf(err, errlen, "resolve: documents must be objects");
        return TS_POLICY_ERROR;
    }
    policy_set_label(self, "conflict", collection);
    resolve_call_t c = {self, collection, base, mine, theirs, false, outcome};
    self->call_docs[0] = base, self->call_docs[1] = mine, self->call_docs[2] = theirs;
    int rc = ts_sandbox_pcall(self->cur->sb, s_resolve_call, &c, err, errlen);
    memset(self->call_docs, 0, sizeof self->call_docs);
    policy_scratch_clear(self);
    if (rc == 0 && c.no_policy) {
        if (s_default_outcome(base, mine, theirs, outcome) != 0) {
            snprintf(err, errlen, "default merge: out of memory");
            return TS_POLICY_ERROR;
        }
        return TS_POLICY_OK;
    }
    if (rc == 0 && outcome->kind == TS_OUTCOME_MERGE) {
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(theirs, "id");
        const cJSON *got = cJSON_GetObjectItemCaseSensitive(outcome->doc, "id");
        if (!got && cJSON_IsString(want)) {
            cJSON_AddStringToObject(outcome->doc, "id", want->valuestring);
        } else if (got && !cJSON_Compare(got, want, true)) {
            snprintf(err, errlen, "%s: a merge must not change the document id", self->label);
            rc = -1;
        }
    }
    if (rc != 0) {
        ts_policy_outcome_clear(outcome);
        ts_warn("policy", "%s %s failed, using the default merge: %s", self->name, self->label,
                err);
        s_default_outcome(base, mine, theirs, outcome);
        return TS_POLICY_ERROR;
    }
    snprintf(outcome->policy, sizeof outcome->policy, "conflict.lua");
    return TS_POLICY_OK;
}

/* ---- default merge ---- */

static bool s_json_eq(const cJSON *a, const cJSON *b)
{
    if (!a || !b)
        return a == b;
    return cJSON_Compare(a, b, true);
}

static bool s_server_owned(const char *key)
{
    return strcmp(key, "id") == 0 || strcmp(key, "version") == 0 || strcmp(key, "updated_at") == 0;
}

/* Adds the merged value of key to out; 0, or -1 when memory ran out. */
static int s_merge_key(cJSON *out, const char *key, const cJSON *b, const cJSON *m,
                       const cJSON *t, int depth)
{
    const cJSON *pick;
    if (cJSON_IsObject(m) && cJSON_IsObject(t) && (!b || cJSON_IsObject(b)) && depth < MAX_DEPTH) {
        cJSON *sub = cJSON_CreateObject();
        if (!sub || !cJSON_AddItemToObject(out, key, sub)) {
            cJSON_Delete(sub);
            return -1;
        }
        for (const cJSON *c = t->child; c; c = c->next)
            if (s_merge_key(sub, c->string, cJSON_GetObjectItemCaseSensitive(b, c->string),
                            cJSON_GetObjectItemCaseSensitive(m, c->string), c, depth + 1) != 0)
                return -1;
        for (const cJSON *c = m->child; c; c = c->next)
            if (!cJSON_GetObjectItemCaseSensitive(t, c->string) &&
                s_merge_key(sub, c->string, cJSON_GetObjectItemCaseSensitive(b, c->string), c,
                            NULL, depth + 1) != 0)
                return -1;
        return 0;
    }
    if (!s_json_eq(b, m))
        pick = s_json_eq(b, t) ? m : t; /* mine changed: it wins unless theirs changed too */
    else
        pick = t;
    if (!pick)
        return 0;
    cJSON *dup = cJSON_Duplicate(pick, true);
    if (!dup || !cJSON_AddItemToObject(out, key, dup)) {
        cJSON_Delete(dup);
        return -1;
    }
    return 0;
}

cJSON *ts_policy_default_merge(const cJSON *base, const cJSON *mine, const cJSON *theirs)
{
    if (!cJSON_IsObject(mine) || !cJSON_IsObject(theirs))
        return NULL;
    if (base && !cJSON_IsObject(base))
        base = NULL;
    cJSON *out = cJSON_CreateObject();
    if (!out)
        return NULL;
    for (const cJSON *t = theirs->child; t; t = t->next) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(base, t->string);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(mine, t->string);
        if (s_server_owned(t->string))
            b = m = t;
        if (s_merge_key(out, t->string, b, m, t, 0) != 0)
            goto fail;
    }
    for (const cJSON *m = mine->child; m; m = m->next) {
        if (cJSON_GetObjectItemCaseSensitive(theirs, m->string) || s_server_owned(m->string))
            continue;
        if (s_merge_key(out, m->string, cJSON_GetObjectItemCaseSensitive(base, m->string), m,
                        NULL, 0) != 0)
            goto fail;
    }
    return out;
fail:
    cJSON_Delete(out);
    return NULL;
}
