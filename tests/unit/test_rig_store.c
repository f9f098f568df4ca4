/* test_rig_store.c — the store alone, the test playing the front door,
 * persist and the sync actor (tests/support/rig.h).
 *
 * Pinned here: writes leave as COMMIT in the order they came, reads come
 * straight back as ANSWERS; every write gets a MUTATION record whose seq
 * grows by one per write, across envelopes, messages and a restart;
 * `status`'s pending is the writes not yet confirmed; a ROLLBACK undoes its
 * envelope's writes and answers it; a confirmation drops its mutation once. */
#include "../support/rig.h"

#include "therasync/json.h"
#include "therasync/store.h"
#include "therasync/sync.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <string.h>

#define WAIT_MS 3000

typedef struct {
    ts_rig_t r;
    void *persist;    /* PULL TS_INPROC_PERSIST: COMMIT, RECOVER, RECOVER_ACK */
    void *front;      /* PULL TS_INPROC_FRONT: ANSWERS */
    void *events;     /* PULL TS_INPROC_EVENTS: EVENTS (not pinned here) */
    void *sync;       /* PULL TS_INPROC_SYNC: the cursor hint, OUTBOX, SYNC_CALL */
    void *inbox;      /* PUSH TS_INPROC_STORE: REQUESTS, RECOVERED, ROLLBACK */
    void *sync_inbox; /* PUSH TS_INPROC_STORE_SYNC: SYNC_UPDATES */
} store_rig_t;

/* Starts the store; the rig, as persist, answers RECOVER with the chunks
 * given (each must be acknowledged) and then the empty end of the stream.
 * With an API configured, the store then hands sync its cursor. */
static void up_with(store_rig_t *s, ts_chunk_t **chunks, size_t nchunks, const char *cursor)
{
    memset(s, 0, sizeof *s);
    ts_rig_init(&s->r, false);
    ts_rig_set_api(&s->r, "http://127.0.0.1:9"); /* binds the sync inbox; never dialled */
    s->persist = ts_rig_bind(&s->r, TS_INPROC_PERSIST);
    s->front = ts_rig_bind(&s->r, TS_INPROC_FRONT);
    s->events = ts_rig_bind(&s->r, TS_INPROC_EVENTS);
    s->sync = ts_rig_bind(&s->r, TS_INPROC_SYNC);
    ts_rig_start_async(&s->r, ts_store_start);
    ts_msg_t m;
    ts_rig_recv(s->persist, TS_MSG_RECOVER, WAIT_MS, &m);
    cr_assert_eq(m.count, 0);
    ts_msg_release(&m);
    /* The store has bound its inboxes before asking. */
    s->inbox = ts_rig_connect(&s->r, TS_INPROC_STORE);
    s->sync_inbox = ts_rig_connect(&s->r, TS_INPROC_STORE_SYNC);
    for (size_t i = 0; i < nchunks; i++) {
        cr_assert_eq(ts_send_RECOVERED(s->inbox, &chunks[i], 1), 0);
        ts_rig_recv(s->persist, TS_MSG_RECOVER_ACK, WAIT_MS, &m); /* one per chunk */
        ts_msg_release(&m);
    }
    cr_assert_eq(ts_send_RECOVERED(s->inbox, NULL, 0), 0, "the end of the stream");
    cr_assert(ts_rig_start_wait(&s->r, WAIT_MS), "the store starts");
    ts_rig_quiet(s->persist, 50, "nothing more to persist at start");
    ts_rig_recv(s->sync, TS_MSG_SYNC_UPDATES, WAIT_MS, &m);
    cr_assert_eq(m.count, 1);
    ts_sync_update_t *hint = ts_msg_SYNC_UPDATES(&m)[0];
    cr_assert_eq(hint->kind, TS_SYNC_CURSOR, "the cursor hint first");
    cr_assert_str_eq(hint->cursor, cursor);
    ts_msg_free(&m);
}

static void up(store_rig_t *s)
{
    up_with(s, NULL, 0, "");
}

static void down(store_rig_t *s)
{
    ts_rig_down(&s->r);
}

static void send_requests(store_rig_t *s, ts_envelope_t **envs, size_t n)
{
    cr_assert_eq(ts_send_REQUESTS(s->inbox, envs, n), 0);
}

static void send_one(store_rig_t *s, ts_envelope_t *e)
{
    send_requests(s, &e, 1);
}

/* The one MUTATION record of a call. */
static const ts_record_t *mutation_of(const ts_call_t *call)
{
    const ts_record_t *r[4];
    size_t n = ts_rig_records(call->records, TS_REC_MUTATION, r, 4);
    cr_assert_eq(n, 1, "one MUTATION record for %s (got %zu; err %d %s)",
                 ts_method_name(call->method), n, call->err_code,
                 call->err_message ? call->err_message : "");
    return r[0];
}

/* A read's answer: the envelope comes straight back. */
static ts_envelope_t *answer(store_rig_t *s, ts_msg_t *m)
{
    ts_rig_recv(s->front, TS_MSG_ANSWERS, WAIT_MS, m);
    cr_assert_eq(m->count, 1);
    return ts_msg_ANSWERS(m)[0];
}

static long long pending(store_rig_t *s)
{
    send_one(s, ts_rig_one(&s->r, TS_M_STATUS, NULL, NULL, NULL));
    ts_msg_t m;
    ts_envelope_t *e = answer(s, &m);
    cJSON *st = ts_rig_result(&e->calls[0]);
    long long n = -1;
    cr_assert(ts_json_int(st, "pending", &n), "status has pending");
    cJSON_Delete(st);
    ts_msg_free(&m);
    return n;
}

/* A get's answer: the error code (0 when found) and, found, doc.v. */
static int get_v(store_rig_t *s, const char *id, long long *v)
{
    send_one(s, ts_rig_one(&s->r, TS_M_GET, "sessions", id, NULL));
    ts_msg_t m;
    ts_envelope_t *e = answer(s, &m);
    int code = e->calls[0].err_code;
    if (!code) {
        cJSON *res = ts_rig_result(&e->calls[0]);
        cr_assert(ts_json_int(cJSON_GetObjectItemCaseSensitive(res, "doc"), "v", v));
        cJSON_Delete(res);
    }
    ts_msg_free(&m);
    return code;
}

/* Sends one create and returns its mutation's seq (and id), read from the
 * COMMIT that carries it (freed). */
static int64_t create(store_rig_t *s, const char *doc, char mutation[37])
{
    send_one(s, ts_rig_one(&s->r, TS_M_CREATE, "sessions", doc, NULL));
    ts_msg_t m;
    ts_rig_recv(s->persist, TS_MSG_COMMIT, WAIT_MS, &m);
    cr_assert_eq(m.count, 1);
    const ts_record_t *r = mutation_of(&ts_msg_COMMIT(&m)[0]->calls[0]);
    int64_t seq = r->seq;
    if (mutation)
        memcpy(mutation, r->mutation, 37);
    ts_msg_free(&m);
    return seq;
}

static ts_sync_update_t *confirmation(const char *id, int64_t seq, const char *mutation,
                                      int64_t version)
{
    ts_sync_update_t *u = ts_sync_update_new(TS_SYNC_CONFIRMED);
    cr_assert(u);
    ts_copy_text(u->collection, sizeof u->collection, "sessions");
    ts_copy_text(u->doc_id, sizeof u->doc_id, id);
    ts_copy_text(u->mutation, sizeof u->mutation, mutation);
    u->seq = seq;
    u->version = version;
    u->doc = cJSON_CreateObject();
    cJSON_AddStringToObject(u->doc, "id", id);
    cJSON_AddNumberToObject(u->doc, "version", (double)version);
    cJSON_AddNumberToObject(u->doc, "v", 1);
    return u;
}

/* The seqs of the DROP records of the internal envelope that applies a
 * message of sync updates. */
static size_t drops_committed(store_rig_t *s, int64_t *seqs, size_t max)
{
    ts_msg_t m;
    ts_rig_recv(s->persist, TS_MSG_COMMIT, WAIT_MS, &m);
    cr_assert_eq(m.count, 1, "one envelope per message of updates");
    ts_envelope_t *e = ts_msg_COMMIT(&m)[0];
    cr_assert(e->internal, "made by the store, not a client");
    cr_assert_eq(e->ncalls, 1);
    const ts_record_t *r[16];
    size_t n = ts_rig_records(e->calls[0].records, TS_REC_DROP, r, 16);
    cr_assert_leq(n, max);
    for (size_t i = 0; i < n; i++) {
        seqs[i] = r[i]->seq;
        cr_assert_str_eq(r[i]->event, "confirmed", "a confirmation's drop carries its outcome");
    }
    cr_assert_eq(ts_rig_records(e->calls[0].records, TS_REC_MUTATION, r, 16), 0,
                 "a confirmation makes no new mutation");
    ts_msg_free(&m);
    return n;
}

Test(rig_store, writes_go_to_persist_in_order_and_reads_come_straight_back, .timeout = 30)
{
    store_rig_t s;
    up(&s);
    ts_envelope_t *e1 = ts_rig_one(&s.r, TS_M_CREATE, "sessions", "{\"id\":\"a\",\"v\":1}", NULL);
    ts_envelope_t *e2 = ts_rig_envelope(&s.r, 2, NULL); /* a batch: two writes */
    ts_rig_create(&s.r, &e2->calls[0], "sessions", "{\"id\":\"b\",\"v\":1}");
    ts_rig_create(&s.r, &e2->calls[1], "consultations", "{\"id\":\"c\",\"v\":1}");
    ts_envelope_t *e3 = ts_rig_one(&s.r, TS_M_GET, "sessions", "a", NULL);
    ts_envelope_t *e4 = ts_rig_one(&s.r, TS_M_UPDATE, "sessions", "a", "{\"v\":2}");
    ts_envelope_t *first[] = {e1, e2, e3, e4};
    send_requests(&s, first, 4);

    /* The read is answered from memory at once, and sees the writes before
     * it but not the one after. */
    ts_msg_t m;
    cr_assert_eq(answer(&s, &m), e3);
    cJSON *got = ts_rig_result(&e3->calls[0]);
    long long v = 0;
    cr_assert(ts_json_int(cJSON_GetObjectItemCaseSensitive(got, "doc"), "v", &v));
    cr_assert_eq(v, 1);
    cJSON_Delete(got);
    ts_msg_free(&m);

    /* The writes go on as one COMMIT, in the order they came. */
    ts_rig_recv(s.persist, TS_MSG_COMMIT, WAIT_MS, &m);
    cr_assert_eq(m.count, 3);
    ts_envelope_t **c = ts_msg_COMMIT(&m);
    cr_assert(c[0] == e1 && c[1] == e2 && c[2] == e4, "envelope order kept");
    uint32_t batch = c[0]->persist_batch;
    cr_assert_neq(batch, 0);
    cr_assert(c[1]->persist_batch == batch && c[2]->persist_batch == batch,
              "one message, one persist batch");
    const ts_record_t *w[] = {mutation_of(&c[0]->calls[0]), mutation_of(&c[1]->calls[0]),
                              mutation_of(&c[1]->calls[1]), mutation_of(&c[2]->calls[0])};
    ts_op_t ops[] = {TS_OP_CREATE, TS_OP_CREATE, TS_OP_CREATE, TS_OP_UPDATE};
    const char *ids[] = {"a", "b", "c", "a"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(w[i]->seq, i + 1, "write %d has seq %d, not %lld", i, i + 1,
                     (long long)w[i]->seq);
        cr_assert_eq(w[i]->op, ops[i]);
        cr_assert_str_eq(w[i]->doc_id, ids[i]);
        cr_assert_eq(strlen(w[i]->mutation), 36, "a mutation id");
        for (int k = 0; k < i; k++)
            cr_assert_str_neq(w[i]->mutation, w[k]->mutation, "mutation ids are unique");
    }
    cr_assert_str_eq(w[2]->collection, "consultations");
    cr_assert_str_eq(w[3]->body, "{\"v\":2}", "an update's record is its patch");
    ts_msg_free(&m);

    /* Later messages: the seq goes on by one per write, the batch by one
     * per message. */
    send_one(&s, ts_rig_one(&s.r, TS_M_CREATE, "sessions", "{\"id\":\"d\"}", NULL));
    send_one(&s, ts_rig_one(&s.r, TS_M_DELETE, "sessions", "b", NULL));
    for (int i = 0; i < 2; i++) {
        ts_rig_recv(s.persist, TS_MSG_COMMIT, WAIT_MS, &m);
        cr_assert_eq(m.count, 1);
        ts_envelope_t *e = ts_msg_COMMIT(&m)[0];
        cr_assert_eq(e->persist_batch, batch + 1 + (uint32_t)i);
        const ts_record_t *r = mutation_of(&e->calls[0]);
        cr_assert_eq(r->seq, 5 + i);
        cr_assert_eq(r->op, i ? TS_OP_DELETE : TS_OP_CREATE);
        ts_msg_free(&m);
    }
    ts_rig_quiet(s.front, 100, "writes are not answered by the store");
    down(&s);
}

Test(rig_store, a_refused_write_is_answered_directly_and_takes_no_seq, .timeout = 30)
{
    store_rig_t s;
    up(&s);
    cr_assert_eq(create(&s, "{\"id\":\"a\"}", NULL), 1);
    /* A create of a document that exists: refused, needs nothing durable. */
    ts_envelope_t *dup = ts_rig_one(&s.r, TS_M_CREATE, "sessions", "{\"id\":\"a\"}", NULL);
    send_one(&s, dup);
    ts_msg_t m;
    cr_assert_eq(answer(&s, &m), dup);
    cr_assert_eq(dup->calls[0].err_code, TS_E_CONFLICT);
    cr_assert_null(dup->calls[0].records);
    ts_msg_free(&m);
    ts_rig_quiet(s.persist, 100, "a refused write is not persisted");
    cr_assert_eq(create(&s, "{\"id\":\"b\"}", NULL), 2, "the refused write took no seq");
    cr_assert_eq(pending(&s), 2);
    down(&s);
}

Test(rig_store, pending_counts_the_writes_not_yet_confirmed, .timeout = 30)
{
    store_rig_t s;
    up(&s);
    cr_assert_eq(pending(&s), 0);
    char ma[37], mb[37], mc[37];
    int64_t a = create(&s, "{\"id\":\"a\",\"v\":1}", ma);
    int64_t b = create(&s, "{\"id\":\"b\",\"v\":1}", mb);
    int64_t c = create(&s, "{\"id\":\"c\",\"v\":1}", mc);
    cr_assert(a == 1 && b == 2 && c == 3);
    cr_assert_eq(pending(&s), 3);

    /* The server confirms b: its mutation leaves (one DROP), pending - 1. */
    ts_sync_update_t *u = confirmation("b", b, mb, 1);
    cr_assert_eq(ts_send_SYNC_UPDATES(s.sync_inbox, &u, 1), 0);
    int64_t seqs[4];
    cr_assert_eq(drops_committed(&s, seqs, 4), 1);
    cr_assert_eq(seqs[0], b);
    cr_assert_eq(pending(&s), 2);

    /* The same confirmation again (a re-sent answer): nothing to drop. */
    u = confirmation("b", b, mb, 1);
    cr_assert_eq(ts_send_SYNC_UPDATES(s.sync_inbox, &u, 1), 0);
    cr_assert_eq(drops_committed(&s, seqs, 4), 0);
    cr_assert_eq(pending(&s), 2, "a duplicate confirmation counts once");

    /* Two in one message: one envelope, both drops, in the message's order. */
    ts_sync_update_t *two[] = {confirmation("c", c, mc, 1), confirmation("a", a, ma, 1)};
    cr_assert_eq(ts_send_SYNC_UPDATES(s.sync_inbox, two, 2), 0);
    cr_assert_eq(drops_committed(&s, seqs, 4), 2);
    cr_assert(seqs[0] == c && seqs[1] == a);
    cr_assert_eq(pending(&s), 0);

    /* Nothing pending, the next write still takes the next seq. */
    cr_assert_eq(create(&s, "{\"id\":\"d\"}", NULL), 4);
    cr_assert_eq(pending(&s), 1);
    down(&s);
}

/* As persist does when a commit fails: the calls with records get the
 * error, lose their events, and the envelope goes back to the store. */
static void roll_back(store_rig_t *s, ts_envelope_t *e)
{
    for (size_t i = 0; i < e->ncalls; i++) {
        if (!e->calls[i].records)
            continue;
        ts_call_fail(&e->calls[i], TS_E_INTERNAL, "write not stored: the rig said no");
        ts_event_free_list(e->calls[i].events);
        e->calls[i].events = NULL;
    }
    cr_assert_eq(ts_send_ROLLBACK(s->inbox, &e, 1), 0);
}

Test(rig_store, a_rollback_undoes_its_writes_and_answers_the_envelope, .timeout = 30)
{
    store_rig_t s;
    up(&s);
    cr_assert_eq(create(&s, "{\"id\":\"y\",\"v\":1}", NULL), 1); /* committed */

    ts_envelope_t *e = ts_rig_envelope(&s.r, 2, NULL);
    ts_rig_create(&s.r, &e->calls[0], "sessions", "{\"id\":\"x\",\"v\":1}");
    ts_rig_update(&s.r, &e->calls[1], "sessions", "y", "{\"v\":9}", -1);
    send_one(&s, e);
    ts_msg_t m;
    ts_rig_recv(s.persist, TS_MSG_COMMIT, WAIT_MS, &m);
    cr_assert(m.count == 1 && ts_msg_COMMIT(&m)[0] == e);
    ts_msg_release(&m);
    int64_t rolled = mutation_of(&e->calls[1])->seq;
    cr_assert_eq(rolled, 3);
    long long v = 0;
    cr_assert_eq(get_v(&s, "y", &v), 0);
    cr_assert_eq(v, 9, "applied in memory before it is durable");
    cr_assert_eq(pending(&s), 3);

    roll_back(&s, e);
    ts_envelope_t *back = answer(&s, &m);
    cr_assert_eq(back, e, "the envelope is answered, once undone");
    cr_assert_eq(back->calls[0].err_code, TS_E_INTERNAL);
    cr_assert_null(back->calls[0].records);
    cr_assert_null(back->calls[1].records);
    ts_msg_free(&m);
    ts_rig_quiet(s.front, 100, "one answer per envelope");

    cr_assert_eq(get_v(&s, "x", &v), TS_E_NOT_FOUND, "the create is undone");
    cr_assert_eq(get_v(&s, "y", &v), 0);
    cr_assert_eq(v, 1, "the update is undone");
    cr_assert_eq(pending(&s), 1);
    cr_assert_gt(create(&s, "{\"id\":\"z\"}", NULL), rolled, "a rolled-back seq is not reused");
    cr_assert_eq(pending(&s), 2);
    ts_rig_quiet(s.persist, 100, "a rollback writes nothing");
    down(&s);
}

static ts_record_t *add(ts_chunk_t *chunk, ts_record_kind_t kind, const char *coll,
                        const char *id, const char *body)
{
    ts_record_t *r = ts_chunk_add(chunk, kind, coll, id, body, body ? strlen(body) : 0);
    cr_assert(r);
    return r;
}

Test(rig_store, recovery_resumes_the_seq_and_hands_sync_the_outbox_in_order, .timeout = 30)
{
    /* What persist streams: the server's documents, then the pending
     * mutations in seq order, then the cursor, in chunks. */
    ts_chunk_t *docs = ts_chunk_new(4096), *rest = ts_chunk_new(4096);
    cr_assert(docs && rest);
    add(docs, TS_REC_CONFIRMED, "sessions", "a", "{\"v\":3}")->version = 3;
    ts_record_t *b = add(rest, TS_REC_MUTATION, "sessions", "b", "{\"v\":1}");
    b->op = TS_OP_CREATE, b->seq = 4;
    ts_uuidv7(b->mutation);
    ts_record_t *a = add(rest, TS_REC_MUTATION, "sessions", "a", "{\"v\":4}");
    a->op = TS_OP_UPDATE, a->seq = 7, a->version = 3;
    ts_uuidv7(a->mutation);
    char mb[37], ma[37];
    memcpy(mb, b->mutation, 37);
    memcpy(ma, a->mutation, 37);
    add(rest, TS_REC_CURSOR, "-", "-", "c-42");
    ts_chunk_t *chunks[] = {docs, rest};
    store_rig_t s;
    up_with(&s, chunks, 2, "c-42");

    /* Every pending mutation, in seq order, for sync to push. */
    ts_msg_t m;
    ts_rig_recv(s.sync, TS_MSG_OUTBOX, WAIT_MS, &m);
    const ts_record_t *out[8];
    size_t n = 0;
    for (size_t i = 0; i < m.count; i++)
        n += ts_rig_records(ts_msg_OUTBOX(&m)[i], TS_REC_MUTATION, out + n, 8 - n);
    cr_assert_eq(n, 2);
    cr_assert(out[0]->seq == 4 && out[1]->seq == 7, "seq order");
    cr_assert_str_eq(out[0]->mutation, mb);
    cr_assert_str_eq(out[1]->mutation, ma);
    cr_assert_eq(out[1]->version, 3, "its base version");
    ts_msg_free(&m);

    long long v = 0;
    cr_assert_eq(get_v(&s, "a", &v), 0);
    cr_assert_eq(v, 4, "the pending update applies on the server's version");
    cr_assert_eq(pending(&s), 2);
    cr_assert_eq(create(&s, "{\"id\":\"c\"}", NULL), 8, "the seq goes on after the highest");
    down(&s);
}

/* A `sync` answer that comes behind remote changes (TS_SYNC_ANSWER) goes
 * to persist in the same COMMIT, after the envelope of those changes, and
 * carries the mark of the store's work after them: persist answers it once
 * they are committed, and the front door's copies must have seen them
 * before they answer its client again. */
Test(rig_store, a_sync_answer_goes_to_persist_behind_its_changes)
{
    store_rig_t s;
    up(&s);
    ts_sync_update_t *u[2] = {ts_sync_update_new(TS_SYNC_REMOTE),
                              ts_sync_update_new(TS_SYNC_ANSWER)};
    ts_copy_text(u[0]->collection, sizeof u[0]->collection, "sessions");
    ts_copy_text(u[0]->doc_id, sizeof u[0]->doc_id, "p1");
    u[0]->doc = cJSON_Parse("{\"id\":\"p1\",\"version\":3,\"v\":7}");
    u[0]->version = 3;
    ts_envelope_t *reply = ts_rig_envelope(&s.r, 1, NULL);
    ts_rig_method(&s.r, &reply->calls[0], "sync", NULL);
    ts_call_set_result(&reply->calls[0], ts_xstrdup("{\"pushed\":0,\"pulled\":1}"), 24);
    u[1]->answer = reply;
    cr_assert_eq(ts_send_SYNC_UPDATES(s.sync_inbox, u, 2), 0);

    ts_msg_t m;
    ts_rig_recv(s.persist, TS_MSG_COMMIT, WAIT_MS, &m);
    cr_assert_eq(m.count, 2, "the changes' envelope and the answer, in one COMMIT");
    ts_envelope_t *changes = ts_msg_COMMIT(&m)[0], *answered = ts_msg_COMMIT(&m)[1];
    cr_assert(changes->internal);
    cr_assert_eq(answered, reply);
    cr_assert(!answered->internal);
    cr_assert_eq(answered->persist_batch, changes->persist_batch);
    cr_assert_gt(answered->mark, 0, "stamped with the store's mark after the change");
    cr_assert_eq(answered->mark, changes->mark);
    ts_msg_free(&m);
    ts_rig_quiet(s.front, 100, "a sync answer straight to the front door");
    long long v = 0;
    cr_assert_eq(get_v(&s, "p1", &v), 0);
    cr_assert_eq(v, 7, "the change applied");
    down(&s);
}

/* A reload by SIGHUP (RELOAD on the store's pipe) publishes its policy
 * event with the mark past the new selectors, as a policy.reload call's
 * answer carries it: the front door counts what subscribers were told,
 * and its copies of the cache's answers must have seen the reload before
 * they answer again. It used to go out with no mark. */
Test(rig_store, a_reload_event_carries_the_mark_past_it)
{
    store_rig_t s;
    up(&s);
    send_one(&s, ts_rig_one(&s.r, TS_M_STATUS, NULL, NULL, NULL));
    ts_msg_t m;
    ts_envelope_t *before = answer(&s, &m);
    uint64_t mark0 = before->mark;
    ts_msg_free(&m);
    cr_assert_eq(ts_actor_command(s.r.actor, "RELOAD"), 0);
    ts_rig_recv(s.events, TS_MSG_EVENTS, WAIT_MS, &m);
    ts_event_t *ev = ts_msg_EVENTS(&m)[0];
    cr_assert_not_null(ev);
    cr_assert(memmem(ev->data + ev->topic_len, ev->payload_len, "policy.reloaded", 15),
              "not the reload's event");
    cr_assert_gt(ev->mark, mark0, "the reload's event carries no mark past it");
    ts_msg_free(&m);
    send_one(&s, ts_rig_one(&s.r, TS_M_STATUS, NULL, NULL, NULL));
    ts_envelope_t *after = answer(&s, &m);
    cr_assert_eq(after->mark, mark0 + 1, "one reload, one step of the mark");
    ts_msg_free(&m);
    down(&s);
}
