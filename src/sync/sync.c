/* sync.c — the sync actor: push the outbox, follow the change feed, decide
 * online/offline, check digests. Protocol with the store: sync.h; HTTP only
 * through the API actor (api.h); how it behaves: docs/SYNC.md.
 *
 * This file is the actor itself: its loop and timer, the messages in
 * (outbox, calls, digests, API answers) and out (updates to the store,
 * requests to the API actor), start and stop. Its state, sync_t, and what
 * the files share: sync_int.h. Three state machines, each changed in one
 * function of its own file:
 *   - a queued mutation (queue.c, sync_mstate_set): QUEUED → SENDING → (popped on
 *     success) | BACKOFF → QUEUED | FETCHING (409 without current) →
 *     SETTLING | SETTLING (refused or conflicting: waits for the store's DROP
 *     or replacement); sending and answers in push.c;
 *   - the connection (conn.c, conn_set): UNKNOWN → ONLINE ⇄ OFFLINE;
 *   - the feed (feed.c, sync_pull_set): WAIT_HINT → CATCHUP → STREAM | LONGPOLL |
 *     POLL.
 * Only the head of each document's FIFO is ever sent; ready heads wait in a
 * min-heap by seq so the oldest goes first. Digest checks: check.c; `sync`
 * and `invalidate` calls: round.c; the status part: status.c. */
#include "sync_int.h"

#include <stdarg.h>
#include <sys/random.h>
#include <zmq.h>

/* ---- small helpers ---- */

static uint64_t rand_u64(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
        r = (uint64_t)ts_mono_us() * 6364136223846793005ull + 1442695040888963407ull;
    return r;
}

/* Full jitter: random(0, min(cap, base * 2^(n-1))) in microseconds. */
int64_t sync_backoff_us(int n, int64_t base_ms, int64_t cap_ms)
{
    int64_t ceiling = base_ms;
    for (int i = 1; i < n && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return (int64_t)(rand_u64() % (uint64_t)(ceiling * 1000 + 1));
}

uint64_t sync_hash_key(const char *coll, const char *id)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = coll; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    return h;
}

/* ---- outgoing updates ---- */

ts_sync_update_t *sync_emit(sync_t *self, ts_sync_kind_t kind, const mut_t *m)
{
    ts_sync_update_t *u = ts_sync_update_new(kind);
    if (self->nout == self->out_cap) {
        size_t cap = self->out_cap ? self->out_cap * 2 : 64;
        self->out = ts_xrealloc(self->out, cap * sizeof *self->out);
        self->out_cap = cap;
    }
    if (m) {
        ts_copy_text(u->collection, sizeof u->collection, m->doc->coll);
        ts_copy_text(u->doc_id, sizeof u->doc_id, m->doc->id);
        u->seq = m->seq;
        memcpy(u->mutation, m->mutation, sizeof u->mutation);
    }
    self->out[self->nout++] = u;
    return u;
}

void sync_flush(sync_t *self)
{
    if (!self->nout)
        return;
    if (ts_send_SYNC_UPDATES(self->to_store, self->out, self->nout)) {
        ts_error(LOG, "cannot send %zu updates to the store", self->nout);
        for (size_t i = 0; i < self->nout; i++)
            ts_sync_update_free(self->out[i]);
    }
    self->nout = 0;
}

/* The end of every turn: send what can go, settle rounds, sync_flush. */
static void turn_end(sync_t *self)
{
    sync_push_pump(self);
    sync_rounds_progress(self);
    sync_status_maybe_send(self, false);
    sync_flush(self);
}

/* ---- requests ---- */

req_t *sync_req_new(sync_t *self, rkind_t kind)
{
    req_t *r = ts_xcalloc(1, sizeof *r);
    r->kind = kind;
    r->next = self->reqs;
    if (self->reqs)
        self->reqs->prev = r;
    self->reqs = r;
    return r;
}

void sync_req_free(sync_t *self, req_t *r)
{
    free(r->batch);
    if (r->prev)
        r->prev->next = r->next;
    else
        self->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    free(r);
}

/* Sends an API request for r. 0, or -1 (both freed). */
int sync_api_send(sync_t *self, ts_api_request_t *q, req_t *r)
{
    if (!q) { /* no request could be made of it (a path too long) */
        sync_req_free(self, r);
        return -1;
    }
    ts_copy_text(q->reply_to, sizeof q->reply_to, TS_INPROC_SYNC_API);
    /* A refused connect comes back at once, not after the API actor's
     * retries: it turns the connection offline (sync_conn_note), and what
     * was not sent is sent again when the server is back. */
    q->unreachable_final = true;
    q->user = r;
    r->id = q->id;
    bool feed = r->kind == R_STREAM || r->kind == R_FEED;
    if (ts_api_send(feed ? self->api_feed : self->api, q)) {
        ts_error(LOG, "cannot reach the API actor");
        ts_api_request_free(q);
        sync_req_free(self, r);
        return -1;
    }
    if (r->kind == R_PUSH || r->kind == R_BATCH || r->kind == R_FETCH)
        self->push_reqs++; /* on_result counts it down */
    if (r->kind == R_PUSH || r->kind == R_BATCH)
        r->sent_us = ts_mono_us();
    return 0;
}

ts_api_request_t *sync_get_request(const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    return ts_api_request_new(TS_API_GET, path, NULL);
}

/* ---- message handlers ---- */

static void on_result(sync_t *self, ts_api_result_t *res)
{
    self->requests++; /* metrics: what the Clinic API cost (status.c) */
    self->attempts += (uint64_t)(res->attempts > 0 ? res->attempts : 0);
    self->token_refreshes += (uint64_t)(res->token_refreshes > 0 ? res->token_refreshes : 0);
    req_t *r = res->user;
    if (!r) {
        ts_api_result_free(res);
        return;
    }
    if (r->kind == R_PUSH || r->kind == R_BATCH || r->kind == R_FETCH)
        self->push_reqs--;
    r->sent_us = 0; /* answered: no longer overdue */
    switch (r->kind) {
    case R_PUSH: sync_on_push(self, res, r->m); break;
    case R_BATCH: sync_on_batch(self, res, r); break;
    case R_FETCH: sync_on_fetch(self, res, r->m); break;
    case R_FEED:
        if (r->drain)
            sync_on_drain(self, res);
        else if (res->id == self->feed_id)
            sync_on_feed(self, res);
        break;
    case R_STREAM: sync_on_stream_result(self, res); break;
    case R_PROBE: sync_on_probe(self, res); break;
    case R_DIGEST: sync_on_digest_server(self, res, r->check); break;
    case R_LIST: sync_on_list(self, res, r); break;
    }
    sync_req_free(self, r);
    ts_api_result_free(res);
}

static int on_api(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    sync_t *self = arg;
    ts_msg_t m;
    for (int round = 0; round < 256; round++) {
        if (ts_msg_recv(socket, ZMQ_DONTWAIT, &m))
            break;
        switch (m.kind) {
        case TS_MSG_API_RESULT:
            for (size_t i = 0; i < m.count; i++)
                on_result(self, ts_msg_API_RESULT(&m)[i]);
            break;
        case TS_MSG_API_EVENT: sync_on_stream_events(self, ts_msg_API_EVENT(&m), m.count); break;
        case TS_MSG_API_STREAM:
            for (size_t i = 0; i < m.count; i++)
                sync_on_stream_state(self, ts_msg_API_STREAM(&m)[i]);
            ts_msg_free(&m); /* read, not kept */
            continue;
        default: ts_msg_unexpected(LOG, &m); continue;
        }
        ts_msg_release(&m);
    }
    turn_end(self);
    sync_feed_next(self);
    sync_flush(self);
    return 0;
}

static void on_hint(sync_t *self, ts_sync_update_t **ptrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ts_sync_update_t *u = ptrs[i];
        if (u->kind == TS_SYNC_CURSOR && self->pull == P_WAIT_HINT) {
            ts_copy_text(self->cursor, sizeof self->cursor, u->cursor);
            ts_copy_text(self->status_cursor, sizeof self->status_cursor, u->cursor);
            ts_copy_text(self->cursor_sent, sizeof self->cursor_sent, u->cursor);
            self->hint = true;
            ts_info(LOG, "the store's cursor: %s", *u->cursor ? u->cursor : "none");
            sync_pull_set(self, P_CATCHUP);
        }
        ts_sync_update_free(u);
    }
}

static int on_inbox(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    sync_t *self = arg;
    ts_msg_t m;
    for (int round = 0; round < 256; round++) {
        if (ts_msg_recv(socket, ZMQ_DONTWAIT, &m))
            break;
        switch (m.kind) {
        case TS_MSG_OUTBOX: sync_on_outbox(self, ts_msg_OUTBOX(&m), m.count); break;
        case TS_MSG_SYNC_CALL:
            for (size_t i = 0; i < m.count; i++)
                sync_on_sync_call(self, ts_msg_SYNC_CALL(&m)[i]);
            break;
        case TS_MSG_CANCEL_ASK:
            for (size_t i = 0; i < m.count; i++)
                sync_on_cancel_ask(self, ts_msg_CANCEL_ASK(&m)[i]);
            break;
        case TS_MSG_DIGEST:
            for (size_t i = 0; i < m.count; i++)
                sync_on_digest_local(self, ts_msg_DIGEST(&m)[i]);
            break;
        case TS_MSG_SYNC_UPDATES: on_hint(self, ts_msg_SYNC_UPDATES(&m), m.count); break;
        default: ts_msg_unexpected(LOG, &m); continue;
        }
        ts_msg_release(&m);
    }
    turn_end(self);
    sync_feed_next(self);
    sync_flush(self);
    return 0;
}

static int on_tick(ts_loop_t *loop, int timer_id, void *arg)
{
    (void)loop, (void)timer_id;
    sync_t *self = arg;
    int64_t now = ts_mono_us();
    if (self->pull == P_WAIT_HINT && now - self->started_us >= HINT_WAIT_US) {
        ts_info(LOG, "no cursor from the store: pulling from the start");
        sync_pull_set(self, P_CATCHUP);
    }
    sync_conn_watch(self, now);
    if (self->conn == C_OFFLINE && !self->probe_id && now >= self->probe_due_us)
        sync_probe_send(self);
    sync_push_wake(self, now);
    sync_holds_expire(self, now);
    int interval = self->config->sync.digest_interval_s;
    if (interval > 0 && now >= self->next_check_us) {
        bool ready = self->queued == 0 && self->in_flight == 0 && self->conn != C_OFFLINE &&
                     (self->pull == P_STREAM || self->pull == P_LONGPOLL || self->pull == P_POLL);
        /* A check asked for soon (sync_check_soon) waits for the writes
         * and the catch-up of a reconnect, trying again each second. */
        self->next_check_us = now + (ready || !self->check_soon ? (int64_t)interval * 1000000
                                                                 : 1000000);
        if (ready) {
            self->check_soon = false;
            sync_checks_start_all(self);
        }
    }
    sync_feed_next(self);
    turn_end(self);
    return 0;
}

/* ---- life ---- */

static void *open_socket(sync_t *self, int type, const char *endpoint, bool bind)
{
    void *s = ts_inproc_socket(ts_actor_zctx(self->actor), type, endpoint, bind);
    if (!s)
        ts_error(LOG, "cannot %s %s: %s", bind ? "bind" : "connect", endpoint,
                 zmq_strerror(zmq_errno()));
    return s;
}

static void sync_cleanup(sync_t *self)
{
    for (size_t i = 0; i < self->table_cap; i++) {
        for (sdoc_t *d = self->table[i], *next; d; d = next) {
            next = d->hnext;
            for (mut_t *m = d->head, *mn; m; m = mn) {
                mn = m->next;
                free(m->body);
                free(m);
            }
            free(d->held);
            free(d);
        }
    }
    free(self->table);
    free(self->recent);
    free(self->heap);
    free(self->waiting);
    for (round_t *rd = self->rounds, *next; rd; rd = next) {
        next = rd->next;
        ts_envelope_free(rd->envelope);
        free(rd);
    }
    if (self->checks)
        for (size_t i = 0; i < self->config->ncollections; i++)
            sync_check_finish(self, &self->checks[i]);
    free(self->checks);
    free(self->withheld);
    for (size_t i = 0; i < self->nout; i++)
        ts_sync_update_free(self->out[i]);
    free(self->out);
    ts_msg_drain(self->inbox);
    ts_msg_drain(self->api_in);
    while (self->reqs)
        sync_req_free(self, self->reqs);
    void *sockets[] = {self->inbox,    self->api_in,   self->api,
                       self->api_feed, self->to_store, self->to_front};
    for (size_t i = 0; i < sizeof sockets / sizeof sockets[0]; i++)
        if (sockets[i])
            zmq_close(sockets[i]);
    ts_loop_destroy(&self->loop);
}

static void sync_actor(ts_actor_t *actor, void *args)
{
    sync_t self = {.config = args, .actor = actor};
    self.started_us = ts_mono_us();
    ts_copy_text(self.api_state, sizeof self.api_state, "unknown");
    self.batch_limit = self.config->sync.batch_size;
    self.recent = ts_xcalloc(RECENT_SLOTS, sizeof *self.recent);
    self.checks = ts_xcalloc(self.config->ncollections ? self.config->ncollections : 1,
                             sizeof *self.checks);
    for (size_t i = 0; i < self.config->ncollections; i++)
        self.checks[i].coll = (int)i;
    self.next_check_us = self.started_us + (int64_t)self.config->sync.digest_interval_s * 1000000;
    if (!(self.loop = ts_loop_new()) ||
        !(self.inbox = open_socket(&self, ZMQ_PULL, TS_INPROC_SYNC, true)) ||
        !(self.api_in = open_socket(&self, ZMQ_PULL, TS_INPROC_SYNC_API, true)) ||
        !(self.api = open_socket(&self, ZMQ_PUSH, TS_INPROC_API, false)) ||
        !(self.api_feed = open_socket(&self, ZMQ_PUSH, TS_INPROC_API_FEED, false)) ||
        !(self.to_store = open_socket(&self, ZMQ_PUSH, TS_INPROC_STORE_SYNC, false)) ||
        !(self.to_front = open_socket(&self, ZMQ_PUSH, TS_INPROC_FRONT, false))) {
        sync_cleanup(&self);
        ts_actor_ready(actor, -1);
        return;
    }
    ts_loop_reader(self.loop, ts_actor_pipe(actor), ts_actor_pipe_term, NULL);
    ts_loop_reader(self.loop, self.inbox, on_inbox, &self);
    ts_loop_reader(self.loop, self.api_in, on_api, &self);
    ts_loop_timer(self.loop, TICK_MS, on_tick, &self);
    sync_status_maybe_send(&self, true);
    sync_flush(&self);
    ts_actor_ready(actor, 0);
    ts_loop_run(self.loop);
    ts_info(LOG, "stopping: %zu mutations queued, %d in flight; %" PRIu64 " changes pulled, %" PRIu64
            " echoes of our own writes dropped", self.queued, self.in_flight, self.pulled, self.echoes);
    ts_actor_quiesce(actor);
    sync_cleanup(&self);
}

ts_actor_t *ts_sync_start(void *zctx, const ts_config_t *config)
{
    return ts_actor_new(zctx, "sync", sync_actor, (void *)config);
}
