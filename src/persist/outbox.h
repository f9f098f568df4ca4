/* outbox.h — the outbox's packed rows, for the persistence actor.
 *
 * A commit's new mutations go into the outbox as one row (a pack), not a
 * row each: SQLite's per-row work (a record of nine columns, a B-tree cell,
 * a statement run) was most of persist's CPU per write, and persist is the
 * pipeline's one serial stage. A pack is the mutations' records one after
 * another, each self-delimiting:
 *
 *   u32 size of the whole record · i64 seq · i64 base_version · i64 at_ms ·
 *   u8 op · u8 has_body · u16 0 · u32 body_len ·
 *   mutation NUL · client NUL · collection NUL · doc_id NUL · body
 *
 * (little-endian, as written by x86-64 and arm64). A mutation that leaves
 * the outbox (confirmed, rejected, cancelled) is noted as gone; a pack
 * whose mutations are all gone is deleted. The index below keeps, for each
 * pack, its range of seqs and how many of its mutations are live. */
#ifndef THERASYNC_OUTBOX_H
#define THERASYNC_OUTBOX_H

#include "msgs/call.h"
#include "therasync/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One mutation read from a pack; the strings point into the pack. */
typedef struct {
    int64_t seq, base_version, at_ms;
    ts_op_t op;
    const char *mutation, *client, *collection, *doc_id;
    const char *body; /* NULL when absent */
    size_t body_len;
} ts_packed_t;

/* Appends a TS_REC_MUTATION record to a pack. 0, or -1 when it is over
 * 4 GiB (a record's size is a u32). */
int ts_pack_append(ts_buf_t *pack, const ts_record_t *r);

/* Reads the record at *pos of a pack into *out and moves *pos past it;
 * false at the end, or when the pack is damaged there. */
bool ts_pack_next(const char *pack, size_t len, size_t *pos, ts_packed_t *out);

/* The live packs, by first seq. */
typedef struct {
    int64_t first, last; /* seqs of its first and last mutations */
    uint32_t live;        /* mutations not yet gone */
} ts_pack_entry_t;

typedef struct {
    ts_pack_entry_t *entries; /* sorted by first; ranges do not overlap */
    size_t n, cap;
} ts_pack_index_t;

/* Adds a pack after the others (its first seq above theirs). */
void ts_pack_index_add(ts_pack_index_t *index, int64_t first, int64_t last, uint32_t live);
/* The pack holding seq, or NULL. */
ts_pack_entry_t *ts_pack_index_find(const ts_pack_index_t *index, int64_t seq);
void ts_pack_index_remove(ts_pack_index_t *index, ts_pack_entry_t *entry);
void ts_pack_index_free(ts_pack_index_t *index);

#endif
