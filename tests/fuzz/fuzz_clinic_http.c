/* fuzz_clinic_http.c — clinic-api's request parsing (src/clinic-api/http.c,
 * included here to reach its static functions) on any bytes. The first
 * byte picks what the rest is:
 *   0  a raw query string: parse_query (strict %XX decoding)
 *   1  an If-Match header: parse_if_match
 *   2  If-None-Match, a newline, an ETag: none_match
 *   3  a write's body: the checks of write_doc, and a create's stored text
 *      made both ways, from the text (ca_doc_render_text, as a batch does)
 *      and from the tree (ca_doc_render): they must be the same document
 *   4  a POST /v1/_batch body: batch_op on each op
 *   5  a document, a newline, a filter query: the filtered listing's match
 *      (ts_json_text_field + value_matches on the stored text) against
 *      cJSON's reading of the same document */
#include "fuzz.h"

#include "clinic-api/http.c"

static char *collections[] = {"sessions", "patients"};
static ca_http_config_t cfg = {.collections = collections, .ncollections = 2, .stream = true};
static ca_http_t server = {.cfg = &cfg};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ts_log_set_level(TS_LOG_ERROR);
    return 0;
}

static void query_string(const char *text)
{
    qargs_t q;
    const char *why = parse_query(text, &q);
    if (!why) {
        FUZZ_CHECK(q.n <= MAX_QUERY_ARGS, "%d args", q.n);
        for (int i = 0; i < q.n; i++) {
            FUZZ_CHECK(*q.arg[i].key && strlen(q.arg[i].key) <= MAX_QUERY_TEXT, "key");
            FUZZ_CHECK(strlen(q.arg[i].value) == q.arg[i].value_len &&
                           q.arg[i].value_len <= MAX_QUERY_TEXT,
                       "value");
        }
    }
    free(q.buf);
}

/* The stored text with its updated_at set to one value, printed: the two
 * renderings read the clock each. */
static char *without_clock(const char *text)
{
    cJSON *doc = fuzz_parse(text, strlen(text));
    FUZZ_CHECK(cJSON_IsObject(doc), "a rendering that is not an object: %s", text);
    FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "updated_at")), "updated_at");
    cJSON_ReplaceItemInObjectCaseSensitive(doc, "updated_at", cJSON_CreateString("T"));
    char *printed = fuzz_print(doc);
    cJSON_Delete(doc);
    return printed;
}

static void write_body(const char *body, size_t len)
{
    if (ts_json_string_fault(body, len))
        return; /* 400 */
    cJSON *doc = cJSON_ParseWithLength(body, len);
    if (!doc)
        return; /* 400 */
    ts_buf_t errors = {0};
    int bad = ca_doc_check(doc, NULL, &errors) + ca_doc_numbers(doc, &errors);
    if (bad) {
        ts_buf_t b = {0};
        ts_buf_printf(&b, "{\"errors\":[%s]}", errors.data);
        cJSON *answer = fuzz_parse(b.data, b.len);
        FUZZ_CHECK(answer, "a 422 answer that is not JSON: %s", b.data);
        cJSON_Delete(answer);
        ts_buf_free(&b);
    } else {
        const cJSON *given = cJSON_GetObjectItemCaseSensitive(doc, "id");
        const char *id = cJSON_IsString(given) ? given->valuestring : "gen-1";
        char *printed = cJSON_PrintUnformatted(doc);
        char *from_text = ca_doc_render_text(printed, strlen(printed), id, 1);
        char *from_tree = ca_doc_render(cJSON_Duplicate(doc, 1), id, 1, false);
        FUZZ_CHECK(from_tree, "ca_doc_render failed");
        if (from_text) {
            char *a = without_clock(from_text), *b = without_clock(from_tree);
            FUZZ_CHECK(strcmp(a, b) == 0, "rendered from text %s, from the tree %s", from_text,
                       from_tree);
            free(a);
            free(b);
        }
        free(from_text);
        free(from_tree);
        cJSON_free(printed);
    }
    ts_buf_free(&errors);
    cJSON_Delete(doc);
}

static void batch_body(const char *body, size_t len)
{
    if (ts_json_string_fault(body, len))
        return;
    cJSON *doc = cJSON_ParseWithLength(body, len);
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(doc, "ops"), *op;
    if (cJSON_IsArray(ops) && cJSON_GetArraySize(ops) <= CA_MAX_BATCH_OPS) {
        cfg.strict_idempotency = len & 1;
        cJSON_ArrayForEach(op, ops)
        {
            bop_t o = {0};
            const char *why = NULL, *field = batch_op(&server, op, &o, &why);
            FUZZ_CHECK(!field == !why, "a field without a reason");
            if (!field && !o.early && o.w.op == CA_OP_CREATE)
                FUZZ_CHECK(o.rendered && o.w.id && ts_valid_id(o.w.id, strlen(o.w.id)),
                           "a create without its stored text or a valid id");
            if (o.early) {
                cJSON *answer = fuzz_parse(o.r.body.data, o.r.body.len);
                FUZZ_CHECK(answer, "an answer that is not JSON: %s", o.r.body.data);
                cJSON_Delete(answer);
            }
            ts_buf_free(&o.r.body);
            free(o.rendered);
            if (field)
                break;
        }
    }
    cJSON_Delete(doc);
}

/* Whether cJSON's reading of the document has field = want, as the
 * listing defines it: a string by its text, a number, true, false or null
 * by its JSON text as stored. */
static bool reference_match(const cJSON *doc, const qarg_t *a)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, a->key);
    if (!v || cJSON_IsObject(v) || cJSON_IsArray(v))
        return false;
    if (cJSON_IsString(v))
        return strlen(v->valuestring) == a->value_len &&
               memcmp(v->valuestring, a->value, a->value_len) == 0;
    char *text = cJSON_PrintUnformatted(v);
    bool eq = strlen(text) == a->value_len && memcmp(text, a->value, a->value_len) == 0;
    cJSON_free(text);
    return eq;
}

static void filter(const char *text, size_t len)
{
    const char *nl = memchr(text, '\n', len);
    if (!nl || ts_json_string_fault(text, (size_t)(nl - text)))
        return;
    cJSON *doc = cJSON_ParseWithLength(text, (size_t)(nl - text));
    char *query = ts_memdup(nl + 1, len - (size_t)(nl + 1 - text));
    qargs_t q;
    if (cJSON_IsObject(doc) && !parse_query(query, &q)) {
        char *stored = cJSON_PrintUnformatted(doc); /* as clinic-api stores it */
        for (int i = 0; i < q.n; i++) {
            const char *v;
            size_t vn;
            bool got = ts_json_text_field(stored, strlen(stored), q.arg[i].key,
                                          strlen(q.arg[i].key), &v, &vn) &&
                       value_matches(v, vn, q.arg[i].value, q.arg[i].value_len);
            FUZZ_CHECK(got == reference_match(doc, &q.arg[i]), "%s=%s on %s: %d", q.arg[i].key,
                       q.arg[i].value, stored, got);
        }
        cJSON_free(stored);
    }
    if (cJSON_IsObject(doc))
        free(q.buf);
    free(query);
    cJSON_Delete(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* the rest as a C string (headers and queries are) and as bytes */
    char *text = ts_memdup((const char *)data + 1, size - 1);
    size_t len = size - 1;
    bool has;
    int64_t version;
    switch (data[0] % 6) {
    case 0: query_string(text); break;
    case 1:
        if (parse_if_match(text, &has, &version) == 0 && has)
            FUZZ_CHECK(version >= -1, "If-Match version %lld", (long long)version);
        break;
    case 2: {
        char *nl = strchr(text, '\n');
        if (nl) {
            *nl = '\0';
            (void)none_match(text, nl + 1);
        }
        break;
    }
    case 3: write_body(text, len); break;
    case 4: batch_body(text, len); break;
    default: filter(text, len); break;
    }
    free(text);
    return 0;
}
