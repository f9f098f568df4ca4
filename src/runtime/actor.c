/* actor.c — threads with a PAIR control pipe, a poll loop, pointer messages. */
#include "therasync/actor.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct ts_actor {
    void *zctx;
    char name[32];
    void *parent_pipe; /* parent's end */
    void *child_pipe;  /* actor's end */
    ts_actor_fn *fn;
    void *args;
    pthread_t thread;
    int ready_sent;
    int quiet_sent; /* the actor told its parent it has stopped working */
    int term_sent;  /* the parent asked it to stop */
    int stopped;    /* the parent has seen that */
};

static void send_quiet(ts_actor_t *self)
{
    int quiet = 1;
    self->quiet_sent = 1;
    zmq_send(self->child_pipe, &quiet, sizeof quiet, 0);
}

static void *actor_thread(void *arg)
{
    ts_actor_t *self = arg;
    char thread_name[16];
    snprintf(thread_name, sizeof thread_name, "ts-%.12s", self->name);
    pthread_setname_np(pthread_self(), thread_name); /* shows in top -H, perf, gdb */
    self->fn(self, self->args);
    if (!self->ready_sent) /* the actor returned without a word: count it as failed */
        ts_actor_ready(self, -1);
    else if (!self->quiet_sent) /* a parent in ts_actor_stop() must not wait for ever */
        send_quiet(self);
    return NULL;
}

ts_actor_t *ts_actor_new(void *zctx, const char *name, ts_actor_fn *fn, void *args)
{
    static int counter;
    ts_actor_t *self = ts_xcalloc(1, sizeof *self);
    self->zctx = zctx;
    snprintf(self->name, sizeof self->name, "%s", name);
    self->fn = fn;
    self->args = args;
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://actor-pipe-%s-%d", name,
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
    self->parent_pipe = zmq_socket(zctx, ZMQ_PAIR);
    self->child_pipe = zmq_socket(zctx, ZMQ_PAIR);
    int zero = 0;
    if (!self->parent_pipe || !self->child_pipe)
        goto fail;
    zmq_setsockopt(self->parent_pipe, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(self->child_pipe, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(self->parent_pipe, endpoint) || zmq_connect(self->child_pipe, endpoint))
        goto fail;
    if (pthread_create(&self->thread, NULL, actor_thread, self))
        goto fail;
    int status = -1;
    if (zmq_recv(self->parent_pipe, &status, sizeof status, 0) != sizeof status || status != 0) {
        pthread_join(self->thread, NULL);
        goto fail;
    }
    return self;
fail:
    if (self->parent_pipe)
        zmq_close(self->parent_pipe);
    if (self->child_pipe)
        zmq_close(self->child_pipe);
    free(self);
    return NULL;
}

void ts_actor_ready(ts_actor_t *self, int status)
{
    self->ready_sent = 1;
    zmq_send(self->child_pipe, &status, sizeof status, 0);
}

int ts_actor_command(ts_actor_t *self, const char *command)
{
    return zmq_send(self->parent_pipe, command, strlen(command), 0) < 0 ? -1 : 0;
}

void ts_actor_quiesce(ts_actor_t *self)
{
    send_quiet(self);
    char command[16];
    for (;;) {
        int n = zmq_recv(self->child_pipe, command, sizeof command, 0);
        if (n < 0 && errno == EINTR)
            continue; /* a signal (the policy watchdog's) is not a command */
        if (n < 0 || (n == 6 && memcmp(command, "$CLOSE", 6) == 0))
            return;
    }
}

int ts_actor_stop_within(ts_actor_t *self, int timeout_ms)
{
    if (!self || self->stopped)
        return 0;
    if (!self->term_sent) {
        ts_actor_command(self, "$TERM");
        self->term_sent = 1;
    }
    int64_t end = ts_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000;
    zmq_pollitem_t item = {.socket = self->parent_pipe, .events = ZMQ_POLLIN};
    for (;;) {
        long left = -1;
        if (timeout_ms >= 0) {
            int64_t us = end - ts_mono_us();
            left = us > 0 ? (long)((us + 999) / 1000) : 0;
        }
        int n = zmq_poll(&item, 1, left);
        int quiet;
        if (n > 0 && zmq_recv(self->parent_pipe, &quiet, sizeof quiet, ZMQ_DONTWAIT) >= 0)
            break;
        if (n < 0 && errno != EINTR)
            break; /* the context is going away: nothing left to wait for */
        if (left == 0)
            return -1;
    }
    self->stopped = 1;
    return 0;
}

void ts_actor_stop(ts_actor_t *self)
{
    ts_actor_stop_within(self, -1);
}

void ts_actor_destroy(ts_actor_t **self_p)
{
    ts_actor_t *self = *self_p;
    if (!self)
        return;
    ts_actor_stop(self);
    ts_actor_command(self, "$CLOSE");
    pthread_join(self->thread, NULL);
    zmq_close(self->parent_pipe);
    zmq_close(self->child_pipe);
    free(self);
    *self_p = NULL;
}

void *ts_actor_pipe(ts_actor_t *self)
{
    return self->child_pipe;
}

void *ts_actor_zctx(ts_actor_t *self)
{
    return self->zctx;
}

const char *ts_actor_name(ts_actor_t *self)
{
    return self->name;
}

int ts_actor_read_command(void *pipe, int flags, char *command, size_t size)
{
    int n = zmq_recv(pipe, command, size - 1, flags);
    if (n < 0)
        return -1;
    if ((size_t)n > size - 1)
        n = (int)(size - 1);
    command[n] = '\0';
    return n;
}

int ts_actor_pipe_term(ts_loop_t *loop, void *pipe, void *arg)
{
    (void)loop, (void)arg;
    char command[64];
    if (ts_actor_read_command(pipe, 0, command, sizeof command) < 0)
        return 0;
    return strcmp(command, "$TERM") == 0 ? -1 : 0;
}

/* ---- loop ---- */

#define LOOP_MAX_READERS 16
#define LOOP_MAX_TIMERS 16

typedef struct {
    int id;
    int interval_ms;
    int64_t due_us;
    ts_timer_fn *fn;
    void *arg;
} loop_timer_t;

struct ts_loop {
    zmq_pollitem_t items[LOOP_MAX_READERS];
    ts_loop_fn *fns[LOOP_MAX_READERS];
    void *args[LOOP_MAX_READERS];
    int paused[LOOP_MAX_READERS];
    int nreaders;
    loop_timer_t timers[LOOP_MAX_TIMERS];
    int ntimers;
    int next_timer_id;
};

ts_loop_t *ts_loop_new(void)
{
    return ts_xcalloc(1, sizeof(ts_loop_t));
}

void ts_loop_destroy(ts_loop_t **self_p)
{
    free(*self_p);
    *self_p = NULL;
}

int ts_loop_reader(ts_loop_t *self, void *socket, ts_loop_fn *fn, void *arg)
{
    if (self->nreaders == LOOP_MAX_READERS)
        return -1;
    int i = self->nreaders++;
    self->items[i] = (zmq_pollitem_t){.socket = socket, .events = ZMQ_POLLIN};
    self->fns[i] = fn;
    self->args[i] = arg;
    return 0;
}

void ts_loop_pause(ts_loop_t *self, void *socket, int paused)
{
    for (int i = 0; i < self->nreaders; i++)
        if (self->items[i].socket == socket)
            self->paused[i] = paused;
}

int ts_loop_timer(ts_loop_t *self, int interval_ms, ts_timer_fn *fn, void *arg)
{
    if (self->ntimers == LOOP_MAX_TIMERS || interval_ms <= 0)
        return -1;
    loop_timer_t *t = &self->timers[self->ntimers++];
    *t = (loop_timer_t){++self->next_timer_id, interval_ms, ts_mono_us() + interval_ms * 1000LL,
                        fn, arg};
    return t->id;
}

void ts_loop_timer_cancel(ts_loop_t *self, int timer_id)
{
    for (int i = 0; i < self->ntimers; i++) {
        if (self->timers[i].id == timer_id) {
            self->timers[i] = self->timers[--self->ntimers];
            return;
        }
    }
}

int ts_loop_run(ts_loop_t *self)
{
    for (;;) {
        int64_t now = ts_mono_us(), wait_us = -1;
        for (int i = 0; i < self->ntimers; i++) {
            int64_t left = self->timers[i].due_us - now;
            if (left < 0)
                left = 0;
            if (wait_us < 0 || left < wait_us)
                wait_us = left;
        }
        /* Paused sockets are polled for nothing, so indices stay stable. */
        for (int i = 0; i < self->nreaders; i++)
            self->items[i].events = self->paused[i] ? 0 : ZMQ_POLLIN;
        long timeout_ms = wait_us < 0 ? -1 : (long)((wait_us + 999) / 1000);
        int rc = zmq_poll(self->items, self->nreaders, timeout_ms);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ETERM)
                return 0;
            return -1;
        }
        for (int i = 0; i < self->nreaders && rc > 0; i++) {
            if (self->items[i].revents & ZMQ_POLLIN) {
                if (self->fns[i](self, self->items[i].socket, self->args[i]) < 0)
                    return 0;
            }
        }
        now = ts_mono_us();
        for (int i = 0; i < self->ntimers; i++) {
            loop_timer_t *t = &self->timers[i];
            if (t->due_us <= now) {
                t->due_us = now + t->interval_ms * 1000LL;
                if (t->fn(self, t->id, t->arg) < 0)
                    return 0;
            }
        }
    }
}

/* ---- pointer messages ---- */

typedef struct {
    uint32_t kind;
    uint32_t count;
} wire_header_t;

void *ts_inproc_socket(void *zctx, int type, const char *endpoint, bool bind)
{
    void *s = zmq_socket(zctx, type);
    int zero = 0, send_timeout_ms = 100;
    if (!s)
        return NULL;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &send_timeout_ms, sizeof send_timeout_ms);
    if ((bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint)) == 0)
        return s;
    int err = zmq_errno();
    zmq_close(s);
    errno = err;
    return NULL;
}

int ts_wire_send(void *socket, uint32_t kind, void *const *ptrs, size_t count)
{
    size_t size = sizeof(wire_header_t) + count * sizeof(void *);
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, size))
        return -1;
    wire_header_t header = {kind, (uint32_t)count};
    memcpy(zmq_msg_data(&msg), &header, sizeof header);
    if (count)
        memcpy((char *)zmq_msg_data(&msg) + sizeof header, ptrs, count * sizeof(void *));
    if (zmq_msg_send(&msg, socket, 0) < 0) {
        zmq_msg_close(&msg);
        return -1;
    }
    return 0;
}

int ts_wire_recv(void *socket, int flags, uint32_t *kind, void ***ptrs, size_t *count)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, socket, flags) < 0) {
        zmq_msg_close(&msg);
        return -1;
    }
    wire_header_t header;
    size_t size = zmq_msg_size(&msg);
    if (size < sizeof header) {
        zmq_msg_close(&msg);
        errno = EPROTO;
        return -1;
    }
    memcpy(&header, zmq_msg_data(&msg), sizeof header);
    void **array = NULL;
    if (header.count) {
        array = ts_xmalloc(header.count * sizeof(void *));
        memcpy(array, (char *)zmq_msg_data(&msg) + sizeof header, header.count * sizeof(void *));
    }
    zmq_msg_close(&msg);
    *kind = header.kind;
    *ptrs = array;
    *count = header.count;
    return 0;
}
