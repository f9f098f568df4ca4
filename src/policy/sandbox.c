/* sandbox.c — a hardened Lua 5.4 state: memory cap, instruction budget,
 * allow-listed environment, text-only loading from one directory.
 *
 * The layers, outermost first (after Redis' script_lua.c and skynet's snlua):
 *   1. Counting allocator: refuses any allocation that grows past the cap.
 *      Lua then runs an emergency collection and, failing that, raises a
 *      memory error; the state stays usable.
 *   2. Count hook: every protected call starts with a fresh budget. Once it is
 *      spent the hook re-arms itself to fire on every instruction and raises
 *      each time, so a pcall inside the policy cannot swallow the kill: the
 *      next Lua instruction after the pcall raises again. With a budget of
 *      TS_SANDBOX_LAZY_BUDGET or more the hook is armed lazily: calls run
 *      without it (a count hook slows every instruction) and the watchdog
 *      (watchdog.c) arms it once a call has run for 2-4 ms; the budget then
 *      counts from there. Smaller budgets are counted from the first
 *      instruction, since the head start would be a large part of them.
 *      string.find, match, gmatch and gsub match in C, where no hook fires;
 *      they are replaced by budgeted ones (pattern.c) whose steps count as
 *      instructions (s_charge). So are string.rep and table.insert, remove,
 *      move, concat, unpack and sort (metered.c), which loop in C over a
 *      count the caller picks (n, a range, a length that __len may give).
 *   3. Environment: each loaded file gets its own _ENV whose reads fall
 *      through to a table of allow-listed builtins; unknown names raise. After
 *      the chunk returns, its globals move behind a read-only view.
 *   4. Shared library tables (string, table, math, utf8, os subset, ts) are
 *      read-only proxies with protected metatables; the string metatable is
 *      protected too and indexes the proxy. No io, debug, load, dofile,
 *      collectgarbage, coroutine, package, rawset; string.dump is removed;
 *      setmetatable refuses protected metatables and __gc.
 *   5. Files load with mode "t" only (crafted bytecode can crash the VM), from
 *      plain names inside the directory (no '/', no "..", no symlinks). */
#include "sandbox.h"

#include "metered.h"
#include "pattern.h"
#include "therasync/log.h"
#include "watchdog.h"
#include "therasync/util.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Small blocks are recycled through free lists, one per 16-byte size class
 * up to 256 bytes: a policy call allocates and frees dozens of small objects
 * (tables, strings, closures), and a list push or pop is several times
 * cheaper than free / malloc. Blocks go back to the C heap when the sandbox
 * is destroyed. Off under AddressSanitizer, which must see every block. */
#define POOL_STEP 16
#define POOL_CLASSES 16
#if defined(__SANITIZE_ADDRESS__)
#define POOL_MAX 0
#else
#define POOL_MAX (POOL_STEP * POOL_CLASSES)
#endif

struct ts_sandbox {
    lua_State *L;
    size_t mem_used;     /* bytes currently allocated by this state */
    size_t mem_cap;      /* growth past this is refused */
    long budget;         /* instructions per protected call */
    long counted;        /* instructions counted in the current call */
    int step;            /* hook granularity */
    /* Read by the watchdog's signal handler (s_arm) on this state's thread. */
    volatile sig_atomic_t killed;     /* budget spent: the hook raises on every instruction */
    volatile sig_atomic_t mem_killed; /* memory cap hit: the hook raises on every instruction */
    bool lazy;           /* the watchdog arms the hook (see the top of the file) */
    ts_watch_t watch;
    int refused;         /* the last growth request was refused */
    uint64_t clock_reads;/* os.time(), os.date(), os.clock() calls that read the clock */
    int in_call;         /* a protected call is running (not reentrant) */
    int builtins_ref;    /* registry ref: the allow-listed globals table */
    int modules_ref;     /* registry ref: require() cache */
    const char *label;   /* policy being run, for log() */
    lua_Hook hook;       /* s_hook (the allocator re-arms it) */
    void *pool[POOL_CLASSES]; /* free small blocks by size class (s_block_get) */
    char dir[PATH_MAX];  /* directory files load from */
};

/* ---- allocator and hook ---- */

static size_t s_class(size_t n) { return (n - 1) / POOL_STEP; }

static void *s_block_get(ts_sandbox_t *self, size_t n)
{
    if (n > POOL_MAX)
        return malloc(n);
    void **list = &self->pool[s_class(n)], *p = *list;
    if (!p)
        return malloc((s_class(n) + 1) * POOL_STEP);
    *list = *(void **)p;
    return p;
}

static void s_block_put(ts_sandbox_t *self, void *p, size_t n)
{
    if (n > POOL_MAX) {
        free(p);
        return;
    }
    void **list = &self->pool[s_class(n)];
    *(void **)p = *list;
    *list = p;
}

/* Lua's allocator contract: NULL only when a request cannot be met; a shrink
 * or free never fails. Only growth counts against the cap. */
static void *s_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    ts_sandbox_t *self = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        if (ptr)
            s_block_put(self, ptr, old);
        self->mem_used -= old;
        return NULL;
    }
    if (nsize > old && nsize - old > self->mem_cap - self->mem_used) {
        /* Lua retries once after an emergency collection; a second refusal
         * in a row means a memory error. Make that one final for this call,
         * like the budget: otherwise a policy could pcall in a loop at the
         * cap and pay a full collection per iteration. */
        if (self->refused && self->in_call && !self->mem_killed) {
            self->mem_killed = 1;
            lua_sethook(self->L, self->hook, LUA_MASKCOUNT, 1);
        }
        self->refused = 1;
        return NULL;
    }
    void *p;
    if (!ptr)
        p = s_block_get(self, nsize);
    else if (old > POOL_MAX && nsize > POOL_MAX)
        p = realloc(ptr, nsize);
    else if (old <= POOL_MAX && nsize <= POOL_MAX && s_class(old) == s_class(nsize))
        p = ptr; /* the block already has room */
    else if ((p = s_block_get(self, nsize))) {
        memcpy(p, ptr, old < nsize ? old : nsize);
        s_block_put(self, ptr, old);
    }
    if (!p && nsize < old)
        p = ptr; /* a shrink must not fail: keep the larger block */
    if (!p)
        return NULL;
    if (nsize > old)
        self->refused = 0;
    self->mem_used = self->mem_used - old + nsize;
    return p;
}

static int s_panic(lua_State *L)
{
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    ts_error("lua", "unprotected error in a policy state: %s", msg);
    return 0; /* Lua aborts */
}

ts_sandbox_t *ts_sandbox_of(lua_State *L)
{
    return *(ts_sandbox_t **)lua_getextraspace(L);
}

static void s_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    ts_sandbox_t *self = ts_sandbox_of(L);
    if (self->mem_killed)
        luaL_error(L, "memory cap exceeded (%zu bytes)", self->mem_cap);
    if (!self->killed) {
        self->counted += self->step;
        if (self->counted < self->budget)
            return;
        self->killed = 1;
        /* From now on every instruction raises, so pcall cannot swallow it. */
        lua_sethook(L, s_hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "instruction budget exceeded (%ld instructions)", self->budget);
}

/* Work done in C by the pattern functions (pattern.c) and the metered
 * string.rep and table functions (metered.c), in steps: counted
 * against the budget like instructions, and only while the count hook is
 * armed, so a lazily armed budget gives a pattern the same 2-4 ms head start
 * as Lua code. Raises, and makes every later instruction raise, like the
 * hook does. */
static void s_charge(lua_State *L, long steps)
{
    ts_sandbox_t *self = ts_sandbox_of(L);
    if (self->mem_killed)
        luaL_error(L, "memory cap exceeded (%zu bytes)", self->mem_cap);
    if (!self->killed) {
        if (!(lua_gethookmask(L) & LUA_MASKCOUNT))
            return;
        self->counted += steps;
        if (self->counted < self->budget)
            return;
        self->killed = 1;
        lua_sethook(L, s_hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "instruction budget exceeded (%ld instructions)", self->budget);
}

static const ts_pattern_meter_t s_meter = {s_charge};

/* The watchdog's signal handler, on the thread running a call that has run
 * long: only lua_sethook, which Lua allows from a signal handler. A kill
 * already under way keeps its fire-on-every-instruction hook. */
static void s_arm(void *arg)
{
    ts_sandbox_t *self = arg;
    lua_sethook(self->L, s_hook, LUA_MASKCOUNT, self->killed || self->mem_killed ? 1 : self->step);
}

/* ---- environment pieces ---- */

static int s_unknown_global(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "unknown global '%s'", lua_tostring(L, 2));
    return luaL_error(L, "unknown global (a %s key)", luaL_typename(L, 2));
}

static int s_sealed_write(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "assignment to global '%s' after load (declare it local)",
                          lua_tostring(L, 2));
    return luaL_error(L, "assignment to a global after load");
}

static int s_readonly_write(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "attempt to modify read-only table (field '%s')", lua_tostring(L, 2));
    return luaL_error(L, "attempt to modify read-only table");
}

int ts_sandbox_raw_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1))
        return 2;
    lua_pushnil(L);
    return 1;
}

static int s_proxy_pairs(lua_State *L)
{
    lua_pushcfunction(L, ts_sandbox_raw_next);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushnil(L);
    return 3;
}

static int s_proxy_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, lua_upvalueindex(1)));
    return 1;
}

void ts_sandbox_push_readonly(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, s_readonly_write);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, idx);
    lua_pushcclosure(L, s_proxy_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushvalue(L, idx);
    lua_pushcclosure(L, s_proxy_len, 1);
    lua_setfield(L, -2, "__len");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/* setmetatable for the policy's own tables: protected metatables (every
 * shared table, every _ENV) stay put, and finalizers are refused because they
 * would run outside any budget. */
static int s_setmetatable(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (lua_getmetatable(L, 1)) {
        lua_pushliteral(L, "__metatable");
        if (lua_rawget(L, -2) != LUA_TNIL)
            return luaL_error(L, "cannot change a protected metatable");
        lua_pop(L, 2);
    }
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not allowed in policies");
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* xpcall(f, handler, ...): the real one runs the handler before unwinding,
 * and when the error comes from the budget hook that is with hooks disabled,
 * so a looping handler would run forever. This one unwinds first (pcall)
 * and then calls the handler as ordinary, budgeted code. Handlers cannot
 * inspect the stack in the sandbox (no debug), so nothing visible is lost. */
static int s_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_checkany(L, 1);
    lua_pushvalue(L, 1);
    for (int i = 3; i <= n; i++)
        lua_pushvalue(L, i);
    if (lua_pcall(L, n - 2 < 0 ? 0 : n - 2, LUA_MULTRET, 0) == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_replace(L, n); /* n >= 2: the slot just below the results */
        return lua_gettop(L) - n + 1;
    }
    int err = lua_gettop(L);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, err);
    lua_pcall(L, 1, 1, 0); /* on error: the handler's own error object */
    return 2;
}

/* getmetatable: only tables; a protected metatable answers its __metatable
 * field (false for every shared table). Strings and other values give nil. */
static int s_getmetatable(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE || !lua_getmetatable(L, 1)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushliteral(L, "__metatable");
    if (lua_rawget(L, -2) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    return 1;
}

/* os.time, os.date and os.clock, counted when they read the clock (not
 * os.time(t) or os.date(fmt, t), which only convert): a selector that
 * reads it has an answer the cache cannot keep (docs/CACHE.md). */
static int s_clock_call(lua_State *L)
{
    int n = lua_gettop(L);
    lua_Integer which = lua_tointeger(L, lua_upvalueindex(2));
    if ((which == 0 && (n == 0 || lua_isnil(L, 1))) || (which == 1 && n < 2) || which == 2)
        ts_sandbox_of(L)->clock_reads++;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

static int s_parse_time(lua_State *L)
{
    int64_t ms;
    if (lua_type(L, 1) != LUA_TSTRING || ts_parse_rfc3339(lua_tostring(L, 1), &ms) != 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)ms);
    return 1;
}

static int s_format_time(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    char out[32];
    ts_rfc3339((int64_t)ms, out);
    lua_pushstring(L, out);
    return 1;
}

/* ---- files ---- */

static int s_plain_name(const char *name)
{
    if (!name[0] || strstr(name, "..") || strchr(name, '/') || name[0] == '.')
        return 0;
    return 1;
}

/* Reads dir/file and pushes it compiled (text mode) or raises. */
static void s_load(lua_State *L, const char *file)
{
    ts_sandbox_t *self = ts_sandbox_of(L);
    if (!s_plain_name(file))
        luaL_error(L, "%s: not a plain file name inside the policies directory", file);
    char path[PATH_MAX + 256];
    int n = snprintf(path, sizeof path, "%s/%s", self->dir, file);
    if (n < 0 || (size_t)n >= sizeof path)
        luaL_error(L, "%s: path too long", file);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        luaL_error(L, "%s: cannot open: %s", file, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > TS_SANDBOX_MAX_FILE) {
        close(fd);
        luaL_error(L, "%s: not a regular file of at most %d bytes", file, TS_SANDBOX_MAX_FILE);
    }
    size_t size = (size_t)st.st_size;
    char *buf = ts_xmalloc(size);
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        free(buf);
        luaL_error(L, "%s: cannot read", file);
    }
    char chunkname[300];
    snprintf(chunkname, sizeof chunkname, "@%s", file);
    int status = luaL_loadbufferx(L, buf, size, chunkname, "t");
    free(buf);
    if (status != LUA_OK)
        lua_error(L);
}

/* Moves the globals a chunk defined behind a read-only view: reads go
 * env -> defined -> builtins -> error; writes raise. defined also holds a
 * copy of the builtins (the chunk's own globals win), so reading one takes
 * one metamethod step, not two: a rule reads many (ipairs, type, ts...). */
static void s_seal(lua_State *L, int env)
{
    ts_sandbox_t *self = ts_sandbox_of(L);
    env = lua_absindex(L, env);
    lua_newtable(L);
    int defined = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->builtins_ref);
    lua_pushnil(L);
    while (lua_next(L, -2)) { /* raw: builtins' metatable has no __pairs */
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, defined);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, env)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, defined);
    }
    lua_pushnil(L);
    while (lua_next(L, env)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, env);
    }
    lua_createtable(L, 0, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->builtins_ref);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, defined);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, defined);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, s_sealed_write);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, env);
    lua_pop(L, 1);
}

void ts_sandbox_run_file(lua_State *L, const char *file)
{
    ts_sandbox_t *self = ts_sandbox_of(L);
    luaL_checkstack(L, 8, "run_file");
    s_load(L, file);
    lua_newtable(L); /* the file's _ENV */
    lua_createtable(L, 0, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->builtins_ref);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setupvalue(L, -3, 1);
    lua_insert(L, -2);
    lua_call(L, 0, 1);
    s_seal(L, -2);
    lua_remove(L, -2);
}

void ts_sandbox_compile_file(lua_State *L, const char *file)
{
    s_load(L, file);
    lua_pop(L, 1);
}

/* require(name): loads name.lua from the policies directory once per state. */
static int s_require(lua_State *L)
{
    ts_sandbox_t *self = ts_sandbox_of(L);
    const char *name = luaL_checkstring(L, 1);
    size_t len = strlen(name);
    if (len == 0 || len > 64)
        return luaL_error(L, "require: bad module name");
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return luaL_error(L, "require: module name '%s' may only use letters, digits and _ "
                                 "(modules load from the policies directory only)",
                              name);
    }
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->modules_ref);
    lua_pushvalue(L, 1);
    int t = lua_rawget(L, 2);
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        return luaL_error(L, "require: circular require of '%s'", name);
    if (t != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushboolean(L, 0);
    lua_rawset(L, 2);
    char file[80];
    snprintf(file, sizeof file, "%s.lua", name);
    ts_sandbox_run_file(L, file);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, 2);
    return 1;
}

/* ---- construction ---- */

static const char *const s_base_allowed[] = {
    "assert", "error",  "ipairs",   "next",     "pairs", "pcall", "rawequal",
    "rawlen", "select", "tonumber", "tostring", "type",  NULL,
};

/* Sets builtins[name] = proxy(table at top), popping the table. */
static void s_add_frozen(lua_State *L, int builtins, const char *name)
{
    ts_sandbox_push_readonly(L, -1);
    lua_setfield(L, builtins, name);
    lua_pop(L, 1);
}

static int s_init(lua_State *L)
{
    ts_sandbox_t *self = lua_touserdata(L, 1);
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 1);
    int g = 2, str = 3, tab = 4, math = 5, utf8 = 6, os = 7;

    lua_newtable(L);
    int builtins = lua_gettop(L);
    for (int i = 0; s_base_allowed[i]; i++) {
        lua_getfield(L, g, s_base_allowed[i]);
        lua_setfield(L, builtins, s_base_allowed[i]);
    }
    lua_pushcfunction(L, s_setmetatable);
    lua_setfield(L, builtins, "setmetatable");
    lua_pushcfunction(L, s_getmetatable);
    lua_setfield(L, builtins, "getmetatable");
    lua_pushcfunction(L, s_require);
    lua_setfield(L, builtins, "require");
    lua_pushcfunction(L, s_xpcall);
    lua_setfield(L, builtins, "xpcall");
    /* string.rep and the table functions that loop over a count the caller
     * picks charge their work too (metered.h); unpack is one of them. */
    ts_metered_install(L, str, tab, &s_meter);
    lua_getfield(L, tab, "unpack");
    lua_setfield(L, builtins, "unpack");

    /* string without dump, with budgeted pattern functions (pattern.h);
     * the string metatable indexes the proxy. */
    lua_pushnil(L);
    lua_setfield(L, str, "dump");
    ts_pattern_install(L, str, &s_meter);
    ts_sandbox_push_readonly(L, str);
    lua_pushvalue(L, -1);
    lua_setfield(L, builtins, "string");
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);   /* proxy "" mt */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 3);

    lua_pushvalue(L, tab);
    s_add_frozen(L, builtins, "table");
    lua_pushvalue(L, math);
    s_add_frozen(L, builtins, "math");
    lua_pushvalue(L, utf8);
    s_add_frozen(L, builtins, "utf8");
    lua_createtable(L, 0, 3);
    static const char *const os_allowed[] = {"time", "date", "clock", NULL};
    for (int i = 0; os_allowed[i]; i++) {
        lua_getfield(L, os, os_allowed[i]);
        lua_pushinteger(L, i);
        lua_pushcclosure(L, s_clock_call, 2);
        lua_setfield(L, -2, os_allowed[i]);
    }
    s_add_frozen(L, builtins, "os");
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, s_parse_time);
    lua_setfield(L, -2, "parse_time");
    lua_pushcfunction(L, s_format_time);
    lua_setfield(L, -2, "format_time");
    s_add_frozen(L, builtins, "ts");

    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, s_unknown_global);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, s_readonly_write);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, builtins);
    lua_pushvalue(L, builtins);
    self->builtins_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    self->modules_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

uint64_t ts_sandbox_clock_reads(const ts_sandbox_t *self) { return self->clock_reads; }
void ts_sandbox_note_clock(ts_sandbox_t *self) { self->clock_reads++; }

void ts_sandbox_add_global(lua_State *L, const char *name)
{
    ts_sandbox_t *self = ts_sandbox_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->builtins_ref);
    lua_insert(L, -2);
    lua_pushstring(L, name);
    lua_insert(L, -2);
    lua_rawset(L, -3); /* builtins refuses ordinary writes */
    lua_pop(L, 1);
}

ts_sandbox_t *ts_sandbox_new(const char *dir, size_t mem_cap, long budget, char *err,
                             size_t errlen)
{
    ts_sandbox_t *self = ts_xcalloc(1, sizeof *self);
    self->mem_cap = mem_cap ? mem_cap : TS_SANDBOX_DEFAULT_MEM;
    /* budget < 0: no hook at all, for measuring the hook's cost only. */
    self->budget = budget == 0 ? TS_SANDBOX_DEFAULT_BUDGET : budget;
    self->step = self->budget > 0 && self->budget < 1000 ? (int)self->budget : 1000;
    self->builtins_ref = LUA_NOREF;
    self->modules_ref = LUA_NOREF;
    self->label = "policy";
    self->hook = s_hook;
    size_t dlen = strlen(dir ? dir : "");
    if (!dir || dlen == 0 || dlen >= sizeof self->dir) {
        snprintf(err, errlen, "bad policies directory");
        free(self);
        return NULL;
    }
    memcpy(self->dir, dir, dlen + 1);
    self->L = lua_newstate(s_alloc, self);
    if (!self->L) {
        snprintf(err, errlen, "cannot create a Lua state (memory cap %zu bytes)", self->mem_cap);
        free(self);
        return NULL;
    }
    *(ts_sandbox_t **)lua_getextraspace(self->L) = self;
    lua_atpanic(self->L, s_panic);
    lua_pushcfunction(self->L, s_init);
    lua_pushlightuserdata(self->L, self);
    if (lua_pcall(self->L, 1, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "cannot set up the sandbox: %s",
                 lua_type(self->L, -1) == LUA_TSTRING ? lua_tostring(self->L, -1) : "?");
        ts_sandbox_destroy(&self);
        return NULL;
    }
    lua_settop(self->L, 0);
    /* Policy calls make short-lived garbage (documents, ctx, result lists)
     * beside long-lived policy tables: the generational collector mostly
     * looks at the young objects only (measured: -4 us per validated create). */
    lua_gc(self->L, LUA_GCGEN, 0, 0);
    self->lazy = self->budget >= TS_SANDBOX_LAZY_BUDGET && ts_watch_add(&self->watch, s_arm, self) == 0;
    return self;
}

void ts_sandbox_destroy(ts_sandbox_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ts_sandbox_t *self = *self_p;
    if (self->lazy)
        ts_watch_remove(&self->watch);
    if (self->L)
        lua_close(self->L);
    for (int i = 0; i < POOL_CLASSES; i++)
        while (self->pool[i]) {
            void *p = self->pool[i];
            self->pool[i] = *(void **)p;
            free(p);
        }
    free(self);
    *self_p = NULL;
}

int ts_sandbox_pcall(ts_sandbox_t *self, lua_CFunction f, void *ud, char *err, size_t errlen)
{
    lua_State *L = self->L;
    if (self->in_call) {
        snprintf(err, errlen, "policy state is busy (reentrant call)");
        return -1;
    }
    self->in_call = 1;
    lua_settop(L, 0);
    self->counted = 0;
    self->killed = 0;
    self->mem_killed = 0;
    self->refused = 0;
    if (self->lazy)
        ts_watch_begin(&self->watch);
    else if (self->budget > 0)
        lua_sethook(L, s_hook, LUA_MASKCOUNT, self->step);
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, ud);
    int status = lua_pcall(L, 1, 0, 0);
    if (self->lazy)
        ts_watch_end(&self->watch); /* no signal can arrive after this */
    lua_sethook(L, NULL, 0, 0);
    int rc = 0;
    if (status != LUA_OK) {
        rc = -1;
        if (self->killed) {
            snprintf(err, errlen, "%s: instruction budget exceeded (%ld instructions)",
                     self->label, self->budget);
        } else if (status == LUA_ERRMEM || self->mem_killed) {
            snprintf(err, errlen, "%s: memory cap exceeded (%zu bytes)", self->label,
                     self->mem_cap);
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            snprintf(err, errlen, "%s", lua_tostring(L, -1));
        } else if (lua_type(L, -1) == LUA_TNUMBER) {
            snprintf(err, errlen, "%s: error %g", self->label, (double)lua_tonumber(L, -1));
        } else {
            snprintf(err, errlen, "%s: error object is a %s value", self->label,
                     luaL_typename(L, -1));
        }
        lua_settop(L, 0);
        lua_gc(L, LUA_GCCOLLECT);
    }
    lua_settop(L, 0);
    self->in_call = 0;
    self->mem_killed = 0;
    return rc;
}

lua_State *ts_sandbox_state(ts_sandbox_t *self) { return self->L; }
const char *ts_sandbox_dir(const ts_sandbox_t *self) { return self->dir; }
size_t ts_sandbox_mem_used(const ts_sandbox_t *self) { return self->mem_used; }
size_t ts_sandbox_mem_cap(const ts_sandbox_t *self) { return self->mem_cap; }
long ts_sandbox_instructions(const ts_sandbox_t *self) { return self->counted; }
void ts_sandbox_set_label(ts_sandbox_t *self, const char *label)
{
    self->label = label ? label : "policy";
}
const char *ts_sandbox_label(const ts_sandbox_t *self) { return self->label; }

void ts_sandbox_budget_reset(ts_sandbox_t *self)
{
    if (!self->killed)
        self->counted = 0;
}
