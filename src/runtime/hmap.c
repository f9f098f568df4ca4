/* hmap.c — string-keyed hash tables (therasync/hmap.h). */
#include "therasync/hmap.h"
#include "therasync/util.h"

#include <stdlib.h>
#include <string.h>

uint64_t hmap_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

hnode_t *hmap_find(const hmap_t *m, const char *key, size_t len, uint64_t hash)
{
    if (!m->cap)
        return NULL;
    for (hnode_t *n = m->buckets[hash & (m->cap - 1)]; n; n = n->next)
        if (n->hash == hash && n->key_len == len && memcmp(n->key, key, len) == 0)
            return n;
    return NULL;
}

static void grow(hmap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    hnode_t **b = ts_xcalloc(cap, sizeof *b);
    for (size_t i = 0; i < m->cap; i++) {
        while (m->buckets[i]) {
            hnode_t *n = m->buckets[i];
            m->buckets[i] = n->next;
            n->next = b[n->hash & (cap - 1)];
            b[n->hash & (cap - 1)] = n;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->cap = cap;
}

void hmap_add(hmap_t *m, hnode_t *n)
{
    if (m->count >= m->cap)
        grow(m);
    hnode_t **b = &m->buckets[n->hash & (m->cap - 1)];
    n->next = *b;
    *b = n;
    m->count++;
}

void hmap_del(hmap_t *m, hnode_t *n)
{
    for (hnode_t **p = &m->buckets[n->hash & (m->cap - 1)]; *p; p = &(*p)->next) {
        if (*p == n) {
            *p = n->next;
            m->count--;
            return;
        }
    }
}

void hmap_free(hmap_t *m)
{
    free(m->buckets);
    memset(m, 0, sizeof *m);
}
