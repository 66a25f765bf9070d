/* Trace contexts through the worker pool (issue 6): tasks inherit the
 * submitter's trace by the pool's ordinary context capture, nested submits
 * from inside child spans carry those spans, detached tasks see no trace,
 * a task may outlive the scope that bound its trace, and concurrent
 * submitters never see each other's traces. Tasks record; the main thread
 * asserts after a drain. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "als.h"
#include "als_trace.h"

static als_pool_t *new_pool(unsigned threads)
{
    als_pool_options o = {.threads = threads, .name = "trace-test"};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* ---- inheritance -------------------------------------------------------- */

enum { N_TASKS = 200 };

struct seen {
    als_trace_ctx ctx;
    int had;
    uint64_t async_id, trigger;
};

static struct seen seen[N_TASKS];

static int record_task(void *arg)
{
    struct seen *s = arg;
    s->had = als_trace_current(&s->ctx);
    s->async_id = als_execution_async_id();
    s->trigger = als_trigger_async_id();
    return 0;
}

struct submit_args {
    als_pool_t *pool;
    int rc;
};

static void *submit_all(void *arg)
{
    struct submit_args *a = arg;
    for (int i = 0; i < N_TASKS; i++)
        if (als_submit(a->pool, record_task, &seen[i]) != 0)
            a->rc = -1;
    return NULL;
}

static void test_tasks_inherit_trace(void **state)
{
    (void)state;
    als_pool_t *pool = new_pool(4);
    memset(seen, 0, sizeof seen);
    als_trace_ctx c;
    assert_int_equal(als_trace_extract("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                       "congo=t61rcWkgMzE", &c), 1);
    struct submit_args a = {pool, 0};
    assert_int_equal(als_trace_run(&c, submit_all, &a, NULL), 0);
    assert_int_equal(a.rc, 0);
    assert_int_equal(als_pool_drain(pool), 0);
    for (int i = 0; i < N_TASKS; i++) {
        assert_int_equal(seen[i].had, 1);
        assert_memory_equal(seen[i].ctx.trace_id, c.trace_id, 16);
        assert_memory_equal(seen[i].ctx.span_id, c.span_id, 8);
        assert_string_equal(seen[i].ctx.tracestate, "congo=t61rcWkgMzE");
        assert_int_equal(seen[i].trigger, 1);   /* submitted from the top level */
        assert_true(seen[i].async_id > 1);
    }
    /* Outside the run, tasks see no trace. */
    assert_int_equal(als_submit(pool, record_task, &seen[0]), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    assert_int_equal(seen[0].had, 0);
    als_pool_free(pool);
}

struct detached_args {
    als_pool_t *pool;
    int rc;
};

static void *submit_detached(void *arg)
{
    struct detached_args *d = arg;
    als_task t = {.fn = record_task, .arg = &seen[0], .flags = ALS_TASK_DETACHED};
    d->rc = als_submit_task(d->pool, &t);
    return NULL;
}

static void test_detached_task_has_no_trace(void **state)
{
    (void)state;
    als_pool_t *pool = new_pool(2);
    als_trace_ctx c;
    als_trace_new_root(&c);
    memset(seen, 0, sizeof seen);
    seen[0].had = -1;
    struct detached_args d = {pool, -1};
    assert_int_equal(als_trace_run(&c, submit_detached, &d, NULL), 0);
    assert_int_equal(d.rc, 0);
    assert_int_equal(als_pool_drain(pool), 0);
    assert_int_equal(seen[0].had, 0);       /* ran, and saw no trace */
    als_pool_free(pool);
}

/* ---- two levels of child spans through the pool ------------------------------ */

enum { FAN1 = 6, FAN2 = 5 };

struct node {
    als_pool_t *pool;
    int a, b;
    struct seen s;
    als_trace_ctx span;          /* the span the task started */
    int rc;
};

static struct node lvl1[FAN1], lvl2[FAN1][FAN2];

static void *lvl2_body(void *arg)
{
    struct node *n = arg;
    n->s.had = als_trace_current(&n->s.ctx);
    n->s.async_id = als_execution_async_id();
    n->s.trigger = als_trigger_async_id();
    return NULL;
}

static int lvl2_task(void *arg)
{
    struct node *n = arg;
    n->rc = als_trace_run_span(lvl2_body, n, NULL, &n->span);
    return n->rc;
}

static void *lvl1_body(void *arg)
{
    struct node *n = arg;
    lvl2_body(n);
    for (int b = 0; b < FAN2; b++) {
        struct node *c = &lvl2[n->a][b];
        c->pool = n->pool;
        c->a = n->a;
        c->b = b;
        if (als_submit(n->pool, lvl2_task, c) != 0)
            c->rc = -100;
    }
    return NULL;
}

static int lvl1_task(void *arg)
{
    struct node *n = arg;
    n->rc = als_trace_run_span(lvl1_body, n, NULL, &n->span);
    return n->rc;
}

static void *fan_out(void *arg)
{
    als_pool_t *pool = arg;
    for (int a = 0; a < FAN1; a++) {
        lvl1[a].pool = pool;
        lvl1[a].a = a;
        if (als_submit(pool, lvl1_task, &lvl1[a]) != 0)
            lvl1[a].rc = -100;
    }
    return NULL;
}

static void test_two_level_fanout(void **state)
{
    (void)state;
    als_pool_t *pool = new_pool(3);
    memset(lvl1, 0, sizeof lvl1);
    memset(lvl2, 0, sizeof lvl2);
    als_trace_ctx root;
    als_trace_new_root(&root);
    assert_int_equal(als_trace_run(&root, fan_out, pool, NULL), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    for (int a = 0; a < FAN1; a++) {
        const struct node *n = &lvl1[a];
        assert_int_equal(n->rc, 0);
        assert_int_equal(n->s.had, 1);
        assert_memory_equal(n->s.ctx.trace_id, root.trace_id, 16);
        assert_memory_equal(n->s.ctx.parent_id, root.span_id, 8);
        assert_memory_equal(n->s.ctx.span_id, n->span.span_id, 8);
        for (int b = 0; b < FAN2; b++) {
            const struct node *m = &lvl2[a][b];
            assert_int_equal(m->rc, 0);
            assert_int_equal(m->s.had, 1);
            assert_memory_equal(m->s.ctx.trace_id, root.trace_id, 16);
            /* The parent is the level-1 span that submitted it. */
            assert_memory_equal(m->s.ctx.parent_id, n->span.span_id, 8);
            assert_memory_not_equal(m->s.ctx.span_id, n->span.span_id, 8);
            assert_int_equal(m->s.trigger, n->s.async_id);
        }
    }
    als_pool_free(pool);
}

/* ---- a task outliving the scope that bound its trace --------------------------- */

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
};

static struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};

static int wait_then_record(void *arg)
{
    pthread_mutex_lock(&gate.mu);
    while (!gate.open)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
    return record_task(arg);
}

static void *submit_waiter(void *arg)
{
    struct submit_args *a = arg;
    a->rc = als_submit(a->pool, wait_then_record, &seen[0]);
    return NULL;
}

static void test_task_outlives_scope(void **state)
{
    (void)state;
    als_pool_t *pool = new_pool(1);
    memset(seen, 0, sizeof seen);
    als_trace_ctx c;
    als_trace_new_root(&c);
    struct submit_args a = {pool, -1};
    assert_int_equal(als_trace_run(&c, submit_waiter, &a, NULL), 0);
    assert_int_equal(a.rc, 0);
    /* The scope has ended (and `c` is overwritten) before the task reads
     * the trace: the store's own copy must still be alive (ASan checks). */
    memset(&c.span_id, 0, sizeof c.span_id);
    pthread_mutex_lock(&gate.mu);
    gate.open = true;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
    assert_int_equal(als_pool_drain(pool), 0);
    assert_int_equal(seen[0].had, 1);
    assert_true(als_trace_valid(&seen[0].ctx));
    als_pool_free(pool);
}

/* ---- concurrent submitters never see each other's traces ----------------------- */

enum { SUBMITTERS = 6, PER_SUBMITTER = 400 };

struct xrec {
    const als_trace_ctx *want;   /* the submitter's context */
    int wrong, had;
};

struct submitter {
    als_pool_t *pool;
    als_trace_ctx ctx;
    struct xrec rec[PER_SUBMITTER];
    int rc;
};

static int check_task(void *arg)
{
    struct xrec *r = arg;
    const als_trace_ctx *cur = als_trace_get();
    r->had = cur != NULL;
    if (!cur || memcmp(cur->trace_id, r->want->trace_id, 16) != 0
        || memcmp(cur->span_id, r->want->span_id, 8) != 0)
        r->wrong = 1;
    return 0;
}

static void *submitter_body(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < PER_SUBMITTER; i++) {
        s->rec[i].want = &s->ctx;
        if (als_submit(s->pool, check_task, &s->rec[i]) != 0)
            s->rc = -1;
    }
    return NULL;
}

static void *submitter_thread(void *arg)
{
    struct submitter *s = arg;
    if (als_trace_run(&s->ctx, submitter_body, s, NULL) != 0)
        s->rc = -2;
    return NULL;
}

static void test_no_crosstalk(void **state)
{
    (void)state;
    als_pool_t *pool = new_pool(4);
    static struct submitter subs[SUBMITTERS];
    pthread_t t[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        memset(&subs[i], 0, sizeof subs[i]);
        subs[i].pool = pool;
        als_trace_new_root(&subs[i].ctx);
        assert_int_equal(pthread_create(&t[i], NULL, submitter_thread, &subs[i]), 0);
    }
    for (int i = 0; i < SUBMITTERS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    int wrong = 0, had = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        assert_int_equal(subs[i].rc, 0);
        for (int k = 0; k < PER_SUBMITTER; k++) {
            wrong += subs[i].rec[k].wrong;
            had += subs[i].rec[k].had;
        }
    }
    assert_int_equal(had, SUBMITTERS * PER_SUBMITTER);
    assert_int_equal(wrong, 0);
    als_pool_free(pool);
}

/* ---- the trace store beside other stores ------------------------------------------ */

static als_t *other;

static void *inner_both(void *arg)
{
    als_trace_ctx *out = arg;
    if (als_get(other) != (void *)0x42)
        memset(out, 0, sizeof *out);
    else
        als_trace_current(out);
    return NULL;
}

static void *run_other(void *arg)
{
    return als_run(other, (void *)0x42, inner_both, arg);
}

static als_trace_ctx other_ctx;

static void *trace_inside_other(void *arg)
{
    if (als_trace_run(&other_ctx, inner_both, arg, NULL) != 0)
        return NULL;
    return arg;
}

static void test_with_other_stores(void **state)
{
    (void)state;
    other = als_new(NULL);
    assert_non_null(other);
    als_trace_ctx out;
    als_trace_new_root(&other_ctx);
    memset(&out, 0, sizeof out);
    /* als_run of another store inside a trace keeps the trace ... */
    assert_int_equal(als_trace_run(&other_ctx, run_other, &out, NULL), 0);
    assert_memory_equal(out.span_id, other_ctx.span_id, 8);
    /* ... and als_trace_run inside als_run keeps the other store. */
    memset(&out, 0, sizeof out);
    assert_ptr_equal(als_run(other, (void *)0x42, trace_inside_other, &out), &out);
    assert_memory_equal(out.span_id, other_ctx.span_id, 8);
    assert_null(als_get(other));
    assert_null(als_trace_get());
    als_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tasks_inherit_trace),
        cmocka_unit_test(test_detached_task_has_no_trace),
        cmocka_unit_test(test_two_level_fanout),
        cmocka_unit_test(test_task_outlives_scope),
        cmocka_unit_test(test_no_crosstalk),
        cmocka_unit_test(test_with_other_stores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
