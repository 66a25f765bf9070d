/* stress/allocfail.c: every allocation failure surfaces, nothing is lost.
 *
 * With the test-only hook of ALS_FAULT_INJECTION builds
 * (als__test_fail_alloc, lib/internal.h), one scenario is run again and
 * again, failing its 1st, 2nd, 3rd... allocation until a run completes
 * without reaching the failing one; then again with sticky failures (the
 * n-th allocation and all later ones fail). The scenario: two stores (one
 * owning its values), als_run, als_enter_with, snapshots entered by
 * snapshot_run and explicit scopes, bound functions, resources,
 * als_thread_create, and a pool (als_pool_new) taking plain, cancellable,
 * nested, delayed, future (with a continuation) and group tasks, drained,
 * then shut down (DRAIN or CANCEL, alternately).
 *
 * Each run checks:
 *   - every call answers success or its documented failure (ALS_ENOMEM or
 *     NULL), and a failed call changed nothing (the context reads as
 *     before; a destroy-owning store destroyed the value it was handed);
 *   - with one failing allocation, exactly one failure surfaced (none was
 *     swallowed); in the run that reached no failure, none did;
 *   - no lost task: each accepted task ran its fn or its cancel exactly
 *     once, refused ones neither, waits return, and the pool's counters
 *     agree (submitted == completed + failed + cancelled == what ran);
 *   - every value the store owned was destroyed exactly once;
 *   - no leak: LeakSanitizer in the asan preset, after every run.
 * The scenario runs on a fresh thread each time, so that the thread's own
 * context state is released (and leak-checked) between runs.
 *
 * Figures: allocation-failure points tried, failures surfaced by kind. */
#include "stress.h"

#include "als.h"
#include "internal.h" /* als__test_fail_alloc */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#define LIVE 0xa110ca7eu
#define DEAD 0xdeadf00du
#define DEF_A ((void *)(uintptr_t)0xa0)
#define DEF_B ((void *)(uintptr_t)0xb0)
#define VAL_B1 ((void *)(uintptr_t)0xb1)
#define VAL_B2 ((void *)(uintptr_t)0xb2)

/* ---- values owned by store a ---------------------------------------------------------- */

struct token {
    uint32_t magic;
    _Atomic int destroyed;
    struct token *next;
};

static void token_destroy(void *v)
{
    struct token *t = v;
    if (atomic_fetch_add_explicit(&t->destroyed, 1, memory_order_relaxed) == 0) {
        CHECK(t->magic == LIVE, "destroy of a dead value");
        t->magic = DEAD;
    }
}

/* ---- one run of the scenario ------------------------------------------------------------- */

enum fail_kind {
    F_NEW, F_RUN, F_ENTER, F_SNAPSHOT, F_BIND, F_RESOURCE, F_THREAD, F_POOL, F_SUBMIT,
    F_NESTED, F_AFTER, F_FUTURE, F_THEN, F_CONT, F_GROUP, F_COUNT
};
static const char *const fail_names[F_COUNT] = {
    "als_new", "als_run", "als_enter_with", "als_snapshot", "als_bind / resource_bind",
    "als_resource_new", "als_thread_create", "als_pool_new", "als_submit / submit_task",
    "nested submit in a task", "als_submit_after", "als_submit_future",
    "als_future_then", "continuation cancelled", "als_group_new / group_submit",
};
static uint64_t surfaced_total[F_COUNT];

struct rec {
    struct rec *next;
    _Atomic int fn, cancel;
    int rc;                    /* the submit's answer */
    bool cancellable, nest;
    struct token *a;           /* what the task must see */
    void *b;
};

struct run {
    long n;
    bool sticky;
    int how;                   /* the final shutdown */
    als_t *a, *b;
    als_pool_t *pool;
    struct token *tokens;      /* made by the scenario thread only */
    _Atomic(struct rec *) recs;
    _Atomic int surfaced[F_COUNT];
    _Atomic int cont_accepted_max, fn_runs, bad;
};

static struct run *cur;

static void surfaced(enum fail_kind k)
{
    atomic_fetch_add_explicit(&cur->surfaced[k], 1, memory_order_relaxed);
}

/* rc must be 0 or ALS_ENOMEM; counts the latter. */
static bool ok_or_enomem(int rc, enum fail_kind k, const char *what)
{
    if (rc == ALS_ENOMEM) {
        surfaced(k);
        return false;
    }
    CHECK(rc == 0, "%s: %s (n=%ld%s)", what, als_strerror(rc), cur->n,
          cur->sticky ? ", sticky" : "");
    return rc == 0;
}

static struct token *token_new(void)
{
    struct token *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->magic = LIVE;
    t->next = cur->tokens;
    cur->tokens = t;
    return t;
}

/* The calling thread's context is (a, b). */
static bool sees(void *a, void *b, const char *where)
{
    void *ga = als_get(cur->a), *gb = als_get(cur->b);
    bool ok = ga == a && gb == b;
    if (ok && a != DEF_A)
        ok = ((struct token *)a)->magic == LIVE;
    if (!ok)
        atomic_fetch_add_explicit(&cur->bad, 1, memory_order_relaxed);
    return CHECK(ok, "%s: a=%p b=%p, want a=%p b=%p (n=%ld%s)", where, ga, gb, a, b, cur->n,
                 cur->sticky ? ", sticky" : "");
}

static struct rec *rec_new(void *a, void *b)
{
    struct rec *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->a = a;
    r->b = b;
    r->rc = 1;
    STRESS_PUSH(cur->recs, r);
    return r;
}

static int task_fn(void *arg)
{
    struct rec *r = arg;
    sees(r->a, r->b, "task");
    CHECK(atomic_fetch_add(&r->fn, 1) == 0, "a task ran twice");
    atomic_fetch_add(&cur->fn_runs, 1);
    if (r->nest) {
        struct rec *c = rec_new(r->a, r->b);
        c->rc = als_submit(cur->pool, task_fn, c);
        if (c->rc == ALS_ENOMEM)
            surfaced(F_NESTED);
        else
            CHECK(c->rc == 0 || c->rc == ALS_ESHUTDOWN, "nested submit: %s",
                  als_strerror(c->rc));
    }
    return 0;
}

static void cancel_fn(void *arg)
{
    struct rec *r = arg;
    sees(r->a, r->b, "cancel");
    CHECK(atomic_fetch_add(&r->cancel, 1) == 0, "a cancel ran twice");
}

static void *future_fn(void *arg)
{
    task_fn(arg);
    return arg;
}

/* A continuation gets its source's result (the source's record) and runs
 * in the context of the als_future_then call, which is the source's. */
static void *cont_fn(void *arg)
{
    struct rec *src = arg;
    sees(src->a, src->b, "continuation");
    return arg;
}

static void *check_fn(void *arg)
{
    void **ab = arg;
    sees(ab[0], ab[1], "entered capture");
    return arg;
}

static void *thread_fn(void *arg)
{
    void **ab = arg;
    sees(ab[0], ab[1], "als_thread_create thread");
    return arg;
}

static void *exit_then(void *arg)
{
    /* Inside als_exit(a): enter what arg holds. */
    void **p = arg;
    return als_snapshot_run(p[0], check_fn, p[1]);
}

/* Submits one task of the run; returns the pool's answer. */
static int submit(void *a, void *b, bool cancellable, bool nest)
{
    struct rec *r = rec_new(a, b);
    r->cancellable = cancellable;
    r->nest = nest;
    if (cancellable)
        r->rc = als_submit_task(cur->pool, &(als_task){ .fn = task_fn, .arg = r,
                                                        .cancel = cancel_fn });
    else
        r->rc = als_submit(cur->pool, task_fn, r);
    ok_or_enomem(r->rc, F_SUBMIT, "als_submit");
    return r->rc;
}

static void pool_part(void)
{
    struct run *rn = cur;
    void *a = als_get(rn->a), *b = als_get(rn->b);
    rn->pool = als_pool_new(&(als_pool_options){ .threads = 2, .queue_capacity = 16,
                                                 .name = "allocfail" });
    if (!rn->pool) {
        surfaced(F_POOL);
        return;
    }
    for (int i = 0; i < 4; i++)
        submit(a, b, i & 1, i == 2);

    struct rec *d = rec_new(a, b);
    d->rc = als_submit_after(rn->pool, 100000, task_fn, d);
    ok_or_enomem(d->rc, F_AFTER, "als_submit_after");

    /* A future and its continuation. */
    struct rec *fr = rec_new(a, b);
    als_future_t *f = NULL, *g = NULL;
    fr->rc = als_submit_future(rn->pool, future_fn, fr, &f);
    if (ok_or_enomem(fr->rc, F_FUTURE, "als_submit_future")) {
        int rc = als_future_then(f, rn->pool, cont_fn, &g);
        if (ok_or_enomem(rc, F_THEN, "als_future_then"))
            atomic_fetch_add(&rn->cont_accepted_max, 1);
        void *res = NULL;
        rc = als_future_wait(f, -1, &res);
        CHECK(rc == 0 && res == fr, "als_future_wait: %s", als_strerror(rc));
        if (g) {
            rc = als_future_wait(g, -1, &res);
            /* A continuation is submitted when its source completes; if
             * that submit fails, the continuation is cancelled. */
            if (rc == ALS_ECANCELED)
                surfaced(F_CONT);
            else
                CHECK(rc == 0 && res == fr, "continuation: %s", als_strerror(rc));
        }
        als_future_release(f);
        als_future_release(g);
    }

    als_group_t *grp = als_group_new();
    if (grp) {
        for (int i = 0; i < 3; i++) {
            struct rec *r = rec_new(a, b);
            r->rc = als_group_submit(grp, rn->pool, task_fn, r);
            ok_or_enomem(r->rc, F_GROUP, "als_group_submit");
        }
        int rc = als_group_wait(grp, -1);
        CHECK(rc == 0, "als_group_wait: %s", als_strerror(rc));
        als_group_free(grp);
    } else {
        surfaced(F_GROUP);
    }

    CHECK(als_pool_drain(rn->pool) == 0, "als_pool_drain");
    /* More work for the shutdown to drain or cancel. */
    for (int i = 0; i < 6; i++)
        submit(a, b, true, i == 0);
    struct rec *late = rec_new(a, b);
    late->rc = als_submit_after(rn->pool, 2000000, task_fn, late);
    ok_or_enomem(late->rc, F_AFTER, "als_submit_after");
    CHECK(als_pool_shutdown(rn->pool, rn->how) == 0, "als_pool_shutdown");
}

static void *body(void *arg)
{
    struct run *rn = cur;
    struct token *t1 = arg;
    sees(t1, DEF_B, "als_run");

    int rc = als_enter_with(rn->b, VAL_B1);
    void *b = ok_or_enomem(rc, F_ENTER, "als_enter_with") ? VAL_B1 : DEF_B;
    sees(t1, b, "after als_enter_with");

    struct token *t2 = token_new();
    rc = als_enter_with(rn->a, t2);
    void *a = t1;
    if (ok_or_enomem(rc, F_ENTER, "als_enter_with (owning store)")) {
        a = t2;
    } else {
        CHECK(atomic_load(&t2->destroyed) == 1,
              "als_enter_with failed without destroying the value it was handed");
    }
    sees(a, b, "after als_enter_with (owning store)");

    void *ab[2] = { a, b };
    als_snapshot_t *s = als_snapshot();
    if (s) {
        void *p[2] = { s, ab };
        als_exit(rn->a, exit_then, p);
        als_scope_t sc;
        if (CHECK(als_scope_enter(&sc, s) == 0, "als_scope_enter")) {
            sees(a, b, "explicit scope");
            CHECK(als_scope_leave(&sc) == 0, "als_scope_leave");
        }
        als_snapshot_release(s);
    } else {
        surfaced(F_SNAPSHOT);
    }
    sees(a, b, "after als_snapshot");

    als_bound_t *bd = als_bind(check_fn);
    if (bd) {
        als_bound_call(bd, ab);
        als_bound_free(bd);
    } else {
        surfaced(F_BIND);
    }

    als_resource_t *res = als_resource_new("allocfail");
    if (res) {
        als_resource_run_in_scope(res, check_fn, ab);
        als_bound_t *rb = als_resource_bind(res, check_fn);
        if (rb) {
            als_bound_call(rb, ab);
            als_bound_free(rb);
        } else {
            surfaced(F_BIND);
        }
        als_resource_free(res);
    } else {
        surfaced(F_RESOURCE);
    }
    sees(a, b, "after resources");

    pthread_t th;
    rc = als_thread_create(&th, NULL, thread_fn, ab);
    if (ok_or_enomem(rc, F_THREAD, "als_thread_create"))
        pthread_join(th, NULL);

    /* A second enter_with of the same store in this scope replaces the
     * first; the context must read the new value only if it succeeded. */
    rc = als_enter_with(rn->b, VAL_B2);
    if (ok_or_enomem(rc, F_ENTER, "als_enter_with (again)"))
        b = VAL_B2;
    sees(a, b, "after the second als_enter_with");

    pool_part();
    sees(a, b, "after the pool");
    return t1;
}

static void *scenario(void *arg)
{
    struct run *rn = arg;
    rn->a = als_new(&(als_options){ .name = "a", .default_value = DEF_A,
                                    .destroy = token_destroy });
    rn->b = als_new(&(als_options){ .name = "b", .default_value = DEF_B });
    if (!rn->a || !rn->b) {
        surfaced(F_NEW);
        als_free(rn->a);
        als_free(rn->b);
        rn->a = rn->b = NULL;
        return NULL;
    }
    struct token *t1 = token_new();
    void *r = als_run(rn->a, t1, body, t1);
    /* als_run allocates only to grow the thread's table past 16 stores;
     * with two stores it always runs the body. */
    CHECK(r == t1, "als_run did not run its function");
    sees(DEF_A, DEF_B, "after als_run");
    return NULL;
}

/* Runs the scenario once with the n-th allocation failing. Returns the
 * number of allocations it attempted. */
static long run_once(long n, bool sticky, uint64_t *points)
{
    struct run *rn = calloc(1, sizeof *rn);
    if (!rn)
        abort();
    rn->n = n;
    rn->sticky = sticky;
    rn->how = (n & 1) ? ALS_SHUTDOWN_CANCEL : ALS_SHUTDOWN_DRAIN;
    cur = rn;

    als__test_fail_alloc(n, sticky);
    pthread_t th;
    if (pthread_create(&th, NULL, scenario, rn))
        abort();
    pthread_join(th, NULL);
    /* The pool and its workers are gone only after als_pool_free. */
    als_pool_stats st = { 0 };
    bool have_stats = rn->pool && als_pool_stats_get(rn->pool, &st) == 0;
    als_pool_free(rn->pool);
    long attempts = als__test_fail_alloc(0, false);
    bool hit = attempts >= n;
    (*points)++;

    /* Tasks: exactly once each, none lost. */
    uint64_t accepted = 0, ran = 0, cancelled = 0;
    for (struct rec *r = atomic_load(&rn->recs); r; r = r->next) {
        int fn = atomic_load(&r->fn), cancel = atomic_load(&r->cancel);
        if (r->rc != 0) {
            CHECK(fn == 0 && cancel == 0, "a refused task ran");
            continue;
        }
        accepted++;
        ran += (uint64_t)fn;
        if (r->cancellable)
            CHECK(fn + cancel == 1, "accepted task: fn %d cancel %d (n=%ld%s)", fn, cancel, n,
                  sticky ? ", sticky" : "");
        else
            CHECK(fn <= 1 && cancel == 0, "accepted task: fn %d", fn);
        if (rn->how == ALS_SHUTDOWN_DRAIN)
            CHECK(fn == 1, "task lost by a DRAIN shutdown (n=%ld%s)", n, sticky ? ", sticky" : "");
        cancelled += fn == 0;
    }
    if (have_stats) {
        int conts = atomic_load(&rn->cont_accepted_max);
        CHECK(st.submitted == st.completed + st.failed + st.cancelled && st.queued == 0 &&
                  st.running == 0,
              "stats: submitted %" PRIu64 " completed %" PRIu64 " failed %" PRIu64
              " cancelled %" PRIu64 " queued %" PRIu64 " running %" PRIu64,
              st.submitted, st.completed, st.failed, st.cancelled, st.queued, st.running);
        CHECK(st.submitted >= accepted && st.submitted <= accepted + (uint64_t)conts,
              "stats: submitted %" PRIu64 ", accepted %" PRIu64 " (n=%ld%s)", st.submitted,
              accepted, n, sticky ? ", sticky" : "");
        CHECK(st.completed >= ran && st.cancelled >= cancelled,
              "stats: completed %" PRIu64 " (ran %" PRIu64 "), cancelled %" PRIu64
              " (%" PRIu64 ")",
              st.completed, ran, st.cancelled, cancelled);
    }

    /* Failures surfaced: one per injected failure, none in a clean run. */
    int total = 0;
    for (int k = 0; k < F_COUNT; k++) {
        int c = atomic_load(&rn->surfaced[k]);
        total += c;
        surfaced_total[k] += (uint64_t)c;
    }
    if (!hit)
        CHECK(total == 0, "a run without an injected failure reported %d failures", total);
    else if (!sticky)
        CHECK(total == 1, "one failed allocation (n=%ld) surfaced as %d failures", n, total);
    else
        CHECK(total >= 1, "sticky failures from n=%ld surfaced as no failure", n);
    CHECK(atomic_load(&rn->bad) == 0, "wrong context seen (n=%ld%s)", n,
          sticky ? ", sticky" : "");

    /* Every value destroyed exactly once. */
    for (struct token *t = rn->tokens, *next; t; t = next) {
        next = t->next;
        int d = atomic_load(&t->destroyed);
        CHECK(d == 1, "a value was destroyed %d times (n=%ld%s)", d, n, sticky ? ", sticky" : "");
        free(t);
    }
    for (struct rec *r = atomic_load(&rn->recs), *next; r; r = next) {
        next = r->next;
        free(r);
    }
    als_free(rn->a);
    als_free(rn->b);
    free(rn);
    cur = NULL;
#ifdef HAVE_LSAN
    CHECK(__lsan_do_recoverable_leak_check() == 0, "leak with allocation %ld failing%s", n,
          sticky ? " (sticky)" : "");
#endif
    return attempts;
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "allocfail", 2.0, NULL);
    uint64_t points = 0, sweeps = 0;
    long longest = 0;
    /* One sweep each way at least; more while time is left: which
     * allocation comes n-th depends on the workers' timing, so later sweeps
     * fail different ones. */
    do {
        for (int sticky = 0; sticky < 2; sticky++) {
            for (long n = 1;; n++) {
                long attempts = run_once(n, sticky, &points);
                if (attempts < n) {
                    if (n - 1 > longest)
                        longest = n - 1;
                    break;
                }
                if (n > 100000) {
                    CHECK(false, "the scenario never completes");
                    break;
                }
            }
            sweeps++;
        }
    } while (stress_time_left());

    stress_figure("sweeps (one-shot + sticky)", "%" PRIu64, sweeps);
    stress_figure("allocation-failure points tried", "%" PRIu64, points);
    stress_figure("allocations in the scenario", "%ld (most seen)", longest);
    for (int k = 0; k < F_COUNT; k++) {
        char label[80];
        snprintf(label, sizeof label, "surfaced: %s", fail_names[k]);
        stress_figure(label, "%" PRIu64, surfaced_total[k]);
    }
#ifdef HAVE_LSAN
    stress_figure("leak checks (LeakSanitizer)", "%" PRIu64 ", after every run", points);
#else
    stress_figure("leak checks", "none in this build (the asan preset has them)");
#endif
    return stress_finish();
}
