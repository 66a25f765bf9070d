/* stress/badinput.c: every public function with NULL, zero, huge, released
 * and double-released arguments, where include/als.h defines the outcome.
 *
 * Table-driven: one row per public function (each row names the arguments
 * it tries), every row run on a fresh thread so that each starts at a
 * thread's top level with an empty context. Calls whose behaviour the
 * contract leaves undefined (a store used after als_free, a future after
 * its last release, a pool after als_pool_free...) are not made: here
 * "released" means a pool after shutdown, a snapshot retained then
 * released once, a scope already left; "double-released" means a second
 * shutdown, a scope left twice, a snapshot retained once and released
 * twice.
 *
 * Knowing that a pool is blocked: a gate task holds the only worker until
 * the test opens it, so "pending" is certain, not a matter of timing. */
#include "stress.h"

#include "als.h"

#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HUGE_PTR ((void *)UINTPTR_MAX)

/* ---- helpers ------------------------------------------------------------------------- */

static _Atomic int calls, destroys;

static void *count_fn(void *arg)
{
    atomic_fetch_add(&calls, 1);
    return arg;
}

static int count_task(void *arg)
{
    atomic_fetch_add(&calls, 1);
    (void)arg;
    return 0;
}

static void count_destroy(void *v)
{
    (void)v;
    atomic_fetch_add(&destroys, 1);
}

static void reset_counts(void)
{
    atomic_store(&calls, 0);
    atomic_store(&destroys, 0);
}

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open, entered;
};

static struct gate gate;

static void gate_reset(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.open = gate.entered = false;
    pthread_mutex_unlock(&gate.mu);
}

/* A task that holds its worker until gate_open. */
static int gate_task(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gate.mu);
    gate.entered = true;
    pthread_cond_broadcast(&gate.cv);
    while (!gate.open)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
    return 0;
}

static void gate_wait_entered(void)
{
    pthread_mutex_lock(&gate.mu);
    while (!gate.entered)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.open = true;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

/* A one-worker pool whose worker is held by a gate task. */
static als_pool_t *blocked_pool(void)
{
    gate_reset();
    als_pool_t *p = als_pool_new(&(als_pool_options){ .threads = 1, .queue_capacity = 64 });
    if (!p || als_submit(p, gate_task, NULL) != 0)
        abort();
    gate_wait_entered();
    return p;
}

static als_pool_t *small_pool(void)
{
    als_pool_t *p = als_pool_new(&(als_pool_options){ .threads = 2 });
    if (!p)
        abort();
    return p;
}

/* A pool after a DRAIN shutdown: "released" for the pool API. */
static als_pool_t *shut_pool(void)
{
    als_pool_t *p = small_pool();
    if (als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN) != 0)
        abort();
    return p;
}

/* Starts a CANCEL shutdown of a gate-blocked pool from another thread and
 * returns once it has begun (a submit from outside is refused), so that
 * everything queued behind the gate is cancelled when the gate opens. */
struct canceller {
    als_pool_t *p;
    pthread_t t;
};

static void *cancel_main(void *arg)
{
    struct canceller *c = arg;
    als_pool_shutdown(c->p, ALS_SHUTDOWN_CANCEL);
    return NULL;
}

static void cancel_begin(struct canceller *c, als_pool_t *p)
{
    c->p = p;
    if (pthread_create(&c->t, NULL, cancel_main, c))
        abort();
    /* Probes accepted before the shutdown began are cancelled with the
     * rest: they never run. */
    while (als_submit(p, count_task, NULL) == 0)
        sched_yield();
}

static void cancel_end(struct canceller *c)
{
    gate_open();
    pthread_join(c->t, NULL);
}

/* ---- rows: errors and version ------------------------------------------------------- */

static void row_strerror(void)
{
    const int codes[] = { ALS_OK, ALS_EINVAL, ALS_ENOMEM, ALS_EFULL, ALS_ESHUTDOWN,
                          ALS_EDEADLK, ALS_ETIMEDOUT, ALS_ECANCELED, ALS_ETASK };
    const int n = (int)(sizeof codes / sizeof codes[0]);
    for (int i = 0; i < n; i++) {
        const char *s = als_strerror(codes[i]);
        CHECK(s && *s && strcmp(s, "unknown error") != 0, "als_strerror(%d) = %s", codes[i],
              s ? s : "NULL");
        for (int j = 0; j < i; j++)
            CHECK(s && strcmp(s, als_strerror(codes[j])) != 0,
                  "als_strerror(%d) and (%d) share a text", codes[i], codes[j]);
    }
    const int unknown[] = { 1, -9, 42, -1000, INT_MIN, INT_MAX };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = als_strerror(unknown[i]);
        CHECK(s && strcmp(s, "unknown error") == 0, "als_strerror(%d) = %s", unknown[i],
              s ? s : "NULL");
    }
}

static void row_version(void)
{
    CHECK(als_version() && strcmp(als_version(), ALS_VERSION_STRING) == 0,
          "als_version() = %s, headers %s", als_version(), ALS_VERSION_STRING);
}

/* ---- rows: stores ---------------------------------------------------------------------- */

static void row_new(void)
{
    als_t *a = als_new(NULL);
    CHECK(a && strcmp(als_name(a), "") == 0 && als_get(a) == NULL, "als_new(NULL)");
    als_free(a);
    a = als_new(&(als_options){ 0 });
    CHECK(a && strcmp(als_name(a), "") == 0 && als_get(a) == NULL, "als_new(zeroed options)");
    als_free(a);

    size_t len = 1u << 20; /* a 1 MiB name */
    char *name = malloc(len + 1);
    if (!name)
        abort();
    memset(name, 'n', len);
    name[len] = '\0';
    a = als_new(&(als_options){ .name = name, .default_value = HUGE_PTR });
    name[0] = 'X'; /* copied: our buffer is ours again */
    CHECK(a && als_name(a) != name && strlen(als_name(a)) == len && als_name(a)[0] == 'n',
          "als_new copies a huge name");
    CHECK(a && als_get(a) == HUGE_PTR, "a huge default value is handed back as is");
    als_free(a);
    free(name);
}

static void row_free(void)
{
    als_free(NULL);
    CHECK(true, "als_free(NULL) is a no-op");
}

static void row_name(void)
{
    CHECK(als_name(NULL) == NULL, "als_name(NULL)");
}

static void row_get(void)
{
    CHECK(als_get(NULL) == NULL, "als_get(NULL)");
}

static void row_has(void)
{
    CHECK(als_has(NULL) == 0, "als_has(NULL)");
    als_t *a = als_new(&(als_options){ .default_value = "d" });
    CHECK(als_has(a) == 0, "als_has on a store never bound");
    als_disable(a);
    CHECK(als_has(a) == 0, "als_has on a disabled store");
    als_free(a);
}

static void *get_a(void *arg)
{
    return als_get(arg);
}

static void row_run(void)
{
    als_t *a = als_new(&(als_options){ .default_value = "d", .destroy = count_destroy });
    reset_counts();
    CHECK(als_run(NULL, "v", count_fn, "r") == NULL && atomic_load(&calls) == 0,
          "als_run(NULL store) calls nothing, returns NULL");
    CHECK(als_run(a, "v", NULL, "r") == NULL, "als_run(NULL fn) returns NULL");
    CHECK(atomic_load(&destroys) == 0 && strcmp(als_get(a), "d") == 0,
          "als_run(NULL fn) calls nothing (not even destroy) and binds nothing");
    als_free(a);

    a = als_new(&(als_options){ .default_value = "d" });
    CHECK(als_run(a, NULL, get_a, a) == NULL && strcmp(als_get(a), "d") == 0,
          "als_run binds NULL as a value (not the default)");
    CHECK(als_run(a, HUGE_PTR, get_a, a) == HUGE_PTR, "als_run binds a huge pointer as is");
    als_free(a);
}

static void *exit_then_get(void *arg)
{
    return als_get(arg);
}

static void *run_exit(void *arg)
{
    return als_exit(arg, exit_then_get, arg);
}

static void row_exit(void)
{
    als_t *a = als_new(&(als_options){ .default_value = "d" });
    reset_counts();
    CHECK(als_exit(NULL, count_fn, "r") == NULL && atomic_load(&calls) == 0,
          "als_exit(NULL store) calls nothing");
    CHECK(als_exit(a, NULL, "r") == NULL, "als_exit(NULL fn)");
    void *r = als_run(a, "v", run_exit, a);
    CHECK(r && strcmp(r, "d") == 0, "als_exit inside a run gives the default");
    r = als_exit(a, exit_then_get, a);
    CHECK(r && strcmp(r, "d") == 0, "als_exit of an unbound store");
    als_free(a);
}

static void row_enter_with(void)
{
    CHECK(als_enter_with(NULL, "v") == ALS_EINVAL, "als_enter_with(NULL store)");
    als_t *a = als_new(&(als_options){ .default_value = "d", .destroy = count_destroy });
    reset_counts();
    CHECK(als_enter_with(a, NULL) == 0 && als_get(a) == NULL,
          "als_enter_with binds NULL as a value");
    /* Replacing at the top level releases the replaced value; NULL is
     * never passed to destroy. */
    CHECK(als_enter_with(a, "v") == 0 && strcmp(als_get(a), "v") == 0 &&
              atomic_load(&destroys) == 0,
          "als_enter_with replaces NULL without destroying it");
    CHECK(als_enter_with(a, "w") == 0 && atomic_load(&destroys) == 1,
          "als_enter_with replacing a value destroys it");
    als_free(a); /* the thread's binding goes with the thread */
}

static void row_disable(void)
{
    als_disable(NULL);
    als_t *a = als_new(&(als_options){ .default_value = "d" });
    als_disable(a);
    als_disable(a); /* twice: still just unbound */
    CHECK(strcmp(als_get(a), "d") == 0, "als_disable of an unbound store");
    CHECK(als_enter_with(a, "v") == 0 && strcmp(als_get(a), "v") == 0,
          "binding again after als_disable");
    als_free(a);
}

/* ---- rows: snapshots and scopes ------------------------------------------------------- */

static void row_snapshot(void)
{
    als_snapshot_t *s = als_snapshot();
    CHECK(s != NULL, "als_snapshot of an empty context");
    als_snapshot_release(s);
}

static void row_snapshot_retain_release(void)
{
    CHECK(als_snapshot_retain(NULL) == NULL, "als_snapshot_retain(NULL)");
    als_snapshot_release(NULL);
    als_t *a = als_new(&(als_options){ .default_value = "d", .destroy = count_destroy });
    reset_counts();
    als_snapshot_t *s = NULL;
    char *v = malloc(1);
    if (!v || als_enter_with(a, v) != 0)
        abort();
    s = als_snapshot();
    CHECK(s && als_snapshot_retain(s) == s, "als_snapshot_retain returns its argument");
    /* Released once (of two): still valid. */
    als_snapshot_release(s);
    CHECK(als_snapshot_run(s, get_a, a) == v, "a snapshot retained then released once");
    CHECK(als_enter_with(a, "other") == 0, "rebinding");
    /* Double release of a retained snapshot: the value goes with the last. */
    als_snapshot_t *s2 = als_snapshot_retain(s);
    als_snapshot_release(s);
    CHECK(atomic_load(&destroys) == 0, "value destroyed while a snapshot holds it");
    als_snapshot_release(s2);
    CHECK(atomic_load(&destroys) == 1, "value not destroyed with its last holder (%d)",
          atomic_load(&destroys));
    free(v);
    als_free(a);
}

static void row_snapshot_run(void)
{
    als_snapshot_t *s = als_snapshot();
    reset_counts();
    CHECK(als_snapshot_run(NULL, count_fn, "r") == NULL && atomic_load(&calls) == 0,
          "als_snapshot_run(NULL snapshot)");
    CHECK(als_snapshot_run(s, NULL, "r") == NULL, "als_snapshot_run(NULL fn)");
    CHECK(als_snapshot_run(s, count_fn, HUGE_PTR) == HUGE_PTR, "als_snapshot_run result");
    als_snapshot_release(s);
}

static void row_scope(void)
{
    als_t *a = als_new(&(als_options){ .default_value = "d" });
    als_scope_t sc, inner;
    CHECK(als_scope_enter(NULL, NULL) == ALS_EINVAL, "als_scope_enter(NULL, NULL)");
    CHECK(als_scope_enter(&sc, NULL) == ALS_EINVAL, "als_scope_enter(scope, NULL)");
    CHECK(als_scope_leave(NULL) == ALS_EINVAL, "als_scope_leave(NULL)");
    if (als_enter_with(a, "outer") != 0)
        abort();
    als_snapshot_t *s = als_snapshot();
    CHECK(als_scope_enter(NULL, s) == ALS_EINVAL, "als_scope_enter(NULL, snapshot)");
    if (als_enter_with(a, "now") != 0)
        abort();
    als_snapshot_t *s2 = als_snapshot();
    CHECK(als_scope_enter(&sc, s) == 0 && strcmp(als_get(a), "outer") == 0, "als_scope_enter");
    /* The scope holds its own reference. */
    als_snapshot_release(s);
    CHECK(als_scope_enter(&inner, s2) == 0 && strcmp(als_get(a), "now") == 0,
          "nested als_scope_enter");
    /* Not the innermost: refused, nothing changes. */
    CHECK(als_scope_leave(&sc) == ALS_EINVAL && strcmp(als_get(a), "now") == 0,
          "leaving a scope that is not the innermost");
    CHECK(als_scope_leave(&inner) == 0 && strcmp(als_get(a), "outer") == 0, "leaving inner");
    CHECK(als_scope_leave(&inner) == ALS_EINVAL && strcmp(als_get(a), "outer") == 0,
          "leaving a scope twice");
    CHECK(als_scope_leave(&sc) == 0 && strcmp(als_get(a), "now") == 0, "leaving outer");
    CHECK(als_scope_leave(&sc) == ALS_EINVAL, "leaving the outer scope twice");
    als_snapshot_release(s2);
    als_free(a);
}

/* ---- rows: bound functions and resources ----------------------------------------------------- */

static void row_bind(void)
{
    CHECK(als_bind(NULL) == NULL, "als_bind(NULL)");
    CHECK(als_bound_call(NULL, "x") == NULL, "als_bound_call(NULL)");
    als_bound_free(NULL);
    als_bound_t *b = als_bind(count_fn);
    CHECK(b && als_bound_call(b, HUGE_PTR) == HUGE_PTR && als_bound_call(b, NULL) == NULL,
          "als_bound_call passes its argument and result through");
    als_bound_free(b);
}

static uint64_t ids_in[2];

static void *ids_fn(void *arg)
{
    ids_in[0] = als_execution_async_id();
    ids_in[1] = als_trigger_async_id();
    return arg;
}

static void row_resource(void)
{
    als_resource_t *r = als_resource_new(NULL);
    CHECK(r && als_resource_type(r) && strcmp(als_resource_type(r), "") == 0,
          "als_resource_new(NULL) has type \"\"");
    CHECK(r && als_resource_async_id(r) > 1 && als_resource_trigger_async_id(r) == 1,
          "resource ids at a thread's top level");
    als_resource_free(r);
    als_resource_free(NULL);
    CHECK(als_resource_type(NULL) == NULL, "als_resource_type(NULL)");
    CHECK(als_resource_async_id(NULL) == 0, "als_resource_async_id(NULL)");
    CHECK(als_resource_trigger_async_id(NULL) == 0, "als_resource_trigger_async_id(NULL)");

    size_t len = 1u << 16;
    char *type = malloc(len + 1);
    if (!type)
        abort();
    memset(type, 't', len);
    type[len] = '\0';
    r = als_resource_new(type);
    type[0] = 'X';
    CHECK(r && als_resource_type(r) != type && strlen(als_resource_type(r)) == len &&
              als_resource_type(r)[0] == 't',
          "als_resource_new copies a huge type");
    free(type);

    reset_counts();
    CHECK(als_resource_run_in_scope(NULL, count_fn, "x") == NULL && atomic_load(&calls) == 0,
          "als_resource_run_in_scope(NULL resource)");
    CHECK(als_resource_run_in_scope(r, NULL, "x") == NULL, "als_resource_run_in_scope(NULL fn)");
    CHECK(als_resource_bind(NULL, count_fn) == NULL, "als_resource_bind(NULL resource)");
    CHECK(als_resource_bind(r, NULL) == NULL, "als_resource_bind(NULL fn)");
    als_bound_t *b = als_resource_bind(r, ids_fn);
    uint64_t id = als_resource_async_id(r), trig = als_resource_trigger_async_id(r);
    als_resource_free(r); /* the bound function is independent of it */
    CHECK(b && als_bound_call(b, HUGE_PTR) == HUGE_PTR && ids_in[0] == id && ids_in[1] == trig,
          "a resource-bound function outlives its resource, with its ids");
    als_bound_free(b);

    als_scope_t sc;
    r = als_resource_new("r");
    CHECK(als_resource_enter(NULL, NULL) == ALS_EINVAL, "als_resource_enter(NULL, NULL)");
    CHECK(als_resource_enter(&sc, NULL) == ALS_EINVAL, "als_resource_enter(scope, NULL)");
    CHECK(als_resource_enter(NULL, r) == ALS_EINVAL, "als_resource_enter(NULL, resource)");
    id = als_resource_async_id(r);
    CHECK(als_resource_enter(&sc, r) == 0 && als_execution_async_id() == id,
          "als_resource_enter");
    als_resource_free(r); /* the scope holds the context */
    CHECK(als_scope_leave(&sc) == 0 && als_execution_async_id() == 1, "leaving it");
    CHECK(als_scope_leave(&sc) == ALS_EINVAL, "leaving it twice");
}

static void row_async_ids(void)
{
    CHECK(als_execution_async_id() == 1 && als_trigger_async_id() == 0,
          "ids at a thread's top level: %" PRIu64 " / %" PRIu64, als_execution_async_id(),
          als_trigger_async_id());
}

static void row_thread_create(void)
{
    pthread_t t;
    CHECK(als_thread_create(NULL, NULL, count_fn, NULL) == ALS_EINVAL,
          "als_thread_create(NULL thread)");
    CHECK(als_thread_create(&t, NULL, NULL, NULL) == ALS_EINVAL, "als_thread_create(NULL fn)");
    void *r = NULL;
    CHECK(als_thread_create(&t, NULL, ids_fn, HUGE_PTR) == 0 && pthread_join(t, &r) == 0 &&
              r == HUGE_PTR && ids_in[0] > 1 && ids_in[1] == 1,
          "als_thread_create with a NULL attr: result and ids");
}

/* ---- rows: pools ---------------------------------------------------------------------------- */

static unsigned cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    return 0;
}

static char task_name[32];

static int name_task(void *arg)
{
    (void)arg;
    pthread_getname_np(pthread_self(), task_name, sizeof task_name);
    return 0;
}

static void row_pool_new(void)
{
    CHECK(als_pool_new(&(als_pool_options){ .queue_capacity = (1u << 30) + 1 }) == NULL,
          "queue_capacity above 2^30 refused");
    CHECK(als_pool_new(&(als_pool_options){ .queue_capacity = UINT_MAX }) == NULL,
          "queue_capacity UINT_MAX refused");
    als_pool_t *p = als_pool_new(NULL);
    als_pool_stats st;
    CHECK(p && als_pool_stats_get(p, &st) == 0 && st.threads == cpus(),
          "als_pool_new(NULL): one worker per CPU");
    CHECK(p && als_submit(p, name_task, NULL) == 0 && als_pool_drain(p) == 0 &&
              strncmp(task_name, "als-", 4) == 0,
          "workers of an unnamed pool are named als-<n> (%s)", task_name);
    als_pool_free(p);

    char name[200];
    memset(name, 'p', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    p = als_pool_new(&(als_pool_options){ .threads = 1, .queue_capacity = 1, .name = name });
    CHECK(p && als_submit(p, count_task, NULL) == 0 && als_pool_drain(p) == 0,
          "a pool with a huge name and a queue of 1");
    als_pool_free(p);
}

static int submit_in_task(void *arg)
{
    als_pool_t *p = arg;
    CHECK(als_pool_drain(p) == ALS_EDEADLK, "als_pool_drain from the pool's own worker");
    CHECK(als_pool_drain_help(p) == ALS_EDEADLK, "als_pool_drain_help from the pool's own task");
    CHECK(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN) == ALS_EDEADLK,
          "als_pool_shutdown from the pool's own worker");
    CHECK(als_pool_current() == p, "als_pool_current in a task");
    als_pool_free(p); /* refused: the pool stays usable */
    CHECK(als_submit(p, count_task, NULL) == 0, "the pool works after a refused free");
    return 0;
}

static void row_submit(void)
{
    als_pool_t *p = small_pool();
    reset_counts();
    CHECK(als_submit(NULL, count_task, NULL) == ALS_EINVAL, "als_submit(NULL pool)");
    CHECK(als_submit(p, NULL, NULL) == ALS_EINVAL, "als_submit(NULL fn)");
    CHECK(als_submit_task(p, NULL) == ALS_EINVAL, "als_submit_task(NULL task)");
    CHECK(als_submit_task(NULL, &(als_task){ .fn = count_task }) == ALS_EINVAL,
          "als_submit_task(NULL pool)");
    CHECK(als_submit_task(p, &(als_task){ .fn = NULL, .cancel = NULL }) == ALS_EINVAL,
          "als_submit_task with a NULL fn");
    CHECK(als_submit(p, count_task, HUGE_PTR) == 0 && als_pool_drain(p) == 0 &&
              atomic_load(&calls) == 1,
          "als_submit with a huge argument");
    als_pool_free(p);

    p = shut_pool();
    CHECK(als_submit(p, count_task, NULL) == ALS_ESHUTDOWN, "als_submit after shutdown");
    CHECK(als_submit_task(p, &(als_task){ .fn = count_task, .flags = ALS_TASK_DETACHED }) ==
              ALS_ESHUTDOWN,
          "als_submit_task after shutdown");
    als_pool_free(p);
}

static void row_drain(void)
{
    CHECK(als_pool_drain(NULL) == ALS_EINVAL, "als_pool_drain(NULL)");
    CHECK(als_pool_drain_help(NULL) == ALS_EINVAL, "als_pool_drain_help(NULL)");
    als_pool_t *p = small_pool();
    CHECK(als_pool_drain(p) == 0, "als_pool_drain of an idle pool");
    CHECK(als_pool_drain_help(p) == 0, "als_pool_drain_help of an idle pool");
    CHECK(als_submit(p, submit_in_task, p) == 0 && als_pool_drain(p) == 0,
          "EDEADLK rows ran in a task");
    CHECK(als_submit(p, submit_in_task, p) == 0 && als_pool_drain_help(p) == 0,
          "EDEADLK rows ran in a task a helping drain may run");
    als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN);
    CHECK(als_pool_drain(p) == 0, "als_pool_drain after shutdown");
    CHECK(als_pool_drain_help(p) == 0, "als_pool_drain_help after shutdown");
    als_pool_free(p);
}

static void row_shutdown(void)
{
    als_pool_t *p = small_pool();
    CHECK(als_pool_shutdown(NULL, ALS_SHUTDOWN_DRAIN) == ALS_EINVAL, "als_pool_shutdown(NULL)");
    const int bad[] = { -1, 2, 3, INT_MAX, INT_MIN };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(als_pool_shutdown(p, bad[i]) == ALS_EINVAL, "als_pool_shutdown(pool, %d)", bad[i]);
    CHECK(als_submit(p, count_task, NULL) == 0, "an unknown `how` changed nothing");
    CHECK(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN) == 0, "als_pool_shutdown(DRAIN)");
    CHECK(als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN) == 0, "a second DRAIN");
    CHECK(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL) == 0, "CANCEL after DRAIN");
    CHECK(als_pool_shutdown(p, 7) == ALS_EINVAL, "unknown `how` after shutdown");
    als_pool_free(p);
}

static void row_pool_free(void)
{
    als_pool_free(NULL);
    als_pool_t *p = small_pool();
    reset_counts();
    for (int i = 0; i < 10; i++)
        als_submit(p, count_task, NULL);
    als_pool_free(p); /* no shutdown first: a DRAIN one */
    CHECK(atomic_load(&calls) == 10, "als_pool_free drains: %d of 10 ran", atomic_load(&calls));
    p = shut_pool();
    als_pool_free(p); /* after a shutdown */
    CHECK(true, "als_pool_free after shutdown");
}

static void row_stats(void)
{
    als_pool_t *p = small_pool();
    als_pool_stats st;
    CHECK(als_pool_stats_get(NULL, &st) == ALS_EINVAL, "als_pool_stats_get(NULL pool)");
    CHECK(als_pool_stats_get(p, NULL) == ALS_EINVAL, "als_pool_stats_get(NULL out)");
    als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN);
    CHECK(als_pool_stats_get(p, &st) == 0 && st.submitted == 0 && st.threads == 2,
          "als_pool_stats_get after shutdown");
    als_pool_free(p);
}

static void row_pool_current(void)
{
    CHECK(als_pool_current() == NULL, "als_pool_current outside any pool");
}

static void row_submit_after(void)
{
    als_pool_t *p = small_pool();
    reset_counts();
    CHECK(als_submit_after(NULL, 0, count_task, NULL) == ALS_EINVAL,
          "als_submit_after(NULL pool)");
    CHECK(als_submit_after(p, 0, NULL, NULL) == ALS_EINVAL, "als_submit_after(NULL fn)");
    CHECK(als_submit_after(p, 0, count_task, NULL) == 0 && als_pool_drain(p) == 0 &&
              atomic_load(&calls) == 1,
          "als_submit_after with no delay runs");
    /* A huge delay: accepted, then cancelled by a CANCEL shutdown. */
    CHECK(als_submit_after(p, UINT64_MAX, count_task, NULL) == 0, "huge delay accepted");
    CHECK(als_pool_shutdown(p, ALS_SHUTDOWN_CANCEL) == 0, "CANCEL with a huge delay pending");
    als_pool_stats st;
    als_pool_stats_get(p, &st);
    CHECK(st.cancelled == 1 && atomic_load(&calls) == 1,
          "the delayed task was cancelled (cancelled %" PRIu64 ", calls %d)", st.cancelled,
          atomic_load(&calls));
    CHECK(als_submit_after(p, 0, count_task, NULL) == ALS_ESHUTDOWN,
          "als_submit_after after shutdown");
    als_pool_free(p);
}

/* ---- rows: futures and groups -------------------------------------------------------------- */

static void row_submit_future(void)
{
    als_pool_t *p = small_pool();
    als_future_t *f = NULL;
    CHECK(als_submit_future(NULL, count_fn, NULL, &f) == ALS_EINVAL,
          "als_submit_future(NULL pool)");
    CHECK(als_submit_future(p, NULL, NULL, &f) == ALS_EINVAL, "als_submit_future(NULL fn)");
    CHECK(als_submit_future(p, count_fn, NULL, NULL) == ALS_EINVAL,
          "als_submit_future(NULL out)");
    als_pool_shutdown(p, ALS_SHUTDOWN_DRAIN);
    CHECK(als_submit_future(p, count_fn, NULL, &f) == ALS_ESHUTDOWN,
          "als_submit_future after shutdown");
    als_pool_free(p);
}

static void row_future_wait(void)
{
    CHECK(als_future_wait(NULL, 0, NULL) == ALS_EINVAL, "als_future_wait(NULL)");
    als_pool_t *p = blocked_pool();
    als_future_t *f = NULL, *g = NULL;
    if (als_submit_future(p, count_fn, HUGE_PTR, &f) != 0 ||
        als_submit_future(p, count_fn, NULL, &g) != 0)
        abort();
    void *r = "untouched";
    CHECK(als_future_wait(f, 0, &r) == ALS_ETIMEDOUT, "timeout 0 on a pending future");
    CHECK(als_future_wait(f, 1000, NULL) == ALS_ETIMEDOUT, "timeout 1 us on a pending future");
    gate_open();
    CHECK(als_future_wait(f, -1, &r) == 0 && r == HUGE_PTR, "no limit (< 0)");
    CHECK(als_future_wait(f, INT64_MAX, NULL) == 0, "a huge timeout, NULL result");
    CHECK(als_future_wait(f, 0, &r) == 0 && r == HUGE_PTR, "timeout 0 on a done future");
    CHECK(als_future_wait(g, INT64_MIN, &r) == 0 && r == NULL, "INT64_MIN: no limit");
    als_future_release(f);
    als_future_release(g);
    als_future_release(NULL);
    als_pool_free(p);

    /* Cancelled. */
    p = blocked_pool();
    if (als_submit_future(p, count_fn, NULL, &f) != 0)
        abort();
    struct canceller c;
    cancel_begin(&c, p);
    cancel_end(&c);
    CHECK(als_future_wait(f, -1, &r) == ALS_ECANCELED, "a cancelled future's wait");
    als_future_release(f);
    als_pool_free(p);
}

static void row_future_then(void)
{
    als_pool_t *p = small_pool();
    als_future_t *f = NULL, *g = NULL;
    if (als_submit_future(p, count_fn, NULL, &f) != 0)
        abort();
    CHECK(als_future_then(NULL, p, count_fn, &g) == ALS_EINVAL, "als_future_then(NULL f)");
    CHECK(als_future_then(f, NULL, count_fn, &g) == ALS_EINVAL, "als_future_then(NULL pool)");
    CHECK(als_future_then(f, p, NULL, &g) == ALS_EINVAL, "als_future_then(NULL fn)");
    CHECK(als_future_then(f, p, count_fn, NULL) == ALS_EINVAL, "als_future_then(NULL out)");
    als_pool_t *q = shut_pool();
    CHECK(als_future_then(f, q, count_fn, &g) == ALS_ESHUTDOWN,
          "als_future_then on a shut-down pool");
    als_pool_free(q);
    als_future_wait(f, -1, NULL);
    CHECK(als_future_then(f, p, count_fn, &g) == 0 && als_future_wait(g, -1, NULL) == 0,
          "then on a completed future still runs");
    als_future_release(g);
    als_future_release(f);
    als_pool_free(p);

    /* Then on a cancelled future: 0, and the continuation is cancelled. */
    p = blocked_pool();
    if (als_submit_future(p, count_fn, NULL, &f) != 0)
        abort();
    reset_counts();
    struct canceller c;
    cancel_begin(&c, p);
    cancel_end(&c);
    als_pool_t *other = small_pool();
    CHECK(als_future_then(f, other, count_fn, &g) == 0, "then on a cancelled future");
    CHECK(als_future_wait(g, -1, NULL) == ALS_ECANCELED && atomic_load(&calls) == 0,
          "its continuation is cancelled and never runs");
    als_future_release(g);
    als_future_release(f);
    als_pool_free(other);
    als_pool_free(p);
}

static void row_future_release(void)
{
    als_future_release(NULL);
    als_pool_t *p = blocked_pool();
    als_future_t *f = NULL;
    reset_counts();
    if (als_submit_future(p, count_fn, NULL, &f) != 0)
        abort();
    als_future_release(f); /* before completion: does not cancel */
    gate_open();
    als_pool_drain(p);
    CHECK(atomic_load(&calls) == 1, "a released future's task still runs");
    als_pool_free(p);
}

static int fail_task(void *arg)
{
    return (int)(intptr_t)arg;
}

static void row_group(void)
{
    als_pool_t *p = blocked_pool();
    als_group_t *g = als_group_new();
    CHECK(g != NULL, "als_group_new");
    CHECK(als_group_wait(NULL, 0) == ALS_EINVAL, "als_group_wait(NULL)");
    CHECK(als_group_wait(g, 0) == 0, "waiting for an empty group");
    CHECK(als_group_submit(NULL, p, count_task, NULL) == ALS_EINVAL, "als_group_submit(NULL g)");
    CHECK(als_group_submit(g, NULL, count_task, NULL) == ALS_EINVAL,
          "als_group_submit(NULL pool)");
    CHECK(als_group_submit(g, p, NULL, NULL) == ALS_EINVAL, "als_group_submit(NULL fn)");
    CHECK(als_group_wait(g, 0) == 0, "refused submits left the group empty");
    CHECK(als_group_submit(g, p, fail_task, (void *)(intptr_t)0) == 0 &&
              als_group_submit(g, p, fail_task, (void *)(intptr_t)7) == 0 &&
              als_group_submit(g, p, fail_task, (void *)(intptr_t)9) == 0,
          "als_group_submit");
    CHECK(als_group_wait(g, 0) == ALS_ETIMEDOUT, "timeout 0 on a pending group");
    int first = -1;
    CHECK(als_group_first_error(g, &first) == 0 && first == 0, "nothing failed yet");
    gate_open();
    CHECK(als_group_wait(g, INT64_MAX) == ALS_ETASK, "a task failed");
    CHECK(als_group_first_error(g, &first) == 0 && first == 7,
          "the first non-zero result (one worker: in order)");
    CHECK(als_group_first_error(NULL, &first) == ALS_EINVAL && first == 7,
          "als_group_first_error(NULL, result)");
    CHECK(als_group_first_error(g, NULL) == ALS_EINVAL, "als_group_first_error(g, NULL)");
    als_group_free(g);
    als_group_free(NULL);
    als_pool_free(p);

    /* Cancelled tasks; a group freed with tasks pending. */
    p = blocked_pool();
    g = als_group_new();
    als_group_t *g2 = als_group_new();
    reset_counts();
    if (als_group_submit(g, p, count_task, NULL) != 0 ||
        als_group_submit(g2, p, count_task, NULL) != 0)
        abort();
    als_group_free(g2); /* its task still runs (or is cancelled) */
    struct canceller c;
    cancel_begin(&c, p);
    cancel_end(&c);
    CHECK(als_group_wait(g, -1) == ALS_ECANCELED && atomic_load(&calls) == 0,
          "a group whose tasks were cancelled");
    CHECK(als_group_submit(g, p, count_task, NULL) == ALS_ESHUTDOWN,
          "als_group_submit after shutdown");
    als_group_free(g);
    als_pool_free(p);
}

/* ---- the table -------------------------------------------------------------------------- */

struct row {
    const char *function;
    const char *arguments;
    void (*run)(void);
};

static const struct row rows[] = {
    { "als_strerror", "each code; unknown, INT_MIN, INT_MAX", row_strerror },
    { "als_version", "-", row_version },
    { "als_new", "NULL, zeroed, huge name, huge default", row_new },
    { "als_free", "NULL", row_free },
    { "als_name", "NULL", row_name },
    { "als_get", "NULL", row_get },
    { "als_has", "NULL, never bound, disabled", row_has },
    { "als_run", "NULL store, NULL fn, NULL and huge value", row_run },
    { "als_exit", "NULL store, NULL fn, unbound store", row_exit },
    { "als_enter_with", "NULL store, NULL value, replaced", row_enter_with },
    { "als_disable", "NULL, twice, rebound", row_disable },
    { "als_snapshot", "empty context", row_snapshot },
    { "als_snapshot_retain/release", "NULL; retained+released once; twice", row_snapshot_retain_release },
    { "als_snapshot_run", "NULL snapshot, NULL fn, huge arg", row_snapshot_run },
    { "als_scope_enter/leave", "NULL, not innermost, left twice", row_scope },
    { "als_bind/bound_call/bound_free", "NULL, huge and NULL arg", row_bind },
    { "als_resource_*", "NULL everywhere, huge type, freed first, enter", row_resource },
    { "als_execution/trigger_async_id", "top level", row_async_ids },
    { "als_thread_create", "NULL thread, NULL fn, NULL attr", row_thread_create },
    { "als_pool_new", "NULL, capacity 2^30+1 and UINT_MAX, 1, huge name", row_pool_new },
    { "als_submit/submit_task", "NULL pool, fn, task; huge arg; shut down", row_submit },
    { "als_pool_drain", "NULL, own worker, idle, shut down", row_drain },
    { "als_pool_shutdown", "NULL, unknown how, twice, CANCEL after DRAIN", row_shutdown },
    { "als_pool_free", "NULL, own worker, no shutdown, shut down", row_pool_free },
    { "als_pool_stats_get", "NULL pool, NULL out, shut down", row_stats },
    { "als_pool_current", "outside, in a task", row_pool_current },
    { "als_submit_after", "NULL, delay 0 and UINT64_MAX, shut down", row_submit_after },
    { "als_submit_future", "NULL pool, fn, out; shut down", row_submit_future },
    { "als_future_wait", "NULL, timeouts 0, 1us, <0, INT64_MIN/MAX, cancelled", row_future_wait },
    { "als_future_then", "NULL each, shut down, done, cancelled", row_future_then },
    { "als_future_release", "NULL, before completion", row_future_release },
    { "als_group_*", "NULL each, empty, timeout 0, failed, cancelled, freed", row_group },
};

static void *row_main(void *arg)
{
    ((const struct row *)arg)->run();
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "badinput", 1.0, NULL);
    pthread_mutex_init(&gate.mu, NULL);
    pthread_cond_init(&gate.cv, NULL);
    uint64_t passes = 0;
    size_t n = sizeof rows / sizeof rows[0];
    /* Once, or over and over for as long as asked. */
    do {
        for (size_t i = 0; i < n; i++) {
            uint64_t before = stress_failures();
            pthread_t t;
            if (pthread_create(&t, NULL, row_main, (void *)&rows[i]))
                abort();
            pthread_join(t, NULL);
            if (passes == 0)
                printf("  %-34s %-52s %s\n", rows[i].function, rows[i].arguments,
                       stress_failures() == before ? "ok" : "FAILED");
        }
        passes++;
    } while (stress.seconds_given && stress_time_left());
    stress_figure("functions (rows)", "%zu", n);
    stress_figure("passes over the table", "%" PRIu64, passes);
    pthread_cond_destroy(&gate.cv);
    pthread_mutex_destroy(&gate.mu);
    return stress_finish();
}
