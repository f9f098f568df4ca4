/* store_query.h — the store's policy side: validation, named selectors served
 * from ordered equality indexes, reload and info (docs/PROTOCOL.md, docs/POLICIES.md).
 *
 * The store actor owns one ts_sq_t, which owns the store's ts_policy_t (the
 * one Lua state that runs validation, selectors and — with sync — conflict
 * policies) and an index set per collection. The store keeps documents as
 * opaque pointers; it shows them through two hooks and reports every change
 * of a document's visible text with ts_sq_changed (store_set_visible does that), so
 * the indexes always describe what readers see.
 *
 * Not thread-safe: call from the store actor only. */
#ifndef THERASYNC_STORE_QUERY_H
#define THERASYNC_STORE_QUERY_H

#include "msgs/cache.h"
#include "msgs/call.h"
#include "therasync/config.h"
#include "policy/policy.h"

#include <stdbool.h>

typedef struct ts_sq ts_sq_t;
typedef struct ts_sq_coll ts_sq_coll_t;

typedef struct {
    /* Fills out with doc's id and visible text (text NULL: not visible). */
    void (*view)(void *doc, ts_policy_doc_t *out);
    /* Calls fn(arg, doc) for every document of the store's collection coll. */
    void (*each)(void *coll, void (*fn)(void *arg, void *doc), void *arg);
} ts_sq_hooks_t;

/* Loads the policies (config->policies_dir, else the shipped ones found next
 * to the executable: <exe dir>/../policies, then
 * <exe dir>/../share/therasync/policies). Returns NULL with a message in err
 * when none is found or they do not load. */
ts_sq_t *ts_sq_new(const ts_config_t *config, const ts_sq_hooks_t *hooks, char *err,
                   size_t errlen);
void ts_sq_destroy(ts_sq_t **self_p);

/* Registers a store collection (coll is the store's handle for hooks->each)
 * and builds its indexes; returns its handle for ts_sq_changed and queries. */
ts_sq_coll_t *ts_sq_attach(ts_sq_t *self, const char *name, void *coll);
/* doc's visible text is now text[0..len) (NULL: not visible). The indexes
 * copy what they need, so the old text may be freed right after; they keep
 * the doc pointer, so a store that ever frees a doc_t must first report it
 * with text NULL. */
void ts_sq_changed(ts_sq_coll_t *coll, void *doc, const char *text, size_t len);
/* While on (recovery), changes are recorded without keeping buckets
 * ordered; off sorts them once. */
void ts_sq_bulk(ts_sq_t *self, bool on);

/* Validates the merged document of an update (previous: the stored one).
 * Returns 0 when accepted; otherwise fails the call with validation_failed
 * (error.data.errors) or policy_error and returns -1. Fail closed. */
int ts_sq_validate(ts_sq_t *self, ts_call_t *call, const char *collection, const cJSON *doc,
                   const cJSON *previous);
/* Whether collection has a validator (else validating accepts anything). */
bool ts_sq_validates(ts_sq_t *self, const char *collection);
/* The same with the documents given as the store keeps them (previous
 * NULL for a create). */
int ts_sq_validate_text(ts_sq_t *self, ts_call_t *call, const char *collection,
                        const ts_policy_doc_t *doc, const ts_policy_doc_t *previous);
/* Answers query with a selector name (params.selector is a string). */
void ts_sq_query(ts_sq_t *self, ts_call_t *call, ts_sq_coll_t *coll);
/* The same for the cache: also fills run->read with what the run read,
 * run->clock with whether the selector read the clock, and for an
 * extended run (run->extend) its rows, up to TS_EXTEND_ROWS. */
void ts_sq_run(ts_sq_t *self, ts_call_t *call, ts_sq_coll_t *coll, ts_cache_run_t *run);
/* For each lower-bound selector of collection (bit i: the i-th selector),
 * whether the change's new document is in its answers (ch->known, match). */
void ts_sq_membership(ts_sq_t *self, const char *collection, ts_change_t *ch);
/* policy.reload (call != NULL: answered) or SIGHUP (call NULL): reloads the
 * policy dir all-or-nothing and rebuilds indexes whose fields changed.
 * Returns the policy.reloaded / policy.failed event's payload for the
 * caller to publish (cJSON_free it). */
char *ts_sq_reload(ts_sq_t *self, ts_call_t *call);
/* The selectors loaded, for the cache (caller frees). */
ts_selectors_t *ts_sq_selectors(ts_sq_t *self);
/* policy.info */
void ts_sq_info(ts_sq_t *self, ts_call_t *call);
/* The policy engine (for the store's conflict handling). */
ts_policy_t *ts_sq_policy(ts_sq_t *self);

#endif
