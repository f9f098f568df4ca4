/* ondemand.c — on-demand collections: read through the cache, fetched
 * from the Clinic API when what is held is missing or old.
 *
 * The store holds the documents (the server's version and the pending
 * local writes on top, as for every collection); the cache holds, per
 * question, when it was last fetched and its ETag: a `get` is the
 * question "document ID", a `query` by a selector with an index the
 * question "FIELD = VALUE" (one filtered list at the server). For each
 * read:
 *
 *   fresh (age < fresh_ms)            served from the replica, no request
 *   stale (age < max_stale_ms)        served at once, stale: true, age_ms;
 *                                     one background refresh (If-None-Match)
 *   older, or never fetched           fetched first (one request however many
 *                                     wait), then served; bounded by the
 *                                     request's timeout
 *   the API unreachable               served with stale, expired: true when
 *                                     something was fetched once; else
 *                                     -32009 unavailable
 *
 * A fetch lands as fresh only if no local write to the collection and no
 * `invalidate` came while it was out. Documents fetched go to the store
 * as remote changes (newer versions only), before the reads they serve,
 * on the same socket. A list that no longer holds a document it held
 * before refetches that document alone, so the replica's bucket matches
 * the server's. A remote change of the collection makes its lists stale;
 * the first answer after the API was unreachable makes everything stale
 * (reconnect revalidates). Questions not read for gc_ms are forgotten. */
#include "cache/cache_int.h"

#include "therasync/api.h"

#include <zmq.h>

#define FETCH_TIMEOUT_MS 5000
#define LIST_LIMIT 1000
#define KEY_MAX 1100

struct od_entry {
    hnode_t node;            /* key: collection, kind, id or field and value */
    uint16_t coll;
    bool list;               /* FIELD = VALUE, else one document */
    char *a, *b;             /* id (get) or field and value (list) */
    int64_t data_us;         /* when the fetch of what is held was sent (0: never) */
    bool valid;              /* may be fresh: no write, change or invalidate since */
    int64_t read_us;         /* the last read, for gc */
    bool has_data;           /* a fetch succeeded once: there is something to serve */
    char etag[80];
    bool fetching;
    uint64_t gen;            /* the collection's generation when the fetch was sent */
    int64_t sent_us;
    ts_envelope_t *waiting;  /* reads waiting for the fetch (held_next) */
    char **ids;              /* list: the ids of its last answer */
    size_t nids;
    od_entry_t *parent;      /* a dropped-out document's fetch: the list waiting for it */
    size_t children;         /* list: dropped-out fetches still out */
};

/* ---- entries ---- */

static size_t od_key(char *out, uint16_t coll, bool list, const char *a, const char *b)
{
    int n = snprintf(out, KEY_MAX, "%u\x01%c\x01%s\x01%s", coll, list ? 'q' : 'g', a,
                     b ? b : "");
    return n < 0 || n >= KEY_MAX ? 0 : (size_t)n;
}

static od_entry_t *od_get(cache_t *self, uint16_t coll, bool list, const char *a, const char *b)
{
    char key[KEY_MAX];
    size_t kl = od_key(key, coll, list, a, b);
    if (!kl)
        return NULL;
    uint64_t h = hmap_hash(key, kl);
    hnode_t *n = hmap_find(&self->od, key, kl, h);
    if (n)
        return CONTAINER(n, od_entry_t, node);
    od_entry_t *e = ts_xcalloc(1, sizeof *e);
    e->node = (hnode_t){.hash = h, .key = ts_memdup(key, kl), .key_len = kl};
    e->coll = coll;
    e->list = list;
    e->a = ts_xstrdup(a);
    e->b = b ? ts_xstrdup(b) : NULL;
    hmap_add(&self->od, &e->node);
    return e;
}

static void od_free(cache_t *self, od_entry_t *e)
{
    hmap_del(&self->od, &e->node);
    for (size_t i = 0; i < e->nids; i++)
        free(e->ids[i]);
    free(e->ids);
    free((char *)e->node.key);
    free(e->a);
    free(e->b);
    free(e);
}

/* ---- serving ---- */

static int64_t age_ms(const od_entry_t *e, int64_t now)
{
    return e->data_us ? (now - e->data_us) / 1000 : -1;
}

/* Sends a read to the store to answer from the replica, with its freshness. */
static void serve(cache_t *self, ts_envelope_t *env, uint8_t fresh, int64_t age)
{
    ts_call_t *call = &env->calls[0];
    call->fresh = TS_FRESH_SET | fresh;
    call->age_ms = age < 0 ? 0 : age;
    if (fresh & TS_FRESH_STALE)
        self->stale_answers++;
    if (ts_send_CACHE_SERVE(self->to_store, &env, 1)) {
        ts_call_fail(call, TS_E_INTERNAL, "the engine is stopping");
        cache_answer(self, env);
    }
}

static void fail(cache_t *self, ts_envelope_t *env, const char *coll, const char *why)
{
    ts_call_fail(&env->calls[0], TS_E_UNAVAILABLE,
                 "%s is read on demand and the Clinic API could not give it: %s", coll, why);
    cache_answer(self, env);
}

/* ---- fetching ---- */

static void url_encode(ts_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            ts_buf_append(b, (const char *)&c, 1);
        } else {
            char pct[3] = {'%', hex[c >> 4], hex[c & 15]};
            ts_buf_append(b, pct, 3);
        }
    }
}

static void fetch(cache_t *self, od_entry_t *e)
{
    if (e->fetching)
        return;
    const char *coll = self->config->collections[e->coll];
    ts_buf_t path = {0};
    ts_buf_printf(&path, "/v1/%s", coll);
    if (e->list) {
        ts_buf_puts(&path, "?");
        url_encode(&path, e->a);
        ts_buf_puts(&path, "=");
        url_encode(&path, e->b);
        ts_buf_printf(&path, "&limit=%d", LIST_LIMIT);
    } else {
        ts_buf_puts(&path, "/");
        url_encode(&path, e->a);
    }
    ts_api_request_t *r = ts_api_request_new(TS_API_GET, path.data, NULL);
    ts_buf_free(&path);
    r->shape = e->list ? TS_API_SHAPE_PAGE : TS_API_SHAPE_DOC;
    r->timeout_ms = FETCH_TIMEOUT_MS;
    r->max_attempts = 2;
    if (e->has_data && e->etag[0])
        snprintf(r->if_none_match, sizeof r->if_none_match, "%s", e->etag);
    snprintf(r->reply_to, sizeof r->reply_to, "%s", TS_INPROC_CACHE);
    r->user = e;
    e->fetching = true;
    e->gen = self->od_gen[e->coll];
    e->sent_us = ts_mono_us();
    self->fetches++;
    if (!self->to_api || ts_api_send(self->to_api, r)) {
        ts_api_request_free(r);
        e->fetching = false;
        /* no API (standalone): as if it did not answer */
        while (e->waiting) {
            ts_envelope_t *env = e->waiting;
            e->waiting = env->held_next;
            env->held_next = NULL;
            if (e->has_data)
                serve(self, env, TS_FRESH_STALE | TS_FRESH_EXPIRED, age_ms(e, ts_mono_us()));
            else
                fail(self, env, coll, "the engine has no Clinic API (--api)");
        }
    }
}

/* A read of an on-demand collection: serve it, fetch first, or both. */
void od_read(cache_t *self, ts_envelope_t *env)
{
    ts_call_t *call = &env->calls[0];
    int ci = ts_config_collection(self->config, call->collection);
    uint16_t coll = (uint16_t)(ci < 0 ? 0 : ci);
    od_entry_t *e = NULL;
    if (call->method == TS_M_GET) {
        e = od_get(self, coll, false, call->doc_id ? call->doc_id : "", NULL);
    } else {
        const ts_selector_info_t *s = memo_selector(self, ts_json_string(call->params, "selector"));
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(call->params, "params");
        const cJSON *v = s && s->index ? cJSON_GetObjectItemCaseSensitive(params, s->index) : NULL;
        char num[64];
        const char *value = cJSON_IsString(v) ? v->valuestring : NULL;
        if (cJSON_IsNumber(v) && snprintf(num, sizeof num, "%.17g", v->valuedouble) > 0)
            value = num;
        /* the store would refuse it: do not ask the server first */
        if (s && s->collection && strcmp(s->collection, call->collection) != 0) {
            ts_call_fail(call, TS_E_INVALID_PARAMS, "selector '%s' is for collection '%s'",
                         s->name, s->collection);
            cache_answer(self, env);
            return;
        }
        if (!value || strlen(value) > 512) {
            ts_call_fail(call, TS_E_INVALID_PARAMS,
                         "%s is read on demand: query it with a selector that has an `index` "
                         "and its param (a string or number of at most 512 bytes)",
                         call->collection);
            cache_answer(self, env);
            return;
        }
        e = od_get(self, coll, true, s->index, value);
    }
    if (!e) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "the value is too long to read on demand");
        cache_answer(self, env);
        return;
    }
    int64_t now = ts_mono_us(), age = age_ms(e, now);
    int fresh_ms = self->config->ondemand[coll].fresh_ms;
    int max_stale_ms = self->config->ondemand[coll].max_stale_ms;
    e->read_us = now;
    if (e->valid && e->has_data && age < fresh_ms) {
        self->od_fresh++;
        serve(self, env, 0, age);
    } else if (e->has_data && age < max_stale_ms) {
        serve(self, env, TS_FRESH_STALE, age);
        fetch(self, e); /* in the background: once, however many read it */
    } else if (self->offline && e->has_data) {
        serve(self, env, TS_FRESH_STALE | TS_FRESH_EXPIRED, age);
        fetch(self, e); /* it may be back */
    } else {
        if (e->fetching)
            self->coalesced_fetches++;
        env->held_next = e->waiting;
        e->waiting = env;
        fetch(self, e);
    }
}

/* A fetched document as a remote change for the store (NULL: no id). */
static ts_sync_update_t *fetched(cache_t *self, uint16_t coll, const char *id, cJSON *doc)
{
    if (!id || strlen(id) > 64) {
        cJSON_Delete(doc);
        return NULL;
    }
    ts_sync_update_t *u = ts_xcalloc(1, sizeof *u);
    u->kind = TS_SYNC_REMOTE;
    u->fetched = true;
    snprintf(u->collection, sizeof u->collection, "%s", self->config->collections[coll]);
    snprintf(u->doc_id, sizeof u->doc_id, "%s", id);
    u->doc = doc;
    return u;
}

/* Documents fetched, to the store as remote changes (newer ones apply);
 * gone_id: a 404, the server's truth being "no such document". */
static void send_docs(cache_t *self, uint16_t coll, const cJSON *docs, const char *gone_id)
{
    size_t n = 0, k = 0;
    for (const cJSON *d = docs ? docs->child : NULL; d; d = d->next)
        n++;
    ts_sync_update_t **u = ts_xcalloc(n + 1, sizeof *u);
    for (const cJSON *d = docs ? docs->child : NULL; d; d = d->next)
        if ((u[k] = fetched(self, coll, ts_json_string(d, "id"), cJSON_Duplicate(d, true))))
            k++;
    if (gone_id) {
        cJSON *tomb = cJSON_CreateObject();
        cJSON_AddStringToObject(tomb, "id", gone_id);
        cJSON_AddTrueToObject(tomb, "deleted");
        if ((u[k] = fetched(self, coll, gone_id, tomb)))
            k++;
    }
    if (k && ts_send_SYNC_UPDATES(self->to_store, u, k))
        for (size_t i = 0; i < k; i++)
            ts_sync_update_free(u[i]);
    free(u);
}

static void release(cache_t *self, od_entry_t *e, bool ok, const char *why)
{
    int64_t now = ts_mono_us();
    while (e->waiting) {
        ts_envelope_t *env = e->waiting;
        e->waiting = env->held_next;
        env->held_next = NULL;
        if (ok)
            serve(self, env, e->valid ? 0 : TS_FRESH_STALE, age_ms(e, now));
        else if (e->has_data)
            serve(self, env, TS_FRESH_STALE | TS_FRESH_EXPIRED, age_ms(e, now));
        else
            fail(self, env, self->config->collections[e->coll], why);
    }
}

/* The ids of a list's items (sorted, for the dropped-out check). */
static int by_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A list answered: documents in it that the last answer held and this one
 * does not are fetched alone, and the list waits for them. */
static void list_answered(cache_t *self, od_entry_t *e, const cJSON *items)
{
    size_t n = (size_t)cJSON_GetArraySize(items), k = 0;
    char **ids = ts_xcalloc(n + 1, sizeof *ids);
    for (const cJSON *d = items ? items->child : NULL; d; d = d->next)
        if (ts_json_string(d, "id"))
            ids[k++] = ts_xstrdup(ts_json_string(d, "id"));
    qsort(ids, k, sizeof *ids, by_str);
    for (size_t i = 0; i < e->nids; i++) {
        if (bsearch(&e->ids[i], ids, k, sizeof *ids, by_str))
            continue;
        od_entry_t *g = od_get(self, e->coll, false, e->ids[i], NULL);
        if (!g || g->parent)
            continue;
        g->parent = e;
        e->children++;
        g->valid = false;
        fetch(self, g);
    }
    for (size_t i = 0; i < e->nids; i++)
        free(e->ids[i]);
    free(e->ids);
    e->ids = ids;
    e->nids = k;
}

void od_result(cache_t *self, ts_api_result_t *res)
{
    od_entry_t *e = res->user;
    e->fetching = false;
    const char *coll = self->config->collections[e->coll];
    bool ok = res->error == TS_API_OK || (!e->list && res->error == TS_API_NOT_FOUND);
    if (ok) {
        if (self->offline) { /* back: what is held may have changed meanwhile */
            self->offline = false;
            od_all_stale(self, SIZE_MAX);
            ts_info(LOG, "on-demand reads: the Clinic API answers again");
        }
        bool unchanged = res->status == 304;
        if (unchanged)
            self->not_modified++;
        else if (res->error == TS_API_NOT_FOUND)
            send_docs(self, e->coll, NULL, e->a);
        else if (e->list)
            send_docs(self, e->coll, cJSON_GetObjectItemCaseSensitive(res->json, "items"), NULL);
        else {
            cJSON *one = cJSON_CreateArray();
            cJSON_AddItemReferenceToArray(one, res->json);
            send_docs(self, e->coll, one, NULL);
            cJSON_Delete(one);
        }
        e->has_data = true;
        e->data_us = e->sent_us;
        /* A local write or an invalidate while it was out: it lands stale. */
        e->valid = self->od_gen[e->coll] == e->gen;
        snprintf(e->etag, sizeof e->etag, "%s", res->error == TS_API_OK ? res->etag : "");
        if (e->list && !unchanged)
            list_answered(self, e, cJSON_GetObjectItemCaseSensitive(res->json, "items"));
    } else {
        self->fetch_errors++;
        if (res->error == TS_API_NETWORK || res->error == TS_API_TIMEOUT) {
            if (!self->offline)
                ts_warn(LOG, "on-demand reads: the Clinic API does not answer (%s)",
                        ts_api_error_name(res->error));
            self->offline = true;
        }
    }
    char why[256];
    snprintf(why, sizeof why, "%s%s%s", ts_api_error_name(res->error), res->message[0] ? ": " : "",
             res->message);
    od_entry_t *parent = e->parent;
    e->parent = NULL;
    if (!e->children)
        release(self, e, ok, why);
    if (parent && --parent->children == 0)
        release(self, parent, true, why);
    (void)coll;
    ts_api_result_free(res);
}

/* ---- changes, invalidate, gc ---- */

void od_all_stale(cache_t *self, size_t coll)
{
    for (size_t b = 0; b < self->od.cap; b++)
        for (hnode_t *n = self->od.buckets[b]; n; n = n->next) {
            od_entry_t *e = CONTAINER(n, od_entry_t, node);
            if (coll == SIZE_MAX || e->coll == coll)
                e->valid = false;
        }
}

void od_change(cache_t *self, const ts_change_t *c)
{
    if (!self->config->ondemand[c->collection].on || c->origin == TS_CHANGE_FETCHED)
        return;
    if (c->origin == TS_CHANGE_LOCAL) {
        self->od_gen[c->collection]++; /* fetches out now land stale */
        char id[256];
        snprintf(id, sizeof id, "%.*s", (int)c->id_len, c->data);
        char key[KEY_MAX];
        size_t kl = od_key(key, c->collection, false, id, NULL);
        hnode_t *n = kl ? hmap_find(&self->od, key, kl, hmap_hash(key, kl)) : NULL;
        if (n)
            CONTAINER(n, od_entry_t, node)->valid = false;
    }
    /* A change may move a document into or out of any list. */
    for (size_t b = 0; b < self->od.cap; b++)
        for (hnode_t *n = self->od.buckets[b]; n; n = n->next) {
            od_entry_t *e = CONTAINER(n, od_entry_t, node);
            if (e->list && e->coll == c->collection)
                e->valid = false;
        }
}

size_t od_invalidate(cache_t *self, int coll)
{
    size_t n = 0;
    /* First: fetches out now land stale, the refreshes sent below fresh. */
    for (size_t c = 0; c < TS_MAX_COLLECTIONS; c++)
        if (coll < 0 || (size_t)coll == c)
            self->od_gen[c]++;
    for (size_t b = 0; b < self->od.cap; b++)
        for (hnode_t *h = self->od.buckets[b]; h; h = h->next) {
            od_entry_t *e = CONTAINER(h, od_entry_t, node);
            if (coll >= 0 && e->coll != coll)
                continue;
            e->valid = false;
            n++;
            if (!e->fetching && e->has_data)
                fetch(self, e); /* refreshed now, so the next read is fresh */
        }
    return n;
}

void od_gc(cache_t *self)
{
    int64_t now = ts_mono_us();
    for (size_t b = 0; b < self->od.cap; b++)
        for (hnode_t *n = self->od.buckets[b], *next; n; n = next) {
            next = n->next;
            od_entry_t *e = CONTAINER(n, od_entry_t, node);
            int64_t gc_us = (int64_t)self->config->ondemand[e->coll].gc_ms * 1000;
            if (!e->fetching && !e->waiting && !e->children && now - e->read_us > gc_us) {
                od_free(self, e);
                self->od_forgotten++;
            }
        }
}

void od_free_all(cache_t *self)
{
    for (size_t b = 0; b < self->od.cap; b++)
        while (self->od.buckets[b]) {
            od_entry_t *e = CONTAINER(self->od.buckets[b], od_entry_t, node);
            while (e->waiting) {
                ts_envelope_t *env = e->waiting;
                e->waiting = env->held_next;
                ts_envelope_free(env);
            }
            od_free(self, e);
        }
    hmap_free(&self->od);
}

size_t od_entries(const cache_t *self) { return self->od.count; }
