/*
 * Cancellation scopes and deadlines carried by the context (issue 15,
 * first phase: everything but the pool's and groups' use of them): the
 * scope tree, callbacks, deadlines, carriage by every capture kind, and
 * exact reference counting (ASan's leak check, and a live-scope counter of
 * test builds).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "als.h"
#include "internal.h"
#include "tsan.h" /* ALS__TSAN: built with ThreadSanitizer */
#include "gate.h"

#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static long live0, timers0;

static int setup(void **state)
{
    (void)state;
    live0 = als__test_cancel_live();
    timers0 = als__test_cancel_timers();
    return 0;
}

/* Every test leaves no scope and no deadline behind. */
static int teardown(void **state)
{
    (void)state;
    assert_int_equal(als__test_cancel_timers(), timers0); /* first: quiesces */
    assert_int_equal(als__test_cancel_live(), live0);
    return 0;
}

/* als_cancelled() inside c, as 0/1 in a pointer. */
static void *probe(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)als_cancelled();
}

static int cancelled_in(als_cancel_t *c)
{
    return (int)(intptr_t)als_cancel_run(c, probe, NULL);
}

static void *snap_fn(void *arg)
{
    (void)arg;
    return als_snapshot();
}

/* A new scope made inside `parent` (its child). */
static void *make_child(void *arg)
{
    return als_cancel_new(arg ? *(int64_t *)arg : -1);
}

static als_cancel_t *child_of(als_cancel_t *parent, int64_t timeout_ns)
{
    return als_cancel_run(parent, make_child, &timeout_ns);
}

/* ---- the tree ---------------------------------------------------------- */

static void test_cancel_propagates_to_descendants_only(void **state)
{
    (void)state;
    als_cancel_t *root = als_cancel_new(-1);
    als_cancel_t *other = als_cancel_new(-1);
    assert_non_null(root);
    als_cancel_t *mid = child_of(root, -1);
    als_cancel_t *leaf = child_of(mid, -1);
    als_cancel_t *sib = child_of(root, -1);
    assert_non_null(leaf);
    assert_false(cancelled_in(root) || cancelled_in(mid) || cancelled_in(leaf) ||
                 cancelled_in(sib));

    assert_int_equal(als_cancel(mid), 0);
    assert_true(cancelled_in(mid));
    assert_true(cancelled_in(leaf));
    assert_false(cancelled_in(root));
    assert_false(cancelled_in(sib));

    assert_int_equal(als_cancel(root), 0);
    assert_true(cancelled_in(root));
    assert_true(cancelled_in(sib));
    assert_false(cancelled_in(other));
    /* A child made inside a cancelled scope is born cancelled. */
    als_cancel_t *late = child_of(root, -1);
    assert_true(cancelled_in(late));
    /* Cancelling an ancestor reaches grandchildren through a live middle. */
    als_cancel_t *r2 = als_cancel_new(-1);
    als_cancel_t *m2 = child_of(r2, -1);
    als_cancel_t *l2 = child_of(m2, -1);
    als_cancel_t *l2b = child_of(m2, -1);
    als_cancel(r2);
    assert_true(cancelled_in(m2) && cancelled_in(l2) && cancelled_in(l2b));
    for (als_cancel_t **p = (als_cancel_t *[]){root, other, mid, leaf, sib, late, r2, m2, l2, l2b,
                                               NULL};
         *p; p++)
        als_cancel_release(*p);
}

static void test_releasing_never_cancels(void **state)
{
    (void)state;
    als_cancel_t *root = als_cancel_new(-1);
    als_cancel_t *child = child_of(root, -1);
    als_cancel_t *grand = child_of(child, -1);
    als_cancel_release(child); /* the middle goes: the grandchild is orphaned */
    assert_false(cancelled_in(grand));
    assert_false(cancelled_in(root));
    als_cancel_release(root);
    assert_false(cancelled_in(grand));
    assert_int_equal(als_cancel(grand), 0);
    assert_true(cancelled_in(grand));
    als_cancel_release(grand);
}

/* A cancelled scope reads as cancelled however many other scopes, of
 * every kind, come and go meanwhile (als_cancelled's fast path counts the
 * scopes that may be cancelled: freeing one that never counted must not
 * uncount another). */
static void test_cancelled_stays_seen_while_others_come_and_go(void **state)
{
    (void)state;
    als_cancel_t *b = als_cancel_new(-1);
    assert_false(cancelled_in(b));
    assert_int_equal(als_cancel(b), 0);
    for (int kind = 0; kind < 4; kind++) {
        als_cancel_t *a = als_cancel_new(kind == 1 ? INT64_C(3600000000000) : -1);
        assert_non_null(a);
        assert_false(cancelled_in(a));
        if (kind == 2)
            assert_int_equal(als_cancel(a), 0);
        if (kind == 3) {
            als_cancel_t *k = child_of(a, -1);
            assert_int_equal(als_cancel(a), 0);
            assert_true(cancelled_in(k));
            als_cancel_release(k);
        }
        als_cancel_release(a);
        assert_true(cancelled_in(b));
    }
    als_cancel_t *fresh = als_cancel_new(-1);
    assert_false(cancelled_in(fresh));
    als_cancel_release(fresh);
    als_cancel_release(b);
}

static _Atomic int calls;

static void count_call(void *arg)
{
    (void)arg;
    atomic_fetch_add(&calls, 1);
}

static void test_cancel_is_idempotent(void **state)
{
    (void)state;
    atomic_store(&calls, 0);
    als_cancel_t *c = als_cancel_new(-1);
    als_cancel_t *k = child_of(c, -1);
    assert_true(als_cancel_on(c, count_call, NULL) > 0);
    assert_true(als_cancel_on(k, count_call, NULL) > 0);
    assert_int_equal(als_cancel(c), 0);
    assert_int_equal(atomic_load(&calls), 2);
    assert_int_equal(als_cancel(c), 0);
    assert_int_equal(als_cancel(k), 0);
    assert_int_equal(atomic_load(&calls), 2);
    assert_true(cancelled_in(c));
    als_cancel_release(k);
    als_cancel_release(c);
}

static void *not_called(void *arg)
{
    (void)arg;
    fail_msg("called");
    return NULL;
}

static void test_null_arguments(void **state)
{
    (void)state;
    assert_int_equal(als_cancel(NULL), ALS_EINVAL);
    assert_null(als_cancel_retain(NULL));
    als_cancel_release(NULL);
    assert_null(als_cancel_run(NULL, not_called, NULL));
    als_cancel_t *c = als_cancel_new(-1);
    assert_null(als_cancel_run(c, NULL, NULL));
    assert_int_equal(als_cancel_on(NULL, count_call, NULL), ALS_EINVAL);
    assert_int_equal(als_cancel_on(c, NULL, NULL), ALS_EINVAL);
    assert_int_equal(als_cancel_off(NULL, 1), ALS_EINVAL);
    assert_int_equal(als_cancel_off(c, 0), ALS_EINVAL);
    assert_int_equal(als_cancel_off(c, 12345), ALS_EINVAL);
    /* No scope: nothing is cancelled and there is no deadline. */
    assert_null(als_cancel_current());
    assert_int_equal(als_cancelled(), 0);
    assert_true(als_deadline_remaining() == INT64_MAX);
    als_cancel_release(c);
}

static void *current_of(void *arg)
{
    (void)arg;
    return als_cancel_current();
}

static void *nested_current(void *arg)
{
    als_cancel_t *inner = arg;
    als_cancel_t *got = als_cancel_run(inner, current_of, NULL);
    if (got != inner)
        return NULL;
    als_cancel_release(got);
    return als_cancel_current(); /* the outer scope again */
}

static void test_current_is_the_innermost_run(void **state)
{
    (void)state;
    als_cancel_t *a = als_cancel_new(-1), *b = als_cancel_new(-1);
    als_cancel_t *got = als_cancel_run(a, nested_current, b);
    assert_ptr_equal(got, a);
    als_cancel_release(got);
    assert_null(als_cancel_current());
    /* The references: a and b are freed by these releases alone. */
    long before = als__test_cancel_live();
    als_cancel_release(a);
    als_cancel_release(b);
    assert_int_equal(als__test_cancel_live(), before - 2);
}

/* ---- callbacks --------------------------------------------------------- */

struct seen {
    pthread_t thread;
    _Atomic int n;
};

static void note_thread(void *arg)
{
    struct seen *s = arg;
    s->thread = pthread_self();
    atomic_fetch_add(&s->n, 1);
}

static void test_callback_runs_at_once_when_already_cancelled(void **state)
{
    (void)state;
    struct seen s = {0};
    als_cancel_t *c = als_cancel_new(-1);
    als_cancel(c);
    int64_t id = als_cancel_on(c, note_thread, &s);
    assert_true(id > 0);
    assert_int_equal(atomic_load(&s.n), 1); /* before als_cancel_on returned */
    assert_true(pthread_equal(s.thread, pthread_self()));
    assert_int_equal(als_cancel_off(c, id), ALS_EINVAL);
    als_cancel(c);
    assert_int_equal(atomic_load(&s.n), 1);
    als_cancel_release(c);
}

static void *cancel_thread(void *arg)
{
    als_cancel(arg);
    return NULL;
}

static void test_callback_runs_once_on_the_cancelling_thread(void **state)
{
    (void)state;
    struct seen s = {0}, k = {0};
    als_cancel_t *c = als_cancel_new(-1);
    als_cancel_t *child = child_of(c, -1);
    assert_true(als_cancel_on(c, note_thread, &s) > 0);
    assert_true(als_cancel_on(child, note_thread, &k) > 0);
    assert_int_equal(atomic_load(&s.n), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_thread, c), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(atomic_load(&s.n), 1);
    assert_int_equal(atomic_load(&k.n), 1); /* a descendant's too */
    assert_true(pthread_equal(s.thread, t));
    assert_true(pthread_equal(k.thread, t));
    als_cancel(c);
    assert_int_equal(atomic_load(&s.n), 1);
    als_cancel_release(child);
    als_cancel_release(c);
}

static void test_off_before_cancel_removes_the_callback(void **state)
{
    (void)state;
    atomic_store(&calls, 0);
    als_cancel_t *c = als_cancel_new(-1);
    int64_t a = als_cancel_on(c, count_call, NULL);
    int64_t b = als_cancel_on(c, count_call, NULL);
    assert_true(a > 0 && b > 0 && a != b);
    assert_int_equal(als_cancel_off(c, a), 0);
    assert_int_equal(als_cancel_off(c, a), ALS_EINVAL); /* gone already */
    als_cancel(c);
    assert_int_equal(atomic_load(&calls), 1);
    assert_int_equal(als_cancel_off(c, b), ALS_EINVAL); /* it ran */
    als_cancel_release(c);
}

static void test_unrun_callbacks_are_freed_with_the_scope(void **state)
{
    (void)state;
    atomic_store(&calls, 0);
    als_cancel_t *c = als_cancel_new(-1);
    assert_true(als_cancel_on(c, count_call, NULL) > 0);
    als_cancel_release(c); /* never cancelled: never runs, nothing leaks */
    assert_int_equal(atomic_load(&calls), 0);
}

/* A counter a thread bumps and the test waits on, with a bound. */
struct note {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    pthread_t thread; /* the last poster */
};

static void note_init(struct note *t)
{
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->n = 0;
}

static void note_destroy(struct note *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

static void note_post(struct note *t)
{
    pthread_mutex_lock(&t->mu);
    t->n++;
    t->thread = pthread_self();
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Waits until n posts were made or `ms` passed; returns the posts made. */
static int note_wait(struct note *t, int n, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->mu);
    while (t->n < n && pthread_cond_timedwait(&t->cv, &t->mu, &until) != ETIMEDOUT)
        ;
    int got = t->n;
    pthread_mutex_unlock(&t->mu);
    return got;
}

/* off waits for a running callback. */
struct slow {
    struct gate gate;
    als_cancel_t *c;
    int64_t id;
    struct note off_returned;
    _Atomic int off_returned_before_end; /* what the callback saw */
    int off_rc;
};

static void slow_callback(void *arg)
{
    struct slow *s = arg;
    gate_pass(&s->gate);
    atomic_store(&s->off_returned_before_end, note_wait(&s->off_returned, 1, 0));
}

static void *off_thread(void *arg)
{
    struct slow *s = arg;
    s->off_rc = als_cancel_off(s->c, s->id);
    note_post(&s->off_returned);
    return NULL;
}

static void test_off_waits_for_a_running_callback(void **state)
{
    (void)state;
    struct slow s = {.c = als_cancel_new(-1)};
    gate_init(&s.gate);
    note_init(&s.off_returned);
    s.id = als_cancel_on(s.c, slow_callback, &s);
    pthread_t canceller, offer;
    assert_int_equal(pthread_create(&canceller, NULL, cancel_thread, s.c), 0);
    gate_await_arrivals(&s.gate, 1); /* the callback is running */
    assert_int_equal(pthread_create(&offer, NULL, off_thread, &s), 0);
    /* Give off a while to return wrongly (without the fix it returns at
     * once). This bounded wait only sizes the test's power to catch the
     * bug: the test passes whatever the timing when off waits. */
    int early = note_wait(&s.off_returned, 1, 200);
    gate_open(&s.gate);
    assert_int_equal(pthread_join(offer, NULL), 0);
    assert_int_equal(pthread_join(canceller, NULL), 0);
    assert_int_equal(early, 0);
    assert_int_equal(atomic_load(&s.off_returned_before_end), 0);
    assert_int_equal(s.off_rc, ALS_EINVAL);
    als_cancel_release(s.c);
    note_destroy(&s.off_returned);
    gate_destroy(&s.gate);
}

struct self_off {
    als_cancel_t *c;
    int64_t id;
    int rc;
};

static void off_myself(void *arg)
{
    struct self_off *s = arg;
    s->rc = als_cancel_off(s->c, s->id); /* must not wait for itself */
}

static void test_off_from_inside_the_callback_does_not_wait(void **state)
{
    (void)state;
    struct self_off s = {.c = als_cancel_new(-1), .rc = 1};
    s.id = als_cancel_on(s.c, off_myself, &s);
    als_cancel(s.c);
    assert_int_equal(s.rc, ALS_EINVAL);
    als_cancel_release(s.c);
}

/* ---- deadlines --------------------------------------------------------- */

static void *remaining(void *arg)
{
    *(int64_t *)arg = als_deadline_remaining();
    return NULL;
}

static int64_t remaining_in(als_cancel_t *c)
{
    int64_t r = -1;
    als_cancel_run(c, remaining, &r);
    return r;
}

#define HOUR_NS (3600 * INT64_C(1000000000))

static void test_child_deadline_is_never_later_than_parent(void **state)
{
    (void)state;
    als_cancel_t *none = als_cancel_new(-1);
    assert_true(remaining_in(none) == INT64_MAX);
    als_cancel_t *parent = als_cancel_new(HOUR_NS);
    als_cancel_t *longer = child_of(parent, 100 * HOUR_NS);
    als_cancel_t *inherit = child_of(parent, -1);
    als_cancel_t *shorter = child_of(parent, HOUR_NS / 2);
    int64_t p = remaining_in(parent);
    assert_true(p > 0 && p <= HOUR_NS);
    assert_true(remaining_in(longer) <= p);
    assert_true(remaining_in(inherit) <= p);
    assert_true(remaining_in(shorter) <= HOUR_NS / 2);
    /* Cancelled: 0 left, whatever the deadline. */
    als_cancel(shorter);
    assert_true(remaining_in(shorter) == 0);
    assert_true(remaining_in(parent) > 0);
    /* Timeout 0: born past its deadline, so cancelled. */
    als_cancel_t *zero = als_cancel_new(0);
    assert_true(cancelled_in(zero));
    assert_true(remaining_in(zero) == 0);
    for (als_cancel_t **c = (als_cancel_t *[]){none, parent, longer, inherit, shorter, zero, NULL};
         *c; c++)
        als_cancel_release(*c);
}

static void on_fire(void *arg)
{
    note_post(arg);
}

static void test_deadline_cancels_on_the_deadline_thread(void **state)
{
    (void)state;
    /* A short deadline, which may pass before the callbacks are registered
     * on a loaded machine (they then run at once, on this thread): try
     * again with a deadline ten times longer until they were registered. */
    for (int64_t timeout = 1000000;; timeout *= 10) {
        struct note f;
        note_init(&f);
        als_cancel_t *c = als_cancel_new(timeout);
        als_cancel_t *child = child_of(c, -1);
        assert_true(als_cancel_on(c, on_fire, &f) > 0);
        assert_true(als_cancel_on(child, on_fire, &f) > 0);
        bool late = note_wait(&f, 1, 0) > 0;
        /* A generous bound: the deadline thread will come. */
        int n = note_wait(&f, 2, 60000);
        pthread_t t = f.thread;
        assert_int_equal(n, 2);
        if (!late) {
            assert_false(pthread_equal(t, pthread_self()));
            assert_true(cancelled_in(c));
            assert_true(cancelled_in(child));
            assert_true(remaining_in(c) == 0);
        }
        als_cancel_release(child);
        als_cancel_release(c);
        note_destroy(&f);
        if (!late)
            break;
        assert_true(timeout < 60 * INT64_C(1000000000));
    }
}

static void test_released_scopes_drop_their_deadline(void **state)
{
    (void)state;
    long t0 = als__test_cancel_timers();
    als_cancel_t *a = als_cancel_new(HOUR_NS);
    als_cancel_t *b = als_cancel_new(2 * HOUR_NS);
    als_cancel_t *k = child_of(a, -1); /* a timer of its own */
    assert_int_equal(als__test_cancel_timers(), t0 + 3);
    als_cancel_release(b);
    assert_int_equal(als__test_cancel_timers(), t0 + 2);
    /* A capture keeps the scope, and so its deadline. */
    als_snapshot_t *snap = als_cancel_run(a, snap_fn, NULL);
    als_cancel_release(a);
    assert_int_equal(als__test_cancel_timers(), t0 + 2);
    als_snapshot_release(snap);
    assert_int_equal(als__test_cancel_timers(), t0 + 1);
    /* Cancelling drops it too. */
    als_cancel(k);
    assert_int_equal(als__test_cancel_timers(), t0);
    als_cancel_release(k);
}

/* ---- carried by every capture kind ------------------------------------- */

/* What code running in a capture saw: its scope, and whether cancelled. */
struct saw {
    als_cancel_t *scope;
    int cancelled;
};

static void *look(void *arg)
{
    struct saw *s = arg;
    s->scope = als_cancel_current();
    s->cancelled = als_cancelled();
    return arg;
}

static void check_saw(struct saw *s, als_cancel_t *c, int cancelled)
{
    assert_ptr_equal(s->scope, c);
    assert_int_equal(s->cancelled, cancelled);
    als_cancel_release(s->scope);
}

/* A capture kind: made inside the scope, entered (to run look) after. */
struct capture_kind {
    als_fn make;
    void (*enter)(void *capture, struct saw *s);
    void (*drop)(void *capture);
};

/* The capture carries the scope, and holds it after the handle goes. */
static void check_capture(const struct capture_kind *k)
{
    als_cancel_t *c = als_cancel_new(-1);
    void *capture = als_cancel_run(c, k->make, NULL);
    assert_non_null(capture);
    struct saw s;
    k->enter(capture, &s);
    check_saw(&s, c, 0);
    als_cancel(c);
    als_cancel_release(c);
    k->enter(capture, &s);
    check_saw(&s, c, 1);
    k->drop(capture);
}

static void snap_enter(void *snap, struct saw *s)
{
    als_snapshot_run(snap, look, s);
}

static void snap_drop(void *snap)
{
    als_snapshot_release(snap);
}

static void test_snapshot_carries_the_scope(void **state)
{
    (void)state;
    check_capture(&(struct capture_kind){snap_fn, snap_enter, snap_drop});
}

static void *bind_fn(void *arg)
{
    (void)arg;
    return als_bind(look);
}

static void bound_enter(void *b, struct saw *s)
{
    als_bound_call(b, s);
}

static void bound_drop(void *b)
{
    als_bound_free(b);
}

static void test_bound_function_carries_the_scope(void **state)
{
    (void)state;
    check_capture(&(struct capture_kind){bind_fn, bound_enter, bound_drop});
}

static void *resource_fn(void *arg)
{
    (void)arg;
    return als_resource_new("t");
}

static void resource_enter(void *r, struct saw *s)
{
    als_resource_run_in_scope(r, look, s);
}

static void resource_drop(void *r)
{
    als_resource_free(r);
}

static void test_resource_carries_the_scope(void **state)
{
    (void)state;
    check_capture(&(struct capture_kind){resource_fn, resource_enter, resource_drop});
}

static struct gate thread_gate;

static void *thread_body(void *arg)
{
    gate_pass(&thread_gate); /* until the test has cancelled */
    return look(arg);
}

static void *spawn(void *arg)
{
    pthread_t *t = ((void **)arg)[0];
    return (void *)(intptr_t)als_thread_create(t, NULL, thread_body, ((void **)arg)[1]);
}

static void test_thread_carries_the_scope(void **state)
{
    (void)state;
    gate_init(&thread_gate);
    als_cancel_t *c = als_cancel_new(-1);
    pthread_t t;
    struct saw s;
    void *args[2] = {&t, &s};
    assert_int_equal((intptr_t)als_cancel_run(c, spawn, args), 0);
    als_cancel(c);
    als_cancel_release(c);
    gate_open(&thread_gate);
    assert_int_equal(pthread_join(t, NULL), 0);
    check_saw(&s, c, 1);
    gate_destroy(&thread_gate);
}

struct submit_arg {
    als_pool_t *pool;
    struct saw *saw;
};

static int task_look(void *arg)
{
    look(arg);
    return 0;
}

static void *submit_fn(void *arg)
{
    struct submit_arg *a = arg;
    return (void *)(intptr_t)als_submit(a->pool, task_look, a->saw);
}

static void test_pool_task_carries_the_scope(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){.threads = 1});
    assert_non_null(pool);
    als_cancel_t *c = als_cancel_new(-1);
    struct saw s[2];
    struct submit_arg a = {pool, &s[0]};
    assert_int_equal((intptr_t)als_cancel_run(c, submit_fn, &a), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    check_saw(&s[0], c, 0);
    als_cancel(c);
    /* Inside a cancelled scope a submit is refused (issue 15, semantics 2;
     * test_cancel_pool checks the rest of it). */
    a.saw = &s[1];
    assert_int_equal((intptr_t)als_cancel_run(c, submit_fn, &a), ALS_ECANCELED);
    als_cancel_release(c);
    assert_int_equal(als_pool_drain(pool), 0);
    als_pool_free(pool);
}

/* ---- the store behind it ---------------------------------------------- */

static void *disable_and_probe(void *arg)
{
    als_disable(arg); /* a user's store: the scope is not affected */
    return (void *)(intptr_t)(als_cancelled() * 2 + (als_cancel_current() != NULL));
}

static void test_user_stores_do_not_reach_the_scope(void **state)
{
    (void)state;
    als_t *user = als_new(NULL);
    als_cancel_t *c = als_cancel_new(-1);
    als_cancel(c);
    intptr_t r = (intptr_t)als_cancel_run(c, disable_and_probe, user);
    assert_int_equal(r, 3);
    /* als_cancel_current took a reference in there: give it back. */
    als_cancel_release(c);
    als_cancel_release(c);
    als_free(user);
}

/* ---- fork -------------------------------------------------------------- */

/* The child's checks; its exit code names the first that failed. */
static int fork_child_checks(als_cancel_t *pending)
{
    atomic_store(&calls, 0);
    als_cancel_t *c = child_of(pending, -1); /* the lock is usable */
    if (!c || cancelled_in(c))
        return 10;
    if (als_cancel_on(c, count_call, NULL) <= 0 || als_cancel(pending) != 0)
        return 11;
    if (!cancelled_in(c) || atomic_load(&calls) != 1)
        return 12;
#ifndef ALS__TSAN
    /* A new deadline thread serves the child (TSan allows no thread
     * creation after a multithreaded fork). */
    struct note f;
    note_init(&f);
    als_cancel_t *d = als_cancel_new(1000000);
    if (!d || als_cancel_on(d, on_fire, &f) <= 0 || note_wait(&f, 1, 60000) != 1)
        return 13;
#endif
    return 0;
}

static void test_fork_child_keeps_working(void **state)
{
    (void)state;
#ifndef ALS__TSAN
    als_cancel_t *pending = als_cancel_new(HOUR_NS); /* the deadline thread runs */
#else
    /* No deadline: its children in the child would start a thread, which
     * TSan does not allow after a multithreaded fork. */
    als_cancel_t *pending = als_cancel_new(-1);
#endif
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fork_child_checks(pending));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_false(cancelled_in(pending)); /* the child's cancel stayed there */
    als_cancel_release(pending);
}

/* ---- allocation failures ----------------------------------------------- */

static void test_allocation_failures_change_nothing(void **state)
{
    (void)state;
    als_cancel_t *warm = als_cancel_new(HOUR_NS); /* store and thread exist */
    als_cancel_release(warm);
    for (long n = 1;; n++) {
        als__test_fail_alloc(n, false);
        als_cancel_t *c = als_cancel_new(HOUR_NS);
        long attempts = als__test_fail_alloc(0, false);
        if (attempts < n) {
            assert_non_null(c);
            als_cancel_release(c);
            break;
        }
        assert_null(c);
    }
    als_cancel_t *c = als_cancel_new(-1);
    atomic_store(&calls, 0);
    als__test_fail_alloc(1, false);
    assert_int_equal(als_cancel_on(c, count_call, NULL), ALS_ENOMEM);
    als__test_fail_alloc(0, false);
    /* als_cancel_run: its binding's table may need allocating on a fresh
     * thread; whatever fails, the reference it took is given back. */
    als__test_fail_alloc(1, true);
    als_snapshot_t *snap = als_cancel_run(c, snap_fn, NULL);
    als__test_fail_alloc(0, false);
    assert_null(snap);
    als_cancel(c);
    assert_int_equal(atomic_load(&calls), 0);
    als_cancel_release(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_cancel_propagates_to_descendants_only),
        T(test_releasing_never_cancels),
        T(test_cancelled_stays_seen_while_others_come_and_go),
        T(test_cancel_is_idempotent),
        T(test_null_arguments),
        T(test_current_is_the_innermost_run),
        T(test_callback_runs_at_once_when_already_cancelled),
        T(test_callback_runs_once_on_the_cancelling_thread),
        T(test_off_before_cancel_removes_the_callback),
        T(test_unrun_callbacks_are_freed_with_the_scope),
        T(test_off_waits_for_a_running_callback),
        T(test_off_from_inside_the_callback_does_not_wait),
        T(test_child_deadline_is_never_later_than_parent),
        T(test_deadline_cancels_on_the_deadline_thread),
        T(test_released_scopes_drop_their_deadline),
        T(test_snapshot_carries_the_scope),
        T(test_bound_function_carries_the_scope),
        T(test_resource_carries_the_scope),
        T(test_thread_carries_the_scope),
        T(test_pool_task_carries_the_scope),
        T(test_user_stores_do_not_reach_the_scope),
        T(test_fork_child_keeps_working),
        T(test_allocation_failures_change_nothing),
#undef T
    };
    return cmocka_run_group_tests_name("cancel", tests, NULL, NULL);
}
