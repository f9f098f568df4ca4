/* page.h — paging of `query` answers (docs/PROTOCOL.md, "query"): the
 * top-level `limit` (the page size) and `cursor` params, and the cursor.
 *
 * A cursor names the position after the last item of a page in the
 * (order key, id) order of candidates (index.h), plus what it needs to be
 * checked and continued: a digest of the query it belongs to (the selector
 * and its params, not the page size) and how many items the pages before
 * returned (a selector's limit is the total over all pages). On the wire it
 * is the lowercase hex of
 *
 *   u8 version (1) | 8 bytes digest | u32 returned | u8 key kind (TS_OKEY_*)
 *   | [NUM: f64] | [STR: u32 length, bytes] | u8 id length (1..255), id bytes
 *
 * (integers and the double big-endian), exactly that long. */
#ifndef THERASYNC_STORE_PAGE_H
#define THERASYNC_STORE_PAGE_H

#include "msgs/call.h"
#include "store/index.h"
#include "therasync/util.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#define TS_PAGE_MAX 1000           /* items in one page, either kind of selector */
#define TS_PAGE_BUILTIN_DEFAULT 100 /* the built-in {where, order_by} selector's default page */
#define TS_PAGE_DIGEST 8

typedef struct {
    uint8_t digest[TS_PAGE_DIGEST];
    uint32_t returned;  /* items of the pages before */
    ts_okey_t key;      /* the last item's order key; key.str owned */
    uint8_t id_len;
    char id[256];       /* the last item's id */
} ts_cursor_t;

typedef struct {
    long limit;         /* the page size, 1..TS_PAGE_MAX */
    bool has_cursor;    /* false: the first page */
    ts_cursor_t cursor;
    /* the query, for its digest: computed only when a cursor is read or
     * written (the first page of a short answer needs none) */
    const char *kind;
    const cJSON *selector, *params;
    bool have_digest;
    uint8_t digest[TS_PAGE_DIGEST];
} ts_page_t;

/* The digest of a query: kind ("named" / "builtin"), the selector (a name
 * or the built-in's object) and params, with object members in name order
 * so that a client may rebuild its params in another order. */
void ts_page_digest(const char *kind, const cJSON *selector, const cJSON *params,
                    uint8_t out[TS_PAGE_DIGEST]);
/* Reads call->params' limit (default_limit when absent or null) and cursor
 * (a string, or absent / null for the first page) and checks the cursor
 * against the query's digest (kind, selector, params: see ts_page_digest;
 * they must outlive page). Returns 0, or -1 having failed the call with
 * invalid_params naming the field. Free with ts_page_free. */
int ts_page_params(ts_call_t *call, long default_limit, const char *kind,
                   const cJSON *selector, const cJSON *params, ts_page_t *page);
/* Appends the cursor of the page after this one, whose count items ended
 * with (key, id), as a JSON string; 0 or -1. */
int ts_page_append_cursor(ts_buf_t *b, ts_page_t *page, long count, const ts_okey_t *key,
                          const char *id, size_t id_len);
void ts_page_free(ts_page_t *page);

/* Appends the cursor as JSON (a string) to b; 0 or -1 (out of memory). */
int ts_cursor_append(ts_buf_t *b, const uint8_t digest[TS_PAGE_DIGEST], uint32_t returned,
                     const ts_okey_t *key, const char *id, size_t id_len);
/* Decodes text[0..len) into c: 0, or -1 with *why saying what is wrong. */
int ts_cursor_decode(const char *text, size_t len, ts_cursor_t *c, const char **why);

#endif
