/*
 * Allocation: which operations allocate (issue 2's performance points that
 * are properties: run, exit, a repeated capture and entering a snapshot
 * allocate nothing), and that every allocation failure surfaces as NULL or
 * ALS_ENOMEM with nothing changed, nothing leaked (the asan preset's leak
 * checker) and every owned value destroyed exactly once.
 *
 * Uses the library's test hook als__test_fail_alloc (lib/alloc.c), which
 * exists only when the library is built with ALS_FAULT_INJECTION (the dev,
 * asan and tsan presets); otherwise every test here is skipped.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <als.h>
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Whether the hook exists is known at link time: the library may have been
 * built with ALS_FAULT_INJECTION even where this file was not compiled with
 * it, so look for the symbol rather than the macro. */
extern long als__test_fail_alloc(long n, bool sticky) __attribute__((weak));

static void require_hook(void)
{
    if (!als__test_fail_alloc)
        skip();
}

/* Injection on: the n-th allocation from now fails (and all later ones if
 * sticky). Returns nothing; the attempt counter restarts. */
static void fail_from(long n, bool sticky)
{
    als__test_fail_alloc(n, sticky);
}

/* Injection off; how many allocations were attempted since fail_from. */
static long injection_off(void)
{
    return als__test_fail_alloc(0, false);
}

static int off(void **state)
{
    (void)state;
    if (als__test_fail_alloc)
        als__test_fail_alloc(0, false);
    return 0;
}

/* Values that count their destructions. */
struct tracked {
    atomic_int destroyed;
};

static atomic_int null_destroys;

static void destroy_tracked(void *p)
{
    if (!p) {
        atomic_fetch_add(&null_destroys, 1);
        return;
    }
    atomic_fetch_add(&((struct tracked *)p)->destroyed, 1);
}

static int count(struct tracked *t)
{
    return atomic_load(&t->destroyed);
}

static als_t *a, *b, *c; /* created by the first test, freed by the last */

static void *get_arg(void *arg)
{
    return als_get(arg);
}

static void *capture(void *arg)
{
    (void)arg;
    return als_snapshot();
}

/* ---- als_new ------------------------------------------------------------- */

/* Runs first, while no store exists in this process: the first store
 * needs every allocation als_new can make (the handle, the first chunk of
 * epoch cells, the free-slot list), so failing each in turn covers every
 * failure path. */
static void test_new_failures(void **state)
{
    (void)state;
    require_hook();
    als_t *s = NULL;
    long n;
    for (n = 1; n < 20 && !s; n++) {
        fail_from(n, false);
        s = als_new(&(als_options){ .name = "first", .destroy = destroy_tracked });
        long attempts = injection_off();
        if (!s)
            assert_true(attempts >= n);
    }
    assert_non_null(s);
    assert_true(n > 2); /* at least one failure was provoked */
    assert_string_equal(als_name(s), "first");
    a = s;
    b = als_new(&(als_options){ .name = "b", .destroy = destroy_tracked });
    c = als_new(&(als_options){ .name = "c", .destroy = destroy_tracked });
    assert_non_null(b);
    assert_non_null(c);
    /* The stores work. */
    struct tracked v = { 0 };
    assert_ptr_equal(als_run(a, &v, get_arg, a), &v);
    assert_int_equal(count(&v), 1);
}

/* ---- what allocates nothing ------------------------------------------------ */

static void *nested_work(void *arg)
{
    struct tracked *v = arg;
    /* Nested runs and exits of several stores. */
    if (als_get(a) != &v[0])
        return NULL;
    if (als_run(b, &v[1], get_arg, b) != &v[1])
        return NULL;
    if (als_exit(a, get_arg, a) != NULL)
        return NULL;
    if (als_run(a, &v[2], get_arg, a) != &v[2])
        return NULL;
    return &v[0];
}

static void test_run_exit_allocate_nothing(void **state)
{
    (void)state;
    require_hook();
    struct tracked v[3];
    memset(v, 0, sizeof v);
    /* Every allocation fails from now on: run must still bind and work. */
    fail_from(1, true);
    void *r = als_run(a, &v[0], nested_work, v);
    long attempts = injection_off();
    assert_ptr_equal(r, &v[0]);
    assert_int_equal(attempts, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(count(&v[i]), 1);
}

/* Inside an entered snapshot, once the thread has a spare table. */
static void *run_in_snapshot(void *arg)
{
    return als_run(a, arg, nested_work, arg);
}

static void test_run_in_snapshot_allocates_nothing_when_warm(void **state)
{
    (void)state;
    require_hook();
    struct tracked w[3], v[3];
    memset(w, 0, sizeof w);
    memset(v, 0, sizeof v);
    als_snapshot_t *snap = als_snapshot();
    /* Warm: the first write inside an entered frame copies its table. */
    assert_ptr_equal(als_snapshot_run(snap, run_in_snapshot, w), &w[0]);
    fail_from(1, true);
    void *r = als_snapshot_run(snap, run_in_snapshot, v);
    long attempts = injection_off();
    assert_ptr_equal(r, &v[0]);
    assert_int_equal(attempts, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(count(&v[i]), 1);
    als_snapshot_release(snap);
}

/* A repeated capture with no change in between: the same snapshot, no
 * allocation. */
struct repeat {
    als_snapshot_t *first, *second, *inside;
    long attempts;
};

static void *capture_inside(void *arg)
{
    (void)arg;
    return als_snapshot();
}

static void *capture_repeatedly(void *arg)
{
    struct repeat *rp = arg;
    rp->first = als_snapshot();
    fail_from(1, true);
    rp->second = als_snapshot();
    /* Inside the snapshot, unchanged, the capture is the snapshot. */
    rp->inside = als_snapshot_run(rp->first, capture_inside, NULL);
    rp->attempts = injection_off();
    return NULL;
}

static void *capture_repeatedly_b(void *arg)
{
    static struct tracked vb;
    return als_run(b, &vb, capture_repeatedly, arg);
}

static void test_repeated_capture_allocates_nothing(void **state)
{
    (void)state;
    require_hook();
    struct tracked v = { 0 };
    struct repeat rp;
    memset(&rp, 0, sizeof rp);
    als_run(a, &v, capture_repeatedly_b, &rp);
    assert_non_null(rp.first);
    assert_ptr_equal(rp.second, rp.first);
    assert_ptr_equal(rp.inside, rp.first);
    assert_int_equal(rp.attempts, 0);
    als_snapshot_release(rp.first);
    als_snapshot_release(rp.second);
    assert_int_equal(count(&v), 0);
    als_snapshot_release(rp.inside);
    assert_int_equal(count(&v), 1);
}

/* Entering and leaving snapshots in all forms. */
static void test_entering_allocates_nothing(void **state)
{
    (void)state;
    require_hook();
    struct tracked v = { 0 };
    als_snapshot_t *snap = als_run(a, &v, capture, NULL);
    als_bound_t *bd = als_bind(get_arg);
    als_resource_t *res = als_resource_new("r");
    assert_non_null(snap);
    assert_non_null(bd);
    assert_non_null(res);

    fail_from(1, true);
    void *in_snap = als_snapshot_run(snap, get_arg, a);
    als_scope_t sc;
    int enter_rc = als_scope_enter(&sc, snap);
    void *in_scope = als_get(a);
    int leave_rc = als_scope_leave(&sc);
    void *in_bound = als_bound_call(bd, a);
    void *in_res = als_resource_run_in_scope(res, get_arg, a);
    long attempts = injection_off();

    assert_int_equal(attempts, 0);
    assert_ptr_equal(in_snap, &v);
    assert_int_equal(enter_rc, 0);
    assert_ptr_equal(in_scope, &v);
    assert_int_equal(leave_rc, 0);
    assert_null(in_bound);
    assert_null(in_res);
    als_snapshot_release(snap);
    als_bound_free(bd);
    als_resource_free(res);
    assert_int_equal(count(&v), 1);
}

/* ---- failures ------------------------------------------------------------- */

static void *enter_fails(void *arg)
{
    struct tracked *v = arg;
    fail_from(1, false);
    int rc = als_enter_with(a, &v[1]);
    injection_off();
    /* Nothing changed, and the handed value was destroyed. */
    if (als_get(a) != &v[0] || count(&v[1]) != 1)
        return NULL;
    return (void *)(intptr_t)rc;
}

static void test_enter_with_enomem(void **state)
{
    (void)state;
    require_hook();
    struct tracked v[2];
    memset(v, 0, sizeof v);
    assert_int_equal((intptr_t)als_run(a, &v[0], enter_fails, v), ALS_ENOMEM);
    assert_int_equal(count(&v[0]), 1);
    assert_int_equal(count(&v[1]), 1);

    /* NULL is never destroyed, even on failure. */
    int before = atomic_load(&null_destroys);
    fail_from(1, false);
    int rc = als_enter_with(b, NULL);
    injection_off();
    assert_int_equal(rc, ALS_ENOMEM);
    assert_int_equal(atomic_load(&null_destroys), before);
}

/* Fails the n-th allocation of op for n = 1, 2, ... until op succeeds;
 * each failing call must report failure and change nothing. Returns how
 * many failures were provoked. */
struct sweep {
    void *(*op)(void *);   /* returns non-NULL on success */
    void *arg;
    void *result;
};

static int sweep(struct sweep *sw)
{
    int failures = 0;
    for (long n = 1; n < 64; n++) {
        fail_from(n, false);
        void *r = sw->op(sw->arg);
        injection_off();
        if (r) {
            sw->result = r;
            return failures;
        }
        failures++;
    }
    return -1;
}

/* Captures with three run bindings to promote: a frame and three copies. */
struct deep {
    struct tracked v[3];
    void *(*inner)(void *);
    int failures;
    void *result;
    void *seen[3];
};

static void *deep_sweep(void *arg)
{
    struct deep *d = arg;
    struct sweep sw = { d->inner, NULL, NULL };
    d->failures = sweep(&sw);
    d->result = sw.result;
    /* The context is intact after all those failures. */
    d->seen[0] = als_get(a);
    d->seen[1] = als_get(b);
    d->seen[2] = als_get(c);
    return NULL;
}

static void *deep_c(void *arg)
{
    struct deep *d = arg;
    return als_run(c, &d->v[2], deep_sweep, d);
}

static void *deep_b(void *arg)
{
    struct deep *d = arg;
    return als_run(b, &d->v[1], deep_c, d);
}

static void run_deep(struct deep *d, void *(*inner)(void *))
{
    memset(d, 0, sizeof *d);
    d->inner = inner;
    als_run(a, &d->v[0], deep_b, d);
}

static void *op_snapshot(void *arg)
{
    (void)arg;
    return als_snapshot();
}

static void test_snapshot_enomem(void **state)
{
    (void)state;
    require_hook();
    struct deep d;
    run_deep(&d, op_snapshot);
    /* The frame and the three promoted bindings: four failure points. */
    assert_int_equal(d.failures, 4);
    assert_ptr_equal(d.seen[0], &d.v[0]);
    assert_ptr_equal(d.seen[1], &d.v[1]);
    assert_ptr_equal(d.seen[2], &d.v[2]);
    assert_non_null(d.result);
    for (int i = 0; i < 3; i++)
        assert_int_equal(count(&d.v[i]), 0);
    assert_ptr_equal(als_snapshot_run(d.result, get_arg, b), &d.v[1]);
    als_snapshot_release(d.result);
    for (int i = 0; i < 3; i++)
        assert_int_equal(count(&d.v[i]), 1);
}

static void *op_bind(void *arg)
{
    (void)arg;
    return als_bind(get_arg);
}

static void test_bind_enomem(void **state)
{
    (void)state;
    require_hook();
    struct deep d;
    run_deep(&d, op_bind);
    assert_int_equal(d.failures, 5); /* the capture's four, the bound one */
    assert_ptr_equal(d.seen[2], &d.v[2]);
    assert_non_null(d.result);
    assert_ptr_equal(als_bound_call(d.result, c), &d.v[2]);
    als_bound_free(d.result);
    for (int i = 0; i < 3; i++)
        assert_int_equal(count(&d.v[i]), 1);
}

static void *op_resource(void *arg)
{
    (void)arg;
    return als_resource_new("r");
}

static void test_resource_enomem(void **state)
{
    (void)state;
    require_hook();
    struct deep d;
    run_deep(&d, op_resource);
    assert_int_equal(d.failures, 5); /* the resource, the capture's four */
    assert_non_null(d.result);
    assert_ptr_equal(als_resource_run_in_scope(d.result, get_arg, a), &d.v[0]);
    als_resource_free(d.result);
    for (int i = 0; i < 3; i++)
        assert_int_equal(count(&d.v[i]), 1);

    /* resource_bind: one allocation. */
    als_resource_t *r = als_resource_new("r");
    fail_from(1, false);
    als_bound_t *bd = als_resource_bind(r, get_arg);
    injection_off();
    assert_null(bd);
    bd = als_resource_bind(r, get_arg);
    assert_non_null(bd);
    als_resource_free(r);
    als_bound_free(bd);
}

static void *thread_body(void *arg)
{
    return als_get(arg);
}

static void *op_thread(void *arg)
{
    (void)arg;
    pthread_t t;
    int rc = als_thread_create(&t, NULL, thread_body, b);
    if (rc == ALS_ENOMEM)
        return NULL;
    if (rc != 0)
        return (void *)1; /* unexpected: seen as a success the test rejects */
    /* Injection is still armed for the allocations after the ones that
     * made the thread: turn it off before the thread allocates. */
    injection_off();
    void *ret = NULL;
    pthread_join(t, &ret);
    return ret ? ret : (void *)2;
}

static void test_thread_create_enomem(void **state)
{
    (void)state;
    require_hook();
    struct deep d;
    run_deep(&d, op_thread);
    assert_int_equal(d.failures, 5); /* the start record, the capture's four */
    assert_ptr_equal(d.result, &d.v[1]);
    for (int i = 0; i < 3; i++)
        assert_int_equal(count(&d.v[i]), 1);
}

/* The one documented failure of als_run: a store whose slot lies beyond a
 * thread's inline table, on a thread whose table never grew. */
#define WIDE 20

struct wide {
    als_t *s;
    struct tracked v;
    int called;
    void *r;
    int enter_rc;
    struct tracked w;
};

static void *mark_called(void *arg)
{
    ((struct wide *)arg)->called = 1;
    return arg;
}

static void *wide_thread(void *arg)
{
    struct wide *wd = arg;
    fail_from(1, true);
    wd->r = als_run(wd->s, &wd->v, mark_called, wd);
    wd->enter_rc = als_enter_with(wd->s, &wd->w);
    injection_off();
    return NULL;
}

static void test_run_grow_failure(void **state)
{
    (void)state;
    require_hook();
    als_t *fill[WIDE];
    for (int i = 0; i < WIDE; i++)
        fill[i] = als_new(NULL);
    struct wide wd;
    memset(&wd, 0, sizeof wd);
    wd.s = als_new(&(als_options){ .destroy = destroy_tracked });
    assert_non_null(wd.s);
    assert_true(wd.s->index >= ALS__BASE_SLOTS); /* what this test is about */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wide_thread, &wd), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_null(wd.r);
    assert_int_equal(wd.called, 0);
    assert_int_equal(count(&wd.v), 1);  /* handed over, so destroyed */
    assert_int_equal(wd.enter_rc, ALS_ENOMEM);
    assert_int_equal(count(&wd.w), 1);
    als_free(wd.s);
    for (int i = 0; i < WIDE; i++)
        als_free(fill[i]);
}

static void test_free_stores(void **state)
{
    (void)state;
    require_hook();
    als_free(a);
    als_free(b);
    als_free(c);
    assert_int_equal(atomic_load(&null_destroys), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: it needs a process in which no store was created yet. */
        cmocka_unit_test_teardown(test_new_failures, off),
        cmocka_unit_test_teardown(test_run_exit_allocate_nothing, off),
        cmocka_unit_test_teardown(test_run_in_snapshot_allocates_nothing_when_warm, off),
        cmocka_unit_test_teardown(test_repeated_capture_allocates_nothing, off),
        cmocka_unit_test_teardown(test_entering_allocates_nothing, off),
        cmocka_unit_test_teardown(test_enter_with_enomem, off),
        cmocka_unit_test_teardown(test_snapshot_enomem, off),
        cmocka_unit_test_teardown(test_bind_enomem, off),
        cmocka_unit_test_teardown(test_resource_enomem, off),
        cmocka_unit_test_teardown(test_thread_create_enomem, off),
        cmocka_unit_test_teardown(test_run_grow_failure, off),
        cmocka_unit_test_teardown(test_free_stores, off),
    };
    return cmocka_run_group_tests_name("alloc", tests, NULL, NULL);
}
