/* test_rig_sync.c — the sync actor alone, the test playing the store (the
 * cursor hint, OUTBOX; SYNC_UPDATES arrive at its endpoint) and the api
 * actors (API_REQUEST in, API_RESULT back to the request's reply_to)
 * (tests/support/rig.h). No HTTP: the rig is the Clinic API too.
 *
 * Pinned here: per document at most one write in flight, sent in seq
 * order, alone or in a batch; each write's idempotency key is its
 * mutation id and its If-Match the version the document's previous write
 * brought; confirmations reach the store in per-document seq order; a
 * write that met a network error goes again with the same key, If-Match
 * and body, and the next write of its document waits for it. */
#include "../support/rig.h"

#include "therasync/api.h"
#include "therasync/json.h"
#include "therasync/sync.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 5000

typedef struct {
    ts_rig_t r;
    void *api;     /* PULL TS_INPROC_API: pushes (API_REQUEST, API_CANCEL) */
    void *feed;    /* PULL TS_INPROC_API_FEED: the change feed, left unanswered */
    void *store;   /* PULL TS_INPROC_STORE_SYNC: SYNC_UPDATES, DIGEST_ASK */
    void *front;   /* PULL TS_INPROC_FRONT: ANSWERS of sync calls (none here) */
    void *inbox;   /* PUSH TS_INPROC_SYNC: the cursor hint, OUTBOX */
    void *results; /* PUSH TS_INPROC_SYNC_API: API_RESULT */
    ts_api_request_t *catchup; /* the first feed request, unanswered (NULL once answered) */
} sync_rig_t;

/* Starts the sync actor with writes sent batch_size at a time (1: each
 * alone) and, as the store does after recovery, gives it its cursor. */
static void up(sync_rig_t *s, int batch_size)
{
    memset(s, 0, sizeof *s);
    ts_rig_init(&s->r, false);
    ts_rig_set_api(&s->r, "http://127.0.0.1:9"); /* never dialled: the rig is the api actor */
    s->r.config.sync.batch_size = batch_size;
    s->api = ts_rig_bind(&s->r, TS_INPROC_API);
    s->feed = ts_rig_bind(&s->r, TS_INPROC_API_FEED);
    s->store = ts_rig_bind(&s->r, TS_INPROC_STORE_SYNC);
    s->front = ts_rig_bind(&s->r, TS_INPROC_FRONT);
    cr_assert(ts_rig_start(&s->r, ts_sync_start), "the sync actor starts");
    s->inbox = ts_rig_connect(&s->r, TS_INPROC_SYNC);
    s->results = ts_rig_connect(&s->r, TS_INPROC_SYNC_API);
    ts_sync_update_t *hint = ts_sync_update_new(TS_SYNC_CURSOR); /* none yet */
    cr_assert_eq(ts_send_SYNC_UPDATES(s->inbox, &hint, 1), 0);
    /* It catches up on the feed from the start; that request stays out. */
    ts_msg_t m;
    ts_rig_recv(s->feed, TS_MSG_API_REQUEST, WAIT_MS, &m);
    cr_assert_eq(m.count, 1);
    const ts_api_request_t *q = ts_msg_API_REQUEST(&m)[0];
    cr_assert(strncmp(q->path, "/v1/changes?since=0&", 20) == 0, "%s", q->path);
    s->catchup = (ts_api_request_t *)q;
    ts_msg_release(&m);
}

static void down(sync_rig_t *s)
{
    ts_api_request_free(s->catchup);
    ts_rig_down(&s->r);
}

static void feed_reply(sync_rig_t *s, ts_api_request_t *q, ts_api_error_t error, long status);

/* up(), caught up at once: the event stream opens; its request, unanswered. */
static ts_api_request_t *up_streaming(sync_rig_t *s)
{
    up(s, 1);
    feed_reply(s, s->catchup, TS_API_OK, 200);
    s->catchup = NULL;
    ts_msg_t m;
    ts_rig_recv(s->feed, TS_MSG_API_REQUEST, WAIT_MS, &m);
    ts_api_request_t *stream = ts_msg_API_REQUEST(&m)[0];
    ts_msg_release(&m);
    cr_assert(stream->stream, "%s", stream->path);
    return stream;
}

/* ---- the writes the store hands over ---- */

#define MAX_WRITES 32

typedef struct {
    char coll[16], id[16];
    ts_op_t op;
    int64_t seq;
    int64_t base;     /* the version the write was made on */
    char body[64];
    char mutation[37];
    int k;            /* its place among its document's writes, from 0 */
    int sends;        /* times it went out */
} write_t;

typedef struct {
    write_t w[MAX_WRITES];
    size_t n;
} writes_t;

static write_t *add_write(writes_t *ws, ts_record_t **list, const char *coll, const char *id,
                          ts_op_t op, int64_t base, const char *body)
{
    cr_assert_lt(ws->n, MAX_WRITES);
    write_t *w = &ws->w[ws->n];
    *w = (write_t){.op = op, .seq = (int64_t)ws->n + 1, .base = base};
    ts_copy_text(w->coll, sizeof w->coll, coll);
    ts_copy_text(w->id, sizeof w->id, id);
    ts_copy_text(w->body, sizeof w->body, body);
    for (size_t i = 0; i < ws->n; i++)
        if (!strcmp(ws->w[i].coll, coll) && !strcmp(ws->w[i].id, id))
            w->k++;
    ts_rig_append(list, ts_rig_mutation(coll, id, op, w->seq, base, body, w->mutation));
    ws->n++;
    return w;
}

static void send_outbox(sync_rig_t *s, ts_record_t *list)
{
    cr_assert_eq(ts_send_OUTBOX(s->inbox, &list, 1), 0);
}

static write_t *by_key(writes_t *ws, const char *key)
{
    for (size_t i = 0; i < ws->n; i++)
        if (!strcmp(ws->w[i].mutation, key))
            return &ws->w[i];
    cr_assert_fail("idempotency key %s is no mutation's id", key);
    return NULL;
}

/* ---- the rig as the Clinic API ---- */

/* One write as it went out, alone or as an op of a batch. */
typedef struct {
    const char *method; /* POST, PATCH, DELETE */
    char coll[65], id[65];
    char key[65];
    long long if_match; /* 0: none */
    cJSON *body;        /* borrowed from the request's JSON */
} op_t;

static const char *method_name(ts_api_method_t m)
{
    return m == TS_API_POST ? "POST" : m == TS_API_PATCH ? "PATCH" : m == TS_API_DELETE ? "DELETE"
                                                                                       : "GET";
}

/* The ops of a request; *json holds what they borrow (caller deletes). */
static size_t ops_of(const ts_api_request_t *q, op_t *ops, size_t max, cJSON **json)
{
    *json = q->body ? cJSON_Parse(q->body) : NULL;
    cr_assert(!q->body || *json, "a request body is JSON: %s", q->body);
    if (!strcmp(q->path, "/v1/_batch")) {
        cr_assert_eq(q->method, TS_API_POST);
        cr_assert_str_eq(q->idempotency_key, "", "a batch's keys are its ops'");
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(*json, "ops"), *o;
        size_t n = 0;
        cJSON_ArrayForEach(o, list)
        {
            cr_assert_lt(n, max);
            op_t *op = &ops[n++];
            *op = (op_t){.method = ts_json_string(o, "method")};
            cr_assert(op->method);
            ts_copy_text(op->coll, sizeof op->coll, ts_json_string(o, "collection"));
            ts_copy_text(op->key, sizeof op->key, ts_json_string(o, "idempotency_key"));
            ts_json_int(o, "if_match", &op->if_match);
            op->body = cJSON_GetObjectItemCaseSensitive(o, "body");
            const char *id = ts_json_string(o, "id");
            ts_copy_text(op->id, sizeof op->id, id ? id : ts_json_string(op->body, "id"));
        }
        return n;
    }
    op_t *op = &ops[0];
    *op = (op_t){.method = method_name(q->method), .if_match = q->if_match, .body = *json};
    ts_copy_text(op->key, sizeof op->key, q->idempotency_key);
    char rest[256];
    ts_copy_text(rest, sizeof rest, q->path);
    cr_assert(strncmp(rest, "/v1/", 4) == 0, "%s", q->path);
    char *slash = strchr(rest + 4, '/');
    if (slash)
        *slash = '\0';
    ts_copy_text(op->coll, sizeof op->coll, rest + 4);
    ts_copy_text(op->id, sizeof op->id, slash ? slash + 1 : ts_json_string(*json, "id"));
    return 1;
}

/* Checks that op is write w as sync must send it: the method and
 * document of its op, its body, and the If-Match (0: none) given. */
static void check_op(const op_t *op, const write_t *w, long long if_match)
{
    static const char *const methods[] = {[TS_OP_CREATE] = "POST", [TS_OP_UPDATE] = "PATCH",
                                          [TS_OP_DELETE] = "DELETE"};
    cr_assert_str_eq(op->method, methods[w->op], "seq %lld", (long long)w->seq);
    cr_assert_str_eq(op->coll, w->coll);
    cr_assert_str_eq(op->id, w->id);
    cr_assert_eq(op->if_match, if_match, "seq %lld goes with If-Match %lld, not %lld",
                 (long long)w->seq, if_match, op->if_match);
    long long v = -1;
    if (w->op != TS_OP_DELETE)
        cr_assert(ts_json_int(op->body, "v", &v) && v == w->k, "its body, v=%d", w->k);
}

/* The server's document after write w: version k + 1, as it counts. */
static cJSON *server_doc(const write_t *w)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "id", w->id);
    cJSON_AddNumberToObject(doc, "version", w->k + 1 + (double)w->base);
    cJSON_AddNumberToObject(doc, "v", w->k);
    return doc;
}

/* Answers request q: failure (not TS_API_OK) for the whole of it, or each
 * of its writes confirmed with the server's document. */
static void reply(sync_rig_t *s, ts_api_request_t *q, write_t *const *ws, size_t n,
                  ts_api_error_t failure)
{
    ts_api_result_t *res = calloc(1, sizeof *res);
    cr_assert(res);
    res->request = q;
    res->id = q->id;
    res->user = q->user;
    res->retry_after_ms = -1;
    res->attempts = 1;
    res->error = failure;
    res->left = true; /* the request reached the server (a reset, say, not a refused connect) */
    if (failure != TS_API_OK) {
        snprintf(res->message, sizeof res->message, "rig: %s", ts_api_error_name(failure));
    } else if (!strcmp(q->path, "/v1/_batch")) {
        res->status = 200;
        res->json = cJSON_CreateObject();
        cJSON *results = cJSON_AddArrayToObject(res->json, "results");
        for (size_t i = 0; i < n; i++) {
            cJSON *one = cJSON_CreateObject();
            cJSON_AddNumberToObject(one, "status", ws[i]->op == TS_OP_CREATE ? 201 : 200);
            cJSON_AddItemToObject(one, "body", server_doc(ws[i]));
            cJSON_AddItemToArray(results, one);
        }
    } else {
        res->status = ws[0]->op == TS_OP_CREATE ? 201 : 200;
        res->json = server_doc(ws[0]);
    }
    cr_assert_eq(ts_send_API_RESULT(s->results, &res, 1), 0);
}

/* ---- what reaches the store ---- */

typedef struct {
    int64_t confirmed_seq[MAX_WRITES]; /* in arrival order */
    int64_t version[MAX_WRITES];
    int64_t sent_ms[MAX_WRITES];
    size_t nconfirmed;
    int64_t sent_seq[MAX_WRITES];      /* SENT updates (a send without an answer) */
    size_t nsent;
} store_view_t;

/* Reads what the sync actor sent the store so far (waiting up to ms for
 * the first message), keeping the confirmations and SENT updates. */
static void read_store(sync_rig_t *s, store_view_t *v, int ms)
{
    ts_msg_t m;
    while (ts_rig_poll(s->store, ms, &m)) {
        ms = 0;
        ts_sync_update_t **u = ts_msg_SYNC_UPDATES(&m);
        cr_assert(u, "the store gets SYNC_UPDATES, not %s", ts_msg_name(m.kind));
        for (size_t i = 0; i < m.count; i++) {
            if (u[i]->kind == TS_SYNC_CONFIRMED) {
                cr_assert_lt(v->nconfirmed, MAX_WRITES);
                v->confirmed_seq[v->nconfirmed] = u[i]->seq;
                v->version[v->nconfirmed] = u[i]->version;
                v->sent_ms[v->nconfirmed++] = u[i]->sent_ms;
            } else if (u[i]->kind == TS_SYNC_SENT) {
                cr_assert_lt(v->nsent, MAX_WRITES);
                v->sent_seq[v->nsent++] = u[i]->seq;
            } else {
                cr_assert(u[i]->kind == TS_SYNC_STATUS || u[i]->kind == TS_SYNC_CURSOR,
                          "no outcome but confirmations here (kind %d)", (int)u[i]->kind);
            }
        }
        ts_msg_free(&m);
    }
}

/* Plays the Clinic API until every write is confirmed: each round takes
 * every request sync has out, checks no document has two writes among them
 * and each is its document's next one, then answers them all, the last
 * first. Returns the most writes seen out at once. */
static size_t serve(sync_rig_t *s, writes_t *ws, store_view_t *v)
{
    int done[MAX_WRITES] = {0}; /* confirmed by the rig, by seq - 1 */
    size_t answered = 0, most = 0;
    for (int round = 0; round < 200 && answered < ws->n; round++) {
        ts_api_request_t *reqs[MAX_WRITES];
        write_t *out[MAX_WRITES][MAX_WRITES];
        size_t nout[MAX_WRITES], nreqs = 0, flying = 0;
        ts_msg_t m;
        ts_rig_recv(s->api, TS_MSG_API_REQUEST, WAIT_MS, &m);
        do {
            cr_assert(ts_msg_API_REQUEST(&m), "pushes are API_REQUEST, not %s",
                      ts_msg_name(m.kind));
            for (size_t i = 0; i < m.count; i++) {
                ts_api_request_t *q = ts_msg_API_REQUEST(&m)[i];
                cr_assert_str_eq(q->reply_to, TS_INPROC_SYNC_API);
                cr_assert_lt(nreqs, MAX_WRITES);
                op_t ops[MAX_WRITES];
                cJSON *json;
                size_t nops = ops_of(q, ops, MAX_WRITES, &json);
                nout[nreqs] = 0;
                for (size_t o = 0; o < nops; o++) {
                    write_t *w = by_key(ws, ops[o].key); /* the key is the mutation id */
                    for (size_t r = 0; r < nreqs + 1; r++)
                        for (size_t k = 0; k < (r < nreqs ? nout[r] : o); k++) {
                            write_t *x = r < nreqs ? out[r][k] : out[nreqs][k];
                            cr_assert(strcmp(x->coll, w->coll) || strcmp(x->id, w->id),
                                      "%s/%s: seq %lld went out while seq %lld was out", w->coll,
                                      w->id, (long long)w->seq, (long long)x->seq);
                        }
                    /* Its document's writes before it are all confirmed. */
                    for (size_t i2 = 0; i2 < ws->n; i2++) {
                        write_t *e = &ws->w[i2];
                        if (!strcmp(e->coll, w->coll) && !strcmp(e->id, w->id) && e->k < w->k)
                            cr_assert(done[i2], "seq %lld went out before seq %lld",
                                      (long long)w->seq, (long long)e->seq);
                    }
                    cr_assert(!done[w->seq - 1], "seq %lld sent again once confirmed",
                              (long long)w->seq);
                    long long if_match = w->op == TS_OP_CREATE ? 0 : w->base + w->k;
                    check_op(&ops[o], w, if_match);
                    w->sends++;
                    out[nreqs][nout[nreqs]++] = w;
                    flying++;
                }
                cJSON_Delete(json);
                reqs[nreqs++] = q;
            }
            ts_msg_release(&m);
        } while (ts_rig_poll(s->api, 100, &m));
        if (flying > most)
            most = flying;
        for (size_t r = nreqs; r-- > 0;) {
            for (size_t k = 0; k < nout[r]; k++)
                done[out[r][k]->seq - 1] = 1;
            answered += nout[r];
            reply(s, reqs[r], out[r], nout[r], TS_API_OK);
        }
        read_store(s, v, 0);
    }
    cr_assert_eq(answered, ws->n, "every write went out and was answered");
    for (int i = 0; i < 100 && v->nconfirmed < ws->n; i++)
        read_store(s, v, 100);
    return most;
}

/* Every write confirmed to the store once, in seq order per document,
 * with the version the server gave it. */
static void check_confirmed(const writes_t *ws, const store_view_t *v)
{
    cr_assert_eq(v->nconfirmed, ws->n, "%zu confirmations for %zu writes", v->nconfirmed, ws->n);
    for (size_t i = 0; i < v->nconfirmed; i++) {
        const write_t *w = &ws->w[v->confirmed_seq[i] - 1];
        cr_assert_eq(v->version[i], w->base + w->k + 1);
        for (size_t j = i + 1; j < v->nconfirmed; j++) {
            const write_t *later = &ws->w[v->confirmed_seq[j] - 1];
            cr_assert(strcmp(w->coll, later->coll) || strcmp(w->id, later->id) ||
                          later->seq > w->seq,
                      "%s/%s: seq %lld confirmed after seq %lld", w->coll, w->id,
                      (long long)later->seq, (long long)w->seq);
        }
    }
}

/* 15 writes to three documents (a create, then updates), in two OUTBOX
 * messages, served until all are confirmed. */
static void one_in_flight_per_document(int batch_size)
{
    sync_rig_t s;
    up(&s, batch_size);
    writes_t ws = {0};
    static const char *const docs[][2] = {{"sessions", "a"}, {"sessions", "b"},
                                          {"consultations", "c"}};
    ts_record_t *first = NULL, *second = NULL;
    for (int i = 0; i < 15; i++) {
        const char *const *d = docs[i % 3];
        char body[32];
        snprintf(body, sizeof body, "{\"v\":%d}", i / 3);
        add_write(&ws, i < 8 ? &first : &second, d[0], d[1], i < 3 ? TS_OP_CREATE : TS_OP_UPDATE,
                  0, body);
    }
    send_outbox(&s, first);
    send_outbox(&s, second);
    store_view_t v = {0};
    size_t most = serve(&s, &ws, &v);
    cr_assert_eq(most, 3, "the three documents' heads go out together (%zu)", most);
    check_confirmed(&ws, &v);
    for (size_t i = 0; i < ws.n; i++)
        cr_assert_eq(ws.w[i].sends, 1, "seq %zu sent once", i + 1);
    ts_rig_quiet(s.api, 200, "nothing more to push");
    down(&s);
}

Test(rig_sync, one_write_in_flight_per_document_in_seq_order_each_alone, .timeout = 60)
{
    one_in_flight_per_document(1);
}

Test(rig_sync, one_write_in_flight_per_document_in_seq_order_in_batches, .timeout = 60)
{
    one_in_flight_per_document(128);
}

/* The next request, which must carry exactly one write. */
static ts_api_request_t *next_single(sync_rig_t *s, writes_t *ws, write_t **w, op_t *op)
{
    ts_msg_t m;
    ts_rig_recv(s->api, TS_MSG_API_REQUEST, WAIT_MS, &m);
    cr_assert_eq(m.count, 1);
    ts_api_request_t *q = ts_msg_API_REQUEST(&m)[0];
    ts_msg_release(&m);
    cJSON *json;
    cr_assert_eq(ops_of(q, op, 1, &json), 1);
    op->body = NULL;
    cJSON_Delete(json);
    *w = by_key(ws, op->key);
    return q;
}

Test(rig_sync, a_write_sent_again_keeps_its_key_if_match_and_body, .timeout = 60)
{
    sync_rig_t s;
    up(&s, 1);
    writes_t ws = {0};
    ts_record_t *list = NULL;
    /* Two updates of a document last synced at version 5, and a create. */
    write_t *a1 = add_write(&ws, &list, "sessions", "a", TS_OP_UPDATE, 5, "{\"v\":0}");
    write_t *a2 = add_write(&ws, &list, "sessions", "a", TS_OP_UPDATE, 5, "{\"v\":1}");
    write_t *b = add_write(&ws, &list, "sessions", "b", TS_OP_CREATE, 0, "{\"v\":0}");
    send_outbox(&s, list);

    /* The heads of a and b go out; a meets a network error. */
    write_t *w1, *w2, *w;
    op_t op1, op2, op;
    ts_api_request_t *q1 = next_single(&s, &ws, &w1, &op1);
    ts_api_request_t *q2 = next_single(&s, &ws, &w2, &op2);
    ts_api_request_t *qa = w1 == a1 ? q1 : q2, *qb = w1 == a1 ? q2 : q1;
    cr_assert((w1 == a1 && w2 == b) || (w1 == b && w2 == a1), "the heads, seq 1 and 3");
    cr_assert_eq(qa->if_match, 5, "If-Match: the version the write was made on");
    char path[64], body[64];
    ts_copy_text(path, sizeof path, qa->path);
    ts_copy_text(body, sizeof body, qa->body);
    reply(&s, qa, &a1, 1, TS_API_NETWORK);
    reply(&s, qb, &b, 1, TS_API_OK);

    /* The store hears that a1 went out, and that b is confirmed. */
    store_view_t v = {0};
    for (int i = 0; i < 50 && (v.nsent < 1 || v.nconfirmed < 1); i++)
        read_store(&s, &v, 100);
    cr_assert_eq(v.nsent, 1);
    cr_assert_eq(v.sent_seq[0], a1->seq, "a1's first send, reported once it is unanswered");
    cr_assert_eq(v.nconfirmed, 1);
    cr_assert_eq(v.confirmed_seq[0], b->seq);
    cr_assert_neq(v.sent_ms[0], 0, "b's send rides on its confirmation");

    /* a1 again, not a2: the same request as first sent. */
    ts_api_request_t *q = next_single(&s, &ws, &w, &op);
    cr_assert(w == a1, "seq %lld went out before seq %lld was answered", (long long)w->seq,
              (long long)a1->seq);
    cr_assert_str_eq(q->idempotency_key, a1->mutation);
    cr_assert_eq(q->if_match, 5);
    cr_assert_str_eq(q->path, path);
    cr_assert_str_eq(q->body, body);
    reply(&s, q, &a1, 1, TS_API_OK); /* version 6 */

    /* Then a2, on the version a1 brought. */
    q = next_single(&s, &ws, &w, &op);
    cr_assert(w == a2);
    cr_assert_eq(q->if_match, 6, "If-Match: the version a1 was confirmed with");
    reply(&s, q, &a2, 1, TS_API_OK);
    for (int i = 0; i < 50 && v.nconfirmed < 3; i++)
        read_store(&s, &v, 100);
    cr_assert_eq(v.nconfirmed, 3);
    cr_assert(v.confirmed_seq[1] == a1->seq && v.confirmed_seq[2] == a2->seq);
    cr_assert(v.version[1] == 6 && v.version[2] == 7);
    cr_assert_eq(v.sent_ms[1], 0, "a1's send was reported already, once");
    cr_assert_eq(v.nsent, 1, "no second SENT for a1");
    ts_rig_quiet(s.api, 200, "nothing more to push");
    down(&s);
}

/* ---- status ---- */

/* The status the sync actor sent the store last within ms (NULL: none;
 * caller deletes), or the first whose feed is want. */
static cJSON *read_status(sync_rig_t *s, const char *want, int ms)
{
    cJSON *last = NULL;
    int64_t until = ts_mono_us() + ms * 1000LL;
    ts_msg_t m;
    while (ts_mono_us() < until &&
           ts_rig_poll(s->store, (int)((until - ts_mono_us()) / 1000) + 1, &m)) {
        ts_sync_update_t **u = ts_msg_SYNC_UPDATES(&m);
        for (size_t i = 0; u && i < m.count; i++)
            if (u[i]->kind == TS_SYNC_STATUS && u[i]->status) {
                cJSON_Delete(last);
                last = cJSON_Duplicate(u[i]->status, 1);
            }
        ts_msg_free(&m);
        const char *feed = ts_json_string(last, "feed");
        if (want && feed && !strcmp(feed, want))
            break;
    }
    return last;
}

/* Answers a feed request (or a stream's end) with error, or an empty page. */
static void feed_reply(sync_rig_t *s, ts_api_request_t *q, ts_api_error_t error, long status)
{
    ts_api_result_t *res = calloc(1, sizeof *res);
    cr_assert(res);
    *res = (ts_api_result_t){.request = q, .id = q->id, .user = q->user, .error = error,
                             .status = status, .retry_after_ms = -1, .attempts = 1};
    if (error == TS_API_OK)
        res->json = cJSON_Parse("{\"changes\":[],\"cursor\":\"0\",\"has_more\":false}");
    cr_assert_eq(ts_send_API_RESULT(s->results, &res, 1), 0);
}

/* status.feed says how changes arrive now: after the event stream is
 * refused it says longpoll at once. It used to keep saying "stream": the
 * status went out again only when online, the api state, the last error,
 * stuck, repairs or batching changed, and a fallback changes none. */
Test(rig_sync, status_feed_follows_a_fallback_to_long_polling, .timeout = 30)
{
    sync_rig_t s;
    ts_api_request_t *stream = up_streaming(&s);
    ts_msg_t m;
    cJSON *st = read_status(&s, "stream", WAIT_MS);
    cr_assert_str_eq(ts_json_string(st, "feed"), "stream");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(st, "online")));
    cJSON_Delete(st);

    ts_api_stream_msg_t *refused = calloc(1, sizeof *refused);
    *refused = (ts_api_stream_msg_t){.id = stream->id, .user = stream->user,
                                     .state = TS_API_STREAM_REFUSED, .error = TS_API_NOT_FOUND,
                                     .status = 404};
    cr_assert_eq(ts_send_API_STREAM(s.results, &refused, 1), 0);
    feed_reply(&s, stream, TS_API_NOT_FOUND, 404);
    ts_rig_recv(s.feed, TS_MSG_API_REQUEST, WAIT_MS, &m); /* the first long poll */
    cr_assert(strstr(ts_msg_API_REQUEST(&m)[0]->path, "timeout="), "%s",
              ts_msg_API_REQUEST(&m)[0]->path);
    ts_msg_free(&m);
    st = read_status(&s, "longpoll", 2000);
    cr_assert_not_null(st, "no status after the fallback");
    cr_assert_str_eq(ts_json_string(st, "feed"), "longpoll");
    cJSON_Delete(st);
    down(&s);
}

/* A `sync` call's answer travels behind the changes its round pulled, in
 * the same SYNC_UPDATES stream to the store (which applies them, then
 * passes the answer to persist), never straight to the front door: a
 * client that reads after the answer sees what was pulled. */
Test(rig_sync, a_sync_answer_follows_the_changes_it_pulled, .timeout = 30)
{
    sync_rig_t s;
    ts_api_request_t *stream = up_streaming(&s);
    ts_msg_t m;

    ts_envelope_t *e = ts_rig_envelope(&s.r, 1, NULL);
    ts_rig_method(&s.r, &e->calls[0], "sync", NULL);
    cr_assert_eq(ts_send_SYNC_CALL(s.inbox, &e, 1), 0);
    /* nothing to push: the round drains the feed; the page holds a change */
    ts_rig_recv(s.feed, TS_MSG_API_REQUEST, WAIT_MS, &m);
    ts_api_request_t *drain = ts_msg_API_REQUEST(&m)[0];
    ts_msg_release(&m);
    cr_assert(!drain->stream && strncmp(drain->path, "/v1/changes?since=", 18) == 0, "%s",
              drain->path);
    ts_api_result_t *res = calloc(1, sizeof *res);
    cr_assert(res);
    *res = (ts_api_result_t){.request = drain, .id = drain->id, .user = drain->user,
                             .error = TS_API_OK, .status = 200, .retry_after_ms = -1,
                             .attempts = 1};
    res->json = cJSON_Parse("{\"changes\":[{\"collection\":\"sessions\",\"doc\":{\"id\":\"p1\","
                            "\"version\":3,\"notes\":\"pulled\"}}],\"cursor\":\"7\","
                            "\"has_more\":false}");
    cr_assert_eq(ts_send_API_RESULT(s.results, &res, 1), 0);

    bool remote = false, answered = false;
    for (int round = 0; round < 20 && !answered; round++) {
        ts_rig_recv(s.store, TS_MSG_SYNC_UPDATES, WAIT_MS, &m);
        for (size_t i = 0; i < m.count; i++) {
            ts_sync_update_t *u = ts_msg_SYNC_UPDATES(&m)[i];
            if (u->kind == TS_SYNC_REMOTE && strcmp(u->doc_id, "p1") == 0)
                remote = true;
            if (u->kind == TS_SYNC_ANSWER) {
                cr_assert(remote, "the answer came before the change it pulled");
                cr_assert_not_null(u->answer);
                cJSON *r = ts_rig_result(&u->answer->calls[0]);
                cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(r, "pulled")), 1);
                cJSON_Delete(r);
                answered = true;
            }
        }
        ts_msg_free(&m);
    }
    cr_assert(answered, "no answer behind the updates");
    ts_rig_quiet(s.front, 200, "a sync answer straight to the front door");
    ts_api_request_free(stream);
    down(&s);
}
