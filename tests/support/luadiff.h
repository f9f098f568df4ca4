/* luadiff.h — differential tests of a Lua library replacement: the same
 * script runs in a state with Lua's own functions and in one with ours,
 * and their outputs must be the same, line for line. */
#ifndef TS_TEST_LUADIFF_H
#define TS_TEST_LUADIFF_H

#include <lua.h>

/* Runs the script at rel (from the source tree) in L; returns the string it
 * returns (malloc'd, NUL bytes in it shown as \1 so it reads as one C
 * string). Asserts that it ran. */
char *ts_luadiff_run(lua_State *L, const char *rel);
/* Asserts want and got are the same, naming the first line that differs;
 * returns the number of lines. */
int ts_luadiff_same(const char *want, const char *got);

#endif
