/*
 * ALS_FULL_REJECT from inside the pool (issue 17): a submit into a full
 * REJECT pool returns ALS_EFULL at once and counts in `rejected`, also
 * when the submitter is one of the pool's own workers, running
 *   - a task taken from the queue,
 *   - a task run inline: a throttled submit (als.h, als_submit) or a task
 *     the worker runs while it helps in als_future_wait,
 *   - a continuation (als_future_then).
 * The inline fallback is documented for ALS_FULL_BLOCK only: a REJECT pool
 * never runs the refused task instead (a mutant that did so passed every
 * other test). A one-worker pool makes "full" deterministic: the only
 * worker is busy submitting, so nothing leaves the queue meanwhile.
 * Tasks record what they saw; the main thread asserts after a drain.
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
#include "queue.h"

#define CAP 8          /* queue_capacity of the small pools */
#define LIMIT 1000     /* submits before a flood gives up waiting for EFULL */
#define BACKLOG 64     /* als.h: tasks per worker that make submits inline */
#define BACKLOG_PUSHED (BACKLOG + ALS__QUEUE_LENGTH_EVERY)

/* Submits tasks until the pool refuses one, from wherever it is called. */
struct flood {
    als_pool_t *pool;
    bool detached;       /* ALS_TASK_DETACHED: never inline (throttling) */
    int rc;              /* the first refusal, or 0 after LIMIT accepted */
    int accepted;
    int ran_during;      /* flood tasks that had run when the refusal came */
    bool done;
    _Atomic int ran;
};

static int flood_task(void *arg)
{
    struct flood *fl = arg;
    atomic_fetch_add(&fl->ran, 1);
    return 0;
}

static void flood(struct flood *fl)
{
    int rc = 0;
    for (int i = 0; i < LIMIT; i++) {
        als_task t = {.fn = flood_task, .arg = fl,
                      .flags = fl->detached ? ALS_TASK_DETACHED : 0};
        rc = fl->detached ? als_submit_task(fl->pool, &t) : als_submit(fl->pool, flood_task, fl);
        if (rc)
            break;
        fl->accepted++;
    }
    fl->rc = rc;
    fl->ran_during = atomic_load(&fl->ran);
    fl->done = true;
}

static als_pool_t *reject_pool(unsigned cap)
{
    als_pool_options o = {.threads = 1, .queue_capacity = cap, .on_full = ALS_FULL_REJECT};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* The flood was refused with ALS_EFULL, none of its tasks ran inside it,
 * and after the drain all it got in ran once and the pool counted exactly
 * `rejected` refusals. */
static void assert_refused(als_pool_t *p, struct flood *fl, uint64_t rejected)
{
    assert_true(fl->done);
    assert_int_equal(fl->rc, ALS_EFULL);
    assert_int_equal(fl->ran_during, 0);
    assert_true(fl->accepted > 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&fl->ran), fl->accepted);
    als_pool_stats s;
    get_stats(p, &s);
    assert_int_equal(s.rejected, rejected);
    assert_balanced(&s);
}

/* ---- a task taken from the queue ----------------------------------------- */

static int flood_root(void *arg)
{
    flood(arg);
    return 0;
}

static void reject_from_worker(void **state)
{
    (void)state;
    als_pool_t *p = reject_pool(CAP);
    struct flood fl = {.pool = p};
    assert_int_equal(als_submit(p, flood_root, &fl), 0);
    assert_int_equal(als_pool_drain(p), 0);
    /* The worker's own slot and the ring (als.h, queue_capacity). */
    assert_int_equal(fl.accepted, CAP + 1);
    assert_refused(p, &fl, 1);
    als_pool_free(p);
}

/* From outside, with the only worker held: exactly the capacity, rounded
 * up to a power of two, is accepted (als.h, queue_capacity), down to a
 * capacity of 1. */
static void reject_counts_exactly_from_outside(void **state)
{
    (void)state;
    static const unsigned caps[][2] = {{1, 1}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {64, 64}};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        als_pool_t *p = reject_pool(caps[i][0]);
        struct gate g;
        block_pool(p, &g);
        struct flood fl = {.pool = p};
        flood(&fl);
        if (fl.accepted != (int)caps[i][1])
            fail_msg("capacity %u: %d accepted, want %u", caps[i][0], fl.accepted, caps[i][1]);
        gate_open(&g);
        assert_int_equal(als_pool_drain(p), 0);
        assert_refused(p, &fl, 1);
        als_pool_free(p);
        gate_destroy(&g);
    }
}

/* Detached submits take the same path. */
static void reject_detached_from_worker(void **state)
{
    (void)state;
    als_pool_t *p = reject_pool(CAP);
    struct flood fl = {.pool = p, .detached = true};
    assert_int_equal(als_submit(p, flood_root, &fl), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_refused(p, &fl, 1);
    als_pool_free(p);
}

/* ---- a throttled task, run inline by its submitter ------------------------ */

struct throttled {
    als_pool_t *pool;
    struct flood fl;
    struct flood backlog;
    int inner_rc;
    bool inner_ran;
    bool ran_at_once;
};

static int throttled_inner(void *arg)
{
    struct throttled *th = arg;
    th->inner_ran = true;
    flood(&th->fl);
    return 0;
}

static int throttled_root(void *arg)
{
    struct throttled *th = arg;
    /* A backlog of BACKLOG in the ring (one more waits in our slot), plus
     * the pushes its length may lag (lib/pool/queue.h): the next plain
     * submit runs inline. Detached: never inline themselves. */
    for (int i = 0; i < BACKLOG_PUSHED; i++) {
        als_task t = {.fn = flood_task, .arg = &th->backlog, .flags = ALS_TASK_DETACHED};
        if (als_submit_task(th->pool, &t) != 0)
            return 1;
        th->backlog.accepted++;
    }
    th->inner_rc = als_submit(th->pool, throttled_inner, th);
    th->ran_at_once = th->inner_ran;
    return 0;
}

static void reject_from_throttled_inline_task(void **state)
{
    (void)state;
    als_pool_t *p = reject_pool(4 * BACKLOG);
    struct throttled th = {.pool = p};
    th.fl = (struct flood){.pool = p, .detached = true};
    assert_int_equal(als_submit(p, throttled_root, &th), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(th.inner_rc, 0);
    assert_true(th.ran_at_once); /* the premise: it ran inside als_submit */
    assert_refused(p, &th.fl, 1);
    assert_int_equal(atomic_load(&th.backlog.ran), BACKLOG_PUSHED);
    als_pool_free(p);
}

/* ---- a task the worker runs while it helps in als_future_wait ------------- */

struct helped {
    als_pool_t *pool;
    struct flood fill;   /* fills the pool before the wait */
    struct flood fl;     /* the helped task's flood */
    int wait_rc;
    bool by_help;        /* the future's task ran inside the wait */
    pthread_t root_thread;
};

static void *helped_fn(void *arg)
{
    struct helped *h = arg;
    h->by_help = pthread_equal(pthread_self(), h->root_thread);
    flood(&h->fl);
    return h;
}

static int helped_root(void *arg)
{
    struct helped *h = arg;
    h->root_thread = pthread_self();
    als_future_t *f = NULL;
    if (als_submit_future(h->pool, helped_fn, h, &f) != 0)
        return 1;
    flood(&h->fill); /* the queue is full behind the future's task */
    void *res = NULL;
    h->wait_rc = als_future_wait(f, -1, &res);
    als_future_release(f);
    return 0;
}

static void reject_from_helped_task(void **state)
{
    (void)state;
    als_pool_t *p = reject_pool(CAP);
    struct helped h = {.pool = p};
    h.fill = (struct flood){.pool = p};
    h.fl = (struct flood){.pool = p};
    assert_int_equal(als_submit(p, helped_root, &h), 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(h.wait_rc, 0);
    assert_true(h.by_help); /* the premise: one worker, so it helped */
    assert_int_equal(h.fill.rc, ALS_EFULL);
    assert_refused(p, &h.fl, 2);
    als_pool_free(p);
}

/* ---- a continuation ------------------------------------------------------- */

static void *ident(void *arg)
{
    return arg;
}

static void *cont_flood(void *arg)
{
    flood(arg);
    return arg;
}

static void reject_from_continuation(void **state)
{
    (void)state;
    als_pool_t *p = reject_pool(CAP);
    struct flood fl = {.pool = p};
    /* Both orders: then on a pending future (its completion submits the
     * continuation) and on a completed one (then submits it). */
    for (int completed = 0; completed < 2; completed++) {
        memset(&fl, 0, sizeof fl);
        fl.pool = p;
        struct gate g;
        if (!completed)
            block_pool(p, &g);
        als_future_t *f = NULL, *c = NULL;
        assert_int_equal(als_submit_future(p, ident, &fl, &f), 0);
        if (completed)
            assert_int_equal(als_future_wait(f, -1, NULL), 0);
        assert_int_equal(als_future_then(f, p, cont_flood, &c), 0);
        if (!completed)
            gate_open(&g);
        void *res = NULL;
        assert_int_equal(als_future_wait(c, -1, &res), 0);
        if (!completed) /* the gate task passed: the continuation ran after it */
            gate_destroy(&g);
        assert_ptr_equal(res, &fl);
        als_future_release(f);
        als_future_release(c);
        assert_refused(p, &fl, (uint64_t)completed + 1);
    }
    als_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reject_from_worker),
        cmocka_unit_test(reject_counts_exactly_from_outside),
        cmocka_unit_test(reject_detached_from_worker),
        cmocka_unit_test(reject_from_throttled_inline_task),
        cmocka_unit_test(reject_from_helped_task),
        cmocka_unit_test(reject_from_continuation),
    };
    return cmocka_run_group_tests_name("pool_reject", tests, NULL, NULL);
}
