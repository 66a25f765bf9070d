/*
 * Lifetime and lifecycle holes of the pool (issue 14), one regression test
 * each:
 * - a destroy callback that runs a nested task on a worker (an inline
 *   submit into its own full BLOCK pool, or a helping future wait): every
 *   value is still destroyed exactly once.
 * - als_pool_drain while another thread keeps submitting returns (it
 *   waits for what was accepted before it, not for an idle pool).
 * - als_future_then into a pool freed before the source completes: the
 *   continuation is cancelled and the freed pool never touched.
 * - als_future_then on a worker of its own full BLOCK pool, the source
 *   completed: the continuation does not run inside the call.
 * - A group task waiting for its own group, a future's task for its own
 *   future: ALS_EDEADLK.
 * - fork() with a running pool: in the child the pool refuses work, drain
 *   returns and free does not wait; contexts keep working.
 * - A task that calls pthread_exit, or is cancelled: drain and free
 *   return, the task counts as failed (on_error: ALS_ECANCELED), what it
 *   held is released and the worker is replaced.
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
#include <malloc.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* ---- 2: a continuation into a pool freed before its source completes -- */

static _Atomic int cont_ran;

static void *cont_fn(void *arg)
{
    atomic_fetch_add(&cont_ran, 1);
    return arg;
}

static void *gate_fn(void *arg)
{
    gate_pass(arg);
    return NULL;
}

static void test_then_into_freed_pool(void **state)
{
    (void)state;
    atomic_store(&cont_ran, 0);
    als_pool_t *a = als_pool_new(&(als_pool_options){ .threads = 1 });
    als_pool_t *b = als_pool_new(&(als_pool_options){ .threads = 1 });
    assert_non_null(a);
    assert_non_null(b);
    struct gate g;
    gate_init(&g);
    als_future_t *f, *then;
    assert_int_equal(als_submit_future(a, gate_fn, &g, &f), 0);
    gate_await_arrivals(&g, 1);
    assert_int_equal(als_future_then(f, b, cont_fn, &then), 0);
    /* glibc fills freed memory with this byte: a continuation that still
     * reached b would crash in plain builds (ASan reports the use). */
    mallopt(M_PERTURB, 0xa5);
    als_pool_free(b);
    gate_open(&g);
    assert_int_equal(als_future_wait(then, -1, NULL), ALS_ECANCELED);
    assert_int_equal(als_future_wait(f, -1, NULL), 0);
    als_future_release(then);
    als_future_release(f);
    als_pool_free(a);
    mallopt(M_PERTURB, 0);
    gate_destroy(&g);
    assert_int_equal(atomic_load(&cont_ran), 0);
}

/* ---- 4: als_future_then never runs the continuation inside the call ---- */

static struct {
    als_pool_t *pool;
    als_future_t *src, *then;
    _Atomic int in_then;       /* the task is inside als_future_then */
    _Atomic int ran_inside;    /* the continuation ran while it was */
    int rc;
} th;

static void *then_cont(void *arg)
{
    if (atomic_load(&th.in_then))
        atomic_store(&th.ran_inside, 1);
    return arg;
}

/* On the only worker of a BLOCK pool with room for one task: two submits
 * fill its slot and the ring, so the pool is full when `then` is called. */
static int then_on_full_pool(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2; i++)
        if (als_submit(th.pool, noop_task, NULL) != 0)
            return 1;
    atomic_store(&th.in_then, 1);
    th.rc = als_future_then(th.src, th.pool, then_cont, &th.then);
    atomic_store(&th.in_then, 0);
    return 0;
}

static void *const_fn(void *arg)
{
    return arg;
}

static void test_then_never_inline(void **state)
{
    (void)state;
    memset(&th, 0, sizeof th);
    th.pool = als_pool_new(&(als_pool_options){ .threads = 1, .queue_capacity = 1 });
    assert_non_null(th.pool);
    assert_int_equal(als_submit_future(th.pool, const_fn, &th, &th.src), 0);
    assert_int_equal(als_future_wait(th.src, -1, NULL), 0); /* completed */
    assert_int_equal(als_submit(th.pool, then_on_full_pool, NULL), 0);
    assert_int_equal(als_pool_drain(th.pool), 0);
    assert_int_equal(th.rc, 0);
    void *res = NULL;
    assert_int_equal(als_future_wait(th.then, -1, &res), 0);
    assert_ptr_equal(res, &th);
    assert_int_equal(atomic_load(&th.ran_inside), 0);
    als_future_release(th.then);
    als_future_release(th.src);
    als_pool_free(th.pool);
}

/* ---- 5: self-waits ----------------------------------------------------- */

/* A detected self-wait returns at once; one that is not fails the test
 * with ALS_ETIMEDOUT instead of hanging it. */
#define SELF_WAIT_NS (5 * 1000000000LL)

static struct {
    struct gate g;
    als_group_t *group;
    als_future_t *f;
    int rc;
} sw;

static int group_self_wait(void *arg)
{
    (void)arg;
    sw.rc = als_group_wait(sw.group, SELF_WAIT_NS);
    return 0;
}

static void *future_self_wait(void *arg)
{
    (void)arg;
    gate_pass(&sw.g); /* sw.f is set */
    sw.rc = als_future_wait(sw.f, SELF_WAIT_NS, NULL);
    return NULL;
}

static void test_group_self_wait(void **state)
{
    (void)state;
    memset(&sw, 0, sizeof sw);
    als_pool_t *p = als_pool_new(&(als_pool_options){ .threads = 2 });
    assert_non_null(p);
    assert_non_null(sw.group = als_group_new());
    assert_int_equal(als_group_submit(sw.group, p, group_self_wait, NULL), 0);
    assert_int_equal(als_group_wait(sw.group, -1), 0);
    assert_int_equal(sw.rc, ALS_EDEADLK);
    als_group_free(sw.group);
    als_pool_free(p);
}

static void test_future_self_wait(void **state)
{
    (void)state;
    memset(&sw, 0, sizeof sw);
    gate_init(&sw.g);
    als_pool_t *p = als_pool_new(&(als_pool_options){ .threads = 2 });
    assert_non_null(p);
    assert_int_equal(als_submit_future(p, future_self_wait, NULL, &sw.f), 0);
    gate_open(&sw.g);
    assert_int_equal(als_future_wait(sw.f, -1, NULL), 0);
    assert_int_equal(sw.rc, ALS_EDEADLK);
    als_future_release(sw.f);
    als_pool_free(p);
    gate_destroy(&sw.g);
}

/* ---- 6: fork() with a running pool ------------------------------------- */

static _Atomic int counted;

static int count_task(void *arg)
{
    (void)arg;
    atomic_fetch_add(&counted, 1);
    return 0;
}

static void *ret_fn(void *arg)
{
    return arg;
}

static void *get_fn(void *arg)
{
    return als_get(arg);
}

/* The child's checks; its exit code names the first that failed. */
static int fork_child_checks(als_pool_t *p)
{
    if (als_submit(p, count_task, NULL) != ALS_ESHUTDOWN)
        return 10;
    if (als_submit_task(p, &(als_task){ .fn = count_task }) != ALS_ESHUTDOWN)
        return 11;
    if (als_submit_after(p, 1, count_task, NULL) != ALS_ESHUTDOWN)
        return 12;
    als_future_t *f;
    if (als_submit_future(p, ret_fn, NULL, &f) != ALS_ESHUTDOWN)
        return 13;
    als_group_t *g = als_group_new();
    if (!g || als_group_submit(g, p, count_task, NULL) != ALS_ESHUTDOWN)
        return 14;
    als_group_free(g);
    if (als_pool_drain(p) != 0)
        return 15;
    als_pool_free(p);
    /* Contexts still work. */
    int v = 7;
    als_t *a = als_new(NULL);
    if (!a || als_run(a, &v, get_fn, a) != &v)
        return 16;
    als_free(a);
    return atomic_load(&counted) == 0 ? 0 : 17;
}

static void test_fork_child_refuses(void **state)
{
    (void)state;
    atomic_store(&counted, 0);
    als_pool_t *p = als_pool_new(&(als_pool_options){ .threads = 1 });
    assert_non_null(p);
    struct gate g;
    block_pool(p, &g);                             /* a running task */
    assert_int_equal(als_submit(p, count_task, NULL), 0); /* a queued one */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fork_child_checks(p));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The parent's pool is untouched. */
    gate_open(&g);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&counted), 1);
    als_pool_free(p);
    gate_destroy(&g);
}

/* ---- 3: drain while another thread keeps submitting ------------------- */

/* The submitter stops when the drain has returned, or after this many
 * submits: a drain that waits for the pool to go idle returns only then. */
#define STEADY_CAP 100000L

/* Task i ends only once task i + 1 was accepted (or the submitter
 * stopped), so the pool is never idle while the submitter goes on. */
static struct {
    als_pool_t *pool;
    struct gate g;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long accepted;
    bool stopped;
    _Atomic bool drained;
    int bad_rc;
} steady;

static int steady_task(void *arg)
{
    long i = (long)(intptr_t)arg;
    pthread_mutex_lock(&steady.mu);
    while (steady.accepted <= i + 1 && !steady.stopped)
        pthread_cond_wait(&steady.cv, &steady.mu);
    pthread_mutex_unlock(&steady.mu);
    return 0;
}

static void *steady_main(void *arg)
{
    (void)arg;
    for (long i = 0; i < STEADY_CAP && !atomic_load(&steady.drained); i++) {
        if (als_submit(steady.pool, steady_task, (void *)(intptr_t)i) != 0)
            steady.bad_rc++;
        pthread_mutex_lock(&steady.mu);
        steady.accepted++;
        pthread_cond_broadcast(&steady.cv);
        pthread_mutex_unlock(&steady.mu);
        if (i == 1000)
            gate_pass(&steady.g); /* the drain begins while we go on */
    }
    pthread_mutex_lock(&steady.mu);
    steady.stopped = true;
    pthread_cond_broadcast(&steady.cv);
    pthread_mutex_unlock(&steady.mu);
    return NULL;
}

static void test_drain_with_steady_submitter(void **state)
{
    (void)state;
    memset(&steady, 0, sizeof steady);
    gate_init(&steady.g);
    pthread_mutex_init(&steady.mu, NULL);
    pthread_cond_init(&steady.cv, NULL);
    steady.pool = als_pool_new(&(als_pool_options){ .threads = 2, .queue_capacity = 256 });
    assert_non_null(steady.pool);
    pthread_t submitter;
    assert_int_equal(pthread_create(&submitter, NULL, steady_main, NULL), 0);
    gate_await_arrivals(&steady.g, 1);
    gate_open(&steady.g);
    assert_int_equal(als_pool_drain(steady.pool), 0);
    atomic_store(&steady.drained, true);
    assert_int_equal(pthread_join(submitter, NULL), 0);
    assert_int_equal(steady.bad_rc, 0);
    if (steady.accepted >= STEADY_CAP)
        fail_msg("drain returned only after the submitter stopped");
    als_pool_free(steady.pool);
    gate_destroy(&steady.g);
    pthread_cond_destroy(&steady.cv);
    pthread_mutex_destroy(&steady.mu);
}

/* ---- 7: a task that ends its worker's thread -------------------------- */

enum ender { EXIT_IN_TASK, CANCEL_IN_TASK };

static struct {
    enum ender how;
    struct gate g;             /* the task arrives: its thread is known */
    pthread_t thread;
    _Atomic int errors;        /* on_error calls */
    int last_error;
    struct dval v;             /* bound when the task was submitted */
    bool in_run;               /* the thread ends inside the task's own als_run */
    als_t *inner;
    struct dval v2;            /* bound by that als_run */
} ender;

static void ender_on_error(int rc, void *arg, void *user)
{
    (void)arg;
    (void)user;
    ender.last_error = rc;
    atomic_fetch_add(&ender.errors, 1);
}

static void *exit_body(void *arg)
{
    (void)arg;
    pthread_exit(NULL);
}

static void *cancelled_body(void *arg);

/* The thread ends inside an als_run the task opened itself when in_run is
 * set: the run's scope unwinds first (its value released once), then the
 * worker's handler counts the task. */
static int exit_task(void *arg)
{
    if (ender.in_run)
        als_run(ender.inner, &ender.v2, exit_body, arg);
    exit_body(arg);
    return 0;
}

static int cancelled_task(void *arg)
{
    if (ender.in_run)
        als_run(ender.inner, &ender.v2, cancelled_body, arg);
    cancelled_body(arg);
    return 0;
}

static void *cancelled_body(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ender.g.mu);
    ender.thread = pthread_self();
    ender.g.arrived++;
    pthread_cond_broadcast(&ender.g.cv);
    pthread_mutex_unlock(&ender.g.mu);
    for (;;)
        pthread_testcancel();
    return NULL;
}

static void *submit_ender(void *arg)
{
    return (void *)(intptr_t)als_submit(arg, ender.how == EXIT_IN_TASK ? exit_task
                                                                       : cancelled_task,
                                        NULL);
}

/* The task ends its worker's thread while it holds a value: drain and free
 * return, the task counts as failed with ALS_ECANCELED, the value is
 * destroyed once, and a task queued behind it still runs (on the worker's
 * new thread: the pool has one). */
static void run_thread_end(enum ender how, bool in_run)
{
    memset(&ender, 0, sizeof ender);
    ender.how = how;
    ender.in_run = in_run;
    gate_init(&ender.g);
    atomic_store(&counted, 0);
    ender.inner = als_new(&(als_options){ .destroy = dval_destroy });
    assert_non_null(ender.inner);
    als_t *store = als_new(&(als_options){ .destroy = dval_destroy });
    als_pool_t *p = als_pool_new(&(als_pool_options){
        .threads = 1, .on_error = ender_on_error });
    assert_non_null(store);
    assert_non_null(p);
    assert_null(als_run(store, &ender.v, submit_ender, p));
    if (how == CANCEL_IN_TASK) {
        gate_await_arrivals(&ender.g, 1);
        assert_int_equal(pthread_cancel(ender.thread), 0);
    }
    assert_int_equal(als_submit(p, count_task, NULL), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&counted), 1);
    als_pool_stats st;
    get_stats(p, &st);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.completed, 1);
    assert_balanced(&st);
    assert_int_equal(atomic_load(&ender.errors), 1);
    assert_int_equal(ender.last_error, ALS_ECANCELED);
    als_pool_free(p);
    assert_destroyed_once(&ender.v, 1);
    if (in_run)
        assert_destroyed_once(&ender.v2, 1);
    als_free(store);
    als_free(ender.inner);
    gate_destroy(&ender.g);
}

static void test_task_pthread_exit(void **state)
{
    (void)state;
    run_thread_end(EXIT_IN_TASK, false);
}

static void test_task_pthread_exit_in_run(void **state)
{
    (void)state;
    run_thread_end(EXIT_IN_TASK, true);
}

static void test_task_pthread_cancel_in_run(void **state)
{
    (void)state;
    run_thread_end(CANCEL_IN_TASK, true);
}

static void test_task_pthread_cancel(void **state)
{
    (void)state;
    run_thread_end(CANCEL_IN_TASK, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_submits_inline),
        cmocka_unit_test(test_destroy_waits_on_future),
        cmocka_unit_test(test_then_into_freed_pool),
        cmocka_unit_test(test_then_never_inline),
        cmocka_unit_test(test_group_self_wait),
        cmocka_unit_test(test_future_self_wait),
        cmocka_unit_test(test_fork_child_refuses),
        cmocka_unit_test(test_drain_with_steady_submitter),
        cmocka_unit_test(test_task_pthread_exit),
        cmocka_unit_test(test_task_pthread_cancel),
        cmocka_unit_test(test_task_pthread_exit_in_run),
        cmocka_unit_test(test_task_pthread_cancel_in_run),
    };
    return cmocka_run_group_tests_name("pool_lifecycle", tests, NULL, NULL);
}
