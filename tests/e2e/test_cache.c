/* test_cache.c — the cache actor inside a real therasyncd, as users of
 * memoized and live queries rely on it: hits that skip the store, writes
 * that invalidate exactly what they touch, read-your-writes, lower-bound
 * answers, live queries in diff and full mode (ops applied client-side equal
 * a fresh query), notifications only on a change, unsubscribe, bad input,
 * caps, subscribers that vanish, selectors that fail on a re-run, policy
 * reloads, the byte cap, selectors that read the clock and queries that
 * leave `now` to the engine. Each test starts its own daemon with a
 * policies dir of its own (no validation) and, where it needs one, a
 * config file. */
#include "../support/engine.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static ts_engine_t engine;
static char *pol_dir, *cfg_dir;

/* ---- a client that keeps answers and notifications apart ---- */

typedef struct {
    void *sock;
    int next_id;
    cJSON *answers; /* responses that came while waiting for another */
    cJSON *notes;   /* notifications (no id), oldest first */
} client_t;

#define MAX_CLIENTS 4
static client_t clients[MAX_CLIENTS];
static client_t *cl; /* clients[0] */

static client_t *client_open(void)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (!clients[i].sock) {
            client_t *c = &clients[i];
            c->sock = ts_engine_client(&engine);
            cr_assert_not_null(c->sock);
            c->next_id = 1;
            c->answers = cJSON_CreateArray();
            c->notes = cJSON_CreateArray();
            return c;
        }
    cr_assert_fail("too many clients");
    return NULL;
}

static void client_close(client_t *c)
{
    if (c->sock)
        zmq_close(c->sock);
    cJSON_Delete(c->answers);
    cJSON_Delete(c->notes);
    memset(c, 0, sizeof *c);
}

/* Receives one frame within timeout_ms into answers or notes; false on
 * timeout. */
static bool recv_one(client_t *c, int timeout_ms)
{
    zmq_pollitem_t item = {.socket = c->sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return false;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    cr_assert_geq(zmq_msg_recv(&msg, c->sock, 0), 0);
    cJSON *j = cJSON_ParseWithLength(zmq_msg_data(&msg), zmq_msg_size(&msg));
    cr_assert_not_null(j, "not JSON: %.*s", (int)zmq_msg_size(&msg), (char *)zmq_msg_data(&msg));
    zmq_msg_close(&msg);
    if (cJSON_IsArray(j) || cJSON_GetObjectItem(j, "id"))
        cJSON_AddItemToArray(c->answers, j);
    else
        cJSON_AddItemToArray(c->notes, j);
    return true;
}

/* Sends a request (params: JSON text or NULL); returns its id. */
static int send_call(client_t *c, const char *method, const char *params)
{
    int id = c->next_id++;
    ts_buf_t b = {0};
    ts_buf_printf(&b, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"", id, method);
    if (params) {
        ts_buf_puts(&b, ",\"params\":");
        ts_buf_puts(&b, params);
    }
    ts_buf_puts(&b, "}");
    cr_assert_geq(zmq_send(c->sock, b.data, b.len, 0), 0);
    ts_buf_free(&b);
    return id;
}

static void send_raw(client_t *c, const char *text)
{
    cr_assert_geq(zmq_send(c->sock, text, strlen(text), 0), 0);
}

/* The response with this id (id < 0: the first batch answer); fails the
 * test after timeout_ms. Caller deletes. */
static cJSON *wait_answer(client_t *c, int id, int timeout_ms)
{
    int64_t deadline = ts_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int i = 0;
        for (cJSON *a = c->answers->child; a; a = a->next, i++) {
            cJSON *aid = cJSON_GetObjectItem(a, "id");
            if ((id < 0 && cJSON_IsArray(a)) || (cJSON_IsNumber(aid) && aid->valueint == id))
                return cJSON_DetachItemFromArray(c->answers, i);
        }
        int64_t left = (deadline - ts_mono_us()) / 1000;
        cr_assert(left > 0 && recv_one(c, (int)left), "no answer to request %d", id);
    }
}

static cJSON *call(client_t *c, const char *method, const char *params)
{
    return wait_answer(c, send_call(c, method, params), 10000);
}

/* The result of a call that must succeed, printed (caller frees). */
static cJSON *must(client_t *c, const char *method, const char *params)
{
    cJSON *r = call(c, method, params);
    cJSON *res = cJSON_GetObjectItem(r, "result");
    char *text = cJSON_PrintUnformatted(r);
    cr_assert_not_null(res, "%s %s failed: %s", method, params ? params : "", text);
    free(text);
    cJSON *out = cJSON_DetachItemFromObject(r, "result");
    cJSON_Delete(r);
    return out;
}

/* The next notification within timeout_ms, or NULL. Caller deletes. */
static cJSON *next_note(client_t *c, int timeout_ms)
{
    int64_t deadline = ts_mono_us() + (int64_t)timeout_ms * 1000;
    while (!c->notes->child) {
        int64_t left = (deadline - ts_mono_us()) / 1000;
        if (left <= 0 || !recv_one(c, (int)left))
            return NULL;
    }
    return cJSON_DetachItemFromArray(c->notes, 0);
}

static cJSON *must_note(client_t *c, const char *method, int timeout_ms)
{
    cJSON *n = next_note(c, timeout_ms);
    cr_assert_not_null(n, "no %s within %d ms", method, timeout_ms);
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(n, "method"));
    char *text = cJSON_PrintUnformatted(n);
    cr_assert(m && strcmp(m, method) == 0, "expected %s, got %s", method, text);
    free(text);
    return n;
}

/* Nothing arrives for ms. */
static void assert_quiet(client_t *c, int ms, const char *why)
{
    cJSON *n = next_note(c, ms);
    char *text = n ? cJSON_PrintUnformatted(n) : NULL;
    cr_assert_null(n, "%s: %s", why, text);
}

/* ---- the engine ---- */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cr_assert_eq(ts_file_write(path, text, strlen(text)), 0, "cannot write %s", path);
}

static char *read_source(const char *rel)
{
    char *text = ts_file_text(ts_source_path(rel));
    cr_assert_not_null(text, "%s", rel);
    return text;
}

/* Starts therasyncd with a policies dir of its own: selectors (NULL: the
 * shipped selectors.lua), no validation; config: an engine.lua or NULL. */
static void start_engine(const char *selectors, const char *config)
{
    pol_dir = ts_tmpdir("ts-cache-pol");
    cr_assert_not_null(pol_dir);
    char *shipped = selectors ? NULL : read_source("policies/selectors.lua");
    write_file(pol_dir, "selectors.lua", selectors ? selectors : shipped);
    free(shipped);
    write_file(pol_dir, "validate.lua", "return {}\n");
    write_file(pol_dir, "conflict.lua", "return {}\n");
    const char *args[8] = {"--policies", pol_dir, NULL};
    char cfg[4200];
    if (config) {
        cfg_dir = ts_tmpdir("ts-cache-cfg");
        snprintf(cfg, sizeof cfg, "%s/engine.lua", cfg_dir);
        write_file(cfg_dir, "engine.lua", config);
        args[2] = "--config";
        args[3] = cfg;
        args[4] = NULL;
    }
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd did not start (log: %s)",
                 engine.proc.log_path);
    cl = client_open();
}

static void stop(void)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        client_close(&clients[i]);
    ts_engine_destroy(&engine);
    char **dirs[] = {&pol_dir, &cfg_dir};
    for (int i = 0; i < 2; i++)
        if (*dirs[i]) {
            ts_rmtree(*dirs[i]);
            free(*dirs[i]);
            *dirs[i] = NULL;
        }
}

TestSuite(cache, .fini = stop, .timeout = 60);

/* ---- documents, queries, metrics ---- */

#define NOW0 "2026-01-01T00:00:00.000Z"

static void create_session(const char *id, const char *therapist, const char *at,
                           const char *status, const char *extra)
{
    char p[2048];
    snprintf(p, sizeof p,
             "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"therapist_id\":\"%s\","
             "\"scheduled_at\":\"%s\",\"status\":\"%s\"%s}}",
             id, therapist, at, status, extra ? extra : "");
    cJSON_Delete(must(cl, "create", p));
}

static void update_session(const char *id, const char *patch)
{
    char p[1024];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"%s\",\"patch\":%s}", id, patch);
    cJSON_Delete(must(cl, "update", p));
}

static void delete_session(const char *id)
{
    char p[256];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"id\":\"%s\"}", id);
    cJSON_Delete(must(cl, "delete", p));
}

/* The items of a query of selector with params, through the cache or not
 * (cache false), printed (caller frees). */
static char *query_items(const char *selector, const char *params, bool cache)
{
    char p[1024];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"selector\":\"%s\",\"params\":%s%s}",
             selector, params, cache ? "" : ",\"cache\":false");
    cJSON *res = must(cl, "query", p);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(res, "stale")));
    char *items = cJSON_PrintUnformatted(cJSON_GetObjectItem(res, "items"));
    cJSON_Delete(res);
    return items;
}

/* The ids of items (printed JSON), joined by ",", in a static buffer. */
static const char *ids_of(const char *items_text)
{
    static char out[4096];
    out[0] = '\0';
    size_t off = 0;
    cJSON *items = cJSON_Parse(items_text);
    cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        off += (size_t)snprintf(out + off, sizeof out - off, "%s%s", off ? "," : "",
                                cJSON_GetStringValue(cJSON_GetObjectItem(it, "id")));
        if (off >= sizeof out)
            break;
    }
    cJSON_Delete(items);
    return out;
}

/* The cached answer equals the store's, and its ids are `ids`. */
static void assert_answer(const char *selector, const char *params, const char *ids)
{
    char *cached = query_items(selector, params, true);
    char *fresh = query_items(selector, params, false);
    cr_assert_str_eq(cached, fresh, "cached answer differs from the store's");
    cr_assert_str_eq(ids_of(cached), ids);
    free(cached);
    free(fresh);
}

static double metric(const char *name)
{
    cJSON *res = must(cl, "metrics", NULL);
    cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(res, "cache"), name);
    cr_assert(cJSON_IsNumber(v), "no cache.%s in metrics", name);
    double d = v->valuedouble;
    cJSON_Delete(res);
    return d;
}

/* Answers a change touched: dropped (invalidations) or patched in place. */
static double touched(void)
{
    return metric("invalidations") + metric("patches");
}

static double selector_queries(void)
{
    cJSON *res = must(cl, "policy.info", NULL);
    double d = cJSON_GetObjectItem(res, "selector_queries")->valuedouble;
    cJSON_Delete(res);
    return d;
}

static void assert_alive(void)
{
    cJSON *r = call(cl, "ping", NULL);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(r, "result")), "pong");
    cJSON_Delete(r);
}

static const char *error_message(cJSON *r)
{
    const char *m = cJSON_GetStringValue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message"));
    return m ? m : "";
}

/* ---- live queries ---- */

typedef struct {
    char id[32];
    double version;
    cJSON *items; /* what the subscriber holds */
    client_t *c;
} sub_t;

/* Subscribes c to selector with params (extra: more members of the
 * request, e.g. ",\"mode\":\"full\""). */
static void subscribe(sub_t *s, client_t *c, const char *selector, const char *params,
                      const char *extra)
{
    char p[1024];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"selector\":\"%s\",\"params\":%s%s}",
             selector, params, extra ? extra : "");
    cJSON *res = must(c, "subscribe", p);
    snprintf(s->id, sizeof s->id, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(res, "sub")));
    cr_assert(s->id[0] == 's', "sub id %s", s->id);
    s->version = cJSON_GetObjectItem(res, "version")->valuedouble;
    s->items = cJSON_DetachItemFromObject(res, "items");
    cr_assert(cJSON_IsArray(s->items));
    s->c = c;
    cJSON_Delete(res);
}

static void sub_free(sub_t *s)
{
    cJSON_Delete(s->items);
    s->items = NULL;
}

/* The ids s holds, joined by "," (static buffer). */
static const char *held_ids(const sub_t *s)
{
    char *text = cJSON_PrintUnformatted(s->items);
    const char *ids = ids_of(text);
    free(text);
    return ids;
}

static int index_of(const cJSON *items, const char *id)
{
    int i = 0;
    for (const cJSON *it = items->child; it; it = it->next, i++)
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(it, "id")), id) == 0)
            return i;
    return -1;
}

/* Puts doc at pos of items (cJSON 1.7.15's InsertItemInArray refuses
 * parsed arrays: every item is moved over instead). */
static void insert_at(cJSON *items, int pos, cJSON *doc)
{
    int n = cJSON_GetArraySize(items);
    cr_assert(pos >= 0 && pos <= n, "pos %d of %d", pos, n);
    cJSON *tmp = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        if (i == pos)
            cJSON_AddItemToArray(tmp, doc);
        cJSON_AddItemToArray(tmp, cJSON_DetachItemFromArray(items, 0));
    }
    if (pos == n)
        cJSON_AddItemToArray(tmp, doc);
    while (tmp->child)
        cJSON_AddItemToArray(items, cJSON_DetachItemFromArray(tmp, 0));
    cJSON_Delete(tmp);
}

/* Applies a query.changed to what s holds: its ops (diff) or items (full). */
static void apply_change(sub_t *s, cJSON *note)
{
    cJSON *p = cJSON_GetObjectItem(note, "params");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(p, "sub")), s->id);
    double from = cJSON_GetObjectItem(p, "from")->valuedouble;
    double to = cJSON_GetObjectItem(p, "to")->valuedouble;
    cr_assert_eq(from, s->version, "change from %.0f, the subscriber holds %.0f", from, s->version);
    cr_assert_gt(to, from, "versions increase");
    s->version = to;
    cJSON *items = cJSON_GetObjectItem(p, "items");
    if (items) {
        cJSON_Delete(s->items);
        s->items = cJSON_Duplicate(items, true);
        return;
    }
    cJSON *op;
    cJSON_ArrayForEach(op, cJSON_GetObjectItem(p, "ops"))
    {
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(op, "op"));
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(op, "id"));
        cr_assert(kind && id, "bad op");
        int at = index_of(s->items, id);
        cJSON *pos = cJSON_GetObjectItem(op, "pos");
        cJSON *doc = cJSON_GetObjectItem(op, "doc");
        if (strcmp(kind, "add") == 0) {
            cr_assert_eq(at, -1, "add of %s, already held", id);
            cr_assert(cJSON_IsNumber(pos) && doc);
            insert_at(s->items, pos->valueint, cJSON_Duplicate(doc, true));
            continue;
        }
        cr_assert_geq(at, 0, "%s of %s, not held", kind, id);
        if (strcmp(kind, "remove") == 0) {
            cJSON_DeleteItemFromArray(s->items, at);
        } else if (strcmp(kind, "move") == 0) {
            cr_assert(cJSON_IsNumber(pos));
            cJSON *it = cJSON_DetachItemFromArray(s->items, at);
            insert_at(s->items, pos->valueint, it);
        } else if (strcmp(kind, "edit") == 0) {
            cr_assert_not_null(doc);
            cJSON_ReplaceItemInArray(s->items, at, cJSON_Duplicate(doc, true));
        } else {
            cr_assert_fail("unknown op %s", kind);
        }
    }
}

/* What s holds equals a fresh query of selector/params. */
static void assert_holds_fresh(const sub_t *s, const char *selector, const char *params)
{
    char *fresh = query_items(selector, params, false);
    char *held = cJSON_PrintUnformatted(s->items);
    cr_assert_str_eq(held, fresh, "the subscriber's items differ from a fresh query:\n%s\n%s",
                     held, fresh);
    free(held);
    free(fresh);
}

/* Takes exactly one query.changed for s (within 3 s), applies it and
 * compares with a fresh query. */
static void expect_change(sub_t *s, const char *selector, const char *params)
{
    cJSON *n = must_note(s->c, "query.changed", 3000);
    apply_change(s, n);
    cJSON_Delete(n);
    assert_holds_fresh(s, selector, params);
}

static int catch_up(sub_t *s, const char *selector, const char *params, int most);

/* ==== 1. memoized answers: hits, and writes that do or do not touch ==== */

#define T1_NOW "{\"therapist_id\":\"thr-1\",\"now\":\"" NOW0 "\"}"
#define T1_LIVE T1_NOW

Test(cache, a_repeated_query_is_a_hit_until_a_write_touches_it)
{
    start_engine(NULL, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", ",\"room\":\"A\"");
    create_session("b", "thr-1", "2026-03-02T10:00:00.000Z", "scheduled", NULL);
    create_session("c", "thr-1", "2026-03-02T11:00:00.000Z", "scheduled", NULL);
    create_session("o", "thr-2", "2026-03-02T10:00:00.000Z", "scheduled", NULL);

    char *first = query_items("upcoming", T1_NOW, true);
    cr_assert_str_eq(ids_of(first), "a,b,c");
    double hits = metric("hits"), sq = selector_queries(), inv = touched();
    char *second = query_items("upcoming", T1_NOW, true);
    cr_assert_str_eq(second, first, "a hit answers what the miss answered");
    cr_assert_eq(metric("hits"), hits + 1, "the second query is a hit");
    cr_assert_eq(selector_queries(), sq, "a hit does not run the selector");
    free(second);

    /* another therapist's session, and one of thr-1 before `now`: no
     * read-set holds them */
    create_session("o2", "thr-2", "2026-03-02T09:30:00.000Z", "scheduled", NULL);
    update_session("o", "{\"room\":\"Z\"}");
    create_session("past", "thr-1", "2025-06-01T09:00:00.000Z", "scheduled", NULL);
    second = query_items("upcoming", T1_NOW, true);
    cr_assert_str_eq(second, first);
    free(second);
    cr_assert_eq(metric("hits"), hits + 2, "an unrelated write must not invalidate");
    cr_assert_eq(touched(), inv, "an unrelated write touched an answer");
    cr_assert_eq(selector_queries(), sq);

    /* inside the range: the next answer shows the write. upcoming has a
     * lower bound: its answer is patched in place (no run), not dropped */
    update_session("a", "{\"room\":\"B\"}");
    cr_assert_gt(touched(), inv, "a write inside the range touched nothing");
    char *after = query_items("upcoming", T1_NOW, true);
    cJSON *items = cJSON_Parse(after);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(items, 0), "room")),
                     "B", "the answer after the write: %s", after);
    cJSON_Delete(items);
    cr_assert_eq(metric("hits"), hits + 3, "the patched answer is a hit");
    cr_assert_eq(selector_queries(), sq, "a patch runs no selector");
    char *fresh = query_items("upcoming", T1_NOW, false);
    cr_assert_str_eq(after, fresh, "patched == uncached");
    free(fresh);
    free(after);
    update_session("b", "{\"status\":\"cancelled\"}");
    assert_answer("upcoming", T1_NOW, "a,c");
    create_session("d", "thr-1", "2026-03-02T08:00:00.000Z", "scheduled", NULL);
    assert_answer("upcoming", T1_NOW, "d,a,c");
    delete_session("c");
    assert_answer("upcoming", T1_NOW, "d,a");
    /* and a hit again, equal to the store's */
    hits = metric("hits");
    assert_answer("upcoming", T1_NOW, "d,a");
    cr_assert_eq(metric("hits"), hits + 1);
    free(first);
}

/* ==== 2. read your writes, pipelined ==== */

Test(cache, a_query_sent_right_after_a_create_sees_it)
{
    start_engine(NULL, NULL);
    /* each new session sorts first, inside the range of every answer kept
     * before it; `now` moves a little each round, so a stale lower-bound
     * answer would be a hit */
    create_session("base", "thr-1", "2026-06-01T00:00:00.000Z", "scheduled", NULL);
    for (int i = 0; i < 200; i++) {
        char create[512], query[512], id[32], at[32];
        snprintf(id, sizeof id, "rw%03d", i);
        snprintf(at, sizeof at, "2026-05-%02dT%02d:%02d:00.000Z", 30 - i / 96, 23 - (i % 96) / 4,
                 59 - (i % 4) * 15);
        snprintf(create, sizeof create,
                 "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"therapist_id\":\"thr-1\","
                 "\"scheduled_at\":\"%s\",\"status\":\"scheduled\"}}",
                 id, at);
        snprintf(query, sizeof query,
                 "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":{"
                 "\"therapist_id\":\"thr-1\",\"now\":\"2026-02-01T00:%02d:%02d.000Z\"}}",
                 i / 60, i % 60);
        int cid = send_call(cl, "create", create);
        int qid = send_call(cl, "query", query);
        cJSON *q = wait_answer(cl, qid, 10000);
        cJSON *c = wait_answer(cl, cid, 10000);
        cr_assert_not_null(cJSON_GetObjectItem(c, "result"), "create %s refused", id);
        cJSON *items = cJSON_GetObjectItem(cJSON_GetObjectItem(q, "result"), "items");
        cr_assert(cJSON_IsArray(items), "round %d: no items", i);
        const char *first = cJSON_GetStringValue(cJSON_GetObjectItem(items->child, "id"));
        cr_assert(first && strcmp(first, id) == 0, "round %d: the query did not see %s (first: %s)",
                  i, id, first ? first : "none");
        cJSON_Delete(q);
        cJSON_Delete(c);
    }
    cr_assert_geq(touched(), 199, "each create touched the answer before");
}

/* The same for subscribe, while an identical subscription (another
 * client's) keeps the live query running: the new subscriber's items hold
 * the session it created just before. */
Test(cache, a_subscribe_sent_right_after_a_create_sees_it)
{
    start_engine(NULL, NULL);
    client_t *watcher = client_open();
    sub_t w = {0};
    subscribe(&w, watcher, "upcoming", T1_LIVE, NULL);
    for (int i = 0; i < 50; i++) {
        char create[512], sub[256], id[32];
        snprintf(id, sizeof id, "sw%02d", i);
        snprintf(create, sizeof create,
                 "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"therapist_id\":\"thr-1\","
                 "\"scheduled_at\":\"2026-05-01T%02d:%02d:00.000Z\",\"status\":\"scheduled\"}}",
                 id, 23 - i / 4, 59 - (i % 4) * 15);
        snprintf(sub, sizeof sub,
                 "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":" T1_LIVE "}");
        int cid = send_call(cl, "create", create);
        int sid = send_call(cl, "subscribe", sub);
        cJSON *r = wait_answer(cl, sid, 10000);
        cJSON *c = wait_answer(cl, cid, 10000);
        cr_assert_not_null(cJSON_GetObjectItem(c, "result"), "create %s refused", id);
        cJSON *res = cJSON_GetObjectItem(r, "result");
        cr_assert_not_null(res, "subscribe refused");
        cJSON *items = cJSON_GetObjectItem(res, "items");
        const char *first = cJSON_GetStringValue(cJSON_GetObjectItem(items->child, "id"));
        cr_assert(first && strcmp(first, id) == 0,
                  "round %d: the subscribe did not see %s (first: %s)", i, id,
                  first ? first : "none");
        char un[96];
        snprintf(un, sizeof un, "{\"sub\":\"%s\"}",
                 cJSON_GetStringValue(cJSON_GetObjectItem(res, "sub")));
        cJSON_Delete(must(cl, "unsubscribe", un));
        cJSON_Delete(r);
        cJSON_Delete(c);
    }
    /* the first subscriber followed every one of them */
    catch_up(&w, "upcoming", T1_LIVE, 50);
    cr_assert_eq(cJSON_GetArraySize(w.items), 20);
    sub_free(&w);
}

/* ==== 3. lower_bound: one answer for every now up to its first row ==== */

Test(cache, a_lower_bound_answer_serves_later_nows_up_to_its_first_row)
{
    start_engine(NULL, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    create_session("b", "thr-1", "2026-03-02T10:00:00.000Z", "scheduled", NULL);
    create_session("x", "thr-1", "2026-03-02T08:00:00.000Z", "cancelled", NULL);
    char *first = query_items("upcoming", "{\"therapist_id\":\"thr-1\",\"now\":\"" NOW0 "\"}", true);
    cr_assert_str_eq(ids_of(first), "a,b");
    double hits = metric("hits"), misses = metric("misses"), sq = selector_queries();
    const char *later[] = {"2026-02-15T00:00:00.000Z", "2026-03-02T08:30:00.000Z",
                           "2026-03-02T09:00:00.000Z"};
    for (int i = 0; i < 3; i++) {
        char p[256];
        snprintf(p, sizeof p, "{\"therapist_id\":\"thr-1\",\"now\":\"%s\"}", later[i]);
        char *again = query_items("upcoming", p, true);
        cr_assert_str_eq(again, first, "now %s", later[i]);
        free(again);
        cr_assert_eq(metric("hits"), hits + i + 1, "now %s is a hit", later[i]);
    }
    cr_assert_eq(selector_queries(), sq);
    /* past the first row: the rows the answer keeps (every match from its
     * now to the bucket's end) answer that now too */
    const char *past = "{\"therapist_id\":\"thr-1\",\"now\":\"2026-03-02T09:00:00.001Z\"}";
    char *beyond = query_items("upcoming", past, true);
    cr_assert_str_eq(ids_of(beyond), "b");
    cr_assert_eq(metric("misses"), misses);
    cr_assert_eq(metric("hits"), hits + 4);
    cr_assert_eq(selector_queries(), sq);
    char *fresh = query_items("upcoming", past, false);
    cr_assert_str_eq(beyond, fresh);
    /* before its now: a miss, whose rows then join the kept ones */
    char *back = query_items("upcoming", "{\"therapist_id\":\"thr-1\",\"now\":"
                                         "\"2025-06-05T00:00:00.000Z\"}", true);
    cr_assert_str_eq(back, first);
    cr_assert_eq(metric("misses"), misses + 1);
    cr_assert_eq(metric("entries"), 1, "the two ranges are one");
    char *again = query_items("upcoming", past, true);
    cr_assert_str_eq(again, beyond);
    cr_assert_eq(metric("hits"), hits + 5);
    free(again);
    /* a params.limit is a different question */
    char *two = query_items("upcoming", "{\"therapist_id\":\"thr-1\",\"limit\":1,\"now\":"
                                        "\"2026-01-05T00:00:00.000Z\"}", true);
    cr_assert_str_eq(ids_of(two), "a");
    free(first);
    free(beyond);
    free(fresh);
    free(back);
    free(two);
}

/* ==== 4. live queries in diff and full mode ==== */


Test(cache, live_diffs_applied_by_the_client_equal_a_fresh_query)
{
    start_engine(NULL, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    create_session("c", "thr-1", "2026-03-02T11:00:00.000Z", "scheduled", NULL);
    create_session("o", "thr-2", "2026-03-02T10:00:00.000Z", "scheduled", NULL);
    client_t *c1 = client_open(), *c2 = client_open();
    sub_t d = {0}, f = {0};
    subscribe(&d, c1, "upcoming", T1_LIVE, NULL);
    subscribe(&f, c2, "upcoming", T1_LIVE, ",\"mode\":\"full\"");
    assert_holds_fresh(&d, "upcoming", T1_LIVE);
    cr_assert_eq(d.version, f.version, "one live query, one version");
    cr_assert_eq(metric("live_queries"), 1, "identical subscriptions share one live query");
    cr_assert_eq(metric("subscriptions"), 2);

    /* add in the middle */
    create_session("b", "thr-1", "2026-03-02T10:00:00.000Z", "scheduled", NULL);
    expect_change(&d, "upcoming", T1_LIVE);
    expect_change(&f, "upcoming", T1_LIVE);
    cr_assert_str_eq(held_ids(&d), "a,b,c");
    /* move: a after c */
    update_session("a", "{\"scheduled_at\":\"2026-03-02T12:00:00.000Z\"}");
    expect_change(&d, "upcoming", T1_LIVE);
    expect_change(&f, "upcoming", T1_LIVE);
    /* edit in place */
    update_session("c", "{\"room\":\"R2\"}");
    expect_change(&d, "upcoming", T1_LIVE);
    expect_change(&f, "upcoming", T1_LIVE);
    /* leaves the result: cancelled, then deleted */
    update_session("b", "{\"status\":\"cancelled\"}");
    expect_change(&d, "upcoming", T1_LIVE);
    expect_change(&f, "upcoming", T1_LIVE);
    delete_session("c");
    expect_change(&d, "upcoming", T1_LIVE);
    expect_change(&f, "upcoming", T1_LIVE);
    /* back in, and a move and an edit at once */
    update_session("b", "{\"status\":\"scheduled\",\"scheduled_at\":\"2026-03-03T08:00:00.000Z\"}");
    expect_change(&d, "upcoming", T1_LIVE);
    expect_change(&f, "upcoming", T1_LIVE);
    cr_assert_str_eq(held_ids(&d), "a,b");

    /* a batch of writes: however many notifications, the result is right */
    send_raw(cl, "[{\"jsonrpc\":\"2.0\",\"id\":900,\"method\":\"create\",\"params\":{\"collection\":"
                 "\"sessions\",\"doc\":{\"id\":\"e\",\"therapist_id\":\"thr-1\",\"scheduled_at\":"
                 "\"2026-03-01T07:00:00.000Z\",\"status\":\"scheduled\"}}},"
                 "{\"jsonrpc\":\"2.0\",\"id\":901,\"method\":\"update\",\"params\":{\"collection\":"
                 "\"sessions\",\"id\":\"a\",\"patch\":{\"scheduled_at\":\"2026-03-01T06:00:00.000Z\","
                 "\"room\":\"Q\"}}},"
                 "{\"jsonrpc\":\"2.0\",\"id\":902,\"method\":\"delete\",\"params\":{\"collection\":"
                 "\"sessions\",\"id\":\"b\"}}]");
    cJSON *batch = wait_answer(cl, -1, 10000);
    cr_assert_eq(cJSON_GetArraySize(batch), 3);
    cJSON_Delete(batch);
    char *fresh = query_items("upcoming", T1_LIVE, false);
    cr_assert_str_eq(ids_of(fresh), "a,e");
    sub_t *both[] = {&d, &f};
    for (int k = 0; k < 2; k++) {
        int notes = 0;
        for (;;) {
            char *now_held = cJSON_PrintUnformatted(both[k]->items);
            bool same = strcmp(now_held, fresh) == 0;
            free(now_held);
            if (same)
                break;
            cJSON *n = must_note(both[k]->c, "query.changed", 3000);
            apply_change(both[k], n);
            cJSON_Delete(n);
            cr_assert_leq(++notes, 3, "more notifications than writes");
        }
    }
    free(fresh);

    /* another therapist's writes: no recompute, no notification */
    double recomputes = metric("recomputes");
    create_session("o2", "thr-2", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    update_session("o", "{\"room\":\"X\"}");
    delete_session("o2");
    assert_quiet(c1, 300, "a notification for another therapist's writes");
    assert_quiet(c2, 0, "a notification for another therapist's writes");
    cr_assert_eq(metric("recomputes"), recomputes);
    sub_free(&d);
    sub_free(&f);
}

/* Applies s's notifications until it holds what a fresh query answers
 * (at most `most` of them); returns how many it took. */
static int catch_up(sub_t *s, const char *selector, const char *params, int most)
{
    char *fresh = query_items(selector, params, false);
    int notes = 0;
    for (;;) {
        char *held = cJSON_PrintUnformatted(s->items);
        bool same = strcmp(held, fresh) == 0;
        if (!same && notes == most)
            cr_assert_fail("after %d notifications the subscriber holds\n%s\nnot\n%s", notes,
                           held, fresh);
        free(held);
        if (same)
            break;
        cJSON *n = must_note(s->c, "query.changed", 3000);
        apply_change(s, n);
        cJSON_Delete(n);
        notes++;
    }
    free(fresh);
    return notes;
}

/* Random writes (a fixed seed) to sessions of thr-1 and thr-2, moving them
 * in time, in and out of the result, between therapists: a live query with
 * a window of 3 rows and one with the whole list stay exact. */
Test(cache, random_writes_keep_live_queries_exact)
{
    start_engine(NULL, NULL);
    const char *win = "{\"therapist_id\":\"thr-1\",\"now\":\"" NOW0 "\",\"limit\":3}";
    client_t *c1 = client_open(), *c2 = client_open();
    sub_t w = {0}, all = {0};
    subscribe(&w, c1, "upcoming", win, NULL);
    subscribe(&all, c2, "upcoming", T1_LIVE, NULL);
    uint32_t seed = 20261;
    if (getenv("TS_CACHE_SEED")) /* to explore: other seeds */
        seed = (uint32_t)strtoul(getenv("TS_CACHE_SEED"), NULL, 10);
    bool exists[10] = {0};
    int notes = 0;
    for (int step = 0; step < 80; step++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 16) % 10), what = (int)((seed >> 8) % 5);
        int day = 1 + (int)((seed >> 22) % 9);
        const char *th = (seed >> 4) % 4 == 0 ? "thr-2" : "thr-1";
        char id[16], at[40], patch[160];
        snprintf(id, sizeof id, "r%d", k);
        snprintf(at, sizeof at, "2026-03-%02dT%02d:00:00.000Z", day, 8 + (int)(seed % 9));
        if (!exists[k]) {
            create_session(id, th, at, what == 0 ? "cancelled" : "scheduled", NULL);
            exists[k] = true;
        } else if (what == 0) {
            delete_session(id);
            exists[k] = false;
        } else {
            if (what == 1)
                snprintf(patch, sizeof patch, "{\"scheduled_at\":\"%s\"}", at);
            else if (what == 2)
                snprintf(patch, sizeof patch, "{\"status\":\"%s\"}",
                         (seed >> 3) % 3 ? "scheduled" : "cancelled");
            else if (what == 3) /* to the other therapist, or staying */
                snprintf(patch, sizeof patch, "{\"therapist_id\":\"%s\"}", th);
            else
                snprintf(patch, sizeof patch, "{\"room\":\"%u\"}", seed % 1000);
            update_session(id, patch);
        }
        notes += catch_up(&w, "upcoming", win, 3);
        catch_up(&all, "upcoming", T1_LIVE, 3);
    }
    cr_assert_gt(notes, 10, "the window changed only %d times", notes);
    assert_quiet(c1, 200, "a notification after the window was exact");
    assert_quiet(c2, 0, "a notification after the list was exact");
    sub_free(&w);
    sub_free(&all);
}

/* ==== 5. a notification only when the result changed ==== */

Test(cache, no_notification_when_the_result_did_not_change)
{
    start_engine(NULL, NULL);
    /* 25 scheduled sessions: the result holds the first 20 */
    for (int i = 0; i < 25; i++) {
        char id[16], at[40];
        snprintf(id, sizeof id, "s%02d", i);
        snprintf(at, sizeof at, "2026-03-%02dT09:00:00.000Z", i + 1);
        create_session(id, "thr-1", at, "scheduled", NULL);
    }
    create_session("cx", "thr-1", "2026-03-04T12:00:00.000Z", "cancelled", NULL);
    sub_t s = {0};
    subscribe(&s, cl, "upcoming", T1_LIVE, NULL);
    cr_assert_eq(cJSON_GetArraySize(s.items), 20);
    double unchanged = metric("unchanged"), notes = metric("notifications");
    /* beyond the 20 rows, and a session that is not scheduled */
    update_session("s23", "{\"room\":\"far\"}");
    update_session("cx", "{\"room\":\"nowhere\"}");
    update_session("s24", "{\"scheduled_at\":\"2026-04-30T09:00:00.000Z\"}");
    assert_quiet(cl, 300, "a notification for a write that did not change the result");
    cr_assert_eq(metric("notifications"), notes);
    cr_assert_geq(metric("unchanged"), unchanged + 1, "cx was in the range: run, unchanged");
    /* the control: a row of the result changes */
    update_session("s05", "{\"room\":\"near\"}");
    cJSON *n = must_note(cl, "query.changed", 3000);
    cJSON *ops = cJSON_GetObjectItem(cJSON_GetObjectItem(n, "params"), "ops");
    cr_assert_eq(cJSON_GetArraySize(ops), 1);
    cJSON *op = cJSON_GetArrayItem(ops, 0);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(op, "op")), "edit");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(op, "id")), "s05");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(op, "doc"), "room")),
                     "near");
    apply_change(&s, n);
    cJSON_Delete(n);
    assert_holds_fresh(&s, "upcoming", T1_LIVE);
    sub_free(&s);
}

/* ==== 6. unsubscribe ==== */

static void expect_unsubscribed(client_t *c, const char *sub, bool expected)
{
    char p[96];
    snprintf(p, sizeof p, "{\"sub\":\"%s\"}", sub);
    cJSON *res = must(c, "unsubscribe", p);
    cJSON *u = cJSON_GetObjectItem(res, "unsubscribed");
    cr_assert(cJSON_IsBool(u) && cJSON_IsTrue(u) == expected, "unsubscribe %s: expected %s", sub,
              expected ? "true" : "false");
    cJSON_Delete(res);
}

Test(cache, unsubscribe_ends_only_my_own_subscription)
{
    start_engine(NULL, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    client_t *mine = client_open(), *other = client_open();
    sub_t s = {0};
    subscribe(&s, mine, "upcoming", T1_LIVE, NULL);
    expect_unsubscribed(other, s.id, false);
    expect_unsubscribed(mine, "s999999", false);
    update_session("a", "{\"room\":\"1\"}");
    expect_change(&s, "upcoming", T1_LIVE);
    cr_assert_eq(metric("subscriptions"), 1);

    expect_unsubscribed(mine, s.id, true);
    cr_assert_eq(metric("subscriptions"), 0);
    cr_assert_eq(metric("live_queries"), 0);
    update_session("a", "{\"room\":\"2\"}");
    create_session("b", "thr-1", "2026-03-02T10:00:00.000Z", "scheduled", NULL);
    assert_quiet(mine, 300, "a notification after unsubscribe");
    expect_unsubscribed(mine, s.id, false);
    sub_free(&s);
}

/* ==== 7. bad input ==== */

static void expect_error(client_t *c, const char *method, const char *params, int code,
                         const char *in_message)
{
    cJSON *r = call(c, method, params);
    cJSON *e = cJSON_GetObjectItem(r, "error");
    char *text = cJSON_PrintUnformatted(r);
    cr_assert_not_null(e, "%s %.200s: no error: %.300s", method, params, text);
    cr_assert_eq(cJSON_GetObjectItem(e, "code")->valueint, code, "%s %.200s: %.300s", method,
                 params, text);
    cr_assert(strstr(error_message(r), in_message), "%s %.200s: message %s", method, params,
              error_message(r));
    free(text);
    cJSON_Delete(r);
}

Test(cache, bad_subscribes_get_clear_errors_and_leave_nothing)
{
    start_engine(NULL, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    expect_error(cl, "subscribe", "{\"collection\":\"sessions\",\"selector\":\"nope\"}", -32004,
                 "nope");
    expect_error(cl, "subscribe", "{\"collection\":\"nothing\",\"selector\":\"upcoming\"}", -32008,
                 "nothing");
    expect_error(cl, "subscribe",
                 "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":[1]}", -32602,
                 "params");
    expect_error(cl, "subscribe",
                 "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":\"x\"}", -32602,
                 "params");
    expect_error(cl, "subscribe",
                 "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"mode\":\"bogus\"}",
                 -32602, "mode");
    expect_error(cl, "subscribe",
                 "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"since\":\"12\"}",
                 -32602, "since");
    expect_error(cl, "subscribe",
                 "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"since\":1.5}", -32602,
                 "since");
    expect_error(cl, "subscribe", "{\"collection\":\"sessions\",\"selector\":7}", -32602,
                 "selector");
    expect_error(cl, "unsubscribe", "{\"sub\":5}", -32602, "sub");
    /* the selector of another collection: the same error as a query gets */
    expect_error(cl, "subscribe", "{\"collection\":\"consultations\",\"selector\":\"upcoming\"}",
                 -32602, "sessions");
    /* params over 16 KiB */
    ts_buf_t big = {0};
    ts_buf_puts(&big, "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":"
                      "{\"therapist_id\":\"thr-1\",\"pad\":\"");
    for (int i = 0; i < 17 * 1024; i++)
        ts_buf_puts(&big, "x");
    ts_buf_puts(&big, "\"}}");
    expect_error(cl, "subscribe", big.data, -32602, "16384");
    ts_buf_free(&big);
    /* inside a batch */
    send_raw(cl, "[{\"jsonrpc\":\"2.0\",\"id\":800,\"method\":\"subscribe\",\"params\":"
                 "{\"collection\":\"sessions\",\"selector\":\"upcoming\"}},"
                 "{\"jsonrpc\":\"2.0\",\"id\":801,\"method\":\"unsubscribe\",\"params\":"
                 "{\"sub\":\"s1\"}},{\"jsonrpc\":\"2.0\",\"id\":802,\"method\":\"ping\"}]");
    cJSON *batch = wait_answer(cl, -1, 10000);
    cr_assert_eq(cJSON_GetArraySize(batch), 3);
    for (int i = 0; i < 2; i++) {
        cJSON *r = cJSON_GetArrayItem(batch, i);
        cr_assert_eq(ts_rpc_error_code(r), -32600, "batch answer %d", i);
        cr_assert(strstr(error_message(r), "cannot be part of a batch"), "%s", error_message(r));
    }
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(batch, 2),
                                                              "result")),
                     "pong");
    cJSON_Delete(batch);
    /* nothing was left behind, and a good subscribe still works */
    cr_assert_eq(metric("subscriptions"), 0);
    cr_assert_eq(metric("live_queries"), 0);
    sub_t s = {0};
    subscribe(&s, cl, "upcoming", T1_LIVE, NULL);
    cr_assert_str_eq(held_ids(&s), "a");
    sub_free(&s);
    assert_alive();
}

/* ==== 8. caps ==== */

Test(cache, the_subscription_cap_refuses_with_its_name)
{
    start_engine(NULL, "cache = { max_subscriptions = 50 }\n");
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    client_t *c1 = client_open(), *c2 = client_open();
    sub_t subs[50];
    for (int i = 0; i < 50; i++) {
        char p[128];
        snprintf(p, sizeof p, "{\"therapist_id\":\"thr-%d\",\"now\":\"" NOW0 "\"}", i % 7);
        subscribe(&subs[i], c1, "upcoming", p, NULL);
    }
    expect_error(c1, "subscribe", "{\"collection\":\"sessions\",\"selector\":\"upcoming\"}", -32005,
                 "max_subscriptions");
    sub_t other = {0};
    subscribe(&other, c2, "upcoming", T1_LIVE, NULL);
    cr_assert_eq(metric("subscriptions"), 51);
    /* one fewer, one more */
    expect_unsubscribed(c1, subs[0].id, true);
    sub_t again = {0};
    subscribe(&again, c1, "upcoming", T1_LIVE, NULL);
    expect_error(c1, "subscribe", "{\"collection\":\"sessions\",\"selector\":\"upcoming\"}", -32005,
                 "max_subscriptions");
    /* the subscriptions at the cap still notify */
    update_session("a", "{\"room\":\"capped\"}");
    expect_change(&again, "upcoming", T1_LIVE);
    expect_change(&other, "upcoming", T1_LIVE);
    for (int i = 0; i < 50; i++)
        sub_free(&subs[i]);
    sub_free(&other);
    sub_free(&again);
}

Test(cache, two_thousand_subscribes_stop_at_the_default_cap)
{
    start_engine(NULL, NULL);
    const int n = 2000, lives = 300;
    int ok = 0, busy = 0;
    /* first one per therapist (each live query gets a subscriber), then
     * the rest pipelined */
    for (int phase = 0; phase < 2; phase++) {
        int from = phase ? lives : 0, to = phase ? n : lives, first_id = cl->next_id;
        for (int i = from; i < to; i++) {
            char p[160];
            snprintf(p, sizeof p,
                     "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":"
                     "{\"therapist_id\":\"thr-%d\",\"now\":\"" NOW0 "\"}}",
                     i % lives);
            send_call(cl, "subscribe", p);
        }
        for (int id = first_id; id < first_id + (to - from); id++) {
            cJSON *r = wait_answer(cl, id, 20000);
            if (cJSON_GetObjectItem(r, "result")) {
                ok++;
            } else {
                cr_assert_eq(ts_rpc_error_code(r), -32005, "subscribe %d: %s", id,
                             error_message(r));
                cr_assert(strstr(error_message(r), "1000") &&
                              strstr(error_message(r), "cache.max_subscriptions"),
                          "%s", error_message(r));
                busy++;
            }
            cJSON_Delete(r);
        }
        cr_assert(phase || ok == lives, "the first %d subscribes: %d accepted", lives, ok);
    }
    cr_assert_eq(ok, 1000);
    cr_assert_eq(busy, 1000);
    assert_alive();
    cr_assert_eq(metric("subscriptions"), 1000);
    cr_assert_eq(metric("live_queries"), 300);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    assert_answer("upcoming", T1_NOW, "a");
}

/* ==== 9. a subscriber that goes away ==== */

Test(cache, a_vanished_subscriber_loses_its_subscriptions)
{
    start_engine(NULL, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    client_t *gone = client_open();
    sub_t s[3];
    subscribe(&s[0], gone, "upcoming", T1_LIVE, NULL);
    subscribe(&s[1], gone, "upcoming", T1_LIVE, ",\"mode\":\"full\"");
    subscribe(&s[2], gone, "by_patient", "{\"patient_id\":\"p\"}", NULL);
    cr_assert_eq(metric("subscriptions"), 3);
    client_close(gone);
    /* the next notification to it finds it gone; a change every 300 ms in
     * case the first went out before the engine saw the disconnect */
    int64_t deadline = ts_mono_us() + 3000000;
    double subs = 3;
    for (int round = 0; subs > 0 && ts_mono_us() < deadline; round++) {
        if (round % 6 == 0) {
            char patch[64];
            snprintf(patch, sizeof patch, "{\"room\":\"r%d\"}", round);
            update_session("a", patch);
        }
        usleep(50 * 1000);
        subs = metric("subscriptions");
    }
    cr_assert_eq(subs, 0, "the vanished client's subscriptions are still there");
    cr_assert_eq(metric("live_queries"), 0);
    assert_alive();
    update_session("a", "{\"room\":\"after\"}");
    assert_answer("upcoming", T1_NOW, "a");
    for (int i = 0; i < 3; i++)
        sub_free(&s[i]);
}

/* ==== 10. a selector that fails on a re-run ==== */

static const char *failing_selectors =
    "return {\n"
    "  picky = {\n"
    "    collection = \"sessions\", index = \"therapist_id\",\n"
    "    where = function(doc)\n"
    "      if doc.status == \"boom\" then error(\"cannot read a boom session\") end\n"
    "      if doc.status == \"spin\" then while true do end end\n"
    "      return doc.status == \"scheduled\"\n"
    "    end,\n"
    "    order_by = { \"scheduled_at\", \"asc\" }, limit = 20,\n"
    "  },\n"
    "  all = { collection = \"sessions\", index = \"therapist_id\",\n"
    "          order_by = { \"scheduled_at\", \"asc\" }, limit = 20 },\n"
    "}\n";

Test(cache, a_live_query_whose_selector_fails_is_closed)
{
    start_engine(failing_selectors, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    create_session("b", "thr-2", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    client_t *c2 = client_open();
    sub_t s1 = {0}, s2 = {0}, ok = {0};
    subscribe(&s1, cl, "picky", "{\"therapist_id\":\"thr-1\"}", NULL);
    subscribe(&s2, c2, "picky", "{\"therapist_id\":\"thr-2\"}", NULL);
    subscribe(&ok, c2, "all", "{\"therapist_id\":\"thr-1\"}", NULL);

    update_session("a", "{\"status\":\"boom\"}");
    cJSON *n = must_note(cl, "query.closed", 3000);
    cJSON *p = cJSON_GetObjectItem(n, "params");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(p, "sub")), s1.id);
    const char *reason = cJSON_GetStringValue(cJSON_GetObjectItem(p, "reason"));
    cr_assert(reason && strncmp(reason, "policy_error", 12) == 0 &&
                  strstr(reason, "cannot read a boom session"),
              "reason: %s", reason);
    cJSON_Delete(n);
    /* the other live query of thr-1 saw the change */
    expect_change(&ok, "all", "{\"therapist_id\":\"thr-1\"}");

    int64_t t0 = ts_mono_us();
    update_session("b", "{\"status\":\"spin\"}");
    n = must_note(c2, "query.closed", 5000);
    p = cJSON_GetObjectItem(n, "params");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(p, "sub")), s2.id);
    reason = cJSON_GetStringValue(cJSON_GetObjectItem(p, "reason"));
    cr_assert(reason && strncmp(reason, "policy_error", 12) == 0 && strstr(reason, "budget"),
              "reason: %s", reason);
    cr_assert_lt(ts_mono_us() - t0, 5000000);
    cJSON_Delete(n);

    cr_assert_eq(metric("subscriptions"), 1, "the closed ones are gone");
    cr_assert_eq(metric("closed"), 2);
    expect_unsubscribed(cl, s1.id, false);
    /* subscribing again fails at once while the document is bad; fine after */
    expect_error(cl, "subscribe",
                 "{\"collection\":\"sessions\",\"selector\":\"picky\",\"params\":"
                 "{\"therapist_id\":\"thr-1\"}}",
                 -32004, "boom");
    update_session("a", "{\"status\":\"scheduled\",\"room\":\"fixed\"}");
    expect_change(&ok, "all", "{\"therapist_id\":\"thr-1\"}");
    sub_t again = {0};
    subscribe(&again, cl, "picky", "{\"therapist_id\":\"thr-1\"}", NULL);
    cr_assert_str_eq(held_ids(&again), "a");
    assert_answer("all", "{\"therapist_id\":\"thr-2\"}", "b");
    assert_alive();
    sub_free(&s1);
    sub_free(&s2);
    sub_free(&ok);
    sub_free(&again);
}

/* ==== 11. a policy reload under live queries ==== */

static const char *reload_v1 =
    "local wanted = \"scheduled\"\n"
    "return {\n"
    "  a = { collection = \"sessions\", index = \"therapist_id\",\n"
    "        where = function(doc) return doc.status == wanted end,\n"
    "        order_by = { \"scheduled_at\", \"asc\" }, limit = 20 },\n"
    "  b = { collection = \"sessions\", index = \"therapist_id\",\n"
    "        order_by = { \"scheduled_at\", \"desc\" }, limit = 20 },\n"
    "  same = { collection = \"sessions\", index = \"therapist_id\",\n"
    "           order_by = { \"scheduled_at\", \"asc\" }, limit = 20 },\n"
    "}\n";

/* a's where is the same text: only the value it reads (an upvalue) changed */
static const char *reload_v2 =
    "local wanted = \"cancelled\"\n"
    "return {\n"
    "  a = { collection = \"sessions\", index = \"therapist_id\",\n"
    "        where = function(doc) return doc.status == wanted end,\n"
    "        order_by = { \"scheduled_at\", \"asc\" }, limit = 20 },\n"
    "  same = { collection = \"sessions\", index = \"therapist_id\",\n"
    "           order_by = { \"scheduled_at\", \"asc\" }, limit = 20 },\n"
    "}\n";

#define T1 "{\"therapist_id\":\"thr-1\"}"

Test(cache, a_policy_reload_closes_removed_and_reruns_changed_selectors)
{
    start_engine(reload_v1, NULL);
    create_session("s1", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    create_session("s2", "thr-1", "2026-03-02T10:00:00.000Z", "cancelled", NULL);
    create_session("s3", "thr-1", "2026-03-02T11:00:00.000Z", "scheduled", NULL);
    client_t *ca = client_open(), *cb = client_open();
    sub_t sa = {0}, sb = {0}, ss = {0};
    subscribe(&sa, ca, "a", T1_NOW, NULL);
    subscribe(&sb, cb, "b", T1_NOW, NULL);
    subscribe(&ss, cb, "same", T1_NOW, NULL);
    assert_answer("a", T1_NOW, "s1,s3"); /* kept in the cache */
    assert_answer("same", T1_NOW, "s1,s2,s3");

    write_file(pol_dir, "selectors.lua", reload_v2);
    cJSON *r = must(cl, "policy.reload", NULL);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "loaded")));
    cJSON_Delete(r);

    cJSON *n = must_note(cb, "query.closed", 3000);
    cJSON *p = cJSON_GetObjectItem(n, "params");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(p, "sub")), sb.id);
    cr_assert(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(p, "reason")), "reload"));
    cJSON_Delete(n);
    expect_change(&sa, "a", T1_NOW);
    cr_assert_str_eq(held_ids(&sa), "s2", "a follows the new where");
    /* the unchanged selector: no notification, its answer still a hit */
    assert_quiet(cb, 300, "a notification for an unchanged selector");
    double hits = metric("hits");
    assert_answer("a", T1_NOW, "s2");
    assert_answer("same", T1_NOW, "s1,s2,s3");
    cr_assert_eq(metric("hits"), hits + 1, "same's answer survived the reload, a's did not");
    expect_error(cl, "query", "{\"collection\":\"sessions\",\"selector\":\"b\",\"params\":" T1_NOW "}",
                 -32004, "b");
    cr_assert_eq(metric("subscriptions"), 2);
    /* and the re-run live query keeps following */
    update_session("s3", "{\"status\":\"cancelled\"}");
    expect_change(&sa, "a", T1_NOW);
    expect_change(&ss, "same", T1_NOW);
    sub_free(&sa);
    sub_free(&sb);
    sub_free(&ss);
}

/* The front door answers hot queries from its copies of the cache's
 * answers: never behind what a client was told. Another client's write,
 * answered, shows in the next query at once; so does a policy reload. */
Test(cache, the_front_doors_copies_never_answer_behind_what_a_client_was_told)
{
    start_engine(reload_v1, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    create_session("b", "thr-1", "2026-03-02T10:00:00.000Z", "cancelled", NULL);
    assert_answer("same", T1_NOW, "a,b");
    double front = metric("front_hits"), sq = selector_queries();
    for (int i = 0; i < 3; i++) /* the first asks for a copy; then the front door answers */
        cJSON_Delete(must(cl, "query", "{\"collection\":\"sessions\",\"selector\":\"same\","
                                       "\"params\":" T1_NOW "}"));
    cr_assert_geq(metric("front_hits"), front + 2, "the front door answered from its copy");
    cr_assert_eq(selector_queries(), sq);

    client_t *writer = client_open();
    front = metric("front_hits");
    for (int i = 0; i < 200; i++) {
        char patch[256], want[32];
        snprintf(want, sizeof want, "r%03d", i);
        snprintf(patch, sizeof patch,
                 "{\"collection\":\"sessions\",\"id\":\"%s\",\"patch\":{\"room\":\"%s\"}}",
                 i % 2 ? "a" : "b", want);
        cJSON_Delete(must(writer, "update", patch)); /* answered to the writer */
        for (int k = 0; k < 2; k++) { /* a miss (the write dropped the answer), then a hit */
            char *items = query_items("same", T1_NOW, true);
            cJSON *arr = cJSON_Parse(items);
            cJSON *doc = cJSON_GetArrayItem(arr, i % 2 ? 0 : 1);
            cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "room")), want,
                             "round %d: the query missed the write answered before it: %s", i,
                             items);
            cJSON_Delete(arr);
            free(items);
        }
    }
    cr_assert_gt(metric("front_hits"), front, "the rounds were answered by the front door too");

    /* told by another answer: the store's own (get) answers a write still
     * on its way to disk; a query right after it reflects it too */
    for (int i = 0; i < 300; i++) {
        char patch[256], get[128], want[32];
        snprintf(want, sizeof want, "g%03d", i);
        snprintf(patch, sizeof patch,
                 "{\"collection\":\"sessions\",\"id\":\"a\",\"patch\":{\"room\":\"%s\"}}", want);
        snprintf(get, sizeof get, "{\"collection\":\"sessions\",\"id\":\"a\"}");
        int uid = send_call(writer, "update", patch);
        for (int tries = 0;; tries++) {
            cr_assert_lt(tries, 10000, "round %d: get never showed the write", i);
            cJSON *g = must(cl, "get", get);
            const char *room = cJSON_GetStringValue(
                cJSON_GetObjectItem(cJSON_GetObjectItem(g, "doc"), "room"));
            bool seen = room && strcmp(room, want) == 0;
            cJSON_Delete(g);
            if (seen)
                break;
        }
        char *items = query_items("same", T1_NOW, true);
        cJSON *arr = cJSON_Parse(items);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(arr->child, "room")), want,
                         "round %d: the query is behind the get before it: %s", i, items);
        cJSON_Delete(arr);
        free(items);
        cJSON_Delete(wait_answer(writer, uid, 10000));
    }

    /* a reload: the copies go with the selectors they were made by */
    for (int i = 0; i < 3; i++)
        assert_answer("a", T1_NOW, "a");
    write_file(pol_dir, "selectors.lua", reload_v2);
    cJSON *r = must(cl, "policy.reload", NULL);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "loaded")));
    cJSON_Delete(r);
    assert_answer("a", T1_NOW, "b");
    expect_error(cl, "query", "{\"collection\":\"sessions\",\"selector\":\"b\",\"params\":" T1_NOW "}",
                 -32004, "b");
}

/* ==== 12. the byte cap ==== */

Test(cache, the_byte_cap_evicts_and_answers_stay_right)
{
    start_engine(NULL, "cache = { max_bytes = 20000 }\n");
    const int therapists = 40;
    char pad[400];
    memset(pad, 'p', 300);
    pad[300] = '\0';
    for (int t = 0; t < therapists; t++)
        for (int k = 0; k < 2; k++) {
            char id[32], th[32], at[40], extra[512];
            snprintf(id, sizeof id, "t%02d-%d", t, k);
            snprintf(th, sizeof th, "thr-%02d", t);
            snprintf(at, sizeof at, "2026-03-%02dT09:00:00.000Z", k + 1);
            snprintf(extra, sizeof extra, ",\"pad\":\"%s\"", pad);
            create_session(id, th, at, "scheduled", extra);
        }
    client_t *live = client_open();
    sub_t subs[4];
    char params[4][96];
    for (int t = 0; t < 4; t++) {
        snprintf(params[t], sizeof params[t], "{\"therapist_id\":\"thr-%02d\",\"now\":\"" NOW0 "\"}",
                 t);
        subscribe(&subs[t], live, "upcoming", params[t], NULL);
    }
    for (int round = 0; round < 2; round++)
        for (int t = 0; t < therapists; t++) {
            char p[96], ids[32];
            snprintf(p, sizeof p, "{\"therapist_id\":\"thr-%02d\",\"now\":\"" NOW0 "\"}", t);
            snprintf(ids, sizeof ids, "t%02d-0,t%02d-1", t, t);
            assert_answer("upcoming", p, ids);
            cr_assert_leq(metric("bytes"), 20000, "over the cap after thr-%02d", t);
        }
    cr_assert_gt(metric("evictions"), 0);
    cr_assert_gt(metric("entries"), 2, "some answers are kept");
    /* the most recent answer is still a hit */
    double hits = metric("hits");
    assert_answer("upcoming", "{\"therapist_id\":\"thr-39\",\"now\":\"" NOW0 "\"}", "t39-0,t39-1");
    cr_assert_eq(metric("hits"), hits + 1);
    /* the live queries kept notifying */
    for (int t = 0; t < 4; t++) {
        char id[32];
        snprintf(id, sizeof id, "t%02d-1", t);
        update_session(id, "{\"room\":\"after the flood\"}");
        expect_change(&subs[t], "upcoming", params[t]);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(subs[t].items, 1),
                                                                  "room")),
                         "after the flood");
        sub_free(&subs[t]);
    }
}

/* The front door's copies of the answers are in the budget: an answer
 * kept whole (a selector without a lower bound) costs its size twice. */
Test(cache, the_byte_cap_counts_the_front_doors_copies)
{
    start_engine(NULL, NULL);
    char pad[1700], extra[1800];
    memset(pad, 'p', 1600);
    pad[1600] = '\0';
    snprintf(extra, sizeof extra, ",\"patient_id\":\"p-big\",\"pad\":\"%s\"", pad);
    for (int k = 0; k < 6; k++) {
        char id[32], at[40];
        snprintf(id, sizeof id, "big-%d", k);
        snprintf(at, sizeof at, "2026-03-%02dT09:00:00.000Z", k + 1);
        create_session(id, "thr-big", at, "scheduled", extra);
    }
    double before = metric("bytes");
    const char *params = "{\"patient_id\":\"p-big\"}";
    char *items = query_items("by_patient", params, true); /* kept */
    free(query_items("by_patient", params, true));          /* and copied to the front door */
    size_t len = strlen(items);
    cr_assert_gt(len, 9600, "the six sessions: %s", ids_of(items));
    free(items);
    double grew = metric("bytes") - before;
    cr_assert_geq(grew, 2.0 * (double)len, "an answer of %zu bytes costs %.0f", len, grew);
    cr_assert_lt(grew, 3.0 * (double)len + 4096, "and not much more");
}

/* ==== 13. a selector that reads the clock ==== */

static const char *clock_selectors =
    "return {\n"
    "  clocky = { collection = \"sessions\", index = \"therapist_id\",\n"
    "             where = function(doc) return os.time() > 0 and doc.status == \"scheduled\" end,\n"
    "             order_by = { \"scheduled_at\", \"asc\" }, limit = 20 },\n"
    "  steady = { collection = \"sessions\", index = \"therapist_id\",\n"
    "             where = function(doc) return doc.status == \"scheduled\" end,\n"
    "             order_by = { \"scheduled_at\", \"asc\" }, limit = 20 },\n"
    "}\n";

Test(cache, an_answer_that_read_the_clock_is_not_kept)
{
    start_engine(clock_selectors, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", NULL);
    create_session("b", "thr-1", "2026-03-02T10:00:00.000Z", "cancelled", NULL);
    double hits = metric("hits"), uncached = metric("uncached"), sq = selector_queries();
    assert_answer("clocky", T1_NOW, "a");
    assert_answer("clocky", T1_NOW, "a");
    cr_assert_eq(metric("hits"), hits, "an answer that read the clock was a hit");
    cr_assert_eq(metric("uncached"), uncached + 2);
    cr_assert_eq(selector_queries(), sq + 4, "each query ran the selector");
    cr_assert_eq(metric("entries"), 0);
    /* the control: the same selector without the clock is kept */
    assert_answer("steady", T1_NOW, "a");
    assert_answer("steady", T1_NOW, "a");
    cr_assert_eq(metric("hits"), hits + 1);
    cr_assert_eq(metric("uncached"), uncached + 2);
}

/* A query without params.now means "now": a selector that reads it
 * (upcoming) has an answer that ages, computed each time and not kept; a
 * selector that never reads it (by_patient) is one question, kept. */
Test(cache, a_query_without_now_is_kept_only_when_the_selector_ignores_now)
{
    start_engine(NULL, NULL);
    create_session("a", "thr-1", "2099-03-02T09:00:00.000Z", "scheduled", ",\"patient_id\":\"p1\"");
    double hits = metric("hits"), uncached = metric("uncached");
    for (int i = 0; i < 5; i++) {
        assert_answer("upcoming", T1, "a");
        usleep(2000); /* another millisecond each time */
    }
    cr_assert_eq(metric("hits"), hits, "an answer to the clock's now was a hit");
    cr_assert_eq(metric("uncached"), uncached + 5);
    cr_assert_eq(metric("entries"), 0, "answers that age were kept");
    /* by_patient never reads now: one question, kept */
    for (int i = 0; i < 3; i++) {
        assert_answer("by_patient", "{\"patient_id\":\"p1\"}", "a");
        usleep(2000);
    }
    cr_assert_eq(metric("hits"), hits + 2);
    cr_assert_eq(metric("entries"), 1);
}

/* invalidate {collection, selector}: that selector's answers are dropped
 * and counted, the next query is a miss with the same answer; another
 * selector's answers stay. */
Test(cache, invalidate_drops_a_selectors_answers)
{
    start_engine(NULL, NULL);
    create_session("a", "thr-1", "2026-03-02T09:00:00.000Z", "scheduled", ",\"patient_id\":\"p1\"");
    char *up = query_items("upcoming", T1_NOW, true);
    char *bp = query_items("by_patient", "{\"patient_id\":\"p1\",\"now\":\"" NOW0 "\"}", true);
    double misses = metric("misses"), hits = metric("hits");
    cJSON *r = must(cl, "invalidate", "{\"collection\":\"sessions\",\"selector\":\"upcoming\"}");
    cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(r, "invalidated")), 1, "one answer");
    cJSON_Delete(r);
    char *again = query_items("upcoming", T1_NOW, true);
    cr_assert_str_eq(again, up);
    cr_assert_eq(metric("misses"), misses + 1, "the dropped answer was still there");
    char *bp2 = query_items("by_patient", "{\"patient_id\":\"p1\",\"now\":\"" NOW0 "\"}", true);
    cr_assert_str_eq(bp2, bp);
    cr_assert_eq(metric("hits"), hits + 1, "another selector's answer was dropped too");
    /* with params: that question only */
    r = must(cl, "invalidate", "{\"collection\":\"sessions\",\"selector\":\"by_patient\","
                               "\"params\":{\"patient_id\":\"p2\",\"now\":\"" NOW0 "\"}}");
    cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(r, "invalidated")), 0);
    cJSON_Delete(r);
    r = must(cl, "invalidate", "{\"collection\":\"sessions\",\"selector\":\"by_patient\","
                               "\"params\":{\"now\":\"" NOW0 "\",\"patient_id\":\"p1\"}}");
    cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(r, "invalidated")), 1);
    cJSON_Delete(r);
    free(up);
    free(bp);
    free(again);
    free(bp2);
}
