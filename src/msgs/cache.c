/* cache.c — the cache actor's message payloads (cache.h). */
#include "msgs/cache.h"

#include "therasync/util.h"

#include <stdlib.h>
#include <string.h>

ts_change_t *ts_change_new(uint16_t collection, const char *id, size_t id_len,
                           const char *old_text, size_t old_len, const char *new_text,
                           size_t new_len)
{
    size_t ol = old_text ? old_len : 0, nl = new_text ? new_len : 0;
    id_len = id_len > 255 ? 255 : id_len;
    ts_change_t *c = ts_xmalloc(sizeof *c + id_len + ol + nl + 1);
    c->next = NULL;
    c->collection = collection;
    c->origin = TS_CHANGE_LOCAL;
    c->has_old = old_text != NULL;
    c->has_new = new_text != NULL;
    c->id_len = (uint8_t)id_len;
    c->known = c->match = 0;
    c->old_len = (uint32_t)ol;
    c->new_len = (uint32_t)nl;
    memcpy(c->data, id, id_len);
    if (ol)
        memcpy(c->data + id_len, old_text, ol);
    if (nl)
        memcpy(c->data + id_len + ol, new_text, nl);
    c->data[id_len + ol + nl] = '\0';
    return c;
}

void ts_change_free_list(ts_change_t *head)
{
    while (head) {
        ts_change_t *next = head->next;
        free(head);
        head = next;
    }
}

void ts_readset_clear(ts_readset_t *rs)
{
    free(rs->field);
    free(rs->order);
    free(rs->key);
    free(rs->lo_str);
    free(rs->hi_str);
    free(rs->first_str);
    memset(rs, 0, sizeof *rs);
}

ts_cache_run_t *ts_cache_run_new(uint64_t token, uint16_t collection, cJSON *request)
{
    ts_cache_run_t *run = ts_xcalloc(1, sizeof *run);
    run->token = token;
    run->collection = collection;
    run->request = request;
    return run;
}

void ts_cache_run_free(ts_cache_run_t *run)
{
    if (!run)
        return;
    cJSON_Delete(run->request);
    free(run->err_message);
    free(run->result);
    ts_readset_clear(&run->read);
    for (size_t i = 0; i < run->nrows; i++)
        free(run->rows[i].str);
    free(run->rows);
    free(run);
}

void ts_selectors_free(ts_selectors_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->count; i++) {
        free(s->selectors[i].name);
        free(s->selectors[i].lower_bound);
        free(s->selectors[i].index);
        free(s->selectors[i].order);
        free(s->selectors[i].collection);
    }
    free(s->selectors);
    free(s);
}

void ts_notice_free_list(ts_notice_t *head)
{
    while (head) {
        ts_notice_t *next = head->next;
        free(head->route);
        free(head->payload);
        free(head);
        head = next;
    }
}
