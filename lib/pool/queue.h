/* A bounded multi-producer multi-consumer queue of pointers: ck_ring's
 * design, except that each slot carries a sequence word its producer
 * publishes it with, so that no producer ever waits for another (queue.c
 * says why that matters). No call blocks: a full queue refuses a push, an
 * empty one returns NULL; the pool decides what to do then.
 *
 * Ordering contract: everything the pushing thread did before
 * als__queue_push(q, p) happens-before everything the thread that pops p
 * does after als__queue_pop returned it (release/acquire per item). */
#ifndef ALS_QUEUE_H
#define ALS_QUEUE_H

#include <stdbool.h>
#include <ck_md.h>

/* The slot of ticket t holds that push's item once seq == t + 1. */
struct als__slot {
    unsigned seq;
    void *item;
};

struct als__queue {
    struct als__slot *slots;
    unsigned mask;                            /* size - 1 */
    _Alignas(CK_MD_CACHELINE) unsigned tail;  /* the next push's ticket */
    unsigned head_seen;                       /* the head as a producer last read it */
    _Alignas(CK_MD_CACHELINE) unsigned head;  /* the next pop's ticket */
    _Alignas(CK_MD_CACHELINE) unsigned tail_seen; /* a recent push's ticket + 1,
                                                     for the length */
};

/* `size` is a power of two; the queue holds `size` items.
 * 0 or ALS_ENOMEM. */
int als__queue_init(struct als__queue *q, unsigned size);
void als__queue_fini(struct als__queue *q);
/* false when full. `item` must not be NULL. A successful push ends with a
 * locked instruction: on x86-64 a full barrier between publishing the item
 * and the caller's next load. */
bool als__queue_push(struct als__queue *q, void *item);
/* A push by the queue's only producer (a worker's own queue: the owner
 * pushes, the owner and thieves pop): no compare-and-swap, and no locked
 * instruction, so no full barrier either. false when full. */
bool als__queue_push_owner(struct als__queue *q, void *item);
/* NULL when empty. */
void *als__queue_pop(struct als__queue *q);
/* Pops up to `max` (>= 1) items with one compare-and-swap, oldest first,
 * into items[]; returns how many (0 when empty). Same ordering per item. */
unsigned als__queue_pop_many(struct als__queue *q, void **items, unsigned max);
/* Whether a pop would find an item now: the oldest push has published it.
 * This, not the length, decides whether a worker may sleep: a producer
 * that took its ticket but has not yet published (preempted in between)
 * may count in the length, and its own push wakes a worker once it
 * publishes. */
bool als__queue_ready(struct als__queue *q);
/* Items pushed and not yet popped, an estimate for heuristics: the ticket
 * recorded after a push, less the head. als__queue_push records it at
 * every ALS__QUEUE_LENGTH_EVERY-th ticket only, so the length may lag up
 * to that many pushes less one (and with several producers, whose records
 * can land out of order, more); it may count a push still publishing
 * behind a later one. A queue pushed only by als__queue_push_owner
 * records every push: exact when nobody pushes or pops. */
#define ALS__QUEUE_LENGTH_EVERY 8
unsigned als__queue_length(struct als__queue *q);

#endif
