/*
 * als_run, als_exit, als_enter_with and als_disable (issue 2, semantics 2,
 * 3, 4, 5 and 14): what each binds, for how long, and that every scope
 * restores the thread's context exactly.
 */
#define _POSIX_C_SOURCE 200809L /* barriers */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <als.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>

static int v1, v2, v3, v4, v5, dflt_a, dflt_b, dflt_c;

static als_t *a, *b, *c;

static int setup(void **state)
{
    (void)state;
    a = als_new(&(als_options){ .name = "a", .default_value = &dflt_a });
    b = als_new(&(als_options){ .name = "b", .default_value = &dflt_b });
    c = als_new(&(als_options){ .name = "c", .default_value = &dflt_c });
    return a && b && c ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    als_free(a);
    als_free(b);
    als_free(c);
    return 0;
}

/* What a, b and c hold at one moment. */
struct view {
    void *a, *b, *c;
};

static struct view look(void)
{
    return (struct view){ als_get(a), als_get(b), als_get(c) };
}

#define assert_view(v, ea, eb, ec)                                             \
    do {                                                                       \
        struct view v_ = (v);                                                  \
        assert_ptr_equal(v_.a, (ea));                                          \
        assert_ptr_equal(v_.b, (eb));                                          \
        assert_ptr_equal(v_.c, (ec));                                          \
    } while (0)

/* ---- 2: run ----------------------------------------------------------- */

static struct view seen_inside;

static void *record(void *arg)
{
    seen_inside = look();
    return arg;
}

static void test_run_binds_for_duration(void **state)
{
    (void)state;
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
    memset(&seen_inside, 0, sizeof seen_inside);
    /* Returns fn's result, and fn got its arg. */
    assert_ptr_equal(als_run(a, &v1, record, &v5), &v5);
    assert_view(seen_inside, &v1, &dflt_b, &dflt_c);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
}

/* Nested runs: records what each level sees before and after its inner run. */
static struct view lv[8];

static void *level3(void *arg)
{
    (void)arg;
    lv[3] = look();
    return NULL;
}

static void *level2(void *arg)
{
    (void)arg;
    lv[2] = look();
    als_run(a, &v3, level3, NULL);   /* shadows a again */
    lv[4] = look();
    return NULL;
}

static void *level1(void *arg)
{
    (void)arg;
    lv[1] = look();
    als_run(b, &v2, level2, NULL);   /* another store: a keeps its value */
    lv[5] = look();
    als_run(a, &v4, level3, NULL);   /* same store: shadows */
    lv[6] = look();
    return NULL;
}

static void test_run_nesting(void **state)
{
    (void)state;
    memset(lv, 0, sizeof lv);
    als_run(a, &v1, level1, NULL);
    assert_view(lv[1], &v1, &dflt_b, &dflt_c);
    assert_view(lv[2], &v1, &v2, &dflt_c);
    /* lv[3] was overwritten by the second level3: the last one. */
    assert_view(lv[3], &v4, &dflt_b, &dflt_c);
    assert_view(lv[4], &v1, &v2, &dflt_c);
    assert_view(lv[5], &v1, &dflt_b, &dflt_c);
    assert_view(lv[6], &v1, &dflt_b, &dflt_c);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
}

/* fn does everything that changes a context, without cleaning up. */
static void *messy_inner(void *arg)
{
    (void)arg;
    als_enter_with(a, &v5);
    als_enter_with(c, &v5);
    return NULL;
}

static void *messy(void *arg)
{
    (void)arg;
    als_enter_with(a, &v2);
    als_enter_with(b, &v3);
    als_enter_with(a, &v4); /* replaces v2 in this scope */
    als_run(c, &v1, messy_inner, NULL);
    als_exit(b, messy_inner, NULL);
    als_snapshot_t *s = als_snapshot();
    als_snapshot_run(s, messy_inner, NULL);
    als_snapshot_release(s);
    als_enter_with(c, &v4);
    return look().a;
}

static void test_run_restores_exactly(void **state)
{
    (void)state;
    /* From a top-level context with nothing bound. */
    assert_ptr_equal(als_run(a, &v1, messy, NULL), &v4);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
    /* Run again: a second pass must see the same clean start. */
    assert_ptr_equal(als_run(a, &v1, messy, NULL), &v4);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
}

/* The same inside outer runs of all three stores. */
static void *restore_in_outer(void *arg)
{
    struct view *out = arg;
    als_run(a, &v1, messy, NULL);
    als_run(b, &v1, messy, NULL);
    als_run(c, &v1, messy, NULL);
    *out = look();
    return NULL;
}

static void *outer_c(void *arg) { return als_run(c, &v3, restore_in_outer, arg); }
static void *outer_b(void *arg) { return als_run(b, &v2, outer_c, arg); }

static void test_run_restores_inside_outer_runs(void **state)
{
    (void)state;
    struct view v = { 0 };
    als_run(a, &v1, outer_b, &v);
    assert_view(v, &v1, &v2, &v3);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
}

/* ---- 14: NULL is a value --------------------------------------------- */

static void *null_inside_v1(void *arg)
{
    struct view *out = arg;
    out[0] = look();
    als_run(a, NULL, record, NULL);
    out[1] = seen_inside;                 /* NULL shadows v1 */
    out[2] = look();
    return NULL;
}

static void *v2_inside_null(void *arg)
{
    struct view *out = arg;
    als_run(a, &v2, record, NULL);
    out[3] = seen_inside;                 /* and is itself shadowed */
    out[4] = look();
    return NULL;
}

static void test_null_is_a_value(void **state)
{
    (void)state;
    memset(&seen_inside, 0xff, sizeof seen_inside);
    assert_ptr_equal(als_run(a, NULL, record, &v1), &v1);
    assert_view(seen_inside, NULL, &dflt_b, &dflt_c);

    struct view out[5];
    memset(out, 0xff, sizeof out);
    als_run(a, &v1, null_inside_v1, out);
    als_run(a, NULL, v2_inside_null, out);
    assert_view(out[0], &v1, &dflt_b, &dflt_c);
    assert_view(out[1], NULL, &dflt_b, &dflt_c);
    assert_view(out[2], &v1, &dflt_b, &dflt_c);
    assert_view(out[3], &v2, &dflt_b, &dflt_c);
    assert_view(out[4], NULL, &dflt_b, &dflt_c);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
}

static void *enter_null(void *arg)
{
    (void)arg;
    assert_int_equal(als_enter_with(a, NULL), 0);
    return als_get(a) == NULL ? &v1 : &v2;
}

static void test_enter_with_null(void **state)
{
    (void)state;
    assert_ptr_equal(als_run(a, &v3, enter_null, NULL), &v1);
    assert_ptr_equal(als_get(a), &dflt_a);
}

/* ---- 3: exit ---------------------------------------------------------- */

static void *exit_body(void *arg)
{
    struct view *out = arg;
    out[0] = look();
    /* A run inside exit binds normally. */
    als_run(a, &v4, record, NULL);
    out[1] = seen_inside;
    out[2] = look();
    return &v5;
}

static void *exit_in_runs(void *arg)
{
    struct view *out = arg;
    void *r = als_exit(a, exit_body, out);
    out[3] = look();
    return r;
}

static void *exit_b(void *arg) { return als_run(b, &v2, exit_in_runs, arg); }

static void test_exit(void **state)
{
    (void)state;
    struct view out[4];
    memset(out, 0, sizeof out);
    assert_ptr_equal(als_run(a, &v1, exit_b, out), &v5);
    assert_view(out[0], &dflt_a, &v2, &dflt_c); /* a unbound, b unaffected */
    assert_view(out[1], &v4, &v2, &dflt_c);
    assert_view(out[2], &dflt_a, &v2, &dflt_c);
    assert_view(out[3], &v1, &v2, &dflt_c);     /* restored */

    /* Exit of a store that is not bound: fn runs, nothing changes. */
    memset(out, 0, sizeof out);
    assert_ptr_equal(als_exit(a, exit_body, out), &v5);
    assert_view(out[0], &dflt_a, &dflt_b, &dflt_c);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
}

/* ---- 4: enter_with ends with the innermost enclosing scope ------------ */

static void *enter_v2(void *arg)
{
    (void)arg;
    assert_int_equal(als_enter_with(a, &v2), 0);
    assert_int_equal(als_enter_with(b, &v3), 0);
    return als_get(a);
}

static void *enter_then_look(void *arg)
{
    struct view *out = arg;
    out[0] = look();
    enter_v2(NULL);                 /* a plain call: same scope */
    out[1] = look();
    als_run(c, &v4, enter_v2, NULL); /* ends with that run */
    out[2] = look();
    als_exit(a, enter_v2, NULL);     /* ends with the exit */
    out[3] = look();
    return NULL;
}

static void test_enter_with_in_run(void **state)
{
    (void)state;
    struct view out[4];
    memset(out, 0, sizeof out);
    als_run(a, &v1, enter_then_look, out);
    assert_view(out[0], &v1, &dflt_b, &dflt_c);
    assert_view(out[1], &v2, &v3, &dflt_c);
    assert_view(out[2], &v2, &v3, &dflt_c);
    assert_view(out[3], &v2, &v3, &dflt_c);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
}

/* enter_with inside each other kind of scope ends with that scope. */
static void *enter_and_report(void *arg)
{
    (void)arg;
    if (als_enter_with(a, &v3) != 0)
        return NULL;
    return als_get(a);
}

static void test_enter_with_in_every_scope_kind(void **state)
{
    (void)state;
    /* Nothing bound outside; each scope's enter_with must vanish with it. */
    als_snapshot_t *s = als_snapshot();
    assert_ptr_equal(als_snapshot_run(s, enter_and_report, NULL), &v3);
    assert_ptr_equal(als_get(a), &dflt_a);

    als_bound_t *bd = als_bind(enter_and_report);
    assert_ptr_equal(als_bound_call(bd, NULL), &v3);
    assert_ptr_equal(als_get(a), &dflt_a);
    als_bound_free(bd);

    als_resource_t *r = als_resource_new("t");
    assert_ptr_equal(als_resource_run_in_scope(r, enter_and_report, NULL), &v3);
    assert_ptr_equal(als_get(a), &dflt_a);
    als_resource_free(r);

    als_scope_t sc;
    assert_int_equal(als_scope_enter(&sc, s), 0);
    assert_ptr_equal(enter_and_report(NULL), &v3);
    assert_int_equal(als_scope_leave(&sc), 0);
    assert_ptr_equal(als_get(a), &dflt_a);
    als_snapshot_release(s);

    pthread_t t;
    void *res = NULL;
    assert_int_equal(als_thread_create(&t, NULL, enter_and_report, NULL), 0);
    assert_int_equal(pthread_join(t, &res), 0);
    assert_ptr_equal(res, &v3);
    assert_ptr_equal(als_get(a), &dflt_a);
}

/* Top level of a thread: enter_with lasts until replaced or thread exit. */
struct top_result {
    struct view after_first, in_run, after_run, after_replace, after_exit_call;
    int rc1, rc2;
};

static void *top_level_thread(void *arg)
{
    struct top_result *r = arg;
    r->rc1 = als_enter_with(a, &v1);
    r->after_first = look();
    als_run(a, &v2, record, NULL);
    r->in_run = seen_inside;
    r->after_run = look();
    r->rc2 = als_enter_with(a, &v3);
    als_enter_with(b, &v4);
    r->after_replace = look();
    als_exit(a, record, NULL);
    r->after_exit_call = seen_inside;
    return NULL;
}

static void test_enter_with_top_level(void **state)
{
    (void)state;
    struct top_result r;
    memset(&r, 0, sizeof r);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, top_level_thread, &r), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(r.rc1, 0);
    assert_int_equal(r.rc2, 0);
    assert_view(r.after_first, &v1, &dflt_b, &dflt_c);
    assert_view(r.in_run, &v2, &dflt_b, &dflt_c);
    assert_view(r.after_run, &v1, &dflt_b, &dflt_c);
    assert_view(r.after_replace, &v3, &v4, &dflt_c);
    assert_view(r.after_exit_call, &dflt_a, &v4, &dflt_c);
    /* Another thread's top-level values never reach this one. */
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
}

/* Top-level values of one thread are invisible to another, concurrently. */
struct pair_sync {
    pthread_barrier_t bar;
    void *seen[2];
};

static struct pair_sync ps;

static void *pair_thread(void *arg)
{
    intptr_t i = (intptr_t)arg;
    als_enter_with(a, i ? (void *)&v2 : (void *)&v1);
    pthread_barrier_wait(&ps.bar); /* both bound */
    ps.seen[i] = als_get(a);
    pthread_barrier_wait(&ps.bar);
    return NULL;
}

static void test_threads_isolated(void **state)
{
    (void)state;
    pthread_t t[2];
    assert_int_equal(pthread_barrier_init(&ps.bar, NULL, 2), 0);
    for (intptr_t i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, pair_thread, (void *)i), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    pthread_barrier_destroy(&ps.bar);
    assert_ptr_equal(ps.seen[0], &v1);
    assert_ptr_equal(ps.seen[1], &v2);
}

/* ---- 5: disable ------------------------------------------------------- */

static void *disable_body(void *arg)
{
    struct view *out = arg;
    als_snapshot_t *before = als_snapshot();
    als_bound_t *bound = als_bind(record);
    als_disable(a);
    out[0] = look();                       /* default in this scope */
    als_snapshot_run(before, record, NULL);
    out[1] = seen_inside;                  /* and in a captured context */
    als_bound_call(bound, NULL);
    out[2] = seen_inside;                  /* and through a bound function */
    als_run(a, &v3, record, NULL);
    out[3] = seen_inside;                  /* a new run binds again */
    out[4] = look();                       /* in its own scope only */
    als_exit(a, record, NULL);
    out[5] = seen_inside;
    out[6] = look();                       /* exit did not re-enable */
    als_enter_with(a, &v4);
    out[7] = look();                       /* enter_with binds again */
    als_snapshot_release(before);
    als_bound_free(bound);
    return NULL;
}

static void *disable_outer(void *arg) { return als_run(a, &v1, disable_body, arg); }

static void test_disable(void **state)
{
    (void)state;
    struct view out[8];
    memset(out, 0, sizeof out);
    als_run(b, &v2, disable_outer, out);
    assert_view(out[0], &dflt_a, &v2, &dflt_c); /* other stores unaffected */
    assert_view(out[1], &dflt_a, &v2, &dflt_c);
    assert_view(out[2], &dflt_a, &v2, &dflt_c);
    assert_view(out[3], &v3, &v2, &dflt_c);
    assert_view(out[4], &dflt_a, &v2, &dflt_c);
    assert_view(out[5], &dflt_a, &v2, &dflt_c);
    assert_view(out[6], &dflt_a, &v2, &dflt_c);
    assert_view(out[7], &v4, &v2, &dflt_c);
    assert_view(look(), &dflt_a, &dflt_b, &dflt_c);
    /* The store still works normally afterwards. */
    assert_ptr_equal(als_run(a, &v5, record, NULL), NULL);
    assert_ptr_equal(seen_inside.a, &v5);
}

/* Disable reaches other threads' current contexts, including values bound
 * at their top level before the call. */
struct disable_sync {
    pthread_barrier_t bar;
    void *before, *after, *rebound;
};

static struct disable_sync ds;

static void *disable_other_thread(void *arg)
{
    als_t *s = arg;
    als_enter_with(s, &v1);
    ds.before = als_get(s);
    pthread_barrier_wait(&ds.bar); /* bound: let main disable */
    pthread_barrier_wait(&ds.bar); /* disabled */
    ds.after = als_get(s);
    als_enter_with(s, &v2);
    ds.rebound = als_get(s);
    return NULL;
}

static void test_disable_other_thread(void **state)
{
    (void)state;
    static int dflt;
    als_t *s = als_new(&(als_options){ .default_value = &dflt });
    pthread_t t;
    assert_int_equal(pthread_barrier_init(&ds.bar, NULL, 2), 0);
    assert_int_equal(pthread_create(&t, NULL, disable_other_thread, s), 0);
    pthread_barrier_wait(&ds.bar);
    als_disable(s);
    pthread_barrier_wait(&ds.bar);
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_barrier_destroy(&ds.bar);
    assert_ptr_equal(ds.before, &v1);
    assert_ptr_equal(ds.after, &dflt);
    assert_ptr_equal(ds.rebound, &v2);
    als_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_binds_for_duration),
        cmocka_unit_test(test_run_nesting),
        cmocka_unit_test(test_run_restores_exactly),
        cmocka_unit_test(test_run_restores_inside_outer_runs),
        cmocka_unit_test(test_null_is_a_value),
        cmocka_unit_test(test_enter_with_null),
        cmocka_unit_test(test_exit),
        cmocka_unit_test(test_enter_with_in_run),
        cmocka_unit_test(test_enter_with_in_every_scope_kind),
        cmocka_unit_test(test_enter_with_top_level),
        cmocka_unit_test(test_threads_isolated),
        cmocka_unit_test(test_disable),
        cmocka_unit_test(test_disable_other_thread),
    };
    return cmocka_run_group_tests_name("run", tests, setup, teardown);
}
