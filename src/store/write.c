/* write.c — the write path: create, update, delete (validated by the
 * policy first, applied to memory at once) and cancel; the durable records
 * and the events a call carries. A write enters its document's pending
 * list here; apply.c takes it out when the server answers. */
#include "store_int.h"

/* ---- results and events ---- */

static void append_sync(ts_buf_t *b, const doc_t *d)
{
    const mutation_t *last = d->pending;
    while (last && last->next)
        last = last->next;
    ts_buf_puts(b, "\"sync\":{\"state\":");
    ts_buf_puts(b, d->npending ? "\"pending\"" : "\"synced\"");
    ts_buf_puts(b, ",\"mutation\":");
    if (last) {
        char id[37];
        ts_uuid_format(last->id, id);
        ts_buf_json_string(b, id, 36);
    } else
        ts_buf_puts(b, "null");
    ts_buf_puts(b, ",\"pending\":");
    ts_buf_int(b, d->npending);
    ts_buf_puts(b, "}");
}

void store_set_doc_result(ts_call_t *call, const doc_t *d, bool with_doc)
{
    ts_buf_t b = {0};
    ts_buf_reserve(&b, d->visible_len + 160);
    if (with_doc) {
        ts_buf_puts(&b, "{\"doc\":");
        store_append_doc(&b, d);
    } else {
        ts_buf_puts(&b, "{\"id\":");
        ts_buf_json_string(&b, d->id, d->id_len);
    }
    ts_buf_puts(&b, ",");
    append_sync(&b, d);
    ts_buf_puts(&b, "}");
    ts_call_set_buffer(call, &b);
}

void store_add_event(ts_call_t *call, const char *topic, const char *payload, size_t len)
{
    ts_event_t *e = ts_event_new(topic, payload, len);
    ts_event_t **p = &call->events;
    while (*p)
        p = &(*p)->next;
    *p = e;
}

/* The number of the next message to persist. Numbers wrap, skipping 0,
 * which stands for "none". */
uint32_t store_next_batch(const store_t *self)
{
    return self->persist_batch + 1 ? self->persist_batch + 1 : 1;
}

/* A document's events travel in the next message to persist (see
 * publish_remote_change). */
void store_note_event(store_t *self, doc_t *d)
{
    d->event_batch = store_next_batch(self);
}

/* The doc.changed notification of d into b. */
void store_doc_changed_text(ts_buf_t *b, const collection_t *c, const doc_t *d,
                      const char *origin)
{
    ts_buf_reserve(b, d->visible_len + 256);
    ts_buf_puts(b, "{\"jsonrpc\":\"2.0\",\"method\":\"doc.changed\",\"params\":{\"collection\":");
    ts_buf_json_string(b, c->name, strlen(c->name));
    ts_buf_puts(b, ",\"id\":");
    ts_buf_json_string(b, d->id, d->id_len);
    ts_buf_puts(b, ",\"doc\":");
    store_append_doc(b, d);
    ts_buf_puts(b, ",\"origin\":\"");
    ts_buf_puts(b, origin);
    ts_buf_puts(b, d->visible ? "\",\"deleted\":false}}" : "\",\"deleted\":true}}");
}

void store_add_doc_changed_from(store_t *self, ts_call_t *call, const collection_t *c, doc_t *d,
                          const char *origin)
{
    ts_buf_t b = {0};
    store_doc_changed_text(&b, c, d, origin);
    store_add_event(call, c->topic, b.data, b.len);
    ts_buf_free(&b);
    store_note_event(self, d);
}

static void add_doc_changed(store_t *self, ts_call_t *call, const collection_t *c, doc_t *d)
{
    store_add_doc_changed_from(self, call, c, d, "local");
}

/* Records are made durable in the order they were attached. */
void store_append_record(ts_call_t *call, ts_record_t *r)
{
    ts_record_t **p = &call->records;
    while (*p)
        p = &(*p)->next;
    *p = r;
}

/* Attaches the durable record of a new mutation to the call. */
void store_add_mutation_record(ts_call_t *call, const collection_t *c, const doc_t *d,
                         const mutation_t *m, const char *self_client)
{
    ts_record_t *r = ts_record_new(TS_REC_MUTATION, c->name, d->id, d->id_len,
                                   m->op == TS_OP_DELETE ? NULL : m->body, m->body_len);
    r->op = (ts_op_t)m->op;
    r->seq = m->seq;
    r->version = m->base_version;
    r->at_ms = m->at_ms;
    ts_uuid_format(m->id, r->mutation);
    ts_copy_text(r->client, sizeof r->client, self_client);
    store_append_record(call, r);
}

void store_add_drop_record(ts_call_t *call, const collection_t *c, const doc_t *d,
                     const mutation_t *m)
{
    ts_record_t *r = ts_record_new(TS_REC_DROP, c->name, d->id, d->id_len, NULL, 0);
    r->seq = m->seq;
    ts_uuid_format(m->id, r->mutation);
    r->next = call->records;
    call->records = r;
}

/* The server answered one of our writes to d (confirmed, or a conflict
 * showing its current version): the later writes go out with If-Match
 * `version` now (the sync actor's rule). That must be durable with the
 * answer, in the same commit, so that a write re-sent after a crash is the
 * very request first sent: the server matches a retried idempotency key
 * by its request, and a different If-Match would be a different request. */
void store_raise_if_match(ts_call_t *call, const collection_t *c, const doc_t *d,
                    int64_t version)
{
    for (mutation_t *m = d->pending; m; m = m->next) {
        if (m->base_version >= version)
            continue;
        ts_record_t *r = ts_record_new(TS_REC_MATCH, c->name, d->id, d->id_len, NULL, 0);
        m->base_version = version;
        r->seq = m->seq;
        r->version = version;
        ts_uuid_format(m->id, r->mutation);
        store_append_record(call, r);
    }
}

/* Appends one audit line (never a document) to the call's records. */
void store_add_audit(ts_call_t *call, const collection_t *c, const doc_t *d,
               const mutation_t *m, const char *event, const char *client,
               int64_t version, const char *reason)
{
    ts_record_t *r =
        ts_record_new(TS_REC_AUDIT, c->name, d->id, d->id_len, reason, reason ? strlen(reason) : 0);
    r->at_ms = ts_wall_ms();
    if (m)
        ts_uuid_format(m->id, r->mutation);
    else
        r->mutation[0] = '\0'; /* the server's change: no local mutation */
    ts_copy_text(r->event, sizeof r->event, event);
    ts_copy_text(r->client, sizeof r->client, client);
    r->version = version;
    store_append_record(call, r);
}

static mutation_t *new_local_mutation(store_t *self, ts_op_t op, const char *body, size_t len,
                                      int64_t base_version)
{
    mutation_t *m = store_mutation_new(op, body, len);
    m->seq = ++self->seq;
    m->base_version = base_version;
    m->at_ms = ts_wall_ms();
    ts_uuidv7_bytes(m->id);
    return m;
}

/* Commits a new mutation to memory and to the call: the caller has checked
 * it applies. visible: what it makes of the document when the caller has
 * it already (taken over), else NULL. */
static void accept_mutation(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                            mutation_t *m, char *visible, size_t visible_len)
{
    if (d->npending >= TS_MAX_PENDING_PER_DOC) {
        free(visible);
        free(m);
        ts_call_fail(call, TS_E_BUSY,
                     "the document has %d writes waiting to sync; retry once they have synced",
                     TS_MAX_PENDING_PER_DOC);
        return;
    }
    store_append_mutation(self, d, m);
    if (visible)
        store_set_visible(c, d, visible, visible_len, VISIBLE_OWNED);
    else
        store_apply_mutation(self, c, d, m); /* a create or a delete: it cannot fail */
    store_add_mutation_record(call, c, d, m, self->client);
    /* Its "accepted" audit line is the outbox row itself (see persist.c). */
    store_set_doc_result(call, d, m->op != TS_OP_DELETE);
    add_doc_changed(self, call, c, d);
}

/* ---- methods ---- */

void store_do_create(store_t *self, ts_call_t *call, collection_t *c)
{
    /* The front door has checked the doc and its id and left the doc's
     * text, without its id and server fields, in call->body. */
    char made[37];
    const char *id = call->doc_id;
    if (!id) {
        ts_uuidv7(made);
        id = made;
    }
    doc_t *existing = store_find_doc(c, id);
    if (existing && existing->visible) {
        ts_call_fail(call, TS_E_CONFLICT, "%s/%s already exists", c->name, id);
        return;
    }
    ts_policy_doc_t text = {id, strlen(id), call->body, call->body_len};
    if (ts_sq_validate_text(self->sq, call, c->name, &text, NULL))
        return;
    mutation_t *m = new_local_mutation(self, TS_OP_CREATE, call->body, call->body_len, 0);
    doc_t *d = store_get_or_add_doc(c, id, strlen(id));
    if (!d) { /* its memory outside 48 bits (store_get_or_add_doc says so) */
        free(m);
        ts_call_fail(call, TS_E_INTERNAL, "%s/%s cannot be stored", c->name, id);
        return;
    }
    accept_mutation(self, call, c, d, m, NULL, 0);
}

/* The document an update makes of d, its visible one with patch merged,
 * as text without its id: validated first (ctx.previous the visible one)
 * when the collection has a validator. Merged on the texts (call->body is
 * the patch's) unless the patch needs the trees: a nested object, say. The
 * text, or NULL with the call failed. Made once: the store keeps it as the
 * new visible text. */
static char *updated_text(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                          size_t *len)
{
    ts_buf_reset(&self->scratch);
    int merged_text = ts_json_text_merge(&self->scratch, d->visible, d->visible_len, call->body,
                                         call->body_len);
    if (merged_text == 0) {
        ts_policy_doc_t after = {d->id, d->id_len, self->scratch.data, self->scratch.len};
        ts_policy_doc_t before = {d->id, d->id_len, d->visible, d->visible_len};
        if (ts_sq_validate_text(self->sq, call, c->name, &after, &before))
            return NULL;
        *len = after.len;
        return ts_memdup(after.text, after.len); /* JSON: no NUL inside */
    }
    bool validate = ts_sq_validates(self->sq, c->name);
    cJSON *previous = validate ? store_parse_doc(d) : NULL;
    cJSON *merged = validate ? (previous ? cJSON_Duplicate(previous, true) : NULL)
                             : cJSON_ParseWithLength(d->visible, d->visible_len);
    cJSON *patch = cJSON_ParseWithLength(call->body, call->body_len); /* as the front door left it */
    if (merged && patch) {
        merged = ts_json_merge_patch(merged, patch);
    } else {
        cJSON_Delete(merged);
        merged = NULL;
    }
    cJSON_Delete(patch);
    char *text = NULL;
    if (!merged) {
        ts_call_fail(call, TS_E_INTERNAL, "the document or the patch does not parse");
    } else if (!validate || ts_sq_validate(self->sq, call, c->name, merged, previous) == 0) {
        cJSON_DeleteItemFromObjectCaseSensitive(merged, "id"); /* kept in doc_t */
        if (!(text = store_print_doc(self, merged, len)))
            ts_call_fail(call, TS_E_INTERNAL, "the merged document does not print");
    }
    cJSON_Delete(merged);
    cJSON_Delete(previous);
    return text;
}

void store_do_update(store_t *self, ts_call_t *call, collection_t *c)
{
    const char *id = call->doc_id;
    doc_t *d = store_find_doc(c, id);
    if (!d || !d->visible) {
        ts_call_fail(call, TS_E_NOT_FOUND, "no document %s/%s", c->name, id);
        return;
    }
    if (call->has_base_version && call->base_version != doc_version(d)) {
        ts_call_fail(call, TS_E_CONFLICT, "base_version %lld is stale: the document is at %lld",
                     call->base_version, (long long)doc_version(d));
        call->err_data = cJSON_CreateObject();
        cJSON_AddNumberToObject(call->err_data, "current_version", (double)doc_version(d));
        return;
    }
    /* The front door took out the patch's id and server fields. */
    size_t len;
    char *visible = updated_text(self, call, c, d, &len);
    if (!visible)
        return;
    mutation_t *m = new_local_mutation(self, TS_OP_UPDATE, call->body, call->body_len,
                                       doc_version(d));
    accept_mutation(self, call, c, d, m, visible, len);
}

void store_do_delete(store_t *self, ts_call_t *call, collection_t *c)
{
    const char *id = call->doc_id;
    doc_t *d = store_find_doc(c, id);
    if (!d || !d->visible) {
        ts_call_fail(call, TS_E_NOT_FOUND, "no document %s/%s", c->name, id);
        return;
    }
    mutation_t *m = new_local_mutation(self, TS_OP_DELETE, "", 0, doc_version(d));
    accept_mutation(self, call, c, d, m, NULL, 0);
}

/* Finds a pending mutation by id (a scan: cancel is rare). */
static mutation_t *find_mutation(store_t *self, const uint8_t id[16], collection_t **cp,
                                 doc_t **dp)
{
    for (size_t k = 0; k < self->ncollections; k++) {
        collection_t *c = &self->collections[k];
        for (size_t i = 0; i < c->cap; i++) {
            doc_t *d = doc_at(c, i);
            for (mutation_t *m = d ? d->pending : NULL; m; m = m->next) {
                if (memcmp(m->id, id, 16) == 0) {
                    *cp = c, *dp = d;
                    return m;
                }
            }
        }
    }
    return NULL;
}

void store_do_cancel(store_t *self, ts_call_t *call)
{
    const char *text = ts_json_string(call->params, "mutation");
    uint8_t id[16];
    collection_t *c;
    doc_t *d;
    mutation_t *m = store_uuid_parse(text, id) ? NULL : find_mutation(self, id, &c, &d);
    if (!m) {
        static const char none[] = "{\"cancelled\":false,\"reason\":\"not_pending\",\"doc\":null}";
        ts_call_set_result(call, ts_xstrdup(none), sizeof none - 1);
        return;
    }
    if (self->to_sync && call->cancel_verdict == TS_CANCEL_UNASKED) {
        /* Only the sync actor knows whether it went out: ask it first
         * (on_requests passes the envelope on; its verdict comes back). */
        call->cancel_seq = m->seq;
        call->collection = c->name;
        free(call->doc_id);
        call->doc_id = ts_xstrndup(d->id, d->id_len);
        self->ask_sync = true;
        return;
    }
    if (call->cancel_verdict == TS_CANCEL_SENT) {
        /* The server may have applied it: say so, record nothing. */
        ts_buf_t b = {0};
        ts_buf_puts(&b, "{\"cancelled\":false,\"reason\":\"in_flight\",\"doc\":");
        store_append_doc(&b, d);
        ts_buf_puts(&b, "}");
        ts_call_set_buffer(call, &b);
        return;
    }
    /* Never sent (withheld by the sync actor, or no API): drop it and roll back. */
    mutation_t **p = &d->pending;
    while (*p != m)
        p = &(*p)->next;
    *p = m->next;
    d->npending--;
    self->pending--;
    mutation_t *dropped = NULL;
    store_recompute(self, c, d, &dropped);
    m->next = dropped;
    for (mutation_t *x = m; x; x = x->next) {
        store_add_drop_record(call, c, d, x);
        store_add_audit(call, c, d, x, "cancelled", self->client, 0,
                  x == m ? "cancelled before it was sent" : "depended on a cancelled mutation");
    }
    while (m) {
        mutation_t *next = m->next;
        free(m);
        m = next;
    }
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"cancelled\":true,\"doc\":");
    store_append_doc(&b, d);
    ts_buf_puts(&b, "}");
    ts_call_set_buffer(call, &b);
    add_doc_changed(self, call, c, d);
    store_forget_base_if_settled(self, d);
}
