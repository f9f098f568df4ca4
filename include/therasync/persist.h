/* persist.h — the persistence actor: the only owner of the SQLite database.
 *
 * The durable path is sequential: every accepted write appends one row to
 * the outbox (INTEGER PRIMARY KEY = the store's sequence number), so a
 * commit costs one WAL append and one fsync for a whole batch of writes
 * (group commit: everything queued while a commit runs goes into the next).
 * The confirmed (server) documents are written off the critical path, when
 * sync confirms mutations.
 *
 * Sockets: PULL bound at TS_INPROC_PERSIST takes TS_MSG_COMMIT (append
 * the calls' records, commit, pass the envelopes to TS_INPROC_FRONT) and
 * TS_MSG_RECOVER (stream the database to TS_INPROC_STORE as
 * TS_MSG_RECOVERED chunks). Envelopes whose records fail to commit are
 * answered with an error and go back to the store as TS_MSG_ROLLBACK, which
 * drops the writes before passing the answers on.
 *
 * With an API configured, the committed records of every batch are then
 * handed to the sync actor (TS_INPROC_SYNC, TS_MSG_OUTBOX), so it pushes
 * only what is durable. `audit` calls are answered here, from the audit
 * table, which the same transactions append to.
 *
 * The data dir is locked (flock on DIR/LOCK): a second daemon on the same
 * dir fails to start with a message naming the holder's pid. If the dir is
 * removed or replaced while the daemon runs (its LOCK and database files
 * are not the ones opened any more), every write from then on is refused
 * and the store is told once (TS_MSG_STORAGE, for `status`). */
#ifndef THERASYNC_PERSIST_H
#define THERASYNC_PERSIST_H

#include "therasync/actor.h"
#include "therasync/config.h"

#define TS_SCHEMA_VERSION 5

/* Opens (creating, migrating, recovering) the database under config's data
 * dir. Returns NULL after logging why when the dir is unusable. */
ts_actor_t *ts_persist_start(void *zctx, const ts_config_t *config);

/* `therasync rekey`: re-seals the stopped store in data_dir from the key in
 * old_key_file (NULL: the store is plain) to the one in new_key_file, in
 * one transaction (SECURITY.md). Idempotent: done when the new key opens it
 * already. 0, or -1 with the reason in err. */
int ts_persist_rekey(const char *data_dir, const char *old_key_file, const char *new_key_file,
                     char *err, size_t errlen);

/* `therasync restore`: puts the backup at path in place as the database of
 * the stopped daemon's data_dir (OPERATIONS.md, Restore). The backup is
 * copied in and checked first (a whole SQLite database of a therasync
 * schema this build reads); the database it replaces, its WAL folded in,
 * is kept as therasync.db.before-restore-STAMP. A database that still holds
 * writes the Clinic API has not accepted (acknowledged to clients, then
 * only in the kept file) is replaced only with force. 0, or -1 with the
 * reason in err (the data dir then holds what it held, unless err says
 * where a rename left it). */
int ts_persist_restore(const char *data_dir, const char *path, bool force, char *err,
                       size_t errlen);

/* therasyncd --check-config: whether the store's key the config names (or
 * the systemd credential) can be read. 0 (*sealed: there is one), or -1
 * with err. */
int ts_persist_check_key(const ts_config_t *config, bool *sealed, char *err, size_t errlen);

#endif
