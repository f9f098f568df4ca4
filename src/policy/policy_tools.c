/* policy_tools.c — `therasync policy test DIR` and `therasync policy check DIR`.
 *
 * Tests run in their own sandbox (same allow-list, budget and cap as the
 * policies) and reach the policies only through the engine's public API, so
 * a test exercises exactly what the engine will run: expect_select hands its
 * documents to the store's own query code (store_query.c: index buckets,
 * from, ordering, limit), and ctx.find matches values by the index's rule.
 * The tool has no selection or ordering logic of its own. */
#include "therasync/policy_tools.h"

#include "luajson.h"
#include "sandbox.h"
#include "msgs/call.h"
#include "policy/policy.h"
#include "store/index.h"
#include "store/query.h"
#include "therasync/config.h"
#include "therasync/json.h"
#include "therasync/util.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOOL_SCRATCH 8
#define KEY_MAX 1024 /* as the index's: longer values are not indexed */

/* A document as the store keeps it: its id apart, the object text without it. */
typedef struct {
    char *id;
    char *text;
    size_t len;
} tool_doc_t;

/* A collection as the engine's query code sees it: the documents of the
 * expect_select running now, none between assertions. */
typedef struct {
    char *name;
    ts_sq_coll_t *q;
    tool_doc_t *docs;
    size_t ndocs;
} tool_coll_t;

typedef struct {
    ts_policy_t *policy;   /* validation and conflicts */
    ts_sq_t *sq;           /* selectors: the store's query code, its own Lua state */
    tool_coll_t colls[TS_MAX_COLLECTIONS];
    size_t ncolls;
    const cJSON *existing; /* documents ctx.find sees during one expect_* */
    cJSON *scratch[TOOL_SCRATCH];
    int tests_ref;         /* registry: array of {name, fn} of the current file */
} tool_t;

static void s_scratch_clear(tool_t *t)
{
    for (int i = 0; i < TOOL_SCRATCH; i++) {
        cJSON_Delete(t->scratch[i]);
        t->scratch[i] = NULL;
    }
}

static tool_t *s_tool(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

/* Converts argument idx to cJSON owned by the tool until the test ends;
 * nil gives NULL. Raises on values JSON cannot hold. */
static cJSON *s_arg_json(lua_State *L, int idx, const char *what)
{
    tool_t *t = s_tool(L);
    if (lua_isnoneornil(L, idx))
        return NULL;
    char err[200];
    cJSON *j = ts_lua_to_json(L, idx, err, sizeof err);
    if (!j)
        luaL_error(L, "%s: %s", what, err);
    for (int i = 0; i < TOOL_SCRATCH; i++)
        if (!t->scratch[i]) {
            t->scratch[i] = j;
            return j;
        }
    cJSON_Delete(j);
    luaL_error(L, "too many documents in one assertion");
    return NULL;
}

static int s_lookup(void *arg, const char *collection, const char *field, const char *value,
                    ts_policy_visit_fn visit, void *visit_arg)
{
    (void)collection; /* fixtures are given per assertion, one collection */
    tool_t *t = arg;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, t->existing)
    {
        /* the index's key: what the store's ctx.find compares */
        char key[KEY_MAX];
        if (ts_index_key_json(cJSON_GetObjectItemCaseSensitive(doc, field), key, sizeof key) >= 0 &&
            strcmp(key, value) == 0 && visit(visit_arg, doc))
            break;
    }
    return 0;
}

/* Appends "field: message; ..." of an errors array. */
static void s_errors_text(const cJSON *errors, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, errors)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "field");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        int n = snprintf(out + used, outlen - used, "%s%s: %s", used ? "; " : "",
                         cJSON_IsString(f) ? f->valuestring : "?",
                         cJSON_IsString(m) ? m->valuestring : "?");
        if (n < 0 || (size_t)n >= outlen - used)
            break;
        used += (size_t)n;
    }
}

/* expect_valid(collection, doc [, existing_docs [, previous]]) */
static int s_expect_valid(lua_State *L)
{
    tool_t *t = s_tool(L);
    s_scratch_clear(t); /* the previous assertion's documents */
    const char *coll = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    cJSON *doc = s_arg_json(L, 2, "doc");
    t->existing = s_arg_json(L, 3, "existing documents");
    cJSON *prev = s_arg_json(L, 4, "previous");
    cJSON *errors = NULL;
    char err[512];
    int rc = ts_policy_validate(t->policy, coll, doc, prev, &errors, err, sizeof err);
    t->existing = NULL;
    if (rc == TS_POLICY_OK)
        return 0;
    if (rc == TS_POLICY_INVALID) {
        s_errors_text(errors, err, sizeof err);
        cJSON_Delete(errors);
        return luaL_error(L, "expected valid, got: %s", err);
    }
    return luaL_error(L, "policy error: %s", err);
}

/* expect_invalid(collection, doc, field [, existing_docs [, previous]]) */
static int s_expect_invalid(lua_State *L)
{
    tool_t *t = s_tool(L);
    s_scratch_clear(t); /* the previous assertion's documents */
    const char *coll = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *field = luaL_optstring(L, 3, NULL);
    cJSON *doc = s_arg_json(L, 2, "doc");
    t->existing = s_arg_json(L, 4, "existing documents");
    cJSON *prev = s_arg_json(L, 5, "previous");
    cJSON *errors = NULL;
    char err[512];
    int rc = ts_policy_validate(t->policy, coll, doc, prev, &errors, err, sizeof err);
    t->existing = NULL;
    if (rc == TS_POLICY_OK)
        return luaL_error(L, "expected invalid%s%s, but it was accepted", field ? " in " : "",
                          field ? field : "");
    if (rc == TS_POLICY_ERROR)
        return luaL_error(L, "policy error: %s", err);
    bool found = field == NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, errors)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "field");
        if (field && cJSON_IsString(f) && strcmp(f->valuestring, field) == 0)
            found = true;
    }
    s_errors_text(errors, err, sizeof err);
    cJSON_Delete(errors);
    if (!found)
        return luaL_error(L, "expected an error in %s, got: %s", field, err);
    return 0;
}

/* ---- expect_select: the store's query code over the given documents ---- */

static void s_view(void *doc, ts_policy_doc_t *out)
{
    const tool_doc_t *d = doc;
    *out = (ts_policy_doc_t){d->id, strlen(d->id), d->text, d->len};
}

static void s_each(void *coll, void (*fn)(void *arg, void *doc), void *arg)
{
    tool_coll_t *c = coll;
    for (size_t i = 0; i < c->ndocs; i++)
        fn(arg, &c->docs[i]);
}

/* The collection called name, attached to the query code on first use. */
static tool_coll_t *s_coll(tool_t *t, const char *name)
{
    for (size_t i = 0; i < t->ncolls; i++)
        if (strcmp(t->colls[i].name, name) == 0)
            return &t->colls[i];
    if (t->ncolls == TS_MAX_COLLECTIONS)
        return NULL;
    tool_coll_t *c = &t->colls[t->ncolls];
    c->name = ts_xstrdup(name);
    if (!(c->q = ts_sq_attach(t->sq, c->name, c))) {
        free(c->name);
        c->name = NULL;
        return NULL;
    }
    t->ncolls++;
    return c;
}

/* Takes the documents out of the indexes (they keep pointers) and frees them. */
static void s_coll_clear(tool_coll_t *c)
{
    for (size_t i = 0; i < c->ndocs; i++) {
        ts_sq_changed(c->q, &c->docs[i], NULL, 0);
        free(c->docs[i].id);
        free(c->docs[i].text);
    }
    free(c->docs);
    c->docs = NULL;
    c->ndocs = 0;
}

/* Gives docs to the query code as the store keeps documents; 0, or -1 with
 * err set. */
static int s_coll_fill(tool_coll_t *c, const cJSON *docs, char *err, size_t errlen)
{
    int n = cJSON_GetArraySize(docs);
    c->docs = ts_xcalloc(n ? (size_t)n : 1, sizeof *c->docs);
    const cJSON *doc;
    cJSON_ArrayForEach(doc, docs)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
        if (!cJSON_IsObject(doc) || !cJSON_IsString(id)) {
            snprintf(err, errlen, "docs[%zu] is not a document with a text id", c->ndocs + 1);
            return -1;
        }
        cJSON *copy = cJSON_Duplicate(doc, true);
        while (cJSON_GetObjectItemCaseSensitive(copy, "id"))
            cJSON_DeleteItemFromObjectCaseSensitive(copy, "id");
        ts_buf_t b = {0};
        int rc = ts_buf_json(&b, copy);
        cJSON_Delete(copy);
        if (rc != 0) {
            ts_buf_free(&b);
            snprintf(err, errlen, "docs[%zu] cannot be written as JSON", c->ndocs + 1);
            return -1;
        }
        tool_doc_t *d = &c->docs[c->ndocs];
        d->text = ts_buf_take(&b, &d->len);
        d->id = ts_xstrdup(id->valuestring);
        c->ndocs++;
        ts_sq_changed(c->q, d, d->text, d->len);
    }
    return 0;
}

/* Runs query {collection, selector = name, params} through ts_sq_query over
 * docs; *items gets the answer's items (caller frees). 0, or -1 with err. */
static int s_select(tool_t *t, const ts_policy_selector_t *sel, const cJSON *params,
                    const cJSON *docs, cJSON **items, char *err, size_t errlen)
{
    *items = NULL;
    tool_coll_t *c = s_coll(t, sel->collection);
    if (!c) {
        snprintf(err, errlen, "more than %d collections", TS_MAX_COLLECTIONS);
        return -1;
    }
    int rc = s_coll_fill(c, docs, err, errlen);
    if (!rc) {
        ts_envelope_t *e = ts_envelope_new(1);
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "collection", sel->collection);
        cJSON_AddStringToObject(p, "selector", sel->name);
        if (params)
            cJSON_AddItemToObject(p, "params", cJSON_Duplicate(params, true));
        ts_call_t *call = &e->calls[0];
        call->method = TS_M_QUERY;
        call->params = p;
        call->collection = c->name;
        ts_sq_query(t->sq, call, c->q);
        cJSON *r = call->err_code ? NULL : cJSON_ParseWithLength(call->result, call->result_len);
        *items = cJSON_DetachItemFromObjectCaseSensitive(r, "items");
        cJSON_Delete(r);
        if (call->err_code) {
            snprintf(err, errlen, "%s%s", call->err_code == TS_E_POLICY ? "policy error: " : "",
                     call->err_message ? call->err_message : "query failed");
            rc = -1;
        } else if (!*items) {
            snprintf(err, errlen, "query answer without items");
            rc = -1;
        }
        ts_envelope_free(e);
    }
    s_coll_clear(c);
    return rc;
}

/* expect_select(name, params, docs, expected_ids): runs the selector over
 * docs with the engine's own query code (index bucket, from, where,
 * order_by, limit: exactly what the daemon runs) and compares the ids in
 * order. */
static int s_expect_select(lua_State *L)
{
    tool_t *t = s_tool(L);
    s_scratch_clear(t); /* the previous assertion's documents */
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    cJSON *params = s_arg_json(L, 2, "params");
    cJSON *docs = s_arg_json(L, 3, "docs");
    cJSON *expected = s_arg_json(L, 4, "expected ids");
    const ts_policy_selector_t *sel = ts_policy_selector_find(ts_sq_policy(t->sq), name);
    if (!sel)
        return luaL_error(L, "no selector named '%s'", name);
    char err[600];
    cJSON *items;
    if (s_select(t, sel, params, docs, &items, err, sizeof err))
        return luaL_error(L, "%s", err);
    ts_buf_t got = {0}, want = {0};
    bool same = cJSON_GetArraySize(items) == cJSON_GetArraySize(expected);
    const cJSON *it, *e = expected ? expected->child : NULL;
    cJSON_ArrayForEach(it, items)
    {
        const char *id = ts_json_string(it, "id");
        ts_buf_printf(&got, "%s%s", got.len ? "," : "", id ? id : "?");
        same = same && id && cJSON_IsString(e) && strcmp(e->valuestring, id) == 0;
        e = e ? e->next : NULL;
    }
    cJSON_Delete(items);
    cJSON_ArrayForEach(e, expected)
        ts_buf_printf(&want, "%s%s", want.len ? "," : "", cJSON_IsString(e) ? e->valuestring : "?");
    if (!same) {
        lua_pushfstring(L, "selector %s: expected {%s}, got {%s}", name,
                        want.data ? want.data : "", got.data ? got.data : "");
        ts_buf_free(&got);
        ts_buf_free(&want);
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
        return lua_error(L);
    }
    ts_buf_free(&got);
    ts_buf_free(&want);
    return 0;
}

static char *s_print(const cJSON *j)
{
    return j ? cJSON_PrintUnformatted(j) : NULL;
}

/* expect_conflict(collection, base, mine, theirs, expected) with expected
 * "theirs" | "mine" | {merge = doc} | {reject = "reason"} | {reject = true}. */
static int s_expect_conflict(lua_State *L)
{
    tool_t *t = s_tool(L);
    s_scratch_clear(t); /* the previous assertion's documents */
    const char *coll = luaL_checkstring(L, 1);
    cJSON *base = s_arg_json(L, 2, "base");
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    cJSON *mine = s_arg_json(L, 3, "mine");
    cJSON *theirs = s_arg_json(L, 4, "theirs");
    cJSON *expected = s_arg_json(L, 5, "expected");
    ts_policy_outcome_t out;
    char err[512];
    int rc = ts_policy_resolve(t->policy, coll, base, mine, theirs, &out, err, sizeof err);
    if (rc != TS_POLICY_OK) {
        ts_policy_outcome_clear(&out);
        return luaL_error(L, "policy error: %s", err);
    }
    const char *kind = ts_policy_outcome_name(out.kind);
    bool ok = false;
    char detail[300] = "";
    if (cJSON_IsString(expected)) {
        ok = strcmp(expected->valuestring, kind) == 0;
    } else {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(expected, "merge");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(expected, "reject");
        if (m && out.kind == TS_OUTCOME_MERGE) {
            ok = cJSON_Compare(m, out.doc, true);
            if (!ok) {
                char *a = s_print(m), *b = s_print(out.doc);
                snprintf(detail, sizeof detail, ": expected %.140s, got %.140s", a, b);
                free(a);
                free(b);
            }
        } else if (r && out.kind == TS_OUTCOME_REJECT) {
            ok = cJSON_IsTrue(r) || (cJSON_IsString(r) && strcmp(r->valuestring, out.reason) == 0);
            if (!ok)
                snprintf(detail, sizeof detail, ": reason '%s'", out.reason);
        }
    }
    ts_policy_outcome_clear(&out);
    if (!ok)
        return luaL_error(L, "conflict outcome: got %s%s", kind, detail);
    return 0;
}

/* expect_equal(got, want [, message]): deep comparison as JSON. */
static int s_expect_equal(lua_State *L)
{
    s_scratch_clear(s_tool(L));
    luaL_checkany(L, 2);
    cJSON *a = s_arg_json(L, 1, "got");
    cJSON *b = s_arg_json(L, 2, "want");
    if ((a || b) && !(a && b && cJSON_Compare(a, b, true))) {
        char *x = s_print(a), *y = s_print(b);
        lua_pushfstring(L, "%s: expected %s, got %s", luaL_optstring(L, 3, "expect_equal"),
                        y ? y : "nil", x ? x : "nil");
        free(x);
        free(y);
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
        return lua_error(L);
    }
    return 0;
}

/* set_now(rfc3339 | nil): fixes ctx.now / params.now for the following calls. */
static int s_set_now(lua_State *L)
{
    tool_t *t = s_tool(L);
    int64_t ms = 0;
    if (!lua_isnoneornil(L, 1) && ts_parse_rfc3339(luaL_checkstring(L, 1), &ms) != 0)
        return luaL_error(L, "set_now: not an RFC 3339 time");
    ts_policy_set_now(t->policy, ms);
    ts_policy_set_now(ts_sq_policy(t->sq), ms);
    return 0;
}

/* test(name, fn): registers a case; cases run after the file loaded. */
static int s_test(lua_State *L)
{
    tool_t *t = s_tool(L);
    luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->tests_ref);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

typedef struct {
    tool_t *tool;
    const char *file;
    int index; /* test to run, 1-based */
    char name[200];
} file_call_t;

static int s_setup_and_load(lua_State *L)
{
    file_call_t *c = lua_touserdata(L, 1);
    static const struct {
        const char *name;
        lua_CFunction fn;
    } api[] = {{"test", s_test},
               {"expect_valid", s_expect_valid},
               {"expect_invalid", s_expect_invalid},
               {"expect_select", s_expect_select},
               {"expect_conflict", s_expect_conflict},
               {"expect_equal", s_expect_equal},
               {"set_now", s_set_now}};
    for (size_t i = 0; i < sizeof api / sizeof api[0]; i++) {
        lua_pushlightuserdata(L, c->tool);
        lua_pushcclosure(L, api[i].fn, 1);
        ts_sandbox_add_global(L, api[i].name);
    }
    lua_newtable(L);
    c->tool->tests_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ts_sandbox_run_file(L, c->file);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->tool->tests_ref);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    c->index = (int)lua_tointeger(L, -1); /* number of cases */
    return 0;
}

static int s_run_case(lua_State *L)
{
    file_call_t *c = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->tool->tests_ref);
    lua_rawgeti(L, -1, c->index);
    lua_rawgeti(L, -1, 1);
    snprintf(c->name, sizeof c->name, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_rawgeti(L, -1, 2);
    ts_policy_set_now(c->tool->policy, 0);
    ts_policy_set_now(ts_sq_policy(c->tool->sq), 0);
    lua_call(L, 0, 0);
    return 0;
}

static int s_is_test_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 9 && d->d_name[0] != '.' && strcmp(d->d_name + n - 9, "_test.lua") == 0;
}

static int s_is_lua_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 4 && d->d_name[0] != '.' && strcmp(d->d_name + n - 4, ".lua") == 0;
}

/* The store's query code over the tool's collections, with the policies of
 * dir and the tool's budget and memory cap (the policy engine's defaults). */
static ts_sq_t *s_query_code(const char *dir, char *err, size_t errlen)
{
    ts_config_t config;
    ts_config_init(&config);
    config.policies_dir = ts_xstrdup(dir);
    config.lua.memory_bytes = 0;
    config.lua.instruction_budget = 0;
    ts_sq_t *sq = ts_sq_new(&config, &(ts_sq_hooks_t){s_view, s_each}, err, errlen);
    ts_config_free(&config);
    return sq;
}

int ts_policy_test_dir(const char *dir, FILE *out)
{
    char err[1024];
    tool_t tool = {0};
    ts_policy_opts_t opts = {.lookup = s_lookup, .lookup_arg = &tool, .name = "policy-test"};
    tool.policy = ts_policy_new(dir, &opts, err, sizeof err);
    if (tool.policy)
        tool.sq = s_query_code(dir, err, sizeof err);
    if (!tool.sq) {
        fprintf(out, "FAIL loading policies: %s\n0 passed, 1 failed\n", err);
        ts_policy_destroy(&tool.policy);
        return 1;
    }
    struct dirent **names = NULL;
    int n = scandir(dir, &names, s_is_test_file, alphasort);
    int passed = 0, failed = 0;
    if (n < 0) {
        fprintf(out, "FAIL %s: %s\n", dir, strerror(errno));
        failed++;
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        const char *file = names[i]->d_name;
        ts_sandbox_t *sb = ts_sandbox_new(dir, 0, 0, err, sizeof err);
        file_call_t c = {&tool, file, 0, ""};
        if (!sb || ts_sandbox_pcall(sb, s_setup_and_load, &c, err, sizeof err) != 0) {
            fprintf(out, "FAIL %s: %s\n", file, err);
            failed++;
            s_scratch_clear(&tool);
            ts_sandbox_destroy(&sb);
            continue;
        }
        int cases = c.index;
        for (int k = 1; k <= cases; k++) {
            c.index = k;
            snprintf(c.name, sizeof c.name, "case %d", k);
            ts_sandbox_set_label(sb, file);
            int rc = ts_sandbox_pcall(sb, s_run_case, &c, err, sizeof err);
            s_scratch_clear(&tool);
            tool.existing = NULL;
            if (rc == 0) {
                fprintf(out, "ok   %s: %s\n", file, c.name);
                passed++;
            } else {
                fprintf(out, "FAIL %s: %s: %s\n", file, c.name, err);
                failed++;
            }
        }
        ts_sandbox_destroy(&sb);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    ts_policy_destroy(&tool.policy);
    ts_sq_destroy(&tool.sq);
    for (size_t i = 0; i < tool.ncolls; i++)
        free(tool.colls[i].name);
    if (passed + failed == 0)
        fprintf(out, "no *_test.lua files in %s\n", dir);
    fprintf(out, "%d passed, %d failed\n", passed, failed);
    return failed;
}

/* ---- check ---- */

static int s_compile_call(lua_State *L)
{
    ts_sandbox_compile_file(L, lua_touserdata(L, 1));
    return 0;
}

/* Runs luacheck on dir, copying its report to out. Returns 1 when it found
 * something, 0 when clean or not installed. */
static int s_luacheck(const char *dir, FILE *out)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 0;
    fflush(out);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return 0;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        char *argv[] = {"luacheck", "--no-color", "--codes", "--std", "lua54",
                        "--read-globals", "ts", "test", "expect_valid", "expect_invalid",
                        "expect_select", "expect_conflict", "expect_equal", "set_now",
                        "--", (char *)dir, NULL};
        execvp("luacheck", argv);
        _exit(127);
    }
    close(fds[1]);
    char buf[4096];
    ssize_t r;
    ts_buf_t report = {0};
    while ((r = read(fds[0], buf, sizeof buf)) > 0)
        ts_buf_append(&report, buf, (size_t)r);
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 2;
    if (code == 127) {
        fprintf(out, "luacheck not installed; skipped\n");
        ts_buf_free(&report);
        return 0;
    }
    if (report.data)
        fputs(report.data, out);
    ts_buf_free(&report);
    return code != 0;
}

int ts_policy_check_dir(const char *dir, FILE *out)
{
    char err[1024], loaderr[1024] = "";
    int problems = 0;
    ts_policy_t *p = ts_policy_new(dir, NULL, loaderr, sizeof loaderr);
    if (!p) {
        fprintf(out, "%s\n", loaderr);
        problems++;
    } else {
        cJSON *info = ts_policy_info(p);
        char *text = cJSON_PrintUnformatted(info);
        fprintf(out, "loaded: %s\n", text);
        free(text);
        cJSON_Delete(info);
        ts_policy_destroy(&p);
    }
    struct dirent **names = NULL;
    int n = scandir(dir, &names, s_is_lua_file, alphasort);
    ts_sandbox_t *sb = n > 0 ? ts_sandbox_new(dir, 0, 0, err, sizeof err) : NULL;
    for (int i = 0; i < n; i++) {
        const char *f = names[i]->d_name;
        if (sb && ts_sandbox_pcall(sb, s_compile_call, (void *)f, err, sizeof err) != 0) {
            if (strcmp(err, loaderr) != 0) { /* not reported by the load already */
                fprintf(out, "%s\n", err);
                problems++;
            }
        }
        free(names[i]);
    }
    free(names);
    ts_sandbox_destroy(&sb);
    problems += s_luacheck(dir, out);
    fprintf(out, "%d problem%s\n", problems, problems == 1 ? "" : "s");
    return problems;
}
