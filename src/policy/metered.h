/* metered.h — Lua 5.4's string.rep and table functions with their loops
 * charged to a step meter (library-internal).
 *
 * These loop in C over a count the caller chooses: string.rep's n,
 * table.move's range, the length (possibly from __len) that table.insert,
 * remove, concat, unpack and sort walk. A count hook never fires there, so
 * string.rep("", 2^40) or table.insert on a table whose __len says 2^40 runs
 * for hours inside one instruction. These are the same functions, with the
 * same results and error messages, written after Lua 5.4.4's lstrlib.c and
 * ltablib.c (sort is its algorithm, step for step), that charge the meter of
 * pattern.h as they go: one step per 16 rounds of string.rep and per 16
 * bytes it writes, one per element moved, shifted, concatenated (plus one
 * per 16 bytes) or unpacked, one per comparison of table.sort (plus one per
 * 16 bytes of the shorter of two strings it compares). */
#ifndef THERASYNC_LUA_METERED_H
#define THERASYNC_LUA_METERED_H

#include "pattern.h"

#include <lua.h>

/* Sets rep in the string table at str, and insert, remove, move, concat,
 * unpack and sort in the table table at tab, to the metered versions, each
 * charging meter (which must outlive the state). */
void ts_metered_install(lua_State *L, int str, int tab, const ts_pattern_meter_t *meter);

#endif
