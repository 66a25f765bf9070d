/* Hand-offs, and the monitor that keeps tasks from waiting on blocked
 * workers.
 *
 * A worker that finds work passes a wake-up on while more is queued
 * (worker.c: the last spinner, a worker fresh from a park), so that a
 * burst reaches as many workers as it needs. With more workers than CPUs
 * that chain used to run on past the CPUs: the workers it woke took turns
 * on the CPUs with the busy ones, in the middle of their claims of up to
 * POP_BATCH tasks (bench/pool requests, 4-16 workers on 2 CPUs: each
 * 256-task wave ran on one CPU while a woken worker waited behind the busy
 * one). So a hand-off wakes a worker only while fewer are awake than can
 * run at once; the awake ones take the queued work, as Go's scheduler
 * lets only GOMAXPROCS threads run Go code.
 *
 * A worker stays awake when its task blocks (on I/O, a lock, another
 * task), and then the CPU it counts for is free while tasks wait. Go
 * hands such a thread's P on when the thread enters a system call; we
 * cannot see a task block, so we do what Go's sysmon does for the calls
 * it cannot see: look. A declined hand-off arms the pool's monitor, a
 * thread that then looks every MONITOR_TICK_NS: for each awake worker
 * that started no task since its last look (stuck in one, or idle but not
 * yet parked), it wakes a parked worker, if tasks wait. It sleeps without
 * a timeout again after a look that found no task waiting and no hand-off
 * declined since the look before: an idle pool costs nothing.
 *
 * Submits are not limited: the first task of a burst, or one submitted
 * while every awake worker is stuck, still wakes a parked worker at once.
 * The limit only applies where the monitor runs: in pools with more
 * workers than CPUs (otherwise every worker can run at once anyway; while
 * a helping drain runs tasks, one fewer can, but a pool without surplus
 * workers does not start a thread for that).
 *
 * Uses: park.c, sched.c (als__has_work). */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>

/* mon_state */
enum { MON_ASLEEP, MON_ARMED, MON_QUIET /* armed, nothing declined since the last look */ };

/* Passes a wake-up on, if fewer workers are awake than can run at once
 * (surplus: workers beyond them, one more while a helping drain runs
 * tasks). Else arms the monitor, if any worker is parked that it could
 * wake. */
void als__hand_off(als_pool_t *pool)
{
    if (!pool->mon_started) {
        als__wake_one(pool);
        return;
    }
    unsigned surplus = atomic_load_explicit(&pool->surplus, memory_order_relaxed);
    unsigned parked = als__parked_upto(pool, surplus + 1);
    if (parked > surplus) {
        als__wake_one(pool);
        return;
    }
    if (!parked)
        return;
    /* Pairs with the monitor's fence between disarming and its look at
     * the queues (Dekker): it sees the work we saw, or we see it asleep. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&pool->mon_state, memory_order_relaxed) == MON_ARMED)
        return;
    if (atomic_exchange_explicit(&pool->mon_state, MON_ARMED, memory_order_relaxed) == MON_ASLEEP) {
        /* Release: the monitor that sees the new word sees MON_ARMED. */
        atomic_fetch_add_explicit(&pool->mon_word, 1, memory_order_release);
        als__futex_wake_all(&pool->mon_word);
    }
}

/* One look: wakes a parked worker for each awake one that started no task
 * since the last look, while tasks wait (a fresh look only records).
 * mon_last holds each worker's started count at the last look, mon_woke
 * whether it has had its replacement (one per stuck task). Returns
 * whether tasks wait. */
static bool monitor_look(als_pool_t *pool, bool fresh)
{
    uint64_t *last = pool->mon_last;
    bool *woke = pool->mon_woke;
    bool work = als__has_work(pool);
    for (unsigned i = 0; i < pool->nthreads; i++) {
        struct worker *w = &pool->workers[i];
        uint64_t started = atomic_load_explicit(&w->started, memory_order_relaxed);
        bool moved = started != last[i] || als__parked(w);
        last[i] = started;
        if (moved || fresh)
            woke[i] = false;
        else if (work && !woke[i])
            woke[i] = als__wake_parked(pool);
    }
    return work;
}

static void *monitor_main(void *arg)
{
    als_pool_t *pool = arg;
    bool record = true; /* an armed spell begins: note where everyone is */
    for (;;) {
        uint32_t seq = atomic_load_explicit(&pool->mon_word, memory_order_acquire);
        if (atomic_load_explicit(&pool->mon_stop, memory_order_relaxed))
            return NULL;
        if (atomic_load_explicit(&pool->mon_state, memory_order_relaxed) == MON_ASLEEP) {
            als__futex_wait_until(&pool->mon_word, seq, UINT64_MAX, UINT64_MAX);
            record = true;
            continue;
        }
        if (record)
            monitor_look(pool, true);
        record = false;
        als__futex_wait_until(&pool->mon_word, seq, als__deadline(MONITOR_TICK_NS),
                              MONITOR_TICK_NS);
        bool work = monitor_look(pool, false);
        uint32_t was = atomic_exchange_explicit(&pool->mon_state, MON_QUIET, memory_order_relaxed);
        if (was != MON_QUIET || work)
            continue;
        /* Nothing declined and nothing waiting for a whole tick: sleep,
         * unless a hand-off declines meanwhile (it wakes us), or work
         * arrived that one declined for before our look at the queues
         * (the fence pairs with als__hand_off's). */
        uint32_t quiet = MON_QUIET;
        if (atomic_compare_exchange_strong_explicit(&pool->mon_state, &quiet, MON_ASLEEP,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed)) {
            atomic_thread_fence(memory_order_seq_cst);
            uint32_t asleep = MON_ASLEEP;
            if (als__has_work(pool))
                atomic_compare_exchange_strong_explicit(&pool->mon_state, &asleep, MON_QUIET,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed);
        }
    }
}

/* Starts the monitor of a pool with more workers than CPUs. Without one
 * (fewer workers, or no memory or thread for it), hand-offs are not
 * limited. */
void als__monitor_start(als_pool_t *pool)
{
    if (pool->surplus_plain == 0)
        return;
    pool->mon_last = calloc(pool->nthreads, sizeof *pool->mon_last);
    pool->mon_woke = calloc(pool->nthreads, sizeof *pool->mon_woke);
    if (pool->mon_last && pool->mon_woke &&
        als__thread_spawn(&pool->mon_thread, NULL, monitor_main, pool) == 0) {
        pool->mon_started = true;
        char name[32]; /* named here: it is there when als_pool_new returns */
        snprintf(name, sizeof name, "%.11s-mon", pool->name);
        pthread_setname_np(pool->mon_thread, name);
        return;
    }
    free(pool->mon_last);
    free(pool->mon_woke);
    pool->mon_last = NULL;
    pool->mon_woke = NULL;
}

/* Ends and joins the monitor (after the workers: until they end, tasks
 * may still block). */
void als__monitor_stop(als_pool_t *pool)
{
    if (!pool->mon_started)
        return;
    atomic_store_explicit(&pool->mon_stop, true, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->mon_word, 1, memory_order_release);
    als__futex_wake_all(&pool->mon_word);
    pthread_join(pool->mon_thread, NULL);
    pool->mon_started = false;
}

void als__monitor_free(als_pool_t *pool)
{
    free(pool->mon_last);
    free(pool->mon_woke);
}
