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
