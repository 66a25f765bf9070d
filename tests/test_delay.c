/*
 * Delayed tasks (issue 4, semantics 1, 5 and 7): als_submit_after.
 *
 * - A delayed task captures the submitter's context at als_submit_after and
 *   runs in it, on a worker, no earlier than its delay (the one timing
 *   assertion allowed: measured >= requested, CLOCK_MONOTONIC, measured from
 *   before the call).
 * - Many timers (10k, random delays up to 3 ms, submitted from 4 threads at
 *   once) each run exactly once.
 * - Accounting: a delayed task counts in `submitted` when accepted and in
 *   `queued` while it waits; als_pool_drain waits for it (and for what it
 *   submits); a DRAIN shutdown (and als_pool_free) runs it when due; a
 *   CANCEL shutdown cancels the pending ones (fn never runs) with
 *   submitted == completed + failed + cancelled; a failing delayed task
 *   calls on_error in the submit-time context.
 * - Values captured by delayed tasks are destroyed exactly once, also when
 *   the task is cancelled (a destroy-owning store).
 * - Allocation failures (test builds) answer ALS_ENOMEM with nothing
 *   accepted, leaked or lost.
 *
 * Assertions run on the main thread only: tasks record what they saw in
 * atomics, the test checks after a drain, shutdown or join. "Pending" tasks
 * use a one-hour delay so that they cannot come due during the test.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "als.h"

/* The allocation-failure hook of test builds (lib/alloc.c); weak so that
 * other builds link and skip the test that needs it. */
extern long als__test_fail_alloc(long n, bool sticky) __attribute__((weak));

#define MS 1000000ull
#define HOUR (3600ull * 1000 * MS)

/* ---- helpers ---------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#include "gate.h"
#include "pool_helpers.h"

static als_pool_t *new_pool(unsigned threads)
{
    als_pool_options o = {.threads = threads};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* A destroy-owning store: every binding's value is a `struct dval`
 * (pool_helpers.h) whose destroy count must end at exactly 1. */
static als_t *store;

/* A delayed task's record. */
struct dtask {
    als_pool_t *pool;          /* where it must run */
    void *expect;              /* als_get(store) inside fn */
    uint64_t delay;            /* requested */
    uint64_t t_submit;         /* CLOCK_MONOTONIC just before the submit */
    int result;                /* fn's return */
    int rc;                    /* the submit's answer */
    _Atomic uint64_t t_run;
    _Atomic int runs;
    _Atomic int bad_ctx;
    _Atomic int bad_pool;
};

static int dtask_fn(void *arg)
{
    struct dtask *d = arg;
    atomic_store(&d->t_run, now_ns());
    if (als_get(store) != d->expect)
        atomic_store(&d->bad_ctx, 1);
    if (als_pool_current() != d->pool)
        atomic_store(&d->bad_pool, 1);
    atomic_fetch_add(&d->runs, 1);
    return d->result;
}

static void *submit_after_body(void *arg)
{
    struct dtask *d = arg;
    d->t_submit = now_ns();
    d->rc = als_submit_after(d->pool, d->delay, dtask_fn, d);
    return NULL;
}

/* Submits d with store bound to `value` (d->expect). */
static int submit_after_in(struct dtask *d, als_pool_t *p, uint64_t delay, void *value)
{
    d->pool = p;
    d->delay = delay;
    d->expect = value;
    d->rc = -100;
    als_run(store, value, submit_after_body, d);
    return d->rc;
}

/* The task ran once, in its context, on its pool, no earlier than asked. */
static void assert_ran_once(struct dtask *d, const char *what, size_t i)
{
    if (atomic_load(&d->runs) != 1)
        fail_msg("%s %zu: ran %d times", what, i, atomic_load(&d->runs));
    if (atomic_load(&d->bad_ctx))
        fail_msg("%s %zu: ran in the wrong context", what, i);
    if (atomic_load(&d->bad_pool))
        fail_msg("%s %zu: not on its pool's worker", what, i);
    uint64_t t = atomic_load(&d->t_run);
    if (t < d->t_submit + d->delay)
        fail_msg("%s %zu: ran %llu ns after submit, asked for %llu", what, i,
                 (unsigned long long)(t - d->t_submit), (unsigned long long)d->delay);
}

/* ---- arguments -------------------------------------------------------- */

static void test_arguments(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1);
    int x = 0;
    assert_int_equal(als_submit_after(NULL, MS, noop_task, &x), ALS_EINVAL);
    assert_int_equal(als_submit_after(p, MS, NULL, &x), ALS_EINVAL);

    /* Delay 0: as soon as possible, still in the submitter's context. */
    struct dval v = {0};
    struct dtask d = {0};
    assert_int_equal(submit_after_in(&d, p, 0, &v), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_ran_once(&d, "delay 0", 0);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1);
    assert_int_equal(s.completed, 1);
    assert_balanced(&s);

    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    struct dtask late = {0};
    assert_int_equal(submit_after_in(&late, p, MS, &v), ALS_ESHUTDOWN);
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1);
    als_pool_free(p);
    assert_int_equal(atomic_load(&late.runs), 0);
    /* Two bindings of the same value: destroyed once per binding. */
    assert_int_equal(atomic_load(&v.destroyed), 2);
}

/* ---- context and lower bound ------------------------------------------ */

/* A task that binds its own value and, inside it, submits a delayed task:
 * the delayed task must see the task's value (captured on a worker). */
struct inner {
    als_pool_t *pool;
    struct dval *val;
    struct dtask *d;
};

static int submit_from_task(void *arg)
{
    struct inner *in = arg;
    submit_after_in(in->d, in->pool, 2 * MS, in->val);
    return 0;
}

static void *check_unchanged(void *arg)
{
    (void)arg;
    return als_get(store);
}

static void test_context_and_lower_bound(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    static const uint64_t delays[] = {0, 1 * MS, 5 * MS, 20 * MS, 3 * MS, 1};
    enum { N = sizeof delays / sizeof delays[0] };
    struct dval vals[N + 2];
    struct dtask d[N + 1];
    memset(vals, 0, sizeof vals);
    memset(d, 0, sizeof d);

    for (size_t i = 0; i < N; i++)
        assert_int_equal(submit_after_in(&d[i], p, delays[i], &vals[i]), 0);
    /* The submitter's own context is untouched by the submits. */
    assert_null(als_get(store));
    assert_ptr_equal(als_run(store, &vals[N + 1], check_unchanged, NULL), &vals[N + 1]);

    /* Submitted from a worker. */
    struct inner in = {p, &vals[N], &d[N]};
    assert_int_equal(als_submit(p, submit_from_task, &in), 0);

    assert_int_equal(als_pool_drain(p), 0);
    for (size_t i = 0; i <= N; i++) {
        assert_int_equal(d[i].rc, 0);
        assert_ran_once(&d[i], "timer", i);
    }
    assert_destroyed_once(vals, N + 2);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, N + 2);
    assert_int_equal(s.completed, N + 2);
    assert_balanced(&s);
    als_pool_free(p);
}

/* ---- many timers ------------------------------------------------------ */

enum { MANY = 10000, SUBMITTERS = 4 };

struct many {
    als_pool_t *pool;
    struct dtask *d;
    struct dval *vals;
    unsigned first, count;
    unsigned seed;
};

static void *many_submitter(void *arg)
{
    struct many *m = arg;
    for (unsigned i = m->first; i < m->first + m->count; i++) {
        uint64_t delay = (uint64_t)(rand_r(&m->seed) % 3000) * 1000; /* 0..3 ms */
        submit_after_in(&m->d[i], m->pool, delay, &m->vals[i]);
    }
    return NULL;
}

static void test_many_timers(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    struct dtask *d = calloc(MANY, sizeof *d);
    struct dval *vals = calloc(MANY, sizeof *vals);
    assert_non_null(d);
    assert_non_null(vals);

    pthread_t th[SUBMITTERS];
    struct many m[SUBMITTERS];
    for (unsigned t = 0; t < SUBMITTERS; t++) {
        m[t] = (struct many){p, d, vals, t * (MANY / SUBMITTERS), MANY / SUBMITTERS,
                             0x5eed0u + t};
        assert_int_equal(pthread_create(&th[t], NULL, many_submitter, &m[t]), 0);
    }
    for (unsigned t = 0; t < SUBMITTERS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);

    assert_int_equal(als_pool_drain(p), 0);
    for (size_t i = 0; i < MANY; i++) {
        if (d[i].rc != 0)
            fail_msg("timer %zu: submit gave %d", i, d[i].rc);
        assert_ran_once(&d[i], "timer", i);
    }
    assert_destroyed_once(vals, MANY);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, MANY);
    assert_int_equal(s.completed, MANY);
    assert_balanced(&s);
    als_pool_free(p);
    free(d);
    free(vals);
}

/* ---- accounting ------------------------------------------------------- */

/* Pending delayed tasks count as submitted and queued, and a CANCEL
 * shutdown cancels them: fn never runs, values destroyed once. */
static void test_pending_counts_and_cancel(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    enum { PENDING = 5 };
    struct dval vals[PENDING];
    struct dtask d[PENDING];
    memset(vals, 0, sizeof vals);
    memset(d, 0, sizeof d);
    for (size_t i = 0; i < PENDING; i++)
        assert_int_equal(submit_after_in(&d[i], p, HOUR, &vals[i]), 0);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, PENDING);
    assert_int_equal(s.queued, PENDING);
    assert_int_equal(s.running, 0);
    assert_int_equal(s.completed, 0);
    assert_int_equal(s.cancelled, 0);
    for (size_t i = 0; i < PENDING; i++)
        assert_int_equal(atomic_load(&vals[i].destroyed), 0); /* held by the task */

    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL), 0);
    for (size_t i = 0; i < PENDING; i++)
        assert_int_equal(atomic_load(&d[i].runs), 0);
    assert_destroyed_once(vals, PENDING);
    get_stats(p, &s);
    assert_int_equal(s.submitted, PENDING);
    assert_int_equal(s.cancelled, PENDING);
    assert_int_equal(s.completed, 0);
    assert_int_equal(s.failed, 0);
    assert_balanced(&s);

    struct dtask late = {0};
    struct dval lv = {0};
    assert_int_equal(submit_after_in(&late, p, 0, &lv), ALS_ESHUTDOWN);
    als_pool_free(p);
    assert_int_equal(atomic_load(&late.runs), 0);
    assert_int_equal(atomic_load(&lv.destroyed), 1);
}

/* A task whose future completes after it submitted a pending timer. */
static void *submit_pending_from_task(void *arg)
{
    struct inner *in = arg;
    submit_after_in(in->d, in->pool, HOUR, in->val);
    return NULL;
}

/* A CANCEL shutdown with due timers that ran, pending ones from outside
 * and from a worker, and a failing timer: exact accounting. */
static void test_cancel_mixed(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    enum { DUE = 3, PENDING = 4 };
    struct dval vals[DUE + PENDING + 1];
    struct dtask d[DUE + PENDING + 1];
    memset(vals, 0, sizeof vals);
    memset(d, 0, sizeof d);

    for (size_t i = 0; i < DUE; i++)
        assert_int_equal(submit_after_in(&d[i], p, MS, &vals[i]), 0);
    assert_int_equal(als_pool_drain(p), 0);
    for (size_t i = 0; i < DUE; i++)
        assert_ran_once(&d[i], "due", i);

    for (size_t i = DUE; i < DUE + PENDING; i++)
        assert_int_equal(submit_after_in(&d[i], p, HOUR + i, &vals[i]), 0);

    /* One more from a worker, through a future whose wait tells us the
     * submit happened. */
    struct inner in = {p, &vals[DUE + PENDING], &d[DUE + PENDING]};
    als_future_t *f = NULL;
    assert_int_equal(als_submit_future(p, submit_pending_from_task, &in, &f), 0);
    assert_int_equal(als_future_wait(f, -1, NULL), 0);
    als_future_release(f);
    assert_int_equal(d[DUE + PENDING].rc, 0);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, DUE + PENDING + 2);
    assert_int_equal(s.queued, PENDING + 1); /* exact: counts started, not finished */

    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL), 0);
    for (size_t i = DUE; i <= DUE + PENDING; i++)
        assert_int_equal(atomic_load(&d[i].runs), 0);
    assert_destroyed_once(vals, DUE + PENDING + 1);
    get_stats(p, &s);
    assert_int_equal(s.submitted, DUE + PENDING + 2);
    assert_int_equal(s.completed, DUE + 1);
    assert_int_equal(s.cancelled, PENDING + 1);
    assert_int_equal(s.failed, 0);
    assert_balanced(&s);
    als_pool_free(p);
}

/* als_pool_drain waits for delayed tasks and for the delayed tasks they
 * submit in turn (a chain, each link in the context it inherited). */
struct chain {
    als_pool_t *pool;
    struct dval *val;          /* bound by the first submit */
    struct dtask d[4];
    _Atomic int next;
};

static int chain_fn(void *arg);

static int chain_submit_next(struct chain *c)
{
    int i = atomic_fetch_add(&c->next, 1);
    if (i >= 4)
        return 0;
    struct dtask *d = &c->d[i];
    d->pool = c->pool;
    d->delay = (uint64_t)(i + 1) * MS;
    d->expect = c->val;
    d->t_submit = now_ns();
    d->rc = als_submit_after(c->pool, d->delay, chain_fn, c);
    return d->rc;
}

static int chain_fn(void *arg)
{
    struct chain *c = arg;
    int i = atomic_load(&c->next) - 1;   /* the link now running */
    dtask_fn(&c->d[i]);
    chain_submit_next(c);
    return 0;
}

static void *chain_start(void *arg)
{
    chain_submit_next(arg);
    return NULL;
}

static void test_drain_waits(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    struct dval vals[3];
    struct dtask d[3];
    memset(vals, 0, sizeof vals);
    memset(d, 0, sizeof d);
    assert_int_equal(submit_after_in(&d[0], p, 10 * MS, &vals[0]), 0);
    assert_int_equal(submit_after_in(&d[1], p, 25 * MS, &vals[1]), 0);
    assert_int_equal(submit_after_in(&d[2], p, 1 * MS, &vals[2]), 0);
    assert_int_equal(als_pool_drain(p), 0);
    for (size_t i = 0; i < 3; i++)
        assert_ran_once(&d[i], "timer", i);
    assert_destroyed_once(vals, 3);

    struct dval cv = {0};
    struct chain c = {.pool = p, .val = &cv};
    als_run(store, &cv, chain_start, &c);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&c.next), 5);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(c.d[i].rc, 0);
        assert_ran_once(&c.d[i], "chain link", i);
    }
    assert_int_equal(atomic_load(&cv.destroyed), 1);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 7);
    assert_int_equal(s.completed, 7);
    assert_balanced(&s);
    als_pool_free(p);
}

/* A DRAIN shutdown runs pending delayed tasks when due, chains included;
 * als_pool_free without a shutdown does the same. */
static void test_drain_shutdown_runs_when_due(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1);
    struct dval vals[3];
    struct dtask d[3];
    memset(vals, 0, sizeof vals);
    memset(d, 0, sizeof d);
    assert_int_equal(submit_after_in(&d[0], p, 30 * MS, &vals[0]), 0);
    assert_int_equal(submit_after_in(&d[1], p, 5 * MS, &vals[1]), 0);
    struct dval cv = {0};
    struct chain c = {.pool = p, .val = &cv};
    als_run(store, &cv, chain_start, &c);

    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    for (size_t i = 0; i < 2; i++)
        assert_ran_once(&d[i], "timer", i);
    assert_int_equal(atomic_load(&c.next), 5);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(c.d[i].rc, 0); /* submits from a task during DRAIN */
        assert_ran_once(&c.d[i], "chain link", i);
    }
    assert_destroyed_once(vals, 2);
    assert_int_equal(atomic_load(&cv.destroyed), 1);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 6);
    assert_int_equal(s.completed, 6);
    assert_int_equal(s.cancelled, 0);
    assert_balanced(&s);
    als_pool_free(p);

    /* als_pool_free alone: a DRAIN shutdown. */
    p = new_pool(2);
    assert_int_equal(submit_after_in(&d[2], p, 10 * MS, &vals[2]), 0);
    als_pool_free(p);
    assert_ran_once(&d[2], "timer", 2);
    assert_int_equal(atomic_load(&vals[2].destroyed), 1);
}

/* While a DRAIN shutdown is in progress a running task may still submit a
 * delayed task (accepted, run when due); outsiders get ALS_ESHUTDOWN.
 * The outsider here probes with delayed tasks until the pool refuses:
 * the probes it got in are ordinary delayed tasks and run too. */
struct during {
    als_pool_t *pool;
    struct gate gate;
    struct dval val;
    struct dtask d;            /* submitted by the gated task */
    /* Probes share one record: they run in an empty context. */
    _Atomic int probe_runs;
    _Atomic int probe_bad;
    int nprobes;
    int last_rc;
};

static int gated_submitter(void *arg)
{
    struct during *du = arg;
    gate_pass(&du->gate);
    submit_after_in(&du->d, du->pool, 5 * MS, &du->val);
    return 0;
}

static int probe_fn(void *arg)
{
    struct during *du = arg;
    if (als_get(store) != NULL || als_pool_current() != du->pool)
        atomic_store(&du->probe_bad, 1);
    atomic_fetch_add(&du->probe_runs, 1);
    return 0;
}

static void *prober(void *arg)
{
    struct during *du = arg;
    for (;;) {
        int rc = als_submit_after(du->pool, MS, probe_fn, du);
        if (rc != 0) {
            du->last_rc = rc;
            break;
        }
        du->nprobes++;
    }
    gate_open(&du->gate);
    return NULL;
}

static void test_submit_during_drain_shutdown(void **state)
{
    (void)state;
    struct during *du = calloc(1, sizeof *du);
    assert_non_null(du);
    du->pool = new_pool(1);
    gate_init(&du->gate);
    assert_int_equal(als_submit(du->pool, gated_submitter, du), 0);
    gate_await_arrivals(&du->gate, 1);

    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, prober, du), 0);
    assert_int_equal(als_pool_shutdown(du->pool, ALS_SHUTDOWN_DRAIN), 0);
    assert_int_equal(pthread_join(th, NULL), 0);

    assert_int_equal(du->last_rc, ALS_ESHUTDOWN);
    assert_int_equal(du->d.rc, 0);
    assert_ran_once(&du->d, "delayed task from a draining task", 0);
    assert_int_equal(atomic_load(&du->val.destroyed), 1);
    assert_int_equal(atomic_load(&du->probe_runs), du->nprobes);
    assert_int_equal(atomic_load(&du->probe_bad), 0);

    als_pool_stats s;
    get_stats(du->pool, &s);
    assert_int_equal(s.submitted, (uint64_t)du->nprobes + 2);
    assert_int_equal(s.completed, (uint64_t)du->nprobes + 2);
    assert_balanced(&s);
    als_pool_free(du->pool);
    gate_destroy(&du->gate);
    free(du);
}

/* A failing delayed task counts as failed and calls on_error on the
 * worker, in the context it was submitted with. */
struct errs {
    _Atomic int calls;
    _Atomic int last_result;
    _Atomic(void *) last_arg;
    _Atomic(void *) seen;
};

static void on_error(int result, void *arg, void *user)
{
    struct errs *e = user;
    atomic_store(&e->last_result, result);
    atomic_store(&e->last_arg, arg);
    atomic_store(&e->seen, als_get(store));
    atomic_fetch_add(&e->calls, 1);
}

static void test_failing_delayed_task(void **state)
{
    (void)state;
    struct errs e = {0};
    als_pool_options o = {.threads = 2, .on_error = on_error, .user = &e};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    struct dval v = {0}, ok = {0};
    struct dtask d = {.result = 42}, fine = {0};
    assert_int_equal(submit_after_in(&d, p, 2 * MS, &v), 0);
    assert_int_equal(submit_after_in(&fine, p, 1 * MS, &ok), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_ran_once(&d, "failing timer", 0);
    assert_ran_once(&fine, "timer", 1);
    assert_int_equal(atomic_load(&e.calls), 1);
    assert_int_equal(atomic_load(&e.last_result), 42);
    assert_ptr_equal(atomic_load(&e.last_arg), &d);
    assert_ptr_equal(atomic_load(&e.seen), &v);
    assert_int_equal(atomic_load(&v.destroyed), 1);
    assert_int_equal(atomic_load(&ok.destroyed), 1);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 2);
    assert_int_equal(s.completed, 1);
    assert_int_equal(s.failed, 1);
    assert_balanced(&s);
    als_pool_free(p);
}

/* ---- allocation failures ---------------------------------------------- */

/* Fails the n-th allocation of one submit, for n = 1, 2, ... until the
 * submit succeeds: every failure is ALS_ENOMEM with nothing accepted (the
 * counts do not move) and the value is still destroyed exactly once.
 * Returns the number of failing steps. Timers wait an hour so that no
 * worker runs (and allocates) while injection is armed. */
static int enomem_sweep(als_pool_t *p, struct dtask *d, struct dval *vals, int max,
                        uint64_t submitted_before)
{
    for (int n = 1; n <= max; n++) {
        d[n - 1] = (struct dtask){0};
        d[n - 1].pool = p;
        d[n - 1].delay = HOUR;
        d[n - 1].expect = &vals[n - 1];
        d[n - 1].rc = -100;
        als__test_fail_alloc(n, false);
        als_run(store, &vals[n - 1], submit_after_body, &d[n - 1]);
        als__test_fail_alloc(0, false);
        als_pool_stats s;
        get_stats(p, &s);
        if (d[n - 1].rc == 0) {
            assert_int_equal(s.submitted, submitted_before + 1);
            assert_int_equal(atomic_load(&vals[n - 1].destroyed), 0);
            return n - 1;
        }
        assert_int_equal(d[n - 1].rc, ALS_ENOMEM);
        assert_int_equal(s.submitted, submitted_before);
        assert_int_equal(s.queued, submitted_before);
        assert_int_equal(atomic_load(&vals[n - 1].destroyed), 1);
    }
    fail_msg("the submit still fails after %d injected failures", max);
    return -1;
}

static int reset_injection(void **state)
{
    (void)state;
    if (als__test_fail_alloc)
        als__test_fail_alloc(0, false);
    return 0;
}

static void test_alloc_failure(void **state)
{
    (void)state;
    if (!als__test_fail_alloc)
        skip();
    enum { MAXF = 16, FILL = 63 };
    als_pool_t *p = new_pool(1);
    struct dtask *d = calloc(2 * MAXF + FILL, sizeof *d);
    struct dval *vals = calloc(2 * MAXF + FILL, sizeof *vals);
    assert_non_null(d);
    assert_non_null(vals);

    /* The first timer: allocates the heap. */
    int f1 = enomem_sweep(p, d, vals, MAXF, 0);
    assert_true(f1 >= 1);
    /* Fill the heap to its first capacity (64), then the next one grows it. */
    for (int i = 0; i < FILL; i++)
        assert_int_equal(submit_after_in(&d[MAXF + i], p, HOUR, &vals[MAXF + i]), 0);
    int f2 = enomem_sweep(p, d + MAXF + FILL, vals + MAXF + FILL, MAXF, 1 + FILL);
    assert_true(f2 >= 1);

    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL), 0);
    for (int i = 0; i < 2 * MAXF + FILL; i++)
        assert_int_equal(atomic_load(&d[i].runs), 0);
    for (int i = 0; i < 2 * MAXF + FILL; i++) {
        bool used = i <= f1 || (i >= MAXF && i <= MAXF + FILL + f2);
        assert_int_equal(atomic_load(&vals[i].destroyed), used ? 1 : 0);
    }
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 2 + FILL);
    assert_int_equal(s.cancelled, 2 + FILL);
    assert_balanced(&s);
    als_pool_free(p);
    free(d);
    free(vals);
}

int main(void)
{
    als_options o = {.name = "delay", .destroy = dval_destroy};
    store = als_new(&o);
    if (!store)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_context_and_lower_bound),
        cmocka_unit_test(test_many_timers),
        cmocka_unit_test(test_pending_counts_and_cancel),
        cmocka_unit_test(test_cancel_mixed),
        cmocka_unit_test(test_drain_waits),
        cmocka_unit_test(test_drain_shutdown_runs_when_due),
        cmocka_unit_test(test_submit_during_drain_shutdown),
        cmocka_unit_test(test_failing_delayed_task),
        cmocka_unit_test_teardown(test_alloc_failure, reset_injection),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    als_free(store);
    return rc;
}
