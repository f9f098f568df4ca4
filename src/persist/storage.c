/* storage.c — the data dir: its LOCK (one daemon per dir), and the watch
 * that notices when the dir or its files are removed or replaced while the
 * daemon runs (inotify, and stat() of the paths against the files opened);
 * from then on writes are refused. */
#include "persist/persist_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

int persist_lock_data_dir(persist_t *self)
{
    const char *dir = self->config->data_dir;
    if (mkdir(dir, 0700) && errno != EEXIST) {
        ts_error(LOG, "cannot create data dir %s: %s", dir, strerror(errno));
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    self->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->lock_fd < 0) {
        ts_error(LOG, "cannot open %s: %s (is the data dir writable?)", path, strerror(errno));
        return -1;
    }
    if (flock(self->lock_fd, LOCK_EX | LOCK_NB)) {
        char holder[32] = "";
        ssize_t n = pread(self->lock_fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        ts_error(LOG, "data dir %s is in use by another therasyncd (pid %s)",
                 dir, *holder ? holder : "unknown");
        return -1;
    }
    /* Health data: the dir 0700 and its files 0600, whatever the umask
     * or the mode of a dir made beforehand (systemd's StateDirectory= is
     * 0755 by default). New files follow the daemon's umask (077). */
    struct stat st;
    if (stat(dir, &st) == 0 && (st.st_mode & 077)) /* say so: someone may have read it */
        ts_warn(LOG, "data dir %s was open to other users (mode %03o); made 0700", dir,
                (unsigned)(st.st_mode & 0777));
    if (chmod(dir, 0700))
        ts_warn(LOG, "cannot make data dir %s private (0700): %s", dir, strerror(errno));
    static const char *const files[] = {"therasync.db", "therasync.db-wal", "therasync.db-shm"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (stat(path, &st) == 0 && (st.st_mode & 077))
            ts_warn(LOG, "%s was open to other users (mode %03o); made 0600", path,
                    (unsigned)(st.st_mode & 0777));
        if (chmod(path, 0600) && errno != ENOENT)
            ts_warn(LOG, "cannot make %s private (0600): %s", path, strerror(errno));
    }
    if (fchmod(self->lock_fd, 0600))
        ts_warn(LOG, "cannot make the LOCK private: %s", strerror(errno));
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(self->lock_fd, 0) || pwrite(self->lock_fd, pid, (size_t)n, 0) != n) {
        ts_error(LOG, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- the data dir's files ----
 * Once the data dir is removed, or renamed away and replaced, SQLite goes
 * on writing to the files it has open, which nobody will read again, and
 * a second daemon can start there (the LOCK at the path is a new file). So
 * each commit checks, before its COMMIT and again before its answers go
 * out, that the files at these paths are still the ones persist opened
 * (stat() of the path against what was opened). When they are not, every
 * write is refused until a restart, status says why (the store is told),
 * the log says so once, and nothing is written at the path any more (see
 * persist_cleanup). -shm holds no data: not checked.
 *
 * The three stat()s took 8 us a check in the daemon under load (commits
 * of 0.45-0.8 ms), twice a commit: 2-3% of it. So an inotify watch on the
 * dir says when to look: removing, renaming or replacing anything in it,
 * or the dir itself, queues an event before the call that did it returns,
 * and reading the empty queue took 1.1 us a check. A rename of a dir above
 * it is not seen there: the stat()s also run once a second. */
static const char *const data_files[] = {"LOCK", "therasync.db", "therasync.db-wal"};

static int data_path(persist_t *self, const char *name, char *path, size_t size)
{
    return snprintf(path, size, "%s/%s", self->config->data_dir, name) < (int)size ? 0 : -1;
}

/* What persist has open, once the database is open. */
void persist_remember_files(persist_t *self)
{
    char path[4096];
    for (size_t i = 0; i < sizeof data_files / sizeof *data_files; i++) {
        struct stat *st = &self->files[i];
        if (i == 0 ? fstat(self->lock_fd, st)
                   : data_path(self, data_files[i], path, sizeof path) || stat(path, st))
            st->st_ino = 0; /* not there: not checked */
    }
    if (stat(self->config->data_dir, &self->dir))
        self->dir.st_ino = 0;
    self->watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (self->watch < 0 ||
        inotify_add_watch(self->watch, self->config->data_dir,
                          IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                              IN_MOVE_SELF) < 0) {
        ts_warn(LOG, "no inotify watch on %s (%s): its files are looked at in every commit",
                self->config->data_dir, strerror(errno));
        if (self->watch >= 0)
            close(self->watch);
        self->watch = -1;
    }
}

/* Whether anything happened in the data dir since the last call (always
 * true without a watch). */
static bool data_dir_touched(persist_t *self)
{
    char events[4096]; /* not parsed: any event means look */
    bool touched = self->watch < 0;
    while (self->watch >= 0 && read(self->watch, events, sizeof events) > 0)
        touched = true;
    return touched;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* What can have happened to the data dir: for `status`, and the log. */
enum { DIR_INTACT, DIR_REMOVED, DIR_REPLACED, DIR_FILES_GONE };
static const char *const dir_status[] = {NULL, "data directory removed", "data directory replaced",
                                         "database files removed"};
static const char *const dir_log[] = {NULL, "was removed", "was replaced by another directory",
                                      "lost its files"};

/* DIR_INTACT while the files at the data dir's paths are the ones persist
 * has open; else what happened, and *file is the first that is not. */
static int data_dir_state(persist_t *self, const char **file)
{
    char path[4096];
    struct stat st;
    for (size_t i = 0; i < sizeof data_files / sizeof *data_files; i++) {
        if (!self->files[i].st_ino)
            continue;
        if (data_path(self, data_files[i], path, sizeof path) == 0 && stat(path, &st) == 0 &&
            same_file(&st, &self->files[i]))
            continue;
        *file = data_files[i];
        if (stat(self->config->data_dir, &st))
            return DIR_REMOVED;
        return self->dir.st_ino && !same_file(&st, &self->dir) ? DIR_REPLACED : DIR_FILES_GONE;
    }
    return DIR_INTACT;
}

/* Whether the data dir takes no more writes (see above), looking when
 * something happened in it (or always); the first time, says so in the log
 * and, with tell_store, to the store for `status`. */
bool persist_storage_lost(persist_t *self, bool always, bool tell_store)
{
    const char *file = "";
    bool look = !self->lost && (data_dir_touched(self) || always);
    int state = look ? data_dir_state(self, &file) : DIR_INTACT;
    if (state == DIR_INTACT)
        return self->lost != NULL;
    self->lost = dir_status[state];
    ts_error(LOG, "data dir %s %s while therasyncd ran (%s is not the file opened at start): "
                  "writes are refused from now on and nothing more is written there; restore "
                  "the directory from a backup and restart therasyncd",
             self->config->data_dir, dir_log[state], file);
    if (tell_store && ts_send_STORAGE(self->to_store, &self->lost, 1)) /* static */
        ts_warn(LOG, "cannot tell the store that the data dir is lost");
    return true;
}

int persist_on_storage_timer(ts_loop_t *loop, int timer_id, void *arg)
{
    (void)loop, (void)timer_id;
    persist_storage_lost(arg, true, true); /* and `status` says it without a write */
    return 0;
}
