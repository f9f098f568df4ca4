/* call.c — pipeline units: calls, envelopes, records, events. */
#include "msgs/call.h"
#include "therasync/sync.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static const ts_method_info_t methods[TS_M__LAST] = {
#define TS_METHOD(id, name, owner, flags, role, doc)                                          \
    [TS_M_##id] = {name, TS_OWNER_##owner, flags, TS_ROLE_##role, doc},
#include "msgs/methods.def"
#undef TS_METHOD
    [TS_M_NONE] = {"(none)", TS_OWNER_FRONT, 0, TS_ROLE_READ,
                   "no valid method: answered with an error"},
};

const ts_method_info_t *ts_method_info(ts_method_t method)
{
    return &methods[method < TS_M__LAST ? method : TS_M_NONE];
}

const char *ts_method_name(ts_method_t method)
{
    return ts_method_info(method)->name;
}

bool ts_method_is(ts_method_t method, unsigned flags)
{
    return (ts_method_info(method)->flags & flags) == flags;
}

ts_method_t ts_method_lookup(const char *name)
{
    for (int m = 0; m < TS_M_NONE; m++)
        if (strcmp(name, methods[m].name) == 0)
            return (ts_method_t)m;
    return TS_M_NONE;
}

static const char *const role_names[] = {"none", "read", "write", "admin"};

const char *ts_role_name(ts_role_t role)
{
    return role <= TS_ROLE_ADMIN ? role_names[role] : "none";
}

ts_role_t ts_role_lookup(const char *name, size_t len)
{
    for (int r = TS_ROLE_READ; r <= TS_ROLE_ADMIN; r++)
        if (ts_name_is(role_names[r], name, len))
            return (ts_role_t)r;
    return TS_ROLE_NONE;
}

const char *ts_error_reason(int code)
{
    switch (code) {
    case TS_E_NOT_FOUND: return "not_found";
    case TS_E_VALIDATION: return "validation_failed";
    case TS_E_CONFLICT: return "conflict";
    case TS_E_POLICY: return "policy_error";
    case TS_E_BUSY: return "busy";
    case TS_E_UNAUTHORIZED: return "unauthorized";
    case TS_E_TOO_LARGE: return "too_large";
    case TS_E_UNKNOWN_COLLECTION: return "unknown_collection";
    case TS_E_UNAVAILABLE: return "unavailable";
    default: return NULL;
    }
}

/* Lays a record out at mem: header, then collection, id and body strings. */
static size_t record_size(const char *collection, size_t id_len, const char *body,
                          size_t body_len)
{
    return sizeof(ts_record_t) + strlen(collection) + 1 + id_len + 1 + (body ? body_len + 1 : 0);
}

static ts_record_t *record_init(void *mem, ts_record_kind_t kind, const char *collection,
                                const char *doc_id, size_t id_len, const char *body,
                                size_t body_len)
{
    size_t clen = strlen(collection) + 1, ilen = id_len + 1;
    ts_record_t *r = mem;
    memset(r, 0, sizeof *r);
    r->kind = kind;
    memcpy(r->data, collection, clen);
    memcpy(r->data + clen, doc_id, id_len);
    r->data[clen + id_len] = '\0';
    r->collection = r->data;
    r->doc_id = r->data + clen;
    if (body) {
        char *b = r->data + clen + ilen;
        memcpy(b, body, body_len);
        b[body_len] = '\0';
        r->body = b;
        r->body_len = body_len;
    }
    return r;
}

ts_chunk_t *ts_chunk_new(size_t bytes)
{
    ts_chunk_t *chunk = ts_xmalloc(sizeof *chunk + bytes);
    memset(chunk, 0, sizeof *chunk);
    chunk->cap = bytes;
    return chunk;
}

ts_record_t *ts_chunk_add(ts_chunk_t *chunk, ts_record_kind_t kind, const char *collection,
                          const char *doc_id, const char *body, size_t body_len)
{
    size_t id_len = strlen(doc_id);
    size_t size = (record_size(collection, id_len, body, body_len) + 15) & ~(size_t)15;
    if (chunk->used + size > chunk->cap)
        return NULL;
    ts_record_t *r =
        record_init(chunk->mem + chunk->used, kind, collection, doc_id, id_len, body, body_len);
    chunk->used += size;
    chunk->count++;
    if (chunk->tail)
        chunk->tail->next = r;
    else
        chunk->head = r;
    chunk->tail = r;
    return r;
}

ts_record_t *ts_record_new(ts_record_kind_t kind, const char *collection, const char *doc_id,
                           size_t doc_id_len, const char *body, size_t body_len)
{
    void *mem = ts_xmalloc(record_size(collection, doc_id_len, body, body_len));
    return record_init(mem, kind, collection, doc_id, doc_id_len, body, body_len);
}

void ts_record_free_list(ts_record_t *head)
{
    while (head) {
        ts_record_t *next = head->next;
        free(head);
        head = next;
    }
}

ts_event_t *ts_event_new(const char *topic, const char *payload, size_t payload_len)
{
    size_t tlen = strlen(topic);
    ts_event_t *e = ts_xmalloc(sizeof *e + tlen + payload_len);
    e->next = NULL;
    e->topic_len = tlen;
    e->payload_len = payload_len;
    e->after = 0;
    e->held_us = 0;
    e->mark = 0;
    memcpy(e->data, topic, tlen);
    memcpy(e->data + tlen, payload, payload_len);
    return e;
}

void ts_event_free_list(ts_event_t *head)
{
    while (head) {
        ts_event_t *next = head->next;
        free(head);
        head = next;
    }
}

ts_envelope_t *ts_envelope_new(size_t ncalls)
{
    ts_envelope_t *e = ts_xcalloc(1, sizeof *e + ncalls * sizeof(ts_call_t));
    e->ncalls = ncalls;
    return e;
}

void ts_envelope_free(ts_envelope_t *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->ncalls; i++) {
        ts_call_t *c = &e->calls[i];
        free(c->id_json);
        cJSON_Delete(c->params);
        free(c->doc_id);
        free(c->body);
        free(c->err_message);
        cJSON_Delete(c->err_data);
        free(c->result);
        cJSON_Delete(c->partial);
        ts_record_free_list(c->records);
        ts_event_free_list(c->events);
    }
    free(e->route);
    free(e->reply);
    free(e);
}

void ts_call_fail(ts_call_t *call, int code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    free(call->err_message);
    call->err_code = code;
    call->err_message = ts_xstrdup(message);
    free(call->result);
    call->result = NULL;
}

void ts_call_set_result(ts_call_t *call, char *result, size_t len)
{
    free(call->result);
    call->result = result;
    call->result_len = len;
}

void ts_call_set_buffer(ts_call_t *call, ts_buf_t *buf)
{
    size_t len;
    char *text = ts_buf_take(buf, &len);
    if (text)
        ts_call_set_result(call, text, len);
    else
        ts_call_fail(call, TS_E_INTERNAL, "out of memory");
}


bool ts_call_cacheable_query(const ts_call_t *call)
{
    return call->method == TS_M_QUERY &&
           cJSON_IsString(cJSON_GetObjectItemCaseSensitive(call->params, "selector")) &&
           !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(call->params, "cache"));
}
