/* hlog_read.h — a small reader of HdrHistogram's histogram log (.hlog) for
 * tests: an interval line, base64, inflate, the V2 encoding's header and
 * its ZigZag LEB128 counts with zero runs, and the counts layout for any
 * digits and lowest value. Written apart from src/bench/hlog.c (from
 * HdrHistogram's format) so the tests check one against the other, and
 * checked itself on a log HdrHistogram wrote (tests/unit/test_hlog.c).
 * Header-only, static inline: only the tests that link zlib include it. */
#ifndef TS_TEST_HLOG_READ_H
#define TS_TEST_HLOG_READ_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <zlib.h>

typedef struct {
    uint32_t cookie;          /* the compression cookie */
    uint32_t encoding_cookie; /* inside the zlib stream */
    int32_t payload_len, normalizing_offset, digits;
    int64_t lowest, highest;
    double ratio;
    uint8_t *payload; /* the encoded counts, payload_len bytes */
    int unit_mag, sub_half_mag;
    int32_t counts_len; /* HdrHistogram's array length for lowest..highest */
    int64_t *counts;    /* counts_len of them */
    int64_t total;
    char error[128];
} th_hist_t;

static inline void th_hist_free(th_hist_t *h)
{
    free(h->payload);
    free(h->counts);
    h->payload = NULL, h->counts = NULL;
}

/* Decodes base64 text (up to NUL or newline) into a malloc'd buffer:
 * libsodium's decoder, not the bench's encoder's inverse written again. */
static inline uint8_t *th_b64_decode(const char *s, size_t *n)
{
    size_t len = strcspn(s, "\r\n");
    uint8_t *out = malloc(len * 3 / 4 + 3);
    if (out && sodium_base642bin(out, len * 3 / 4 + 3, s, len, NULL, n, NULL,
                                 sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(out);
        out = NULL;
    }
    return out;
}

static inline uint64_t th_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/* One ZigZag LEB128 value of at most 9 bytes (the 9th holds 8 bits). */
static inline const uint8_t *th_zigzag(const uint8_t *p, const uint8_t *end, int64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 9; i++) {
        if (p >= end)
            return NULL;
        uint8_t b = *p++;
        v |= (uint64_t)(i == 8 ? b : b & 0x7f) << (7 * i);
        if (i == 8 || !(b & 0x80))
            break;
    }
    *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
    return p;
}

/* The lowest value counted at index i (HdrHistogram's valueFromIndex). */
static inline int64_t th_hist_lowest_at(const th_hist_t *h, int32_t i)
{
    int32_t half = 1 << h->sub_half_mag;
    int32_t bucket = (i >> h->sub_half_mag) - 1;
    int64_t sub = (i & (half - 1)) + half;
    if (bucket < 0)
        sub -= half, bucket = 0;
    return sub << (bucket + h->unit_mag);
}

/* The highest value counted at index i. */
static inline int64_t th_hist_highest_at(const th_hist_t *h, int32_t i)
{
    int32_t bucket = (i >> h->sub_half_mag) - 1;
    return th_hist_lowest_at(h, i) + (INT64_C(1) << ((bucket < 0 ? 0 : bucket) + h->unit_mag)) - 1;
}

/* The index holding the rank-th smallest value (rank from 1), or -1. */
static inline int32_t th_hist_index_at_rank(const th_hist_t *h, int64_t rank)
{
    int64_t seen = 0;
    for (int32_t i = 0; i < h->counts_len; i++)
        if ((seen += h->counts[i]) >= (rank < 1 ? 1 : rank))
            return i;
    return -1;
}

static inline int th_hist_fail(th_hist_t *h, const char *why)
{
    snprintf(h->error, sizeof h->error, "%s", why);
    return -1;
}

/* Decodes an Interval_Compressed_Histogram (V2 compressed). 0, or -1 with
 * h->error saying why. */
static inline int th_hist_decode(const char *b64, th_hist_t *h)
{
    memset(h, 0, sizeof *h);
    size_t n;
    uint8_t *z = th_b64_decode(b64, &n);
    if (!z || n < 8) {
        free(z);
        return th_hist_fail(h, "bad base64 or too short");
    }
    h->cookie = (uint32_t)th_be(z, 4);
    uint64_t zlen = th_be(z + 4, 4);
    if (zlen != n - 8) {
        free(z);
        return th_hist_fail(h, "compressed length is not what follows it");
    }
    /* Inflate the whole stream, however long. */
    z_stream zs = {0};
    size_t cap = 4096, len = 0;
    uint8_t *raw = malloc(cap);
    int zrc = raw && inflateInit(&zs) == Z_OK ? Z_OK : Z_MEM_ERROR;
    zs.next_in = z + 8, zs.avail_in = (uInt)zlen;
    while (zrc == Z_OK) {
        if (len == cap) {
            uint8_t *grown = realloc(raw, cap *= 2);
            if (!grown)
                break;
            raw = grown;
        }
        zs.next_out = raw + len, zs.avail_out = (uInt)(cap - len);
        zrc = inflate(&zs, Z_NO_FLUSH);
        len = cap - zs.avail_out;
    }
    inflateEnd(&zs);
    free(z);
    if (zrc != Z_STREAM_END || len < 40) {
        free(raw);
        return th_hist_fail(h, "not a whole zlib stream of 40 bytes or more");
    }
    h->encoding_cookie = (uint32_t)th_be(raw, 4);
    h->payload_len = (int32_t)th_be(raw + 4, 4);
    h->normalizing_offset = (int32_t)th_be(raw + 8, 4);
    h->digits = (int32_t)th_be(raw + 12, 4);
    h->lowest = (int64_t)th_be(raw + 16, 8);
    h->highest = (int64_t)th_be(raw + 24, 8);
    uint64_t bits = th_be(raw + 32, 8);
    memcpy(&h->ratio, &bits, sizeof h->ratio);
    if (h->payload_len < 0 || (size_t)h->payload_len != len - 40 || h->digits < 1 ||
        h->digits > 5 || h->lowest < 1 || h->highest < 2 * h->lowest) {
        free(raw);
        return th_hist_fail(h, "bad encoding header");
    }
    h->payload = malloc((size_t)h->payload_len + 1);
    if (h->payload)
        memcpy(h->payload, raw + 40, (size_t)h->payload_len);
    free(raw);

    /* HdrHistogram's layout: 2^(sub_half_mag + 1) sub-buckets covering
     * 2 * 10^digits at unit resolution; buckets double until highest. */
    while ((h->lowest >> (h->unit_mag + 1)) > 0)
        h->unit_mag++;
    int64_t single = 2 * (int64_t)pow(10, h->digits);
    int mag = 0;
    while ((INT64_C(1) << mag) < single)
        mag++;
    h->sub_half_mag = mag - 1;
    int32_t buckets = 1;
    for (int64_t top = INT64_C(1) << (mag + h->unit_mag); top <= h->highest; top <<= 1)
        buckets++;
    h->counts_len = (buckets + 1) << h->sub_half_mag;
    h->counts = calloc((size_t)h->counts_len, sizeof *h->counts);
    if (!h->payload || !h->counts)
        return th_hist_fail(h, "out of memory");

    const uint8_t *p = h->payload, *end = h->payload + h->payload_len;
    int32_t i = 0;
    while (p < end) {
        int64_t v;
        if (!(p = th_zigzag(p, end, &v)))
            return th_hist_fail(h, "truncated varint");
        if (v < 0 ? i - v > h->counts_len : i >= h->counts_len)
            return th_hist_fail(h, "counts beyond the highest trackable value");
        if (v < 0)
            i += (int32_t)-v; /* a run of -v zero counts */
        else
            h->counts[i++] = v, h->total += v;
    }
    return 0;
}

/* An interval line "start,length,max,histogram": 0, or -1. */
static inline int th_hlog_line(const char *line, double *start, double *length, double *max,
                               const char **b64)
{
    int off = 0;
    if (sscanf(line, "%lf,%lf,%lf,%n", start, length, max, &off) != 3 || off == 0)
        return -1;
    *b64 = line + off;
    return 0;
}

#endif
