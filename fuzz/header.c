/* libFuzzer harness: the header line capture of transport.c. The input is
 * a response head, fed line by line (each line in a buffer of exactly its
 * size) as curl's header callback would, then every stored field is looked
 * up by name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  spark_transport t;
  size_t pos = 0, i;
  memset(&t, 0, sizeof t);
  while (pos < size) {
    const uint8_t *nl = memchr(data + pos, '\n', size - pos);
    size_t len = nl ? (size_t)(nl - (data + pos)) + 1 : size - pos;
    char *line = malloc(len);
    if (line == NULL)
      break;
    memcpy(line, data + pos, len);
    if (spark_transport_header_line(&t, line, len) != len) {
      free(line);
      break; /* a cap was hit: the transfer would abort */
    }
    free(line);
    pos += len;
  }
  for (i = 0; i < t.nhdrs; i++) {
    char name[64];
    size_t n = t.hdrs[i].name_len < sizeof name - 1 ? t.hdrs[i].name_len
                                                    : sizeof name - 1;
    memcpy(name, t.hbuf + t.hdrs[i].name, n);
    name[n] = '\0';
    if (strlen(name) == n && spark_transport_header(&t, name, 0) == NULL &&
        n == t.hdrs[i].name_len)
      abort(); /* a stored field must be found by its name */
  }
  spark_transport_close(&t);
  return 0;
}
