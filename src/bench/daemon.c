/* daemon.c — the bench's own therasyncd: spawn, wait for ready, measure,
 * stop by pid. Its stderr comes through a pipe: read for the ready line,
 * then drained by a thread (so a chatty daemon never blocks on a full pipe)
 * and passed on to our stderr with a prefix. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ftw.h>

int bench_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

int bench_daemon_mkdata(bench_daemon_t *d)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(d->data_dir, sizeof d->data_dir, "%s/therasync-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d->data_dir)) {
        fprintf(stderr, "bench: mkdtemp %s: %s\n", d->data_dir, strerror(errno));
        d->data_dir[0] = '\0';
        return -1;
    }
    return 0;
}

static long read_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

static void *drain(void *arg)
{
    bench_daemon_t *d = arg;
    FILE *f = fdopen(d->stderr_fd, "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f))
        fprintf(stderr, "therasyncd: %s", line);
    if (f)
        fclose(f);
    else
        close(d->stderr_fd);
    return NULL;
}

/* Is this one of the daemon's log lines the ready line? ("... ready endpoint=...") */
static bool is_ready_line(const char *line)
{
    const char *p = strstr(line, "ready");
    return p && (p == line || p[-1] == ' ') && (p[5] == ' ' || p[5] == '\n' || p[5] == '\0');
}

int bench_daemon_start(bench_daemon_t *d, double timeout_s)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        fprintf(stderr, "bench: cannot find my own binary\n");
        return -1;
    }
    exe[n] = '\0';
    char daemon_path[4200];
    snprintf(daemon_path, sizeof daemon_path, "%s/therasyncd", dirname(exe));
    if (access(daemon_path, X_OK) != 0) {
        fprintf(stderr, "bench: %s is missing (build it first)\n", daemon_path);
        return -1;
    }
    int p1 = bench_free_port(), p2 = bench_free_port();
    while (p2 == p1 && p1 > 0)
        p2 = bench_free_port();
    snprintf(d->endpoint, sizeof d->endpoint, "tcp://127.0.0.1:%d", p1);
    snprintf(d->events, sizeof d->events, "tcp://127.0.0.1:%d", p2);
    int pipefd[2];
    if (p1 < 0 || p2 < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        fprintf(stderr, "bench: no free port or pipe\n");
        return -1;
    }
    /* --curve: the keys and a config naming them, beside the data */
    char curve_config[600];
    const char *config = d->config;
    int curve = bench_curve_daemon_config(d->data_dir, d->config, curve_config,
                                          sizeof curve_config);
    if (curve < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (curve == 0)
        config = curve_config;
    int64_t t0 = ts_mono_us();
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(pipefd[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
        }
        char *argv[14] = {daemon_path, "--data", d->data_dir, "--endpoint", d->endpoint,
                          "--events", d->events};
        int argc = 7;
        if (d->policies) {
            argv[argc++] = "--policies";
            argv[argc++] = (char *)d->policies;
        }
        if (config) {
            argv[argc++] = "--config";
            argv[argc++] = (char *)config;
        }
        if (d->api) {
            argv[argc++] = "--api";
            argv[argc++] = (char *)d->api;
        }
        argv[argc] = NULL;
        execv(daemon_path, argv);
        _exit(127);
    }
    close(pipefd[1]);
    d->pid = pid;
    d->stderr_fd = pipefd[0];
    /* Read lines until ready, the daemon exits, or the timeout. */
    char line[4096];
    size_t len = 0;
    int64_t deadline = t0 + (int64_t)(timeout_s * 1e6);
    for (;;) {
        int64_t left_ms = (deadline - ts_mono_us()) / 1000;
        struct pollfd pfd = {.fd = d->stderr_fd, .events = POLLIN};
        if (left_ms <= 0 || poll(&pfd, 1, (int)left_ms) <= 0) {
            fprintf(stderr, "bench: therasyncd not ready within %.0f s\n", timeout_s);
            bench_daemon_stop(d, 10, NULL);
            return -1;
        }
        ssize_t got = read(d->stderr_fd, line + len, sizeof line - 1 - len);
        if (got <= 0) {
            fprintf(stderr, "bench: therasyncd exited before it was ready\n");
            bench_daemon_stop(d, 10, NULL);
            return -1;
        }
        len += (size_t)got;
        line[len] = '\0';
        char *nl;
        bool ready = false;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = '\0';
            if (is_ready_line(line))
                ready = true;
            else
                fprintf(stderr, "therasyncd: %s\n", line);
            size_t rest = len - (size_t)(nl + 1 - line);
            memmove(line, nl + 1, rest + 1);
            len = rest;
        }
        if (ready) {
            d->ready_seconds = (double)(ts_mono_us() - t0) / 1e6;
            d->hwm_kb = read_hwm_kb(pid);
            if (len)
                fprintf(stderr, "therasyncd: %s", line);
            break;
        }
        if (len == sizeof line - 1)
            len = 0; /* an overlong line: drop it */
    }
    pthread_t *tid = malloc(sizeof *tid);
    if (tid && pthread_create(tid, NULL, drain, d) == 0) {
        d->drain = tid;
    } else {
        free(tid);
        d->drain = NULL;
    }
    return 0;
}

int bench_daemon_stop(bench_daemon_t *d, double timeout_s, long *maxrss_kb)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    int status = 0;
    struct rusage ru;
    int64_t deadline = ts_mono_us() + (int64_t)(timeout_s * 1e6);
    pid_t got = 0;
    while ((got = wait4(d->pid, &status, WNOHANG, &ru)) == 0 && ts_mono_us() < deadline)
        usleep(5000);
    if (got == 0) {
        fprintf(stderr, "bench: therasyncd did not stop within %.0f s: SIGKILL\n", timeout_s);
        kill(d->pid, SIGKILL);
        got = wait4(d->pid, &status, 0, &ru);
    }
    d->pid = 0;
    if (d->drain) {
        pthread_join(*(pthread_t *)d->drain, NULL);
        free(d->drain);
        d->drain = NULL;
    } else if (d->stderr_fd > 0) {
        close(d->stderr_fd);
    }
    d->stderr_fd = -1;
    if (got < 0)
        return -1;
    if (maxrss_kb)
        *maxrss_kb = ru.ru_maxrss;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

double bench_daemon_cpu(const bench_daemon_t *d)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)d->pid);
    FILE *f = d->pid > 0 ? fopen(path, "r") : NULL;
    size_t len = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[len] = '\0';
    /* After "(comm)": state is field 3, utime and stime fields 14 and 15. */
    const char *p = strrchr(text, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void bench_daemon_rmdata(bench_daemon_t *d, bool keep)
{
    if (!d->data_dir[0])
        return;
    if (keep)
        fprintf(stderr, "bench: data kept in %s\n", d->data_dir);
    else
        nftw(d->data_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    d->data_dir[0] = '\0';
}
