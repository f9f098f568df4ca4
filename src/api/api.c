/* api.c — the API actor: Clinic API requests on the libcurl multi interface.
 *
 * One thread, one loop (its own: epoll over the control pipe's and the
 * inbox's ZMQ_FD and the sockets curl asks for through
 * CURLMOPT_SOCKETFUNCTION, with the timeout from CURLMOPT_TIMERFUNCTION and
 * the earliest retry). Here: the loop, the inbox (requests, cancels), the
 * queued replies, curl's sockets and its pool of easy handles, the actor's
 * life, and the public helpers of therasync/api.h. A call's state machine
 * is in call.c, streams in stream.c, the token in auth.c. */
#include "api_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#define INBOX_BATCH 1024

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
void api_reply(api_t *self, const ts_api_request_t *req, ts_msg_kind_t kind, void *ptr)
{
    int i = reply_socket(self, req->reply_to);
    if (i >= 0 && self->replies[i].nout == self->replies[i].capout) {
        int cap = self->replies[i].capout ? self->replies[i].capout * 2 : 64;
        self->replies[i].out = ts_xrealloc(self->replies[i].out, sizeof(void *) * (size_t)cap);
        self->replies[i].kinds =
            ts_xrealloc(self->replies[i].kinds, sizeof(ts_msg_kind_t) * (size_t)cap);
        self->replies[i].capout = cap;
    }
    if (i < 0) {
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
        watch_t *grown = ts_xrealloc(self->watch, sizeof *grown * (size_t)cap);
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

CURL *api_easy_get(api_t *self)
{
    return self->npool ? self->pool[--self->npool] : easy_new(self);
}

void api_easy_put(api_t *self, CURL *e)
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
void api_easy_use(api_t *self, CURL *e, const char *url, long timeout_ms)
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
    call_t *c = ts_xcalloc(1, sizeof *c);
    ts_api_result_t *res = ts_xcalloc(1, sizeof *res);
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
        r->path = ts_xstrdup("/v1/changes/stream");
    bool bad = !r->path || r->path[0] != '/' || r->method > TS_API_DELETE ||
               (r->stream && r->method != TS_API_GET) || strchr(r->path, '\n') ||
               strchr(r->idempotency_key, '\n') || strchr(r->idempotency_key, '\r');
    if (!bad) { /* base + path: two copies, not a printf (measured per request) */
        size_t blen = strlen(self->opts.base_url), plen = strlen(r->path);
        c->url = ts_xmalloc(blen + plen + 1);
        memcpy(c->url, self->opts.base_url, blen);
        memcpy(c->url + blen, r->path, plen + 1);
    }
    if (bad) {
        api_finish(self, c, TS_API_INTERNAL, 0, "bad request (path, method)");
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
        if (ts_actor_read_command(pipe, ZMQ_DONTWAIT, cmd, sizeof cmd) < 0)
            return errno == ETERM ? 1 : errno == EAGAIN ? 0 : 2;
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
    self->strings[slot] = ts_xstrdup(text);
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
    api_t *self = ts_xcalloc(1, sizeof *self);
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
    self->strings[0] = in->base_url ? ts_xstrndup(in->base_url, blen) : NULL;
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
    ts_api_request_t *r = ts_xcalloc(1, sizeof *r);
    r->id = ts_api_next_id();
    r->method = method;
    r->path = path ? ts_xstrdup(path) : NULL;
    if (body) {
        r->body_len = strlen(body);
        r->body = ts_xstrdup(body);
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
    uint64_t *p = ts_xmalloc(sizeof *p);
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
