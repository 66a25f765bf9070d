/* stress/handoff.c: searching hand-off, no lost wake-up (issue 12).
 *
 * A 16-worker pool, bursts after idle gaps. Before each burst the pool
 * goes idle in one of four ways: not at all (the next burst meets workers
 * still busy or spinning), a sleep of up to 512 us, log-uniform (workers
 * in the middle of spinning or parking), 1-3 ms (all parked), or until
 * als_pool_stats shows the pool idle and `parks` has stopped growing (all
 * parked, observed). The gap is the scenario: nothing waits on it. Then a
 * burst of K tasks, K in 1..64 (log-uniform: many single tasks, the ones
 * a missed wake-up strands), submitted from an outside thread, from
 * inside a task (the worker's own queue: idle workers must be woken or
 * must steal), from several outside threads at once, or as a group
 * (als_group_submit, waited with als_group_wait), or as tasks at a
 * barrier that all of them must reach (each needs a worker of its own;
 * with more workers than CPUs, the awake ones are stuck in them and the
 * pool's monitor must wake more). Some tasks do a little work, so that
 * one worker cannot finish a burst before others wake.
 *
 * Every burst must complete within 10 s (a generous bound: a burst takes
 * microseconds); otherwise the program reports a LOST WAKE-UP with the
 * pool's counters and exits non-zero instead of hanging. At the end it
 * prints parks, wake-ups and steals per 1000 tasks: a burst should wake a
 * bounded number of workers, not one per task (printed, never asserted).
 *
 * The pool's shape depends on the CPUs it sees (inboxes and searchers are
 * sized for the workers that can run at once), so the run is two halves:
 * a pool on the machine's own CPUs, then one that sees WORKERS CPUs (the
 * program is linked with --wrap=sched_getaffinity), as on a 16-core
 * machine: inboxes, more searchers, no surplus workers. */
#include "stress.h"

#include "als.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 16
#define MAX_BURST 64
#define LIMIT_NS (10ull * 1000000000ull)
#define HELPERS 3              /* extra outside submitters */

static als_pool_t *pool;

/* The CPUs the library sees: 0, the machine's own. */
static int fake_cpus;

int __real_sched_getaffinity(pid_t pid, size_t size, cpu_set_t *set);
int __wrap_sched_getaffinity(pid_t pid, size_t size, cpu_set_t *set);
int __wrap_sched_getaffinity(pid_t pid, size_t size, cpu_set_t *set)
{
    if (!fake_cpus)
        return __real_sched_getaffinity(pid, size, set);
    CPU_ZERO_S(size, set);
    for (int c = 0; c < fake_cpus; c++)
        CPU_SET_S(c, size, set);
    return 0;
}

/* ---- the burst's outstanding count ------------------------------------- */

/* Tasks of the current burst not finished yet. Each task decrements it;
 * the last one signals under the lock, which the waiter holds while it
 * checks, so the signal cannot fall between check and wait. */
static _Atomic long left;
static pthread_mutex_t left_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t left_cv;
static _Atomic uint64_t tasks_run;

static void task_done(void)
{
    atomic_fetch_add_explicit(&tasks_run, 1, memory_order_relaxed);
    if (atomic_fetch_sub_explicit(&left, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_lock(&left_mu);
        pthread_cond_broadcast(&left_cv);
        pthread_mutex_unlock(&left_mu);
    }
}

enum shape { S_OUTSIDE, S_INSIDE, S_SEVERAL, S_GROUP, S_BARRIER, S_COUNT };
static const char *const shape_names[S_COUNT] = {
    "outside thread", "inside a task", "several threads", "group wait",
    "barrier (each task needs a worker of its own)",
};
enum gap { G_NONE, G_SHORT, G_LONG, G_PARKED, G_COUNT };
static const char *const gap_names[G_COUNT] = {
    "none", "0-512 us (log-uniform)", "1-3 ms", "until parked",
};
static uint64_t shape_counts[S_COUNT], gap_counts[G_COUNT];

static void lost_wakeup(const char *what, enum shape sh, enum gap g, int k, long missing)
{
    als_pool_stats st = { 0 };
    als_pool_stats_get(pool, &st);
    fprintf(stderr,
            "handoff: FAIL: LOST WAKE-UP: %s: %ld of a burst of %d tasks (%s, idle gap: %s) not "
            "done after 10 s. pool: submitted %" PRIu64 " completed %" PRIu64 " queued %" PRIu64
            " running %" PRIu64 " parks %" PRIu64 " wakeups %" PRIu64 " steals %" PRIu64 "\n",
            what, missing, k, shape_names[sh], gap_names[g], st.submitted, st.completed,
            st.queued, st.running, st.parks, st.wakeups, st.steals);
    CHECK(false, "lost wake-up");
    printf("0 passed, %" PRIu64 " failed\n", stress_failures());
    fflush(NULL);
    _exit(1); /* tasks are still queued: nothing can be freed safely */
}

/* Waits until the burst's tasks are done, at most LIMIT_NS. */
static bool wait_left(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t d = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + LIMIT_NS;
    ts.tv_sec = (time_t)(d / 1000000000ull);
    ts.tv_nsec = (long)(d % 1000000000ull);
    bool ok = true;
    pthread_mutex_lock(&left_mu);
    while (atomic_load_explicit(&left, memory_order_acquire) > 0) {
        if (pthread_cond_timedwait(&left_cv, &left_mu, &ts) == ETIMEDOUT &&
            atomic_load_explicit(&left, memory_order_acquire) > 0) {
            ok = false;
            break;
        }
    }
    pthread_mutex_unlock(&left_mu);
    return ok;
}

/* ---- tasks --------------------------------------------------------------- */

/* arg: spins of work (0: none). */
static int work_task(void *arg)
{
    volatile uintptr_t spins = (uintptr_t)arg;
    while (spins > 0)
        spins = spins - 1;
    task_done();
    return 0;
}

static int group_task(void *arg)
{
    volatile uintptr_t spins = (uintptr_t)arg;
    while (spins > 0)
        spins = spins - 1;
    atomic_fetch_add_explicit(&tasks_run, 1, memory_order_relaxed);
    return 0;
}

/* Waits at the burst's barrier: every task of the burst must have a
 * worker at once. With 16 workers on fewer CPUs, that takes the pool's
 * monitor (lib/pool/monitor.c): the awake workers are stuck here. */
static pthread_barrier_t burst_barrier;

static int barrier_task(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&burst_barrier);
    task_done();
    return 0;
}

static void *work_of(struct rng *r)
{
    return (void *)(uintptr_t)(rng_one_in(r, 2) ? 0 : rng_below(r, 4000));
}

static void submit_n(int n, uint64_t seed)
{
    struct rng r = rng_for(seed);
    for (int i = 0; i < n; i++) {
        int rc = als_submit(pool, work_task, work_of(&r));
        if (!CHECK(rc == 0, "als_submit: %s", als_strerror(rc)))
            task_done(); /* not accepted: do not wait for it */
    }
}

struct spawn {
    int n;
    uint64_t seed;
};
static struct spawn spawn_arg; /* one inside burst at a time */

static int spawner_task(void *arg)
{
    struct spawn *s = arg;
    submit_n(s->n, s->seed);
    task_done();
    return 0;
}

/* ---- several submitters at once ------------------------------------------ */

static pthread_mutex_t go_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go_cv = PTHREAD_COND_INITIALIZER;
static uint64_t go_gen;
static int go_share[HELPERS];
static uint64_t go_done[HELPERS]; /* the go_gen whose submits each has made */
static bool go_quit;

static void *helper_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&go_mu);
        while (go_gen == seen && !go_quit)
            pthread_cond_wait(&go_cv, &go_mu);
        bool quit = go_quit;
        seen = go_gen;
        int n = go_share[me];
        pthread_mutex_unlock(&go_mu);
        if (quit)
            return NULL;
        submit_n(n, seen * HELPERS + (uint64_t)me + 1000);
        pthread_mutex_lock(&go_mu);
        go_done[me] = seen;
        pthread_cond_broadcast(&go_cv);
        pthread_mutex_unlock(&go_mu);
    }
}

/* Waits until every helper has returned from its submits: a burst's
 * tasks can all have run while a helper is still inside als_submit (its
 * wake-up check), and the pool must outlive that call. */
static void helpers_quiet(void)
{
    pthread_mutex_lock(&go_mu);
    for (int i = 0; i < HELPERS; i++)
        while (go_done[i] != go_gen)
            pthread_cond_wait(&go_cv, &go_mu);
    pthread_mutex_unlock(&go_mu);
}

/* ---- gaps and bursts ------------------------------------------------------ */

static void idle_gap(enum gap g, struct rng *r)
{
    switch (g) {
    case G_NONE:
        break;
    case G_SHORT:
        /* Log-uniform: as many gaps under 2 us as between 128 and 256,
         * so that bursts often meet workers just ending their spin. */
        stress_idle_ns(rng_below(r, 2u << rng_below(r, 19)));
        break;
    case G_LONG:
        stress_idle_ns(1000000 + rng_below(r, 2000000));
        break;
    case G_PARKED: {
        /* Until three reads 50 us apart find the pool idle and no new
         * park: the workers have spun out and sleep (bounded: 20 ms). */
        als_pool_stats s;
        uint64_t last = UINT64_MAX;
        for (int i = 0, stable = 0; i < 400 && stable < 3; i++) {
            stress_idle_ns(50000);
            als_pool_stats_get(pool, &s);
            stable = s.running == 0 && s.queued == 0 && s.parks == last ? stable + 1 : 0;
            last = s.parks;
        }
        break;
    }
    case G_COUNT:
        break;
    }
}

static void burst(struct rng *r, uint64_t n)
{
    enum gap g = (enum gap)rng_below(r, G_COUNT);
    enum shape sh = (enum shape)rng_below(r, S_COUNT);
    /* 1..64, log-uniform: small bursts (a single task) are the ones a
     * missed wake-up leaves with nobody to run them. */
    int k = 1 + (int)rng_below(r, 1u << rng_below(r, 7));
    gap_counts[g]++;
    shape_counts[sh]++;
    idle_gap(g, r);

    switch (sh) {
    case S_OUTSIDE:
        atomic_store(&left, k);
        submit_n(k, n);
        break;
    case S_INSIDE: {
        atomic_store(&left, k + 1);
        spawn_arg = (struct spawn){k, n};
        int rc = als_submit(pool, spawner_task, &spawn_arg);
        if (!CHECK(rc == 0, "als_submit: %s", als_strerror(rc)))
            atomic_store(&left, 0);
        break;
    }
    case S_SEVERAL: {
        atomic_store(&left, k);
        int share = k / (HELPERS + 1);
        pthread_mutex_lock(&go_mu);
        for (int i = 0; i < HELPERS; i++)
            go_share[i] = share;
        go_gen++;
        pthread_cond_broadcast(&go_cv);
        pthread_mutex_unlock(&go_mu);
        submit_n(k - HELPERS * share, n);
        break;
    }
    case S_GROUP: {
        als_group_t *grp = als_group_new();
        if (!CHECK(grp, "als_group_new"))
            return;
        for (int i = 0; i < k; i++) {
            int rc = als_group_submit(grp, pool, group_task, work_of(r));
            CHECK(rc == 0, "als_group_submit: %s", als_strerror(rc));
        }
        int rc = als_group_wait(grp, (int64_t)LIMIT_NS);
        if (rc == ALS_ETIMEDOUT)
            lost_wakeup("als_group_wait timed out", sh, g, k, -1);
        CHECK(rc == 0, "als_group_wait: %s", als_strerror(rc));
        als_group_free(grp);
        return;
    }
    case S_BARRIER: {
        /* At most one task per worker, and fewer than two per worker in
         * all: no worker takes two at once (lib/pool/sched.c). */
        k = 1 + k % WORKERS;
        atomic_store(&left, k);
        pthread_barrier_init(&burst_barrier, NULL, (unsigned)k);
        for (int i = 0; i < k; i++) {
            int rc = als_submit(pool, barrier_task, NULL);
            if (!CHECK(rc == 0, "als_submit: %s", als_strerror(rc)))
                _exit(1); /* the others would wait at the barrier forever */
        }
        break;
    }
    case S_COUNT:
        return;
    }
    bool done = wait_left();
    if (sh == S_BARRIER && done)
        pthread_barrier_destroy(&burst_barrier);
    if (!done)
        lost_wakeup("tasks", sh, g, k, atomic_load(&left));
    CHECK(true, "burst done");
}

/* Runs bursts on a fresh pool that sees `cpus` CPUs (0: the machine's)
 * until `until` seconds since the start (and at least 20, at most `most`
 * bursts), then checks its counts at quiescence and prints its figures. */
static void run_half(const char *label, int cpus, double until, uint64_t most, struct rng *r)
{
    /* 256 per worker: enough for each worker's own queue (als.h), so that
     * tasks submitted from a task wait where idle workers must steal. */
    als_pool_options o = { .threads = WORKERS, .queue_capacity = 256 * WORKERS,
                           .name = "handoff" };
    fake_cpus = cpus;
    pool = als_pool_new(&o); /* seen by the helpers at their next go_gen */
    fake_cpus = 0;
    if (!CHECK(pool, "als_pool_new"))
        return;
    memset(shape_counts, 0, sizeof shape_counts);
    memset(gap_counts, 0, sizeof gap_counts);
    atomic_store(&tasks_run, 0);
    uint64_t bursts = 0;
    while ((bursts < 20 || stress_elapsed() < until) && bursts < most)
        burst(r, ++bursts);

    helpers_quiet();
    CHECK(als_pool_drain(pool) == 0, "als_pool_drain");
    als_pool_stats st;
    CHECK(als_pool_stats_get(pool, &st) == 0, "als_pool_stats_get");
    CHECK(st.submitted == st.completed + st.failed + st.cancelled && st.queued == 0 &&
              st.running == 0,
          "stats at quiescence: submitted %" PRIu64 " completed %" PRIu64 " queued %" PRIu64
          " running %" PRIu64, st.submitted, st.completed, st.queued, st.running);
    als_pool_free(pool);
    pool = NULL;

    double per = st.submitted ? 1000.0 / (double)st.submitted : 0;
    char label2[96];
    snprintf(label2, sizeof label2, "%s: bursts", label);
    stress_figure(label2, "%" PRIu64 " (each one check)", bursts);
    for (int i = 0; i < G_COUNT; i++) {
        snprintf(label2, sizeof label2, "%s: gaps: %s", label, gap_names[i]);
        stress_figure(label2, "%" PRIu64, gap_counts[i]);
    }
    for (int i = 0; i < S_COUNT; i++) {
        snprintf(label2, sizeof label2, "%s: bursts: %s", label, shape_names[i]);
        stress_figure(label2, "%" PRIu64, shape_counts[i]);
    }
    snprintf(label2, sizeof label2, "%s: tasks", label);
    stress_figure(label2, "%" PRIu64 " run, %" PRIu64 " submitted", atomic_load(&tasks_run),
                  st.submitted);
    snprintf(label2, sizeof label2, "%s: per 1000 tasks", label);
    stress_figure(label2, "parks %.1f, wakeups %.1f, submitter wakeups %.1f, steals %.1f",
                  (double)st.parks * per, (double)st.wakeups * per,
                  (double)st.submitter_wakeups * per, (double)st.steals * per);
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "handoff", 3.0, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&left_cv, &ca);
    pthread_condattr_destroy(&ca);

    pthread_t helpers[HELPERS];
    for (int i = 0; i < HELPERS; i++)
        if (pthread_create(&helpers[i], NULL, helper_main, (void *)(intptr_t)i))
            abort();

    struct rng r = rng_for(1);
    uint64_t most = stress.small ? 100 : UINT64_MAX;
    run_half("own CPUs", 0, stress.seconds / 2, most, &r);
    run_half("16 CPUs", WORKERS, stress.seconds, most, &r);

    pthread_mutex_lock(&go_mu);
    go_quit = true;
    pthread_cond_broadcast(&go_cv);
    pthread_mutex_unlock(&go_mu);
    for (int i = 0; i < HELPERS; i++)
        pthread_join(helpers[i], NULL);
    stress_figure("bursts over 10 s", "0 (none lost)");
    pthread_cond_destroy(&left_cv);
    return stress_finish();
}
