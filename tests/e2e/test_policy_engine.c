/* test_policy_engine.c — the Lua policies inside a real therasyncd:
 * validation on create/update (field errors, overlap rule, transitions),
 * fail-closed policies, named selectors over indexes (after writes, cancel,
 * delete and a restart), a selector that errors, hot reload by policy.reload
 * and SIGHUP with its events, and policy.info. */
#include "../support/engine.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static ts_engine_t engine;
static void *sub; /* closed before the engine's context is terminated */

static void start_with(const char *policies_dir)
{
    const char *args[] = {"--policies", policies_dir, NULL};
    cr_assert_eq(ts_engine_start(&engine, policies_dir ? args : NULL), 0,
                 "therasyncd did not start (log: %s)", engine.proc.log_path);
}

static void stop(void)
{
    if (sub)
        zmq_close(sub);
    sub = NULL;
    ts_engine_destroy(&engine);
}

static void assert_alive(void)
{
    cJSON *r = ts_rpc(&engine, "ping", NULL);
    cr_assert(cJSON_IsString(ts_rpc_result(r)), "daemon stopped answering");
    cJSON_Delete(r);
}

/* A session with every field the shipped validator wants. */
static cJSON *create_session(const char *id, const char *therapist, const char *patient,
                             const char *at, int minutes, const char *status,
                             const char *modality, const char *extra)
{
    char p[1024];
    snprintf(p, sizeof p,
             "{\"collection\":\"sessions\",\"doc\":{\"id\":\"%s\",\"therapist_id\":\"%s\","
             "\"patient_id\":\"%s\",\"scheduled_at\":\"%s\",\"duration_min\":%d,"
             "\"status\":\"%s\",\"modality\":\"%s\"%s}}",
             id, therapist, patient, at, minutes, status, modality, extra ? extra : "");
    return ts_rpc(&engine, "create", p);
}

static void must_create(const char *id, const char *therapist, const char *patient,
                        const char *at, int minutes, const char *status, const char *extra)
{
    cJSON *r = create_session(id, therapist, patient, at, minutes, status, "in_person", extra);
    cr_assert_not_null(ts_rpc_result(r), "create %s refused: %s", id,
                       r ? cJSON_PrintUnformatted(r) : "no answer");
    cJSON_Delete(r);
}

/* True when error.data.errors has an entry for field. */
static bool has_field_error(cJSON *r, const char *field)
{
    cJSON *errors = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "data"), "errors");
    cJSON *e;
    cJSON_ArrayForEach(e, errors)
    {
        cJSON *f = cJSON_GetObjectItem(e, "field");
        if (cJSON_IsString(f) && strcmp(f->valuestring, field) == 0 &&
            cJSON_IsString(cJSON_GetObjectItem(e, "message")))
            return true;
    }
    return false;
}

static void assert_validation(cJSON *r, const char *field)
{
    cr_assert_eq(ts_rpc_error_code(r), -32002, "expected validation_failed: %s",
                 r ? cJSON_PrintUnformatted(r) : "no answer");
    cr_assert_str_eq(ts_rpc_error_reason(r), "validation_failed");
    cr_assert(has_field_error(r, field), "no error for field %s: %s", field,
              cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
}

/* Runs a named selector; returns the ids of the items joined by ",". */
static char *query_ids(const char *selector, const char *params)
{
    char p[1024];
    snprintf(p, sizeof p, "{\"collection\":\"sessions\",\"selector\":\"%s\",\"params\":%s}",
             selector, params);
    cJSON *r = ts_rpc(&engine, "query", p);
    cJSON *res = ts_rpc_result(r);
    cr_assert_not_null(res, "query %s failed: %s", selector,
                       r ? cJSON_PrintUnformatted(r) : "no answer");
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(res, "stale")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(res, "cursor")));
    static char out[2048];
    out[0] = '\0';
    cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItem(res, "items"))
    {
        if (out[0])
            strncat(out, ",", sizeof out - strlen(out) - 1);
        strncat(out, cJSON_GetObjectItem(item, "id")->valuestring, sizeof out - strlen(out) - 1);
    }
    cJSON_Delete(r);
    return out;
}

TestSuite(policy_engine, .fini = stop, .timeout = 90);

Test(policy_engine, validation_errors_come_back_per_field)
{
    start_with(NULL); /* the shipped policies */
    assert_validation(create_session("v1", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 5,
                                     "scheduled", "in_person", NULL),
                      "duration_min");
    assert_validation(create_session("v2", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50,
                                     "booked", "in_person", NULL),
                      "status");
    assert_validation(create_session("v3", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50,
                                     "scheduled", "hologram", NULL),
                      "modality");
    /* the refused ones were not written */
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"v1\"}");
    cr_assert_eq(ts_rpc_error_code(g), -32001);
    cJSON_Delete(g);

    must_create("a", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled", NULL);
    /* overlaps a for the same therapist */
    assert_validation(create_session("b", "thr-1", "pat-2", "2026-03-02T09:30:00.000Z", 50,
                                     "scheduled", "telehealth", NULL),
                      "scheduled_at");
    /* another therapist at the same time is fine; a group session may overlap */
    must_create("c", "thr-2", "pat-2", "2026-03-02T09:30:00.000Z", 50, "scheduled", NULL);
    cJSON *r = create_session("d", "thr-1", "pat-3", "2026-03-02T09:30:00.000Z", 50, "scheduled",
                              "group", NULL);
    cr_assert_not_null(ts_rpc_result(r), "group overlap refused");
    cJSON_Delete(r);
    /* right after a ends: no overlap */
    must_create("e", "thr-1", "pat-3", "2026-03-02T09:50:00.000Z", 30, "scheduled", NULL);
    /* across midnight, and with offsets: ctx.find's index window is in days */
    must_create("f", "thr-5", "pat-3", "2026-03-02T23:40:00.000Z", 50, "scheduled", NULL);
    assert_validation(create_session("g", "thr-5", "pat-3", "2026-03-03T00:10:00.000Z", 50,
                                     "scheduled", "in_person", NULL),
                      "scheduled_at");
    assert_validation(create_session("h", "thr-5", "pat-3", "2026-03-03T01:00:00+01:00", 50,
                                     "scheduled", "in_person", NULL),
                      "scheduled_at");
    must_create("i", "thr-6", "pat-3", "2026-03-03T08:00:00+14:00", 50, "scheduled", NULL);
    assert_validation(create_session("j", "thr-6", "pat-3", "2026-03-02T18:20:00.000Z", 50,
                                     "scheduled", "in_person", NULL),
                      "scheduled_at");

    /* update: the merged document is validated, with ctx.previous */
    cJSON *u = ts_rpc(&engine, "update",
                      "{\"collection\":\"sessions\",\"id\":\"a\",\"patch\":{\"status\":\"completed\"}}");
    cr_assert_not_null(ts_rpc_result(u));
    cJSON_Delete(u);
    assert_validation(ts_rpc(&engine, "update", "{\"collection\":\"sessions\",\"id\":\"a\","
                                                "\"patch\":{\"status\":\"scheduled\"}}"),
                      "status");
    assert_validation(ts_rpc(&engine, "update", "{\"collection\":\"sessions\",\"id\":\"a\","
                                                "\"patch\":{\"duration_min\":999}}"),
                      "duration_min");
    g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"a\"}");
    cJSON *doc = cJSON_GetObjectItem(ts_rpc_result(g), "doc");
    cr_assert_str_eq(cJSON_GetObjectItem(doc, "status")->valuestring, "completed");
    cr_assert_eq(cJSON_GetObjectItem(doc, "duration_min")->valueint, 50);
    cJSON_Delete(g);
    /* moving e onto c's therapist slot of thr-1's d (group) is fine, onto a is not */
    assert_validation(ts_rpc(&engine, "update", "{\"collection\":\"sessions\",\"id\":\"e\","
                                                "\"patch\":{\"scheduled_at\":\"2026-03-02T09:10:00.000Z\"}}"),
                      "scheduled_at");
    /* deletes are not validated */
    cJSON *d = ts_rpc(&engine, "delete", "{\"collection\":\"sessions\",\"id\":\"e\"}");
    cr_assert_not_null(ts_rpc_result(d));
    cJSON_Delete(d);
}

Test(policy_engine, failing_validator_fails_closed)
{
    start_with(ts_source_path("tests/fixtures/policies/raising"));
    cJSON *r = create_session("x1", "thr-1", "boom", "2026-03-02T09:00:00.000Z", 50, "scheduled",
                              "in_person", NULL);
    cr_assert_eq(ts_rpc_error_code(r), -32004, "%s", cJSON_PrintUnformatted(r));
    cr_assert_str_eq(ts_rpc_error_reason(r), "policy_error");
    cr_assert(strstr(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message")->valuestring,
                     "exploded"));
    cJSON_Delete(r);
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"x1\"}");
    cr_assert_eq(ts_rpc_error_code(g), -32001, "a refused write was stored");
    cJSON_Delete(g);
    must_create("x2", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled", NULL);
    assert_alive();
    stop();

    start_with(ts_source_path("tests/fixtures/policies/looping"));
    r = create_session("y1", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled",
                       "in_person", NULL);
    cr_assert_eq(ts_rpc_error_code(r), -32004, "%s", cJSON_PrintUnformatted(r));
    cr_assert(strstr(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message")->valuestring,
                     "budget"));
    cJSON_Delete(r);
    cJSON *s = ts_rpc(&engine, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint, 0);
    cJSON_Delete(s);
    assert_alive();
}

Test(policy_engine, named_selectors_follow_every_change)
{
    start_with(NULL);
    /* thr-1: s1 09:00, s2 11:00, s3 13:00 (completed, no notes), s4 15:00, s5 08:00 cancelled */
    must_create("s1", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled", NULL);
    must_create("s4", "thr-1", "pat-2", "2026-03-02T15:00:00.000Z", 50, "scheduled", NULL);
    must_create("s2", "thr-1", "pat-1", "2026-03-02T11:00:00.000Z", 50, "scheduled", NULL);
    must_create("s3", "thr-1", "pat-1", "2026-03-02T13:00:00.000Z", 50, "completed", NULL);
    must_create("s5", "thr-1", "pat-1", "2026-03-02T08:00:00.000Z", 50, "cancelled", NULL);
    must_create("o1", "thr-2", "pat-1", "2026-03-02T10:00:00.000Z", 50, "scheduled",
                ",\"notes\":\"fine\"");
    const char *t1 = "{\"therapist_id\":\"thr-1\",\"now\":\"2026-03-02T00:00:00.000Z\"}";
    cr_assert_str_eq(query_ids("upcoming", t1), "s1,s2,s4");
    cr_assert_str_eq(query_ids("upcoming", "{\"therapist_id\":\"thr-1\",\"now\":"
                                           "\"2026-03-02T10:00:00.000Z\"}"),
                     "s2,s4");
    cr_assert_str_eq(query_ids("upcoming", "{\"therapist_id\":\"thr-1\",\"now\":"
                                           "\"2026-03-02T00:00:00.000Z\",\"limit\":2}"),
                     "s1,s2");
    cr_assert_str_eq(query_ids("upcoming", "{\"therapist_id\":\"thr-9\"}"), "");
    cr_assert_str_eq(query_ids("by_patient", "{\"patient_id\":\"pat-1\"}"), "s3,s2,o1,s1,s5");
    cr_assert_str_eq(query_ids("by_patient", "{\"patient_id\":\"pat-1\",\"limit\":2}"), "s3,s2");
    cr_assert_str_eq(query_ids("needs_notes", "{}"), "s3");

    /* update: s2 cancelled leaves upcoming; moving s4 earlier reorders it */
    cJSON *u = ts_rpc(&engine, "update", "{\"collection\":\"sessions\",\"id\":\"s2\","
                                         "\"patch\":{\"status\":\"cancelled\"}}");
    cr_assert_not_null(ts_rpc_result(u));
    cJSON_Delete(u);
    u = ts_rpc(&engine, "update", "{\"collection\":\"sessions\",\"id\":\"s4\","
                                  "\"patch\":{\"scheduled_at\":\"2026-03-02T07:00:00.000Z\"}}");
    cr_assert_not_null(ts_rpc_result(u));
    cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(u), "sync"), "mutation");
    char mutation[64];
    snprintf(mutation, sizeof mutation, "%s", m->valuestring);
    cJSON_Delete(u);
    cr_assert_str_eq(query_ids("upcoming", t1), "s4,s1");
    /* cancel rolls the move back: s4 is at 15:00 again */
    char cp[128];
    snprintf(cp, sizeof cp, "{\"mutation\":\"%s\"}", mutation);
    cJSON *c = ts_rpc(&engine, "cancel", cp);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(ts_rpc_result(c), "cancelled")));
    cJSON_Delete(c);
    cr_assert_str_eq(query_ids("upcoming", t1), "s1,s4");
    /* notes added: s3 no longer needs notes; delete drops s1 */
    u = ts_rpc(&engine, "update", "{\"collection\":\"sessions\",\"id\":\"s3\","
                                  "\"patch\":{\"notes\":\"done\"}}");
    cr_assert_not_null(ts_rpc_result(u));
    cJSON_Delete(u);
    cr_assert_str_eq(query_ids("needs_notes", "{}"), "");
    cJSON *d = ts_rpc(&engine, "delete", "{\"collection\":\"sessions\",\"id\":\"s1\"}");
    cr_assert_not_null(ts_rpc_result(d));
    cJSON_Delete(d);
    cr_assert_str_eq(query_ids("upcoming", t1), "s4");
    cr_assert_str_eq(query_ids("by_patient", "{\"patient_id\":\"pat-1\"}"), "s3,s2,o1,s5");

    /* the indexes are rebuilt from the durable state after a restart */
    cr_assert_eq(ts_engine_stop(&engine), 0);
    cr_assert_eq(ts_engine_restart(&engine, NULL), 0);
    cr_assert_str_eq(query_ids("upcoming", t1), "s4");
    cr_assert_str_eq(query_ids("by_patient", "{\"patient_id\":\"pat-1\"}"), "s3,s2,o1,s5");
    cr_assert_str_eq(query_ids("upcoming", "{\"therapist_id\":\"thr-2\",\"now\":"
                                           "\"2026-01-01T00:00:00.000Z\"}"),
                     "o1");

    /* unknown selector: policy_error; wrong collection: invalid params */
    cJSON *q = ts_rpc(&engine, "query", "{\"collection\":\"sessions\",\"selector\":\"nope\"}");
    cr_assert_eq(ts_rpc_error_code(q), -32004);
    cJSON_Delete(q);
    q = ts_rpc(&engine, "query", "{\"collection\":\"consultations\",\"selector\":\"upcoming\"}");
    cr_assert_eq(ts_rpc_error_code(q), -32602);
    cJSON_Delete(q);
}

Test(policy_engine, selector_error_names_the_document)
{
    start_with(ts_source_path("tests/fixtures/policies/raising"));
    must_create("ok1", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled",
                ",\"room\":\"A\"");
    must_create("bad1", "thr-1", "pat-1", "2026-03-02T10:00:00.000Z", 50, "scheduled",
                ",\"room\":\"X\"");
    cJSON *q = ts_rpc(&engine, "query", "{\"collection\":\"sessions\",\"selector\":\"picky\"}");
    cr_assert_eq(ts_rpc_error_code(q), -32004, "%s", cJSON_PrintUnformatted(q));
    const char *msg =
        cJSON_GetObjectItem(cJSON_GetObjectItem(q, "error"), "message")->valuestring;
    cr_assert(strstr(msg, "bad1") && strstr(msg, "cursed"), "%s", msg);
    cJSON_Delete(q);
    assert_alive();
    cJSON *d = ts_rpc(&engine, "delete", "{\"collection\":\"sessions\",\"id\":\"bad1\"}");
    cJSON_Delete(d);
    cr_assert_str_eq(query_ids("picky", "{}"), "ok1");
}

/* The message of an error response, or "". */
static const char *error_message(cJSON *r)
{
    cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message");
    return cJSON_IsString(m) ? m->valuestring : "";
}

/* Starts with the policies of fixture, whose validation blows up on a
 * session in room `room`: that create is refused with policy_error (the
 * budget) within seconds, and creates before and after it go through. */
static void hostile_create_fails_alone(const char *fixture, const char *room)
{
    char dir[128], doc_room[64];
    snprintf(dir, sizeof dir, "tests/fixtures/policies/%s", fixture);
    snprintf(doc_room, sizeof doc_room, ",\"room\":\"%s\"", room);
    start_with(ts_source_path(dir));
    must_create("ok1", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled",
                ",\"room\":\"A\"");
    int64_t t0 = ts_mono_us();
    cJSON *r = create_session("b1", "thr-1", "pat-1", "2026-03-02T10:00:00.000Z", 50,
                              "scheduled", "in_person", doc_room);
    cr_assert_eq(ts_rpc_error_code(r), -32004, "%s", r ? cJSON_PrintUnformatted(r) : "no answer");
    cr_assert_str_eq(ts_rpc_error_reason(r), "policy_error");
    cr_assert(strstr(error_message(r), "instruction budget exceeded"), "%s", error_message(r));
    cr_assert_lt(ts_mono_us() - t0, 5000000, "the refusal took too long");
    cJSON_Delete(r);
    assert_alive();
    must_create("ok2", "thr-1", "pat-1", "2026-03-02T11:00:00.000Z", 50, "scheduled", NULL);
}

/* A backtracking pattern (hours in Lua's own matcher) in validation and in a
 * selector: each such call ends with policy_error (the budget) within
 * seconds, and the engine serves every other call meanwhile and after. */
Test(policy_engine, a_hostile_pattern_fails_only_its_own_call)
{
    hostile_create_fails_alone("pattern_bomb", "bomb");

    /* an update whose merged document sets off the bomb: refused, unchanged */
    cJSON *r = ts_rpc(&engine, "update", "{\"collection\":\"sessions\",\"id\":\"ok1\","
                                  "\"patch\":{\"room\":\"bomb\"}}");
    cr_assert_eq(ts_rpc_error_code(r), -32004, "%s", r ? cJSON_PrintUnformatted(r) : "no answer");
    cJSON_Delete(r);
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"ok1\"}");
    cJSON *room = cJSON_GetObjectItem(cJSON_GetObjectItem(ts_rpc_result(g), "doc"), "room");
    cr_assert(cJSON_IsString(room) && !strcmp(room->valuestring, "A"), "ok1 changed");
    cJSON_Delete(g);

    /* the selector's where: policy_error naming a document; others served */
    int64_t t0 = ts_mono_us();
    cJSON *q = ts_rpc(&engine, "query", "{\"collection\":\"sessions\",\"selector\":\"bomb\"}");
    cr_assert_eq(ts_rpc_error_code(q), -32004, "%s", q ? cJSON_PrintUnformatted(q) : "no answer");
    cr_assert(strstr(error_message(q), "instruction budget exceeded"), "%s", error_message(q));
    cr_assert_lt(ts_mono_us() - t0, 5000000, "the query took too long");
    cJSON_Delete(q);
    const char *ids = query_ids("all", "{}");
    cr_assert(strstr(ids, "ok1") && strstr(ids, "ok2") && !strstr(ids, "b1"), "%s", ids);
    cJSON *s = ts_rpc(&engine, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint, 2);
    cJSON_Delete(s);
    assert_alive();
}

/* string.rep("", 2^40) in validation, under a pcall (2^40 rounds inside
 * one call of Lua's own string.rep: hours): the write is refused with
 * policy_error (the budget, which the pcall cannot keep) within seconds, and
 * the engine serves every other call meanwhile and after. */
Test(policy_engine, a_huge_string_rep_fails_only_its_own_call)
{
    hostile_create_fails_alone("rep_bomb", "rep");
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"sessions\",\"id\":\"b1\"}");
    cr_assert_eq(ts_rpc_error_code(g), -32001, "the refused write was stored");
    cJSON_Delete(g);
    cJSON *s = ts_rpc(&engine, "status", NULL);
    cr_assert_eq(cJSON_GetObjectItem(ts_rpc_result(s), "pending")->valueint, 2);
    cJSON_Delete(s);
}

/* ---- hot reload ---- */

static void copy_file(const char *from_dir, const char *to_dir, const char *name)
{
    char a[4400], b[4400], buf[8192];
    snprintf(a, sizeof a, "%s/%s", from_dir, name);
    snprintf(b, sizeof b, "%s/%s", to_dir, name);
    FILE *in = fopen(a, "rb"), *out = fopen(b, "wb");
    cr_assert(in && out, "copy %s", a);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
}

static void copy_policies(const char *from, const char *to)
{
    const char *files[] = {"validate.lua", "selectors.lua", "conflict.lua"};
    for (int i = 0; i < 3; i++)
        copy_file(from, to, files[i]);
}

/* Waits for one event on sub; returns its method (static buffer) or "". */
static const char *next_event(void *s, char *params_out, size_t len)
{
    static char method[64];
    method[0] = '\0';
    zmq_pollitem_t item = {.socket = s, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, 5000) <= 0)
        return method;
    char topic[64], body[4096];
    int tn = zmq_recv(s, topic, sizeof topic, 0);
    int bn = zmq_recv(s, body, sizeof body - 1, 0);
    if (tn < 0 || bn < 0)
        return method;
    body[bn < (int)sizeof body - 1 ? bn : (int)sizeof body - 1] = '\0';
    cJSON *ev = cJSON_Parse(body);
    cJSON *m = cJSON_GetObjectItem(ev, "method");
    if (cJSON_IsString(m))
        snprintf(method, sizeof method, "%s", m->valuestring);
    char *p = cJSON_PrintUnformatted(cJSON_GetObjectItem(ev, "params"));
    snprintf(params_out, len, "%s", p ? p : "");
    free(p);
    cJSON_Delete(ev);
    return method;
}

Test(policy_engine, hot_reload_by_method_and_sighup)
{
    char *dir = ts_tmpdir("ts-policies");
    copy_policies(ts_source_path("policies"), dir);
    start_with(dir);
    sub = zmq_socket(engine.zctx, ZMQ_SUB);
    int zero = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "policy", 6);
    cr_assert_eq(zmq_connect(sub, engine.events), 0);
    usleep(300 * 1000); /* let the subscription reach the PUB socket */

    cJSON *info = ts_rpc(&engine, "policy.info", NULL);
    cJSON *res = ts_rpc_result(info);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(res, "loaded")));
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(res, "files")), 3);
    cr_assert_not_null(cJSON_GetObjectItem(res, "indexes"));
    cJSON_Delete(info);
    must_create("h1", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled", NULL);

    /* a new rule (v2 refuses every session) takes effect on policy.reload */
    copy_file(ts_source_path("tests/fixtures/policies/v2"), dir, "validate.lua");
    cJSON *r = ts_rpc(&engine, "policy.reload", NULL);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(ts_rpc_result(r), "loaded")), "%s",
              cJSON_PrintUnformatted(r));
    cJSON_Delete(r);
    char params[4096];
    cr_assert_str_eq(next_event(sub, params, sizeof params), "policy.reloaded");
    r = create_session("h2", "thr-2", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled",
                       "in_person", NULL);
    cr_assert_eq(ts_rpc_error_code(r), -32002);
    char *text = cJSON_PrintUnformatted(r);
    cr_assert(strstr(text, "v2 refuses"), "%s", text);
    cJSON_free(text);
    cJSON_Delete(r);
    /* the selectors survived the reload: upcoming still served */
    cr_assert_str_eq(query_ids("upcoming", "{\"therapist_id\":\"thr-1\",\"now\":"
                                           "\"2026-01-01T00:00:00.000Z\"}"),
                     "h1");

    /* a broken dir is refused: policy.failed with file and line, old rule stays */
    copy_file(ts_source_path("tests/fixtures/policies/syntax_error"), dir, "validate.lua");
    r = ts_rpc(&engine, "policy.reload", NULL);
    res = ts_rpc_result(r);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(res, "loaded")), "%s", cJSON_PrintUnformatted(r));
    cr_assert(strstr(cJSON_GetObjectItem(res, "error")->valuestring, "validate.lua:"));
    cJSON_Delete(r);
    cr_assert_str_eq(next_event(sub, params, sizeof params), "policy.failed");
    cr_assert(strstr(params, "\"file\":\"validate.lua\"") && strstr(params, "\"line\":"), "%s",
              params);
    r = create_session("h3", "thr-2", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled",
                       "in_person", NULL);
    text = cJSON_PrintUnformatted(r);
    cr_assert(strstr(text, "v2 refuses"), "old rule no longer in force: %s", text);
    cJSON_free(text);
    cJSON_Delete(r);
    info = ts_rpc(&engine, "policy.info", NULL);
    cr_assert(strstr(cJSON_GetObjectItem(ts_rpc_result(info), "error")->valuestring,
                     "validate.lua:"));
    cJSON_Delete(info);

    /* SIGHUP reloads the fixed dir: the shipped rule is back */
    copy_file(ts_source_path("policies"), dir, "validate.lua");
    kill(engine.proc.pid, SIGHUP);
    cr_assert_str_eq(next_event(sub, params, sizeof params), "policy.reloaded");
    must_create("h4", "thr-2", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled", NULL);
    assert_alive();
    ts_rmtree(dir);
    free(dir);
}

/* A policy file that runs the pattern while it loads: the reload is refused
 * with the budget error naming the file, within seconds, and the old
 * policies stay in force. */
Test(policy_engine, a_hostile_pattern_at_load_keeps_the_old_policies)
{
    char *dir = ts_tmpdir("ts-policies");
    copy_policies(ts_source_path("policies"), dir);
    start_with(dir);
    must_create("k1", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled", NULL);
    copy_file(ts_source_path("tests/fixtures/policies/pattern_bomb_load"), dir, "validate.lua");
    int64_t t0 = ts_mono_us();
    cJSON *r = ts_rpc(&engine, "policy.reload", NULL);
    cJSON *res = ts_rpc_result(r);
    cr_assert_not_null(res, "%s", r ? cJSON_PrintUnformatted(r) : "no answer");
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(res, "loaded")), "%s", cJSON_PrintUnformatted(r));
    const char *why = cJSON_GetObjectItem(res, "error")->valuestring;
    cr_assert(strstr(why, "validate.lua") && strstr(why, "instruction budget exceeded"), "%s",
              why);
    cr_assert_lt(ts_mono_us() - t0, 5000000, "the reload took too long");
    cJSON_Delete(r);
    /* the shipped rules still decide */
    assert_validation(create_session("k2", "thr-1", "pat-1", "2026-03-02T11:00:00.000Z", 5,
                                     "scheduled", "in_person", NULL),
                      "duration_min");
    must_create("k3", "thr-1", "pat-1", "2026-03-02T11:00:00.000Z", 50, "scheduled", NULL);
    /* SIGHUP takes the same path and the engine goes on answering */
    kill(engine.proc.pid, SIGHUP);
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&engine.proc, "refused", 10000, line, sizeof line), 0,
                 "no refused reload in the log");
    assert_alive();
    must_create("k4", "thr-1", "pat-1", "2026-03-02T13:00:00.000Z", 50, "scheduled", NULL);
    ts_rmtree(dir);
    free(dir);
}

/* SIGTERM while the store is inside a policy call that will not end for a
 * very long time (a loop under a huge budget): the daemon still exits within
 * a bound, with status 1 and a line naming the stuck thread, and what was
 * written before is there after a restart. */
Test(policy_engine, sigterm_stops_a_daemon_stuck_in_a_policy_call, .timeout = 60)
{
    char *cfgdir = ts_tmpdir("ts-config");
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/engine.lua", cfgdir);
    const char *text = "lua = { instruction_budget = 1e15 }\n";
    cr_assert_eq(ts_file_write(cfg, text, strlen(text)), 0);
    const char *policies = ts_source_path("tests/fixtures/policies/looping");
    const char *args[] = {"--policies", policies, "--config", cfg, NULL};
    cr_assert_eq(ts_engine_start(&engine, args), 0, "log: %s", engine.proc.log_path);
    cJSON *c = ts_rpc(&engine, "create", "{\"collection\":\"consultations\",\"doc\":{\"id\":\"n1\"}}");
    cr_assert_not_null(ts_rpc_result(c), "%s", c ? cJSON_PrintUnformatted(c) : "no answer");
    cJSON_Delete(c);
    /* the looping validator: no answer, the store stays inside the call */
    const char *req = "{\"jsonrpc\":\"2.0\",\"id\":900,\"method\":\"create\",\"params\":"
                      "{\"collection\":\"sessions\",\"doc\":{\"id\":\"loop\"}}}";
    char *reply = ts_rpc_raw(engine.dealer, req, strlen(req), 1000);
    cr_assert_null(reply, "the looping call answered: %s", reply);
    int64_t t0 = ts_mono_us();
    kill(engine.proc.pid, SIGTERM);
    int rc = ts_proc_wait_exit(&engine.proc, 15000);
    int64_t ms = (ts_mono_us() - t0) / 1000;
    cr_assert_neq(rc, -1, "still running 15 s after SIGTERM");
    cr_assert_lt(ms, 10000, "took %lld ms to exit", (long long)ms);
    cr_assert_eq(rc, 1, "exit status %d", rc);
    char line[512];
    cr_assert_eq(ts_proc_wait_line(&engine.proc, "the store did not stop within", 1000, line,
                                   sizeof line),
                 0, "no line about the stuck store");
    const char *again[] = {"--policies", policies, NULL};
    cr_assert_eq(ts_engine_restart(&engine, again), 0, "log: %s", engine.proc.log_path);
    cJSON *g = ts_rpc(&engine, "get", "{\"collection\":\"consultations\",\"id\":\"n1\"}");
    cr_assert_not_null(ts_rpc_result(g), "n1 lost: %s", g ? cJSON_PrintUnformatted(g) : "-");
    cJSON_Delete(g);
    ts_rmtree(cfgdir);
    free(cfgdir);
}

/* A document with many structured fields (objects, arrays, escaped text)
 * passes validation and a selector reading them: each field parsed for Lua
 * was kept until the end of the call, in eight slots, so a ninth failed the
 * write with a policy error. */
Test(policy_engine, many_structured_fields_validate)
{
    start_with(NULL); /* the shipped policies: validation reads every field */
    char extra[800] = "";
    size_t off = 0;
    for (int i = 0; i < 12; i++)
        off += (size_t)snprintf(extra + off, sizeof extra - off,
                                ",\"f%d\":{\"a\":[%d,{\"b\":\"x\\ny\"}]},\"t%d\":\"q\\\"%d\"", i, i,
                                i, i);
    must_create("many", "thr-1", "pat-1", "2026-03-02T09:00:00.000Z", 50, "scheduled", extra);
    cJSON *u = ts_rpc(&engine, "update", "{\"collection\":\"sessions\",\"id\":\"many\","
                                         "\"patch\":{\"room\":\"B\"}}");
    cr_assert_not_null(ts_rpc_result(u), "%s", u ? cJSON_PrintUnformatted(u) : "no answer");
    cJSON_Delete(u);
    cr_assert_str_eq(query_ids("by_patient", "{\"patient_id\":\"pat-1\"}"), "many");
}

/* The items i..j-1 of an array, printed. */
static char *slice(const cJSON *items, int i, int j)
{
    cJSON *part = cJSON_CreateArray();
    for (int k = i; k < j; k++)
        cJSON_AddItemToArray(part, cJSON_Duplicate(cJSON_GetArrayItem(items, k), true));
    char *text = cJSON_PrintUnformatted(part);
    cJSON_Delete(part);
    return text;
}

/* Paging over the wire: 250 sessions of one therapist come in three pages
 * of 100 (named selector without a declared limit, and the built-in one,
 * whose default page is 100), the pages put together are the one-page
 * answer, the last page's cursor is null; a document created before the
 * cursor between two pages does not shift the next one; a limit over 1000,
 * a damaged cursor and a cursor of other params are -32602. */
Test(policy_engine, queries_come_in_pages_with_cursors)
{
    start_with(ts_source_path("tests/fixtures/policies/paging"));
    for (int i = 0; i < 250; i++) { /* two to a time slot; ids against time order */
        int slot = i * 37 % 250 / 2;
        char id[16], at[40];
        snprintf(id, sizeof id, "p%03d", i);
        snprintf(at, sizeof at, "2026-03-%02dT%02d:00:00.000Z", 1 + slot / 24, slot % 24);
        must_create(id, "thr-1", "pat-1", at, 50, "scheduled", NULL);
    }
    const char *named = "{\"collection\":\"sessions\",\"selector\":\"by_therapist\","
                        "\"params\":{\"therapist_id\":\"thr-1\"}";
    char p[512];
    snprintf(p, sizeof p, "%s,\"limit\":1000}", named);
    cJSON *one = ts_rpc(&engine, "query", p);
    const cJSON *whole = cJSON_GetObjectItem(ts_rpc_result(one), "items");
    cr_assert_eq(cJSON_GetArraySize(whole), 250, "%s", error_message(one));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(ts_rpc_result(one), "cursor")));
    char *whole_text = cJSON_PrintUnformatted(whole);
    int pages = 0;
    snprintf(p, sizeof p, "%s}", named);
    cJSON *paged = ts_query_all(&engine, p, 100, 10, &pages);
    cr_assert_not_null(paged);
    cr_assert_eq(pages, 3);
    char *paged_text = cJSON_PrintUnformatted(paged);
    cr_assert_str_eq(paged_text, whole_text, "the pages put together");
    free(paged_text);
    cJSON_Delete(paged);

    /* page 1, then a session before the cursor, then page 2 */
    snprintf(p, sizeof p, "%s,\"limit\":100}", named);
    cJSON *r1 = ts_rpc(&engine, "query", p);
    const cJSON *c1 = cJSON_GetObjectItem(ts_rpc_result(r1), "cursor");
    cr_assert(cJSON_IsString(c1), "a cursor after page 1");
    must_create("a-early", "thr-1", "pat-1", "2026-02-01T09:00:00.000Z", 50, "scheduled", NULL);
    snprintf(p, sizeof p, "%s,\"limit\":100,\"cursor\":\"%s\"}", named, c1->valuestring);
    cJSON *r2 = ts_rpc(&engine, "query", p);
    char *page2 = cJSON_PrintUnformatted(cJSON_GetObjectItem(ts_rpc_result(r2), "items"));
    char *want2 = slice(whole, 100, 200);
    cr_assert_str_eq(page2, want2, "page 2 is not shifted by the new session");
    free(page2);
    free(want2);
    cJSON_Delete(r2);

    /* refusals */
    snprintf(p, sizeof p, "%s,\"limit\":1001}", named);
    cJSON *e = ts_rpc(&engine, "query", p);
    cr_assert_eq(ts_rpc_error_code(e), -32602);
    cr_assert(strstr(error_message(e), "at most 1000"), "%s", error_message(e));
    cJSON_Delete(e);
    snprintf(p, sizeof p, "%s,\"limit\":0}", named);
    e = ts_rpc(&engine, "query", p);
    cr_assert_eq(ts_rpc_error_code(e), -32602);
    cr_assert(strstr(error_message(e), "limit"), "%s", error_message(e));
    cJSON_Delete(e);
    snprintf(p, sizeof p, "%s,\"cursor\":\"0123zz\"}", named);
    e = ts_rpc(&engine, "query", p);
    cr_assert_eq(ts_rpc_error_code(e), -32602);
    cr_assert(strstr(error_message(e), "cursor is malformed"), "%s", error_message(e));
    cJSON_Delete(e);
    snprintf(p, sizeof p,
             "{\"collection\":\"sessions\",\"selector\":\"by_therapist\",\"params\":"
             "{\"therapist_id\":\"thr-2\"},\"cursor\":\"%s\"}",
             c1->valuestring);
    e = ts_rpc(&engine, "query", p);
    cr_assert_eq(ts_rpc_error_code(e), -32602);
    cr_assert(strstr(error_message(e), "cursor does not belong to this query"), "%s",
              error_message(e));
    cJSON_Delete(e);
    cJSON_Delete(r1);

    /* the built-in selector: 100 by default, then a cursor; all 251 in
     * three pages, ordered or not */
    const char *builtin[] = {
        "{\"collection\":\"sessions\",\"selector\":{\"where\":{\"therapist_id\":\"thr-1\"},"
        "\"order_by\":[\"scheduled_at\",\"desc\"]}}",
        "{\"collection\":\"sessions\",\"selector\":{\"where\":{\"therapist_id\":\"thr-1\"}}}"};
    for (int b = 0; b < 2; b++) {
        cJSON *first = ts_rpc(&engine, "query", builtin[b]);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(ts_rpc_result(first), "items")), 100,
                     "%s", error_message(first));
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(ts_rpc_result(first), "cursor")),
                  "no silent stop at 100");
        cJSON_Delete(first);
        cJSON *all = ts_query_all(&engine, builtin[b], 100, 10, &pages);
        cr_assert_not_null(all);
        cr_assert_eq(pages, 3);
        cr_assert_eq(cJSON_GetArraySize(all), 251);
        for (int i = 1; i < 251; i++) /* ties by id; without order_by in id order */
            cr_assert(b == 0 || strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(all, i - 1), "id")
                                           ->valuestring,
                                       cJSON_GetObjectItem(cJSON_GetArrayItem(all, i), "id")
                                           ->valuestring) < 0);
        cJSON_Delete(all);
    }
    snprintf(p, sizeof p, "%.*s,\"limit\":5000}", (int)strlen(builtin[1]) - 1, builtin[1]);
    e = ts_rpc(&engine, "query", p);
    cr_assert_eq(ts_rpc_error_code(e), -32602);
    cr_assert(strstr(error_message(e), "at most 1000"), "%s", error_message(e));
    cJSON_Delete(e);
    free(whole_text);
    cJSON_Delete(one);
}
