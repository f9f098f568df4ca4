/* front.c — the front-door actor: its loop and sockets, requests read
 * from the ROUTER and passed to the store under the in-flight limit (busy
 * beyond it), answers coming back, and draining at stop. Parsing is
 * parse.c's, answering answer.c's, events events.c's (front_int.h). */
#include "front/front_int.h"

#include <errno.h>
#include <limits.h>
#include <zmq.h>

/* Requests taken from the ROUTER before they go to the store together:
 * small enough that the store and persist work on one part while this
 * reads the next (at 512 the stages took turns on large clumps; at 64,
 * ingest +8% and update +16% at 8 x 64 in interleaved rounds, bench/RESULTS.md). */
#define MAX_READS_PER_WAKE 64
/* At a stop, what is in flight is answered within this; inside the
 * daemon's STOP_GRACE_MS (5 s) for the actors before persist, so a front
 * door still draining is never reported as stuck. */
#define DRAIN_TIMEOUT_MS 4000
/* Messages beyond this are dropped by ZeroMQ itself (connection reset);
 * between max_request_bytes and this they are answered too_large. */
#define HARD_MESSAGE_LIMIT (64LL << 20)
/* A remote change waits at most this for the batch it is ordered after
 * (that batch could only be lost with a failed send). */
#define EARLY_MAX_US 1000000
/* A read held for the front door's copies to catch up goes to the cache
 * after this (hot.c; the timer runs every 200 ms). */
#define HOT_HOLD_MAX_US 100000
/* ZMTP heartbeats on client connections: a peer silent three times this
 * long is dropped. */
#define HEARTBEAT_MS 10000

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

/* Whether the cache answers this request without the store: a query by
 * selector (cached, of a replicated collection), subscribe, unsubscribe,
 * alone. It goes straight to the cache, which answers it once the store
 * has handled the writes sent before it (wait_for). */
static bool cache_direct(const front_t *self, const ts_envelope_t *e)
{
    const ts_call_t *call = &e->calls[0];
    if (e->ncalls != 1 || call->err_code || call->result)
        return false;
    if (call->method == TS_M_SUBSCRIBE || call->method == TS_M_UNSUBSCRIBE)
        return true;
    int coll = call->collection ? ts_config_collection(self->config, call->collection) : -1;
    return ts_call_cacheable_query(call) && coll >= 0 && !self->config->ondemand[coll].on;
}

/* Reads the cache answers, straight to it (each with what it must wait for). */
void front_to_cache(front_t *self, ts_envelope_t **reads, size_t n)
{
    if (!n || ts_send_CACHE_READS(self->to_cache, reads, n) == 0)
        return;
    ts_error(LOG, "cannot pass reads to the cache: %s", zmq_strerror(zmq_errno()));
    for (size_t i = 0; i < n; i++) {
        ts_call_fail(&reads[i]->calls[0], TS_E_INTERNAL, "the engine is stopping");
        front_deliver(self, reads[i]);
    }
}

static int on_router(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    front_t *self = arg;
    ts_envelope_t *batch[MAX_READS_PER_WAKE], *direct[MAX_READS_PER_WAKE];
    ts_envelope_t *hot[MAX_READS_PER_WAKE];
    size_t n = 0, nd = 0, nh = 0;
    bool more = true;
    while (n + nh < MAX_READS_PER_WAKE && more) {
        ts_envelope_t *e = front_read_request(self, socket, &more);
        if (!e)
            continue;
        front_take_ticket(self, e);
        if (self->inflight + e->ncalls > self->config->max_inflight) {
            answer_busy(self, e);
            continue;
        }
        self->inflight += e->ncalls;
        if (cache_direct(self, e)) {
            /* what it must reflect: its client's writes, and what any
             * client was told (hot.c and the cache both wait for them) */
            e->wait_for = front_client_writes(self, e);
            e->wait_mark = self->told_mark;
            hot[nh++] = e; /* answered below, after the writes left */
            continue;
        }
        e->front_msg = self->store_msgs + 1; /* the message this one goes in */
        if (!e->unordered) /* its client's reads sent straight to the cache wait for it */
            front_note_write(self, e);
        batch[n++] = e;
    }
    if (n)
        self->store_msgs++;
    /* The writes go first: the reads their clients sent after them wait
     * until the copies reflect them, and that wait starts when the store
     * has them, not after this wake's other answers (~0.3 ms for 64). */
    if (n && ts_send_REQUESTS(self->to_store, batch, n)) {
        ts_error(LOG, "cannot pass requests to the store: %s", zmq_strerror(zmq_errno()));
        for (size_t i = 0; i < n; i++) { /* answered, in their turn, with the reason */
            for (size_t k = 0; k < batch[i]->ncalls; k++)
                if (!batch[i]->calls[k].err_code && !batch[i]->calls[k].result)
                    ts_call_fail(&batch[i]->calls[k], TS_E_INTERNAL, "the engine is stopping");
            front_deliver(self, batch[i]);
        }
    }
    for (size_t i = 0; i < nh; i++)
        if (!front_hot_answer(self, hot[i])) /* answered from the copies, or held for them */
            direct[nd++] = hot[i];
    front_to_cache(self, direct, nd);
    if (self->inflight >= self->warn_at) {
        ts_warn(LOG, "%zu calls in flight (limit %zu)", self->inflight, self->config->max_inflight);
        self->warn_at *= 2;
    } else if (self->inflight < self->warn_at / 4 && self->warn_at > 4096) {
        self->warn_at /= 2;
    }
    return 0;
}

static int on_replies(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    front_t *self = arg;
    ts_msg_t m;
    for (int round = 0; round < 64; round++) {
        if (ts_msg_recv(socket, ZMQ_DONTWAIT, &m))
            break;
        if (m.kind == TS_MSG_HOT) { /* before the answers after it */
            for (size_t i = 0; i < m.count; i++)
                front_hot_take(self, ts_msg_HOT(&m)[i]);
            ts_msg_release(&m);
            continue;
        }
        if (m.kind == TS_MSG_NOTICES) { /* live queries: after the answers before them */
            for (size_t i = 0; i < m.count; i++)
                front_send_notices(self, ts_msg_NOTICES(&m)[i]);
            ts_msg_release(&m);
            continue;
        }
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

static int on_events(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    front_read_events(arg, socket, 256);
    return 0;
}

static int on_pipe(ts_loop_t *loop, void *pipe, void *arg)
{
    front_t *self = arg;
    char command[16];
    if (ts_actor_read_command(pipe, 0, command, sizeof command) < 0)
        return 0;
    if (strcmp(command, "RELOAD") == 0) /* SIGHUP */
        front_auth_reload(self);
    if (strcmp(command, "$TERM") != 0)
        return 0;
    /* $TERM: stop accepting, finish what is in flight, then end. */
    self->draining = true;
    self->drain_deadline_us = ts_mono_us() + DRAIN_TIMEOUT_MS * 1000LL;
    front_hot_release(self, true, 0); /* the cache answers what waits for copies */
    ts_loop_pause(loop, self->router, 1);
    ts_loop_pause(loop, self->admin, 1);
    if (self->inflight)
        ts_info(LOG, "draining %zu calls in flight", self->inflight);
    return self->inflight == 0 ? -1 : 0;
}

static int on_drain_timer(ts_loop_t *loop, int id, void *arg)
{
    (void)loop, (void)id;
    front_t *self = arg;
    /* A read waits for the copies only as long as a HOT usually takes:
     * after that the cache answers it (by the same rule). */
    if (self->hot_held)
        front_hot_release(self, false, ts_mono_us() - HOT_HOLD_MAX_US);
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

static void *open_socket(const front_t *self, void *zctx, int type, const char *endpoint,
                         bool bind)
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
        int hwm = 100000, one = 1, ivl = HEARTBEAT_MS, timeout = 3 * HEARTBEAT_MS;
        /* A send to a client gone fails instead of vanishing (the cache
         * ends its live queries); heartbeats find TCP peers that died
         * without closing. */
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout);
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max);
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    }
    if (front_auth_secure(self, s)) {
        ts_error(LOG, "cannot set CURVE on %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
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
    if (!(self.replies = open_socket(&self, zctx, ZMQ_PULL, TS_INPROC_FRONT, true)) ||
        !(self.events_in = open_socket(&self, zctx, ZMQ_PULL, TS_INPROC_EVENTS, true)) ||
        !(self.to_store = open_socket(&self, zctx, ZMQ_PUSH, TS_INPROC_STORE, false)) ||
        !(self.to_cache = open_socket(&self, zctx, ZMQ_PUSH, TS_INPROC_CACHE, false)) ||
        front_auth_open(&self, zctx) || /* before the sockets clients reach */
        !(self.admin = open_socket(&self, zctx, ZMQ_ROUTER, TS_INPROC_FRONT_ADMIN, true)) ||
        !(self.router = open_socket(&self, zctx, ZMQ_ROUTER, self.config->endpoint, true)) ||
        !(self.pub = open_socket(&self, zctx, ZMQ_PUB, self.config->events, true)))
        goto done;
    size_t len = sizeof args->endpoint;
    zmq_getsockopt(self.router, ZMQ_LAST_ENDPOINT, args->endpoint, &len);
    len = sizeof args->events;
    zmq_getsockopt(self.pub, ZMQ_LAST_ENDPOINT, args->events, &len);
    ts_loop_reader(self.loop, ts_actor_pipe(actor), on_pipe, &self);
    ts_loop_reader(self.loop, self.events_in, on_events, &self);
    ts_loop_reader(self.loop, self.replies, on_replies, &self);
    ts_loop_reader(self.loop, self.router, on_router, &self);
    ts_loop_reader(self.loop, self.admin, on_router, &self);
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
    front_auth_close(&self);
    ts_buf_free(&self.scratch);
    ts_buf_free(&self.slim);
    ts_buf_free(&self.hot_key);
    front_hot_free_all(&self);
    while (self.hot_held) {
        ts_envelope_t *next = self.hot_held->held_next;
        ts_envelope_free(self.hot_held);
        self.hot_held = next;
    }
    for (size_t i = 0; i < self.ntopics; i++)
        free(self.topics[i].name);
    free(self.topics);
    void *sockets[] = {self.router, self.admin, self.pub,      self.replies,
                       self.events_in, self.to_store, self.to_cache};
    for (size_t i = 0; i < sizeof sockets / sizeof *sockets; i++)
        if (sockets[i])
            zmq_close(sockets[i]);
}

ts_actor_t *ts_front_start(void *zctx, ts_front_args_t *args)
{
    return ts_actor_new(zctx, "front", front_actor, args);
}
