/* rpc.c — one request, one reply, never a hang.
 *
 * The engine may be absent: a DEALER queues the request on its connecting
 * pipe, zmq_poll gives up after the timeout, and ZMQ_LINGER 0 lets
 * zmq_ctx_term return at once. */
#include "cli.h"

#include "therasync/front.h"
#include "therasync/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct cli_rpc {
    void *ctx;      /* ZeroMQ context, one per client */
    void *sock;     /* DEALER connected to the front door */
    int timeout_ms; /* budget for each call, send to reply */
    int next_id;    /* JSON-RPC id of the next request */
};

int cli_curve_client(void *sock, const char *key_file, const char *server_key_file)
{
    char pub[41], sec[41], server[41], err[512];
    if (!key_file && !server_key_file)
        return 0;
    if (!key_file || !server_key_file) {
        fprintf(stderr, "therasync: --key and --server-key go together\n");
        return -1;
    }
    int rc = -1;
    if (ts_curve_read_key(key_file, pub, sec, err, sizeof err) ||
        ts_curve_read_key(server_key_file, server, NULL, err, sizeof err))
        fprintf(stderr, "therasync: %s\n", err);
    else if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, 40) ||
             zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
             zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40))
        fprintf(stderr, "therasync: cannot use CURVE keys: %s\n", zmq_strerror(errno));
    else
        rc = 0;
    explicit_bzero(sec, sizeof sec);
    return rc;
}

cli_rpc_t *cli_rpc_new(const char *endpoint, int timeout_ms, const char *key_file,
                       const char *server_key_file)
{
    cli_rpc_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->timeout_ms = timeout_ms;
    self->next_id = 1;
    self->ctx = zmq_ctx_new();
    self->sock = self->ctx ? zmq_socket(self->ctx, ZMQ_DEALER) : NULL;
    int linger = 0;
    if (self->sock && cli_curve_client(self->sock, key_file, server_key_file)) {
        cli_rpc_destroy(&self);
        return NULL;
    }
    if (!self->sock || zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms) ||
        zmq_connect(self->sock, endpoint)) {
        fprintf(stderr, "therasync: cannot connect to %s: %s\n", endpoint, zmq_strerror(errno));
        cli_rpc_destroy(&self);
        return NULL;
    }
    return self;
}

void cli_rpc_destroy(cli_rpc_t **self_p)
{
    cli_rpc_t *self = *self_p;
    if (!self)
        return;
    if (self->sock)
        zmq_close(self->sock);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    free(self);
    *self_p = NULL;
}

/* Receives one message (all frames) and returns its last non-empty frame as
 * a parsed JSON value, or NULL when it is not JSON. */
static cJSON *recv_json(void *sock)
{
    cJSON *json = NULL;
    int more = 1;
    while (more) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            break;
        }
        more = zmq_msg_more(&msg);
        if (zmq_msg_size(&msg) > 0) {
            cJSON_Delete(json);
            json = cJSON_ParseWithLength(zmq_msg_data(&msg), zmq_msg_size(&msg));
        }
        zmq_msg_close(&msg);
    }
    return json;
}

int cli_rpc_call(cli_rpc_t *self, const char *method, const cJSON *params, cJSON **response)
{
    *response = NULL;
    int id = self->next_id++;
    ts_buf_t req = {0};
    char *params_text = params ? cJSON_PrintUnformatted(params) : NULL;
    int rc = ts_buf_printf(&req, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":", id);
    rc = rc ? rc : ts_buf_json_string(&req, method, strlen(method));
    if (!rc && params_text)
        rc = ts_buf_printf(&req, ",\"params\":%s", params_text);
    rc = rc ? rc : ts_buf_puts(&req, "}");
    cJSON_free(params_text);
    if (rc) {
        fprintf(stderr, "therasync: out of memory\n");
        ts_buf_free(&req);
        return CLI_EXIT_ERROR;
    }
    int64_t deadline = ts_mono_us() + (int64_t)self->timeout_ms * 1000;
    int sent = zmq_send(self->sock, req.data, req.len, 0);
    ts_buf_free(&req);
    if (sent < 0)
        return CLI_EXIT_UNREACHABLE;
    for (;;) {
        int64_t left_ms = (deadline - ts_mono_us() + 999) / 1000;
        if (left_ms <= 0)
            return CLI_EXIT_UNREACHABLE;
        zmq_pollitem_t item = {.socket = self->sock, .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, (long)left_ms);
        if (n < 0 && errno == EINTR)
            return CLI_EXIT_UNREACHABLE;
        if (n <= 0)
            continue;
        cJSON *reply = recv_json(self->sock);
        if (!cJSON_IsObject(reply)) {
            /* A batch or garbage: not an answer to our single request. */
            cJSON_Delete(reply);
            fprintf(stderr, "therasync: the engine sent a reply that is not a JSON-RPC response\n");
            return CLI_EXIT_ERROR;
        }
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(reply, "id");
        if (cJSON_IsNumber(rid) && rid->valuedouble != id) {
            cJSON_Delete(reply); /* a late answer to an earlier call */
            continue;
        }
        if (!cJSON_HasObjectItem(reply, "result") && !cJSON_HasObjectItem(reply, "error")) {
            cJSON_Delete(reply);
            fprintf(stderr, "therasync: the engine's reply has neither result nor error\n");
            return CLI_EXIT_ERROR;
        }
        *response = reply;
        return CLI_EXIT_OK;
    }
}

cJSON *cli_rpc_next(cli_rpc_t *self, int timeout_ms)
{
    zmq_pollitem_t item = {.socket = self->sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return NULL;
    return recv_json(self->sock);
}
