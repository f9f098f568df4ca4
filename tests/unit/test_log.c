/* test_log.c — the log's lines as an operator reads them: a burst of one
 * warning printed once, then counted; other lines untouched. */
#include "../support/proc.h"
#include "therasync/log.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[] = "/tmp/ts-log-XXXXXX";

/* stderr into a temp file (each test runs in a process of its own). */
static void capture(void)
{
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    fflush(stderr);
    cr_assert(dup2(fd, 2) == 2);
    close(fd);
    setvbuf(stderr, NULL, _IONBF, 0);
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* What the log wrote so far (freed at the next call). */
static char *captured(void)
{
    static char *text;
    free(text);
    text = ts_file_text(path);
    cr_assert_not_null(text, "%s", path);
    return text;
}

static void warn_disk(int i)
{
    ts_warn("test", "disk slow (%d)", i);
}

static void warn_peer(int i)
{
    ts_warn("test", "peer gone (%d)", i);
}

/* Twenty warnings in turns, each its own format: each printed once, each
 * counted at the end (with slots picked by address, some shared one). */
#define W(n) ts_warn("test", "warning number " #n " (%d)", i)
Test(log, twenty_bursts_interleaved_each_counted, .timeout = 10)
{
    capture();
    for (int i = 0; i < 10; i++) {
        W(0); W(1); W(2); W(3); W(4); W(5); W(6); W(7); W(8); W(9);
        W(10); W(11); W(12); W(13); W(14); W(15); W(16); W(17); W(18); W(19);
    }
    char *out = captured();
    cr_assert_eq(count(out, "warning number"), 20, "%s", out);
    cr_assert_eq(count(out, "repeated"), 0, "%s", out);
    usleep(1100 * 1000);
    ts_info("test", "later");
    out = captured();
    cr_assert_eq(count(out, "last message repeated 9 times"), 20, "%s", out);
    unlink(path);
}

/* Two warnings in turns: each its own count (a slot shared by two formats
 * once printed a count early). */
Test(log, two_bursts_interleaved_each_counted, .timeout = 10)
{
    capture();
    for (int i = 0; i < 100; i++) {
        warn_disk(i);
        warn_peer(i);
    }
    char *out = captured();
    cr_assert_eq(count(out, "disk slow"), 1, "%s", out);
    cr_assert_eq(count(out, "peer gone"), 1, "%s", out);
    cr_assert_eq(count(out, "repeated"), 0, "%s", out);
    usleep(1100 * 1000);
    ts_info("test", "later");
    out = captured();
    cr_assert_eq(count(out, "last message repeated 99 times"), 2, "%s", out);
    unlink(path);
}

Test(log, burst_of_one_warning_is_counted_not_printed, .timeout = 10)
{
    capture();
    for (int i = 0; i < 1000; i++)
        warn_disk(i);
    ts_warn("test", "another warning");     /* its own format: printed */
    ts_info("test", "an info line");        /* never held back */
    ts_error("test", "an error %d", 1);
    ts_error("test", "an error %d", 2);     /* errors are all printed */
    char *out = captured();
    cr_assert_eq(count(out, "disk slow"), 1, "%s", out);
    cr_assert_eq(count(out, "disk slow (0)"), 1, "the first one: %s", out);
    cr_assert_eq(count(out, "another warning"), 1);
    cr_assert_eq(count(out, "an info line"), 1);
    cr_assert_eq(count(out, "an error"), 2);
    cr_assert_eq(count(out, "repeated"), 0, "not before the second is over: %s", out);
    usleep(1100 * 1000);
    warn_disk(1000); /* after the window: the count, then the line */
    out = captured();
    cr_assert_eq(count(out, "warn  test: last message repeated 999 times\n"), 1, "%s", out);
    cr_assert(strstr(out, "repeated 999 times") < strstr(out, "disk slow (1000)"), "%s", out);
    /* a burst that ends (still in the window (1000) opened) is counted at
     * the next line of any kind */
    for (int i = 0; i < 5; i++)
        warn_disk(2000 + i);
    usleep(1100 * 1000);
    ts_info("test", "later");
    out = captured();
    cr_assert_eq(count(out, "last message repeated 5 times"), 1, "%s", out);
    cr_assert(strstr(out, "repeated 5 times") < strstr(out, "later"), "%s", out);
    unlink(path);
}

/* Without JOURNAL_STREAM (or when it names another stream) lines carry no
 * priority prefix. */
Test(log, no_priority_prefix_off_journald, .timeout = 10)
{
    setenv("JOURNAL_STREAM", "1:1", 1);
    capture();
    ts_info("test", "plain");
    char *out = captured();
    cr_assert(out[0] >= '0' && out[0] <= '9', "starts with the time: %s", out);
    cr_assert_not(ts_log_to_journal());
    unlink(path);
}

/* JOURNAL_STREAM naming stderr's device and inode: each line starts with
 * its syslog priority. */
Test(log, syslog_priorities_on_journald, .timeout = 10)
{
    capture();
    struct stat st;
    cr_assert_eq(fstat(2, &st), 0);
    char env[64];
    snprintf(env, sizeof env, "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
    ts_log_set_level(TS_LOG_DEBUG);
    ts_error("test", "e");
    ts_warn("test", "w");
    ts_info("test", "i");
    ts_debug("test", "d");
    char *out = captured();
    cr_assert(strncmp(out, "<3>", 3) == 0, "%s", out);
    cr_assert(strstr(out, "\n<4>") && strstr(out, "\n<6>") && strstr(out, "\n<7>"), "%s", out);
    cr_assert(strstr(out, "<7>") && strstr(strstr(out, "<7>"), "debug test: d"), "%s", out);
    unlink(path);
}
