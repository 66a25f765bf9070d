/* Task records. They are not tied to a pool. They are allocated in slabs
 * that stay on a global list for the life of the process (memory bounded by
 * the peak number of tasks alive at once), so no record is ever
 * unreachable. Each thread keeps a cache; chains of records move between
 * threads through one global ring, so the outside submitter of spawn_many
 * and the workers that finish its tasks trade one ring operation per CHAIN
 * tasks, not per task.
 *
 * Uses: alloc.c, queue.c. */
#include "scheduler.h"

#define CHAIN 32        /* records handed between threads at once */
#define SLAB 64         /* records allocated at once */
#define CHAINS 4096     /* chains the global ring holds */

struct slab {
    struct slab *next;
    struct als__task tasks[SLAB];
};

static struct als__queue chains;
static pthread_once_t chains_once = PTHREAD_ONCE_INIT;
static bool chains_ok;
static pthread_key_t cache_key;
static pthread_mutex_t slabs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct slab *slabs;

static _Thread_local struct {
    struct als__task *list;
    unsigned n;
    bool hooked;
} cache __attribute__((tls_model("initial-exec")));

/* A chain's length travels in its first record. */
static void chain_give(struct als__task *chain, unsigned n)
{
    chain->chain_n = n;
    if (!als__queue_push(&chains, chain)) {
        /* Ring full: the records stay on their slabs, unused. */
    }
}

static void cache_release(void *unused)
{
    (void)unused;
    if (cache.list)
        chain_give(cache.list, cache.n);
    cache.list = NULL;
    cache.n = 0;
    cache.hooked = false;
}

static void chains_init(void)
{
    chains_ok = als__queue_init(&chains, CHAINS) == 0 &&
                pthread_key_create(&cache_key, cache_release) == 0;
}

bool als__tasks_init(void)
{
    pthread_once(&chains_once, chains_init);
    return chains_ok;
}

static struct als__task *slab_new(void)
{
    struct slab *sl = als__malloc(sizeof *sl);
    if (!sl)
        return NULL;
    pthread_mutex_lock(&slabs_mu);
    sl->next = slabs;
    slabs = sl;
    pthread_mutex_unlock(&slabs_mu);
    for (unsigned i = 1; i < SLAB - 1; i++)
        sl->tasks[i].next = &sl->tasks[i + 1];
    sl->tasks[SLAB - 1].next = cache.list;
    cache.list = &sl->tasks[1];
    cache.n += SLAB - 1;
    return &sl->tasks[0];
}

struct als__task *als__task_alloc(void)
{
    struct als__task *t = cache.list;
    if (!t) {
        t = als__queue_pop(&chains);
        if (!t)
            return slab_new();
        cache.n = t->chain_n;
    }
    if (ALS__UNLIKELY(!cache.hooked)) /* returned when the thread exits */
        cache.hooked = pthread_setspecific(cache_key, &cache) == 0;
    cache.list = t->next;
    cache.n--;
    return t;
}

void als__task_recycle(struct als__task *t)
{
    if (ALS__UNLIKELY(!cache.hooked))
        cache.hooked = pthread_setspecific(cache_key, &cache) == 0;
    t->next = cache.list;
    cache.list = t;
    if (++cache.n < 2 * CHAIN)
        return;
    /* Hand CHAIN records to whoever allocates without a cache. */
    struct als__task *last = cache.list;
    for (unsigned i = 1; i < CHAIN; i++)
        last = last->next;
    struct als__task *chain = cache.list;
    cache.list = last->next;
    last->next = NULL;
    cache.n -= CHAIN;
    chain_give(chain, CHAIN);
}

/* Small records of the composition layer (futures, continuations) share
 * the task records' recycling: same size class, same caches. */
void *als__block_alloc(void)
{
    return als__tasks_init() ? als__task_alloc() : NULL;
}

void als__block_free(void *p)
{
    if (p)
        als__task_recycle(p);
}

/* Held across fork() (pool.c): the child can still allocate records. */
void als__tasks_fork_lock(void)
{
    pthread_mutex_lock(&slabs_mu);
}

void als__tasks_fork_unlock(void)
{
    pthread_mutex_unlock(&slabs_mu);
}
