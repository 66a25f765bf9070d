/* The ck_ring wrapper: the one file that includes Concurrency Kit.
 *
 * ThreadSanitizer cannot see ck's inline-assembly synchronisation, so it
 * would report ck's internal slot accesses as races
 * (../shared/notes/ck-tsan.md). In tsan builds this translation unit is
 * therefore built without TSan instrumentation (lib/CMakeLists.txt), which
 * hides exactly ck's internals, and every item gets its own happens-before
 * edge (lib/tsan.h): the same edge that tells a user's TSan about tasks
 * submitted to a release libals. All code outside this file, including
 * every task and all of libals's own state, stays fully checked. */
#include "queue.h"
#include "internal.h"
#include "tsan.h"

#include <sched.h>
#include <stdlib.h>

int als__queue_init(struct als__queue *q, unsigned size)
{
    q->buf = als__calloc(size, sizeof *q->buf);
    if (!q->buf)
        return ALS_ENOMEM;
    ck_ring_init(&q->ring, size);
    q->p_head = 0;
    q->c_seen = 0;
    return 0;
}

void als__queue_fini(struct als__queue *q)
{
    als__free(q->buf);
    q->buf = NULL;
}

/* ck_ring_enqueue_reserve_mpmc, reading the consumers' head only when the
 * ring looks full by the last value a producer read (c_seen, a value of
 * the past: the ring can only be emptier than it says). ck reads the head
 * at every push, a line every consumer writes at every pop: that miss was
 * most of the push's cost (perf, bench/pool requests at 1 worker: 59% of
 * als__queue_push's samples on the instruction after its CAS). c_seen is
 * refreshed about once per ring's worth of pushes. */
static ck_ring_buffer_t *reserve(struct als__queue *q, unsigned *ticket)
{
    struct ck_ring *ring = &q->ring;
    const unsigned mask = ring->mask;
    unsigned producer = ck_pr_load_uint(&q->p_head);
    for (;;) {
        unsigned consumer = ck_pr_load_uint(&q->c_seen);
        if (ALS__UNLIKELY(producer - consumer >= mask)) {
            ck_pr_fence_load();
            consumer = ck_pr_load_uint(&ring->c_head);
            /* Acquire: the consumers read the slots up to their head
             * before they moved it (ck's dequeue: read, fence, CAS); a
             * producer reusing a slot must come after that read, also
             * one that learns the head from c_seen (release below). */
            ck_pr_fence_acquire();
            if (producer - consumer >= mask) {
                ck_pr_fence_load();
                unsigned now = ck_pr_load_uint(&q->p_head);
                if (now == producer)
                    return NULL; /* full */
                producer = now;
                continue;
            }
            ck_pr_fence_release();
            ck_pr_store_uint(&q->c_seen, consumer);
        } else {
            ck_pr_fence_acquire(); /* pairs with the release above */
        }
        if (ck_pr_cas_uint_value(&q->p_head, producer, producer + 1, &producer))
            break;
    }
    *ticket = producer;
    return &q->buf[producer & mask];
}

/* An MPMC push, with a politer commit than ck's. After reserving its ticket
 * a producer must wait until every earlier producer has committed; ck
 * spins for that. A producer preempted between reserve and commit then
 * makes all later producers spin out whole time slices: with many
 * submitter threads on few CPUs that convoy stalled the pool for seconds.
 * We spin briefly, then yield the CPU, which is what the preempted
 * producer needs. */
bool als__queue_push(struct als__queue *q, void *item)
{
    unsigned ticket;
    ck_ring_buffer_t *slot = reserve(q, &ticket);
    if (!slot)
        return false;
    als__hb_release(item);
    ck_pr_store_ptr(&slot->value, item);
    for (unsigned spins = 0; ck_pr_load_uint(&q->ring.p_tail) != ticket; spins++) {
        if (spins < 64)
            ck_pr_stall();
        else
            sched_yield();
    }
    /* A locked exchange rather than ck's plain store: it orders the commit
     * before any later load (x86-64), which the pool's wake-up check
     * relies on (see queue.h). */
    ck_pr_fas_uint(&q->ring.p_tail, ticket + 1);
    return true;
}

bool als__queue_push_owner(struct als__queue *q, void *item)
{
    als__hb_release(item);
    return ck_ring_enqueue_spmc(&q->ring, q->buf, item);
}

void *als__queue_pop(struct als__queue *q)
{
    void *item;
    if (!ck_ring_dequeue_mpmc(&q->ring, q->buf, &item))
        return NULL;
    als__hb_acquire(item);
    return item;
}

/* ck's multi-consumer dequeue (_ck_ring_dequeue_mc) for n items at once:
 * read them, then claim them all by moving the consumer head past them. A
 * consumer that takes several tasks per claim moves the head's cache line
 * between CPUs once for all of them. */
unsigned als__queue_pop_many(struct als__queue *q, void **items, unsigned max)
{
    struct ck_ring *ring = &q->ring;
    const unsigned mask = ring->mask;
    unsigned consumer = ck_pr_load_uint(&ring->c_head), n;
    do {
        ck_pr_fence_load();
        n = ck_pr_load_uint(&ring->p_tail) - consumer;
        if (n == 0)
            return 0;
        if (n > max)
            n = max;
        ck_pr_fence_load();
        for (unsigned i = 0; i < n; i++)
            items[i] = ck_pr_load_ptr(&q->buf[(consumer + i) & mask].value);
        ck_pr_fence_store_atomic();
    } while (!ck_pr_cas_uint_value(&ring->c_head, consumer, consumer + n, &consumer));
    for (unsigned i = 0; i < n; i++)
        als__hb_acquire(items[i]);
    return n;
}

unsigned als__queue_length(struct als__queue *q)
{
    return ck_ring_size(&q->ring);
}
