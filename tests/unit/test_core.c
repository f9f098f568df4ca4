/* test_core.c — the core helpers: JSON merge patch, UTF-8, ids, time,
 * histograms, buffers, config. */
#include "api/api_int.h"
#include "therasync/actor.h"
#include "msgs/call.h"
#include "therasync/config.h"
#include "therasync/hist.h"
#include "therasync/json.h"
#include "persist/outbox.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static char *merge(const char *target, const char *patch)
{
    cJSON *t = cJSON_Parse(target), *p = cJSON_Parse(patch);
    cJSON *r = ts_json_merge_patch(t, p);
    char *text = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    cJSON_Delete(p);
    return text;
}

/* The examples of RFC 7396, appendix A. */
Test(json, merge_patch_rfc7396_examples)
{
    static const char *cases[][3] = {
        {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
        {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
        {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
        {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
        {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
        {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
        {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
        {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
        {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
        {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
        {"{\"a\":\"foo\"}", "null", "null"},
        {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
        {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
        {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
        {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *got = merge(cases[i][0], cases[i][1]);
        cr_assert_str_eq(got, cases[i][2], "case %zu", i);
        free(got);
    }
}

Test(json, merge_patch_keeps_field_order)
{
    char *got = merge("{\"id\":\"x\",\"a\":1,\"b\":2}", "{\"a\":5}");
    cr_assert_str_eq(got, "{\"id\":\"x\",\"a\":5,\"b\":2}");
    free(got);
}

/* Strings of every length up to 40 with a quote, a backslash or nothing
 * escaped at every position (so escapes fall on and across the 8-byte words
 * the scanner reads): the members after them are found whole, and such a
 * string as a key is found by its unescaped text (as cJSON reads it). */
Test(json, text_field_skips_strings_with_escapes_anywhere)
{
    static const char *const escapes[] = {"", "\\\"", "\\\\", "\\u0041", "\\n"};
    for (size_t e = 0; e < sizeof escapes / sizeof *escapes; e++)
        for (int n = 0; n <= 40; n++)
            for (int at = 0; at <= n; at++) {
                char s[128], text[512];
                snprintf(s, sizeof s, "%.*s%s%.*s", at, "abcdefghijklmnopqrstuvwxyz0123456789ABCDE",
                         escapes[e], n - at, "abcdefghijklmnopqrstuvwxyz0123456789ABCDE");
                snprintf(text, sizeof text, "{\"%s\":\"%s\",\"next\":[\"%s\"],\"last\":1}", s, s, s);
                const char *v;
                size_t vn;
                cr_assert(ts_json_text_field(text, strlen(text), "last", 4, &v, &vn), "%s", text);
                cr_assert_eq(vn, 1);
                cr_assert(ts_json_text_field(text, strlen(text), "next", 4, &v, &vn), "%s", text);
                cr_assert_eq(vn, strlen(s) + 4, "%s", text);
                cJSON *doc = cJSON_Parse(text);
                const char *key = doc->child->string;
                cr_assert(ts_json_text_field(text, strlen(text), key, strlen(key), &v, &vn), "%s", text);
                cr_assert_eq(vn, strlen(s) + 2, "%s", text);
                cJSON_Delete(doc);
            }
    const char *v;
    size_t vn;
    static const char *const broken[] = {"{\"a\":\"unterminated", "{\"a\":\"ends in \\",
                                         "{\"a\":\"ends in a long string of letters \\"};
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++)
        cr_assert_not(ts_json_text_field(broken[i], strlen(broken[i]), "b", 1, &v, &vn));
}

static long count(const char *text) { return ts_json_text_count(text, strlen(text)); }

Test(json, text_count_counts_array_elements_without_parsing)
{
    cr_assert_eq(count("[]"), 0);
    cr_assert_eq(count(" [ ] "), 0);
    cr_assert_eq(count("[1]"), 1);
    cr_assert_eq(count("[{\"a\":[1,2,{\"b\":\"],[\"}]},\"x,\\\"y\",null,[[]]]"), 4);
    cr_assert_eq(count("[ 1 , 2 ,3 ]"), 3);
    cr_assert_eq(count("{\"a\":1}"), -1, "not an array");
    cr_assert_eq(count(""), -1);
    cr_assert_eq(count("[1,2"), -1, "unterminated");
    cr_assert_eq(count("[1,]"), -1, "missing element");
}

Test(json, text_element_steps_through_an_array_as_written)
{
    const char *text = " [ {\"id\":\"a\",\"x\":[1,\"],\"]} ,2,\"s,\\\"t\",[[]] ]";
    const char *want[] = {"{\"id\":\"a\",\"x\":[1,\"],\"]}", "2", "\"s,\\\"t\"", "[[]]"};
    const char *v;
    size_t vn, pos = 0, n = 0;
    while (ts_json_text_element(text, strlen(text), &pos, &v, &vn)) {
        cr_assert_lt(n, 4);
        cr_assert_eq(vn, strlen(want[n]), "element %zu: %.*s", n, (int)vn, v);
        cr_assert_eq(memcmp(v, want[n], vn), 0);
        n++;
    }
    cr_assert_eq(n, 4);
    pos = 0;
    cr_assert_not(ts_json_text_element("[]", 2, &pos, &v, &vn), "empty");
    pos = 0;
    cr_assert_not(ts_json_text_element("{\"a\":1}", 7, &pos, &v, &vn), "not an array");
    pos = 0;
    cr_assert(ts_json_text_element("[1,]", 4, &pos, &v, &vn));
    cr_assert_not(ts_json_text_element("[1,]", 4, &pos, &v, &vn), "missing element");
}

/* ts_buf_json prints what cJSON_PrintUnformatted prints, number for
 * number (the store keeps and pushes that text). */
static void same_as_cjson(const cJSON *item)
{
    ts_buf_t b = {0};
    cr_assert_eq(ts_buf_json(&b, item), 0);
    char *want = cJSON_PrintUnformatted(item);
    cr_assert_str_eq(b.data, want);
    cr_assert_eq(b.len, strlen(want));
    cJSON_free(want);
    ts_buf_free(&b);
}

Test(json, buf_json_prints_what_cjson_prints)
{
    static const char *texts[] = {
        "{}", "[]", "null", "true", "false", "\"\"", "[[],{},[{}]]",
        "{\"a\":1,\"b\":[1,2,3],\"c\":{\"d\":null,\"e\":true,\"f\":false}}",
        "{\"s\":\"quote \\\" backslash \\\\ newline \\n tab \\t cr \\r ctl \\u0001 caf\\u00e9 \\ud83d\\ude00\"}",
        "{\"k\\\"ey\":\"v\",\"\":\"empty key\"}",
        ("[0,-0,1,-1,50,2147483647,2147483648,-2147483649,999999999999999,1000000000000000,"
         "-999999999999999,1e20,0.1,1.5,-2.5e-7,123456789.123,4.9e-324,100.0,3e2]"),
        "{\"duration_min\":50,\"notes\":\"a plain note long enough for the fast copy path\"}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        cJSON *j = cJSON_Parse(texts[i]);
        cr_assert_not_null(j, "%s", texts[i]);
        same_as_cjson(j);
        cJSON_Delete(j);
    }
    /* Where 15 digits only come near, 17 are printed: the number reads back
     * exactly (cJSON would print 0.3 and 1.79769313486232e+308). */
    static const double exact[] = {0.30000000000000004, 1.7976931348623157e308, 2.0 / 3.0};
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++) {
        cJSON *n = cJSON_CreateNumber(exact[i]);
        ts_buf_t nb = {0};
        cr_assert_eq(ts_buf_json(&nb, n), 0);
        cr_assert_eq(strtod(nb.data, NULL), exact[i], "%s", nb.data);
        ts_buf_free(&nb);
        cJSON_Delete(n);
    }
    cJSON *odd = cJSON_CreateArray(); /* values JSON cannot hold print as null */
    cJSON_AddItemToArray(odd, cJSON_CreateNumber(NAN));
    cJSON_AddItemToArray(odd, cJSON_CreateNumber(INFINITY));
    cJSON_AddItemToArray(odd, cJSON_CreateNumber(-INFINITY));
    same_as_cjson(odd);
    cJSON_Delete(odd);
    /* \b and \f: cJSON writes the short escapes, ts_buf_json \u0008 and
     * \u000c; either reads back as the same string. */
    cJSON *s = cJSON_CreateString("\b\f");
    ts_buf_t b = {0};
    cr_assert_eq(ts_buf_json(&b, s), 0);
    cJSON *back = cJSON_Parse(b.data);
    cr_assert(cJSON_Compare(s, back, true), "%s", b.data);
    cJSON_Delete(back);
    cJSON_Delete(s);
    ts_buf_free(&b);
}

/* Whether value, as the member of an object, passes the strict reading of
 * ts_json_compact_object (nested 4 deep at most, the object included). */
static bool strict(const char *value)
{
    ts_buf_t text = {0}, out = {0};
    ts_buf_printf(&text, "{\"v\":%s}", value);
    bool ok = ts_json_compact_object(&out, text.data, text.data + text.len, NULL, 0, NULL, 5) ==
              text.data + text.len;
    ts_buf_free(&text);
    ts_buf_free(&out);
    return ok;
}

Test(json, strict_refuses_what_rfc8259_does_and_what_cjson_reads_otherwise)
{
    static const char *bad[] = {
        "", " ", "01", "1.", ".5", "+1", "-", "1e", "1e+", "[1,]", "[,1]", "{\"a\"}",
        "{\"a\":}", "{\"a\":1,}", "{a:1}", "[1] x", "[1]]", "{\"a\":1}}", "tru", "nul",
        "\"abc", "\"a\tb\"", "\"\\x\"", "\"\\u12\"", "\"\\u0000\"", "\"\\ud800\"",
        "\"\\ud800x\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "[[[[[1]]]]]", "'a'", "{\"a\" 1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_not(strict(bad[i]), "accepted %s", bad[i]);
    static const char *good[] = {
        "0", "-0", "1.5e+10", "-2E-3", "true", "null", "\"\"", "[]", "{}", " [ 1 , 2 ] ",
        "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00\"",
        "{\"a\":{\"b\":[1,{\"c\":\"d\"}]}}", "[[[[1]]]]",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        cr_assert(strict(good[i]), "refused %s", good[i]);
        cJSON *j = cJSON_Parse(good[i]);
        cr_assert_not_null(j, "cJSON refused %s", good[i]);
        cJSON_Delete(j);
    }
}

/* A member reader for the strict walk: keeps "k=value" lines; a value
 * read as a plain string, a plain integer, or else given up on. */
static const char *keep_member(void *arg, const char *key, size_t len, const char *v,
                               const char *end)
{
    ts_buf_t *seen = arg;
    long long n;
    const char *after = ts_json_plain_string(v, end);
    if (after)
        ts_buf_printf(seen, "%.*s=%.*s;", (int)len, key, (int)(after - v - 2), v + 1);
    else if ((after = ts_json_plain_int(v, end, &n)))
        ts_buf_printf(seen, "%.*s=%lld;", (int)len, key, n);
    return after;
}

Test(json, strict_members_reads_plain_values_and_gives_up_on_the_rest)
{
    static const struct {
        const char *text, *members; /* members NULL: given up */
    } cases[] = {
        {"{}", ""},
        {" { \"a\" : \"x y\" ,\n\"b\":-12 } ", "a=x y;b=-12;"},
        {"{\"a\":\"caf\xc3\xa9\",\"b\":0,\"c\":123456789012345}", "a=caf\xc3\xa9;b=0;c=123456789012345;"},
        {"{\"a\":1234567890123456}", NULL}, /* 16 digits */
        {"{\"a\":1.0}", NULL},
        {"{\"a\":1e3}", NULL},
        {"{\"a\":01}", NULL},
        {"{\"a\":\"x\\ny\"}", NULL}, /* escaped */
        {"{\"a\":\"x\ty\"}", NULL},  /* a control character */
        {"{\"\\u0061\":1}", NULL},  /* an escaped key */
        {"{\"a\":null}", NULL},
        {"{\"a\":1,}", NULL},
        {"{\"a\":1", NULL},
        {"{\"a\" 1}", NULL},
        {"{,\"a\":1}", NULL},
        {"[1]", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ts_buf_t seen = {0};
        ts_buf_puts(&seen, ""); /* data even when nothing is read */
        const char *text = cases[i].text, *end = text + strlen(text);
        const char *after = ts_json_strict_members(text, end, keep_member, &seen);
        if (!cases[i].members) {
            cr_assert_null(after, "read %s", text);
        } else {
            cr_assert_not_null(after, "gave up on %s", text);
            cr_assert_eq(strspn(after, " "), strlen(after), "stopped early in %s",
                         text);
            cr_assert_str_eq(seen.data, cases[i].members);
        }
        ts_buf_free(&seen);
    }
}

/* A random JSON value as text, with random whitespace between tokens and
 * random (valid) escapes in strings. */
static void random_json(ts_buf_t *b, unsigned *seed, int depth)
{
    static const char *ws[] = {"", "", "", " ", "\n  ", "\t", "\r\n"};
    static const char *pieces[] = {"a", "id", "version", "\\\"", "\\\\", "\\n", "\\u00e9",
                                   "\\ud83d\\ude00", "caf\xc3\xa9", "\\/", "x y", "\\t"};
    static const char *numbers[] = {"0", "-0", "12", "-3.25", "1e3", "2E-2", "50.0", "7"};
    int kind = depth > 0 ? rand_r(seed) % 7 : rand_r(seed) % 5;
    ts_buf_puts(b, ws[rand_r(seed) % 7]);
    switch (kind) {
    case 0: ts_buf_puts(b, numbers[rand_r(seed) % 8]); break;
    case 1: ts_buf_puts(b, rand_r(seed) % 2 ? "true" : "false"); break;
    case 2: ts_buf_puts(b, "null"); break;
    case 3:
    case 4: {
        ts_buf_puts(b, "\"");
        for (int i = rand_r(seed) % 4; i > 0; i--)
            ts_buf_puts(b, pieces[rand_r(seed) % 12]);
        ts_buf_puts(b, "\"");
        break;
    }
    default: {
        bool object = kind == 5;
        ts_buf_puts(b, object ? "{" : "[");
        for (int i = rand_r(seed) % 5, first = 1; i > 0; i--, first = 0) {
            if (!first)
                ts_buf_puts(b, ",");
            if (object) {
                ts_buf_puts(b, ws[rand_r(seed) % 7]);
                ts_buf_puts(b, "\"");
                ts_buf_puts(b, pieces[rand_r(seed) % 12]);
                ts_buf_printf(b, "%d\"", i); /* keys unique: cJSON_Compare takes the first */
                ts_buf_puts(b, ws[rand_r(seed) % 7]);
                ts_buf_puts(b, ":");
            }
            random_json(b, seed, depth - 1);
        }
        ts_buf_puts(b, ws[rand_r(seed) % 7]);
        ts_buf_puts(b, object ? "}" : "]");
    }
    }
    ts_buf_puts(b, ws[rand_r(seed) % 7]);
}

/* The compacted object reads back as cJSON reads the original, less the
 * dropped members; and the strict check never passes what cJSON refuses,
 * on random texts and on each of them cut short or with one byte changed. */
Test(json, compact_object_keeps_the_value_and_drops_the_named_members)
{
    unsigned seed = 42;
    static const char *const drop[] = {"id", "version"};
    for (int round = 0; round < 3000; round++) {
        ts_buf_t text = {0}, out = {0};
        /* four members in a random order (dropped ones first, last, side
         * by side), with random whitespace around the commas */
        int order[4] = {0, 1, 2, 3};
        for (int i = 3; i > 0; i--) {
            int j = rand_r(&seed) % (i + 1), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        ts_buf_puts(&text, rand_r(&seed) % 2 ? "{" : " { ");
        for (int i = 0; i < 4; i++) {
            if (i)
                ts_buf_puts(&text, rand_r(&seed) % 2 ? "," : " ,\n");
            switch (order[i]) {
            case 0: ts_buf_puts(&text, "\"id\":\"x\""); break;
            case 1: ts_buf_puts(&text, "\"version\" : 3 "); break;
            case 2: ts_buf_puts(&text, "\"k\":"); random_json(&text, &seed, 3); break;
            default: ts_buf_puts(&text, "\"z\":"); random_json(&text, &seed, 3);
            }
        }
        ts_buf_puts(&text, rand_r(&seed) % 2 ? "}" : " }");
        ts_json_member_t dropped[2];
        const char *end = text.data + text.len;
        const char *obj = text.data + (text.data[0] == ' '); /* at its '{' */
        cr_assert_eq(ts_json_compact_object(&out, obj, end, drop, 2, dropped, 8), end, "%s",
                     text.data);
        cr_assert(dropped[0].value && memcmp(dropped[0].value, "\"x\"", 3) == 0);
        cr_assert(dropped[1].value && memcmp(dropped[1].value, "3", 1) == 0);
        cJSON *want = cJSON_Parse(text.data), *got = cJSON_Parse(out.data);
        cr_assert_not_null(want, "%s", text.data);
        cr_assert_not_null(got, "%s -> %s", text.data, out.data);
        while (cJSON_GetObjectItemCaseSensitive(want, "id"))
            cJSON_DeleteItemFromObjectCaseSensitive(want, "id");
        cJSON_DeleteItemFromObjectCaseSensitive(want, "version");
        cr_assert(cJSON_Compare(want, got, true), "%s -> %s", text.data, out.data);
        ts_buf_t esc = {0}; /* an escaped top-level key is not compared: refused */
        static const char escaped_key[] = "{\"\\u0069d\":1}";
        cr_assert_null(ts_json_compact_object(&esc, escaped_key, escaped_key + strlen(escaped_key),
                                              drop, 2, NULL, 8));
        ts_buf_free(&esc);
        for (size_t i = 0; i < out.len; i++) /* no whitespace left outside strings */
            cr_assert(!strchr("\n\t\r", out.data[i]), "%s", out.data);
        cJSON_Delete(want);
        cJSON_Delete(got);
        for (int m = 0; m < 4; m++) { /* mutants: never passed unless cJSON reads them */
            char *mut = strdup(text.data);
            size_t len = text.len;
            if (m == 0)
                len = (size_t)rand_r(&seed) % len;
            else
                mut[rand_r(&seed) % len] = "{}[]\",:\\0-e. a"[rand_r(&seed) % 15];
            ts_buf_t cut = {0};
            const char *stop = ts_json_compact_object(&cut, mut, mut + len, drop, 2, NULL, 8);
            size_t read = stop ? (size_t)(stop - mut) : 0;
            if (read && ts_utf8_valid(mut, read)) {
                cJSON *j = cJSON_ParseWithLength(mut, read);
                cr_assert_not_null(j, "passed what cJSON refuses: %.*s", (int)read, mut);
                cJSON_Delete(j);
            }
            ts_buf_free(&cut);
            free(mut);
        }
        ts_buf_free(&text);
        ts_buf_free(&out);
    }
}

/* A random object over a few keys (some twice), values of any kind. */
static void random_object(ts_buf_t *b, unsigned *seed, int members, bool objects)
{
    static const char *keys[] = {"a", "b", "status", "notes", "x y"};
    ts_buf_puts(b, "{");
    for (int i = 0; i < members; i++) {
        ts_buf_printf(b, "%s\"%s\":", i ? "," : "", keys[rand_r(seed) % 5]);
        int kind = rand_r(seed) % 6;
        if (kind == 0)
            ts_buf_puts(b, "null");
        else if (kind == 1 && objects)
            ts_buf_puts(b, "{\"n\":1}");
        else
            random_json(b, seed, kind == 2 ? 2 : 0);
    }
    ts_buf_puts(b, "}");
}

/* Merging on text gives what merging the trees gives, member order
 * included, or declines (then the tree does it). */
Test(json, text_merge_is_the_tree_merge)
{
    unsigned seed = 7;
    int merged = 0;
    for (int round = 0; round < 4000; round++) {
        ts_buf_t target = {0}, patch = {0}, out = {0};
        random_object(&target, &seed, rand_r(&seed) % 6, true);
        random_object(&patch, &seed, rand_r(&seed) % 4, rand_r(&seed) % 4 == 0);
        int rc = ts_json_text_merge(&out, target.data, target.len, patch.data, patch.len);
        cr_assert(rc == 0 || rc == 1);
        if (rc == 0) {
            cJSON *p = cJSON_Parse(patch.data);
            cJSON *want = ts_json_merge_patch(cJSON_Parse(target.data), p);
            cJSON *got = cJSON_Parse(out.data);
            cr_assert_not_null(got, "%s + %s -> %s", target.data, patch.data, out.data);
            char *w = cJSON_PrintUnformatted(want), *g = cJSON_PrintUnformatted(got);
            cr_assert_str_eq(g, w, "%s + %s", target.data, patch.data);
            cJSON_free(w);
            cJSON_free(g);
            cJSON_Delete(want);
            cJSON_Delete(got);
            cJSON_Delete(p);
            merged++;
        }
        ts_buf_free(&target);
        ts_buf_free(&patch);
        ts_buf_free(&out);
    }
    cr_assert_gt(merged, 2000, "most patches are merged on text (%d)", merged);
}

Test(json, utf8)
{
    cr_assert(ts_utf8_valid("plain ascii text, long enough for the fast path", 47));
    cr_assert(ts_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
    cr_assert_not(ts_utf8_valid("\xc3\x28", 2), "bad continuation");
    cr_assert_not(ts_utf8_valid("\xc0\xaf", 2), "overlong");
    cr_assert_not(ts_utf8_valid("\xed\xa0\x80", 3), "surrogate");
    cr_assert_not(ts_utf8_valid("\xf4\x90\x80\x80", 4), "beyond U+10FFFF");
    cr_assert_not(ts_utf8_valid("abc\xe2\x82", 5), "truncated");
    cr_assert_not(ts_utf8_valid("\xff", 1));
    /* a sequence, whole or broken, at every position of ASCII up to 80
     * long (the 32-, 8- and 1-byte steps) */
    static const struct {
        const char *seq;
        bool valid;
    } seqs[] = {{"\xc3\xa9", true},  {"\xe2\x82\xac", true}, {"\xf0\x9f\x98\x80", true},
                {"\xc3\x28", false}, {"\xed\xa0\x80", false}, {"\x80", false}};
    char text[96];
    for (size_t k = 0; k < sizeof seqs / sizeof *seqs; k++)
        for (size_t n = 0; n <= 80; n++)
            for (size_t at = 0; at <= n; at++) {
                size_t len = strlen(seqs[k].seq);
                memset(text, 'a', sizeof text);
                memcpy(text + at, seqs[k].seq, len);
                cr_assert_eq(ts_utf8_valid(text, n + len), seqs[k].valid, "%zu at %zu of %zu", k,
                             at, n + len);
            }
}

/* Mutations packed one after another read back as written, a pack cut
 * short or damaged stops the reading there, and the index finds a seq's
 * pack by range. */
Test(outbox, packs_round_trip_and_the_index_finds_ranges)
{
    ts_buf_t pack = {0};
    for (int i = 0; i < 50; i++) {
        char body[64];
        int len = snprintf(body, sizeof body, "{\"n\":%d}", i);
        ts_record_t *r = ts_record_new(TS_REC_MUTATION, "sessions", "doc-1", 5,
                                       i % 7 ? body : NULL, i % 7 ? (size_t)len : 0);
        r->seq = 100 + i * 2;
        r->version = i;
        r->at_ms = 1764547200000LL + i;
        r->op = i % 7 ? TS_OP_UPDATE : TS_OP_DELETE;
        snprintf(r->mutation, sizeof r->mutation, "m-%d", i);
        ts_copy_text(r->client, sizeof r->client, i % 2 ? "zmq:00aa" : "");
        cr_assert_eq(ts_pack_append(&pack, r), 0);
        ts_record_free_list(r);
    }
    size_t pos = 0;
    ts_packed_t m;
    for (int i = 0; i < 50; i++) {
        cr_assert(ts_pack_next(pack.data, pack.len, &pos, &m), "record %d", i);
        char body[64], mutation[16];
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        snprintf(mutation, sizeof mutation, "m-%d", i);
        cr_assert_eq(m.seq, 100 + i * 2);
        cr_assert_eq(m.base_version, i);
        cr_assert_eq(m.at_ms, 1764547200000LL + i);
        cr_assert_eq(m.op, i % 7 ? TS_OP_UPDATE : TS_OP_DELETE);
        cr_assert_str_eq(m.mutation, mutation);
        cr_assert_str_eq(m.client, i % 2 ? "zmq:00aa" : "");
        cr_assert_str_eq(m.collection, "sessions");
        cr_assert_str_eq(m.doc_id, "doc-1");
        if (i % 7) {
            cr_assert_eq(m.body_len, strlen(body));
            cr_assert_eq(memcmp(m.body, body, m.body_len), 0);
        } else {
            cr_assert_null(m.body);
        }
    }
    cr_assert_not(ts_pack_next(pack.data, pack.len, &pos, &m), "the end");
    cr_assert_eq(pos, pack.len);
    /* cut short, or a size that overruns: the records before still read */
    for (size_t cut = 1; cut < 200; cut += 7) {
        size_t p = 0, n = 0;
        while (ts_pack_next(pack.data, pack.len - cut, &p, &m))
            n++;
        cr_assert_lt(n, 50);
        cr_assert_leq(p, pack.len - cut);
    }
    uint32_t huge = UINT32_MAX;
    memcpy(pack.data, &huge, 4);
    pos = 0;
    cr_assert_not(ts_pack_next(pack.data, pack.len, &pos, &m));
    ts_buf_free(&pack);

    ts_pack_index_t index = {0};
    for (int i = 0; i < 100; i++)
        ts_pack_index_add(&index, i * 10 + 1, i * 10 + 5, 5);
    cr_assert_eq(index.n, 100);
    cr_assert_null(ts_pack_index_find(&index, 0));
    cr_assert_null(ts_pack_index_find(&index, 7), "between two packs");
    cr_assert_null(ts_pack_index_find(&index, 996));
    for (int i = 0; i < 100; i++)
        for (int k = 1; k <= 5; k++)
            cr_assert_eq(ts_pack_index_find(&index, i * 10 + k)->first, i * 10 + 1);
    ts_pack_index_remove(&index, ts_pack_index_find(&index, 503));
    cr_assert_null(ts_pack_index_find(&index, 503));
    cr_assert_eq(ts_pack_index_find(&index, 513)->first, 511);
    cr_assert_eq(index.n, 99);
    ts_pack_index_free(&index);
}

Test(util, uuidv7_is_versioned_and_increasing)
{
    char prev[37] = "", cur[37];
    for (int i = 0; i < 10000; i++) {
        ts_uuidv7(cur);
        cr_assert_eq(strlen(cur), 36);
        cr_assert_eq(cur[14], '7');
        cr_assert(strchr("89ab", cur[19]) != NULL, "variant bits");
        cr_assert_gt(strcmp(cur, prev), 0, "ids increase: %s after %s", cur, prev);
        memcpy(prev, cur, sizeof cur);
    }
}

Test(util, uuid_format_is_8_4_4_4_12_lowercase_hex)
{
    uint8_t b[16];
    for (int i = 0; i < 16; i++)
        b[i] = (uint8_t)(i * 17 + 0x0a);
    char out[37];
    memset(out, '?', sizeof out);
    ts_uuid_format(b, out);
    cr_assert_str_eq(out, "0a1b2c3d-4e5f-7081-92a3-b4c5d6e7f809");
}

/* Every byte value at every position of strings up to 40 long (the SSE2,
 * eight-byte and byte steps): the length of the plain prefix is the
 * position of the first '"', '\\' or control byte, as a plain loop finds it. */
Test(util, json_plain_len_stops_at_the_first_byte_to_escape)
{
    char text[48];
    for (int c = 0; c < 256; c++)
        for (int n = 0; n <= 40; n++)
            for (int at = 0; at <= n; at++) {
                memset(text, 'a', sizeof text);
                if (at < n)
                    text[at] = (char)c;
                size_t expect = 0;
                while (expect < (size_t)n && (unsigned char)text[expect] >= 0x20 &&
                       text[expect] != '"' && text[expect] != '\\')
                    expect++;
                size_t got = ts_json_plain_len(text, text + n);
                cr_assert_eq(got, expect, "byte %d at %d of %d: %zu", c, at, n, got);
            }
}

Test(util, ids)
{
    cr_assert(ts_valid_id("abc-DEF_123", 11));
    cr_assert_not(ts_valid_id("", 0));
    cr_assert_not(ts_valid_id("a b", 3));
    cr_assert_not(ts_valid_id("a/b", 3));
    char long_id[66];
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    cr_assert(ts_valid_id(long_id, 64));
    cr_assert_not(ts_valid_id(long_id, 65));
}

Test(util, rfc3339_round_trip)
{
    int64_t ms;
    cr_assert_eq(ts_parse_rfc3339("2026-01-01T00:00:00.000Z", &ms), 0);
    cr_assert_eq(ms, 1767225600000LL);
    char out[32];
    ts_rfc3339(ms + 90061001, out);
    cr_assert_str_eq(out, "2026-01-02T01:01:01.001Z");
    cr_assert_eq(ts_parse_rfc3339("2026-01-02T03:01:01+02:00", &ms), 0);
    cr_assert_eq(ms, 1767315661000LL);
    cr_assert_eq(ts_parse_rfc3339("2024-02-29T00:00:00Z", &ms), 0, "leap day");
    cr_assert_eq(ts_parse_rfc3339("2026-02-29T00:00:00Z", &ms), -1, "not a leap year");
    cr_assert_eq(ts_parse_rfc3339("2026-13-01T00:00:00Z", &ms), -1);
    cr_assert_eq(ts_parse_rfc3339("2026-01-01", &ms), -1);
    cr_assert_eq(ts_parse_rfc3339("2026-01-01T00:00:00", &ms), -1, "offset required");
    cr_assert_eq(ts_parse_rfc3339("2026-01-01T00:00:00Zjunk", &ms), -1);
}

/* ts_rfc3339 against gmtime_r + snprintf (floored to whole seconds, so
 * times before 1970 read the usual way), and back through the parser. */
static void rfc3339_reference(int64_t wall_ms, char out[32])
{
    int64_t secs = wall_ms >= 0 ? wall_ms / 1000 : -((-wall_ms + 999) / 1000);
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, (int)(wall_ms - secs * 1000) % 1000);
}

Test(util, rfc3339_formats_every_time_of_years_0000_to_9999)
{
    const int64_t first = -62167219200000LL, last = 253402300799999LL;
    const int64_t edges[] = {0, -1, 1, first, last, 951782400000LL /* 2000-02-29 */,
                             -2208988800001LL /* 1899-12-31T23:59:59.999 */};
    char got[32], want[32];
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        ts_rfc3339(edges[i], got);
        rfc3339_reference(edges[i], want);
        cr_assert_str_eq(got, want, "%lld", (long long)edges[i]);
    }
    uint64_t x = 88172645463325252ULL; /* xorshift64: the same draws every run */
    for (int i = 0; i < 300000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t ms = first + (int64_t)(x % (uint64_t)(last - first + 1));
        ts_rfc3339(ms, got);
        rfc3339_reference(ms, want);
        cr_assert_str_eq(got, want, "%lld", (long long)ms);
        int64_t back;
        cr_assert_eq(ts_parse_rfc3339(got, &back), 0, "%s", got);
        cr_assert_eq(back, ms, "%s", got);
    }
    ts_rfc3339(first - 1, got);
    cr_assert_str_eq(got, "0000-01-01T00:00:00.000Z", "clamped");
    ts_rfc3339(INT64_MAX, got);
    cr_assert_str_eq(got, "9999-12-31T23:59:59.999Z", "clamped");
}

Test(util, parse_i64)
{
    int64_t v;
    cr_assert_eq(ts_parse_i64("-42", &v), 0);
    cr_assert_eq(v, -42);
    cr_assert_eq(ts_parse_i64("42x", &v), -1);
    cr_assert_eq(ts_parse_i64("", &v), -1);
    cr_assert_eq(ts_parse_i64("99999999999999999999", &v), -1);
}

Test(util, buffer_int)
{
    static const long long values[] = {0, 7, -7, 10, 999, -1000, 2147483648LL, LLONG_MAX, LLONG_MIN};
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        char want[32];
        snprintf(want, sizeof want, "%lld", values[i]);
        ts_buf_t b = {0};
        cr_assert_eq(ts_buf_int(&b, values[i]), 0);
        cr_assert_str_eq(b.data, want);
        ts_buf_free(&b);
    }
}

Test(util, buffer_json_string_escapes)
{
    ts_buf_t b = {0};
    ts_buf_json_string(&b, "a\"b\\c\n\x01", 7);
    cr_assert_str_eq(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    ts_buf_reset(&b);
    ts_buf_json_string(&b, "plain-id_0123", 13);
    ts_buf_json_string(&b, "\ttab\rends\x1f", 10);
    ts_buf_json_string(&b, "", 0);
    cr_assert_str_eq(b.data, "\"plain-id_0123\"\"\\ttab\\rends\\u001f\"\"\"");
    /* a character to escape at every position of strings up to 40 long,
     * UTF-8 beside it: what cJSON reads back is the input */
    static const char special[] = {'"', '\\', '\n', '\x01', '\x1f', 'x'};
    for (size_t k = 0; k < sizeof special; k++)
        for (int n = 1; n <= 40; n++)
            for (int at = 0; at < n; at++) {
                char in[48];
                for (int i = 0; i < n; i++)
                    in[i] = i % 5 == 4 ? '\xc3' : i % 5 == 0 && i ? '\xa9' : 'a';
                in[at] = special[k];
                if (at + 1 < n && (unsigned char)in[at + 1] == 0xa9)
                    in[at + 1] = 'b'; /* keep the UTF-8 whole */
                if (at > 0 && (unsigned char)in[at - 1] == 0xc3)
                    in[at - 1] = 'c';
                in[n] = '\0';
                ts_buf_reset(&b);
                ts_buf_json_string(&b, in, (size_t)n);
                cJSON *j = cJSON_Parse(b.data);
                cr_assert(cJSON_IsString(j) && strcmp(j->valuestring, in) == 0, "%s", b.data);
                cJSON_Delete(j);
            }
    ts_buf_free(&b);
}

/* A server's Retry-After beyond 2^31 - 1 seconds, as seconds or as a date:
 * its milliseconds overflowed (found by tests/fuzz/fuzz_sse.c); now read as
 * 2^31 - 1 seconds. */
Test(api, retry_after_is_read_without_overflow)
{
    cr_assert_eq(api_parse_retry_after("5"), 5000);
    cr_assert_eq(api_parse_retry_after("-1"), -1);
    cr_assert_eq(api_parse_retry_after("2147483647"), 2147483647LL * 1000);
    cr_assert_eq(api_parse_retry_after("333333333333333333"), 2147483647LL * 1000);
    cr_assert_eq(api_parse_retry_after("9223372036854775807"), 2147483647LL * 1000);
    cr_assert_eq(api_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), 0);
    int64_t in_a_while = api_parse_retry_after("Fri, 21 Oct 2050 07:28:00 GMT");
    cr_assert(in_a_while > 0 && in_a_while < 2147483647LL * 1000, "%lld", (long long)in_a_while);
    cr_assert_eq(api_parse_retry_after("Wed, 21 Oct 777777777 07:28:00 GMT"), 2147483647LL * 1000);
    cr_assert_eq(api_parse_retry_after("Wed, 21 Oct 99999 07:28:00 GMT"), 2147483647LL * 1000);
}

Test(hist, quantiles_within_resolution)
{
    ts_hist_t h = {0};
    for (int i = 1; i <= 10000; i++)
        ts_hist_add(&h, i);
    int64_t p50 = ts_hist_quantile(&h, 0.5), p99 = ts_hist_quantile(&h, 0.99);
    cr_assert(p50 >= 5000 && p50 <= 5000 * 1.13, "p50 %lld", (long long)p50);
    cr_assert(p99 >= 9900 && p99 <= 10000, "p99 %lld", (long long)p99);
    cr_assert_eq(ts_hist_quantile(&h, 1.0), 10000);
}

/* Prometheus gets cumulative counts per fixed bound: monotonic, within the
 * histogram's ~9% resolution of the exact count, and complete at +Inf. */
Test(hist, cumulative_buckets)
{
    ts_hist_t h = {0};
    for (int i = 1; i <= 20000; i++)
        ts_hist_add(&h, i);
    ts_hist_add(&h, 50000000); /* beyond the last bound: only in count */
    uint64_t cum[32];
    ts_hist_cumulative(&h, cum);
    for (int i = 0; i < ts_hist_nbounds; i++) {
        int64_t le = ts_hist_bounds[i];
        uint64_t exact = (uint64_t)(le < 20000 ? le : 20000);
        cr_assert(cum[i] <= exact && cum[i] >= exact * 0.88, "le %lld: %llu, exact %llu",
                  (long long)le, (unsigned long long)cum[i], (unsigned long long)exact);
        cr_assert(i == 0 || cum[i] >= cum[i - 1]);
    }
    cr_assert_eq(cum[ts_hist_nbounds - 1], 20000);
    cJSON *j = ts_hist_buckets_json(&h);
    cr_assert_eq(cJSON_GetObjectItem(j, "count")->valuedouble, 20001);
    cr_assert_eq(cJSON_GetObjectItem(j, "sum")->valuedouble, 20000.0 * 20001 / 2 + 50000000);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "le")), ts_hist_nbounds);
    cJSON_Delete(j);
}

Test(config, lua_file_and_flags)
{
    char path[] = "/tmp/ts-config-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "data = '/tmp/from-file'\nendpoint = 'tcp://127.0.0.1:1'\n"
                       "durability = 'relaxed'\ncollections = {'sessions', 'notes_v2'}\n"
                       "auth = { client_id = 'clinic' }\nclinic = { name = 'North', beds = 3 }\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    ts_config_t c;
    ts_config_init(&c);
    char err[256];
    char *argv[] = {"therasyncd", "--config", path, "--endpoint", "tcp://127.0.0.1:2", NULL};
    cr_assert_eq(ts_config_parse_args(&c, 5, argv, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.data_dir, "/tmp/from-file");
    cr_assert_str_eq(c.endpoint, "tcp://127.0.0.1:2", "flags win over the file");
    cr_assert(c.durability_relaxed);
    cr_assert_eq(c.ncollections, 2);
    cr_assert_str_eq(c.collections[1], "notes_v2");
    cr_assert_str_eq(c.auth.client_id, "clinic");
    cr_assert_str_eq(c.auth.client_secret, "dev-secret", "defaults stay");
    cr_assert_str_eq(ts_json_string(c.clinic, "name"), "North");
    ts_config_free(&c);
    unlink(path);
}

Test(config, bad_files_and_flags_are_refused)
{
    char path[] = "/tmp/ts-config-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "durability = 'sometimes'\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    ts_config_t c;
    ts_config_init(&c);
    char err[256];
    cr_assert_eq(ts_config_load(&c, path, err, sizeof err), -1);
    cr_assert(strstr(err, "durability") != NULL, "%s", err);
    cr_assert_eq(ts_config_load(&c, "/nonexistent/x.lua", err, sizeof err), -1);
    char *argv[] = {"therasyncd", "--bogus", NULL};
    cr_assert_eq(ts_config_parse_args(&c, 2, argv, err, sizeof err), -1);
    char *argv2[] = {"therasyncd", "--log-level", "loud", NULL};
    cr_assert_eq(ts_config_parse_args(&c, 3, argv2, err, sizeof err), -1);
    ts_config_free(&c);
    unlink(path);
}

Test(call, method_names_round_trip)
{
    for (int m = 0; m < TS_M_NONE; m++)
        cr_assert_eq(ts_method_lookup(ts_method_name((ts_method_t)m)), (ts_method_t)m);
    cr_assert_eq(ts_method_lookup("nope"), TS_M_NONE);
    cr_assert_str_eq(ts_error_reason(TS_E_TOO_LARGE), "too_large");
}

/* A send to an actor that has stopped (its PULL closed) gives up instead of
 * blocking for ever: how the daemon used to hang at shutdown. A live peer
 * takes any number of messages without a wait (no high-water mark). */
Test(actor, inproc_send_to_a_stopped_peer_gives_up, .timeout = 20)
{
    void *zctx = zmq_ctx_new();
    void *pull = ts_inproc_socket(zctx, ZMQ_PULL, "inproc://test-peer", true);
    void *push = ts_inproc_socket(zctx, ZMQ_PUSH, "inproc://test-peer", false);
    cr_assert(pull && push);
    for (int i = 0; i < 50000; i++)
        cr_assert_eq(ts_wire_send(push, 1, NULL, 0), 0, "send %d to a live peer", i);
    zmq_close(pull);
    /* The pipe goes away once ZeroMQ has processed the close; until then a
     * send may still be queued into it. */
    int64_t t0 = ts_mono_us();
    int rc = 0;
    for (int i = 0; i < 3000 && rc == 0; i++) {
        rc = ts_wire_send(push, 1, NULL, 0);
        usleep(1000);
    }
    int64_t waited_ms = (ts_mono_us() - t0) / 1000;
    cr_assert_eq(rc, -1, "the send to a stopped peer fails");
    cr_assert_eq(errno, EAGAIN);
    cr_assert(waited_ms < 5000, "it gave up after %lld ms", (long long)waited_ms);
    zmq_close(push);
    zmq_ctx_term(zctx);
}

/* What cJSON would cut or misread in a string; escapes read in turn. */
Test(json, string_fault_finds_nul_and_escapes_cjson_misreads)
{
    static const char *const bad[] = {
        "\"abc\\u0000def\"", "\"\\uZZZZ\"", "\"\\u12xy\"", "\"\\u00\"", "\"\\ud800x\"",
        "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\q\"", "\"a\\\\\\u0000\"", "[\"x\",\"\\",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_not_null(ts_json_string_fault(bad[i], strlen(bad[i])), "%s", bad[i]);
    cr_assert_str_eq(ts_json_string_fault("\"a\\u0000\"", 9), "\\u0000 (NUL) in a string");
    cr_assert_str_eq(ts_json_string_fault("\"a\0b\"", 5), "a NUL byte");
    static const char *const good[] = {
        "\"\\\\u0000\"", "\"\\u00e9 \\ud83d\\ude00 \\\" \\\\ \\/ \\b \\f \\n \\r \\t\"",
        "{\"a\":[1,\"\\\\\",\"\\\\\\\\\"]}", "1e400", "",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        cr_assert_null(ts_json_string_fault(good[i], strlen(good[i])), "%s", good[i]);
}
