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

/* The limits of a client. */
typedef struct {
  int max_rate_limited; /* 429 waits allowed per call */
  int max_retries;      /* retries of transient failures per call */
  double max_wait;      /* seconds of waiting allowed per call */
  double backoff_base;  /* first backoff ceiling, seconds (0.5) */
  double backoff_cap;   /* largest backoff ceiling, seconds (30) */
} spark_policy;

/* The counters of one call. */
typedef struct {
  int rate_limited; /* 429 waits taken so far */
  int retries;      /* transient retries taken so far */
  double waited;    /* seconds waited so far */
  double time_left; /* seconds until the call's deadline (HUGE_VAL: none) */
} spark_call_counts;

/* The retry budget of a client, against retry storms (as AWS's standard
 * mode): it starts full; a retry costs SPARK_BUDGET_COST (a retry after a
 * timeout SPARK_BUDGET_TIMEOUT_COST); every answer below 500 but 429
 * refunds SPARK_BUDGET_REFUND, up to the capacity. A retry that costs more
 * than what is left is not made. 429 waits are not charged: Retry-After and
 * the gate already bound them. */
#define SPARK_BUDGET_CAPACITY 500.0
#define SPARK_BUDGET_COST 5.0
#define SPARK_BUDGET_TIMEOUT_COST 10.0
#define SPARK_BUDGET_REFUND 1.0

/* What one attempt gave. */
typedef struct {
  long status;         /* HTTP status; 0 when no response arrived */
  const char *failure; /* transport failure kind ("network", "timeout",
                          "too_large"), or NULL */
  int retryable;       /* the failure may pass on a new attempt */
  int sent;            /* the request may have reached the server */
  int idempotent;      /* the call may be repeated safely */
  int has_retry_after; /* the response carried a usable Retry-After */
  double retry_after;  /* its value, seconds */
  double random;       /* uniform in [0, 1), for the backoff's jitter */
  double budget;       /* retry budget tokens left on the client */
} spark_attempt;

/* Whether a method is idempotent by RFC 9110 (GET, HEAD, PUT, DELETE,
 * OPTIONS, TRACE). */
int spark_method_idempotent(const char *method);

/* Exponential backoff with full jitter: uniform(0, min(cap, base*2^n)),
 * with `random` uniform in [0, 1). */
double spark_backoff(const spark_policy *p, int n, double random);

typedef enum {
  SPARK_DONE,  /* hand the response to the caller */
  SPARK_RETRY, /* wait `delay` seconds, then send again */
  SPARK_FAIL   /* give up with `kind` */
} spark_action;

typedef struct {
  spark_action action;
  double delay;        /* SPARK_RETRY: seconds to wait */
  const char *reason;  /* SPARK_RETRY: the sleep hook's info.reason:
                          "rate_limited", "server_error" or "network" */
  int rate_limited;    /* SPARK_RETRY: counts as a 429 wait, not a retry */
  double cost;         /* SPARK_RETRY: retry budget tokens it takes */
  const char *kind;    /* SPARK_FAIL: err.kind; NULL: the transport's */
  const char *message; /* SPARK_FAIL: why, for err.message; NULL: the
                          transport's */
} spark_decision;

/* Decides what follows an attempt:
 * - 429 (any method: Webex did not process it): wait Retry-After (or the
 *   default), at most max_rate_limited times, else fail "rate_limited";
 * - 500, 502, 503, 504 for idempotent calls: back off (or wait the
 *   Retry-After of a 503), at most max_retries times, then hand the
 *   response back; likewise 423 with a Retry-After;
 * - transport failures marked retryable: before the request was sent for
 *   any call, after it only for idempotent ones, at most max_retries times;
 * - transient retries also need the retry budget to cover their cost;
 * - a wait that does not fit the time left (of max_wait, or before the
 *   call's deadline) is never started: 429 fails "rate_limited", a server
 *   error is handed back, a transport failure fails with its kind. */
spark_decision spark_retry_decide(const spark_policy *p,
                                  const spark_call_counts *c,
                                  const spark_attempt *a);

/* Decides whether a wait of `delay` seconds (for the gate, before any
 * attempt) fits the call's time left: SPARK_RETRY with reason "gate", or
 * SPARK_FAIL with kind "rate_limited". */
spark_decision spark_gate_decide(const spark_policy *p,
                                 const spark_call_counts *c, double delay);

#endif
