/* Deadlines: one process-wide thread keeps every pending deadline of a
 * cancellation scope in a binary min-heap (CLOCK_MONOTONIC), sleeping on a
 * condition variable until the earliest, and hands each expired scope to
 * cancel.c (`expire`). The heap holds no references: releasing or
 * cancelling a scope removes its entry, so a scope's memory never waits
 * for its deadline. Everything here is under als__cancel_lock, the one
 * mutex of cancellation's cold paths, which this file owns.
 *
 * Uses: thread.c (als__thread_spawn). */
#include "cancel.h"

#include <time.h>

pthread_mutex_t als__cancel_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t als__cancel_done_cv = PTHREAD_COND_INITIALIZER; /* a callback ended */

static pthread_cond_t timer_cv;  /* CLOCK_MONOTONIC */
static struct als_cancel **heap; /* under lock */
static size_t heap_len, heap_cap;
static bool timer_started;       /* under lock */
static bool timer_busy;          /* under lock: running callbacks, releasing */
static void (*expire)(struct als_cancel *c);

int64_t als__deadline_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#ifdef ALS_FAULT_INJECTION
long als__test_cancel_timers(void)
{
    pthread_mutex_lock(&als__cancel_lock);
    while (timer_busy) /* the counts are exact once it is done */
        pthread_cond_wait(&als__cancel_done_cv, &als__cancel_lock);
    long n = (long)heap_len;
    pthread_mutex_unlock(&als__cancel_lock);
    return n;
}
#endif

/* ---- the heap ----------------------------------------------------------- */

static void heap_set(size_t i, struct als_cancel *c)
{
    heap[i] = c;
    c->heap_at = i + 1;
}

static void sift_up(size_t i)
{
    struct als_cancel *c = heap[i];
    while (i > 0 && heap[(i - 1) / 2]->deadline > c->deadline) {
        heap_set(i, heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(i, c);
}

static void sift_down(size_t i)
{
    struct als_cancel *c = heap[i];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= heap_len)
            break;
        if (k + 1 < heap_len && heap[k + 1]->deadline < heap[k]->deadline)
            k++;
        if (heap[k]->deadline >= c->deadline)
            break;
        heap_set(i, heap[k]);
        i = k;
    }
    heap_set(i, c);
}

void als__deadline_remove(struct als_cancel *c)
{
    size_t i = c->heap_at - 1;
    c->heap_at = 0;
    struct als_cancel *last = heap[--heap_len];
    if (last == c)
        return;
    heap_set(i, last);
    if (i > 0 && heap[(i - 1) / 2]->deadline > last->deadline)
        sift_up(i);
    else
        sift_down(i);
}

/* ---- the thread --------------------------------------------------------- */

static void *timer_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&als__cancel_lock);
    for (;;) {
        if (heap_len == 0) {
            pthread_cond_wait(&timer_cv, &als__cancel_lock);
            continue;
        }
        struct als_cancel *top = heap[0];
        if (top->deadline > als__deadline_now()) {
            struct timespec ts = {
                .tv_sec = top->deadline / 1000000000,
                .tv_nsec = top->deadline % 1000000000,
            };
            pthread_cond_timedwait(&timer_cv, &als__cancel_lock, &ts);
            continue;
        }
        /* In the heap, hence not freed (freeing removes it under lock);
         * it may be dying, which cancel.c's mark() sees and skips for
         * callbacks. expire() drops the lock to run callbacks. */
        timer_busy = true;
        expire(top);
        timer_busy = false;
        pthread_cond_broadcast(&als__cancel_done_cv);
    }
    return NULL;
}

static void fork_prepare(void)
{
    pthread_mutex_lock(&als__cancel_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&als__cancel_lock);
}

static void timer_cv_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&timer_cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* The child has no deadline thread: the next scope with a deadline starts
 * one, which then serves the entries inherited too. The condition
 * variables may count waiters that did not come along: fresh ones. (As
 * with pools, a callback running in the parent at the fork never ends in
 * the child: do not use scopes across fork.) */
static void fork_child(void)
{
    timer_started = false;
    timer_busy = false;
    timer_cv_init();
    pthread_cond_init(&als__cancel_done_cv, NULL);
    pthread_mutex_unlock(&als__cancel_lock);
}

void als__deadline_init(void (*expire_fn)(struct als_cancel *c))
{
    expire = expire_fn;
    timer_cv_init();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int als__deadline_add(struct als_cancel *c)
{
    if (!timer_started) {
        pthread_t t;
        pthread_attr_t at;
        if (pthread_attr_init(&at) != 0)
            return ALS_ENOMEM;
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = als__thread_spawn(&t, &at, timer_main, NULL);
        pthread_attr_destroy(&at);
        if (rc != 0)
            return ALS_ENOMEM;
        timer_started = true;
    }
    if (heap_len == heap_cap) {
        size_t cap = heap_cap ? 2 * heap_cap : 64;
        struct als_cancel **h = als__realloc(heap, cap * sizeof *h);
        if (!h)
            return ALS_ENOMEM;
        heap = h;
        heap_cap = cap;
    }
    heap_set(heap_len++, c);
    sift_up(heap_len - 1);
    if (heap[0] == c)
        pthread_cond_signal(&timer_cv); /* earlier than what it waits for */
    return 0;
}
