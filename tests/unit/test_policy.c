/* test_policy.c — the sandbox and the loader against bad and hostile
 * policies (tests/fixtures/policies/<case>/). After every case the engine
 * must still answer a harmless call. */
#include "therasync/log.h"
#include "policy/policy.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char s_path[1024];

static const char *fixture(const char *name)
{
    const char *src = getenv("TS_SOURCE_DIR");
    snprintf(s_path, sizeof s_path, "%s/tests/fixtures/policies/%s", src ? src : ".", name);
    return s_path;
}

static const char *shipped(void)
{
    const char *src = getenv("TS_SOURCE_DIR");
    snprintf(s_path, sizeof s_path, "%s/policies", src ? src : ".");
    return s_path;
}

/* ctx.find over a cJSON array of documents. */
static int lookup_array(void *arg, const char *collection, const char *field, const char *value,
                        ts_policy_visit_fn visit, void *visit_arg)
{
    (void)collection;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, (const cJSON *)arg)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(doc, field);
        if (cJSON_IsString(f) && strcmp(f->valuestring, value) == 0 && visit(visit_arg, doc))
            break;
    }
    return 0;
}

static ts_policy_t *s_policy;
static cJSON *s_docs;

static ts_policy_t *open_hostile(size_t mem_cap, long budget)
{
    char err[512] = "";
    cJSON *config = cJSON_Parse("{\"max_duration\": 90, \"rooms\": [\"A\", \"B\"]}");
    s_docs = cJSON_Parse("[{\"id\":\"a\",\"therapist_id\":\"t1\"},{\"id\":\"b\",\"therapist_id\":"
                         "\"t1\"},{\"id\":\"c\",\"therapist_id\":\"t2\"}]");
    ts_policy_opts_t opts = {.mem_cap_bytes = mem_cap,
                             .instr_budget = budget,
                             .clinic_config = config,
                             .lookup = lookup_array,
                             .lookup_arg = s_docs,
                             .name = "test"};
    ts_policy_t *p = ts_policy_new(fixture("hostile"), &opts, err, sizeof err);
    cJSON_Delete(config);
    cr_assert_not_null(p, "load failed: %s", err);
    return p;
}

static void setup(void) { s_policy = open_hostile(8u << 20, 2000000); }
static void teardown(void)
{
    ts_policy_destroy(&s_policy);
    cJSON_Delete(s_docs);
    s_docs = NULL;
}

/* Runs validate.<rule> on a small doc; returns the code and fills err. */
static int run(const char *rule, char *err, size_t errlen)
{
    cJSON *doc = cJSON_Parse("{\"id\":\"a\",\"therapist_id\":\"t1\",\"expect\":2}");
    cJSON *errors = NULL;
    err[0] = 0;
    int rc = ts_policy_validate(s_policy, rule, doc, NULL, &errors, err, errlen);
    cJSON_Delete(doc);
    cJSON_Delete(errors);
    return rc;
}

static void still_alive(void)
{
    char err[512];
    cr_assert_eq(run("ok", err, sizeof err), TS_POLICY_OK, "engine unusable after: %s", err);
}

static void expect_error(const char *rule, const char *needle)
{
    char err[512];
    int rc = run(rule, err, sizeof err);
    cr_assert_eq(rc, TS_POLICY_ERROR, "%s: expected an error, got %d", rule, rc);
    cr_assert(strstr(err, needle), "%s: message '%s' lacks '%s'", rule, err, needle);
    still_alive();
}

TestSuite(policy_sandbox, .init = setup, .fini = teardown);

Test(policy_sandbox, harmless_rules_and_require_work)
{
    char err[512];
    cr_assert_eq(run("ok", err, sizeof err), TS_POLICY_OK, "%s", err);
    cr_assert_eq(run("refuse", err, sizeof err), TS_POLICY_INVALID);
    cr_assert_eq(run("no_such_collection", err, sizeof err), TS_POLICY_OK);
}

Test(policy_sandbox, runtime_error_has_file_and_line)
{
    expect_error("runtime_error", "validate.lua:11:");
}

Test(policy_sandbox, infinite_loop_hits_the_budget) { expect_error("loop", "budget exceeded"); }
Test(policy_sandbox, pcall_cannot_swallow_the_budget) { expect_error("pcall_loop", "budget exceeded"); }
Test(policy_sandbox, xpcall_handler_cannot_swallow_the_budget)
{
    expect_error("xpcall_handler", "budget exceeded");
}
Test(policy_sandbox, catching_errors_in_a_loop_still_ends)
{
    expect_error("error_in_loop_catch", "budget exceeded");
}

Test(policy_sandbox, unbounded_allocation_hits_the_cap)
{
    expect_error("alloc", "memory cap exceeded");
    expect_error("alloc_pcall", "memory cap exceeded"); /* pcall cannot catch it either */
    expect_error("big_rep", "");
    still_alive();
}

Test(policy_sandbox, no_os_io_load_debug_coroutine_collectgarbage)
{
    expect_error("os_execute", "execute");
    expect_error("os_exit", "exit");
    expect_error("io_open", "unknown global 'io'");
    expect_error("load_bytecode", "unknown global 'load'");
    expect_error("debug_sethook", "unknown global 'debug'");
    expect_error("coroutine", "unknown global 'coroutine'");
    expect_error("collectgarbage", "unknown global 'collectgarbage'");
    expect_error("rawset_string", "unknown global 'rawset'");
    expect_error("global_g", "unknown global '_G'");
    struct stat st;
    cr_assert_neq(stat("/tmp/pwned", &st), 0);
}

Test(policy_sandbox, no_string_dump)
{
    expect_error("string_dump", "dump");
    expect_error("string_method_dump", "dump");
}

Test(policy_sandbox, require_stays_inside_the_directory)
{
    expect_error("require_parent", "letters, digits");
    expect_error("require_abs", "letters, digits");
    expect_error("require_dots", "letters, digits");
    expect_error("require_bytecode", "binary chunk");
}

Test(policy_sandbox, shared_tables_are_frozen)
{
    expect_error("setmetatable_string", "protected metatable");
    expect_error("setmetatable_table", "protected metatable");
    expect_error("setmetatable_env", "protected metatable");
    expect_error("string_meta", "");
    expect_error("write_string", "read-only");
    expect_error("write_math", "read-only");
    expect_error("global_write", "assignment to global 'leaked'");
    expect_error("config_write", "read-only");
    expect_error("gc_finalizer", "__gc");
}

Test(policy_sandbox, odd_error_objects)
{
    expect_error("error_table", "error object is a table");
    expect_error("error_tostring", "error object is a table");
}

Test(policy_sandbox, wrong_return_types_fail_closed)
{
    expect_error("returns_string", "must return true");
    expect_error("returns_false_only", "must return true");
    expect_error("returns_bad_error", "needs field");
    expect_error("returns_empty_errors", "empty list");
    expect_error("returns_true_and_more", "must return true");
    expect_error("returns_nothing", "must return true");
    expect_error("cyclic", "needs field");
}

Test(policy_sandbox, ctx_find_and_config)
{
    char err[512];
    cr_assert_eq(run("find", err, sizeof err), TS_POLICY_OK, "%s", err);
    cr_assert_eq(run("uses_config", err, sizeof err), TS_POLICY_OK, "%s", err);
}

Test(policy_sandbox, selector_that_errors_for_some_documents)
{
    char err[512];
    bool match;
    cJSON *params = cJSON_Parse("{\"status\":\"scheduled\"}");
    cJSON *good = cJSON_Parse("{\"id\":\"1\",\"status\":\"scheduled\"}");
    cJSON *bad = cJSON_Parse("{\"id\":\"2\",\"bad\":true}");
    ts_policy_query_t *q = ts_policy_query_new(s_policy, "flaky", params, err, sizeof err);
    cr_assert_not_null(q, "%s", err);
    cr_assert_eq(ts_policy_query_match(q, good, &match, err, sizeof err), TS_POLICY_OK);
    cr_assert(match);
    cr_assert_eq(ts_policy_query_match(q, bad, &match, err, sizeof err), TS_POLICY_ERROR);
    cr_assert(strstr(err, "cannot handle this document"), "%s", err);
    cr_assert_eq(ts_policy_query_match(q, good, &match, err, sizeof err), TS_POLICY_OK);
    cr_assert(match);
    ts_policy_query_destroy(&q);
    cr_assert_null(q);
    cr_assert_eq(ts_policy_where(s_policy, "nonbool", good, NULL, &match, err, sizeof err),
                 TS_POLICY_ERROR);
    cr_assert(strstr(err, "boolean"), "%s", err);
    cr_assert_eq(ts_policy_where(s_policy, "slow", good, NULL, &match, err, sizeof err),
                 TS_POLICY_ERROR);
    cr_assert(strstr(err, "budget"), "%s", err);
    cr_assert_eq(ts_policy_where(s_policy, "all", bad, NULL, &match, err, sizeof err),
                 TS_POLICY_OK);
    cr_assert(match);
    cr_assert_eq(ts_policy_where(s_policy, "nope", bad, NULL, &match, err, sizeof err),
                 TS_POLICY_ERROR);
    cJSON_Delete(params);
    cJSON_Delete(good);
    cJSON_Delete(bad);
    still_alive();
}

static int resolve(const char *coll, ts_policy_outcome_t *out, char *err, size_t errlen)
{
    cJSON *base = cJSON_Parse("{\"id\":\"d\",\"title\":\"b\",\"room\":\"A1\"}");
    cJSON *mine = cJSON_Parse("{\"id\":\"d\",\"title\":\"m\",\"room\":\"A1\"}");
    cJSON *theirs = cJSON_Parse("{\"id\":\"d\",\"title\":\"t\",\"room\":\"B2\"}");
    int rc = ts_policy_resolve(s_policy, coll, base, mine, theirs, out, err, errlen);
    cJSON_Delete(base);
    cJSON_Delete(mine);
    cJSON_Delete(theirs);
    return rc;
}

Test(policy_sandbox, conflict_outcomes)
{
    char err[512];
    ts_policy_outcome_t out;
    cr_assert_eq(resolve("theirs", &out, err, sizeof err), TS_POLICY_OK, "%s", err);
    cr_assert_eq(out.kind, TS_OUTCOME_THEIRS);
    cr_assert_str_eq(out.policy, "conflict.lua");
    cr_assert_eq(resolve("mine", &out, err, sizeof err), TS_POLICY_OK);
    cr_assert_eq(out.kind, TS_OUTCOME_MINE);
    cr_assert_eq(resolve("reject", &out, err, sizeof err), TS_POLICY_OK);
    cr_assert_eq(out.kind, TS_OUTCOME_REJECT);
    cr_assert_str_eq(out.reason, "locked by the clinic");
    cr_assert_eq(resolve("custom", &out, err, sizeof err), TS_POLICY_OK, "%s", err);
    cr_assert_eq(out.kind, TS_OUTCOME_MERGE);
    cr_assert_str_eq(cJSON_GetObjectItem(out.doc, "title")->valuestring, "m+t");
    cr_assert_str_eq(cJSON_GetObjectItem(out.doc, "id")->valuestring, "d"); /* id kept */
    ts_policy_outcome_clear(&out);
    /* No policy: default merge. */
    cr_assert_eq(resolve("other", &out, err, sizeof err), TS_POLICY_OK);
    cr_assert_eq(out.kind, TS_OUTCOME_MERGE);
    cr_assert_str_eq(out.policy, "default");
    ts_policy_outcome_clear(&out);
    /* Failing policies: error, and the default merge to fall back on. */
    const char *bad[] = {"bad", "both", "change_id", "loop"};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(resolve(bad[i], &out, err, sizeof err), TS_POLICY_ERROR, "%s", bad[i]);
        cr_assert_eq(out.kind, TS_OUTCOME_MERGE);
        cr_assert_str_eq(out.policy, "default");
        cr_assert_str_eq(cJSON_GetObjectItem(out.doc, "title")->valuestring, "t");
        cr_assert_str_eq(cJSON_GetObjectItem(out.doc, "room")->valuestring, "B2");
        ts_policy_outcome_clear(&out);
    }
    still_alive();
}

Test(policy_sandbox, memory_is_released_after_a_memory_error)
{
    char err[512];
    cJSON *before = ts_policy_info(s_policy);
    double used0 = cJSON_GetObjectItem(before, "mem_used")->valuedouble;
    cJSON_Delete(before);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(run("alloc", err, sizeof err), TS_POLICY_ERROR);
    cJSON *after = ts_policy_info(s_policy);
    double used1 = cJSON_GetObjectItem(after, "mem_used")->valuedouble;
    cJSON_Delete(after);
    cr_assert_lt(used1, used0 * 2 + 65536, "memory not released: %.0f -> %.0f", used0, used1);
    still_alive();
}

/* ---- loading and reload ---- */

static void expect_load_failure(const char *dir, const char *needle)
{
    char err[512] = "";
    ts_policy_opts_t opts = {.instr_budget = 1000000};
    ts_policy_t *p = ts_policy_new(fixture(dir), &opts, err, sizeof err);
    cr_assert_null(p, "%s: loaded", dir);
    cr_assert(strstr(err, needle), "%s: message '%s' lacks '%s'", dir, err, needle);
}

Test(policy_load, broken_directories_are_refused_with_file_and_line)
{
    expect_load_failure("syntax_error", "validate.lua:6:");
    expect_load_failure("load_error", "selectors.lua:2:");
    expect_load_failure("no_table", "conflict.lua: must return a table");
    expect_load_failure("bad_selector", "selectors.lua: selector 'sideways'");
    expect_load_failure("load_loop", "budget exceeded");
    expect_load_failure("bytecode", "binary chunk");
    expect_load_failure("missing_file", "conflict.lua: cannot open");
    expect_load_failure("unknown_global", "validate.lua:1: unknown global 'undefined_helper'");
    expect_load_failure("does_not_exist", "validate.lua: cannot open");
}

Test(policy_load, reload_is_all_or_nothing)
{
    char err[512];
    ts_policy_t *p = ts_policy_new(shipped(), NULL, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    cJSON *doc = cJSON_Parse("{\"id\":\"s1\",\"patient_id\":\"p\",\"therapist_id\":\"t\","
                             "\"scheduled_at\":\"2026-03-02T09:00:00Z\",\"duration_min\":50,"
                             "\"status\":\"scheduled\",\"modality\":\"in_person\"}");
    cJSON *errors = NULL;
    cr_assert_eq(ts_policy_validate(p, "sessions", doc, NULL, &errors, err, sizeof err),
                 TS_POLICY_OK, "%s", err);
    const char *bad[] = {"syntax_error", "load_error", "no_table", "load_loop", "missing_file"};
    for (size_t i = 0; i < 5; i++) {
        err[0] = 0;
        cr_assert_eq(ts_policy_reload(p, fixture(bad[i]), err, sizeof err), -1, "%s", bad[i]);
        cr_assert(strstr(err, ".lua"), "no file in '%s'", err);
        cr_assert_eq(ts_policy_validate(p, "sessions", doc, NULL, &errors, err, sizeof err),
                     TS_POLICY_OK, "old policies gone after %s: %s", bad[i], err);
        cr_assert_not_null(ts_policy_selector_find(p, "upcoming"));
    }
    /* A prepared query dies cleanly with the policies it was made from. */
    ts_policy_query_t *q = ts_policy_query_new(p, "upcoming", NULL, err, sizeof err);
    cr_assert_not_null(q, "%s", err);
    cr_assert_eq(ts_policy_reload(p, fixture("v2"), err, sizeof err), 0, "%s", err);
    bool match;
    cr_assert_eq(ts_policy_query_match(q, doc, &match, err, sizeof err), TS_POLICY_ERROR);
    ts_policy_query_destroy(&q);
    cr_assert_eq(ts_policy_validate(p, "sessions", doc, NULL, &errors, err, sizeof err),
                 TS_POLICY_INVALID);
    cr_assert_str_eq(cJSON_GetArrayItem(errors, 0)->child->valuestring, "id");
    cJSON_Delete(errors);
    cr_assert_null(ts_policy_selector_find(p, "upcoming"));
    cJSON *info = ts_policy_info(p);
    cr_assert(strstr(cJSON_GetObjectItem(info, "dir")->valuestring, "v2"));
    cJSON_Delete(info);
    /* NULL reloads the same directory. */
    cr_assert_eq(ts_policy_reload(p, NULL, err, sizeof err), 0, "%s", err);
    cJSON_Delete(doc);
    ts_policy_destroy(&p);
    ts_policy_destroy(&p);
    cr_assert_null(p);
}

Test(policy_load, tiny_memory_cap_fails_cleanly)
{
    char err[512];
    ts_policy_opts_t opts = {.mem_cap_bytes = 16 * 1024};
    ts_policy_t *p = ts_policy_new(shipped(), &opts, err, sizeof err);
    cr_assert_null(p);
    cr_assert(strstr(err, "memory") || strstr(err, "Lua state"), "%s", err);
}

/* ---- ctx.log never writes health data ---- */

/* ctx.find over one stored document, given as text (as the store does). */
static int find_one_text(void *arg, const ts_policy_find_t *find, ts_policy_visit_doc_fn visit,
                         void *visit_arg)
{
    (void)arg, (void)find;
    static const char text[] = "{\"therapist_id\":\"t1\",\"notes\":\"sleeps badly since March\"}";
    ts_policy_doc_t doc = {"other-1", 7, text, sizeof text - 1};
    visit(visit_arg, &doc, NULL);
    return 0;
}

/* Runs fn with stderr going to a file; returns what was written (static). */
static const char *captured(void (*fn)(ts_policy_t *), ts_policy_t *p)
{
    static char out[8192];
    fflush(stderr);
    int saved = dup(2);
    FILE *f = tmpfile();
    cr_assert(f && saved >= 0);
    dup2(fileno(f), 2);
    fn(p);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    return out;
}

static void validate_with_notes(ts_policy_t *p)
{
    cJSON *doc = cJSON_Parse("{\"id\":\"s1\",\"therapist_id\":\"t1\","
                             "\"notes\":\"patient reports insomnia\"}");
    cJSON *prev = cJSON_Parse("{\"id\":\"s1\",\"therapist_id\":\"t1\",\"notes\":\"first visit\"}");
    char err[256];
    cr_assert_eq(ts_policy_validate(p, "sessions", doc, prev, NULL, err, sizeof err), TS_POLICY_OK,
                 "%s", err);
    cJSON_Delete(doc);
    cJSON_Delete(prev);
}

static void resolve_with_summary(ts_policy_t *p)
{
    cJSON *mine = cJSON_Parse("{\"id\":\"c1\",\"status\":\"draft\","
                              "\"summary\":{\"plan\":\"weekly CBT sessions\"}}");
    cJSON *theirs = cJSON_Parse("{\"id\":\"c1\",\"status\":\"final\",\"version\":2}");
    ts_policy_outcome_t out;
    char err[256];
    cr_assert_eq(ts_policy_resolve(p, "consultations", NULL, mine, theirs, &out, err, sizeof err),
                 TS_POLICY_OK, "%s", err);
    ts_policy_outcome_clear(&out);
    cJSON_Delete(mine);
    cJSON_Delete(theirs);
}

Test(policy_log, ctx_log_redacts_the_sensitive_text_of_the_documents_it_sees)
{
    char err[512];
    ts_policy_opts_t opts = {.find = find_one_text, .name = "test"};
    ts_policy_t *p = ts_policy_new(fixture("logging"), &opts, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    ts_log_set_level(TS_LOG_DEBUG);
    const char *log = captured(validate_with_notes, p);
    cr_assert(strstr(log, "note: [redacted] / therapist t1 / was: [redacted]"), "%s", log);
    cr_assert(strstr(log, "other: [redacted]"), "%s", log);
    cr_assert_null(strstr(log, "insomnia"), "%s", log);
    cr_assert_null(strstr(log, "first visit"), "%s", log);
    cr_assert_null(strstr(log, "sleeps badly"), "%s", log);
    log = captured(resolve_with_summary, p);
    cr_assert(strstr(log, "mine: [redacted] theirs: final"), "%s", log);
    cr_assert_null(strstr(log, "CBT"), "%s", log);
    /* Above debug level ctx.log writes nothing at all. */
    ts_log_set_level(TS_LOG_INFO);
    log = captured(validate_with_notes, p);
    cr_assert_null(strstr(log, "note:"), "%s", log);
    ts_policy_destroy(&p);
}

/* The store skips validating an update (and the document tree it needs)
 * for a collection without a rule: which collections have one must be
 * known exactly, whatever else validate.lua's table holds. */
Test(policy_loader, knows_which_collections_have_a_validator)
{
    char err[512];
    ts_policy_opts_t opts = {0};
    ts_policy_t *p = ts_policy_new(shipped(), &opts, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    cr_assert(ts_policy_has_validator(p, "sessions"));
    cr_assert(ts_policy_has_validator(p, "consultations"));
    cr_assert_not(ts_policy_has_validator(p, "invoices"));
    cr_assert_eq(ts_policy_reload(p, fixture("permissive"), err, sizeof err), 0, "%s", err);
    cr_assert_not(ts_policy_has_validator(p, "sessions"), "reload replaces the list");
    cr_assert_eq(ts_policy_reload(p, fixture("odd_validators"), err, sizeof err), 0, "%s", err);
    cr_assert(ts_policy_has_validator(p, "sessions"), "an empty key does not end the list");
    cr_assert_not(ts_policy_has_validator(p, ""));
    cJSON *doc = cJSON_Parse("{\"id\":\"s1\",\"room\":\"A\"}"), *errors = NULL;
    cr_assert_eq(ts_policy_validate(p, "sessions", doc, NULL, &errors, err, sizeof err),
                 TS_POLICY_INVALID);
    cJSON_Delete(errors);
    cJSON_Delete(doc);
    ts_policy_destroy(&p);
}

/* A whole small file into a new string, or NULL. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *text = f ? calloc(1, 1 << 16) : NULL;
    if (text && fread(text, 1, (1 << 16) - 1, f) == 0) {
        free(text);
        text = NULL;
    }
    if (f)
        fclose(f);
    return text;
}

/* The permissive policies are the shipped ones without validation: the
 * bench's "without validation" runs (bench/README.md) and the tests read
 * the shipped selectors through them, lower bounds included. */
Test(policy_loader, permissive_fixture_has_the_shipped_selectors)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/selectors.lua", shipped());
    char *ours = slurp(path);
    snprintf(path, sizeof path, "%s/selectors.lua", fixture("permissive"));
    char *theirs = slurp(path);
    cr_assert(ours && theirs);
    cr_assert_str_eq(theirs, ours, "tests/fixtures/policies/permissive/selectors.lua is not "
                                   "policies/selectors.lua: copy it over");
    free(ours);
    free(theirs);
}

/* The dump of a document by the policy of tests/fuzz/policy (its validator
 * refuses every document with the table it got, written out), handed over
 * as text or as the tree the store would parse (its id first). */
static char *table_of(ts_policy_t *p, const char *text, bool as_text)
{
    cJSON *errors = NULL;
    char err[256] = "";
    int rc;
    if (as_text) {
        ts_policy_doc_t d = {"d1", 2, text, strlen(text)};
        rc = ts_policy_validate_text(p, "fuzz", &d, NULL, &errors, err, sizeof err);
    } else {
        cJSON *doc = cJSON_Parse(text), *id = cJSON_CreateString("d1");
        cJSON_AddItemToObject(doc, "id", id);
        rc = ts_policy_validate(p, "fuzz", doc, NULL, &errors, err, sizeof err);
        cJSON_Delete(doc);
    }
    cr_assert_eq(rc, TS_POLICY_INVALID, "%s", err);
    const cJSON *message = cJSON_GetObjectItem(cJSON_GetArrayItem(errors, 0), "message");
    cr_assert(cJSON_IsString(message));
    char *out = strdup(message->valuestring);
    cJSON_Delete(errors);
    return out;
}

/* The store validates from the text or from the tree (write.c): a rule
 * must see the same table. tests/fuzz/fuzz_lua.c found a null after the
 * same key removing it from the text's table only, and integers of 16 to
 * 18 digits kept exact from the text but rounded (as a double) in the
 * tree. */
Test(policy, a_document_is_the_same_table_from_its_text_and_its_tree)
{
    const char *src = getenv("TS_SOURCE_DIR");
    char dir[1024], err[512] = "";
    snprintf(dir, sizeof dir, "%s/tests/fuzz/policy", src ? src : ".");
    ts_policy_t *p = ts_policy_new(dir, NULL, err, sizeof err);
    cr_assert(p, "%s", err);
    const char *docs[] = {"{\"a\":1,\"a\":null,\"b\":null}", "{\"n\":24691357802469134}",
                          "{\"n\":-123456789012345678,\"m\":999999999999999,\"f\":1.5}",
                          "{\"s\":\"x\",\"o\":{\"a\":null},\"l\":[1,2]}"};
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        char *from_text = table_of(p, docs[i], true), *from_tree = table_of(p, docs[i], false);
        cr_expect_str_eq(from_text, from_tree, "%s", docs[i]);
        free(from_text);
        free(from_tree);
    }
    char *t = table_of(p, docs[0], true);
    cr_expect_str_eq(t, "{\"a\"=integer:1,\"id\"=\"d1\"}");
    free(t);
    ts_policy_destroy(&p);
}

/* The nesting limit (100) is the same from the text and from the tree:
 * the text's nested values were pushed one level too shallow, so a
 * document 100 deep passed from its text and failed from its tree. */
Test(policy, a_document_too_deep_fails_from_its_text_and_its_tree)
{
    const char *src = getenv("TS_SOURCE_DIR");
    char dir[1024], err[512] = "", doc[512];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/policy", src ? src : ".");
    ts_policy_t *p = ts_policy_new(dir, NULL, err, sizeof err);
    cr_assert(p, "%s", err);
    for (int depth = 97; depth <= 102; depth++) {
        int n = snprintf(doc, sizeof doc, "{\"a\":");
        for (int i = 0; i < depth; i++)
            doc[n++] = '[';
        doc[n++] = '1';
        for (int i = 0; i < depth; i++)
            doc[n++] = ']';
        doc[n++] = '}';
        doc[n] = '\0';
        ts_policy_doc_t d = {"d1", 2, doc, strlen(doc)};
        cJSON *errors = NULL, *tree = cJSON_Parse(doc);
        int from_text = ts_policy_validate_text(p, "fuzz", &d, NULL, &errors, err, sizeof err);
        cJSON_Delete(errors);
        errors = NULL;
        int from_tree = ts_policy_validate(p, "fuzz", tree, NULL, &errors, err, sizeof err);
        cJSON_Delete(errors);
        cJSON_Delete(tree);
        cr_expect_eq(from_text, from_tree, "depth %d: %d from the text, %d from the tree", depth,
                     from_text, from_tree);
        cr_expect_eq(from_text, depth < 100 ? TS_POLICY_INVALID : TS_POLICY_ERROR, "depth %d",
                     depth);
    }
    ts_policy_destroy(&p);
}
