/* actor.h — the one shape every actor has.
 *
 * An actor is a thread that owns its state and talks to the rest of the
 * engine only through ZeroMQ sockets. Its parent starts it with
 * ts_actor_new(), which blocks until the actor has set itself up and called
 * ts_actor_ready(); a failed set-up makes ts_actor_new() return NULL. The
 * parent stops it in two steps: ts_actor_stop() sends "$TERM" and waits
 * until the actor has stopped working (its loop ended, it called
 * ts_actor_quiesce()); ts_actor_destroy() then lets it free what is still
 * queued for it, close its sockets and exit, and joins the thread. Stopping
 * every actor before destroying any means no message is ever sent to an
 * actor that has already let go of its inbox (messages are pointers: one
 * sent into a closed inbox would be lost with what it owns).
 *
 * Inside, an actor runs a ts_loop_t: a poll loop over its sockets with one
 * handler per socket, plus repeating timers. Data moves between actors as
 * ts_wire messages: one frame holding a kind and an array of pointers whose
 * ownership passes to the receiver (inproc only, never over the network). */
#ifndef THERASYNC_ACTOR_H
#define THERASYNC_ACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_actor ts_actor_t;
typedef void(ts_actor_fn)(ts_actor_t *self, void *args);

/* Starts fn(self, args) in a new thread and waits for its ready signal.
 * Returns the actor, or NULL when the thread could not start or the actor
 * reported a failed set-up (it has then already exited). */
ts_actor_t *ts_actor_new(void *zctx, const char *name, ts_actor_fn *fn, void *args);
/* Sends "$TERM" and waits until the actor has stopped working; idempotent. */
void ts_actor_stop(ts_actor_t *self);
/* The same, waiting at most timeout_ms (< 0: for ever). Returns 0 once it
 * has stopped working, -1 when it has not yet (call again to wait more; the
 * thread then still runs and must not be destroyed). */
int ts_actor_stop_within(ts_actor_t *self, int timeout_ms);
/* Stops it if need be, lets it clean up and exit, joins the thread;
 * idempotent, clears *self_p. */
void ts_actor_destroy(ts_actor_t **self_p);
/* Sends a control command (a short string) to the actor's pipe. */
int ts_actor_command(ts_actor_t *self, const char *command);

/* For the actor itself. */
void ts_actor_ready(ts_actor_t *self, int status); /* 0 = ready, -1 = failed */
/* Once its loop has ended: tells the parent, then waits for the go-ahead to
 * clean up (after which it drains and frees its inboxes, and returns). */
void ts_actor_quiesce(ts_actor_t *self);
void *ts_actor_pipe(ts_actor_t *self);             /* PAIR: receives commands */
/* One command from the pipe into command (size bytes, NUL-terminated,
 * cut to fit); flags as zmq_recv's (ZMQ_DONTWAIT). Its length, or -1
 * (errno: EAGAIN when none waits, ETERM when the context ends). */
int ts_actor_read_command(void *pipe, int flags, char *command, size_t size);
void *ts_actor_zctx(ts_actor_t *self);
const char *ts_actor_name(ts_actor_t *self);

/* A poll loop. Handlers return 0 to go on, -1 to end the loop. */
typedef struct ts_loop ts_loop_t;
typedef int(ts_loop_fn)(ts_loop_t *loop, void *socket, void *arg);
typedef int(ts_timer_fn)(ts_loop_t *loop, int timer_id, void *arg);

ts_loop_t *ts_loop_new(void);
void ts_loop_destroy(ts_loop_t **self_p);
/* Calls fn whenever socket is readable. Returns 0 or -1 (full). */
int ts_loop_reader(ts_loop_t *self, void *socket, ts_loop_fn *fn, void *arg);
/* Stops or restarts polling a registered socket (e.g. to stop accepting). */
void ts_loop_pause(ts_loop_t *self, void *socket, int paused);
/* Repeating timer every interval_ms; returns its id (> 0) or -1. */
int ts_loop_timer(ts_loop_t *self, int interval_ms, ts_timer_fn *fn, void *arg);
void ts_loop_timer_cancel(ts_loop_t *self, int timer_id);
/* Runs until a handler returns -1. Returns 0, or -1 on a poll error. */
int ts_loop_run(ts_loop_t *self);

/* Handler for an actor's pipe that ends the loop on "$TERM" and ignores
 * anything else; actors with more commands write their own. */
int ts_actor_pipe_term(ts_loop_t *loop, void *pipe, void *arg);

/* A socket between actors (inproc): no high-water mark (the front door's
 * in-flight limit bounds every queue), no linger, and a send that gives up
 * after 100 ms. A live peer never makes a send wait, so only a peer that has
 * already stopped does, at shutdown; without the timeout a PUSH with no peer
 * blocks for ever and the daemon never exits. Binds or connects; NULL on
 * failure (zmq_errno() says why). */
void *ts_inproc_socket(void *zctx, int type, const char *endpoint, bool bind);

/* Pointer messages between actors (inproc only). */
int ts_wire_send(void *socket, uint32_t kind, void *const *ptrs, size_t count);
/* Receives one message without blocking past what is queued (flags as in
 * zmq_recv, e.g. ZMQ_DONTWAIT). The pointers are copied into a malloc'ed
 * array *ptrs that the caller frees. Returns 0, or -1 (errno as zmq). */
int ts_wire_recv(void *socket, int flags, uint32_t *kind, void ***ptrs, size_t *count);

#endif
