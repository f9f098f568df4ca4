/* hist.c — log-linear histogram. */
#include "therasync/hist.h"

static int bucket_of(int64_t v)
{
    if (v < 8)
        return v < 0 ? 0 : (int)v;
    int exp = 63 - __builtin_clzll((unsigned long long)v); /* >= 3 */
    int sub = (int)((v >> (exp - 3)) & 7);
    int b = (exp - 2) * 8 + sub;
    return b < TS_HIST_BUCKETS ? b : TS_HIST_BUCKETS - 1;
}

static int64_t bucket_top(int b)
{
    if (b < 8)
        return b;
    int exp = b / 8 + 2, sub = b % 8;
    return ((int64_t)(8 + sub + 1) << (exp - 3)) - 1;
}

void ts_hist_add(ts_hist_t *h, int64_t v)
{
    h->counts[bucket_of(v)]++;
    h->total++;
    h->sum += v > 0 ? v : 0;
    if (v > h->max)
        h->max = v;
}

int64_t ts_hist_quantile(const ts_hist_t *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < TS_HIST_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen >= rank) {
            int64_t top = bucket_top(b);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

/* 100 us to 10 s, the span of a call or a commit. */
const int64_t ts_hist_bounds[] = {100,    250,    500,     1000,    2500,    5000,
                                  10000,  25000,  50000,   100000,  250000,  500000,
                                  1000000, 2500000, 5000000, 10000000};
const int ts_hist_nbounds = sizeof ts_hist_bounds / sizeof *ts_hist_bounds;

void ts_hist_cumulative(const ts_hist_t *h, uint64_t *out)
{
    uint64_t seen = 0;
    int b = 0;
    for (int i = 0; i < ts_hist_nbounds; i++) {
        while (b < TS_HIST_BUCKETS && bucket_top(b) <= ts_hist_bounds[i])
            seen += h->counts[b++];
        out[i] = seen;
    }
}

cJSON *ts_hist_buckets_json(const ts_hist_t *h)
{
    uint64_t cum[32];
    ts_hist_cumulative(h, cum);
    cJSON *o = cJSON_CreateObject(), *le = cJSON_AddArrayToObject(o, "le"),
          *counts = cJSON_AddArrayToObject(o, "counts");
    for (int i = 0; i < ts_hist_nbounds; i++) {
        cJSON_AddItemToArray(le, cJSON_CreateNumber((double)ts_hist_bounds[i]));
        cJSON_AddItemToArray(counts, cJSON_CreateNumber((double)cum[i]));
    }
    cJSON_AddNumberToObject(o, "count", (double)h->total);
    cJSON_AddNumberToObject(o, "sum", (double)h->sum);
    return o;
}
