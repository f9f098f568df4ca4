/* log.h — leveled logging to stderr, one line per event.
 *
 * Health data rule: never pass document bodies, notes or tokens to these
 * functions at info level or above. At debug level, pass them through
 * ts_log_redact_json() first. */
#ifndef THERASYNC_LOG_H
#define THERASYNC_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { TS_LOG_ERROR, TS_LOG_WARN, TS_LOG_INFO, TS_LOG_DEBUG } ts_log_level_t;

void ts_log_set_level(ts_log_level_t level);
/* Parses "error|warn|info|debug"; returns 0, or -1 for anything else. */
int ts_log_parse_level(const char *text, ts_log_level_t *level);
bool ts_log_enabled(ts_log_level_t level);
/* Logs a line. Under journald (JOURNAL_STREAM names stderr) it starts with
 * the syslog priority (<3> error, <4> warn, <6> info, <7> debug). A warning
 * whose format string (the same literal) was printed less than 1 s before
 * is left out; the next line after that second says "last message repeated
 * N times" first. */
void ts_log(ts_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Whether stderr is journald's stream (checked once). */
bool ts_log_to_journal(void);

/* Copies JSON text into out (size outlen, always terminated) with the values
 * of sensitive keys (notes, summary, token, secret, password, authorization,
 * chief_complaint, assessment, plan, recommendations, doc, patch) replaced by
 * "[redacted]". Text that is not JSON is replaced whole. */
void ts_log_redact_json(const char *json, size_t len, char *out, size_t outlen);
/* Whether values under this key are never logged (the keys above). */
bool ts_log_sensitive_key(const char *key);

#define ts_error(mod, ...) ts_log(TS_LOG_ERROR, mod, __VA_ARGS__)
#define ts_warn(mod, ...) ts_log(TS_LOG_WARN, mod, __VA_ARGS__)
#define ts_info(mod, ...) ts_log(TS_LOG_INFO, mod, __VA_ARGS__)
#define ts_debug(mod, ...)                                                                         \
    do {                                                                                           \
        if (ts_log_enabled(TS_LOG_DEBUG))                                                          \
            ts_log(TS_LOG_DEBUG, mod, __VA_ARGS__);                                                \
    } while (0)

#endif
