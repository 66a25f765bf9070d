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

#define CHAIN (ALS__CACHE_MAX / 2) /* records handed between threads at once */
#define SLAB 64         /* records allocated at once */
#define CHAINS 4096     /* chains the global ring holds */
#define TASK_AHEAD 8    /* records on that a chain's `ahead` points (4: as
                           good at 2 workers, 16: worse at 16; the eighth
                           pass in docs/performance.md) */

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

_Thread_local struct als__task_cache als__task_cache __attribute__((tls_model("initial-exec")));

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
    if (als__task_cache.list)
        chain_give(als__task_cache.list, als__task_cache.n);
    als__task_cache.list = NULL;
    als__task_cache.n = 0;
    als__task_cache.hooked = false;
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
    struct slab *sl = als__zalloc_aligned(sizeof *sl);
    if (!sl)
        return NULL;
    pthread_mutex_lock(&slabs_mu);
    sl->next = slabs;
    slabs = sl;
    pthread_mutex_unlock(&slabs_mu);
    for (unsigned i = 1; i < SLAB - 1; i++)
        sl->tasks[i].next = &sl->tasks[i + 1];
    sl->tasks[SLAB - 1].next = als__task_cache.list;
    als__task_cache.list = &sl->tasks[1];
    als__task_cache.n += SLAB - 1;
    return &sl->tasks[0];
}

/* The rest of als__task_alloc (scheduler.h): an empty cache, or a thread
 * whose cache is not yet returned at its exit. */
struct als__task *als__task_alloc_slow(void)
{
    struct als__task *t = als__task_cache.list;
    if (!t) {
        t = als__queue_pop(&chains);
        if (!t)
            return slab_new();
        als__task_cache.n = t->chain_n;
    }
    if (ALS__UNLIKELY(!als__task_cache.hooked)) /* returned when the thread exits */
        als__task_cache.hooked = pthread_setspecific(cache_key, &als__task_cache) == 0;
    als__task_cache.list = t->next;
    als__task_cache.n--;
    return t;
}

/* The rest of als__task_recycle (scheduler.h): t goes to a cache that
 * is full or not yet hooked. */
void als__task_recycle_slow(struct als__task *t)
{
    if (ALS__UNLIKELY(!als__task_cache.hooked))
        als__task_cache.hooked = pthread_setspecific(cache_key, &als__task_cache) == 0;
    t->next = als__task_cache.list;
    als__task_cache.list = t;
    if (++als__task_cache.n < ALS__CACHE_MAX)
        return;
    /* Hand CHAIN records to whoever allocates without a cache. Each learns
     * the record TASK_AHEAD places on in the chain (the last ones: none),
     * so that the thread allocating from it fetches lines that far ahead
     * (als__task_alloc). They are this thread's lines still: cheap. */
    struct als__task *last = als__task_cache.list, *lag = last;
    for (unsigned i = 1; i < CHAIN; i++) {
        last = last->next;
        if (i >= TASK_AHEAD) {
            lag->ahead = last;
            lag = lag->next;
        }
    }
    struct als__task *chain = als__task_cache.list;
    als__task_cache.list = last->next;
    last->next = NULL;
    als__task_cache.n -= CHAIN;
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
