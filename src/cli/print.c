/* print.c — human-readable output of results. (--json bypasses all of it.) */
#include "cli.h"

#include "therasync/util.h"

#include <stdlib.h>
#include <string.h>

void cli_print_compact(FILE *out, const cJSON *value)
{
    char *text = cJSON_PrintUnformatted(value);
    fprintf(out, "%s\n", text ? text : "null");
    cJSON_free(text);
}

/* A scalar as text (strings without quotes); anything else as compact JSON.
 * The caller frees the result. */
static char *value_text(const cJSON *value)
{
    if (cJSON_IsString(value))
        return strdup(value->valuestring);
    return cJSON_PrintUnformatted(value);
}

/* JSON-RPC's own codes carry no error.data.reason; their names from the
 * specification, in the same style. */
static const char *standard_reason(int code)
{
    switch (code) {
    case -32700:
        return "parse_error";
    case -32600:
        return "invalid_request";
    case -32601:
        return "method_not_found";
    case -32602:
        return "invalid_params";
    case -32603:
        return "internal_error";
    default:
        return "-";
    }
}

void cli_print_error(const cJSON *error)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(error, "code");
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(error, "message");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(error, "data");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(data, "reason");
    int number = cJSON_IsNumber(code) ? code->valueint : 0;
    fprintf(stderr, "therasync: error %d %s: %s\n", number,
            cJSON_IsString(reason) ? reason->valuestring : standard_reason(number),
            cJSON_IsString(message) ? message->valuestring : "(no message)");
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(data, "errors");
    const cJSON *e;
    cJSON_ArrayForEach(e, errors)
    {
        const cJSON *field = cJSON_GetObjectItemCaseSensitive(e, "field");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        fprintf(stderr, "  %s: %s\n", cJSON_IsString(field) ? field->valuestring : "-",
                cJSON_IsString(msg) ? msg->valuestring : "-");
    }
}

/* JSON with two-space indentation and "key": value, which reads better than
 * cJSON_Print's tabs. Scalars are printed by cJSON, so escaping is its own. */
static void pretty(FILE *out, const cJSON *v, int depth)
{
    bool obj = cJSON_IsObject(v);
    if ((!obj && !cJSON_IsArray(v)) || !v->child) {
        char *text = cJSON_PrintUnformatted(v);
        fputs(text ? text : "null", out);
        cJSON_free(text);
        return;
    }
    fputc(obj ? '{' : '[', out);
    for (const cJSON *c = v->child; c; c = c->next) {
        fprintf(out, "\n%*s", (depth + 1) * 2, "");
        if (obj) {
            cJSON *key = cJSON_CreateStringReference(c->string ? c->string : "");
            char *text = key ? cJSON_PrintUnformatted(key) : NULL;
            fprintf(out, "%s: ", text ? text : "\"?\"");
            cJSON_free(text);
            cJSON_Delete(key);
        }
        pretty(out, c, depth + 1);
        if (c->next)
            fputc(',', out);
    }
    fprintf(out, "\n%*s%c", depth * 2, "", obj ? '}' : ']');
}

void cli_print_doc(FILE *out, const cJSON *doc)
{
    if (doc)
        pretty(out, doc, 0);
    else
        fputs("null", out);
    fputc('\n', out);
}

void cli_print_sync(FILE *out, const cJSON *sync)
{
    if (!cJSON_IsObject(sync))
        return;
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(sync, "state");
    const cJSON *mutation = cJSON_GetObjectItemCaseSensitive(sync, "mutation");
    const cJSON *pending = cJSON_GetObjectItemCaseSensitive(sync, "pending");
    fprintf(out, "sync: %s", cJSON_IsString(state) ? state->valuestring : "?");
    if (cJSON_IsString(mutation))
        fprintf(out, "  mutation: %s", mutation->valuestring);
    if (cJSON_IsNumber(pending))
        fprintf(out, "  pending: %.0f", pending->valuedouble);
    fputc('\n', out);
}

/* Flattened key/value pairs of an object, dotted keys for nested objects. */
typedef struct {
    char **keys;
    char **values;
    size_t n, cap;
} kv_list_t;

static void kv_add(kv_list_t *kv, const char *key, char *value)
{
    if (kv->n == kv->cap) {
        size_t cap = kv->cap ? kv->cap * 2 : 16;
        char **k = realloc(kv->keys, cap * sizeof *k);
        if (k)
            kv->keys = k;
        char **v = realloc(kv->values, cap * sizeof *v);
        if (v)
            kv->values = v;
        if (!k || !v) {
            free(value);
            return;
        }
        kv->cap = cap;
    }
    kv->keys[kv->n] = strdup(key);
    kv->values[kv->n++] = value;
}

static void kv_flatten(kv_list_t *kv, const char *prefix, const cJSON *obj)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, obj)
    {
        ts_buf_t key = {0};
        if (prefix)
            ts_buf_printf(&key, "%s.", prefix);
        ts_buf_puts(&key, item->string ? item->string : "?");
        if (cJSON_IsObject(item) && item->child)
            kv_flatten(kv, key.data, item);
        else
            kv_add(kv, key.data ? key.data : "?", value_text(item));
        ts_buf_free(&key);
    }
}

void cli_print_kv(FILE *out, const cJSON *obj)
{
    if (!cJSON_IsObject(obj)) {
        char *text = value_text(obj);
        fprintf(out, "%s\n", text ? text : "null");
        free(text);
        return;
    }
    kv_list_t kv = {0};
    kv_flatten(&kv, NULL, obj);
    int width = 0;
    for (size_t i = 0; i < kv.n; i++) {
        int len = kv.keys[i] ? (int)strlen(kv.keys[i]) : 0;
        width = len > width ? len : width;
    }
    for (size_t i = 0; i < kv.n; i++) {
        const char *key = kv.keys[i] ? kv.keys[i] : "?";
        fprintf(out, "%s:%*s %s\n", key, width - (int)strlen(key), "",
                kv.values[i] ? kv.values[i] : "null");
        free(kv.keys[i]);
        free(kv.values[i]);
    }
    free(kv.keys);
    free(kv.values);
}

/* Table columns: the union of the items' keys in first-seen order, when the
 * items are objects with at most this many keys and short scalar values. */
#define TABLE_MAX_COLS 8
#define TABLE_MAX_CELL 40

void cli_print_items(FILE *out, const cJSON *items)
{
    const char *cols[TABLE_MAX_COLS];
    int ncols = 0, width[TABLE_MAX_COLS] = {0};
    bool table = cJSON_GetArraySize(items) > 0;
    const cJSON *item, *field;
    cJSON_ArrayForEach(item, items)
    {
        if (!cJSON_IsObject(item)) {
            table = false;
            break;
        }
        cJSON_ArrayForEach(field, item)
        {
            if (cJSON_IsObject(field) || cJSON_IsArray(field) ||
                (cJSON_IsString(field) && strlen(field->valuestring) > TABLE_MAX_CELL)) {
                table = false;
                break;
            }
            int c = 0;
            while (c < ncols && strcmp(cols[c], field->string) != 0)
                c++;
            if (c == ncols) {
                if (ncols == TABLE_MAX_COLS) {
                    table = false;
                    break;
                }
                cols[ncols] = field->string;
                width[ncols] = (int)strlen(field->string);
                ncols++;
            }
            char *text = value_text(field);
            int len = text ? (int)strlen(text) : 4;
            width[c] = len > width[c] ? len : width[c];
            free(text);
        }
        if (!table)
            break;
    }
    if (!table) {
        cJSON_ArrayForEach(item, items) cli_print_compact(out, item);
        return;
    }
    for (int c = 0; c < ncols; c++)
        fprintf(out, c + 1 < ncols ? "%-*s  " : "%.*s\n", c + 1 < ncols ? width[c] : 64, cols[c]);
    cJSON_ArrayForEach(item, items)
    {
        for (int c = 0; c < ncols; c++) {
            const cJSON *cell = cJSON_GetObjectItemCaseSensitive(item, cols[c]);
            char *text = cell ? value_text(cell) : NULL;
            if (c + 1 < ncols)
                fprintf(out, "%-*s  ", width[c], text ? text : "");
            else
                fprintf(out, "%s\n", text ? text : "");
            free(text);
        }
    }
}

void cli_print_audit(FILE *out, const cJSON *entries)
{
    static const char *const fields[] = {"at", "event", "collection", "id", "mutation",
                                         "version", "client", "reason"};
    const cJSON *entry;
    cJSON_ArrayForEach(entry, entries)
    {
        bool first = true;
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(entry, fields[i]);
            if (!v || cJSON_IsNull(v))
                continue;
            char *text = value_text(v);
            if (i < 2)
                fprintf(out, "%s%-9s", first ? "" : "  ", text ? text : "");
            else
                fprintf(out, "  %s=%s", fields[i], text ? text : "");
            first = false;
            free(text);
        }
        fputc('\n', out);
    }
}
