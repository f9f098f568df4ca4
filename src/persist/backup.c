/* backup.c — a consistent copy of the database with SQLite's online backup
 * API: the `backup` call (passed on by persist after the writes committed
 * before it, so every write answered before it began is in the copy, and
 * copied by the checkpointer on its own connection) and the copy taken
 * before a schema migration. */
#include "persist/persist_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Pages copied between two looks at whether the engine is stopping
 * (~4 MB: a few ms). */
#define STEP_PAGES 1024

int persist_sync_dir(const char *path)
{
    char dir[PATH_MAX] = ".";
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x": the root */
        if (n >= sizeof dir)
            return -1;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Gives the whole copy at part its name, never over a file that appeared
 * at path meanwhile. A file system without RENAME_NOREPLACE (or without
 * hard links, say a vfat backup stick) gets the nearest it allows. */
static int name_copy(const char *part, const char *path)
{
    if (renameat2(AT_FDCWD, part, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return -1; /* EEXIST, or a real failure */
    if (link(part, path) == 0)
        return 0;
    if (errno == EEXIST)
        return -1;
    errno = 0;
    if (access(path, F_OK) == 0 || errno != ENOENT) {
        errno = errno ? errno : EEXIST;
        return -1;
    }
    return rename(part, path);
}

/* Copies db into a new file at path, mode 0600 (a path already there is
 * refused: a backup never overwrites). Pages are copied as they are, so a
 * sealed store (security.encryption_key_file) stays sealed in the copy.
 * The copy is made as PATH.partial and gets its name only once whole and
 * on disk: a daemon killed or stopped mid-copy never leaves a file at path
 * that looks like a backup (SQLite would open what was copied so far as an
 * empty database). Between steps the copy asks stopping(arg) (when given):
 * true abandons it, and nothing is left at path or path.partial. Returns
 * the size in bytes, or -1 with why in err. */
int64_t persist_backup_to(sqlite3 *db, const char *path, bool (*stopping)(void *), void *arg,
                          char *err, size_t errlen)
{
    char part[PATH_MAX + 16];
    if ((size_t)snprintf(part, sizeof part, "%s.partial", path) >= sizeof part) {
        snprintf(err, errlen, "cannot create %s: path too long", path);
        return -1;
    }
    errno = 0;
    if (access(path, F_OK) == 0 || errno != ENOENT) {
        int why = errno ? errno : EEXIST; /* there, or cannot tell */
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(why));
        return -1;
    }
    int fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int why = errno;
        snprintf(err, errlen, "cannot create %s: %s%s", part, strerror(why),
                 why == EEXIST ? " (a backup to that path was cut short: remove it)" : "");
        return -1;
    }
    close(fd);
    sqlite3 *copy = NULL;
    int rc = sqlite3_open_v2(part, &copy, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    sqlite3_backup *b = rc == SQLITE_OK ? sqlite3_backup_init(copy, "main", db, "main") : NULL;
    bool abandoned = false;
    if (b) {
        /* One read transaction over all the steps, so the copy is one
         * snapshot: without it each step reads the newest commit, and
         * SQLite starts the copy over whenever the database changed since
         * the last step, which a steady stream of writes never lets end. */
        bool own = sqlite3_get_autocommit(db); /* not inside a transaction of the caller's */
        if (own)
            sqlite3_exec(db, "BEGIN; SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
        while ((rc = sqlite3_backup_step(b, STEP_PAGES)) == SQLITE_OK)
            if (stopping && stopping(arg)) {
                abandoned = true;
                break;
            }
        sqlite3_backup_finish(b);
        if (own && !sqlite3_get_autocommit(db)) /* ends the read; never left open */
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        rc = rc == SQLITE_DONE ? SQLITE_OK : abandoned ? SQLITE_ABORT : rc;
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_errcode(copy);
    }
    if (abandoned)
        snprintf(err, errlen,
                 "the engine is stopping: the backup to %s was abandoned (nothing is left there)",
                 path);
    else if (rc != SQLITE_OK)
        snprintf(err, errlen, "cannot copy the database to %s: %s", path, sqlite3_errstr(rc));
    sqlite3_close(copy); /* the copy's commit synced it (synchronous FULL, its default) */
    struct stat st;
    if (rc == SQLITE_OK && stat(part, &st) != 0) {
        snprintf(err, errlen, "cannot copy the database to %s: %s", path, strerror(errno));
        rc = SQLITE_IOERR;
    }
    if (rc == SQLITE_OK && name_copy(part, path) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        rc = SQLITE_CANTOPEN;
    }
    unlink(part); /* gone already once named */
    if (rc != SQLITE_OK)
        return -1;
    if (persist_sync_dir(path) != 0) {
        snprintf(err, errlen, "cannot sync the directory of %s: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return (int64_t)st.st_size;
}

/* Answers a `backup` call from db: {path} → {path, bytes}. The
 * checkpointer runs it on its own connection, whose read transaction is a
 * snapshot of every commit before it: persist goes on committing writes
 * meanwhile (WAL), and the copy holds every write answered before the
 * call, and perhaps some after. */
void persist_backup_call(sqlite3 *db, ts_call_t *call, bool (*stopping)(void *), void *arg)
{
    const char *path = ts_json_string(call->params, "path");
    char err[512];
    int64_t start = ts_mono_us();
    int64_t bytes = persist_backup_to(db, path, stopping, arg, err, sizeof err);
    if (bytes < 0) {
        ts_error(LOG, "backup: %s", err);
        ts_call_fail(call, TS_E_INTERNAL, "%s", err);
        return;
    }
    ts_info(LOG, "backup: %lld bytes to %s in %.3f s", (long long)bytes, path,
            (ts_mono_us() - start) / 1e6);
    ts_buf_t out = {0};
    ts_buf_puts(&out, "{\"path\":");
    ts_buf_json_string(&out, path, strlen(path));
    ts_buf_printf(&out, ",\"bytes\":%lld}", (long long)bytes);
    ts_call_set_buffer(call, &out);
}
