/* libFuzzer harness: the RFC 8288 Link parser (link.c). The input is the
 * field value, in a buffer of exactly its size, so that any read past its
 * end is caught by AddressSanitizer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "link.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size ? size : 1);
  size_t start = 0, len = 0;
  if (buf == NULL)
    return 0;
  memcpy(buf, data, size);
  if (spark_link_find(buf, size, "next", &start, &len) &&
      (start > size || len > size - start))
    abort(); /* the URI must lie inside the input */
  free(buf);
  return 0;
}
