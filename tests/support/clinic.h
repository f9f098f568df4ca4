/* clinic.h — test helpers for sync: a real clinic-api on a free loopback
 * port (restartable on the same port and database), its control endpoints,
 * authenticated reads of its documents, and a SUB socket on an engine's
 * events. Every wait is bounded. */
#ifndef TS_TEST_CLINIC_H
#define TS_TEST_CLINIC_H

#include "engine.h"

#include <cJSON.h>

typedef struct {
    ts_proc_t proc;
    char *dir;        /* temp dir: clinic-api.db and the log */
    int port;
    char url[64];     /* http://127.0.0.1:PORT */
    char token[128];  /* a bearer token (fetched lazily, refetched after a restart) */
} ts_clinic_t;

/* Starts clinic-api with extra flags (NULL-terminated, may be NULL). 0 or -1. */
int ts_clinic_start(ts_clinic_t *c, const char *const extra[]);
/* Stops it (SIGTERM) and starts it again on the same port and database. */
int ts_clinic_restart(ts_clinic_t *c, const char *const extra[]);
void ts_clinic_stop(ts_clinic_t *c);
void ts_clinic_destroy(ts_clinic_t *c);
/* POST /_control/faults with json ("{}" clears). 0 or -1. */
int ts_clinic_faults(ts_clinic_t *c, const char *json);
/* A counter of GET /_control/stats, or -1. */
long long ts_clinic_stat(ts_clinic_t *c, const char *name);
/* An authenticated request; returns the HTTP status (0: no answer) and the
 * parsed body in *json when asked (caller deletes; NULL when not JSON). */
long ts_clinic_call(ts_clinic_t *c, const char *method, const char *path, const char *body,
                    cJSON **json);

/* Starts an engine synced with c (--api), with a config file holding
 * config_lua when it is not NULL. 0 or -1. */
int ts_engine_start_synced(ts_engine_t *e, ts_clinic_t *c, const char *config_lua);
int ts_engine_restart_synced(ts_engine_t *e, ts_clinic_t *c);

/* A SUB socket on e's events, subscribed to topic ("" = all); NULL on failure. */
void *ts_events_open(ts_engine_t *e, const char *topic);
/* Waits up to timeout_ms for an event whose method is method (and whose
 * params.<key> equals value when key is not NULL). Returns its params
 * (caller deletes) or NULL on timeout. */
cJSON *ts_events_wait(void *sub, const char *method, const char *key, const char *value,
                      int timeout_ms);

#endif
