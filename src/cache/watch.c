/* watch.c — read-sets and the changes that touch them.
 *
 * A selector run reads one range of one index bucket (field = key, order
 * keys in [lo, hi]), or a whole collection (a scan), or nothing. Each
 * memoized answer and each live query is watched where it read: range
 * read-sets in a list per (collection, field, order field, key), scans in
 * a list per collection. A change carries a document's old and new text;
 * for each (field, order field) some read-set names, the old and the new
 * key are looked up, and only the watchers whose range holds the old or
 * the new order key are touched. A write that no read-set covers touches
 * nothing. */
#include "cache/cache_int.h"

#define KEY_MAX 1024

/* A (field, order field) that some range read-set of a collection names. */
typedef struct field_pair {
    struct field_pair *next;
    char *field, *order;
    size_t refs;
} field_pair_t;

struct watch_list {
    hnode_t node;
    field_pair_t *pair;
    watcher_t *head;
    bool busy;       /* being walked: not freed when it empties */
    char key[];
};

/* The list key: collection (2 bytes), field, NUL, order, NUL, bucket key. */
static size_t list_key(char *out, size_t cap, uint16_t coll, const char *field,
                       const char *order, const char *key, size_t key_len)
{
    size_t fl = strlen(field), ol = order ? strlen(order) : 0;
    size_t n = 2 + fl + 1 + ol + 1 + key_len;
    if (n > cap)
        return 0;
    memcpy(out, &coll, 2);
    memcpy(out + 2, field, fl + 1);
    memcpy(out + 3 + fl, order ? order : "", ol + 1);
    memcpy(out + 4 + fl + ol, key, key_len);
    return n;
}

static field_pair_t *pair_ref(cache_t *self, uint16_t coll, const char *field, const char *order)
{
    for (field_pair_t *p = self->pairs[coll]; p; p = p->next)
        if (strcmp(p->field, field) == 0 && strcmp(p->order ? p->order : "", order ? order : "") == 0) {
            p->refs++;
            return p;
        }
    field_pair_t *p = ts_xcalloc(1, sizeof *p);
    p->field = ts_xstrdup(field);
    p->order = order ? ts_xstrdup(order) : NULL;
    p->refs = 1;
    p->next = self->pairs[coll];
    self->pairs[coll] = p;
    return p;
}

static void link_in(watcher_t **head, watcher_t *w)
{
    w->prev = NULL;
    w->next = *head;
    if (*head)
        (*head)->prev = w;
    *head = w;
}

static void link_out(watcher_t **head, watcher_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        *head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

void watch_set(cache_t *self, watcher_t *w, uint16_t coll, ts_readset_t *read)
{
    watch_unset(self, w);
    w->read = *read;
    memset(read, 0, sizeof *read);
    w->collection = coll;
    if (w->read.kind == TS_READ_ALL) {
        link_in(&self->all[coll], w);
        return;
    }
    if (w->read.kind != TS_READ_RANGE || !w->read.field || !w->read.key)
        return;
    char key[3 * KEY_MAX];
    size_t klen = list_key(key, sizeof key, coll, w->read.field, w->read.order, w->read.key,
                           strlen(w->read.key));
    if (!klen) { /* names too long to watch precisely: watch the collection */
        w->read.kind = TS_READ_ALL;
        link_in(&self->all[coll], w);
        return;
    }
    uint64_t h = hmap_hash(key, klen);
    hnode_t *n = hmap_find(&self->lists, key, klen, h);
    watch_list_t *l = n ? CONTAINER(n, watch_list_t, node) : NULL;
    if (!l) {
        l = ts_xcalloc(1, sizeof *l + klen);
        memcpy(l->key, key, klen);
        l->node = (hnode_t){.hash = h, .key = l->key, .key_len = klen};
        l->pair = pair_ref(self, coll, w->read.field, w->read.order);
        hmap_add(&self->lists, &l->node);
    }
    link_in(&l->head, w);
    w->list = l;
}

static void list_free(cache_t *self, watch_list_t *l)
{
    hmap_del(&self->lists, &l->node);
    l->pair->refs--; /* pairs stay: there are a few per selector */
    free(l);
}

void watch_unset(cache_t *self, watcher_t *w)
{
    if (w->read.kind == TS_READ_ALL) {
        link_out(&self->all[w->collection], w);
    } else if (w->list) {
        watch_list_t *l = w->list;
        link_out(&l->head, w);
        if (!l->head && !l->busy)
            list_free(self, l);
    }
    w->list = NULL;
    ts_readset_clear(&w->read);
}

bool watch_in_range(const ts_readset_t *r, const ts_okey_t *k)
{
    if (!r->lo_inf) {
        ts_okey_t lo = {.kind = r->lo_kind, .len = r->lo_len, .num = r->lo_num, .str = r->lo_str};
        if (ts_okey_cmp(k, &lo) < 0)
            return false;
    }
    if (!r->hi_inf) {
        ts_okey_t hi = {.kind = r->hi_kind, .len = r->hi_len, .num = r->hi_num, .str = r->hi_str};
        if (ts_okey_cmp(k, &hi) > 0)
            return false;
    }
    return true;
}

static void touch(cache_t *self, watcher_t *w, const ts_change_t *c)
{
    if (w->live) {
        live_t *l = CONTAINER(w, live_t, w);
        if (l->rows && memo_patch(self, l->rows, c)) {
            self->patches++;
            live_patched(self, l);
            return;
        }
        live_touched(self, l);
    } else if (memo_patch(self, CONTAINER(w, entry_t, w), c)) {
        self->patches++;
        return;
    } else {
        memo_drop_entry(self, CONTAINER(w, entry_t, w));
    }
    self->invalidations++;
}

/* Touches the watchers of one side (old or new) of a change. */
static void touch_side(cache_t *self, const ts_change_t *c, const field_pair_t *p,
                       const char *text, size_t len)
{
    const char *v;
    size_t vn;
    char key[KEY_MAX], lkey[3 * KEY_MAX];
    if (!ts_json_text_field(text, len, p->field, strlen(p->field), &v, &vn))
        return;
    int kl = ts_index_key_text(v, vn, key, sizeof key);
    if (kl < 0)
        return; /* in no bucket */
    size_t ll = list_key(lkey, sizeof lkey, c->collection, p->field, p->order, key, (size_t)kl);
    hnode_t *n = ll ? hmap_find(&self->lists, lkey, ll, hmap_hash(lkey, ll)) : NULL;
    if (!n)
        return;
    watch_list_t *l = CONTAINER(n, watch_list_t, node);
    ts_okey_t order = {0};
    if (p->order && ts_json_text_field(text, len, p->order, strlen(p->order), &v, &vn))
        ts_okey_from_text(v, vn, &order);
    l->busy = true;
    for (watcher_t *w = l->head, *next; w; w = next) {
        next = w->next;
        if (watch_in_range(&w->read, &order))
            touch(self, w, c);
    }
    l->busy = false;
    if (!l->head)
        list_free(self, l);
    free(order.str);
}

void watch_changes(cache_t *self, ts_change_t *changes)
{
    for (ts_change_t *c = changes; c; c = c->next) {
        if (c->collection >= TS_MAX_COLLECTIONS)
            continue;
        for (watcher_t *w = self->all[c->collection], *next; w; w = next) {
            next = w->next;
            touch(self, w, c);
        }
        for (field_pair_t *p = self->pairs[c->collection]; p; p = p->next) {
            if (!p->refs)
                continue;
            if (c->has_old)
                touch_side(self, c, p, ts_change_old(c), c->old_len);
            if (c->has_new)
                touch_side(self, c, p, ts_change_new_text(c), c->new_len);
        }
    }
}

void watch_free_all(cache_t *self)
{
    for (size_t i = 0; i < self->lists.cap; i++)
        while (self->lists.buckets[i]) {
            hnode_t *n = self->lists.buckets[i];
            self->lists.buckets[i] = n->next;
            free(CONTAINER(n, watch_list_t, node));
        }
    hmap_free(&self->lists);
    for (size_t c = 0; c < TS_MAX_COLLECTIONS; c++)
        while (self->pairs[c]) {
            field_pair_t *p = self->pairs[c];
            self->pairs[c] = p->next;
            free(p->field);
            free(p->order);
            free(p);
        }
}
