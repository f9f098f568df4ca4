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

/* Test documents: their ids run against their addresses (docs[0] has the
 * highest id), so an order by pointer cannot pass for an order by id. */
typedef struct {
    const char *id;
} tdoc_t;

static tdoc_t docs[] = {{"d"}, {"c"}, {"b"}, {"a"}, {"ab"}, {"abc"}, {"a"}};
static tdoc_t *const doc_a = &docs[3], *const doc_b = &docs[2], *const doc_c = &docs[1],
                     *const doc_d = &docs[0];

static const char *tdoc_id(void *arg, void *doc, size_t *len)
{
    (void)arg;
    const tdoc_t *d = doc;
    *len = strlen(d->id);
    return d->id;
}

static ts_index_t *new_index(const char *field, const char *order)
{
    return ts_index_new(field, order, tdoc_id, NULL);
}

static void set(ts_index_t *idx, tdoc_t *d, const char *text)
{
    ts_index_set(idx, d, text, text ? strlen(text) : 0);
}

/* The ids of a bucket in order, joined by ",". */
static const char *order_of(ts_index_t *idx, const char *key)
{
    static char out[256];
    ts_index_entry_t *const *e;
    size_t n = ts_index_bucket(idx, key, strlen(key), &e);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *id = ts_index_entry_id(idx, e[i], &len);
        cr_assert_eq(len, strlen(((tdoc_t *)e[i]->doc)->id));
        snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", i ? "," : "", id);
    }
    return out;
}

Test(index, keeps_buckets_ordered_through_changes)
{
    ts_index_t *idx = new_index("t", "at");
    const char *a = "{\"t\":\"x\",\"at\":\"2026-03-02T10:00:00Z\"}";
    const char *b = "{\"t\":\"x\",\"at\":\"2026-03-02T09:00:00Z\"}";
    const char *c = "{\"t\":\"y\",\"at\":\"2026-03-02T08:00:00Z\"}";
    const char *d = "{\"t\":1,\"at\":5}";
    set(idx, doc_a, a);
    set(idx, doc_b, b);
    set(idx, doc_c, c);
    set(idx, doc_d, d);
    cr_assert_str_eq(order_of(idx, "x"), "b,a");
    cr_assert_str_eq(order_of(idx, "y"), "c");
    cr_assert_str_eq(order_of(idx, "1"), "d", "numbers are keyed by their JSON spelling");
    /* c moves into x, before b; then a leaves (deleted) */
    const char *c2 = "{\"t\":\"x\",\"at\":\"2026-03-02T07:00:00Z\"}";
    set(idx, doc_c, c2);
    cr_assert_str_eq(order_of(idx, "x"), "c,b,a");
    cr_assert_str_eq(order_of(idx, "y"), "");
    set(idx, doc_a, NULL);
    cr_assert_str_eq(order_of(idx, "x"), "c,b");
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
    set(idx, doc_b, none);
    cr_assert_str_eq(order_of(idx, "x"), "c");
    ts_index_destroy(&idx);
    cr_assert_null(idx);
}

Test(index, bulk_load_sorts_once)
{
    ts_index_t *idx = new_index("t", "n");
    ts_index_bulk(idx, true);
    const char *a = "{\"t\":\"x\",\"n\":3}", *b = "{\"t\":\"x\",\"n\":1}", *c = "{\"t\":\"x\"}";
    set(idx, doc_a, a);
    set(idx, doc_b, b);
    set(idx, doc_c, c);
    ts_index_bulk(idx, false);
    cr_assert_str_eq(order_of(idx, "x"), "c,b,a", "missing first, then by number");
    ts_index_destroy(&idx);
}

/* Equal order keys go by id — bytes, then the shorter first — not by where
 * the documents happen to live, and stay so through changes, bulk loads and
 * unordered indexes; a document that leaves and comes back takes the same
 * place. That order is what a page's cursor names. */
Test(index, ties_go_by_id_bytes_then_length)
{
    const char *same = "{\"t\":\"x\",\"at\":\"2026-03-02T09:00:00Z\"}";
    const char *later = "{\"t\":\"x\",\"at\":\"2026-03-02T10:00:00Z\"}";
    for (int bulk = 0; bulk < 2; bulk++) {
        for (int ordered = 0; ordered < 2; ordered++) {
            ts_index_t *idx = new_index("t", ordered ? "at" : NULL);
            ts_index_bulk(idx, bulk);
            for (int i = 0; i < 6; i++) /* d, c, b, a, ab, abc: in address order */
                set(idx, &docs[i], same);
            ts_index_bulk(idx, false);
            cr_assert_str_eq(order_of(idx, "x"), "a,ab,abc,b,c,d", "bulk %d ordered %d", bulk,
                             ordered);
            set(idx, doc_b, later); /* b moves behind everyone when ordered */
            cr_assert_str_eq(order_of(idx, "x"), ordered ? "a,ab,abc,c,d,b" : "a,ab,abc,b,c,d");
            set(idx, doc_b, same);
            set(idx, &docs[4], NULL); /* "ab" leaves and comes back */
            cr_assert_str_eq(order_of(idx, "x"), "a,abc,b,c,d");
            set(idx, &docs[4], same);
            cr_assert_str_eq(order_of(idx, "x"), "a,ab,abc,b,c,d");
            ts_index_destroy(&idx);
        }
    }
}

/* A second document with an id already indexed (the store never has one;
 * the policy test tool may) still gets a place, and leaves cleanly. */
Test(index, a_repeated_id_keeps_its_own_place)
{
    const char *same = "{\"t\":\"x\",\"n\":1}";
    ts_index_t *idx = new_index("t", "n");
    set(idx, &docs[3], same);
    set(idx, &docs[6], same); /* also "a" */
    set(idx, doc_b, same);
    cr_assert_str_eq(order_of(idx, "x"), "a,a,b");
    set(idx, &docs[6], NULL);
    set(idx, &docs[3], "{\"t\":\"x\",\"n\":2}");
    cr_assert_str_eq(order_of(idx, "x"), "b,a");
    cr_assert_eq(ts_index_size(idx), 2);
    ts_index_destroy(&idx);
}

/* ts_index_seek finds where a page starts (after = true: strictly after the
 * last item) or ends (descending: before it), also when that item has gone. */
Test(index, seek_finds_a_position_by_order_key_and_id)
{
    ts_index_t *idx = new_index("t", "n");
    set(idx, doc_a, "{\"t\":\"x\",\"n\":1}");
    set(idx, doc_b, "{\"t\":\"x\",\"n\":2}");
    set(idx, doc_c, "{\"t\":\"x\",\"n\":2}");
    set(idx, doc_d, "{\"t\":\"x\",\"n\":3}");
    ts_index_entry_t *const *e;
    size_t n = ts_index_bucket(idx, "x", 1, &e);
    cr_assert_str_eq(order_of(idx, "x"), "a,b,c,d");
    ts_okey_t two = {.kind = TS_OKEY_NUM, .num = 2};
    cr_assert_eq(ts_index_seek(idx, e, n, &two, "b", 1, true), 2);
    cr_assert_eq(ts_index_seek(idx, e, n, &two, "b", 1, false), 1);
    cr_assert_eq(ts_index_seek(idx, e, n, &two, "bb", 2, true), 2, "a gone id between b and c");
    cr_assert_eq(ts_index_seek(idx, e, n, &two, "c", 1, true), 3);
    cr_assert_eq(ts_index_seek(idx, e, n, &two, "0", 1, true), 1, "before every id of 2");
    ts_okey_t none = {0}, text = {.kind = TS_OKEY_STR, .str = "", .len = 0};
    cr_assert_eq(ts_index_seek(idx, e, n, &none, "z", 1, true), 0, "missing sorts first");
    cr_assert_eq(ts_index_seek(idx, e, n, &text, "", 0, true), 4, "text sorts last");
    ts_index_destroy(&idx);
}

Test(index, okey_id_cmp_orders_keys_then_ids)
{
    ts_okey_t one = {.kind = TS_OKEY_NUM, .num = 1}, s = {.kind = TS_OKEY_STR, .str = "0", .len = 1};
    cr_assert_lt(ts_okey_id_cmp(&one, "z", 1, &s, "a", 1), 0, "a number before text");
    cr_assert_lt(ts_okey_id_cmp(&one, "a", 1, &one, "b", 1), 0);
    cr_assert_lt(ts_okey_id_cmp(&one, "a", 1, &one, "ab", 2), 0, "a prefix first");
    cr_assert_gt(ts_okey_id_cmp(&one, "b", 1, &one, "ab", 2), 0, "bytes before length");
    cr_assert_eq(ts_okey_id_cmp(&s, "ab", 2, &s, "ab", 2), 0);
}
