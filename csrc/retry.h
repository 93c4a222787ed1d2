/* retry.h: the pure retry policy of spark. Knows nothing of Lua or curl:
 * Retry-After parsing and the decision taken after each attempt. */
#ifndef SPARK_RETRY_H
#define SPARK_RETRY_H

#include <stddef.h>

/* The wait used when a 429 carries no usable Retry-After (the Webex SDKs'
 * convention). */
#define SPARK_RETRY_AFTER_DEFAULT 15.0

/* Longest Retry-After we represent; larger values saturate to it (about 31
 * years: far above any sensible max_wait, so such a wait fails fast). */
#define SPARK_RETRY_AFTER_MAX 1e9

/* Parses an HTTP-date into seconds since the epoch, or -1. Injected so that
 * this file stays free of curl (core.c passes curl_getdate). */
typedef double (*spark_date_parser)(const char *date);

/* Parses one Retry-After field value: delta-seconds (a non-negative decimal,
 * a fraction allowed) or an HTTP-date in any of RFC 9110's three formats,
 * measured against `date` (the response's Date header, may be NULL) or else
 * `now_epoch`. A date in the past gives 0. Returns 1 and sets *seconds when
 * the value is usable; 0 when it is empty, negative or garbage. */
int spark_retry_after_parse(const char *value, const char *date,
                            double now_epoch, spark_date_parser parse_date,
                            double *seconds);

/* The counters and limits of one call. */
typedef struct {
  int max_rate_limited; /* 429 waits allowed per call */
  double max_wait;      /* seconds of waiting allowed per call */
} spark_policy;

typedef struct {
  int rate_limited; /* 429 waits taken so far */
  double waited;    /* seconds waited so far */
} spark_call_counts;

typedef enum {
  SPARK_DONE,  /* hand the response to the caller */
  SPARK_RETRY, /* wait `delay` seconds, then send again */
  SPARK_FAIL   /* give up with `kind` */
} spark_action;

typedef struct {
  spark_action action;
  double delay;        /* SPARK_RETRY: seconds to wait */
  const char *reason;  /* SPARK_RETRY: the sleep hook's info.reason */
  const char *kind;    /* SPARK_FAIL: err.kind */
  const char *message; /* SPARK_FAIL: why, for err.message */
} spark_decision;

/* Decides what follows an answer with HTTP `status`. `retry_after` is the
 * parsed Retry-After (SPARK_RETRY_AFTER_DEFAULT when absent). */
spark_decision spark_retry_decide(const spark_policy *p,
                                  const spark_call_counts *c, long status,
                                  double retry_after);

/* Decides whether a wait of `delay` seconds (for the gate, before any
 * attempt) fits the call's budget: SPARK_RETRY with reason "gate", or
 * SPARK_FAIL with kind "rate_limited". */
spark_decision spark_gate_decide(const spark_policy *p,
                                 const spark_call_counts *c, double delay);

#endif
