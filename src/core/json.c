/* json.c — UTF-8 validation, RFC 7396 merge patch, typed getters. */
#include "therasync/json.h"
#include "therasync/util.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

bool ts_utf8_valid(const char *bytes, size_t len)
{
    const unsigned char *s = (const unsigned char *)bytes, *end = s + len;
    while (s < end) {
        /* Fast path over ASCII, eight bytes at a time. */
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

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "skip_string reads words little-endian");

/* p at an opening quote: returns the position after the closing quote.
 * Looks at eight bytes at a time for a quote or a backslash (keys and most
 * values are short, too short for a library call to pay off); a backslash
 * escapes the character after it. */
static const char *skip_string(const char *p, const char *end, bool *escaped)
{
    p++;
    for (;;) {
        if (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            uint64_t hits = ts_word_eq(w, '"') | ts_word_eq(w, '\\');
            if (!hits) {
                p += 8;
                continue;
            }
            p += __builtin_ctzll(hits) / 8;
        } else {
            while (p < end && *p != '"' && *p != '\\')
                p++;
            if (p >= end)
                return end;
        }
        if (*p == '"')
            return p + 1;
        *escaped = true;
        p += 2;
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

bool ts_json_text_field(const char *text, size_t len, const char *key, size_t key_len,
                        const char **value, size_t *value_len)
{
    const char *p = text, *end = text + len;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return false;
    p++;
    for (;;) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"')
            return false;
        bool escaped = false;
        const char *k = p + 1;
        p = skip_string(p, end, &escaped);
        size_t klen = (size_t)(p - k) - 1;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return false;
        p = skip_ws(p + 1, end);
        const char *v = p;
        p = skip_value(p, end);
        if (p > end || p == v)
            return false;
        if (key_equals(k, klen, escaped, key, key_len)) {
            *value = v;
            *value_len = (size_t)(p - v);
            return true;
        }
        p = skip_ws(p, end);
        if (p >= end || *p != ',')
            return false;
        p++;
    }
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
