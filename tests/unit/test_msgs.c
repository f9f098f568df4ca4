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

#define BEGIN "<!-- msgs.def: made by `make docs`, checked by test_msgs -->\n"
#define END "<!-- end of msgs.def -->\n"

/* The doc's table, from the rows. */
static char *table(void)
{
    ts_buf_t b = {0};
    ts_buf_puts(&b, BEGIN "| message | from | to | payload | what it carries |\n"
                          "|---|---|---|---|---|\n");
    for (size_t i = 0; i < ts_msg_nrows; i++) {
        const ts_msg_row_t *r = &ts_msg_rows[i];
        ts_buf_printf(&b, "| `%s` | %s | %s | %s | %s |\n", r->name, r->from, r->to,
                      strcmp(r->payload, "void") ? r->payload : "—", r->doc);
    }
    ts_buf_puts(&b, END);
    size_t len;
    return ts_buf_take(&b, &len);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = '\0';
    fclose(f);
    return s;
}

Test(msgs, the_architecture_doc_holds_the_table_of_msgs_def)
{
    const char *path = ts_source_path("docs/ARCHITECTURE.md");
    char *doc = slurp(path);
    cr_assert_not_null(doc, "%s", path);
    char *want = table();
    char *from = strstr(doc, BEGIN), *to = from ? strstr(from, END) : NULL;
    cr_assert(from && to, "docs/ARCHITECTURE.md has no message table between its markers");
    to += strlen(END);
    if (getenv("TS_UPDATE_DOCS")) { /* make docs */
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        fwrite(doc, 1, (size_t)(from - doc), f);
        fputs(want, f);
        fputs(to, f);
        fclose(f);
    } else {
        size_t len = (size_t)(to - from);
        cr_assert(len == strlen(want) && memcmp(from, want, len) == 0,
                  "docs/ARCHITECTURE.md's message table is stale: run `make docs`. It should "
                  "read:\n%s",
                  want);
    }
    free(want);
    free(doc);
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
