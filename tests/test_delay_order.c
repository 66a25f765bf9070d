/*
 * Delayed tasks start in due-time order (issue 17). On a one-worker pool,
 * tasks scheduled with als_submit_after in random order start in the order
 * of their due times (submit time + delay), and tasks due at the same time
 * start in the order they were submitted (FIFO among equals). Ordering
 * checks only, no timing assertion:
 *
 * - With the test clock of test builds (als__test_timer_clock, lib/pool/pool.h)
 *   due times are exact: thousands of timers are added while the clock
 *   stands still, then it jumps past them all, and the start order must be
 *   exactly the stable sort by delay. A heap that mis-orders one pop fails.
 * - With the real clock, every build: a task whose due time was certainly
 *   earlier than another's (the other's submit began after this one's had
 *   ended plus the difference of delays) must start first.
 *
 * Tasks record their start position (one worker: a plain counter); the
 * main thread asserts after the drain.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "als.h"

/* Test builds (lib/pool/pool.h); weak so that other builds link and skip. */
extern void als__test_timer_clock(als_pool_t *pool, uint64_t now) __attribute__((weak));

#define US 1000ull
#define MS 1000000ull

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct otask {
    _Atomic unsigned *next_pos;
    unsigned pos;              /* start position, written by the one worker */
    uint64_t delay;
    uint64_t before, after;    /* CLOCK_MONOTONIC around the submit */
};

static int otask_fn(void *arg)
{
    struct otask *t = arg;
    t->pos = atomic_fetch_add_explicit(t->next_pos, 1, memory_order_relaxed);
    return 0;
}

static als_pool_t *one_worker(void)
{
    als_pool_options o = {.threads = 1};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* ---- exact due times (test clock) -------------------------------------- */

static const struct otask *sort_base;

/* By delay, then by submission index: the order the header promises. */
static int by_due(const void *a, const void *b)
{
    unsigned i = *(const unsigned *)a, j = *(const unsigned *)b;
    uint64_t di = sort_base[i].delay, dj = sort_base[j].delay;
    if (di != dj)
        return di < dj ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Adds n timers with the given delays while the clock stands still, lets
 * them all come due at once, and checks the start order exactly. */
static void check_exact_order(const uint64_t *delays, unsigned n)
{
    als_pool_t *p = one_worker();
    struct otask *t = calloc(n, sizeof *t);
    unsigned *want = calloc(n, sizeof *want);
    assert_non_null(t);
    assert_non_null(want);
    _Atomic unsigned next_pos = 0;

    const uint64_t t0 = 1000 * MS; /* any fixed instant */
    als__test_timer_clock(p, t0);
    for (unsigned i = 0; i < n; i++) {
        t[i] = (struct otask){.next_pos = &next_pos, .delay = delays[i]};
        assert_int_equal(als_submit_after(p, delays[i], otask_fn, &t[i]), 0);
    }
    /* Nothing is due yet: every timer is in the heap. */
    assert_int_equal(atomic_load(&next_pos), 0);
    als__test_timer_clock(p, UINT64_MAX - 1);
    assert_int_equal(als_pool_drain(p), 0);
    als__test_timer_clock(NULL, 0);

    for (unsigned i = 0; i < n; i++)
        want[i] = i;
    sort_base = t;
    qsort(want, n, sizeof *want, by_due);
    for (unsigned k = 0; k < n; k++)
        if (t[want[k]].pos != k)
            fail_msg("timer %u (delay %llu ns, submitted %u-th) started %u-th, want %u-th",
                     want[k], (unsigned long long)t[want[k]].delay, want[k], t[want[k]].pos, k);
    assert_int_equal(atomic_load(&next_pos), n);
    als_pool_free(p);
    free(t);
    free(want);
}

/* Thousands pending, random due times with many ties, random order. */
static void thousands_start_in_due_order(void **state)
{
    (void)state;
    if (!als__test_timer_clock)
        skip();
    enum { N = 5000 };
    uint64_t *d = calloc(N, sizeof *d);
    assert_non_null(d);
    for (unsigned i = 0; i < N; i++)
        d[i] = 1 + next_rand() % 700 * US; /* about 7 timers per due time */
    check_exact_order(d, N);
    free(d);
}

/* Few timers, all distinct: the heap's first levels. */
static void few_start_in_due_order(void **state)
{
    (void)state;
    if (!als__test_timer_clock)
        skip();
    for (unsigned n = 2; n <= 40; n++) {
        uint64_t d[40];
        for (unsigned i = 0; i < n; i++)
            d[i] = (i * 7919u % n + 1) * MS; /* a permutation of 1..n ms */
        check_exact_order(d, n);
    }
}

/* Equal due times start in submission order (FIFO among equals). */
static void equal_due_times_are_fifo(void **state)
{
    (void)state;
    if (!als__test_timer_clock)
        skip();
    enum { N = 1000 };
    uint64_t d[N];
    for (unsigned i = 0; i < N; i++)
        d[i] = 5 * MS;
    check_exact_order(d, N);
    /* Two due times interleaved: each its own FIFO. */
    for (unsigned i = 0; i < N; i++)
        d[i] = (i % 2 ? 3 : 4) * MS;
    check_exact_order(d, N);
}

/* ---- the real clock -------------------------------------------------------- */

/* Random delays up to 20 ms, submitted in random order: a task certainly
 * due before another (its latest possible due time is below the other's
 * earliest) starts before it. */
static void real_clock_due_order(void **state)
{
    (void)state;
    enum { N = 400 };
    als_pool_t *p = one_worker();
    struct otask *t = calloc(N, sizeof *t);
    assert_non_null(t);
    _Atomic unsigned next_pos = 0;
    for (unsigned i = 0; i < N; i++) {
        t[i].next_pos = &next_pos;
        t[i].delay = 1 + next_rand() % (20 * MS);
        t[i].before = now_ns();
        assert_int_equal(als_submit_after(p, t[i].delay, otask_fn, &t[i]), 0);
        t[i].after = now_ns();
    }
    assert_int_equal(als_pool_drain(p), 0);
    unsigned checked = 0;
    for (unsigned i = 0; i < N; i++) {
        uint64_t due_latest = t[i].after + t[i].delay;
        for (unsigned j = 0; j < N; j++) {
            if (due_latest >= t[j].before + t[j].delay)
                continue;
            checked++;
            if (t[i].pos > t[j].pos)
                fail_msg("timer %u (due by %llu) started after timer %u (due from %llu)", i,
                         (unsigned long long)due_latest, j,
                         (unsigned long long)(t[j].before + t[j].delay));
        }
    }
    /* Most pairs are certain unless the machine stalled for the whole run. */
    print_message("real_clock_due_order: %u of %u ordered pairs certain\n", checked,
                  N * (N - 1) / 2);
    als_pool_free(p);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(thousands_start_in_due_order),
        cmocka_unit_test(few_start_in_due_order),
        cmocka_unit_test(equal_due_times_are_fifo),
        cmocka_unit_test(real_clock_due_order),
    };
    return cmocka_run_group_tests_name("delay_order", tests, NULL, NULL);
}
