/* Helpers shared by the pool, delay, future and group tests. Include
 * after <cmocka.h>, "als.h" and "gate.h". */
#ifndef ALS_TEST_POOL_HELPERS_H
#define ALS_TEST_POOL_HELPERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

/* A task that waits at the gate `arg` until the test opens it. */
static inline int gate_task(void *arg)
{
    gate_pass(arg);
    return 0;
}

static inline int noop_task(void *arg)
{
    (void)arg;
    return 0;
}

/* A value of a destroy-owning store that counts its destroys. */
struct dval {
    _Atomic int destroyed;
};

static inline void dval_destroy(void *v)
{
    atomic_fetch_add(&((struct dval *)v)->destroyed, 1);
}

static inline void assert_destroyed_once(struct dval *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&v[i].destroyed) != 1)
            fail_msg("value %zu destroyed %d times", i, atomic_load(&v[i].destroyed));
}

static inline void get_stats(const als_pool_t *p, als_pool_stats *s)
{
    memset(s, 0xab, sizeof *s);
    assert_int_equal(als_pool_stats_get(p, s), 0);
}

/* Nothing accepted was lost, and the pool is quiescent. */
static inline void assert_balanced(const als_pool_stats *s)
{
    if (s->submitted != s->completed + s->failed + s->cancelled)
        fail_msg("submitted %llu != completed %llu + failed %llu + cancelled %llu",
                 (unsigned long long)s->submitted, (unsigned long long)s->completed,
                 (unsigned long long)s->failed, (unsigned long long)s->cancelled);
    assert_int_equal(s->queued, 0);
    assert_int_equal(s->running, 0);
}

/* Holds n of the pool's workers at `g` (a fresh gate): returns once n
 * tasks wait there, each on a worker of its own. */
static inline void block_workers(als_pool_t *p, struct gate *g, int n)
{
    gate_init(g);
    for (int i = 0; i < n; i++)
        assert_int_equal(als_submit(p, gate_task, g), 0);
    gate_await_arrivals(g, n);
}

/* Holds a 1-thread pool's only worker at `g`. */
static inline void block_pool(als_pool_t *p, struct gate *g)
{
    block_workers(p, g, 1);
}

/* A shutdown (`how`) of a pool whose workers wait at `g`: a helper
 * submits probe tasks until the pool refuses (the shutdown has begun),
 * then opens the gate; with CANCEL every probe it got in is cancelled, with
 * DRAIN each runs. Returns how many probes got in. */
struct opener {
    als_pool_t *pool;
    struct gate *gate;
    int probes;
    int last_rc;
};

static inline void *opener_main(void *arg)
{
    struct opener *o = arg;
    for (;;) {
        int rc = als_submit(o->pool, noop_task, NULL);
        if (rc != 0) {
            o->last_rc = rc;
            break;
        }
        o->probes++;
    }
    gate_open(o->gate);
    return NULL;
}

static inline int shutdown_gated(als_pool_t *p, struct gate *g, int how)
{
    struct opener o = {p, g, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, opener_main, &o), 0);
    assert_int_equal(als_pool_shutdown(p, how), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(o.last_rc, ALS_ESHUTDOWN);
    return o.probes;
}

static inline int cancel_shutdown_gated(als_pool_t *p, struct gate *g)
{
    return shutdown_gated(p, g, ALS_SHUTDOWN_CANCEL);
}

#endif
