/* test_store_query.c — named selectors as the store serves them (store_query.c
 * with the shipped policies), over the benchmark's generated sessions: the
 * `upcoming` answers, and (when asked for) the cost of one query. */
#include "../../src/bench/gen.h"
#include "store/query.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_DOCS 100000
#define READ_SEED 4343u /* the select workload's (src/bench/workloads.c) */

/* A document as the store keeps it: its id apart, the text without it. */
typedef struct {
    char id[37];
    char *text;
    size_t len;
} doc_t;

static doc_t *s_docs;
static ts_sq_t *s_sq;
static ts_sq_coll_t *s_coll;
static ts_config_t s_config;

static void view(void *doc, ts_policy_doc_t *out)
{
    const doc_t *d = doc;
    *out = (ts_policy_doc_t){d->id, strlen(d->id), d->text, d->len};
}

static void each(void *coll, void (*fn)(void *arg, void *doc), void *arg)
{
    (void)coll;
    for (size_t i = 0; i < N_DOCS; i++)
        fn(arg, &s_docs[i]);
}

static void setup(void)
{
    s_docs = calloc(N_DOCS, sizeof *s_docs);
    gen_rng_t rng;
    gen_rng_seed(&rng, GEN_SEED);
    ts_buf_t b = {0};
    for (size_t i = 0; i < N_DOCS; i++) {
        gen_session_t s;
        gen_session(&rng, (int64_t)i, &s);
        ts_buf_reset(&b);
        cr_assert_eq(gen_session_json(&s, false, &b), 0);
        memcpy(s_docs[i].id, s.id, sizeof s.id);
        const char *rest = strchr(b.data, ',') + 1; /* after "id":"..." */
        s_docs[i].len = b.len - (size_t)(rest - b.data) + 1;
        s_docs[i].text = malloc(s_docs[i].len + 1);
        s_docs[i].text[0] = '{';
        memcpy(s_docs[i].text + 1, rest, s_docs[i].len);
    }
    ts_buf_free(&b);
    const char *src = getenv("TS_SOURCE_DIR");
    char dir[1024], err[512];
    snprintf(dir, sizeof dir, "%s/policies", src ? src : ".");
    ts_config_init(&s_config);
    s_config.policies_dir = strdup(dir);
    s_sq = ts_sq_new(&s_config, &(ts_sq_hooks_t){view, each}, err, sizeof err);
    cr_assert_not_null(s_sq, "%s", err);
    s_coll = ts_sq_attach(s_sq, "sessions", NULL);
    for (size_t i = 0; i < N_DOCS; i++)
        ts_sq_changed(s_coll, &s_docs[i], s_docs[i].text, s_docs[i].len);
}

static void teardown(void)
{
    ts_sq_destroy(&s_sq);
    ts_config_free(&s_config);
    for (size_t i = 0; i < N_DOCS; i++)
        free(s_docs[i].text);
    free(s_docs);
}

/* The select workload's i-th read: upcoming(therapist, now, 20). */
static char *upcoming_params(gen_rng_t *rng, char now[32])
{
    char t[12], text[256];
    gen_therapist_id((int)(gen_rng_next(rng) * GEN_N_THERAPISTS) + 1, t);
    gen_slot_iso((int64_t)(gen_rng_next(rng) * GEN_N_SLOTS), now);
    snprintf(text, sizeof text,
             "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":"
             "{\"therapist_id\":\"%s\",\"now\":\"%s\",\"limit\":20}}",
             t, now);
    return strdup(text);
}

/* Runs one query; returns its result object (parsed) or fails the test. */
static cJSON *query(const char *params)
{
    ts_envelope_t *e = ts_envelope_new(1);
    e->calls[0].method = TS_M_QUERY;
    e->calls[0].params = cJSON_Parse(params);
    ts_sq_query(s_sq, &e->calls[0], s_coll);
    cr_assert_eq(e->calls[0].err_code, 0, "%s", e->calls[0].err_message);
    cJSON *r = cJSON_ParseWithLength(e->calls[0].result, e->calls[0].result_len);
    ts_envelope_free(e);
    cr_assert_not_null(r);
    return r;
}

TestSuite(store_query, .init = setup, .fini = teardown, .timeout = 120);

/* Every answer holds the therapist's scheduled sessions from `now` on, in
 * time order, 20 at most; the total over 500 reads is what main gave before
 * the text scanning was sped up (aea67a2). */
Test(store_query, upcoming_answers_over_generated_sessions)
{
    gen_rng_t rng;
    gen_rng_seed(&rng, READ_SEED);
    long rows = 0;
    for (int i = 0; i < 500; i++) {
        char now[32];
        char *params = upcoming_params(&rng, now);
        cJSON *r = query(params);
        const cJSON *items = cJSON_GetObjectItem(r, "items");
        cr_assert(cJSON_GetArraySize(items) <= 20);
        const char *prev = "";
        const char *therapist = strstr(params, "thr-");
        for (const cJSON *it = items ? items->child : NULL; it; it = it->next, rows++) {
            const char *at = cJSON_GetObjectItem(it, "scheduled_at")->valuestring;
            cr_assert_str_eq(cJSON_GetObjectItem(it, "status")->valuestring, "scheduled");
            cr_assert(strncmp(cJSON_GetObjectItem(it, "therapist_id")->valuestring, therapist, 7) ==
                      0);
            cr_assert(strcmp(at, now) >= 0 && strcmp(at, prev) >= 0, "%s after %s", at, prev);
            cr_assert_eq(strlen(cJSON_GetObjectItem(it, "id")->valuestring), 36);
            prev = at;
        }
        cJSON_Delete(r);
        free(params);
    }
    cr_assert_eq(rows, 9672, "rows %ld", rows);
}

/* One round of queries; returns the microseconds spent inside the store.
 * Not inlined: callgrind counts it by name. */
__attribute__((noinline)) static int64_t timed_round(char **params, int n)
{
    int64_t spent = 0;
    for (int i = 0; i < n; i++) {
        ts_envelope_t *e = ts_envelope_new(1);
        e->calls[0].method = TS_M_QUERY;
        e->calls[0].params = cJSON_Parse(params[i]);
        int64_t t0 = ts_mono_us();
        ts_sq_query(s_sq, &e->calls[0], s_coll);
        spent += ts_mono_us() - t0;
        ts_envelope_free(e);
    }
    return spent;
}

/* What one upcoming query costs the store, without the front door and the
 * threads around it (bench/RESULTS.md, "Select and validation"): run with
 * TS_BENCH_N set; to count instructions, under `valgrind --tool=callgrind
 * --trace-children=yes --toggle-collect=timed_round`. */
Test(store_query, upcoming_cost)
{
    if (!getenv("TS_BENCH_N"))
        cr_skip_test("a measurement: run with TS_BENCH_N set");
    int n = (int)strtol(getenv("TS_BENCH_N"), NULL, 10);
    char **params = calloc((size_t)n, sizeof *params);
    gen_rng_t rng;
    gen_rng_seed(&rng, READ_SEED);
    for (int i = 0; i < n; i++) {
        char now[32];
        params[i] = upcoming_params(&rng, now);
    }
    cJSON_Delete(query(params[0])); /* builds the index, once */
    double best = 1e18;
    for (int round = 0; round < 3; round++) {
        double us = (double)timed_round(params, n) / n;
        best = us < best ? us : best;
    }
    fprintf(stderr, "store query: upcoming over %d generated sessions, %d queries x3: "
                    "%.1f us/query (best round)\n", N_DOCS, n, best);
    for (int i = 0; i < n; i++)
        free(params[i]);
    free(params);
}

/* ---- paging (store/page.h): cursors, and pages over every path ---- */

#include "store/page.h"

#define P_DOCS 300
#define P_SPARE 8

static doc_t p_docs[P_DOCS + P_SPARE];
static size_t p_n; /* documents in the collection: p_docs[0..p_n) */
static ts_sq_t *p_sq;
static ts_sq_coll_t *p_coll;
static ts_config_t p_config;

static void p_each(void *coll, void (*fn)(void *arg, void *doc), void *arg)
{
    (void)coll;
    for (size_t i = 0; i < p_n; i++)
        fn(arg, &p_docs[i]);
}

/* Sets document i's text (NULL: deleted) and tells the indexes. */
static void p_set(size_t i, const char *text)
{
    free(p_docs[i].text);
    p_docs[i].text = text ? strdup(text) : NULL;
    p_docs[i].len = text ? strlen(text) : 0;
    ts_sq_changed(p_coll, &p_docs[i], p_docs[i].text, p_docs[i].len);
}

static void p_session(size_t i, const char *therapist, int slot, const char *status)
{
    char text[256];
    if (slot < 0) /* no time: ordered before every time */
        snprintf(text, sizeof text, "{\"therapist_id\":\"%s\",\"status\":\"%s\"}", therapist,
                 status);
    else
        snprintf(text, sizeof text,
                 "{\"therapist_id\":\"%s\",\"scheduled_at\":\"2026-03-%02dT%02d:00:00Z\","
                 "\"status\":\"%s\"}",
                 therapist, 1 + slot / 24, slot % 24, status);
    p_set(i, text);
}

/* 300 sessions: ids against their addresses (s<7919*i mod 300>), three to
 * a time slot (ties go by id), every tenth of thr-2, every fifth cancelled,
 * a few without a time. */
static void p_setup(void)
{
    const char *src = getenv("TS_SOURCE_DIR");
    char dir[1024], err[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/policies/paging", src ? src : ".");
    ts_config_init(&p_config);
    p_config.policies_dir = strdup(dir);
    p_sq = ts_sq_new(&p_config, &(ts_sq_hooks_t){view, p_each}, err, sizeof err);
    cr_assert_not_null(p_sq, "%s", err);
    p_coll = ts_sq_attach(p_sq, "sessions", NULL);
    p_n = P_DOCS;
    for (size_t i = 0; i < P_DOCS; i++) {
        snprintf(p_docs[i].id, sizeof p_docs[i].id, "s%03zu", i * 7919 % P_DOCS);
        p_session(i, i % 10 == 9 ? "thr-2" : "thr-1", i % 50 == 7 ? -1 : (int)(i * 37 % 100),
                  i % 5 ? "scheduled" : "cancelled");
    }
}

static void p_teardown(void)
{
    ts_sq_destroy(&p_sq);
    ts_config_free(&p_config);
    for (size_t i = 0; i < P_DOCS + P_SPARE; i++)
        free(p_docs[i].text);
}

/* Runs query {collection, selector, params, limit?, cursor?} (limit 0:
 * none; cursor NULL: none). Returns the result, or NULL with *code set. */
static cJSON *p_query(const char *selector, const char *params, long limit, const char *cursor,
                      int *code, char *msg, size_t msglen)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "collection", "sessions");
    cJSON_AddStringToObject(p, "selector", selector);
    cJSON_AddItemToObject(p, "params", cJSON_Parse(params));
    if (limit)
        cJSON_AddNumberToObject(p, "limit", (double)limit);
    if (cursor)
        cJSON_AddStringToObject(p, "cursor", cursor);
    ts_envelope_t *e = ts_envelope_new(1);
    e->calls[0].method = TS_M_QUERY;
    e->calls[0].params = p;
    ts_sq_query(p_sq, &e->calls[0], p_coll);
    *code = e->calls[0].err_code;
    if (msg)
        snprintf(msg, msglen, "%s", e->calls[0].err_message ? e->calls[0].err_message : "");
    cJSON *r = *code ? NULL : cJSON_ParseWithLength(e->calls[0].result, e->calls[0].result_len);
    ts_envelope_free(e);
    cr_assert(*code || r);
    return r;
}

/* Appends the ids of a result's items to b ("a,b,..."); returns how many. */
static int p_ids(const cJSON *r, ts_buf_t *b)
{
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(r, "items"))
    {
        const char *id = cJSON_GetObjectItem(it, "id")->valuestring;
        ts_buf_printf(b, "%s%s", b->len ? "," : "", id);
        n++;
    }
    return n;
}

/* Pages through a selector's result, limit items a page; returns every id
 * in order (caller frees) and the number of pages. Each page but the last
 * is full and has a cursor; the last has none. */
static char *p_page_all(const char *selector, const char *params, long limit, int *pages)
{
    ts_buf_t all = {0};
    ts_buf_puts(&all, "");
    char *cursor = NULL;
    int code;
    *pages = 0;
    for (int guard = 0; guard < 1000; guard++) {
        cJSON *r = p_query(selector, params, limit, cursor, &code, NULL, 0);
        cr_assert_eq(code, 0, "%s page %d", selector, *pages + 1);
        int n = p_ids(r, &all);
        (*pages)++;
        const cJSON *next = cJSON_GetObjectItem(r, "cursor");
        free(cursor);
        cursor = NULL;
        if (cJSON_IsNull(next)) {
            cJSON_Delete(r);
            return ts_buf_take(&all, NULL);
        }
        cr_assert(cJSON_IsString(next), "cursor is a string or null");
        cr_assert_eq(n, limit, "%s: a page with a cursor is full (%d of %ld)", selector, n, limit);
        cursor = strdup(next->valuestring);
        cJSON_Delete(r);
    }
    cr_assert_fail("%s: more than 1000 pages", selector);
    return NULL;
}

/* The whole result as one page (limit 1000 holds every document here). */
static char *p_one_page(const char *selector, const char *params, int *n)
{
    int code;
    cJSON *r = p_query(selector, params, 1000, NULL, &code, NULL, 0);
    cr_assert_eq(code, 0);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(r, "cursor")));
    ts_buf_t all = {0};
    ts_buf_puts(&all, "");
    *n = p_ids(r, &all);
    cJSON_Delete(r);
    return ts_buf_take(&all, NULL);
}

TestSuite(store_paging, .init = p_setup, .fini = p_teardown, .timeout = 60);

static const struct {
    const char *selector, *params;
    int n; /* items in the whole result */
} p_cases[] = {
    {"by_therapist", "{\"therapist_id\":\"thr-1\"}", 270},
    {"by_therapist_desc", "{\"therapist_id\":\"thr-1\"}", 270},
    {"from_now", "{\"therapist_id\":\"thr-1\",\"now\":\"2026-03-02T00:00:00Z\"}", 120},
    {"until_now_desc", "{\"therapist_id\":\"thr-1\",\"now\":\"2026-03-03T12:00:00Z\"}", 0},
    {"unordered", "{\"therapist_id\":\"thr-1\"}", 270},
    {"scheduled", "{}", 240},
    {"scheduled_desc", "{}", 240},
    {"everything", "{}", 300},
};

/* Over an ordered index both ways, with from, an unordered index and
 * scans, any page size: the pages put together are the one-page answer,
 * every page but the last full, the last without a cursor. */
Test(store_paging, pages_put_together_are_the_whole_answer)
{
    long sizes[] = {1, 7, 100};
    for (size_t c = 0; c < sizeof p_cases / sizeof *p_cases; c++) {
        int n;
        char *whole = p_one_page(p_cases[c].selector, p_cases[c].params, &n);
        if (p_cases[c].n)
            cr_assert_eq(n, p_cases[c].n, "%s: %d items", p_cases[c].selector, n);
        else
            cr_assert(n > 20 && n < 270, "%s: %d items", p_cases[c].selector, n);
        for (size_t k = 0; k < 3; k++) {
            int pages;
            char *paged = p_page_all(p_cases[c].selector, p_cases[c].params, sizes[k], &pages);
            cr_assert_str_eq(paged, whole, "%s by %ld", p_cases[c].selector, sizes[k]);
            int want = n ? (int)((n + sizes[k] - 1) / sizes[k]) : 1;
            cr_assert_eq(pages, want, "%s by %ld: %d pages", p_cases[c].selector, sizes[k], pages);
            free(paged);
        }
        free(whole);
    }
}

/* The one order: (time, id), missing times first, ties by id — from the
 * index and from the scan alike. */
typedef struct {
    char key[40]; /* "0" (no time) or "1<time>" */
    const char *id;
} p_ref_t;

static int p_ref_cmp(const void *a, const void *b)
{
    const p_ref_t *x = a, *y = b;
    int r = strcmp(x->key, y->key);
    return r ? r : strcmp(x->id, y->id);
}

/* The expected ids: the documents whose text holds need, in (time, id). */
static char *p_reference(const char *need)
{
    p_ref_t *ref = calloc(p_n, sizeof *ref);
    size_t n = 0;
    for (size_t i = 0; i < p_n; i++) {
        if (!p_docs[i].text || !strstr(p_docs[i].text, need))
            continue;
        const char *at = strstr(p_docs[i].text, "\"scheduled_at\":\"");
        snprintf(ref[n].key, sizeof ref[n].key, "%s%.20s", at ? "1" : "0", at ? at + 16 : "");
        ref[n++].id = p_docs[i].id;
    }
    qsort(ref, n, sizeof *ref, p_ref_cmp);
    ts_buf_t b = {0};
    ts_buf_puts(&b, "");
    for (size_t i = 0; i < n; i++)
        ts_buf_printf(&b, "%s%s", i ? "," : "", ref[i].id);
    free(ref);
    return ts_buf_take(&b, NULL);
}

Test(store_paging, index_and_scan_share_one_order)
{
    int n;
    char *idx = p_one_page("by_therapist", "{\"therapist_id\":\"thr-1\"}", &n);
    char *want = p_reference("\"thr-1\"");
    cr_assert_str_eq(idx, want);
    char *scan = p_one_page("scheduled", "{}", &n);
    char *want_scan = p_reference("\"scheduled\"");
    cr_assert_str_eq(scan, want_scan);
    free(idx);
    free(want);
    free(scan);
    free(want_scan);
}

/* The selector's limit is a total over the pages; params.limit lowers it. */
Test(store_paging, the_declared_limit_is_a_total_over_pages)
{
    int pages;
    const char *p = "{\"therapist_id\":\"thr-1\",\"now\":\"2026-03-02T00:00:00Z\"}";
    char *all = p_page_all("from_now", p, 50, &pages);
    cr_assert_eq(pages, 3, "50 + 50 + 20");
    free(all);
    const char *p30 = "{\"therapist_id\":\"thr-1\",\"now\":\"2026-03-02T00:00:00Z\",\"limit\":30}";
    all = p_page_all("from_now", p30, 50, &pages);
    cr_assert_eq(pages, 1);
    cr_assert_eq(strlen(all), 30 * 4 + 29);
    free(all);
    all = p_page_all("from_now", p30, 10, &pages);
    cr_assert_eq(pages, 3);
    free(all);
}

/* Between two pages, documents come, go and move: the next page starts
 * right after the last item of the page before, wherever that is now. */
Test(store_paging, changes_between_pages_neither_repeat_nor_skip)
{
    for (int desc = 0; desc < 2; desc++) {
        const char *sel = desc ? "by_therapist_desc" : "by_therapist";
        const char *params = "{\"therapist_id\":\"thr-1\"}";
        int n, code;
        char *whole = p_one_page(sel, params, &n);
        cJSON *r = p_query(sel, params, 100, NULL, &code, NULL, 0);
        char *cursor = strdup(cJSON_GetObjectItem(r, "cursor")->valuestring);
        cJSON *items = cJSON_GetObjectItem(r, "items");
        const char *last = cJSON_GetObjectItem(cJSON_GetArrayItem(items, 99), "id")->valuestring;
        const char *first = cJSON_GetObjectItem(cJSON_GetArrayItem(items, 0), "id")->valuestring;
        /* Two new documents ordered before the cursor (ascending: one early,
         * one without a time; descending: two late ones), the page's first
         * item deleted, its last item changed in a field outside the order. */
        size_t i_first = 0, i_last = 0;
        for (size_t i = 0; i < p_n; i++) {
            i_first = strcmp(p_docs[i].id, first) == 0 ? i : i_first;
            i_last = strcmp(p_docs[i].id, last) == 0 ? i : i_last;
        }
        p_n = P_DOCS + 2;
        snprintf(p_docs[P_DOCS].id, sizeof p_docs[P_DOCS].id, "a-new");
        snprintf(p_docs[P_DOCS + 1].id, sizeof p_docs[P_DOCS + 1].id, "b-new");
        char text[256];
        snprintf(text, sizeof text, "{\"therapist_id\":\"thr-1\",\"scheduled_at\":\"%s\"}",
                 desc ? "2026-12-31T00:00:00Z" : "2026-01-01T00:00:00Z");
        p_set(P_DOCS, text);
        p_set(P_DOCS + 1, "{\"therapist_id\":\"thr-1\"}");
        if (desc)
            p_set(P_DOCS + 1, text);
        char *first_text = strdup(p_docs[i_first].text);
        p_set(i_first, NULL);
        char patched[256];
        snprintf(patched, sizeof patched, "%.*s,\"notes\":\"x\"}", (int)p_docs[i_last].len - 1,
                 p_docs[i_last].text);
        p_set(i_last, patched);
        cJSON *r2 = p_query(sel, params, 100, cursor, &code, NULL, 0);
        cr_assert_eq(code, 0);
        ts_buf_t got = {0};
        ts_buf_puts(&got, "");
        p_ids(r2, &got);
        /* items 100..199 of the answer before the changes */
        const char *at = whole;
        for (int k = 0; k < 100; k++)
            at = strchr(at, ',') + 1;
        cr_assert_eq(strncmp(got.data, at, got.len), 0, "%s: page 2 is\n%s\nnot\n%.*s", sel,
                     got.data, (int)got.len, at);
        cr_assert_eq(at[got.len], ',');
        ts_buf_free(&got);
        cJSON_Delete(r2);
        cJSON_Delete(r);
        free(cursor);
        free(whole);
        /* put things back for the other direction */
        p_set(P_DOCS, NULL);
        p_set(P_DOCS + 1, NULL);
        p_n = P_DOCS;
        p_set(i_first, first_text);
        free(first_text);
    }
}

/* The last item of a page is deleted: the next page still starts after
 * where it was. On a scan too. */
Test(store_paging, the_cursors_item_may_be_gone)
{
    const char *sels[] = {"by_therapist", "scheduled"};
    for (int s = 0; s < 2; s++) {
        const char *params = s ? "{}" : "{\"therapist_id\":\"thr-1\"}";
        int n, code;
        char *whole = p_one_page(sels[s], params, &n);
        cJSON *r = p_query(sels[s], params, 50, NULL, &code, NULL, 0);
        const char *last = cJSON_GetObjectItem(
            cJSON_GetArrayItem(cJSON_GetObjectItem(r, "items"), 49), "id")->valuestring;
        for (size_t i = 0; i < p_n; i++)
            if (strcmp(p_docs[i].id, last) == 0)
                p_set(i, NULL);
        cJSON *r2 = p_query(sels[s], params, 50, cJSON_GetObjectItem(r, "cursor")->valuestring,
                            &code, NULL, 0);
        cr_assert_eq(code, 0);
        ts_buf_t got = {0};
        ts_buf_puts(&got, "");
        p_ids(r2, &got);
        const char *at = whole;
        for (int k = 0; k < 50; k++)
            at = strchr(at, ',') + 1;
        cr_assert_eq(strncmp(got.data, at, got.len), 0, "%s", sels[s]);
        ts_buf_free(&got);
        cJSON_Delete(r2);
        cJSON_Delete(r);
        free(whole);
    }
}

/* Bad page params and cursors are invalid_params naming what is wrong. */
Test(store_paging, bad_limits_and_cursors_are_refused)
{
    const char *params = "{\"therapist_id\":\"thr-1\"}";
    int code;
    char msg[256];
    cr_assert_null(p_query("by_therapist", params, 1001, NULL, &code, msg, sizeof msg));
    cr_assert_eq(code, TS_E_INVALID_PARAMS);
    cr_assert_str_eq(msg, "limit must be at most 1000");
    cJSON *r = p_query("by_therapist", params, 1000, NULL, &code, NULL, 0);
    cr_assert_eq(code, 0, "1000 is allowed");
    cJSON_Delete(r);
    const char *bad_limits[] = {"0", "-1", "1.5", "\"10\"", "true", "[]"};
    for (size_t i = 0; i < 6; i++) {
        char call[256];
        snprintf(call, sizeof call,
                 "{\"collection\":\"sessions\",\"selector\":\"by_therapist\",\"params\":%s,"
                 "\"limit\":%s}",
                 params, bad_limits[i]);
        ts_envelope_t *e = ts_envelope_new(1);
        e->calls[0].method = TS_M_QUERY;
        e->calls[0].params = cJSON_Parse(call);
        ts_sq_query(p_sq, &e->calls[0], p_coll);
        cr_assert_eq(e->calls[0].err_code, TS_E_INVALID_PARAMS, "limit %s", bad_limits[i]);
        cr_assert(strstr(e->calls[0].err_message, "limit must be a positive integer"), "%s",
                  e->calls[0].err_message);
        ts_envelope_free(e);
    }
    r = p_query("by_therapist", params, 10, NULL, &code, NULL, 0);
    char *cursor = strdup(cJSON_GetObjectItem(r, "cursor")->valuestring);
    cJSON_Delete(r);
    /* malformed: not hex, odd, cut short, one byte more, another version */
    const char *bad[] = {"zz", "abc", "", "0102", NULL, NULL, NULL};
    char cut[512], longer[512], version[512];
    snprintf(cut, sizeof cut, "%.*s", (int)strlen(cursor) - 2, cursor);
    snprintf(longer, sizeof longer, "%s00", cursor);
    snprintf(version, sizeof version, "02%s", cursor + 2);
    bad[4] = cut, bad[5] = longer, bad[6] = version;
    for (size_t i = 0; i < 7; i++) {
        cr_assert_null(p_query("by_therapist", params, 10, bad[i], &code, msg, sizeof msg));
        cr_assert_eq(code, TS_E_INVALID_PARAMS, "cursor %s", bad[i]);
        cr_assert(strncmp(msg, "cursor ", 7) == 0, "%s", msg);
    }
    /* another query's cursor: other params, another selector */
    cr_assert_null(p_query("by_therapist", "{\"therapist_id\":\"thr-2\"}", 10, cursor, &code, msg,
                           sizeof msg));
    cr_assert_eq(code, TS_E_INVALID_PARAMS);
    cr_assert(strstr(msg, "cursor does not belong to this query"), "%s", msg);
    cr_assert_null(p_query("by_therapist_desc", params, 10, cursor, &code, msg, sizeof msg));
    cr_assert_eq(code, TS_E_INVALID_PARAMS);
    /* the same params in another member order are the same query */
    r = p_query("by_therapist", "{ \"therapist_id\" : \"thr-1\" }", 10, cursor, &code, msg,
                sizeof msg);
    cr_assert_eq(code, 0, "%s", msg);
    cJSON_Delete(r);
    free(cursor);
}

/* Encoding and decoding a cursor, and the decoder on damaged input. */
Test(cursor, round_trips_and_refuses_damage)
{
    uint8_t digest[TS_PAGE_DIGEST] = {1, 2, 3, 4, 5, 6, 7, 8};
    ts_okey_t keys[] = {{.kind = TS_OKEY_NONE},
                        {.kind = TS_OKEY_NUM, .num = -2.5},
                        {.kind = TS_OKEY_STR, .str = "2026-03-02T09:00:00Z", .len = 20},
                        {.kind = TS_OKEY_STR, .str = "", .len = 0}};
    for (size_t i = 0; i < 4; i++) {
        ts_buf_t b = {0};
        cr_assert_eq(ts_cursor_append(&b, digest, 4000000000u, &keys[i], "s-1", 3), 0);
        cr_assert(b.len > 2 && b.data[0] == '"' && b.data[b.len - 1] == '"');
        ts_cursor_t c;
        const char *why;
        cr_assert_eq(ts_cursor_decode(b.data + 1, b.len - 2, &c, &why), 0, "%s", why);
        cr_assert_eq(memcmp(c.digest, digest, sizeof digest), 0);
        cr_assert_eq(c.returned, 4000000000u);
        cr_assert_eq(ts_okey_cmp(&c.key, &keys[i]), 0);
        cr_assert_eq(c.key.kind, keys[i].kind);
        cr_assert_eq(c.id_len, 3);
        cr_assert_eq(memcmp(c.id, "s-1", 3), 0);
        free(c.key.str);
        /* every shorter prefix, and a byte more, are refused */
        for (size_t cut = 0; cut < b.len - 2; cut += 2)
            cr_assert_eq(ts_cursor_decode(b.data + 1, cut, &c, &why), -1, "cut at %zu", cut);
        ts_buf_free(&b);
    }
    ts_buf_t b = {0};
    cr_assert_eq(ts_cursor_append(&b, digest, 0, &keys[0], "", 0), -1, "an empty id");
    /* a NaN, an unknown kind, a string longer than the cursor */
    const char *hex[] = {
        "01" "0102030405060708" "00000000" "01" "7ff8000000000000" "0161",
        "01" "0102030405060708" "00000000" "07" "0161",
        "01" "0102030405060708" "00000000" "02" "ffffffff" "0161",
    };
    for (size_t i = 0; i < 3; i++) {
        ts_cursor_t c;
        const char *why;
        cr_assert_eq(ts_cursor_decode(hex[i], strlen(hex[i]), &c, &why), -1, "%s", hex[i]);
        cr_assert_null(c.key.str);
    }
    const char *ok = "01" "0102030405060708" "00000000" "01" "4000000000000000" "0161";
    ts_cursor_t c;
    const char *why;
    cr_assert_eq(ts_cursor_decode(ok, strlen(ok), &c, &why), 0, "%s", why);
    cr_assert(c.key.kind == TS_OKEY_NUM && c.key.num == 2.0);
}

/* A digest names the query: member order does not matter, values do. */
Test(cursor, digest_ignores_member_order_only)
{
    cJSON *a = cJSON_Parse("{\"x\":1,\"y\":{\"b\":[1,2],\"a\":\"s\"}}");
    cJSON *b = cJSON_Parse("{\"y\":{\"a\":\"s\",\"b\":[1,2]},\"x\":1}");
    cJSON *c = cJSON_Parse("{\"y\":{\"a\":\"s\",\"b\":[2,1]},\"x\":1}");
    cJSON *sel = cJSON_CreateString("upcoming");
    uint8_t da[8], db[8], dc[8], dn[8], dk[8];
    ts_page_digest("named", sel, a, da);
    ts_page_digest("named", sel, b, db);
    ts_page_digest("named", sel, c, dc);
    ts_page_digest("named", sel, NULL, dn);
    ts_page_digest("builtin", sel, a, dk);
    cr_assert_eq(memcmp(da, db, 8), 0);
    cr_assert_neq(memcmp(da, dc, 8), 0);
    cr_assert_neq(memcmp(da, dn, 8), 0);
    cr_assert_neq(memcmp(da, dk, 8), 0);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(c);
    cJSON_Delete(sel);
}
