/*
 * Worker pool and context (issue 3): capture at submit, the worker's own
 * context restored exactly, transitive flow through nested submits, async
 * ids, on_error's context, detached tasks, destroy callbacks on workers,
 * capture failure, and the cross-talk test (several submitter threads,
 * thousands of tasks, each checking it sees exactly its submitter's values).
 *
 * Assertions run on the main thread only: tasks record what they saw and
 * the test checks it after a drain, shutdown or join.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "als.h"

/* Test builds of the library (ALS_FAULT_INJECTION, the dev presets) carry
 * an allocation-failure hook (lib/alloc.c); weak so that other builds link
 * and skip the test that needs it. */
extern long als__test_fail_alloc(long n, bool sticky) __attribute__((weak));

/* ---- helpers ---------------------------------------------------------- */

#include "gate.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* All n ids distinct, and none is 0 or 1 (the reserved ones). */
static void assert_ids_fresh(uint64_t *ids, size_t n)
{
    qsort(ids, n, sizeof *ids, cmp_u64);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] <= 1)
            fail_msg("id %llu at %zu is reserved", (unsigned long long)ids[i], i);
        if (i && ids[i] == ids[i - 1])
            fail_msg("id %llu handed out twice", (unsigned long long)ids[i]);
    }
}

/* A value owned by a destroy-owning store: counts its destroys and where
 * they ran. */
struct val {
    _Atomic int destroyed;
    _Atomic int on_worker;     /* destroyed on one of a pool's workers */
    _Atomic int on_main;
};
static pthread_t main_thread;

static void val_init(struct val *v)
{
    atomic_init(&v->destroyed, 0);
    atomic_init(&v->on_worker, 0);
    atomic_init(&v->on_main, 0);
}

static void val_destroy(void *p)
{
    struct val *v = p;
    atomic_fetch_add(&v->destroyed, 1);
    if (als_pool_current())
        atomic_store(&v->on_worker, 1);
    if (pthread_equal(pthread_self(), main_thread))
        atomic_store(&v->on_main, 1);
}

/* What a task saw. Written by the task, read after drain. */
struct seen {
    als_t *s1, *s2, *s3;         /* the stores to read */
    void *v1, *v2, *v3;
    uint64_t exec, trig;
    als_pool_t *pool;
    _Atomic int runs;
    struct gate *gate;           /* optional: wait here first */
};

static void seen_init(struct seen *s, als_t *a, als_t *b, als_t *c)
{
    memset(s, 0, sizeof *s);
    s->s1 = a;
    s->s2 = b;
    s->s3 = c;
    s->v1 = s->v2 = s->v3 = (void *)s; /* "never written" */
    atomic_init(&s->runs, 0);
}

static void seen_record(struct seen *s)
{
    s->v1 = als_get(s->s1);
    s->v2 = als_get(s->s2);
    s->v3 = als_get(s->s3);
    s->exec = als_execution_async_id();
    s->trig = als_trigger_async_id();
    s->pool = als_pool_current();
    atomic_fetch_add(&s->runs, 1);
}

static int seen_task(void *arg)
{
    struct seen *s = arg;
    if (s->gate)
        gate_pass(s->gate);
    seen_record(s);
    return 0;
}

static als_pool_t *new_pool(unsigned threads, unsigned cap)
{
    als_pool_options o = {.threads = threads, .queue_capacity = cap};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* ---- semantics 1: capture at submit ----------------------------------- */

struct capture_ctx {
    als_pool_t *pool;
    als_t *a;
    struct seen *s;            /* [4] */
    int x, y, z;
    int rc[4];
    void *after_submit;
};

static void *capture_inner(void *arg)
{
    struct capture_ctx *c = arg;
    c->rc[2] = als_submit(c->pool, seen_task, &c->s[2]);
    return NULL;
}

static void *capture_body(void *arg)
{
    struct capture_ctx *c = arg;
    c->rc[0] = als_submit(c->pool, seen_task, &c->s[0]);
    c->after_submit = als_get(c->a); /* submitting changes nothing here */
    als_enter_with(c->a, &c->y);
    c->rc[1] = als_submit(c->pool, seen_task, &c->s[1]);
    als_run(c->a, &c->z, capture_inner, c);
    return NULL;
}

static void test_capture_at_submit(void **state)
{
    (void)state;
    static int dflt;
    als_t *a = als_new(NULL);
    als_options bo = {.name = "b", .default_value = &dflt};
    als_t *b = als_new(&bo);
    als_t *unused = als_new(NULL);
    assert_non_null(a);
    assert_non_null(b);
    als_pool_t *p = new_pool(1, 16);
    struct gate g;
    gate_init(&g);
    struct seen s[4];
    for (int i = 0; i < 4; i++)
        seen_init(&s[i], a, b, unused);
    s[0].gate = &g; /* holds the only worker: the rest waits in the queue */

    struct capture_ctx c = {.pool = p, .a = a, .s = s};
    als_run(a, &c.x, capture_body, &c);
    void *after_run = als_get(a);
    c.rc[3] = als_submit(p, seen_task, &s[3]);
    gate_open(&g);
    assert_int_equal(als_pool_drain(p), 0);
    assert_ptr_equal(c.after_submit, &c.x);
    assert_null(after_run);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(c.rc[i], 0);
        assert_int_equal(atomic_load(&s[i].runs), 1);
        assert_ptr_equal(s[i].v2, &dflt);
        assert_null(s[i].v3);
        assert_ptr_equal(s[i].pool, p);
    }
    /* Each saw the value current when it was submitted, although the
     * submitter had moved on before any of them ran. */
    assert_ptr_equal(s[0].v1, &c.x);
    assert_ptr_equal(s[1].v1, &c.y);
    assert_ptr_equal(s[2].v1, &c.z);
    assert_null(s[3].v1);
    assert_null(als_get(a));
    als_pool_free(p);
    gate_destroy(&g);
    als_free(a);
    als_free(b);
    als_free(unused);
}

/* ---- semantics 2: nothing a task binds leaks into the next task -------- */

struct dirty {
    als_t *a, *b, *own;
    struct val *v_top, *v_nested; /* owned values the task binds */
    int t_a, t_b, t_inner;
    int ok;
};

static void *dirty_inner(void *arg)
{
    struct dirty *d = arg;
    /* enter_with inside a run ends with the run... */
    als_enter_with(d->b, &d->t_inner);
    als_enter_with(d->own, d->v_nested);
    return NULL;
}

static int dirty_task(void *arg)
{
    struct dirty *d = arg;
    /* ...and at the task's top level it ends with the task. */
    als_enter_with(d->a, &d->t_a);
    als_enter_with(d->own, d->v_top);
    als_run(d->b, &d->t_b, dirty_inner, d);
    d->ok = als_get(d->a) == &d->t_a && als_get(d->b) == NULL &&
            als_get(d->own) == d->v_top;
    /* An explicit scope opened and left properly inside the task. */
    als_snapshot_t *snap = als_snapshot();
    als_scope_t sc;
    if (snap && als_scope_enter(&sc, snap) == 0) {
        als_enter_with(d->b, &d->t_b);
        als_scope_leave(&sc);
    }
    als_snapshot_release(snap);
    return 0;
}

struct clean_probe {
    struct seen s;
    struct val *v_top, *v_nested;
    int top_destroyed, nested_destroyed;
};

static int clean_task(void *arg)
{
    struct clean_probe *cp = arg;
    seen_record(&cp->s);
    /* The previous task on this (only) worker has ended entirely. */
    cp->top_destroyed = atomic_load(&cp->v_top->destroyed);
    cp->nested_destroyed = atomic_load(&cp->v_nested->destroyed);
    return 0;
}

struct submit_in {
    als_pool_t *pool;
    als_task_fn fn;
    void *arg;
    int rc;
};

static void *submit_here(void *arg)
{
    struct submit_in *si = arg;
    si->rc = als_submit(si->pool, si->fn, si->arg);
    return NULL;
}

static void test_worker_restores_own_context(void **state)
{
    (void)state;
    enum { ROUNDS = 50 };
    als_t *a = als_new(NULL);
    als_t *b = als_new(NULL);
    als_options oo = {.name = "own", .destroy = val_destroy};
    als_t *own = als_new(&oo);
    assert_non_null(own);
    als_pool_t *p = new_pool(1, 8); /* one worker: every task reuses it */
    struct dirty *d = calloc(ROUNDS, sizeof *d);
    struct clean_probe *cp = calloc(ROUNDS, sizeof *cp);
    struct seen *with_x = calloc(ROUNDS, sizeof *with_x);
    struct val *vals = calloc(2 * ROUNDS, sizeof *vals);
    struct submit_in *si = calloc(ROUNDS, sizeof *si);
    int x = 0;
    assert_non_null(d);
    assert_non_null(cp);
    assert_non_null(with_x);
    assert_non_null(vals);
    assert_non_null(si);
    for (int r = 0; r < ROUNDS; r++) {
        val_init(&vals[2 * r]);
        val_init(&vals[2 * r + 1]);
        d[r] = (struct dirty){.a = a, .b = b, .own = own,
                              .v_top = &vals[2 * r], .v_nested = &vals[2 * r + 1]};
        seen_init(&cp[r].s, a, b, own);
        cp[r].v_top = &vals[2 * r];
        cp[r].v_nested = &vals[2 * r + 1];
        cp[r].top_destroyed = cp[r].nested_destroyed = -1;
        seen_init(&with_x[r], a, b, own);

        /* dirty (submitted with nothing bound), then a probe with nothing
         * bound, then one submitted with a = &x. */
        assert_int_equal(als_submit(p, dirty_task, &d[r]), 0);
        assert_int_equal(als_submit(p, clean_task, &cp[r]), 0);
        si[r] = (struct submit_in){p, seen_task, &with_x[r], -1};
        als_run(a, &x, submit_here, &si[r]);
    }
    assert_int_equal(als_pool_drain(p), 0);
    uint64_t *ids = calloc(2 * ROUNDS, sizeof *ids);
    assert_non_null(ids);
    for (int r = 0; r < ROUNDS; r++) {
        assert_int_equal(si[r].rc, 0);
        assert_true(d[r].ok);
        assert_int_equal(atomic_load(&cp[r].s.runs), 1);
        assert_null(cp[r].s.v1);
        assert_null(cp[r].s.v2);
        assert_null(cp[r].s.v3);
        assert_int_equal(cp[r].top_destroyed, 1);
        assert_int_equal(cp[r].nested_destroyed, 1);
        assert_int_equal(atomic_load(&vals[2 * r].on_worker), 1);
        assert_int_equal(atomic_load(&with_x[r].runs), 1);
        assert_ptr_equal(with_x[r].v1, &x);
        assert_null(with_x[r].v2);
        assert_null(with_x[r].v3);
        assert_int_equal(cp[r].s.trig, 1); /* main's top level */
        assert_int_equal(with_x[r].trig, 1);
        ids[2 * r] = cp[r].s.exec;
        ids[2 * r + 1] = with_x[r].exec;
    }
    /* Fresh execution ids across tasks on the same worker. */
    assert_ids_fresh(ids, 2 * ROUNDS);
    als_pool_free(p);
    for (int r = 0; r < 2 * ROUNDS; r++)
        assert_int_equal(atomic_load(&vals[r].destroyed), 1);
    free(ids);
    free(si);
    free(vals);
    free(with_x);
    free(cp);
    free(d);
    als_free(a);
    als_free(b);
    als_free(own);
}

/* ---- semantics 3 and 4: transitive flow, async ids --------------------- */

struct chain {
    als_pool_t *pool;
    als_t *a, *b, *c;
    struct seen s[4];          /* T1, T2, T3, T4 */
    int z, y2, x4;
    int rc[3];
};

static int t4_task(void *arg)
{
    struct chain *ch = arg;
    seen_record(&ch->s[3]);
    return 0;
}

static int t2_task(void *arg)
{
    struct chain *ch = arg;
    seen_record(&ch->s[1]);
    als_enter_with(ch->a, &ch->x4);
    ch->rc[2] = als_submit(ch->pool, t4_task, ch);
    return 0;
}

static int t3_task(void *arg)
{
    struct chain *ch = arg;
    seen_record(&ch->s[2]);
    return 0;
}

static void *t1_inner(void *arg)
{
    struct chain *ch = arg;
    ch->rc[0] = als_submit(ch->pool, t2_task, ch);
    als_enter_with(ch->b, &ch->y2);
    ch->rc[1] = als_submit(ch->pool, t3_task, ch);
    return NULL;
}

static int t1_task(void *arg)
{
    struct chain *ch = arg;
    seen_record(&ch->s[0]);
    als_run(ch->c, &ch->z, t1_inner, ch);
    return 0;
}

struct chain_top {
    struct chain *ch;
    int x, y;
    int rc;
    uint64_t exec;
};

static void *chain_submit(void *arg)
{
    struct chain_top *top = arg;
    als_enter_with(top->ch->b, &top->y);
    top->exec = als_execution_async_id();
    top->rc = als_submit(top->ch->pool, t1_task, top->ch);
    return NULL;
}

static void *chain_in_resource(void *arg)
{
    struct chain_top *top = arg;
    return als_run(top->ch->a, &top->x, chain_submit, top);
}

static void test_transitive_context_and_ids(void **state)
{
    (void)state;
    struct chain ch = {0};
    ch.a = als_new(NULL);
    ch.b = als_new(NULL);
    ch.c = als_new(NULL);
    ch.pool = new_pool(2, 16);
    for (int i = 0; i < 4; i++)
        seen_init(&ch.s[i], ch.a, ch.b, ch.c);
    struct chain_top top = {.ch = &ch, .rc = -1};
    als_resource_t *res = als_resource_new("submitter");
    assert_non_null(res);
    uint64_t rid = als_resource_async_id(res);
    als_resource_run_in_scope(res, chain_in_resource, &top);
    assert_int_equal(als_pool_drain(ch.pool), 0);
    assert_int_equal(top.rc, 0);
    assert_int_equal(top.exec, rid);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ch.rc[i], 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(atomic_load(&ch.s[i].runs), 1);
        assert_ptr_equal(ch.s[i].pool, ch.pool);
    }
    /* T1: what the submitter had. */
    assert_ptr_equal(ch.s[0].v1, &top.x);
    assert_ptr_equal(ch.s[0].v2, &top.y);
    assert_null(ch.s[0].v3);
    assert_int_equal(ch.s[0].trig, rid);
    /* T2: plus what T1 bound with als_run before submitting. */
    assert_ptr_equal(ch.s[1].v1, &top.x);
    assert_ptr_equal(ch.s[1].v2, &top.y);
    assert_ptr_equal(ch.s[1].v3, &ch.z);
    assert_int_equal(ch.s[1].trig, ch.s[0].exec);
    /* T3: plus T1's enter_with inside that run. */
    assert_ptr_equal(ch.s[2].v1, &top.x);
    assert_ptr_equal(ch.s[2].v2, &ch.y2);
    assert_ptr_equal(ch.s[2].v3, &ch.z);
    assert_int_equal(ch.s[2].trig, ch.s[0].exec);
    /* T4: three hops away, with T2's own enter_with. */
    assert_ptr_equal(ch.s[3].v1, &ch.x4);
    assert_ptr_equal(ch.s[3].v2, &top.y);
    assert_ptr_equal(ch.s[3].v3, &ch.z);
    assert_int_equal(ch.s[3].trig, ch.s[1].exec);
    uint64_t ids[5] = {ch.s[0].exec, ch.s[1].exec, ch.s[2].exec, ch.s[3].exec, rid};
    assert_ids_fresh(ids, 5);
    als_resource_free(res);
    als_pool_free(ch.pool);
    als_free(ch.a);
    als_free(ch.b);
    als_free(ch.c);
}

struct idrec {
    uint64_t exec, exec_in_run, trig, trig_in_run;
};

static als_t *id_store;

static void *id_in_run(void *arg)
{
    struct idrec *r = arg;
    r->exec_in_run = als_execution_async_id();
    r->trig_in_run = als_trigger_async_id();
    return NULL;
}

static int id_task(void *arg)
{
    struct idrec *r = arg;
    r->exec = als_execution_async_id();
    r->trig = als_trigger_async_id();
    als_run(id_store, r, id_in_run, r);
    return 0;
}

struct id_batch {
    als_pool_t *pool;
    struct idrec *recs;
    int from, to;
    uint64_t exec;      /* the submitter's execution id */
    int bad_rc;
};

static void *id_submit_batch(void *arg)
{
    struct id_batch *bt = arg;
    bt->exec = als_execution_async_id();
    for (int i = bt->from; i < bt->to; i++)
        if (als_submit(bt->pool, id_task, &bt->recs[i]) != 0)
            bt->bad_rc++;
    return NULL;
}

static void test_async_ids(void **state)
{
    (void)state;
    enum { N = 3000 };
    id_store = als_new(NULL);
    als_pool_t *p = new_pool(2, 64);
    struct idrec *recs = calloc(N, sizeof *recs);
    assert_non_null(recs);
    als_resource_t *before = als_resource_new("before");
    assert_non_null(before);

    /* A third each from: main's top level, a resource scope, and a thread
     * made with als_thread_create (which has an execution id of its own). */
    struct id_batch b0 = {p, recs, 0, N / 3, 0, 0};
    struct id_batch b1 = {p, recs, N / 3, 2 * N / 3, 0, 0};
    struct id_batch b2 = {p, recs, 2 * N / 3, N, 0, 0};
    id_submit_batch(&b0);
    als_resource_t *res = als_resource_new("r");
    assert_non_null(res);
    als_resource_run_in_scope(res, id_submit_batch, &b1);
    pthread_t t;
    assert_int_equal(als_thread_create(&t, NULL, id_submit_batch, &b2), 0);
    pthread_join(t, NULL);
    assert_int_equal(als_pool_drain(p), 0);
    als_resource_t *after = als_resource_new("after");
    assert_non_null(after);

    assert_int_equal(b0.bad_rc + b1.bad_rc + b2.bad_rc, 0);
    assert_int_equal(b0.exec, 1);
    assert_int_equal(b1.exec, als_resource_async_id(res));
    assert_true(b2.exec > 1 && b2.exec != b1.exec);
    uint64_t *ids = calloc(N + 3, sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        uint64_t want = i < N / 3 ? b0.exec : i < 2 * N / 3 ? b1.exec : b2.exec;
        if (recs[i].trig != want)
            fail_msg("task %d: trigger %llu, want %llu", i,
                     (unsigned long long)recs[i].trig, (unsigned long long)want);
        /* A nested run changes no ids. */
        assert_int_equal(recs[i].exec_in_run, recs[i].exec);
        assert_int_equal(recs[i].trig_in_run, recs[i].trig);
        /* Fresh, process-unique, from the same increasing sequence. */
        assert_true(recs[i].exec > als_resource_async_id(before));
        assert_true(recs[i].exec < als_resource_async_id(after));
        ids[i] = recs[i].exec;
    }
    ids[N] = b1.exec;
    ids[N + 1] = b2.exec;
    ids[N + 2] = als_resource_async_id(before);
    assert_ids_fresh(ids, N + 3);
    /* The main thread is still at its top level. */
    assert_int_equal(als_execution_async_id(), 1);
    assert_int_equal(als_trigger_async_id(), 0);
    free(ids);
    als_resource_free(before);
    als_resource_free(res);
    als_resource_free(after);
    als_pool_free(p);
    free(recs);
    als_free(id_store);
}

/* ---- semantics 5 and 11: failures and on_error ------------------------- */

static als_t *err_a, *err_b;
static als_pool_t *err_pool;
static int err_user_token;

struct errtask {
    int result;                /* what the task returns */
    int own;                   /* what it binds itself */
    uint64_t exec;
    /* on_error's view */
    _Atomic int calls;
    int got_result;
    void *got_user;
    void *got_a, *got_b;
    als_pool_t *got_pool;
    pthread_t task_thread, err_thread;
};

static void *err_bind_more(void *arg)
{
    struct errtask *t = arg;
    als_enter_with(err_a, &t->own);
    return NULL;
}

static int err_task(void *arg)
{
    struct errtask *t = arg;
    t->exec = als_execution_async_id();
    t->task_thread = pthread_self();
    als_enter_with(err_a, &t->own);       /* ends with the task */
    als_enter_with(err_b, &t->own);
    als_run(err_b, &t->own, err_bind_more, t);
    return t->result;
}

static void on_error_cb(int result, void *arg, void *user)
{
    struct errtask *t = arg;
    t->got_result = result;
    t->got_user = user;
    t->got_a = als_get(err_a);
    t->got_b = als_get(err_b);
    t->got_pool = als_pool_current();
    t->err_thread = pthread_self();
    atomic_fetch_add(&t->calls, 1);
}

struct err_submit {
    struct errtask *tasks;
    int n;
    int x, y;
    int bad_rc;
};

static void *err_submit_all(void *arg)
{
    struct err_submit *es = arg;
    als_enter_with(err_b, &es->y);
    for (int i = 0; i < es->n; i++)
        if (als_submit(err_pool, err_task, &es->tasks[i]) != 0)
            es->bad_rc++;
    return NULL;
}

static void test_on_error(void **state)
{
    (void)state;
    enum { N = 60 };
    err_a = als_new(NULL);
    err_b = als_new(NULL);
    als_pool_options o = {.threads = 2, .on_error = on_error_cb,
                          .user = &err_user_token};
    err_pool = als_pool_new(&o);
    assert_non_null(err_pool);
    struct errtask *t = calloc(N, sizeof *t);
    assert_non_null(t);
    int nfail = 0;
    for (int i = 0; i < N; i++) {
        t[i].result = i % 3 == 0 ? 0 : i % 3 == 1 ? -(i + 1) : i + 100;
        nfail += t[i].result != 0;
        atomic_init(&t[i].calls, 0);
    }
    struct err_submit es = {.tasks = t, .n = N};
    als_run(err_a, &es.x, err_submit_all, &es);
    assert_int_equal(es.bad_rc, 0);
    assert_int_equal(als_pool_drain(err_pool), 0);
    for (int i = 0; i < N; i++) {
        if (t[i].result == 0) {
            assert_int_equal(atomic_load(&t[i].calls), 0);
            continue;
        }
        assert_int_equal(atomic_load(&t[i].calls), 1);
        assert_int_equal(t[i].got_result, t[i].result);
        assert_ptr_equal(t[i].got_user, &err_user_token);
        /* The submit-time context; what the task bound has ended. */
        assert_ptr_equal(t[i].got_a, &es.x);
        assert_ptr_equal(t[i].got_b, &es.y);
        /* On the worker that ran the task. */
        assert_ptr_equal(t[i].got_pool, err_pool);
        assert_true(pthread_equal(t[i].err_thread, t[i].task_thread));
    }
    als_pool_stats s;
    assert_int_equal(als_pool_stats_get(err_pool, &s), 0);
    assert_int_equal(s.submitted, N);
    assert_int_equal(s.failed, nfail);
    assert_int_equal(s.completed, N - nfail);
    als_pool_free(err_pool);

    /* Without on_error a failure is only counted. */
    als_pool_options plain = {.threads = 1};
    err_pool = als_pool_new(&plain);
    assert_non_null(err_pool);
    for (int i = 0; i < N; i++)
        atomic_store(&t[i].calls, 0);
    es.bad_rc = 0;
    als_run(err_a, &es.x, err_submit_all, &es);
    assert_int_equal(es.bad_rc, 0);
    assert_int_equal(als_pool_drain(err_pool), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(atomic_load(&t[i].calls), 0);
    assert_int_equal(als_pool_stats_get(err_pool, &s), 0);
    assert_int_equal(s.failed, nfail);
    assert_int_equal(s.completed, N - nfail);
    als_pool_free(err_pool);
    free(t);
    als_free(err_a);
    als_free(err_b);
}

/* ---- semantics 1: detached tasks, pinning, destroy on workers ---------- */

struct detach_ctx {
    als_pool_t *pool;
    als_t *own, *a;
    struct seen *det, *att;
    int x;
    int rc_det, rc_att;
};

static void *detach_inner(void *arg)
{
    struct detach_ctx *dc = arg;
    als_task t = {.fn = seen_task, .arg = dc->det, .flags = ALS_TASK_DETACHED};
    dc->rc_det = als_submit_task(dc->pool, &t);
    return NULL;
}

static void *detach_body(void *arg)
{
    struct detach_ctx *dc = arg;
    return als_run(dc->a, &dc->x, detach_inner, dc);
}

static void *attach_body(void *arg)
{
    struct detach_ctx *dc = arg;
    dc->rc_att = als_submit(dc->pool, seen_task, dc->att);
    return NULL;
}

static void test_detached_pins_nothing(void **state)
{
    (void)state;
    main_thread = pthread_self();
    als_options oo = {.name = "owned", .destroy = val_destroy};
    als_t *own = als_new(&oo);
    als_t *a = als_new(NULL);
    assert_non_null(own);
    assert_non_null(a);
    als_pool_t *p = new_pool(1, 8);
    struct gate g;
    gate_init(&g);
    struct seen det, att;
    seen_init(&det, own, a, NULL);
    seen_init(&att, own, a, NULL);
    det.gate = &g;
    att.gate = &g;
    struct val v, w;
    val_init(&v);
    val_init(&w);
    struct detach_ctx dc = {.pool = p, .own = own, .a = a, .det = &det,
                            .att = &att, .rc_det = -1, .rc_att = -1};

    /* A detached task submitted inside the scope of an owned value: the
     * value goes when the scope ends, though the task has not run. (What
     * the test sees while the worker is held is recorded, and checked once
     * the worker is released.) */
    als_run(own, &v, detach_body, &dc);
    int v_gone_at_once = atomic_load(&v.destroyed);
    if (dc.rc_det == 0)
        gate_await_arrivals(&g, 1);  /* it started and waits at the gate */
    int det_ran_early = atomic_load(&det.runs);
    int v_gone = atomic_load(&v.destroyed);
    int v_on_main = atomic_load(&v.on_main);
    int v_on_worker = atomic_load(&v.on_worker);

    /* The same with a capturing task: it pins the value until it is done,
     * and the value is then destroyed on the worker. */
    als_run(own, &w, attach_body, &dc);
    int w_gone_early = atomic_load(&w.destroyed);

    gate_open(&g);
    assert_int_equal(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN), 0);
    assert_int_equal(dc.rc_det, 0);
    assert_int_equal(dc.rc_att, 0);
    assert_int_equal(v_gone_at_once, 1);
    assert_int_equal(det_ran_early, 0);
    assert_int_equal(v_gone, 1);
    assert_int_equal(v_on_main, 1);
    assert_int_equal(v_on_worker, 0);
    assert_int_equal(w_gone_early, 0);
    assert_int_equal(atomic_load(&det.runs), 1);
    assert_null(det.v1);
    assert_null(det.v2);
    assert_true(det.exec > 1);
    assert_ptr_equal(det.pool, p);
    assert_int_equal(atomic_load(&att.runs), 1);
    assert_ptr_equal(att.v1, &w);
    assert_null(att.v2);
    assert_int_equal(atomic_load(&w.destroyed), 1);
    assert_int_equal(atomic_load(&w.on_worker), 1);
    assert_int_equal(atomic_load(&w.on_main), 0);
    assert_int_equal(atomic_load(&v.destroyed), 1);
    uint64_t ids[2] = {det.exec, att.exec};
    assert_ids_fresh(ids, 2);
    als_pool_free(p);
    gate_destroy(&g);
    als_free(own);
    als_free(a);
}

/* ---- semantics 6: a failed capture ------------------------------------ */

struct enomem_ctx {
    als_pool_t *pool;
    _Atomic int ran;
    struct seen s;
    int rc1, rc2, rc3;
};

static int enomem_count(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 0;
}

static void *enomem_body(void *arg)
{
    struct enomem_ctx *e = arg;
    /* The context changed since its last capture (als_run just bound a
     * value), so this capture must allocate; every allocation fails. */
    als__test_fail_alloc(1, true);
    e->rc1 = als_submit(e->pool, enomem_count, (void *)&e->ran);
    als_task t = {.fn = enomem_count, .arg = (void *)&e->ran};
    e->rc2 = als_submit_task(e->pool, &t);
    als__test_fail_alloc(0, false);
    e->rc3 = als_submit(e->pool, seen_task, &e->s);
    return NULL;
}

/* One step of a sweep: the n-th allocation of this submit fails. */
struct sweep_step {
    als_pool_t *pool;
    long n;
    struct seen s;
    int rc;
    long attempts;
};

static void *sweep_body(void *arg)
{
    struct sweep_step *st = arg;
    als__test_fail_alloc(st->n, false);
    st->rc = als_submit(st->pool, seen_task, &st->s);
    st->attempts = als__test_fail_alloc(0, false);
    return NULL;
}

static int reset_injection(void **state)
{
    (void)state;
    if (als__test_fail_alloc)
        als__test_fail_alloc(0, false);
    return 0;
}

static void test_capture_failure(void **state)
{
    (void)state;
    if (!als__test_fail_alloc)
        skip();
    als_t *a = als_new(NULL);
    assert_non_null(a);
    als_pool_t *p = new_pool(1, 8);
    struct enomem_ctx e = {.pool = p, .rc1 = 1, .rc2 = 1, .rc3 = 1};
    atomic_init(&e.ran, 0);
    seen_init(&e.s, a, NULL, NULL);
    int x;
    als_run(a, &x, enomem_body, &e);
    assert_int_equal(e.rc1, ALS_ENOMEM);
    assert_int_equal(e.rc2, ALS_ENOMEM);
    assert_int_equal(e.rc3, 0);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&e.ran), 0);
    assert_int_equal(atomic_load(&e.s.runs), 1);
    assert_ptr_equal(e.s.v1, &x);
    als_pool_stats s;
    assert_int_equal(als_pool_stats_get(p, &s), 0);
    assert_int_equal(s.submitted, 1);
    assert_int_equal(s.completed, 1);
    assert_int_equal(s.rejected, 0);

    /* Fail each allocation of a submit in turn (from a fresh binding each
     * time, so the capture allocates): every failure is ALS_ENOMEM with
     * nothing run or counted, until the submit needs fewer allocations. */
    enum { MAXN = 32 };
    static struct sweep_step steps[MAXN];
    static int xs[MAXN];
    int failures = 0, accepted = 1;
    long n;
    for (n = 1; n < MAXN; n++) {
        struct sweep_step *st = &steps[n];
        st->pool = p;
        st->n = n;
        st->rc = 1;
        seen_init(&st->s, a, NULL, NULL);
        als_run(a, &xs[n], sweep_body, st);
        assert_int_equal(als_pool_drain(p), 0);
        if (st->rc == ALS_ENOMEM) {
            failures++;
            assert_int_equal(atomic_load(&st->s.runs), 0);
        } else {
            assert_int_equal(st->rc, 0);
            accepted++;
            assert_int_equal(atomic_load(&st->s.runs), 1);
            assert_ptr_equal(st->s.v1, &xs[n]);
            if (st->attempts < n)
                break; /* the n-th allocation was never made: done */
        }
        assert_int_equal(als_pool_stats_get(p, &s), 0);
        assert_int_equal(s.submitted, accepted);
        assert_int_equal(s.completed, accepted);
    }
    assert_true(n < MAXN);
    assert_true(failures >= 1); /* at least the capture allocates */
    assert_int_equal(als_pool_stats_get(p, &s), 0);
    assert_int_equal(s.submitted, accepted);
    assert_int_equal(s.completed, accepted);
    assert_int_equal(s.rejected, 0);
    als_pool_free(p);
    als_free(a);
}

/* Semantics 1 (and the design's recycled task records): submitting from a
 * context that was already captured and has not changed since allocates
 * nothing per task. Counted with the allocation hook; the bound (one
 * allocation per 10 tasks) leaves room for batching, and still fails for a
 * capture or a task record allocated per task. */
struct reuse_ctx {
    als_pool_t *pool;
    _Atomic int ran;
    long allocs[3];
    int bad_rc;
};

static void *reuse_body(void *arg)
{
    struct reuse_ctx *rc = arg;
    for (int round = 0; round < 3; round++) {
        als__test_fail_alloc(0, false); /* resets the count */
        for (int i = 0; i < 1000; i++)
            rc->bad_rc += als_submit(rc->pool, enomem_count, (void *)&rc->ran) != 0;
        rc->allocs[round] = als__test_fail_alloc(0, false);
        als_pool_drain(rc->pool);
    }
    return NULL;
}

static void test_capture_reused(void **state)
{
    (void)state;
    if (!als__test_fail_alloc)
        skip();
    als_t *a = als_new(NULL);
    assert_non_null(a);
    for (unsigned threads = 1; threads <= 2; threads++) {
        als_pool_t *p = new_pool(threads, 64);
        struct reuse_ctx rc = {.pool = p};
        atomic_init(&rc.ran, 0);
        int x;
        als_run(a, &x, reuse_body, &rc); /* round 0 warms up */
        assert_int_equal(rc.bad_rc, 0);
        assert_int_equal(atomic_load(&rc.ran), 3000);
        for (int round = 1; round < 3; round++)
            if (rc.allocs[round] >= 100)
                fail_msg("%u thread(s), round %d: %ld allocations for 1000 submits "
                         "from an unchanged context", threads, round, rc.allocs[round]);
        als_pool_free(p);
    }
    als_free(a);
}

/* ---- the cross-talk test ---------------------------------------------- */

enum { XT_THREADS = 4, XT_ITERS = 1500 };

static als_t *xt_a, *xt_b, *xt_c, *xt_d;
static als_pool_t *xt_pool;
static _Atomic int xt_d_destroyed;

/* The destroy-owning store's values: heap blocks, freed on destroy, so a
 * task that read one after its destroy is caught by ASan. */
struct dval {
    int thread, iter;
};

static void dval_destroy(void *p)
{
    atomic_fetch_add(&xt_d_destroyed, 1);
    free(p);
}

struct xt_thread_vals {
    int a, b, b2;
};
static struct xt_thread_vals xt_vals[XT_THREADS];

struct xt_rec {
    /* expected, set by the submitter before submitting */
    void *ea, *eb, *ec;
    struct dval *ed;
    int dthread, diter;
    uint64_t etrig;
    int spawn_child;
    /* observed */
    _Atomic int runs;
    int bad;
    uint64_t exec;
    struct xt_rec *child;
    int child_rc;
};

static struct xt_rec *xt_recs;        /* [XT_THREADS][XT_ITERS] */
static struct xt_rec *xt_children;    /* same shape, some used */
static int xt_cvals[XT_THREADS][XT_ITERS];
static int xt_child_cvals[XT_THREADS][XT_ITERS];
static int xt_submit_errors[XT_THREADS];

static int xt_check(struct xt_rec *r)
{
    int bad = 0;
    if (als_get(xt_a) != r->ea)
        bad |= 1;
    if (als_get(xt_b) != r->eb)
        bad |= 2;
    if (als_get(xt_c) != r->ec)
        bad |= 4;
    struct dval *d = als_get(xt_d);
    if (d != r->ed)
        bad |= 8;
    else if (d && (d->thread != r->dthread || d->iter != r->diter))
        bad |= 8;
    if (als_trigger_async_id() != r->etrig)
        bad |= 16;
    if (als_pool_current() != xt_pool)
        bad |= 32;
    return bad;
}

static int xt_task(void *arg);

static void *xt_spawn_child(void *arg)
{
    struct xt_rec *r = arg;
    r->child_rc = als_submit(xt_pool, xt_task, r->child);
    return NULL;
}

static int xt_task(void *arg)
{
    struct xt_rec *r = arg;
    atomic_fetch_add(&r->runs, 1);
    r->exec = als_execution_async_id();
    int bad = xt_check(r);
    if (r->spawn_child) {
        struct xt_rec *c = r->child;
        /* The child inherits all of this task's context plus one value. */
        c->ea = r->ea;
        c->eb = r->eb;
        c->ed = r->ed;
        c->dthread = r->dthread;
        c->diter = r->diter;
        c->etrig = r->exec;
        als_run(xt_c, c->ec, xt_spawn_child, r);
        if (als_get(xt_c) != r->ec)
            bad |= 64; /* the nested run ended exactly */
    }
    r->bad = bad;
    return 0;
}

struct xt_submit_arg {
    int t, i;
    struct xt_rec *r;
    uint64_t res_id;
};

static void xt_submit(struct xt_rec *r, int t)
{
    if (als_submit(xt_pool, xt_task, r) != 0)
        xt_submit_errors[t]++;
}

static void *xt_with_c(void *arg)
{
    struct xt_submit_arg *sa = arg;
    xt_submit(sa->r, sa->t);
    return NULL;
}

static void *xt_with_d(void *arg)
{
    struct xt_submit_arg *sa = arg;
    /* Nested: an enter_with inside a run inside a run. */
    als_enter_with(xt_b, &xt_vals[sa->t].b2);
    struct dval *d = malloc(sizeof *d);
    if (!d) {
        xt_submit_errors[sa->t]++;
        return NULL;
    }
    d->thread = sa->t;
    d->iter = sa->i;
    sa->r->eb = &xt_vals[sa->t].b2;
    sa->r->ed = d;
    sa->r->dthread = sa->t;
    sa->r->diter = sa->i;
    return als_run(xt_d, d, xt_with_c, sa);
}

static void *xt_in_resource(void *arg)
{
    struct xt_submit_arg *sa = arg;
    sa->r->etrig = sa->res_id;
    return als_run(xt_c, sa->r->ec, xt_with_c, sa);
}

static void *xt_exited(void *arg)
{
    struct xt_submit_arg *sa = arg;
    xt_submit(sa->r, sa->t);
    return NULL;
}

static void *xt_thread_body(void *arg)
{
    int t = (int)(intptr_t)arg;
    als_enter_with(xt_b, &xt_vals[t].b);
    uint64_t my_exec = als_execution_async_id();
    for (int i = 0; i < XT_ITERS; i++) {
        struct xt_rec *r = &xt_recs[t * XT_ITERS + i];
        struct xt_submit_arg sa = {t, i, r, 0};
        r->ea = &xt_vals[t].a;
        r->eb = &xt_vals[t].b;
        r->ec = &xt_cvals[t][i];
        r->ed = NULL;
        r->etrig = my_exec;
        r->child = &xt_children[t * XT_ITERS + i];
        r->spawn_child = i % 5 == 0;
        r->child->ec = &xt_child_cvals[t][i];
        switch (i % 4) {
        case 0:
            als_run(xt_c, r->ec, xt_with_c, &sa);
            break;
        case 1:
            als_run(xt_c, r->ec, xt_with_d, &sa);
            break;
        case 2: {
            als_resource_t *res = als_resource_new("xt");
            if (!res) {
                xt_submit_errors[t]++;
                break;
            }
            sa.res_id = als_resource_async_id(res);
            als_resource_run_in_scope(res, xt_in_resource, &sa);
            als_resource_free(res);
            break;
        }
        default:
            r->ea = NULL;
            r->ec = NULL;
            als_exit(xt_a, xt_exited, &sa);
            break;
        }
    }
    return NULL;
}

static void *xt_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    return als_run(xt_a, &xt_vals[t].a, xt_thread_body, arg);
}

static void test_cross_talk(void **state)
{
    (void)state;
    enum { TOTAL = XT_THREADS * XT_ITERS };
    xt_a = als_new(NULL);
    xt_b = als_new(NULL);
    xt_c = als_new(NULL);
    als_options dop = {.name = "d", .destroy = dval_destroy};
    xt_d = als_new(&dop);
    atomic_store(&xt_d_destroyed, 0);
    xt_recs = calloc(TOTAL, sizeof *xt_recs);
    xt_children = calloc(TOTAL, sizeof *xt_children);
    assert_non_null(xt_recs);
    assert_non_null(xt_children);
    memset(xt_submit_errors, 0, sizeof xt_submit_errors);
    /* A small queue: submitters block on it and tasks that submit into the
     * full pool exercise the inline path. */
    xt_pool = new_pool(2, 16);

    pthread_t th[XT_THREADS];
    for (int t = 0; t < XT_THREADS; t++)
        assert_int_equal(als_thread_create(&th[t], NULL, xt_thread, (void *)(intptr_t)t), 0);
    for (int t = 0; t < XT_THREADS; t++)
        pthread_join(th[t], NULL);
    assert_int_equal(als_pool_drain(xt_pool), 0);

    int children = 0, d_bound = 0;
    uint64_t *ids = calloc(2 * TOTAL, sizeof *ids);
    assert_non_null(ids);
    size_t nids = 0;
    for (int t = 0; t < XT_THREADS; t++)
        assert_int_equal(xt_submit_errors[t], 0);
    for (int k = 0; k < TOTAL; k++) {
        struct xt_rec *r = &xt_recs[k];
        if (atomic_load(&r->runs) != 1 || r->bad)
            fail_msg("task %d (thread %d, iter %d): runs %d, mismatch mask %#x",
                     k, k / XT_ITERS, k % XT_ITERS, atomic_load(&r->runs), r->bad);
        ids[nids++] = r->exec;
        d_bound += r->ed != NULL;
        if (r->spawn_child) {
            children++;
            assert_int_equal(r->child_rc, 0);
            struct xt_rec *c = r->child;
            if (atomic_load(&c->runs) != 1 || c->bad)
                fail_msg("child of task %d: runs %d, mismatch mask %#x", k,
                         atomic_load(&c->runs), c->bad);
            ids[nids++] = c->exec;
        }
    }
    assert_ids_fresh(ids, nids);
    als_pool_stats s;
    assert_int_equal(als_pool_stats_get(xt_pool, &s), 0);
    assert_int_equal(s.submitted, TOTAL + children);
    assert_int_equal(s.completed, TOTAL + children);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.running, 0);
    als_pool_free(xt_pool);
    /* Every owned value bound was destroyed exactly once (the free in
     * dval_destroy makes a second destroy an ASan double free). */
    assert_int_equal(d_bound, XT_THREADS * ((XT_ITERS + 2) / 4));
    assert_int_equal(atomic_load(&xt_d_destroyed), d_bound);
    free(ids);
    free(xt_recs);
    free(xt_children);
    als_free(xt_a);
    als_free(xt_b);
    als_free(xt_c);
    als_free(xt_d);
}

int main(void)
{
    main_thread = pthread_self();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capture_at_submit),
        cmocka_unit_test(test_worker_restores_own_context),
        cmocka_unit_test(test_transitive_context_and_ids),
        cmocka_unit_test(test_async_ids),
        cmocka_unit_test(test_on_error),
        cmocka_unit_test(test_detached_pins_nothing),
        cmocka_unit_test_teardown(test_capture_failure, reset_injection),
        cmocka_unit_test_teardown(test_capture_reused, reset_injection),
        cmocka_unit_test(test_cross_talk),
    };
    /* POOL_TEST_FILTER=test_name (wildcards allowed) runs a subset. */
    if (getenv("POOL_TEST_FILTER"))
        cmocka_set_test_filter(getenv("POOL_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
