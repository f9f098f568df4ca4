/* outbox.c — the outbox's packed rows (see outbox.h). */
#include "persist/outbox.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "packs are written little-endian");

#define PACK_HEADER 36 /* size, seq, base_version, at_ms, op, has_body, 0, body_len */

int ts_pack_append(ts_buf_t *pack, const ts_record_t *r)
{
    const char *strings[] = {r->mutation, r->client, r->collection, r->doc_id};
    size_t lens[4], size = PACK_HEADER + r->body_len;
    for (int i = 0; i < 4; i++)
        size += (lens[i] = strlen(strings[i])) + 1;
    if (size > UINT32_MAX)
        return -1;
    ts_buf_reserve(pack, size);
    char *p = pack->data + pack->len;
    uint32_t size32 = (uint32_t)size, body_len = (uint32_t)r->body_len;
    uint8_t flags[4] = {(uint8_t)r->op, r->body != NULL, 0, 0};
    memcpy(p, &size32, 4);
    memcpy(p + 4, &r->seq, 8);
    memcpy(p + 12, &r->version, 8);
    memcpy(p + 20, &r->at_ms, 8);
    memcpy(p + 28, flags, 4);
    memcpy(p + 32, &body_len, 4);
    p += PACK_HEADER;
    for (int i = 0; i < 4; i++) {
        memcpy(p, strings[i], lens[i] + 1);
        p += lens[i] + 1;
    }
    if (r->body_len)
        memcpy(p, r->body, r->body_len);
    pack->len += size;
    pack->data[pack->len] = '\0';
    return 0;
}

bool ts_pack_next(const char *pack, size_t len, size_t *pos, ts_packed_t *out)
{
    if (*pos > len || len - *pos < PACK_HEADER)
        return false;
    const char *p = pack + *pos;
    uint32_t size, body_len;
    uint8_t flags[4];
    memcpy(&size, p, 4);
    memcpy(&out->seq, p + 4, 8);
    memcpy(&out->base_version, p + 12, 8);
    memcpy(&out->at_ms, p + 20, 8);
    memcpy(flags, p + 28, 4);
    memcpy(&body_len, p + 32, 4);
    if (size < PACK_HEADER + 4 + (size_t)body_len || size > len - *pos)
        return false;
    const char *s = p + PACK_HEADER, *end = p + size - body_len;
    const char **strings[] = {&out->mutation, &out->client, &out->collection, &out->doc_id};
    for (int i = 0; i < 4; i++) {
        const char *nul = memchr(s, '\0', (size_t)(end - s));
        if (!nul)
            return false;
        *strings[i] = s;
        s = nul + 1;
    }
    if (s != end)
        return false;
    out->op = (ts_op_t)flags[0];
    out->body = flags[1] ? end : NULL;
    out->body_len = body_len;
    *pos += size;
    return true;
}

void ts_pack_index_add(ts_pack_index_t *index, int64_t first, int64_t last, uint32_t live)
{
    if (index->n == index->cap)
        index->entries = ts_grow(index->entries, &index->cap, sizeof *index->entries, 64);
    index->entries[index->n++] = (ts_pack_entry_t){first, last, live};
}

ts_pack_entry_t *ts_pack_index_find(const ts_pack_index_t *index, int64_t seq)
{
    size_t lo = 0, hi = index->n; /* the first entry with first > seq */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (index->entries[mid].first <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    ts_pack_entry_t *e = lo ? &index->entries[lo - 1] : NULL;
    return e && seq <= e->last ? e : NULL;
}

void ts_pack_index_remove(ts_pack_index_t *index, ts_pack_entry_t *entry)
{
    size_t i = (size_t)(entry - index->entries);
    memmove(entry, entry + 1, (index->n - i - 1) * sizeof *entry);
    index->n--;
}

void ts_pack_index_free(ts_pack_index_t *index)
{
    free(index->entries);
    memset(index, 0, sizeof *index);
}
