/* http.c — request life: the first call of the access handler registers the
 * request and applies "offline"; upload calls collect the body; the final
 * call applies the other faults once, checks the token and routes. */
#include "http.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "control.h"
#include "feed.h"
#include "therasync/log.h"
#include "therasync/sha256.h"

#define MOD "http"
#define MAX_BODY (1024 * 1024)
#define DEFAULT_LIMIT 100
#define MAX_LIMIT 1000

struct ca_http {
    const ca_http_config_t *cfg;
    struct MHD_Daemon *mhd;
    uint16_t port;
};

/* Per-request state, freed by the completion callback. */
typedef struct {
    ts_buf_t body;       /* request body */
    bool too_large;      /* body passed MAX_BODY: answered 413 */
    bool faults_done;    /* faults were applied to this request */
    bool delayed;        /* latency_ms was served */
    bool polling;        /* long poll started */
    int64_t deadline_us; /* long poll deadline */
} req_t;

/* An open event stream. */
typedef struct {
    ca_http_t *h;
    struct MHD_Connection *conn;
    int64_t cursor;  /* last event sent */
    int64_t next_hb; /* next heartbeat (mono us) */
    ts_buf_t out;    /* text not yet handed to MHD */
    size_t off;      /* bytes of out already handed over */
} sse_t;

/* ---- answers -------------------------------------------------------------- */

/* Queues an answer; takes the buffer's text. ctype NULL: no body. */
static enum MHD_Result answer(struct MHD_Connection *c, int status, ts_buf_t *body)
{
    size_t len = 0;
    char *text = body ? ts_buf_take(body, &len) : NULL;
    struct MHD_Response *r =
        text ? MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    if (text)
        MHD_add_response_header(r, "Content-Type", "application/json");
    if (status == 401) {
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        atomic_fetch_add(&ca_stats.unauthorized, 1);
    }
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result answer_text(struct MHD_Connection *c, int status, const char *json)
{
    ts_buf_t b = {0};
    if (ts_buf_puts(&b, json) < 0)
        return MHD_NO;
    return answer(c, status, &b);
}

static enum MHD_Result answer_injected(struct MHD_Connection *c, const ca_faults_t *f)
{
    ts_buf_t b = {0};
    ts_buf_printf(&b, "{\"error\":\"injected_fault\",\"status\":%d}", f->status);
    size_t len = 0;
    char *text = ts_buf_take(&b, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (f->status == 429 || f->status == 503) {
        char ra[24];
        snprintf(ra, sizeof ra, "%d", f->retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)f->status, r);
    MHD_destroy_response(r);
    return rc;
}

/* ---- request details ---------------------------------------------------- */

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static const char *query(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

/* Parses a cursor ("" or absent: dflt). 0, or -1 when it is not one. */
static int parse_cursor(const char *text, int64_t dflt, int64_t *out)
{
    *out = dflt;
    if (!text || !*text)
        return 0;
    return ts_parse_i64(text, out) == 0 && *out >= 0 ? 0 : -1;
}

static int parse_limit(const char *text, int *out)
{
    int64_t v = DEFAULT_LIMIT;
    if (text && *text && (ts_parse_i64(text, &v) < 0 || v < 1))
        return -1;
    *out = v > MAX_LIMIT ? MAX_LIMIT : (int)v;
    return 0;
}

/* If-Match: "7", 7, W/"7" or *. Returns 0 (has set), or -1 when malformed. */
static int parse_if_match(const char *text, bool *has, int64_t *version)
{
    *has = false;
    if (!text)
        return 0;
    while (*text == ' ')
        text++;
    *has = true;
    if (strcmp(text, "*") == 0) {
        *version = -1;
        return 0;
    }
    if (strncmp(text, "W/", 2) == 0)
        text += 2;
    char tmp[32];
    size_t n = strlen(text);
    while (n && text[n - 1] == ' ')
        n--;
    if (n >= 2 && text[0] == '"' && text[n - 1] == '"') {
        text++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, text, n);
    tmp[n] = '\0';
    return ts_parse_i64(tmp, version) == 0 && *version >= 0 ? 0 : -1;
}

static bool from_loopback(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return false;
    if (ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)ci->client_addr;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 =
            (const struct sockaddr_in6 *)(const void *)ci->client_addr;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
               (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127);
    }
    return false;
}

static const char *find_collection(ca_http_t *h, const char *name, size_t len)
{
    for (int i = 0; i < h->cfg->ncollections; i++) {
        const char *c = h->cfg->collections[i];
        if (strlen(c) == len && memcmp(c, name, len) == 0)
            return c;
    }
    return NULL;
}

/* ---- /v1 handlers --------------------------------------------------------- */

static enum MHD_Result list_docs(ca_http_t *h, struct MHD_Connection *c, const char *coll)
{
    int64_t since, last;
    int limit;
    bool more;
    if (parse_cursor(query(c, "since"), 0, &since) < 0 || parse_limit(query(c, "limit"), &limit) < 0)
        return answer_text(c, 400, "{\"error\":\"bad_request\",\"message\":\"since must be a "
                                   "cursor, limit a positive integer\"}");
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"items\":[");
    if (ca_db_feed(h->cfg->db, coll, since, limit, CA_FEED_ITEMS, &b, &last, &more) < 0) {
        ts_buf_free(&b);
        return answer_text(c, 500, "{\"error\":\"storage_error\"}");
    }
    ts_buf_printf(&b, "],\"cursor\":\"%" PRId64 "\",\"has_more\":%s}", last,
                  more ? "true" : "false");
    return answer(c, 200, &b);
}

static enum MHD_Result get_doc(ca_http_t *h, struct MHD_Connection *c, const char *coll,
                               const char *id)
{
    ts_buf_t b = {0};
    int found = ts_valid_id(id, strlen(id)) ? ca_db_get(h->cfg->db, coll, id, &b) : 0;
    if (found == 1)
        return answer(c, 200, &b);
    ts_buf_free(&b);
    return found == 0 ? answer_text(c, 404, "{\"error\":\"not_found\"}")
                      : answer_text(c, 500, "{\"error\":\"storage_error\"}");
}

static enum MHD_Result digest(ca_http_t *h, struct MHD_Connection *c, const char *coll)
{
    ts_buf_t b = {0};
    if (ca_db_digest(h->cfg->db, coll, &b) < 0) {
        ts_buf_free(&b);
        return answer_text(c, 500, "{\"error\":\"storage_error\"}");
    }
    return answer(c, 200, &b);
}

/* POST, PATCH and DELETE. id is NULL for a create. */
static enum MHD_Result write_doc(ca_http_t *h, struct MHD_Connection *c, req_t *rq, ca_op_t op,
                                 const char *method, const char *url, const char *coll,
                                 const char *id)
{
    ca_write_t w = {.op = op, .coll = coll, .id = id};
    const char *key = header(c, "Idempotency-Key");
    const char *if_match = header(c, "If-Match");
    if (key && (!*key || strlen(key) > 255))
        return answer_text(c, 400, "{\"errors\":[{\"field\":\"Idempotency-Key\","
                                   "\"message\":\"must be 1-255 characters\"}]}");
    if (op != CA_OP_CREATE && parse_if_match(if_match, &w.has_if_match, &w.if_match) < 0)
        return answer_text(c, 400, "{\"errors\":[{\"field\":\"If-Match\","
                                   "\"message\":\"must be a version in quotes, or *\"}]}");
    if (id && !ts_valid_id(id, strlen(id)))
        return answer_text(c, 404, "{\"error\":\"not_found\"}");

    cJSON *doc = NULL;
    char gen[37];
    if (op != CA_OP_DELETE) {
        doc = cJSON_ParseWithLength(rq->body.data ? rq->body.data : "", rq->body.len);
        if (!doc)
            return answer_text(c, 400, "{\"errors\":[{\"field\":\"\",\"message\":"
                                       "\"the body is not valid JSON\"}]}");
        ts_buf_t errors = {0};
        int bad = op == CA_OP_CREATE ? ca_doc_check(doc, NULL, &errors)
                                     : (cJSON_IsObject(doc) ? 0 : ca_doc_check(doc, NULL, &errors));
        if (bad) {
            cJSON_Delete(doc);
            ts_buf_t b = {0};
            ts_buf_printf(&b, "{\"errors\":[%s]}", errors.data);
            ts_buf_free(&errors);
            return answer(c, 422, &b);
        }
        if (op == CA_OP_CREATE) {
            const cJSON *given = cJSON_GetObjectItemCaseSensitive(doc, "id");
            if (cJSON_IsString(given)) {
                w.id = given->valuestring;
            } else {
                ts_uuidv7(gen);
                w.id = gen;
            }
        }
    }
    w.doc = doc;

    /* The fingerprint ties a key to one request: method, path, If-Match, body. */
    char fp[65];
    if (key) {
        ts_sha256_t s;
        uint8_t d[32];
        ts_sha256_init(&s);
        ts_sha256_update(&s, method, strlen(method));
        ts_sha256_update(&s, "\n", 1);
        ts_sha256_update(&s, url, strlen(url));
        ts_sha256_update(&s, "\n", 1);
        if (if_match && op != CA_OP_CREATE)
            ts_sha256_update(&s, if_match, strlen(if_match));
        ts_sha256_update(&s, "\n", 1);
        if (rq->body.len)
            ts_sha256_update(&s, rq->body.data, rq->body.len);
        ts_sha256_final(&s, d);
        ts_sha256_to_hex(d, fp);
        w.idem_key = key;
        w.fingerprint = fp;
    }

    ca_reply_t r = {0};
    ca_db_write(h->cfg->db, &w, &r);
    cJSON_Delete(doc);
    if (r.cursor > 0)
        ca_feed_notify(r.cursor);
    if (r.status == 204) {
        ts_buf_free(&r.body);
        return answer(c, 204, NULL);
    }
    return answer(c, r.status, &r.body);
}

static enum MHD_Result long_poll(ca_http_t *h, struct MHD_Connection *c, req_t *rq)
{
    int64_t since, last;
    int limit;
    bool more;
    const char *tq = query(c, "timeout");
    double timeout = h->cfg->max_poll_s;
    if (tq && *tq) {
        char *end;
        timeout = strtod(tq, &end);
        if (*end || timeout < 0 || timeout != timeout)
            return answer_text(c, 400, "{\"error\":\"bad_request\",\"message\":\"timeout must "
                                       "be a number of seconds\"}");
        if (timeout > h->cfg->max_poll_s)
            timeout = h->cfg->max_poll_s;
    }
    if (parse_cursor(query(c, "since"), 0, &since) < 0 || parse_limit(query(c, "limit"), &limit) < 0)
        return answer_text(c, 400, "{\"error\":\"bad_request\",\"message\":\"since must be a "
                                   "cursor, limit a positive integer\"}");
    if (!rq->polling) {
        rq->polling = true;
        rq->deadline_us = ts_mono_us() + (int64_t)(timeout * 1e6);
    }
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"changes\":[");
    int n = ca_db_feed(h->cfg->db, NULL, since, limit, CA_FEED_CHANGES, &b, &last, &more);
    if (n < 0) {
        ts_buf_free(&b);
        return answer_text(c, 500, "{\"error\":\"storage_error\"}");
    }
    if (n == 0 && ts_mono_us() < rq->deadline_us &&
        ca_feed_park(c, rq->deadline_us, since) == 0) {
        ts_buf_free(&b);
        return MHD_YES;
    }
    ts_buf_printf(&b, "],\"cursor\":\"%" PRId64 "\",\"has_more\":%s}", last,
                  more ? "true" : "false");
    return answer(c, 200, &b);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse_t *s = cls;
    int hb_us = s->h->cfg->heartbeat_ms * 1000;
    for (int round = 0; round < 3; round++) {
        if (s->off < s->out.len) {
            size_t n = s->out.len - s->off < max ? s->out.len - s->off : max;
            memcpy(buf, s->out.data + s->off, n);
            s->off += n;
            return (ssize_t)n;
        }
        if (ca_feed_stopping())
            return MHD_CONTENT_READER_END_OF_STREAM;
        ts_buf_reset(&s->out);
        s->off = 0;
        int64_t last, now = ts_mono_us();
        bool more;
        int n = ca_db_feed(s->h->cfg->db, NULL, s->cursor, DEFAULT_LIMIT, CA_FEED_SSE, &s->out,
                           &last, &more);
        if (n < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (n > 0) {
            s->cursor = last;
            s->next_hb = now + hb_us;
            continue;
        }
        if (now >= s->next_hb) {
            ts_buf_puts(&s->out, ": heartbeat\n\n");
            s->next_hb = now + hb_us;
            continue;
        }
        if (ca_feed_park(s->conn, s->next_hb, s->cursor) < 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        return 0;
    }
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void sse_free(void *cls)
{
    sse_t *s = cls;
    ts_buf_free(&s->out);
    free(s);
}

static enum MHD_Result stream(ca_http_t *h, struct MHD_Connection *c)
{
    int64_t since;
    const char *from = header(c, "Last-Event-ID");
    if (!from || !*from)
        from = query(c, "since");
    /* Without a position a stream starts at the present. */
    if (parse_cursor(from, ca_db_head(h->cfg->db), &since) < 0)
        return answer_text(c, 400, "{\"error\":\"bad_request\",\"message\":\"Last-Event-ID "
                                   "and since must be cursors\"}");
    sse_t *s = calloc(1, sizeof *s);
    if (!s)
        return MHD_NO;
    s->h = h;
    s->conn = c;
    s->cursor = since;
    s->next_hb = ts_mono_us() + h->cfg->heartbeat_ms * 1000LL;
    ts_buf_puts(&s->out, ": stream open\n\n");
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, s, sse_free);
    if (!r) {
        sse_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return rc;
}

/* /v1/... after the token check. */
static enum MHD_Result route_v1(ca_http_t *h, struct MHD_Connection *c, req_t *rq,
                                const char *url, const char *method)
{
    const char *rest = url + 4; /* after "/v1/" */
    const char *slash = strchr(rest, '/');
    size_t seg = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *sub = slash ? slash + 1 : NULL;
    if (sub && strchr(sub, '/'))
        return answer_text(c, 404, "{\"error\":\"not_found\"}");
    bool get = strcmp(method, "GET") == 0;
    if (seg == 7 && memcmp(rest, "changes", 7) == 0) {
        if (!get)
            return answer_text(c, 405, "{\"error\":\"method_not_allowed\"}");
        if (!sub)
            return long_poll(h, c, rq);
        if (strcmp(sub, "stream") == 0)
            return stream(h, c);
        return answer_text(c, 404, "{\"error\":\"not_found\"}");
    }
    const char *coll = find_collection(h, rest, seg);
    if (!coll)
        return answer_text(c, 404, "{\"error\":\"unknown_collection\"}");
    if (!sub || !*sub) {
        if (get)
            return list_docs(h, c, coll);
        if (strcmp(method, "POST") == 0)
            return write_doc(h, c, rq, CA_OP_CREATE, method, url, coll, NULL);
        return answer_text(c, 405, "{\"error\":\"method_not_allowed\"}");
    }
    if (get)
        return strcmp(sub, "digest") == 0 ? digest(h, c, coll) : get_doc(h, c, coll, sub);
    if (strcmp(method, "PATCH") == 0)
        return write_doc(h, c, rq, CA_OP_PATCH, method, url, coll, sub);
    if (strcmp(method, "DELETE") == 0)
        return write_doc(h, c, rq, CA_OP_DELETE, method, url, coll, sub);
    return answer_text(c, 405, "{\"error\":\"method_not_allowed\"}");
}

static enum MHD_Result route_control(ca_http_t *h, struct MHD_Connection *c, req_t *rq,
                                     const char *url, const char *method)
{
    if (!h->cfg->control)
        return answer_text(c, 404, "{\"error\":\"not_found\"}");
    if (!from_loopback(c))
        return answer_text(c, 403, "{\"error\":\"forbidden\"}");
    ts_buf_t b = {0};
    if (strcmp(url, "/_control/faults") == 0) {
        ca_faults_t f;
        if (strcmp(method, "POST") == 0) {
            const char *err = NULL;
            if (ca_faults_parse(rq->body.data ? rq->body.data : "", rq->body.len, &f, &err) < 0) {
                ts_buf_puts(&b, "{\"errors\":[{\"field\":\"\",\"message\":");
                ts_buf_json_string(&b, err, strlen(err));
                ts_buf_puts(&b, "}]}");
                return answer(c, 422, &b);
            }
            ca_faults_set(&f);
            ts_info(MOD, "faults set: fail_rate=%g status=%d latency_ms=%d drop_rate=%g offline=%d",
                    f.fail_rate, f.status, f.latency_ms, f.drop_rate, f.offline);
        } else if (strcmp(method, "GET") != 0) {
            return answer_text(c, 405, "{\"error\":\"method_not_allowed\"}");
        }
        ca_faults_get(&f);
        ca_faults_json(&f, &b);
        return answer(c, 200, &b);
    }
    if (strcmp(url, "/_control/stats") == 0 && strcmp(method, "GET") == 0) {
        ca_stats_json(&b);
        return answer(c, 200, &b);
    }
    return answer_text(c, 404, "{\"error\":\"not_found\"}");
}

static enum MHD_Result route(ca_http_t *h, struct MHD_Connection *c, req_t *rq, const char *url,
                             const char *method)
{
    if (rq->too_large)
        return answer_text(c, 413, "{\"error\":\"too_large\"}");
    if (strncmp(url, "/v1/", 4) == 0) {
        if (ca_auth_check(header(c, "Authorization")) < 0)
            return answer_text(c, 401, "{\"error\":\"invalid_token\"}");
        return route_v1(h, c, rq, url, method);
    }
    if (strcmp(url, "/oauth/token") == 0) {
        if (strcmp(method, "POST") != 0)
            return answer_text(c, 405, "{\"error\":\"method_not_allowed\"}");
        ts_buf_t b = {0};
        int status = 500;
        ca_auth_token(rq->body.data ? rq->body.data : "", rq->body.len,
                      header(c, "Authorization"), &status, &b);
        return answer(c, status, &b);
    }
    return answer_text(c, 404, "{\"error\":\"not_found\"}");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)version;
    ca_http_t *h = cls;
    req_t *rq = *con_cls;
    bool control = strncmp(url, "/_control/", 10) == 0;
    ca_faults_t f;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        atomic_fetch_add_explicit(&ca_stats.requests, 1, memory_order_relaxed);
        if (!control && ca_faults_get(&f) && f.offline) {
            atomic_fetch_add(&ca_stats.faults_dropped, 1);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (rq->body.len + *upload_size > MAX_BODY)
            rq->too_large = true;
        else if (ts_buf_append(&rq->body, upload, *upload_size) < 0)
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (control)
        return route_control(h, c, rq, url, method);
    if (!rq->faults_done && ca_faults_get(&f)) {
        if (f.latency_ms > 0 && !rq->delayed) {
            rq->delayed = true;
            atomic_fetch_add(&ca_stats.faults_delayed, 1);
            if (ca_feed_park(c, ts_mono_us() + f.latency_ms * 1000LL, -1) == 0)
                return MHD_YES;
        }
        rq->faults_done = true;
        if (f.offline || (f.drop_rate > 0 && ca_rand01() < f.drop_rate)) {
            atomic_fetch_add(&ca_stats.faults_dropped, 1);
            return MHD_NO;
        }
        if (f.fail_rate > 0 && ca_rand01() < f.fail_rate) {
            atomic_fetch_add(&ca_stats.faults_failed, 1);
            return answer_injected(c, &f);
        }
    }
    rq->faults_done = true;
    return route(h, c, rq, url, method);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    req_t *rq = *con_cls;
    if (rq) {
        ts_buf_free(&rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

ca_http_t *ca_http_start(const ca_http_config_t *cfg)
{
    ca_http_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->cfg = cfg;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(cfg->port)};
    if (inet_pton(AF_INET, cfg->host, &addr.sin_addr) != 1) {
        ts_error(MOD, "--listen: %s is not an IPv4 address", cfg->host);
        free(h);
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_TURBO;
    h->mhd = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->threads > 1 ? cfg->threads : 1),
        MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, MHD_OPTION_END);
    if (!h->mhd) {
        ts_error(MOD, "cannot listen on %s:%u", cfg->host, (unsigned)cfg->port);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : cfg->port;
    return h;
}

uint16_t ca_http_port(const ca_http_t *h) { return h->port; }

void ca_http_stop(ca_http_t **hp)
{
    ca_http_t *h = *hp;
    if (!h)
        return;
    MHD_socket listen_fd = MHD_quiesce_daemon(h->mhd);
    ca_feed_stop();
    /* Give resumed connections a moment to finish their last answer. */
    usleep(100 * 1000);
    MHD_stop_daemon(h->mhd);
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    free(h);
    *hp = NULL;
}
