/* Futures and continuations.
 *
 * A future completes once, as DONE with a result or CANCELLED. Its
 * continuations sit on a lock-free list that completion swaps for a "done"
 * mark: als_future_then either links its continuation before that, and
 * completion submits it, or finds the mark and submits it itself. Every
 * continuation runs as a pool task inside the context captured when `then`
 * was called (a promise reaction's rule), never synchronously.
 *
 * References: the caller's handle, plus one held by whatever will complete
 * the future (its task until the task has ended, or the continuation
 * record of its source), so a handle may be released at any time from any
 * thread. Cancellation spreads
 * to continuations iteratively: a chain of a million thens cannot overflow
 * the stack. */
#include "compose.h"
#include "tsan.h"

#include <assert.h>

enum { PENDING = 0, DONE = 1, CANCELLED = 2 };
enum { NOT_STARTED = 0, STARTED = 1, DROPPED = 2, ENDED = 3 };

struct cont {
    struct cont *next;
    struct als_future *target;   /* completed by this continuation (1 ref) */
    als_pool_t *pool;            /* 1 ref: a freed pool stays readable */
    struct als_snapshot *frame;  /* captured at als_future_then (1 ref) */
    uint64_t trigger_id;         /* execution id of the caller of then */
};

#define CONTS_DONE ((struct cont *)(uintptr_t)1)

struct als_future {
    _Atomic uint32_t refs;
    _Atomic uint32_t state;
    _Atomic uint32_t seq;         /* futex word for waiters */
    _Atomic uint32_t waiting;
    _Atomic(struct cont *) conts; /* CONTS_DONE once completed */
    _Atomic uint32_t settled;     /* settle() ran (it runs once) */
    _Atomic uint32_t start;       /* its task: NOT_STARTED, STARTED, DROPPED
                                     (als_future_cancel) or ENDED */
    als_fn fn;
    void *arg;                    /* a continuation's: its source's result */
    void *result;
};

static_assert(sizeof(struct als_future) <= ALS__BLOCK_SIZE, "future record too big");
static_assert(sizeof(struct cont) <= ALS__BLOCK_SIZE, "continuation record too big");

static als_future_t *future_new(als_fn fn, void *arg)
{
    als_future_t *f = als__block_alloc();
    if (!f)
        return NULL;
    atomic_init(&f->refs, 2); /* the caller's handle + its completer */
    atomic_init(&f->state, PENDING);
    atomic_init(&f->seq, 0);
    atomic_init(&f->waiting, 0);
    atomic_init(&f->conts, NULL);
    atomic_init(&f->settled, 0);
    atomic_init(&f->start, NOT_STARTED);
    f->fn = fn;
    f->arg = arg;
    f->result = NULL;
    return f;
}

void als_future_release(als_future_t *f)
{
    if (f && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        als__block_free(f);
}

/* Settles f and returns its continuations, oldest first; NULL if it was
 * settled already (als_future_cancel settles before its task ends). */
static struct cont *settle(als_future_t *f, uint32_t state, void *result)
{
    /* Relaxed: only who settles is decided here; what it writes is
     * published below. */
    if (atomic_exchange_explicit(&f->settled, 1, memory_order_relaxed))
        return NULL;
    als__hb_release(&f->result); /* to wait and to a later then */
    f->result = result;
    atomic_store_explicit(&f->state, state, memory_order_seq_cst);
    /* acq_rel: continuations linked before are ours to run; a then() that
     * sees the mark afterwards sees the result. */
    struct cont *list = atomic_exchange_explicit(&f->conts, CONTS_DONE, memory_order_acq_rel);
    als__hb_acquire(&f->conts); /* from then: its caller's writes, for c */
    als__wake_waiters(&f->seq, &f->waiting);
    struct cont *fifo = NULL;
    while (list) {
        struct cont *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    return fifo;
}

/* Cancels each continuation in `work` and, transitively, theirs. */
static void cancel_all(struct cont *work)
{
    while (work) {
        struct cont *c = work;
        struct cont *more = settle(c->target, CANCELLED, NULL);
        work = c->next;
        if (more) { /* depth-first, iteratively */
            struct cont *tail = more;
            while (tail->next)
                tail = tail->next;
            tail->next = work;
            work = more;
        }
        als__frame_release(c->frame);
        als_future_release(c->target);
        als__pool_unref(c->pool);
        als__block_free(c);
    }
}

static int future_run(void *f);
static void future_done(void *f, int rc, bool cancelled);
static bool future_admit(void *f);
static const struct als__task_hooks future_hooks = { .done = future_done, .admit = future_admit };

/* Submits continuation c with its source's result; the task takes over
 * c's references. On failure the target is cancelled (a pool freed since
 * then is shut down: its memory is still ours). `in_then`: called by
 * als_future_then itself, which must never run the continuation: a full
 * pool's continuation goes to the timer thread instead. */
static int cont_submit(struct cont *c, void *result, bool in_then)
{
    c->target->arg = result;
    struct als__spec sp = {
        .fn = future_run, .arg = c->target, .frame = c->frame,
        .hooks = &future_hooks, .hook_ctx = c->target,
        .trigger_id = c->trigger_id, .no_reject = true,
    };
    struct als__task *t;
    int rc = als__task_new(c->pool, &sp, &t); /* takes the frame in every case */
    if (!rc && in_then) {
        if (!als__task_try_push(c->pool, t) && (rc = als__timer_add(c->pool, t, 0)) != 0)
            als__task_discard(c->pool, t);
    } else if (!rc) {
        rc = als__task_queue(c->pool, t, true);
    }
    if (rc) {
        cancel_all(settle(c->target, CANCELLED, NULL));
        als_future_release(c->target);
    }
    als__pool_unref(c->pool);
    als__block_free(c);
    return rc;
}

static void complete(als_future_t *f, uint32_t state, void *result)
{
    struct cont *list = settle(f, state, result);
    if (state == CANCELLED) {
        cancel_all(list);
    } else {
        while (list) {
            struct cont *next = list->next;
            cont_submit(list, result, false);
            list = next;
        }
    }
}

/* A future's task: runs fn and completes the future inside the task's
 * context. Never fails: the pool's hook below sees the rest. */
static int future_run(void *f)
{
    als_future_t *fut = f;
    complete(fut, DONE, fut->fn(fut->arg));
    return 0;
}

/* The pool asks before the task starts: not if als_future_cancel came
 * first. */
static bool future_admit(void *f)
{
    uint32_t expect = NOT_STARTED;
    return atomic_compare_exchange_strong_explicit(&((als_future_t *)f)->start, &expect, STARTED,
                                                   memory_order_relaxed, memory_order_relaxed);
}

/* The task ended, and with it the completer's reference (held until now,
 * so that f is still ours here). Cancelled before it ran, or its thread
 * ended inside fn (rc ALS_ECANCELED): the future is cancelled, unless
 * als_future_cancel settled it already. */
static void future_done(void *ctx, int rc, bool cancelled)
{
    als_future_t *f = ctx;
    uint32_t was = atomic_exchange_explicit(&f->start, ENDED, memory_order_relaxed);
    if (was != DROPPED && (cancelled || rc))
        complete(f, CANCELLED, NULL);
    als_future_release(f);
}

int als_future_cancel(als_future_t *f)
{
    if (!f)
        return ALS_EINVAL;
    uint32_t expect = NOT_STARTED;
    if (!atomic_compare_exchange_strong_explicit(&f->start, &expect, DROPPED,
                                                 memory_order_relaxed, memory_order_relaxed))
        return ALS_EINVAL; /* started, ended, or cancelled before */
    /* Settled now (waiters wake, continuations are cancelled); the task,
     * when the pool reaches it, is cancelled and drops the completer's
     * reference (future_done). */
    cancel_all(settle(f, CANCELLED, NULL));
    return 0;
}

int als_submit_future(als_pool_t *pool, als_fn fn, void *arg, als_future_t **out)
{
    if (!pool || !fn || !out)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP()); /* captures: see "Non-local exits" */
    als_future_t *f = future_new(fn, arg);
    if (!f)
        return ALS_ENOMEM;
    struct als__spec sp = {
        .fn = future_run, .arg = f, .hooks = &future_hooks, .hook_ctx = f,
    };
    int rc = als__submit(pool, &sp);
    if (rc) {
        als__block_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

int als_future_then(als_future_t *f, als_pool_t *pool, als_fn fn, als_future_t **out)
{
    if (!f || !pool || !fn || !out)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP());
    if (!als__pool_accepts(pool))
        return ALS_ESHUTDOWN;
    int rc = als__refuse_cancelled();
    if (rc)
        return rc;
    als_future_t *g = future_new(fn, NULL);
    struct cont *c = als__block_alloc();
    struct als_snapshot *frame = g && c ? als__capture() : NULL;
    if (!frame) {
        als__block_free(g);
        als__block_free(c);
        return ALS_ENOMEM;
    }
    als__pool_ref(pool);
    *c = (struct cont){
        .target = g, .pool = pool, .frame = frame,
        .trigger_id = als_execution_async_id(),
    };

    als__hb_release(&f->conts); /* to settle, which submits c */
    struct cont *head = atomic_load_explicit(&f->conts, memory_order_acquire);
    while (head != CONTS_DONE) {
        c->next = head;
        if (atomic_compare_exchange_weak_explicit(&f->conts, &head, c,
                                                  memory_order_release,
                                                  memory_order_acquire)) {
            *out = g; /* f's completion submits it */
            return 0;
        }
    }
    /* f has completed already: the continuation still runs asynchronously. */
    als__hb_acquire(&f->result);
    c->next = NULL;
    if (atomic_load_explicit(&f->state, memory_order_acquire) == CANCELLED) {
        cancel_all(c);
        *out = g;
        return 0;
    }
    /* The task takes the continuation's reference; ours is the caller's. */
    rc = cont_submit(c, f->result, true);
    if (rc) {
        als_future_release(g); /* cont_submit cancelled it and dropped its own */
        return rc;
    }
    *out = g;
    return 0;
}

static bool settled(void *f)
{
    return atomic_load_explicit(&((als_future_t *)f)->state, memory_order_seq_cst) != PENDING;
}

int als_future_wait(als_future_t *f, int64_t timeout_ns, void **result)
{
    if (!f)
        return ALS_EINVAL;
    if (als__runs_own(f))
        return ALS_EDEADLK;
    int rc = als__wait(settled, f, &f->seq, &f->waiting, als__deadline(timeout_ns));
    if (rc)
        return rc; /* ALS_ETIMEDOUT, or ALS_ECANCELED: the caller's scope */
    als__hb_acquire(&f->result);
    if (atomic_load_explicit(&f->state, memory_order_acquire) == CANCELLED)
        return ALS_ECANCELED;
    if (result)
        *result = f->result;
    return 0;
}
