/* cache.c — the cache actor's message payloads (cache.h). */
#include "msgs/cache.h"

#include "therasync/json.h"
#include "therasync/util.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

ts_change_t *ts_change_new(uint16_t collection, const char *id, size_t id_len,
                           const char *old_text, size_t old_len, const char *new_text,
                           size_t new_len)
{
    size_t ol = old_text ? old_len : 0, nl = new_text ? new_len : 0;
    id_len = id_len > 255 ? 255 : id_len;
    ts_change_t *c = ts_xmalloc(sizeof *c + id_len + ol + nl + 1);
    c->next = NULL;
    c->collection = collection;
    c->origin = TS_CHANGE_LOCAL;
    c->has_old = old_text != NULL;
    c->has_new = new_text != NULL;
    c->id_len = (uint8_t)id_len;
    c->known = c->match = 0;
    c->old_len = (uint32_t)ol;
    c->new_len = (uint32_t)nl;
    memcpy(c->data, id, id_len);
    if (ol)
        memcpy(c->data + id_len, old_text, ol);
    if (nl)
        memcpy(c->data + id_len + ol, new_text, nl);
    c->data[id_len + ol + nl] = '\0';
    return c;
}

void ts_change_free_list(ts_change_t *head)
{
    while (head) {
        ts_change_t *next = head->next;
        free(head);
        head = next;
    }
}

void ts_readset_clear(ts_readset_t *rs)
{
    free(rs->field);
    free(rs->order);
    free(rs->key);
    free(rs->lo_str);
    free(rs->hi_str);
    free(rs->first_str);
    memset(rs, 0, sizeof *rs);
}

ts_cache_run_t *ts_cache_run_new(uint64_t token, uint16_t collection, cJSON *request)
{
    ts_cache_run_t *run = ts_xcalloc(1, sizeof *run);
    run->token = token;
    run->collection = collection;
    run->request = request;
    return run;
}

void ts_cache_run_free(ts_cache_run_t *run)
{
    if (!run)
        return;
    cJSON_Delete(run->request);
    free(run->err_message);
    free(run->result);
    ts_readset_clear(&run->read);
    for (size_t i = 0; i < run->nrows; i++)
        free(run->rows[i].str);
    free(run->rows);
    free(run);
}

void ts_selectors_free(ts_selectors_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->count; i++) {
        free(s->selectors[i].name);
        free(s->selectors[i].lower_bound);
        free(s->selectors[i].index);
        free(s->selectors[i].order);
        free(s->selectors[i].collection);
    }
    free(s->selectors);
    free(s);
}

void ts_notice_free_list(ts_notice_t *head)
{
    while (head) {
        ts_notice_t *next = head->next;
        free(head->route);
        free(head->payload);
        free(head);
        head = next;
    }
}

/* ---- rows shared with the front door ---- */

typedef struct {
    atomic_uint refs;
    char data[]; /* text, then key */
} row_block_t;

static row_block_t *block_of(const char *text)
{
    return (row_block_t *)(void *)((char *)text - offsetof(row_block_t, data));
}

char *ts_row_block_new(const char *text, size_t len, const char *key, size_t key_len)
{
    row_block_t *b = ts_xmalloc(sizeof *b + len + key_len + 1);
    atomic_init(&b->refs, 1);
    if (len)
        memcpy(b->data, text, len);
    if (key_len)
        memcpy(b->data + len, key, key_len);
    b->data[len + key_len] = '\0';
    return b->data;
}

void ts_row_block_ref(const char *text)
{
    atomic_fetch_add_explicit(&block_of(text)->refs, 1, memory_order_relaxed);
}

void ts_row_block_unref(const char *text)
{
    if (!text)
        return;
    row_block_t *b = block_of(text);
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

static void prefix_of(const ts_okey_t *k, uint64_t pre[2])
{
    unsigned char b[16] = {0};
    if (k->kind == TS_OKEY_STR && k->str)
        memcpy(b, k->str, k->len < 16 ? k->len : 16);
    pre[0] = pre[1] = 0;
    for (int i = 0; i < 8; i++) {
        pre[0] = pre[0] << 8 | b[i];
        pre[1] = pre[1] << 8 | b[8 + i];
    }
}

void ts_row_key_prefix(ts_row_t *r)
{
    prefix_of(&r->key, r->pre);
}

/* ts_okey_cmp(&r->key, v), settled by the prefixes when they differ: the
 * zero padding orders a shorter string first, as ts_okey_cmp does. */
static int row_key_cmp(const ts_row_t *r, const ts_okey_t *v, const uint64_t vpre[2])
{
    if (r->key.kind == TS_OKEY_STR && v->kind == TS_OKEY_STR) {
        if (r->pre[0] != vpre[0])
            return r->pre[0] < vpre[0] ? -1 : 1;
        if (r->pre[1] != vpre[1])
            return r->pre[1] < vpre[1] ? -1 : 1;
    }
    return ts_okey_cmp(&r->key, v);
}

/* First row whose order key is >= v. */
static size_t rows_from(const ts_row_t *rows, size_t n, const ts_okey_t *v)
{
    uint64_t vpre[2];
    prefix_of(v, vpre);
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (row_key_cmp(&rows[mid], v, vpre) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int ts_rows_slice(const ts_row_t *rows, size_t n, bool complete, const ts_okey_t *v, long total,
                  ts_buf_t *out)
{
    if (total <= 0 || total > 1000) /* no limit, or pages: not answered from rows */
        return -1;
    size_t p = rows_from(rows, n, v), avail = n - p;
    if ((long)avail < total && !complete)
        return -1;
    if (!out)
        return 0;
    size_t take = (long)avail < total ? avail : (size_t)total, bytes = 64;
    for (size_t i = p; i < p + take; i++)
        bytes += rows[i].len + 1;
    ts_buf_reserve(out, bytes);
    ts_buf_puts(out, "{\"items\":[");
    for (size_t i = p; i < p + take; i++) {
        if (i > p)
            ts_buf_puts(out, ",");
        ts_buf_append(out, rows[i].text, rows[i].len);
    }
    ts_buf_puts(out, "],\"stale\":false,\"cursor\":null}");
    return 0;
}

/* ---- query keys ---- */

static int by_name(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string ? x->string : "", y->string ? y->string : "");
}

/* item in a canonical form: objects with their keys sorted (skip: a member
 * of this object to leave out). */
static void canon(ts_buf_t *b, const cJSON *item, const char *skip)
{
    if (cJSON_IsObject(item)) {
        size_t n = 0;
        for (const cJSON *c = item->child; c; c = c->next)
            n++;
        const cJSON *small[16], **kids = n <= 16 ? small : ts_xmalloc(n * sizeof *kids);
        n = 0;
        for (const cJSON *c = item->child; c; c = c->next)
            if (!skip || !c->string || strcmp(c->string, skip) != 0)
                kids[n++] = c;
        qsort(kids, n, sizeof *kids, by_name);
        ts_buf_puts(b, "{");
        for (size_t i = 0; i < n; i++) {
            if (i)
                ts_buf_puts(b, ",");
            ts_buf_json_string(b, kids[i]->string, strlen(kids[i]->string));
            ts_buf_puts(b, ":");
            canon(b, kids[i], NULL);
        }
        ts_buf_puts(b, "}");
        if (kids != small)
            free(kids);
    } else if (cJSON_IsArray(item)) {
        ts_buf_puts(b, "[");
        for (const cJSON *c = item->child; c; c = c->next) {
            canon(b, c, NULL);
            if (c->next)
                ts_buf_puts(b, ",");
        }
        ts_buf_puts(b, "]");
    } else if (item) {
        ts_buf_json(b, item);
    }
}

void ts_query_key(ts_buf_t *b, const cJSON *request, const char *skip)
{
    ts_buf_reset(b);
    const char *coll = ts_json_string(request, "collection");
    const char *sel = ts_json_string(request, "selector");
    ts_buf_puts(b, coll ? coll : "");
    ts_buf_append(b, "\x01", 1);
    ts_buf_puts(b, sel ? sel : "");
    ts_buf_append(b, "\x01", 1);
    canon(b, cJSON_GetObjectItemCaseSensitive(request, "params"), skip);
    static const char *page[] = {"limit", "cursor"};
    for (int i = 0; i < 2; i++) {
        ts_buf_append(b, "\x01", 1);
        canon(b, cJSON_GetObjectItemCaseSensitive(request, page[i]), NULL);
    }
    if (skip) /* a lower-bound group: never the key of a query without the bound */
        ts_buf_append(b, "\x01\x02", 2);
}

/* ---- the front door's copies ---- */

void ts_hot_entry_clear(ts_hot_entry_t *e)
{
    free(e->lo.str);
    free(e->hi.str);
    for (size_t i = 0; i < e->nrows; i++)
        ts_row_block_unref(e->rows[i].text);
    free(e->rows);
    free(e->answer);
    memset(e, 0, sizeof *e);
}

void ts_hot_group_free(ts_hot_group_t *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        ts_hot_entry_clear(&g->entries[i]);
    free(g->entries);
    free(g->key);
    free(g->selector);
    free(g->bound);
    free(g);
}

void ts_hot_free(ts_hot_t *h)
{
    if (!h)
        return;
    while (h->groups) {
        ts_hot_group_t *next = h->groups->next;
        ts_hot_group_free(h->groups);
        h->groups = next;
    }
    free(h);
}
