/* luadiff.h — differential tests of a Lua library replacement: the same
 * script runs in a state with Lua's own functions and in one with ours,
 * and their outputs must be the same, line for line. */
#ifndef TS_TEST_LUADIFF_H
#define TS_TEST_LUADIFF_H

#include "policy/pattern.h"

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* A meter for bare states: counts ts_luadiff_steps, and raises past
 * ts_luadiff_limit (very large unless a test lowers it). */
extern long ts_luadiff_steps, ts_luadiff_limit;
extern const ts_pattern_meter_t ts_luadiff_meter;

/* A plain state with the standard libraries, then install(L) when given
 * (the functions under test, on ts_luadiff_meter). */
lua_State *ts_luadiff_state(void (*install)(lua_State *L));
/* Runs chunk in such a state with a limit of limit steps (the steps start
 * at 0); the error message ("" when it ended well) into err. */
void ts_luadiff_limited(void (*install)(lua_State *L), const char *chunk, long limit, char *err,
                        size_t errlen);

/* Runs the script at rel (from the source tree) in L; returns the string it
 * returns (malloc'd, NUL bytes in it shown as \1 so it reads as one C
 * string). Asserts that it ran. */
char *ts_luadiff_run(lua_State *L, const char *rel);
/* Asserts want and got are the same, naming the first line that differs;
 * returns the number of lines. */
int ts_luadiff_same(const char *want, const char *got);

/* A sandbox over the fixture directory rel (its calls.lua), with a budget
 * (0: the default); asserts it opens. */
struct ts_sandbox;
struct ts_sandbox *ts_luadiff_sandbox(const char *rel, long budget);
/* Calls the function fn of calls.lua in the sandbox: 0, or an error in err. */
int ts_luadiff_call(struct ts_sandbox *sb, const char *fn, char *err, size_t errlen);
/* In sandboxes over fixture rel at the budgets 100,000, 1 million and the
 * default: each of fns (functions of its calls.lua) ends with the budget
 * error within 5 s, and "quick" still works after each (and before them,
 * with quick_first); "ordinary" works at the two larger budgets. */
void ts_luadiff_hostile(const char *rel, const char *const *fns, size_t nfns, bool quick_first);

#endif
