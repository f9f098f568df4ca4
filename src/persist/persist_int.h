/* persist_int.h — inside the persistence actor (src/persist/): its state,
 * persist_t, and the functions its files share. Other actors talk to it
 * only through messages (therasync/persist.h). */
#ifndef THERASYNC_PERSIST_INT_H
#define THERASYNC_PERSIST_INT_H

#include "msgs/msgs.h"
#include "therasync/persist.h"
#include "msgs/call.h"
#include "therasync/hist.h"
#include "therasync/json.h"
#include "persist/outbox.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LOG "persist"

typedef struct ts_seal ts_seal_t; /* a store key (seal.c) */

#define PERSIST_MAX_WRITERS 64 /* clients a group commit waits for, at most */

typedef struct {
    const ts_config_t *config;
    ts_actor_t *actor;
    int lock_fd;
    sqlite3 *db;
    sqlite3_stmt *insert_pack;     /* outbox append: a commit's new mutations */
    sqlite3_stmt *mark_gone;       /* a packed mutation left the outbox */
    sqlite3_stmt *read_pack;
    sqlite3_stmt *delete_pack;     /* and its gone marks */
    sqlite3_stmt *delete_gone;
    sqlite3_stmt *archive_packed;  /* a packed mutation's audit row(s) */
    sqlite3_stmt *insert_mutation; /* outbox row: a mutation rewritten in its place */
    sqlite3_stmt *drop_mutation;   /* outbox row delete by seq */
    sqlite3_stmt *archive_mutation;/* its "accepted" audit line, before the delete */
    sqlite3_stmt *archive_outcome; /* the same with its send and outcome in one row */
    sqlite3_stmt *put_confirmed;   /* docs upsert */
    sqlite3_stmt *put_cursor;      /* meta cursor */
    sqlite3_stmt *insert_audit;    /* audit append */
    sqlite3_stmt *put_match;       /* outbox_match insert, or */
    sqlite3_stmt *raise_match;     /* update when the row is there */
    sqlite3_stmt *drop_match;      /* outbox_match delete by seq */
    int64_t matches;               /* rows in outbox_match: a drop deletes its row only
                                      when there are any (they are rare) */
    ts_pack_index_t packs;         /* the live packs */
    ts_buf_t pack;                 /* the pack being written */
    int64_t pack_first, pack_last;
    int64_t seq_high;              /* the highest seq in the outbox (rows, packs) so far */
    uint32_t pack_count;
    int64_t cached_first;          /* the pack last read (0: none), for drops in a row */
    ts_buf_t cached;
    size_t *cached_at;             /* its records' offsets, by seq */
    size_t ncached, cached_cap;
    void *to_sync;                 /* PUSH: committed records (NULL: standalone) */
    void *inbox;                   /* PULL: envelopes and requests */
    void *to_front;                /* PUSH: committed envelopes */
    void *to_store;                /* PUSH: recovery chunks, rollbacks */
    void *to_checkpointer;         /* PUSH: "the WAL has grown", backup calls */
    ts_actor_t *checkpointer;
    int wal_pages;                 /* WAL size after the last commit (wal hook) */
    int page_size;                 /* the database's, for where the WAL's frames end */
    int wal_fd;                    /* the WAL file, for writing zeros past its end */
    int64_t wal_ahead_to;          /* the WAL file holds written blocks up to here */
    int64_t checkpoint_asked_us;
    struct stat files[3];          /* the data dir's files as opened (data_files) */
    struct stat dir;               /* and the dir itself */
    int watch;                     /* inotify on the dir (-1: none, stat every time) */
    const char *lost;              /* NULL, or why the data dir takes no more writes */
    ts_seal_t *seal;               /* the store's key; NULL: a plain store (seal.c) */
    ts_buf_t ad, sealed;           /* a value's associated data, and the value sealed */
    /* group commit: the clients that wrote lately (persist.c) */
    struct {
        uint64_t client;           /* a hash of its routing id */
        int64_t at_us;             /* its last write here */
    } writers[PERSIST_MAX_WRITERS];
    size_t nwriters;
    /* counters for `metrics` */
    uint64_t commits, records, failed_commits, wal_restarts, group_waits;
    int64_t group_wait_us_total;
    int64_t commit_us_total, commit_us_max;
    ts_hist_t commit_us;           /* a commit's wall time, its fsync included */
} persist_t;

/* schema.c */
int persist_exec(persist_t *self, const char *sql);
int persist_pragma_int(persist_t *self, const char *sql);
int persist_open_db(persist_t *self);

/* checkpointer.c */
void persist_checkpointer_actor(ts_actor_t *actor, void *args);
int persist_on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages);
void persist_maybe_restart_wal(persist_t *self, bool clients_wait);
void persist_maybe_checkpoint(persist_t *self);

/* wal.c */
void persist_keep_wal_ahead(persist_t *self);

/* storage.c */
int persist_lock_data_dir(persist_t *self);
void persist_remember_files(persist_t *self);
bool persist_storage_lost(persist_t *self, bool always, bool tell_store);
int persist_on_storage_timer(ts_loop_t *loop, int timer_id, void *arg);

/* pack.c */
int persist_flush_pack(persist_t *self);
int persist_add_to_pack(persist_t *self, const ts_record_t *r);
void persist_load_pack_index(persist_t *self);
int persist_cache_pack(persist_t *self, const ts_pack_entry_t *entry);
int persist_packed_record(persist_t *self, const ts_pack_entry_t *entry, int64_t seq,
                          ts_packed_t *out);
void persist_bind_accepted(sqlite3_stmt *s, const ts_packed_t *m);
int persist_drop_packed(persist_t *self, const ts_record_t *r, ts_pack_entry_t *entry);
int persist_cmp_seq(const void *a, const void *b);
int persist_load_gone(persist_t *self, int64_t **gone, size_t *n);
bool persist_is_gone(const int64_t *gone, size_t n, int64_t seq);

/* records.c */
int persist_write_record(persist_t *self, const ts_record_t *r);
int persist_bind_outcome(persist_t *self, sqlite3_stmt *s, int first, const ts_record_t *drop);

/* audit.c */
void persist_answer_audit(persist_t *self, ts_call_t *call);
/* backup.c */
int64_t persist_backup_to(sqlite3 *db, const char *path, bool (*stopping)(void *), void *arg,
                          char *err, size_t errlen);
void persist_backup_call(sqlite3 *db, ts_call_t *call, bool (*stopping)(void *), void *arg);
/* Makes path's directory entry durable (a file's new name). 0 or -1. */
int persist_sync_dir(const char *path);

/* seal.c: values sealed under the store's key, when it has one. A value
 * is bound, or read, with its row's identity (tag, a, b, n): see
 * persist_seal_ad. persist_bind_value's sealed value lives until the next
 * call: step the statement first. persist_column_value: 0 (value NULL for
 * SQL NULL), or -1 when it does not open (a damaged or moved row). */
int persist_open_key(persist_t *self);
/* What meta says of the store's key: 0 plain, 1 sealed (its id into id),
 * -1 when it cannot be read. */
int persist_store_key(sqlite3 *db, char *id, size_t idlen);
int persist_seal_load(const ts_config_t *config, ts_seal_t **out, char *err, size_t errlen);
void persist_seal_free(ts_seal_t *k);
const char *persist_seal_id(const ts_seal_t *k);
void persist_seal_ad(ts_buf_t *ad, const char *tag, const char *a, const char *b, int64_t n);
/* A sealed value opened into out with its associated data: 0, or -1.
 * Reads the key only: any thread may call it. */
int persist_seal_open(const ts_seal_t *k, const void *sealed, size_t len, const ts_buf_t *ad,
                      ts_buf_t *out);
int persist_bind_value(persist_t *self, sqlite3_stmt *s, int i, const char *tag, const char *a,
                       const char *b, int64_t n, const char *value, size_t len, bool blob);
int persist_column_value(persist_t *self, sqlite3_stmt *s, int col, const char *tag,
                         const char *a, const char *b, int64_t n, ts_buf_t *out,
                         const char **value, size_t *len);

/* recover.c */
void persist_recover(persist_t *self);

#endif
