/* The scheduler's shared state, private to lib/pool/. Layers inside the
 * pool, each file using only those before it:
 *
 *   task.c    task records and their per-thread caches
 *   queue.c   the Concurrency Kit ring (the only file that includes ck)
 *   park.c    futex words, the idle mask, parking and wake-ups
 *   count.c   submitted/finished counts per drain generation, in flight
 *   sched.c   where tasks wait: the shared ring, the workers' LIFO slots,
 *             own queues and inboxes (outside submits, sharded); stealing
 *   monitor.c hand-offs, limited to the workers that can run at once, and
 *             the monitor thread that wakes more for workers stuck in tasks
 *   worker.c  running tasks, the worker loop, waits that help
 *   fork.c    the live pools' registry, and what fork() does to them
 *   pool.c    accepting and submitting, pool lifecycle, stats
 *
 * A task's path: submit (pool.c: accept, capture) -> enqueue (sched.c) ->
 * wake (park.c) -> a worker takes it (sched.c) -> enters its frame, runs,
 * leaves (worker.c) -> releases its frame and record (worker.c, task.c) ->
 * completes (the task's `done` hook, count.c's finished count).
 */
#ifndef ALS_SCHEDULER_H
#define ALS_SCHEDULER_H

#include "pool.h"
#include "queue.h"

#include <pthread.h>

#define DEFAULT_CAPACITY 4096u
#define MAX_CAPACITY (1u << 30)
#define LIFO_MAX 32     /* LIFO-slot tasks in a row before looking at the ring */
#define BATCH 64        /* tasks a worker may finish before publishing */
#define SPIN_PAUSES 2048 /* pauses before parking (about 40 us) */
#define POLL_MIN 32     /* pauses between two polls of the queues, */
#define POLL_MAX 256    /* adapted between these (worker.c worker_spin) */
#define POP_BATCH 16    /* ring tasks a worker may take with one claim,
                           at most the share of a worker that can run
                           at once (sched.c ring_take): consecutive submits of one request
                           then run on one worker (bench/pool requests,
                           2 workers: 1.15x over 4; 32: 1.26x, but
                           spawn_many 0.95x; ninth pass) */
#define LOCAL_CAP 256   /* a worker's own queue (BLOCK pools, sched.c) */
#define STEAL_MAX (LOCAL_CAP / 2) /* tasks a thief takes at once, at most */
#define GUEST_SHARE_MIN 4 /* ring tasks from which a helping drain takes
                             half of them at once (sched.c ring_take) */
#define INBOX_CAP 64    /* an inbox for outside submits (sched.c) */
#define INBOX_GROUP 4   /* workers that can run at once, per inbox (pool.c) */
#define DEAL_RUN 8      /* outside submits dealt to one inbox before the next:
                           a line of its slots, which its workers then take
                           together (sched.c; one at a time: spawn_many and
                           ctx4 at 16 workers 1.2-1.3x slower, 32: no better) */
#define EXT_SHARDS 8    /* counters of outside submits (count.c) */
#define SHARED_TURN 61  /* every this many takes, the shared queue first
                           (Tokio's global_queue_interval) */
#define INLINE_PER_WORKER 64 /* ring backlog per worker that makes a worker's
                                submit run the task at once (submit_inline) */
#define INLINE_STACK (64 * 1024) /* stack such inline runs may use, at most */
#define ROOM_BACKSTOP_NS (50 * 1000 * 1000) /* a blocked submitter looks again
                                after this long (weakly ordered CPUs) */
#define HELP_NAP_NS (1000 * 1000) /* a helping waiter's nap between looks */
#define DRAIN_POLL_NS (1000 * 1000) /* a drain's re-check period (pool.c) */
#define DRAIN_SPIN 64   /* a drain's looks before it sleeps (pool.c) */
#define DRAIN_PAUSES 32 /* pauses between two of its looks */
#define MONITOR_TICK_NS (1000 * 1000) /* the armed monitor's looks (monitor.c) */

enum als__pool_state { RUNNING = 0, DRAINING = 1, CANCELLING = 2, STOPPED = 3 };

struct worker {
    _Alignas(ALS__CACHELINE)
    /* Written by this worker's thread only (stats read them racily).
     * Submitted and done are counted per drain generation. */
    _Atomic uint64_t submitted[2], started, done[2], failed, cancelled;
    _Atomic uint64_t parks, wakeups, submitter_wakeups; /* see count_wake */
    _Atomic uint64_t steals;      /* tasks taken from other workers' queues */
    _Atomic uint32_t wake;        /* futex word this worker parks on */
    als_pool_t *pool;
    struct als_snapshot *held;    /* deferred frame references (task_finish) */
    uint32_t held_n;
    uint32_t done_pending[2];     /* finished tasks not yet counted in done */
    uint32_t done_pending_n;      /* their sum (als__done_defer) */
    unsigned gen;                 /* generation of the innermost running task */
    struct als__task *next;       /* LIFO slot: this thread only */
    struct als__queue local;      /* its own tasks' older submits (sched.c):
                                     this thread pushes, anyone pops */
    struct als__queue *inbox;     /* its group's inbox (sched.c), or NULL */
    uint32_t rng;                 /* where stealing starts (xorshift) */
    unsigned poll;                /* pauses between polls (worker_spin) */
    unsigned tick;                /* takes, for the shared queue's turn */
    unsigned streak;              /* LIFO-slot tasks taken in a row */
    bool streaming;               /* takes several ring tasks at once
                                     (sched.c ring_take) */
    uintptr_t inline_floor;       /* inline runs only above this stack address */
    unsigned running;             /* tasks running on this thread's stack */
    struct als__task *cur;        /* innermost of them with a record (a
                                     list through task.next), or NULL */
    unsigned inlined[2];          /* of them, run by submit_inline, per
                                     generation (no record) */
    struct als__task *batch[POP_BATCH]; /* taken off the ring, not yet run */
    unsigned batch_i, batch_n;    /* batch[batch_i..batch_n) remain */
    struct als_snapshot *kept;    /* frame `ks` entered (a reference), or NULL */
    struct als__scope ks;         /* kept open across top-level tasks of one
                                     frame (worker.c task_run_top) */
    unsigned index;
    pthread_t thread;             /* under pool.stop_mu once started: a
                                     worker whose thread ended inside a
                                     task is replaced (worker_unwound) */
    bool claimed;                 /* a shutdown is joining `thread` */
};

struct als_pool {
    struct als__queue q;          /* tasks */
    bool locals;                  /* workers have their own queues (sched.c) */
    struct als__queue *inboxes;   /* [ninboxes]: outside submits (sched.c) */
    unsigned ninboxes;            /* 0: none */
    /* Outside submits per drain generation, summed on read: each outside
     * thread bumps the shard als__thread_hash() picks, so that outside
     * submitters do not all meet on one line (issue 12). */
    struct {
        _Alignas(ALS__CACHELINE) _Atomic uint64_t submitted[2];
    } ext_count[EXT_SHARDS];
    _Alignas(ALS__CACHELINE) _Atomic uint64_t rejected;
    _Atomic uint64_t ext_wakeups, ext_submitter_wakeups; /* by other threads */
    _Alignas(ALS__CACHELINE) _Atomic uint32_t spinning; /* searching: idle,
                                     not parked (at most search_max) */
    _Atomic uint32_t surplus;     /* idle workers that could not run beside
                                     the busy ones (als__workers_idle):
                                     surplus_plain, or surplus_guest while
                                     a helping drain runs tasks (worker.c) */
    uint32_t search_max;
    unsigned surplus_plain;       /* workers beyond the CPUs this process
                                     may run on, or 0 */
    unsigned surplus_guest;       /* the same with one CPU fewer */
    _Atomic uint64_t *idle;       /* bit per parked worker (own lines) */
    unsigned idle_words;
    _Alignas(ALS__CACHELINE) _Atomic uint32_t mon_state; /* monitor.c */
    _Atomic uint32_t mon_word;    /* futex word the monitor sleeps on */
    _Atomic bool mon_stop;
    bool mon_started;             /* a monitor runs: hand-offs are limited */
    pthread_t mon_thread;
    uint64_t *mon_last;           /* [nthreads], the monitor's own */
    bool *mon_woke;               /* [nthreads], the monitor's own */
    _Alignas(ALS__CACHELINE) _Atomic uint32_t room_armed; /* a BLOCK submitter
                                     waits (park.c room_wake) */
    _Atomic uint32_t room_seq;
    _Atomic uint32_t drain_waiters;
    _Atomic uint32_t drain_seq;
    _Atomic int state;
    _Atomic uint32_t drain_gen;   /* bumped by each drain (under drain_mu);
                                     new tasks join generation drain_gen & 1 */
    pthread_mutex_t drain_mu;     /* one drain at a time */
    bool drain_unfinished;        /* under drain_mu: a drain ended inside a
                                     task it helped with (pool.c drain) */
    _Atomic uint32_t refs;        /* the owner's, and one per pending
                                     continuation (future.c): the memory
                                     outlives als_pool_free until those
                                     settle */
    bool forked;                  /* a fork() child's copy: no workers */
    als_pool_t *reg_next;         /* live pools (fork handling), under */
    als_pool_t **reg_prev;        /* pool.c's pools_mu; NULL: not listed */
    pthread_mutex_t stop_mu;      /* shutdown callers; the attachment */
    pthread_cond_t stop_cv;
    bool joining, joined;
    _Atomic(void *) ext;          /* the attachment (pool.h), or NULL */
    const struct als__pool_ext *ext_ops;
    enum als_full_policy on_full;
    void (*on_error)(int task_result, void *arg, void *user);
    void *user;
    unsigned nthreads;
    unsigned nworkers;            /* nthreads + 1: workers[nthreads] has no
                                     thread, it is the guest a helping drain
                                     runs tasks as (als_pool_drain_help) */
    unsigned room_mark;           /* wake blocked submitters at this length */
    unsigned inline_mark;         /* backlog that makes worker submits inline */
    struct worker *workers;
    char name[16];
};

/* Workers that can run at once: the smaller of the workers and the CPUs. */
static inline unsigned als__running(const als_pool_t *pool)
{
    return pool->nthreads - pool->surplus_plain;
}

/* The worker the calling thread is, if any (worker.c). */
extern _Thread_local struct worker *als__self __attribute__((tls_model("initial-exec")));

static inline struct worker *als__own_worker(const als_pool_t *pool)
{
    struct worker *w = als__self;
    return w && w->pool == pool ? w : NULL;
}

/* Counts a finished task of generation gen as done, later: true when the
 * worker should publish now (BATCH of them wait). */
static inline bool als__done_defer(struct worker *w, unsigned gen)
{
    w->done_pending[gen]++;
    return ++w->done_pending_n >= BATCH;
}

/* Adds n to a counter only this thread writes: no read-modify-write. */
static inline void als__add(_Atomic uint64_t *c, uint64_t n, memory_order mo)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, mo);
}

static inline void als__bump(_Atomic uint64_t *c, memory_order mo)
{
    als__add(c, 1, mo);
}

/* task.c: each thread's cache of records. The common cases are inline:
 * a task's path allocates and frees one record each. */
#define ALS__CACHE_MAX 128 /* a cache hands half of itself on at this size
                            (64: bench/pool spawn_many and ctx4 at 2-16
                            workers 1.05-1.15x slower, since a chain's
                            first TASK_AHEAD records are fetched one at a
                            time; 256: no better; eighth pass in
                            docs/performance.md) */
struct als__task_cache {
    struct als__task *list;
    unsigned n;
    bool hooked;                  /* returned when the thread exits */
};
extern _Thread_local struct als__task_cache als__task_cache
    __attribute__((tls_model("initial-exec")));
bool als__tasks_init(void);
struct als__task *als__task_alloc_slow(void);
void als__task_recycle_slow(struct als__task *t);

/* A number of the calling thread's own, well mixed (splitmix64's
 * finaliser over the address of its task cache, a TLS block per thread):
 * spreads threads over shards. The raw address will not do: threads'
 * TLS blocks lie a stack size apart, so its low bits are all alike. */
static inline uint32_t als__thread_hash(void)
{
    uint64_t x = (uintptr_t)&als__task_cache;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return (uint32_t)(x ^ (x >> 31));
}

static inline struct als__task *als__task_alloc(void)
{
    struct als__task *t = als__task_cache.list;
    if (ALS__UNLIKELY(!t || !als__task_cache.hooked))
        return als__task_alloc_slow();
    als__task_cache.list = t->next;
    als__task_cache.n--;
    /* The next records' lines. Records come back from the workers that
     * ran them, so their lines are in other CPUs' caches; fetching them
     * now overlaps the misses with this submit and the next ones. One
     * record ahead (t->next) overlaps one submit, shorter than a trip
     * between CPUs when the machine is slow; a chain handed over carries
     * pointers TASK_AHEAD records on (task.c), which overlap that many
     * (bench/pool spawn_many and ctx4 at 2 workers, slow mode: 1.18x;
     * see docs/performance.md, eighth pass). */
    if (t->next)
        als__prefetch_for_write(t->next);
    if (t->ahead)
        als__prefetch_for_write(t->ahead);
    return t;
}

static inline void als__task_recycle(struct als__task *t)
{
    t->ahead = NULL; /* its frame's pointer is dead: never prefetch it */
    if (ALS__UNLIKELY(als__task_cache.n + 1 >= ALS__CACHE_MAX || !als__task_cache.hooked)) {
        als__task_recycle_slow(t);
        return;
    }
    t->next = als__task_cache.list;
    als__task_cache.list = t;
    als__task_cache.n++;
}
/* Starts fetching the record of a task taken now and run later (the rest
 * of a batch off the ring, a steal's tasks on their way to the thief's own
 * queue). The submitter wrote it on another CPU, so its first read is a
 * miss; fetched while the tasks before it run, it is not (bench/pool
 * requests, one outside submitter: 1.13x at 2 workers, 1.15x at 16;
 * docs/performance.md). Fetching the first too, or at most 4 of a steal,
 * measured no better. */
static inline void als__task_prefetch(const struct als__task *t)
{
    __builtin_prefetch(t, 0);
}
void als__tasks_fork_lock(void);
void als__tasks_fork_unlock(void);

/* park.c */
void als__futex_wait_until(_Atomic uint32_t *word, uint32_t seq, uint64_t deadline,
                           uint64_t cap_ns);
void als__futex_wake_all(_Atomic uint32_t *word);
void als__wake_one(als_pool_t *pool);
void als__wake_one_after_local(als_pool_t *pool);
void als__wake_all(als_pool_t *pool);
uint32_t als__park_announce(struct worker *w);
void als__park_sleep(struct worker *w, uint32_t seq);
void als__park_withdraw(struct worker *w);
bool als__workers_idle(const als_pool_t *pool);
void als__room_wake(als_pool_t *pool, struct worker *w);
bool als__wake_parked(als_pool_t *pool);
unsigned als__parked_upto(const als_pool_t *pool, unsigned limit);
bool als__parked(const struct worker *w);

/* count.c */
uint64_t als__in_flight(const als_pool_t *pool, unsigned gen);
bool als__pool_finished(const als_pool_t *pool);
void als__idle_check(als_pool_t *pool);
bool als__idle_watched(const als_pool_t *pool);
unsigned als__accept_count(als_pool_t *pool, struct worker *w);
void als__unaccept(als_pool_t *pool, struct worker *w, unsigned gen);
bool als__done_publish(struct worker *w);

/* sched.c */
bool als__ring_push(als_pool_t *pool, struct als__task *t);
bool als__local_push(struct worker *w, struct als__task *t);
void als__tasks_hand_back(struct worker *w);
bool als__backlog_deep(const struct worker *w);
bool als__push_wait(als_pool_t *pool, struct als__task *t, bool any_state);
bool als__has_work(als_pool_t *pool);
bool als__inbox_push(als_pool_t *pool, struct als__task *t);
bool als__local_idle(const struct worker *w);
struct als__task *als__task_take(struct worker *w);

/* monitor.c */
void als__hand_off(als_pool_t *pool);
void als__monitor_start(als_pool_t *pool);
void als__monitor_stop(als_pool_t *pool);
void als__monitor_free(als_pool_t *pool);

/* fork.c: the registry of live pools (a fork() child's copies stop). */
bool als__fork_init(void); /* once; false: pthread_atfork failed */
void als__pool_list(als_pool_t *pool);
void als__pool_unlist(als_pool_t *pool);

/* worker.c */
void *als__worker_main(void *arg);
void als__worker_join(als_pool_t *pool, struct worker *w);
void als__worker_flush(struct worker *w);
void als__task_run(struct worker *w, struct als__task *t);
/* The guest: the worker without a thread that a helping drain runs as. */
static inline struct worker *als__guest(als_pool_t *pool)
{
    return &pool->workers[pool->nthreads];
}
unsigned als__guest_help(struct worker *g, unsigned gen);
void als__guest_leave(struct worker *g);

#endif
