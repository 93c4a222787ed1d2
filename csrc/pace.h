/* pace.h: pure C client-side pacing, so that a client avoids 429s instead
 * of meeting them. Knows nothing of Lua or curl; all times are seconds on
 * the caller's monotonic clock.
 *
 * Fixed pacing is GCRA (the generic cell rate algorithm): `rate` requests
 * per second with bursts of up to `burst`. Adaptive pacing starts unlimited;
 * on a 429 it paces at the measured send rate times 0.7, then grows back
 * along a CUBIC curve towards the rate it was throttled at, never above
 * twice the measured send rate (as AWS's adaptive retry mode). RateLimit
 * headers, when a server sends them, cap the adaptive pace too. */
#ifndef SPARK_PACE_H
#define SPARK_PACE_H

#include "ratelimit.h"

typedef enum {
  SPARK_PACE_NONE,
  SPARK_PACE_FIXED,
  SPARK_PACE_ADAPTIVE
} spark_pace_mode;

#define SPARK_PACE_BETA 0.7     /* multiplicative decrease on a 429 */
#define SPARK_PACE_SCALE 0.4    /* CUBIC scale */
#define SPARK_PACE_MIN_RATE 0.5 /* the adaptive pace never goes below */
#define SPARK_PACE_BUCKET 0.5   /* seconds per send-rate measurement */
#define SPARK_PACE_SMOOTH 0.8   /* weight of the newest measurement */

typedef struct {
  spark_pace_mode mode;
  double rate;      /* fixed: requests per second; adaptive: the current pace
                       (0 while unthrottled) */
  double burst;     /* requests allowed at once (fixed); 1 when adaptive */
  double tat;       /* GCRA's theoretical arrival time of the next request */
  double last_sent; /* when the last request went out */
  /* adaptive */
  double last_max_rate; /* the pace when the last 429 came */
  double last_throttle; /* when it came */
  double measured;      /* smoothed send rate, requests per second */
  double bucket_start;  /* start of the current measurement bucket */
  double bucket_count;  /* sends in it */
} spark_pace;

/* Sets up pacing: SPARK_PACE_NONE, FIXED with rate > 0 and burst >= 1, or
 * ADAPTIVE. */
void spark_pace_init(spark_pace *p, spark_pace_mode mode, double rate,
                     double burst);

/* Seconds to wait before a request may be sent at `now` (0: send now). */
double spark_pace_delay(const spark_pace *p, double now);

/* Records a request sent at `now`. */
void spark_pace_sent(spark_pace *p, double now);

/* Records an answer received at `now`: `throttled` for a 429; `rl` the
 * answer's RateLimit information (may be NULL). */
void spark_pace_answer(spark_pace *p, double now, int throttled,
                       const spark_ratelimit *rl);

#endif
