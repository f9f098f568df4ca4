/* run.h — run a program from the build directory to completion, with its
 * stdout and stderr captured and a kill timeout (for testing command-line
 * tools such as the therasync CLI). Complements proc.h, which starts
 * long-running processes. */
#ifndef TS_TEST_RUN_H
#define TS_TEST_RUN_H

#include "therasync/util.h"

/* Runs BUILD_DIR/program with args (NULL-terminated, program name not
 * included), feeding stdin_text (NULL: empty stdin; small texts only) and
 * appending its stdout and stderr to out / err (either may be NULL). Kills
 * it with SIGKILL after timeout_ms. Returns the exit code, 128+signal when
 * killed by a signal, or -1 when it could not be started. */
int ts_run(const char *program, const char *const args[], const char *stdin_text, int timeout_ms,
           ts_buf_t *out, ts_buf_t *err);

#endif
