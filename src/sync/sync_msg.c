/* sync_msg.c — the messages between the store and the sync actor. */
#include "therasync/sync.h"
#include "msgs/call.h"
#include "therasync/util.h"

#include <stdlib.h>

ts_sync_update_t *ts_sync_update_new(ts_sync_kind_t kind)
{
    ts_sync_update_t *u = ts_xcalloc(1, sizeof *u);
    u->kind = kind;
    return u;
}

void ts_sync_update_free(ts_sync_update_t *u)
{
    if (!u)
        return;
    cJSON_Delete(u->doc);
    cJSON_Delete(u->errors);
    cJSON_Delete(u->status);
    ts_envelope_free(u->answer);
    free(u);
}

void ts_digest_free(ts_digest_t *d)
{
    if (!d)
        return;
    free(d->versions);
    free(d);
}
