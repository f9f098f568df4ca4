/* test_openrpc.c — a running daemon answers rpc.discover with the OpenRPC
 * document of docs/openrpc.json, to any client. */
#include "../support/engine.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Test(openrpc, rpc_discover_answers_the_document, .timeout = 60)
{
    ts_engine_t e = {0};
    cr_assert_eq(ts_engine_start(&e, NULL), 0);
    cJSON *r = ts_rpc(&e, "rpc.discover", NULL);
    cJSON *doc = ts_rpc_result(r);
    cr_assert_not_null(doc, "rpc.discover failed");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "openrpc")), "1.2.6");

    char *text = ts_file_text(ts_source_path("docs/openrpc.json"));
    cr_assert_not_null(text);
    cJSON *file = cJSON_Parse(text);
    free(text);
    cr_assert(cJSON_Compare(doc, file, true), "the answer is not docs/openrpc.json");

    /* the document names the version the daemon says it is (status) */
    cJSON *st = ts_rpc(&e, "status", NULL);
    const char *running = cJSON_GetStringValue(cJSON_GetObjectItem(ts_rpc_result(st), "version"));
    const char *listed_version =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "info"), "version"));
    cr_assert_not_null(running);
    cr_assert_not_null(listed_version);
    cr_assert_str_eq(listed_version, running,
                     "docs/openrpc.json says %s, the daemon is %s: update info.version",
                     listed_version, running);
    cJSON_Delete(st);

    /* each method it lists is one the daemon knows: called with empty
     * params (refused for most), none is "method not found" */
    const cJSON *m;
    int listed = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(doc, "methods"))
    {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(m, "name"));
        cJSON *answer = ts_rpc(&e, name, "{}");
        cr_assert_not_null(answer, "%s: no answer", name);
        cr_assert_neq(ts_rpc_error_code(answer), -32601, "%s is listed but unknown", name);
        cJSON_Delete(answer);
        listed++;
    }
    cr_assert_geq(listed, 18);
    cJSON_Delete(file);
    cJSON_Delete(r);
    ts_engine_destroy(&e);
}
