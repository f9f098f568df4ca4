/* index.c — equality index with ordered buckets (see index.h). */
#include "store/index.h"

#include "therasync/json.h"
#include "therasync/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 1024

typedef struct ts_index_bucket {
    char *key;
    size_t key_len;
    uint64_t hash;
    ts_index_entry_t **items; /* ascending (order, id) unless the index is in bulk mode */
    size_t n, cap;
} bucket_t;

struct ts_index {
    char *field, *order_field;
    size_t field_len, order_len;
    bucket_t **buckets;       /* open addressing by key hash */
    size_t nbuckets, bucket_cap;
    ts_index_entry_t **docs;  /* open addressing by document pointer */
    size_t ndocs, doc_cap;
    bool bulk;
    ts_index_id_fn id_of;
    void *id_arg;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t hash_ptr(const void *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 31);
}

ts_index_t *ts_index_new(const char *field, const char *order_field, ts_index_id_fn id_of,
                         void *id_arg)
{
    ts_index_t *self = ts_xcalloc(1, sizeof *self);
    self->id_of = id_of;
    self->id_arg = id_arg;
    self->field = ts_xstrdup(field);
    self->order_field = order_field ? ts_xstrdup(order_field) : NULL;
    self->field_len = strlen(field);
    self->order_len = order_field ? strlen(order_field) : 0;
    return self;
}

void ts_index_destroy(ts_index_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ts_index_t *self = *self_p;
    for (size_t i = 0; i < self->doc_cap; i++) {
        if (self->docs[i]) {
            free(self->docs[i]->order.str);
            free(self->docs[i]);
        }
    }
    for (size_t i = 0; i < self->bucket_cap; i++) {
        if (self->buckets[i]) {
            free(self->buckets[i]->key);
            free(self->buckets[i]->items);
            free(self->buckets[i]);
        }
    }
    free(self->docs);
    free(self->buckets);
    free(self->field);
    free(self->order_field);
    free(self);
    *self_p = NULL;
}

const char *ts_index_field(const ts_index_t *self) { return self->field; }
const char *ts_index_order_field(const ts_index_t *self) { return self->order_field; }
size_t ts_index_size(const ts_index_t *self) { return self->ndocs; }

/* ---- keys ---- */

static int key_from_double(double d, char *buf, size_t buflen)
{
    int n;
    if (d == floor(d) && fabs(d) < 9.0e15)
        n = snprintf(buf, buflen, "%lld", (long long)d);
    else
        n = snprintf(buf, buflen, "%.17g", d);
    return n > 0 && (size_t)n < buflen ? n : -1;
}

int ts_index_key_json(const cJSON *v, char *buf, size_t buflen)
{
    if (cJSON_IsString(v)) {
        size_t n = strlen(v->valuestring);
        if (n >= buflen)
            return -1;
        memcpy(buf, v->valuestring, n + 1);
        return (int)n;
    }
    if (cJSON_IsNumber(v))
        return key_from_double(v->valuedouble, buf, buflen);
    if (cJSON_IsBool(v))
        return snprintf(buf, buflen, "%s", cJSON_IsTrue(v) ? "true" : "false");
    return -1;
}

int ts_index_key_text(const char *v, size_t n, char *buf, size_t buflen)
{
    if (n >= 2 && v[0] == '"' && !memchr(v, '\\', n)) {
        if (n - 2 >= buflen)
            return -1;
        memcpy(buf, v + 1, n - 2);
        buf[n - 2] = '\0';
        return (int)(n - 2);
    }
    if (n > 0 && n < 64 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))) {
        char num[64];
        memcpy(num, v, n);
        num[n] = '\0';
        return key_from_double(strtod(num, NULL), buf, buflen);
    }
    if ((n == 4 && memcmp(v, "true", 4) == 0) || (n == 5 && memcmp(v, "false", 5) == 0))
        return snprintf(buf, buflen, "%.*s", (int)n, v);
    if (n == 0 || v[0] != '"')
        return -1;
    cJSON *s = cJSON_ParseWithLength(v, n); /* an escaped string */
    int rc = ts_index_key_json(s, buf, buflen);
    cJSON_Delete(s);
    return rc;
}

void ts_okey_from_json(const cJSON *v, ts_okey_t *key)
{
    memset(key, 0, sizeof *key);
    if (cJSON_IsString(v)) {
        key->kind = TS_OKEY_STR;
        key->str = v->valuestring;
        key->len = (uint32_t)strlen(v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        key->kind = TS_OKEY_NUM;
        key->num = v->valuedouble;
    }
}

/* see index.h */
void ts_okey_from_text(const char *v, size_t n, ts_okey_t *key)
{
    memset(key, 0, sizeof *key);
    if (n >= 2 && v[0] == '"') {
        char *copy;
        size_t len;
        if (!memchr(v, '\\', n)) {
            len = n - 2;
            copy = ts_memdup(v + 1, len);
        } else {
            cJSON *s = cJSON_ParseWithLength(v, n);
            if (!cJSON_IsString(s)) {
                cJSON_Delete(s);
                return; /* not a string after all: missing */
            }
            len = strlen(s->valuestring);
            copy = ts_xstrdup(s->valuestring);
            cJSON_Delete(s);
        }
        key->kind = TS_OKEY_STR;
        key->str = copy;
        key->len = (uint32_t)len;
    } else if (n > 0 && n < 64 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))) {
        char num[64];
        memcpy(num, v, n);
        num[n] = '\0';
        key->kind = TS_OKEY_NUM;
        key->num = strtod(num, NULL);
    }
}

int ts_okey_cmp(const ts_okey_t *a, const ts_okey_t *b)
{
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->kind == TS_OKEY_NUM)
        return (a->num > b->num) - (a->num < b->num);
    if (a->kind == TS_OKEY_STR) {
        size_t n = a->len < b->len ? a->len : b->len;
        int r = memcmp(a->str, b->str, n);
        if (r)
            return r < 0 ? -1 : 1;
        return (a->len > b->len) - (a->len < b->len);
    }
    return 0;
}

static int id_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int r = memcmp(a, b, an < bn ? an : bn);
    if (r)
        return r < 0 ? -1 : 1;
    return (an > bn) - (an < bn);
}

int ts_okey_id_cmp(const ts_okey_t *a, const char *a_id, size_t a_len, const ts_okey_t *b,
                   const char *b_id, size_t b_len)
{
    int r = ts_okey_cmp(a, b);
    return r ? r : id_cmp(a_id, a_len, b_id, b_len);
}

const char *ts_index_entry_id(const ts_index_t *self, const ts_index_entry_t *e, size_t *len)
{
    return self->id_of(self->id_arg, e->doc, len);
}

/* (order, id), then the pointer: two documents with one id (the store never
 * has them; policy tests may) still have a place each. The ids are read only
 * on a tie of order keys. */
static int entry_cmp(const ts_index_t *self, const ts_index_entry_t *a, const ts_index_entry_t *b)
{
    int r = ts_okey_cmp(&a->order, &b->order);
    if (r || a == b)
        return r;
    size_t an, bn;
    const char *ai = ts_index_entry_id(self, a, &an), *bi = ts_index_entry_id(self, b, &bn);
    if ((r = id_cmp(ai, an, bi, bn)))
        return r;
    return ((uintptr_t)a->doc > (uintptr_t)b->doc) - ((uintptr_t)a->doc < (uintptr_t)b->doc);
}

static int entry_qsort_cmp(const void *a, const void *b, void *self)
{
    return entry_cmp(self, *(ts_index_entry_t *const *)a, *(ts_index_entry_t *const *)b);
}

size_t ts_index_seek(const ts_index_t *self, ts_index_entry_t *const *e, size_t n,
                     const ts_okey_t *key, const char *id, size_t id_len, bool after)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        size_t mn;
        const char *mid_id = ts_index_entry_id(self, e[mid], &mn);
        int r = ts_okey_id_cmp(&e[mid]->order, mid_id, mn, key, id, id_len);
        if (after ? r <= 0 : r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

size_t ts_index_lower_bound(ts_index_entry_t *const *e, size_t n, const ts_okey_t *key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts_okey_cmp(&e[mid]->order, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

size_t ts_index_upper_bound(ts_index_entry_t *const *e, size_t n, const ts_okey_t *key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts_okey_cmp(&e[mid]->order, key) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- the two hash tables ---- */

static bucket_t *find_bucket(const ts_index_t *self, const char *key, size_t len, uint64_t h)
{
    if (!self->bucket_cap)
        return NULL;
    size_t mask = self->bucket_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        bucket_t *b = self->buckets[i];
        if (!b)
            return NULL;
        if (b->hash == h && b->key_len == len && memcmp(b->key, key, len) == 0)
            return b;
    }
}

static void grow_buckets(ts_index_t *self)
{
    if ((self->nbuckets + 1) * 4 <= self->bucket_cap * 3)
        return;
    size_t cap = self->bucket_cap ? self->bucket_cap * 2 : 64;
    bucket_t **t = ts_xcalloc(cap, sizeof *t);
    for (size_t i = 0; i < self->bucket_cap; i++) {
        bucket_t *b = self->buckets[i];
        if (!b)
            continue;
        size_t j = b->hash & (cap - 1);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = b;
    }
    free(self->buckets);
    self->buckets = t;
    self->bucket_cap = cap;
}

static bucket_t *get_bucket(ts_index_t *self, const char *key, size_t len)
{
    uint64_t h = hash_bytes(key, len);
    bucket_t *b = find_bucket(self, key, len, h);
    if (b)
        return b;
    grow_buckets(self);
    b = ts_xcalloc(1, sizeof *b);
    b->key = ts_memdup(key, len);
    b->key_len = len;
    b->hash = h;
    size_t mask = self->bucket_cap - 1, i = h & mask;
    while (self->buckets[i])
        i = (i + 1) & mask;
    self->buckets[i] = b;
    self->nbuckets++;
    return b;
}

static size_t doc_slot(const ts_index_t *self, const void *doc)
{
    size_t mask = self->doc_cap - 1;
    size_t i = hash_ptr(doc) & mask;
    while (self->docs[i] && self->docs[i]->doc != doc)
        i = (i + 1) & mask;
    return i;
}

static void grow_docs(ts_index_t *self)
{
    if ((self->ndocs + 1) * 4 <= self->doc_cap * 3)
        return;
    size_t cap = self->doc_cap ? self->doc_cap * 2 : 1024;
    ts_index_entry_t **t = ts_xcalloc(cap, sizeof *t);
    for (size_t i = 0; i < self->doc_cap; i++) {
        ts_index_entry_t *e = self->docs[i];
        if (!e)
            continue;
        size_t j = hash_ptr(e->doc) & (cap - 1);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = e;
    }
    free(self->docs);
    self->docs = t;
    self->doc_cap = cap;
}

/* Linear probing removal with backward shift (no tombstones). */
static void doc_remove_slot(ts_index_t *self, size_t i)
{
    size_t mask = self->doc_cap - 1;
    self->docs[i] = NULL;
    self->ndocs--;
    for (size_t j = (i + 1) & mask; self->docs[j]; j = (j + 1) & mask) {
        size_t home = hash_ptr(self->docs[j]->doc) & mask;
        /* move j back to i when home is not in (i, j] cyclically */
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            self->docs[i] = self->docs[j];
            self->docs[j] = NULL;
            i = j;
        }
    }
}

/* ---- bucket membership ---- */

static void bucket_remove(const ts_index_t *self, bucket_t *b, ts_index_entry_t *e)
{
    size_t i;
    if (self->bulk) {
        for (i = 0; i < b->n && b->items[i] != e; i++)
            ;
    } else {
        size_t lo = 0, hi = b->n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (entry_cmp(self, b->items[mid], e) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        i = lo;
    }
    if (i < b->n && b->items[i] == e) {
        memmove(b->items + i, b->items + i + 1, (b->n - i - 1) * sizeof *b->items);
        b->n--;
    }
}

static void bucket_insert(const ts_index_t *self, bucket_t *b, ts_index_entry_t *e)
{
    if (b->n == b->cap)
        b->items = ts_grow(b->items, &b->cap, sizeof *b->items, 4);
    size_t i = b->n;
    if (!self->bulk) {
        size_t lo = 0, hi = b->n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (entry_cmp(self, b->items[mid], e) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        i = lo;
        memmove(b->items + i + 1, b->items + i, (b->n - i) * sizeof *b->items);
    }
    b->items[i] = e;
    b->n++;
    e->bucket = b;
}

static void drop_entry(ts_index_t *self, size_t slot)
{
    ts_index_entry_t *e = self->docs[slot];
    bucket_remove(self, e->bucket, e);
    doc_remove_slot(self, slot);
    free(e->order.str);
    free(e);
}

void ts_index_set(ts_index_t *self, void *doc, const char *text, size_t len)
{
    char key[KEY_MAX];
    int klen = -1;
    const char *v, *o = NULL;
    size_t vn, on = 0;
    if (text && ts_json_text_field(text, len, self->field, self->field_len, &v, &vn))
        klen = ts_index_key_text(v, vn, key, sizeof key);
    if (klen >= 0 && self->order_field &&
        !ts_json_text_field(text, len, self->order_field, self->order_len, &o, &on))
        o = NULL;
    size_t slot = self->doc_cap ? doc_slot(self, doc) : 0;
    ts_index_entry_t *e = self->doc_cap ? self->docs[slot] : NULL;
    if (klen < 0) {
        if (e)
            drop_entry(self, slot);
        return;
    }
    ts_okey_t order = {0};
    if (o)
        ts_okey_from_text(o, on, &order);
    if (e && e->bucket->key_len == (size_t)klen && memcmp(e->bucket->key, key, (size_t)klen) == 0 &&
        ts_okey_cmp(&e->order, &order) == 0) {
        free(order.str); /* nothing the index cares about changed */
        return;
    }
    bucket_t *b = get_bucket(self, key, (size_t)klen);
    if (e) {
        bucket_remove(self, e->bucket, e);
        free(e->order.str);
        e->order = order;
    } else {
        grow_docs(self);
        e = ts_xcalloc(1, sizeof *e);
        e->doc = doc;
        e->order = order;
        self->docs[doc_slot(self, doc)] = e;
        self->ndocs++;
    }
    bucket_insert(self, b, e);
}

void ts_index_bulk(ts_index_t *self, bool on)
{
    if (self->bulk && !on)
        for (size_t i = 0; i < self->bucket_cap; i++)
            if (self->buckets[i] && self->buckets[i]->n > 1)
                qsort_r(self->buckets[i]->items, self->buckets[i]->n,
                        sizeof(ts_index_entry_t *), entry_qsort_cmp, self);
    self->bulk = on;
}

size_t ts_index_bucket(const ts_index_t *self, const char *key, size_t key_len,
                       ts_index_entry_t *const **entries)
{
    bucket_t *b = find_bucket(self, key, key_len, hash_bytes(key, key_len));
    *entries = b ? b->items : NULL;
    return b ? b->n : 0;
}
