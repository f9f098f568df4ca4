/* store.c — the store actor: its loop and messages (requests from the
 * front door, rollbacks from persist, the sync actor's updates and digest
 * asks, recovered records), the dispatch of calls to their methods, the
 * batches sent to persist, start and stop. The other files of src/store/
 * hold what it does with them; store_int.h their shared state. */
#include "store_int.h"
#include <zmq.h>

static void do_sync_standalone(store_t *self, ts_call_t *call);
static void tell_cache_selectors(store_t *self);

/* Whether an envelope must pass through persist: it has something to make
 * durable, or a call persist answers (audit) or adds to (metrics). */
static bool needs_persist(const ts_envelope_t *e)
{
    for (size_t i = 0; i < e->ncalls; i++) {
        const ts_call_t *c = &e->calls[i];
        if (c->records || ts_method_is(c->method, TS_MF_PERSIST))
            return true;
    }
    return false;
}

static void handle_call(store_t *self, ts_call_t *call)
{
    if (call->err_code || call->result || call->partial)
        return; /* answered by the front door */
    self->calls[call->method]++;
    collection_t *c = store_find_collection(self, call->collection);
    switch (call->method) {
    case TS_M_CREATE: store_do_create(self, call, c); break;
    case TS_M_UPDATE: store_do_update(self, call, c); break;
    case TS_M_DELETE: store_do_delete(self, call, c); break;
    case TS_M_GET: store_do_get(call, c); break;
    case TS_M_QUERY:
        if (c && self->config->ondemand[c->index].on &&
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(call->params, "selector")))
            ts_call_fail(call, TS_E_INVALID_PARAMS,
                         "%s is read on demand: query it with a named selector that has an "
                         "`index`",
                         c->name);
        else if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(call->params, "selector")))
            ts_sq_query(self->sq, call, c ? c->q : NULL);
        else
            store_do_query(self, call, c);
        break;
    case TS_M_POLICY_RELOAD: {
        char *event = ts_sq_reload(self->sq, call);
        if (event)
            store_add_event(call, "policy", event, strlen(event));
        cJSON_free(event);
        tell_cache_selectors(self);
        break;
    }
    case TS_M_POLICY_INFO: ts_sq_info(self->sq, call); break;
    case TS_M_CANCEL: store_do_cancel(self, call); break;
    case TS_M_STATUS: store_do_status(self, call); break;
    case TS_M_METRICS: store_do_metrics(self, call); break;
    case TS_M_SYNC:
    case TS_M_INVALIDATE: do_sync_standalone(self, call); break;
    case TS_M_AUDIT: break; /* answered by persist, which owns the audit table */
    case TS_M_BACKUP: break; /* and the database */
    case TS_M_SUBSCRIBE:
    case TS_M_UNSUBSCRIBE: /* alone, they went to the cache (route_cache_call) */
        ts_call_fail(call, TS_E_INVALID_REQUEST, "%s cannot be part of a batch",
                     ts_method_name(call->method));
        break;
    default:
        ts_call_fail(call, TS_E_NO_METHOD, "%s is not available in this build",
                     ts_method_name(call->method));
    }
    if (call->err_code && ts_method_is(call->method, TS_MF_WRITE))
        self->rejected_writes++;
}

/* One message of envelopes to persist: a batch. Each envelope is stamped
 * with its number, which orders remote changes (publish_remote_change). */
/* What leaves the store carries its mark: the front door answers from its
 * copies of the cache's answers only once they have seen it (front/hot.c). */
void store_stamp(store_t *self, ts_envelope_t **envelopes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        envelopes[i]->mark = self->changes.mark;
}

int store_send_to_persist(store_t *self, ts_envelope_t **envelopes, size_t n)
{
    self->persist_batch = store_next_batch(self);
    store_stamp(self, envelopes, n);
    for (size_t i = 0; i < n; i++)
        envelopes[i]->persist_batch = self->persist_batch;
    return ts_send_COMMIT(self->to_persist, envelopes, n);
}

/* `sync` and `invalidate` belong to the sync actor; without one they are
 * answered here. Returns true when the envelope was handed over. */
static bool route_sync_call(store_t *self, ts_envelope_t *e)
{
    if (e->ncalls != 1 || e->calls[0].err_code || e->calls[0].result ||
        ts_method_info(e->calls[0].method)->owner != TS_OWNER_SYNC)
        return false;
    if (!self->to_sync)
        return false;
    /* The sync actor skips on-demand collections (it would list them
     * whole): the cache refetches what it holds of them instead. */
    collection_t *c = e->calls[0].collection ? store_find_collection(self, e->calls[0].collection)
                                              : NULL;
    if (e->calls[0].method == TS_M_INVALIDATE &&
        ((c && self->config->ondemand[c->index].on) ||
         cJSON_GetObjectItemCaseSensitive(e->calls[0].params, "selector")))
        return false; /* a selector's answers are the cache's to drop */
    return ts_send_SYNC_CALL(self->to_sync, &e, 1) == 0;
}

/* Queues an envelope for the cache (store_flush_cache sends it). */
static void to_cache(store_t *self, ts_envelope_t *e)
{
    if (self->ncache_reads == self->capcache_reads) {
        self->capcache_reads = self->capcache_reads ? self->capcache_reads * 2 : 64;
        self->cache_reads =
            ts_xrealloc(self->cache_reads, self->capcache_reads * sizeof *self->cache_reads);
    }
    self->cache_reads[self->ncache_reads++] = e;
}

/* The cache answers a request alone that is subscribe, unsubscribe, or a
 * query by selector (unless it says "cache": false); a batch keeps its
 * calls together here. Returns true when the envelope was handed over. */
static bool route_cache_call(store_t *self, ts_envelope_t *e)
{
    const ts_call_t *call = &e->calls[0];
    if (e->ncalls != 1 || call->err_code || call->result || call->partial)
        return false;
    collection_t *c = call->collection ? store_find_collection(self, call->collection) : NULL;
    bool ondemand = c && self->config->ondemand[c->index].on;
    bool named = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(call->params, "selector"));
    bool cached = ts_method_info(call->method)->owner == TS_OWNER_CACHE ||
                  ts_call_cacheable_query(call) ||
                  (call->method == TS_M_QUERY && named && ondemand) ||
                  (call->method == TS_M_GET && ondemand) ||
                  (call->method == TS_M_INVALIDATE &&
                   (ondemand || cJSON_GetObjectItemCaseSensitive(call->params, "selector")));
    if (!cached)
        return false;
    self->calls[call->method]++;
    to_cache(self, e);
    return true;
}

/* Reads of on-demand collections the cache has decided on (fetched what
 * was missing, first): answered from the replica, with their freshness. */
static void on_cache_serve(store_t *self, ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ts_call_t *call = &envs[i]->calls[0];
        if (!call->err_code && !call->result) {
            collection_t *c = store_find_collection(self, call->collection);
            if (call->method == TS_M_GET)
                store_do_get(call, c);
            else
                ts_sq_query(self->sq, call, c ? c->q : NULL);
        }
        store_add_freshness(call);
    }
    store_stamp(self, envs, n);
    if (ts_send_ANSWERS(self->to_front, envs, n)) {
        ts_error(LOG, "cannot pass answers to the front door");
        for (size_t i = 0; i < n; i++)
            ts_envelope_free(envs[i]);
    }
}

/* Sends the cache what handling one message produced: the changes first,
 * then the reads, which must see them. */
void store_flush_cache(store_t *self)
{
    if (self->changes.head) {
        ts_change_t *head = self->changes.head;
        for (ts_change_t *ch = head; ch; ch = ch->next)
            if (self->lower_bounds[ch->collection])
                ts_sq_membership(self->sq, self->collections[ch->collection].name, ch);
        self->changes.head = self->changes.last = NULL;
        if (ts_send_CACHE_CHANGES(self->to_cache, &head, 1))
            ts_change_free_list(head);
    }
    if (self->ncache_reads &&
        ts_send_CACHE_READS(self->to_cache, self->cache_reads, self->ncache_reads)) {
        ts_error(LOG, "cannot pass reads to the cache");
        for (size_t i = 0; i < self->ncache_reads; i++)
            ts_envelope_free(self->cache_reads[i]);
    }
    self->ncache_reads = 0;
    uint64_t seen = self->seen_mark;
    if (self->ncancels_out && self->cancels_out[0] - 1 < seen)
        seen = self->cancels_out[0] - 1; /* a cancel's rollback is still to come */
    if (seen > self->seen_sent || self->changes.mark > self->changes.mark_sent) {
        /* after the changes it covers */
        if (seen > self->seen_sent)
            self->seen_sent = seen;
        self->changes.mark_sent = self->changes.mark;
        ts_seen_t *s = ts_xmalloc(sizeof *s);
        *s = (ts_seen_t){.front_msg = self->seen_sent, .mark = self->changes.mark};
        if (ts_send_CACHE_SEEN(self->to_cache, &s, 1))
            free(s);
    }
}

/* The selectors, for the cache: at start and after every reload. */
static void tell_cache_selectors(store_t *self)
{
    ts_selectors_t *s = ts_sq_selectors(self->sq);
    memset(self->lower_bounds, 0, sizeof self->lower_bounds);
    for (size_t i = 0; i < s->count; i++) {
        const ts_policy_selector_t *sel = ts_policy_selector_at(ts_sq_policy(self->sq), i);
        collection_t *c = sel && sel->lower_bound ? store_find_collection(self, sel->collection)
                                                  : NULL;
        if (c)
            self->lower_bounds[c->index] = true;
    }
    if (ts_send_CACHE_POLICY(self->to_cache, &s, 1))
        ts_selectors_free(s);
    self->changes.mark++; /* the front door's copies must see the new selectors */
}

/* Queries the cache asks for: computed, with what they read, and sent back. */
static void on_cache_runs(store_t *self, ts_cache_run_t **runs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ts_cache_run_t *run = runs[i];
        collection_t *c = run->collection < self->ncollections
                              ? &self->collections[run->collection]
                              : NULL;
        if (c)
            self->changes.watched[c->index] = true; /* its changes matter from now on */
        ts_call_t call = {.method = TS_M_QUERY, .params = run->request,
                          .collection = c ? c->name : NULL};
        self->calls[TS_M_QUERY]++;
        ts_sq_run(self->sq, &call, c ? c->q : NULL, run);
        run->err_code = call.err_code;
        run->err_message = call.err_message;
        run->result = call.result;
        run->result_len = call.result_len;
        cJSON_Delete(call.err_data);
        cJSON_Delete(call.partial);
    }
    if (ts_send_CACHE_RESULT(self->to_cache, runs, n)) {
        ts_error(LOG, "cannot pass results to the cache");
        for (size_t i = 0; i < n; i++)
            ts_cache_run_free(runs[i]);
    }
}

static void do_sync_standalone(store_t *self, ts_call_t *call)
{
    if (self->to_sync) {
        ts_call_fail(call, TS_E_INVALID_REQUEST, "%s cannot be part of a batch",
                     ts_method_name(call->method));
        return;
    }
    const char *text = call->method == TS_M_SYNC ? "{\"pushed\":0,\"pulled\":0,\"api\":\"none\"}"
                                                 : "{\"invalidated\":0}";
    ts_call_set_result(call, ts_xstrdup(text), strlen(text));
}

static void rollback(store_t *self, ts_record_t *records)
{
    for (ts_record_t *r = records; r; r = r->next) {
        collection_t *c = store_find_collection(self, r->collection);
        doc_t *d = c ? store_find_doc(c, r->doc_id) : NULL;
        if (!d || r->kind != TS_REC_MUTATION)
            continue;
        for (mutation_t **p = &d->pending; *p; p = &(*p)->next) {
            if ((*p)->seq == r->seq) {
                mutation_t *m = *p, *dropped = NULL;
                *p = m->next;
                d->npending--;
                self->pending--;
                store_recompute(self, c, d, &dropped);
                free(m);
                while (dropped) { /* later writes that depended on it fail too */
                    mutation_t *next = dropped->next;
                    free(dropped);
                    dropped = next;
                }
                break;
            }
        }
    }
    ts_record_free_list(records);
}

/* Whether the sync actor's inbox has something (the loop polls it first). */
static bool sync_waiting(store_t *self)
{
    int events = 0;
    size_t len = sizeof events;
    return self->sync_inbox && zmq_getsockopt(self->sync_inbox, ZMQ_EVENTS, &events, &len) == 0 &&
           (events & ZMQ_POLLIN);
}

/* Requests from the front door: writes go on to persist; what needs
 * nothing durable (reads, refusals) goes straight back to the front door,
 * which keeps each client's answers in order. */
static void on_requests(store_t *self, ts_envelope_t **envs, size_t n)
{
    size_t kept = 0, direct = 0;
    ts_envelope_t **reads = ts_xmalloc(n * sizeof *reads);
    for (size_t i = 0; i < n; i++) {
        ts_envelope_t *e = envs[i];
        if (!e->unordered && e->front_msg > self->seen_mark)
            self->seen_mark = e->front_msg; /* the cache's direct reads wait for it */
        if (route_sync_call(self, e) || route_cache_call(self, e))
            continue; /* the sync actor or the cache answers it */
        self->client = e->client;
        for (size_t k = 0; k < e->ncalls; k++) {
            if (e->ncalls > 1 && e->calls[k].method == TS_M_CANCEL && self->to_sync &&
                !e->calls[k].err_code)
                ts_call_fail(&e->calls[k], TS_E_INVALID_REQUEST,
                             "cancel cannot be part of a batch (it waits for the sync actor)");
            handle_call(self, &e->calls[k]);
        }
        if (self->ask_sync) { /* a cancel: the sync actor's verdict first */
            self->ask_sync = false;
            if (self->ncancels_out == self->capcancels_out) {
                self->capcancels_out = self->capcancels_out ? self->capcancels_out * 2 : 8;
                self->cancels_out = ts_xrealloc(self->cancels_out,
                                                self->capcancels_out * sizeof(uint64_t));
            }
            self->cancels_out[self->ncancels_out++] = e->front_msg;
            if (ts_send_CANCEL_ASK(self->to_sync, &e, 1) == 0)
                continue;
            self->ncancels_out--;
            ts_call_fail(&e->calls[0], TS_E_INTERNAL, "the engine is stopping");
        }
        if (e->ncalls == 1 && e->calls[0].method == TS_M_METRICS && !e->calls[0].err_code)
            to_cache(self, e); /* the cache adds its part and passes it to persist */
        else if (!needs_persist(e))
            reads[direct++] = e;
        else
            envs[kept++] = e;
    }
    self->client = NULL;
    store_stamp(self, reads, direct);
    if (direct && ts_send_ANSWERS(self->to_front, reads, direct)) {
        ts_error(LOG, "cannot pass answers to the front door");
        for (size_t i = 0; i < direct; i++)
            ts_envelope_free(reads[i]);
    }
    free(reads);
    store_maybe_publish_status(self);
    if (kept && store_send_to_persist(self, envs, kept)) {
        ts_error(LOG, "cannot pass envelopes to persist");
        for (size_t i = 0; i < kept; i++)
            ts_envelope_free(envs[i]);
    }
}

/* Cancels back from the sync actor with its verdict: dropped and rolled
 * back (never sent), or answered cancelled: false (it went out). */
static void on_cancel_verdicts(store_t *self, ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ts_envelope_t *e = envs[i];
        if (self->ncancels_out) { /* verdicts come back in the order asked */
            memmove(self->cancels_out, self->cancels_out + 1,
                    --self->ncancels_out * sizeof(uint64_t));
        }
        self->client = e->client;
        self->changes.origin = TS_CHANGE_LOCAL;
        store_do_cancel(self, &e->calls[0]);
        self->client = NULL;
        store_stamp(self, &e, 1);
        int rc = needs_persist(e) ? store_send_to_persist(self, &e, 1)
                                  : ts_send_ANSWERS(self->to_front, &e, 1);
        if (rc) {
            ts_error(LOG, "cannot pass a cancel on");
            ts_envelope_free(e);
        }
    }
}

/* Envelopes whose writes failed to commit: undone, then answered. */
static void on_rollback(store_t *self, ts_envelope_t **envs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ts_envelope_t *e = envs[i];
        for (size_t k = 0; k < e->ncalls; k++) {
            rollback(self, e->calls[k].records);
            e->calls[k].records = NULL;
        }
    }
    store_stamp(self, envs, n);
    if (ts_send_ANSWERS(self->to_front, envs, n)) {
        ts_error(LOG, "cannot pass answers to the front door");
        for (size_t i = 0; i < n; i++)
            ts_envelope_free(envs[i]);
    }
}

static int on_inbox(ts_loop_t *loop, void *socket, void *arg)
{
    store_t *self = arg;
    ts_msg_t m;
    /* Take what is queued (bounded) and pass it on as one message, so
     * persist sees large batches. */
    for (int round = 0; round < 64; round++) {
        if (round && socket == self->inbox && sync_waiting(self))
            return 0; /* a remote change must not wait for the whole backlog */
        if (ts_msg_recv(socket, round ? ZMQ_DONTWAIT : 0, &m))
            return 0;
        switch (m.kind) {
        case TS_MSG_REQUESTS:
            self->changes.origin = TS_CHANGE_LOCAL;
            on_requests(self, ts_msg_REQUESTS(&m), m.count);
            break;
        case TS_MSG_CACHE_SERVE: on_cache_serve(self, ts_msg_CACHE_SERVE(&m), m.count); break;
        case TS_MSG_SYNC_UPDATES:
            store_apply_sync_updates(self, ts_msg_SYNC_UPDATES(&m), m.count);
            break;
        case TS_MSG_CANCEL_VERDICT:
            on_cancel_verdicts(self, ts_msg_CANCEL_VERDICT(&m), m.count);
            break;
        case TS_MSG_DIGEST_ASK:
            for (size_t i = 0; i < m.count; i++)
                store_answer_digest(self, ts_msg_DIGEST_ASK(&m)[i]);
            break;
        case TS_MSG_RECOVERED:
            if (m.count == 0) {
                self->recovering = false;
                ts_msg_release(&m);
                return -1; /* ends the recovery loop */
            }
            for (ts_record_t *r = ts_msg_RECOVERED(&m)[0]->head; r; r = r->next)
                store_recover_record(self, r);
            free(ts_msg_RECOVERED(&m)[0]);
            ts_send_RECOVER_ACK(self->to_persist, NULL, 0);
            break;
        case TS_MSG_STORAGE:
            if (m.count)
                self->storage = ts_msg_STORAGE(&m)[0];
            store_maybe_publish_status(self);
            break;
        case TS_MSG_ROLLBACK:
            self->changes.origin = TS_CHANGE_LOCAL;
            on_rollback(self, ts_msg_ROLLBACK(&m), m.count);
            break;
        case TS_MSG_CACHE_RUN: on_cache_runs(self, ts_msg_CACHE_RUN(&m), m.count); break;
        default: ts_msg_unexpected(LOG, &m); continue;
        }
        ts_msg_release(&m);
        store_flush_cache(self);
    }
    (void)loop;
    return 0;
}

static void store_cleanup(store_t *self)
{
    for (size_t k = 0; k < self->ncollections; k++) {
        collection_t *c = &self->collections[k];
        for (size_t i = 0; i < c->cap; i++)
            if (c->slots[i])
                store_free_doc(doc_at(c, i));
        free(c->slots);
        free(c->hash32);
    }
    ts_buf_free(&self->scratch);
    ts_change_free_list(self->changes.head);
    for (size_t i = 0; i < self->ncache_reads; i++)
        ts_envelope_free(self->cache_reads[i]);
    free(self->cache_reads);
    free(self->cancels_out);
    if (self->to_cache)
        zmq_close(self->to_cache);
    cJSON_Delete(self->sync_status);
    while (self->snapshots) {
        base_snapshot_t *next = self->snapshots->next;
        free(self->snapshots->base);
        free(self->snapshots);
        self->snapshots = next;
    }
    if (self->to_sync)
        zmq_close(self->to_sync);
    if (self->to_front)
        zmq_close(self->to_front);
    ts_sq_destroy(&self->sq);
    if (self->events)
        zmq_close(self->events);
    if (self->inbox)
        zmq_close(self->inbox);
    if (self->sync_inbox)
        zmq_close(self->sync_inbox);
    if (self->to_persist)
        zmq_close(self->to_persist);
}

/* ---- what store_query.c sees of documents ---- */

static void sq_view(void *doc, ts_policy_doc_t *out)
{
    const doc_t *d = doc;
    out->id = d->id;
    out->id_len = d->id_len;
    out->text = d->visible;
    out->len = d->visible_len;
}

static void sq_each(void *coll, void (*fn)(void *arg, void *doc), void *arg)
{
    collection_t *c = coll;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i])
            fn(arg, doc_at(c, i));
}

/* Commands on the actor pipe: $TERM ends the loop; RELOAD reloads policies. */
static int on_pipe(ts_loop_t *loop, void *pipe, void *arg)
{
    (void)loop;
    store_t *self = arg;
    char command[64];
    if (ts_actor_read_command(pipe, 0, command, sizeof command) < 0)
        return 0;
    if (strcmp(command, "RELOAD") == 0) {
        char *text = ts_sq_reload(self->sq, NULL);
        tell_cache_selectors(self);
        store_flush_cache(self); /* its mark: reads held for it go on */
        /* The event carries the mark past the new selectors: a subscriber
         * that hears of the reload never reads an answer from before it. */
        ts_event_t *ev = text ? ts_event_new("policy", text, strlen(text)) : NULL;
        cJSON_free(text);
        if (ev)
            ev->mark = self->changes.mark;
        if (ev && ts_send_EVENTS(self->events, &ev, 1))
            ts_event_free_list(ev);
        return 0;
    }
    return strcmp(command, "$TERM") == 0 ? -1 : 0;
}

static void store_actor(ts_actor_t *actor, void *args)
{
    store_t self = {.config = args, .started_us = ts_mono_us()};
    void *zctx = ts_actor_zctx(actor);
    ts_loop_t *loop = ts_loop_new();
    for (size_t i = 0; i < self.config->ncollections; i++) {
        collection_t *c = &self.collections[self.ncollections++];
        c->name = self.config->collections[i];
        snprintf(c->topic, sizeof c->topic, "doc.%s", c->name);
        c->changes = &self.changes;
        c->index = (uint16_t)i;
        self.changes.watched[i] = self.config->ondemand[i].on;
    }
    self.inbox = ts_inproc_socket(zctx, ZMQ_PULL, TS_INPROC_STORE, true);
    self.to_persist = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_PERSIST, false);
    self.events = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_EVENTS, false);
    self.to_front = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_FRONT, false);
    self.to_cache = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_CACHE, false);
    if (self.config->api_url) {
        self.to_sync = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_SYNC, false);
        self.sync_inbox = ts_inproc_socket(zctx, ZMQ_PULL, TS_INPROC_STORE_SYNC, true);
    }
    if (!loop || !self.inbox || !self.to_persist || !self.events || !self.to_front ||
        !self.to_cache ||
        (self.config->api_url && (!self.to_sync || !self.sync_inbox))) {
        ts_error(LOG, "cannot set up sockets: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    char err[2048];
    ts_sq_hooks_t hooks = {sq_view, sq_each};
    if (!(self.sq = ts_sq_new(self.config, &hooks, err, sizeof err))) {
        ts_error(LOG, "cannot start: %s", err);
        goto done;
    }
    for (size_t i = 0; i < self.ncollections; i++)
        self.collections[i].q = ts_sq_attach(self.sq, self.collections[i].name, &self.collections[i]);
    /* Load the durable state before saying ready. */
    int64_t start = ts_mono_us();
    self.recovering = true;
    ts_sq_bulk(self.sq, true); /* indexes sorted once at the end */
    if (ts_send_RECOVER(self.to_persist, NULL, 0))
        goto done;
    while (self.recovering)
        if (on_inbox(loop, self.inbox, &self) < 0 && self.recovering)
            goto done;
    ts_sq_bulk(self.sq, false);
    self.changes.on = true;
    tell_cache_selectors(&self);
    store_flush_cache(&self);
    size_t docs = 0;
    for (size_t i = 0; i < self.ncollections; i++)
        docs += self.collections[i].live;
    ts_info(LOG, "loaded %zu documents, %zu pending mutations in %.3f s", docs, self.pending,
            (ts_mono_us() - start) / 1e6);
    self.last_pending_zero = self.pending == 0;
    if (self.to_sync)
        store_hand_outbox_to_sync(&self);
    ts_loop_reader(loop, ts_actor_pipe(actor), on_pipe, &self);
    if (self.sync_inbox) /* first: remote changes go ahead of the front door's backlog */
        ts_loop_reader(loop, self.sync_inbox, on_inbox, &self);
    ts_loop_reader(loop, self.inbox, on_inbox, &self);
    ts_actor_ready(actor, 0);
    ts_loop_run(loop);
    ts_info(LOG, "stopping: %" PRIu64 " writes confirmed, %" PRIu64 " remote changes applied",
            self.confirmed, self.remote_applied);
    ts_actor_quiesce(actor);
    ts_msg_drain(self.inbox); /* unanswered writes; sync outcomes replay from the outbox */
    ts_msg_drain(self.sync_inbox);
done:
    ts_loop_destroy(&loop);
    store_cleanup(&self);
}

ts_actor_t *ts_store_start(void *zctx, const ts_config_t *config)
{
    return ts_actor_new(zctx, "store", store_actor, (void *)config);
}
