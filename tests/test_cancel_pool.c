/* Cancellation scopes and the pool (issue 15's semantics 1-6): tasks of
 * every kind whose scope is cancelled before they start are cancelled as a
 * CANCEL shutdown cancels them; submits inside a cancelled scope are
 * refused; delayed tasks go at once; waits inside a scope end with it;
 * groups own a scope and their policies cancel it; als_future_cancel.
 *
 * A one-worker pool held at a gate keeps tasks queued while the test
 * cancels, so "before they start" is certain without timing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "als.h"
#include "gate.h"
#include "pool_helpers.h"

#include <sched.h>
#include <stdatomic.h>

static als_t *store;
static _Atomic int ran, cancels, cancels_in_context, cancels_saw_cancelled;

static int setup(void **state)
{
    (void)state;
    store = als_new(NULL);
    atomic_store(&ran, 0);
    atomic_store(&cancels, 0);
    atomic_store(&cancels_in_context, 0);
    atomic_store(&cancels_saw_cancelled, 0);
    return store ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    als_free(store);
    return 0;
}

static int count_run(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return 0;
}

static void *count_run_fn(void *arg)
{
    count_run(arg);
    return arg;
}

/* The value bound around the submits; compared by address. */
static const char REQ[] = "req";

static void on_cancel(void *arg)
{
    (void)arg;
    atomic_fetch_add(&cancels, 1);
    if (als_get(store) == (void *)REQ)
        atomic_fetch_add(&cancels_in_context, 1);
    if (als_cancelled())
        atomic_fetch_add(&cancels_saw_cancelled, 1);
}

struct held {
    als_pool_t *pool;
    struct gate gate;
};

static void held_pool(struct held *h)
{
    h->pool = als_pool_new(&(als_pool_options){ .threads = 1 });
    assert_non_null(h->pool);
    block_pool(h->pool, &h->gate);
}

static void held_release(struct held *h)
{
    gate_open(&h->gate);
    assert_int_equal(als_pool_drain(h->pool), 0);
}

static void held_free(struct held *h)
{
    als_pool_free(h->pool);
    gate_destroy(&h->gate);
}

/* ---- 2: queued tasks of a cancelled scope are cancelled --------------- */

struct queued {
    als_pool_t *pool;
    als_future_t *future;
    als_group_t *group;
    int rc[4];
};

static void *submit_every_kind(void *arg)
{
    struct queued *q = arg;
    als_task t = { .fn = count_run, .cancel = on_cancel };
    q->rc[0] = als_submit_task(q->pool, &t);
    q->rc[1] = als_submit_task(q->pool, &t);
    q->rc[2] = als_submit_future(q->pool, count_run_fn, NULL, &q->future);
    q->group = als_group_new();
    q->rc[3] = als_group_submit(q->group, q->pool, count_run, NULL);
    return NULL;
}

static void *in_request(void *arg)
{
    return als_run(store, (void *)REQ, submit_every_kind, arg);
}

static void queued_tasks_of_a_cancelled_scope_are_cancelled(void **state)
{
    (void)state;
    struct held h;
    held_pool(&h);
    als_cancel_t *c = als_cancel_new(-1);
    assert_non_null(c);
    struct queued q = { .pool = h.pool };
    als_cancel_run(c, in_request, &q);
    for (int i = 0; i < 4; i++)
        assert_int_equal(q.rc[i], 0);
    assert_int_equal(als_cancel(c), 0);
    held_release(&h);

    assert_int_equal(atomic_load(&ran), 0);
    /* The cancel callbacks ran in their submit-time context, which sees
     * its scope cancelled. */
    assert_int_equal(atomic_load(&cancels), 2);
    assert_int_equal(atomic_load(&cancels_in_context), 2);
    assert_int_equal(atomic_load(&cancels_saw_cancelled), 2);
    assert_int_equal(als_future_wait(q.future, -1, NULL), ALS_ECANCELED);
    assert_int_equal(als_group_wait(q.group, -1), ALS_ECANCELED);
    als_pool_stats s;
    get_stats(h.pool, &s);
    assert_balanced(&s);
    assert_int_equal(s.cancelled, 4);
    als_future_release(q.future);
    als_group_free(q.group);
    als_cancel_release(c);
    held_free(&h);
}

/* Tasks of a scope that was not cancelled, queued beside them, run. */
static void other_scopes_are_untouched(void **state)
{
    (void)state;
    struct held h;
    held_pool(&h);
    als_cancel_t *a = als_cancel_new(-1), *b = als_cancel_new(-1);
    struct queued qa = { .pool = h.pool }, qb = { .pool = h.pool };
    als_cancel_run(a, in_request, &qa);
    als_cancel_run(b, in_request, &qb);
    als_cancel(a);
    held_release(&h);
    assert_int_equal(atomic_load(&ran), 4); /* b's four */
    assert_int_equal(atomic_load(&cancels), 2);
    assert_int_equal(als_group_wait(qb.group, -1), 0);
    void *r = NULL;
    assert_int_equal(als_future_wait(qb.future, -1, &r), 0);
    for (int i = 0; i < 2; i++) {
        als_future_release(i ? qb.future : qa.future);
        als_group_free(i ? qb.group : qa.group);
    }
    als_cancel_release(a);
    als_cancel_release(b);
    held_free(&h);
}

/* ---- 2: a submit inside a cancelled scope is refused ------------------ */

struct refused {
    als_pool_t *pool;
    int rc[7];
};

static void *submit_all_refused(void *arg)
{
    struct refused *r = arg;
    als_task t = { .fn = count_run, .cancel = on_cancel };
    als_future_t *f = NULL;
    r->rc[0] = als_submit(r->pool, count_run, NULL);
    r->rc[1] = als_submit_task(r->pool, &t);
    r->rc[2] = als_submit_after(r->pool, 1000, count_run, NULL);
    r->rc[3] = als_submit_future(r->pool, count_run_fn, NULL, &f);
    als_group_t *grp = als_group_new(); /* a child of the cancelled scope */
    r->rc[4] = grp ? als_group_submit(grp, r->pool, count_run, NULL) : -999;
    als_group_free(grp);
    /* A detached task has no context, so no scope: it is accepted. */
    als_task d = { .fn = count_run, .flags = ALS_TASK_DETACHED };
    r->rc[6] = als_submit_task(r->pool, &d);
    return NULL;
}

static void *then_refused(void *arg)
{
    void **a = arg;
    als_future_t *out = NULL;
    return (void *)(intptr_t)als_future_then(a[0], a[1], count_run_fn, &out);
}

static void submits_inside_a_cancelled_scope_are_refused(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 2 });
    assert_non_null(pool);
    als_future_t *src = NULL;
    assert_int_equal(als_submit_future(pool, count_run_fn, NULL, &src), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    als_pool_stats before;
    get_stats(pool, &before);

    als_cancel_t *c = als_cancel_new(-1);
    als_cancel(c);
    struct refused r = { .pool = pool };
    als_cancel_run(c, submit_all_refused, &r);
    void *targs[2] = { src, pool };
    intptr_t then_rc = (intptr_t)als_cancel_run(c, then_refused, targs);
    assert_int_equal(als_pool_drain(pool), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(r.rc[i], ALS_ECANCELED);
    assert_int_equal(then_rc, ALS_ECANCELED);
    assert_int_equal(r.rc[6], 0);
    als_pool_stats s;
    get_stats(pool, &s);
    /* Only the detached task was accepted; nothing was cancelled. */
    assert_int_equal(s.submitted, before.submitted + 1);
    assert_int_equal(s.cancelled, 0);
    assert_int_equal(atomic_load(&ran), 2);
    als_future_release(src);
    als_cancel_release(c);
    als_pool_free(pool);
}

/* ---- 3: delayed tasks go when their scope does ------------------------ */

struct delayed {
    als_pool_t *pool;
    int rc;
};

static void *submit_hour_late(void *arg)
{
    struct delayed *d = arg;
    /* An hour: if the task waited for its due time, the test would hang
     * (and time out) in gate_await_arrivals or the drain. */
    uint64_t hour = 3600ull * 1000000000ull;
    d->rc = als_submit_after(d->pool, hour, count_run, NULL);
    return NULL;
}

static void delayed_task_goes_with_its_scope(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 2 });
    assert_non_null(pool);
    /* Cancelled by als_cancel, then by a deadline. */
    int64_t deadline = 20 * 1000000;
    for (int how = 0; how < 2; how++) {
        als_cancel_t *c = als_cancel_new(how ? deadline : -1);
        struct delayed d = { .pool = pool };
        als_cancel_run(c, submit_hour_late, &d);
        if (how && d.rc == ALS_ECANCELED && deadline < 20000000000) {
            /* A slow machine (TSan) passed the deadline before the submit:
             * refused, as it should be; try a longer one. */
            als_cancel_release(c);
            deadline *= 10;
            how--;
            continue;
        }
        assert_int_equal(d.rc, 0);
        if (how == 0)
            als_cancel(c);
        als_cancel_release(c); /* the delayed task holds it */
        assert_int_equal(als_pool_drain(pool), 0); /* not an hour */
    }
    als_pool_stats s;
    get_stats(pool, &s);
    assert_balanced(&s);
    assert_int_equal(s.cancelled, 2);
    assert_int_equal(atomic_load(&ran), 0);
    als_pool_free(pool);
}

/* ---- 5: waits inside a scope end with it ------------------------------ */

struct waiter {
    als_future_t *f;
    als_group_t *g;
    als_cancel_t *c;
    int rc;
};

static void *wait_future(void *arg)
{
    struct waiter *w = arg;
    w->rc = als_future_wait(w->f, -1, NULL);
    return NULL;
}

static void *wait_group(void *arg)
{
    struct waiter *w = arg;
    w->rc = als_group_wait(w->g, -1);
    return NULL;
}

static void *run_waiter_in_scope(void *arg)
{
    struct waiter *w = arg;
    als_cancel_run(w->c, w->f ? wait_future : wait_group, w);
    return NULL;
}

static void waits_end_with_their_scope(void **state)
{
    (void)state;
    struct held h;
    held_pool(&h);
    als_future_t *f = NULL;
    assert_int_equal(als_submit_future(h.pool, count_run_fn, NULL, &f), 0);
    als_group_t *g = als_group_new();
    assert_int_equal(als_group_submit(g, h.pool, count_run, NULL), 0);

    /* Cancelled from another thread, whenever the waiter got there. */
    for (int kind = 0; kind < 2; kind++) {
        struct waiter w = { .f = kind ? NULL : f, .g = kind ? g : NULL,
                            .c = als_cancel_new(-1) };
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, run_waiter_in_scope, &w), 0);
        assert_int_equal(als_cancel(w.c), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(w.rc, ALS_ECANCELED);
        als_cancel_release(w.c);
    }
    /* The scope's deadline comes before the wait's own (none): TIMEDOUT. */
    for (int kind = 0; kind < 2; kind++) {
        struct waiter w = { .f = kind ? NULL : f, .g = kind ? g : NULL,
                            .c = als_cancel_new(2 * 1000000) };
        run_waiter_in_scope(&w);
        assert_int_equal(w.rc, ALS_ETIMEDOUT);
        als_cancel_release(w.c);
    }
    held_release(&h);
    /* Outside any scope the same waits see the tasks through. */
    assert_int_equal(als_future_wait(f, -1, NULL), 0);
    assert_int_equal(als_group_wait(g, -1), 0);
    assert_int_equal(atomic_load(&ran), 2);
    als_future_release(f);
    als_group_free(g);
    held_free(&h);
}

/* ---- 1, 6: groups own a scope; their policies ------------------------- */

static int fail7(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return 7;
}

static void group_policy_case(enum als_group_policy policy, als_task_fn first,
                              int want_wait, int want_ran, int want_cancelled)
{
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 1 });
    assert_non_null(pool);
    struct gate gate;
    block_pool(pool, &gate);
    atomic_store(&ran, 0);
    als_group_t *g = als_group_new_policy(policy);
    assert_non_null(g);
    /* FIFO on one worker: `first` decides before the others start. */
    assert_int_equal(als_group_submit(g, pool, first, NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(als_group_submit(g, pool, count_run, NULL), 0);
    gate_open(&gate);
    assert_int_equal(als_group_wait(g, -1), want_wait);
    assert_int_equal(atomic_load(&ran), want_ran);
    als_pool_stats s;
    assert_int_equal(als_pool_drain(pool), 0);
    get_stats(pool, &s);
    assert_int_equal(s.cancelled, want_cancelled);
    als_group_free(g);
    als_pool_free(pool);
    gate_destroy(&gate);
}

static void group_policies(void **state)
{
    (void)state;
    /* WAIT_ALL: a failure cancels nothing. */
    group_policy_case(ALS_GROUP_WAIT_ALL, fail7, ALS_ETASK, 4, 0);
    /* FAIL_FAST: the failure cancels the three not started. */
    group_policy_case(ALS_GROUP_FAIL_FAST, fail7, ALS_ETASK, 1, 3);
    /* FIRST_SUCCESS: the first success cancels the rest; wait says 0. */
    group_policy_case(ALS_GROUP_FIRST_SUCCESS, count_run, 0, 1, 3);
    /* FIRST_SUCCESS where the first fails: the next succeeds. */
    group_policy_case(ALS_GROUP_FIRST_SUCCESS, fail7, 0, 2, 2);
    assert_null(als_group_new_policy((enum als_group_policy)3));
    assert_int_equal(als_group_cancel(NULL), ALS_EINVAL);
}

static void group_first_success_none_succeeds(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 2 });
    als_group_t *g = als_group_new_policy(ALS_GROUP_FIRST_SUCCESS);
    for (int i = 0; i < 3; i++)
        assert_int_equal(als_group_submit(g, pool, fail7, NULL), 0);
    assert_int_equal(als_group_wait(g, -1), ALS_ETASK); /* as WAIT_ALL */
    int first = 0;
    assert_int_equal(als_group_first_error(g, &first), 0);
    assert_int_equal(first, 7);
    als_group_free(g);
    als_pool_free(pool);
}

/* A running task of a cancelled group sees it; what it submits inherits
 * the group's scope (so it is refused). */
static struct gate poll_started;
static _Atomic int poll_saw, poll_submit_rc;

static int poll_until_cancelled(void *arg)
{
    als_pool_t *pool = arg;
    gate_pass(&poll_started); /* the test opens it at once */
    while (!als_cancelled())
        sched_yield();
    atomic_store(&poll_saw, 1);
    atomic_store(&poll_submit_rc, als_submit(pool, count_run, NULL));
    return 0;
}

static void group_cancel_reaches_running_and_queued(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 1 });
    gate_init(&poll_started);
    gate_open(&poll_started);
    als_group_t *g = als_group_new();
    assert_int_equal(als_group_submit(g, pool, poll_until_cancelled, pool), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(als_group_submit(g, pool, count_run, NULL), 0);
    gate_await_arrivals(&poll_started, 1);
    assert_int_equal(als_group_cancel(g), 0);
    assert_int_equal(als_group_wait(g, -1), ALS_ECANCELED);
    assert_int_equal(atomic_load(&poll_saw), 1);
    assert_int_equal(atomic_load(&poll_submit_rc), ALS_ECANCELED);
    assert_int_equal(atomic_load(&ran), 0);
    assert_int_equal(als_group_submit(g, pool, count_run, NULL), ALS_ECANCELED);
    als_group_free(g);
    als_pool_free(pool);
    gate_destroy(&poll_started);
}

/* A group made inside a scope is cancelled with it. */
static void *new_group_fn(void *arg)
{
    (void)arg;
    return als_group_new();
}

static void group_scope_is_a_child(void **state)
{
    (void)state;
    struct held h;
    held_pool(&h);
    als_cancel_t *c = als_cancel_new(-1);
    als_group_t *g = als_cancel_run(c, new_group_fn, NULL);
    assert_non_null(g);
    assert_int_equal(als_group_submit(g, h.pool, count_run, NULL), 0);
    als_cancel(c);
    held_release(&h);
    assert_int_equal(als_group_wait(g, -1), ALS_ECANCELED);
    assert_int_equal(atomic_load(&ran), 0);
    als_group_free(g);
    als_cancel_release(c);
    held_free(&h);
}

/* ---- als_future_cancel ------------------------------------------------ */

static void future_cancel_before_start(void **state)
{
    (void)state;
    struct held h;
    held_pool(&h);
    als_future_t *f = NULL, *cont = NULL;
    assert_int_equal(als_submit_future(h.pool, count_run_fn, NULL, &f), 0);
    assert_int_equal(als_future_then(f, h.pool, count_run_fn, &cont), 0);
    assert_int_equal(als_future_cancel(f), 0);
    /* Settled at once, while its task still waits in the queue. */
    assert_int_equal(als_future_wait(f, -1, NULL), ALS_ECANCELED);
    assert_int_equal(als_future_wait(cont, -1, NULL), ALS_ECANCELED);
    assert_int_equal(als_future_cancel(f), ALS_EINVAL); /* not twice */
    held_release(&h);
    assert_int_equal(atomic_load(&ran), 0);
    als_pool_stats s;
    get_stats(h.pool, &s);
    assert_balanced(&s);
    assert_int_equal(s.cancelled, 1);

    /* A future whose task ran (or started) cannot be cancelled. */
    als_future_t *done = NULL;
    assert_int_equal(als_submit_future(h.pool, count_run_fn, NULL, &done), 0);
    assert_int_equal(als_future_wait(done, -1, NULL), 0);
    assert_int_equal(als_future_cancel(done), ALS_EINVAL);
    assert_int_equal(als_future_cancel(NULL), ALS_EINVAL);
    als_future_release(f);
    als_future_release(cont);
    als_future_release(done);
    held_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(queued_tasks_of_a_cancelled_scope_are_cancelled, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(other_scopes_are_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(submits_inside_a_cancelled_scope_are_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(delayed_task_goes_with_its_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(waits_end_with_their_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(group_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(group_first_success_none_succeeds, setup, teardown),
        cmocka_unit_test_setup_teardown(group_cancel_reaches_running_and_queued, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(group_scope_is_a_child, setup, teardown),
        cmocka_unit_test_setup_teardown(future_cancel_before_start, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
