/* util.h — small helpers shared by every module: clocks, ids, a growable
 * byte buffer, strict number parsing. */
#ifndef THERASYNC_UTIL_H
#define THERASYNC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Monotonic clock in microseconds (for latencies and timers). */
int64_t ts_mono_us(void);
/* Wall clock in milliseconds since the Unix epoch. */
int64_t ts_wall_ms(void);
/* Formats wall_ms as RFC 3339 UTC with milliseconds: 2026-01-01T00:00:00.000Z. */
void ts_rfc3339(int64_t wall_ms, char out[32]);
/* Parses RFC 3339 (Z or ±hh:mm offset, optional fraction) into wall ms.
 * Returns 0, or -1 when the text is not RFC 3339. */
int ts_parse_rfc3339(const char *text, int64_t *wall_ms);

/* Writes a UUIDv7 (RFC 9562) as 36 chars + NUL. Ids from one process are
 * strictly increasing, so they sort by creation time. Thread-safe. */
void ts_uuidv7(char out[37]);
/* The same UUIDv7 as 16 bytes, and 16 bytes as the usual 36-character text
 * (lowercase hex): what the store keeps and prints of mutation ids. */
void ts_uuidv7_bytes(uint8_t out[16]);
void ts_uuid_format(const uint8_t in[16], char out[37]);

/* A document id: 1–64 of [A-Za-z0-9_-]. */
bool ts_valid_id(const char *text, size_t len);
/* Eight bytes at a time (SWAR, little-endian): the bytes of w equal to c,
 * and the bytes below c, as 0x80 bits. The lowest bit set is exactly the
 * first such byte; bits above it may be false (borrows), so use the lowest. */
static inline uint64_t ts_word_eq(uint64_t w, unsigned char c)
{
    uint64_t x = w ^ (0x0101010101010101ull * c);
    return (x - 0x0101010101010101ull) & ~x & 0x8080808080808080ull;
}
static inline uint64_t ts_word_below(uint64_t w, unsigned char c)
{
    return (w - 0x0101010101010101ull * c) & ~w & 0x8080808080808080ull;
}

/* How many bytes from p on (before end) a JSON string holds as they are:
 * none of them is '"', '\\' or below 0x20. Sixteen bytes a step with SSE2
 * (every x86-64 has it), else eight; the front door and the store scan
 * every string of every write with it. */
static inline size_t ts_json_plain_len(const char *p, const char *end)
{
    const char *start = p;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i control = _mm_set1_epi8(0x1f);
    while (end - start >= 16) {
        const char *q = end - p >= 16 ? p : end - 16; /* the last step overlaps what was seen */
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
        __m128i hits = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                    _mm_cmpeq_epi8(_mm_max_epu8(v, control), control));
        unsigned mask = (unsigned)_mm_movemask_epi8(hits) >> (p - q); /* from p on */
        if (mask)
            return (size_t)(p - start) + (unsigned)__builtin_ctz(mask);
        if (q + 16 >= end)
            return (size_t)(end - start);
        p = q + 16;
    }
#endif
    for (; end - p >= 8; p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t hits = ts_word_eq(w, '"') | ts_word_eq(w, '\\') | ts_word_below(w, 0x20);
        if (hits)
            return (size_t)(p - start) + (unsigned)__builtin_ctzll(hits) / 8;
    }
    while (p < end && (unsigned char)*p >= 0x20 && *p != '"' && *p != '\\')
        p++;
    return (size_t)(p - start);
}

/* Writes n bytes as 2n lowercase hex digits and a NUL into out. */
void ts_hex(const void *bytes, size_t n, char *out);
/* The value of one hex digit (either case), or -1. */
static inline int ts_hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Whether the C string name is the len bytes at key (which hold no NUL).
 * Most names differ from a key in their first byte, so that is looked at
 * first. */
static inline bool ts_name_is(const char *name, const char *key, size_t len)
{
    return (len == 0 || name[0] == key[0]) && strncmp(name, key, len) == 0 && name[len] == '\0';
}

/* Strict base-10 parse of the whole string; 0 or -1. */
int ts_parse_i64(const char *text, int64_t *value);

/* Out of memory: the engine stops, as Redis does, rather than carry on in
 * a state no test has seen. Nothing is lost by it: a write is answered only
 * once durable, and the outbox replays after the restart (systemd's
 * Restart=). These never return NULL; ts_oom() logs what was asked for and
 * aborts. Only the Lua sandbox's allocator fails softly (a policy's memory
 * cap is an error of that call), and SQLite's and curl's own errors are
 * handled where they are returned. */
_Noreturn void ts_oom(size_t bytes);
void *ts_xmalloc(size_t n);
void *ts_xcalloc(size_t count, size_t size);
void *ts_xrealloc(void *p, size_t n);
char *ts_xstrdup(const char *s);
char *ts_xstrndup(const char *s, size_t n);
/* Makes cJSON allocate through ts_xmalloc (cJSON_Create*, printing and
 * parsing then never fail for want of memory). Once, at start. */
void ts_oom_hooks_install(void);

/* Copies src (NULL: "") into dst of size bytes, cut short to fit and always
 * NUL-terminated: snprintf(dst, size, "%s", src) without the format engine,
 * for copies made on every write. */
void ts_copy_text(char *dst, size_t size, const char *src);

/* A malloc'd, NUL-terminated copy of text[0..len): strndup without its
 * scan for a NUL, for text known to hold none (JSON we printed). */
char *ts_memdup(const char *text, size_t len);

/* Room for more items in a growing array: *cap doubled (first when 0)
 * and array realloc'd to that many items of size bytes; the new array. */
void *ts_grow(void *array, size_t *cap, size_t size, size_t first);

/* Growable byte buffer; always NUL-terminated when data != NULL.
 * Appends return 0, or -1 when memory ran out (the buffer is unchanged). */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} ts_buf_t;

/* Room for extra more bytes (and the NUL): 0, or -1 when out of memory.
 * The appends below are inline: the engine builds its answers, events and
 * documents from many small appends, most of them of literals. */
int ts_buf_grow(ts_buf_t *buf, size_t extra);
static inline int ts_buf_reserve(ts_buf_t *buf, size_t extra)
{
    return buf->len + extra + 1 <= buf->cap ? 0 : ts_buf_grow(buf, extra);
}
static inline int ts_buf_append(ts_buf_t *buf, const void *bytes, size_t len)
{
    if (ts_buf_reserve(buf, len))
        return -1;
    memcpy(buf->data + buf->len, bytes, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return 0;
}
static inline int ts_buf_puts(ts_buf_t *buf, const char *text)
{
    return ts_buf_append(buf, text, strlen(text));
}
int ts_buf_printf(ts_buf_t *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends an integer in decimal (no printf: the store writes a few per
 * write, on the pipeline's serial stage). */
int ts_buf_int(ts_buf_t *buf, long long value);
/* Appends text as a JSON string literal, quotes included. */
int ts_buf_json_string(ts_buf_t *buf, const char *text, size_t len);
void ts_buf_reset(ts_buf_t *buf);
void ts_buf_free(ts_buf_t *buf);
/* Hands the data over to the caller (who frees it) and empties the buffer. */
char *ts_buf_take(ts_buf_t *buf, size_t *len);

#endif
