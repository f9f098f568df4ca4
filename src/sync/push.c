/* push.c — pushing the queued mutations: each ready head sent alone or in a
 * POST /v1/_batch, and what the server's answer means for it (confirmed,
 * rejected, conflict, sent again later). Moves mutations through the
 * mutation state machine of queue.c (sync_mstate_set). */
#include "sync_int.h"

#include <strings.h>

/* The create's body with "id" put back first. */
static char *body_with_id(const mut_t *m)
{
    const char *b = m->body ? m->body : "{}";
    while (*b == ' ' || *b == '\n' || *b == '\t' || *b == '\r')
        b++;
    if (*b != '{')
        return NULL;
    b++;
    const char *rest = b;
    while (*rest == ' ' || *rest == '\n' || *rest == '\t' || *rest == '\r')
        rest++;
    ts_buf_t buf = {0};
    ts_buf_puts(&buf, "{\"id\":");
    ts_buf_json_string(&buf, m->doc->id, strlen(m->doc->id));
    if (*rest != '}')
        ts_buf_puts(&buf, ",");
    ts_buf_puts(&buf, b);
    size_t len;
    return ts_buf_take(&buf, &len);
}

/* If-Match for m: the version its write was made on, or the one our own
 * confirmed writes brought the document to, whichever is newer (sdoc_t). */
static int64_t if_match_of(const mut_t *m)
{
    return m->base_version > m->doc->version ? m->base_version : m->doc->version;
}

static void mark_sending(sync_t *self, mut_t *m)
{
    sync_mstate_set(self, m, M_SENDING);
    self->sends++;
    m->try_ms = ts_wall_ms();
}

/* Whether a failed round left m unsent: every attempt's connect was
 * refused or its host did not resolve, so no byte reached a server. */
static bool never_left(const ts_api_result_t *res)
{
    return res->error == TS_API_NETWORK && !res->left;
}

/* Reports m's first send for the audit trail, once: on u (the write's
 * outcome) or, with u NULL, on a SENT update of its own. Most writes are
 * answered at once, so "sent" rides on the answer instead of costing the
 * store and persist a message and a commit of its own per write. */
static void report_sent(sync_t *self, mut_t *m, ts_sync_update_t *u)
{
    if (m->sent || !m->sent_ms)
        return;
    if (!u && !(u = sync_emit(self, TS_SYNC_SENT, m)))
        return;
    u->sent_ms = m->sent_ms;
    u->sent_version = m->op == TS_OP_CREATE ? m->base_version : if_match_of(m);
    m->sent = true;
}

static void push_send(sync_t *self, mut_t *m)
{
    sdoc_t *d = m->doc;
    char path[256];
    ts_api_request_t *q = NULL;
    if (m->op == TS_OP_CREATE) {
        snprintf(path, sizeof path, "/v1/%s", d->coll);
        char *body = body_with_id(m);
        if (body) {
            q = ts_api_request_new(TS_API_POST, path, body);
            free(body);
        }
        if (q)
            q->shape = TS_API_SHAPE_DOC;
    } else {
        snprintf(path, sizeof path, "/v1/%s/%s", d->coll, d->id);
        q = ts_api_request_new(m->op == TS_OP_UPDATE ? TS_API_PATCH : TS_API_DELETE, path,
                               m->op == TS_OP_UPDATE ? (m->body ? m->body : "{}") : NULL);
        if (q) {
            q->if_match = if_match_of(m);
            q->shape = m->op == TS_OP_UPDATE ? TS_API_SHAPE_DOC : TS_API_SHAPE_NONE;
        }
    }
    if (q) {
        ts_copy_text(q->idempotency_key, sizeof q->idempotency_key, m->mutation);
        q->max_attempts = PUSH_ATTEMPTS;
    }
    req_t *r = sync_req_new(self, R_PUSH);
    r->m = m;
    if (sync_api_send(self, q, r)) {
        m->rounds++;
        m->due_us = ts_mono_us() + sync_backoff_us(m->rounds, PUSH_BACKOFF_BASE_MS, PUSH_BACKOFF_CAP_MS);
        sync_mstate_set(self, m, M_BACKOFF);
        return;
    }
    mark_sending(self, m);
}

/* Appends m as one op of a batch: the same write push_send would send, with
 * the same idempotency key and If-Match (docs/CLINIC_API.md). 0, or -1
 * with nothing appended. */
static int batch_append(ts_buf_t *b, const mut_t *m, bool first)
{
    static const char *const methods[] = {[TS_OP_CREATE] = "POST", [TS_OP_UPDATE] = "PATCH",
                                          [TS_OP_DELETE] = "DELETE"};
    const sdoc_t *d = m->doc;
    char *created = m->op == TS_OP_CREATE ? body_with_id(m) : NULL;
    if (m->op == TS_OP_CREATE && !created)
        return -1;
    ts_buf_printf(b, "%s{\"method\":\"%s\",\"collection\":", first ? "" : ",", methods[m->op]);
    ts_buf_json_string(b, d->coll, strlen(d->coll));
    if (m->op != TS_OP_CREATE) {
        ts_buf_puts(b, ",\"id\":");
        ts_buf_json_string(b, d->id, strlen(d->id));
        int64_t v = if_match_of(m);
        if (v > 0)
            ts_buf_printf(b, ",\"if_match\":%lld", (long long)v);
    }
    ts_buf_printf(b, ",\"idempotency_key\":\"%s\"", m->mutation);
    if (m->op != TS_OP_DELETE) {
        ts_buf_puts(b, ",\"body\":");
        ts_buf_puts(b, created ? created : m->body ? m->body : "{}");
    }
    free(created);
    return ts_buf_puts(b, "}");
}

/* Sends up to batch_limit ready heads, oldest seq first, as one POST
 * /v1/_batch. Each is still its document's only write in flight, so order
 * per document holds; the server answers each op as its own request. */
static int push_batch(sync_t *self)
{
    mut_t **ms = ts_xmalloc((size_t)self->batch_limit * sizeof *ms);
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"ops\":[");
    size_t n = 0;
    while (self->heap_len && n < (size_t)self->batch_limit) {
        struct heap_entry e = sync_heap_pop(self);
        mut_t *m = e.doc->head;
        if (!m || m->seq != e.seq || m->state != M_QUEUED || e.doc->paused_seq) {
            sync_doc_maybe_free(self, e.doc);
            continue;
        }
        size_t size = (m->body ? strlen(m->body) : 0) + 256;
        if (n && b.len + size > BATCH_MAX_BYTES) {
            sync_heap_push(self, e.doc); /* the next batch's */
            break;
        }
        if (size > BATCH_MAX_BYTES || batch_append(&b, m, n == 0) < 0) {
            push_send(self, m); /* too big for a batch, or not a document: alone */
            continue;
        }
        ms[n++] = m;
    }
    ts_buf_puts(&b, "]}");
    size_t len;
    char *body = ts_buf_take(&b, &len);
    if (!n) {
        free(body);
        free(ms);
        return 0;
    }
    ts_api_request_t *q = body ? ts_api_request_new(TS_API_POST, "/v1/_batch", body) : NULL;
    free(body);
    if (q) {
        q->shape = TS_API_SHAPE_ANY;
        q->max_attempts = PUSH_ATTEMPTS;
    }
    req_t *r = sync_req_new(self, R_BATCH);
    if (sync_api_send(self, q, r)) {
        for (size_t i = 0; i < n; i++) {
            ms[i]->rounds++;
            ms[i]->due_us = ts_mono_us() + sync_backoff_us(ms[i]->rounds, PUSH_BACKOFF_BASE_MS,
                                                      PUSH_BACKOFF_CAP_MS);
            sync_mstate_set(self, ms[i], M_BACKOFF);
        }
        free(ms);
        return 0;
    }
    r->batch = ms;
    r->nbatch = n;
    for (size_t i = 0; i < n; i++)
        mark_sending(self, ms[i]);
    return 0;
}

/* Sends ready heads, oldest seq first, up to the concurrency bound: in
 * batches while the server takes them, else one request per write. */
void sync_push_pump(sync_t *self)
{
    if (self->conn == C_OFFLINE)
        return;
    bool batch = !self->batch_off && self->batch_limit > 1;
    while (self->heap_len && self->push_reqs < self->config->sync.concurrency) {
        if (batch) {
            if (push_batch(self) < 0)
                break; /* out of memory: the next turn tries again */
            continue;
        }
        struct heap_entry e = sync_heap_pop(self);
        sdoc_t *d = e.doc;
        mut_t *m = d->head;
        if (m && m->seq == e.seq && m->state == M_QUEUED && !d->paused_seq)
            push_send(self, m);
        else
            sync_doc_maybe_free(self, d);
    }
}

static void push_retry_later(sync_t *self, mut_t *m, const ts_api_result_t *res)
{
    report_sent(self, m, NULL); /* no answer yet: the audit shows it went out */
    m->rounds++;
    self->retries++;
    /* A server that is not there refuses nothing: the write is not stuck
     * (status says offline), only waiting. */
    if (!never_left(res))
        m->rounds_out++;
    if (!m->stuck && m->rounds_out >= self->config->sync.stuck_after) {
        m->stuck = true;
        self->stuck++;
        ts_warn(LOG, "mutation %s (%s/%s) is stuck after %d rounds: %s", m->mutation,
                m->doc->coll, m->doc->id, m->rounds, ts_api_error_name(res->error));
    }
    int64_t delay = sync_backoff_us(m->rounds, PUSH_BACKOFF_BASE_MS, PUSH_BACKOFF_CAP_MS);
    if (res->retry_after_ms > 0 && res->retry_after_ms * 1000 > delay)
        delay = res->retry_after_ms * 1000;
    m->due_us = ts_mono_us() + delay;
    sync_mstate_set(self, m, M_BACKOFF);
}

static void push_final(sync_t *self, mut_t *m, ts_sync_kind_t kind, const ts_api_result_t *res,
                       cJSON *doc)
{
    ts_sync_update_t *u = sync_emit(self, kind, m);
    self->pushed++;
    report_sent(self, m, u);
    u->doc = doc;
    if (kind == TS_SYNC_REJECTED) {
        self->rejected++;
        ts_copy_text(u->error, sizeof u->error, ts_api_error_name(res->error));
        const char *msg = res->json ? ts_json_string(res->json, "error") : NULL;
        snprintf(u->message, sizeof u->message, "the server refused the %s (%ld%s%s)",
                 m->op == TS_OP_CREATE   ? "create"
                 : m->op == TS_OP_UPDATE ? "update"
                                         : "delete",
                 res->status, msg ? ": " : "", msg ? msg : "");
        cJSON *errors = res->json ? cJSON_GetObjectItemCaseSensitive(res->json, "errors") : NULL;
        if (cJSON_IsArray(errors))
            u->errors = cJSON_Duplicate(errors, 1);
    } else if (kind == TS_SYNC_CONFLICT) {
        self->conflicts++;
        long long v;
        if (doc && ts_json_int(doc, "version", &v) && v > m->doc->version)
            m->doc->version = v;
    }
    /* The store answers with a DROP (rolled back, or theirs) or a
     * replacement of this seq (resolved); until then the document waits. */
    sync_mstate_set(self, m, M_SETTLING);
}

static void push_confirmed(sync_t *self, mut_t *m, cJSON *doc, int64_t version)
{
    ts_sync_update_t *u = sync_emit(self, TS_SYNC_CONFIRMED, m);
    self->pushed++;
    self->confirmed++;
    report_sent(self, m, u);
    u->doc = doc;
    u->version = version;
    sdoc_t *d = m->doc;
    if (version > d->version)
        d->version = version;
    d->unacked++;
    sync_head_pop(self, d);
}

static void fetch_current(sync_t *self, mut_t *m)
{
    req_t *r = sync_req_new(self, R_FETCH);
    r->m = m;
    ts_api_request_t *q = sync_get_request("/v1/%s/%s", m->doc->coll, m->doc->id);
    if (q)
        q->shape = TS_API_SHAPE_DOC;
    if (sync_api_send(self, q, r) == 0)
        sync_mstate_set(self, m, M_FETCHING);
    else
        push_final(self, m, TS_SYNC_CONFLICT, NULL, NULL);
}

/* Whether a 422 refuses the Idempotency-Key (used for a different request,
 * docs/CLINIC_API.md), not the write. */
static bool key_reused(const ts_api_result_t *res)
{
    const cJSON *errors = res->json ? cJSON_GetObjectItemCaseSensitive(res->json, "errors") : NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, errors)
    {
        const char *field = ts_json_string(e, "field");
        if (field && strcasecmp(field, "Idempotency-Key") == 0)
            return true;
    }
    return false;
}

/* What the answer to m's write means for it (sent alone or in a batch). */
static void push_outcome(sync_t *self, ts_api_result_t *res, mut_t *m)
{
    /* Its first send, for the audit trail and cancel: the first attempt
     * that may have reached the server, whatever its answer. */
    if (!m->sent_ms && m->try_ms && !never_left(res))
        m->sent_ms = m->try_ms;
    if (m->dropped) { /* dropped by the store while out: whatever happened, forget it */
        report_sent(self, m, NULL);
        sync_mut_forget(self, m);
        return;
    }
    switch (res->error) {
    case TS_API_OK: {
        cJSON *doc = NULL;
        long long v = 0;
        if (m->op != TS_OP_DELETE && res->json) {
            ts_json_int(res->json, "version", &v);
            doc = res->json; /* taken, not copied: the result is freed without it */
            res->json = NULL;
        } else if (m->op == TS_OP_DELETE) {
            /* the server's tombstone: one past the version the delete was
             * sent on (its If-Match; the sync actor's own version is 0 for
             * a document it no longer remembers) */
            v = if_match_of(m) + 1;
        }
        push_confirmed(self, m, doc, v);
        break;
    }
    case TS_API_NOT_FOUND:
        if (m->op == TS_OP_DELETE)
            push_confirmed(self, m, NULL, 0); /* already gone */
        else
            push_final(self, m, TS_SYNC_REJECTED, res, NULL);
        break;
    case TS_API_CONFLICT: {
        cJSON *cur = res->json ? cJSON_GetObjectItemCaseSensitive(res->json, "current") : NULL;
        if (cJSON_IsObject(cur))
            push_final(self, m, TS_SYNC_CONFLICT, res, cJSON_Duplicate(cur, 1));
        else
            fetch_current(self, m);
        break;
    }
    case TS_API_VALIDATION:
        if (key_reused(res)) {
            /* Not a refusal of the write: the server holds this key for a
             * request it remembers differently. The write goes again under a
             * new key; if the server did apply it, If-Match (or the create's
             * id) makes that a 409, and the conflict policy decides. */
            ts_warn(LOG, "mutation %s (%s/%s): the server holds its idempotency key for a "
                         "different request; sending it again under a new key",
                    m->mutation, m->doc->coll, m->doc->id);
            push_final(self, m, TS_SYNC_REKEY, res, NULL);
            break;
        }
        push_final(self, m, TS_SYNC_REJECTED, res, NULL);
        break;
    case TS_API_FORBIDDEN:
    case TS_API_BAD_REQUEST: push_final(self, m, TS_SYNC_REJECTED, res, NULL); break;
    case TS_API_CANCELLED: sync_mstate_set(self, m, M_QUEUED); break;
    default: /* network, timeout, 5xx, 429, bad response, unauthorized, TLS, internal */
        push_retry_later(self, m, res);
        break;
    }
}

void sync_on_push(sync_t *self, ts_api_result_t *res, mut_t *m)
{
    sync_conn_note(self, res, "push");
    push_outcome(self, res, m);
}

/* A batch's writes go back in line unsent (the batch was refused whole). */
static void batch_requeue(sync_t *self, req_t *r)
{
    for (size_t i = 0; i < r->nbatch; i++) {
        mut_t *m = r->batch[i];
        if (m->dropped)
            sync_mut_forget(self, m);
        else
            sync_mstate_set(self, m, M_QUEUED);
    }
}

/* The answer to a POST /v1/_batch: each op's result is handled exactly as
 * the answer to that write sent alone. A server without the route (404,
 * 405, 501, 400, or a 2xx that is not {results}) gets single requests from
 * now on; a 413 halves the batch size; a failure of the whole request
 * (network, 5xx, 401 after a refresh...) counts for every write in it. */
void sync_on_batch(sync_t *self, ts_api_result_t *res, req_t *r)
{
    sync_conn_note(self, res, "push");
    cJSON *results =
        res->error == TS_API_OK ? cJSON_GetObjectItemCaseSensitive(res->json, "results") : NULL;
    bool fits = cJSON_IsArray(results) && (size_t)cJSON_GetArraySize(results) == r->nbatch;
    long st = res->status;
    if (!fits && (res->error == TS_API_OK || st == 400 || st == 404 || st == 405 || st == 501)) {
        if (!self->batch_off)
            ts_warn(LOG, "POST /v1/_batch is not usable here (status %ld%s): one request per "
                    "write from now on", st, res->error == TS_API_OK ? ", no results" : "");
        self->batch_off = true;
        batch_requeue(self, r);
        return;
    }
    if (!fits && st == 413) {
        self->batch_limit = self->batch_limit / 2 > 1 ? self->batch_limit / 2 : 1;
        ts_warn(LOG, "POST /v1/_batch: 413 for %zu writes; batches of %d from now on", r->nbatch,
                self->batch_limit);
        batch_requeue(self, r);
        return;
    }
    if (!fits) {
        for (size_t i = 0; i < r->nbatch; i++)
            push_outcome(self, res, r->batch[i]);
        return;
    }
    size_t i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, results)
    {
        mut_t *m = r->batch[i++];
        long long status = 0;
        ts_json_int(it, "status", &status);
        ts_api_result_t one = {.id = res->id, .status = (long)status, .retry_after_ms = -1,
                               .attempts = res->attempts,
                               .error = ts_api_status_class((long)status)};
        one.json = cJSON_DetachItemFromObjectCaseSensitive(it, "body"); /* see push_outcome */
        long long v;
        if (one.error == TS_API_OK && m->op != TS_OP_DELETE &&
            !(ts_json_string(one.json, "id") && ts_json_int(one.json, "version", &v)))
            one.error = TS_API_BAD_RESPONSE; /* the shape check of a single answer */
        snprintf(one.message, sizeof one.message, "batch op %zu: status %lld", i - 1, status);
        push_outcome(self, &one, m);
        cJSON_Delete(one.json); /* NULL when push_outcome took it */
    }
}

void sync_on_fetch(sync_t *self, ts_api_result_t *res, mut_t *m)
{
    sync_conn_note(self, res, "fetch");
    if (m->dropped) {
        push_outcome(self, res, m); /* the same forgetting */
        return;
    }
    if (res->error == TS_API_OK) {
        push_final(self, m, TS_SYNC_CONFLICT, res, cJSON_Duplicate(res->json, 1));
    } else if (res->error == TS_API_NOT_FOUND) {
        /* Gone at the server: theirs is a tombstone. */
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "id", m->doc->id);
        cJSON_AddBoolToObject(t, "deleted", 1);
        push_final(self, m, TS_SYNC_CONFLICT, res, t);
    } else {
        push_retry_later(self, m, res); /* the mutation itself is sent again later */
    }
}

/* BACKOFF heads whose time has come are queued again. */
void sync_push_wake(sync_t *self, int64_t now)
{
    for (size_t i = 0; i < self->nwaiting;) {
        mut_t *m = self->waiting[i];
        if (m->due_us <= now)
            sync_mstate_set(self, m, M_QUEUED); /* removes it from waiting */
        else
            i++;
    }
}
