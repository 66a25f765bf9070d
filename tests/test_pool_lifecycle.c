/*
 * Lifetime and lifecycle holes of the pool (issue 14), one regression test
 * each:
 * - a destroy callback that runs a nested task on a worker (an inline
 *   submit into its own full BLOCK pool, or a helping future wait): every
 *   value is still destroyed exactly once.
 *
 * Assertions run on the main thread only: tasks and callbacks record what
 * they saw and the test checks it after a drain, free or join.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "als.h"
#include "gate.h"
#include "pool_helpers.h"

/* ---- 1: destroy callbacks running nested tasks ------------------------ */

#define LEAVES 6

enum nest_how { LEAF, NEST_INLINE, NEST_WAIT };

struct nval {
    struct dval d;             /* first: dval_destroy counts it */
    enum nest_how how;
    _Atomic int on_worker;     /* destroyed on a worker of the pool */
};

static struct {
    als_t *store;
    als_pool_t *pool;
    als_pool_t *other;         /* NEST_WAIT: runs the awaited futures */
    struct nval leaves[LEAVES];
    _Atomic int bad_rc;        /* a nested submit or wait that failed */
} nest;

static void *submit_leaf(void *arg)
{
    (void)arg;
    if (als_submit(nest.pool, noop_task, NULL) != 0)
        atomic_fetch_add(&nest.bad_rc, 1);
    return NULL;
}

/* NEST_WAIT: the destroy callback waits for a future of another pool,
 * whose task waits at a gate that a task of this pool opens. The waiting
 * worker helps: it runs that task, which itself waits until the future
 * completed, so the helping wait ends right after a plain task of this
 * pool finished on it (and deferred its frame reference). */
struct helped {
    struct gate g;
    als_future_t *f;
};

static void *gated_fn(void *arg)
{
    gate_pass(arg);
    return NULL;
}

static int open_and_wait(void *arg)
{
    struct helped *h = arg;
    gate_open(&h->g);
    return als_future_wait(h->f, -1, NULL);
}

static void *wait_leaf(void *arg)
{
    (void)arg;
    struct helped h;
    gate_init(&h.g);
    if (als_submit_future(nest.other, gated_fn, &h.g, &h.f) != 0) {
        atomic_fetch_add(&nest.bad_rc, 1);
        return NULL;
    }
    if (als_submit(nest.pool, open_and_wait, &h) != 0 || als_future_wait(h.f, -1, NULL) != 0)
        atomic_fetch_add(&nest.bad_rc, 1);
    /* The pool's only worker is this thread, and the future completes only
     * after open_and_wait started: it ran nested in the wait, and ended. */
    als_future_release(h.f);
    gate_destroy(&h.g);
    return NULL;
}

/* Runs on the worker that drops the last reference to the root's frame:
 * each leaf is bound and a task submitted in its context. The pool has one
 * worker and room for one queued task, so from the third leaf on the submit
 * runs the task inline (NEST_INLINE); or the callback's wait runs a task
 * (NEST_WAIT). */
static void nest_destroy(void *v)
{
    struct nval *n = v;
    dval_destroy(&n->d);
    if (n->how == LEAF)
        return;
    if (als_pool_current() == nest.pool)
        atomic_store(&n->on_worker, 1);
    for (int i = 0; i < LEAVES; i++)
        als_run(nest.store, &nest.leaves[i], n->how == NEST_INLINE ? submit_leaf : wait_leaf,
                NULL);
}

static void *submit_gated(void *arg)
{
    return (void *)(intptr_t)als_submit(nest.pool, gate_task, arg);
}

static void run_nested_destroy(enum nest_how how)
{
    memset(&nest, 0, sizeof nest);
    nest.store = als_new(&(als_options){ .destroy = nest_destroy });
    nest.pool = als_pool_new(&(als_pool_options){ .threads = 1, .queue_capacity = 1 });
    assert_non_null(nest.store);
    assert_non_null(nest.pool);
    if (how == NEST_WAIT)
        assert_non_null(nest.other = als_pool_new(&(als_pool_options){ .threads = 1 }));
    struct nval root = { .how = how };
    /* The task holds the last reference to root's frame: the worker
     * releases it once the task ends, after main left its scope. */
    struct gate g;
    gate_init(&g);
    assert_null(als_run(nest.store, &root, submit_gated, &g));
    gate_await_arrivals(&g, 1);
    gate_open(&g);
    assert_int_equal(als_pool_drain(nest.pool), 0);
    als_pool_free(nest.pool);
    als_pool_free(nest.other);
    gate_destroy(&g);
    assert_int_equal(atomic_load(&root.on_worker), 1);
    assert_int_equal(atomic_load(&nest.bad_rc), 0);
    assert_destroyed_once(&root.d, 1);
    for (int i = 0; i < LEAVES; i++)
        assert_destroyed_once(&nest.leaves[i].d, 1);
    als_free(nest.store);
}

static void test_destroy_submits_inline(void **state)
{
    (void)state;
    run_nested_destroy(NEST_INLINE);
}

static void test_destroy_waits_on_future(void **state)
{
    (void)state;
    run_nested_destroy(NEST_WAIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_submits_inline),
        cmocka_unit_test(test_destroy_waits_on_future),
    };
    return cmocka_run_group_tests_name("pool_lifecycle", tests, NULL, NULL);
}
