/* index.h — an equality index over JSON documents, each bucket kept ordered.
 *
 * A ts_index_t maps the value of one top-level field ("therapist_id") to a
 * bucket of the documents holding that value, each bucket sorted by a second
 * field (the selector's order_by, e.g. "scheduled_at"; ties by document
 * id), so a query can binary-search its start and stop at its limit. The
 * order (order key, id) is total and survives a document being changed or
 * re-created, so a page of a query can end at a position and the next page
 * start strictly after it (docs/PROTOCOL.md, "query").
 * Documents are opaque pointers owned by the caller; the index reads their
 * fields from the JSON object text it is handed on every change and keeps
 * its own copies of the two values, so it never touches a document's text
 * afterwards (the text may be freed right after ts_index_set returns).
 *
 * Values are compared as text (docs/POLICIES.md: ctx.find): a string by its
 * characters, a number in its JSON spelling (integers without a fraction),
 * true / false. null, objects and arrays are not indexed. Order keys sort
 * missing < numbers < strings; strings byte-wise, as Lua compares them; ids
 * byte-wise, then the shorter first (ts_okey_id_cmp). The index keeps no
 * copy of the id: it asks the owner for it (id_of) only when two order keys
 * tie, so an entry stays 40 bytes.
 *
 * Not thread-safe: one owner (the store actor). */
#ifndef THERASYNC_INDEX_H
#define THERASYNC_INDEX_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_index ts_index_t;

enum { TS_OKEY_NONE, TS_OKEY_NUM, TS_OKEY_STR };

/* An order key. str is owned by the entry inside an index. */
typedef struct {
    uint8_t kind;
    uint32_t len;
    double num;
    char *str;
} ts_okey_t;

typedef struct ts_index_entry {
    void *doc;
    struct ts_index_bucket *bucket;
    ts_okey_t order;
} ts_index_entry_t;

/* The id of doc (not NUL-terminated), valid as long as doc is indexed. */
typedef const char *(*ts_index_id_fn)(void *arg, void *doc, size_t *len);

/* field: the equality field; order_field: NULL for an unordered index
 * (its buckets are then in id order); id_of(id_arg, doc) gives a document's
 * id, which must not change while the document is indexed. */
ts_index_t *ts_index_new(const char *field, const char *order_field, ts_index_id_fn id_of,
                         void *id_arg);
void ts_index_destroy(ts_index_t **self_p);
const char *ts_index_field(const ts_index_t *self);
const char *ts_index_order_field(const ts_index_t *self); /* may be NULL */
size_t ts_index_size(const ts_index_t *self);             /* documents indexed */

/* Records doc's current text (an id-less JSON object; NULL = the document is
 * gone). Cheap when neither value changed. */
void ts_index_set(ts_index_t *self, void *doc, const char *text, size_t len);
/* Bulk loading: while on, ts_index_set appends without keeping order; off
 * sorts every bucket once. */
void ts_index_bulk(ts_index_t *self, bool on);

/* The bucket for a value (normalized text, see ts_index_key_*): its entries
 * in ascending order, or 0 when none. */
size_t ts_index_bucket(const ts_index_t *self, const char *key, size_t key_len,
                       ts_index_entry_t *const **entries);
/* First position in entries[0..n) whose order key is >= key (lower bound),
 * or > key (upper bound). */
size_t ts_index_lower_bound(ts_index_entry_t *const *entries, size_t n, const ts_okey_t *key);
size_t ts_index_upper_bound(ts_index_entry_t *const *entries, size_t n, const ts_okey_t *key);
/* An entry's document id. */
const char *ts_index_entry_id(const ts_index_t *self, const ts_index_entry_t *e, size_t *len);
/* First position in entries[0..n) whose (order key, id) is > (key, id)
 * (after = true), or >= it (after = false): where a page starts or ends. */
size_t ts_index_seek(const ts_index_t *self, ts_index_entry_t *const *entries, size_t n,
                     const ts_okey_t *key, const char *id, size_t id_len, bool after);

/* Normalized value text of a JSON value given as text / as cJSON, into buf.
 * Returns the length, or -1 when the value is not indexable (null, object,
 * array, too long for buf). */
int ts_index_key_text(const char *value, size_t len, char *buf, size_t buflen);
int ts_index_key_json(const cJSON *value, char *buf, size_t buflen);
/* Order key of a cJSON value (borrowing its string) and comparison. */
void ts_okey_from_json(const cJSON *value, ts_okey_t *key);
/* Order key of a JSON value given as text, with an owned copy of a string
 * (free key->str). */
void ts_okey_from_text(const char *value, size_t len, ts_okey_t *key);
int ts_okey_cmp(const ts_okey_t *a, const ts_okey_t *b);
/* The order of candidates everywhere (indexes, scans, the built-in query,
 * cursors): by order key, then id bytes, then id length. */
int ts_okey_id_cmp(const ts_okey_t *a, const char *a_id, size_t a_len, const ts_okey_t *b,
                   const char *b_id, size_t b_len);

#endif
