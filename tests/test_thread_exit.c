/* Thread exit: values bound at a thread's top level are destroyed when it
 * exits, also those that destroy callbacks bind while that happens. */
#include <als.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

static als_t *st;
static _Atomic int created, destroyed, refused;
static int chain_len; /* how many times a destroy rebinds; -1: forever */

static void *mk(intptr_t n)
{
    intptr_t *v = malloc(sizeof *v);
    *v = n;
    atomic_fetch_add(&created, 1);
    return v;
}

/* Rebinds the store at the thread's top level, as the attack did:
 * the thread-exit cleanup has to release that value too. */
static void rebinding_destroy(void *p)
{
    intptr_t n = *(intptr_t *)p;
    free(p);
    atomic_fetch_add(&destroyed, 1);
    if (chain_len >= 0 && n >= chain_len)
        return;
    void *next = mk(n + 1);
    if (als_enter_with(st, next) != 0) {
        /* Refused (the thread's exit ran out of rounds): still ours. */
        atomic_fetch_add(&refused, 1);
        free(next);
        atomic_fetch_add(&destroyed, 1);
    }
}

static void *bind_and_exit(void *arg)
{
    (void)arg;
    (void)als_enter_with(st, mk(0));
    return NULL;
}

static void run_threads(int len)
{
    chain_len = len;
    atomic_store(&created, 0);
    atomic_store(&destroyed, 0);
    atomic_store(&refused, 0);
    st = als_new(&(als_options){ .name = "rebind", .destroy = rebinding_destroy });
    assert_non_null(st);
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, bind_and_exit, NULL), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
    }
    assert_int_equal(atomic_load(&created), atomic_load(&destroyed));
    als_free(st);
}

/* glibc runs thread-specific-data destructors at most 4 times: a chain of
 * rebinds longer than that leaked its last value (issue 14, defect 8). */
static void rebinds_at_exit_are_released(void **state)
{
    (void)state;
    run_threads(1);
    assert_int_equal(atomic_load(&created), 4 * 2);
    run_threads(10);
    assert_int_equal(atomic_load(&created), 4 * 11);
    assert_int_equal(atomic_load(&refused), 0);
}

/* A callback that rebinds forever is stopped: after the bounded rounds
 * als_enter_with refuses (and leaves the value to its caller). */
static void endless_rebinds_end(void **state)
{
    (void)state;
    run_threads(-1);
    assert_int_equal(atomic_load(&refused), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rebinds_at_exit_are_released),
        cmocka_unit_test(endless_rebinds_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
