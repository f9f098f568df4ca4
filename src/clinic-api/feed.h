/* feed.h — parks suspended HTTP connections until a deadline or a new change.
 *
 * Long polls, server-sent event streams and injected latency never block an
 * HTTP thread: the handler suspends its connection here (MHD suspend/resume)
 * and one timer thread resumes it when the change feed moves past the
 * connection's cursor or its deadline passes. MHD then calls the handler (or
 * the stream's reader) again, which decides what to send. */
#ifndef CLINIC_API_FEED_H
#define CLINIC_API_FEED_H

#include <microhttpd.h>
#include <stdint.h>

/* Starts the timer thread; head is the current cursor. 0 or -1. */
int ca_feed_start(int64_t head);
/* Refuses new parks, resumes every parked connection, joins the thread. */
void ca_feed_stop(void);
/* Announces that the feed reached cursor head. */
void ca_feed_notify(int64_t head);
/* Suspends c until deadline_us (ts_mono_us clock), or earlier once the head
 * passes since (since < 0: wake on the deadline only). Call only from MHD's
 * access handler or content reader. Returns 0 when suspended, -1 when the
 * server is stopping or memory ran out (c is not suspended). */
int ca_feed_park(struct MHD_Connection *c, int64_t deadline_us, int64_t since);
/* True once ca_feed_stop has begun. */
int ca_feed_stopping(void);

#endif
