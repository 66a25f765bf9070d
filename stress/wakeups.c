/* stress/wakeups.c: no task is left waiting while workers sleep.
 *
 * Bursts of work separated by idle gaps long enough for the workers to park
 * (a few milliseconds; their spin before parking is microseconds), or by no
 * gap at all, so that submits also meet workers in the middle of parking.
 * Each burst has a shape that exercises one wake-up path: outside submits,
 * several outside submitters at once, a chain of tasks each submitting the
 * next (the worker's LIFO slot), a fan-out from a task, delayed tasks (the
 * timer thread's push), a future waited on from outside, a group wait, a
 * drain, a drain that runs tasks itself (als_pool_drain_help, with chains
 * and fan-outs), and a task waiting on a future inside the pool (a helping
 * wait).
 * Pools of 1 to 4 workers, small and large queues, both full policies.
 *
 * A watchdog thread scans every outstanding task (and every blocking wait
 * of the test itself) and fails the run if any waited more than 5 s after
 * it was submitted (or came due): a lost wake-up shows as a failure with a
 * message instead of a hang. That bound is the issue's; nothing else here
 * measures time, the latency figures are printed, never asserted. */
#include "stress.h"

#include "als.h"

#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LIMIT_NS (5ull * 1000000000ull)
#define WATCH 8192             /* slots for outstanding tasks */
#define NWAITS 8               /* slots for the test's own blocking waits */
#define MAX_BURST 64

/* 0: free; else the time (ns) from which the slot's task counts as waiting. */
static _Atomic uint64_t watch[WATCH];
static _Atomic uint64_t waits[NWAITS];
static _Atomic(const char *) wait_names[NWAITS];
static _Atomic unsigned next_slot;
static _Atomic uint64_t tasks_run, max_latency, total_latency;
static _Atomic int watchdog_stop;
static als_pool_t *pool;
static _Atomic(als_pool_t *) pool_watched; /* for the watchdog's report */
static struct waitcount outstanding;
static _Atomic(const char *) shape_now = "";

enum shape {
    S_OUTSIDE, S_MULTI, S_CHAIN, S_FANOUT, S_DELAYED, S_FUTURE, S_GROUP, S_DRAIN, S_HELPING,
    S_DRAIN_HELP, S_COUNT
};
static const char *const shape_names[S_COUNT] = {
    "outside submits", "several submitters", "chain", "fan-out", "delayed",
    "future wait", "group wait", "drain", "helping wait", "helping drain",
};
static uint64_t shape_counts[S_COUNT];

/* ---- the watchdog ---------------------------------------------------------------- */

static pthread_mutex_t dog_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dog_cv;

static void fail_hung(const char *what, unsigned slot, uint64_t age)
{
    als_pool_stats st = { 0 };
    als_pool_t *p = atomic_load(&pool_watched);
    if (p)
        als_pool_stats_get(p, &st); /* the run is stuck: the pool is not going away */
    fprintf(stderr,
            "wakeups: FAIL: %s %u has waited %.1f s (limit 5 s) in a \"%s\" burst: a lost "
            "wake-up. pool: submitted %" PRIu64 " completed %" PRIu64 " queued %" PRIu64
            " running %" PRIu64 " threads %u\n",
            what, slot, (double)age / 1e9, atomic_load(&shape_now), st.submitted, st.completed, st.queued,
            st.running, st.threads);
    CHECK(false, "lost wake-up");
    printf("0 passed, %" PRIu64 " failed\n", stress_failures());
    fflush(NULL);
    _exit(1);
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&dog_mu);
    while (!atomic_load(&watchdog_stop)) {
        /* A periodic scan; the timed wait is a timer, not an ordering. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&dog_cv, &dog_mu, &ts);
        uint64_t now = stress_now_ns();
        for (unsigned i = 0; i < WATCH; i++) {
            uint64_t since = atomic_load_explicit(&watch[i], memory_order_relaxed);
            if (since && now > since && now - since > LIMIT_NS)
                fail_hung("task", i, now - since);
        }
        for (unsigned i = 0; i < NWAITS; i++) {
            uint64_t since = atomic_load_explicit(&waits[i], memory_order_relaxed);
            if (since && now > since && now - since > LIMIT_NS)
                fail_hung(atomic_load(&wait_names[i]), i, now - since);
        }
    }
    pthread_mutex_unlock(&dog_mu);
    return NULL;
}

/* Brackets a blocking call of the test itself. */
static void wait_begin(unsigned i, const char *name)
{
    atomic_store(&wait_names[i], name);
    atomic_store_explicit(&waits[i], stress_now_ns(), memory_order_relaxed);
}

static void wait_end(unsigned i)
{
    atomic_store_explicit(&waits[i], 0, memory_order_relaxed);
}

/* ---- tasks --------------------------------------------------------------------------- */

struct job {
    unsigned slot;
    int chain;                 /* S_CHAIN: tasks still to submit after this one */
    int fan;                   /* S_FANOUT: children to submit */
    bool helping;              /* S_HELPING: wait on a future inside the pool */
};

static unsigned slot_take(uint64_t since)
{
    unsigned s = atomic_fetch_add_explicit(&next_slot, 1, memory_order_relaxed);
    if (s >= WATCH) {
        fprintf(stderr, "wakeups: out of watch slots\n");
        abort();
    }
    atomic_store_explicit(&watch[s], since, memory_order_relaxed);
    return s;
}

static void started(unsigned slot)
{
    uint64_t since = atomic_exchange_explicit(&watch[slot], 0, memory_order_relaxed);
    uint64_t now = stress_now_ns();
    uint64_t lat = now > since ? now - since : 0;
    atomic_fetch_add_explicit(&total_latency, lat, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&max_latency, memory_order_relaxed);
    while (lat > m && !atomic_compare_exchange_weak_explicit(&max_latency, &m, lat,
                                                             memory_order_relaxed,
                                                             memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&tasks_run, 1, memory_order_relaxed);
}

static int job_fn(void *arg);

static void submit_job(int chain, int fan, bool helping)
{
    struct job *j = malloc(sizeof *j);
    if (!j)
        abort();
    *j = (struct job){ .chain = chain, .fan = fan, .helping = helping };
    waitcount_add(&outstanding, 1);
    j->slot = slot_take(stress_now_ns());
    int rc;
    while ((rc = als_submit(pool, job_fn, j)) == ALS_EFULL) {
        /* REJECT policy: the caller owns the retry. A worker runs the job
         * itself: retrying could keep every worker busy refusing. */
        if (als_pool_current() == pool)
            return (void)job_fn(j);
        sched_yield();
    }
    if (!CHECK(rc == 0, "als_submit: %s", als_strerror(rc))) {
        atomic_store(&watch[j->slot], 0);
        free(j);
        waitcount_done(&outstanding);
    }
}

static void *future_fn(void *arg)
{
    started((unsigned)(uintptr_t)arg);
    return arg;
}

static int job_fn(void *arg)
{
    struct job *j = arg;
    started(j->slot);
    if (j->chain > 0)
        submit_job(j->chain - 1, 0, false);
    for (int i = 0; i < j->fan; i++)
        submit_job(0, 0, false);
    if (j->helping) {
        /* Waiting inside the pool: this worker helps run queued tasks. */
        als_future_t *f = NULL;
        unsigned slot = slot_take(stress_now_ns());
        int rc = als_submit_future(pool, future_fn, (void *)(uintptr_t)slot, &f);
        if (rc == ALS_EFULL) {
            atomic_store(&watch[slot], 0);
        } else if (CHECK(rc == 0, "als_submit_future in a task: %s", als_strerror(rc))) {
            void *r = NULL;
            CHECK(als_future_wait(f, -1, &r) == 0 && r == (void *)(uintptr_t)slot,
                  "als_future_wait in a task");
            als_future_release(f);
        } else {
            atomic_store(&watch[slot], 0);
        }
    }
    free(j);
    waitcount_done(&outstanding);
    return 0;
}

static int delayed_fn(void *arg)
{
    started((unsigned)(uintptr_t)arg);
    waitcount_done(&outstanding);
    return 0;
}

static int group_fn(void *arg)
{
    started((unsigned)(uintptr_t)arg);
    return 0;
}

/* ---- helper submitters -------------------------------------------------------------- */

#define HELPERS 2

static pthread_mutex_t go_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go_cv = PTHREAD_COND_INITIALIZER;
static uint64_t go_gen;
static int go_count;
static bool helpers_quit;

static void *helper_main(void *arg)
{
    (void)arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&go_mu);
        while (go_gen == seen && !helpers_quit)
            pthread_cond_wait(&go_cv, &go_mu);
        bool quit = helpers_quit;
        seen = go_gen;
        int n = go_count;
        pthread_mutex_unlock(&go_mu);
        if (quit)
            return NULL;
        for (int i = 0; i < n; i++)
            submit_job(0, 0, false);
        waitcount_done(&outstanding); /* this helper's share is submitted */
    }
}

/* ---- bursts --------------------------------------------------------------------------- */

static void burst(struct rng *r)
{
    enum shape sh = (enum shape)rng_below(r, S_COUNT);
    atomic_store(&shape_now, shape_names[sh]);
    shape_counts[sh]++;
    atomic_store(&next_slot, 0);
    int n = 1 + (int)rng_below(r, MAX_BURST);

    switch (sh) {
    case S_OUTSIDE:
        for (int i = 0; i < n; i++)
            submit_job(0, 0, false);
        break;
    case S_MULTI:
        waitcount_add(&outstanding, HELPERS);
        pthread_mutex_lock(&go_mu);
        go_count = n / 2 + 1;
        go_gen++;
        pthread_cond_broadcast(&go_cv);
        pthread_mutex_unlock(&go_mu);
        for (int i = 0; i < n / 2 + 1; i++)
            submit_job(0, 0, false);
        break;
    case S_CHAIN:
        submit_job(n, 0, false);
        break;
    case S_FANOUT:
        submit_job(0, n, false);
        break;
    case S_DELAYED:
        for (int i = 0; i < n && i < 16; i++) {
            uint64_t delay = rng_one_in(r, 4) ? 0 : rng_below(r, 3000000);
            waitcount_add(&outstanding, 1);
            unsigned slot = slot_take(stress_now_ns() + delay);
            int rc = als_submit_after(pool, delay, delayed_fn, (void *)(uintptr_t)slot);
            /* Errors as als_submit: a full REJECT pool may refuse. */
            if (!CHECK(rc == 0 || rc == ALS_EFULL, "als_submit_after: %s", als_strerror(rc)) ||
                rc) {
                atomic_store(&watch[slot], 0);
                waitcount_done(&outstanding);
            }
        }
        break;
    case S_FUTURE: {
        als_future_t *f = NULL;
        unsigned slot = slot_take(stress_now_ns());
        int rc = als_submit_future(pool, future_fn, (void *)(uintptr_t)slot, &f);
        if (CHECK(rc == 0, "als_submit_future: %s", als_strerror(rc))) {
            wait_begin(0, "als_future_wait");
            CHECK(als_future_wait(f, -1, NULL) == 0, "als_future_wait");
            wait_end(0);
            als_future_release(f);
        }
        break;
    }
    case S_GROUP: {
        als_group_t *g = als_group_new();
        if (!CHECK(g, "als_group_new"))
            break;
        for (int i = 0; i < n && i < 16; i++) {
            unsigned slot = slot_take(stress_now_ns());
            int rc = als_group_submit(g, pool, group_fn, (void *)(uintptr_t)slot);
            if (!CHECK(rc == 0 || rc == ALS_EFULL, "als_group_submit: %s", als_strerror(rc)) ||
                rc)
                atomic_store(&watch[slot], 0);
        }
        wait_begin(0, "als_group_wait");
        CHECK(als_group_wait(g, -1) == 0, "als_group_wait");
        wait_end(0);
        als_group_free(g);
        break;
    }
    case S_DRAIN:
        for (int i = 0; i < n; i++)
            submit_job(0, 0, false);
        wait_begin(0, "als_pool_drain");
        CHECK(als_pool_drain(pool) == 0, "als_pool_drain");
        wait_end(0);
        break;
    case S_HELPING:
        for (int i = 0; i < n && i < 8; i++)
            submit_job(0, 0, true);
        break;
    case S_DRAIN_HELP: /* the drainer runs tasks, also chains and fan-outs */
        for (int i = 0; i < n; i++)
            submit_job(i % 3 == 0 ? 0 : rng_below(r, 8), i % 3 == 1 ? 0 : rng_below(r, 4), false);
        wait_begin(0, "als_pool_drain_help");
        CHECK(als_pool_drain_help(pool) == 0, "als_pool_drain_help");
        wait_end(0);
        break;
    case S_COUNT:
        break;
    }
    wait_begin(1, "waiting for the burst's tasks");
    waitcount_wait(&outstanding, 0);
    wait_end(1);
    /* Group and future tasks are not counted in `outstanding`: a drain
     * makes sure nothing of this burst is left before the slots are reused. */
    wait_begin(2, "als_pool_drain after the burst");
    als_pool_drain(pool);
    wait_end(2);
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "wakeups", 3.0, NULL);
    waitcount_init(&outstanding);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dog_cv, &ca);
    pthread_condattr_destroy(&ca);

    pthread_t dog, helpers[HELPERS];
    if (pthread_create(&dog, NULL, watchdog_main, NULL))
        abort();
    for (int i = 0; i < HELPERS; i++)
        if (pthread_create(&helpers[i], NULL, helper_main, NULL))
            abort();

    struct rng r = rng_for(1);
    uint64_t bursts = 0, gaps = 0, pools = 0;
    while (pools == 0 || stress_time_left()) {
        als_pool_options o = {
            .threads = 1 + rng_below(&r, 4),
            .queue_capacity = rng_one_in(&r, 2) ? 8 : 1024,
            .on_full = rng_one_in(&r, 3) ? ALS_FULL_REJECT : ALS_FULL_BLOCK,
            .name = "wakeups",
        };
        pool = als_pool_new(&o);
        if (!CHECK(pool, "als_pool_new"))
            abort();
        atomic_store(&pool_watched, pool);
        pools++;
        int nb = stress.small ? 10 : 60;
        for (int b = 0; b < nb && (b == 0 || stress_time_left()); b++) {
            burst(&r);
            bursts++;
            if (!rng_one_in(&r, 4)) {
                /* Idle: long enough for every worker to park. */
                stress_idle_ns(1000000 + rng_below(&r, 3000000));
                gaps++;
            }
        }
        wait_begin(3, "als_pool_free");
        atomic_store(&pool_watched, NULL);
        als_pool_free(pool);
        wait_end(3);
        pool = NULL;
    }

    pthread_mutex_lock(&go_mu);
    helpers_quit = true;
    pthread_cond_broadcast(&go_cv);
    pthread_mutex_unlock(&go_mu);
    for (int i = 0; i < HELPERS; i++)
        pthread_join(helpers[i], NULL);
    pthread_mutex_lock(&dog_mu);
    atomic_store(&watchdog_stop, 1);
    pthread_cond_signal(&dog_cv);
    pthread_mutex_unlock(&dog_mu);
    pthread_join(dog, NULL);

    uint64_t ran = atomic_load(&tasks_run);
    CHECK(ran > 0, "no task ran");
    stress_count(ran, 0); /* each task started within the watchdog's bound */
    stress_figure("pools", "%" PRIu64, pools);
    stress_figure("bursts", "%" PRIu64 " (%" PRIu64 " after an idle gap)", bursts, gaps);
    for (int i = 0; i < S_COUNT; i++) {
        char label[64];
        snprintf(label, sizeof label, "bursts: %s", shape_names[i]);
        stress_figure(label, "%" PRIu64, shape_counts[i]);
    }
    stress_figure("tasks started", "%" PRIu64, ran);
    stress_figure("tasks over the 5 s bound", "0");
    stress_figure("latency max / mean", "%.3f ms / %.3f ms",
                  (double)atomic_load(&max_latency) / 1e6,
                  ran ? (double)atomic_load(&total_latency) / (double)ran / 1e6 : 0.0);
    waitcount_destroy(&outstanding);
    pthread_cond_destroy(&dog_cv);
    return stress_finish();
}
