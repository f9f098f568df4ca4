/* digest.c — a collection's digest of its confirmed documents, computed
 * as the Clinic API does, for the sync actor's checks. */
#include "store_int.h"
#include "therasync/sha256.h"

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const struct ts_digest_entry *)a)->id, ((const struct ts_digest_entry *)b)->id);
}

/* The content hash of a confirmed body, computed once per body. */
const uint8_t *store_confirmed_content(confirmed_t *conf)
{
    if (!conf->hashed && ts_json_text_content_sha256(conf->text, conf->len, conf->content) == 0)
        conf->hashed = true;
    else if (!conf->hashed) /* out of memory: a hash that matches nothing, tried again next time */
        memset(conf->content, 0, sizeof conf->content);
    return conf->content;
}

/* Fills a digest of a collection's live confirmed documents, the way the
 * Clinic API computes it, and sends it back to the sync actor. */
void store_answer_digest(store_t *self, ts_digest_t *dg)
{
    collection_t *c = store_find_collection(self, dg->collection);
    size_t n = 0;
    for (size_t i = 0; c && i < c->cap; i++) {
        doc_t *d = doc_at(c, i);
        n += d && d->confirmed && d->confirmed->len;
    }
    struct ts_digest_entry *list = n ? ts_xmalloc(n * sizeof *list) : NULL;
    size_t k = 0;
    for (size_t i = 0; list && c && i < c->cap; i++) {
        doc_t *d = doc_at(c, i);
        if (!d || !d->confirmed || !d->confirmed->len)
            continue;
        memcpy(list[k].id, d->id, d->id_len);
        list[k].id[d->id_len] = '\0';
        ts_sha256_to_hex(store_confirmed_content(d->confirmed), list[k].content);
        list[k++].version = d->confirmed->version;
    }
    if (list)
        qsort(list, k, sizeof *list, compare_entries);
    /* Both forms: a server that predates content digests answers the older. */
    ts_sha256_t sha, vsha;
    ts_sha256_init(&sha);
    ts_sha256_init(&vsha);
    for (size_t i = 0; i < k; i++) {
        char line[160];
        int len = snprintf(line, sizeof line, "%s:%lld\n", list[i].id, (long long)list[i].version);
        ts_sha256_update(&vsha, line, (size_t)len);
        len = snprintf(line, sizeof line, "%s:%lld:%s\n", list[i].id, (long long)list[i].version,
                       list[i].content);
        ts_sha256_update(&sha, line, (size_t)len);
    }
    uint8_t digest[32];
    ts_sha256_final(&sha, digest);
    ts_sha256_to_hex(digest, dg->hash);
    ts_sha256_final(&vsha, digest);
    ts_sha256_to_hex(digest, dg->hash_versions);
    dg->count = k;
    if (dg->want_versions) {
        dg->versions = list;
        dg->nversions = k;
    } else {
        free(list);
    }
    if (!self->to_sync || ts_send_DIGEST(self->to_sync, &dg, 1))
        ts_digest_free(dg);
}
