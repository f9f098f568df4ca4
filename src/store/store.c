/* store.c — the store actor: documents, pending mutations, reads and writes. */
#include "store_int.h"
#include "therasync/sha256.h"
#include <zmq.h>

/* A remote change is durable at the server already, so its doc.changed
 * does not wait for the local commit (a crash before it only means the
 * change is pulled again): it goes straight to the front door. To keep one
 * document's events in order, the front door publishes it only once the
 * persist batch that carried the document's previous event is out. */
static void publish_remote_change(store_t *self, const collection_t *c, const doc_t *d)
{
    ts_buf_t b = {0};
    doc_changed_text(&b, c, d, "remote");
    ts_event_t *ev = b.data ? ts_event_new(c->topic, b.data, b.len) : NULL;
    ts_buf_free(&b);
    if (!ev)
        return;
    /* A batch sent this long ago is out for sure (persist's queue is
     * bounded); its number could be confused with a new one after a wrap. */
    ev->after = d->event_batch && next_batch(self) - d->event_batch < (1u << 20)
                    ? d->event_batch
                    : 0;
    if (ts_send_EVENTS(self->events, &ev, 1)) {
        ts_warn(LOG, "cannot publish a remote change: %s", zmq_strerror(zmq_errno()));
        ts_event_free_list(ev);
    }
}

static void do_sync_standalone(store_t *self, ts_call_t *call);

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
    collection_t *c = find_collection(self, call->collection);
    switch (call->method) {
    case TS_M_CREATE: do_create(self, call, c); break;
    case TS_M_UPDATE: do_update(self, call, c); break;
    case TS_M_DELETE: do_delete(self, call, c); break;
    case TS_M_GET: do_get(call, c); break;
    case TS_M_QUERY:
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(call->params, "selector")))
            ts_sq_query(self->sq, call, c ? c->q : NULL);
        else
            do_query(self, call, c);
        break;
    case TS_M_POLICY_RELOAD: ts_sq_reload(self->sq, call, NULL); break;
    case TS_M_POLICY_INFO: ts_sq_info(self->sq, call); break;
    case TS_M_CANCEL: do_cancel(self, call); break;
    case TS_M_STATUS: do_status(self, call); break;
    case TS_M_METRICS: do_metrics(self, call); break;
    case TS_M_SYNC:
    case TS_M_INVALIDATE: do_sync_standalone(self, call); break;
    case TS_M_AUDIT: break; /* answered by persist, which owns the audit table */
    default:
        ts_call_fail(call, TS_E_NO_METHOD, "%s is not available in this build",
                     ts_method_name(call->method));
    }
    if (call->err_code && ts_method_is(call->method, TS_MF_WRITE))
        self->rejected_writes++;
}

static base_snapshot_t **find_snapshot(store_t *self, const doc_t *d)
{
    base_snapshot_t **p = &self->snapshots;
    while (*p && (*p)->doc != d)
        p = &(*p)->next;
    return p;
}

/* Keeps d's current confirmed version as the base of its pending writes
 * (the first one only: later rebases keep the oldest base). */
static void remember_base(store_t *self, doc_t *d)
{
    if (!d->pending || !d->confirmed || *find_snapshot(self, d))
        return;
    base_snapshot_t *snap = malloc(sizeof *snap);
    size_t size = sizeof *d->confirmed + d->confirmed->len + 1;
    confirmed_t *copy = snap ? malloc(size) : NULL;
    if (!copy) {
        free(snap);
        return;
    }
    memcpy(copy, d->confirmed, size);
    *snap = (base_snapshot_t){self->snapshots, d, copy};
    self->snapshots = snap;
}

void forget_base_if_settled(store_t *self, const doc_t *d)
{
    base_snapshot_t **p = find_snapshot(self, d);
    if (!*p || d->pending)
        return;
    base_snapshot_t *snap = *p;
    *p = snap->next;
    free(snap->base);
    free(snap);
}

/* Unlinks the pending mutation with this seq; NULL when it is not there. */
static mutation_t *take_mutation(store_t *self, doc_t *d, int64_t seq)
{
    for (mutation_t **p = &d->pending; *p; p = &(*p)->next) {
        if ((*p)->seq == seq) {
            mutation_t *m = *p;
            *p = m->next;
            m->next = NULL;
            d->npending--;
            self->pending--;
            return m;
        }
    }
    return NULL;
}

/* Sets the server's version of a document: doc with or without its id
 * (NULL or deleted = a tombstone). Returns 0 or -1 (no memory). */
static int set_confirmed(store_t *self, collection_t *c, doc_t *d, cJSON *doc, int64_t version)
{
    size_t len = 0;
    const char *text = "";
    if (doc && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "deleted"))) {
        /* printed without its id (kept in doc_t), which goes back after */
        cJSON *id = cJSON_DetachItemFromObjectCaseSensitive(doc, "id");
        text = print_scratch(self, doc, &len);
        if (id)
            cJSON_AddItemToObject(doc, "id", id);
        if (!text)
            return -1;
    }
    confirmed_t *conf = malloc(sizeof *conf + len + 1);
    if (!conf)
        return -1;
    conf->version = version;
    conf->len = (uint32_t)len;
    memcpy(conf->text, text, len + 1);
    if (d->visible_kind == VISIBLE_IS_CONFIRMED)
        set_visible(c, d, NULL, 0, VISIBLE_OWNED); /* it points into the old one */
    free(d->confirmed);
    d->confirmed = conf;
    return 0;
}

static void add_confirmed_record(ts_call_t *call, const collection_t *c, const doc_t *d)
{
    const confirmed_t *conf = d->confirmed;
    ts_record_t *r = ts_record_new(TS_REC_CONFIRMED, c->name, d->id, d->id_len,
                                   conf && conf->len ? conf->text : NULL, conf ? conf->len : 0);
    if (!r)
        return;
    r->version = doc_version(d);
    append_record(call, r);
}

static void add_event_json(ts_call_t *call, const char *topic, const char *method, cJSON *params)
{
    cJSON *event = cJSON_CreateObject();
    cJSON_AddStringToObject(event, "jsonrpc", "2.0");
    cJSON_AddStringToObject(event, "method", method);
    cJSON_AddItemToObject(event, "params", params);
    char *text = cJSON_PrintUnformatted(event);
    if (text)
        add_event(call, topic, text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(event);
}

static cJSON *doc_or_null(const doc_t *d)
{
    cJSON *doc = parse_doc(d);
    return doc ? doc : cJSON_CreateNull();
}

/* A mutation the server refused (or a conflict policy dropped): durable
 * drop, audit line, mutation.rejected with the rolled-back document. */
static void reject_mutation(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                            mutation_t *m, const char *reason, const char *message,
                            const cJSON *errors)
{
    self->rejected++;
    note_event(self, d);
    add_drop_record(call, c, d, m);
    char line[320];
    snprintf(line, sizeof line, "%s: %s", reason, message ? message : "");
    add_audit(call, c, d, m, "rejected", NULL, doc_version(d), line);
    char id[37];
    ts_uuid_format(m->id, id);
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "mutation", id);
    cJSON_AddStringToObject(params, "collection", c->name);
    char doc_id[65];
    memcpy(doc_id, d->id, d->id_len);
    doc_id[d->id_len] = '\0';
    cJSON_AddStringToObject(params, "id", doc_id);
    cJSON *error = cJSON_AddObjectToObject(params, "error");
    cJSON_AddStringToObject(error, "reason", reason);
    cJSON_AddStringToObject(error, "message", message ? message : reason);
    if (errors)
        cJSON_AddItemToObject(error, "errors", cJSON_Duplicate(errors, 1));
    cJSON_AddItemToObject(params, "doc", doc_or_null(d));
    add_event_json(call, "mutation", "mutation.rejected", params);
}

/* Rebuilds the visible document and rejects what no longer applies. */
static void recompute_and_reject(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                                 const char *why)
{
    mutation_t *dropped = NULL;
    recompute(self, c, d, &dropped);
    while (dropped) {
        mutation_t *next = dropped->next;
        reject_mutation(self, call, c, d, dropped, "rolled_back", why, NULL);
        free(dropped);
        dropped = next;
    }
}

static void add_doc_changed_remote(store_t *self, ts_call_t *call, const collection_t *c,
                                   doc_t *d)
{
    add_doc_changed_from(self, call, c, d, "remote");
}

static int64_t version_of(const ts_sync_update_t *u)
{
    long long v;
    if (u->doc && ts_json_int(u->doc, "version", &v))
        return v;
    return u->version;
}

/* The audit line "sent" of a write's first send, whether or not the write
 * is still pending (it may have been cancelled while in flight). */
static void add_sent_audit(ts_call_t *call, const ts_sync_update_t *u)
{
    ts_record_t *r =
        ts_record_new(TS_REC_AUDIT, u->collection, u->doc_id, strlen(u->doc_id), NULL, 0);
    if (!r)
        return;
    r->at_ms = u->sent_ms;
    memcpy(r->mutation, u->mutation, sizeof r->mutation);
    ts_copy_text(r->event, sizeof r->event, "sent");
    r->version = u->sent_version;
    append_record(call, r);
}

/* The confirmed mutation leaves the outbox with its whole audit life in one
 * row: accepted (from the outbox), its first send when reported with this
 * answer, and "confirmed" (see TS_REC_DROP). */
static void add_confirmed_drop(ts_call_t *call, const collection_t *c, const doc_t *d,
                               const mutation_t *m, int64_t version, const ts_sync_update_t *u)
{
    if (add_drop_record(call, c, d, m))
        return;
    ts_record_t *r = call->records; /* add_drop_record puts it first */
    ts_copy_text(r->event, sizeof r->event, "confirmed");
    r->at_ms = ts_wall_ms();
    r->version = version;
    r->sent_ms = u->sent_ms;
    r->sent_version = u->sent_version;
}

static void sync_confirmed(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                           const ts_sync_update_t *u)
{
    mutation_t *m = take_mutation(self, d, u->seq);
    if (!m && u->sent_ms)
        add_sent_audit(call, u); /* no outcome row to carry it */
    int64_t version = version_of(u);
    if (version >= doc_version(d) && set_confirmed(self, c, d, u->doc, version) == 0)
        add_confirmed_record(call, c, d);
    recompute_and_reject(self, call, c, d, "no longer applies after the server's answer");
    raise_if_match(call, c, d, version);
    if (m) {
        self->confirmed++;
        add_confirmed_drop(call, c, d, m, version, u);
        char id[37];
        ts_uuid_format(m->id, id);
        ts_buf_t b = {0};
        ts_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"mutation.confirmed\",\"params\":"
                        "{\"mutation\":");
        ts_buf_json_string(&b, id, 36);
        ts_buf_puts(&b, ",\"collection\":");
        ts_buf_json_string(&b, c->name, strlen(c->name));
        ts_buf_puts(&b, ",\"id\":");
        ts_buf_json_string(&b, d->id, d->id_len);
        ts_buf_puts(&b, ",\"version\":");
        ts_buf_int(&b, version);
        ts_buf_puts(&b, ",\"pending\":");
        ts_buf_int(&b, d->npending);
        ts_buf_puts(&b, "}}");
        if (b.data)
            add_event(call, "mutation", b.data, b.len);
        ts_buf_free(&b);
        free(m);
    }
    add_doc_changed_remote(self, call, c, d);
}

/* Rolls back m (already taken out of d's pending list) and every later
 * write that no longer applies without it, each with its event. */
static void drop_with_dependents(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                                 mutation_t *m, const char *reason, const char *message,
                                 const cJSON *errors, const char *dependent_message)
{
    m->next = NULL;
    recompute(self, c, d, &m->next); /* collects the dependents after m */
    mutation_t *dependents = m->next;
    m->next = NULL;
    reject_mutation(self, call, c, d, m, reason, message, errors);
    free(m);
    while (dependents) {
        mutation_t *next = dependents->next;
        reject_mutation(self, call, c, d, dependents, "rolled_back", dependent_message, NULL);
        free(dependents);
        dependents = next;
    }
}

static void sync_rejected(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                          const ts_sync_update_t *u)
{
    mutation_t *m = take_mutation(self, d, u->seq);
    if (!m)
        return; /* already gone (cancelled) */
    drop_with_dependents(self, call, c, d, m, u->error[0] ? u->error : "rejected", u->message,
                         u->errors, "depended on a rejected mutation");
    add_doc_changed_remote(self, call, c, d);
}

/* A merge patch that turns from into to (top-level and nested objects);
 * server-assigned fields are left out. */
static cJSON *diff_patch(const cJSON *from, const cJSON *to)
{
    cJSON *patch = cJSON_CreateObject();
    for (const cJSON *f = to ? to->child : NULL; patch && f; f = f->next) {
        if (!strcmp(f->string, "id") || !strcmp(f->string, "version") ||
            !strcmp(f->string, "updated_at") || !strcmp(f->string, "deleted"))
            continue;
        const cJSON *old = cJSON_GetObjectItemCaseSensitive(from, f->string);
        if (old && cJSON_Compare(old, f, 1))
            continue;
        cJSON *value = cJSON_IsObject(old) && cJSON_IsObject(f) ? diff_patch(old, f)
                                                                : cJSON_Duplicate(f, 1);
        cJSON_AddItemToObject(patch, f->string, value);
    }
    for (const cJSON *f = from ? from->child : NULL; patch && f; f = f->next)
        if (strcmp(f->string, "id") && strcmp(f->string, "version") &&
            strcmp(f->string, "updated_at") && !cJSON_GetObjectItemCaseSensitive(to, f->string))
            cJSON_AddNullToObject(patch, f->string);
    return patch;
}

/* Base and mine for a conflicting head mutation m: base is the confirmed
 * document (NULL for a local create), mine is base with m applied. */
static void conflict_sides(store_t *self, const doc_t *d, const mutation_t *m, cJSON **base,
                           cJSON **mine)
{
    *base = NULL;
    *mine = NULL;
    base_snapshot_t *snap = *find_snapshot(self, d);
    const confirmed_t *conf = snap ? snap->base : d->confirmed;
    if (conf && conf->len) {
        *base = cJSON_ParseWithLength(conf->text, conf->len);
        char id[65];
        memcpy(id, d->id, d->id_len);
        id[d->id_len] = '\0';
        if (*base)
            cJSON_AddStringToObject(*base, "id", id);
    }
    if (m->op == TS_OP_CREATE) {
        *mine = cJSON_ParseWithLength(m->body, m->body_len);
    } else if (m->op == TS_OP_UPDATE) {
        cJSON *patch = cJSON_ParseWithLength(m->body, m->body_len);
        *mine = patch ? ts_json_merge_patch(*base ? cJSON_Duplicate(*base, 1) : NULL, patch) : NULL;
        cJSON_Delete(patch);
    }
    if (*mine) {
        char id[65];
        memcpy(id, d->id, d->id_len);
        id[d->id_len] = '\0';
        cJSON_DeleteItemFromObjectCaseSensitive(*mine, "id");
        cJSON_AddStringToObject(*mine, "id", id);
    }
}

static void sync_conflict(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                          const ts_sync_update_t *u)
{
    mutation_t *m = NULL;
    for (mutation_t *x = d->pending; x; x = x->next)
        if (x->seq == u->seq)
            m = x;
    if (!u->doc)
        return;
    if (!m) { /* cancelled while out: its answer still tells the next write's If-Match */
        raise_if_match(call, c, d, version_of(u));
        return;
    }
    self->conflicts++;
    cJSON *base, *mine;
    conflict_sides(self, d, m, &base, &mine);
    /* The collection's policy decides; without one (or for a delete, which
     * has no "mine" document to merge) the default: a field-level merge, and
     * a delete that met a remote change keeps the server's document. */
    ts_policy_outcome_t outcome = {.kind = TS_OUTCOME_LAST};
    char err[256] = "";
    int rc = TS_POLICY_OK;
    ts_policy_t *policy = self->sq ? ts_sq_policy(self->sq) : NULL;
    if (policy && mine)
        rc = ts_policy_resolve(policy, c->name, base, mine, u->doc, &outcome, err, sizeof err);
    if (outcome.kind == TS_OUTCOME_LAST) {
        outcome.kind = mine ? TS_OUTCOME_MERGE : TS_OUTCOME_THEIRS;
        outcome.doc = mine ? ts_policy_default_merge(base, mine, u->doc) : NULL;
        snprintf(outcome.policy, sizeof outcome.policy, "default");
    }
    int64_t theirs_version = version_of(u);
    if (set_confirmed(self, c, d, u->doc, theirs_version) == 0)
        add_confirmed_record(call, c, d);
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "collection", c->name);
    cJSON_AddStringToObject(params, "id", u->doc_id);
    cJSON_AddStringToObject(params, "policy", outcome.policy[0] ? outcome.policy : "default");
    cJSON_AddStringToObject(params, "outcome", ts_policy_outcome_name(outcome.kind));
    if (rc != TS_POLICY_OK && err[0])
        cJSON_AddStringToObject(params, "policy_error", err);
    add_event_json(call, "conflict", "conflict.resolved", params);
    add_audit(call, c, d, m, "conflict", NULL, theirs_version, ts_policy_outcome_name(outcome.kind));

    if (outcome.kind == TS_OUTCOME_THEIRS || outcome.kind == TS_OUTCOME_REJECT) {
        drop_with_dependents(self, call, c, d, take_mutation(self, d, m->seq), "conflict",
                             outcome.kind == TS_OUTCOME_REJECT ? outcome.reason
                                                               : "the server's version was kept",
                             NULL, "depended on a mutation lost in a conflict");
    } else {
        /* mine or merge: rewrite m, in its place in line, as a change of the
         * server's version (a delete stays a delete), with a new id so the
         * server's idempotency keys see a new request. */
        const cJSON *target = outcome.kind == TS_OUTCOME_MERGE && outcome.doc ? outcome.doc : mine;
        cJSON *patch = m->op == TS_OP_DELETE || !target ? NULL : diff_patch(u->doc, target);
        size_t len = 0;
        const char *text = patch ? print_scratch(self, patch, &len) : "";
        mutation_t *r = text ? mutation_new(m->op == TS_OP_DELETE ? TS_OP_DELETE : TS_OP_UPDATE,
                                            text, len)
                             : NULL;
        cJSON_Delete(patch);
        if (r) {
            r->seq = m->seq;
            r->base_version = theirs_version;
            r->at_ms = m->at_ms;
            ts_uuidv7_bytes(r->id);
            for (mutation_t **p = &d->pending; *p; p = &(*p)->next) {
                if (*p == m) {
                    r->next = m->next;
                    *p = r;
                    break;
                }
            }
            add_drop_record(call, c, d, m);
            add_mutation_record(call, c, d, r, "conflict-resolution");
            free(m);
        }
    }
    recompute_and_reject(self, call, c, d, "no longer applies after a conflict");
    raise_if_match(call, c, d, theirs_version);
    add_doc_changed_remote(self, call, c, d);
    ts_policy_outcome_clear(&outcome);
    cJSON_Delete(base);
    cJSON_Delete(mine);
}

/* The server holds the write's idempotency key for another request: the
 * same write goes again in its place under a new id (the key). Sending it
 * again is safe: had the server applied it after all, If-Match (update,
 * delete) or the id (create) makes that a 409, and the policy decides. */
static void sync_rekey(ts_call_t *call, collection_t *c, doc_t *d, const ts_sync_update_t *u)
{
    for (mutation_t **p = &d->pending; *p; p = &(*p)->next) {
        mutation_t *m = *p;
        if (m->seq != u->seq)
            continue;
        mutation_t *r = mutation_new((ts_op_t)m->op, m->body, m->body_len);
        if (!r) {
            ts_error(LOG, "out of memory: mutation seq=%lld not sent again", (long long)m->seq);
            return;
        }
        r->seq = m->seq;
        r->base_version = m->base_version; /* its If-Match, raised or not */
        r->at_ms = m->at_ms;
        ts_uuidv7_bytes(r->id);
        r->next = m->next;
        *p = r;
        char id[37], why[96];
        ts_uuid_format(r->id, id);
        snprintf(why, sizeof why, "idempotency key held for another request: sent again as %s",
                 id);
        add_drop_record(call, c, d, m);
        add_audit(call, c, d, m, "rekeyed", NULL, 0, why);
        add_mutation_record(call, c, d, r, "rekeyed");
        free(m);
        return;
    }
}

static void sync_remote(store_t *self, ts_call_t *call, collection_t *c, const ts_sync_update_t *u)
{
    bool deleted = !u->doc || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(u->doc, "deleted"));
    doc_t *d = find_doc(c, u->doc_id);
    if (!d && deleted)
        return; /* never had it */
    if (!d)
        d = get_or_add_doc(c, u->doc_id, strlen(u->doc_id));
    int64_t version = version_of(u);
    /* Newer than what we have, or a repair's forced tombstone (version 0). */
    if (!d || (version <= doc_version(d) && !(deleted && version == 0)))
        return;
    remember_base(self, d);
    if (set_confirmed(self, c, d, deleted ? NULL : u->doc, version ? version : doc_version(d)))
        return;
    self->remote_applied++;
    add_confirmed_record(call, c, d);
    recompute_and_reject(self, call, c, d, "the document changed on the server");
    publish_remote_change(self, c, d);
}

/* One message of envelopes to persist: a batch. Each envelope is stamped
 * with its number, which orders remote changes (publish_remote_change). */
static int send_to_persist(store_t *self, ts_envelope_t **envelopes, size_t n)
{
    self->persist_batch = next_batch(self);
    for (size_t i = 0; i < n; i++)
        envelopes[i]->persist_batch = self->persist_batch;
    return ts_send_COMMIT(self->to_persist, envelopes, n);
}

/* Applies a message of sync updates as one internal envelope, so that all
 * of it commits in one transaction and its events follow the commit. */
static void apply_sync_updates(store_t *self, ts_sync_update_t **ptrs, size_t n)
{
    ts_envelope_t *e = ts_envelope_new(1);
    if (!e) {
        ts_error(LOG, "out of memory applying sync updates");
        for (size_t i = 0; i < n; i++)
            ts_sync_update_free(ptrs[i]);
        return;
    }
    e->internal = true;
    e->received_us = ts_mono_us();
    ts_call_t *out = &e->calls[0];
    out->method = TS_M_NONE;
    /* Each update's records and events are made on a scratch call and then
     * moved to the end of the envelope's lists: appending to one long list
     * walks it every time, which is quadratic in a batch of confirmations. */
    ts_record_t **records_end = &out->records;
    ts_event_t **events_end = &out->events;
    bool cursor_moved = false;
    for (size_t i = 0; i < n; i++) {
        ts_sync_update_t *u = ptrs[i];
        ts_call_t one = {.method = TS_M_NONE}, *call = &one;
        collection_t *c = find_collection(self, u->collection);
        doc_t *d = c ? find_doc(c, u->doc_id) : NULL;
        if (c && u->sent_ms && u->kind != TS_SYNC_CONFIRMED)
            add_sent_audit(call, u); /* a confirmation carries it in its own row */
        switch (u->kind) {
        case TS_SYNC_CONFIRMED:
            if (c && !d)
                d = get_or_add_doc(c, u->doc_id, strlen(u->doc_id));
            if (d)
                sync_confirmed(self, call, c, d, u);
            break;
        case TS_SYNC_REJECTED:
            if (d)
                sync_rejected(self, call, c, d, u);
            break;
        case TS_SYNC_CONFLICT:
            if (d)
                sync_conflict(self, call, c, d, u);
            break;
        case TS_SYNC_REKEY:
            if (d)
                sync_rekey(call, c, d, u);
            break;
        case TS_SYNC_REMOTE:
            if (c)
                sync_remote(self, call, c, u);
            break;
        case TS_SYNC_SENT: break; /* its audit line is written above */
        case TS_SYNC_CURSOR: /* only the last one of the message is written */
            snprintf(self->cursor, sizeof self->cursor, "%s", u->cursor);
            cursor_moved = true;
            break;
        case TS_SYNC_STATUS:
            cJSON_Delete(self->sync_status);
            self->sync_status = u->status;
            u->status = NULL;
            break;
        }
        if (d)
            forget_base_if_settled(self, d);
        ts_sync_update_free(u);
        for (*records_end = one.records; *records_end; records_end = &(*records_end)->next)
            ;
        for (*events_end = one.events; *events_end; events_end = &(*events_end)->next)
            ;
    }
    ts_call_t *call = out;
    if (cursor_moved) {
        ts_record_t *r =
            ts_record_new(TS_REC_CURSOR, "-", "-", 1, self->cursor, strlen(self->cursor));
        if (r)
            append_record(call, r);
    }
    ts_call_set_result(call, strdup("null"), 4);
    if (send_to_persist(self, &e, 1))
        ts_envelope_free(e);
    maybe_publish_status(self);
}

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const struct ts_digest_entry *)a)->id, ((const struct ts_digest_entry *)b)->id);
}

/* Fills a digest of a collection's live confirmed documents, the way the
 * Clinic API computes it, and sends it back to the sync actor. */
static void answer_digest(store_t *self, ts_digest_t *dg)
{
    collection_t *c = find_collection(self, dg->collection);
    size_t n = 0;
    for (size_t i = 0; c && i < c->cap; i++) {
        doc_t *d = doc_at(c, i);
        n += d && d->confirmed && d->confirmed->len;
    }
    struct ts_digest_entry *list = n ? malloc(n * sizeof *list) : NULL;
    size_t k = 0;
    for (size_t i = 0; list && c && i < c->cap; i++) {
        doc_t *d = doc_at(c, i);
        if (!d || !d->confirmed || !d->confirmed->len)
            continue;
        memcpy(list[k].id, d->id, d->id_len);
        list[k].id[d->id_len] = '\0';
        list[k++].version = d->confirmed->version;
    }
    if (list)
        qsort(list, k, sizeof *list, compare_entries);
    ts_sha256_t sha;
    ts_sha256_init(&sha);
    for (size_t i = 0; i < k; i++) {
        char line[96];
        int len = snprintf(line, sizeof line, "%s:%lld\n", list[i].id, (long long)list[i].version);
        ts_sha256_update(&sha, line, (size_t)len);
    }
    uint8_t digest[32];
    ts_sha256_final(&sha, digest);
    ts_sha256_to_hex(digest, dg->hash);
    dg->count = k;
    if (dg->want_versions) {
        dg->versions = list;
        dg->nversions = k;
    } else {
        free(list);
    }
    if (!self->to_sync || ts_send_DIGEST(self->to_sync, &dg, 1))
        ts_digest_free(dg);
}

typedef struct {
    int64_t seq;
    collection_t *c;
    doc_t *d;
    mutation_t *m;
} pending_ref_t;

static int compare_seq(const void *a, const void *b)
{
    int64_t x = ((const pending_ref_t *)a)->seq, y = ((const pending_ref_t *)b)->seq;
    return (x > y) - (x < y);
}

/* After recovery: the cursor, then every pending mutation in seq order. */
static void hand_outbox_to_sync(store_t *self)
{
    ts_sync_update_t *cursor = ts_sync_update_new(TS_SYNC_CURSOR);
    if (cursor) {
        snprintf(cursor->cursor, sizeof cursor->cursor, "%s", self->cursor);
        if (ts_send_SYNC_UPDATES(self->to_sync, &cursor, 1))
            ts_sync_update_free(cursor);
    }
    pending_ref_t *refs = self->pending ? malloc(self->pending * sizeof *refs) : NULL;
    size_t n = 0;
    for (size_t k = 0; refs && k < self->ncollections; k++) {
        collection_t *c = &self->collections[k];
        for (size_t i = 0; i < c->cap; i++) {
            doc_t *d = doc_at(c, i);
            for (mutation_t *m = d ? d->pending : NULL; m && n < self->pending; m = m->next)
                refs[n++] = (pending_ref_t){m->seq, c, d, m};
        }
    }
    if (self->pending && !refs)
        ts_error(LOG, "out of memory handing the outbox to sync");
    if (n)
        qsort(refs, n, sizeof *refs, compare_seq);
    ts_call_t scratch = {0};
    size_t batch = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            add_mutation_record(&scratch, refs[i].c, refs[i].d, refs[i].m, NULL);
            batch++;
        }
        if ((batch == 1000 || i == n) && scratch.records) {
            if (ts_send_OUTBOX(self->to_sync, &scratch.records, 1))
                ts_record_free_list(scratch.records);
            scratch.records = NULL;
            batch = 0;
        }
    }
    free(refs);
    ts_info(LOG, "handed %zu pending mutations to sync", n);
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
    return ts_send_SYNC_CALL(self->to_sync, &e, 1) == 0;
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
    ts_call_set_result(call, strdup(text), strlen(text));
}

/* ---- recovery and rollback ---- */

static void recover_record(store_t *self, const ts_record_t *r)
{
    if (r->kind == TS_REC_CURSOR) {
        snprintf(self->cursor, sizeof self->cursor, "%s", r->body ? r->body : "");
        return;
    }
    collection_t *c = find_collection(self, r->collection);
    if (!c) {
        ts_warn(LOG, "recovery: collection %s is not configured; its records stay on disk",
                r->collection);
        return;
    }
    doc_t *d = get_or_add_doc(c, r->doc_id, strlen(r->doc_id));
    if (!d) {
        ts_error(LOG, "recovery: out of memory");
        return;
    }
    if (r->kind == TS_REC_CONFIRMED) {
        size_t len = r->body ? r->body_len : 0;
        confirmed_t *conf = malloc(sizeof *conf + len + 1);
        if (!conf) {
            ts_error(LOG, "recovery: out of memory");
            return;
        }
        conf->version = r->version;
        conf->len = (uint32_t)len;
        memcpy(conf->text, r->body ? r->body : "", len + 1);
        free(d->confirmed);
        d->confirmed = conf;
        if (len)
            set_visible(c, d, conf->text, len, VISIBLE_IS_CONFIRMED);
        return;
    }
    mutation_t *m = mutation_new(r->op, r->body ? r->body : "", r->body ? r->body_len : 0);
    if (!m) {
        ts_error(LOG, "recovery: out of memory");
        return;
    }
    m->seq = r->seq;
    m->base_version = r->version;
    m->at_ms = r->at_ms;
    if (uuid_parse(r->mutation, m->id))
        ts_warn(LOG, "recovery: mutation %lld has a malformed id", (long long)r->seq);
    if (r->seq > self->seq)
        self->seq = r->seq;
    append_mutation(self, d, m);
    if (apply_mutation(self, c, d, m))
        ts_warn(LOG, "recovery: mutation %s no longer applies to %s/%.*s; kept pending",
                r->mutation, c->name, (int)d->id_len, d->id);
}

static void rollback(store_t *self, ts_record_t *records)
{
    for (ts_record_t *r = records; r; r = r->next) {
        collection_t *c = find_collection(self, r->collection);
        doc_t *d = c ? find_doc(c, r->doc_id) : NULL;
        if (!d || r->kind != TS_REC_MUTATION)
            continue;
        for (mutation_t **p = &d->pending; *p; p = &(*p)->next) {
            if ((*p)->seq == r->seq) {
                mutation_t *m = *p, *dropped = NULL;
                *p = m->next;
                d->npending--;
                self->pending--;
                recompute(self, c, d, &dropped);
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
    ts_envelope_t **reads = malloc(n * sizeof *reads);
    for (size_t i = 0; i < n; i++) {
        ts_envelope_t *e = envs[i];
        if (route_sync_call(self, e))
            continue; /* the sync actor answers it */
        self->client = e->client;
        for (size_t k = 0; k < e->ncalls; k++)
            handle_call(self, &e->calls[k]);
        if (reads && !needs_persist(e))
            reads[direct++] = e;
        else
            envs[kept++] = e;
    }
    self->client = NULL;
    if (direct && ts_send_ANSWERS(self->to_front, reads, direct)) {
        ts_error(LOG, "cannot pass answers to the front door");
        for (size_t i = 0; i < direct; i++)
            ts_envelope_free(reads[i]);
    }
    free(reads);
    maybe_publish_status(self);
    if (kept && send_to_persist(self, envs, kept)) {
        ts_error(LOG, "cannot pass envelopes to persist");
        for (size_t i = 0; i < kept; i++)
            ts_envelope_free(envs[i]);
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
        case TS_MSG_REQUESTS: on_requests(self, ts_msg_REQUESTS(&m), m.count); break;
        case TS_MSG_SYNC_UPDATES:
            apply_sync_updates(self, ts_msg_SYNC_UPDATES(&m), m.count);
            break;
        case TS_MSG_DIGEST_ASK:
            for (size_t i = 0; i < m.count; i++)
                answer_digest(self, ts_msg_DIGEST_ASK(&m)[i]);
            break;
        case TS_MSG_RECOVERED:
            if (m.count == 0) {
                self->recovering = false;
                ts_msg_release(&m);
                return -1; /* ends the recovery loop */
            }
            for (ts_record_t *r = ts_msg_RECOVERED(&m)[0]->head; r; r = r->next)
                recover_record(self, r);
            free(ts_msg_RECOVERED(&m)[0]);
            ts_send_RECOVER_ACK(self->to_persist, NULL, 0);
            break;
        case TS_MSG_STORAGE:
            if (m.count)
                self->storage = ts_msg_STORAGE(&m)[0];
            maybe_publish_status(self);
            break;
        case TS_MSG_ROLLBACK: on_rollback(self, ts_msg_ROLLBACK(&m), m.count); break;
        default: ts_msg_unexpected(LOG, &m); continue;
        }
        ts_msg_release(&m);
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
                free_doc(doc_at(c, i));
        free(c->slots);
        free(c->hash32);
    }
    ts_buf_free(&self->scratch);
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
    int n = zmq_recv(pipe, command, sizeof command - 1, 0);
    if (n < 0)
        return 0;
    command[n < (int)sizeof command - 1 ? n : (int)sizeof command - 1] = '\0';
    if (strcmp(command, "RELOAD") == 0) {
        ts_sq_reload(self->sq, NULL, self->events);
        return 0;
    }
    return strcmp(command, "$TERM") == 0 ? -1 : 0;
}

static void store_actor(ts_actor_t *actor, void *args)
{
    store_t self = {.config = args};
    void *zctx = ts_actor_zctx(actor);
    ts_loop_t *loop = ts_loop_new();
    for (size_t i = 0; i < self.config->ncollections; i++) {
        collection_t *c = &self.collections[self.ncollections++];
        c->name = self.config->collections[i];
        snprintf(c->topic, sizeof c->topic, "doc.%s", c->name);
    }
    self.inbox = ts_inproc_socket(zctx, ZMQ_PULL, TS_INPROC_STORE, true);
    self.to_persist = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_PERSIST, false);
    self.events = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_EVENTS, false);
    self.to_front = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_FRONT, false);
    if (self.config->api_url) {
        self.to_sync = ts_inproc_socket(zctx, ZMQ_PUSH, TS_INPROC_SYNC, false);
        self.sync_inbox = ts_inproc_socket(zctx, ZMQ_PULL, TS_INPROC_STORE_SYNC, true);
    }
    if (!loop || !self.inbox || !self.to_persist || !self.events || !self.to_front ||
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
    size_t docs = 0;
    for (size_t i = 0; i < self.ncollections; i++)
        docs += self.collections[i].live;
    ts_info(LOG, "loaded %zu documents, %zu pending mutations in %.3f s", docs, self.pending,
            (ts_mono_us() - start) / 1e6);
    self.last_pending_zero = self.pending == 0;
    if (self.to_sync)
        hand_outbox_to_sync(&self);
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
