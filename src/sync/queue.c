/* queue.c — the push queue of the sync actor and the mutation state machine
 * (sync_mstate_set: QUEUED → SENDING → popped | BACKOFF → QUEUED | FETCHING →
 * SETTLING | SETTLING, waiting for the store's DROP or replacement). Holds
 * the documents (a FIFO of mutations each, only the head ever sent), the
 * ready heap of heads by seq, the BACKOFF list, and takes the outbox
 * records persist sends (OUTBOX). */
#include "sync_int.h"

static const char *const mstate_names[M__LAST] = {"queued", "sending", "backoff", "fetching",
                                                  "settling"};

/* ---- documents ---- */

sdoc_t *sync_doc_find(sync_t *self, const char *coll, const char *id, uint64_t h)
{
    if (!self->table_cap)
        return NULL;
    for (sdoc_t *d = self->table[h & (self->table_cap - 1)]; d; d = d->hnext)
        if (d->hash == h && strcmp(d->id, id) == 0 && strcmp(d->coll, coll) == 0)
            return d;
    return NULL;
}

static sdoc_t *doc_get(sync_t *self, const char *coll, const char *id)
{
    uint64_t h = sync_hash_key(coll, id);
    sdoc_t *d = sync_doc_find(self, coll, id, h);
    if (d)
        return d;
    if (strlen(coll) > 64 || strlen(id) > 64)
        return NULL;
    if (self->ndocs + 1 > self->table_cap / 2) {
        size_t cap = self->table_cap ? self->table_cap * 2 : 1024;
        sdoc_t **t = ts_xcalloc(cap, sizeof *t);
        for (size_t i = 0; i < self->table_cap; i++) {
            for (sdoc_t *x = self->table[i], *next; x; x = next) {
                next = x->hnext;
                x->hnext = t[x->hash & (cap - 1)];
                t[x->hash & (cap - 1)] = x;
            }
        }
        free(self->table);
        self->table = t;
        self->table_cap = cap;
    }
    d = ts_xcalloc(1, sizeof *d);
    d->hash = h;
    ts_copy_text(d->coll, sizeof d->coll, coll);
    ts_copy_text(d->id, sizeof d->id, id);
    d->hnext = self->table[h & (self->table_cap - 1)];
    self->table[h & (self->table_cap - 1)] = d;
    self->ndocs++;
    return d;
}

/* The version our confirmed writes brought a freed document to, or 0. */
int64_t sync_recent_version(const sync_t *self, const char *coll, const char *id, uint64_t h)
{
    const recent_t *r = self->recent ? &self->recent[h % RECENT_SLOTS] : NULL;
    return r && r->hash == h && strcmp(r->id, id) == 0 && strcmp(r->coll, coll) == 0 ? r->version
                                                                                       : 0;
}

/* Frees the document once nothing refers to it any more. */
void sync_doc_maybe_free(sync_t *self, sdoc_t *d)
{
    if (d->head || d->heap_refs || d->unacked > 0 || d->held || d->paused_seq)
        return;
    if (self->recent && d->version > 0) {
        recent_t *r = &self->recent[d->hash % RECENT_SLOTS];
        r->hash = d->hash;
        r->version = d->version;
        memcpy(r->coll, d->coll, sizeof r->coll);
        memcpy(r->id, d->id, sizeof r->id);
    }
    sdoc_t **p = &self->table[d->hash & (self->table_cap - 1)];
    while (*p != d)
        p = &(*p)->hnext;
    *p = d->hnext;
    self->ndocs--;
    free(d);
}

/* ---- the ready heap (heads to send, oldest seq first) ---- */

void sync_heap_push(sync_t *self, sdoc_t *d)
{
    if (self->heap_len == self->heap_cap) {
        size_t cap = self->heap_cap ? self->heap_cap * 2 : 256;
        self->heap = ts_xrealloc(self->heap, cap * sizeof *self->heap);
        self->heap_cap = cap;
    }
    size_t i = self->heap_len++;
    struct heap_entry e = {d->head->seq, d};
    while (i > 0 && self->heap[(i - 1) / 2].seq > e.seq) {
        self->heap[i] = self->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    self->heap[i] = e;
    d->heap_refs++;
}

struct heap_entry sync_heap_pop(sync_t *self)
{
    struct heap_entry top = self->heap[0], last = self->heap[--self->heap_len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= self->heap_len)
            break;
        if (c + 1 < self->heap_len && self->heap[c + 1].seq < self->heap[c].seq)
            c++;
        if (self->heap[c].seq >= last.seq)
            break;
        self->heap[i] = self->heap[c];
        i = c;
    }
    if (self->heap_len)
        self->heap[i] = last;
    top.doc->heap_refs--;
    return top;
}

static void waiting_remove(sync_t *self, mut_t *m)
{
    for (size_t i = 0; i < self->nwaiting; i++) {
        if (self->waiting[i] == m) {
            self->waiting[i] = self->waiting[--self->nwaiting];
            return;
        }
    }
}

/* ---- a queued mutation's state: every change goes through here ---- */

void sync_mstate_set(sync_t *self, mut_t *m, mstate_t to)
{
    mstate_t from = m->state;
    if (from == to)
        return;
    ts_debug(LOG, "mutation %s seq=%" PRId64 " %s/%s: %s -> %s", m->mutation, m->seq,
             m->doc->coll, m->doc->id, mstate_names[from], mstate_names[to]);
    if (from == M_SENDING || from == M_FETCHING)
        self->in_flight--;
    if (from == M_BACKOFF)
        waiting_remove(self, m);
    m->state = to;
    if (from == M_SENDING && m->doc->held)
        sync_hold_release(self, m->doc);
    switch (to) {
    case M_SENDING:
    case M_FETCHING: self->in_flight++; break;
    case M_BACKOFF:
        if (self->nwaiting == self->waiting_cap) {
            size_t cap = self->waiting_cap ? self->waiting_cap * 2 : 64;
            void *p = ts_xrealloc(self->waiting, cap * sizeof *self->waiting);
            self->waiting = p;
            self->waiting_cap = cap;
        }
        self->waiting[self->nwaiting++] = m;
        break;
    case M_QUEUED:
        if (m->doc->head == m)
            sync_heap_push(self, m->doc);
        break;
    default: break;
    }
}

static void mut_free(sync_t *self, mut_t *m)
{
    if (m->stuck)
        self->stuck--;
    self->queued--;
    free(m->body);
    free(m);
}

/* Removes the head of its document; the next one (if any) becomes ready. */
void sync_head_pop(sync_t *self, sdoc_t *d)
{
    mut_t *m = d->head;
    /* Out of the queues and out of flight, like any answered write (and a
     * change held for its answer is let go). */
    sync_mstate_set(self, m, M_SETTLING);
    d->head = m->next;
    if (!d->head)
        d->tail = NULL;
    mut_free(self, m);
    if (d->head && d->head->state == M_QUEUED)
        sync_heap_push(self, d);
}

/* ---- the outbox ---- */

static void set_from_record(mut_t *m, const ts_record_t *r)
{
    m->seq = r->seq;
    m->at_ms = r->at_ms;
    m->base_version = r->version;
    m->op = r->op;
    memcpy(m->mutation, r->mutation, sizeof m->mutation);
    free(m->body);
    m->body = r->body ? ts_xstrndup(r->body, r->body_len) : NULL;
    m->rounds = m->rounds_out = 0;
    m->sent = false;
    m->try_ms = m->sent_ms = 0;
    if (m->stuck)
        m->stuck = false; /* the caller fixes self->stuck */
}

static void outbox_mutation(sync_t *self, const ts_record_t *r)
{
    if (r->seq > self->max_seq)
        self->max_seq = r->seq;
    for (size_t i = 0; i < self->nwithheld; i++)
        if (self->withheld[i] == r->seq) { /* cancelled before it came: never sent */
            self->withheld[i] = self->withheld[--self->nwithheld];
            return;
        }
    sdoc_t *d = doc_get(self, r->collection, r->doc_id);
    if (!d) { /* the front door lets no such name through */
        ts_error(LOG, "cannot queue mutation %s: a name over 64 bytes", r->mutation);
        return;
    }
    mut_t **p = &d->head;
    while (*p && (*p)->seq < r->seq)
        p = &(*p)->next;
    if (*p && (*p)->seq == r->seq) { /* a replacement (conflict resolution) */
        mut_t *m = *p;
        if (m->stuck)
            self->stuck--;
        set_from_record(m, r);
        if (m->state == M_SETTLING || m->state == M_BACKOFF)
            sync_mstate_set(self, m, M_QUEUED);
        else if (m->state == M_SENDING || m->state == M_FETCHING)
            ts_warn(LOG, "mutation seq=%" PRId64 " replaced while in flight", r->seq);
        return;
    }
    mut_t *m = ts_xcalloc(1, sizeof *m);
    m->doc = d;
    m->state = M_QUEUED;
    set_from_record(m, r);
    m->next = *p;
    *p = m;
    if (!m->next)
        d->tail = m;
    self->queued++;
    if (d->head == m) /* the document's first (seqs grow, so never in front of a sent one) */
        sync_heap_push(self, d);
}

/* Removes m from its document's FIFO and frees it (and the document when
 * nothing else holds it). */
void sync_mut_forget(sync_t *self, mut_t *m)
{
    sdoc_t *d = m->doc;
    if (m == d->head) {
        sync_head_pop(self, d);
    } else {
        mut_t *prev = d->head;
        while (prev->next != m)
            prev = prev->next;
        prev->next = m->next;
        if (d->tail == m)
            d->tail = prev;
        if (m->state == M_BACKOFF)
            waiting_remove(self, m);
        mut_free(self, m);
    }
    sync_doc_maybe_free(self, d);
}

static void outbox_drop(sync_t *self, const ts_record_t *r)
{
    sdoc_t *d = sync_doc_find(self, r->collection, r->doc_id, sync_hash_key(r->collection, r->doc_id));
    if (!d)
        return;
    if (d->paused_seq == r->seq) { /* the cancelled one: the document may go on */
        d->paused_seq = 0;
        if (d->head && d->head->state == M_QUEUED)
            sync_heap_push(self, d);
        sync_doc_maybe_free(self, d);
        return;
    }
    for (mut_t *m = d->head; m; m = m->next) {
        if (m->seq != r->seq)
            continue;
        if (m->state == M_SENDING || m->state == M_FETCHING)
            m->dropped = true; /* forgotten when its answer comes */
        else
            sync_mut_forget(self, m);
        return;
    }
    if (d->unacked > 0) { /* the DROP of a seq we confirmed */
        d->unacked--;
        sync_doc_maybe_free(self, d);
    }
}

void sync_on_outbox(sync_t *self, ts_record_t **ptrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (ts_record_t *r = ptrs[i]; r; r = r->next) {
            if (!r->collection || !r->doc_id)
                continue;
            if (r->kind == TS_REC_MUTATION)
                outbox_mutation(self, r);
            else if (r->kind == TS_REC_DROP)
                outbox_drop(self, r);
        }
        ts_record_free_list(ptrs[i]);
    }
}

/* A client asks to cancel a mutation. Only one never sent can be: the
 * server cannot have applied it, and it is withheld from now on (here,
 * or when its record comes, if it has not yet). One sent even once may
 * have been applied: the verdict says so, and the store answers
 * cancelled: false (reason in_flight) instead of recording what did not
 * happen. */
void sync_on_cancel_ask(sync_t *self, ts_envelope_t *e)
{
    ts_call_t *call = &e->calls[0];
    sdoc_t *d = call->collection && call->doc_id
                    ? sync_doc_find(self, call->collection, call->doc_id,
                                    sync_hash_key(call->collection, call->doc_id))
                    : NULL;
    mut_t *m = NULL;
    for (mut_t *x = d ? d->head : NULL; x && !m; x = x->next)
        if (x->seq == call->cancel_seq)
            m = x;
    if (m) {
        bool out = m->state == M_SENDING || m->state == M_FETCHING || m->sent_ms;
        call->cancel_verdict = out ? TS_CANCEL_SENT : TS_CANCEL_WITHHELD;
        if (!out) {
            d->paused_seq = m->seq; /* the writes that depended on it must not go out */
            sync_mut_forget(self, m);
        }
    } else if (call->cancel_seq > self->max_seq) { /* its record has not come yet */
        d = call->collection && call->doc_id ? doc_get(self, call->collection, call->doc_id)
                                             : NULL;
        if (d)
            d->paused_seq = call->cancel_seq;
        if (self->nwithheld == self->capwithheld) {
            self->capwithheld = self->capwithheld ? self->capwithheld * 2 : 16;
            self->withheld = ts_xrealloc(self->withheld, self->capwithheld * sizeof(int64_t));
        }
        self->withheld[self->nwithheld++] = call->cancel_seq;
        call->cancel_verdict = TS_CANCEL_WITHHELD;
    } else { /* answered and forgotten already: it was sent */
        call->cancel_verdict = TS_CANCEL_SENT;
    }
    if (ts_send_CANCEL_VERDICT(self->to_store, &e, 1)) {
        ts_error(LOG, "cannot pass a cancel back to the store");
        ts_envelope_free(e);
    }
}
