#include "baseline_mutex_pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

struct item {
    mutex_pool_fn fn;
    void *arg;
};

struct mutex_pool {
    pthread_mutex_t lock;
    pthread_cond_t work;     /* signalled when a task is queued or on stop */
    pthread_cond_t idle;     /* broadcast when pending reaches zero */
    struct item *ring;       /* capacity a power of two */
    size_t cap, head, count; /* FIFO: items ring[head .. head+count) mod cap */
    size_t pending;          /* queued + running: what mutex_pool_wait waits for */
    unsigned sleeping;       /* workers blocked on `work` */
    unsigned waiters;        /* threads blocked on `idle` */
    bool stop;
    unsigned nthreads;
    pthread_t threads[];
};

/* Doubles the ring, keeping FIFO order. Called with the lock held. */
static int grow(struct mutex_pool *p)
{
    size_t ncap = p->cap ? p->cap * 2 : 1024;
    struct item *r = malloc(ncap * sizeof *r);
    if (!r)
        return -1;
    for (size_t i = 0; i < p->count; i++)
        r[i] = p->ring[(p->head + i) & (p->cap - 1)];
    free(p->ring);
    p->ring = r;
    p->cap = ncap;
    p->head = 0;
    return 0;
}

static void *worker(void *arg)
{
    struct mutex_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->count == 0 && !p->stop) {
            p->sleeping++;
            pthread_cond_wait(&p->work, &p->lock);
            p->sleeping--;
        }
        if (p->count == 0) /* stop, and nothing left to run */
            break;
        struct item it = p->ring[p->head];
        p->head = (p->head + 1) & (p->cap - 1);
        p->count--;
        pthread_mutex_unlock(&p->lock);

        it.fn(it.arg);

        /* Record the completion and, in the same critical section, loop
         * round to take the next task: one lock round trip per task. */
        pthread_mutex_lock(&p->lock);
        if (--p->pending == 0 && p->waiters)
            pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

mutex_pool_t *mutex_pool_new(unsigned threads)
{
    if (threads == 0)
        threads = 1;
    struct mutex_pool *p = calloc(1, sizeof *p + threads * sizeof p->threads[0]);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    if (grow(p) != 0)
        goto fail;
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            p->nthreads = i;
            mutex_pool_free(p);
            return NULL;
        }
    }
    p->nthreads = threads;
    return p;
fail:
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return NULL;
}

int mutex_pool_submit(mutex_pool_t *p, mutex_pool_fn fn, void *arg)
{
    pthread_mutex_lock(&p->lock);
    if (p->count == p->cap && grow(p) != 0) {
        pthread_mutex_unlock(&p->lock);
        return -1;
    }
    p->ring[(p->head + p->count) & (p->cap - 1)] = (struct item){fn, arg};
    p->count++;
    p->pending++;
    /* Wake one sleeper only if there is one: a busy pool pays no syscall. */
    if (p->sleeping)
        pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void mutex_pool_wait(mutex_pool_t *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->pending) {
        p->waiters++;
        pthread_cond_wait(&p->idle, &p->lock);
        p->waiters--;
    }
    pthread_mutex_unlock(&p->lock);
}

void mutex_pool_free(mutex_pool_t *p)
{
    if (!p)
        return;
    mutex_pool_wait(p);
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p->ring);
    free(p);
}
