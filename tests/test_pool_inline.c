/*
 * Throttling (issue 3, fan-out): while a pool's queue holds a backlog of
 * at least 64 tasks per worker, a plain submit from one of its own tasks
 * runs the new task at once on the submitting thread. Every task semantic
 * still holds for such an inline run: the submitter's context, bindings
 * that end with the task, a fresh execution id triggered by the submitter,
 * failure counting and on_error in the submit-time context, exact stats,
 * shutdown refusals. Detached tasks and outside submitters never run
 * inline, and a chain of inline runs cannot overflow the worker's stack.
 *
 * A one-worker pool makes the backlog deterministic: the root task fills
 * the queue with BACKLOG + 1 tasks that nobody else can take (one waits in
 * the worker's own slot, BACKLOG in the ring), so its next submit is
 * inline-eligible. Tasks record what they saw; the main thread asserts
 * after a drain.
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

/* The documented threshold (als.h, als_submit): tasks waiting per worker. */
#define BACKLOG 64

static _Atomic int fillers_ran;

static int filler_task(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&fillers_ran, 1, memory_order_relaxed);
    return 0;
}

/* From inside a task of `pool` (one worker): queue enough tasks that the
 * next plain submit from this task runs inline. Detached, so that queueing
 * them draws no execution id for the submitter (the ids tests need the
 * submitter's id still undrawn). */
static int fill_backlog(als_pool_t *pool)
{
    for (int i = 0; i < BACKLOG + 1; i++) {
        als_task t = {.fn = filler_task, .flags = ALS_TASK_DETACHED};
        int rc = als_submit_task(pool, &t);
        if (rc)
            return rc;
    }
    return 0;
}

static als_pool_t *one_worker_pool(void (*on_error)(int, void *, void *), void *user)
{
    als_pool_options o = {.threads = 1, .on_error = on_error, .user = user};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    atomic_store(&fillers_ran, 0);
    return p;
}

/* ---- what a probe task saw -------------------------------------------- */

struct probe {
    als_t *store;
    void *value;                 /* als_get(store) inside the probe */
    pthread_t thread;
    uint64_t exec, trig;
    bool ran;
    bool trig_first;             /* read the trigger before the own id */
    bool ids_late;               /* read the ids after the nested submit */
    int result;                  /* what the probe returns */
    void *bind;                  /* enter_with this value, never left */
    struct probe *nested;        /* submit this probe from inside */
    als_pool_t *pool;
    int nested_rc;
    bool nested_ran_at_once;
};

static void probe_read_ids(struct probe *p)
{
    if (p->trig_first) {
        p->trig = als_trigger_async_id();
        p->exec = als_execution_async_id();
    } else {
        p->exec = als_execution_async_id();
        p->trig = als_trigger_async_id();
    }
}

static int probe_task(void *arg)
{
    struct probe *p = arg;
    p->ran = true;
    p->thread = pthread_self();
    p->value = als_get(p->store);
    if (!p->ids_late)
        probe_read_ids(p);
    if (p->bind) {
        als_enter_with(p->store, p->bind);
        /* Leaves a cached capture that holds the binding. */
        als_snapshot_release(als_snapshot());
    }
    if (p->nested) {
        p->nested_rc = als_submit(p->pool, probe_task, p->nested);
        p->nested_ran_at_once = p->nested->ran;
    }
    if (p->ids_late)
        probe_read_ids(p);
    return p->result;
}

/* ---- the submitter ------------------------------------------------------ */

struct root {
    als_pool_t *pool;
    als_t *store;
    void *value;                 /* bound around the submit */
    struct probe *probe;
    bool detached;
    int fill_rc, submit_rc;
    bool ran_at_once;            /* probe->ran when als_submit returned */
    pthread_t thread;
    uint64_t exec_before, exec_after; /* the root's id around the submit */
    bool read_own_id_first;
    void *after;                 /* als_get(store) after the submit */
    als_snapshot_t *snap_after;  /* captured after the submit */
};

static void *root_body(void *arg)
{
    struct root *r = arg;
    r->thread = pthread_self();
    r->fill_rc = fill_backlog(r->pool);
    if (r->read_own_id_first)
        r->exec_before = als_execution_async_id();
    if (r->detached) {
        als_task t = {.fn = probe_task, .arg = r->probe, .flags = ALS_TASK_DETACHED};
        r->submit_rc = als_submit_task(r->pool, &t);
    } else {
        r->submit_rc = als_submit(r->pool, probe_task, r->probe);
    }
    r->ran_at_once = r->probe->ran;
    r->exec_after = als_execution_async_id();
    r->after = als_get(r->store);
    r->snap_after = als_snapshot();
    return NULL;
}

static int root_task(void *arg)
{
    struct root *r = arg;
    als_run(r->store, r->value, root_body, r);
    return 0;
}

static void *snap_read(void *arg)
{
    return als_get(arg);
}

static void run_root(als_pool_t *pool, struct root *r)
{
    assert_int_equal(als_submit(pool, root_task, r), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    assert_int_equal(r->fill_rc, 0);
    assert_int_equal(atomic_load(&fillers_ran), BACKLOG + 1);
}

/* ---- tests -------------------------------------------------------------- */

/* It runs before als_submit returns, on the submitting thread, in the
 * submitter's context, with a fresh id triggered by the submitter; what it
 * binds ends with it, also in captures the submitter makes afterwards. */
static void test_inline_context_and_ids(void **state)
{
    (void)state;
    int v = 1, w = 2;
    als_t *store = als_new(NULL);
    als_pool_t *pool = one_worker_pool(NULL, NULL);
    struct probe p = {.store = store, .bind = &w};
    struct root r = {.pool = pool, .store = store, .value = &v, .probe = &p,
                     .read_own_id_first = true};
    run_root(pool, &r);

    assert_int_equal(r.submit_rc, 0);
    assert_true(r.ran_at_once);
    assert_true(pthread_equal(p.thread, r.thread));
    assert_ptr_equal(p.value, &v);
    assert_ptr_equal(r.after, &v);                 /* enter_with ended */
    assert_ptr_equal(als_snapshot_run(r.snap_after, snap_read, store), &v);
    assert_true(p.exec > 1);
    assert_true(p.exec > r.exec_before);           /* fresh and increasing */
    assert_int_equal(p.trig, r.exec_before);       /* triggered by the root */
    assert_int_equal(r.exec_after, r.exec_before); /* the root's id is back */

    als_snapshot_release(r.snap_after);
    als_pool_stats st;
    get_stats(pool, &st);
    assert_int_equal(st.submitted, 1 + BACKLOG + 1 + 1);
    assert_int_equal(st.completed, st.submitted);
    assert_balanced(&st);
    als_pool_free(pool);
    als_free(store);
}

/* Ids are drawn lazily even here: a nested inline run that asks for its
 * trigger before anyone asked for an id resolves the whole chain, outermost
 * first, so ids still increase along root -> probe -> nested probe, each
 * run triggered by the one that submitted it, and each later reads the id
 * its child saw as the trigger. */
static void test_inline_lazy_trigger_chain(void **state)
{
    (void)state;
    int v = 1;
    als_t *store = als_new(NULL);
    als_pool_t *pool = one_worker_pool(NULL, NULL);
    struct probe inner = {.store = store, .trig_first = true};
    struct probe p = {.store = store, .ids_late = true, .nested = &inner, .pool = pool};
    struct root r = {.pool = pool, .store = store, .value = &v, .probe = &p};
    run_root(pool, &r);

    assert_true(r.ran_at_once);
    assert_int_equal(p.nested_rc, 0);
    assert_true(p.nested_ran_at_once);
    assert_ptr_equal(inner.value, &v);
    assert_int_equal(p.trig, r.exec_after);
    assert_int_equal(inner.trig, p.exec);
    assert_true(r.exec_after > 1);
    assert_true(p.exec > r.exec_after);
    assert_true(inner.exec > p.exec);

    als_snapshot_release(r.snap_after);
    als_pool_free(pool);
    als_free(store);
}

/* A failing inline run is counted as failed, and on_error runs on the
 * submitting thread inside the submit-time context, with the run's ids. */
struct err_seen {
    int calls, result;
    void *arg, *value;
    uint64_t exec, trig;
    pthread_t thread;
    als_t *store;
};

static void record_error(int result, void *arg, void *user)
{
    struct err_seen *e = user;
    e->calls++;
    e->result = result;
    e->arg = arg;
    e->value = als_get(e->store);
    e->exec = als_execution_async_id();
    e->trig = als_trigger_async_id();
    e->thread = pthread_self();
}

static void test_inline_failure_and_on_error(void **state)
{
    (void)state;
    int v = 1, w = 2;
    als_t *store = als_new(NULL);
    struct err_seen e = {.store = store};
    als_pool_t *pool = one_worker_pool(record_error, &e);
    struct probe p = {.store = store, .result = 7, .bind = &w};
    struct root r = {.pool = pool, .store = store, .value = &v, .probe = &p};
    run_root(pool, &r);

    assert_true(r.ran_at_once);
    assert_int_equal(r.submit_rc, 0); /* accepted; the failure is the task's */
    assert_int_equal(e.calls, 1);
    assert_int_equal(e.result, 7);
    assert_ptr_equal(e.arg, &p);
    assert_ptr_equal(e.value, &v); /* the submit-time context, not w */
    assert_int_equal(e.exec, p.exec);
    assert_int_equal(e.trig, p.trig);
    assert_int_equal(e.trig, r.exec_after);
    /* The probe asked for its own id first, before anyone had asked for
     * the root's: the root's id was still drawn first. */
    assert_true(p.exec > r.exec_after);
    assert_true(pthread_equal(e.thread, r.thread));

    als_snapshot_release(r.snap_after);
    als_pool_stats st;
    get_stats(pool, &st);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.completed, st.submitted - 1);
    assert_balanced(&st);
    als_pool_free(pool);
    als_free(store);
}

/* A detached task is queued even under a backlog: it runs later, in an
 * empty context. */
static void test_detached_never_inline(void **state)
{
    (void)state;
    int v = 1;
    als_t *store = als_new(NULL);
    als_pool_t *pool = one_worker_pool(NULL, NULL);
    struct probe p = {.store = store};
    struct root r = {.pool = pool, .store = store, .value = &v, .probe = &p, .detached = true};
    run_root(pool, &r);

    assert_int_equal(r.submit_rc, 0);
    assert_false(r.ran_at_once);
    assert_true(p.ran);
    assert_null(p.value);
    assert_int_equal(p.trig, 0);
    als_snapshot_release(r.snap_after);
    als_pool_free(pool);
    als_free(store);
}

/* Outside submitters never run tasks inline, whatever the backlog. */
static void test_outside_submit_never_inline(void **state)
{
    (void)state;
    als_t *store = als_new(NULL);
    als_pool_t *pool = one_worker_pool(NULL, NULL);
    struct gate g;
    block_pool(pool, &g);
    for (int i = 0; i < 4 * BACKLOG; i++)
        assert_int_equal(als_submit(pool, filler_task, NULL), 0);
    struct probe p = {.store = store};
    assert_int_equal(als_submit(pool, probe_task, &p), 0);
    bool at_once = p.ran;
    gate_open(&g);
    assert_int_equal(als_pool_drain(pool), 0);
    assert_false(at_once);
    assert_true(p.ran);
    assert_false(pthread_equal(p.thread, pthread_self()));
    assert_int_equal(atomic_load(&fillers_ran), 4 * BACKLOG);
    gate_destroy(&g);
    als_pool_free(pool);
    als_free(store);
}

/* A task of another pool is not that pool's worker: no inline run. */
struct cross {
    als_pool_t *a, *b;
    struct probe *p;
    int rc;
    bool at_once;
    struct gate *g;
};

static int cross_task(void *arg)
{
    struct cross *c = arg;
    c->rc = als_submit(c->b, probe_task, c->p);
    c->at_once = c->p->ran;
    gate_open(c->g);
    return 0;
}

static void test_other_pool_never_inline(void **state)
{
    (void)state;
    als_t *store = als_new(NULL);
    als_pool_t *a = one_worker_pool(NULL, NULL);
    als_pool_t *b = one_worker_pool(NULL, NULL);
    struct gate g;
    block_pool(b, &g); /* b's worker waits until a's task has submitted */
    for (int i = 0; i < 4 * BACKLOG; i++)
        assert_int_equal(als_submit(b, filler_task, NULL), 0);
    struct probe p = {.store = store};
    struct cross c = {.a = a, .b = b, .p = &p, .g = &g};
    assert_int_equal(als_submit(a, cross_task, &c), 0);
    assert_int_equal(als_pool_drain(a), 0);
    assert_int_equal(als_pool_drain(b), 0);
    assert_int_equal(c.rc, 0);
    assert_false(c.at_once);
    assert_true(p.ran);
    gate_destroy(&g);
    als_pool_free(a);
    als_pool_free(b);
    als_free(store);
}

/* A chain of tasks, each submitting the next, under a backlog: inline runs
 * nest only within a bounded stack budget, after which the chain is queued
 * again, so a chain far deeper than the stack completes. */
#define CHAIN 300000

static _Atomic long chain_ran;
static _Atomic long chain_inline;

static int chain_task(void *arg)
{
    long left = (long)(intptr_t)arg;
    atomic_fetch_add_explicit(&chain_ran, 1, memory_order_relaxed);
    if (left > 1) {
        long before = atomic_load_explicit(&chain_ran, memory_order_relaxed);
        if (als_submit(als_pool_current(), chain_task, (void *)(intptr_t)(left - 1)) != 0)
            return 1;
        if (atomic_load_explicit(&chain_ran, memory_order_relaxed) != before)
            atomic_fetch_add_explicit(&chain_inline, 1, memory_order_relaxed);
    }
    return 0;
}

static int chain_root(void *arg)
{
    (void)arg;
    int rc = fill_backlog(als_pool_current());
    if (rc)
        return rc;
    return als_submit(als_pool_current(), chain_task, (void *)(intptr_t)CHAIN);
}

static void test_inline_chain_bounded(void **state)
{
    (void)state;
    als_pool_t *pool = one_worker_pool(NULL, NULL);
    atomic_store(&chain_ran, 0);
    atomic_store(&chain_inline, 0);
    assert_int_equal(als_submit(pool, chain_root, NULL), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    assert_int_equal(atomic_load(&chain_ran), CHAIN);
    assert_int_equal(atomic_load(&fillers_ran), BACKLOG + 1);
    /* Some links did run inline (the throttling was exercised)... */
    assert_true(atomic_load(&chain_inline) > 0);
    als_pool_stats st;
    get_stats(pool, &st);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.submitted, 1 + BACKLOG + 1 + CHAIN);
    assert_balanced(&st);
    als_pool_free(pool);
}

/* Once a CANCEL shutdown began, a task's submit is refused even when it
 * would have run inline, and the queued backlog is cancelled. */
struct cancel_root {
    als_pool_t *pool;
    struct gate *started;
    int fill_rc;
    long inline_runs;            /* accepted (inline) before the refusal */
    int last_rc;
    bool refused_ran;
    struct probe probe;
};

static _Atomic int fillers_cancelled;

static void filler_cancel(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&fillers_cancelled, 1, memory_order_relaxed);
}

static int cancel_root_task(void *arg)
{
    struct cancel_root *c = arg;
    for (int i = 0; i < BACKLOG + 1 && !c->fill_rc; i++) {
        als_task t = {.fn = filler_task, .cancel = filler_cancel};
        c->fill_rc = als_submit_task(c->pool, &t);
    }
    gate_pass(c->started); /* opened at once: see test_cancel_refuses_inline */
    /* Inline runs until the shutdown begins (no sleep: it is under way). */
    for (;;) {
        c->probe.ran = false;
        int rc = als_submit(c->pool, probe_task, &c->probe);
        if (rc != 0) {
            c->last_rc = rc;
            c->refused_ran = c->probe.ran;
            break;
        }
        if (!c->probe.ran)
            return 1; /* queued instead of inline: the test is void */
        c->inline_runs++;
    }
    return 0;
}

static void test_cancel_refuses_inline(void **state)
{
    (void)state;
    als_t *store = als_new(NULL);
    als_pool_t *pool = one_worker_pool(NULL, NULL);
    atomic_store(&fillers_cancelled, 0);
    struct gate started;
    gate_init(&started);
    gate_open(&started); /* arrivals are counted, nobody waits */
    struct cancel_root c = {.pool = pool, .started = &started, .probe = {.store = store}};
    assert_int_equal(als_submit(pool, cancel_root_task, &c), 0);
    gate_await_arrivals(&started, 1);
    assert_int_equal(als_pool_shutdown(pool, ALS_SHUTDOWN_CANCEL), 0);

    assert_int_equal(c.fill_rc, 0);
    assert_int_equal(c.last_rc, ALS_ESHUTDOWN);
    assert_false(c.refused_ran);
    assert_int_equal(atomic_load(&fillers_cancelled) + atomic_load(&fillers_ran), BACKLOG + 1);
    assert_int_equal(atomic_load(&fillers_cancelled), BACKLOG + 1);
    als_pool_stats st;
    get_stats(pool, &st);
    assert_int_equal(st.failed, 0); /* the root never saw a queued probe */
    assert_int_equal(st.cancelled, BACKLOG + 1);
    assert_int_equal(st.submitted, 1 + BACKLOG + 1 + (uint64_t)c.inline_runs);
    assert_balanced(&st);
    gate_destroy(&started);
    als_pool_free(pool);
    als_free(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inline_context_and_ids),
        cmocka_unit_test(test_inline_lazy_trigger_chain),
        cmocka_unit_test(test_inline_failure_and_on_error),
        cmocka_unit_test(test_detached_never_inline),
        cmocka_unit_test(test_outside_submit_never_inline),
        cmocka_unit_test(test_other_pool_never_inline),
        cmocka_unit_test(test_inline_chain_bounded),
        cmocka_unit_test(test_cancel_refuses_inline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
