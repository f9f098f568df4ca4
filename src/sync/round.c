/* round.c — the `sync` and `invalidate` calls: a round waits until the push
 * queue is idle and a drain of the feed is done (sync), or until every
 * collection is listed again (invalidate), or its deadline; then it answers
 * the front door. Also the answers to list pages (invalidate and checks). */
#include "sync_int.h"

static void round_answer(sync_t *self, round_t *rd, bool timed_out)
{
    char text[160];
    int len;
    if (rd->invalidate)
        len = snprintf(text, sizeof text, "{\"invalidated\":%" PRIu64 "}", rd->invalidated);
    else
        len = snprintf(text, sizeof text, "{\"pushed\":%" PRIu64 ",\"pulled\":%" PRIu64 "%s}",
                       self->pushed - rd->pushed0, self->pulled - rd->pulled0,
                       timed_out ? ",\"timed_out\":true" : "");
    ts_call_set_result(rd->call, ts_xstrndup(text, (size_t)len), (size_t)len);
    /* Behind the updates it waited for, not straight to the front door:
     * the store applies them first, so the client's next read sees them. */
    sync_emit(self, TS_SYNC_ANSWER, NULL)->answer = rd->envelope;
    rd->envelope = NULL;
    sync_flush(self);
    if (!rd->invalidate)
        sync_checks_start_all(self); /* after the round, when drift means something */
}

static void invalidate_next(sync_t *self, round_t *rd)
{
    while (rd->next_coll >= 0 && (size_t)rd->next_coll < self->config->ncollections &&
           self->config->ondemand[rd->next_coll].on)
        rd->next_coll++; /* on demand: the cache refetches what it holds */
    if (rd->next_coll < 0 || (size_t)rd->next_coll >= self->config->ncollections) {
        rd->listing = false;
        return;
    }
    ts_copy_text(rd->coll, sizeof rd->coll, self->config->collections[rd->next_coll++]);
    rd->listing = true;
    sync_list_page(self, NULL, rd, rd->coll, "0");
}

void sync_on_sync_call(sync_t *self, ts_envelope_t *e)
{
    ts_call_t *call = NULL;
    for (size_t i = 0; i < e->ncalls; i++)
        if (ts_method_info(e->calls[i].method)->owner == TS_OWNER_SYNC)
            call = &e->calls[i];
    round_t *rd = call ? ts_xcalloc(1, sizeof *rd) : NULL;
    if (!rd) { /* no sync call in it: nothing to run */
        if (ts_send_ANSWERS(self->to_front, &e, 1))
            ts_envelope_free(e);
        return;
    }
    rd->envelope = e;
    rd->call = call;
    rd->invalidate = call->method == TS_M_INVALIDATE;
    rd->deadline_us = ts_mono_us() + ROUND_TIMEOUT_US;
    rd->pushed0 = self->pushed;
    rd->pulled0 = self->pulled;
    rd->next = self->rounds;
    self->rounds = rd;
    if (rd->invalidate) {
        const char *coll = ts_json_string(call->params, "collection");
        int idx = coll ? ts_config_collection(self->config, coll) : 0;
        if (idx < 0) {
            rd->next_coll = -1;
        } else if (coll) {
            rd->next_coll = idx;
            invalidate_next(self, rd);
            rd->next_coll = -1; /* only this one */
            return;
        } else {
            rd->next_coll = 0;
        }
        invalidate_next(self, rd);
        return;
    }
    /* A `sync` call means "now": waiting heads go at once. */
    for (size_t i = 0; i < self->nwaiting; i++)
        self->waiting[i]->due_us = 0;
    sync_push_wake(self, ts_mono_us());
    if (self->conn == C_OFFLINE)
        self->probe_due_us = ts_mono_us();
}

static bool push_idle(sync_t *self)
{
    if (self->conn == C_OFFLINE || self->in_flight == 0) {
        /* heads that are ready but cannot go (offline) do not hold a round */
        if (self->conn == C_OFFLINE)
            return true;
        for (size_t i = 0; i < self->heap_len; i++) {
            mut_t *m = self->heap[i].doc->head;
            if (m && m->seq == self->heap[i].seq && m->state == M_QUEUED)
                return false;
        }
        return true;
    }
    return false;
}

void sync_rounds_progress(sync_t *self)
{
    int64_t now = ts_mono_us();
    for (round_t **p = &self->rounds; *p;) {
        round_t *rd = *p;
        bool done, timed_out = now >= rd->deadline_us;
        if (rd->invalidate) {
            done = !rd->listing;
        } else {
            if (!rd->push_done && push_idle(self))
                rd->push_done = true;
            if (!rd->drain_started && rd->push_done) {
                rd->drain_started = true;
                if (self->conn == C_OFFLINE)
                    rd->pull_done = true;
                else if (!self->drain_id)
                    sync_feed_request(self, true, 0);
            }
            done = rd->push_done && rd->pull_done;
        }
        if (done || timed_out) {
            *p = rd->next;
            round_answer(self, rd, !done);
            free(rd);
        } else {
            p = &rd->next;
        }
    }
}

void sync_on_drain(sync_t *self, ts_api_result_t *res)
{
    self->drain_id = 0;
    sync_conn_note(self, res, "drain");
    bool more = res->error == TS_API_OK && sync_apply_changes_page(self, res->json);
    if (more && self->conn != C_OFFLINE) {
        sync_feed_request(self, true, 0);
        return;
    }
    for (round_t *rd = self->rounds; rd; rd = rd->next)
        if (rd->drain_started)
            rd->pull_done = true;
}

void sync_on_list(sync_t *self, ts_api_result_t *res, req_t *r)
{
    sync_conn_note(self, res, "list");
    check_t *k = r->check;
    round_t *rd = r->round;
    if (rd) { /* the round may have been answered (timeout) and freed */
        round_t *x = self->rounds;
        while (x && x != rd)
            x = x->next;
        rd = x;
    }
    if (res->error != TS_API_OK) {
        if (k)
            sync_check_finish(self, k);
        if (rd)
            rd->listing = false;
        return;
    }
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(res->json, "items"), *it;
    const char *cursor = ts_json_string(res->json, "cursor");
    bool more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res->json, "has_more"));
    if (k && k->phase == K_SERVER_LIST) {
        cJSON_ArrayForEach(it, items) cJSON_AddItemToArray(k->items, cJSON_Duplicate(it, 1));
        if (more && cursor)
            sync_list_page(self, k, NULL, self->config->collections[k->coll], cursor);
        else
            sync_check_repair(self, k);
    } else if (rd) {
        /* a refetch repairs too: a body changed at the same version is replaced */
        self->repairing = self->refetching = true;
        cJSON_ArrayForEach(it, items) rd->invalidated += sync_apply_change(self, rd->coll, it);
        self->repairing = self->refetching = false;
        sync_flush(self);
        if (more && cursor)
            sync_list_page(self, NULL, rd, rd->coll, cursor);
        else
            invalidate_next(self, rd);
    }
}
