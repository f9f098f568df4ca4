/* fuzz_json.c — the JSON walker of src/runtime/json.c on any bytes.
 *
 * - ts_utf8_valid against a byte-at-a-time validator (RFC 3629);
 * - ts_json_compact_object: what it accepts cJSON reads to the same value,
 *   its output is that value less the dropped members, and compacting the
 *   output again changes nothing;
 * - on an object cJSON reads whole (and JSON: cJSON also reads control
 *   bytes as whitespace): ts_json_text_member walks cJSON's
 *   members in order, ts_json_text_field / ts_json_text_find find each
 *   key's first member, ts_json_text_count counts an array as cJSON does;
 * - ts_json_plain_string / ts_json_plain_int / ts_json_strict_members agree
 *   with cJSON on what they accept;
 * - ts_buf_json prints a tree that reads back to the same text.
 * On input outside a function's precondition only memory safety is held
 * (ASan, UBSan). */
#include "fuzz.h"

#include <math.h>

/* RFC 3629, a byte at a time. */
static bool utf8_reference(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0;
            if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return false;
        i += need + 1;
    }
    return true;
}

/* The value text v[0..n) as cJSON reads it, printed; NULL when it does not. */
static char *value_print(const char *v, size_t n)
{
    cJSON *item = fuzz_parse(v, n);
    char *text = item ? fuzz_print(item) : NULL;
    cJSON_Delete(item);
    return text;
}

static void same_value(const char *v, size_t n, const cJSON *want, const char *what)
{
    char *got = value_print(v, n), *expected = fuzz_print(want);
    FUZZ_CHECK(got && strcmp(got, expected) == 0, "%s: text %.*s reads as %s, cJSON has %s", what,
               (int)n, v, got ? got : "(nothing)", expected);
    free(got);
    free(expected);
}

/* A key as written (escaped or not) against cJSON's. */
static bool key_is(const ts_json_member_t *m, const char *key)
{
    if (!m->escaped)
        return strlen(key) == m->key_len && memcmp(key, m->key, m->key_len) == 0;
    cJSON *s = fuzz_parse(m->key - 1, m->key_len + 2);
    bool eq = cJSON_IsString(s) && strcmp(s->valuestring, key) == 0;
    cJSON_Delete(s);
    return eq;
}

/* The walker's view of an object cJSON read whole from text. */
static void check_object_text(const char *text, size_t len, const cJSON *root)
{
    ts_json_member_t m;
    size_t pos = 0;
    const cJSON *c = root->child;
    for (; c && ts_json_text_member(text, len, &pos, &m); c = c->next) {
        FUZZ_CHECK(key_is(&m, c->string), "member key %.*s, cJSON has %s", (int)m.key_len, m.key,
                   c->string);
        same_value(m.value, m.value_len, c, "ts_json_text_member");
    }
    FUZZ_CHECK(!c && !ts_json_text_member(text, len, &pos, &m),
               "ts_json_text_member and cJSON disagree on the number of members");
    for (c = root->child; c; c = c->next) {
        const cJSON *first = cJSON_GetObjectItemCaseSensitive(root, c->string);
        const char *v;
        size_t vn, klen = strlen(c->string);
        FUZZ_CHECK(ts_json_text_field(text, len, c->string, klen, &v, &vn),
                   "ts_json_text_field misses %s", c->string);
        same_value(v, vn, first, "ts_json_text_field");
        FUZZ_CHECK(ts_json_text_find(text, text + len, c->string, klen) == v,
                   "ts_json_text_find and ts_json_text_field differ on %s", c->string);
    }
}

/* fn of ts_json_strict_members: plain strings, plain integers, objects. */
static const char *strict_member(void *arg, const char *key, size_t key_len, const char *v,
                                 const char *end)
{
    (void)key;
    (void)key_len;
    int *n = arg;
    long long value;
    (*n)++;
    if (v < end && *v == '{') {
        int inner = 0;
        return ts_json_strict_members(v, end, strict_member, &inner);
    }
    const char *after = ts_json_plain_string(v, end);
    return after ? after : ts_json_plain_int(v, end, &value);
}

static void check_compact(const char *text, size_t len)
{
    static const char *const drop[] = {"id", "version"};
    ts_json_member_t dropped[2];
    ts_buf_t out = {0};
    const char *after = ts_json_compact_object(&out, text, text + len, drop, 2, dropped, 64);
    if (after) {
        size_t n = (size_t)(after - text);
        FUZZ_CHECK(!ts_json_string_fault(text, n), "strict text with a string fault");
        cJSON *whole = fuzz_parse(text, n), *compact = fuzz_parse(out.data, out.len);
        FUZZ_CHECK(whole, "ts_json_compact_object accepts what cJSON does not read: %.*s", (int)n,
                   text);
        FUZZ_CHECK(compact, "ts_json_compact_object wrote what cJSON does not read: %s", out.data);
        for (int i = 0; i < 2; i++) {
            const cJSON *first = cJSON_GetObjectItemCaseSensitive(whole, drop[i]);
            FUZZ_CHECK(!first == !dropped[i].value, "dropped[%d] is wrong", i);
            if (first)
                same_value(dropped[i].value, dropped[i].value_len, first, "dropped member");
            while (cJSON_GetObjectItemCaseSensitive(whole, drop[i]))
                cJSON_DeleteItemFromObjectCaseSensitive(whole, drop[i]);
        }
        char *want = fuzz_print(whole), *got = fuzz_print(compact);
        FUZZ_CHECK(strcmp(want, got) == 0, "compacted %s, expected %s", got, want);
        ts_buf_t again = {0};
        const char *end2 = ts_json_compact_object(&again, out.data, out.data + out.len, NULL, 0,
                                                  NULL, 64);
        FUZZ_CHECK(end2 == out.data + out.len && again.len == out.len &&
                       memcmp(again.data, out.data, out.len) == 0,
                   "compacting %s again gives %s", out.data, again.data ? again.data : "NULL");
        ts_buf_free(&again);
        free(want);
        free(got);
        cJSON_Delete(whole);
        cJSON_Delete(compact);
    }
    ts_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes, so ASan sees any read past them */
    char *text = malloc(size ? size : 1);
    memcpy(text, data, size);
    const char *end = text + size;
    bool utf8 = ts_utf8_valid(text, size);
    FUZZ_CHECK(utf8 == utf8_reference(data, size), "ts_utf8_valid says %d", utf8);
    const char *fault = ts_json_string_fault(text, size);

    if (utf8)
        check_compact(text, size);

    /* the text functions, on anything (their precondition is well-formed
     * text; out of it they must still stay in bounds) */
    ts_json_member_t m;
    for (size_t pos = 0; ts_json_text_member(text, size, &pos, &m);)
        FUZZ_CHECK(pos <= size && m.value + m.value_len <= end, "member past the end");
    (void)ts_json_text_count(text, size);
    const char *v;
    size_t vn;
    for (size_t pos = 0; ts_json_text_element(text, size, &pos, &v, &vn);)
        FUZZ_CHECK(pos <= size && v + vn <= end, "element past the end");
    if (ts_json_text_field(text, size, "id", 2, &v, &vn))
        FUZZ_CHECK(v + vn <= end, "field past the end");
    (void)ts_json_text_find(text, end, "doc", 3);

    cJSON *root = utf8 && !fault ? fuzz_parse(text, size) : NULL;
    long long number;
    const char *after = ts_json_plain_int(text, end, &number);
    if (after == end) {
        FUZZ_CHECK(cJSON_IsNumber(root) && root->valuedouble == (double)number,
                   "ts_json_plain_int read %lld", number);
    }
    after = ts_json_plain_string(text, end);
    if (after == end && utf8) {
        FUZZ_CHECK(cJSON_IsString(root) && strlen(root->valuestring) == size - 2 &&
                       memcmp(root->valuestring, text + 1, size - 2) == 0,
                   "ts_json_plain_string accepted what cJSON reads otherwise");
    }
    int members = 0;
    if (ts_json_strict_members(text, end, strict_member, &members) == end && utf8)
        FUZZ_CHECK(cJSON_IsObject(root), "ts_json_strict_members accepted what cJSON refuses");

    bool json = fuzz_no_controls(text, size);
    if (cJSON_IsObject(root) && json)
        check_object_text(text, size, root);
    if (cJSON_IsArray(root) && json) {
        FUZZ_CHECK(ts_json_text_count(text, size) == cJSON_GetArraySize(root),
                   "ts_json_text_count says %ld, cJSON %d", ts_json_text_count(text, size),
                   cJSON_GetArraySize(root));
        /* each element's text reads as cJSON's element (compared printed:
         * cJSON_Compare finds an infinity unequal to itself) */
        const cJSON *c = root->child;
        for (size_t pos = 0; ts_json_text_element(text, size, &pos, &v, &vn); c = c->next) {
            FUZZ_CHECK(c, "ts_json_text_element found more elements than cJSON");
            cJSON *one = fuzz_parse(v, vn);
            FUZZ_CHECK(one, "ts_json_text_element: %.*s", (int)vn, v);
            char *a = fuzz_print(one), *b = fuzz_print(c);
            FUZZ_CHECK(strcmp(a, b) == 0, "ts_json_text_element: %.*s", (int)vn, v);
            free(a);
            free(b);
            cJSON_Delete(one);
        }
        FUZZ_CHECK(!c, "ts_json_text_element missed elements");
    }
    if (root) {
        char *once = fuzz_print(root);
        cJSON *back = fuzz_parse(once, strlen(once));
        FUZZ_CHECK(back, "ts_buf_json printed what cJSON does not read: %s", once);
        char *twice = fuzz_print(back);
        FUZZ_CHECK(strcmp(once, twice) == 0, "printed %s, read back and printed %s", once, twice);
        ts_buf_t path = {0};
        bool overflow = ts_json_overflow(root, &path);
        FUZZ_CHECK(overflow == ts_json_overflow(root, NULL), "ts_json_overflow differs with path");
        ts_buf_free(&path);
        free(once);
        free(twice);
        cJSON_Delete(back);
    }
    cJSON_Delete(root);
    free(text);
    return 0;
}
