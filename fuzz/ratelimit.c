/* libFuzzer harness: the rate-limit header parser (ratelimit.c). The input
 * is header lines "Name: value" separated by "\n". */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ratelimit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FIELDS 16

typedef struct {
  const char *name[MAX_FIELDS], *value[MAX_FIELDS];
  int n;
} fields;

static const char *lookup(const void *ud, const char *name) {
  const fields *f = ud;
  int i;
  for (i = 0; i < f->n; i++)
    if (strcasecmp(f->name[i], name) == 0)
      return f->value[i];
  return NULL;
}

static int bad(int has, double v) {
  return has && !(v >= 0 && isfinite(v));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size + 1), *line, *save = NULL;
  fields f;
  spark_ratelimit rl;
  if (buf == NULL)
    return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  f.n = 0;
  for (line = strtok_r(buf, "\n", &save); line != NULL && f.n < MAX_FIELDS;
       line = strtok_r(NULL, "\n", &save)) {
    char *colon = strchr(line, ':');
    if (colon == NULL)
      continue;
    *colon = '\0';
    f.name[f.n] = line;
    f.value[f.n++] = colon + 1;
  }
  spark_ratelimit_parse(&rl, lookup, &f, 1.7e9);
  if (bad(rl.has_limit, rl.limit) || bad(rl.has_remaining, rl.remaining) ||
      bad(rl.has_reset, rl.reset) || bad(rl.has_window, rl.window))
    abort(); /* values are finite and non-negative */
  free(buf);
  return 0;
}
