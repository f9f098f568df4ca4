/* watchdog.c — one thread that arms the count hook of long policy calls by
 * signalling the thread that runs them (see watchdog.h). */
#include "watchdog.h"

#include "therasync/log.h"
#include "therasync/util.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

enum { RUNNING = 1, SIGNALLED = 2 };

/* Starting and stopping the thread (ts_watch_add / ts_watch_remove), so a
 * new thread never starts while the last one is being joined. Taken before
 * s_lock. */
static pthread_mutex_t s_life = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_cond;     /* CLOCK_MONOTONIC; wakes the sleeping watchdog */
static ts_watch_t *s_list;        /* registered watches, under s_lock */
static pthread_t s_thread;
static bool s_running, s_stop;    /* under s_lock */
static atomic_int s_sleeping;     /* the watchdog waits for the next call */
static pthread_once_t s_once = PTHREAD_ONCE_INIT;
static int s_setup_rc = -1;

/* The innermost watched call running on this thread (->outer leads to the
 * calls it runs inside), for the handler. */
static _Thread_local ts_watch_t *tl_current;
static _Thread_local bool tl_unblocked;

static void s_handler(int sig)
{
    (void)sig;
    int saved = errno;
    for (ts_watch_t *w = tl_current; w; w = w->outer) {
        unsigned long s = atomic_load_explicit(&w->state, memory_order_relaxed);
        if (s & RUNNING)
            w->arm(w->arm_arg);
        if (s & SIGNALLED)
            w->delivered = 1;
    }
    errno = saved;
}

static void s_setup(void)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) ||
        pthread_cond_init(&s_cond, &attr))
        return;
    pthread_condattr_destroy(&attr);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(TS_WATCH_SIGNAL, &sa, NULL) == 0)
        s_setup_rc = 0;
}

/* One look at every watch: signals calls that were already running at the
 * previous tick. Returns whether anything ran since then. Under s_lock. */
static bool s_tick(void)
{
    bool busy = false;
    for (ts_watch_t *w = s_list; w; w = w->next) {
        unsigned long s = atomic_load(&w->state);
        if (s == w->seen && (s & RUNNING) && !(s & SIGNALLED)) {
            /* The CAS makes ts_watch_end wait for the signal (see there). */
            if (atomic_compare_exchange_strong(&w->state, &s, s | SIGNALLED)) {
                s |= SIGNALLED;
                pthread_kill(w->thread, TS_WATCH_SIGNAL);
            }
        }
        busy |= s != w->seen || (s & RUNNING);
        w->seen = s;
    }
    return busy;
}

static void *s_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "ts-watchdog");
    pthread_mutex_lock(&s_lock);
    while (!s_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += TS_WATCH_TICK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!s_stop && pthread_cond_timedwait(&s_cond, &s_lock, &until) != ETIMEDOUT)
            ;
        if (s_stop || s_tick())
            continue;
        /* Idle: sleep until ts_watch_begin wakes us. Announce it first and
         * look once more, so a call that began meanwhile is not missed (it
         * either sees s_sleeping or we see its state; both seq_cst). */
        atomic_store(&s_sleeping, 1);
        if (s_tick()) {
            atomic_store(&s_sleeping, 0);
            continue;
        }
        while (!s_stop && atomic_load(&s_sleeping))
            pthread_cond_wait(&s_cond, &s_lock);
    }
    pthread_mutex_unlock(&s_lock);
    return NULL;
}

int ts_watch_add(ts_watch_t *w, ts_watch_arm_fn arm, void *arm_arg)
{
    memset(w, 0, sizeof *w);
    w->arm = arm;
    w->arm_arg = arm_arg;
    pthread_once(&s_once, s_setup);
    if (s_setup_rc != 0)
        return -1;
    pthread_mutex_lock(&s_life);
    pthread_mutex_lock(&s_lock);
    if (!s_running) {
        s_stop = false;
        atomic_store(&s_sleeping, 0);
        /* The watchdog itself never runs Lua: keep the signal away from it. */
        sigset_t block, old;
        sigemptyset(&block);
        sigaddset(&block, TS_WATCH_SIGNAL);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        s_running = pthread_create(&s_thread, NULL, s_main, NULL) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!s_running) {
            pthread_mutex_unlock(&s_lock);
            pthread_mutex_unlock(&s_life);
            ts_warn("lua", "cannot start the policy watchdog; budgets are counted eagerly");
            return -1;
        }
    }
    w->next = s_list;
    s_list = w;
    pthread_mutex_unlock(&s_lock);
    pthread_mutex_unlock(&s_life);
    return 0;
}

void ts_watch_remove(ts_watch_t *w)
{
    pthread_mutex_lock(&s_life);
    pthread_mutex_lock(&s_lock);
    for (ts_watch_t **p = &s_list; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    bool join = !s_list && s_running;
    if (join) {
        s_stop = true;
        s_running = false;
        pthread_cond_signal(&s_cond);
    }
    pthread_mutex_unlock(&s_lock);
    if (join)
        pthread_join(s_thread, NULL);
    pthread_mutex_unlock(&s_life);
}

void ts_watch_begin(ts_watch_t *w)
{
    pthread_t me = pthread_self();
    if (!w->has_thread || !pthread_equal(w->thread, me)) {
        pthread_mutex_lock(&s_lock); /* the watchdog reads thread under the lock */
        w->thread = me;
        w->has_thread = true;
        pthread_mutex_unlock(&s_lock);
    }
    if (!tl_unblocked) { /* once per thread: the caller may have blocked it */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, TS_WATCH_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        tl_unblocked = true;
    }
    w->gen++;
    w->outer = tl_current;
    tl_current = w;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store(&w->state, w->gen << 2 | RUNNING);
    if (atomic_load(&s_sleeping)) {
        pthread_mutex_lock(&s_lock);
        atomic_store(&s_sleeping, 0);
        pthread_cond_signal(&s_cond);
        pthread_mutex_unlock(&s_lock);
    }
}

void ts_watch_end(ts_watch_t *w)
{
    unsigned long s = w->gen << 2 | RUNNING;
    if (!atomic_compare_exchange_strong(&w->state, &s, w->gen << 2)) {
        /* The watchdog claimed this call: its signal is on the way. Let it
         * land here rather than in the caller's next system call; but never
         * wait for ever (a signal blocked by someone else's mask): after a
         * second the handler, finding the call over, would do nothing. */
        int64_t give_up = 0;
        for (unsigned n = 0; !w->delivered; n++) {
            sched_yield();
            if (n % 1024 == 1023) {
                int64_t now = ts_mono_us();
                if (!give_up)
                    give_up = now + 1000000;
                else if (now > give_up) {
                    ts_warn("lua", "the policy watchdog's signal did not arrive; going on");
                    break;
                }
            }
        }
        w->delivered = 0;
        atomic_store(&w->state, w->gen << 2);
    }
    atomic_signal_fence(memory_order_seq_cst);
    tl_current = w->outer;
}
