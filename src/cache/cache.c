/* cache.c — the cache actor: its loop and messages. The store hands it
 * changes, reads (queries by selector, subscribe, unsubscribe, metrics)
 * and the results of runs it asked for, all on one socket and in order;
 * the front door tells it of clients gone. It answers reads from memory
 * (memo.c), keeps live queries current (live.c) and tracks what each
 * answer read (watch.c). What it sends is gathered while one message is
 * handled and sent after it: answers and runs in one message each. */
#include "cache/cache_int.h"
#include "therasync/cache.h"

#include <zmq.h>

void cache_answer(cache_t *self, ts_envelope_t *e)
{
    if (self->out.nanswers == self->out.capanswers) {
        self->out.capanswers = self->out.capanswers ? self->out.capanswers * 2 : 64;
        self->out.answers = ts_xrealloc(self->out.answers, self->out.capanswers * sizeof *self->out.answers);
    }
    self->out.answers[self->out.nanswers++] = e;
}

int cache_run(cache_t *self, uint64_t token, uint16_t collection, const cJSON *request,
              bool extend)
{
    if (self->out.nruns == self->out.capruns) {
        self->out.capruns = self->out.capruns ? self->out.capruns * 2 : 64;
        self->out.runs = ts_xrealloc(self->out.runs, self->out.capruns * sizeof *self->out.runs);
    }
    ts_cache_run_t *run = ts_cache_run_new(token, collection, cJSON_Duplicate(request, true));
    run->extend = extend;
    self->out.runs[self->out.nruns++] = run;
    self->runs++;
    return 0;
}

static void flush(cache_t *self)
{
    live_flush(self);
    if (self->out.nruns && ts_send_CACHE_RUN(self->to_store, self->out.runs, self->out.nruns)) {
        ts_error(LOG, "cannot pass runs to the store");
        for (size_t i = 0; i < self->out.nruns; i++)
            ts_cache_run_free(self->out.runs[i]);
    }
    self->out.nruns = 0;
    mirror_flush(self); /* before the answers: none may be newer than the copies */
    if (self->out.nanswers && ts_send_ANSWERS(self->to_front, self->out.answers, self->out.nanswers)) {
        ts_error(LOG, "cannot pass answers to the front door");
        for (size_t i = 0; i < self->out.nanswers; i++)
            ts_envelope_free(self->out.answers[i]);
    }
    self->out.nanswers = 0;
    if (self->notices) {
        ts_notice_t *n = self->notices;
        self->notices = self->notices_last = NULL;
        if (ts_send_NOTICES(self->to_front, &n, 1))
            ts_notice_free_list(n);
    }
}

/* metrics: the cache's section, then on to persist for its own. */
static void add_metrics(cache_t *self, ts_envelope_t *e)
{
    for (size_t i = 0; i < e->ncalls; i++) {
        ts_call_t *call = &e->calls[i];
        if (call->method != TS_M_METRICS || call->err_code)
            continue;
        if (!call->partial)
            call->partial = cJSON_CreateObject();
        cJSON *m = cJSON_AddObjectToObject(call->partial, "cache");
        uint64_t reads = self->hits + self->misses;
        struct {
            const char *name;
            double value;
        } rows[] = {
            {"hits", (double)self->hits},
            {"misses", (double)self->misses},
            {"hit_ratio", reads ? (double)self->hits / (double)reads : 0},
            {"coalesced", (double)self->coalesced},
            {"entries", (double)self->entries},
            {"bytes", (double)self->bytes},
            {"max_bytes", (double)self->config->cache.max_bytes},
            {"evictions", (double)self->evictions},
            {"invalidations", (double)self->invalidations},
            {"patches", (double)self->patches},
            {"runs", (double)self->runs},
            {"run_errors", (double)self->run_errors},
            {"uncached", (double)self->uncached},
            {"recomputes", (double)self->recomputes},
            {"unchanged", (double)self->unchanged},
            {"subscriptions", (double)self->nsubs},
            {"live_queries", (double)self->lives.count},
            {"notifications", (double)self->notifications},
            {"closed", (double)self->closed},
            {"ondemand_entries", (double)od_entries(self)},
            {"fetches", (double)self->fetches},
            {"coalesced_fetches", (double)self->coalesced_fetches},
            {"fresh_answers", (double)self->od_fresh},
            {"stale_answers", (double)self->stale_answers},
            {"not_modified", (double)self->not_modified},
            {"fetch_errors", (double)self->fetch_errors},
            {"forgotten", (double)self->od_forgotten},
        };
        for (size_t k = 0; k < sizeof rows / sizeof *rows; k++)
            cJSON_AddNumberToObject(m, rows[k].name, rows[k].value);
        cJSON *lat = cJSON_AddObjectToObject(m, "notify_latency_us");
        cJSON_AddNumberToObject(lat, "count", (double)self->notify_us.total);
        cJSON_AddNumberToObject(lat, "p50", (double)ts_hist_quantile(&self->notify_us, 0.5));
        cJSON_AddNumberToObject(lat, "p99", (double)ts_hist_quantile(&self->notify_us, 0.99));
        cJSON_AddItemToObject(lat, "buckets", ts_hist_buckets_json(&self->notify_us));
    }
    if (ts_send_COMMIT(self->to_persist, &e, 1)) {
        ts_error(LOG, "cannot pass metrics to persist");
        ts_envelope_free(e);
    }
}

/* invalidate {collection?, selector?, params?}: answers of that selector
 * (and params) dropped, on-demand questions of that collection refetched;
 * the count of both. */
static void invalidate(cache_t *self, ts_envelope_t *e)
{
    ts_call_t *call = &e->calls[0];
    const char *sel = ts_json_string(call->params, "selector");
    int coll = call->collection ? ts_config_collection(self->config, call->collection) : -1;
    size_t n = 0;
    if (cJSON_GetObjectItemCaseSensitive(call->params, "selector") && !sel) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.selector must be a string");
        cache_answer(self, e);
        return;
    }
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(call->params, "params");
    if (params && (!sel || !cJSON_IsObject(params))) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.params needs a selector and is an object");
        cache_answer(self, e);
        return;
    }
    if (sel && params)
        n += memo_invalidate_params(self, call->params);
    else if (sel)
        n += memo_invalidate(self, call->collection, sel);
    if (coll >= 0 && self->config->ondemand[coll].on)
        n += od_invalidate(self, coll);
    char text[64];
    int len = snprintf(text, sizeof text, "{\"invalidated\":%zu}", n);
    ts_call_set_result(call, ts_xstrndup(text, (size_t)len), (size_t)len);
    cache_answer(self, e);
}

static bool on_demand(const cache_t *self, const ts_call_t *call)
{
    int coll = call->collection ? ts_config_collection(self->config, call->collection) : -1;
    return coll >= 0 && self->config->ondemand[coll].on;
}

static void on_read(cache_t *self, ts_envelope_t *e);

/* Reads from the front door come before the store has handled the writes
 * their client sent first: each waits until CACHE_SEEN says it has (and
 * its changes are here), in arrival order. */
static void on_reads(cache_t *self, ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ts_envelope_t *e = envs[i];
        if (e->wait_for > self->seen || e->wait_mark > self->mark || self->held) {
            e->held_next = NULL;
            if (self->held_last)
                self->held_last->held_next = e;
            else
                self->held = e;
            self->held_last = e;
            continue;
        }
        on_read(self, e);
    }
}

static void on_seen(cache_t *self, const ts_seen_t *seen)
{
    if (seen->mark > self->mark)
        self->mark = seen->mark;
    if (seen->front_msg > self->seen)
        self->seen = seen->front_msg;
    while (self->held && self->held->wait_for <= self->seen &&
           self->held->wait_mark <= self->mark) {
        ts_envelope_t *e = self->held;
        self->held = e->held_next;
        if (!self->held)
            self->held_last = NULL;
        e->held_next = NULL;
        on_read(self, e);
    }
}

static void on_read(cache_t *self, ts_envelope_t *e)
{
    {
        switch (e->calls[0].method) {
        case TS_M_GET: od_read(self, e); break;
        case TS_M_QUERY:
            if (on_demand(self, &e->calls[0]))
                od_read(self, e);
            else
                memo_read(self, e);
            break;
        case TS_M_INVALIDATE: invalidate(self, e); break;
        case TS_M_SUBSCRIBE: live_subscribe(self, e); break;
        case TS_M_UNSUBSCRIBE: live_unsubscribe(self, e); break;
        case TS_M_METRICS: add_metrics(self, e); break;
        default:
            ts_call_fail(&e->calls[0], TS_E_INTERNAL, "the cache does not answer %s",
                         ts_method_name(e->calls[0].method));
            cache_answer(self, e);
        }
    }
}

static int on_inbox(ts_loop_t *loop, void *socket, void *arg)
{
    (void)loop;
    cache_t *self = arg;
    ts_msg_t m;
    for (int round = 0; round < 64; round++) {
        if (ts_msg_recv(socket, ZMQ_DONTWAIT, &m))
            break;
        switch (m.kind) {
        case TS_MSG_CACHE_CHANGES:
            for (size_t i = 0; i < m.count; i++) {
                watch_changes(self, ts_msg_CACHE_CHANGES(&m)[i]);
                for (const ts_change_t *c = ts_msg_CACHE_CHANGES(&m)[i]; c; c = c->next)
                    od_change(self, c);
            }
            memo_evict(self);
            ts_msg_free(&m);
            break;
        case TS_MSG_CACHE_READS:
            on_reads(self, ts_msg_CACHE_READS(&m), m.count);
            ts_msg_release(&m);
            break;
        case TS_MSG_CACHE_RESULT:
            for (size_t i = 0; i < m.count; i++) {
                ts_cache_run_t *run = ts_msg_CACHE_RESULT(&m)[i];
                if (run->token == 1)
                    live_result(self, run);
                else
                    memo_result(self, run);
            }
            ts_msg_free(&m);
            break;
        case TS_MSG_CACHE_POLICY:
            memo_policy(self, ts_msg_CACHE_POLICY(&m)[0]);
            ts_msg_release(&m);
            break;
        case TS_MSG_API_RESULT:
            for (size_t i = 0; i < m.count; i++)
                od_result(self, ts_msg_API_RESULT(&m)[i]);
            ts_msg_release(&m);
            break;
        case TS_MSG_CACHE_SEEN:
            for (size_t i = 0; i < m.count; i++)
                on_seen(self, ts_msg_CACHE_SEEN(&m)[i]);
            ts_msg_free(&m);
            break;
        case TS_MSG_GONE:
            for (size_t i = 0; i < m.count; i++)
                live_gone(self, ts_msg_GONE(&m)[i]);
            ts_msg_free(&m);
            break;
        default: ts_msg_unexpected(LOG, &m); break;
        }
        flush(self);
    }
    return 0;
}

static int on_timer(ts_loop_t *loop, int id, void *arg)
{
    (void)loop, (void)id;
    od_gc(arg);
    return 0;
}

static void cache_actor(ts_actor_t *actor, void *args)
{
    cache_t self = {.config = args, .next_version = ts_wall_ms()};
    void *zctx = ts_actor_zctx(actor);
    ts_loop_t *loop = ts_loop_new();
    self.inbox = ts_inproc_socket(zctx, ZMQ_PULL, TS_INPROC_CACHE, true);
    self.to_store = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_STORE, false);
    self.to_front = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_FRONT, false);
    self.to_persist = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_PERSIST, false);
    bool any_ondemand = false;
    for (size_t i = 0; i < self.config->ncollections; i++)
        any_ondemand |= self.config->ondemand[i].on;
    if (self.config->api_url && any_ondemand)
        self.to_api = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_API, false);
    if (!loop || !self.inbox || !self.to_store || !self.to_front || !self.to_persist) {
        ts_error(LOG, "cannot set up sockets: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    ts_loop_reader(loop, ts_actor_pipe(actor), ts_actor_pipe_term, NULL);
    ts_loop_reader(loop, self.inbox, on_inbox, &self);
    ts_loop_timer(loop, 1000, on_timer, &self);
    ts_actor_ready(actor, 0);
    ts_loop_run(loop);
    ts_actor_quiesce(actor);
    ts_msg_drain(self.inbox);
done:
    live_free_all(&self);
    od_free_all(&self);
    while (self.held) {
        ts_envelope_t *next = self.held->held_next;
        ts_envelope_free(self.held);
        self.held = next;
    }
    memo_free_all(&self);
    mirror_free_all(&self);
    watch_free_all(&self);
    ts_buf_free(&self.buf);
    for (size_t i = 0; i < self.out.nanswers; i++)
        ts_envelope_free(self.out.answers[i]);
    for (size_t i = 0; i < self.out.nruns; i++)
        ts_cache_run_free(self.out.runs[i]);
    free(self.out.answers);
    free(self.out.runs);
        ts_loop_destroy(&loop);
    void *sockets[] = {self.inbox, self.to_store, self.to_front, self.to_persist, self.to_api};
    for (size_t i = 0; i < sizeof sockets / sizeof *sockets; i++)
        if (sockets[i])
            zmq_close(sockets[i]);
}

ts_actor_t *ts_cache_start(void *zctx, const ts_config_t *config)
{
    return ts_actor_new(zctx, "cache", cache_actor, (void *)config);
}
