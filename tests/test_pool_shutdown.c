/*
 * Worker pool, draining and stopping (issue 3): als_pool_drain with nested
 * submissions, DRAIN and CANCEL shutdowns with exactly-once accounting,
 * idempotence, CANCEL during DRAIN, submits during and after a shutdown,
 * ALS_EDEADLK and the refused als_pool_free from a worker, als_pool_free
 * without a shutdown, and the FULL_BLOCK policy (outside submitters wait; a
 * task submitting into its own full pool runs the new task inline).
 *
 * Assertions run on the main thread only: tasks record what they saw and
 * the test checks it after a drain, shutdown or join.
 *
 * Knowing that a shutdown has begun: the test submits probe tasks until the
 * pool answers ALS_ESHUTDOWN (from outside, or from a running task of the
 * pool for CANCEL). Probes accepted before that are ordinary tasks and are
 * accounted like every other.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
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

#include "gate.h"
#include "pool_helpers.h"

static void nap_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static als_pool_t *new_pool(unsigned threads, unsigned cap, enum als_full_policy pol)
{
    als_pool_options o = {.threads = threads, .queue_capacity = cap, .on_full = pol};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

static als_t *ctx_store; /* what tasks and cancel callbacks check */

/* An accounted task: counts its fn and cancel runs and checks, in both, that
 * it sees the value it was submitted with. */
struct acct {
    _Atomic int fn, cancel;
    _Atomic int bad;
    void *expect;              /* als_get(ctx_store) inside fn and cancel */
    int result;                /* fn's return */
    int at_once;               /* ran inline, inside its submit (throttling) */
};

static int acct_fn(void *arg)
{
    struct acct *a = arg;
    atomic_fetch_add(&a->fn, 1);
    if (als_get(ctx_store) != a->expect)
        atomic_store(&a->bad, 1);
    return a->result;
}

static void acct_cancel(void *arg)
{
    struct acct *a = arg;
    atomic_fetch_add(&a->cancel, 1);
    if (als_get(ctx_store) != a->expect)
        atomic_store(&a->bad, 1);
}

static struct acct *acct_new(int n)
{
    struct acct *a = calloc((size_t)n, sizeof *a);
    assert_non_null(a);
    return a;
}

struct acct_submit {
    als_pool_t *pool;
    struct acct *a;
    unsigned flags;
    int with_cancel;
    int rc;
};

static void *acct_submit_here(void *arg)
{
    struct acct_submit *as = arg;
    als_task t = {.fn = acct_fn, .arg = as->a,
                  .cancel = as->with_cancel ? acct_cancel : NULL,
                  .flags = as->flags};
    as->rc = als_submit_task(as->pool, &t);
    return NULL;
}

/* Submits `a` with ctx_store bound to a->expect; a detached task is
 * submitted with a decoy bound instead and must see nothing (expect NULL). */
static int decoy;

static int acct_submit(als_pool_t *p, struct acct *a, unsigned flags, int with_cancel)
{
    struct acct_submit as = {p, a, flags, with_cancel, -100};
    als_run(ctx_store, (flags & ALS_TASK_DETACHED) ? (void *)&decoy : a->expect,
            acct_submit_here, &as);
    return as.rc;
}

/* Probes, each one an accounted task, kept in a fixed table. */
struct probes {
    struct acct a[8192];
    _Atomic int n;             /* accepted */
    _Atomic int full;          /* ALS_EFULL answers */
    int value;
};

/* Submits probes until the pool answers ALS_ESHUTDOWN; returns the number
 * accepted by this call. A short pause between attempts only spaces the
 * probes out; the loop ends on the pool's answer alone (a pool that never
 * gives it hangs the test, and CTest's timeout reports that). The table is
 * larger than any queue used with it, so it cannot run out while the
 * probes wait in the queue. */
static int probe_until_shutdown(als_pool_t *p, struct probes *pr, int *bad_rc)
{
    int accepted = 0;
    for (;;) {
        int i = atomic_load(&pr->n);
        if (i >= (int)(sizeof pr->a / sizeof pr->a[0])) {
            (*bad_rc)++; /* out of probes: give up rather than overflow */
            return accepted;
        }
        pr->a[i].expect = &pr->value;
        int rc = acct_submit(p, &pr->a[i], 0, 1);
        if (rc == ALS_ESHUTDOWN)
            return accepted;
        if (rc == 0) {
            /* A worker's submit into its own backlogged pool may run the
             * probe at once (als_submit's throttling): it started before
             * the shutdown, so it is not cancelled. No other worker can
             * run it meanwhile: the tests using this hold them all. */
            pr->a[i].at_once = als_pool_current() == p && atomic_load(&pr->a[i].fn) == 1;
            atomic_fetch_add(&pr->n, 1);
            accepted++;
        } else if (rc == ALS_EFULL) {
            atomic_fetch_add(&pr->full, 1);
        } else {
            (*bad_rc)++;
            return accepted;
        }
        nap_us(500);
    }
}

/* A thread that calls als_pool_shutdown, announcing just before. */
struct stopper {
    pthread_t thread;
    als_pool_t *pool;
    int how;
    _Atomic int calling;
    int rc;
};

static void *stopper_main(void *arg)
{
    struct stopper *st = arg;
    atomic_store(&st->calling, 1);
    st->rc = als_pool_shutdown(st->pool, st->how);
    return NULL;
}

static void stopper_start(struct stopper *st, als_pool_t *p, int how)
{
    st->pool = p;
    st->how = how;
    st->rc = -100;
    atomic_init(&st->calling, 0);
    assert_int_equal(pthread_create(&st->thread, NULL, stopper_main, st), 0);
    while (!atomic_load(&st->calling))
        sched_yield();
}

/* ---- semantics 8: drain ----------------------------------------------- */

static _Atomic long tree_done;

/* A binary tree: arg is the remaining depth. Submits into its own pool. */
static int tree_task(void *arg)
{
    uintptr_t depth = (uintptr_t)arg;
    if (depth > 0) {
        als_pool_t *p = als_pool_current();
        if (!p || als_submit(p, tree_task, (void *)(depth - 1)) != 0 ||
            als_submit(p, tree_task, (void *)(depth - 1)) != 0)
            atomic_fetch_add(&tree_done, 1L << 40); /* poison the count */
    }
    atomic_fetch_add(&tree_done, 1);
    return 0;
}

/* A chain: each task submits the next. */
static int chain_task(void *arg)
{
    uintptr_t left = (uintptr_t)arg;
    if (left > 0) {
        als_pool_t *p = als_pool_current();
        if (!p || als_submit(p, chain_task, (void *)(left - 1)) != 0)
            atomic_fetch_add(&tree_done, 1L << 40);
    }
    atomic_fetch_add(&tree_done, 1);
    return 0;
}

struct drainer {
    als_pool_t *pool;
    int rc;
    long seen;
};

static void *drainer_main(void *arg)
{
    struct drainer *d = arg;
    d->rc = als_pool_drain(d->pool);
    d->seen = atomic_load(&tree_done);
    return NULL;
}

static void test_drain_waits_for_nested(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2, 64, ALS_FULL_BLOCK);
    assert_int_equal(als_pool_drain(p), 0); /* idle: returns at once */
    for (int round = 0; round < 5; round++) {
        atomic_store(&tree_done, 0);
        assert_int_equal(als_submit(p, tree_task, (void *)(uintptr_t)10), 0);
        assert_int_equal(als_pool_drain(p), 0);
        assert_int_equal(atomic_load(&tree_done), (1L << 11) - 1);

        atomic_store(&tree_done, 0);
        assert_int_equal(als_submit(p, chain_task, (void *)(uintptr_t)2000), 0);
        assert_int_equal(als_pool_drain(p), 0);
        assert_int_equal(atomic_load(&tree_done), 2001);
    }
    /* Two drains at once, from other threads: each returns only at the end. */
    atomic_store(&tree_done, 0);
    assert_int_equal(als_submit(p, tree_task, (void *)(uintptr_t)11), 0);
    assert_int_equal(als_submit(p, chain_task, (void *)(uintptr_t)1000), 0);
    struct drainer d[2] = {{p, -100, 0}, {p, -100, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, drainer_main, &d[i]), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(d[i].rc, 0);
        assert_int_equal(d[i].seen, (1L << 12) - 1 + 1001);
    }
    als_pool_stats s;
    get_stats(p, &s);
    long total = 5 * ((1L << 11) - 1 + 2001) + (1L << 12) - 1 + 1001;
    assert_int_equal(s.submitted, total);
    assert_int_equal(s.completed, total);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.running, 0);
    als_pool_free(p);
}

/* ---- semantics 7: DRAIN shutdown -------------------------------------- */

static void test_shutdown_drain_accounting(void **state)
{
    (void)state;
    enum { N = 600 };
    ctx_store = als_new(NULL);
    als_pool_t *p = new_pool(2, 32, ALS_FULL_BLOCK);
    struct acct *a = acct_new(N);
    int vals[N];
    int nfail = 0;
    for (int i = 0; i < N; i++) {
        a[i].expect = i % 7 == 6 ? NULL : &vals[i];
        a[i].result = i % 3 == 2;
        nfail += a[i].result;
        assert_int_equal(acct_submit(p, &a[i], i % 7 == 6 ? ALS_TASK_DETACHED : 0,
                                     i % 2), 0);
    }
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    for (int i = 0; i < N; i++) {
        if (atomic_load(&a[i].fn) != 1 || atomic_load(&a[i].cancel) != 0 ||
            atomic_load(&a[i].bad))
            fail_msg("task %d: fn %d cancel %d bad %d", i, atomic_load(&a[i].fn),
                     atomic_load(&a[i].cancel), atomic_load(&a[i].bad));
    }
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, N);
    assert_int_equal(s.completed, N - nfail);
    assert_int_equal(s.failed, nfail);
    assert_int_equal(s.cancelled, 0);
    assert_int_equal(s.rejected, 0);
    assert_balanced(&s);

    /* After the end: every submit is refused, nothing is counted. */
    struct acct late = {.expect = NULL};
    assert_int_equal(als_submit(p, acct_fn, &late), ALS_ESHUTDOWN);
    assert_int_equal(acct_submit(p, &late, 0, 1), ALS_ESHUTDOWN);
    assert_int_equal(acct_submit(p, &late, ALS_TASK_DETACHED, 1), ALS_ESHUTDOWN);
    /* Idempotent: later calls wait for the same end and return 0. */
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL), 0);
    assert_int_equal(als_pool_shutdown(p, 7), ALS_EINVAL);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(als_submit(p, acct_fn, &late), ALS_ESHUTDOWN);
    get_stats(p, &s);
    assert_int_equal(s.submitted, N);
    assert_int_equal(s.completed, N - nfail);
    assert_int_equal(s.failed, nfail);
    assert_int_equal(s.cancelled, 0);
    assert_int_equal(s.rejected, 0);
    assert_int_equal(s.threads, 2);
    assert_balanced(&s);
    assert_int_equal(atomic_load(&late.fn) + atomic_load(&late.cancel), 0);
    als_pool_free(p);
    free(a);
    als_free(ctx_store);
}

/* ---- semantics 7: CANCEL shutdown ------------------------------------- */

/* A task that holds its worker until the pool refuses its own submits,
 * which happens exactly when a CANCEL shutdown has begun. Every probe it
 * got accepted before that is queued behind it and must be cancelled. */
struct holder {
    struct probes *pr;
    pthread_barrier_t *barrier;   /* optional: all holders run at once */
    int value;
    _Atomic int fn;
    _Atomic int holding;          /* running, past the barrier */
    int bad_rc;
    int saw_own_value;
};

static int holder_task(void *arg)
{
    struct holder *h = arg;
    atomic_fetch_add(&h->fn, 1);
    if (h->barrier)
        pthread_barrier_wait(h->barrier);
    atomic_store(&h->holding, 1);
    h->saw_own_value = als_get(ctx_store) == &h->value;
    probe_until_shutdown(als_pool_current(), h->pr, &h->bad_rc);
    return 0;
}

struct holder_submit {
    als_pool_t *pool;
    struct holder *h;
    int rc;
};

static void *holder_submit_here(void *arg)
{
    struct holder_submit *hs = arg;
    hs->rc = als_submit(hs->pool, holder_task, hs->h);
    return NULL;
}

static void submit_holder(als_pool_t *p, struct holder *h)
{
    struct holder_submit hs = {p, h, -100};
    als_run(ctx_store, &h->value, holder_submit_here, &hs);
    assert_int_equal(hs.rc, 0);
}

static void await_holding(struct holder *h)
{
    while (!atomic_load(&h->holding))
        sched_yield();
}

/* Probes that ran inside their submit (throttling). */
static int probes_at_once(struct probes *pr)
{
    int n = 0;
    for (int i = 0; i < atomic_load(&pr->n); i++)
        n += pr->a[i].at_once;
    return n;
}

/* Every probe queued behind its holder was cancelled, exactly once, in its
 * context; one that ran at once (inline) ran and was not cancelled. */
static void check_probes_cancelled(struct probes *pr)
{
    for (int i = 0; i < atomic_load(&pr->n); i++) {
        int want_fn = pr->a[i].at_once, want_cancel = !pr->a[i].at_once;
        if (atomic_load(&pr->a[i].fn) != want_fn ||
            atomic_load(&pr->a[i].cancel) != want_cancel || atomic_load(&pr->a[i].bad))
            fail_msg("probe %d: fn %d cancel %d bad %d (want %d %d 0)", i,
                     atomic_load(&pr->a[i].fn), atomic_load(&pr->a[i].cancel),
                     atomic_load(&pr->a[i].bad), want_fn, want_cancel);
    }
}

static void test_shutdown_cancel_accounting(void **state)
{
    (void)state;
    enum { N = 200 };
    ctx_store = als_new(NULL);
    /* REJECT: a holder's probes cannot block, however long the CANCEL
     * takes to begin; at most the queue's capacity of them is queued (the
     * rest are ALS_EFULL), which the probe table holds. With the backlog
     * below, some run at once instead (throttling): they count as ran. */
    als_pool_t *p = new_pool(2, 4096, ALS_FULL_REJECT);
    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, 2), 0);
    struct probes *pr1 = calloc(1, sizeof *pr1);
    struct probes *pr2 = calloc(1, sizeof *pr2);
    assert_non_null(pr1);
    assert_non_null(pr2);
    /* Different values: each probe's cancel checks its holder's context. */
    struct holder h1 = {.pr = pr1, .barrier = &barrier};
    struct holder h2 = {.pr = pr2, .barrier = &barrier};
    submit_holder(p, &h1);
    submit_holder(p, &h2);
    await_holding(&h1); /* both workers are held from here on */
    await_holding(&h2);

    struct acct *a = acct_new(N);
    int vals[N];
    int bad_submit = 0;
    for (int i = 0; i < N; i++) {
        a[i].expect = i % 5 == 4 ? NULL : &vals[i];
        bad_submit += acct_submit(p, &a[i], i % 5 == 4 ? ALS_TASK_DETACHED : 0,
                                  i % 4 != 3) != 0;
    }
    /* Nothing is asserted while the holders run (they use this frame). */
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL), 0);
    assert_int_equal(bad_submit, 0);

    assert_int_equal(atomic_load(&h1.fn), 1);
    assert_int_equal(atomic_load(&h2.fn), 1);
    assert_int_equal(h1.bad_rc + h2.bad_rc, 0);
    assert_true(h1.saw_own_value);
    assert_true(h2.saw_own_value);
    /* Each cancel ran in the context its probe was submitted with. */
    check_probes_cancelled(pr1);
    check_probes_cancelled(pr2);
    for (int i = 0; i < N; i++) {
        int has_cancel = i % 4 != 3;
        if (atomic_load(&a[i].fn) != 0 || atomic_load(&a[i].cancel) != has_cancel ||
            atomic_load(&a[i].bad))
            fail_msg("task %d: fn %d cancel %d bad %d (want 0 %d 0)", i,
                     atomic_load(&a[i].fn), atomic_load(&a[i].cancel),
                     atomic_load(&a[i].bad), has_cancel);
    }
    int probes = atomic_load(&pr1->n) + atomic_load(&pr2->n);
    int at_once = probes_at_once(pr1) + probes_at_once(pr2);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 2 + N + probes);
    assert_int_equal(s.completed, 2 + at_once);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.cancelled, N + probes - at_once);
    assert_balanced(&s);
    /* Everything after is refused; repeating is harmless. */
    struct acct late = {.expect = NULL};
    assert_int_equal(als_submit(p, acct_fn, &late), ALS_ESHUTDOWN);
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL), 0);
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    get_stats(p, &s);
    assert_int_equal(s.cancelled, N + probes - at_once);
    assert_balanced(&s);
    als_pool_free(p);
    pthread_barrier_destroy(&barrier);
    free(a);
    free(pr1);
    free(pr2);
    als_free(ctx_store);
}

/* ---- semantics 10: CANCEL during DRAIN -------------------------------- */

static void test_cancel_during_drain(void **state)
{
    (void)state;
    enum { N = 50 };
    ctx_store = als_new(NULL);
    /* REJECT: probes can never block or run inline, whatever happens, and
     * no more than the queue holds are accepted. */
    als_pool_t *p = new_pool(1, 4096, ALS_FULL_REJECT);
    struct probes *held = calloc(1, sizeof *held);   /* from the running task */
    struct probes *outside = calloc(1, sizeof *outside);
    assert_non_null(held);
    assert_non_null(outside);
    struct holder h = {.pr = held};
    submit_holder(p, &h);
    await_holding(&h);
    struct acct *a = acct_new(N);
    int vals[N];
    int bad_submit = 0;
    for (int i = 0; i < N; i++) {
        a[i].expect = &vals[i];
        bad_submit += acct_submit(p, &a[i], 0, 1) != 0;
    }

    /* Nothing is asserted while the holder runs (it uses this frame). */
    struct stopper drain;
    stopper_start(&drain, p, ALS_SHUTDOWN_DRAIN);
    /* From outside, a DRAIN in progress refuses submits at once. */
    int bad_rc = 0;
    probe_until_shutdown(p, outside, &bad_rc);
    /* The running holder's submits are still accepted (semantics 10) until
     * the CANCEL below switches the pool to cancelling. */
    struct stopper cancel;
    stopper_start(&cancel, p, ALS_SHUTDOWN_CANCEL);
    pthread_join(cancel.thread, NULL);
    pthread_join(drain.thread, NULL);
    assert_int_equal(bad_submit, 0);
    assert_int_equal(bad_rc, 0);
    assert_int_equal(cancel.rc, 0);
    assert_int_equal(drain.rc, 0);

    assert_int_equal(atomic_load(&h.fn), 1);
    assert_int_equal(h.bad_rc, 0);
    check_probes_cancelled(held);
    check_probes_cancelled(outside);
    for (int i = 0; i < N; i++) {
        if (atomic_load(&a[i].fn) != 0 || atomic_load(&a[i].cancel) != 1 ||
            atomic_load(&a[i].bad))
            fail_msg("task %d: fn %d cancel %d bad %d (want 0 1 0)", i,
                     atomic_load(&a[i].fn), atomic_load(&a[i].cancel),
                     atomic_load(&a[i].bad));
    }
    int probes = atomic_load(&held->n) + atomic_load(&outside->n);
    int at_once = probes_at_once(held); /* outside probes never run inline */
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1 + N + probes);
    assert_int_equal(s.completed, 1 + at_once);
    assert_int_equal(s.cancelled, N + probes - at_once);
    assert_int_equal(s.rejected, atomic_load(&held->full) + atomic_load(&outside->full));
    assert_balanced(&s);
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL), 0);
    als_pool_free(p);
    free(a);
    free(held);
    free(outside);
    als_free(ctx_store);
}

/* ---- semantics 10: submits during a DRAIN shutdown -------------------- */

struct during {
    als_pool_t *pool, *other;
    struct gate *gate;
    int value;
    _Atomic int children;      /* tree tasks run */
    _Atomic int child_bad;     /* a child's submit failed or saw the wrong value */
    int other_rc;              /* another pool's task submitting into pool */
    int other_drain_rc;
    int other_submit_rc;
};

static int during_child(void *arg);

static int during_child_level(struct during *d, int level)
{
    atomic_fetch_add(&d->children, 1);
    if (als_get(ctx_store) != &d->value)
        atomic_fetch_add(&d->child_bad, 1);
    if (level > 0) {
        for (int k = 0; k < 2; k++) {
            /* arg encodes the level in the low bits of a pointer into d */
            if (als_submit(als_pool_current(), during_child,
                           (char *)d + level - 1) != 0)
                atomic_fetch_add(&d->child_bad, 1);
        }
    }
    return 0;
}

static struct during *during_base;

static int during_child(void *arg)
{
    int level = (int)((char *)arg - (char *)during_base);
    return during_child_level(during_base, level);
}

static int during_other_task(void *arg)
{
    struct during *d = arg;
    d->other_rc = als_submit(d->pool, during_child, (char *)d + 0);
    return 0;
}

static int during_root(void *arg)
{
    struct during *d = arg;
    gate_pass(d->gate);
    /* The DRAIN has begun: this task's submits are accepted, a 3-level
     * tree of 14 tasks. */
    for (int k = 0; k < 2; k++)
        if (als_submit(d->pool, during_child, (char *)d + 2) != 0)
            atomic_fetch_add(&d->child_bad, 1);
    /* A task of another pool is not one of this pool's tasks. */
    d->other_submit_rc = als_submit(d->other, during_other_task, d);
    d->other_drain_rc = als_pool_drain(d->other);
    return 0;
}

struct root_submit {
    struct during *d;
    int rc;
};

static void *root_submit_here(void *arg)
{
    struct root_submit *rs = arg;
    rs->rc = als_submit(rs->d->pool, during_root, rs->d);
    return NULL;
}

static void test_submits_during_drain_shutdown(void **state)
{
    (void)state;
    ctx_store = als_new(NULL);
    als_pool_t *p = new_pool(2, 4096, ALS_FULL_BLOCK);
    als_pool_t *other = new_pool(1, 16, ALS_FULL_BLOCK);
    struct gate g;
    gate_init(&g);
    struct during *d = calloc(1, sizeof *d);
    assert_non_null(d);
    during_base = d;
    d->pool = p;
    d->other = other;
    d->gate = &g;
    d->other_rc = d->other_drain_rc = d->other_submit_rc = -100;
    struct root_submit rs = {d, -100};
    als_run(ctx_store, &d->value, root_submit_here, &rs);
    assert_int_equal(rs.rc, 0);
    gate_await_arrivals(&g, 1);

    struct probes *outside = calloc(1, sizeof *outside);
    assert_non_null(outside);
    struct stopper st;
    stopper_start(&st, p, ALS_SHUTDOWN_DRAIN);
    int bad_rc = 0;
    probe_until_shutdown(p, outside, &bad_rc);
    gate_open(&g);
    pthread_join(st.thread, NULL);
    assert_int_equal(bad_rc, 0);
    assert_int_equal(st.rc, 0);

    assert_int_equal(atomic_load(&d->children), 14);
    assert_int_equal(atomic_load(&d->child_bad), 0);
    assert_int_equal(d->other_submit_rc, 0);
    assert_int_equal(d->other_drain_rc, 0);
    assert_int_equal(d->other_rc, ALS_ESHUTDOWN);
    /* Probes accepted before the DRAIN began ran (DRAIN runs everything). */
    for (int i = 0; i < atomic_load(&outside->n); i++) {
        assert_int_equal(atomic_load(&outside->a[i].fn), 1);
        assert_int_equal(atomic_load(&outside->a[i].cancel), 0);
        assert_int_equal(atomic_load(&outside->a[i].bad), 0);
    }
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1 + 14 + atomic_load(&outside->n));
    assert_int_equal(s.completed, 1 + 14 + atomic_load(&outside->n));
    assert_int_equal(s.cancelled, 0);
    assert_balanced(&s);
    assert_int_equal(als_submit(p, during_child, (char *)d), ALS_ESHUTDOWN);
    als_pool_free(p);
    als_pool_free(other);
    gate_destroy(&g);
    free(outside);
    free(d);
    als_free(ctx_store);
}

/* ---- semantics 6: EDEADLK and the refused free ------------------------ */

struct selfish {
    als_pool_t *other;
    int drain_rc, shut_drain_rc, shut_cancel_rc, other_drain_rc, submit_rc;
    als_pool_t *after_free;
    _Atomic int followups;
};

static int followup_task(void *arg)
{
    struct selfish *sf = arg;
    atomic_fetch_add(&sf->followups, 1);
    return 0;
}

static int selfish_task(void *arg)
{
    struct selfish *sf = arg;
    als_pool_t *me = als_pool_current();
    sf->drain_rc = als_pool_drain(me);
    sf->shut_drain_rc = als_pool_shutdown(me, ALS_SHUTDOWN_DRAIN);
    sf->shut_cancel_rc = als_pool_shutdown(me, ALS_SHUTDOWN_CANCEL);
    als_pool_free(me);                  /* refused: the pool stays usable */
    sf->after_free = als_pool_current();
    sf->submit_rc = als_submit(me, followup_task, sf);
    sf->other_drain_rc = als_pool_drain(sf->other); /* not ours: fine */
    return 0;
}

static void test_deadlock_refusals(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(2, 16, ALS_FULL_BLOCK);
    als_pool_t *other = new_pool(1, 16, ALS_FULL_BLOCK);
    struct selfish sf = {.other = other, .drain_rc = -100, .shut_drain_rc = -100,
                         .shut_cancel_rc = -100, .other_drain_rc = -100,
                         .submit_rc = -100};
    assert_int_equal(als_submit(p, selfish_task, &sf), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(sf.drain_rc, ALS_EDEADLK);
    assert_int_equal(sf.shut_drain_rc, ALS_EDEADLK);
    assert_int_equal(sf.shut_cancel_rc, ALS_EDEADLK);
    assert_ptr_equal(sf.after_free, p);
    assert_int_equal(sf.submit_rc, 0);
    assert_int_equal(sf.other_drain_rc, 0);
    assert_int_equal(atomic_load(&sf.followups), 1);
    /* No shutdown began: the pool still takes and runs work. */
    for (int i = 0; i < 100; i++)
        assert_int_equal(als_submit(p, followup_task, &sf), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&sf.followups), 101);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 102);
    assert_int_equal(s.completed, 102);
    assert_int_equal(s.cancelled, 0);
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    als_pool_free(p);
    als_pool_free(other);
}

/* ---- semantics 10: als_pool_free without shutdown drains --------------- */

static _Atomic int free_runs[1000];

static int free_chain(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned idx = (unsigned)(v & 0xffff), left = (unsigned)(v >> 16);
    atomic_fetch_add(&free_runs[idx], 1);
    if (left > 0)
        als_submit(als_pool_current(), free_chain,
                   (void *)(uintptr_t)((idx + 1) | (uintptr_t)(left - 1) << 16));
    return 0;
}

static void test_free_without_shutdown_drains(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++)
        atomic_store(&free_runs[i], 0);
    als_pool_t *p = new_pool(2, 8, ALS_FULL_BLOCK);
    /* 20 chains of 10 tasks (200..399 by index ranges of 10) and 200
     * single tasks (0..199). */
    for (unsigned i = 0; i < 200; i++)
        assert_int_equal(als_submit(p, free_chain, (void *)(uintptr_t)i), 0);
    for (unsigned c = 0; c < 20; c++)
        assert_int_equal(als_submit(p, free_chain,
                                    (void *)(uintptr_t)((200 + 10 * c) | 9u << 16)), 0);
    als_pool_free(p);
    for (int i = 0; i < 400; i++)
        if (atomic_load(&free_runs[i]) != 1)
            fail_msg("task %d ran %d times", i, atomic_load(&free_runs[i]));
    for (int i = 400; i < 1000; i++)
        assert_int_equal(atomic_load(&free_runs[i]), 0);
}

/* ---- semantics 9: FULL_BLOCK ------------------------------------------ */

struct inline_child {
    _Atomic int runs;
    void *seen;
    uint64_t exec, trig;
    als_pool_t *pool;
    pthread_t thread;
    int during_parent;
    int grandchild_rc;
    struct inline_child *grandchild;
};

enum { INL_CHILDREN = 40, INL_CAP = 4 };

struct inline_parent {
    int pa, pb;
    _Atomic int parent_running;
    uint64_t exec, trig;
    pthread_t thread;
    int rc[INL_CHILDREN];
    int bad_after;             /* the parent's own context changed */
    struct inline_child child[INL_CHILDREN];
    struct inline_child grand[INL_CHILDREN];
    int gval;
};

static struct inline_parent *inl;

static int inline_child_task(void *arg)
{
    struct inline_child *c = arg;
    atomic_fetch_add(&c->runs, 1);
    c->seen = als_get(ctx_store);
    c->exec = als_execution_async_id();
    c->trig = als_trigger_async_id();
    c->pool = als_pool_current();
    c->thread = pthread_self();
    c->during_parent = atomic_load(&inl->parent_running);
    if (c->grandchild) {
        /* A nested submit into the same full pool, from an inline task. */
        als_enter_with(ctx_store, &inl->gval);
        c->grandchild_rc = als_submit(als_pool_current(), inline_child_task,
                                      c->grandchild);
    }
    return 0;
}

static void *inline_parent_body(void *arg)
{
    (void)arg;
    als_pool_t *me = als_pool_current();
    for (int i = 0; i < INL_CHILDREN; i++) {
        inl->rc[i] = als_submit(me, inline_child_task, &inl->child[i]);
        /* An inline run restores the submitter's context and ids exactly. */
        if (als_get(ctx_store) != &inl->pb || als_execution_async_id() != inl->exec ||
            als_trigger_async_id() != inl->trig || !pthread_equal(pthread_self(), inl->thread))
            inl->bad_after++;
    }
    return NULL;
}

static int inline_parent_task(void *arg)
{
    (void)arg;
    atomic_store(&inl->parent_running, 1);
    inl->exec = als_execution_async_id();
    inl->trig = als_trigger_async_id();
    inl->thread = pthread_self();
    als_run(ctx_store, &inl->pb, inline_parent_body, NULL);
    if (als_get(ctx_store) != &inl->pa)
        inl->bad_after++;
    atomic_store(&inl->parent_running, 0);
    return 0;
}

struct parent_submit {
    als_pool_t *pool;
    int rc;
};

static void *inline_submit_parent(void *arg)
{
    struct parent_submit *ps = arg;
    ps->rc = als_submit(ps->pool, inline_parent_task, NULL);
    return NULL;
}

static void test_full_block_self_submit_runs_inline(void **state)
{
    (void)state;
    ctx_store = als_new(NULL);
    inl = calloc(1, sizeof *inl);
    assert_non_null(inl);
    for (int i = 0; i < INL_CHILDREN; i++)
        if (i % 5 == 0)
            inl->child[i].grandchild = &inl->grand[i];
    /* One worker and a queue of 4: the parent's children overflow it. */
    als_pool_t *p = new_pool(1, INL_CAP, ALS_FULL_BLOCK);
    struct parent_submit ps = {p, -100};
    als_run(ctx_store, &inl->pa, inline_submit_parent, &ps);
    assert_int_equal(ps.rc, 0);
    assert_int_equal(als_pool_drain(p), 0);

    assert_int_equal(inl->bad_after, 0);
    int grandchildren = 0, during = 0;
    uint64_t ids[2 * INL_CHILDREN + 1];
    size_t nids = 0;
    ids[nids++] = inl->exec;
    for (int i = 0; i < INL_CHILDREN; i++) {
        struct inline_child *c = &inl->child[i];
        assert_int_equal(inl->rc[i], 0);
        assert_int_equal(atomic_load(&c->runs), 1);
        assert_ptr_equal(c->seen, &inl->pb);
        assert_int_equal(c->trig, inl->exec);
        assert_ptr_equal(c->pool, p);
        assert_true(pthread_equal(c->thread, inl->thread)); /* the only worker */
        during += c->during_parent;
        ids[nids++] = c->exec;
        if (c->grandchild) {
            grandchildren++;
            assert_int_equal(c->grandchild_rc, 0);
            assert_int_equal(atomic_load(&c->grandchild->runs), 1);
            assert_ptr_equal(c->grandchild->seen, &inl->gval);
            assert_int_equal(c->grandchild->trig, c->exec);
            ids[nids++] = c->grandchild->exec;
        }
    }
    /* At most `capacity` children waited in the queue, plus one in the
     * worker's own slot should it keep one (a per-worker local queue); the
     * rest ran inline while the parent was still running. */
    if (during < INL_CHILDREN - INL_CAP - 1)
        fail_msg("%d of %d children ran inline, want at least %d", during,
                 INL_CHILDREN, INL_CHILDREN - INL_CAP - 1);
    for (size_t i = 0; i < nids; i++)
        for (size_t j = i + 1; j < nids; j++)
            assert_true(ids[i] != ids[j]);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 1 + INL_CHILDREN + grandchildren);
    assert_int_equal(s.completed, 1 + INL_CHILDREN + grandchildren);
    assert_int_equal(s.rejected, 0);
    assert_balanced(&s);
    als_pool_free(p);
    free(inl);
    als_free(ctx_store);
}

/* Outside submitters wait for room under FULL_BLOCK. */
struct blocked_submitter {
    als_pool_t *pool;
    _Atomic int *ran;
    int n;
    int bad_rc;
    _Atomic int done;
};

static int ran_task(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return als_pool_current() ? 0 : 1;
}

static void *blocked_submitter_main(void *arg)
{
    struct blocked_submitter *b = arg;
    for (int i = 0; i < b->n; i++)
        if (als_submit(b->pool, ran_task, (void *)b->ran) != 0)
            b->bad_rc++;
    atomic_store(&b->done, 1);
    return NULL;
}

static int gated_task(void *arg)
{
    gate_pass(arg);
    return 0;
}

static void test_full_block_outside_waits(void **state)
{
    (void)state;
    als_pool_t *p = new_pool(1, 2, ALS_FULL_BLOCK);
    struct gate g;
    gate_init(&g);
    _Atomic int ran = 0;
    assert_int_equal(als_submit(p, gated_task, &g), 0);
    gate_await_arrivals(&g, 1);
    struct blocked_submitter b = {.pool = p, .ran = &ran, .n = 50};
    atomic_init(&b.done, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, blocked_submitter_main, &b), 0);
    /* The worker is held and at most 2 tasks fit: the submitter cannot be
     * done, nor can any of its tasks have run (inline or elsewhere). */
    nap_us(20000); /* not synchronising: only gives it time to go wrong */
    int done_early = atomic_load(&b.done);
    int ran_early = atomic_load(&ran);
    gate_open(&g);
    pthread_join(t, NULL);
    assert_int_equal(done_early, 0);
    assert_int_equal(ran_early, 0);
    assert_int_equal(b.bad_rc, 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&ran), 50);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.submitted, 51);
    assert_int_equal(s.completed, 51); /* ran_task fails off a worker */
    assert_int_equal(s.rejected, 0);
    assert_balanced(&s);
    als_pool_free(p);
    gate_destroy(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drain_waits_for_nested),
        cmocka_unit_test(test_shutdown_drain_accounting),
        cmocka_unit_test(test_shutdown_cancel_accounting),
        cmocka_unit_test(test_cancel_during_drain),
        cmocka_unit_test(test_submits_during_drain_shutdown),
        cmocka_unit_test(test_deadlock_refusals),
        cmocka_unit_test(test_free_without_shutdown_drains),
        cmocka_unit_test(test_full_block_self_submit_runs_inline),
        cmocka_unit_test(test_full_block_outside_waits),
    };
    /* POOL_TEST_FILTER=test_name (wildcards allowed) runs a subset. */
    if (getenv("POOL_TEST_FILTER"))
        cmocka_set_test_filter(getenv("POOL_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
