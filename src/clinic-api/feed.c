/* feed.c — the park list and its timer thread. The list is short (one entry
 * per waiting connection) and scanned linearly. */
#include "feed.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "therasync/util.h"

typedef struct park {
    struct park *next;
    struct MHD_Connection *conn;
    int64_t deadline_us;
    int64_t since;
} park_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool running;
    atomic_bool stopping;
    int64_t head;
    park_t *list;
} F = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Resumes and frees every entry that is due (all when stopping). Returns the
 * earliest remaining deadline. Caller holds the lock. */
static int64_t resume_due(int64_t now, bool all)
{
    int64_t next = now + 1000000;
    park_t **p = &F.list;
    while (*p) {
        park_t *e = *p;
        if (all || now >= e->deadline_us || (e->since >= 0 && F.head > e->since)) {
            *p = e->next;
            MHD_resume_connection(e->conn);
            free(e);
        } else {
            if (e->deadline_us < next)
                next = e->deadline_us;
            p = &e->next;
        }
    }
    return next;
}

static void *run(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&F.lock);
    while (!atomic_load(&F.stopping)) {
        int64_t next = resume_due(ts_mono_us(), false);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = next - ts_mono_us();
        if (wait > 0) {
            int64_t ns = ts.tv_nsec + (wait % 1000000) * 1000;
            ts.tv_sec += (time_t)(wait / 1000000 + ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&F.wake, &F.lock, &ts);
        }
    }
    resume_due(ts_mono_us(), true);
    pthread_mutex_unlock(&F.lock);
    return NULL;
}

int ca_feed_start(int64_t head)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&F.wake, &attr);
    pthread_condattr_destroy(&attr);
    F.head = head;
    atomic_store(&F.stopping, false);
    if (pthread_create(&F.thread, NULL, run, NULL) != 0)
        return -1;
    F.running = true;
    return 0;
}

void ca_feed_stop(void)
{
    if (!F.running)
        return;
    pthread_mutex_lock(&F.lock);
    atomic_store(&F.stopping, true);
    pthread_cond_signal(&F.wake);
    pthread_mutex_unlock(&F.lock);
    pthread_join(F.thread, NULL);
    F.running = false;
    pthread_cond_destroy(&F.wake);
}

int ca_feed_stopping(void) { return atomic_load(&F.stopping); }

void ca_feed_notify(int64_t head)
{
    pthread_mutex_lock(&F.lock);
    if (head > F.head)
        F.head = head;
    if (F.list)
        pthread_cond_signal(&F.wake);
    pthread_mutex_unlock(&F.lock);
}

int ca_feed_park(struct MHD_Connection *c, int64_t deadline_us, int64_t since)
{
    park_t *e = malloc(sizeof *e);
    if (!e)
        return -1;
    *e = (park_t){.conn = c, .deadline_us = deadline_us, .since = since};
    pthread_mutex_lock(&F.lock);
    if (atomic_load(&F.stopping)) {
        pthread_mutex_unlock(&F.lock);
        free(e);
        return -1;
    }
    /* Suspending under the lock orders it before the timer thread's resume. */
    MHD_suspend_connection(c);
    e->next = F.list;
    F.list = e;
    /* Wake the thread if this deadline is earlier than what it waits for. */
    pthread_cond_signal(&F.wake);
    pthread_mutex_unlock(&F.lock);
    return 0;
}
