/* answer.c — answers out, in each client's order: a ticket per request,
 * answers that come back early held until the earlier ones are out, the
 * JSON-RPC responses built (the front door's metrics among them). */
#include "front/front_int.h"

#include <errno.h>
#include <zmq.h>

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

/* The cache's hits count those the front door gave from its copies
 * (front_hits of them), so hit_ratio is the engine's. */
static void add_hot_metrics(front_t *self, cJSON *partial)
{
    cJSON *c = cJSON_GetObjectItemCaseSensitive(partial, "cache");
    cJSON *hits = cJSON_GetObjectItemCaseSensitive(c, "hits");
    cJSON *misses = cJSON_GetObjectItemCaseSensitive(c, "misses");
    cJSON *ratio = cJSON_GetObjectItemCaseSensitive(c, "hit_ratio");
    if (!cJSON_IsNumber(hits) || !cJSON_IsNumber(misses) || !cJSON_IsNumber(ratio))
        return;
    double h = hits->valuedouble + (double)self->hot_hits, reads = h + misses->valuedouble;
    cJSON_SetNumberValue(hits, h);
    cJSON_SetNumberValue(ratio, reads > 0 ? h / reads : 0);
    cJSON_AddNumberToObject(c, "front_hits", (double)self->hot_hits);
    cJSON_AddNumberToObject(c, "front_groups", (double)self->hot.count);
    cJSON_AddNumberToObject(c, "front_held", (double)self->hot_holds);
    cJSON *held = cJSON_AddObjectToObject(c, "front_hold_us");
    cJSON_AddNumberToObject(held, "count", (double)self->hot_hold_us.total);
    cJSON_AddNumberToObject(held, "p50", (double)ts_hist_quantile(&self->hot_hold_us, 0.5));
    cJSON_AddNumberToObject(held, "p99", (double)ts_hist_quantile(&self->hot_hold_us, 0.99));
}

static void add_front_metrics(front_t *self, cJSON *partial)
{
    add_hot_metrics(self, partial);
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
        cJSON_AddItemToObject(x, "buckets", ts_hist_buckets_json(h));
    }
}

void front_response_head(ts_buf_t *b, const ts_call_t *call)
{
    ts_buf_puts(b, "{\"jsonrpc\":\"2.0\",\"id\":");
    ts_buf_puts(b, call->id_json);
    ts_buf_puts(b, ",");
}

/* Appends the JSON-RPC response of one call (not for notifications). */
static void append_response(front_t *self, ts_buf_t *b, ts_call_t *call)
{
    front_response_head(b, call);
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
        ts_buf_puts(b, text);
        cJSON_free(text);
    }
    ts_buf_puts(b, "}");
}

/* From this size an answer is handed to ZeroMQ as it is: below it, the
 * copy costs less than the message's own allocation and a free on the
 * I/O thread (write answers are ~200 bytes, query answers several KB). */
#define ZERO_COPY_MIN 4096

static void free_payload(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Sends payload to a client along its routing frames. The ROUTER is
 * mandatory: a client gone is an error here (EHOSTUNREACH), and the cache
 * hears of it, so its live queries end; a client whose queue is full
 * (EAGAIN) loses this message, as before. An `owned` payload (malloc'd) is
 * the sender's to free; from ZERO_COPY_MIN on it is handed to ZeroMQ as it
 * is: answers of several KB are not copied again. */
static void send_to(front_t *self, void *socket, const unsigned char *route, size_t route_len,
                    bool delimiter, char *payload, size_t len, bool owned)
{
    size_t off = 0;
    bool first = true;
    while (off + 4 <= route_len) {
        uint32_t flen;
        memcpy(&flen, route + off, 4);
        off += 4;
        if (zmq_send(socket, route + off, flen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            int err = zmq_errno();
            ts_debug(LOG, "reply dropped: %s", zmq_strerror(err));
            if (first && err == EHOSTUNREACH && self->to_cache && socket == self->router) {
                ts_gone_t *g = ts_xmalloc(sizeof *g + flen);
                g->len = flen;
                memcpy(g->id, route + off, flen);
                if (ts_send_GONE(self->to_cache, &g, 1))
                    free(g);
            }
            if (owned)
                free(payload);
            return;
        }
        first = false;
        off += flen;
    }
    if (delimiter)
        zmq_send(socket, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_t msg;
    int rc, err = 0;
    if (!owned || len < ZERO_COPY_MIN) {
        rc = zmq_send(socket, payload, len, ZMQ_DONTWAIT);
        err = rc < 0 ? zmq_errno() : 0;
        if (owned)
            free(payload);
    } else if ((rc = zmq_msg_init_data(&msg, payload, len, free_payload, NULL)) != 0) {
        err = zmq_errno();
        free(payload);
    } else if ((rc = zmq_msg_send(&msg, socket, ZMQ_DONTWAIT)) < 0) {
        err = zmq_errno();
        zmq_msg_close(&msg); /* frees payload */
    }
    if (rc < 0)
        ts_debug(LOG, "reply dropped: %s", zmq_strerror(err));
}

static void send_reply(front_t *self, const ts_envelope_t *e, char *payload, size_t len)
{
    send_to(self, e->admin ? self->admin : self->router, e->route, e->route_len, e->delimiter,
            payload, len, true);
}

/* Notifications of live queries, each to its client. */
void front_send_notices(front_t *self, ts_notice_t *notices)
{
    for (ts_notice_t *n = notices; n; n = n->next)
        send_to(self, self->router, n->route, n->route_len, n->delimiter, n->payload,
                n->payload_len, false);
    ts_notice_free_list(notices);
}

static void finish_envelope(front_t *self, ts_envelope_t *e);

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

/* Gives a new request its place in its client's line; a request of reads
 * only takes none: it is answered as soon as computed, even before the
 * client's earlier writes wait for their commit (it already reflects them). */
void front_take_ticket(front_t *self, ts_envelope_t *e)
{
    bool reads = true;
    for (size_t i = 0; reads && i < e->ncalls; i++)
        reads = ts_method_is(e->calls[i].method, TS_MF_READ);
    if (reads) {
        e->unordered = true;
        return;
    }
    size_t len;
    const unsigned char *id = route_id(e, &len);
    if (!id)
        return;
    client_t **p = client_slot(self, id, len);
    if (!*p) {
        client_t *c = ts_xcalloc(1, sizeof *c + len);
        memcpy(c->id, id, len);
        c->id_len = len;
        *p = c;
    }
    e->client_seq = (*p)->assigned++;
}

uint64_t front_client_writes(front_t *self, const ts_envelope_t *e)
{
    size_t len;
    const unsigned char *id = route_id(e, &len);
    client_t *c = id ? *client_slot(self, id, len) : NULL;
    return c ? c->last_write_msg : 0;
}

void front_note_write(front_t *self, const ts_envelope_t *e)
{
    size_t len;
    const unsigned char *id = route_id(e, &len);
    client_t *c = id ? *client_slot(self, id, len) : NULL;
    if (c)
        c->last_write_msg = e->front_msg;
}

/* Releases an answer in its client's order: now, or after the earlier
 * ones, which may still be in the pipeline. */
void front_deliver(front_t *self, ts_envelope_t *e)
{
    if (e->mark > self->told_mark) /* hot.c: the copies must have seen it now */
        self->told_mark = e->mark;
    front_publish_events(self, e);
    size_t len;
    const unsigned char *id = route_id(e, &len);
    client_t **p = id && !e->internal && !e->unordered ? client_slot(self, id, len) : NULL;
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
    if (e->reply) { /* made whole by the front door (hot.c) */
        ts_hist_add(&self->latency[e->calls[0].method], now - e->received_us);
        send_reply(self, e, e->reply, e->reply_len);
        e->reply = NULL;
        goto done;
    }
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
    if (answers) {
        size_t len;
        char *text = ts_buf_take(&b, &len);
        if (text)
            send_reply(self, e, text, len);
    }
    ts_buf_free(&b);
done:
    if (!e->internal)
        self->inflight -= e->ncalls;
    ts_envelope_free(e);
}
