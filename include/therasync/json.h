/* json.h — JSON helpers on top of cJSON. */
#ifndef THERASYNC_JSON_H
#define THERASYNC_JSON_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* True when bytes[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
bool ts_utf8_valid(const char *bytes, size_t len);

/* Applies an RFC 7396 merge patch to target (consumed) and returns the
 * result, or NULL when memory ran out (target is then freed). */
cJSON *ts_json_merge_patch(cJSON *target, const cJSON *patch);

/* Getters that return NULL / fallback when the field is absent or of
 * another type. */
const char *ts_json_string(const cJSON *object, const char *key);
bool ts_json_int(const cJSON *object, const char *key, long long *value);

/* Finds the top-level member key of a JSON object given as text (well-formed,
 * as cJSON prints it) without parsing the rest: sets *value / *value_len to
 * the member's raw JSON text (a string keeps its quotes and escapes).
 * Returns false when text is not an object or has no such member. A key
 * written with escapes in the text is compared after unescaping. */
bool ts_json_text_field(const char *text, size_t len, const char *key, size_t key_len,
                        const char **value, size_t *value_len);

/* The number of elements of a JSON array given as text (well-formed, as
 * cJSON prints it), without parsing them; -1 when text is not an array. */
long ts_json_text_count(const char *text, size_t len);

#endif
