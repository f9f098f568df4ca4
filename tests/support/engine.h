/* engine.h — test helpers: a real therasyncd on free loopback ports in a
 * temporary data dir, and a JSON-RPC client over a ZeroMQ DEALER. */
#ifndef TS_TEST_ENGINE_H
#define TS_TEST_ENGINE_H

#include "proc.h"

#include <cJSON.h>
#include <stddef.h>

typedef struct {
    ts_proc_t proc;
    char *dir;          /* temp dir: data dir is dir/data, logs in dir */
    char data[4200];
    char endpoint[64];
    char events[64];
    void *zctx;
    void *dealer;       /* connected to endpoint */
    int next_id;
} ts_engine_t;

/* A path inside the source tree ($TS_SOURCE_DIR, else "."), e.g.
 * ts_source_path("tests/fixtures/policies/permissive"); a static buffer,
 * one of eight in rotation. */
const char *ts_source_path(const char *rel);

/* Starts therasyncd with extra args (NULL-terminated, may be NULL) in a new
 * temp dir; waits for its ready line. 0 or -1. */
int ts_engine_start(ts_engine_t *e, const char *const extra[]);
/* Starts it again on the same data dir and ports. 0 or -1. */
int ts_engine_restart(ts_engine_t *e, const char *const extra[]);
/* SIGTERM and wait: returns the exit code. */
int ts_engine_stop(ts_engine_t *e);
/* SIGKILL at once, as a crash (no SIGTERM first), and reap. */
void ts_engine_kill(ts_engine_t *e);
/* Stops it if running, closes sockets, removes the temp dir. */
void ts_engine_destroy(ts_engine_t *e);

/* A new DEALER connected to the engine (caller closes it). */
void *ts_engine_client(ts_engine_t *e);
/* Sends one frame and waits up to timeout_ms for one reply frame.
 * Returns the reply (malloc'd, NUL-terminated) or NULL on timeout. */
char *ts_rpc_raw(void *dealer, const void *payload, size_t len, int timeout_ms);
/* Calls method with params (JSON text, or NULL) on e's dealer; returns
 * the parsed response (caller deletes) or NULL on timeout / bad JSON. */
cJSON *ts_rpc(ts_engine_t *e, const char *method, const char *params_json);
/* The result of a response, or NULL when it is an error. */
cJSON *ts_rpc_result(cJSON *response);
/* The error code of a response, or 0. */
int ts_rpc_error_code(cJSON *response);
/* The error.data.reason of a response, or "". */
const char *ts_rpc_error_reason(cJSON *response);
/* Runs query with params (a JSON object's text, without limit and cursor)
 * page after page, limit items a page, following each cursor; returns every
 * item in order (caller deletes), or NULL when a page failed or more than
 * max_pages were needed. *pages (may be NULL) gets the number of pages. */
cJSON *ts_query_all(ts_engine_t *e, const char *params_json, int limit, int max_pages,
                    int *pages);

#endif
