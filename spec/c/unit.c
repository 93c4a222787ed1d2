/* unit.c: unit tests of the pure C policy files (retry.c, link.c), run by
 * spec/c_unit_spec.lua. Prints one line per check: "ok - name" or
 * "not ok - name: detail"; exits 1 when any check failed. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../../csrc/link.h"
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
  ra("Sun, 06 Nov 1994 08:49:30 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", 0, 1,
     0);
  ra("Mon, 99 Foo 1994", NULL, 0, 0, 0);
}

static void test_decide(void) {
  spark_policy p = {3, 60};
  spark_call_counts c = {0, 0};
  spark_decision d;
  d = spark_retry_decide(&p, &c, 200, 15);
  check(d.action == SPARK_DONE, "200 is done", "not done");
  d = spark_retry_decide(&p, &c, 404, 15);
  check(d.action == SPARK_DONE, "404 is handed back", "not done");
  d = spark_retry_decide(&p, &c, 429, 2);
  check(d.action == SPARK_RETRY && d.delay == 2 &&
            strcmp(d.reason, "rate_limited") == 0,
        "429 retries after Retry-After", "no retry");
  d = spark_retry_decide(&p, &c, 429, 61);
  check(d.action == SPARK_FAIL && strcmp(d.kind, "rate_limited") == 0,
        "429 beyond max_wait fails fast", "retried");
  c.waited = 50;
  d = spark_retry_decide(&p, &c, 429, 11);
  check(d.action == SPARK_FAIL, "429 beyond the time left fails fast",
        "retried");
  d = spark_retry_decide(&p, &c, 429, 10);
  check(d.action == SPARK_RETRY, "429 exactly within the time left retries",
        "failed");
  c.rate_limited = 3;
  d = spark_retry_decide(&p, &c, 429, 1);
  check(d.action == SPARK_FAIL, "max_rate_limited reached fails", "retried");
  c.rate_limited = 0;
  c.waited = 0;
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
}

int main(void) {
  test_retry_after();
  test_decide();
  test_link();
  printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
