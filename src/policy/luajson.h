/* luajson.h — cJSON <-> Lua values (library-internal, defined in luaconv.c,
 * used by policy_tools.c). */
#ifndef THERASYNC_LUA_LUAJSON_H
#define THERASYNC_LUA_LUAJSON_H

#include <cJSON.h>
#include <lua.h>
#include <stddef.h>

/* Pushes item as a Lua value: objects and arrays as fresh tables, integral
 * numbers as integers, null as nil (so null fields read as absent). Raises a
 * Lua error on memory or nesting depth. */
void ts_lua_push_json(lua_State *L, const cJSON *item);

/* Converts the Lua value at idx into new cJSON (caller frees). Never raises:
 * returns NULL with err set for what JSON cannot hold (functions, cycles,
 * mixed or non-string keys, NaN). Tables whose keys are exactly 1..n
 * (n > 0) become arrays, others objects; {} is an object. Raw access only:
 * no metamethods run. */
cJSON *ts_lua_to_json(lua_State *L, int idx, char *err, size_t errlen);

#endif
