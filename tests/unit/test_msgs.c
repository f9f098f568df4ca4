/* test_msgs.c — the message table: every kind named once, freed by its
 * row, and docs/ARCHITECTURE.md's table made from it (stale docs fail;
 * `make docs` rewrites the table from msgs.def). */
#include "../support/engine.h"
#include "msgs/msgs.h"
#include "therasync/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MSGS_BEGIN "<!-- msgs.def: made by `make docs`, checked by test_msgs -->\n"
#define MSGS_END "<!-- end of msgs.def -->\n"
#define METHODS_BEGIN "<!-- methods.def: made by `make docs`, checked by test_msgs -->\n"
#define METHODS_END "<!-- end of methods.def -->\n"

/* The doc's message table, from the rows. */
static char *msgs_table(void)
{
    ts_buf_t b = {0};
    ts_buf_puts(&b, MSGS_BEGIN "| message | from | to | payload | what it carries |\n"
                               "|---|---|---|---|---|\n");
    for (size_t i = 0; i < ts_msg_nrows; i++) {
        const ts_msg_row_t *r = &ts_msg_rows[i];
        ts_buf_printf(&b, "| `%s` | %s | %s | %s | %s |\n", r->name, r->from, r->to,
                      strcmp(r->payload, "void") ? r->payload : "—", r->doc);
    }
    ts_buf_puts(&b, MSGS_END);
    size_t len;
    return ts_buf_take(&b, &len);
}

/* The doc's method table, from methods.def. */
static char *methods_table(void)
{
    static const char *const owners[] = {[TS_OWNER_FRONT] = "front", [TS_OWNER_STORE] = "store",
                                         [TS_OWNER_CACHE] = "cache", [TS_OWNER_PERSIST] = "persist",
                                         [TS_OWNER_SYNC] = "sync"};
    ts_buf_t b = {0};
    ts_buf_puts(&b, METHODS_BEGIN "| method | answered by | writes | reads only | persist | role | what |\n"
                                  "|---|---|---|---|---|---|---|\n");
    for (int m = 0; m < TS_M_NONE; m++) {
        const ts_method_info_t *r = ts_method_info((ts_method_t)m);
        ts_buf_printf(&b, "| `%s` | %s%s | %s | %s | %s | %s | %s |\n", r->name,
                      owners[r->owner], r->flags & TS_MF_FRONT ? " (+ front)" : "",
                      r->flags & TS_MF_WRITE ? "yes" : "", r->flags & TS_MF_READ ? "yes" : "",
                      r->flags & TS_MF_PERSIST ? "yes" : "", ts_role_name(r->role), r->doc);
    }
    ts_buf_puts(&b, METHODS_END);
    size_t len;
    return ts_buf_take(&b, &len);
}

/* Checks (or, for `make docs`, rewrites) the block of the doc between
 * begin and end; returns the doc, maybe rewritten (caller frees). */
static char *check_block(const char *path, char *doc, const char *begin, const char *end,
                         char *want)
{
    char *from = strstr(doc, begin), *to = from ? strstr(from, end) : NULL;
    cr_assert(from && to, "%s has no block between %s", path, begin);
    to += strlen(end);
    size_t len = (size_t)(to - from);
    if (getenv("TS_UPDATE_DOCS")) { /* make docs */
        size_t head = (size_t)(from - doc), tail = strlen(to);
        char *next = malloc(head + strlen(want) + tail + 1);
        memcpy(next, doc, head);
        memcpy(next + head, want, strlen(want));
        memcpy(next + head + strlen(want), to, tail + 1);
        free(doc);
        doc = next;
    } else {
        cr_assert(len == strlen(want) && memcmp(from, want, len) == 0,
                  "%s's table is stale: run `make docs`. It should read:\n%s", path, want);
    }
    free(want);
    return doc;
}

Test(msgs, the_architecture_doc_holds_the_tables_of_msgs_and_methods)
{
    const char *path = ts_source_path("docs/ARCHITECTURE.md");
    char *doc = ts_file_text(path);
    cr_assert_not_null(doc, "%s", path);
    doc = check_block(path, doc, MSGS_BEGIN, MSGS_END, msgs_table());
    doc = check_block(path, doc, METHODS_BEGIN, METHODS_END, methods_table());
    if (getenv("TS_UPDATE_DOCS")) {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        fputs(doc, f);
        fclose(f);
    }
    free(doc);
}

Test(msgs, methods_are_named_once_and_found_by_name)
{
    for (int m = 0; m < TS_M_NONE; m++) {
        cr_assert_eq(ts_method_lookup(ts_method_name((ts_method_t)m)), (ts_method_t)m);
        cr_assert(ts_method_info((ts_method_t)m)->doc[0], "every row has a line of doc");
    }
    cr_assert_eq(ts_method_lookup("nope"), TS_M_NONE);
    /* every method has a role; none that writes is open to a read key */
    for (int m = 0; m < TS_M_NONE; m++) {
        const ts_method_info_t *r = ts_method_info((ts_method_t)m);
        cr_assert(r->role >= TS_ROLE_READ && r->role <= TS_ROLE_ADMIN, "%s has a role", r->name);
        cr_assert(!(r->flags & TS_MF_WRITE) || r->role >= TS_ROLE_WRITE, "%s writes", r->name);
    }
    cr_assert_eq(ts_method_info(TS_M_POLICY_RELOAD)->role, TS_ROLE_ADMIN);
    cr_assert_eq(ts_role_lookup("write", 5), TS_ROLE_WRITE);
    cr_assert_eq(ts_role_lookup("writer", 6), TS_ROLE_NONE);
    cr_assert_str_eq(ts_method_name(TS_M__LAST), "(none)");
    cr_assert(ts_method_is(TS_M_CREATE, TS_MF_WRITE | TS_MF_COLLECTION));
    cr_assert(!ts_method_is(TS_M_GET, TS_MF_WRITE));
}

Test(msgs, kinds_are_named_once_and_in_order)
{
    cr_assert_eq(ts_msg_nrows, (size_t)(TS_MSG__END - TS_MSG__NONE - 1));
    for (size_t i = 0; i < ts_msg_nrows; i++) {
        cr_assert_str_eq(ts_msg_name((uint32_t)(TS_MSG__NONE + 1 + i)), ts_msg_rows[i].name);
        for (size_t k = 0; k < i; k++)
            cr_assert_str_neq(ts_msg_rows[i].name, ts_msg_rows[k].name);
    }
    cr_assert_str_eq(ts_msg_name(TS_MSG__NONE), "?");
    cr_assert_str_eq(ts_msg_name(TS_MSG__END), "?");
    cr_assert_str_eq(ts_msg_name(0), "?");
}

/* A typed send arrives as its kind, the typed view of another kind is
 * NULL, and what a receiver did not take is freed by the table (the
 * sanitizer build fails on a leak). */
Test(msgs, typed_send_view_and_free)
{
    void *ctx = zmq_ctx_new();
    void *in = ts_inproc_socket(ctx, ZMQ_PULL, "inproc://test-msgs", true);
    void *out = ts_inproc_socket(ctx, ZMQ_PUSH, "inproc://test-msgs", false);
    cr_assert(in && out);
    ts_envelope_t *envs[2] = {ts_envelope_new(1), ts_envelope_new(2)};
    cr_assert_eq(ts_send_COMMIT(out, envs, 2), 0);
    uint64_t *id = malloc(sizeof *id);
    *id = 7;
    cr_assert_eq(ts_send_API_CANCEL(out, &id, 1), 0);
    cr_assert_eq(ts_send_RECOVER(out, NULL, 0), 0);
    ts_msg_t m;
    cr_assert_eq(ts_msg_recv(in, 0, &m), 0);
    cr_assert_eq(m.kind, TS_MSG_COMMIT);
    cr_assert_eq(m.count, 2);
    cr_assert_null(ts_msg_ANSWERS(&m), "another kind's view");
    cr_assert_eq(ts_msg_COMMIT(&m)[1], envs[1]);
    ts_msg_free(&m);
    cr_assert_eq(ts_msg_recv(in, 0, &m), 0);
    cr_assert_eq(*ts_msg_API_CANCEL(&m)[0], 7);
    ts_msg_unexpected("test", &m); /* logged and freed */
    ts_msg_drain(in);              /* RECOVER: nothing to free */
    cr_assert_eq(ts_msg_recv(in, ZMQ_DONTWAIT, &m), -1, "drained");
    zmq_close(in);
    zmq_close(out);
    zmq_ctx_term(ctx);
}
