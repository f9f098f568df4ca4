/* http.c — see http.h. */
#include "http.h"
#include "engine.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    ts_http_resp_t *resp;
    ts_http_stop_fn stop;
    void *ctx;
    int stopped;
} sink_t;

static int grow(char **buf, size_t *len, const char *data, size_t n)
{
    char *p = realloc(*buf, *len + n + 1);
    if (!p)
        return -1;
    memcpy(p + *len, data, n);
    *len += n;
    p[*len] = '\0';
    *buf = p;
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    sink_t *s = userp;
    size_t n = size * nmemb;
    if (grow(&s->resp->body, &s->resp->len, data, n) < 0)
        return 0;
    if (s->stop && s->stop(s->resp->body, s->resp->len, s->ctx)) {
        s->stopped = 1;
        return 0; /* ends the transfer */
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    sink_t *s = userp;
    size_t hl = 0;
    if (s->resp->headers)
        hl = strlen(s->resp->headers);
    size_t n = size * nmemb;
    return grow(&s->resp->headers, &hl, data, n) < 0 ? 0 : n;
}

static int perform(const char *method, const char *url, const char *const headers[],
                   const char *body, long timeout_ms, ts_http_resp_t *resp, sink_t *sink)
{
    memset(resp, 0, sizeof *resp);
    resp->body = calloc(1, 1);
    resp->headers = calloc(1, 1);
    sink->resp = resp;
    CURL *c = curl_easy_init();
    if (!c || !resp->body || !resp->headers) {
        if (c)
            curl_easy_cleanup(c);
        resp->curl_code = CURLE_OUT_OF_MEMORY;
        return -1;
    }
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 5000 ? timeout_ms : 5000L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, sink);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    }
    CURLcode rc = curl_easy_perform(c);
    resp->curl_code = (int)rc;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &resp->seconds);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

int ts_http(const char *method, const char *url, const char *const headers[], const char *body,
            long timeout_ms, ts_http_resp_t *resp)
{
    sink_t sink = {0};
    return perform(method, url, headers, body, timeout_ms, resp, &sink);
}

int ts_http_stream(const char *url, const char *const headers[], ts_http_stop_fn stop, void *ctx,
                   long timeout_ms, ts_http_resp_t *resp)
{
    sink_t sink = {.stop = stop, .ctx = ctx};
    perform("GET", url, headers, NULL, timeout_ms, resp, &sink);
    return sink.stopped ? 0 : -1;
}

char *ts_http_header(const ts_http_resp_t *resp, const char *name)
{
    size_t nl = strlen(name);
    const char *p = resp->headers;
    while (p && *p) {
        const char *eol = strstr(p, "\r\n");
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = ll - (size_t)(v - p);
            char *out = malloc(vl + 1);
            if (out) {
                memcpy(out, v, vl);
                out[vl] = '\0';
            }
            return out;
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

void ts_http_free(ts_http_resp_t *resp)
{
    free(resp->body);
    free(resp->headers);
    resp->body = resp->headers = NULL;
}

int ts_tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

static long ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

int ts_http_raw(int port, const void *request, size_t len, char *out, size_t outlen,
                int timeout_ms)
{
    out[0] = '\0';
    int fd = ts_tcp_connect(port);
    if (fd < 0)
        return -1;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t sent = 0, got = 0;
    while (sent < len) {
        ssize_t n = send(fd, (const char *)request + sent, len - sent, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may answer and close early: read what came */
        sent += (size_t)n;
    }
    long left;
    while (got + 1 < outlen && (left = timeout_ms - ms_since(&t0)) > 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t n = recv(fd, out + got, outlen - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    out[got] = '\0';
    close(fd);
    int status = 0;
    if (sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
    return status;
}

int ts_promcheck(const char *text, const char *const require[], char *out, size_t outlen)
{
    char path[] = "/tmp/ts-metrics-XXXXXX"; /* mkstemp's template */
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    bool written = write(fd, text, len) == (ssize_t)len;
    close(fd);
    char cmd[8192];
    int n = snprintf(cmd, sizeof cmd, "python3 %s %s", ts_source_path("tests/support/promcheck.py"),
                     path);
    for (size_t i = 0; require && require[i] && n > 0 && (size_t)n < sizeof cmd; i++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " --require %s", require[i]);
    if (n > 0 && (size_t)n < sizeof cmd)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " 2>&1");
    FILE *p = written && n > 0 && (size_t)n < sizeof cmd ? popen(cmd, "r") : NULL;
    int status = -1;
    out[0] = '\0';
    if (p) {
        out[fread(out, 1, outlen - 1, p)] = '\0';
        status = pclose(p);
    }
    unlink(path);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
