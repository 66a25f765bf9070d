/*
 * Worker pool, basic contract (issue 3): argument checking, options
 * (threads = 0, queue_capacity rounding and limits, worker names), exact
 * stats, the REJECT policy, als_pool_current, and wake-ups of an idle pool.
 *
 * Assertions run on the main thread only: tasks record what they saw in
 * plain fields or atomics and the test checks them after a drain, shutdown
 * or join (each of which orders the task's writes before the check).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "als.h"

/* ---- helpers ---------------------------------------------------------- */

/* A gate: tasks announce their arrival and wait until the test opens it. */
#include "gate.h"
#include "pool_helpers.h"

static int gated_task(void *arg)
{
    gate_pass(arg);
    return 0;
}

static int count_task(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 0;
}

static int fail7_task(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 7;
}

static void nap_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- argument checking ------------------------------------------------ */

static void test_null_and_invalid_arguments(void **state)
{
    (void)state;
    als_pool_options o = {.threads = 1};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);

    _Atomic int ran = 0;
    als_task t = {.fn = count_task, .arg = &ran};
    als_task nofn = {.fn = NULL, .arg = &ran};
    als_task nofn_detached = {.fn = NULL, .arg = &ran, .flags = ALS_TASK_DETACHED};

    assert_int_equal(als_submit(NULL, count_task, &ran), ALS_EINVAL);
    assert_int_equal(als_submit(p, NULL, &ran), ALS_EINVAL);
    assert_int_equal(als_submit(NULL, NULL, NULL), ALS_EINVAL);
    assert_int_equal(als_submit_task(NULL, &t), ALS_EINVAL);
    assert_int_equal(als_submit_task(p, NULL), ALS_EINVAL);
    assert_int_equal(als_submit_task(p, &nofn), ALS_EINVAL);
    assert_int_equal(als_submit_task(p, &nofn_detached), ALS_EINVAL);
    assert_int_equal(als_pool_drain(NULL), ALS_EINVAL);
    assert_int_equal(als_pool_shutdown(NULL, ALS_SHUTDOWN_DRAIN), ALS_EINVAL);
    assert_int_equal(als_pool_shutdown(NULL, ALS_SHUTDOWN_CANCEL), ALS_EINVAL);
    assert_int_equal(als_pool_shutdown(p, 2), ALS_EINVAL);
    assert_int_equal(als_pool_shutdown(p, -1), ALS_EINVAL);
    assert_int_equal(als_pool_shutdown(p, INT_MAX), ALS_EINVAL);
    als_pool_stats s;
    assert_int_equal(als_pool_stats_get(NULL, &s), ALS_EINVAL);
    assert_int_equal(als_pool_stats_get(p, NULL), ALS_EINVAL);
    als_pool_free(NULL); /* no-op */

    /* None of that was accepted, rejected or began a shutdown. */
    get_stats(p, &s);
    assert_int_equal(s.submitted, 0);
    assert_int_equal(s.rejected, 0);
    assert_int_equal(s.threads, 1);
    assert_int_equal(als_submit(p, count_task, &ran), 0);
    assert_int_equal(als_submit_task(p, &t), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&ran), 2);
    get_stats(p, &s);
    assert_int_equal(s.submitted, 2);
    assert_int_equal(s.completed, 2);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.cancelled, 0);
    assert_int_equal(s.rejected, 0);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.running, 0);
    als_pool_free(p);
}

static void test_capacity_limit(void **state)
{
    (void)state;
    als_pool_options o = {.threads = 1, .queue_capacity = (1u << 30) + 1};
    assert_null(als_pool_new(&o));
    o.queue_capacity = UINT_MAX;
    assert_null(als_pool_new(&o));
    o.queue_capacity = 1;
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    als_pool_free(p);
}

/* ---- threads, names, als_pool_current --------------------------------- */

struct name_probe {
    pthread_barrier_t *barrier;
    als_pool_t *current;
    int rc;
    char name[32];
};

static int name_task(void *arg)
{
    struct name_probe *np = arg;
    np->current = als_pool_current();
    np->rc = pthread_getname_np(pthread_self(), np->name, sizeof np->name);
    /* Every probe waits for all the others: they run on distinct workers. */
    pthread_barrier_wait(np->barrier);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Runs one probe on every one of the pool's n workers and checks that the
 * names are exactly "<prefix>-0" .. "<prefix>-<n-1>". */
static void check_worker_names(als_pool_t *p, unsigned n, const char *prefix)
{
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.threads, n);

    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, n), 0);
    struct name_probe *np = calloc(n, sizeof *np);
    const char **names = calloc(n, sizeof *names);
    assert_non_null(np);
    assert_non_null(names);
    for (unsigned i = 0; i < n; i++) {
        np[i].barrier = &barrier;
        np[i].rc = -1;
        assert_int_equal(als_submit(p, name_task, &np[i]), 0);
    }
    assert_int_equal(als_pool_drain(p), 0);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(np[i].rc, 0);
        assert_ptr_equal(np[i].current, p);
        names[i] = np[i].name;
    }
    qsort(names, n, sizeof *names, cmp_str);
    /* Sorting strings puts "x-10" before "x-2"; compare as a set. */
    char *expect = calloc(n, 32);
    assert_non_null(expect);
    const char **ex = calloc(n, sizeof *ex);
    assert_non_null(ex);
    for (unsigned i = 0; i < n; i++) {
        snprintf(expect + 32 * i, 32, "%s-%u", prefix, i);
        ex[i] = expect + 32 * i;
    }
    qsort(ex, n, sizeof *ex, cmp_str);
    for (unsigned i = 0; i < n; i++)
        assert_string_equal(names[i], ex[i]);
    free(ex);
    free(expect);
    free(names);
    free(np);
    pthread_barrier_destroy(&barrier);
}

static void test_worker_names(void **state)
{
    (void)state;
    als_pool_options o = {.threads = 3, .name = "tp"};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    check_worker_names(p, 3, "tp");
    als_pool_free(p);

    als_pool_options d = {.threads = 2};
    p = als_pool_new(&d);
    assert_non_null(p);
    check_worker_names(p, 2, "als");
    als_pool_free(p);

    /* The name is copied: the caller's buffer may change afterwards. */
    char buf[8] = "wk";
    als_pool_options c = {.threads = 1, .name = buf};
    p = als_pool_new(&c);
    assert_non_null(p);
    strcpy(buf, "zz");
    check_worker_names(p, 1, "wk");
    als_pool_free(p);
}

static void test_threads_zero_uses_affinity(void **state)
{
    (void)state;
    cpu_set_t orig;
    CPU_ZERO(&orig);
    assert_int_equal(sched_getaffinity(0, sizeof orig, &orig), 0);
    unsigned n = (unsigned)CPU_COUNT(&orig);
    assert_true(n >= 1);

    als_pool_t *p = als_pool_new(NULL); /* all defaults */
    assert_non_null(p);
    check_worker_names(p, n, "als");
    als_pool_free(p);

    als_pool_options o = {.threads = 0, .name = "aff"};
    p = als_pool_new(&o);
    assert_non_null(p);
    check_worker_names(p, n, "aff");
    als_pool_free(p);

    /* The affinity mask, not the online CPU count: restrict this thread to
     * a single CPU and ask again. */
    if (n >= 2) {
        cpu_set_t one;
        CPU_ZERO(&one);
        for (int c = 0; c < CPU_SETSIZE; c++) {
            if (CPU_ISSET(c, &orig)) {
                CPU_SET(c, &one);
                break;
            }
        }
        if (sched_setaffinity(0, sizeof one, &one) == 0) {
            p = als_pool_new(&o);
            assert_int_equal(sched_setaffinity(0, sizeof orig, &orig), 0);
            assert_non_null(p);
            check_worker_names(p, 1, "aff");
            als_pool_free(p);
        }
    }
}

struct current_probe {
    als_pool_t *other;
    als_pool_t *in_task;
    als_pool_t *in_nested_run;
    als_pool_t *in_other_pool;
    als_pool_t *in_thread;
    int submit_rc, drain_rc, thread_rc;
};

static als_t *cur_store;

static int current_other_task(void *arg)
{
    struct current_probe *cp = arg;
    cp->in_other_pool = als_pool_current();
    return 0;
}

static void *current_nested(void *arg)
{
    struct current_probe *cp = arg;
    cp->in_nested_run = als_pool_current();
    return NULL;
}

static void *current_thread(void *arg)
{
    struct current_probe *cp = arg;
    cp->in_thread = als_pool_current();
    return NULL;
}

static int current_task(void *arg)
{
    struct current_probe *cp = arg;
    cp->in_task = als_pool_current();
    als_run(cur_store, cp, current_nested, cp);
    cp->submit_rc = als_submit(cp->other, current_other_task, cp);
    cp->drain_rc = als_pool_drain(cp->other);
    pthread_t t;
    cp->thread_rc = als_thread_create(&t, NULL, current_thread, cp);
    if (cp->thread_rc == 0)
        pthread_join(t, NULL);
    return 0;
}

/* The pool's threads block every signal, whatever the creating thread's
 * mask: a signal sent to the process goes to the program's own threads.
 * Checked on a worker and on the timer thread's worker-run task (the
 * timer thread itself runs no user code), from a creator that unblocked
 * them all. */
static _Atomic int mask_seen;

static int record_mask(void *arg)
{
    (void)arg;
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    int all = sigismember(&cur, SIGTERM) && sigismember(&cur, SIGINT) &&
              sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGCHLD);
    atomic_store(&mask_seen, all ? 1 : 2);
    return 0;
}

static void test_workers_block_signals(void **state)
{
    (void)state;
    sigset_t none, old;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, &old);
    als_pool_t *p = als_pool_new(&(als_pool_options){ .threads = 1 });
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    assert_non_null(p);
    assert_int_equal(als_submit(p, record_mask, NULL), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&mask_seen), 1);
    als_pool_free(p);
}

static void test_pool_current(void **state)
{
    (void)state;
    cur_store = als_new(NULL);
    assert_non_null(cur_store);
    assert_null(als_pool_current());
    als_pool_options o = {.threads = 1, .name = "pa"};
    als_pool_t *a = als_pool_new(&o);
    o.name = "pb";
    als_pool_t *b = als_pool_new(&o);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(als_pool_current());

    struct current_probe cp = {.other = b};
    cp.in_task = cp.in_nested_run = cp.in_other_pool = cp.in_thread = (als_pool_t *)&cp;
    assert_int_equal(als_submit(a, current_task, &cp), 0);
    assert_int_equal(als_pool_drain(a), 0);
    assert_ptr_equal(cp.in_task, a);
    assert_ptr_equal(cp.in_nested_run, a);
    assert_int_equal(cp.submit_rc, 0);
    assert_int_equal(cp.drain_rc, 0);
    assert_ptr_equal(cp.in_other_pool, b);
    assert_int_equal(cp.thread_rc, 0);
    assert_null(cp.in_thread); /* a thread a task starts is no worker */
    assert_null(als_pool_current());
    als_pool_free(a);
    als_pool_free(b);
    assert_null(als_pool_current());
    als_free(cur_store);
}

/* ---- stats ------------------------------------------------------------ */

static void test_stats_exact(void **state)
{
    (void)state;
    als_pool_options o = {.threads = 2, .queue_capacity = 64};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 0);
    assert_int_equal(s.completed, 0);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.rejected, 0);
    assert_int_equal(s.cancelled, 0);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.running, 0);
    assert_int_equal(s.threads, 2);

    struct gate g;
    gate_init(&g);
    _Atomic int ok = 0, bad = 0;
    assert_int_equal(als_submit(p, gated_task, &g), 0);
    assert_int_equal(als_submit(p, gated_task, &g), 0);
    gate_await_arrivals(&g, 2); /* both workers are held */
    int bad_rc = 0;
    for (int i = 0; i < 5; i++)
        bad_rc += als_submit(p, count_task, (void *)&ok) != 0;
    for (int i = 0; i < 3; i++)
        bad_rc += als_submit(p, fail7_task, (void *)&bad) != 0;

    als_pool_stats held;
    int held_rc = als_pool_stats_get(p, &held);
    gate_open(&g); /* release the workers before judging */
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(held_rc, 0);
    assert_int_equal(bad_rc, 0);
    assert_int_equal(held.submitted, 10);
    assert_int_equal(held.running, 2);
    assert_int_equal(held.queued, 8);
    assert_int_equal(held.completed, 0);
    assert_int_equal(held.failed, 0);
    assert_int_equal(held.rejected, 0);
    assert_int_equal(held.cancelled, 0);
    assert_int_equal(atomic_load(&ok), 5);
    assert_int_equal(atomic_load(&bad), 3);
    get_stats(p, &s);
    assert_int_equal(s.submitted, 10);
    assert_int_equal(s.completed, 7);
    assert_int_equal(s.failed, 3);
    assert_int_equal(s.rejected, 0);
    assert_int_equal(s.cancelled, 0);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.running, 0);
    assert_int_equal(s.threads, 2);

    /* Stats of a pool that was shut down stay readable and final. */
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    get_stats(p, &s);
    assert_int_equal(s.submitted, 10);
    assert_int_equal(s.completed, 7);
    assert_int_equal(s.failed, 3);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.running, 0);
    als_pool_free(p);
    gate_destroy(&g);
}

/* queue_capacity `cap` rounds up to `rounded`: with the only worker held,
 * exactly `rounded` or `rounded - 1` tasks are accepted, then ALS_EFULL. */
static void check_capacity(unsigned cap, unsigned rounded)
{
    als_pool_options o = {.threads = 1, .queue_capacity = cap,
                          .on_full = ALS_FULL_REJECT};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    struct gate g;
    gate_init(&g);
    _Atomic int ran = 0;
    assert_int_equal(als_submit(p, gated_task, &g), 0);
    gate_await_arrivals(&g, 1);

    unsigned accepted = 0;
    int rc;
    while ((rc = als_submit(p, count_task, (void *)&ran)) == 0 && accepted < rounded + 8)
        accepted++;
    if (rc == 0)
        accepted++;
    als_pool_stats s, s_full;
    int rc_stats = als_pool_stats_get(p, &s);
    int rc_again = als_submit(p, count_task, (void *)&ran);
    als_task det = {.fn = count_task, .arg = (void *)&ran, .flags = ALS_TASK_DETACHED};
    int rc_det = als_submit_task(p, &det);
    rc_stats |= als_pool_stats_get(p, &s_full);
    if (rc_again == 0)
        accepted++;
    if (rc_det == 0)
        accepted++;

    /* Release the worker before judging, so that a failure leaves no
     * thread blocked behind. */
    gate_open(&g);
    assert_int_equal(als_pool_drain(p), 0);
    if (accepted != rounded && accepted + 1 != rounded)
        fail_msg("queue_capacity %u: %u tasks could wait, want %u or %u", cap,
                 accepted, rounded, rounded - 1);
    assert_int_equal(rc_stats, 0);
    assert_int_equal(rc, ALS_EFULL);
    assert_int_equal(rc_again, ALS_EFULL);
    assert_int_equal(rc_det, ALS_EFULL);
    assert_int_equal(s.submitted, 1 + accepted);
    assert_int_equal(s.rejected, 1);
    assert_int_equal(s.queued, accepted);
    assert_int_equal(s.running, 1);
    assert_int_equal(s_full.rejected, 3);
    assert_int_equal(s_full.submitted, 1 + accepted);

    assert_int_equal(atomic_load(&ran), (int)accepted);
    get_stats(p, &s);
    assert_int_equal(s.completed, 1 + accepted);
    assert_int_equal(s.rejected, 3);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.running, 0);
    /* Room again. */
    assert_int_equal(als_submit(p, count_task, (void *)&ran), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&ran), (int)accepted + 1);
    als_pool_free(p);
    gate_destroy(&g);
}

static void test_capacity_rounding_and_reject(void **state)
{
    (void)state;
    check_capacity(5, 8);
    check_capacity(8, 8);
    check_capacity(3, 4);
    check_capacity(9, 16);
    check_capacity(0, 4096);
}

/* Powers of two below 4 are powers of two too: 2 stays 2 and 1 stays 1. */
static void test_capacity_small(void **state)
{
    (void)state;
    check_capacity(2, 2);
    check_capacity(1, 1);
}

/* ---- wake-ups --------------------------------------------------------- */

struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned done;
};

static int wake_task(void *arg)
{
    struct waker *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* A non-synchronising pause that lets the workers spin out and park. Its
 * length only changes which path (spinning or parked) the next submit
 * meets; the test waits for the task itself, so a lost wake-up hangs. */
static void idle_pause(als_pool_t *p, unsigned round)
{
    als_pool_stats s;
    for (int i = 0; i < 1000; i++) { /* bounded poll: the pool is idle */
        get_stats(p, &s);
        if (s.running == 0 && s.queued == 0)
            break;
        sched_yield();
    }
    if (round % 64 == 63)
        nap_us(10000);
    else if (round % 4 != 0)
        nap_us((long)((round * 7919u) % 1500u));
}

static void run_wakeups(unsigned threads, unsigned per_round, unsigned rounds)
{
    als_pool_options o = {.threads = threads, .queue_capacity = 16};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    struct waker w = {.done = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    unsigned want = 0;
    for (unsigned r = 0; r < rounds; r++) {
        idle_pause(p, r);
        for (unsigned k = 0; k < per_round; k++)
            assert_int_equal(als_submit(p, wake_task, &w), 0);
        want += per_round;
        pthread_mutex_lock(&w.mu);
        while (w.done < want)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    /* The same through als_pool_drain, which must not need a wake-up of
     * its own to notice the end. */
    for (unsigned r = 0; r < rounds / 4; r++) {
        idle_pause(p, r);
        assert_int_equal(als_submit(p, wake_task, &w), 0);
        want++;
        assert_int_equal(als_pool_drain(p), 0);
        pthread_mutex_lock(&w.mu);
        unsigned done = w.done;
        pthread_mutex_unlock(&w.mu);
        assert_int_equal(done, want);
    }
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, want);
    assert_int_equal(s.completed, want);
    als_pool_free(p);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

static void test_wakeup_single_worker(void **state)
{
    (void)state;
    run_wakeups(1, 1, 600);
}

static void test_wakeup_several_workers(void **state)
{
    (void)state;
    run_wakeups(2, 1, 300);
    run_wakeups(3, 3, 300);
}

/* A burst of n tasks that can only finish together (an n-party barrier) on
 * an idle n-worker pool: every one of them needs a worker of its own, so
 * the burst must wake every parked worker, whether the submits meet parked
 * workers, spinning ones or both. A lost wake-up hangs the test. */
static int burst_task(void *arg)
{
    pthread_barrier_wait(arg);
    return 0;
}

/* stream: tasks run (and drained) before each burst, 0 for none. Workers
 * take several tasks at once during a stream (lib/pool/sched.c); a
 * worker that ran out of work must not go on doing so, or it would take
 * two tasks of the burst and wait in the first. */
static void run_bursts(unsigned threads, unsigned rounds, int fresh_pool, unsigned stream)
{
    als_pool_options o = {.threads = threads};
    als_pool_t *p = fresh_pool ? NULL : als_pool_new(&o);
    pthread_barrier_t barrier;
    for (unsigned r = 0; r < rounds; r++) {
        if (fresh_pool) {
            p = als_pool_new(&o); /* workers still starting, spinning or parked */
            assert_non_null(p);
        } else {
            assert_non_null(p);
            idle_pause(p, r);
        }
        for (unsigned k = 0; k < stream; k++)
            assert_int_equal(als_submit(p, noop_task, NULL), 0);
        if (stream)
            assert_int_equal(als_pool_drain(p), 0);
        assert_int_equal(pthread_barrier_init(&barrier, NULL, threads), 0);
        int bad_rc = 0;
        for (unsigned k = 0; k < threads; k++)
            bad_rc += als_submit(p, burst_task, &barrier) != 0;
        assert_int_equal(bad_rc, 0);
        assert_int_equal(als_pool_drain(p), 0);
        pthread_barrier_destroy(&barrier);
        if (fresh_pool)
            als_pool_free(p);
    }
    if (!fresh_pool) {
        als_pool_stats s;
        get_stats(p, &s);
        assert_int_equal(s.completed, (uint64_t)(threads + stream) * rounds);
        als_pool_free(p);
    }
}

/* The CPUs this process may run on. */
static unsigned cpus(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    return (unsigned)CPU_COUNT(&set);
}

/* With more workers than CPUs, a worker hands a wake-up on only while
 * fewer are awake than can run at once; the pool's monitor wakes more for
 * workers stuck in a task (lib/pool/monitor.c). A burst of barrier tasks,
 * each stuck until all have a worker, needs both, on any machine. */
static void test_wakeup_burst_needs_every_worker(void **state)
{
    (void)state;
    run_bursts(3, 200, 0, 0);
    run_bursts(4, 100, 0, 0);
    run_bursts(3, 300, 1, 0);
    run_bursts(cpus() + 2, 100, 0, 0);
    run_bursts(cpus() + 2, 30, 1, 0);
    run_bursts(cpus() + 2, 100, 0, 64 * (cpus() + 2));
}

/* While every worker but one is stuck in a task (more than the CPUs),
 * queued tasks still run, on the last one. */
static void test_stuck_workers_leave_the_rest_running(void **state)
{
    (void)state;
    unsigned n = cpus() + 2, stuck = n - 1;
    als_pool_options o = {.threads = n, .name = "stk"};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    struct gate g;
    block_workers(p, &g, (int)stuck);
    struct waker w = {.done = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    for (unsigned round = 1; round <= 20; round++) {
        for (unsigned k = 0; k < 8; k++)
            assert_int_equal(als_submit(p, wake_task, &w), 0);
        pthread_mutex_lock(&w.mu);
        while (w.done < 8 * round)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    gate_open(&g);
    assert_int_equal(als_pool_drain(p), 0);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.completed, stuck + 160);
    als_pool_free(p);
    gate_destroy(&g);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

/* How many of this process's threads are named `name`. */
static unsigned threads_named(const char *name)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* the thread ended meanwhile */
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        n += strcmp(comm, name) == 0;
    }
    closedir(d);
    return n;
}

/* A pool with more workers than CPUs has one thread more, its monitor,
 * named "<name>-mon"; a pool whose workers can all run at once has none.
 * The monitor ends with the pool. */
static void test_monitor_thread(void **state)
{
    (void)state;
    als_pool_options o = {.threads = cpus() + 1, .name = "mt"};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    assert_int_equal(threads_named("mt-mon"), 1);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.threads, cpus() + 1); /* workers only */
    als_pool_free(p);
    assert_int_equal(threads_named("mt-mon"), 0);

    als_pool_options f = {.threads = cpus(), .name = "mf"};
    p = als_pool_new(&f);
    assert_non_null(p);
    assert_int_equal(threads_named("mf-mon"), 0);
    als_pool_free(p);
}

/* ---- many tasks, a few submitters ------------------------------------- */

struct flood {
    als_pool_t *pool;
    _Atomic int *hits;
    int from, to;
    int bad_rc;
};

static int hit_task(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 0;
}

static void *flood_thread(void *arg)
{
    struct flood *f = arg;
    for (int i = f->from; i < f->to; i++)
        if (als_submit(f->pool, hit_task, (void *)&f->hits[i]) != 0)
            f->bad_rc++;
    return NULL;
}

static void test_many_tasks_exactly_once(void **state)
{
    (void)state;
    enum { N = 20000, SUBMITTERS = 3 };
    als_pool_options o = {.threads = 2, .queue_capacity = 32};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    _Atomic int *hits = calloc(N, sizeof *hits);
    assert_non_null(hits);
    pthread_t t[SUBMITTERS];
    struct flood f[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        f[i] = (struct flood){p, hits, i * N / SUBMITTERS, (i + 1) * N / SUBMITTERS, 0};
        assert_int_equal(pthread_create(&t[i], NULL, flood_thread, &f[i]), 0);
    }
    for (int i = 0; i < SUBMITTERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(f[i].bad_rc, 0);
    }
    assert_int_equal(als_pool_drain(p), 0);
    for (int i = 0; i < N; i++)
        if (atomic_load(&hits[i]) != 1)
            fail_msg("task %d ran %d times", i, atomic_load(&hits[i]));
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, N);
    assert_int_equal(s.completed, N);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.running, 0);
    als_pool_free(p);
    free(hits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_and_invalid_arguments),
        cmocka_unit_test(test_capacity_limit),
        cmocka_unit_test(test_worker_names),
        cmocka_unit_test(test_threads_zero_uses_affinity),
        cmocka_unit_test(test_workers_block_signals),
        cmocka_unit_test(test_pool_current),
        cmocka_unit_test(test_stats_exact),
        cmocka_unit_test(test_capacity_rounding_and_reject),
        cmocka_unit_test(test_capacity_small),
        cmocka_unit_test(test_wakeup_single_worker),
        cmocka_unit_test(test_wakeup_several_workers),
        cmocka_unit_test(test_wakeup_burst_needs_every_worker),
        cmocka_unit_test(test_stuck_workers_leave_the_rest_running),
        cmocka_unit_test(test_monitor_thread),
        cmocka_unit_test(test_many_tasks_exactly_once),
    };
    /* POOL_TEST_FILTER=test_name (wildcards allowed) runs a subset. */
    if (getenv("POOL_TEST_FILTER"))
        cmocka_set_test_filter(getenv("POOL_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
