/* test_index.c — reading a member out of JSON text, and the ordered
 * equality index the store keeps for selectors and ctx.find. */
#include "store/index.h"
#include "therasync/json.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static const char *field(const char *text, const char *key)
{
    static char out[256];
    const char *v;
    size_t n;
    if (!ts_json_text_field(text, strlen(text), key, strlen(key), &v, &n))
        return NULL;
    snprintf(out, sizeof out, "%.*s", (int)n, v);
    return out;
}

Test(json_text, finds_top_level_members_only)
{
    const char *t = "{\"a\":{\"b\":1,\"c\":[1,{\"d\":\"}\"}]},\"s\":\"x\\\"y\\\\\",\"b\":true,"
                    " \"n\" : -1.5e3 ,\"e\\u0041\":null}";
    cr_assert_str_eq(field(t, "a"), "{\"b\":1,\"c\":[1,{\"d\":\"}\"}]}");
    cr_assert_str_eq(field(t, "s"), "\"x\\\"y\\\\\"");
    cr_assert_str_eq(field(t, "b"), "true");
    cr_assert_str_eq(field(t, "n"), "-1.5e3");
    cr_assert_str_eq(field(t, "eA"), "null", "escaped key compared unescaped");
    cr_assert_null(field(t, "d"), "nested members are not top-level");
    cr_assert_null(field("[1,2]", "a"));
    cr_assert_null(field("{}", "a"));
}

static int doc_a, doc_b, doc_c, doc_d;

static const char *order_of(ts_index_t *idx, const char *key)
{
    static char out[64];
    ts_index_entry_t *const *e;
    size_t n = ts_index_bucket(idx, key, strlen(key), &e);
    size_t i = 0;
    for (; i < n && i < sizeof out - 1; i++)
        out[i] = e[i]->doc == &doc_a   ? 'a'
                 : e[i]->doc == &doc_b ? 'b'
                 : e[i]->doc == &doc_c ? 'c'
                                       : 'd';
    out[i] = '\0';
    return out;
}

Test(index, keeps_buckets_ordered_through_changes)
{
    ts_index_t *idx = ts_index_new("t", "at");
    const char *a = "{\"t\":\"x\",\"at\":\"2026-03-02T10:00:00Z\"}";
    const char *b = "{\"t\":\"x\",\"at\":\"2026-03-02T09:00:00Z\"}";
    const char *c = "{\"t\":\"y\",\"at\":\"2026-03-02T08:00:00Z\"}";
    const char *d = "{\"t\":1,\"at\":5}";
    ts_index_set(idx, &doc_a, a, strlen(a));
    ts_index_set(idx, &doc_b, b, strlen(b));
    ts_index_set(idx, &doc_c, c, strlen(c));
    ts_index_set(idx, &doc_d, d, strlen(d));
    cr_assert_str_eq(order_of(idx, "x"), "ba");
    cr_assert_str_eq(order_of(idx, "y"), "c");
    cr_assert_str_eq(order_of(idx, "1"), "d", "numbers are keyed by their JSON spelling");
    /* c moves into x, before b; then a leaves (deleted) */
    const char *c2 = "{\"t\":\"x\",\"at\":\"2026-03-02T07:00:00Z\"}";
    ts_index_set(idx, &doc_c, c2, strlen(c2));
    cr_assert_str_eq(order_of(idx, "x"), "cba");
    cr_assert_str_eq(order_of(idx, "y"), "");
    ts_index_set(idx, &doc_a, NULL, 0);
    cr_assert_str_eq(order_of(idx, "x"), "cb");
    cr_assert_eq(ts_index_size(idx), 3);
    /* bounds */
    ts_index_entry_t *const *e;
    size_t n = ts_index_bucket(idx, "x", 1, &e);
    ts_okey_t k = {.kind = TS_OKEY_STR, .str = "2026-03-02T08", .len = 13};
    cr_assert_eq(ts_index_lower_bound(e, n, &k), 1);
    k.str = "2026-03-02T07:00:00Z", k.len = 20;
    cr_assert_eq(ts_index_lower_bound(e, n, &k), 0);
    cr_assert_eq(ts_index_upper_bound(e, n, &k), 1);
    /* null / object values are not indexed */
    const char *none = "{\"t\":null,\"at\":\"z\"}";
    ts_index_set(idx, &doc_b, none, strlen(none));
    cr_assert_str_eq(order_of(idx, "x"), "c");
    ts_index_destroy(&idx);
    cr_assert_null(idx);
}

Test(index, bulk_load_sorts_once)
{
    ts_index_t *idx = ts_index_new("t", "n");
    ts_index_bulk(idx, true);
    const char *a = "{\"t\":\"x\",\"n\":3}", *b = "{\"t\":\"x\",\"n\":1}", *c = "{\"t\":\"x\"}";
    ts_index_set(idx, &doc_a, a, strlen(a));
    ts_index_set(idx, &doc_b, b, strlen(b));
    ts_index_set(idx, &doc_c, c, strlen(c));
    ts_index_bulk(idx, false);
    cr_assert_str_eq(order_of(idx, "x"), "cba", "missing first, then by number");
    ts_index_destroy(&idx);
}
