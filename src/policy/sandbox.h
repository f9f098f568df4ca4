/* sandbox.h — one hardened Lua 5.4 state (library-internal).
 *
 * A sandbox owns one lua_State created with a counting allocator that refuses
 * growth past a memory cap, an allow-listed environment (see sandbox.c for the
 * list), text-only loading from one directory, and an instruction budget per
 * protected call enforced by a count hook that pcall inside Lua cannot swallow
 * (armed lazily, for calls that run long, when the budget is large).
 *
 * Every file loaded (a policy file, a module it requires, a test file) runs in
 * its own environment table: reading an unknown global is an error; globals it
 * defines while its chunk runs become read-only once the chunk returns. */
#ifndef THERASYNC_LUA_SANDBOX_H
#define THERASYNC_LUA_SANDBOX_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_sandbox ts_sandbox_t;

#define TS_SANDBOX_DEFAULT_MEM (64u * 1024u * 1024u)
#define TS_SANDBOX_DEFAULT_BUDGET 10000000L
#define TS_SANDBOX_MAX_FILE (1024 * 1024)
/* From this budget up, the count hook is armed only once a call has run for
 * 2-4 ms (watchdog.h): a hooked tight loop needs a few ms for a million
 * instructions, so the head start changes little; smaller budgets would be
 * dominated by it and are counted from the first instruction. */
#define TS_SANDBOX_LAZY_BUDGET 1000000L

/* Creates a sandbox whose require() and ts_sandbox_load() read files from dir.
 * mem_cap 0 and budget 0 pick the defaults above; budget < 0 disables the
 * budget (no hook) and exists only to measure the hook's cost. Returns NULL on failure
 * with a message in err. */
ts_sandbox_t *ts_sandbox_new(const char *dir, size_t mem_cap, long budget, char *err,
                             size_t errlen);
/* Closes the state and frees everything; idempotent, clears *self_p. */
void ts_sandbox_destroy(ts_sandbox_t **self_p);

lua_State *ts_sandbox_state(ts_sandbox_t *self);
const char *ts_sandbox_dir(const ts_sandbox_t *self);
size_t ts_sandbox_mem_used(const ts_sandbox_t *self);
size_t ts_sandbox_mem_cap(const ts_sandbox_t *self);
/* Instructions counted by the last (or current) protected call, to within the
 * hook granularity; with a lazily armed hook, only those since it was armed
 * (0 for a call that ended before). */
long ts_sandbox_instructions(const ts_sandbox_t *self);
/* Inside a protected call: starts the instruction budget afresh (for loops
 * that run one policy function per item, each item gets the full budget).
 * Does nothing once the budget was spent. */
void ts_sandbox_budget_reset(ts_sandbox_t *self);
/* The sandbox that owns L (stored in the state's extra space). */
ts_sandbox_t *ts_sandbox_of(lua_State *L);
/* How many calls so far read the clock (os.time(), os.date(), os.clock()). */
uint64_t ts_sandbox_clock_reads(const ts_sandbox_t *self);
/* Counts one reading of the clock (a selector's defaulted now). */
void ts_sandbox_note_clock(ts_sandbox_t *self);
/* next(t, k) on the raw table, ignoring metamethods: the iterator behind the
 * pairs() of read-only and lazy tables. */
int ts_sandbox_raw_next(lua_State *L);

/* Inside a protected call: adds the value on top of the stack (popped) as an
 * allow-listed global named name, visible to every file loaded afterwards. */
void ts_sandbox_add_global(lua_State *L, const char *name);

/* Runs f(L) with one light-userdata argument ud, under the instruction budget
 * and the memory cap. Returns 0, or -1 with err set to "file:line: message"
 * (or "instruction budget exceeded ..." / "memory cap exceeded ..."). The Lua
 * stack is empty afterwards. Not reentrant: call from outside Lua only. */
int ts_sandbox_pcall(ts_sandbox_t *self, lua_CFunction f, void *ud, char *err, size_t errlen);

/* Inside a protected call: loads file (a plain name inside the sandbox dir,
 * e.g. "validate.lua") as text in a fresh environment, runs it, seals its
 * globals, and leaves its first return value on the stack. Raises a Lua error
 * on failure. */
void ts_sandbox_run_file(lua_State *L, const char *file);
/* Inside a protected call: compiles file without running it (for checks).
 * Raises a Lua error on failure; pushes nothing. */
void ts_sandbox_compile_file(lua_State *L, const char *file);

/* Inside a protected call: pushes a read-only proxy of the table at idx
 * (reads pass through, writes and protected-metatable changes raise errors,
 * pairs() iterates the original). */
void ts_sandbox_push_readonly(lua_State *L, int idx);

/* Name used by log() in error context; points to static or caller storage
 * that outlives the call. */
void ts_sandbox_set_label(ts_sandbox_t *self, const char *label);
const char *ts_sandbox_label(const ts_sandbox_t *self);

#endif
