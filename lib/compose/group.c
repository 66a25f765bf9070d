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
    _Atomic bool succeeded;       /* FIRST_SUCCESS: a task returned 0 */
    _Atomic uint32_t seq;         /* futex word for waiters */
    _Atomic uint32_t waiting;
    enum als_group_policy policy;
    als_cancel_t *scope;          /* the group's own: its tasks run in it */
};

als_group_t *als_group_new_policy(enum als_group_policy policy)
{
    if (policy != ALS_GROUP_WAIT_ALL && policy != ALS_GROUP_FAIL_FAST &&
        policy != ALS_GROUP_FIRST_SUCCESS)
        return NULL;
    als_group_t *g = als__malloc(sizeof *g);
    if (!g)
        return NULL;
    /* A child of the caller's scope: cancelled with it, never later. */
    g->scope = als_cancel_new(-1);
    if (!g->scope) {
        als__free(g);
        return NULL;
    }
    atomic_init(&g->pending, 0);
    atomic_init(&g->refs, 1);
    atomic_init(&g->first_error, 0);
    atomic_init(&g->cancelled, false);
    atomic_init(&g->succeeded, false);
    atomic_init(&g->seq, 0);
    atomic_init(&g->waiting, 0);
    g->policy = policy;
    return g;
}

als_group_t *als_group_new(void)
{
    return als_group_new_policy(ALS_GROUP_WAIT_ALL);
}

static void group_unref(als_group_t *g)
{
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) {
        als_cancel_release(g->scope);
        als__free(g);
    }
}

int als_group_cancel(als_group_t *g)
{
    return g ? als_cancel(g->scope) : ALS_EINVAL;
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
    /* The policies: the first failure, or the first success, cancels the
     * group's scope, so its tasks not yet started are cancelled. */
    if (g->policy == ALS_GROUP_FAIL_FAST && rc) {
        als_cancel(g->scope);
    } else if (g->policy == ALS_GROUP_FIRST_SUCCESS && !rc && !cancelled) {
        atomic_store_explicit(&g->succeeded, true, memory_order_relaxed);
        als_cancel(g->scope);
    }
    /* seq_cst: pairs with the waiter's announcement (see als__wake_waiters);
     * release also publishes first_error and cancelled to the waiter. */
    if (atomic_fetch_sub_explicit(&g->pending, 1, memory_order_seq_cst) == 1)
        als__wake_waiters(&g->seq, &g->waiting);
    group_unref(g);
}

static const struct als__task_hooks group_hooks = { .done = group_task_end };

int als_group_submit(als_group_t *g, als_pool_t *pool, als_task_fn fn, void *arg)
{
    if (!g || !pool || !fn)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP()); /* captures: see "Non-local exits" */
    /* Inside the group's scope: a cancelled group takes no more tasks. */
    if (als__cancel_is_cancelled(g->scope))
        return ALS_ECANCELED;
    struct als_snapshot *frame = als__cancel_capture(g->scope);
    if (!frame)
        return ALS_ENOMEM;
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g->pending, 1, memory_order_relaxed);
    struct als__spec sp = {
        .fn = fn, .arg = arg, .frame = frame, .hooks = &group_hooks, .hook_ctx = g,
    };
    int rc = als__submit(pool, &sp); /* takes the frame in every case */
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
    int rc = als__wait(finished, g, &g->seq, &g->waiting, als__deadline(timeout_ns));
    if (rc)
        return rc; /* ALS_ETIMEDOUT, or ALS_ECANCELED: the caller's scope */
    als__hb_acquire(&g->pending);
    if (g->policy == ALS_GROUP_FIRST_SUCCESS &&
        atomic_load_explicit(&g->succeeded, memory_order_relaxed))
        return 0;
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
