/* validate.c — validation: runs validate.lua's rule for a collection on a
 * document (as cJSON or as the store's text) and reads its verdict: true,
 * or false and a list of {field=, message=}. */
#include "policy_int.h"

#include "therasync/log.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

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
    c->errors = cJSON_CreateArray();
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
        cJSON_AddItemToArray(c->errors, e);
        cJSON_AddStringToObject(e, "field", ft == LUA_TSTRING ? lua_tostring(L, -2) : "");
        cJSON_AddStringToObject(e, "message", lua_tostring(L, -1));
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
