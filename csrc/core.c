/* core.c: luaopen_spark_core, the Lua binding. The client userdata, the
 * yieldable request loop (gate, attempt, retry policy, sleep hook), URL
 * building with curl's URL API, and spark.sleep. The only file that knows
 * both Lua and curl. */
#define _GNU_SOURCE /* dladdr */
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>

#include "link.h"
#include "pace.h"
#include "ratelimit.h"
#include "retry.h"
#include "transport.h"

#define CLIENT_MT "spark.client"
#define CALL_MT "spark.call"

/* user values of a client userdata */
#define UV_SLEEP 1
#define UV_ON_RETRY 2
#define UV_BASE_URL 3
#define UV_CLOCK 4  /* test seam: monotonic seconds, or nil */
#define UV_RANDOM 5 /* test seam: uniform [0, 1), or nil */
#define UV_COUNT 5

int luaopen_spark_core(lua_State *L);

typedef struct {
  spark_transport t;
  int open;
  double gate_until; /* monotonic seconds; no request before it */
  double passed;     /* latest monotonic time a finished wait ran to, by the
                        sleep hook's word (hooks may keep their own time) */
  spark_policy policy;
  long timeout_ms, connect_timeout_ms;
  size_t max_body;
  int allow_insecure;
  double deadline; /* seconds per call, retries included; 0: none */
  double budget;   /* retry budget tokens (see retry.h) */
  spark_pace pace;
  uint64_t rng; /* xorshift64* state, for the backoff's jitter */
} client;

/* Uniform in [0, 1). */
static double next_random(client *c) {
  uint64_t x = c->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  c->rng = x;
  return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

/* ---- time ------------------------------------------------------------ */

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double epoch_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double parse_http_date(const char *s) {
  time_t t = curl_getdate(s, NULL);
  return t == (time_t)-1 ? -1.0 : (double)t;
}

/* spark.sleep(seconds): sleeps on CLOCK_MONOTONIC to an absolute deadline.
 * Returns the seconds not slept when a signal interrupted it, else 0. */
static int l_sleep(lua_State *L) {
  lua_Number s = lua_tonumber(L, 1);
  struct timespec deadline;
  double end;
  int rc;
  if (lua_type(L, 1) != LUA_TNUMBER || !(s >= 0))
    return luaL_error(L,
                      "spark.sleep: bad argument 'seconds' (a non-negative "
                      "number expected, got %s)",
                      lua_type(L, 1) == LUA_TNUMBER ? "a negative or NaN one"
                                                    : luaL_typename(L, 1));
  if (s > 1e9)
    s = 1e9;
  end = mono_now() + s;
  deadline.tv_sec = (time_t)end;
  deadline.tv_nsec = (long)((end - (double)deadline.tv_sec) * 1e9);
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  do {
    rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL);
  } while (rc != 0 && rc != EINTR);
  if (rc == EINTR) {
    double left = end - mono_now();
    lua_pushnumber(L, left > 0 ? left : 0);
  } else {
    lua_pushinteger(L, 0);
  }
  return 1;
}

static int l_monotime(lua_State *L) {
  lua_pushnumber(L, mono_now());
  return 1;
}

/* ---- URLs ------------------------------------------------------------ */

static int is_loopback(const char *host) {
  size_t n = strlen(host);
  if (strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 ||
      strcmp(host, "::1") == 0)
    return 1;
  if (n > 10 && strcmp(host + n - 10, ".localhost") == 0)
    return 1;
  return strncmp(host, "127.", 4) == 0 &&
         strspn(host + 4, "0123456789.") == n - 4;
}

/* Checks that `u` may carry the token: https, or http to a loopback host
 * (or anywhere when allow_insecure). Returns NULL or an error message. */
static const char *check_scheme(CURLU *u, int allow_insecure) {
  char *scheme = NULL, *host = NULL;
  const char *err = NULL;
  if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
    err = "URL has no scheme or host";
  else if (strcmp(scheme, "https") != 0 &&
           !(strcmp(scheme, "http") == 0 &&
             (allow_insecure || is_loopback(host))))
    err = "URL must use https (plain http only to a loopback host)";
  curl_free(scheme);
  curl_free(host);
  return err;
}

/* curl allocations owned by a userdata on the Lua stack, so that a Lua
 * error (a metamethod, out of memory) between getting and freeing them
 * leaks nothing: __gc frees what is left. */
#define CURLBOX_MT "spark.curlbox"

typedef struct {
  CURLU *u;
  char *s;
} curlbox;

static int curlbox_gc(lua_State *L) {
  curlbox *b = luaL_checkudata(L, 1, CURLBOX_MT);
  curl_url_cleanup(b->u);
  curl_free(b->s);
  b->u = NULL;
  b->s = NULL;
  return 0;
}

/* Pushes a box holding a new CURLU. */
static curlbox *push_curlbox(lua_State *L) {
  curlbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->u = NULL;
  b->s = NULL;
  luaL_setmetatable(L, CURLBOX_MT);
  b->u = curl_url();
  if (b->u == NULL)
    luaL_error(L, "out of memory");
  return b;
}

/* Pushes s escaped by curl (RFC 3986 unreserved characters kept). */
static void push_escaped(lua_State *L, curlbox *b, const char *s, size_t len) {
  b->s = curl_easy_escape(NULL, s, (int)len);
  if (b->s == NULL)
    luaL_error(L, "out of memory");
  lua_pushstring(L, b->s);
  curl_free(b->s);
  b->s = NULL;
}

/* core.url(base, path, query, allow_insecure) -> url | nil, message
 * `query` is an array of {name, value} pairs; each name and value is
 * escaped by curl and appended to the URL's query with curl's URL API. */
static int l_url(lua_State *L) {
  size_t blen;
  const char *base = luaL_checklstring(L, 1, &blen);
  const char *path = luaL_checkstring(L, 2);
  int allow_insecure = lua_toboolean(L, 4);
  curlbox *box;
  CURLUcode uc;
  const char *err = NULL;
  lua_Integer i, n;
  luaL_Buffer b;

  if (!lua_isnoneornil(L, 3))
    luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 4);
  box = push_curlbox(L); /* index 5 */
  /* base without its trailing slashes, then the path */
  while (blen > 0 && base[blen - 1] == '/')
    blen--;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, base, blen);
  if (path[0] != '\0' && path[0] != '/')
    luaL_addchar(&b, '/');
  luaL_addstring(&b, path);
  luaL_pushresult(&b); /* index 6 */
  uc = curl_url_set(box->u, CURLUPART_URL, lua_tostring(L, 6), 0);
  if (uc != CURLUE_OK)
    err = curl_url_strerror(uc);
  else
    err = check_scheme(box->u, allow_insecure);
  n = lua_isnil(L, 3) ? 0 : (lua_Integer)luaL_len(L, 3);
  for (i = 1; err == NULL && i <= n; i++) {
    size_t klen, vlen;
    const char *k, *v;
    lua_geti(L, 3, i);
    lua_geti(L, -1, 1);
    lua_geti(L, -2, 2);
    k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
    v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vlen) : NULL;
    if (k == NULL || v == NULL) {
      err = "query pairs must be {name, value} strings";
    } else if (strlen(k) != klen || strlen(v) != vlen) {
      err = "query names and values must not contain NUL bytes";
    } else {
      push_escaped(L, box, k, klen);
      lua_pushliteral(L, "=");
      push_escaped(L, box, v, vlen);
      lua_concat(L, 3);
      uc = curl_url_set(box->u, CURLUPART_QUERY, lua_tostring(L, -1),
                        CURLU_APPENDQUERY);
      if (uc != CURLUE_OK)
        err = curl_url_strerror(uc);
      lua_pop(L, 1);
    }
    lua_pop(L, 3);
  }
  if (err == NULL &&
      curl_url_get(box->u, CURLUPART_URL, &box->s, 0) != CURLUE_OK)
    err = "cannot build the URL";
  if (err != NULL) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushstring(L, box->s);
  return 1; /* the box frees the rest when collected */
}

/* core.escape(s) -> s percent-encoded for a URL path segment (curl). */
static int l_escape(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char *e = curl_easy_escape(NULL, s, (int)len);
  if (e == NULL)
    return luaL_error(L, "out of memory");
  lua_pushstring(L, e);
  curl_free(e);
  return 1;
}

/* core.url_parts(url) -> {scheme=, host=, port=, path=, query=} | nil, msg
 * parsed by curl's URL API; port is the scheme's default when absent and
 * query is the raw query string or nil. */
static int l_url_parts(lua_State *L) {
  static const struct {
    const char *name;
    CURLUPart part;
    unsigned flags;
  } parts[] = {{"scheme", CURLUPART_SCHEME, 0},
               {"host", CURLUPART_HOST, 0},
               {"port", CURLUPART_PORT, CURLU_DEFAULT_PORT},
               {"path", CURLUPART_PATH, 0},
               {"query", CURLUPART_QUERY, 0}};
  const char *url = luaL_checkstring(L, 1);
  curlbox *box = push_curlbox(L);
  CURLUcode uc = curl_url_set(box->u, CURLUPART_URL, url, 0);
  size_t i;
  if (uc != CURLUE_OK) {
    luaL_pushfail(L);
    lua_pushstring(L, curl_url_strerror(uc));
    return 2;
  }
  lua_createtable(L, 0, 5);
  for (i = 0; i < sizeof parts / sizeof *parts; i++) {
    if (curl_url_get(box->u, parts[i].part, &box->s, parts[i].flags) ==
        CURLUE_OK) {
      lua_pushstring(L, box->s);
      lua_setfield(L, -2, parts[i].name);
    }
    curl_free(box->s);
    box->s = NULL;
  }
  return 1;
}

/* Whether u[0..n) is an absolute URL ("scheme://...") without spaces or
 * control characters. */
static int is_absolute(const char *u, size_t n) {
  size_t i;
  const char *sep;
  if (n < 4 || !isalpha((unsigned char)u[0]))
    return 0;
  for (i = 0; i < n; i++)
    if ((unsigned char)u[i] <= ' ' || u[i] == 0x7f)
      return 0;
  sep = strstr(u, "://"); /* u is a Lua string: NUL-terminated */
  if (sep == NULL || (size_t)(sep - u) >= n)
    return 0;
  for (i = 1; u + i < sep; i++)
    if (!isalnum((unsigned char)u[i]) && u[i] != '+' && u[i] != '-' &&
        u[i] != '.')
      return 0;
  return 1;
}

/* core.link_next(value, request_url) -> the rel="next" URI of a Link
 * field, resolved against the request's URL (curl's URL API), or nil */
static int l_link_next(lua_State *L) {
  size_t len, start, ulen;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *base = luaL_checkstring(L, 2);
  curlbox *box;
  if (!spark_link_find(s, len, "next", &start, &ulen))
    return 0;
  lua_pushlstring(L, s + start, ulen);
  if (is_absolute(lua_tostring(L, -1), ulen))
    return 1; /* nothing to resolve (get_next checks its origin) */
  box = push_curlbox(L);
  if (curl_url_set(box->u, CURLUPART_URL, base, 0) != CURLUE_OK ||
      curl_url_set(box->u, CURLUPART_URL, lua_tostring(L, -2), 0) !=
          CURLUE_OK ||
      curl_url_get(box->u, CURLUPART_URL, &box->s, 0) != CURLUE_OK)
    return 0; /* not a usable URL: no next page */
  lua_pushstring(L, box->s);
  return 1;
}

/* Turns integral floats in table `idx` (and its subtables) into integers:
 * lua-cjson decodes every JSON number as a float. */
static void integers(lua_State *L, int idx, int depth) {
  if (depth > 1000) /* deeper than cjson decodes */
    return;
  luaL_checkstack(L, 4, "JSON too deeply nested");
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int t = lua_type(L, -1);
    if (t == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      lua_Number n = lua_tonumber(L, -1);
      lua_Integer i;
      if (n == floor(n) && lua_numbertointeger(n, &i)) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, i);
        lua_rawset(L, idx); /* an existing key: allowed during lua_next */
      }
    } else if (t == LUA_TTABLE) {
      integers(L, lua_absindex(L, -1), depth + 1);
    }
    lua_pop(L, 1);
  }
}

/* Whether JSON text s[0..n) may hold a number: a '-' or a digit outside
 * its strings. Strings are skipped with memchr, so a page of strings (a
 * rooms page has no number at all) costs far less than walking it. */
static int json_has_number(const char *s, size_t n) {
  const char *p = s, *end = s + n;
  while (p < end) {
    const char *q = memchr(p, '"', (size_t)(end - p));
    const char *stop = q ? q : end;
    for (; p < stop; p++)
      if (*p == '-' || (*p >= '0' && *p <= '9'))
        return 1;
    if (q == NULL)
      return 0;
    /* skip the string: to the next quote not escaped by a backslash */
    for (p = q + 1;;) {
      const char *close = memchr(p, '"', (size_t)(end - p));
      const char *b = close;
      if (close == NULL)
        return 1; /* broken text: let the walk decide */
      while (b > p && b[-1] == '\\')
        b--;
      p = close + 1;
      if ((close - b) % 2 == 0)
        break;
    }
  }
  return 0;
}

/* core.integers(v [, text]) -> v, with integral floats made integers (in
 * place). With the JSON text v was decoded from, a text without numbers is
 * not walked at all. */
static int l_integers(lua_State *L) {
  size_t n;
  const char *text = luaL_optlstring(L, 2, NULL, &n);
  if (lua_type(L, 1) == LUA_TTABLE &&
      (text == NULL || json_has_number(text, n)))
    integers(L, 1, 0);
  lua_settop(L, 1);
  return 1;
}

/* ---- the client userdata --------------------------------------------- */

static client *check_client(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, CLIENT_MT);
}

static client *check_open(lua_State *L, int idx) {
  client *c = check_client(L, idx);
  if (!c->open)
    luaL_error(L, "spark: attempt to use a closed client");
  return c;
}

static lua_Number opt_number_field(lua_State *L, int t, const char *k,
                                   lua_Number dflt) {
  lua_Number v;
  int isnum;
  if (lua_getfield(L, t, k) == LUA_TNIL) {
    lua_pop(L, 1);
    return dflt;
  }
  v = lua_tonumberx(L, -1, &isnum);
  if (!isnum || v != v || v < 0)
    luaL_error(L, "spark: option '%s' must be a non-negative number", k);
  lua_pop(L, 1);
  return v > 1e12 ? 1e12 : v; /* the facade bounds them; casts stay defined */
}

static long to_ms(lua_Number s) {
  lua_Number ms = ceil(s * 1000.0);
  return ms > (lua_Number)0x7fffffff ? 0x7fffffffL : (long)ms;
}

/* core.new{token=, base_url=, sleep=, on_retry=, max_rate_limited=,
 *          max_wait=, timeout=, connect_timeout=, max_body=,
 *          allow_insecure=, ca_file=} -> client
 * The facade (spark.lua) validates the options and supplies defaults. */
static int l_new(lua_State *L) {
  client *c;
  const char *token, *ca_file = NULL;
  luaL_checktype(L, 1, LUA_TTABLE);
  c = lua_newuserdatauv(L, sizeof *c, UV_COUNT);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, CLIENT_MT);

  if (lua_getfield(L, 1, "token") != LUA_TSTRING)
    return luaL_error(L, "spark: option 'token' must be a string");
  token = lua_tostring(L, -1);
  if (lua_getfield(L, 1, "ca_file") == LUA_TSTRING)
    ca_file = lua_tostring(L, -1);
  c->policy.max_rate_limited =
      (int)opt_number_field(L, 1, "max_rate_limited", 10);
  c->policy.max_retries = (int)opt_number_field(L, 1, "max_retries", 3);
  c->policy.max_wait = opt_number_field(L, 1, "max_wait", 300);
  c->policy.backoff_base = 0.5;
  c->policy.backoff_cap = 30;
  {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
             (uint64_t)(uintptr_t)c;
    if (c->rng == 0)
      c->rng = 0x9E3779B97F4A7C15ULL;
  }
  c->timeout_ms = to_ms(opt_number_field(L, 1, "timeout", 30));
  c->connect_timeout_ms = to_ms(opt_number_field(L, 1, "connect_timeout", 10));
  c->max_body = (size_t)opt_number_field(L, 1, "max_body", 16 * 1024 * 1024);
  lua_getfield(L, 1, "allow_insecure");
  c->allow_insecure = lua_toboolean(L, -1);
  lua_pop(L, 1);
  c->deadline = opt_number_field(L, 1, "deadline", 0);
  c->budget = SPARK_BUDGET_CAPACITY;
  if (lua_getfield(L, 1, "rate") == LUA_TSTRING) {
    if (strcmp(lua_tostring(L, -1), "adaptive") != 0)
      return luaL_error(L, "spark: option 'rate' must be a number or "
                           "\"adaptive\"");
    spark_pace_init(&c->pace, SPARK_PACE_ADAPTIVE, 0, 1);
  } else {
    double rate = opt_number_field(L, 1, "rate", 0);
    spark_pace_init(&c->pace, rate > 0 ? SPARK_PACE_FIXED : SPARK_PACE_NONE,
                    rate, opt_number_field(L, 1, "burst", 1));
  }
  lua_pop(L, 1);

  lua_getfield(L, 1, "sleep");
  lua_setiuservalue(L, -4, UV_SLEEP);
  lua_getfield(L, 1, "on_retry");
  lua_setiuservalue(L, -4, UV_ON_RETRY);
  lua_getfield(L, 1, "base_url");
  lua_setiuservalue(L, -4, UV_BASE_URL);
  lua_getfield(L, 1, "clock");
  lua_setiuservalue(L, -4, UV_CLOCK);
  lua_getfield(L, 1, "random");
  lua_setiuservalue(L, -4, UV_RANDOM);

  {
    const char *err = NULL;
    CURLU *u;
    lua_getiuservalue(L, -3, UV_BASE_URL);
    if (!lua_isstring(L, -1))
      return luaL_error(L, "spark: option 'base_url' must be a string");
    u = curl_url();
    if (u == NULL)
      return luaL_error(L, "out of memory");
    err = curl_url_set(u, CURLUPART_URL, lua_tostring(L, -1), 0) != CURLUE_OK
              ? "malformed URL"
              : check_scheme(u, c->allow_insecure);
    curl_url_cleanup(u);
    lua_pop(L, 1);
    if (err != NULL)
      return luaL_error(L, "spark: option 'base_url': %s", err);
  }
  if (spark_transport_open(&c->t, token, ca_file) != 0)
    return luaL_error(L, "spark: cannot create a curl handle");
  c->open = 1;
  lua_pop(L, 2); /* token, ca_file */
  return 1;
}

/* close, __gc and __close: idempotent */
static int l_close(lua_State *L) {
  client *c = check_client(L, 1);
  if (c->open) {
    spark_transport_close(&c->t);
    c->open = 0;
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  client *c = check_client(L, 1);
  if (!c->open) {
    lua_pushliteral(L, "spark.client (closed)");
    return 1;
  }
  lua_getiuservalue(L, 1, UV_BASE_URL);
  lua_pushfstring(L, "spark.client (%s)",
                  lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
  return 1;
}

static int l_base_url(lua_State *L) {
  check_client(L, 1);
  lua_getiuservalue(L, 1, UV_BASE_URL);
  return 1;
}

static int l_is_closed(lua_State *L) {
  lua_pushboolean(L, !check_client(L, 1)->open);
  return 1;
}

/* ---- the request loop ------------------------------------------------- */

/* Stack of a request: 1 client, 2 method, 3 url, 4 body, 5 content type,
 * 6 call options, then the per-call state, the last response (a table, or
 * nil) and the list of retries. Hook calls push above them. All per-call
 * state lives there, never in C locals across a hook call, since hooks may
 * yield. */
#define IDX_OPTS 6
#define IDX_CALL 7
#define IDX_RESP 8
#define IDX_RETRIES 9

typedef enum {
  PH_GATE,         /* deadline, gate and pacing, then send */
  PH_ATTEMPT,      /* send, classify */
  PH_ON_RETRY,     /* call on_retry(info) */
  PH_ON_RETRY_RET, /* on_retry returned */
  PH_SLEEP,        /* call sleep(wait_left, info) */
  PH_SLEEP_RET     /* sleep returned */
} phase;

typedef struct {
  phase ph;
  int attempts;
  int idempotent;
  spark_call_counts counts; /* waits that retry.c budgets */
  double paced;             /* seconds waited for pacing */
  double deadline_at;       /* clock time; HUGE_VAL: none */
  double wait;              /* the wait in progress, whole */
  double wait_left;         /* of it, still to sleep */
  double target;            /* clock time the wait in progress ends at */
  double cost;              /* budget tokens the retry in progress took */
  const char *reason;
  double retry_after; /* of the last answer; < 0 when none */
} call_state;

/* Pushes v as an integer when it is one, so that users see 2, not 2.0. */
static void push_num(lua_State *L, lua_Number v) {
  if (v == floor(v) && fabs(v) < 9007199254740992.0)
    lua_pushinteger(L, (lua_Integer)v);
  else
    lua_pushnumber(L, v);
}

static void set_num(lua_State *L, const char *k, lua_Number v) {
  push_num(L, v);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* Calls the client's seam function in user value `uv`, if any, and returns
 * its number; else returns `dflt`. Seams must not yield. */
static double seam(lua_State *L, int uv, const char *name, double dflt) {
  double v;
  int isnum;
  if (lua_getiuservalue(L, 1, uv) == LUA_TNIL) {
    lua_pop(L, 1);
    return dflt;
  }
  lua_call(L, 0, 1);
  v = lua_tonumberx(L, -1, &isnum);
  if (!isnum || v != v)
    luaL_error(L, "spark: the %s function returned a %s (expected a number)",
               name, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* The client's clock: monotonic seconds, or the `clock` seam's. */
static double clock_now(lua_State *L) {
  return seam(L, UV_CLOCK, "clock", mono_now());
}

/* Uniform in [0, 1): the `random` seam's, or the client's generator. */
static double random_draw(lua_State *L, client *c) {
  double r = seam(L, UV_RANDOM, "random", next_random(c));
  if (r < 0 || r >= 1)
    luaL_error(L, "spark: the random function returned %f (expected [0, 1))",
               r);
  return r;
}

/* Pushes the info table given to hooks. */
static void push_info(lua_State *L, const client *c, const call_state *cs) {
  lua_createtable(L, 0, 8);
  set_str(L, "reason", cs->reason);
  set_int(L, "attempt", cs->attempts);
  set_num(L, "delay", cs->wait);
  set_num(L, "budget", c->budget);
  if (cs->retry_after >= 0)
    set_num(L, "retry_after", cs->retry_after);
  if (lua_istable(L, IDX_RESP)) {
    lua_getfield(L, IDX_RESP, "status");
    lua_setfield(L, -2, "status");
    lua_getfield(L, IDX_RESP, "tracking_id");
    lua_setfield(L, -2, "tracking_id");
    lua_getfield(L, IDX_RESP, "message"); /* a transport failure's */
    lua_setfield(L, -2, "error");
  }
}

static const char *header_lookup(const void *ud, const char *name) {
  return spark_transport_header(ud, name, 0);
}

/* Pushes {limit=, remaining=, reset=, window=} from rl. */
static void push_ratelimit(lua_State *L, const spark_ratelimit *rl) {
  lua_createtable(L, 0, 4);
  if (rl->has_limit)
    set_num(L, "limit", rl->limit);
  if (rl->has_remaining)
    set_num(L, "remaining", rl->remaining);
  if (rl->has_reset)
    set_num(L, "reset", rl->reset);
  if (rl->has_window)
    set_num(L, "window", rl->window);
}

/* Makes the response of the last attempt the table at IDX_RESP:
 * {status=, headers={lower-case name = value, repeats joined by ", "},
 *  body=, tracking_id=, rate_limit=} */
static void store_response(lua_State *L, client *c, long status,
                           const spark_ratelimit *rl) {
  size_t i;
  spark_transport *t = &c->t;
  const char *tid;
  lua_createtable(L, 0, 8);
  set_int(L, "status", status);
  lua_createtable(L, 0, (int)t->nhdrs);
  for (i = 0; i < t->nhdrs; i++) {
    const spark_header *h = &t->hdrs[i];
    luaL_Buffer b;
    size_t k;
    char *p = luaL_buffinitsize(L, &b, h->name_len);
    for (k = 0; k < h->name_len; k++) {
      char ch = t->hbuf[h->name + k];
      p[k] = (char)tolower((unsigned char)ch);
    }
    luaL_pushresultsize(&b, h->name_len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, t->hbuf + h->value, h->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, t->hbuf + h->value, h->value_len);
    }
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, t->body, t->body_len);
  lua_setfield(L, -2, "body");
  tid = spark_transport_header(t, "TrackingID", 0);
  if (tid != NULL)
    set_str(L, "tracking_id", tid);
  if (rl != NULL) {
    push_ratelimit(L, rl);
    lua_setfield(L, -2, "rate_limit");
  }
  lua_replace(L, IDX_RESP);
}

/* Retry-After of the last response: the largest usable value of all its
 * Retry-After fields. Returns 0 when there is none. */
static int retry_after_of(const spark_transport *t, double *seconds) {
  const char *v, *date = spark_transport_header(t, "Date", 0);
  double best = -1, now = epoch_now(), s;
  size_t n;
  for (n = 0; (v = spark_transport_header(t, "Retry-After", n)) != NULL; n++)
    if (spark_retry_after_parse(v, date, now, parse_http_date, &s) && s > best)
      best = s;
  *seconds = best;
  return best >= 0;
}

/* Finishes the call: returns the result table (the last response, or a new
 * one) with attempts, waited, budget, retries and, on failure,
 * kind/message; retry_after when the last answer had one. */
static int finish(lua_State *L, const client *c, call_state *cs,
                  const char *kind, const char *message) {
  if (!lua_istable(L, IDX_RESP)) {
    lua_createtable(L, 0, 8);
    lua_replace(L, IDX_RESP);
  }
  lua_pushvalue(L, IDX_RETRIES);
  lua_setfield(L, IDX_RESP, "retries");
  lua_settop(L, IDX_RESP);
  set_int(L, "attempts", cs->attempts);
  set_num(L, "waited", cs->counts.waited + cs->paced);
  set_num(L, "budget", c->budget);
  if (cs->retry_after >= 0)
    set_num(L, "retry_after", cs->retry_after);
  if (kind != NULL) {
    set_str(L, "kind", kind);
    set_str(L, "message", message);
  }
  return 1;
}

/* Starts a wait of `delay` seconds ending at clock time `target`. */
static void begin_wait(call_state *cs, double delay, double target,
                       const char *reason) {
  cs->wait = cs->wait_left = delay;
  cs->target = target;
  cs->reason = reason;
}

static int request_k(lua_State *L, int status, lua_KContext ctx);

/* Before an attempt: the deadline, the gate, then pacing. */
static int step_gate(lua_State *L, client *c, call_state *cs) {
  double now = clock_now(L);
  double from = now > c->passed ? now : c->passed;
  double delay;
  cs->counts.time_left = cs->deadline_at - from;
  if (cs->counts.time_left <= 0)
    return finish(L, c, cs, "timeout",
                  "deadline reached before the next "
                  "attempt");
  if (c->gate_until > from) {
    spark_decision d;
    delay = c->gate_until - from;
    d = spark_gate_decide(&c->policy, &cs->counts, delay);
    if (d.action == SPARK_FAIL) {
      cs->retry_after = delay;
      return finish(L, c, cs, d.kind, d.message);
    }
    begin_wait(cs, delay, c->gate_until, d.reason);
    cs->ph = PH_SLEEP;
    return 0;
  }
  delay = spark_pace_delay(&c->pace, from);
  if (delay > 0) {
    if (delay > cs->counts.time_left) {
      cs->retry_after = delay;
      return finish(L, c, cs, "rate_limited",
                    "rate limited: the pacing "
                    "wait ends past the deadline");
    }
    begin_wait(cs, delay, from + delay, "pacing");
    cs->ph = PH_SLEEP;
    return 0;
  }
  cs->ph = PH_ATTEMPT;
  return 0;
}

/* One attempt, and the decision on what follows it. */
static int step_attempt(lua_State *L, client *c, call_state *cs) {
  spark_request rq;
  spark_result r;
  spark_attempt a;
  spark_decision d;
  spark_ratelimit rl;
  double now = clock_now(L), left;
  if (c->passed > now)
    now = c->passed;
  rq.method = lua_tostring(L, 2);
  rq.url = lua_tostring(L, 3);
  rq.body = lua_tolstring(L, 4, &rq.body_len);
  rq.content_type = lua_tostring(L, 5);
  rq.timeout_ms = c->timeout_ms;
  left = cs->deadline_at - now;
  if (left < HUGE_VAL && to_ms(left) < rq.timeout_ms)
    rq.timeout_ms = to_ms(left) > 0 ? to_ms(left) : 1;
  rq.connect_timeout_ms = c->connect_timeout_ms < rq.timeout_ms
                              ? c->connect_timeout_ms
                              : rq.timeout_ms;
  rq.max_body = c->max_body;
  cs->attempts++;
  cs->retry_after = -1;
  spark_pace_sent(&c->pace, now);
  r = spark_transport_perform(&c->t, &rq);
  now = clock_now(L);
  if (c->passed > now)
    now = c->passed;

  memset(&a, 0, sizeof a);
  a.idempotent = cs->idempotent;
  a.budget = c->budget;
  if (r.kind != NULL || r.status >= 500 || r.status == 423)
    a.random = random_draw(L, c); /* a backoff may follow */
  if (r.kind != NULL) {
    /* keep the failure on the stack: another call may reuse the
     * transport's message buffer while this one sleeps */
    lua_createtable(L, 0, 8);
    set_str(L, "kind", r.kind);
    set_str(L, "message", r.message);
    lua_replace(L, IDX_RESP);
    a.failure = r.kind;
    a.retryable = r.retryable;
    a.sent = r.sent;
  } else {
    int has_rl = spark_ratelimit_parse(&rl, header_lookup, &c->t, epoch_now());
    store_response(L, c, r.status, has_rl ? &rl : NULL);
    spark_pace_answer(&c->pace, now, r.status == 429, has_rl ? &rl : NULL);
    a.status = r.status;
    a.has_retry_after = retry_after_of(&c->t, &a.retry_after);
    if (a.has_retry_after)
      cs->retry_after = a.retry_after;
    else if (r.status == 429)
      cs->retry_after = SPARK_RETRY_AFTER_DEFAULT;
    if (r.status == 429) {
      /* the gate: nothing more on this client before Retry-After passed */
      double until = now + cs->retry_after;
      if (until > c->gate_until)
        c->gate_until = until;
    }
  }
  cs->counts.time_left = cs->deadline_at - now;
  d = spark_retry_decide(&c->policy, &cs->counts, &a);
  if (r.kind == NULL && r.status < 500 && r.status != 429 &&
      c->budget + SPARK_BUDGET_REFUND <= SPARK_BUDGET_CAPACITY)
    c->budget += SPARK_BUDGET_REFUND; /* a success refunds */
  if (d.action == SPARK_DONE)
    return finish(L, c, cs, NULL, NULL);
  if (d.action == SPARK_FAIL)
    return finish(L, c, cs, d.kind, d.message);
  if (d.rate_limited)
    cs->counts.rate_limited++;
  else
    cs->counts.retries++;
  c->budget -= d.cost;
  cs->cost = d.cost;
  begin_wait(cs, d.delay, now + d.delay, d.reason);
  /* record the retry in res.retries */
  push_info(L, c, cs);
  lua_rawseti(L, IDX_RETRIES, (lua_Integer)luaL_len(L, IDX_RETRIES) + 1);
  cs->ph = PH_ON_RETRY;
  return 0;
}

/* One step of the loop. Returns 1 when the call is finished (the result on
 * top of the stack), 0 to go on. */
static int step(lua_State *L, call_state *cs) {
  client *c = check_open(L, 1);
  switch (cs->ph) {
  case PH_GATE:
    return step_gate(L, c, cs);
  case PH_ATTEMPT:
    return step_attempt(L, c, cs);
  case PH_ON_RETRY:
    lua_getiuservalue(L, 1, UV_ON_RETRY);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      cs->ph = PH_SLEEP;
      return 0;
    }
    push_info(L, c, cs);
    cs->ph = PH_ON_RETRY_RET;
    lua_callk(L, 1, 1, 0, request_k);
    return 0;
  case PH_ON_RETRY_RET: {
    int veto = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!veto) {
      cs->ph = PH_SLEEP;
      return 0;
    }
    c->budget += cs->cost; /* the retry will not happen */
    if (strcmp(cs->reason, "rate_limited") == 0)
      return finish(L, c, cs, "rate_limited",
                    "rate limited: on_retry vetoed the retry");
    /* hand back the server error or the transport failure */
    return finish(L, c, cs, NULL, NULL);
  }
  case PH_SLEEP:
    lua_getiuservalue(L, 1, UV_SLEEP);
    push_num(L, cs->wait_left);
    push_info(L, c, cs);
    cs->ph = PH_SLEEP_RET;
    lua_callk(L, 2, 1, 0, request_k);
    return 0;
  case PH_SLEEP_RET: {
    int isnum;
    lua_Number left = lua_tonumberx(L, -1, &isnum);
    if ((!isnum && !lua_isnil(L, -1)) || (isnum && left != left))
      return luaL_error(L,
                        "spark: the sleep hook returned a %s (expected "
                        "the unslept seconds or nothing)",
                        luaL_typename(L, -1));
    lua_pop(L, 1);
    if (isnum && left > 0) {
      if (left < cs->wait_left)
        cs->wait_left = left;
      cs->ph = PH_SLEEP; /* sleep the rest */
      return 0;
    }
    if (strcmp(cs->reason, "pacing") == 0)
      cs->paced += cs->wait;
    else
      cs->counts.waited += cs->wait;
    /* by the hook's word, the clock has reached the wait's target */
    if (cs->target > c->passed)
      c->passed = cs->target;
    cs->ph = PH_GATE;
    return 0;
  }
  }
  return luaL_error(L, "spark: corrupt call state");
}

/* Whether url lies below the client's base URL (checked by core.new), so
 * that its scheme needs no second look. */
static int below_base_url(lua_State *L, const char *url) {
  size_t blen;
  const char *base;
  int below;
  lua_getiuservalue(L, 1, UV_BASE_URL);
  base = lua_tolstring(L, -1, &blen);
  below = base != NULL && strncmp(url, base, blen) == 0 &&
          (url[blen] == '/' || url[blen] == '?');
  lua_pop(L, 1);
  return below;
}

static int request_k(lua_State *L, int status, lua_KContext ctx) {
  call_state *cs = luaL_checkudata(L, IDX_CALL, CALL_MT);
  (void)status;
  (void)ctx;
  while (!step(L, cs))
    ;
  return 1;
}

/* core.request(client, method, url [, body [, content_type [, opts]]])
 * -> result. opts: {idempotent = bool (default: what the method says,
 * RFC 9110), deadline = seconds (default: the client's)}.
 * result: {status=, headers=, body=, tracking_id=, rate_limit=, attempts=,
 * waited=, budget=, retries=} or, on failure, {kind=, message=,
 * retry_after=, attempts=, waited=, ...} with the last response's fields
 * when one arrived. */
static int l_request(lua_State *L) {
  call_state *cs;
  client *c = check_open(L, 1);
  double deadline;
  const char *method = luaL_checkstring(L, 2);
  const char *ctype;
  luaL_checkstring(L, 3);
  luaL_optstring(L, 4, NULL);
  ctype = luaL_optstring(L, 5, NULL);
  luaL_argcheck(L,
                method[0] != '\0' &&
                    strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") ==
                        strlen(method),
                2, "method must be an upper-case HTTP method");
  luaL_argcheck(L,
                ctype == NULL || (strlen(ctype) < 200 &&
                                  strcspn(ctype, "\r\n") == strlen(ctype)),
                5, "content type must be one line under 200 bytes");
  if (!lua_isnoneornil(L, IDX_OPTS))
    luaL_checktype(L, IDX_OPTS, LUA_TTABLE);
  lua_settop(L, IDX_OPTS);
  if (!below_base_url(L, lua_tostring(L, 3))) {
    const char *err;
    CURLU *u = curl_url();
    if (u == NULL)
      return luaL_error(L, "out of memory");
    err = curl_url_set(u, CURLUPART_URL, lua_tostring(L, 3), 0) != CURLUE_OK
              ? "malformed URL"
              : check_scheme(u, c->allow_insecure);
    curl_url_cleanup(u);
    if (err != NULL)
      return luaL_error(L, "spark: %s", err);
  }
  cs = lua_newuserdatauv(L, sizeof *cs, 0);
  memset(cs, 0, sizeof *cs);
  luaL_setmetatable(L, CALL_MT);
  cs->ph = PH_GATE;
  cs->retry_after = -1;
  cs->idempotent = spark_method_idempotent(lua_tostring(L, 2));
  deadline = c->deadline;
  if (lua_istable(L, IDX_OPTS)) {
    if (lua_getfield(L, IDX_OPTS, "idempotent") != LUA_TNIL)
      cs->idempotent = lua_toboolean(L, -1);
    lua_pop(L, 1);
    deadline = opt_number_field(L, IDX_OPTS, "deadline", deadline);
  }
  cs->deadline_at = deadline > 0 ? clock_now(L) + deadline : HUGE_VAL;
  cs->counts.time_left = HUGE_VAL;
  lua_pushnil(L);           /* IDX_RESP */
  lua_createtable(L, 0, 0); /* IDX_RETRIES */
  return request_k(L, LUA_OK, 0);
}

/* ---- module ------------------------------------------------------------ */

static const luaL_Reg client_methods[] = {{"close", l_close},
                                          {"is_closed", l_is_closed},
                                          {"base_url", l_base_url},
                                          {NULL, NULL}};

static const luaL_Reg client_meta[] = {{"__gc", l_close},
                                       {"__close", l_close},
                                       {"__tostring", l_tostring},
                                       {NULL, NULL}};

static const luaL_Reg funcs[] = {
    {"new", l_new},           {"request", l_request},
    {"url", l_url},           {"link_next", l_link_next},
    {"escape", l_escape},     {"url_parts", l_url_parts},
    {"sleep", l_sleep},       {"monotime", l_monotime},
    {"integers", l_integers}, {NULL, NULL}};

static int global_cleanup(lua_State *L) {
  (void)L;
  curl_global_cleanup();
  return 0;
}

/* Keeps this module, and so libcurl and its TLS library, loaded until the
 * process ends: Lua unloads C modules when a state closes, but libcurl's
 * dependencies keep global state and exit handlers (OpenSSL, p11-kit) that
 * must not outlive their code. Harmless when linked into a host. */
static void pin_module(void) {
#if defined(RTLD_NODELETE) && defined(RTLD_NOLOAD)
  static const char anchor = 0; /* any address inside this module */
  Dl_info info;
  if (dladdr(&anchor, &info) != 0 && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
#endif
}

int luaopen_spark_core(lua_State *L) {
  pin_module();
  /* curl_global_init once per load, balanced by curl_global_cleanup when the
   * Lua state closes: a sentinel whose __gc runs after every client's, as
   * Lua finalizes in the reverse order of creation. */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return luaL_error(L, "spark: curl_global_init failed");
  lua_newuserdatauv(L, 0, 0);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, global_cleanup);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "spark.curl_global");
  luaL_newmetatable(L, CALL_MT);
  lua_pop(L, 1);
  luaL_newmetatable(L, CURLBOX_MT);
  lua_pushcfunction(L, curlbox_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, CLIENT_MT);
  luaL_setfuncs(L, client_meta, 0);
  luaL_newlib(L, client_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  /* the methods table and the metatable, for the facade to extend */
  luaL_newlib(L, funcs);
  lua_insert(L, -2);
  lua_setfield(L, -2, "methods");
  lua_insert(L, -2);
  lua_setfield(L, -2, "metatable");
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "version");
  lua_pushstring(L, curl_version());
  lua_setfield(L, -2, "curl_version");
  return 1;
}
