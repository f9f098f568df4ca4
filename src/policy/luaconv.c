/* luaconv.c — documents between C and Lua: cJSON <-> Lua values (the
 * functions of luajson.h), documents as Lua tables with their keys from a
 * cache, and lazy tables that read fields straight out of a document's
 * JSON text. */
#include "policy_int.h"

#include "luajson.h"
#include "therasync/json.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- cJSON <-> Lua ---- */

/* Pushes item as a Lua value (objects and arrays as fresh tables; null as
 * nil, so null fields read as absent). Raises on memory or depth. */
void policy_push_json(lua_State *L, const cJSON *item, int depth)
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
 * keys, NaN). Raw access only: no metamethods run. */
cJSON *policy_to_json(lua_State *L, int idx, int depth, char *err, size_t errlen)
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
        return cJSON_CreateString(s);
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
    if (is_array) {
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (lua_Integer)i);
            cJSON *v = policy_to_json(L, -1, depth + 1, err, errlen);
            lua_pop(L, 1);
            if (!v) {
                cJSON_Delete(out);
                return NULL;
            }
            cJSON_AddItemToArray(out, v);
        }
        return out;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        cJSON *v = policy_to_json(L, -1, depth + 1, err, errlen);
        lua_pop(L, 1);
        if (!v) {
            cJSON_Delete(out);
            lua_pop(L, 1);
            return NULL;
        }
        cJSON_AddItemToObject(out, lua_tostring(L, -1), v);
    }
    return out;
}

void ts_lua_push_json(lua_State *L, const cJSON *item) { policy_push_json(L, item, 0); }

cJSON *ts_lua_to_json(lua_State *L, int idx, char *err, size_t errlen)
{
    return policy_to_json(L, idx, 0, err, errlen);
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
    size_t minus = v[0] == '-', digits = minus;
    while (digits < n && v[digits] >= '0' && v[digits] <= '9')
        digits++;
    /* A plain integer (most numbers) of at most 15 digits, which a double
     * holds exactly: a longer one is read as cJSON reads it (strtod), or
     * 12345678901234567 would be exact here and ...68 from the tree. */
    if (digits == n && n > minus && n - minus <= 15) {
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
        luaL_error(L, "document field is not valid JSON");
    }
    policy_push_json(L, item, 1); /* a member's value: one level in, as s_push_doc has it */
    policy_scratch_free(self, item);
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
        if (m.value_len == 4 && memcmp(m.value, "null", 4) == 0)
            continue; /* as s_push_doc: a null member is absent, and does not
                         remove an earlier one of the same key */
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
void policy_push_call_doc(lua_State *L, ts_policy_t *self, const cJSON *doc,
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
        return luaL_error(L, "document is not valid JSON");
    }
    lua_pushcfunction(L, ts_sandbox_raw_next);
    policy_push_json(L, doc, 0);
    policy_scratch_free(self, doc);
    lua_pushlstring(L, d->id, d->id_len);
    lua_setfield(L, -2, "id");
    lua_pushnil(L);
    return 3;
}

void policy_push_proxy_mt(lua_State *L, ts_policy_t *self)
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
void policy_push_proxy(lua_State *L, ts_policy_t *self, lua_Integer serial)
{
    lua_createtable(L, 0, 4);
    if (serial) {
        lua_pushinteger(L, serial);
        lua_rawsetp(L, -2, &s_proxy_key);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->cur->proxy_mt_ref);
    lua_setmetatable(L, -2);
}
