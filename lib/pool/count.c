/* Counting what is in flight.
 *
 * Every counter is written by one thread only: each worker counts what it
 * submits, starts and finishes on its own cache line; outside submitters
 * share one counter. "In flight" is the sum of submissions minus the sum of
 * finished tasks; a finished count is read before the submission counts so
 * the sum can only overestimate, and seq_cst on both sides lets either a
 * drain waiter or the last finishing worker see the other (Dekker). A
 * worker publishes its finished count, and drops the frame references of
 * finished tasks, in batches (worker.c task_finish explains why that is
 * invisible). Submitted and finished counts are kept per drain generation
 * (two, used alternately): a drain moves new submitters to the other
 * generation and waits only for its own, descendants included
 * (als__accept_count).
 *
 * Also als_pool_stats_get, which sums them.
 *
 * Uses: park.c. */
#include "scheduler.h"
#include "tsan.h"

/* Outside submits of generation `gen`, summed over the shards. */
static uint64_t ext_submitted(const als_pool_t *pool, unsigned gen, memory_order order)
{
    uint64_t n = 0;
    for (unsigned s = 0; s < EXT_SHARDS; s++)
        n += atomic_load_explicit(&pool->ext_count[s].submitted[gen], order);
    return n;
}

/* Accepted tasks of drain generation `gen` (0 or 1; 2: both) not yet
 * finished; never underestimates (see top). */
uint64_t als__in_flight(const als_pool_t *pool, unsigned gen)
{
    unsigned lo = gen == 2 ? 0 : gen, hi = gen == 2 ? 1 : gen;
    uint64_t done = 0, submitted = 0;
    for (unsigned i = 0; i < pool->nworkers; i++)
        for (unsigned g = lo; g <= hi; g++)
            done += atomic_load_explicit(&pool->workers[i].done[g], memory_order_seq_cst);
    for (unsigned i = 0; i < pool->nworkers; i++)
        for (unsigned g = lo; g <= hi; g++)
            submitted += atomic_load_explicit(&pool->workers[i].submitted[g],
                                              memory_order_seq_cst);
    for (unsigned g = lo; g <= hi; g++)
        submitted += ext_submitted(pool, g, memory_order_seq_cst);
    return submitted - done;
}

/* Whether a shutdown has begun and nothing is left in flight: workers end. */
bool als__pool_finished(const als_pool_t *pool)
{
    return atomic_load_explicit(&pool->state, memory_order_seq_cst) != RUNNING &&
           als__in_flight(pool, 2) == 0;
}

/* Called after tasks finished or a submission was taken back, when someone
 * may be waiting: a drain for its generation (drain_gen was bumped past
 * it), a shutdown for the whole pool. */
void als__idle_check(als_pool_t *pool)
{
    if (atomic_load_explicit(&pool->drain_waiters, memory_order_seq_cst)) {
        unsigned gen = (atomic_load_explicit(&pool->drain_gen, memory_order_seq_cst) - 1) & 1;
        if (als__in_flight(pool, gen) == 0) {
            atomic_fetch_add_explicit(&pool->drain_seq, 1, memory_order_release);
            als__futex_wake_all(&pool->drain_seq);
        }
    }
    if (als__pool_finished(pool))
        als__wake_all(pool);
}

bool als__idle_watched(const als_pool_t *pool)
{
    return atomic_load_explicit(&pool->drain_waiters, memory_order_seq_cst) ||
           atomic_load_explicit(&pool->state, memory_order_seq_cst) != RUNNING;
}

/* The calling outside thread's counter of generation `gen`. An unaccept
 * from the same thread finds the same one (only the sum matters anyway:
 * the shards wrap like the sum does). */
static _Atomic uint64_t *ext_counter(als_pool_t *pool, unsigned gen)
{
    return &pool->ext_count[als__thread_hash() % EXT_SHARDS].submitted[gen];
}

/* Takes back an accepted count of generation `gen` (the task was refused
 * after all, or moves to a newer generation). */
void als__unaccept(als_pool_t *pool, struct worker *w, unsigned gen)
{
    if (w)
        atomic_store_explicit(&w->submitted[gen],
                              atomic_load_explicit(&w->submitted[gen], memory_order_relaxed) - 1,
                              memory_order_seq_cst);
    else
        atomic_fetch_sub_explicit(ext_counter(pool, gen), 1, memory_order_seq_cst);
    if (als__idle_watched(pool))
        als__idle_check(pool);
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
unsigned als__accept_count(als_pool_t *pool, struct worker *w)
{
    if (w && w->running) {
        als__bump(&w->submitted[w->gen], memory_order_relaxed);
        return w->gen;
    }
    uint32_t e = atomic_load_explicit(&pool->drain_gen, memory_order_seq_cst);
    for (;;) {
        unsigned gen = e & 1;
        if (w)
            als__bump(&w->submitted[gen], memory_order_seq_cst);
        else
            atomic_fetch_add_explicit(ext_counter(pool, gen), 1, memory_order_seq_cst);
        uint32_t now = atomic_load_explicit(&pool->drain_gen, memory_order_seq_cst);
        if (now == e)
            return gen;
        als__unaccept(pool, w, gen);
        e = now;
    }
}

/* Publishes the finished counts this worker deferred. Returns whether the
 * caller should call als__idle_check if it finds no work left (in its own
 * queues or the shared one; else whoever finishes that work checks again.
 * A drain's generation may end while newer work remains: the drain
 * re-checks by itself). */
bool als__done_publish(struct worker *w)
{
    if (!w->done_pending[0] && !w->done_pending[1])
        return false;
    als__hb_release(&w->pool->drain_seq); /* to als_pool_drain */
    for (unsigned g = 0; g < 2; g++) {
        if (!w->done_pending[g])
            continue;
        als__add(&w->done[g], w->done_pending[g], memory_order_seq_cst);
        w->done_pending[g] = 0;
    }
    w->done_pending_n = 0;
    return ALS__UNLIKELY(als__idle_watched(w->pool));
}

/* The counters, summed on read: every one has a single writer (top). */
int als_pool_stats_get(const als_pool_t *pool, als_pool_stats *out)
{
    if (!pool || !out)
        return ALS_EINVAL;
    uint64_t done = 0, failed = 0, cancelled = 0, started = 0, submitted = 0;
    for (unsigned i = 0; i < pool->nworkers; i++) {
        const struct worker *w = &pool->workers[i];
        done += atomic_load_explicit(&w->done[0], memory_order_acquire);
        done += atomic_load_explicit(&w->done[1], memory_order_acquire);
        failed += atomic_load_explicit(&w->failed, memory_order_relaxed);
        cancelled += atomic_load_explicit(&w->cancelled, memory_order_relaxed);
    }
    for (unsigned i = 0; i < pool->nworkers; i++) {
        const struct worker *w = &pool->workers[i];
        started += atomic_load_explicit(&w->started, memory_order_relaxed);
        submitted += atomic_load_explicit(&w->submitted[0], memory_order_relaxed);
        submitted += atomic_load_explicit(&w->submitted[1], memory_order_relaxed);
    }
    submitted += ext_submitted(pool, 0, memory_order_relaxed) +
                 ext_submitted(pool, 1, memory_order_relaxed);
    uint64_t steals = 0, parks = 0, wakeups = atomic_load_explicit(&pool->ext_wakeups, memory_order_relaxed),
             sub_wakeups = atomic_load_explicit(&pool->ext_submitter_wakeups, memory_order_relaxed);
    for (unsigned i = 0; i < pool->nworkers; i++) {
        const struct worker *w = &pool->workers[i];
        parks += atomic_load_explicit(&w->parks, memory_order_relaxed);
        steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
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
        .steals = steals,
    };
    return 0;
}
