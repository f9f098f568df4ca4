/* hot.c — answers the front door gives itself: copies of the cache's hot
 * groups (HOT, cache/mirror.c).
 *
 * A query the copies can answer is answered here, without the trip to the
 * cache and back, when it cannot miss what it must reflect. The copies
 * reflect every write of the front door's messages up to
 * hot_seen.front_msg, and the store's work up to its mark hot_seen.mark;
 * everything the store passes on carries its mark then. So a read is
 * answered here only if the copies cover its own client's writes (those
 * still unanswered included) and the mark of everything already told to
 * any client (answers, events): a client that saw a change, or heard of
 * it, never reads an answer from before it. Otherwise, or without a copy,
 * it goes to the cache as before (asking for a copy when there was none).
 * The copies change only by HOT, in order with the cache's answers. */
#include "front/front_int.h"

typedef struct {
    hnode_t node;         /* key: the group's */
    ts_hot_group_t *g;
} hot_node_t;

/* The lower-bound param of selector name: 1 and *bound (NULL: none) when
 * a copy told, else 0. */
static int bound_of(const front_t *self, const char *name, const char **bound)
{
    for (size_t i = 0; i < self->nhot_sels; i++)
        if (strcmp(self->hot_sels[i].selector, name) == 0) {
            *bound = self->hot_sels[i].bound;
            return 1;
        }
    return 0;
}

static void learn_selector(front_t *self, const ts_hot_group_t *g)
{
    const char *bound;
    if (!g->selector || bound_of(self, g->selector, &bound))
        return;
    self->hot_sels = ts_xrealloc(self->hot_sels, (self->nhot_sels + 1) * sizeof *self->hot_sels);
    self->hot_sels[self->nhot_sels].selector = ts_xstrdup(g->selector);
    self->hot_sels[self->nhot_sels].bound = g->bound ? ts_xstrdup(g->bound) : NULL;
    self->nhot_sels++;
}

static void drop(front_t *self, hot_node_t *h)
{
    hmap_del(&self->hot, &h->node);
    ts_hot_group_free(h->g);
    free(h);
}

void front_hot_free_all(front_t *self)
{
    for (size_t b = 0; b < self->hot.cap; b++)
        while (self->hot.buckets[b])
            drop(self, CONTAINER(self->hot.buckets[b], hot_node_t, node));
    hmap_free(&self->hot);
    for (size_t i = 0; i < self->nhot_sels; i++) {
        free(self->hot_sels[i].selector);
        free(self->hot_sels[i].bound);
    }
    free(self->hot_sels);
    self->hot_sels = NULL;
    self->nhot_sels = 0;
}

void front_hot_take(front_t *self, ts_hot_t *hot)
{
    if (hot->forget_all)
        front_hot_free_all(self);
    while (hot->groups) {
        ts_hot_group_t *g = hot->groups;
        hot->groups = g->next;
        g->next = NULL;
        uint64_t hash = hmap_hash(g->key, g->key_len);
        hnode_t *n = hmap_find(&self->hot, g->key, g->key_len, hash);
        if (n)
            drop(self, CONTAINER(n, hot_node_t, node));
        if (!g->n) {
            ts_hot_group_free(g);
            continue;
        }
        learn_selector(self, g);
        hot_node_t *h = ts_xmalloc(sizeof *h);
        h->g = g;
        h->node = (hnode_t){.hash = hash, .key = g->key, .key_len = g->key_len};
        hmap_add(&self->hot, &h->node);
    }
    if (hot->seen.front_msg > self->hot_seen.front_msg)
        self->hot_seen.front_msg = hot->seen.front_msg;
    if (hot->seen.mark > self->hot_seen.mark)
        self->hot_seen.mark = hot->seen.mark;
    ts_hot_free(hot);
}

static const ts_hot_group_t *find(front_t *self, const cJSON *request, const char *skip)
{
    ts_query_key(&self->hot_key, request, skip);
    hnode_t *n = hmap_find(&self->hot, self->hot_key.data, self->hot_key.len,
                           hmap_hash(self->hot_key.data, self->hot_key.len));
    return n ? CONTAINER(n, hot_node_t, node)->g : NULL;
}

/* The answer of a lower-bound group for bound value v, into b. */
static bool slice(const ts_hot_group_t *g, const cJSON *v, ts_buf_t *b)
{
    ts_okey_t k = {0};
    ts_okey_from_json(v, &k); /* borrows */
    for (size_t i = 0; i < g->n; i++) { /* entries are few, and by lo */
        const ts_hot_entry_t *e = &g->entries[i];
        if (ts_okey_cmp(&k, &e->lo) < 0)
            break;
        if (!e->hi_inf && ts_okey_cmp(&k, &e->hi) > 0)
            continue;
        return ts_rows_slice(e->rows, e->nrows, e->complete, &k, g->total, b) == 0;
    }
    return false;
}

bool front_hot_answer(front_t *self, ts_envelope_t *e)
{
    ts_call_t *call = &e->calls[0];
    const char *name = ts_json_string(call->params, "selector"), *bound = NULL;
    if (call->method != TS_M_QUERY || !name)
        return false;
    if (!bound_of(self, name, &bound)) {
        e->hot_want = true; /* not seen yet: the cache sends what it keeps of it */
        return false;
    }
    uint64_t writes = front_client_writes(self, e);
    if (self->hot_seen.mark < self->told_mark || self->hot_seen.front_msg < writes)
        return false; /* what it must reflect may not be in the copies yet */
    /* As the cache keys it: a lower-bound group leaves the bound out, when
     * the query is a whole answer (no page) and the bound a value. */
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(call->params, "params");
    const cJSON *v = bound ? cJSON_GetObjectItemCaseSensitive(params, bound) : NULL;
    const ts_hot_group_t *g = NULL;
    ts_buf_t b = {0};
    bool answered = false;
    if ((cJSON_IsString(v) || cJSON_IsNumber(v)) &&
        !cJSON_GetObjectItemCaseSensitive(call->params, "limit") &&
        !cJSON_GetObjectItemCaseSensitive(call->params, "cursor") &&
        (g = find(self, call->params, bound)) != NULL)
        answered = slice(g, v, &b);
    else if ((g = find(self, call->params, NULL)) != NULL && g->n && g->entries[0].answer)
        answered = ts_buf_append(&b, g->entries[0].answer, g->entries[0].answer_len) == 0;
    if (!g)
        e->hot_want = true;
    if (!answered) {
        ts_buf_free(&b);
        return false;
    }
    self->hot_hits++;
    ts_call_set_buffer(call, &b);
    front_deliver(self, e);
    return true;
}
