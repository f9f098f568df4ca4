/* test_watchdog.c — the lazily armed budget hook (src/policy/watchdog.c): calls
 * run without a count hook until they have run for 2-4 ms; then the watchdog
 * arms it by signalling their thread, and the budget applies as before. */
#include "policy/sandbox.h"
#include "policy/watchdog.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_dir[1024];

static ts_sandbox_t *open_sandbox(long budget)
{
    const char *src = getenv("TS_SOURCE_DIR");
    snprintf(s_dir, sizeof s_dir, "%s/tests/fixtures/watchdog", src ? src : ".");
    char err[512];
    ts_sandbox_t *sb = ts_sandbox_new(s_dir, 8u << 20, budget, err, sizeof err);
    cr_assert_not_null(sb, "%s", err);
    return sb;
}

typedef struct {
    const char *fn;
    int mask_before, mask_after; /* hook mask at the start / end of the call */
} run_t;

static int s_run(lua_State *L)
{
    run_t *r = lua_touserdata(L, 1);
    r->mask_before = lua_gethookmask(L);
    ts_sandbox_run_file(L, "calls.lua");
    lua_getfield(L, -1, r->fn);
    lua_call(L, 0, 0);
    r->mask_after = lua_gethookmask(L);
    return 0;
}

static int call(ts_sandbox_t *sb, run_t *r, char *err, size_t errlen)
{
    err[0] = '\0';
    return ts_sandbox_pcall(sb, s_run, r, err, errlen);
}

/* The watchdog thread's id, or 0 when it is not running. */
static long watchdog_tid(void)
{
    DIR *d = opendir("/proc/self/task");
    long tid = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f && fgets(name, sizeof name, f) && strncmp(name, "ts-watchdog", 11) == 0)
            tid = strtol(e->d_name, NULL, 10);
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return tid;
}

/* Whether the watchdog thread is gone. Its /proc/self/task entry can outlive
 * pthread_join by a moment (the kernel releases an exited thread just after
 * waking the joiner), so give it up to a second. */
static bool watchdog_gone(void)
{
    for (int i = 0; i < 100; i++) {
        if (!watchdog_tid())
            return true;
        usleep(10000);
    }
    return false;
}

static long context_switches(long tid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
    FILE *f = fopen(path, "r");
    long n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

Test(watchdog, quick_calls_run_without_a_hook)
{
    ts_sandbox_t *sb = open_sandbox(0); /* the default budget: lazy */
    char err[512];
    for (int i = 0; i < 100; i++) {
        run_t r = {.fn = "quick"};
        cr_assert_eq(call(sb, &r, err, sizeof err), 0, "%s", err);
        cr_assert_eq(r.mask_before, 0);
    }
    ts_sandbox_destroy(&sb);
}

Test(watchdog, a_loop_past_the_threshold_is_stopped)
{
    ts_sandbox_t *sb = open_sandbox(2000000);
    const char *fns[] = {"loop", "pcall_loop"};
    for (int i = 0; i < 2; i++) {
        char err[512];
        run_t r = {.fn = fns[i]};
        int64_t t0 = ts_mono_us();
        cr_assert_eq(call(sb, &r, err, sizeof err), -1, "%s ended", fns[i]);
        cr_assert(strstr(err, "instruction budget exceeded"), "%s: %s", fns[i], err);
        cr_assert_lt(ts_mono_us() - t0, 5000000, "%s took too long", fns[i]);
        cr_assert_geq(ts_sandbox_instructions(sb), 2000000);
        /* and the state serves the next call, unhooked */
        run_t q = {.fn = "quick"};
        cr_assert_eq(call(sb, &q, err, sizeof err), 0, "%s", err);
        cr_assert_eq(q.mask_before, 0);
    }
    ts_sandbox_destroy(&sb);
}

Test(watchdog, a_call_just_past_the_threshold_completes_and_the_hook_is_disarmed)
{
    ts_sandbox_t *sb = open_sandbox(100000000);
    char err[512];
    run_t r = {.fn = "just_past"};
    cr_assert_eq(call(sb, &r, err, sizeof err), 0, "%s", err);
    cr_assert_eq(r.mask_before, 0);
    cr_assert(r.mask_after & LUA_MASKCOUNT, "the hook was not armed after 20 ms");
    cr_assert_gt(ts_sandbox_instructions(sb), 0);
    run_t q = {.fn = "quick"};
    cr_assert_eq(call(sb, &q, err, sizeof err), 0, "%s", err);
    cr_assert_eq(q.mask_before, 0, "the hook stayed armed for the next call");
    cr_assert_eq(q.mask_after, 0);
    ts_sandbox_destroy(&sb);
}

Test(watchdog, memory_bombs_still_fail)
{
    ts_sandbox_t *sb = open_sandbox(0);
    const char *fns[] = {"memory_bomb", "rep_bomb"};
    for (int i = 0; i < 2; i++) {
        char err[512];
        run_t r = {.fn = fns[i]};
        cr_assert_eq(call(sb, &r, err, sizeof err), -1, "%s ended", fns[i]);
        cr_assert(strstr(err, "memory") || strstr(err, "too large"), "%s: %s", fns[i], err);
        run_t q = {.fn = "quick"};
        cr_assert_eq(call(sb, &q, err, sizeof err), 0, "%s", err);
    }
    ts_sandbox_destroy(&sb);
}

Test(watchdog, small_budgets_are_counted_from_the_first_instruction)
{
    ts_sandbox_t *sb = open_sandbox(TS_SANDBOX_LAZY_BUDGET - 1);
    char err[512];
    run_t r = {.fn = "quick"};
    cr_assert_eq(call(sb, &r, err, sizeof err), 0, "%s", err);
    cr_assert(r.mask_before & LUA_MASKCOUNT);
    run_t l = {.fn = "loop"};
    cr_assert_eq(call(sb, &l, err, sizeof err), -1);
    cr_assert(strstr(err, "instruction budget exceeded"), "%s", err);
    ts_sandbox_destroy(&sb);
}

Test(watchdog, sleeps_when_no_call_runs_and_stops_with_the_last_sandbox)
{
    ts_sandbox_t *a = open_sandbox(0), *b = open_sandbox(0);
    long tid = 0;
    for (int i = 0; i < 100 && !tid; i++) /* it names itself once running */
        if (!(tid = watchdog_tid()))
            usleep(10000);
    cr_assert_gt(tid, 0);
    char err[512];
    run_t r = {.fn = "quick"};
    cr_assert_eq(call(a, &r, err, sizeof err), 0, "%s", err);
    usleep(20000); /* a tick or two, then it goes to sleep */
    long before = context_switches(tid);
    usleep(200000);
    long after = context_switches(tid);
    cr_assert_leq(after - before, 1, "the idle watchdog woke %ld times in 200 ms", after - before);
    /* a stray signal on a thread not running Lua does nothing */
    raise(TS_WATCH_SIGNAL);
    ts_sandbox_destroy(&a);
    cr_assert_eq(watchdog_tid(), tid, "stopped while a sandbox remains");
    /* and it wakes again for a long call */
    run_t p = {.fn = "just_past"};
    cr_assert_eq(call(b, &p, err, sizeof err), 0, "%s", err);
    cr_assert(p.mask_after & LUA_MASKCOUNT);
    ts_sandbox_destroy(&b);
    cr_assert(watchdog_gone(), "still running after the last sandbox");
}

/* Calls on two threads at once, each looping: each is stopped on its own
 * thread (the signal goes to the thread running the call). */
static void *s_loop_thread(void *arg)
{
    ts_sandbox_t *sb = arg;
    char err[512];
    run_t r = {.fn = "pcall_loop"};
    long rc = call(sb, &r, err, sizeof err) == -1 && strstr(err, "budget exceeded");
    return (void *)rc;
}

Test(watchdog, loops_on_two_threads_are_both_stopped)
{
    ts_sandbox_t *a = open_sandbox(2000000), *b = open_sandbox(2000000);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, s_loop_thread, a);
    pthread_create(&tb, NULL, s_loop_thread, b);
    void *ra, *rb;
    pthread_join(ta, &ra);
    pthread_join(tb, &rb);
    cr_assert(ra && rb);
    ts_sandbox_destroy(&a);
    ts_sandbox_destroy(&b);
}

/* Sandboxes created and destroyed on several threads at once: the watchdog
 * thread starts and stops under them without losing one (a new start must
 * not race the join of the last one). */
static void *s_churn(void *dir)
{
    for (int i = 0; i < 50; i++) {
        char err[512];
        ts_sandbox_t *sb = ts_sandbox_new(dir, 8u << 20, 0, err, sizeof err);
        run_t r = {.fn = "quick"};
        int rc = sb ? call(sb, &r, err, sizeof err) : -1;
        ts_sandbox_destroy(&sb);
        if (rc != 0)
            return NULL;
    }
    return (void *)1;
}

Test(watchdog, start_and_stop_from_many_threads)
{
    ts_sandbox_t *first = open_sandbox(0); /* fills s_dir */
    ts_sandbox_destroy(&first);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, s_churn, s_dir);
    for (int i = 0; i < 4; i++) {
        void *ok;
        pthread_join(t[i], &ok);
        cr_assert(ok);
    }
    ts_sandbox_t *sb = open_sandbox(2000000); /* and it still stops a loop */
    char err[512];
    run_t r = {.fn = "loop"};
    cr_assert_eq(call(sb, &r, err, sizeof err), -1);
    cr_assert(strstr(err, "budget exceeded"), "%s", err);
    ts_sandbox_destroy(&sb);
    cr_assert(watchdog_gone());
}

/* A policy call inside another on the same thread (`therasync policy test`
 * runs the policy under test from the test's own sandbox). The outer call is
 * signalled while the inner one runs, or after it: neither signal may be
 * lost, or the outer call would never be stopped, and its end would wait
 * for the signal for ever (seen as a hang under load). */
typedef struct {
    ts_sandbox_t *inner;
    const char *inner_fn, *outer_fn;
    int inner_rc;
} nest_t;

static int s_nested(lua_State *L)
{
    nest_t *n = lua_touserdata(L, 1);
    char err[512];
    run_t r = {.fn = n->inner_fn};
    n->inner_rc = call(n->inner, &r, err, sizeof err);
    ts_sandbox_run_file(L, "calls.lua");
    lua_getfield(L, -1, n->outer_fn);
    lua_call(L, 0, 0);
    return 0;
}

Test(watchdog, nested_calls_on_one_thread_are_each_watched, .timeout = 30)
{
    ts_sandbox_t *outer = open_sandbox(2000000), *inner = open_sandbox(2000000);
    char err[512];
    for (int i = 0; i < 20; i++) { /* both signalled while the inner call runs */
        nest_t n = {.inner = inner, .inner_fn = "just_past", .outer_fn = "quick"};
        cr_assert_eq(ts_sandbox_pcall(outer, s_nested, &n, err, sizeof err), 0, "%s", err);
        cr_assert_eq(n.inner_rc, 0);
    }
    /* the outer call loops after the inner one: its budget still stops it */
    nest_t n = {.inner = inner, .inner_fn = "quick", .outer_fn = "loop"};
    cr_assert_neq(ts_sandbox_pcall(outer, s_nested, &n, err, sizeof err), 0);
    cr_assert(strstr(err, "instruction budget"), "%s", err);
    ts_sandbox_destroy(&inner);
    ts_sandbox_destroy(&outer);
}
