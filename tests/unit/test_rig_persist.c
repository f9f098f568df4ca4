/* test_rig_persist.c — persist alone on a temp data dir, the test playing
 * the store (RECOVER, COMMIT), the front door (ANSWERS) and the sync actor
 * (OUTBOX) (tests/support/rig.h).
 *
 * Pinned here: envelopes are answered in the order of the COMMIT messages,
 * each once; the committed records go to sync in commit order; recovery
 * (after a restart on the same dir) streams the server's documents, then
 * exactly the mutations not dropped in seq order, then the cursor, with at
 * most three chunks unacknowledged; a failed commit answers nothing as
 * done and leaves nothing behind. */
#include "../support/rig.h"

#include "therasync/persist.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_MS 5000

typedef struct {
    ts_rig_t r;
    void *front; /* PULL TS_INPROC_FRONT: ANSWERS */
    void *store; /* PULL TS_INPROC_STORE: RECOVERED, ROLLBACK, STORAGE */
    void *sync;  /* PULL TS_INPROC_SYNC: OUTBOX */
    void *inbox; /* PUSH TS_INPROC_PERSIST: RECOVER, RECOVER_ACK, COMMIT */
} persist_rig_t;

/* Starts persist on dir (NULL: a new temp dir, taken over). */
static void up_on(persist_rig_t *p, char *dir)
{
    memset(p, 0, sizeof *p);
    if (dir)
        ts_rig_init_dir(&p->r, dir);
    else
        ts_rig_init(&p->r, true);
    ts_rig_set_api(&p->r, "http://127.0.0.1:9"); /* committed records go to sync */
    p->front = ts_rig_bind(&p->r, TS_INPROC_FRONT);
    p->store = ts_rig_bind(&p->r, TS_INPROC_STORE);
    p->sync = ts_rig_bind(&p->r, TS_INPROC_SYNC);
    cr_assert(ts_rig_start(&p->r, ts_persist_start), "persist starts on %s", p->r.config.data_dir);
    p->inbox = ts_rig_connect(&p->r, TS_INPROC_PERSIST);
}

/* Stops persist and starts it again on the same data dir. */
static void restart(persist_rig_t *p)
{
    char *dir = ts_rig_down_keep(&p->r, true);
    up_on(p, dir);
}

/* A recovered record, copied out of its chunk. */
typedef struct {
    ts_record_kind_t kind;
    ts_op_t op;
    int64_t seq, version;
    char mutation[37];
    char doc_id[65];
    char body[64];
    size_t body_len;
} rec_t;

/* Asks for the durable state and reads the stream to its empty end,
 * acknowledging each chunk as the store does. Returns the records. */
static size_t recover(persist_rig_t *p, rec_t *out, size_t max, size_t *chunks)
{
    cr_assert_eq(ts_send_RECOVER(p->inbox, NULL, 0), 0);
    size_t n = 0;
    *chunks = 0;
    for (int i = 0; i < 1000; i++) {
        ts_msg_t m;
        ts_rig_recv(p->store, TS_MSG_RECOVERED, WAIT_MS, &m);
        if (m.count == 0) {
            ts_msg_release(&m);
            return n;
        }
        cr_assert_eq(m.count, 1, "one chunk a message");
        ts_chunk_t *chunk = ts_msg_RECOVERED(&m)[0];
        for (ts_record_t *r = chunk->head; r; r = r->next) {
            cr_assert_lt(n, max, "at most %zu records", max);
            rec_t *o = &out[n++];
            *o = (rec_t){.kind = r->kind, .op = r->op, .seq = r->seq, .version = r->version,
                         .body_len = r->body_len};
            ts_copy_text(o->mutation, sizeof o->mutation, r->mutation);
            ts_copy_text(o->doc_id, sizeof o->doc_id, r->doc_id);
            ts_copy_text(o->body, sizeof o->body, r->body);
        }
        free(chunk);
        ts_msg_release(&m);
        (*chunks)++;
        cr_assert_eq(ts_send_RECOVER_ACK(p->inbox, NULL, 0), 0);
    }
    cr_assert_fail("the recovery stream does not end");
    return 0;
}

/* Starts persist on a new temp dir, which recovers nothing. */
static void up_fresh(persist_rig_t *p)
{
    up_on(p, NULL);
    rec_t none[1];
    size_t chunks;
    cr_assert_eq(recover(p, none, 1, &chunks), 0, "a new data dir holds nothing");
}

/* An envelope with one call per record list (NULL: a call without records,
 * a read that waited for an earlier write), answered as the store does. */
static ts_envelope_t *envelope(ts_rig_t *r, ts_record_t **lists, size_t n)
{
    ts_envelope_t *e = ts_rig_envelope(r, n, NULL);
    for (size_t i = 0; i < n; i++) {
        e->calls[i].method = lists[i] ? TS_M_CREATE : TS_M_GET;
        e->calls[i].records = lists[i];
        ts_call_set_result(&e->calls[i], strdup("{}"), 2);
    }
    return e;
}

static ts_envelope_t *one(ts_rig_t *r, ts_record_t *records)
{
    return envelope(r, &records, 1);
}

/* The mutation of seq on doc id (of three documents by seq) with a body
 * that says its seq. */
static ts_record_t *mutation(int64_t seq, char ids[][37])
{
    char doc[24], body[32];
    snprintf(doc, sizeof doc, "d%d", (int)(seq % 3));
    snprintf(body, sizeof body, "{\"seq\":%d}", (int)seq);
    return ts_rig_mutation("sessions", doc, seq <= 3 ? TS_OP_CREATE : TS_OP_UPDATE, seq, 0, body,
                           ids ? ids[seq] : NULL);
}

/* Sends COMMIT [e] and waits until it is answered. */
static void commit_and_wait(persist_rig_t *p, ts_envelope_t *e)
{
    cr_assert_eq(ts_send_COMMIT(p->inbox, &e, 1), 0);
    ts_msg_t m;
    ts_rig_recv(p->front, TS_MSG_ANSWERS, WAIT_MS, &m);
    cr_assert(m.count == 1 && ts_msg_ANSWERS(&m)[0] == e, "its envelope answered");
    ts_msg_free(&m);
}

Test(rig_persist, answers_keep_the_commit_order_and_records_go_to_sync_in_it, .timeout = 60)
{
    persist_rig_t p;
    up_on(&p, NULL);
    rec_t got[4];
    size_t chunks;
    cr_assert_eq(recover(&p, got, 4, &chunks), 0, "a new dir holds nothing");
    cr_assert_eq(chunks, 0, "only the end of the stream");

    /* 40 messages of 1-3 envelopes each, sent at once: persist takes what
     * is queued into one commit (group commit), however they fall. */
    enum { MESSAGES = 40 };
    ts_envelope_t *sent[MESSAGES * 3];
    size_t nsent = 0, calls_with_records = 0;
    int64_t seq = 0;
    for (int i = 0; i < MESSAGES; i++) {
        ts_envelope_t *batch[3];
        size_t n = 1 + (size_t)i % 3;
        for (size_t k = 0; k < n; k++) {
            if ((nsent + k) % 4 == 3) { /* a read that waited for a write */
                ts_record_t *none = NULL;
                batch[k] = envelope(&p.r, &none, 1);
            } else if ((nsent + k) % 5 == 0) { /* a batch of two writes */
                ts_record_t *two[] = {mutation(seq + 1, NULL), mutation(seq + 2, NULL)};
                seq += 2;
                batch[k] = envelope(&p.r, two, 2);
                calls_with_records += 2;
            } else {
                batch[k] = one(&p.r, mutation(++seq, NULL));
                calls_with_records++;
            }
        }
        cr_assert_eq(ts_send_COMMIT(p.inbox, batch, n), 0);
        for (size_t k = 0; k < n; k++)
            sent[nsent++] = batch[k];
    }

    /* Every envelope answered once, in the order sent. */
    size_t answered = 0;
    while (answered < nsent) {
        ts_msg_t m;
        ts_rig_recv(p.front, TS_MSG_ANSWERS, WAIT_MS, &m);
        for (size_t i = 0; i < m.count; i++, answered++) {
            ts_envelope_t *e = ts_msg_ANSWERS(&m)[i];
            cr_assert_lt(answered, nsent, "no envelope answered twice");
            cr_assert(e == sent[answered], "answer %zu is envelope %zu", answered, answered);
            for (size_t c = 0; c < e->ncalls; c++)
                cr_assert_null(e->calls[c].records, "its records went on to sync");
        }
        ts_msg_free(&m);
    }
    ts_rig_quiet(p.front, 200, "each envelope answered once");

    /* The records, one list per call, in commit order: seq 1, 2, 3... */
    size_t lists = 0;
    int64_t next = 1;
    while (lists < calls_with_records) {
        ts_msg_t m;
        ts_rig_recv(p.sync, TS_MSG_OUTBOX, WAIT_MS, &m);
        for (size_t i = 0; i < m.count; i++, lists++)
            for (const ts_record_t *r = ts_msg_OUTBOX(&m)[i]; r; r = r->next) {
                cr_assert_eq(r->kind, TS_REC_MUTATION);
                cr_assert_eq(r->seq, next, "seq %lld, expected %lld", (long long)r->seq,
                             (long long)next);
                next++;
            }
        ts_msg_free(&m);
    }
    cr_assert_eq(next, seq + 1, "every committed mutation, once");
    ts_rig_quiet(p.sync, 100, "nothing more for sync");
    ts_rig_down(&p.r);
}

static void expect_mutations(const rec_t *got, size_t n, const int64_t *seqs, size_t nseqs,
                             char ids[][37])
{
    cr_assert_eq(n, nseqs, "%zu pending mutations, expected %zu", n, nseqs);
    for (size_t i = 0; i < n; i++) {
        int64_t s = seqs[i];
        char body[32], doc[24];
        snprintf(body, sizeof body, "{\"seq\":%d}", (int)s);
        snprintf(doc, sizeof doc, "d%d", (int)(s % 3));
        cr_assert_eq(got[i].kind, TS_REC_MUTATION);
        cr_assert_eq(got[i].seq, s, "mutation %zu: seq %lld, expected %lld", i,
                     (long long)got[i].seq, (long long)s);
        cr_assert_str_eq(got[i].mutation, ids[s], "its id");
        cr_assert_str_eq(got[i].doc_id, doc);
        cr_assert_str_eq(got[i].body, body);
        cr_assert_eq(got[i].op, s <= 3 ? TS_OP_CREATE : TS_OP_UPDATE);
    }
}

Test(rig_persist, recovery_streams_exactly_the_mutations_not_dropped_in_seq_order, .timeout = 60)
{
    persist_rig_t p;
    up_fresh(&p);
    rec_t got[64];
    size_t chunks;
    char ids[32][37];
    /* 12 writes to three documents, three commits of four. */
    for (int64_t s = 1; s <= 12; s += 4) {
        ts_record_t *list = NULL;
        for (int64_t k = s; k < s + 4; k++)
            ts_rig_append(&list, mutation(k, ids));
        commit_and_wait(&p, one(&p.r, list));
    }
    /* seq 3 cancelled (a plain drop); seq 7 confirmed, with the server's
     * document; seq 13 written and dropped in one commit; a drop of a seq
     * that never was changes nothing; two cursors, the last one stays. */
    commit_and_wait(&p, one(&p.r, ts_rig_drop("sessions", "d0", 3, ids[3], NULL)));
    ts_record_t *confirm = ts_rig_drop("sessions", "d1", 7, ids[7], "confirmed");
    confirm->version = 1;
    ts_record_t *doc = ts_record_new(TS_REC_CONFIRMED, "sessions", "d1", 2, "{\"seq\":7}", 9);
    doc->version = 1;
    ts_rig_append(&confirm, doc);
    commit_and_wait(&p, one(&p.r, confirm));
    ts_record_t *both = mutation(13, ids);
    ts_rig_append(&both, ts_rig_drop("sessions", "d1", 13, ids[13], NULL));
    ts_rig_append(&both, ts_rig_drop("sessions", "d2", 99, "", NULL));
    commit_and_wait(&p, one(&p.r, both));
    for (int i = 1; i <= 2; i++) {
        char cursor[24];
        snprintf(cursor, sizeof cursor, "cur-%d", i);
        ts_record_t *r = ts_record_new(TS_REC_CURSOR, "-", "-", 1, cursor, strlen(cursor));
        commit_and_wait(&p, one(&p.r, r));
    }

    restart(&p);
    size_t n = recover(&p, got, 64, &chunks);
    /* The server's documents first, then the outbox, then the cursor. */
    cr_assert_geq(n, 2);
    cr_assert_eq(got[0].kind, TS_REC_CONFIRMED);
    cr_assert_str_eq(got[0].doc_id, "d1");
    cr_assert_eq(got[0].version, 1);
    cr_assert_eq(got[n - 1].kind, TS_REC_CURSOR);
    cr_assert_str_eq(got[n - 1].body, "cur-2");
    int64_t pending1[] = {1, 2, 4, 5, 6, 8, 9, 10, 11, 12};
    expect_mutations(got + 1, n - 2, pending1, 10, ids);

    /* Later writes follow the recovered ones; a drop after a restart holds
     * across the next. */
    ts_record_t *more = mutation(14, ids);
    ts_rig_append(&more, ts_rig_drop("sessions", "d1", 1, ids[1], NULL));
    commit_and_wait(&p, one(&p.r, more));
    restart(&p);
    n = recover(&p, got, 64, &chunks);
    int64_t pending2[] = {2, 4, 5, 6, 8, 9, 10, 11, 12, 14};
    expect_mutations(got + 1, n - 2, pending2, 10, ids);
    ts_rig_down(&p.r);
}

Test(rig_persist, recovery_keeps_at_most_three_chunks_unacknowledged, .timeout = 60)
{
    persist_rig_t p;
    up_fresh(&p);
    /* 14 writes of 300 KB: three fit a chunk of 1 MiB, so five chunks. */
    enum { WRITES = 14, BODY = 300 * 1024 };
    char *body = malloc(BODY + 16);
    cr_assert(body);
    memset(body, 'n', BODY + 16);
    memcpy(body, "{\"n\":\"", 6);
    memcpy(body + BODY, "\"}", 3);
    for (int64_t s = 1; s <= WRITES; s++)
        commit_and_wait(&p, one(&p.r, ts_rig_mutation("sessions", "big", s == 1 ? TS_OP_CREATE
                                                                            : TS_OP_UPDATE,
                                                       s, 0, body, NULL)));
    free(body);
    restart(&p);

    cr_assert_eq(ts_send_RECOVER(p.inbox, NULL, 0), 0);
    int64_t next = 1;
    size_t held = 0, most = 0, total = 0;
    bool ended = false;
    for (int i = 0; i < 100 && !ended; i++) {
        ts_msg_t m;
        if (held == 3) {
            /* persist waits for an acknowledgement; only the stream's end
             * (no chunk) may come */
            if (ts_rig_poll(p.store, 300, &m)) {
                cr_assert(m.kind == TS_MSG_RECOVERED && m.count == 0,
                          "a fourth chunk before an acknowledgement");
                ended = true;
                ts_msg_release(&m);
                break;
            }
            cr_assert_eq(ts_send_RECOVER_ACK(p.inbox, NULL, 0), 0);
            held--;
            continue;
        }
        ts_rig_recv(p.store, TS_MSG_RECOVERED, WAIT_MS, &m);
        if (m.count == 0) {
            ended = true;
        } else {
            ts_chunk_t *chunk = ts_msg_RECOVERED(&m)[0];
            for (ts_record_t *r = chunk->head; r; r = r->next, next++) {
                cr_assert_eq(r->seq, next);
                cr_assert_eq(r->body_len, BODY + 2);
            }
            free(chunk);
            total++;
            if (++held > most)
                most = held;
        }
        ts_msg_release(&m);
    }
    cr_assert(ended, "the stream ends");
    cr_assert_geq(total, 4, "enough chunks to reach the bound (%zu)", total);
    cr_assert_eq(most, 3, "three chunks were out at once");
    cr_assert_eq(next, WRITES + 1, "every write, in seq order");
    ts_rig_down(&p.r);
}

Test(rig_persist, a_failed_commit_rolls_back_every_write_of_its_batch_once, .timeout = 60)
{
    persist_rig_t p;
    up_fresh(&p);
    rec_t got[16];
    size_t chunks;
    char ids[32][37];
    commit_and_wait(&p, one(&p.r, mutation(1, ids)));
    ts_msg_t m;
    ts_rig_recv(p.sync, TS_MSG_OUTBOX, WAIT_MS, &m); /* seq 1's, committed */
    ts_msg_free(&m);

    /* One message: a good write, one persist cannot write (as a full disk
     * would fail it), a read. The batch fails whole. */
    ts_record_t *bad = ts_record_new(TS_REC_AUDIT, "sessions", "d0", 2, NULL, 0);
    bad->kind = (ts_record_kind_t)77;
    ts_record_t *none = NULL;
    ts_envelope_t *batch[] = {one(&p.r, mutation(2, ids)), one(&p.r, bad),
                              envelope(&p.r, &none, 1)};
    cr_assert_eq(ts_send_COMMIT(p.inbox, batch, 3), 0);
    for (int i = 0; i < 2; i++) {
        ts_rig_recv(p.store, TS_MSG_ROLLBACK, WAIT_MS, &m);
        cr_assert_eq(m.count, 1);
        ts_envelope_t *e = ts_msg_ROLLBACK(&m)[0];
        cr_assert(e == batch[i], "rollback %d is write %d", i, i);
        cr_assert_eq(e->calls[0].err_code, TS_E_INTERNAL);
        cr_assert_not_null(e->calls[0].records, "the store needs them to undo the write");
        ts_msg_free(&m);
    }
    ts_rig_recv(p.front, TS_MSG_ANSWERS, WAIT_MS, &m);
    cr_assert(m.count == 1 && ts_msg_ANSWERS(&m)[0] == batch[2], "the read is answered");
    ts_msg_free(&m);
    ts_rig_quiet(p.front, 200, "nothing else answered");
    ts_rig_quiet(p.store, 100, "each write rolled back once");
    ts_rig_quiet(p.sync, 100, "nothing of a failed commit goes to sync");

    /* Nothing of it was kept: its seq can be written again. */
    commit_and_wait(&p, one(&p.r, mutation(2, ids)));
    restart(&p);
    size_t n = recover(&p, got, 16, &chunks);
    int64_t pending[] = {1, 2};
    expect_mutations(got, n, pending, 2, ids);
    ts_rig_down(&p.r);
}

/* ---- group commit: waiting for the writes of other recent writers ---- */

/* e as sent by client c (its routing id, as the front door packs it). */
static ts_envelope_t *from(ts_envelope_t *e, char c)
{
    e->route = malloc(5);
    cr_assert(e->route);
    uint32_t len = 1;
    memcpy(e->route, &len, 4);
    e->route[4] = (unsigned char)c;
    e->route_len = 5;
    return e;
}

/* persist's group_waits, from a metrics call answered by it. */
static long group_waits(persist_rig_t *p)
{
    ts_envelope_t *e = ts_rig_envelope(&p->r, 1, NULL);
    e->calls[0].method = TS_M_METRICS;
    e->calls[0].partial = cJSON_CreateObject();
    cr_assert_eq(ts_send_COMMIT(p->inbox, &e, 1), 0);
    ts_msg_t m;
    ts_rig_recv(p->front, TS_MSG_ANSWERS, WAIT_MS, &m);
    cr_assert_eq(m.count, 1);
    const cJSON *persist =
        cJSON_GetObjectItemCaseSensitive(ts_msg_ANSWERS(&m)[0]->calls[0].partial, "persist");
    const cJSON *waits = cJSON_GetObjectItemCaseSensitive(persist, "group_waits");
    cr_assert(cJSON_IsNumber(waits), "metrics.persist.group_waits");
    long n = (long)waits->valuedouble;
    ts_msg_free(&m);
    return n;
}

/* Clients that keep one write in flight each (a kiosk writing between its
 * reads) reach persist a few at a time; a commit that holds the write of
 * one of them waits (up to 2 ms) for those of the others that wrote
 * lately, so that one fsync covers them. A lone writer never waits, nor
 * a client that pipelines its writes. */
Test(rig_persist, a_commit_waits_for_other_recent_writers_never_for_a_lone_one, .timeout = 60)
{
    persist_rig_t p;
    up_fresh(&p);
    rec_t got[64];
    size_t chunks;
    char ids[32][37];
    int64_t seq = 1;
    ts_msg_t m;

    /* A alone, one write at a time: no wait. */
    for (int i = 0; i < 3; i++)
        commit_and_wait(&p, from(one(&p.r, mutation(seq++, ids)), 'A'));
    cr_assert_eq(group_waits(&p), 0, "a lone writer never waits");

    /* B writes: A wrote lately, so B's write waits for A's (in vain:
     * answered all the same, within the bound). */
    int64_t t0 = ts_mono_us();
    commit_and_wait(&p, from(one(&p.r, mutation(seq++, ids)), 'B'));
    cr_assert_lt(ts_mono_us() - t0, 1000000, "the wait is bounded");
    cr_assert_eq(group_waits(&p), 1);

    /* Now A's next write waits for B's, and the two are committed and
     * answered together although B's came later. */
    ts_envelope_t *a = from(one(&p.r, mutation(seq++, ids)), 'A');
    ts_envelope_t *b = from(one(&p.r, mutation(seq++, ids)), 'B');
    cr_assert_eq(ts_send_COMMIT(p.inbox, &a, 1), 0);
    struct timespec gap = {0, 200 * 1000};
    nanosleep(&gap, NULL);
    cr_assert_eq(ts_send_COMMIT(p.inbox, &b, 1), 0);
    ts_rig_recv(p.front, TS_MSG_ANSWERS, WAIT_MS, &m);
    cr_assert(m.count == 2 && ts_msg_ANSWERS(&m)[0] == a && ts_msg_ANSWERS(&m)[1] == b,
              "A's and B's writes answered together (%zu answers)", m.count);
    ts_msg_free(&m);
    cr_assert_eq(group_waits(&p), 2);

    /* A pipelines two writes in one message: they fill the batch by
     * themselves, no wait although B wrote lately. */
    ts_envelope_t *two[] = {from(one(&p.r, mutation(seq, ids)), 'A'),
                            from(one(&p.r, mutation(seq + 1, ids)), 'A')};
    seq += 2;
    cr_assert_eq(ts_send_COMMIT(p.inbox, two, 2), 0);
    ts_rig_recv(p.front, TS_MSG_ANSWERS, WAIT_MS, &m);
    cr_assert_eq(m.count, 2);
    ts_msg_free(&m);
    cr_assert_eq(group_waits(&p), 2, "pipelined writes do not wait");

    /* B stays silent: once it has not written for 10 ms, A's writes do not
     * wait for it any more. */
    struct timespec quiet = {0, 20 * 1000 * 1000};
    nanosleep(&quiet, NULL);
    commit_and_wait(&p, from(one(&p.r, mutation(seq++, ids)), 'A'));
    cr_assert_eq(group_waits(&p), 2, "a client gone quiet is not waited for");

    /* Every one of them is durable, in seq order. */
    for (int i = 0; i < 16; i++) /* committed records went to sync: not needed here */
        if (!ts_rig_poll(p.sync, 0, &m))
            break;
        else
            ts_msg_free(&m);
    restart(&p);
    size_t n = recover(&p, got, 64, &chunks);
    int64_t pending[16];
    for (int64_t s = 1; s < seq; s++)
        pending[s - 1] = s;
    expect_mutations(got, n, pending, (size_t)(seq - 1), ids);
    ts_rig_down(&p.r);
}
