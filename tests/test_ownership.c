/*
 * Ownership of bound values (issue 2, semantics 9, 10 and 15): a store with
 * `destroy` calls it exactly once per binding, synchronously, on the thread
 * that drops the last reference, once nothing can reach the value; never
 * with NULL; als_disable and als_free destroy nothing by themselves.
 */
#define _POSIX_C_SOURCE 200809L /* barriers */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <als.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* A value that counts its destructions and remembers the thread that did
 * the last one. */
struct tracked {
    atomic_int destroyed;
    pthread_t by;
};

static atomic_int null_destroys; /* destroy(NULL) calls: must stay 0 */

static void destroy_tracked(void *p)
{
    if (!p) {
        atomic_fetch_add(&null_destroys, 1);
        return;
    }
    struct tracked *t = p;
    t->by = pthread_self();
    atomic_fetch_add(&t->destroyed, 1);
}

static int count(struct tracked *t)
{
    return atomic_load(&t->destroyed);
}

static als_t *s;      /* owns its values */
static als_t *other;  /* does not */

static int setup(void **state)
{
    (void)state;
    s = als_new(&(als_options){ .name = "owned", .destroy = destroy_tracked });
    other = als_new(&(als_options){ .name = "plain" });
    return s && other ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    als_free(s);
    als_free(other);
    /* Whatever a test did, destroy never saw NULL. */
    return atomic_load(&null_destroys) == 0 ? 0 : -1;
}

static void *get_s(void *arg)
{
    (void)arg;
    return als_get(s);
}

static void *get_store(void *arg)
{
    return als_get(arg);
}

static void *capture(void *arg)
{
    (void)arg;
    return als_snapshot();
}

/* ---- run --------------------------------------------------------------- */

static void *count_inside(void *arg)
{
    return (void *)(intptr_t)count(arg);
}

static void test_run_destroys_at_return(void **state)
{
    (void)state;
    struct tracked v = { 0 };
    /* Not while fn runs; exactly once, on this thread, when run returns. */
    assert_int_equal((intptr_t)als_run(s, &v, count_inside, &v), 0);
    assert_int_equal(count(&v), 1);
    assert_true(pthread_equal(v.by, pthread_self()));
}

static void test_run_snapshot_holds_value(void **state)
{
    (void)state;
    struct tracked v = { 0 };
    als_snapshot_t *snap = als_run(s, &v, capture, NULL);
    assert_non_null(snap);
    assert_int_equal(count(&v), 0);          /* the snapshot holds it */
    assert_ptr_equal(als_snapshot_run(snap, get_s, NULL), &v);
    als_snapshot_t *extra = als_snapshot_retain(snap);
    als_snapshot_release(snap);
    assert_int_equal(count(&v), 0);
    als_snapshot_release(extra);             /* the last reference */
    assert_int_equal(count(&v), 1);
    assert_true(pthread_equal(v.by, pthread_self()));
}

/* The last reference dropped on another thread: destroy runs there. */
struct release_args {
    als_snapshot_t *snap;
    int count_before;
};
static struct tracked *released_value;

static void *release_on_thread(void *arg)
{
    struct release_args *ra = arg;
    ra->count_before = count(released_value);
    als_snapshot_release(ra->snap);
    return NULL;
}

static void test_destroy_on_releasing_thread(void **state)
{
    (void)state;
    struct tracked v = { 0 };
    released_value = &v;
    struct release_args ra = { als_run(s, &v, capture, NULL), -1 };
    assert_non_null(ra.snap);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_on_thread, &ra), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(ra.count_before, 0);
    assert_int_equal(count(&v), 1);
    assert_true(pthread_equal(v.by, t));
}

/* Many threads share one snapshot and release concurrently: exactly one
 * destroy, whoever is last. */
#define NTHREADS 8
struct share_args {
    als_snapshot_t *snap;
    pthread_barrier_t *bar;
    void *seen;
};

static void *share_thread(void *arg)
{
    struct share_args *sa = arg;
    pthread_barrier_wait(sa->bar);
    sa->seen = als_snapshot_run(sa->snap, get_s, NULL);
    als_snapshot_release(sa->snap);
    return NULL;
}

static void test_destroy_once_under_sharing(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        struct tracked v = { 0 };
        als_snapshot_t *snap = als_run(s, &v, capture, NULL);
        pthread_barrier_t bar;
        assert_int_equal(pthread_barrier_init(&bar, NULL, NTHREADS), 0);
        struct share_args sa[NTHREADS];
        pthread_t t[NTHREADS];
        for (int i = 0; i < NTHREADS; i++) {
            sa[i] = (struct share_args){ als_snapshot_retain(snap), &bar, NULL };
            assert_int_equal(pthread_create(&t[i], NULL, share_thread, &sa[i]), 0);
        }
        als_snapshot_release(snap);
        for (int i = 0; i < NTHREADS; i++)
            assert_int_equal(pthread_join(t[i], NULL), 0);
        pthread_barrier_destroy(&bar);
        for (int i = 0; i < NTHREADS; i++)
            assert_ptr_equal(sa[i].seen, &v);
        assert_int_equal(count(&v), 1);
    }
}

/* Every kind of holder keeps the value: it goes with the last one. */
static void *make_holders(void *arg)
{
    void **h = arg;
    h[0] = als_snapshot();
    h[1] = als_bind(get_s);
    h[2] = als_resource_new("holder");
    return NULL;
}

static void test_last_holder_destroys(void **state)
{
    (void)state;
    /* Each order of release: snapshot, bound, resource. */
    static const int orders[6][3] = {
        { 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 },
        { 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 },
    };
    for (int o = 0; o < 6; o++) {
        struct tracked v = { 0 };
        void *h[3] = { NULL, NULL, NULL };
        als_run(s, &v, make_holders, h);
        assert_non_null(h[0]);
        assert_non_null(h[1]);
        assert_non_null(h[2]);
        assert_int_equal(count(&v), 0);
        assert_ptr_equal(als_bound_call(h[1], NULL), &v);
        assert_ptr_equal(als_resource_run_in_scope(h[2], get_s, NULL), &v);
        for (int k = 0; k < 3; k++) {
            assert_int_equal(count(&v), 0);
            switch (orders[o][k]) {
            case 0: als_snapshot_release(h[0]); break;
            case 1: als_bound_free(h[1]); break;
            case 2: als_resource_free(h[2]); break;
            }
        }
        assert_int_equal(count(&v), 1);
    }
}

/* A resource-bound function holds the value after its resource is freed. */
static void test_resource_bind_holds(void **state)
{
    (void)state;
    struct tracked v = { 0 };
    void *h[3] = { NULL, NULL, NULL };
    als_run(s, &v, make_holders, h);
    als_snapshot_release(h[0]);
    als_bound_free(h[1]);
    als_bound_t *rb = als_resource_bind(h[2], get_s);
    assert_non_null(rb);
    als_resource_free(h[2]);
    assert_int_equal(count(&v), 0);
    assert_ptr_equal(als_bound_call(rb, NULL), &v);
    als_bound_free(rb);
    assert_int_equal(count(&v), 1);
}

/* ---- enter_with ------------------------------------------------------- */

static void *enter_twice(void *arg)
{
    struct tracked *v = arg;
    als_enter_with(s, &v[0]);
    als_enter_with(s, &v[1]);
    return (void *)(intptr_t)(count(&v[0]) * 10 + count(&v[1]));
}

static void test_enter_with_in_run(void **state)
{
    (void)state;
    struct tracked outer = { 0 }, v[2];
    memset(v, 0, sizeof v);
    /* The two values and the run's own value die once each by the time
     * the run returns. */
    intptr_t inside = (intptr_t)als_run(s, &outer, enter_twice, v);
    /* A second enter_with in the same scope replaces the first, which is
     * released at once (so a loop of enter_with holds one value). */
    assert_int_equal(inside, 10);
    assert_int_equal(count(&v[0]), 1);
    assert_int_equal(count(&v[1]), 1);
    assert_int_equal(count(&outer), 1);
}

/* At a thread's top level: replaced values go at once, the last one at
 * thread exit, on that thread. */
struct top_args {
    struct tracked v[2];
    int after_first, after_replace_old, after_replace_new;
};

static void *top_level(void *arg)
{
    struct top_args *ta = arg;
    als_enter_with(s, &ta->v[0]);
    ta->after_first = count(&ta->v[0]);
    als_enter_with(s, &ta->v[1]);
    ta->after_replace_old = count(&ta->v[0]);
    ta->after_replace_new = count(&ta->v[1]);
    return NULL;
}

static void test_enter_with_top_level(void **state)
{
    (void)state;
    struct top_args ta;
    memset(&ta, 0, sizeof ta);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, top_level, &ta), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(ta.after_first, 0);
    assert_int_equal(ta.after_replace_old, 1);   /* replaced: released then */
    assert_int_equal(ta.after_replace_new, 0);
    assert_int_equal(count(&ta.v[0]), 1);
    assert_int_equal(count(&ta.v[1]), 1);        /* at thread exit */
    assert_true(pthread_equal(ta.v[0].by, t));
    assert_true(pthread_equal(ta.v[1].by, t));
}

/* A top-level value captured by a snapshot outlives its thread. */
static void *top_level_capture(void *arg)
{
    als_enter_with(s, arg);
    return als_snapshot();
}

static void test_top_level_value_outlives_thread(void **state)
{
    (void)state;
    struct tracked v = { 0 };
    pthread_t t;
    void *snap = NULL;
    assert_int_equal(pthread_create(&t, NULL, top_level_capture, &v), 0);
    assert_int_equal(pthread_join(t, &snap), 0);
    assert_non_null(snap);
    assert_int_equal(count(&v), 0);
    assert_ptr_equal(als_snapshot_run(snap, get_s, NULL), &v);
    als_snapshot_release(snap);
    assert_int_equal(count(&v), 1);
    assert_true(pthread_equal(v.by, pthread_self()));
}

/* ---- disable and free -------------------------------------------------- */

struct disable_args {
    als_t *store;
    als_snapshot_t *before, *after;
    struct tracked *v;
    int count_after_disable;
};

static void *disable_inside(void *arg)
{
    struct disable_args *da = arg;
    da->before = als_snapshot();
    als_disable(da->store);
    da->count_after_disable = count(da->v);
    /* Captured after the disable: must not hold the dead value. */
    da->after = als_snapshot();
    return NULL;
}

static void test_disable_destroys_nothing_itself(void **state)
{
    (void)state;
    als_t *d = als_new(&(als_options){ .destroy = destroy_tracked });
    struct tracked v = { 0 };
    struct disable_args da = { .store = d, .v = &v };
    als_run(d, &v, disable_inside, &da);
    assert_int_equal(da.count_after_disable, 0);
    /* The run's scope has ended; only the snapshot from before holds v. */
    assert_int_equal(count(&v), 0);
    assert_non_null(da.after);
    assert_ptr_not_equal(da.after, da.before);
    assert_null(als_snapshot_run(da.before, get_store, d)); /* disabled */
    als_snapshot_release(da.after);
    assert_int_equal(count(&v), 0);
    als_snapshot_release(da.before);
    assert_int_equal(count(&v), 1);
    als_free(d);
}

/* A capture cached by an outer scope, restored when an inner scope that
 * disabled (and captured) ends. */
static void *disable_and_capture(void *arg)
{
    struct disable_args *da = arg;
    als_disable(da->store);
    als_snapshot_release(als_snapshot());
    return NULL;
}

static void *disable_in_inner_scope(void *arg)
{
    struct disable_args *da = arg;
    da->before = als_snapshot();
    als_run(other, &null_destroys, disable_and_capture, da);
    da->count_after_disable = count(da->v);
    da->after = als_snapshot();
    return NULL;
}

static void test_disable_outer_cached_capture(void **state)
{
    (void)state;
    als_t *d = als_new(&(als_options){ .destroy = destroy_tracked });
    struct tracked v = { 0 };
    struct disable_args da = { .store = d, .v = &v };
    als_run(d, &v, disable_in_inner_scope, &da);
    assert_int_equal(da.count_after_disable, 0);
    assert_ptr_not_equal(da.after, da.before);
    als_snapshot_release(da.after);
    assert_int_equal(count(&v), 0);
    als_snapshot_release(da.before);
    assert_int_equal(count(&v), 1);
    als_free(d);
}

/* The same at a thread's top level, where captures are cached longest. */
static void *disable_top_level(void *arg)
{
    struct disable_args *da = arg;
    als_enter_with(da->store, da->v);
    da->before = als_snapshot();
    als_disable(da->store);
    da->count_after_disable = count(da->v);
    da->after = als_snapshot();
    als_snapshot_release(da->before);
    return NULL;
}

static void test_disable_top_level_capture(void **state)
{
    (void)state;
    als_t *d = als_new(&(als_options){ .destroy = destroy_tracked });
    struct tracked v = { 0 };
    struct disable_args da = { .store = d, .v = &v };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, disable_top_level, &da), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(da.count_after_disable, 0);
    /* The thread is gone and the capture made after the disable does not
     * hold v: it was released with the thread. */
    assert_int_equal(count(&v), 1);
    assert_true(pthread_equal(v.by, t));
    als_snapshot_release(da.after);
    assert_int_equal(count(&v), 1);
    als_free(d);
}

/* Captures inside a snapshot entered after the disable: they drop the dead
 * value, keep the live one, and a repeated capture is still the same
 * snapshot. */
struct entered_capture {
    als_snapshot_t *first, *second;
};

static void *capture_twice(void *arg)
{
    struct entered_capture *ec = arg;
    ec->first = als_snapshot();
    ec->second = als_snapshot();
    return NULL;
}

static void *bind_other_and_capture(void *arg)
{
    return als_run(other, arg, capture, NULL);
}

static void test_disable_entered_snapshot_capture(void **state)
{
    (void)state;
    als_t *d = als_new(&(als_options){ .destroy = destroy_tracked });
    struct tracked v = { 0 }, w = { 0 };
    als_snapshot_t *before = als_run(d, &v, bind_other_and_capture, &w);
    assert_non_null(before);
    als_disable(d);
    struct entered_capture ec = { NULL, NULL };
    als_snapshot_run(before, capture_twice, &ec);
    assert_non_null(ec.first);
    assert_ptr_not_equal(ec.first, before);
    assert_ptr_equal(ec.second, ec.first);
    als_snapshot_release(before);
    assert_int_equal(count(&v), 1); /* the new captures do not hold it */
    assert_ptr_equal(als_snapshot_run(ec.first, get_store, other), &w);
    als_snapshot_release(ec.first);
    als_snapshot_release(ec.second);
    assert_int_equal(count(&v), 1);
    assert_int_equal(count(&w), 0); /* `other` does not own its values */
    als_free(d);
}

static void *bind_get(void *arg)
{
    (void)arg;
    return als_bind(get_s);
}

static void test_free_with_snapshots_outstanding(void **state)
{
    (void)state;
    als_t *f = als_new(&(als_options){ .destroy = destroy_tracked });
    struct tracked u = { 0 }, v = { 0 }, w = { 0 };
    als_run(f, &u, get_s, NULL);
    assert_int_equal(count(&u), 1); /* not captured: gone with its run */
    als_snapshot_t *snap = als_run(f, &v, capture, NULL);
    als_bound_t *bd = als_run(f, &w, bind_get, NULL);
    assert_non_null(snap);
    assert_non_null(bd);
    als_free(f);
    assert_int_equal(count(&v), 0); /* free destroys nothing itself */
    assert_int_equal(count(&w), 0);
    /* The contexts still work (the store is gone, other stores are not). */
    assert_null(als_bound_call(bd, NULL));
    als_snapshot_release(snap);
    assert_int_equal(count(&v), 1);
    assert_int_equal(count(&w), 0);
    als_bound_free(bd);
    assert_int_equal(count(&w), 1);
}

/* ---- NULL, duplicates, callbacks ------------------------------------ */

static void *capture_and_enter_null(void *arg)
{
    (void)arg;
    als_enter_with(s, NULL);
    return als_snapshot();
}

static void test_destroy_never_null(void **state)
{
    (void)state;
    int before = atomic_load(&null_destroys);
    als_snapshot_t *snap = als_run(s, NULL, capture_and_enter_null, NULL);
    assert_non_null(snap);
    assert_null(als_snapshot_run(snap, get_s, NULL));
    als_snapshot_release(snap);
    als_run(s, NULL, get_s, NULL);
    assert_int_equal(atomic_load(&null_destroys), before);
}

static void *bind_again(void *arg)
{
    return als_run(s, arg, count_inside, arg);
}

static void test_same_pointer_twice(void **state)
{
    (void)state;
    struct tracked v = { 0 };
    /* Two bindings, two ownerships: the inner one goes first. */
    assert_int_equal((intptr_t)als_run(s, &v, bind_again, &v), 0);
    assert_int_equal(count(&v), 2);
}

/* destroy may use libals; it runs when the thread's state is consistent. */
static als_t *reentrant;
static atomic_int reentrant_seen;

static void *reentrant_get(void *arg)
{
    (void)arg;
    return als_get(s);
}

static void destroy_reentrant(void *p)
{
    struct tracked *t = p;
    /* A full scope, with a capture, from inside a destroy callback. */
    if (als_run(s, NULL, reentrant_get, NULL) == NULL)
        atomic_fetch_add(&reentrant_seen, 1);
    als_snapshot_t *snap = als_snapshot();
    als_snapshot_release(snap);
    atomic_fetch_add(&t->destroyed, 1);
}

static void test_destroy_callback_uses_library(void **state)
{
    (void)state;
    reentrant = als_new(&(als_options){ .destroy = destroy_reentrant });
    struct tracked v = { 0 }, w = { 0 };
    atomic_store(&reentrant_seen, 0);
    als_run(reentrant, &v, get_s, NULL);
    als_snapshot_t *snap = als_run(reentrant, &w, capture, NULL);
    als_snapshot_release(snap);
    assert_int_equal(count(&v), 1);
    assert_int_equal(count(&w), 1);
    assert_int_equal(atomic_load(&reentrant_seen), 2);
    assert_null(als_get(s));
    als_free(reentrant);
}

/* Without destroy the store never touches its values. */
static void test_no_destroy_caller_owns(void **state)
{
    (void)state;
    struct tracked v = { 0 };
    als_snapshot_t *snap = als_run(other, &v, capture, NULL);
    als_snapshot_release(snap);
    assert_int_equal(count(&v), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_destroys_at_return),
        cmocka_unit_test(test_run_snapshot_holds_value),
        cmocka_unit_test(test_destroy_on_releasing_thread),
        cmocka_unit_test(test_destroy_once_under_sharing),
        cmocka_unit_test(test_last_holder_destroys),
        cmocka_unit_test(test_resource_bind_holds),
        cmocka_unit_test(test_enter_with_in_run),
        cmocka_unit_test(test_enter_with_top_level),
        cmocka_unit_test(test_top_level_value_outlives_thread),
        cmocka_unit_test(test_disable_destroys_nothing_itself),
        cmocka_unit_test(test_disable_outer_cached_capture),
        cmocka_unit_test(test_disable_top_level_capture),
        cmocka_unit_test(test_disable_entered_snapshot_capture),
        cmocka_unit_test(test_free_with_snapshots_outstanding),
        cmocka_unit_test(test_destroy_never_null),
        cmocka_unit_test(test_same_pointer_twice),
        cmocka_unit_test(test_destroy_callback_uses_library),
        cmocka_unit_test(test_no_destroy_caller_owns),
    };
    return cmocka_run_group_tests_name("ownership", tests, setup, teardown);
}
