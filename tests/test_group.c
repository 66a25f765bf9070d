/*
 * Task groups (issue 4, semantics 4, 5, 6 and 8).
 *
 * - als_group_wait returns once every task of the group has finished: 0
 *   when all succeeded, else ALS_ETASK with the first non-zero result in
 *   completion order from als_group_first_error (forced with gates: a
 *   later-submitted task that fails first wins), else ALS_ECANCELED when
 *   tasks were cancelled and none failed; a failure wins over cancellations
 *   whatever the order. ALS_ETIMEDOUT after a timeout; ALS_EINVAL for NULL.
 *   A task returning an ALS_E* code (-6 = ALS_ETIMEDOUT) is still reported
 *   as ALS_ETASK: the two channels never mix.
 * - Tasks add tasks to their own group (a tree of 511, counted exactly at
 *   the moment the wait returns); groups span pools; several threads may
 *   wait at once; a group is reusable after a wait.
 * - Group tasks are pool tasks: they count in the pool's stats, a failing
 *   one calls on_error (in the context it was submitted with).
 * - Freeing a group with tasks pending (from another thread) is safe: they
 *   still run.
 * - Waiting from inside a task of a 1-thread pool does not deadlock: the
 *   waiting worker runs the group's queued tasks itself (asserted: they ran
 *   on the waiter's thread); fork-join with every worker waiting finishes.
 * - Values captured by group tasks are destroyed exactly once, cancelled
 *   or not; allocation failures (test builds) answer NULL / ALS_ENOMEM and
 *   leave the group consistent.
 *
 * Assertions run on the main thread only, after a wait, drain, shutdown or
 * join; tasks record in atomics.
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

extern long als__test_fail_alloc(long n, bool sticky) __attribute__((weak));

#define MS 1000000ll

/* ---- helpers ---------------------------------------------------------- */

#include "gate.h"
#include "pool_helpers.h"

static int open_task(void *arg)
{
    gate_open(arg);
    return 0;
}

/* on_error's log: results, args and the context seen, in call order. */
struct errlog {
    _Atomic int n;
    int result[64];
    void *arg[64];
    void *ctx[64];
};

static als_t *store;

static void on_error(int result, void *arg, void *user)
{
    struct errlog *e = user;
    int i = atomic_fetch_add(&e->n, 1);
    if (i < 64) {
        e->result[i] = result;
        e->arg[i] = arg;
        e->ctx[i] = als_get(store);
    }
}

static als_pool_t *new_pool(unsigned threads, struct errlog *e)
{
    als_pool_options o = {.threads = threads, .on_error = e ? on_error : NULL, .user = e};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* A group task's record. Values of the destroy-owning store are struct
 * dval (pool_helpers.h). */
struct gt {
    struct gate *gate;         /* passed first, if set */
    struct gate *opens;        /* if set: submits a task that opens it */
    int result;                /* returned */
    void *expect;              /* als_get(store) inside */
    als_pool_t *pool;          /* where it must run */
    _Atomic int runs;
    _Atomic int bad_ctx;
    _Atomic int bad_pool;
    int open_rc;
    pthread_t thread;
};

static int gt_fn(void *arg)
{
    struct gt *t = arg;
    if (t->gate)
        gate_pass(t->gate);
    t->thread = pthread_self();
    if (als_get(store) != t->expect)
        atomic_store(&t->bad_ctx, 1);
    if (als_pool_current() != t->pool)
        atomic_store(&t->bad_pool, 1);
    if (t->opens)
        t->open_rc = als_submit(t->pool, open_task, t->opens);
    atomic_fetch_add(&t->runs, 1);
    return t->result;
}

struct gsub {
    als_group_t *g;
    als_pool_t *pool;
    als_task_fn fn;
    void *arg;
    int rc;
};

static void *do_gsubmit(void *arg)
{
    struct gsub *s = arg;
    s->rc = als_group_submit(s->g, s->pool, s->fn, s->arg);
    return NULL;
}

/* Submits t to g on p with store bound to `value`. */
static int gsubmit_in(als_group_t *g, als_pool_t *p, struct gt *t, struct dval *value)
{
    t->expect = value;
    t->pool = p;
    struct gsub s = {g, p, gt_fn, t, -100};
    als_run(store, value, do_gsubmit, &s);
    return s.rc;
}

/* The wait reports a task failure, and the failing task's own code is
 * available apart. */
static void assert_task_failed(als_group_t *g, int64_t timeout, int code)
{
    assert_int_equal(als_group_wait(g, timeout), ALS_ETASK);
    int first = -100;
    assert_int_equal(als_group_first_error(g, &first), 0);
    assert_int_equal(first, code);
}

static void assert_gt_ran(struct gt *t, int times, const char *what, size_t i)
{
    if (atomic_load(&t->runs) != times)
        fail_msg("%s %zu: ran %d times, expected %d", what, i, atomic_load(&t->runs), times);
    if (atomic_load(&t->bad_ctx))
        fail_msg("%s %zu: wrong context", what, i);
    if (atomic_load(&t->bad_pool))
        fail_msg("%s %zu: not on its pool's worker", what, i);
}

static int reset_injection(void **state)
{
    (void)state;
    if (als__test_fail_alloc)
        als__test_fail_alloc(0, false);
    return 0;
}

/* ---- arguments and trivial groups ------------------------------------- */

static void test_arguments(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1, NULL);
    als_group_t *g = als_group_new();
    assert_non_null(g);
    int x = 0;
    assert_int_equal(als_group_submit(NULL, p, noop_task, &x), ALS_EINVAL);
    assert_int_equal(als_group_submit(g, NULL, noop_task, &x), ALS_EINVAL);
    assert_int_equal(als_group_submit(g, p, NULL, &x), ALS_EINVAL);
    assert_int_equal(als_group_wait(NULL, -1), ALS_EINVAL);
    assert_int_equal(als_group_wait(NULL, 0), ALS_EINVAL);
    int first = -100;
    assert_int_equal(als_group_first_error(NULL, &first), ALS_EINVAL);
    assert_int_equal(first, -100); /* untouched */
    assert_int_equal(als_group_first_error(g, NULL), ALS_EINVAL);
    als_group_free(NULL);

    /* Empty: nothing to wait for, nothing failed. */
    assert_int_equal(als_group_wait(g, -1), 0);
    assert_int_equal(als_group_wait(g, 0), 0);
    assert_int_equal(als_group_first_error(g, &first), 0);
    assert_int_equal(first, 0);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 0);

    /* A shut-down pool refuses; the group is left with nothing pending. */
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    struct dval v = {0};
    struct gt t = {0};
    assert_int_equal(gsubmit_in(g, p, &t, &v), ALS_ESHUTDOWN);
    assert_int_equal(als_group_wait(g, 0), 0);
    assert_int_equal(als_group_wait(g, -1), 0);
    assert_int_equal(atomic_load(&t.runs), 0);
    assert_int_equal(atomic_load(&v.destroyed), 1);
    get_stats(p, &s);
    assert_int_equal(s.submitted, 0);
    als_group_free(g);
    als_pool_free(p);
}

/* When als_group_wait returns, a value that only the group's tasks held
 * has been destroyed: workers drop a finished group task's context before
 * they report it to the group. */
static void test_wait_sees_destroy(void **state)
{
    (void)state;
    enum { N = 8 };
    als_pool_t *p = new_pool(1, NULL);
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gt t[N];
    struct dval v[N];
    memset(t, 0, sizeof t);
    memset(v, 0, sizeof v);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(gsubmit_in(g, p, &t[i], &v[i]), 0);
    assert_int_equal(als_group_wait(g, -1), 0);
    for (size_t i = 0; i < N; i++)
        assert_gt_ran(&t[i], 1, "task", i);
    assert_destroyed_once(v, N); /* no drain in between */
    als_group_free(g);
    als_pool_free(p);
}

static void test_all_succeed(void **state)
{
    (void)state;
    enum { N = 64 };
    als_pool_t *p = new_pool(2, NULL);
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gt t[2 * N];
    struct dval v[2 * N];
    memset(t, 0, sizeof t);
    memset(v, 0, sizeof v);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(gsubmit_in(g, p, &t[i], &v[i]), 0);
    assert_int_equal(als_group_wait(g, -1), 0);
    /* Exact when the wait returns: no drain in between. */
    for (size_t i = 0; i < N; i++)
        assert_gt_ran(&t[i], 1, "task", i);

    /* Reusable after a wait. */
    for (size_t i = N; i < 2 * N; i++)
        assert_int_equal(gsubmit_in(g, p, &t[i], &v[i]), 0);
    assert_int_equal(als_group_wait(g, -1), 0);
    for (size_t i = 0; i < 2 * N; i++)
        assert_gt_ran(&t[i], 1, "task", i);
    als_group_free(g);

    assert_int_equal(als_pool_drain(p), 0);
    assert_destroyed_once(v, 2 * N);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 2 * N);
    assert_int_equal(s.completed, 2 * N);
    assert_balanced(&s);
    als_pool_free(p);
}

/* ---- failures --------------------------------------------------------- */

/* One worker: completion order is submission order. The first failure is
 * returned; every failure calls on_error in its submit-time context. */
static void test_first_failure_in_order(void **state)
{
    (void)state;
    static const int results[] = {0, 5, 0, 7, 0, 9};
    enum { N = sizeof results / sizeof results[0] };
    struct errlog e = {0};
    als_pool_t *p = new_pool(1, &e);
    struct gate hold;
    block_pool(p, &hold); /* everything queues, in order, behind it */
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gt t[N];
    struct dval v[N];
    memset(t, 0, sizeof t);
    memset(v, 0, sizeof v);
    for (size_t i = 0; i < N; i++) {
        t[i].result = results[i];
        assert_int_equal(gsubmit_in(g, p, &t[i], &v[i]), 0);
    }
    assert_int_equal(als_group_wait(g, 0), ALS_ETIMEDOUT);
    gate_open(&hold);
    assert_task_failed(g, -1, 5);
    assert_task_failed(g, 0, 5); /* stays */
    for (size_t i = 0; i < N; i++)
        assert_gt_ran(&t[i], 1, "task", i);

    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&e.n), 3);
    const size_t failing[] = {1, 3, 5};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(e.result[i], results[failing[i]]);
        assert_ptr_equal(e.arg[i], &t[failing[i]]);
        assert_ptr_equal(e.ctx[i], &v[failing[i]]);
    }
    assert_destroyed_once(v, N);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, N + 1);
    assert_int_equal(s.failed, 3);
    assert_int_equal(s.completed, N + 1 - 3);
    assert_balanced(&s);
    als_group_free(g);
    als_pool_free(p);
    gate_destroy(&hold);
}

/* Tasks whose own codes are ALS_E* values: the wait still says ALS_ETASK
 * (not "timed out" for a task returning -6), and the code comes apart.
 * Every code the library defines, and its neighbours, one group each. */
static void test_task_code_is_not_a_library_code(void **state)
{
    (void)state;
    static const int codes[] = {ALS_EINVAL, ALS_ENOMEM, ALS_EFULL, ALS_ESHUTDOWN,
                                ALS_EDEADLK, ALS_ETIMEDOUT, ALS_ECANCELED, ALS_ETASK,
                                -9, 1, -1000};
    als_pool_t *p = new_pool(1, NULL);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        als_group_t *g = als_group_new();
        assert_non_null(g);
        struct gt t = {.result = codes[i]};
        struct dval v = {0};
        assert_int_equal(gsubmit_in(g, p, &t, &v), 0);
        assert_task_failed(g, -1, codes[i]);
        assert_gt_ran(&t, 1, "task", i);
        als_group_free(g);
    }
    als_pool_free(p);
}

/* Two workers, order forced: A (submitted first, fails with 5) is held on
 * worker X; B (fails with 7) runs on worker Y and, before returning,
 * submits the task that releases A. That task can only run on Y (X is
 * held), after B has finished: B completes first and its 7 is returned. */
static void test_first_failure_completion_order(void **state)
{
    (void)state;
    struct errlog e = {0};
    als_pool_t *p = new_pool(2, &e);
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gate ga;
    gate_init(&ga);
    struct gt a = {.gate = &ga, .result = 5}, b = {.opens = &ga, .result = 7};
    struct dval va = {0}, vb = {0};
    assert_int_equal(gsubmit_in(g, p, &a, &va), 0);
    gate_await_arrivals(&ga, 1);
    assert_int_equal(gsubmit_in(g, p, &b, &vb), 0);
    assert_task_failed(g, -1, 7);
    assert_gt_ran(&a, 1, "A", 0);
    assert_gt_ran(&b, 1, "B", 0);
    assert_int_equal(b.open_rc, 0);
    assert_false(pthread_equal(a.thread, b.thread));

    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&e.n), 2);
    assert_int_equal(e.result[0], 7);
    assert_ptr_equal(e.arg[0], &b);
    assert_ptr_equal(e.ctx[0], &vb);
    assert_int_equal(e.result[1], 5);
    assert_ptr_equal(e.arg[1], &a);
    assert_ptr_equal(e.ctx[1], &va);
    assert_int_equal(atomic_load(&va.destroyed), 1);
    assert_int_equal(atomic_load(&vb.destroyed), 1);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 3); /* A, B and the opener */
    assert_int_equal(s.failed, 2);
    assert_int_equal(s.completed, 1);
    assert_balanced(&s);
    als_group_free(g);
    als_pool_free(p);
    gate_destroy(&ga);
}

/* ---- cancellation ----------------------------------------------------- */

/* Tasks cancelled by a CANCEL shutdown and none failed: ALS_ECANCELED.
 * The held task belongs to the group and succeeds. */
static void test_cancelled_none_failed(void **state)
{
    (void)state;
    enum { N = 4 };
    als_pool_t *p = new_pool(1, NULL);
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gate hold;
    gate_init(&hold);
    struct gt t[N + 1];
    struct dval v[N + 1];
    memset(t, 0, sizeof t);
    memset(v, 0, sizeof v);
    t[0].gate = &hold;
    assert_int_equal(gsubmit_in(g, p, &t[0], &v[0]), 0);
    gate_await_arrivals(&hold, 1);
    for (size_t i = 1; i <= N; i++)
        assert_int_equal(gsubmit_in(g, p, &t[i], &v[i]), 0);

    int probes = cancel_shutdown_gated(p, &hold);
    assert_int_equal(als_group_wait(g, -1), ALS_ECANCELED);
    assert_int_equal(als_group_wait(g, 0), ALS_ECANCELED);
    assert_gt_ran(&t[0], 1, "held task", 0);
    for (size_t i = 1; i <= N; i++)
        assert_int_equal(atomic_load(&t[i].runs), 0);
    assert_destroyed_once(v, N + 1);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, N + 1 + (uint64_t)probes);
    assert_int_equal(s.cancelled, N + (uint64_t)probes);
    assert_int_equal(s.completed, 1);
    assert_balanced(&s);
    als_group_free(g);
    als_pool_free(p);
    gate_destroy(&hold);
}

/* A failure wins over cancellations, whether it completes before them
 * (the held task fails) or after them (a task on another pool, released
 * only once the cancelling shutdown is over). */
static void test_failure_beats_cancel(void **state)
{
    (void)state;
    for (int after = 0; after <= 1; after++) {
        als_pool_t *p = new_pool(1, NULL), *q = new_pool(1, NULL);
        als_group_t *g = als_group_new();
        assert_non_null(g);
        struct gate hold, late;
        gate_init(&hold);
        gate_init(&late);
        struct gt t[4];
        struct dval v[4];
        memset(t, 0, sizeof t);
        memset(v, 0, sizeof v);
        t[0].gate = &hold;
        t[0].result = after ? 0 : 9;
        assert_int_equal(gsubmit_in(g, p, &t[0], &v[0]), 0);
        gate_await_arrivals(&hold, 1);
        assert_int_equal(gsubmit_in(g, p, &t[1], &v[1]), 0);
        assert_int_equal(gsubmit_in(g, p, &t[2], &v[2]), 0);
        t[3].gate = &late;
        t[3].result = after ? 11 : 0;
        assert_int_equal(gsubmit_in(g, q, &t[3], &v[3]), 0);

        cancel_shutdown_gated(p, &hold);
        assert_int_equal(als_group_wait(g, 0), ALS_ETIMEDOUT); /* t[3] held */
        gate_open(&late);
        assert_task_failed(g, -1, after ? 11 : 9);
        assert_gt_ran(&t[0], 1, "held task", 0);
        assert_int_equal(atomic_load(&t[1].runs), 0);
        assert_int_equal(atomic_load(&t[2].runs), 0);
        assert_gt_ran(&t[3], 1, "task on the other pool", 3);
        als_group_free(g);
        als_pool_free(p);
        als_pool_free(q);
        assert_destroyed_once(v, 4);
        gate_destroy(&hold);
        gate_destroy(&late);
    }
}

/* ---- tasks adding tasks ----------------------------------------------- */

struct tree;
struct node {
    struct tree *t;
    unsigned idx;
    _Atomic int runs;
};

struct tree {
    als_group_t *g;
    als_pool_t *pool;
    unsigned n;                /* nodes: children of i are 2i+1, 2i+2 */
    int fail_at;               /* this node returns 3; -1: none */
    void *expect;
    struct node *nodes;
    _Atomic int runs;
    _Atomic int submit_errs;
    _Atomic int bad_ctx;
};

static int node_fn(void *arg)
{
    struct node *nd = arg;
    struct tree *t = nd->t;
    if (als_get(store) != t->expect)
        atomic_store(&t->bad_ctx, 1);
    for (unsigned c = 2 * nd->idx + 1; c <= 2 * nd->idx + 2 && c < t->n; c++)
        if (als_group_submit(t->g, t->pool, node_fn, &t->nodes[c]) != 0)
            atomic_fetch_add(&t->submit_errs, 1);
    atomic_fetch_add(&nd->runs, 1);
    atomic_fetch_add(&t->runs, 1);
    return (int)nd->idx == t->fail_at ? 3 : 0;
}

static void *tree_start(void *arg)
{
    struct tree *t = arg;
    return (void *)(intptr_t)als_group_submit(t->g, t->pool, node_fn, &t->nodes[0]);
}

static void run_tree(unsigned threads, int fail_at)
{
    enum { NODES = 511 };
    als_pool_t *p = new_pool(threads, NULL);
    struct dval v = {0};
    struct tree t = {.g = als_group_new(), .pool = p, .n = NODES, .fail_at = fail_at,
                     .expect = &v};
    assert_non_null(t.g);
    t.nodes = calloc(NODES, sizeof *t.nodes);
    assert_non_null(t.nodes);
    for (unsigned i = 0; i < NODES; i++)
        t.nodes[i] = (struct node){.t = &t, .idx = i};
    assert_null(als_run(store, &v, tree_start, &t));
    if (fail_at < 0)
        assert_int_equal(als_group_wait(t.g, -1), 0);
    else
        assert_task_failed(t.g, -1, 3);
    /* Exact at the wait's return. */
    assert_int_equal(atomic_load(&t.runs), NODES);
    for (unsigned i = 0; i < NODES; i++)
        assert_int_equal(atomic_load(&t.nodes[i].runs), 1);
    assert_int_equal(atomic_load(&t.submit_errs), 0);
    assert_int_equal(atomic_load(&t.bad_ctx), 0);
    als_group_free(t.g);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&v.destroyed), 1);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, NODES);
    assert_int_equal(s.failed, fail_at < 0 ? 0 : 1);
    assert_balanced(&s);
    als_pool_free(p);
    free(t.nodes);
}

static void test_tasks_add_tasks(void **state)
{
    (void)state;
    run_tree(2, -1);
    run_tree(1, -1);
    run_tree(2, 300); /* a leaf fails */
    run_tree(1, 0);   /* the root fails */
}

/* ---- free with tasks pending ------------------------------------------ */

struct freer {
    als_group_t **g;
    size_t n;
};

static void *freer_main(void *arg)
{
    struct freer *f = arg;
    for (size_t i = 0; i < f->n; i++)
        als_group_free(f->g[i]);
    return NULL;
}

static void test_free_with_pending(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1, NULL);
    struct gate hold;
    block_pool(p, &hold);
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gt t[3];
    struct dval v[3];
    memset(t, 0, sizeof t);
    memset(v, 0, sizeof v);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(gsubmit_in(g, p, &t[i], &v[i]), 0);
    /* Freed from another thread while all three are queued. */
    struct freer fr = {&g, 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, freer_main, &fr), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    gate_open(&hold);
    assert_int_equal(als_pool_drain(p), 0);
    for (size_t i = 0; i < 3; i++)
        assert_gt_ran(&t[i], 1, "task of a freed group", i);
    assert_destroyed_once(v, 3);
    als_pool_free(p);
    gate_destroy(&hold);

    /* Frees racing completions. */
    enum { GROUPS = 300, PER = 4 };
    p = new_pool(2, NULL);
    als_group_t **gs = calloc(GROUPS, sizeof *gs);
    struct gt *ts = calloc(GROUPS * PER, sizeof *ts);
    assert_non_null(gs);
    assert_non_null(ts);
    for (size_t i = 0; i < GROUPS; i++) {
        gs[i] = als_group_new();
        assert_non_null(gs[i]);
        for (size_t k = 0; k < PER; k++) {
            ts[i * PER + k].pool = p;
            assert_int_equal(als_group_submit(gs[i], p, gt_fn, &ts[i * PER + k]), 0);
        }
    }
    fr = (struct freer){gs, GROUPS};
    assert_int_equal(pthread_create(&th, NULL, freer_main, &fr), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(als_pool_drain(p), 0);
    for (size_t i = 0; i < GROUPS * PER; i++)
        assert_gt_ran(&ts[i], 1, "task of a freed group", i);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, GROUPS * PER);
    assert_int_equal(s.completed, GROUPS * PER);
    assert_balanced(&s);
    als_pool_free(p);
    free(gs);
    free(ts);
}

/* ---- waiting on a worker ---------------------------------------------- */

/* A task of a 1-thread pool fills a group on its own pool and waits. */
struct inner_wait {
    als_pool_t *pool;
    struct gt t[8];
    struct dval v[8];
    int submit_errs;
    int wait_rc;
    int runs_at_return;
    void *ctx_after;
    pthread_t thread;
};

static int inner_wait_task(void *arg)
{
    struct inner_wait *iw = arg;
    iw->thread = pthread_self();
    als_group_t *g = als_group_new();
    if (!g) {
        iw->wait_rc = -100;
        return 0;
    }
    for (size_t i = 0; i < 8; i++)
        if (gsubmit_in(g, iw->pool, &iw->t[i], &iw->v[i]) != 0)
            iw->submit_errs++;
    iw->wait_rc = als_group_wait(g, -1);
    for (size_t i = 0; i < 8; i++)
        iw->runs_at_return += atomic_load(&iw->t[i].runs);
    iw->ctx_after = als_get(store);
    als_group_free(g);
    return 0;
}

static void *submit_plain(void *arg)
{
    struct gsub *s = arg;
    s->rc = als_submit(s->pool, s->fn, s->arg);
    return NULL;
}

static void test_wait_on_worker(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1, NULL);
    struct inner_wait *iw = calloc(1, sizeof *iw);
    assert_non_null(iw);
    iw->pool = p;
    struct dval outer = {0};
    struct gsub s = {NULL, p, inner_wait_task, iw, -100};
    als_run(store, &outer, submit_plain, &s);
    assert_int_equal(s.rc, 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(iw->submit_errs, 0);
    assert_int_equal(iw->wait_rc, 0);
    assert_int_equal(iw->runs_at_return, 8);
    assert_ptr_equal(iw->ctx_after, &outer); /* the waiter's context is intact */
    for (size_t i = 0; i < 8; i++) {
        assert_gt_ran(&iw->t[i], 1, "inner task", i);
        assert_true(pthread_equal(iw->t[i].thread, iw->thread)); /* run by the waiter */
    }
    assert_destroyed_once(iw->v, 8);
    assert_int_equal(atomic_load(&outer.destroyed), 1);
    als_pool_stats st;
    get_stats(p, &st);
    assert_int_equal(st.submitted, 9);
    assert_int_equal(st.completed, 9);
    assert_balanced(&st);
    als_pool_free(p);
    free(iw);
}

/* Fork-join: every task makes a group of two children and waits for it,
 * so every worker of the pool ends up waiting. */
struct fj {
    als_pool_t *pool;
    int depth;
    _Atomic int *runs;
};

static int fj_fn(void *arg)
{
    struct fj *f = arg;
    atomic_fetch_add(f->runs, 1);
    if (f->depth == 0)
        return 0;
    als_group_t *g = als_group_new();
    if (!g)
        return 100;
    struct fj child = {f->pool, f->depth - 1, f->runs};
    int rc = 0;
    for (int i = 0; i < 2; i++)
        if (als_group_submit(g, f->pool, fj_fn, &child) != 0)
            rc = 101;
    int w = als_group_wait(g, -1);
    als_group_free(g);
    return rc ? rc : w;
}

static void test_fork_join_all_waiting(void **state)
{
    (void)state;
    enum { DEPTH = 7, ROOTS = 4 };
    for (unsigned threads = 1; threads <= 2; threads++) {
        als_pool_t *p = new_pool(threads, NULL);
        _Atomic int runs = 0;
        struct fj root = {p, DEPTH, &runs};
        als_group_t *g = als_group_new();
        assert_non_null(g);
        for (int i = 0; i < ROOTS; i++)
            assert_int_equal(als_group_submit(g, p, fj_fn, &root), 0);
        assert_int_equal(als_group_wait(g, -1), 0);
        assert_int_equal(atomic_load(&runs), ROOTS * ((1 << (DEPTH + 1)) - 1));
        als_group_free(g);
        als_pool_free(p);
    }
}

/* ---- timeouts and waiters --------------------------------------------- */

struct gwaiter {
    als_group_t *g;
    int64_t timeout;
    int rc;
};

static void *gwaiter_main(void *arg)
{
    struct gwaiter *w = arg;
    w->rc = als_group_wait(w->g, w->timeout);
    return NULL;
}

static int gwaiter_task(void *arg)
{
    gwaiter_main(arg);
    return 0;
}

static void test_timeouts_and_waiters(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1, NULL), *q = new_pool(1, NULL);
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gate ga;
    gate_init(&ga);
    struct gt t[2];
    struct dval v[2];
    memset(t, 0, sizeof t);
    memset(v, 0, sizeof v);
    t[0].gate = &ga;
    t[1].result = 4;
    assert_int_equal(gsubmit_in(g, p, &t[0], &v[0]), 0);
    gate_await_arrivals(&ga, 1);
    assert_int_equal(gsubmit_in(g, p, &t[1], &v[1]), 0); /* queued behind t[0] */

    assert_int_equal(als_group_wait(g, 0), ALS_ETIMEDOUT);
    assert_int_equal(als_group_wait(g, 1), ALS_ETIMEDOUT);
    assert_int_equal(als_group_wait(g, 2 * MS), ALS_ETIMEDOUT);
    /* A worker of another pool, with a timeout. */
    struct gwaiter wq = {g, 2 * MS, -100};
    assert_int_equal(als_submit(q, gwaiter_task, &wq), 0);
    assert_int_equal(als_pool_drain(q), 0);
    assert_int_equal(wq.rc, ALS_ETIMEDOUT);
    assert_int_equal(atomic_load(&t[1].runs), 0);

    /* Three threads and a worker of q wait without a limit. */
    struct gwaiter w[4];
    pthread_t th[3];
    for (int i = 0; i < 4; i++)
        w[i] = (struct gwaiter){g, -1, -100};
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, gwaiter_main, &w[i]), 0);
    assert_int_equal(als_submit(q, gwaiter_task, &w[3]), 0);
    gate_open(&ga);
    assert_task_failed(g, -1, 4);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(als_pool_drain(q), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w[i].rc, ALS_ETASK);
    assert_gt_ran(&t[0], 1, "held task", 0);
    assert_gt_ran(&t[1], 1, "queued task", 1);
    als_group_free(g);
    als_pool_free(p);
    als_pool_free(q);
    assert_destroyed_once(v, 2);
    gate_destroy(&ga);
}

/* One group, tasks on two pools: the wait covers both. */
static void test_across_pools(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1, NULL), *q = new_pool(2, NULL);
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gate ga;
    gate_init(&ga);
    struct gt t[6];
    struct dval v[6];
    memset(t, 0, sizeof t);
    memset(v, 0, sizeof v);
    t[5].gate = &ga;
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(gsubmit_in(g, i % 2 ? q : p, &t[i], &v[i]), 0);
    gate_await_arrivals(&ga, 1);
    assert_int_equal(als_group_wait(g, 0), ALS_ETIMEDOUT);
    gate_open(&ga);
    assert_int_equal(als_group_wait(g, -1), 0);
    for (size_t i = 0; i < 6; i++)
        assert_gt_ran(&t[i], 1, "task", i);
    als_group_free(g);
    als_pool_stats s;
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(als_pool_drain(q), 0);
    get_stats(p, &s);
    assert_int_equal(s.submitted, 3);
    get_stats(q, &s);
    assert_int_equal(s.submitted, 3);
    als_pool_free(p);
    als_pool_free(q);
    assert_destroyed_once(v, 6);
    gate_destroy(&ga);
}

/* ---- allocation failures ---------------------------------------------- */

static void test_alloc_failure(void **state)
{
    (void)state;
    if (!als__test_fail_alloc)
        skip();
    als__test_fail_alloc(1, false);
    als_group_t *none = als_group_new();
    als__test_fail_alloc(0, false);
    assert_null(none);

    enum { MAXF = 16 };
    als_pool_t *p = new_pool(1, NULL);
    struct gate hold;
    block_pool(p, &hold); /* no worker allocates while injection is armed */
    als_group_t *g = als_group_new();
    assert_non_null(g);
    struct gt t[MAXF];
    struct dval v[MAXF];
    memset(t, 0, sizeof t);
    memset(v, 0, sizeof v);
    size_t used = 0;
    for (size_t n = 1; n <= MAXF && !used; n++) {
        als__test_fail_alloc((long)n, false);
        int rc = gsubmit_in(g, p, &t[n - 1], &v[n - 1]);
        als__test_fail_alloc(0, false);
        als_pool_stats s;
        get_stats(p, &s);
        if (rc == 0) {
            used = n;
            assert_int_equal(s.submitted, 2);
            assert_int_equal(als_group_wait(g, 0), ALS_ETIMEDOUT); /* pending */
        } else {
            assert_int_equal(rc, ALS_ENOMEM);
            assert_int_equal(s.submitted, 1);
            assert_int_equal(atomic_load(&v[n - 1].destroyed), 1);
            assert_int_equal(als_group_wait(g, 0), 0); /* nothing left pending */
        }
    }
    assert_true(used > 1);
    gate_open(&hold);
    assert_int_equal(als_group_wait(g, -1), 0);
    assert_int_equal(als_pool_drain(p), 0);
    for (size_t i = 0; i < MAXF; i++) {
        assert_int_equal(atomic_load(&t[i].runs), i + 1 == used ? 1 : 0);
        assert_int_equal(atomic_load(&v[i].destroyed), i < used ? 1 : 0);
    }
    als_group_free(g);
    als_pool_free(p);
    gate_destroy(&hold);
}

int main(void)
{
    als_options o = {.name = "group", .destroy = dval_destroy};
    store = als_new(&o);
    if (!store)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_all_succeed),
        cmocka_unit_test(test_wait_sees_destroy),
        cmocka_unit_test(test_first_failure_in_order),
        cmocka_unit_test(test_first_failure_completion_order),
        cmocka_unit_test(test_task_code_is_not_a_library_code),
        cmocka_unit_test(test_cancelled_none_failed),
        cmocka_unit_test(test_failure_beats_cancel),
        cmocka_unit_test(test_tasks_add_tasks),
        cmocka_unit_test(test_free_with_pending),
        cmocka_unit_test(test_wait_on_worker),
        cmocka_unit_test(test_fork_join_all_waiting),
        cmocka_unit_test(test_timeouts_and_waiters),
        cmocka_unit_test(test_across_pools),
        cmocka_unit_test_teardown(test_alloc_failure, reset_injection),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    als_free(store);
    return rc;
}
