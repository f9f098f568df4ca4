/* hlog.h — HdrHistogram's histogram log (.hlog), as Java HdrHistogram's
 * HistogramLogWriter writes it and HistogramLogProcessor, HdrHistogram_c's
 * hdr_log_read and HdrHistogramVisualizer read it: header comments, a CSV
 * legend, then one line per interval with its histogram in the V2
 * compressed encoding (zlib, base64).
 *
 * The bench records microseconds in a histogram of 3 significant digits
 * from 1 µs (lowestDiscernibleValue) to 1 hour (highestTrackableValue);
 * Interval_Max is written in milliseconds (max value unit ratio 1000). */
#ifndef THERASYNC_BENCH_HLOG_H
#define THERASYNC_BENCH_HLOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define HLOG_DIGITS 3
#define HLOG_LOWEST 1
#define HLOG_HIGHEST INT64_C(3600000000) /* 1 h in µs: larger values count as this */

/* HdrHistogram's counts index of value v (clamped to 0..HLOG_HIGHEST). */
int32_t hlog_index_for(int64_t v);

/* The V2 compressed histogram of the values, base64 encoded and
 * NUL-terminated (free() it), or NULL when out of memory. */
char *hlog_encode(const int64_t *values, size_t n);

/* The whole log: the header (StartTime and BaseTime start_epoch_s), then
 * one interval of length_s seconds at 0.000 holding every value. 0 or -1. */
int hlog_write(FILE *f, double start_epoch_s, double length_s, const int64_t *values, size_t n);

#endif
