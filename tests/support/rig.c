/* rig.c — one actor alone, with the test playing its neighbours (rig.h). */
#include "rig.h"

#include "engine.h"
#include "proc.h"
#include "therasync/json.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static void set_text(char **field, const char *value)
{
    free(*field);
    *field = value ? strdup(value) : NULL;
}

void ts_rig_init_dir(ts_rig_t *r, char *dir)
{
    memset(r, 0, sizeof *r);
    ts_log_set_level(TS_LOG_WARN);
    r->zctx = zmq_ctx_new();
    cr_assert(r->zctx, "a ZeroMQ context");
    ts_config_init(&r->config);
    set_text(&r->config.policies_dir, ts_source_path("tests/fixtures/policies/permissive"));
    r->dir = dir;
    if (dir) {
        char data[4200];
        snprintf(data, sizeof data, "%s/data", dir);
        set_text(&r->config.data_dir, data);
    }
    r->next_call = 1;
}

void ts_rig_init(ts_rig_t *r, bool temp_dir)
{
    char *dir = NULL;
    if (temp_dir) {
        dir = ts_tmpdir("ts-rig");
        cr_assert(dir, "a temp dir");
    }
    ts_rig_init_dir(r, dir);
}

void ts_rig_set_api(ts_rig_t *r, const char *url)
{
    set_text(&r->config.api_url, url);
}

static void *add_socket(ts_rig_t *r, int type, const char *endpoint, bool bind)
{
    cr_assert(r->nsockets < TS_RIG_MAX_SOCKETS, "at most %d rig sockets", TS_RIG_MAX_SOCKETS);
    void *s = ts_inproc_socket(r->zctx, type, endpoint, bind);
    cr_assert(s, "%s %s: %s", bind ? "bind" : "connect", endpoint, zmq_strerror(zmq_errno()));
    r->pull[r->nsockets] = type == ZMQ_PULL;
    r->sockets[r->nsockets++] = s;
    return s;
}

void *ts_rig_bind(ts_rig_t *r, const char *endpoint)
{
    return add_socket(r, ZMQ_PULL, endpoint, true);
}

void *ts_rig_connect(ts_rig_t *r, const char *endpoint)
{
    return add_socket(r, ZMQ_PUSH, endpoint, false);
}

/* ---- starting the actor ---- */

static void *starter(void *arg)
{
    ts_rig_t *r = arg;
    r->started = r->start_fn(r->zctx, &r->config);
    __atomic_store_n(&r->start_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

void ts_rig_start_async(ts_rig_t *r, ts_rig_start_fn *start)
{
    cr_assert(!r->starting && !r->actor, "one actor per rig");
    r->start_fn = start;
    r->start_done = 0;
    cr_assert_eq(pthread_create(&r->starter, NULL, starter, r), 0, "a starter thread");
    r->starting = true;
}

ts_actor_t *ts_rig_start_wait(ts_rig_t *r, int timeout_ms)
{
    cr_assert(r->starting, "ts_rig_start_async first");
    int64_t end = ts_mono_us() + (int64_t)timeout_ms * 1000;
    while (!__atomic_load_n(&r->start_done, __ATOMIC_ACQUIRE)) {
        cr_assert(ts_mono_us() < end, "the actor did not start within %d ms", timeout_ms);
        usleep(1000);
    }
    pthread_join(r->starter, NULL); /* a full barrier: the actor's pipe is ours from here */
    r->starting = false;
    r->actor = r->started;
    return r->actor;
}

ts_actor_t *ts_rig_start(ts_rig_t *r, ts_rig_start_fn *start)
{
    cr_assert(!r->actor, "one actor per rig");
    r->actor = start(r->zctx, &r->config);
    return r->actor;
}

/* ---- receiving ---- */

bool ts_rig_poll(void *socket, int timeout_ms, ts_msg_t *m)
{
    int64_t end = ts_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        if (ts_msg_recv(socket, ZMQ_DONTWAIT, m) == 0)
            return true;
        int64_t left_us = end - ts_mono_us();
        if (left_us <= 0)
            return false;
        zmq_pollitem_t item = {.socket = socket, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, (long)((left_us + 999) / 1000)) < 0 && zmq_errno() != EINTR)
            return false;
    }
}

void ts_rig_recv(void *socket, ts_msg_kind_t kind, int timeout_ms, ts_msg_t *m)
{
    if (!ts_rig_poll(socket, timeout_ms, m))
        cr_assert_fail("no %s within %d ms", ts_msg_name(kind), timeout_ms);
    if (m->kind != kind) {
        const char *got = ts_msg_name(m->kind);
        ts_msg_free(m);
        cr_assert_fail("expected %s, got %s", ts_msg_name(kind), got);
    }
}

void ts_rig_recv_skip(void *socket, ts_msg_kind_t kind, int timeout_ms, ts_msg_t *m)
{
    int64_t end = ts_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int64_t left_ms = (end - ts_mono_us()) / 1000;
        if (left_ms <= 0 || !ts_rig_poll(socket, (int)left_ms, m))
            cr_assert_fail("no %s within %d ms", ts_msg_name(kind), timeout_ms);
        if (m->kind == kind)
            return;
        ts_msg_free(m);
    }
}

void ts_rig_quiet(void *socket, int ms, const char *what)
{
    ts_msg_t m;
    if (ts_rig_poll(socket, ms, &m)) {
        const char *got = ts_msg_name(m.kind);
        ts_msg_free(&m);
        cr_assert_fail("%s: expected nothing for %d ms, got %s", what, ms, got);
    }
}

/* ---- envelopes and calls ---- */

ts_envelope_t *ts_rig_envelope(ts_rig_t *r, size_t ncalls, const char *client)
{
    ts_envelope_t *e = ts_envelope_new(ncalls);
    cr_assert(e);
    ts_copy_text(e->client, sizeof e->client, client ? client : "rig");
    e->client_seq = r->next_call;
    e->received_us = ts_mono_us();
    return e;
}

/* What the front door sets on every call: the method, an id, params, and
 * the collection pointing into the config (as checked there). */
static void base_call(ts_rig_t *r, ts_call_t *call, ts_method_t method, const char *collection,
                      cJSON *params)
{
    call->method = method;
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)r->next_call++);
    call->id_json = strdup(id);
    call->params = params;
    if (collection) {
        int index = ts_config_collection(&r->config, collection);
        cr_assert(index >= 0, "collection %s is configured", collection);
        call->collection = r->config.collections[index];
        if (params && !cJSON_GetObjectItemCaseSensitive(params, "collection"))
            cJSON_AddStringToObject(params, "collection", collection);
    }
}

/* call->body: obj without its ids and the server's fields, printed. */
static void set_body(ts_call_t *call, cJSON *obj)
{
    ts_json_strip_server_fields(obj);
    while (cJSON_GetObjectItemCaseSensitive(obj, "id"))
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "id");
    ts_buf_t b = {0};
    cr_assert_eq(ts_buf_json(&b, obj), 0);
    call->body = ts_buf_take(&b, &call->body_len);
}

static cJSON *parse(const char *json)
{
    cJSON *j = cJSON_Parse(json);
    cr_assert(j, "the rig's own JSON parses: %s", json);
    return j;
}

void ts_rig_create(ts_rig_t *r, ts_call_t *call, const char *collection, const char *doc_json)
{
    cJSON *params = cJSON_CreateObject();
    cJSON *doc = parse(doc_json);
    cJSON_AddItemToObject(params, "doc", doc);
    base_call(r, call, TS_M_CREATE, collection, params);
    const char *id = ts_json_string(doc, "id");
    if (id)
        call->doc_id = strdup(id);
    cJSON *copy = cJSON_Duplicate(doc, true);
    set_body(call, copy);
    cJSON_Delete(copy);
}

void ts_rig_update(ts_rig_t *r, ts_call_t *call, const char *collection, const char *id,
                   const char *patch_json, long long base_version)
{
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "id", id);
    cJSON *patch = parse(patch_json);
    cJSON_AddItemToObject(params, "patch", patch);
    if (base_version >= 0) {
        cJSON_AddNumberToObject(params, "base_version", (double)base_version);
        call->has_base_version = true;
        call->base_version = base_version;
    }
    base_call(r, call, TS_M_UPDATE, collection, params);
    call->doc_id = strdup(id);
    cJSON *copy = cJSON_Duplicate(patch, true);
    set_body(call, copy);
    cJSON_Delete(copy);
}

static void id_call(ts_rig_t *r, ts_call_t *call, ts_method_t method, const char *collection,
                    const char *id)
{
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "id", id);
    base_call(r, call, method, collection, params);
    call->doc_id = strdup(id);
}

void ts_rig_delete(ts_rig_t *r, ts_call_t *call, const char *collection, const char *id)
{
    id_call(r, call, TS_M_DELETE, collection, id);
}

void ts_rig_get(ts_rig_t *r, ts_call_t *call, const char *collection, const char *id)
{
    id_call(r, call, TS_M_GET, collection, id);
}

void ts_rig_method(ts_rig_t *r, ts_call_t *call, const char *method, const char *params_json)
{
    ts_method_t m = ts_method_lookup(method);
    cr_assert(m != TS_M_NONE, "method %s exists", method);
    cJSON *params = params_json ? parse(params_json) : NULL;
    const char *coll = ts_json_string(params, "collection");
    base_call(r, call, m, ts_method_is(m, TS_MF_COLLECTION) ? coll : NULL, params);
}

ts_envelope_t *ts_rig_one(ts_rig_t *r, ts_method_t method, const char *collection,
                          const char *id_or_doc, const char *patch_or_params)
{
    ts_envelope_t *e = ts_rig_envelope(r, 1, NULL);
    ts_call_t *call = &e->calls[0];
    switch (method) {
    case TS_M_CREATE: ts_rig_create(r, call, collection, id_or_doc); break;
    case TS_M_UPDATE: ts_rig_update(r, call, collection, id_or_doc, patch_or_params, -1); break;
    case TS_M_DELETE: ts_rig_delete(r, call, collection, id_or_doc); break;
    case TS_M_GET: ts_rig_get(r, call, collection, id_or_doc); break;
    default: ts_rig_method(r, call, ts_method_name(method), patch_or_params); break;
    }
    return e;
}

cJSON *ts_rig_result(const ts_call_t *call)
{
    cr_assert_eq(call->err_code, 0, "%s failed: %d %s", ts_method_name(call->method),
                 call->err_code, call->err_message ? call->err_message : "");
    cr_assert(call->result, "%s has a result", ts_method_name(call->method));
    cJSON *j = cJSON_ParseWithLength(call->result, call->result_len);
    cr_assert(j, "the result is JSON: %.*s", (int)call->result_len, call->result);
    return j;
}

/* ---- records ---- */

ts_record_t *ts_rig_mutation(const char *collection, const char *doc_id, ts_op_t op, int64_t seq,
                             int64_t version, const char *body, char id_out[37])
{
    const char *b = op == TS_OP_DELETE ? NULL : body ? body : "{}";
    ts_record_t *r = ts_record_new(TS_REC_MUTATION, collection, doc_id, strlen(doc_id), b,
                                   b ? strlen(b) : 0);
    cr_assert(r);
    r->op = op;
    r->seq = seq;
    r->version = version;
    r->at_ms = ts_wall_ms();
    ts_uuidv7(r->mutation);
    ts_copy_text(r->client, sizeof r->client, "rig");
    if (id_out)
        memcpy(id_out, r->mutation, 37);
    return r;
}

ts_record_t *ts_rig_drop(const char *collection, const char *doc_id, int64_t seq,
                         const char *mutation, const char *event)
{
    ts_record_t *r = ts_record_new(TS_REC_DROP, collection, doc_id, strlen(doc_id), NULL, 0);
    cr_assert(r);
    r->seq = seq;
    ts_copy_text(r->mutation, sizeof r->mutation, mutation);
    if (event) {
        ts_copy_text(r->event, sizeof r->event, event);
        r->at_ms = ts_wall_ms();
    }
    return r;
}

void ts_rig_append(ts_record_t **list, ts_record_t *r)
{
    while (*list)
        list = &(*list)->next;
    *list = r;
}

size_t ts_rig_records(const ts_record_t *list, ts_record_kind_t kind, const ts_record_t **out,
                      size_t max)
{
    size_t n = 0;
    for (const ts_record_t *r = list; r; r = r->next)
        if (r->kind == kind && n < max)
            out[n++] = r;
    return n;
}

/* ---- the end ---- */

char *ts_rig_down_keep(ts_rig_t *r, bool keep_dir)
{
    if (r->starting)
        ts_rig_start_wait(r, 10000);
    /* The actor stops working first, so nothing more arrives; then what it
     * sent and nobody read is freed; then it frees its own and exits. */
    if (r->actor)
        cr_assert_eq(ts_actor_stop_within(r->actor, 10000), 0, "the actor stops within 10 s");
    for (size_t i = 0; i < r->nsockets; i++)
        if (r->pull[i])
            ts_msg_drain(r->sockets[i]);
    ts_actor_destroy(&r->actor);
    for (size_t i = 0; i < r->nsockets; i++)
        zmq_close(r->sockets[i]);
    r->nsockets = 0;
    zmq_ctx_term(r->zctx);
    r->zctx = NULL;
    ts_config_free(&r->config);
    char *dir = r->dir;
    r->dir = NULL;
    if (dir && !keep_dir) {
        ts_rmtree(dir);
        free(dir);
        dir = NULL;
    }
    return dir;
}

void ts_rig_down(ts_rig_t *r)
{
    ts_rig_down_keep(r, false);
}
