/* writer.c — one thread, one queue. Batches are bounded so that one huge
 * burst does not delay the first answers of that burst too long. */
#include "writer.h"

#include <pthread.h>
#include <stdlib.h>

#include "feed.h"

#define MAX_BATCH 256

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool running;
    bool stopping;
    ca_job_t *head, *tail;
    ca_db_t *db;
} W = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* Applies queued jobs, up to MAX_BATCH writes (a batch job with more is
 * taken alone, whole); caller holds the lock, which is released while
 * SQLite works. Returns false when the queue was empty. */
static bool run_batch(void)
{
    if (!W.head)
        return false;
    ca_job_t *jobs[MAX_BATCH];
    const ca_write_t *ws[MAX_BATCH + CA_MAX_BATCH_OPS];
    ca_reply_t *rs[MAX_BATCH + CA_MAX_BATCH_OPS];
    size_t n = 0, nw = 0;
    while (W.head && n < MAX_BATCH) {
        ca_job_t *j = W.head;
        size_t k = j->nops ? j->nops : 1;
        if (nw && nw + k > MAX_BATCH)
            break;
        W.head = j->next;
        jobs[n++] = j;
        if (!j->nops) {
            ws[nw] = &j->w;
            rs[nw++] = &j->r;
        }
        for (size_t i = 0; i < j->nops; i++) {
            ws[nw] = j->ops[i];
            rs[nw++] = j->replies[i];
        }
    }
    if (!W.head)
        W.tail = NULL;
    pthread_mutex_unlock(&W.lock);
    int64_t head = nw ? ca_db_write_batch(W.db, ws, rs, nw) : ca_db_head(W.db);
    ca_feed_notify(head);
    pthread_mutex_lock(&W.lock);
    /* Resume under the lock: ordered after the suspend made in submit. */
    for (size_t i = 0; i < n; i++) {
        atomic_store(&jobs[i]->done, true);
        MHD_resume_connection(jobs[i]->conn);
    }
    return true;
}

static void *run(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "ca-writer");
    pthread_mutex_lock(&W.lock);
    for (;;) {
        if (run_batch())
            continue;
        if (W.stopping)
            break;
        pthread_cond_wait(&W.wake, &W.lock);
    }
    pthread_mutex_unlock(&W.lock);
    return NULL;
}

int ca_writer_start(ca_db_t *db)
{
    W.db = db;
    W.stopping = false;
    if (pthread_create(&W.thread, NULL, run, NULL) != 0)
        return -1;
    W.running = true;
    return 0;
}

void ca_writer_stop(void)
{
    if (!W.running)
        return;
    pthread_mutex_lock(&W.lock);
    W.stopping = true;
    pthread_cond_signal(&W.wake);
    pthread_mutex_unlock(&W.lock);
    pthread_join(W.thread, NULL);
    W.running = false;
}

int ca_writer_submit(ca_job_t *job)
{
    pthread_mutex_lock(&W.lock);
    if (W.stopping || !W.running) {
        pthread_mutex_unlock(&W.lock);
        return -1;
    }
    job->next = NULL;
    atomic_store(&job->done, false);
    MHD_suspend_connection(job->conn);
    if (W.tail)
        W.tail->next = job;
    else
        W.head = job;
    W.tail = job;
    pthread_cond_signal(&W.wake);
    pthread_mutex_unlock(&W.lock);
    return 0;
}
