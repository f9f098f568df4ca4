/* msgs.h — the messages between actors, made from msgs.def.
 *
 * Every message has a kind TS_MSG_<NAME>, a typed send and a typed view:
 *
 *   ts_send_COMMIT(socket, envelopes, n);          // ts_envelope_t *const *
 *   ts_msg_t m;
 *   if (ts_msg_recv(socket, ZMQ_DONTWAIT, &m) == 0) {
 *       ts_envelope_t **envs = ts_msg_COMMIT(&m);  // NULL: another kind
 *       ...
 *       ts_msg_release(&m);   // the pointers were taken: free the array
 *   }
 *
 * A receiver handles the kinds it expects and gives any other to
 * ts_msg_unexpected(), which logs it and frees what it owns; ts_msg_drain()
 * frees everything still queued on a socket at exit. No caller builds a raw
 * message or casts a void **. */
#ifndef THERASYNC_MSGS_H
#define THERASYNC_MSGS_H

#include "therasync/actor.h"
#include "therasync/api.h"
#include "msgs/cache.h"
#include "msgs/call.h"
#include "therasync/sync.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TS_MSG__NONE = 0x54530000, /* no message is 0: a zeroed kind is never valid */
#define TS_MSG(name, from, to, type, free_fn, doc) TS_MSG_##name,
#include "msgs/msgs.def"
#undef TS_MSG
    TS_MSG__END
} ts_msg_kind_t;

typedef struct {
    ts_msg_kind_t kind;
    void **ptrs; /* owned; each pointer too, until taken */
    size_t count;
} ts_msg_t;

/* Sends n pointers of a kind the caller holds in a variable (a queue of
 * answers of several kinds); the typed ts_send_NAME is for everything else.
 * 0, or -1 with nothing sent (the pointers are still the caller's). */
int ts_msg_send(void *socket, ts_msg_kind_t kind, void *const *ptrs, size_t n);
/* Receives one message (flags as zmq_recv). 0, or -1 (errno as zmq). */
int ts_msg_recv(void *socket, int flags, ts_msg_t *m);
/* Frees the pointer array only: the receiver took the pointers. */
void ts_msg_release(ts_msg_t *m);
/* Frees every pointer (by the table's FREE) and the array. */
void ts_msg_free(ts_msg_t *m);
/* Logs that actor got a kind it does not handle, and frees the message. */
void ts_msg_unexpected(const char *actor, ts_msg_t *m);
/* Frees everything queued on socket (at exit, after the loop has ended). */
void ts_msg_drain(void *socket);
/* Frees one pointer of a message of kind (for a receiver that takes some
 * of a message's pointers and not others). */
void ts_msg_free_one(uint32_t kind, void *p);
/* The kind's name ("COMMIT"), or "?" */
const char *ts_msg_name(uint32_t kind);

/* The FREE of a kind without payload (it has no pointers to free). */
static inline void ts_msg_nothing(const void *p)
{
    (void)p;
}

/* One row of the table, for the docs and their test. */
typedef struct {
    const char *name, *from, *to, *payload, *doc;
} ts_msg_row_t;
extern const ts_msg_row_t ts_msg_rows[];
extern const size_t ts_msg_nrows;

/* The typed send and view of each kind. A kind without payload (void) is
 * sent with (socket, NULL, 0). */
#define TS_MSG(name, from, to, type, free_fn, doc)                                               \
    static inline int ts_send_##name(void *socket, type *const *items, size_t n)                 \
    {                                                                                            \
        return ts_wire_send(socket, TS_MSG_##name, (void *const *)items, n);                     \
    }                                                                                            \
    static inline type **ts_msg_##name(const ts_msg_t *m)                                        \
    {                                                                                            \
        return m->kind == TS_MSG_##name ? (type **)m->ptrs : NULL;                               \
    }
#include "msgs/msgs.def"
#undef TS_MSG

#endif
