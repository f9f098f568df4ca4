/* events.c — events out on the PUB socket: seq and boot added to each
 * (seq per topic), an event too large sent without its doc, and the store's
 * remote changes held until the persist batch they follow is published. */
#include "front/front_int.h"

#include <zmq.h>

/* The next seq of topic: 1, 2, ... on each topic from each start (a prefix
 * subscription takes whole topics, so a gap in one topic's numbers is a
 * dropped event whatever a subscriber subscribed to). */
static uint64_t next_seq(front_t *self, const char *topic, size_t tlen)
{
    for (size_t i = 0; i < self->ntopics; i++) /* a handful: the collections and four more */
        if (self->topics[i].len == tlen && memcmp(self->topics[i].name, topic, tlen) == 0)
            return ++self->topics[i].seq;
    self->topics = ts_xrealloc(self->topics, (self->ntopics + 1) * sizeof *self->topics);
    topic_t *t = &self->topics[self->ntopics];
    t->name = ts_memdup(topic, tlen);
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
    return omitted;
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
    if (seq && (plen > EVENT_MAX_BYTES || !front_auth_event_bodies(self)) &&
        slim_event(self, payload, params, end)) {
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

/* Whether the events of persist batch `batch` are out (numbers wrap). */
static bool batch_published(const front_t *self, uint32_t batch)
{
    return (int32_t)(self->published_batch - batch) >= 0;
}

void front_early_release(front_t *self, bool all)
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
void front_publish_events(front_t *self, ts_envelope_t *e)
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

/* Publishes (or holds, see early_add) up to max queued events. */
void front_read_events(front_t *self, void *socket, int max)
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
                if (ev->mark > self->told_mark) /* hot.c: a subscriber may hear of it */
                    self->told_mark = ev->mark;
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
