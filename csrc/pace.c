/* pace.c: GCRA and adaptive (CUBIC) client-side pacing (pure C). */
#include "pace.h"

#include <math.h>
#include <string.h>

void spark_pace_init(spark_pace *p, spark_pace_mode mode, double rate,
                     double burst) {
  memset(p, 0, sizeof *p);
  p->mode = mode;
  p->rate = mode == SPARK_PACE_FIXED ? rate : 0;
  p->burst = mode == SPARK_PACE_FIXED && burst >= 1 ? burst : 1;
  p->bucket_start = -1;
}

double spark_pace_delay(const spark_pace *p, double now) {
  double interval, allowed_at;
  if (p->mode == SPARK_PACE_NONE || p->rate <= 0)
    return 0;
  interval = 1.0 / p->rate;
  if (p->mode == SPARK_PACE_ADAPTIVE)
    /* evenly spaced at the current pace, which changes with every answer */
    allowed_at = p->last_sent + interval;
  else
    /* GCRA: a request may go once now >= TAT - (burst - 1) * interval */
    allowed_at = p->tat - (p->burst - 1) * interval;
  return allowed_at > now ? allowed_at - now : 0;
}

/* Folds the sends of the finished measurement buckets into `measured`. */
static void measure(spark_pace *p, double now) {
  double elapsed;
  if (p->bucket_start < 0) {
    p->bucket_start = now;
    return;
  }
  elapsed = now - p->bucket_start;
  if (elapsed < SPARK_PACE_BUCKET)
    return;
  p->measured = SPARK_PACE_SMOOTH * (p->bucket_count / elapsed) +
                (1 - SPARK_PACE_SMOOTH) * p->measured;
  p->bucket_start = now;
  p->bucket_count = 0;
}

void spark_pace_sent(spark_pace *p, double now) {
  if (p->mode == SPARK_PACE_NONE)
    return;
  p->last_sent = now;
  if (p->rate > 0)
    p->tat = (p->tat > now ? p->tat : now) + 1.0 / p->rate;
  if (p->mode == SPARK_PACE_ADAPTIVE) {
    measure(p, now);
    p->bucket_count += 1;
  }
}

/* The send rate seen so far: the smoothed measurement, or the current
 * bucket's when no bucket has finished yet. */
static double send_rate(const spark_pace *p, double now) {
  double elapsed = now - p->bucket_start;
  if (p->measured > 0)
    return p->measured;
  if (p->bucket_start >= 0 && elapsed > 0)
    return p->bucket_count / elapsed;
  return 0;
}

static double at_least_min(double r) {
  return r < SPARK_PACE_MIN_RATE ? SPARK_PACE_MIN_RATE : r;
}

void spark_pace_answer(spark_pace *p, double now, int throttled,
                       const spark_ratelimit *rl) {
  double seen;
  if (p->mode != SPARK_PACE_ADAPTIVE)
    return;
  measure(p, now);
  seen = send_rate(p, now);
  if (throttled) {
    double base = p->rate > 0 && p->rate < seen ? p->rate : seen;
    if (base <= 0)
      base = p->rate > 0 ? p->rate : SPARK_PACE_MIN_RATE;
    p->last_max_rate = base;
    p->last_throttle = now;
    p->rate = at_least_min(base * SPARK_PACE_BETA);
  } else if (p->rate > 0) {
    /* CUBIC growth back towards last_max_rate, and beyond it slowly */
    double k =
        cbrt(p->last_max_rate * (1 - SPARK_PACE_BETA) / SPARK_PACE_SCALE);
    double t = now - p->last_throttle - k;
    double r = SPARK_PACE_SCALE * t * t * t + p->last_max_rate;
    if (seen > 0 && r > 2 * seen)
      r = 2 * seen;
    p->rate = at_least_min(r);
  }
  if (rl != NULL) {
    /* the server's own numbers cap the pace (Retry-After still wins) */
    double cap = HUGE_VAL;
    if (rl->has_limit && rl->has_window && rl->window > 0)
      cap = rl->limit / rl->window;
    if (rl->has_remaining && rl->has_reset && rl->reset > 0 &&
        rl->remaining / rl->reset < cap)
      cap = rl->remaining / rl->reset;
    if (cap < HUGE_VAL && (p->rate <= 0 || cap < p->rate)) {
      if (p->rate <= 0) {
        p->last_max_rate = cap;
        p->last_throttle = now;
      }
      p->rate = at_least_min(cap);
    }
  }
}
