/* pattern.h — Lua 5.4's pattern functions with a step budget
 * (library-internal).
 *
 * string.find, match, gmatch and gsub run their matcher in C, where a count
 * hook never fires: a backtracking pattern such as ('.-'):rep(8) .. 'b' on a
 * few thousand characters would run for hours. These are the same functions
 * with the same results (captures, anchors, %b, %f, classes, sets, position
 * captures, back-references, gsub with string/table/function replacements,
 * gmatch with init), written anew, that count their work in steps and hand
 * it to a meter every few thousand steps; the meter raises a Lua error to
 * stop a call that has done too much. A step is one unit of matcher work
 * (one pattern item tried at one position, one subject character scanned by
 * a repetition or %b, a few bytes of a set or a compared string). */
#ifndef THERASYNC_LUA_PATTERN_H
#define THERASYNC_LUA_PATTERN_H

#include <lua.h>

typedef struct ts_pattern_meter {
    /* Called with the steps done since the last call; may raise (luaL_error)
     * to end the pattern call. */
    void (*charge)(lua_State *L, long steps);
} ts_pattern_meter_t;

/* Work a C loop has done and not yet charged: a loop adds its steps, and
 * every TS_CHARGE_EVERY of them the meter is called (which may raise), so a
 * call costs a few meter calls, not one per step. The pattern functions and
 * the metered library functions (metered.h) share it. */
#define TS_CHARGE_EVERY 4096
typedef struct {
    lua_State *L;
    const ts_pattern_meter_t *meter;
    long steps;
} ts_steps_t;

/* Charges what steps holds now. */
void ts_steps_flush(ts_steps_t *s);

static inline void ts_steps_add(ts_steps_t *s, long n)
{
    s->steps += n;
    if (s->steps >= TS_CHARGE_EVERY)
        ts_steps_flush(s);
}

/* Sets find, match, gmatch and gsub in the table at idx to the budgeted
 * versions, each charging meter (which must outlive the state). */
void ts_pattern_install(lua_State *L, int idx, const ts_pattern_meter_t *meter);

#endif
