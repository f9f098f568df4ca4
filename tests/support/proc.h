/* proc.h — test helpers for real processes on loopback: free ports, spawning
 * a program from the build directory with its output in a log file, waiting
 * for a readiness line or an open port, stopping by pid, temp directories.
 *
 * Every wait is bounded by a timeout; nothing here kills by name. */
#ifndef TS_TEST_PROC_H
#define TS_TEST_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;           /* child pid, 0 when never started or stopped */
    int exited;          /* reaped already (by ts_proc_alive) */
    int status;          /* exit code, or 128+signal, once exited */
    char log_path[4096]; /* the child's stdout+stderr */
} ts_proc_t;

/* $TS_BUILD_DIR (set by tests/run.sh), else "./build". */
const char *ts_build_dir(void);

/* A TCP port on 127.0.0.1 that was free a moment ago; 0 on failure. */
int ts_free_port(void);

/* Starts BUILD_DIR/program (or program itself, when it is an absolute path) with args (NULL-terminated, program name not
 * included); stdout and stderr go to log_path, a new file in dir (NULL:
 * /tmp). Returns 0, or -1 (errno-style failure, nothing started). */
int ts_proc_spawn(ts_proc_t *p, const char *dir, const char *program, const char *const args[]);

/* Waits up to timeout_ms for a line of the child's log containing needle;
 * copies that line (without newline) into line. 0, or -1 on timeout or when
 * the child exited. */
int ts_proc_wait_line(ts_proc_t *p, const char *needle, int timeout_ms, char *line, size_t linelen);

/* Waits up to timeout_ms until something accepts on 127.0.0.1:port. 0 or -1. */
int ts_wait_port(int port, int timeout_ms);

/* SIGTERM, then SIGKILL after timeout_ms; reaps the child. Returns its exit
 * code, 128+signal when killed by a signal, or -1 when it was not running. */
int ts_proc_stop(ts_proc_t *p, int timeout_ms);

/* SIGKILL at once (a crash: the process is told nothing) and reap. Returns
 * 128 + SIGKILL, or its exit code when it had ended already. */
int ts_proc_kill(ts_proc_t *p);

/* Waits up to timeout_ms for the child to exit by itself; returns its exit
 * code (128+signal when killed), or -1 on timeout (the child keeps running). */
int ts_proc_wait_exit(ts_proc_t *p, int timeout_ms);

/* True while the child has not exited (reaps it when it has). */
int ts_proc_alive(ts_proc_t *p);

/* Creates a fresh directory under /tmp; returns a malloc'd path or NULL. */
char *ts_tmpdir(const char *prefix);
/* Removes path and everything below it. 0 or -1. */
int ts_rmtree(const char *path);
/* The whole of a file, malloc'd, its length in *len (and a NUL after
 * it); NULL when it cannot be read. */
char *ts_file_bytes(const char *path, size_t *len);
/* The same for a text (a log, a doc), its length not wanted. */
char *ts_file_text(const char *path);
/* Writes len bytes of text to path, replacing it (mode 0644 less the
 * umask). 0 or -1. */
int ts_file_write(const char *path, const char *text, size_t len);

#endif
