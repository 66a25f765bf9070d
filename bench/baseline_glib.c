/*
 * GLib's GThreadPool as a bench/pool backend.
 *
 * Used the way its documentation suggests: one pool per task function
 * (g_thread_pool_new(func, user_data, max_threads, exclusive = FALSE)),
 * each task pushed as its data pointer. GThreadPool has no "wait for all
 * tasks" short of freeing the pool, so completion is tracked the way a user
 * would: an atomic count of outstanding tasks, and a mutex + condition
 * variable signalled when it reaches zero (polling
 * g_thread_pool_unprocessed would cost the baseline CPU it does not need).
 */
#include "pool_backend.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>

struct glib_pool {
    GThreadPool *pool;
    bench_task_fn fn; /* the function of the current run */
    gint pending;     /* submitted, not finished */
    GMutex lock;
    GCond zero;
};

static void trampoline(gpointer data, gpointer user)
{
    struct glib_pool *p = user;
    p->fn(data);
    if (g_atomic_int_dec_and_test(&p->pending)) {
        /* Under the lock so the waiter cannot miss the signal between its
         * check and its wait. */
        g_mutex_lock(&p->lock);
        g_cond_signal(&p->zero);
        g_mutex_unlock(&p->lock);
    }
}

static void *glib_create(unsigned threads)
{
    struct glib_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    g_mutex_init(&p->lock);
    g_cond_init(&p->zero);
    GError *err = NULL;
    p->pool = g_thread_pool_new(trampoline, p, (gint)threads, FALSE, &err);
    if (!p->pool) {
        fprintf(stderr, "g_thread_pool_new: %s\n", err ? err->message : "failed");
        g_clear_error(&err);
        g_cond_clear(&p->zero);
        g_mutex_clear(&p->lock);
        free(p);
        return NULL;
    }
    return p;
}

static void glib_destroy(void *pool)
{
    struct glib_pool *p = pool;
    g_thread_pool_free(p->pool, FALSE, TRUE);
    g_cond_clear(&p->zero);
    g_mutex_clear(&p->lock);
    free(p);
}

static int glib_submit(void *pool, bench_task_fn fn, void *arg)
{
    struct glib_pool *p = pool;
    (void)fn; /* always p->fn: see pool_backend.h */
    g_atomic_int_inc(&p->pending);
    GError *err = NULL;
    if (!g_thread_pool_push(p->pool, arg, &err)) {
        g_clear_error(&err);
        g_atomic_int_add(&p->pending, -1);
        return -1;
    }
    return 0;
}

static void glib_run(void *pool, bench_task_fn fn, void (*body)(void *), void *ctx)
{
    struct glib_pool *p = pool;
    p->fn = fn; /* no task is running: published by the push's lock */
    body(ctx);
    g_mutex_lock(&p->lock);
    while (g_atomic_int_get(&p->pending) != 0)
        g_cond_wait(&p->zero, &p->lock);
    g_mutex_unlock(&p->lock);
}

#define BENCH_GLIB_VERSION G_STRINGIFY(GLIB_MAJOR_VERSION) "." G_STRINGIFY(GLIB_MINOR_VERSION)

const bench_backend bench_backend_glib = {
    .name = "glib",
    .label = "GLib " BENCH_GLIB_VERSION " GThreadPool (exclusive=FALSE), done-counter + GCond",
    .submitter_in_team = false,
    .create = glib_create,
    .destroy = glib_destroy,
    .submit = glib_submit,
    .run = glib_run,
};
