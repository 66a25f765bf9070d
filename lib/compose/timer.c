/* Delayed tasks (als_submit_after): one timer thread per pool, started by
 * the first delayed task, sleeping on a condition variable until the
 * earliest deadline of a binary min-heap. O(log n) per timer.
 *
 * A delayed task is accepted (counted as submitted and queued) when it is
 * added, so drain waits for it and a DRAIN shutdown keeps the workers alive
 * until it came due and ran. On a CANCEL shutdown the timer thread hands
 * every pending task to the ring at once, where the workers cancel it. */
#include "pool.h"

#include <stdio.h>
#include <time.h>

#ifdef ALS_FAULT_INJECTION
static _Atomic uint64_t test_clock; /* 0: the real clock */

void als__test_timer_clock(als_pool_t *pool, uint64_t now)
{
    atomic_store_explicit(&test_clock, now, memory_order_relaxed);
    if (pool)
        als__timers_kick(pool); /* its mutex orders the store for the thread */
}

static uint64_t timer_now(bool *fake)
{
    uint64_t t = atomic_load_explicit(&test_clock, memory_order_relaxed);
    *fake = t != 0;
    return t ? t : als__now_ns();
}
#else
static uint64_t timer_now(bool *fake)
{
    *fake = false;
    return als__now_ns();
}
#endif

/* Heap order: by deadline, then by sequence number, so tasks due at the
 * same time start in the order they were submitted (FIFO among equals). */
static bool earlier(const struct timer_entry *a, const struct timer_entry *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_up(struct timer_entry *h, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(&h[i], &h[parent]))
            break;
        struct timer_entry tmp = h[i];
        h[i] = h[parent];
        h[parent] = tmp;
        i = parent;
    }
}

static void heap_down(struct timer_entry *h, size_t len, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < len && earlier(&h[l], &h[m]))
            m = l;
        if (r < len && earlier(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        struct timer_entry tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
}

static struct task *heap_pop(struct als__timers *tm)
{
    struct task *t = tm->heap[0].task;
    tm->heap[0] = tm->heap[--tm->len];
    heap_down(tm->heap, tm->len, 0);
    return t;
}

static void *timer_main(void *arg)
{
    als_pool_t *pool = arg;
    struct als__timers *tm = &pool->timers;
    char name[32];
    snprintf(name, sizeof name, "%.13s-t", pool->name);
    name[15] = '\0';
    pthread_setname_np(pthread_self(), name);

    pthread_mutex_lock(&tm->mu);
    for (;;) {
        if (tm->len == 0) {
            if (tm->stop)
                break;
            pthread_cond_wait(&tm->cv, &tm->mu);
            continue;
        }
        bool cancel = atomic_load_explicit(&pool->state, memory_order_acquire) == CANCELLING;
        bool fake;
        uint64_t now = timer_now(&fake);
        if (cancel || tm->heap[0].deadline <= now) {
            struct task *t = heap_pop(tm);
            pthread_mutex_unlock(&tm->mu);
            als__push_accepted(pool, t);
            pthread_mutex_lock(&tm->mu);
            continue;
        }
        if (fake) { /* a test's clock: it kicks us when it moves */
            pthread_cond_wait(&tm->cv, &tm->mu);
            continue;
        }
        uint64_t d = tm->heap[0].deadline;
        struct timespec ts = { (time_t)(d / 1000000000u), (long)(d % 1000000000u) };
        pthread_cond_timedwait(&tm->cv, &tm->mu, &ts);
    }
    pthread_mutex_unlock(&tm->mu);
    return NULL;
}

int als__timer_add(als_pool_t *pool, struct task *t, uint64_t delay_ns)
{
    struct als__timers *tm = &pool->timers;
    bool fake;
    uint64_t now = timer_now(&fake);
    uint64_t deadline = delay_ns > UINT64_MAX - now ? UINT64_MAX : now + delay_ns;
    int rc = 0;
    pthread_mutex_lock(&tm->mu);
    if (tm->len == tm->cap) {
        size_t cap = tm->cap ? tm->cap * 2 : 64;
        struct timer_entry *h = als__realloc(tm->heap, cap * sizeof *h);
        if (!h) {
            rc = ALS_ENOMEM;
            goto out;
        }
        tm->heap = h;
        tm->cap = cap;
    }
    if (!tm->started) {
        if (pthread_create(&tm->thread, NULL, timer_main, pool) != 0) {
            rc = ALS_ENOMEM;
            goto out;
        }
        tm->started = true;
    }
    tm->heap[tm->len] = (struct timer_entry){ deadline, tm->seq++, t };
    heap_up(tm->heap, tm->len++);
    /* Only a new earliest deadline changes what the timer thread waits for. */
    if (tm->heap[0].task == t)
        pthread_cond_signal(&tm->cv);
out:
    pthread_mutex_unlock(&tm->mu);
    return rc;
}

void als__timers_kick(als_pool_t *pool)
{
    pthread_mutex_lock(&pool->timers.mu);
    pthread_cond_signal(&pool->timers.cv);
    pthread_mutex_unlock(&pool->timers.mu);
}

void als__timers_stop(als_pool_t *pool)
{
    struct als__timers *tm = &pool->timers;
    pthread_mutex_lock(&tm->mu);
    tm->stop = true;
    bool started = tm->started;
    pthread_cond_signal(&tm->cv);
    pthread_mutex_unlock(&tm->mu);
    if (started)
        pthread_join(tm->thread, NULL);
}
