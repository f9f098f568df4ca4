/* fuzz_front.c — the front door's request parsing (src/front/parse.c) on
 * any bytes, both ways: the fast way (a single create or update read
 * straight from the text) and the general way (cJSON) must make the same
 * calls of the same request: method, id, collection, document id, base
 * version, error, and a body that reads as the same document (the fast
 * way keeps it as written, compacted; the general way prints it). */
#include "fuzz.h"

#include "front/front_int.h"

static ts_config_t config;
static front_t front;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ts_log_set_level(TS_LOG_ERROR);
    ts_config_init(&config);
    config.max_request_bytes = 64 << 10;
    front.config = &config;
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* A body as a document, printed: the two ways write numbers and escapes
 * differently, never values. */
static char *body_value(const char *body, size_t len)
{
    if (!body)
        return NULL;
    cJSON *tree = fuzz_parse(body, len);
    FUZZ_CHECK(tree, "a body that is not JSON: %.*s", (int)len, body);
    char *text = fuzz_print(tree);
    cJSON_Delete(tree);
    return text;
}

static void same_call(const ts_call_t *f, const ts_call_t *g, const char *req, size_t len)
{
#define SAME(cond, ...) FUZZ_CHECK(cond, "request %.*s: " __VA_ARGS__)
    SAME(f->method == g->method, "method %d / %d", (int)len, req, f->method, g->method);
    SAME(same_str(f->id_json, g->id_json), "id %s / %s", (int)len, req, f->id_json, g->id_json);
    SAME(f->err_code == g->err_code, "error %d (%s) / %d (%s)", (int)len, req, f->err_code,
         f->err_message, g->err_code, g->err_message);
    SAME(same_str(f->err_message, g->err_message), "message %s / %s", (int)len, req,
         f->err_message, g->err_message);
    if (f->err_code)
        return;
    SAME(f->collection == g->collection, "collection %s / %s", (int)len, req, f->collection,
         g->collection);
    SAME(same_str(f->doc_id, g->doc_id), "doc id %s / %s", (int)len, req, f->doc_id, g->doc_id);
    SAME(f->has_base_version == g->has_base_version &&
             (!f->has_base_version || f->base_version == g->base_version),
         "base_version %d:%lld / %d:%lld", (int)len, req, f->has_base_version, f->base_version,
         g->has_base_version, g->base_version);
    char *fb = body_value(f->body, f->body_len), *gb = body_value(g->body, g->body_len);
    SAME(same_str(fb, gb), "body %s / %s", (int)len, req, fb, gb);
    free(fb);
    free(gb);
    SAME(f->result_len == g->result_len &&
             (!f->result_len || memcmp(f->result, g->result, f->result_len) == 0),
         "result differs", (int)len, req);
#undef SAME
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1); /* exactly size bytes, for ASan */
    memcpy(text, data, size);
    ts_envelope_t *fast = front_parse_payload(&front, text, size, true);
    ts_envelope_t *general = front_parse_payload(&front, text, size, false);
    FUZZ_CHECK(fast->ncalls == general->ncalls && fast->batch == general->batch,
               "request %.*s: %zu calls / %zu", (int)size, text, fast->ncalls, general->ncalls);
    for (size_t i = 0; i < fast->ncalls; i++)
        same_call(&fast->calls[i], &general->calls[i], text, size);
    ts_envelope_free(fast);
    ts_envelope_free(general);
    free(text);
    return 0;
}
