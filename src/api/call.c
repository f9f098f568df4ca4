/* call.c — a call's life: the call state machine of the API actor.
 *
 * A request becomes a call_t, which is in exactly one state at a time, each
 * state a list (api_set_state() is the one place that moves it):
 *   QUEUED      waiting for a slot (max_inflight calls are active at once)
 *   WAIT_TOKEN  waiting for the shared token fetch (auth.c)
 *   INFLIGHT    an attempt is running in curl
 *   BACKOFF     waiting for due_us before its next attempt
 * Streams (SSE) skip QUEUED and take no slot (their connections: stream.c).
 * Here: an attempt's set-up, the class of its outcome, retries with
 * backoff, and api_finish(), the one way out, which sends the result and
 * frees the call. */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *api_state_names[C__LAST] = {"none", "queued", "wait_token", "inflight", "backoff"};

static uint64_t rnd(api_t *self)
{
    uint64_t s = self->rng;
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    self->rng = s;
    return s * 0x2545F4914F6CDD1DULL;
}

/* Full jitter: random(0, min(cap, base * 2^(n-1))) in ms, n >= 1. */
int64_t api_backoff_ms(api_t *self, long base, long cap, int n)
{
    int64_t ceiling = base;
    for (int i = 1; i < n && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap)
        ceiling = cap;
    return ceiling > 0 ? (int64_t)(rnd(self) % (uint64_t)(ceiling + 1)) : 0;
}

/* Constant header tails, shared by all calls and never written. */
static char H_ACCEPT_JSON[] = "Accept: application/json";
static char H_CT_JSON[] = "Content-Type: application/json";
static char H_CT_MERGE[] = "Content-Type: application/merge-patch+json";
static char H_EXPECT[] = "Expect:"; /* no 100-continue round trip */
static char H_ACCEPT_SSE[] = "Accept: text/event-stream";
static char H_NO_CACHE[] = "Cache-Control: no-cache";
static struct curl_slist TAIL_JSON[] = {{H_ACCEPT_JSON, NULL}};
static struct curl_slist TAIL_POST[] = {
    {H_ACCEPT_JSON, &TAIL_POST[1]}, {H_CT_JSON, &TAIL_POST[2]}, {H_EXPECT, NULL}};
static struct curl_slist TAIL_PATCH[] = {
    {H_ACCEPT_JSON, &TAIL_PATCH[1]}, {H_CT_MERGE, &TAIL_PATCH[2]}, {H_EXPECT, NULL}};
static struct curl_slist TAIL_SSE[] = {{H_ACCEPT_SSE, &TAIL_SSE[1]}, {H_NO_CACHE, NULL}};

static void list_append(call_list_t *l, call_t *c)
{
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_prepend(call_list_t *l, call_t *c)
{
    c->next = l->head;
    c->prev = NULL;
    if (l->head)
        l->head->prev = c;
    else
        l->tail = c;
    l->head = c;
    l->n++;
}

static void list_remove(call_list_t *l, call_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    l->n--;
}

static bool counts_active(call_t *c)
{
    return !c->req->stream && (c->state == C_WAIT_TOKEN || c->state == C_INFLIGHT);
}

/* The one place a call changes state. front: to the head of the new list. */
void api_set_state(api_t *self, call_t *c, call_state_t to, bool front)
{
    if (c->state != C_NONE) {
        if (counts_active(c))
            self->nactive--;
        list_remove(&self->lists[c->state], c);
    }
    if (ts_log_enabled(TS_LOG_DEBUG) && c->state != to)
        ts_debug(LOG, "req=%llu %s -> %s", (unsigned long long)c->req->id,
                 api_state_names[c->state], api_state_names[to]);
    c->state = to;
    if (to != C_NONE) {
        if (front)
            list_prepend(&self->lists[to], c);
        else
            list_append(&self->lists[to], c);
        if (counts_active(c))
            self->nactive++;
    }
}

void api_log_body(const char *what, uint64_t id, int attempt, long status, const char *cls,
                  const char *body, size_t len)
{
    if (!ts_log_enabled(TS_LOG_DEBUG))
        return;
    char red[512] = "";
    if (body && len)
        ts_log_redact_json(body, len, red, sizeof red);
    ts_log(TS_LOG_DEBUG, LOG, "req=%llu attempt=%d %s status=%ld class=%s body=%s",
           (unsigned long long)id, attempt, what, status, cls, red);
}

/* A server's wait is read up to 2^31 - 1 seconds (68 years), as seconds or
 * as a date: beyond that, its milliseconds (and the backoff's
 * microseconds) overflowed. */
#define RETRY_AFTER_MAX_S INT32_MAX

int64_t api_parse_retry_after(const char *v)
{
    int64_t secs;
    if (ts_parse_i64(v, &secs) == 0)
        return secs < 0 ? -1 : (secs < RETRY_AFTER_MAX_S ? secs : RETRY_AFTER_MAX_S) * 1000;
    time_t at = curl_getdate(v, NULL);
    if (at < 0)
        return -1;
    int64_t now = ts_wall_ms();
    if ((int64_t)at - now / 1000 >= RETRY_AFTER_MAX_S) /* "21 Oct 777777777" */
        return (int64_t)RETRY_AFTER_MAX_S * 1000;
    int64_t delta = (int64_t)at * 1000 - now;
    return delta > 0 ? delta : 0;
}

/* The last value of header name in the final response, or NULL. */
static const char *last_header(CURL *e, const char *name)
{
    struct curl_header *h;
    if (curl_easy_header(e, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return NULL;
    if (h->amount > 1 && curl_easy_header(e, name, h->amount - 1, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return NULL;
    return h->value;
}

/* A finished non-stream call's Content-Type and Retry-After (what api_on_header
 * finds for a stream). */
static void read_headers(call_t *c)
{
    const char *v = last_header(c->easy, "Content-Type");
    if (v)
        snprintf(c->ctype, sizeof c->ctype, "%s", v);
    v = last_header(c->easy, "Retry-After");
    if (v)
        c->retry_after_ms = api_parse_retry_after(v);
    v = last_header(c->easy, "ETag");
    c->res->etag[0] = '\0';
    if (v && strlen(v) < sizeof c->res->etag)
        snprintf(c->res->etag, sizeof c->res->etag, "%s", v);
}

bool api_ctype_is(const char *ctype, const char *want)
{
    size_t n = strlen(want);
    return strncasecmp(ctype, want, n) == 0 && (ctype[n] == '\0' || ctype[n] == ';' ||
                                                ctype[n] == ' ');
}

/* ---- calls ------------------------------------------------------------------ */

static const char *method_name(ts_api_method_t m)
{
    switch (m) {
    case TS_API_GET: return "GET";
    case TS_API_POST: return "POST";
    case TS_API_PATCH: return "PATCH";
    case TS_API_DELETE: return "DELETE";
    }
    return "?";
}

/* Frees a call and everything in it, the request included. */
void api_call_free(api_t *self, call_t *c)
{
    api_set_state(self, c, C_NONE, false);
    api_easy_put(self, c->easy);
    api_auth_drop(&c->auth);
    ts_buf_free(&c->body);
    ts_buf_free(&c->line);
    ts_buf_free(&c->data);
    free(c->url);
    ts_api_result_free(c->res); /* frees res->request = c->req */
    free(c);
}

/* Ends a call: sends its result (with the last attempt's body) and frees it. */
void api_finish(api_t *self, call_t *c, ts_api_error_t error, long status, const char *why)
{
    ts_api_result_t *res = c->res;
    api_set_state(self, c, C_NONE, false);
    api_easy_put(self, c->easy);
    c->easy = NULL;
    res->error = error;
    res->status = status;
    res->finished_us = ts_mono_us();
    if (why && !*res->message)
        snprintf(res->message, sizeof res->message, "%s", why);
    if (c->body.len) {
        if (!res->json)
            res->json = cJSON_ParseWithLength(c->body.data, c->body.len);
        res->body = ts_buf_take(&c->body, &res->body_len);
    }
    ts_log(error == TS_API_OK || error == TS_API_CANCELLED ? TS_LOG_DEBUG : TS_LOG_INFO, LOG,
           "req=%llu %s %s -> %s status=%ld attempts=%d in %lld us%s%s",
           (unsigned long long)c->req->id, method_name(c->req->method), c->req->path,
           ts_api_error_name(error), status, res->attempts,
           (long long)(res->finished_us - res->queued_us), *res->message ? ": " : "",
           res->message);
    c->res = NULL;
    api_reply(self, c->req, TS_MSG_API_RESULT, res);
    api_call_free(self, c);
}

/* Starts a call's next attempt, or parks it until a token is there. */
void api_start(api_t *self, call_t *c)
{
    c->res->unreachable = false; /* the attempt about to start tells anew */
    if (self->opts.client_id && !self->auth) {
        api_set_state(self, c, C_WAIT_TOKEN, false);
        api_ensure_token(self);
        return;
    }
    api_begin_attempt(self, c);
}

/* Hands queued calls to curl while slots are free. */
void api_pump(api_t *self)
{
    while (self->lists[C_QUEUED].head && self->nactive < self->opts.max_inflight)
        api_start(self, self->lists[C_QUEUED].head);
}

void api_begin_attempt(api_t *self, call_t *c)
{
    ts_api_request_t *r = c->req;
    ts_api_result_t *res = c->res;
    if (res->attempts < (int)(sizeof res->attempt_us / sizeof res->attempt_us[0]))
        res->attempt_us[res->attempts] = ts_mono_us();
    res->attempts++;
    ts_buf_reset(&c->body);
    ts_buf_reset(&c->line);
    ts_buf_reset(&c->data);
    c->ev_has_id = false;
    c->ctype[0] = '\0';
    c->retry_after_ms = -1;
    c->too_large = false;
    c->connected = false;
    c->curl_err[0] = '\0';

    CURL *e = api_easy_get(self);
    if (!e) {
        api_finish(self, c, TS_API_INTERNAL, 0, "out of memory (curl handle)");
        return;
    }
    c->easy = e;
    api_easy_use(self, e, c->url, r->stream ? 0L : c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, api_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    /* Only a stream needs to see its headers as they come (to say
     * "connected"); other calls read Content-Type and Retry-After from curl's
     * header store when done (read_headers), which costs less than a
     * callback per header line. */
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, r->stream ? api_on_header : NULL);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r->stream ? c : NULL);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->curl_err);

    struct curl_slist *h = TAIL_JSON;
    int k = 0;
    if (r->stream) {
        /* No total timeout: a stream that goes quiet (not even heartbeats) for
         * stream_idle_ms is dropped by the low-speed check. */
        long idle_s = (self->opts.stream_idle_ms + 999) / 1000;
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, idle_s > 0 ? idle_s : 1L);
        h = TAIL_SSE;
        if (*r->last_event_id) {
            snprintf(c->hlast, sizeof c->hlast, "Last-Event-ID: %s", r->last_event_id);
            c->hnode[k++].data = c->hlast;
        }
    }
    switch (r->method) {
    case TS_API_GET:
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
        break;
    case TS_API_POST:
    case TS_API_PATCH:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method == TS_API_PATCH ? "PATCH" : NULL);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
        h = r->method == TS_API_PATCH ? TAIL_PATCH : TAIL_POST;
        break;
    case TS_API_DELETE:
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
        break;
    }
    if (*r->idempotency_key) {
        snprintf(c->hkey, sizeof c->hkey, "Idempotency-Key: %s", r->idempotency_key);
        c->hnode[k++].data = c->hkey;
    }
    if (r->if_match > 0) {
        snprintf(c->hmatch, sizeof c->hmatch, "If-Match: \"%lld\"", (long long)r->if_match);
        c->hnode[k++].data = c->hmatch;
    }
    if (*r->if_none_match) {
        snprintf(c->hnone, sizeof c->hnone, "If-None-Match: %s", r->if_none_match);
        c->hnode[k++].data = c->hnone;
    }
    api_auth_drop(&c->auth); /* the previous attempt's transfer is gone */
    if (self->auth) {
        c->auth = self->auth;
        c->auth->refs++;
        c->hnode[k++].data = c->auth->line;
        c->token_gen = self->token_gen;
    }
    for (int i = k - 1; i >= 0; i--) { /* chain the call's nodes in front of the tail */
        c->hnode[i].next = h;
        h = &c->hnode[i];
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    api_set_state(self, c, C_INFLIGHT, false);
    if (ts_log_enabled(TS_LOG_DEBUG)) {
        char what[300];
        snprintf(what, sizeof what, "-> %s %s%s%s", method_name(r->method), r->path,
                 *r->idempotency_key ? " key=" : "", r->idempotency_key);
        api_log_body(what, r->id, res->attempts, 0, "-", r->body, r->body ? r->body_len : 0);
    }
    CURLMcode mc = curl_multi_add_handle(self->multi, e);
    if (mc != CURLM_OK)
        api_finish(self, c, TS_API_INTERNAL, 0, curl_multi_strerror(mc));
}

/* The class of a transfer that ended with rc and (maybe) an HTTP status. */
ts_api_error_t api_classify(call_t *c, CURLcode rc, long status, const char **why)
{
    *why = NULL;
    if (c->too_large) {
        *why = "response larger than max_body_bytes";
        return TS_API_BAD_RESPONSE;
    }
    switch (rc) {
    case CURLE_OK:
        break;
    case CURLE_OPERATION_TIMEDOUT:
        return TS_API_TIMEOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
        return TS_API_TLS;
    case CURLE_PARTIAL_FILE:
        *why = "truncated body";
        return TS_API_BAD_RESPONSE;
    case CURLE_WEIRD_SERVER_REPLY: /* not HTTP */
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
        *why = "malformed HTTP answer";
        return TS_API_BAD_RESPONSE;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_OUT_OF_MEMORY:
        return TS_API_INTERNAL;
    case CURLE_WRITE_ERROR:
        return c->too_large ? TS_API_BAD_RESPONSE : TS_API_INTERNAL;
    default: /* connect, resolve, send, recv, got nothing, http2 stream, ... */
        return TS_API_NETWORK;
    }
    if (status == 304 && *c->req->if_none_match)
        return TS_API_OK; /* not modified: what the caller has is current */
    ts_api_error_t e = ts_api_status_class(status);
    if (e == TS_API_BAD_RESPONSE)
        *why = "unexpected HTTP status";
    return e;
}

/* A failure that proves the server is not there now: nothing listens on
 * its port (or the proxy's), no route to it, or its name (or the proxy's)
 * does not resolve. Not a timeout, nor a reset (a stale keep-alive
 * connection, a server restarting). */
bool api_unreachable(CURLcode rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_COULDNT_RESOLVE_PROXY;
}

/* Checks a 2xx body against the request's shape; sets res->json. */
static ts_api_error_t check_body(call_t *c, const char **why)
{
    ts_api_shape_t shape = c->req->shape;
    if (shape == TS_API_SHAPE_NONE)
        return TS_API_OK;
    if (c->body.len == 0) {
        *why = "empty body";
        return shape == TS_API_SHAPE_ANY ? TS_API_OK : TS_API_BAD_RESPONSE;
    }
    if (!api_ctype_is(c->ctype, "application/json")) {
        *why = "content type is not application/json";
        return TS_API_BAD_RESPONSE;
    }
    cJSON *j = cJSON_ParseWithLength(c->body.data, c->body.len);
    c->res->json = j;
    if (!cJSON_IsObject(j)) {
        *why = j ? "body is not a JSON object" : "body is not JSON";
        return TS_API_BAD_RESPONSE;
    }
    bool ok = true;
    switch (shape) {
    case TS_API_SHAPE_DOC:
        ok = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "id")) &&
             cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "version"));
        break;
    case TS_API_SHAPE_PAGE:
        ok = cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "items")) &&
             cJSON_GetObjectItemCaseSensitive(j, "cursor") &&
             cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(j, "has_more"));
        break;
    case TS_API_SHAPE_CHANGES:
        ok = cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "changes")) &&
             cJSON_GetObjectItemCaseSensitive(j, "cursor");
        break;
    case TS_API_SHAPE_DIGEST:
        ok = cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "count")) &&
             cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "hash"));
        break;
    default:
        break;
    }
    if (!ok)
        *why = "body does not have the expected shape";
    return ok ? TS_API_OK : TS_API_BAD_RESPONSE;
}

/* Parks a call for a retry after delay_ms. */
void api_backoff(api_t *self, call_t *c, int64_t delay_ms)
{
    api_easy_put(self, c->easy);
    c->easy = NULL;
    c->due_us = ts_mono_us() + delay_ms * 1000;
    api_set_state(self, c, C_BACKOFF, false);
}

/* ---- finished transfers --------------------------------------------------- */

void api_call_done(api_t *self, call_t *c, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (c->req->stream) {
        api_stream_done(self, c, rc, status);
        return;
    }
    read_headers(c);
    const char *why = rc != CURLE_OK && *c->curl_err ? c->curl_err : NULL;
    const char *cwhy = NULL;
    ts_api_error_t error = api_classify(c, rc, status, &cwhy);
    if (cwhy)
        why = cwhy;
    if (error == TS_API_OK && status != 304) {
        error = check_body(c, &why);
    }
    api_log_body("<-", c->req->id, c->res->attempts, status, ts_api_error_name(error), c->body.data,
                 c->body.len);
    c->res->status = status;
    if (c->retry_after_ms >= 0)
        c->res->retry_after_ms = c->retry_after_ms;
    c->res->unreachable = api_unreachable(rc);
    if (!c->res->unreachable)
        c->res->left = true;

    if (api_retry_unauthorized(self, c, error))
        return;
    if (ts_api_error_retryable(error) && c->res->attempts < c->max_attempts &&
        !(c->res->unreachable && c->req->unreachable_final)) {
        int64_t delay = api_backoff_ms(self, self->opts.backoff_base_ms, self->opts.backoff_cap_ms,
                                       c->res->attempts);
        if (c->retry_after_ms > self->opts.retry_after_max_ms) {
            api_finish(self, c, error, status, "Retry-After beyond retry_after_max_ms");
            return;
        }
        if (c->retry_after_ms > delay)
            delay = c->retry_after_ms;
        ts_debug(LOG, "req=%llu attempt %d failed (%s, status %ld); retry in %lld ms",
                 (unsigned long long)c->req->id, c->res->attempts, ts_api_error_name(error),
                 status, (long long)delay);
        api_backoff(self, c, delay);
        return;
    }
    api_finish(self, c, error, status, why);
}
