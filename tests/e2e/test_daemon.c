/* test_daemon.c — therasyncd as an operator runs it: flags, config file,
 * systemd readiness, back-pressure. */
#include "../support/engine.h"
#include "../support/run.h"
#include "therasync/config.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

Test(daemon, help_version_and_bad_flags, .timeout = 30)
{
    ts_buf_t out = {0}, err = {0};
    const char *help[] = {"--help", NULL};
    cr_assert_eq(ts_run("therasyncd", help, NULL, 5000, &out, &err), 0);
    cr_assert(strstr(out.data, "--endpoint") != NULL);
    ts_buf_reset(&out);
    const char *version[] = {"--version", NULL};
    cr_assert_eq(ts_run("therasyncd", version, NULL, 5000, &out, &err), 0);
    cr_assert(strstr(out.data, "therasyncd ") != NULL);
    const char *bad[] = {"--no-such-flag", NULL};
    cr_assert_eq(ts_run("therasyncd", bad, NULL, 5000, &out, &err), 2);
    cr_assert(strstr(err.data, "no-such-flag") != NULL, "says which flag: %s", err.data);
    ts_buf_reset(&err);
    const char *level[] = {"--log-level", "loud", NULL};
    cr_assert_eq(ts_run("therasyncd", level, NULL, 5000, &out, &err), 2);
    ts_buf_free(&out);
    ts_buf_free(&err);
}

Test(daemon, broken_config_file_is_refused, .timeout = 30)
{
    char *dir = ts_tmpdir("ts-conf");
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.lua", dir);
    FILE *f = fopen(path, "w");
    fputs("data = './x'\nendpoint = \n", f); /* a syntax error */
    fclose(f);
    ts_buf_t err = {0};
    const char *args[] = {"--config", path, NULL};
    cr_assert_eq(ts_run("therasyncd", args, NULL, 5000, NULL, &err), 2);
    cr_assert(strstr(err.data, "bad.lua") != NULL, "names the file: %s", err.data);
    ts_buf_free(&err);
    ts_rmtree(dir);
    free(dir);
}

/* Writes text to dir/name; the path into path. */
static void write_text(const char *dir, const char *name, const char *text, char *path,
                       size_t len)
{
    snprintf(path, len, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* A typo in a config file is an error naming the key and the one meant;
 * a value of the wrong type names its table and key. Nothing starts. */
Test(daemon, config_mistakes_are_errors_naming_the_key, .timeout = 30)
{
    char *dir = ts_tmpdir("ts-conf");
    static const struct {
        const char *text, *says;
    } cases[] = {
        {"dta = './x'\n", "unknown key dta (did you mean data)"},
        {"sync = { concurency = 4 }\n", "unknown key sync.concurency (did you mean sync.concurrency)"},
        {"security = { encryption_keyfile = 'k' }\n",
         "unknown key security.encryption_keyfile (did you mean security.encryption_key_file)"},
        {"ondemand = { patients = { fresh = 1000 } }\n",
         "unknown key ondemand.patients.fresh (did you mean ondemand.patients.fresh_ms)"},
        {"sync = { concurrency = 'many' }\n", "sync.concurrency must be a number"},
        {"cache = 64\n", "cache must be a table"},
        {"endpoint = 7410\n", "endpoint must be a string"},
        {"frobnicate = true\n", "unknown key frobnicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[4200];
        write_text(dir, "engine.lua", cases[i].text, path, sizeof path);
        ts_buf_t out = {0}, err = {0};
        const char *args[] = {"--config", path, "--check-config", NULL};
        cr_assert_eq(ts_run("therasyncd", args, NULL, 5000, &out, &err), 2, "%s", cases[i].text);
        cr_assert(err.data && strstr(err.data, cases[i].says), "%s: %s", cases[i].text,
                  err.data ? err.data : "");
        ts_buf_free(&out);
        ts_buf_free(&err);
    }
    /* a local helper is not a key, and the keys the engine reads pass */
    char path[4200];
    write_text(dir, "engine.lua",
               "local base = '/tmp'\ndata = base .. '/x'\nsync = { concurrency = 4 }\n"
               "cache = { max_bytes = 1000000 }\nclinic = { anything = { goes = 1 } }\n",
               path, sizeof path);
    ts_buf_t out = {0}, err = {0};
    const char *args[] = {"--config", path, "--check-config", NULL};
    cr_assert_eq(ts_run("therasyncd", args, NULL, 5000, &out, &err), 0, "%s", err.data);
    cr_assert(strstr(out.data, "config: OK"), "%s", out.data);
    ts_buf_free(&out);
    ts_buf_free(&err);
    ts_rmtree(dir);
    free(dir);
}

/* --check-config loads the policies and the key files as a start would,
 * starts nothing, and says what is wrong. */
Test(daemon, check_config_finds_broken_policies_and_missing_keys, .timeout = 30)
{
    char *dir = ts_tmpdir("ts-check");
    char path[4200], cfg[4200];
    write_text(dir, "validate.lua", "return {}\n", path, sizeof path);
    write_text(dir, "conflict.lua", "return {}\n", path, sizeof path);
    write_text(dir, "selectors.lua", "return { broken = \n", path, sizeof path);
    char text[8600];
    snprintf(text, sizeof text, "policies = '%s'\n", dir);
    write_text(dir, "engine.lua", text, cfg, sizeof cfg);
    ts_buf_t out = {0}, err = {0};
    const char *args[] = {"--config", cfg, "--check-config", NULL};
    cr_assert_eq(ts_run("therasyncd", args, NULL, 10000, &out, &err), 1);
    cr_assert(strstr(err.data, "selectors.lua"), "names the file: %s", err.data);
    cr_assert(strstr(out.data, "config: NOT OK"), "%s", out.data);
    ts_buf_reset(&out), ts_buf_reset(&err);

    snprintf(text, sizeof text, "policies = '%s/missing'\n", dir); /* no such dir */
    write_text(dir, "engine.lua", text, cfg, sizeof cfg);
    cr_assert_eq(ts_run("therasyncd", args, NULL, 10000, &out, &err), 1);
    cr_assert(strstr(err.data, "missing") && strstr(err.data, "No such file"),
              "names the missing policies dir: %s", err.data);
    ts_buf_reset(&out), ts_buf_reset(&err);

    write_text(dir, "selectors.lua", "return {}\n", path, sizeof path);
    snprintf(text, sizeof text,
             "policies = '%s'\nsecurity = { encryption_key_file = '%s/none.key' }\n", dir, dir);
    write_text(dir, "engine.lua", text, cfg, sizeof cfg);
    cr_assert_eq(ts_run("therasyncd", args, NULL, 10000, &out, &err), 1);
    cr_assert(strstr(err.data, "none.key"), "names the key file: %s", err.data);
    ts_buf_reset(&out), ts_buf_reset(&err);

    snprintf(text, sizeof text, "policies = '%s'\ndata = '%s/data'\n", dir, dir);
    write_text(dir, "engine.lua", text, cfg, sizeof cfg);
    cr_assert_eq(ts_run("therasyncd", args, NULL, 10000, &out, &err), 0, "%s", err.data);
    cr_assert(strstr(out.data, "(0 selectors)") && strstr(out.data, "config: OK"), "%s",
              out.data);
    char data[4300];
    snprintf(data, sizeof data, "%s/data", dir);
    struct stat st;
    cr_assert_neq(stat(data, &st), 0, "a check makes no data dir");
    ts_buf_free(&out);
    ts_buf_free(&err);
    ts_rmtree(dir);
    free(dir);
}

/* The next notification that starts with prefix (others skipped), in buf;
 * false after 5 s or 50 datagrams without one. */
static bool next_notice(int fd, const char *prefix, char *buf, size_t len)
{
    for (int i = 0; i < 50; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) != 1)
            return false;
        ssize_t n = recv(fd, buf, len - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        if (strncmp(buf, prefix, strlen(prefix)) == 0)
            return true;
    }
    return false;
}

/* sd_notify: READY=1 with a STATUS= once serving, WATCHDOG=1 at half of
 * $WATCHDOG_USEC (here 200 ms: every 100 ms), RELOADING=1 with
 * MONOTONIC_USEC= then READY=1 around a SIGHUP reload, STOPPING=1. */
Test(daemon, notifies_systemd_when_ready, .timeout = 30)
{
    char *dir = ts_tmpdir("ts-notify");
    char sock_path[4200];
    snprintf(sock_path, sizeof sock_path, "%s/notify.sock", dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(sock_path), sizeof addr.sun_path);
    memcpy(addr.sun_path, sock_path, strlen(sock_path) + 1);
    cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    setenv("NOTIFY_SOCKET", sock_path, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    ts_engine_t e;
    cr_assert_eq(ts_engine_start(&e, NULL), 0);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    char buf[256];
    cr_assert(next_notice(fd, "READY=1", buf, sizeof buf), "no READY=1");
    cr_assert_str_eq(buf, "READY=1\nSTATUS=serving");
    int64_t t0 = ts_mono_us();
    for (int i = 0; i < 3; i++)
        cr_assert(next_notice(fd, "WATCHDOG=1", buf, sizeof buf), "no WATCHDOG=1");
    int64_t took = ts_mono_us() - t0;
    cr_expect(took >= 150000 && took < 2000000, "3 watchdog pings in %lld us (every 100 ms)",
              (long long)took);
    cr_assert_eq(kill(e.proc.pid, SIGHUP), 0);
    cr_assert(next_notice(fd, "RELOADING=1", buf, sizeof buf), "no RELOADING=1");
    cr_assert(strstr(buf, "\nMONOTONIC_USEC="), "%s", buf);
    cr_assert(next_notice(fd, "READY=1", buf, sizeof buf), "no READY=1 after the reload");
    cr_assert_eq(ts_engine_stop(&e), 0);
    cr_assert(next_notice(fd, "STOPPING=1", buf, sizeof buf), "no STOPPING=1");
    close(fd);
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
}

Test(daemon, overload_answers_busy_and_loses_nothing, .timeout = 60)
{
    char *dir = ts_tmpdir("ts-busy");
    char path[4200];
    snprintf(path, sizeof path, "%s/busy.lua", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "max_inflight = 8\npolicies = '%s'\n",
            ts_source_path("tests/fixtures/policies/permissive"));
    fclose(f);
    ts_engine_t e;
    const char *args[] = {"--config", path, NULL};
    cr_assert_eq(ts_engine_start(&e, args), 0);
    int n = 2000, ok = 0, busy = 0;
    char p[256];
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"create\",\"params\":"
                              "{\"collection\":\"sessions\",\"doc\":{\"id\":\"k%d\"}}}", i, i);
        zmq_send(e.dealer, p, strlen(p), 0);
    }
    char *created = calloc((size_t)n, 1);
    zmq_pollitem_t item = {.socket = e.dealer, .events = ZMQ_POLLIN};
    for (int i = 0; i < n; i++) {
        cr_assert_eq(zmq_poll(&item, 1, 10000), 1, "answer %d missing", i);
        char buf[2048];
        int len = zmq_recv(e.dealer, buf, sizeof buf - 1, 0);
        buf[len] = '\0';
        cJSON *r = cJSON_Parse(buf);
        int id = cJSON_GetObjectItem(r, "id")->valueint;
        cr_assert_eq(id, i, "answers, busy ones included, come in request order");
        if (ts_rpc_result(r)) {
            ok++;
            created[id] = 1;
        } else {
            cr_assert_str_eq(ts_rpc_error_reason(r), "busy");
            busy++;
        }
        cJSON_Delete(r);
    }
    cr_assert_gt(busy, 0, "8 in flight must overflow with 2000 pipelined requests");
    cr_assert_gt(ok, 0);
    cJSON *s = ts_rpc(&e, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(s), "collections"),
                                     "sessions")->valueint, ok, "exactly the accepted writes");
    cJSON_Delete(s);
    free(created);
    ts_engine_destroy(&e);
    ts_rmtree(dir);
    free(dir);
}

/* The data dir holds health data: after a start it is 0700 and its files
 * 0600, though the dir was made 0755 beforehand (systemd's default), the
 * files were 0644, and the daemon was started with umask 0; and it warns
 * that they had been open to others. */
Test(daemon, data_files_are_private_whatever_the_umask, .timeout = 30)
{
    ts_engine_t e;
    const char *args[] = {"--policies", ts_source_path("tests/fixtures/policies/permissive"),
                          NULL};
    cr_assert_eq(ts_engine_start(&e, args), 0);
    cr_assert_eq(ts_engine_stop(&e), 0);
    char path[4400];
    cr_assert_eq(chmod(e.data, 0755), 0);
    snprintf(path, sizeof path, "%s/therasync.db", e.data);
    cr_assert_eq(chmod(path, 0644), 0);
    mode_t old = umask(0);
    int rc = ts_engine_restart(&e, args);
    umask(old);
    cr_assert_eq(rc, 0);
    cJSON *r = ts_rpc(&e, "create", "{\"collection\":\"sessions\",\"doc\":{\"notes\":\"private\"}}");
    cr_assert_not_null(ts_rpc_result(r), "the create was refused");
    cJSON_Delete(r);
    struct stat st;
    cr_assert_eq(stat(e.data, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "data dir mode %o", st.st_mode & 0777);
    const char *files[] = {"therasync.db", "therasync.db-wal", "therasync.db-shm", "LOCK"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", e.data, files[i]);
        cr_assert_eq(stat(path, &st), 0, "%s: %s", files[i], strerror(errno));
        cr_assert_eq(st.st_mode & 0777, 0600, "%s mode %o", files[i], st.st_mode & 0777);
    }
    /* and the log said the dir and the database had been open to others */
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&e.proc, "was open to other users (mode 755)", 100, line,
                                   sizeof line), 0, "a warning for the 0755 dir");
    cr_assert_eq(ts_proc_wait_line(&e.proc, "therasync.db was open to other users (mode 644)",
                                   100, line, sizeof line), 0, "and for the 0644 database");
    cr_assert_eq(ts_engine_stop(&e), 0);
    ts_engine_destroy(&e);
}

/* Without client authentication, an endpoint other hosts can reach is
 * refused (exit 2, saying why and what to do) unless --insecure; the
 * refusal comes before anything binds. Loopback names pass the check. */
Test(daemon, an_endpoint_beyond_this_host_is_refused, .timeout = 30)
{
    ts_buf_t err = {0};
    const char *any[] = {"--data", "/nonexistent/ts-never", "--endpoint", "tcp://0.0.0.0:7999",
                         NULL};
    cr_assert_eq(ts_run("therasyncd", any, NULL, 5000, NULL, &err), 2);
    cr_assert(strstr(err.data, "0.0.0.0") && strstr(err.data, "--insecure"), "%s", err.data);
    ts_buf_reset(&err);
    const char *lan[] = {"--data", "/nonexistent/ts-never", "--events", "tcp://192.168.1.20:7999",
                         NULL};
    cr_assert_eq(ts_run("therasyncd", lan, NULL, 5000, NULL, &err), 2);
    cr_assert(strstr(err.data, "--events"), "%s", err.data);
    ts_buf_free(&err);
    const char *local[] = {"tcp://127.0.0.1:1", "tcp://localhost:1", "tcp://[::1]:1",
                           "ipc:///tmp/x", "inproc://x"};
    for (int i = 0; i < 5; i++)
        cr_assert(ts_endpoint_is_local(local[i]), "%s", local[i]);
    const char *remote[] = {"tcp://*:1", "tcp://0.0.0.0:1", "tcp://10.0.0.1:1",
                            "tcp://127.0.0.1.evil:1", "udp://127.0.0.1:1"};
    for (int i = 0; i < 5; i++)
        cr_assert(!ts_endpoint_is_local(remote[i]), "%s", remote[i]);
}
