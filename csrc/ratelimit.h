/* ratelimit.h: pure C parsing of rate-limit header fields: the IETF
 * RateLimit / RateLimit-Policy fields (the structured form of the current
 * draft, `"default";r=50;t=30` and `"default";q=100;w=60`, and the older
 * `limit=100, remaining=50, reset=30` and RateLimit-Limit/-Remaining/-Reset
 * fields) and the common X-RateLimit-Limit/-Remaining/-Reset. */
#ifndef SPARK_RATELIMIT_H
#define SPARK_RATELIMIT_H

typedef struct {
  int has_limit, has_remaining, has_reset, has_window;
  double limit;     /* requests allowed per window */
  double remaining; /* requests left in this window */
  double reset;     /* seconds until the window resets */
  double window;    /* seconds of the window */
} spark_ratelimit;

/* Looks up a header field value by name (case-insensitive); NULL when
 * absent. */
typedef const char *(*spark_header_lookup)(const void *ud, const char *name);

/* Fills `rl` from the fields found through `lookup`. An X-RateLimit-Reset
 * above 1e9 is taken as a unix time and measured against `now_epoch`.
 * Returns 1 when anything was found. Values that do not parse are left
 * out; nothing is read past a field's end. */
int spark_ratelimit_parse(spark_ratelimit *rl, spark_header_lookup lookup,
                          const void *ud, double now_epoch);

#endif
