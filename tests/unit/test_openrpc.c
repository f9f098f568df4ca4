/* test_openrpc.c — docs/openrpc.json names every method of methods.def and
 * nothing else, each with params and a result; the copy built into the
 * library (rpc.discover's answer) is that file. */
#include "../support/engine.h"
#include "msgs/call.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const char ts_openrpc_text[];

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    return text;
}

static const cJSON *find_method(const cJSON *methods, const char *name)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, methods)
    {
        const char *n = cJSON_GetStringValue(cJSON_GetObjectItem(m, "name"));
        if (n && strcmp(n, name) == 0)
            return m;
    }
    return NULL;
}

Test(openrpc, the_document_and_the_method_table_name_the_same_methods)
{
    char *text = slurp(ts_source_path("docs/openrpc.json"));
    cJSON *doc = cJSON_Parse(text);
    cr_assert_not_null(doc, "docs/openrpc.json is not JSON");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "openrpc")), "1.2.6");
    const cJSON *methods = cJSON_GetObjectItem(doc, "methods");
    cr_assert(cJSON_IsArray(methods));
    /* every row of methods.def is described, with params and a result */
    int rows = 0;
    for (int m = 0; m < TS_M_NONE; m++, rows++) {
        const cJSON *d = find_method(methods, ts_method_name((ts_method_t)m));
        cr_assert_not_null(d, "%s (methods.def) is not in docs/openrpc.json", ts_method_name((ts_method_t)m));
        cr_assert(cJSON_IsArray(cJSON_GetObjectItem(d, "params")), "%s has no params", ts_method_name((ts_method_t)m));
        cr_assert(cJSON_IsObject(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "result"), "schema")),
                  "%s has no result schema", ts_method_name((ts_method_t)m));
    }
    /* and nothing else, once each */
    const cJSON *d;
    cJSON_ArrayForEach(d, methods)
    {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(d, "name"));
        cr_assert_not_null(name);
        cr_assert_neq(ts_method_lookup(name), TS_M_NONE,
                      "%s (docs/openrpc.json) is not in methods.def", name);
    }
    cr_assert_eq(cJSON_GetArraySize(methods), rows, "a method is described twice");
    /* the built-in copy is this file (a stale object would not be) */
    cr_assert_str_eq(ts_openrpc_text, text, "the library's copy differs from docs/openrpc.json");
    cJSON_Delete(doc);
    free(text);
}
