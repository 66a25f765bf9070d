/* The pool's internal API: what the layers above it (lib/compose/: futures,
 * groups, delayed tasks) may use. The pool knows nothing of them: a task
 * carries a completion hook (`done`, as libuv's work requests carry their
 * `done` callback), and a pool carries one attachment (timer.c's timer
 * thread) whose hooks it calls at shutdown and release. The scheduler's own
 * state (workers, queues, parking) is private to lib/pool/ (scheduler.h). */
#ifndef ALS_POOL_H
#define ALS_POOL_H

#include "internal.h"

/* A task's completion hook: called once when the task has ended, on the
 * thread that ran (or cancelled) it, after its frame references were
 * dropped. `rc` is fn's result (ALS_ECANCELED if the task's thread ended
 * inside it); `cancelled`: fn never ran (a CANCEL shutdown). */
typedef void (*als__done_fn)(void *ctx, int rc, bool cancelled);

/* What a layer above learns and decides about its tasks: one static table
 * per kind of task (future.c, group.c), so that a record keeps one
 * pointer for all of it. */
struct als__task_hooks {
    als__done_fn done;            /* required */
    /* Or NULL. Asked when the task is about to start: false cancels it
     * (its cancel callback runs, stats count it cancelled, `done` says
     * cancelled). Called once at most. */
    bool (*admit)(void *ctx);
};

/* A task record (lib/pool/task.c recycles them): one cache line, aligned.
 * Records sit side by side in slabs and pass between threads: at 80
 * unaligned bytes, a submitter filling one record wrote to the line a
 * worker was reading the previous one from (bench/pool spawn_many, one
 * outside submitter: false sharing on every task). */
struct als__task {
    _Alignas(ALS__CACHELINE)
    struct als__task *next;       /* free-list link; while running: the
                                     task it runs inside (worker.cur) */
    als_task_fn fn;
    void *arg;
    union {
        struct als_snapshot *frame; /* one reference, consumed by the worker */
        struct als__task *ahead;  /* free: a record further on in its
                                     cache's list, or NULL (task.c); only
                                     ever prefetched */
    };
    uint64_t trigger_id;
    const struct als__task_hooks *hooks; /* or NULL */
    union {
        void *hook_ctx;           /* with hooks: their argument */
        void (*cancel)(void *arg); /* without: the submitter's, or NULL */
    } u;
    unsigned chain_n;             /* records in a free chain (first record) */
    unsigned short gen;           /* drain generation (0 or 1, see drain) */
    bool check;                   /* its start looks at its frame's scope
                                     or asks `admit` (worker.c task_start):
                                     one byte to test while no scope exists */
};
_Static_assert(sizeof(struct als__task) == ALS__CACHELINE, "a task record is one line");

/* What to submit. `frame` NULL: capture the caller's context (or none with
 * ALS_TASK_DETACHED); otherwise a reference the task takes over (in every
 * case, failure included). */
struct als__spec {
    als_task_fn fn;
    void *arg;
    void (*cancel)(void *arg);
    unsigned flags;
    struct als_snapshot *frame;
    const struct als__task_hooks *hooks; /* or NULL; with hooks no cancel */
    void *hook_ctx;
    uint64_t trigger_id;          /* 0: the caller's execution id */
    bool no_reject;               /* accepted earlier (a continuation):
                                     a full REJECT pool blocks or runs it
                                     inline instead of refusing */
};

/* Cancellation (issue 15): a task whose scope (the one its frame carries)
 * is cancelled when it would start is cancelled instead, as a CANCEL
 * shutdown cancels it. A submit refuses with ALS_ECANCELED, queueing and
 * counting nothing, when the caller's own scope is cancelled already:
 * als__task_new checks the scope of every context it captures (after the
 * capture, where it costs least); submit_inline and a layer above that
 * captures a frame itself (als_future_then) apply als__refuse_cancelled()
 * (0 or ALS_ECANCELED) first. */
static inline int als__refuse_cancelled(void)
{
    struct als_cancel *c = als__cancel_current_scope();
    return ALS__UNLIKELY(c) && als__cancel_is_cancelled(c) ? ALS_ECANCELED : 0;
}

/* Accepts a task: counts it as submitted (drain and shutdown wait for it
 * from now on), allocates its record and captures the context. 0,
 * ALS_ESHUTDOWN or ALS_ENOMEM; on failure nothing is counted and the
 * spec's frame is released. The task must then be queued (als__task_queue,
 * als__task_try_push, als__task_push) or discarded. */
int als__task_new(als_pool_t *pool, const struct als__spec *spec, struct als__task **out);
/* Queues an accepted task as als_submit does (a worker's own submit goes
 * to its local queue; a full pool blocks, refuses or runs it inline by the
 * pool's policy). 0, or ALS_EFULL/ALS_ESHUTDOWN after discarding it. */
int als__task_queue(als_pool_t *pool, struct als__task *t, bool no_reject);
/* Queues it if there is room at once; false: still the caller's. */
bool als__task_try_push(als_pool_t *pool, struct als__task *t);
/* Queues it, waiting for room whatever the pool's state (it was accepted:
 * it must reach a worker, which cancels it if the pool is cancelling). */
void als__task_push(als_pool_t *pool, struct als__task *t);
/* Takes an accepted task back: uncounted, frame released, record freed. */
void als__task_discard(als_pool_t *pool, struct als__task *t);
/* als__task_new + als__task_queue. */
int als__submit(als_pool_t *pool, const struct als__spec *spec);

/* The acceptance rule, as als__task_new applies it. */
bool als__pool_accepts(const als_pool_t *pool);
/* Whether a CANCEL shutdown has begun. */
bool als__pool_cancelling(const als_pool_t *pool);
const char *als__pool_name(const als_pool_t *pool);

/* Whether the calling thread is running, at any depth, a task whose
 * hooks' context is `hook_ctx`: waiting for it here would wait for
 * itself. */
bool als__runs_own(const void *hook_ctx);

/* One more reference to the pool's memory (not to its workers), and its
 * release: the last one frees the memory of a pool freed already. */
void als__pool_ref(als_pool_t *pool);
void als__pool_unref(als_pool_t *pool);

/* The pool's one attachment (timer.c's delayed tasks). `kick`: a shutdown
 * began (read the state again); `stop`: the workers are gone, end and
 * join; `release`: free it (the pool's memory goes next). */
struct als__pool_ext {
    void (*kick)(void *ext);
    void (*stop)(void *ext);
    void (*release)(void *ext, bool forked); /* forked: in a fork() child,
                                     whose locks a gone thread may hold */
};
/* Returns the pool's attachment, creating it with make(pool) (NULL:
 * failed) the first time; `ops` are its hooks; make NULL: only looks.
 * Thread-safe. */
void *als__pool_ext(als_pool_t *pool, const struct als__pool_ext *ops,
                    void *(*make)(als_pool_t *pool));

/* Waits until done(ctx) is true or the CLOCK_MONOTONIC deadline (ns, or
 * UINT64_MAX) passes, sleeping on `word` (a futex word the completer bumps
 * and wakes) while `*waiting` counts this waiter. A worker of a pool runs
 * its own pool's tasks meanwhile instead of sleeping, so a pool whose
 * threads all wait cannot deadlock. Inside a cancellation scope it also
 * ends when the scope is cancelled (ALS_ECANCELED) or its deadline comes
 * first (ALS_ETIMEDOUT). 0, ALS_ETIMEDOUT or ALS_ECANCELED; 0 whenever
 * done(ctx) holds. */
int als__wait(bool (*done)(void *), void *ctx, _Atomic uint32_t *word,
              _Atomic uint32_t *waiting, uint64_t deadline);
/* Wakes waiters of `word` (after the completer changed what done() reads). */
void als__wake_waiters(_Atomic uint32_t *word, _Atomic uint32_t *waiting);
uint64_t als__now_ns(void);
uint64_t als__deadline(int64_t timeout_ns);

/* A recycled record of at most ALS__BLOCK_SIZE bytes (NULL on failure);
 * free from any thread. */
#define ALS__BLOCK_SIZE sizeof(struct als__task)
void *als__block_alloc(void);
void als__block_free(void *p);

#endif
