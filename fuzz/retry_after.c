/* libFuzzer harness: Retry-After values and HTTP dates (retry.c), with
 * curl_getdate as the date parser, as core.c uses it. Input: the
 * Retry-After value, optionally "\n" and a Date header value. */
#include <curl/curl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "retry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static double parse_date(const char *s) {
  time_t t = curl_getdate(s, NULL);
  return t == (time_t)-1 ? -1.0 : (double)t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size + 1), *date;
  double seconds = -1;
  if (buf == NULL)
    return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  date = strchr(buf, '\n');
  if (date != NULL)
    *date++ = '\0';
  if (spark_retry_after_parse(buf, date, 1.7e9, parse_date, &seconds) &&
      !(seconds >= 0 && seconds <= SPARK_RETRY_AFTER_MAX))
    abort(); /* a usable value is never negative, NaN or unbounded */
  free(buf);
  return 0;
}
