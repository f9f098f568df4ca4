/* json.h — JSON helpers on top of cJSON. */
#ifndef THERASYNC_JSON_H
#define THERASYNC_JSON_H

#include "therasync/util.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when bytes[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
bool ts_utf8_valid(const char *bytes, size_t len);

/* Applies an RFC 7396 merge patch to target (consumed) and returns the
 * result, or NULL when memory ran out (target is then freed). */
cJSON *ts_json_merge_patch(cJSON *target, const cJSON *patch);

/* Appends item as compact JSON text, as cJSON_PrintUnformatted does but
 * at a fraction of its cost (cJSON prints every number through sprintf and
 * sscanf; most of ours are small integers). One difference: a number is
 * printed so that it reads back exactly (cJSON settles for 15 digits when
 * they come within an epsilon, so 0.30000000000000004 came back as 0.3).
 * 0, or -1 when memory ran out. */
int ts_buf_json(ts_buf_t *buf, const cJSON *item);

/* The SHA-256 of a document's canonical body, the per-document part of the
 * Clinic API's content digest (docs/CLINIC_API.md): the document object
 * without its top-level "id" member, printed by ts_buf_json (members in
 * their order, no whitespace). Both clinic-api and the engine hash these
 * same bytes. A text that does not parse as an object hashes as it is.
 * 0, or -1 when memory ran out. */
int ts_json_content_sha256(const cJSON *doc, uint8_t out[32]);
int ts_json_text_content_sha256(const char *text, size_t len, uint8_t out[32]);

/* The fields only the server may set; a client's are dropped. */
#define TS_JSON_SERVER_FIELDS "version", "updated_at", "deleted"

/* Removes the server's fields from a document or patch, in one walk of the
 * object. */
void ts_json_strip_server_fields(cJSON *object);

/* Getters that return NULL / fallback when the field is absent or of
 * another type. */
const char *ts_json_string(const cJSON *object, const char *key);
bool ts_json_int(const cJSON *object, const char *key, long long *value);

/* One member of an object given as text: the key as written (without its
 * quotes; escaped when it holds backslash escapes) and the value's raw
 * JSON text. */
typedef struct {
    const char *key;
    size_t key_len;
    bool escaped;
    const char *value;
    size_t value_len;
} ts_json_member_t;

/* Steps through the top-level members of an object given as text
 * (well-formed, as for ts_json_text_field): start with *pos = 0; each call
 * fills *m and returns true, or returns false after the last member. */
bool ts_json_text_member(const char *text, size_t len, size_t *pos, ts_json_member_t *m);

/* The start of the value of the top-level member key of the object text at
 * text (up to end), without reading the value itself; NULL when there is
 * no such member. For finding a large value whose end is found otherwise. */
const char *ts_json_text_find(const char *text, const char *end, const char *key, size_t key_len);

/* Finds the top-level member key of a JSON object given as text (well-formed,
 * as cJSON prints it) without parsing the rest: sets *value / *value_len to
 * the member's raw JSON text (a string keeps its quotes and escapes).
 * Returns false when text is not an object or has no such member. A key
 * written with escapes in the text is compared after unescaping. */
bool ts_json_text_field(const char *text, size_t len, const char *key, size_t key_len,
                        const char **value, size_t *value_len);

/* Reads the object text at p (up to end, known to be valid UTF-8) as strict
 * JSON, RFC 8259 as written, nested at most max_depth deep, its strings
 * escaping no NUL and no unpaired surrogate: text that cJSON reads to the
 * same value, and stricter than cJSON (no leading zeros, no "1."), so that
 * a caller can take a fast way on what passes and leave the rest to cJSON.
 * In the same pass it appends the object to out without the whitespace
 * between its tokens and without its top-level members whose key is one of
 * drop[0..ndrop);
 * dropped[i] (when not NULL) gets the first member left out for drop[i], or
 * value NULL. Returns the position after the object, or NULL when it is not
 * strict JSON, a top-level key is written with escapes (not compared as
 * written: read such an object with cJSON), or memory ran out. */
const char *ts_json_compact_object(ts_buf_t *out, const char *p, const char *end,
                                   const char *const *drop, size_t ndrop,
                                   ts_json_member_t *dropped, int max_depth);

/* Reads the object text at p (up to end) member by member, strictly, for a
 * fast path that knows the members it expects: fn gets each key as written
 * and the start of its value, reads the value and returns the position
 * after it, or NULL to give up. Returns the position after the object, or
 * NULL when fn gave up, the text is not strict JSON around the values, or
 * a key is written with escapes. */
typedef const char *ts_json_member_fn(void *arg, const char *key, size_t key_len,
                                      const char *value, const char *end);
const char *ts_json_strict_members(const char *p, const char *end, ts_json_member_fn *fn,
                                   void *arg);

/* What cJSON would let through and get wrong in the strings of text
 * (valid UTF-8): a NUL byte, an escape that is not one of JSON's (cJSON
 * reads "\uZZZZ" as NUL), or "\u0000" (cJSON cuts the string there). NULL
 * when there is none; else what was found, for an error message. A
 * backslash outside strings (invalid JSON) is judged as an escape. */
const char *ts_json_string_fault(const char *text, size_t len);

/* Whether item holds a number that overflowed a double: 1e400 reads as
 * infinity, which JSON cannot write (it would come back as null). With
 * path, the first one's place is appended to it ("doc.a[2]"). */
bool ts_json_overflow(const cJSON *item, ts_buf_t *path);

/* The string at p when it is strict JSON written without escapes: the
 * position after its closing quote; NULL otherwise. */
const char *ts_json_plain_string(const char *p, const char *end);

/* The number at p when it is an integer written as one (no fraction, no
 * exponent, at most 15 digits, so exact as a double): the position after
 * it, with its value in *value; NULL otherwise. */
const char *ts_json_plain_int(const char *p, const char *end, long long *value);

/* RFC 7396 on text: appends to out what ts_json_merge_patch makes of the
 * object text target with the object text patch (both well-formed), member
 * order included, without building either tree. Returns 0; 1 when the
 * patch is one it leaves to the tree (an object value, which merges into
 * the target's; a key twice; an escaped key; more than 16 members); -1
 * when memory ran out. */
int ts_json_text_merge(ts_buf_t *out, const char *target, size_t target_len, const char *patch,
                       size_t patch_len);

/* The number of elements of a JSON array given as text (well-formed, as
 * cJSON prints it), without parsing them; -1 when text is not an array. */
long ts_json_text_count(const char *text, size_t len);

/* Steps through the elements of an array given as text (well-formed, as
 * for ts_json_text_field): start with *pos = 0; each call sets *value /
 * *value_len to the next element's raw JSON text and returns true, or
 * returns false after the last one. */
bool ts_json_text_element(const char *text, size_t len, size_t *pos, const char **value,
                          size_t *value_len);

#endif
