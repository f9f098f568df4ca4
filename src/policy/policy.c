/* policy.c — the policy engine's life: loads validate.lua, selectors.lua
 * and conflict.lua into a sandbox, reloads them (a new load replaces the
 * old one whole, or is refused and the old one stays), and says what is
 * loaded. The calls into the policies are in validate.c, select.c and
 * resolve.c; what they are given: ctx in ctx.c, documents in luaconv.c.
 *
 * Every call into Lua goes through ts_sandbox_pcall with a C function that
 * does all the work (conversions included), so a memory error or the budget
 * kill anywhere unwinds to one place. C-side temporaries that a Lua error
 * could strand are parked in self->scratch and freed after each call. */
#include "policy_int.h"

#include "therasync/log.h"
#include "therasync/util.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_files[] = {"validate.lua", "selectors.lua", "conflict.lua"};

/* ---- scratch: C allocations a Lua error could strand ---- */

int policy_scratch_add(ts_policy_t *self, cJSON *item)
{
    for (int i = 0; i < SCRATCH_MAX; i++)
        if (!self->scratch[i]) {
            self->scratch[i] = item;
            return 0;
        }
    return -1;
}

/* Frees item, kept by policy_scratch_add, once no Lua error can strand it
 * (it was pushed): the slots are for what is in the air, not for a call's
 * whole life, which may read any number of fields. */
void policy_scratch_free(ts_policy_t *self, cJSON *item)
{
    for (int i = 0; i < SCRATCH_MAX; i++)
        if (self->scratch[i] == item)
            self->scratch[i] = NULL;
    cJSON_Delete(item);
}

void policy_scratch_clear(ts_policy_t *self)
{
    for (int i = 0; i < SCRATCH_MAX; i++) {
        cJSON_Delete(self->scratch[i]);
        self->scratch[i] = NULL;
    }
}

/* Replaces every nested table of the table at idx by a read-only proxy, then
 * pushes a read-only proxy of the table itself. */
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
        free((char *)ld->sels[i].pub.lower_bound);
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
    ld->validated = ts_xmalloc(total);
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
    loaded_t *ld = ts_xcalloc(1, sizeof *ld);
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
    ts_policy_t *self = ts_xcalloc(1, sizeof *self);
    self->mem_cap = opts->mem_cap_bytes;
    self->budget = opts->instr_budget;
    self->lookup = opts->lookup;
    self->lookup_arg = opts->lookup_arg;
    self->find = opts->find;
    snprintf(self->name, sizeof self->name, "%s", opts->name ? opts->name : "policy");
    snprintf(self->label, sizeof self->label, "policy");
    if (opts->clinic_config)
        self->config = cJSON_Duplicate(opts->clinic_config, true);
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
    for (int i = 0; i < 2; i++) {
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
    return info;
}

void ts_policy_set_now(ts_policy_t *self, int64_t wall_ms) { self->fixed_now_ms = wall_ms; }

void policy_set_label(ts_policy_t *self, const char *kind, const char *what)
{
    size_t k = strlen(kind);
    /* Mostly the same label as the last call: skip snprintf then. */
    if (strncmp(self->label, kind, k) != 0 || self->label[k] != '.' ||
        strcmp(self->label + k + 1, what) != 0)
        snprintf(self->label, sizeof self->label, "%s.%s", kind, what);
    ts_sandbox_set_label(self->cur->sb, self->label);
}
