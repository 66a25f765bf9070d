/* The pool's queue (lib/pool/queue.c), on its own: FIFO order, exact
 * capacity, tickets that wrap, a producer stalled between taking its
 * ticket and publishing (it must hold up no other producer: ck_ring's
 * MPMC ring made them wait, which convoyed several outside submitters),
 * and many producers and consumers at once with nothing lost, repeated or
 * reordered. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "queue.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SIZE 8

static int items[4 * SIZE]; /* addresses to queue */

static void fifo_and_exact_capacity(void **state)
{
    (void)state;
    struct als__queue q;
    assert_int_equal(als__queue_init(&q, SIZE), 0);
    assert_null(als__queue_pop(&q));
    assert_false(als__queue_ready(&q));
    for (int i = 0; i < SIZE; i++)
        assert_true(als__queue_push(&q, &items[i]));
    assert_false(als__queue_push(&q, &items[SIZE])); /* full: SIZE items */
    assert_int_equal(als__queue_length(&q), SIZE); /* recorded at ticket 7 */
    assert_true(als__queue_ready(&q));
    for (int i = 0; i < SIZE; i++)
        assert_ptr_equal(als__queue_pop(&q), &items[i]);
    assert_null(als__queue_pop(&q));
    assert_int_equal(als__queue_length(&q), 0);
    als__queue_fini(&q);
}

/* The owner's push and claims of several items, across many laps of a
 * small queue. */
static void owner_push_and_pop_many(void **state)
{
    (void)state;
    struct als__queue q;
    assert_int_equal(als__queue_init(&q, 4), 0);
    void *got[8];
    for (int lap = 0; lap < 1000; lap++) {
        for (int i = 0; i < 4; i++)
            assert_true(als__queue_push_owner(&q, &items[i]));
        assert_false(als__queue_push_owner(&q, &items[4]));
        assert_int_equal(als__queue_pop_many(&q, got, 3), 3);
        for (int i = 0; i < 3; i++)
            assert_ptr_equal(got[i], &items[i]);
        assert_true(als__queue_push(&q, &items[5]));
        assert_int_equal(als__queue_pop_many(&q, got, 8), 2);
        assert_ptr_equal(got[0], &items[3]);
        assert_ptr_equal(got[1], &items[5]);
        assert_int_equal(als__queue_pop_many(&q, got, 8), 0);
    }
    als__queue_fini(&q);
}

/* Tickets are unsigned and wrap at 2^32 (queue.c): start the queue just
 * below the wrap. */
static void tickets_wrap(void **state)
{
    (void)state;
    struct als__queue q;
    assert_int_equal(als__queue_init(&q, SIZE), 0);
    unsigned start = UINT_MAX - 2;
    q.head = q.tail = start;
    for (unsigned k = 0; k < SIZE; k++)
        q.slots[(start + k) & q.mask].seq = start + k;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < SIZE; i++)
            assert_true(als__queue_push(&q, &items[i]));
        assert_false(als__queue_push(&q, &items[SIZE]));
        /* Recorded at the last ticket of each ALS__QUEUE_LENGTH_EVERY. */
        assert_true(SIZE - als__queue_length(&q) < ALS__QUEUE_LENGTH_EVERY);
        for (int i = 0; i < SIZE; i++)
            assert_ptr_equal(als__queue_pop(&q), &items[i]);
        assert_null(als__queue_pop(&q));
    }
    als__queue_fini(&q);
}

/* A producer that took ticket 0 and was preempted before publishing. The
 * pushes after it return at once; consumers see the queue empty (not
 * ready) until ticket 0 is published, then get everything in order. */
static void stalled_producer_holds_up_no_producer(void **state)
{
    (void)state;
    struct als__queue q;
    assert_int_equal(als__queue_init(&q, SIZE), 0);
    q.tail++; /* ticket 0 taken, as by its compare-and-swap */
    for (int i = 1; i < SIZE; i++)
        assert_true(als__queue_push(&q, &items[i]));
    assert_false(als__queue_push(&q, &items[SIZE])); /* full, ticket 0 counted */
    assert_int_equal(als__queue_length(&q), SIZE);
    assert_false(als__queue_ready(&q));
    assert_null(als__queue_pop(&q));
    void *got[SIZE];
    assert_int_equal(als__queue_pop_many(&q, got, SIZE), 0);
    /* The stalled producer resumes. */
    q.slots[0].item = &items[0];
    q.slots[0].seq = 1;
    assert_true(als__queue_ready(&q));
    assert_int_equal(als__queue_pop_many(&q, got, SIZE), SIZE);
    for (int i = 0; i < SIZE; i++)
        assert_ptr_equal(got[i], &items[i]);

    /* Stalled in the middle (ticket SIZE + 2): a claim of several takes
     * the published ones before it and stops there. */
    assert_true(als__queue_push(&q, &items[0]));
    assert_true(als__queue_push(&q, &items[1]));
    unsigned stalled = q.tail++;
    for (int i = 3; i < SIZE; i++)
        assert_true(als__queue_push(&q, &items[i]));
    assert_int_equal(als__queue_pop_many(&q, got, SIZE), 2);
    assert_ptr_equal(got[0], &items[0]);
    assert_ptr_equal(got[1], &items[1]);
    assert_false(als__queue_ready(&q));
    assert_null(als__queue_pop(&q));
    q.slots[stalled & q.mask].item = &items[2];
    q.slots[stalled & q.mask].seq = stalled + 1;
    assert_int_equal(als__queue_pop_many(&q, got, SIZE), SIZE - 2);
    for (int i = 2; i < SIZE; i++)
        assert_ptr_equal(got[i - 2], &items[i]);
    als__queue_fini(&q);
}

/* Two producers recorded their tickets out of order (the earlier one's
 * store landed last): the length lags a queued item, and ready still
 * tells that a pop would find it (lib/pool/sched.c steal_from relies on
 * that). */
static void length_may_lag_ready_does_not(void **state)
{
    (void)state;
    struct als__queue q;
    assert_int_equal(als__queue_init(&q, SIZE), 0);
    assert_true(als__queue_push(&q, &items[0]));
    assert_true(als__queue_push(&q, &items[1]));
    q.tail_seen = 1; /* ticket 0's record, stored after ticket 1's */
    assert_ptr_equal(als__queue_pop(&q), &items[0]);
    assert_int_equal(als__queue_length(&q), 0);
    assert_true(als__queue_ready(&q));
    assert_ptr_equal(als__queue_pop(&q), &items[1]);
    assert_false(als__queue_ready(&q));
    als__queue_fini(&q);
}

/* The length is recorded at every ALS__QUEUE_LENGTH_EVERY-th ticket: it
 * lags the pushes in between, ready does not; an owner's pushes record
 * every one. */
static void length_recorded_every_few_pushes(void **state)
{
    (void)state;
    _Static_assert(2 * ALS__QUEUE_LENGTH_EVERY <= 4 * SIZE, "items");
    struct als__queue q;
    assert_int_equal(als__queue_init(&q, 4 * SIZE), 0);
    for (int i = 0; i < 2 * ALS__QUEUE_LENGTH_EVERY; i++) {
        assert_true(als__queue_push(&q, &items[i]));
        assert_int_equal(als__queue_length(&q),
                         (unsigned)(i + 1) / ALS__QUEUE_LENGTH_EVERY * ALS__QUEUE_LENGTH_EVERY);
        assert_true(als__queue_ready(&q));
    }
    als__queue_fini(&q);
    assert_int_equal(als__queue_init(&q, 4 * SIZE), 0);
    for (int i = 0; i < 3; i++) {
        assert_true(als__queue_push_owner(&q, &items[i]));
        assert_int_equal(als__queue_length(&q), i + 1);
    }
    als__queue_fini(&q);
}

/* ---- many threads ------------------------------------------------------- */

#define PRODUCERS 4
#define CONSUMERS 3
#define PER_PRODUCER 50000
#define SMALL 64 /* a small queue: it fills and wraps often */

struct item {
    unsigned producer, seq;
};

struct mt {
    struct als__queue q;
    struct item items[PRODUCERS][PER_PRODUCER];
    _Atomic unsigned char seen[PRODUCERS][PER_PRODUCER];
    _Atomic unsigned popped;
    bool owner_mode; /* one producer, pushing as the queue's owner */
};

struct consumer {
    struct mt *mt;
    unsigned index;
    unsigned out_of_order; /* items of one producer not in push order */
};

struct producer {
    struct mt *mt;
    unsigned index;
};

static void *produce(void *arg)
{
    struct producer *pr = arg;
    struct mt *mt = pr->mt;
    struct item *its = mt->items[pr->index];
    for (unsigned i = 0; i < PER_PRODUCER; i++)
        while (!(mt->owner_mode ? als__queue_push_owner(&mt->q, &its[i])
                                : als__queue_push(&mt->q, &its[i])))
            sched_yield(); /* full: let a consumer run */
    return NULL;
}

static void *consume(void *arg)
{
    struct consumer *c = arg;
    struct mt *mt = c->mt;
    const unsigned total = (mt->owner_mode ? 1 : PRODUCERS) * PER_PRODUCER;
    unsigned last[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++)
        last[p] = UINT_MAX;
    void *got[8];
    for (unsigned round = c->index;
         atomic_load_explicit(&mt->popped, memory_order_relaxed) < total; round++) {
        unsigned n = round % 2 ? als__queue_pop_many(&mt->q, got, 1 + round % 8)
                               : (got[0] = als__queue_pop(&mt->q)) != NULL;
        if (!n) {
            sched_yield();
            continue;
        }
        for (unsigned k = 0; k < n; k++) {
            struct item *it = got[k];
            if (last[it->producer] != UINT_MAX && it->seq <= last[it->producer])
                c->out_of_order++;
            last[it->producer] = it->seq;
            atomic_fetch_add_explicit(&mt->seen[it->producer][it->seq], 1,
                                      memory_order_relaxed);
        }
        atomic_fetch_add_explicit(&mt->popped, n, memory_order_relaxed);
    }
    return NULL;
}

static void run_threads(bool owner_mode)
{
    struct mt *mt = calloc(1, sizeof *mt);
    assert_non_null(mt);
    mt->owner_mode = owner_mode;
    assert_int_equal(als__queue_init(&mt->q, SMALL), 0);
    unsigned producers = owner_mode ? 1 : PRODUCERS;
    for (unsigned p = 0; p < PRODUCERS; p++)
        for (unsigned i = 0; i < PER_PRODUCER; i++)
            mt->items[p][i] = (struct item){p, i};
    pthread_t pt[PRODUCERS], ct[CONSUMERS];
    struct producer ps[PRODUCERS];
    struct consumer cs[CONSUMERS];
    for (unsigned k = 0; k < CONSUMERS; k++) {
        cs[k] = (struct consumer){mt, k, 0};
        assert_int_equal(pthread_create(&ct[k], NULL, consume, &cs[k]), 0);
    }
    for (unsigned p = 0; p < producers; p++) {
        ps[p] = (struct producer){mt, p};
        assert_int_equal(pthread_create(&pt[p], NULL, produce, &ps[p]), 0);
    }
    for (unsigned p = 0; p < producers; p++)
        assert_int_equal(pthread_join(pt[p], NULL), 0);
    for (unsigned k = 0; k < CONSUMERS; k++)
        assert_int_equal(pthread_join(ct[k], NULL), 0);

    assert_int_equal(atomic_load(&mt->popped), producers * PER_PRODUCER);
    assert_null(als__queue_pop(&mt->q));
    for (unsigned k = 0; k < CONSUMERS; k++)
        assert_int_equal(cs[k].out_of_order, 0);
    for (unsigned p = 0; p < producers; p++)
        for (unsigned i = 0; i < PER_PRODUCER; i++)
            if (atomic_load(&mt->seen[p][i]) != 1)
                fail_msg("item %u of producer %u popped %d times", i, p,
                         atomic_load(&mt->seen[p][i]));
    als__queue_fini(&mt->q);
    free(mt);
}

static void many_producers_many_consumers(void **state)
{
    (void)state;
    run_threads(false);
}

static void owner_and_thieves(void **state)
{
    (void)state;
    run_threads(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fifo_and_exact_capacity),
        cmocka_unit_test(owner_push_and_pop_many),
        cmocka_unit_test(tickets_wrap),
        cmocka_unit_test(stalled_producer_holds_up_no_producer),
        cmocka_unit_test(length_may_lag_ready_does_not),
        cmocka_unit_test(length_recorded_every_few_pushes),
        cmocka_unit_test(many_producers_many_consumers),
        cmocka_unit_test(owner_and_thieves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
