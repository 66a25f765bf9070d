/* Running tasks: the worker loop, a task's run inside its frame, and waits
 * that help.
 *
 * A worker enters each task's frame in a scope and restores its own context
 * after; consecutive tasks of one frame (a chain, one submitter's stream)
 * share one kept scope and only reset their ids (task_run_top), until a
 * task leaves something in it or the worker publishes its counts.
 * bench/pool chained: 31 -> 25 ns per task. A task run inside another (a
 * helping wait, a full pool's inline submit) opens a scope of its own
 * (task_run). Both start and end the same way (task_start, task_end).
 *
 * A helping drain (als_pool_drain_help) runs tasks as the pool's guest: a
 * worker without a thread (workers[nthreads]), used by whichever thread
 * holds the pool's drain mutex, so that every counter keeps one writer.
 *
 * Uses: task.c, park.c, count.c, sched.c, monitor.c. */
#include "scheduler.h"

#include <sched.h>
#include <stdio.h>

_Thread_local struct worker *als__self __attribute__((tls_model("initial-exec")));

/* Drops the frame references this worker deferred (see task_finish). The
 * list is detached before it is released: a destroy callback may run a
 * task on this thread (an inline submit into a full pool, a helping wait),
 * whose task_finish defers its own reference here; those are dropped too
 * before this returns. */
static void drop_held(struct worker *w)
{
    while (w->held) {
        struct als_snapshot *f = w->held;
        uint32_t n = w->held_n;
        w->held = NULL;
        w->held_n = 0;
        als__frame_release_n(f, n);
    }
}

/* Closes the scope kept open across tasks (task_run_top): the worker's own
 * context is back, and the kept frame's reference is dropped (destroy
 * callbacks may run here). Only between top-level tasks. */
static void kept_close(struct worker *w)
{
    struct als_snapshot *f = w->kept;
    if (!f)
        return;
    w->kept = NULL;
    als__scope_end(&w->ks);
    als__frame_release(f);
}

static void kept_unwind(struct worker **w)
{
    if (*w)
        kept_close(*w);
}

/* Publishes what this worker deferred: the kept scope's frame and the
 * deferred frame references first (so destroy callbacks have run before
 * the tasks count as done, and a drain that returns has seen them), then
 * the done count drain and shutdown watch. The kept scope stays open while
 * a task runs on this thread (a nested flush: the running task pins its
 * frame and is itself in flight). */
void als__worker_flush(struct worker *w)
{
    /* A stream (sched.c ring_take) ends here as at a take, if the ring is
     * short: a drain that these counts end then finds no worker in one,
     * and a burst submitted after it reaches every worker (a worker still
     * in a stream would claim two of its tasks). */
    if (w->streaming && als__queue_length(&w->pool->q) < 2 * als__running(w->pool))
        w->streaming = false;
    if (!w->running)
        kept_close(w);
    drop_held(w);
    if (als__done_publish(w) && als__local_idle(w))
        als__idle_check(w->pool);
}

/* Ends a task. A plain task's frame reference and done count are deferred
 * and published in batches (same frame: one atomic for up to BATCH tasks,
 * instead of a cache line bouncing between the submitter and every worker
 * on each task). Deferred references are dropped before a task of another
 * frame starts (task_run), so while a task runs the worker holds extra
 * references only to that task's own frame, which the task pins anyway:
 * no value outlives its last real holder. Deferred done counts are
 * published before the worker looks for work it might not find, so a
 * deferred task stays "in flight" for drain and shutdown until then. A
 * task with a completion hook drops its frame references before the hook
 * runs: the hook's waiter may look at destroy effects. */
static void task_finish(struct worker *w, struct als__task *t, int rc, bool cancelled)
{
    struct als_snapshot *f = t->frame;
    als__done_fn done = t->hooks ? t->hooks->done : NULL;
    void *ctx = t->u.hook_ctx;
    unsigned gen = t->gen;
    als__task_recycle(t);
    if (f != &als__empty_frame) {
        if (f != w->held) {
            drop_held(w);
            w->held = f;
        }
        w->held_n++;
    }
    if (ALS__UNLIKELY(done)) {
        if (!w->running)
            kept_close(w);
        drop_held(w);
        done(ctx, rc, cancelled);
    }
    if (als__done_defer(w, gen))
        als__worker_flush(w);
}

/* A task that will not run: its cancel callback runs in its context. */
static void task_cancel(struct worker *w, struct als__task *t)
{
    void (*cancel)(void *arg) = t->hooks ? NULL : t->u.cancel;
    if (cancel) {
        struct als__scope s;
        als__scope_open_frame(&s, t->frame, true, ALS__ID_LAZY, t->trigger_id);
        cancel(t->arg);
        als__scope_end(&s);
    }
    als__bump(&w->cancelled, memory_order_relaxed);
    task_finish(w, t, 0, true);
}

/* Counts a failure and runs on_error in the task's submit-time context. */
static void task_failed(struct worker *w, struct als__task *t, int rc, uint64_t id)
{
    als_pool_t *pool = w->pool;
    als__bump(&w->failed, memory_order_relaxed);
    if (pool->on_error) {
        /* In the submit-time context, like Node's unhandledRejection: the
         * handler can still read the request's values. */
        struct als__scope s;
        als__scope_open_frame(&s, t->frame, true, id, t->trigger_id);
        pool->on_error(rc, t->arg, pool->user);
        als__scope_end(&s);
    }
}

/* Whether t may start as far as its scope and its admit hook go. */
static bool task_admitted(struct als__task *t)
{
    return !als__frame_cancelled(t->frame) &&
           (!t->hooks || !t->hooks->admit || t->hooks->admit(t->u.hook_ctx));
}

/* Whether task t starts (else the caller cancels it): not when a CANCEL
 * shutdown has begun, its scope is cancelled, or its admit hook says no.
 * The last two cost one byte's test (t->check) while no scope exists. */
ALS__HOT bool task_start(struct worker *w, struct als__task *t)
{
    if (ALS__UNLIKELY(atomic_load_explicit(&w->pool->state, memory_order_relaxed) == CANCELLING) ||
        (ALS__UNLIKELY(t->check) && !task_admitted(t)))
        return false;
    /* Finished tasks of the other drain generation are published before a
     * task of this one runs: a drain waiting for them must not wait for
     * BATCH more tasks (only after a drain began: generations alternate
     * once per drain). */
    if (ALS__UNLIKELY(w->done_pending[!t->gen]))
        als__worker_flush(w);
    als__bump(&w->started, memory_order_relaxed);
    return true;
}

/* Runs the task's function inside the scope the caller opened. */
static int task_call(struct worker *w, struct als__task *t)
{
    unsigned gen = w->gen;
    w->running++;
    w->gen = t->gen; /* what it submits joins its generation (drain) */
    t->next = w->cur;
    w->cur = t;
    int rc = t->fn(t->arg);
    w->cur = t->next;
    w->gen = gen;
    w->running--;
    return rc;
}

static void task_end(struct worker *w, struct als__task *t, int rc, uint64_t id)
{
    if (ALS__UNLIKELY(rc != 0))
        task_failed(w, t, rc, id);
    task_finish(w, t, rc, false);
}

bool als__runs_own(const void *hook_ctx)
{
    struct worker *w = als__self;
    for (const struct als__task *t = w ? w->cur : NULL; t; t = t->next)
        if (t->hooks && t->u.hook_ctx == hook_ctx)
            return true;
    return false;
}

/* A task run inside another (a helping wait, a full pool's inline submit). */
void als__task_run(struct worker *w, struct als__task *t)
{
    if (!task_start(w, t)) {
        task_cancel(w, t);
        return;
    }
    if (w->held != t->frame) /* see task_finish */
        drop_held(w);
    struct als__scope s;
    als__scope_open_frame(&s, t->frame, true, ALS__ID_LAZY, t->trigger_id);
    /* Ends the scope if the task unwinds (pthread_exit, cancellation). */
    struct als__scope *unwind __attribute__((cleanup(als__scope_unwind))) = &s;
    int rc = task_call(w, t);
    unwind = NULL;
    uint64_t id = als__tls.exec_id; /* the task's id, if it was assigned */
    als__scope_end(&s);
    task_end(w, t, rc, id);
}

/* Whether the kept scope is exactly as it was opened: the task that just
 * ran left nothing to unwind (no binding, no private table, no cache, no
 * open explicit scope), so the next task of the same frame can run in it. */
static bool kept_clean(const struct worker *w)
{
    return als__tls.scope == &w->ks && als__tls.undo == w->ks.undo && als__tls.v.shared &&
           als__tls.v.entered == w->kept && !als__tls.cache.frame;
}

/* A task run by the worker loop (or a helping drain's guest). Consecutive
 * tasks of one frame (a chain, a submitter's stream) share one scope: each
 * needs only its own ids, and the scope is closed as soon as a task leaves
 * anything in it, a task of another frame comes, or the worker publishes
 * its counts. The scope holds its own reference, so the frame outlives the
 * tasks' deferred ones. Inlined into both callers: out of line it cost the
 * worker loop 21 instructions per task (callgrind, chained). */
ALS__HOT void task_run_top(struct worker *w, struct als__task *t)
{
    if (!task_start(w, t)) {
        kept_close(w);
        task_cancel(w, t);
        return;
    }
    if (w->kept == t->frame) {
        als__tls.exec_id = ALS__ID_LAZY;
        als__tls.trigger_id = t->trigger_id;
    } else {
        kept_close(w);
        if (w->held != t->frame) /* see task_finish */
            drop_held(w);
        als__scope_open_frame(&w->ks, t->frame, true, ALS__ID_LAZY, t->trigger_id);
        w->kept = als__frame_retain(t->frame);
    }
    /* Closes the kept scope if the task unwinds (pthread_exit...). */
    struct worker *unwind __attribute__((cleanup(kept_unwind))) = w;
    int rc = task_call(w, t);
    unwind = NULL;
    uint64_t id = als__tls.exec_id;
    if (ALS__UNLIKELY(!kept_clean(w)))
        kept_close(w); /* restores the worker's context exactly */
    task_end(w, t, rc, id);
}

/* Sleeps until woken, unless work or the end arrived meanwhile. */
static void worker_park(struct worker *w)
{
    uint32_t seq = als__park_announce(w);
    if (!als__has_work(w->pool) && !als__pool_finished(w->pool))
        als__park_sleep(w, seq);
    als__park_withdraw(w);
}

/* The tasks running on w's thread as it ends (or unwinds out of a helping
 * drain): each counts as failed with ALS_ECANCELED, and what they held is
 * released (worker_unwound). */
static void tasks_abandoned(struct worker *w)
{
    struct als__task *t = w->cur;
    w->cur = NULL;
    w->running = 0;
    kept_close(w);
    for (unsigned g = 0; g < 2; g++) {
        /* Inline runs have no record: counted only. */
        als__add(&w->failed, w->inlined[g], memory_order_relaxed);
        w->done_pending[g] += w->inlined[g];
        w->done_pending_n += w->inlined[g];
        w->inlined[g] = 0;
    }
    while (t) {
        struct als__task *outer = t->next;
        task_end(w, t, ALS_ECANCELED, ALS__ID_LAZY);
        t = outer;
    }
    als__worker_flush(w);
}

/* Inline runs may use INLINE_STACK below the frame that runs tasks (the
 * worker loop's, a helping drain's), or a quarter of the thread's stack if
 * that is smaller. Asked once per thread: for the main thread glibc reads
 * /proc/self/maps to answer. */
static uintptr_t inline_floor(uintptr_t frame)
{
    static _Thread_local uintptr_t budget;
    if (!budget) {
        budget = INLINE_STACK;
        pthread_attr_t attr;
        if (pthread_getattr_np(pthread_self(), &attr) == 0) {
            void *addr;
            size_t size;
            if (pthread_attr_getstack(&attr, &addr, &size) == 0 && size / 4 < budget)
                budget = size / 4;
            pthread_attr_destroy(&attr);
        }
    }
    return frame - budget;
}

/* ---- the guest: a draining thread that helps (als_pool_drain_help) ---- */

struct guest_turn {
    struct worker *g;
    struct worker *self;          /* the caller's own worker, if any */
    bool unwinding;               /* false once the turn ended normally */
};

/* Ends a turn of als__guest_help, also when the thread ends (or unwinds)
 * inside a task: then the tasks running on it fail as on a worker (the
 * drain's own cleanup, pool.c, hands the rest back); else the caller's
 * context comes back. */
static void guest_turn_end(struct guest_turn *turn)
{
    struct worker *g = turn->g;
    if (ALS__UNLIKELY(turn->unwinding))
        tasks_abandoned(g);
    else
        kept_close(g);
    atomic_store_explicit(&g->pool->surplus, g->pool->surplus_plain, memory_order_relaxed);
    als__self = turn->self;
}

/* Runs queued tasks on the calling thread as the pool's guest worker g,
 * which is the caller's worker meanwhile: what the tasks submit goes where
 * a worker's task's submits go, and a drain, shutdown or free from inside
 * them is refused as on a worker. Runs while it finds tasks of drain
 * generation `gen` (the drain cannot end before they have run), and stops
 * after one of another: the drain looks whether its own have ended, so
 * that newer tasks do not keep it. (Looking every 32 tasks as well made
 * bench/pool chained at 16 workers 1.6x slower: a look sums every
 * worker's counters.) Only the holder of the pool's drain_mu uses g, so its
 * single-writer counters stay so. Returns how many tasks it ran. */
unsigned als__guest_help(struct worker *g, unsigned gen)
{
    struct guest_turn turn __attribute__((cleanup(guest_turn_end))) = { g, als__self, true };
    unsigned n = 0;
    als__self = g;
    g->inline_floor = inline_floor((uintptr_t)__builtin_frame_address(0));
    /* Its CPU is taken while it runs tasks (park.c als__workers_idle). */
    atomic_store_explicit(&g->pool->surplus, g->pool->surplus_guest, memory_order_relaxed);
    for (struct als__task *t; (t = als__task_take(g)) != NULL;) {
        unsigned tgen = t->gen;
        task_run_top(g, t); /* as the worker loop: one scope per frame */
        n++;
        if (tgen != gen)
            break;
    }
    turn.unwinding = false;
    return n;
}

/* Ends a helping drain: passes on the tasks the guest took but did not
 * run (newer than the drain, or submitted by the tasks it ran), so that
 * no thread's absence strands them, and publishes its counts. */
void als__guest_leave(struct worker *g)
{
    als__tasks_hand_back(g);
    als__worker_flush(g);
}

/* Joins worker w's thread, and the threads that replaced it meanwhile
 * (worker_unwound). */
void als__worker_join(als_pool_t *pool, struct worker *w)
{
    for (;;) {
        pthread_mutex_lock(&pool->stop_mu);
        pthread_t t = w->thread;
        w->claimed = true;
        pthread_mutex_unlock(&pool->stop_mu);
        pthread_join(t, NULL);
        pthread_mutex_lock(&pool->stop_mu);
        bool replaced = !pthread_equal(t, w->thread);
        pthread_mutex_unlock(&pool->stop_mu);
        if (!replaced)
            return;
    }
}

/* The worker's thread is ending inside a task: the task (or a function it
 * called) ran pthread_exit, or was cancelled at a cancellation point. The
 * library is built with -fexceptions, so this runs as the unwinding leaves
 * als__worker_main; the scopes it passed (the task's own runs, the task
 * scope itself) closed in their cleanups and restored the context up to
 * the worker's own kept scope (test_pool_lifecycle: *_in_run). Every task
 * that was running on this thread counts as failed with ALS_ECANCELED
 * (on_error says so; its completion hook gets ALS_ECANCELED), what they
 * held is released, and a new thread takes the worker's place, so drain
 * and shutdown still end and queued work still runs. */
static void worker_unwound(struct worker **pw)
{
    struct worker *w = *pw;
    if (!w)
        return; /* als__worker_main returned */
    als_pool_t *pool = w->pool;
    tasks_abandoned(w);

    pthread_mutex_lock(&pool->stop_mu);
    pthread_t heir;
    if (als__thread_spawn(&heir, NULL, als__worker_main, w) == 0) {
        w->thread = heir;
        /* A shutdown joining us joins the heir next; else nobody will. */
        if (!w->claimed)
            pthread_detach(pthread_self());
        w->claimed = false;
    } else {
#ifndef NDEBUG
        fprintf(stderr, "libals: pool worker %s-%u ended inside a task and "
                        "could not be replaced\n", pool->name, w->index);
#endif
    }
    pthread_mutex_unlock(&pool->stop_mu);
}

/* Spins before parking: a submitter that is still producing then pays no
 * wake-up. Yielding lets it run if it shares our core (2-core machines run
 * submitter and workers on 2 CPUs). At most search_max workers search at
 * once (Tokio's rule: half of them): the others park at once, instead of
 * all pulling at the queues' lines and taking CPU time from the workers
 * that have work (16 workers on 2 CPUs). */
static struct als__task *worker_spin(struct worker *w)
{
    als_pool_t *pool = w->pool;
    struct als__task *t = NULL;
    uint32_t n = atomic_load_explicit(&pool->spinning, memory_order_relaxed);
    do {
        if (n >= pool->search_max)
            return NULL;
    } while (!atomic_compare_exchange_weak_explicit(&pool->spinning, &n, n + 1,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed));
    /* Poll the queues every w->poll pauses only: each poll pulls the
     * producers' lines away from them. A worker faster than a steady
     * submitter finds a task or two at each poll and takes them one line
     * transfer at a time (bench/pool spawn_many, one outside submitter,
     * 1 worker: polls every pause 150 ns per task, every 32 about 70 ns
     * when the two vCPUs share a cache, 245 ns when they do not, every
     * 128 120 ns). Polling seldom delays the pick-up of a burst that
     * follows a gap (requests at 4-16 workers: 7-12% slower at every
     * 128). So the interval adapts: work found at the first poll means
     * we look more often than work comes, and the interval doubles; work
     * found later, or not at all, halves it (spawn_many 97 ns at 1 worker,
     * requests unchanged). */
    unsigned polls = 0;
    for (unsigned spent = 0; !t && spent < SPIN_PAUSES; spent += w->poll) {
        for (unsigned k = 0; k < w->poll; k++)
            ALS__CPU_RELAX();
        if (++polls % 4 == 0)
            sched_yield();
        if (als__has_work(pool))
            t = als__task_take(w);
    }
    if (t && polls == 1)
        w->poll = w->poll < POLL_MAX ? w->poll * 2 : POLL_MAX;
    else
        w->poll = w->poll > POLL_MIN ? w->poll / 2 : POLL_MIN;
    /* The last spinner to find work hands the role on while work remains,
     * so a stream of tasks keeps one worker looking. */
    if (atomic_fetch_sub_explicit(&pool->spinning, 1, memory_order_seq_cst) == 1 && t &&
        als__has_work(pool))
        als__hand_off(pool);
    return t;
}

void *als__worker_main(void *arg)
{
    struct worker *w = arg;
    als_pool_t *pool = w->pool;
    struct worker *unwinding __attribute__((cleanup(worker_unwound))) = w;
    als__self = w;
    w->inline_floor = inline_floor((uintptr_t)__builtin_frame_address(0));
    /* "<name>-<n>"; Linux keeps 15 bytes of a thread name. */
    char name[32];
    snprintf(name, sizeof name, "%.15s-%u", pool->name, w->index);
    name[15] = '\0';
    pthread_setname_np(pthread_self(), name);

    bool woken = false;
    for (;;) {
        struct als__task *t = als__task_take(w);
        if (t && woken && als__has_work(pool))
            /* Submits that found a spinner or a claimed sleeper woke no
             * one more: a worker fresh from a park passes the wake-up on
             * while work remains, one worker per queued task at most. */
            als__hand_off(pool);
        woken = false;
        if (!t) {
            als__worker_flush(w);
            t = worker_spin(w);
        }
        if (t) {
            task_run_top(w, t);
            continue;
        }
        if (als__pool_finished(pool))
            break;
        worker_park(w);
        woken = true;
    }
    unwinding = NULL;
    als__wake_all(pool); /* the others see the end too */
    return NULL;
}

/* A waiter's cancellation hook: wakes it (it re-checks its scope). */
static void wait_cancelled(void *word)
{
    atomic_fetch_add_explicit((_Atomic uint32_t *)word, 1, memory_order_release);
    als__futex_wake_all(word);
}

int als__wait(bool (*done)(void *), void *ctx, _Atomic uint32_t *word,
              _Atomic uint32_t *waiting, uint64_t deadline)
{
    struct worker *w = als__self;
    int rc = 0;
    /* The caller's scope (borrowed: the caller's context holds it, and
     * tasks this wait helps with restore that context when they end). */
    struct als_cancel *scope = als__cancel_current_scope();
    uint64_t scope_deadline = UINT64_MAX;
    struct als__cancel_hook hook = { .fn = wait_cancelled, .arg = (void *)word };
    bool hooked = false;
    if (scope) {
        int64_t d = als__cancel_deadline(scope);
        scope_deadline = d == INT64_MAX ? UINT64_MAX : (uint64_t)(d < 0 ? 0 : d);
        hooked = als__cancel_hook_add(scope, &hook); /* false: cancelled */
    }
    atomic_fetch_add_explicit(waiting, 1, memory_order_seq_cst);
    for (;;) {
        uint32_t seq = atomic_load_explicit(word, memory_order_acquire);
        if (done(ctx))
            break;
        uint64_t now = als__now_ns();
        if (now >= deadline || now >= scope_deadline) {
            rc = ALS_ETIMEDOUT;
            break;
        }
        if (ALS__UNLIKELY(scope) && als__cancel_is_cancelled(scope)) {
            rc = ALS_ECANCELED;
            break;
        }
        if (w) {
            /* Help: run this pool's queued tasks instead of blocking a
             * thread the awaited work may need. */
            struct als__task *t = als__task_take(w);
            if (t) {
                als__task_run(w, t);
                continue;
            }
            /* Nothing to run: sleep briefly on our own word; new tasks
             * go to the awake workers or wake the parked ones. */
            als__worker_flush(w);
            als__futex_wait_until(word, seq, deadline < scope_deadline ? deadline : scope_deadline,
                                  HELP_NAP_NS);
            continue;
        }
        als__futex_wait_until(word, seq, deadline < scope_deadline ? deadline : scope_deadline,
                              UINT64_MAX);
    }
    atomic_fetch_sub_explicit(waiting, 1, memory_order_relaxed);
    if (hooked)
        als__cancel_hook_remove(scope, &hook);
    return rc;
}
