/* apply.c — applying the sync actor's updates: the end of a pending
 * write (confirmed, rejected, a conflict resolved by the Lua policy,
 * rekeyed), remote changes, the If-Match raise, all committed as one
 * internal envelope. */
#include "store_int.h"
#include <zmq.h>

/* A remote change is durable at the server already, so its doc.changed
 * does not wait for the local commit (a crash before it only means the
 * change is pulled again): it goes straight to the front door. To keep one
 * document's events in order, the front door publishes it only once the
 * persist batch that carried the document's previous event is out. */
static void publish_remote_change(store_t *self, const collection_t *c, const doc_t *d)
{
    ts_buf_t b = {0};
    store_doc_changed_text(&b, c, d, "remote");
    ts_event_t *ev = ts_event_new(c->topic, b.data, b.len);
    ts_buf_free(&b);
    /* A batch sent this long ago is out for sure (persist's queue is
     * bounded); its number could be confused with a new one after a wrap. */
    ev->after = d->event_batch && store_next_batch(self) - d->event_batch < (1u << 20)
                    ? d->event_batch
                    : 0;
    ev->mark = self->changes.mark; /* past this change */
    if (ts_send_EVENTS(self->events, &ev, 1)) {
        ts_warn(LOG, "cannot publish a remote change: %s", zmq_strerror(zmq_errno()));
        ts_event_free_list(ev);
    }
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
    base_snapshot_t *snap = ts_xmalloc(sizeof *snap);
    size_t size = sizeof *d->confirmed + d->confirmed->len + 1;
    confirmed_t *copy = ts_xmalloc(size);
    memcpy(copy, d->confirmed, size);
    *snap = (base_snapshot_t){self->snapshots, d, copy};
    self->snapshots = snap;
}

void store_forget_base_if_settled(store_t *self, const doc_t *d)
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
 * (NULL or deleted = a tombstone). Returns 0 or -1 (it does not print). */
static int set_confirmed(store_t *self, collection_t *c, doc_t *d, cJSON *doc, int64_t version)
{
    size_t len = 0;
    const char *text = "";
    if (doc && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "deleted"))) {
        /* printed without its id (kept in doc_t), which goes back after */
        cJSON *id = cJSON_DetachItemFromObjectCaseSensitive(doc, "id");
        text = store_print_scratch(self, doc, &len);
        if (id)
            cJSON_AddItemToObject(doc, "id", id);
        if (!text)
            return -1;
    }
    confirmed_t *conf = ts_xmalloc(sizeof *conf + len + 1);
    conf->version = version;
    conf->len = (uint32_t)len;
    conf->hashed = false;
    memcpy(conf->text, text, len + 1);
    if (d->visible_kind == VISIBLE_IS_CONFIRMED)
        store_set_visible(c, d, NULL, 0, VISIBLE_OWNED); /* it points into the old one */
    free(d->confirmed);
    d->confirmed = conf;
    return 0;
}

static void add_confirmed_record(ts_call_t *call, const collection_t *c, const doc_t *d)
{
    const confirmed_t *conf = d->confirmed;
    ts_record_t *r = ts_record_new(TS_REC_CONFIRMED, c->name, d->id, d->id_len,
                                   conf && conf->len ? conf->text : NULL, conf ? conf->len : 0);
    r->version = doc_version(d);
    store_append_record(call, r);
}

static void add_event_json(ts_call_t *call, const char *topic, const char *method, cJSON *params)
{
    cJSON *event = cJSON_CreateObject();
    cJSON_AddStringToObject(event, "jsonrpc", "2.0");
    cJSON_AddStringToObject(event, "method", method);
    cJSON_AddItemToObject(event, "params", params);
    char *text = cJSON_PrintUnformatted(event);
    store_add_event(call, topic, text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(event);
}

static cJSON *doc_or_null(const doc_t *d)
{
    cJSON *doc = store_parse_doc(d);
    return doc ? doc : cJSON_CreateNull();
}

/* A mutation the server refused (or a conflict policy dropped): durable
 * drop, audit line, mutation.rejected with the rolled-back document. */
static void reject_mutation(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                            mutation_t *m, const char *reason, const char *message,
                            const cJSON *errors)
{
    self->rejected++;
    store_note_event(self, d);
    store_add_drop_record(call, c, d, m);
    char line[320];
    snprintf(line, sizeof line, "%s: %s", reason, message ? message : "");
    store_add_audit(call, c, d, m, "rejected", NULL, doc_version(d), line);
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
    store_recompute(self, c, d, &dropped);
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
    store_add_doc_changed_from(self, call, c, d, "remote");
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
    r->at_ms = u->sent_ms;
    memcpy(r->mutation, u->mutation, sizeof r->mutation);
    ts_copy_text(r->event, sizeof r->event, "sent");
    r->version = u->sent_version;
    store_append_record(call, r);
}

/* The confirmed mutation leaves the outbox with its whole audit life in one
 * row: accepted (from the outbox), its first send when reported with this
 * answer, and "confirmed" (see TS_REC_DROP). */
static void add_confirmed_drop(ts_call_t *call, const collection_t *c, const doc_t *d,
                               const mutation_t *m, int64_t version, const ts_sync_update_t *u)
{
    store_add_drop_record(call, c, d, m);
    ts_record_t *r = call->records; /* store_add_drop_record puts it first */
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
    store_raise_if_match(call, c, d, version);
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
        store_add_event(call, "mutation", b.data, b.len);
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
    store_recompute(self, c, d, &m->next); /* collects the dependents after m */
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
    for (const cJSON *f = to ? to->child : NULL; f; f = f->next) {
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
    for (const cJSON *f = from ? from->child : NULL; f; f = f->next)
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
        store_raise_if_match(call, c, d, version_of(u));
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
    store_add_audit(call, c, d, m, "conflict", NULL, theirs_version, ts_policy_outcome_name(outcome.kind));

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
        const char *text = patch ? store_print_scratch(self, patch, &len) : "";
        mutation_t *r = text ? store_mutation_new(m->op == TS_OP_DELETE ? TS_OP_DELETE : TS_OP_UPDATE,
                                            text, len)
                             : NULL;
        cJSON_Delete(patch);
        if (r) {
            r->seq = m->seq;
            r->base_version = theirs_version;
            r->at_ms = ts_wall_ms(); /* a new write, made now: its audit lines follow the conflict's */
            ts_uuidv7_bytes(r->id);
            for (mutation_t **p = &d->pending; *p; p = &(*p)->next) {
                if (*p == m) {
                    r->next = m->next;
                    *p = r;
                    break;
                }
            }
            store_add_drop_record(call, c, d, m);
            store_add_mutation_record(call, c, d, r, "conflict-resolution");
            free(m);
        }
    }
    recompute_and_reject(self, call, c, d, "no longer applies after a conflict");
    store_raise_if_match(call, c, d, theirs_version);
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
        mutation_t *r = store_mutation_new((ts_op_t)m->op, m->body, m->body_len);
        r->seq = m->seq;
        r->base_version = m->base_version; /* its If-Match, raised or not */
        ts_uuidv7_bytes(r->id);
        r->next = m->next;
        *p = r;
        char id[37], why[96];
        ts_uuid_format(r->id, id);
        snprintf(why, sizeof why, "idempotency key held for another request: sent again as %s",
                 id);
        store_add_drop_record(call, c, d, m);
        store_add_audit(call, c, d, m, "rekeyed", NULL, 0, why);
        /* made now, dated after the "rekeyed" line (read from the clock
         * after it: taken before, a millisecond's tick between the two
         * listed the new write first) */
        r->at_ms = ts_wall_ms();
        store_add_mutation_record(call, c, d, r, "rekeyed");
        free(m);
        return;
    }
}

/* Whether the server's document at our version (doc, or a tombstone)
 * differs from our confirmed one: live here and not there or the other way
 * round, or another content hash (the digest's). */
static bool repair_differs(doc_t *d, bool deleted, const cJSON *doc)
{
    bool live = d->confirmed && d->confirmed->len;
    if (deleted || !live)
        return deleted == live;
    uint8_t theirs[32];
    if (ts_json_content_sha256(doc, theirs))
        return false;
    return memcmp(theirs, store_confirmed_content(d->confirmed), 32) != 0;
}

static void sync_remote(store_t *self, ts_call_t *call, collection_t *c, const ts_sync_update_t *u)
{
    bool deleted = !u->doc || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(u->doc, "deleted"));
    doc_t *d = store_find_doc(c, u->doc_id);
    if (!d && deleted)
        return; /* never had it */
    if (!d && self->config->ondemand[c->index].on && !u->fetched)
        return; /* on demand: only what was read is held */
    if (!d)
        d = store_get_or_add_doc(c, u->doc_id, strlen(u->doc_id));
    int64_t version = version_of(u);
    /* Newer than what we have, a repair's forced tombstone (version 0), or a
     * repair at our version whose content differs from ours (a body changed
     * at the server without a new version: a restore, a hand fix). */
    bool same = d && version > 0 && version == doc_version(d) && u->repair &&
                repair_differs(d, deleted, u->doc);
    if (!d || (version <= doc_version(d) && !(deleted && version == 0) && !same))
        return;
    remember_base(self, d);
    int64_t before = doc_version(d);
    if (set_confirmed(self, c, d, deleted ? NULL : u->doc, version ? version : doc_version(d)))
        return;
    self->remote_applied++;
    add_confirmed_record(call, c, d);
    if (!u->fetched) { /* the trail shows every change the server made here */
        char why[128];
        snprintf(why, sizeof why, "%s%s from version %lld to %lld%s",
                 !u->repair ? "feed" : u->refetch ? "invalidate repair" : "digest repair",
                 deleted ? ": deleted" : "", (long long)before, (long long)doc_version(d),
                 same ? ", content differed" : "");
        store_add_audit(call, c, d, NULL, u->repair ? "repaired" : "remote", NULL,
                        doc_version(d), why);
    }
    recompute_and_reject(self, call, c, d, "the document changed on the server");
    publish_remote_change(self, c, d);
}

/* Applies a message of sync updates as one internal envelope, so that all
 * of it commits in one transaction and its events follow the commit. */
void store_apply_sync_updates(store_t *self, ts_sync_update_t **ptrs, size_t n)
{
    ts_envelope_t *e = ts_envelope_new(1);
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
    /* `sync` answers go to persist behind this envelope: answered once
     * the updates before them are applied and committed. */
    ts_envelope_t **batch = ts_xmalloc((n + 1) * sizeof *batch);
    size_t nbatch = 1;
    batch[0] = e;
    for (size_t i = 0; i < n; i++) {
        ts_sync_update_t *u = ptrs[i];
        ts_call_t one = {.method = TS_M_NONE}, *call = &one;
        self->changes.origin = u->fetched ? TS_CHANGE_FETCHED : TS_CHANGE_REMOTE;
        collection_t *c = store_find_collection(self, u->collection);
        doc_t *d = c ? store_find_doc(c, u->doc_id) : NULL;
        if (c && u->sent_ms && u->kind != TS_SYNC_CONFIRMED)
            add_sent_audit(call, u); /* a confirmation carries it in its own row */
        switch (u->kind) {
        case TS_SYNC_CONFIRMED:
            if (c && !d)
                d = store_get_or_add_doc(c, u->doc_id, strlen(u->doc_id));
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
        case TS_SYNC_ANSWER:
            if (u->answer)
                batch[nbatch++] = u->answer;
            u->answer = NULL;
            break;
        }
        if (d)
            store_forget_base_if_settled(self, d);
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
        store_append_record(call, r);
    }
    ts_call_set_result(call, ts_xstrdup("null"), 4);
    if (store_send_to_persist(self, batch, nbatch))
        for (size_t i = 0; i < nbatch; i++)
            ts_envelope_free(batch[i]);
    free(batch);
    store_maybe_publish_status(self);
}
