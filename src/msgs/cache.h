/* cache.h — the payloads of the messages to and from the cache actor
 * (msgs.def): a document's change, a query run with what it read, the
 * selectors' fingerprints, and a notification for one client.
 *
 * The store sends the cache, on one socket and in this order, the changes
 * a message of its inbox made, then the reads of that message, then the
 * results of runs the cache asked for: so when the cache takes a read or a
 * result, every change before it has been applied to its entries. */
#ifndef THERASYNC_CACHE_MSGS_H
#define THERASYNC_CACHE_MSGS_H

#include "msgs/call.h"
#include "store/index.h" /* ts_okey_t: rows and intervals speak order keys */
#include "therasync/hmap.h"
#include "therasync/util.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A document's visible text changed: before (old) and after (new), each
 * an id-less JSON object as the store keeps it; absent = not visible. */
enum { TS_CHANGE_LOCAL, TS_CHANGE_REMOTE, TS_CHANGE_FETCHED };

typedef struct ts_change {
    struct ts_change *next;
    uint16_t collection;   /* its index in the config's collections */
    uint8_t origin;        /* TS_CHANGE_*: a client's write (or its rollback), the feed,
                              an on-demand fetch */
    bool has_old, has_new;
    uint8_t id_len;
    uint32_t old_len, new_len;
    /* Lower-bound selectors (bit i: the i-th of CACHE_POLICY's list) whose
       where() the store ran on the new text with the document's own index
       value and order key as params: known says which, match the outcome.
       The cache patches their answers instead of dropping them. */
    uint64_t known, match;
    char data[];           /* id, old text, then new text */
} ts_change_t;

ts_change_t *ts_change_new(uint16_t collection, const char *id, size_t id_len,
                           const char *old_text, size_t old_len, const char *new_text,
                           size_t new_len);
static inline const char *ts_change_old(const ts_change_t *c) { return c->data + c->id_len; }
static inline const char *ts_change_new_text(const ts_change_t *c)
{
    return c->data + c->id_len + c->old_len;
}
void ts_change_free_list(ts_change_t *head);

/* What one selector run read, at the index API: the documents of a bucket
 * (field = key) of an index ordered by order_field whose order key lies in
 * [lo, hi] (each end open to infinity when its flag says so). */
typedef enum {
    TS_READ_NOTHING, /* no document can change the result (a value no index holds) */
    TS_READ_RANGE,   /* a range of one index bucket */
    TS_READ_ALL,     /* the whole collection (a scan) */
} ts_read_kind_t;

typedef struct {
    ts_read_kind_t kind;
    char *field;        /* RANGE: the index's equality field */
    char *order;        /* its order field, or NULL */
    char *key;          /* the bucket's normalized value */
    bool lo_inf, hi_inf;
    uint8_t lo_kind, hi_kind; /* TS_OKEY_* (store/index.h) */
    double lo_num, hi_num;
    char *lo_str, *hi_str;
    uint32_t lo_len, hi_len;
    /* the order key of the answer's first row (none: no rows): with a
       lower-bound param, the answer holds for bound values up to it */
    bool has_first;
    uint8_t first_kind;
    double first_num;
    char *first_str;
    uint32_t first_len;
} ts_readset_t;

void ts_readset_clear(ts_readset_t *rs);

/* A query the cache asks the store to compute (request: the query's
 * params object, as the front door passed it: collection, selector,
 * params, limit, cursor); the store fills the answer and what it read and
 * sends it back. */
/* One row of an extended run: its text in the result, order key and id. */
typedef struct {
    uint32_t off, len;    /* the item's text: result[off, off + len) */
    uint8_t kind;         /* its order key (TS_OKEY_*) */
    double num;
    char *str;            /* owned */
    uint32_t str_len;
} ts_run_row_t;

typedef struct {
    uint64_t token;       /* the cache's: what the run is for */
    uint16_t collection;
    cJSON *request;       /* owned */
    /* the answer */
    int err_code;         /* 0: result holds the `query` result */
    char *err_message;
    char *result;
    size_t result_len;
    ts_readset_t read;
    bool clock;           /* the selector read the clock: its result cannot be kept */
    /* extended (a lower-bound selector's miss): every matching row from the
       bound on, up to TS_EXTEND_ROWS, instead of the selector's limit */
    bool extend;
    bool complete;        /* the rows reach the end of the bucket */
    ts_run_row_t *rows;
    size_t nrows;
} ts_cache_run_t;

#define TS_EXTEND_ROWS 64

ts_cache_run_t *ts_cache_run_new(uint64_t token, uint16_t collection, cJSON *request);
void ts_cache_run_free(ts_cache_run_t *run);

/* A selector as loaded, for the cache: what its entries depend on. */
typedef struct {
    char *name;
    char *lower_bound;    /* the param that is a lower bound on order_by, or NULL */
    char *index;          /* its index field, or NULL (on-demand reads filter by it) */
    char *order;          /* its order_by field, or NULL */
    long limit;           /* its declared limit (0: none) */
    char *collection;     /* the collection it reads */
    uint64_t fingerprint; /* changes when the selector's definition changes */
} ts_selector_info_t;

/* Every selector after a load or reload. */
typedef struct {
    size_t count;
    ts_selector_info_t *selectors;
} ts_selectors_t;

void ts_selectors_free(ts_selectors_t *s);

/* A JSON-RPC notification for one client of the front door (the routing
 * frames of one of its requests). */
typedef struct ts_notice {
    struct ts_notice *next;
    size_t route_len;
    unsigned char *route;
    bool delimiter;
    char *payload;
    size_t payload_len;
} ts_notice_t;

void ts_notice_free_list(ts_notice_t *head);

/* What an on-demand answer says of its freshness (ts_call_t.fresh). */
enum { TS_FRESH_SET = 1, TS_FRESH_STALE = 2, TS_FRESH_EXPIRED = 4 };

/* A client the front door could not reach (its routing id): it is gone. */
typedef struct {
    size_t len;
    unsigned char id[];
} ts_gone_t;

/* How far the store's work has reached the cache (CACHE_SEEN): the front
 * door's messages with writes it has handled, and its mark, which every
 * change told to the cache and every policy load advance. */
typedef struct {
    uint64_t front_msg;
    uint64_t mark;
} ts_seen_t;

/* ---- memoized answers, shared with the front door ----
 *
 * A row of a lower-bound answer: its text and order key live in one
 * immutable, reference-counted block, so the cache's entries and the front
 * door's copies of them (HOT) hold the same rows; handing the front door
 * an entry copies pointers, not rows. */
typedef struct {
    char *text;           /* the item, in its block */
    uint32_t len;
    uint8_t id_len;
    uint16_t id_tag;      /* ts_row_id_tag of the id: finding a changed document's row
                             compares it first, not hundreds of ids out of line */
    ts_okey_t key;        /* key.str in the same block */
    uint64_t pre[2];      /* a string key's first 16 bytes, big-endian (zero padded): most
                             comparisons end here, without touching the block */
    char *id;             /* the cache's rows own one; NULL in a copy */
} ts_row_t;

/* A 16-bit hash of a row's id. */
static inline uint16_t ts_row_id_tag(const char *id, size_t len)
{
    return (uint16_t)hmap_hash(id, len);
}

/* Sets r->pre from r->key (after r->key is set). */
void ts_row_key_prefix(ts_row_t *r);

/* A block holding text and then key (either may be empty); returns the
 * text, which names the block for ref and unref. */
char *ts_row_block_new(const char *text, size_t len, const char *key, size_t key_len);
void ts_row_block_ref(const char *text);
void ts_row_block_unref(const char *text);

/* The answer for bound value v from rows (every match from the entry's lo
 * on; complete: to the bucket's end), byte for byte the selector's; -1
 * when the rows end before it does or total is not a row count. out NULL:
 * only whether the rows could give it. */
int ts_rows_slice(const ts_row_t *rows, size_t n, bool complete, const ts_okey_t *v, long total,
                  ts_buf_t *out);

/* The key of a query (collection, selector, params in canonical form, page)
 * into b; without the param `skip` (a lower-bound group), or NULL. */
void ts_query_key(ts_buf_t *b, const cJSON *request, const char *skip);

/* The front door's copy of one group of the cache's answers: answers hot
 * enough for the front door to give them without the cache. */
typedef struct {
    ts_okey_t lo, hi;     /* lower-bound entries: the bound values they answer (strs owned) */
    bool hi_inf, complete;
    ts_row_t *rows;       /* each row's block referenced */
    size_t nrows;
    char *answer;         /* an answer without a bound (owned copy) */
    size_t answer_len;
} ts_hot_entry_t;

typedef struct ts_hot_group {
    struct ts_hot_group *next;
    char *key;            /* ts_query_key, without the bound */
    size_t key_len;
    char *selector;
    char *bound;          /* the selector's lower-bound param, or NULL */
    long total;           /* the rows an answer takes (lower-bound groups) */
    ts_hot_entry_t *entries; /* by lo; none: the front door forgets the group */
    size_t n;
} ts_hot_group_t;

/* What the cache tells the front door after a message: the groups whose
 * copies changed (each whole), and how far the copies are current. */
typedef struct {
    ts_seen_t seen;       /* the copies reflect every write of the front door's messages
                             up to seen.front_msg and the store's work up to seen.mark */
    bool forget_all;      /* a policy reload: drop every copy first */
    ts_hot_group_t *groups;
} ts_hot_t;

void ts_hot_entry_clear(ts_hot_entry_t *e);
void ts_hot_group_free(ts_hot_group_t *g);
void ts_hot_free(ts_hot_t *h);

#endif
