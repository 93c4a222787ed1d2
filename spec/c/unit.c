/* unit.c: unit tests of the pure C policy files (retry.c, link.c), run by
 * spec/c_unit_spec.lua. Prints one line per check: "ok - name" or
 * "not ok - name: detail"; exits 1 when any check failed. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../../csrc/link.h"
#include "../../csrc/pace.h"
#include "../../csrc/ratelimit.h"
#include "../../csrc/retry.h"

static int failures;

static void check(int cond, const char *name, const char *detail) {
  if (cond) {
    printf("ok - %s\n", name);
  } else {
    printf("not ok - %s: %s\n", name, detail);
    failures++;
  }
}

/* A date parser for the tests: the three RFC 9110 spellings of one instant,
 * 1994-11-06 08:49:37 UTC (784111777), and "Sun, 06 Nov 1994 08:49:30 GMT"
 * seven seconds earlier; anything else is unparseable. */
static double fake_date(const char *s) {
  if (strcmp(s, "Sun, 06 Nov 1994 08:49:37 GMT") == 0 ||
      strcmp(s, "Sunday, 06-Nov-94 08:49:37 GMT") == 0 ||
      strcmp(s, "Sun Nov  6 08:49:37 1994") == 0)
    return 784111777.0;
  if (strcmp(s, "Sun, 06 Nov 1994 08:49:30 GMT") == 0)
    return 784111770.0;
  return -1;
}

static void ra(const char *value, const char *date, double now, int want_ok,
               double want) {
  double got = -1;
  int ok = spark_retry_after_parse(value, date, now, fake_date, &got);
  char name[160], detail[160];
  snprintf(name, sizeof name, "Retry-After \"%s\"", value ? value : "(null)");
  snprintf(detail, sizeof detail, "got ok=%d %g, want ok=%d %g", ok, got,
           want_ok, want);
  check(ok == want_ok && (!ok || fabs(got - want) < 1e-9), name, detail);
}

static void test_retry_after(void) {
  ra("2", NULL, 0, 1, 2);
  ra("0", NULL, 0, 1, 0);
  ra("  120  ", NULL, 0, 1, 120);
  ra("1.5", NULL, 0, 1, 1.5);
  ra("18446744073709551616", NULL, 0, 1, SPARK_RETRY_AFTER_MAX);
  ra(NULL, NULL, 0, 0, 0);
  ra("", NULL, 0, 0, 0);
  ra("-5", NULL, 0, 0, 0);
  ra("x5", NULL, 0, 0, 0);
  ra("5x", NULL, 0, 0, 0);
  ra("5 5", NULL, 0, 0, 0);
  ra("soon", NULL, 0, 0, 0);
  /* dates, against the Date header */
  ra("Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:30 GMT", 0, 1, 7);
  ra("Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:30 GMT", 0, 1,
     7);
  ra("Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:30 GMT", 0, 1, 7);
  /* no usable Date header: against now */
  ra("Sun, 06 Nov 1994 08:49:37 GMT", NULL, 784111767.0, 1, 10);
  ra("Sun, 06 Nov 1994 08:49:37 GMT", "garbage", 784111767.0, 1, 10);
  /* a date in the past: no wait */
  ra("Sun, 06 Nov 1994 08:49:30 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", 0, 1, 0);
  ra("Mon, 99 Foo 1994", NULL, 0, 0, 0);
}

static spark_attempt answer(long status, int idempotent, int has_ra,
                            double ra) {
  spark_attempt a;
  memset(&a, 0, sizeof a);
  a.status = status;
  a.idempotent = idempotent;
  a.has_retry_after = has_ra;
  a.retry_after = ra;
  a.random = 0.5;
  a.budget = SPARK_BUDGET_CAPACITY;
  return a;
}

static spark_attempt transport_failure(int retryable, int sent,
                                       int idempotent) {
  spark_attempt a = answer(0, idempotent, 0, 0);
  a.failure = "network";
  a.retryable = retryable;
  a.sent = sent;
  return a;
}

static void test_decide(void) {
  spark_policy p = {3, 2, 60, 0.5, 30};
  spark_call_counts c = {0, 0, 0, HUGE_VAL};
  spark_attempt a;
  spark_decision d;
  a = answer(200, 1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_DONE, "200 is done", "not done");
  a = answer(404, 1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_DONE, "404 is handed back", "not done");
  a = answer(429, 0, 1, 2);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY && d.delay == 2 && d.rate_limited &&
            strcmp(d.reason, "rate_limited") == 0,
        "429 retries after Retry-After, for any method", "no retry");
  a = answer(429, 1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY && d.delay == SPARK_RETRY_AFTER_DEFAULT,
        "429 without Retry-After waits the default", "other wait");
  a = answer(429, 1, 1, 61);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_FAIL && strcmp(d.kind, "rate_limited") == 0,
        "429 beyond max_wait fails fast", "retried");
  c.waited = 50;
  a = answer(429, 1, 1, 11);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_FAIL, "429 beyond the time left fails fast",
        "retried");
  a = answer(429, 1, 1, 10);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY, "429 exactly within the time left retries",
        "failed");
  c.waited = 0;
  c.rate_limited = 3;
  a = answer(429, 1, 1, 1);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_FAIL, "max_rate_limited reached fails", "retried");
  c.rate_limited = 0;

  a = answer(503, 1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY && !d.rate_limited && d.delay == 0.25 &&
            strcmp(d.reason, "server_error") == 0,
        "503 on GET backs off with jitter", "no backoff");
  a = answer(503, 1, 1, 7);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY && d.delay == 7,
        "503 with Retry-After waits it", "other wait");
  a = answer(423, 1, 1, 4);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY && d.delay == 4,
        "423 with Retry-After waits it", "other wait");
  a = answer(423, 1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_DONE, "423 without Retry-After is handed back",
        "retried");
  a = answer(500, 0, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_DONE, "500 on POST is handed back", "retried");
  a = answer(501, 1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_DONE, "501 is not retried", "retried");
  c.retries = 2;
  a = answer(502, 1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_DONE, "max_retries reached hands the 502 back",
        "retried");
  c.retries = 0;

  a = transport_failure(1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY && strcmp(d.reason, "network") == 0,
        "unsent request retries for any method", "no retry");
  a = transport_failure(1, 1, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_FAIL && d.kind == NULL,
        "sent POST is not retried after a failure", "retried");
  a = transport_failure(1, 1, 1);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY, "sent GET is retried after a failure",
        "no retry");
  a = transport_failure(0, 0, 1);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_FAIL, "a permanent failure is not retried",
        "retried");

  /* the retry budget */
  a = answer(503, 1, 0, 0);
  d = spark_retry_decide(&p, &c, &a);
  check(d.cost == SPARK_BUDGET_COST, "a 503 retry costs 5", "other cost");
  a.budget = 4.9;
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_DONE, "no 503 retry without budget", "retried");
  a = transport_failure(1, 0, 1);
  a.failure = "timeout";
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY && d.cost == SPARK_BUDGET_TIMEOUT_COST,
        "a timeout retry costs 10", "other cost");
  a.budget = 9;
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_FAIL, "no timeout retry with 9 tokens", "retried");
  a = answer(429, 1, 1, 1);
  a.budget = 0;
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_RETRY && d.cost == 0,
        "429 waits do not need the budget", "no wait");

  /* the deadline */
  c.time_left = 5;
  a = answer(429, 1, 1, 6);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_FAIL && strstr(d.message, "deadline") != NULL,
        "429 past the deadline fails fast", "waited");
  a = answer(503, 1, 1, 6);
  d = spark_retry_decide(&p, &c, &a);
  check(d.action == SPARK_DONE, "503 wait past the deadline hands it back",
        "waited");
  d = spark_gate_decide(&p, &c, 5.5);
  check(d.action == SPARK_FAIL, "gate past the deadline fails fast", "waited");
  c.time_left = HUGE_VAL;

  check(spark_backoff(&p, 0, 0.999) < 0.5, "backoff 0 below 0.5", "above");
  check(spark_backoff(&p, 3, 0.5) == 2, "backoff 3 is uniform(0, 4)", "other");
  check(spark_backoff(&p, 40, 0.5) == 15, "backoff capped at 30", "uncapped");
  check(spark_backoff(&p, 1000000, 0.0) == 0, "backoff 0 at random 0", "not 0");
  check(spark_method_idempotent("GET") && spark_method_idempotent("PUT") &&
            spark_method_idempotent("DELETE") &&
            spark_method_idempotent("HEAD") &&
            !spark_method_idempotent("POST") &&
            !spark_method_idempotent("PATCH"),
        "idempotent methods", "wrong set");

  d = spark_gate_decide(&p, &c, 5);
  check(d.action == SPARK_RETRY && strcmp(d.reason, "gate") == 0,
        "gate within max_wait waits", "no wait");
  d = spark_gate_decide(&p, &c, 61);
  check(d.action == SPARK_FAIL && strcmp(d.kind, "rate_limited") == 0,
        "gate beyond max_wait fails fast", "waited");
}

static void link(const char *value, const char *want) {
  size_t start = 0, len = 0;
  int found = spark_link_find(value, strlen(value), "next", &start, &len);
  char name[200], detail[200];
  snprintf(name, sizeof name, "Link %.150s", value);
  snprintf(detail, sizeof detail, "got %s%.*s", found ? "" : "nothing ",
           (int)len, value + start);
  if (want == NULL)
    check(!found, name, detail);
  else
    check(found && len == strlen(want) && memcmp(value + start, want, len) == 0,
          name, detail);
}

static void test_link(void) {
  link("<https://a/v1/rooms?max=2&cursor=x>; rel=\"next\"",
       "https://a/v1/rooms?max=2&cursor=x");
  link("<https://a/p>; rel=next", "https://a/p");
  link("<https://a/1>; rel=\"prev\", <https://a/2>; rel=\"next\"",
       "https://a/2");
  link("<https://a/1>; rel=\"prev next\"", "https://a/1");
  link("<https://a/1>;REL=\"NEXT\"", "https://a/1");
  link("<https://a/x,y>; title=\"a, b; c\"; rel=\"next\"", "https://a/x,y");
  link("<https://a/1>; rel=\"nextpage\"", NULL);
  link("<https://a/1>; rel=\"prev\"", NULL);
  link("garbage, <https://a/2>; rel=next", "https://a/2");
  link("<https://a/1", NULL);
  link("<https://a/1>; rel=\"next", NULL);
  link("", NULL);
  link("<>; rel=next", "");
  link("<https://a/1>; rel=prev; rel=next", NULL); /* only the first rel */
  link("<https://a/1>; rel=next; rel=prev", "https://a/1");
}

/* Headers for the rate-limit parser: "Name\0value" pairs, NULL-ended. */
static const char *lookup(const void *ud, const char *name) {
  const char *const *h = ud;
  for (; *h != NULL; h += 2)
    if (strcasecmp(h[0], name) == 0)
      return h[1];
  return NULL;
}

static void rl_case(const char *name, const char *const *headers, int found,
                    double limit, double remaining, double reset,
                    double window) {
  spark_ratelimit rl;
  char detail[200];
  int got = spark_ratelimit_parse(&rl, lookup, headers, 1000000000.0 + 5000);
  snprintf(detail, sizeof detail,
           "got found=%d limit=%g(%d) remaining=%g(%d) reset=%g(%d) "
           "window=%g(%d)",
           got, rl.limit, rl.has_limit, rl.remaining, rl.has_remaining,
           rl.reset, rl.has_reset, rl.window, rl.has_window);
  check(got == found && (limit < 0 ? !rl.has_limit : rl.limit == limit) &&
            (remaining < 0 ? !rl.has_remaining : rl.remaining == remaining) &&
            (reset < 0 ? !rl.has_reset : rl.reset == reset) &&
            (window < 0 ? !rl.has_window : rl.window == window),
        name, detail);
}

static void test_ratelimit(void) {
  const char *none[] = {"Date", "x", NULL};
  const char *x[] = {"X-RateLimit-Limit",
                     "100",
                     "X-RateLimit-Remaining",
                     "7",
                     "X-RateLimit-Reset",
                     "30",
                     NULL};
  const char *x_epoch[] = {"X-RateLimit-Reset", "1000005030", NULL};
  const char *ietf_old[] = {"RateLimit", "limit=100, remaining=50, reset=30",
                            NULL};
  const char *ietf_split[] = {"RateLimit-Limit",
                              "60",
                              "RateLimit-Remaining",
                              "0",
                              "RateLimit-Reset",
                              "12",
                              NULL};
  const char *ietf_new[] = {"RateLimit", "\"default\";r=50;t=30",
                            "RateLimit-Policy", "\"default\";q=100;w=60", NULL};
  const char *policy_old[] = {"RateLimit-Policy", "100;w=60", NULL};
  const char *quoted[] = {"RateLimit", "\"r=9;t=9\";r=1;t=2", NULL};
  const char *garbage[] = {"X-RateLimit-Limit", "lots", "RateLimit", "r=;t=x",
                           NULL};
  rl_case("no rate-limit fields", none, 0, -1, -1, -1, -1);
  rl_case("X-RateLimit-*", x, 1, 100, 7, 30, -1);
  rl_case("X-RateLimit-Reset as a unix time", x_epoch, 1, -1, -1, 30, -1);
  rl_case("RateLimit: limit=, remaining=, reset=", ietf_old, 1, 100, 50, 30,
          -1);
  rl_case("RateLimit-Limit/-Remaining/-Reset", ietf_split, 1, 60, 0, 12, -1);
  rl_case("RateLimit and RateLimit-Policy, structured", ietf_new, 1, 100, 50,
          30, 60);
  rl_case("RateLimit-Policy: 100;w=60", policy_old, 1, 100, -1, -1, 60);
  rl_case("a quoted policy name is no parameter", quoted, 1, -1, 1, 2, -1);
  rl_case("garbage values are left out", garbage, 0, -1, -1, -1, -1);
}

static void test_pace(void) {
  spark_pace p;
  double t;
  int i, ok;
  /* GCRA, 5 per second, burst 2: two at once, then one every 0.2 s */
  spark_pace_init(&p, SPARK_PACE_FIXED, 5, 2);
  check(spark_pace_delay(&p, 10) == 0, "GCRA: first request goes", "waits");
  spark_pace_sent(&p, 10);
  check(spark_pace_delay(&p, 10) == 0, "GCRA: burst of 2 goes", "waits");
  spark_pace_sent(&p, 10);
  check(fabs(spark_pace_delay(&p, 10) - 0.2) < 1e-9,
        "GCRA: the third waits 0.2 s", "other wait");
  spark_pace_sent(&p, 10.2);
  check(fabs(spark_pace_delay(&p, 10.2) - 0.2) < 1e-9,
        "GCRA: then one every 0.2 s", "other wait");
  check(spark_pace_delay(&p, 20) == 0, "GCRA: idle time refills", "waits");

  spark_pace_init(&p, SPARK_PACE_NONE, 0, 1);
  spark_pace_sent(&p, 1);
  check(spark_pace_delay(&p, 1) == 0, "no pacing never waits", "waits");

  /* adaptive: unlimited until a 429, then 0.7 x the measured rate */
  spark_pace_init(&p, SPARK_PACE_ADAPTIVE, 0, 1);
  for (i = 0, t = 0; i < 100; i++, t += 0.01) { /* 100 requests/s */
    if (spark_pace_delay(&p, t) != 0)
      break;
    spark_pace_sent(&p, t);
    spark_pace_answer(&p, t, 0, NULL);
  }
  check(i == 100, "adaptive: unlimited before any 429", "paced early");
  spark_pace_answer(&p, t, 1, NULL);
  check(p.rate > 60 && p.rate < 80,
        "adaptive: a 429 paces at about 0.7 x 100/s", "other rate");
  ok = 1;
  {
    double r0 = p.rate, last = p.rate;
    for (i = 0; i < 200; i++) {
      t += 1.0 / last;
      spark_pace_sent(&p, t);
      spark_pace_answer(&p, t, 0, NULL);
      if (p.rate + 1e-9 < last && i > 0)
        ok = 0; /* grows back monotonically */
      last = p.rate;
    }
    check(ok && p.rate > r0, "adaptive: grows back after a 429", "no growth");
    check(p.rate <= 2 * p.measured + 1e-9,
          "adaptive: never above twice the measured rate", "above");
  }
  {
    spark_ratelimit rl;
    memset(&rl, 0, sizeof rl);
    rl.has_limit = rl.has_window = 1;
    rl.limit = 10;
    rl.window = 1;
    spark_pace_answer(&p, t, 0, &rl);
    check(p.rate <= 10 + 1e-9, "adaptive: RateLimit-Policy caps the pace",
          "not capped");
  }
}

int main(void) {
  test_retry_after();
  test_decide();
  test_link();
  test_ratelimit();
  test_pace();
  printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
