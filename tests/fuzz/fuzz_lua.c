/* fuzz_lua.c — documents between JSON and Lua (src/policy/luaconv.c).
 *
 * Input: a JSON document (what the front door lets in: UTF-8, no string
 * cJSON reads wrong).
 * - A policy (tests/fuzz/policy) gets the document as the store hands it
 *   to a validator, once as text (ts_policy_validate_text: the table made
 *   straight from the text) and once as a tree (ts_policy_validate: the
 *   table made from cJSON's); it writes the table out canonically, and
 *   the two must be the same. The store validates creates and most
 *   updates from the text and the rest from the tree.
 * - In a bare lua_State (one for the run), the tree pushed as a Lua value
 *   and converted back (ts_lua_push_json, ts_lua_to_json) is the same JSON,
 *   as Lua can hold it: no nulls in objects, the last of a key given
 *   twice, {} for an empty array, 0 for -0; an array with nulls may come
 *   back refused (its holes). */
#include "fuzz.h"

#include "policy/luajson.h"
#include "policy/policy.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>

static ts_policy_t *policy;
static lua_State *bare;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ts_log_set_level(TS_LOG_ERROR);
    const char *src = getenv("TS_SOURCE_DIR");
    char dir[4096], err[512];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/policy", src ? src : ".");
    policy = ts_policy_new(dir, NULL, err, sizeof err);
    FUZZ_CHECK(policy, "policy: %s", err);
    ts_policy_set_now(policy, 1765000000000);
    bare = luaL_newstate();
    return 0;
}

/* The policy's dump of the document (its one error's message), or
 * "error" when the call failed (depth, budget, memory). */
static char *dump_of(int rc, cJSON *errors)
{
    const char *message = ts_json_string(cJSON_GetArrayItem(errors, 0), "message");
    FUZZ_CHECK(rc == TS_POLICY_ERROR || (rc == TS_POLICY_INVALID && message), "rc %d", rc);
    char *copy = ts_xstrdup(rc == TS_POLICY_INVALID ? message : "error");
    cJSON_Delete(errors);
    return copy;
}

static void text_and_tree(const char *text, size_t len)
{
    static const char *const drop[] = {"id"};
    size_t slen;
    char *stored = fuzz_stored(text, len, drop, 1, &slen);
    if (!stored)
        return;
    /* the tree as the store parses it (store_parse_doc): its id first */
    cJSON *tree = fuzz_parse(stored, slen);
    FUZZ_CHECK(tree, "stored text does not read back: %s", stored);
    cJSON *id = cJSON_CreateString("doc-1");
    id->string = ts_xstrdup("id");
    id->next = tree->child;
    id->prev = tree->child ? tree->child->prev : id;
    if (tree->child)
        tree->child->prev = id;
    tree->child = id;

    ts_policy_doc_t doc = {"doc-1", 5, stored, slen};
    cJSON *errors = NULL;
    char err[512] = "";
    int rc = ts_policy_validate_text(policy, "fuzz", &doc, NULL, &errors, err, sizeof err);
    char *from_text = dump_of(rc, errors);
    errors = NULL;
    rc = ts_policy_validate(policy, "fuzz", tree, NULL, &errors, err, sizeof err);
    char *from_tree = dump_of(rc, errors);
    FUZZ_CHECK(strcmp(from_text, from_tree) == 0, "document %s: from the text %s, from the tree %s",
               stored, from_text, from_tree);
    free(from_text);
    free(from_tree);
    cJSON_Delete(tree);
    free(stored);
}

/* ---- the round trip in a bare state ---- */

static bool has_null_in_array(const cJSON *item)
{
    for (const cJSON *c = item->child; c; c = c->next)
        if ((cJSON_IsArray(item) && cJSON_IsNull(c)) || has_null_in_array(c))
            return true;
    return false;
}

static int depth_of(const cJSON *item)
{
    int d = 0;
    for (const cJSON *c = item->child; c; c = c->next) {
        int k = depth_of(c);
        d = k > d ? k : d;
    }
    return d + (cJSON_IsObject(item) || cJSON_IsArray(item));
}

static int by_key(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* item as Lua holds it, printed with keys sorted (Lua tables have no
 * order). */
static void canonical(ts_buf_t *b, const cJSON *item)
{
    if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
        const cJSON *kept[4096];
        size_t n = 0;
        for (const cJSON *c = item->child; c && n < 4096; c = c->next) {
            if (cJSON_IsObject(item) && cJSON_IsNull(c))
                continue;
            size_t k = 0; /* a key twice: the last one stays */
            while (cJSON_IsObject(item) && k < n && strcmp(kept[k]->string, c->string) != 0)
                k++;
            if (k < n)
                kept[k] = c;
            else
                kept[n++] = c;
        }
        bool object = cJSON_IsObject(item) || n == 0;
        if (cJSON_IsObject(item))
            qsort(kept, n, sizeof *kept, by_key);
        ts_buf_puts(b, object ? "{" : "[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                ts_buf_puts(b, ",");
            if (object) {
                ts_buf_json_string(b, kept[i]->string, strlen(kept[i]->string));
                ts_buf_puts(b, ":");
            }
            canonical(b, kept[i]);
        }
        ts_buf_puts(b, object ? "}" : "]");
    } else if (cJSON_IsNumber(item) && item->valuedouble == 0) {
        ts_buf_puts(b, "0");
    } else {
        FUZZ_CHECK(ts_buf_json(b, item) == 0, "print");
    }
}

static int push(lua_State *L)
{
    ts_lua_push_json(L, lua_touserdata(L, 1));
    return 1;
}

static void round_trip(const cJSON *tree)
{
    lua_settop(bare, 0);
    lua_pushcfunction(bare, push);
    lua_pushlightuserdata(bare, (void *)tree);
    if (lua_pcall(bare, 1, 1, 0) != LUA_OK) {
        FUZZ_CHECK(depth_of(tree) > 90, "push raised: %s", lua_tostring(bare, -1));
        return;
    }
    char err[256] = "";
    cJSON *back = ts_lua_to_json(bare, -1, err, sizeof err);
    lua_settop(bare, 0);
    if (!back) {
        FUZZ_CHECK(has_null_in_array(tree), "converted back: %s", err);
        return;
    }
    if (!cJSON_IsNull(tree) && !has_null_in_array(tree)) {
        ts_buf_t want = {0}, got = {0};
        canonical(&want, tree);
        canonical(&got, back);
        FUZZ_CHECK(strcmp(want.data, got.data) == 0, "round trip of %s gives %s", want.data,
                   got.data);
        ts_buf_free(&want);
        ts_buf_free(&got);
    }
    cJSON_Delete(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1); /* exactly size bytes, for ASan */
    memcpy(text, data, size);
    if (fuzz_admissible(text, size) && fuzz_no_controls(text, size)) {
        text_and_tree(text, size);
        cJSON *tree = fuzz_parse(text, size);
        if (tree && !ts_json_overflow(tree, NULL)) /* 1e400: refused at the door */
            round_trip(tree);
        cJSON_Delete(tree);
    }
    free(text);
    return 0;
}
