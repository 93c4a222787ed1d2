/* ratelimit.c: rate-limit header fields (pure C). */
#include "ratelimit.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/* A non-negative decimal at the start of s (after OWS); 1 when found. */
static int number(const char *s, double *out) {
  double v = 0, scale = 0.1;
  while (*s == ' ' || *s == '\t' || *s == '"')
    s++;
  if (!isdigit((unsigned char)*s))
    return 0;
  for (; isdigit((unsigned char)*s); s++)
    if (v < 1e15)
      v = v * 10 + (*s - '0');
  if (*s == '.')
    for (s++; isdigit((unsigned char)*s); s++) {
      v += (*s - '0') * scale;
      scale /= 10;
    }
  *out = v;
  return 1;
}

/* Finds parameter `key` (case-insensitive) in a list like
 * `"default";r=50;t=30` or `limit=100, remaining=50`: a key starts the
 * field or follows ';' or ',' (and OWS), outside quoted strings, and is
 * followed by '='. Returns its value's start, or NULL. */
static const char *param(const char *s, const char *key) {
  size_t klen = strlen(key);
  int at_start = 1, quoted = 0;
  for (; *s; s++) {
    if (quoted) {
      if (*s == '\\' && s[1])
        s++;
      else if (*s == '"')
        quoted = 0;
      continue;
    }
    if (*s == '"') {
      quoted = 1;
      at_start = 0;
    } else if (*s == ';' || *s == ',') {
      at_start = 1;
    } else if (*s == ' ' || *s == '\t') {
      continue;
    } else if (at_start) {
      if (strncasecmp(s, key, klen) == 0 && s[klen] == '=')
        return s + klen + 1;
      at_start = 0;
    }
  }
  return NULL;
}

/* Reads a number at v into *field, setting *has, when there is one. */
static void take(int *has, double *field, const char *v) {
  double x;
  if (v != NULL && number(v, &x)) {
    *has = 1;
    *field = x;
  }
}

int spark_ratelimit_parse(spark_ratelimit *rl, spark_header_lookup lookup,
                          const void *ud, double now_epoch) {
  const char *v, *p;
  double x = 0;
  memset(rl, 0, sizeof *rl);

  /* X-RateLimit-* first; the IETF fields, when present, win. */
  if ((v = lookup(ud, "X-RateLimit-Limit")) != NULL)
    take(&rl->has_limit, &rl->limit, v);
  if ((v = lookup(ud, "X-RateLimit-Remaining")) != NULL)
    take(&rl->has_remaining, &rl->remaining, v);
  if ((v = lookup(ud, "X-RateLimit-Reset")) != NULL && number(v, &x)) {
    if (x > 1e9) /* a unix time */
      x = x > now_epoch ? x - now_epoch : 0;
    rl->has_reset = 1;
    rl->reset = x;
  }
  if ((v = lookup(ud, "RateLimit-Limit")) != NULL)
    take(&rl->has_limit, &rl->limit, v);
  if ((v = lookup(ud, "RateLimit-Remaining")) != NULL)
    take(&rl->has_remaining, &rl->remaining, v);
  if ((v = lookup(ud, "RateLimit-Reset")) != NULL)
    take(&rl->has_reset, &rl->reset, v);
  if ((v = lookup(ud, "RateLimit")) != NULL) {
    if ((p = param(v, "limit")) != NULL)
      take(&rl->has_limit, &rl->limit, p);
    if ((p = param(v, "remaining")) != NULL || (p = param(v, "r")) != NULL)
      take(&rl->has_remaining, &rl->remaining, p);
    if ((p = param(v, "reset")) != NULL || (p = param(v, "t")) != NULL)
      take(&rl->has_reset, &rl->reset, p);
  }
  if ((v = lookup(ud, "RateLimit-Policy")) != NULL) {
    if ((p = param(v, "q")) != NULL)
      take(&rl->has_limit, &rl->limit, p);
    else /* the older `100;w=60` */
      take(&rl->has_limit, &rl->limit, v);
    if ((p = param(v, "w")) != NULL)
      take(&rl->has_window, &rl->window, p);
  }
  return rl->has_limit || rl->has_remaining || rl->has_reset || rl->has_window;
}
