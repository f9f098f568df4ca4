/* conn.c — the connection state machine of the sync actor: whether the
 * server is usable (conn_set: UNKNOWN → ONLINE ⇄ OFFLINE), the API state and
 * last error that `status` shows, the answer timeout of writes, and the
 * probes that bring an offline connection back. Every API answer is booked
 * here (sync_conn_note). */
#include "sync_int.h"

static const char *const cstate_names[C__LAST] = {"unknown", "online", "offline"};

static void conn_set(sync_t *self, cstate_t to, const char *why)
{
    if (self->conn == to)
        return;
    ts_info(LOG, "connection %s -> %s (%s)", cstate_names[self->conn], cstate_names[to], why);
    cstate_t from = self->conn;
    self->conn = to;
    if (to == C_OFFLINE) {
        self->probe_failures = 0;
        self->probe_due_us = ts_mono_us() + sync_backoff_us(1, PROBE_BASE_MS, PROBE_CAP_MS);
        return;
    }
    if (to == C_ONLINE && from == C_OFFLINE) {
        /* Back: everything waiting goes now, and the feed catches up from
         * its cursor before following the stream again. */
        self->consecutive_failures = 0;
        sync_check_soon(self, "reconnected");
        for (size_t i = 0; i < self->nwaiting; i++)
            self->waiting[i]->due_us = 0;
        if (self->pull == P_STREAM) { /* reopen from a fresh catch-up, not after its backoff */
            sync_stream_close(self);
            sync_pull_set(self, P_CATCHUP);
        } else if (self->pull != P_WAIT_HINT) {
            self->feed_due_us = ts_mono_us();
            self->feed_failures = 0;
        }
    }
}

#define SET_ERROR(self, ...)                                                                      \
    (snprintf((self)->last_error, sizeof (self)->last_error, __VA_ARGS__),                        \
     (self)->last_error_ms = ts_wall_ms())

/* True while a write has gone unanswered for longer than sync.answer_timeout_ms
 * (the API actor's retries included): a server that takes writes but does
 * not answer them is not usable, even when it answers reads. */
static bool push_overdue(const sync_t *self, int64_t now)
{
    if (!self->push_reqs)
        return false;
    int64_t bound = self->config->sync.answer_timeout_ms * 1000LL;
    for (const req_t *r = self->reqs; r; r = r->next)
        if (r->sent_us && now - r->sent_us > bound)
            return true;
    return false;
}

/* Each tick: an overdue write makes the connection offline ("timeout"); it
 * stays so until no write is overdue (sync_conn_note) and something answers. */
void sync_conn_watch(sync_t *self, int64_t now)
{
    if (self->conn == C_OFFLINE || !push_overdue(self, now))
        return;
    SET_ERROR(self, "push: no answer within %d ms", self->config->sync.answer_timeout_ms);
    ts_copy_text(self->api_state, sizeof self->api_state, "timeout");
    conn_set(self, C_OFFLINE, "a write went unanswered");
}

/* Books one answer from the API: online/offline, api state, last error. */
void sync_conn_note(sync_t *self, const ts_api_result_t *res, const char *what)
{
    ts_api_error_t e = res->error;
    if (e == TS_API_CANCELLED || e == TS_API_INTERNAL)
        return;
    if (e == TS_API_NETWORK || e == TS_API_TIMEOUT) {
        SET_ERROR(self, "%s: %s (%s)", what,
                 ts_api_error_name(e), res->message);
        /* A refused connect or a host not found proves the server is not
         * there now: offline at once, or `status` says online for seconds
         * of reconnects after a crash. A timeout or a reset is ambiguous (one
         * slow request, a stale connection): only offline_after in a row. */
        bool gone = e == TS_API_NETWORK && res->unreachable;
        if ((gone || ++self->consecutive_failures >= self->config->sync.offline_after) &&
            self->conn != C_OFFLINE) {
            ts_copy_text(self->api_state, sizeof self->api_state, "offline");
            conn_set(self, C_OFFLINE, gone ? "server unreachable" : "consecutive failures");
        }
        return;
    }
    if (e == TS_API_UNAUTHORIZED || e == TS_API_TLS) {
        SET_ERROR(self, "%s: %s (%s)", what,
                 ts_api_error_name(e), res->message);
        ts_copy_text(self->api_state, sizeof self->api_state,
                 e == TS_API_TLS ? "tls" : "unauthorized");
        conn_set(self, C_OFFLINE, ts_api_error_name(e));
        return;
    }
    /* The server answered: it is reachable. */
    self->consecutive_failures = 0;
    self->last_sync_ms = ts_wall_ms();
    if (push_overdue(self, ts_mono_us()))
        return; /* but a write of ours still waits: "timeout" stands (sync_conn_watch) */
    if (e == TS_API_OK) {
        ts_copy_text(self->api_state, sizeof self->api_state, "ok");
    } else if (e == TS_API_SERVER_ERROR || e == TS_API_TOO_MANY_REQUESTS ||
               e == TS_API_BAD_RESPONSE) {
        SET_ERROR(self, "%s: %s (status %ld)", what,
                 ts_api_error_name(e), res->status);
    }
    if (self->conn != C_ONLINE) {
        ts_copy_text(self->api_state, sizeof self->api_state, "ok");
        conn_set(self, C_ONLINE, "answered");
    }
}

void sync_probe_send(sync_t *self)
{
    req_t *r = sync_req_new(self, R_PROBE);
    ts_api_request_t *q =
        sync_get_request("/v1/changes?since=%s&timeout=0&limit=1", *self->cursor ? self->cursor : "0");
    if (q) {
        q->max_attempts = 1;
        q->timeout_ms = 3000;
        q->shape = TS_API_SHAPE_CHANGES;
    }
    if (sync_api_send(self, q, r) == 0)
        self->probe_id = r->id;
}

void sync_on_probe(sync_t *self, ts_api_result_t *res)
{
    self->probe_id = 0;
    sync_conn_note(self, res, "probe");
    if (self->conn == C_OFFLINE)
        self->probe_due_us =
            ts_mono_us() + sync_backoff_us(++self->probe_failures + 1, PROBE_BASE_MS, PROBE_CAP_MS);
}
