/* test_readme.c — the README's session and sync demos, followed in order
 * as a newcomer would, with the shipped policies: the same CLI commands
 * (ID set as the README sets it), the clinic taken offline and back, the
 * engine frozen with SIGSTOP while the clinic changes the same session,
 * `therasync watch conflict --count 1 --for` started first, and the values
 * the README promises at the end. Ports are free loopback ones instead of
 * the README's 7410/8080. */
#include "../support/clinic.h"
#include "../support/engine.h"
#include "../support/run.h"

#include <cJSON.h>
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define ID "ses-0001"

static ts_clinic_t clinic;
static ts_engine_t engine;

static void stop(void)
{
    if (engine.proc.pid)
        kill(engine.proc.pid, SIGCONT); /* never leave it frozen */
    ts_engine_destroy(&engine);
    ts_clinic_destroy(&clinic);
}

TestSuite(readme, .fini = stop, .timeout = 120);

/* `build/therasync ARGS...` against our engine; exit code, output in out. */
static int therasync(ts_buf_t *out, const char *const args[])
{
    const char *argv[24] = {"--endpoint", engine.endpoint, "--events", engine.events,
                            "--timeout", "10000"};
    int n = 6;
    for (int i = 0; args[i] && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    ts_buf_reset(out);
    ts_buf_t err = {0};
    int rc = ts_run("therasync", argv, NULL, 20000, out, &err);
    cr_assert_eq(rc, 0, "therasync %s %s: exit %d: %s", args[0], args[1] ? args[1] : "", rc,
                 err.data ? err.data : "");
    ts_buf_free(&err);
    return rc;
}

static cJSON *status(void)
{
    ts_buf_t out = {0};
    const char *args[] = {"--json", "status", NULL};
    therasync(&out, args);
    cJSON *s = cJSON_Parse(out.data);
    cr_assert_not_null(s, "status: %s", out.data);
    ts_buf_free(&out);
    return s;
}

/* Polls `therasync status` until online and pending are as wanted. */
static void wait_status(bool online, int pending, int timeout_ms, const char *why)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        cJSON *s = status();
        bool on = cJSON_IsTrue(cJSON_GetObjectItem(s, "online"));
        int p = cJSON_GetObjectItem(s, "pending") ? cJSON_GetObjectItem(s, "pending")->valueint : -1;
        cJSON_Delete(s);
        if (on == online && (pending < 0 || p == pending))
            return;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        cr_assert_lt(ms, timeout_ms, "%s: online %d pending %d after %d ms", why, on, p,
                     timeout_ms);
        struct timespec nap = {0, 100 * 1000000};
        nanosleep(&nap, NULL);
    }
}

static cJSON *get_doc(void)
{
    ts_buf_t out = {0};
    const char *args[] = {"--json", "get", "sessions", ID, NULL};
    therasync(&out, args);
    cJSON *r = cJSON_Parse(out.data);
    cr_assert_not_null(r, "get: %s", out.data);
    ts_buf_free(&out);
    cJSON *doc = cJSON_DetachItemFromObject(r, "doc");
    cJSON_Delete(r);
    cr_assert_not_null(doc);
    return doc;
}

Test(readme, the_session_and_sync_demos_followed_in_order)
{
    cr_assert_eq(ts_clinic_start(&clinic, NULL), 0, "clinic-api did not start");
    const char *args[] = {"--api", clinic.url, NULL}; /* the shipped policies */
    cr_assert_eq(ts_engine_start(&engine, args), 0, "therasyncd did not start");
    ts_buf_t out = {0};

    /* A short session */
    const char *create[] = {"create", "sessions",
                            "{\"id\":\"" ID "\",\"patient_id\":\"pat-0001\","
                            "\"therapist_id\":\"thr-001\",\"scheduled_at\":\"2026-03-02T09:00:00Z\","
                            "\"duration_min\":50,\"status\":\"scheduled\",\"modality\":"
                            "\"in_person\",\"room\":\"A1\"}",
                            NULL};
    therasync(&out, create);
    const char *query[] = {"--json", "query", "sessions", "upcoming",
                           "{\"therapist_id\":\"thr-001\",\"now\":\"2026-01-01T00:00:00Z\"}", NULL};
    therasync(&out, query);
    cr_assert(strstr(out.data, ID), "upcoming shows it: %s", out.data);
    const char *update[] = {"update", "sessions", ID, "{\"notes\":\"intake done\"}", NULL};
    therasync(&out, update);
    wait_status(true, 0, 20000, "the writes sync");
    const char *audit[] = {"audit", "--id", ID, NULL};
    therasync(&out, audit);
    cr_assert(strstr(out.data, "confirmed"), "the audit shows the life: %s", out.data);

    /* A write made while the clinic API is down */
    cr_assert_eq(ts_clinic_faults(&clinic, "{\"offline\":true}"), 0);
    const char *offline[] = {"update", "sessions", ID, "{\"notes\":\"reviewed homework\"}", NULL};
    therasync(&out, offline);
    wait_status(false, 1, 20000, "offline with the write pending");
    cr_assert_eq(ts_clinic_faults(&clinic, "{}"), 0);
    wait_status(true, 0, 30000, "back online, replayed");

    /* A conflict resolved by a policy: watch first, then freeze */
    ts_proc_t watch = {0};
    const char *wargs[] = {"--events", engine.events, "watch", "conflict", "--count", "1",
                           "--for", "60", NULL};
    cr_assert_eq(ts_proc_spawn(&watch, engine.dir, "therasync", wargs), 0);
    struct timespec settle = {0, 300 * 1000000}; /* as a person types the next line */
    nanosleep(&settle, NULL);
    cr_assert_eq(ts_clinic_faults(&clinic, "{\"offline\":true}"), 0);
    const char *cancel[] = {"update", "sessions", ID,
                            "{\"status\":\"cancelled\",\"notes\":\"patient called to cancel\"}",
                            NULL};
    therasync(&out, cancel);
    cr_assert_eq(kill(engine.proc.pid, SIGSTOP), 0);
    cr_assert_eq(ts_clinic_faults(&clinic, "{}"), 0);
    cr_assert_eq(ts_clinic_call(&clinic, "PATCH", "/v1/sessions/" ID,
                                "{\"status\":\"completed\",\"notes\":\"session went well\"}", NULL),
                 200, "the clinic changes the same session");
    cr_assert_eq(kill(engine.proc.pid, SIGCONT), 0);
    cr_assert_eq(ts_proc_wait_exit(&watch, 60000), 0, "watch saw one conflict and ended");
    char line[512] = "";
    cr_assert_eq(ts_proc_wait_line(&watch, "conflict.resolved", 1000, line, sizeof line), 0);
    cr_assert(strstr(line, ID) && strstr(line, "\"outcome\":\"merge\""), "%s", line);

    wait_status(true, 0, 30000, "the merged write synced");
    cJSON *doc = get_doc();
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "status")), "cancelled",
                     "a cancellation wins");
    const char *notes = cJSON_GetStringValue(cJSON_GetObjectItem(doc, "notes"));
    cr_assert(notes && strstr(notes, "session went well") &&
                  strstr(notes, "patient called to cancel") &&
                  strstr(notes, "session went well") < strstr(notes, "patient called to cancel"),
              "both notes, the clinic's first: %s", notes ? notes : "(none)");
    cJSON_Delete(doc);
    ts_buf_free(&out);
}
