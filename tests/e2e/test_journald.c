/* test_journald.c — therasyncd under systemd's journald: JOURNAL_STREAM
 * names its stderr (here faked: the log file's device and inode), and each
 * line starts with its syslog priority so `journalctl -p err` finds the
 * errors. */
#include "../support/engine.h"
#include "../support/proc.h"

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Starts therasyncd through sh, which sets JOURNAL_STREAM to its stderr's
 * DEV:INO as systemd does (or to a wrong one), then execs it. */
static char endpoint[64];

static int spawn(ts_proc_t *p, const char *dir, const char *data, bool matching)
{
    char daemon[4200], events[64];
    snprintf(daemon, sizeof daemon, "%s/therasyncd", ts_build_dir());
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", ts_free_port());
    snprintf(events, sizeof events, "tcp://127.0.0.1:%d", ts_free_port());
    const char *script = matching
                             ? "export JOURNAL_STREAM=$(stat -L -c %d:%i /dev/stderr); exec \"$0\" \"$@\""
                             : "export JOURNAL_STREAM=1:1; exec \"$0\" \"$@\"";
    const char *args[] = {"-c", script, daemon, "--data", data, "--endpoint", endpoint,
                          "--events", events, "--log-level", "debug", "--policies",
                          ts_source_path("tests/fixtures/policies/permissive"), NULL};
    return ts_proc_spawn(p, dir, "/bin/sh", args);
}

/* The daemon's log so far (freed at the next call). */
static char *read_log(const ts_proc_t *p)
{
    static char *text;
    free(text);
    text = ts_file_text(p->log_path);
    cr_assert_not_null(text, "%s", p->log_path);
    return text;
}

Test(journald, lines_carry_syslog_priorities, .timeout = 60)
{
    char *dir = ts_tmpdir("ts-journal");
    char data[4200], line[1024];
    snprintf(data, sizeof data, "%s/data", dir);
    ts_proc_t first = {0}, second = {0};
    cr_assert_eq(spawn(&first, dir, data, true), 0);
    cr_assert_eq(ts_proc_wait_line(&first, "ready endpoint=", 20000, line, sizeof line), 0);
    cr_assert(strncmp(line, "<6>", 3) == 0, "info: %s", line);
    /* a query whose index is built on first use, which the debug level logs */
    void *zctx = zmq_ctx_new(), *dealer = zmq_socket(zctx, ZMQ_DEALER);
    cr_assert_eq(zmq_connect(dealer, endpoint), 0);
    const char *q = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"query\",\"params\":{"
                    "\"collection\":\"sessions\",\"selector\":\"upcoming\",\"params\":{"
                    "\"therapist_id\":\"t1\",\"now\":\"2026-01-01T00:00:00Z\"}}}";
    char *pong = ts_rpc_raw(dealer, q, strlen(q), 5000);
    cr_assert_not_null(pong);
    free(pong);
    zmq_close(dealer);
    zmq_ctx_term(zctx);
    /* a second daemon on the same data dir is refused: an error */
    cr_assert_eq(spawn(&second, dir, data, true), 0);
    cr_assert_eq(ts_proc_wait_exit(&second, 20000), 1);
    char *log = read_log(&second);
    char *err = strstr(log, "in use by another therasyncd");
    cr_assert_not_null(err, "%s", log);
    while (err > log && err[-1] != '\n')
        err--;
    cr_assert(strncmp(err, "<3>", 3) == 0 && strstr(err, " error "), "error: %.200s", err);
    cr_assert_eq(ts_proc_stop(&first, 10000), 0);
    log = read_log(&first);
    cr_assert(strstr(log, "\n<7>") && strstr(strstr(log, "\n<7>"), " debug "), "debug: %s", log);
    /* every line has its prefix */
    for (char *p = log; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p))
        cr_assert(*p == '<', "a line without its priority: %.120s", p);

    /* stderr is not the stream JOURNAL_STREAM names: no prefixes */
    ts_proc_t third = {0};
    cr_assert_eq(spawn(&third, dir, data, false), 0);
    cr_assert_eq(ts_proc_wait_line(&third, "ready endpoint=", 20000, line, sizeof line), 0);
    cr_assert(line[0] >= '0' && line[0] <= '9', "%s", line);
    cr_assert_eq(ts_proc_stop(&third, 10000), 0);
    ts_rmtree(dir);
    free(dir);
}
