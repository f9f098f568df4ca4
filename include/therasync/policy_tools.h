/* policy_tools.h — tools for clinic IT: run policy tests, check a policies
 * directory. Used by `therasync policy test DIR` / `therasync policy check DIR`.
 * Both block (they read files and may run luacheck); call them from a CLI,
 * never from an actor. */
#ifndef THERASYNC_POLICY_TOOLS_H
#define THERASYNC_POLICY_TOOLS_H

#include <stdio.h>

/* Loads the policies in dir, then runs every dir/ *_test.lua (in name order)
 * in a sandbox like the policies' own, with the assertion API described in
 * docs/POLICIES.md (test, expect_valid, expect_invalid, expect_select,
 * expect_conflict, expect_equal, set_now; fixtures via require);
 * expect_select runs the store's own query code (store_query.h) over its
 * documents, so it answers as the daemon does. Prints one
 * line per case, "ok   FILE: NAME" or "FAIL FILE: NAME: message", then
 * "N passed, N failed". A file that fails to load counts as one failure.
 * Returns the number of failures (0 = all passed); policies that do not load
 * count as one failure. */
int ts_policy_test_dir(const char *dir, FILE *out);

/* Loads everything in dir as the engine would and compiles every other .lua
 * file there; prints each problem as "FILE:LINE: message", then runs
 * `luacheck` on dir when it is installed (its report is copied to out).
 * Ends with "N problems". Returns the number of problems (0 = clean). */
int ts_policy_check_dir(const char *dir, FILE *out);

#endif
