/* policy_int.h — inside the policy engine (src/policy): the state shared
 * by its files.
 *
 * policy.c    loading, reloading, the engine's life; scratch, call labels
 * luaconv.c   cJSON <-> Lua, documents as tables, lazy documents from text
 * ctx.c       ctx: now, config, log, find, merge
 * validate.c  validation (validate.lua)
 * select.c    selectors and queries (selectors.lua)
 * resolve.c   conflict resolution (conflict.lua) and the default merge
 *
 * Not an interface: the public one is policy/policy.h (ts_policy_*); the
 * names shared here are policy_*. */
#ifndef THERASYNC_POLICY_INT_H
#define THERASYNC_POLICY_INT_H

#include "policy/policy.h"
#include "sandbox.h"

#include <cJSON.h>
#include <limits.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_DEPTH 100
#define SCRATCH_MAX 8
#define KEY_CACHE 32 /* document keys remembered as Lua strings (s_push_doc) */
#define KEY_MAX 32

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

/* policy.c */
int policy_scratch_add(ts_policy_t *self, cJSON *item);
void policy_scratch_free(ts_policy_t *self, cJSON *item);
void policy_scratch_clear(ts_policy_t *self);
void policy_set_label(ts_policy_t *self, const char *kind, const char *what);

/* luaconv.c */
void policy_push_json(lua_State *L, const cJSON *item, int depth);
cJSON *policy_to_json(lua_State *L, int idx, int depth, char *err, size_t errlen);
void policy_push_call_doc(lua_State *L, ts_policy_t *self, const cJSON *doc,
                          const ts_policy_doc_t *text);
void policy_push_proxy(lua_State *L, ts_policy_t *self, lua_Integer serial);
void policy_push_proxy_mt(lua_State *L, ts_policy_t *self);

/* ctx.c */
ts_policy_t *policy_self_upvalue(lua_State *L);
int policy_ctx_log(lua_State *L);
int policy_ctx_find(lua_State *L);
int policy_ctx_merge(lua_State *L);
int64_t policy_now_ms(const ts_policy_t *self);
void policy_push_ctx_mt(lua_State *L, loaded_t *ld, bool for_validate);
void policy_push_ctx(lua_State *L, ts_policy_t *self, const char *collection, bool for_validate);

/* select.c */
void policy_check_selectors(lua_State *L, loaded_t *ld);

#endif
