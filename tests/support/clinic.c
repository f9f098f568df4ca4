/* clinic.c — see clinic.h. */
#include "clinic.h"
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static int spawn(ts_clinic_t *c, const char *const extra[])
{
    char listen[64], db[4200];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", c->port);
    snprintf(db, sizeof db, "%s/clinic-api.db", c->dir);
    const char *args[32] = {"--listen", listen, "--db", db, "--heartbeat-ms", "1000"};
    int n = 6;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    if (ts_proc_spawn(&c->proc, c->dir, "clinic-api", args))
        return -1;
    char line[256];
    c->token[0] = '\0';
    return ts_proc_wait_line(&c->proc, "listening on 127.0.0.1:", 10000, line, sizeof line);
}

int ts_clinic_start(ts_clinic_t *c, const char *const extra[])
{
    memset(c, 0, sizeof *c);
    if (!(c->dir = ts_tmpdir("ts-clinic")) || !(c->port = ts_free_port()))
        return -1;
    snprintf(c->url, sizeof c->url, "http://127.0.0.1:%d", c->port);
    return spawn(c, extra);
}

int ts_clinic_restart(ts_clinic_t *c, const char *const extra[])
{
    ts_clinic_stop(c);
    return spawn(c, extra);
}

void ts_clinic_stop(ts_clinic_t *c)
{
    if (c->proc.pid)
        ts_proc_stop(&c->proc, 5000);
}

void ts_clinic_destroy(ts_clinic_t *c)
{
    ts_clinic_stop(c);
    if (c->dir) {
        ts_rmtree(c->dir);
        free(c->dir);
    }
    memset(c, 0, sizeof *c);
}

int ts_clinic_faults(ts_clinic_t *c, const char *json)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_control/faults", c->url);
    const char *h[] = {"Content-Type: application/json", NULL};
    ts_http_resp_t r;
    int rc = ts_http("POST", url, h, json, 5000, &r) == 0 && r.status == 200 ? 0 : -1;
    ts_http_free(&r);
    return rc;
}

long long ts_clinic_stat(ts_clinic_t *c, const char *name)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_control/stats", c->url);
    ts_http_resp_t r;
    long long v = -1;
    if (ts_http("GET", url, NULL, NULL, 5000, &r) == 0 && r.status == 200) {
        cJSON *j = cJSON_Parse(r.body);
        cJSON *x = cJSON_GetObjectItem(j, name);
        if (cJSON_IsNumber(x))
            v = (long long)x->valuedouble;
        cJSON_Delete(j);
    }
    ts_http_free(&r);
    return v;
}

static int fetch_token(ts_clinic_t *c)
{
    char url[128];
    snprintf(url, sizeof url, "%s/oauth/token", c->url);
    const char *h[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    ts_http_resp_t r;
    int rc = -1;
    if (ts_http("POST", url, h, "grant_type=client_credentials&client_id=therasync&client_secret=dev-secret",
                5000, &r) == 0 && r.status == 200) {
        cJSON *j = cJSON_Parse(r.body);
        cJSON *t = cJSON_GetObjectItem(j, "access_token");
        if (cJSON_IsString(t)) {
            snprintf(c->token, sizeof c->token, "%s", t->valuestring);
            rc = 0;
        }
        cJSON_Delete(j);
    }
    ts_http_free(&r);
    return rc;
}

long ts_clinic_call(ts_clinic_t *c, const char *method, const char *path, const char *body,
                    cJSON **json)
{
    if (json)
        *json = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!c->token[0] && fetch_token(c))
            return 0;
        char url[512], auth[200];
        snprintf(url, sizeof url, "%s%s", c->url, path);
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        const char *h[] = {auth, "Content-Type: application/json", NULL};
        ts_http_resp_t r;
        if (ts_http(method, url, h, body, 10000, &r)) {
            ts_http_free(&r);
            return 0;
        }
        long status = r.status;
        if (status == 401) {
            c->token[0] = '\0';
            ts_http_free(&r);
            continue;
        }
        if (json)
            *json = cJSON_Parse(r.body);
        ts_http_free(&r);
        return status;
    }
    return 401;
}

static char config_path[4300];

static const char *const *synced_args(ts_engine_t *e, ts_clinic_t *c, const char *config_lua,
                                      const char *dir)
{
    static const char *args[8];
    int n = 0;
    args[n++] = "--api";
    args[n++] = c->url;
    args[n++] = "--policies"; /* the suite is about sync, not domain validation */
    args[n++] = ts_source_path("tests/fixtures/policies/permissive");
    if (config_lua) {
        snprintf(config_path, sizeof config_path, "%s/sync-config.lua", dir);
        FILE *f = fopen(config_path, "w");
        if (f) {
            fputs(config_lua, f);
            fclose(f);
            args[n++] = "--config";
            args[n++] = config_path;
        }
    }
    args[n] = NULL;
    (void)e;
    return args;
}

int ts_engine_start_synced(ts_engine_t *e, ts_clinic_t *c, const char *config_lua)
{
    /* the config file lives in the clinic's temp dir (the engine's is made by start) */
    return ts_engine_start(e, synced_args(e, c, config_lua, c->dir));
}

int ts_engine_restart_synced(ts_engine_t *e, ts_clinic_t *c)
{
    static const char *args[5];
    args[0] = "--api";
    args[1] = c->url;
    args[2] = "--policies";
    args[3] = ts_source_path("tests/fixtures/policies/permissive");
    args[4] = NULL;
    return ts_engine_restart(e, args);
}

void *ts_events_open(ts_engine_t *e, const char *topic)
{
    void *s = zmq_socket(e->zctx, ZMQ_SUB);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (!s || zmq_setsockopt(s, ZMQ_SUBSCRIBE, topic, strlen(topic)) || zmq_connect(s, e->events)) {
        if (s)
            zmq_close(s);
        return NULL;
    }
    struct timespec ts = {0, 200 * 1000000}; /* a SUB joins late: let it connect */
    nanosleep(&ts, NULL);
    return s;
}

cJSON *ts_events_wait(void *sub, const char *method, const char *key, const char *value,
                      int timeout_ms)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = timeout_ms - ((now.tv_sec - start.tv_sec) * 1000 +
                                  (now.tv_nsec - start.tv_nsec) / 1000000);
        if (left <= 0)
            return NULL;
        zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, left) <= 0)
            continue;
        char topic[128], payload[65536];
        int more = 0;
        size_t more_len = sizeof more;
        if (zmq_recv(sub, topic, sizeof topic, 0) < 0)
            continue;
        zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &more_len);
        if (!more)
            continue;
        int n = zmq_recv(sub, payload, sizeof payload - 1, 0);
        if (n < 0 || n >= (int)sizeof payload)
            continue;
        payload[n] = '\0';
        cJSON *j = cJSON_Parse(payload);
        cJSON *m = cJSON_GetObjectItem(j, "method");
        cJSON *params = cJSON_GetObjectItem(j, "params");
        if (cJSON_IsString(m) && strcmp(m->valuestring, method) == 0) {
            cJSON *v = key ? cJSON_GetObjectItem(params, key) : NULL;
            if (!key || (cJSON_IsString(v) && strcmp(v->valuestring, value) == 0)) {
                cJSON *out = cJSON_DetachItemFromObject(j, "params");
                cJSON_Delete(j);
                return out;
            }
        }
        cJSON_Delete(j);
    }
}
