/* test_cache_diff.c — the cache never changes an answer: a differential
 * test against the uncached run.
 *
 * A real therasyncd synced with a real clinic-api (so changes come from
 * three places: our writes, their confirmations, and changes made on the
 * server) serves the shipped selectors plus ad-hoc ones added below, so
 * that every kind of read-set is exercised: index ranges ascending with a
 * lower bound (upcoming, x_patient_next, x_long on a number), descending
 * with and without `from` (x_before, by_patient), limited and not (params
 * .limit, and x_patient_next with no limit of its own), a whole bucket
 * (x_unordered), scans (needs_notes, x_recent) and values no index holds
 * (null, objects, arrays, a 1,100-character id: read-set "nothing").
 *
 * The test runs in steps. In each, the state changes (sometimes a change
 * made on the server, then a few local writes: creates, updates that move
 * scheduled_at, change status, move a session to another therapist or
 * patient — another bucket —, deletes), then it waits until the engine has
 * settled: the server change is in the engine (`get` shows its version:
 * that is the store's state itself, where a doc.changed event would share
 * its SUB queue with every write's event) and no write is pending (their
 * confirmations, which carry the server's version and updated_at, are
 * applied). Nothing changes the engine's state after that until the next
 * step (digest checks are off; polls and late echoes bring nothing new), so
 * the reads that follow all see one state, and can be pipelined. Then it
 * sends read PAIRS: the same query twice, first as clients send it (through
 * the cache: a hit, a miss, or one coalesced with an identical miss), then
 * with "cache": false (computed by the store, not kept), and compares the
 * two `result` texts byte for byte (the raw text of the answer, not
 * reparsed; errors are compared too). 40% of the queries are recent ones
 * asked again, the reads that hit when no write since touched them.
 *
 * Random params: existing and unknown therapists and patients, odd index
 * values, `now` repeated from recent reads (so answers are hit, and the
 * lower-bound answers serve other nows) or equal to a written scheduled_at
 * (the edge of a lower-bound range), random params.limit. Selectors that
 * read params.now always get one (without it the engine reads the clock,
 * and the two reads of a pair could differ by a millisecond); the others
 * sometimes go without.
 *
 * Ops = local writes + server changes + reads (each read of a pair counts
 * once). TS_CACHE_DIFF_OPS sets their number (default 150,000, the CI run);
 * TS_CACHE_DIFF_SEED the seed (default fixed; printed). At the end: 0
 * mismatches, and the cache must have hit (the front door from its copies
 * too) and been invalidated (a cache that never hits, or that no write
 * touches, proves nothing). The soak
 * records are in tests/README.md. */
#include "../support/clinic.h"
#include "../support/engine.h"
#include "therasync/json.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define NTHERAPISTS 20
#define NPATIENTS 50
#define NIDS 3000      /* the id space; about SEED_DOCS of it alive */
#define SEED_DOCS 2000
#define QMAX 128       /* requests in flight at once */
#define RING 8
#define SHOW_MISMATCHES 5
#define DAY_MS (24LL * 3600 * 1000)

static ts_clinic_t api;
static ts_engine_t engine;
static char *policies;
static uint64_t rng;
static bool alive[NIDS];
static long long ops, pairs, mismatches, both_errors;

/* Recent queries, asked again: the reads that repeat (a client's screen
 * refreshing) and that hit when no write since touched what they read. */
#define HOT 64
typedef struct {
    cJSON *req;
    size_t sel;
} hot_t;
static hot_t hot[HOT];
static int nhot;

/* ---- randomness (xorshift64*: the same seed, the same run of ops) ---- */

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1DULL;
}

static int below(int n) { return (int)(rnd() % (uint64_t)n); }
static bool chance(int percent) { return below(100) < percent; }

/* ---- the setup ---- */

/* Ad-hoc selectors, appended to a copy of the shipped selectors.lua. */
static const char EXTRA_SELECTORS[] =
    "\n  -- test_cache_diff's ad-hoc selectors.\n"
    "  x_by_status = {\n" /* an index on status, ascending, limited, no from */
    "    collection = \"sessions\", index = \"status\",\n"
    "    where = function(doc, params)\n"
    "      return params.therapist_id == nil or doc.therapist_id == params.therapist_id\n"
    "    end,\n"
    "    order_by = { \"scheduled_at\", \"asc\" }, limit = 30,\n"
    "  },\n"
    "  x_recent = {\n" /* a scan, descending */
    "    collection = \"sessions\",\n"
    "    where = function(doc) return doc.status ~= \"cancelled\" end,\n"
    "    order_by = { \"scheduled_at\", \"desc\" }, limit = 25,\n"
    "  },\n"
    "  x_before = {\n" /* an index, descending, from params.before (when given) */
    "    collection = \"sessions\", index = \"therapist_id\",\n"
    "    where = function(doc) return doc.status ~= \"no_show\" end,\n"
    "    order_by = { \"scheduled_at\", \"desc\" },\n"
    "    from = function(params) return params.before end, limit = 10,\n"
    "  },\n"
    "  x_patient_next = {\n" /* a lower bound on another index; no limit of its own */
    "    collection = \"sessions\", index = \"patient_id\",\n"
    "    where = function(doc, params)\n"
    "      return type(doc.scheduled_at) == \"string\" and doc.scheduled_at >= params.after\n"
    "        and doc.status ~= \"cancelled\"\n"
    "    end,\n"
    "    order_by = { \"scheduled_at\", \"asc\" },\n"
    "    from = function(params) return params.after end, lower_bound = \"after\",\n"
    "  },\n"
    "  x_long = {\n" /* a lower bound on a number */
    "    collection = \"sessions\", index = \"therapist_id\",\n"
    "    where = function(doc, params)\n"
    "      return math.type(doc.duration_min) == \"integer\" and doc.duration_min >= params.min\n"
    "    end,\n"
    "    order_by = { \"duration_min\", \"asc\" },\n"
    "    from = function(params) return params.min end, lower_bound = \"min\", limit = 15,\n"
    "  },\n"
    "  x_unordered = {\n" /* an index without order: the whole bucket is read */
    "    collection = \"sessions\", index = \"therapist_id\",\n"
    "    where = function(doc) return doc.status == \"scheduled\" end, limit = 5,\n"
    "  },\n";

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return text;
}

static void write_file(const char *dir, const char *name, const char *text, size_t len)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cr_assert_eq(ts_file_write(path, text, len), 0, "cannot write %s", path);
}

static const char ENGINE_CONFIG[] =
    "durability = \"relaxed\"\n"              /* speed: no fsync per commit */
    "sync = { digest_interval_s = 0 }\n"      /* nothing changes between reads */
    "cache = { max_bytes = 524288 }\n";      /* small enough to evict now and then */

/* The policies: no validation (random documents, ids that move between
 * buckets), the shipped conflict rules, the shipped selectors and ours. */
static void make_policies(void)
{
    policies = ts_tmpdir("ts-cache-diff");
    cr_assert_not_null(policies);
    size_t n;
    char *text = slurp(ts_source_path("tests/fixtures/policies/permissive/validate.lua"), &n);
    write_file(policies, "validate.lua", text, n);
    free(text);
    text = slurp(ts_source_path("policies/conflict.lua"), &n);
    write_file(policies, "conflict.lua", text, n);
    free(text);
    text = slurp(ts_source_path("policies/selectors.lua"), &n);
    char *end = strrchr(text, '}'); /* the end of the returned table */
    cr_assert_not_null(end, "policies/selectors.lua returns a table");
    size_t head = (size_t)(end - text), extra = strlen(EXTRA_SELECTORS);
    char *all = malloc(head + extra + 3);
    memcpy(all, text, head);
    memcpy(all + head, EXTRA_SELECTORS, extra);
    memcpy(all + head + extra, "}\n", 3);
    write_file(policies, "selectors.lua", all, head + extra + 2);
    free(all);
    free(text);
    write_file(policies, "engine.lua", ENGINE_CONFIG, strlen(ENGINE_CONFIG));
}

static void setup(void)
{
    cr_assert_eq(ts_clinic_start(&api, NULL), 0, "clinic-api starts");
    make_policies();
    char config[4300];
    snprintf(config, sizeof config, "%s/engine.lua", policies);
    const char *args[] = {"--api", api.url, "--policies", policies, "--config", config, NULL};
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd starts (log: %s)",
                 engine.proc.log_path);
}

static void teardown(void)
{
    for (int i = 0; i < HOT; i++) {
        cJSON_Delete(hot[i].req);
        hot[i].req = NULL;
    }
    ts_engine_destroy(&engine);
    ts_clinic_destroy(&api);
    if (policies) {
        ts_rmtree(policies);
        free(policies);
        policies = NULL;
    }
}

TestSuite(cache_diff, .init = setup, .fini = teardown, .timeout = 1200);

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- pipelined requests on the engine's DEALER ---- */

typedef struct {
    char *req, *reply;
    size_t req_len, reply_len;
} rq_t;

static rq_t q[QMAX];
static int nq;
static long long first_id, next_id = 1000000; /* apart from ts_rpc's ids */

static void q_add(const char *method, cJSON *params)
{
    cr_assert_lt(nq, QMAX);
    if (!nq)
        first_id = next_id;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "jsonrpc", "2.0");
    cJSON_AddNumberToObject(r, "id", (double)next_id++);
    cJSON_AddStringToObject(r, "method", method);
    cJSON_AddItemToObject(r, "params", params);
    q[nq].req = cJSON_PrintUnformatted(r);
    q[nq].req_len = strlen(q[nq].req);
    q[nq].reply = NULL;
    nq++;
    cJSON_Delete(r);
}

/* The raw text of a top-level member of a reply (NULL: none). */
static const char *member(const rq_t *r, const char *key, size_t *len)
{
    const char *v;
    if (!r->reply || !ts_json_text_field(r->reply, r->reply_len, key, strlen(key), &v, len))
        return NULL;
    return v;
}

/* Sends every queued request, then takes every answer (bounded). */
static void q_run(void)
{
    for (int i = 0; i < nq; i++)
        cr_assert_geq(zmq_send(engine.dealer, q[i].req, q[i].req_len, 0), 0, "send");
    for (int got = 0; got < nq; got++) {
        zmq_pollitem_t item = {.socket = engine.dealer, .events = ZMQ_POLLIN};
        cr_assert_gt(zmq_poll(&item, 1, 15000), 0, "an answer within 15 s (%d of %d)", got, nq);
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        cr_assert_geq(zmq_msg_recv(&msg, engine.dealer, 0), 0);
        size_t n = zmq_msg_size(&msg);
        char *text = malloc(n + 1);
        memcpy(text, zmq_msg_data(&msg), n);
        text[n] = '\0';
        zmq_msg_close(&msg);
        rq_t probe = {.reply = text, .reply_len = n};
        size_t idn;
        const char *idv = member(&probe, "id", &idn);
        char idtext[24] = "";
        if (idv && idn < sizeof idtext)
            memcpy(idtext, idv, idn), idtext[idn] = '\0';
        int64_t id = -1;
        cr_assert_eq(ts_parse_i64(idtext, &id), 0, "an answer with our id: %.200s", text);
        cr_assert(id >= first_id && id < first_id + nq && !q[id - first_id].reply,
                  "an answer to a request of ours, once: %.200s", text);
        q[id - first_id].reply = text;
        q[id - first_id].reply_len = n;
    }
}

static void q_clear(void)
{
    for (int i = 0; i < nq; i++) {
        cJSON_free(q[i].req);
        free(q[i].reply);
    }
    nq = 0;
}

/* ---- random values ---- */

static const int64_t BASE_MS = 1772409600000LL; /* 2026-03-02T00:00:00Z */

/* An RFC 3339 time, mostly as the engine prints them, sometimes without
 * milliseconds or with an offset (other bytes, other order). */
static cJSON *time_value(int64_t ms)
{
    char t[40];
    ts_rfc3339(ms, t);
    int form = below(100);
    if (form < 6) { /* 2026-03-02T09:00:00Z */
        memcpy(t + 19, "Z", 2);
    } else if (form < 10) { /* 2026-03-02T09:00:00.000+00:00 */
        memcpy(t + 23, "+00:00", 7);
    }
    return cJSON_CreateString(t);
}

static char ring_times[RING][40];
static int nring_times;

static void remember_time(const cJSON *v)
{
    if (cJSON_IsString(v) && strlen(v->valuestring) < 40)
        snprintf(ring_times[nring_times++ % RING], 40, "%s", v->valuestring);
}

/* A scheduled_at: mostly a time on a 15-minute grid over two weeks;
 * sometimes a number or text that is no time (order keys of other kinds). */
static cJSON *scheduled_value(void)
{
    int k = below(100);
    if (k < 2)
        return cJSON_CreateNumber(below(1000));
    if (k < 3)
        return cJSON_CreateString("soon");
    cJSON *v = time_value(BASE_MS + (int64_t)below(14 * 96) * 15 * 60000);
    remember_time(v);
    return v;
}

static cJSON *therapist_value(void)
{
    int k = below(100);
    char id[16];
    if (k < 94) {
        snprintf(id, sizeof id, "t%02d", below(NTHERAPISTS));
        return cJSON_CreateString(id);
    }
    if (k < 96)
        return cJSON_CreateString("7"); /* the same bucket as the number 7 */
    if (k < 98)
        return cJSON_CreateNumber(7);
    return cJSON_CreateString("t\"q"); /* escaped in the document's text */
}

static cJSON *patient_value(void)
{
    int k = below(100);
    char id[16];
    if (k < 96) {
        snprintf(id, sizeof id, "p%02d", below(NPATIENTS));
        return cJSON_CreateString(id);
    }
    if (k < 98)
        return cJSON_CreateNumber(12);
    return cJSON_CreateString("12");
}

static const char *const STATUSES[] = {"scheduled", "scheduled", "scheduled", "scheduled",
                                       "completed", "completed", "cancelled", "in_progress",
                                       "no_show",   "weird"};

static cJSON *status_value(void)
{
    return cJSON_CreateString(STATUSES[below(10)]);
}

static cJSON *notes_value(void)
{
    static const char *const notes[] = {"", "  ", "went well", "follow up in two weeks"};
    return cJSON_CreateString(notes[below(4)]);
}

static void add_fields(cJSON *doc, bool full)
{
    /* A patch changes a few fields (null removes one); a create has them all. */
    if (full || chance(25))
        cJSON_AddItemToObject(doc, "therapist_id", full || !chance(3) ? therapist_value()
                                                                      : cJSON_CreateNull());
    if (full || chance(20))
        cJSON_AddItemToObject(doc, "patient_id", patient_value());
    if (full || chance(40))
        cJSON_AddItemToObject(doc, "scheduled_at",
                              full || !chance(3) ? scheduled_value() : cJSON_CreateNull());
    if (full || chance(40))
        cJSON_AddItemToObject(doc, "status", status_value());
    if (full || chance(15))
        cJSON_AddItemToObject(doc, "duration_min", chance(97) ? cJSON_CreateNumber(15 + below(226))
                                                              : cJSON_CreateString("50"));
    if (full)
        cJSON_AddStringToObject(doc, "modality", chance(80) ? "in_person" : "telehealth");
    if ((full && chance(50)) || chance(15))
        cJSON_AddItemToObject(doc, "notes", !full && chance(20) ? cJSON_CreateNull()
                                                                : notes_value());
    if (!doc->child) /* a patch changes something */
        cJSON_AddItemToObject(doc, "status", status_value());
}

static void id_text(int i, char out[16]) { snprintf(out, 16, "s%04d", i); }

static int pick_id(bool want_alive)
{
    for (int tries = 0; tries < 64; tries++) {
        int i = below(NIDS);
        if (alive[i] == want_alive)
            return i;
    }
    return below(NIDS);
}

/* ---- writes, server changes, settling ---- */

static long long status_pending(void)
{
    cJSON *r = ts_rpc(&engine, "status", NULL);
    cr_assert_not_null(r, "status answered");
    cJSON *p = cJSON_GetObjectItem(ts_rpc_result(r), "pending");
    long long n = cJSON_IsNumber(p) ? (long long)p->valuedouble : -1;
    cJSON_Delete(r);
    return n;
}

/* Waits until no write is pending: every confirmation is applied. */
static void settle(void)
{
    int64_t end = mono_ms() + 30000;
    long long pending;
    while ((pending = status_pending()) != 0) {
        cr_assert(mono_ms() < end, "writes still pending after 30 s: %lld", pending);
        sleep_us(300);
    }
}

/* Waits until the engine holds the server's change: the document at
 * version (or gone, version < 0). Polling `get` says that the store has it,
 * which is what the reads need; the doc.changed event says the same but
 * shares its SUB queue with every write's event. */
static void wait_engine(const char *id, long long version)
{
    char params[128];
    snprintf(params, sizeof params, "{\"collection\":\"sessions\",\"id\":\"%s\"}", id);
    int64_t end = mono_ms() + 15000;
    for (;;) {
        cJSON *r = ts_rpc(&engine, "get", params);
        cr_assert_not_null(r, "get answered");
        cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(r), "doc"), "version");
        bool done = version < 0 ? ts_rpc_result(r) == NULL
                                : cJSON_IsNumber(v) && (long long)v->valuedouble >= version;
        cJSON_Delete(r);
        if (done)
            return;
        cr_assert(mono_ms() < end, "the server's change to %s reached the engine in 15 s", id);
        sleep_us(500);
    }
}

/* One change made on the server: a patch, a create or a delete. */
static void remote_change(void)
{
    int kind = below(100), i;
    char id[16], path[64];
    cJSON *answer = NULL;
    long status;
    if (kind < 55) {
        i = pick_id(true);
        id_text(i, id);
        cJSON *patch = cJSON_CreateObject();
        add_fields(patch, false);
        char *body = cJSON_PrintUnformatted(patch);
        snprintf(path, sizeof path, "/v1/sessions/%s", id);
        status = ts_clinic_call(&api, "PATCH", path, body, &answer);
        cJSON_free(body);
        cJSON_Delete(patch);
    } else if (kind < 80) {
        i = pick_id(false);
        id_text(i, id);
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "id", id);
        add_fields(doc, true);
        char *body = cJSON_PrintUnformatted(doc);
        status = ts_clinic_call(&api, "POST", "/v1/sessions", body, &answer);
        cJSON_free(body);
        cJSON_Delete(doc);
    } else {
        i = pick_id(true);
        id_text(i, id);
        snprintf(path, sizeof path, "/v1/sessions/%s", id);
        status = ts_clinic_call(&api, "DELETE", path, NULL, NULL);
    }
    ops++;
    if (status == 200 || status == 201) {
        cJSON *v = cJSON_GetObjectItem(answer, "version");
        cr_assert(cJSON_IsNumber(v), "the server's answer has a version");
        wait_engine(id, (long long)v->valuedouble);
        alive[i] = true;
    } else if (status == 204) {
        wait_engine(id, -1);
        alive[i] = false;
    } else {
        /* 404 (gone on both sides), 409 (the id exists): nothing changed */
        cr_assert(status == 404 || status == 409, "the server answered %ld", status);
    }
    cJSON_Delete(answer);
}

/* n local writes, pipelined; the model of which ids exist follows the
 * answers. */
static void local_writes(int n)
{
    int ids[QMAX], kinds[QMAX];
    for (int w = 0; w < n; w++) {
        int alive_n = 0;
        for (int i = 0; i < NIDS; i += 10)
            alive_n += alive[i];
        int k = below(100), create_pct = alive_n * 10 < SEED_DOCS ? 40 : 20;
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "collection", "sessions");
        char id[16];
        if (k < create_pct) {
            kinds[w] = 0;
            ids[w] = pick_id(false);
            id_text(ids[w], id);
            cJSON *doc = cJSON_AddObjectToObject(p, "doc");
            cJSON_AddStringToObject(doc, "id", id);
            add_fields(doc, true);
            q_add("create", p);
        } else if (k < create_pct + 15) {
            kinds[w] = 2;
            ids[w] = pick_id(true);
            id_text(ids[w], id);
            cJSON_AddStringToObject(p, "id", id);
            q_add("delete", p);
        } else {
            kinds[w] = 1;
            ids[w] = chance(95) ? pick_id(true) : below(NIDS);
            id_text(ids[w], id);
            cJSON_AddStringToObject(p, "id", id);
            add_fields(cJSON_AddObjectToObject(p, "patch"), false);
            q_add("update", p);
        }
    }
    q_run();
    for (int w = 0; w < nq; w++) {
        size_t len;
        if (!member(&q[w], "result", &len))
            continue; /* refused (the id exists, is gone): nothing changed */
        if (kinds[w] == 0)
            alive[ids[w]] = true;
        else if (kinds[w] == 2)
            alive[ids[w]] = false;
    }
    ops += nq;
    q_clear();
}

/* ---- reads ---- */

static char ring_nows[RING][40];
static int nring_nows;

/* A time param: a recent one again (hits; other nows inside a lower-bound
 * answer's range), a written scheduled_at (the edge of such a range), a
 * new one (any minute over the two weeks and around), far off, or no time. */
static cJSON *time_param(void)
{
    int k = below(100);
    if (k < 65 && nring_nows)
        return cJSON_CreateString(ring_nows[below(nring_nows < RING ? nring_nows : RING)]);
    if (k < 75 && nring_times)
        return cJSON_CreateString(ring_times[below(nring_times < RING ? nring_times : RING)]);
    if (k < 77)
        return cJSON_CreateString(chance(50) ? "2020-01-01T00:00:00Z" : "2031-01-01T00:00:00Z");
    if (k < 78) /* a number: where() fails comparing it with a time (an error answer) */
        return cJSON_CreateNumber((double)BASE_MS);
    cJSON *v = time_value(BASE_MS - DAY_MS + (int64_t)below(16 * 24 * 60) * 60000);
    snprintf(ring_nows[nring_nows++ % RING], 40, "%s", v->valuestring);
    return v;
}

/* An index param: mostly a known value, else an unknown one, or a value
 * no index holds. */
static cJSON *index_param(bool therapist)
{
    int k = below(100);
    char id[16];
    if (k < 90)
        return therapist ? therapist_value() : patient_value();
    if (k < 94) {
        snprintf(id, sizeof id, therapist ? "t%02d" : "p%02d",
                 (therapist ? NTHERAPISTS : NPATIENTS) + below(10));
        return cJSON_CreateString(id);
    }
    if (k < 96)
        return cJSON_CreateNull();
    if (k < 97)
        return cJSON_CreateObject();
    if (k < 98)
        return cJSON_CreateArray();
    if (k < 99)
        return cJSON_CreateBool(1);
    char *big = malloc(1101);
    memset(big, 'x', 1100);
    big[1100] = '\0';
    cJSON *v = cJSON_CreateString(big);
    free(big);
    return v;
}

static void limit_param(cJSON *params)
{
    int k = below(100);
    if (k < 70)
        return;
    if (k < 90)
        cJSON_AddNumberToObject(params, "limit", 5 << below(3)); /* 5, 10, 20 */
    else if (k < 94)
        cJSON_AddNumberToObject(params, "limit", 1 + below(25));
    else if (k < 95)
        cJSON_AddNumberToObject(params, "limit", 0);
    else if (k < 96)
        cJSON_AddNumberToObject(params, "limit", -2);
    else if (k < 97)
        cJSON_AddNumberToObject(params, "limit", 2.5);
    else if (k < 98)
        cJSON_AddStringToObject(params, "limit", "3");
    else
        cJSON_AddNumberToObject(params, "limit", 1000);
}

/* params.now for a selector that does not read it: mostly one fixed value
 * (its answers are hit), sometimes none (the engine fills the clock: a new
 * question each time, the same answer). */
static void idle_now(cJSON *params)
{
    int k = below(100);
    if (k < 85)
        cJSON_AddStringToObject(params, "now", "2026-03-01T00:00:00.000Z");
    else if (k < 95)
        cJSON_AddItemToObject(params, "now", time_param());
}

typedef struct {
    const char *name;
    int weight;
} sel_t;

static const sel_t SELECTORS[] = {
    {"upcoming", 20},      {"today", 8},      {"by_patient", 12},     {"needs_notes", 3},
    {"x_by_status", 8},    {"x_recent", 3},   {"x_before", 10},       {"x_patient_next", 12},
    {"x_long", 10},        {"x_unordered", 6}, {"consultations_for_patient", 2},
};
#define NSEL (sizeof SELECTORS / sizeof SELECTORS[0])
static long long sel_pairs[NSEL], sel_errors[NSEL];

static size_t pick_selector(void)
{
    int total = 0;
    for (size_t i = 0; i < NSEL; i++)
        total += SELECTORS[i].weight;
    int k = below(total);
    for (size_t i = 0;; i++) {
        if (k < SELECTORS[i].weight)
            return i;
        k -= SELECTORS[i].weight;
    }
}

/* A random query (the request's params) for selector s. */
static cJSON *random_query(size_t s)
{
    const char *name = SELECTORS[s].name;
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "collection",
                            strcmp(name, "consultations_for_patient") ? "sessions"
                                                                       : "consultations");
    cJSON_AddStringToObject(req, "selector", name);
    cJSON *p = cJSON_AddObjectToObject(req, "params");
    if (!strcmp(name, "upcoming") || !strcmp(name, "today")) {
        cJSON_AddItemToObject(p, "therapist_id", index_param(true));
        cJSON_AddItemToObject(p, "now", time_param()); /* they read it: always given */
    } else if (!strcmp(name, "by_patient") || !strcmp(name, "consultations_for_patient")) {
        cJSON_AddItemToObject(p, "patient_id", index_param(false));
        idle_now(p);
    } else if (!strcmp(name, "needs_notes") || !strcmp(name, "x_recent")) {
        if (chance(50))
            cJSON_AddItemToObject(p, "therapist_id", therapist_value());
        idle_now(p);
    } else if (!strcmp(name, "x_by_status")) {
        cJSON_AddItemToObject(p, "status", chance(90) ? status_value() : index_param(true));
        if (chance(50))
            cJSON_AddItemToObject(p, "therapist_id", therapist_value());
        idle_now(p);
    } else if (!strcmp(name, "x_before")) {
        cJSON_AddItemToObject(p, "therapist_id", index_param(true));
        if (chance(80))
            cJSON_AddItemToObject(p, "before", time_param());
        idle_now(p);
    } else if (!strcmp(name, "x_patient_next")) {
        cJSON_AddItemToObject(p, "patient_id", index_param(false));
        cJSON_AddItemToObject(p, "after", time_param());
        idle_now(p);
    } else if (!strcmp(name, "x_long")) {
        static int mins[RING], nmins;
        cJSON_AddItemToObject(p, "therapist_id", index_param(true));
        int k = below(100);
        if (k < 70 && nmins) {
            cJSON_AddNumberToObject(p, "min", mins[below(nmins < RING ? nmins : RING)]);
        } else if (k < 97) {
            mins[nmins++ % RING] = 15 + below(226);
            cJSON_AddNumberToObject(p, "min", mins[(nmins - 1) % RING]);
        } else {
            cJSON_AddStringToObject(p, "min", "60"); /* where() fails on a number */
        }
        idle_now(p);
    } else { /* x_unordered */
        cJSON_AddItemToObject(p, "therapist_id", index_param(true));
        idle_now(p);
    }
    limit_param(p);
    if (chance(3))
        cJSON_AddNullToObject(req, "cursor"); /* an exact question, no shared range */
    return req;
}

/* Prints where two answers (member texts) part, both around it. */
static void show(const char *a, size_t an, const char *b, size_t bn)
{
    size_t at = 0;
    while (at < an && at < bn && a[at] == b[at])
        at++;
    size_t from = at > 300 ? at - 300 : 0;
    fprintf(stderr, "  they part at byte %zu of %zu / %zu\n", at, an, bn);
    fprintf(stderr, "  cached:   ...%.*s\n", (int)(an - from < 700 ? an - from : 700), a + from);
    fprintf(stderr, "  uncached: ...%.*s\n", (int)(bn - from < 700 ? bn - from : 700), b + from);
}

/* n read pairs: each query sent through the cache, then with "cache":
 * false; all pipelined (the state does not change meanwhile). */
static void read_pairs(int n)
{
    size_t sel[QMAX / 2];
    for (int i = 0; i < n; i++) {
        cJSON *req;
        if (nhot && chance(40)) { /* a recent query again: hit unless a write touched it */
            int h = below(nhot < HOT ? nhot : HOT);
            sel[i] = hot[h].sel;
            req = cJSON_Duplicate(hot[h].req, true);
        } else {
            sel[i] = pick_selector();
            req = random_query(sel[i]);
            cJSON_Delete(hot[nhot % HOT].req);
            hot[nhot % HOT] = (hot_t){cJSON_Duplicate(req, true), sel[i]};
            nhot++;
        }
        cJSON *ref = cJSON_Duplicate(req, true);
        if (chance(3))
            cJSON_AddTrueToObject(req, "cache");
        cJSON_AddFalseToObject(ref, "cache");
        q_add("query", req);
        q_add("query", ref);
    }
    q_run();
    for (int i = 0; i < n; i++) {
        const rq_t *a = &q[2 * i], *b = &q[2 * i + 1];
        size_t alen = 0, blen = 0;
        const char *key = "result";
        const char *av = member(a, key, &alen), *bv = member(b, key, &blen);
        if (!av && !bv) { /* both failed: the same error, then */
            key = "error";
            av = member(a, key, &alen);
            bv = member(b, key, &blen);
            both_errors++;
            sel_errors[sel[i]]++;
        }
        pairs++;
        sel_pairs[sel[i]]++;
        if (av && bv && alen == blen && memcmp(av, bv, alen) == 0)
            continue;
        if (++mismatches <= SHOW_MISMATCHES) {
            fprintf(stderr, "cache_diff: MISMATCH %lld (pair %lld)\n  query: %s\n", mismatches,
                    pairs, b->req);
            show(av ? av : "(none)", av ? alen : 6, bv ? bv : "(none)", bv ? blen : 6);
        }
    }
    ops += nq;
    q_clear();
}

/* ---- the test ---- */

static double metric(const cJSON *cache, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(cache, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

Test(cache_diff, cached_answers_equal_uncached_ones)
{
    const char *env = getenv("TS_CACHE_DIFF_OPS");
    long long target = env && *env ? strtoll(env, NULL, 10) : 150000;
    env = getenv("TS_CACHE_DIFF_SEED");
    uint64_t seed = env && *env ? strtoull(env, NULL, 10) : 20261207;
    rng = seed ? seed : 1;
    fprintf(stderr, "cache_diff: seed %llu, %lld ops (TS_CACHE_DIFF_SEED, TS_CACHE_DIFF_OPS)\n",
            (unsigned long long)seed, target);
    int64_t t0 = mono_ms();

    /* The sessions, synced with the server before the first read. */
    for (int i = 0; i < SEED_DOCS; i += QMAX) {
        for (int k = i; k < i + QMAX && k < SEED_DOCS; k++) {
            char id[16];
            id_text(k, id);
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "collection", "sessions");
            cJSON *doc = cJSON_AddObjectToObject(p, "doc");
            cJSON_AddStringToObject(doc, "id", id);
            add_fields(doc, true);
            q_add("create", p);
        }
        q_run();
        for (int k = 0; k < nq; k++) {
            size_t len;
            cr_assert_not_null(member(&q[k], "result", &len), "seed create: %s", q[k].reply);
            alive[i + k] = true;
        }
        q_clear();
    }
    settle();
    int64_t t1 = mono_ms();
    fprintf(stderr, "cache_diff: %d sessions seeded and synced in %.1f s\n", SEED_DOCS,
            (t1 - t0) / 1e3);

    ops = 0;
    long long steps = 0;
    while (ops < target) {
        steps++;
        if (chance(25))
            remote_change();
        local_writes(1 + below(6));
        settle();
        read_pairs(8 + below(25)); /* 8-32 pairs: at most QMAX requests */
    }
    int64_t t2 = mono_ms();

    cJSON *m = ts_rpc(&engine, "metrics", NULL);
    cr_assert_not_null(m, "metrics answered");
    const cJSON *cache = cJSON_GetObjectItem(ts_rpc_result(m), "cache");
    double hits = metric(cache, "hits"), misses = metric(cache, "misses");
    double ratio = hits + misses > 0 ? hits / (hits + misses) : 0;
    fprintf(stderr,
            "cache_diff: %lld ops in %lld steps, %.1f s (%.0f ops/s); %lld pairs, %lld mismatches, "
            "%lld pairs both errors\n"
            "cache_diff: cache hits %.0f, misses %.0f, hit ratio %.3f, coalesced %.0f, "
            "invalidations %.0f, evictions %.0f, uncached %.0f, entries %.0f, "
            "front door's hits %.0f\n",
            ops, steps, (t2 - t1) / 1e3, ops / ((t2 - t1) / 1e3 + 1e-9), pairs, mismatches,
            both_errors, hits, misses, ratio, metric(cache, "coalesced"),
            metric(cache, "invalidations"), metric(cache, "evictions"),
            metric(cache, "uncached"), metric(cache, "entries"), metric(cache, "front_hits"));
    for (size_t i = 0; i < NSEL; i++)
        fprintf(stderr, "cache_diff:   %-26s %8lld pairs, %6lld both errors\n",
                SELECTORS[i].name, sel_pairs[i], sel_errors[i]);
    cr_assert_eq(mismatches, 0, "%lld of %lld cached answers differ from the uncached run "
                                "(the first ones are printed above)",
                 mismatches, pairs);
    cr_assert_gt(hits, 0, "the cache answered some reads (else this proves nothing)");
    cr_assert_gt(metric(cache, "front_hits"), 0,
                 "the front door answered some reads from its copies (else they go untested)");
    cr_assert_gt(metric(cache, "invalidations"), 0, "writes touched cached answers");
    cJSON_Delete(m);
}
