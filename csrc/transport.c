/* transport.c: one HTTP attempt over a reused libcurl easy handle. */
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Grows *buf to hold `need` bytes; returns 0 on success. */
static int grow(char **buf, size_t *cap, size_t need) {
  size_t ncap = *cap ? *cap : 1024;
  char *nbuf;
  if (need <= *cap)
    return 0;
  while (ncap < need)
    ncap *= 2;
  nbuf = realloc(*buf, ncap);
  if (nbuf == NULL)
    return -1;
  *buf = nbuf;
  *cap = ncap;
  return 0;
}

static size_t abort_with(spark_transport *t, const char *kind,
                         const char *message) {
  t->abort_kind = kind;
  t->abort_message = message;
  return 0; /* any count but the one given makes curl abort */
}

/* An error answer's body is kept up to this size and the rest dropped, so
 * that a 429 or 5xx with a huge body still counts (status, Retry-After). */
#define SPARK_MAX_ERROR_BODY ((size_t)64 * 1024)

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  spark_transport *t = ud;
  size_t len = size * n, keep = len;
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299) {
    size_t cap =
        t->max_body < SPARK_MAX_ERROR_BODY ? t->max_body : SPARK_MAX_ERROR_BODY;
    /* cppcheck (2.10) assumes max_body may be 0 here; it is >= 1 */
    /* cppcheck-suppress knownConditionTrueFalse */
    size_t room = cap > t->body_len ? cap - t->body_len : 0;
    /* cppcheck-suppress unsignedLessThanZero */
    keep = len < room ? len : room;
  } else if (len > t->max_body - t->body_len) {
    return abort_with(t, "too_large", "response body exceeds max_body");
  }
  if (keep == 0)
    return len;
  len = keep;
  if (grow(&t->body, &t->body_cap, t->body_len + len + 1) != 0)
    return abort_with(t, "network", "out of memory for the response body");
  memcpy(t->body + t->body_len, data, len);
  t->body_len += len;
  return size * n;
}

static int is_ows(char c) {
  return c == ' ' || c == '\t';
}

/* Appends s[0..n) and a NUL to hbuf; returns the offset or -1. */
static long hbuf_put(spark_transport *t, const char *s, size_t n) {
  size_t at = t->hbuf_len;
  if (n + 1 > SPARK_MAX_HEADER_BYTES - t->hbuf_len)
    return -1;
  if (grow(&t->hbuf, &t->hbuf_cap, t->hbuf_len + n + 1) != 0)
    return -1;
  memcpy(t->hbuf + at, s, n);
  t->hbuf[at + n] = '\0';
  t->hbuf_len += n + 1;
  return (long)at;
}

static size_t on_header(char *line, size_t size, size_t n, void *ud) {
  return spark_transport_header_line(ud, line, size * n);
}

size_t spark_transport_header_line(spark_transport *t, const char *line,
                                   size_t len) {
  size_t name_len;
  const char *colon, *v, *end = line + len;
  long noff, voff;
  spark_header *h;

  if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    /* a new response (after a 1xx or an auth round): forget the last */
    t->nhdrs = 0;
    t->hbuf_len = 0;
    return len;
  }
  while (end > line && (end[-1] == '\r' || end[-1] == '\n' || is_ows(end[-1])))
    end--;
  if (end == line)
    return len; /* the blank line ending the header section */
  if (is_ows(line[0])) {
    /* obsolete line folding: continue the last value */
    const char *s = line;
    size_t last;
    if (t->nhdrs == 0)
      return len;
    while (s < end && is_ows(*s))
      s++;
    last = t->hbuf_len - 1; /* the NUL ending the last value */
    t->hbuf[last] = ' ';
    t->hbuf_len = last + 1;
    if (hbuf_put(t, s, (size_t)(end - s)) < 0)
      return abort_with(t, "too_large", "response headers exceed 1 MiB");
    t->hdrs[t->nhdrs - 1].value_len += 1 + (size_t)(end - s);
    return len;
  }
  colon = memchr(line, ':', (size_t)(end - line));
  if (colon == NULL || colon == line)
    return len; /* not a field: ignore it, as curl does */
  name_len = (size_t)(colon - line);
  v = colon + 1;
  while (v < end && is_ows(*v))
    v++;
  if (t->nhdrs == SPARK_MAX_HEADERS)
    return abort_with(t, "too_large", "too many response header fields");
  if (t->nhdrs == t->hdrs_cap) {
    size_t ncap = t->hdrs_cap ? t->hdrs_cap * 2 : 32;
    spark_header *nh = realloc(t->hdrs, ncap * sizeof *nh);
    if (nh == NULL)
      return abort_with(t, "network", "out of memory for the headers");
    t->hdrs = nh;
    t->hdrs_cap = ncap;
  }
  noff = hbuf_put(t, line, name_len);
  voff = noff < 0 ? -1 : hbuf_put(t, v, (size_t)(end - v));
  if (voff < 0)
    return abort_with(t, "too_large", "response headers exceed 1 MiB");
  h = &t->hdrs[t->nhdrs++];
  h->name = (size_t)noff;
  h->name_len = name_len;
  h->value = (size_t)voff;
  h->value_len = (size_t)(end - v);
  return len;
}

int spark_transport_open(spark_transport *t, const char *token,
                         const char *ca_file) {
  CURL *e;
  memset(t, 0, sizeof *t);
  e = curl_easy_init();
  if (e == NULL)
    return -1;
  t->easy = e;
  if (curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEDATA, t) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERDATA, t) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER) !=
          CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, token) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_USERAGENT, "spark/0.1") != CURLE_OK ||
      (ca_file != NULL &&
       curl_easy_setopt(e, CURLOPT_CAINFO, ca_file) != CURLE_OK)) {
    spark_transport_close(t);
    return -1;
  }
  return 0;
}

void spark_transport_close(spark_transport *t) {
  if (t->easy != NULL)
    curl_easy_cleanup(t->easy);
  free(t->body);
  free(t->hbuf);
  free(t->hdrs);
  memset(t, 0, sizeof *t);
}

/* Sets the method and body; returns CURLE_OK or the first failure. */
static CURLcode set_method(CURL *e, const spark_request *rq) {
  CURLcode rc = curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
  if (rc != CURLE_OK || strcmp(rq->method, "GET") == 0)
    return rc;
  if (strcmp(rq->method, "HEAD") == 0)
    return curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  if (rq->body != NULL || strcmp(rq->method, "POST") == 0) {
    rc = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                          (curl_off_t)rq->body_len);
    if (rc == CURLE_OK)
      rc = curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                            rq->body != NULL ? rq->body : "");
    if (rc != CURLE_OK || strcmp(rq->method, "POST") == 0)
      return rc;
  }
  return curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method);
}

static spark_result failure(spark_transport *t, const char *kind,
                            const char *what) {
  spark_result r;
  memset(&r, 0, sizeof r);
  snprintf(t->message, sizeof t->message, "%s", what);
  r.kind = kind;
  r.message = t->message;
  return r;
}

/* Failures that a new attempt may well not meet. */
static int is_transient(CURLcode rc) {
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_SSL_CONNECT_ERROR:
    return 1;
  default:
    return 0;
  }
}

spark_result spark_transport_perform(spark_transport *t,
                                     const spark_request *rq) {
  CURL *e = t->easy;
  struct curl_slist *hl = NULL, *next;
  CURLcode rc;
  spark_result r;
  long status = 0;

  t->body_len = 0;
  t->nhdrs = 0;
  t->hbuf_len = 0;
  t->errbuf[0] = '\0';
  t->abort_kind = NULL;
  t->max_body = rq->max_body;

  next = curl_slist_append(hl, "Accept: application/json");
  if (next != NULL) {
    hl = next;
    next = curl_slist_append(hl, "Expect:");
  }
  if (next != NULL && rq->content_type != NULL) {
    char ctype[256];
    hl = next;
    snprintf(ctype, sizeof ctype, "Content-Type: %s", rq->content_type);
    next = curl_slist_append(hl, ctype);
  }
  if (next == NULL) {
    curl_slist_free_all(hl);
    return failure(t, "network", "out of memory for the request headers");
  }
  hl = next;

  rc = curl_easy_setopt(e, CURLOPT_URL, rq->url);
  if (rc == CURLE_OK)
    rc = set_method(e, rq);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, rq->connect_timeout_ms);
  /* never a proxy for plain http (loopback, or allow_insecure): the
   * token would cross it in clear text; https keeps the environment's */
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_NOPROXY,
                          strncasecmp(rq->url, "http:", 5) == 0 ? "*"
                                                                : (char *)NULL);
  if (rc == CURLE_OK)
    rc = curl_easy_perform(e);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
  curl_slist_free_all(hl);
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);

  if (grow(&t->body, &t->body_cap, t->body_len + 1) != 0 || t->body == NULL)
    return failure(t, "network", "out of memory for the response body");
  t->body[t->body_len] = '\0';

  if (t->abort_kind != NULL)
    return failure(t, t->abort_kind, t->abort_message);
  if (rc != CURLE_OK) {
    char what[CURL_ERROR_SIZE + 48];
    long request_size = 0;
    snprintf(what, sizeof what, "curl: (%d) %s", (int)rc,
             t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
    r = failure(t, rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network",
                what);
    r.retryable = is_transient(rc);
    curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &request_size);
    r.sent = request_size > 0;
    return r;
  }
  memset(&r, 0, sizeof r);
  r.status = status;
  return r;
}

const char *spark_transport_header(const spark_transport *t, const char *name,
                                   size_t n) {
  size_t i, len = strlen(name);
  for (i = 0; i < t->nhdrs; i++) {
    const spark_header *h = &t->hdrs[i];
    if (h->name_len == len && strncasecmp(t->hbuf + h->name, name, len) == 0) {
      if (n == 0)
        return t->hbuf + h->value;
      n--;
    }
  }
  return NULL;
}
