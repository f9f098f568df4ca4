/* fuzz_merge.c — RFC 7396 merge patch, on text and on trees: whenever
 * ts_json_text_merge takes a patch (returns 0), its text must read as the
 * very document ts_json_merge_patch makes of the same target and patch
 * (members, order and values). The store uses the text merge for most
 * updates and the tree for the rest, so a difference would make the same
 * update store two different documents.
 *
 * Input: the target, a newline, the patch. Each is made into the text the
 * store holds (src/store/write.c): compacted as the front door's fast way
 * does when it is strict JSON, else printed from cJSON's tree as its
 * general way does, without the id and the server's fields. */
#include "fuzz.h"

static const char *const drop[] = {"id", TS_JSON_SERVER_FIELDS};

static char *as_stored(const char *text, size_t len, size_t *out_len)
{
    return fuzz_stored(text, len, drop, sizeof drop / sizeof *drop, out_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    if (!nl)
        return 0;
    size_t tlen, plen;
    char *target = as_stored((const char *)data, (size_t)(nl - (const char *)data), &tlen);
    char *patch = target ? as_stored(nl + 1, size - (size_t)(nl + 1 - (const char *)data), &plen)
                         : NULL;
    if (!target || !patch) {
        free(target);
        free(patch);
        return 0;
    }
    ts_buf_t out = {0};
    int rc = ts_json_text_merge(&out, target, tlen, patch, plen);
    FUZZ_CHECK(rc == 0 || rc == 1, "ts_json_text_merge returned %d", rc);
    cJSON *t = fuzz_parse(target, tlen), *p = fuzz_parse(patch, plen);
    FUZZ_CHECK(t && p, "stored text does not read back: %s / %s", target, patch);
    cJSON *merged = ts_json_merge_patch(t, p);
    FUZZ_CHECK(merged, "ts_json_merge_patch failed");
    if (rc == 0) {
        cJSON *text_merged = fuzz_parse(out.data, out.len);
        FUZZ_CHECK(text_merged, "the text merge wrote what cJSON does not read: %s", out.data);
        char *want = fuzz_print(merged), *got = fuzz_print(text_merged);
        FUZZ_CHECK(strcmp(want, got) == 0,
                   "merge of %s with %s: on text %s (read as %s), on trees %s", target, patch,
                   out.data, got, want);
        free(want);
        free(got);
        cJSON_Delete(text_merged);
    }
    cJSON_Delete(merged);
    cJSON_Delete(p);
    ts_buf_free(&out);
    free(target);
    free(patch);
    return 0;
}
