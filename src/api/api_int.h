/* api_int.h — inside the API actor (src/api): the state shared by its files.
 *
 * api.c    the actor: loop, inbox, replies, curl's sockets and handles
 * call.c   a call's life: the call state machine, attempts, retries
 * stream.c a stream's connections and its server-sent events
 * auth.c   the OAuth2 token
 *
 * Not an interface: the public one is therasync/api.h (ts_api_*); the
 * names shared here are api_*. */
#ifndef THERASYNC_API_INT_H
#define THERASYNC_API_INT_H

#include "msgs/msgs.h"
#include "therasync/api.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOG "api"
#define MAX_REPLY_SOCKETS 16
#define EASY_POOL 256

typedef enum { C_NONE, C_QUEUED, C_WAIT_TOKEN, C_INFLIGHT, C_BACKOFF, C__LAST } call_state_t;
extern const char *api_state_names[C__LAST];

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
    struct curl_slist hnode[5];
    char hkey[84], hmatch[40], hlast[84], hnone[104];
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

/* api.c */
void api_reply(api_t *self, const ts_api_request_t *req, ts_msg_kind_t kind, void *ptr);
CURL *api_easy_get(api_t *self);
void api_easy_put(api_t *self, CURL *e);
void api_easy_use(api_t *self, CURL *e, const char *url, long timeout_ms);

/* call.c */
int64_t api_backoff_ms(api_t *self, long base, long cap, int n);
void api_set_state(api_t *self, call_t *c, call_state_t to, bool front);
void api_log_body(const char *what, uint64_t id, int attempt, long status, const char *cls,
                  const char *body, size_t len);
int64_t api_parse_retry_after(const char *v);
bool api_ctype_is(const char *ctype, const char *want);
void api_call_free(api_t *self, call_t *c);
void api_finish(api_t *self, call_t *c, ts_api_error_t error, long status, const char *why);
void api_start(api_t *self, call_t *c);
void api_pump(api_t *self);
void api_begin_attempt(api_t *self, call_t *c);
ts_api_error_t api_classify(call_t *c, CURLcode rc, long status, const char **why);
bool api_unreachable(CURLcode rc);
void api_backoff(api_t *self, call_t *c, int64_t delay_ms);
void api_call_done(api_t *self, call_t *c, CURLcode rc);

/* stream.c */
size_t api_on_header(char *data, size_t size, size_t n, void *arg);
size_t api_on_body(char *data, size_t size, size_t n, void *arg);
void api_stream_state(api_t *self, call_t *c, ts_api_stream_state_t state, ts_api_error_t error,
                      long status, int64_t retry_in_ms);
void api_stream_done(api_t *self, call_t *c, CURLcode rc, long status);

/* auth.c */
void api_auth_drop(auth_t **a);
/* A 401 with the token it was sent with: starts c again under a fresh one,
 * once per call. True when it did (c is in flight again). */
bool api_retry_unauthorized(api_t *self, call_t *c, ts_api_error_t error);
void api_ensure_token(api_t *self);
void api_token_done(api_t *self, CURLcode rc);

#endif
