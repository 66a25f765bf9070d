/*
 * Snapshots, bound functions and explicit scopes (issue 2, semantics 6, 7
 * and 13): a capture is the whole context, never changes afterwards, can be
 * entered on any thread, is shared by reference counting; scopes are
 * last-in-first-out and a violation changes nothing.
 */
#define _POSIX_C_SOURCE 200809L /* barriers, dup */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <als.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int v1, v2, v3, v4, dflt_a, dflt_b;
static als_t *a, *b;

static int setup(void **state)
{
    (void)state;
    a = als_new(&(als_options){ .name = "a", .default_value = &dflt_a });
    b = als_new(&(als_options){ .name = "b", .default_value = &dflt_b });
    return a && b ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    als_free(a);
    als_free(b);
    return 0;
}

struct view {
    void *a, *b;
};

static struct view look(void)
{
    return (struct view){ als_get(a), als_get(b) };
}

#define assert_view(v, ea, eb)                                                 \
    do {                                                                       \
        struct view v_ = (v);                                                  \
        assert_ptr_equal(v_.a, (ea));                                          \
        assert_ptr_equal(v_.b, (eb));                                          \
    } while (0)

/* fn for snapshot_run and friends: stores what it sees into *arg. */
static void *record(void *arg)
{
    *(struct view *)arg = look();
    return &v4;
}

static void *capture(void *arg)
{
    (void)arg;
    return als_snapshot();
}

/* Captures inside run(a, v1) { run(b, v2) { ... } }. */
static void *capture_b(void *arg) { return als_run(b, &v2, capture, arg); }
static als_snapshot_t *capture_v1_v2(void)
{
    return als_run(a, &v1, capture_b, NULL);
}

/* ---- 6: capture and run ----------------------------------------------- */

static void test_snapshot_run_same_thread(void **state)
{
    (void)state;
    als_snapshot_t *s = capture_v1_v2();
    assert_non_null(s);
    assert_view(look(), &dflt_a, &dflt_b);
    struct view in = { 0 };
    assert_ptr_equal(als_snapshot_run(s, record, &in), &v4);
    assert_view(in, &v1, &v2);
    assert_view(look(), &dflt_a, &dflt_b);
    als_snapshot_release(s);
}

/* The snapshot replaces the whole context: stores bound by the caller but
 * unbound in the snapshot are unbound inside. */
struct replace {
    als_snapshot_t *empty;
    struct view in, after;
};

static void *run_empty_inside(void *arg)
{
    struct replace *r = arg;
    als_snapshot_run(r->empty, record, &r->in);
    r->after = look();
    return NULL;
}

static void *run_empty_b(void *arg) { return als_run(b, &v2, run_empty_inside, arg); }

static void test_snapshot_replaces_whole_context(void **state)
{
    (void)state;
    struct replace r;
    memset(&r, 0, sizeof r);
    r.empty = als_snapshot(); /* nothing bound here */
    assert_non_null(r.empty);
    als_run(a, &v1, run_empty_b, &r);
    assert_view(r.in, &dflt_a, &dflt_b);
    assert_view(r.after, &v1, &v2);
    als_snapshot_release(r.empty);
}

/* A snapshot never changes: neither through later changes on the capturing
 * thread nor through changes made while running inside it. */
static void *change_after_capture(void *arg)
{
    als_snapshot_t **out = arg;
    out[0] = als_snapshot();
    als_enter_with(a, &v3);               /* same scope, after capture */
    out[1] = als_snapshot();
    return NULL;
}

static void *change_inside(void *arg)
{
    (void)arg;
    als_enter_with(a, &v3);
    als_enter_with(b, &v3);
    return NULL;
}

static void test_snapshot_immutable(void **state)
{
    (void)state;
    als_snapshot_t *snaps[2] = { NULL, NULL };
    als_run(a, &v1, change_after_capture, snaps);
    assert_non_null(snaps[0]);
    assert_non_null(snaps[1]);
    assert_ptr_not_equal(snaps[0], snaps[1]);
    struct view in = { 0 };
    als_snapshot_run(snaps[0], record, &in);
    assert_view(in, &v1, &dflt_b);
    als_snapshot_run(snaps[1], record, &in);
    assert_view(in, &v3, &dflt_b);

    /* Changes made inside a snapshot_run stay in that run. */
    als_snapshot_run(snaps[0], change_inside, NULL);
    als_snapshot_run(snaps[0], record, &in);
    assert_view(in, &v1, &dflt_b);
    als_snapshot_release(snaps[0]);
    als_snapshot_release(snaps[1]);
}

/* Capturing twice with no change in between gives the same snapshot. */
static void *capture_twice(void *arg)
{
    als_snapshot_t **out = arg;
    out[0] = als_snapshot();
    out[1] = als_snapshot();
    return NULL;
}

static void *capture_inside_snapshot(void *arg)
{
    return als_snapshot_run(arg, capture, NULL);
}

static void test_repeated_capture_same_pointer(void **state)
{
    (void)state;
    als_snapshot_t *s[2] = { NULL, NULL };
    als_run(a, &v1, capture_twice, s);
    assert_non_null(s[0]);
    assert_ptr_equal(s[0], s[1]);
    /* Inside a snapshot with nothing changed, the capture is the snapshot. */
    als_snapshot_t *inner = capture_inside_snapshot(s[0]);
    assert_ptr_equal(inner, s[0]);
    als_snapshot_release(inner);
    als_snapshot_release(s[0]);
    als_snapshot_release(s[1]);
}

/* Retain returns its argument; the snapshot lives until the last release. */
static void test_retain_release(void **state)
{
    (void)state;
    als_snapshot_t *s = capture_v1_v2();
    assert_ptr_equal(als_snapshot_retain(s), s);
    assert_ptr_equal(als_snapshot_retain(s), s);
    als_snapshot_release(s);
    als_snapshot_release(s);
    struct view in = { 0 };
    als_snapshot_run(s, record, &in); /* one reference left */
    assert_view(in, &v1, &v2);
    als_snapshot_release(s);
}

struct nest {
    als_snapshot_t *inner;
    struct view out[3];
};

static void *nest_body(void *arg)
{
    struct nest *n = arg;
    n->out[0] = look();
    als_snapshot_run(n->inner, record, &n->out[1]);
    n->out[2] = look();
    return NULL;
}

static void test_nested_snapshot_runs(void **state)
{
    (void)state;
    als_snapshot_t *outer = capture_v1_v2();
    struct nest n;
    memset(&n, 0, sizeof n);
    n.inner = als_run(b, &v3, capture, NULL);
    als_snapshot_run(outer, nest_body, &n);
    assert_view(n.out[0], &v1, &v2);
    assert_view(n.out[1], &dflt_a, &v3);
    assert_view(n.out[2], &v1, &v2);
    assert_view(look(), &dflt_a, &dflt_b);
    als_snapshot_release(outer);
    als_snapshot_release(n.inner);
}

/* ---- 6: other threads -------------------------------------------------- */

#define NTHREADS 4

struct share {
    als_snapshot_t *snap;
    struct view in, after;
    void *ret;
};

/* A plain pthread with its own top-level value enters the snapshot, then
 * gets its own context back, and releases its reference. */
static void *enter_on_thread(void *arg)
{
    struct share *sh = arg;
    als_enter_with(a, &v3);
    sh->ret = als_snapshot_run(sh->snap, record, &sh->in);
    sh->after = look();
    als_snapshot_release(sh->snap);
    return NULL;
}

static void test_snapshot_on_other_threads(void **state)
{
    (void)state;
    als_snapshot_t *s = capture_v1_v2();
    struct share sh[NTHREADS];
    pthread_t t[NTHREADS];
    memset(sh, 0, sizeof sh);
    for (int i = 0; i < NTHREADS; i++) {
        sh[i].snap = als_snapshot_retain(s);
        assert_int_equal(pthread_create(&t[i], NULL, enter_on_thread, &sh[i]), 0);
    }
    /* Drop ours while the threads may still be using theirs. */
    als_snapshot_release(s);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < NTHREADS; i++) {
        assert_ptr_equal(sh[i].ret, &v4);
        assert_view(sh[i].in, &v1, &v2);
        assert_view(sh[i].after, &v3, &dflt_b);
    }
}

/* The capturing thread keeps changing its context while another thread
 * runs inside the snapshot: the other thread sees the captured values. */
struct race {
    pthread_barrier_t bar;
    als_snapshot_t *snap;
    struct view in[2];
};

static void *race_reader(void *arg)
{
    struct race *r = arg;
    als_snapshot_run(r->snap, record, &r->in[0]);
    pthread_barrier_wait(&r->bar); /* the creator changed its context */
    als_snapshot_run(r->snap, record, &r->in[1]);
    return NULL;
}

static void *race_writer(void *arg)
{
    struct race *r = arg;
    r->snap = als_snapshot();
    pthread_t t;
    if (pthread_create(&t, NULL, race_reader, r) != 0)
        return NULL;
    als_enter_with(a, &v2);
    als_snapshot_release(als_run(b, &v3, capture, NULL)); /* another capture */
    pthread_barrier_wait(&r->bar);
    pthread_join(t, NULL);
    return r;
}

static void test_snapshot_unaffected_by_capturer(void **state)
{
    (void)state;
    struct race r;
    memset(&r, 0, sizeof r);
    assert_int_equal(pthread_barrier_init(&r.bar, NULL, 2), 0);
    assert_ptr_equal(als_run(a, &v1, race_writer, &r), &r);
    pthread_barrier_destroy(&r.bar);
    assert_view(r.in[0], &v1, &dflt_b);
    assert_view(r.in[1], &v1, &dflt_b);
    als_snapshot_release(r.snap);
}

/* ---- 7: bind ----------------------------------------------------------- */

static void *bound_fn(void *arg)
{
    struct view *out = arg;
    *out = look();
    return &v3;
}

static void *bind_here(void *arg)
{
    (void)arg;
    return als_bind(bound_fn);
}

static void *bind_b(void *arg) { return als_run(b, &v2, bind_here, arg); }

static void *call_on_thread(void *arg)
{
    void **p = arg;
    als_enter_with(b, &v4);
    void *r = als_bound_call(p[0], p[1]);
    *(struct view *)p[2] = look();
    return r;
}

static void *call_in_run(void *arg)
{
    void **p = arg;
    void *r = als_bound_call(p[0], p[1]);
    *(struct view *)p[2] = look();
    return r;
}

static void test_bind(void **state)
{
    (void)state;
    als_bound_t *bd = als_run(a, &v1, bind_b, NULL);
    assert_non_null(bd);
    struct view in = { 0 };
    /* Called later, outside: the captured context, and fn's result. */
    assert_ptr_equal(als_bound_call(bd, &in), &v3);
    assert_view(in, &v1, &v2);
    assert_view(look(), &dflt_a, &dflt_b);
    /* Called again, inside another run: still the captured context, and
     * the run's context afterwards. */
    struct view after = { 0 };
    void *args[3] = { bd, &in, &after };
    memset(&in, 0, sizeof in);
    assert_ptr_equal(als_run(a, &v4, call_in_run, args), &v3);
    assert_view(in, &v1, &v2);
    assert_view(after, &v4, &dflt_b);

    /* Called from other threads, concurrently. */
    struct view ins[NTHREADS], afters[NTHREADS];
    void *targs[NTHREADS][3];
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        targs[i][0] = bd;
        targs[i][1] = &ins[i];
        targs[i][2] = &afters[i];
        assert_int_equal(pthread_create(&t[i], NULL, call_on_thread, targs[i]), 0);
    }
    void *res[NTHREADS];
    int joined = 0;
    for (int i = 0; i < NTHREADS; i++)
        joined += pthread_join(t[i], &res[i]) == 0;
    assert_int_equal(joined, NTHREADS);
    for (int i = 0; i < NTHREADS; i++) {
        assert_ptr_equal(res[i], &v3);
        assert_view(ins[i], &v1, &v2);
        assert_view(afters[i], &dflt_a, &v4);
    }
    als_bound_free(bd);
}

/* ---- 13: explicit scopes ------------------------------------------------ */

static void test_scope_enter_leave(void **state)
{
    (void)state;
    als_snapshot_t *s = capture_v1_v2();
    als_scope_t sc;
    assert_int_equal(als_scope_enter(&sc, s), 0);
    /* The scope holds its own reference. */
    als_snapshot_release(s);
    assert_view(look(), &v1, &v2);
    /* Changes inside the scope end with it. */
    assert_int_equal(als_enter_with(a, &v3), 0);
    assert_view(look(), &v3, &v2);
    assert_int_equal(als_scope_leave(&sc), 0);
    assert_view(look(), &dflt_a, &dflt_b);
}

static void test_scope_nesting(void **state)
{
    (void)state;
    als_snapshot_t *s1 = capture_v1_v2();
    als_snapshot_t *s2 = als_run(a, &v3, capture, NULL);
    als_scope_t outer, inner;
    assert_int_equal(als_scope_enter(&outer, s1), 0);
    assert_int_equal(als_scope_enter(&inner, s2), 0);
    assert_view(look(), &v3, &dflt_b);
    assert_int_equal(als_scope_leave(&inner), 0);
    assert_view(look(), &v1, &v2);
    assert_int_equal(als_scope_leave(&outer), 0);
    assert_view(look(), &dflt_a, &dflt_b);
    als_snapshot_release(s1);
    als_snapshot_release(s2);
}

/* Runs fn with stderr redirected; returns what was written there. */
static char captured_err[512];

static void *with_stderr_captured(void *(*fn)(void *), void *arg)
{
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    if (saved < 0 || !tmp)
        return fn(arg);
    dup2(fileno(tmp), 2);
    void *r = fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(captured_err, 1, sizeof captured_err - 1, tmp);
    captured_err[n] = '\0';
    fclose(tmp);
    return r;
}

static void *leave_scope(void *arg)
{
    return (void *)(intptr_t)als_scope_leave(arg);
}

static void test_scope_lifo_violation(void **state)
{
    (void)state;
    als_snapshot_t *s1 = capture_v1_v2();
    als_snapshot_t *s2 = als_run(a, &v3, capture, NULL);
    als_scope_t outer, inner;
    assert_int_equal(als_scope_enter(&outer, s1), 0);
    assert_int_equal(als_scope_enter(&inner, s2), 0);

    /* Leaving the outer scope first is refused and changes nothing. */
    captured_err[0] = '\0';
    intptr_t rc = (intptr_t)with_stderr_captured(leave_scope, &outer);
    assert_int_equal(rc, ALS_EINVAL);
    assert_view(look(), &v3, &dflt_b);
#ifndef NDEBUG
    assert_non_null(strstr(captured_err, "scope"));
#endif
    /* The scopes are still usable in the right order. */
    assert_int_equal(als_scope_leave(&inner), 0);
    assert_view(look(), &v1, &v2);
    assert_int_equal(als_scope_leave(&outer), 0);
    assert_view(look(), &dflt_a, &dflt_b);

    /* Leaving twice is refused, and changes nothing. */
    captured_err[0] = '\0';
    rc = (intptr_t)with_stderr_captured(leave_scope, &outer);
    assert_int_equal(rc, ALS_EINVAL);
#ifndef NDEBUG
    assert_non_null(strstr(captured_err, "already left"));
#endif
    assert_view(look(), &dflt_a, &dflt_b);
    als_snapshot_release(s1);
    als_snapshot_release(s2);
}

/* A scope belongs to the thread that entered it. */
static void *leave_elsewhere(void *arg)
{
    return (void *)(intptr_t)als_scope_leave(arg);
}

static void *leave_on_thread(void *arg)
{
    pthread_t t;
    void *r = NULL;
    if (pthread_create(&t, NULL, leave_elsewhere, arg) != 0 ||
        pthread_join(t, &r) != 0)
        return NULL;
    return r;
}

static void test_scope_leave_other_thread(void **state)
{
    (void)state;
    als_snapshot_t *s = capture_v1_v2();
    als_scope_t sc;
    assert_int_equal(als_scope_enter(&sc, s), 0);
    captured_err[0] = '\0';
    void *r = with_stderr_captured(leave_on_thread, &sc);
    assert_int_equal((intptr_t)r, ALS_EINVAL);
#ifndef NDEBUG
    assert_non_null(strstr(captured_err, "innermost"));
#endif
    assert_view(look(), &v1, &v2);
    assert_int_equal(als_scope_leave(&sc), 0);
    assert_view(look(), &dflt_a, &dflt_b);
    als_snapshot_release(s);
}

/* A function scope (als_run, als_snapshot_run) that ends while an explicit
 * scope opened inside it was never left: it still restores the caller's
 * context exactly, the abandoned scope's snapshot is left untouched, what
 * was bound inside is released, and a debug build says so. */
struct abandon {
    als_scope_t sc;
    als_snapshot_t *snap;
    int writes;              /* bind inside the abandoned scope */
    als_snapshot_t *outer;   /* NULL: abandon inside als_run; else inside
                              * als_snapshot_run of this */
    struct view inside, after;
    int rc;
};

static int destroyed;
static void count_destroy(void *p)
{
    (void)p;
    destroyed++;
}
static als_t *owned_store; /* destroys its values */
static int owned_value;

static void *abandon_scope(void *arg)
{
    struct abandon *ab = arg;
    if (!ab->outer) {
        /* Before the scope: a write and a capture at the run's own level
         * (in a snapshot_run, whose own table copy the abandoned scope
         * saved, these would leak). */
        als_enter_with(a, &v2);
        als_snapshot_release(als_snapshot());
    }
    ab->rc = als_scope_enter(&ab->sc, ab->snap);
    ab->inside = look();
    if (ab->writes) {
        als_enter_with(owned_store, &owned_value);
        als_enter_with(a, &v3);
    }
    return NULL; /* without leaving */
}

/* The caller binds b, which neither the run nor (with a different value)
 * the snapshot agrees with: a context left inside the snapshot shows. */
static void *caller(void *arg)
{
    struct abandon *ab = arg;
    if (ab->outer)
        als_snapshot_run(ab->outer, abandon_scope, ab);
    else
        als_run(a, &v4, abandon_scope, ab);
    ab->after = look();
    return NULL;
}

static void *caller_b(void *arg) { return als_run(b, &v1, caller, arg); }

static void test_scope_abandoned_in_run(void **state)
{
    (void)state;
    owned_store = als_new(&(als_options){ .destroy = count_destroy });
    /* An empty snapshot (whose table has no room at all) and one holding
     * values; with and without writes inside the abandoned scope. */
    als_snapshot_t *snaps[2] = { als_snapshot(), capture_v1_v2() };
    als_snapshot_t *outer = als_run(a, &v4, capture, NULL);
    for (int i = 0; i < 8; i++) {
        als_snapshot_t *snap = snaps[i & 1];
        struct abandon ab;
        memset(&ab, 0, sizeof ab);
        ab.snap = snap;
        ab.writes = (i >> 1) & 1;
        ab.outer = i >> 2 ? outer : NULL;
        destroyed = 0;
        captured_err[0] = '\0';
        with_stderr_captured(caller_b, &ab);
        assert_int_equal(ab.rc, 0);
        if (i & 1)
            assert_view(ab.inside, &v1, &v2);
        else
            assert_view(ab.inside, &dflt_a, &dflt_b);
#ifndef NDEBUG
        assert_non_null(strstr(captured_err, "never left"));
#endif
        /* The caller's context is back, and the value bound inside the
         * abandoned scope was released once. */
        assert_view(ab.after, &dflt_a, &v1);
        assert_view(look(), &dflt_a, &dflt_b);
        assert_null(als_get(owned_store));
        assert_int_equal(destroyed, ab.writes);
        /* The snapshot was not changed by the unwinding. */
        struct view in = { 0 };
        als_snapshot_run(snap, record, &in);
        if (i & 1)
            assert_view(in, &v1, &v2);
        else
            assert_view(in, &dflt_a, &dflt_b);
        /* The abandoned scope can no longer be left: it is not open. */
        assert_int_equal((intptr_t)with_stderr_captured(leave_scope, &ab.sc),
                         ALS_EINVAL);
        assert_view(look(), &dflt_a, &dflt_b);
        /* The abandoned scope's own reference is leaked, as documented;
         * drop it here so that the leak checker stays meaningful. */
        als_snapshot_release(snap);
    }
    /* The thread still works normally. */
    struct view in = { 0 };
    als_snapshot_run(snaps[1], record, &in);
    assert_view(in, &v1, &v2);
    als_snapshot_t *again = als_run(b, &v3, capture, NULL);
    als_snapshot_run(again, record, &in);
    assert_view(in, &dflt_a, &v3);
    als_snapshot_release(again);
    als_snapshot_release(snaps[0]);
    als_snapshot_release(snaps[1]);
    als_snapshot_release(outer);
    als_free(owned_store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_run_same_thread),
        cmocka_unit_test(test_snapshot_replaces_whole_context),
        cmocka_unit_test(test_snapshot_immutable),
        cmocka_unit_test(test_repeated_capture_same_pointer),
        cmocka_unit_test(test_retain_release),
        cmocka_unit_test(test_nested_snapshot_runs),
        cmocka_unit_test(test_snapshot_on_other_threads),
        cmocka_unit_test(test_snapshot_unaffected_by_capturer),
        cmocka_unit_test(test_bind),
        cmocka_unit_test(test_scope_enter_leave),
        cmocka_unit_test(test_scope_nesting),
        cmocka_unit_test(test_scope_lifo_violation),
        cmocka_unit_test(test_scope_leave_other_thread),
        cmocka_unit_test(test_scope_abandoned_in_run),
    };
    return cmocka_run_group_tests_name("snapshot", tests, setup, teardown);
}
