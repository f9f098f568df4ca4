/* http.c — request life: the first call of the access handler registers the
 * request and applies "offline"; upload calls collect the body; the final
 * call applies the other faults once, checks the token and routes. */
#include "http.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "control.h"
#include "feed.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/sha256.h"
#include "writer.h"

#define MOD "http"
#define MAX_BODY (1024 * 1024)
#define DEFAULT_LIMIT 100
#define MAX_LIMIT 1000

/* An open TCP connection, for the header deadline (http.h). */
typedef struct guard {
    struct guard *prev, *next;
    MHD_socket fd;
    _Atomic int64_t deadline_us; /* mono; 0 while a request is being handled */
} guard_t;

struct ca_http {
    const ca_http_config_t *cfg;
    struct MHD_Daemon *mhd;
    uint16_t port;
    /* the reaper of connections past their header deadline */
    pthread_mutex_t glock; /* guards the list; held while a socket is shut down */
    pthread_cond_t gwake;
    guard_t *guards;
    pthread_t reaper;
    bool reaper_running, stopping;
};

/* Per-request state, freed by the completion callback. */
typedef struct {
    bool started;        /* the access handler has seen the request */
    bool uri_seen;       /* on_uri kept the raw query (false: out of memory) */
    char *query;         /* the raw query string as sent, after '?' (NULL: none) */
    ts_buf_t body;       /* request body */
    bool too_large;      /* body passed MAX_BODY: answered 413 */
    bool faults_done;    /* faults were applied to this request */
    bool delayed;        /* latency_ms was served */
    bool answer_delayed; /* answer_latency_ms was served */
    bool polling;        /* long poll started (counted in ca_feed_polls) */
    ca_route_t route;    /* what /metrics counts its answer under */
    int64_t deadline_us; /* long poll deadline */
    bool queued;         /* the write went to the group-commit writer */
    ca_job_t job;        /* the write and its answer */
    cJSON *doc;          /* parsed body the write refers to */
    char *rendered;      /* a create's stored text for version 1 */
    const char *flaw;    /* the request's framing is refused (400): the header at fault */
    const char *flaw_message;
    char fp[65];         /* request fingerprint for Idempotency-Key */
    char gen[37];        /* generated id of a create */
    struct bop *bops;    /* POST /v1/_batch: its ops (doc holds the parsed batch) */
    size_t nbops;
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

/* Queues an answer; takes the buffer's text. body NULL: none. close: the
 * connection ends after it. etag: an ETag header (NULL: none). */
static enum MHD_Result respond(struct MHD_Connection *c, int status, ts_buf_t *body, bool close,
                               const char *etag)
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
    if (close)
        MHD_add_response_header(r, "Connection", "close");
    if (etag)
        MHD_add_response_header(r, "ETag", etag);
    if (status == 401) {
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        atomic_fetch_add(&ca_stats.unauthorized, 1);
    }
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result answer_ex(struct MHD_Connection *c, int status, ts_buf_t *body, bool close)
{
    return respond(c, status, body, close, NULL);
}

static enum MHD_Result answer(struct MHD_Connection *c, int status, ts_buf_t *body)
{
    return answer_ex(c, status, body, false);
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
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)ci->client_addr;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
               (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127);
    }
    return false;
}

/* ---- conditional GETs (RFC 9110 §13.1.2) ---------------------------------- */

/* Whether If-None-Match names etag: "*", or a comma-separated list of
 * entity tags compared weakly (a W/ prefix is ignored). A malformed list
 * matches nothing, so the full answer is sent. */
static bool none_match(const char *list, const char *etag)
{
    if (!list)
        return false;
    size_t en = strlen(etag);
    for (const char *p = list;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        const char *end = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (!end)
            return false;
        if ((size_t)(end + 1 - p) == en && memcmp(p, etag, en) == 0)
            return true;
        p = end + 1;
    }
}

/* A 200 answer to a GET with its ETag (etag NULL: the quoted SHA-256 of
 * the body), or 304 with the ETag and no body when If-None-Match names it. */
static enum MHD_Result answer_tagged(struct MHD_Connection *c, ts_buf_t *body, const char *etag)
{
    char hashed[67];
    if (!etag) {
        ts_sha256_t s;
        uint8_t d[32];
        char hex[65];
        ts_sha256_init(&s);
        ts_sha256_update(&s, body->data ? body->data : "", body->len);
        ts_sha256_final(&s, d);
        ts_sha256_to_hex(d, hex);
        snprintf(hashed, sizeof hashed, "\"%s\"", hex);
        etag = hashed;
    }
    if (none_match(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match"), etag)) {
        atomic_fetch_add(&ca_stats.not_modified, 1);
        ts_buf_free(body);
        /* libmicrohttpd 0.9.75 adds "Content-Length: 0" (RFC 9110 §8.6 wants
         * none, or the 200's); the framing stays right, so it is left be. */
        return respond(c, 304, NULL, false, etag);
    }
    return respond(c, 200, body, false, etag);
}

/* ---- query strings ----------------------------------------------------------
 * libmicrohttpd decodes query arguments leniently (a bad escape passes as
 * written, %00 cuts the value short), so GET /v1/{coll} decodes the raw
 * query (kept by on_uri) itself, strictly. */

#define MAX_QUERY_ARGS 32
#define MAX_QUERY_TEXT 1024 /* bytes of a decoded name or value */

typedef struct {
    const char *key, *value; /* decoded, NUL-terminated */
    size_t value_len;
} qarg_t;

typedef struct {
    char *buf; /* the decoded names and values */
    qarg_t arg[MAX_QUERY_ARGS];
    int n;
} qargs_t;

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes n bytes of s (%XX escapes; + is a space, as in forms) into out
 * with a NUL after them. The decoded length, or -1 on a bad escape or a
 * NUL (which a C string, and any stored value, cannot hold). */
static long url_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '+') {
            ch = ' ';
        } else if (ch == '%') {
            int hi = n - i >= 3 ? hex_digit(s[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
            if (lo < 0 || (hi | lo) == 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        out[o++] = ch;
    }
    out[o] = '\0';
    return (long)o;
}

/* Splits raw ("a=1&b=2") into decoded names and values in q (free q->buf
 * after). Empty segments ("a=1&&b=2") are skipped; "a" alone is a = "".
 * Returns NULL, or why the query is refused. */
static const char *parse_query(const char *raw, qargs_t *q)
{
    q->n = 0;
    q->buf = NULL;
    size_t len = raw ? strlen(raw) : 0;
    if (len == 0)
        return NULL;
    /* Each segment decodes to at most its own length plus two NULs. */
    char *o = q->buf = malloc(2 * len + 2);
    if (!o)
        return "out of memory";
    for (const char *p = raw, *end = raw + len; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *seg_end = amp ? amp : end;
        if (seg_end > p) {
            if (q->n == MAX_QUERY_ARGS)
                return "too many query parameters (at most 32)";
            const char *eq = memchr(p, '=', (size_t)(seg_end - p));
            const char *key_end = eq ? eq : seg_end;
            if (key_end == p)
                return "a query parameter has an empty name";
            qarg_t *a = &q->arg[q->n++];
            long kn = url_decode(p, (size_t)(key_end - p), o);
            if (kn < 0)
                return "a bad percent escape (%XX with two hex digits, not %00)";
            a->key = o;
            o += kn + 1;
            long vn = eq ? url_decode(eq + 1, (size_t)(seg_end - eq - 1), o) : 0;
            if (vn < 0)
                return "a bad percent escape (%XX with two hex digits, not %00)";
            a->value = eq ? o : "";
            a->value_len = (size_t)vn;
            o += eq ? vn + 1 : 0;
            if (kn > MAX_QUERY_TEXT || vn > MAX_QUERY_TEXT)
                return "a query parameter's name or value is over 1 KiB";
        }
        p = seg_end + 1;
    }
    return NULL;
}

/* 400 {"errors":[{"field":field,"message":message}]}. */
static enum MHD_Result bad_query(struct MHD_Connection *c, const char *field, const char *message)
{
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"errors\":[{\"field\":");
    ts_buf_json_string(&b, field, strlen(field));
    ts_buf_puts(&b, ",\"message\":");
    ts_buf_json_string(&b, message, strlen(message));
    ts_buf_puts(&b, "}]}");
    return answer(c, 400, &b);
}

/* ---- HTTP framing libmicrohttpd lets through ------------------------------ */

typedef struct {
    const char *clen;    /* the first Content-Length */
    bool te;             /* Transfer-Encoding given */
    const char *field;   /* the header at fault */
    const char *message;
} scan_t;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    scan_t *s = cls;
    if (!value)
        return MHD_YES;
#if MHD_VERSION < 0x00097600
    /* 0.9.75 parses the headers in place, ending each value where its CR LF
     * were (both replaced by zeros), and stops reading a value at a NUL: a
     * byte other than zero right after the end means the value held a NUL
     * and its rest was cut off unseen (or the line ended in a bare LF). */
    if (value[strlen(value) + 1] != '\0') {
        s->field = key;
        s->message = "a header value must not contain NUL (and lines end in CR LF)";
        return MHD_NO;
    }
#endif
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (s->clen && strcmp(s->clen, value) != 0) {
            s->field = MHD_HTTP_HEADER_CONTENT_LENGTH;
            s->message = "two different Content-Length headers";
            return MHD_NO;
        }
        s->clen = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        s->te = true;
    }
    return MHD_YES;
}

/* Sets rq->flaw when the request's framing is ambiguous or malformed in a
 * way libmicrohttpd 0.9.75 accepts: conflicting Content-Length headers (or
 * one beside Transfer-Encoding), HTTP/1.1 without Host, NUL in a header
 * value. Such a request gets 400 and its connection is closed, since where
 * its body ends (and the next request starts) is not certain. */
static void check_framing(struct MHD_Connection *c, const char *version, req_t *rq)
{
    scan_t s = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, scan_header, &s);
    if (!s.field && s.clen && s.te) {
        s.field = MHD_HTTP_HEADER_CONTENT_LENGTH;
        s.message = "Content-Length and Transfer-Encoding together";
    }
    if (!s.field && strcmp(version, MHD_HTTP_VERSION_1_1) == 0 &&
        !MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST)) {
        s.field = MHD_HTTP_HEADER_HOST;
        s.message = "an HTTP/1.1 request needs a Host header";
    }
    rq->flaw = s.field;
    rq->flaw_message = s.message;
}

static enum MHD_Result answer_flaw(struct MHD_Connection *c, const req_t *rq)
{
    atomic_fetch_add(&ca_stats.malformed, 1);
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"errors\":[{\"field\":");
    ts_buf_json_string(&b, rq->flaw, strlen(rq->flaw));
    ts_buf_puts(&b, ",\"message\":");
    ts_buf_json_string(&b, rq->flaw_message, strlen(rq->flaw_message));
    ts_buf_puts(&b, "}]}");
    return answer_ex(c, 400, &b, true);
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

/* ---- the filtered listing ----------------------------------------------------
 * GET /v1/{coll}?FIELD=VALUE&limit=N&cursor=C: the live documents whose
 * top-level FIELD equals VALUE (all pairs ANDed), in id order, a page at a
 * time. The cursor is the last id of the page behind a version prefix: a
 * page starts after it, so documents changed meanwhile keep their place. */

#define LIST_CURSOR_PREFIX "c1."

typedef struct {
    const qarg_t *filters[MAX_QUERY_ARGS];
    int nfilters;
    int limit, n;
    bool more;
    int rc;
    ts_buf_t *out;
    char last[65]; /* the id of the page's last item (ids are at most 64) */
} flist_t;

/* Whether the raw JSON value v (vn bytes, as stored) equals the filter
 * text: a string by its decoded text, a number, true, false or null by its
 * JSON text; an object or array never. */
static bool value_matches(const char *v, size_t vn, const char *want, size_t wn)
{
    if (vn >= 2 && v[0] == '"') {
        if (!memchr(v, '\\', vn))
            return vn - 2 == wn && memcmp(v + 1, want, wn) == 0;
        cJSON *str = cJSON_ParseWithLength(v, vn);
        bool eq = cJSON_IsString(str) && strlen(str->valuestring) == wn &&
                  memcmp(str->valuestring, want, wn) == 0;
        cJSON_Delete(str);
        return eq;
    }
    if (vn && (v[0] == '{' || v[0] == '['))
        return false;
    return vn == wn && memcmp(v, want, wn) == 0;
}

static int filter_row(void *ctx, const char *id, const char *body, size_t len)
{
    flist_t *f = ctx;
    for (int i = 0; i < f->nfilters; i++) {
        const qarg_t *a = f->filters[i];
        const char *v;
        size_t vn;
        if (!ts_json_text_field(body, len, a->key, strlen(a->key), &v, &vn) ||
            !value_matches(v, vn, a->value, a->value_len))
            return 0;
    }
    if (f->n == f->limit) { /* one match past the page: there is another */
        f->more = true;
        return 1;
    }
    f->rc |= f->n ? ts_buf_puts(f->out, ",") : 0;
    f->rc |= ts_buf_append(f->out, body, len);
    ts_copy_text(f->last, sizeof f->last, id);
    f->n++;
    return 0;
}

static enum MHD_Result filter_docs(ca_http_t *h, struct MHD_Connection *c, const char *coll,
                                   const qargs_t *q)
{
    atomic_fetch_add(&ca_stats.list_requests, 1);
    flist_t f = {.limit = DEFAULT_LIMIT};
    const char *cursor = "";
    for (int i = 0; i < q->n; i++) {
        const qarg_t *a = &q->arg[i];
        if (strcmp(a->key, "limit") == 0) {
            int64_t v;
            if (ts_parse_i64(a->value, &v) < 0 || v < 1 || v > MAX_LIMIT)
                return bad_query(c, "limit", "must be an integer from 1 to 1000");
            f.limit = (int)v;
        } else if (strcmp(a->key, "cursor") == 0) {
            cursor = a->value;
        } else if (strcmp(a->key, "timeout") != 0) {
            f.filters[f.nfilters++] = a;
        }
    }
    const char *after = "";
    if (*cursor) {
        size_t pn = strlen(LIST_CURSOR_PREFIX);
        if (strncmp(cursor, LIST_CURSOR_PREFIX, pn) != 0 ||
            !ts_valid_id(cursor + pn, strlen(cursor + pn)))
            return bad_query(c, "cursor",
                             "is not one this server gave: pass the previous page's cursor as is");
        after = cursor + pn;
    }
    ts_buf_t b = {0};
    f.out = &b;
    ts_buf_puts(&b, "{\"items\":[");
    if (ca_db_scan(h->cfg->db, coll, after, filter_row, &f) < 0 || f.rc) {
        ts_buf_free(&b);
        return answer_text(c, 500, "{\"error\":\"storage_error\"}");
    }
    if (f.more)
        ts_buf_printf(&b, "],\"cursor\":\"" LIST_CURSOR_PREFIX "%s\",\"has_more\":true}", f.last);
    else
        ts_buf_puts(&b, "],\"cursor\":null,\"has_more\":false}");
    return answer_tagged(c, &b, NULL);
}

/* GET /v1/{coll}: the change listing (since, limit), or the filtered one
 * when a filter or cursor is given without since. */
static enum MHD_Result list_docs(ca_http_t *h, struct MHD_Connection *c, req_t *rq,
                                 const char *coll)
{
    if (!rq->uri_seen)
        return answer_text(c, 500, "{\"error\":\"out_of_memory\"}");
    qargs_t q;
    const char *why = parse_query(rq->query, &q);
    bool since = false, filtered = false;
    for (int i = 0; !why && i < q.n; i++) {
        const char *k = q.arg[i].key;
        if (strcmp(k, "since") == 0)
            since = true;
        else if (strcmp(k, "limit") != 0 && strcmp(k, "timeout") != 0)
            filtered = true; /* a filter, or cursor */
    }
    if (!why && since && filtered)
        why = "since (the change listing) cannot be combined with filters or cursor";
    enum MHD_Result rc = why ? bad_query(c, "query", why)
                             : filtered ? filter_docs(h, c, coll, &q) : MHD_YES;
    free(q.buf);
    if (why || filtered)
        return rc;

    int64_t since_cursor, last;
    int limit;
    bool more;
    if (parse_cursor(query(c, "since"), 0, &since_cursor) < 0 ||
        parse_limit(query(c, "limit"), &limit) < 0)
        return answer_text(c, 400,
                           "{\"error\":\"bad_request\",\"message\":\"since must be a "
                           "cursor, limit a positive integer\"}");
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"items\":[");
    if (ca_db_feed(h->cfg->db, coll, since_cursor, limit, CA_FEED_ITEMS, &b, &last, &more) < 0) {
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
    atomic_fetch_add(&ca_stats.doc_gets, 1);
    ts_buf_t b = {0};
    int64_t version = 0;
    int found = ts_valid_id(id, strlen(id)) ? ca_db_get(h->cfg->db, coll, id, &b, &version) : 0;
    if (found == 1) {
        /* The version, quoted: the very text If-Match takes for a write. */
        char etag[32];
        snprintf(etag, sizeof etag, "\"%" PRId64 "\"", version);
        return answer_tagged(c, &b, etag);
    }
    ts_buf_free(&b);
    return found == 0 ? answer_text(c, 404, "{\"error\":\"not_found\"}")
                      : answer_text(c, 500, "{\"error\":\"storage_error\"}");
}

/* GET /v1/{coll}/digest[?form=content|version]: content (the default)
 * covers each document's body, version only its id and version (the form
 * older engines compare). */
static enum MHD_Result digest(ca_http_t *h, struct MHD_Connection *c, const char *coll)
{
    const char *form = query(c, "form");
    if (form && strcmp(form, "content") != 0 && strcmp(form, "version") != 0)
        return bad_query(c, "form", "must be content or version");
    ts_buf_t b = {0};
    if (ca_db_digest(h->cfg->db, coll, !form || strcmp(form, "version") != 0, &b) < 0) {
        ts_buf_free(&b);
        return answer_text(c, 500, "{\"error\":\"storage_error\"}");
    }
    return answer(c, 200, &b);
}

/* Queues the answer of a finished write. */
static enum MHD_Result finish_write(struct MHD_Connection *c, req_t *rq)
{
    if (rq->job.r.status == 204) {
        ts_buf_free(&rq->job.r.body);
        return answer(c, 204, NULL);
    }
    return answer(c, rq->job.r.status, &rq->job.r.body);
}

/* A NUL in a string (escaped or not) or an escape JSON does not have:
 * cJSON would cut the string there or read it as NUL, so it is refused,
 * never stored short. */
#define BODY_STRING_FAULT                                                                          \
    "{\"errors\":[{\"field\":\"\",\"message\":\"a string holds a NUL or an escape JSON "   \
    "does not have\"}]}"

/* POST, PATCH and DELETE. id is NULL for a create. The write goes to the
 * group-commit writer and the connection waits suspended; MHD calls the
 * handler again after the commit, and route() sends the answer. */
/* The fingerprint that ties an Idempotency-Key to one request: method, path
 * and body, what the client meant to do. If-Match is left out (if_match
 * NULL) unless --strict-idempotency: a client retrying after a crash may no
 * longer know the precondition it first sent, and the first answer is what
 * it needs. A batch op gets the one of its single request, so a key may move
 * between the two. */
static void fingerprint(const char *method, const char *url, const char *if_match,
                        const char *body, size_t body_len, char out[65])
{
    ts_sha256_t s;
    uint8_t d[32];
    ts_sha256_init(&s);
    ts_sha256_update(&s, method, strlen(method));
    ts_sha256_update(&s, "\n", 1);
    ts_sha256_update(&s, url, strlen(url));
    ts_sha256_update(&s, "\n", 1);
    if (if_match)
        ts_sha256_update(&s, if_match, strlen(if_match));
    ts_sha256_update(&s, "\n", 1);
    if (body_len)
        ts_sha256_update(&s, body, body_len);
    ts_sha256_final(&s, d);
    ts_sha256_to_hex(d, out);
}

static enum MHD_Result write_doc(ca_http_t *h, struct MHD_Connection *c, req_t *rq, ca_op_t op,
                                 const char *method, const char *url, const char *coll,
                                 const char *id)
{
    ca_write_t *w = &rq->job.w;
    *w = (ca_write_t){.op = op, .coll = coll, .id = id};
    const char *key = header(c, "Idempotency-Key");
    const char *if_match = header(c, "If-Match");
    if (key && (!*key || strlen(key) > 255))
        return answer_text(c, 400,
                           "{\"errors\":[{\"field\":\"Idempotency-Key\","
                           "\"message\":\"must be 1-255 characters\"}]}");
    if (op != CA_OP_CREATE && parse_if_match(if_match, &w->has_if_match, &w->if_match) < 0)
        return answer_text(c, 400,
                           "{\"errors\":[{\"field\":\"If-Match\","
                           "\"message\":\"must be a version in quotes, or *\"}]}");
    if (id && !ts_valid_id(id, strlen(id)))
        return answer_text(c, 404, "{\"error\":\"not_found\"}");

    if (op != CA_OP_DELETE) {
        if (ts_json_string_fault(rq->body.data ? rq->body.data : "", rq->body.len))
            return answer_text(c, 400, BODY_STRING_FAULT);
        rq->doc = cJSON_ParseWithLength(rq->body.data ? rq->body.data : "", rq->body.len);
        if (!rq->doc)
            return answer_text(c, 400,
                               "{\"errors\":[{\"field\":\"\",\"message\":"
                               "\"the body is not valid JSON\"}]}");
        ts_buf_t errors = {0};
        int bad = op == CA_OP_CREATE || !cJSON_IsObject(rq->doc)
                      ? ca_doc_check(rq->doc, NULL, &errors)
                      : 0;
        bad += ca_doc_numbers(rq->doc, &errors);
        if (bad) {
            ts_buf_t b = {0};
            ts_buf_printf(&b, "{\"errors\":[%s]}", errors.data);
            ts_buf_free(&errors);
            return answer(c, 422, &b);
        }
        if (op == CA_OP_CREATE) {
            const cJSON *given = cJSON_GetObjectItemCaseSensitive(rq->doc, "id");
            if (cJSON_IsString(given)) {
                w->id = given->valuestring;
            } else {
                ts_uuidv7(rq->gen);
                w->id = rq->gen;
            }
        }
    }
    w->doc = rq->doc;
    if (op == CA_OP_CREATE) {
        /* Rendering here, in parallel HTTP threads, keeps the writer short. */
        rq->rendered = ca_doc_render(cJSON_Duplicate(rq->doc, 1), w->id, 1, false);
        w->rendered = rq->rendered;
    }

    if (key) {
        fingerprint(method, url,
                    op == CA_OP_CREATE || !h->cfg->strict_idempotency ? NULL : if_match,
                    rq->body.data, rq->body.len, rq->fp);
        w->idem_key = key;
        w->fingerprint = rq->fp;
    }

    rq->job.conn = c;
    if (ca_writer_submit(&rq->job) == 0) {
        rq->queued = true;
        return MHD_YES;
    }
    /* Stopping: write synchronously. */
    ca_db_write(h->cfg->db, w, &rq->job.r);
    if (rq->job.r.cursor > 0)
        ca_feed_notify(rq->job.r.cursor);
    return finish_write(c, rq);
}

/* ---- POST /v1/_batch --------------------------------------------------------
 * An extension of Clinic API v1 (docs/CLINIC_API.md): many writes in one
 * request, each answered exactly as its own request would be, all applied
 * in order in one transaction by the group-commit writer before the answer. */

/* One op of a batch. */
typedef struct bop {
    ca_write_t w;
    ca_reply_t r;
    bool early;     /* answered without storage, as its single request would be */
    char *rendered; /* a create's stored text for version 1 */
    char fp[65];    /* the fingerprint of the equivalent single request */
    char gen[37];   /* generated id of a create */
} bop_t;

static void batch_free(req_t *rq)
{
    for (size_t i = 0; i < rq->nbops; i++) {
        ts_buf_free(&rq->bops[i].r.body);
        free(rq->bops[i].rendered);
    }
    free(rq->bops);
    free((void *)rq->job.ops);
    free(rq->job.replies);
}

static void early_answer(bop_t *o, int status, const char *json)
{
    o->early = true;
    o->r.status = status;
    ts_buf_puts(&o->r.body, json);
}

/* A malformed batch: 400 naming the field (ops[i].field); nothing applied. */
static enum MHD_Result batch_bad(struct MHD_Connection *c, long i, const char *field,
                                 const char *message)
{
    char where[80];
    if (i < 0)
        snprintf(where, sizeof where, "%s", field);
    else
        snprintf(where, sizeof where, "ops[%ld]%s%s", i, *field ? "." : "", field);
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"errors\":[{\"field\":");
    ts_buf_json_string(&b, where, strlen(where));
    ts_buf_puts(&b, ",\"message\":");
    ts_buf_json_string(&b, message, strlen(message));
    ts_buf_puts(&b, "}]}");
    return answer(c, 400, &b);
}

/* Reads one op into o, with the checks of write_doc. Returns NULL when the
 * op is well formed (o->early says it is already answered), or the name of
 * the malformed field with *why. The fingerprint is the one the same write
 * sent alone would get (body in compact form, If-Match "N"), so a key may
 * move between a batch and a single request. */
static const char *batch_op(ca_http_t *h, const cJSON *op, bop_t *o, const char **why)
{
    if (!cJSON_IsObject(op))
        return *why = "must be an object", "";
    const char *method = ts_json_string(op, "method");
    ca_op_t kind;
    if (method && strcmp(method, "POST") == 0)
        kind = CA_OP_CREATE;
    else if (method && strcmp(method, "PATCH") == 0)
        kind = CA_OP_PATCH;
    else if (method && strcmp(method, "DELETE") == 0)
        kind = CA_OP_DELETE;
    else
        return *why = "must be POST, PATCH or DELETE", "method";
    const char *coll_name = ts_json_string(op, "collection");
    if (!coll_name)
        return *why = "must be a collection name", "collection";
    const char *id = kind == CA_OP_CREATE ? NULL : ts_json_string(op, "id");
    if (kind != CA_OP_CREATE && !id)
        return *why = "must be the document's id (PATCH and DELETE)", "id";
    const cJSON *if_match = cJSON_GetObjectItemCaseSensitive(op, "if_match");
    char if_match_text[40] = "";
    /* One rule with the header: a non-negative integer, exactly (0.6 is not
     * rounded to 1); anything else is a malformed If-Match below. */
    int64_t v;
    if (ca_json_count(if_match, &v))
        snprintf(if_match_text, sizeof if_match_text, "\"%" PRId64 "\"", v);
    else if (cJSON_IsNumber(if_match))
        snprintf(if_match_text, sizeof if_match_text, "not an integer");
    else if (cJSON_IsString(if_match))
        snprintf(if_match_text, sizeof if_match_text, "%s", if_match->valuestring);
    else if (if_match && !cJSON_IsNull(if_match))
        return *why = "must be a version number or an If-Match string", "if_match";
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(op, "idempotency_key");
    if (key && !cJSON_IsNull(key) && !cJSON_IsString(key))
        return *why = "must be a string", "idempotency_key";
    cJSON *body = cJSON_GetObjectItemCaseSensitive(op, "body");
    if (kind != CA_OP_DELETE && !body)
        return *why = "is required for POST and PATCH", "body";

    /* From here on, answers are those of the single request. */
    ca_write_t *w = &o->w;
    const char *coll = find_collection(h, coll_name, strlen(coll_name));
    *w = (ca_write_t){.op = kind, .coll = coll, .id = id};
    if (!coll) {
        early_answer(o, 404, "{\"error\":\"unknown_collection\"}");
        return NULL;
    }
    if (cJSON_IsString(key) && (!*key->valuestring || strlen(key->valuestring) > 255)) {
        early_answer(o, 400, "{\"errors\":[{\"field\":\"Idempotency-Key\","
                             "\"message\":\"must be 1-255 characters\"}]}");
        return NULL;
    }
    if (kind != CA_OP_CREATE && parse_if_match(*if_match_text ? if_match_text : NULL,
                                               &w->has_if_match, &w->if_match) < 0) {
        early_answer(o, 400, "{\"errors\":[{\"field\":\"If-Match\","
                             "\"message\":\"must be a version in quotes, or *\"}]}");
        return NULL;
    }
    if (id && !ts_valid_id(id, strlen(id))) {
        early_answer(o, 404, "{\"error\":\"not_found\"}");
        return NULL;
    }
    if (kind != CA_OP_DELETE) {
        ts_buf_t errors = {0};
        int bad = kind == CA_OP_CREATE || !cJSON_IsObject(body) ? ca_doc_check(body, NULL, &errors)
                                                                : 0;
        if (bad + ca_doc_numbers(body, &errors)) {
            o->early = true;
            o->r.status = 422;
            ts_buf_printf(&o->r.body, "{\"errors\":[%s]}", errors.data);
            ts_buf_free(&errors);
            return NULL;
        }
    }
    /* The body in compact form: the fingerprint's, and a create's stored
     * text is made from it (printed once, not rendered again from a copy). */
    bool print = kind == CA_OP_CREATE || (kind == CA_OP_PATCH && cJSON_IsString(key));
    char *text = print ? cJSON_PrintUnformatted(body) : NULL;
    size_t text_len = text ? strlen(text) : 0;
    if (kind == CA_OP_CREATE) {
        const cJSON *given = cJSON_GetObjectItemCaseSensitive(body, "id");
        if (cJSON_IsString(given)) {
            w->id = given->valuestring;
        } else {
            ts_uuidv7(o->gen);
            w->id = o->gen;
        }
        o->rendered = text ? ca_doc_render_text(text, text_len, w->id, 1) : NULL;
        if (!o->rendered)
            o->rendered = ca_doc_render(cJSON_Duplicate(body, 1), w->id, 1, false);
        w->rendered = o->rendered;
    }
    if (kind != CA_OP_DELETE)
        w->doc = body;
    if (cJSON_IsString(key)) {
        char url[200];
        snprintf(url, sizeof url, "/v1/%s%s%s", coll, id ? "/" : "", id ? id : "");
        fingerprint(method, url,
                    kind == CA_OP_CREATE || !h->cfg->strict_idempotency ? NULL : if_match_text,
                    text, text_len, o->fp);
        w->idem_key = key->valuestring;
        w->fingerprint = o->fp;
    }
    cJSON_free(text);
    return NULL;
}

/* {"results":[{"status":N,"body":...},...]} in the order of the ops. */
static enum MHD_Result finish_batch(struct MHD_Connection *c, req_t *rq)
{
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"results\":[");
    for (size_t i = 0; i < rq->nbops; i++) {
        const ca_reply_t *r = &rq->bops[i].r;
        ts_buf_printf(&b, "%s{\"status\":%d", i ? "," : "", r->status);
        if (r->body.len) {
            ts_buf_puts(&b, ",\"body\":");
            ts_buf_append(&b, r->body.data, r->body.len);
        }
        ts_buf_puts(&b, "}");
    }
    ts_buf_puts(&b, "]}");
    atomic_fetch_add(&ca_stats.batches, 1);
    atomic_fetch_add(&ca_stats.batch_ops, (long long)rq->nbops);
    return answer(c, 200, &b);
}

static enum MHD_Result batch(ca_http_t *h, struct MHD_Connection *c, req_t *rq)
{
    if (ts_json_string_fault(rq->body.data ? rq->body.data : "", rq->body.len))
        return answer_text(c, 400, BODY_STRING_FAULT);
    rq->doc = cJSON_ParseWithLength(rq->body.data ? rq->body.data : "", rq->body.len);
    if (!rq->doc)
        return batch_bad(c, -1, "", "the body is not valid JSON");
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(rq->doc, "ops"), *op;
    if (!cJSON_IsArray(ops))
        return batch_bad(c, -1, "ops", "must be an array of operations");
    int n = cJSON_GetArraySize(ops);
    if (n > CA_MAX_BATCH_OPS) {
        ts_buf_t b = {0};
        ts_buf_printf(&b, "{\"error\":\"too_many_ops\",\"max_ops\":%d}", CA_MAX_BATCH_OPS);
        return answer(c, 413, &b);
    }
    if (n == 0)
        return answer_text(c, 200, "{\"results\":[]}");
    rq->bops = calloc((size_t)n, sizeof *rq->bops);
    rq->job.ops = calloc((size_t)n, sizeof *rq->job.ops);
    rq->job.replies = calloc((size_t)n, sizeof *rq->job.replies);
    if (!rq->bops || !rq->job.ops || !rq->job.replies)
        return answer_text(c, 500, "{\"error\":\"out_of_memory\"}");
    size_t queued = 0;
    cJSON_ArrayForEach(op, ops)
    {
        bop_t *o = &rq->bops[rq->nbops];
        const char *why = NULL, *field = batch_op(h, op, o, &why);
        if (field)
            return batch_bad(c, (long)rq->nbops, field, why);
        rq->nbops++;
        if (!o->early) {
            rq->job.ops[queued] = &o->w;
            rq->job.replies[queued++] = &o->r;
        }
    }
    rq->job.nops = queued;
    if (queued) {
        rq->job.conn = c;
        if (ca_writer_submit(&rq->job) == 0) {
            rq->queued = true;
            return MHD_YES;
        }
        /* Stopping: write synchronously. */
        ca_feed_notify(ca_db_write_batch(h->cfg->db, rq->job.ops, rq->job.replies, queued));
    }
    return finish_batch(c, rq);
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
            return answer_text(c, 400,
                               "{\"error\":\"bad_request\",\"message\":\"timeout must "
                               "be a number of seconds\"}");
        if (timeout > h->cfg->max_poll_s)
            timeout = h->cfg->max_poll_s;
    }
    if (parse_cursor(query(c, "since"), 0, &since) < 0 ||
        parse_limit(query(c, "limit"), &limit) < 0)
        return answer_text(c, 400,
                           "{\"error\":\"bad_request\",\"message\":\"since must be a "
                           "cursor, limit a positive integer\"}");
    if (!rq->polling) {
        rq->polling = true;
        atomic_fetch_add(&ca_feed_polls, 1);
        rq->deadline_us = ts_mono_us() + (int64_t)(timeout * 1e6);
    }
    ts_buf_t b = {0};
    ts_buf_puts(&b, "{\"changes\":[");
    int n = ca_db_feed(h->cfg->db, NULL, since, limit, CA_FEED_CHANGES, &b, &last, &more);
    if (n < 0) {
        ts_buf_free(&b);
        return answer_text(c, 500, "{\"error\":\"storage_error\"}");
    }
    if (n == 0 && ts_mono_us() < rq->deadline_us && ca_feed_park(c, rq->deadline_us, since) == 0) {
        ts_buf_free(&b);
        return MHD_YES;
    }
    ts_buf_printf(&b, "],\"cursor\":\"%" PRId64 "\",\"has_more\":%s}", last,
                  more ? "true" : "false");
    return answer(c, 200, &b);
}

/* Fills buf with as many queued events as fit: one MHD loop turn carries
 * them all, so a busy worker thread (it also serves the push connections)
 * does not cap the stream at one small chunk per turn. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse_t *s = cls;
    int hb_us = s->h->cfg->heartbeat_ms * 1000;
    size_t filled = 0;
    for (int round = 0; round < 64; round++) {
        if (s->off < s->out.len) {
            size_t n = s->out.len - s->off < max - filled ? s->out.len - s->off : max - filled;
            memcpy(buf + filled, s->out.data + s->off, n);
            s->off += n;
            filled += n;
            if (filled == max)
                return (ssize_t)filled;
            continue;
        }
        if (ca_feed_stopping())
            return filled ? (ssize_t)filled : MHD_CONTENT_READER_END_OF_STREAM;
        ts_buf_reset(&s->out);
        s->off = 0;
        int64_t last, now = ts_mono_us();
        bool more;
        int n = ca_db_feed(s->h->cfg->db, NULL, s->cursor, DEFAULT_LIMIT, CA_FEED_SSE, &s->out,
                           &last, &more);
        if (n < 0)
            return filled ? (ssize_t)filled : MHD_CONTENT_READER_END_WITH_ERROR;
        if (n > 0) {
            s->cursor = last;
            s->next_hb = now + hb_us;
            continue;
        }
        if (filled)
            return (ssize_t)filled;
        if (now >= s->next_hb) {
            ts_buf_puts(&s->out, ": heartbeat\n\n");
            s->next_hb = now + hb_us;
            continue;
        }
        if (ca_feed_park(s->conn, s->next_hb, s->cursor) < 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        return 0;
    }
    return filled ? (ssize_t)filled : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void sse_free(void *cls)
{
    sse_t *s = cls;
    atomic_fetch_sub(&ca_feed_streams, 1);
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
        return answer_text(c, 400,
                           "{\"error\":\"bad_request\",\"message\":\"Last-Event-ID "
                           "and since must be cursors\"}");
    sse_t *s = calloc(1, sizeof *s);
    if (!s)
        return MHD_NO;
    atomic_fetch_add(&ca_feed_streams, 1); /* sse_free takes it off */
    s->h = h;
    s->conn = c;
    s->cursor = since;
    s->next_hb = ts_mono_us() + h->cfg->heartbeat_ms * 1000LL;
    ts_buf_puts(&s->out, ": stream open\n\n");
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 256 * 1024, sse_read, s, sse_free);
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
static enum MHD_Result route_v1(ca_http_t *h, struct MHD_Connection *c, req_t *rq, const char *url,
                                const char *method)
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
        if (strcmp(sub, "stream") == 0 && h->cfg->stream)
            return stream(h, c);
        return answer_text(c, 404, "{\"error\":\"not_found\"}");
    }
    if (h->cfg->batch && seg == 6 && memcmp(rest, "_batch", 6) == 0 && !sub) {
        if (strcmp(method, "POST") != 0)
            return answer_text(c, 405, "{\"error\":\"method_not_allowed\"}");
        return batch(h, c, rq);
    }
    const char *coll = find_collection(h, rest, seg);
    if (!coll)
        return answer_text(c, 404, "{\"error\":\"unknown_collection\"}");
    if (!sub || !*sub) {
        if (get)
            return list_docs(h, c, rq, coll);
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
    if (strncmp(url, "/_control/docs/", 15) == 0 && strcmp(method, "POST") == 0) {
        /* /_control/docs/{coll}/{id}: a hand fix (see ca_db_hand_fix) */
        char coll[65], id[65];
        const char *slash = strchr(url + 15, '/');
        size_t clen = slash ? (size_t)(slash - (url + 15)) : 0;
        if (!slash || clen == 0 || clen >= sizeof coll || !ts_valid_id(slash + 1, strlen(slash + 1)))
            return answer_text(c, 404, "{\"error\":\"not_found\"}");
        memcpy(coll, url + 15, clen);
        coll[clen] = '\0';
        ts_copy_text(id, sizeof id, slash + 1);
        cJSON *doc = cJSON_ParseWithLength(rq->body.data ? rq->body.data : "", rq->body.len);
        if (!cJSON_IsObject(doc)) {
            cJSON_Delete(doc);
            return answer_text(c, 422, "{\"errors\":[{\"field\":\"\",\"message\":"
                                       "\"body must be a JSON object\"}]}");
        }
        int found = ca_db_hand_fix(h->cfg->db, coll, id, doc, &b);
        if (found == 1) {
            ts_info(MOD, "hand fix of %s/%s: body replaced at the same version", coll, id);
            return answer(c, 200, &b);
        }
        ts_buf_free(&b);
        return found == 0 ? answer_text(c, 404, "{\"error\":\"not_found\"}")
                          : answer_text(c, 500, "{\"error\":\"storage_error\"}");
    }
    if (strcmp(url, "/_control/stats") == 0 && strcmp(method, "GET") == 0) {
        ca_stats_json(&b);
        return answer(c, 200, &b);
    }
    return answer_text(c, 404, "{\"error\":\"not_found\"}");
}

/* /healthz and /metrics: for the operator's monitoring, without a token. */
static enum MHD_Result route_ops(struct MHD_Connection *c, const char *url, const char *method)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return answer_text(c, 405, "{\"error\":\"method_not_allowed\"}");
    ts_buf_t b = {0};
    const char *type = "text/plain; charset=utf-8";
    if (strcmp(url, "/healthz") == 0)
        ts_buf_puts(&b, "ok\n");
    else if (ca_stats_prometheus(&b) == 0)
        type = "text/plain; version=0.0.4; charset=utf-8";
    size_t len = 0;
    char *text = ts_buf_take(&b, &len);
    struct MHD_Response *r =
        text ? MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result route(ca_http_t *h, struct MHD_Connection *c, req_t *rq, const char *url,
                             const char *method)
{
    if (rq->queued) {
        /* Committed (its change is on the feed already); the answer may wait. */
        ca_faults_t f;
        if (!rq->answer_delayed && ca_faults_get(&f) && f.answer_latency_ms > 0) {
            rq->answer_delayed = true;
            atomic_fetch_add(&ca_stats.faults_delayed, 1);
            if (ca_feed_park(c, ts_mono_us() + f.answer_latency_ms * 1000LL, -1) == 0)
                return MHD_YES;
        }
        return rq->bops ? finish_batch(c, rq) : finish_write(c, rq);
    }
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
        ca_auth_token(rq->body.data ? rq->body.data : "", rq->body.len, header(c, "Authorization"),
                      &status, &b);
        return answer(c, status, &b);
    }
    return answer_text(c, 404, "{\"error\":\"not_found\"}");
}

/* ---- slow clients (http.h) ---------------------------------------------------- */

static guard_t *guard_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static int64_t header_deadline(const ca_http_t *h)
{
    return ts_mono_us() + h->cfg->header_timeout_s * 1000000LL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    ca_http_t *h = cls;
    guard_t *g = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        if (h->cfg->header_timeout_s <= 0)
            return;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci || !(g = calloc(1, sizeof *g)))
            return; /* unwatched: MHD's idle timeout still applies */
        g->fd = ci->connect_fd;
        atomic_store(&g->deadline_us, header_deadline(h));
        pthread_mutex_lock(&h->glock);
        g->next = h->guards;
        if (g->next)
            g->next->prev = g;
        h->guards = g;
        pthread_mutex_unlock(&h->glock);
        *socket_context = g;
        return;
    }
    if (!g)
        return;
    /* MHD closes the socket after this call: unlinked under the lock, the
     * reaper never shuts down a closed (or reused) descriptor. */
    pthread_mutex_lock(&h->glock);
    if (g->prev)
        g->prev->next = g->next;
    else
        h->guards = g->next;
    if (g->next)
        g->next->prev = g->prev;
    pthread_mutex_unlock(&h->glock);
    free(g);
    *socket_context = NULL;
}

/* Shuts down the connections past their deadline, a few times a second;
 * MHD then reads the end of the stream and closes each itself. */
static void *reap(void *arg)
{
    ca_http_t *h = arg;
    pthread_setname_np(pthread_self(), "ca-reaper");
    pthread_mutex_lock(&h->glock);
    while (!h->stopping) {
        int64_t now = ts_mono_us();
        for (guard_t *g = h->guards; g; g = g->next) {
            int64_t d = atomic_load(&g->deadline_us);
            if (d && now >= d && atomic_compare_exchange_strong(&g->deadline_us, &d, 0)) {
                shutdown(g->fd, SHUT_RDWR);
                atomic_fetch_add(&ca_stats.header_timeouts, 1);
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->gwake, &h->glock, &ts);
    }
    pthread_mutex_unlock(&h->glock);
    return NULL;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    ca_http_t *h = cls;
    req_t *rq = *con_cls;
    /* control and the operator's endpoints are never faulted */
    bool control = strncmp(url, "/_control/", 10) == 0;
    bool ops = strcmp(url, "/healthz") == 0 || strcmp(url, "/metrics") == 0;
    ca_faults_t f;
    if (!rq || !rq->started) {
        if (!rq) { /* on_uri ran out of memory */
            rq = calloc(1, sizeof *rq);
            if (!rq)
                return MHD_NO;
            *con_cls = rq;
        }
        rq->started = true;
        rq->route = ca_route_of(method, url);
        atomic_fetch_add_explicit(&ca_stats.requests, 1, memory_order_relaxed);
        guard_t *g = guard_of(c);
        if (g) /* the headers are in: no deadline until the answer is sent */
            atomic_store(&g->deadline_us, 0);
        check_framing(c, version, rq);
        if (!control && !ops && ca_faults_get(&f) && f.offline) {
            atomic_fetch_add(&ca_stats.faults_dropped, 1);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (rq->flaw)
            ; /* refused anyway: the body is dropped */
        else if (rq->body.len + *upload_size > MAX_BODY)
            rq->too_large = true;
        else if (ts_buf_append(&rq->body, upload, *upload_size) < 0)
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->flaw)
        return answer_flaw(c, rq);
    if (control)
        return route_control(h, c, rq, url, method);
    if (ops)
        return route_ops(c, url, method);
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
        /* Reads only: a write answered 200 would look applied. */
        if (f.garbage_rate > 0 && strcmp(method, "GET") == 0 && ca_rand01() < f.garbage_rate) {
            atomic_fetch_add(&ca_stats.faults_garbled, 1);
            return answer_text(c, 200, "{\"id\":\"injected-garbage\",\"version\":");
        }
    }
    rq->faults_done = true;
    return route(h, c, rq, url, method);
}

/* Called once per request with its URI as sent, before the headers: the
 * request's state starts here (freed by completed()), keeping the raw query
 * for parse_query. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    (void)c;
    req_t *rq = calloc(1, sizeof *rq);
    if (!rq)
        return NULL;
    const char *q = strchr(uri, '?');
    rq->query = q ? strdup(q + 1) : NULL;
    rq->uri_seen = !q || rq->query;
    return rq;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    guard_t *g = guard_of(c);
    if (g) /* the next request's headers are due from now on */
        atomic_store(&g->deadline_us, header_deadline(cls));
    req_t *rq = *con_cls;
    const union MHD_ConnectionInfo *ci =
        rq && rq->started ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS) : NULL;
    if (ci) /* 0, not counted, when it was closed unanswered */
        ca_stats_answered(rq->route, ci->http_status);
    if (rq && rq->polling)
        atomic_fetch_sub(&ca_feed_polls, 1);
    if (rq) {
        free(rq->query);
        ts_buf_free(&rq->body);
        ts_buf_free(&rq->job.r.body);
        cJSON_Delete(rq->doc);
        free(rq->rendered);
        batch_free(rq);
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
    if (ca_writer_start(cfg->db) < 0) {
        free(h);
        return NULL;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(cfg->port)};
    if (inet_pton(AF_INET, cfg->host, &addr.sin_addr) != 1) {
        ts_error(MOD, "--listen: %s is not an IPv4 address", cfg->host);
        ca_writer_stop();
        free(h);
        return NULL;
    }
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;
    pthread_mutex_init(&h->glock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->gwake, &ca);
    pthread_condattr_destroy(&ca);
    h->mhd = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->threads > 1 ? cfg->threads : 1),
        MHD_OPTION_NOTIFY_COMPLETED, completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, h,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)cfg->per_ip_limit, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024), MHD_OPTION_END);
    if (!h->mhd || (cfg->header_timeout_s > 0 && pthread_create(&h->reaper, NULL, reap, h) != 0)) {
        ts_error(MOD, "cannot listen on %s:%u", cfg->host, (unsigned)cfg->port);
        if (h->mhd)
            MHD_stop_daemon(h->mhd);
        ca_writer_stop();
        pthread_cond_destroy(&h->gwake);
        pthread_mutex_destroy(&h->glock);
        free(h);
        return NULL;
    }
    h->reaper_running = cfg->header_timeout_s > 0;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : cfg->port;
    return h;
}

uint16_t ca_http_port(const ca_http_t *h)
{
    return h->port;
}

void ca_http_stop(ca_http_t **hp)
{
    ca_http_t *h = *hp;
    if (!h)
        return;
    if (h->reaper_running) {
        pthread_mutex_lock(&h->glock);
        h->stopping = true;
        pthread_cond_signal(&h->gwake);
        pthread_mutex_unlock(&h->glock);
        pthread_join(h->reaper, NULL);
    }
    MHD_socket listen_fd = MHD_quiesce_daemon(h->mhd);
    ca_writer_stop();
    ca_feed_stop();
    /* Give resumed connections a moment to finish their last answer. */
    usleep(100 * 1000);
    MHD_stop_daemon(h->mhd);
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    pthread_cond_destroy(&h->gwake);
    pthread_mutex_destroy(&h->glock);
    free(h);
    *hp = NULL;
}
