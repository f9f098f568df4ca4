/* api.c — the API actor: Clinic API requests on the libcurl multi interface.
 *
 * One thread, one loop (its own: epoll over the control pipe's and the
 * inbox's ZMQ_FD and the sockets curl asks for through
 * CURLMOPT_SOCKETFUNCTION, with the timeout from CURLMOPT_TIMERFUNCTION and
 * the earliest retry).
 *
 * A request becomes a call_t, which is in exactly one state at a time, each
 * state a list (api_set_state() is the one place that moves it):
 *   QUEUED      waiting for a slot (max_inflight calls are active at once)
 *   WAIT_TOKEN  waiting for the shared token fetch
 *   INFLIGHT    an attempt is running in curl
 *   BACKOFF     waiting for due_us before its next attempt
 * Streams (SSE) skip QUEUED and take no slot. A call leaves by api_finish(),
 * which sends its result and frees it. */
#include "msgs/msgs.h"
#include "therasync/api.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#define LOG "api"
#define MAX_REPLY_SOCKETS 16
#define EASY_POOL 256
#define INBOX_BATCH 1024

typedef enum { C_NONE, C_QUEUED, C_WAIT_TOKEN, C_INFLIGHT, C_BACKOFF, C__LAST } call_state_t;
static const char *api_state_names[C__LAST] = {"none", "queued", "wait_token", "inflight",
                                               "backoff"};

struct api;

typedef struct call {
    struct call *prev, *next;  /* neighbours in the list of its state */
    struct api *self;          /* the actor (for callbacks) */
    call_state_t state;
    ts_api_request_t *req;
    ts_api_result_t *res; /* filled across attempts, sent by api_finish() */
    char *url;
    CURL *easy;                /* INFLIGHT only */
    /* Request headers: a few nodes of its own in front of a constant tail
     * (curl only reads the list while the transfer runs): no malloc per
     * request. */
    struct curl_slist hnode[4];
    char hkey[84], hmatch[40], hlast[84];
    struct auth *auth;         /* the token line its attempt sends (one reference) */
    char curl_err[CURL_ERROR_SIZE];
    /* the current attempt's answer */
    ts_buf_t body;
    char ctype[96];
    int64_t retry_after_ms;    /* -1: none */
    bool too_large;
    int max_attempts;
    long timeout_ms;
    int64_t due_us;            /* BACKOFF */
    unsigned token_gen;        /* token generation the attempt used */
    bool refreshed;            /* a 401 already led to one refresh */
    /* streams */
    bool connected;            /* this connection said 200 text/event-stream */
    int failed_connects;       /* since the last good connection */
    ts_buf_t line, data;       /* SSE parser: partial line, data of the event */
    char ev_id[65];
    bool ev_has_id;
} call_t;

/* "Authorization: Bearer TOKEN", shared by the calls that send it; freed
 * (and wiped) with its last reference. */
typedef struct auth {
    int refs;
    char line[];
} auth_t;

typedef struct {
    call_t *head, *tail;
    size_t n;
} call_list_t;

/* One socket of curl's in the epoll set, by fd. A keep-alive connection
 * is dropped by curl between requests (CURL_POLL_REMOVE) and wanted again by
 * the next one: it stays registered meanwhile (no epoll_ctl pair per
 * request) and leaves the set when it fires unwanted or curl closes it. */
typedef struct {
    uint32_t want;             /* EPOLLIN/EPOLLOUT curl asked for; 0: none now */
    uint32_t reg;              /* what the epoll set has; 0: not in it */
} watch_t;

typedef struct api {
    ts_api_opts_t opts;        /* copy, defaults filled; strings owned below */
    char *strings[8];          /* owned copies of opts' strings */
    ts_actor_t *actor;
    void *inbox;               /* PULL: requests and cancels */
    struct {
        char name[64];
        void *socket;          /* PUSH connected to name */
        void **out;            /* answers not yet sent (flushed once per loop turn) */
        ts_msg_kind_t *kinds;
        int nout, capout;
    } replies[MAX_REPLY_SOCKETS];
    int nreplies;
    CURLM *multi;
    int epfd;                  /* epoll: curl's sockets and the two ZMQ_FDs */
    int pipe_fd, inbox_fd;     /* ZMQ_FD of the control pipe and the inbox */
    watch_t *watch;            /* by fd */
    int capwatch;
    int64_t curl_due_us;       /* -1: no curl timer */
    CURL *pool[EASY_POOL];     /* idle easy handles (keep their settings' memory) */
    int npool;
    call_list_t lists[C__LAST];
    int nactive;               /* non-stream calls WAIT_TOKEN or INFLIGHT */
    /* the token */
    auth_t *auth;              /* the current token's header line; NULL: none yet */
    char *refresh_token;
    unsigned token_gen;        /* bumped on every new token */
    CURL *token_easy;          /* the fetch in flight, or NULL */
    ts_buf_t token_body;
    char token_form[2048];
    bool token_refresh_grant;  /* the fetch uses grant_type=refresh_token */
    uint64_t rng;
} api_t;

/* ---- small helpers -------------------------------------------------------- */

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
static int64_t api_backoff_ms(api_t *self, long base, long cap, int n)
{
    int64_t ceiling = base;
    for (int i = 1; i < n && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap)
        ceiling = cap;
    return ceiling > 0 ? (int64_t)(rnd(self) % (uint64_t)(ceiling + 1)) : 0;
}

static void api_auth_drop(auth_t **a)
{
    if (*a && --(*a)->refs == 0) {
        explicit_bzero((*a)->line, strlen((*a)->line));
        free(*a);
    }
    *a = NULL;
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
static void api_set_state(api_t *self, call_t *c, call_state_t to, bool front)
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

/* The index of the reply socket for name (connected on first use), or -1. */
static int reply_socket(api_t *self, const char *name)
{
    if (!*name)
        name = TS_INPROC_API_RESULTS;
    for (int i = 0; i < self->nreplies; i++)
        if (strcmp(self->replies[i].name, name) == 0)
            return i;
    if (self->nreplies == MAX_REPLY_SOCKETS)
        return -1;
    void *s = ts_inproc_socket(ts_actor_zctx(self->actor), ZMQ_PUSH, name, false);
    if (!s) {
        ts_error(LOG, "cannot connect reply socket %s: %s", name, zmq_strerror(errno));
        return -1;
    }
    snprintf(self->replies[self->nreplies].name, sizeof self->replies[0].name, "%s", name);
    self->replies[self->nreplies].socket = s;
    return self->nreplies++;
}

/* Queues one answer for the requester; flush_replies() sends it before the
 * loop waits again. Frees it when it cannot be sent. */
static void api_reply(api_t *self, const ts_api_request_t *req, ts_msg_kind_t kind, void *ptr)
{
    int i = reply_socket(self, req->reply_to);
    if (i >= 0 && self->replies[i].nout == self->replies[i].capout) {
        int cap = self->replies[i].capout ? self->replies[i].capout * 2 : 64;
        void **out = realloc(self->replies[i].out, sizeof *out * (size_t)cap);
        if (out)
            self->replies[i].out = out;
        ts_msg_kind_t *kinds = realloc(self->replies[i].kinds, sizeof *kinds * (size_t)cap);
        if (kinds)
            self->replies[i].kinds = kinds;
        if (out && kinds)
            self->replies[i].capout = cap;
    }
    if (i < 0 || self->replies[i].nout == self->replies[i].capout) {
        ts_error(LOG, "req=%llu: cannot answer on %s; answer dropped",
                 (unsigned long long)req->id, *req->reply_to ? req->reply_to : TS_INPROC_API_RESULTS);
        ts_msg_free_one(kind, ptr);
        return;
    }
    self->replies[i].kinds[self->replies[i].nout] = kind;
    self->replies[i].out[self->replies[i].nout++] = ptr;
}

/* Sends the queued answers: each run of one kind as one message, in order. */
static void flush_replies(api_t *self)
{
    for (int i = 0; i < self->nreplies; i++) {
        int n = self->replies[i].nout, start = 0;
        while (start < n) {
            int end = start + 1;
            ts_msg_kind_t kind = self->replies[i].kinds[start];
            while (end < n && self->replies[i].kinds[end] == kind)
                end++;
            if (ts_msg_send(self->replies[i].socket, kind, self->replies[i].out + start,
                            (size_t)(end - start)) < 0) {
                ts_error(LOG, "cannot answer on %s: %s; %d answers dropped",
                         self->replies[i].name, zmq_strerror(errno), end - start);
                for (int k = start; k < end; k++)
                    ts_msg_free_one(kind, self->replies[i].out[k]);
            }
            start = end;
        }
        self->replies[i].nout = 0;
    }
}

static void api_log_body(const char *what, uint64_t id, int attempt, long status, const char *cls,
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

/* ---- curl plumbing -------------------------------------------------------- */

/* Brings fd's registration in line with what curl wants. */
static int watch_sync(api_t *self, int fd)
{
    watch_t *w = &self->watch[fd];
    if (w->reg == w->want)
        return 0;
    struct epoll_event ev = {.events = w->want, .data.fd = fd};
    int rc;
    if (!w->want)
        rc = epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
    else if (w->reg)
        rc = epoll_ctl(self->epfd, EPOLL_CTL_MOD, fd, &ev);
    else
        rc = epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev);
    if (rc < 0 && w->want) { /* the set and our table disagreed: say it again */
        rc = epoll_ctl(self->epfd, w->reg ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
    }
    w->reg = w->want;
    return rc < 0 && w->want ? -1 : 0;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy, (void)socketp;
    api_t *self = userp;
    if (fd < 0)
        return -1;
    if (fd >= self->capwatch) {
        int cap = fd + 64;
        watch_t *grown = realloc(self->watch, sizeof *grown * (size_t)cap);
        if (!grown)
            return -1;
        memset(grown + self->capwatch, 0, sizeof *grown * (size_t)(cap - self->capwatch));
        self->watch = grown;
        self->capwatch = cap;
    }
    watch_t *w = &self->watch[fd];
    w->want = (uint32_t)(((what & CURL_POLL_IN) ? EPOLLIN : 0) |
                         ((what & CURL_POLL_OUT) ? EPOLLOUT : 0));
    /* REMOVE: left registered until it fires or is closed (see watch_t). */
    return what == CURL_POLL_REMOVE ? 0 : watch_sync(self, fd);
}

/* curl closes a socket: closing takes it out of the epoll set, and a new
 * socket may get the same number. */
static curl_socket_t on_close(void *clientp, curl_socket_t fd)
{
    api_t *self = clientp;
    if (fd >= 0 && fd < self->capwatch)
        self->watch[fd] = (watch_t){0};
    return close(fd);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    api_t *self = userp;
    self->curl_due_us = timeout_ms < 0 ? -1 : ts_mono_us() + timeout_ms * 1000LL;
    return 0;
}

/* A new easy handle with the settings every transfer shares. Pooled handles
 * keep them: no curl_easy_reset (which frees and rebuilds all settings) and
 * no full set-up per request; api_easy_use() sets what varies. */
static CURL *easy_new(api_t *self)
{
    const ts_api_opts_t *o = &self->opts;
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, self);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                     o->no_http2 ? CURL_HTTP_VERSION_1_1 : CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* The proxy is a setting, never taken from the environment (also spares
     * curl a getenv() scan per transfer). */
    curl_easy_setopt(e, CURLOPT_PROXY, o->proxy ? o->proxy : "");
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, o->insecure ? 0L : 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, o->insecure ? 0L : 2L);
    if (o->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file);
    if (o->ca_path)
        curl_easy_setopt(e, CURLOPT_CAPATH, o->ca_path);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    return e;
}

static CURL *api_easy_get(api_t *self)
{
    return self->npool ? self->pool[--self->npool] : easy_new(self);
}

static void api_easy_put(api_t *self, CURL *e)
{
    if (!e)
        return;
    curl_multi_remove_handle(self->multi, e);
    if (self->npool < EASY_POOL)
        self->pool[self->npool++] = e;
    else
        curl_easy_cleanup(e);
}

/* What varies per use of a pooled handle. Every use also sets its own
 * PRIVATE, WRITE/HEADER callbacks and data, ERRORBUFFER, HTTPHEADER and
 * method (GET, POST fields and size, CUSTOMREQUEST), so that nothing of an
 * earlier use leaks into it. */
static void api_easy_use(api_t *self, CURL *e, const char *url, long timeout_ms)
{
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    /* PIPEWAIT only where HTTP/2 can multiplex: on plain HTTP/1.1 it makes
     * transfers queue behind busy connections instead of opening new ones. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT,
                     !self->opts.no_http2 && strncmp(url, "https:", 6) == 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 0L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 0L);
}

/* ---- answers: headers, body, SSE ------------------------------------------ */

static int64_t api_parse_retry_after(const char *v)
{
    int64_t secs;
    if (ts_parse_i64(v, &secs) == 0)
        return secs < 0 ? -1 : secs * 1000;
    time_t at = curl_getdate(v, NULL);
    if (at < 0)
        return -1;
    int64_t delta = (int64_t)at * 1000 - ts_wall_ms();
    return delta > 0 ? delta : 0;
}

static void stream_connected(api_t *self, call_t *c);

static size_t api_on_header(char *data, size_t size, size_t n, void *arg)
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
}

static bool api_ctype_is(const char *ctype, const char *want)
{
    size_t n = strlen(want);
    return strncasecmp(ctype, want, n) == 0 && (ctype[n] == '\0' || ctype[n] == ';' ||
                                                ctype[n] == ' ');
}

/* SSE (WHATWG "server-sent events"): one line of the stream. */
static void sse_line(api_t *self, call_t *c, char *line, size_t len)
{
    if (len == 0) { /* blank line: dispatch the event */
        if (c->ev_has_id)
            snprintf(c->req->last_event_id, sizeof c->req->last_event_id, "%s", c->ev_id);
        if (c->data.len) {
            ts_api_event_t *ev = calloc(1, sizeof *ev);
            if (ev) {
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

static size_t api_on_body(char *data, size_t size, size_t n, void *arg)
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
            if (run && ts_buf_append(&c->line, p, run) < 0)
                return 0;
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
    return ts_buf_append(&c->body, data, len) < 0 ? 0 : len;
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
static void api_call_free(api_t *self, call_t *c)
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
static void api_finish(api_t *self, call_t *c, ts_api_error_t error, long status, const char *why)
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

static void api_ensure_token(api_t *self);
static void api_begin_attempt(api_t *self, call_t *c);

/* Starts a call's next attempt, or parks it until a token is there. */
static void api_start(api_t *self, call_t *c)
{
    if (self->opts.client_id && !self->auth) {
        api_set_state(self, c, C_WAIT_TOKEN, false);
        api_ensure_token(self);
        return;
    }
    api_begin_attempt(self, c);
}

/* Hands queued calls to curl while slots are free. */
static void api_pump(api_t *self)
{
    while (self->lists[C_QUEUED].head && self->nactive < self->opts.max_inflight)
        api_start(self, self->lists[C_QUEUED].head);
}

static void api_begin_attempt(api_t *self, call_t *c)
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
static ts_api_error_t api_classify(call_t *c, CURLcode rc, long status, const char **why)
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
    ts_api_error_t e = ts_api_status_class(status);
    if (e == TS_API_BAD_RESPONSE)
        *why = "unexpected HTTP status";
    return e;
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
static void api_backoff(api_t *self, call_t *c, int64_t delay_ms)
{
    api_easy_put(self, c->easy);
    c->easy = NULL;
    c->due_us = ts_mono_us() + delay_ms * 1000;
    api_set_state(self, c, C_BACKOFF, false);
}

/* ---- streams ---------------------------------------------------------------- */

static void api_stream_state(api_t *self, call_t *c, ts_api_stream_state_t state,
                             ts_api_error_t error, long status, int64_t retry_in_ms)
{
    ts_api_stream_msg_t *m = calloc(1, sizeof *m);
    if (!m)
        return;
    *m = (ts_api_stream_msg_t){.id = c->req->id, .user = c->req->user, .state = state,
                               .error = error, .status = status, .retry_in_ms = retry_in_ms,
                               .connects = c->res->attempts};
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
static void api_stream_done(api_t *self, call_t *c, CURLcode rc, long status)
{
    const char *why = NULL;
    ts_api_error_t error = api_classify(c, rc, status, &why);
    if (c->connected) { /* it was up: any end is a drop */
        if (error == TS_API_OK)
            error = TS_API_NETWORK, why = "stream closed by the server";
    } else if (error == TS_API_OK) {
        error = TS_API_BAD_RESPONSE, why = "not text/event-stream";
    }
    if (error == TS_API_UNAUTHORIZED && self->opts.client_id && !c->refreshed) {
        c->refreshed = true;
        c->res->token_refreshes++;
        api_easy_put(self, c->easy);
        c->easy = NULL;
        if (c->token_gen == self->token_gen)
            api_auth_drop(&self->auth);
        api_start(self, c);
        return;
    }
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

/* ---- finished transfers --------------------------------------------------- */

static void api_call_done(api_t *self, call_t *c, CURLcode rc)
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
    if (error == TS_API_OK) {
        error = check_body(c, &why);
    }
    api_log_body("<-", c->req->id, c->res->attempts, status, ts_api_error_name(error), c->body.data,
                 c->body.len);
    c->res->status = status;
    if (c->retry_after_ms >= 0)
        c->res->retry_after_ms = c->retry_after_ms;

    if (error == TS_API_UNAUTHORIZED && self->opts.client_id && !c->refreshed) {
        /* One refresh per request; requests that got 401 with the same token
         * share one fetch (the first drops the token, the rest wait). */
        c->refreshed = true;
        c->res->token_refreshes++;
        api_easy_put(self, c->easy);
        c->easy = NULL;
        if (c->token_gen == self->token_gen)
            api_auth_drop(&self->auth);
        api_start(self, c);
        return;
    }
    if (ts_api_error_retryable(error) && c->res->attempts < c->max_attempts) {
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

/* ---- the token -------------------------------------------------------------- */

static void token_fail(api_t *self, ts_api_error_t error, long status, const char *why)
{
    ts_warn(LOG, "token request failed: %s (status %ld)%s%s", ts_api_error_name(error), status,
            why ? ": " : "", why ? why : "");
    /* Every waiting call counts this as one failed attempt. */
    call_t *next;
    for (call_t *c = self->lists[C_WAIT_TOKEN].head; c; c = next) {
        next = c->next;
        if (c->req->stream) {
            if (ts_api_error_retryable(error)) {
                c->failed_connects++;
                int64_t delay =
                    api_backoff_ms(self, self->opts.stream_backoff_base_ms,
                                   self->opts.stream_backoff_cap_ms, c->failed_connects);
                api_stream_state(self, c, TS_API_STREAM_DROPPED, error, status, delay);
                api_backoff(self, c, delay);
            } else {
                api_stream_state(self, c, TS_API_STREAM_REFUSED, error, status, 0);
                api_finish(self, c, error, status, why);
            }
            continue;
        }
        c->res->attempts++;
        if (ts_api_error_retryable(error) && c->res->attempts < c->max_attempts)
            api_backoff(self, c,
                        api_backoff_ms(self, self->opts.backoff_base_ms, self->opts.backoff_cap_ms,
                                       c->res->attempts));
        else
            api_finish(self, c, error, status, why ? why : "token request failed");
    }
    api_pump(self);
}

/* The token answer's body (small: 64 KiB at most). */
static size_t on_token_body(char *data, size_t size, size_t n, void *arg)
{
    ts_buf_t *b = arg;
    size_t len = size * n;
    if (b->len + len > 65536)
        return 0;
    return ts_buf_append(b, data, len) < 0 ? 0 : len;
}

static int form_add(api_t *self, ts_buf_t *b, const char *key, const char *value)
{
    char *esc = curl_easy_escape(self->token_easy, value ? value : "", 0);
    if (!esc)
        return -1;
    int rc = ts_buf_printf(b, "%s%s=%s", b->len ? "&" : "", key, esc);
    curl_free(esc);
    return rc;
}

/* Starts the shared token fetch unless one is running. */
static void api_ensure_token(api_t *self)
{
    if (self->token_easy)
        return;
    self->token_easy = api_easy_get(self);
    if (!self->token_easy) {
        token_fail(self, TS_API_INTERNAL, 0, "out of memory");
        return;
    }
    self->token_refresh_grant = self->refresh_token != NULL;
    ts_buf_t form = {0};
    int rc = form_add(self, &form, "grant_type",
                      self->refresh_token ? "refresh_token" : "client_credentials");
    if (self->refresh_token)
        rc |= form_add(self, &form, "refresh_token", self->refresh_token);
    rc |= form_add(self, &form, "client_id", self->opts.client_id);
    rc |= form_add(self, &form, "client_secret", self->opts.client_secret);
    if (rc || form.len >= sizeof self->token_form) {
        ts_buf_free(&form);
        CURL *e = self->token_easy;
        self->token_easy = NULL;
        api_easy_put(self, e);
        token_fail(self, TS_API_INTERNAL, 0, "token form too large");
        return;
    }
    memcpy(self->token_form, form.data, form.len + 1);
    explicit_bzero(form.data, form.len);
    ts_buf_free(&form);
    ts_buf_reset(&self->token_body);
    CURL *e = self->token_easy;
    api_easy_use(self, e, self->opts.token_url, self->opts.timeout_ms);
    curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, self->token_form);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(self->token_form));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, NULL);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    ts_debug(LOG, "token request (%s grant)",
             self->token_refresh_grant ? "refresh_token" : "client_credentials");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_token_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &self->token_body);
    if (curl_multi_add_handle(self->multi, e) != CURLM_OK) {
        self->token_easy = NULL;
        api_easy_put(self, e);
        token_fail(self, TS_API_INTERNAL, 0, "curl_multi_add_handle");
    }
}

static void api_token_done(api_t *self, CURLcode rc)
{
    CURL *e = self->token_easy;
    self->token_easy = NULL;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    api_easy_put(self, e);
    explicit_bzero(self->token_form, sizeof self->token_form);
    cJSON *j = rc == CURLE_OK && status == 200
                   ? cJSON_ParseWithLength(self->token_body.data, self->token_body.len)
                   : NULL;
    if (self->token_body.data)
        explicit_bzero(self->token_body.data, self->token_body.len);
    ts_buf_reset(&self->token_body);
    const cJSON *access = cJSON_GetObjectItemCaseSensitive(j, "access_token");
    if (cJSON_IsString(access) && *access->valuestring) {
        static const char prefix[] = "Authorization: Bearer ";
        size_t len = strlen(access->valuestring);
        api_auth_drop(&self->auth);
        self->auth = malloc(sizeof *self->auth + sizeof prefix + len);
        if (self->auth) {
            self->auth->refs = 1;
            memcpy(self->auth->line, prefix, sizeof prefix - 1);
            memcpy(self->auth->line + sizeof prefix - 1, access->valuestring, len + 1);
        }
        explicit_bzero(access->valuestring, len);
        const cJSON *refresh = cJSON_GetObjectItemCaseSensitive(j, "refresh_token");
        if (cJSON_IsString(refresh) && *refresh->valuestring) {
            free(self->refresh_token);
            self->refresh_token = strdup(refresh->valuestring);
        }
        const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
        int expires_in = cJSON_IsNumber(exp) ? exp->valueint : -1;
        cJSON_Delete(j);
        if (!self->auth) {
            token_fail(self, TS_API_INTERNAL, 0, "out of memory");
            return;
        }
        self->token_gen++;
        ts_info(LOG, "token obtained (expires in %d s)", expires_in);
        while (self->lists[C_WAIT_TOKEN].head)
            api_begin_attempt(self, self->lists[C_WAIT_TOKEN].head);
        return;
    }
    cJSON_Delete(j);
    if (self->token_refresh_grant && (status == 400 || status == 401)) {
        /* The refresh token is no good: start over with the client's credentials. */
        free(self->refresh_token);
        self->refresh_token = NULL;
        api_ensure_token(self);
        return;
    }
    ts_api_error_t error;
    if (status == 400 || status == 401)
        error = TS_API_UNAUTHORIZED;
    else if (rc == CURLE_OK && status == 200)
        error = TS_API_BAD_RESPONSE;
    else {
        call_t probe = {0};
        const char *why;
        error = api_classify(&probe, rc, status, &why);
        if (error == TS_API_OK)
            error = TS_API_BAD_RESPONSE;
    }
    token_fail(self, error, status, error == TS_API_BAD_RESPONSE ? "bad token answer" : NULL);
}

/* Reads curl's finished transfers. */
static void reap(api_t *self)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(self->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        if (m->easy_handle == self->token_easy) {
            api_token_done(self, m->data.result);
            continue;
        }
        call_t *c = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        if (c)
            api_call_done(self, c, m->data.result);
    }
    api_pump(self);
}

/* ---- messages in ------------------------------------------------------------ */

static void take_request(api_t *self, ts_api_request_t *r)
{
    call_t *c = calloc(1, sizeof *c);
    ts_api_result_t *res = calloc(1, sizeof *res);
    if (!c || !res) {
        free(c);
        free(res);
        ts_api_request_free(r);
        ts_error(LOG, "out of memory: request dropped");
        return;
    }
    c->self = self;
    c->req = r;
    c->res = res;
    res->request = r;
    res->id = r->id;
    res->user = r->user;
    res->retry_after_ms = -1;
    res->queued_us = ts_mono_us();
    c->max_attempts = r->max_attempts > 0 ? r->max_attempts : self->opts.max_attempts;
    c->timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : self->opts.timeout_ms;
    if (r->stream && !r->path)
        r->path = strdup("/v1/changes/stream");
    bool bad = !r->path || r->path[0] != '/' || r->method > TS_API_DELETE ||
               (r->stream && r->method != TS_API_GET) || strchr(r->path, '\n') ||
               strchr(r->idempotency_key, '\n') || strchr(r->idempotency_key, '\r');
    if (!bad) { /* base + path: two copies, not a printf (measured per request) */
        size_t blen = strlen(self->opts.base_url), plen = strlen(r->path);
        c->url = malloc(blen + plen + 1);
        if (c->url) {
            memcpy(c->url, self->opts.base_url, blen);
            memcpy(c->url + blen, r->path, plen + 1);
        }
    }
    if (bad || !c->url) {
        api_finish(self, c, TS_API_INTERNAL, 0,
                   bad ? "bad request (path, method)" : "out of memory");
        return;
    }
    if (r->stream) {
        api_start(self, c); /* streams take no slot */
        return;
    }
    api_set_state(self, c, C_QUEUED, false);
    api_pump(self);
}

static call_t *find_call(api_t *self, uint64_t id)
{
    for (int s = C_QUEUED; s < C__LAST; s++)
        for (call_t *c = self->lists[s].head; c; c = c->next)
            if (c->req->id == id)
                return c;
    return NULL;
}

static void cancel(api_t *self, uint64_t id)
{
    call_t *c = find_call(self, id);
    if (!c) {
        ts_debug(LOG, "req=%llu cancel: not live (already answered?)", (unsigned long long)id);
        return;
    }
    const char *where = api_state_names[c->state];
    char why[64];
    snprintf(why, sizeof why, "cancelled while %s", where);
    long status = 0;
    if (c->easy)
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    ts_buf_reset(&c->body);
    api_finish(self, c, TS_API_CANCELLED, status, why);
    api_pump(self);
}

/* Takes what the inbox holds: 0 when it is empty now, 1 when it stopped at
 * INBOX_BATCH messages, -1 on an error. */
static int on_inbox(api_t *self)
{
    for (int i = 0; i < INBOX_BATCH; i++) {
        ts_msg_t m;
        if (ts_msg_recv(self->inbox, ZMQ_DONTWAIT, &m) < 0)
            return errno == EAGAIN ? 0 : -1;
        switch (m.kind) {
        case TS_MSG_API_REQUEST:
            for (size_t k = 0; k < m.count; k++)
                take_request(self, ts_msg_API_REQUEST(&m)[k]);
            ts_msg_release(&m);
            break;
        case TS_MSG_API_CANCEL:
            for (size_t k = 0; k < m.count; k++)
                cancel(self, *ts_msg_API_CANCEL(&m)[k]);
            ts_msg_free(&m);
            break;
        default: ts_msg_unexpected(LOG, &m); break;
        }
    }
    return 1;
}

/* ---- the loop ---------------------------------------------------------------- */

/* Starts BACKOFF calls that are due; returns the earliest future due (or -1). */
static int64_t fire_due(api_t *self, int64_t now)
{
    int64_t next = -1;
    call_t *nx;
    for (call_t *c = self->lists[C_BACKOFF].head; c; c = nx) {
        nx = c->next;
        if (c->due_us <= now) {
            if (c->req->stream)
                api_start(self, c);
            else
                api_set_state(self, c, C_QUEUED, true); /* ahead of new work */
        } else if (next < 0 || c->due_us < next) {
            next = c->due_us;
        }
    }
    api_pump(self);
    return next;
}

/* Reads the control pipe until it is empty: 1 on $TERM (or a closing
 * context), 0 when drained, 2 when there may be more. */
static int read_pipe(void *pipe)
{
    for (int i = 0; i < 16; i++) {
        char cmd[16];
        int len = zmq_recv(pipe, cmd, sizeof cmd - 1, ZMQ_DONTWAIT);
        if (len < 0)
            return errno == ETERM ? 1 : errno == EAGAIN ? 0 : 2;
        cmd[len < (int)sizeof cmd - 1 ? len : (int)sizeof cmd - 1] = '\0';
        if (strcmp(cmd, "$TERM") == 0)
            return 1;
    }
    return 2;
}

static int run(api_t *self)
{
    void *pipe = ts_actor_pipe(self->actor);
    struct epoll_event evs[64];
    int running = 0;
    /* A ZMQ_FD only signals new activity: once it fires, the socket is read
     * until EAGAIN, and nothing queued is missed after that (both sockets
     * are only read here). Asking ZMQ_EVENTS every turn instead costs libzmq
     * a getpid() and a poll() per socket per turn. Both start "ready" for
     * what came before the loop. */
    bool pipe_ready = true, inbox_ready = true;
    for (;;) {
        int64_t now = ts_mono_us();
        int64_t due = fire_due(self, now);
        if (self->curl_due_us >= 0 && (due < 0 || self->curl_due_us < due))
            due = self->curl_due_us;
        int timeout_ms = due < 0 ? -1 : due <= now ? 0 : (int)((due - now + 999) / 1000);
        int hits = epoll_wait(self->epfd, evs, 64, pipe_ready || inbox_ready ? 0 : timeout_ms);
        if (hits < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        for (int i = 0; i < hits; i++) {
            int fd = evs[i].data.fd;
            if (fd == self->pipe_fd || fd == self->inbox_fd) {
                *(fd == self->pipe_fd ? &pipe_ready : &inbox_ready) = true;
                continue;
            }
            if (!self->watch[fd].want) { /* an idle kept-alive socket: curl checks it on reuse */
                watch_sync(self, fd);
                continue;
            }
            uint32_t e = evs[i].events;
            int ev = ((e & (EPOLLIN | EPOLLHUP)) ? CURL_CSELECT_IN : 0) |
                     ((e & EPOLLOUT) ? CURL_CSELECT_OUT : 0) | ((e & EPOLLERR) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(self->multi, fd, ev, &running);
        }
        if (self->curl_due_us >= 0 && self->curl_due_us <= ts_mono_us()) {
            self->curl_due_us = -1;
            curl_multi_socket_action(self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        reap(self);
        if (pipe_ready) {
            int r = read_pipe(pipe);
            if (r == 1)
                break;
            pipe_ready = r == 2;
        }
        if (inbox_ready) {
            int r = on_inbox(self);
            if (r < 0 && errno == ETERM)
                break;
            inbox_ready = r != 0; /* 1: stopped at the batch limit; -1: try again */
        }
        reap(self); /* requests started above may have failed at once */
        flush_replies(self);
    }
    return 0;
}

/* ---- life ----------------------------------------------------------------------- */

static char *own(api_t *self, int slot, const char *text)
{
    if (!text)
        return NULL;
    self->strings[slot] = strdup(text);
    return self->strings[slot];
}

static void api_destroy(api_t *self)
{
    for (int s = C_QUEUED; s < C__LAST; s++)
        while (self->lists[s].head)
            api_call_free(self, self->lists[s].head);
    if (self->token_easy) {
        CURL *e = self->token_easy;
        self->token_easy = NULL;
        api_easy_put(self, e);
    }
    if (self->inbox) { /* requests nobody took: free them */
        ts_msg_drain(self->inbox);
        zmq_close(self->inbox);
    }
    for (int i = 0; i < self->npool; i++)
        curl_easy_cleanup(self->pool[i]);
    if (self->multi)
        curl_multi_cleanup(self->multi);
    for (int i = 0; i < self->nreplies; i++) {
        for (int k = 0; k < self->replies[i].nout; k++)
            ts_msg_free_one(self->replies[i].kinds[k], self->replies[i].out[k]);
        free(self->replies[i].out);
        free(self->replies[i].kinds);
        zmq_close(self->replies[i].socket);
    }
    if (self->refresh_token)
        explicit_bzero(self->refresh_token, strlen(self->refresh_token));
    api_auth_drop(&self->auth);
    free(self->refresh_token);
    ts_buf_free(&self->token_body);
    free(self->watch);
    if (self->epfd >= 0)
        close(self->epfd);
    for (size_t i = 0; i < sizeof self->strings / sizeof self->strings[0]; i++) {
        if (self->strings[i] && i == 3) /* the secret */
            explicit_bzero(self->strings[i], strlen(self->strings[i]));
        free(self->strings[i]);
    }
    free(self);
}

static void api_actor(ts_actor_t *actor, void *args)
{
    const ts_api_opts_t *in = args;
    api_t *self = calloc(1, sizeof *self);
    if (!self)
        return;
    self->actor = actor;
    self->curl_due_us = -1;
    self->epfd = -1;
    if (getrandom(&self->rng, sizeof self->rng, 0) != sizeof self->rng || !self->rng)
        self->rng = (uint64_t)ts_mono_us() | 1;

    ts_api_opts_t *o = &self->opts;
    *o = *in;
    ts_buf_t token_url = {0};
    size_t blen = in->base_url ? strlen(in->base_url) : 0;
    while (blen && in->base_url[blen - 1] == '/')
        blen--;
    self->strings[0] = in->base_url ? strndup(in->base_url, blen) : NULL;
    o->base_url = self->strings[0];
    if (!in->token_url && o->base_url)
        ts_buf_printf(&token_url, "%s/oauth/token", o->base_url);
    o->token_url = in->token_url ? own(self, 1, in->token_url) : (self->strings[1] =
                                                                    ts_buf_take(&token_url, NULL));
    o->client_id = own(self, 2, in->client_id);
    o->client_secret = own(self, 3, in->client_secret);
    o->endpoint = own(self, 4, in->endpoint ? in->endpoint : TS_INPROC_API);
    o->ca_file = own(self, 5, in->ca_file);
    o->ca_path = own(self, 6, in->ca_path);
    o->proxy = own(self, 7, in->proxy);
#define DEFAULT(f, v)                                                                              \
    if (o->f <= 0)                                                                                 \
    o->f = (v)
    DEFAULT(max_connections, 32);
    DEFAULT(max_inflight, 64);
    DEFAULT(connect_timeout_ms, 5000);
    DEFAULT(timeout_ms, 30000);
    DEFAULT(max_attempts, 5);
    DEFAULT(backoff_base_ms, 100);
    DEFAULT(backoff_cap_ms, 30000);
    DEFAULT(retry_after_max_ms, 60000);
    DEFAULT(stream_backoff_base_ms, 250);
    DEFAULT(stream_backoff_cap_ms, 10000);
    DEFAULT(stream_idle_ms, 45000);
    DEFAULT(max_body_bytes, (size_t)64 << 20);
#undef DEFAULT
    if (!o->base_url || !o->token_url || !o->endpoint ||
        (strncmp(o->base_url, "http://", 7) && strncmp(o->base_url, "https://", 8))) {
        ts_error(LOG, "api: base URL must be http:// or https:// (got %s)",
                 in->base_url ? in->base_url : "none");
        goto fail;
    }
    if (o->client_id && !o->client_secret) {
        ts_error(LOG, "api: client_id given without client_secret");
        goto fail;
    }
    self->multi = curl_multi_init();
    if (!self->multi)
        goto fail;
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o->max_connections);
    curl_multi_setopt(self->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->max_connections);
    curl_multi_setopt(self->multi, CURLMOPT_MAXCONNECTS, (long)o->max_connections);
    curl_multi_setopt(self->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);

    self->inbox = zmq_socket(ts_actor_zctx(actor), ZMQ_PULL);
    int zero = 0;
    if (!self->inbox)
        goto fail;
    zmq_setsockopt(self->inbox, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(self->inbox, ZMQ_RCVHWM, &zero, sizeof zero);
    if (zmq_bind(self->inbox, o->endpoint)) {
        ts_error(LOG, "api: cannot bind %s: %s", o->endpoint, zmq_strerror(errno));
        goto fail;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    size_t fdlen = sizeof self->pipe_fd;
    if (self->epfd < 0 ||
        zmq_getsockopt(ts_actor_pipe(actor), ZMQ_FD, &self->pipe_fd, &fdlen) ||
        zmq_getsockopt(self->inbox, ZMQ_FD, &self->inbox_fd, &fdlen)) {
        ts_error(LOG, "api: cannot set up epoll: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event pev = {.events = EPOLLIN, .data.fd = self->pipe_fd};
    struct epoll_event iev = {.events = EPOLLIN, .data.fd = self->inbox_fd};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->pipe_fd, &pev) ||
        epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->inbox_fd, &iev)) {
        ts_error(LOG, "api: cannot set up epoll: %s", strerror(errno));
        goto fail;
    }
    ts_info(LOG, "api actor ready: %s (auth %s, %d connections, %d attempts)", o->base_url,
            o->client_id ? "client credentials" : "none", o->max_connections, o->max_attempts);
    ts_actor_ready(actor, 0);
    if (run(self) < 0)
        ts_error(LOG, "api: poll failed: %s", zmq_strerror(errno));
    ts_actor_quiesce(actor);
    api_destroy(self);
    return;
fail:
    api_destroy(self);
    ts_actor_ready(actor, -1);
}

/* ---- public helpers ------------------------------------------------------------ */

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
}

ts_actor_t *ts_api_start(void *zctx, const ts_api_opts_t *opts)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
    /* opts is copied by the actor before it reports ready. */
    return ts_actor_new(zctx, "api", api_actor, (void *)opts);
}

uint64_t ts_api_next_id(void)
{
    static uint64_t next;
    return __atomic_add_fetch(&next, 1, __ATOMIC_RELAXED);
}

ts_api_request_t *ts_api_request_new(ts_api_method_t method, const char *path, const char *body)
{
    ts_api_request_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->id = ts_api_next_id();
    r->method = method;
    r->path = path ? strdup(path) : NULL;
    if (body) {
        r->body_len = strlen(body);
        r->body = strdup(body);
    }
    if ((path && !r->path) || (body && !r->body)) {
        ts_api_request_free(r);
        return NULL;
    }
    return r;
}

void ts_api_request_free(ts_api_request_t *r)
{
    if (!r)
        return;
    free(r->path);
    free(r->body);
    free(r);
}

int ts_api_send(void *socket, ts_api_request_t *request)
{
    return ts_send_API_REQUEST(socket, &request, 1);
}

int ts_api_cancel(void *socket, uint64_t id)
{
    uint64_t *p = malloc(sizeof *p);
    if (!p)
        return -1;
    *p = id;
    if (ts_send_API_CANCEL(socket, &p, 1) < 0) {
        free(p);
        return -1;
    }
    return 0;
}

void ts_api_result_free(ts_api_result_t *res)
{
    if (!res)
        return;
    ts_api_request_free(res->request);
    cJSON_Delete(res->json);
    free(res->body);
    free(res);
}

void ts_api_stream_msg_free(ts_api_stream_msg_t *msg)
{
    free(msg);
}

void ts_api_event_free(ts_api_event_t *ev)
{
    if (!ev)
        return;
    cJSON_Delete(ev->json);
    free(ev->data);
    free(ev);
}


static const char *error_names[TS_API__LAST] = {
    "ok",         "network",    "timeout",           "tls",          "unauthorized",
    "forbidden",  "not_found",  "conflict",          "validation",   "too_many_requests",
    "server_error", "bad_request", "bad_response",   "cancelled",    "internal",
};

ts_api_error_t ts_api_status_class(long status)
{
    if (status >= 200 && status < 300)
        return TS_API_OK;
    switch (status) {
    case 401: return TS_API_UNAUTHORIZED;
    case 403: return TS_API_FORBIDDEN;
    case 404: return TS_API_NOT_FOUND;
    case 408: return TS_API_TIMEOUT;
    case 409:
    case 412: return TS_API_CONFLICT;
    case 422: return TS_API_VALIDATION;
    case 429: return TS_API_TOO_MANY_REQUESTS;
    default: break;
    }
    if (status >= 500 && status < 600)
        return TS_API_SERVER_ERROR;
    return status >= 400 && status < 500 ? TS_API_BAD_REQUEST : TS_API_BAD_RESPONSE;
}

const char *ts_api_error_name(ts_api_error_t error)
{
    return (unsigned)error < TS_API__LAST ? error_names[error] : "?";
}

bool ts_api_error_retryable(ts_api_error_t error)
{
    return error == TS_API_NETWORK || error == TS_API_TIMEOUT || error == TS_API_SERVER_ERROR ||
           error == TS_API_TOO_MANY_REQUESTS;
}
