/* driver.c — pipelined load over DEALER sockets.
 *
 * Each thread drives its share of the sockets from one zmq_poll loop: it
 * keeps every socket filled to `inflight` outstanding requests, takes the
 * next request index from a shared counter, and matches replies to requests
 * by order (the front door answers one client's requests in the order sent;
 * the JSON-RPC id is checked against that). A `busy` answer is retried after
 * 1 ms; its latency still counts from the first send.
 *
 * Closed loop by default: a socket sends its next request as soon as it has
 * a free slot. With a rate (open loop) request s is due at start + s / rate
 * and is sent when due and a slot is free; its latency counts from when it
 * was due, so a stalled server is charged for the requests it held back
 * (coordinated omission). With a duration, new requests are taken until it
 * has passed, cycling through the request set (or built by job->make). */
#include "bench.h"

#include <cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zmq.h>

#define BUSY_RETRY_US 1000
#define POLL_MAX_MS 100

int bench_reqs_end(bench_reqs_t *reqs)
{
    if (reqs->n + 2 > reqs->cap) {
        size_t cap = reqs->cap ? reqs->cap * 2 : 1024;
        size_t *off = realloc(reqs->off, cap * sizeof *off);
        if (!off)
            return -1;
        reqs->off = off;
        reqs->cap = cap;
        if (reqs->n == 0)
            reqs->off[0] = 0;
    }
    reqs->off[++reqs->n] = reqs->data.len;
    return 0;
}

void bench_reqs_reset(bench_reqs_t *reqs)
{
    ts_buf_reset(&reqs->data);
    reqs->n = 0;
    if (reqs->off)
        reqs->off[0] = 0;
}

void bench_reqs_free(bench_reqs_t *reqs)
{
    ts_buf_free(&reqs->data);
    free(reqs->off);
    memset(reqs, 0, sizeof *reqs);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t bench_percentile(const int64_t *values, size_t n, double p)
{
    if (n == 0)
        return 0;
    int64_t *copy = malloc(n * sizeof *copy);
    if (!copy)
        return -1;
    memcpy(copy, values, n * sizeof *copy);
    qsort(copy, n, sizeof *copy, cmp_i64);
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    int64_t v = copy[rank == 0 ? 0 : rank > n ? n - 1 : rank - 1];
    free(copy);
    return v;
}

/* A request in flight: its index (its JSON-RPC id), when it counts from
 * (first send, or when it was due in an open loop) and when it was last sent. */
typedef struct {
    size_t idx;
    int64_t start_us, sent_us;
} flight_t;

/* One DEALER and its requests in flight (a set: answers are matched by id,
 * and a read may overtake an earlier write). */
typedef struct {
    void *sock;
    flight_t *fifo;
    int count;
} client_t;

/* Shared by the threads of one run. */
typedef struct {
    const bench_job_t *job;
    atomic_size_t next;   /* sequence number of the next request not yet sent */
    atomic_bool failed;   /* a thread gave up: the others stop too */
    size_t total;         /* requests to send (SIZE_MAX: until t_end) */
    int64_t t0, t_end;    /* the start; no new request after t_end (closed loop duration) */
    pthread_mutex_t lock; /* guards the outcome */
    bench_outcome_t *out;
} run_t;

/* A thread's share: sockets [first, first + count), and what it measured. */
typedef struct {
    run_t *run;
    void *zctx;
    int first, count;
    int rc;
    bench_sample_t *samples;
    size_t nsamples, capsamples;
    int64_t lag_max_us; /* open loop: the latest a request went out after it was due */
    size_t late;        /* open loop: requests sent more than 1 ms after they were due */
} worker_t;

static void fail(run_t *run, const char *fmt, const char *detail)
{
    pthread_mutex_lock(&run->lock);
    if (!run->out->first_error[0])
        snprintf(run->out->first_error, sizeof run->out->first_error, fmt, detail);
    pthread_mutex_unlock(&run->lock);
    atomic_store(&run->failed, true);
}

/* The JSON-RPC id of a reply: the first "id": followed by a number (a
 * document's own "id" is a string). -1 when there is none. *after: where
 * the number ends. */
static long long reply_id(const char *text, size_t len, const char **after)
{
    const char *p = text, *end = text + len;
    while ((p = memmem(p, (size_t)(end - p), "\"id\":", 5)) != NULL) {
        p += 5;
        while (p < end && *p == ' ')
            p++;
        if (p < end && *p >= '0' && *p <= '9') {
            long long v = 0;
            while (p < end && *p >= '0' && *p <= '9')
                v = v * 10 + (*p++ - '0');
            *after = p;
            return v;
        }
    }
    return -1;
}

/* Error code of an error reply, 0 for a result. Parses only error replies.
 * after: where the reply's id ends; the front door writes "result" right
 * after it, which spares a search of the whole (often large) reply. */
static int reply_error(const char *text, size_t len, const char *after, char *msg, size_t msglen)
{
    if ((size_t)(text + len - after) >= 10 && memcmp(after, ",\"result\":", 10) == 0)
        return 0;
    if (!memmem(text, len, "\"error\"", 7))
        return 0;
    cJSON *r = cJSON_ParseWithLength(text, len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(r, "error");
    if (!err) {
        cJSON_Delete(r);
        return 0; /* "error" was inside a document */
    }
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    char *text_err = cJSON_PrintUnformatted(err);
    snprintf(msg, msglen, "%s", text_err ? text_err : "error");
    cJSON_free(text_err);
    int c = cJSON_IsNumber(code) ? code->valueint : -32603;
    cJSON_Delete(r);
    return c ? c : -32603;
}

/* Takes the next request when one is due: 1 (into *fl), 0 (the next is
 * due at *due_us, open loop), -1 (no more). */
static int take(run_t *run, worker_t *w, int64_t now, flight_t *fl, int64_t *due_us)
{
    const bench_job_t *job = run->job;
    size_t nreq = job->reqs->n;
    for (;;) {
        size_t seq = atomic_load(&run->next);
        if (seq >= run->total || (run->t_end && now >= run->t_end))
            return -1;
        int64_t due = job->rate > 0 ? run->t0 + (int64_t)((double)seq * 1e6 / job->rate) : now;
        if (due > now) {
            *due_us = due;
            return 0;
        }
        if (!atomic_compare_exchange_weak(&run->next, &seq, seq + 1))
            continue;
        /* Past the set: built by job->make (its id is seq), else the set again. */
        fl->idx = seq < nreq || job->make ? seq : seq % nreq;
        fl->start_us = due;
        if (job->rate > 0 && now - due > w->lag_max_us)
            w->lag_max_us = now - due;
        if (job->rate > 0 && now - due > 1000)
            w->late++;
        return 1;
    }
}

/* The bytes of request idx: from the set, or built into scratch. */
static int body_of(const bench_job_t *job, size_t idx, ts_buf_t *scratch, const char **body,
                   size_t *len)
{
    const bench_reqs_t *reqs = job->reqs;
    if (idx < reqs->n) {
        *body = reqs->data.data + reqs->off[idx];
        *len = reqs->off[idx + 1] - reqs->off[idx];
        return 0;
    }
    ts_buf_reset(scratch);
    if (job->make(job->make_arg, idx, scratch))
        return -1;
    *body = scratch->data;
    *len = scratch->len;
    return 0;
}

/* A measured answer: its latency to the job's outputs. */
static void measured(worker_t *w, size_t idx, int64_t us)
{
    const bench_job_t *job = w->run->job;
    if (job->lat_us && idx < job->reqs->n)
        job->lat_us[idx] = us;
    if (!job->samples)
        return;
    if (w->nsamples == w->capsamples) {
        size_t cap = w->capsamples ? w->capsamples * 2 : 4096;
        bench_sample_t *grown = realloc(w->samples, cap * sizeof *grown);
        if (!grown) {
            fail(w->run, "%s", "out of memory");
            return;
        }
        w->samples = grown;
        w->capsamples = cap;
    }
    w->samples[w->nsamples++] = (bench_sample_t){.idx = idx, .us = us};
}

static void *work(void *arg)
{
    worker_t *w = arg;
    run_t *run = w->run;
    const bench_job_t *job = run->job;
    int k = job->inflight, nc = w->count;
    client_t *cl = calloc((size_t)nc, sizeof *cl);
    zmq_pollitem_t *items = calloc((size_t)nc, sizeof *items);
    /* Busy answers wait here (at most one per in-flight slot) until due. */
    size_t retry_cap = (size_t)nc * (size_t)k, retry_n = 0;
    flight_t *retry = calloc(retry_cap, sizeof *retry);
    int64_t *retry_due = calloc(retry_cap, sizeof *retry_due);
    ts_buf_t scratch = {0};
    w->rc = -1;
    if (!cl || !items || !retry || !retry_due) {
        fail(run, "%s", "out of memory");
        goto done;
    }
    for (int c = 0; c < nc; c++) {
        int linger = 0, hwm = k + 16;
        cl[c].fifo = calloc((size_t)k, sizeof *cl[c].fifo);
        cl[c].sock = zmq_socket(w->zctx, ZMQ_DEALER);
        if (!cl[c].fifo || !cl[c].sock || bench_curve_client(cl[c].sock) ||
            zmq_setsockopt(cl[c].sock, ZMQ_LINGER, &linger, sizeof linger) ||
            zmq_setsockopt(cl[c].sock, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
            zmq_connect(cl[c].sock, job->endpoint)) {
            fail(run, "cannot connect: %s", zmq_strerror(errno));
            goto done;
        }
        items[c] = (zmq_pollitem_t){.socket = cl[c].sock, .events = ZMQ_POLLIN};
    }
    size_t outstanding = 0;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    for (;;) {
        if (atomic_load(&run->failed))
            break;
        int64_t now = ts_mono_us();
        if (now > job->deadline_us) {
            fail(run, "%s", "global deadline reached");
            break;
        }
        /* Fill every socket up to k: due retries first, then new requests. */
        int state = 1; /* of take(): 1 more may come, 0 not due yet, -1 no more */
        int64_t next_due = 0;
        for (int c = 0; c < nc; c++) {
            while (cl[c].count < k) {
                flight_t fl;
                bool found = false;
                for (size_t r = 0; r < retry_n; r++) {
                    if (retry_due[r] <= now) {
                        fl = retry[r];
                        retry[r] = retry[--retry_n];
                        retry_due[r] = retry_due[retry_n];
                        found = true;
                        break;
                    }
                }
                if (!found) {
                    if (state != 1 || (state = take(run, w, now, &fl, &next_due)) != 1)
                        break;
                }
                const char *body;
                size_t len;
                if (body_of(job, fl.idx, &scratch, &body, &len)) {
                    fail(run, "%s", "cannot build a request");
                    break;
                }
                fl.sent_us = ts_mono_us();
                if (job->rate <= 0 && !found)
                    fl.start_us = fl.sent_us;
                if (zmq_send(cl[c].sock, body, len, ZMQ_DONTWAIT) < 0) {
                    /* Cannot happen below the HWM; keep the request for later. */
                    retry[retry_n] = fl;
                    retry_due[retry_n++] = now + BUSY_RETRY_US;
                    break;
                }
                cl[c].fifo[cl[c].count++] = fl;
                outstanding++;
            }
        }
        if (outstanding == 0 && retry_n == 0 && state == -1) {
            w->rc = 0;
            break;
        }
        /* The oldest outstanding send bounds the wait. */
        int64_t oldest = INT64_MAX;
        for (int c = 0; c < nc; c++)
            for (int j = 0; j < cl[c].count; j++)
                if (cl[c].fifo[j].sent_us < oldest)
                    oldest = cl[c].fifo[j].sent_us;
        if (oldest != INT64_MAX && now - oldest > BENCH_REPLY_TIMEOUT_US) {
            fail(run, "%s", "no reply within 30 s");
            break;
        }
        long timeout_ms = retry_n ? 1 : POLL_MAX_MS;
        int64_t wait_us = -1; /* open loop: until the next request is due */
        if (state == 0) {
            wait_us = next_due - ts_mono_us();
            if (wait_us < 0)
                wait_us = 0;
            if (wait_us / 1000 < timeout_ms)
                timeout_ms = wait_us / 1000;
        }
        int ready = zmq_poll(items, nc, timeout_ms);
        if (ready < 0 && errno != EINTR) {
            fail(run, "zmq_poll: %s", zmq_strerror(errno));
            break;
        }
        if (ready <= 0 && timeout_ms == 0 && wait_us > 0) {
            /* Less than 1 ms to the next send: a short nap, not a spin on
             * the cores the engine needs (sends stay within ~0.1 ms). */
            struct timespec ts = {0, (wait_us < 100 ? wait_us : 100) * 1000};
            nanosleep(&ts, NULL);
        }
        for (int c = 0; c < nc && ready > 0; c++) {
            if (!(items[c].revents & ZMQ_POLLIN))
                continue;
            while (zmq_msg_recv(&msg, cl[c].sock, ZMQ_DONTWAIT) >= 0) {
                if (zmq_msg_more(&msg) || zmq_msg_size(&msg) == 0)
                    continue; /* envelope: the payload is the last frame */
                int64_t t = ts_mono_us();
                const char *text = zmq_msg_data(&msg);
                size_t len = zmq_msg_size(&msg);
                if (cl[c].count == 0) {
                    fail(run, "%s", "a reply nobody asked for");
                    break;
                }
                const char *after_id = text;
                long long id = reply_id(text, len, &after_id);
                int j = 0;
                while (j < cl[c].count && (long long)cl[c].fifo[j].idx != id)
                    j++;
                if (j == cl[c].count) {
                    char detail[64];
                    snprintf(detail, sizeof detail, "%lld", id);
                    fail(run, "a reply to no request in flight on its socket: id %s", detail);
                    break;
                }
                flight_t fl = cl[c].fifo[j];
                cl[c].fifo[j] = cl[c].fifo[--cl[c].count];
                outstanding--;
                char err[200];
                int code = reply_error(text, len, after_id, err, sizeof err);
                if (code != -32005)
                    bench_progress_add(job->progress, 1);
                if (code == -32005) {
                    retry[retry_n] = fl;
                    retry_due[retry_n++] = t + BUSY_RETRY_US;
                    pthread_mutex_lock(&run->lock);
                    run->out->busy_retries++;
                    pthread_mutex_unlock(&run->lock);
                } else if (code == -32001 && job->tolerate_not_found) {
                    measured(w, fl.idx, t - fl.start_us);
                    pthread_mutex_lock(&run->lock);
                    run->out->not_found++;
                    pthread_mutex_unlock(&run->lock);
                } else if (code == -32002) {
                    /* the engine's validation refused it: answered, not an error */
                    measured(w, fl.idx, t - fl.start_us);
                    pthread_mutex_lock(&run->lock);
                    run->out->invalid++;
                    pthread_mutex_unlock(&run->lock);
                } else if (code) {
                    pthread_mutex_lock(&run->lock);
                    run->out->errors++;
                    if (!run->out->first_error[0])
                        snprintf(run->out->first_error, sizeof run->out->first_error, "%s", err);
                    pthread_mutex_unlock(&run->lock);
                } else {
                    measured(w, fl.idx, t - fl.start_us);
                    if (job->on_reply)
                        job->on_reply(job->arg, fl.idx, text, len);
                    pthread_mutex_lock(&run->lock);
                    run->out->done++;
                    pthread_mutex_unlock(&run->lock);
                }
            }
        }
    }
    zmq_msg_close(&msg);
done:
    for (int c = 0; cl && c < nc; c++) {
        if (cl[c].sock)
            zmq_close(cl[c].sock);
        free(cl[c].fifo);
    }
    free(cl);
    free(items);
    free(retry);
    free(retry_due);
    ts_buf_free(&scratch);
    return NULL;
}

cJSON *bench_rpc(void *dealer, long id, const char *method, const char *params, int timeout_ms)
{
    char req[512];
    snprintf(req, sizeof req, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"%s\"%s%s}", id,
             method, params ? ",\"params\":" : "", params ? params : "");
    if (zmq_send(dealer, req, strlen(req), 0) < 0)
        return NULL;
    int64_t deadline = ts_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) { /* skip stale answers (ids below ours) */
        int64_t left = (deadline - ts_mono_us()) / 1000;
        zmq_pollitem_t it = {.socket = dealer, .events = ZMQ_POLLIN};
        if (left <= 0 || zmq_poll(&it, 1, left) <= 0)
            return NULL;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, dealer, 0) < 0) {
            zmq_msg_close(&m);
            return NULL;
        }
        cJSON *r = cJSON_ParseWithLength(zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(r, "id");
        if (cJSON_IsNumber(rid) && (long)rid->valuedouble == id) {
            cJSON *res = cJSON_DetachItemFromObjectCaseSensitive(r, "result");
            cJSON_Delete(r);
            return res;
        }
        cJSON_Delete(r);
    }
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int bench_drive(const bench_job_t *job, bench_outcome_t *out)
{
    memset(out, 0, sizeof *out);
    int threads = job->threads < 1 ? 1 : job->threads > job->clients ? job->clients : job->threads;
    run_t run = {.job = job, .out = out};
    atomic_init(&run.next, 0);
    atomic_init(&run.failed, false);
    pthread_mutex_init(&run.lock, NULL);
    run.total = job->count > 0 ? (size_t)job->count : job->reqs->n;
    if (job->duration_us > 0)
        /* open loop: the requests due within the duration; closed: until it ends */
        run.total = job->rate > 0 ? (size_t)((double)job->duration_us * job->rate / 1e6) : SIZE_MAX;
    worker_t *w = calloc((size_t)threads, sizeof *w);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    void *zctx = zmq_ctx_new();
    int rc = -1;
    if (!w || !tid || !zctx) {
        snprintf(out->first_error, sizeof out->first_error, "out of memory");
        goto done;
    }
    if (job->reqs->n == 0 && !job->make && run.total > 0) {
        snprintf(out->first_error, sizeof out->first_error, "no requests");
        goto done;
    }
    /* Up to one I/O thread per worker; ZeroMQ's default is one. */
    zmq_ctx_set(zctx, ZMQ_IO_THREADS, threads);
    int64_t t0 = ts_mono_us();
    run.t0 = t0;
    if (job->duration_us > 0 && job->rate <= 0)
        run.t_end = t0 + job->duration_us;
    double cpu0 = cpu_now();
    int per = job->clients / threads, extra = job->clients % threads, first = 0;
    for (int t = 0; t < threads; t++) {
        w[t] = (worker_t){.run = &run, .zctx = zctx, .first = first, .count = per + (t < extra)};
        first += w[t].count;
    }
    int started = 0;
    for (int t = 1; t < threads; t++, started++)
        if (pthread_create(&tid[t], NULL, work, &w[t]))
            break;
    work(&w[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(tid[t], NULL);
    out->seconds = (double)(ts_mono_us() - t0) / 1e6;
    out->cpu_seconds = cpu_now() - cpu0;
    out->sent = atomic_load(&run.next);
    rc = 0;
    for (int t = 0; t < threads; t++) {
        if (t > started || w[t].rc)
            rc = -1;
        if (w[t].lag_max_us > out->send_lag_max_us)
            out->send_lag_max_us = w[t].lag_max_us;
        out->late_sends += w[t].late;
        out->nsamples += w[t].nsamples;
    }
    if (job->samples) {
        out->samples = malloc((out->nsamples ? out->nsamples : 1) * sizeof *out->samples);
        size_t at = 0;
        for (int t = 0; out->samples && t < threads; t++) {
            if (w[t].nsamples)
                memcpy(out->samples + at, w[t].samples, w[t].nsamples * sizeof *w[t].samples);
            at += w[t].nsamples;
        }
        if (!out->samples)
            rc = -1;
    }
    if (out->errors || out->done + out->invalid + out->not_found != out->sent)
        rc = -1;
done:
    if (zctx)
        zmq_ctx_term(zctx);
    for (int t = 0; w && t < threads; t++)
        free(w[t].samples);
    free(w);
    free(tid);
    pthread_mutex_destroy(&run.lock);
    return rc;
}
