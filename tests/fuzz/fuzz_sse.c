/* fuzz_sse.c — the API actor's server-sent events reader (src/api/stream.c)
 * on any stream a server could send, and its header reader.
 *
 * Input: one byte, then the bytes of the stream. The stream is read twice,
 * in one piece and in pieces of 1-16 bytes (drawn from the first byte), as
 * curl may hand it over: the events (ids, data, parsed JSON) must be the
 * same, and an over-long line is refused at the same place. Each event's
 * id is a C string under 65 bytes, its data has no line end added, and its
 * json is cJSON's reading of the data, and the sync actor's text look-ups
 * of collection, doc, doc.id and doc.version (src/sync/feed.c) stay in
 * bounds and, on JSON, read what cJSON reads. With the first byte's top bit set,
 * the rest is read as response header lines instead. */
#include "fuzz.h"

#include "api/api_int.h"

typedef struct {
    api_t api;
    call_t call;
    ts_api_request_t req;
} reader_t;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ts_log_set_level(TS_LOG_ERROR);
    return 0;
}

/* A connected stream's reader whose answers queue in api.replies[0] (no
 * socket: the harness takes them). */
static void reader_init(reader_t *r)
{
    memset(r, 0, sizeof *r);
    r->api.opts.max_body_bytes = 256; /* small, so that the cap is reached too */
    snprintf(r->api.replies[0].name, sizeof r->api.replies[0].name, "%s", TS_INPROC_API_RESULTS);
    r->api.nreplies = 1;
    r->req.stream = true;
    r->req.id = 7;
    r->call.self = &r->api;
    r->call.req = &r->req;
    r->call.connected = true;
    r->call.retry_after_ms = -1;
}

static void reader_free(reader_t *r)
{
    for (int i = 0; i < r->api.replies[0].nout; i++)
        ts_msg_free_one(r->api.replies[0].kinds[i], r->api.replies[0].out[i]);
    free(r->api.replies[0].out);
    free(r->api.replies[0].kinds);
    ts_buf_free(&r->call.line);
    ts_buf_free(&r->call.data);
}

/* Feeds the stream in pieces (step 0: whole); false when it was refused. */
static bool feed(reader_t *r, const uint8_t *data, size_t size, unsigned seed)
{
    for (size_t pos = 0; pos < size || size == 0;) {
        size_t n = size - pos;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            size_t step = 1 + (seed >> 16) % 16;
            n = n < step ? n : step;
        }
        char *piece = malloc(n ? n : 1); /* exactly n bytes, for ASan */
        memcpy(piece, data + pos, n);
        size_t took = api_on_body(piece, 1, n, &r->call);
        free(piece);
        if (took != n) {
            FUZZ_CHECK(took == 0 && r->call.too_large, "took %zu of %zu", took, n);
            return false;
        }
        pos += n;
        if (size == 0)
            break;
    }
    return true;
}

/* The member key of the object text[0..len) as the text walker finds it
 * (what the sync actor's fast look at an event reads: src/sync/feed.c,
 * stream_fast): in bounds on any data; on JSON, what cJSON reads. Returns
 * the member's value text, or NULL. */
static const char *text_member(const char *text, size_t len, const cJSON *tree, const char *key,
                               size_t *vn)
{
    const char *v;
    if (!ts_json_text_field(text, len, key, strlen(key), &v, vn))
        return NULL;
    FUZZ_CHECK(v >= text && v + *vn <= text + len, "%s: a value past the end", key);
    if (cJSON_IsObject(tree)) {
        cJSON *value = fuzz_parse(v, *vn);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(tree, key);
        FUZZ_CHECK(value && want, "%s: %.*s is not cJSON's", key, (int)*vn, v);
        char *a = fuzz_print(value), *b = fuzz_print(want);
        FUZZ_CHECK(strcmp(a, b) == 0, "%s: the text walker reads %s, cJSON %s", key, a, b);
        free(a);
        free(b);
        cJSON_Delete(value);
    }
    return v;
}

static void check_event(const ts_api_event_t *ev)
{
    FUZZ_CHECK(memchr(ev->event_id, '\0', sizeof ev->event_id), "event id without its NUL");
    FUZZ_CHECK(ev->data && ev->data[ev->data_len] == '\0', "data without its NUL");
    FUZZ_CHECK(ev->id == 7, "request id %llu", (unsigned long long)ev->id);
    cJSON *json = cJSON_ParseWithLength(ev->data, ev->data_len);
    FUZZ_CHECK(!json == !ev->json, "json %p for data %s", (void *)ev->json, ev->data);
    if (json) {
        char *a = fuzz_print(json), *b = fuzz_print(ev->json);
        FUZZ_CHECK(strcmp(a, b) == 0, "json %s / %s", a, b);
        free(a);
        free(b);
    }
    /* the walker is held to cJSON on JSON only (cJSON also takes control
     * bytes for whitespace) */
    const cJSON *tree = json && fuzz_no_controls(ev->data, ev->data_len) ? json : NULL;
    size_t vn, docn;
    (void)text_member(ev->data, ev->data_len, tree, "collection", &vn);
    const char *doc = text_member(ev->data, ev->data_len, tree, "doc", &docn);
    if (doc) {
        cJSON *doc_tree = tree ? fuzz_parse(doc, docn) : NULL;
        (void)text_member(doc, docn, doc_tree, "id", &vn);
        (void)text_member(doc, docn, doc_tree, "version", &vn);
        cJSON_Delete(doc_tree);
    }
    cJSON_Delete(json);
}

static void headers(const uint8_t *data, size_t size)
{
    reader_t r;
    reader_init(&r);
    for (size_t pos = 0; pos < size;) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - data - pos) + 1 : size - pos;
        char *line = malloc(n);
        memcpy(line, data + pos, n);
        FUZZ_CHECK(api_on_header(line, 1, n, &r.call) == n, "header line refused");
        free(line);
        FUZZ_CHECK(memchr(r.call.ctype, '\0', sizeof r.call.ctype), "content type");
        FUZZ_CHECK(r.call.retry_after_ms >= -1, "retry after %lld",
                   (long long)r.call.retry_after_ms);
        pos += n;
    }
    reader_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 0x80) {
        headers(data + 1, size - 1);
        return 0;
    }
    reader_t whole, pieces;
    reader_init(&whole);
    reader_init(&pieces);
    bool a = feed(&whole, data + 1, size - 1, 0);
    bool b = feed(&pieces, data + 1, size - 1, data[0] | 1u);
    FUZZ_CHECK(a == b, "refused whole %d, in pieces %d", !a, !b);
    int n = whole.api.replies[0].nout;
    FUZZ_CHECK(n == pieces.api.replies[0].nout, "%d events whole, %d in pieces", n,
               pieces.api.replies[0].nout);
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(whole.api.replies[0].kinds[i] == TS_MSG_API_EVENT &&
                       pieces.api.replies[0].kinds[i] == TS_MSG_API_EVENT,
                   "an answer that is not an event");
        const ts_api_event_t *x = whole.api.replies[0].out[i], *y = pieces.api.replies[0].out[i];
        check_event(x); /* y is held to x byte for byte below */
        FUZZ_CHECK(strcmp(x->event_id, y->event_id) == 0, "event %d: id %s / %s", i, x->event_id,
                   y->event_id);
        FUZZ_CHECK(x->data_len == y->data_len && memcmp(x->data, y->data, x->data_len) == 0,
                   "event %d: data %s / %s", i, x->data, y->data);
        FUZZ_CHECK(!x->json == !y->json, "event %d: json parsed once of two", i);
    }
    FUZZ_CHECK(strcmp(whole.req.last_event_id, pieces.req.last_event_id) == 0, "last id");
    reader_free(&whole);
    reader_free(&pieces);
    return 0;
}
