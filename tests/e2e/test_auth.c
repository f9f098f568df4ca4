/* test_auth.c — client keys on a real therasyncd (docs/FRONT_DOOR.md,
 * Authentication): ZeroMQ CURVE on the front door and the event socket, the
 * clients file and its reload, each role's methods, the audit naming the
 * key, events without documents, and the CLI's keygen, --key and
 * --server-key. */
#include "../support/engine.h"
#include "../support/run.h"
#include "therasync/config.h"
#include "therasync/json.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

typedef struct {
    char pub[41], sec[41];
} pair_t;

static ts_engine_t engine;
static char *dir;
static pair_t server, admin, writer, reader, bob, carol, stranger;
static char clients_path[4200], config_path[4200];

static const char *in_dir(const char *name)
{
    static char bufs[4][4200];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static void write_file(const char *path, const char *text)
{
    cr_assert_eq(ts_file_write(path, text, strlen(text)), 0, "cannot write %s", path);
}

/* The clients file: admin, writer and reader, and bob and carol when asked. */
static void write_clients(bool with_bob, bool with_carol)
{
    char text[1024];
    snprintf(text, sizeof text,
             "# name role public-key\n"
             "admin admin %s\n"
             "writer  write %s\n"
             "\n"
             "reader read %s\n"
             "%s%s%s"
             "%s%s%s",
             admin.pub, writer.pub, reader.pub, with_bob ? "bob write " : "",
             with_bob ? bob.pub : "", with_bob ? "\n" : "", with_carol ? "carol read " : "",
             with_carol ? carol.pub : "", with_carol ? "\n" : "");
    write_file(clients_path, text);
}

static void start_with(const char *more_security)
{
    dir = ts_tmpdir("ts-auth");
    cr_assert_not_null(dir);
    pair_t *pairs[] = {&server, &admin, &writer, &reader, &bob, &carol, &stranger};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        cr_assert_eq(zmq_curve_keypair(pairs[i]->pub, pairs[i]->sec), 0);
    char text[10000];
    snprintf(text, sizeof text, "# the daemon's\npublic %s\nsecret %s\n", server.pub, server.sec);
    write_file(in_dir("server.key"), text);
    snprintf(text, sizeof text, "public %s\n", server.pub);
    write_file(in_dir("server.pub"), text);
    snprintf(clients_path, sizeof clients_path, "%s", in_dir("clients"));
    write_clients(true, false);
    snprintf(config_path, sizeof config_path, "%s", in_dir("therasync.lua"));
    snprintf(text, sizeof text,
             "security = { curve_secret_file = \"%s\", clients_file = \"%s\"%s }\n",
             in_dir("server.key"), clients_path, more_security);
    write_file(config_path, text);
    const char *args[] = {"--config", config_path, "--policies",
                          ts_source_path("tests/fixtures/policies/permissive"), NULL};
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd with keys did not start");
}

static void start(void)
{
    start_with("");
}

/* Every socket a test opens, closed at its end even when it failed (an
 * open one would keep zmq_ctx_term waiting). */
static void *sockets[128];

static void *track(void *s)
{
    for (size_t i = 0; i < sizeof sockets / sizeof *sockets; i++)
        if (!sockets[i])
            return sockets[i] = s;
    cr_assert_fail("more than 128 sockets");
    return s;
}

static void close_socket(void *s)
{
    for (size_t i = 0; i < sizeof sockets / sizeof *sockets; i++)
        if (sockets[i] == s)
            sockets[i] = NULL;
    zmq_close(s);
}

static void stop(void)
{
    for (size_t i = 0; i < sizeof sockets / sizeof *sockets; i++)
        if (sockets[i])
            close_socket(sockets[i]);
    ts_engine_destroy(&engine);
    if (dir) {
        ts_rmtree(dir);
        free(dir);
        dir = NULL;
    }
}

/* A socket of type to endpoint, a CURVE client with key (NULL: none); with
 * mon, *mon gets a PAIR that receives its handshake events. */
static void *client_mon(int type, const char *endpoint, const pair_t *key, void **mon)
{
    static int monitors;
    void *s = track(zmq_socket(engine.zctx, type));
    int zero = 0, second = 1000;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    /* a refused handshake leaves a DEALER no pipe: its send would block */
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &second, sizeof second);
    if (key) {
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server.pub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, key->pub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, key->sec, 40);
    }
    if (mon) {
        char ep[64];
        snprintf(ep, sizeof ep, "inproc://auth-monitor-%d", ++monitors);
        cr_assert_eq(zmq_socket_monitor(s, ep,
                                        ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL),
                     0);
        *mon = track(zmq_socket(engine.zctx, ZMQ_PAIR));
        zmq_setsockopt(*mon, ZMQ_LINGER, &zero, sizeof zero);
        cr_assert_eq(zmq_connect(*mon, ep), 0);
    }
    cr_assert_eq(zmq_connect(s, endpoint), 0);
    return s;
}

static void *client(int type, const char *endpoint, const pair_t *key)
{
    return client_mon(type, endpoint, key, NULL);
}

/* The first handshake event of a monitor within timeout_ms, or 0; *value
 * gets its value (the ZAP status code for FAILED_AUTH). */
static int first_event(void *mon, int timeout_ms, uint32_t *value)
{
    zmq_pollitem_t item = {.socket = mon, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return 0;
    uint8_t frame[6];
    int n = zmq_recv(mon, frame, sizeof frame, 0);
    char ep[256];
    zmq_recv(mon, ep, sizeof ep, 0); /* the endpoint frame */
    if (n != 6)
        return 0;
    uint16_t event;
    memcpy(&event, frame, 2);
    memcpy(value, frame + 2, 4);
    return event;
}

/* One call on s; the parsed response, or NULL without an answer in
 * timeout_ms. */
static cJSON *call_within(void *s, const char *method, const char *params, int timeout_ms)
{
    static int id;
    char req[4096];
    snprintf(req, sizeof req, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"%s%s}", ++id, method,
             params ? ",\"params\":" : "", params ? params : "");
    char *reply = ts_rpc_raw(s, req, strlen(req), timeout_ms);
    cJSON *r = reply ? cJSON_Parse(reply) : NULL;
    free(reply);
    return r;
}

static cJSON *call(void *s, const char *method, const char *params)
{
    cJSON *r = call_within(s, method, params, 10000);
    cr_assert_not_null(r, "no answer to %s", method);
    return r;
}

/* Calls method and asserts it is answered with a result. */
static void allowed(void *s, const char *who, const char *method, const char *params)
{
    cJSON *r = call(s, method, params);
    char *text = cJSON_PrintUnformatted(r);
    cr_assert_not_null(ts_rpc_result(r), "%s may call %s: %s", who, method, text);
    free(text);
    cJSON_Delete(r);
}

/* Calls method and asserts -32006 naming the role it needs. */
static void refused(void *s, const char *who, const char *method, const char *params,
                    const char *role)
{
    cJSON *r = call(s, method, params);
    char *text = cJSON_PrintUnformatted(r);
    cr_assert_eq(ts_rpc_error_code(r), -32006, "%s may not call %s: %s", who, method, text);
    cr_assert_str_eq(ts_rpc_error_reason(r), "unauthorized");
    cJSON *data = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "data");
    cr_assert_str_eq(ts_json_string(data, "role_needed"), role, "%s", text);
    cr_assert(strstr(ts_json_string(cJSON_GetObjectItem(r, "error"), "message"), role), "%s",
              text);
    free(text);
    cJSON_Delete(r);
}

/* Whether the daemon's log holds needle. */
static bool log_has(const char *needle)
{
    FILE *f = fopen(engine.proc.log_path, "r");
    char line[2048];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return found;
}

TestSuite(auth, .init = start, .fini = stop, .timeout = 60);

/* A client without a key fails the handshake, one with a key not in the
 * clients file is refused by the ZAP handler (status 400): neither gets an
 * answer, while a listed key does on the same daemon. */
Test(auth, a_client_without_a_listed_key_gets_nothing)
{
    void *adm = client(ZMQ_DEALER, engine.endpoint, &admin);
    allowed(adm, "admin", "ping", NULL);
    void *mon;
    uint32_t value = 0;
    void *nokey = client_mon(ZMQ_DEALER, engine.endpoint, NULL, &mon);
    int ev = first_event(mon, 5000, &value);
    cr_assert(ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL,
              "a client without a key: handshake event %d", ev);
    cr_assert_null(call_within(nokey, "ping", NULL, 1000), "answered without a key");
    close_socket(mon);
    close_socket(nokey);

    void *unknown = client_mon(ZMQ_DEALER, engine.endpoint, &stranger, &mon);
    ev = first_event(mon, 5000, &value);
    cr_assert_eq(ev, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, "an unknown key: handshake event %d", ev);
    cr_assert_eq(value, 400);
    cr_assert_null(call_within(unknown, "ping", NULL, 1000), "answered an unknown key");
    cr_assert(log_has("refused a connection with a key not in the clients file"));
    cr_assert(log_has(stranger.pub), "the log names the public key refused");
    close_socket(mon);
    close_socket(unknown);
    close_socket(adm);
}

/* read: reads only; write: also writes, not the admin's methods; admin:
 * everything. A refused call of a batch does not refuse the others. */
Test(auth, each_role_calls_only_its_methods)
{
    void *rd = client(ZMQ_DEALER, engine.endpoint, &reader);
    void *wr = client(ZMQ_DEALER, engine.endpoint, &writer);
    void *adm = client(ZMQ_DEALER, engine.endpoint, &admin);
    allowed(rd, "reader", "status", NULL);
    allowed(rd, "reader", "query", "{\"collection\":\"sessions\",\"selector\":{}}");
    allowed(rd, "reader", "audit", NULL);
    refused(rd, "reader", "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"r1\"}}",
            "write");
    refused(rd, "reader", "delete", "{\"collection\":\"sessions\",\"id\":\"w1\"}", "write");
    refused(rd, "reader", "cancel", "{\"mutation\":\"m\"}", "write");
    refused(rd, "reader", "metrics", NULL, "admin");

    allowed(wr, "writer", "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"w1\"}}");
    allowed(wr, "writer", "update", "{\"collection\":\"sessions\",\"id\":\"w1\",\"patch\":{\"a\":1}}");
    allowed(wr, "writer", "get", "{\"collection\":\"sessions\",\"id\":\"w1\"}");
    refused(wr, "writer", "policy.reload", NULL, "admin");
    refused(wr, "writer", "metrics", NULL, "admin");
    refused(wr, "writer", "policy.info", NULL, "admin");

    /* a batch: the get is answered, the delete refused */
    const char *batch = "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get\",\"params\":"
                        "{\"collection\":\"sessions\",\"id\":\"w1\"}},"
                        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"delete\",\"params\":"
                        "{\"collection\":\"sessions\",\"id\":\"w1\"}}]";
    char *reply = ts_rpc_raw(rd, batch, strlen(batch), 10000);
    cJSON *answers = cJSON_Parse(reply);
    cr_assert_eq(cJSON_GetArraySize(answers), 2, "%s", reply);
    cr_assert_not_null(ts_rpc_result(cJSON_GetArrayItem(answers, 0)), "%s", reply);
    cr_assert_eq(ts_rpc_error_code(cJSON_GetArrayItem(answers, 1)), -32006, "%s", reply);
    cJSON_Delete(answers);
    free(reply);
    allowed(rd, "reader", "get", "{\"collection\":\"sessions\",\"id\":\"w1\"}"); /* not deleted */

    const char *admin_calls[][2] = {
        {"create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"a1\"}}"},
        {"update", "{\"collection\":\"sessions\",\"id\":\"a1\",\"patch\":{\"b\":2}}"},
        {"get", "{\"collection\":\"sessions\",\"id\":\"a1\"}"},
        {"query", "{\"collection\":\"sessions\",\"selector\":{}}"},
        {"delete", "{\"collection\":\"sessions\",\"id\":\"a1\"}"},
        {"status", NULL},
        {"policy.reload", NULL},
        {"policy.info", NULL},
        {"metrics", NULL},
        {"audit", NULL},
        {"ping", NULL},
    };
    for (size_t i = 0; i < sizeof admin_calls / sizeof *admin_calls; i++)
        allowed(adm, "admin", admin_calls[i][0], admin_calls[i][1]);
    close_socket(rd);
    close_socket(wr);
    close_socket(adm);
}

/* The audit's client is the key's name; a write key's audit holds its own
 * writes only (whatever client it asks for), the admin's everyone's. */
Test(auth, the_audit_names_the_key_and_shows_others_only_to_admin)
{
    void *rd = client(ZMQ_DEALER, engine.endpoint, &reader);
    void *wr = client(ZMQ_DEALER, engine.endpoint, &writer);
    void *adm = client(ZMQ_DEALER, engine.endpoint, &admin);
    allowed(wr, "writer", "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"w1\"}}");
    allowed(adm, "admin", "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"a1\"}}");
    allowed(wr, "writer", "update", "{\"collection\":\"sessions\",\"id\":\"w1\",\"patch\":{\"x\":1}}");

    struct {
        void *s;
        const char *params;
        int writer_rows, admin_rows;
    } cases[] = {
        {adm, NULL, 2, 1},
        {adm, "{\"client\":\"key:admin\"}", 0, 1}, /* an admin may filter */
        {wr, NULL, 2, 0},
        {wr, "{\"client\":\"key:admin\"}", 2, 0}, /* a writer may not look at others */
        {rd, NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cJSON *r = call(cases[i].s, "audit", cases[i].params);
        cJSON *entries = cJSON_GetObjectItem(ts_rpc_result(r), "entries"), *e;
        char *text = cJSON_PrintUnformatted(r);
        cr_assert(cJSON_IsArray(entries), "%s", text);
        int writer_rows = 0, admin_rows = 0;
        cJSON_ArrayForEach(e, entries)
        {
            const char *who = ts_json_string(e, "client");
            cr_assert_not_null(who, "every line here is a local write's: %s", text);
            writer_rows += strcmp(who, "key:writer") == 0;
            admin_rows += strcmp(who, "key:admin") == 0;
        }
        cr_assert_eq(writer_rows, cases[i].writer_rows, "case %zu: %s", i, text);
        cr_assert_eq(admin_rows, cases[i].admin_rows, "case %zu: %s", i, text);
        cr_assert_eq(cJSON_GetArraySize(entries), writer_rows + admin_rows, "%s", text);
        free(text);
        cJSON_Delete(r);
    }
    close_socket(rd);
    close_socket(wr);
    close_socket(adm);
}

/* A key taken out of the clients file is refused once the list is
 * reloaded (policy.reload): per message on the connection it has, at the
 * handshake on a new one. SIGHUP reloads it too; a clients file that does
 * not parse leaves the old list in force. */
Test(auth, a_revoked_key_is_refused_after_reload)
{
    void *adm = client(ZMQ_DEALER, engine.endpoint, &admin);
    void *b = client(ZMQ_DEALER, engine.endpoint, &bob);
    allowed(b, "bob", "create", "{\"collection\":\"sessions\",\"doc\":{\"id\":\"b1\"}}");

    write_clients(false, false);
    allowed(adm, "admin", "policy.reload", NULL);
    cJSON *r = call(b, "get", "{\"collection\":\"sessions\",\"id\":\"b1\"}");
    cr_assert_eq(ts_rpc_error_code(r), -32006);
    cr_assert(strstr(ts_json_string(cJSON_GetObjectItem(r, "error"), "message"),
                     "'bob' is no longer allowed"));
    cJSON_Delete(r);

    /* the name bob given to another key: the old key's connection stays
     * refused, the new key is bob */
    write_clients(false, false);
    FILE *f = fopen(clients_path, "a");
    fprintf(f, "bob write %s\n", stranger.pub);
    fclose(f);
    allowed(adm, "admin", "policy.reload", NULL);
    r = call(b, "get", "{\"collection\":\"sessions\",\"id\":\"b1\"}");
    cr_assert_eq(ts_rpc_error_code(r), -32006, "the old bob key was let in by name");
    cJSON_Delete(r);
    void *newbob = client(ZMQ_DEALER, engine.endpoint, &stranger);
    allowed(newbob, "the new bob", "get", "{\"collection\":\"sessions\",\"id\":\"b1\"}");
    close_socket(newbob);
    write_clients(false, false);
    allowed(adm, "admin", "policy.reload", NULL);
    close_socket(b);
    void *mon;
    uint32_t value = 0;
    b = client_mon(ZMQ_DEALER, engine.endpoint, &bob, &mon);
    cr_assert_eq(first_event(mon, 5000, &value), ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    cr_assert_null(call_within(b, "ping", NULL, 1000), "a revoked key was answered");
    close_socket(mon);
    close_socket(b);

    /* carol is added, and the daemon told by SIGHUP */
    write_clients(false, true);
    cr_assert_eq(kill(engine.proc.pid, SIGHUP), 0);
    cJSON *pong = NULL;
    for (int i = 0; i < 20 && !pong; i++) { /* the reload is asynchronous */
        void *c = client(ZMQ_DEALER, engine.endpoint, &carol);
        pong = call_within(c, "ping", NULL, 500);
        close_socket(c);
    }
    cr_assert_not_null(ts_rpc_result(pong), "carol, added by SIGHUP, was not let in");
    cJSON_Delete(pong);

    /* a broken file: the old list stays (carol still in) */
    write_file(clients_path, "carol reader NOT-A-KEY\n");
    allowed(adm, "admin", "policy.reload", NULL);
    cr_assert(log_has("client keys not reloaded, the old list stays"));
    void *c = client(ZMQ_DEALER, engine.endpoint, &carol);
    allowed(c, "carol", "ping", NULL);
    close_socket(c);
    close_socket(adm);
}

/* Reads one event from sub within timeout_ms: its payload, or NULL. */
static cJSON *next_event(void *sub, int timeout_ms, char **text)
{
    zmq_pollitem_t item = {.socket = sub, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return NULL;
    char topic[128], payload[65536];
    zmq_recv(sub, topic, sizeof topic, 0);
    int n = zmq_recv(sub, payload, sizeof payload - 1, 0);
    cr_assert(n > 0 && n < (int)sizeof payload);
    payload[n] = '\0';
    *text = strdup(payload);
    return cJSON_Parse(payload);
}

/* Writes documents until sub has an event of one of them (a subscription
 * takes a moment to reach the daemon); returns that event. */
static cJSON *event_of_a_write(void *adm, void *sub, char **text)
{
    cJSON *ev = NULL;
    for (int i = 0; i < 30 && !ev; i++) {
        char params[256];
        snprintf(params, sizeof params,
                 "{\"collection\":\"sessions\",\"doc\":{\"id\":\"e%d\",\"note\":\"SECRET-NOTE\"}}",
                 i);
        allowed(adm, "admin", "create", params);
        ev = next_event(sub, 300, text);
    }
    cr_assert_not_null(ev, "no event reached a subscriber with a key");
    return ev;
}

/* On the event socket only keys of the clients file get events, and with
 * keys configured the events carry no documents. */
Test(auth, events_go_only_to_keys_and_without_documents)
{
    void *adm = client(ZMQ_DEALER, engine.endpoint, &admin);
    void *nokey = client(ZMQ_SUB, engine.events, NULL);
    void *unknown = client(ZMQ_SUB, engine.events, &stranger);
    void *sub = client(ZMQ_SUB, engine.events, &reader);
    void *subs[] = {nokey, unknown, sub};
    for (int i = 0; i < 2; i++) /* everything */
        zmq_setsockopt(subs[i], ZMQ_SUBSCRIBE, "", 0);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "doc.", 4);
    char *text = NULL;
    cJSON *ev = event_of_a_write(adm, sub, &text);
    cJSON *params = cJSON_GetObjectItem(ev, "params");
    cr_assert_str_eq(ts_json_string(ev, "method"), "doc.changed", "%s", text);
    cr_assert_null(cJSON_GetObjectItem(params, "doc"), "%s", text);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(params, "doc_omitted")), "%s", text);
    cr_assert_null(strstr(text, "SECRET-NOTE"), "%s", text);
    cr_assert_not_null(ts_json_string(params, "id"), "%s", text);
    free(text);
    cJSON_Delete(ev);
    for (int i = 0; i < 2; i++) {
        text = NULL;
        cr_assert_null(next_event(subs[i], 500, &text), "a subscriber without a listed key "
                                                        "got an event: %s", text);
    }
    for (int i = 0; i < 3; i++)
        close_socket(subs[i]);
    close_socket(adm);
}

static void start_with_bodies(void)
{
    start_with(", event_bodies = true");
}

/* security.event_bodies = true keeps the documents in events. */
Test(auth, event_bodies_true_keeps_the_documents, .init = start_with_bodies)
{
    void *adm = client(ZMQ_DEALER, engine.endpoint, &admin);
    void *sub = client(ZMQ_SUB, engine.events, &reader);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "doc.", 4);
    char *text = NULL;
    cJSON *ev = event_of_a_write(adm, sub, &text);
    cJSON *doc = cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "params"), "doc");
    cr_assert_str_eq(ts_json_string(doc, "note"), "SECRET-NOTE", "%s", text);
    free(text);
    cJSON_Delete(ev);
    close_socket(sub);
    close_socket(adm);
}

/* With client keys an endpoint other hosts can reach starts without
 * --insecure; the key files are still needed in pairs. (The daemon stops
 * at its data dir, before anything binds.) */
Test(auth, an_endpoint_beyond_this_host_needs_no_insecure_with_keys)
{
    ts_buf_t err = {0};
    const char *any[] = {"--config", config_path, "--data", "/nonexistent/ts-never",
                         "--endpoint", "tcp://0.0.0.0:7999", "--events", "tcp://0.0.0.0:7998",
                         NULL};
    int rc = ts_run("therasyncd", any, NULL, 10000, NULL, &err);
    cr_assert(rc != 2 && rc != 0, "exit %d: %s", rc, err.data);
    cr_assert_null(strstr(err.data, "--insecure"), "%s", err.data);
    cr_assert(strstr(err.data, "data dir"), "%s", err.data);
    ts_buf_free(&err);

    ts_config_t c;
    char msg[1024];
    const char *argv[] = {"therasyncd", "--config", config_path, "--endpoint",
                          "tcp://0.0.0.0:7999", NULL};
    ts_config_init(&c);
    cr_assert_eq(ts_config_parse_args(&c, 5, (char **)argv, msg, sizeof msg), 0, "%s", msg);
    cr_assert(ts_config_curve(&c));
    ts_config_free(&c);

    /* without keys: refused, as before */
    ts_config_init(&c);
    cr_assert_eq(ts_config_parse_args(&c, 3, (char *[]){"therasyncd", "--endpoint",
                                                        "tcp://0.0.0.0:7999", NULL},
                                      msg, sizeof msg),
                 -1);
    ts_config_free(&c);

    /* one key file without the other */
    write_file(in_dir("half.lua"), "security = { clients_file = \"/x\" }\n");
    ts_config_init(&c);
    cr_assert_eq(ts_config_load(&c, in_dir("half.lua"), msg, sizeof msg), -1);
    cr_assert(strstr(msg, "both"), "%s", msg);
    ts_config_free(&c);
}

/* therasync keygen writes a key pair (0600, never over an old one) and the
 * clients file's line; the CLI connects with it through --key and
 * --server-key or their environment variables, and gets nothing without. */
Test(auth, keygen_makes_keys_the_cli_connects_with)
{
    ts_buf_t out = {0}, err = {0};
    const char *gen[] = {"keygen", in_dir("carl"), NULL};
    cr_assert_eq(ts_run("therasync", gen, NULL, 10000, &out, &err), 0, "%s", err.data);
    struct stat st;
    cr_assert_eq(stat(in_dir("carl.key"), &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(stat(in_dir("carl.pub"), &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    char name[64], role[16], pub[64];
    cr_assert_eq(sscanf(out.data, "%63s %15s %63s", name, role, pub), 3, "%s", out.data);
    cr_assert_str_eq(name, "carl");
    cr_assert_eq(strlen(pub), 40);
    cr_assert_eq(ts_run("therasync", gen, NULL, 10000, NULL, NULL), 1, "keygen overwrote a key");

    /* carl gets the write role */
    write_clients(true, false);
    FILE *f = fopen(clients_path, "a");
    fprintf(f, "carl write %s\n", pub);
    fclose(f);
    void *adm = client(ZMQ_DEALER, engine.endpoint, &admin);
    allowed(adm, "admin", "policy.reload", NULL);
    close_socket(adm);

    ts_buf_reset(&out);
    ts_buf_reset(&err);
    const char *create[] = {"--endpoint", engine.endpoint, "--key", in_dir("carl.key"),
                            "--server-key", in_dir("server.pub"), "create", "sessions",
                            "{\"id\":\"k1\"}", NULL};
    cr_assert_eq(ts_run("therasync", create, NULL, 10000, &out, &err), 0, "%s", err.data);
    setenv("THERASYNC_KEY", in_dir("carl.key"), 1);
    setenv("THERASYNC_SERVER_KEY", in_dir("server.key"), 1); /* a key pair holds the public key */
    ts_buf_reset(&out);
    const char *audit[] = {"--endpoint", engine.endpoint, "--json", "audit", NULL};
    int rc = ts_run("therasync", audit, NULL, 10000, &out, &err);
    unsetenv("THERASYNC_KEY");
    unsetenv("THERASYNC_SERVER_KEY");
    cr_assert_eq(rc, 0, "%s", err.data);
    cr_assert(strstr(out.data, "key:carl"), "%s", out.data);
    const char *nokey[] = {"--endpoint", engine.endpoint, "--timeout", "1000", "ping", NULL};
    cr_assert_eq(ts_run("therasync", nokey, NULL, 10000, NULL, NULL), 3);
    const char *half[] = {"--endpoint", engine.endpoint, "--key", in_dir("carl.key"), "ping",
                          NULL};
    cr_assert_eq(ts_run("therasync", half, NULL, 10000, NULL, NULL), 2);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

/* A clients file that does not parse stops the start, naming its line; a
 * secret key others can read is warned about. */
Test(auth, a_bad_clients_file_stops_the_start)
{
    write_file(in_dir("bad-clients"), "admin admin NOT-A-KEY\n");
    char text[10000], endpoint[64], events[64];
    snprintf(text, sizeof text,
             "security = { curve_secret_file = \"%s\", clients_file = \"%s\" }\n",
             in_dir("server.key"), in_dir("bad-clients"));
    write_file(in_dir("bad.lua"), text);
    chmod(in_dir("server.key"), 0644);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", ts_free_port());
    snprintf(events, sizeof events, "tcp://127.0.0.1:%d", ts_free_port());
    const char *args[] = {"--config", in_dir("bad.lua"), "--data", in_dir("data2"),
                          "--endpoint", endpoint, "--events", events, NULL};
    ts_buf_t err = {0};
    int rc = ts_run("therasyncd", args, NULL, 20000, NULL, &err);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, err.data);
    cr_assert(strstr(err.data, "bad-clients:1: the public key is 40 characters of Z85"), "%s",
              err.data);
    cr_assert(strstr(err.data, "can be read by other users"), "%s", err.data);
    cr_assert_null(strstr(err.data, "ready endpoint="), "%s", err.data);
    ts_buf_free(&err);
}

/* Whether s receives a message holding needle within timeout_ms (other
 * messages are skipped). */
static bool receives(void *s, const char *needle, int timeout_ms)
{
    int64_t deadline = ts_mono_us() + (int64_t)timeout_ms * 1000;
    for (int64_t left; (left = (deadline - ts_mono_us()) / 1000) > 0;) {
        zmq_pollitem_t item = {.socket = s, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, (long)left) <= 0)
            return false;
        char buf[65536];
        int n = zmq_recv(s, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = '\0';
            if (strstr(buf, needle))
                return true;
        }
    }
    return false;
}

/* A live query made with a key taken out ends at the reload: its
 * connection gets no more query.changed, while an admin's live query goes
 * on. */
Test(auth, a_revoked_keys_live_queries_end_at_reload)
{
    void *rd = client(ZMQ_DEALER, engine.endpoint, &reader);
    void *adm = client(ZMQ_DEALER, engine.endpoint, &admin);
    void *wr = client(ZMQ_DEALER, engine.endpoint, &writer);
    const char *sub = "{\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":"
                      "{\"therapist_id\":\"t1\",\"now\":\"2026-01-01T00:00:00Z\"}}";
    allowed(rd, "reader", "subscribe", sub);
    allowed(adm, "admin", "subscribe", sub);
    const char *doc = "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"therapist_id\":\"t1\","
                      "\"status\":\"scheduled\",\"scheduled_at\":\"2026-06-01T10:00:00Z\"}}";
    char params[512];
    snprintf(params, sizeof params, doc, "live1");
    allowed(wr, "writer", "create", params);
    cr_assert(receives(rd, "live1", 5000), "the reader's live query works before");
    cr_assert(receives(adm, "live1", 5000));

    char text[1024];
    snprintf(text, sizeof text, "admin admin %s\nwriter write %s\n", admin.pub, writer.pub);
    write_file(clients_path, text);
    allowed(adm, "admin", "policy.reload", NULL);
    snprintf(params, sizeof params, doc, "live2");
    allowed(wr, "writer", "create", params);
    cr_assert(receives(adm, "live2", 5000), "the admin's live query goes on");
    cr_assert(!receives(rd, "live2", 1500), "a revoked key's live query went on");
    cr_assert(log_has("live queries of 1 connections with keys taken out ended"));
}
