/* parse.c — requests in: a ROUTER message's frames into an envelope of
 * calls, a single create or update the fast way (straight from the text),
 * anything else the general way through cJSON, and every call's params
 * checked. */
#include "front/front_int.h"

#include <math.h>
#include <zmq.h>

#define MAX_FRAMES 4          /* routing id, delimiter, payload, and one too many */
/* Calls in one batch. Each call answered costs up to ~200 bytes of answer
 * whatever it took to write (`1,` gets a 110-byte error), so without a
 * bound a 1 MiB batch made a 50 MB reply; with it, a batch's answers stay
 * within its own size plus ~200 KB. */
#define MAX_BATCH_CALLS 1000

/* ---- checking requests ---- */

static bool is_method_with_collection(ts_method_t m)
{
    return ts_method_is(m, TS_MF_COLLECTION);
}

/* Sets call->doc_id from params.id, or fails the call. */
static void check_id_param(ts_call_t *call)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(call->params, "id");
    if (!cJSON_IsString(id))
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.id must be a string");
    else if (!ts_valid_id(id->valuestring, strlen(id->valuestring)))
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params.id must be 1-64 of [A-Za-z0-9_-]");
    else
        call->doc_id = ts_xstrdup(id->valuestring);
}

/* Sets call->body: obj as the store keeps it, without its ids (a create's
 * is in call->doc_id) and the fields only the server sets. Printed here,
 * not in the store: the store is the pipeline's one serial stage, and this
 * needs nothing it owns. */
static void prepare_body(front_t *self, ts_call_t *call, cJSON *obj)
{
    ts_json_strip_server_fields(obj);
    while (cJSON_GetObjectItemCaseSensitive(obj, "id")) /* a second one is no less an id */
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "id");
    ts_buf_reset(&self->scratch);
    if (ts_buf_json(&self->scratch, obj)) { /* an item of no JSON type: none is parsed */
        ts_call_fail(call, TS_E_INTERNAL, "the document cannot be printed as JSON");
        return;
    }
    call->body = ts_memdup(self->scratch.data, self->scratch.len); /* JSON: no NUL inside */
    call->body_len = self->scratch.len;
}

/* Refuses params holding a number JSON cannot carry back, naming it. */
static bool refuse_overflow(ts_call_t *call, const cJSON *p)
{
    if (!ts_json_overflow(p, NULL)) /* the usual case: one walk, no names */
        return false;
    ts_buf_t path = {0};
    ts_json_overflow(p, &path);
    char field[256];
    snprintf(field, sizeof field, "params%s%s", path.len ? "." : "", path.data ? path.data : "");
    ts_buf_free(&path);
    ts_call_fail(call, TS_E_INVALID_PARAMS,
                 "%s is a number beyond a double's range (JSON could not give it back)", field);
    call->err_data = cJSON_CreateObject();
    cJSON_AddStringToObject(call->err_data, "field", field);
    return true;
}

/* Checks the params of a known method; sets an error on the call if wrong. */
static void check_params(front_t *self, ts_call_t *call)
{
    cJSON *p = call->params;
    if (p && !cJSON_IsObject(p)) {
        ts_call_fail(call, TS_E_INVALID_PARAMS, "params must be an object (named parameters)");
        return;
    }
    if (p && refuse_overflow(call, p))
        return;
    if (is_method_with_collection(call->method) ||
        (call->method == TS_M_INVALIDATE && cJSON_GetObjectItemCaseSensitive(p, "collection"))) {
        const char *coll = ts_json_string(p, "collection");
        if (!coll) {
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.collection must be a string");
            return;
        }
        int index = ts_config_collection(self->config, coll);
        if (index < 0) {
            ts_call_fail(call, TS_E_UNKNOWN_COLLECTION, "unknown collection '%.64s'", coll);
            return;
        }
        call->collection = self->config->collections[index];
    }
    const cJSON *doc = cJSON_GetObjectItemCaseSensitive(p, "doc");
    switch (call->method) {
    case TS_M_CREATE:
        if (!cJSON_IsObject(doc)) {
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.doc must be an object");
        } else if (cJSON_GetObjectItemCaseSensitive(doc, "id")) {
            const char *id = ts_json_string(doc, "id");
            if (!id || !ts_valid_id(id, strlen(id)))
                ts_call_fail(call, TS_E_INVALID_PARAMS, "doc.id must be 1-64 of [A-Za-z0-9_-]");
            else
                call->doc_id = ts_xstrdup(id);
        }
        if (!call->err_code)
            prepare_body(self, call, (cJSON *)doc);
        break;
    case TS_M_UPDATE: {
        check_id_param(call);
        if (call->err_code)
            break;
        cJSON *patch = cJSON_GetObjectItemCaseSensitive(p, "patch");
        const cJSON *patch_id = cJSON_GetObjectItemCaseSensitive(patch, "id");
        if (!cJSON_IsObject(patch))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.patch must be an object");
        else if ((call->has_base_version =
                      cJSON_GetObjectItemCaseSensitive(p, "base_version") != NULL) &&
                 !ts_json_int(p, "base_version", &call->base_version))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.base_version must be an integer");
        else if (patch_id && (!cJSON_IsString(patch_id) ||
                              strcmp(patch_id->valuestring, ts_json_string(p, "id")) != 0))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "a patch cannot change a document's id");
        if (!call->err_code)
            prepare_body(self, call, patch);
        break;
    }
    case TS_M_DELETE:
    case TS_M_GET:
        check_id_param(call);
        break;
    case TS_M_QUERY: {
        const cJSON *sel = cJSON_GetObjectItemCaseSensitive(p, "selector");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(p, "params");
        if (!cJSON_IsString(sel) && !cJSON_IsObject(sel))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.selector must be a name or an object");
        else if (params && !cJSON_IsObject(params))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.params must be an object");
        else if (cJSON_GetObjectItemCaseSensitive(p, "cache") &&
                 !cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(p, "cache")))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.cache must be true or false");
        break;
    }
    case TS_M_SUBSCRIBE:
        if (!ts_json_string(p, "selector"))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.selector must be a string");
        else if (cJSON_GetObjectItemCaseSensitive(p, "params") &&
                 !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(p, "params")))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.params must be an object");
        break;
    case TS_M_UNSUBSCRIBE:
        if (!ts_json_string(p, "sub"))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.sub must be a string");
        break;
    case TS_M_AUDIT: {
        long long limit;
        static const char *strings[] = {"collection", "id", "since", "until", "event", "client"};
        for (int i = 0; i < 6; i++)
            if (cJSON_GetObjectItemCaseSensitive(p, strings[i]) && !ts_json_string(p, strings[i]))
                ts_call_fail(call, TS_E_INVALID_PARAMS, "params.%s must be a string", strings[i]);
        if (!call->err_code && cJSON_GetObjectItemCaseSensitive(p, "offset") &&
            !ts_json_int(p, "offset", &limit))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.offset must be an integer");
        if (!call->err_code && cJSON_GetObjectItemCaseSensitive(p, "limit") &&
            !ts_json_int(p, "limit", &limit))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.limit must be an integer");
        break;
    }
    case TS_M_BACKUP: {
        /* the daemon's own path: relative would mean its working directory */
        const char *path = ts_json_string(p, "path");
        if (!path || path[0] != '/')
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.path must be an absolute path");
        break;
    }
    case TS_M_CANCEL:
        if (!ts_json_string(p, "mutation"))
            ts_call_fail(call, TS_E_INVALID_PARAMS, "params.mutation must be a string");
        break;
    case TS_M_PING:
        ts_call_set_result(call, ts_xstrdup("\"pong\""), 6);
        break;
    case TS_M_RPC_DISCOVER:
        front_answer_discover(call);
        break;
    default:
        break;
    }
}

/* The client's identity for the audit trail, from its routing id: one it
 * set (ZMQ_ROUTING_ID) in visible ASCII that fits is shown as it is,
 * "id:NAME"; any other (ZeroMQ's generated ones begin with a zero byte) as
 * "zmq:<hex>" (as much of it as fits). Distinct prefixes: a chosen id can
 * never read as another client's generated one, nor as a key ("key:"). */
static void client_name(ts_envelope_t *e, const unsigned char *id, size_t len)
{
    bool text = len > 0 && len + 4 <= sizeof e->client;
    for (size_t i = 0; text && i < len; i++)
        text = id[i] > 0x20 && id[i] < 0x7f;
    if (text) {
        memcpy(e->client, "id:", 3);
        memcpy(e->client + 3, id, len);
        e->client[3 + len] = '\0';
        return;
    }
    size_t fits = (sizeof e->client - 5) / 2;
    memcpy(e->client, "zmq:", 4);
    ts_hex(id, len < fits ? len : fits, e->client + 4);
}

/* The request id as JSON text. Integral numbers are printed directly (every
 * answer has one: no printf for it); cJSON prints numbers beyond int range
 * through sprintf and sscanf. */
static char *int_to_json(long long id)
{
    ts_buf_t text = {0};
    ts_buf_int(&text, id);
    return ts_buf_take(&text, NULL);
}

/* A numeric id is echoed as the integer it is; one that is not an integer
 * a double holds exactly (a fraction, beyond 2^53, 1e400) could not be
 * echoed as sent, and is refused (id_usable). */
static bool id_usable(const cJSON *id)
{
    return !id || cJSON_IsString(id) || cJSON_IsNull(id) ||
           (cJSON_IsNumber(id) && id->valuedouble == floor(id->valuedouble) &&
            fabs(id->valuedouble) <= 9007199254740991.0);
}

static char *id_to_json(const cJSON *id)
{
    if (cJSON_IsNumber(id))
        return int_to_json((long long)id->valuedouble); /* in range: id_usable */
    return cJSON_PrintUnformatted(id);
}

/* Fills one call from one JSON-RPC request object (consumed). */
static void parse_call(front_t *self, ts_call_t *call, cJSON *req)
{
    call->method = TS_M_NONE;
    if (!cJSON_IsObject(req)) {
        call->id_json = ts_xstrdup("null");
        ts_call_fail(call, TS_E_INVALID_REQUEST, "a request must be a JSON object");
        cJSON_Delete(req);
        return;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
    bool id_ok = id_usable(id);
    if (id)
        call->id_json = id_ok ? id_to_json(id) : ts_xstrdup("null");
    const char *version = ts_json_string(req, "jsonrpc");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(req, "method");
    if (!id_ok || !version || strcmp(version, "2.0") != 0 || !cJSON_IsString(method)) {
        if (!call->id_json)
            call->id_json = ts_xstrdup("null");
        ts_call_fail(call, TS_E_INVALID_REQUEST,
                     !id_ok ? "id must be a string, an integer of at most 2^53 - 1 "
                              "(9007199254740991) either way, or null"
                     : !cJSON_IsString(method) ? "method must be a string"
                                              : "jsonrpc must be \"2.0\"");
        cJSON_Delete(req);
        return;
    }
    call->method = ts_method_lookup(method->valuestring);
    if (call->method == TS_M_NONE) {
        ts_call_fail(call, TS_E_NO_METHOD, "no method '%.64s'", method->valuestring);
        cJSON_Delete(req);
        return;
    }
    call->params = cJSON_DetachItemFromObjectCaseSensitive(req, "params");
    cJSON_Delete(req);
    check_params(self, call);
}

/* An envelope with one pre-answered call (whole-message errors). */
static ts_envelope_t *error_envelope(int code, const char *message)
{
    ts_envelope_t *e = ts_envelope_new(1);
    e->calls[0].method = TS_M_NONE;
    e->calls[0].id_json = ts_xstrdup("null");
    ts_call_fail(&e->calls[0], code, "%s", message);
    return e;
}

/* One invalid_request for a batch over MAX_BATCH_CALLS, with the limit in
 * error.data. */
static ts_envelope_t *batch_too_large(long calls)
{
    char msg[128];
    snprintf(msg, sizeof msg, "a batch of %ld calls is over the limit of %d calls", calls,
             MAX_BATCH_CALLS);
    ts_envelope_t *e = error_envelope(TS_E_INVALID_REQUEST, msg);
    e->calls[0].err_data = cJSON_CreateObject();
    cJSON_AddNumberToObject(e->calls[0].err_data, "limit", MAX_BATCH_CALLS);
    cJSON_AddNumberToObject(e->calls[0].err_data, "calls", (double)calls);
    return e;
}

/* Deeper requests take the general way (cJSON allows 1,000 levels). */
#define FAST_MAX_DEPTH 64

/* ---- the fast way for single writes ----
 * The most common requests, a single create or update, are read straight
 * from their text, without cJSON: the envelope member by member, strictly,
 * and the document or patch checked as strict JSON and compacted into the
 * call's body (less its id and the server's fields) in the same pass.
 * Building, reading and freeing the envelope's tree cost as much as all the
 * rest of the front door's work on a create. It knows only the members a
 * write needs, written plainly (strings without escapes, integers as
 * integers); anything else, a member twice, a batch, an error of any kind,
 * takes the general way (parse_call), which also words the errors. */

enum {
    FAST_JSONRPC = 1 << 0,
    FAST_ID = 1 << 1,
    FAST_METHOD = 1 << 2,
    FAST_PARAMS = 1 << 3,
    FAST_COLLECTION = 1 << 4,
    FAST_DOC_ID = 1 << 5,
    FAST_BASE = 1 << 6,
    FAST_DOC = 1 << 7,
    FAST_PATCH = 1 << 8,
};

typedef struct {
    front_t *self;
    ts_call_t *call;
    unsigned seen;                  /* FAST_* members read */
    ts_json_member_t dropped_id;    /* the document's or patch's (first) id */
} fast_t;

/* The FAST_* bit of a member of names[0..n) (bits from first up), or 0. */
static unsigned fast_bit(const char *key, size_t len, const char *const *names, size_t n,
                         unsigned first)
{
    for (size_t i = 0; i < n; i++)
        if (ts_name_is(names[i], key, len))
            return first << i;
    return 0;
}

/* The id a plain string at v holds (malloc'd), when it is one: 1-64 of
 * [A-Za-z0-9_-]; NULL otherwise. *after: past its closing quote. */
static char *plain_id(const char *v, const char *end, const char **after)
{
    *after = ts_json_plain_string(v, end);
    return *after && ts_valid_id(v + 1, (size_t)(*after - v) - 2)
               ? ts_memdup(v + 1, (size_t)(*after - v) - 2)
               : NULL;
}

static const char *fast_param(void *arg, const char *key, size_t len, const char *v,
                              const char *end)
{
    static const char *const names[] = {"collection", "id", "base_version", "doc", "patch"};
    static const char *const drop[] = {"id", TS_JSON_SERVER_FIELDS};
    fast_t *f = arg;
    ts_call_t *call = f->call;
    unsigned bit = fast_bit(key, len, names, sizeof names / sizeof *names, FAST_COLLECTION);
    if (!bit || (f->seen & bit))
        return NULL;
    f->seen |= bit;
    const char *after;
    switch (bit) {
    case FAST_COLLECTION: {
        int index = (after = ts_json_plain_string(v, end))
                        ? ts_config_collection_len(f->self->config, v + 1, (size_t)(after - v) - 2)
                        : -1;
        if (index < 0)
            return NULL;
        call->collection = f->self->config->collections[index];
        return after;
    }
    case FAST_DOC_ID:
        call->doc_id = plain_id(v, end, &after);
        return call->doc_id ? after : NULL;
    case FAST_BASE:
        call->has_base_version = true;
        return ts_json_plain_int(v, end, &call->base_version);
    default: { /* the document or the patch */
        if (f->seen & (bit == FAST_DOC ? FAST_PATCH : FAST_DOC))
            return NULL;
        ts_json_member_t dropped[sizeof drop / sizeof *drop];
        ts_buf_reset(&f->self->scratch);
        after = ts_json_compact_object(&f->self->scratch, v, end, drop, sizeof drop / sizeof *drop,
                                       dropped, FAST_MAX_DEPTH);
        f->dropped_id = dropped[0];
        return after;
    }
    }
}

static const char *fast_member(void *arg, const char *key, size_t len, const char *v,
                               const char *end)
{
    static const char *const names[] = {"jsonrpc", "id", "method", "params"};
    fast_t *f = arg;
    ts_call_t *call = f->call;
    unsigned bit = fast_bit(key, len, names, sizeof names / sizeof *names, FAST_JSONRPC);
    if (!bit || (f->seen & bit))
        return NULL;
    f->seen |= bit;
    const char *after;
    long long number;
    switch (bit) {
    case FAST_JSONRPC:
        return end - v >= 5 && memcmp(v, "\"2.0\"", 5) == 0 ? v + 5 : NULL;
    case FAST_ID:
        if ((after = ts_json_plain_string(v, end)))
            call->id_json = ts_memdup(v, (size_t)(after - v)); /* printed as written */
        else if ((after = ts_json_plain_int(v, end, &number)))
            call->id_json = int_to_json(number);
        return after;
    case FAST_METHOD:
        if (!(after = ts_json_plain_string(v, end)))
            return NULL;
        call->method = after - v == 8 && memcmp(v, "\"create\"", 8) == 0   ? TS_M_CREATE
                       : after - v == 8 && memcmp(v, "\"update\"", 8) == 0 ? TS_M_UPDATE
                                                                           : TS_M_NONE;
        return call->method == TS_M_NONE ? NULL : after;
    default:
        return ts_json_strict_members(v, end, fast_param, f);
    }
}

/* A single create or update read the fast way, or NULL: take the general
 * way. */
static ts_envelope_t *fast_write(front_t *self, const char *data, size_t len)
{
    const unsigned create = FAST_JSONRPC | FAST_METHOD | FAST_PARAMS | FAST_COLLECTION | FAST_DOC;
    const unsigned update = FAST_JSONRPC | FAST_METHOD | FAST_PARAMS | FAST_COLLECTION |
                            FAST_DOC_ID | FAST_PATCH;
    ts_envelope_t *e = ts_envelope_new(1);
    ts_call_t *call = &e->calls[0];
    call->method = TS_M_NONE;
    fast_t f = {self, call, 0, {0}};
    if (ts_json_strict_members(data, data + len, fast_member, &f) != data + len)
        goto general;
    unsigned members = f.seen & ~(FAST_ID | FAST_BASE); /* the optional ones */
    const char *id = f.dropped_id.value, *after;
    if (call->method == TS_M_CREATE) {
        /* the doc's id, when given, must be a plain string that is an id */
        if (members != create || (f.seen & FAST_BASE) ||
            (id && !(call->doc_id = plain_id(id, id + f.dropped_id.value_len, &after))))
            goto general;
    } else if (members != update || id) { /* a patch with an id is checked the general way */
        goto general;
    }
    call->body = ts_memdup(self->scratch.data, self->scratch.len); /* no NUL inside */
    call->body_len = self->scratch.len;
    return e;
general:
    ts_envelope_free(e);
    return NULL;
}

ts_envelope_t *front_parse_payload(front_t *self, const char *data, size_t len, bool fast)
{
    if (len > self->config->max_request_bytes) {
        self->too_large++;
        char msg[128];
        snprintf(msg, sizeof msg, "request of %zu bytes is over the limit of %zu", len,
                 self->config->max_request_bytes);
        return error_envelope(TS_E_TOO_LARGE, msg);
    }
    if (!ts_utf8_valid(data, len)) {
        self->parse_errors++;
        return error_envelope(TS_E_PARSE, "request is not valid UTF-8");
    }
    ts_envelope_t *write = fast ? fast_write(self, data, len) : NULL;
    if (write)
        return write;
    /* Counted on the text, before cJSON builds a tree of every element. */
    const char *first = data;
    while (first < data + len && (*first == ' ' || *first == '\t' || *first == '\n' || *first == '\r'))
        first++;
    long count = first < data + len && *first == '[' ? ts_json_text_count(data, len) : 0;
    if (count > MAX_BATCH_CALLS)
        return batch_too_large(count);
    /* What cJSON would take and get wrong (the fast way declines it). */
    const char *fault = ts_json_string_fault(data, len);
    if (fault) {
        self->parse_errors++;
        char msg[160];
        snprintf(msg, sizeof msg, "request refused: %s", fault);
        return error_envelope(TS_E_PARSE, msg);
    }
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!root) {
        self->parse_errors++;
        return error_envelope(TS_E_PARSE, len ? "request is not valid JSON (or nested too deeply)"
                                              : "empty request");
    }
    if (cJSON_IsArray(root)) {
        size_t n = (size_t)cJSON_GetArraySize(root);
        if (n == 0) {
            cJSON_Delete(root);
            return error_envelope(TS_E_INVALID_REQUEST, "empty batch");
        }
        if (n > MAX_BATCH_CALLS) { /* the text count and cJSON differ on odd text */
            cJSON_Delete(root);
            return batch_too_large((long)n);
        }
        ts_envelope_t *e = ts_envelope_new(n);
        e->batch = true;
        for (size_t i = 0; i < n; i++)
            parse_call(self, &e->calls[i], cJSON_DetachItemFromArray(root, 0));
        cJSON_Delete(root);
        return e;
    }
    ts_envelope_t *e = ts_envelope_new(1);
    parse_call(self, &e->calls[0], root);
    return e;
}

/* Receives one multipart message from the ROUTER and turns it into an
 * envelope. Returns NULL when nothing was queued. */
ts_envelope_t *front_read_request(front_t *self, void *socket, bool *more)
{
    zmq_msg_t frames[MAX_FRAMES];
    int n = 0;
    bool extra = false;
    *more = false;
    for (;;) {
        zmq_msg_t scratch;
        zmq_msg_t *f = n < MAX_FRAMES ? &frames[n] : &scratch;
        zmq_msg_init(f);
        if (zmq_msg_recv(f, socket, n || extra ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(f);
            if (n == 0)
                return NULL;
            break;
        }
        bool more_frames = zmq_msg_more(f);
        if (f == &scratch) { /* keep only the first frames; note the rest */
            extra = true;
            zmq_msg_close(f);
        } else {
            n++;
        }
        if (!more_frames)
            break;
    }
    *more = true;
    /* frames: [routing id] [empty delimiter]? [payload] */
    int first = 1;
    bool delimiter = n >= 3 && zmq_msg_size(&frames[1]) == 0;
    if (delimiter)
        first = 2;
    int payload_frames = n - first;
    ts_envelope_t *e;
    if (extra || payload_frames > 1)
        e = error_envelope(TS_E_INVALID_REQUEST, "a request is one frame (after an optional "
                                                 "empty delimiter); extra frames found");
    else if (payload_frames < 1)
        e = error_envelope(TS_E_PARSE, "empty request");
    else
        e = front_parse_payload(self, zmq_msg_data(&frames[first]), zmq_msg_size(&frames[first]),
                                true);
    size_t id_len = zmq_msg_size(&frames[0]);
    e->route = ts_xmalloc(4 + id_len);
    uint32_t l = (uint32_t)id_len;
    memcpy(e->route, &l, 4);
    memcpy(e->route + 4, zmq_msg_data(&frames[0]), id_len);
    e->route_len = 4 + id_len;
    client_name(e, zmq_msg_data(&frames[0]), id_len);
    /* With client keys: the key, which ZeroMQ puts on every frame of the
     * connection after the handshake (not on the routing id). */
    if (socket != self->admin) {
        front_auth_check(self, e, &frames[n - 1]);
    } else {
        /* The admin endpoint reads how the engine is, nothing more: it
         * answers HTTP without a key. */
        e->admin = true;
        snprintf(e->client, sizeof e->client, "admin");
        for (size_t i = 0; i < e->ncalls; i++)
            if (!e->calls[i].err_code && e->calls[i].method != TS_M_STATUS &&
                e->calls[i].method != TS_M_METRICS)
                ts_call_fail(&e->calls[i], TS_E_UNAUTHORIZED,
                             "the admin endpoint takes status and metrics only");
    }
    e->delimiter = delimiter;
    e->received_us = ts_mono_us();
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    return e;
}
