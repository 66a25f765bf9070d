/*
 * The reference baseline for bench/pool: a straightforward thread pool of
 * the kind most C code bases write for themselves. Fixed worker threads, one
 * FIFO (a growable ring of {fn, arg}) under one mutex, a condition variable
 * that idle workers sleep on, and a wait-all.
 *
 * It is meant to be an honest, reasonably written version of the obvious
 * design, not a straw man: no allocation per task (the ring grows by
 * doubling and is reused), a signal only when a worker is actually asleep,
 * and a worker finishing a task takes the next one under the same lock
 * acquisition that records the completion.
 */
#ifndef ALS_BENCH_MUTEX_POOL_H
#define ALS_BENCH_MUTEX_POOL_H

typedef struct mutex_pool mutex_pool_t;
typedef int (*mutex_pool_fn)(void *arg);

/* Starts `threads` workers (at least 1). NULL on failure. */
mutex_pool_t *mutex_pool_new(unsigned threads);

/* Queues fn(arg); callable from any thread, including the pool's own tasks.
 * Returns 0, or -1 if the queue could not grow (out of memory). */
int mutex_pool_submit(mutex_pool_t *pool, mutex_pool_fn fn, void *arg);

/* Waits until the queue is empty and no task is running: every task
 * submitted before the call, and everything those tasks submitted, has
 * finished. Must not be called from one of the pool's workers. */
void mutex_pool_wait(mutex_pool_t *pool);

/* Waits for all tasks, stops the workers and frees the pool. NULL: no-op. */
void mutex_pool_free(mutex_pool_t *pool);

#endif /* ALS_BENCH_MUTEX_POOL_H */
