/* http.h — a small libcurl-easy HTTP client for tests. Every call has a
 * total timeout; responses keep status, headers and body. */
#ifndef TS_TEST_HTTP_H
#define TS_TEST_HTTP_H

#include <stddef.h>

typedef struct {
    long status;   /* HTTP status, 0 when no answer arrived */
    int curl_code; /* CURLcode of the transfer (0 = ok) */
    char *body;    /* NUL-terminated (never NULL after a call) */
    size_t len;
    char *headers;  /* raw response header block */
    double seconds; /* total time of the transfer */
} ts_http_resp_t;

/* Stops a streaming read when it returns nonzero; sees the body so far. */
typedef int (*ts_http_stop_fn)(const char *body, size_t len, void *ctx);

/* Sends method url with optional extra headers (NULL-terminated "Name: v")
 * and body. Returns 0 when an HTTP answer arrived (any status), -1 on a
 * transport failure (resp->curl_code says which). Free with ts_http_free. */
int ts_http(const char *method, const char *url, const char *const headers[], const char *body,
            long timeout_ms, ts_http_resp_t *resp);

/* Like ts_http for GET, but ends the transfer as soon as stop() says so, or
 * at timeout_ms; the body read so far is kept. Returns 0 when stop() ended it,
 * -1 otherwise. For server-sent event streams. */
int ts_http_stream(const char *url, const char *const headers[], ts_http_stop_fn stop, void *ctx,
                   long timeout_ms, ts_http_resp_t *resp);

/* A response header's value (case-insensitive name), malloc'd, or NULL. */
char *ts_http_header(const ts_http_resp_t *resp, const char *name);

void ts_http_free(ts_http_resp_t *resp);

/* A TCP connection to 127.0.0.1:port (blocking), or -1. */
int ts_tcp_connect(int port);

/* Raw HTTP: connects to 127.0.0.1:port, sends len bytes as they are (NULs
 * and all), and reads the answer until the server closes the connection or
 * timeout_ms pass, into out (NUL-terminated). Returns the status of the
 * first answer line, 0 when none came, -1 when it could not connect. */
int ts_http_raw(int port, const void *request, size_t len, char *out, size_t outlen,
                int timeout_ms);

/* Checks Prometheus text with tests/support/promcheck.py (the families in
 * require, NULL-terminated, must be there; NULL: none): its exit code (0
 * valid, 1 not, -1 could not run), its output in out. */
int ts_promcheck(const char *text, const char *const require[], char *out, size_t outlen);

#endif
