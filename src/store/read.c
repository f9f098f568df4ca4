/* read.c — the reads, answered from memory: get, the built-in selector
 * of query (named selectors are query.c's), status and its sync.status
 * event, metrics. */
#include "store_int.h"
#include "store/page.h"

#include <limits.h>

void store_do_get(ts_call_t *call, collection_t *c)
{
    const char *id = call->doc_id;
    doc_t *d = store_find_doc(c, id);
    if (!d || !d->visible)
        ts_call_fail(call, TS_E_NOT_FOUND, "no document %s/%s", c->name, id);
    else
        store_set_doc_result(call, d, true);
}

typedef struct {
    cJSON *doc;    /* parsed: at once with order_by (its key is needed), else lazily */
    const doc_t *d;
    ts_okey_t key; /* the order_by field's value (borrowed from doc) */
} query_row_t;

/* Orders rows as a named selector's index does (ts_okey_id_cmp: missing,
 * then numbers, then text; ties by id). "desc" walks this backwards. */
static int compare_rows(const void *a, const void *b)
{
    const query_row_t *x = a, *y = b;
    return ts_okey_id_cmp(&x->key, x->d->id, x->d->id_len, &y->key, y->d->id, y->d->id_len);
}

/* Whether a document matches where (equality on each of its fields). */
static bool row_matches(const cJSON *doc, const cJSON *where)
{
    bool match = doc != NULL;
    for (const cJSON *w = where ? where->child : NULL; match && w; w = w->next)
        match = cJSON_Compare(cJSON_GetObjectItemCaseSensitive(doc, w->string), w, 1);
    return match;
}

/* The built-in selector: {where: {field: value, ...}, order_by: [field,
 * "asc"|"desc"], limit: N}, paged like a named one (query.c): `limit` is
 * the total over all pages (with params.limit lowering it), the top-level
 * limit the page size. */
void store_do_query(store_t *self, ts_call_t *call, collection_t *c)
{
    (void)self;
    const cJSON *selector = cJSON_GetObjectItemCaseSensitive(call->params, "selector");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(call->params, "params");
    if (!cJSON_IsObject(selector)) {
        ts_call_fail(call, TS_E_POLICY, "no selector named %s",
                     cJSON_IsString(selector) ? selector->valuestring : "(not a string)");
        return;
    }
    const cJSON *where = cJSON_GetObjectItemCaseSensitive(selector, "where");
    const cJSON *order = cJSON_GetObjectItemCaseSensitive(selector, "order_by");
    long long total = 0, plimit;
    bool has_total = cJSON_GetObjectItemCaseSensitive(selector, "limit") != NULL;
    bool bad_total = has_total && !ts_json_int(selector, "limit", &total);
    if (ts_json_int(params, "limit", &plimit) && (!has_total || plimit < total))
        total = plimit, has_total = true;
    if ((where && !cJSON_IsObject(where)) ||
        (order && (!cJSON_IsArray(order) || !cJSON_IsString(cJSON_GetArrayItem(order, 0)))) ||
        bad_total || (has_total && (total < 0 || total > 100000))) {
        ts_call_fail(call, TS_E_INVALID_PARAMS,
                     "selector must be {where: object, order_by: [field, \"asc\"|\"desc\"], "
                     "limit: 0..100000}");
        return;
    }
    ts_page_t page;
    if (ts_page_params(call, TS_PAGE_BUILTIN_DEFAULT, "builtin", selector, params, &page) != 0)
        return;
    const char *field = order ? cJSON_GetArrayItem(order, 0)->valuestring : NULL;
    const cJSON *dir = order ? cJSON_GetArrayItem(order, 1) : NULL;
    bool desc = cJSON_IsString(dir) && strcmp(dir->valuestring, "desc") == 0;
    /* Every visible document in (order key, id) order; with order_by each is
     * parsed here for its key (and dropped unless it matches), without only
     * the ones the page walks over. */
    query_row_t *rows = NULL;
    size_t nrows = 0, cap = 0;
    for (size_t i = 0; i < c->cap; i++) {
        doc_t *d = doc_at(c, i);
        if (!d || !d->visible)
            continue;
        cJSON *doc = field ? store_parse_doc(d) : NULL;
        if (field && !row_matches(doc, where)) {
            cJSON_Delete(doc);
            continue;
        }
        if (nrows == cap)
            rows = ts_grow(rows, &cap, sizeof *rows, 64);
        rows[nrows] = (query_row_t){doc, d, {0}};
        if (field)
            ts_okey_from_json(cJSON_GetObjectItemCaseSensitive(doc, field), &rows[nrows].key);
        nrows++;
    }
    if (nrows > 1)
        qsort(rows, nrows, sizeof *rows, compare_rows);
    /* The page: after the cursor in walking order, up to the page size and
     * what the total leaves; one match more says there is a next page. */
    size_t lo = 0, hi = nrows;
    if (page.has_cursor) {
        const ts_cursor_t *k = &page.cursor;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int r = ts_okey_id_cmp(&rows[mid].key, rows[mid].d->id, rows[mid].d->id_len, &k->key,
                                   k->id, k->id_len);
            if (desc ? r < 0 : r <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (desc)
            hi = lo, lo = 0;
        else
            hi = nrows;
    }
    long long returned = page.has_cursor ? page.cursor.returned : 0;
    long long left = has_total ? total - returned : LLONG_MAX;
    long long want = page.limit < left ? page.limit : left;
    bool final = left <= page.limit, more = false;
    long long count = 0;
    const query_row_t *last = NULL;
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"items\":[");
    while (lo < hi && want > 0) {
        query_row_t *r = desc ? &rows[--hi] : &rows[lo++];
        if (!field && !row_matches(r->doc = store_parse_doc(r->d), where))
            continue;
        if (count == want) {
            more = true;
            break;
        }
        if (count++)
            ts_buf_puts(&b, ",");
        store_append_doc(&b, r->d);
        last = r;
        if (count == want && final)
            break;
    }
    ts_buf_puts(&b, "],\"stale\":false,\"cursor\":");
    if (more)
        ts_page_append_cursor(&b, &page, (long)count, &last->key, last->d->id, last->d->id_len);
    else
        ts_buf_puts(&b, "null");
    ts_buf_puts(&b, "}");
    for (size_t i = 0; i < nrows; i++)
        cJSON_Delete(rows[i].doc);
    free(rows);
    ts_page_free(&page);
    ts_call_set_buffer(call, &b);
}

/* The oldest pending write's acceptance time (ms), or 0. A scan of every
 * document, so its answer is reused for a second: `status` is for people
 * and dashboards, which may poll it often. */
static int64_t oldest_pending_ms(store_t *self)
{
    int64_t now = ts_mono_us();
    if (self->oldest_checked_us && now - self->oldest_checked_us < 1000000 && self->pending)
        return self->oldest_cached;
    self->oldest_checked_us = now;
    int64_t oldest = 0;
    for (size_t k = 0; k < self->ncollections && self->pending; k++) {
        collection_t *c = &self->collections[k];
        for (size_t i = 0; i < c->cap; i++) {
            doc_t *d = doc_at(c, i);
            if (d && d->pending && (!oldest || d->pending->at_ms < oldest))
                oldest = d->pending->at_ms;
        }
    }
    self->oldest_cached = oldest;
    return oldest;
}

/* The `status` result: the sync actor's view merged with the store's. */
static cJSON *status_json(store_t *self)
{
    cJSON *st = self->sync_status ? cJSON_Duplicate(self->sync_status, 1) : cJSON_CreateObject();
    if (!self->sync_status) {
        cJSON_AddBoolToObject(st, "online", false);
        cJSON_AddStringToObject(st, "api",
                                self->config->api_url ? "starting" : "none");
        cJSON_AddNullToObject(st, "last_sync_at");
        cJSON_AddNullToObject(st, "last_error");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(st, "counters"); /* metrics' (sync section) */
    cJSON_DeleteItemFromObjectCaseSensitive(st, "pending");
    cJSON_AddNumberToObject(st, "pending", (double)self->pending);
    cJSON_DeleteItemFromObjectCaseSensitive(st, "cursor");
    if (self->cursor[0])
        cJSON_AddStringToObject(st, "cursor", self->cursor);
    else
        cJSON_AddNullToObject(st, "cursor");
    int64_t oldest = oldest_pending_ms(self);
    if (oldest) {
        char at[32];
        ts_rfc3339(oldest, at);
        cJSON_AddStringToObject(st, "oldest_pending_at", at);
        cJSON_AddNumberToObject(st, "oldest_pending_age_s", (double)(ts_wall_ms() - oldest) / 1000);
    }
    cJSON_AddStringToObject(st, "storage", self->storage ? self->storage : "ok");
    /* which build answers, and since when: a restart loop shows here */
    cJSON_AddStringToObject(st, "version", TS_VERSION);
    cJSON_AddNumberToObject(st, "uptime_s", (double)((ts_mono_us() - self->started_us) / 1000000));
    cJSON *colls = cJSON_AddObjectToObject(st, "collections");
    for (size_t i = 0; i < self->ncollections; i++)
        cJSON_AddNumberToObject(colls, self->collections[i].name,
                                (double)self->collections[i].live);
    return st;
}

void store_do_status(store_t *self, ts_call_t *call)
{
    cJSON *st = status_json(self);
    char *text = cJSON_PrintUnformatted(st);
    cJSON_Delete(st);
    ts_call_set_result(call, text, strlen(text));
}

/* Publishes sync.status when online flips, pending crosses zero or the
 * storage fails. */
void store_maybe_publish_status(store_t *self)
{
    const cJSON *online = cJSON_GetObjectItemCaseSensitive(self->sync_status, "online");
    bool now_online = cJSON_IsTrue(online), now_zero = self->pending == 0;
    if (now_online == self->last_online && now_zero == self->last_pending_zero &&
        self->storage == self->last_storage)
        return;
    self->last_online = now_online;
    self->last_pending_zero = now_zero;
    self->last_storage = self->storage;
    cJSON *st = status_json(self);
    cJSON *event = cJSON_CreateObject();
    cJSON_AddStringToObject(event, "jsonrpc", "2.0");
    cJSON_AddStringToObject(event, "method", "sync.status");
    cJSON_AddItemToObject(event, "params", st);
    char *text = cJSON_PrintUnformatted(event);
    cJSON_Delete(event);
    ts_event_t *ev = self->events ? ts_event_new("sync", text, strlen(text)) : NULL;
    if (ev && ts_send_EVENTS(self->events, &ev, 1))
        ts_event_free_list(ev);
    cJSON_free(text);
}

void store_do_metrics(store_t *self, ts_call_t *call)
{
    call->partial = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(call->partial, "store");
    cJSON *calls = cJSON_AddObjectToObject(m, "calls");
    for (int i = 0; i < TS_M_NONE; i++)
        cJSON_AddNumberToObject(calls, ts_method_name((ts_method_t)i), (double)self->calls[i]);
    cJSON_AddNumberToObject(m, "pending", (double)self->pending);
    cJSON_AddNumberToObject(m, "rejected_writes", (double)self->rejected_writes);
    cJSON *sync = cJSON_AddObjectToObject(m, "sync");
    cJSON_AddNumberToObject(sync, "confirmed", (double)self->confirmed);
    cJSON_AddNumberToObject(sync, "rejected", (double)self->rejected);
    cJSON_AddNumberToObject(sync, "conflicts", (double)self->conflicts);
    cJSON_AddNumberToObject(sync, "remote_applied", (double)self->remote_applied);
    cJSON *docs = cJSON_AddObjectToObject(m, "documents");
    for (size_t i = 0; i < self->ncollections; i++)
        cJSON_AddNumberToObject(docs, self->collections[i].name,
                                (double)self->collections[i].live);
    /* The sync actor's counters, as its last status carried them (at most
     * 250 ms old): pushes, pulls, outcomes, HTTP requests and attempts,
     * token refreshes. */
    const cJSON *counters = cJSON_GetObjectItemCaseSensitive(self->sync_status, "counters");
    if (counters)
        cJSON_AddItemToObject(call->partial, "sync", cJSON_Duplicate(counters, true));
}

/* An on-demand answer says how fresh it is: `stale`, `age_ms` and, when
 * older than max_stale_ms (offline), `expired` in its result. */
void store_add_freshness(ts_call_t *call)
{
    if (!call->fresh || call->err_code || !call->result || call->result_len < 2)
        return;
    bool stale = call->fresh & TS_FRESH_STALE, expired = call->fresh & TS_FRESH_EXPIRED;
    ts_buf_t b = {0};
    const char *r = call->result;
    size_t len = call->result_len;
    static const char was[] = ",\"stale\":false,";
    const char *at = NULL; /* a query's "stale": false, to replace */
    /* Only a query's: its own comes last, after the items. A get has none
     * of its own, and the text may be a field of its document. */
    for (const char *p = r; call->method == TS_M_QUERY &&
                            (p = memmem(p, len - (size_t)(p - r), was, sizeof was - 1));
         p++)
        at = p;
    if (at) {
        ts_buf_append(&b, r, (size_t)(at - r));
        ts_buf_printf(&b, ",\"stale\":%s,\"age_ms\":%lld%s,", stale ? "true" : "false",
                      (long long)call->age_ms, expired ? ",\"expired\":true" : "");
        ts_buf_append(&b, at + sizeof was - 1, len - (size_t)(at - r) - (sizeof was - 1));
    } else {
        ts_buf_append(&b, r, len - 1);
        ts_buf_printf(&b, ",\"stale\":%s,\"age_ms\":%lld%s}", stale ? "true" : "false",
                      (long long)call->age_ms, expired ? ",\"expired\":true" : "");
    }
    ts_call_set_buffer(call, &b);
}
