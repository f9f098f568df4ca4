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
    if (self->hot_held)
        front_hot_release(self, false, 0);
}

static const ts_hot_group_t *find(front_t *self, const cJSON *request, const char *skip)
{
    ts_query_key(&self->hot_key, request, skip);
    hnode_t *n = hmap_find(&self->hot, self->hot_key.data, self->hot_key.len,
                           hmap_hash(self->hot_key.data, self->hot_key.len));
    return n ? CONTAINER(n, hot_node_t, node)->g : NULL;
}

/* The answer of a lower-bound group for bound value v, into b (NULL:
 * whether it could be given). */
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

/* The answer to e from the copies, into b: 1 answered, 0 a copy of its
 * group that cannot answer it, -1 no copy. b NULL: 1 the copies could
 * answer it, nothing copied. */
static int answer_from_copies(front_t *self, const ts_envelope_t *e, const char *bound,
                              ts_buf_t *b)
{
    /* As the cache keys it: a lower-bound group leaves the bound out, when
     * the query is a whole answer (no page) and the bound a value. */
    const cJSON *request = e->calls[0].params;
    const cJSON *v = bound ? cJSON_GetObjectItemCaseSensitive(
                                 cJSON_GetObjectItemCaseSensitive(request, "params"), bound)
                           : NULL;
    const ts_hot_group_t *g = NULL;
    if ((cJSON_IsString(v) || cJSON_IsNumber(v)) &&
        !cJSON_GetObjectItemCaseSensitive(request, "limit") &&
        !cJSON_GetObjectItemCaseSensitive(request, "cursor") &&
        (g = find(self, request, bound)) != NULL)
        return slice(g, v, b) ? 1 : 0;
    if (!(g = find(self, request, NULL)))
        return -1;
    return g->n && g->entries[0].answer &&
                   (!b || ts_buf_append(b, g->entries[0].answer, g->entries[0].answer_len) == 0)
               ? 1
               : 0;
}

/* Whether the copies reflect all a read must: its client's writes, and
 * what clients have been told. */
static bool current_for(const front_t *self, const ts_envelope_t *e)
{
    return self->hot_seen.front_msg >= e->wait_for && self->hot_seen.mark >= e->wait_mark;
}

/* 1: answered; 0: not (the cache answers it); -1: the copies cannot say yet. */
static int try_answer(front_t *self, ts_envelope_t *e)
{
    ts_call_t *call = &e->calls[0];
    const char *bound = NULL;
    if (!bound_of(self, ts_json_string(call->params, "selector"), &bound)) {
        e->hot_want = true; /* not seen yet: the cache sends what it keeps of it */
        return 0;
    }
    /* The whole answer at once, sent as it is (answer.c): the rows are
     * copied once, not three times; for a read that must still wait for
     * the copies (held), not at all yet. */
    bool current = current_for(self, e);
    ts_buf_t b = {0};
    if (current && call->id_json) {
        front_response_head(&b, call);
        ts_buf_puts(&b, "\"result\":");
    }
    int rc = answer_from_copies(self, e, bound, current ? &b : NULL);
    if (rc < 0)
        e->hot_want = true;
    if (rc == 1 && current) {
        self->hot_hits++;
        if (call->id_json && ts_buf_puts(&b, "}") == 0)
            e->reply = ts_buf_take(&b, &e->reply_len);
        else
            ts_call_set_buffer(call, &b);
        front_deliver(self, e);
        return 1;
    }
    ts_buf_free(&b);
    return rc == 1 ? -1 : 0;
}

bool front_hot_answer(front_t *self, ts_envelope_t *e)
{
    const ts_call_t *call = &e->calls[0];
    if (call->method != TS_M_QUERY || !ts_json_string(call->params, "selector"))
        return false;
    int rc = try_answer(self, e);
    if (rc >= 0)
        return rc == 1;
    /* A copy could answer it, once the copies have seen what it must
     * reflect (the next HOT, mostly): held here, not sent to the cache. */
    self->hot_holds++;
    e->held_next = NULL;
    if (self->hot_held_last)
        self->hot_held_last->held_next = e;
    else
        self->hot_held = e;
    self->hot_held_last = e;
    return true;
}

/* Held reads: those the copies now answer are answered; the others go to
 * the cache (all of them when `all`, or those held since before `older_us`). */
void front_hot_release(front_t *self, bool all, int64_t older_us)
{
    ts_envelope_t *keep = NULL, **keep_tail = &keep, *send = NULL, **send_tail = &send;
    size_t nsend = 0;
    for (ts_envelope_t *e = self->hot_held, *next; e; e = next) {
        next = e->held_next;
        e->held_next = NULL;
        int64_t since = e->received_us; /* e is gone once answered */
        int rc = all || !current_for(self, e) ? -1 : try_answer(self, e);
        if (rc == 1) {
            ts_hist_add(&self->hot_hold_us, ts_mono_us() - since);
            continue;
        }
        if (rc == 0 || all || e->received_us < older_us) {
            *send_tail = e, send_tail = &e->held_next;
            nsend++;
        } else {
            *keep_tail = e, keep_tail = &e->held_next;
        }
    }
    self->hot_held = keep;
    self->hot_held_last = keep ? CONTAINER(keep_tail, ts_envelope_t, held_next) : NULL;
    if (!nsend)
        return;
    ts_envelope_t **reads = ts_xmalloc(nsend * sizeof *reads);
    nsend = 0;
    for (ts_envelope_t *e = send, *next; e; e = next) {
        next = e->held_next;
        e->held_next = NULL;
        reads[nsend++] = e;
    }
    front_to_cache(self, reads, nsend);
    free(reads);
}
