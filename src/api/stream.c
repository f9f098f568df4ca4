/* stream.c — a stream's connection: the server-sent events of the API actor.
 *
 * A stream is a call (call.c) whose attempts are connections: it says
 * CONNECTED at a 200 text/event-stream, parses the events (WHATWG SSE) as
 * the body comes, and when the connection ends says DROPPED and reconnects
 * after a backoff, or REFUSED and finishes. Also the write callback of
 * every call (the body of the others is kept whole). */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void stream_connected(api_t *self, call_t *c);

size_t api_on_header(char *data, size_t size, size_t n, void *arg)
{
    call_t *c = arg;
    size_t len = size * n;
    char line[256];
    size_t k = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, data, k);
    line[k] = '\0';
    while (k && (line[k - 1] == '\n' || line[k - 1] == '\r'))
        line[--k] = '\0';
    if (k == 0) { /* end of a header block */
        if (c->req->stream && !c->connected)
            stream_connected(c->self, c);
        return len;
    }
    if (strncmp(line, "HTTP/", 5) == 0) { /* a new response (after 100 Continue too) */
        c->ctype[0] = '\0';
        c->retry_after_ms = -1;
        return len;
    }
    char *colon = strchr(line, ':');
    if (!colon)
        return len;
    *colon = '\0';
    char *value = colon + 1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strcasecmp(line, "Content-Type") == 0)
        snprintf(c->ctype, sizeof c->ctype, "%s", value);
    else if (strcasecmp(line, "Retry-After") == 0)
        c->retry_after_ms = api_parse_retry_after(value);
    return len;
}

/* SSE (WHATWG "server-sent events"): one line of the stream. */
static void sse_line(api_t *self, call_t *c, char *line, size_t len)
{
    if (len == 0) { /* blank line: dispatch the event */
        if (c->ev_has_id)
            snprintf(c->req->last_event_id, sizeof c->req->last_event_id, "%s", c->ev_id);
        if (c->data.len) {
            ts_api_event_t *ev = ts_xcalloc(1, sizeof *ev);
            ev->id = c->req->id;
            ev->user = c->req->user;
            snprintf(ev->event_id, sizeof ev->event_id, "%s",
                     c->ev_has_id ? c->ev_id : c->req->last_event_id);
            c->data.data[--c->data.len] = '\0'; /* the last \n */
            ev->data = ts_buf_take(&c->data, &ev->data_len);
            if (!c->req->raw_events)
                ev->json = cJSON_ParseWithLength(ev->data, ev->data_len);
            if (ts_log_enabled(TS_LOG_DEBUG))
                api_log_body("event", c->req->id, c->res->attempts, 200, ev->event_id, ev->data,
                             ev->data_len);
            api_reply(self, c->req, TS_MSG_API_EVENT, ev);
        }
        ts_buf_reset(&c->data);
        c->ev_has_id = false;
        return;
    }
    if (line[0] == ':') /* comment: heartbeat */
        return;
    char *colon = memchr(line, ':', len);
    size_t flen = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : "";
    if (colon && *value == ' ')
        value++;
    size_t vlen = colon ? len - (size_t)(value - line) : 0;
    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        ts_buf_append(&c->data, value, vlen);
        ts_buf_append(&c->data, "\n", 1);
    } else if (flen == 2 && memcmp(line, "id", 2) == 0 && vlen < sizeof c->ev_id &&
               !memchr(value, '\0', vlen)) {
        memcpy(c->ev_id, value, vlen);
        c->ev_id[vlen] = '\0';
        c->ev_has_id = true;
    } /* event, retry and unknown fields: ignored */
}

size_t api_on_body(char *data, size_t size, size_t n, void *arg)
{
    call_t *c = arg;
    api_t *self = c->self;
    size_t len = size * n;
    if (c->req->stream && c->connected) {
        /* Whole runs up to each newline, not a byte at a time: during a
         * replay the stream carries every write back (~500 bytes each). */
        for (const char *p = data, *end = data + len; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t run = (size_t)((nl ? nl : end) - p);
            if (c->line.len + run > self->opts.max_body_bytes) {
                c->too_large = true;
                return 0;
            }
            if (run)
                ts_buf_append(&c->line, p, run);
            if (!nl)
                break;
            p = nl + 1;
            size_t l = c->line.len;
            if (l && c->line.data[l - 1] == '\r')
                l--;
            if (c->line.data)
                c->line.data[l] = '\0';
            sse_line(self, c, c->line.data ? c->line.data : (char *)"", l);
            ts_buf_reset(&c->line);
        }
        return len;
    }
    if (c->body.len + len > self->opts.max_body_bytes) {
        c->too_large = true;
        return 0;
    }
    ts_buf_append(&c->body, data, len);
    return len;
}

/* ---- streams ---------------------------------------------------------------- */

void api_stream_state(api_t *self, call_t *c, ts_api_stream_state_t state, ts_api_error_t error,
                      long status, int64_t retry_in_ms)
{
    ts_api_stream_msg_t *m = ts_xcalloc(1, sizeof *m);
    *m = (ts_api_stream_msg_t){.id = c->req->id, .user = c->req->user, .state = state,
                               .error = error, .status = status, .retry_in_ms = retry_in_ms,
                               .connects = c->res->attempts,
                               .unreachable = state == TS_API_STREAM_DROPPED && c->res->unreachable};
    snprintf(m->last_event_id, sizeof m->last_event_id, "%s", c->req->last_event_id);
    static const char *names[] = {"connected", "dropped", "refused"};
    ts_log(state == TS_API_STREAM_CONNECTED ? TS_LOG_DEBUG : TS_LOG_INFO, LOG,
           "req=%llu stream %s (%s, status %ld, last id '%s')%s", (unsigned long long)c->req->id,
           names[state], ts_api_error_name(error), status, c->req->last_event_id,
           state == TS_API_STREAM_DROPPED ? "; reconnecting" : "");
    api_reply(self, c->req, TS_MSG_API_STREAM, m);
}

/* Called at the end of the response headers of a stream. */
static void stream_connected(api_t *self, call_t *c)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200 && api_ctype_is(c->ctype, "text/event-stream")) {
        c->connected = true;
        c->failed_connects = 0;
        api_stream_state(self, c, TS_API_STREAM_CONNECTED, TS_API_OK, status, 0);
    }
}

/* A stream's connection ended (rc, status): reconnect, or refuse for good. */
void api_stream_done(api_t *self, call_t *c, CURLcode rc, long status)
{
    const char *why = NULL;
    ts_api_error_t error = api_classify(c, rc, status, &why);
    c->res->unreachable = api_unreachable(rc);
    if (c->connected) { /* it was up: any end is a drop */
        if (error == TS_API_OK)
            error = TS_API_NETWORK, why = "stream closed by the server";
    } else if (error == TS_API_OK) {
        error = TS_API_BAD_RESPONSE, why = "not text/event-stream";
    }
    if (api_retry_unauthorized(self, c, error))
        return;
    bool again = c->connected || ts_api_error_retryable(error);
    if (!again) {
        api_stream_state(self, c, TS_API_STREAM_REFUSED, error, status, 0);
        api_finish(self, c, error, status, why);
        return;
    }
    c->failed_connects++;
    c->refreshed = false;
    int64_t delay = api_backoff_ms(self, self->opts.stream_backoff_base_ms,
                                   self->opts.stream_backoff_cap_ms, c->failed_connects);
    if (c->retry_after_ms > delay)
        delay = c->retry_after_ms;
    api_stream_state(self, c, TS_API_STREAM_DROPPED, error, status, delay);
    ts_buf_reset(&c->body);
    api_backoff(self, c, delay);
}
