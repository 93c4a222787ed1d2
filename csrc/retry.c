/* retry.c: Retry-After parsing and retry decisions (pure C). */
#include "retry.h"

#include <ctype.h>
#include <string.h>

static const char *skip_ows(const char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  return s;
}

/* Decimal seconds: DIGIT+ [ "." DIGIT* ], saturating, then only OWS. */
static int parse_delta(const char *s, double *out) {
  double v = 0.0;
  if (!isdigit((unsigned char)*s))
    return 0;
  for (; isdigit((unsigned char)*s); s++) {
    v = v * 10.0 + (*s - '0');
    if (v > SPARK_RETRY_AFTER_MAX)
      v = SPARK_RETRY_AFTER_MAX;
  }
  if (*s == '.') {
    double scale = 0.1;
    for (s++; isdigit((unsigned char)*s); s++) {
      v += (*s - '0') * scale;
      scale /= 10.0;
    }
  }
  if (*skip_ows(s) != '\0')
    return 0;
  *out = v > SPARK_RETRY_AFTER_MAX ? SPARK_RETRY_AFTER_MAX : v;
  return 1;
}

int spark_retry_after_parse(const char *value, const char *date,
                            double now_epoch, spark_date_parser parse_date,
                            double *seconds) {
  double at, base;
  if (value == NULL)
    return 0;
  value = skip_ows(value);
  if (isdigit((unsigned char)*value))
    return parse_delta(value, seconds);
  /* Every RFC 9110 date format starts with a day name. */
  if (!isalpha((unsigned char)*value) || parse_date == NULL)
    return 0;
  at = parse_date(value);
  if (at < 0)
    return 0;
  base = now_epoch;
  if (date != NULL) {
    double d = parse_date(skip_ows(date));
    if (d >= 0)
      base = d;
  }
  at -= base;
  if (at < 0)
    at = 0;
  *seconds = at > SPARK_RETRY_AFTER_MAX ? SPARK_RETRY_AFTER_MAX : at;
  return 1;
}

static spark_decision fail(const char *kind, const char *message) {
  spark_decision d;
  memset(&d, 0, sizeof d);
  d.action = SPARK_FAIL;
  d.kind = kind;
  d.message = message;
  return d;
}

static spark_decision retry(double delay, const char *reason) {
  spark_decision d;
  memset(&d, 0, sizeof d);
  d.action = SPARK_RETRY;
  d.delay = delay;
  d.reason = reason;
  return d;
}

/* Whether a wait of `delay` seconds still fits the call's max_wait and
 * deadline. */
static int fits(const spark_policy *p, const spark_call_counts *c,
                double delay) {
  return delay <= p->max_wait - c->waited && delay <= c->time_left;
}

/* The message for a wait that does not fit. */
static const char *too_long(const spark_policy *p, const spark_call_counts *c,
                            double delay, const char *over_wait,
                            const char *over_deadline) {
  return delay > p->max_wait - c->waited ? over_wait : over_deadline;
}

static spark_decision retry_costing(double delay, const char *reason,
                                    double cost) {
  spark_decision d = retry(delay, reason);
  d.cost = cost;
  return d;
}

int spark_method_idempotent(const char *method) {
  static const char *const idempotent[] = {"GET",    "HEAD",    "PUT",
                                           "DELETE", "OPTIONS", "TRACE"};
  size_t i;
  for (i = 0; i < sizeof idempotent / sizeof *idempotent; i++)
    if (strcmp(method, idempotent[i]) == 0)
      return 1;
  return 0;
}

double spark_backoff(const spark_policy *p, int n, double random) {
  double ceiling = p->backoff_base;
  int i;
  for (i = 0; i < n && ceiling < p->backoff_cap; i++)
    ceiling *= 2;
  if (ceiling > p->backoff_cap)
    ceiling = p->backoff_cap;
  return random * ceiling;
}

static spark_decision done(void) {
  spark_decision d;
  memset(&d, 0, sizeof d);
  d.action = SPARK_DONE;
  return d;
}

static int is_server_error(long status) {
  return status == 500 || status == 502 || status == 503 || status == 504;
}

spark_decision spark_retry_decide(const spark_policy *p,
                                  const spark_call_counts *c,
                                  const spark_attempt *a) {
  double delay;
  if (a->failure != NULL) {
    double cost = strcmp(a->failure, "timeout") == 0 ? SPARK_BUDGET_TIMEOUT_COST
                                                     : SPARK_BUDGET_COST;
    if (!a->retryable || (a->sent && !a->idempotent) ||
        c->retries >= p->max_retries || a->budget < cost)
      return fail(NULL, NULL);
    delay = spark_backoff(p, c->retries, a->random);
    return fits(p, c, delay) ? retry_costing(delay, "network", cost)
                             : fail(NULL, NULL);
  }
  if (a->status == 429) {
    delay = a->has_retry_after ? a->retry_after : SPARK_RETRY_AFTER_DEFAULT;
    if (c->rate_limited >= p->max_rate_limited)
      return fail("rate_limited", "rate limited: max_rate_limited reached");
    if (!fits(p, c, delay))
      return fail("rate_limited",
                  too_long(p, c, delay,
                           "rate limited: Retry-After exceeds the time "
                           "left of max_wait",
                           "rate limited: Retry-After ends past the "
                           "deadline"));
    {
      spark_decision d = retry(delay, "rate_limited");
      d.rate_limited = 1;
      return d;
    }
  }
  if (!a->idempotent || c->retries >= p->max_retries ||
      a->budget < SPARK_BUDGET_COST)
    return done();
  if (is_server_error(a->status) || (a->status == 423 && a->has_retry_after)) {
    delay = a->has_retry_after && (a->status == 503 || a->status == 423)
                ? a->retry_after
                : spark_backoff(p, c->retries, a->random);
    return fits(p, c, delay)
               ? retry_costing(delay, "server_error", SPARK_BUDGET_COST)
               : done();
  }
  return done();
}

spark_decision spark_gate_decide(const spark_policy *p,
                                 const spark_call_counts *c, double delay) {
  if (!fits(p, c, delay))
    return fail("rate_limited",
                too_long(p, c, delay,
                         "rate limited: the client's Retry-After gate "
                         "outlasts max_wait",
                         "rate limited: the client's Retry-After gate "
                         "ends past the deadline"));
  return retry(delay, "gate");
}
