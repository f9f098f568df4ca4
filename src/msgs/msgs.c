/* msgs.c — receiving, naming and freeing the messages of msgs.def. */
#include "msgs/msgs.h"

#include "therasync/log.h"

#include <stdlib.h>
#include <zmq.h>

typedef void(free_fn_t)(void *);

#define TS_MSG(name, from, to, type, free_fn, doc)                                               \
    static void free_##name(void *p)                                                             \
    {                                                                                            \
        if (p)                                                                                   \
            free_fn((type *)p);                                                                  \
    }
#include "msgs/msgs.def"
#undef TS_MSG

static free_fn_t *const frees[] = {
#define TS_MSG(name, from, to, type, free_fn, doc) [TS_MSG_##name - TS_MSG__NONE] = free_##name,
#include "msgs/msgs.def"
#undef TS_MSG
};

const ts_msg_row_t ts_msg_rows[] = {
#define TS_MSG(name, from, to, type, free_fn, doc) {#name, from, to, #type, doc},
#include "msgs/msgs.def"
#undef TS_MSG
};
const size_t ts_msg_nrows = sizeof ts_msg_rows / sizeof *ts_msg_rows;

static bool known(uint32_t kind)
{
    return kind > TS_MSG__NONE && kind < TS_MSG__END;
}

const char *ts_msg_name(uint32_t kind)
{
    return known(kind) ? ts_msg_rows[kind - TS_MSG__NONE - 1].name : "?";
}

int ts_msg_send(void *socket, ts_msg_kind_t kind, void *const *ptrs, size_t n)
{
    return known(kind) ? ts_wire_send(socket, kind, ptrs, n) : -1;
}

int ts_msg_recv(void *socket, int flags, ts_msg_t *m)
{
    uint32_t kind;
    if (ts_wire_recv(socket, flags, &kind, &m->ptrs, &m->count))
        return -1;
    m->kind = (ts_msg_kind_t)kind;
    return 0;
}

void ts_msg_release(ts_msg_t *m)
{
    free(m->ptrs);
    m->ptrs = NULL;
    m->count = 0;
}

void ts_msg_free_one(uint32_t kind, void *p)
{
    if (known(kind))
        frees[kind - TS_MSG__NONE](p);
}

void ts_msg_free(ts_msg_t *m)
{
    free_fn_t *fn = known(m->kind) ? frees[m->kind - TS_MSG__NONE] : NULL;
    for (size_t i = 0; fn && i < m->count; i++) /* unknown: its pointers leak, logged */
        fn(m->ptrs[i]);
    ts_msg_release(m);
}

void ts_msg_unexpected(const char *actor, ts_msg_t *m)
{
    ts_warn(actor, "unexpected message %s (kind %#x, %zu pointers): dropped", ts_msg_name(m->kind),
            (unsigned)m->kind, m->count);
    ts_msg_free(m);
}

void ts_msg_drain(void *socket)
{
    ts_msg_t m;
    while (socket && ts_msg_recv(socket, ZMQ_DONTWAIT, &m) == 0)
        ts_msg_free(&m);
}
