/* The pool: accepting and submitting tasks, its lifecycle, stats, fork.
 * scheduler.h lists the files of the scheduler and a task's path through them.
 *
 * Throttling
 *   While the ring holds INLINE_PER_WORKER tasks per worker and nobody is
 *   idle (or, with more workers than CPUs, every CPU has a busy worker:
 *   als__workers_idle), a task's submit runs the new task inline
 *   (submit_inline), as libgomp does: a fan-out tree then costs a scope
 *   per task instead of a record, a capture and a ring transfer
 *   (bench/pool fanout: 24 -> 6 ns per task on 2 workers). The inline scope keeps the submitter's context
 *   and draws no ids: the trigger id is resolved lazily (resource.c).
 *
 * Uses: task.c, park.c, count.c, sched.c, worker.c. */
#include "scheduler.h"
#include "tsan.h"

#include <assert.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- accepting ---------------------------------------------------------- */

/* The acceptance rule: a running pool takes every task; a draining one
 * only its own tasks' submissions (descendants of what it drains). */
static bool state_accepts(int state, const struct worker *w)
{
    return state == RUNNING || (state == DRAINING && w);
}

bool als__pool_accepts(const als_pool_t *pool)
{
    return state_accepts(atomic_load_explicit(&pool->state, memory_order_acquire),
                         als__own_worker(pool));
}

bool als__pool_cancelling(const als_pool_t *pool)
{
    return atomic_load_explicit(&pool->state, memory_order_acquire) == CANCELLING;
}

const char *als__pool_name(const als_pool_t *pool)
{
    return pool->name;
}

/* Counts a submission, then applies the rule: a shutdown that has begun
 * either is seen here, or sees this count and waits for the task (Dekker).
 * A task's submit needs no fence: the task running it is in flight until
 * its own `done` store (release, after this count), so nobody can find the
 * pool idle without seeing this count too. ALS_ESHUTDOWN: not counted. */
ALS__HOT int accept(als_pool_t *pool, struct worker *w, unsigned *gen)
{
    *gen = als__accept_count(pool, w);
    int st = atomic_load_explicit(&pool->state, w && w->running ? memory_order_relaxed
                                                                : memory_order_seq_cst);
    if (ALS__LIKELY(state_accepts(st, w)))
        return 0;
    als__unaccept(pool, w, *gen);
    return ALS_ESHUTDOWN;
}

ALS__HOT int task_new(als_pool_t *pool, const struct als__spec *sp, struct als__task **out)
{
    struct worker *w = als__own_worker(pool);
    bool detached = sp->flags & ALS_TASK_DETACHED;
    unsigned gen;
    int rc = accept(pool, w, &gen);
    if (rc) {
        if (sp->frame)
            als__frame_release(sp->frame);
        return rc;
    }
    struct als__task *t = als__task_alloc();
    if (!t) {
        if (sp->frame)
            als__frame_release(sp->frame);
        als__unaccept(pool, w, gen);
        return ALS_ENOMEM;
    }
    t->gen = gen;
    t->frame = sp->frame ? sp->frame : detached ? &als__empty_frame : als__capture();
    if (!t->frame) {
        als__task_recycle(t);
        als__unaccept(pool, w, gen);
        return ALS_ENOMEM;
    }
    t->fn = sp->fn;
    t->arg = sp->arg;
    assert(!(sp->hooks && sp->cancel)); /* they share a field */
    t->hooks = sp->hooks;
    if (sp->hooks)
        t->u.hook_ctx = sp->hook_ctx;
    else
        t->u.cancel = sp->cancel;
    t->check = sp->hooks && sp->hooks->admit;
    /* A capture of a cancelled scope is refused (a given frame, a
     * continuation's, was captured when its then() was accepted). Until
     * a scope exists this costs one load, read here at the end: a value
     * kept from the top cost the submit more in spilled registers
     * (callgrind, chained: 12 instructions per task against 2). No scope
     * then means none in any frame this thread holds (the store never
     * goes away, and exists before anything binds it). */
    if (ALS__UNLIKELY(als__scopes_exist())) {
        t->check = true;
        if (!sp->frame && !detached && als__frame_cancelled(t->frame)) {
            als__task_discard(pool, t);
            return ALS_ECANCELED;
        }
    }
    t->trigger_id = sp->trigger_id ? sp->trigger_id
                  : detached       ? 0
                                   : als_execution_async_id();
    *out = t;
    return 0;
}

void als__task_discard(als_pool_t *pool, struct als__task *t)
{
    als__frame_release(t->frame);
    als__unaccept(pool, als__own_worker(pool), t->gen);
    als__task_recycle(t);
}

/* ---- queueing ----------------------------------------------------------- */

static int refuse_full(als_pool_t *pool, struct als__task *t)
{
    atomic_fetch_add_explicit(&pool->rejected, 1, memory_order_relaxed);
    als__task_discard(pool, t);
    return ALS_EFULL;
}

ALS__HOT int task_queue(als_pool_t *pool, struct als__task *t, bool no_reject)
{
    struct worker *w = als__own_worker(pool);
    bool reject = pool->on_full == ALS_FULL_REJECT && !no_reject;
    if (w) {
        /* The newest task goes to this worker's LIFO slot; the one it
         * displaces goes to the ring for anyone to take. */
        struct als__task *older = w->next;
        if (!older) {
            w->next = t;
            return 0;
        }
        if (pool->locals && als__local_push(w, older)) {
            w->next = t;
            als__wake_one_after_local(pool);
            return 0;
        }
        if (als__ring_push(pool, older)) {
            w->next = t;
            als__wake_one(pool);
            return 0;
        }
        if (reject)
            return refuse_full(pool, t);
        /* BLOCK policy, full pool, submitted by its own worker: waiting could
         * deadlock (every worker might be waiting), so run it here. */
        als__task_run(w, t);
        return 0;
    }
    if (pool->ninboxes && als__inbox_push(pool, t)) {
        als__wake_one(pool); /* the push ends with a locked instruction */
        return 0;
    }
    if (ALS__LIKELY(als__task_try_push(pool, t)))
        return 0;
    if (reject)
        return refuse_full(pool, t);
    if (!als__push_wait(pool, t, false)) {
        als__task_discard(pool, t);
        return ALS_ESHUTDOWN;
    }
    als__wake_one(pool);
    return 0;
}

int als__task_new(als_pool_t *pool, const struct als__spec *sp, struct als__task **out)
{
    return task_new(pool, sp, out);
}

int als__task_queue(als_pool_t *pool, struct als__task *t, bool no_reject)
{
    return task_queue(pool, t, no_reject);
}

int als__submit(als_pool_t *pool, const struct als__spec *sp)
{
    struct als__task *t;
    int rc = task_new(pool, sp, &t);
    return rc ? rc : task_queue(pool, t, sp->no_reject);
}

/* Runs a task submitted by a task of this worker at once, on this thread,
 * instead of queueing it (the caller decided: see submit_inline).
 * Nothing is captured or queued: the submitter's context is the task's
 * context, so a scope over it is enough, and it ends what the task binds.
 * The task still gets its own lazy async id, is counted like a queued one
 * and reports failure through on_error. */
ALS__HOT void task_inline(struct worker *w, als_task_fn fn, void *arg)
{
    als_pool_t *pool = w->pool;
    als__bump(&w->started, memory_order_relaxed);
    /* The trigger is our own execution id, drawn only if someone asks:
     * drawing it here would put a shared counter on every inline run. */
    struct als__scope s;
    als__scope_open_task(&s, ALS__ID_LAZY, ALS__ID_PARENT);
    struct als__scope *unwind __attribute__((cleanup(als__scope_unwind))) = &s;
    w->inlined[w->gen]++;
    int rc = fn(arg);
    w->inlined[w->gen]--;
    unwind = NULL;
    uint64_t id = als__tls.exec_id;
    als__scope_end_task(&s);
    if (ALS__UNLIKELY(rc != 0)) {
        als__bump(&w->failed, memory_order_relaxed);
        if (pool->on_error) {
            als__scope_open_task(&s, id, ALS__ID_PARENT);
            pool->on_error(rc, arg, pool->user);
            als__scope_end_task(&s);
        }
    }
    /* Submitted by a running task (submit_inline): its generation. */
    if (als__done_defer(w, w->gen))
        als__worker_flush(w);
}

/* Throttling, as OpenMP runtimes do: while the ring holds a deep backlog
 * (INLINE_PER_WORKER tasks per worker), a plain submit from a task of the
 * pool runs the new task at once on the submitting thread (task_inline).
 * Queueing it would only lengthen the backlog, and running it here costs
 * no record, capture, queue transfer or wake-up. Only when this worker's
 * LIFO slot is taken (so the task would have gone to the ring), and while
 * the worker has used less than INLINE_STACK of its stack (so nested
 * inline runs, a chain of tasks each submitting the next, cannot overflow
 * it; deep trees still run inline: they nest only as deep as they are).
 * Returns whether it ran the task. */
ALS__HOT bool submit_inline(als_pool_t *pool, als_task_fn fn, void *arg)
{
    struct worker *w = als__own_worker(pool);
    if (!w || !w->running || !w->next ||
        (uintptr_t)__builtin_frame_address(0) < w->inline_floor ||
        !als__backlog_deep(w) || als__workers_idle(pool))
        return false;
    unsigned gen;
    if (als__refuse_cancelled() || accept(pool, w, &gen))
        return false; /* als__submit refuses it */
    task_inline(w, fn, arg);
    return true;
}

int als_submit(als_pool_t *pool, als_task_fn fn, void *arg)
{
    if (!pool || !fn)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP()); /* captures: see "Non-local exits" */
    if (submit_inline(pool, fn, arg))
        return 0;
    struct als__spec sp = { .fn = fn, .arg = arg };
    return als__submit(pool, &sp);
}

int als_submit_task(als_pool_t *pool, const als_task *task)
{
    if (!pool || !task || !task->fn)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP());
    if (!(task->flags & ALS_TASK_DETACHED) && submit_inline(pool, task->fn, task->arg))
        return 0;
    struct als__spec sp = {
        .fn = task->fn, .arg = task->arg, .cancel = task->cancel, .flags = task->flags,
    };
    return als__submit(pool, &sp);
}
/* ---- lifecycle -------------------------------------------------------- */

static unsigned cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static unsigned round_pow2(unsigned n)
{
    unsigned p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static void pool_release(als_pool_t *pool);

void als__pool_ref(als_pool_t *pool)
{
    atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
}

void als__pool_unref(als_pool_t *pool)
{
    /* acq_rel: whoever frees sees every use made under the other refs. */
    if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) == 1)
        pool_release(pool);
}

/* The queues and the memory (also of a pool als_pool_new gave up on). */
static void pool_memory_free(als_pool_t *pool)
{
    for (unsigned i = 0; pool->workers && i < pool->nworkers; i++)
        als__queue_fini(&pool->workers[i].local); /* never set up: no-op */
    for (unsigned i = 0; i < pool->ninboxes; i++)
        als__queue_fini(&pool->inboxes[i]);
    free(pool->inboxes);
    als__queue_fini(&pool->q);
    als__monitor_free(pool);
    free(pool->workers);
    free((void *)pool->idle);
    free(pool);
}

static void pool_release(als_pool_t *pool)
{
    als__pool_unlist(pool);
    void *ext = atomic_load_explicit(&pool->ext, memory_order_acquire);
    if (ext)
        pool->ext_ops->release(ext, pool->forked);
    if (!pool->forked) { /* a gone thread may hold them (see fork) */
        pthread_cond_destroy(&pool->stop_cv);
        pthread_mutex_destroy(&pool->stop_mu);
        pthread_mutex_destroy(&pool->drain_mu);
    }
    pool_memory_free(pool);
}

void *als__pool_ext(als_pool_t *pool, const struct als__pool_ext *ops,
                    void *(*make)(als_pool_t *pool))
{
    /* Acquire: pairs with the release below (ext_ops, the attachment). */
    void *ext = atomic_load_explicit(&pool->ext, memory_order_acquire);
    if (ALS__LIKELY(ext) || !make)
        return ext;
    pthread_mutex_lock(&pool->stop_mu);
    ext = atomic_load_explicit(&pool->ext, memory_order_relaxed);
    if (!ext && (ext = make(pool)) != NULL) {
        pool->ext_ops = ops;
        atomic_store_explicit(&pool->ext, ext, memory_order_release);
    }
    pthread_mutex_unlock(&pool->stop_mu);
    return ext;
}

als_pool_t *als_pool_new(const als_pool_options *opts)
{
    als_pool_options o = opts ? *opts : (als_pool_options){ 0 };
    if (o.queue_capacity > MAX_CAPACITY)
        return NULL;
    unsigned cap = round_pow2(o.queue_capacity ? o.queue_capacity : DEFAULT_CAPACITY);
    unsigned cpus = cpu_count(), n = o.threads ? o.threads : cpus;
    unsigned running = n < cpus ? n : cpus; /* workers that can run at once */

    if (!als__tasks_init() || !als__fork_init())
        return NULL;
    als_pool_t *pool = als__zalloc_aligned(sizeof *pool);
    if (!pool)
        return NULL;
    pool->workers = als__zalloc_aligned(((size_t)n + 1) * sizeof *pool->workers);
    pool->nthreads = n;
    pool->nworkers = n + 1;
    pool->idle_words = (n + 63) / 64;
    pool->idle = als__zalloc_aligned(pool->idle_words * sizeof *pool->idle);
    /* Own queues for the workers (sched.c) where they fit in the capacity
     * and no answer depends on exact counts: BLOCK pools. */
    pool->locals = o.on_full != ALS_FULL_REJECT && cap / LOCAL_CAP >= n;
    /* Inboxes where outside submits are sharded (sched.c): one per group
     * of INBOX_GROUP workers that can run at once, where there are two
     * groups or more. Sharding for more workers than CPUs spreads the
     * submits over lines no more threads can pull at once, and moves
     * every task through a steal: a 16-worker pool on 2 CPUs with 4
     * inboxes stole 99% of its tasks, and bench/pool requests with a
     * helping drain ran 1.27-1.31x faster at 8-16 workers without them,
     * spawn_many 1.18x (docs/performance.md, "Seventh pass"). */
    unsigned ninboxes = pool->locals && running >= 2 * INBOX_GROUP ? running / INBOX_GROUP : 0;
    bool ok = pool->workers && pool->idle && als__queue_init(&pool->q, cap) == 0;
    for (unsigned i = 0; ok && pool->locals && i <= n; i++)
        ok = als__queue_init(&pool->workers[i].local, LOCAL_CAP) == 0;
    if (ok && ninboxes) {
        ok = (pool->inboxes = als__zalloc_aligned(ninboxes * sizeof *pool->inboxes)) != NULL;
        if (ok)
            pool->ninboxes = ninboxes; /* zeroed: fini is a no-op until set up */
        for (unsigned i = 0; ok && i < ninboxes; i++)
            ok = als__queue_init(&pool->inboxes[i], INBOX_CAP) == 0;
        for (unsigned i = 0; ok && i < n; i++) /* evenly, when n > running */
            pool->workers[i].inbox = &pool->inboxes[(uint64_t)i * ninboxes / n];
    }
    if (!ok) {
        pool_memory_free(pool);
        return NULL;
    }
    atomic_init(&pool->refs, 1);
    pthread_mutex_init(&pool->drain_mu, NULL);
    pthread_mutex_init(&pool->stop_mu, NULL);
    pthread_cond_init(&pool->stop_cv, NULL);
    pool->on_full = o.on_full == ALS_FULL_REJECT ? ALS_FULL_REJECT : ALS_FULL_BLOCK;
    pool->on_error = o.on_error;
    pool->user = o.user;
    snprintf(pool->name, sizeof pool->name, "%s", o.name ? o.name : "als");
    /* Searchers: half the workers that can run at once, at least two (one
     * searcher for two workers parked one of them under an outside
     * submitter's stream: bench/pool spawn_many 73 -> 196 ns per task). */
    pool->surplus_plain = n - running;
    atomic_init(&pool->surplus, pool->surplus_plain);
    unsigned beside_guest = n < cpus - 1 ? n : cpus - 1; /* a helping drain takes a CPU */
    pool->surplus_guest = n - beside_guest;
    pool->search_max = beside_guest / 2 > 2 ? beside_guest / 2 : 2;
    pool->room_mark = cap / 2;
    /* libgomp's threshold. A ring smaller than that fills first: a full
     * BLOCK pool runs its workers' submits inline anyway (als__task_queue). */
    pool->inline_mark = n > UINT_MAX / INLINE_PER_WORKER ? UINT_MAX : n * INLINE_PER_WORKER;

    for (unsigned i = 0; i <= n; i++) {
        struct worker *w = &pool->workers[i];
        w->pool = pool;
        w->index = i;
        w->rng = i * 2654435761u + 1; /* xorshift: never 0 */
        w->poll = POLL_MIN;
    }
    /* Workers start with an empty context whatever the creator's is. */
    for (unsigned i = 0; i < n; i++) {
        struct worker *w = &pool->workers[i];
        if (als__thread_spawn(&w->thread, NULL, als__worker_main, w) != 0) {
            atomic_store_explicit(&pool->state, STOPPED, memory_order_seq_cst);
            als__wake_all(pool);
            for (unsigned j = 0; j < i; j++)
                pthread_join(pool->workers[j].thread, NULL);
            pool_release(pool);
            return NULL;
        }
    }
    als__monitor_start(pool);
    als__pool_list(pool);
    return pool;
}

/* A drain, also when its thread unwinds out of a task it helped with
 * (als__guest_help). `guest`: the guest it helps as, or NULL. */
struct drain {
    als_pool_t *pool;
    struct worker *guest;
};

static void drain_end(struct drain *d)
{
    if (d->guest)
        als__guest_leave(d->guest);
    als__hb_acquire(&d->pool->drain_seq);
    atomic_fetch_sub_explicit(&d->pool->drain_waiters, 1, memory_order_relaxed);
    pthread_mutex_unlock(&d->pool->drain_mu);
}

/* Waits until nothing of drain generation `gen` is in flight. */
static void drain_wait(struct drain *d, unsigned gen)
{
    als_pool_t *pool = d->pool;
    for (unsigned spins = 0;; spins++) {
        uint32_t seq = atomic_load_explicit(&pool->drain_seq, memory_order_acquire);
        if (d->guest)
            als__worker_flush(d->guest); /* what it ran counts as done */
        if (als__in_flight(pool, gen) == 0)
            return;
        /* Help as a worker would (worker.c als__guest_help). */
        if (d->guest && als__guest_help(d->guest, gen)) {
            spins = 0;
            continue;
        }
        /* Look again for a moment before sleeping: a burst's last tasks
         * end soon after its submitter drains, and a futex wake-up costs
         * the drain a scheduling round trip (bench/pool requests, 2
         * workers: about 5% per request). Yielding keeps the workers
         * running where threads outnumber CPUs. (Plain drains run no
         * task here, as oneTBB's wait does: als.h promises that tasks
         * run on the pool's named workers, and that a one-worker pool
         * starts them in order. als_pool_drain_help is the opt-in.) */
        if (spins < DRAIN_SPIN) {
            for (int k = 0; k < DRAIN_PAUSES; k++)
                ALS__CPU_RELAX();
            sched_yield();
            continue;
        }
        /* Workers wake us when they run out of work (worker_flush). While
         * newer work keeps them busy, our generation may end unseen: look
         * again every millisecond rather than have every worker sum the
         * counters at every flush (bench/pool fanout: 5 -> 11 ns/task). */
        als__futex_wait_until(&pool->drain_seq, seq, UINT64_MAX, DRAIN_POLL_NS);
    }
}

static int drain(als_pool_t *pool, bool help)
{
    if (!pool)
        return ALS_EINVAL;
    if (als__own_worker(pool))
        return ALS_EDEADLK;
    if (pool->forked)
        return 0; /* nothing will ever run (see fork) */
    /* The mutex also makes this drain the guest worker's only user. */
    pthread_mutex_lock(&pool->drain_mu);
    struct drain d __attribute__((cleanup(drain_end))) = {
        pool, help ? als__guest(pool) : NULL,
    };
    atomic_fetch_add_explicit(&pool->drain_waiters, 1, memory_order_seq_cst);
    uint32_t e = atomic_load_explicit(&pool->drain_gen, memory_order_relaxed);
    /* A helping drain whose thread ended inside a task left its
     * generation unfinished: finish it first, or its tasks would join the
     * generation the next drain does not wait for. */
    if (pool->drain_unfinished)
        drain_wait(&d, (e - 1) & 1);
    /* Tasks accepted from now on, and their descendants, join the next
     * generation: wait for this one only, so that steady submitters cannot
     * keep a drain waiting. The previous drain emptied the other one. */
    atomic_store_explicit(&pool->drain_gen, e + 1, memory_order_seq_cst);
    pool->drain_unfinished = true;
    drain_wait(&d, e & 1);
    pool->drain_unfinished = false;
    return 0; /* drain_end */
}

int als_pool_drain(als_pool_t *pool)
{
    return drain(pool, false);
}

int als_pool_drain_help(als_pool_t *pool)
{
    return drain(pool, true);
}

int als_pool_shutdown(als_pool_t *pool, int how)
{
    if (!pool || (how != ALS_SHUTDOWN_DRAIN && how != ALS_SHUTDOWN_CANCEL))
        return ALS_EINVAL;
    if (als__own_worker(pool))
        return ALS_EDEADLK;
    if (pool->forked)
        return 0; /* stopped, no workers (see fork) */
    pthread_mutex_lock(&pool->stop_mu);
    int want = how == ALS_SHUTDOWN_CANCEL ? CANCELLING : DRAINING;
    if (atomic_load_explicit(&pool->state, memory_order_relaxed) < want) {
        atomic_store_explicit(&pool->state, want, memory_order_seq_cst);
        als__wake_all(pool);
        void *ext = atomic_load_explicit(&pool->ext, memory_order_relaxed);
        if (ext) /* timer.c: on CANCEL it hands pending tasks over */
            pool->ext_ops->kick(ext);
    }
    if (!pool->joining) {
        /* The first caller joins; later ones (a CANCEL upgrading a DRAIN,
         * or repeated calls) wait for the same end. */
        pool->joining = true;
        pthread_mutex_unlock(&pool->stop_mu);
        /* Workers end when nothing is in flight, delayed tasks included,
         * so the timer thread has nothing left when they are gone. */
        for (unsigned i = 0; i < pool->nthreads; i++)
            als__worker_join(pool, &pool->workers[i]);
        als__monitor_stop(pool);
        void *ext = atomic_load_explicit(&pool->ext, memory_order_acquire);
        if (ext)
            pool->ext_ops->stop(ext);
        pthread_mutex_lock(&pool->stop_mu);
        atomic_store_explicit(&pool->state, STOPPED, memory_order_seq_cst);
        pool->joined = true;
        pthread_cond_broadcast(&pool->stop_cv);
    }
    while (!pool->joined)
        pthread_cond_wait(&pool->stop_cv, &pool->stop_mu);
    pthread_mutex_unlock(&pool->stop_mu);
    return 0;
}

void als_pool_free(als_pool_t *pool)
{
    if (!pool)
        return;
    if (als__own_worker(pool)) {
#ifndef NDEBUG
        fprintf(stderr, "libals: als_pool_free called from the pool's own "
                        "worker: refused (the pool stays usable)\n");
#endif
        return;
    }
    als_pool_shutdown(pool, ALS_SHUTDOWN_DRAIN);
    als__pool_unref(pool);
}

als_pool_t *als_pool_current(void)
{
    return als__self ? als__self->pool : NULL;
}
