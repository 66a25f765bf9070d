/*
 * Futures and continuations (issue 4, semantics 2, 3, 5, 6 and 9).
 *
 * - als_submit_future: the fn runs on a worker in the submitter's context;
 *   als_future_wait gives 0 and the result (a NULL result pointer is
 *   accepted), ALS_ETIMEDOUT for a task held by a condvar gate, and
 *   ALS_ECANCELED when a CANCEL shutdown drops the task (waiters wake).
 * - als_future_then: fn(result of the source) runs on the given pool inside
 *   the context captured when `then` was called (not the completer's), also
 *   when the source completed already (still asynchronous: it runs on a
 *   worker, never inside the `then` call); chains, fan-out, other pools;
 *   `then` on a cancelled future gives 0 and a cancelled future whose fn
 *   never runs; on a shut-down pool ALS_ESHUTDOWN; NULL arguments
 *   ALS_EINVAL.
 * - Releasing futures before completion, from another thread, is safe and
 *   cancels nothing.
 * - Waiting inside a task for a future of the same 1-thread pool does not
 *   deadlock. Observed (and asserted): the waiting worker runs the awaited
 *   task itself, nested inside the wait, whether it sits in the worker's
 *   own slot or in the shared ring; the waiting task's context is intact
 *   afterwards.
 * - Futures and continuations count in the pool's stats; values captured
 *   by futures and continuations are destroyed exactly once, cancelled or
 *   not (a destroy-owning store); allocation failures (test builds) answer
 *   ALS_ENOMEM with nothing run, accepted or leaked.
 *
 * How a fn finds its record: every value bound in the store is a `struct
 * rec`, and rec_fn records into whichever rec its context holds. A fn run
 * in the wrong context therefore bumps the wrong record (or none: it counts
 * as an orphan), and the exact per-record counts catch it. Assertions run
 * on the main thread only, after a wait, drain, shutdown or join.
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

static als_pool_t *new_pool(unsigned threads)
{
    als_pool_options o = {.threads = threads};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* The destroy-owning store; every value bound in it is a struct rec. */
static als_t *store;

struct rec {
    _Atomic int destroyed;     /* first: the store's destroy counts here */
    als_pool_t *pool;          /* where fn must run; NULL: anywhere */
    struct gate *gate;         /* fn passes it first, if set */
    uintptr_t add;             /* fn returns arg + add */
    _Atomic int *flag;         /* if set: must be non-zero when fn runs */
    _Atomic int runs;
    _Atomic int bad_pool;
    _Atomic int flag_was_zero;
    _Atomic uintptr_t arg;     /* what fn received */
    pthread_t thread;          /* where fn ran */
};

static _Atomic int orphans; /* fns that found no record in their context */

static void rec_destroy(void *v)
{
    atomic_fetch_add(&((struct rec *)v)->destroyed, 1);
}

static void rec_init(struct rec *r, als_pool_t *pool, uintptr_t add)
{
    memset(r, 0, sizeof *r);
    r->pool = pool;
    r->add = add;
}

static struct rec *recs_new(size_t n, als_pool_t *pool, uintptr_t add)
{
    struct rec *r = calloc(n, sizeof *r);
    assert_non_null(r);
    for (size_t i = 0; i < n; i++)
        rec_init(&r[i], pool, add);
    return r;
}

static void *rec_fn(void *arg)
{
    struct rec *r = als_get(store);
    if (!r) {
        atomic_fetch_add(&orphans, 1);
        return arg;
    }
    if (r->gate)
        gate_pass(r->gate);
    r->thread = pthread_self();
    atomic_store(&r->arg, (uintptr_t)arg);
    if (r->pool && als_pool_current() != r->pool)
        atomic_store(&r->bad_pool, 1);
    if (r->flag && !atomic_load(r->flag))
        atomic_store(&r->flag_was_zero, 1);
    atomic_fetch_add(&r->runs, 1);
    return (void *)((uintptr_t)arg + r->add);
}

/* Ran exactly once, on its pool, with `arg`. */
static void assert_rec_ran(struct rec *r, uintptr_t arg, const char *what)
{
    if (atomic_load(&r->runs) != 1)
        fail_msg("%s: ran %d times", what, atomic_load(&r->runs));
    if (atomic_load(&r->bad_pool))
        fail_msg("%s: not on its pool's worker", what);
    if (atomic_load(&r->arg) != arg)
        fail_msg("%s: got %#lx, expected %#lx", what, (unsigned long)atomic_load(&r->arg),
                 (unsigned long)arg);
}

static void assert_recs_destroyed_once(struct rec *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&r[i].destroyed) != 1)
            fail_msg("value %zu destroyed %d times", i, atomic_load(&r[i].destroyed));
}

/* Submits and thens inside a rec's context. */
struct call {
    als_pool_t *pool;
    als_fn fn;
    void *arg;
    als_future_t *src;
    als_future_t *out;
    int rc;
};

static void *do_submit(void *arg)
{
    struct call *c = arg;
    c->rc = als_submit_future(c->pool, c->fn, c->arg, &c->out);
    return NULL;
}

static void *do_then(void *arg)
{
    struct call *c = arg;
    c->rc = als_future_then(c->src, c->pool, c->fn, &c->out);
    return NULL;
}

static int try_fut_in(struct rec *r, als_pool_t *p, uintptr_t arg, als_future_t **out)
{
    struct call c = {.pool = p, .fn = rec_fn, .arg = (void *)arg, .out = *out, .rc = -100};
    als_run(store, r, do_submit, &c);
    *out = c.out;
    return c.rc;
}

static int try_then_in(struct rec *r, als_future_t *src, als_pool_t *p, als_future_t **out)
{
    struct call c = {.pool = p, .fn = rec_fn, .src = src, .out = *out, .rc = -100};
    als_run(store, r, do_then, &c);
    *out = c.out;
    return c.rc;
}

static als_future_t *fut_in(struct rec *r, als_pool_t *p, uintptr_t arg)
{
    als_future_t *f = NULL;
    assert_int_equal(try_fut_in(r, p, arg, &f), 0);
    assert_non_null(f);
    return f;
}

static als_future_t *then_in(struct rec *r, als_future_t *src, als_pool_t *p)
{
    als_future_t *f = NULL;
    assert_int_equal(try_then_in(r, src, p, &f), 0);
    assert_non_null(f);
    return f;
}

static void *wait_value(als_future_t *f)
{
    void *v = (void *)0xdead;
    assert_int_equal(als_future_wait(f, -1, &v), 0);
    return v;
}

/* After a failed submit or then, *out is what the caller put there or
 * NULL: never a future the caller would have to release. */
#define SENTINEL ((als_future_t *)(uintptr_t)0xdead)
static void assert_out_unset(als_future_t *out)
{
    if (out != NULL && out != SENTINEL)
        fail_msg("a failed call set *out to %p", (void *)out);
}

static void *ident(void *arg)
{
    return arg;
}

static int reset(void **state)
{
    (void)state;
    atomic_store(&orphans, 0);
    if (als__test_fail_alloc)
        als__test_fail_alloc(0, false);
    return 0;
}

static int check_orphans(void **state)
{
    (void)state;
    if (als__test_fail_alloc)
        als__test_fail_alloc(0, false);
    assert_int_equal(atomic_load(&orphans), 0);
    return 0;
}

/* ---- arguments -------------------------------------------------------- */

static void test_arguments(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1);
    als_future_t *f = NULL, *g = NULL;
    int x = 0;
    assert_int_equal(als_submit_future(NULL, ident, &x, &f), ALS_EINVAL);
    assert_int_equal(als_submit_future(p, NULL, &x, &f), ALS_EINVAL);
    assert_int_equal(als_submit_future(p, ident, &x, NULL), ALS_EINVAL);
    assert_out_unset(f);
    f = NULL;
    assert_int_equal(als_future_wait(NULL, -1, NULL), ALS_EINVAL);
    assert_int_equal(als_future_wait(NULL, 0, (void **)&g), ALS_EINVAL);
    als_future_release(NULL);

    assert_int_equal(als_submit_future(p, ident, &x, &f), 0);
    assert_non_null(f);
    assert_int_equal(als_future_then(NULL, p, ident, &g), ALS_EINVAL);
    assert_int_equal(als_future_then(f, NULL, ident, &g), ALS_EINVAL);
    assert_int_equal(als_future_then(f, p, NULL, &g), ALS_EINVAL);
    assert_int_equal(als_future_then(f, p, ident, NULL), ALS_EINVAL);
    assert_out_unset(g);

    /* A NULL result pointer: the result is not wanted. */
    assert_int_equal(als_future_wait(f, -1, NULL), 0);
    void *r = NULL;
    assert_int_equal(als_future_wait(f, -1, &r), 0);
    assert_ptr_equal(r, &x);
    r = NULL;
    assert_int_equal(als_future_wait(f, 0, &r), 0); /* settled: no wait */
    assert_ptr_equal(r, &x);

    assert_int_equal(als_pool_drain(p), 0);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1);
    assert_int_equal(s.completed, 1);
    assert_balanced(&s);

    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    assert_int_equal(als_submit_future(p, ident, &x, &g), ALS_ESHUTDOWN);
    assert_int_equal(als_future_then(f, p, ident, &g), ALS_ESHUTDOWN);
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1);
    als_future_release(f);
    als_pool_free(p);
}

/* ---- results and context ---------------------------------------------- */

static void test_wait_result_and_context(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    enum { N = 8 };
    struct rec *r = recs_new(N, p, 0x100);
    als_future_t *f[N];
    for (size_t i = 0; i < N; i++)
        f[i] = fut_in(&r[i], p, 0x1000 * (i + 1));
    for (size_t i = 0; i < N; i++) {
        assert_ptr_equal(wait_value(f[i]), (void *)(0x1000 * (i + 1) + 0x100));
        assert_rec_ran(&r[i], 0x1000 * (i + 1), "future");
        assert_false(pthread_equal(r[i].thread, pthread_self()));
        als_future_release(f[i]);
    }
    assert_int_equal(als_pool_drain(p), 0);
    assert_recs_destroyed_once(r, N);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, N);
    assert_int_equal(s.completed, N);
    assert_balanced(&s);
    als_pool_free(p);
    free(r);
}

static void test_timeout(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1);
    struct gate g;
    gate_init(&g);
    struct rec *r = recs_new(2, p, 1);
    r[0].gate = &g;
    als_future_t *f = fut_in(&r[0], p, 10);
    als_future_t *queued = fut_in(&r[1], p, 20);
    gate_await_arrivals(&g, 1); /* f runs, held at the gate */

    void *v = (void *)0xdead;
    assert_int_equal(als_future_wait(f, 0, &v), ALS_ETIMEDOUT);
    assert_ptr_equal(v, (void *)0xdead);
    assert_int_equal(als_future_wait(f, 2 * MS, &v), ALS_ETIMEDOUT);
    assert_ptr_equal(v, (void *)0xdead);
    assert_int_equal(als_future_wait(f, 1, NULL), ALS_ETIMEDOUT);
    assert_int_equal(als_future_wait(queued, 1 * MS, &v), ALS_ETIMEDOUT);
    assert_int_equal(atomic_load(&r[0].runs), 0);
    assert_int_equal(atomic_load(&r[1].runs), 0);

    gate_open(&g);
    assert_ptr_equal(wait_value(f), (void *)11);
    assert_ptr_equal(wait_value(queued), (void *)21);
    assert_rec_ran(&r[0], 10, "gated future");
    assert_rec_ran(&r[1], 20, "queued future");
    als_future_release(f);
    als_future_release(queued);
    als_pool_free(p);
    assert_recs_destroyed_once(r, 2);
    gate_destroy(&g);
    free(r);
}

/* ---- cancellation ----------------------------------------------------- */

struct waiter {
    als_future_t *f;
    int rc;
    void *v;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    w->v = (void *)0xdead;
    w->rc = als_future_wait(w->f, -1, &w->v);
    return NULL;
}

static void test_cancel_shutdown(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1), *p2 = new_pool(2);
    struct gate g;
    block_pool(p, &g);

    /* F0..F2 queued behind the blocker; G continues F0 on p2 and H F1 on
     * p, both registered before the cancel; a thread waits on F2. */
    struct rec *r = recs_new(6, p, 1);
    als_future_t *f[3];
    for (size_t i = 0; i < 3; i++)
        f[i] = fut_in(&r[i], p, 100 + i);
    r[3].pool = p2;
    als_future_t *gf = then_in(&r[3], f[0], p2);
    als_future_t *hf = then_in(&r[4], f[1], p);
    struct waiter w = {f[2], -100, NULL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);

    int probes = cancel_shutdown_gated(p, &g);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(w.rc, ALS_ECANCELED);
    assert_ptr_equal(w.v, (void *)0xdead);

    void *v = (void *)0xdead;
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(als_future_wait(f[i], -1, &v), ALS_ECANCELED);
        assert_int_equal(als_future_wait(f[i], 0, NULL), ALS_ECANCELED);
    }
    assert_ptr_equal(v, (void *)0xdead);
    assert_int_equal(als_future_wait(gf, -1, &v), ALS_ECANCELED);
    assert_int_equal(als_future_wait(hf, -1, NULL), ALS_ECANCELED);

    /* `then` on a cancelled future: 0, and a cancelled future whose fn
     * never runs; on the shut-down pool: ALS_ESHUTDOWN. */
    als_future_t *kf = then_in(&r[5], f[0], p2);
    assert_int_equal(als_future_wait(kf, -1, &v), ALS_ECANCELED);
    als_future_t *x = NULL;
    assert_int_equal(als_future_then(f[0], p, ident, &x), ALS_ESHUTDOWN);
    assert_int_equal(als_submit_future(p, ident, NULL, &x), ALS_ESHUTDOWN);
    assert_out_unset(x);

    assert_int_equal(als_pool_drain(p2), 0);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(atomic_load(&r[i].runs), 0);
    assert_recs_destroyed_once(r, 6);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1 + 3 + (uint64_t)probes); /* H never reached p */
    assert_int_equal(s.completed, 1);
    assert_int_equal(s.cancelled, 3 + (uint64_t)probes);
    assert_balanced(&s);
    get_stats(p2, &s);
    assert_int_equal(s.submitted, 0);
    assert_balanced(&s);

    for (size_t i = 0; i < 3; i++)
        als_future_release(f[i]);
    als_future_release(gf);
    als_future_release(hf);
    als_future_release(kf);
    als_pool_free(p);
    als_pool_free(p2);
    gate_destroy(&g);
    free(r);
}

/* A long chain of continuations on a future that is cancelled: all of them
 * are cancelled (iteratively: no stack overflow), none runs, each value is
 * destroyed once. Half the handles are released before the cancel. */
static void test_cancel_long_chain(void **state)
{
    (void)state;
    enum { N = 20000 };
    als_pool_t *p = new_pool(1), *p2 = new_pool(1);
    struct gate g;
    block_pool(p, &g);
    struct rec *r = recs_new(N + 1, p2, 1);
    r[0].pool = p;
    als_future_t **f = calloc(N + 1, sizeof *f);
    assert_non_null(f);
    f[0] = fut_in(&r[0], p, 0);
    for (size_t i = 1; i <= N; i++)
        f[i] = then_in(&r[i], f[i - 1], (i % 2) ? p2 : p);
    for (size_t i = 0; i <= N; i += 2) {
        als_future_release(f[i]);
        f[i] = NULL;
    }
    int probes = cancel_shutdown_gated(p, &g);
    for (size_t i = 1; i <= N; i += 2)
        assert_int_equal(als_future_wait(f[i], -1, NULL), ALS_ECANCELED);
    assert_int_equal(als_pool_drain(p2), 0);
    for (size_t i = 0; i <= N; i++)
        if (atomic_load(&r[i].runs) != 0)
            fail_msg("link %zu ran", i);
    assert_recs_destroyed_once(r, N + 1);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 2 + (uint64_t)probes);
    assert_int_equal(s.cancelled, 1 + (uint64_t)probes);
    assert_balanced(&s);
    get_stats(p2, &s);
    assert_int_equal(s.submitted, 0);
    for (size_t i = 1; i <= N; i += 2)
        als_future_release(f[i]);
    als_pool_free(p);
    als_pool_free(p2);
    gate_destroy(&g);
    free(f);
    free(r);
}

/* ---- continuations ---------------------------------------------------- */

/* The continuation runs in the context captured at `then`, with the
 * source's result; the source ran in its own. */
static void test_then_context_and_result(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    struct gate g;
    gate_init(&g);
    struct rec *r = recs_new(3, p, 1);
    r[0].gate = &g;
    r[0].add = 0x50;
    als_future_t *f = fut_in(&r[0], p, 0x1000);
    als_future_t *c1 = then_in(&r[1], f, p);
    als_future_t *c2 = then_in(&r[2], c1, p);
    gate_await_arrivals(&g, 1);
    assert_int_equal(atomic_load(&r[1].runs), 0); /* source not done */
    gate_open(&g);

    assert_ptr_equal(wait_value(c2), (void *)0x1052);
    assert_ptr_equal(wait_value(c1), (void *)0x1051);
    assert_ptr_equal(wait_value(f), (void *)0x1050);
    assert_rec_ran(&r[0], 0x1000, "source");
    assert_rec_ran(&r[1], 0x1050, "continuation");
    assert_rec_ran(&r[2], 0x1051, "continuation of the continuation");
    for (size_t i = 0; i < 3; i++)
        assert_false(pthread_equal(r[i].thread, pthread_self()));

    als_future_release(f);
    als_future_release(c1);
    als_future_release(c2);
    assert_int_equal(als_pool_drain(p), 0);
    assert_recs_destroyed_once(r, 3);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 3); /* continuations are pool tasks */
    assert_int_equal(s.completed, 3);
    assert_balanced(&s);
    als_pool_free(p);
    gate_destroy(&g);
    free(r);
}

/* `then` on a completed future: still asynchronous (on a worker, never
 * inside the call), in the context captured at `then`. */
struct late_then {
    als_future_t *src;
    als_pool_t *pool;
    struct rec *r;
    _Atomic int returned;      /* set when `then` returned */
    int rc;
    als_future_t *out;
};

static int late_then_task(void *arg)
{
    struct late_then *lt = arg;
    lt->rc = try_then_in(lt->r, lt->src, lt->pool, &lt->out);
    atomic_store(&lt->returned, 1);
    return 0;
}

static void test_then_after_completion(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2), *q = new_pool(1);
    struct rec *r = recs_new(4, p, 1);
    als_future_t *f = fut_in(&r[0], p, 7);
    assert_ptr_equal(wait_value(f), (void *)8);

    /* From the main thread: runs on a worker of p. */
    als_future_t *c = then_in(&r[1], f, p);
    assert_ptr_equal(wait_value(c), (void *)9);
    assert_rec_ran(&r[1], 8, "late continuation");
    assert_false(pthread_equal(r[1].thread, pthread_self()));

    /* From q's only worker, continuing on q: had it run inside the call,
     * `returned` would still be 0 when it ran. */
    struct late_then lt = {.src = f, .pool = q, .r = &r[2], .rc = -100};
    r[2].pool = q;
    r[2].flag = &lt.returned;
    assert_int_equal(als_submit(q, late_then_task, &lt), 0);
    assert_int_equal(als_pool_drain(q), 0);
    assert_int_equal(lt.rc, 0);
    assert_ptr_equal(wait_value(lt.out), (void *)9);
    assert_rec_ran(&r[2], 8, "late continuation from a worker");
    assert_int_equal(atomic_load(&r[2].flag_was_zero), 0);

    /* Continuing on another pool than the source's. */
    r[3].pool = q;
    als_future_t *c3 = then_in(&r[3], f, q);
    assert_ptr_equal(wait_value(c3), (void *)9);
    assert_rec_ran(&r[3], 8, "continuation on another pool");

    als_future_release(f);
    als_future_release(c);
    als_future_release(lt.out);
    als_future_release(c3);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(als_pool_drain(q), 0);
    assert_recs_destroyed_once(r, 4);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 2);
    assert_int_equal(s.completed, 2);
    assert_balanced(&s);
    get_stats(q, &s);
    assert_int_equal(s.submitted, 3);
    assert_int_equal(s.completed, 3);
    assert_balanced(&s);
    als_pool_free(p);
    als_pool_free(q);
    free(r);
}

/* A chain of 2000 continuations, each in its own context, alternating
 * between two pools, built while the source is held; handles released as
 * soon as the next link exists. */
static void test_then_chain(void **state)
{
    (void)state;
    enum { N = 2000 };
    als_pool_t *p = new_pool(2), *p2 = new_pool(1);
    struct gate g;
    gate_init(&g);
    struct rec *r = recs_new(N + 1, NULL, 1);
    r[0].gate = &g;
    r[0].pool = p;
    als_future_t *prev = fut_in(&r[0], p, 0);
    for (size_t i = 1; i <= N; i++) {
        r[i].pool = (i % 2) ? p2 : p;
        als_future_t *next = then_in(&r[i], prev, r[i].pool);
        als_future_release(prev);
        prev = next;
    }
    gate_open(&g);
    assert_ptr_equal(wait_value(prev), (void *)(uintptr_t)(N + 1));
    als_future_release(prev);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(als_pool_drain(p2), 0);
    for (size_t i = 0; i <= N; i++) {
        char what[32];
        snprintf(what, sizeof what, "link %zu", i);
        assert_rec_ran(&r[i], i, what);
    }
    assert_recs_destroyed_once(r, N + 1);
    als_pool_stats s, s2;
    get_stats(p, &s);
    get_stats(p2, &s2);
    assert_int_equal(s.submitted, 1 + N / 2);
    assert_int_equal(s2.submitted, N / 2);
    assert_int_equal(s.completed + s2.completed, N + 1);
    assert_balanced(&s);
    assert_balanced(&s2);
    als_pool_free(p);
    als_pool_free(p2);
    gate_destroy(&g);
    free(r);
}

/* Many continuations of one future, before and after it completes; then
 * racing the completion, from two threads at once. */
struct racer {
    als_future_t *src;
    als_pool_t *pool;
    struct rec *r;
    size_t n;
    als_future_t **out;
    int bad;
};

static void *racer_main(void *arg)
{
    struct racer *rc = arg;
    for (size_t i = 0; i < rc->n; i++)
        if (try_then_in(&rc->r[i], rc->src, rc->pool, &rc->out[i]) != 0)
            rc->bad++;
    return NULL;
}

static void test_then_fan_out_and_races(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    enum { FAN = 16, ROUNDS = 200, PER = 4 };
    struct gate g;
    gate_init(&g);
    struct rec *r = recs_new(FAN + 1, p, 1);
    r[0].gate = &g;
    als_future_t *f = fut_in(&r[0], p, 41);
    als_future_t *c[FAN];
    for (size_t i = 1; i <= FAN / 2; i++)
        c[i - 1] = then_in(&r[i], f, p);
    gate_open(&g);
    assert_ptr_equal(wait_value(f), (void *)42);
    for (size_t i = FAN / 2 + 1; i <= FAN; i++)
        c[i - 1] = then_in(&r[i], f, p);
    for (size_t i = 1; i <= FAN; i++) {
        assert_ptr_equal(wait_value(c[i - 1]), (void *)43);
        assert_rec_ran(&r[i], 42, "fan-out continuation");
        als_future_release(c[i - 1]);
    }
    als_future_release(f);
    assert_int_equal(als_pool_drain(p), 0);
    assert_recs_destroyed_once(r, FAN + 1);
    free(r);

    /* `then` racing completion: each round, a source that is not held and
     * two threads adding continuations while it completes. */
    r = recs_new((size_t)ROUNDS * (2 * PER + 1), p, 1);
    for (size_t k = 0; k < ROUNDS; k++) {
        struct rec *rk = &r[k * (2 * PER + 1)];
        als_future_t *src = fut_in(&rk[0], p, k);
        als_future_t *out[2 * PER] = {0};
        struct racer ra = {src, p, &rk[1], PER, &out[0], 0};
        struct racer rb = {src, p, &rk[1 + PER], PER, &out[PER], 0};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, racer_main, &ra), 0);
        racer_main(&rb);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(ra.bad + rb.bad, 0);
        for (size_t i = 0; i < 2 * PER; i++) {
            assert_ptr_equal(wait_value(out[i]), (void *)(k + 2));
            als_future_release(out[i]);
        }
        als_future_release(src);
    }
    assert_int_equal(als_pool_drain(p), 0);
    for (size_t k = 0; k < ROUNDS; k++) {
        struct rec *rk = &r[k * (2 * PER + 1)];
        assert_rec_ran(&rk[0], k, "racing source");
        for (size_t i = 1; i <= 2 * PER; i++)
            assert_rec_ran(&rk[i], k + 1, "racing continuation");
    }
    assert_recs_destroyed_once(r, (size_t)ROUNDS * (2 * PER + 1));
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1 + FAN + ROUNDS * (2 * PER + 1));
    assert_int_equal(s.completed, 1 + FAN + ROUNDS * (2 * PER + 1));
    assert_balanced(&s);
    als_pool_free(p);
    gate_destroy(&g);
    free(r);
}

/* ---- release ---------------------------------------------------------- */

struct releaser {
    als_future_t **f;
    size_t n;
};

static void *releaser_main(void *arg)
{
    struct releaser *rl = arg;
    for (size_t i = 0; i < rl->n; i++)
        als_future_release(rl->f[i]);
    return NULL;
}

static _Atomic int counted;

static void *count_fn(void *arg)
{
    atomic_fetch_add(&counted, 1);
    return arg;
}

static void test_release_before_completion(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2);
    struct gate g;
    gate_init(&g);
    struct rec *r = recs_new(3, p, 1);
    r[0].gate = &g;
    als_future_t *hs[3];
    hs[0] = fut_in(&r[0], p, 5);
    hs[1] = then_in(&r[1], hs[0], p);
    hs[2] = then_in(&r[2], hs[1], p);
    gate_await_arrivals(&g, 1);

    /* Released from another thread before anything completed. */
    struct releaser rl = {hs, 3};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, releaser_main, &rl), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    gate_open(&g);
    /* Drain waits for the task and for what its completion submits. */
    assert_int_equal(als_pool_drain(p), 0);
    assert_rec_ran(&r[0], 5, "released source");
    assert_rec_ran(&r[1], 6, "released continuation");
    assert_rec_ran(&r[2], 7, "released continuation's continuation");
    assert_recs_destroyed_once(r, 3);
    free(r);

    /* Releases racing completions. */
    enum { M = 1000 };
    atomic_store(&counted, 0);
    als_future_t **fs = calloc(2 * M, sizeof *fs);
    assert_non_null(fs);
    for (size_t i = 0; i < M; i++) {
        assert_int_equal(als_submit_future(p, count_fn, (void *)i, &fs[2 * i]), 0);
        assert_int_equal(als_future_then(fs[2 * i], p, count_fn, &fs[2 * i + 1]), 0);
    }
    rl = (struct releaser){fs, 2 * M};
    assert_int_equal(pthread_create(&th, NULL, releaser_main, &rl), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&counted), 2 * M);

    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 3 + 2 * M);
    assert_int_equal(s.completed, 3 + 2 * M);
    assert_balanced(&s);
    als_pool_free(p);
    gate_destroy(&g);
    free(fs);
}

/* ---- waiting on a worker ---------------------------------------------- */

/* A task of a 1-thread pool submits a future to its own pool and waits. */
struct nested {
    als_pool_t *pool;
    struct rec *inner;
    _Atomic(als_future_t *) target; /* if set: wait for this one instead */
    int submit_rc, wait_rc;
    void *value;
    void *ctx_after;           /* als_get(store) after the wait */
    pthread_t thread;
};

static void *nested_waiter(void *arg)
{
    struct nested *n = arg;
    n->thread = pthread_self();
    als_future_t *f = atomic_load(&n->target);
    bool own = f == NULL;
    if (own) {
        n->submit_rc = try_fut_in(n->inner, n->pool, 0x70, &f);
        if (n->submit_rc)
            return NULL;
    }
    n->value = (void *)0xdead;
    n->wait_rc = als_future_wait(f, -1, &n->value);
    n->ctx_after = als_get(store);
    if (own)
        als_future_release(f);
    return (void *)0x99;
}

static void test_wait_on_worker(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1);
    struct rec *r = recs_new(4, p, 1);

    /* The awaited task sits in the waiting worker's own slot. */
    struct nested n = {.pool = p, .inner = &r[1]};
    struct call c = {.pool = p, .fn = nested_waiter, .arg = &n, .rc = -100};
    als_run(store, &r[0], do_submit, &c);
    assert_int_equal(c.rc, 0);
    assert_ptr_equal(wait_value(c.out), (void *)0x99);
    als_future_release(c.out);
    assert_int_equal(n.submit_rc, 0);
    assert_int_equal(n.wait_rc, 0);
    assert_ptr_equal(n.value, (void *)0x71);
    assert_ptr_equal(n.ctx_after, &r[0]); /* the waiter's context is intact */
    assert_rec_ran(&r[1], 0x70, "awaited future");
    assert_true(pthread_equal(r[1].thread, n.thread)); /* run by the waiter */

    /* The awaited task sits in the shared ring, behind the waiter: a held
     * blocker keeps both queued until the waiter knows its target. */
    struct gate g;
    block_pool(p, &g);
    struct nested m = {.pool = p};
    c = (struct call){.pool = p, .fn = nested_waiter, .arg = &m, .rc = -100};
    als_run(store, &r[2], do_submit, &c);
    assert_int_equal(c.rc, 0);
    als_future_t *target = fut_in(&r[3], p, 0x80);
    atomic_store(&m.target, target);
    gate_open(&g);
    assert_ptr_equal(wait_value(c.out), (void *)0x99);
    als_future_release(c.out);
    assert_int_equal(m.wait_rc, 0);
    assert_ptr_equal(m.value, (void *)0x81);
    assert_ptr_equal(m.ctx_after, &r[2]);
    assert_rec_ran(&r[3], 0x80, "awaited future in the ring");
    assert_true(pthread_equal(r[3].thread, m.thread));
    als_future_release(target);

    assert_int_equal(als_pool_drain(p), 0);
    assert_recs_destroyed_once(r, 4);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 5);
    assert_int_equal(s.completed, 5);
    assert_balanced(&s);
    als_pool_free(p);
    gate_destroy(&g);
    free(r);
}

/* Every worker of a pool waits at once, several levels deep. */
struct deep {
    als_pool_t *pool;
    int level;
    _Atomic int *runs;
};

static void *deep_fn(void *arg)
{
    struct deep *d = arg;
    atomic_fetch_add(d->runs, 1);
    if (d->level == 0)
        return (void *)1;
    struct deep child[2] = {{d->pool, d->level - 1, d->runs}, {d->pool, d->level - 1, d->runs}};
    als_future_t *f[2] = {NULL, NULL};
    uintptr_t sum = 0;
    for (int i = 0; i < 2; i++)
        if (als_submit_future(d->pool, deep_fn, &child[i], &f[i]) != 0)
            return NULL; /* shows up as a wrong sum */
    for (int i = 0; i < 2; i++) {
        void *v = NULL;
        if (als_future_wait(f[i], -1, &v) == 0)
            sum += (uintptr_t)v;
        als_future_release(f[i]);
    }
    return (void *)(sum + 1);
}

static void test_all_workers_wait(void **state)
{
    (void)state;
    enum { LEVELS = 6, ROOTS = 4 };
    als_pool_t *p = new_pool(2);
    _Atomic int runs = 0;
    struct deep root = {p, LEVELS, &runs};
    als_future_t *f[ROOTS];
    for (int i = 0; i < ROOTS; i++)
        assert_int_equal(als_submit_future(p, deep_fn, &root, &f[i]), 0);
    const uintptr_t nodes = (1u << (LEVELS + 1)) - 1;
    for (int i = 0; i < ROOTS; i++) {
        assert_ptr_equal(wait_value(f[i]), (void *)nodes);
        als_future_release(f[i]);
    }
    assert_int_equal(atomic_load(&runs), ROOTS * (int)nodes);
    als_pool_free(p);
}

/* A worker waiting with a timeout for a future that cannot complete in
 * time (held on another pool) gets ALS_ETIMEDOUT. */
struct timed {
    als_future_t *f;
    int rc;
};

static int timed_wait_task(void *arg)
{
    struct timed *t = arg;
    t->rc = als_future_wait(t->f, 2 * MS, NULL);
    return 0;
}

static void test_worker_wait_timeout(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1), *q = new_pool(1);
    struct gate g;
    gate_init(&g);
    struct rec *r = recs_new(1, q, 1);
    r[0].gate = &g;
    struct timed t = {fut_in(&r[0], q, 1), -100};
    assert_int_equal(als_submit(p, timed_wait_task, &t), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(t.rc, ALS_ETIMEDOUT);
    gate_open(&g);
    assert_ptr_equal(wait_value(t.f), (void *)2);
    als_future_release(t.f);
    als_pool_free(p);
    als_pool_free(q);
    assert_rec_ran(&r[0], 1, "held future");
    assert_recs_destroyed_once(r, 1);
    gate_destroy(&g);
    free(r);
}

/* ---- shut-down pools -------------------------------------------------- */

/* `then` on a shut-down pool is refused; a continuation registered before
 * its pool shut down, whose source completes after, is cancelled. */
static void test_then_shut_down_pool(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1), *p2 = new_pool(1);
    struct gate g;
    gate_init(&g);
    struct rec *r = recs_new(3, p, 1);
    r[0].gate = &g;
    als_future_t *f = fut_in(&r[0], p, 1);
    r[1].pool = p2;
    als_future_t *c = then_in(&r[1], f, p2);
    assert_int_equal(als_pool_shutdown(p2, ALS_SHUTDOWN_DRAIN), 0);

    als_future_t *x = NULL;
    assert_int_equal(try_then_in(&r[2], f, p2, &x), ALS_ESHUTDOWN);
    assert_out_unset(x);
    assert_int_equal(atomic_load(&r[2].destroyed), 1); /* nothing kept it */

    gate_open(&g);
    assert_ptr_equal(wait_value(f), (void *)2);
    assert_int_equal(als_future_wait(c, -1, NULL), ALS_ECANCELED);
    assert_int_equal(try_then_in(&r[2], f, p2, &x), ALS_ESHUTDOWN); /* settled source too */
    assert_int_equal(als_pool_drain(p), 0);
    assert_rec_ran(&r[0], 1, "source");
    assert_int_equal(atomic_load(&r[1].runs), 0);
    assert_int_equal(atomic_load(&r[2].runs), 0);
    assert_int_equal(atomic_load(&r[0].destroyed), 1);
    assert_int_equal(atomic_load(&r[1].destroyed), 1);
    assert_int_equal(atomic_load(&r[2].destroyed), 2); /* bound twice */
    als_pool_stats s;
    get_stats(p2, &s);
    assert_int_equal(s.submitted, 0);
    als_future_release(f);
    als_future_release(c);
    als_pool_free(p);
    als_pool_free(p2);
    gate_destroy(&g);
    free(r);
}

/* ---- allocation failures ---------------------------------------------- */

/* Runs one submit or then with the n-th allocation failing, n = 1, 2, ...
 * until it succeeds, on a pool held by a blocker (so no worker allocates
 * meanwhile). Every failure: ALS_ENOMEM, *out untouched, the counts do not
 * move, the value is destroyed at once. Returns the successful future. */
static als_future_t *enomem_sweep(als_pool_t *p, als_future_t *src, struct rec *r,
                                  size_t max, uint64_t submitted_before,
                                  uint64_t submitted_after, size_t *used)
{
    for (size_t n = 1; n <= max; n++) {
        als_future_t *out = SENTINEL;
        als__test_fail_alloc((long)n, false);
        int rc = src ? try_then_in(&r[n - 1], src, p, &out) : try_fut_in(&r[n - 1], p, 3, &out);
        als__test_fail_alloc(0, false);
        als_pool_stats s;
        get_stats(p, &s);
        if (rc == 0) {
            assert_int_equal(s.submitted, submitted_after);
            assert_int_equal(atomic_load(&r[n - 1].destroyed), 0);
            *used = n;
            return out;
        }
        assert_int_equal(rc, ALS_ENOMEM);
        assert_out_unset(out);
        assert_int_equal(s.submitted, submitted_before);
        assert_int_equal(atomic_load(&r[n - 1].destroyed), 1);
    }
    fail_msg("still failing after %zu injected failures", max);
    return NULL;
}

static void test_alloc_failure(void **state)
{
    (void)state;
    if (!als__test_fail_alloc)
        skip();
    enum { MAXF = 24 };
    als_pool_t *p = new_pool(1), *q = new_pool(1);
    struct rec *r = recs_new(3 * MAXF + 1, p, 1);
    r[3 * MAXF].pool = q;
    als_future_t *done = fut_in(&r[3 * MAXF], q, 1); /* a settled source */
    assert_ptr_equal(wait_value(done), (void *)2);

    struct gate g;
    block_pool(p, &g);
    size_t u1 = 0, u2 = 0, u3 = 0;
    als_future_t *f = enomem_sweep(p, NULL, r, MAXF, 1, 2, &u1);
    /* then on a pending source (f is queued behind the blocker): nothing
     * is submitted until f completes */
    als_future_t *c1 = enomem_sweep(p, f, r + MAXF, MAXF, 2, 2, &u2);
    /* then on a settled source: submits at once */
    als_future_t *c2 = enomem_sweep(p, done, r + 2 * MAXF, MAXF, 2, 3, &u3);
    assert_true(u1 > 1);
    assert_true(u2 > 1);
    assert_true(u3 > 1);
    gate_open(&g);

    assert_ptr_equal(wait_value(f), (void *)4);
    assert_ptr_equal(wait_value(c1), (void *)5);
    assert_ptr_equal(wait_value(c2), (void *)3);
    assert_int_equal(als_pool_drain(p), 0);
    for (size_t i = 0; i < 3 * MAXF; i++) {
        size_t k = i % MAXF, used = i < MAXF ? u1 : i < 2 * MAXF ? u2 : u3;
        int expect_runs = k + 1 == used ? 1 : 0;
        if (atomic_load(&r[i].runs) != expect_runs)
            fail_msg("record %zu ran %d times", i, atomic_load(&r[i].runs));
        if (atomic_load(&r[i].destroyed) != (k < used ? 1 : 0))
            fail_msg("record %zu destroyed %d times", i, atomic_load(&r[i].destroyed));
    }
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 4);
    assert_int_equal(s.completed, 4);
    assert_balanced(&s);
    als_future_release(done);
    als_future_release(f);
    als_future_release(c1);
    als_future_release(c2);
    als_pool_free(p);
    als_pool_free(q);
    gate_destroy(&g);
    free(r);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, reset, check_orphans)

int main(void)
{
    als_options o = {.name = "future", .destroy = rec_destroy};
    store = als_new(&o);
    if (!store)
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_arguments),
        T(test_wait_result_and_context),
        T(test_timeout),
        T(test_cancel_shutdown),
        T(test_cancel_long_chain),
        T(test_then_context_and_result),
        T(test_then_after_completion),
        T(test_then_chain),
        T(test_then_fan_out_and_races),
        T(test_release_before_completion),
        T(test_wait_on_worker),
        T(test_all_workers_wait),
        T(test_worker_wait_timeout),
        T(test_then_shut_down_pool),
        T(test_alloc_failure),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    als_free(store);
    return rc;
}
