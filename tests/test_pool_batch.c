/*
 * Batched takes (issue 3, queue design): while the ring holds two or more
 * tasks per worker, a worker claims up to 16 at once (at most its share
 * of the ring) and runs them in order. Tasks a worker has taken but not
 * started are still queued in every sense: a CANCEL shutdown cancels
 * them, a self-resubmitting chain in the worker's LIFO slot cannot starve
 * them, and drains wait for them.
 *
 * A one-worker pool held at a gate makes the ring's content exact when the
 * worker takes its batch. Assertions on the main thread only.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "als.h"
#include "gate.h"
#include "pool_helpers.h"

#define N 20 /* counted tasks queued behind the first: more than a claim
                takes (16, the first included), so some stay in the ring */

struct counted {
    _Atomic int fn, cancel;
};

static int counted_fn(void *arg)
{
    atomic_fetch_add(&((struct counted *)arg)->fn, 1);
    return 0;
}

static void counted_cancel(void *arg)
{
    atomic_fetch_add(&((struct counted *)arg)->cancel, 1);
}

static als_pool_t *one_worker_pool(void)
{
    als_pool_options o = {.threads = 1, .queue_capacity = 64};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* The worker takes [second gate task, c0, ..., c14] in one claim and
 * blocks in the first; the CANCEL that begins meanwhile must cancel
 * c0..c14 (taken, not started) as well as c15..c19, still in the ring. */
static void test_cancel_reaches_taken_tasks(void **state)
{
    (void)state;
    als_pool_t *p = one_worker_pool();
    struct gate first, second;
    block_pool(p, &first);
    gate_init(&second);
    assert_int_equal(als_submit(p, gate_task, &second), 0);
    struct counted c[N];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N; i++) {
        als_task t = {.fn = counted_fn, .arg = &c[i], .cancel = counted_cancel};
        assert_int_equal(als_submit_task(p, &t), 0);
    }
    gate_open(&first);
    gate_await_arrivals(&second, 1); /* the batch is taken, its head runs */
    int probes = cancel_shutdown_gated(p, &second);

    for (int i = 0; i < N; i++) {
        if (atomic_load(&c[i].fn) != 0 || atomic_load(&c[i].cancel) != 1)
            fail_msg("task %d: fn %d cancel %d (want 0 1)", i, atomic_load(&c[i].fn),
                     atomic_load(&c[i].cancel));
    }
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 2 + N + (uint64_t)probes);
    assert_int_equal(s.completed, 2);
    assert_int_equal(s.cancelled, N + (uint64_t)probes);
    assert_balanced(&s);
    gate_destroy(&first);
    gate_destroy(&second);
    als_pool_free(p);
}

/* A chain that resubmits itself into the worker's LIFO slot, taken in one
 * claim with the 15 outside tasks behind it (so the ring is then empty
 * and only the worker's batch holds them): it stops once every outside
 * task has run, which happens only if the worker leaves the slot for its
 * taken tasks (after LIFO_MAX links). A starving worker would run the
 * chain to its limit. */
#define CHAIN_LIMIT 1000000
#define BEHIND 15 /* a whole claim: 16 tasks, the chain's first link included */

struct chain {
    als_pool_t *pool;
    struct counted *c;
    long links;
    bool hit_limit;
    int submit_rc;
};

static bool all_ran(const struct counted *c)
{
    for (int i = 0; i < BEHIND; i++)
        if (!atomic_load(&c[i].fn))
            return false;
    return true;
}

static int chain_link(void *arg)
{
    struct chain *ch = arg;
    if (all_ran(ch->c))
        return 0;
    if (++ch->links >= CHAIN_LIMIT) {
        ch->hit_limit = true;
        return 0;
    }
    ch->submit_rc = als_submit(ch->pool, chain_link, ch);
    return ch->submit_rc;
}

static void test_slot_chain_does_not_starve_taken_tasks(void **state)
{
    (void)state;
    als_pool_t *p = one_worker_pool();
    struct gate first;
    block_pool(p, &first);
    struct counted c[BEHIND];
    memset(c, 0, sizeof c);
    struct chain ch = {.pool = p, .c = c};
    assert_int_equal(als_submit(p, chain_link, &ch), 0);
    for (int i = 0; i < BEHIND; i++)
        assert_int_equal(als_submit(p, counted_fn, &c[i]), 0);
    gate_open(&first);
    assert_int_equal(als_pool_drain(p), 0);

    assert_false(ch.hit_limit);
    assert_int_equal(ch.submit_rc, 0);
    for (int i = 0; i < BEHIND; i++)
        assert_int_equal(atomic_load(&c[i].fn), 1);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.submitted, 1 + 1 + BEHIND + (uint64_t)ch.links);
    assert_balanced(&s);
    gate_destroy(&first);
    als_pool_free(p);
}

/* A drain returns only after the tasks a worker had taken have run. */
static void test_drain_waits_for_taken_tasks(void **state)
{
    (void)state;
    als_pool_t *p = one_worker_pool();
    struct gate first;
    block_pool(p, &first);
    struct counted c[N];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N; i++)
        assert_int_equal(als_submit(p, counted_fn, &c[i]), 0);
    gate_open(&first);
    assert_int_equal(als_pool_drain(p), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(atomic_load(&c[i].fn), 1);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.completed, 1 + N);
    assert_balanced(&s);
    gate_destroy(&first);
    als_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_reaches_taken_tasks),
        cmocka_unit_test(test_slot_chain_does_not_starve_taken_tasks),
        cmocka_unit_test(test_drain_waits_for_taken_tasks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
