/* writer.h — group commit for HTTP writes.
 *
 * A handler hands its write to the writer thread and suspends its connection;
 * the thread takes every write queued meanwhile, applies them in one SQLite
 * transaction (ca_db_write_batch), and resumes each connection once the
 * commit is done, so every answer still follows a durable commit while
 * concurrent writers share one commit. */
#ifndef CLINIC_API_WRITER_H
#define CLINIC_API_WRITER_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "db.h"

/* Most ops one POST /v1/_batch may carry. */
#define CA_MAX_BATCH_OPS 1000

typedef struct ca_job {
    struct ca_job *next;
    ca_write_t w;                /* the write; its strings outlive the job */
    ca_reply_t r;                /* the answer, set before the resume */
    /* A batch (POST /v1/_batch): nops > 0 writes in ops/replies instead of
     * w/r, applied in order in one transaction (never split). */
    size_t nops;
    const ca_write_t **ops;
    ca_reply_t **replies;
    struct MHD_Connection *conn; /* suspended until done */
    atomic_bool done;
} ca_job_t;

/* Starts the thread. 0 or -1. */
int ca_writer_start(ca_db_t *db);
/* Applies what is queued, resumes those connections, joins the thread. */
void ca_writer_stop(void);
/* Queues job and suspends job->conn (call from the access handler only).
 * 0 when queued; -1 when stopping (nothing suspended: write synchronously). */
int ca_writer_submit(ca_job_t *job);

#endif
