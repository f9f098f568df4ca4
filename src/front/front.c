/* front.c — the front-door actor: requests in, answers and events out. */
#include "msgs/msgs.h"
#include "therasync/front.h"
#include "msgs/call.h"
#include "therasync/hist.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define LOG "front"
#define MAX_FRAMES 4          /* routing id, delimiter, payload, and one too many */
/* Requests taken from the ROUTER before they go to the store together:
 * small enough that the store and persist work on one part while this
 * reads the next (at 512 the stages took turns on large clumps; at 64,
 * ingest +8% and update +16% at 8 x 64 in interleaved rounds, bench/RESULTS.md). */
#define MAX_READS_PER_WAKE 64
#define DRAIN_TIMEOUT_MS 10000
/* Messages beyond this are dropped by ZeroMQ itself (connection reset);
 * between max_request_bytes and this they are answered too_large. */
#define HARD_MESSAGE_LIMIT (64LL << 20)
/* Calls in one batch. Each call answered costs up to ~200 bytes of answer
 * whatever it took to write (`1,` gets a 110-byte error), so without a
 * bound a 1 MiB batch made a 50 MB reply; with it, a batch's answers stay
 * within its own size plus ~200 KB. */
#define MAX_BATCH_CALLS 1000
/* A remote change waits at most this for the batch it is ordered after
 * (that batch could only be lost with a failed send). */
#define EARLY_MAX_US 1000000
/* What a subscriber that does not read can cost: ZeroMQ queues up to its
 * send high-water mark of events for it and drops the newest beyond that
 * (the HWM counts messages, not bytes), so the bytes are bounded by
 * bounding an event's size too: an event over EVENT_MAX_BYTES goes out
 * without its doc (the subscriber reads it with `get`). 128 MiB a
 * subscriber; a 100,000-event HWM let one hold ~860 MB of 300 KB events.
 * 8,192 events are 0.8 s of 10,000 writes a second: with 1,024 a healthy
 * subscriber briefly off the CPU lost events (the realtime bench, 2 of
 * 2,000 remote changes). 16 KiB holds a session with long notes. */
#define EVENT_MAX_BYTES (16 << 10)
#define EVENT_QUEUE_BYTES (128 << 20)

/* One client with answers outstanding, by its routing id. */
typedef struct client {
    struct client *next;       /* hash chain */
    uint64_t assigned;         /* sequence numbers given to its requests */
    uint64_t sent;             /* answers released so far */
    ts_envelope_t *held;       /* early answers, by sequence */
    ts_envelope_t *held_last;  /* the last of them: most arrive in order */
    size_t id_len;
    unsigned char id[];
} client_t;

#define CLIENT_BUCKETS 4096

/* A remote change the store sent straight here: it waits until the persist
 * batch that carried its document's previous event has been published. */

/* The events published on one topic so far. */
typedef struct {
    char *name;
    size_t len;
    uint64_t seq;
} topic_t;

typedef struct {
    const ts_config_t *config;
    ts_front_args_t *args;
    client_t *clients[CLIENT_BUCKETS];
    void *router;     /* clients */
    void *pub;        /* events */
    void *replies;    /* PULL: envelopes back from persist */
    void *events_in;  /* PULL: events from other actors */
    void *to_store;   /* PUSH */
    ts_loop_t *loop;
    ts_buf_t scratch; /* a write's body, printed */
    size_t inflight;  /* calls in the pipeline */
    size_t warn_at;   /* next queue depth worth a warning (doubles) */
    bool draining;
    int64_t drain_deadline_us;
    uint32_t published_batch;   /* the last persist batch whose events are out */
    ts_event_t *early, *early_last; /* remote changes waiting for a batch, in order */
    char boot[37];    /* this run's id, in every event */
    topic_t *topics;  /* each topic's seq, for subscribers to see a gap */
    size_t ntopics;
    ts_buf_t slim;    /* an event too large, without its doc */
    /* metrics */
    ts_hist_t latency[TS_M__LAST];
    uint64_t errors, busy, too_large, parse_errors;
} front_t;

/* ---- building answers ---- */

static void append_error(ts_buf_t *b, const ts_call_t *call)
{
    ts_buf_printf(b, "\"error\":{\"code\":%d,\"message\":", call->err_code);
    const char *msg = call->err_message ? call->err_message : "error";
    ts_buf_json_string(b, msg, strlen(msg));
    const char *reason = ts_error_reason(call->err_code);
    if (reason || call->err_data) {
        ts_buf_puts(b, ",\"data\":{");
        bool first = true;
        if (reason) {
            ts_buf_printf(b, "\"reason\":\"%s\"", reason);
            first = false;
        }
        for (const cJSON *f = call->err_data ? call->err_data->child : NULL; f; f = f->next) {
            char *value = cJSON_PrintUnformatted(f);
            if (!value)
                continue;
            ts_buf_puts(b, first ? "" : ",");
            ts_buf_json_string(b, f->string, strlen(f->string));
            ts_buf_printf(b, ":%s", value);
            cJSON_free(value);
            first = false;
        }
        ts_buf_puts(b, "}");
    }
    ts_buf_puts(b, "}");
}

static void add_front_metrics(front_t *self, cJSON *partial)
{
    cJSON *m = cJSON_AddObjectToObject(partial, "front");
    cJSON_AddNumberToObject(m, "inflight", (double)self->inflight);
    cJSON_AddNumberToObject(m, "errors", (double)self->errors);
    cJSON_AddNumberToObject(m, "busy", (double)self->busy);
    cJSON_AddNumberToObject(m, "too_large", (double)self->too_large);
    cJSON_AddNumberToObject(m, "parse_errors", (double)self->parse_errors);
    cJSON *lat = cJSON_AddObjectToObject(m, "latency_us");
    for (int i = 0; i < TS_M__LAST; i++) {
        const ts_hist_t *h = &self->latency[i];
        if (!h->total)
            continue;
        cJSON *x = cJSON_AddObjectToObject(lat, ts_method_name((ts_method_t)i));
        cJSON_AddNumberToObject(x, "count", (double)h->total);
        cJSON_AddNumberToObject(x, "p50", (double)ts_hist_quantile(h, 0.50));
        cJSON_AddNumberToObject(x, "p99", (double)ts_hist_quantile(h, 0.99));
        cJSON_AddNumberToObject(x, "max", (double)h->max);
    }
}

/* Appends the JSON-RPC response of one call (not for notifications). */
static void append_response(front_t *self, ts_buf_t *b, ts_call_t *call)
{
    ts_buf_puts(b, "{\"jsonrpc\":\"2.0\",\"id\":");
    ts_buf_puts(b, call->id_json);
    ts_buf_puts(b, ",");
    if (call->err_code) {
        self->errors++;
        append_error(b, call);
    } else if (call->result) {
        ts_buf_puts(b, "\"result\":");
        ts_buf_append(b, call->result, call->result_len);
    } else {
        if (!call->partial)
            call->partial = cJSON_CreateObject();
        if (ts_method_is(call->method, TS_MF_FRONT))
            add_front_metrics(self, call->partial);
        char *text = cJSON_PrintUnformatted(call->partial);
        ts_buf_puts(b, "\"result\":");
        ts_buf_puts(b, text ? text : "null");
        cJSON_free(text);
    }
    ts_buf_puts(b, "}");
}

static void send_reply(front_t *self, const ts_envelope_t *e, const char *payload, size_t len)
{
    size_t off = 0;
    while (off + 4 <= e->route_len) {
        uint32_t flen;
        memcpy(&flen, e->route + off, 4);
        off += 4;
        zmq_send(self->router, e->route + off, flen, ZMQ_SNDMORE);
        off += flen;
    }
    if (e->delimiter)
        zmq_send(self->router, "", 0, ZMQ_SNDMORE);
    if (zmq_send(self->router, payload, len, 0) < 0)
        ts_debug(LOG, "reply dropped: %s", zmq_strerror(zmq_errno()));
}

/* The next seq of topic: 1, 2, ... on each topic from each start (a prefix
 * subscription takes whole topics, so a gap in one topic's numbers is a
 * dropped event whatever a subscriber subscribed to). 0 when memory ran out. */
static uint64_t next_seq(front_t *self, const char *topic, size_t tlen)
{
    for (size_t i = 0; i < self->ntopics; i++) /* a handful: the collections and four more */
        if (self->topics[i].len == tlen && memcmp(self->topics[i].name, topic, tlen) == 0)
            return ++self->topics[i].seq;
    topic_t *more = realloc(self->topics, (self->ntopics + 1) * sizeof *more);
    if (!more)
        return 0;
    self->topics = more;
    topic_t *t = &self->topics[self->ntopics];
    if (!(t->name = ts_memdup(topic, tlen)))
        return 0;
    t->len = tlen;
    t->seq = 1;
    self->ntopics++;
    return 1;
}

/* The event without params.doc (and with doc_omitted: true) into
 * self->slim, when it has one; params is where its params object starts. */
static bool slim_event(front_t *self, const char *payload, const char *params, const char *end)
{
    ts_buf_t *b = &self->slim;
    ts_json_member_t m;
    bool omitted = false, first = true;
    ts_buf_reset(b);
    ts_buf_append(b, payload, (size_t)(params - payload) + 1);
    for (size_t pos = 0; ts_json_text_member(params, (size_t)(end - 1 - params), &pos, &m);) {
        if (!m.escaped && ts_name_is("doc", m.key, m.key_len)) {
            omitted = true;
            continue;
        }
        ts_buf_puts(b, first ? "" : ",");
        ts_buf_append(b, m.key - 1, (size_t)(m.value + m.value_len - (m.key - 1)));
        first = false;
    }
    ts_buf_puts(b, first ? "\"doc_omitted\":true}}" : ",\"doc_omitted\":true}}");
    return omitted && b->data;
}

/* Publishes an event with seq and boot added to its params (the last
 * member of every event the store makes: {"jsonrpc", "method", "params"});
 * a payload of another shape goes out as it is. */
static void publish(front_t *self, const char *topic, size_t tlen, const char *payload, size_t plen)
{
    const char *end = payload + plen;
    const char *params = plen > 3 && memcmp(end - 2, "}}", 2) == 0
                             ? ts_json_text_find(payload, end, "params", 6)
                             : NULL;
    uint64_t seq = params && *params == '{' ? next_seq(self, topic, tlen) : 0;
    if (seq && plen > EVENT_MAX_BYTES && slim_event(self, payload, params, end)) {
        payload = self->slim.data;
        plen = self->slim.len;
    }
    char stamp[96];
    int n = seq ? snprintf(stamp, sizeof stamp, "%s\"seq\":%llu,\"boot\":\"%s\"}}",
                           payload[plen - 3] == '{' ? "" : ",", (unsigned long long)seq,
                           self->boot)
                : 0;
    zmq_msg_t msg;
    zmq_send(self->pub, topic, tlen, ZMQ_SNDMORE);
    if (n <= 0 || (size_t)n >= sizeof stamp || zmq_msg_init_size(&msg, plen - 2 + (size_t)n)) {
        zmq_send(self->pub, payload, plen, 0);
        return;
    }
    char *out = zmq_msg_data(&msg); /* one copy of the payload, as zmq_send makes */
    memcpy(out, payload, plen - 2);
    memcpy(out + plen - 2, stamp, (size_t)n);
    if (zmq_msg_send(&msg, self->pub, 0) < 0)
        zmq_msg_close(&msg);
}

static void finish_envelope(front_t *self, ts_envelope_t *e);

/* Whether the events of persist batch `batch` are out (numbers wrap). */
static bool batch_published(const front_t *self, uint32_t batch)
{
    return (int32_t)(self->published_batch - batch) >= 0;
}

static void front_early_release(front_t *self, bool all)
{
    while (self->early && (all || batch_published(self, self->early->after))) {
        ts_event_t *ev = self->early;
        publish(self, ev->data, ev->topic_len, ev->data + ev->topic_len, ev->payload_len);
        self->early = ev->next;
        free(ev);
    }
    if (!self->early)
        self->early_last = NULL;
}

/* Holds ev (taken) until the events of its persist batch are out. */
static void early_add(front_t *self, ts_event_t *ev)
{
    ev->held_us = ts_mono_us();
    ev->next = NULL;
    if (self->early_last)
        self->early_last->next = ev;
    else
        self->early = ev;
    self->early_last = ev;
}

/* An envelope's events go out as soon as it is back, in the order persist
 * committed them, not when its answer does: an answer may wait for an
 * earlier one of its client, an event need not. */
static void front_publish_events(front_t *self, ts_envelope_t *e)
{
    for (size_t i = 0; i < e->ncalls; i++) {
        for (ts_event_t *ev = e->calls[i].events; ev; ev = ev->next)
            publish(self, ev->data, ev->topic_len, ev->data + ev->topic_len, ev->payload_len);
        ts_event_free_list(e->calls[i].events);
        e->calls[i].events = NULL;
    }
    if (e->persist_batch && !batch_published(self, e->persist_batch)) {
        self->published_batch = e->persist_batch;
        front_early_release(self, false);
    }
}

/* The routing id of an envelope (its first routing frame). */
static const unsigned char *route_id(const ts_envelope_t *e, size_t *len)
{
    uint32_t l = 0;
    if (e->route_len < 4)
        return *len = 0, NULL;
    memcpy(&l, e->route, 4);
    *len = l;
    return e->route + 4;
}

static client_t **client_slot(front_t *self, const unsigned char *id, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ id[i]) * 0x100000001b3ull;
    client_t **p = &self->clients[h % CLIENT_BUCKETS];
    while (*p && ((*p)->id_len != len || memcmp((*p)->id, id, len) != 0))
        p = &(*p)->next;
    return p;
}

/* Gives a new request its place in its client's line. */
static void front_take_ticket(front_t *self, ts_envelope_t *e)
{
    size_t len;
    const unsigned char *id = route_id(e, &len);
    if (!id)
        return;
    client_t **p = client_slot(self, id, len);
    if (!*p) {
        client_t *c = calloc(1, sizeof *c + len);
        if (!c)
            return; /* no memory: answered when it comes (order not kept) */
        memcpy(c->id, id, len);
        c->id_len = len;
        *p = c;
    }
    e->client_seq = (*p)->assigned++;
}

/* Releases an answer in its client's order: now, or after the earlier
 * ones, which may still be in the pipeline. */
static void front_deliver(front_t *self, ts_envelope_t *e)
{
    front_publish_events(self, e);
    size_t len;
    const unsigned char *id = route_id(e, &len);
    client_t **p = id && !e->internal ? client_slot(self, id, len) : NULL;
    client_t *c = p ? *p : NULL;
    if (!c) {
        finish_envelope(self, e);
        return;
    }
    if (e->client_seq != c->sent) {
        /* Early answers mostly come in order among themselves (one path
         * overtook another), so appending is the common case: walking the
         * list for each one made a deep pipeline quadratic. */
        ts_envelope_t **h = &c->held;
        if (c->held_last && c->held_last->client_seq < e->client_seq)
            h = &c->held_last->held_next;
        while (*h && (*h)->client_seq < e->client_seq)
            h = &(*h)->held_next;
        e->held_next = *h;
        *h = e;
        if (!e->held_next)
            c->held_last = e;
        return;
    }
    finish_envelope(self, e);
    c->sent++;
    while (c->held && c->held->client_seq == c->sent) {
        ts_envelope_t *next = c->held;
        c->held = next->held_next;
        if (!c->held)
            c->held_last = NULL;
        finish_envelope(self, next);
        c->sent++;
    }
    if (c->sent == c->assigned && !c->held) { /* nothing outstanding: forget it */
        *p = c->next;
        free(c);
    }
}

/* Answers an envelope that came back through the pipeline, and frees it. */
static void finish_envelope(front_t *self, ts_envelope_t *e)
{
    ts_buf_t b = {0};
    size_t answers = 0;
    int64_t now = ts_mono_us();
    ts_buf_reserve(&b, e->calls[0].result_len + 128);
    if (e->batch)
        ts_buf_puts(&b, "[");
    for (size_t i = 0; i < e->ncalls; i++) {
        ts_call_t *call = &e->calls[i];
        ts_hist_add(&self->latency[call->method], now - e->received_us);
        if (!call->id_json)
            continue; /* a notification gets no answer */
        if (answers++)
            ts_buf_puts(&b, ",");
        append_response(self, &b, call);
    }
    if (e->batch)
        ts_buf_puts(&b, "]");
    if (answers && b.data)
        send_reply(self, e, b.data, b.len);
    else if (answers)
        ts_error(LOG, "out of memory building an answer");
    ts_buf_free(&b);
    if (!e->internal)
        self->inflight -= e->ncalls;
    ts_envelope_free(e);
}

/* ---- checking requests ---- */

static bool is_method_with_collection(ts_method_t m)
{
    return ts_method_is(m, TS_MF_COLLECTION);
}

/* Sets call->doc_id from params.id, or fails the call. */
static void check_id_param(ts_call_t *call)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(call->params, "id");
    if (!cJSON_IsString(id))
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.id must be a string");
    else if (!ts_valid_id(id->valuestring, strlen(id->valuestring)))
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.id must be 1-64 of [A-Za-z0-9_-]");
    else if (!(call->doc_id = strdup(id->valuestring)))
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
}

/* Sets call->body: obj as the store keeps it, without its ids (a create's
 * is in call->doc_id) and the fields only the server sets. Printed here,
 * not in the store: the store is the pipeline's one serial stage, and this
 * needs nothing it owns. */
static void prepare_body(front_t *self, ts_call_t *call, cJSON *obj)
{
    ts_json_strip_server_fields(obj);
    while (cJSON_GetObjectItemCaseSensitive(obj, "id")) /* a second one is no less an id */
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "id");
    ts_buf_reset(&self->scratch);
    char *text = ts_buf_json(&self->scratch, obj) == 0
                     ? ts_memdup(self->scratch.data, self->scratch.len) /* JSON: no NUL inside */
                     : NULL;
    if (!text) {
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
        return;
    }
    call->body = text;
    call->body_len = self->scratch.len;
}

/* Whether item holds a number that overflowed a double: 1e400 reads as
 * infinity, which JSON cannot write (it would be kept as null). With path,
 * the first one's place is appended to it ("doc.a[2]"). */
static bool has_overflow(const cJSON *item, ts_buf_t *path)
{
    if (cJSON_IsNumber(item))
        return !isfinite(item->valuedouble);
    size_t mark = path ? path->len : 0;
    int i = 0;
    for (const cJSON *c = item->child; c; c = c->next, i++) {
        if (path && c->string)
            ts_buf_printf(path, "%s%s", mark ? "." : "", c->string);
        else if (path)
            ts_buf_printf(path, "[%d]", i);
        if (has_overflow(c, path))
            return true;
        if (path && path->data)
            path->data[path->len = mark] = '\0';
    }
    return false;
}

/* Refuses params holding a number JSON cannot carry back, naming it. */
static bool refuse_overflow(ts_call_t *call, const cJSON *p)
{
    if (!has_overflow(p, NULL)) /* the usual case: one walk, no names */
        return false;
    ts_buf_t path = {0};
    has_overflow(p, &path);
    char field[256];
    snprintf(field, sizeof field, "params%s%s", path.len ? "." : "", path.data ? path.data : "");
    ts_buf_free(&path);
    ts_call_fail(call, TS_E_INVALID_PARAMS,
                 "%s is a number beyond a double's range (JSON could not give it back)", field);
    if ((call->err_data = cJSON_CreateObject()))
        cJSON_AddStringToObject(call->err_data, "field", field);
    return true;
}

/* Checks the params of a known method; sets an error on the call if wrong. */
static void check_params(front_t *self, ts_call_t *call)
{
    cJSON *p = call->params;
    if (p && !cJSON_IsObject(p)) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params must be an object (named parameters)");
        return;
    }
    if (p && refuse_overflow(call, p))
        return;
    if (is_method_with_collection(call->method) ||
        (call->method == TS_M_INVALIDATE && cJSON_GetObjectItemCaseSensitive(p, "collection"))) {
        const char *coll = ts_json_string(p, "collection");
        if (!coll) {
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.collection must be a string");
            return;
        }
        int index = ts_config_collection(self->config, coll);
        if (index < 0) {
            ts_call_fail(call, TS_E_UNKNOWN_COLLECTION, "unknown collection '%.64s'", coll);
            return;
        }
        call->collection = self->config->collections[index];
    }
    const cJSON *doc = cJSON_GetObjectItemCaseSensitive(p, "doc");
    switch (call->method) {
    case TS_M_CREATE:
        if (!cJSON_IsObject(doc)) {
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.doc must be an object");
        } else if (cJSON_GetObjectItemCaseSensitive(doc, "id")) {
            const char *id = ts_json_string(doc, "id");
            if (!id || !ts_valid_id(id, strlen(id)))
                ts_call_fail(call, TS_E_INVALID_PARAMS, "doc.id must be 1-64 of [A-Za-z0-9_-]");
            else if (!(call->doc_id = strdup(id)))
                ts_call_fail(call, TS_E_INTERNAL, "out of memory");
        }
        if (!call->err_code)
            prepare_body(self, call, (cJSON *)doc);
        break;
    case TS_M_UPDATE: {
        check_id_param(call);
        if (call->err_code)
            break;
        cJSON *patch = cJSON_GetObjectItemCaseSensitive(p, "patch");
        const cJSON *patch_id = cJSON_GetObjectItemCaseSensitive(patch, "id");
        if (!cJSON_IsObject(patch))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.patch must be an object");
        else if ((call->has_base_version =
                      cJSON_GetObjectItemCaseSensitive(p, "base_version") != NULL) &&
                 !ts_json_int(p, "base_version", &call->base_version))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.base_version must be an integer");
        else if (patch_id && (!cJSON_IsString(patch_id) ||
                              strcmp(patch_id->valuestring, ts_json_string(p, "id")) != 0))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "a patch cannot change a document's id");
        if (!call->err_code)
            prepare_body(self, call, patch);
        break;
    }
    case TS_M_DELETE:
    case TS_M_GET:
        check_id_param(call);
        break;
    case TS_M_QUERY: {
        const cJSON *sel = cJSON_GetObjectItemCaseSensitive(p, "selector");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(p, "params");
        if (!cJSON_IsString(sel) && !cJSON_IsObject(sel))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.selector must be a name or an object");
        else if (params && !cJSON_IsObject(params))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.params must be an object");
        break;
    }
    case TS_M_AUDIT: {
        long long limit;
        static const char *strings[] = {"collection", "id", "since"};
        for (int i = 0; i < 3; i++)
            if (cJSON_GetObjectItemCaseSensitive(p, strings[i]) && !ts_json_string(p, strings[i]))
                ts_call_fail(call, TS_E_INVALID_PARAMS, "params.%s must be a string", strings[i]);
        if (!call->err_code && cJSON_GetObjectItemCaseSensitive(p, "limit") &&
            !ts_json_int(p, "limit", &limit))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.limit must be an integer");
        break;
    }
    case TS_M_CANCEL:
        if (!ts_json_string(p, "mutation"))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.mutation must be a string");
        break;
    case TS_M_PING:
        ts_call_set_result(call, strdup("\"pong\""), 6);
        break;
    default:
        break;
    }
}

/* The request id as JSON text. Integral numbers are printed directly (every
 * answer has one: no printf for it); cJSON prints numbers beyond int range
 * through sprintf and sscanf. */
static char *int_to_json(long long id)
{
    ts_buf_t text = {0};
    if (ts_buf_int(&text, id) == 0)
        return ts_buf_take(&text, NULL);
    ts_buf_free(&text);
    return NULL;
}

/* A numeric id is echoed as the integer it is; one that is not an integer
 * a double holds exactly (a fraction, beyond 2^53, 1e400) could not be
 * echoed as sent, and is refused (id_usable). */
static bool id_usable(const cJSON *id)
{
    return !id || cJSON_IsString(id) || cJSON_IsNull(id) ||
           (cJSON_IsNumber(id) && id->valuedouble == floor(id->valuedouble) &&
            fabs(id->valuedouble) <= 9007199254740991.0);
}

static char *id_to_json(const cJSON *id)
{
    if (cJSON_IsNumber(id))
        return int_to_json((long long)id->valuedouble); /* in range: id_usable */
    return cJSON_PrintUnformatted(id);
}

/* Fills one call from one JSON-RPC request object (consumed). */
static void parse_call(front_t *self, ts_call_t *call, cJSON *req)
{
    call->method = TS_M_NONE;
    if (!cJSON_IsObject(req)) {
        call->id_json = strdup("null");
        ts_call_fail(call, TS_E_INVALID_REQUEST, "a request must be a JSON object");
        cJSON_Delete(req);
        return;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
    bool id_ok = id_usable(id);
    if (id)
        call->id_json = id_ok ? id_to_json(id) : strdup("null");
    const char *version = ts_json_string(req, "jsonrpc");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(req, "method");
    if (!id_ok || !version || strcmp(version, "2.0") != 0 || !cJSON_IsString(method)) {
        if (!call->id_json)
            call->id_json = strdup("null");
        ts_call_fail(call, TS_E_INVALID_REQUEST,
                     !id_ok ? "id must be a string, an integer of at most 2^53 - 1 "
                              "(9007199254740991) either way, or null"
                     : !cJSON_IsString(method) ? "method must be a string"
                                              : "jsonrpc must be \"2.0\"");
        cJSON_Delete(req);
        return;
    }
    call->method = ts_method_lookup(method->valuestring);
    if (call->method == TS_M_NONE) {
        ts_call_fail(call, TS_E_NO_METHOD, "no method '%.64s'", method->valuestring);
        cJSON_Delete(req);
        return;
    }
    call->params = cJSON_DetachItemFromObjectCaseSensitive(req, "params");
    cJSON_Delete(req);
    check_params(self, call);
}

/* An envelope with one pre-answered call (whole-message errors). */
static ts_envelope_t *error_envelope(int code, const char *message)
{
    ts_envelope_t *e = ts_envelope_new(1);
    if (!e)
        return NULL;
    e->calls[0].method = TS_M_NONE;
    e->calls[0].id_json = strdup("null");
    ts_call_fail(&e->calls[0], code, "%s", message);
    return e;
}

/* One invalid_request for a batch over MAX_BATCH_CALLS, with the limit in
 * error.data. */
static ts_envelope_t *batch_too_large(long calls)
{
    char msg[128];
    snprintf(msg, sizeof msg, "a batch of %ld calls is over the limit of %d calls", calls,
             MAX_BATCH_CALLS);
    ts_envelope_t *e = error_envelope(TS_E_INVALID_REQUEST, msg);
    if (e && (e->calls[0].err_data = cJSON_CreateObject())) {
        cJSON_AddNumberToObject(e->calls[0].err_data, "limit", MAX_BATCH_CALLS);
        cJSON_AddNumberToObject(e->calls[0].err_data, "calls", (double)calls);
    }
    return e;
}

/* Deeper requests take the general way (cJSON allows 1,000 levels). */
#define FAST_MAX_DEPTH 64

/* ---- the fast way for single writes ----
 * The most common requests, a single create or update, are read straight
 * from their text, without cJSON: the envelope member by member, strictly,
 * and the document or patch checked as strict JSON and compacted into the
 * call's body (less its id and the server's fields) in the same pass.
 * Building, reading and freeing the envelope's tree cost as much as all the
 * rest of the front door's work on a create. It knows only the members a
 * write needs, written plainly (strings without escapes, integers as
 * integers); anything else, a member twice, a batch, an error of any kind,
 * takes the general way (parse_call), which also words the errors. */

enum {
    FAST_JSONRPC = 1 << 0,
    FAST_ID = 1 << 1,
    FAST_METHOD = 1 << 2,
    FAST_PARAMS = 1 << 3,
    FAST_COLLECTION = 1 << 4,
    FAST_DOC_ID = 1 << 5,
    FAST_BASE = 1 << 6,
    FAST_DOC = 1 << 7,
    FAST_PATCH = 1 << 8,
};

typedef struct {
    front_t *self;
    ts_call_t *call;
    unsigned seen;                  /* FAST_* members read */
    ts_json_member_t dropped_id;    /* the document's or patch's (first) id */
} fast_t;

/* The FAST_* bit of a member of names[0..n) (bits from first up), or 0. */
static unsigned fast_bit(const char *key, size_t len, const char *const *names, size_t n,
                         unsigned first)
{
    for (size_t i = 0; i < n; i++)
        if (ts_name_is(names[i], key, len))
            return first << i;
    return 0;
}

/* The id a plain string at v holds (malloc'd), when it is one: 1-64 of
 * [A-Za-z0-9_-]; NULL otherwise. *after: past its closing quote. */
static char *plain_id(const char *v, const char *end, const char **after)
{
    *after = ts_json_plain_string(v, end);
    return *after && ts_valid_id(v + 1, (size_t)(*after - v) - 2)
               ? ts_memdup(v + 1, (size_t)(*after - v) - 2)
               : NULL;
}

static const char *fast_param(void *arg, const char *key, size_t len, const char *v,
                              const char *end)
{
    static const char *const names[] = {"collection", "id", "base_version", "doc", "patch"};
    static const char *const drop[] = {"id", TS_JSON_SERVER_FIELDS};
    fast_t *f = arg;
    ts_call_t *call = f->call;
    unsigned bit = fast_bit(key, len, names, sizeof names / sizeof *names, FAST_COLLECTION);
    if (!bit || (f->seen & bit))
        return NULL;
    f->seen |= bit;
    const char *after;
    switch (bit) {
    case FAST_COLLECTION: {
        int index = (after = ts_json_plain_string(v, end))
                        ? ts_config_collection_len(f->self->config, v + 1, (size_t)(after - v) - 2)
                        : -1;
        if (index < 0)
            return NULL;
        call->collection = f->self->config->collections[index];
        return after;
    }
    case FAST_DOC_ID:
        call->doc_id = plain_id(v, end, &after);
        return call->doc_id ? after : NULL;
    case FAST_BASE:
        call->has_base_version = true;
        return ts_json_plain_int(v, end, &call->base_version);
    default: { /* the document or the patch */
        if (f->seen & (bit == FAST_DOC ? FAST_PATCH : FAST_DOC))
            return NULL;
        ts_json_member_t dropped[sizeof drop / sizeof *drop];
        ts_buf_reset(&f->self->scratch);
        after = ts_json_compact_object(&f->self->scratch, v, end, drop, sizeof drop / sizeof *drop,
                                       dropped, FAST_MAX_DEPTH);
        f->dropped_id = dropped[0];
        return after;
    }
    }
}

static const char *fast_member(void *arg, const char *key, size_t len, const char *v,
                               const char *end)
{
    static const char *const names[] = {"jsonrpc", "id", "method", "params"};
    fast_t *f = arg;
    ts_call_t *call = f->call;
    unsigned bit = fast_bit(key, len, names, sizeof names / sizeof *names, FAST_JSONRPC);
    if (!bit || (f->seen & bit))
        return NULL;
    f->seen |= bit;
    const char *after;
    long long number;
    switch (bit) {
    case FAST_JSONRPC:
        return end - v >= 5 && memcmp(v, "\"2.0\"", 5) == 0 ? v + 5 : NULL;
    case FAST_ID:
        if ((after = ts_json_plain_string(v, end)))
            call->id_json = ts_memdup(v, (size_t)(after - v)); /* printed as written */
        else if ((after = ts_json_plain_int(v, end, &number)))
            call->id_json = int_to_json(number);
        return call->id_json ? after : NULL;
    case FAST_METHOD:
        if (!(after = ts_json_plain_string(v, end)))
            return NULL;
        call->method = after - v == 8 && memcmp(v, "\"create\"", 8) == 0   ? TS_M_CREATE
                       : after - v == 8 && memcmp(v, "\"update\"", 8) == 0 ? TS_M_UPDATE
                                                                           : TS_M_NONE;
        return call->method == TS_M_NONE ? NULL : after;
    default:
        return ts_json_strict_members(v, end, fast_param, f);
    }
}

/* A single create or update read the fast way, or NULL: take the general
 * way. */
static ts_envelope_t *fast_write(front_t *self, const char *data, size_t len)
{
    const unsigned create = FAST_JSONRPC | FAST_METHOD | FAST_PARAMS | FAST_COLLECTION | FAST_DOC;
    const unsigned update = FAST_JSONRPC | FAST_METHOD | FAST_PARAMS | FAST_COLLECTION |
                            FAST_DOC_ID | FAST_PATCH;
    ts_envelope_t *e = ts_envelope_new(1);
    if (!e)
        return NULL;
    ts_call_t *call = &e->calls[0];
    call->method = TS_M_NONE;
    fast_t f = {self, call, 0, {0}};
    if (ts_json_strict_members(data, data + len, fast_member, &f) != data + len)
        goto general;
    unsigned members = f.seen & ~(FAST_ID | FAST_BASE); /* the optional ones */
    const char *id = f.dropped_id.value, *after;
    if (call->method == TS_M_CREATE) {
        /* the doc's id, when given, must be a plain string that is an id */
        if (members != create || (f.seen & FAST_BASE) ||
            (id && !(call->doc_id = plain_id(id, id + f.dropped_id.value_len, &after))))
            goto general;
    } else if (members != update || id) { /* a patch with an id is checked the general way */
        goto general;
    }
    if (!(call->body = ts_memdup(self->scratch.data, self->scratch.len))) /* no NUL inside */
        goto general;
    call->body_len = self->scratch.len;
    return e;
general:
    ts_envelope_free(e);
    return NULL;
}

static ts_envelope_t *parse_payload(front_t *self, const char *data, size_t len)
{
    if (len > self->config->max_request_bytes) {
        self->too_large++;
        char msg[128];
        snprintf(msg, sizeof msg, "request of %zu bytes is over the limit of %zu", len,
                 self->config->max_request_bytes);
        return error_envelope(TS_E_TOO_LARGE, msg);
    }
    if (!ts_utf8_valid(data, len)) {
        self->parse_errors++;
        return error_envelope(TS_E_PARSE, "request is not valid UTF-8");
    }
    ts_envelope_t *write = fast_write(self, data, len);
    if (write)
        return write;
    /* Counted on the text, before cJSON builds a tree of every element. */
    const char *first = data;
    while (first < data + len && (*first == ' ' || *first == '\t' || *first == '\n' || *first == '\r'))
        first++;
    long count = first < data + len && *first == '[' ? ts_json_text_count(data, len) : 0;
    if (count > MAX_BATCH_CALLS)
        return batch_too_large(count);
    /* What cJSON would take and get wrong (the fast way declines it). */
    const char *fault = ts_json_string_fault(data, len);
    if (fault) {
        self->parse_errors++;
        char msg[160];
        snprintf(msg, sizeof msg, "request refused: %s", fault);
        return error_envelope(TS_E_PARSE, msg);
    }
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!root) {
        self->parse_errors++;
        return error_envelope(TS_E_PARSE, len ? "request is not valid JSON (or nested too deeply)"
                                              : "empty request");
    }
    if (cJSON_IsArray(root)) {
        size_t n = (size_t)cJSON_GetArraySize(root);
        if (n == 0) {
            cJSON_Delete(root);
            return error_envelope(TS_E_INVALID_REQUEST, "empty batch");
        }
        if (n > MAX_BATCH_CALLS) { /* the text count and cJSON differ on odd text */
            cJSON_Delete(root);
            return batch_too_large((long)n);
        }
        ts_envelope_t *e = ts_envelope_new(n);
        if (!e) {
            cJSON_Delete(root);
            return NULL;
        }
        e->batch = true;
        for (size_t i = 0; i < n; i++)
            parse_call(self, &e->calls[i], cJSON_DetachItemFromArray(root, 0));
        cJSON_Delete(root);
        return e;
    }
    ts_envelope_t *e = ts_envelope_new(1);
    if (!e) {
        cJSON_Delete(root);
        return NULL;
    }
    parse_call(self, &e->calls[0], root);
    return e;
}

/* Receives one multipart message from the ROUTER and turns it into an
 * envelope. Returns NULL when nothing was queued (or memory ran out). */
static ts_envelope_t *front_read_request(front_t *self, bool *more)
{
    zmq_msg_t frames[MAX_FRAMES];
    int n = 0;
    bool extra = false;
    *more = false;
    for (;;) {
        zmq_msg_t scratch;
        zmq_msg_t *f = n < MAX_FRAMES ? &frames[n] : &scratch;
        zmq_msg_init(f);
        if (zmq_msg_recv(f, self->router, n || extra ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(f);
            if (n == 0)
                return NULL;
            break;
        }
        bool more_frames = zmq_msg_more(f);
        if (f == &scratch) { /* keep only the first frames; note the rest */
            extra = true;
            zmq_msg_close(f);
        } else {
            n++;
        }
        if (!more_frames)
            break;
    }
    *more = true;
    /* frames: [routing id] [empty delimiter]? [payload] */
    int first = 1;
    bool delimiter = n >= 3 && zmq_msg_size(&frames[1]) == 0;
    if (delimiter)
        first = 2;
    int payload_frames = n - first;
    ts_envelope_t *e;
    if (extra || payload_frames > 1)
        e = error_envelope(TS_E_INVALID_REQUEST, "a request is one frame (after an optional "
                                                 "empty delimiter); extra frames found");
    else if (payload_frames < 1)
        e = error_envelope(TS_E_PARSE, "empty request");
    else
        e = parse_payload(self, zmq_msg_data(&frames[first]), zmq_msg_size(&frames[first]));
    if (e) {
        size_t id_len = zmq_msg_size(&frames[0]);
        e->route = malloc(4 + id_len);
        if (e->route) {
            uint32_t l = (uint32_t)id_len;
            memcpy(e->route, &l, 4);
            memcpy(e->route + 4, zmq_msg_data(&frames[0]), id_len);
            e->route_len = 4 + id_len;
        }
        /* The client's identity for the audit trail: its routing id (as
         * much of it as fits), in hex. */
        size_t fits = (sizeof e->client - 5) / 2;
        memcpy(e->client, "zmq:", 4);
        ts_hex(zmq_msg_data(&frames[0]), id_len < fits ? id_len : fits, e->client + 4);
        e->delimiter = delimiter;
        e->received_us = ts_mono_us();
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    return e;
}

/* A request that does not fit under max_inflight is not taken: each of
 * its calls is answered busy, also one answered while it was read (an
 * invalid call costs the pipeline as much as a valid one). */
static void answer_busy(front_t *self, ts_envelope_t *e)
{
    self->busy++;
    for (size_t i = 0; i < e->ncalls; i++) {
        cJSON_Delete(e->calls[i].err_data);
        e->calls[i].err_data = NULL;
        ts_call_fail(&e->calls[i], TS_E_BUSY,
                     "the engine has %zu calls in flight; retry later", self->inflight);
    }
    for (size_t i = 0; i < e->ncalls; i++) {
        ts_event_free_list(e->calls[i].events);
        e->calls[i].events = NULL;
    }
    self->inflight += e->ncalls; /* finish_envelope subtracts them again */
    front_deliver(self, e);
}

static int on_router(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop, (void)socket;
    front_t *self = arg;
    ts_envelope_t *batch[MAX_READS_PER_WAKE];
    size_t n = 0;
    bool more = true;
    while (n < MAX_READS_PER_WAKE && more) {
        ts_envelope_t *e = front_read_request(self, &more);
        if (!e)
            continue;
        front_take_ticket(self, e);
        if (self->inflight + e->ncalls > self->config->max_inflight) {
            answer_busy(self, e);
            continue;
        }
        self->inflight += e->ncalls;
        batch[n++] = e;
    }
    if (n && ts_send_REQUESTS(self->to_store, batch, n)) {
        ts_error(LOG, "cannot pass requests to the store: %s", zmq_strerror(zmq_errno()));
        for (size_t i = 0; i < n; i++) { /* answered, in their turn, with the reason */
            for (size_t k = 0; k < batch[i]->ncalls; k++)
                if (!batch[i]->calls[k].err_code && !batch[i]->calls[k].result)
                    ts_call_fail(&batch[i]->calls[k], TS_E_INTERNAL, "the engine is stopping");
            front_deliver(self, batch[i]);
        }
    }
    if (self->inflight >= self->warn_at) {
        ts_warn(LOG, "%zu calls in flight (limit %zu)", self->inflight, self->config->max_inflight);
        self->warn_at *= 2;
    } else if (self->inflight < self->warn_at / 4 && self->warn_at > 4096) {
        self->warn_at /= 2;
    }
    return 0;
}

static void front_read_events(front_t *self, void *socket, int max);

static int on_replies(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    front_t *self = arg;
    ts_msg_t m;
    for (int round = 0; round < 64; round++) {
        if (ts_msg_recv(socket, ZMQ_DONTWAIT, &m))
            break;
        ts_envelope_t **envs = ts_msg_ANSWERS(&m);
        if (!envs) {
            ts_msg_unexpected(LOG, &m);
            continue;
        }
        /* A remote change sent before this batch existed must be seen
         * first, or it would be published after the newer events below:
         * all of what is queued, then. */
        front_read_events(self, self->events_in, INT_MAX);
        for (size_t i = 0; i < m.count; i++)
            front_deliver(self, envs[i]);
        ts_msg_release(&m);
    }
    return self->draining && self->inflight == 0 ? -1 : 0;
}

/* Publishes (or holds, see early_add) up to max queued events. */
static void front_read_events(front_t *self, void *socket, int max)
{
    ts_msg_t m;
    for (int round = 0; round < max && ts_msg_recv(socket, ZMQ_DONTWAIT, &m) == 0; round++) {
        ts_event_t **lists = ts_msg_EVENTS(&m);
        if (!lists) {
            ts_msg_unexpected(LOG, &m);
            continue;
        }
        for (size_t i = 0; i < m.count; i++) {
            for (ts_event_t *ev = lists[i], *next; ev; ev = next) {
                next = ev->next;
                if (ev->after && (self->early || !batch_published(self, ev->after))) {
                    early_add(self, ev);
                } else {
                    publish(self, ev->data, ev->topic_len, ev->data + ev->topic_len,
                            ev->payload_len);
                    free(ev);
                }
            }
        }
        ts_msg_release(&m);
    }
}

static int on_events(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    front_read_events(arg, socket, 256);
    return 0;
}

static int on_pipe(ts_loop_t *loop, void *pipe, void *arg)
{
    front_t *self = arg;
    if (ts_actor_pipe_term(loop, pipe, NULL) == 0)
        return 0;
    /* $TERM: stop accepting, finish what is in flight, then end. */
    self->draining = true;
    self->drain_deadline_us = ts_mono_us() + DRAIN_TIMEOUT_MS * 1000LL;
    ts_loop_pause(loop, self->router, 1);
    if (self->inflight)
        ts_info(LOG, "draining %zu calls in flight", self->inflight);
    return self->inflight == 0 ? -1 : 0;
}

static int on_drain_timer(ts_loop_t *loop, int id, void *arg)
{
    (void)loop, (void)id;
    front_t *self = arg;
    if (self->early && ts_mono_us() - self->early->held_us > EARLY_MAX_US) {
        ts_warn(LOG, "published remote changes whose turn did not come");
        front_early_release(self, true);
    }
    if (self->draining && ts_mono_us() > self->drain_deadline_us) {
        ts_error(LOG, "gave up draining: %zu calls still in flight", self->inflight);
        return -1;
    }
    return 0;
}

static void *open_socket(void *zctx, int type, const char *endpoint, bool bind)
{
    /* Between actors: the shared settings, bound or connected already. */
    bool inproc = strncmp(endpoint, "inproc:", 7) == 0;
    void *s = inproc ? ts_inproc_socket(zctx, type, endpoint, bind) : zmq_socket(zctx, type);
    int zero = 0;
    if (!s) {
        ts_error(LOG, "cannot %s %s: %s", bind ? "bind" : "connect", endpoint,
                 zmq_strerror(zmq_errno()));
        return NULL;
    }
    if (inproc)
        return s;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (type == ZMQ_PUB) {
        /* A subscriber that falls behind gets this many events queued
         * before ZeroMQ drops its newest ones: EVENT_QUEUE_BYTES of the
         * largest events (1,024; also some 0.5 s of a busy clinic's
         * writes, beside what the kernel's socket buffers hold). */
        int hwm = EVENT_QUEUE_BYTES / EVENT_MAX_BYTES;
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    }
    if (type == ZMQ_ROUTER) {
        int64_t max = HARD_MESSAGE_LIMIT;
        int hwm = 100000;
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max);
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    }
    if ((bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint)) == 0)
        return s;
    ts_error(LOG, "cannot %s %s: %s", bind ? "bind" : "connect", endpoint,
             zmq_strerror(zmq_errno()));
    zmq_close(s);
    return NULL;
}

static void front_actor(ts_actor_t *actor, void *arg)
{
    ts_front_args_t *args = arg;
    front_t self = {.config = args->config, .args = args, .warn_at = 4096};
    ts_uuidv7(self.boot);
    void *zctx = ts_actor_zctx(actor);
    self.loop = ts_loop_new();
    if (!self.loop || !(self.replies = open_socket(zctx, ZMQ_PULL, TS_INPROC_FRONT, true)) ||
        !(self.events_in = open_socket(zctx, ZMQ_PULL, TS_INPROC_EVENTS, true)) ||
        !(self.to_store = open_socket(zctx, ZMQ_PUSH, TS_INPROC_STORE, false)) ||
        !(self.router = open_socket(zctx, ZMQ_ROUTER, self.config->endpoint, true)) ||
        !(self.pub = open_socket(zctx, ZMQ_PUB, self.config->events, true)))
        goto done;
    size_t len = sizeof args->endpoint;
    zmq_getsockopt(self.router, ZMQ_LAST_ENDPOINT, args->endpoint, &len);
    len = sizeof args->events;
    zmq_getsockopt(self.pub, ZMQ_LAST_ENDPOINT, args->events, &len);
    ts_loop_reader(self.loop, ts_actor_pipe(actor), on_pipe, &self);
    ts_loop_reader(self.loop, self.events_in, on_events, &self);
    ts_loop_reader(self.loop, self.replies, on_replies, &self);
    ts_loop_reader(self.loop, self.router, on_router, &self);
    ts_loop_timer(self.loop, 200, on_drain_timer, &self);
    ts_actor_ready(actor, 0);
    ts_loop_run(self.loop);
    ts_actor_quiesce(actor);
    ts_msg_drain(self.replies); /* answers too late to give: their writes are durable */
    ts_msg_drain(self.events_in);
    front_early_release(&self, true);  /* remote changes: durable at the server */
done:
    ts_loop_destroy(&self.loop);
    for (size_t b = 0; b < CLIENT_BUCKETS; b++) {
        while (self.clients[b]) {
            client_t *c = self.clients[b];
            self.clients[b] = c->next;
            while (c->held) {
                ts_envelope_t *next = c->held->held_next;
                ts_envelope_free(c->held);
                c->held = next;
            }
            free(c);
        }
    }
    ts_buf_free(&self.scratch);
    ts_buf_free(&self.slim);
    for (size_t i = 0; i < self.ntopics; i++)
        free(self.topics[i].name);
    free(self.topics);
    void *sockets[] = {self.router, self.pub, self.replies, self.events_in, self.to_store};
    for (size_t i = 0; i < sizeof sockets / sizeof *sockets; i++)
        if (sockets[i])
            zmq_close(sockets[i]);
}

ts_actor_t *ts_front_start(void *zctx, ts_front_args_t *args)
{
    return ts_actor_new(zctx, "front", front_actor, args);
}
