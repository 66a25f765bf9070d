/* Parking and wake-ups.
 *
 * Idle workers spin briefly (worker.c), then sleep on their own futex word
 * after setting their bit in the pool's idle mask. A submitter reads the
 * mask after its push, whose commit is a locked instruction (queue.c): on
 * x86-64 a full barrier, so either the sleeper's own locked announcement
 * comes first and we see it, or our publication is visible to the
 * sleeper's re-check of the queues; elsewhere a seq_cst fence provides the
 * same. The waker claims one sleeper by clearing its bit (as a condition
 * variable counts signalled waiters), so a burst of submits into a parked
 * pool makes one system call per parked worker, not one per submit. While
 * an idle worker is still spinning, submits wake nobody (as in Go's
 * scheduler): the spinner re-checks the queues before it parks, and the
 * last spinner to find work, or a worker fresh from a park that finds more
 * queued, passes the wake-up on.
 *
 * Uses: queue.c (lengths only). */
#include "scheduler.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void als__futex_wake_all(_Atomic uint32_t *word)
{
    futex_wake(word, INT_MAX);
}

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

/* Sleeps on `word` while it equals `seq`, at most until `deadline` and at
 * most cap_ns. */
void als__futex_wait_until(_Atomic uint32_t *word, uint32_t seq, uint64_t deadline,
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
    struct worker *me = als__own_worker(pool);
    if (me)
        als__bump(submitters ? &me->submitter_wakeups : &me->wakeups, memory_order_relaxed);
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

/* Claims a sleeper of idle word i, whose bits read m, by clearing its bit
 * (so later submits of a burst see it gone and make no system call), and
 * wakes it. false: every one of them was claimed or withdrew meanwhile. */
static bool claim_and_wake(als_pool_t *pool, unsigned i, uint64_t m)
{
    while (m) {
        uint64_t bit = m & -m;
        uint64_t prev = atomic_fetch_and_explicit(&pool->idle[i], ~bit, memory_order_acq_rel);
        if (prev & bit) {
            worker_wake(&pool->workers[i * 64 + (unsigned)__builtin_ctzll(bit)]);
            return true;
        }
        m = prev & ~bit;
    }
    return false;
}

/* Wakes one parked worker, if any and if no idle worker is spinning (a
 * spinner will find the task: it re-checks the queues after it stops
 * spinning). */
void als__wake_one(als_pool_t *pool)
{
    for (unsigned i = 0; i < pool->idle_words; i++) {
        uint64_t m = idle_after_publish(pool, i);
        /* Ordered after the locked read above (x86-64) or the fence. */
        if (m && atomic_load_explicit(&pool->spinning, memory_order_relaxed))
            return;
        if (claim_and_wake(pool, i, m))
            return;
    }
}

/* Wakes one parked worker, if any, spinners or not (monitor.c). */
bool als__wake_parked(als_pool_t *pool)
{
    for (unsigned i = 0; i < pool->idle_words; i++)
        if (claim_and_wake(pool, i, atomic_load_explicit(&pool->idle[i], memory_order_relaxed)))
            return true;
    return false;
}

/* How many workers are parked, counted up to `limit`: no popcount, which
 * without -mpopcnt is a libgcc call, where we only need to count past a
 * limit (als__workers_idle, monitor.c's hand-offs). */
unsigned als__parked_upto(const als_pool_t *pool, unsigned limit)
{
    unsigned n = 0;
    for (unsigned i = 0; i < pool->idle_words; i++)
        for (uint64_t m = atomic_load_explicit(&pool->idle[i], memory_order_relaxed); m;
             m &= m - 1)
            if (++n >= limit)
                return n;
    return n;
}

bool als__parked(const struct worker *w)
{
    return atomic_load_explicit(&w->pool->idle[w->index / 64], memory_order_relaxed) >>
           (w->index % 64) & 1;
}

/* als__wake_one after a push to a worker's own queue, which has no locked
 * instruction to order it before the idle mask's read: a fence does. (A
 * missed wake-up there would cost parallelism, not progress: the owner is
 * awake and runs its own queue. But thieves should see the work.) */
void als__wake_one_after_local(als_pool_t *pool)
{
    atomic_thread_fence(memory_order_seq_cst);
    als__wake_one(pool);
}

/* Wakes every worker and every blocked submitter (the state changed). */
void als__wake_all(als_pool_t *pool)
{
    for (unsigned i = 0; i < pool->nthreads; i++)
        worker_wake(&pool->workers[i]);
    atomic_fetch_add_explicit(&pool->room_seq, 1, memory_order_seq_cst);
    count_wake(pool, true);
    futex_wake(&pool->room_seq, INT_MAX);
}

/* Parking is three steps, so that the worker loop re-checks for work
 * between the announcement and the sleep (Dekker with idle_after_publish):
 * announce returns the wake word's value to sleep on. */
uint32_t als__park_announce(struct worker *w)
{
    uint32_t seq = atomic_load_explicit(&w->wake, memory_order_acquire);
    atomic_fetch_or_explicit(&w->pool->idle[w->index / 64], 1ull << (w->index % 64),
                             memory_order_seq_cst);
    return seq;
}

void als__park_sleep(struct worker *w, uint32_t seq)
{
    als__bump(&w->parks, memory_order_relaxed);
    futex_wait(&w->wake, seq);
}

/* A waker that claimed us cleared the bit already; otherwise (work found,
 * spurious wake, wake_all) we withdraw. A claim racing with the withdrawal
 * costs one spare wake-up of a worker that is awake. */
void als__park_withdraw(struct worker *w)
{
    atomic_fetch_and_explicit(&w->pool->idle[w->index / 64], ~(1ull << (w->index % 64)),
                              memory_order_relaxed);
}

/* Whether an idle worker (spinning or parked) could run a task beside the
 * busy ones: whether fewer workers are busy than the process has CPUs.
 * With more workers than CPUs, `surplus` idle workers add nothing while
 * the others keep every CPU busy: counting them kept a deep tree from
 * ever running inline (bench/pool fanout, 16 workers on 2 CPUs: 18.3 ->
 * 8.3 ns per task). Read on the inline path: these lines change only
 * when workers go idle. A helping drain's thread running tasks
 * (als_pool_drain_help) takes a CPU too: one idle worker more adds
 * nothing then (fanout with help at 2 workers on 2 CPUs: 2.7x slower
 * without counting it), so the guest raises the surplus while it runs
 * tasks (one word: the inline path pays no extra load). */
bool als__workers_idle(const als_pool_t *pool)
{
    unsigned surplus = atomic_load_explicit(&pool->surplus, memory_order_relaxed);
    unsigned spinning = atomic_load_explicit(&pool->spinning, memory_order_relaxed);
    return spinning > surplus ||
           als__parked_upto(pool, surplus - spinning + 1) > surplus - spinning;
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
void als__room_wake(als_pool_t *pool, struct worker *w)
{
    if (als__queue_length(&pool->q) > pool->room_mark ||
        !atomic_exchange_explicit(&pool->room_armed, 0, memory_order_acq_rel))
        return;
    atomic_fetch_add_explicit(&pool->room_seq, 1, memory_order_release);
    als__bump(&w->submitter_wakeups, memory_order_relaxed);
    futex_wake(&pool->room_seq, INT_MAX);
}
