/* therasync-canned — a front door with nothing behind it.
 *
 * A ZeroMQ ROUTER that answers every JSON-RPC request at once with the same
 * result, read from a file: {"jsonrpc":"2.0","id":<the request's>,"result":
 * <FILE>}. Run therasync-bench against it (--endpoint) to measure what the
 * transport and the client alone can do on this machine, the ceiling any
 * engine behind the same front door stays under (bench/README.md). It reads
 * only each request's top-level "id"; notifications (no id) get no answer. */
#include "therasync/json.h"
#include "therasync/util.h"

#include <cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_RESULT_BYTES (16 << 20)
#define POLL_MS 100 /* how soon a stop signal is seen */

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void usage(FILE *to)
{
    fputs("usage: therasync-canned --endpoint ZMQ --result FILE\n"
          "  Answers every JSON-RPC request on ZMQ (a ROUTER, e.g. tcp://127.0.0.1:7499)\n"
          "  with the JSON in FILE as its result, without looking at the request\n"
          "  beyond its id: the ceiling of the transport and of the client.\n",
          to);
}

/* The file's JSON, checked and compacted. */
static char *read_result(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "therasync-canned: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    ts_buf_t text = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && text.len <= MAX_RESULT_BYTES)
        if (ts_buf_append(&text, chunk, n)) {
            ts_buf_free(&text);
            break;
        }
    fclose(f);
    cJSON *json = text.data && text.len <= MAX_RESULT_BYTES
                      ? cJSON_ParseWithLength(text.data, text.len)
                      : NULL;
    ts_buf_free(&text);
    char *out = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!out)
        fprintf(stderr, "therasync-canned: %s is not JSON (of at most %d bytes)\n", path,
                MAX_RESULT_BYTES);
    return out;
}

/* Receives one queued request (routing id, optional empty delimiter,
 * payload) and sends the canned answer. Returns 1 when it took one, 0 when
 * none was queued (or a signal came), -1 when the socket is done. */
static int answer_one(void *router, const char *result, ts_buf_t *reply)
{
    zmq_msg_t frames[3];
    int n = 0;
    bool more = true, too_many = false;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, router, n ? 0 : ZMQ_DONTWAIT) < 0) {
            int err = errno;
            zmq_msg_close(&part);
            if (err == EINTR && n)
                continue; /* the rest of a message already begun */
            for (int i = 0; i < n; i++)
                zmq_msg_close(&frames[i]);
            return err == EAGAIN || err == EINTR ? 0 : -1;
        }
        more = zmq_msg_more(&part);
        if (n < 3) {
            zmq_msg_init(&frames[n]);
            zmq_msg_move(&frames[n++], &part);
        } else {
            too_many = true; /* not a request: dropped, as the front door does */
        }
        zmq_msg_close(&part);
    }
    zmq_msg_t *payload = &frames[n - 1];
    const char *id;
    size_t id_len;
    if (!too_many && n >= 2 &&
        ts_json_text_field(zmq_msg_data(payload), zmq_msg_size(payload), "id", 2, &id, &id_len)) {
        ts_buf_reset(reply);
        int rc = ts_buf_puts(reply, "{\"jsonrpc\":\"2.0\",\"id\":");
        rc |= ts_buf_append(reply, id, id_len);
        rc |= ts_buf_puts(reply, ",\"result\":");
        rc |= ts_buf_puts(reply, result);
        rc |= ts_buf_puts(reply, "}");
        if (rc == 0 && zmq_msg_send(&frames[0], router, ZMQ_SNDMORE) >= 0 &&
            (n == 2 || zmq_send(router, "", 0, ZMQ_SNDMORE) >= 0))
            zmq_send(router, reply->data, reply->len, 0);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    return 1;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL, *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc) {
            endpoint = argv[++i];
        } else if (strcmp(argv[i], "--result") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!endpoint || !path) {
        usage(stderr);
        return 2;
    }
    char *result = read_result(path);
    if (!result)
        return 1;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    void *zctx = zmq_ctx_new();
    void *router = zmq_socket(zctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(router, endpoint) != 0) {
        fprintf(stderr, "therasync-canned: cannot bind %s: %s\n", endpoint, zmq_strerror(errno));
        zmq_close(router);
        zmq_ctx_term(zctx);
        free(result);
        return 1;
    }
    fprintf(stderr, "therasync-canned: ready on %s\n", endpoint);
    ts_buf_t reply = {0};
    int rc = 0;
    while (!stopping && rc == 0) {
        zmq_pollitem_t item = {.socket = router, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, POLL_MS) <= 0)
            continue;
        /* What is queued (bounded), then look at the stop flag again. */
        int took = 1;
        for (int k = 0; took == 1 && k < 4096; k++)
            took = answer_one(router, result, &reply);
        rc = took < 0 ? -1 : 0;
    }
    ts_buf_free(&reply);
    zmq_close(router);
    zmq_ctx_term(zctx);
    free(result);
    return 0;
}
