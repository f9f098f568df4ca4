/* stats.c — what the bench tells about a run besides its JSON line:
 * percentiles, the HdrHistogram percentile distribution file (--hdr's
 * FILE.hgrm; its histogram log is hlog.c), and
 * progress on stderr for anything that takes more than a few seconds. */
#include "bench.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank of p (0..100) in n sorted values. */
static int64_t at_rank(const int64_t *sorted, size_t n, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)n - 1e-9);
    return sorted[rank == 0 ? 0 : rank > n ? n - 1 : rank - 1];
}

int64_t *bench_sorted(const int64_t *values, size_t n)
{
    int64_t *copy = malloc((n ? n : 1) * sizeof *copy);
    if (!copy)
        return NULL;
    if (n)
        memcpy(copy, values, n * sizeof *copy);
    qsort(copy, n, sizeof *copy, cmp_i64);
    return copy;
}

void bench_pcts(const int64_t *values, size_t n, bench_pcts_t *out)
{
    *out = (bench_pcts_t){0};
    int64_t *s = n ? bench_sorted(values, n) : NULL;
    if (!s)
        return;
    out->p50 = at_rank(s, n, 50);
    out->p90 = at_rank(s, n, 90);
    out->p99 = at_rank(s, n, 99);
    out->p999 = at_rank(s, n, 99.9);
    out->max = s[n - 1];
    free(s);
}

/* The text HdrHistogram's outputPercentileDistribution prints (values in
 * milliseconds, 5 percentile ticks per half distance), computed from the
 * exact values rather than from buckets: the columns `hdr-plot` and
 * HdrHistogram's plotFiles.html read. The histogram log is hlog.c's. */
int bench_write_hdr(const char *path, const int64_t *values, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench: cannot write %s\n", path);
        return -1;
    }
    int64_t *s = n ? bench_sorted(values, n) : NULL;
    fprintf(f, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount",
            "1/(1-Percentile)");
    double sum = 0, sq = 0;
    for (size_t i = 0; s && i < n; i++)
        sum += (double)s[i];
    double mean = n ? sum / (double)n : 0;
    for (size_t i = 0; s && i < n; i++)
        sq += ((double)s[i] - mean) * ((double)s[i] - mean);
    size_t count = 0; /* values at or below the current one */
    for (double p = 0; s && p < 100;) {
        int64_t v = at_rank(s, n, p);
        while (count < n && s[count] <= v)
            count++;
        if (count >= n)
            break;
        fprintf(f, "%12.3f %1.12f %10zu %14.2f\n", (double)v / 1000.0, p / 100.0, count,
                1.0 / (1.0 - p / 100.0));
        /* HdrHistogram's PercentileIterator: ticks double at every halving. */
        double ticks = 5.0 * pow(2.0, floor(log2(100.0 / (100.0 - p))) + 1);
        p += 100.0 / ticks;
    }
    if (s)
        fprintf(f, "%12.3f %1.12f %10zu\n", (double)s[n - 1] / 1000.0, 1.0, n);
    fprintf(f, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n", mean / 1000.0,
            n ? sqrt(sq / (double)n) / 1000.0 : 0.0);
    fprintf(f, "#[Max     = %12.3f, Total count    = %12zu]\n",
            s ? (double)s[n - 1] / 1000.0 : 0.0, n);
    free(s);
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- progress ---- */

struct bench_progress {
    const char *what;
    int64_t total; /* 0: unknown */
    atomic_llong done;
    atomic_bool stop;
    int64_t t0;
    pthread_t tid;
};

#define PROGRESS_AFTER_US 3000000 /* quiet for the first 3 s */

static void *progress_loop(void *arg)
{
    bench_progress_t *p = arg;
    int64_t next = p->t0 + PROGRESS_AFTER_US;
    long long last = 0;
    int64_t last_t = p->t0;
    while (!atomic_load(&p->stop)) {
        usleep(100000);
        int64_t now = ts_mono_us();
        if (now < next)
            continue;
        long long d = atomic_load(&p->done);
        double rate = now > last_t ? (double)(d - last) * 1e6 / (double)(now - last_t) : 0;
        if (p->total > 0)
            fprintf(stderr, "bench: %s: %lld/%lld (%.0f%%), %.0f/s, %.0f s\n", p->what, d,
                    (long long)p->total, 100.0 * (double)d / (double)p->total, rate,
                    (double)(now - p->t0) / 1e6);
        else
            fprintf(stderr, "bench: %s: %lld, %.0f/s, %.0f s\n", p->what, d, rate,
                    (double)(now - p->t0) / 1e6);
        last = d, last_t = now;
        next += 1000000;
    }
    return NULL;
}

bench_progress_t *bench_progress_start(const char *what, int64_t total)
{
    bench_progress_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->what = what;
    p->total = total;
    p->t0 = ts_mono_us();
    atomic_init(&p->done, 0);
    atomic_init(&p->stop, false);
    if (pthread_create(&p->tid, NULL, progress_loop, p)) {
        free(p);
        return NULL;
    }
    return p;
}

void bench_progress_add(bench_progress_t *p, int64_t n)
{
    if (p)
        atomic_fetch_add(&p->done, n);
}

void bench_progress_stop(bench_progress_t *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->tid, NULL);
    free(p);
}
