/* util.c — clocks, RFC 3339, UUIDv7, ids, buffers, number parsing. */
#include "therasync/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

int64_t ts_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t ts_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes v as n decimal digits ending just before end. */
static void put_digits(char *end, int v, int n)
{
    while (n-- > 0) {
        *--end = (char)('0' + v % 10);
        v /= 10;
    }
}

/* Without gmtime_r and snprintf: it runs for every validated write (ctx.now)
 * and every ts.format_time. Times outside years 0000-9999 are clamped. */
void ts_rfc3339(int64_t wall_ms, char out[32])
{
    const int64_t min_ms = -62167219200000LL; /* 0000-01-01T00:00:00.000Z */
    const int64_t max_ms = 253402300799999LL; /* 9999-12-31T23:59:59.999Z */
    wall_ms = wall_ms < min_ms ? min_ms : wall_ms > max_ms ? max_ms : wall_ms;
    /* Days since 0000-03-01 (the algorithm's epoch; min_ms is 60 days
     * before it) and the time of day, both floored. */
    int64_t z = (wall_ms - min_ms) / 86400000 - 60;
    int ms_of_day = (int)((wall_ms - min_ms) % 86400000);
    /* Civil from days (Howard Hinnant's algorithm). */
    int era = (int)((z >= 0 ? z : z - 146096) / 146097);
    int doe = (int)(z - (int64_t)era * 146097);
    int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int mp = (5 * doy + 2) / 153;
    int day = doy - (153 * mp + 2) / 5 + 1;
    int mon = mp < 10 ? mp + 3 : mp - 9;
    int year = yoe + era * 400 + (mon <= 2);
    memcpy(out, "0000-00-00T00:00:00.000Z", 25);
    put_digits(out + 4, year, 4);
    put_digits(out + 7, mon, 2);
    put_digits(out + 10, day, 2);
    put_digits(out + 13, ms_of_day / 3600000, 2);
    put_digits(out + 16, ms_of_day / 60000 % 60, 2);
    put_digits(out + 19, ms_of_day / 1000 % 60, 2);
    put_digits(out + 23, ms_of_day % 1000, 3);
}

void ts_copy_text(char *dst, size_t size, const char *src)
{
    if (size == 0)
        return;
    size_t n = src ? strnlen(src, size - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

_Noreturn void ts_oom(size_t bytes)
{
    /* No log function here: it may want memory too. */
    char line[160];
    int n = snprintf(line, sizeof line,
                     "out of memory (%zu bytes asked for): therasync stops; every answered "
                     "write is durable\n",
                     bytes);
    if (n > 0 && write(2, line, (size_t)n) < 0)
        line[0] = '\0';
    abort();
}

void *ts_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        ts_oom(n);
    return p;
}

void *ts_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        ts_oom(count * size);
    return p;
}

void *ts_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        ts_oom(n);
    return q;
}

char *ts_xstrdup(const char *s)
{
    return ts_memdup(s, strlen(s));
}

char *ts_xstrndup(const char *s, size_t n)
{
    return ts_memdup(s, strnlen(s, n));
}

static void *cjson_malloc(size_t n)
{
    return ts_xmalloc(n);
}

void ts_oom_hooks_install(void)
{
    cJSON_Hooks hooks = {.malloc_fn = cjson_malloc, .free_fn = free};
    cJSON_InitHooks(&hooks);
}

char *ts_memdup(const char *text, size_t len)
{
    char *copy = ts_xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    return copy;
}

static int digits(const char **p, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    *value = v;
    return 0;
}

int ts_parse_rfc3339(const char *text, int64_t *wall_ms)
{
    const char *p = text;
    int year, mon, day, hour, min, sec, ms = 0;
    if (!p || digits(&p, 4, &year) || *p++ != '-' || digits(&p, 2, &mon) || *p++ != '-' ||
        digits(&p, 2, &day) || (*p != 'T' && *p != 't' && *p != ' '))
        return -1;
    p++;
    if (digits(&p, 2, &hour) || *p++ != ':' || digits(&p, 2, &min) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return -1;
    if (*p == '.') {
        p++;
        int n = 0, scale = 100;
        while (*p >= '0' && *p <= '9') {
            if (n++ < 3) {
                ms += (*p - '0') * scale;
                scale /= 10;
            }
            p++;
        }
        if (n == 0)
            return -1;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (mon < 1 || mon > 12 || day < 1 || day > mdays[mon - 1] || (mon == 2 && day == 29 && !leap) ||
        hour > 23 || min > 59 || sec > 60)
        return -1;
    /* Days from civil (Howard Hinnant's algorithm). */
    int y = year - (mon <= 2);
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (mon + (mon > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + doe - 719468;
    *wall_ms = ((days * 86400 + hour * 3600 + min * 60 + sec) - offset_min * 60) * 1000 + ms;
    return 0;
}

/* UUIDv7 with "method 3" monotonicity (RFC 9562 §6.2): within one
 * millisecond, the 74 random bits act as a counter started at a random value. */
static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t uuid_last_ms, uuid_hi12, uuid_lo62;

void ts_uuidv7_bytes(uint8_t b[16])
{
    uint64_t ms = (uint64_t)ts_wall_ms(), hi, lo;
    pthread_mutex_lock(&uuid_lock);
    if (ms > uuid_last_ms) {
        uint64_t r[2] = {0, 0};
        if (getrandom(r, sizeof r, 0) != sizeof r)
            r[0] = ms * 0x9e3779b97f4a7c15ull, r[1] = r[0] ^ (uint64_t)ts_mono_us();
        uuid_last_ms = ms;
        uuid_hi12 = r[0] & 0x7ff; /* top bit clear leaves room to count */
        uuid_lo62 = r[1] & 0x3fffffffffffffffull;
    } else if (++uuid_lo62 > 0x3fffffffffffffffull) {
        uuid_lo62 = 0;
        if (++uuid_hi12 > 0xfff) { /* counter exhausted: borrow the next millisecond */
            uuid_hi12 = 0;
            uuid_last_ms++;
        }
    }
    ms = uuid_last_ms, hi = uuid_hi12, lo = uuid_lo62;
    pthread_mutex_unlock(&uuid_lock);
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | (hi >> 8));
    b[7] = (uint8_t)hi;
    b[8] = (uint8_t)(0x80 | (lo >> 56));
    for (int i = 9; i < 16; i++)
        b[i] = (uint8_t)(lo >> (8 * (15 - i)));
}

/* Every byte's two lowercase hex digits, built by the compiler. */
#define HEX_DIGIT(n) ((n) < 10 ? '0' + (n) : 'a' + (n) - 10)
#define HEX_PAIR(b) {HEX_DIGIT((b) >> 4), HEX_DIGIT((b) & 15)}
#define HEX_PAIRS4(b) HEX_PAIR(b), HEX_PAIR(b + 1), HEX_PAIR(b + 2), HEX_PAIR(b + 3)
#define HEX_PAIRS16(b) HEX_PAIRS4(b), HEX_PAIRS4(b + 4), HEX_PAIRS4(b + 8), HEX_PAIRS4(b + 12)
#define HEX_PAIRS64(b) HEX_PAIRS16(b), HEX_PAIRS16(b + 16), HEX_PAIRS16(b + 32), HEX_PAIRS16(b + 48)
static const char hex_pairs[256][2] = {HEX_PAIRS64(0), HEX_PAIRS64(64), HEX_PAIRS64(128),
                                       HEX_PAIRS64(192)};

void ts_uuid_format(const uint8_t in[16], char out[37])
{
    /* where each byte's digits go in 8-4-4-4-12 (the store formats two ids
     * a write) */
    static const uint8_t at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
    for (int i = 0; i < 16; i++)
        memcpy(out + at[i], hex_pairs[in[i]], 2);
    out[8] = out[13] = out[18] = out[23] = '-';
    out[36] = '\0';
}

void ts_uuidv7(char out[37])
{
    uint8_t b[16];
    ts_uuidv7_bytes(b);
    ts_uuid_format(b, out);
}

void ts_hex(const void *bytes, size_t n, char *out)
{
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++)
        memcpy(out + 2 * i, hex_pairs[b[i]], 2);
    out[2 * n] = '\0';
}

/* The bytes of an id: [A-Za-z0-9_-]. */
static const bool id_byte[256] = {
    ['-'] = true, ['_'] = true,
    ['0'] = true, ['1'] = true, ['2'] = true, ['3'] = true, ['4'] = true,
    ['5'] = true, ['6'] = true, ['7'] = true, ['8'] = true, ['9'] = true,
    ['A'] = true, ['B'] = true, ['C'] = true, ['D'] = true, ['E'] = true, ['F'] = true,
    ['G'] = true, ['H'] = true, ['I'] = true, ['J'] = true, ['K'] = true, ['L'] = true,
    ['M'] = true, ['N'] = true, ['O'] = true, ['P'] = true, ['Q'] = true, ['R'] = true,
    ['S'] = true, ['T'] = true, ['U'] = true, ['V'] = true, ['W'] = true, ['X'] = true,
    ['Y'] = true, ['Z'] = true,
    ['a'] = true, ['b'] = true, ['c'] = true, ['d'] = true, ['e'] = true, ['f'] = true,
    ['g'] = true, ['h'] = true, ['i'] = true, ['j'] = true, ['k'] = true, ['l'] = true,
    ['m'] = true, ['n'] = true, ['o'] = true, ['p'] = true, ['q'] = true, ['r'] = true,
    ['s'] = true, ['t'] = true, ['u'] = true, ['v'] = true, ['w'] = true, ['x'] = true,
    ['y'] = true, ['z'] = true,
};

bool ts_valid_id(const char *text, size_t len)
{
    if (!text || len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!id_byte[(unsigned char)text[i]])
            return false;
    return true;
}

int ts_parse_i64(const char *text, int64_t *value)
{
    if (!text || !*text)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *value = v;
    return 0;
}

int ts_buf_grow(ts_buf_t *buf, size_t extra)
{
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap < buf->len + extra + 1)
        cap *= 2;
    buf->data = ts_xrealloc(buf->data, cap);
    buf->cap = cap;
    return 0;
}

int ts_buf_printf(ts_buf_t *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || ts_buf_reserve(buf, (size_t)n))
        return -1;
    va_start(ap, fmt);
    vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
    return 0;
}

int ts_buf_int(ts_buf_t *buf, long long value)
{
    char digits[24];
    char *p = digits + sizeof digits;
    unsigned long long u = value < 0 ? 0ull - (unsigned long long)value : (unsigned long long)value;
    do
        *--p = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (value < 0)
        *--p = '-';
    return ts_buf_append(buf, p, (size_t)(digits + sizeof digits - p));
}

int ts_buf_json_string(ts_buf_t *buf, const char *text, size_t len)
{
    if (ts_buf_reserve(buf, len + 2))
        return -1;
    buf->data[buf->len++] = '"';
    size_t plain = 0; /* start of the run of characters copied as they are */
    for (size_t i = 0; i < len; i++) {
        i += ts_json_plain_len(text + i, text + len);
        if (i >= len)
            break;
        unsigned char c = (unsigned char)text[i];
        char esc[8];
        const char *rep = esc;
        switch (c) {
        case '"': rep = "\\\""; break;
        case '\\': rep = "\\\\"; break;
        case '\n': rep = "\\n"; break;
        case '\r': rep = "\\r"; break;
        case '\t': rep = "\\t"; break;
        default: snprintf(esc, sizeof esc, "\\u%04x", c);
        }
        if (ts_buf_append(buf, text + plain, i - plain) || ts_buf_append(buf, rep, strlen(rep)))
            return -1;
        plain = i + 1;
    }
    if (ts_buf_append(buf, text + plain, len - plain) || ts_buf_reserve(buf, 1))
        return -1;
    buf->data[buf->len++] = '"';
    buf->data[buf->len] = '\0';
    return 0;
}

void *ts_grow(void *array, size_t *cap, size_t size, size_t first)
{
    size_t n = *cap ? *cap * 2 : first;
    if (n < *cap || n > SIZE_MAX / size)
        ts_oom(SIZE_MAX);
    void *grown = ts_xrealloc(array, n * size);
    *cap = n;
    return grown;
}

void ts_buf_reset(ts_buf_t *buf)
{
    buf->len = 0;
    if (buf->data)
        buf->data[0] = '\0';
}

void ts_buf_free(ts_buf_t *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

char *ts_buf_take(ts_buf_t *buf, size_t *len)
{
    char *data = buf->data;
    if (len)
        *len = buf->len;
    buf->data = NULL;
    buf->len = buf->cap = 0;
    return data;
}
