/* als_pool_drain_help: the draining thread runs queued tasks itself.
 *
 * A one-worker pool whose worker is held at a gate makes it deterministic:
 * every other task can only run on the draining thread, and the last of
 * them opens the gate. Checked: the tasks run there in their own
 * submit-time context and the caller's comes back; they count as the
 * pool's (stats, on_error, als_pool_current); drains and shutdowns from
 * inside them are refused; tasks the drain took but must not wait for go
 * back to the workers; the share of the queue the drain takes at once
 * stays within the workers' reach; and a task that ends the draining
 * thread leaves the pool usable. Tasks record; the main thread asserts. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "als.h"
#include "gate.h"
#include "pool_helpers.h"

#define TASKS 16

static als_t *store;

static int setup(void **state)
{
    (void)state;
    store = als_new(NULL);
    return store ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    als_free(store);
    return 0;
}

static als_pool_t *held_pool(struct gate *g, const als_pool_options *opts)
{
    als_pool_options o = opts ? *opts : (als_pool_options){ 0 };
    o.threads = 1;
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    block_pool(p, g);
    return p;
}

/* ---- what a task run by the drain sees ---------------------------------- */

struct seen {
    struct gate *open_at_end;  /* the last task opens the worker's gate */
    int value;                 /* bound when it was submitted */
    int fail;                  /* its return value */
    void *got;                 /* als_get(store) */
    pthread_t thread;
    als_pool_t *current;
    bool child_ran;
    _Atomic int runs;
};

static int child_task(void *arg)
{
    struct seen *s = arg;
    s->child_ran = true;
    return 0;
}

static int seen_task(void *arg)
{
    struct seen *s = arg;
    s->got = als_get(store);
    s->thread = pthread_self();
    s->current = als_pool_current();
    atomic_fetch_add(&s->runs, 1);
    if (s->value == 0) /* the first also submits one: a task's submit */
        als_submit(s->current, child_task, s);
    if (s->open_at_end)
        gate_open(s->open_at_end);
    return s->fail;
}

struct errors {
    int n, rc;
    void *got;
    pthread_t thread;
};

static void on_error(int rc, void *arg, void *user)
{
    (void)arg;
    struct errors *e = user;
    e->n++;
    e->rc = rc;
    e->got = als_get(store);
    e->thread = pthread_self();
}

static void runs_queued_tasks_on_the_caller(void **state)
{
    (void)state;
    struct errors err = { 0 };
    struct gate g;
    als_pool_t *p = held_pool(&g, &(als_pool_options){ .on_error = on_error, .user = &err });
    struct seen s[TASKS] = { 0 };
    static int values[TASKS];
    for (int i = 0; i < TASKS; i++) {
        values[i] = i;
        s[i].value = i;
        s[i].fail = i == 3 ? 7 : 0;
        s[i].open_at_end = i == TASKS - 1 ? &g : NULL;
        assert_int_equal(als_enter_with(store, &values[i]), 0);
        assert_int_equal(als_submit(p, seen_task, &s[i]), 0);
    }
    static int mine;
    assert_int_equal(als_enter_with(store, &mine), 0);

    assert_int_equal(als_pool_drain_help(p), 0);

    assert_ptr_equal(als_get(store), &mine); /* the caller's context is back */
    assert_null(als_pool_current());
    for (int i = 0; i < TASKS; i++) {
        assert_int_equal(atomic_load(&s[i].runs), 1);
        assert_ptr_equal(s[i].got, &values[i]);
        assert_true(pthread_equal(s[i].thread, pthread_self()));
        assert_ptr_equal(s[i].current, p);
    }
    assert_true(s[0].child_ran); /* a descendant: waited for */
    assert_int_equal(err.n, 1);
    assert_int_equal(err.rc, 7);
    assert_ptr_equal(err.got, &values[3]);
    assert_true(pthread_equal(err.thread, pthread_self()));
    als_pool_stats st;
    get_stats(p, &st);
    assert_int_equal(st.submitted, 1 + TASKS + 1);
    assert_int_equal(st.completed, 1 + TASKS);
    assert_int_equal(st.failed, 1);
    assert_balanced(&st);
    assert_int_equal(als_enter_with(store, NULL), 0);
    als_pool_free(p);
    gate_destroy(&g);
}

/* ---- the drain's share: a stretch of the queue, stealable --------------- */

/* The helping drain takes half of the queued tasks into a queue of its
 * own (so that a request's subtasks, submitted together, run on one
 * thread), and idle workers must be able to take them back: here the
 * drain's first task waits until every other task has run while the
 * drain's thread is inside it, so the other tasks of its share can only
 * run if the worker steals them. (A share kept where no worker reaches,
 * as the drain's batches were, would leave that wait to time out.) */
#define SHARE_TASKS 32
#define SHARE_WAIT_S 10

struct share {
    struct gate *hold;            /* the worker waits here until task 0 */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ran;                      /* tasks 1.. that ran */
    bool all_ran;                 /* task 0 saw them all run */
    pthread_t thread[SHARE_TASKS];
};

struct share_arg {
    struct share *sh;
    int i;
};

static int share_task(void *arg)
{
    struct share_arg *a = arg;
    struct share *sh = a->sh;
    sh->thread[a->i] = pthread_self();
    pthread_mutex_lock(&sh->mu);
    if (a->i == 0) {
        gate_open(sh->hold);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += SHARE_WAIT_S;
        while (sh->ran < SHARE_TASKS - 1 &&
               pthread_cond_timedwait(&sh->cv, &sh->mu, &until) != ETIMEDOUT) {
        }
        sh->all_ran = sh->ran == SHARE_TASKS - 1;
    } else {
        sh->ran++;
        pthread_cond_broadcast(&sh->cv);
    }
    pthread_mutex_unlock(&sh->mu);
    return 0;
}

static void workers_take_back_the_drains_share(void **state)
{
    (void)state;
    struct gate g;
    als_pool_t *p = held_pool(&g, NULL); /* its one worker waits at g */
    struct share sh = { .hold = &g };
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    struct share_arg args[SHARE_TASKS];
    for (int i = 0; i < SHARE_TASKS; i++) {
        args[i] = (struct share_arg){ &sh, i };
        assert_int_equal(als_submit(p, share_task, &args[i]), 0);
    }

    assert_int_equal(als_pool_drain_help(p), 0);

    assert_true(sh.all_ran);
    assert_true(pthread_equal(sh.thread[0], pthread_self()));
    for (int i = 1; i < SHARE_TASKS; i++)
        assert_false(pthread_equal(sh.thread[i], pthread_self()));
    als_pool_stats st;
    get_stats(p, &st);
    assert_true(st.steals >= 1); /* from the drain's own queue */
    assert_int_equal(st.completed, 1 + SHARE_TASKS);
    assert_balanced(&st);
    als_pool_free(p);
    gate_destroy(&g);
    pthread_cond_destroy(&sh.cv);
    pthread_mutex_destroy(&sh.mu);
}

/* ---- refusals ------------------------------------------------------------ */

struct nested {
    als_pool_t *pool;
    struct gate *g;
    int drain, help, shutdown;
};

static int nested_task(void *arg)
{
    struct nested *n = arg;
    n->drain = als_pool_drain(n->pool);
    n->help = als_pool_drain_help(n->pool);
    n->shutdown = als_pool_shutdown(n->pool, ALS_SHUTDOWN_DRAIN);
    if (n->g)
        gate_open(n->g);
    return 0;
}

static void refuses_what_a_worker_refuses(void **state)
{
    (void)state;
    assert_int_equal(als_pool_drain_help(NULL), ALS_EINVAL);
    struct gate g;
    als_pool_t *p = held_pool(&g, NULL);
    struct nested on_caller = { .pool = p, .g = &g };
    assert_int_equal(als_submit(p, nested_task, &on_caller), 0);
    assert_int_equal(als_pool_drain_help(p), 0);
    assert_int_equal(on_caller.drain, ALS_EDEADLK);
    assert_int_equal(on_caller.help, ALS_EDEADLK);
    assert_int_equal(on_caller.shutdown, ALS_EDEADLK);
    /* On a worker, as for als_pool_drain. */
    struct nested on_worker = { .pool = p };
    assert_int_equal(als_submit(p, nested_task, &on_worker), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(on_worker.help, ALS_EDEADLK);
    als_pool_free(p);
    gate_destroy(&g);
}

/* ---- tasks newer than the drain go back to the workers ------------------- */

/* A (waited for) has an outside thread submit B (newer than the drain)
 * and waits until it has; B, run by the drain too, submits C into the
 * drain's own slot, lets the worker go and waits until its gate task has
 * counted as done (A's end is counted when B, of the newer generation,
 * starts). Then nothing the drain waits for is left, and it must
 * return without running C: C goes back to the worker. */
struct newer {
    als_pool_t *pool;
    struct gate *g;
    _Atomic int b_submitted;
    pthread_t drainer, c_thread;
    bool b_on_drainer;
    _Atomic int c_runs;
};

static int c_task(void *arg)
{
    struct newer *nw = arg;
    nw->c_thread = pthread_self();
    atomic_fetch_add(&nw->c_runs, 1);
    return 0;
}

static int b_task(void *arg)
{
    struct newer *nw = arg;
    nw->b_on_drainer = pthread_equal(pthread_self(), nw->drainer);
    als_submit(nw->pool, c_task, nw);
    gate_open(nw->g);
    for (;;) { /* until the gate task's end is counted */
        als_pool_stats st;
        als_pool_stats_get(nw->pool, &st);
        if (st.completed >= 2) /* A's, counted as B started, and the gate's */
            break;
        sched_yield();
    }
    return 0;
}

static void *submit_b(void *arg)
{
    struct newer *nw = arg;
    als_submit(nw->pool, b_task, nw);
    atomic_store(&nw->b_submitted, 1);
    return NULL;
}

static int a_task(void *arg)
{
    struct newer *nw = arg;
    pthread_t t;
    if (pthread_create(&t, NULL, submit_b, nw) != 0)
        return 1;
    pthread_join(t, NULL);
    return 0;
}

static void passes_newer_tasks_on(void **state)
{
    (void)state;
    struct gate g;
    als_pool_t *p = held_pool(&g, NULL);
    struct newer nw = { .pool = p, .g = &g, .drainer = pthread_self() };
    assert_int_equal(als_submit(p, a_task, &nw), 0);
    assert_int_equal(als_pool_drain_help(p), 0);
    assert_true(atomic_load(&nw.b_submitted));
    assert_true(nw.b_on_drainer); /* the premise: the worker was held */
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&nw.c_runs), 1);
    assert_false(pthread_equal(nw.c_thread, pthread_self()));
    als_pool_stats st;
    get_stats(p, &st);
    assert_int_equal(st.completed, 4);
    assert_balanced(&st);
    als_pool_free(p);
    gate_destroy(&g);
}

/* ---- a task that ends the draining thread -------------------------------- */

static int exit_task(void *arg)
{
    (void)arg;
    pthread_exit(NULL);
    return 0;
}

static void *help_thread(void *arg)
{
    als_pool_drain_help(arg);
    return (void *)1; /* never: the task ends this thread */
}

static void thread_ending_in_a_task_leaves_the_pool_usable(void **state)
{
    (void)state;
    struct errors err = { 0 };
    struct gate g;
    als_pool_t *p = held_pool(&g, &(als_pool_options){ .on_error = on_error, .user = &err });
    assert_int_equal(als_submit(p, exit_task, NULL), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, help_thread, p), 0);
    void *ret = NULL;
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_null(ret);
    assert_int_equal(err.n, 1); /* the thread ended: on the failure path */
    assert_int_equal(err.rc, ALS_ECANCELED);
    gate_open(&g);
    assert_int_equal(als_pool_drain_help(p), 0); /* not left locked */
    als_pool_stats st;
    get_stats(p, &st);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.completed, 1);
    assert_balanced(&st);
    als_pool_free(p);
    gate_destroy(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runs_queued_tasks_on_the_caller),
        cmocka_unit_test(refuses_what_a_worker_refuses),
        cmocka_unit_test(passes_newer_tasks_on),
        cmocka_unit_test(workers_take_back_the_drains_share),
        cmocka_unit_test(thread_ending_in_a_task_leaves_the_pool_usable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
