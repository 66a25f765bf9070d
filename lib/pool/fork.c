/* Pools and fork().
 *
 * A fork() child has one thread, the one that forked: no pool created
 * before has workers there, and its locks may be held by threads that are
 * gone. The child handler marks every live pool: it refuses work (STOPPED,
 * so every submit path answers ALS_ESHUTDOWN), drain and shutdown return at
 * once, and als_pool_free releases the memory without joining or touching
 * its locks. The record slabs' lock is held across fork, so the child can
 * still allocate records.
 *
 * Uses: task.c (the record slabs' lock). */
#include "scheduler.h"

static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static als_pool_t *pools;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static bool fork_ok;

static void fork_prepare(void)
{
    pthread_mutex_lock(&pools_mu);
    als__tasks_fork_lock();
}

static void fork_parent(void)
{
    als__tasks_fork_unlock();
    pthread_mutex_unlock(&pools_mu);
}

static void fork_child(void)
{
    for (als_pool_t *p = pools; p; p = p->reg_next) {
        p->forked = true;
        atomic_store_explicit(&p->state, STOPPED, memory_order_relaxed);
    }
    fork_parent();
}

static void fork_init(void)
{
    fork_ok = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
}

bool als__fork_init(void)
{
    pthread_once(&fork_once, fork_init);
    return fork_ok;
}

void als__pool_list(als_pool_t *pool)
{
    pthread_mutex_lock(&pools_mu);
    pool->reg_next = pools;
    if (pools)
        pools->reg_prev = &pool->reg_next;
    pool->reg_prev = &pools;
    pools = pool;
    pthread_mutex_unlock(&pools_mu);
}

/* reg_prev is read under the lock too: a pool created meanwhile writes the
 * head pool's reg_prev (tsan: stress_pinned). NULL: never listed. */
void als__pool_unlist(als_pool_t *pool)
{
    pthread_mutex_lock(&pools_mu);
    if (pool->reg_prev) {
        *pool->reg_prev = pool->reg_next;
        if (pool->reg_next)
            pool->reg_next->reg_prev = pool->reg_prev;
    }
    pthread_mutex_unlock(&pools_mu);
}
