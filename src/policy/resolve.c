/* resolve.c — conflict resolution: runs conflict.lua's rule for a
 * collection on base, mine and theirs and reads its outcome (theirs, mine,
 * a merge or a rejection); without a rule, or when the rule fails, the
 * default three-way merge (also ctx.merge). */
#include "policy_int.h"

#include "therasync/log.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

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

/* mine and theirs are objects (checked by ts_policy_resolve). */
static void s_default_outcome(const cJSON *base, const cJSON *mine, const cJSON *theirs,
                              ts_policy_outcome_t *out)
{
    out->kind = TS_OUTCOME_MERGE;
    snprintf(out->policy, sizeof out->policy, "default");
    out->doc = ts_policy_default_merge(base, mine, theirs);
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
        s_default_outcome(base, mine, theirs, outcome);
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

/* Adds the merged value of key to out. */
static void s_merge_key(cJSON *out, const char *key, const cJSON *b, const cJSON *m,
                        const cJSON *t, int depth)
{
    const cJSON *pick;
    if (cJSON_IsObject(m) && cJSON_IsObject(t) && (!b || cJSON_IsObject(b)) && depth < MAX_DEPTH) {
        cJSON *sub = cJSON_AddObjectToObject(out, key);
        for (const cJSON *c = t->child; c; c = c->next)
            s_merge_key(sub, c->string, cJSON_GetObjectItemCaseSensitive(b, c->string),
                        cJSON_GetObjectItemCaseSensitive(m, c->string), c, depth + 1);
        for (const cJSON *c = m->child; c; c = c->next)
            if (!cJSON_GetObjectItemCaseSensitive(t, c->string))
                s_merge_key(sub, c->string, cJSON_GetObjectItemCaseSensitive(b, c->string), c,
                            NULL, depth + 1);
        return;
    }
    if (!s_json_eq(b, m))
        pick = s_json_eq(b, t) ? m : t; /* mine changed: it wins unless theirs changed too */
    else
        pick = t;
    if (pick)
        cJSON_AddItemToObject(out, key, cJSON_Duplicate(pick, true));
}

cJSON *ts_policy_default_merge(const cJSON *base, const cJSON *mine, const cJSON *theirs)
{
    if (!cJSON_IsObject(mine) || !cJSON_IsObject(theirs))
        return NULL;
    if (base && !cJSON_IsObject(base))
        base = NULL;
    cJSON *out = cJSON_CreateObject();
    for (const cJSON *t = theirs->child; t; t = t->next) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(base, t->string);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(mine, t->string);
        if (s_server_owned(t->string))
            b = m = t;
        s_merge_key(out, t->string, b, m, t, 0);
    }
    for (const cJSON *m = mine->child; m; m = m->next) {
        if (cJSON_GetObjectItemCaseSensitive(theirs, m->string) || s_server_owned(m->string))
            continue;
        s_merge_key(out, m->string, cJSON_GetObjectItemCaseSensitive(base, m->string), m, NULL,
                    0);
    }
    return out;
}
