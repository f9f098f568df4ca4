/* live.c — the live workload (bench/README.md): live queries while local
 * and remote writes flow.
 *
 * Set-up (untimed): clinic-api and therasyncd --api (bench_env_up), D
 * sessions preloaded and synced, one remote session per therapist created
 * at clinic-api (the first row of its `upcoming`), then S subscriptions to
 * upcoming(random therapist, now = the start of 2026, limit 20) in diff mode
 * over C DEALER connections.
 *
 * Run: a writer thread sends N updates of random preloaded sessions at W/s
 * (paced, one DEALER), half {status}, half {scheduled_at} (a random slot of
 * 2026), so that some results really change; the main thread PATCHes the
 * remote sessions' notes at clinic-api 200 times a second; a subscriber
 * thread reads every connection, applies each query.changed's ops to its
 * copy of the subscription's items, and notes when it came.
 *
 * Attribution: a notification is put down to the most recent write sent for
 * any document its ops name (the writer records, per document, the last
 * write sent); its latency is its arrival minus that write's answer (0,
 * and counted, when it came before the answer). A write changes a result
 * twice: at once (its own change, the version kept) and again when the
 * server's copy comes back on the feed (version and updated_at raised). An
 * edit that raises the version the subscriber holds is that second kind:
 * it goes to confirm_p50/p99 (the sync loop: push, server, feed), the rest
 * to p50/p99 (the engine's reactive loop). Remote changes the same way,
 * from the PATCH's HTTP response. Several subscribers of one therapist
 * share one live query, so one write gives each a notification, each
 * counted.
 *
 * End: writes stop, the subscribers wait for quiet (bounded), and every
 * subscription's items must equal a fresh `query` with "cache": false. */
#include "bench.h"
#include "gen.h"
#include "therasync/json.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#define LIVE_NOW "2026-01-01T00:00:00.000Z"
#define LIVE_LIMIT 20
#define LIVE_SUBS 1000
#define LIVE_RATE 10000
#define LIVE_SUB_SEED 4545u
#define LIVE_WRITE_SEED 4546u
#define LIVE_REMOTE_RATE 200
#define LIVE_REMOTE_DOCS GEN_N_THERAPISTS /* one per therapist */
#define LIVE_MAX_OUTSTANDING 8192
#define LIVE_MAX_PER_CONN 1000 /* the engine's cache.max_subscriptions default */
#define LIVE_MAX_NOTES (1 << 20) /* notifications recorded (32 bytes each) */
#define LIVE_QUIET_US 500000
#define LIVE_QUIET_MAX_US (15 * 1000000LL)
#define LIVE_SETUP_TIMEOUT_US (120 * 1000000LL)

enum { WS_NONE, WS_OK, WS_REFUSED, WS_NOT_FOUND, WS_ERROR };

typedef struct {
    char id[24];   /* the engine's sub id */
    int therapist; /* 1..200 */
    long long version;
    cJSON *items; /* the subscribe answer's items, every op applied since */
} lsub_t;

typedef struct {
    int64_t t_us;    /* arrival */
    int64_t write;   /* the write whose own change it carries, or -1 */
    int64_t confirm; /* the write whose server version it carries, or -1 */
    int64_t remote;  /* the remote change it is put down to, or -1 */
    long long to;    /* the live query's new version */
} note_t;

typedef struct {
    char id[37];
    int32_t doc;
} idx_t;

typedef struct {
    const bench_opts_t *o;
    bench_env_t *e;
    int64_t ndocs;
    idx_t *by_id; /* preloaded ids, sorted, for the ops' ids */
    /* the writer */
    bench_reqs_t reqs;
    int32_t *wdoc;             /* document of write i */
    _Atomic int64_t *last_sent; /* per document: the last write sent, or -1 */
    int64_t *sent_us, *answer_us; /* per write */
    uint8_t *wstate;            /* per write: WS_* */
    atomic_llong answered;
    int64_t t0, t_last_answer; /* writer's first send and last answer */
    atomic_bool writer_done;
    /* the subscribers */
    void **socks;
    int nconn;
    lsub_t *subs;
    lsub_t **subs_by_id; /* sorted by id */
    int64_t nsubs;
    atomic_bool stop;
    _Atomic int64_t last_note_us;
    note_t *notes;
    int64_t nnotes, notes_dropped;
    /* counted by the subscriber thread, read after it ended */
    int64_t notifications, empty, changed, gaps, apply_errors, closed, unknown;
} live_t;

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_idx(const void *a, const void *b)
{
    return strcmp(((const idx_t *)a)->id, ((const idx_t *)b)->id);
}

static int cmp_sub(const void *a, const void *b)
{
    return strcmp((*(const lsub_t *const *)a)->id, (*(const lsub_t *const *)b)->id);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The preloaded document with this id, or -1. */
static int64_t doc_of(const live_t *lv, const char *id)
{
    idx_t key;
    if (strlen(id) >= sizeof key.id)
        return -1;
    memcpy(key.id, id, strlen(id) + 1);
    const idx_t *hit = bsearch(&key, lv->by_id, (size_t)lv->ndocs, sizeof key, cmp_idx);
    return hit ? hit->doc : -1;
}

static lsub_t *sub_of(const live_t *lv, const char *id)
{
    lsub_t key, *kp = &key;
    if (strlen(id) >= sizeof key.id)
        return NULL;
    memcpy(key.id, id, strlen(id) + 1);
    lsub_t **hit = bsearch(&kp, lv->subs_by_id, (size_t)lv->nsubs, sizeof kp, cmp_sub);
    return hit ? *hit : NULL;
}

/* ---- applying a notification's ops (docs/PROTOCOL.md, query.changed) ---- */

static int find_item(const cJSON *items, const char *id)
{
    int i = 0;
    for (const cJSON *x = items->child; x; x = x->next, i++) {
        const char *xid = ts_json_string(x, "id");
        if (xid && strcmp(xid, id) == 0)
            return i;
    }
    return -1;
}

/* Inserts item at pos by taking the tail off and putting it back: the
 * installed cJSON (1.7.15) loses items when cJSON_InsertItemInArray follows
 * cJSON_DetachItemFromArray of the last one. */
static void insert_at(cJSON *items, int pos, cJSON *item)
{
    cJSON *tail = cJSON_CreateArray();
    while (cJSON_GetArraySize(items) > pos)
        cJSON_AddItemToArray(tail, cJSON_DetachItemFromArray(items, pos));
    cJSON_AddItemToArray(items, item);
    while (tail->child)
        cJSON_AddItemToArray(items, cJSON_DetachItemFromArray(tail, 0));
    cJSON_Delete(tail);
}

/* Whether op is an edit that raises the document's version over the one
 * in items: the server's copy of a write the subscriber has already seen
 * (its confirmation, on the feed), or a remote change. A local write keeps
 * the version; only the server raises it. */
static bool raises_version(const cJSON *items, const cJSON *op)
{
    const char *kind = ts_json_string(op, "op"), *id = ts_json_string(op, "id");
    long long now_v, was_v;
    if (!kind || !id || strcmp(kind, "edit") != 0 ||
        !ts_json_int(cJSON_GetObjectItemCaseSensitive(op, "doc"), "version", &now_v))
        return false;
    int at = find_item(items, id);
    return at >= 0 && ts_json_int(cJSON_GetArrayItem(items, at), "version", &was_v) &&
           now_v > was_v;
}

/* Applies one op to items; *changed when the items differ after it.
 * Returns -1 when the op does not fit the items (a lost or wrong op). */
static int apply_op(cJSON *items, cJSON *op, bool *changed)
{
    const char *kind = ts_json_string(op, "op"), *id = ts_json_string(op, "id");
    long long pos = -1;
    if (!kind || !id)
        return -1;
    int at = find_item(items, id), size = cJSON_GetArraySize(items);
    bool has_pos = ts_json_int(op, "pos", &pos);
    if (strcmp(kind, "remove") == 0) {
        if (at < 0)
            return -1;
        cJSON_DeleteItemFromArray(items, at);
        *changed = true;
        return 0;
    }
    if (strcmp(kind, "add") == 0) {
        cJSON *doc = cJSON_DetachItemFromObjectCaseSensitive(op, "doc");
        if (at >= 0 || !doc || !has_pos || pos < 0 || pos > size) {
            cJSON_Delete(doc);
            return -1;
        }
        insert_at(items, (int)pos, doc);
        *changed = true;
        return 0;
    }
    if (strcmp(kind, "move") == 0) {
        if (at < 0 || !has_pos || pos < 0 || pos >= size)
            return -1;
        if (at != pos) {
            insert_at(items, (int)pos, cJSON_DetachItemFromArray(items, at));
            *changed = true;
        }
        return 0;
    }
    if (strcmp(kind, "edit") == 0) {
        cJSON *doc = cJSON_DetachItemFromObjectCaseSensitive(op, "doc");
        if (at < 0 || !doc) {
            cJSON_Delete(doc);
            return -1;
        }
        if (!cJSON_Compare(cJSON_GetArrayItem(items, at), doc, true))
            *changed = true;
        cJSON_ReplaceItemInArray(items, at, doc);
        return 0;
    }
    return -1;
}

/* One message on a subscriber connection, arrived at t. */
static void on_message(live_t *lv, const char *d, size_t len, int64_t t)
{
    if (!memmem(d, len, "\"method\":\"query.", 16))
        return; /* an answer: none is expected while running */
    cJSON *j = cJSON_ParseWithLength(d, len);
    const char *method = ts_json_string(j, "method");
    cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "params");
    const char *sid = ts_json_string(p, "sub");
    lsub_t *s = sid ? sub_of(lv, sid) : NULL;
    if (!method || !s) {
        lv->unknown++;
    } else if (strcmp(method, "query.closed") == 0) {
        lv->closed++;
    } else if (strcmp(method, "query.changed") == 0) {
        lv->notifications++;
        atomic_store(&lv->last_note_us, t);
        long long from = -1, to = -1;
        ts_json_int(p, "from", &from);
        ts_json_int(p, "to", &to);
        if (from != s->version)
            lv->gaps++;
        s->version = to;
        cJSON *ops = cJSON_GetObjectItemCaseSensitive(p, "ops");
        if (!cJSON_GetArraySize(ops))
            lv->empty++;
        bool changed = false;
        int64_t w = -1, wc = -1, r = -1;
        for (cJSON *op = ops ? ops->child : NULL; op; op = op->next) {
            const char *id = ts_json_string(op, "id"), *kind = ts_json_string(op, "op");
            int64_t doc = id ? doc_of(lv, id) : -1;
            int64_t ws = doc >= 0 ? atomic_load(&lv->last_sent[doc]) : -1;
            if (raises_version(s->items, op))
                wc = ws > wc ? ws : wc;
            else
                w = ws > w ? ws : w;
            /* A remote session's edit carries the PATCH's own number. */
            const char *notes = ts_json_string(cJSON_GetObjectItemCaseSensitive(op, "doc"), "notes");
            long long k;
            if (id && kind && notes && strncmp(id, "live-rt-", 8) == 0 &&
                strcmp(kind, "edit") == 0 && strncmp(notes, "live ", 5) == 0 &&
                ts_json_plain_int(notes + 5, notes + strlen(notes), &k))
                r = k > r ? k : r;
            if (apply_op(s->items, op, &changed))
                lv->apply_errors++;
        }
        lv->changed += changed;
        if (lv->nnotes < LIVE_MAX_NOTES)
            lv->notes[lv->nnotes++] =
                (note_t){.t_us = t, .write = w, .confirm = wc, .remote = r, .to = to};
        else
            lv->notes_dropped++;
    } else {
        lv->unknown++;
    }
    cJSON_Delete(j);
}

/* Reads whatever is waiting on every connection (up to wait_ms for the
 * first). */
static void read_conns(live_t *lv, long wait_ms)
{
    zmq_pollitem_t its[64];
    int n = lv->nconn < 64 ? lv->nconn : 64;
    for (int c = 0; c < n; c++)
        its[c] = (zmq_pollitem_t){.socket = lv->socks[c], .events = ZMQ_POLLIN};
    if (zmq_poll(its, n, wait_ms) <= 0)
        return;
    for (int c = 0; c < n; c++) {
        if (!(its[c].revents & ZMQ_POLLIN))
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, lv->socks[c], ZMQ_DONTWAIT) >= 0)
            on_message(lv, zmq_msg_data(&m), zmq_msg_size(&m), ts_mono_us());
        zmq_msg_close(&m);
    }
}

static void *subscriber(void *arg)
{
    live_t *lv = arg;
    while (!atomic_load(&lv->stop))
        read_conns(lv, 50);
    return NULL;
}

/* ---- the writer: N updates at W/s over one DEALER ---- */

static void writer_reply(live_t *lv, const char *d, size_t len, int64_t t)
{
    const char *v;
    size_t vl;
    long long id;
    if (!ts_json_text_field(d, len, "id", 2, &v, &vl) || !ts_json_plain_int(v, v + vl, &id) ||
        id < 0 || (size_t)id >= lv->reqs.n || lv->wstate[id] != WS_NONE)
        return;
    lv->wstate[id] = !memmem(d, len, "\"error\"", 7) ? WS_OK
                     : memmem(d, len, "-32002", 6)   ? WS_REFUSED
                     : memmem(d, len, "-32001", 6)   ? WS_NOT_FOUND
                                                     : WS_ERROR;
    lv->answer_us[id] = t;
    lv->t_last_answer = t;
    atomic_fetch_add(&lv->answered, 1);
}

static void *writer(void *arg)
{
    live_t *lv = arg;
    void *s = bench_dealer(lv->e->zctx, lv->e->endpoint);
    size_t n = lv->reqs.n, sent = 0;
    int64_t rate = lv->o->rate, last_progress = ts_mono_us();
    lv->t0 = ts_mono_us();
    while (!atomic_load(&lv->stop) && ts_mono_us() < lv->o->deadline_us &&
           (size_t)atomic_load(&lv->answered) < n &&
           ts_mono_us() - last_progress < BENCH_REPLY_TIMEOUT_US) {
        size_t due = (size_t)((ts_mono_us() - lv->t0) * rate / 1000000);
        while (sent < due && sent < n &&
               (long long)sent - atomic_load(&lv->answered) < LIVE_MAX_OUTSTANDING) {
            /* Recorded before it leaves: its change can come back as a
             * notification before zmq_send returns. */
            lv->sent_us[sent] = ts_mono_us();
            atomic_store(&lv->last_sent[lv->wdoc[sent]], (int64_t)sent);
            const char *body = lv->reqs.data.data + lv->reqs.off[sent];
            if (zmq_send(s, body, lv->reqs.off[sent + 1] - lv->reqs.off[sent], ZMQ_DONTWAIT) < 0)
                break;
            sent++;
        }
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        zmq_poll(&it, 1, 1);
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0) {
            writer_reply(lv, zmq_msg_data(&m), zmq_msg_size(&m), ts_mono_us());
            last_progress = ts_mono_us();
        }
        zmq_msg_close(&m);
    }
    zmq_close(s);
    atomic_store(&lv->writer_done, true);
    return NULL;
}

/* The N updates: a random preloaded session each (seed 4546), half a new
 * status, half a new scheduled_at in 2026. */
static int make_writes(live_t *lv, char (*ids)[37], int64_t n)
{
    gen_rng_t rng;
    gen_rng_seed(&rng, LIVE_WRITE_SEED);
    for (int64_t i = 0; i < n; i++) {
        int32_t doc = (int32_t)(gen_rng_next(&rng) * (double)lv->ndocs);
        lv->wdoc[i] = doc;
        char patch[80];
        if (gen_rng_next(&rng) < 0.5) {
            snprintf(patch, sizeof patch, "{\"status\":\"%s\"}",
                     gen_statuses[(int)(gen_rng_next(&rng) * 4)]);
        } else {
            char at[32];
            gen_slot_iso((int64_t)(gen_rng_next(&rng) * GEN_N_SLOTS), at);
            snprintf(patch, sizeof patch, "{\"scheduled_at\":\"%s\"}", at);
        }
        if (ts_buf_printf(&lv->reqs.data,
                          "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"update\",\"params\":{"
                          "\"collection\":\"sessions\",\"id\":\"%s\",\"patch\":%s}}",
                          lv->reqs.n, ids[doc], patch) ||
            bench_reqs_end(&lv->reqs))
            return -1;
    }
    return 0;
}

/* ---- set-up ---- */

/* Until the engine has pushed every local write to clinic-api (the preload
 * must not be in flight while the run is timed). */
static int wait_synced(bench_env_t *e)
{
    int64_t until = ts_mono_us() + LIVE_SETUP_TIMEOUT_US, pending = -1;
    while (ts_mono_us() < until && ts_mono_us() < e->o->deadline_us) {
        bool online = false;
        if (bench_env_status(e, &pending, &online) == 0 && pending == 0)
            return 0;
        usleep(200000);
    }
    fprintf(stderr, "bench: live: %lld writes still pending after the preload\n",
            (long long)pending);
    return -1;
}

/* The engine's number of sessions (status.collections.sessions), or -1. */
static int64_t session_count(bench_env_t *e)
{
    cJSON *s = bench_env_rpc(e, "status", NULL, 5000);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(s, "collections"), "sessions");
    int64_t n = cJSON_IsNumber(c) ? (int64_t)c->valuedouble : -1;
    cJSON_Delete(s);
    return n;
}

/* One session per therapist created at clinic-api, live-rt-K for thr-(K+1),
 * at the first slot of 2026 (first in its upcoming) and a group session (no
 * overlap rule), and waited for in the engine. */
static int remote_docs(bench_env_t *e)
{
    int64_t before = session_count(e);
    ts_buf_t body = {0}, out = {0};
    int rc = before < 0 ? -1 : 0;
    for (int k = 0; rc == 0 && k < LIVE_REMOTE_DOCS; k++) {
        char t[12];
        gen_therapist_id(k + 1, t);
        ts_buf_reset(&body);
        ts_buf_printf(&body,
                      "{\"id\":\"live-rt-%03d\",\"therapist_id\":\"%s\",\"patient_id\":"
                      "\"pat-0001\",\"scheduled_at\":\"%s\",\"duration_min\":50,"
                      "\"status\":\"scheduled\",\"modality\":\"group\",\"room\":\"A1\","
                      "\"notes\":\"live seed\"}",
                      k, t, LIVE_NOW);
        long st = bench_http(&e->http, &e->api, "POST", "/v1/sessions", body.data, &out);
        if (st != 201 && st != 200) {
            fprintf(stderr, "bench: live: POST /v1/sessions: %ld %.200s\n", st,
                    out.data ? out.data : "");
            rc = -1;
        }
    }
    int64_t until = ts_mono_us() + LIVE_SETUP_TIMEOUT_US, now_n = -1;
    while (rc == 0 && ts_mono_us() < until &&
           (now_n = session_count(e)) < before + LIVE_REMOTE_DOCS)
        usleep(20000);
    if (rc == 0 && now_n < before + LIVE_REMOTE_DOCS) {
        fprintf(stderr, "bench: live: %lld of %d remote sessions reached the engine\n",
                (long long)(now_n - before), LIVE_REMOTE_DOCS);
        rc = -1;
    }
    ts_buf_free(&body);
    ts_buf_free(&out);
    return rc;
}

static void upcoming_params(ts_buf_t *b, int therapist)
{
    char t[12];
    gen_therapist_id(therapist, t);
    ts_buf_printf(b,
                  "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":{"
                  "\"therapist_id\":\"%s\",\"now\":\"%s\",\"limit\":%d}",
                  t, LIVE_NOW, LIVE_LIMIT);
}

/* Opens the connections and makes every subscription (therapists drawn
 * with seed 4545; subscription k on connection k mod C). */
static int subscribe_all(live_t *lv)
{
    gen_rng_t rng;
    gen_rng_seed(&rng, LIVE_SUB_SEED);
    ts_buf_t req = {0};
    int rc = 0;
    for (int c = 0; rc == 0 && c < lv->nconn; c++) {
        lv->socks[c] = bench_dealer(lv->e->zctx, lv->e->endpoint);
        rc = lv->socks[c] ? 0 : -1;
    }
    for (int64_t k = 0; rc == 0 && k < lv->nsubs; k++) {
        lv->subs[k].therapist = (int)(gen_rng_next(&rng) * GEN_N_THERAPISTS) + 1;
        ts_buf_reset(&req);
        ts_buf_printf(&req, "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"subscribe\",\"params\":",
                      (long long)k);
        upcoming_params(&req, lv->subs[k].therapist);
        ts_buf_puts(&req, ",\"mode\":\"diff\"}}");
        if (zmq_send(lv->socks[k % lv->nconn], req.data, req.len, 0) < 0)
            rc = -1;
    }
    ts_buf_free(&req);
    int64_t got = 0, until = ts_mono_us() + LIVE_SETUP_TIMEOUT_US;
    zmq_pollitem_t its[64];
    for (int c = 0; c < lv->nconn; c++)
        its[c] = (zmq_pollitem_t){.socket = lv->socks[c], .events = ZMQ_POLLIN};
    while (rc == 0 && got < lv->nsubs && ts_mono_us() < until) {
        if (zmq_poll(its, lv->nconn, 100) <= 0)
            continue;
        for (int c = 0; rc == 0 && c < lv->nconn; c++) {
            if (!(its[c].revents & ZMQ_POLLIN))
                continue;
            zmq_msg_t m;
            zmq_msg_init(&m);
            while (rc == 0 && zmq_msg_recv(&m, lv->socks[c], ZMQ_DONTWAIT) >= 0) {
                cJSON *j = cJSON_ParseWithLength(zmq_msg_data(&m), zmq_msg_size(&m));
                long long k = -1;
                cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
                const char *sid = ts_json_string(res, "sub");
                long long version;
                cJSON *items = cJSON_GetObjectItemCaseSensitive(res, "items");
                if (!ts_json_int(j, "id", &k)) {
                    /* a notification before every answer is in: none is expected */
                } else if (k < 0 || k >= lv->nsubs || !sid || strlen(sid) >= sizeof lv->subs[0].id ||
                           !ts_json_int(res, "version", &version) || !cJSON_IsArray(items)) {
                    fprintf(stderr, "bench: live: subscribe %lld: %.300s\n", k,
                            (const char *)zmq_msg_data(&m));
                    rc = -1;
                } else {
                    lsub_t *s = &lv->subs[k];
                    memcpy(s->id, sid, strlen(sid) + 1);
                    s->version = version;
                    s->items = cJSON_DetachItemViaPointer(res, items);
                    got++;
                }
                cJSON_Delete(j);
            }
            zmq_msg_close(&m);
        }
    }
    if (rc == 0 && got < lv->nsubs) {
        fprintf(stderr, "bench: live: %lld of %lld subscriptions answered\n", (long long)got,
                (long long)lv->nsubs);
        rc = -1;
    }
    for (int64_t k = 0; rc == 0 && k < lv->nsubs; k++)
        lv->subs_by_id[k] = &lv->subs[k];
    if (rc == 0)
        qsort(lv->subs_by_id, (size_t)lv->nsubs, sizeof *lv->subs_by_id, cmp_sub);
    return rc;
}

/* Every subscription's items against a fresh uncached query of its
 * therapist: the number that differ. */
static int64_t check_results(live_t *lv, int64_t *failed_queries)
{
    cJSON *fresh[GEN_N_THERAPISTS + 1] = {0};
    ts_buf_t params = {0};
    int64_t bad = 0;
    *failed_queries = 0;
    for (int64_t k = 0; k < lv->nsubs; k++) {
        lsub_t *s = &lv->subs[k];
        if (!fresh[s->therapist]) {
            ts_buf_reset(&params);
            upcoming_params(&params, s->therapist);
            ts_buf_puts(&params, ",\"cache\":false}");
            cJSON *r = bench_env_rpc(lv->e, "query", params.data, 10000);
            cJSON *items = cJSON_GetObjectItemCaseSensitive(r, "items");
            if (cJSON_IsArray(items)) {
                fresh[s->therapist] = cJSON_DetachItemViaPointer(r, items);
            } else {
                (*failed_queries)++;
                bad++;
                cJSON_Delete(r);
                continue;
            }
            cJSON_Delete(r);
        }
        if (!cJSON_Compare(s->items, fresh[s->therapist], true)) {
            if (!bad)
                fprintf(stderr, "bench: live: %s (therapist %d) holds %d items, a fresh query %d\n",
                        s->id, s->therapist, cJSON_GetArraySize(s->items),
                        cJSON_GetArraySize(fresh[s->therapist]));
            bad++;
        }
    }
    for (int t = 0; t <= GEN_N_THERAPISTS; t++)
        cJSON_Delete(fresh[t]);
    ts_buf_free(&params);
    return bad;
}

/* The engine's counters for the run: its cache section and the store's
 * selector runs (over the daemon's life: the preload and subscriptions in). */
static void engine_view(bench_env_t *e, ts_buf_t *extra)
{
    cJSON *m = bench_env_rpc(e, "metrics", NULL, 5000);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "cache");
    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(c, "notify_latency_us");
    long long recomputes, unchanged, notes, lives, p50, p99;
    if (ts_json_int(c, "recomputes", &recomputes) && ts_json_int(c, "unchanged", &unchanged) &&
        ts_json_int(c, "notifications", &notes) && ts_json_int(c, "live_queries", &lives) &&
        ts_json_int(nl, "p50", &p50) && ts_json_int(nl, "p99", &p99))
        ts_buf_printf(extra,
                      ",\"engine_live_queries\":%lld,\"engine_recomputes\":%lld,"
                      "\"engine_unchanged\":%lld,\"engine_notifications\":%lld,"
                      "\"engine_notify_p50_us\":%lld,\"engine_notify_p99_us\":%lld",
                      lives, recomputes, unchanged, notes, p50, p99);
    cJSON_Delete(m);
    cJSON *info = bench_env_rpc(e, "policy.info", NULL, 5000);
    long long q, us;
    if (ts_json_int(info, "selector_queries", &q) && ts_json_int(info, "selector_us", &us))
        ts_buf_printf(extra, ",\"selector_queries\":%lld,\"selector_us\":%lld", q, us);
    cJSON_Delete(info);
}

/* ---- the run ---- */

int bench_wl_live(const bench_opts_t *o, int run, bench_result_t *res)
{
    (void)run;
    if (o->endpoint) {
        fprintf(stderr, "bench: live starts its own therasyncd (it needs one synced with its "
                        "clinic-api): drop --endpoint\n");
        return -1;
    }
    bench_opts_t oo = *o;
    oo.subs = o->subs ? o->subs : LIVE_SUBS;
    oo.rate = o->rate ? o->rate : LIVE_RATE;
    if (oo.clients > 64 || oo.subs > (int64_t)oo.clients * LIVE_MAX_PER_CONN) {
        fprintf(stderr, "bench: live: %lld subscriptions need more than %d connections of %d "
                        "(--clients, at most 64)\n",
                (long long)oo.subs, oo.clients, LIVE_MAX_PER_CONN);
        return -1;
    }
    int64_t n = oo.n, docs = oo.docs;
    live_t lv = {.o = &oo, .ndocs = docs, .nconn = oo.clients, .nsubs = oo.subs};
    char(*ids)[37] = calloc((size_t)docs, sizeof *ids);
    lv.by_id = calloc((size_t)docs, sizeof *lv.by_id);
    lv.wdoc = calloc((size_t)n, sizeof *lv.wdoc);
    lv.last_sent = calloc((size_t)docs, sizeof *lv.last_sent);
    lv.answer_us = calloc((size_t)n, sizeof *lv.answer_us);
    lv.sent_us = calloc((size_t)n, sizeof *lv.sent_us);
    lv.wstate = calloc((size_t)n, sizeof *lv.wstate);
    lv.socks = calloc((size_t)lv.nconn, sizeof *lv.socks);
    lv.subs = calloc((size_t)lv.nsubs, sizeof *lv.subs);
    lv.subs_by_id = calloc((size_t)lv.nsubs, sizeof *lv.subs_by_id);
    lv.notes = calloc(LIVE_MAX_NOTES, sizeof *lv.notes);
    int64_t nremote = n * LIVE_REMOTE_RATE / oo.rate;
    int64_t *resp_us = calloc((size_t)nremote + 1, sizeof *resp_us);
    int rc = ids && lv.by_id && lv.wdoc && lv.last_sent && lv.answer_us && lv.sent_us && lv.wstate && lv.socks &&
                     lv.subs && lv.subs_by_id && lv.notes && resp_us
                 ? 0
                 : -1;
    for (int64_t d = 0; rc == 0 && d < docs; d++)
        atomic_init(&lv.last_sent[d], -1);
    atomic_init(&lv.answered, 0);
    atomic_init(&lv.stop, false);
    atomic_init(&lv.writer_done, false);
    atomic_init(&lv.last_note_us, 0);

    bench_env_t e = {0};
    lv.e = &e;
    int64_t accepted = 0;
    double preload_s = 0, subscribe_s = 0;
    rc = rc ? rc : bench_env_up(&e, &oo);
    int64_t t_pre = ts_mono_us();
    rc = rc ? rc : bench_preload(&oo, e.endpoint, docs, true, ids, &accepted);
    preload_s = (double)(ts_mono_us() - t_pre) / 1e6;
    rc = rc ? rc : wait_synced(&e);
    rc = rc ? rc : remote_docs(&e);
    for (int64_t d = 0; rc == 0 && d < docs; d++) {
        memcpy(lv.by_id[d].id, ids[d], sizeof ids[d]);
        lv.by_id[d].doc = (int32_t)d;
    }
    if (rc == 0)
        qsort(lv.by_id, (size_t)docs, sizeof *lv.by_id, cmp_idx);
    rc = rc ? rc : make_writes(&lv, ids, n);
    int64_t t_sub = ts_mono_us();
    rc = rc ? rc : subscribe_all(&lv);
    subscribe_s = (double)(ts_mono_us() - t_sub) / 1e6;

    /* The run: the writer and the subscribers in threads, remote changes here. */
    pthread_t wt, st;
    bool writing = false, listening = false;
    double cpu0 = cpu_now();
    if (rc == 0)
        listening = pthread_create(&st, NULL, subscriber, &lv) == 0;
    if (rc == 0 && listening)
        writing = pthread_create(&wt, NULL, writer, &lv) == 0;
    if (rc == 0 && !writing)
        rc = -1;
    ts_buf_t out = {0};
    size_t http_bad = 0;
    int64_t made = 0, t_remote0 = ts_mono_us();
    for (int64_t k = 0; rc == 0 && k < nremote && ts_mono_us() < oo.deadline_us; k++) {
        int64_t due = t_remote0 + k * 1000000 / LIVE_REMOTE_RATE, now = ts_mono_us();
        if (due > now)
            usleep((useconds_t)(due - now));
        char path[64], patch[64];
        int doc = (int)(k % LIVE_REMOTE_DOCS);
        snprintf(path, sizeof path, "/v1/sessions/live-rt-%03d", doc);
        snprintf(patch, sizeof patch, "{\"notes\":\"live %lld\"}", (long long)k);
        long code = bench_http(&e.http, &e.api, "PATCH", path, patch, &out);
        resp_us[k] = ts_mono_us();
        if (code != 200)
            http_bad++;
        made = k + 1;
    }
    if (writing)
        pthread_join(wt, NULL);
    /* Quiet: no notification for LIVE_QUIET_US (at most LIVE_QUIET_MAX_US). */
    int64_t t_end = ts_mono_us(), until = t_end + LIVE_QUIET_MAX_US;
    while (listening && ts_mono_us() < until) {
        int64_t last = atomic_load(&lv.last_note_us);
        if (ts_mono_us() - (last > t_end ? last : t_end) >= LIVE_QUIET_US)
            break;
        usleep(20000);
    }
    bool quiet = ts_mono_us() < until;
    atomic_store(&lv.stop, true);
    if (listening)
        pthread_join(st, NULL);
    double bench_cpu = cpu_now() - cpu0;

    /* Every subscription against a fresh query, then anything that came late. */
    int64_t failed_queries = 0, mismatches = -1;
    if (rc == 0)
        mismatches = check_results(&lv, &failed_queries);
    int64_t before_late = lv.notifications;
    if (rc == 0)
        read_conns(&lv, 200);
    int64_t late = lv.notifications - before_late;

    /* Latencies, put down as the header says. */
    int64_t *lat = calloc((size_t)lv.nnotes + 1, sizeof *lat);
    int64_t *rlat = calloc((size_t)lv.nnotes + 1, sizeof *rlat);
    int64_t *slat = calloc((size_t)lv.nnotes + 1, sizeof *slat);
    int64_t *tos = calloc((size_t)lv.nnotes + 1, sizeof *tos);
    int64_t *clat = calloc((size_t)lv.nnotes + 1, sizeof *clat);
    size_t nl = 0, nr = 0, nc = 0, early = 0, unattributed = 0, live_changes = 0;
    for (int64_t i = 0; lat && rlat && slat && tos && clat && i < lv.nnotes; i++) {
        const note_t *x = &lv.notes[i];
        tos[i] = x->to;
        bool put = false;
        if (x->confirm >= 0 && lv.wstate[x->confirm] == WS_OK) {
            int64_t a = lv.answer_us[x->confirm];
            clat[nc++] = x->t_us > a ? x->t_us - a : 0;
            put = true;
        }
        if (x->write >= 0 && lv.wstate[x->write] == WS_OK) {
            int64_t a = lv.answer_us[x->write];
            early += x->t_us < a;
            slat[nl] = x->t_us - lv.sent_us[x->write];
            lat[nl++] = x->t_us > a ? x->t_us - a : 0;
            put = true;
        }
        if (x->remote >= 0 && x->remote < made && resp_us[x->remote]) {
            int64_t a = resp_us[x->remote];
            rlat[nr++] = x->t_us > a ? x->t_us - a : 0;
            put = true;
        }
        unattributed += !put;
    }
    if (tos && lv.nnotes) {
        qsort(tos, (size_t)lv.nnotes, sizeof *tos, cmp_i64);
        for (int64_t i = 0; i < lv.nnotes; i++)
            live_changes += i == 0 || tos[i] != tos[i - 1];
    }
    int64_t answered = atomic_load(&lv.answered), counts[5] = {0};
    int64_t *wlat = calloc((size_t)n, sizeof *wlat);
    size_t nw = 0;
    for (int64_t i = 0; i < n; i++) {
        counts[lv.wstate[i]]++;
        if (wlat && lv.wstate[i] != WS_NONE)
            wlat[nw++] = lv.answer_us[i] - lv.sent_us[i];
    }
    double secs = lv.t_last_answer > lv.t0 ? (double)(lv.t_last_answer - lv.t0) / 1e6 : 0;
    res->seconds = secs;
    res->ops_per_s = secs > 0 ? (double)answered / secs : 0;
    res->p50_us = nl ? bench_percentile(lat, nl, 50) : -1;
    res->p99_us = nl ? bench_percentile(lat, nl, 99) : -1;
    ts_buf_printf(
        &res->extra,
        ",\"docs\":%lld,\"subscriptions\":%lld,\"connections\":%d,\"rate_target\":%lld,"
        "\"writes\":%lld,\"writes_answered\":%lld,\"validation_failed\":%lld,\"not_found\":%lld,"
        "\"errors\":%lld,\"notifications\":%lld,\"notifications_per_s\":%.0f,"
        "\"results_changed\":%lld,\"empty_notifications\":%lld,\"live_changes\":%zu,"
        "\"attributed\":%zu,\"notification_before_answer\":%zu,\"unattributed\":%zu,"
        "\"max_us\":%lld,\"write_p50_us\":%lld,\"write_p99_us\":%lld,\"from_send_p50_us\":%lld,\"from_send_p99_us\":%lld,"
        "\"confirm_attributed\":%zu,\"confirm_p50_us\":%lld,\"confirm_p99_us\":%lld,"
        "\"remote_changes\":%lld,\"remote_attributed\":%zu,"
        "\"remote_p50_us\":%lld,\"remote_p99_us\":%lld,\"http_errors\":%zu,"
        "\"mismatches\":%lld,\"apply_errors\":%lld,\"version_gaps\":%lld,\"closed\":%lld,"
        "\"unknown_messages\":%lld,\"late_notifications\":%lld,\"quiet\":%s,"
        "\"notes_dropped\":%lld,\"preload_accepted\":%lld,\"preload_seconds\":%.3f,"
        "\"subscribe_seconds\":%.3f,\"bench_cpu_s\":%.3f",
        (long long)docs, (long long)lv.nsubs, lv.nconn, (long long)oo.rate, (long long)n,
        (long long)answered, (long long)counts[WS_REFUSED], (long long)counts[WS_NOT_FOUND],
        (long long)counts[WS_ERROR], (long long)lv.notifications,
        secs > 0 ? (double)lv.notifications / secs : 0, (long long)lv.changed,
        (long long)lv.empty, live_changes, nl, early, unattributed,
        (long long)(nl ? bench_percentile(lat, nl, 100) : -1),
        (long long)(nw ? bench_percentile(wlat, nw, 50) : -1),
        (long long)(nw ? bench_percentile(wlat, nw, 99) : -1),
        (long long)(nl ? bench_percentile(slat, nl, 50) : -1),
        (long long)(nl ? bench_percentile(slat, nl, 99) : -1), nc,
        (long long)(nc ? bench_percentile(clat, nc, 50) : -1),
        (long long)(nc ? bench_percentile(clat, nc, 99) : -1), (long long)made, nr,
        (long long)(nr ? bench_percentile(rlat, nr, 50) : -1),
        (long long)(nr ? bench_percentile(rlat, nr, 99) : -1), http_bad, (long long)mismatches,
        (long long)lv.apply_errors, (long long)lv.gaps, (long long)lv.closed,
        (long long)lv.unknown, (long long)late, quiet ? "true" : "false",
        (long long)lv.notes_dropped, (long long)accepted, preload_s, subscribe_s, bench_cpu);
    if (rc == 0)
        engine_view(&e, &res->extra);
    if (rc == 0 && (mismatches || failed_queries || lv.apply_errors || counts[WS_ERROR] ||
                    answered < n || made < nremote || http_bad)) {
        fprintf(stderr,
                "bench: live: %lld mismatches, %lld apply errors, %lld write errors, %lld of "
                "%lld writes answered, %lld of %lld remote changes (%zu HTTP errors)\n",
                (long long)mismatches, (long long)lv.apply_errors, (long long)counts[WS_ERROR],
                (long long)answered, (long long)n, (long long)made, (long long)nremote, http_bad);
        rc = -1;
    }
    for (int c = 0; lv.socks && c < lv.nconn; c++)
        if (lv.socks[c])
            zmq_close(lv.socks[c]);
    bench_env_down(&e);
    for (int64_t k = 0; lv.subs && k < lv.nsubs; k++)
        cJSON_Delete(lv.subs[k].items);
    ts_buf_free(&out);
    bench_reqs_free(&lv.reqs);
    free(lat);
    free(rlat);
    free(slat);
    free(clat);
    free(wlat);
    free(tos);
    free(ids);
    free(lv.by_id);
    free(lv.wdoc);
    free(lv.last_sent);
    free(lv.answer_us);
    free(lv.sent_us);
    free(lv.wstate);
    free(lv.socks);
    free(lv.subs);
    free(lv.subs_by_id);
    free(lv.notes);
    free(resp_us);
    return rc;
}
