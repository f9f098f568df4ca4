/* test_hlog.c — the bench's HdrHistogram histogram log (src/bench/hlog.c)
 * against the tests' own reader (tests/support/hlog_read.h), and that
 * reader against a log HdrHistogram itself wrote (jHiccup, V2 encoding):
 * tests/fixtures/hlog/jHiccup-2.0.7S-excerpt.hlog. The figures expected of
 * that excerpt were read from it with HdrHistogram_c 0.11.10 (hdr_log_read,
 * total_count, hdr_max, hdr_value_at_percentile), not with this reader. */
#include "../../src/bench/hlog.h"
#include "../support/engine.h"
#include "../support/hlog_read.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* HdrHistogram's value at percentile p: the count at rank
 * (int64)(p% of total + 0.5), reported as its bucket's highest value. */
static int64_t hdr_value_at(const th_hist_t *h, double p)
{
    int32_t i = th_hist_index_at_rank(h, (int64_t)(p / 100.0 * (double)h->total + 0.5));
    cr_assert_geq(i, 0);
    return th_hist_highest_at(h, i);
}

static int32_t max_index(const th_hist_t *h)
{
    int32_t last = -1;
    for (int32_t i = 0; i < h->counts_len; i++)
        if (h->counts[i])
            last = i;
    return last;
}

Test(hlog, the_reader_decodes_a_log_hdrhistogram_wrote)
{
    const char *path = ts_source_path("tests/fixtures/hlog/jHiccup-2.0.7S-excerpt.hlog");
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    static const struct {
        double start, max_ms;
        int64_t total, max, p50, p99;
    } want[] = {
        {0.127, 2.769, 741, 2768895, 344063, 409599},
        {48.131, 1803.551, 1909, 1803550719, 847249407, 1786773503},
        {61.131, 26.083, 784, 26083327, 311295, 18087935},
    };
    char line[4096];
    int version_minor = -1, k = 0;
    double start_time = 0;
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "#[Histogram log format version 1.%d]", &version_minor);
        sscanf(line, "#[StartTime: %lf", &start_time);
        if (line[0] == '#' || line[0] == '"')
            continue;
        cr_assert_lt(k, 3, "three intervals");
        double start, len, max_ms;
        const char *b64;
        cr_assert_eq(th_hlog_line(line, &start, &len, &max_ms, &b64), 0, "%s", line);
        th_hist_t h;
        cr_assert_eq(th_hist_decode(b64, &h), 0, "line %d: %s", k, h.error);
        cr_assert_eq(h.cookie, 0x1c849314u);
        cr_assert_eq(h.encoding_cookie, 0x1c849313u);
        cr_assert_eq(h.digits, 2);
        cr_assert_eq(h.lowest, 20000); /* jHiccup: ns, 20 µs resolution: unit magnitude 14 */
        cr_assert_eq(h.unit_mag, 14);
        cr_assert_eq(h.highest, INT64_C(3600000000000));
        cr_assert_eq(h.normalizing_offset, 0);
        cr_assert_float_eq(h.ratio, 1.0, 0);
        cr_assert_float_eq(start, want[k].start, 1e-9);
        cr_assert_float_eq(max_ms, want[k].max_ms, 1e-9);
        cr_assert_eq(h.total, want[k].total, "line %d: total %lld", k, (long long)h.total);
        int32_t top = max_index(&h);
        cr_assert_eq(th_hist_highest_at(&h, top), want[k].max, "line %d", k);
        cr_assert_eq(hdr_value_at(&h, 50), want[k].p50, "line %d", k);
        cr_assert_eq(hdr_value_at(&h, 99), want[k].p99, "line %d", k);
        /* Interval_Max (ns / 10^6) falls in the top bucket */
        cr_assert_geq(max_ms * 1e6, (double)th_hist_lowest_at(&h, top) - 1e3, "line %d", k);
        cr_assert_leq(max_ms * 1e6, (double)th_hist_highest_at(&h, top) + 1e3, "line %d", k);
        th_hist_free(&h);
        k++;
    }
    fclose(f);
    cr_assert_eq(k, 3);
    cr_assert_eq(version_minor, 2);
    cr_assert_float_eq(start_time, 1441812279.474, 1e-6);
}

/* HdrHistogram's layout at 3 digits from 1: 2048 values at unit
 * resolution, then buckets of 1024 sub-buckets, each twice as wide. */
Test(hlog, the_index_layout_is_hdrhistograms)
{
    cr_assert_eq(hlog_index_for(0), 0);
    cr_assert_eq(hlog_index_for(1), 1);
    cr_assert_eq(hlog_index_for(2047), 2047);
    cr_assert_eq(hlog_index_for(2048), 2048);
    cr_assert_eq(hlog_index_for(2049), 2048);
    cr_assert_eq(hlog_index_for(2050), 2049);
    cr_assert_eq(hlog_index_for(4095), 3071);
    cr_assert_eq(hlog_index_for(4096), 3072);
    cr_assert_eq(hlog_index_for(-5), 0, "clamped at 0");
    cr_assert_eq(hlog_index_for(HLOG_HIGHEST + 12345), hlog_index_for(HLOG_HIGHEST),
                 "clamped at the highest trackable value");
    /* the reader's layout, from an encoded header, agrees at every scale */
    int64_t one = 1;
    char *b64 = hlog_encode(&one, 1);
    cr_assert_not_null(b64);
    th_hist_t h;
    cr_assert_eq(th_hist_decode(b64, &h), 0, "%s", h.error);
    cr_assert_eq(h.counts_len, 23552, "22 buckets + 1, half of 2048 each");
    cr_assert_lt(hlog_index_for(HLOG_HIGHEST), h.counts_len);
    for (int64_t v = 1; v <= HLOG_HIGHEST; v = v * 3 + 1) {
        int32_t i = hlog_index_for(v);
        cr_assert_leq(th_hist_lowest_at(&h, i), v, "v %lld", (long long)v);
        cr_assert_geq(th_hist_highest_at(&h, i), v, "v %lld", (long long)v);
        /* 3 significant digits: the bucket is at most v/1024 wide */
        int64_t width = th_hist_highest_at(&h, i) - th_hist_lowest_at(&h, i) + 1;
        cr_assert_leq(width, v < 2048 ? 1 : v / 1024, "v %lld", (long long)v);
    }
    th_hist_free(&h);
    free(b64);
}

/* Counts 0,1,0,1 are 0 (a lone zero), 1, 0, 1; five zeros then a 1 are
 * -5, 1; ZigZag makes n 2n and -n 2n-1; trailing zeros are left out. */
Test(hlog, zero_runs_and_zigzag_are_as_hdrhistogram_encodes_them)
{
    th_hist_t h;
    char *b64 = hlog_encode((const int64_t[]){1, 3}, 2);
    cr_assert_eq(th_hist_decode(b64, &h), 0, "%s", h.error);
    cr_assert_eq(h.payload_len, 4);
    cr_assert_arr_eq(h.payload, ((uint8_t[]){0x00, 0x02, 0x00, 0x02}), 4);
    th_hist_free(&h);
    free(b64);

    b64 = hlog_encode((const int64_t[]){5, 5, 5}, 3);
    cr_assert_eq(th_hist_decode(b64, &h), 0, "%s", h.error);
    cr_assert_eq(h.payload_len, 2);
    cr_assert_arr_eq(h.payload, ((uint8_t[]){0x09, 0x06}), 2);
    th_hist_free(&h);
    free(b64);

    /* no values: an empty payload, a total of 0 */
    b64 = hlog_encode(NULL, 0);
    cr_assert_eq(th_hist_decode(b64, &h), 0, "%s", h.error);
    cr_assert_eq(h.payload_len, 0);
    cr_assert_eq(h.total, 0);
    th_hist_free(&h);
    free(b64);
}

/* Every value lands in the bucket that holds it, with counts of many
 * varint bytes, long zero runs and values clamped at one hour. */
Test(hlog, values_round_trip_through_the_reader)
{
    enum { N = 20000 };
    int64_t *v = malloc(N * sizeof *v);
    cr_assert_not_null(v);
    uint32_t x = 12345;
    for (size_t i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        v[i] = i % 2 ? 500 : (int64_t)(x >> 8) % 100000 + 1; /* 10,000 at 500: a 2-byte count */
    }
    v[0] = 0, v[2] = HLOG_HIGHEST * 4, v[4] = INT64_C(1) << 33; /* the odd ones stay 500 */
    char *b64 = hlog_encode(v, N);
    cr_assert_not_null(b64);
    th_hist_t h;
    cr_assert_eq(th_hist_decode(b64, &h), 0, "%s", h.error);
    cr_assert_eq(h.cookie, 0x1c849314u);
    cr_assert_eq(h.encoding_cookie, 0x1c849313u);
    cr_assert_eq(h.digits, 3);
    cr_assert_eq(h.lowest, 1);
    cr_assert_eq(h.highest, HLOG_HIGHEST);
    cr_assert_eq(h.unit_mag, 0);
    cr_assert_float_eq(h.ratio, 1.0, 0);
    cr_assert_eq(h.total, N);
    cr_assert_eq(h.counts[0], 1);
    cr_assert_geq(h.counts[500], 10000);
    cr_assert_eq(th_hist_highest_at(&h, max_index(&h)), HLOG_HIGHEST | 0x1fffff,
                 "the clamped values' bucket tops the histogram");
    for (int32_t i = 0; i < h.counts_len; i++) {
        if (!h.counts[i])
            continue;
        int64_t lo = th_hist_lowest_at(&h, i), hi = th_hist_highest_at(&h, i), in = 0;
        for (size_t j = 0; j < N; j++) {
            int64_t c = v[j] > HLOG_HIGHEST ? HLOG_HIGHEST : v[j];
            in += c >= lo && c <= hi;
        }
        cr_assert_eq(h.counts[i], in, "index %d [%lld, %lld]", i, (long long)lo, (long long)hi);
    }
    th_hist_free(&h);
    free(b64);
    free(v);
}

/* The log's text: header lines as Java's HistogramLogWriter writes them
 * (each under the 128 bytes HdrHistogram_c reads a header line into),
 * then one interval with Interval_Max in milliseconds. */
Test(hlog, the_log_has_the_header_and_one_interval)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    cr_assert_not_null(f);
    int64_t v[] = {1500, 250, 987654};
    cr_assert_eq(hlog_write(f, 1796558515.581, 2.5, v, 3), 0);
    fclose(f);
    const char *want[] = {
        "#[therasync-bench: values in microseconds, Interval_Max in milliseconds]",
        "#[Histogram log format version 1.3]",
        "#[StartTime: 1796558515.581 (seconds since epoch), Sun Dec 06 12:01:55 UTC 2026]",
        "#[BaseTime: 1796558515.581 (seconds since epoch)]",
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"",
        "0.000,2.500,987.654,HISTF"};
    char *line = text;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "line %zu", i);
        cr_assert_eq(strncmp(line, want[i], strlen(want[i])), 0, "line %zu: %.*s", i,
                     (int)(nl - line), line);
        if (line[0] == '#' || line[0] == '"')
            cr_assert_lt(nl - line + 1, 128);
        line = nl + 1;
    }
    cr_assert_str_eq(line, "", "nothing after the interval");
    double start, len, max;
    const char *b64;
    cr_assert_eq(th_hlog_line(strstr(text, "0.000,"), &start, &len, &max, &b64), 0);
    th_hist_t h;
    cr_assert_eq(th_hist_decode(b64, &h), 0, "%s", h.error);
    cr_assert_eq(h.total, 3);
    th_hist_free(&h);
    free(text);
}
