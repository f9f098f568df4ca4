/* api.c — the raw API workload: requests/s of the API actor against
 * clinic-api with keep-alive, next to plain libcurl multi and wrk against the
 * same URL in the same run.
 *
 *   therasync-bench --workload api --clients C [--runs R] [--api URL]
 *
 * Each run: GETs of one document for API_BENCH_SECONDS with C requests in
 * flight over C connections, three ways in turn: through the actor; through a
 * bare curl multi loop (no actor, no ZeroMQ, no JSON: curl's own cost); and
 * `wrk -t2 -cC -d5s` (-t1 when C is 1). All three send the same Authorization
 * header to the same URL. Besides req/s, each reports the client's and the
 * server's CPU time per request (the steadier figures on a shared machine).
 * One JSON line per run, then the medians. With no --api it starts its own
 * clinic-api (beside this binary) on a free loopback port with a temporary
 * database. */
#include "msgs/msgs.h"
#include "bench.h"
#include "therasync/api.h"
#include "therasync/log.h"

#include <arpa/inet.h>
#include <cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define API_BENCH_SECONDS 5
#define WARMUP_MS 500
#define DOC_PATH "/v1/sessions/bench-doc"

/* CPU time over one measured window: the client's (this process, or wrk)
 * and the server's (our clinic-api only; -1 otherwise), in µs per request. */
typedef struct {
    double client0, server0, thread0; /* seconds at the window's start */
    double client_us, server_us;
    double thread_us; /* the actor's own thread ("ts-api"); -1 when not measured */
} cpu_t;

static double tv_s(struct timeval t)
{
    return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

static double self_cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return tv_s(u.ru_utime) + tv_s(u.ru_stime);
}

/* utime + stime of a process from /proc, in seconds; -1 when unknown. */
static double pid_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = pid > 0 ? fopen(path, "r") : NULL;
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long long ut, st;
    /* after ")": state, then fields 4..13, then utime (14) and stime (15) */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of this process's thread named name (from /proc), or -1. */
static double thread_cpu_s(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    double cpu = -1;
    while (d && cpu < 0 && (de = readdir(d))) {
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f) && strncmp(comm, name, strlen(name)) == 0 &&
            comm[strlen(name)] == '\n') {
            long tid = strtol(de->d_name, NULL, 10);
            snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
            FILE *g = fopen(path, "r");
            char buf[1024];
            size_t n = g ? fread(buf, 1, sizeof buf - 1, g) : 0;
            if (g)
                fclose(g);
            buf[n] = '\0';
            const char *p = strrchr(buf, ')');
            unsigned long long ut, st;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                            &st) == 2)
                cpu = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        }
        fclose(f);
    }
    if (d)
        closedir(d);
    return cpu;
}

static void cpu_start(cpu_t *c, const bench_api_t *e)
{
    c->client0 = self_cpu_s();
    c->server0 = pid_cpu_s(e->server);
    c->thread0 = thread_cpu_s("ts-api");
}

static void cpu_stop(cpu_t *c, const bench_api_t *e, size_t requests)
{
    double s1 = pid_cpu_s(e->server);
    double t1 = thread_cpu_s("ts-api");
    c->client_us = requests ? (self_cpu_s() - c->client0) * 1e6 / (double)requests : -1;
    c->thread_us = requests && t1 >= 0 && c->thread0 >= 0
                       ? (t1 - c->thread0) * 1e6 / (double)requests
                       : -1;
    c->server_us = requests && s1 >= 0 && c->server0 >= 0
                       ? (s1 - c->server0) * 1e6 / (double)requests
                       : -1;
}

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

int bench_api_start(bench_api_t *e)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char path[4200], db[300], listen[64], log[300];
    /* Beside this binary (build/), else where `make install` puts it:
     * PREFIX/libexec/therasync, a test server no one runs by hand. */
    const char *dir = dirname(exe);
    snprintf(path, sizeof path, "%s/clinic-api", dir);
    if (access(path, X_OK) != 0)
        snprintf(path, sizeof path, "%s/../libexec/therasync/clinic-api", dir);
    const char *tmp = getenv("TMPDIR");
    snprintf(e->dir, sizeof e->dir, "%s/therasync-bench-api-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (access(path, X_OK) != 0 || !mkdtemp(e->dir)) {
        fprintf(stderr, "bench: %s missing or no temp dir\n", path);
        return -1;
    }
    int port = bench_free_port();
    snprintf(db, sizeof db, "%s/api.db", e->dir);
    snprintf(log, sizeof log, "%s/clinic-api.log", e->dir);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(e->base, sizeof e->base, "http://127.0.0.1:%d", port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        /* --clients goes up to 1024 connections from loopback: no per-address cap */
        char *argv[24] = {path, "--listen", listen, "--db", db, "--log-level", "warn",
                          "--max-conns-per-ip", "0"};
        for (size_t i = 0, k = 9; e->extra && e->extra[i] && k < 23; i++)
            argv[k++] = (char *)e->extra[i];
        execv(path, argv);
        _exit(127);
    }
    e->server = pid;
    for (int i = 0; i < 200; i++) { /* up to 10 s */
        if (port_open(port))
            return 0;
        usleep(50000);
    }
    fprintf(stderr, "bench: clinic-api did not listen on %s (log %s)\n", listen, log);
    return -1;
}

void bench_api_stop(bench_api_t *e)
{
    if (e->server > 0) {
        kill(e->server, SIGTERM);
        for (int i = 0; i < 100; i++) {
            if (waitpid(e->server, NULL, WNOHANG) == e->server) {
                e->server = 0;
                break;
            }
            usleep(50000);
        }
        if (e->server > 0) {
            kill(e->server, SIGKILL);
            waitpid(e->server, NULL, 0);
        }
    }
    if (e->dir[0]) {
        char db[300];
        const char *files[] = {"api.db", "api.db-wal", "api.db-shm", "clinic-api.log"};
        for (size_t i = 0; i < 4; i++) {
            snprintf(db, sizeof db, "%s/%s", e->dir, files[i]);
            unlink(db);
        }
        rmdir(e->dir);
    }
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    return ts_buf_append(arg, data, size * n) < 0 ? 0 : size * n;
}

int bench_api_token(bench_api_t *e)
{
    CURL *c = curl_easy_init();
    ts_buf_t out = {0};
    char url[300];
    snprintf(url, sizeof url, "%s/oauth/token", e->base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS,
                     "grant_type=client_credentials&client_id=therasync&client_secret=dev-secret");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    int rc = -1;
    if (curl_easy_perform(c) == CURLE_OK) {
        cJSON *j = cJSON_Parse(out.data ? out.data : "");
        const cJSON *t = cJSON_GetObjectItem(j, "access_token");
        if (cJSON_IsString(t)) {
            snprintf(e->token, sizeof e->token, "%s", t->valuestring);
            rc = 0;
        }
        cJSON_Delete(j);
    }
    ts_buf_free(&out);
    curl_easy_cleanup(c);
    if (rc)
        fprintf(stderr, "bench: no token from %s/oauth/token\n", e->base);
    return rc;
}

long bench_http(void **h, const bench_api_t *e, const char *method, const char *path,
                const char *body, ts_buf_t *out)
{
    if (!*h)
        *h = curl_easy_init();
    CURL *c = *h;
    if (!c)
        return -1;
    curl_easy_reset(c);
    char url[512], auth[300];
    snprintf(url, sizeof url, "%s%s", e->base, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", e->token);
    struct curl_slist *hd = curl_slist_append(NULL, auth);
    hd = curl_slist_append(hd, strcmp(method, "PATCH") == 0
                                   ? "Content-Type: application/merge-patch+json"
                                   : "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    long status = -1;
    ts_buf_reset(out);
    if (curl_easy_perform(c) != CURLE_OK || curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
        status = -1;
    curl_slist_free_all(hd);
    return status;
}

void bench_http_close(void **h)
{
    if (*h)
        curl_easy_cleanup(*h);
    *h = NULL;
}

/* A token and the document (curl easy, outside the timing). */
static int prepare(bench_api_t *e)
{
    if (bench_api_token(e))
        return -1;
    CURL *c = curl_easy_init();
    ts_buf_t out = {0};
    char url[300], auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", e->token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    h = curl_slist_append(h, "Idempotency-Key: bench-doc");
    h = curl_slist_append(h, "Content-Type: application/json");
    snprintf(url, sizeof url, "%s/v1/sessions", e->base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS,
                     "{\"id\":\"bench-doc\",\"therapist_id\":\"t-1\",\"status\":\"scheduled\","
                     "\"duration_min\":50,\"notes\":\"a note of some length for the bench\"}");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    long status = 0;
    int rc = curl_easy_perform(c) != CURLE_OK ||
                     curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK ||
                     (status != 201 && status != 200)
                 ? -1
                 : 0;
    curl_slist_free_all(h);
    ts_buf_free(&out);
    curl_easy_cleanup(c);
    if (rc)
        fprintf(stderr, "bench: cannot create the document at %s\n", e->base);
    return rc;
}

/* C requests in flight through the actor for `seconds`; returns req/s. */
static double run_actor(bench_api_t *e, int clients, double seconds, int64_t *p50, int64_t *p99,
                        size_t *errors, cpu_t *cpu)
{
    void *zctx = zmq_ctx_new();
    void *results = zmq_socket(zctx, ZMQ_PULL);
    char endpoint[64], results_ep[64];
    static int seq;
    seq++;
    snprintf(endpoint, sizeof endpoint, "inproc://bench-api-%d", seq);
    snprintf(results_ep, sizeof results_ep, "inproc://bench-api-results-%d", seq);
    zmq_bind(results, results_ep);
    ts_api_opts_t o = {.base_url = e->base, .client_id = "therasync",
                       .client_secret = "dev-secret", .endpoint = endpoint,
                       .max_connections = clients, .max_inflight = clients, .max_attempts = 1};
    ts_actor_t *api = ts_api_start(zctx, &o);
    double rate = -1;
    size_t cap = 1 << 20, nlat = 0;
    int64_t *lat = malloc(cap * sizeof *lat);
    void *push = zmq_socket(zctx, ZMQ_PUSH);
    zmq_connect(push, endpoint);
    *errors = 0;
    if (api && lat) {
        int64_t start = ts_mono_us(), measure_from = start + WARMUP_MS * 1000LL;
        int64_t end = measure_from + (int64_t)(seconds * 1e6);
        size_t done = 0;
        int inflight = 0;
        bool measuring = false, stopped = false;
        int64_t t_measure = 0;
        for (;;) {
            int64_t now = ts_mono_us();
            if (!measuring && now >= measure_from) {
                measuring = true;
                t_measure = now;
                done = 0;
                cpu_start(cpu, e);
            }
            if (measuring && !stopped && now >= end) {
                stopped = true;
                cpu_stop(cpu, e, done);
            }
            ts_api_request_t *batch[1024];
            size_t nb = 0;
            while (now < end && inflight < clients && nb < 1024) {
                ts_api_request_t *r = ts_api_request_new(TS_API_GET, DOC_PATH, NULL);
                if (!r)
                    break;
                r->shape = TS_API_SHAPE_DOC;
                r->user = (void *)(intptr_t)now;
                snprintf(r->reply_to, sizeof r->reply_to, "%s", results_ep);
                batch[nb++] = r;
                inflight++;
            }
            if (nb && ts_send_API_REQUEST(push, batch, nb) < 0) {
                for (size_t i = 0; i < nb; i++)
                    ts_api_request_free(batch[i]);
                inflight -= (int)nb;
            }
            if (inflight == 0)
                break;
            zmq_pollitem_t it = {.socket = results, .events = ZMQ_POLLIN};
            if (zmq_poll(&it, 1, 1000) <= 0)
                break; /* nothing for a second: give up */
            ts_msg_t m;
            while (ts_msg_recv(results, ZMQ_DONTWAIT, &m) == 0) {
                for (size_t i = 0; i < m.count; i++) {
                    if (m.kind == TS_MSG_API_RESULT) {
                        ts_api_result_t *res = ts_msg_API_RESULT(&m)[i];
                        inflight--;
                        int64_t t = ts_mono_us();
                        if (res->error != TS_API_OK)
                            (*errors)++;
                        else if (measuring && t <= end) {
                            done++;
                            if (nlat < cap)
                                lat[nlat++] = t - (int64_t)(intptr_t)res->user;
                        }
                    }
                }
                ts_msg_free(&m);
            }
        }
        double took = (double)(end - t_measure) / 1e6;
        rate = measuring && took > 0 ? (double)done / took : -1;
        *p50 = nlat ? bench_percentile(lat, nlat, 50) : -1;
        *p99 = nlat ? bench_percentile(lat, nlat, 99) : -1;
    }
    free(lat);
    zmq_close(push);
    ts_actor_destroy(&api);
    ts_msg_drain(results);
    zmq_close(results);
    zmq_ctx_term(zctx);
    return rate;
}

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data, (void)arg;
    return size * n;
}

/* The reference: a bare curl multi loop, C easy handles each set up once and
 * re-added as soon as its transfer ends (what curl alone costs, with no
 * actor, no ZeroMQ and no JSON). Same warm-up and window as run_actor. */
static double run_curl(bench_api_t *e, int clients, double seconds, size_t *errors, cpu_t *cpu)
{
    enum { MAX_EASY = 256 };
    CURL *easy[MAX_EASY];
    int n = clients < MAX_EASY ? clients : MAX_EASY;
    char url[300], auth[300];
    snprintf(url, sizeof url, "%s%s", e->base, DOC_PATH);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", e->token);
    struct curl_slist *hd = curl_slist_append(NULL, auth);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)n);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)n);
    for (int i = 0; i < n; i++) {
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(easy[i], CURLOPT_PROXY, "");
        curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L); /* as the actor: no sigaction per call */
        curl_multi_add_handle(m, easy[i]);
    }
    int64_t start = ts_mono_us(), measure_from = start + WARMUP_MS * 1000LL;
    int64_t end = measure_from + (int64_t)(seconds * 1e6), t_measure = 0;
    size_t done = 0;
    bool measuring = false, stopped = false;
    int running = 1;
    *errors = 0;
    while (running) {
        curl_multi_perform(m, &running);
        int64_t now = ts_mono_us();
        if (!measuring && now >= measure_from) {
            measuring = true;
            t_measure = now;
            done = 0;
            cpu_start(cpu, e);
        }
        if (measuring && !stopped && now >= end) {
            stopped = true;
            cpu_stop(cpu, e, done);
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result != CURLE_OK || status != 200)
                (*errors)++;
            else if (measuring && !stopped)
                done++;
            curl_multi_remove_handle(m, msg->easy_handle);
            if (now < end) {
                curl_multi_add_handle(m, msg->easy_handle);
                running = 1;
            }
        }
        if (running)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    for (int i = 0; i < n; i++) {
        curl_multi_remove_handle(m, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    curl_multi_cleanup(m);
    curl_slist_free_all(hd);
    double took = (double)(end - t_measure) / 1e6;
    return stopped && took > 0 ? (double)done / took : -1;
}

/* wrk -tT -cC -d5s with the token; returns its Requests/sec, or -1. */
static double run_wrk(bench_api_t *e, int clients, char *cmd, size_t cmdlen, cpu_t *cpu)
{
    char conns[16], threads[16], auth[300], url[300], dur[16];
    snprintf(conns, sizeof conns, "-c%d", clients);
    snprintf(threads, sizeof threads, "-t%d", clients < 2 ? 1 : 2);
    snprintf(dur, sizeof dur, "-d%ds", API_BENCH_SECONDS);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", e->token);
    snprintf(url, sizeof url, "%s%s", e->base, DOC_PATH);
    snprintf(cmd, cmdlen, "wrk %s %s %s -H 'Authorization: Bearer TOKEN' %s", threads, conns, dur,
             url);
    int fd[2];
    if (pipe(fd))
        return -1;
    cpu->server0 = pid_cpu_s(e->server);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        char *argv[] = {"wrk", threads, conns, dur, "-H", auth, url, NULL};
        execvp("wrk", argv);
        _exit(127);
    }
    close(fd[1]);
    ts_buf_t out = {0};
    char buf[4096];
    ssize_t got;
    while ((got = read(fd[0], buf, sizeof buf)) > 0)
        ts_buf_append(&out, buf, (size_t)got);
    close(fd[0]);
    int status = 0;
    struct rusage ru = {0};
    wait4(pid, &status, 0, &ru);
    double rate = -1;
    const char *total = out.data ? strstr(out.data, " requests in ") : NULL;
    size_t requests = 0;
    if (total) { /* "  123456 requests in 5.00s" */
        const char *b = total;
        while (b > out.data && b[-1] >= '0' && b[-1] <= '9')
            b--;
        requests = strtoul(b, NULL, 10);
    }
    double server1 = pid_cpu_s(e->server);
    cpu->client_us = requests ? (tv_s(ru.ru_utime) + tv_s(ru.ru_stime)) * 1e6 / (double)requests : -1;
    cpu->server_us = requests && server1 >= 0 && cpu->server0 >= 0
                         ? (server1 - cpu->server0) * 1e6 / (double)requests
                         : -1;
    const char *p = out.data ? strstr(out.data, "Requests/sec:") : NULL;
    if (p)
        rate = strtod(p + strlen("Requests/sec:"), NULL);
    const char *non2xx = out.data ? strstr(out.data, "Non-2xx") : NULL;
    if (non2xx)
        fprintf(stderr, "bench: wrk saw errors: %.60s\n", non2xx);
    if (rate < 0)
        fprintf(stderr, "bench: wrk failed (is it installed?): %s\n", out.data ? out.data : "");
    ts_buf_free(&out);
    return rate;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double med(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int bench_run_api(bench_opts_t *o)
{
    int clients = o->clients ? o->clients : 32;
    bench_api_t e = {0};
    ts_log_set_level(TS_LOG_WARN);
    curl_global_init(CURL_GLOBAL_ALL);
    if (o->api) {
        snprintf(e.base, sizeof e.base, "%s", o->api);
    } else if (bench_api_start(&e) < 0) {
        bench_api_stop(&e);
        return 1;
    }
    int failed = 0;
    /* per run: actor, curl, wrk req/s; actor/wrk and curl/wrk; CPU µs per request */
    enum { A, C, W, RA, RC, CPU_A, CPU_T, CPU_C, CPU_W, SRV_A, SRV_C, SRV_W, NCOL };
    double col[NCOL][64];
    int ok = 0;
    if (prepare(&e) < 0)
        failed = 1;
    for (int r = 0; !failed && r < o->runs && r < 64; r++) {
        if (ts_mono_us() > o->deadline_us)
            break;
        int64_t p50 = -1, p99 = -1;
        size_t errors = 0, cerrors = 0;
        char cmd[512];
        cpu_t ca = {0}, cc = {0}, cw = {0};
        double a = run_actor(&e, clients, API_BENCH_SECONDS, &p50, &p99, &errors, &ca);
        double c = run_curl(&e, clients, API_BENCH_SECONDS, &cerrors, &cc);
        double w = run_wrk(&e, clients, cmd, sizeof cmd, &cw);
        bool bad = a <= 0 || c <= 0 || w <= 0 || errors || cerrors;
        printf("{\"workload\":\"api\",\"run\":%d,\"clients\":%d,\"seconds\":%d,\"ops_per_s\":%.0f,"
               "\"p50_us\":%lld,\"p99_us\":%lld,\"errors\":%zu,\"curl_ops_per_s\":%.0f,"
               "\"wrk_ops_per_s\":%.0f,\"ratio\":%.3f,\"curl_ratio\":%.3f,"
               "\"client_cpu_us\":{\"actor\":%.1f,\"actor_thread\":%.1f,\"curl\":%.1f,\"wrk\":%.1f},"
               "\"server_cpu_us\":{\"actor\":%.1f,\"curl\":%.1f,\"wrk\":%.1f},\"wrk\":\"%s\"%s}\n",
               r + 1, clients, API_BENCH_SECONDS, a, (long long)p50, (long long)p99,
               errors + cerrors, c, w, w > 0 ? a / w : 0, w > 0 ? c / w : 0, ca.client_us,
               ca.thread_us, cc.client_us, cw.client_us, ca.server_us, cc.server_us, cw.server_us, cmd,
               bad ? ",\"failed\":true" : "");
        fflush(stdout);
        if (bad) {
            failed = 1;
            continue;
        }
        double v[NCOL] = {a, c, w, a / w, c / w, ca.client_us, ca.thread_us, cc.client_us, cw.client_us,
                          ca.server_us, cc.server_us, cw.server_us};
        for (int k = 0; k < NCOL; k++)
            col[k][ok] = v[k];
        ok++;
    }
    if (ok > 1) {
        double m[NCOL];
        for (int k = 0; k < NCOL; k++)
            m[k] = med(col[k], ok);
        printf("{\"workload\":\"api\",\"stat\":\"median\",\"runs\":%d,\"clients\":%d,"
               "\"ops_per_s\":%.0f,\"curl_ops_per_s\":%.0f,\"wrk_ops_per_s\":%.0f,"
               "\"ratio\":%.3f,\"curl_ratio\":%.3f,"
               "\"client_cpu_us\":{\"actor\":%.1f,\"actor_thread\":%.1f,\"curl\":%.1f,\"wrk\":%.1f},"
               "\"server_cpu_us\":{\"actor\":%.1f,\"curl\":%.1f,\"wrk\":%.1f}}\n",
               ok, clients, m[A], m[C], m[W], m[RA], m[RC], m[CPU_A], m[CPU_T], m[CPU_C], m[CPU_W],
               m[SRV_A], m[SRV_C], m[SRV_W]);
    }
    if (!o->api)
        bench_api_stop(&e);
    explicit_bzero(e.token, sizeof e.token);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
