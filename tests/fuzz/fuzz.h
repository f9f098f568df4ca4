/* fuzz.h — what the libFuzzer harnesses of tests/fuzz share. Each harness
 * is one fuzz_NAME.c defining LLVMFuzzerTestOneInput; a broken invariant
 * aborts, which libFuzzer reports as a crash and saves the input. */
#ifndef TS_FUZZ_H
#define TS_FUZZ_H

#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Aborts with a message when cond is false. */
#define FUZZ_CHECK(cond, ...)                                                                     \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "fuzz: %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fputc('\n', stderr);                                                                  \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

/* item as compact JSON text (malloc'd, NUL-terminated), numbers exact: two
 * trees print the same exactly when they hold the same values in the same
 * order. */
static inline char *fuzz_print(const cJSON *item)
{
    ts_buf_t b = {0};
    FUZZ_CHECK(ts_buf_json(&b, item) == 0, "ts_buf_json failed");
    return ts_buf_take(&b, NULL);
}

/* Parses text[0..len) as exactly one JSON value (nothing but whitespace
 * after it), as cJSON reads it; NULL when it does not. */
static inline cJSON *fuzz_parse(const char *text, size_t len)
{
    const char *end = NULL;
    cJSON *item = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!item)
        return NULL;
    while (end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end != text + len) {
        cJSON_Delete(item);
        return NULL;
    }
    return item;
}

/* Whether text[0..len) is what the front door lets in: valid UTF-8, no
 * string cJSON would read wrong. */
static inline bool fuzz_admissible(const char *text, size_t len)
{
    return ts_utf8_valid(text, len) && !ts_json_string_fault(text, len);
}

/* The object text[0..len) as the store keeps it (malloc'd, its length in
 * *out_len), or NULL when the front door would refuse it (not admissible,
 * not an object): compacted as written by the front door's fast way when
 * it is strict JSON, else printed from cJSON's tree by its general way;
 * without the members named in drop. */
static inline char *fuzz_stored(const char *text, size_t len, const char *const *drop,
                                size_t ndrop, size_t *out_len)
{
    if (!fuzz_admissible(text, len))
        return NULL;
    cJSON *tree = fuzz_parse(text, len);
    if (!cJSON_IsObject(tree)) {
        cJSON_Delete(tree);
        return NULL;
    }
    ts_buf_t out = {0};
    const char *p = text, *end = text + len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (!ts_json_compact_object(&out, p, end, drop, ndrop, NULL, 64)) { /* the general way */
        for (size_t i = 0; i < ndrop; i++)
            while (cJSON_GetObjectItemCaseSensitive(tree, drop[i]))
                cJSON_DeleteItemFromObjectCaseSensitive(tree, drop[i]);
        ts_buf_reset(&out);
        FUZZ_CHECK(ts_buf_json(&out, tree) == 0, "print");
    }
    cJSON_Delete(tree);
    return ts_buf_take(&out, out_len);
}

/* Whether text[0..len) holds no control byte but JSON's whitespace
 * (\t \n \r): cJSON takes every byte up to 0x20 for whitespace and reads
 * raw control bytes in strings, which JSON has neither of; the text
 * walkers of json.h are held to JSON. */
static inline bool fuzz_no_controls(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 && text[i] != '\t' && text[i] != '\n' &&
            text[i] != '\r')
            return false;
    return true;
}

#endif
