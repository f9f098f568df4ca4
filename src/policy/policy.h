/* policy.h — the Lua policy engine: validation, selectors and conflict
 * policies loaded from a directory (docs/POLICIES.md).
 *
 * One ts_policy_t per actor that runs policies (store: validation and
 * selectors; sync: conflicts). It owns one sandboxed lua_State and is not
 * thread-safe: call it from its owning actor only. No function here blocks on
 * I/O except ts_policy_new / ts_policy_reload, which read the policy files.
 *
 * Return codes: TS_POLICY_OK (0), TS_POLICY_INVALID (validation refused the
 * document), TS_POLICY_ERROR (-1: the policy raised, overspent its budget or
 * memory cap, returned the wrong types, or is missing; err holds a message,
 * usually "file:line: message"). Callers map TS_POLICY_ERROR to policy_error
 * and must fail closed: no write is accepted without a TS_POLICY_OK. */
#ifndef THERASYNC_POLICY_H
#define THERASYNC_POLICY_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { TS_POLICY_OK = 0, TS_POLICY_INVALID = 1, TS_POLICY_ERROR = -1 };

typedef struct ts_policy ts_policy_t;

/* A document as the store keeps it: object text without its id, plus the id.
 * (A selector candidate is valid until the next call of the next function;
 * a ctx.find match until the end of the validation call.) */
typedef struct {
    const char *id;
    size_t id_len;
    const char *text;
    size_t len;
} ts_policy_doc_t;

/* Called by a lookup for each matching document; the document is only valid
 * during the call. Return 0 to continue, non-zero to stop early. */
typedef int (*ts_policy_visit_fn)(void *visit_arg, const cJSON *doc);
/* The same for a document kept as text: it must stay valid, unchanged, until
 * the validation call that asked for it returns (the store's documents do:
 * nothing changes them while a rule runs). time_ms: the value of the find's
 * time_field in milliseconds when the look-up has already read it (from its
 * index), so the visitor need not look for it in the text; else NULL. */
typedef int (*ts_policy_visit_doc_fn)(void *visit_arg, const ts_policy_doc_t *doc,
                                      const int64_t *time_ms);

/* Read-only look-up offered to validators as ctx.find(collection, field,
 * value): visits the current documents of collection whose top-level field
 * equals value (compared as text: strings as they are, numbers and booleans
 * in their JSON spelling). Must not block, must not call back into the policy
 * engine. Returns 0, or -1 when the look-up failed (the rule then fails with
 * policy_error). */
typedef int (*ts_policy_lookup_fn)(void *arg, const char *collection, const char *field,
                                   const char *value, ts_policy_visit_fn visit,
                                   void *visit_arg);

/* The richer look-up (an extension, used by the store): the same
 * matching as ts_policy_lookup_fn, plus the optional time range of
 * ctx.find's fourth argument, so that an index ordered by time_field can
 * visit only the documents near [from_ms, to_ms). The visitor still filters
 * exactly, so a look-up may visit more than the range (never less). It
 * visits documents as text: the rule gets them as lazy tables (fields read
 * out of the text on first use) instead of converted copies. */
typedef struct {
    const char *collection, *field, *value;
    const char *time_field; /* NULL: no range given */
    int64_t from_ms, to_ms; /* INT64_MIN / INT64_MAX when open */
} ts_policy_find_t;
typedef int (*ts_policy_find_fn)(void *arg, const ts_policy_find_t *find,
                                 ts_policy_visit_doc_fn visit, void *visit_arg);

typedef struct {
    size_t mem_cap_bytes;        /* Lua memory cap; 0 = 64 MiB */
    long instr_budget;           /* instructions per call; 0 = 10,000,000;
                                    < 0 = no budget (benchmarks only, never in production) */
    const cJSON *clinic_config;  /* the config's clinic table, as ctx.config (copied); may be NULL */
    ts_policy_lookup_fn lookup;  /* ctx.find; NULL = ctx.find returns {} */
    void *lookup_arg;
    ts_policy_find_fn find;      /* preferred over lookup when set; gets lookup_arg */
    const char *name;            /* owner, for logs ("store", "sync"); NULL = "policy" */
} ts_policy_opts_t;

/* Loads validate.lua, selectors.lua and conflict.lua from dir (each must
 * return a table; see docs/POLICIES.md for their shape). Returns the engine,
 * or NULL with "file:line: message" in err. opts may be NULL (defaults). */
ts_policy_t *ts_policy_new(const char *dir, const ts_policy_opts_t *opts, char *err,
                           size_t errlen);
/* Frees everything; idempotent, clears *self_p. */
void ts_policy_destroy(ts_policy_t **self_p);

/* Loads dir (NULL = the current dir again) into a fresh Lua state and swaps
 * it in only when every file loaded and checked out. All-or-nothing: returns
 * 0, or -1 with "file:line: message" in err and the old policies still in
 * force. Selector pointers and prepared queries from before a successful
 * reload become invalid. */
int ts_policy_reload(ts_policy_t *self, const char *dir, char *err, size_t errlen);

/* What is loaded: {dir, loaded_at (RFC 3339), files: [..], collections:
 * {validate: [..], conflict: [..]}, selectors: [..], mem_used, mem_cap,
 * instr_budget}. Caller frees. */
cJSON *ts_policy_info(const ts_policy_t *self);

/* Fixes ctx.now (and the default params.now) at wall_ms; 0 = the real clock.
 * For tests and the policy test runner. */
void ts_policy_set_now(ts_policy_t *self, int64_t wall_ms);

/* ---- validation ---- */

/* Runs validate[collection](doc, ctx) with ctx.previous = previous (NULL on
 * create; the stored document before the update otherwise; doc is then the
 * merged document). A collection without a validator is accepted.
 * Returns TS_POLICY_OK; TS_POLICY_INVALID with *errors set to a new array
 * [{field, message}] (caller frees); or TS_POLICY_ERROR with err set (also
 * when the validator returns anything but true / false + list of errors). */
int ts_policy_validate(ts_policy_t *self, const char *collection, const cJSON *doc,
                       const cJSON *previous, cJSON **errors, char *err, size_t errlen);
/* Whether the loaded validate.lua has a rule for collection. */
bool ts_policy_has_validator(ts_policy_t *self, const char *collection);
/* The same with the documents given as the store keeps them (object text
 * without its id, plus the id; the text well-formed): the rule gets the
 * same tables, converted from the text, with no cJSON tree built. */
int ts_policy_validate_text(ts_policy_t *self, const char *collection,
                            const ts_policy_doc_t *doc, const ts_policy_doc_t *previous,
                            cJSON **errors, char *err, size_t errlen);

/* ---- selectors ---- */

/* A declared selector. Strings are owned by the engine and valid until the
 * next successful reload or destroy. */
typedef struct {
    const char *name;
    const char *collection;
    const char *order_field; /* NULL: no order declared */
    bool order_desc;
    long limit;              /* 0: no limit declared */
    const char *index_field; /* NULL: no index; else the engine keeps an
                                equality index on this field and a param of
                                the same name picks the bucket */
    bool has_from;           /* declares from(params, ctx): where to start in
                                order_by order (an extension) */
    const char *lower_bound; /* a param where() only compares as a lower bound
                                on order_by (`lower_bound = "now"`), or NULL:
                                the cache shares answers over its values */
    uint64_t fingerprint;    /* changes when the selector's definition does */
} ts_policy_selector_t;

size_t ts_policy_selector_count(const ts_policy_t *self);
/* The i-th selector (in name order), or NULL when i is out of range. */
const ts_policy_selector_t *ts_policy_selector_at(const ts_policy_t *self, size_t i);
/* The selector called name, or NULL. */
const ts_policy_selector_t *ts_policy_selector_find(const ts_policy_t *self, const char *name);
/* The limit to apply: the declared limit lowered by params.limit when that is
 * a positive integer (a params.limit above the declared limit is ignored). */
long ts_policy_selector_limit(const ts_policy_selector_t *sel, const cJSON *params);

/* A prepared evaluation of one selector's where(doc, params, ctx) with the
 * params converted once; use it for every candidate of one query. */
typedef struct ts_policy_query ts_policy_query_t;

/* Returns a query, or NULL with err set (unknown selector, bad params).
 * params may be NULL; params.now defaults to the current time. */
ts_policy_query_t *ts_policy_query_new(ts_policy_t *self, const char *selector,
                                       const cJSON *params, char *err, size_t errlen);
/* Evaluates where for doc. A selector without where matches everything.
 * Returns TS_POLICY_OK with *match set, or TS_POLICY_ERROR with err set when
 * where raised for this document, overspent, or returned a non-boolean. */
int ts_policy_query_match(ts_policy_query_t *q, const cJSON *doc, bool *match, char *err,
                          size_t errlen);
/* The selector's start position: the value from(params, ctx) returned (a
 * new string or number; caller frees), or *from = NULL when the selector
 * declares no from or it returned nil. A document ordered before it (after
 * it, for "desc") is promised not to match. TS_POLICY_OK or TS_POLICY_ERROR. */
int ts_policy_query_from(ts_policy_query_t *q, cJSON **from, char *err, size_t errlen);

/* Fills *doc with the next candidate: returns 1, or 0 when there are no more. */
typedef int (*ts_policy_next_fn)(void *arg, ts_policy_doc_t *doc);
/* Called for each candidate where matched: return 0 to go on, 1 to stop
 * (limit reached), -1 when memory ran out. */
typedef int (*ts_policy_emit_fn)(void *arg, const ts_policy_doc_t *doc);

/* Runs where over candidates in one protected call, with ctx built once and
 * each document shown to Lua as a lazy table that reads a top-level field
 * out of the text only when where asks for it (the field is then cached in
 * the table). A document is valid only during its where call. The budget
 * applies per candidate. Returns TS_POLICY_OK, or TS_POLICY_ERROR with err
 * naming the document where failed. */
int ts_policy_query_scan(ts_policy_query_t *q, ts_policy_next_fn next, ts_policy_emit_fn emit,
                         void *arg, char *err, size_t errlen);

/* How many times policies read the clock so far (os.time(), os.date(),
 * os.clock()): a selector run that did has an answer that ages. */
uint64_t ts_policy_clock_reads(const ts_policy_t *self);

/* Frees the query; idempotent, clears *q_p. */
void ts_policy_query_destroy(ts_policy_query_t **q_p);

/* One-shot form of the three calls above. */
int ts_policy_where(ts_policy_t *self, const char *selector, const cJSON *doc,
                    const cJSON *params, bool *match, char *err, size_t errlen);

/* ---- conflicts ---- */

typedef enum {
    TS_OUTCOME_THEIRS, /* keep the server's document */
    TS_OUTCOME_MINE,   /* re-apply the local document over the server's */
    TS_OUTCOME_MERGE,  /* doc holds the merged document */
    TS_OUTCOME_REJECT, /* drop the local change; reason says why */
    TS_OUTCOME_LAST
} ts_policy_outcome_kind_t;

typedef struct {
    ts_policy_outcome_kind_t kind;
    cJSON *doc;          /* MERGE: owned, free with ts_policy_outcome_clear */
    char reason[256];    /* REJECT */
    char policy[64];     /* "conflict.lua" or "default" (for conflict.resolved) */
} ts_policy_outcome_t;

/* Runs conflict[collection](base, mine, theirs, ctx). base may be NULL (the
 * document was created locally). With no policy for the collection the
 * outcome is MERGE with ts_policy_default_merge and policy "default".
 * Returns TS_POLICY_OK, or TS_POLICY_ERROR with err set — and then the
 * outcome still holds the default merge (policy "default"), so the sync actor
 * can proceed and report the error. A merged document keeps the id of theirs;
 * a policy that changes the id is an error. */
int ts_policy_resolve(ts_policy_t *self, const char *collection, const cJSON *base,
                      const cJSON *mine, const cJSON *theirs, ts_policy_outcome_t *outcome,
                      char *err, size_t errlen);
/* Frees outcome->doc; the outcome can be reused. */
void ts_policy_outcome_clear(ts_policy_outcome_t *outcome);
const char *ts_policy_outcome_name(ts_policy_outcome_kind_t kind);

/* Field-level three-way merge: for each top-level field, a side that did not
 * change it (deep-equal to base) yields to the other; where both changed it,
 * theirs (the remote) wins. Objects present as objects on both sides (and in
 * base, or absent there) merge field by field the same way. id, version and
 * updated_at always come from theirs. A field removed on one side and
 * unchanged on the other is removed. base may be NULL (every field counts as
 * changed on both sides). Returns a new document (caller frees), or NULL
 * when mine/theirs is not an object. */
cJSON *ts_policy_default_merge(const cJSON *base, const cJSON *mine, const cJSON *theirs);

#endif
