/* run.c — run a program to completion with captured output (see run.h). */
#include "run.h"

#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int decode_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int ts_run(const char *program, const char *const args[], const char *stdin_text, int timeout_ms,
           ts_buf_t *out, ts_buf_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", ts_build_dir(), program);
    char *argv[64] = {path};
    int argc = 1;
    while (args && args[argc - 1] && argc < 63) {
        argv[argc] = (char *)args[argc - 1];
        argc++;
    }
    argv[argc] = NULL;
    int in_pipe[2], out_pipe[2], err_pipe[2];
    if (pipe2(in_pipe, O_CLOEXEC))
        return -1;
    if (pipe2(out_pipe, O_CLOEXEC)) {
        close(in_pipe[0]), close(in_pipe[1]);
        return -1;
    }
    if (pipe2(err_pipe, O_CLOEXEC)) {
        close(in_pipe[0]), close(in_pipe[1]), close(out_pipe[0]), close(out_pipe[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in_pipe[0], STDIN_FILENO);
        dup2(out_pipe[1], STDOUT_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        execv(path, argv);
        _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    if (pid < 0) {
        close(in_pipe[1]), close(out_pipe[0]), close(err_pipe[0]);
        return -1;
    }
    /* Small inputs only: they fit the pipe, so writing first cannot block. */
    signal(SIGPIPE, SIG_IGN);
    if (stdin_text) {
        ssize_t w = write(in_pipe[1], stdin_text, strlen(stdin_text));
        (void)w;
    }
    close(in_pipe[1]);
    struct pollfd fds[2] = {{.fd = out_pipe[0], .events = POLLIN},
                            {.fd = err_pipe[0], .events = POLLIN}};
    ts_buf_t *bufs[2] = {out, err};
    int open_fds = 2;
    int64_t deadline = ts_mono_us() + (int64_t)timeout_ms * 1000;
    bool killed = false;
    while (open_fds > 0) {
        int64_t left = (deadline - ts_mono_us()) / 1000;
        if (left <= 0 && !killed) {
            kill(pid, SIGKILL);
            killed = true;
        }
        if (poll(fds, 2, left > 0 ? (int)left : 100) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char chunk[4096];
            ssize_t n = read(fds[i].fd, chunk, sizeof chunk);
            if (n > 0) {
                if (bufs[i])
                    ts_buf_append(bufs[i], chunk, (size_t)n);
            } else {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return decode_status(status);
}
