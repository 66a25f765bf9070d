/* longjmp and siglongjmp out of scopes: they run no cleanup, so libals
 * notices the jump at the next scope operation made from the frame the jump
 * landed in (or above it), at the end of any scope around the landing
 * point, or at thread exit; it then unwinds every scope jumped out of as
 * its return would have: the context is the landing scope's, and every
 * value bound inside is released once. */
#define _POSIX_C_SOURCE 200809L /* sigaction, sigsetjmp */
#include <als.h>
#include "internal.h" /* als__test_fail_soft */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

static als_t *s1, *s2;
static _Atomic int created, destroyed;

static void *mk(intptr_t tag)
{
    intptr_t *v = malloc(sizeof *v);
    *v = tag;
    atomic_fetch_add(&created, 1);
    return v;
}

static void destroy_val(void *p)
{
    free(p);
    atomic_fetch_add(&destroyed, 1);
}

static intptr_t tag_of(void *v)
{
    return v ? *(intptr_t *)v : 0;
}

static int setup(void **state)
{
    (void)state;
    s1 = als_new(&(als_options){ .name = "one", .destroy = destroy_val });
    s2 = als_new(&(als_options){ .name = "two", .destroy = destroy_val });
    atomic_store(&created, 0);
    atomic_store(&destroyed, 0);
    return s1 && s2 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    als_free(s1);
    als_free(s2);
    return 0;
}

static void check_clean(void)
{
    assert_int_equal(atomic_load(&created), atomic_load(&destroyed));
    assert_null(als_get(s1));
    assert_null(als_get(s2));
}

static jmp_buf env;
static int depth_goal;

static void *jump(void *arg)
{
    (void)arg;
    longjmp(env, 1);
}

/* Snapshots taken by nest(), released by the test after the jump skipped
 * nest's own release (the test's, not libals's, to clean up). */
static als_snapshot_t *snaps[16];
static int nsnaps;

static void release_snaps(void)
{
    while (nsnaps)
        als_snapshot_release(snaps[--nsnaps]);
}

/* Nested scopes of every function-call kind, then a jump from the bottom. */
static void *nest(void *arg)
{
    intptr_t d = (intptr_t)arg;
    if (d == depth_goal)
        longjmp(env, 1);
    switch (d % 4) {
    case 0:
        return als_run(s1, mk(100 + d), nest, (void *)(d + 1));
    case 1:
        (void)als_enter_with(s2, mk(200 + d));
        return als_exit(s1, nest, (void *)(d + 1));
    case 2: {
        als_snapshot_t *snap = als_snapshot();
        snaps[nsnaps++] = snap;
        void *r = als_snapshot_run(snap, nest, (void *)(d + 1));
        als_snapshot_release(snaps[--nsnaps]);
        return r;
    }
    default:
        return als_run(s2, mk(300 + d), nest, (void *)(d + 1));
    }
}

static void *landing_in_a(void *arg)
{
    (void)arg;
    if (!setjmp(env))
        als_run(s1, mk(2), jump, NULL);
    /* The next scope operation from this frame notices the jump first. */
    void *seen = als_run(s2, mk(3), (als_fn)als_get, s1);
    assert_int_equal(tag_of(seen), 1);
    assert_int_equal(tag_of(als_get(s1)), 1);
    assert_null(als_get(s2));
    assert_int_equal(atomic_load(&destroyed), 2); /* B and C */
    return NULL;
}

static void jump_out_of_a_run(void **state)
{
    (void)state;
    als_run(s1, mk(1), landing_in_a, NULL);
    check_clean();
}

/* A capture is such an operation too. */
static void *landing_then_capture(void *arg)
{
    (void)arg;
    if (!setjmp(env))
        als_run(s1, mk(2), jump, NULL);
    als_snapshot_t *snap = als_snapshot();
    assert_non_null(snap);
    assert_int_equal(tag_of(als_snapshot_run(snap, (als_fn)als_get, s1)), 1);
    als_snapshot_release(snap);
    assert_int_equal(tag_of(als_get(s1)), 1);
    return NULL;
}

static void capture_after_a_jump(void **state)
{
    (void)state;
    als_run(s1, mk(1), landing_then_capture, NULL);
    check_clean();
}

/* So is a submit: the task runs in the landing context. */
static _Atomic intptr_t task_saw;

static int record_task(void *arg)
{
    (void)arg;
    atomic_store(&task_saw, tag_of(als_get(s1)));
    return 0;
}

static void *landing_then_submit(void *arg)
{
    als_pool_t *pool = arg;
    if (!setjmp(env))
        als_run(s1, mk(2), jump, NULL);
    assert_int_equal(als_submit(pool, record_task, NULL), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    return NULL;
}

static void submit_after_a_jump(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 1 });
    assert_non_null(pool);
    als_run(s1, mk(1), landing_then_submit, pool);
    als_pool_free(pool);
    assert_int_equal(atomic_load(&task_saw), 1);
    check_clean();
}

/* Jumps from every depth of mixed scopes (runs, exits, enter_with,
 * snapshot runs): nothing leaks, the context is the landing one. */
static void *landing_deep(void *arg)
{
    intptr_t *bad = arg;
    for (volatile int goal = 1; goal <= 12; goal++) {
        depth_goal = goal;
        if (!setjmp(env))
            nest((void *)(intptr_t)0);
        als_snapshot_release(als_snapshot()); /* notices the jump */
        release_snaps();
        if (tag_of(als_get(s1)) != 7 || tag_of(als_get(s2)) != 8)
            (*bad)++;
    }
    return NULL;
}

static void *deep_in_two(void *arg)
{
    return als_run(s2, mk(8), landing_deep, arg);
}

static void jump_from_every_depth(void **state)
{
    (void)state;
    intptr_t bad = 0;
    als_run(s1, mk(7), deep_in_two, &bad);
    assert_int_equal(bad, 0);
    check_clean();
}

/* Destroy callbacks run by the repair use libals (capture, run): they must
 * not find the records being unwound. */
static als_t *s3;

static void *noop(void *arg)
{
    return arg;
}

static void destroy_using_libals(void *p)
{
    als_snapshot_release(als_snapshot());
    (void)als_run(s1, mk(9), noop, NULL);
    destroy_val(p);
}

static void *nest3(void *arg)
{
    intptr_t d = (intptr_t)arg;
    if (d == 12)
        longjmp(env, 1);
    if (d > 0) /* inside the runs: destroyed inside their ends */
        (void)als_enter_with(s3, mk(10 + d));
    return als_run(s3, mk(d), nest3, (void *)(d + 1));
}

static void *landing_callbacks(void *arg)
{
    (void)arg;
    if (!setjmp(env))
        nest3((void *)(intptr_t)0);
    assert_int_equal(tag_of(als_run(s2, mk(3), (als_fn)als_get, s1)), 1);
    assert_null(als_get(s3));
    return NULL;
}

static void repair_runs_callbacks_that_use_libals(void **state)
{
    (void)state;
    s3 = als_new(&(als_options){ .name = "three", .destroy = destroy_using_libals });
    assert_non_null(s3);
    als_run(s1, mk(1), landing_callbacks, NULL);
    als_free(s3);
    check_clean();
}

/* Nothing after the jump inside the landing scope: its own end unwinds
 * what was jumped out of. */
static void *landing_silent(void *arg)
{
    (void)arg;
    if (!setjmp(env))
        als_run(s1, mk(2), jump, NULL);
    return NULL;
}

static void end_of_enclosing_scope(void **state)
{
    (void)state;
    als_run(s1, mk(1), landing_silent, NULL);
    assert_null(als_get(s1));
    check_clean();
}

/* At the top level: the next operation repairs. */
static void top_level_jump(void **state)
{
    (void)state;
    if (!setjmp(env))
        als_run(s1, mk(1), jump, NULL);
    assert_int_equal(als_enter_with(s2, mk(2)), 0);
    assert_null(als_get(s1));
    assert_int_equal(tag_of(als_get(s2)), 2);
    assert_int_equal(atomic_load(&destroyed), 1);
    assert_int_equal(als_enter_with(s2, NULL), 0); /* releases 2 */
    check_clean();
}

/* siglongjmp out of a signal handler that interrupted a run. */
static sigjmp_buf senv;

static void on_signal(int sig)
{
    (void)sig;
    siglongjmp(senv, 1);
}

static void *raise_it(void *arg)
{
    (void)arg;
    raise(SIGUSR1);
    return NULL;
}

static void *landing_sig(void *arg)
{
    (void)arg;
    if (!sigsetjmp(senv, 1))
        als_run(s1, mk(2), raise_it, NULL);
    assert_int_equal(tag_of(als_run(s2, mk(3), (als_fn)als_get, s1)), 1);
    return NULL;
}

static void siglongjmp_from_a_handler(void **state)
{
    (void)state;
    struct sigaction sa = { .sa_handler = on_signal }, old;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
    als_run(s1, mk(1), landing_sig, NULL);
    sigaction(SIGUSR1, &old, NULL);
    check_clean();
}

/* A thread that jumps and then exits without another operation: its exit
 * unwinds the abandoned scopes (their records are not on the stack). */
static _Thread_local jmp_buf tenv;

static void *thread_jump_now(void *arg)
{
    (void)arg;
    longjmp(tenv, 1);
}

static void *thread_nest(void *arg)
{
    return als_run(s2, mk(2), thread_jump_now, arg);
}

static void *thread_jumps(void *arg)
{
    if (!setjmp(tenv))
        als_run(s1, mk(1), thread_nest, arg);
    return NULL;
}

static void thread_exit_after_a_jump(void **state)
{
    (void)state;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_jumps, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    check_clean();
    assert_int_equal(als_thread_create(&t, NULL, thread_jumps, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    check_clean();
}

/* A pool task that jumps inside itself and returns: the task's own scope
 * end repairs, and the worker's context is clean for the next task. */
static _Atomic int task_bad;

static int jumping_task(void *arg)
{
    (void)arg;
    if (!setjmp(tenv))
        als_run(s1, mk(1), thread_nest, NULL);
    return 0;
}

static int checking_task(void *arg)
{
    (void)arg;
    if (als_get(s1) || als_get(s2))
        atomic_fetch_add(&task_bad, 1);
    return 0;
}

static void jump_inside_a_pool_task(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 1 });
    assert_non_null(pool);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(als_submit(pool, jumping_task, NULL), 0);
        assert_int_equal(als_submit(pool, checking_task, NULL), 0);
    }
    assert_int_equal(als_pool_drain(pool), 0);
    als_pool_free(pool);
    assert_int_equal(atomic_load(&task_bad), 0);
    check_clean();
}

#ifdef ALS_FAULT_INJECTION
/* Without scope records (their blocks cannot be allocated) scopes keep
 * their records on their own stack: everything works, and cleanups still
 * run on pthread_exit; only a longjmp out of them would go unrepaired. */
static _Atomic int fallback_bad;
static als_snapshot_t *empty_snap; /* taken and released by the test */
static void *deep_run(void *arg);

static void *deep(void *arg)
{
    intptr_t d = (intptr_t)arg;
    if (tag_of(als_get(s1)) != (d ? 1000 + d - 1 : 0))
        atomic_fetch_add(&fallback_bad, 1);
    if (d == 40)
        pthread_exit(NULL); /* unwinds all 40 */
    if (d % 2) /* the snapshot's values are not these: bind again inside */
        return als_snapshot_run(empty_snap, deep_run, (void *)d);
    return als_run(s1, mk(1000 + d), deep, (void *)(d + 1));
}

static void *deep_run(void *arg)
{
    intptr_t d = (intptr_t)arg;
    return als_run(s1, mk(1000 + d), deep, (void *)(d + 1));
}

static void *deep_thread(void *arg)
{
    (void)arg;
    deep((void *)(intptr_t)0);
    return NULL;
}

static void scopes_without_records(void **state)
{
    (void)state;
    empty_snap = als_snapshot();
    assert_non_null(empty_snap);
    als__test_fail_soft(true);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, deep_thread, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    als__test_fail_soft(false);
    als_snapshot_release(empty_snap);
    assert_int_equal(atomic_load(&fallback_bad), 0);
    assert_int_equal(atomic_load(&created), 40);
    check_clean();
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(jump_out_of_a_run, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_after_a_jump, setup, teardown),
        cmocka_unit_test_setup_teardown(submit_after_a_jump, setup, teardown),
        cmocka_unit_test_setup_teardown(jump_from_every_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(repair_runs_callbacks_that_use_libals, setup, teardown),
        cmocka_unit_test_setup_teardown(end_of_enclosing_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(top_level_jump, setup, teardown),
        cmocka_unit_test_setup_teardown(siglongjmp_from_a_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(thread_exit_after_a_jump, setup, teardown),
        cmocka_unit_test_setup_teardown(jump_inside_a_pool_task, setup, teardown),
#ifdef ALS_FAULT_INJECTION
        cmocka_unit_test_setup_teardown(scopes_without_records, setup, teardown),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
