/* watchdog.h — arms a Lua state's count hook only for calls that run long
 * (library-internal).
 *
 * In Lua 5.4 any count hook makes every instruction go through the hook
 * dispatcher, which costs 10-40% on an ordinary policy call. So a sandbox
 * runs its calls without a hook and registers here instead. One process-wide
 * watchdog thread looks at the registered calls every TS_WATCH_TICK_MS while
 * any policy call is running or has just run; a call it sees running at two
 * ticks in a row (so for 1-2 ticks: 2-4 ms) gets a signal (TS_WATCH_SIGNAL) sent to
 * its thread, and the handler, running on that thread, calls the watch's arm
 * function, which sets the count hook (lua_sethook is allowed from a signal
 * handler; lua.c does the same on SIGINT). When no call runs, the thread
 * sleeps on a condition variable: no idle wake-ups.
 *
 * Fast path per call: ts_watch_begin is a sequentially consistent store and
 * a load, ts_watch_end a compare-and-swap; no system call (except the first
 * call on a thread, which unblocks the signal there, and the first call after
 * an idle period, which wakes the watchdog). A signal is only ever sent to a
 * thread inside ts_watch_begin .. ts_watch_end: end waits for a signal that
 * is already on its way, so it never interrupts the caller's later system
 * calls, and the handler does nothing on a thread with no call running.
 * Calls may nest on one thread (a policy test calls the policy under test):
 * the handler looks at every call the thread is inside, so an outer call's
 * signal that lands while an inner one runs is not lost. */
#ifndef THERASYNC_LUA_WATCHDOG_H
#define THERASYNC_LUA_WATCHDOG_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#define TS_WATCH_TICK_MS 2
/* SIGURG: ignored by default, so a stray one harms no thread; nothing in
 * the engine uses out-of-band socket data. */
#define TS_WATCH_SIGNAL SIGURG

/* Called from the signal handler on the thread running the call: may only do
 * async-signal-safe work (lua_sethook). */
typedef void (*ts_watch_arm_fn)(void *arg);

/* One watched call site (a sandbox). Fields are private to watchdog.c. */
typedef struct ts_watch {
    atomic_ulong state;              /* generation << 2 | RUNNING | SIGNALLED */
    unsigned long gen;               /* calls begun; owner thread only */
    volatile sig_atomic_t delivered; /* set by the handler for a SIGNALLED call */
    pthread_t thread;                /* thread of the last call; written under the lock */
    bool has_thread;
    unsigned long seen;              /* state at the last tick; watchdog only */
    ts_watch_arm_fn arm;
    void *arm_arg;
    struct ts_watch *next;
    struct ts_watch *outer;          /* the call this one runs inside, on its thread */
} ts_watch_t;

/* Registers w (starting the watchdog thread if needed). Returns 0, or -1
 * when the thread or the signal handler cannot be set up: the caller must
 * then arm its hook eagerly. */
int ts_watch_add(ts_watch_t *w, ts_watch_arm_fn arm, void *arm_arg);
/* Unregisters w (no call may be running); stops the thread with the last. */
void ts_watch_remove(ts_watch_t *w);
/* Around one protected call, on the calling thread; not reentrant per w. */
void ts_watch_begin(ts_watch_t *w);
void ts_watch_end(ts_watch_t *w);

#endif
