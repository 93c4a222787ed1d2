/* transport.h: one HTTP attempt over libcurl. Knows curl, not Lua. */
#ifndef SPARK_TRANSPORT_H
#define SPARK_TRANSPORT_H

#include <stddef.h>
#include <curl/curl.h>

/* Caps on what one response may make us hold. */
#define SPARK_MAX_HEADER_BYTES ((size_t)1024 * 1024)
#define SPARK_MAX_HEADERS 10000

typedef struct {
  size_t name, name_len, value, value_len; /* offsets into hbuf */
} spark_header;

typedef struct {
  CURL *easy;
  char errbuf[CURL_ERROR_SIZE];
  /* the body of the current response, capped at max_body */
  char *body;
  size_t body_len, body_cap, max_body;
  /* the header fields of the current (last) response */
  char *hbuf;
  size_t hbuf_len, hbuf_cap;
  spark_header *hdrs;
  size_t nhdrs, hdrs_cap;
  /* why a callback aborted the transfer, if one did */
  const char *abort_kind, *abort_message;
  char message[CURL_ERROR_SIZE + 64];
} spark_transport;

typedef struct {
  const char *method; /* "GET", "POST", ... */
  const char *url;
  const char *body; /* NULL: no request body */
  size_t body_len;
  const char *content_type; /* of body; NULL for none */
  long timeout_ms, connect_timeout_ms;
  size_t max_body;
} spark_request;

typedef struct {
  const char *kind;    /* NULL on success, else "network", "timeout",
                          "too_large" */
  const char *message; /* valid until the next perform */
  long status;         /* HTTP status, 0 when none arrived */
  int retryable;       /* a failure that a new attempt may not meet */
  int sent;            /* some of the request went out */
} spark_result;

/* Creates the easy handle with the options every request shares: the bearer
 * `token` (curl keeps its own copy) and `ca_file` (NULL: the system's CA
 * store). Returns 0 on success, -1 when curl could not be set up. */
int spark_transport_open(spark_transport *t, const char *token,
                         const char *ca_file);

/* Frees everything; safe to call twice. */
void spark_transport_close(spark_transport *t);

/* Performs one attempt, blocking. Response headers and body stay in `t`
 * until the next call. */
spark_result spark_transport_perform(spark_transport *t,
                                     const spark_request *rq);

/* Takes one header line of a response (with or without its CRLF) as
 * curl's header callback gives it: a status line starts a new header set;
 * fields are stored, obsolete folding continues the last one. Returns
 * `len`, or 0 when a cap was hit (abort_kind is set). Exposed for the
 * fuzzer; `t` needs no curl handle for it. */
size_t spark_transport_header_line(spark_transport *t, const char *line,
                                   size_t len);

/* The n-th value of header `name` (case-insensitive) of the last response,
 * NUL-terminated, or NULL. */
const char *spark_transport_header(const spark_transport *t, const char *name,
                                   size_t n);

#endif
