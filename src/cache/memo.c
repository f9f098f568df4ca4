/* memo.c — memoized `query` answers.
 *
 * An answer is kept per question — collection, selector, params in
 * canonical form (keys sorted), page — as the ready result text, so a hit
 * is a look-up and a send: no Lua, no document read. A miss goes to the
 * store as a run; identical misses wait for the same run. An entry lives
 * until a change touches what it read (watch.c), its selector changes
 * (a policy reload), or it is the least recently used one when the bytes
 * go over cache.max_bytes.
 *
 * A selector may declare a lower-bound param (`lower_bound = "now"` on
 * `upcoming`): where() then only compares the param with order_by, so an
 * answer computed for the value lo holds for every value up to its first
 * row's order key. The question leaves the param out and keeps answers
 * for disjoint ranges [lo, first row]; any value inside one is a hit. */
#include "cache/cache_int.h"

#include <math.h>

/* ---- keys ---- */

static int by_name(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string ? x->string : "", y->string ? y->string : "");
}

/* item in a canonical form: objects with their keys sorted (skip: a member
 * of this object to leave out). */
static void canon(ts_buf_t *b, const cJSON *item, const char *skip)
{
    if (cJSON_IsObject(item)) {
        size_t n = 0;
        for (const cJSON *c = item->child; c; c = c->next)
            n++;
        const cJSON **kids = ts_xmalloc((n ? n : 1) * sizeof *kids);
        n = 0;
        for (const cJSON *c = item->child; c; c = c->next)
            if (!skip || !c->string || strcmp(c->string, skip) != 0)
                kids[n++] = c;
        qsort(kids, n, sizeof *kids, by_name);
        ts_buf_puts(b, "{");
        for (size_t i = 0; i < n; i++) {
            if (i)
                ts_buf_puts(b, ",");
            ts_buf_json_string(b, kids[i]->string, strlen(kids[i]->string));
            ts_buf_puts(b, ":");
            canon(b, kids[i], NULL);
        }
        ts_buf_puts(b, "}");
        free(kids);
    } else if (cJSON_IsArray(item)) {
        ts_buf_puts(b, "[");
        for (const cJSON *c = item->child; c; c = c->next) {
            canon(b, c, NULL);
            if (c->next)
                ts_buf_puts(b, ",");
        }
        ts_buf_puts(b, "]");
    } else if (item) {
        ts_buf_json(b, item);
    }
}

void memo_key(cache_t *self, const cJSON *request, const char *skip)
{
    ts_buf_t *b = &self->buf;
    ts_buf_reset(b);
    const char *coll = ts_json_string(request, "collection");
    const char *sel = ts_json_string(request, "selector");
    ts_buf_puts(b, coll ? coll : "");
    ts_buf_append(b, "\x01", 1);
    ts_buf_puts(b, sel ? sel : "");
    ts_buf_append(b, "\x01", 1);
    canon(b, cJSON_GetObjectItemCaseSensitive(request, "params"), skip);
    static const char *page[] = {"limit", "cursor"};
    for (int i = 0; i < 2; i++) {
        ts_buf_append(b, "\x01", 1);
        canon(b, cJSON_GetObjectItemCaseSensitive(request, page[i]), NULL);
    }
}

/* ---- selectors ---- */

const ts_selector_info_t *memo_selector(const cache_t *self, const char *name)
{
    for (size_t i = 0; name && self->selectors && i < self->selectors->count; i++)
        if (strcmp(self->selectors->selectors[i].name, name) == 0)
            return &self->selectors->selectors[i];
    return NULL;
}

/* The lower-bound param's value of a request, when its selector has one
 * and the request can share answers (no cursor); NULL otherwise. */
static const cJSON *bound_of(const cache_t *self, const cJSON *request, const char **param)
{
    const ts_selector_info_t *s = memo_selector(self, ts_json_string(request, "selector"));
    if (!s || !s->lower_bound || cJSON_GetObjectItemCaseSensitive(request, "cursor"))
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(request, "params"), s->lower_bound);
    if (!cJSON_IsString(v) && !cJSON_IsNumber(v))
        return NULL;
    *param = s->lower_bound;
    return v;
}

/* ---- entries and groups ---- */

static void lru_unlink(cache_t *self, entry_t *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        self->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        self->newest = e->older;
    e->older = e->newer = NULL;
}

static void lru_push(cache_t *self, entry_t *e)
{
    e->older = self->newest;
    e->newer = NULL;
    if (self->newest)
        self->newest->newer = e;
    else
        self->oldest = e;
    self->newest = e;
}

static void group_free(cache_t *self, group_t *g)
{
    hmap_del(&self->groups, &g->node);
    free((char *)g->node.key);
    free(g->selector);
    free(g->entries);
    free(g);
}

void memo_drop_entry(cache_t *self, entry_t *e)
{
    group_t *g = e->group;
    lru_unlink(self, e);
    watch_unset(self, &e->w);
    for (size_t i = 0; i < g->n; i++)
        if (g->entries[i] == e) {
            memmove(&g->entries[i], &g->entries[i + 1], (g->n - i - 1) * sizeof *g->entries);
            g->n--;
            break;
        }
    self->bytes -= e->bytes;
    self->entries--;
    free(e->lo.str);
    free(e->hi.str);
    free(e->answer);
    free(e);
    if (!g->n)
        group_free(self, g);
}

static void evict(cache_t *self)
{
    while (self->bytes > (size_t)self->config->cache.max_bytes && self->oldest) {
        memo_drop_entry(self, self->oldest);
        self->evictions++;
    }
}

/* The entry of group g that answers bound value v (NULL: any, unbounded). */
static entry_t *entry_for(group_t *g, const ts_okey_t *v)
{
    if (!g->bounded)
        return g->n ? g->entries[0] : NULL;
    size_t lo = 0, hi = g->n; /* last entry with lo <= v */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts_okey_cmp(&g->entries[mid]->lo, v) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return NULL;
    entry_t *e = g->entries[lo - 1];
    return e->hi_inf || ts_okey_cmp(v, &e->hi) <= 0 ? e : NULL;
}

static bool overlaps(const entry_t *a, const entry_t *b)
{
    bool a_before_b = !a->hi_inf && ts_okey_cmp(&a->hi, &b->lo) < 0;
    bool b_before_a = !b->hi_inf && ts_okey_cmp(&b->hi, &a->lo) < 0;
    return !a_before_b && !b_before_a;
}

static void copy_okey(ts_okey_t *to, uint8_t kind, double num, const char *str, uint32_t len)
{
    *to = (ts_okey_t){.kind = kind, .num = num, .len = len};
    if (kind == TS_OKEY_STR)
        to->str = ts_memdup(str ? str : "", len);
}

/* Keeps a run's answer: a new entry of its group (made if needed). */
static void keep(cache_t *self, ts_cache_run_t *run, const char *key, size_t key_len,
                 const char *selector, const cJSON *bound)
{
    static const char tail[] = ",\"cursor\":null}";
    size_t tl = sizeof tail - 1;
    if (bound && (run->result_len < tl || memcmp(run->result + run->result_len - tl, tail, tl)))
        return; /* a page with a cursor belongs to its exact params */
    size_t cost = sizeof(entry_t) + run->result_len + key_len + 64;
    if ((long long)cost > self->config->cache.max_bytes / 4)
        return; /* too large to be worth evicting others for */
    entry_t *e = ts_xcalloc(1, sizeof *e);
    e->answer = run->result;
    e->answer_len = run->result_len;
    run->result = NULL;
    e->bytes = cost;
    if (bound) {
        ts_okey_from_json(bound, &e->lo);
        if (e->lo.kind == TS_OKEY_STR) /* from_json borrows: own it */
            e->lo.str = ts_memdup(e->lo.str, e->lo.len);
        e->hi_inf = !run->read.has_first;
        if (run->read.has_first)
            copy_okey(&e->hi, run->read.first_kind, run->read.first_num, run->read.first_str,
                      run->read.first_len);
    }
    uint64_t h = hmap_hash(key, key_len);
    hnode_t *n = hmap_find(&self->groups, key, key_len, h);
    group_t *g = n ? CONTAINER(n, group_t, node) : NULL;
    /* An older answer for the same values is outdated (dropping the last
     * one frees the group). */
    for (size_t i = 0; g && i < g->n;) {
        if (g->bounded && bound && !overlaps(g->entries[i], e)) {
            i++;
            continue;
        }
        bool last = g->n == 1;
        memo_drop_entry(self, g->entries[i]);
        if (last)
            g = NULL;
    }
    if (!g) {
        g = ts_xcalloc(1, sizeof *g);
        g->node = (hnode_t){.hash = h, .key = ts_memdup(key, key_len), .key_len = key_len};
        g->selector = ts_xstrdup(selector ? selector : "");
        g->bounded = bound != NULL;
        hmap_add(&self->groups, &g->node);
    }
    e->group = g;
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 4;
        g->entries = ts_xrealloc(g->entries, g->cap * sizeof *g->entries);
    }
    size_t at = g->n;
    while (at && ts_okey_cmp(&g->entries[at - 1]->lo, &e->lo) > 0)
        at--;
    memmove(&g->entries[at + 1], &g->entries[at], (g->n - at) * sizeof *g->entries);
    g->entries[at] = e;
    g->n++;
    watch_set(self, &e->w, run->collection, &run->read);
    lru_push(self, e);
    self->bytes += cost;
    self->entries++;
    evict(self);
}

/* ---- reads ---- */

static void answer_with(ts_call_t *call, const char *text, size_t len)
{
    ts_call_set_result(call, ts_memdup(text, len), len);
}

/* The params of a query, with `now` filled as the store would (the clock),
 * so that the question names the answer exactly. True when it filled it. */
static bool fill_now(cJSON *request)
{
    cJSON *params = cJSON_GetObjectItemCaseSensitive(request, "params");
    if (!params)
        params = cJSON_AddObjectToObject(request, "params");
    if (!cJSON_IsObject(params) || cJSON_GetObjectItemCaseSensitive(params, "now"))
        return false;
    char now[32];
    ts_rfc3339(ts_wall_ms(), now);
    cJSON_AddStringToObject(params, "now", now);
    return true;
}

void memo_read(cache_t *self, ts_envelope_t *e)
{
    ts_call_t *call = &e->calls[0];
    bool filled = fill_now(call->params);
    const char *param = NULL;
    const cJSON *bound = bound_of(self, call->params, &param);
    memo_key(self, call->params, param);
    hnode_t *n = hmap_find(&self->groups, self->buf.data, self->buf.len,
                           hmap_hash(self->buf.data, self->buf.len));
    if (n) {
        ts_okey_t v = {0};
        if (bound)
            ts_okey_from_json(bound, &v); /* borrows */
        entry_t *hit = entry_for(CONTAINER(n, group_t, node), &v);
        if (hit) {
            self->hits++;
            lru_unlink(self, hit);
            lru_push(self, hit);
            answer_with(call, hit->answer, hit->answer_len);
            cache_answer(self, e);
            return;
        }
    }
    self->misses++;
    memo_key(self, call->params, NULL);
    uint64_t h = hmap_hash(self->buf.data, self->buf.len);
    n = hmap_find(&self->pendings, self->buf.data, self->buf.len, h);
    pending_t *p = n ? CONTAINER(n, pending_t, node) : NULL;
    if (p) { /* the same question is with the store: wait for its answer */
        self->coalesced++;
        e->held_next = p->waiting;
        p->waiting = e;
        return;
    }
    int coll = ts_config_collection(self->config, call->collection);
    p = ts_xcalloc(1, sizeof *p);
    p->node = (hnode_t){.hash = h, .key = ts_memdup(self->buf.data, self->buf.len),
                        .key_len = self->buf.len};
    p->waiting = e;
    /* The clock's now names this millisecond's answer: without a lower
     * bound to widen it, no later query asks for it again. */
    p->once = filled && !bound;
    hmap_add(&self->pendings, &p->node);
    if (cache_run(self, 0, (uint16_t)(coll < 0 ? 0 : coll), call->params)) {
        hmap_del(&self->pendings, &p->node);
        free((char *)p->node.key);
        free(p);
        ts_call_fail(call, TS_E_INTERNAL, "the engine is stopping");
        cache_answer(self, e);
    }
}

void memo_result(cache_t *self, ts_cache_run_t *run)
{
    memo_key(self, run->request, NULL);
    hnode_t *n = hmap_find(&self->pendings, self->buf.data, self->buf.len,
                           hmap_hash(self->buf.data, self->buf.len));
    if (!n)
        return; /* nobody asked (cannot happen: every run has its pending) */
    pending_t *p = CONTAINER(n, pending_t, node);
    hmap_del(&self->pendings, &p->node);
    for (ts_envelope_t *e = p->waiting, *next; e; e = next) {
        next = e->held_next;
        e->held_next = NULL;
        if (run->err_code)
            ts_call_fail(&e->calls[0], run->err_code, "%s", run->err_message ? run->err_message : "error");
        else
            answer_with(&e->calls[0], run->result, run->result_len);
        cache_answer(self, e);
    }
    if (run->err_code) {
        self->run_errors++;
    } else if (p->dropped || p->once || run->clock || self->config->cache.max_bytes <= 0) {
        self->uncached++;
    } else {
        const char *param = NULL;
        const cJSON *bound = bound_of(self, run->request, &param);
        memo_key(self, run->request, param);
        keep(self, run, self->buf.data, self->buf.len, ts_json_string(run->request, "selector"),
             bound);
    }
    free((char *)p->node.key);
    free(p);
}

/* ---- policy and invalidate ---- */

static bool same_selector(const ts_selectors_t *a, const ts_selector_info_t *s)
{
    for (size_t i = 0; a && i < a->count; i++)
        if (strcmp(a->selectors[i].name, s->name) == 0)
            return a->selectors[i].fingerprint == s->fingerprint;
    return false;
}

/* Drops the groups of selector name (NULL: all) in collection (NULL: any);
 * returns the entries dropped. */
static size_t drop_groups(cache_t *self, const char *collection, const char *selector,
                          const ts_selectors_t *keep_same)
{
    size_t dropped = 0;
    for (size_t b = 0; b < self->groups.cap; b++) {
        for (hnode_t *n = self->groups.buckets[b], *next; n; n = next) {
            next = n->next;
            group_t *g = CONTAINER(n, group_t, node);
            size_t cl = strcspn(g->node.key, "\x01");
            if (collection && (strlen(collection) != cl || memcmp(g->node.key, collection, cl)))
                continue;
            if (selector && strcmp(g->selector, selector) != 0)
                continue;
            if (keep_same) {
                const ts_selector_info_t *s = NULL;
                for (size_t i = 0; i < keep_same->count && !s; i++)
                    if (strcmp(keep_same->selectors[i].name, g->selector) == 0)
                        s = &keep_same->selectors[i];
                if (s && same_selector(self->selectors, s))
                    continue;
            }
            dropped += g->n;
            while (g->n > 1)
                memo_drop_entry(self, g->entries[g->n - 1]);
            memo_drop_entry(self, g->entries[0]); /* frees g */
        }
    }
    return dropped;
}

void memo_policy(cache_t *self, ts_selectors_t *selectors)
{
    /* Answers of runs still with the store will be computed under the new
     * policies: the store sends this message after the reload and before
     * their results. */
    size_t dropped = drop_groups(self, NULL, NULL, selectors);
    if (dropped)
        ts_info(LOG, "policy reload: %zu answers of changed selectors dropped", dropped);
    live_policy(self, selectors, self->selectors);
    ts_selectors_free(self->selectors);
    self->selectors = selectors;
}

size_t memo_invalidate(cache_t *self, const char *collection, const char *selector)
{
    size_t n = drop_groups(self, collection, selector, NULL);
    self->invalidations += n;
    return n;
}

void memo_free_all(cache_t *self)
{
    while (self->oldest)
        memo_drop_entry(self, self->oldest);
    hmap_free(&self->groups);
    for (size_t b = 0; b < self->pendings.cap; b++)
        while (self->pendings.buckets[b]) {
            hnode_t *n = self->pendings.buckets[b];
            self->pendings.buckets[b] = n->next;
            pending_t *p = CONTAINER(n, pending_t, node);
            while (p->waiting) {
                ts_envelope_t *next = p->waiting->held_next;
                ts_envelope_free(p->waiting);
                p->waiting = next;
            }
            free((char *)p->node.key);
            free(p);
        }
    hmap_free(&self->pendings);
    ts_selectors_free(self->selectors);
    self->selectors = NULL;
}
