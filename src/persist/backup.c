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

/* Makes path's directory entry durable (the new name of a copy). */
static int sync_dir_of(const char *path)
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
 * empty database). Returns the size in bytes, or -1 with why in err. */
int64_t persist_backup_to(sqlite3 *db, const char *path, char *err, size_t errlen)
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
    if (b) {
        rc = sqlite3_backup_step(b, -1); /* all pages at once: persist's own connection */
        sqlite3_backup_finish(b);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_errcode(copy);
    }
    if (rc != SQLITE_OK)
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
    if (sync_dir_of(path) != 0) {
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
void persist_backup_call(sqlite3 *db, ts_call_t *call)
{
    const char *path = ts_json_string(call->params, "path");
    char err[512];
    int64_t start = ts_mono_us();
    int64_t bytes = persist_backup_to(db, path, err, sizeof err);
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
