/* The pool's queue, written with Concurrency Kit's atomics (ck_pr); the
 * one file that includes ck. Its consumers work as ck_ring's do (read the
 * oldest slots, then claim them by moving the head with a compare-and-swap;
 * they never write a slot), and its producers as ck_ring's up to the
 * commit: a producer takes a ticket with a compare-and-swap on the tail,
 * writes its slot, then publishes it in the slot's own sequence word (as
 * in Dmitry Vyukov's bounded MPMC queue) instead of moving a shared
 * commit index.
 *
 * Why not ck_ring's MPMC ring itself, which this file wrapped before:
 * there a producer, after taking its ticket, waits until every earlier
 * producer has moved the commit index past theirs. A producer preempted in
 * that window stalls all the others, and with more submitter threads than
 * CPUs that is common: bench/submitters, 4 outside threads into a
 * 2-worker pool on 2 CPUs, measured 3.6-6.0 us per task (yielding or
 * sleeping while waiting only moved the cost). Here no producer waits for
 * another. A consumer that finds the oldest slot not yet published sees
 * an empty queue until it is; the late producer's own push then wakes a
 * worker (queue.h, als__queue_ready). (Vyukov's queue itself, whose
 * consumers also write each slot to hand it back, measured 0.82x on
 * bench/pool spawn_many at 16 workers: the slot lines moved twice.)
 *
 * Tickets are unsigned and wrap. The slot of ticket t holds its item when
 * its seq is t + 1; a producer may reuse a slot once the head is past its
 * last ticket, which it checks against head_seen, refreshed only when the
 * queue looks full by it (the head is a line every consumer writes).
 *
 * ThreadSanitizer cannot see ck_pr's inline-assembly synchronisation, so
 * it would report the slot accesses as races (../shared/notes/ck-tsan.md).
 * In tsan builds this translation unit is therefore built without TSan
 * instrumentation (lib/CMakeLists.txt), and every item gets its own
 * happens-before edge (lib/tsan.h): the same edge that tells a user's TSan
 * about tasks submitted to a release libals. All code outside this file,
 * including every task and all of libals's own state, stays fully
 * checked. */
#include "queue.h"
#include "internal.h"
#include "tsan.h"

#include <ck_pr.h>

int als__queue_init(struct als__queue *q, unsigned size)
{
    q->slots = als__calloc(size, sizeof *q->slots);
    if (!q->slots)
        return ALS_ENOMEM;
    for (unsigned i = 0; i < size; i++)
        q->slots[i].seq = i; /* not i + 1: the slot's first ticket i is unpublished */
    q->mask = size - 1;
    q->tail = 0;
    q->head = 0;
    q->tail_seen = 0;
    q->head_seen = 0;
    return 0;
}

void als__queue_fini(struct als__queue *q)
{
    als__free(q->slots);
    q->slots = NULL;
}

/* Whether slot s holds the item of ticket t. */
static bool published(const struct als__slot *s, unsigned t)
{
    return ck_pr_load_uint(&s->seq) == t + 1;
}

/* Whether ticket t's slot is free: its last item was popped (the head is
 * past t - size). Reads the head only when the ring looks full by
 * head_seen, a value of the past (the ring can only be emptier). */
static bool room(struct als__queue *q, unsigned t)
{
    unsigned h = ck_pr_load_uint(&q->head_seen);
    if (ALS__LIKELY(t - h <= q->mask)) {
        ck_pr_fence_acquire(); /* pairs with the release below */
        return true;
    }
    ck_pr_fence_load();
    h = ck_pr_load_uint(&q->head);
    /* Acquire: consumers read a slot's item before they move the head
     * past it (pop_many); our reuse of the slot comes after that read. */
    ck_pr_fence_acquire();
    if (t - h > q->mask)
        return false;
    ck_pr_fence_release();
    ck_pr_store_uint(&q->head_seen, h);
    return true;
}

/* How many slots ahead a producer starts fetching the slot lines it will
 * publish in (als__prefetch_for_write). Consumers read each line last, a
 * lap ago or as they claimed the slots before ours, so it sits in their
 * caches; the producer's publication (a locked exchange) then waits for
 * the line to come over. Fetched two lines ahead, it is there when the
 * producer arrives (bench/pool spawn_many, one outside submitter, slow
 * mode: 1.62-1.68x at 2 workers, 1.30-1.64x at 16; ctx4 1.19-1.69x;
 * 4, 16 and 24 slots ahead measured no better; the same in a worker's
 * own queue, and consumers fetching the line after their claim, added
 * nothing: ninth pass in docs/performance.md). */
#define PUSH_AHEAD 8

static void publish(struct als__slot *s, void *item)
{
    als__hb_release(item);
    ck_pr_store_ptr(&s->item, item);
    ck_pr_fence_store(); /* the item before the seq that shows it */
}

bool als__queue_push(struct als__queue *q, void *item)
{
    unsigned t = ck_pr_load_uint(&q->tail);
    for (;;) {
        if (room(q, t)) {
            if (ck_pr_cas_uint_value(&q->tail, t, t + 1, &t))
                break;
            continue;
        }
        ck_pr_fence_load();
        unsigned now = ck_pr_load_uint(&q->tail);
        if (now == t)
            return false; /* full */
        t = now;
    }
    struct als__slot *s = &q->slots[t & q->mask];
    als__prefetch_for_write(&q->slots[(t + PUSH_AHEAD) & q->mask]);
    publish(s, item);
    ck_pr_fas_uint(&s->seq, t + 1);
    /* The length's record, at every ALS__QUEUE_LENGTH_EVERY-th ticket
     * only: consumers read it at every take, so each record moved its line
     * from them to the producer and back (bench/pool, one outside
     * submitter, 9 rounds against recording every push: spawn_many
     * 1.24-1.31x at 1-4 workers, ctx4 1.23-1.41x; every 4th ticket
     * 1.11-1.29x; every 16th no better than every 8th). */
    if ((t & (ALS__QUEUE_LENGTH_EVERY - 1)) == ALS__QUEUE_LENGTH_EVERY - 1)
        ck_pr_store_uint(&q->tail_seen, t + 1);
    return true;
}

bool als__queue_push_owner(struct als__queue *q, void *item)
{
    unsigned t = q->tail; /* only this thread writes it */
    if (!room(q, t))
        return false;
    struct als__slot *s = &q->slots[t & q->mask];
    publish(s, item);
    ck_pr_store_uint(&s->seq, t + 1);
    ck_pr_store_uint(&q->tail, t + 1);
    ck_pr_store_uint(&q->tail_seen, t + 1);
    return true;
}

void *als__queue_pop(struct als__queue *q)
{
    void *item;
    return als__queue_pop_many(q, &item, 1) ? item : NULL;
}

/* Reads the published items from ticket h on (up to max), then claims
 * them all by moving the head past them, as ck_ring's consumers do: a
 * consumer never writes a slot, and one that takes several tasks per
 * claim moves the head's cache line between CPUs once for all of them.
 * A failed claim means another consumer took some: read again. */
unsigned als__queue_pop_many(struct als__queue *q, void **items, unsigned max)
{
    unsigned h = ck_pr_load_uint(&q->head);
    for (;;) {
        unsigned n = 0;
        for (; n < max; n++) {
            const struct als__slot *s = &q->slots[(h + n) & q->mask];
            if (!published(s, h + n))
                break;
            ck_pr_fence_load(); /* the seq before the item it shows */
            items[n] = ck_pr_load_ptr(&s->item);
        }
        if (n == 0) {
            ck_pr_fence_load();
            unsigned now = ck_pr_load_uint(&q->head);
            if (now == h)
                return 0; /* empty, or its oldest push still publishing */
            h = now;
            continue;
        }
        ck_pr_fence_store_atomic(); /* the reads before the claim */
        if (ck_pr_cas_uint_value(&q->head, h, h + n, &h)) {
            for (unsigned i = 0; i < n; i++)
                als__hb_acquire(items[i]);
            return n;
        }
    }
}

bool als__queue_ready(struct als__queue *q)
{
    for (;;) {
        unsigned h = ck_pr_load_uint(&q->head);
        bool ready = published(&q->slots[h & q->mask], h);
        ck_pr_fence_load();
        if (ck_pr_load_uint(&q->head) == h)
            return ready;
    }
}

/* From tail_seen, not the tail: the tail is the line producers take
 * tickets on with a compare-and-swap, and every consumer's look at the
 * length took it from them (bench/pool spawn_many, 1 worker: 0.79x of
 * ck_ring's speed; with tail_seen 0.92x, and 1.18-1.32x at 2-16 workers),
 * as ck_ring's separate commit index spared its producers' head. */
unsigned als__queue_length(struct als__queue *q)
{
    unsigned h = ck_pr_load_uint(&q->head);
    ck_pr_fence_load();
    int n = (int)(ck_pr_load_uint(&q->tail_seen) - h);
    return n > 0 ? (unsigned)n : 0;
}
