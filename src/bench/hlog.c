/* hlog.c — the --hdr histogram log: HdrHistogram's counts layout, its V2
 * encoding (ZigZag LEB128 counts, zero runs), zlib, base64, and the log's
 * text around it. Written from HdrHistogram's format (Java HdrHistogram,
 * HdrHistogram_c): readers check the cookies, the header fields and the
 * payload length, so every field below is as they expect. */
#include "hlog.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

/* 3 digits: values up to 2 * 10^3 need single-unit resolution, so a
 * bucket holds 2^ceil(log2(2000)) = 2048 sub-buckets, the lower half of
 * each bucket but the first being covered by the one before. Lowest
 * discernible value 1: unit magnitude 0. */
#define SUB_HALF_MAG 10
#define SUB_HALF (1 << SUB_HALF_MAG)
#define SUB_MASK ((int64_t)(2 * SUB_HALF - 1))

#define V2_ENCODING_COOKIE 0x1c849313u    /* 0x1c849303 | word size bits 0x10 */
#define V2_COMPRESSION_COOKIE 0x1c849314u /* 0x1c849304 | 0x10 */
#define ENCODING_HEADER 40                /* cookie .. conversion ratio */
#define COMPRESSION_HEADER 8              /* cookie, compressed length */
/* integerToDoubleValueConversionRatio: a reader multiplies each value by it;
 * ours are whole microseconds, written as they are. */
#define CONVERSION_RATIO 1.0

int32_t hlog_index_for(int64_t v)
{
    if (v < 0)
        v = 0;
    if (v > HLOG_HIGHEST)
        v = HLOG_HIGHEST;
    int bucket = 64 - __builtin_clzll((unsigned long long)(v | SUB_MASK)) - (SUB_HALF_MAG + 1);
    int64_t sub = v >> bucket;
    return ((bucket + 1) << SUB_HALF_MAG) + (int32_t)(sub - SUB_HALF);
}

static uint8_t *put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

/* 64-bit ZigZag, then LEB128 with at most 9 bytes: the 9th holds 8 bits. */
static uint8_t *put_zigzag(uint8_t *p, int64_t s)
{
    uint64_t v = ((uint64_t)s << 1) ^ (s < 0 ? UINT64_MAX : 0);
    for (int i = 0; i < 8 && v >= 0x80; i++, v >>= 7)
        *p++ = (uint8_t)(v | 0x80);
    *p++ = (uint8_t)v;
    return p;
}

static char *base64(const uint8_t *in, size_t n)
{
    size_t size = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(size);
    return out ? sodium_bin2base64(out, size, in, n, sodium_base64_VARIANT_ORIGINAL) : NULL;
}

char *hlog_encode(const int64_t *values, size_t n)
{
    /* Counts up to the largest value's index: trailing zeros are left out. */
    int32_t limit = 0;
    int64_t *counts = calloc((size_t)hlog_index_for(HLOG_HIGHEST) + 1, sizeof *counts);
    for (size_t i = 0; counts && i < n; i++) {
        int32_t k = hlog_index_for(values[i]);
        counts[k]++;
        limit = k + 1 > limit ? k + 1 : limit;
    }
    uint8_t *raw = malloc(ENCODING_HEADER + 9 * (size_t)limit);
    uLongf zlen = compressBound(ENCODING_HEADER + 9 * (uLong)limit);
    uint8_t *z = malloc(COMPRESSION_HEADER + zlen);
    char *out = NULL;
    if (!counts || !raw || !z)
        goto done;

    uint8_t *p = raw + ENCODING_HEADER;
    for (int32_t i = 0; i < limit;) {
        int64_t zeros = 0;
        while (i + zeros < limit && counts[i + zeros] == 0)
            zeros++;
        if (zeros > 1) /* a run of zeros is one negative count; a lone zero is 0 */
            p = put_zigzag(p, -zeros), i += (int32_t)zeros;
        else
            p = put_zigzag(p, counts[i++]);
    }
    size_t payload = (size_t)(p - raw - ENCODING_HEADER);
    double ratio = CONVERSION_RATIO;
    uint64_t ratio_bits;
    memcpy(&ratio_bits, &ratio, sizeof ratio_bits);
    uint8_t *h = raw;
    h = put_be(h, V2_ENCODING_COOKIE, 4);
    h = put_be(h, payload, 4);
    h = put_be(h, 0, 4); /* normalizingIndexOffset */
    h = put_be(h, HLOG_DIGITS, 4);
    h = put_be(h, HLOG_LOWEST, 8);
    h = put_be(h, (uint64_t)HLOG_HIGHEST, 8);
    put_be(h, ratio_bits, 8);

    if (compress(z + COMPRESSION_HEADER, &zlen, raw, ENCODING_HEADER + payload) != Z_OK)
        goto done;
    put_be(put_be(z, V2_COMPRESSION_COOKIE, 4), zlen, 4);
    out = base64(z, COMPRESSION_HEADER + zlen);
done:
    free(counts);
    free(raw);
    free(z);
    return out;
}

int hlog_write(FILE *f, double start_epoch_s, double length_s, const int64_t *values, size_t n)
{
    char *hist = hlog_encode(values, n);
    if (!hist)
        return -1;
    int64_t max = 0;
    for (size_t i = 0; i < n; i++)
        max = values[i] > max ? values[i] : max;
    /* Java's Date.toString() form, in UTC. */
    time_t t = (time_t)start_epoch_s;
    struct tm tm;
    char date[64] = "";
    if (gmtime_r(&t, &tm))
        strftime(date, sizeof date, "%a %b %d %H:%M:%S UTC %Y", &tm);
    /* Header lines stay under 128 bytes: HdrHistogram_c reads them so. */
    fprintf(f, "#[therasync-bench: values in microseconds, Interval_Max in milliseconds]\n");
    fprintf(f, "#[Histogram log format version 1.3]\n");
    fprintf(f, "#[StartTime: %.3f (seconds since epoch), %s]\n", start_epoch_s, date);
    fprintf(f, "#[BaseTime: %.3f (seconds since epoch)]\n", start_epoch_s);
    fprintf(f, "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\","
               "\"Interval_Compressed_Histogram\"\n");
    fprintf(f, "%.3f,%.3f,%.3f,%s\n", 0.0, length_s, (double)max / 1000.0, hist);
    free(hist);
    return ferror(f) ? -1 : 0;
}
