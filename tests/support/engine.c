/* engine.c — start a real therasyncd for a test; talk JSON-RPC to it. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

const char *ts_source_path(const char *rel)
{
    static char bufs[8][4200];
    static int next;
    char *b = bufs[next++ % 8];
    const char *root = getenv("TS_SOURCE_DIR");
    snprintf(b, sizeof bufs[0], "%s/%s", root && *root ? root : ".", rel);
    return b;
}

/* Whether the file at path contains needle. */
static int log_says(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return found;
}

static int launch(ts_engine_t *e, const char *const extra[])
{
    const char *args[32];
    int n = 0;
    args[n++] = "--data";
    args[n++] = e->data;
    args[n++] = "--endpoint";
    args[n++] = e->endpoint;
    args[n++] = "--events";
    args[n++] = e->events;
    for (int i = 0; extra && extra[i] && n < 30; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    if (ts_proc_spawn(&e->proc, e->dir, "therasyncd", args))
        return -1;
    char line[512];
    if (ts_proc_wait_line(&e->proc, "ready endpoint=", 20000, line, sizeof line)) {
        ts_proc_stop(&e->proc, 2000);
        return -1;
    }
    return 0;
}

int ts_engine_start(ts_engine_t *e, const char *const extra[])
{
    memset(e, 0, sizeof *e);
    e->dir = ts_tmpdir("ts-engine");
    if (!e->dir)
        return -1;
    snprintf(e->data, sizeof e->data, "%s/data", e->dir);
    e->zctx = zmq_ctx_new();
    /* A port that was free a moment ago can be taken by a test running in
     * parallel before the daemon binds it: then try other ports. */
    for (int attempt = 0;; attempt++) {
        if (attempt == 8)
            return -1;
        snprintf(e->endpoint, sizeof e->endpoint, "tcp://127.0.0.1:%d", ts_free_port());
        snprintf(e->events, sizeof e->events, "tcp://127.0.0.1:%d", ts_free_port());
        if (strcmp(e->endpoint, e->events) == 0)
            continue;
        if (launch(e, extra) == 0)
            break;
        if (!log_says(e->proc.log_path, "cannot bind"))
            return -1;
    }
    e->dealer = ts_engine_client(e);
    return e->dealer ? 0 : -1;
}

int ts_engine_restart(ts_engine_t *e, const char *const extra[])
{
    return launch(e, extra);
}

int ts_engine_stop(ts_engine_t *e)
{
    return ts_proc_stop(&e->proc, 15000);
}

void ts_engine_kill(ts_engine_t *e)
{
    ts_proc_kill(&e->proc);
}

void ts_engine_destroy(ts_engine_t *e)
{
    if (e->proc.pid)
        ts_proc_stop(&e->proc, 5000);
    if (e->dealer)
        zmq_close(e->dealer);
    if (e->zctx)
        zmq_ctx_term(e->zctx);
    if (e->dir) {
        ts_rmtree(e->dir);
        free(e->dir);
    }
    memset(e, 0, sizeof *e);
}

void *ts_engine_client(ts_engine_t *e)
{
    void *s = zmq_socket(e->zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(s, e->endpoint)) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

char *ts_rpc_raw(void *dealer, const void *payload, size_t len, int timeout_ms)
{
    if (zmq_send(dealer, payload, len, 0) < 0)
        return NULL;
    zmq_pollitem_t item = {.socket = dealer, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return NULL;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, dealer, 0) < 0)
        return NULL;
    size_t n = zmq_msg_size(&msg);
    char *out = malloc(n + 1);
    memcpy(out, zmq_msg_data(&msg), n);
    out[n] = '\0';
    zmq_msg_close(&msg);
    return out;
}

cJSON *ts_rpc(ts_engine_t *e, const char *method, const char *params_json)
{
    size_t cap = 256 + (params_json ? strlen(params_json) : 0);
    char *req = malloc(cap);
    snprintf(req, cap, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"%s%s}", ++e->next_id,
             method, params_json ? ",\"params\":" : "", params_json ? params_json : "");
    char *reply = ts_rpc_raw(e->dealer, req, strlen(req), 10000);
    free(req);
    cJSON *parsed = reply ? cJSON_Parse(reply) : NULL;
    free(reply);
    return parsed;
}

cJSON *ts_rpc_result(cJSON *response)
{
    return cJSON_GetObjectItemCaseSensitive(response, "result");
}

int ts_rpc_error_code(cJSON *response)
{
    cJSON *code = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(response, "error"), "code");
    return cJSON_IsNumber(code) ? code->valueint : 0;
}

const char *ts_rpc_error_reason(cJSON *response)
{
    cJSON *error = cJSON_GetObjectItemCaseSensitive(response, "error");
    cJSON *reason = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(error, "data"), "reason");
    return cJSON_IsString(reason) ? reason->valuestring : "";
}

cJSON *ts_query_all(ts_engine_t *e, const char *params_json, int limit, int max_pages,
                    int *pages)
{
    cJSON *all = cJSON_CreateArray(), *call = cJSON_Parse(params_json);
    cJSON_AddNumberToObject(call, "limit", limit);
    int n = 0;
    for (; n < max_pages; n++) {
        char *text = cJSON_PrintUnformatted(call);
        cJSON *r = ts_rpc(e, "query", text);
        free(text);
        cJSON *items = cJSON_DetachItemFromObjectCaseSensitive(ts_rpc_result(r), "items");
        cJSON *next = cJSON_GetObjectItemCaseSensitive(ts_rpc_result(r), "cursor");
        if (!cJSON_IsArray(items) || !(cJSON_IsNull(next) || cJSON_IsString(next))) {
            cJSON_Delete(items);
            cJSON_Delete(r);
            break;
        }
        while (cJSON_GetArraySize(items))
            cJSON_AddItemToArray(all, cJSON_DetachItemFromArray(items, 0));
        cJSON_Delete(items);
        cJSON_DeleteItemFromObjectCaseSensitive(call, "cursor");
        if (cJSON_IsNull(next)) {
            cJSON_Delete(r);
            cJSON_Delete(call);
            if (pages)
                *pages = n + 1;
            return all;
        }
        cJSON_AddStringToObject(call, "cursor", next->valuestring);
        cJSON_Delete(r);
    }
    cJSON_Delete(call);
    cJSON_Delete(all);
    return NULL;
}
