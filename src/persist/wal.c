/* wal.c — the WAL's file space: zeros written ahead of the WAL's last
 * frame, so that a commit's fsync lands on blocks the file already has. */
#include "persist/persist_int.h"

#include <fcntl.h>
#include <unistd.h>

/* ---- the WAL's file space ----
 * A commit's fdatasync costs two to three times as much when its frames
 * extend the WAL file as when they land on blocks the file already has:
 * extending makes ext4 allocate blocks and write the inode as well. A WAL
 * that SQLite has just started over reuses its file, but under steady
 * writes it is not started over before WAL_HARD_PAGES (checkpointer.c), so every
 * commit extended it. Persist therefore keeps up to WAL_AHEAD_BYTES of
 * zeros written past the WAL's last frame and starts writing them to disk at
 * once, so that the commits which reach them find them there. This is safe
 * for SQLite: it reads a WAL only up to the first frame whose salts and
 * checksum do not match, which is what it leaves past the end itself after
 * starting over. Only this thread writes the WAL (through SQLite) and the
 * zeros, and the zeros only past the file's end. */
#define WAL_AHEAD_BYTES (4 << 20)
#define WAL_HEADER_BYTES 32
#define WAL_FRAME_HEADER_BYTES 24

void persist_keep_wal_ahead(persist_t *self)
{
    int64_t end = WAL_HEADER_BYTES +
                  (int64_t)self->wal_pages * (self->page_size + WAL_FRAME_HEADER_BYTES);
    /* in step with the WAL's use: a daemon that writes little writes few zeros */
    int64_t ahead = end < WAL_AHEAD_BYTES ? end : WAL_AHEAD_BYTES;
    if (self->page_size <= 0 || end + ahead / 2 <= self->wal_ahead_to)
        return;
    struct stat st;
    if (self->wal_fd >= 0 && (fstat(self->wal_fd, &st) || st.st_nlink == 0)) {
        close(self->wal_fd); /* not the WAL SQLite writes any more */
        self->wal_fd = -1;
    }
    if (self->wal_fd < 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/therasync.db-wal", self->config->data_dir);
        self->wal_fd = open(path, O_WRONLY | O_CLOEXEC);
        if (self->wal_fd < 0 || fstat(self->wal_fd, &st))
            return;
        const struct stat *opened = &self->files[2]; /* the WAL SQLite opened (data_files) */
        if (opened->st_ino && (st.st_dev != opened->st_dev || st.st_ino != opened->st_ino)) {
            close(self->wal_fd); /* another daemon's, in a replaced data dir */
            self->wal_fd = -1;
            return;
        }
    }
    static const char zeros[1 << 16];
    off_t from = st.st_size, at = from;
    while (at < end + ahead) {
        ssize_t n = pwrite(self->wal_fd, zeros, sizeof zeros, at);
        if (n <= 0)
            break; /* a full disk: the commits will say so */
        at += n;
    }
#ifdef SYNC_FILE_RANGE_WRITE
    if (at > from)
        sync_file_range(self->wal_fd, from, at - from, SYNC_FILE_RANGE_WRITE);
#endif
    self->wal_ahead_to = at;
}
