/* store.c — the store actor: documents, pending mutations, reads and writes. */
#include "therasync/store.h"
#include "therasync/call.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/store_query.h"
#include "therasync/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define LOG "store"

/* A pending local mutation; body is the created document (create), the
 * merge patch (update) or empty (delete). Fields are ordered so the body
 * starts right after them: with a million pending documents every byte of
 * header counts. */
typedef struct mutation {
    struct mutation *next;
    int64_t seq;
    int64_t base_version;
    int64_t at_ms;
    uint32_t body_len;
    uint8_t id[16];        /* the mutation's UUIDv7, binary */
    uint8_t op;
    char body[];
} mutation_t;

/* The server's version of a document. */
typedef struct {
    int64_t version;
    uint32_t len;
    char text[];           /* JSON; empty for a tombstone */
} confirmed_t;

enum { VISIBLE_OWNED, VISIBLE_IS_CONFIRMED, VISIBLE_IS_CREATE };

/* One document: 32 bytes of header plus its id, so that with a UUID id it
 * fits an 80-byte malloc chunk. The JSON texts kept for it (visible,
 * confirmed, a create's body) are objects WITHOUT the "id" member: the id
 * lives here once, and append_doc()/parse_doc() put it back first. That
 * saves ~45 bytes a document, which a million documents need. */
typedef struct doc {
    char *visible;         /* what readers see; NULL = absent or deleted */
    confirmed_t *confirmed;/* the server's version; NULL = never synced */
    mutation_t *pending;   /* oldest first */
    uint32_t visible_len;
    uint32_t hash32;       /* low bits of the id's hash, for growing the table */
    uint16_t npending;
    uint8_t visible_kind;  /* VISIBLE_*: whether visible is its own allocation */
    uint8_t id_len;
    char id[];             /* not NUL-terminated: use id_len */
} doc_t;

/* A slot is one word: the document pointer in the low 48 bits (all that
 * x86-64 and AArch64 user space use) and 16 more bits of the id's hash as a
 * tag, so probing compares tags and touches a document only on a likely
 * match. 0 is an empty slot. */
typedef uintptr_t slot_t;
#define SLOT_PTR_BITS 48
#define SLOT_PTR_MASK (((uintptr_t)1 << SLOT_PTR_BITS) - 1)

typedef struct {
    const char *name;
    slot_t *slots;         /* open addressing, linear probing, load <= 3/4 */
    size_t cap;            /* power of two */
    size_t used;           /* entries (visible or not) */
    size_t live;           /* entries with a visible document */
    ts_sq_coll_t *q;       /* its indexes (store_query.c); told of every visible change */
} collection_t;

typedef struct {
    const ts_config_t *config;
    collection_t collections[TS_MAX_COLLECTIONS];
    size_t ncollections;
    int64_t seq;           /* last outbox sequence number */
    size_t pending;        /* pending mutations over all documents */
    void *inbox;           /* PULL */
    void *to_persist;      /* PUSH */
    bool recovering;
    ts_buf_t scratch;      /* reused for printing documents and results */
    uint64_t calls[TS_M__LAST];
    uint64_t rejected_writes;
    ts_sq_t *sq;           /* policies: validation, selectors and their indexes */
    void *events;          /* PUSH to TS_INPROC_EVENTS: events without a call (SIGHUP reload) */
} store_t;

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

static doc_t *doc_at(const collection_t *c, size_t i)
{
    return (doc_t *)(c->slots[i] & SLOT_PTR_MASK);
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

static doc_t *find_doc(collection_t *c, const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > 64 || c->cap == 0)
        return NULL;
    return (doc_t *)(*find_slot(c, id, len, hash_id(id, len)) & SLOT_PTR_MASK);
}

/* Sizes the table for n entries at most 3/4 full. */
static int reserve(collection_t *c, size_t n)
{
    size_t cap = c->cap ? c->cap : 1024;
    while (n * 4 > cap * 3)
        cap *= 2;
    if (cap == c->cap)
        return 0;
    slot_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->slots[i])
            continue;
        size_t j = doc_at(c, i)->hash32 & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = c->slots[i];
    }
    free(c->slots);
    c->slots = slots;
    c->cap = cap;
    return 0;
}

/* Returns the document with this id, creating an empty entry if needed. */
static doc_t *get_or_add_doc(collection_t *c, const char *id, size_t len)
{
    if (len == 0 || len > 64 || reserve(c, c->used + 1))
        return NULL;
    uint64_t hash = hash_id(id, len);
    slot_t *slot = find_slot(c, id, len, hash);
    if (*slot)
        return (doc_t *)(*slot & SLOT_PTR_MASK);
    doc_t *d = calloc(1, sizeof *d + len);
    if (!d)
        return NULL;
    if ((uintptr_t)d & ~SLOT_PTR_MASK) { /* cannot happen in 48-bit user space */
        ts_error(LOG, "document memory outside the 48-bit address range");
        free(d);
        return NULL;
    }
    memcpy(d->id, id, len);
    d->id_len = (uint8_t)len;
    d->hash32 = (uint32_t)hash;
    *slot = (uintptr_t)d | hash_tag(hash);
    c->used++;
    return d;
}

static int64_t doc_version(const doc_t *d)
{
    return d->confirmed ? d->confirmed->version : 0;
}

/* UUID text (36 chars) <-> 16 bytes. */
static int uuid_parse(const char *text, uint8_t out[16])
{
    int n = 0;
    for (const char *p = text; *p && n < 32; p++) {
        if (*p == '-')
            continue;
        int v = (*p >= '0' && *p <= '9')   ? *p - '0'
                : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
                : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
                                           : -1;
        if (v < 0)
            return -1;
        out[n / 2] = (uint8_t)(n % 2 ? (out[n / 2] | v) : v << 4);
        n++;
    }
    return n == 32 && strlen(text) == 36 ? 0 : -1;
}

static void uuid_format(const uint8_t in[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[in[i] >> 4];
        *o++ = hex[in[i] & 15];
    }
    *o = '\0';
}

static collection_t *find_collection(store_t *self, const char *name)
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
static void append_doc(ts_buf_t *b, const doc_t *d)
{
    if (d->visible)
        append_with_id(b, d, d->visible, d->visible_len);
    else
        ts_buf_puts(b, "null");
}

/* Parses the visible document with its id put back first (caller
 * deletes); NULL when there is none or memory ran out. */
static cJSON *parse_doc(const doc_t *d)
{
    cJSON *doc = d->visible ? cJSON_ParseWithLength(d->visible, d->visible_len) : NULL;
    char id[65];
    memcpy(id, d->id, d->id_len);
    id[d->id_len] = '\0';
    cJSON *item = doc ? cJSON_CreateString(id) : NULL;
    if (!item) {
        cJSON_Delete(doc);
        return NULL;
    }
    item->string = strdup("id");
    if (!item->string) {
        cJSON_Delete(item);
        cJSON_Delete(doc);
        return NULL;
    }
    /* link it in first, as cJSON lists do: head->prev is the tail */
    item->next = doc->child;
    item->prev = doc->child ? doc->child->prev : item;
    if (doc->child)
        doc->child->prev = item;
    doc->child = item;
    return doc;
}

static void set_visible(collection_t *c, doc_t *d, char *text, size_t len, int kind)
{
    bool was = d->visible != NULL;
    if (d->visible_kind == VISIBLE_OWNED)
        free(d->visible);
    d->visible = text;
    d->visible_len = (uint32_t)len;
    d->visible_kind = (uint8_t)kind;
    c->live += (text != NULL) - was;
    ts_sq_changed(c->q, d, text, len);
}

/* Prints a document into the store's scratch buffer and returns it (valid
 * until the scratch buffer is used again), or NULL when memory ran out. */
static const char *print_scratch(store_t *self, const cJSON *doc, size_t *len)
{
    ts_buf_reset(&self->scratch);
    if (ts_buf_reserve(&self->scratch, 64 * 1024))
        return NULL;
    if (cJSON_PrintPreallocated((cJSON *)doc, self->scratch.data, (int)self->scratch.cap, 0)) {
        *len = strlen(self->scratch.data);
        return self->scratch.data;
    }
    char *text = cJSON_PrintUnformatted(doc); /* larger than the scratch buffer */
    if (!text)
        return NULL;
    *len = strlen(text);
    ts_buf_reset(&self->scratch);
    int rc = ts_buf_append(&self->scratch, text, *len);
    cJSON_free(text);
    return rc ? NULL : self->scratch.data;
}

/* Prints a document into a new allocation. */
static char *print_doc(store_t *self, const cJSON *doc, size_t *len)
{
    const char *text = print_scratch(self, doc, len);
    char *copy = text ? malloc(*len + 1) : NULL;
    if (copy)
        memcpy(copy, text, *len + 1);
    return copy;
}

/* Applies one mutation on top of the current visible document. */
static int apply_mutation(store_t *self, collection_t *c, doc_t *d, mutation_t *m)
{
    switch (m->op) {
    case TS_OP_CREATE:
        set_visible(c, d, m->body, m->body_len, VISIBLE_IS_CREATE);
        return 0;
    case TS_OP_DELETE:
        set_visible(c, d, NULL, 0, VISIBLE_OWNED);
        return 0;
    case TS_OP_UPDATE: {
        if (!d->visible)
            return -1; /* nothing to patch: the update cannot apply */
        cJSON *doc = cJSON_ParseWithLength(d->visible, d->visible_len);
        cJSON *patch = cJSON_ParseWithLength(m->body, m->body_len);
        doc = doc && patch ? ts_json_merge_patch(doc, patch) : doc;
        size_t len = 0;
        char *text = doc && patch ? print_doc(self, doc, &len) : NULL;
        cJSON_Delete(doc);
        cJSON_Delete(patch);
        if (!text)
            return -1;
        set_visible(c, d, text, len, VISIBLE_OWNED);
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
static void recompute(store_t *self, collection_t *c, doc_t *d, mutation_t **dropped)
{
    if (d->confirmed && d->confirmed->len)
        set_visible(c, d, d->confirmed->text, d->confirmed->len, VISIBLE_IS_CONFIRMED);
    else
        set_visible(c, d, NULL, 0, VISIBLE_OWNED);
    for (mutation_t **p = &d->pending; *p;) {
        mutation_t *m = *p;
        if (apply_mutation(self, c, d, m) == 0) {
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

static void append_mutation(store_t *self, doc_t *d, mutation_t *m)
{
    mutation_t **p = &d->pending;
    while (*p)
        p = &(*p)->next;
    *p = m;
    m->next = NULL;
    d->npending++;
    self->pending++;
}

static mutation_t *mutation_new(ts_op_t op, const char *body, size_t len)
{
    size_t size = offsetof(mutation_t, body) + len + 1;
    mutation_t *m = malloc(size < sizeof *m ? sizeof *m : size);
    if (!m)
        return NULL;
    memset(m, 0, offsetof(mutation_t, body));
    m->op = (uint8_t)op;
    m->body_len = (uint32_t)len;
    if (len)
        memcpy(m->body, body, len);
    m->body[len] = '\0';
    return m;
}

/* ---- results and events ---- */

static void append_sync(ts_buf_t *b, const doc_t *d)
{
    const mutation_t *last = d->pending;
    while (last && last->next)
        last = last->next;
    ts_buf_puts(b, "\"sync\":{\"state\":");
    ts_buf_puts(b, d->npending ? "\"pending\"" : "\"synced\"");
    ts_buf_puts(b, ",\"mutation\":");
    if (last) {
        char id[37];
        uuid_format(last->id, id);
        ts_buf_json_string(b, id, 36);
    } else
        ts_buf_puts(b, "null");
    ts_buf_printf(b, ",\"pending\":%u}", (unsigned)d->npending);
}

static void set_doc_result(ts_call_t *call, const doc_t *d, bool with_doc)
{
    ts_buf_t b = {0};
    ts_buf_reserve(&b, d->visible_len + 160);
    if (with_doc) {
        ts_buf_puts(&b, "{\"doc\":");
        append_doc(&b, d);
    } else {
        ts_buf_puts(&b, "{\"id\":");
        ts_buf_json_string(&b, d->id, d->id_len);
    }
    ts_buf_puts(&b, ",");
    append_sync(&b, d);
    ts_buf_puts(&b, "}");
    size_t len;
    char *text = ts_buf_take(&b, &len);
    if (text)
        ts_call_set_result(call, text, len);
    else
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
}

static void add_event(ts_call_t *call, const char *topic, const char *payload, size_t len)
{
    ts_event_t *e = ts_event_new(topic, payload, len);
    if (!e)
        return;
    ts_event_t **p = &call->events;
    while (*p)
        p = &(*p)->next;
    *p = e;
}

static void add_doc_changed(ts_call_t *call, const collection_t *c, const doc_t *d)
{
    ts_buf_t b = {0};
    ts_buf_reserve(&b, d->visible_len + 256);
    ts_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"doc.changed\",\"params\":{\"collection\":");
    ts_buf_json_string(&b, c->name, strlen(c->name));
    ts_buf_puts(&b, ",\"id\":");
    ts_buf_json_string(&b, d->id, d->id_len);
    ts_buf_puts(&b, ",\"doc\":");
    append_doc(&b, d);
    ts_buf_printf(&b, ",\"origin\":\"local\",\"deleted\":%s}}", d->visible ? "false" : "true");
    char topic[80];
    snprintf(topic, sizeof topic, "doc.%s", c->name);
    if (b.data)
        add_event(call, topic, b.data, b.len);
    ts_buf_free(&b);
}

/* Attaches the durable record of a new mutation to the call. */
static int add_mutation_record(ts_call_t *call, const collection_t *c, const doc_t *d,
                               const mutation_t *m)
{
    ts_record_t *r = ts_record_new(TS_REC_MUTATION, c->name, d->id, d->id_len,
                                   m->op == TS_OP_DELETE ? NULL : m->body, m->body_len);
    if (!r)
        return -1;
    r->op = (ts_op_t)m->op;
    r->seq = m->seq;
    r->version = m->base_version;
    r->at_ms = m->at_ms;
    uuid_format(m->id, r->mutation);
    ts_record_t **p = &call->records;
    while (*p)
        p = &(*p)->next;
    *p = r;
    return 0;
}

static int add_drop_record(ts_call_t *call, const collection_t *c, const doc_t *d,
                           const mutation_t *m)
{
    ts_record_t *r = ts_record_new(TS_REC_DROP, c->name, d->id, d->id_len, NULL, 0);
    if (!r)
        return -1;
    r->seq = m->seq;
    uuid_format(m->id, r->mutation);
    r->next = call->records;
    call->records = r;
    return 0;
}

/* Removes the server-assigned fields a client may not set. */
static void strip_server_fields(cJSON *doc)
{
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "version");
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "updated_at");
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "deleted");
}

static mutation_t *new_local_mutation(store_t *self, ts_op_t op, const char *body, size_t len,
                                      int64_t base_version)
{
    mutation_t *m = mutation_new(op, body, len);
    if (!m)
        return NULL;
    m->seq = ++self->seq;
    m->base_version = base_version;
    m->at_ms = ts_wall_ms();
    char id[37];
    ts_uuidv7(id);
    uuid_parse(id, m->id);
    return m;
}

/* Commits a new mutation to memory and to the call: the caller has checked
 * it applies. */
static void accept_mutation(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                            mutation_t *m)
{
    append_mutation(self, d, m);
    if (apply_mutation(self, c, d, m) || add_mutation_record(call, c, d, m)) {
        mutation_t *dropped = NULL;
        /* Undo: take m back out and rebuild what readers see. */
        mutation_t **p = &d->pending;
        while (*p != m)
            p = &(*p)->next;
        *p = m->next;
        d->npending--;
        self->pending--;
        recompute(self, c, d, &dropped);
        free(m);
        ts_call_fail(call, TS_E_INTERNAL, "out of memory applying the write");
        return;
    }
    set_doc_result(call, d, m->op != TS_OP_DELETE);
    add_doc_changed(call, c, d);
}

/* ---- methods ---- */

static void do_create(store_t *self, ts_call_t *call, collection_t *c)
{
    cJSON *doc = cJSON_GetObjectItemCaseSensitive(call->params, "doc");
    strip_server_fields(doc);
    char id[65];
    const char *given = ts_json_string(doc, "id");
    if (given)
        snprintf(id, sizeof id, "%s", given); /* checked by the front door */
    else
        ts_uuidv7(id);
    doc_t *existing = find_doc(c, id);
    if (existing && existing->visible) {
        ts_call_fail(call, TS_E_CONFLICT, "%s/%s already exists", c->name, id);
        return;
    }
    if (!given && !cJSON_AddStringToObject(doc, "id", id)) {
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
        return;
    }
    if (ts_sq_validate(self->sq, call, c->name, doc, NULL))
        return;
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "id"); /* kept in doc_t, see there */
    size_t len;
    const char *text = print_scratch(self, doc, &len);
    mutation_t *m = text ? new_local_mutation(self, TS_OP_CREATE, text, len, 0) : NULL;
    doc_t *d = m ? get_or_add_doc(c, id, strlen(id)) : NULL;
    if (!d) {
        free(m);
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
        return;
    }
    accept_mutation(self, call, c, d, m);
}

/* Runs validation on the document an update would produce; 0 = accepted. */
static int validate_update(store_t *self, ts_call_t *call, collection_t *c, doc_t *d,
                           const cJSON *patch)
{
    cJSON *previous = parse_doc(d);
    cJSON *merged = previous ? cJSON_Duplicate(previous, true) : NULL;
    merged = merged ? ts_json_merge_patch(merged, patch) : NULL;
    int rc = -1;
    if (!merged)
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
    else
        rc = ts_sq_validate(self->sq, call, c->name, merged, previous);
    cJSON_Delete(merged);
    cJSON_Delete(previous);
    return rc;
}

static void do_update(store_t *self, ts_call_t *call, collection_t *c)
{
    const char *id = ts_json_string(call->params, "id");
    cJSON *patch = cJSON_GetObjectItemCaseSensitive(call->params, "patch");
    doc_t *d = find_doc(c, id);
    if (!d || !d->visible) {
        ts_call_fail(call, TS_E_NOT_FOUND, "no document %s/%s", c->name, id);
        return;
    }
    long long base = 0;
    if (ts_json_int(call->params, "base_version", &base) && base != doc_version(d)) {
        ts_call_fail(call, TS_E_CONFLICT, "base_version %lld is stale: the document is at %lld",
                     base, (long long)doc_version(d));
        call->err_data = cJSON_CreateObject();
        cJSON_AddNumberToObject(call->err_data, "current_version", (double)doc_version(d));
        return;
    }
    const char *patch_id = ts_json_string(patch, "id");
    if (cJSON_GetObjectItemCaseSensitive(patch, "id") && (!patch_id || strcmp(patch_id, id))) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "a patch cannot change a document's id");
        return;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(patch, "id");
    strip_server_fields(patch);
    if (validate_update(self, call, c, d, patch))
        return;
    size_t len;
    const char *text = print_scratch(self, patch, &len);
    mutation_t *m = text ? new_local_mutation(self, TS_OP_UPDATE, text, len, doc_version(d)) : NULL;
    if (!m) {
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
        return;
    }
    accept_mutation(self, call, c, d, m);
}

static void do_delete(store_t *self, ts_call_t *call, collection_t *c)
{
    const char *id = ts_json_string(call->params, "id");
    doc_t *d = find_doc(c, id);
    if (!d || !d->visible) {
        ts_call_fail(call, TS_E_NOT_FOUND, "no document %s/%s", c->name, id);
        return;
    }
    mutation_t *m = new_local_mutation(self, TS_OP_DELETE, "", 0, doc_version(d));
    if (!m) {
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
        return;
    }
    accept_mutation(self, call, c, d, m);
}

static void do_get(ts_call_t *call, collection_t *c)
{
    const char *id = ts_json_string(call->params, "id");
    doc_t *d = find_doc(c, id);
    if (!d || !d->visible)
        ts_call_fail(call, TS_E_NOT_FOUND, "no document %s/%s", c->name, id);
    else
        set_doc_result(call, d, true);
}

typedef struct {
    cJSON *doc;
    const doc_t *d;
} query_row_t;

static const cJSON *query_order_field;
static int query_order_desc;

static int compare_rows(const void *a, const void *b)
{
    const char *key = query_order_field->valuestring;
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(((const query_row_t *)a)->doc, key);
    const cJSON *y = cJSON_GetObjectItemCaseSensitive(((const query_row_t *)b)->doc, key);
    int r;
    if (cJSON_IsNumber(x) && cJSON_IsNumber(y))
        r = (x->valuedouble > y->valuedouble) - (x->valuedouble < y->valuedouble);
    else if (cJSON_IsString(x) && cJSON_IsString(y))
        r = strcmp(x->valuestring, y->valuestring);
    else
        r = (x != NULL) - (y != NULL); /* missing fields sort first */
    return query_order_desc ? -r : r;
}

/* The built-in selector: {where: {field: value, ...}, order_by: [field,
 * "asc"|"desc"], limit: N}. Named (Lua) selectors come with the policy
 * engine. */
static void do_query(store_t *self, ts_call_t *call, collection_t *c)
{
    (void)self;
    const cJSON *selector = cJSON_GetObjectItemCaseSensitive(call->params, "selector");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(call->params, "params");
    if (!cJSON_IsObject(selector)) {
        ts_call_fail(call, TS_E_POLICY, "no selector named %s",
                     cJSON_IsString(selector) ? selector->valuestring : "(not a string)");
        return;
    }
    const cJSON *where = cJSON_GetObjectItemCaseSensitive(selector, "where");
    const cJSON *order = cJSON_GetObjectItemCaseSensitive(selector, "order_by");
    long long limit = 100;
    ts_json_int(selector, "limit", &limit);
    long long plimit;
    if (ts_json_int(params, "limit", &plimit) && plimit < limit)
        limit = plimit;
    if ((where && !cJSON_IsObject(where)) ||
        (order && (!cJSON_IsArray(order) || !cJSON_IsString(cJSON_GetArrayItem(order, 0)))) ||
        limit < 0 || limit > 100000) {
        ts_call_fail(call, TS_E_INVALID_PARAMS,
                     "selector must be {where: object, order_by: [field, \"asc\"|\"desc\"], "
                     "limit: 0..100000}");
        return;
    }
    query_row_t *rows = NULL;
    size_t nrows = 0, cap = 0;
    for (size_t i = 0; i < c->cap; i++) {
        doc_t *d = doc_at(c, i);
        if (!d || !d->visible)
            continue;
        cJSON *doc = parse_doc(d);
        bool match = doc != NULL;
        for (const cJSON *w = where ? where->child : NULL; match && w; w = w->next)
            match = cJSON_Compare(cJSON_GetObjectItemCaseSensitive(doc, w->string), w, 1);
        if (!match) {
            cJSON_Delete(doc);
            continue;
        }
        if (nrows == cap) {
            cap = cap ? cap * 2 : 64;
            query_row_t *grown = realloc(rows, cap * sizeof *rows);
            if (!grown) {
                cJSON_Delete(doc);
                break;
            }
            rows = grown;
        }
        rows[nrows++] = (query_row_t){doc, d};
        if (!order && (long long)nrows >= limit)
            break;
    }
    if (order && nrows > 1) {
        query_order_field = cJSON_GetArrayItem(order, 0);
        const cJSON *dir = cJSON_GetArrayItem(order, 1);
        query_order_desc = cJSON_IsString(dir) && strcmp(dir->valuestring, "desc") == 0;
        qsort(rows, nrows, sizeof *rows, compare_rows);
    }
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"items\":[");
    for (size_t i = 0; i < nrows && (long long)i < limit; i++) {
        if (i)
            ts_buf_puts(&b, ",");
        append_doc(&b, rows[i].d);
    }
    ts_buf_puts(&b, "],\"stale\":false,\"cursor\":null}");
    for (size_t i = 0; i < nrows; i++)
        cJSON_Delete(rows[i].doc);
    free(rows);
    size_t len;
    char *text = ts_buf_take(&b, &len);
    if (text)
        ts_call_set_result(call, text, len);
    else
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
}

/* Finds a pending mutation by id (a scan: cancel is rare). */
static mutation_t *find_mutation(store_t *self, const uint8_t id[16], collection_t **cp,
                                 doc_t **dp)
{
    for (size_t k = 0; k < self->ncollections; k++) {
        collection_t *c = &self->collections[k];
        for (size_t i = 0; i < c->cap; i++) {
            doc_t *d = doc_at(c, i);
            for (mutation_t *m = d ? d->pending : NULL; m; m = m->next) {
                if (memcmp(m->id, id, 16) == 0) {
                    *cp = c, *dp = d;
                    return m;
                }
            }
        }
    }
    return NULL;
}

static void do_cancel(store_t *self, ts_call_t *call)
{
    const char *text = ts_json_string(call->params, "mutation");
    uint8_t id[16];
    collection_t *c;
    doc_t *d;
    mutation_t *m = uuid_parse(text, id) ? NULL : find_mutation(self, id, &c, &d);
    if (!m) {
        static const char none[] = "{\"cancelled\":false,\"doc\":null}";
        ts_call_set_result(call, strdup(none), sizeof none - 1);
        if (!call->result)
            ts_call_fail(call, TS_E_INTERNAL, "out of memory");
        return;
    }
    /* Not yet sent (no API actor in this build): drop it and roll back. */
    mutation_t **p = &d->pending;
    while (*p != m)
        p = &(*p)->next;
    *p = m->next;
    d->npending--;
    self->pending--;
    mutation_t *dropped = NULL;
    recompute(self, c, d, &dropped);
    m->next = dropped;
    for (mutation_t *x = m; x; x = x->next)
        add_drop_record(call, c, d, x);
    while (m) {
        mutation_t *next = m->next;
        free(m);
        m = next;
    }
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"cancelled\":true,\"doc\":");
    append_doc(&b, d);
    ts_buf_puts(&b, "}");
    size_t len;
    char *answer = ts_buf_take(&b, &len);
    ts_call_set_result(call, answer, len);
    add_doc_changed(call, c, d);
}

static void do_status(store_t *self, ts_call_t *call)
{
    ts_buf_t b = {0};
    ts_buf_printf(&b,
                  "{\"online\":false,\"api\":\"none\",\"pending\":%zu,\"last_sync_at\":null,"
                  "\"last_error\":null,\"cursor\":null,\"collections\":{",
                  self->pending);
    for (size_t i = 0; i < self->ncollections; i++) {
        collection_t *c = &self->collections[i];
        ts_buf_printf(&b, "%s", i ? "," : "");
        ts_buf_json_string(&b, c->name, strlen(c->name));
        ts_buf_printf(&b, ":%zu", c->live);
    }
    ts_buf_puts(&b, "}}");
    size_t len;
    char *text = ts_buf_take(&b, &len);
    if (text)
        ts_call_set_result(call, text, len);
    else
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
}

static void do_metrics(store_t *self, ts_call_t *call)
{
    call->partial = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(call->partial, "store");
    cJSON *calls = cJSON_AddObjectToObject(m, "calls");
    for (int i = 0; i < TS_M_NONE; i++)
        cJSON_AddNumberToObject(calls, ts_method_name((ts_method_t)i), (double)self->calls[i]);
    cJSON_AddNumberToObject(m, "pending", (double)self->pending);
    cJSON_AddNumberToObject(m, "rejected_writes", (double)self->rejected_writes);
    cJSON *docs = cJSON_AddObjectToObject(m, "documents");
    for (size_t i = 0; i < self->ncollections; i++)
        cJSON_AddNumberToObject(docs, self->collections[i].name,
                                (double)self->collections[i].live);
}

static void handle_call(store_t *self, ts_call_t *call)
{
    if (call->err_code || call->result || call->partial)
        return; /* answered by the front door */
    self->calls[call->method]++;
    collection_t *c = find_collection(self, call->collection);
    switch (call->method) {
    case TS_M_CREATE: do_create(self, call, c); break;
    case TS_M_UPDATE: do_update(self, call, c); break;
    case TS_M_DELETE: do_delete(self, call, c); break;
    case TS_M_GET: do_get(call, c); break;
    case TS_M_QUERY:
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(call->params, "selector")))
            ts_sq_query(self->sq, call, c ? c->q : NULL);
        else
            do_query(self, call, c);
        break;
    case TS_M_POLICY_RELOAD: ts_sq_reload(self->sq, call, NULL); break;
    case TS_M_POLICY_INFO: ts_sq_info(self->sq, call); break;
    case TS_M_CANCEL: do_cancel(self, call); break;
    case TS_M_STATUS: do_status(self, call); break;
    case TS_M_METRICS: do_metrics(self, call); break;
    default:
        ts_call_fail(call, TS_E_NO_METHOD, "%s is not available in this build",
                     ts_method_name(call->method));
    }
    if (call->err_code && (call->method == TS_M_CREATE || call->method == TS_M_UPDATE ||
                           call->method == TS_M_DELETE))
        self->rejected_writes++;
}

/* ---- recovery and rollback ---- */

static void recover_record(store_t *self, const ts_record_t *r)
{
    collection_t *c = find_collection(self, r->collection);
    if (!c) {
        ts_warn(LOG, "recovery: collection %s is not configured; its records stay on disk",
                r->collection);
        return;
    }
    doc_t *d = get_or_add_doc(c, r->doc_id, strlen(r->doc_id));
    if (!d) {
        ts_error(LOG, "recovery: out of memory");
        return;
    }
    if (r->kind == TS_REC_CONFIRMED) {
        size_t len = r->body ? r->body_len : 0;
        confirmed_t *conf = malloc(sizeof *conf + len + 1);
        if (!conf) {
            ts_error(LOG, "recovery: out of memory");
            return;
        }
        conf->version = r->version;
        conf->len = (uint32_t)len;
        memcpy(conf->text, r->body ? r->body : "", len + 1);
        free(d->confirmed);
        d->confirmed = conf;
        if (len)
            set_visible(c, d, conf->text, len, VISIBLE_IS_CONFIRMED);
        return;
    }
    mutation_t *m = mutation_new(r->op, r->body ? r->body : "", r->body ? r->body_len : 0);
    if (!m) {
        ts_error(LOG, "recovery: out of memory");
        return;
    }
    m->seq = r->seq;
    m->base_version = r->version;
    m->at_ms = r->at_ms;
    if (uuid_parse(r->mutation, m->id))
        ts_warn(LOG, "recovery: mutation %lld has a malformed id", (long long)r->seq);
    if (r->seq > self->seq)
        self->seq = r->seq;
    append_mutation(self, d, m);
    if (apply_mutation(self, c, d, m))
        ts_warn(LOG, "recovery: mutation %s no longer applies to %s/%.*s; kept pending",
                r->mutation, c->name, (int)d->id_len, d->id);
}

static void rollback(store_t *self, ts_record_t *records)
{
    for (ts_record_t *r = records; r; r = r->next) {
        collection_t *c = find_collection(self, r->collection);
        doc_t *d = c ? find_doc(c, r->doc_id) : NULL;
        if (!d || r->kind != TS_REC_MUTATION)
            continue;
        for (mutation_t **p = &d->pending; *p; p = &(*p)->next) {
            if ((*p)->seq == r->seq) {
                mutation_t *m = *p, *dropped = NULL;
                *p = m->next;
                d->npending--;
                self->pending--;
                recompute(self, c, d, &dropped);
                free(m);
                while (dropped) { /* later writes that depended on it fail too */
                    mutation_t *next = dropped->next;
                    free(dropped);
                    dropped = next;
                }
                break;
            }
        }
    }
    ts_record_free_list(records);
}

static int on_inbox(ts_loop_t *loop, void *socket, void *arg)
{
    store_t *self = arg;
    uint32_t kind;
    void **ptrs;
    size_t n;
    /* Take what is queued (bounded) and pass it on as one message, so
     * persist sees large batches. */
    for (int round = 0; round < 64; round++) {
        if (ts_wire_recv(socket, round ? ZMQ_DONTWAIT : 0, &kind, &ptrs, &n))
            return 0;
        switch (kind) {
        case TS_WIRE_ENVELOPES:
            for (size_t i = 0; i < n; i++) {
                ts_envelope_t *e = ptrs[i];
                for (size_t k = 0; k < e->ncalls; k++)
                    handle_call(self, &e->calls[k]);
            }
            if (ts_wire_send(self->to_persist, TS_WIRE_ENVELOPES, ptrs, n)) {
                ts_error(LOG, "cannot pass envelopes to persist");
                for (size_t i = 0; i < n; i++)
                    ts_envelope_free(ptrs[i]);
            }
            break;
        case TS_WIRE_RECOVERED:
            if (n == 0) {
                self->recovering = false;
                free(ptrs);
                return -1; /* ends the recovery loop */
            }
            for (ts_record_t *r = ((ts_chunk_t *)ptrs[0])->head; r; r = r->next)
                recover_record(self, r);
            free(ptrs[0]);
            ts_wire_send(self->to_persist, TS_WIRE_RECOVER_ACK, NULL, 0);
            break;
        case TS_WIRE_ROLLBACK:
            for (size_t i = 0; i < n; i++)
                rollback(self, ptrs[i]);
            break;
        default:
            break;
        }
        free(ptrs);
    }
    (void)loop;
    return 0;
}

static void free_doc(doc_t *d)
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

static void store_cleanup(store_t *self)
{
    for (size_t k = 0; k < self->ncollections; k++) {
        collection_t *c = &self->collections[k];
        for (size_t i = 0; i < c->cap; i++)
            if (c->slots[i])
                free_doc(doc_at(c, i));
        free(c->slots);
    }
    ts_buf_free(&self->scratch);
    ts_sq_destroy(&self->sq);
    if (self->events)
        zmq_close(self->events);
    if (self->inbox)
        zmq_close(self->inbox);
    if (self->to_persist)
        zmq_close(self->to_persist);
}

/* ---- what store_query.c sees of documents ---- */

static void sq_view(void *doc, ts_policy_doc_t *out)
{
    const doc_t *d = doc;
    out->id = d->id;
    out->id_len = d->id_len;
    out->text = d->visible;
    out->len = d->visible_len;
}

static void sq_each(void *coll, void (*fn)(void *arg, void *doc), void *arg)
{
    collection_t *c = coll;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i])
            fn(arg, doc_at(c, i));
}

/* Commands on the actor pipe: $TERM ends the loop; RELOAD reloads policies. */
static int on_pipe(ts_loop_t *loop, void *pipe, void *arg)
{
    (void)loop;
    store_t *self = arg;
    char command[64];
    int n = zmq_recv(pipe, command, sizeof command - 1, 0);
    if (n < 0)
        return 0;
    command[n < (int)sizeof command - 1 ? n : (int)sizeof command - 1] = '\0';
    if (strcmp(command, "RELOAD") == 0) {
        ts_sq_reload(self->sq, NULL, self->events);
        return 0;
    }
    return strcmp(command, "$TERM") == 0 ? -1 : 0;
}

static void store_actor(ts_actor_t *actor, void *args)
{
    store_t self = {.config = args};
    void *zctx = ts_actor_zctx(actor);
    int zero = 0;
    ts_loop_t *loop = ts_loop_new();
    for (size_t i = 0; i < self.config->ncollections; i++)
        self.collections[self.ncollections++].name = self.config->collections[i];
    self.inbox = zmq_socket(zctx, ZMQ_PULL);
    self.to_persist = zmq_socket(zctx, ZMQ_PUSH);
    self.events = zmq_socket(zctx, ZMQ_PUSH);
    if (!loop || !self.inbox || !self.to_persist || !self.events)
        goto done;
    char err[2048];
    ts_sq_hooks_t hooks = {sq_view, sq_each};
    if (!(self.sq = ts_sq_new(self.config, &hooks, err, sizeof err))) {
        ts_error(LOG, "cannot start: %s", err);
        goto done;
    }
    for (size_t i = 0; i < self.ncollections; i++)
        self.collections[i].q = ts_sq_attach(self.sq, self.collections[i].name, &self.collections[i]);
    zmq_setsockopt(self.events, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(self.events, TS_INPROC_EVENTS);
    zmq_setsockopt(self.inbox, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(self.to_persist, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(self.inbox, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(self.to_persist, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(self.inbox, TS_INPROC_STORE) || zmq_connect(self.to_persist, TS_INPROC_PERSIST)) {
        ts_error(LOG, "cannot set up sockets: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    /* Load the durable state before saying ready. */
    int64_t start = ts_mono_us();
    self.recovering = true;
    ts_sq_bulk(self.sq, true); /* indexes sorted once at the end */
    if (ts_wire_send(self.to_persist, TS_WIRE_RECOVER, NULL, 0))
        goto done;
    while (self.recovering)
        if (on_inbox(loop, self.inbox, &self) < 0 && self.recovering)
            goto done;
    ts_sq_bulk(self.sq, false);
    size_t docs = 0;
    for (size_t i = 0; i < self.ncollections; i++)
        docs += self.collections[i].live;
    ts_info(LOG, "loaded %zu documents, %zu pending mutations in %.3f s", docs, self.pending,
            (ts_mono_us() - start) / 1e6);
    ts_loop_reader(loop, ts_actor_pipe(actor), on_pipe, &self);
    ts_loop_reader(loop, self.inbox, on_inbox, &self);
    ts_actor_ready(actor, 0);
    ts_loop_run(loop);
done:
    ts_loop_destroy(&loop);
    store_cleanup(&self);
}

ts_actor_t *ts_store_start(void *zctx, const ts_config_t *config)
{
    return ts_actor_new(zctx, "store", store_actor, (void *)config);
}
