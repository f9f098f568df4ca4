/* hist.h — a latency histogram with ~9% resolution (8 sub-buckets per power
 * of two), fixed size, no allocation: cheap enough for every request. */
#ifndef THERASYNC_HIST_H
#define THERASYNC_HIST_H

#include <cJSON.h>
#include <stdint.h>

#define TS_HIST_BUCKETS (40 * 8)

typedef struct {
    uint64_t counts[TS_HIST_BUCKETS];
    uint64_t total;
    int64_t max;
    int64_t sum; /* of every sample, for a Prometheus histogram's _sum */
} ts_hist_t;

void ts_hist_add(ts_hist_t *hist, int64_t value);
/* The value below which a fraction q (0..1) of the samples fall (upper edge
 * of its bucket, capped at the max seen); 0 when empty. */
int64_t ts_hist_quantile(const ts_hist_t *hist, double q);
/* The fixed upper bounds (microseconds) the engine exports its latency
 * histograms with, and how many there are. */
extern const int64_t ts_hist_bounds[];
extern const int ts_hist_nbounds;
/* Cumulative counts for ts_hist_bounds: out[i] = samples <= bounds[i], to
 * the histogram's resolution (a sample counts under the first bound at or
 * above its bucket's upper edge, so a count errs low by at most ~9%). */
void ts_hist_cumulative(const ts_hist_t *hist, uint64_t *out);
/* {"le": [bounds...], "counts": [cumulative...], "count": N, "sum": S}:
 * what `metrics` carries as `buckets` beside p50/p99. */
cJSON *ts_hist_buckets_json(const ts_hist_t *hist);

#endif
