/* test_install.c — `make install DESTDIR=... PREFIX=/usr` lays out the FHS
 * tree (files and modes), the installed therasyncd finds the installed
 * policies and accepts the example config, the installed unit scores
 * <= 2.0 in `systemd-analyze security --offline=yes`, and the man pages
 * are clean under `groff -man -ww -z`.
 *
 * One install into a temporary DESTDIR for the whole suite; make runs in
 * $TS_SOURCE_DIR with BUILD=$TS_BUILD_DIR, so it installs the binaries
 * under test and rebuilds nothing that is up to date. */
#include "../support/engine.h"
#include "../support/proc.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *destdir;

/* Runs an absolute program to completion (at most timeout_ms), its output
 * (stdout and stderr) in a malloc'd *out. Returns its exit code, or -1
 * when it could not start or ran too long (then killed). */
static int run_abs(const char *program, const char *const args[], int timeout_ms, char **out)
{
    ts_proc_t p = {0};
    *out = NULL;
    if (ts_proc_spawn(&p, NULL, program, args) != 0)
        return -1;
    int rc = ts_proc_wait_exit(&p, timeout_ms);
    if (rc < 0)
        ts_proc_stop(&p, 1000);
    *out = ts_file_text(p.log_path);
    unlink(p.log_path);
    if (!*out)
        *out = strdup("");
    return rc;
}

static void install_tree(void)
{
    destdir = ts_tmpdir("ts-install");
    cr_assert_not_null(destdir);
    char build[PATH_MAX], dest_arg[4200], build_arg[PATH_MAX + 16], src[PATH_MAX];
    cr_assert_not_null(realpath(ts_build_dir(), build), "no build dir %s", ts_build_dir());
    cr_assert_not_null(realpath(ts_source_path("."), src));
    snprintf(dest_arg, sizeof dest_arg, "DESTDIR=%s", destdir);
    snprintf(build_arg, sizeof build_arg, "BUILD=%s", build);
    const char *args[] = {"-s", "-C", src, "install", dest_arg, "PREFIX=/usr", build_arg, NULL};
    char *out;
    int rc = run_abs("/usr/bin/make", args, 120000, &out);
    cr_assert_eq(rc, 0, "make install exited %d: %s", rc, out);
    free(out);
}

static void remove_tree(void)
{
    if (destdir)
        ts_rmtree(destdir);
    free(destdir);
    destdir = NULL;
}

/* destdir + rel, in a static buffer (one of four in rotation). */
static const char *at(const char *rel)
{
    static char bufs[4][4400];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s%s", destdir, rel);
    return b;
}

TestSuite(install, .init = install_tree, .fini = remove_tree, .timeout = 180);

Test(install, lays_out_the_fhs_tree_with_its_modes)
{
    struct {
        const char *path;
        mode_t mode; /* permission bits; S_IFDIR for a directory */
    } want[] = {
        {"/usr/bin/therasyncd", 0755},
        {"/usr/bin/therasync", 0755},
        {"/usr/bin/therasync-bench", 0755},
        {"/usr/libexec/therasync/clinic-api", 0755},
        {"/usr/libexec/therasync/therasync-canned", 0755},
        {"/usr/share/therasync/policies/validate.lua", 0644},
        {"/usr/share/therasync/policies/selectors.lua", 0644},
        {"/usr/share/therasync/policies/conflict.lua", 0644},
        {"/usr/lib/systemd/system/therasyncd.service", 0644},
        {"/usr/lib/sysusers.d/therasync.conf", 0644},
        {"/usr/lib/tmpfiles.d/therasync.conf", 0644},
        {"/usr/share/man/man1/therasync.1", 0644},
        {"/usr/share/man/man1/therasync-bench.1", 0644},
        {"/usr/share/man/man8/therasyncd.8", 0644},
        /* PREFIX=/usr: the config goes to /etc, not /usr/etc; root's and
         * the therasync group's (tmpfiles sets the group). */
        {"/etc/therasync", S_IFDIR | 0750},
        {"/etc/therasync/therasyncd.lua", 0640},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        struct stat st;
        cr_assert_eq(stat(at(want[i].path), &st), 0, "%s missing", want[i].path);
        bool dir = (want[i].mode & S_IFDIR) != 0;
        cr_expect_eq(S_ISDIR(st.st_mode), dir, "%s: %s", want[i].path,
                     dir ? "not a directory" : "not a file");
        cr_expect_eq(st.st_mode & 07777, want[i].mode & 07777, "%s: mode %o, want %o",
                     want[i].path, st.st_mode & 07777, want[i].mode & 07777);
    }
    /* Test servers are not programs people run: not in bin/. */
    struct stat st;
    cr_expect_neq(stat(at("/usr/bin/clinic-api"), &st), 0, "clinic-api in bin/");
    cr_expect_neq(stat(at("/usr/bin/therasync-canned"), &st), 0, "therasync-canned in bin/");
    cr_expect_neq(stat(at("/usr/etc"), &st), 0, "PREFIX=/usr put the config in /usr/etc");
    /* The unit runs the installed programs with the installed config. */
    char *unit = NULL;
    const char *cat[] = {at("/usr/lib/systemd/system/therasyncd.service"), NULL};
    cr_assert_eq(run_abs("/bin/cat", cat, 10000, &unit), 0);
    cr_expect(strstr(unit, "\nExecStart=/usr/bin/therasyncd --config /etc/therasync/therasyncd.lua\n"),
              "%s", unit);
    cr_expect(strstr(unit, "\nExecStartPre=/usr/bin/therasyncd --check-config --config "
                           "/etc/therasync/therasyncd.lua\n"), "%s", unit);
    cr_expect(strstr(unit, "\nExecReload=/usr/bin/therasync "), "%s", unit);
    cr_expect(strstr(unit, "\nStateDirectoryMode=0700\n") && strstr(unit, "\nUMask=0077\n"), "%s",
              unit);
    free(unit);
}

/* The installed daemon, from bin/, finds the policies installed beside
 * it (<bin>/../share/therasync/policies) and the example config, which
 * names every key, passes --check-config. */
Test(install, installed_daemon_finds_its_policies)
{
    const char *args[] = {"--check-config", "--config", at("/etc/therasync/therasyncd.lua"),
                          NULL};
    char *out;
    int rc = run_abs(at("/usr/bin/therasyncd"), args, 30000, &out);
    cr_expect_eq(rc, 0, "--check-config exited %d: %s", rc, out);
    char want[4400];
    snprintf(want, sizeof want, "policies: %s (", at("/usr/share/therasync/policies"));
    cr_expect(strstr(out, want), "not the installed policies: %s", out);
    cr_expect(strstr(out, "config: OK"), "%s", out);
    free(out);
}

Test(install, unit_scores_at_most_2_in_systemd_analyze_security)
{
    const char *analyze = "/usr/bin/systemd-analyze";
    if (access(analyze, X_OK) != 0)
        cr_skip_test("systemd-analyze is not installed (Debian package systemd; scripts/setup.sh "
                     "installs it): the unit's exposure score is not checked");
    const char *args[] = {"security", "--offline=yes",
                          at("/usr/lib/systemd/system/therasyncd.service"), NULL};
    char *out;
    int rc = run_abs(analyze, args, 60000, &out);
    cr_assert_eq(rc, 0, "systemd-analyze exited %d: %s", rc, out);
    const char *line = strstr(out, "Overall exposure level for therasyncd.service: ");
    cr_assert_not_null(line, "%s", out);
    double score = strtod(line + strlen("Overall exposure level for therasyncd.service: "), NULL);
    cr_expect(score > 0 && score <= 2.0, "exposure %.1f > 2.0:\n%s", score, out);
    free(out);
}

Test(install, man_pages_are_lint_clean)
{
    const char *pages[] = {"/usr/share/man/man8/therasyncd.8", "/usr/share/man/man1/therasync.1",
                           "/usr/share/man/man1/therasync-bench.1"};
    for (size_t i = 0; i < 3; i++) {
        const char *args[] = {"-man", "-ww", "-z", at(pages[i]), NULL};
        char *out;
        int rc = run_abs("/usr/bin/groff", args, 30000, &out);
        cr_expect_eq(rc, 0, "groff on %s exited %d", pages[i], rc);
        cr_expect_str_eq(out, "", "groff warns on %s:\n%s", pages[i], out);
        free(out);
        /* It has the sections a reader looks for. */
        const char *cat[] = {at(pages[i]), NULL};
        cr_assert_eq(run_abs("/bin/cat", cat, 10000, &out), 0);
        cr_expect(strstr(out, ".SH NAME\n") && strstr(out, ".SH SYNOPSIS\n") &&
                      strstr(out, ".SH SEE ALSO\n"), "%s lacks a section", pages[i]);
        free(out);
    }
}
