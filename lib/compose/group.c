/* Task groups: "wait for all of these" (libdispatch groups, TBB task_group,
 * Go's errgroup). Tasks may add tasks to their own group while it runs.
 *
 * `pending` counts unfinished tasks; `refs` keeps the group alive for its
 * owner and for every pending task, so als_group_free may come first. */
#include "pool.h"
#include "tsan.h"

struct als_group {
    _Atomic uint64_t pending;
    _Atomic uint64_t refs;
    _Atomic int first_error;      /* first non-zero result, completion order */
    _Atomic bool cancelled;       /* some task was cancelled */
    _Atomic uint32_t seq;         /* futex word for waiters */
    _Atomic uint32_t waiting;
};

als_group_t *als_group_new(void)
{
    als_group_t *g = als__malloc(sizeof *g);
    if (!g)
        return NULL;
    atomic_init(&g->pending, 0);
    atomic_init(&g->refs, 1);
    atomic_init(&g->first_error, 0);
    atomic_init(&g->cancelled, false);
    atomic_init(&g->seq, 0);
    atomic_init(&g->waiting, 0);
    return g;
}

static void group_unref(als_group_t *g)
{
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
        als__free(g);
}

void als_group_free(als_group_t *g)
{
    if (g)
        group_unref(g);
}

/* A task of the group ended (ran, failed or was cancelled): its pool's
 * completion hook. */
static void group_task_end(void *ctx, int rc, bool cancelled)
{
    als_group_t *g = ctx;
    als__hb_release(&g->pending); /* to als_group_wait */
    if (rc) {
        int none = 0;
        atomic_compare_exchange_strong_explicit(&g->first_error, &none, rc,
                                                memory_order_relaxed,
                                                memory_order_relaxed);
    }
    if (cancelled)
        atomic_store_explicit(&g->cancelled, true, memory_order_relaxed);
    /* seq_cst: pairs with the waiter's announcement (see als__wake_waiters);
     * release also publishes first_error and cancelled to the waiter. */
    if (atomic_fetch_sub_explicit(&g->pending, 1, memory_order_seq_cst) == 1)
        als__wake_waiters(&g->seq, &g->waiting);
    group_unref(g);
}

int als_group_submit(als_group_t *g, als_pool_t *pool, als_task_fn fn, void *arg)
{
    if (!g || !pool || !fn)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP()); /* captures: see "Non-local exits" */
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g->pending, 1, memory_order_relaxed);
    struct als__spec sp = { .fn = fn, .arg = arg, .done = group_task_end, .done_ctx = g };
    int rc = als__submit(pool, &sp);
    if (rc) {
        if (atomic_fetch_sub_explicit(&g->pending, 1, memory_order_seq_cst) == 1)
            als__wake_waiters(&g->seq, &g->waiting);
        group_unref(g);
    }
    return rc;
}

static bool finished(void *g)
{
    return atomic_load_explicit(&((als_group_t *)g)->pending, memory_order_seq_cst) == 0;
}

int als_group_wait(als_group_t *g, int64_t timeout_ns)
{
    if (!g)
        return ALS_EINVAL;
    if (als__runs_own(g))
        return ALS_EDEADLK;
    if (als__wait(finished, g, &g->seq, &g->waiting, als__deadline(timeout_ns)))
        return ALS_ETIMEDOUT;
    als__hb_acquire(&g->pending);
    /* The task's own code stays out of the return value: it could be any
     * int, an ALS_E* code included (als_group_first_error gives it). */
    if (atomic_load_explicit(&g->first_error, memory_order_relaxed))
        return ALS_ETASK;
    return atomic_load_explicit(&g->cancelled, memory_order_relaxed) ? ALS_ECANCELED : 0;
}

int als_group_first_error(const als_group_t *g, int *result)
{
    if (!g || !result)
        return ALS_EINVAL;
    /* Relaxed: the value is all there is (set once, by a CAS); a caller
     * that waited got it ordered by the wait. */
    *result = atomic_load_explicit(&g->first_error, memory_order_relaxed);
    return 0;
}
