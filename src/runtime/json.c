/* json.c — UTF-8 validation, RFC 7396 merge patch, typed getters. */
#include "therasync/json.h"
#include "therasync/sha256.h"
#include "therasync/util.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool ts_utf8_valid(const char *bytes, size_t len)
{
    const unsigned char *s = (const unsigned char *)bytes, *end = s + len;
    while (s < end) {
        /* Fast path over ASCII: 32 bytes a step with SSE2, then eight. */
#ifdef __SSE2__
        while (end - s >= 32) {
            __m128i a = _mm_loadu_si128((const __m128i *)(const void *)s);
            __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + 16));
            if (_mm_movemask_epi8(_mm_or_si128(a, b)))
                break;
            s += 32;
        }
#endif
        while (end - s >= 8) {
            uint64_t word;
            memcpy(&word, s, 8);
            if (word & 0x8080808080808080ull)
                break;
            s += 8;
        }
        if (s >= end)
            break;
        unsigned char c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        int need;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)
            need = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            need = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            need = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (end - s <= need)
            return false;
        for (int i = 1; i <= need; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += need + 1;
    }
    return true;
}

/* Sets key to value (owned) in place, keeping the key's position. */
static int set_field(cJSON *object, const char *key, cJSON *value)
{
    if (!value)
        return -1;
    if (cJSON_GetObjectItemCaseSensitive(object, key))
        return cJSON_ReplaceItemInObjectCaseSensitive(object, key, value) ? 0 : -1;
    if (cJSON_AddItemToObject(object, key, value))
        return 0;
    cJSON_Delete(value);
    return -1;
}

static int merge_into(cJSON *target, const cJSON *patch)
{
    for (const cJSON *field = patch->child; field; field = field->next) {
        if (cJSON_IsNull(field)) {
            cJSON_DeleteItemFromObjectCaseSensitive(target, field->string);
        } else if (cJSON_IsObject(field)) {
            cJSON *current = cJSON_GetObjectItemCaseSensitive(target, field->string);
            if (!cJSON_IsObject(current)) {
                if (set_field(target, field->string, cJSON_CreateObject()))
                    return -1;
                current = cJSON_GetObjectItemCaseSensitive(target, field->string);
            }
            if (merge_into(current, field))
                return -1;
        } else if (set_field(target, field->string, cJSON_Duplicate(field, 1))) {
            return -1;
        }
    }
    return 0;
}

cJSON *ts_json_merge_patch(cJSON *target, const cJSON *patch)
{
    if (!cJSON_IsObject(patch)) {
        cJSON_Delete(target);
        return cJSON_Duplicate(patch, 1);
    }
    if (!cJSON_IsObject(target)) {
        cJSON_Delete(target);
        target = cJSON_CreateObject();
    }
    if (!target || merge_into(target, patch)) {
        cJSON_Delete(target);
        return NULL;
    }
    return target;
}

const char *ts_json_string(const cJSON *object, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

bool ts_json_int(const cJSON *object, const char *key, long long *value)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) ||
        item->valuedouble != floor(item->valuedouble) || fabs(item->valuedouble) > 9.0e15)
        return false;
    *value = (long long)item->valuedouble;
    return true;
}

/* ---- reading one member out of object text ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ts_json_plain_len reads words little-endian");

/* p at an opening quote: returns the position after the closing quote; a
 * backslash escapes the character after it. The text was validated when it
 * came in, so a control byte (which would stop the scan) cannot be there. */
static const char *skip_string(const char *p, const char *end, bool *escaped)
{
    for (p++;;) {
        p += ts_json_plain_len(p, end);
        if (p >= end)
            return end;
        if (*p == '"')
            return p + 1;
        if (*p == '\\') {
            *escaped = true;
            p++;
        }
        p++;
    }
}

/* p at a value: returns the position right after it. */
static const char *skip_value(const char *p, const char *end)
{
    bool escaped = false;
    if (p >= end)
        return end;
    if (*p == '"')
        return skip_string(p, end, &escaped);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = skip_string(p, end, &escaped);
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return end;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\t' && *p != '\r')
        p++;
    return p;
}

static bool key_equals(const char *raw, size_t raw_len, bool escaped, const char *key,
                       size_t key_len)
{
    if (!escaped)
        return raw_len == key_len && memcmp(raw, key, key_len) == 0;
    cJSON *s = cJSON_ParseWithLength(raw - 1, raw_len + 2); /* with its quotes */
    bool eq = cJSON_IsString(s) && strlen(s->valuestring) == key_len &&
              memcmp(s->valuestring, key, key_len) == 0;
    cJSON_Delete(s);
    return eq;
}

/* The next member's key into m, from p (the object's '{', or the end of the
 * previous member): returns the start of its value, or NULL. */
static const char *member_key(const char *p, const char *end, bool first, ts_json_member_t *m)
{
    p = skip_ws(p, end);
    if (p >= end || *p != (first ? '{' : ','))
        return NULL;
    p = skip_ws(p + 1, end);
    if (p >= end || *p != '"')
        return NULL;
    m->escaped = false;
    m->key = p + 1;
    p = skip_string(p, end, &m->escaped);
    m->key_len = (size_t)(p - m->key) - 1;
    p = skip_ws(p, end);
    if (p >= end || *p != ':')
        return NULL;
    return skip_ws(p + 1, end);
}

bool ts_json_text_member(const char *text, size_t len, size_t *pos, ts_json_member_t *m)
{
    const char *end = text + len, *p = member_key(text + *pos, end, *pos == 0, m);
    if (!p)
        return false;
    m->value = p;
    p = skip_value(p, end);
    if (p > end || p == m->value)
        return false;
    m->value_len = (size_t)(p - m->value);
    *pos = (size_t)(p - text);
    return true;
}

const char *ts_json_text_find(const char *text, const char *end, const char *key, size_t key_len)
{
    ts_json_member_t m;
    for (const char *p = text, *v; (v = member_key(p, end, p == text, &m)); p = skip_value(v, end))
        if (key_equals(m.key, m.key_len, m.escaped, key, key_len))
            return v < end ? v : NULL;
    return NULL;
}

bool ts_json_text_field(const char *text, size_t len, const char *key, size_t key_len,
                        const char **value, size_t *value_len)
{
    ts_json_member_t m;
    for (size_t pos = 0; ts_json_text_member(text, len, &pos, &m);) {
        if (key_equals(m.key, m.key_len, m.escaped, key, key_len)) {
            *value = m.value;
            *value_len = m.value_len;
            return true;
        }
    }
    return false;
}

/* ---- strict checking and compacting ---- */

static int hex4(const char *p, const char *end)
{
    if (end - p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = ts_hex_value(p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* p at a backslash: the position after the escape (both halves of a
 * surrogate pair), or NULL when it is not one of JSON's, escapes NUL
 * (cJSON would cut the string there) or is half a surrogate pair. */
static const char *strict_escape(const char *p, const char *end)
{
    if (++p >= end)
        return NULL;
    if (*p != 'u')
        return *p && strchr("\"\\/bfnrt", *p) ? p + 1 : NULL;
    int u = hex4(p + 1, end);
    p += 5;
    if (u <= 0 || (u >= 0xdc00 && u <= 0xdfff))
        return NULL; /* not four hex digits, NUL, or a lone low half */
    if (u >= 0xd800 && u <= 0xdbff) {
        int lo = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2, end) : -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return NULL;
        p += 6;
    }
    return p;
}

/* p at an opening quote: the position after the closing one, or NULL. */
static const char *strict_string(const char *p, const char *end)
{
    for (p++; p < end;) {
        p += ts_json_plain_len(p, end);
        if (p >= end)
            break;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c != '\\')
            p++;
        else if (!(p = strict_escape(p, end)))
            return NULL;
    }
    return NULL;
}

const char *ts_json_string_fault(const char *text, size_t len)
{
    const char *end = text + len;
    if (memchr(text, '\0', len))
        return "a NUL byte";
    /* Every backslash of valid JSON is in a string, and the escapes are
     * read in turn: the text \\u0000 is an escaped backslash, then u0000. */
    for (const char *p = text; (p = memchr(p, '\\', (size_t)(end - p)));) {
        const char *after = strict_escape(p, end);
        if (!after)
            return end - p >= 6 && p[1] == 'u' && hex4(p + 2, end) == 0
                       ? "\\u0000 (NUL) in a string"
                       : "an invalid escape in a string (\\u takes four hex digits, and "
                         "surrogates come in pairs)";
        p = after;
    }
    return NULL;
}

/* Declines (NULL) a number that might overflow a double (1e400 reads as
 * infinity, which JSON cannot write back): one whose integer digits and
 * exponent come to more than 308. The general way, which reads it, refuses
 * the ones that do overflow. */
static const char *strict_number(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p >= end || *p < '0' || *p > '9')
        return NULL;
    const char *digits = p;
    if (*p == '0')
        p++;
    else
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    long magnitude = (long)(p - digits); /* 10^magnitude is above the number */
    if (p < end && *p == '.') {
        const char *fraction = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == fraction)
            return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool minus = p < end && *p == '-';
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const char *exp_digits = p;
        long exp = 0;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            exp = exp < 100000 ? exp * 10 + (*p - '0') : exp;
        if (p == exp_digits)
            return NULL;
        magnitude += minus ? -exp : exp;
    }
    return magnitude <= 308 ? p : NULL;
}

/* Where a compacting pass copies to: out gets the text from run up to
 * each stretch of whitespace, which is left out. */
typedef struct {
    ts_buf_t *out;
    const char *run;
    int rc;
} compact_t;

static void compact_flush(compact_t *c, const char *p)
{
    if (p > c->run && ts_buf_append(c->out, c->run, (size_t)(p - c->run)))
        c->rc = -1;
    c->run = p;
}

/* skip_ws that leaves the whitespace out of c's copy (c may be NULL).
 * Called between every two tokens: inline, for the usual case of no
 * whitespace there. */
static const char *compact_ws_run(compact_t *c, const char *p, const char *end)
{
    if (!c)
        return skip_ws(p, end);
    compact_flush(c, p);
    c->run = skip_ws(p, end);
    return c->run;
}

static inline __attribute__((always_inline)) const char *compact_ws(compact_t *c, const char *p,
                                                                    const char *end)
{
    if (p >= end || (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r'))
        return p;
    return compact_ws_run(c, p, end);
}

/* p at a value: the position after it, or NULL when it is not strict JSON.
 * With c, what is read is copied without whitespace. */
static const char *strict_value(const char *p, const char *end, int depth, compact_t *c)
{
    if (p >= end)
        return NULL;
    switch (*p) {
    case '"': return strict_string(p, end);
    case 't': return end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f': return end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n': return end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
    case '{':
    case '[': {
        bool object = *p == '{';
        char close = object ? '}' : ']';
        if (depth <= 0)
            return NULL;
        p = compact_ws(c, p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (object) {
                if (p >= end || *p != '"' || !(p = strict_string(p, end)))
                    return NULL;
                p = compact_ws(c, p, end);
                if (p >= end || *p != ':')
                    return NULL;
                p = compact_ws(c, p + 1, end);
            }
            if (!(p = strict_value(p, end, depth - 1, c)))
                return NULL;
            p = compact_ws(c, p, end);
            if (p < end && *p == close)
                return p + 1;
            if (p >= end || *p != ',')
                return NULL;
            p = compact_ws(c, p + 1, end);
        }
    }
    default: return strict_number(p, end);
    }
}

const char *ts_json_compact_object(ts_buf_t *out, const char *p, const char *end,
                                   const char *const *drop, size_t ndrop,
                                   ts_json_member_t *dropped, int max_depth)
{
    /* The text is copied in runs: one for the whole object when it has no
     * whitespace and nothing to drop. */
    compact_t c = {out, p, 0};
    for (size_t i = 0; dropped && i < ndrop; i++)
        dropped[i].value = NULL;
    if (p >= end || *p != '{' || max_depth <= 0)
        return NULL;
    p = compact_ws(&c, p + 1, end);
    while (p >= end || *p != '}') {
        const char *k = p;
        if (!(p = ts_json_plain_string(p, end)))
            return NULL;
        size_t klen = (size_t)(p - k) - 2;
        size_t i = 0;
        while (i < ndrop && !ts_name_is(drop[i], k + 1, klen))
            i++;
        bool drop_it = i < ndrop;
        compact_t *copy = drop_it ? NULL : &c; /* a dropped member is read, not copied */
        if (drop_it)
            compact_flush(&c, k);
        p = compact_ws(copy, p, end);
        if (p >= end || *p != ':')
            return NULL;
        const char *v = p = compact_ws(copy, p + 1, end);
        if (!(p = strict_value(p, end, max_depth - 1, copy)))
            return NULL;
        if (drop_it && dropped && !dropped[i].value)
            dropped[i] = (ts_json_member_t){k + 1, klen, false, v, (size_t)(p - v)};
        p = compact_ws(copy, p, end);
        if (p < end && *p == '}') {
            if (drop_it && out->len && out->data[out->len - 1] == ',')
                out->data[--out->len] = '\0'; /* the comma before the last member */
            if (drop_it)
                c.run = p;
            break;
        }
        if (p >= end || *p != ',')
            return NULL;
        p = compact_ws(copy, p + 1, end);
        if (drop_it)
            c.run = p; /* copying goes on after the dropped member */
        if (p < end && *p == '}')
            return NULL; /* a trailing comma */
    }
    compact_flush(&c, p + 1);
    return c.rc ? NULL : p + 1;
}

const char *ts_json_strict_members(const char *p, const char *end, ts_json_member_fn *fn,
                                   void *arg)
{
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return p + 1;
    for (;;) {
        const char *k = p;
        if (!(p = ts_json_plain_string(p, end)))
            return NULL;
        size_t klen = (size_t)(p - k) - 2;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return NULL;
        if (!(p = fn(arg, k + 1, klen, skip_ws(p + 1, end), end)))
            return NULL;
        p = skip_ws(p, end);
        if (p < end && *p == '}')
            return p + 1;
        if (p >= end || *p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
}

/* An escaped key is not compared as written: the callers of this for a
 * member's key take the general way for it. */
const char *ts_json_plain_string(const char *p, const char *end)
{
    if (p >= end || *p != '"')
        return NULL;
    p++;
    p += ts_json_plain_len(p, end);
    return p < end && *p == '"' ? p + 1 : NULL;
}

const char *ts_json_plain_int(const char *p, const char *end, long long *value)
{
    const char *after = strict_number(p, end);
    bool minus = p < end && *p == '-';
    size_t digits = after ? (size_t)(after - p) - minus : 0;
    if (!after || digits > 15)
        return NULL;
    long long v = 0;
    for (const char *d = p + minus; d < after; d++) {
        if (*d < '0' || *d > '9')
            return NULL; /* a fraction or an exponent */
        v = v * 10 + (*d - '0');
    }
    *value = minus ? -v : v;
    return after;
}

static bool is_null(const ts_json_member_t *m)
{
    return m->value_len == 4 && memcmp(m->value, "null", 4) == 0;
}

/* Appends "key":value (after a comma unless *first) for a text merge. */
static int append_member(ts_buf_t *out, bool *first, const ts_json_member_t *key,
                         const ts_json_member_t *value)
{
    bool comma = !*first;
    *first = false;
    return (comma && ts_buf_append(out, ",", 1)) ||
                   ts_buf_append(out, key->key - 1, key->key_len + 2) ||
                   ts_buf_append(out, ":", 1) ||
                   ts_buf_append(out, value->value, value->value_len)
               ? -1
               : 0;
}

/* Appends members as they are written from run to run_end (after a comma
 * unless *first). */
static int append_run(ts_buf_t *out, bool *first, const char *run, const char *run_end)
{
    bool comma = !*first;
    *first = false;
    return (comma && ts_buf_append(out, ",", 1)) ||
                   ts_buf_append(out, run, (size_t)(run_end - run))
               ? -1
               : 0;
}

int ts_json_text_merge(ts_buf_t *out, const char *target, size_t target_len, const char *patch,
                       size_t patch_len)
{
    enum { MAX_PATCH = 16 };
    ts_json_member_t pm[MAX_PATCH], m;
    bool applied[MAX_PATCH] = {false};
    size_t np = 0;
    for (size_t pos = 0; ts_json_text_member(patch, patch_len, &pos, &m);) {
        if (np == MAX_PATCH || m.escaped || *m.value == '{')
            return 1; /* an object merges into the target's: the tree does that */
        for (size_t i = 0; i < np; i++)
            if (pm[i].key_len == m.key_len && memcmp(pm[i].key, m.key, m.key_len) == 0)
                return 1; /* a key twice: applied in turn by the tree */
        pm[np++] = m;
    }
    int rc = ts_buf_reserve(out, target_len + patch_len) || ts_buf_append(out, "{", 1) ? -1 : 0;
    bool first = true;
    /* The target's members that the patch leaves alone are copied a run at
     * a time (most patches touch one or two of a document's members). */
    const char *run = NULL, *run_end = NULL;
    for (size_t pos = 0; ts_json_text_member(target, target_len, &pos, &m);) {
        if (m.escaped)
            return 1;
        size_t i = 0; /* the patch member for this key, if not used yet */
        while (i < np && (applied[i] || pm[i].key_len != m.key_len ||
                          memcmp(pm[i].key, m.key, m.key_len) != 0))
            i++;
        if (i == np) {
            run = run ? run : m.key - 1;
            run_end = m.value + m.value_len;
            continue;
        }
        if (run && append_run(out, &first, run, run_end))
            rc = -1;
        run = NULL;
        applied[i] = true;
        if (!is_null(&pm[i]) && append_member(out, &first, &m, &pm[i]))
            rc = -1; /* null removes the member */
    }
    if (run && append_run(out, &first, run, run_end))
        rc = -1;
    for (size_t i = 0; i < np; i++) /* new members, in the patch's order */
        if (!applied[i] && !is_null(&pm[i]) && append_member(out, &first, &pm[i], &pm[i]))
            rc = -1;
    if (ts_buf_append(out, "}", 1))
        rc = -1;
    return rc;
}

bool ts_json_text_element(const char *text, size_t len, size_t *pos, const char **value,
                          size_t *value_len)
{
    const char *end = text + len, *p = skip_ws(text + *pos, end);
    if (p >= end || *p != (*pos == 0 ? '[' : ','))
        return false;
    p = skip_ws(p + 1, end);
    if (p >= end || *p == ']')
        return false;
    const char *v = p;
    p = skip_value(p, end);
    if (p > end || p == v)
        return false;
    *value = v;
    *value_len = (size_t)(p - v);
    *pos = (size_t)(p - text);
    return true;
}

long ts_json_text_count(const char *text, size_t len)
{
    const char *p = skip_ws(text, text + len), *end = text + len;
    if (p >= end || *p != '[')
        return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']')
        return 0;
    for (long n = 1;; n++) {
        const char *v = p;
        p = skip_value(p, end);
        if (p >= end || p == v)
            return -1;
        p = skip_ws(p, end);
        if (p < end && *p == ']')
            return n;
        if (p >= end || *p != ',')
            return -1;
        p = skip_ws(p + 1, end);
    }
}

/* see json.h; deleting each by name walked the object three times */
void ts_json_strip_server_fields(cJSON *object)
{
    static const char *const server[] = {TS_JSON_SERVER_FIELDS};
    for (cJSON *f = object ? object->child : NULL, *next; f; f = next) {
        next = f->next;
        for (size_t i = 0; f->string && i < sizeof server / sizeof *server; i++) {
            if (f->string[0] == server[i][0] && strcmp(f->string, server[i]) == 0) {
                cJSON_Delete(cJSON_DetachItemViaPointer(object, f));
                break;
            }
        }
    }
}

/* A number as cJSON prints it (integers below 1e15 as digits, which is what
 * its "%1.15g" gives for them), except that 17 digits are used whenever 15
 * would not read back exactly. */
static int buf_number(ts_buf_t *b, double d)
{
    if (isnan(d) || isinf(d))
        return ts_buf_append(b, "null", 4);
    if (d == 0 && signbit(d))
        return ts_buf_append(b, "-0", 2);
    if (d == floor(d) && fabs(d) < 1e15)
        return ts_buf_int(b, (long long)d);
    char text[32];
    snprintf(text, sizeof text, "%1.15g", d);
    if (strtod(text, NULL) != d)
        snprintf(text, sizeof text, "%1.17g", d);
    return ts_buf_puts(b, text);
}

/* see json.h */
int ts_buf_json(ts_buf_t *b, const cJSON *item)
{
    switch (item->type & 0xFF) {
    case cJSON_NULL: return ts_buf_append(b, "null", 4);
    case cJSON_False: return ts_buf_append(b, "false", 5);
    case cJSON_True: return ts_buf_append(b, "true", 4);
    case cJSON_Number: return buf_number(b, item->valuedouble);
    case cJSON_String:
        return ts_buf_json_string(b, item->valuestring, strlen(item->valuestring));
    case cJSON_Raw: return ts_buf_puts(b, item->valuestring ? item->valuestring : "");
    case cJSON_Array:
    case cJSON_Object: {
        bool object = cJSON_IsObject(item);
        if (ts_buf_append(b, object ? "{" : "[", 1))
            return -1;
        for (const cJSON *c = item->child; c; c = c->next) {
            if ((c != item->child && ts_buf_append(b, ",", 1)) ||
                (object && (ts_buf_json_string(b, c->string ? c->string : "",
                                               c->string ? strlen(c->string) : 0) ||
                            ts_buf_append(b, ":", 1))) ||
                ts_buf_json(b, c))
                return -1;
        }
        return ts_buf_append(b, object ? "}" : "]", 1);
    }
    default: return -1; /* cJSON_Invalid */
    }
}

/* see json.h */
int ts_json_content_sha256(const cJSON *doc, uint8_t out[32])
{
    if (!cJSON_IsObject(doc))
        return -1;
    ts_buf_t b = {0};
    int rc = ts_buf_append(&b, "{", 1);
    bool first = true;
    for (const cJSON *c = doc->child; c && rc == 0; c = c->next) {
        const char *key = c->string ? c->string : "";
        if (strcmp(key, "id") == 0) /* in the digest line already */
            continue;
        rc = (first ? 0 : ts_buf_append(&b, ",", 1)) | ts_buf_json_string(&b, key, strlen(key)) |
             ts_buf_append(&b, ":", 1) | ts_buf_json(&b, c);
        first = false;
    }
    rc |= ts_buf_append(&b, "}", 1);
    if (rc == 0) {
        ts_sha256_t h;
        ts_sha256_init(&h);
        ts_sha256_update(&h, b.data, b.len);
        ts_sha256_final(&h, out);
    }
    ts_buf_free(&b);
    return rc ? -1 : 0;
}

/* see json.h */
int ts_json_text_content_sha256(const char *text, size_t len, uint8_t out[32])
{
    cJSON *doc = cJSON_ParseWithLength(text, len);
    int rc = cJSON_IsObject(doc) ? ts_json_content_sha256(doc, out) : 1;
    cJSON_Delete(doc);
    if (rc == 1) { /* not a document: its bytes */
        ts_sha256_t h;
        ts_sha256_init(&h);
        ts_sha256_update(&h, text, len);
        ts_sha256_final(&h, out);
        rc = 0;
    }
    return rc;
}

bool ts_json_overflow(const cJSON *item, ts_buf_t *path)
{
    if (cJSON_IsNumber(item))
        return !isfinite(item->valuedouble);
    size_t mark = path ? path->len : 0;
    int i = 0;
    for (const cJSON *c = item->child; c; c = c->next, i++) {
        if (path && c->string)
            ts_buf_printf(path, "%s%s", mark ? "." : "", c->string);
        else if (path)
            ts_buf_printf(path, "[%d]", i);
        if (ts_json_overflow(c, path))
            return true;
        if (path)
            path->data[path->len = mark] = '\0';
    }
    return false;
}
