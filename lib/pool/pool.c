/* The worker pool.
 *
 * Tasks
 *   A task record carries fn/arg/cancel, a reference to the submitter's
 *   captured frame, and the submitter's execution id (its trigger id). The
 *   reference is taken before the task is published and the worker that runs
 *   (or cancels) the task consumes it: frames need no hazard pointers.
 *   Records are recycled through per-thread caches that trade whole chains
 *   of records through one global ring (see "task records" below).
 *
 * Queues
 *   One shared bounded MPMC ring (queue.c) plus, per worker, a one-task LIFO
 *   slot for the newest task submitted by a task running on that worker. A
 *   chain of tasks that each submit the next therefore never leaves its core
 *   and wakes nobody; a fan-out pushes the older sibling to the ring, where
 *   idle workers find it. While the ring holds work, a worker takes at most
 *   LIFO_MAX tasks in a row from its slot, so self-resubmitting tasks cannot
 *   starve the ring. (A deeper private stack measured slower on fan-out:
 *   the other workers starve.) While the ring holds two or more tasks per
 *   worker, a worker claims up to POP_BATCH of them with one CAS and runs
 *   them in order (ring_take); they still count as queued, and the slot's
 *   fairness rule covers them too.
 *
 * Running
 *   A worker enters each task's frame in a scope and restores its own
 *   context after; consecutive tasks of one frame (a chain, one submitter's
 *   stream) share one kept scope and only reset their ids (task_run_top),
 *   until a task leaves something in it or the worker publishes its counts.
 *   bench/pool chained: 31 -> 25 ns per task.
 *
 * Throttling
 *   While the ring holds INLINE_PER_WORKER tasks per worker and nobody is
 *   idle, a task's submit runs the new task inline (submit_inline), as
 *   libgomp does: a fan-out tree then costs a scope per task instead of a
 *   record, a capture and a ring transfer (bench/pool fanout: 24 -> 6 ns
 *   per task on 2 workers). The inline scope keeps the submitter's context
 *   and draws no ids: the trigger id is resolved lazily (resource.c).
 *
 * Counting
 *   Every counter is written by one thread only: each worker counts what it
 *   submits, starts and finishes on its own cache line; outside submitters
 *   share one counter. "In flight" is the sum of submissions minus the sum
 *   of finished tasks; a finished count is read before the submission counts
 *   so the sum can only overestimate, and seq_cst on both sides lets either
 *   a drain waiter or the last finishing worker see the other (Dekker). A
 *   worker publishes its finished count, and drops the frame references of
 *   finished tasks, in batches (task_finish explains why that is invisible).
 *   Submitted and finished counts are kept per drain generation (two, used
 *   alternately): a drain moves new submitters to the other generation and
 *   waits only for its own, descendants included (accept_count).
 *
 * Parking
 *   Idle workers spin briefly (polling the ring sparingly: each poll takes
 *   the producers' cache line away), then sleep on their own futex word
 *   after setting their bit in the pool's idle mask. A submitter reads the
 *   mask after its push, whose commit is a locked instruction (queue.c): on
 *   x86-64 a full barrier, so either the sleeper's own locked announcement
 *   comes first and we see it, or our publication is visible to the
 *   sleeper's re-check of the ring; elsewhere a seq_cst fence provides the
 *   same. The waker claims one sleeper by clearing its bit (as a condition
 *   variable counts signalled waiters), so a burst of submits into a parked
 *   pool makes one system call per parked worker, not one per submit. While
 *   an idle worker is still spinning, submits wake nobody (as in Go's
 *   scheduler): the spinner re-checks the ring before it parks, and the last
 *   spinner to find work, or a worker fresh from a park that finds more
 *   queued, passes the wake-up on.
 */
#include "pool.h"
#include "tsan.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The worker the calling thread is, if any. */
static _Thread_local struct worker *self __attribute__((tls_model("initial-exec")));

/* ---- small helpers ---------------------------------------------------- */

static void futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* Increments a counter only this thread writes: no read-modify-write. */
static void bump(_Atomic uint64_t *c, memory_order mo)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, mo);
}

static void unbump(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - 1,
                          memory_order_seq_cst);
}

static struct worker *own_worker(const als_pool_t *pool)
{
    struct worker *w = self;
    return w && w->pool == pool ? w : NULL;
}

struct worker *als__own_worker(const als_pool_t *pool)
{
    return own_worker(pool);
}

struct worker *als__self(void)
{
    return self;
}

/* Reads idle word i after publishing a task, with a full barrier between:
 * on x86-64 the push's own locked commit (queue.h) is that barrier. */
static uint64_t idle_after_publish(als_pool_t *pool, unsigned i)
{
#if defined(__x86_64__) || defined(__i386__)
    return atomic_load_explicit(&pool->idle[i], memory_order_relaxed);
#else
    atomic_thread_fence(memory_order_seq_cst);
    return atomic_load_explicit(&pool->idle[i], memory_order_relaxed);
#endif
}

/* Counts a futex wake system call the caller is about to make: on its own
 * line if it is one of the pool's workers, else on the outside submitters'
 * line (a wake-up costs a system call; one more atomic add is noise). */
static void count_wake(als_pool_t *pool, bool submitters)
{
    struct worker *me = own_worker(pool);
    if (me)
        bump(submitters ? &me->submitter_wakeups : &me->wakeups, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(submitters ? &pool->ext_submitter_wakeups : &pool->ext_wakeups,
                                  1, memory_order_relaxed);
}

static void worker_wake(struct worker *w)
{
    count_wake(w->pool, false);
    atomic_fetch_add_explicit(&w->wake, 1, memory_order_release);
    futex_wake(&w->wake, 1);
}

/* Wakes one parked worker, if any and if no idle worker is spinning (a
 * spinner will find the task: it re-checks the ring after it stops
 * spinning). Claims the sleeper by clearing its idle bit, so later submits
 * of a burst see it gone and make no system call. */
static void wake_one(als_pool_t *pool)
{
    for (unsigned i = 0; i < pool->idle_words; i++) {
        uint64_t m = idle_after_publish(pool, i);
        /* Ordered after the locked read above (x86-64) or the fence. */
        if (m && atomic_load_explicit(&pool->spinning, memory_order_relaxed))
            return;
        while (m) {
            uint64_t bit = m & -m;
            uint64_t prev = atomic_fetch_and_explicit(&pool->idle[i], ~bit,
                                                      memory_order_acq_rel);
            if (prev & bit) {
                worker_wake(&pool->workers[i * 64 + (unsigned)__builtin_ctzll(bit)]);
                return;
            }
            m = prev & ~bit;
        }
    }
}

static void wake_all(als_pool_t *pool);
void als__wake_all(als_pool_t *pool)
{
    wake_all(pool);
}

static void wake_all(als_pool_t *pool)
{
    for (unsigned i = 0; i < pool->nthreads; i++)
        worker_wake(&pool->workers[i]);
    atomic_fetch_add_explicit(&pool->room_seq, 1, memory_order_seq_cst);
    count_wake(pool, true);
    futex_wake(&pool->room_seq, INT_MAX);
}

/* The ring. ck_ring's smallest size is 4 (3 entries): a pool asked for a
 * capacity of 1 or 2 also counts its entries, so that the documented number
 * of tasks (or one fewer) can wait. Other pools skip the count. */
static bool ring_push(als_pool_t *pool, struct task *t)
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

static struct task *ring_pop(als_pool_t *pool)
{
    struct task *t = als__queue_pop(&pool->q);
    if (t && ALS__UNLIKELY(pool->small_cap))
        atomic_fetch_sub_explicit(&pool->small_len, 1, memory_order_relaxed);
    return t;
}

/* Accepted tasks of drain generation `gen` (0 or 1; 2: both) not yet
 * finished; never underestimates (see top). */
static uint64_t in_flight_of(const als_pool_t *pool, unsigned gen)
{
    unsigned lo = gen == 2 ? 0 : gen, hi = gen == 2 ? 1 : gen;
    uint64_t done = 0, submitted = 0;
    for (unsigned i = 0; i < pool->nthreads; i++)
        for (unsigned g = lo; g <= hi; g++)
            done += atomic_load_explicit(&pool->workers[i].done[g], memory_order_seq_cst);
    for (unsigned i = 0; i < pool->nthreads; i++)
        for (unsigned g = lo; g <= hi; g++)
            submitted += atomic_load_explicit(&pool->workers[i].submitted[g],
                                              memory_order_seq_cst);
    for (unsigned g = lo; g <= hi; g++)
        submitted += atomic_load_explicit(&pool->ext_submitted[g], memory_order_seq_cst);
    return submitted - done;
}

static uint64_t in_flight(const als_pool_t *pool)
{
    return in_flight_of(pool, 2);
}

/* Called after tasks finished or a submission was taken back, when someone
 * may be waiting: a drain for its generation (drain_gen was bumped past
 * it), a shutdown for the whole pool. */
static void idle_check(als_pool_t *pool)
{
    if (atomic_load_explicit(&pool->drain_waiters, memory_order_seq_cst)) {
        unsigned gen = (atomic_load_explicit(&pool->drain_gen, memory_order_seq_cst) - 1) & 1;
        if (in_flight_of(pool, gen) == 0) {
            atomic_fetch_add_explicit(&pool->drain_seq, 1, memory_order_release);
            futex_wake(&pool->drain_seq, INT_MAX);
        }
    }
    if (atomic_load_explicit(&pool->state, memory_order_seq_cst) != RUNNING &&
        in_flight(pool) == 0)
        wake_all(pool);
}

static bool idle_watched(als_pool_t *pool)
{
    return atomic_load_explicit(&pool->drain_waiters, memory_order_seq_cst) ||
           atomic_load_explicit(&pool->state, memory_order_seq_cst) != RUNNING;
}

/* ---- task records ----------------------------------------------------
 * Records are not tied to a pool. They are allocated in slabs that stay on
 * a global list for the life of the process (memory bounded by the peak
 * number of tasks alive at once), so no record is ever unreachable. Each
 * thread keeps a cache; chains of records move between threads through one
 * global ring, so the outside submitter of spawn_many and the workers that
 * finish its tasks trade one ring operation per CHAIN tasks, not per task. */

#define CHAIN 32
#define SLAB 64

struct slab {
    struct slab *next;
    struct task tasks[SLAB];
};

static struct als__queue chains;
static pthread_once_t chains_once = PTHREAD_ONCE_INIT;
static bool chains_ok;
static pthread_key_t cache_key;
static pthread_mutex_t slabs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct slab *slabs;

static _Thread_local struct {
    struct task *list;
    unsigned n;
    bool hooked;
} cache __attribute__((tls_model("initial-exec")));

/* A chain's length travels in its first record. */
static void chain_give(struct task *chain, unsigned n)
{
    chain->chain_n = n;
    if (!als__queue_push(&chains, chain)) {
        /* Ring full: the records stay on their slabs, unused. */
    }
}

static void cache_release(void *unused)
{
    (void)unused;
    if (cache.list)
        chain_give(cache.list, cache.n);
    cache.list = NULL;
    cache.n = 0;
    cache.hooked = false;
}

static void chains_init(void)
{
    chains_ok = als__queue_init(&chains, 4096) == 0 &&
                pthread_key_create(&cache_key, cache_release) == 0;
}

static struct task *slab_new(void)
{
    struct slab *sl = als__malloc(sizeof *sl);
    if (!sl)
        return NULL;
    pthread_mutex_lock(&slabs_mu);
    sl->next = slabs;
    slabs = sl;
    pthread_mutex_unlock(&slabs_mu);
    for (unsigned i = 1; i < SLAB - 1; i++)
        sl->tasks[i].next = &sl->tasks[i + 1];
    sl->tasks[SLAB - 1].next = cache.list;
    cache.list = &sl->tasks[1];
    cache.n += SLAB - 1;
    return &sl->tasks[0];
}

static struct task *task_alloc(void)
{
    struct task *t = cache.list;
    if (!t) {
        t = als__queue_pop(&chains);
        if (!t)
            return slab_new();
        cache.n = t->chain_n;
    }
    if (ALS__UNLIKELY(!cache.hooked)) /* returned when the thread exits */
        cache.hooked = pthread_setspecific(cache_key, &cache) == 0;
    cache.list = t->next;
    cache.n--;
    return t;
}

static void task_recycle(struct task *t)
{
    if (ALS__UNLIKELY(!cache.hooked))
        cache.hooked = pthread_setspecific(cache_key, &cache) == 0;
    t->next = cache.list;
    cache.list = t;
    if (++cache.n < 2 * CHAIN)
        return;
    /* Hand CHAIN records to whoever allocates without a cache. */
    struct task *last = cache.list;
    for (unsigned i = 1; i < CHAIN; i++)
        last = last->next;
    struct task *chain = cache.list;
    cache.list = last->next;
    last->next = NULL;
    cache.n -= CHAIN;
    chain_give(chain, CHAIN);
}

/* Small records of the composition layer (futures, continuations) share
 * the task records' recycling: same size class, same caches. */
void *als__block_alloc(void)
{
    pthread_once(&chains_once, chains_init);
    return chains_ok ? task_alloc() : NULL;
}

void als__block_free(void *p)
{
    if (p)
        task_recycle(p);
}

/* ---- running tasks ---------------------------------------------------- */

/* Drops the frame references this worker deferred (see task_finish). The
 * list is detached before it is released: a destroy callback may run a
 * task on this thread (an inline submit into a full pool, a helping wait),
 * whose task_finish defers its own reference here; those are dropped too
 * before this returns. */
static void drop_held(struct worker *w)
{
    while (w->held) {
        struct als_snapshot *f = w->held;
        uint32_t n = w->held_n;
        w->held = NULL;
        w->held_n = 0;
        als__frame_release_n(f, n);
    }
}

/* Whether the tasks this worker took off the ring together have all run. */
static bool batch_empty(const struct worker *w)
{
    return w->batch_i == w->batch_n;
}

/* Closes the scope kept open across tasks (task_run_top): the worker's own
 * context is back, and the kept frame's reference is dropped (destroy
 * callbacks may run here). Only between top-level tasks. */
static void kept_close(struct worker *w)
{
    struct als_snapshot *f = w->kept;
    if (!f)
        return;
    w->kept = NULL;
    als__scope_end(&w->ks);
    als__frame_release(f);
}

static void kept_unwind(struct worker **w)
{
    if (*w)
        kept_close(*w);
}

/* Publishes what this worker deferred: the kept scope's frame and the
 * deferred frame references first (so destroy callbacks have run before
 * the tasks count as done, and a drain that returns has seen them), then
 * the done count drain and shutdown watch. The kept scope stays open while
 * a task runs on this thread (a nested flush: the running task pins its
 * frame and is itself in flight). */
static void worker_flush(struct worker *w)
{
    if (!w->running)
        kept_close(w);
    drop_held(w);
    if (!w->done_pending[0] && !w->done_pending[1])
        return;
    als__hb_release(&w->pool->drain_seq); /* to als_pool_drain */
    for (unsigned g = 0; g < 2; g++) {
        if (!w->done_pending[g])
            continue;
        atomic_store_explicit(&w->done[g],
                              atomic_load_explicit(&w->done[g], memory_order_relaxed) +
                                  w->done_pending[g],
                              memory_order_seq_cst);
        w->done_pending[g] = 0;
    }
    als_pool_t *pool = w->pool;
    /* Work left in our slot or the ring means the pool is not idle yet;
     * whoever finishes that work checks again. (A drain's generation may
     * end while newer work remains: the drain re-checks by itself.) */
    if (ALS__UNLIKELY(idle_watched(pool)) && !w->next && batch_empty(w) &&
        als__queue_length(&pool->q) == 0)
        idle_check(pool);
}

/* Ends a task. A plain task's frame reference and done count are deferred
 * and published in batches (same frame: one atomic for up to BATCH tasks,
 * instead of a cache line bouncing between the submitter and every worker
 * on each task). Deferred references are dropped before a task of another
 * frame starts (task_run), so while a task runs the worker holds extra
 * references only to that task's own frame, which the task pins anyway:
 * no value outlives its last real holder. Deferred done counts are
 * published before the worker looks for work it might not find, so a
 * deferred task stays "in flight" for drain and shutdown until then. Group
 * and future tasks end at once. */
static void task_finish(struct worker *w, struct task *t, int rc, bool cancelled)
{
    struct als_snapshot *f = t->frame;
    struct als_group *g = t->group;
    bool plain = !t->future;
    unsigned gen = t->gen;
    task_recycle(t);
    if (f != &als__empty_frame) {
        if (f != w->held) {
            drop_held(w);
            w->held = f;
        }
        w->held_n++;
    }
    if (g) {
        /* The group's waiter may look at destroy effects: drop the frame
         * references first (done counts may stay deferred). */
        if (!w->running)
            kept_close(w);
        drop_held(w);
        als__group_task_end(g, rc, cancelled);
    }
    w->done_pending[gen]++;
    if (plain && w->done_pending[0] + w->done_pending[1] < BATCH)
        return;
    worker_flush(w);
}

static void task_cancel(struct worker *w, struct task *t)
{
    if (t->cancel || t->future) {
        struct als__scope s;
        als__scope_open_frame(&s, t->frame, true, ALS__ID_LAZY, t->trigger_id);
        if (t->cancel)
            t->cancel(t->arg);
        if (t->future)
            als__future_cancelled(t->future);
        als__scope_end(&s);
    }
    bump(&w->cancelled, memory_order_relaxed);
    task_finish(w, t, 0, true);
}

/* Runs the task's function inside the scope the caller opened. */
static int task_call(struct worker *w, struct task *t)
{
    int rc = 0;
    unsigned gen = w->gen;
    w->running++;
    w->gen = t->gen; /* what it submits joins its generation (drain) */
    t->next = w->cur;
    w->cur = t;
    if (t->future)
        als__future_task(t); /* completes the future inside the context */
    else
        rc = t->fn(t->arg);
    w->cur = t->next;
    w->gen = gen;
    w->running--;
    return rc;
}

bool als__runs_own(const struct als_group *g, const struct als_future *f)
{
    struct worker *w = self;
    for (const struct task *t = w ? w->cur : NULL; t; t = t->next)
        if ((g && t->group == g) || (f && t->future == f))
            return true;
    return false;
}

static void task_failed(struct worker *w, struct task *t, int rc, uint64_t id);

/* A task run inside another (a helping wait, a full pool's inline submit). */
static void task_run(struct worker *w, struct task *t)
{
    als_pool_t *pool = w->pool;
    if (ALS__UNLIKELY(atomic_load_explicit(&pool->state, memory_order_relaxed) == CANCELLING)) {
        task_cancel(w, t);
        return;
    }
    if (ALS__UNLIKELY(w->done_pending[!t->gen]))
        worker_flush(w); /* a drain may wait for those (see task_run_top) */
    bump(&w->started, memory_order_relaxed);
    if (w->held != t->frame) /* see task_finish */
        drop_held(w);
    struct als__scope s;
    als__scope_open_frame(&s, t->frame, true, ALS__ID_LAZY, t->trigger_id);
    /* Ends the scope if the task unwinds (pthread_exit, cancellation). */
    struct als__scope *unwind __attribute__((cleanup(als__scope_unwind))) = &s;
    int rc = task_call(w, t);
    unwind = NULL;
    uint64_t id = als__tls.exec_id; /* the task's id, if it was assigned */
    als__scope_end(&s);
    if (ALS__UNLIKELY(rc != 0))
        task_failed(w, t, rc, id);
    task_finish(w, t, rc, false);
}

/* Whether the kept scope is exactly as it was opened: the task that just
 * ran left nothing to unwind (no binding, no private table, no cache, no
 * open explicit scope), so the next task of the same frame can run in it. */
static bool kept_clean(const struct worker *w)
{
    return als__tls.scope == &w->ks && als__tls.undo == w->ks.undo && als__tls.v.shared &&
           als__tls.v.entered == w->kept && !als__tls.cache.frame;
}

/* A task run by the worker loop. Consecutive tasks of one frame (a chain, a
 * submitter's stream) share one scope: each needs only its own ids, and
 * the scope is closed as soon as a task leaves anything in it, a task of
 * another frame comes, or the worker publishes its counts. The scope holds
 * its own reference, so the frame outlives the tasks' deferred ones. */
static void task_run_top(struct worker *w, struct task *t)
{
    als_pool_t *pool = w->pool;
    if (ALS__UNLIKELY(atomic_load_explicit(&pool->state, memory_order_relaxed) == CANCELLING)) {
        kept_close(w);
        task_cancel(w, t);
        return;
    }
    /* Finished tasks of the other drain generation are published before a
     * task of this one runs: a drain waiting for them must not wait for
     * BATCH more tasks (only after a drain began: generations alternate
     * once per drain). */
    if (ALS__UNLIKELY(w->done_pending[!t->gen]))
        worker_flush(w);
    bump(&w->started, memory_order_relaxed);
    if (w->kept == t->frame) {
        als__tls.exec_id = ALS__ID_LAZY;
        als__tls.trigger_id = t->trigger_id;
    } else {
        kept_close(w);
        if (w->held != t->frame) /* see task_finish */
            drop_held(w);
        als__scope_open_frame(&w->ks, t->frame, true, ALS__ID_LAZY, t->trigger_id);
        w->kept = als__frame_retain(t->frame);
    }
    /* Closes the kept scope if the task unwinds (pthread_exit...). */
    struct worker *unwind __attribute__((cleanup(kept_unwind))) = w;
    int rc = task_call(w, t);
    unwind = NULL;
    uint64_t id = als__tls.exec_id;
    if (ALS__UNLIKELY(!kept_clean(w)))
        kept_close(w); /* restores the worker's context exactly */
    if (ALS__UNLIKELY(rc != 0))
        task_failed(w, t, rc, id);
    task_finish(w, t, rc, false);
}

/* Counts a failure and runs on_error in the task's submit-time context. */
static void task_failed(struct worker *w, struct task *t, int rc, uint64_t id)
{
    als_pool_t *pool = w->pool;
    bump(&w->failed, memory_order_relaxed);
    if (pool->on_error) {
        /* In the submit-time context, like Node's unhandledRejection: the
         * handler can still read the request's values. */
        struct als__scope s;
        als__scope_open_frame(&s, t->frame, true, id, t->trigger_id);
        pool->on_error(rc, t->arg, pool->user);
        als__scope_end(&s);
    }
}

/* Runs a task submitted by a task of this worker at once, on this thread,
 * instead of queueing it (the caller decided: see submit_inline). Nothing is
 * captured or queued: the submitter's context is the task's context, so a
 * scope over it is enough, and it ends what the task binds. The task still
 * gets its own lazy async id, is counted like a queued one and reports
 * failure through on_error. */
static void task_inline(struct worker *w, als_task_fn fn, void *arg)
{
    als_pool_t *pool = w->pool;
    bump(&w->started, memory_order_relaxed);
    /* The trigger is our own execution id, drawn only if someone asks:
     * drawing it here would put a shared counter on every inline run. */
    struct als__scope s;
    als__scope_open_task(&s, ALS__ID_LAZY, ALS__ID_PARENT);
    struct als__scope *unwind __attribute__((cleanup(als__scope_unwind))) = &s;
    w->inlined[w->gen]++;
    int rc = fn(arg);
    w->inlined[w->gen]--;
    unwind = NULL;
    uint64_t id = als__tls.exec_id;
    als__scope_end_task(&s);
    if (ALS__UNLIKELY(rc != 0)) {
        bump(&w->failed, memory_order_relaxed);
        if (pool->on_error) {
            als__scope_open_task(&s, id, ALS__ID_PARENT);
            pool->on_error(rc, arg, pool->user);
            als__scope_end_task(&s);
        }
    }
    /* Submitted by a running task (submit_inline): its generation. */
    if (++w->done_pending[w->gen] + w->done_pending[!w->gen] >= BATCH)
        worker_flush(w);
}

/* ---- workers ---------------------------------------------------------- */

/* Takes from the ring: several tasks at once while it holds at least two
 * per worker (each claim moves the consumer head's line between CPUs, and
 * the producer's with it: one claim per POP_BATCH tasks measured 110 -> 69
 * ns per task with one outside submitter), else one, so that a short queue
 * still spreads over the workers. Pools counting a tiny capacity
 * (small_cap) pop one at a time. */
static struct task *ring_take(struct worker *w)
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

/* Wakes the BLOCK submitters once the ring has drained to half
 * (hysteresis: waking them at every pop made a system call per task while
 * a fast submitter kept the ring full). Called after a pop that saw
 * `room_armed` set; the relaxed load there is ordered after the pop's
 * dequeue CAS, a full barrier on x86-64, against the waiter's seq_cst
 * arming before its retry of the ring (Dekker: it sees our pop, or we see
 * its flag). Elsewhere the waiter's timeout is the backstop.
 *
 * One system call per wait, not one per pop: the first popper to find room
 * claims the flag with an exchange and wakes; every pop after it, until a
 * waiter that still finds the ring full re-arms, sees the flag clear and
 * makes no call. The exchange is acq_rel so that a waiter's arming (release)
 * synchronizes with it: the waiter read room_seq before arming, so that
 * read happens before our increment and its futex wait cannot sleep
 * through it. */
static void room_wake(als_pool_t *pool, struct worker *w)
{
    if (als__queue_length(&pool->q) > pool->room_mark ||
        !atomic_exchange_explicit(&pool->room_armed, 0, memory_order_acq_rel))
        return;
    atomic_fetch_add_explicit(&pool->room_seq, 1, memory_order_release);
    bump(&w->submitter_wakeups, memory_order_relaxed);
    futex_wake(&pool->room_seq, INT_MAX);
}

static struct task *task_take(struct worker *w)
{
    als_pool_t *pool = w->pool;
    struct task *t = w->next;
    if (t) {
        w->next = NULL;
        if (++w->streak <= LIFO_MAX || (batch_empty(w) && als__queue_length(&pool->q) == 0))
            return t;
        /* Fairness: the ring (and our batch from it) has waited long
         * enough. */
        if (!ring_push(pool, t))
            return t;
        wake_one(pool);
    }
    w->streak = 0;
    if (!batch_empty(w))
        return w->batch[w->batch_i++];
    t = ring_take(w);
    if (t && atomic_load_explicit(&pool->room_armed, memory_order_relaxed))
        room_wake(pool, w);
    return t;
}

/* Sleeps until woken, unless work or the end arrived meanwhile. */
static void worker_park(struct worker *w)
{
    als_pool_t *pool = w->pool;
    _Atomic uint64_t *word = &pool->idle[w->index / 64];
    uint64_t bit = 1ull << (w->index % 64);
    uint32_t seq = atomic_load_explicit(&w->wake, memory_order_acquire);
    /* Announce, then re-check (Dekker with idle_after_publish). */
    atomic_fetch_or_explicit(word, bit, memory_order_seq_cst);
    bool stay = als__queue_length(&pool->q) > 0 ||
                (atomic_load_explicit(&pool->state, memory_order_seq_cst) != RUNNING &&
                 in_flight(pool) == 0);
    if (!stay) {
        bump(&w->parks, memory_order_relaxed);
        futex_wait(&w->wake, seq);
    }
    /* A waker that claimed us cleared the bit already; otherwise (work
     * found, spurious wake, wake_all) we withdraw. A claim racing with the
     * withdrawal costs one spare wake-up of a worker that is awake. */
    atomic_fetch_and_explicit(word, ~bit, memory_order_relaxed);
}

static void *worker_main(void *arg);

/* Joins worker w's thread, and the threads that replaced it meanwhile
 * (worker_unwound). */
static void worker_join(als_pool_t *pool, struct worker *w)
{
    for (;;) {
        pthread_mutex_lock(&pool->stop_mu);
        pthread_t t = w->thread;
        w->claimed = true;
        pthread_mutex_unlock(&pool->stop_mu);
        pthread_join(t, NULL);
        pthread_mutex_lock(&pool->stop_mu);
        bool replaced = !pthread_equal(t, w->thread);
        pthread_mutex_unlock(&pool->stop_mu);
        if (!replaced)
            return;
    }
}

/* The worker's thread is ending inside a task: the task (or a function it
 * called) ran pthread_exit, or was cancelled at a cancellation point. The
 * library is built with -fexceptions, so this runs as the unwinding leaves
 * worker_main; the scopes it passed (the task's own runs, the task scope
 * itself) closed in their cleanups and restored the context up to the
 * worker's own kept scope (test_pool_lifecycle: *_in_run). Every task that was running on this thread counts as failed
 * with ALS_ECANCELED (on_error says so; a future's task cancels its
 * future, a group's task ends in its group), what they held is released,
 * and a new thread takes the worker's place, so drain and shutdown still
 * end and queued work still runs. */
static void worker_unwound(struct worker **pw)
{
    struct worker *w = *pw;
    if (!w)
        return; /* worker_main returned */
    als_pool_t *pool = w->pool;
    struct task *t = w->cur;
    w->cur = NULL;
    w->running = 0;
    kept_close(w);
    for (unsigned g = 0; g < 2; g++) {
        /* Inline runs have no record: counted only. */
        atomic_store_explicit(&w->failed,
                              atomic_load_explicit(&w->failed, memory_order_relaxed) +
                                  w->inlined[g],
                              memory_order_relaxed);
        w->done_pending[g] += w->inlined[g];
        w->inlined[g] = 0;
    }
    while (t) {
        struct task *outer = t->next;
        task_failed(w, t, ALS_ECANCELED, ALS__ID_LAZY);
        if (t->future)
            als__future_cancelled(t->future);
        task_finish(w, t, ALS_ECANCELED, false);
        t = outer;
    }
    worker_flush(w);

    pthread_mutex_lock(&pool->stop_mu);
    pthread_t heir;
    if (pthread_create(&heir, NULL, worker_main, w) == 0) {
        w->thread = heir;
        /* A shutdown joining us joins the heir next; else nobody will. */
        if (!w->claimed)
            pthread_detach(pthread_self());
        w->claimed = false;
    } else {
#ifndef NDEBUG
        fprintf(stderr, "libals: pool worker %s-%u ended inside a task and "
                        "could not be replaced\n", pool->name, w->index);
#endif
    }
    pthread_mutex_unlock(&pool->stop_mu);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    als_pool_t *pool = w->pool;
    struct worker *unwinding __attribute__((cleanup(worker_unwound))) = w;
    self = w;
    /* Inline runs may use INLINE_STACK below this frame, or a quarter of
     * the thread's stack if that is smaller. */
    uintptr_t budget = INLINE_STACK;
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr;
        size_t size;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0 && size / 4 < budget)
            budget = size / 4;
        pthread_attr_destroy(&attr);
    }
    w->inline_floor = (uintptr_t)__builtin_frame_address(0) - budget;
    /* "<name>-<n>"; Linux keeps 15 bytes of a thread name. */
    char name[32];
    snprintf(name, sizeof name, "%.15s-%u", pool->name, w->index);
    name[15] = '\0';
    pthread_setname_np(pthread_self(), name);

    bool woken = false;
    for (;;) {
        struct task *t = task_take(w);
        if (t && woken && als__queue_length(&pool->q) > 0)
            /* Submits that found a spinner or a claimed sleeper woke no
             * one more: a worker fresh from a park passes the wake-up on
             * while work remains, one worker per queued task at most. */
            wake_one(pool);
        woken = false;
        if (!t) {
            worker_flush(w);
            /* Spin before parking: a submitter that is still producing
             * then pays no wake-up. Yielding lets it run if it shares our
             * core (2-core machines run submitter and workers on 2 CPUs). */
            atomic_fetch_add_explicit(&pool->spinning, 1, memory_order_seq_cst);
            for (int i = 0; i < SPIN && !t; i++) {
                /* Poll the ring every few pauses only: each poll pulls the
                 * producers' cache line away from them (measured with one
                 * outside submitter: every pause 150 ns per task, every 8
                 * 103 ns, every 32 with batched takes 69 ns). */
                for (int k = 0; k < POLL_PAUSES; k++)
                    ALS__CPU_RELAX();
                if (i % 4 == 3)
                    sched_yield();
                if (als__queue_length(&pool->q) > 0)
                    t = task_take(w);
            }
            /* The last spinner to find work hands the role on while work
             * remains, so a stream of tasks keeps one worker looking. */
            if (atomic_fetch_sub_explicit(&pool->spinning, 1, memory_order_seq_cst) == 1 &&
                t && als__queue_length(&pool->q) > 0)
                wake_one(pool);
        }
        if (t) {
            task_run_top(w, t);
            continue;
        }
        if (atomic_load_explicit(&pool->state, memory_order_seq_cst) != RUNNING &&
            in_flight(pool) == 0)
            break;
        worker_park(w);
        woken = true;
    }
    unwinding = NULL;
    wake_all(pool); /* the others see the end too */
    return NULL;
}

/* ---- submitting ------------------------------------------------------- */

/* Takes back an accepted count of generation `gen` (the task was refused
 * after all, or moves to a newer generation). */
static void unaccept(als_pool_t *pool, struct worker *w, unsigned gen)
{
    if (w)
        unbump(&w->submitted[gen]);
    else
        atomic_fetch_sub_explicit(&pool->ext_submitted[gen], 1, memory_order_seq_cst);
    if (idle_watched(pool))
        idle_check(pool);
}

/* Counts a submission and returns its drain generation. A task's
 * submissions join the running task's generation: a drain waits for the
 * descendants of what it waits for, and the running task, in flight until
 * its own `done` store, covers the count (no fence needed). Any other
 * joins the current generation, re-checked after counting: a drain that
 * begins meanwhile (bumping drain_gen) either sees the count, or is seen
 * here and the count moves to the new generation (Dekker, seq_cst on both
 * sides). So no drain misses a task accepted before it began, and none
 * waits for one accepted after. */
static unsigned accept_count(als_pool_t *pool, struct worker *w)
{
    if (w && w->running) {
        bump(&w->submitted[w->gen], memory_order_relaxed);
        return w->gen;
    }
    uint32_t e = atomic_load_explicit(&pool->drain_gen, memory_order_seq_cst);
    for (;;) {
        unsigned gen = e & 1;
        if (w)
            bump(&w->submitted[gen], memory_order_seq_cst);
        else
            atomic_fetch_add_explicit(&pool->ext_submitted[gen], 1, memory_order_seq_cst);
        uint32_t now = atomic_load_explicit(&pool->drain_gen, memory_order_seq_cst);
        if (now == e)
            return gen;
        unaccept(pool, w, gen);
        e = now;
    }
}

static void task_discard(als_pool_t *pool, struct worker *w, struct task *t)
{
    als__frame_release(t->frame);
    unaccept(pool, w, t->gen);
    task_recycle(t);
}

/* Waits for room in the ring. Outside submitters give up when a shutdown
 * begins (`any_state` false); the timer thread never does, because its
 * tasks were accepted already and workers keep consuming until they ran. */
static bool push_wait(als_pool_t *pool, struct task *t, bool any_state)
{
    for (;;) {
        /* Read the sequence before arming (room_wake says why), and arm
         * (seq_cst: ordered before the retry's loads of the ring) only
         * after a failed push, so that a submitter woken into room leaves
         * no flag behind for a wake-up nobody needs. */
        uint32_t seq = atomic_load_explicit(&pool->room_seq, memory_order_acquire);
        atomic_store_explicit(&pool->room_armed, 1, memory_order_seq_cst);
        if (ring_push(pool, t))
            return true;
        if (atomic_load_explicit(&pool->state, memory_order_seq_cst) != RUNNING && !any_state)
            return false;
        /* The timeout is a backstop for weakly ordered machines only. */
        struct timespec ts = { 0, 50 * 1000 * 1000 };
        syscall(SYS_futex, &pool->room_seq, FUTEX_WAIT_PRIVATE, seq, &ts, NULL, 0);
        if (ring_push(pool, t))
            return true;
    }
}

/* Hands an accepted task to the timer thread, which queues it after
 * `delay_ns` (0: as soon as the ring has room). */
static int timer_hand(als_pool_t *pool, struct worker *w, struct task *t, uint64_t delay_ns)
{
    int rc = als__timer_add(pool, t, delay_ns);
    if (rc)
        task_discard(pool, w, t);
    return rc;
}

void als__push_accepted(als_pool_t *pool, struct task *t)
{
    if (!ring_push(pool, t))
        push_wait(pool, t, true);
    wake_one(pool);
}

int als__submit(als_pool_t *pool, const struct als__spec *sp)
{
    struct worker *w = own_worker(pool);

    /* Count first, then look at the state: a shutdown that has begun either
     * is seen here, or sees this count and waits for the task (Dekker).
     * A task's submit needs no fence: the task running it is in flight
     * until its own `done` store (release, after this count), so nobody can
     * find the pool idle without seeing this count too. */
    unsigned gen = accept_count(pool, w);
    int st = atomic_load_explicit(&pool->state, w && w->running ? memory_order_relaxed
                                                                : memory_order_seq_cst);
    if (ALS__UNLIKELY(st != RUNNING) && !(st == DRAINING && w)) {
        if (sp->frame)
            als__frame_release(sp->frame);
        unaccept(pool, w, gen);
        return ALS_ESHUTDOWN;
    }

    struct task *t = task_alloc();
    if (!t) {
        if (sp->frame)
            als__frame_release(sp->frame);
        unaccept(pool, w, gen);
        return ALS_ENOMEM;
    }
    t->gen = gen;
    bool detached = sp->flags & ALS_TASK_DETACHED;
    t->frame = sp->frame ? sp->frame : detached ? &als__empty_frame : als__capture();
    if (!t->frame) {
        task_recycle(t);
        unaccept(pool, w, gen);
        return ALS_ENOMEM;
    }
    t->fn = sp->fn;
    t->arg = sp->arg;
    t->cancel = sp->cancel;
    t->future = sp->future;
    t->group = sp->group;
    t->trigger_id = sp->trigger_id ? sp->trigger_id
                  : detached       ? 0
                                   : als_execution_async_id();

    if (sp->delay_ns)
        return timer_hand(pool, w, t, sp->delay_ns);

    if (w) {
        /* The newest task goes to this worker's LIFO slot; the one it
         * displaces goes to the ring for anyone to take. */
        struct task *older = w->next;
        if (!older) {
            w->next = t;
            return 0;
        }
        if (ring_push(pool, older)) {
            w->next = t;
            wake_one(pool);
            return 0;
        }
        if (pool->on_full == ALS_FULL_REJECT && !sp->no_reject) {
            atomic_fetch_add_explicit(&pool->rejected, 1, memory_order_relaxed);
            task_discard(pool, w, t);
            return ALS_EFULL;
        }
        if (sp->no_inline)
            return timer_hand(pool, w, t, 0);
        /* BLOCK policy, full pool, submitted by its own worker: waiting could
         * deadlock (every worker might be waiting), so run it here. */
        task_run(w, t);
        return 0;
    }

    if (ALS__LIKELY(ring_push(pool, t))) {
        wake_one(pool);
        return 0;
    }
    if (pool->on_full == ALS_FULL_REJECT && !sp->no_reject) {
        atomic_fetch_add_explicit(&pool->rejected, 1, memory_order_relaxed);
        task_discard(pool, NULL, t);
        return ALS_EFULL;
    }
    if (sp->no_inline)
        return timer_hand(pool, NULL, t, 0);
    if (!push_wait(pool, t, false)) {
        task_discard(pool, NULL, t);
        return ALS_ESHUTDOWN;
    }
    wake_one(pool);
    return 0;
}

/* Whether a worker is looking for work (spinning or parked). Read on the
 * inline path: these lines change only when workers go idle. */
static bool workers_idle(const als_pool_t *pool)
{
    if (atomic_load_explicit(&pool->spinning, memory_order_relaxed))
        return true;
    for (unsigned i = 0; i < pool->idle_words; i++)
        if (atomic_load_explicit(&pool->idle[i], memory_order_relaxed))
            return true;
    return false;
}

/* Throttling, as OpenMP runtimes do: while the ring holds a deep backlog
 * (INLINE_PER_WORKER tasks per worker), a plain submit from a task of the
 * pool runs the new task at once on the submitting thread (task_inline).
 * Queueing it would only lengthen the backlog, and running it here costs
 * no record, capture, queue transfer or wake-up. Only when this worker's
 * LIFO slot is taken (so the task would have gone to the ring), and while
 * the worker has used less than INLINE_STACK of its stack (so nested
 * inline runs, a chain of tasks each submitting the next, cannot overflow
 * it; deep trees still run inline: they nest only as deep as they are).
 * Returns whether it ran the task. */
static bool submit_inline(als_pool_t *pool, als_task_fn fn, void *arg)
{
    struct worker *w = own_worker(pool);
    if (!w || !w->running || !w->next ||
        (uintptr_t)__builtin_frame_address(0) < w->inline_floor ||
        als__queue_length(&pool->q) < pool->inline_mark || workers_idle(pool))
        return false;
    /* Counted before the state is read, as in als__submit; no fence: the
     * submitting task is itself in flight. */
    unsigned gen = accept_count(pool, w);
    int st = atomic_load_explicit(&pool->state, memory_order_relaxed);
    if (ALS__UNLIKELY(st != RUNNING && st != DRAINING)) {
        unaccept(pool, w, gen); /* als__submit refuses it */
        return false;
    }
    task_inline(w, fn, arg);
    return true;
}

int als_submit(als_pool_t *pool, als_task_fn fn, void *arg)
{
    if (!pool || !fn)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP()); /* captures: see "Non-local exits" */
    if (submit_inline(pool, fn, arg))
        return 0;
    struct als__spec sp = { .fn = fn, .arg = arg };
    return als__submit(pool, &sp);
}

int als_submit_task(als_pool_t *pool, const als_task *task)
{
    if (!pool || !task || !task->fn)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP());
    if (!(task->flags & ALS_TASK_DETACHED) && submit_inline(pool, task->fn, task->arg))
        return 0;
    struct als__spec sp = {
        .fn = task->fn, .arg = task->arg, .cancel = task->cancel, .flags = task->flags,
    };
    return als__submit(pool, &sp);
}

int als_submit_after(als_pool_t *pool, uint64_t delay_ns, als_task_fn fn, void *arg)
{
    if (!pool || !fn)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP());
    struct als__spec sp = { .fn = fn, .arg = arg, .delay_ns = delay_ns };
    return als__submit(pool, &sp);
}

/* ---- waiting ---------------------------------------------------------- */

uint64_t als__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t als__deadline(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return UINT64_MAX;
    uint64_t now = als__now_ns();
    return (uint64_t)timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + (uint64_t)timeout_ns;
}

/* Sleeps on `word` while it equals `seq`, at most until `deadline`. */
static void futex_wait_until(_Atomic uint32_t *word, uint32_t seq, uint64_t deadline,
                             uint64_t cap_ns)
{
    uint64_t now = als__now_ns();
    if (deadline <= now)
        return;
    uint64_t left = deadline - now;
    if (left > cap_ns)
        left = cap_ns;
    struct timespec ts = { (time_t)(left / 1000000000u), (long)(left % 1000000000u) };
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seq, &ts, NULL, 0);
}

void als__wake_waiters(_Atomic uint32_t *word, _Atomic uint32_t *waiting)
{
    /* seq_cst pairs with the waiter's increment of *waiting (Dekker): the
     * completer changed its state with seq_cst before calling this. */
    if (atomic_load_explicit(waiting, memory_order_seq_cst) == 0)
        return;
    atomic_fetch_add_explicit(word, 1, memory_order_release);
    futex_wake(word, INT_MAX);
}

int als__wait(bool (*done)(void *), void *ctx, _Atomic uint32_t *word,
              _Atomic uint32_t *waiting, uint64_t deadline)
{
    struct worker *w = self;
    int rc = 0;
    atomic_fetch_add_explicit(waiting, 1, memory_order_seq_cst);
    for (;;) {
        uint32_t seq = atomic_load_explicit(word, memory_order_acquire);
        if (done(ctx))
            break;
        if (als__now_ns() >= deadline) {
            rc = ALS_ETIMEDOUT;
            break;
        }
        if (w) {
            /* Help: run this pool's queued tasks instead of blocking a
             * thread the awaited work may need. */
            struct task *t = task_take(w);
            if (t) {
                task_run(w, t);
                continue;
            }
            /* Nothing to run: sleep briefly on our own word; new tasks
             * go to the awake workers or wake the parked ones. */
            worker_flush(w);
            futex_wait_until(word, seq, deadline, 1000000);
            continue;
        }
        futex_wait_until(word, seq, deadline, UINT64_MAX);
    }
    atomic_fetch_sub_explicit(waiting, 1, memory_order_relaxed);
    return rc;
}

/* ---- lifecycle -------------------------------------------------------- */

static unsigned cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static unsigned round_pow2(unsigned n)
{
    unsigned p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

/* ---- fork --------------------------------------------------------------
 * A fork() child has one thread, the one that forked: no pool created
 * before has workers there, and its locks may be held by threads that are
 * gone. The child handler marks every live pool: it refuses work (STOPPED,
 * so every submit path answers ALS_ESHUTDOWN), drain and shutdown return at
 * once, and als_pool_free releases the memory without joining or touching
 * its locks. The record slabs' lock is held across fork, so the child can
 * still allocate records. */

static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static als_pool_t *pools;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static bool fork_ok;

static void fork_prepare(void)
{
    pthread_mutex_lock(&pools_mu);
    pthread_mutex_lock(&slabs_mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&slabs_mu);
    pthread_mutex_unlock(&pools_mu);
}

static void fork_child(void)
{
    for (als_pool_t *p = pools; p; p = p->reg_next) {
        p->forked = true;
        atomic_store_explicit(&p->state, STOPPED, memory_order_relaxed);
    }
    fork_parent();
}

static void fork_init(void)
{
    fork_ok = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
}

static void pool_list(als_pool_t *pool)
{
    pthread_mutex_lock(&pools_mu);
    pool->reg_next = pools;
    if (pools)
        pools->reg_prev = &pool->reg_next;
    pool->reg_prev = &pools;
    pools = pool;
    pthread_mutex_unlock(&pools_mu);
}

/* reg_prev is read under the lock too: a pool created meanwhile writes the
 * head pool's reg_prev (tsan: stress_pinned). NULL: never listed. */
static void pool_unlist(als_pool_t *pool)
{
    pthread_mutex_lock(&pools_mu);
    if (pool->reg_prev) {
        *pool->reg_prev = pool->reg_next;
        if (pool->reg_next)
            pool->reg_next->reg_prev = pool->reg_prev;
    }
    pthread_mutex_unlock(&pools_mu);
}

static void pool_release(als_pool_t *pool);

void als__pool_ref(als_pool_t *pool)
{
    atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
}

void als__pool_unref(als_pool_t *pool)
{
    /* acq_rel: whoever frees sees every use made under the other refs. */
    if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) == 1)
        pool_release(pool);
}

static void pool_release(als_pool_t *pool)
{
    pool_unlist(pool);
    als__queue_fini(&pool->q);
    als__free(pool->timers.heap);
    if (!pool->forked) { /* a gone thread may hold them (see fork) */
        pthread_cond_destroy(&pool->timers.cv);
        pthread_mutex_destroy(&pool->timers.mu);
        pthread_cond_destroy(&pool->stop_cv);
        pthread_mutex_destroy(&pool->stop_mu);
        pthread_mutex_destroy(&pool->drain_mu);
    }
    free(pool->workers);
    free((void *)pool->idle);
    free(pool);
}

static void *aligned_zalloc(size_t size)
{
    size = (size + ALS__CACHELINE - 1) & ~(size_t)(ALS__CACHELINE - 1);
    /* Through als__malloc's hook: fail first if a test asks. */
    void *probe = als__malloc(1);
    if (!probe)
        return NULL;
    als__free(probe);
    void *p = aligned_alloc(ALS__CACHELINE, size);
    if (p)
        memset(p, 0, size);
    return p;
}

als_pool_t *als_pool_new(const als_pool_options *opts)
{
    als_pool_options o = opts ? *opts : (als_pool_options){ 0 };
    if (o.queue_capacity > MAX_CAPACITY)
        return NULL;
    unsigned cap = round_pow2(o.queue_capacity ? o.queue_capacity : DEFAULT_CAPACITY);
    unsigned n = o.threads ? o.threads : cpu_count();

    pthread_once(&chains_once, chains_init);
    pthread_once(&fork_once, fork_init);
    if (!chains_ok || !fork_ok)
        return NULL;
    als_pool_t *pool = aligned_zalloc(sizeof *pool);
    if (!pool)
        return NULL;
    pool->workers = aligned_zalloc((size_t)n * sizeof *pool->workers);
    pool->idle_words = (n + 63) / 64;
    pool->idle = aligned_zalloc(pool->idle_words * sizeof *pool->idle);
    if (!pool->workers || !pool->idle) {
        free(pool->workers);
        free((void *)pool->idle);
        free(pool);
        return NULL;
    }
    if (cap < 4) { /* see ring_push */
        pool->small_cap = cap;
        cap = 4;
    }
    if (als__queue_init(&pool->q, cap)) {
        free(pool->workers);
        free((void *)pool->idle);
        free(pool);
        return NULL;
    }
    atomic_init(&pool->refs, 1);
    pthread_mutex_init(&pool->drain_mu, NULL);
    pthread_mutex_init(&pool->stop_mu, NULL);
    pthread_cond_init(&pool->stop_cv, NULL);
    pthread_mutex_init(&pool->timers.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->timers.cv, &ca);
    pthread_condattr_destroy(&ca);
    pool->on_full = o.on_full == ALS_FULL_REJECT ? ALS_FULL_REJECT : ALS_FULL_BLOCK;
    pool->on_error = o.on_error;
    pool->user = o.user;
    snprintf(pool->name, sizeof pool->name, "%s", o.name ? o.name : "als");
    pool->nthreads = n;
    pool->room_mark = (pool->small_cap ? pool->small_cap : cap) / 2;
    /* libgomp's threshold. A ring smaller than that fills first: a full
     * BLOCK pool runs its workers' submits inline anyway (als__submit). */
    pool->inline_mark = n > UINT_MAX / INLINE_PER_WORKER ? UINT_MAX : n * INLINE_PER_WORKER;

    /* Workers start with an empty context whatever the creator's is. */
    for (unsigned i = 0; i < n; i++) {
        struct worker *w = &pool->workers[i];
        w->pool = pool;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            atomic_store_explicit(&pool->state, STOPPED, memory_order_seq_cst);
            wake_all(pool);
            for (unsigned j = 0; j < i; j++)
                pthread_join(pool->workers[j].thread, NULL);
            pool_release(pool);
            return NULL;
        }
    }
    pool_list(pool);
    return pool;
}

int als_pool_drain(als_pool_t *pool)
{
    if (!pool)
        return ALS_EINVAL;
    if (own_worker(pool))
        return ALS_EDEADLK;
    if (pool->forked)
        return 0; /* nothing will ever run (see fork) */
    /* Tasks accepted from now on, and their descendants, join the next
     * generation: wait for this one only, so that steady submitters cannot
     * keep a drain waiting. The previous drain emptied the other one. */
    pthread_mutex_lock(&pool->drain_mu);
    uint32_t e = atomic_load_explicit(&pool->drain_gen, memory_order_relaxed);
    atomic_store_explicit(&pool->drain_gen, e + 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&pool->drain_waiters, 1, memory_order_seq_cst);
    for (;;) {
        uint32_t seq = atomic_load_explicit(&pool->drain_seq, memory_order_acquire);
        if (in_flight_of(pool, e & 1) == 0)
            break;
        /* Workers wake us when they run out of work (worker_flush). While
         * newer work keeps them busy, our generation may end unseen: look
         * again every millisecond rather than have every worker sum the
         * counters at every flush (bench/pool fanout: 5 -> 11 ns/task). */
        futex_wait_until(&pool->drain_seq, seq, UINT64_MAX, 1000000);
    }
    als__hb_acquire(&pool->drain_seq);
    atomic_fetch_sub_explicit(&pool->drain_waiters, 1, memory_order_relaxed);
    pthread_mutex_unlock(&pool->drain_mu);
    return 0;
}

int als_pool_shutdown(als_pool_t *pool, int how)
{
    if (!pool || (how != ALS_SHUTDOWN_DRAIN && how != ALS_SHUTDOWN_CANCEL))
        return ALS_EINVAL;
    if (own_worker(pool))
        return ALS_EDEADLK;
    if (pool->forked)
        return 0; /* stopped, no workers (see fork) */
    pthread_mutex_lock(&pool->stop_mu);
    int want = how == ALS_SHUTDOWN_CANCEL ? CANCELLING : DRAINING;
    if (atomic_load_explicit(&pool->state, memory_order_relaxed) < want) {
        atomic_store_explicit(&pool->state, want, memory_order_seq_cst);
        wake_all(pool);
        als__timers_kick(pool); /* CANCEL: it hands pending timers over */
    }
    if (!pool->joining) {
        /* The first caller joins; later ones (a CANCEL upgrading a DRAIN,
         * or repeated calls) wait for the same end. */
        pool->joining = true;
        pthread_mutex_unlock(&pool->stop_mu);
        /* Workers end when nothing is in flight, delayed tasks included,
         * so the timer thread has nothing left when they are gone. */
        for (unsigned i = 0; i < pool->nthreads; i++)
            worker_join(pool, &pool->workers[i]);
        als__timers_stop(pool);
        pthread_mutex_lock(&pool->stop_mu);
        atomic_store_explicit(&pool->state, STOPPED, memory_order_seq_cst);
        pool->joined = true;
        pthread_cond_broadcast(&pool->stop_cv);
    }
    while (!pool->joined)
        pthread_cond_wait(&pool->stop_cv, &pool->stop_mu);
    pthread_mutex_unlock(&pool->stop_mu);
    return 0;
}

void als_pool_free(als_pool_t *pool)
{
    if (!pool)
        return;
    if (own_worker(pool)) {
#ifndef NDEBUG
        fprintf(stderr, "libals: als_pool_free called from the pool's own "
                        "worker: refused (the pool stays usable)\n");
#endif
        return;
    }
    als_pool_shutdown(pool, ALS_SHUTDOWN_DRAIN);
    als__pool_unref(pool);
}

int als_pool_stats_get(const als_pool_t *pool, als_pool_stats *out)
{
    if (!pool || !out)
        return ALS_EINVAL;
    uint64_t done = 0, failed = 0, cancelled = 0, started = 0, submitted = 0;
    for (unsigned i = 0; i < pool->nthreads; i++) {
        const struct worker *w = &pool->workers[i];
        done += atomic_load_explicit(&w->done[0], memory_order_acquire);
        done += atomic_load_explicit(&w->done[1], memory_order_acquire);
        failed += atomic_load_explicit(&w->failed, memory_order_relaxed);
        cancelled += atomic_load_explicit(&w->cancelled, memory_order_relaxed);
    }
    for (unsigned i = 0; i < pool->nthreads; i++) {
        const struct worker *w = &pool->workers[i];
        started += atomic_load_explicit(&w->started, memory_order_relaxed);
        submitted += atomic_load_explicit(&w->submitted[0], memory_order_relaxed);
        submitted += atomic_load_explicit(&w->submitted[1], memory_order_relaxed);
    }
    submitted += atomic_load_explicit(&pool->ext_submitted[0], memory_order_relaxed);
    submitted += atomic_load_explicit(&pool->ext_submitted[1], memory_order_relaxed);
    uint64_t parks = 0, wakeups = atomic_load_explicit(&pool->ext_wakeups, memory_order_relaxed),
             sub_wakeups = atomic_load_explicit(&pool->ext_submitter_wakeups, memory_order_relaxed);
    for (unsigned i = 0; i < pool->nthreads; i++) {
        const struct worker *w = &pool->workers[i];
        parks += atomic_load_explicit(&w->parks, memory_order_relaxed);
        wakeups += atomic_load_explicit(&w->wakeups, memory_order_relaxed);
        sub_wakeups += atomic_load_explicit(&w->submitter_wakeups, memory_order_relaxed);
    }
    uint64_t completed = done - failed - cancelled;
    *out = (als_pool_stats){
        .submitted = submitted,
        .completed = completed,
        .failed = failed,
        .rejected = atomic_load_explicit(&pool->rejected, memory_order_relaxed),
        .cancelled = cancelled,
        /* Racy while busy (clamped at 0); exact when quiescent. */
        .queued = submitted > started + cancelled ? submitted - started - cancelled : 0,
        .running = started > completed + failed ? started - completed - failed : 0,
        .threads = pool->nthreads,
        .parks = parks,
        .wakeups = wakeups,
        .submitter_wakeups = sub_wakeups,
        .steals = 0, /* no worker steals from another yet */
    };
    return 0;
}

als_pool_t *als_pool_current(void)
{
    return self ? self->pool : NULL;
}
