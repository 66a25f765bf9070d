/* Where tasks wait.
 *
 * One shared bounded MPMC ring (queue.c) plus, per worker, a one-task LIFO
 * slot for the newest task submitted by a task running on that worker. A
 * chain of tasks that each submit the next therefore never leaves its core
 * and wakes nobody; a fan-out pushes the older sibling to the ring, where
 * idle workers find it. While the ring holds work, a worker takes at most
 * LIFO_MAX tasks in a row from its slot, so self-resubmitting tasks cannot
 * starve the ring. (A deeper private stack measured slower on fan-out: the
 * other workers starve.) While the ring holds two or more tasks per worker,
 * a worker claims up to POP_BATCH of them with one CAS and runs them in
 * order (ring_take); they still count as queued, and the slot's fairness
 * rule covers them too.
 *
 * Uses: queue.c, park.c. */
#include "scheduler.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ck_ring's smallest size is 4 (3 entries): a pool asked for a capacity of
 * 1 or 2 also counts its entries, so that the documented number of tasks
 * (or one fewer) can wait. Other pools skip the count. */
bool als__ring_push(als_pool_t *pool, struct als__task *t)
{
    if (ALS__UNLIKELY(pool->small_cap) &&
        atomic_fetch_add_explicit(&pool->small_len, 1, memory_order_relaxed) >= pool->small_cap) {
        atomic_fetch_sub_explicit(&pool->small_len, 1, memory_order_relaxed);
        return false;
    }
    if (als__queue_push(&pool->q, t))
        return true;
    if (pool->small_cap)
        atomic_fetch_sub_explicit(&pool->small_len, 1, memory_order_relaxed);
    return false;
}

static struct als__task *ring_pop(als_pool_t *pool)
{
    struct als__task *t = als__queue_pop(&pool->q);
    if (t && ALS__UNLIKELY(pool->small_cap))
        atomic_fetch_sub_explicit(&pool->small_len, 1, memory_order_relaxed);
    return t;
}

/* Whether tasks wait where any worker can take them. */
bool als__has_work(als_pool_t *pool)
{
    return als__queue_length(&pool->q) > 0;
}

/* Whether the tasks this worker took off the ring together have all run. */
static bool batch_empty(const struct worker *w)
{
    return w->batch_i == w->batch_n;
}

/* Whether nothing waits in this worker's own queues nor the shared one. */
bool als__local_idle(const struct worker *w)
{
    return !w->next && batch_empty(w) && als__queue_length(&w->pool->q) == 0;
}

/* Takes from the ring: several tasks at once while it holds at least two
 * per worker (each claim moves the consumer head's line between CPUs, and
 * the producer's with it: one claim per POP_BATCH tasks measured 110 -> 69
 * ns per task with one outside submitter), else one, so that a short queue
 * still spreads over the workers. Pools counting a tiny capacity
 * (small_cap) pop one at a time. */
static struct als__task *ring_take(struct worker *w)
{
    als_pool_t *pool = w->pool;
    unsigned per_worker = als__queue_length(&pool->q) / pool->nthreads;
    if (per_worker >= 2 && !pool->small_cap) {
        unsigned n = als__queue_pop_many(&pool->q, (void **)w->batch,
                                         per_worker < POP_BATCH ? per_worker : POP_BATCH);
        if (n) {
            w->batch_i = 1;
            w->batch_n = n;
            return w->batch[0];
        }
    }
    return ring_pop(pool);
}

/* The next task for worker w, or NULL. */
struct als__task *als__task_take(struct worker *w)
{
    als_pool_t *pool = w->pool;
    struct als__task *t = w->next;
    if (t) {
        w->next = NULL;
        if (++w->streak <= LIFO_MAX || (batch_empty(w) && als__queue_length(&pool->q) == 0))
            return t;
        /* Fairness: the ring (and our batch from it) has waited long
         * enough. */
        if (!als__ring_push(pool, t))
            return t;
        als__wake_one(pool);
    }
    w->streak = 0;
    if (!batch_empty(w))
        return w->batch[w->batch_i++];
    t = ring_take(w);
    if (t && atomic_load_explicit(&pool->room_armed, memory_order_relaxed))
        als__room_wake(pool, w);
    return t;
}

/* Waits for room in the ring. Outside submitters give up when a shutdown
 * begins (`any_state` false); the timer thread never does, because its
 * tasks were accepted already and workers keep consuming until they ran. */
bool als__push_wait(als_pool_t *pool, struct als__task *t, bool any_state)
{
    for (;;) {
        /* Read the sequence before arming (park.c room_wake says why), and
         * arm (seq_cst: ordered before the retry's loads of the ring) only
         * after a failed push, so that a submitter woken into room leaves
         * no flag behind for a wake-up nobody needs. */
        uint32_t seq = atomic_load_explicit(&pool->room_seq, memory_order_acquire);
        atomic_store_explicit(&pool->room_armed, 1, memory_order_seq_cst);
        if (als__ring_push(pool, t))
            return true;
        if (atomic_load_explicit(&pool->state, memory_order_seq_cst) != RUNNING && !any_state)
            return false;
        /* The timeout is a backstop for weakly ordered machines only. */
        struct timespec ts = { 0, ROOM_BACKSTOP_NS };
        syscall(SYS_futex, &pool->room_seq, FUTEX_WAIT_PRIVATE, seq, &ts, NULL, 0);
        if (als__ring_push(pool, t))
            return true;
    }
}
