/* link.c: RFC 8288 Link header parsing (pure C). */
#include "link.h"

#include <string.h>
#include <strings.h>

typedef struct {
  const char *s;
  size_t len, pos;
} scanner;

static int peek(const scanner *sc) {
  return sc->pos < sc->len ? (unsigned char)sc->s[sc->pos] : -1;
}

static void skip_ows(scanner *sc) {
  while (peek(sc) == ' ' || peek(sc) == '\t')
    sc->pos++;
}

/* RFC 9110 tchar. */
static int is_tchar(int c) {
  return c > 0x20 && c < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", c) == NULL;
}

/* Reads a token; returns its length (0 when there is none). */
static size_t read_token(scanner *sc, size_t *start) {
  *start = sc->pos;
  while (is_tchar(peek(sc)))
    sc->pos++;
  return sc->pos - *start;
}

/* Skips a quoted-string whose opening quote is at pos. Returns 0 when it is
 * not closed. The raw span (escapes kept) is given back. */
static int read_quoted(scanner *sc, size_t *start, size_t *qlen) {
  sc->pos++; /* the opening quote */
  *start = sc->pos;
  while (sc->pos < sc->len) {
    int c = peek(sc);
    if (c == '\\' && sc->pos + 1 < sc->len) {
      sc->pos += 2;
    } else if (c == '"') {
      *qlen = sc->pos - *start;
      sc->pos++;
      return 1;
    } else {
      sc->pos++;
    }
  }
  return 0;
}

/* Whether the space separated list s[0..n) holds `rel` (escapes, which a
 * relation type never needs, make a word not match). */
static int rel_has(const char *s, size_t n, const char *rel) {
  size_t rlen = strlen(rel), i = 0;
  while (i < n) {
    size_t w;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
      i++;
    w = i;
    while (i < n && s[i] != ' ' && s[i] != '\t')
      i++;
    if (i - w == rlen && strncasecmp(s + w, rel, rlen) == 0)
      return 1;
  }
  return 0;
}

/* Skips to just past the next "," outside quotes and angle brackets. */
static void skip_to_next_value(scanner *sc) {
  while (sc->pos < sc->len) {
    int c = peek(sc);
    if (c == ',') {
      sc->pos++;
      return;
    }
    if (c == '"') {
      size_t a, b;
      if (!read_quoted(sc, &a, &b))
        return;
    } else if (c == '<') {
      const char *gt = memchr(sc->s + sc->pos, '>', sc->len - sc->pos);
      sc->pos = gt ? (size_t)(gt - sc->s) + 1 : sc->len;
    } else {
      sc->pos++;
    }
  }
}

/* Parses the parameters after a URI; returns 1 when the first rel
 * parameter holds `rel` (RFC 8288: later rel parameters are ignored). */
static int params_have_rel(scanner *sc, const char *rel) {
  int found = 0, seen_rel = 0;
  for (;;) {
    size_t nstart, nlen, vstart = 0, vlen = 0;
    skip_ows(sc);
    if (peek(sc) != ';')
      return found;
    sc->pos++;
    skip_ows(sc);
    nlen = read_token(sc, &nstart);
    if (nlen == 0)
      return found;
    skip_ows(sc);
    if (peek(sc) == '=') {
      sc->pos++;
      skip_ows(sc);
      if (peek(sc) == '"') {
        if (!read_quoted(sc, &vstart, &vlen))
          return found;
      } else {
        vlen = read_token(sc, &vstart);
      }
    }
    if (nlen == 3 && strncasecmp(sc->s + nstart, "rel", 3) == 0 && !seen_rel) {
      seen_rel = 1;
      found = rel_has(sc->s + vstart, vlen, rel);
    }
  }
}

int spark_link_find(const char *s, size_t len, const char *rel, size_t *start,
                    size_t *ulen) {
  scanner sc;
  sc.s = s;
  sc.len = len;
  sc.pos = 0;
  while (sc.pos < sc.len) {
    const char *gt;
    size_t ustart, uend;
    skip_ows(&sc);
    if (peek(&sc) == ',') {
      sc.pos++;
      continue;
    }
    if (peek(&sc) != '<') {
      skip_to_next_value(&sc);
      continue;
    }
    ustart = sc.pos + 1;
    gt = memchr(s + ustart, '>', len - ustart);
    if (gt == NULL)
      return 0;
    uend = (size_t)(gt - s);
    sc.pos = uend + 1;
    if (params_have_rel(&sc, rel)) {
      *start = ustart;
      *ulen = uend - ustart;
      return 1;
    }
    skip_to_next_value(&sc);
  }
  return 0;
}
