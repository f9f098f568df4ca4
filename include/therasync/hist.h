/* hist.h — a latency histogram with ~9% resolution (8 sub-buckets per power
 * of two), fixed size, no allocation: cheap enough for every request. */
#ifndef THERASYNC_HIST_H
#define THERASYNC_HIST_H

#include <stdint.h>

#define TS_HIST_BUCKETS (40 * 8)

typedef struct {
    uint64_t counts[TS_HIST_BUCKETS];
    uint64_t total;
    int64_t max;
} ts_hist_t;

void ts_hist_add(ts_hist_t *hist, int64_t value);
/* The value below which a fraction q (0..1) of the samples fall (upper edge
 * of its bucket, capped at the max seen); 0 when empty. */
int64_t ts_hist_quantile(const ts_hist_t *hist, double q);

#endif
