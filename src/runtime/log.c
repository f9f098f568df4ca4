/* log.c — stderr logging with a global level (set once at start).
 *
 * Under systemd, stderr is a stream to journald: each line then starts
 * with its syslog priority, <3> to <7>, which journald strips and keeps
 * (journalctl -p err). A warning repeated with the same format string
 * within REPEAT_WINDOW_US is printed once; the next one after the window
 * (or any line logged after it) first says how many were left out. */
#include "therasync/log.h"
#include "therasync/util.h"

#include <cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPEAT_WINDOW_US 1000000
#define REPEAT_SLOTS 32

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

/* ---- journald ---- */

static pthread_once_t journal_once = PTHREAD_ONCE_INIT;
static bool to_journal;

/* systemd sets JOURNAL_STREAM=DEV:INO of the stream it gave as stderr;
 * stderr redirected elsewhere since (a file, a pipe) no longer matches. */
static void journal_check(void)
{
    const char *env = getenv("JOURNAL_STREAM");
    uintmax_t dev, ino;
    char extra;
    struct stat st;
    if (env && sscanf(env, "%ju:%ju%c", &dev, &ino, &extra) == 2 && fstat(2, &st) == 0)
        to_journal = (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino;
}

bool ts_log_to_journal(void)
{
    pthread_once(&journal_once, journal_check);
    return to_journal;
}

/* ---- repeated warnings ---- */

typedef struct {
    const char *fmt, *module; /* fmt: the caller's literal, compared by address */
    int64_t since_us;         /* the window began with the line printed then */
    uint64_t left_out;
} repeat_t;

static pthread_mutex_t repeat_lock = PTHREAD_MUTEX_INITIALIZER;
static repeat_t repeats[REPEAT_SLOTS];
static _Atomic int repeats_open; /* slots with lines left out: a fast path when 0 */

static void emit(ts_log_level_t level, const char *module, const char *text)
{
    static const char *const priorities[] = {"<3>", "<4>", "<6>", "<7>"};
    char stamp[32];
    ts_rfc3339(ts_wall_ms(), stamp);
    /* One write per line so lines from threads never interleave. */
    fprintf(stderr, "%s%s %-5s %s: %s\n", ts_log_to_journal() ? priorities[level] : "", stamp,
            level_names[level], module, text);
}

/* "last message repeated N times" for what r left out (repeat_lock held). */
static void say_repeated(repeat_t *r)
{
    char text[64];
    snprintf(text, sizeof text, "last message repeated %" PRIu64 " times", r->left_out);
    emit(TS_LOG_WARN, r->module, text);
    r->left_out = 0;
    repeats_open--;
}

/* Says it for each window that is over, but except's (repeat_lock held). */
static void flush_repeats(int64_t now, const char *except)
{
    for (int i = 0; i < REPEAT_SLOTS; i++)
        if (repeats[i].left_out && repeats[i].fmt != except &&
            now - repeats[i].since_us >= REPEAT_WINDOW_US)
            say_repeated(&repeats[i]);
}

/* Whether a warning with fmt is to be printed now (repeat_lock held). */
static bool repeat_allows(const char *module, const char *fmt, int64_t now)
{
    /* its slot, else an unused one, else one with nothing left out, else
     * the oldest; among equals the oldest */
    repeat_t *r = NULL, *spare = NULL;
    for (int i = 0; i < REPEAT_SLOTS && !r; i++) {
        repeat_t *x = &repeats[i];
        if (x->fmt == fmt)
            r = x;
        else if (!spare || (spare->fmt && (!x->fmt || (!x->left_out && spare->left_out) ||
                                           (!x->left_out == !spare->left_out &&
                                            x->since_us < spare->since_us))))
            spare = x;
    }
    if (r && now - r->since_us < REPEAT_WINDOW_US) {
        if (!r->left_out++)
            repeats_open++;
        return false;
    }
    if (!r)
        r = spare;
    if (r->left_out) /* its window is over, or the oldest gives its slot up */
        say_repeated(r);
    *r = (repeat_t){.fmt = fmt, .module = module, .since_us = now};
    return true;
}

void ts_log(ts_log_level_t level, const char *module, const char *fmt, ...)
{
    if (!ts_log_enabled(level))
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (level != TS_LOG_WARN && !repeats_open) {
        emit(level, module, line);
        return;
    }
    pthread_mutex_lock(&repeat_lock);
    int64_t now = ts_mono_us();
    flush_repeats(now, level == TS_LOG_WARN ? fmt : NULL);
    if (level != TS_LOG_WARN || repeat_allows(module, fmt, now))
        emit(level, module, line);
    pthread_mutex_unlock(&repeat_lock);
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
