/* Workers' own queues and stealing (lib/pool/sched.c).
 *
 * A task's older submissions wait in its worker's own queue; other workers
 * steal them. These tests hold the owner inside the submitting task, so
 * every child that runs before the test lets go was stolen, and check that
 * stolen tasks run in their submitter's context with its ids, that a
 * REJECT pool (exact capacity) keeps no own queues, and that a full own
 * queue spills to the shared one without losing or repeating a task. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "als.h"
#include "gate.h"
#include "pool_helpers.h"

#include <stdatomic.h>

#define KIDS 16

struct child_rec {
    void *value;              /* what als_get(store) said */
    uint64_t trigger;         /* als_trigger_async_id() */
    pthread_t thread;
    _Atomic int runs;
};

struct parent {
    als_pool_t *pool;
    als_t *store;
    struct gate hold;         /* the parent waits here */
    struct gate ran;          /* children arrive here (never wait) */
    uint64_t exec_id;         /* the parent's execution id */
    pthread_t thread;
    int submit_rc;
    struct child_rec kids[KIDS];
};

struct child_arg {
    struct parent *p;
    unsigned i;
};
static struct child_arg child_args[KIDS];

static int child(void *arg)
{
    struct child_arg *a = arg;
    struct child_rec *r = &a->p->kids[a->i];
    r->value = als_get(a->p->store);
    r->trigger = als_trigger_async_id();
    r->thread = pthread_self();
    atomic_fetch_add(&r->runs, 1);
    pthread_mutex_lock(&a->p->ran.mu);
    a->p->ran.arrived++;
    pthread_cond_broadcast(&a->p->ran.cv);
    pthread_mutex_unlock(&a->p->ran.mu);
    return 0;
}

static void *parent_body(void *arg)
{
    struct parent *p = arg;
    p->exec_id = als_execution_async_id();
    p->thread = pthread_self();
    for (unsigned i = 0; i < KIDS; i++) {
        child_args[i] = (struct child_arg){ p, i };
        int rc = als_submit(p->pool, child, &child_args[i]);
        if (rc)
            p->submit_rc = rc;
    }
    gate_pass(&p->hold); /* the owner stays busy: the others must steal */
    return NULL;
}

static int parent_task(void *arg)
{
    struct parent *p = arg;
    als_run(p->store, "request-7", parent_body, p);
    return 0;
}

/* Runs the scenario on `pool`: every child but the newest (the owner's
 * LIFO slot) must run while the owner is held. */
static void run_held_parent(als_pool_t *pool, struct parent *p)
{
    memset(p, 0, sizeof *p);
    p->pool = pool;
    p->store = als_new(NULL);
    assert_non_null(p->store);
    gate_init(&p->hold);
    gate_init(&p->ran);
    assert_int_equal(als_submit(pool, parent_task, p), 0);
    gate_await_arrivals(&p->ran, KIDS - 1); /* hangs (test timeout) if lost */
    gate_open(&p->hold);
    assert_int_equal(als_pool_drain(pool), 0);
    assert_int_equal(p->submit_rc, 0);
    unsigned elsewhere = 0;
    for (unsigned i = 0; i < KIDS; i++) {
        struct child_rec *r = &p->kids[i];
        assert_int_equal(atomic_load(&r->runs), 1);
        assert_string_equal(r->value, "request-7");
        assert_true(r->trigger == p->exec_id);
        elsewhere += !pthread_equal(r->thread, p->thread);
    }
    assert_true(elsewhere >= KIDS - 1);
    als_free(p->store);
    gate_destroy(&p->hold);
    gate_destroy(&p->ran);
}

static void stolen_tasks_keep_context_and_ids(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 2 });
    assert_non_null(pool);
    static struct parent p;
    run_held_parent(pool, &p);
    als_pool_stats s;
    get_stats(pool, &s);
    assert_balanced(&s);
    /* The held owner's queue was emptied by the other worker alone. */
    assert_true(s.steals >= KIDS - 1);
    als_pool_free(pool);
}

static void reject_pool_keeps_no_own_queues(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){
        .threads = 2, .on_full = ALS_FULL_REJECT });
    assert_non_null(pool);
    static struct parent p;
    run_held_parent(pool, &p); /* through the shared ring */
    als_pool_stats s;
    get_stats(pool, &s);
    assert_balanced(&s);
    assert_int_equal(s.steals, 0);
    als_pool_free(pool);
}

/* More detached submits than an own queue holds (detached tasks never run
 * inline): the queue spills to the shared ring, and every task runs once. */
#define SPILL_TASKS 2000
static _Atomic int spill_runs[SPILL_TASKS];
static int spill_idx[SPILL_TASKS];

static int spill_child(void *arg)
{
    atomic_fetch_add(&spill_runs[*(int *)arg], 1);
    return 0;
}

static int spill_parent(void *arg)
{
    als_pool_t *pool = arg;
    for (int i = 0; i < SPILL_TASKS; i++) {
        spill_idx[i] = i;
        als_task t = { .fn = spill_child, .arg = &spill_idx[i], .flags = ALS_TASK_DETACHED };
        if (als_submit_task(pool, &t) != 0)
            return 1;
    }
    return 0;
}

static void full_own_queue_spills(void **state)
{
    (void)state;
    for (unsigned threads = 1; threads <= 3; threads++) {
        memset(spill_runs, 0, sizeof spill_runs);
        als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = threads });
        assert_non_null(pool);
        assert_int_equal(als_submit(pool, spill_parent, pool), 0);
        assert_int_equal(als_pool_drain(pool), 0);
        for (int i = 0; i < SPILL_TASKS; i++)
            assert_int_equal(atomic_load(&spill_runs[i]), 1);
        als_pool_stats s;
        get_stats(pool, &s);
        assert_balanced(&s);
        assert_int_equal(s.completed, SPILL_TASKS + 1);
        als_pool_free(pool);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stolen_tasks_keep_context_and_ids),
        cmocka_unit_test(reject_pool_keeps_no_own_queues),
        cmocka_unit_test(full_own_queue_spills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
