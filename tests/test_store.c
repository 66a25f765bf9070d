/*
 * Stores: creation, names, default values, slot recycling, the NULL rules
 * of every public function, error texts and the version (issue 2,
 * semantics 1, 12, 17 and 18); als_has, "is anything bound?" (issue 13).
 */
#define _POSIX_C_SOURCE 200809L /* barriers */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <als.h>
#include "internal.h" /* store slot indices */

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Distinct non-NULL pointers used as values. */
static int v1, v2, v3, dflt;

static int calls; /* how often fn_count ran */

static void *fn_count(void *arg)
{
    calls++;
    return arg;
}

static void *fn_get(void *arg)
{
    return als_get(arg);
}

static void *fn_has(void *arg)
{
    return (void *)(intptr_t)als_has(arg);
}

/* als_has(store) as seen inside fn(arg) = ...: the scopes below return
 * fn_has's result. */
#define HAS_IN(call) ((int)(intptr_t)(call))

/* ---- 1: defaults and names ------------------------------------------- */

static void test_new_without_options(void **state)
{
    (void)state;
    als_t *a = als_new(NULL);
    assert_non_null(a);
    assert_string_equal(als_name(a), "");
    assert_null(als_get(a));
    assert_ptr_equal(als_run(a, &v1, fn_get, a), &v1);
    assert_null(als_get(a));
    als_free(a);
}

static void test_name_is_copied(void **state)
{
    (void)state;
    char buf[16];
    strcpy(buf, "request");
    als_t *a = als_new(&(als_options){ .name = buf });
    assert_non_null(a);
    strcpy(buf, "changed");
    assert_string_equal(als_name(a), "request");
    assert_ptr_not_equal(als_name(a), buf);

    als_t *b = als_new(&(als_options){ .name = NULL, .default_value = &dflt });
    assert_non_null(b);
    assert_string_equal(als_name(b), "");
    als_free(a);
    als_free(b);
}

static void *thread_get(void *arg)
{
    return als_get(arg);
}

static void test_default_value(void **state)
{
    (void)state;
    als_t *a = als_new(&(als_options){ .default_value = &dflt });
    als_t *b = als_new(NULL);
    assert_ptr_equal(als_get(a), &dflt);
    assert_null(als_get(b));
    /* Bound on another store: a still gives its default. */
    assert_ptr_equal(als_run(b, &v1, fn_get, a), &dflt);
    assert_ptr_equal(als_run(a, &v2, fn_get, a), &v2);
    assert_ptr_equal(als_get(a), &dflt);

    /* A thread that never touched libals sees the default too. */
    pthread_t t;
    void *seen = NULL;
    assert_int_equal(pthread_create(&t, NULL, thread_get, a), 0);
    assert_int_equal(pthread_join(t, &seen), 0);
    assert_ptr_equal(seen, &dflt);
    als_free(a);
    als_free(b);
}

/* Many stores, more than a thread's inline table holds, each with its own
 * value. */
#define MANY 40
static als_t *many[MANY];
static int many_vals[MANY];

static void *many_check(void *arg)
{
    int depth = *(int *)arg;
    if (depth < MANY) {
        int next = depth + 1;
        return als_run(many[depth], &many_vals[depth], many_check, &next);
    }
    intptr_t bad = 0;
    for (int i = 0; i < MANY; i++)
        if (als_get(many[i]) != &many_vals[i])
            bad++;
    return (void *)bad;
}

static void test_many_stores(void **state)
{
    (void)state;
    for (int i = 0; i < MANY; i++) {
        many[i] = als_new(&(als_options){ .default_value = &dflt });
        assert_non_null(many[i]);
    }
    int zero = 0;
    assert_ptr_equal(many_check(&zero), (void *)0);
    for (int i = 0; i < MANY; i++)
        assert_ptr_equal(als_get(many[i]), &dflt);
    for (int i = 0; i < MANY; i++)
        als_free(many[i]);
}

/* A freed store's slot index is recycled; bindings of the freed store must
 * never show through the new store that reuses the slot, neither in the
 * current context nor in a snapshot taken before. Runs on its own thread so
 * that its top-level enter_with values end with it. */
struct recycle {
    uint32_t old_index, new_index;
    void *in_context, *in_snapshot, *in_run, *after_enter;
};

static void *recycle_thread(void *arg)
{
    struct recycle *r = arg;
    als_t *old = als_new(NULL);
    r->old_index = old->index;
    als_enter_with(old, &v1);
    als_snapshot_t *snap = als_snapshot();
    als_free(old);
    als_t *fresh = als_new(&(als_options){ .default_value = &dflt });
    r->new_index = fresh->index;
    r->in_context = als_get(fresh);
    r->in_snapshot = als_snapshot_run(snap, fn_get, fresh);
    r->in_run = als_run(fresh, &v2, fn_get, fresh);
    als_enter_with(fresh, &v3);
    r->after_enter = als_get(fresh);
    als_snapshot_release(snap);
    als_free(fresh);
    return NULL;
}

static void test_freed_slot_not_visible(void **state)
{
    (void)state;
    struct recycle r = { 0 };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, recycle_thread, &r), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* The test only means something if the slot was really reused. */
    assert_int_equal(r.new_index, r.old_index);
    assert_ptr_equal(r.in_context, &dflt);
    assert_ptr_equal(r.in_snapshot, &dflt);
    assert_ptr_equal(r.in_run, &v2);
    assert_ptr_equal(r.after_enter, &v3);
}

/* ---- 12, 17: NULL arguments ------------------------------------------ */

static void test_null_store_functions(void **state)
{
    (void)state;
    calls = 0;
    assert_null(als_get(NULL));
    assert_int_equal(als_has(NULL), 0);
    assert_null(als_name(NULL));
    assert_null(als_run(NULL, &v1, fn_count, &v2));
    assert_null(als_exit(NULL, fn_count, &v2));
    assert_int_equal(calls, 0);
    assert_int_equal(als_enter_with(NULL, &v1), ALS_EINVAL);
    als_free(NULL);
    als_disable(NULL);

    als_t *a = als_new(&(als_options){ .default_value = &dflt });
    assert_null(als_run(a, &v1, NULL, &v2));
    assert_null(als_exit(a, NULL, &v2));
    /* Nothing was bound by the calls without a function. */
    assert_ptr_equal(als_get(a), &dflt);
    als_free(a);
}

static int null_destroys;
static void count_destroy(void *p)
{
    (void)p;
    null_destroys++;
}

static void test_null_fn_binds_nothing(void **state)
{
    (void)state;
    null_destroys = 0;
    als_t *a = als_new(&(als_options){ .destroy = count_destroy });
    /* "Calls nothing": not fn, and not destroy either. */
    assert_null(als_run(a, &v1, NULL, NULL));
    assert_null(als_exit(a, NULL, NULL));
    assert_int_equal(null_destroys, 0);
    als_free(a);
}

static void test_null_snapshot_functions(void **state)
{
    (void)state;
    calls = 0;
    assert_null(als_snapshot_run(NULL, fn_count, &v1));
    als_snapshot_t *s = als_snapshot();
    assert_non_null(s);
    assert_null(als_snapshot_run(s, NULL, &v1));
    assert_null(als_snapshot_retain(NULL));
    als_snapshot_release(NULL);

    als_scope_t sc;
    assert_int_equal(als_scope_enter(NULL, s), ALS_EINVAL);
    assert_int_equal(als_scope_enter(&sc, NULL), ALS_EINVAL);
    assert_int_equal(als_scope_leave(NULL), ALS_EINVAL);
    als_snapshot_release(s);

    assert_null(als_bind(NULL));
    assert_null(als_bound_call(NULL, &v1));
    als_bound_free(NULL);
    assert_int_equal(calls, 0);
}

static void test_null_resource_functions(void **state)
{
    (void)state;
    calls = 0;
    als_resource_t *r = als_resource_new(NULL);
    assert_non_null(r);
    assert_string_equal(als_resource_type(r), "");
    assert_null(als_resource_type(NULL));
    assert_int_equal(als_resource_async_id(NULL), 0);
    assert_int_equal(als_resource_trigger_async_id(NULL), 0);
    assert_null(als_resource_run_in_scope(NULL, fn_count, &v1));
    assert_null(als_resource_run_in_scope(r, NULL, &v1));
    assert_null(als_resource_bind(NULL, fn_count));
    assert_null(als_resource_bind(r, NULL));
    als_resource_free(NULL);
    als_resource_free(r);
    assert_int_equal(calls, 0);
}

static void test_null_thread_create(void **state)
{
    (void)state;
    calls = 0;
    pthread_t t;
    assert_int_equal(als_thread_create(NULL, NULL, fn_count, NULL), ALS_EINVAL);
    assert_int_equal(als_thread_create(&t, NULL, NULL, NULL), ALS_EINVAL);
    assert_int_equal(calls, 0);
}

/* ---- als_has: is anything bound? ------------------------------------- */

/* Bound to default_value itself, or to NULL, is bound: what a sentinel
 * compare against als_get cannot tell. */
static void test_has_bound_default_is_bound(void **state)
{
    (void)state;
    als_t *a = als_new(&(als_options){ .default_value = &dflt });
    assert_int_equal(als_has(a), 0);
    assert_ptr_equal(als_get(a), &dflt);
    assert_int_equal(HAS_IN(als_run(a, &dflt, fn_has, a)), 1);
    assert_int_equal(HAS_IN(als_run(a, NULL, fn_has, a)), 1);
    assert_int_equal(HAS_IN(als_run(a, &v1, fn_has, a)), 1);
    assert_int_equal(als_has(a), 0); /* the runs are over */
    als_t *b = als_new(NULL);
    assert_int_equal(HAS_IN(als_run(a, &v1, fn_has, b)), 0); /* another store's */
    als_free(b);
    als_free(a);
}

static void *has_in_exit(void *arg)
{
    return als_exit(arg, fn_has, arg);
}

static void *has_after_enter_with(void *arg)
{
    int before = als_has(arg);
    if (als_enter_with(arg, NULL) != 0)
        return (void *)(intptr_t)-1;
    return (void *)(intptr_t)(before * 10 + als_has(arg));
}

static void test_has_exit_and_enter_with(void **state)
{
    (void)state;
    als_t *a = als_new(&(als_options){ .default_value = &dflt });
    assert_int_equal(HAS_IN(als_run(a, &v1, has_in_exit, a)), 0);
    /* enter_with binds (here NULL) for the rest of the run. */
    assert_int_equal(HAS_IN(als_run(a, &v1, has_after_enter_with, a)), 11);
    assert_int_equal(HAS_IN(als_exit(a, has_after_enter_with, a)), 1);
    assert_int_equal(als_has(a), 0);
    /* At a fresh thread's top level. */
    pthread_t t;
    void *seen = NULL;
    assert_int_equal(pthread_create(&t, NULL, has_after_enter_with, a), 0);
    assert_int_equal(pthread_join(t, &seen), 0);
    assert_int_equal(HAS_IN(seen), 1);
    als_free(a);
}

struct has_disable {
    als_t *a;
    als_snapshot_t *before;    /* captured while bound, before the disable */
    int after_disable, rebound, get_is_default;
};

static void *rebind(void *arg)
{
    struct has_disable *d = arg;
    d->rebound = als_has(d->a);
    return NULL;
}

static void *bound_then_disabled(void *arg)
{
    struct has_disable *d = arg;
    d->before = als_snapshot();
    als_disable(d->a);
    d->after_disable = als_has(d->a);
    d->get_is_default = als_get(d->a) == &dflt;
    als_run(d->a, &v2, rebind, d);
    return NULL;
}

/* A binding made before the store's als_disable is not bound any more,
 * in every context; a later binding is. */
static void test_has_after_disable(void **state)
{
    (void)state;
    als_t *a = als_new(&(als_options){ .default_value = &dflt });
    struct has_disable d = { .a = a, .after_disable = -1, .rebound = -1 };
    als_run(a, &v1, bound_then_disabled, &d);
    assert_int_equal(d.after_disable, 0);
    assert_true(d.get_is_default);
    assert_int_equal(d.rebound, 1);
    assert_non_null(d.before);
    assert_int_equal(HAS_IN(als_snapshot_run(d.before, fn_has, a)), 0);
    als_snapshot_release(d.before);
    als_free(a);
}

/* Entered captures carry what is bound, on any thread. */
static void *capture(void *arg)
{
    (void)arg;
    return als_snapshot();
}

static void *has_in_snapshot(void *arg)
{
    void **x = arg;
    return als_snapshot_run(x[0], fn_has, x[1]);
}

static void test_has_in_entered_capture(void **state)
{
    (void)state;
    als_t *a = als_new(NULL);
    als_snapshot_t *bound = als_run(a, NULL, capture, NULL), *unbound = als_snapshot();
    assert_non_null(bound);
    assert_non_null(unbound);
    assert_int_equal(HAS_IN(als_snapshot_run(bound, fn_has, a)), 1);
    assert_int_equal(HAS_IN(als_run(a, &v1, has_in_snapshot, (void *[]){ unbound, a })), 0);
    pthread_t t;
    void *seen = NULL;
    assert_int_equal(pthread_create(&t, NULL, has_in_snapshot, (void *[]){ bound, a }), 0);
    assert_int_equal(pthread_join(t, &seen), 0);
    assert_int_equal(HAS_IN(seen), 1);
    assert_int_equal(als_has(a), 0);
    als_snapshot_release(bound);
    als_snapshot_release(unbound);
    als_free(a);
}

/* ---- 18: error texts and version ------------------------------------- */

static void test_strerror(void **state)
{
    (void)state;
    const int codes[] = { ALS_OK, ALS_EINVAL, ALS_ENOMEM, ALS_EFULL,
                          ALS_ESHUTDOWN, ALS_EDEADLK, ALS_ETIMEDOUT,
                          ALS_ECANCELED, ALS_ETASK };
    const size_t n = sizeof codes / sizeof codes[0];
    const char *generic = als_strerror(-1000);
    assert_non_null(generic);
    assert_true(strlen(generic) > 0);
    for (size_t i = 0; i < n; i++) {
        const char *t = als_strerror(codes[i]);
        assert_non_null(t);
        assert_true(strlen(t) > 0);
        assert_string_not_equal(t, generic);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(t, als_strerror(codes[j]));
    }
    /* Every code around and outside the defined range is "unknown". */
    const int unknown[] = { 1, 2, 100, -9, -10, -1000, INT_MIN, INT_MAX };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *t = als_strerror(unknown[i]);
        assert_non_null(t);
        assert_string_equal(t, generic);
    }
    assert_string_equal(generic, "unknown error");
}

static void test_version(void **state)
{
    (void)state;
    const char *v = als_version();
    assert_non_null(v);
    assert_string_equal(v, ALS_VERSION_STRING);
    char expect[64];
    snprintf(expect, sizeof expect, "%d.%d.%d", ALS_VERSION_MAJOR,
             ALS_VERSION_MINOR, ALS_VERSION_PATCH);
    assert_string_equal(v, expect);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_without_options),
        cmocka_unit_test(test_name_is_copied),
        cmocka_unit_test(test_default_value),
        cmocka_unit_test(test_many_stores),
        cmocka_unit_test(test_freed_slot_not_visible),
        cmocka_unit_test(test_null_store_functions),
        cmocka_unit_test(test_null_fn_binds_nothing),
        cmocka_unit_test(test_null_snapshot_functions),
        cmocka_unit_test(test_null_resource_functions),
        cmocka_unit_test(test_null_thread_create),
        cmocka_unit_test(test_has_bound_default_is_bound),
        cmocka_unit_test(test_has_exit_and_enter_with),
        cmocka_unit_test(test_has_after_disable),
        cmocka_unit_test(test_has_in_entered_capture),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_version),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
