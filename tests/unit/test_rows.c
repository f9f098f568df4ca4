/* test_rows.c — the rows a lower-bound answer is sliced from (msgs/cache.c),
 * shared by the cache and the front door's copies: the slice for any bound
 * value equals a plain scan, whatever the keys (numbers, strings with long
 * common prefixes, NUL bytes, prefixes of each other), and the blocks that
 * hold the rows live as long as their last holder. */
#include "msgs/cache.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;

static unsigned next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng >> 11);
}

/* A random key: a number, or a string over a small alphabet (NUL among it)
 * after a random share of a long common prefix, so that comparisons must
 * go past the first 16 bytes and prefixes of each other occur. */
static ts_okey_t random_key(char *buf)
{
    if (next() % 8 == 0)
        return (ts_okey_t){.kind = TS_OKEY_NUM, .num = (double)(next() % 50) - 25};
    static const char common[] = "2026-03-07T00:15:00.000Z";
    size_t p = next() % (sizeof common), n = p + next() % 4;
    memcpy(buf, common, p);
    for (size_t i = p; i < n; i++)
        buf[i] = "\0a0Z"[next() % 4];
    return (ts_okey_t){.kind = TS_OKEY_STR, .str = buf, .len = (uint32_t)n};
}

static int by_key(const void *a, const void *b)
{
    return ts_okey_cmp(&((const ts_row_t *)a)->key, &((const ts_row_t *)b)->key);
}

/* What the slice must be: the first `total` rows with key >= v, scanning. */
static void scan(const ts_row_t *rows, size_t n, const ts_okey_t *v, long total, ts_buf_t *out)
{
    ts_buf_puts(out, "{\"items\":[");
    long took = 0;
    for (size_t i = 0; i < n && took < total; i++)
        if (ts_okey_cmp(&rows[i].key, v) >= 0) {
            if (took++)
                ts_buf_puts(out, ",");
            ts_buf_append(out, rows[i].text, rows[i].len);
        }
    ts_buf_puts(out, "],\"stale\":false,\"cursor\":null}");
}

Test(rows, a_slice_equals_a_scan_for_every_kind_of_key)
{
    for (int round = 0; round < 300; round++) {
        size_t n = next() % 40;
        ts_row_t rows[40];
        char keys[40][32];
        for (size_t i = 0; i < n; i++) {
            ts_okey_t k = random_key(keys[i]);
            char text[32];
            int len = snprintf(text, sizeof text, "{\"id\":\"r%zu\"}", i);
            rows[i].text = ts_row_block_new(text, (size_t)len, k.str, k.len);
            rows[i].len = (uint32_t)len;
            rows[i].key = k;
            if (k.kind == TS_OKEY_STR)
                rows[i].key.str = rows[i].text + len; /* in its block */
            ts_row_key_prefix(&rows[i]);
        }
        qsort(rows, n, sizeof *rows, by_key);
        for (int q = 0; q < 50; q++) {
            char vbuf[32];
            ts_okey_t v = random_key(vbuf);
            long total = 1 + (long)(next() % 5);
            ts_buf_t got = {0}, want = {0};
            cr_assert_eq(ts_rows_slice(rows, n, true, &v, total, &got), 0);
            scan(rows, n, &v, total, &want);
            cr_assert_eq(got.len, want.len, "round %d: %.*s vs %.*s", round, (int)got.len,
                         got.data, (int)want.len, want.data);
            cr_assert(memcmp(got.data, want.data, got.len) == 0, "round %d", round);
            ts_buf_free(&got);
            ts_buf_free(&want);
        }
        for (size_t i = 0; i < n; i++)
            ts_row_block_unref(rows[i].text);
    }
}

Test(rows, rows_that_end_too_soon_answer_nothing)
{
    ts_row_t r = {.key = {.kind = TS_OKEY_NUM, .num = 1}};
    r.text = ts_row_block_new("{\"id\":\"a\"}", 10, NULL, 0);
    r.len = 10;
    ts_row_key_prefix(&r);
    ts_okey_t v = {.kind = TS_OKEY_NUM, .num = 0};
    ts_buf_t b = {0};
    cr_assert_eq(ts_rows_slice(&r, 1, false, &v, 2, &b), -1, "two rows asked, one known");
    cr_assert_eq(ts_rows_slice(&r, 1, true, &v, 2, &b), 0, "the bucket ends: one is all");
    cr_assert_eq(ts_rows_slice(&r, 1, true, &v, 0, &b), -1, "no limit: not from rows");
    ts_buf_free(&b);
    ts_row_block_unref(r.text);
}

Test(rows, a_block_lives_while_a_copy_holds_it)
{
    char *text = ts_row_block_new("{\"id\":\"a\"}", 10, "key", 3);
    ts_row_block_ref(text);   /* a copy for the front door */
    ts_row_block_unref(text); /* the cache drops its row */
    cr_assert(memcmp(text, "{\"id\":\"a\"}key", 13) == 0, "still readable by the copy");
    ts_row_block_unref(text); /* the copy goes: freed (ASan would see a leak otherwise) */
}
