/* recover.c — start-up: the durable records streamed by persist back
 * into memory, then the cursor and every pending write handed to the sync
 * actor, in seq order. */
#include "store_int.h"

typedef struct {
    int64_t seq;
    collection_t *c;
    doc_t *d;
    mutation_t *m;
} pending_ref_t;

static int compare_seq(const void *a, const void *b)
{
    int64_t x = ((const pending_ref_t *)a)->seq, y = ((const pending_ref_t *)b)->seq;
    return (x > y) - (x < y);
}

/* After recovery: the cursor, then every pending mutation in seq order. */
void store_hand_outbox_to_sync(store_t *self)
{
    ts_sync_update_t *cursor = ts_sync_update_new(TS_SYNC_CURSOR);
    snprintf(cursor->cursor, sizeof cursor->cursor, "%s", self->cursor);
    if (ts_send_SYNC_UPDATES(self->to_sync, &cursor, 1))
        ts_sync_update_free(cursor);
    pending_ref_t *refs = self->pending ? ts_xmalloc(self->pending * sizeof *refs) : NULL;
    size_t n = 0;
    for (size_t k = 0; refs && k < self->ncollections; k++) {
        collection_t *c = &self->collections[k];
        for (size_t i = 0; i < c->cap; i++) {
            doc_t *d = doc_at(c, i);
            for (mutation_t *m = d ? d->pending : NULL; m && n < self->pending; m = m->next)
                refs[n++] = (pending_ref_t){m->seq, c, d, m};
        }
    }
    if (n)
        qsort(refs, n, sizeof *refs, compare_seq);
    ts_call_t scratch = {0};
    size_t batch = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            store_add_mutation_record(&scratch, refs[i].c, refs[i].d, refs[i].m, NULL);
            batch++;
        }
        if ((batch == 1000 || i == n) && scratch.records) {
            if (ts_send_OUTBOX(self->to_sync, &scratch.records, 1))
                ts_record_free_list(scratch.records);
            scratch.records = NULL;
            batch = 0;
        }
    }
    free(refs);
    ts_info(LOG, "handed %zu pending mutations to sync", n);
}

void store_recover_record(store_t *self, const ts_record_t *r)
{
    if (r->kind == TS_REC_CURSOR) {
        snprintf(self->cursor, sizeof self->cursor, "%s", r->body ? r->body : "");
        return;
    }
    collection_t *c = store_find_collection(self, r->collection);
    if (!c) {
        ts_warn(LOG, "recovery: collection %s is not configured; its records stay on disk",
                r->collection);
        return;
    }
    doc_t *d = store_get_or_add_doc(c, r->doc_id, strlen(r->doc_id));
    if (!d) { /* an id over 64 bytes, or memory outside 48 bits */
        ts_error(LOG, "recovery: %s/%s cannot be stored", r->collection, r->doc_id);
        return;
    }
    if (r->kind == TS_REC_CONFIRMED) {
        size_t len = r->body ? r->body_len : 0;
        confirmed_t *conf = ts_xmalloc(sizeof *conf + len + 1);
        conf->version = r->version;
        conf->len = (uint32_t)len;
        conf->hashed = false;
        memcpy(conf->text, r->body ? r->body : "", len + 1);
        free(d->confirmed);
        d->confirmed = conf;
        if (len)
            store_set_visible(c, d, conf->text, len, VISIBLE_IS_CONFIRMED);
        return;
    }
    mutation_t *m = store_mutation_new(r->op, r->body ? r->body : "", r->body ? r->body_len : 0);
    m->seq = r->seq;
    m->base_version = r->version;
    m->at_ms = r->at_ms;
    if (store_uuid_parse(r->mutation, m->id))
        ts_warn(LOG, "recovery: mutation %lld has a malformed id", (long long)r->seq);
    if (r->seq > self->seq)
        self->seq = r->seq;
    store_append_mutation(self, d, m);
    if (store_apply_mutation(self, c, d, m))
        ts_warn(LOG, "recovery: mutation %s no longer applies to %s/%.*s; kept pending",
                r->mutation, c->name, (int)d->id_len, d->id);
}
