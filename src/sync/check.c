/* check.c — the sync actor's consistency checks: per collection, compare the
 * server's digest with the replica's, and when they differ list both and
 * repair the drifted documents with REMOTE updates (a check's phase:
 * K_IDLE → K_DIGESTS → K_LOCAL_LIST → K_SERVER_LIST → K_IDLE). */
#include "sync_int.h"
#include "therasync/sha256.h"

void sync_check_finish(sync_t *self, check_t *k)
{
    ts_digest_free(k->local);
    k->local = NULL;
    cJSON_Delete(k->items);
    k->items = NULL;
    k->phase = K_IDLE;
    (void)self;
}

static void check_start(sync_t *self, int coll)
{
    check_t *k = &self->checks[coll];
    if (k->phase != K_IDLE || self->conn == C_OFFLINE)
        return;
    ts_digest_t *dg = ts_xcalloc(1, sizeof *dg);
    req_t *r = sync_req_new(self, R_DIGEST);
    ts_api_request_t *q = sync_get_request("/v1/%s/digest", self->config->collections[coll]);
    if (!q) {
        free(dg);
        sync_req_free(self, r);
        return;
    }
    q->shape = TS_API_SHAPE_DIGEST;
    r->check = k;
    ts_copy_text(dg->collection, sizeof dg->collection, self->config->collections[coll]);
    dg->user = k;
    if (sync_api_send(self, q, r)) {
        free(dg);
        return;
    }
    if (ts_send_DIGEST_ASK(self->to_store, &dg, 1)) {
        free(dg); /* the digest answer will come back alone; the check then stalls until */
        k->phase = K_IDLE; /* the next period (have_local stays false) */
        return;
    }
    k->phase = K_DIGESTS;
    k->have_local = k->have_server = false;
}

/* Drift is likeliest after a reconnect or a gap in the feed (changes may
 * have been missed, a server restored): check sync.digest_soon_s from now,
 * then again every sync.digest_interval_s. */
void sync_check_soon(sync_t *self, const char *why)
{
    int soon = self->config->sync.digest_soon_s;
    if (soon <= 0 || self->config->sync.digest_interval_s <= 0)
        return;
    int64_t at = ts_mono_us() + (int64_t)soon * 1000000;
    if (!self->check_soon || at < self->next_check_us)
        ts_debug(LOG, "digest check in %d s (%s)", soon, why);
    self->check_soon = true;
    if (at < self->next_check_us)
        self->next_check_us = at;
}

void sync_checks_start_all(sync_t *self)
{
    for (size_t i = 0; i < self->config->ncollections; i++)
        if (!self->config->ondemand[i].on) /* held in part: no digest to compare */
            check_start(self, (int)i);
}

void sync_list_page(sync_t *self, check_t *k, round_t *rd, const char *coll, const char *since)
{
    req_t *r = sync_req_new(self, R_LIST);
    ts_api_request_t *q = sync_get_request("/v1/%s?since=%s&limit=%d", coll, since, PAGE_LIMIT);
    if (q)
        q->shape = TS_API_SHAPE_PAGE;
    r->check = k;
    r->round = rd;
    if (sync_api_send(self, q, r) && k)
        sync_check_finish(self, k);
}

static int compare_items(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    const char *ix = ts_json_string(x, "id"), *iy = ts_json_string(y, "id");
    return strcmp(ix ? ix : "", iy ? iy : "");
}

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const struct ts_digest_entry *)a)->id, ((const struct ts_digest_entry *)b)->id);
}

/* A live server document at our version whose body is not ours (the
 * store compares again before it replaces anything). */
static bool content_differs(const cJSON *item, const struct ts_digest_entry *mine)
{
    uint8_t sum[32];
    char hex[65];
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "deleted")) ||
        ts_json_content_sha256(item, sum))
        return false;
    ts_sha256_to_hex(sum, hex);
    return strcmp(hex, mine->content) != 0;
}

/* Both lists are in: send REMOTE updates for every drifted document. */
void sync_check_repair(sync_t *self, check_t *k)
{
    const char *coll = self->config->collections[k->coll];
    size_t ns = (size_t)cJSON_GetArraySize(k->items);
    cJSON **items = ns ? ts_xmalloc(ns * sizeof *items) : NULL;
    size_t i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, k->items)
    {
        if (items && ts_json_string(it, "id"))
            items[i++] = it;
    }
    ns = items ? i : 0;
    if (ns)
        qsort(items, ns, sizeof *items, compare_items);
    ts_digest_t *l = k->local;
    if (l->nversions)
        qsort(l->versions, l->nversions, sizeof *l->versions, compare_entries);
    size_t a = 0, b = 0;
    uint64_t repaired = 0;
    self->repairing = true; /* the changes below are repairs (audited so) */
    while (a < ns || b < l->nversions) {
        int c = a >= ns ? 1
                : b >= l->nversions
                    ? -1
                    : strcmp(ts_json_string(items[a], "id"), l->versions[b].id);
        if (c < 0) { /* only at the server */
            if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(items[a], "deleted")))
                repaired += sync_apply_change(self, coll, items[a]);
            a++;
        } else if (c > 0) { /* only here: the server no longer has it */
            ts_sync_update_t *u = sync_emit(self, TS_SYNC_REMOTE, NULL);
            if (u) {
                ts_copy_text(u->collection, sizeof u->collection, coll);
                ts_copy_text(u->doc_id, sizeof u->doc_id, l->versions[b].id);
                u->doc = cJSON_CreateObject();
                cJSON_AddStringToObject(u->doc, "id", l->versions[b].id);
                cJSON_AddBoolToObject(u->doc, "deleted", 1);
                u->version = 0; /* force: see sync.h */
                u->repair = true;
                repaired++;
            }
            b++;
        } else {
            long long v = 0;
            ts_json_int(items[a], "version", &v);
            if (v != l->versions[b].version || content_differs(items[a], &l->versions[b]))
                repaired += sync_apply_change(self, coll, items[a]);
            a++;
            b++;
        }
    }
    free(items);
    self->repairing = false;
    self->repairs += repaired;
    if (repaired)
        ts_info(LOG, "digest check of %s: %" PRIu64 " documents repaired", coll, repaired);
    /* the status counting them goes with the repairs, in one message: a
     * client that sees a repaired document never reads an older count */
    sync_status_maybe_send(self, false);
    sync_flush(self);
    sync_check_finish(self, k);
}

static void check_compare(sync_t *self, check_t *k)
{
    if (!k->have_local || !k->have_server)
        return;
    /* A server that predates content digests answers the version form. */
    const char *mine = k->server_content ? k->local->hash : k->local->hash_versions;
    if (k->local->count == k->server_count && strcmp(mine, k->server_hash) == 0) {
        ts_debug(LOG, "digest of %s matches (%" PRIu64 " documents)",
                 self->config->collections[k->coll], k->server_count);
        sync_check_finish(self, k);
        return;
    }
    ts_info(LOG, "digest of %s differs (here %" PRIu64 ", server %" PRIu64 "): listing",
            self->config->collections[k->coll], k->local->count, k->server_count);
    /* Local list first, then the server's: a document confirmed here is on
     * the server already, so one missing from a later server list is gone. */
    ts_digest_t *dg = k->local;
    k->local = NULL;
    memset(dg, 0, sizeof *dg);
    ts_copy_text(dg->collection, sizeof dg->collection, self->config->collections[k->coll]);
    dg->want_versions = true;
    dg->user = k;
    if (ts_send_DIGEST_ASK(self->to_store, &dg, 1)) {
        free(dg);
        sync_check_finish(self, k);
        return;
    }
    k->phase = K_LOCAL_LIST;
}

void sync_on_digest_local(sync_t *self, ts_digest_t *dg)
{
    check_t *k = dg->user;
    if (!k || k < self->checks || k >= self->checks + self->config->ncollections ||
        (k->phase != K_DIGESTS && k->phase != K_LOCAL_LIST)) {
        ts_digest_free(dg);
        return;
    }
    ts_digest_free(k->local);
    k->local = dg;
    if (k->phase == K_DIGESTS) {
        k->have_local = true;
        check_compare(self, k);
        return;
    }
    k->phase = K_SERVER_LIST;
    k->items = cJSON_CreateArray();
    sync_list_page(self, k, NULL, self->config->collections[k->coll], "0");
}

void sync_on_digest_server(sync_t *self, ts_api_result_t *res, check_t *k)
{
    sync_conn_note(self, res, "digest");
    if (res->error != TS_API_OK) {
        sync_check_finish(self, k);
        return;
    }
    long long count = 0;
    ts_json_int(res->json, "count", &count);
    k->server_count = (uint64_t)count;
    ts_copy_text(k->server_hash, sizeof k->server_hash, ts_json_string(res->json, "hash"));
    const char *form = ts_json_string(res->json, "form");
    k->server_content = form && strcmp(form, "content") == 0;
    k->have_server = true;
    check_compare(self, k);
}
