/* The composition layer's internal API: delayed tasks (timer.c) for
 * futures (future.c). Everything here sits above the pool and uses only its
 * internal API (lib/pool/pool.h). */
#ifndef ALS_COMPOSE_H
#define ALS_COMPOSE_H

#include "pool.h"

/* Queues accepted task t on `pool` after delay_ns (0: as soon as the pool
 * has room; the timer thread waits for it, the caller does not). 0 or
 * ALS_ENOMEM (the task is still the caller's). */
int als__timer_add(als_pool_t *pool, struct als__task *t, uint64_t delay_ns);

#ifdef ALS_FAULT_INJECTION
/* Test builds only: from now on every timer reads `now` (CLOCK_MONOTONIC
 * ns) as the time, so a test gives delayed tasks exact due times and makes
 * them come due when it chooses; 0 returns to the real clock. Process-wide;
 * kicks `pool`'s timer thread (NULL: none) to look again. */
void als__test_timer_clock(als_pool_t *pool, uint64_t now);
#endif

#endif
