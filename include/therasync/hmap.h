/* hmap.h — string-keyed hash tables: chained, intrusive (the node lives
 * in what it indexes), doubled at load 1. The cache's answers and the
 * front door's copies of them are found with them. */
#ifndef THERASYNC_HMAP_H
#define THERASYNC_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct hnode {
    struct hnode *next;
    uint64_t hash;
    const char *key;
    size_t key_len;
} hnode_t;

typedef struct {
    hnode_t **buckets;
    size_t cap, count;
} hmap_t;

uint64_t hmap_hash(const char *key, size_t len);
hnode_t *hmap_find(const hmap_t *m, const char *key, size_t len, uint64_t hash);
void hmap_add(hmap_t *m, hnode_t *n); /* n->key, key_len and hash set */
void hmap_del(hmap_t *m, hnode_t *n);
void hmap_free(hmap_t *m);            /* the table, not the nodes */

/* The struct a node is the member `member` of. */
#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
