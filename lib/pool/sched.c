/* Where tasks wait.
 *
 * One shared bounded MPMC ring (queue.c) for submits from outside the pool;
 * per worker, a one-task LIFO slot for the newest task submitted by a task
 * running on that worker, and (BLOCK pools with room for it) a bounded
 * queue of its own for the older ones. A chain of tasks that each submit
 * the next therefore never leaves its core and wakes nobody; a fan-out
 * pushes the older sibling to the worker's own queue, which only its owner
 * pushes to (no compare-and-swap, no line shared with other submitters) and
 * from which idle workers steal half at a time (as Tokio's and Go's
 * schedulers do). A full own queue spills half of itself to the shared
 * ring. While other work waits, a worker takes at most LIFO_MAX tasks in a
 * row from its slot, and every SHARED_TURN takes looks at the shared ring
 * first, so neither self-resubmitting tasks nor a busy worker's own queue
 * starve outside submitters. While the ring holds two or more tasks per
 * worker, a worker claims up to POP_BATCH of them with one CAS and runs
 * them in order (ring_take); they still count as queued, and the slot's
 * fairness rule covers them too. A helping drain (the guest worker) takes
 * half of the ring into its own queue instead, so that it and the workers
 * run different stretches of the submits; idle workers steal from it.
 *
 * Outside submits are sharded: in a pool with own queues where at least
 * 2 * INBOX_GROUP workers can run at once (workers and CPUs both), the
 * workers share one inbox (a small MPMC ring) per INBOX_GROUP of those
 * (pool.c says why not per INBOX_GROUP workers), and every outside
 * thread deals its submits round the inboxes in runs of DEAL_RUN,
 * starting at a place of its own; a full inbox passes the task to the
 * shared ring. So outside submitters, and the workers taking their
 * tasks, spread over that many pairs of cache lines instead of meeting
 * on the ring's. A worker takes from its
 * group's inbox after its own queue, idle workers steal half of another
 * group's inbox as they steal from own queues, and the shared turn looks
 * at the inbox first. (An inbox per worker measured worse on 2 CPUs:
 * bench/pool requests 11-16% slower at 2-16 workers, fanout at 16 workers
 * half as fast, the searchers reading twice as many lines; and small
 * pools gain nothing from sharding.)
 *
 * A REJECT pool (or one too small to give each worker LOCAL_CAP) has no own
 * queues and no inboxes: its capacity answers stay exact (als.h).
 *
 * Uses: queue.c, park.c. */
#include "scheduler.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

bool als__ring_push(als_pool_t *pool, struct als__task *t)
{
    return als__queue_push(&pool->q, t);
}

/* Pushes to the ring and wakes a worker for it (pool.h). */
bool als__task_try_push(als_pool_t *pool, struct als__task *t)
{
    if (!als__ring_push(pool, t))
        return false;
    als__wake_one(pool);
    return true;
}

void als__task_push(als_pool_t *pool, struct als__task *t)
{
    if (!als__ring_push(pool, t))
        als__push_wait(pool, t, true);
    als__wake_one(pool);
}

/* Whether tasks wait where any worker can take them now: the shared
 * ring, some worker's own queue or inbox. (Ready, not a length: a push
 * still publishing wakes a worker itself when done, queue.h.) */
bool als__has_work(als_pool_t *pool)
{
    if (als__queue_ready(&pool->q))
        return true;
    if (pool->locals)
        for (unsigned i = 0; i < pool->nworkers; i++)
            if (als__queue_ready(&pool->workers[i].local))
                return true;
    for (unsigned i = 0; i < pool->ninboxes; i++)
        if (als__queue_ready(&pool->inboxes[i]))
            return true;
    return false;
}

/* Where this thread deals its outside submits, plus one (0: not yet), and
 * how many it has dealt there: a rotation per thread, started at a place
 * of its own (als__thread_hash) so that submitters starting together do
 * not all begin at worker 0, moving on every DEAL_RUN submits. */
static _Thread_local unsigned deal __attribute__((tls_model("initial-exec")));
static _Thread_local unsigned dealt __attribute__((tls_model("initial-exec")));

/* Pushes an outside submit to the inbox of this thread's rotation.
 * false: that inbox is full (the caller uses the shared ring). */
bool als__inbox_push(als_pool_t *pool, struct als__task *t)
{
    unsigned n = pool->ninboxes, i = deal;
    if (ALS__UNLIKELY(i == 0 || i > n)) /* first deal, or a smaller pool */
        i = als__thread_hash() % n + 1;
    if (++dealt < DEAL_RUN) {
        deal = i;
    } else {
        dealt = 0;
        deal = i < n ? i + 1 : 1;
    }
    return als__queue_push(&pool->inboxes[i - 1], t);
}

/* Whether the tasks this worker took off the ring together have all run. */
static bool batch_empty(const struct worker *w)
{
    return w->batch_i == w->batch_n;
}

/* Queues what waits in w's slot, batch and own queue on the shared ring,
 * waking workers for it (the guest, when its drain ends: pool.c). */
void als__tasks_hand_back(struct worker *w)
{
    als_pool_t *pool = w->pool;
    struct als__task *t = w->next;
    w->next = NULL;
    if (t)
        als__task_push(pool, t);
    while (!batch_empty(w))
        als__task_push(pool, w->batch[w->batch_i++]);
    while (pool->locals && (t = als__queue_pop(&w->local)) != NULL)
        als__task_push(pool, t);
}

static unsigned local_length(const struct worker *w)
{
    return w->pool->locals ? als__queue_length((struct als__queue *)&w->local) : 0;
}

/* Whether nothing waits in this worker's own queues (slot, batch, own
 * queue, inbox) nor the shared one. The inbox and the ring by readiness:
 * their lengths may lag a few pushes (queue.h), and a task they hide
 * would wait behind a chain in the slot for as long as it runs. */
bool als__local_idle(const struct worker *w)
{
    return !w->next && batch_empty(w) && local_length(w) == 0 &&
           !(w->inbox && als__queue_ready(w->inbox)) && !als__queue_ready(&w->pool->q);
}

/* Whether a task of worker w submitting now finds a deep backlog: its own
 * queue, or the shared ring, holds INLINE_PER_WORKER tasks per worker
 * (pool.c submit_inline). */
bool als__backlog_deep(const struct worker *w)
{
    return local_length(w) >= INLINE_PER_WORKER ||
           als__queue_length(&w->pool->q) >= w->pool->inline_mark;
}

/* Pushes task t, submitted by a task of worker w, to w's own queue. A full
 * queue first spills half of itself to the shared ring, in one go, so that
 * a long fan-out does not overflow on every submit. false: no room in
 * either (the caller falls back to the ring's full policy). */
bool als__local_push(struct worker *w, struct als__task *t)
{
    if (ALS__LIKELY(als__queue_push_owner(&w->local, t)))
        return true;
    struct als__task *spill[LOCAL_CAP / 2];
    unsigned n = als__queue_pop_many(&w->local, (void **)spill, LOCAL_CAP / 2), i = 0;
    while (i < n && als__ring_push(w->pool, spill[i]))
        i++;
    for (unsigned k = i; k < n; k++) /* the ring is full: keep them */
        als__queue_push_owner(&w->local, spill[k]);
    return als__queue_push_owner(&w->local, t);
}

/* Takes up to n tasks off queue q with one claim: the first into *first,
 * the others into w's own queue, which the caller found empty (only w
 * pushes to it) and which holds LOCAL_CAP >= STEAL_MAX. Returns how many
 * it took (0: *first untouched). */
static unsigned take_to_own(struct worker *w, struct als__queue *q, unsigned n,
                            struct als__task **first)
{
    struct als__task *got[STEAL_MAX];
    unsigned m = als__queue_pop_many(q, (void **)got, n < STEAL_MAX ? n : STEAL_MAX);
    for (unsigned i = 1; i < m; i++) {
        als__task_prefetch(got[i]);
        als__queue_push_owner(&w->local, got[i]);
    }
    if (m)
        *first = got[0];
    return m;
}

/* Takes up to half of queue q (another worker's own queue, or an inbox):
 * returns one task and keeps the others in w's own queue (empty: w looked
 * there first, only w pushes to it, and half of q fits). */
static struct als__task *steal_from(struct worker *w, struct als__queue *q)
{
    unsigned len = als__queue_length(q);
    /* The length is an estimate that can lag a task behind (queue.h:
     * two producers may record their tickets out of order), and a thief
     * woken for that task must still find it (stress/handoff under TSan
     * lost one: its inbox's owners parked, the woken thief saw length 0). */
    if (!len && !als__queue_ready(q))
        return NULL;
    struct als__task *t = NULL;
    als__add(&w->steals, take_to_own(w, q, len ? (len + 1) / 2 : 1, &t), memory_order_relaxed);
    return t;
}

/* Steals from the other workers' own queues, then the other groups'
 * inboxes, starting at a random victim. */
static struct als__task *steal(struct worker *w)
{
    als_pool_t *pool = w->pool;
    unsigned n = pool->nworkers; /* the guest's own queue too */
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 17;
    w->rng ^= w->rng << 5;
    unsigned start = w->rng % n;
    struct als__task *t;
    for (unsigned k = 0; k < n; k++) {
        struct worker *v = &pool->workers[(start + k) % n];
        if (v != w && (t = steal_from(w, &v->local)) != NULL)
            return t;
    }
    for (unsigned k = 0, m = pool->ninboxes; k < m; k++) {
        struct als__queue *q = &pool->inboxes[(start + k) % m];
        if (q != w->inbox && (t = steal_from(w, q)) != NULL)
            return t;
    }
    return NULL;
}

/* Takes from the ring: several tasks at once during a stream, else one,
 * so that a short queue still spreads over the workers. Each claim moves
 * the consumer head's line between CPUs, and the producer's with it: one
 * claim per POP_BATCH tasks measured 110 -> 69 ns per task with one
 * outside submitter. Longer claims also keep consecutive submits
 * together: a request's subtasks, which share its counters, its frame and
 * its data, run on one worker instead of being split between two CPUs'
 * caches (POP_BATCH).
 *
 * For a worker, a stream begins when the ring holds two tasks per worker,
 * so that a burst of fewer still reaches every worker (and each task of
 * it can have one of its own, if they wait for each other); it goes on
 * while the ring holds two per worker that can run at once, looked at
 * here and whenever the worker publishes its finished count (worker.c
 * als__worker_flush). A claim takes at most the share of a worker that
 * can run at once: with more workers than CPUs the others sleep
 * (monitor.c), and claims as short as their share made most takes of a
 * request wave claims of one (bench/pool requests, 16 workers on 2 CPUs:
 * 1.20-1.25x; outside streams, whose producer is faster with a longer
 * ring, 0.89-0.98x; tenth pass in docs/performance.md). The tasks a claim
 * holds wait for the ones before them, as on one worker. Without surplus
 * workers, all this is the rule "claim while the ring holds two per
 * worker". */
static struct als__task *ring_take(struct worker *w)
{
    als_pool_t *pool = w->pool;
    unsigned len = als__queue_length(&pool->q);
    unsigned running = als__running(pool);
    /* A helping drain (the guest, als_pool_drain_help) takes half the
     * ring into its own queue, where idle workers can steal it back, and
     * leaves the rest to the workers: each then runs a stretch of
     * consecutive submits. Taking batches from the same end as the
     * workers split every request's subtasks between the drain's thread
     * and a worker, and with them each request's lines (its counters,
     * its frame's references, its data): bench/pool requests with
     * --drain help, 1-4 workers, 1.20-1.29x; docs/performance.md. */
    struct als__task *t;
    if (w == als__guest(pool) && pool->locals && len >= GUEST_SHARE_MIN &&
        local_length(w) == 0 && take_to_own(w, &pool->q, (len + 1) / 2, &t))
        return t;
    if (len >= 2 * pool->nthreads)
        w->streaming = true;
    else if (len < 2 * running)
        w->streaming = false;
    if (w->streaming) {
        unsigned share = len / running;
        unsigned n = als__queue_pop_many(&pool->q, (void **)w->batch,
                                         share < POP_BATCH ? share : POP_BATCH);
        if (n) {
            for (unsigned i = 1; i < n; i++)
                als__task_prefetch(w->batch[i]);
            w->batch_i = 1;
            w->batch_n = n;
            return w->batch[0];
        }
    }
    return als__queue_pop(&pool->q);
}

static struct als__task *shared_take(struct worker *w)
{
    struct als__task *t = ring_take(w);
    if (t && atomic_load_explicit(&w->pool->room_armed, memory_order_relaxed))
        als__room_wake(w->pool, w);
    return t;
}

/* Outside work: this worker's inbox, then the shared ring. */
static struct als__task *outside_take(struct worker *w)
{
    struct als__task *t;
    if (w->inbox && (t = als__queue_pop(w->inbox)) != NULL)
        return t;
    return shared_take(w);
}

/* The next task for worker w, or NULL: its LIFO slot, the rest of its
 * batch, its own queue, the shared ring, then other workers' queues. */
struct als__task *als__task_take(struct worker *w)
{
    als_pool_t *pool = w->pool;
    struct als__task *t = w->next;
    if (t) {
        w->next = NULL;
        if (++w->streak <= LIFO_MAX)
            return t;
        if (als__local_idle(w)) {
            w->streak = 0; /* nothing waited: look again LIFO_MAX takes on */
            return t;
        }
        /* Fairness: the other work has waited long enough; t goes last. */
        if (pool->locals && als__queue_push_owner(&w->local, t))
            als__wake_one_after_local(pool);
        else if (als__ring_push(pool, t))
            als__wake_one(pool);
        else
            return t;
    }
    w->streak = 0;
    if (!batch_empty(w))
        return w->batch[w->batch_i++];
    if (!pool->locals)
        return shared_take(w);
    if (++w->tick % SHARED_TURN == 0 && (t = outside_take(w)) != NULL)
        return t;
    if ((t = als__queue_pop(&w->local)) != NULL)
        return t;
    if ((t = outside_take(w)) != NULL)
        return t;
    return steal(w);
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
