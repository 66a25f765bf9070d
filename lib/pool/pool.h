/* Pool internals shared by pool.c (workers, submit, lifecycle), timer.c
 * (delayed tasks), future.c and group.c (composition). See pool.c's top
 * comment for the design. */
#ifndef ALS_POOL_H
#define ALS_POOL_H

#include "internal.h"
#include "queue.h"

#include <pthread.h>

#define DEFAULT_CAPACITY 4096u
#define MAX_CAPACITY (1u << 30)
#define LIFO_MAX 32     /* LIFO-slot tasks in a row before looking at the ring */
#define BATCH 64        /* tasks a worker may finish before publishing */
#define SPIN 64         /* empty polls before parking (about 20-50 us) */
#define POLL_PAUSES 32  /* pauses between two polls of the ring */
#define POP_BATCH 4     /* ring tasks a worker may take with one claim */
#define INLINE_PER_WORKER 64 /* ring backlog per worker that makes a worker's
                                submit run the task at once (submit_inline) */
#define INLINE_STACK (64 * 1024) /* stack such inline runs may use, at most */

enum als__pool_state { RUNNING = 0, DRAINING = 1, CANCELLING = 2, STOPPED = 3 };

struct als_future;
struct als_group;

struct task {
    struct task *next;            /* free-list link; while running: the
                                     task it runs inside (worker.cur) */
    unsigned chain_n;             /* records in a free chain (first record) */
    unsigned gen;                 /* drain generation (0 or 1, see drain) */
    als_task_fn fn;               /* NULL for a future's task */
    void *arg;
    void (*cancel)(void *arg);
    struct als_snapshot *frame;   /* one reference, consumed by the worker */
    uint64_t trigger_id;
    struct als_future *future;    /* completes with the result, or NULL */
    struct als_group *group;      /* told when the task ends, or NULL */
};

struct worker {
    _Alignas(ALS__CACHELINE)
    /* Written by this worker's thread only (stats read them racily).
     * Submitted and done are counted per drain generation. */
    _Atomic uint64_t submitted[2], started, done[2], failed, cancelled;
    _Atomic uint64_t parks, wakeups, submitter_wakeups; /* see count_wake */
    _Atomic uint32_t wake;        /* futex word this worker parks on */
    als_pool_t *pool;
    struct als_snapshot *held;    /* deferred frame references (task_finish) */
    uint32_t held_n;
    uint32_t done_pending[2];     /* finished tasks not yet counted in done */
    unsigned gen;                 /* generation of the innermost running task */
    struct task *next;            /* LIFO slot: this thread only */
    unsigned streak;              /* LIFO-slot tasks taken in a row */
    uintptr_t inline_floor;       /* inline runs only above this stack address */
    unsigned running;             /* tasks running on this thread's stack */
    struct task *cur;             /* innermost of them with a record (a
                                     list through task.next), or NULL */
    unsigned inlined[2];          /* of them, run by submit_inline, per
                                     generation (no record) */
    struct task *batch[POP_BATCH]; /* taken off the ring, not yet run */
    unsigned batch_i, batch_n;    /* batch[batch_i..batch_n) remain */
    struct als_snapshot *kept;    /* frame `ks` entered (a reference), or NULL */
    struct als__scope ks;         /* kept open across top-level tasks of one
                                     frame (task_run_top) */
    unsigned index;
    pthread_t thread;             /* under pool.stop_mu once started: a
                                     worker whose thread ended inside a
                                     task is replaced (worker_unwound) */
    bool claimed;                 /* a shutdown is joining `thread` */
};

/* Delayed tasks: a binary min-heap by deadline, one timer thread per pool,
 * started on the first als_submit_after. */
struct timer_entry {
    uint64_t deadline;            /* CLOCK_MONOTONIC ns */
    uint64_t seq;                 /* FIFO among equal deadlines */
    struct task *task;
};

struct als__timers {
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* CLOCK_MONOTONIC */
    struct timer_entry *heap;
    size_t len, cap;
    uint64_t seq;
    bool started, stop;
    pthread_t thread;
};

struct als_pool {
    struct als__queue q;          /* tasks */
    unsigned small_cap;           /* capacity 1 or 2: counted, see ring_push */
    _Atomic unsigned small_len;
    _Alignas(ALS__CACHELINE) _Atomic uint64_t ext_submitted[2]; /* outside
                                     submits, per drain generation */
    _Atomic uint64_t rejected;
    _Atomic uint64_t ext_wakeups, ext_submitter_wakeups; /* by other threads */
    _Alignas(ALS__CACHELINE) _Atomic uint32_t spinning; /* idle, not parked */
    _Atomic uint64_t *idle;       /* bit per parked worker (own lines) */
    unsigned idle_words;
    _Alignas(ALS__CACHELINE) _Atomic uint32_t room_armed; /* a BLOCK submitter waits
                                     (pool.c room_wake) */
    _Atomic uint32_t room_seq;
    _Atomic uint32_t drain_waiters;
    _Atomic uint32_t drain_seq;
    _Atomic int state;
    _Atomic uint32_t drain_gen;   /* bumped by each drain (under drain_mu);
                                     new tasks join generation drain_gen & 1 */
    pthread_mutex_t drain_mu;     /* one drain at a time */
    _Atomic uint32_t refs;        /* the owner's, and one per pending
                                     continuation (future.c): the memory
                                     outlives als_pool_free until those
                                     settle */
    bool forked;                  /* a fork() child's copy: no workers */
    als_pool_t *reg_next;         /* live pools (fork handling), under */
    als_pool_t **reg_prev;        /* pool.c's pools_mu; NULL: not listed */
    pthread_mutex_t stop_mu;      /* shutdown callers only */
    pthread_cond_t stop_cv;
    bool joining, joined;
    enum als_full_policy on_full;
    void (*on_error)(int task_result, void *arg, void *user);
    void *user;
    unsigned nthreads;
    unsigned room_mark;           /* wake blocked submitters at this length */
    unsigned inline_mark;         /* backlog that makes worker submits inline */
    struct worker *workers;
    struct als__timers timers;
    char name[16];
};

/* What to submit. `frame` NULL: capture the caller's context (or none with
 * ALS_TASK_DETACHED); otherwise a reference the task takes over. */
struct als__spec {
    als_task_fn fn;
    void *arg;
    void (*cancel)(void *arg);
    unsigned flags;
    struct als_snapshot *frame;
    struct als_future *future;
    struct als_group *group;
    uint64_t delay_ns;            /* > 0: a delayed task */
    uint64_t trigger_id;          /* 0: the caller's execution id */
    bool no_reject;               /* accepted earlier (a continuation):
                                     a full REJECT pool blocks or runs it
                                     inline instead of refusing */
    bool no_inline;               /* never run or wait inside the call
                                     (als_future_then): a full ring hands
                                     the task to the timer thread */
};

/* pool.c */
int als__submit(als_pool_t *pool, const struct als__spec *spec);
struct worker *als__own_worker(const als_pool_t *pool);
struct worker *als__self(void);
/* Pushes an accepted task to the ring, waiting for room whatever the
 * pool's state (the task was accepted: it must reach a worker). */
void als__push_accepted(als_pool_t *pool, struct task *t);
void als__wake_all(als_pool_t *pool);
/* Whether the calling thread is running, at any depth, a task of group `g`
 * or the task that completes future `f` (either may be NULL): waiting for
 * it here would wait for itself. */
bool als__runs_own(const struct als_group *g, const struct als_future *f);
/* One more reference to the pool's memory (not to its workers), and its
 * release: the last one frees the memory of a pool freed already. */
void als__pool_ref(als_pool_t *pool);
void als__pool_unref(als_pool_t *pool);
/* Waits until done(ctx) is true or the CLOCK_MONOTONIC deadline (ns, or
 * UINT64_MAX) passes, sleeping on `word` (a futex word the completer bumps
 * and wakes) while `*waiting` counts this waiter. A worker of a pool runs
 * its own pool's tasks meanwhile instead of sleeping, so a pool whose
 * threads all wait cannot deadlock. 0 or ALS_ETIMEDOUT. */
int als__wait(bool (*done)(void *), void *ctx, _Atomic uint32_t *word,
              _Atomic uint32_t *waiting, uint64_t deadline);
/* Wakes waiters of `word` (after the completer changed what done() reads). */
void als__wake_waiters(_Atomic uint32_t *word, _Atomic uint32_t *waiting);
uint64_t als__now_ns(void);
uint64_t als__deadline(int64_t timeout_ns);

/* A recycled record of at most ALS__BLOCK_SIZE bytes (NULL on failure);
 * free from any thread. */
#define ALS__BLOCK_SIZE sizeof(struct task)
void *als__block_alloc(void);
void als__block_free(void *p);

/* timer.c */
int als__timer_add(als_pool_t *pool, struct task *t, uint64_t delay_ns);
/* Shutdown: let the timer thread go once it has nothing left; join it. */
void als__timers_stop(als_pool_t *pool);
void als__timers_kick(als_pool_t *pool);
#ifdef ALS_FAULT_INJECTION
/* Test builds only: from now on every timer reads `now` (CLOCK_MONOTONIC
 * ns) as the time, so a test gives delayed tasks exact due times and makes
 * them come due when it chooses; 0 returns to the real clock. Process-wide;
 * kicks `pool`'s timer thread (NULL: none) to look again. */
void als__test_timer_clock(als_pool_t *pool, uint64_t now);
#endif

/* future.c / group.c: called by the worker when a task ends. */
void als__future_task(struct task *t);            /* runs the future's fn */
void als__future_cancelled(struct als_future *f);
void als__group_task_end(struct als_group *g, int rc, bool cancelled);

#endif
