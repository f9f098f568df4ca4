/* page.c — the page size and cursor of `query` (see page.h). */
#include "store/page.h"

#include "therasync/json.h"
#include "therasync/sha256.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CURSOR_VERSION 1

/* ---- digest ---- */

static int member_cmp(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* item as JSON with object members in name order (nesting is bounded by
 * cJSON's parser). */
static void canonical(ts_buf_t *b, const cJSON *item)
{
    if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
        bool obj = cJSON_IsObject(item);
        size_t n = (size_t)cJSON_GetArraySize(item), i = 0;
        const cJSON **kids = ts_xmalloc((n ? n : 1) * sizeof *kids);
        for (const cJSON *k = item->child; k && i < n; k = k->next)
            kids[i++] = k;
        if (obj)
            qsort(kids, i, sizeof *kids, member_cmp);
        ts_buf_puts(b, obj ? "{" : "[");
        for (size_t k = 0; k < i; k++) {
            if (k)
                ts_buf_puts(b, ",");
            if (obj) {
                ts_buf_json_string(b, kids[k]->string, strlen(kids[k]->string));
                ts_buf_puts(b, ":");
            }
            canonical(b, kids[k]);
        }
        ts_buf_puts(b, obj ? "}" : "]");
        free(kids);
    } else if (item) {
        ts_buf_json(b, item);
    } else {
        ts_buf_puts(b, "null"); /* absent */
    }
}

void ts_page_digest(const char *kind, const cJSON *selector, const cJSON *params,
                    uint8_t out[TS_PAGE_DIGEST])
{
    ts_buf_t b = {0};
    ts_buf_puts(&b, kind);
    ts_buf_puts(&b, "\n");
    canonical(&b, selector);
    ts_buf_puts(&b, "\n");
    canonical(&b, params);
    ts_sha256_t ctx;
    uint8_t full[32];
    ts_sha256_init(&ctx);
    ts_sha256_update(&ctx, b.data ? b.data : "", b.len);
    ts_sha256_final(&ctx, full);
    memcpy(out, full, TS_PAGE_DIGEST);
    ts_buf_free(&b);
}

/* ---- the cursor's bytes ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int ts_cursor_append(ts_buf_t *b, const uint8_t digest[TS_PAGE_DIGEST], uint32_t returned,
                     const ts_okey_t *key, const char *id, size_t id_len)
{
    if (id_len == 0 || id_len > 255)
        return -1; /* the store's ids are 1..64 */
    size_t klen = key->kind == TS_OKEY_NUM ? 8 : key->kind == TS_OKEY_STR ? 4 + key->len : 0;
    size_t n = 1 + TS_PAGE_DIGEST + 4 + 1 + klen + 1 + id_len;
    uint8_t *raw = ts_xmalloc(n), *p = raw;
    char *hex = ts_xmalloc(2 * n + 1);
    *p++ = CURSOR_VERSION;
    memcpy(p, digest, TS_PAGE_DIGEST);
    p += TS_PAGE_DIGEST;
    put_u32(p, returned);
    p += 4;
    *p++ = key->kind;
    if (key->kind == TS_OKEY_NUM) {
        uint64_t bits;
        memcpy(&bits, &key->num, 8);
        put_u32(p, (uint32_t)(bits >> 32));
        put_u32(p + 4, (uint32_t)bits);
        p += 8;
    } else if (key->kind == TS_OKEY_STR) {
        put_u32(p, key->len);
        memcpy(p + 4, key->str, key->len);
        p += 4 + key->len;
    }
    *p++ = (uint8_t)id_len;
    memcpy(p, id, id_len);
    ts_hex(raw, n, hex);
    int rc = ts_buf_puts(b, "\"");
    rc |= ts_buf_append(b, hex, 2 * n);
    rc |= ts_buf_puts(b, "\"");
    free(raw);
    free(hex);
    return rc ? -1 : 0;
}

int ts_cursor_decode(const char *text, size_t len, ts_cursor_t *c, const char **why)
{
    memset(c, 0, sizeof *c);
    *why = "cursor is malformed (not the hex text of a cursor)";
    if (len % 2 || len < 2 * (1 + TS_PAGE_DIGEST + 4 + 1 + 2))
        return -1;
    size_t n = len / 2;
    uint8_t *raw = ts_xmalloc(n);
    for (size_t i = 0; i < n; i++) {
        int hi = ts_hex_value(text[2 * i]), lo = ts_hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(raw);
            return -1;
        }
        raw[i] = (uint8_t)(hi << 4 | lo);
    }
    const uint8_t *p = raw, *end = raw + n;
    *why = "cursor is malformed (a field runs past its end)";
    if (*p++ != CURSOR_VERSION) {
        *why = "cursor is from another version of the engine";
        goto bad;
    }
    memcpy(c->digest, p, TS_PAGE_DIGEST);
    p += TS_PAGE_DIGEST;
    c->returned = get_u32(p);
    p += 4;
    c->key.kind = *p++;
    if (c->key.kind == TS_OKEY_NUM) {
        if (end - p < 8)
            goto bad;
        uint64_t bits = (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
        memcpy(&c->key.num, &bits, 8);
        p += 8;
        if (!isfinite(c->key.num)) {
            *why = "cursor is malformed (its order value is not a finite number)";
            goto bad;
        }
    } else if (c->key.kind == TS_OKEY_STR) {
        if (end - p < 4 || (size_t)(end - p - 4) < get_u32(p))
            goto bad;
        c->key.len = get_u32(p);
        c->key.str = ts_memdup((const char *)p + 4, c->key.len);
        p += 4 + c->key.len;
    } else if (c->key.kind != TS_OKEY_NONE) {
        *why = "cursor is malformed (unknown kind of order value)";
        goto bad;
    }
    if (end - p < 1 || *p == 0 || (size_t)(end - p - 1) != *p) {
        *why = "cursor is malformed (its id does not end it)";
        goto bad;
    }
    c->id_len = *p;
    memcpy(c->id, p + 1, c->id_len);
    free(raw);
    return 0;
bad:
    free(raw);
    free(c->key.str);
    memset(c, 0, sizeof *c);
    return -1;
}

/* ---- params ---- */

static const uint8_t *page_digest(ts_page_t *page)
{
    if (!page->have_digest)
        ts_page_digest(page->kind, page->selector, page->params, page->digest);
    page->have_digest = true;
    return page->digest;
}

int ts_page_params(ts_call_t *call, long default_limit, const char *kind,
                   const cJSON *selector, const cJSON *params, ts_page_t *page)
{
    memset(page, 0, sizeof *page);
    page->limit = default_limit;
    page->kind = kind;
    page->selector = selector;
    page->params = params;
    const cJSON *limit = cJSON_GetObjectItemCaseSensitive(call->params, "limit");
    const cJSON *cursor = cJSON_GetObjectItemCaseSensitive(call->params, "cursor");
    if (limit && !cJSON_IsNull(limit)) {
        double v = cJSON_IsNumber(limit) ? limit->valuedouble : 0;
        if (!cJSON_IsNumber(limit) || !isfinite(v) || v != floor(v) || v < 1) {
            ts_call_fail(call, TS_E_INVALID_PARAMS, "limit must be a positive integer (1..%d)",
                         TS_PAGE_MAX);
            return -1;
        }
        if (v > TS_PAGE_MAX) {
            ts_call_fail(call, TS_E_INVALID_PARAMS, "limit must be at most %d", TS_PAGE_MAX);
            return -1;
        }
        page->limit = (long)v;
    }
    if (!cursor || cJSON_IsNull(cursor))
        return 0;
    const char *why;
    if (!cJSON_IsString(cursor)) {
        ts_call_fail(call, TS_E_INVALID_PARAMS,
                     "cursor must be a string from a previous answer, or null");
        return -1;
    }
    if (ts_cursor_decode(cursor->valuestring, strlen(cursor->valuestring), &page->cursor,
                         &why) != 0) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "%s", why);
        return -1;
    }
    if (memcmp(page->cursor.digest, page_digest(page), TS_PAGE_DIGEST) != 0) {
        ts_page_free(page);
        ts_call_fail(call, TS_E_INVALID_PARAMS,
                     "cursor does not belong to this query (other selector or params)");
        return -1;
    }
    page->has_cursor = true;
    return 0;
}

int ts_page_append_cursor(ts_buf_t *b, ts_page_t *page, long count, const ts_okey_t *key,
                          const char *id, size_t id_len)
{
    uint64_t returned = (page->has_cursor ? page->cursor.returned : 0) + (uint64_t)count;
    if (returned > UINT32_MAX)
        return -1; /* beyond any collection the store holds */
    return ts_cursor_append(b, page_digest(page), (uint32_t)returned, key, id, id_len);
}

void ts_page_free(ts_page_t *page)
{
    free(page->cursor.key.str);
    page->cursor.key.str = NULL;
}
