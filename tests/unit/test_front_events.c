/* test_front_events.c — the order in which the front door publishes events.
 *
 * The front door runs alone here; the test plays the store and persist:
 * it pushes committed envelopes into TS_INPROC_FRONT (as persist does) and
 * remote changes into TS_INPROC_EVENTS (as the store does, with the persist
 * batch they must follow), and reads what comes out of the PUB socket. */
#include "msgs/msgs.h"
#include "therasync/actor.h"
#include "msgs/call.h"
#include "therasync/config.h"
#include "therasync/front.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

typedef struct {
    void *zctx;
    ts_config_t config;
    ts_front_args_t args;
    ts_actor_t *front;
    void *replies, *events, *sub;
} rig_t;

static void rig_up(rig_t *r)
{
    memset(r, 0, sizeof *r);
    r->zctx = zmq_ctx_new();
    ts_config_init(&r->config);
    r->config.endpoint = "tcp://127.0.0.1:0";
    r->config.events = "inproc://test-front-events";
    r->args.config = &r->config;
    r->front = ts_front_start(r->zctx, &r->args);
    cr_assert(r->front, "the front door starts");
    r->replies = ts_inproc_socket(r->zctx, ZMQ_PUSH, TS_INPROC_FRONT, false);
    r->events = ts_inproc_socket(r->zctx, ZMQ_PUSH, TS_INPROC_EVENTS, false);
    r->sub = zmq_socket(r->zctx, ZMQ_SUB);
    cr_assert(r->replies && r->events && r->sub);
    zmq_setsockopt(r->sub, ZMQ_SUBSCRIBE, "", 0);
    cr_assert_eq(zmq_connect(r->sub, r->config.events), 0);
    /* A subscription takes a moment to reach the PUB socket: publish a
     * marker until it arrives (bounded). */
    char buf[64];
    int got = -1;
    for (int i = 0; i < 200 && got < 0; i++) {
        ts_event_t *hello = ts_event_new("hello", "{}", 2);
        cr_assert_eq(ts_send_EVENTS(r->events, &hello, 1), 0);
        int timeout = 10;
        zmq_setsockopt(r->sub, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
        got = zmq_recv(r->sub, buf, sizeof buf, 0);
    }
    cr_assert(got >= 0, "the subscriber is connected");
    /* Drain the markers that were still on their way. */
    int timeout = 50;
    zmq_setsockopt(r->sub, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    while (zmq_recv(r->sub, buf, sizeof buf, 0) >= 0)
        ;
}

static void rig_down(rig_t *r)
{
    zmq_close(r->replies);
    zmq_close(r->events);
    zmq_close(r->sub);
    ts_actor_stop(r->front);
    ts_actor_destroy(&r->front);
    zmq_ctx_term(r->zctx);
}

/* A committed internal envelope of persist batch `batch` with one event. */
static void send_committed(rig_t *r, uint32_t batch, const char *payload)
{
    ts_envelope_t *e = ts_envelope_new(1);
    cr_assert(e);
    e->internal = true;
    e->persist_batch = batch;
    e->calls[0].method = TS_M_NONE;
    e->calls[0].events = ts_event_new("doc.sessions", payload, strlen(payload));
    ts_call_set_result(&e->calls[0], strdup("null"), 4);
    cr_assert_eq(ts_send_ANSWERS(r->replies, &e, 1), 0);
}

/* A remote change, to be published after persist batch `after`. */
static void send_remote(rig_t *r, uint32_t after, const char *payload)
{
    ts_event_t *ev = ts_event_new("doc.sessions", payload, strlen(payload));
    cr_assert(ev);
    ev->after = after;
    cr_assert_eq(ts_send_EVENTS(r->events, &ev, 1), 0);
}

/* The next event's payload, or "" when none comes within timeout_ms. */
static const char *next_event(rig_t *r, int timeout_ms)
{
    static char payload[256];
    char topic[64];
    zmq_setsockopt(r->sub, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    if (zmq_recv(r->sub, topic, sizeof topic, 0) < 0)
        return "";
    int n = zmq_recv(r->sub, payload, sizeof payload - 1, 0);
    payload[n < 0 ? 0 : n] = '\0';
    return payload;
}

Test(front_events, a_remote_change_waits_for_the_batch_before_it, .timeout = 30)
{
    rig_t r;
    rig_up(&r);
    send_committed(&r, 1, "local-1");
    cr_assert_str_eq(next_event(&r, 2000), "local-1");
    /* Batch 1 is out: a change ordered after it goes at once. */
    send_remote(&r, 1, "remote-a");
    cr_assert_str_eq(next_event(&r, 2000), "remote-a");
    /* Ordered after batch 3, which is not out: it waits. */
    send_remote(&r, 3, "remote-b");
    send_remote(&r, 1, "remote-c"); /* behind remote-b: never overtakes it */
    cr_assert_str_eq(next_event(&r, 200), "", "nothing before batch 3");
    send_committed(&r, 2, "local-2");
    cr_assert_str_eq(next_event(&r, 2000), "local-2");
    cr_assert_str_eq(next_event(&r, 200), "", "batch 2 is not enough");
    send_committed(&r, 3, "local-3");
    cr_assert_str_eq(next_event(&r, 2000), "local-3");
    cr_assert_str_eq(next_event(&r, 2000), "remote-b");
    cr_assert_str_eq(next_event(&r, 2000), "remote-c");
    rig_down(&r);
}

Test(front_events, a_later_batch_never_overtakes_a_remote_change_sent_before_it, .timeout = 30)
{
    rig_t r;
    rig_up(&r);
    /* The store sends a change ordered after batch 0, then (later) batch 1
     * carries a newer event of the same document: whichever socket the
     * front door reads first, the change comes out first. */
    for (uint32_t b = 1; b <= 200; b++) {
        char remote[32], local[32];
        snprintf(remote, sizeof remote, "remote-%u", (unsigned)b);
        snprintf(local, sizeof local, "local-%u", (unsigned)b);
        send_remote(&r, b - 1, remote);
        send_committed(&r, b, local);
    }
    for (uint32_t b = 1; b <= 200; b++) {
        char remote[32], local[32];
        snprintf(remote, sizeof remote, "remote-%u", (unsigned)b);
        snprintf(local, sizeof local, "local-%u", (unsigned)b);
        cr_assert_str_eq(next_event(&r, 2000), remote);
        cr_assert_str_eq(next_event(&r, 2000), local);
    }
    rig_down(&r);
}

Test(front_events, a_change_whose_batch_never_comes_is_published_within_seconds, .timeout = 30)
{
    rig_t r;
    rig_up(&r);
    int64_t t0 = ts_mono_us();
    send_remote(&r, 7, "orphan"); /* batch 7 was lost (a failed send) */
    cr_assert_str_eq(next_event(&r, 5000), "orphan");
    int64_t waited_ms = (ts_mono_us() - t0) / 1000;
    cr_assert(waited_ms >= 900, "it waited its turn first (%lld ms)", (long long)waited_ms);
    rig_down(&r);
}

Test(front_events, batch_numbers_wrap_and_zero_means_now, .timeout = 30)
{
    rig_t r;
    rig_up(&r);
    send_committed(&r, 0x80000001u, "local-a");
    cr_assert_str_eq(next_event(&r, 2000), "local-a");
    send_remote(&r, 0, "remote-now"); /* no earlier event to wait for */
    cr_assert_str_eq(next_event(&r, 300), "remote-now");
    send_committed(&r, 0xffffffffu, "local-b");
    cr_assert_str_eq(next_event(&r, 2000), "local-b");
    send_remote(&r, 1, "remote-after-wrap"); /* the batch after 0xffffffff is 1 */
    cr_assert_str_eq(next_event(&r, 300), "", "batch 1 is not out yet");
    send_committed(&r, 1, "local-c");
    cr_assert_str_eq(next_event(&r, 2000), "local-c");
    cr_assert_str_eq(next_event(&r, 2000), "remote-after-wrap");
    rig_down(&r);
}

/* The whole next event's payload (malloc'd), or NULL. */
static char *next_payload(rig_t *r, int timeout_ms)
{
    char topic[64];
    zmq_setsockopt(r->sub, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    if (zmq_recv(r->sub, topic, sizeof topic, 0) < 0)
        return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    cr_assert(zmq_msg_recv(&m, r->sub, 0) >= 0);
    char *text = ts_memdup(zmq_msg_data(&m), zmq_msg_size(&m));
    zmq_msg_close(&m);
    return text;
}

/* Each event gets seq (per topic, from 1) and boot at the end of its
 * params; one over 64 KiB loses its doc and says so; what is not shaped
 * like an event goes out as it is. */
Test(front_events, events_get_seq_and_boot_and_a_large_doc_is_left_out, .timeout = 30)
{
    rig_t r;
    rig_up(&r);
    send_committed(&r, 1, "{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":{}}");
    char *a = next_payload(&r, 2000);
    cr_assert_not_null(a);
    cr_assert_eq(strlen(a), strlen("{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":{\"seq\":1,"
                                   "\"boot\":\"\"}}") + 36, "%s", a);
    cr_assert(strncmp(a, "{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":{\"seq\":1,\"boot\":\"", 56) == 0,
              "%s", a);
    ts_buf_t big = {0};
    ts_buf_puts(&big, "{\"jsonrpc\":\"2.0\",\"method\":\"doc.changed\",\"params\":{\"collection\":"
                      "\"sessions\",\"id\":\"s1\",\"doc\":{\"notes\":\"");
    for (int i = 0; i < 70000; i++)
        ts_buf_puts(&big, "n");
    ts_buf_puts(&big, "\"},\"origin\":\"local\",\"deleted\":false}}");
    send_committed(&r, 2, big.data);
    ts_buf_free(&big);
    char *b = next_payload(&r, 2000);
    cr_assert_not_null(b);
    char expect[256];
    snprintf(expect, sizeof expect,
             "{\"jsonrpc\":\"2.0\",\"method\":\"doc.changed\",\"params\":{\"collection\":"
             "\"sessions\",\"id\":\"s1\",\"origin\":\"local\",\"deleted\":false,"
             "\"doc_omitted\":true,\"seq\":2,\"boot\":\"%.36s\"}}", a + 56);
    cr_assert_str_eq(b, expect);
    send_committed(&r, 3, "not an event");
    char *c = next_payload(&r, 2000);
    cr_assert_str_eq(c, "not an event");
    free(a);
    free(b);
    free(c);
    rig_down(&r);
}
