/* top.c — `therasync top`: the engine at a glance, refreshed, for an
 * operator who would rather look than read `metrics`. Each tick calls
 * `status` and `metrics` and shows what changed since the last one: calls
 * a second and their latency by method (from the histograms' cumulative
 * buckets, so the figures are the interval's, not the daemon's lifetime),
 * the writes waiting for the Clinic API, the cache, and persist's commits.
 * On a terminal the screen is redrawn; otherwise each tick is a block of
 * lines (for scripts and logs). */
#include "cli/cli.h"
#include "therasync/util.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static double num(const cJSON *obj, const char *path)
{
    char part[64];
    while (obj && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof part)
            return 0;
        memcpy(part, path, n);
        part[n] = '\0';
        obj = cJSON_GetObjectItemCaseSensitive(obj, part);
        path += n + (path[n] == '.');
    }
    return cJSON_IsNumber(obj) ? obj->valuedouble : 0;
}

static const char *str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : cJSON_IsNull(v) || !v ? "-" : "?";
}

/* The smallest bucket bound under which fraction q of the interval's
 * samples fall: buckets now minus before (cumulative counts per bound). */
static double interval_quantile(const cJSON *now, const cJSON *before, double q)
{
    const cJSON *le = cJSON_GetObjectItemCaseSensitive(now, "le");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(now, "counts");
    const cJSON *cb = cJSON_GetObjectItemCaseSensitive(before, "counts");
    double total = num(now, "count") - num(before, "count");
    if (!cJSON_IsArray(le) || !cJSON_IsArray(cn) || total <= 0)
        return NAN;
    int n = cJSON_GetArraySize(le);
    for (int i = 0; i < n; i++) {
        double c = cJSON_GetArrayItem(cn, i)->valuedouble -
                   (cJSON_IsArray(cb) ? cJSON_GetArrayItem(cb, i)->valuedouble : 0);
        if (c >= q * total)
            return cJSON_GetArrayItem(le, i)->valuedouble;
    }
    return INFINITY; /* beyond the last bound */
}

static void print_us(double us)
{
    if (isnan(us))
        printf("%9s", "-");
    else if (isinf(us))
        printf("%9s", ">10 s");
    else if (us < 1000)
        printf("%6.0f µs", us);
    else if (us < 1e6)
        printf("%6.1f ms", us / 1000);
    else
        printf("%7.2f s", us / 1e6);
}

static void show(const cJSON *st, const cJSON *m, const cJSON *prev, double secs, bool tty)
{
    if (tty)
        printf("\033[H\033[J");
    char stamp[32];
    ts_rfc3339(ts_wall_ms(), stamp);
    printf("therasync top — %s  version %s  up %.0f s  (every %.1f s)\n", stamp,
           str(st, "version"), num(st, "uptime_s"), secs);
    printf("sync     api %-8s online %-5s feed %-9s pending %-6.0f oldest %.1f s  last error %s\n",
           str(st, "api"), cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "online")) ? "yes" : "no",
           str(st, "feed"), num(st, "pending"), num(st, "oldest_pending_age_s"),
           str(st, "last_error"));
    printf("storage  %s   documents", str(st, "storage"));
    const cJSON *colls = cJSON_GetObjectItemCaseSensitive(st, "collections");
    for (const cJSON *c = colls ? colls->child : NULL; c; c = c->next)
        printf("  %s %.0f", c->string, cJSON_IsNumber(c) ? c->valuedouble : 0);
    printf("\n\n%-16s %10s %9s %9s\n", "calls", "per s", "p50", "p99");
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(m, "front"), "latency_us");
    const cJSON *plat = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(prev, "front"), "latency_us");
    for (const cJSON *x = lat ? lat->child : NULL; x; x = x->next) {
        const cJSON *px = cJSON_GetObjectItemCaseSensitive(plat, x->string);
        double rate = (num(x, "count") - num(px, "count")) / secs;
        if (rate <= 0 || strcmp(x->string, "metrics") == 0 || strcmp(x->string, "status") == 0)
            continue; /* top's own calls */
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(x, "buckets");
        const cJSON *pb = cJSON_GetObjectItemCaseSensitive(px, "buckets");
        printf("%-16s %10.0f ", x->string, rate);
        print_us(interval_quantile(b, pb, 0.5));
        printf(" ");
        print_us(interval_quantile(b, pb, 0.99));
        printf("\n");
    }
    double hits = num(m, "cache.hits") - num(prev, "cache.hits");
    double misses = num(m, "cache.misses") - num(prev, "cache.misses");
    double front = num(m, "cache.front_hits") - num(prev, "cache.front_hits");
    printf("\ncache    hits %.0f/s (%.0f%%, %.0f%% by the front door)  misses %.0f/s  "
           "entries %.0f  %.1f MiB  evictions %.0f/s\n",
           hits / secs, hits + misses > 0 ? 100 * hits / (hits + misses) : 0,
           hits > 0 ? 100 * front / hits : 0, misses / secs, num(m, "cache.entries"),
           num(m, "cache.bytes") / 1048576,
           (num(m, "cache.evictions") - num(prev, "cache.evictions")) / secs);
    printf("live     subscriptions %.0f  notifications %.0f/s  notify p99 %.0f µs (lifetime)\n",
           num(m, "cache.subscriptions"),
           (num(m, "cache.notifications") - num(prev, "cache.notifications")) / secs,
           num(m, "cache.notify_latency_us.p99"));
    printf("persist  commits %.0f/s  records %.0f/s  commit p99 %.0f µs (lifetime)  "
           "failed %.0f\n",
           (num(m, "persist.commits") - num(prev, "persist.commits")) / secs,
           (num(m, "persist.records") - num(prev, "persist.records")) / secs,
           num(m, "persist.commit_us_p99"), num(m, "persist.failed_commits"));
    printf("front    in flight %.0f  busy %.0f/s  errors %.0f/s\n", num(m, "front.inflight"),
           (num(m, "front.busy") - num(prev, "front.busy")) / secs,
           (num(m, "front.errors") - num(prev, "front.errors")) / secs);
    if (!tty)
        printf("\n");
    fflush(stdout);
}

/* One call's result (detached; NULL after printing why). */
static cJSON *result_of(cli_rpc_t *rpc, const char *method, int *rc)
{
    cJSON *resp = NULL;
    *rc = cli_rpc_call(rpc, method, NULL, &resp);
    if (*rc != CLI_EXIT_OK) {
        fprintf(stderr, "therasync: top: no answer to %s\n", method);
        return NULL;
    }
    cJSON *res = cJSON_DetachItemFromObjectCaseSensitive(resp, "result");
    if (!res) {
        cli_print_error(cJSON_GetObjectItemCaseSensitive(resp, "error"));
        *rc = CLI_EXIT_ERROR;
    }
    cJSON_Delete(resp);
    return res;
}

int cli_top(cli_rpc_t *rpc, int interval_ms, int64_t count, int64_t for_s,
            volatile sig_atomic_t *stop)
{
    bool tty = isatty(STDOUT_FILENO);
    int rc = CLI_EXIT_OK;
    cJSON *prev = result_of(rpc, "metrics", &rc);
    int64_t t_prev = ts_mono_us(), deadline = for_s ? t_prev + for_s * 1000000 : INT64_MAX;
    for (int64_t shown = 0; prev && !*stop && (count == 0 || shown < count); shown++) {
        int64_t wake = t_prev + (int64_t)interval_ms * 1000;
        while (!*stop && ts_mono_us() < wake && ts_mono_us() < deadline)
            usleep(20000);
        if (*stop || ts_mono_us() >= deadline)
            break;
        cJSON *st = result_of(rpc, "status", &rc);
        cJSON *m = st ? result_of(rpc, "metrics", &rc) : NULL;
        int64_t t = ts_mono_us();
        if (m)
            show(st, m, prev, (double)(t - t_prev) / 1e6, tty);
        cJSON_Delete(st);
        if (!m)
            break;
        cJSON_Delete(prev);
        prev = m;
        t_prev = t;
    }
    cJSON_Delete(prev);
    return rc;
}
