/*
 * The scheduler's contracts under work stealing and sharded submission
 * (issue 12), written against the public API only, so that they hold for
 * today's pool (one shared ring, a LIFO slot per worker) and keep checking
 * the next one (per-worker local queues, thieves, per-worker inboxes):
 *
 *   - stolen mid-chain: a chain of tasks, each submitting the next, runs
 *     every link in its submitter's context with its ids (a link's trigger
 *     id is the execution id of the link that submitted it), however the
 *     links travel between workers; several chains at once see no
 *     crosstalk;
 *   - inbox overflow: several outside threads (and tasks) submit more than
 *     queue_capacity while every worker is held: REJECT accepts at most the
 *     capacity and counts every refusal, BLOCK accepts everything in the
 *     end; every accepted task runs exactly once;
 *   - shutdown with queued work: tasks queued from outside and from tasks
 *     (the workers' local queues) are cancelled by CANCEL, each cancel
 *     callback once in its submit-time context, and run once by DRAIN;
 *   - stats: balanced at quiescence, the scheduling counters written and
 *     monotonic.
 *
 * Workers are held with gates (tests/gate.h), never with sleeps. Tasks
 * record what they saw; the main thread asserts once they are done.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "als.h"
#include "gate.h"
#include "pool_helpers.h"

#define WORKERS 8 /* two groups sharing an inbox each (als.h) */

/* The pool shards outside submits for the workers that can run at once,
 * the smaller of its workers and the CPUs (als.h, queue_capacity), so on
 * a machine with fewer CPUs than WORKERS it would have no inboxes. The
 * test binary is linked with --wrap=sched_getaffinity (tests/
 * CMakeLists.txt): the library sees fake_cpus CPUs, WORKERS unless a test
 * says otherwise. */
static int fake_cpus = WORKERS;

int __wrap_sched_getaffinity(pid_t pid, size_t size, cpu_set_t *set);
int __wrap_sched_getaffinity(pid_t pid, size_t size, cpu_set_t *set)
{
    (void)pid;
    CPU_ZERO_S(size, set);
    for (int c = 0; c < fake_cpus; c++)
        CPU_SET_S(c, size, set);
    return 0;
}

/* Tasks a held worker may keep beyond queue_capacity in a REJECT pool or
 * a small BLOCK pool: what it submitted itself and keeps in its slot
 * (als.h, queue_capacity: "the capacity, plus a slot per worker"). */
#define SLACK_PER_WORKER 1

/* als.h (queue_capacity): a BLOCK pool of at least OWN_CAP capacity per
 * worker also lets each worker keep up to OWN_QUEUE tasks its own tasks
 * submitted (its slot and own queue): the slack per worker there. */
#define OWN_CAP 256
#define OWN_QUEUE 257

/* als.h (queue_capacity): there, with eight workers or more, each four
 * workers also share an inbox of this many outside submits. */
#define INBOX 64
#define INBOX_GROUP 4

/* als.h, als_submit: submits from a task may run inline once the queue
 * holds this many tasks per worker; the tests stay below it. */
#define THROTTLE_PER_WORKER 64

static als_pool_t *pool_new(unsigned threads, unsigned cap, enum als_full_policy on_full)
{
    als_pool_options o = {.threads = threads, .queue_capacity = cap, .on_full = on_full};
    als_pool_t *p = als_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* Holds every worker of a WORKERS-thread pool at `g`, one task per worker:
 * each hold is submitted once the previous one has arrived, so no worker
 * can take two. */
static void hold_workers(als_pool_t *p, struct gate *g, als_task_fn fn, void *const *args)
{
    for (int i = 0; i < WORKERS; i++) {
        assert_int_equal(als_submit(p, fn, args ? args[i] : g), 0);
        gate_await_arrivals(g, i + 1);
    }
}

/* A counter the main thread waits on. */
struct done {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
};

static void done_init(struct done *d)
{
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->n = 0;
}

static void done_add(struct done *d)
{
    pthread_mutex_lock(&d->mu);
    d->n++;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void done_wait(struct done *d, int n)
{
    pthread_mutex_lock(&d->mu);
    while (d->n < n)
        pthread_cond_wait(&d->cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ==== stolen mid-chain ================================================== */

#define CHAIN_LEN 1500
#define CHAINS 4
/* How long a link watches for its successor to start elsewhere before it
 * returns: it keeps its worker busy so that an idle worker may take the
 * successor (a steal). Shapes the scenario; nothing waits on it. With
 * several chains the workers are busy anyway: a short watch. */
#define WATCH_SPINS 2000
#define WATCH_SPINS_BUSY 128

struct chain;

/* What link i saw. Written by its task, read after the chain is done. */
struct link {
    struct chain *c;
    int i;
    uint64_t exec, trig;
    void *seen;
    pthread_t thread;
    _Atomic int started;
    _Atomic int runs;
};

struct chain {
    als_pool_t *pool;
    als_t *store;
    void *value;               /* what the chain's submitter bound */
    uint64_t root_exec;        /* the submitter's execution id */
    struct link *links;        /* [CHAIN_LEN] */
    struct done *done;
    int watch;                 /* spins a link watches its successor */
    int submit_rc;             /* first failed submit, else 0 */
    _Atomic int moved;         /* links that started while their predecessor ran */
    _Atomic int after_submit_bad; /* a link's own context changed by its submit */
    _Atomic int fillers;       /* filler tasks run */
    _Atomic int filler_bad;    /* fillers that saw a wrong context or trigger */
};

/* A task submitted after the next link, so that a LIFO slot holds the
 * filler and the next link waits where a thief can take it. */
struct filler {
    struct chain *c;
    uint64_t parent_exec;
};

static int filler_task(void *arg)
{
    struct filler *f = arg;
    if (als_get(f->c->store) != f->c->value || als_trigger_async_id() != f->parent_exec)
        atomic_fetch_add(&f->c->filler_bad, 1);
    atomic_fetch_add(&f->c->fillers, 1);
    free(f);
    return 0;
}

static int link_task(void *arg)
{
    struct link *l = arg;
    struct chain *c = l->c;
    atomic_store(&l->started, 1);
    l->exec = als_execution_async_id();
    l->trig = als_trigger_async_id();
    l->seen = als_get(c->store);
    l->thread = pthread_self();
    atomic_fetch_add(&l->runs, 1);
    if (l->i + 1 == CHAIN_LEN) {
        done_add(c->done);
        return 0;
    }
    struct link *next = &c->links[l->i + 1];
    int rc = als_submit(c->pool, link_task, next);
    struct filler *f = malloc(sizeof *f);
    if (rc == 0 && f) {
        *f = (struct filler){c, l->exec};
        rc = als_submit(c->pool, filler_task, f);
    }
    if (rc != 0 || !f) {
        free(f);
        c->submit_rc = rc ? rc : ALS_ENOMEM;
        done_add(c->done); /* the chain ends here; the main thread fails it */
        return 0;
    }
    for (int k = 0; k < c->watch; k++) {
        if (atomic_load_explicit(&next->started, memory_order_relaxed)) {
            atomic_fetch_add(&c->moved, 1);
            break;
        }
        if (k % 16 == 15)
            sched_yield(); /* a thief may need this CPU (2-CPU machines) */
    }
    if (als_get(c->store) != c->value || als_execution_async_id() != l->exec ||
        als_trigger_async_id() != l->trig)
        atomic_fetch_add(&c->after_submit_bad, 1);
    return 0;
}

static void chain_init(struct chain *c, als_pool_t *p, als_t *store, void *value, struct done *d,
                       int watch)
{
    memset(c, 0, sizeof *c);
    c->watch = watch;
    c->pool = p;
    c->store = store;
    c->value = value;
    c->done = d;
    c->links = calloc(CHAIN_LEN, sizeof *c->links);
    assert_non_null(c->links);
    for (int i = 0; i < CHAIN_LEN; i++) {
        c->links[i].c = c;
        c->links[i].i = i;
    }
}

/* Inside the submitter's resource scope (a fresh execution id per chain)
 * and its binding of the chain's value. */
static void *chain_start_bound(void *arg)
{
    struct chain *c = arg;
    c->root_exec = als_execution_async_id();
    int rc = als_submit(c->pool, link_task, &c->links[0]);
    if (rc != 0) {
        c->submit_rc = rc;
        done_add(c->done);
    }
    return NULL;
}

static void *chain_start_scoped(void *arg)
{
    struct chain *c = arg;
    return als_run(c->store, c->value, chain_start_bound, c);
}

static void *chain_submitter(void *arg)
{
    struct chain *c = arg;
    als_resource_t *r = als_resource_new("chain");
    if (!r) {
        c->submit_rc = ALS_ENOMEM;
        done_add(c->done);
        return NULL;
    }
    als_resource_run_in_scope(r, chain_start_scoped, c);
    als_resource_free(r);
    return NULL;
}

/* Every link ran once in the chain's context, each link's trigger is its
 * predecessor's execution id (the first one's, the submitter's), and every
 * execution id of every chain is fresh and distinct. */
static void assert_chains(struct chain *cs, int n, uint64_t steals)
{
    uint64_t *ids = calloc((size_t)n * CHAIN_LEN, sizeof *ids);
    assert_non_null(ids);
    int moved = 0, switches = 0;
    for (int k = 0; k < n; k++) {
        struct chain *c = &cs[k];
        assert_int_equal(c->submit_rc, 0);
        assert_true(c->root_exec > 1);
        for (int i = 0; i < CHAIN_LEN; i++) {
            struct link *l = &c->links[i];
            if (atomic_load(&l->runs) != 1)
                fail_msg("chain %d link %d ran %d times", k, i, atomic_load(&l->runs));
            if (l->seen != c->value)
                fail_msg("chain %d link %d saw %p, its submitter bound %p", k, i, l->seen,
                         c->value);
            uint64_t want = i ? c->links[i - 1].exec : c->root_exec;
            if (l->trig != want)
                fail_msg("chain %d link %d: trigger id %llu, want %llu (its submitter's "
                         "execution id)", k, i, (unsigned long long)l->trig,
                         (unsigned long long)want);
            ids[k * CHAIN_LEN + i] = l->exec;
            if (i && !pthread_equal(l->thread, c->links[i - 1].thread))
                switches++;
        }
        assert_int_equal(atomic_load(&c->after_submit_bad), 0);
        assert_int_equal(atomic_load(&c->fillers), CHAIN_LEN - 1);
        assert_int_equal(atomic_load(&c->filler_bad), 0);
        moved += atomic_load(&c->moved);
    }
    size_t nids = (size_t)n * CHAIN_LEN;
    qsort(ids, nids, sizeof *ids, cmp_u64);
    for (size_t i = 0; i < nids; i++) {
        if (ids[i] <= 1)
            fail_msg("execution id %llu is a reserved one", (unsigned long long)ids[i]);
        if (i && ids[i] == ids[i - 1])
            fail_msg("execution id %llu given to two links", (unsigned long long)ids[i]);
    }
    free(ids);
    /* Not asserted: whether links moved depends on the scheduler and the
     * machine. Shown so that a run can tell whether steals happened. */
    print_message("%d chain(s): %d links started while their predecessor ran, %d changed "
                  "worker; %llu steals\n", n, moved, switches, (unsigned long long)steals);
}

static void run_chains(int n)
{
    als_pool_t *p = pool_new(WORKERS, 0, ALS_FULL_BLOCK);
    als_t *store = als_new(&(als_options){.name = "chain"});
    assert_non_null(store);
    struct chain cs[CHAINS];
    int values[CHAINS];
    pthread_t th[CHAINS];
    struct done d;
    done_init(&d);
    for (int k = 0; k < n; k++)
        chain_init(&cs[k], p, store, &values[k], &d, n == 1 ? WATCH_SPINS : WATCH_SPINS_BUSY);
    /* Several submitter threads: the chains start at once, from outside. */
    for (int k = 0; k < n; k++)
        assert_int_equal(pthread_create(&th[k], NULL, chain_submitter, &cs[k]), 0);
    for (int k = 0; k < n; k++)
        assert_int_equal(pthread_join(th[k], NULL), 0);
    done_wait(&d, n);
    assert_int_equal(als_pool_drain(p), 0); /* the last fillers */
    als_pool_stats s;
    get_stats(p, &s);
    assert_chains(cs, n, s.steals);
    assert_balanced(&s);
    assert_int_equal(s.submitted, (uint64_t)n * (2 * CHAIN_LEN - 1));
    for (int k = 0; k < n; k++)
        free(cs[k].links);
    als_pool_free(p);
    als_free(store);
}

/* One chain, three idle workers beside it: thieves. */
static void chain_stolen_midway_keeps_context_and_ids(void **state)
{
    (void)state;
    run_chains(1);
}

/* Several chains at once, each bound to its own value by its own thread. */
static void concurrent_chains_see_no_crosstalk(void **state)
{
    (void)state;
    run_chains(CHAINS);
}

/* ==== inbox overflow ==================================================== */

#define CAP 64                 /* queue_capacity: a power of two, kept as is */
#define OUTSIDE 4              /* outside submitter threads */

/* A run: the pool's capacity, submits per outside thread and per held
 * worker (from inside), and how many tasks may wait beyond the capacity
 * per held worker. */
struct overflow_shape {
    unsigned cap;
    int out_tries, in_tries;
    int slack;                 /* in all */
};

/* Every submit attempt has a slot: whether it was accepted, how often its
 * task ran. */
struct overflow {
    struct overflow_shape sh;
    int slots;
    als_pool_t *pool;
    struct gate start;         /* the workers wait here, then flood */
    struct gate hold;          /* ...and here once they have */
    _Atomic int *runs;         /* [slots] */
    bool *accepted;            /* [slots] */
    int bad_rc;                /* a submit answer other than 0 / ALS_EFULL */
    _Atomic int rejected;
    _Atomic int next_worker;
    _Atomic int outside_done;  /* outside threads that made all their submits */
};

struct slot_arg {
    struct overflow *o;
    int slot;
};

static int slot_task(void *arg)
{
    struct slot_arg *a = arg;
    atomic_fetch_add(&a->o->runs[a->slot], 1);
    free(a);
    return 0;
}

/* Submits slots [from, from + n), detached (never run inline by
 * throttling) from inside the pool, plain from outside. */
static void flood(struct overflow *o, int from, int n, bool detached)
{
    for (int i = from; i < from + n; i++) {
        struct slot_arg *a = malloc(sizeof *a);
        if (!a) {
            o->bad_rc = ALS_ENOMEM;
            return;
        }
        *a = (struct slot_arg){o, i};
        als_task t = {.fn = slot_task, .arg = a, .flags = detached ? ALS_TASK_DETACHED : 0};
        int rc = detached ? als_submit_task(o->pool, &t) : als_submit(o->pool, slot_task, a);
        if (rc == 0) {
            o->accepted[i] = true;
        } else {
            free(a);
            if (rc == ALS_EFULL)
                atomic_fetch_add(&o->rejected, 1);
            else
                o->bad_rc = rc;
        }
    }
}

/* A held worker: once every worker is held, it floods from inside (its
 * submits go to its own slot and queue, where the scheduler has them),
 * then waits. */
static int flood_hold_task(void *arg)
{
    struct overflow *o = arg;
    gate_pass(&o->start);
    int w = atomic_fetch_add(&o->next_worker, 1);
    flood(o, OUTSIDE * o->sh.out_tries + w * o->sh.in_tries, o->sh.in_tries, true);
    gate_pass(&o->hold);
    return 0;
}

struct outside {
    struct overflow *o;
    int k;
};

static void *outside_main(void *arg)
{
    struct outside *s = arg;
    flood(s->o, s->k * s->o->sh.out_tries, s->o->sh.out_tries, false);
    atomic_fetch_add(&s->o->outside_done, 1);
    return NULL;
}

static int accepted_count(const struct overflow *o)
{
    int n = 0;
    for (int i = 0; i < o->slots; i++)
        n += o->accepted[i];
    return n;
}

/* Each accepted task ran once, no refused one ran. */
static void assert_ran_once(struct overflow *o)
{
    for (int i = 0; i < o->slots; i++) {
        int r = atomic_load(&o->runs[i]);
        if (r != (o->accepted[i] ? 1 : 0))
            fail_msg("slot %d (%s) ran %d times", i, o->accepted[i] ? "accepted" : "refused", r);
    }
}

/* Holds every worker, starts the outside submitters and lets the workers
 * flood; returns with the workers held and their floods done (the outside
 * threads may still be submitting). */
static void overflow_start(struct overflow *o, struct overflow_shape sh,
                           enum als_full_policy on_full, struct outside *out, pthread_t *th)
{
    memset(o, 0, sizeof *o);
    o->sh = sh;
    o->slots = OUTSIDE * sh.out_tries + WORKERS * sh.in_tries;
    o->runs = calloc((size_t)o->slots, sizeof *o->runs);
    o->accepted = calloc((size_t)o->slots, sizeof *o->accepted);
    assert_non_null(o->runs);
    assert_non_null(o->accepted);
    o->pool = pool_new(WORKERS, sh.cap, on_full);
    gate_init(&o->start);
    gate_init(&o->hold);
    void *args[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        args[i] = o;
    hold_workers(o->pool, &o->start, flood_hold_task, args);
    for (int k = 0; k < OUTSIDE; k++) {
        out[k] = (struct outside){o, k};
        assert_int_equal(pthread_create(&th[k], NULL, outside_main, &out[k]), 0);
    }
    gate_open(&o->start);
    gate_await_arrivals(&o->hold, WORKERS);
}

static void overflow_end(struct overflow *o)
{
    als_pool_free(o->pool);
    gate_destroy(&o->start);
    gate_destroy(&o->hold);
    free(o->runs);
    free((void *)o->accepted);
}

/* REJECT: with every worker held, at most the capacity (plus the
 * documented slack) is accepted, and at least what als.h promises; every
 * attempt is either accepted or counted as rejected. */
static void reject_overflow_across_submitters(void **state)
{
    (void)state;
    const struct overflow_shape sh = {CAP, CAP, CAP / 2, SLACK_PER_WORKER * WORKERS};
    struct overflow o;
    struct outside out[OUTSIDE];
    pthread_t th[OUTSIDE];
    overflow_start(&o, sh, ALS_FULL_REJECT, out, th);
    for (int k = 0; k < OUTSIDE; k++)
        assert_int_equal(pthread_join(th[k], NULL), 0);
    als_pool_stats held;
    get_stats(o.pool, &held); /* nothing can start or finish meanwhile */
    gate_open(&o.hold);
    assert_int_equal(als_pool_drain(o.pool), 0);

    int accepted = accepted_count(&o), rejected = atomic_load(&o.rejected);
    print_message("%d of %d submits accepted into the held pool (capacity %d)\n", accepted,
                  o.slots, CAP);
    assert_int_equal(o.bad_rc, 0);
    assert_int_equal(accepted + rejected, o.slots);
    int most = CAP + sh.slack;
    if (accepted > most || accepted < CAP)
        fail_msg("%d tasks accepted into a held pool of capacity %d (slack %d): "
                 "want %d to %d", accepted, CAP, sh.slack, CAP, most);
    assert_int_equal(held.queued, accepted);
    assert_int_equal(held.running, WORKERS);
    assert_int_equal(held.submitted, WORKERS + accepted);
    assert_int_equal(held.rejected, rejected);
    assert_ran_once(&o);
    als_pool_stats s;
    get_stats(o.pool, &s);
    assert_balanced(&s);
    assert_int_equal(s.submitted, WORKERS + accepted);
    assert_int_equal(s.completed, WORKERS + accepted);
    assert_int_equal(s.rejected, rejected);
    overflow_end(&o);
}

/* BLOCK: the outside submitters wait for room while the workers are held
 * (the pool is full: a worker's own submits into it run inline, als.h),
 * and every submit succeeds once they are let go. */
static void block_overflow(struct overflow_shape sh)
{
    struct overflow o;
    struct outside out[OUTSIDE];
    pthread_t th[OUTSIDE];
    overflow_start(&o, sh, ALS_FULL_BLOCK, out, th);
    /* Wait (polling the counters, not sleeping) until the pool is full:
     * the outside threads submit more than it can hold, so they are then
     * waiting for room. Or until they are done: a scheduler may let a
     * blocked submitter run queued tasks itself. */
    als_pool_stats held;
    for (;;) {
        get_stats(o.pool, &held);
        if (held.queued >= sh.cap - 1 || atomic_load(&o.outside_done) == OUTSIDE)
            break;
        sched_yield();
    }
    /* A blocked submitter's task counts as accepted and queued while it
     * waits for room: one more per outside thread. */
    uint64_t most = sh.cap + (uint64_t)sh.slack + OUTSIDE;
    print_message("%llu tasks waiting in the held pool (capacity %u)\n",
                  (unsigned long long)held.queued, sh.cap);
    gate_open(&o.hold);
    for (int k = 0; k < OUTSIDE; k++)
        assert_int_equal(pthread_join(th[k], NULL), 0);
    assert_int_equal(als_pool_drain(o.pool), 0);

    if (held.queued > most)
        fail_msg("%llu tasks waiting in a held pool of capacity %u (slack %d, "
                 "%d blocked submitters)", (unsigned long long)held.queued, sh.cap, sh.slack,
                 OUTSIDE);
    assert_int_equal(o.bad_rc, 0);
    assert_int_equal(atomic_load(&o.rejected), 0);
    assert_int_equal(accepted_count(&o), o.slots);
    assert_ran_once(&o);
    als_pool_stats s;
    get_stats(o.pool, &s);
    assert_balanced(&s);
    assert_int_equal(s.submitted, WORKERS + o.slots);
    assert_int_equal(s.completed, WORKERS + o.slots);
    assert_int_equal(s.rejected, 0);
    overflow_end(&o);
}

static void block_overflow_across_submitters(void **state)
{
    (void)state;
    block_overflow((struct overflow_shape){CAP, CAP, CAP / 2, SLACK_PER_WORKER * WORKERS});
}

/* A pool large enough for the workers' own queues and inboxes (als.h),
 * each held worker submitting more than its own queue holds: they spill
 * to the shared queue; the outside threads fill the inboxes, overflow to
 * the shared queue, which fills, and wait. */
static void block_overflow_with_own_queues(void **state)
{
    (void)state;
    block_overflow((struct overflow_shape){OWN_CAP * WORKERS, OWN_CAP * WORKERS,
                                           OWN_QUEUE + OWN_QUEUE / 2,
                                           OWN_QUEUE * WORKERS + INBOX * (WORKERS / INBOX_GROUP)});
}

/* ==== sharded outside submission ======================================== */

#define HELD (WORKERS - 1)     /* workers held; one is left free */
#define DEALT (WORKERS * 10)   /* outside tasks submitted while they are */

static _Atomic int dealt_runs;

static int dealt_task(void *arg)
{
    (void)arg;
    atomic_fetch_add(&dealt_runs, 1);
    return 0;
}

/* Holds all workers of a pool that sees `cpus` CPUs but one, submits
 * DEALT tasks from outside, waits until the free worker has run them all
 * (the others still held), and returns how many it stole meanwhile. */
static uint64_t steals_with_one_free_worker(int cpus)
{
    fake_cpus = cpus;
    als_pool_t *p = pool_new(WORKERS, 0, ALS_FULL_BLOCK);
    fake_cpus = WORKERS;
    struct gate g;
    block_workers(p, &g, HELD);
    als_pool_stats before;
    get_stats(p, &before);
    atomic_store(&dealt_runs, 0);
    for (int i = 0; i < DEALT; i++)
        assert_int_equal(als_submit(p, dealt_task, NULL), 0);
    while (atomic_load(&dealt_runs) < DEALT)
        sched_yield();
    als_pool_stats after;
    get_stats(p, &after);
    gate_open(&g);
    assert_int_equal(als_pool_drain(p), 0);
    als_pool_free(p);
    gate_destroy(&g);
    return after.steals - before.steals;
}

/* Outside submits are dealt round the groups' inboxes: with all workers
 * but one held, the tasks dealt to the other group's inbox run only if the
 * free worker steals them, and they do, while the others are still held.
 * (With one shared queue the free worker takes them all without a steal;
 * without stealing from inboxes this waits forever.) */
static void outside_submits_dealt_and_stolen(void **state)
{
    (void)state;
    uint64_t stolen = steals_with_one_free_worker(WORKERS);
    print_message("%llu of %d outside tasks stolen from held workers' inboxes\n",
                  (unsigned long long)stolen, DEALT);
    /* The other group's inbox was dealt half of them. */
    assert_true(stolen >= DEALT / (WORKERS / INBOX_GROUP) / 2);
}

/* With fewer CPUs than two inbox groups, an 8-worker pool has no inboxes:
 * on 2 CPUs they only moved every outside task through a steal (bench/pool
 * requests 1.27-1.31x faster without them at 8-16 workers). The same
 * scene: the free worker now takes every task from the shared queue, and
 * steals none. */
static void no_inboxes_beyond_the_cpus(void **state)
{
    (void)state;
    assert_int_equal(steals_with_one_free_worker(2), 0);
}

/* A pool of one worker starts outside submits in the order they were
 * accepted (als.h). Shaped to catch a pool that shards them (an inbox that
 * fills, the rest going elsewhere, the inbox then taking newer submits
 * while older ones still wait): tasks 0..62 and a second gate fill an
 * inbox of INBOX, 63..99 go past it; once the worker waits at the second
 * gate, 100..149 would find the inbox empty again. */
#define ORDERED 150
#define FIRST (INBOX - 1)
#define BEFORE_GATE2 100
static int order_seen[ORDERED];
static _Atomic int order_n;

static int ordered_task(void *arg)
{
    order_seen[atomic_fetch_add(&order_n, 1)] = (int)(intptr_t)arg;
    return 0;
}

static void submit_ordered(als_pool_t *p, int from, int to)
{
    for (int i = from; i < to; i++)
        assert_int_equal(als_submit(p, ordered_task, (void *)(intptr_t)i), 0);
}

static void one_worker_keeps_outside_order(void **state)
{
    (void)state;
    als_pool_t *p = pool_new(1, 0, ALS_FULL_BLOCK);
    struct gate g1, g2;
    gate_init(&g1);
    gate_init(&g2);
    assert_int_equal(als_submit(p, gate_task, &g1), 0);
    gate_await_arrivals(&g1, 1);
    atomic_store(&order_n, 0);
    submit_ordered(p, 0, FIRST);
    assert_int_equal(als_submit(p, gate_task, &g2), 0);
    submit_ordered(p, FIRST, BEFORE_GATE2);
    gate_open(&g1);
    gate_await_arrivals(&g2, 1);
    submit_ordered(p, BEFORE_GATE2, ORDERED);
    gate_open(&g2);
    assert_int_equal(als_pool_drain(p), 0);
    assert_int_equal(atomic_load(&order_n), ORDERED);
    for (int i = 0; i < ORDERED; i++)
        if (order_seen[i] != i)
            fail_msg("task %d started %dth", order_seen[i], i);
    als_pool_free(p);
    gate_destroy(&g1);
    gate_destroy(&g2);
}

/* ==== shutdown with queued work ========================================= */

#define CHILDREN 16            /* queued by each held worker, from inside */
#define OUTSIDE_TASKS 32       /* queued by each of two outside threads */
#define QUEUED (WORKERS * CHILDREN + 2 * OUTSIDE_TASKS)

/* One queued task: what its fn and its cancel callback saw. */
struct queued {
    struct sd *sd;
    void *want;                /* the value bound when it was submitted */
    _Atomic int runs, cancels;
    void *run_seen, *cancel_seen;
    bool respawn;              /* submit a grandchild when run (DRAIN) */
    struct queued *grandchild;
};

struct sd {
    als_pool_t *pool;
    als_t *store;
    struct gate start, hold;
    struct queued q[QUEUED];
    struct queued grand[WORKERS * CHILDREN];
    int values[WORKERS + 2];
    _Atomic int next_worker;
    int bad_rc;
};

static int queued_task(void *arg)
{
    struct queued *q = arg;
    q->run_seen = als_get(q->sd->store);
    atomic_fetch_add(&q->runs, 1);
    if (q->respawn) {
        als_task t = {.fn = queued_task, .arg = q->grandchild};
        int rc = als_submit_task(q->sd->pool, &t);
        if (rc)
            q->sd->bad_rc = rc;
    }
    return 0;
}

static void queued_cancel(void *arg)
{
    struct queued *q = arg;
    q->cancel_seen = als_get(q->sd->store);
    atomic_fetch_add(&q->cancels, 1);
}

struct batch {
    struct sd *sd;
    struct queued *q;
    int n;
};

static void *submit_batch(void *arg)
{
    struct batch *b = arg;
    for (int i = 0; i < b->n; i++) {
        als_task t = {.fn = queued_task, .arg = &b->q[i], .cancel = queued_cancel};
        int rc = als_submit_task(b->sd->pool, &t);
        if (rc)
            b->sd->bad_rc = rc;
    }
    return NULL;
}

/* Queues a batch with the store bound to the batch's value. */
static void *submit_batch_bound(void *arg)
{
    struct batch *b = arg;
    return als_run(b->sd->store, b->q[0].want, submit_batch, b);
}

/* A held worker: once all are held, queues CHILDREN tasks from inside,
 * in its own binding, then waits. */
static int spawner_task(void *arg)
{
    struct sd *sd = arg;
    gate_pass(&sd->start);
    int w = atomic_fetch_add(&sd->next_worker, 1);
    struct batch b = {sd, &sd->q[w * CHILDREN], CHILDREN};
    submit_batch_bound(&b);
    gate_pass(&sd->hold);
    return 0;
}

static void sd_init(struct sd *sd, bool respawn)
{
    memset(sd, 0, sizeof *sd);
    sd->pool = pool_new(WORKERS, 0, ALS_FULL_BLOCK);
    sd->store = als_new(&(als_options){.name = "shutdown"});
    assert_non_null(sd->store);
    gate_init(&sd->start);
    gate_init(&sd->hold);
    for (int i = 0; i < QUEUED; i++) {
        struct queued *q = &sd->q[i];
        q->sd = sd;
        q->want = &sd->values[i < WORKERS * CHILDREN ? i / CHILDREN
                                                     : WORKERS + (i - WORKERS * CHILDREN) /
                                                                     OUTSIDE_TASKS];
        if (respawn && i < WORKERS * CHILDREN) {
            q->respawn = true;
            q->grandchild = &sd->grand[i];
            sd->grand[i] = (struct queued){.sd = sd, .want = q->want};
        }
    }
}

/* Every worker held, CHILDREN tasks queued by each from inside and
 * OUTSIDE_TASKS by each of two outside threads; then `how` shutdown, the
 * workers let go once it has begun (pool_helpers.h). Returns the probes
 * that got in before the shutdown began. */
static int sd_run(struct sd *sd, int how)
{
    _Static_assert(QUEUED < THROTTLE_PER_WORKER * WORKERS, "no submit may run inline");
    void *args[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        args[i] = sd;
    hold_workers(sd->pool, &sd->start, spawner_task, args);
    gate_open(&sd->start);
    gate_await_arrivals(&sd->hold, WORKERS);
    struct batch b[2];
    pthread_t th[2];
    for (int k = 0; k < 2; k++) {
        b[k] = (struct batch){sd, &sd->q[WORKERS * CHILDREN + k * OUTSIDE_TASKS], OUTSIDE_TASKS};
        assert_int_equal(pthread_create(&th[k], NULL, submit_batch_bound, &b[k]), 0);
    }
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_join(th[k], NULL), 0);
    assert_int_equal(sd->bad_rc, 0);
    return shutdown_gated(sd->pool, &sd->hold, how);
}

static void sd_end(struct sd *sd)
{
    als_pool_free(sd->pool);
    als_free(sd->store);
    gate_destroy(&sd->start);
    gate_destroy(&sd->hold);
}

static void cancel_reaches_local_queues_and_inboxes(void **state)
{
    (void)state;
    static struct sd sd;
    sd_init(&sd, false);
    int probes = sd_run(&sd, ALS_SHUTDOWN_CANCEL);
    for (int i = 0; i < QUEUED; i++) {
        struct queued *q = &sd.q[i];
        if (atomic_load(&q->runs) != 0 || atomic_load(&q->cancels) != 1)
            fail_msg("queued task %d (%s): ran %d times, cancelled %d times", i,
                     i < WORKERS * CHILDREN ? "from a task" : "from outside",
                     atomic_load(&q->runs), atomic_load(&q->cancels));
        if (q->cancel_seen != q->want)
            fail_msg("queued task %d cancelled in the wrong context", i);
    }
    als_pool_stats s;
    get_stats(sd.pool, &s);
    assert_balanced(&s);
    assert_int_equal(s.submitted, WORKERS + QUEUED + probes);
    assert_int_equal(s.completed, WORKERS);
    assert_int_equal(s.cancelled, QUEUED + probes);
    assert_int_equal(s.failed, 0);
    sd_end(&sd);
}

/* DRAIN runs them all, and what they submit meanwhile (from tasks). */
static void drain_runs_local_queues_and_inboxes(void **state)
{
    (void)state;
    static struct sd sd;
    sd_init(&sd, true);
    int probes = sd_run(&sd, ALS_SHUTDOWN_DRAIN);
    assert_int_equal(sd.bad_rc, 0);
    for (int i = 0; i < QUEUED + WORKERS * CHILDREN; i++) {
        struct queued *q = i < QUEUED ? &sd.q[i] : &sd.grand[i - QUEUED];
        if (atomic_load(&q->runs) != 1 || atomic_load(&q->cancels) != 0)
            fail_msg("task %d: ran %d times, cancelled %d times", i, atomic_load(&q->runs),
                     atomic_load(&q->cancels));
        if (q->run_seen != q->want)
            fail_msg("task %d ran in the wrong context", i);
    }
    als_pool_stats s;
    get_stats(sd.pool, &s);
    assert_balanced(&s);
    uint64_t all = WORKERS + QUEUED + WORKERS * CHILDREN + (uint64_t)probes;
    assert_int_equal(s.submitted, all);
    assert_int_equal(s.completed, all);
    assert_int_equal(s.cancelled, 0);
    sd_end(&sd);
}

/* ==== drain across outside submitters ================================== */

/* Outside submits are counted on several lines (the thread picks one): a
 * drain must wait for the tasks of every outside thread, and the stats
 * must count each of them once. Each task passes a gate, so none can end
 * before every submit is in; the drainer notes how many had ended when
 * its drain returned. A drain that missed a line would return early (its
 * sum reaching 0 with tasks left) or never (done outgrowing the sum:
 * ctest's timeout); summing one line of eight hangs this file. */
#define OUT_THREADS 8
#define OUT_TASKS 40

struct out_run {
    als_pool_t *pool;
    struct gate gate;
    atomic_int ended, bad_rc;
    int ended_at_drain;
};

static int out_task(void *arg)
{
    struct out_run *r = arg;
    gate_pass(&r->gate);
    atomic_fetch_add(&r->ended, 1);
    return 0;
}

static void *out_submitter(void *arg)
{
    struct out_run *r = arg;
    for (int i = 0; i < OUT_TASKS; i++)
        if (als_submit(r->pool, out_task, r) != 0)
            atomic_fetch_add(&r->bad_rc, 1);
    return NULL;
}

static void *out_drainer(void *arg)
{
    struct out_run *r = arg;
    if (als_pool_drain(r->pool) != 0)
        atomic_fetch_add(&r->bad_rc, 1);
    r->ended_at_drain = atomic_load(&r->ended);
    return NULL;
}

static void drain_waits_for_every_outside_thread(void **state)
{
    (void)state;
    static struct out_run r;
    r = (struct out_run){0};
    gate_init(&r.gate);
    als_pool_options o = {.threads = WORKERS, .queue_capacity = 1024};
    r.pool = als_pool_new(&o);
    assert_non_null(r.pool);
    pthread_t t[OUT_THREADS], d;
    for (int i = 0; i < OUT_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, out_submitter, &r), 0);
    for (int i = 0; i < OUT_THREADS; i++)
        pthread_join(t[i], NULL);
    /* Every submit is in; the workers hold WORKERS tasks at the gate. */
    gate_await_arrivals(&r.gate, WORKERS);
    assert_int_equal(pthread_create(&d, NULL, out_drainer, &r), 0);
    gate_open(&r.gate);
    pthread_join(d, NULL);
    assert_int_equal(atomic_load(&r.bad_rc), 0);
    assert_int_equal(r.ended_at_drain, OUT_THREADS * OUT_TASKS);
    als_pool_stats s;
    get_stats(r.pool, &s);
    assert_balanced(&s);
    assert_int_equal(s.submitted, OUT_THREADS * OUT_TASKS);
    assert_int_equal(s.completed, OUT_THREADS * OUT_TASKS);
    als_pool_free(r.pool);
    gate_destroy(&r.gate);
}

/* ==== stats sanity ====================================================== */

_Static_assert(ALS_POOL_STATS_VERSION >= 2, "parks, wakeups and steals are counted");

#define UNWRITTEN 0xababababababababull /* get_stats' fill */

struct fan {
    als_pool_t *pool;
    int depth;
};

static int fan_task(void *arg)
{
    struct fan *f = arg;
    if (f->depth > 0) {
        for (int i = 0; i < 2; i++) {
            struct fan *k = malloc(sizeof *k); /* each task frees its own */
            if (!k)
                return 1;
            *k = (struct fan){f->pool, f->depth - 1};
            if (als_submit(f->pool, fan_task, k) != 0) {
                free(k);
                return 1;
            }
        }
    }
    free(f);
    return 0;
}

/* Outside submits and a fan-out tree from tasks: 2^(depth+1) - 1 + n. */
static uint64_t workload(als_pool_t *p, int n, int depth)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(als_submit(p, noop_task, NULL), 0);
    struct fan *f = malloc(sizeof *f);
    assert_non_null(f);
    *f = (struct fan){p, depth};
    assert_int_equal(als_submit(p, fan_task, f), 0);
    assert_int_equal(als_pool_drain(p), 0);
    return (uint64_t)n + (2ull << depth) - 1;
}

static void assert_sched_written(const als_pool_stats *s)
{
    assert_true(s->parks != UNWRITTEN);
    assert_true(s->wakeups != UNWRITTEN);
    assert_true(s->submitter_wakeups != UNWRITTEN);
    assert_true(s->steals != UNWRITTEN);
}

/* The scheduling counters never go back (checked across two reads with
 * nothing submitted between, and across more work). */
static void assert_sched_monotonic(const als_pool_stats *a, const als_pool_stats *b)
{
    assert_true(b->parks >= a->parks);
    assert_true(b->wakeups >= a->wakeups);
    assert_true(b->submitter_wakeups >= a->submitter_wakeups);
    assert_true(b->steals >= a->steals);
}

static void stats_balanced_and_counters_monotonic(void **state)
{
    (void)state;
    als_pool_t *p = pool_new(WORKERS, 0, ALS_FULL_BLOCK);
    uint64_t total = workload(p, 500, 9);
    als_pool_stats a, b, c;
    /* Give the idle workers a chance to park, so that the check below
     * compares counts that moved (a counter reset by reading would
     * otherwise pass). Bounded, and nothing depends on it. */
    for (int i = 0; i < 100000; i++) {
        get_stats(p, &a);
        if (a.parks > 0)
            break;
        sched_yield();
    }
    get_stats(p, &b);
    assert_balanced(&a);
    assert_int_equal(a.submitted, total);
    assert_int_equal(a.completed, total);
    assert_int_equal(a.threads, WORKERS);
    assert_sched_written(&a);
    assert_sched_written(&b);
    assert_sched_monotonic(&a, &b);
    total += workload(p, 300, 7);
    get_stats(p, &c);
    assert_balanced(&c);
    assert_int_equal(c.submitted, total);
    assert_int_equal(c.completed, total);
    assert_sched_written(&c);
    assert_sched_monotonic(&b, &c);
    als_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chain_stolen_midway_keeps_context_and_ids),
        cmocka_unit_test(concurrent_chains_see_no_crosstalk),
        cmocka_unit_test(reject_overflow_across_submitters),
        cmocka_unit_test(block_overflow_across_submitters),
        cmocka_unit_test(block_overflow_with_own_queues),
        cmocka_unit_test(outside_submits_dealt_and_stolen),
        cmocka_unit_test(no_inboxes_beyond_the_cpus),
        cmocka_unit_test(one_worker_keeps_outside_order),
        cmocka_unit_test(cancel_reaches_local_queues_and_inboxes),
        cmocka_unit_test(drain_runs_local_queues_and_inboxes),
        cmocka_unit_test(drain_waits_for_every_outside_thread),
        cmocka_unit_test(stats_balanced_and_counters_monotonic),
    };
    return cmocka_run_group_tests_name("pool_sched", tests, NULL, NULL);
}
