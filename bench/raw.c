/* bench/raw.c: the limit spark's cost per request is measured against.
 *
 *   build/bench/raw URL REQUESTS WARMUP decode|nodecode
 *
 * A plain libcurl loop: one easy handle reused for every request (so one
 * keep-alive connection), the same bearer auth and Accept header as spark,
 * the body appended to a growable buffer. With `decode`, each body is handed
 * to lua-cjson's decode in an embedded Lua 5.4 state, exactly as spark
 * hands it (a Lua string in, Lua tables out), and the result dropped for the
 * garbage collector; with `nodecode` the body is only received. Nothing
 * else: no URL building, no header capture, no retry policy. It sends WARMUP
 * requests first (the connection is opened there), then times REQUESTS
 * requests on CLOCK_MONOTONIC and prints one JSON line:
 *   {"requests":N,"seconds":S,"bytes":B,"items":I}
 * (I: the length of the decoded "items" array of the last body, or -1).
 * Exit status 1 on any failure (a transfer error, a status other than 200,
 * a body cjson rejects). A measurement, not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

typedef struct {
  char *data;
  size_t len, cap;
} buffer;

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  buffer *b = ud;
  size_t len = size * n;
  if (b->len + len + 1 > b->cap) {
    size_t ncap = b->cap ? b->cap : 1024;
    char *nd;
    while (ncap < b->len + len + 1)
      ncap *= 2;
    nd = realloc(b->data, ncap);
    if (nd == NULL)
      return 0;
    b->data = nd;
    b->cap = ncap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return len;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One GET; returns 0 on a 200 and the body in b. */
static int fetch(CURL *e, buffer *b) {
  long status = 0;
  CURLcode rc;
  b->len = 0;
  rc = curl_easy_perform(e);
  if (rc != CURLE_OK) {
    fprintf(stderr, "raw: curl: %s\n", curl_easy_strerror(rc));
    return -1;
  }
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    fprintf(stderr, "raw: HTTP %ld\n", status);
    return -1;
  }
  return 0;
}

/* cjson.decode(body) on the stack top; returns the items count or -1, and
 * leaves the stack as it found it. Index `decode` holds cjson.decode. */
static long decode(lua_State *L, int fn, const buffer *b) {
  long items = -1;
  lua_pushvalue(L, fn);
  lua_pushlstring(L, b->data, b->len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "raw: cjson.decode: %s\n", lua_tostring(L, -1));
    exit(1);
  }
  if (lua_istable(L, -1) && lua_getfield(L, -1, "items") == LUA_TTABLE)
    items = (long)lua_rawlen(L, -1);
  lua_settop(L, fn);
  return items;
}

int main(int argc, char **argv) {
  CURL *e;
  struct curl_slist *hl = NULL;
  buffer b = {NULL, 0, 0};
  lua_State *L = NULL;
  long n, warmup, i, items = -1;
  int do_decode, fn = 0;
  double t0, t1;
  unsigned long long bytes = 0;

  if (argc != 5 ||
      (strcmp(argv[4], "decode") != 0 && strcmp(argv[4], "nodecode") != 0)) {
    fprintf(stderr, "usage: raw URL REQUESTS WARMUP decode|nodecode\n");
    return 2;
  }
  n = strtol(argv[2], NULL, 10);
  warmup = strtol(argv[3], NULL, 10);
  do_decode = strcmp(argv[4], "decode") == 0;
  if (n < 0 || warmup < 0) {
    fprintf(stderr, "raw: REQUESTS and WARMUP must be >= 0\n");
    return 2;
  }

  if (do_decode) {
    L = luaL_newstate();
    if (L == NULL)
      return 1;
    luaL_openlibs(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      fprintf(stderr, "raw: require cjson: %s\n", lua_tostring(L, -1));
      return 1;
    }
    lua_getfield(L, -1, "new"); /* a private instance, as spark makes */
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "decode");
    fn = lua_gettop(L);
  }

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return 1;
  e = curl_easy_init();
  hl = curl_slist_append(NULL, "Accept: application/json");
  if (e == NULL || hl == NULL)
    return 1;
  curl_easy_setopt(e, CURLOPT_URL, argv[1]);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
  curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, "mock-token");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(e, CURLOPT_NOPROXY, "*");

  for (i = 0; i < warmup; i++) {
    if (fetch(e, &b) != 0)
      return 1;
    if (do_decode)
      items = decode(L, fn, &b);
  }
  t0 = now();
  for (i = 0; i < n; i++) {
    if (fetch(e, &b) != 0)
      return 1;
    bytes += b.len;
    if (do_decode)
      items = decode(L, fn, &b);
  }
  t1 = now();
  printf("{\"requests\":%ld,\"seconds\":%.6f,\"bytes\":%llu,\"items\":%ld}\n",
         n, t1 - t0, bytes, items);

  curl_slist_free_all(hl);
  curl_easy_cleanup(e);
  curl_global_cleanup();
  free(b.data);
  if (L != NULL)
    lua_close(L);
  return 0;
}
