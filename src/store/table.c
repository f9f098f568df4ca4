/* table.c — the documents: each collection's hash table (tagged slots,
 * linear probing, growth) and a document's visible state, rebuilt from the
 * server's version with its pending mutations applied in order. */
#include "store_int.h"

/* ---- the document table ---- */

static uint64_t hash_id(const char *id, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* The slot index comes from the low 32 bits, the tag from the top 16. */
static uintptr_t hash_tag(uint64_t hash)
{
    return (uintptr_t)(hash >> SLOT_PTR_BITS) << SLOT_PTR_BITS;
}

static slot_t *find_slot(collection_t *c, const char *id, size_t len, uint64_t hash)
{
    size_t mask = c->cap - 1;
    uintptr_t tag = hash_tag(hash);
    for (size_t i = (uint32_t)hash & mask;; i = (i + 1) & mask) {
        slot_t *s = &c->slots[i];
        if (*s == 0)
            return s;
        if ((*s & ~SLOT_PTR_MASK) != tag)
            continue;
        doc_t *d = (doc_t *)(*s & SLOT_PTR_MASK);
        if (d->id_len == len && memcmp(d->id, id, len) == 0)
            return s;
    }
}

doc_t *store_find_doc(collection_t *c, const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > 64 || c->cap == 0)
        return NULL;
    return (doc_t *)(*find_slot(c, id, len, hash_id(id, len)) & SLOT_PTR_MASK);
}

/* Sizes the table for n entries at most 3/4 full. */
static void reserve(collection_t *c, size_t n)
{
    size_t cap = c->cap ? c->cap : 1024;
    while (n * 4 > cap * 3)
        cap *= 2;
    if (cap == c->cap)
        return;
    slot_t *slots = ts_xcalloc(cap, sizeof *slots);
    uint32_t *hash32 = ts_xmalloc(cap * sizeof *hash32);
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->slots[i])
            continue;
        size_t j = c->hash32[i] & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = c->slots[i];
        hash32[j] = c->hash32[i];
    }
    free(c->slots);
    free(c->hash32);
    c->slots = slots;
    c->hash32 = hash32;
    c->cap = cap;
}

/* Returns the document with this id, creating an empty entry if needed. */
doc_t *store_get_or_add_doc(collection_t *c, const char *id, size_t len)
{
    if (len == 0 || len > 64)
        return NULL;
    reserve(c, c->used + 1);
    uint64_t hash = hash_id(id, len);
    slot_t *slot = find_slot(c, id, len, hash);
    if (*slot)
        return (doc_t *)(*slot & SLOT_PTR_MASK);
    doc_t *d = ts_xcalloc(1, sizeof *d + len);
    if ((uintptr_t)d & ~SLOT_PTR_MASK) { /* cannot happen in 48-bit user space */
        ts_error(LOG, "document memory outside the 48-bit address range");
        free(d);
        return NULL;
    }
    memcpy(d->id, id, len);
    d->id_len = (uint8_t)len;
    c->hash32[slot - c->slots] = (uint32_t)hash;
    *slot = (uintptr_t)d | hash_tag(hash);
    c->used++;
    return d;
}

/* UUID text (36 chars) <-> 16 bytes. */
int store_uuid_parse(const char *text, uint8_t out[16])
{
    int n = 0;
    for (const char *p = text; *p && n < 32; p++) {
        if (*p == '-')
            continue;
        int v = ts_hex_value(*p);
        if (v < 0)
            return -1;
        out[n / 2] = (uint8_t)(n % 2 ? (out[n / 2] | v) : v << 4);
        n++;
    }
    return n == 32 && strlen(text) == 36 ? 0 : -1;
}

collection_t *store_find_collection(store_t *self, const char *name)
{
    for (size_t i = 0; name && i < self->ncollections; i++)
        if (strcmp(self->collections[i].name, name) == 0)
            return &self->collections[i];
    return NULL;
}

/* ---- visible state ---- */

/* Appends an id-less object text as JSON with {"id": ...} put back first. */
static void append_with_id(ts_buf_t *b, const doc_t *d, const char *text, size_t len)
{
    ts_buf_puts(b, "{\"id\":");
    ts_buf_json_string(b, d->id, d->id_len);
    if (len > 2) {
        ts_buf_puts(b, ",");
        ts_buf_append(b, text + 1, len - 1);
    } else {
        ts_buf_puts(b, "}");
    }
}

/* Appends the visible document, or null. */
void store_append_doc(ts_buf_t *b, const doc_t *d)
{
    if (d->visible)
        append_with_id(b, d, d->visible, d->visible_len);
    else
        ts_buf_puts(b, "null");
}

/* Parses the visible document with its id put back first (caller
 * deletes); NULL when there is none. */
cJSON *store_parse_doc(const doc_t *d)
{
    cJSON *doc = d->visible ? cJSON_ParseWithLength(d->visible, d->visible_len) : NULL;
    if (!doc)
        return NULL;
    char id[65];
    memcpy(id, d->id, d->id_len);
    id[d->id_len] = '\0';
    cJSON *item = cJSON_CreateString(id);
    item->string = ts_xstrdup("id");
    /* link it in first, as cJSON lists do: head->prev is the tail */
    item->next = doc->child;
    item->prev = doc->child ? doc->child->prev : item;
    if (doc->child)
        doc->child->prev = item;
    doc->child = item;
    return doc;
}

void store_set_visible(collection_t *c, doc_t *d, char *text, size_t len, int kind)
{
    bool was = d->visible != NULL;
    if (c->changes && c->changes->on && c->changes->watched[c->index]) { /* the cache hears */
        ts_change_t *ch =
            ts_change_new(c->index, d->id, d->id_len, d->visible, d->visible_len, text, len);
        ch->origin = c->changes->origin;
        if (c->changes->last)
            c->changes->last->next = ch;
        else
            c->changes->head = ch;
        c->changes->last = ch;
        c->changes->mark++;
    }
    if (d->visible_kind == VISIBLE_OWNED)
        free(d->visible);
    d->visible = text;
    d->visible_len = (uint32_t)len;
    d->visible_kind = (uint8_t)kind;
    c->live += (text != NULL) - was;
    ts_sq_changed(c->q, d, text, len);
}

/* Prints a document into the store's scratch buffer and returns it (valid
 * until the scratch buffer is used again), or NULL when it holds an item
 * that is not JSON (cJSON_Invalid). */
const char *store_print_scratch(store_t *self, const cJSON *doc, size_t *len)
{
    ts_buf_reset(&self->scratch);
    if (ts_buf_json(&self->scratch, doc))
        return NULL;
    *len = self->scratch.len;
    return self->scratch.data;
}

/* Prints a document into a new allocation. */
char *store_print_doc(store_t *self, const cJSON *doc, size_t *len)
{
    const char *text = store_print_scratch(self, doc, len);
    return text ? ts_memdup(text, *len) : NULL;
}

/* Applies one mutation on top of the current visible document. */
int store_apply_mutation(store_t *self, collection_t *c, doc_t *d, mutation_t *m)
{
    switch (m->op) {
    case TS_OP_CREATE:
        store_set_visible(c, d, m->body, m->body_len, VISIBLE_IS_CREATE);
        return 0;
    case TS_OP_DELETE:
        store_set_visible(c, d, NULL, 0, VISIBLE_OWNED);
        return 0;
    case TS_OP_UPDATE: {
        if (!d->visible)
            return -1; /* nothing to patch: the update cannot apply */
        cJSON *doc = cJSON_ParseWithLength(d->visible, d->visible_len);
        cJSON *patch = cJSON_ParseWithLength(m->body, m->body_len);
        doc = doc && patch ? ts_json_merge_patch(doc, patch) : doc;
        size_t len = 0;
        char *text = doc && patch ? store_print_doc(self, doc, &len) : NULL;
        cJSON_Delete(doc);
        cJSON_Delete(patch);
        if (!text)
            return -1;
        store_set_visible(c, d, text, len, VISIBLE_OWNED);
        return 0;
    }
    default:
        return -1;
    }
}

/* Rebuilds the visible document from the confirmed one and the pending
 * mutations. Mutations that no longer apply (an update whose document is
 * gone) are dropped and returned through *dropped for the caller to undo
 * durably. */
void store_recompute(store_t *self, collection_t *c, doc_t *d, mutation_t **dropped)
{
    if (d->confirmed && d->confirmed->len)
        store_set_visible(c, d, d->confirmed->text, d->confirmed->len, VISIBLE_IS_CONFIRMED);
    else
        store_set_visible(c, d, NULL, 0, VISIBLE_OWNED);
    for (mutation_t **p = &d->pending; *p;) {
        mutation_t *m = *p;
        if (store_apply_mutation(self, c, d, m) == 0) {
            p = &m->next;
            continue;
        }
        *p = m->next;
        d->npending--;
        self->pending--;
        m->next = *dropped;
        *dropped = m;
    }
}

void store_append_mutation(store_t *self, doc_t *d, mutation_t *m)
{
    mutation_t **p = &d->pending;
    while (*p)
        p = &(*p)->next;
    *p = m;
    m->next = NULL;
    d->npending++;
    self->pending++;
}

mutation_t *store_mutation_new(ts_op_t op, const char *body, size_t len)
{
    size_t size = offsetof(mutation_t, body) + len + 1;
    mutation_t *m = ts_xmalloc(size < sizeof *m ? sizeof *m : size);
    memset(m, 0, offsetof(mutation_t, body));
    m->op = (uint8_t)op;
    m->body_len = (uint32_t)len;
    if (len)
        memcpy(m->body, body, len);
    m->body[len] = '\0';
    return m;
}

void store_free_doc(doc_t *d)
{
    if (d->visible_kind == VISIBLE_OWNED)
        free(d->visible);
    free(d->confirmed);
    while (d->pending) {
        mutation_t *next = d->pending->next;
        free(d->pending);
        d->pending = next;
    }
    free(d);
}
