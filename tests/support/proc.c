/* proc.c — see proc.h. Children are started with posix_spawn so that the
 * (multi-threaded) test process never runs code between fork and exec. */
#include "proc.h"

#include "therasync/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

const char *ts_build_dir(void)
{
    const char *d = getenv("TS_BUILD_DIR");
    return d && *d ? d : "./build";
}

int ts_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Children not yet reaped: killed when the test process exits, so a failed
 * assertion (which ends the test before its clean-up) leaves no server
 * behind; and when it crashes, which skips atexit. */
#define MAX_LIVE 64
static volatile sig_atomic_t live[MAX_LIVE];

static void kill_live(void)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
        }
}

static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
#define NCRASH (sizeof crash_signals / sizeof *crash_signals)
static struct sigaction crash_previous[NCRASH];

/* Kills the children, then hands the signal to whoever had it before (a
 * sanitizer's report, the test framework, or the default): a fault comes
 * back by itself when the instruction runs again, a sent signal is sent
 * again. Only async-signal-safe calls. */
static void on_crash(int sig, siginfo_t *info, void *context)
{
    (void)context;
    kill_live(); /* kill and waitpid are async-signal-safe */
    for (size_t i = 0; i < NCRASH; i++)
        if (crash_signals[i] == sig)
            sigaction(sig, &crash_previous[i], NULL);
    if (info->si_code <= 0) /* sent (raise, abort, kill), not a fault */
        raise(sig);
}

static void track(pid_t pid)
{
    static int registered;
    if (!registered++) {
        atexit(kill_live);
        struct sigaction sa = {.sa_sigaction = on_crash, .sa_flags = SA_SIGINFO};
        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < NCRASH; i++)
            sigaction(crash_signals[i], &sa, &crash_previous[i]);
    }
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] <= 0) {
            live[i] = pid;
            return;
        }
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == pid)
            live[i] = 0;
}

int ts_proc_spawn(ts_proc_t *p, const char *dir, const char *program, const char *const args[])
{
    char path[4096];
    p->pid = 0;
    p->exited = 0;
    p->status = 0;
    if (program[0] == '/')
        snprintf(path, sizeof path, "%s", program);
    else
        snprintf(path, sizeof path, "%s/%s", ts_build_dir(), program);
    const char *base = strrchr(program, '/');
    snprintf(p->log_path, sizeof p->log_path, "%s/%s.XXXXXX", dir ? dir : "/tmp",
             base ? base + 1 : program);
    int fd = mkstemp(p->log_path);
    if (fd < 0)
        return -1;
    close(fd);
    size_t n = 0;
    while (args && args[n])
        n++;
    char **argv = calloc(n + 2, sizeof *argv);
    if (!argv)
        return -1;
    argv[0] = path;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, p->log_path, O_WRONLY | O_APPEND, 0);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    int rc = posix_spawn(&p->pid, path, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(argv);
    if (rc != 0) {
        p->pid = 0;
        errno = rc;
        return -1;
    }
    track(p->pid);
    return 0;
}

int ts_proc_alive(ts_proc_t *p)
{
    if (p->pid <= 0 || p->exited)
        return 0;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
        untrack(p->pid);
        p->exited = 1;
        p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return 0;
    }
    return 1;
}

int ts_proc_wait_line(ts_proc_t *p, const char *needle, int timeout_ms, char *line, size_t linelen)
{
    long long end = now_ms() + timeout_ms;
    char buf[512];
    for (int round = 0; round < 100000 && now_ms() <= end; round++) {
        FILE *f = fopen(p->log_path, "r");
        if (f) {
            while (fgets(buf, sizeof buf, f)) {
                if (strstr(buf, needle)) {
                    buf[strcspn(buf, "\n")] = '\0';
                    if (line && linelen) {
                        snprintf(line, linelen, "%s", buf);
                    }
                    fclose(f);
                    return 0;
                }
            }
            fclose(f);
        }
        if (!ts_proc_alive(p))
            return -1;
        sleep_ms(10);
    }
    return -1;
}

int ts_wait_port(int port, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    for (int round = 0; round < 100000 && now_ms() <= end; round++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return -1;
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return 0;
        sleep_ms(10);
    }
    return -1;
}

/* Stops p: with signal first (SIGTERM, or SIGKILL for a crash), SIGKILL
 * after timeout_ms; reaps it. */
static int stop_with(ts_proc_t *p, int signal, int timeout_ms)
{
    if (p->pid == 0)
        return -1;
    if (p->exited) { /* already reaped by ts_proc_alive */
        p->pid = 0;
        return p->status;
    }
    kill(p->pid, signal);
    long long end = now_ms() + timeout_ms;
    int st = 0;
    pid_t r = 0;
    for (int round = 0; round < 100000; round++) {
        r = waitpid(p->pid, &st, WNOHANG);
        if (r != 0 || now_ms() > end)
            break;
        sleep_ms(5);
    }
    if (r == 0) {
        kill(p->pid, SIGKILL);
        r = waitpid(p->pid, &st, 0);
    }
    untrack(p->pid);
    p->pid = 0;
    if (r < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int ts_proc_stop(ts_proc_t *p, int timeout_ms)
{
    return stop_with(p, SIGTERM, timeout_ms);
}

int ts_proc_kill(ts_proc_t *p)
{
    return stop_with(p, SIGKILL, 0);
}

int ts_proc_wait_exit(ts_proc_t *p, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    for (int round = 0; round < 100000 && p->pid > 0; round++) {
        if (!ts_proc_alive(p)) {
            p->pid = 0;
            return p->status;
        }
        if (now_ms() > end)
            break;
        sleep_ms(5);
    }
    return -1;
}

char *ts_tmpdir(const char *prefix)
{
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "/tmp/%s.XXXXXX", prefix ? prefix : "therasync-test");
    if (!mkdtemp(tmpl))
        return NULL;
    return strdup(tmpl);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int ts_rmtree(const char *path)
{
    if (!path || strncmp(path, "/tmp/", 5) != 0) /* a guard against accidents */
        return -1;
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *ts_file_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    ts_buf_t b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ts_buf_append(&b, chunk, n);
    fclose(f);
    *len = b.len;
    ts_buf_puts(&b, ""); /* NUL-terminated, and not NULL when empty */
    return ts_buf_take(&b, &n);
}

char *ts_file_text(const char *path)
{
    size_t len;
    return ts_file_bytes(path, &len);
}

int ts_file_write(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    bool ok = fwrite(text, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}
