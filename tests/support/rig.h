/* rig.h — one actor alone, with the test playing its neighbours.
 *
 * A rig starts one actor (store, persist, sync, front...) in a ZeroMQ
 * context of its own and plays every actor it talks to through the message
 * table: it binds a PULL at each endpoint the actor sends to (the rig
 * playing persist binds TS_INPROC_PERSIST and reads COMMIT), connects a
 * PUSH to each of the actor's inboxes, and sends and reads typed messages
 * (ts_send_NAME, ts_msg_NAME). See tests/README.md, "Rigs".
 *
 *   ts_rig_t r;
 *   ts_rig_init(&r, true);                      // context, config, temp dir
 *   void *commits = ts_rig_bind(&r, TS_INPROC_PERSIST);
 *   ts_rig_start_async(&r, ts_store_start);     // its start talks to us
 *   ts_msg_t m;
 *   ts_rig_recv(commits, TS_MSG_RECOVER, 2000, &m);
 *   ...
 *   r.actor = ts_rig_start_wait(&r, 5000);
 *   ...
 *   ts_rig_down(&r);                            // stop, drain, destroy, term
 *
 * Every wait is bounded; a helper that finds something other than what it
 * expects fails the test (Criterion), naming the kinds. The helpers that
 * assert must run in the test's thread. */
#ifndef TS_TEST_RIG_H
#define TS_TEST_RIG_H

#include "msgs/msgs.h"
#include "therasync/config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TS_RIG_MAX_SOCKETS 12

typedef ts_actor_t *(ts_rig_start_fn)(void *zctx, const ts_config_t *config);

typedef struct {
    void *zctx;
    ts_config_t config;  /* defaults, permissive policies, data dir in dir */
    char *dir;           /* temp dir (NULL: none); the data dir is dir/data */
    ts_actor_t *actor;   /* the actor under test, once started */
    void *sockets[TS_RIG_MAX_SOCKETS]; /* the rig's own, closed by ts_rig_down */
    bool pull[TS_RIG_MAX_SOCKETS];     /* which of them are PULLs (drained at the end) */
    size_t nsockets;
    uint64_t next_call;  /* request ids and client_seq of the calls made here */
    /* ts_rig_start_async */
    pthread_t starter;
    bool starting;
    ts_rig_start_fn *start_fn;
    ts_actor_t *started;
    volatile int start_done;
} ts_rig_t;

/* A context and a config: the default collections (sessions,
 * consultations), the permissive policies of tests/fixtures, logs at warn.
 * With temp_dir, a fresh temp dir whose data/ is the config's data dir. */
void ts_rig_init(ts_rig_t *r, bool temp_dir);
/* The same on an existing dir (a restart on the same data): dir is taken
 * over (freed and removed by ts_rig_down unless kept). */
void ts_rig_init_dir(ts_rig_t *r, char *dir);
/* Sets config.api_url (the store, persist and sync talk to sync only with
 * one; nothing here ever connects to it). */
void ts_rig_set_api(ts_rig_t *r, const char *url);

/* A PULL bound at endpoint: where the actor's messages to a neighbour the
 * rig plays arrive. Bind before the actor starts: it connects at start. */
void *ts_rig_bind(ts_rig_t *r, const char *endpoint);
/* A PUSH connected to one of the actor's inboxes. */
void *ts_rig_connect(ts_rig_t *r, const char *endpoint);

/* Starts the actor in a thread of its own, for actors whose start needs
 * an answer (the store waits for RECOVERED before it is ready): the test
 * plays that part, then takes the actor with ts_rig_start_wait. */
void ts_rig_start_async(ts_rig_t *r, ts_rig_start_fn *start);
/* The actor once its start has returned (NULL: it failed); fails the test
 * when it takes longer than timeout_ms. Also sets r->actor. */
ts_actor_t *ts_rig_start_wait(ts_rig_t *r, int timeout_ms);
/* Starts the actor and waits for it (no conversation needed at start). */
ts_actor_t *ts_rig_start(ts_rig_t *r, ts_rig_start_fn *start);

/* The next message on socket within timeout_ms: true, or false on timeout. */
bool ts_rig_poll(void *socket, int timeout_ms, ts_msg_t *m);
/* The next message, which must be of kind and come within timeout_ms (else
 * the test fails, naming what came instead). The caller owns it: take the
 * pointers through the typed view (ts_msg_NAME) and ts_msg_release, or
 * ts_msg_free. */
void ts_rig_recv(void *socket, ts_msg_kind_t kind, int timeout_ms, ts_msg_t *m);
/* The next message of kind within timeout_ms, freeing any other kind on
 * the way (for sockets that carry chatter the test does not pin, such as
 * the sync actor's status updates). */
void ts_rig_recv_skip(void *socket, ts_msg_kind_t kind, int timeout_ms, ts_msg_t *m);
/* Fails the test if anything arrives on socket within ms. */
void ts_rig_quiet(void *socket, int ms, const char *what);

/* ---- envelopes and calls, as the front door fills them ---- */

/* An envelope of ncalls empty calls from client `client` ("rig" when NULL). */
ts_envelope_t *ts_rig_envelope(ts_rig_t *r, size_t ncalls, const char *client);
/* create: doc_json is params.doc; its "id" (if any) becomes the doc id and
 * leaves the body, as do the server's fields. */
void ts_rig_create(ts_rig_t *r, ts_call_t *call, const char *collection, const char *doc_json);
/* update: patch_json is params.patch; base_version < 0: none given. */
void ts_rig_update(ts_rig_t *r, ts_call_t *call, const char *collection, const char *id,
                   const char *patch_json, long long base_version);
/* delete and get: params.id. */
void ts_rig_delete(ts_rig_t *r, ts_call_t *call, const char *collection, const char *id);
void ts_rig_get(ts_rig_t *r, ts_call_t *call, const char *collection, const char *id);
/* Any other method by name, params_json (NULL: none) as its params. */
void ts_rig_method(ts_rig_t *r, ts_call_t *call, const char *method, const char *params_json);
/* An envelope with one call made by one of the above, in one go. */
ts_envelope_t *ts_rig_one(ts_rig_t *r, ts_method_t method, const char *collection,
                          const char *id_or_doc, const char *patch_or_params);

/* A call's result parsed (caller deletes), failing the test on an error. */
cJSON *ts_rig_result(const ts_call_t *call);

/* ---- records ---- */

/* An outbox mutation as the store makes it: op, seq, base version, a fresh
 * mutation id (copied to id_out when not NULL), body (NULL for a delete). */
ts_record_t *ts_rig_mutation(const char *collection, const char *doc_id, ts_op_t op, int64_t seq,
                             int64_t version, const char *body, char id_out[37]);
/* A DROP of seq (event NULL: a plain drop, as a cancel; "confirmed": with
 * its outcome). */
ts_record_t *ts_rig_drop(const char *collection, const char *doc_id, int64_t seq,
                         const char *mutation, const char *event);
/* Appends r to *list (records keep their order). */
void ts_rig_append(ts_record_t **list, ts_record_t *r);
/* The records of kind in a list, in order; returns how many (at most max). */
size_t ts_rig_records(const ts_record_t *list, ts_record_kind_t kind, const ts_record_t **out,
                      size_t max);

/* Stops the actor (bounded), drains the rig's PULLs, destroys the actor,
 * closes the rig's sockets, terminates the context, frees the config and
 * removes the temp dir unless keep_dir (then it is returned, else NULL). */
char *ts_rig_down_keep(ts_rig_t *r, bool keep_dir);
void ts_rig_down(ts_rig_t *r);

#endif
