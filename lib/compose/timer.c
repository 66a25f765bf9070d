/* Delayed tasks (als_submit_after): one timer thread per pool, started by
 * the first delayed task, sleeping on a condition variable until the
 * earliest deadline of a binary min-heap. O(log n) per timer.
 *
 * A delayed task is accepted (counted as submitted and queued) when it is
 * added, so drain waits for it and a DRAIN shutdown keeps the workers alive
 * until it came due and ran. On a CANCEL shutdown the timer thread hands
 * every pending task to the ring at once, where the workers cancel it. */
#include "compose.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

/* A pool's delayed tasks: a binary min-heap by due time, and the thread
 * that queues them when due. Attached to the pool on first use
 * (als__pool_ext), which calls the hooks at the end of this file. */
struct timer_entry {
    uint64_t deadline;            /* CLOCK_MONOTONIC ns */
    uint64_t seq;                 /* FIFO among equal deadlines */
    struct als__task *task;
    struct scope_hook *hook;      /* or NULL: the task has no scope */
};

/* A delayed task's registration on its cancellation scope: cancelling the
 * scope makes the timer thread drop the task at once (als.h: promptly, not
 * at its due time). The task's frame holds the scope meanwhile. */
struct scope_hook {
    struct als__cancel_hook h;
    struct als_cancel *scope;
};

struct timers {
    als_pool_t *pool;
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* CLOCK_MONOTONIC */
    struct timer_entry *heap;
    size_t len, cap;
    uint64_t seq;
    bool started, stop;
    bool scan;                    /* a scope was cancelled: look for its tasks */
    pthread_t thread;
};

static void timers_kick(void *ext);

#ifdef ALS_FAULT_INJECTION
static _Atomic uint64_t test_clock; /* 0: the real clock */

void als__test_timer_clock(als_pool_t *pool, uint64_t now)
{
    atomic_store_explicit(&test_clock, now, memory_order_relaxed);
    void *tm = pool ? als__pool_ext(pool, NULL, NULL) : NULL;
    if (tm)
        timers_kick(tm); /* its mutex orders the store for the thread */
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

/* Removes entry i; returns it. */
static struct timer_entry heap_take(struct timers *tm, size_t i)
{
    struct timer_entry e = tm->heap[i];
    tm->heap[i] = tm->heap[--tm->len];
    if (i < tm->len) {
        heap_down(tm->heap, tm->len, i);
        heap_up(tm->heap, i);
    }
    return e;
}

/* An entry whose scope is cancelled (or past its deadline), or SIZE_MAX. */
static size_t find_cancelled(const struct timers *tm)
{
    for (size_t i = 0; i < tm->len; i++)
        if (tm->heap[i].hook && als__cancel_is_cancelled(tm->heap[i].hook->scope))
            return i;
    return SIZE_MAX;
}

/* Runs on the thread that cancels the scope (cancel.c's lock not held). */
static void scope_cancelled(void *arg)
{
    struct timers *tm = arg;
    pthread_mutex_lock(&tm->mu);
    tm->scan = true;
    pthread_cond_signal(&tm->cv);
    pthread_mutex_unlock(&tm->mu);
}

/* Hands entry e's task to the pool, which runs it or (a CANCEL shutdown, a
 * cancelled scope) cancels it. Called without tm->mu: removing the hook
 * waits for a running scope_cancelled, which takes it. */
static void entry_queue(struct timers *tm, struct timer_entry e)
{
    if (e.hook) {
        als__cancel_hook_remove(e.hook->scope, &e.hook->h);
        als__block_free(e.hook);
    }
    als__task_push(tm->pool, e.task);
}

static void *timer_main(void *arg)
{
    struct timers *tm = arg;
    als_pool_t *pool = tm->pool;
    char name[32];
    snprintf(name, sizeof name, "%.13s-t", als__pool_name(pool));
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
        bool cancel = als__pool_cancelling(pool);
        bool fake;
        uint64_t now = timer_now(&fake);
        size_t i = 0;
        if (tm->scan && (i = find_cancelled(tm)) == SIZE_MAX) {
            tm->scan = false;
            i = 0;
        }
        if (tm->scan || cancel || tm->heap[0].deadline <= now) {
            struct timer_entry e = heap_take(tm, i);
            pthread_mutex_unlock(&tm->mu);
            entry_queue(tm, e);
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

static void *timers_make(als_pool_t *pool)
{
    struct timers *tm = als__malloc(sizeof *tm);
    if (!tm)
        return NULL;
    *tm = (struct timers){ .pool = pool };
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&tm->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc || pthread_mutex_init(&tm->mu, NULL)) {
        if (!rc)
            pthread_cond_destroy(&tm->cv);
        als__free(tm);
        return NULL;
    }
    return tm;
}

/* A shutdown began: look at the state again (CANCEL: hand everything over). */
static void timers_kick(void *ext)
{
    struct timers *tm = ext;
    pthread_mutex_lock(&tm->mu);
    pthread_cond_signal(&tm->cv);
    pthread_mutex_unlock(&tm->mu);
}

/* The workers are gone, so nothing is pending: let the thread go, join it. */
static void timers_stop(void *ext)
{
    struct timers *tm = ext;
    pthread_mutex_lock(&tm->mu);
    tm->stop = true;
    bool started = tm->started;
    pthread_cond_signal(&tm->cv);
    pthread_mutex_unlock(&tm->mu);
    if (started)
        pthread_join(tm->thread, NULL);
}

static void timers_release(void *ext, bool forked)
{
    struct timers *tm = ext;
    als__free(tm->heap);
    if (!forked) {
        pthread_cond_destroy(&tm->cv);
        pthread_mutex_destroy(&tm->mu);
    }
    als__free(tm);
}

static const struct als__pool_ext timer_ops = {
    .kick = timers_kick, .stop = timers_stop, .release = timers_release,
};

int als__timer_add(als_pool_t *pool, struct als__task *t, uint64_t delay_ns)
{
    struct timers *tm = als__pool_ext(pool, &timer_ops, timers_make);
    if (!tm)
        return ALS_ENOMEM;
    struct als_cancel *scope = als__cancel_of_frame(t->frame);
    struct scope_hook *hook = NULL;
    if (scope) {
        _Static_assert(sizeof(struct scope_hook) <= ALS__BLOCK_SIZE, "hook too big");
        hook = als__block_alloc();
        if (!hook)
            return ALS_ENOMEM;
        hook->scope = scope;
        hook->h = (struct als__cancel_hook){ .fn = scope_cancelled, .arg = tm };
    }
    /* Registered before the entry is visible to the timer thread, which
     * unregisters it when it takes the entry. Already cancelled: the
     * thread drops the task at its next look. */
    bool cancelled = hook && !als__cancel_hook_add(scope, &hook->h);
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
        if (als__thread_spawn(&tm->thread, NULL, timer_main, tm) != 0) {
            rc = ALS_ENOMEM;
            goto out;
        }
        tm->started = true;
    }
    tm->heap[tm->len] = (struct timer_entry){ deadline, tm->seq++, t, hook };
    heap_up(tm->heap, tm->len++);
    tm->scan |= cancelled;
    /* Only a new earliest deadline changes what the timer thread waits for. */
    if (tm->heap[0].task == t || cancelled)
        pthread_cond_signal(&tm->cv);
out:
    pthread_mutex_unlock(&tm->mu);
    if (rc && hook) {
        als__cancel_hook_remove(scope, &hook->h);
        als__block_free(hook);
    }
    return rc;
}

int als_submit_after(als_pool_t *pool, uint64_t delay_ns, als_task_fn fn, void *arg)
{
    if (!pool || !fn)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP()); /* captures: see "Non-local exits" */
    struct als__spec sp = { .fn = fn, .arg = arg };
    struct als__task *t;
    int rc = als__task_new(pool, &sp, &t);
    if (rc)
        return rc;
    if (!delay_ns)
        return als__task_queue(pool, t, false);
    rc = als__timer_add(pool, t, delay_ns);
    if (rc)
        als__task_discard(pool, t);
    return rc;
}
