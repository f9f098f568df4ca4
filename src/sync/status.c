/* status.c — the sync part of `status` (online, api, last error, cursor,
 * queue, feed state...), sent to the store when it changed. */
#include "sync_int.h"

/* The status part the store merges into `status`; sent when something in it
 * changed (a cursor-only change at most every STATUS_CURSOR_EVERY_US). */
void sync_status_maybe_send(sync_t *self, bool force)
{
    char ts[32] = "";
    if (self->last_sync_ms)
        ts_rfc3339(self->last_sync_ms, ts);
    char sig[512];
    bool batch = !self->batch_off && self->batch_limit > 1;
    /* Everything `status` shows but the cursor and the counts, which may
     * wait STATUS_CURSOR_EVERY_US (the feed too: a fallback to long
     * polling went unseen while nothing else changed). */
    snprintf(sig, sizeof sig, "%d|%s|%s|%d|%" PRIu64 "|%d|%d", self->conn == C_ONLINE,
             self->api_state, self->last_error, self->stuck, self->repairs, batch,
             (int)self->pull);
    int64_t now = ts_mono_us();
    bool changed = strcmp(sig, self->status_sig) != 0;
    uint64_t counters_sum = self->requests + self->pushed + self->pulled + self->echoes;
    bool cursor_moved = strcmp(self->cursor, self->status_cursor) != 0 ||
                        self->queued != self->status_queued ||
                        self->in_flight != self->status_in_flight ||
                        counters_sum != self->counters_sum;
    if (!force && !changed &&
        !(cursor_moved && now - self->status_sent_us >= STATUS_CURSOR_EVERY_US))
        return;
    cJSON *s = cJSON_CreateObject();
    cJSON_AddBoolToObject(s, "online", self->conn == C_ONLINE);
    cJSON_AddStringToObject(s, "api", self->api_state);
    if (*ts)
        cJSON_AddStringToObject(s, "last_sync_at", ts);
    else
        cJSON_AddNullToObject(s, "last_sync_at");
    if (*self->last_error) { /* the last one seen, kept after recovery, with its time */
        char at[32];
        ts_rfc3339(self->last_error_ms, at);
        cJSON_AddStringToObject(s, "last_error", self->last_error);
        cJSON_AddStringToObject(s, "last_error_at", at);
    } else {
        cJSON_AddNullToObject(s, "last_error");
    }
    if (*self->cursor)
        cJSON_AddStringToObject(s, "cursor", self->cursor);
    else
        cJSON_AddNullToObject(s, "cursor");
    cJSON_AddNumberToObject(s, "stuck", self->stuck);
    cJSON_AddNumberToObject(s, "in_flight", self->in_flight);
    cJSON_AddNumberToObject(s, "queued", (double)self->queued);
    cJSON_AddStringToObject(s, "feed", sync_pstate_names[self->pull]);
    cJSON_AddNumberToObject(s, "repairs", (double)self->repairs);
    cJSON_AddBoolToObject(s, "batch", batch);
    /* For `metrics` (the store keeps the last status): what sync did and
     * what the Clinic API cost, counted since start. Not part of `status`. */
    cJSON *c = cJSON_AddObjectToObject(s, "counters");
    const struct {
        const char *name;
        uint64_t value;
    } counters[] = {{"pushed", self->pushed},       {"pulled", self->pulled},
                    {"confirmed", self->confirmed}, {"rejected", self->rejected},
                    {"conflicts", self->conflicts}, {"sends", self->sends},
                    {"retries", self->retries},     {"echoes", self->echoes},
                    {"api_requests", self->requests}, {"api_attempts", self->attempts},
                    {"api_token_refreshes", self->token_refreshes}};
    for (size_t i = 0; i < sizeof counters / sizeof *counters; i++)
        cJSON_AddNumberToObject(c, counters[i].name, (double)counters[i].value);
    self->counters_sum = counters_sum;
    ts_sync_update_t *u = sync_emit(self, TS_SYNC_STATUS, NULL);
    u->status = s;
    memcpy(self->status_sig, sig, sizeof sig);
    memcpy(self->status_cursor, self->cursor, sizeof self->cursor);
    self->status_queued = self->queued;
    self->status_in_flight = self->in_flight;
    self->status_sent_us = now;
}
