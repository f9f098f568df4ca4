/* cache_int.h — inside the cache actor (src/cache/): memoized query
 * answers (memo.c), what each one read and the changes that undo it
 * (watch.c), live queries and their notifications (live.c), the loop and
 * its messages (cache.c). docs/CACHE.md tells the whole story; other
 * actors talk to it only through messages (msgs.def). */
#ifndef THERASYNC_CACHE_INT_H
#define THERASYNC_CACHE_INT_H

#include "msgs/msgs.h"
#include "store/index.h" /* the index's key functions: a read-set speaks its keys */
#include "therasync/config.h"
#include "therasync/hist.h"
#include "therasync/hmap.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG "cache"

/* ---- read-sets (watch.c) ---- */

typedef struct watch_list watch_list_t;

/* Whatever holds a read-set: a memoized answer or a live query. */
typedef struct watcher {
    ts_readset_t read;
    uint16_t collection;
    bool live;                   /* a live_t, else an entry_t */
    watch_list_t *list;          /* where it is watched (NULL: nowhere) */
    struct watcher *prev, *next; /* in that list */
} watcher_t;

/* ---- memoized answers (memo.c) ---- */

typedef struct group group_t;

/* A row of an extended answer: an item's text, order key and id (the
 * text and key in a block the front door's copies may share). */
typedef ts_row_t row_t;

typedef struct entry {
    watcher_t w;
    group_t *group;
    /* A lower-bound selector's entry keeps every matching row from lo to
     * the end of what it read (its read range), in order, and answers any
     * bound value in the range from them; a change patches the rows
     * (watch.c → memo_patch) instead of dropping the entry. */
    row_t *rows;
    size_t nrows, caprows;
    bool complete;         /* the rows reach the end of the bucket */
    char *end_id;          /* not complete: the rows end at (hi, end_id) in (key, id) order */
    uint8_t end_id_len;
    int sel_bit;           /* its selector's bit in changes' membership; -1: drop instead */
    ts_okey_t lo, hi;      /* lower-bound selectors: the answer holds for bound values in
                              [lo, hi] (hi_inf: no end) */
    bool hi_inf;
    char *answer;          /* the `query` result, ready */
    size_t answer_len;
    size_t bytes;          /* what it costs, counted against max_bytes */
    struct entry *older, *newer; /* least recently used first */
} entry_t;

/* One question: a selector and its params without the lower bound. */
struct group {
    hnode_t node;          /* key: collection, selector, params, page */
    char *selector;
    bool bounded;          /* its selector has a lower-bound param */
    entry_t **entries;     /* by lo, disjoint (one without a bound) */
    size_t n, cap;
    bool mirrored;         /* the front door keeps a copy (mirror.c) */
    bool hot_dirty;        /* ... which goes again in the next HOT */
    long total;            /* the rows an answer takes, for the copy */
};

/* ---- live queries (live.c) ---- */

typedef struct client client_t;
typedef struct live live_t;

typedef struct sub {
    hnode_t node;          /* key: its id */
    char id[24];
    live_t *live;
    client_t *client;
    bool diff;
    struct sub *next_in_live, *next_in_client;
} sub_t;

struct client {
    hnode_t node;          /* key: its routing id */
    unsigned char *route;  /* routing frames of its subscribe, as envelopes keep them */
    size_t route_len;
    bool delimiter;
    size_t nsubs;
    sub_t *subs;
};

struct live {
    watcher_t w;
    hnode_t node;          /* key: collection, selector, params (exact) */
    cJSON *request;        /* the query, to run again */
    char *selector;
    char *answer;          /* the current result */
    size_t answer_len;
    int64_t version;
    bool ready;            /* has a result (subscribes wait for the first) */
    bool running;          /* a run is with the store */
    bool dirty;            /* a change touched it since its last run began */
    bool rerun;            /* ... one its rows could not take: run it again */
    entry_t *rows;         /* a lower-bound selector's: its rows, patched by changes, answer
                              it without a run (NULL: run again on every change) */
    char *bound_param;
    int64_t dirty_us;      /* when it became dirty, for the notification latency */
    sub_t *subs;
    size_t nsubs;
    ts_envelope_t *waiting;/* subscribes waiting for the run in flight (held_next) */
    struct live *next_dirty;
};

/* ---- on-demand collections (ondemand.c) ---- */

typedef struct od_entry od_entry_t;

/* ---- the actor ---- */

/* A miss being computed: the reads waiting for it (held_next list). */
typedef struct pending {
    hnode_t node;          /* key: the exact question */
    uint64_t token;
    ts_envelope_t *waiting;
    bool dropped;          /* a policy change came first: do not keep the answer */
    char *bound_param;     /* an extended run: the lower-bound param its reads share */
} pending_t;

typedef struct {
    const ts_config_t *config;
    void *inbox;           /* PULL TS_INPROC_CACHE */
    void *to_store;        /* PUSH: CACHE_RUN */
    void *to_front;        /* PUSH: ANSWERS, NOTICES */
    void *to_persist;      /* PUSH: metrics on their way */
    void *to_api;          /* PUSH: on-demand fetches (NULL: no Clinic API) */
    ts_buf_t buf;          /* scratch */
    uint64_t seen;         /* CACHE_SEEN: the front door's messages with writes the store
                              has handled (their changes are here) */
    uint64_t mark;         /* ... and the store's mark */
    ts_envelope_t *held, *held_last; /* direct reads waiting for seen (held_next) */
    struct {               /* what handling one message produced, sent after it */
        ts_envelope_t **answers;
        size_t nanswers, capanswers;
        ts_cache_run_t **runs;
        size_t nruns, capruns;
    } out;
    /* memo.c */
    hmap_t groups;
    hmap_t pendings;
    entry_t *oldest, *newest;
    size_t bytes, entries;
    ts_selectors_t *selectors;
    uint64_t next_token;
    /* watch.c */
    hmap_t lists;
    watcher_t *all[TS_MAX_COLLECTIONS];        /* read-sets of whole collections */
    struct field_pair *pairs[TS_MAX_COLLECTIONS];/* fields the read-sets name */
    /* live.c */
    hmap_t lives, subs, clients;
    live_t *dirty;
    ts_notice_t *notices, *notices_last;
    size_t nsubs;
    int64_t next_version;
    uint64_t next_sub;
    /* ondemand.c */
    hmap_t od;
    uint64_t od_gen[TS_MAX_COLLECTIONS]; /* local writes and invalidates so far */
    bool offline;          /* the last fetch found no Clinic API */
    uint64_t fetches, coalesced_fetches, stale_answers, not_modified, fetch_errors, od_fresh,
        od_forgotten;
    /* mirror.c */
    struct {
        char **keys;       /* groups whose copies go in the next HOT */
        size_t *lens, n, cap;
        bool forget_all;
        ts_seen_t sent;
    } hot;
    /* metrics */
    uint64_t hits, misses, coalesced, uncached, evictions, invalidations, runs, run_errors,
        recomputes, notifications, unchanged, closed, patches;
    ts_hist_t notify_us;
} cache_t;

/* memo.c */
void memo_read(cache_t *self, ts_envelope_t *e);
void memo_result(cache_t *self, ts_cache_run_t *run);
void memo_drop_entry(cache_t *self, entry_t *entry);
void memo_policy(cache_t *self, ts_selectors_t *selectors);
const ts_selector_info_t *memo_selector(const cache_t *self, const char *name);
size_t memo_invalidate(cache_t *self, const char *collection, const char *selector);
/* The answers of one question ({collection, selector, params}). */
size_t memo_invalidate_params(cache_t *self, const cJSON *request);
void memo_free_all(cache_t *self);
/* The exact key of a query request (collection, selector, canonical params,
 * page) into self->buf; without the param `skip` (NULL: none). */
void memo_key(cache_t *self, const cJSON *request, const char *skip);
void cache_answer(cache_t *self, ts_envelope_t *e);
int cache_run(cache_t *self, uint64_t token, uint16_t collection, const cJSON *request,
              bool extend);
/* Patches an extended entry for change c; false when it cannot (drop it). */
bool memo_patch(cache_t *self, entry_t *e, const ts_change_t *c);
void memo_evict(cache_t *self); /* after changes: patches may have grown the entries */
/* Rows for a live query of a lower-bound selector (memo.c): whether a
 * request can have them (its lower-bound param's value, else NULL); the
 * rows of an extended run (NULL: none); the answer they give for the
 * request (0, or -1 when they end too soon); freeing them. */
const cJSON *memo_bound(const cache_t *self, const cJSON *request, const char **param);
entry_t *memo_rows_of(cache_t *self, ts_cache_run_t *run, const char *param);
int memo_slice(cache_t *self, const entry_t *e, const cJSON *request, const char *param,
               ts_buf_t *out);
void memo_free_rows(entry_t *e);
/* An order key with its own copy of a string. */
void memo_copy_okey(ts_okey_t *to, const ts_okey_t *from);

/* mirror.c */
void mirror_want(cache_t *self, group_t *g, long total);
void mirror_touch(cache_t *self, group_t *g);
void mirror_forget_all(cache_t *self);
void mirror_flush(cache_t *self);
void mirror_free_all(cache_t *self);

/* watch.c */
void watch_set(cache_t *self, watcher_t *w, uint16_t collection, ts_readset_t *read);
void watch_unset(cache_t *self, watcher_t *w);
void watch_changes(cache_t *self, ts_change_t *changes);
bool watch_in_range(const ts_readset_t *r, const ts_okey_t *k);
void watch_free_all(cache_t *self);

/* ondemand.c */
void od_read(cache_t *self, ts_envelope_t *e);
void od_result(cache_t *self, ts_api_result_t *res);
void od_change(cache_t *self, const ts_change_t *c);
void od_all_stale(cache_t *self, size_t coll); /* SIZE_MAX: every collection */
size_t od_invalidate(cache_t *self, int coll);  /* -1: every collection */
void od_gc(cache_t *self);
void od_free_all(cache_t *self);
size_t od_entries(const cache_t *self);

/* live.c */
void live_subscribe(cache_t *self, ts_envelope_t *e);
void live_unsubscribe(cache_t *self, ts_envelope_t *e);
void live_touched(cache_t *self, live_t *live);
void live_patched(cache_t *self, live_t *live);
void live_result(cache_t *self, ts_cache_run_t *run);
void live_flush(cache_t *self);
void live_gone(cache_t *self, const ts_gone_t *gone);
void live_policy(cache_t *self, const ts_selectors_t *selectors, const ts_selectors_t *old);
void live_free_all(cache_t *self);

#endif
