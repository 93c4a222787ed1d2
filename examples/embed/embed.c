/* embed.c: a C application that embeds Lua 5.4 and spark.
 *
 *   embed [script.lua [lua_dir]]
 *
 * - The spark C module is linked into this binary (the csrc/ sources are
 * compiled with it) and registered in package.preload["spark.core"], so
 *   `require "spark.core"` needs no .so.
 * - spark.lua is found through package.path: lua_dir (default: the
 *   checkout's lua/ directory, fixed at compile time as SPARK_LUA_DIR).
 * - The script (default: EMBED_SCRIPT, this directory's script.lua) runs in
 *   a coroutine. It makes its client with `sleep = host.sleep`, a C sleep
 *   hook that records each call and yields back to this host: during a
 *   Retry-After the host keeps control, does its own work (prints a tick)
 *   and waits with clock_nanosleep until the wake-up time, then resumes the
 *   script. Resuming it with no values tells spark the whole wait was slept.
 *
 * The token and base URL come from WEBEX_ACCESS_TOKEN (or
 * SPARK_ACCESS_TOKEN) and SPARK_BASE_URL, as for any spark client.
 * Exit status: 0, or 1 when the script failed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef SPARK_LUA_DIR
#define SPARK_LUA_DIR "lua"
#endif
#ifndef EMBED_SCRIPT
#define EMBED_SCRIPT "examples/embed/script.lua"
#endif

/* The spark C module, compiled into this binary (csrc/core.c). */
int luaopen_spark_core(lua_State *L);

#define MAX_CALLS 64
#define TICK_NS 500000000L /* the host's own work: once every 500 ms */

/* What the host knows: the sleep hook's calls, and the pending wait. */
typedef struct {
  struct {
    double seconds;
    char reason[32];
  } calls[MAX_CALLS];
  int ncalls;
  int waiting;          /* the script yielded from host.sleep */
  struct timespec wake; /* CLOCK_MONOTONIC time to resume it at */
} host_state;

static host_state *state_of(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static double ts_seconds(const struct timespec *ts) {
  return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

static void ts_add(struct timespec *ts, double seconds) {
  time_t whole = (time_t)seconds;
  ts->tv_sec += whole;
  ts->tv_nsec += (long)((seconds - (double)whole) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* host.sleep(seconds, info): spark's sleep hook. Records the call, sets
 * the wake-up time and yields to the host. The host resumes the script
 * with no values once the time has come: the hook then returns nothing,
 * which tells spark that the whole wait was slept. */
static int host_sleep(lua_State *L) {
  host_state *hs = state_of(L);
  lua_Number seconds = luaL_checknumber(L, 1);
  const char *reason = "?";
  luaL_argcheck(L, seconds >= 0 && seconds < 1e9, 1, "seconds out of range");
  if (lua_type(L, 2) == LUA_TTABLE &&
      lua_getfield(L, 2, "reason") == LUA_TSTRING)
    reason = lua_tostring(L, -1);
  if (hs->ncalls < MAX_CALLS) {
    hs->calls[hs->ncalls].seconds = seconds;
    snprintf(hs->calls[hs->ncalls].reason, sizeof hs->calls[0].reason, "%s",
             reason);
  }
  hs->ncalls++;
  if (!lua_isyieldable(L))
    return luaL_error(L, "host.sleep: run the script in the host's coroutine");
  clock_gettime(CLOCK_MONOTONIC, &hs->wake);
  ts_add(&hs->wake, seconds);
  hs->waiting = 1;
  printf("host: the script yielded: sleep %g s (%s)\n", (double)seconds,
         reason);
  return lua_yield(L, 0); /* no continuation: resuming returns from here */
}

/* package.preload.host: the module the script requires. */
static int open_host(lua_State *L) {
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, host_sleep, 1);
  lua_setfield(L, -2, "sleep");
  return 1;
}

/* The host's loop while the script waits: its own work, then
 * clock_nanosleep to the next tick or the wake-up time, never past it. */
static void host_wait(host_state *hs) {
  struct timespec now, next;
  for (;;) {
    double left;
    clock_gettime(CLOCK_MONOTONIC, &now);
    left = ts_seconds(&hs->wake) - ts_seconds(&now);
    if (left <= 0)
      break;
    printf("host: tick while the script waits (%.0f ms left)\n", left * 1e3);
    fflush(stdout);
    next = now;
    ts_add(&next, (double)TICK_NS / 1e9);
    if (ts_seconds(&next) > ts_seconds(&hs->wake))
      next = hs->wake;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) ==
           EINTR)
      ;
  }
  hs->waiting = 0;
}

/* Registers a C function under package.preload[name], with `hs` as its
 * upvalue when given. */
static void preload(lua_State *L, const char *name, lua_CFunction f,
                    host_state *hs) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  if (hs != NULL) {
    lua_pushlightuserdata(L, hs);
    lua_pushcclosure(L, f, 1);
  } else {
    lua_pushcfunction(L, f);
  }
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

/* package.path = lua_dir/?.lua;lua_dir/?/init.lua;<the default> */
static void set_path(lua_State *L, const char *lua_dir) {
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", lua_dir, lua_dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

static int run(lua_State *L, host_state *hs, const char *script) {
  lua_State *co = lua_newthread(L); /* anchored on L's stack */
  int status, nres;
  if (luaL_loadfile(co, script) != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(co, -1));
    return 1;
  }
  printf("host: running %s in a coroutine\n", script);
  status = lua_resume(co, L, 0, &nres);
  while (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (hs->waiting) {
      host_wait(hs);
      printf("host: resuming the script\n");
    } else {
      printf("host: the script yielded without host.sleep; resuming it\n");
    }
    fflush(stdout);
    status = lua_resume(co, L, 0, &nres);
  }
  if (status != LUA_OK) {
    const char *msg = lua_tostring(co, -1);
    luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
    fprintf(stderr, "host: the script failed: %s\n", lua_tostring(L, -1));
    return 1;
  }
  printf("host: the script finished\n");
  return 0;
}

int main(int argc, char **argv) {
  static host_state hs; /* large; zeroed */
  const char *script = argc > 1 ? argv[1] : EMBED_SCRIPT;
  const char *lua_dir = argc > 2 ? argv[2] : SPARK_LUA_DIR;
  lua_State *L;
  int rc, i;

  if (argc > 3) {
    fprintf(stderr, "usage: %s [script.lua [lua_dir]]\n", argv[0]);
    return 2;
  }
  L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "host: cannot create a Lua state\n");
    return 1;
  }
  luaL_openlibs(L);
  preload(L, "spark.core", luaopen_spark_core, NULL); /* the static module */
  preload(L, "host", open_host, &hs);
  set_path(L, lua_dir);
  setvbuf(stdout, NULL, _IOLBF, 0);

  rc = run(L, &hs, script);

  printf("host: sleep hook called %d time(s)%s", hs.ncalls,
         hs.ncalls > 0 ? ":" : "");
  for (i = 0; i < hs.ncalls && i < MAX_CALLS; i++)
    printf("%s %g s (%s)", i > 0 ? "," : "", hs.calls[i].seconds,
           hs.calls[i].reason);
  printf("\n");
  lua_close(L); /* closes the script's client, then curl */
  return rc;
}
