/* live.c — live queries: `subscribe`, `unsubscribe`, and `query.changed`
 * notifications on the subscriber's own connection.
 *
 * Identical subscriptions (collection, selector, params) share one live
 * query: one read-set, one run per change, one diff. A change that touches
 * its read-set makes it dirty; after the message that carried the change,
 * each dirty query runs once in the store (so at most one notification per
 * query per batch of changes); a result equal to the last one sends
 * nothing. A run that fails (the selector errs or overspends, or is gone
 * after a reload) ends its subscriptions with `query.closed`.
 *
 * A subscriber that goes away is noticed when the front door cannot reach
 * it (ZeroMQ's ROUTER_MANDATORY; heartbeats close dead TCP peers): its
 * subscriptions end with it. */
#include "cache/cache_int.h"

#define MAX_PARAMS_BYTES (16 << 10)

/* ---- clients ---- */

static const unsigned char *route_id(const unsigned char *route, size_t route_len, size_t *len)
{
    uint32_t l = 0;
    if (route_len < 4)
        return *len = 0, NULL;
    memcpy(&l, route, 4);
    *len = l <= route_len - 4 ? l : 0;
    return route + 4;
}

static client_t *client_find(cache_t *self, const unsigned char *id, size_t len)
{
    hnode_t *n = hmap_find(&self->clients, (const char *)id, len, hmap_hash((const char *)id, len));
    return n ? CONTAINER(n, client_t, node) : NULL;
}

static client_t *client_get(cache_t *self, const ts_envelope_t *e)
{
    size_t len;
    const unsigned char *id = route_id(e->route, e->route_len, &len);
    client_t *c = client_find(self, id, len);
    if (c)
        return c;
    c = ts_xcalloc(1, sizeof *c);
    c->route = (unsigned char *)ts_memdup((const char *)e->route, e->route_len);
    c->route_len = e->route_len;
    c->delimiter = e->delimiter;
    id = route_id(c->route, c->route_len, &len);
    c->node = (hnode_t){.hash = hmap_hash((const char *)id, len), .key = (const char *)id,
                        .key_len = len};
    hmap_add(&self->clients, &c->node);
    return c;
}

/* ---- notifications ---- */

static void notify(cache_t *self, const client_t *c, ts_buf_t *text)
{
    ts_notice_t *n = ts_xcalloc(1, sizeof *n);
    n->route = (unsigned char *)ts_memdup((const char *)c->route, c->route_len);
    n->route_len = c->route_len;
    n->delimiter = c->delimiter;
    n->payload = ts_buf_take(text, &n->payload_len);
    if (self->notices_last)
        self->notices_last->next = n;
    else
        self->notices = n;
    self->notices_last = n;
}

static void send_closed(cache_t *self, const sub_t *s, const char *reason)
{
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"query.closed\",\"params\":{\"sub\":");
    ts_buf_json_string(&b, s->id, strlen(s->id));
    ts_buf_puts(&b, ",\"reason\":");
    ts_buf_json_string(&b, reason, strlen(reason));
    ts_buf_puts(&b, "}}");
    notify(self, s->client, &b);
    self->closed++;
}

/* ---- live queries and subscriptions ---- */

static void live_free(cache_t *self, live_t *l)
{
    watch_unset(self, &l->w);
    hmap_del(&self->lives, &l->node);
    for (live_t **p = &self->dirty; *p; p = &(*p)->next_dirty)
        if (*p == l) {
            *p = l->next_dirty;
            break;
        }
    free((char *)l->node.key);
    memo_free_rows(l->rows);
    free(l->bound_param);
    cJSON_Delete(l->request);
    free(l->selector);
    free(l->answer);
    free(l);
}

static void sub_free(cache_t *self, sub_t *s)
{
    live_t *l = s->live;
    client_t *c = s->client;
    for (sub_t **p = &l->subs; *p; p = &(*p)->next_in_live)
        if (*p == s) {
            *p = s->next_in_live;
            break;
        }
    for (sub_t **p = &c->subs; *p; p = &(*p)->next_in_client)
        if (*p == s) {
            *p = s->next_in_client;
            break;
        }
    hmap_del(&self->subs, &s->node);
    l->nsubs--;
    c->nsubs--;
    self->nsubs--;
    free(s);
    if (!l->nsubs && !l->waiting)
        live_free(self, l);
    if (!c->nsubs) {
        hmap_del(&self->clients, &c->node);
        free(c->route);
        free(c);
    }
}

/* The items array of a `query` result ({"items":[...],"stale":...}). */
static const char *items_of(const char *answer, size_t len, size_t *items_len)
{
    static const char head[] = "{\"items\":", tail[] = "],\"stale\":";
    const char *end = NULL;
    for (const char *p = answer; p && (p = memmem(p, len - (size_t)(p - answer), tail,
                                                   sizeof tail - 1));
         p++)
        end = p;
    if (len < sizeof head || memcmp(answer, head, sizeof head - 1) != 0 || !end) {
        *items_len = 2;
        return "[]";
    }
    *items_len = (size_t)(end + 1 - (answer + sizeof head - 1));
    return answer + sizeof head - 1;
}

static void answer_subscribe(cache_t *self, ts_envelope_t *e, live_t *l)
{
    ts_call_t *call = &e->calls[0];
    client_t *c = client_get(self, e);
    int cap = self->config->cache.max_subscriptions;
    if (c->nsubs >= (size_t)cap || self->nsubs >= (size_t)self->config->cache.max_subscriptions_total) {
        ts_call_fail(call, TS_E_BUSY,
                     c->nsubs >= (size_t)cap
                         ? "this connection has %d live queries, the most it may have "
                           "(cache.max_subscriptions): unsubscribe some first"
                         : "the engine has %d live queries, the most it may have "
                           "(cache.max_subscriptions_total)",
                     c->nsubs >= (size_t)cap ? cap : self->config->cache.max_subscriptions_total);
        if (!c->nsubs) {
            hmap_del(&self->clients, &c->node);
            free(c->route);
            free(c);
        }
        cache_answer(self, e);
        return;
    }
    const char *mode = ts_json_string(call->params, "mode");
    long long since = -1;
    bool resumed = cJSON_GetObjectItemCaseSensitive(call->params, "since") &&
                   ts_json_int(call->params, "since", &since) && since == l->version;
    sub_t *s = ts_xcalloc(1, sizeof *s);
    snprintf(s->id, sizeof s->id, "s%llu", (unsigned long long)++self->next_sub);
    s->node = (hnode_t){.hash = hmap_hash(s->id, strlen(s->id)), .key = s->id,
                        .key_len = strlen(s->id)};
    s->live = l;
    s->client = c;
    s->diff = !mode || strcmp(mode, "full") != 0;
    s->next_in_live = l->subs;
    l->subs = s;
    s->next_in_client = c->subs;
    c->subs = s;
    l->nsubs++;
    c->nsubs++;
    self->nsubs++;
    hmap_add(&self->subs, &s->node);
    size_t il;
    const char *items = items_of(l->answer, l->answer_len, &il);
    ts_buf_t b = {0};
    ts_buf_reserve(&b, il + 96);
    ts_buf_printf(&b, "{\"sub\":\"%s\",\"version\":%lld,\"mode\":\"%s\",\"resumed\":%s,\"items\":",
                  s->id, (long long)l->version, s->diff ? "diff" : "full",
                  resumed ? "true" : "false");
    ts_buf_append(&b, items, il);
    ts_buf_puts(&b, "}");
    ts_call_set_buffer(call, &b);
    cache_answer(self, e);
}

void live_subscribe(cache_t *self, ts_envelope_t *e)
{
    ts_call_t *call = &e->calls[0];
    const char *selector = ts_json_string(call->params, "selector");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(call->params, "params");
    const char *mode = ts_json_string(call->params, "mode");
    const cJSON *since = cJSON_GetObjectItemCaseSensitive(call->params, "since");
    long long v;
    const char *bad = !selector                                ? "params.selector must be a string"
                      : params && !cJSON_IsObject(params)      ? "params.params must be an object"
                      : cJSON_GetObjectItemCaseSensitive(call->params, "mode") &&
                              (!mode || (strcmp(mode, "diff") && strcmp(mode, "full")))
                          ? "params.mode must be \"diff\" or \"full\""
                      : since && !ts_json_int(call->params, "since", &v)
                          ? "params.since must be a version (an integer)"
                          : NULL;
    if (bad || e->route_len < 4) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "%s", bad ? bad : "a live query needs a connection");
        cache_answer(self, e);
        return;
    }
    cJSON *request = cJSON_CreateObject();
    cJSON_AddStringToObject(request, "collection", call->collection);
    cJSON_AddStringToObject(request, "selector", selector);
    cJSON_AddItemToObject(request, "params",
                          params ? cJSON_Duplicate(params, true) : cJSON_CreateObject());
    cJSON *p = cJSON_GetObjectItemCaseSensitive(request, "params");
    if (!cJSON_GetObjectItemCaseSensitive(p, "now")) {
        char now[32];
        ts_rfc3339(ts_wall_ms(), now);
        cJSON_AddStringToObject(p, "now", now);
    }
    memo_key(self, request, NULL);
    if (self->buf.len > MAX_PARAMS_BYTES) {
        cJSON_Delete(request);
        ts_call_fail(call, TS_E_INVALID_PARAMS,
                     "params of a live query take at most %d bytes (these take %zu)",
                     MAX_PARAMS_BYTES, self->buf.len);
        cache_answer(self, e);
        return;
    }
    uint64_t h = hmap_hash(self->buf.data, self->buf.len);
    hnode_t *n = hmap_find(&self->lives, self->buf.data, self->buf.len, h);
    live_t *l = n ? CONTAINER(n, live_t, node) : NULL;
    /* A run with the store may carry writes sent before this subscribe
     * (their changes made it run): wait for it rather than answer what
     * the query held before them. */
    if (l && l->ready && !l->running) {
        cJSON_Delete(request);
        answer_subscribe(self, e, l);
        return;
    }
    if (!l) {
        l = ts_xcalloc(1, sizeof *l);
        l->w.live = true;
        l->node = (hnode_t){.hash = h, .key = ts_memdup(self->buf.data, self->buf.len),
                            .key_len = self->buf.len};
        l->request = request;
        l->selector = ts_xstrdup(selector);
        hmap_add(&self->lives, &l->node);
        int coll = ts_config_collection(self->config, call->collection);
        l->w.collection = (uint16_t)(coll < 0 ? 0 : coll);
        l->running = true;
        const char *param = NULL;
        if (memo_bound(self, l->request, &param)) /* rows: changes patch it, no runs */
            l->bound_param = ts_xstrdup(param);
        cache_run(self, 1, l->w.collection, l->request, l->bound_param != NULL);
    } else {
        cJSON_Delete(request);
    }
    e->held_next = l->waiting;
    l->waiting = e;
}

void live_unsubscribe(cache_t *self, ts_envelope_t *e)
{
    ts_call_t *call = &e->calls[0];
    const char *id = ts_json_string(call->params, "sub");
    if (!id) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.sub must be a string");
        cache_answer(self, e);
        return;
    }
    hnode_t *n = hmap_find(&self->subs, id, strlen(id), hmap_hash(id, strlen(id)));
    sub_t *s = n ? CONTAINER(n, sub_t, node) : NULL;
    size_t len, mine_len;
    const unsigned char *mine = route_id(e->route, e->route_len, &mine_len);
    const unsigned char *owner = s ? route_id(s->client->route, s->client->route_len, &len) : NULL;
    bool ok = s && len == mine_len && memcmp(owner, mine, len) == 0; /* only its own */
    if (ok)
        sub_free(self, s);
    const char *text = ok ? "{\"unsubscribed\":true}" : "{\"unsubscribed\":false}";
    ts_call_set_result(call, ts_xstrdup(text), strlen(text));
    cache_answer(self, e);
}

static void mark_dirty(cache_t *self, live_t *l)
{
    if (l->dirty)
        return;
    l->dirty = true;
    l->dirty_us = ts_mono_us();
    l->next_dirty = self->dirty;
    self->dirty = l;
}

void live_touched(cache_t *self, live_t *l)
{
    /* A run with the store already sees this change (the store sends
     * changes and results in order): nothing to do. */
    if (l->running)
        return;
    l->rerun = true;
    mark_dirty(self, l);
}

void live_patched(cache_t *self, live_t *l)
{
    if (!l->running) /* its rows have the change: an answer without a run */
        mark_dirty(self, l);
}

static void apply_answer(cache_t *self, live_t *l, char *text, size_t len);

void live_flush(cache_t *self)
{
    while (self->dirty) {
        live_t *l = self->dirty;
        self->dirty = l->next_dirty;
        l->next_dirty = NULL;
        l->dirty = false;
        ts_buf_t b = {0};
        if (!l->rerun && l->rows &&
            memo_slice(self, l->rows, l->request, l->bound_param, &b) == 0) {
            size_t len;
            char *text = ts_buf_take(&b, &len);
            apply_answer(self, l, text, len);
            continue;
        }
        ts_buf_free(&b);
        l->rerun = false;
        l->running = true;
        self->recomputes++;
        cache_run(self, 1, l->w.collection, l->request, l->bound_param != NULL);
    }
}

/* ---- results and diffs ---- */

/* One item of a result as text (borrowed): the document and its id, the
 * raw JSON string ("" when it has none). */
typedef struct {
    const char *text, *id;
    size_t len, id_len;
} item_t;

static item_t *split_items(const char *items, size_t len, size_t *n)
{
    size_t cap = 32, k = 0, pos = 0, tl;
    item_t *v = ts_xmalloc(cap * sizeof *v);
    const char *t;
    while (ts_json_text_element(items, len, &pos, &t, &tl)) {
        if (k == cap)
            v = ts_xrealloc(v, (cap *= 2) * sizeof *v);
        item_t *it = &v[k++];
        *it = (item_t){.text = t, .len = tl};
        if (!ts_json_text_field(t, tl, "id", 2, &it->id, &it->id_len) || *it->id != '"')
            it->id = "\"\"", it->id_len = 2;
    }
    *n = k;
    return v;
}

static bool same_id(const item_t *a, const item_t *b)
{
    return a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0;
}

/* Whether an item's document changed: its bytes, and when they differ,
 * its value (the one JSON value can be written more than one way). */
static bool item_changed(const item_t *was, const item_t *now)
{
    if (was->len == now->len && memcmp(was->text, now->text, was->len) == 0)
        return false;
    cJSON *x = cJSON_ParseWithLength(was->text, was->len);
    cJSON *y = cJSON_ParseWithLength(now->text, now->len);
    bool changed = !x || !y || !cJSON_Compare(x, y, true);
    cJSON_Delete(x);
    cJSON_Delete(y);
    return changed;
}

static void op_start(ts_buf_t *b, const char *op, const item_t *it, bool *first)
{
    ts_buf_puts(b, *first ? "{\"op\":\"" : ",{\"op\":\"");
    *first = false;
    ts_buf_puts(b, op);
    ts_buf_puts(b, "\",\"id\":");
    ts_buf_append(b, it->id, it->id_len);
}

/* The ops that turn the items old into new (docs/CACHE.md), applied in
 * order: removes first, then, position by position, an add, or a move and
 * an edit where needed. On the texts: no parse but of an item whose bytes
 * changed; a doc is sent as the result has it. */
static void diff(ts_buf_t *b, const char *old_text, size_t old_len, const char *new_text,
                 size_t new_len)
{
    size_t no, nn, ncur = 0;
    item_t *old = split_items(old_text, old_len, &no), *newv = split_items(new_text, new_len, &nn);
    const item_t **cur = ts_xmalloc((no + nn + 1) * sizeof *cur);
    bool first = true;
    ts_buf_puts(b, "[");
    for (size_t k = 0; k < no; k++) {
        bool kept = false;
        for (size_t i = 0; i < nn && !kept; i++)
            kept = same_id(&newv[i], &old[k]);
        if (kept) {
            cur[ncur++] = &old[k];
        } else {
            op_start(b, "remove", &old[k], &first);
            ts_buf_puts(b, "}");
        }
    }
    for (size_t i = 0; i < nn; i++) {
        size_t j = i;
        while (j < ncur && !same_id(cur[j], &newv[i]))
            j++;
        if (j >= ncur) {
            memmove(&cur[i + 1], &cur[i], (ncur - i) * sizeof *cur);
            ncur++;
            op_start(b, "add", &newv[i], &first);
            ts_buf_printf(b, ",\"pos\":%zu,\"doc\":", i);
            ts_buf_append(b, newv[i].text, newv[i].len);
            ts_buf_puts(b, "}");
        } else {
            if (j != i) {
                const item_t *moved = cur[j];
                memmove(&cur[i + 1], &cur[i], (j - i) * sizeof *cur);
                cur[i] = moved;
                op_start(b, "move", &newv[i], &first);
                ts_buf_printf(b, ",\"pos\":%zu}", i);
            }
            if (item_changed(cur[i], &newv[i])) {
                op_start(b, "edit", &newv[i], &first);
                ts_buf_puts(b, ",\"doc\":");
                ts_buf_append(b, newv[i].text, newv[i].len);
                ts_buf_puts(b, "}");
            }
        }
        cur[i] = &newv[i];
    }
    ts_buf_puts(b, "]");
    free(cur);
    free(old);
    free(newv);
}

/* Ends a live query: subscribes still waiting for its first result get
 * the error (code, message: what a `query` would have answered),
 * subscribers a query.closed with reason. */
static void close_all(cache_t *self, live_t *l, int code, const char *message,
                      const char *reason)
{
    while (l->waiting) {
        ts_envelope_t *e = l->waiting;
        l->waiting = e->held_next;
        e->held_next = NULL;
        ts_call_fail(&e->calls[0], code, "%s", message);
        cache_answer(self, e);
    }
    if (!l->subs) {
        live_free(self, l);
        return;
    }
    /* Counted, not `while (l->subs)`: the last sub_free frees l. */
    for (size_t n = l->nsubs; n; n--) {
        sub_t *s = l->subs;
        send_closed(self, s, reason);
        sub_free(self, s);
    }
}

/* Answers the subscribes that waited for this result; frees l when every
 * one of them was refused and it has no other subscriber. */
static void answer_waiting(cache_t *self, live_t *l)
{
    while (l->waiting) {
        ts_envelope_t *e = l->waiting;
        l->waiting = e->held_next;
        e->held_next = NULL;
        answer_subscribe(self, e, l);
    }
    if (!l->nsubs)
        live_free(self, l);
}

void live_result(cache_t *self, ts_cache_run_t *run)
{
    memo_key(self, run->request, NULL);
    hnode_t *n = hmap_find(&self->lives, self->buf.data, self->buf.len,
                           hmap_hash(self->buf.data, self->buf.len));
    if (!n)
        return; /* unsubscribed meanwhile */
    live_t *l = CONTAINER(n, live_t, node);
    l->running = false;
    if (run->err_code) {
        self->run_errors++;
        char reason[600];
        snprintf(reason, sizeof reason, "%s: %s",
                 ts_error_reason(run->err_code) ? ts_error_reason(run->err_code) : "error",
                 run->err_message ? run->err_message : "the query failed");
        close_all(self, l, run->err_code,
                  run->err_message ? run->err_message : "the query failed", reason);
        return;
    }
    if (run->extend && l->bound_param) { /* the rows, and the answer from them */
        memo_free_rows(l->rows);
        l->rows = memo_rows_of(self, run, l->bound_param);
    }
    char *text = run->result;
    size_t len = run->result_len;
    run->result = NULL;
    if (run->extend && l->bound_param) {
        ts_buf_t b = {0};
        free(text);
        text = NULL;
        if (l->rows && memo_slice(self, l->rows, l->request, l->bound_param, &b) == 0) {
            text = ts_buf_take(&b, &len);
        } else {
            ts_buf_free(&b);
            close_all(self, l, TS_E_INTERNAL, "the live query's rows end too soon",
                      "error: the live query's rows end too soon");
            return;
        }
    }
    watch_set(self, &l->w, run->collection, &run->read);
    apply_answer(self, l, text, len);
}

/* A new answer of a live query (taken): the first one answers the
 * subscribes waiting; a changed one notifies every subscriber. */
static void apply_answer(cache_t *self, live_t *l, char *text, size_t len)
{
    if (!l->ready) {
        l->ready = true;
        l->answer = text;
        l->answer_len = len;
        l->version = self->next_version++;
        answer_waiting(self, l);
        return;
    }
    if (l->answer_len == len && memcmp(l->answer, text, len) == 0) {
        self->unchanged++;
        l->dirty_us = 0;
        free(text);
        answer_waiting(self, l);
        return;
    }
    size_t il, ol;
    const char *items = items_of(text, len, &il);
    const char *was = items_of(l->answer, l->answer_len, &ol);
    int64_t from = l->version;
    l->version = self->next_version++;
    ts_buf_t ops = {0};
    bool any_diff = false;
    for (sub_t *s = l->subs; s && !any_diff; s = s->next_in_live)
        any_diff = s->diff;
    if (any_diff)
        diff(&ops, was, ol, items, il);
    int64_t took = l->dirty_us ? ts_mono_us() - l->dirty_us : 0;
    for (sub_t *s = l->subs; s; s = s->next_in_live) {
        ts_buf_t b = {0};
        ts_buf_reserve(&b, (s->diff ? ops.len : il) + 128);
        ts_buf_printf(&b,
                      "{\"jsonrpc\":\"2.0\",\"method\":\"query.changed\",\"params\":{\"sub\":"
                      "\"%s\",\"from\":%lld,\"to\":%lld,\"%s\":",
                      s->id, (long long)from, (long long)l->version, s->diff ? "ops" : "items");
        if (s->diff)
            ts_buf_append(&b, ops.data, ops.len);
        else
            ts_buf_append(&b, items, il);
        ts_buf_puts(&b, "}}");
        notify(self, s->client, &b);
        self->notifications++;
        ts_hist_add(&self->notify_us, took);
    }
    ts_buf_free(&ops);
    l->dirty_us = 0;
    free(l->answer);
    l->answer = text;
    l->answer_len = len;
    answer_waiting(self, l); /* after the notifications: they are not theirs */
}

void live_gone(cache_t *self, const ts_gone_t *gone)
{
    client_t *c = client_find(self, gone->id, gone->len);
    if (!c)
        return;
    size_t n = c->nsubs;
    while (c->nsubs > 1)
        sub_free(self, c->subs);
    sub_free(self, c->subs); /* frees c */
    ts_info(LOG, "a client went away: %zu live queries ended", n);
}

void live_policy(cache_t *self, const ts_selectors_t *selectors, const ts_selectors_t *old)
{
    for (size_t b = 0; b < self->lives.cap; b++) {
        for (hnode_t *n = self->lives.buckets[b], *next; n; n = next) {
            next = n->next;
            live_t *l = CONTAINER(n, live_t, node);
            /* its rows name selectors by their place in the old list */
            memo_free_rows(l->rows);
            l->rows = NULL;
            const ts_selector_info_t *now = NULL, *was = NULL;
            for (size_t i = 0; i < selectors->count && !now; i++)
                if (strcmp(selectors->selectors[i].name, l->selector) == 0)
                    now = &selectors->selectors[i];
            for (size_t i = 0; old && i < old->count && !was; i++)
                if (strcmp(old->selectors[i].name, l->selector) == 0)
                    was = &old->selectors[i];
            if (!now) {
                /* next may be freed with l only if it is l: it is not */
                close_all(self, l, TS_E_POLICY, "selector removed by a policy reload",
                          "selector removed by a policy reload");
            } else if (!was || was->fingerprint != now->fingerprint) {
                /* Run again: subscribers see what changed. A run already
                 * with the store runs under the new policies (the store
                 * sends this message before its result). */
                live_touched(self, l);
            }
        }
    }
}

void live_free_all(cache_t *self)
{
    for (size_t b = 0; b < self->subs.cap; b++)
        while (self->subs.buckets[b])
            sub_free(self, CONTAINER(self->subs.buckets[b], sub_t, node));
    for (size_t b = 0; b < self->lives.cap; b++)
        while (self->lives.buckets[b]) {
            live_t *l = CONTAINER(self->lives.buckets[b], live_t, node);
            while (l->waiting) {
                ts_envelope_t *e = l->waiting;
                l->waiting = e->held_next;
                ts_envelope_free(e);
            }
            live_free(self, l);
        }
    hmap_free(&self->subs);
    hmap_free(&self->lives);
    hmap_free(&self->clients);
    ts_notice_free_list(self->notices);
    self->notices = self->notices_last = NULL;
}
