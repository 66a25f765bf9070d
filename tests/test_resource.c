/*
 * Async resources and async ids (issue 2, semantics 8 and 16): fresh,
 * process-unique, increasing ids greater than 1; trigger ids that name the
 * creator's execution scope; scopes that set them and scopes that leave
 * them alone. als_resource_enter/als_scope_leave, the explicit-scope form
 * for event loops (issue 13).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <als.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int v1, v2, dflt;
static als_t *a;

static int setup(void **state)
{
    (void)state;
    a = als_new(&(als_options){ .default_value = &dflt });
    return a ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    als_free(a);
    return 0;
}

/* What a scope sees: the execution and trigger ids and a's value. */
struct ids {
    uint64_t exec, trigger;
    void *value;
};

static struct ids here(void)
{
    return (struct ids){ als_execution_async_id(), als_trigger_async_id(),
                         als_get(a) };
}

#define assert_ids(x, e, t, v)                                                 \
    do {                                                                       \
        struct ids x_ = (x);                                                   \
        assert_int_equal(x_.exec, (e));                                        \
        assert_int_equal(x_.trigger, (t));                                     \
        assert_ptr_equal(x_.value, (v));                                       \
    } while (0)

static void *record(void *arg)
{
    *(struct ids *)arg = here();
    return &v2;
}

static void *new_resource(void *arg)
{
    return als_resource_new(arg);
}

/* ---- top level --------------------------------------------------------- */

static void *top_ids(void *arg)
{
    *(struct ids *)arg = here();
    return NULL;
}

static void test_top_level_ids(void **state)
{
    (void)state;
    assert_ids(here(), 1, 0, &dflt);
    struct ids seen = { 0 };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, top_ids, &seen), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_ids(seen, 1, 0, &dflt);
}

/* ---- creation ----------------------------------------------------------- */

static void test_fresh_increasing_ids(void **state)
{
    (void)state;
    als_resource_t *r[5];
    for (int i = 0; i < 5; i++) {
        r[i] = als_resource_new("req");
        assert_non_null(r[i]);
        assert_true(als_resource_async_id(r[i]) > 1);
        assert_int_equal(als_resource_trigger_async_id(r[i]), 1);
        if (i)
            assert_true(als_resource_async_id(r[i]) > als_resource_async_id(r[i - 1]));
    }
    uint64_t last = als_resource_async_id(r[4]);
    for (int i = 0; i < 5; i++)
        als_resource_free(r[i]);
    /* Ids are never reused after a free. */
    als_resource_t *later = als_resource_new(NULL);
    assert_true(als_resource_async_id(later) > last);
    als_resource_free(later);
}

static void test_type_is_copied(void **state)
{
    (void)state;
    char buf[16];
    strcpy(buf, "HTTPREQUEST");
    als_resource_t *r = als_resource_new(buf);
    strcpy(buf, "changed");
    assert_string_equal(als_resource_type(r), "HTTPREQUEST");
    als_resource_free(r);
    r = als_resource_new(NULL);
    assert_string_equal(als_resource_type(r), "");
    als_resource_free(r);
}

/* Ids stay unique when threads create resources concurrently. */
#define PER_THREAD 2000
#define NTHREADS 4

static void *make_many(void *arg)
{
    uint64_t *ids = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        als_resource_t *r = als_resource_new("x");
        ids[i] = r ? als_resource_async_id(r) : 0;
        als_resource_free(r);
    }
    return NULL;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t p = *(const uint64_t *)x, q = *(const uint64_t *)y;
    return p < q ? -1 : p > q;
}

static void test_ids_unique_across_threads(void **state)
{
    (void)state;
    uint64_t *ids = calloc(NTHREADS * PER_THREAD, sizeof *ids);
    assert_non_null(ids);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, make_many, ids + i * PER_THREAD), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    /* Increasing within each thread ... */
    for (int i = 0; i < NTHREADS; i++)
        for (int k = 1; k < PER_THREAD; k++)
            assert_true(ids[i * PER_THREAD + k] > ids[i * PER_THREAD + k - 1]);
    /* ... and distinct across all of them. */
    qsort(ids, NTHREADS * PER_THREAD, sizeof *ids, cmp_u64);
    assert_true(ids[0] > 1);
    for (int k = 1; k < NTHREADS * PER_THREAD; k++)
        assert_true(ids[k] > ids[k - 1]);
    free(ids);
}

/* ---- run_in_scope -------------------------------------------------------- */

static void test_run_in_scope(void **state)
{
    (void)state;
    als_resource_t *r = als_run(a, &v1, new_resource, "req");
    assert_non_null(r);
    uint64_t id = als_resource_async_id(r);
    struct ids in = { 0 };
    assert_ptr_equal(als_resource_run_in_scope(r, record, &in), &v2);
    assert_ids(in, id, 1, &v1);
    assert_ids(here(), 1, 0, &dflt);
    als_resource_free(r);
}

struct scope_on_thread {
    als_resource_t *r;
    struct ids in, after;
};

static void *run_scope_on_thread(void *arg)
{
    struct scope_on_thread *st = arg;
    als_enter_with(a, &v2);
    als_resource_run_in_scope(st->r, record, &st->in);
    st->after = here();
    return NULL;
}

static void test_run_in_scope_other_thread(void **state)
{
    (void)state;
    struct scope_on_thread st;
    memset(&st, 0, sizeof st);
    st.r = als_run(a, &v1, new_resource, "req");
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_scope_on_thread, &st), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_ids(st.in, als_resource_async_id(st.r), 1, &v1);
    assert_ids(st.after, 1, 0, &v2);
    als_resource_free(st.r);
}

/* A resource created inside another's scope is triggered by it. */
struct nested {
    als_resource_t *inner;
    struct ids in_inner, back_in_outer;
};

static void *create_nested(void *arg)
{
    struct nested *n = arg;
    n->inner = als_resource_new("inner");
    als_resource_run_in_scope(n->inner, record, &n->in_inner);
    n->back_in_outer = here();
    return NULL;
}

static void test_nested_resources(void **state)
{
    (void)state;
    als_resource_t *outer = als_resource_new("outer");
    uint64_t oid = als_resource_async_id(outer);
    struct nested n;
    memset(&n, 0, sizeof n);
    als_resource_run_in_scope(outer, create_nested, &n);
    assert_non_null(n.inner);
    uint64_t iid = als_resource_async_id(n.inner);
    assert_true(iid > oid);
    assert_int_equal(als_resource_trigger_async_id(n.inner), oid);
    assert_ids(n.in_inner, iid, oid, &dflt);
    assert_ids(n.back_in_outer, oid, 1, &dflt);
    assert_ids(here(), 1, 0, &dflt);
    als_resource_free(n.inner);
    als_resource_free(outer);
}

/* ---- als_resource_enter: the explicit scope ------------------------------- */

static void test_resource_enter_arguments(void **state)
{
    (void)state;
    als_resource_t *r = als_resource_new("r");
    assert_non_null(r);
    als_scope_t sc;
    assert_int_equal(als_resource_enter(NULL, r), ALS_EINVAL);
    assert_int_equal(als_resource_enter(&sc, NULL), ALS_EINVAL);
    assert_int_equal(als_scope_leave(NULL), ALS_EINVAL);
    assert_ids(here(), 1, 0, &dflt); /* nothing was entered */
    als_resource_free(r);
}

/* Enter: the resource's context and ids, also after the resource is freed
 * (the scope holds the context); leave: exactly what was current before;
 * leaving again is refused. */
static void *enter_leave_in_run(void *arg)
{
    als_resource_t *r = arg;
    uint64_t id = als_resource_async_id(r);
    als_scope_t sc;
    assert_int_equal(als_resource_enter(&sc, r), 0);
    assert_ids(here(), id, 1, &v1);
    als_resource_free(r);
    assert_ids(here(), id, 1, &v1);
    /* What is created inside is triggered by the resource. */
    als_resource_t *inner = als_resource_new("inner");
    assert_int_equal(als_resource_trigger_async_id(inner), id);
    als_resource_free(inner);
    assert_int_equal(als_scope_leave(&sc), 0);
    assert_ids(here(), 1, 0, &v2);
    assert_int_equal(als_scope_leave(&sc), ALS_EINVAL);
    assert_ids(here(), 1, 0, &v2);
    return NULL;
}

static void test_resource_enter_leave(void **state)
{
    (void)state;
    als_resource_t *r = als_run(a, &v1, new_resource, "req");
    assert_non_null(r);
    /* Inside a run of its own value, to come back to; r is freed inside. */
    als_run(a, &v2, enter_leave_in_run, r);
    assert_ids(here(), 1, 0, &dflt);
}

/* Last-in-first-out: leaving the outer scope first is refused and changes
 * nothing. */
static void test_resource_enter_lifo(void **state)
{
    (void)state;
    als_resource_t *r1 = als_run(a, &v1, new_resource, "1");
    als_resource_t *r2 = als_run(a, &v2, new_resource, "2");
    uint64_t id1 = als_resource_async_id(r1), id2 = als_resource_async_id(r2);
    als_scope_t s1, s2;
    assert_int_equal(als_resource_enter(&s1, r1), 0);
    assert_int_equal(als_resource_enter(&s2, r2), 0);
    assert_ids(here(), id2, 1, &v2);
    assert_int_equal(als_scope_leave(&s1), ALS_EINVAL);
    assert_ids(here(), id2, 1, &v2);
    assert_int_equal(als_scope_leave(&s2), 0);
    assert_ids(here(), id1, 1, &v1);
    assert_int_equal(als_scope_leave(&s1), 0);
    assert_ids(here(), 1, 0, &dflt);
    als_resource_free(r1);
    als_resource_free(r2);
}

static void *leave_elsewhere(void *arg)
{
    return (void *)(intptr_t)als_scope_leave(arg);
}

/* A scope belongs to the thread that entered it: another thread's leave is
 * refused (and changes nothing there or here). */
static void test_resource_leave_on_other_thread(void **state)
{
    (void)state;
    als_resource_t *r = als_run(a, &v1, new_resource, "r");
    uint64_t id = als_resource_async_id(r);
    als_scope_t sc;
    assert_int_equal(als_resource_enter(&sc, r), 0);
    pthread_t t;
    void *rc = NULL;
    assert_int_equal(pthread_create(&t, NULL, leave_elsewhere, &sc), 0);
    assert_int_equal(pthread_join(t, &rc), 0);
    assert_int_equal((int)(intptr_t)rc, ALS_EINVAL);
    assert_ids(here(), id, 1, &v1);
    assert_int_equal(als_scope_leave(&sc), 0);
    assert_ids(here(), 1, 0, &dflt);
    als_resource_free(r);
}

/* ---- 16: scopes that leave the ids alone --------------------------------- */

struct alone {
    als_snapshot_t *top_snap;
    als_bound_t *top_bound;
    struct ids run, exit, snap, bound, scope, enter;
};

static void *scopes_inside(void *arg)
{
    struct alone *al = arg;
    als_run(a, &v2, record, &al->run);
    als_exit(a, record, &al->exit);
    als_snapshot_run(al->top_snap, record, &al->snap);
    als_bound_call(al->top_bound, &al->bound);
    als_scope_t sc;
    als_scope_enter(&sc, al->top_snap);
    al->scope = here();
    als_scope_leave(&sc);
    als_enter_with(a, &v2);
    al->enter = here();
    return NULL;
}

static void test_other_scopes_keep_ids(void **state)
{
    (void)state;
    struct alone al;
    memset(&al, 0, sizeof al);
    /* Captured at the top level (execution id 1). */
    al.top_snap = als_snapshot();
    al.top_bound = als_bind(record);
    als_resource_t *r = als_resource_new("r");
    uint64_t id = als_resource_async_id(r);
    als_resource_run_in_scope(r, scopes_inside, &al);
    assert_ids(al.run, id, 1, &v2);
    assert_ids(al.exit, id, 1, &dflt);
    assert_ids(al.snap, id, 1, &dflt);
    assert_ids(al.bound, id, 1, &dflt);
    assert_ids(al.scope, id, 1, &dflt);
    assert_ids(al.enter, id, 1, &v2);
    assert_ids(here(), 1, 0, &dflt);
    als_snapshot_release(al.top_snap);
    als_bound_free(al.top_bound);
    als_resource_free(r);
}

/* A snapshot or plain bound function captured inside a resource scope
 * carries the context, not the ids. */
static void *capture_in_scope(void *arg)
{
    void **out = arg;
    out[0] = als_snapshot();
    out[1] = als_bind(record);
    return NULL;
}

static void test_capture_carries_no_ids(void **state)
{
    (void)state;
    als_resource_t *r = als_run(a, &v1, new_resource, "r");
    void *out[2] = { NULL, NULL };
    als_resource_run_in_scope(r, capture_in_scope, out);
    struct ids in = { 0 };
    als_snapshot_run(out[0], record, &in);
    assert_ids(in, 1, 0, &v1);
    memset(&in, 0, sizeof in);
    als_bound_call(out[1], &in);
    assert_ids(in, 1, 0, &v1);
    als_snapshot_release(out[0]);
    als_bound_free(out[1]);
    als_resource_free(r);
}

/* ---- resource_bind -------------------------------------------------------- */

static void *call_bound_on_thread(void *arg)
{
    void **p = arg;
    void *r = als_bound_call(p[0], p[1]);
    *(struct ids *)p[2] = here();
    return r;
}

static void test_resource_bind(void **state)
{
    (void)state;
    als_resource_t *r = als_run(a, &v1, new_resource, "r");
    uint64_t id = als_resource_async_id(r);
    als_bound_t *bd = als_resource_bind(r, record);
    assert_non_null(bd);
    /* Independent of the resource afterwards. */
    als_resource_free(r);
    struct ids in = { 0 };
    assert_ptr_equal(als_bound_call(bd, &in), &v2);
    assert_ids(in, id, 1, &v1);
    assert_ids(here(), 1, 0, &dflt);

    struct ids tin = { 0 }, tafter = { 0 };
    void *p[3] = { bd, &tin, &tafter };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, call_bound_on_thread, p), 0);
    void *res = NULL;
    assert_int_equal(pthread_join(t, &res), 0);
    assert_ptr_equal(res, &v2);
    assert_ids(tin, id, 1, &v1);
    assert_ids(tafter, 1, 0, &dflt);
    als_bound_free(bd);
}

/* ---- resources made inside pool tasks ------------------------------------ */

/* A pool task's execution id is drawn when first needed; a resource made in
 * the task must still be triggered by an id drawn before its own. */
struct task_res {
    uint64_t task_id, res_id, res_trigger;
};

static int task_make_resource(void *arg)
{
    struct task_res *tr = arg;
    als_resource_t *r = als_resource_new("in-task");
    tr->res_id = als_resource_async_id(r);
    tr->res_trigger = als_resource_trigger_async_id(r);
    tr->task_id = als_execution_async_id();
    als_resource_free(r);
    return 0;
}

static void test_resource_in_pool_task(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 1 });
    assert_non_null(pool);
    struct task_res tr = { 0, 0, 0 };
    assert_int_equal(als_submit(pool, task_make_resource, &tr), 0);
    assert_int_equal(als_pool_drain(pool), 0);
    als_pool_free(pool);
    assert_true(tr.task_id > 1);
    assert_int_equal(tr.res_trigger, tr.task_id);
    /* Causal order: what triggered the resource was numbered first. */
    assert_true(tr.res_id > tr.task_id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_level_ids),
        cmocka_unit_test(test_fresh_increasing_ids),
        cmocka_unit_test(test_type_is_copied),
        cmocka_unit_test(test_ids_unique_across_threads),
        cmocka_unit_test(test_run_in_scope),
        cmocka_unit_test(test_run_in_scope_other_thread),
        cmocka_unit_test(test_nested_resources),
        cmocka_unit_test(test_resource_enter_arguments),
        cmocka_unit_test(test_resource_enter_leave),
        cmocka_unit_test(test_resource_enter_lifo),
        cmocka_unit_test(test_resource_leave_on_other_thread),
        cmocka_unit_test(test_other_scopes_keep_ids),
        cmocka_unit_test(test_capture_carries_no_ids),
        cmocka_unit_test(test_resource_bind),
        cmocka_unit_test(test_resource_in_pool_task),
    };
    return cmocka_run_group_tests_name("resource", tests, setup, teardown);
}
