/*
 * als_thread_create (issue 2, semantics 11 and 16): a pthread that starts
 * inside a snapshot of its creator's context, with a fresh execution id
 * whose trigger is the creator's, and whose own bindings end with it.
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

static int v1, v2, v3, dflt_a, dflt_b;
static als_t *a, *b;

static int setup(void **state)
{
    (void)state;
    a = als_new(&(als_options){ .default_value = &dflt_a });
    b = als_new(&(als_options){ .default_value = &dflt_b });
    return a && b ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    als_free(a);
    als_free(b);
    return 0;
}

/* Everything a thread body observed, for the main thread to assert. */
struct seen {
    uint64_t creator_exec;
    void *a, *b;
    uint64_t exec, trigger;
    void *a_after_run;
    uint64_t exec_in_run, trigger_in_run;
};

static void observe(struct seen *s)
{
    s->a = als_get(a);
    s->b = als_get(b);
    s->exec = als_execution_async_id();
    s->trigger = als_trigger_async_id();
}

static void *note_ids(void *arg)
{
    struct seen *s = arg;
    s->exec_in_run = als_execution_async_id();
    s->trigger_in_run = als_trigger_async_id();
    return NULL;
}

static void *body(void *arg)
{
    struct seen *s = arg;
    observe(s);
    /* Scopes inside the thread leave its ids alone. */
    als_run(a, &v3, note_ids, s);
    s->a_after_run = als_get(a);
    return &v2;
}

/* ---- inheritance ---------------------------------------------------------- */

static void *spawn(void *arg)
{
    struct seen *s = arg;
    pthread_t t;
    void *ret = NULL;
    s->creator_exec = als_execution_async_id();
    if (als_thread_create(&t, NULL, body, s) != 0 || pthread_join(t, &ret) != 0)
        return NULL;
    return ret;
}

static void *spawn_in_b(void *arg) { return als_run(b, &v2, spawn, arg); }

static void test_inherits_context(void **state)
{
    (void)state;
    struct seen s;
    memset(&s, 0, sizeof s);
    /* The thread's result comes back through pthread_join. */
    assert_ptr_equal(als_run(a, &v1, spawn_in_b, &s), &v2);
    assert_ptr_equal(s.a, &v1);
    assert_ptr_equal(s.b, &v2);
    assert_ptr_equal(s.a_after_run, &v1);
    /* Created at the top level (execution id 1): a fresh id, triggered by 1. */
    assert_true(s.exec > 1);
    assert_int_equal(s.trigger, 1);
    assert_int_equal(s.exec_in_run, s.exec);
    assert_int_equal(s.trigger_in_run, 1);
    /* The creator's context is unchanged. */
    assert_ptr_equal(als_get(a), &dflt_a);
    assert_int_equal(als_execution_async_id(), 1);
}

static void test_empty_context_and_attr(void **state)
{
    (void)state;
    struct seen s;
    memset(&s, 0xff, sizeof s);
    pthread_attr_t attr;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_JOINABLE), 0);
    pthread_t t;
    assert_int_equal(als_thread_create(&t, &attr, body, &s), 0);
    pthread_attr_destroy(&attr);
    void *ret = NULL;
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_ptr_equal(ret, &v2);
    assert_ptr_equal(s.a, &dflt_a);
    assert_ptr_equal(s.b, &dflt_b);
    assert_true(s.exec > 1);
    assert_int_equal(s.trigger, 1);
}

/* Each thread gets its own, increasing id. */
static void test_fresh_ids(void **state)
{
    (void)state;
    struct seen s[3];
    memset(s, 0, sizeof s);
    for (int i = 0; i < 3; i++) {
        pthread_t t;
        assert_int_equal(als_thread_create(&t, NULL, body, &s[i]), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
    }
    assert_true(s[0].exec > 1);
    assert_true(s[1].exec > s[0].exec);
    assert_true(s[2].exec > s[1].exec);
}

/* Created inside a resource scope: the trigger is the resource's id. */
static void *spawn_here(void *arg)
{
    return spawn(arg);
}

static void test_trigger_is_creator_execution_id(void **state)
{
    (void)state;
    als_resource_t *r = als_resource_new("creator");
    uint64_t rid = als_resource_async_id(r);
    struct seen s;
    memset(&s, 0, sizeof s);
    als_resource_run_in_scope(r, spawn_here, &s);
    assert_int_equal(s.trigger, rid);
    assert_true(s.exec > rid);
    als_resource_free(r);

    /* A thread created by an als_thread_create thread: triggered by it. */
    struct seen grand;
    memset(&grand, 0, sizeof grand);
    pthread_t t;
    assert_int_equal(als_thread_create(&t, NULL, spawn_here, &grand), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(grand.creator_exec > 1);
    assert_int_equal(grand.trigger, grand.creator_exec);
    assert_true(grand.exec > grand.trigger);
}

/* ---- isolation both ways ------------------------------------------------- */

/* The creator (inside a run) and the thread change their contexts in turn;
 * neither sees the other's changes. */
struct iso {
    pthread_barrier_t bar;
    void *before, *after_creator_changed, *own, *creator_view;
    int rc;
};

static void *iso_body(void *arg)
{
    struct iso *is = arg;
    is->before = als_get(a);
    pthread_barrier_wait(&is->bar);   /* 1: creator changes its context */
    pthread_barrier_wait(&is->bar);   /* 2: changed */
    is->after_creator_changed = als_get(a);
    als_enter_with(a, &v3);
    is->own = als_get(a);
    pthread_barrier_wait(&is->bar);   /* 3: creator looks */
    return NULL;
}

static void *iso_creator(void *arg)
{
    struct iso *is = arg;
    pthread_t t;
    is->rc = als_thread_create(&t, NULL, iso_body, is);
    if (is->rc != 0)
        return NULL;
    pthread_barrier_wait(&is->bar);
    als_enter_with(a, &v2);
    pthread_barrier_wait(&is->bar);
    pthread_barrier_wait(&is->bar);
    is->creator_view = als_get(a);
    pthread_join(t, NULL);
    return NULL;
}

static void test_isolation(void **state)
{
    (void)state;
    struct iso is;
    memset(&is, 0, sizeof is);
    assert_int_equal(pthread_barrier_init(&is.bar, NULL, 2), 0);
    als_run(a, &v1, iso_creator, &is);
    pthread_barrier_destroy(&is.bar);
    assert_int_equal(is.rc, 0);
    assert_ptr_equal(is.before, &v1);
    assert_ptr_equal(is.after_creator_changed, &v1);
    assert_ptr_equal(is.own, &v3);
    assert_ptr_equal(is.creator_view, &v2);
    assert_ptr_equal(als_get(a), &dflt_a);
}

/* ---- values bound in the thread end with it ------------------------------ */

struct tracked {
    atomic_int destroyed;
    pthread_t by;
};

static void destroy_tracked(void *p)
{
    struct tracked *t = p;
    t->by = pthread_self();
    atomic_fetch_add(&t->destroyed, 1);
}

static int count(struct tracked *t)
{
    return atomic_load(&t->destroyed);
}

static als_t *owned;

struct in_thread {
    struct tracked top, ran, captured;
    int top_count_at_end;
    als_snapshot_t *snap;
};

static void *get_owned(void *arg)
{
    (void)arg;
    return als_get(owned);
}

static void *capture(void *arg)
{
    (void)arg;
    return als_snapshot();
}

static void *bind_in_thread(void *arg)
{
    struct in_thread *it = arg;
    als_enter_with(owned, &it->top);       /* at the thread's top level */
    als_run(owned, &it->ran, get_owned, NULL);
    /* A value captured here outlives the thread. */
    it->snap = als_run(owned, &it->captured, capture, NULL);
    it->top_count_at_end = count(&it->top);
    return NULL;
}

static void test_thread_values_end_with_thread(void **state)
{
    (void)state;
    owned = als_new(&(als_options){ .destroy = destroy_tracked });
    struct in_thread it;
    memset(&it, 0, sizeof it);
    pthread_t t;
    assert_int_equal(als_thread_create(&t, NULL, bind_in_thread, &it), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(it.top_count_at_end, 0);
    assert_int_equal(count(&it.top), 1);
    assert_true(pthread_equal(it.top.by, t));
    assert_int_equal(count(&it.ran), 1);
    assert_true(pthread_equal(it.ran.by, t));
    assert_int_equal(count(&it.captured), 0);
    assert_ptr_equal(als_snapshot_run(it.snap, get_owned, NULL), &it.captured);
    als_snapshot_release(it.snap);
    assert_int_equal(count(&it.captured), 1);
    assert_true(pthread_equal(it.captured.by, pthread_self()));
    als_free(owned);
}

/* The creator's value, inherited, is held by the thread until it ends:
 * destroyed there if the creator's scope ended first. */
struct inherit {
    pthread_barrier_t bar;
    pthread_t t;
    int rc;
    void *seen;
};

static void *hold_inherited(void *arg)
{
    struct inherit *in = arg;
    pthread_barrier_wait(&in->bar);   /* the creator's run has returned */
    in->seen = als_get(owned);
    return NULL;
}

static void *create_holder(void *arg)
{
    struct inherit *in = arg;
    in->rc = als_thread_create(&in->t, NULL, hold_inherited, in);
    return NULL;
}

static void test_inherited_value_held_by_thread(void **state)
{
    (void)state;
    owned = als_new(&(als_options){ .destroy = destroy_tracked });
    struct tracked w;
    memset(&w, 0, sizeof w);
    struct inherit in;
    memset(&in, 0, sizeof in);
    assert_int_equal(pthread_barrier_init(&in.bar, NULL, 2), 0);
    als_run(owned, &w, create_holder, &in);
    assert_int_equal(in.rc, 0);
    assert_int_equal(count(&w), 0);    /* the thread still holds it */
    pthread_barrier_wait(&in.bar);
    assert_int_equal(pthread_join(in.t, NULL), 0);
    pthread_barrier_destroy(&in.bar);
    assert_ptr_equal(in.seen, &w);
    assert_int_equal(count(&w), 1);
    assert_true(pthread_equal(w.by, in.t));
    als_free(owned);
}

/* ---- errors --------------------------------------------------------------- */

static void *never(void *arg)
{
    (void)arg;
    return NULL;
}

struct fail_args {
    pthread_attr_t *attr;
    int rc;
};

static void *create_with_attr(void *arg)
{
    struct fail_args *fa = arg;
    pthread_t t;
    fa->rc = als_thread_create(&t, fa->attr, never, NULL);
    if (fa->rc == 0)
        pthread_join(t, NULL);
    return NULL;
}

static void test_errors(void **state)
{
    (void)state;
    pthread_t t;
    assert_int_equal(als_thread_create(NULL, NULL, never, NULL), ALS_EINVAL);
    assert_int_equal(als_thread_create(&t, NULL, NULL, NULL), ALS_EINVAL);

    /* A stack no machine can map: pthread_create fails (EAGAIN or ENOMEM),
     * which is ALS_ENOMEM; the captured context is released, not leaked. */
    pthread_attr_t attr;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, (size_t)1 << 46), 0);
    int plain = pthread_create(&t, &attr, never, NULL);
    if (plain == 0) {
        pthread_join(t, NULL);
        pthread_attr_destroy(&attr);
        skip(); /* this machine maps it: the failure cannot be provoked */
    }
    owned = als_new(&(als_options){ .destroy = destroy_tracked });
    struct tracked w;
    memset(&w, 0, sizeof w);
    struct fail_args fa = { &attr, 0 };
    als_run(owned, &w, create_with_attr, &fa);
    pthread_attr_destroy(&attr);
    assert_int_equal(fa.rc, ALS_ENOMEM);
    assert_int_equal(count(&w), 1);
    als_free(owned);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inherits_context),
        cmocka_unit_test(test_empty_context_and_attr),
        cmocka_unit_test(test_fresh_ids),
        cmocka_unit_test(test_trigger_is_creator_execution_id),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_thread_values_end_with_thread),
        cmocka_unit_test(test_inherited_value_held_by_thread),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("thread", tests, setup, teardown);
}
