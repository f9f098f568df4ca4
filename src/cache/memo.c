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

void memo_key(cache_t *self, const cJSON *request, const char *skip)
{
    ts_query_key(&self->buf, request, skip);
}

/* ---- selectors ---- */

static long total_of(const ts_selector_info_t *s, const cJSON *request);

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
    /* Served from rows: whole answers only (no page size, no cursor), of a
     * limit the rows of one run cover with room to spare. */
    if (!s || !s->lower_bound || cJSON_GetObjectItemCaseSensitive(request, "cursor") ||
        cJSON_GetObjectItemCaseSensitive(request, "limit"))
        return NULL;
    long total = total_of(s, request);
    if (total <= 0 || total > TS_EXTEND_ROWS / 2)
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(request, "params"), s->lower_bound);
    if (!cJSON_IsString(v) && !cJSON_IsNumber(v))
        return NULL;
    *param = s->lower_bound;
    return v;
}

/* ---- extended entries: rows ---- */

static void row_free(row_t *r)
{
    ts_row_block_unref(r->text); /* its key with it */
    free(r->id);
}

/* The id of an item's text ({"id":"...",...}); false when it is escaped
 * (such a row is served but not patched). */
static bool row_id(row_t *r)
{
    static const char head[] = "{\"id\":\"";
    if (r->len < sizeof head || memcmp(r->text, head, sizeof head - 1) != 0)
        return false;
    const char *start = r->text + sizeof head - 1;
    const char *end = memchr(start, '"', r->len - (sizeof head - 1));
    if (!end || memchr(start, '\\', (size_t)(end - start)) || end - start > 255)
        return false;
    r->id_len = (uint8_t)(end - start);
    r->id = ts_memdup(start, r->id_len);
    r->id_tag = ts_row_id_tag(r->id, r->id_len);
    return true;
}

/* The selector's limit for these params: declared, lowered by params.limit
 * (as ts_policy_selector_limit). */
static long total_of(const ts_selector_info_t *s, const cJSON *request)
{
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(request, "params"), "limit");
    long limit = s ? s->limit : 0;
    if (cJSON_IsNumber(l) && l->valuedouble >= 1 && l->valuedouble <= 1e15 &&
        l->valuedouble == floor(l->valuedouble) && (limit == 0 || (long)l->valuedouble < limit))
        limit = (long)l->valuedouble;
    return limit;
}

/* The rows of an extended run (taken from it). */
static row_t *rows_of(ts_cache_run_t *run, bool *patchable)
{
    row_t *rows = ts_xcalloc(run->nrows + 1, sizeof *rows);
    *patchable = true;
    for (size_t i = 0; i < run->nrows; i++) {
        ts_run_row_t *r = &run->rows[i];
        rows[i].text = ts_row_block_new(run->result + r->off, r->len, r->str, r->str_len);
        rows[i].len = r->len;
        rows[i].key = (ts_okey_t){.kind = r->kind, .num = r->num, .len = r->str_len,
                                  .str = r->kind == TS_OKEY_STR ? rows[i].text + r->len : NULL};
        ts_row_key_prefix(&rows[i]);
        *patchable &= row_id(&rows[i]);
    }
    return rows;
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
    mirror_touch(self, g);
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
    free(e->end_id);
    free(e->answer);
    for (size_t i = 0; i < e->nrows; i++)
        row_free(&e->rows[i]);
    free(e->rows);
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

void memo_copy_okey(ts_okey_t *to, const ts_okey_t *from)
{
    *to = *from;
    if (from->kind == TS_OKEY_STR)
        to->str = ts_memdup(from->str ? from->str : "", from->len);
}

/* The place of selector name in the list (its bit in changes' membership),
 * or -1. */
static int selector_bit(const ts_selectors_t *list, const char *name)
{
    for (size_t i = 0; list && name && i < list->count && i < 64; i++)
        if (strcmp(list->selectors[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* e takes an extended run's rows (rows_of) and the interval they cover:
 * from the bound value on, to the run's last row (or the bucket's end). */
static void take_rows(entry_t *e, const ts_cache_run_t *run, row_t *rows, const cJSON *bound,
                      int sel_bit)
{
    e->rows = rows;
    e->nrows = e->caprows = run->nrows;
    e->complete = e->hi_inf = run->complete;
    e->sel_bit = sel_bit;
    ts_okey_from_json(bound, &e->lo);
    if (e->lo.kind == TS_OKEY_STR) /* from_json borrows: own it */
        e->lo.str = ts_memdup(e->lo.str, e->lo.len);
    if (!e->complete && run->nrows) { /* the walk ended at its last row */
        const row_t *last = &rows[run->nrows - 1];
        memo_copy_okey(&e->hi, &last->key);
        e->end_id = ts_memdup(last->id ? last->id : "", last->id_len);
        e->end_id_len = last->id_len;
    } else {
        e->complete = e->hi_inf = true; /* no row and not complete cannot be */
    }
}

/* ---- extended entries: merging ---- */

/* What a row costs: its block, its id, and two row structs, the entry's
 * and the front door's copy's (mirror.c: nearly every group a client
 * reads is copied), so that max_bytes bounds both. */
static size_t row_cost(const row_t *r) { return r->len + r->key.len + r->id_len + 2 * sizeof *r + 48; }

/* What an extended entry of n rows costs (key_len: its group's key). */
static size_t rows_cost(const row_t *rows, size_t n, size_t key_len)
{
    size_t cost = sizeof(entry_t) + key_len + 64;
    for (size_t i = 0; i < n; i++)
        cost += row_cost(&rows[i]);
    return cost;
}

/* (key, id) of row r after the end of e's rows (e not complete). */
static bool after_end(const entry_t *e, const row_t *r)
{
    return ts_okey_id_cmp(&r->key, r->id, r->id_len, &e->hi, e->end_id, e->end_id_len) > 0;
}

/* Whether the intervals of two extended entries overlap (or touch at a
 * key): their rows then make one exact interval. */
static bool mergeable(const entry_t *a, const entry_t *b)
{
    return (a->complete || ts_okey_cmp(&b->lo, &a->hi) <= 0) &&
           (b->complete || ts_okey_cmp(&a->lo, &b->hi) <= 0);
}

/* e takes the rows of old outside its own interval, and the union of the
 * two intervals (both exact, and current: changes patch both). */
static void absorb(entry_t *e, entry_t *old)
{
    size_t n = 0;
    row_t *rows = ts_xcalloc(e->nrows + old->nrows + 1, sizeof *rows);
    for (size_t i = 0; i < old->nrows && ts_okey_cmp(&old->rows[i].key, &e->lo) < 0; i++)
        rows[n++] = old->rows[i], old->rows[i] = (row_t){0}; /* moved */
    memcpy(rows + n, e->rows, e->nrows * sizeof *rows);
    n += e->nrows;
    bool beyond = false;
    if (!e->complete)
        for (size_t i = 0; i < old->nrows; i++)
            if (old->rows[i].text && after_end(e, &old->rows[i])) {
                rows[n++] = old->rows[i], old->rows[i] = (row_t){0};
                beyond = true;
            }
    free(e->rows);
    e->rows = rows;
    e->nrows = e->caprows = n;
    if (ts_okey_cmp(&old->lo, &e->lo) < 0) {
        free(e->lo.str);
        e->lo = old->lo;
        if (e->lo.kind == TS_OKEY_STR)
            e->lo.str = ts_memdup(old->lo.str, old->lo.len);
    }
    bool old_ends_later = old->complete || (!e->complete && (beyond ||
        ts_okey_id_cmp(&old->hi, old->end_id, old->end_id_len, &e->hi, e->end_id,
                       e->end_id_len) > 0));
    if (!e->complete && old_ends_later) {
        free(e->hi.str);
        free(e->end_id);
        e->complete = old->complete;
        e->hi = old->hi;
        e->hi_inf = old->hi_inf;
        e->end_id = NULL;
        e->end_id_len = 0;
        if (!old->complete) {
            if (e->hi.kind == TS_OKEY_STR)
                e->hi.str = ts_memdup(old->hi.str, old->hi.len);
            e->end_id = ts_memdup(old->end_id, old->end_id_len);
            e->end_id_len = old->end_id_len;
        } else {
            e->hi = (ts_okey_t){0};
        }
    }
}

/* The read-set of a merged entry: its bucket from lo to its end. */
static void set_read_range(ts_readset_t *r, const entry_t *e)
{
    free(r->lo_str);
    free(r->hi_str);
    r->lo_inf = false;
    r->lo_kind = e->lo.kind, r->lo_num = e->lo.num, r->lo_len = e->lo.len;
    r->lo_str = e->lo.kind == TS_OKEY_STR ? ts_memdup(e->lo.str, e->lo.len) : NULL;
    r->hi_inf = e->complete;
    r->hi_kind = e->hi.kind, r->hi_num = e->hi.num, r->hi_len = e->hi.len;
    r->hi_str = !e->complete && e->hi.kind == TS_OKEY_STR ? ts_memdup(e->hi.str, e->hi.len)
                                                         : NULL;
}

/* Keeps a run's answer: a new entry of its group (made if needed). */
static void keep(cache_t *self, ts_cache_run_t *run, const char *key, size_t key_len,
                 const char *selector, const cJSON *bound, row_t *rows, bool patchable,
                 int sel_bit)
{
    size_t cost = rows ? rows_cost(rows, run->nrows, key_len)
                       : sizeof(entry_t) + key_len + 64 +
                             2 * run->result_len; /* and the front door's copy of it */
    if ((long long)cost > self->config->cache.max_bytes / 4) {
        for (size_t i = 0; rows && i < run->nrows; i++)
            row_free(&rows[i]);
        free(rows);
        return; /* too large to be worth evicting others for */
    }
    entry_t *e = ts_xcalloc(1, sizeof *e);
    e->bytes = cost;
    e->sel_bit = -1;
    if (rows) { /* extended: the rows answer every bound value in [lo, hi] */
        take_rows(e, run, rows, bound, patchable ? sel_bit : -1);
    } else {
        e->answer = run->result;
        e->answer_len = run->result_len;
        run->result = NULL;
    }
    uint64_t h = hmap_hash(key, key_len);
    hnode_t *n = hmap_find(&self->groups, key, key_len, h);
    group_t *g = n ? CONTAINER(n, group_t, node) : NULL;
    /* An older answer for the same values is outdated; an extended one
     * whose interval meets the new one's lends it the rows beyond it (both
     * are exact and current), so the intervals grow instead of replacing
     * each other. Dropping the last one frees the group. */
    for (size_t i = 0; g && i < g->n;) {
        entry_t *old = g->entries[i];
        if (g->bounded && rows && old->rows) {
            if (!mergeable(e, old)) {
                i++;
                continue;
            }
            absorb(e, old);
            if (old->sel_bit < 0)
                e->sel_bit = -1;
        }
        bool last = g->n == 1;
        memo_drop_entry(self, old);
        if (last)
            g = NULL;
    }
    if (rows) {
        e->bytes = cost = rows_cost(e->rows, e->nrows, key_len);
        set_read_range(&run->read, e);
    }
    if (!g) {
        g = ts_xcalloc(1, sizeof *g);
        g->node = (hnode_t){.hash = h, .key = ts_memdup(key, key_len), .key_len = key_len};
        g->selector = ts_xstrdup(selector ? selector : "");
        g->bounded = rows != NULL;
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
    mirror_touch(self, g);
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

void memo_read(cache_t *self, ts_envelope_t *e)
{
    ts_call_t *call = &e->calls[0];
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
        ts_buf_t b = {0};
        long total = total_of(memo_selector(self, ts_json_string(call->params, "selector")),
                              call->params);
        if (hit && (bound ? hit->rows && ts_rows_slice(hit->rows, hit->nrows, hit->complete, &v, total,
                                               &b) == 0
                          : hit->answer != NULL)) {
            self->hits++;
            lru_unlink(self, hit);
            lru_push(self, hit);
            if (e->hot_want)
                mirror_want(self, hit->group, total);
            if (bound)
                ts_call_set_buffer(call, &b);
            else
                answer_with(call, hit->answer, hit->answer_len);
            cache_answer(self, e);
            return;
        }
        ts_buf_free(&b);
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
    p->bound_param = bound ? ts_xstrdup(param) : NULL;
    hmap_add(&self->pendings, &p->node);
    if (cache_run(self, 0, (uint16_t)(coll < 0 ? 0 : coll), call->params, bound != NULL)) {
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
    /* An extended run: its rows answer the waiting reads (all of one
     * bound value) and become the entry. */
    row_t *rows = NULL;
    bool patchable = false;
    const cJSON *v = p->bound_param ? cJSON_GetObjectItemCaseSensitive(
                                          cJSON_GetObjectItemCaseSensitive(run->request, "params"),
                                          p->bound_param)
                                    : NULL;
    ts_okey_t vk = {0};
    if (run->extend && v && !run->err_code) {
        rows = rows_of(run, &patchable);
        /* patches assume one index bucket (the doc's own value as the
         * index param); a scan (the param null, say) is dropped instead */
        patchable &= run->read.kind == TS_READ_RANGE;
        ts_okey_from_json(v, &vk); /* borrows */
    }
    const ts_selector_info_t *sel = memo_selector(self, ts_json_string(run->request, "selector"));
    bool want = false; /* a read the front door has no copy for */
    for (ts_envelope_t *e = p->waiting, *next; e; e = next) {
        next = e->held_next;
        e->held_next = NULL;
        want |= e->hot_want;
        ts_buf_t b = {0};
        if (run->err_code)
            ts_call_fail(&e->calls[0], run->err_code, "%s", run->err_message ? run->err_message : "error");
        else if (!rows)
            answer_with(&e->calls[0], run->result, run->result_len);
        else if (ts_rows_slice(rows, run->nrows, run->complete, &vk, total_of(sel, run->request), &b) == 0)
            ts_call_set_buffer(&e->calls[0], &b);
        else
            ts_call_fail(&e->calls[0], TS_E_INTERNAL, "the selector changed during the query");
        cache_answer(self, e);
    }
    if (run->err_code) {
        self->run_errors++;
    } else if (p->dropped || run->clock || self->config->cache.max_bytes <= 0 ||
               (run->extend && !rows)) {
        self->uncached++;
    } else {
        memo_key(self, run->request, rows ? p->bound_param : NULL);
        const char *name = ts_json_string(run->request, "selector");
        keep(self, run, self->buf.data, self->buf.len, name, v, rows, patchable,
             selector_bit(self->selectors, name));
        rows = NULL; /* kept, or freed by keep */
        if (want) {
            memo_key(self, run->request, p->bound_param);
            hnode_t *g = hmap_find(&self->groups, self->buf.data, self->buf.len,
                                   hmap_hash(self->buf.data, self->buf.len));
            if (g)
                mirror_want(self, CONTAINER(g, group_t, node), total_of(sel, run->request));
        }
    }
    for (size_t i = 0; rows && i < run->nrows; i++)
        row_free(&rows[i]);
    free(rows);
    free(p->bound_param);
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
    mirror_forget_all(self); /* the front door's copies know selectors by name */
    if (dropped)
        ts_info(LOG, "policy reload: %zu answers of changed selectors dropped", dropped);
    live_policy(self, selectors, self->selectors);
    ts_selectors_free(self->selectors);
    self->selectors = selectors;
    /* the kept selectors may have other places in the new list */
    for (entry_t *e = self->oldest; e; e = e->newer) {
        if (e->sel_bit < 0)
            continue;
        e->sel_bit = selector_bit(selectors, e->group->selector);
    }
}

size_t memo_invalidate_params(cache_t *self, const cJSON *request)
{
    const ts_selector_info_t *s = memo_selector(self, ts_json_string(request, "selector"));
    memo_key(self, request, s ? s->lower_bound : NULL); /* a group holds every bound value */
    hnode_t *n = hmap_find(&self->groups, self->buf.data, self->buf.len,
                           hmap_hash(self->buf.data, self->buf.len));
    if (!n)
        return 0;
    group_t *g = CONTAINER(n, group_t, node);
    size_t dropped = g->n;
    while (g->n > 1)
        memo_drop_entry(self, g->entries[g->n - 1]);
    memo_drop_entry(self, g->entries[0]); /* frees g */
    self->invalidations += dropped;
    return dropped;
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
            free(p->bound_param);
            free((char *)p->node.key);
            free(p);
        }
    hmap_free(&self->pendings);
    ts_selectors_free(self->selectors);
    self->selectors = NULL;
}

/* ---- patches ---- */

/* Where row r goes among rows: by (order key, id), as the index orders. */
static size_t row_place(const row_t *rows, size_t n, const row_t *r)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts_okey_id_cmp(&rows[mid].key, rows[mid].id, rows[mid].id_len, &r->key, r->id,
                           r->id_len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool memo_patch(cache_t *self, entry_t *e, const ts_change_t *c)
{
    if (!e->rows || e->sel_bit < 0 || !((c->known >> e->sel_bit) & 1))
        return false;
    size_t before = e->bytes;
    bool changed = false;
    uint16_t tag = ts_row_id_tag(c->data, c->id_len);
    for (size_t i = 0; i < e->nrows; i++) { /* its old row goes */
        row_t *r = &e->rows[i];
        if (r->id_tag == tag && r->id_len == c->id_len && memcmp(r->id, c->data, c->id_len) == 0) {
            changed = true;
            e->bytes -= row_cost(r);
            row_free(r);
            memmove(r, r + 1, (e->nrows - i - 1) * sizeof *r);
            e->nrows--;
            break;
        }
    }
    const char *text = ts_change_new_text(c), *v;
    size_t len = c->new_len, vn;
    char key[1024];
    const ts_readset_t *rd = &e->w.read;
    int kl;
    /* its new row comes in when it matches, is in this bucket and in the
     * range the rows cover */
    if (c->has_new && ((c->match >> e->sel_bit) & 1) && rd->field && rd->key &&
        ts_json_text_field(text, len, rd->field, strlen(rd->field), &v, &vn) &&
        (kl = ts_index_key_text(v, vn, key, sizeof key)) >= 0 && (size_t)kl == strlen(rd->key) &&
        memcmp(key, rd->key, (size_t)kl) == 0) {
        row_t r = {0};
        if (rd->order && ts_json_text_field(text, len, rd->order, strlen(rd->order), &v, &vn))
            ts_okey_from_text(v, vn, &r.key);
        r.id = ts_memdup(c->data, c->id_len);
        r.id_len = c->id_len;
        r.id_tag = tag;
        if (ts_okey_cmp(&r.key, &e->lo) >= 0 && (e->complete || !after_end(e, &r))) {
            ts_buf_t b = {0}; /* as the selector prints an item */
            ts_buf_puts(&b, "{\"id\":");
            ts_buf_json_string(&b, c->data, c->id_len);
            if (len > 2) {
                ts_buf_puts(&b, ",");
                ts_buf_append(&b, text + 1, len - 1);
            } else {
                ts_buf_puts(&b, "}");
            }
            char *key_str = r.key.str; /* into the row's block */
            r.text = ts_row_block_new(b.data, b.len, key_str, r.key.len);
            r.len = (uint32_t)b.len;
            if (r.key.kind == TS_OKEY_STR)
                r.key.str = r.text + r.len;
            ts_row_key_prefix(&r);
            free(key_str);
            ts_buf_free(&b);
            if (e->nrows == e->caprows) {
                e->caprows = e->caprows ? e->caprows * 2 : 16;
                e->rows = ts_xrealloc(e->rows, e->caprows * sizeof *e->rows);
            }
            size_t at = row_place(e->rows, e->nrows, &r);
            memmove(&e->rows[at + 1], &e->rows[at], (e->nrows - at) * sizeof *e->rows);
            e->rows[at] = r;
            e->nrows++;
            e->bytes += row_cost(&r);
            changed = true;
        } else {
            free(r.key.str);
            free(r.id);
        }
    }
    if (e->group) /* a live query's rows are not in the budget */
        self->bytes += e->bytes - before; /* unsigned: wraps back right when it shrank */
    if (e->group && changed)
        mirror_touch(self, e->group);
    return true;
}

/* ---- rows for live queries ---- */

const cJSON *memo_bound(const cache_t *self, const cJSON *request, const char **param)
{
    return bound_of(self, request, param);
}

entry_t *memo_rows_of(cache_t *self, ts_cache_run_t *run, const char *param)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(run->request, "params"), param);
    if (!run->extend || run->err_code || !v)
        return NULL;
    bool patchable;
    row_t *rows = rows_of(run, &patchable);
    patchable &= run->read.kind == TS_READ_RANGE; /* see memo_result */
    entry_t *e = ts_xcalloc(1, sizeof *e);
    take_rows(e, run, rows, v,
              patchable ? selector_bit(self->selectors, ts_json_string(run->request, "selector"))
                        : -1);
    /* the watcher is the live query's: this one only holds the rows (its
     * own read is what memo_patch checks new rows against) */
    e->w.read.kind = run->read.kind;
    e->w.read.field = run->read.field ? ts_xstrdup(run->read.field) : NULL;
    e->w.read.order = run->read.order ? ts_xstrdup(run->read.order) : NULL;
    e->w.read.key = run->read.key ? ts_xstrdup(run->read.key) : NULL;
    return e;
}

int memo_slice(cache_t *self, const entry_t *e, const cJSON *request, const char *param,
               ts_buf_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(request, "params"), param);
    if (!v)
        return -1;
    ts_okey_t k = {0};
    ts_okey_from_json(v, &k); /* borrows */
    long total = total_of(memo_selector(self, ts_json_string(request, "selector")), request);
    return ts_rows_slice(e->rows, e->nrows, e->complete, &k, total, out);
}

void memo_free_rows(entry_t *e)
{
    if (!e)
        return;
    ts_readset_clear(&e->w.read);
    for (size_t i = 0; i < e->nrows; i++)
        row_free(&e->rows[i]);
    free(e->rows);
    free(e->lo.str);
    free(e->hi.str);
    free(e->end_id);
    free(e);
}

void memo_evict(cache_t *self)
{
    evict(self);
}
