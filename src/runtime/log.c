/* log.c — stderr logging with a global level (set once at start). */
#include "therasync/log.h"
#include "therasync/util.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static volatile ts_log_level_t current_level = TS_LOG_INFO;
static const char *level_names[] = {"error", "warn", "info", "debug"};

void ts_log_set_level(ts_log_level_t level)
{
    current_level = level;
}

int ts_log_parse_level(const char *text, ts_log_level_t *level)
{
    for (int i = 0; i <= TS_LOG_DEBUG; i++) {
        if (text && strcmp(text, level_names[i]) == 0) {
            *level = (ts_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

bool ts_log_enabled(ts_log_level_t level)
{
    return level <= current_level;
}

void ts_log(ts_log_level_t level, const char *module, const char *fmt, ...)
{
    if (!ts_log_enabled(level))
        return;
    char stamp[32], line[2048];
    ts_rfc3339(ts_wall_ms(), stamp);
    int n = snprintf(line, sizeof line, "%s %-5s %s: ", stamp, level_names[level], module);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line so lines from threads never interleave. */
    fprintf(stderr, "%s\n", line);
}

static const char *sensitive_keys[] = {
    "notes", "summary", "token", "access_token", "refresh_token", "secret", "client_secret",
    "password", "authorization", "chief_complaint", "assessment", "plan", "recommendations",
    "doc", "patch", "body", NULL};

bool ts_log_sensitive_key(const char *key)
{
    for (int i = 0; key && sensitive_keys[i]; i++)
        if (strcasecmp(key, sensitive_keys[i]) == 0)
            return true;
    return false;
}

static void redact(cJSON *node)
{
    for (cJSON *child = node ? node->child : NULL; child; child = child->next) {
        if (ts_log_sensitive_key(child->string)) {
            cJSON *mark = cJSON_CreateString("[redacted]");
            if (mark)
                cJSON_ReplaceItemViaPointer(node, child, mark);
            child = mark ? mark : child;
        } else {
            redact(child);
        }
    }
}

void ts_log_redact_json(const char *json, size_t len, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    cJSON *root = cJSON_ParseWithLength(json, len);
    char *text = NULL;
    if (root) {
        redact(root);
        text = cJSON_PrintUnformatted(root);
    }
    snprintf(out, outlen, "%s", text ? text : "[redacted: not JSON]");
    cJSON_free(text);
    cJSON_Delete(root);
}
