/* link.h: a pure C parser for RFC 8288 Link header fields. */
#ifndef SPARK_LINK_H
#define SPARK_LINK_H

#include <stddef.h>

/* Finds the first link-value in `s` (length `len`, a field value or several
 * joined with ",") whose rel parameter holds the relation type `rel` (case
 * insensitive; rel may list several types separated by spaces). On success
 * returns 1 and sets *start and *ulen to the URI-Reference between < and >.
 * Malformed link-values are skipped, never read past `len`. */
int spark_link_find(const char *s, size_t len, const char *rel, size_t *start,
                    size_t *ulen);

#endif
