/* The ck_ring wrapper: the one file that includes Concurrency Kit.
 *
 * ThreadSanitizer cannot see ck's inline-assembly synchronisation, so it
 * would report ck's internal slot accesses as races
 * (../shared/notes/ck-tsan.md). This translation unit is therefore built
 * without TSan instrumentation (lib/CMakeLists.txt), which hides exactly
 * ck's internals, and every item gets its own happens-before edge through
 * __tsan_release/__tsan_acquire. All code outside this file, including
 * every task and all of libals's own state, stays fully checked. */
#include "queue.h"
#include "internal.h"

#include <stdlib.h>

#ifdef ALS_TSAN_ANNOTATE
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define RELEASE(p) __tsan_release(p)
#define ACQUIRE(p) __tsan_acquire(p)
#else
#define RELEASE(p) ((void)0)
#define ACQUIRE(p) ((void)0)
#endif

int als__queue_init(struct als__queue *q, unsigned size)
{
    q->buf = als__calloc(size, sizeof *q->buf);
    if (!q->buf)
        return ALS_ENOMEM;
    ck_ring_init(&q->ring, size);
    return 0;
}

void als__queue_fini(struct als__queue *q)
{
    als__free(q->buf);
    q->buf = NULL;
}

bool als__queue_push(struct als__queue *q, void *item)
{
    RELEASE(item);
    return ck_ring_enqueue_mpmc(&q->ring, q->buf, item);
}

void *als__queue_pop(struct als__queue *q)
{
    void *item;
    if (!ck_ring_dequeue_mpmc(&q->ring, q->buf, &item))
        return NULL;
    ACQUIRE(item);
    return item;
}

unsigned als__queue_length(struct als__queue *q)
{
    return ck_ring_size(&q->ring);
}
