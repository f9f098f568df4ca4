/* restore.c — `therasync restore`: a backup put in place as the database of
 * a stopped daemon's data dir, the database it replaces kept beside it.
 *
 * The steps, each safe to be cut short (docs/OPERATIONS.md, Restore):
 * the backup is copied into the data dir as therasync.db.restoring and
 * checked there (a whole SQLite database, a therasync schema this build
 * reads); the current database is checkpointed, so that its WAL is in it;
 * then the two files swap names in one rename (RENAME_EXCHANGE), so the
 * dir always has a whole therasync.db, and the old one becomes
 * therasync.db.before-restore-STAMP. Nothing the data dir held is deleted;
 * writes it holds that never reached the Clinic API are counted first, and
 * the restore refused over them unless forced. */
#include "persist/persist_int.h"
#include "therasync/persist.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Copies from into a new file at to (mode 0600) and syncs it. 0, or -1
 * with err. */
static int copy_file(const char *from, const char *to, char *err, size_t errlen)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        snprintf(err, errlen, "cannot read %s: %s", from, strerror(errno));
        return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        snprintf(err, errlen, "cannot create %s: %s", to, strerror(errno));
        close(in);
        return -1;
    }
    char buf[1 << 16];
    ssize_t n = 0;
    while ((n = read(in, buf, sizeof buf)) > 0)
        for (ssize_t done = 0, w; done < n; done += w)
            if ((w = write(out, buf + done, (size_t)(n - done))) < 0) {
                n = -1;
                break;
            }
    int rc = n < 0 || fsync(out) ? -1 : 0;
    if (rc)
        snprintf(err, errlen, "cannot copy %s to %s: %s", from, to, strerror(errno));
    close(in);
    close(out);
    return rc;
}

/* One row of one column as text, or "" (into out). */
static int query_text(sqlite3 *db, const char *sql, char *out, size_t len)
{
    sqlite3_stmt *s;
    *out = '\0';
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(s, 0);
        snprintf(out, len, "%s", t ? t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Whether the copy at path is a database this build can start on: whole
 * (quick_check), a therasync schema not newer than ours. Sets *version
 * and key_id (left as it is when the store is plain). 0, or -1 with err. */
static int check_copy(const char *path, const char *backup, int *version, char *key_id,
                      size_t idlen, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    char text[256];
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = query_text(db, "PRAGMA quick_check", text, sizeof text);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s is not a database: %s", backup,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto done;
    }
    rc = -1;
    if (strcmp(text, "ok") != 0) {
        snprintf(err, errlen, "%s is damaged (SQLite's quick_check: %.120s)", backup, text);
        goto done;
    }
    if (query_text(db, "PRAGMA user_version", text, sizeof text) != SQLITE_OK ||
        (*version = (int)strtol(text, NULL, 10)) < 1 ||
        query_text(db, "SELECT count(*) FROM meta", text, sizeof text) != SQLITE_OK) {
        snprintf(err, errlen, "%s is a database, but not a therasync one", backup);
        goto done;
    }
    if (*version > TS_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s was made by a newer therasync (schema %d; this one reads up to %d)", backup,
                 *version, TS_SCHEMA_VERSION);
        goto done;
    }
    if (persist_store_key(db, key_id, idlen) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", backup, sqlite3_errmsg(db));
        goto done;
    }
    rc = 0;
done:
    sqlite3_close_v2(db); /* the last connection: its -wal and -shm go */
    return rc;
}

/* The writes of the database at path not yet accepted by the Clinic API
 * (its outbox: rows from before packs, packed ones not marked gone), WAL
 * included; -1 when it cannot be read (damaged: what a restore is for). */
static long long unsent_writes(const char *path)
{
    sqlite3 *db = NULL;
    char text[32];
    long long n = -1;
    /* Packs came with schema 4: an older database has the outbox alone. */
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK && /* its WAL too */
        query_text(db, "PRAGMA user_version", text, sizeof text) == SQLITE_OK &&
        query_text(db,
                   strtol(text, NULL, 10) >= 4 ? "SELECT (SELECT count(*) FROM outbox) + "
                                                 "(SELECT coalesce(sum(count), 0) FROM outbox_pack) - "
                                                 "(SELECT count(*) FROM outbox_gone)"
                                               : "SELECT count(*) FROM outbox",
                   text, sizeof text) == SQLITE_OK && *text)
        n = strtoll(text, NULL, 10);
    sqlite3_close_v2(db);
    return n;
}

/* Folds the WAL of the database at path into it (the last connection
 * removes the WAL at close). 0, or -1 when it could not: its -wal and
 * -shm then move aside with it. */
static int checkpoint(const char *path)
{
    sqlite3 *db = NULL;
    char text[64];
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = query_text(db, "PRAGMA wal_checkpoint(TRUNCATE)", text, sizeof text);
    rc = rc == SQLITE_OK && strcmp(text, "0") == 0 ? 0 : -1; /* first column: busy */
    if (sqlite3_close_v2(db) != SQLITE_OK)
        rc = -1;
    return rc;
}

int ts_persist_restore(const char *data_dir, const char *backup, bool force, char *err,
                       size_t errlen)
{
    ts_config_t config = {.data_dir = (char *)data_dir};
    persist_t p = {.config = &config, .lock_fd = -1};
    char db[PATH_MAX], temp[PATH_MAX + 16], kept[PATH_MAX + 64], side[PATH_MAX + 80];
    char key_id[80] = "", stamp[32];
    int version = 0, rc = -1;
    struct stat st;
    size_t blen = strlen(backup);
    if (blen > 8 && strcmp(backup + blen - 8, ".partial") == 0) {
        snprintf(err, errlen, "%s is a backup cut short (.partial): never restore it", backup);
        return -1;
    }
    snprintf(side, sizeof side, "%s-wal", backup);
    if (stat(backup, &st) || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: %s", backup,
                 S_ISDIR(st.st_mode) ? "a directory, not a backup" : strerror(errno));
        return -1;
    }
    /* Commits in a WAL beside it would not come along. An empty one is what
     * a read-only look (sqlite3 -readonly) leaves: nothing is in it. */
    if (stat(side, &st) == 0 && st.st_size > 0) {
        snprintf(err, errlen, "%s has a WAL beside it (%s): a live database, not a backup (take "
                              "one with `therasync backup`)", backup, side);
        return -1;
    }
    if (snprintf(db, sizeof db, "%s/therasync.db", data_dir) >= (int)sizeof db) {
        snprintf(err, errlen, "%s: path too long", data_dir);
        return -1;
    }
    snprintf(temp, sizeof temp, "%s.restoring", db);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(kept, sizeof kept, "%s.before-restore-%s", db, stamp);
    /* The daemon's own lock: refuses while it runs (its message says so). */
    if (persist_lock_data_dir(&p)) {
        snprintf(err, errlen, "cannot lock the data dir %s: stop therasyncd first (see above)",
                 data_dir);
        goto done;
    }
    if (access(temp, F_OK) == 0) { /* a restore cut short: it may be the old database */
        snprintf(err, errlen,
                 "%s is there from a restore cut short (it may hold the database it was "
                 "replacing): look at it, keep it or remove it, then restore again", temp);
        goto done;
    }
    if (access(kept, F_OK) == 0) {
        snprintf(err, errlen, "%s exists already: wait a second and restore again", kept);
        goto done;
    }
    if (copy_file(backup, temp, err, errlen))
        goto done;
    if (check_copy(temp, backup, &version, key_id, sizeof key_id, err, errlen)) {
        unlink(temp); /* only ever the copy made above */
        goto done;
    }
    /* Acknowledged writes the server never had would live on only in the
     * kept file, unsent: the operator decides that, not a default. */
    bool had = access(db, F_OK) == 0;
    long long unsent = had ? unsent_writes(db) : 0;
    if (unsent > 0 && !force) {
        snprintf(err, errlen,
                 "%s holds %lld write%s the Clinic API has not accepted yet: restored over, they "
                 "would stay only in the file it keeps, unsent. Start the daemon until `therasync "
                 "status` shows pending 0, or restore with --force",
                 db, unsent, unsent == 1 ? "" : "s");
        unlink(temp);
        goto done;
    }
    /* Run as root (sudo), the copy is the daemon's: the data dir's owner's. */
    struct stat dir;
    if (geteuid() == 0 && stat(data_dir, &dir) == 0 && chown(temp, dir.st_uid, dir.st_gid)) {
        snprintf(err, errlen, "cannot give %s to the data dir's owner: %s", temp,
                 strerror(errno));
        unlink(temp);
        goto done;
    }
    /* A WAL that could not be folded in, or one without its database, goes
     * aside with it, named alike: left, it would be applied to the copy. */
    if (!had || checkpoint(db)) {
        static const char *const ends[] = {"-wal", "-shm"};
        for (int i = 0; i < 2; i++) {
            char from[PATH_MAX + 8];
            snprintf(from, sizeof from, "%s%s", db, ends[i]);
            snprintf(side, sizeof side, "%s%s", kept, ends[i]);
            if (access(from, F_OK) == 0 && rename(from, side)) {
                snprintf(err, errlen, "cannot move %s aside: %s", from, strerror(errno));
                unlink(temp);
                goto done;
            }
        }
    }
    /* The backup takes the name, and the old database the copy's, in one
     * step: the dir never lacks a whole therasync.db. A file system without
     * the exchange gets two renames. */
    bool swapped = had && renameat2(AT_FDCWD, temp, AT_FDCWD, db, RENAME_EXCHANGE) == 0;
    if (swapped && rename(temp, kept)) {
        snprintf(err, errlen, "restored, but the database it replaced is still at %s: %s", temp,
                 strerror(errno));
        goto done;
    }
    if (!swapped && had && rename(db, kept)) {
        snprintf(err, errlen, "cannot move %s aside: %s", db, strerror(errno));
        unlink(temp);
        goto done;
    }
    if (!swapped && rename(temp, db)) {
        snprintf(err, errlen, "cannot rename %s to %s: %s (the database it replaces is at %s)",
                 temp, db, strerror(errno), had ? kept : "nowhere: there was none");
        goto done;
    }
    if (persist_sync_dir(db)) {
        snprintf(err, errlen, "cannot sync %s: %s", data_dir, strerror(errno));
        goto done;
    }
    printf("restored %s into %s (schema %d%s%s%s)\n", backup, data_dir, version,
           *key_id ? "; sealed, key id " : "", key_id,
           *key_id ? ": the daemon needs that key" : "");
    if (had)
        printf("the database it replaces is kept as %s: remove it once the restore has proved "
               "itself\n",
               kept);
    if (unsent > 0)
        printf("%lld write%s never sent to the Clinic API %s only there\n", unsent,
               unsent == 1 ? "" : "s", unsent == 1 ? "is" : "are");
    else if (unsent < 0)
        printf("the database it replaces could not be read: whether it held writes never sent "
               "to the Clinic API is unknown\n");
    rc = 0;
done:
    if (p.lock_fd >= 0)
        close(p.lock_fd);
    return rc;
}
