/* mirror.c — copies of hot answers for the front door (HOT).
 *
 * A hit costs the cache little, but its trip does: the front door hands
 * the read over, this thread wakes, answers, and the front door wakes
 * again to send it. So the front door keeps copies of the groups it reads
 * often and answers them itself. It asks for a copy by passing a read it
 * has none for (hot_want); from then on the group is "mirrored": whenever
 * its entries change (a patch, a new entry, a drop) the whole group goes
 * again, or its forgetting, in the next HOT, before the answers that
 * follow it. Rows are shared, not copied (ts_row_block_*).
 *
 * HOT also carries `seen`: the copies reflect every write of the front
 * door's messages up to seen.front_msg and the store's work up to its mark
 * seen.mark, which is what lets the front door answer a client whose
 * writes, and all it was told, they already reflect (front/hot.c). */
#include "cache/cache_int.h"

#include <zmq.h>

/* The group's key goes in the next HOT: its copy, or its forgetting. */
void mirror_touch(cache_t *self, group_t *g)
{
    if (!g->mirrored || g->hot_dirty)
        return;
    g->hot_dirty = true;
    if (self->hot.n == self->hot.cap) {
        self->hot.cap = self->hot.cap ? self->hot.cap * 2 : 64;
        self->hot.keys = ts_xrealloc(self->hot.keys, self->hot.cap * sizeof *self->hot.keys);
        self->hot.lens = ts_xrealloc(self->hot.lens, self->hot.cap * sizeof *self->hot.lens);
    }
    self->hot.keys[self->hot.n] = ts_memdup(g->node.key, g->node.key_len);
    self->hot.lens[self->hot.n++] = g->node.key_len;
}

void mirror_want(cache_t *self, group_t *g, long total)
{
    if (!g || g->mirrored)
        return; /* its copy is there, or on its way */
    g->mirrored = true;
    g->total = total;
    mirror_touch(self, g);
}

static void clear_keys(cache_t *self)
{
    for (size_t i = 0; i < self->hot.n; i++)
        free(self->hot.keys[i]);
    self->hot.n = 0;
}

void mirror_forget_all(cache_t *self)
{
    for (size_t b = 0; b < self->groups.cap; b++)
        for (hnode_t *n = self->groups.buckets[b]; n; n = n->next) {
            group_t *g = CONTAINER(n, group_t, node);
            g->mirrored = g->hot_dirty = false;
        }
    clear_keys(self);
    self->hot.forget_all = true;
}

/* The copy of group g (n == 0 when it is gone or no longer mirrored). */
static ts_hot_group_t *copy_of(cache_t *self, const char *key, size_t len)
{
    ts_hot_group_t *h = ts_xcalloc(1, sizeof *h);
    h->key = ts_memdup(key, len);
    h->key_len = len;
    hnode_t *n = hmap_find(&self->groups, key, len, hmap_hash(key, len));
    group_t *g = n ? CONTAINER(n, group_t, node) : NULL;
    if (!g || !g->mirrored)
        return h;
    g->hot_dirty = false;
    const ts_selector_info_t *s = memo_selector(self, g->selector);
    h->selector = ts_xstrdup(g->selector);
    h->bound = g->bounded && s && s->lower_bound ? ts_xstrdup(s->lower_bound) : NULL;
    h->total = g->total;
    h->entries = ts_xcalloc(g->n ? g->n : 1, sizeof *h->entries);
    for (size_t i = 0; i < g->n; i++) {
        const entry_t *e = g->entries[i];
        ts_hot_entry_t *c = &h->entries[h->n];
        if (e->answer) {
            c->answer = ts_memdup(e->answer, e->answer_len);
            c->answer_len = e->answer_len;
        } else if (e->rows && h->bound) {
            memo_copy_okey(&c->lo, &e->lo);
            memo_copy_okey(&c->hi, &e->hi);
            c->hi_inf = e->hi_inf;
            c->complete = e->complete;
            c->rows = ts_xmalloc((e->nrows ? e->nrows : 1) * sizeof *c->rows);
            for (size_t k = 0; k < e->nrows; k++) {
                const row_t *r = &e->rows[k];
                c->rows[k] = (ts_row_t){.text = r->text, .len = r->len, .key = r->key,
                                        .pre = {r->pre[0], r->pre[1]}};
                ts_row_block_ref(r->text);
            }
            c->nrows = e->nrows;
        } else {
            continue;
        }
        h->n++;
    }
    return h;
}

void mirror_flush(cache_t *self)
{
    if (!self->hot.n && !self->hot.forget_all && self->seen <= self->hot.sent.front_msg &&
        self->mark <= self->hot.sent.mark)
        return;
    ts_hot_t *hot = ts_xcalloc(1, sizeof *hot);
    hot->seen = (ts_seen_t){.front_msg = self->seen, .mark = self->mark};
    hot->forget_all = self->hot.forget_all;
    ts_hot_group_t **tail = &hot->groups;
    for (size_t i = 0; i < self->hot.n; i++) {
        *tail = copy_of(self, self->hot.keys[i], self->hot.lens[i]);
        tail = &(*tail)->next;
    }
    clear_keys(self);
    self->hot.forget_all = false;
    self->hot.sent = hot->seen;
    if (ts_send_HOT(self->to_front, &hot, 1)) {
        /* a copy the front door does not get is one it does not answer
         * from; but a forgetting lost would leave it answering an old
         * one: forget everything at the next chance */
        ts_error(LOG, "cannot pass hot answers to the front door: %s", zmq_strerror(zmq_errno()));
        ts_hot_free(hot);
        mirror_forget_all(self);
    }
}

void mirror_free_all(cache_t *self)
{
    clear_keys(self);
    free(self->hot.keys);
    free(self->hot.lens);
}
