/* A bounded multi-producer multi-consumer queue of pointers: Concurrency
 * Kit's ck_ring behind a few functions. No call blocks: a full queue refuses
 * a push, an empty one returns NULL; the pool decides what to do then.
 *
 * Ordering contract: everything the pushing thread did before
 * als__queue_push(q, p) happens-before everything the thread that pops p
 * does after als__queue_pop returned it (release/acquire per item). */
#ifndef ALS_QUEUE_H
#define ALS_QUEUE_H

#include <stdbool.h>
#include <ck_ring.h>

struct als__queue {
    ck_ring_t ring;               /* ck pads head and tail to cache lines */
    ck_ring_buffer_t *buf;
    /* The producers' own line (queue.c reserve): ck keeps its producer
     * head beside the tail that consumers poll, so every poll took the
     * head's line from the producer. Unused by owner-only pushes. */
    _Alignas(CK_MD_CACHELINE) unsigned p_head;
    unsigned c_seen;              /* the consumer head as a producer last
                                     read it (queue.c als__queue_push) */
};

/* `size` is a power of two >= 4; the queue holds size - 1 items.
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
/* Items in the queue, a racy snapshot (exact when nobody pushes or pops). */
unsigned als__queue_length(struct als__queue *q);

#endif
