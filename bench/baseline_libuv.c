/*
 * libuv's threadpool (uv_queue_work) as a bench/pool backend.
 *
 * libuv's threadpool is process-global: its size is read from
 * UV_THREADPOOL_SIZE once, when the first work request is queued. create()
 * sets it to the thread count before that; a second create() with another
 * count cannot resize the pool (bench/pool runs one thread count per
 * process, so this never happens there) and fails instead.
 *
 * uv_queue_work may only be called on the thread that runs the loop, and a
 * libuv loop is not thread-safe, so the backend owns a loop thread, as a
 * libuv program does. submit() from any other thread (the submitter, or a
 * task on a pool thread) appends the request to a mutex-protected list and
 * calls uv_async_send; the loop thread's async callback moves the list
 * into the pool with uv_queue_work. uv_async_send coalesces, so under load
 * one wake of the loop thread queues many requests. That extra hop is the
 * price of using libuv's pool from outside the loop, which is what the
 * scenarios do (tasks submit tasks from pool threads).
 *
 * The wait: completion callbacks (after_work_cb) run on the loop thread,
 * after a second hop from the worker back to the loop. Counting completion
 * there would add that hop to every run, so the task itself decrements an
 * outstanding-task counter at the end of its work callback, on the worker,
 * and signals a condition variable at zero: the same done-counter + condvar
 * as the GLib backend. The after_work callback only frees the request.
 * The loop thread is one more thread than `threads`; it sleeps in epoll
 * when there is nothing to hand over.
 */
#include "pool_backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

struct uv_task {
    uv_work_t req; /* first: the request pointer is the task pointer */
    bench_task_fn fn;
    void *arg;
    struct uv_task *next;
    struct uv_pool *pool;
};

struct uv_pool {
    uv_loop_t loop;
    uv_async_t wake; /* new tasks in `incoming` */
    uv_async_t stop; /* close everything and return from uv_run */
    pthread_t thread;
    pthread_mutex_t lock; /* guards incoming */
    struct uv_task *incoming, **tail;
    atomic_long pending; /* submitted, work callback not finished */
    pthread_mutex_t done_lock;
    pthread_cond_t done;
};

static unsigned uv_pool_size; /* the size libuv's pool was given, 0: none */

static void work_cb(uv_work_t *req)
{
    struct uv_task *t = (struct uv_task *)req;
    struct uv_pool *p = t->pool;
    t->fn(t->arg);
    if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
        /* Under the lock so the waiter cannot miss the signal between its
         * check and its wait. */
        pthread_mutex_lock(&p->done_lock);
        pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->done_lock);
    }
}

static void after_work_cb(uv_work_t *req, int status)
{
    (void)status;
    free(req);
}

static void wake_cb(uv_async_t *h)
{
    struct uv_pool *p = h->data;
    pthread_mutex_lock(&p->lock);
    struct uv_task *t = p->incoming;
    p->incoming = NULL;
    p->tail = &p->incoming;
    pthread_mutex_unlock(&p->lock);
    while (t) {
        struct uv_task *next = t->next;
        if (uv_queue_work(&p->loop, &t->req, work_cb, after_work_cb) != 0) {
            fprintf(stderr, "uv_queue_work failed\n");
            exit(1);
        }
        t = next;
    }
}

static void stop_cb(uv_async_t *h)
{
    struct uv_pool *p = h->data;
    uv_close((uv_handle_t *)&p->wake, NULL);
    uv_close((uv_handle_t *)&p->stop, NULL);
}

static void *loop_main(void *arg)
{
    struct uv_pool *p = arg;
    uv_run(&p->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void *uv_backend_create(unsigned threads)
{
    if (uv_pool_size && uv_pool_size != threads) {
        fprintf(stderr, "libuv: the threadpool already has %u threads\n", uv_pool_size);
        return NULL;
    }
    if (!uv_pool_size) {
        char n[16];
        snprintf(n, sizeof n, "%u", threads);
        setenv("UV_THREADPOOL_SIZE", n, 1);
        uv_pool_size = threads;
    }
    struct uv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->tail = &p->incoming;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->done_lock, NULL);
    pthread_cond_init(&p->done, NULL);
    if (uv_loop_init(&p->loop) != 0)
        goto fail;
    p->wake.data = p;
    p->stop.data = p;
    if (uv_async_init(&p->loop, &p->wake, wake_cb) != 0 ||
        uv_async_init(&p->loop, &p->stop, stop_cb) != 0 ||
        pthread_create(&p->thread, NULL, loop_main, p) != 0)
        goto fail; /* only on resource exhaustion: leaks the loop */
    return p;
fail:
    free(p);
    return NULL;
}

static void uv_backend_destroy(void *pool)
{
    struct uv_pool *p = pool;
    uv_async_send(&p->stop);
    pthread_join(p->thread, NULL);
    /* Runs the after_work callbacks still due, then closes. */
    uv_run(&p->loop, UV_RUN_DEFAULT);
    uv_loop_close(&p->loop);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->done_lock);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static int uv_backend_submit(void *pool, bench_task_fn fn, void *arg)
{
    struct uv_pool *p = pool;
    struct uv_task *t = malloc(sizeof *t);
    if (!t)
        return -1;
    t->fn = fn;
    t->arg = arg;
    t->next = NULL;
    t->pool = p;
    atomic_fetch_add_explicit(&p->pending, 1, memory_order_relaxed);
    pthread_mutex_lock(&p->lock);
    *p->tail = t;
    p->tail = &t->next;
    pthread_mutex_unlock(&p->lock);
    return uv_async_send(&p->wake) == 0 ? 0 : -1;
}

static void uv_backend_run(void *pool, bench_task_fn fn, void (*body)(void *), void *ctx)
{
    struct uv_pool *p = pool;
    (void)fn;
    body(ctx);
    pthread_mutex_lock(&p->done_lock);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
        pthread_cond_wait(&p->done, &p->done_lock);
    pthread_mutex_unlock(&p->done_lock);
}

#define BENCH_STR2(x) #x
#define BENCH_STR(x) BENCH_STR2(x)

const bench_backend bench_backend_libuv = {
    .name = "libuv",
    .label = "libuv " BENCH_STR(UV_VERSION_MAJOR) "." BENCH_STR(
        UV_VERSION_MINOR) " uv_queue_work (loop thread + uv_async_send), done-counter + condvar",
    .submitter_in_team = false,
    .create = uv_backend_create,
    .destroy = uv_backend_destroy,
    .submit = uv_backend_submit,
    .run = uv_backend_run,
};
