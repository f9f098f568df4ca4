/* config.c — defaults, the Lua config file and the daemon's flags. */
#include "therasync/config.h"
#include "therasync/util.h"

#include <errno.h>
#include <getopt.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_str(char **slot, const char *value)
{
    free(*slot);
    *slot = value ? ts_xstrdup(value) : NULL;
}

void ts_config_init(ts_config_t *c)
{
    memset(c, 0, sizeof *c);
    set_str(&c->data_dir, "./var");
    set_str(&c->endpoint, "tcp://127.0.0.1:7410");
    set_str(&c->events, "tcp://127.0.0.1:7411");
    c->log_level = TS_LOG_INFO;
    c->max_request_bytes = 1 << 20;
    c->max_inflight = 100000;
    set_str(&c->collections[0], "sessions");
    set_str(&c->collections[1], "consultations");
    c->ncollections = 2;
    set_str(&c->auth.client_id, "therasync");
    set_str(&c->auth.client_secret, "dev-secret");
    c->lua.memory_bytes = 32u << 20;
    c->lua.instruction_budget = 1000000;
    c->sync.concurrency = 32;
    c->sync.batch_size = 128;
    c->sync.stuck_after = 8;
    c->sync.poll_interval_ms = 5000;
    c->sync.digest_interval_s = 300;
    c->sync.digest_soon_s = 3;
    c->sync.offline_after = 3;
    c->sync.answer_timeout_ms = 10000;
    c->cache.max_bytes = 64LL << 20;
    c->cache.max_subscriptions = 1000;
    c->cache.max_subscriptions_total = 100000;
}

void ts_config_free(ts_config_t *c)
{
    free(c->data_dir);
    free(c->admin);
    free(c->endpoint);
    free(c->events);
    free(c->api_url);
    free(c->policies_dir);
    for (size_t i = 0; i < c->ncollections; i++)
        free(c->collections[i]);
    free(c->auth.client_id);
    free(c->auth.client_secret);
    free(c->auth.client_secret_file);
    free(c->auth.token_url);
    free(c->security.curve_secret_file);
    free(c->security.clients_file);
    free(c->storage.key_file);
    cJSON_Delete(c->clinic);
    memset(c, 0, sizeof *c);
}

int ts_config_collection(const ts_config_t *c, const char *name)
{
    return ts_config_collection_len(c, name, strlen(name));
}

int ts_config_collection_len(const ts_config_t *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->ncollections; i++)
        if (ts_name_is(c->collections[i], name, len))
            return (int)i;
    return -1;
}

/* Reads a string field of the table at the top of the stack (or a global
 * when table is 0). Returns 0 (absent is fine), -1 on a wrong type. */
static int read_string(lua_State *L, int table, const char *key, char **slot, char *err,
                       size_t errlen)
{
    int type = table ? lua_getfield(L, table, key) : lua_getglobal(L, key);
    int rc = 0;
    if (type == LUA_TSTRING) {
        set_str(slot, lua_tostring(L, -1));
    } else if (type != LUA_TNIL) {
        snprintf(err, errlen, "config: %s must be a string", key);
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

static int read_number(lua_State *L, int table, const char *key, double *value, char *err,
                       size_t errlen)
{
    int type = table ? lua_getfield(L, table, key) : lua_getglobal(L, key);
    int rc = 0;
    if (type == LUA_TNUMBER) {
        *value = lua_tonumber(L, -1);
        if (*value < 0) {
            snprintf(err, errlen, "config: %s must not be negative", key);
            rc = -1;
        }
    } else if (type != LUA_TNIL) {
        snprintf(err, errlen, "config: %s must be a number", key);
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

/* Lua value at the top of the stack → cJSON (tables with 1..n keys become
 * arrays). Depth-limited; functions and userdata are refused. */
static cJSON *lua_to_json(lua_State *L, int depth)
{
    int type = lua_type(L, -1);
    if (depth > 32)
        return NULL;
    switch (type) {
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, -1));
    case LUA_TNUMBER: return cJSON_CreateNumber(lua_tonumber(L, -1));
    case LUA_TSTRING: return cJSON_CreateString(lua_tostring(L, -1));
    case LUA_TTABLE: {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        cJSON *out = n > 0 ? cJSON_CreateArray() : cJSON_CreateObject();
        lua_pushnil(L);
        while (out && lua_next(L, -2)) {
            cJSON *value = lua_to_json(L, depth + 1);
            if (!value) {
                lua_pop(L, 2);
                cJSON_Delete(out);
                return NULL;
            }
            if (n > 0) {
                cJSON_AddItemToArray(out, value);
            } else {
                lua_pushvalue(L, -2);
                cJSON_AddItemToObject(out, lua_tostring(L, -1), value);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        return out;
    }
    default: return NULL;
    }
}

/* ---- the keys a config may set ----
 * A key the engine does not read is a mistake (`dta = ...` would leave the
 * data in ./var): each table's keys, "" the top level. `clinic` is the
 * policies' own (ctx.config) and `ondemand` holds one table per collection. */
static const char *const top_keys[] = {
    "data", "endpoint", "events", "api", "policies", "log_level", "durability", "insecure",
    "admin", "max_request_bytes", "max_inflight", "max_db_bytes", "collections", "auth", "security",
    "lua", "sync", "ondemand", "cache", "clinic", NULL};
static const struct {
    const char *table;
    const char *const keys[12];
} table_keys[] = {
    {"auth", {"client_id", "client_secret", "client_secret_file", "token_url"}},
    {"security", {"curve_secret_file", "clients_file", "event_bodies", "encryption_key_file"}},
    {"lua", {"memory_mb", "instruction_budget"}},
    {"sync", {"concurrency", "batch_size", "stuck_after", "poll_interval_ms", "digest_interval_s",
              "digest_soon_s", "offline_after", "answer_timeout_ms"}},
    {"cache", {"max_bytes", "max_subscriptions", "max_subscriptions_total"}},
    {"ondemand.*", {"fresh_ms", "max_stale_ms", "gc_ms"}},
};

/* Edit distance, for "did you mean"; both short. */
static size_t distance(const char *a, const char *b)
{
    size_t n = strlen(b), row[65];
    if (strlen(a) > 64 || n > 64)
        return 99;
    for (size_t j = 0; j <= n; j++)
        row[j] = j;
    for (size_t i = 1; a[i - 1]; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= n; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[n];
}

/* "unknown key PREFIX.key", with the nearest known one when it is near. */
static void unknown_key(const char *prefix, const char *key, const char *const *known, char *err,
                        size_t errlen)
{
    const char *best = NULL;
    size_t bd = 99;
    for (size_t i = 0; known[i]; i++) {
        size_t d = distance(key, known[i]);
        if (d < bd)
            bd = d, best = known[i];
    }
    for (size_t i = 0; known[i] && bd > 2; i++)
        if (strncmp(known[i], key, strlen(key)) == 0) /* fresh for fresh_ms */
            bd = 0, best = known[i];
    bool near = best && bd <= (strlen(key) > 6 ? 3 : 2);
    snprintf(err, errlen, "config: unknown key %s%s%.64s%s%s%s%s", prefix, *prefix ? "." : "",
             key, near ? " (did you mean " : "", near ? prefix : "", near && *prefix ? "." : "",
             near ? best : "");
    if (near)
        snprintf(err + strlen(err), errlen - strlen(err), ")");
}

/* Every key of the table at index t against known (prefix: its name). */
static int check_table(lua_State *L, int t, const char *prefix, const char *const *known,
                       char *err, size_t errlen)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            snprintf(err, errlen, "config: %s takes named keys only", prefix);
            lua_pop(L, 1);
            return -1;
        }
        const char *key = lua_tostring(L, -1);
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        if (!known[i]) {
            unknown_key(prefix, key, known, err, errlen);
            lua_pop(L, 1);
            return -1;
        }
    }
    return 0;
}

static const char *const *keys_of(const char *table)
{
    for (size_t i = 0; i < sizeof table_keys / sizeof *table_keys; i++)
        if (strcmp(table_keys[i].table, table) == 0)
            return table_keys[i].keys;
    return NULL;
}

/* The globals the file set (those not in before, the names Lua's own
 * libraries define) must be keys the engine reads, and so must the keys of
 * its tables. */
static int check_keys(lua_State *L, int before, char *err, size_t errlen)
{
    lua_pushglobaltable(L);
    int g = lua_gettop(L), rc = 0;
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, g)) {
        int value = lua_gettop(L);
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        lua_pushvalue(L, -2);
        bool lua_own = lua_rawget(L, before) != LUA_TNIL;
        lua_pop(L, 1);
        if (!key || lua_own) {
            lua_pop(L, 1);
            continue;
        }
        size_t i = 0;
        while (top_keys[i] && strcmp(top_keys[i], key) != 0)
            i++;
        const char *const *sub = keys_of(key);
        if (!top_keys[i]) {
            unknown_key("", key, top_keys, err, errlen);
            rc = -1;
        } else if ((sub || strcmp(key, "ondemand") == 0) && !lua_istable(L, value)) {
            snprintf(err, errlen, "config: %s must be a table ({ ... })", key);
            rc = -1;
        } else if (sub) {
            rc = check_table(L, value, key, sub, err, errlen);
        } else if (strcmp(key, "ondemand") == 0) {
            lua_pushnil(L);
            while (rc == 0 && lua_next(L, value)) {
                char prefix[96];
                snprintf(prefix, sizeof prefix, "ondemand.%.64s",
                         lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
                if (lua_istable(L, -1))
                    rc = check_table(L, lua_gettop(L), prefix, keys_of("ondemand.*"), err,
                                     errlen);
                lua_pop(L, 1);
            }
            if (rc)
                lua_pop(L, 1); /* the key lua_next left */
        }
        lua_pop(L, 1);
    }
    if (rc)
        lua_pop(L, 1); /* the key */
    lua_pop(L, 1);     /* the global table */
    return rc;
}

int ts_config_load(ts_config_t *c, const char *path, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        snprintf(err, errlen, "config: out of memory");
        return -1;
    }
    /* The config is trusted operator input, but it only needs the basics. */
    luaL_requiref(L, "_G", luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 1); /* os.getenv for secrets */
    lua_pop(L, 3);
    int rc = -1;
    /* The names Lua's libraries define, to tell the file's own from them. */
    lua_newtable(L);
    int before = lua_gettop(L);
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, before);
    }
    lua_pop(L, 1);
    if (luaL_loadfilex(L, path, "t") || lua_pcall(L, 0, 0, 0)) {
        snprintf(err, errlen, "config: %s", lua_tostring(L, -1));
        goto done;
    }
    if (check_keys(L, before, err, errlen))
        goto done;
    char *durability = NULL, *level = NULL;
    const char *table = NULL; /* the table being read, for messages */
    double num;
    if (read_string(L, 0, "data", &c->data_dir, err, errlen) ||
        read_string(L, 0, "endpoint", &c->endpoint, err, errlen) ||
        read_string(L, 0, "events", &c->events, err, errlen) ||
        read_string(L, 0, "api", &c->api_url, err, errlen) ||
        read_string(L, 0, "policies", &c->policies_dir, err, errlen) ||
        read_string(L, 0, "admin", &c->admin, err, errlen) ||
        read_string(L, 0, "log_level", &level, err, errlen) ||
        read_string(L, 0, "durability", &durability, err, errlen))
        goto strings_done;
    if (level && ts_log_parse_level(level, &c->log_level)) {
        snprintf(err, errlen, "config: log_level must be error, warn, info or debug");
        goto strings_done;
    }
    if (durability && strcmp(durability, "relaxed") != 0 && strcmp(durability, "strict") != 0) {
        snprintf(err, errlen, "config: durability must be \"strict\" or \"relaxed\"");
        goto strings_done;
    }
    c->durability_relaxed = durability && strcmp(durability, "relaxed") == 0;
    if (lua_getglobal(L, "insecure") != LUA_TNIL)
        c->insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    num = (double)c->max_request_bytes;
    if (read_number(L, 0, "max_request_bytes", &num, err, errlen))
        goto strings_done;
    c->max_request_bytes = (size_t)num;
    num = (double)c->max_inflight;
    if (read_number(L, 0, "max_inflight", &num, err, errlen))
        goto strings_done;
    c->max_inflight = (size_t)num;
    num = (double)c->max_db_bytes;
    if (read_number(L, 0, "max_db_bytes", &num, err, errlen))
        goto strings_done;
    c->max_db_bytes = (long long)num;

    if (lua_getglobal(L, "collections") == LUA_TTABLE) {
        size_t n = lua_rawlen(L, -1);
        if (n == 0 || n > TS_MAX_COLLECTIONS) {
            snprintf(err, errlen, "config: collections must list 1 to %d names",
                     TS_MAX_COLLECTIONS);
            goto strings_done;
        }
        for (size_t i = 0; i < c->ncollections; i++)
            free(c->collections[i]);
        c->ncollections = 0;
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i);
            const char *name = lua_tostring(L, -1);
            if (!name || !*name || strlen(name) > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name)) {
                snprintf(err, errlen, "config: collection names are 1-64 of [a-z0-9_]");
                goto strings_done;
            }
            c->collections[c->ncollections++] = ts_xstrdup(name);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    table = "auth"; /* a value of the wrong type is named table.key */
    if (lua_getglobal(L, "auth") == LUA_TTABLE) {
        int t = lua_gettop(L);
        if (read_string(L, t, "client_id", &c->auth.client_id, err, errlen) ||
            read_string(L, t, "client_secret", &c->auth.client_secret, err, errlen) ||
            read_string(L, t, "client_secret_file", &c->auth.client_secret_file, err, errlen) ||
            read_string(L, t, "token_url", &c->auth.token_url, err, errlen))
            goto strings_done;
    }
    lua_pop(L, 1);
    table = "security"; /* a value of the wrong type is named table.key */
    if (lua_getglobal(L, "security") == LUA_TTABLE) {
        int t = lua_gettop(L);
        if (read_string(L, t, "curve_secret_file", &c->security.curve_secret_file, err, errlen) ||
            read_string(L, t, "clients_file", &c->security.clients_file, err, errlen) ||
            read_string(L, t, "encryption_key_file", &c->storage.key_file, err, errlen))
            goto strings_done;
        if (lua_getfield(L, t, "event_bodies") != LUA_TNIL)
            c->security.event_bodies = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!c->security.curve_secret_file != !c->security.clients_file) {
            snprintf(err, errlen, "config: security needs both curve_secret_file and "
                                  "clients_file (or neither)");
            goto strings_done;
        }
    }
    lua_pop(L, 1);
    table = "lua"; /* a value of the wrong type is named table.key */
    if (lua_getglobal(L, "lua") == LUA_TTABLE) {
        int t = lua_gettop(L);
        num = (double)(c->lua.memory_bytes >> 20);
        if (read_number(L, t, "memory_mb", &num, err, errlen))
            goto strings_done;
        c->lua.memory_bytes = (size_t)num << 20;
        num = (double)c->lua.instruction_budget;
        if (read_number(L, t, "instruction_budget", &num, err, errlen))
            goto strings_done;
        c->lua.instruction_budget = (long)num;
    }
    lua_pop(L, 1);
    table = "sync"; /* a value of the wrong type is named table.key */
    if (lua_getglobal(L, "sync") == LUA_TTABLE) {
        int t = lua_gettop(L);
        struct {
            const char *key;
            int *slot;
            int min, max;
        } keys[] = {
            {"concurrency", &c->sync.concurrency, 1, 4096},
            {"batch_size", &c->sync.batch_size, 0, 1000},
            {"stuck_after", &c->sync.stuck_after, 1, 1000000},
            {"poll_interval_ms", &c->sync.poll_interval_ms, 10, 3600000},
            {"digest_interval_s", &c->sync.digest_interval_s, 0, 86400 * 7},
            {"digest_soon_s", &c->sync.digest_soon_s, 0, 3600},
            {"offline_after", &c->sync.offline_after, 1, 1000},
            {"answer_timeout_ms", &c->sync.answer_timeout_ms, 100, 600000},
        };
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            num = *keys[i].slot;
            if (read_number(L, t, keys[i].key, &num, err, errlen))
                goto strings_done;
            if (num < keys[i].min || num > keys[i].max) {
                snprintf(err, errlen, "config: sync.%s must be %d to %d", keys[i].key,
                         keys[i].min, keys[i].max);
                goto strings_done;
            }
            *keys[i].slot = (int)num;
        }
    }
    lua_pop(L, 1);
    table = NULL; /* its messages name their keys */
    if (lua_getglobal(L, "ondemand") == LUA_TTABLE) {
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t)) {
            const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            int k = name ? ts_config_collection(c, name) : -1;
            if (k < 0 && name && c->ncollections < TS_MAX_COLLECTIONS &&
                strlen(name) <= 64 && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") ==
                                          strlen(name) && *name) {
                set_str(&c->collections[c->ncollections], name); /* on demand implies listed */
                k = (int)c->ncollections++;
            }
            if (k < 0 || !lua_istable(L, -1)) {
                snprintf(err, errlen,
                         "config: ondemand = { NAME = { fresh_ms =, max_stale_ms =, gc_ms = } } "
                         "with NAME of [a-z0-9_]");
                goto strings_done;
            }
            int v = lua_gettop(L);
            c->ondemand[k].on = true;
            struct {
                const char *key;
                int *slot;
                int def;
            } keys[] = {{"fresh_ms", &c->ondemand[k].fresh_ms, 30000},
                        {"max_stale_ms", &c->ondemand[k].max_stale_ms, 600000},
                        {"gc_ms", &c->ondemand[k].gc_ms, 300000}};
            for (size_t i = 0; i < 3; i++) {
                num = keys[i].def;
                if (read_number(L, v, keys[i].key, &num, err, errlen))
                    goto strings_done;
                if (num < 0 || num > 86400000.0 * 30) {
                    snprintf(err, errlen, "config: ondemand.%s.%s must be 0 to 30 days in ms",
                             name, keys[i].key);
                    goto strings_done;
                }
                *keys[i].slot = (int)num;
            }
            if (c->ondemand[k].max_stale_ms < c->ondemand[k].fresh_ms)
                c->ondemand[k].max_stale_ms = c->ondemand[k].fresh_ms;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    table = "cache"; /* a value of the wrong type is named table.key */
    if (lua_getglobal(L, "cache") == LUA_TTABLE) {
        int t = lua_gettop(L);
        num = (double)c->cache.max_bytes;
        if (read_number(L, t, "max_bytes", &num, err, errlen))
            goto strings_done;
        if (num < 0 || num > (double)(1LL << 40)) {
            snprintf(err, errlen, "config: cache.max_bytes must be 0 to 2^40");
            goto strings_done;
        }
        c->cache.max_bytes = (long long)num;
        int *caps[] = {&c->cache.max_subscriptions, &c->cache.max_subscriptions_total};
        const char *names[] = {"max_subscriptions", "max_subscriptions_total"};
        for (int i = 0; i < 2; i++) {
            num = *caps[i];
            if (read_number(L, t, names[i], &num, err, errlen))
                goto strings_done;
            if (num < 0 || num > 10000000) {
                snprintf(err, errlen, "config: cache.%s must be 0 to 10000000", names[i]);
                goto strings_done;
            }
            *caps[i] = (int)num;
        }
    }
    lua_pop(L, 1);
    table = NULL; /* its messages name their keys */
    if (lua_getglobal(L, "clinic") == LUA_TTABLE) {
        cJSON_Delete(c->clinic);
        c->clinic = lua_to_json(L, 0);
    }
    lua_pop(L, 1);
    rc = 0;
strings_done:
    if (rc && table && strncmp(err, "config: ", 8) == 0 &&
        strncmp(err + 8, table, strlen(table)) != 0) { /* "config: key ..." -> "config: table.key ..." */
        char rest[512];
        snprintf(rest, sizeof rest, "%s", err + 8);
        snprintf(err, errlen, "config: %s.%s", table, rest);
    }
    free(durability);
    free(level);
done:
    lua_close(L);
    return rc;
}

static const char usage[] =
    "usage: therasyncd [options]\n"
    "  --config FILE        Lua config file (flags win over it)\n"
    "  --data DIR           data directory (default ./var)\n"
    "  --endpoint ZMQ       JSON-RPC ROUTER endpoint (default tcp://127.0.0.1:7410)\n"
    "  --events ZMQ         event PUB endpoint (default tcp://127.0.0.1:7411)\n"
    "  --api URL            Clinic API base URL (absent: standalone)\n"
    "  --policies DIR       Lua policies directory (default: the shipped policies)\n"
    "  --log-level LEVEL    error|warn|info|debug (default info)\n"
    "  --admin HOST:PORT    HTTP /metrics, /healthz, /readyz on a loopback address\n"
    "                       (e.g. 127.0.0.1:9464; default off)\n"
    "  --insecure           allow an endpoint beyond this host although clients are not\n"
    "                       authenticated (refused without it unless the config's\n"
    "                       security table lists client keys; SECURITY.md)\n"
    "  --check-config       check the config, the policies and the key files it names,\n"
    "                       then exit: 0 when the daemon would start with them, else 1\n"
    "  --help, --version\n";

int ts_config_parse_args(ts_config_t *c, int argc, char **argv, char *err, size_t errlen)
{
    static const struct option options[] = {
        {"config", required_argument, 0, 'c'},   {"data", required_argument, 0, 'd'},
        {"endpoint", required_argument, 0, 'e'}, {"events", required_argument, 0, 'E'},
        {"api", required_argument, 0, 'a'},      {"policies", required_argument, 0, 'p'},
        {"log-level", required_argument, 0, 'l'}, {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},        {"insecure", no_argument, 0, 'i'},
        {"admin", required_argument, 0, 'A'},
        {"check-config", no_argument, 0, 'C'},   {0, 0, 0, 0}};
    /* First pass: the config file, so that flags can override it. */
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'c' && ts_config_load(c, optarg, err, errlen))
            return -1;
        if (opt == 'h') {
            fputs(usage, stdout);
            return 1;
        }
        if (opt == 'V') {
            printf("therasyncd %s\n", TS_VERSION);
            return 1;
        }
        if (opt == '?') {
            snprintf(err, errlen, "unknown or incomplete option '%s'\n%s", argv[optind - 1], usage);
            return -1;
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s'\n%s", argv[optind], usage);
        return -1;
    }
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'd': set_str(&c->data_dir, optarg); break;
        case 'e': set_str(&c->endpoint, optarg); break;
        case 'E': set_str(&c->events, optarg); break;
        case 'a': set_str(&c->api_url, optarg); break;
        case 'p': set_str(&c->policies_dir, optarg); break;
        case 'A': set_str(&c->admin, optarg); break;
        case 'i': c->insecure = true; break;
        case 'C': c->check_only = true; break;
        case 'l':
            if (ts_log_parse_level(optarg, &c->log_level)) {
                snprintf(err, errlen, "--log-level must be error, warn, info or debug");
                return -1;
            }
            break;
        default: break;
        }
    }
    /* Without client keys anyone who reaches the front door can read and
     * write everything: beyond this host only when the operator says so. */
    const char *eps[] = {c->endpoint, c->events};
    for (int i = 0; i < 2 && !c->insecure && !ts_config_curve(c); i++)
        if (eps[i] && !ts_endpoint_is_local(eps[i])) {
            snprintf(err, errlen,
                     "%s %s can be reached from other hosts, and clients are not authenticated: "
                     "list client keys in the config (security = { curve_secret_file = ..., "
                     "clients_file = ... }, docs/FRONT_DOOR.md), bind it to 127.0.0.1, [::1], "
                     "localhost or an ipc:// path, or pass --insecure (config insecure = true) "
                     "to accept that anyone who reaches it can read and write every record",
                     i ? "--events" : "--endpoint", eps[i]);
            return -1;
        }
    /* The admin endpoint has no keys at all: loopback only, --insecure
     * or not (a scraper elsewhere goes through a proxy or an SSH tunnel). */
    bool v6;
    unsigned port;
    if (c->admin && ts_admin_addr(c->admin, &v6, &port, err, errlen))
        return -1;
    return 0;
}

int ts_admin_addr(const char *addr, bool *ipv6, unsigned *port, char *err, size_t errlen)
{
    static const char *const hosts[] = {"127.0.0.1:", "localhost:", "[::1]:"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(hosts[i]);
        if (strncmp(addr, hosts[i], n) != 0)
            continue;
        char *end;
        errno = 0;
        long p = strtol(addr + n, &end, 10);
        if (end == addr + n || *end || errno || p < 0 || p > 65535)
            break;
        *ipv6 = i == 2;
        *port = (unsigned)p;
        return 0;
    }
    snprintf(err, errlen,
             "--admin %s: the admin endpoint answers without a key, so it takes a loopback "
             "address only: 127.0.0.1:PORT, localhost:PORT or [::1]:PORT",
             addr);
    return -1;
}

bool ts_config_curve(const ts_config_t *c)
{
    return c->security.curve_secret_file && c->security.clients_file;
}

bool ts_endpoint_is_local(const char *ep)
{
    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0)
        return true;
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    static const char *const hosts[] = {"127.0.0.1:", "localhost:", "[::1]:"};
    for (int i = 0; i < 3; i++)
        if (strncmp(ep + 6, hosts[i], strlen(hosts[i])) == 0)
            return true;
    return false;
}
