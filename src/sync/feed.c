/* feed.c — the feed state machine of the sync actor (sync_pull_set: WAIT_HINT →
 * CATCHUP → STREAM | LONGPOLL | POLL): pages of /v1/changes, the SSE
 * stream, the cursor given to the store, and the changes held while our own
 * write to their document is out (holds, echoes). */
#include "sync_int.h"

const char *const sync_pstate_names[P__LAST] = {"wait_hint", "catchup", "stream", "longpoll",
                                           "poll"};

static int64_t cursor_value(const char *cursor)
{
    int64_t v;
    return cursor && *cursor && ts_parse_i64(cursor, &v) == 0 ? v : -1;
}

void sync_pull_set(sync_t *self, pstate_t to)
{
    if (self->pull == to)
        return;
    ts_info(LOG, "feed %s -> %s (cursor %s)", sync_pstate_names[self->pull], sync_pstate_names[to],
            *self->cursor ? self->cursor : "none");
    self->pull = to;
    self->feed_failures = 0;
    self->feed_due_us = ts_mono_us();
}

/* Gives the store the cursor it may keep: ours, or, while changes are held,
 * the one before the oldest of them, so that a restart pulls them again. */
static void cursor_emit(sync_t *self)
{
    const char *safe = self->holds ? self->holds->hold_floor : self->cursor;
    if (!*safe || strcmp(safe, self->cursor_sent) == 0)
        return;
    ts_sync_update_t *u = sync_emit(self, TS_SYNC_CURSOR, NULL);
    ts_copy_text(u->cursor, sizeof u->cursor, safe);
    ts_copy_text(self->cursor_sent, sizeof self->cursor_sent, safe);
}

static void emit_remote(sync_t *self, const char *coll, const char *id, cJSON *doc, int64_t v)
{
    ts_sync_update_t *u = sync_emit(self, TS_SYNC_REMOTE, NULL);
    ts_copy_text(u->collection, sizeof u->collection, coll);
    ts_copy_text(u->doc_id, sizeof u->doc_id, id);
    u->doc = doc;
    u->version = v;
    u->repair = self->repairing;
    u->refetch = self->refetching;
    /* Not d->version: pending writes keep their base (see sdoc_t). */
    self->pulled++;
}

/* A change to a document whose write is out right now is most likely that
 * write's echo, arriving before the write's answer. Applying it would show
 * our own write as a remote change (a doc.changed with origin "remote") and
 * cost a second store update; so it waits for the answer (sync_hold_release), at
 * most HOLD_MAX_US, keeping only the newest change of the document. */
static void hold_change(sync_t *self, sdoc_t *d, const char *doc, size_t len, int64_t v)
{
    if (d->held && v <= d->held_version)
        return;
    char *copy = ts_xmalloc(len + 1);
    memcpy(copy, doc, len);
    copy[len] = '\0';
    if (d->held) {
        free(d->held);
    } else {
        ts_copy_text(d->hold_floor, sizeof d->hold_floor, self->cursor);
        d->held_us = ts_mono_us();
        d->hold_prev = self->holds_tail;
        d->hold_next = NULL;
        if (self->holds_tail)
            self->holds_tail->hold_next = d;
        else
            self->holds = d;
        self->holds_tail = d;
    }
    d->held = copy;
    d->held_len = len;
    d->held_version = v;
}

/* The write's answer is in (or the wait is over): apply the held change
 * unless the answer showed it to be ours. */
void sync_hold_release(sync_t *self, sdoc_t *d)
{
    if (d->hold_prev)
        d->hold_prev->hold_next = d->hold_next;
    else
        self->holds = d->hold_next;
    if (d->hold_next)
        d->hold_next->hold_prev = d->hold_prev;
    else
        self->holds_tail = d->hold_prev;
    d->hold_prev = d->hold_next = NULL;
    char *text = d->held;
    d->held = NULL;
    if (d->held_version > 0 && d->held_version <= d->version) {
        self->echoes++;
    } else { /* newer than our write: parsed only now */
        cJSON *doc = cJSON_ParseWithLength(text, d->held_len);
        if (doc)
            emit_remote(self, d->coll, d->id, doc, d->held_version);
    }
    free(text);
    cursor_emit(self);
}

void sync_holds_expire(sync_t *self, int64_t now)
{
    while (self->holds && now - self->holds->held_us >= HOLD_MAX_US) {
        sdoc_t *d = self->holds;
        sync_hold_release(self, d);
        sync_doc_maybe_free(self, d);
    }
}

/* Sorts a feed change of coll/id at version v: true when it is dealt with
 * here as the echo of our own confirmed write (version not above the one
 * our writes brought the document to; counted and dropped). Otherwise
 * *hold is the document when our write to it is out right now, and the
 * change is to be held for that write's answer (hold_change), else NULL. */
static bool feed_echo(sync_t *self, const char *coll, const char *id, int64_t v, sdoc_t **hold)
{
    uint64_t h = sync_hash_key(coll, id);
    sdoc_t *known = sync_doc_find(self, coll, id, h);
    *hold = NULL;
    if (v > 0 && v <= (known ? known->version : sync_recent_version(self, coll, id, h))) {
        self->echoes++;
        return true; /* the store has it */
    }
    if (known && known->head && known->head->state == M_SENDING)
        *hold = known;
    return false;
}

/* Applies one change of a feed page or a stream event as a REMOTE update.
 * Returns 1 when it goes to the store. */
size_t sync_apply_change(sync_t *self, const char *coll, const cJSON *doc)
{
    if (!coll || !cJSON_IsObject(doc) || ts_config_collection(self->config, coll) < 0)
        return 0;
    const char *id = ts_json_string(doc, "id");
    if (!id)
        return 0;
    if (!ts_valid_id(id, strlen(id))) {
        /* not an id the protocol allows: a client could not address it, it
         * would go into the paths of later requests, and one over 64 bytes
         * was cut to a different id */
        ts_warn(LOG, "left out a change to %s whose id is not 1-64 of [A-Za-z0-9_-]", coll);
        return 0;
    }
    long long v = 0;
    ts_json_int(doc, "version", &v);
    sdoc_t *known;
    /* An echo of our own write is not news, but a repair's document at that
     * version may be: its body is what is being checked (the store compares). */
    if (feed_echo(self, coll, id, v, &known) && !self->repairing)
        return 0;
    if (known) {
        char *text = cJSON_PrintUnformatted(doc);
        if (text) {
            hold_change(self, known, text, strlen(text), v);
            cJSON_free(text);
            return 0;
        }
    }
    emit_remote(self, coll, id, cJSON_Duplicate(doc, 1), v);
    return 1;
}

static void set_cursor(sync_t *self, const char *cursor)
{
    if (!cursor || !*cursor)
        return;
    int64_t now_v = cursor_value(self->cursor), new_v = cursor_value(cursor);
    if (now_v >= 0 && new_v >= 0 && new_v <= now_v)
        return; /* never move back (two sources may overlap) */
    ts_copy_text(self->cursor, sizeof self->cursor, cursor);
    cursor_emit(self);
}

/* A {changes, cursor, has_more} page. Returns has_more. */
bool sync_apply_changes_page(sync_t *self, const cJSON *page)
{
    const cJSON *changes = cJSON_GetObjectItemCaseSensitive(page, "changes"), *c;
    cJSON_ArrayForEach(c, changes)
    {
        sync_apply_change(self, ts_json_string(c, "collection"),
                     cJSON_GetObjectItemCaseSensitive(c, "doc"));
    }
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(page, "cursor");
    if (cJSON_IsString(cur))
        set_cursor(self, cur->valuestring);
    else if (cJSON_IsNumber(cur)) {
        char text[32];
        snprintf(text, sizeof text, "%.0f", cur->valuedouble);
        set_cursor(self, text);
    }
    sync_flush(self); /* the page and its cursor commit together */
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(page, "has_more"));
}

static void stream_open(sync_t *self)
{
    req_t *r = sync_req_new(self, R_STREAM);
    ts_api_request_t *q = ts_api_request_new(TS_API_GET, "/v1/changes/stream", NULL);
    if (q) {
        q->stream = true;
        q->raw_events = true; /* most events are echoes: see stream_fast() */
        ts_copy_text(q->last_event_id, sizeof q->last_event_id, *self->cursor ? self->cursor : "0");
    }
    if (sync_api_send(self, q, r) == 0)
        self->stream_id = r->id;
    else
        self->feed_due_us = ts_mono_us() + 1000000;
}

void sync_stream_close(sync_t *self)
{
    if (self->stream_id) {
        ts_api_cancel(self->api_feed, self->stream_id);
        self->stream_id = 0;
    }
}

void sync_feed_request(sync_t *self, bool drain, long timeout_s)
{
    req_t *r = sync_req_new(self, R_FEED);
    r->drain = drain;
    ts_api_request_t *q =
        sync_get_request("/v1/changes?since=%s&timeout=%ld&limit=%d", *self->cursor ? self->cursor : "0",
                    timeout_s, PAGE_LIMIT);
    if (q) {
        q->shape = TS_API_SHAPE_CHANGES;
        if (timeout_s)
            q->timeout_ms = (timeout_s + 10) * 1000;
    }
    if (sync_api_send(self, q, r))
        return;
    if (drain)
        self->drain_id = r->id;
    else
        self->feed_id = r->id;
}

/* Issues the feed's next request when one is due. */
void sync_feed_next(sync_t *self)
{
    if (self->feed_id || !self->feed_due_us || ts_mono_us() < self->feed_due_us)
        return;
    if (self->conn == C_OFFLINE)
        return; /* the probe brings us back */
    self->feed_due_us = 0;
    switch (self->pull) {
    case P_WAIT_HINT: break;
    case P_CATCHUP: sync_feed_request(self, false, 0); break;
    case P_STREAM:
        if (!self->stream_id)
            stream_open(self);
        break;
    case P_LONGPOLL: sync_feed_request(self, false, LONGPOLL_S); break;
    case P_POLL: sync_feed_request(self, false, 0); break;
    default: break;
    }
}

static void feed_after_catchup(sync_t *self)
{
    if (!self->stream_refused)
        sync_pull_set(self, P_STREAM);
    else if (!self->longpoll_refused)
        sync_pull_set(self, P_LONGPOLL);
    else
        sync_pull_set(self, P_POLL);
}

void sync_on_feed(sync_t *self, ts_api_result_t *res)
{
    self->feed_id = 0;
    sync_conn_note(self, res, "feed");
    int64_t now = ts_mono_us();
    if (res->error == TS_API_OK) {
        self->feed_failures = 0;
        bool more = sync_apply_changes_page(self, res->json);
        switch (self->pull) {
        case P_CATCHUP:
            if (more)
                self->feed_due_us = now;
            else
                feed_after_catchup(self);
            break;
        case P_LONGPOLL:
            self->longpoll_timeouts = 0;
            self->feed_due_us = now;
            break;
        case P_POLL:
            self->feed_due_us =
                more ? now : now + (int64_t)self->config->sync.poll_interval_ms * 1000;
            break;
        default: break;
        }
        return;
    }
    if (res->error == TS_API_CANCELLED)
        return;
    if (self->pull == P_LONGPOLL &&
        (res->error == TS_API_NOT_FOUND || res->error == TS_API_BAD_REQUEST ||
         (res->error == TS_API_TIMEOUT && ++self->longpoll_timeouts >= 2 &&
          self->conn == C_ONLINE))) {
        ts_warn(LOG, "long polling does not work here (%s); polling every %d ms",
                ts_api_error_name(res->error), self->config->sync.poll_interval_ms);
        self->longpoll_refused = true;
        sync_pull_set(self, P_POLL);
        return;
    }
    self->feed_failures++;
    sync_check_soon(self, "a feed request failed");
    self->feed_due_us = now + sync_backoff_us(self->feed_failures, PROBE_BASE_MS, PROBE_CAP_MS);
}

/* A JSON string value as raw text (with its quotes) copied out when it is
 * plain: no escapes, shorter than cap. */
static bool plain_string(const char *raw, size_t len, char *out, size_t cap)
{
    if (len < 2 || raw[0] != '"' || raw[len - 1] != '"' || len - 2 >= cap ||
        memchr(raw + 1, '\\', len - 2))
        return false;
    memcpy(out, raw + 1, len - 2);
    out[len - 2] = '\0';
    return true;
}

/* A stream event {"collection": C, "doc": {"id": I, "version": V, ...}}
 * read from its text, without parsing it: while pushes are out nearly every
 * event is the echo of one of our own writes. Returns true when it was
 * dealt with here: an echo of a confirmed write (V not above the version our
 * writes brought I to) is dropped, and a change to a document whose write is
 * out is held as text (hold_change). Anything else, or anything this does
 * not recognise, is parsed and applied as usual. */
static bool stream_fast(sync_t *self, const char *data, size_t len)
{
    const char *v, *doc;
    size_t vn, docn;
    char coll[65], id[65], num[24];
    if (!ts_json_text_field(data, len, "collection", 10, &v, &vn) ||
        !plain_string(v, vn, coll, sizeof coll) ||
        !ts_json_text_field(data, len, "doc", 3, &doc, &docn) ||
        !ts_json_text_field(doc, docn, "id", 2, &v, &vn) || !plain_string(v, vn, id, sizeof id) ||
        !ts_json_text_field(doc, docn, "version", 7, &v, &vn) || vn >= sizeof num)
        return false;
    memcpy(num, v, vn);
    num[vn] = '\0';
    int64_t version;
    if (ts_parse_i64(num, &version) || version <= 0)
        return false;
    sdoc_t *known;
    if (feed_echo(self, coll, id, version, &known))
        return true;
    if (known && *doc == '{') {
        hold_change(self, known, doc, docn, version);
        return true;
    }
    return false;
}

void sync_on_stream_events(sync_t *self, ts_api_event_t **ptrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ts_api_event_t *ev = ptrs[i];
        if (ev->id == self->stream_id && stream_fast(self, ev->data, ev->data_len)) {
            set_cursor(self, ev->event_id);
        } else if (ev->id == self->stream_id) {
            cJSON *json = ev->json ? ev->json : cJSON_ParseWithLength(ev->data, ev->data_len);
            if (json) {
                sync_apply_change(self, ts_json_string(json, "collection"),
                             cJSON_GetObjectItemCaseSensitive(json, "doc"));
                set_cursor(self, ev->event_id);
            }
            if (json != ev->json)
                cJSON_Delete(json);
        }
        ts_api_event_free(ev);
    }
    sync_flush(self);
}

void sync_on_stream_state(sync_t *self, ts_api_stream_msg_t *s)
{
    if (s->id != self->stream_id)
        return;
    ts_api_result_t fake = {.error = s->error, .status = s->status, .unreachable = s->unreachable};
    switch (s->state) {
    case TS_API_STREAM_CONNECTED:
        fake.error = TS_API_OK;
        sync_conn_note(self, &fake, "stream");
        break;
    case TS_API_STREAM_DROPPED:
        sync_check_soon(self, "the change stream dropped");
        snprintf(fake.message, sizeof fake.message, "%s",
                 s->unreachable ? "stream reconnect refused" : "stream dropped");
        sync_conn_note(self, &fake, "stream");
        break;
    case TS_API_STREAM_REFUSED:
        if (s->error == TS_API_UNAUTHORIZED || s->error == TS_API_TLS) {
            sync_conn_note(self, &fake, "stream");
        } else {
            ts_warn(LOG, "server-sent events refused (%s, %ld); long polling instead",
                    ts_api_error_name(s->error), s->status);
            self->stream_refused = true;
        }
        break;
    }
}

void sync_on_stream_result(sync_t *self, ts_api_result_t *res)
{
    if (res->id != self->stream_id)
        return; /* one we cancelled */
    self->stream_id = 0;
    if (self->stream_refused && self->pull == P_STREAM)
        sync_pull_set(self, self->longpoll_refused ? P_POLL : P_LONGPOLL);
    else
        self->feed_due_us = ts_mono_us() + 1000000; /* reopen */
}
